/* fm_model.h — a model: named parameters and buffers in one persistent block,
 * plus the plugin instance that builds its forward pass.
 *
 * A plugin's create() registers every parameter and buffer by its PyTorch
 * state_dict name ("layers.0.conv1.weight").  Registration only records name,
 * shape and initialiser; when create() returns, the core allocates one block
 * for all data, gradients and optimizer state, and initialises the tensors in
 * registration order from the FM_RNG_INIT stream.  So a plugin never touches
 * memory: it keeps the fm_tensor pointers registration returns and uses them
 * in forward().
 */
#ifndef FM_MODEL_H
#define FM_MODEL_H

#include "fm_graph.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fm_model fm_model;

typedef enum fm_init {
    FM_INIT_ZEROS = 0,
    FM_INIT_ONES,
    FM_INIT_FAN_IN,  /* uniform in ±1/sqrt(fan_in): PyTorch's conv/linear default */
} fm_init;

/* Registers a trainable float32 parameter; the returned tensor (owned by the
 * model) gets its data and grad when registration ends.  Names are unique
 * (a duplicate is a programmer error).  fan_in is used by FM_INIT_FAN_IN. */
FM_API fm_tensor *fm_model_param(fm_model *m, const char *name, int ndim, const int *shape,
                                 fm_init init, int fan_in);
/* Registers a buffer: saved with the weights, never trained, no grad. */
FM_API fm_tensor *fm_model_buffer(fm_model *m, const char *name, fm_dtype dtype, int ndim,
                                  const int *shape, fm_init init);

/* ---- layer helpers: register PyTorch's parameters for one module ---------- */

typedef struct fm_linear_layer {
    fm_tensor *weight;  /* [out, in] */
    fm_tensor *bias;    /* [out] or NULL */
} fm_linear_layer;

typedef struct fm_conv_layer {
    fm_tensor *weight;  /* [out, in, k, k] */
    fm_tensor *bias;    /* [out] or NULL */
    int stride, pad;
} fm_conv_layer;

typedef struct fm_bn_layer {
    fm_tensor *weight, *bias;              /* [C] */
    fm_tensor *running_mean, *running_var; /* [C] buffers */
    fm_tensor *num_batches_tracked;        /* I64 [] buffer (0-d in PyTorch, stored as [1]) */
    float momentum, eps;                   /* 0.1, 1e-5 */
} fm_bn_layer;

/* `prefix` is the module's name: "fc1" registers "fc1.weight" and "fc1.bias". */
FM_API fm_linear_layer fm_nn_linear_new(fm_model *m, const char *prefix, int in, int out,
                                        bool bias);
FM_API fm_conv_layer fm_nn_conv_new(fm_model *m, const char *prefix, int in, int out, int k,
                                    int stride, int pad, bool bias);
FM_API fm_bn_layer fm_nn_bn_new(fm_model *m, const char *prefix, int channels);

FM_API fm_tensor *fm_nn_linear(fm_graph *g, const fm_linear_layer *l, fm_tensor *x);
FM_API fm_tensor *fm_nn_conv(fm_graph *g, const fm_conv_layer *l, fm_tensor *x);
FM_API fm_tensor *fm_nn_bn(fm_graph *g, const fm_bn_layer *l, fm_tensor *x);
/* relu(bn(x) + residual), residual NULL or shaped as x: the same numbers as
 * fm_nn_bn, fm_add and fm_relu in turn, in one pass over memory and with two
 * fewer activations kept for backward. */
FM_API fm_tensor *fm_nn_bn_relu(fm_graph *g, const fm_bn_layer *l, fm_tensor *x,
                                fm_tensor *residual);

/* ---- lifecycle (host side) ----------------------------------------------- */

/* An empty model accepting registrations.  Owned by the caller. */
FM_API fm_model *fm_model_new(void);
/* Ends registration: allocates the block and initialises every tensor from
 * fm_rng_seed(seed, FM_RNG_INIT).  Registration after this is an error. */
FM_API void fm_model_finalize(fm_model *m, uint64_t seed);
/* Destroys the plugin instance (if any), then frees everything. */
FM_API void fm_model_free(fm_model *m);

/* The forward pass, set by the plugin loader: x [N, 1, 28, 28] -> logits [N, 10]. */
typedef fm_tensor *(*fm_forward_fn)(void *self, fm_graph *g, fm_tensor *x);
typedef void (*fm_destroy_fn)(void *self);
FM_API void fm_model_set_impl(fm_model *m, void *self, fm_forward_fn forward,
                              fm_destroy_fn destroy, void (*on_free)(void *ctx), void *ctx);
FM_API void *fm_model_self(const fm_model *m);
/* The `ctx` given to fm_model_set_impl (the loader passes its fm_plugin). */
FM_API void *fm_model_owner(const fm_model *m);
FM_API fm_tensor *fm_model_forward(fm_model *m, fm_graph *g, fm_tensor *x);
/* The same, with the result checked as a host must before using it: float32
 * logits [N, 10] for the N images of x.  Anything else (NULL included) is
 * FM_ERR_PLUGIN naming `who` (the plugin) and what it returned. */
FM_API fm_status fm_model_forward_checked(fm_model *m, fm_graph *g, fm_tensor *x, const char *who,
                                          fm_tensor **logits);

/* ---- inspection ------------------------------------------------------------ */

typedef struct fm_model_entry {
    const char *name;
    fm_tensor *tensor;
    bool is_buffer;
} fm_model_entry;

/* Entries in registration order (parameters and buffers interleaved as
 * registered), 0 <= i < fm_model_count(m). */
FM_API int fm_model_count(const fm_model *m);
FM_API fm_model_entry fm_model_entry_at(const fm_model *m, int i);
FM_API fm_tensor *fm_model_find(const fm_model *m, const char *name);
/* Trainable parameters only, in registration order; the array is the model's. */
FM_API fm_tensor *const *fm_model_params(const fm_model *m, int *count);
/* Number of trainable scalars (buffers not counted). */
FM_API int64_t fm_model_num_params(const fm_model *m);
FM_API void fm_model_zero_grad(fm_model *m);

/* The values of every parameter and buffer, as one flat copy: keeps the best
 * checkpoint in memory without a second model.  `buf` holds
 * fm_model_state_bytes(m) bytes. */
FM_API size_t fm_model_state_bytes(const fm_model *m);
FM_API void fm_model_state_save(const fm_model *m, void *buf);
FM_API void fm_model_state_load(fm_model *m, const void *buf);
/* Where entry i's values lie within such a copy. */
FM_API void *fm_model_state_entry(const fm_model *m, void *buf, int i);

#ifdef __cplusplus
}
#endif
#endif /* FM_MODEL_H */
