/* The table of one kernel set: this file is compiled once per set, like
 * the kernels it lists (see kset.h). */
#include "kset.h"

#ifdef FM_KSET_VECTOR
#include "vec.h"
#endif

const fm_kset FM_K(table) = {
    .id = FM_KSET_ID,
    .relu_forward = FM_K(relu_forward),
    .relu_backward = FM_K(relu_backward),
    .dropout_forward = FM_K(dropout_forward),
    .dropout_backward = FM_K(dropout_backward),
    .add = FM_K(add),
    .accumulate = FM_K(accumulate),
    .bn_plane = FM_K(bn_plane),
    .bn_backward_plane = FM_K(bn_backward_plane),
    .adam = FM_K(adam),
    .sgd = FM_K(sgd),
    .sum_squares = FM_K(sum_squares),
#ifdef FM_KSET_VECTOR
    .gemm_mr = FM_VL / 2,
    .gemm = FM_K(gemm),
    .gemm_prepack = FM_K(gemm_prepack),
    .gemm_tn_tree = FM_K(gemm_tn_tree),
    .transpose = FM_K(transpose),
    .row_copy = FM_K(row_copy),
    .row_stride2 = FM_K(row_stride2),
    .row_unweave2 = FM_K(row_unweave2),
    .row_weave2 = FM_K(row_weave2),
    .row_scatter2 = FM_K(row_scatter2),
    .wino_input_plane = FM_K(wino_input_plane),
    .wino_output_plane = FM_K(wino_output_plane),
    .wino_grad_tile = FM_K(wino_grad_tile),
    .lane_sums = FM_K(lane_sums),
    .bn_sqdev = FM_K(bn_sqdev),
    .bn_dy = FM_K(bn_dy),
    .bn_relu_plane = FM_K(bn_relu_plane),
    .bn_relu_backward = FM_K(bn_relu_backward),
    .maxpool2_row = FM_K(maxpool2_row),
    .fma_peak = FM_K(fma_peak),
#endif
};
