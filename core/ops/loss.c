/* Cross-entropy loss on logits: mean over the batch of logsumexp - logit[label];
 * with label smoothing e, the target is (1 - e) one-hot + e / K, as
 * nn.CrossEntropyLoss(label_smoothing=e): per image
 *   (1 - e) (lse - z[label]) + e (lse - mean_k z[k]).
 * e = 0 takes exactly the plain path. */
#include "ops_util.h"

#include <math.h>

typedef struct ce_saved {
    int32_t *labels;  // [N]
    float *prob;      // [N, K] softmax of the logits, or NULL
    float smoothing;  // in [0, 1)
} ce_saved;

fm_tensor *fm_cross_entropy(fm_graph *g, fm_tensor *logits, const int32_t *labels)
{
    return fm_cross_entropy_smooth(g, logits, labels, 0.0f);
}

fm_tensor *fm_cross_entropy_smooth(fm_graph *g, fm_tensor *logits, const int32_t *labels,
                                   float smoothing)
{
    FM_ASSERT(fm_ops_is_f32(logits) && logits->ndim == 2);
    FM_ASSERT(labels != NULL);
    FM_ASSERT(smoothing >= 0.0f && smoothing < 1.0f);
    int batch = logits->shape[0], classes = logits->shape[1];
    ce_saved *sv = fm_graph_alloc(g, sizeof *sv);
    sv->labels = fm_graph_alloc(g, (size_t)batch * sizeof *sv->labels);
    sv->prob = NULL;
    sv->smoothing = smoothing;
    for (int i = 0; i < batch; i++) {
        FM_ASSERT(labels[i] >= 0 && labels[i] < classes);
        sv->labels[i] = labels[i];
    }
    fm_node *n = fm_node_new(g, FM_OP_CROSS_ENTROPY, 1, &logits);
    n->saved = sv;
    n->out = fm_graph_tensor(g, 1, (int[]){1});
    return fm_graph_apply(g, n);
}

void fm_op_cross_entropy_forward(fm_graph *g, fm_node *n)
{
    const fm_tensor *logits = n->in[0];
    int batch = logits->shape[0], classes = logits->shape[1];
    ce_saved *sv = n->saved;
    if (n->record) sv->prob = fm_graph_alloc(g, (size_t)logits->numel * sizeof *sv->prob);
    double total = 0.0;
    for (int i = 0; i < batch; i++) {
        const float *z = logits->data + (size_t)i * classes;
        double zmax = z[0];
        for (int k = 1; k < classes; k++)
            if (z[k] > zmax) zmax = z[k];
        double sum = 0.0;
        for (int k = 0; k < classes; k++) sum += exp((double)z[k] - zmax);
        double lse = zmax + log(sum);
        double li = lse - z[sv->labels[i]];
        if (sv->smoothing > 0.0f) {
            double zsum = 0.0;
            for (int k = 0; k < classes; k++) zsum += z[k];
            li = (1.0 - sv->smoothing) * li + sv->smoothing * (lse - zsum / classes);
        }
        total += li;
        if (sv->prob) {
            float *p = sv->prob + (size_t)i * classes;
            for (int k = 0; k < classes; k++) p[k] = (float)exp((double)z[k] - lse);
        }
    }
    n->out->data[0] = (float)(total / batch);
}

void fm_op_cross_entropy_backward(fm_graph *g, fm_node *n)
{
    (void)g;
    if (!fm_node_wants_grad(n, 0)) return;
    const fm_tensor *logits = n->in[0];
    int batch = logits->shape[0], classes = logits->shape[1];
    const ce_saved *sv = n->saved;
    FM_ASSERT(sv->prob != NULL);
    float scale = n->out->grad[0] / (float)batch;
    float *dz = n->in[0]->grad;
    /* The target: 1 at the label, 0 elsewhere, without smoothing. */
    const float hit = 1.0f - sv->smoothing, spread = sv->smoothing / (float)classes;
    for (int i = 0; i < batch; i++)
        for (int k = 0; k < classes; k++) {
            size_t idx = (size_t)i * classes + k;
            dz[idx] += (sv->prob[idx] - ((k == sv->labels[i] ? hit : 0.0f) + spread)) * scale;
        }
}
