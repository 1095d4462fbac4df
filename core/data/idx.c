/* idx.c — the IDX reader, dataset loading and finding the data directory.
 *
 * Every file is treated as hostile: only regular files are opened (a FIFO
 * is refused, not waited on), each header field is checked before it is
 * used, the promised payload is bounded by what the file can hold (its
 * size, or for gzip deflate's largest ratio) before anything is allocated,
 * the buffer grows only as bytes actually arrive, and nothing is inflated
 * past the promised payload but one chunk to tell that more follows.  So a
 * 16-byte file that claims millions of images costs a few kilobytes, and a
 * gzip bomb no more than its header promised.
 */
#include "fm/fm_data.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define IDX_IMAGE_MAGIC 0x00000803u  /* unsigned bytes, 3 dimensions */
#define IDX_LABEL_MAGIC 0x00000801u  /* unsigned bytes, 1 dimension */
#define IDX_IMAGE_HEADER 16
#define IDX_LABEL_HEADER 8
/* FashionMNIST has 70,000 images; ten million (7.8 GB of pixels) is beyond
 * anything this reader is meant for, so larger counts are corrupt headers. */
#define IDX_MAX_COUNT 10000000u
/* gzread takes an unsigned int length: read in chunks well below that. */
#define IDX_CHUNK (1u << 30)
#define IDX_FIRST_ALLOC ((size_t)1 << 20)
#define IDX_GZ_BUFFER (1u << 17)
/* Past the promised data we read one chunk more, to tell that there is more
 * (and, for gzip, to reach the trailer of a stream that ends there). */
#define IDX_TRAILING_CHUNK 4096
/* Deflate's largest expansion: 258 bytes from 2 bits, about 1032 to 1. */
#define IDX_MAX_INFLATE 1032u
/* What to do about a file that is there but unusable. */
#define IDX_FIX "re-download the file, or reinstall dataset-fashion-mnist"

static const char *const class_names[FM_NUM_CLASSES] = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot",
};

static const char *const split_files[2][2] = {
    {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"},
    {"t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"},
};

const char *fm_class_name(int label)
{
    FM_ASSERT(label >= 0 && label < FM_NUM_CLASSES);
    return class_names[label];
}

/* ---- reading ---------------------------------------------------------------- */

typedef struct idx_file {
    gzFile gz;
    const char *path;
    uint64_t size;    /* bytes of the file as stored */
    bool stream_cut;  /* the gzip stream ended before its trailer */
} idx_file;

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static fm_status idx_open(idx_file *f, const char *path)
{
    f->path = path;
    f->stream_cut = false;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) return fm_error_set(FM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return fm_error_set(FM_ERR_IO, "%s: cannot read: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return fm_error_set(FM_ERR_IO, "%s: cannot read: %s (give the path of an IDX file)", path,
                            S_ISDIR(st.st_mode) ? "is a directory" : "not a regular file");
    }
    f->size = (uint64_t)st.st_size;
    errno = 0;
    /* gzdopen reads plain files transparently, so both forms are accepted. */
    f->gz = gzdopen(fd, "rb");
    if (!f->gz) {
        close(fd);
        return fm_error_set(FM_ERR_NOMEM, "%s: cannot open: out of memory", path);
    }
    /* zlib's buffers (three times this): 128 KB for a large file, no more
     * than a small one needs. */
    uint64_t want = f->size < IDX_GZ_BUFFER ? f->size : IDX_GZ_BUFFER;
    gzbuffer(f->gz, want < 8192 ? 8192 : (unsigned)want);
    return FM_OK;
}

static void idx_close(idx_file *f)
{
    if (f->gz)
        gzclose(f->gz);
    f->gz = NULL;
}

/* zlib prefixes its messages with what it was opened with, "<fd:N>" for
 * gzdopen; we name the file ourselves. */
static const char *gz_reason(idx_file *f, int *errnum)
{
    const char *msg = gzerror(f->gz, errnum);
    const char *colon = msg[0] == '<' ? strstr(msg, ">: ") : NULL;
    return colon ? colon + 3 : msg;
}

/* Reads up to len bytes; *got < len means the file ended.  Errors of the
 * stream (corrupt deflate data, bad CRC, read failure) are reported here; a
 * gzip stream that simply stops is a short read with f->stream_cut set. */
static fm_status idx_read(idx_file *f, void *buf, size_t len, size_t *got)
{
    uint8_t *p = buf;
    *got = 0;
    while (*got < len) {
        size_t want = len - *got;
        unsigned chunk = want > IDX_CHUNK ? IDX_CHUNK : (unsigned)want;
        errno = 0;
        int r = gzread(f->gz, p + *got, chunk);
        if (r < 0) {
            int errnum;
            const char *why = gz_reason(f, &errnum);
            if (errnum == Z_ERRNO)
                return fm_error_set(FM_ERR_IO, "%s: read failed: %s", f->path,
                                    errno ? strerror(errno) : why);
            if (errnum == Z_MEM_ERROR)
                return fm_error_set(FM_ERR_NOMEM, "%s: out of memory while decompressing", f->path);
            return fm_error_set(FM_ERR_FORMAT,
                                "%s: corrupt gzip stream: %s (" IDX_FIX ")", f->path, why);
        }
        if (r == 0)
            break;
        *got += (size_t)r;
    }
    if (*got < len) {
        int errnum;
        gz_reason(f, &errnum);
        f->stream_cut = errnum == Z_BUF_ERROR;
    }
    return FM_OK;
}

/* Reads the header of an IDX file: `fields` big-endian u32 (magic first). */
static fm_status idx_read_header(idx_file *f, uint32_t *out, int fields, uint32_t magic,
                                 const char *what)
{
    uint8_t raw[IDX_IMAGE_HEADER];
    size_t want = (size_t)fields * 4, got;
    fm_status st = idx_read(f, raw, want, &got);
    if (st != FM_OK)
        return st;
    if (got == 0)
        return fm_error_set(FM_ERR_FORMAT, "%s: empty file (expected an IDX %s file): " IDX_FIX,
                            f->path, what);
    /* The magic is judged first so that a random file is called what it is
     * rather than "truncated". */
    if (got < 4)
        return fm_error_set(FM_ERR_FORMAT,
                            "%s: not an IDX %s file: only %zu bytes, too short for a header: "
                            IDX_FIX, f->path, what, got);
    uint32_t m = be32(raw);
    if (m != magic) {
        const char *hint = IDX_FIX;
        if (m == IDX_IMAGE_MAGIC)
            hint = "this is an image file: images and labels swapped? Give each file its name";
        else if (m == IDX_LABEL_MAGIC)
            hint = "this is a label file: images and labels swapped? Give each file its name";
        else if (raw[0] == 0x1f && raw[1] == 0x8b)
            hint = "a gzip file inside a gzip file? Decompress it once";
        return fm_error_set(FM_ERR_FORMAT,
                            "%s: not an IDX %s file: wrong magic number 0x%08x, expected "
                            "0x%08x (%s)",
                            f->path, what, m, magic, hint);
    }
    if (got < want)
        return fm_error_set(FM_ERR_FORMAT,
                            "%s: truncated: header has %zu of its %zu bytes: " IDX_FIX, f->path,
                            got, want);
    for (int i = 0; i < fields; i++)
        out[i] = be32(raw + 4 * i);
    return FM_OK;
}

/* Reads exactly `bytes` bytes of payload into a new buffer, then checks the
 * file ends there. `promise` describes the header's claim for messages. */
static fm_status idx_read_payload(idx_file *f, size_t bytes, const char *promise, uint8_t **out)
{
    *out = NULL;
    /* What the file can hold at most after its header, before allocating
     * for what the header claims. */
    uint64_t room = gzdirect(f->gz) ? f->size : f->size * IDX_MAX_INFLATE;
    if ((uint64_t)bytes > room)
        return fm_error_set(FM_ERR_FORMAT,
                            "%s: header promises %s (%zu bytes), more than a %llu-byte %s can "
                            "hold: corrupt header or truncated file (" IDX_FIX ")",
                            f->path, promise, bytes, (unsigned long long)f->size,
                            gzdirect(f->gz) ? "file" : "gzip file");
    size_t cap = bytes < IDX_FIRST_ALLOC ? bytes : IDX_FIRST_ALLOC;
    uint8_t *buf = malloc(cap ? cap : 1);
    if (!buf)
        return fm_error_set(FM_ERR_NOMEM, "%s: out of memory for %zu bytes", f->path, cap);
    size_t have = 0;
    for (;;) {
        size_t got;
        fm_status st = idx_read(f, buf + have, cap - have, &got);
        if (st != FM_OK) {
            free(buf);
            return st;
        }
        have += got;
        if (have < cap) {
            free(buf);
            return fm_error_set(FM_ERR_FORMAT,
                                "%s: truncated: header promises %s (%zu bytes after the header), "
                                "file has %zu%s: " IDX_FIX,
                                f->path, promise, bytes, have,
                                f->stream_cut ? " (the gzip stream ends early)" : "");
        }
        if (have == bytes)
            break;
        size_t grown = cap > bytes / 2 ? bytes : cap * 2;
        uint8_t *p = realloc(buf, grown);
        if (!p) {
            free(buf);
            return fm_error_set(FM_ERR_NOMEM, "%s: out of memory for %zu bytes", f->path, grown);
        }
        buf = p;
        cap = grown;
    }

    /* One more read: finds trailing bytes and, for gzip, reaches the trailer
     * so a bad CRC or a cut-off trailer is noticed. */
    uint8_t extra[IDX_TRAILING_CHUNK];
    size_t trailing;
    fm_status st = idx_read(f, extra, sizeof extra, &trailing);
    if (st != FM_OK) {
        free(buf);
        return st;
    }
    if (trailing > 0) {
        free(buf);
        return fm_error_set(FM_ERR_FORMAT,
                            "%s: %s%zu trailing byte%s after the %s (%zu bytes) its header "
                            "promises: " IDX_FIX,
                            f->path, trailing == sizeof extra ? "at least " : "", trailing,
                            trailing == 1 ? "" : "s", promise, bytes);
    }
    if (f->stream_cut) {
        free(buf);
        return fm_error_set(FM_ERR_FORMAT,
                            "%s: corrupt gzip stream: it ends before its trailer (truncated "
                            "download? " IDX_FIX ")", f->path);
    }
    *out = buf;
    return FM_OK;
}

static fm_status check_count(const char *path, uint32_t n, const char *what)
{
    if (n == 0)
        return fm_error_set(FM_ERR_FORMAT, "%s: header says the file holds no %s: " IDX_FIX, path,
                            what);
    if (n > IDX_MAX_COUNT)
        return fm_error_set(FM_ERR_FORMAT,
                            "%s: header claims %u %s, more than the %u this reader accepts: "
                            "corrupt header (" IDX_FIX ")",
                            path, n, what, IDX_MAX_COUNT);
    return FM_OK;
}

/* The header and images of an IDX image file: 28x28, a sane count. */
static fm_status images_read(idx_file *img, uint8_t **images, int *n_out)
{
    uint32_t ih[4] = {0};
    fm_status st = idx_read_header(img, ih, 4, IDX_IMAGE_MAGIC, "image");
    if (st != FM_OK)
        return st;
    if (ih[2] != FM_IMAGE_H || ih[3] != FM_IMAGE_W)
        return fm_error_set(FM_ERR_FORMAT,
                            "%s: images are %ux%u, expected %dx%d: not FashionMNIST (point "
                            "--data-dir at the FashionMNIST files)",
                            img->path, ih[2], ih[3], FM_IMAGE_H, FM_IMAGE_W);
    if ((st = check_count(img->path, ih[1], "images")) != FM_OK)
        return st;
    int n = (int)ih[1];
    char promise[96];
    snprintf(promise, sizeof promise, "%d images of %dx%d", n, FM_IMAGE_H, FM_IMAGE_W);
    if ((st = idx_read_payload(img, (size_t)n * FM_IMAGE_PIXELS, promise, images)) != FM_OK)
        return st;
    *n_out = n;
    return FM_OK;
}

static fm_status dataset_read(fm_dataset *out, idx_file *img, idx_file *lab)
{
    uint32_t lh[2] = {0};
    int n;
    fm_status st = images_read(img, &out->images, &n);
    if (st != FM_OK)
        return st;
    if ((st = idx_read_header(lab, lh, 2, IDX_LABEL_MAGIC, "label")) != FM_OK)
        return st;
    if ((st = check_count(lab->path, lh[1], "labels")) != FM_OK)
        return st;
    if ((uint32_t)n != lh[1])
        return fm_error_set(FM_ERR_FORMAT,
                            "%s has %d images but %s has %u labels: the counts must match "
                            "(files from different splits? Use the images and labels of one "
                            "split)",
                            img->path, n, lab->path, lh[1]);

    char promise[96];
    snprintf(promise, sizeof promise, "%d labels", n);
    if ((st = idx_read_payload(lab, (size_t)n, promise, &out->labels)) != FM_OK)
        return st;
    for (int i = 0; i < n; i++)
        if (out->labels[i] >= FM_NUM_CLASSES)
            return fm_error_set(FM_ERR_FORMAT,
                                "%s: label %u at index %d is outside 0..%d: " IDX_FIX,
                                lab->path, out->labels[i], i, FM_NUM_CLASSES - 1);
    out->n = n;
    return FM_OK;
}

fm_status fm_idx_load_images(const char *path, uint8_t **images, int *n)
{
    FM_ASSERT(path && images && n);
    *images = NULL;
    *n = 0;
    idx_file img = {0};
    fm_status st = idx_open(&img, path);
    if (st == FM_OK)
        st = images_read(&img, images, n);
    idx_close(&img);
    return st;
}

fm_status fm_dataset_load(fm_dataset *out, const char *images_path, const char *labels_path)
{
    FM_ASSERT(out && images_path && labels_path);
    *out = (fm_dataset){0};
    idx_file img = {0}, lab = {0};
    fm_status st = idx_open(&img, images_path);
    if (st == FM_OK)
        st = idx_open(&lab, labels_path);
    if (st == FM_OK)
        st = dataset_read(out, &img, &lab);
    idx_close(&img);
    idx_close(&lab);
    if (st != FM_OK)
        fm_dataset_free(out);
    return st;
}

void fm_dataset_free(fm_dataset *d)
{
    if (!d)
        return;
    free(d->images);
    free(d->labels);
    *d = (fm_dataset){0};
}

/* ---- files and directories ------------------------------------------------ */

static fm_status join_path(char *out, size_t len, const char *dir, const char *name)
{
    size_t dl = strlen(dir);
    const char *sep = dl > 0 && dir[dl - 1] == '/' ? "" : "/";
    int w = snprintf(out, len, "%s%s%s", dir, sep, name);
    if (w < 0 || (size_t)w >= len)
        return fm_error_set(FM_ERR_ARG, "%s: path too long", dir);
    return FM_OK;
}

fm_status fm_dataset_load_split(fm_dataset *out, const char *dir, const char *split)
{
    FM_ASSERT(out && dir && split);
    *out = (fm_dataset){0};
    int which;
    if (strcmp(split, "train") == 0)
        which = 0;
    else if (strcmp(split, "test") == 0)
        which = 1;
    else
        return fm_error_set(FM_ERR_ARG, "unknown split '%s' (expected \"train\" or \"test\")", split);
    char images[PATH_MAX], labels[PATH_MAX];
    fm_status st = join_path(images, sizeof images, dir, split_files[which][0]);
    if (st == FM_OK)
        st = join_path(labels, sizeof labels, dir, split_files[which][1]);
    if (st != FM_OK)
        return st;
    return fm_dataset_load(out, images, labels);
}

/* Appends to `why` which of the four files `dir` lacks; true if it has all. */
static bool dir_has_files(const char *dir, char *why, size_t why_len)
{
    struct stat sb;
    if (stat(dir, &sb) != 0) {
        snprintf(why, why_len, "%s", strerror(errno));
        return false;
    }
    if (!S_ISDIR(sb.st_mode)) {
        snprintf(why, why_len, "not a directory");
        return false;
    }
    size_t used = 0;
    int missing = 0;
    why[0] = '\0';
    for (int s = 0; s < 2; s++) {
        for (int k = 0; k < 2; k++) {
            char path[PATH_MAX];
            const char *name = split_files[s][k];
            bool found = join_path(path, sizeof path, dir, name) == FM_OK && stat(path, &sb) == 0;
            if (found && S_ISREG(sb.st_mode))
                continue;
            /* A FIFO or a directory of that name is there but not a file. */
            int w = snprintf(why + used, why_len - used, "%s%s%s", missing ? ", " : "lacks ", name,
                             found ? " (not a regular file)" : "");
            if (w > 0 && (size_t)w < why_len - used)
                used += (size_t)w;
            missing++;
        }
    }
    return missing == 0;
}

static fm_status copy_out(char *out, size_t out_len, const char *dir)
{
    if (strlen(dir) >= out_len)
        return fm_error_set(FM_ERR_ARG, "data directory path too long: %s", dir);
    strcpy(out, dir);
    return FM_OK;
}

fm_status fm_data_find_dir_from(const char *cli_dir, const char *env_dir,
                                const char *system_dir, char *out, size_t out_len)
{
    FM_ASSERT(out && out_len > 0 && system_dir);
    out[0] = '\0';
    char why[512];
    /* An explicit directory is what the user asked for: falling back to
     * another one would train on data they did not choose. */
    if (cli_dir) {
        if (!dir_has_files(cli_dir, why, sizeof why))
            return fm_error_set(FM_ERR_IO,
                                "data directory %s (--data-dir): %s. Point --data-dir at a "
                                "directory with the four FashionMNIST files, or leave it out "
                                "to use $FMHOST_DATA or %s",
                                cli_dir, why, system_dir);
        return copy_out(out, out_len, cli_dir);
    }

    char tried[2048];
    int w;
    if (env_dir && *env_dir) {
        if (dir_has_files(env_dir, why, sizeof why))
            return copy_out(out, out_len, env_dir);
        w = snprintf(tried, sizeof tried, "\n  $FMHOST_DATA=%s: %s", env_dir, why);
    } else {
        w = snprintf(tried, sizeof tried, "\n  $FMHOST_DATA: not set");
    }
    size_t used = w > 0 && (size_t)w < sizeof tried ? (size_t)w : strlen(tried);
    if (dir_has_files(system_dir, why, sizeof why))
        return copy_out(out, out_len, system_dir);
    snprintf(tried + used, sizeof tried - used, "\n  %s: %s", system_dir, why);
    return fm_error_set(FM_ERR_IO,
                        "FashionMNIST not found. Tried:%s\n"
                        "Install it with `apt-get install dataset-fashion-mnist` (it provides "
                        "%s), or point --data-dir or $FMHOST_DATA at a directory holding "
                        "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
                        "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz "
                        "(data/sample in the source tree is a small one).",
                        tried, FM_DATA_SYSTEM_DIR);
}

fm_status fm_data_find_dir(const char *cli_dir, char *out, size_t out_len)
{
    return fm_data_find_dir_from(cli_dir, getenv("FMHOST_DATA"), FM_DATA_SYSTEM_DIR, out, out_len);
}
