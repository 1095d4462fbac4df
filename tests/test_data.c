/* test_data.c — the IDX reader against good and hostile files, finding the
 * data directory, the split, the loader and augmentation, and data/sample. */
#define _GNU_SOURCE
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "fm/fm_data.h"
#include "fm_test_util.h"

/* ---- fixtures ------------------------------------------------------------------ */

static char tmp[2048];

static void tmp_setup(void)
{
    snprintf(tmp, sizeof tmp, "%s", fm_test_tmpdir());
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static void tmp_teardown(void)
{
    if (tmp[0])
        nftw(tmp, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    tmp[0] = '\0';
}

/* A path in the temp dir; a few rotating buffers so one call's result can be
 * used next to another's. */
static const char *tpath(const char *name)
{
    static char buf[4][4096];
    static int next;
    char *p = buf[next++ % 4];
    snprintf(p, sizeof buf[0], "%s/%s", tmp, name);
    return p;
}

static void write_gz(const char *path, const void *data, size_t len)
{
    gzFile f = gzopen(path, "wb");
    ck_assert_msg(f != NULL, "gzopen %s", path);
    if (len > 0)
        ck_assert_int_eq(gzwrite(f, data, (unsigned)len), (int)len);
    ck_assert_int_eq(gzclose(f), Z_OK);
}

static void write_file(const char *path, bool gz, const void *data, size_t len)
{
    if (gz)
        write_gz(path, data, len);
    else
        fm_test_write_file(path, data, len);
}

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "open %s", path);
    ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    ck_assert_int_ge(n, 0);
    rewind(f);
    uint8_t *buf = fm_xmalloc((size_t)n + 1);
    ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

static uint8_t pixel_of(int image, int p)
{
    return (uint8_t)(image * 37 + p * 11 + 5);
}

/* An IDX image file: header (magic, count, rows, cols) then `have` images of
 * rows×cols pattern pixels, then `extra` trailing bytes. */
static void write_images(const char *path, bool gz, uint32_t magic, uint32_t count, uint32_t rows,
                         uint32_t cols, int have, int extra)
{
    size_t px = (size_t)rows * cols;
    size_t len = 16 + (size_t)have * px + (size_t)extra;
    uint8_t *buf = fm_xcalloc(len, 1);
    put_be32(buf, magic);
    put_be32(buf + 4, count);
    put_be32(buf + 8, rows);
    put_be32(buf + 12, cols);
    for (int i = 0; i < have; i++)
        for (size_t p = 0; p < px; p++)
            buf[16 + i * px + p] = pixel_of(i, (int)p);
    write_file(path, gz, buf, len);
    free(buf);
}

static void write_labels(const char *path, bool gz, uint32_t magic, uint32_t count,
                         const uint8_t *labels, int have)
{
    uint8_t buf[8 + 256];
    ck_assert_int_le(have, 256);
    put_be32(buf, magic);
    put_be32(buf + 4, count);
    memcpy(buf + 8, labels, (size_t)have);
    write_file(path, gz, buf, 8 + (size_t)have);
}

static const uint8_t good_labels[5] = {3, 0, 9, 7, 1};

/* A good pair: 5 images, labels good_labels; returns the two paths. */
static void write_good_pair(bool gz, const char **img, const char **lab)
{
    *img = tpath(gz ? "img.gz" : "img");
    *lab = tpath(gz ? "lab.gz" : "lab");
    write_images(*img, gz, 0x803, 5, 28, 28, 5, 0);
    write_labels(*lab, gz, 0x801, 5, good_labels, 5);
}

/* Loads and expects failure with `status` and a message naming `file` and
 * containing `what`; checks the dataset was left empty. */
static void expect_refused(const char *img, const char *lab, fm_status status, const char *file,
                           const char *what)
{
    fm_dataset d;
    memset(&d, 0xab, sizeof d);
    fm_error_clear();
    fm_status st = fm_dataset_load(&d, img, lab);
    const char *msg = fm_error_message();
    ck_assert_msg(st == status, "status %s, expected %s (message: %s)", fm_status_name(st),
                  fm_status_name(status), msg);
    ck_assert_msg(strstr(msg, file) != NULL, "message does not name %s: %s", file, msg);
    ck_assert_msg(strstr(msg, what) != NULL, "message lacks \"%s\": %s", what, msg);
    ck_assert_int_eq(d.n, 0);
    ck_assert_ptr_null(d.images);
    ck_assert_ptr_null(d.labels);
}

/* ---- the reader ---------------------------------------------------------------- */

static void check_good_pair(bool gz)
{
    const char *img, *lab;
    write_good_pair(gz, &img, &lab);
    fm_dataset d;
    fm_status st = fm_dataset_load(&d, img, lab);
    ck_assert_msg(st == FM_OK, "%s", fm_error_message());
    ck_assert_int_eq(d.n, 5);
    for (int i = 0; i < 5; i++) {
        ck_assert_uint_eq(d.labels[i], good_labels[i]);
        for (int p = 0; p < FM_IMAGE_PIXELS; p++)
            ck_assert_uint_eq(d.images[i * FM_IMAGE_PIXELS + p], pixel_of(i, p));
    }
    fm_dataset_free(&d);
    ck_assert_ptr_null(d.images);
    ck_assert_int_eq(d.n, 0);
}

START_TEST(test_load_good_gz)
{
    check_good_pair(true);
}
END_TEST

START_TEST(test_load_good_plain)
{
    check_good_pair(false);
}
END_TEST

START_TEST(test_wrong_magic)
{
    const char *img, *lab;
    write_good_pair(true, &img, &lab);
    const char *bad = tpath("bad-magic.gz");
    write_images(bad, true, 0x804, 5, 28, 28, 5, 0);
    expect_refused(bad, lab, FM_ERR_FORMAT, bad, "magic");
    /* Swapped arguments: each file has the other's magic. */
    expect_refused(lab, img, FM_ERR_FORMAT, lab, "swapped");
    const char *bad_lab = tpath("bad-magic-labels");
    write_labels(bad_lab, false, 0x12345678, 5, good_labels, 5);
    expect_refused(img, bad_lab, FM_ERR_FORMAT, bad_lab, "0x12345678");
}
END_TEST

START_TEST(test_wrong_dims)
{
    const char *img, *lab;
    write_good_pair(true, &img, &lab);
    const char *bad = tpath("dims.gz");
    write_images(bad, true, 0x803, 5, 27, 28, 5, 0);
    expect_refused(bad, lab, FM_ERR_FORMAT, bad, "27x28");
    write_images(bad, true, 0x803, 5, 28, 0, 5, 0);
    expect_refused(bad, lab, FM_ERR_FORMAT, bad, "28x0");
}
END_TEST

START_TEST(test_truncated)
{
    const char *img, *lab;
    write_good_pair(true, &img, &lab);
    const char *bad = tpath("trunc.gz");
    write_images(bad, true, 0x803, 5, 28, 28, 3, 100);
    expect_refused(bad, lab, FM_ERR_FORMAT, bad, "truncated");
    expect_refused(bad, lab, FM_ERR_FORMAT, bad, "5 images of 28x28 (3920 bytes");
    expect_refused(bad, lab, FM_ERR_FORMAT, bad, "file has 2452");
    /* Labels one short. */
    const char *bad_lab = tpath("trunc-lab");
    write_labels(bad_lab, false, 0x801, 5, good_labels, 4);
    expect_refused(img, bad_lab, FM_ERR_FORMAT, bad_lab, "truncated");
    /* A header cut in the middle. */
    uint8_t head[10] = {0, 0, 8, 3, 0, 0, 0, 5, 0, 0};
    write_file(bad, false, head, sizeof head);
    expect_refused(bad, lab, FM_ERR_FORMAT, bad, "truncated");
}
END_TEST

START_TEST(test_truncated_gzip_stream)
{
    const char *img, *lab;
    write_good_pair(true, &img, &lab);
    size_t len;
    uint8_t *gz = read_file(img, &len);
    ck_assert_uint_gt(len, 40);
    const char *bad = tpath("cut.gz");
    fm_test_write_file(bad, gz, len / 2);
    expect_refused(bad, lab, FM_ERR_FORMAT, bad, "truncated");
    /* Cut inside the 8-byte trailer: all data is there, the CRC is not. */
    fm_test_write_file(bad, gz, len - 3);
    expect_refused(bad, lab, FM_ERR_FORMAT, bad, "gzip");
    free(gz);
}
END_TEST

START_TEST(test_trailing_bytes)
{
    const char *img, *lab;
    write_good_pair(false, &img, &lab);
    const char *bad = tpath("trail.gz");
    write_images(bad, true, 0x803, 5, 28, 28, 5, 7);
    expect_refused(bad, lab, FM_ERR_FORMAT, bad, "7 trailing bytes");
    const char *bad_lab = tpath("trail-lab");
    uint8_t six[6] = {1, 2, 3, 4, 5, 6};
    write_labels(bad_lab, false, 0x801, 5, six, 6);
    expect_refused(img, bad_lab, FM_ERR_FORMAT, bad_lab, "1 trailing byte after");
}
END_TEST

/* What a header promises is bounded by what the file can hold before any
 * of it is allocated: a tiny gzip file claiming ten million images (7.8 GB)
 * is refused at once; a stream that inflates far past its promise is read
 * no further than one chunk past it. */
START_TEST(test_payload_bounded_by_file)
{
    const char *lab = tpath("claims-lab");
    write_labels(lab, false, 0x801, 10000000, good_labels, 5);
    const char *bomb = tpath("claims.gz");
    write_images(bomb, true, 0x803, 10000000, 28, 28, 1, 0);
    expect_refused(bomb, lab, FM_ERR_FORMAT, bomb, "more than a");
    const char *plain = tpath("claims");
    write_images(plain, false, 0x803, 10000000, 28, 28, 1, 0);
    expect_refused(plain, lab, FM_ERR_FORMAT, plain, "-byte file can hold");

    /* Five images promised, then 32 MB of zeros in the stream. */
    write_labels(lab, false, 0x801, 5, good_labels, 5);
    const char *big = tpath("inflates.gz");
    write_images(big, true, 0x803, 5, 28, 28, 5, 32 << 20);
    double t0 = fm_now();
    expect_refused(big, lab, FM_ERR_FORMAT, big, "at least 4096 trailing bytes");
    ck_assert_double_lt(fm_now() - t0, 2.0);
}
END_TEST

/* A FIFO named as a data file is refused, not waited on. */
START_TEST(test_fifo_refused)
{
    const char *img, *lab;
    write_good_pair(false, &img, &lab);
    const char *fifo = tpath("fifo");
    ck_assert_int_eq(mkfifo(fifo, 0600), 0);
    expect_refused(fifo, lab, FM_ERR_IO, fifo, "not a regular file");
}
END_TEST

START_TEST(test_empty_file)
{
    const char *img, *lab;
    write_good_pair(true, &img, &lab);
    const char *empty = tpath("empty");
    fm_test_write_file(empty, "", 0);
    expect_refused(empty, lab, FM_ERR_FORMAT, empty, "empty");
    expect_refused(img, empty, FM_ERR_FORMAT, empty, "empty");
    /* An empty gzip stream decompresses to nothing: also empty. */
    const char *empty_gz = tpath("empty.gz");
    write_gz(empty_gz, "", 0);
    expect_refused(empty_gz, lab, FM_ERR_FORMAT, empty_gz, "empty");
}
END_TEST

START_TEST(test_random_bytes)
{
    const char *img, *lab;
    write_good_pair(true, &img, &lab);
    uint8_t junk[1000];
    fm_rng rng;
    fm_rng_seed(&rng, 7, FM_RNG_TEST);
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (uint8_t)fm_rng_u32(&rng);
    junk[0] = 0x42;  /* not a gzip magic: read as a plain file */
    const char *bad = tpath("junk");
    fm_test_write_file(bad, junk, sizeof junk);
    expect_refused(bad, lab, FM_ERR_FORMAT, bad, "magic");
    expect_refused(img, bad, FM_ERR_FORMAT, bad, "magic");
    /* The gzip magic followed by junk. */
    junk[0] = 0x1f, junk[1] = 0x8b, junk[2] = 8, junk[3] = 0;
    const char *bad_gz = tpath("junk.gz");
    fm_test_write_file(bad_gz, junk, sizeof junk);
    fm_dataset d;
    ck_assert_int_ne(fm_dataset_load(&d, bad_gz, lab), FM_OK);
    ck_assert_ptr_nonnull(strstr(fm_error_message(), bad_gz));
    ck_assert_ptr_null(d.images);
}
END_TEST

START_TEST(test_corrupt_gzip)
{
    const char *img, *lab;
    write_good_pair(true, &img, &lab);
    size_t len;
    uint8_t *gz = read_file(img, &len);
    const char *bad = tpath("corrupt.gz");
    /* Byte 10 opens the first deflate block: 0xff makes it block type 3,
     * which does not exist. */
    uint8_t *c = fm_xmalloc(len);
    memcpy(c, gz, len);
    c[10] = 0xff;
    fm_test_write_file(bad, c, len);
    expect_refused(bad, lab, FM_ERR_FORMAT, bad, "corrupt gzip");
    /* Good data with a wrong CRC in the trailer. */
    memcpy(c, gz, len);
    c[len - 8] ^= 0x5a;
    fm_test_write_file(bad, c, len);
    expect_refused(bad, lab, FM_ERR_FORMAT, bad, "corrupt gzip");
    free(c);
    free(gz);
}
END_TEST

START_TEST(test_count_mismatch)
{
    const char *img, *lab;
    write_good_pair(true, &img, &lab);
    const char *four = tpath("four-labels");
    write_labels(four, false, 0x801, 4, good_labels, 4);
    expect_refused(img, four, FM_ERR_FORMAT, img, "5 images");
    expect_refused(img, four, FM_ERR_FORMAT, four, "4 labels");
}
END_TEST

START_TEST(test_label_out_of_range)
{
    const char *img, *lab;
    write_good_pair(true, &img, &lab);
    const uint8_t labels[5] = {1, 2, 10, 3, 4};
    const char *bad = tpath("label10.gz");
    write_labels(bad, true, 0x801, 5, labels, 5);
    expect_refused(img, bad, FM_ERR_FORMAT, bad, "label 10");
}
END_TEST

START_TEST(test_absurd_and_zero_counts)
{
    const char *img, *lab;
    write_good_pair(true, &img, &lab);
    const char *bad = tpath("huge");
    /* 4 billion images claimed by a 16-byte file: refused before allocating. */
    write_images(bad, false, 0x803, 0xffffffffu, 28, 28, 0, 0);
    expect_refused(bad, lab, FM_ERR_FORMAT, bad, "4294967295");
    /* Within the limit but absent: the buffer only grows with the data. */
    write_images(bad, false, 0x803, 9000000, 28, 28, 1, 0);
    const char *lab9 = tpath("lab9");
    write_labels(lab9, false, 0x801, 9000000, good_labels, 5);
    expect_refused(bad, lab9, FM_ERR_FORMAT, bad, "truncated");
    write_images(bad, false, 0x803, 0, 28, 28, 0, 0);
    expect_refused(bad, lab, FM_ERR_FORMAT, bad, "no images");
}
END_TEST

START_TEST(test_missing_file)
{
    const char *img, *lab;
    write_good_pair(true, &img, &lab);
    const char *none = tpath("does-not-exist.gz");
    expect_refused(none, lab, FM_ERR_IO, none, "No such file");
    expect_refused(img, none, FM_ERR_IO, none, "No such file");
    expect_refused(tmp, lab, FM_ERR_IO, tmp, "directory");
}
END_TEST

START_TEST(test_load_split_names)
{
    const char *names[2][2] = {{"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"},
                               {"t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}};
    write_images(tpath(names[0][0]), true, 0x803, 5, 28, 28, 5, 0);
    write_labels(tpath(names[0][1]), true, 0x801, 5, good_labels, 5);
    write_images(tpath(names[1][0]), true, 0x803, 2, 28, 28, 2, 0);
    write_labels(tpath(names[1][1]), true, 0x801, 2, good_labels, 2);
    fm_dataset train, test;
    ck_assert_msg(fm_dataset_load_split(&train, tmp, "train") == FM_OK, "%s", fm_error_message());
    ck_assert_msg(fm_dataset_load_split(&test, tmp, "test") == FM_OK, "%s", fm_error_message());
    ck_assert_int_eq(train.n, 5);
    ck_assert_int_eq(test.n, 2);
    fm_dataset_free(&train);
    fm_dataset_free(&test);
    fm_dataset other;
    ck_assert_int_eq(fm_dataset_load_split(&other, tmp, "validation"), FM_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(fm_error_message(), "validation"));
}
END_TEST

START_TEST(test_class_names)
{
    ck_assert_str_eq(fm_class_name(0), "T-shirt/top");
    ck_assert_str_eq(fm_class_name(6), "Shirt");
    ck_assert_str_eq(fm_class_name(9), "Ankle boot");
}
END_TEST

/* ---- finding the data directory ------------------------------------------------ */

static const char *const four_files[4] = {
    "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
};

/* A subdirectory of tmp holding the first `files` of the four names. */
static const char *make_data_dir(const char *name, int files)
{
    static char buf[4][4096];
    static int next;
    char *dir = buf[next++ % 4];
    snprintf(dir, sizeof buf[0], "%s/%s", tmp, name);
    ck_assert_int_eq(mkdir(dir, 0700), 0);
    for (int i = 0; i < files; i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", dir, four_files[i]);
        fm_test_write_file(path, "", 0);
    }
    return dir;
}

START_TEST(test_find_dir_order)
{
    const char *cli = make_data_dir("cli", 4);
    const char *env = make_data_dir("env", 4);
    const char *sys = make_data_dir("sys", 4);
    char out[4096];
    ck_assert_int_eq(fm_data_find_dir_from(cli, env, sys, out, sizeof out), FM_OK);
    ck_assert_str_eq(out, cli);
    ck_assert_int_eq(fm_data_find_dir_from(NULL, env, sys, out, sizeof out), FM_OK);
    ck_assert_str_eq(out, env);
    ck_assert_int_eq(fm_data_find_dir_from(NULL, NULL, sys, out, sizeof out), FM_OK);
    ck_assert_str_eq(out, sys);
    /* $FMHOST_DATA without the files falls through to the system dir. */
    const char *partial = make_data_dir("partial", 3);
    ck_assert_int_eq(fm_data_find_dir_from(NULL, partial, sys, out, sizeof out), FM_OK);
    ck_assert_str_eq(out, sys);
    /* Too small an output buffer is an error, not a cut path. */
    char tiny[4];
    ck_assert_int_eq(fm_data_find_dir_from(cli, NULL, sys, tiny, sizeof tiny), FM_ERR_ARG);
}
END_TEST

START_TEST(test_find_dir_env)
{
    const char *cli = make_data_dir("cli", 4);
    const char *env = make_data_dir("env", 4);
    char out[4096];
    ck_assert_int_eq(setenv("FMHOST_DATA", env, 1), 0);
    ck_assert_int_eq(fm_data_find_dir(NULL, out, sizeof out), FM_OK);
    ck_assert_str_eq(out, env);
    ck_assert_int_eq(fm_data_find_dir(cli, out, sizeof out), FM_OK);
    ck_assert_str_eq(out, cli);
    unsetenv("FMHOST_DATA");
}
END_TEST

START_TEST(test_find_dir_cli_no_fallback)
{
    const char *env = make_data_dir("env", 4);
    const char *partial = make_data_dir("partial", 3);
    char out[4096];
    ck_assert_int_eq(fm_data_find_dir_from(partial, env, env, out, sizeof out), FM_ERR_IO);
    const char *msg = fm_error_message();
    ck_assert_msg(strstr(msg, partial) != NULL, "%s", msg);
    ck_assert_msg(strstr(msg, "t10k-labels-idx1-ubyte.gz") != NULL, "%s", msg);
    ck_assert_str_eq(out, "");
    const char *none = tpath("no-such-dir");
    ck_assert_int_eq(fm_data_find_dir_from(none, env, env, out, sizeof out), FM_ERR_IO);
    ck_assert_msg(strstr(fm_error_message(), none) != NULL, "%s", fm_error_message());
}
END_TEST

START_TEST(test_find_dir_not_found)
{
    const char *partial = make_data_dir("partial", 2);
    const char *sys = tpath("no-system-dir");
    char out[4096];
    ck_assert_int_eq(fm_data_find_dir_from(NULL, partial, sys, out, sizeof out), FM_ERR_IO);
    const char *msg = fm_error_message();
    ck_assert_msg(strstr(msg, partial) != NULL, "%s", msg);
    ck_assert_msg(strstr(msg, sys) != NULL, "%s", msg);
    ck_assert_msg(strstr(msg, "apt-get install dataset-fashion-mnist") != NULL, "%s", msg);
    ck_assert_msg(strstr(msg, "t10k-images-idx3-ubyte.gz") != NULL, "%s", msg);
    ck_assert_int_eq(fm_data_find_dir_from(NULL, NULL, sys, out, sizeof out), FM_ERR_IO);
    msg = fm_error_message();
    ck_assert_msg(strstr(msg, "$FMHOST_DATA: not set") != NULL, "%s", msg);
    ck_assert_msg(strstr(msg, "apt-get install dataset-fashion-mnist") != NULL, "%s", msg);
}
END_TEST

/* ---- split ----------------------------------------------------------------------- */

/* An in-memory dataset: image i is filled with i % 256, label i % 10. */
static fm_dataset fake_dataset(int n)
{
    fm_dataset d = {.n = n};
    d.images = fm_xmalloc((size_t)n * FM_IMAGE_PIXELS);
    d.labels = fm_xmalloc((size_t)n);
    for (int i = 0; i < n; i++) {
        memset(d.images + (size_t)i * FM_IMAGE_PIXELS, i % 256, FM_IMAGE_PIXELS);
        d.labels[i] = (uint8_t)(i % 10);
    }
    return d;
}

START_TEST(test_split_sizes_disjoint_cover)
{
    fm_dataset d = fake_dataset(1000);
    fm_subset tr, va;
    fm_split(&d, 0.1, 42, 0, &tr, &va);
    ck_assert_int_eq(tr.n, 900);
    ck_assert_int_eq(va.n, 100);
    ck_assert_ptr_eq(tr.data, &d);
    ck_assert_ptr_eq(va.data, &d);
    int seen[1000] = {0};
    for (int i = 0; i < tr.n; i++)
        seen[tr.index[i]]++;
    for (int i = 0; i < va.n; i++)
        seen[va.index[i]]++;
    for (int i = 0; i < 1000; i++)
        ck_assert_int_eq(seen[i], 1);
    /* A shuffle, not the identity. */
    int in_place = 0;
    for (int i = 0; i < va.n; i++)
        in_place += va.index[i] == (uint32_t)i;
    ck_assert_int_lt(in_place, 10);
    fm_subset_free(&tr);
    fm_subset_free(&va);
    ck_assert_ptr_null(tr.index);
    /* round(), not truncation: 1000 * 0.1234 = 123.4 -> 123, 0.1235 -> 124 (123.5). */
    fm_split(&d, 0.1235, 1, 0, &tr, &va);
    ck_assert_int_eq(va.n, 124);
    ck_assert_int_eq(tr.n, 876);
    fm_subset_free(&tr);
    fm_subset_free(&va);
    fm_split(&d, 0.0, 1, 0, &tr, &va);
    ck_assert_int_eq(va.n, 0);
    ck_assert_int_eq(tr.n, 1000);
    fm_subset_free(&tr);
    fm_subset_free(&va);
    fm_dataset_free(&d);
}
END_TEST

START_TEST(test_split_seeded)
{
    fm_dataset d = fake_dataset(500);
    fm_subset a_tr, a_va, b_tr, b_va, c_tr, c_va;
    fm_split(&d, 0.2, 7, 0, &a_tr, &a_va);
    fm_split(&d, 0.2, 7, 0, &b_tr, &b_va);
    fm_split(&d, 0.2, 8, 0, &c_tr, &c_va);
    ck_assert_int_eq(memcmp(a_tr.index, b_tr.index, sizeof(uint32_t) * (size_t)a_tr.n), 0);
    ck_assert_int_eq(memcmp(a_va.index, b_va.index, sizeof(uint32_t) * (size_t)a_va.n), 0);
    ck_assert_int_ne(memcmp(a_va.index, c_va.index, sizeof(uint32_t) * (size_t)a_va.n), 0);
    ck_assert_int_ne(memcmp(a_tr.index, c_tr.index, sizeof(uint32_t) * (size_t)a_tr.n), 0);
    /* It is the documented permutation: FM_RNG_SPLIT stream, then shuffle. */
    uint32_t perm[500];
    for (int i = 0; i < 500; i++)
        perm[i] = (uint32_t)i;
    fm_rng rng;
    fm_rng_seed(&rng, 7, FM_RNG_SPLIT);
    fm_rng_shuffle(&rng, perm, 500);
    ck_assert_int_eq(memcmp(a_va.index, perm, sizeof(uint32_t) * 100), 0);
    ck_assert_int_eq(memcmp(a_tr.index, perm + 100, sizeof(uint32_t) * 400), 0);
    fm_subset_free(&a_tr), fm_subset_free(&a_va);
    fm_subset_free(&b_tr), fm_subset_free(&b_va);
    fm_subset_free(&c_tr), fm_subset_free(&c_va);
    fm_dataset_free(&d);
}
END_TEST

START_TEST(test_split_limit)
{
    fm_dataset d = fake_dataset(2000);
    fm_subset tr, va, full_tr, full_va;
    fm_split(&d, 0.1, 3, 0, &full_tr, &full_va);
    fm_split(&d, 0.1, 3, 300, &tr, &va);
    ck_assert_int_eq(tr.n, 300);
    ck_assert_int_eq(va.n, 34);  /* ceil(300 * 0.1 / 0.9) = ceil(33.3) */
    /* Prefixes of the full split. */
    ck_assert_int_eq(memcmp(tr.index, full_tr.index, sizeof(uint32_t) * 300), 0);
    ck_assert_int_eq(memcmp(va.index, full_va.index, sizeof(uint32_t) * 34), 0);
    fm_subset_free(&tr), fm_subset_free(&va);
    fm_split(&d, 0.1, 3, 900, &tr, &va);
    ck_assert_int_eq(tr.n, 900);
    ck_assert_int_eq(va.n, 100);
    fm_subset_free(&tr), fm_subset_free(&va);
    /* 63 * 0.1 / 0.9 is 7.000000000000001 in doubles: still 7, not 8. */
    fm_split(&d, 0.1, 3, 63, &tr, &va);
    ck_assert_int_eq(tr.n, 63);
    ck_assert_int_eq(va.n, 7);
    fm_subset_free(&tr), fm_subset_free(&va);
    fm_split(&d, 0.1, 3, 5000, &tr, &va);
    ck_assert_int_eq(tr.n, 1800);
    ck_assert_int_eq(va.n, 200);
    fm_subset_free(&tr), fm_subset_free(&va);
    fm_subset_free(&full_tr), fm_subset_free(&full_va);
    fm_dataset_free(&d);
}
END_TEST

START_TEST(test_subset_all)
{
    fm_dataset d = fake_dataset(10);
    fm_subset s;
    fm_subset_all(&s, &d, 0);
    ck_assert_int_eq(s.n, 10);
    for (int i = 0; i < 10; i++)
        ck_assert_uint_eq(s.index[i], (uint32_t)i);
    fm_subset_free(&s);
    fm_subset_all(&s, &d, 4);
    ck_assert_int_eq(s.n, 4);
    ck_assert_uint_eq(s.index[3], 3);
    fm_subset_free(&s);
    fm_subset_all(&s, &d, 50);
    ck_assert_int_eq(s.n, 10);
    fm_subset_free(&s);
    fm_dataset_free(&d);
}
END_TEST

/* ---- loader ---------------------------------------------------------------------- */

static float norm_ref(int p)
{
    return ((float)p / 255.0f - 0.2860f) / 0.3530f;
}

START_TEST(test_loader_batches)
{
    fm_dataset d = fake_dataset(10);
    fm_subset s;
    fm_subset_all(&s, &d, 0);
    fm_loader *l = fm_loader_new(&s, 4, false, false, 1);
    ck_assert_int_eq(fm_loader_num_batches(l), 3);
    float x[4 * FM_IMAGE_PIXELS];
    int32_t y[4];
    uint32_t idx[4];
    const int sizes[3] = {4, 4, 2};
    for (int epoch = 0; epoch < 2; epoch++) {
        fm_loader_begin_epoch(l);
        int seen = 0;
        for (int b = 0; b < 3; b++) {
            int n = fm_loader_next(l, x, y, idx);
            ck_assert_int_eq(n, sizes[b]);
            for (int i = 0; i < n; i++) {
                /* No shuffle: subset order. */
                ck_assert_uint_eq(idx[i], (uint32_t)seen);
                ck_assert_int_eq(y[i], seen % 10);
                ck_assert_float_eq(x[i * FM_IMAGE_PIXELS + 100], norm_ref(seen));
                seen++;
            }
        }
        ck_assert_int_eq(fm_loader_next(l, x, y, idx), 0);
        ck_assert_int_eq(fm_loader_next(l, x, y, NULL), 0);
    }
    fm_loader_free(l);
    l = fm_loader_new(&s, 5, true, false, 1);
    ck_assert_int_eq(fm_loader_num_batches(l), 2);
    fm_loader_free(l);
    l = fm_loader_new(&s, 64, true, false, 1);
    ck_assert_int_eq(fm_loader_num_batches(l), 1);
    fm_loader_free(l);
    fm_subset_free(&s);
    fm_dataset_free(&d);
}
END_TEST

/* Reads one epoch of indices into order[n]; returns the count. */
static int read_epoch(fm_loader *l, uint32_t *order, float *x, int32_t *y)
{
    int total = 0, b;
    fm_loader_begin_epoch(l);
    while ((b = fm_loader_next(l, x, y, order + total)) > 0)
        total += b;
    return total;
}

START_TEST(test_loader_shuffle)
{
    enum { N = 200, B = 16 };
    fm_dataset d = fake_dataset(1000);
    fm_subset tr, va;
    fm_split(&d, 0.8, 5, 0, &tr, &va);
    ck_assert_int_eq(tr.n, N);
    static float x[B * FM_IMAGE_PIXELS];
    int32_t y[B];
    uint32_t e1[N], e2[N], f1[N], g1[N];
    fm_loader *l = fm_loader_new(&tr, B, true, false, 11);
    ck_assert_int_eq(read_epoch(l, e1, x, y), N);
    ck_assert_int_eq(read_epoch(l, e2, x, y), N);
    /* Every index of the subset exactly once per epoch. */
    for (int epoch = 0; epoch < 2; epoch++) {
        const uint32_t *e = epoch ? e2 : e1;
        int count[1000] = {0};
        for (int i = 0; i < N; i++)
            count[e[i]]++;
        for (int i = 0; i < N; i++)
            ck_assert_int_eq(count[tr.index[i]], 1);
    }
    ck_assert_int_ne(memcmp(e1, e2, sizeof e1), 0);
    ck_assert_int_ne(memcmp(e1, tr.index, sizeof e1), 0);
    /* Same seed: same sequence; another seed: another. */
    fm_loader *same = fm_loader_new(&tr, B, true, false, 11);
    ck_assert_int_eq(read_epoch(same, f1, x, y), N);
    ck_assert_int_eq(memcmp(e1, f1, sizeof e1), 0);
    ck_assert_int_eq(read_epoch(same, f1, x, y), N);
    ck_assert_int_eq(memcmp(e2, f1, sizeof e2), 0);
    fm_loader *other = fm_loader_new(&tr, B, true, false, 12);
    ck_assert_int_eq(read_epoch(other, g1, x, y), N);
    ck_assert_int_ne(memcmp(e1, g1, sizeof e1), 0);
    /* Without begin_epoch the first epoch begins by itself, identically. */
    fm_loader *lazy = fm_loader_new(&tr, B, true, false, 11);
    int total = 0, b;
    while ((b = fm_loader_next(lazy, x, y, g1 + total)) > 0)
        total += b;
    ck_assert_int_eq(total, N);
    ck_assert_int_eq(memcmp(e1, g1, sizeof e1), 0);
    fm_loader_free(l);
    fm_loader_free(same);
    fm_loader_free(other);
    fm_loader_free(lazy);
    fm_subset_free(&tr);
    fm_subset_free(&va);
    fm_dataset_free(&d);
}
END_TEST

START_TEST(test_normalize_values)
{
    uint8_t img[FM_IMAGE_PIXELS];
    for (int i = 0; i < FM_IMAGE_PIXELS; i++)
        img[i] = (uint8_t)i;
    float out[FM_IMAGE_PIXELS];
    fm_image_normalize(img, out);
    ck_assert_float_eq(out[0], norm_ref(0));
    ck_assert_float_eq(out[255], norm_ref(255));
    ck_assert_float_eq_tol(out[0], -0.2860f / 0.3530f, 1e-6f);
    ck_assert_float_eq_tol(out[0], -0.810198f, 1e-5f);
    ck_assert_float_eq_tol(out[255], 2.022663f, 1e-5f);
    for (int i = 0; i < FM_IMAGE_PIXELS; i++)
        ck_assert_float_eq(out[i], norm_ref(i % 256));
}
END_TEST

/* out (normalised) equals the crop at (top, left) of img padded by 2, then
 * flipped if asked. */
static bool is_transform(const float *out, const uint8_t *img, int top, int left, bool flip)
{
    for (int y = 0; y < 28; y++)
        for (int x = 0; x < 28; x++) {
            int cx = flip ? 27 - x : x;
            int sy = y + top - 2, sx = cx + left - 2;
            int p = sy >= 0 && sy < 28 && sx >= 0 && sx < 28 ? img[sy * 28 + sx] : 0;
            if (out[y * 28 + x] != norm_ref(p))
                return false;
        }
    return true;
}

START_TEST(test_augment)
{
    /* One image of random non-zero pixels, so a padded zero and each shift
     * are recognisable. */
    fm_dataset d = {.n = 1};
    d.images = fm_xmalloc(FM_IMAGE_PIXELS);
    d.labels = fm_xmalloc(1);
    d.labels[0] = 4;
    fm_rng rng;
    fm_rng_seed(&rng, 99, FM_RNG_TEST);
    for (int i = 0; i < FM_IMAGE_PIXELS; i++)
        d.images[i] = (uint8_t)(1 + fm_rng_below(&rng, 255));
    fm_subset s;
    fm_subset_all(&s, &d, 0);
    fm_loader *l = fm_loader_new(&s, 1, true, true, 123);
    float x[FM_IMAGE_PIXELS];
    int32_t y;
    enum { DRAWS = 2000 };
    int flips = 0, hits[5][5] = {{0}};
    for (int t = 0; t < DRAWS; t++) {
        fm_loader_begin_epoch(l);
        ck_assert_int_eq(fm_loader_next(l, x, &y, NULL), 1);
        ck_assert_int_eq(y, 4);
        int found = 0;
        for (int top = 0; top < 5; top++)
            for (int left = 0; left < 5; left++)
                for (int f = 0; f < 2; f++)
                    if (is_transform(x, d.images, top, left, f)) {
                        found++;
                        flips += f;
                        hits[top][left]++;
                    }
        ck_assert_msg(found == 1, "draw %d matches %d crops/flips", t, found);
    }
    /* Flip p = 0.5: 2000 draws have sd ~22, so 900..1100 is 4.5 sd. */
    ck_assert_int_gt(flips, 900);
    ck_assert_int_lt(flips, 1100);
    /* Every offset occurs, roughly uniformly (expected 80 each). */
    for (int top = 0; top < 5; top++)
        for (int left = 0; left < 5; left++) {
            ck_assert_int_gt(hits[top][left], 40);
            ck_assert_int_lt(hits[top][left], 130);
        }
    /* The same seed gives the same augmented batch. */
    fm_loader *a = fm_loader_new(&s, 1, false, true, 5);
    fm_loader *b = fm_loader_new(&s, 1, false, true, 5);
    float xa[FM_IMAGE_PIXELS], xb[FM_IMAGE_PIXELS];
    for (int t = 0; t < 20; t++) {
        fm_loader_begin_epoch(a);
        fm_loader_begin_epoch(b);
        fm_loader_next(a, xa, &y, NULL);
        fm_loader_next(b, xb, &y, NULL);
        ck_assert_int_eq(memcmp(xa, xb, sizeof xa), 0);
    }
    /* Without augment the image comes through unchanged. */
    fm_loader *plain = fm_loader_new(&s, 1, false, false, 5);
    fm_loader_next(plain, x, &y, NULL);
    ck_assert(is_transform(x, d.images, 2, 2, false));
    fm_loader_free(a);
    fm_loader_free(b);
    fm_loader_free(plain);
    fm_loader_free(l);
    fm_subset_free(&s);
    fm_dataset_free(&d);
}
END_TEST

/* Random erasing: with p = 1 every image (of random non-zero pixels, none
 * of which normalises to 0) has one rectangle set to 0 and is otherwise the
 * augmented image the loader without erasing gives (its own stream), with
 * areas and aspect ratios within RandomErasing's ranges (after rounding);
 * p = 0.5 erases about half; the same seed gives the same bytes. */
START_TEST(test_random_erasing)
{
    enum { N = 400 };
    fm_dataset d = {.n = N};
    d.images = fm_xmalloc((size_t)N * FM_IMAGE_PIXELS);
    d.labels = fm_xcalloc(N, 1);
    fm_rng rng;
    fm_rng_seed(&rng, 98, FM_RNG_TEST);
    for (int i = 0; i < N * FM_IMAGE_PIXELS; i++) d.images[i] = (uint8_t)(1 + fm_rng_below(&rng, 255));
    fm_subset s;
    fm_subset_all(&s, &d, 0);
    float *xe = fm_xmalloc((size_t)N * FM_IMAGE_PIXELS * sizeof *xe);
    float *xp = fm_xmalloc((size_t)N * FM_IMAGE_PIXELS * sizeof *xp);
    int32_t *y = fm_xmalloc(N * sizeof *y);
    fm_loader *erasing = fm_loader_new(&s, N, true, true, 7), *plain = fm_loader_new(&s, N, true, true, 7);
    fm_loader_set_erasing(erasing, 1.0);
    ck_assert_int_eq(fm_loader_next(erasing, xe, y, NULL), N);
    ck_assert_int_eq(fm_loader_next(plain, xp, y, NULL), N);
    double min_frac = 1, max_frac = 0;
    int tall = 0, wide = 0;
    for (int i = 0; i < N; i++) {
        const float *a = xe + (size_t)i * FM_IMAGE_PIXELS, *b = xp + (size_t)i * FM_IMAGE_PIXELS;
        int top = 28, bottom = -1, left = 28, right = -1, zeros = 0;
        for (int p = 0; p < FM_IMAGE_PIXELS; p++) {
            if (a[p] != 0.0f) {
                ck_assert_msg(a[p] == b[p], "image %d pixel %d changed but not erased", i, p);
                continue;
            }
            ck_assert(b[p] != 0.0f);
            zeros++;
            int r = p / 28, c = p % 28;
            top = r < top ? r : top, bottom = r > bottom ? r : bottom;
            left = c < left ? c : left, right = c > right ? c : right;
        }
        if (zeros == 0) continue;  /* ten tries that did not fit: rare */
        int h = bottom - top + 1, w = right - left + 1;
        ck_assert_int_eq(h * w, zeros);  /* one full rectangle */
        ck_assert_int_lt(h, 28);
        ck_assert_int_lt(w, 28);
        double frac = (double)zeros / FM_IMAGE_PIXELS;
        min_frac = frac < min_frac ? frac : min_frac;
        max_frac = frac > max_frac ? frac : max_frac;
        tall += h > w, wide += w > h;
    }
    /* scale (0.02, 0.33) of 784 pixels, give or take the rounding of h, w */
    ck_assert_double_ge(min_frac, 0.01);
    ck_assert_double_le(min_frac, 0.05);
    ck_assert_double_le(max_frac, 0.40);
    ck_assert_double_ge(max_frac, 0.25);
    ck_assert_int_gt(tall, N / 4);
    ck_assert_int_gt(wide, N / 4);

    /* p = 0.5: about half the images (400 draws: sd 10). */
    fm_loader *half = fm_loader_new(&s, N, false, false, 3), *again = fm_loader_new(&s, N, false, false, 3);
    fm_loader_set_erasing(half, 0.5);
    fm_loader_set_erasing(again, 0.5);
    ck_assert_int_eq(fm_loader_next(half, xe, y, NULL), N);
    ck_assert_int_eq(fm_loader_next(again, xp, y, NULL), N);
    ck_assert(memcmp(xe, xp, (size_t)N * FM_IMAGE_PIXELS * sizeof *xe) == 0);
    int erased = 0;
    for (int i = 0; i < N; i++) {
        bool any = false;
        for (int p = 0; p < FM_IMAGE_PIXELS; p++) any = any || xe[(size_t)i * FM_IMAGE_PIXELS + p] == 0.0f;
        erased += any;
    }
    ck_assert_int_gt(erased, 150);
    ck_assert_int_lt(erased, 250);

    fm_loader_free(half);
    fm_loader_free(again);
    fm_loader_free(erasing);
    fm_loader_free(plain);
    free(xe);
    free(xp);
    free(y);
    fm_subset_free(&s);
    fm_dataset_free(&d);
}
END_TEST

/* A dataset of n images of random pixels in 1..255, labels i % 10. */
static fm_dataset random_dataset(int n, uint64_t seed)
{
    fm_dataset d = {.n = n};
    d.images = fm_xmalloc((size_t)n * FM_IMAGE_PIXELS);
    d.labels = fm_xmalloc((size_t)n);
    fm_rng rng;
    fm_rng_seed(&rng, seed, FM_RNG_TEST);
    for (size_t i = 0; i < (size_t)n * FM_IMAGE_PIXELS; i++) d.images[i] = (uint8_t)(1 + fm_rng_below(&rng, 255));
    for (int i = 0; i < n; i++) d.labels[i] = (uint8_t)(i % 10);
    return d;
}

/* Mixup: x = lam x + (1 - lam) x reversed, pixel for pixel in float32 as
 * timm computes it, y_b = y reversed; cutmix: one box, the same in every
 * image, holds the reversed batch's pixels, the rest is untouched, and lam
 * is the untouched fraction. */
START_TEST(test_mixing_by_hand)
{
    enum { N = 12, PX = FM_IMAGE_PIXELS };
    fm_dataset d = random_dataset(N, 17);
    fm_subset s;
    fm_subset_all(&s, &d, 0);
    float plain[N * PX], x[N * PX], lam;
    int32_t y[N], y_b[N], y_plain[N];
    for (int kind = 0; kind < 2; kind++) {
        fm_loader *ref = fm_loader_new(&s, N, true, true, 21), *mixed = fm_loader_new(&s, N, true, true, 21);
        fm_loader_set_mixing(mixed, kind == 0 ? 0.4 : 0.0, kind == 1 ? 1.0 : 0.0);
        for (int batch = 0; batch < 5; batch++) {
            fm_loader_begin_epoch(ref);
            fm_loader_begin_epoch(mixed);
            ck_assert_int_eq(fm_loader_next(ref, plain, y_plain, NULL), N);
            ck_assert_int_eq(fm_loader_next_mixed(mixed, x, y, y_b, &lam), N);
            ck_assert(lam > 0.0f && lam < 1.0f);
            for (int i = 0; i < N; i++) {
                ck_assert_int_eq(y[i], y_plain[i]);
                ck_assert_int_eq(y_b[i], y_plain[N - 1 - i]);
            }
            if (kind == 0) {
                for (int i = 0; i < N; i++)
                    for (int p = 0; p < PX; p++) {
                        float mine = plain[i * PX + p] * lam, theirs = plain[(N - 1 - i) * PX + p] * (float)(1.0 - (double)lam);
                        ck_assert_float_eq(x[i * PX + p], mine + theirs);
                    }
                continue;
            }
            int top = 28, bottom = -1, left = 28, right = -1;
            for (int i = 0; i < N; i++)
                for (int p = 0; p < PX; p++)
                    if (x[i * PX + p] != plain[i * PX + p]) {
                        int r = p / 28, c = p % 28;
                        top = r < top ? r : top, bottom = r > bottom ? r : bottom;
                        left = c < left ? c : left, right = c > right ? c : right;
                    }
            ck_assert_int_ge(bottom, top);
            int area = (bottom - top + 1) * (right - left + 1);
            ck_assert_double_eq_tol(lam, 1.0 - area / 784.0, 1e-6);
            for (int i = 0; i < N; i++)
                for (int p = 0; p < PX; p++) {
                    int r = p / 28, c = p % 28;
                    bool in = r >= top && r <= bottom && c >= left && c <= right;
                    ck_assert(x[i * PX + p] == plain[(in ? N - 1 - i : i) * PX + p]);
                }
        }
        fm_loader_free(ref);
        fm_loader_free(mixed);
    }
    fm_subset_free(&s);
    fm_dataset_free(&d);
}
END_TEST

/* lam's law: Beta(a, a) has mean 1/2 and variance 1 / (4 (2a + 1)), for a
 * below and above 1; with both mixup and cutmix on, cutmix (every pixel
 * one image's or the other's, none blended) in about half the batches. */
START_TEST(test_mixing_lam_law)
{
    enum { DRAWS = 4000 };
    fm_dataset d = random_dataset(2, 5);
    fm_subset s;
    fm_subset_all(&s, &d, 0);
    float x[2 * FM_IMAGE_PIXELS], plain[2 * FM_IMAGE_PIXELS], lam;
    int32_t y[2], y_b[2];
    const double alphas[2] = {0.4, 2.0};
    for (int k = 0; k < 2; k++) {
        fm_loader *l = fm_loader_new(&s, 2, false, false, 9);
        fm_loader_set_mixing(l, alphas[k], 0.0);
        double sum = 0.0, sq = 0.0;
        for (int t = 0; t < DRAWS; t++) {
            fm_loader_begin_epoch(l);
            ck_assert_int_eq(fm_loader_next_mixed(l, x, y, y_b, &lam), 2);
            sum += lam, sq += (double)lam * lam;
        }
        double mean = sum / DRAWS, var = sq / DRAWS - mean * mean, want = 1.0 / (4 * (2 * alphas[k] + 1));
        ck_assert_double_eq_tol(mean, 0.5, 0.03);
        ck_assert_double_eq_tol(var, want, 0.15 * want);
        fm_loader_free(l);
    }
    fm_loader *both = fm_loader_new(&s, 2, false, false, 9), *ref = fm_loader_new(&s, 2, false, false, 9);
    const int px = FM_IMAGE_PIXELS;
    fm_loader_set_mixing(both, 0.4, 1.0);
    ck_assert_int_eq(fm_loader_next(ref, plain, y, NULL), 2);
    int cutmixes = 0;
    for (int t = 0; t < 1000; t++) {
        fm_loader_begin_epoch(both);
        fm_loader_next_mixed(both, x, y, y_b, &lam);
        bool blended = false;
        for (int p = 0; p < px && !blended; p++) blended = x[p] != plain[p] && x[p] != plain[px + p];
        cutmixes += !blended;
    }
    ck_assert_int_gt(cutmixes, 430);
    ck_assert_int_lt(cutmixes, 570);
    fm_loader_free(both);
    fm_loader_free(ref);
    fm_subset_free(&s);
    fm_dataset_free(&d);
}
END_TEST

/* ---- data/sample ------------------------------------------------------------------ */

START_TEST(test_sample_dataset)
{
    const char *dir = FM_SOURCE_DIR "/data/sample";
    char out[4096];
    ck_assert_msg(fm_data_find_dir(dir, out, sizeof out) == FM_OK, "%s", fm_error_message());
    const char *splits[2] = {"train", "test"};
    const int counts[2] = {3000, 500};
    for (int k = 0; k < 2; k++) {
        fm_dataset d;
        ck_assert_msg(fm_dataset_load_split(&d, dir, splits[k]) == FM_OK, "%s",
                      fm_error_message());
        ck_assert_int_eq(d.n, counts[k]);
        int per_class[FM_NUM_CLASSES] = {0};
        for (int i = 0; i < d.n; i++) {
            ck_assert_uint_lt(d.labels[i], FM_NUM_CLASSES);
            per_class[d.labels[i]]++;
        }
        for (int c = 0; c < FM_NUM_CLASSES; c++)
            ck_assert_int_gt(per_class[c], 0);
        /* Real images: mostly dark background, some bright pixels. */
        long sum = 0;
        for (size_t i = 0; i < (size_t)d.n * FM_IMAGE_PIXELS; i++)
            sum += d.images[i];
        double mean = (double)sum / ((double)d.n * FM_IMAGE_PIXELS) / 255.0;
        ck_assert_double_gt(mean, 0.2);
        ck_assert_double_lt(mean, 0.4);
        fm_dataset_free(&d);
    }
}
END_TEST

static Suite *data_suite(void)
{
    Suite *s = suite_create("data");
    TCase *reader = tcase_create("reader");
    tcase_add_checked_fixture(reader, tmp_setup, tmp_teardown);
    tcase_add_test(reader, test_load_good_gz);
    tcase_add_test(reader, test_load_good_plain);
    tcase_add_test(reader, test_wrong_magic);
    tcase_add_test(reader, test_wrong_dims);
    tcase_add_test(reader, test_truncated);
    tcase_add_test(reader, test_truncated_gzip_stream);
    tcase_add_test(reader, test_trailing_bytes);
    tcase_add_test(reader, test_payload_bounded_by_file);
    tcase_add_test(reader, test_fifo_refused);
    tcase_add_test(reader, test_empty_file);
    tcase_add_test(reader, test_random_bytes);
    tcase_add_test(reader, test_corrupt_gzip);
    tcase_add_test(reader, test_count_mismatch);
    tcase_add_test(reader, test_label_out_of_range);
    tcase_add_test(reader, test_absurd_and_zero_counts);
    tcase_add_test(reader, test_missing_file);
    tcase_add_test(reader, test_load_split_names);
    tcase_add_test(reader, test_class_names);
    suite_add_tcase(s, reader);

    TCase *dirs = tcase_create("find_dir");
    tcase_add_checked_fixture(dirs, tmp_setup, tmp_teardown);
    tcase_add_test(dirs, test_find_dir_order);
    tcase_add_test(dirs, test_find_dir_env);
    tcase_add_test(dirs, test_find_dir_cli_no_fallback);
    tcase_add_test(dirs, test_find_dir_not_found);
    suite_add_tcase(s, dirs);

    TCase *split = tcase_create("split");
    tcase_add_test(split, test_split_sizes_disjoint_cover);
    tcase_add_test(split, test_split_seeded);
    tcase_add_test(split, test_split_limit);
    tcase_add_test(split, test_subset_all);
    suite_add_tcase(s, split);

    TCase *loader = tcase_create("loader");
    tcase_add_test(loader, test_loader_batches);
    tcase_add_test(loader, test_loader_shuffle);
    tcase_add_test(loader, test_normalize_values);
    tcase_add_test(loader, test_augment);
    tcase_add_test(loader, test_random_erasing);
    tcase_add_test(loader, test_mixing_by_hand);
    tcase_add_test(loader, test_mixing_lam_law);
    suite_add_tcase(s, loader);

    TCase *sample = tcase_create("sample");
    tcase_add_test(sample, test_sample_dataset);
    suite_add_tcase(s, sample);
    return s;
}

int main(void)
{
    return fm_test_run(data_suite());
}
