/* bfloat16 autocast: the precision setting and fm_to_bf16, the cast that
 * FM_PRECISION_BF16 puts around linear and convolution layers. */
#include "ops_util.h"

static fm_precision active_precision = FM_PRECISION_FP32;

const char *fm_precision_name(fm_precision p)
{
    return p == FM_PRECISION_BF16 ? "bf16" : "fp32";
}

fm_status fm_precision_parse(const char *name, fm_precision *out)
{
    if (!strcmp(name, "fp32")) {
        *out = FM_PRECISION_FP32;
    } else if (!strcmp(name, "bf16")) {
        *out = FM_PRECISION_BF16;
    } else {
        return fm_error_set(FM_ERR_ARG, "unknown precision '%s' (choose fp32 or bf16)", name);
    }
    return FM_OK;
}

void fm_precision_use(fm_precision p) { active_precision = p; }
fm_precision fm_precision_active(void) { return active_precision; }

typedef struct cast_job {
    const float *src;
    float *dst;
    bool add;  /* dst += round(src), else dst = round(src) */
    bool from_zero;  /* with add: dst += round(0 + src) */
} cast_job;

static void cast_range(void *arg, int64_t begin, int64_t end)
{
    const cast_job *j = arg;
    const float *src = j->src;
    float *dst = j->dst;
    if (j->from_zero)
        for (int64_t i = begin; i < end; i++) dst[i] += fm_ops_bf16_round(0.0f + src[i]);
    else if (j->add)
        for (int64_t i = begin; i < end; i++) dst[i] += fm_ops_bf16_round(src[i]);
    else
        for (int64_t i = begin; i < end; i++) dst[i] = fm_ops_bf16_round(src[i]);
}

void fm_ops_add_bf16_rounded(float *dst, const float *src, int64_t n)
{
    cast_job j = {.src = src, .dst = dst, .add = true, .from_zero = true};
    fm_ops_parallel_range(n, FM_OPS_GRAIN, cast_range, &j);
}

fm_tensor *fm_to_bf16(fm_graph *g, fm_tensor *x)
{
    FM_ASSERT(fm_ops_is_f32(x));
    fm_node *n = fm_node_new(g, FM_OP_TO_BF16, 1, &x);
    n->out = fm_graph_tensor(g, x->ndim, x->shape);
    return fm_graph_apply(g, n);
}

bool fm_ops_autocast(fm_graph *g, fm_tensor **x, fm_tensor **w, fm_tensor **b)
{
    if (fm_graph_precision(g) != FM_PRECISION_BF16) return false;
    *x = fm_to_bf16(g, *x);
    *w = fm_to_bf16(g, *w);
    if (*b) *b = fm_to_bf16(g, *b);
    return true;
}

fm_tensor *fm_ops_to_bf16_in_place(fm_graph *g, fm_tensor *y)
{
    FM_ASSERT(fm_ops_is_f32(y));
    fm_node *n = fm_node_new(g, FM_OP_TO_BF16, 1, &y);
    n->out = fm_ops_view(g, y, y->ndim, y->shape);
    return fm_graph_apply(g, n);
}

void fm_op_to_bf16_forward(fm_graph *g, fm_node *n)
{
    (void)g;
    cast_job j = {.src = n->in[0]->data, .dst = n->out->data, .add = false};
    fm_ops_parallel_range(n->out->numel, FM_OPS_GRAIN, cast_range, &j);
}

void fm_op_to_bf16_backward(fm_graph *g, fm_node *n)
{
    (void)g;
    if (!fm_node_wants_grad(n, 0)) return;
    cast_job j = {.src = n->out->grad, .dst = n->in[0]->grad, .add = true};
    fm_ops_parallel_range(n->out->numel, FM_OPS_GRAIN, cast_range, &j);
}
