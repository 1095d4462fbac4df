/* The model registry: named parameters and buffers, one persistent block. */
#include "fm/fm_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry {
    char *name;
    fm_tensor *t;
    bool is_buffer;
    fm_init init;
    int fan_in;
} entry;

struct fm_model {
    entry *entries;
    int n, cap;
    fm_tensor **params;  /* trainable ones, registration order */
    int n_params;
    unsigned char *block;  /* [data of every entry][grad of every parameter] */
    size_t data_bytes;     /* the first part: what a state snapshot copies */
    size_t grad_bytes;     /* the second part, zeroed by fm_model_zero_grad */
    bool finalized;
    void *self;
    fm_forward_fn forward;
    fm_destroy_fn destroy;
    void (*on_free)(void *ctx);
    void *ctx;
};

fm_model *fm_model_new(void) { return fm_xcalloc(1, sizeof(fm_model)); }

static size_t padded(size_t bytes) { return (bytes + 63) & ~(size_t)63; }

static size_t data_size(const fm_tensor *t)
{
    return padded((size_t)t->numel * (t->dtype == FM_I64 ? sizeof(int64_t) : sizeof(float)));
}

static fm_tensor *add_entry(fm_model *m, const char *name, fm_dtype dtype, int ndim,
                            const int *shape, bool is_buffer, fm_init init, int fan_in)
{
    FM_ASSERT(!m->finalized);
    FM_ASSERT(name && *name);
    for (int i = 0; i < m->n; i++)
        FM_ASSERT(strcmp(m->entries[i].name, name) != 0);  /* names are unique */
    if (m->n == m->cap) {
        m->cap = m->cap ? 2 * m->cap : 32;
        m->entries = fm_xrealloc(m->entries, (size_t)m->cap * sizeof *m->entries);
    }
    fm_tensor *t = fm_xcalloc(1, sizeof *t);
    t->dtype = dtype;
    fm_tensor_set_shape(t, ndim, shape);
    t->requires_grad = !is_buffer;
    entry *e = &m->entries[m->n++];
    *e = (entry){fm_xstrdup(name), t, is_buffer, init, fan_in};
    t->name = e->name;
    return t;
}

fm_tensor *fm_model_param(fm_model *m, const char *name, int ndim, const int *shape,
                          fm_init init, int fan_in)
{
    FM_ASSERT(init != FM_INIT_FAN_IN || fan_in > 0);
    return add_entry(m, name, FM_F32, ndim, shape, false, init, fan_in);
}

fm_tensor *fm_model_buffer(fm_model *m, const char *name, fm_dtype dtype, int ndim,
                           const int *shape, fm_init init)
{
    FM_ASSERT(init != FM_INIT_FAN_IN);
    return add_entry(m, name, dtype, ndim, shape, true, init, 0);
}

static void init_tensor(const entry *e, fm_rng *rng)
{
    fm_tensor *t = e->t;
    if (t->dtype == FM_I64) {
        for (int64_t i = 0; i < t->numel; i++) t->i64[i] = e->init == FM_INIT_ONES;
        return;
    }
    switch (e->init) {
    case FM_INIT_ZEROS:
    case FM_INIT_ONES:
        for (int64_t i = 0; i < t->numel; i++) t->data[i] = e->init == FM_INIT_ONES;
        break;
    case FM_INIT_FAN_IN: {
        float bound = (float)(1.0 / sqrt((double)e->fan_in));
        for (int64_t i = 0; i < t->numel; i++)
            t->data[i] = bound * (2.0f * fm_rng_uniform(rng) - 1.0f);
        break;
    }
    }
}

void fm_model_finalize(fm_model *m, uint64_t seed)
{
    FM_ASSERT(!m->finalized);
    size_t data = 0, grads = 0;
    m->params = fm_xcalloc((size_t)m->n + 1, sizeof *m->params);
    for (int i = 0; i < m->n; i++) {
        data += data_size(m->entries[i].t);
        if (!m->entries[i].is_buffer) {
            grads += padded((size_t)m->entries[i].t->numel * sizeof(float));
            m->params[m->n_params++] = m->entries[i].t;
        }
    }
    m->data_bytes = data;
    m->grad_bytes = grads;
    m->block = fm_xaligned(data + grads);
    memset(m->block, 0, data + grads);

    unsigned char *dp = m->block, *gp = m->block + data;
    fm_rng rng;
    fm_rng_seed(&rng, seed, FM_RNG_INIT);
    for (int i = 0; i < m->n; i++) {
        entry *e = &m->entries[i];
        e->t->data = (float *)dp;
        dp += data_size(e->t);
        if (!e->is_buffer) {
            e->t->grad = (float *)gp;
            gp += padded((size_t)e->t->numel * sizeof(float));
        }
        init_tensor(e, &rng);
    }
    m->finalized = true;
}

void fm_model_free(fm_model *m)
{
    if (!m) return;
    if (m->destroy && m->self) m->destroy(m->self);
    for (int i = 0; i < m->n; i++) {
        free(m->entries[i].name);
        free(m->entries[i].t);
    }
    free(m->entries);
    free(m->params);
    free(m->block);
    void (*on_free)(void *) = m->on_free;
    void *ctx = m->ctx;
    free(m);
    /* Last: this may unload the plugin whose code destroy() was. */
    if (on_free) on_free(ctx);
}

void fm_model_set_impl(fm_model *m, void *self, fm_forward_fn forward, fm_destroy_fn destroy,
                       void (*on_free)(void *ctx), void *ctx)
{
    m->self = self;
    m->forward = forward;
    m->destroy = destroy;
    m->on_free = on_free;
    m->ctx = ctx;
}

void *fm_model_self(const fm_model *m) { return m->self; }
void *fm_model_owner(const fm_model *m) { return m->ctx; }

fm_tensor *fm_model_forward(fm_model *m, fm_graph *g, fm_tensor *x)
{
    FM_ASSERT(m->finalized && m->forward != NULL);
    return m->forward(m->self, g, x);
}

fm_status fm_model_forward_checked(fm_model *m, fm_graph *g, fm_tensor *x, const char *who,
                                   fm_tensor **logits)
{
    fm_tensor *y = *logits = fm_model_forward(m, g, x);
    if (!y)
        return fm_error_set(FM_ERR_PLUGIN, "plugin %s: forward() returned NULL (it must return "
                            "the logits [N, 10])", who);
    char shape[128];
    fm_tensor_shape_str(y, shape, sizeof shape);
    if (y->dtype != FM_F32 || y->ndim != 2 || y->shape[0] != x->shape[0] || y->shape[1] != 10)
        return fm_error_set(FM_ERR_PLUGIN, "plugin %s: forward() returned a %s %s tensor for %d "
                            "images; the host needs F32 logits [%d, 10]", who,
                            y->dtype == FM_F32 ? "F32" : "I64", shape, x->shape[0], x->shape[0]);
    return FM_OK;
}

int fm_model_count(const fm_model *m) { return m->n; }

fm_model_entry fm_model_entry_at(const fm_model *m, int i)
{
    FM_ASSERT(i >= 0 && i < m->n);
    return (fm_model_entry){m->entries[i].name, m->entries[i].t, m->entries[i].is_buffer};
}

fm_tensor *fm_model_find(const fm_model *m, const char *name)
{
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->entries[i].name, name) == 0) return m->entries[i].t;
    return NULL;
}

fm_tensor *const *fm_model_params(const fm_model *m, int *count)
{
    FM_ASSERT(m->finalized);
    *count = m->n_params;
    return m->params;
}

int64_t fm_model_num_params(const fm_model *m)
{
    int64_t total = 0;
    for (int i = 0; i < m->n; i++)
        if (!m->entries[i].is_buffer) total += m->entries[i].t->numel;
    return total;
}

void fm_model_zero_grad(fm_model *m)
{
    FM_ASSERT(m->finalized);
    memset(m->block + m->data_bytes, 0, m->grad_bytes);
}

size_t fm_model_state_bytes(const fm_model *m)
{
    FM_ASSERT(m->finalized);
    return m->data_bytes;
}

void fm_model_state_save(const fm_model *m, void *buf)
{
    FM_ASSERT(m->finalized);
    memcpy(buf, m->block, m->data_bytes);
}

void *fm_model_state_entry(const fm_model *m, void *buf, int i)
{
    FM_ASSERT(m->finalized && i >= 0 && i < m->n);
    return (unsigned char *)buf + ((unsigned char *)m->entries[i].t->data - m->block);
}

void fm_model_state_load(fm_model *m, const void *buf)
{
    FM_ASSERT(m->finalized);
    memcpy(m->block, buf, m->data_bytes);
}
