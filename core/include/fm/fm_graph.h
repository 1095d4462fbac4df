/* fm_graph.h — reverse-mode autograd and the ops a model is built from.
 *
 * A graph is the tape of one step plus the arena its tensors live in.  Each op
 * below computes its output at once (eager) and, when gradients are enabled
 * and an input requires grad, records itself on the tape.  fm_backward() walks
 * the tape in reverse and ACCUMULATES (+=) into every input's grad, so
 * parameter gradients add up until fm_model_zero_grad().
 *
 * The usual step:
 *     fm_graph_reset(g);                          // drop last step's tape and arena
 *     fm_tensor *x = fm_graph_tensor(g, 4, (int[]){n, 1, 28, 28});
 *     ... fill x->data ...
 *     fm_tensor *loss = fm_cross_entropy(g, fm_model_forward(m, g, x), labels);
 *     fm_model_zero_grad(m);
 *     fm_backward(g, loss);
 *     fm_optim_step(opt);
 *
 * Every op asserts its shapes (FM_ASSERT: a wrong shape is a programmer error).
 * Outputs are new arena tensors, except fm_flatten/fm_reshape which return a
 * view sharing the input's data.
 */
#ifndef FM_GRAPH_H
#define FM_GRAPH_H

#include "fm_tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fm_graph fm_graph;

/* Owned by the caller: fm_graph_free().  Starts in training mode with
 * gradients enabled, dropout stream seeded from 0, and the precision of
 * fm_precision_active(). */
FM_API fm_graph *fm_graph_new(void);
FM_API void fm_graph_free(fm_graph *g);

/* Forgets the tape and frees every arena tensor of the previous step. */
FM_API void fm_graph_reset(fm_graph *g);

/* Training mode: dropout drops, batch norm uses batch statistics and updates
 * its running statistics.  Eval mode: dropout is the identity, batch norm uses
 * the running statistics. */
FM_API void fm_graph_set_training(fm_graph *g, bool training);
FM_API bool fm_graph_training(const fm_graph *g);

/* With grad off (evaluation), nothing is recorded and nothing can be
 * differentiated; ops skip what only backward needs. */
FM_API void fm_graph_set_grad(fm_graph *g, bool enabled);
FM_API bool fm_graph_grad_enabled(const fm_graph *g);

/* Data-parallel training (fm_dist.h's chunks): the batch the graph's ops
 * see is images [offset, offset + n) of a batch of `total` images, offset
 * on a chunk boundary (fm_chunk_size(total)), n the ops' own batch.  Ops
 * that sum over the batch (weight and bias gradients, batch statistics, the
 * loss) sum its chunks' parts with the other ranks' (fm_chunk_sum), so that
 * every rank gets the whole batch's result; dropout draws the whole batch's
 * mask and keeps its rows.  n 0 (a rank with no chunk of a small batch):
 * the ops' tensors hold one stand-in image, whose parts count nowhere.
 * total 0 (the default): the ops' batch is whole. */
FM_API void fm_graph_set_batch(fm_graph *g, int total, int offset, int n);

/* ---- precision ------------------------------------------------------------ */

/* The arithmetic of linear and convolution layers.  FM_PRECISION_BF16 is
 * PyTorch's CPU autocast to bfloat16: their inputs, weights and biases are
 * rounded to bfloat16 (round to nearest even), the products accumulate in
 * float32, and the output is rounded to bfloat16; in the backward pass the
 * output gradient is rounded before the products and the input, weight and
 * bias gradients after them.  Every other op (batch norm, pooling, the loss),
 * the optimizer and the master weights stay float32, and every tensor is
 * still stored as float32 (holding bfloat16 values).  The products run on
 * bfloat16 matrix-product kernels (vdpbf16ps where the processor has
 * AVX512_BF16, an exact emulation of it elsewhere, so avx2 and avx512 give
 * the same bits); on the portable set convolutions keep OpenBLAS's float32
 * products of the rounded operands.  Convolutions take the direct paths,
 * never Winograd, whose transformed operands are no longer bfloat16 values. */
typedef enum fm_precision { FM_PRECISION_FP32, FM_PRECISION_BF16 } fm_precision;

/* "fp32" or "bf16". */
FM_API const char *fm_precision_name(fm_precision p);
/* The precision called `name`; FM_ERR_ARG naming the choices otherwise. */
FM_API fm_status fm_precision_parse(const char *name, fm_precision *out);
/* The precision new graphs start with (FM_PRECISION_FP32 until changed),
 * for the whole process, as fm_kernels_use is for the kernel set. */
FM_API void fm_precision_use(fm_precision p);
FM_API fm_precision fm_precision_active(void);
/* The graph's precision, for the ops recorded from now on. */
FM_API void fm_graph_set_precision(fm_graph *g, fm_precision p);
FM_API fm_precision fm_graph_precision(const fm_graph *g);

/* The dropout stream: fm_rng_seed(fm_graph_rng(g), seed, FM_RNG_DROPOUT). */
FM_API fm_rng *fm_graph_rng(fm_graph *g);

/* A new float32 tensor in the arena (uninitialised, no grad). */
FM_API fm_tensor *fm_graph_tensor(fm_graph *g, int ndim, const int *shape);
/* Raw arena memory, 64-byte aligned, valid until the next reset. */
FM_API void *fm_graph_alloc(fm_graph *g, size_t bytes);
FM_API fm_arena *fm_graph_arena(fm_graph *g);

/* Back-propagates from a scalar (numel == 1) loss: d loss = 1. */
FM_API void fm_backward(fm_graph *g, fm_tensor *loss);

/* ---- per-op profile ------------------------------------------------------ */

typedef struct fm_op_profile {
    const char *name;
    double forward_s, backward_s;  /* wall time summed since enabled */
    int64_t forward_calls, backward_calls;
} fm_op_profile;

FM_API void fm_graph_set_profile(fm_graph *g, bool enabled);
/* Fills up to `max` entries (one per op type, in op-table order); returns the
 * number of op types. */
FM_API int fm_graph_profile(const fm_graph *g, fm_op_profile *out, int max);

/* ---- ops ----------------------------------------------------------------- */

/* y = x W^T + b.  x: [N, in], w: [out, in], b: [out] or NULL -> [N, out] */
FM_API fm_tensor *fm_linear(fm_graph *g, fm_tensor *x, fm_tensor *w, fm_tensor *b);

/* 2-D convolution (cross-correlation, as PyTorch).
 * x: [N, C, H, W], w: [O, C, KH, KW], b: [O] or NULL -> [N, O, OH, OW]
 * with OH = (H + 2*pad - KH) / stride + 1, likewise OW. */
FM_API fm_tensor *fm_conv2d(fm_graph *g, fm_tensor *x, fm_tensor *w, fm_tensor *b,
                            int stride, int pad);

/* Max pooling, window k×k, stride k, no padding (floor).  x: [N, C, H, W] ->
 * [N, C, H/k, W/k]; ties go to the first element in row-major order. */
FM_API fm_tensor *fm_maxpool2d(fm_graph *g, fm_tensor *x, int k);
/* fm_relu(g, fm_maxpool2d(g, x, k)) as one op: the same values and
 * gradients bit for bit, one pass over the pooled maps fewer each way and
 * one tensor fewer kept for the backward. */
FM_API fm_tensor *fm_maxpool2d_relu(fm_graph *g, fm_tensor *x, int k);

/* Mean over H and W.  x: [N, C, H, W] -> [N, C] */
FM_API fm_tensor *fm_global_avgpool(fm_graph *g, fm_tensor *x);

/* Batch norm over N, H, W per channel.  x: [N, C, H, W] (or [N, C]);
 * weight, bias, running_mean, running_var: [C]; num_batches_tracked: I64 [1]
 * or NULL.  Training: normalises with the biased batch variance, then
 * running = (1 - momentum) * running + momentum * batch, with the unbiased
 * variance for running_var, and num_batches_tracked += 1 (PyTorch).  Eval:
 * normalises with the running statistics. */
FM_API fm_tensor *fm_batchnorm(fm_graph *g, fm_tensor *x, fm_tensor *weight, fm_tensor *bias,
                               fm_tensor *running_mean, fm_tensor *running_var,
                               fm_tensor *num_batches_tracked, float momentum, float eps);

/* relu(batchnorm(x) + residual) in one pass, residual [same shape as x] or
 * NULL for relu(batchnorm(x)); arguments as fm_batchnorm.  Results and
 * gradients are bit-identical to the separate ops, with two fewer
 * activations (and gradients) held per step. */
FM_API fm_tensor *fm_batchnorm_relu(fm_graph *g, fm_tensor *x, fm_tensor *weight, fm_tensor *bias,
                                    fm_tensor *running_mean, fm_tensor *running_var,
                                    fm_tensor *num_batches_tracked, float momentum, float eps,
                                    fm_tensor *residual);

/* x's values rounded to bfloat16 (round to nearest even; NaN to 0x7FC0's
 * quiet NaN, as c10::BFloat16), held in float32; the backward adds the
 * output gradient rounded the same way.  Autocast's cast, which
 * FM_PRECISION_BF16 puts around linear and convolution layers. */
FM_API fm_tensor *fm_to_bf16(fm_graph *g, fm_tensor *x);

FM_API fm_tensor *fm_relu(fm_graph *g, fm_tensor *x);

/* Inverted dropout: in training zeroes each element with probability p and
 * scales the rest by 1/(1-p), masks from fm_graph_rng(g); identity in eval. */
FM_API fm_tensor *fm_dropout(fm_graph *g, fm_tensor *x, float p);

/* Elementwise a + b, same shape (residual connections). */
FM_API fm_tensor *fm_add(fm_graph *g, fm_tensor *a, fm_tensor *b);

/* [N, ...] -> [N, prod(...)], a view sharing x's data. */
FM_API fm_tensor *fm_flatten(fm_graph *g, fm_tensor *x);

/* Mean over the batch of -log softmax(logits)[label].  logits: [N, K];
 * labels: N ints in [0, K), copied.  -> [1] */
FM_API fm_tensor *fm_cross_entropy(fm_graph *g, fm_tensor *logits, const int32_t *labels);
/* The same with label smoothing in [0, 1), as nn.CrossEntropyLoss(
 * label_smoothing=): the target puts 1 - smoothing + smoothing / K on the
 * label and smoothing / K on every other class.  0 is fm_cross_entropy. */
FM_API fm_tensor *fm_cross_entropy_smooth(fm_graph *g, fm_tensor *logits, const int32_t *labels,
                                          float smoothing);
/* Mixed targets (mixup, cutmix): the cross-entropy against lam t(labels) +
 * (1 - lam) t(labels_b), t the smoothed one-hot above, i.e. lam times the
 * loss on labels plus (1 - lam) times the loss on labels_b.  labels_b NULL:
 * fm_cross_entropy_smooth. */
FM_API fm_tensor *fm_cross_entropy_mix(fm_graph *g, fm_tensor *logits, const int32_t *labels,
                                       const int32_t *labels_b, float lam, float smoothing);

#ifdef __cplusplus
}
#endif
#endif /* FM_GRAPH_H */
