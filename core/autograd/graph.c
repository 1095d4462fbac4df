/* The tape and the backward driver. */
#include "fm_internal.h"
#include "../ops/ops_util.h"
#include "fm/fm_dist.h"

#include <stdlib.h>
#include <string.h>

struct fm_graph {
    fm_arena *arena;
    fm_node **tape;  /* recorded nodes in execution order */
    int n_tape, cap_tape;
    fm_node **trace;  /* with tracing on: every node applied, recorded or not */
    int n_trace, cap_trace;
    bool tracing;
    bool training, grad;
    int batch_total, batch_offset, batch_n;  /* fm_graph_set_batch */
    fm_rng rng;
    fm_precision precision;
    bool profile;
    fm_op_profile prof[FM_OP_COUNT];
};

fm_graph *fm_graph_new(void)
{
    fm_graph *g = fm_xcalloc(1, sizeof *g);
    g->arena = fm_arena_new(16u << 20);
    g->training = true;
    g->grad = true;
    g->precision = fm_precision_active();
    fm_rng_seed(&g->rng, 0, FM_RNG_DROPOUT);
    return g;
}

void fm_graph_free(fm_graph *g)
{
    if (!g) return;
    fm_arena_free(g->arena);
    free(g->tape);
    free(g->trace);
    free(g);
}

void fm_graph_reset(fm_graph *g)
{
    g->n_tape = 0;
    g->n_trace = 0;
    fm_arena_reset(g->arena);
}

void fm_graph_set_training(fm_graph *g, bool training) { g->training = training; }
bool fm_graph_training(const fm_graph *g) { return g->training; }
void fm_graph_set_grad(fm_graph *g, bool enabled) { g->grad = enabled; }
bool fm_graph_grad_enabled(const fm_graph *g) { return g->grad; }
fm_rng *fm_graph_rng(fm_graph *g) { return &g->rng; }

void fm_graph_set_batch(fm_graph *g, int total, int offset, int n)
{
    FM_ASSERT(total >= 0 && offset >= 0 && n >= 0 && offset + n <= total);
    FM_ASSERT(total == 0 || offset % fm_chunk_size(total) == 0);
    g->batch_total = total;
    g->batch_offset = offset;
    g->batch_n = n;
}

void fm_graph_chunks(const fm_graph *g, int n, fm_chunks *out)
{
    int total = g->batch_total ? g->batch_total : n, offset = g->batch_total ? g->batch_offset : 0;
    /* A rank with no chunk runs a stand-in image. */
    if (g->batch_total) {
        FM_ASSERT(n == (g->batch_n ? g->batch_n : 1));
        n = g->batch_n;
    }
    FM_ASSERT(n >= 0 && offset + n <= total);
    out->total = total;
    out->offset = offset;
    out->size = fm_chunk_size(total);
    out->count = fm_chunk_count(total);
    out->first = offset / out->size;
    out->end = out->first + (n + out->size - 1) / out->size;
    /* The ops' batch is whole chunks. */
    FM_ASSERT(out->end <= out->count &&
              (n % out->size == 0 || offset + n == total));
    out->across = g->batch_total != 0;
    if (out->across) {
        int first, end;
        fm_chunk_share(out->count, fm_dist_rank(), fm_dist_size(), &first, &end);
        FM_ASSERT(first == out->first && end == out->end);
    }
}
void fm_graph_set_precision(fm_graph *g, fm_precision p) { g->precision = p; }
fm_precision fm_graph_precision(const fm_graph *g) { return g->precision; }
fm_arena *fm_graph_arena(fm_graph *g) { return g->arena; }

void *fm_graph_alloc(fm_graph *g, size_t bytes) { return fm_arena_alloc(g->arena, bytes); }

fm_tensor *fm_graph_tensor(fm_graph *g, int ndim, const int *shape)
{
    fm_tensor *t = fm_arena_calloc(g->arena, sizeof *t);
    t->dtype = FM_F32;
    fm_tensor_set_shape(t, ndim, shape);
    t->data = fm_arena_alloc(g->arena, (size_t)t->numel * sizeof(float));
    return t;
}

fm_node *fm_node_new(fm_graph *g, fm_op_id op, int n_in, fm_tensor *const *in)
{
    FM_ASSERT(op >= 0 && op < FM_OP_COUNT && n_in >= 0 && n_in <= FM_NODE_MAX_IN);
    fm_node *n = fm_arena_calloc(g->arena, sizeof *n);
    n->op = op;
    n->n_in = n_in;
    for (int i = 0; i < n_in; i++) n->in[i] = in[i];
    return n;
}

fm_tensor *fm_graph_apply(fm_graph *g, fm_node *n)
{
    FM_ASSERT(n->out != NULL);
    bool record = false;
    if (g->grad)
        for (int i = 0; i < n->n_in; i++)
            if (n->in[i] && n->in[i]->requires_grad) record = true;
    n->record = record;

    double t0 = g->profile ? fm_now() : 0.0;
    fm_op_table[n->op].forward(g, n);
    if (g->profile) {
        g->prof[n->op].forward_s += fm_now() - t0;
        g->prof[n->op].forward_calls++;
    }

    n->out->requires_grad = record;
    n->out->node = record ? n : NULL;
    if (record) {
        if (g->n_tape == g->cap_tape) {
            g->cap_tape = g->cap_tape ? 2 * g->cap_tape : 256;
            g->tape = fm_xrealloc(g->tape, (size_t)g->cap_tape * sizeof *g->tape);
        }
        g->tape[g->n_tape++] = n;
    }
    if (g->tracing) {
        if (g->n_trace == g->cap_trace) {
            g->cap_trace = g->cap_trace ? 2 * g->cap_trace : 64;
            g->trace = fm_xrealloc(g->trace, (size_t)g->cap_trace * sizeof *g->trace);
        }
        g->trace[g->n_trace++] = n;
    }
    return n->out;
}

/* Zeroes floats [begin, end) of arg: gradient buffers of activations run to
 * megabytes, and one core alone does not saturate the memory bus, so the
 * pool shares the work like any elementwise op's. */
static void graph_zero_range(void *arg, int64_t begin, int64_t end)
{
    memset((float *)arg + begin, 0, (size_t)(end - begin) * sizeof(float));
}

void fm_backward(fm_graph *g, fm_tensor *loss)
{
    FM_ASSERT(loss->numel == 1 && loss->dtype == FM_F32);
    FM_ASSERT(loss->requires_grad && loss->node != NULL);
    /* Op outputs' gradients belong to one backward pass: left over from an
     * earlier pass on this tape, they would be propagated again (and a node
     * off this loss's path would look as if it were on it). */
    for (int i = 0; i < g->n_tape; i++) g->tape[i]->out->grad = NULL;
    loss->grad = fm_arena_alloc(g->arena, sizeof(float));
    loss->grad[0] = 1.0f;

    for (int i = g->n_tape - 1; i >= 0; i--) {
        fm_node *n = g->tape[i];
        if (!n->out->grad) continue;  /* not on a path to the loss */
        const unsigned overwrites = fm_op_table[n->op].overwrites;
        for (int k = 0; k < n->n_in; k++) {
            fm_tensor *in = n->in[k];
            if (!in || !in->requires_grad) continue;
            /* Leaves (parameters) own persistent grads; only op outputs get
             * theirs from the arena, fresh (unwritten) at first. */
            if (!in->grad) {
                FM_ASSERT(in->node != NULL);
                in->grad = fm_arena_alloc(g->arena, (size_t)in->numel * sizeof(float));
                in->node->grad_fresh = true;
            }
            if (!(overwrites >> k & 1u) && in->node && in->node->grad_fresh) {
                fm_ops_parallel_range(in->numel, FM_OPS_GRAIN, graph_zero_range, in->grad);
                in->node->grad_fresh = false;
            }
        }
        double t0 = g->profile ? fm_now() : 0.0;
        fm_op_table[n->op].backward(g, n);
        if (g->profile) {
            g->prof[n->op].backward_s += fm_now() - t0;
            g->prof[n->op].backward_calls++;
        }
        /* An op that overwrites must have claimed every fresh input it was
         * given; one left fresh would be summed into as if it were zero. */
        for (int k = 0; k < n->n_in; k++)
            if (n->in[k] && n->in[k]->requires_grad && n->in[k]->node)
                FM_ASSERT(!n->in[k]->node->grad_fresh);
    }
}

void fm_graph_set_trace(fm_graph *g, bool on) { g->tracing = on; }

int fm_graph_trace(const fm_graph *g, const fm_node *const **nodes)
{
    *nodes = (const fm_node *const *)g->trace;
    return g->n_trace;
}

void fm_graph_set_profile(fm_graph *g, bool enabled)
{
    g->profile = enabled;
    if (enabled) memset(g->prof, 0, sizeof g->prof);
}

int fm_graph_profile(const fm_graph *g, fm_op_profile *out, int max)
{
    for (int i = 0; i < FM_OP_COUNT && i < max; i++) {
        out[i] = g->prof[i];
        out[i].name = fm_op_table[i].name;
    }
    return FM_OP_COUNT;
}
