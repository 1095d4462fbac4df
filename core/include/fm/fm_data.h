/* fm_data.h — FashionMNIST: IDX files, the train/validation split, batches,
 * augmentation.
 *
 * Images stay uint8 in memory (70,000 × 784 bytes); batches are normalised as
 * they are made: x = (pixel/255 - 0.2860) / 0.3530, as torchvision's
 * ToTensor + Normalize compute it in float32.
 */
#ifndef FM_DATA_H
#define FM_DATA_H

#include "fm_base.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FM_IMAGE_H 28
#define FM_IMAGE_W 28
#define FM_IMAGE_PIXELS (FM_IMAGE_H * FM_IMAGE_W)
#define FM_NUM_CLASSES 10
#define FM_DATA_MEAN 0.2860f
#define FM_DATA_STD 0.3530f
#define FM_DATA_SYSTEM_DIR "/usr/share/datasets/fashion-mnist"

/* "T-shirt/top", "Trouser", ... "Ankle boot". */
FM_API const char *fm_class_name(int label);

typedef struct fm_dataset {
    int n;            /* number of images */
    uint8_t *images;  /* [n, 28, 28], owned */
    uint8_t *labels;  /* [n], each 0..9, owned */
} fm_dataset;

/* Reads a gzip'd (or plain) IDX image file and its label file.  Checks magic
 * numbers (0x00000803 images, 0x00000801 labels), 28×28 images, equal counts,
 * labels 0..9 and that each file holds exactly the bytes its header promises.
 * On failure: FM_ERR_IO / FM_ERR_FORMAT naming the file and the problem;
 * *out is left empty.  Free with fm_dataset_free(). */
FM_API fm_status fm_dataset_load(fm_dataset *out, const char *images_path,
                                 const char *labels_path);
FM_API void fm_dataset_free(fm_dataset *d);

/* Reads an IDX image file alone (no labels; gzip'd or plain), checked as
 * fm_dataset_load checks it.  *images [n, 28, 28] is malloc'ed (free it);
 * on failure it is NULL and the error names the file. */
FM_API fm_status fm_idx_load_images(const char *path, uint8_t **images, int *n);

/* Finds the directory holding the four FashionMNIST files, trying `cli_dir`
 * (if not NULL), then $FMHOST_DATA, then FM_DATA_SYSTEM_DIR.  When none has
 * them: FM_ERR_IO with the paths tried and "apt-get install
 * dataset-fashion-mnist". */
FM_API fm_status fm_data_find_dir(const char *cli_dir, char *out, size_t out_len);
/* The same search over explicit candidates: cli_dir (NULL: none; when given
 * but lacking the files, an error naming it, with no fall-back), env_dir
 * (NULL: "$FMHOST_DATA not set"), then system_dir.  fm_data_find_dir is
 * this with getenv("FMHOST_DATA") and FM_DATA_SYSTEM_DIR; tests use it to
 * see the not-found path on machines that have the dataset. */
FM_API fm_status fm_data_find_dir_from(const char *cli_dir, const char *env_dir,
                                       const char *system_dir, char *out, size_t out_len);

/* Loads "train" (train-images-idx3-ubyte.gz, ...) or "test" (t10k-...) from dir. */
FM_API fm_status fm_dataset_load_split(fm_dataset *out, const char *dir, const char *split);

/* A list of image indices into a dataset. */
typedef struct fm_subset {
    const fm_dataset *data;  /* not owned */
    uint32_t *index;         /* [n], owned */
    int n;
} fm_subset;

FM_API void fm_subset_free(fm_subset *s);
/* All images of d in order (optionally only the first `limit` if limit > 0). */
FM_API void fm_subset_all(fm_subset *out, const fm_dataset *d, int limit);

/* Seeded random split: a permutation of d from fm_rng_seed(seed, FM_RNG_SPLIT)
 * and fm_rng_shuffle; the first round(n * val_frac) go to validation, the
 * rest to training.  With limit > 0 the training part is cut to its first
 * `limit` images and validation to its first ceil(limit * val_frac /
 * (1 - val_frac)), keeping the two in proportion (limit 1000 with 0.1 gives
 * 1000 + 112).  val_frac in [0, 1).  Both subsets are new (free each with
 * fm_subset_free); the same d, val_frac, seed and limit give the same split. */
FM_API void fm_split(const fm_dataset *d, double val_frac, uint64_t seed, int limit,
                     fm_subset *train, fm_subset *val);

/* ---- batches ---------------------------------------------------------------- */

typedef struct fm_loader fm_loader;

/* Batches over a subset.  shuffle: a new order each epoch from
 * fm_rng(seed, FM_RNG_SHUFFLE) advanced epoch by epoch; augment: random crop
 * 28×28 of the image zero-padded by 2 on each side, then horizontal flip with
 * probability 0.5, from fm_rng(seed, FM_RNG_AUGMENT).  The subset must outlive
 * the loader.  Owned by the caller: fm_loader_free(). */
FM_API fm_loader *fm_loader_new(const fm_subset *s, int batch_size, bool shuffle, bool augment,
                                uint64_t seed);
FM_API void fm_loader_free(fm_loader *l);
/* Starts the next epoch (reshuffles when shuffling).  fm_loader_next on a
 * loader whose first epoch was never begun begins it, so calling this before
 * every epoch, the first included, or only between epochs gives the same
 * batches. */
FM_API void fm_loader_begin_epoch(fm_loader *l);
FM_API int fm_loader_num_batches(const fm_loader *l);
/* Writes the next batch: x [B, 1, 28, 28] normalised floats, y [B] labels;
 * returns B (the last batch may be short), or 0 at the end of the epoch.
 * x must hold batch_size*784 floats, y batch_size ints.  If index_out is not
 * NULL it receives the dataset indices of the batch's images. */
FM_API int fm_loader_next(fm_loader *l, float *x, int32_t *y, uint32_t *index_out);
/* Random erasing of each image the loader gives from now on, after the
 * augmentation and the normalisation, as torchvision's RandomErasing(p,
 * scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0): with probability p, up to
 * 10 tries of an area fraction uniform in the scale and a log-uniform aspect
 * ratio; the first rectangle that fits (h = round(sqrt(area * ratio)),
 * w = round(sqrt(area / ratio)), both below 28) is set to 0 at a uniform
 * position.  Draws from fm_rng(seed, FM_RNG_ERASE), so p = 0 (the default)
 * leaves every other stream as it was. */
FM_API void fm_loader_set_erasing(fm_loader *l, double p);
/* Mixup (alpha > 0) and cutmix (cutmix_alpha > 0) of every batch with
 * itself reversed, as timm's Mixup(mode="batch", prob=1, switch_prob=0.5,
 * correct_lam=True) does after the per-image transforms: per batch, with
 * both on, cutmix with probability 0.5; lam ~ Beta(alpha, alpha) of the
 * one chosen; mixup: x = lam x + (1 - lam) x reversed; cutmix: a box of
 * int(28 sqrt(1 - lam)) per side centred at a uniform pixel, clipped, gets
 * the reversed batch's pixels and lam becomes 1 - box area / 784.  Draws
 * from fm_rng(seed, FM_RNG_MIX); mixing shows only in fm_loader_next_mixed. */
FM_API void fm_loader_set_mixing(fm_loader *l, double mixup_alpha, double cutmix_alpha);
/* fm_loader_next, then the mixing: y_b receives the labels of the images
 * mixed in (y reversed) and *lam the weight of y's (1 without mixing). */
FM_API int fm_loader_next_mixed(fm_loader *l, float *x, int32_t *y, int32_t *y_b, float *lam);

/* Where a loader stands, for a run that stops and resumes: its shuffling
 * stream as it was when the current epoch began (the epoch's order follows
 * from it), its augmentation stream now, and the next position in the
 * epoch.  fm_loader_restore on a loader made with the same subset, batch
 * size and flags continues with exactly the batches the saved one would
 * have given. */
typedef struct fm_loader_state {
    fm_rng shuffle_at_begin, augment, erase, mix;
    int pos;     /* images of the epoch already given */
    bool begun;  /* an epoch has begun */
} fm_loader_state;

FM_API fm_loader_state fm_loader_save(const fm_loader *l);
FM_API void fm_loader_restore(fm_loader *l, const fm_loader_state *s);

/* Normalises one image (no augmentation) into out[784]. */
FM_API void fm_image_normalize(const uint8_t *pixels, float *out);

#ifdef __cplusplus
}
#endif
#endif /* FM_DATA_H */
