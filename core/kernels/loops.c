/* The plain loops of every kernel set: elementwise ops, batch norm's planes
 * and the optimizer updates.  Written once in C; each set's copy is
 * vectorised by the compiler for that set's instructions.  Every element
 * gets the same IEEE operations in the same order in every copy (nothing
 * is contracted into a multiply-add), so the sets agree bit for bit here. */
#include "kset.h"

#include <math.h>

void FM_K(relu_forward)(float *restrict y, const float *restrict x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void FM_K(relu_backward)(float *restrict dx, const float *restrict x, const float *restrict dy,
                         int64_t n)
{
    for (int64_t i = 0; i < n; i++) dx[i] += x[i] > 0.0f ? dy[i] : 0.0f;
}

/* x * (mask * scale), as PyTorch computes it (a NaN stays NaN). */
void FM_K(dropout_forward)(float *restrict y, const float *restrict x,
                           const uint8_t *restrict mask, float scale, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = x[i] * ((float)mask[i] * scale);
}

void FM_K(dropout_backward)(float *restrict dx, const float *restrict dy,
                            const uint8_t *restrict mask, float scale, int64_t n)
{
    for (int64_t i = 0; i < n; i++) dx[i] += dy[i] * ((float)mask[i] * scale);
}

void FM_K(add)(float *restrict y, const float *restrict a, const float *restrict b, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

void FM_K(accumulate)(float *restrict dx, const float *restrict dy, int64_t n)
{
    for (int64_t i = 0; i < n; i++) dx[i] += dy[i];
}

/* y = x * scale + shift, as PyTorch's CPU kernel computes it. */
void FM_K(bn_plane)(float *restrict y, const float *restrict x, float sc, float sh, int64_t s)
{
    for (int64_t q = 0; q < s; q++) y[q] = x[q] * sc + sh;
}

/* A fresh dx gets the value itself: 0 + v is v (but for the sign of a
 * zero).  The flags are constants in each call below, so every combination
 * is its own loop. */
__attribute__((always_inline)) static inline void
bn_backward_plane_as(float *restrict dx, const float *restrict x, const float *restrict dy,
                     float a, float b, float mu, float d, int64_t s, const bool affine_only,
                     const bool store)
{
    for (int64_t q = 0; q < s; q++) {
        float v = affine_only ? a * dy[q] : a * dy[q] + b * (x[q] - mu) + d;
        dx[q] = store ? v : dx[q] + v;
    }
}

void FM_K(bn_backward_plane)(float *dx, const float *x, const float *dy, float a, float b,
                             float mu, float d, int64_t s, bool store)
{
#define BN_PLANE(affine, st) bn_backward_plane_as(dx, x, dy, a, b, mu, d, s, affine, st)
    if (b == 0.0f && d == 0.0f) store ? BN_PLANE(true, true) : BN_PLANE(true, false);
    else store ? BN_PLANE(false, true) : BN_PLANE(false, false);
#undef BN_PLANE
}

/* x - x is NaN exactly when x is NaN or infinite: a test the loops below
 * vectorise (unlike isfinite's classification). */
static inline int not_finite(float x) { float d = x - x; return d != d; }

/* torch.optim.Adam's single-tensor step (AdamW: the decoupled decay). */
bool FM_K(adam)(const fm_adam_consts *kp, float *restrict p, const float *restrict g,
                float *restrict m, float *restrict v, int64_t n)
{
    /* A local copy: the loop then reads its constants from registers and
     * vectorises (through the pointer it does not). */
    const fm_adam_consts k = *kp;
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i];
        bad |= not_finite(gi);
        if (k.adamw)
            p[i] = p[i] * k.decay;
        else if (k.weight_decay != 0.0f)
            gi = gi + k.weight_decay * p[i];
        m[i] = m[i] * k.b1 + k.one_b1 * gi;
        v[i] = v[i] * k.b2 + k.one_b2 * (gi * gi);
        float denom = sqrtf(v[i]) / k.bias2_sqrt + k.eps;
        p[i] = p[i] + (-k.step_size) * (m[i] / denom);
    }
    return !bad;
}

/* torch.optim.SGD's single-tensor step; buf is NULL without momentum. */
bool FM_K(sgd)(const fm_sgd_consts *kp, float *restrict p, const float *restrict g,
               float *restrict buf, int64_t n)
{
    const fm_sgd_consts k = *kp;
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
        float d = g[i];
        bad |= not_finite(d);
        if (k.weight_decay != 0.0f) d = d + k.weight_decay * p[i];
        if (k.momentum != 0.0f) {
            buf[i] = k.first ? d : buf[i] * k.momentum + (1.0f - k.dampening) * d;
            d = k.nesterov ? d + k.momentum * buf[i] : buf[i];
        }
        p[i] = p[i] + (-k.lr) * d;
    }
    return !bad;
}

double FM_K(sum_squares)(const float *restrict a, int64_t n)
{
    double lane[8] = {0};
    int64_t q = 0;
    for (; q + 8 <= n; q += 8)
        for (int l = 0; l < 8; l++) lane[l] += (double)a[q + l] * (double)a[q + l];
    for (; q < n; q++) lane[q % 8] += (double)a[q] * (double)a[q];
    return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}
