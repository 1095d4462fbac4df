/* Fully connected layer: y = x W^T + b. */
#include "ops_util.h"

fm_tensor *fm_linear(fm_graph *g, fm_tensor *x, fm_tensor *w, fm_tensor *b)
{
    FM_ASSERT(fm_ops_is_f32(x) && fm_ops_is_f32(w));
    FM_ASSERT(x->ndim == 2 && w->ndim == 2);
    FM_ASSERT(x->shape[1] == w->shape[1]);
    if (b) FM_ASSERT(fm_ops_is_f32(b) && b->ndim == 1 && b->shape[0] == w->shape[0]);
    bool bf16 = fm_ops_autocast(g, &x, &w, &b);
    fm_node *n = fm_node_new(g, FM_OP_LINEAR, 3, (fm_tensor *[]){x, w, b});
    n->out = fm_graph_tensor(g, 2, (int[]){x->shape[0], w->shape[0]});
    fm_tensor *y = fm_graph_apply(g, n);
    return bf16 ? fm_ops_to_bf16_in_place(g, y) : y;
}

void fm_op_linear_forward(fm_graph *g, fm_node *n)
{
    const fm_tensor *x = n->in[0], *w = n->in[1], *b = n->in[2];
    int batch = x->shape[0], in = x->shape[1], out = w->shape[0];
    float *y = n->out->data;  // [N, out]
    fm_sgemm(g, false, true, batch, out, in, 1.0f, x->data, in, w->data, in, 0.0f, y, out);
    if (b) {
        const float *bias = b->data;  // [out]
        for (int i = 0; i < batch; i++)
            for (int j = 0; j < out; j++) y[(size_t)i * out + j] += bias[j];
    }
}

void fm_op_linear_backward(fm_graph *g, fm_node *n)
{
    const fm_tensor *x = n->in[0], *w = n->in[1];
    int batch = x->shape[0], in = x->shape[1], out = w->shape[0];
    const float *dy = n->out->grad;  // [N, out]
    if (fm_node_wants_grad(n, 0))    // dx [N, in] += dy W
        fm_sgemm(g, false, false, batch, in, out, 1.0f, dy, out, w->data, in, 1.0f,
                 n->in[0]->grad, in);
    if (fm_node_wants_grad(n, 1))    // dW [out, in] += dy^T x
        fm_sgemm(g, true, false, out, in, batch, 1.0f, dy, out, x->data, in, 1.0f,
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
