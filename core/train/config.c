/* Training options: defaults, checks, and the built-in learning-rate schedules. */
#include "fm/fm_train.h"

#include <math.h>
#include <string.h>

void fm_train_config_init(fm_train_config *cfg)
{
    *cfg = (fm_train_config){
        .epochs = 20,
        .batch_size = 64,
        .optim = fm_optim_defaults(FM_OPTIM_ADAM),
        .seed = 42,
        .patience = 5,
        .val_split = 0.1,
        .scheduler = FM_SCHED_CONSTANT,
        .step_size = 10,
        .gamma = 0.1,
        .min_lr = 0.0,
        .pct_start = 0.3,
        .div_factor = 25.0,
        .final_div_factor = 1e4,
        .out_dir = ".",
        .write_artifacts = true,
        .save_dtype = FM_FLOAT_F32,
        .precision = FM_PRECISION_FP32,
        .track = true,
    };
}

fm_status fm_train_config_check(const fm_train_config *c)
{
    if (c->epochs < 1 || c->epochs > 100000)
        return fm_error_set(FM_ERR_ARG, "--epochs %d: must be between 1 and 100000", c->epochs);
    if (c->batch_size < 1 || c->batch_size > 65536)
        return fm_error_set(FM_ERR_ARG, "--batch-size %d: must be between 1 and 65536", c->batch_size);
    if (!(c->optim.lr > 0.0f) || !isfinite(c->optim.lr))
        return fm_error_set(FM_ERR_ARG, "--lr %g: must be a positive number", (double)c->optim.lr);
    if (c->optim.momentum < 0.0f || c->optim.momentum >= 1.0f)
        return fm_error_set(FM_ERR_ARG, "--momentum %g: must be in [0, 1)", (double)c->optim.momentum);
    if (c->optim.weight_decay < 0.0f || !isfinite(c->optim.weight_decay))
        return fm_error_set(FM_ERR_ARG, "--weight-decay %g: must be >= 0", (double)c->optim.weight_decay);
    if (c->optim.nesterov && (c->optim.kind != FM_OPTIM_SGD || c->optim.momentum <= 0.0f))
        return fm_error_set(FM_ERR_ARG, "--nesterov needs --optimizer sgd and --momentum > 0");
    if (c->patience < 0)
        return fm_error_set(FM_ERR_ARG, "--patience %d: must be >= 0 (0 turns early stopping off)", c->patience);
    if (!(c->val_split > 0.0 && c->val_split < 1.0))
        return fm_error_set(FM_ERR_ARG, "--val-split %g: must be in (0, 1)", c->val_split);
    if (c->step_size < 1)
        return fm_error_set(FM_ERR_ARG, "--step-size %d: must be >= 1", c->step_size);
    if (!(c->gamma > 0.0) || !isfinite(c->gamma))
        return fm_error_set(FM_ERR_ARG, "--gamma %g: must be positive", c->gamma);
    if (c->min_lr < 0.0 || !isfinite(c->min_lr))
        return fm_error_set(FM_ERR_ARG, "--min-lr %g: must be >= 0", c->min_lr);
    if (c->warmup < 0 || c->warmup >= c->epochs)
        return fm_error_set(FM_ERR_ARG, "--warmup %d: must be >= 0 and below --epochs (%d)",
                            c->warmup, c->epochs);
    if (!(c->label_smoothing >= 0.0 && c->label_smoothing < 1.0))
        return fm_error_set(FM_ERR_ARG, "--label-smoothing %g: must be in [0, 1)", c->label_smoothing);
    if (!(c->ema == 0.0 || (c->ema > 0.0 && c->ema < 1.0)))
        return fm_error_set(FM_ERR_ARG, "--ema %g: the decay must be in (0, 1), e.g. 0.999 (0: off)",
                            c->ema);
    /* onecycle's own options matter (and are checked) only with it. */
    bool onecycle = c->scheduler == FM_SCHED_ONECYCLE;
    if (onecycle && !(c->pct_start > 0.0 && c->pct_start < 1.0))
        return fm_error_set(FM_ERR_ARG, "--pct-start %g: must be in (0, 1)", c->pct_start);
    if (onecycle && (!(c->div_factor > 0.0) || !isfinite(c->div_factor)))
        return fm_error_set(FM_ERR_ARG, "--div-factor %g: must be positive", c->div_factor);
    if (onecycle && (!(c->final_div_factor > 0.0) || !isfinite(c->final_div_factor)))
        return fm_error_set(FM_ERR_ARG, "--final-div-factor %g: must be positive",
                            c->final_div_factor);
    if (c->scheduler == FM_SCHED_ONECYCLE && c->warmup > 0)
        return fm_error_set(FM_ERR_ARG, "--warmup %d: onecycle has its own warm-up (--pct-start); "
                            "drop --warmup", c->warmup);
    if (c->scheduler == FM_SCHED_ONECYCLE && c->min_lr > 0)
        return fm_error_set(FM_ERR_ARG, "--min-lr %g: onecycle ends at lr / (div_factor * "
                            "final_div_factor); drop --min-lr or set --final-div-factor", c->min_lr);
    if (!(c->random_erasing >= 0.0 && c->random_erasing <= 1.0))
        return fm_error_set(FM_ERR_ARG, "--random-erasing %g: must be a probability in [0, 1]",
                            c->random_erasing);
    if (!(c->mixup >= 0.0) || !isfinite(c->mixup))
        return fm_error_set(FM_ERR_ARG, "--mixup %g: the Beta alpha must be > 0 (0: off)", c->mixup);
    if (!(c->cutmix >= 0.0) || !isfinite(c->cutmix))
        return fm_error_set(FM_ERR_ARG, "--cutmix %g: the Beta alpha must be > 0 (0: off)", c->cutmix);
    if (c->threads < 0 || c->threads > 256)
        return fm_error_set(FM_ERR_ARG, "--threads %d: must be between 0 (all cores) and 256", c->threads);
    if (c->limit < 0)
        return fm_error_set(FM_ERR_ARG, "--limit %d: must be >= 0 (0 = all images)", c->limit);
    if (!c->out_dir || !*c->out_dir)
        return fm_error_set(FM_ERR_ARG, "--out: empty directory name");
    if (c->precision != FM_PRECISION_FP32 && c->precision != FM_PRECISION_BF16)
        return fm_error_set(FM_ERR_ARG, "--precision %d: not a precision (choose fp32 or bf16)",
                            (int)c->precision);
    if (c->save_dtype != FM_FLOAT_F32 && c->save_dtype != FM_FLOAT_BF16 &&
        c->save_dtype != FM_FLOAT_F16)
        return fm_error_set(FM_ERR_ARG, "--save-dtype %d: not a dtype (choose f32, bf16 or f16)",
                            (int)c->save_dtype);
    if (c->save_dtype != FM_FLOAT_F32 && !c->write_artifacts)
        return fm_error_set(FM_ERR_ARG, "--save-dtype %s writes an artifact: it needs the "
                            "run's artifacts on (or keep --save-dtype f32)",
                            fm_float_dtype_name(c->save_dtype));
    return FM_OK;
}

fm_status fm_sched_kind_parse(const char *s, fm_sched_kind *out)
{
    static const char *const names[] = {"constant", "step", "cosine", "onecycle"};
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0) {
            *out = (fm_sched_kind)i;
            return FM_OK;
        }
    return fm_error_set(FM_ERR_ARG, "unknown scheduler '%s' (choose constant, step, cosine or "
                        "onecycle)", s);
}

const char *fm_sched_kind_name(fm_sched_kind kind)
{
    return kind == FM_SCHED_CONSTANT ? "constant"
           : kind == FM_SCHED_STEP   ? "step"
           : kind == FM_SCHED_COSINE ? "cosine"
                                     : "onecycle";
}

/* Warm-up rises linearly per step over the first `warmup` epochs (LinearLR
 * stepped per step); the schedule proper then runs per epoch over the
 * remaining ones, as torch.optim.lr_scheduler's StepLR and
 * CosineAnnealingLR do when stepped once per epoch.  Closed forms of
 * PyTorch's recursive updates: cosine's T_max is the span, so min_lr is
 * reached at e == span, one epoch after the last (tests/test_sched.c). */
/* OneCycleLR's rate at step `at` (from 0) of `total`: its two phases as
 * PyTorch computes them, the first ending at step pct_start * total - 1
 * (a float), the second at total - 1; cosine annealing within each.  A
 * phase of zero length (where PyTorch divides by zero) gives its end rate. */
static double onecycle_lr(const fm_train_config *c, double base, double at, double total)
{
    const double initial = base / c->div_factor, final = initial / c->final_div_factor;
    const double rise_end = c->pct_start * total - 1.0;
    double start = 0.0, end = rise_end, from = initial, to = base;
    if (!(at <= rise_end)) start = rise_end, end = total - 1.0, from = base, to = final;
    double pct = end > start ? (at - start) / (end - start) : 1.0;
    return to + (from - to) / 2.0 * (cos(M_PI * pct) + 1.0);
}

double fm_sched_lr(const fm_train_config *c, int epoch, int step, int steps_per_epoch)
{
    const double base = c->optim.lr;
    if (c->scheduler == FM_SCHED_ONECYCLE)
        return onecycle_lr(c, base, (double)epoch * steps_per_epoch + step,
                           (double)c->epochs * steps_per_epoch);
    if (epoch < c->warmup) {
        double done = (double)epoch * steps_per_epoch + step + 1;
        return base * done / ((double)c->warmup * steps_per_epoch);
    }
    int e = epoch - c->warmup, span = c->epochs - c->warmup;
    switch (c->scheduler) {
    case FM_SCHED_CONSTANT:
        return base;
    case FM_SCHED_STEP:
        return base * pow(c->gamma, (double)(e / c->step_size));
    case FM_SCHED_COSINE:
        return c->min_lr + (base - c->min_lr) * (1.0 + cos(M_PI * e / span)) / 2.0;
    case FM_SCHED_ONECYCLE:
        break;
    }
    return base;
}
