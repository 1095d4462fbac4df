/* fm_optim.h — optimisers with PyTorch's update formulas (torch.optim, 1.13).
 *
 * SGD:   d = g + wd*p;  buf = momentum*buf + (1-dampening)*d (buf = d on the
 *        first step);  d = nesterov ? d + momentum*buf : buf;  p -= lr*d.
 * Adam:  g += wd*p (L2);  m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g*g;
 *        p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps).
 * AdamW: p *= 1 - lr*wd, then Adam without the L2 term.
 * State (momentum buffers, moments) is allocated once, zeroed, at creation.
 */
#ifndef FM_OPTIM_H
#define FM_OPTIM_H

#include "fm_tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum fm_optim_kind { FM_OPTIM_SGD, FM_OPTIM_ADAM, FM_OPTIM_ADAMW } fm_optim_kind;

typedef struct fm_optim_config {
    fm_optim_kind kind;
    float lr;
    float momentum, dampening;  /* SGD */
    bool nesterov;              /* SGD; needs momentum > 0 and dampening 0 */
    float weight_decay;
    float beta1, beta2, eps;    /* Adam, AdamW */
} fm_optim_config;

/* PyTorch's defaults for the kind: lr 1e-3 (SGD: 1e-2), betas 0.9/0.999,
 * eps 1e-8, weight decay 0 (AdamW: 1e-2). */
FM_API fm_optim_config fm_optim_defaults(fm_optim_kind kind);
/* Parses "sgd", "adam", "adamw"; FM_ERR_ARG otherwise. */
FM_API fm_status fm_optim_kind_parse(const char *s, fm_optim_kind *out);
FM_API const char *fm_optim_kind_name(fm_optim_kind kind);

typedef struct fm_optim fm_optim;

/* Optimises params[0..n) (float32, with grad).  The array is copied, the
 * tensors are not owned.  Owned by the caller: fm_optim_free(). */
FM_API fm_optim *fm_optim_new(fm_tensor *const *params, int n, const fm_optim_config *cfg);
FM_API void fm_optim_free(fm_optim *o);
/* One update from the gradients currently in params[i]->grad.  Returns
 * false when a gradient was not finite (NaN or infinite): the update is made
 * all the same, and the parameters are then no better than the gradients. */
FM_API bool fm_optim_step(fm_optim *o);
FM_API void fm_optim_set_lr(fm_optim *o, float lr);
FM_API float fm_optim_lr(const fm_optim *o);
FM_API int64_t fm_optim_steps(const fm_optim *o);

/* torch.nn.utils.clip_grad_norm_ (1.13) over every parameter's gradient:
 * the total L2 norm (of the per-parameter norms), returned; when max_norm >
 * 0 every gradient is multiplied by min(1, max_norm / (norm + 1e-6)).  The
 * norm is summed in double in a fixed order: the same for any thread count
 * and kernel set.  A non-finite norm leaves the gradients alone. */
FM_API double fm_optim_clip_grad_norm(fm_optim *o, double max_norm);

/* For saving and resuming a run: parameter i's state (numel floats each, or
 * NULL): SGD's momentum buffer in *m (*v NULL), Adam's exp_avg and
 * exp_avg_sq; and the step count that bias correction and SGD's first step
 * read. */
FM_API void fm_optim_state(fm_optim *o, int i, float **m, float **v);
FM_API void fm_optim_set_steps(fm_optim *o, int64_t steps);

#ifdef __cplusplus
}
#endif
#endif /* FM_OPTIM_H */
