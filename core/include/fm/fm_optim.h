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
/* One update from the gradients currently in params[i]->grad. */
FM_API void fm_optim_step(fm_optim *o);
FM_API void fm_optim_set_lr(fm_optim *o, float lr);
FM_API float fm_optim_lr(const fm_optim *o);
FM_API int64_t fm_optim_steps(const fm_optim *o);

#ifdef __cplusplus
}
#endif
#endif /* FM_OPTIM_H */
