/* kset.h — a kernel set as the ops see it: one table of functions per set,
 * the active one chosen at run time (core/ops/kernels.c).  Private to the
 * core.
 *
 * The sources in core/kernels/ are compiled once per set, each copy's names
 * suffixed by FM_K() (FM_KSET names the set being compiled):
 *   loops.c                  plain loops, for every set (the compiler
 *                            vectorises them for the set's instructions);
 *   gemm.c, conv_rows.c,     written over the vector layer (vec.h), for
 *   winograd.c, norm.c,      avx2 and avx512 only: the portable set leaves
 *   pool.c, peak.c           those entries NULL and its callers run their
 *                            plain C loops and OpenBLAS instead.
 * Floating-point contraction is off in every copy (-ffp-contract=off): a
 * multiply-add is fused only where a kernel asks for it, so the copies of a
 * kernel round alike. */
#ifndef FM_KERNELS_KSET_H
#define FM_KERNELS_KSET_H

#include "fm/fm_base.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- the operands and constants the kernels share ----------------------- */

/* The GEMM's reduction dimension is taken FM_GEMM_KC at a time on every
 * vector set (a prepacked A is laid out pass by pass; see fm_gemm_packed_at). */
#define FM_GEMM_KC 256
/* Floats of packing workspace the own GEMM needs: an A panel [128, KC], a B
 * panel [KC, 480] and a table of KC row pointers. */
#define FM_GEMM_OWN_PACK_FLOATS ((size_t)FM_GEMM_KC * (128 + 480 + 2))

/* B as stored: row r at rows[r] if there is a table, else at b + r*ldb; or
 * (not transposed) in column segments of `seg` columns, segment t's row p at
 * segs[t] + p*ldb. */
typedef struct fm_gemm_b {
    const float *b;
    int ldb;
    const float *const *rows;
    const float *const *segs;
    int seg;
} fm_gemm_b;

/* Where element (r, t) of op(A) [rows, nt] lies once prepacked: passes of up
 * to FM_GEMM_KC columns, tiles of mr rows, each tile [kc][mr]. */
static inline size_t fm_gemm_packed_at(size_t r, size_t t, size_t rows, size_t nt, int mr)
{
    size_t p0 = t / FM_GEMM_KC * FM_GEMM_KC, kc = nt - p0 < FM_GEMM_KC ? nt - p0 : FM_GEMM_KC;
    size_t rows_pad = (rows + (size_t)mr - 1) / (size_t)mr * (size_t)mr;
    return p0 * rows_pad + r / (size_t)mr * (size_t)mr * kc + (t - p0) * (size_t)mr + r % (size_t)mr;
}

/* The scalars of one step of torch.optim.Adam/AdamW and SGD. */
typedef struct fm_adam_consts {
    float step_size, bias2_sqrt, b1, b2, one_b1, one_b2, decay, weight_decay, eps;
    bool adamw;
} fm_adam_consts;

typedef struct fm_sgd_consts {
    float lr, weight_decay, momentum, dampening;
    bool nesterov, first;
} fm_sgd_consts;

/* ---- the kernels: a type per entry --------------------------------------- */

/* loops.c: elementwise ops over [0, n). */
typedef void fm_k_relu_forward_fn(float *y, const float *x, int64_t n);
typedef void fm_k_relu_backward_fn(float *dx, const float *x, const float *dy, int64_t n);
/* y = x * (mask * scale); dx += dy * (mask * scale). */
typedef void fm_k_dropout_forward_fn(float *y, const float *x, const uint8_t *mask, float scale,
                                     int64_t n);
typedef void fm_k_dropout_backward_fn(float *dx, const float *dy, const uint8_t *mask,
                                      float scale, int64_t n);
typedef void fm_k_add_fn(float *y, const float *a, const float *b, int64_t n);
typedef void fm_k_accumulate_fn(float *dx, const float *dy, int64_t n);
/* One plane of batch norm's forward, y = x * sc + sh; of its backward,
 * dx += (or, with `store`, =) a * dy + b * (x - mu) + d. */
typedef void fm_k_bn_plane_fn(float *y, const float *x, float sc, float sh, int64_t s);
typedef void fm_k_bn_backward_plane_fn(float *dx, const float *x, const float *dy, float a,
                                       float b, float mu, float d, int64_t s, bool store);
/* Optimizer updates of n parameters p with gradients g and state m, v;
 * false when a gradient was not finite (the update is made all the same). */
typedef bool fm_k_adam_fn(const fm_adam_consts *k, float *p, const float *g, float *m, float *v,
                          int64_t n);
typedef bool fm_k_sgd_fn(const fm_sgd_consts *k, float *p, const float *g, float *buf,
                         int64_t n);
/* The sum of squares of a[0..n), in double, eight lanes combined in a fixed
 * order: the same bits on every set. */
typedef double fm_k_sum_squares_fn(const float *a, int64_t n);

/* gemm.c: the own GEMM, C = alpha * op(A) op(B) + beta * C, row-major, each
 * element summed over k in order, FM_GEMM_KC at a time (pack: see
 * FM_GEMM_OWN_PACK_FLOATS, 64-byte aligned). */
typedef void fm_k_gemm_fn(bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                          const float *a, int lda, const float *a_packed, const fm_gemm_b *gb,
                          float beta, float *c, int ldc, float *pack);
/* op(A) [m, k] packed whole into dst (fm_gemm_packed_at's layout). */
typedef void fm_k_gemm_prepack_fn(bool trans_a, int m, int k, const float *a, int lda,
                                  float *dst);
/* g [m, n] (ldg) += the sum, in fm_chunk_sum's tree over chunk index, of
 * the chunks' products A_c^T B_c, for g's columns [j0, j1): chunk c is rows
 * [c * size, min((c + 1) * size, k)) of A [k, m] (lda) and B [k, n] (ldb),
 * each element of its product summed over its rows in order, one fused
 * multiply-add per step from zero — as FM_K(gemm) sums a chunk's product
 * (size <= FM_GEMM_KC, at most FM_BATCH_CHUNKS chunks): the bits of one
 * gemm per chunk, fm_chunk_sum and an add, without their round trips
 * through memory.  A weight gradient's product over a batch. */
typedef void fm_k_gemm_tn_tree_fn(int m, int n, int k, int size, const float *a, int lda,
                                  const float *b, int ldb, float *g, int ldg, int j0, int j1);
/* dst[j*ldd + i] = src[i*lds + j]. */
typedef void fm_k_transpose_fn(float *dst, size_t ldd, const float *src, size_t lds, int rows,
                               int cols);

/* conv_rows.c: the convolutions' row copies.  dst[0..n) = src (+ dst with
 * `add`, + *bias with a bias); dst[x] = src[2x]; a row split into its even
 * and odd pixels; woven back (added to dst unless `store`); dst[2x] +=
 * src[x]. */
typedef void fm_k_row_copy_fn(float *dst, const float *src, int n, bool add, const float *bias);
typedef void fm_k_row_stride2_fn(float *dst, const float *src, int n);
typedef void fm_k_row_unweave2_fn(float *even, float *odd, const float *src, int n);
typedef void fm_k_row_weave2_fn(float *dst, const float *even, const float *odd, int n,
                                bool store);
typedef void fm_k_row_scatter2_fn(float *dst, const float *src, int n);

/* winograd.c: F(2x2, 3x3)'s transforms (see core/ops/conv2d.c). */
typedef void fm_k_wino_input_plane_fn(float *v, size_t stride, const float *src, size_t ld,
                                      int th, int tw);
typedef void fm_k_wino_output_plane_fn(float *dst, const float *m, size_t stride, int th, int tw,
                                       int h, int w, const float *bias, bool store);
typedef void fm_k_wino_grad_tile_fn(float *v, size_t vstride, const float *x, size_t ldx,
                                    size_t rx, int cin, float *m, size_t mstride,
                                    const float *dy, size_t ldy, size_t ry, int cout, size_t t,
                                    size_t nt);

/* norm.c: eight double lanes, lane[l] += the elements q = l (mod 8) of
 * whole groups of eight (returns how many it took); batch norm's squared
 * deviations, and its sums of dy and dy * (x - mean) (dy masked to where the
 * relu's mask bits are set, when there is a mask); the fused batch norm +
 * add + relu, forward and backward, on one plane (see core/ops/batchnorm.c). */
typedef int64_t fm_k_lane_sums_fn(double *lane, const float *a, int64_t n);
typedef int64_t fm_k_bn_sqdev_fn(double *lane, const float *a, int64_t n, double mean);
typedef int64_t fm_k_bn_dy_fn(double *l_dy, double *l_dyx, const float *dy,
                              const uint16_t *mask, const float *x, int64_t n, double mean);
typedef void fm_k_bn_relu_plane_fn(float *y, uint16_t *mask, const float *x, const float *r,
                                   float sc, float sh, int64_t s);
typedef void fm_k_bn_relu_backward_fn(float *dx, float *dres, const float *x, const float *dy,
                                      const uint16_t *mask, float a, float b, float mu, float d,
                                      int64_t s, bool dx_store, bool dres_store);

/* pool.c: one output row of 2x2 max pooling from input rows r0, r1; am
 * (may be NULL) gets the index of each maximum, r0[0] being index base;
 * with relu, each output then goes through relu (x > 0 ? x : 0). */
typedef void fm_k_maxpool2_row_fn(const float *r0, const float *r1, int w, int ow, float *yr,
                                  int32_t *am, int base, bool relu);

/* peak.c: `iters` steps of twelve independent chains of vector multiply-adds
 * (a benchmark of the set's peak rate, not a kernel); returns the flops
 * done and leaves a value in *sink so that nothing is optimised away. */
typedef double fm_k_fma_peak_fn(int64_t iters, float *sink);

typedef struct fm_kset {
    fm_kernels id;
    /* every set */
    fm_k_relu_forward_fn *relu_forward;
    fm_k_relu_backward_fn *relu_backward;
    fm_k_dropout_forward_fn *dropout_forward;
    fm_k_dropout_backward_fn *dropout_backward;
    fm_k_add_fn *add;
    fm_k_accumulate_fn *accumulate;
    fm_k_bn_plane_fn *bn_plane;
    fm_k_bn_backward_plane_fn *bn_backward_plane;
    fm_k_adam_fn *adam;
    fm_k_sgd_fn *sgd;
    fm_k_sum_squares_fn *sum_squares;
    /* the vector sets (NULL, and gemm_mr 0, in the portable one) */
    int gemm_mr;  /* rows of a packed tile of A: half a vector's lanes */
    fm_k_gemm_fn *gemm;
    fm_k_gemm_prepack_fn *gemm_prepack;
    fm_k_gemm_tn_tree_fn *gemm_tn_tree;
    fm_k_transpose_fn *transpose;
    fm_k_row_copy_fn *row_copy;
    fm_k_row_stride2_fn *row_stride2;
    fm_k_row_unweave2_fn *row_unweave2;
    fm_k_row_weave2_fn *row_weave2;
    fm_k_row_scatter2_fn *row_scatter2;
    fm_k_wino_input_plane_fn *wino_input_plane;
    fm_k_wino_output_plane_fn *wino_output_plane;
    fm_k_wino_grad_tile_fn *wino_grad_tile;
    fm_k_lane_sums_fn *lane_sums;
    fm_k_bn_sqdev_fn *bn_sqdev;
    fm_k_bn_dy_fn *bn_dy;
    fm_k_bn_relu_plane_fn *bn_relu_plane;
    fm_k_bn_relu_backward_fn *bn_relu_backward;
    fm_k_maxpool2_row_fn *maxpool2_row;
    fm_k_fma_peak_fn *fma_peak;
} fm_kset;

/* The set in use (never NULL). */
const fm_kset *fm_kset_active(void);

/* ---- inside a set's copy of the sources ----------------------------------- */

#ifdef FM_KSET
#define FM_KCAT_(a, b) fm_k_##a##_##b
#define FM_KCAT(a, b) FM_KCAT_(a, b)
/* name suffixed with the set: FM_K(gemm) is fm_k_gemm_avx2 in the avx2 copy. */
#define FM_K(name) FM_KCAT(name, FM_KSET)

fm_k_relu_forward_fn FM_K(relu_forward);
fm_k_relu_backward_fn FM_K(relu_backward);
fm_k_dropout_forward_fn FM_K(dropout_forward);
fm_k_dropout_backward_fn FM_K(dropout_backward);
fm_k_add_fn FM_K(add);
fm_k_accumulate_fn FM_K(accumulate);
fm_k_bn_plane_fn FM_K(bn_plane);
fm_k_bn_backward_plane_fn FM_K(bn_backward_plane);
fm_k_adam_fn FM_K(adam);
fm_k_sgd_fn FM_K(sgd);
fm_k_sum_squares_fn FM_K(sum_squares);
fm_k_gemm_fn FM_K(gemm);
fm_k_gemm_prepack_fn FM_K(gemm_prepack);
fm_k_gemm_tn_tree_fn FM_K(gemm_tn_tree);
fm_k_transpose_fn FM_K(transpose);
fm_k_row_copy_fn FM_K(row_copy);
fm_k_row_stride2_fn FM_K(row_stride2);
fm_k_row_unweave2_fn FM_K(row_unweave2);
fm_k_row_weave2_fn FM_K(row_weave2);
fm_k_row_scatter2_fn FM_K(row_scatter2);
fm_k_wino_input_plane_fn FM_K(wino_input_plane);
fm_k_wino_output_plane_fn FM_K(wino_output_plane);
fm_k_wino_grad_tile_fn FM_K(wino_grad_tile);
fm_k_lane_sums_fn FM_K(lane_sums);
fm_k_bn_sqdev_fn FM_K(bn_sqdev);
fm_k_bn_dy_fn FM_K(bn_dy);
fm_k_bn_relu_plane_fn FM_K(bn_relu_plane);
fm_k_bn_relu_backward_fn FM_K(bn_relu_backward);
fm_k_maxpool2_row_fn FM_K(maxpool2_row);
fm_k_fma_peak_fn FM_K(fma_peak);
#endif

#endif /* FM_KERNELS_KSET_H */
