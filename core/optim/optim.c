/* Optimisers, following torch.optim's single-tensor code paths (1.13) step
 * for step, so that fmhost and PyTorch move the same weights the same way. */
#include "fm/fm_optim.h"
#include "kset.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct fm_optim {
    fm_optim_config cfg;
    fm_tensor **params;
    int n;
    float **state1;  /* SGD momentum buffer or Adam exp_avg, per parameter */
    float **state2;  /* Adam exp_avg_sq */
    float *block;    /* all state, one allocation */
    int64_t steps;
};

fm_optim_config fm_optim_defaults(fm_optim_kind kind)
{
    fm_optim_config c = {
        .kind = kind, .lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f,
    };
    if (kind == FM_OPTIM_SGD) c.lr = 1e-2f;
    if (kind == FM_OPTIM_ADAMW) c.weight_decay = 1e-2f;
    return c;
}

fm_status fm_optim_kind_parse(const char *s, fm_optim_kind *out)
{
    static const char *const names[] = {"sgd", "adam", "adamw"};
    for (int i = 0; i < 3; i++)
        if (strcmp(s, names[i]) == 0) {
            *out = (fm_optim_kind)i;
            return FM_OK;
        }
    return fm_error_set(FM_ERR_ARG, "unknown optimizer '%s' (choose sgd, adam or adamw)", s);
}

const char *fm_optim_kind_name(fm_optim_kind kind)
{
    return kind == FM_OPTIM_SGD ? "sgd" : kind == FM_OPTIM_ADAM ? "adam" : "adamw";
}

fm_optim *fm_optim_new(fm_tensor *const *params, int n, const fm_optim_config *cfg)
{
    FM_ASSERT(n >= 0 && cfg->lr >= 0.0f);
    FM_ASSERT(!cfg->nesterov || (cfg->momentum > 0.0f && cfg->dampening == 0.0f));
    fm_optim *o = fm_xcalloc(1, sizeof *o);
    o->cfg = *cfg;
    o->n = n;
    o->params = fm_xcalloc((size_t)n + 1, sizeof *o->params);
    o->state1 = fm_xcalloc((size_t)n + 1, sizeof *o->state1);
    o->state2 = fm_xcalloc((size_t)n + 1, sizeof *o->state2);
    int per = cfg->kind == FM_OPTIM_SGD ? (cfg->momentum != 0.0f) : 2;
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        FM_ASSERT(params[i]->dtype == FM_F32 && params[i]->grad != NULL);
        o->params[i] = params[i];
        total += (size_t)params[i]->numel;
    }
    o->block = fm_xcalloc(total * (size_t)per + 1, sizeof(float));
    float *p = o->block;
    for (int i = 0; i < n && per > 0; i++) {
        o->state1[i] = p;
        p += params[i]->numel;
    }
    for (int i = 0; i < n && per > 1; i++) {
        o->state2[i] = p;
        p += params[i]->numel;
    }
    return o;
}

void fm_optim_free(fm_optim *o)
{
    if (!o) return;
    free(o->params);
    free(o->state1);
    free(o->state2);
    free(o->block);
    free(o);
}

/* Elements per parallel task: the update is elementwise, so the split
 * changes no result. */
#define OPTIM_GRAIN ((int64_t)1 << 15)

typedef struct optim_job {
    const fm_adam_consts *adam;  /* NULL for SGD */
    const fm_sgd_consts *sgd;
    float *p;
    const float *g;
    float *s1, *s2;
    int64_t n;
    bool *finite;                /* per task */
} optim_job;

/* The scalars torch.optim.Adam derives from the step count, once per step. */
static fm_adam_consts adam_consts_make(const fm_optim *o)
{
    const fm_optim_config *c = &o->cfg;
    const double t = (double)o->steps;
    const double bias1 = 1.0 - pow((double)c->beta1, t);
    const double bias2 = 1.0 - pow((double)c->beta2, t);
    const bool adamw = c->kind == FM_OPTIM_ADAMW;
    return (fm_adam_consts){
        .step_size = (float)((double)c->lr / bias1),
        .bias2_sqrt = (float)sqrt(bias2),
        .b1 = c->beta1, .b2 = c->beta2,
        .one_b1 = (float)(1.0 - (double)c->beta1), .one_b2 = (float)(1.0 - (double)c->beta2),
        .decay = adamw ? (float)(1.0 - (double)c->lr * (double)c->weight_decay) : 1.0f,
        .weight_decay = c->weight_decay, .eps = c->eps, .adamw = adamw,
    };
}

static void optim_task(void *arg, int task, int thread)
{
    (void)thread;
    const optim_job *j = arg;
    int64_t begin = (int64_t)task * OPTIM_GRAIN;
    int64_t n = j->n - begin < OPTIM_GRAIN ? j->n - begin : OPTIM_GRAIN;
    const fm_kset *ks = fm_kset_active();
    if (j->adam)
        j->finite[task] = ks->adam(j->adam, j->p + begin, j->g + begin, j->s1 + begin,
                                   j->s2 + begin, n);
    else
        j->finite[task] = ks->sgd(j->sgd, j->p + begin, j->g + begin,
                                  j->s1 ? j->s1 + begin : NULL, n);
}

static int optim_tasks(int64_t numel) { return (int)((numel + OPTIM_GRAIN - 1) / OPTIM_GRAIN); }

bool fm_optim_step(fm_optim *o)
{
    o->steps++;
    const fm_optim_config *c = &o->cfg;
    fm_adam_consts ak;
    fm_sgd_consts sk = {.lr = c->lr, .weight_decay = c->weight_decay, .momentum = c->momentum,
                        .dampening = c->dampening, .nesterov = c->nesterov,
                        .first = o->steps == 1};
    bool sgd = c->kind == FM_OPTIM_SGD, finite = true;
    if (!sgd) ak = adam_consts_make(o);
    for (int i = 0; i < o->n; i++) {
        fm_tensor *t = o->params[i];
        int tasks = optim_tasks(t->numel);
        bool task_finite[64], *flags = tasks <= 64 ? task_finite : fm_xcalloc((size_t)tasks, 1);
        optim_job j = {sgd ? NULL : &ak, &sk, t->data, t->grad, o->state1[i], o->state2[i],
                       t->numel, flags};
        fm_parallel_for(tasks, optim_task, &j);
        for (int k = 0; k < tasks; k++) finite = finite && flags[k];
        if (flags != task_finite) free(flags);
    }
    return finite;
}

double fm_optim_clip_grad_norm(fm_optim *o, double max_norm)
{
    const fm_kset *ks = fm_kset_active();
    /* As PyTorch: each gradient's norm in float32, then the norm of those. */
    double total = 0.0;
    for (int i = 0; i < o->n; i++) {
        float norm = (float)sqrt(ks->sum_squares(o->params[i]->grad, o->params[i]->numel));
        total += (double)norm * (double)norm;
    }
    float norm = (float)sqrt(total);
    if (max_norm <= 0.0 || !isfinite(norm)) return norm;
    float coef = (float)max_norm / (norm + 1e-6f);
    if (coef < 1.0f)
        for (int i = 0; i < o->n; i++) {
            float *g = o->params[i]->grad;
            for (int64_t q = 0; q < o->params[i]->numel; q++) g[q] *= coef;
        }
    return norm;
}

void fm_optim_state(fm_optim *o, int i, float **m, float **v)
{
    FM_ASSERT(i >= 0 && i < o->n);
    *m = o->state1[i];
    *v = o->state2[i];
}

void fm_optim_set_steps(fm_optim *o, int64_t steps)
{
    FM_ASSERT(steps >= 0);
    o->steps = steps;
}

void fm_optim_set_lr(fm_optim *o, float lr) { o->cfg.lr = lr; }
float fm_optim_lr(const fm_optim *o) { return o->cfg.lr; }
int64_t fm_optim_steps(const fm_optim *o) { return o->steps; }
