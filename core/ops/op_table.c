/* The op table: one row per op, indexed by fm_op_id.  The array's size comes
 * from the header, so a missing row would be zero-filled rather than fail to
 * compile: test_ops checks every row's id, name and functions.  The table is
 * exported (unlike the rest of fm_internal.h) so that test_ops can run one
 * node's backward on a chosen output gradient. */
#include "fm_internal.h"

#define ROW(id, name, fn) [id] = {id, name, fm_op_##fn##_forward, fm_op_##fn##_backward, 0}
/* An op whose backward stores into the fresh gradients of the inputs in
 * `mask` (bit i: input i; see fm_internal.h). */
#define ROW_OVERWRITES(id, name, fn, mask) \
    [id] = {id, name, fm_op_##fn##_forward, fm_op_##fn##_backward, mask}
/* The activation input, and batch norm's residual. */
#define X_IN 1u
#define RESIDUAL_IN (1u << 6)

__attribute__((visibility("default"))) const fm_op_def fm_op_table[FM_OP_COUNT] = {
    ROW(FM_OP_LINEAR, "linear", linear),
    ROW_OVERWRITES(FM_OP_CONV2D, "conv2d", conv2d, X_IN),
    ROW_OVERWRITES(FM_OP_MAXPOOL2D, "maxpool2d", maxpool2d, X_IN),
    ROW(FM_OP_GLOBAL_AVGPOOL, "global_avgpool", global_avgpool),
    ROW_OVERWRITES(FM_OP_BATCHNORM, "batchnorm", batchnorm, X_IN | RESIDUAL_IN),
    ROW(FM_OP_RELU, "relu", relu),
    ROW(FM_OP_DROPOUT, "dropout", dropout),
    ROW(FM_OP_ADD, "add", add),
    ROW(FM_OP_FLATTEN, "flatten", flatten),
    ROW(FM_OP_CROSS_ENTROPY, "cross_entropy", cross_entropy),
    ROW_OVERWRITES(FM_OP_BATCHNORM_RELU, "batchnorm_relu", batchnorm_relu,
                   X_IN | RESIDUAL_IN),
    ROW(FM_OP_TO_BF16, "to_bf16", to_bf16),
    ROW_OVERWRITES(FM_OP_MAXPOOL2D_RELU, "maxpool2d_relu", maxpool2d_relu, X_IN),
};

_Static_assert(sizeof fm_op_table / sizeof fm_op_table[0] == FM_OP_COUNT,
               "fm_op_table needs one row per fm_op_id");
