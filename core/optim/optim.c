/* Optimisers, following torch.optim's single-tensor code paths (1.13) step
 * for step, so that fmhost and PyTorch move the same weights the same way. */
#include "fm/fm_optim.h"

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

static void sgd_range(const fm_optim *o, float *restrict p, const float *restrict g,
                      float *restrict buf, int64_t n)
{
    const fm_optim_config *c = &o->cfg;
    const bool first = o->steps == 1;
    for (int64_t i = 0; i < n; i++) {
        float d = g[i];
        if (c->weight_decay != 0.0f) d = d + c->weight_decay * p[i];
        if (c->momentum != 0.0f) {
            buf[i] = first ? d : buf[i] * c->momentum + (1.0f - c->dampening) * d;
            d = c->nesterov ? d + c->momentum * buf[i] : buf[i];
        }
        p[i] = p[i] + (-c->lr) * d;
    }
}

/* The scalars torch.optim.Adam derives from the step count, once per step. */
typedef struct adam_consts {
    float step_size, bias2_sqrt, b1, b2, one_b1, one_b2, decay, weight_decay, eps;
    bool adamw;
} adam_consts;

typedef struct optim_job {
    const fm_optim *o;
    const adam_consts *adam;  /* NULL for SGD */
    float *p;
    const float *g;
    float *s1, *s2;
    int64_t n;
} optim_job;

static adam_consts adam_consts_make(const fm_optim *o)
{
    const fm_optim_config *c = &o->cfg;
    const double t = (double)o->steps;
    const double bias1 = 1.0 - pow((double)c->beta1, t);
    const double bias2 = 1.0 - pow((double)c->beta2, t);
    const bool adamw = c->kind == FM_OPTIM_ADAMW;
    return (adam_consts){
        .step_size = (float)((double)c->lr / bias1),
        .bias2_sqrt = (float)sqrt(bias2),
        .b1 = c->beta1, .b2 = c->beta2,
        .one_b1 = (float)(1.0 - (double)c->beta1), .one_b2 = (float)(1.0 - (double)c->beta2),
        .decay = adamw ? (float)(1.0 - (double)c->lr * (double)c->weight_decay) : 1.0f,
        .weight_decay = c->weight_decay, .eps = c->eps, .adamw = adamw,
    };
}

static void adam_range(const adam_consts *k, float *restrict p, const float *restrict g,
                       float *restrict m, float *restrict v, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i];
        if (k->adamw)
            p[i] = p[i] * k->decay;
        else if (k->weight_decay != 0.0f)
            gi = gi + k->weight_decay * p[i];
        m[i] = m[i] * k->b1 + k->one_b1 * gi;
        v[i] = v[i] * k->b2 + k->one_b2 * (gi * gi);
        float denom = sqrtf(v[i]) / k->bias2_sqrt + k->eps;
        p[i] = p[i] + (-k->step_size) * (m[i] / denom);
    }
}

static void optim_task(void *arg, int task, int thread)
{
    (void)thread;
    const optim_job *j = arg;
    int64_t begin = (int64_t)task * OPTIM_GRAIN;
    int64_t n = j->n - begin < OPTIM_GRAIN ? j->n - begin : OPTIM_GRAIN;
    if (j->adam) {
        /* A local copy: the loop then reads its constants from registers and
         * vectorises (through the pointer it did not). */
        adam_consts k = *j->adam;
        adam_range(&k, j->p + begin, j->g + begin, j->s1 + begin, j->s2 + begin, n);
    } else
        sgd_range(j->o, j->p + begin, j->g + begin, j->s1 ? j->s1 + begin : NULL, n);
}

void fm_optim_step(fm_optim *o)
{
    o->steps++;
    adam_consts k;
    if (o->cfg.kind != FM_OPTIM_SGD) k = adam_consts_make(o);
    for (int i = 0; i < o->n; i++) {
        fm_tensor *t = o->params[i];
        optim_job j = {o, o->cfg.kind == FM_OPTIM_SGD ? NULL : &k, t->data, t->grad,
                       o->state1[i], o->state2[i], t->numel};
        fm_parallel_for((int)((t->numel + OPTIM_GRAIN - 1) / OPTIM_GRAIN), optim_task, &j);
    }
}

void fm_optim_set_lr(fm_optim *o, float lr) { o->cfg.lr = lr; }
float fm_optim_lr(const fm_optim *o) { return o->cfg.lr; }
int64_t fm_optim_steps(const fm_optim *o) { return o->steps; }
