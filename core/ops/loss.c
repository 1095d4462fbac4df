/* Cross-entropy loss on logits: mean over the batch of logsumexp - logit[label];
 * with label smoothing e, the target is (1 - e) one-hot + e / K, as
 * nn.CrossEntropyLoss(label_smoothing=e): per image
 *   (1 - e) (lse - z[label]) + e (lse - mean_k z[k]).
 * e = 0 takes exactly the plain path.  Mixed targets (mixup, cutmix): with
 * second labels b and weight lam, lam * loss(label) + (1 - lam) * loss(b),
 * the cross-entropy against lam t(label) + (1 - lam) t(b). */
#include "ops_util.h"

#include <math.h>

typedef struct ce_saved {
    int32_t *labels;  // [N]
    float *prob;      // [N, K] softmax of the logits, or NULL
    float smoothing;  // in [0, 1)
    int32_t *labels_b;  // [N] the second labels of mixed targets, or NULL
    float lam;          // the weight of `labels` in mixed targets
    int total;          // images in the whole batch (fm_graph_set_batch)
} ce_saved;

fm_tensor *fm_cross_entropy(fm_graph *g, fm_tensor *logits, const int32_t *labels)
{
    return fm_cross_entropy_smooth(g, logits, labels, 0.0f);
}

fm_tensor *fm_cross_entropy_smooth(fm_graph *g, fm_tensor *logits, const int32_t *labels,
                                   float smoothing)
{
    return fm_cross_entropy_mix(g, logits, labels, NULL, 1.0f, smoothing);
}

fm_tensor *fm_cross_entropy_mix(fm_graph *g, fm_tensor *logits, const int32_t *labels,
                                const int32_t *labels_b, float lam, float smoothing)
{
    FM_ASSERT(fm_ops_is_f32(logits) && logits->ndim == 2);
    FM_ASSERT(labels != NULL);
    FM_ASSERT(smoothing >= 0.0f && smoothing < 1.0f);
    FM_ASSERT(lam >= 0.0f && lam <= 1.0f);
    int batch = logits->shape[0], classes = logits->shape[1];
    ce_saved *sv = fm_graph_alloc(g, sizeof *sv);
    sv->labels = fm_graph_alloc(g, (size_t)batch * sizeof *sv->labels);
    sv->prob = NULL;
    sv->smoothing = smoothing;
    sv->lam = lam;
    sv->labels_b = NULL;
    for (int i = 0; i < batch; i++) {
        FM_ASSERT(labels[i] >= 0 && labels[i] < classes);
        sv->labels[i] = labels[i];
    }
    if (labels_b) {
        sv->labels_b = fm_graph_alloc(g, (size_t)batch * sizeof *sv->labels_b);
        for (int i = 0; i < batch; i++) {
            FM_ASSERT(labels_b[i] >= 0 && labels_b[i] < classes);
            sv->labels_b[i] = labels_b[i];
        }
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
    /* Each chunk's sum in double, then the chunks' tree (fm_chunk_sum). */
    fm_chunks ch;
    fm_graph_chunks(g, batch, &ch);
    double *parts = fm_graph_alloc(g, (size_t)(ch.end - ch.first + 1) * sizeof *parts);
    for (int c = 0; c < ch.end - ch.first; c++) parts[c] = 0.0;
    for (int i = 0; i < batch; i++) {
        const float *z = logits->data + (size_t)i * classes;
        double zmax = z[0];
        for (int k = 1; k < classes; k++)
            if (z[k] > zmax) zmax = z[k];
        double sum = 0.0;
        for (int k = 0; k < classes; k++) sum += exp((double)z[k] - zmax);
        double lse = zmax + log(sum);
        double li = lse - z[sv->labels[i]];
        if (sv->labels_b) li = sv->lam * li + (1.0 - sv->lam) * (lse - z[sv->labels_b[i]]);
        if (sv->smoothing > 0.0f) {
            double zsum = 0.0;
            for (int k = 0; k < classes; k++) zsum += z[k];
            li = (1.0 - sv->smoothing) * li + sv->smoothing * (lse - zsum / classes);
        }
        if (i / ch.size < ch.end - ch.first) parts[i / ch.size] += li;  /* not a stand-in */
        if (sv->prob) {
            float *p = sv->prob + (size_t)i * classes;
            for (int k = 0; k < classes; k++) p[k] = (float)exp((double)z[k] - lse);
        }
    }
    fm_chunks_sum(&ch, FM_CHUNK_F64, parts, parts, 1);
    n->out->data[0] = (float)(parts[0] / ch.total);
    sv->total = ch.total;
}

void fm_op_cross_entropy_backward(fm_graph *g, fm_node *n)
{
    (void)g;
    if (!fm_node_wants_grad(n, 0)) return;
    const fm_tensor *logits = n->in[0];
    int batch = logits->shape[0], classes = logits->shape[1];
    const ce_saved *sv = n->saved;
    FM_ASSERT(sv->prob != NULL);
    /* The mean is over the whole batch, whichever of its chunks are here. */
    float scale = n->out->grad[0] / (float)sv->total;
    float *dz = n->in[0]->grad;
    /* The target: 1 at the label, 0 elsewhere, without smoothing. */
    const float hit = 1.0f - sv->smoothing, spread = sv->smoothing / (float)classes;
    const float hit_a = hit * sv->lam, hit_b = hit * (1.0f - sv->lam);
    for (int i = 0; i < batch; i++)
        for (int k = 0; k < classes; k++) {
            size_t idx = (size_t)i * classes + k;
            float target = (k == sv->labels[i] ? hit : 0.0f) + spread;
            if (sv->labels_b)
                target = (k == sv->labels[i] ? hit_a : 0.0f) + (k == sv->labels_b[i] ? hit_b : 0.0f) +
                         spread;
            dz[idx] += (sv->prob[idx] - target) * scale;
        }
}
