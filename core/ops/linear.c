/* Fully connected layer: y = x W^T + b.  In a bf16 graph its products run
 * on the bfloat16 kernels (vdpbf16ps, or its exact emulation), flagged by
 * iarg[0], and its operands are bfloat16 values: the kernels round x and W
 * as they pack them, so the layer does its own casts (iarg[1]) — it rounds
 * the bias, and each gradient as the cast's backward would — rather than
 * copying x and W through cast nodes every step (fm_linear_bf16_fuse(false)
 * puts the cast nodes back, for the tests).  Its output is rounded in place
 * either way. */
#include "ops_util.h"

static bool linear_bf16_fuse = true;

void fm_linear_bf16_fuse(bool on) { linear_bf16_fuse = on; }

/* C = op(A) op(B) + beta C on the product kernels the node was built for. */
static void linear_gemm(fm_graph *g, const fm_node *n, bool ta, bool tb, int m, int nn, int k,
                        const float *a, int lda, const float *b, int ldb, float beta, float *c,
                        int ldc)
{
    if (n->iarg[0])
        fm_sgemm_bf16(g, ta, tb, m, nn, k, 1.0f, a, lda, b, ldb, beta, c, ldc);
    else
        fm_sgemm(g, ta, tb, m, nn, k, 1.0f, a, lda, b, ldb, beta, c, ldc);
}

fm_tensor *fm_linear(fm_graph *g, fm_tensor *x, fm_tensor *w, fm_tensor *b)
{
    FM_ASSERT(fm_ops_is_f32(x) && fm_ops_is_f32(w));
    FM_ASSERT(x->ndim == 2 && w->ndim == 2);
    FM_ASSERT(x->shape[1] == w->shape[1]);
    if (b) FM_ASSERT(fm_ops_is_f32(b) && b->ndim == 1 && b->shape[0] == w->shape[0]);
    bool bf16 = fm_graph_precision(g) == FM_PRECISION_BF16;
    bool fused = bf16 && linear_bf16_fuse;
    if (bf16 && !fused) fm_ops_autocast(g, &x, &w, &b);
    fm_node *n = fm_node_new(g, FM_OP_LINEAR, 3, (fm_tensor *[]){x, w, b});
    n->iarg[0] = bf16;
    n->iarg[1] = fused;  /* rounds its own bias and gradients */
    n->out = fm_graph_tensor(g, 2, (int[]){x->shape[0], w->shape[0]});
    fm_tensor *y = fm_graph_apply(g, n);
    return bf16 ? fm_ops_to_bf16_in_place(g, y) : y;
}

void fm_op_linear_forward(fm_graph *g, fm_node *n)
{
    const fm_tensor *x = n->in[0], *w = n->in[1], *b = n->in[2];
    int batch = x->shape[0], in = x->shape[1], out = w->shape[0];
    const float *bias = b ? b->data : NULL;  // [out]
    fm_arena_mark mark = fm_arena_mark_get(fm_graph_arena(g));
    if (n->iarg[1] && b) {
        float *rb = fm_graph_alloc(g, (size_t)out * sizeof *rb);
        for (int j = 0; j < out; j++) rb[j] = fm_ops_bf16_round(bias[j]);
        bias = rb;
    }
    /* OpenBLAS (the portable set) may round a row differently in a
     * product of another height: there, one product per chunk of the
     * batch, the same on any rank (fmhost's kernels sum each row alike
     * whatever the height). */
    fm_chunks ch;
    fm_graph_chunks(g, batch, &ch);
    int rows = fm_kset_active()->gemm || batch == 0 ? batch : ch.size;
    for (int r0 = 0; r0 < batch; r0 += rows) {
        int m = batch - r0 < rows ? batch - r0 : rows;
        fm_sgemm_linear(g, n->iarg[0], m, out, in, x->data + (size_t)r0 * in, w->data, bias,
                        n->out->data + (size_t)r0 * out);  // [N, out]
    }
    fm_arena_release(fm_graph_arena(g), mark);
}

typedef struct add_job {
    float *dst;
    const float *src;
    bool round;
} add_job;

static void add_range(void *arg, int64_t begin, int64_t end)
{
    const add_job *j = arg;
    if (!j->round) {
        fm_kset_active()->accumulate(j->dst + begin, j->src + begin, end - begin);
        return;
    }
    for (int64_t i = begin; i < end; i++) j->dst[i] += fm_ops_bf16_round(0.0f + j->src[i]);
}

/* dW [out, in] += dy^T x summed over the batch's chunks in their tree
 * (fm_chunk_sum): one product per chunk, then the tree; when the layer
 * does its own casts, the sum is added rounded, as the cast's backward
 * adds round(0 + sum) (its own gradient starts at zero).  In float32 on a
 * vector set, with every chunk here, one kernel does all three tile by
 * tile (the same bits, without the parts' trips through memory). */
static void linear_weight_grad(fm_graph *g, const fm_node *n, const fm_chunks *ch, int batch,
                               int in, int out, const float *dy, const float *x, float *grad)
{
    if (!n->iarg[0] && !ch->across && fm_gemm_tn_tree(out, in, batch, ch->size, dy, x, grad))
        return;
    int local = ch->end - ch->first;
    size_t wsize = (size_t)out * in;
    fm_arena_mark mark = fm_arena_mark_get(fm_graph_arena(g));
    float *parts = fm_graph_alloc(g, (local ? local : 1) * wsize * sizeof *parts);  // [local, out, in]
    for (int c = 0; c < local; c++) {
        size_t row = (size_t)c * ch->size;
        linear_gemm(g, n, true, false, out, in, fm_chunks_len(ch, batch, c), dy + row * out, out,
                    x + row * in, in, 0.0f, parts + c * wsize, in);
    }
    fm_chunks_sum(ch, FM_CHUNK_F32, parts, parts, (int64_t)wsize);
    add_job j = {grad, parts, n->iarg[1] != 0};
    fm_ops_parallel_range((int64_t)wsize, FM_OPS_GRAIN, add_range, &j);
    fm_arena_release(fm_graph_arena(g), mark);
}

/* db [out] += column sums of dy, each chunk's in double, rows in order,
 * then the chunks' tree. */
static void linear_bias_grad(fm_graph *g, const fm_node *n, const fm_chunks *ch, int batch,
                             int out, const float *dy, float *db)
{
    int local = ch->end - ch->first;
    fm_arena_mark mark = fm_arena_mark_get(fm_graph_arena(g));
    double *parts = fm_graph_alloc(g, (size_t)(local ? local : 1) * out * sizeof *parts);
    for (int c = 0; c < local; c++) {
        int i0 = c * ch->size, len = fm_chunks_len(ch, batch, c);
        for (int j = 0; j < out; j++) {
            double s = 0.0;
            for (int i = i0; i < i0 + len; i++) s += dy[(size_t)i * out + j];
            parts[(size_t)c * out + j] = s;
        }
    }
    fm_chunks_sum(ch, FM_CHUNK_F64, parts, parts, out);
    for (int j = 0; j < out; j++)
        db[j] += n->iarg[1] ? fm_ops_bf16_round(0.0f + (float)parts[j]) : (float)parts[j];
    fm_arena_release(fm_graph_arena(g), mark);
}

void fm_op_linear_backward(fm_graph *g, fm_node *n)
{
    const fm_tensor *x = n->in[0], *w = n->in[1];
    int batch = x->shape[0], in = x->shape[1], out = w->shape[0];
    const float *dy = n->out->grad;  // [N, out]
    fm_chunks ch;
    fm_graph_chunks(g, batch, &ch);
    if (fm_node_wants_grad(n, 0)) {  // dx [N, in] += dy W, by chunks as the forward
        float *dx = n->in[0]->grad;
        int rows = fm_kset_active()->gemm ? batch : ch.size;
        for (int r0 = 0; r0 < batch; r0 += rows) {
            int m = batch - r0 < rows ? batch - r0 : rows;
            const float *dyr = dy + (size_t)r0 * out;
            float *dxr = dx + (size_t)r0 * in;
            if (!n->iarg[1]) {
                linear_gemm(g, n, false, false, m, in, out, dyr, out, w->data, in, 1.0f, dxr, in);
                continue;
            }
            fm_arena_mark mark = fm_arena_mark_get(fm_graph_arena(g));
            float *p = fm_graph_alloc(g, (size_t)m * (size_t)in * sizeof *p);  // [m, in]
            linear_gemm(g, n, false, false, m, in, out, dyr, out, w->data, in, 0.0f, p, in);
            fm_ops_add_bf16_rounded(dxr, p, (int64_t)m * in);
            fm_arena_release(fm_graph_arena(g), mark);
        }
    }
    if (fm_node_wants_grad(n, 1))    // dW [out, in] += dy^T x
        linear_weight_grad(g, n, &ch, batch, in, out, dy, x->data, n->in[1]->grad);
    if (fm_node_wants_grad(n, 2))    // db [out] += column sums of dy
        linear_bias_grad(g, n, &ch, batch, out, dy, n->in[2]->grad);
}
