/* fm_tensor.h — tensors and the per-step arena.
 *
 * A tensor is contiguous, row-major, at most 4-D (activations are NCHW).  Data
 * is float32 (FM_F32) except integer buffers such as BatchNorm's
 * num_batches_tracked (FM_I64).  A tensor never owns the memory of another:
 *   - fm_tensor_new()/fm_tensor_free(): one owner, data on the heap;
 *   - tensors made by ops or fm_graph_tensor() live in the graph's arena and
 *     die at the next fm_graph_reset(); never free them;
 *   - model parameters and buffers live in the model's persistent block and
 *     die with the model.
 */
#ifndef FM_TENSOR_H
#define FM_TENSOR_H

#include "fm_base.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FM_MAX_DIMS 4

typedef enum fm_dtype { FM_F32 = 0, FM_I64 = 1 } fm_dtype;

struct fm_node;

typedef struct fm_tensor {
    fm_dtype dtype;
    int ndim;
    int shape[FM_MAX_DIMS];  /* unused trailing dims are 1 */
    int64_t numel;
    union {
        float *data;         /* FM_F32 */
        int64_t *i64;        /* FM_I64 */
    };
    float *grad;             /* same shape as data; NULL until needed */
    bool requires_grad;      /* a parameter, or computed from one with grad on */
    struct fm_node *node;    /* op that produced it in the current graph; NULL for leaves */
    const char *name;        /* registered name (parameters and buffers), else NULL */
} fm_tensor;

/* Sets ndim/shape/numel (shape[i] > 0).  Leaves data and grad alone. */
FM_API void fm_tensor_set_shape(fm_tensor *t, int ndim, const int *shape);

/* A heap tensor of float32 zeros (or int64 zeros for FM_I64), no grad.
 * Owned by the caller: fm_tensor_free(). */
FM_API fm_tensor *fm_tensor_new(fm_dtype dtype, int ndim, const int *shape);
FM_API void fm_tensor_free(fm_tensor *t);

/* True when a and b have the same ndim and shape. */
FM_API bool fm_tensor_same_shape(const fm_tensor *a, const fm_tensor *b);
/* "[64, 32, 28, 28]" into buf; returns buf. */
FM_API char *fm_tensor_shape_str(const fm_tensor *t, char *buf, size_t len);

/* ---- arena -------------------------------------------------------------- */

/* A bump allocator for one training step's activations and workspaces.
 * Allocations are 64-byte aligned and uninitialised.  fm_arena_reset() frees
 * everything at once; when a step needed more than one block, the blocks are
 * merged into one of the combined size at reset, so after the first steps
 * the arena never calls malloc again and its footprint stays constant. */
typedef struct fm_arena fm_arena;

FM_API fm_arena *fm_arena_new(size_t initial_bytes);
FM_API void fm_arena_free(fm_arena *a);
FM_API void *fm_arena_alloc(fm_arena *a, size_t bytes);
FM_API void *fm_arena_calloc(fm_arena *a, size_t bytes);
FM_API void fm_arena_reset(fm_arena *a);
FM_API size_t fm_arena_used(const fm_arena *a);      /* bytes handed out since reset */
FM_API size_t fm_arena_capacity(const fm_arena *a);  /* bytes held from the system */
FM_API size_t fm_arena_peak(const fm_arena *a);      /* highest fm_arena_used() so far */

/* Scratch memory inside a step: everything allocated after fm_arena_mark_get()
 * is handed back by fm_arena_release(), so a kernel's workspace does not add
 * up over the ops of a step.  Marks nest (release in reverse order); a mark
 * is invalid after fm_arena_reset(). */
typedef struct fm_arena_mark {
    const void *block;  /* private */
    size_t block_used, used;
} fm_arena_mark;

FM_API fm_arena_mark fm_arena_mark_get(const fm_arena *a);
FM_API void fm_arena_release(fm_arena *a, fm_arena_mark m);

#ifdef __cplusplus
}
#endif
#endif /* FM_TENSOR_H */
