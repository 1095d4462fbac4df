/* Fully connected layer: y = x W^T + b.  In a bf16 graph its operands are
 * bfloat16 values (the casts fm_ops_autocast puts around it) and its three
 * products run on the bfloat16 kernels (vdpbf16ps, or its exact emulation),
 * flagged by iarg[0]. */
#include "ops_util.h"

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
    bool bf16 = fm_ops_autocast(g, &x, &w, &b);
    fm_node *n = fm_node_new(g, FM_OP_LINEAR, 3, (fm_tensor *[]){x, w, b});
    n->iarg[0] = bf16;
    n->out = fm_graph_tensor(g, 2, (int[]){x->shape[0], w->shape[0]});
    fm_tensor *y = fm_graph_apply(g, n);
    return bf16 ? fm_ops_to_bf16_in_place(g, y) : y;
}

void fm_op_linear_forward(fm_graph *g, fm_node *n)
{
    const fm_tensor *x = n->in[0], *w = n->in[1], *b = n->in[2];
    int batch = x->shape[0], in = x->shape[1], out = w->shape[0];
    fm_sgemm_linear(g, n->iarg[0], batch, out, in, x->data, w->data, b ? b->data : NULL,
                    n->out->data);  // [N, out]
}

void fm_op_linear_backward(fm_graph *g, fm_node *n)
{
    const fm_tensor *x = n->in[0], *w = n->in[1];
    int batch = x->shape[0], in = x->shape[1], out = w->shape[0];
    const float *dy = n->out->grad;  // [N, out]
    if (fm_node_wants_grad(n, 0))    // dx [N, in] += dy W
        linear_gemm(g, n, false, false, batch, in, out, dy, out, w->data, in, 1.0f,
                    n->in[0]->grad, in);
    if (fm_node_wants_grad(n, 1))    // dW [out, in] += dy^T x
        linear_gemm(g, n, true, false, out, in, batch, dy, out, x->data, in, 1.0f,
                    n->in[1]->grad, in);
    if (fm_node_wants_grad(n, 2)) {  // db [out] += column sums of dy, rows in order
        float *db = n->in[2]->grad;
        for (int j = 0; j < out; j++) {
            double s = 0.0;
            for (int i = 0; i < batch; i++) s += dy[(size_t)i * out + j];
            db[j] += (float)s;
        }
    }
}
