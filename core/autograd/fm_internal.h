/* fm_internal.h — what the autograd engine and the kernels share.  Not
 * installed; plugins never see it.
 *
 * An op is one row of fm_op_table: its public function (core/ops/) checks
 * shapes, makes the output and a node, and hands both to fm_graph_apply(),
 * which runs the row's forward and, when gradients are wanted, records the
 * node.  Before a node's backward runs, the engine has given every input that
 * requires grad a grad buffer; backward functions ACCUMULATE (+=) into the
 * inputs for which fm_node_wants_grad().  An arena tensor's buffer is first
 * handed out unwritten ("fresh"): for the inputs its row's `overwrites`
 * mask names, an op asks fm_node_grad_overwrite() and, when it says so,
 * writes every element instead of adding (which spares a pass zeroing
 * megabytes and a read of them); every other fresh input (of any op) the
 * engine zero-fills before the backward runs.
 */
#ifndef FM_INTERNAL_H
#define FM_INTERNAL_H

#include "fm/fm_dist.h"
#include "fm/fm_graph.h"

#define FM_NODE_MAX_IN 7

typedef enum fm_op_id {
    FM_OP_LINEAR,
    FM_OP_CONV2D,
    FM_OP_MAXPOOL2D,
    FM_OP_GLOBAL_AVGPOOL,
    FM_OP_BATCHNORM,
    FM_OP_RELU,
    FM_OP_DROPOUT,
    FM_OP_ADD,
    FM_OP_FLATTEN,
    FM_OP_CROSS_ENTROPY,
    FM_OP_BATCHNORM_RELU,
    FM_OP_TO_BF16,
    FM_OP_MAXPOOL2D_RELU,
    FM_OP_COUNT
} fm_op_id;

typedef struct fm_node {
    fm_op_id op;
    fm_tensor *out;
    fm_tensor *in[FM_NODE_MAX_IN];  /* NULL for absent optional inputs (bias) */
    int n_in;
    int iarg[4];                    /* op-specific: stride, pad, k, ... */
    float farg[4];                  /* op-specific: p, momentum, eps, ... */
    void *saved;                    /* op-owned arena memory kept for backward */
    bool record;                    /* set before forward: backward will run, save what it needs */
    bool grad_fresh;                /* out->grad allocated, not written yet */
} fm_node;

typedef void (*fm_op_fn)(fm_graph *g, fm_node *n);

typedef struct fm_op_def {
    fm_op_id id;
    const char *name;
    fm_op_fn forward;
    fm_op_fn backward;
    unsigned overwrites;  /* bit i: backward asks fm_node_grad_overwrite for input i; the
                           * other inputs' fresh gradients are zeroed for it to add to */
} fm_op_def;

extern const fm_op_def fm_op_table[FM_OP_COUNT];

/* Forward functions, one per op, defined in core/ops/. */
void fm_op_linear_forward(fm_graph *g, fm_node *n);
void fm_op_linear_backward(fm_graph *g, fm_node *n);
void fm_op_conv2d_forward(fm_graph *g, fm_node *n);
void fm_op_conv2d_backward(fm_graph *g, fm_node *n);
void fm_op_maxpool2d_forward(fm_graph *g, fm_node *n);
void fm_op_maxpool2d_backward(fm_graph *g, fm_node *n);
void fm_op_maxpool2d_relu_forward(fm_graph *g, fm_node *n);
void fm_op_maxpool2d_relu_backward(fm_graph *g, fm_node *n);
void fm_op_global_avgpool_forward(fm_graph *g, fm_node *n);
void fm_op_global_avgpool_backward(fm_graph *g, fm_node *n);
void fm_op_batchnorm_forward(fm_graph *g, fm_node *n);
void fm_op_batchnorm_backward(fm_graph *g, fm_node *n);
void fm_op_relu_forward(fm_graph *g, fm_node *n);
void fm_op_relu_backward(fm_graph *g, fm_node *n);
void fm_op_dropout_forward(fm_graph *g, fm_node *n);
void fm_op_dropout_backward(fm_graph *g, fm_node *n);
void fm_op_add_forward(fm_graph *g, fm_node *n);
void fm_op_add_backward(fm_graph *g, fm_node *n);
void fm_op_flatten_forward(fm_graph *g, fm_node *n);
void fm_op_flatten_backward(fm_graph *g, fm_node *n);
void fm_op_cross_entropy_forward(fm_graph *g, fm_node *n);
void fm_op_cross_entropy_backward(fm_graph *g, fm_node *n);
void fm_op_batchnorm_relu_forward(fm_graph *g, fm_node *n);
void fm_op_batchnorm_relu_backward(fm_graph *g, fm_node *n);
void fm_op_to_bf16_forward(fm_graph *g, fm_node *n);
void fm_op_to_bf16_backward(fm_graph *g, fm_node *n);

/* The chunks of an op's batch of n images in g (fm_graph_set_batch): the
 * whole batch's total, chunk size and count, and the chunks [first, end)
 * this graph holds, from image `offset` on; local chunk i is images
 * [i * size, min((i + 1) * size, n)) of the op's tensors. */
typedef struct fm_chunks {
    int total, offset, size, count, first, end;
    bool across;  /* the other chunks are the other ranks' (fm_graph_set_batch) */
} fm_chunks;
void fm_graph_chunks(const fm_graph *g, int n, fm_chunks *out);
/* fm_chunk_sum_or_die over c's chunks: parts [c->end - c->first, len]. */
static inline void fm_chunks_sum(const fm_chunks *c, fm_chunk_type type, void *sum, void *parts,
                                 int64_t len)
{
    fm_chunk_sum_or_die(type, sum, parts, len, c->count, c->first, c->end, c->across);
}
/* Images of local chunk i of n. */
static inline int fm_chunks_len(const fm_chunks *c, int n, int i)
{
    int rest = n - i * c->size;
    return rest < c->size ? rest : c->size;
}

/* A zeroed node for `op` with inputs in[0..n_in), in the arena. */
fm_node *fm_node_new(fm_graph *g, fm_op_id op, int n_in, fm_tensor *const *in);
/* Makes n->out (already shaped, data allocated by the caller unless it is a
 * view), runs the forward, records the node if needed; returns n->out. */
fm_tensor *fm_graph_apply(fm_graph *g, fm_node *n);
/* Tracing, for tools that read a model's structure (fmhost summary and
 * export): with it on, every node fm_graph_apply runs is also kept, recorded
 * for backward or not, in execution order until the next fm_graph_reset.
 * fm_graph_trace points *nodes at them (read only; valid until the next op
 * or reset) and returns how many.  An input that no traced node produced is
 * a leaf: the graph's input, or a parameter or buffer (its `name` set). */
FM_API void fm_graph_set_trace(fm_graph *g, bool on);
FM_API int fm_graph_trace(const fm_graph *g, const fm_node *const **nodes);
/* During backward: true when input i exists and has a grad to accumulate into. */
static inline bool fm_node_wants_grad(const fm_node *n, int i)
{
    return n->in[i] && n->in[i]->requires_grad && n->in[i]->grad;
}
/* During the backward of an op whose row `overwrites`, for an input that
 * fm_node_wants_grad(): true (once) when its grad buffer is fresh — the op
 * must then store every element of that gradient rather than add to it. */
static inline bool fm_node_grad_overwrite(const fm_node *n, int i)
{
    fm_node *src = n->in[i]->node;
    if (!src || !src->grad_fresh) return false;
    src->grad_fresh = false;
    return true;
}

/* GEMM for the kernels, C = alpha * op(A) op(B) + beta * C, row-major, split
 * over the pool in fixed-size blocks of rows or columns of C (never of the
 * reduction dimension), each block one fm_gemm_serial: the result is
 * bit-identical for any thread count.  Packing space comes from g's arena. */
void fm_sgemm(fm_graph *g, bool trans_a, bool trans_b, int m, int n, int k, float alpha,
              const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);
/* A linear layer's forward pass on those blocks: y [m, n] = x [m, k] w^T
 * (w [n, k]) + bias [n] (or NULL), each block's bias added as soon as its
 * product is done; on the bf16 products (fm_sgemm_bf16's) if bf16. */
void fm_sgemm_linear(fm_graph *g, bool bf16, int m, int n, int k, const float *x,
                     const float *w, const float *bias, float *y);

/* A weight gradient's product over a whole batch: g [m, n] += the sum, in
 * fm_chunk_sum's tree over the chunks of `size` rows, of each chunk's
 * A_c^T B_c (A [k, m], B [k, n], row-major and dense) — on the vector sets
 * one fused kernel, split over the pool by columns, giving the bits of one
 * fm_gemm_serial per chunk (beta 0), fm_chunk_sum and an add.  Returns
 * false, doing nothing, where it does not apply: the portable set, empty
 * shapes, chunks longer than FM_GEMM_KC or more than FM_BATCH_CHUNKS. */
FM_API bool fm_gemm_tn_tree(int m, int n, int k, int size, const float *a, const float *b,
                            float *g);

/* Floats of workspace (`pack`, 64-byte aligned) that one product of
 * fm_gemm_serial (b_table false) or of fm_gemm_serial_rows/_segs (b_table
 * true: B [k, n] given as a table) needs on the kernel set in use: the own
 * GEMM's packing panels on the vector sets; on the portable one, room to
 * gather a table's B into one matrix for cblas_sgemm.  Every caller sizes
 * its workspace with it. */
FM_API size_t fm_gemm_pack_floats(int n, int k, bool b_table);

/* One thread's GEMM (core/ops/gemm.c): fmhost's own kernel on the vector
 * sets, cblas_sgemm on the portable one.  On the vector sets each element of
 * C is summed in an order fixed by the shapes, wherever it lies in C; on the
 * portable one the result depends on the whole product's shape.  a_packed,
 * if not NULL, is op(A) from fm_gemm_prepack_a (for an A shared by many
 * products; a and lda must still describe it).  Exported for the tests,
 * which compare it against a naive product. */
FM_API void fm_gemm_serial(bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                           const float *a, int lda, const float *a_packed, const float *b,
                           int ldb, float beta, float *c, int ldc, float *pack);
/* Packs op(A) [m, k] once into dst (fm_gemm_prepacked_floats(m, k) floats,
 * 64-byte aligned) and returns dst; returns NULL, packing nothing, on the
 * portable set (the size is then 0). */
FM_API size_t fm_gemm_prepacked_floats(int m, int k);
FM_API const float *fm_gemm_prepack_a(bool trans_a, int m, int k, const float *a, int lda,
                                      float *dst);
/* The same product with B given row by row, for operands that are views
 * into other arrays (a convolution's shifted input planes): stored row r of
 * B — row r of op(B), or column r when trans_b — starts at b_rows[r].  With
 * bf16, fm_gemm_serial_bf16's product on the matrix the rows describe, the
 * same bits (its pack and prepacked A then: fm_gemm_bf16_pack_floats,
 * fm_gemm_bf16_prepack_a); likewise for fm_gemm_serial_segs. */
FM_API void fm_gemm_serial_rows(bool bf16, bool trans_a, bool trans_b, int m, int n, int k,
                                float alpha, const float *a, int lda, const float *a_packed,
                                const float *const *b_rows, float beta, float *c, int ldc,
                                float *pack);
/* The product (A and B not transposed) with B [k, n] given in n/seg column
 * segments of seg columns: element (p, j) of segment t at
 * b_segs[t][p*ldb + j].  A convolution's weight gradient: segment t is the
 * channel-minor padded input shifted by tap t. */
FM_API void fm_gemm_serial_segs(bool bf16, int m, int n, int k, float alpha, const float *a,
                                int lda, const float *const *b_segs, int seg, int ldb,
                                float beta, float *c, int ldc, float *pack);
/* dst[j*ldd + i] = src[i*lds + j] for i < rows, j < cols; blocks transposed
 * in registers on the vector sets. */
FM_API void fm_transpose(float *dst, size_t ldd, const float *src, size_t lds, int rows,
                         int cols);

/* The kernels OpenBLAS chose for this processor ("Haswell", "SkylakeX", ...;
 * $OPENBLAS_CORETYPE overrides its choice). */
FM_API const char *fm_gemm_blas_core(void);

/* ---- bf16 products (core/ops/gemm_bf16.c; what they compute, exactly:
 * core/kernels/gemm_bf16.h; the rounding is fm_bf16_from_f32's) ---- */

/* Floats of workspace (`pack`, 64-byte aligned) that one fm_gemm_serial_bf16
 * needs, the same on every set and for every shape. */
FM_API size_t fm_gemm_bf16_pack_floats(void);

/* fm_gemm_serial's product, C = alpha * op(A) op(B) + beta * C, with A and B
 * (float in memory) rounded to bfloat16 as they are packed and C summed in
 * float32 as vdpbf16ps sums: pairs along k, the odd element first, one fused
 * multiply-add each, denormals flushed (the update of C included).  Every
 * kernel set gives the same bits (NaNs aside: NaN on every set, sign and
 * payload unspecified), each element depending on the shapes only:
 * vdpbf16ps on the avx512 set where the processor has AVX512_BF16 (see
 * fm_gemm_bf16_native), an exact emulation of it elsewhere.  a_packed, if
 * not NULL, is op(A) from fm_gemm_bf16_prepack_a on the same kernel in use
 * (a and lda must still describe it). */
FM_API void fm_gemm_serial_bf16(bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                                const float *a, int lda, const float *a_packed, const float *b,
                                int ldb, float beta, float *c, int ldc, float *pack);
/* Packs op(A) [m, k] once, rounded, into dst (fm_gemm_bf16_prepacked_floats
 * (m, k) floats, 64-byte aligned; valid while the kernel set and
 * fm_gemm_bf16_native() stay as they were) and returns dst. */
FM_API size_t fm_gemm_bf16_prepacked_floats(int m, int k);
FM_API const float *fm_gemm_bf16_prepack_a(bool trans_a, int m, int k, const float *a, int lda,
                                           float *dst);
/* fm_sgemm's split over the pool, for fm_gemm_serial_bf16: bit-identical for
 * any thread count.  Packing space comes from g's arena. */
FM_API void fm_sgemm_bf16(fm_graph *g, bool trans_a, bool trans_b, int m, int n, int k,
                          float alpha, const float *a, int lda, const float *b, int ldb,
                          float beta, float *c, int ldc);
/* Whether the bf16 products run vdpbf16ps now: the avx512 set in use, a
 * processor with AVX512_BF16, and not turned off by
 * fm_gemm_bf16_allow_native(false) — which makes the avx512 set emulate it
 * as the others do (for the tests and `fmhost bench --gemm`; the results are
 * the same bits). */
FM_API bool fm_gemm_bf16_native(void);
FM_API void fm_gemm_bf16_allow_native(bool allow);

/* Whether a bf16 graph's convolutions on the direct path do their own casts
 * (the default: their products round x and w as they pack them, and they
 * round their gradients as the casts' backward would), or get fm_to_bf16
 * nodes like every other layer — the same bits either way, which is what
 * the test that turns it off checks. */
FM_API void fm_conv2d_bf16_fuse(bool on);
/* Whether bf16 linear layers do their own casts (on by default; off puts
 * cast nodes around them, for the tests comparing the two). */
FM_API void fm_linear_bf16_fuse(bool on);

/* core/ops/kernels.c: the multiply-add rate of the set in use, in GFLOP/s on
 * the calling thread, measured over about `seconds` (0 on the portable set,
 * whose products are OpenBLAS's).  For fmhost bench --gemm. */
FM_API double fm_kernels_peak_gflops(double seconds);

#endif /* FM_INTERNAL_H */
