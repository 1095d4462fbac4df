/* Elementwise ops and views: relu, dropout, add, flatten. */
#include "ops_util.h"

/* ---- relu ---------------------------------------------------------------- */

typedef struct unary_job {
    const float *x;   // [numel]
    float *y;         // [numel]
    const float *dy;  // [numel]
    float *dx;        // [numel]
    const uint8_t *mask;  // [numel] dropout keep flags
    float scale;
} unary_job;

/* Each range runs the kernel set's loop on its slice. */
static void relu_forward_range(void *arg, int64_t begin, int64_t end)
{
    const unary_job *j = arg;
    fm_kset_active()->relu_forward(j->y + begin, j->x + begin, end - begin);
}

static void relu_backward_range(void *arg, int64_t begin, int64_t end)
{
    const unary_job *j = arg;
    fm_kset_active()->relu_backward(j->dx + begin, j->x + begin, j->dy + begin, end - begin);
}

fm_tensor *fm_relu(fm_graph *g, fm_tensor *x)
{
    FM_ASSERT(fm_ops_is_f32(x));
    fm_node *n = fm_node_new(g, FM_OP_RELU, 1, &x);
    n->out = fm_graph_tensor(g, x->ndim, x->shape);
    return fm_graph_apply(g, n);
}

void fm_op_relu_forward(fm_graph *g, fm_node *n)
{
    (void)g;
    unary_job j = {.x = n->in[0]->data, .y = n->out->data};
    fm_ops_parallel_range(n->out->numel, FM_OPS_GRAIN, relu_forward_range, &j);
}

void fm_op_relu_backward(fm_graph *g, fm_node *n)
{
    (void)g;
    if (!fm_node_wants_grad(n, 0)) return;
    unary_job j = {.x = n->in[0]->data, .dy = n->out->grad, .dx = n->in[0]->grad};
    fm_ops_parallel_range(n->out->numel, FM_OPS_GRAIN, relu_backward_range, &j);
}

/* ---- dropout -------------------------------------------------------------- */

static void dropout_forward_range(void *arg, int64_t begin, int64_t end)
{
    const unary_job *j = arg;
    fm_kset_active()->dropout_forward(j->y + begin, j->x + begin, j->mask + begin, j->scale,
                                      end - begin);
}

static void dropout_backward_range(void *arg, int64_t begin, int64_t end)
{
    const unary_job *j = arg;
    fm_kset_active()->dropout_backward(j->dx + begin, j->dy + begin, j->mask + begin, j->scale,
                                       end - begin);
}

static void accumulate_range(void *arg, int64_t begin, int64_t end)
{
    const unary_job *j = arg;
    fm_kset_active()->accumulate(j->dx + begin, j->dy + begin, end - begin);
}

fm_tensor *fm_ops_view(fm_graph *g, const fm_tensor *x, int ndim, const int *shape)
{
    fm_tensor *view = fm_graph_alloc(g, sizeof *view);
    memset(view, 0, sizeof *view);
    view->dtype = FM_F32;
    fm_tensor_set_shape(view, ndim, shape);
    FM_ASSERT(view->numel == x->numel);
    view->data = x->data;
    return view;
}

fm_tensor *fm_dropout(fm_graph *g, fm_tensor *x, float p)
{
    FM_ASSERT(fm_ops_is_f32(x));
    FM_ASSERT(p >= 0.0f && p <= 1.0f);
    fm_node *n = fm_node_new(g, FM_OP_DROPOUT, 1, &x);
    n->farg[0] = p;
    n->iarg[0] = fm_graph_training(g) && p > 0.0f;  /* 1: masked, 0: identity */
    n->out = n->iarg[0] ? fm_graph_tensor(g, x->ndim, x->shape)
                        : fm_ops_view(g, x, x->ndim, x->shape);
    return fm_graph_apply(g, n);
}

void fm_op_dropout_forward(fm_graph *g, fm_node *n)
{
    if (!n->iarg[0]) return;  /* the identity: a view, the data already in place */
    float p = n->farg[0];
    int64_t numel = n->out->numel;
    unary_job j = {.x = n->in[0]->data, .y = n->out->data};
    /* The mask is drawn serially in element order, so it depends on the seed
     * only; kept in the arena for backward (and dropped with it).  A slice
     * of a batch (fm_graph_set_batch) draws the whole batch's mask and keeps
     * its own rows: every rank's images get the single process's mask. */
    uint8_t *mask = fm_graph_alloc(g, (size_t)numel ? (size_t)numel : 1);
    fm_rng *rng = fm_graph_rng(g);
    const fm_tensor *x = n->in[0];
    int64_t row = 1;
    for (int d = 1; d < x->ndim; d++) row *= x->shape[d];
    fm_chunks ch;
    fm_graph_chunks(g, x->shape[0], &ch);
    int64_t before = (int64_t)ch.offset * row, mine = ch.end > ch.first ? numel : 0;
    for (int64_t i = 0; i < before; i++) (void)fm_rng_uniform(rng);
    for (int64_t i = 0; i < mine; i++) mask[i] = fm_rng_uniform(rng) >= p;
    for (int64_t i = mine; i < numel; i++) mask[i] = 1;  /* a stand-in image's */
    for (int64_t i = before + mine; i < (int64_t)ch.total * row; i++) (void)fm_rng_uniform(rng);
    j.mask = mask;
    j.scale = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
    n->farg[1] = j.scale;
    n->saved = mask;
    fm_ops_parallel_range(numel, FM_OPS_GRAIN, dropout_forward_range, &j);
}

void fm_op_dropout_backward(fm_graph *g, fm_node *n)
{
    (void)g;
    if (!fm_node_wants_grad(n, 0)) return;
    unary_job j = {.dy = n->out->grad, .dx = n->in[0]->grad, .mask = n->saved,
                   .scale = n->farg[1]};
    fm_ops_parallel_range(n->out->numel, FM_OPS_GRAIN,
                          n->iarg[0] ? dropout_backward_range : accumulate_range, &j);
}

/* ---- add ------------------------------------------------------------------ */

typedef struct add_job {
    const float *a, *b;  // [numel]
    float *y;            // [numel]
} add_job;

static void add_forward_range(void *arg, int64_t begin, int64_t end)
{
    const add_job *j = arg;
    fm_kset_active()->add(j->y + begin, j->a + begin, j->b + begin, end - begin);
}

fm_tensor *fm_add(fm_graph *g, fm_tensor *a, fm_tensor *b)
{
    FM_ASSERT(fm_ops_is_f32(a) && fm_ops_is_f32(b));
    FM_ASSERT(fm_tensor_same_shape(a, b));
    fm_node *n = fm_node_new(g, FM_OP_ADD, 2, (fm_tensor *[]){a, b});
    n->out = fm_graph_tensor(g, a->ndim, a->shape);
    return fm_graph_apply(g, n);
}

void fm_op_add_forward(fm_graph *g, fm_node *n)
{
    (void)g;
    add_job j = {.a = n->in[0]->data, .b = n->in[1]->data, .y = n->out->data};
    fm_ops_parallel_range(n->out->numel, FM_OPS_GRAIN, add_forward_range, &j);
}

void fm_op_add_backward(fm_graph *g, fm_node *n)
{
    (void)g;
    for (int i = 0; i < 2; i++) {
        if (!fm_node_wants_grad(n, i)) continue;
        unary_job j = {.dy = n->out->grad, .dx = n->in[i]->grad};
        fm_ops_parallel_range(n->out->numel, FM_OPS_GRAIN, accumulate_range, &j);
    }
}

/* ---- flatten -------------------------------------------------------------- */

fm_tensor *fm_flatten(fm_graph *g, fm_tensor *x)
{
    FM_ASSERT(fm_ops_is_f32(x));
    fm_node *n = fm_node_new(g, FM_OP_FLATTEN, 1, &x);
    n->out = fm_ops_view(g, x, 2, (int[]){x->shape[0], (int)(x->numel / x->shape[0])});
    return fm_graph_apply(g, n);
}

void fm_op_flatten_forward(fm_graph *g, fm_node *n)
{
    (void)g;
    (void)n;  /* a view: the data is already in place */
}

void fm_op_flatten_backward(fm_graph *g, fm_node *n)
{
    (void)g;
    if (!fm_node_wants_grad(n, 0)) return;
    unary_job j = {.dy = n->out->grad, .dx = n->in[0]->grad};
    fm_ops_parallel_range(n->out->numel, FM_OPS_GRAIN, accumulate_range, &j);
}
