/* loader.c — subsets, the train/validation split, batches and augmentation. */
#include "fm/fm_data.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* pixel -> normalised float, computed the way torchvision's ToTensor +
 * Normalize do in float32, so inputs match PyTorch's bit for bit. */
static float norm_lut[256];

__attribute__((constructor)) static void norm_lut_init(void)
{
    for (int p = 0; p < 256; p++)
        norm_lut[p] = ((float)p / 255.0f - FM_DATA_MEAN) / FM_DATA_STD;
}

void fm_image_normalize(const uint8_t *pixels, float *out)
{
    for (int i = 0; i < FM_IMAGE_PIXELS; i++)
        out[i] = norm_lut[pixels[i]];
}

/* ---- subsets ---------------------------------------------------------------- */

static void subset_init(fm_subset *s, const fm_dataset *d, const uint32_t *index, int n)
{
    s->data = d;
    s->n = n;
    s->index = fm_xmalloc((size_t)(n > 0 ? n : 1) * sizeof *s->index);
    if (n > 0)
        memcpy(s->index, index, (size_t)n * sizeof *s->index);
}

void fm_subset_free(fm_subset *s)
{
    if (!s)
        return;
    free(s->index);
    *s = (fm_subset){0};
}

void fm_subset_all(fm_subset *out, const fm_dataset *d, int limit)
{
    FM_ASSERT(out && d && d->n >= 0);
    int n = limit > 0 && limit < d->n ? limit : d->n;
    out->data = d;
    out->n = n;
    out->index = fm_xmalloc((size_t)(n > 0 ? n : 1) * sizeof *out->index);
    for (int i = 0; i < n; i++)
        out->index[i] = (uint32_t)i;
}

void fm_split(const fm_dataset *d, double val_frac, uint64_t seed, int limit, fm_subset *train,
              fm_subset *val)
{
    FM_ASSERT(d && train && val && d->n >= 0);
    FM_ASSERT(val_frac >= 0.0 && val_frac < 1.0);
    int n = d->n;
    uint32_t *perm = fm_xmalloc((size_t)(n > 0 ? n : 1) * sizeof *perm);
    for (int i = 0; i < n; i++)
        perm[i] = (uint32_t)i;
    fm_rng rng;
    fm_rng_seed(&rng, seed, FM_RNG_SPLIT);
    fm_rng_shuffle(&rng, perm, (size_t)n);

    const int nval_all = (int)lround((double)n * val_frac);
    int nval = nval_all;
    int ntrain = n - nval_all;
    if (limit > 0) {
        /* Keep the validation set in the same proportion to the cut training
         * set; the epsilon stops 0.1/0.9*900 = 100.00000000000001 from
         * rounding up to 101. */
        double want = ceil((double)limit * val_frac / (1.0 - val_frac) - 1e-9);
        if (ntrain > limit)
            ntrain = limit;
        if (want < nval)
            nval = (int)want;
    }
    subset_init(val, d, perm, nval);
    subset_init(train, d, perm + nval_all, ntrain);
    free(perm);
}

/* ---- batches ---------------------------------------------------------------- */

/* One image's augmentation: crop offsets and flip (augment_draw_next). */
typedef struct augment_draw {
    int8_t top, left;
    bool flip;
} augment_draw;

/* One image's erased rectangle (erase_draw_next); h = 0: none. */
typedef struct erase_draw {
    int8_t top, left, h, w;
} erase_draw;

struct fm_loader {
    const fm_subset *subset;
    uint32_t *order;  /* [n] positions into subset->index for this epoch */
    int batch_size;
    int pos;          /* next position in order */
    bool shuffle, augment, begun;
    fm_rng shuffle_rng, augment_rng, erase_rng, mix_rng;
    fm_rng shuffle_at_begin;  /* shuffle_rng before the current epoch's shuffle */
    uint32_t *batch_idx;      /* [batch_size] the batch's dataset indices */
    augment_draw *batch_draw; /* [batch_size] its augmentation */
    double erase_p;           /* random erasing's probability (0: off) */
    erase_draw *batch_erase;  /* [batch_size] its erased rectangles */
    double mixup_alpha, cutmix_alpha;  /* 0: off */
    float *mix_copy;          /* [batch_size, 784] the batch before mixing */
};

fm_loader *fm_loader_new(const fm_subset *s, int batch_size, bool shuffle, bool augment,
                         uint64_t seed)
{
    FM_ASSERT(s && s->n >= 0 && batch_size > 0);
    fm_loader *l = fm_xcalloc(1, sizeof *l);
    l->subset = s;
    l->order = fm_xmalloc((size_t)(s->n > 0 ? s->n : 1) * sizeof *l->order);
    l->batch_size = batch_size;
    l->batch_idx = fm_xmalloc((size_t)batch_size * sizeof *l->batch_idx);
    l->batch_draw = fm_xmalloc((size_t)batch_size * sizeof *l->batch_draw);
    l->shuffle = shuffle;
    l->augment = augment;
    fm_rng_seed(&l->shuffle_rng, seed, FM_RNG_SHUFFLE);
    fm_rng_seed(&l->augment_rng, seed, FM_RNG_AUGMENT);
    fm_rng_seed(&l->erase_rng, seed, FM_RNG_ERASE);
    fm_rng_seed(&l->mix_rng, seed, FM_RNG_MIX);
    return l;
}

void fm_loader_set_mixing(fm_loader *l, double mixup_alpha, double cutmix_alpha)
{
    FM_ASSERT(l && mixup_alpha >= 0.0 && cutmix_alpha >= 0.0);
    l->mixup_alpha = mixup_alpha;
    l->cutmix_alpha = cutmix_alpha;
    if ((mixup_alpha > 0.0 || cutmix_alpha > 0.0) && !l->mix_copy)
        l->mix_copy = fm_xmalloc((size_t)l->batch_size * FM_IMAGE_PIXELS * sizeof *l->mix_copy);
}

void fm_loader_set_erasing(fm_loader *l, double p)
{
    FM_ASSERT(l && p >= 0.0 && p <= 1.0);
    l->erase_p = p;
    if (p > 0.0 && !l->batch_erase)
        l->batch_erase = fm_xmalloc((size_t)l->batch_size * sizeof *l->batch_erase);
}

void fm_loader_free(fm_loader *l)
{
    if (!l)
        return;
    free(l->order);
    free(l->batch_idx);
    free(l->batch_draw);
    free(l->batch_erase);
    free(l->mix_copy);
    free(l);
}

void fm_loader_begin_epoch(fm_loader *l)
{
    FM_ASSERT(l);
    int n = l->subset->n;
    /* Each epoch shuffles the identity afresh, so epoch k's order depends
     * only on the seed and k, not on how far earlier epochs were read. */
    for (int i = 0; i < n; i++)
        l->order[i] = (uint32_t)i;
    l->shuffle_at_begin = l->shuffle_rng;
    if (l->shuffle)
        fm_rng_shuffle(&l->shuffle_rng, l->order, (size_t)n);
    l->pos = 0;
    l->begun = true;
}

fm_loader_state fm_loader_save(const fm_loader *l)
{
    FM_ASSERT(l);
    return (fm_loader_state){.shuffle_at_begin = l->begun ? l->shuffle_at_begin : l->shuffle_rng,
                             .augment = l->augment_rng, .erase = l->erase_rng, .mix = l->mix_rng,
                             .pos = l->pos,
                             .begun = l->begun};
}

void fm_loader_restore(fm_loader *l, const fm_loader_state *s)
{
    FM_ASSERT(l && s && s->pos >= 0 && s->pos <= l->subset->n);
    l->shuffle_rng = s->shuffle_at_begin;
    l->begun = false;
    if (s->begun)
        fm_loader_begin_epoch(l);  /* the same order, the stream advanced past it */
    l->augment_rng = s->augment;
    l->erase_rng = s->erase;
    l->mix_rng = s->mix;
    l->pos = s->pos;
}

int fm_loader_num_batches(const fm_loader *l)
{
    FM_ASSERT(l);
    return (l->subset->n + l->batch_size - 1) / l->batch_size;
}

/* Random crop of the image zero-padded by 2 (offsets 0..4 per axis), then a
 * horizontal flip with probability 0.5, as torchvision's RandomCrop(28,
 * padding=2) + RandomHorizontalFlip() do.  Draws per image, in this order:
 * top offset, left offset, flip. */
static augment_draw augment_draw_next(fm_rng *rng)
{
    const int pad = 2;
    augment_draw a;
    a.top = (int8_t)((int)fm_rng_below(rng, 2 * pad + 1) - pad);
    a.left = (int8_t)((int)fm_rng_below(rng, 2 * pad + 1) - pad);
    a.flip = fm_rng_uniform(rng) < 0.5f;
    return a;
}

/* uniform(lo, hi) from one draw. */
static double uniform_in(fm_rng *rng, double lo, double hi)
{
    return lo + (hi - lo) * (double)fm_rng_uniform(rng);
}

/* torchvision's RandomErasing.get_params for a 28x28 image, scale (0.02,
 * 0.33), ratio (0.3, 3.3), after its draw against p.  Draws per image: the
 * coin; then per try the area fraction and the log aspect ratio, and for
 * the try that fits the top and left offsets. */
static erase_draw erase_draw_next(fm_rng *rng, double p)
{
    erase_draw e = {0, 0, 0, 0};
    if (!(fm_rng_uniform(rng) < p)) return e;
    const double area = FM_IMAGE_H * FM_IMAGE_W;
    const double log_lo = log(0.3), log_hi = log(3.3);
    for (int attempt = 0; attempt < 10; attempt++) {
        double erase_area = area * uniform_in(rng, 0.02, 0.33);
        double ratio = exp(uniform_in(rng, log_lo, log_hi));
        int h = (int)nearbyint(sqrt(erase_area * ratio));  /* Python's round: half to even */
        int w = (int)nearbyint(sqrt(erase_area / ratio));
        if (!(h < FM_IMAGE_H && w < FM_IMAGE_W)) continue;
        e.top = (int8_t)fm_rng_below(rng, (uint32_t)(FM_IMAGE_H - h + 1));
        e.left = (int8_t)fm_rng_below(rng, (uint32_t)(FM_IMAGE_W - w + 1));
        e.h = (int8_t)h;
        e.w = (int8_t)w;
        return e;
    }
    return e;
}

static void erase_image(erase_draw e, float *out)
{
    for (int y = e.top; y < e.top + e.h; y++)
        for (int x = e.left; x < e.left + e.w; x++) out[y * FM_IMAGE_W + x] = 0.0f;
}

static void augment_image(augment_draw a, const uint8_t *img, float *out)
{
    const float zero = norm_lut[0];
    for (int y = 0; y < FM_IMAGE_H; y++) {
        int sy = y + a.top;
        float *row = out + y * FM_IMAGE_W;
        if (sy < 0 || sy >= FM_IMAGE_H) {
            for (int x = 0; x < FM_IMAGE_W; x++)
                row[x] = zero;
            continue;
        }
        const uint8_t *src = img + sy * FM_IMAGE_W;
        for (int x = 0; x < FM_IMAGE_W; x++) {
            int sx = (a.flip ? FM_IMAGE_W - 1 - x : x) + a.left;
            row[x] = sx >= 0 && sx < FM_IMAGE_W ? norm_lut[src[sx]] : zero;
        }
    }
}

/* A batch's images, FILL_IMAGES per task of the pool: the draws are made
 * in order beforehand, so the pixels do not depend on who fills them. */
#define FILL_IMAGES 16

typedef struct batch_fill {
    const uint8_t *images;        /* the dataset's [n, 784] */
    const uint32_t *idx;          /* [b] dataset indices */
    const augment_draw *draw;     /* [b], or NULL: no augmentation */
    const erase_draw *erase;      /* [b], or NULL: no erasing */
    float *x;                     /* [b, 784] */
    int b;
} batch_fill;

static void batch_fill_task(void *arg, int task, int thread)
{
    (void)thread;
    const batch_fill *f = arg;
    int end = (task + 1) * FILL_IMAGES < f->b ? (task + 1) * FILL_IMAGES : f->b;
    for (int i = task * FILL_IMAGES; i < end; i++) {
        const uint8_t *img = f->images + (size_t)f->idx[i] * FM_IMAGE_PIXELS;
        float *xi = f->x + (size_t)i * FM_IMAGE_PIXELS;
        if (f->draw)
            augment_image(f->draw[i], img, xi);
        else
            fm_image_normalize(img, xi);
        if (f->erase) erase_image(f->erase[i], xi);
    }
}

int fm_loader_next(fm_loader *l, float *x, int32_t *y, uint32_t *index_out)
{
    FM_ASSERT(l && x && y);
    if (!l->begun)
        fm_loader_begin_epoch(l);
    const fm_subset *s = l->subset;
    const fm_dataset *d = s->data;
    int b = s->n - l->pos;
    if (b <= 0)
        return 0;
    if (b > l->batch_size)
        b = l->batch_size;
    uint32_t *idx = l->batch_idx;
    augment_draw *draw = l->augment ? l->batch_draw : NULL;
    erase_draw *erase = l->erase_p > 0.0 ? l->batch_erase : NULL;
    for (int i = 0; i < b; i++) {
        idx[i] = s->index[l->order[l->pos + i]];
        FM_ASSERT(idx[i] < (uint32_t)d->n);
        if (draw)
            draw[i] = augment_draw_next(&l->augment_rng);
        if (erase)
            erase[i] = erase_draw_next(&l->erase_rng, l->erase_p);
        y[i] = d->labels[idx[i]];
        if (index_out)
            index_out[i] = idx[i];
    }
    batch_fill f = {.images = d->images, .idx = idx, .draw = draw, .erase = erase, .x = x, .b = b};
    fm_parallel_for((b + FILL_IMAGES - 1) / FILL_IMAGES, batch_fill_task, &f);
    l->pos += b;
    return b;
}

/* ---- mixup and cutmix ------------------------------------------------------------ */

/* Uniform in (0, 1), 53 bits. */
static double open_uniform(fm_rng *rng)
{
    uint64_t hi = fm_rng_u32(rng) >> 5, lo = fm_rng_u32(rng) >> 6;
    return ((double)(hi * 67108864u + lo) + 0.5) / 9007199254740992.0;
}

/* Standard normal (Box-Muller, one of the pair). */
static double normal(fm_rng *rng)
{
    double u = open_uniform(rng), v = open_uniform(rng);
    return sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v);
}

/* Gamma(a, 1), Marsaglia and Tsang; a < 1 through Gamma(a + 1) u^(1/a). */
static double gamma_draw(fm_rng *rng, double a)
{
    if (a < 1.0) return gamma_draw(rng, a + 1.0) * pow(open_uniform(rng), 1.0 / a);
    const double d = a - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x = normal(rng), v = 1.0 + c * x;
        if (v <= 0.0) continue;
        v = v * v * v;
        double u = open_uniform(rng);
        if (log(u) < 0.5 * x * x + d - d * v + d * log(v)) return d * v;
    }
}

/* Beta(a, a) = X / (X + Y), X, Y ~ Gamma(a). */
static double beta_draw(fm_rng *rng, double a)
{
    double x = gamma_draw(rng, a), y = gamma_draw(rng, a);
    return x / (x + y);
}

/* The b images of x mixed with the batch reversed (fm_loader_set_mixing);
 * returns lam.  Draws per batch: the mixup-or-cutmix coin (both on), the
 * two gammas of lam, then cutmix's centre row and column. */
static float mix_batch(fm_loader *l, float *x, int b)
{
    bool cutmix = l->cutmix_alpha > 0.0;
    if (l->mixup_alpha > 0.0 && l->cutmix_alpha > 0.0) cutmix = fm_rng_uniform(&l->mix_rng) < 0.5f;
    double lam = beta_draw(&l->mix_rng, cutmix ? l->cutmix_alpha : l->mixup_alpha);
    const size_t px = FM_IMAGE_PIXELS;
    if (cutmix) {
        double ratio = sqrt(1.0 - lam);
        int cut_h = (int)(FM_IMAGE_H * ratio), cut_w = (int)(FM_IMAGE_W * ratio);
        int cy = (int)fm_rng_below(&l->mix_rng, FM_IMAGE_H), cx = (int)fm_rng_below(&l->mix_rng, FM_IMAGE_W);
        int yl = cy - cut_h / 2 < 0 ? 0 : cy - cut_h / 2, yh = cy + cut_h / 2 > FM_IMAGE_H ? FM_IMAGE_H : cy + cut_h / 2;
        int xl = cx - cut_w / 2 < 0 ? 0 : cx - cut_w / 2, xh = cx + cut_w / 2 > FM_IMAGE_W ? FM_IMAGE_W : cx + cut_w / 2;
        lam = 1.0 - (double)((yh - yl) * (xh - xl)) / (double)px;
        if (lam == 1.0) return 1.0f;
        memcpy(l->mix_copy, x, (size_t)b * px * sizeof *x);
        for (int i = 0; i < b; i++) {
            const float *other = l->mix_copy + (size_t)(b - 1 - i) * px;
            for (int r = yl; r < yh; r++)
                for (int c = xl; c < xh; c++) x[i * px + r * FM_IMAGE_W + c] = other[r * FM_IMAGE_W + c];
        }
        return (float)lam;
    }
    const float keep = (float)lam, take = (float)(1.0 - (double)keep);
    if (keep == 1.0f) return 1.0f;
    memcpy(l->mix_copy, x, (size_t)b * px * sizeof *x);
    for (int i = 0; i < b; i++) {
        const float *other = l->mix_copy + (size_t)(b - 1 - i) * px;
        for (size_t p = 0; p < px; p++) {
            float mine = x[i * px + p] * keep, theirs = other[p] * take;
            x[i * px + p] = mine + theirs;
        }
    }
    return (float)lam;
}

int fm_loader_next_mixed(fm_loader *l, float *x, int32_t *y, int32_t *y_b, float *lam)
{
    FM_ASSERT(y_b && lam);
    int b = fm_loader_next(l, x, y, NULL);
    *lam = 1.0f;
    for (int i = 0; i < b; i++) y_b[i] = y[b - 1 - i];
    if (b > 0 && (l->mixup_alpha > 0.0 || l->cutmix_alpha > 0.0)) *lam = mix_batch(l, x, b);
    return b;
}
