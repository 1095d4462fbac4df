/* Integration tests: every way fmhost refuses bad input — data, checkpoints,
 * plugins, command lines, Lua scripts.  Each refusal must exit with its
 * status (1: the world is wrong, 2: the command line is), name the file or
 * value and say what to do about it, within a time limit (a FIFO must not
 * hang it), and leave alone what an earlier run wrote: one tiny successful
 * run's artifacts/ and results/ are snapshotted first, every refused command
 * is pointed at the same --out, and the files must be byte-identical (and no
 * new ones, temporary or not) after each test. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ftw.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "fm_test_util.h"

#define FMHOST FM_BINARY_DIR "/fmhost"
#define SAMPLE_DIR FM_SOURCE_DIR "/data/sample"
#define TEST_PLUGIN(name) FM_BINARY_DIR "/tests/plugins/" name ".so"
/* Seconds a refusal may take: it reads at most a header or two. */
#define TIMEOUT 60

/* ---- the earlier run ------------------------------------------------------------- */

/* Set by the unchecked fixture, in the parent, before the tests fork. */
static char work[1024];  /* the test's directory */
static char run_dir[4200];  /* work/run: the successful run's --out */

typedef struct snap_file {
    char *path;
    char *data;
    size_t len;
} snap_file;

static snap_file *snap;
static int n_snap;
/* Regular files found by the walk below. */
static int walked;

/* The run store: a refused run that got as far as training is recorded
 * there (as failed), so the store may grow; assert_untouched checks it
 * apart. */
static bool in_store(const char *path, const struct FTW *ftw)
{
    return !strncmp(path + ftw->base, "runs.db", 7);
}

static int snapshot_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    if (flag != FTW_F || !S_ISREG(sb->st_mode) || in_store(path, ftw)) return 0;
    snap = realloc(snap, (size_t)(n_snap + 1) * sizeof *snap);
    snap_file *f = &snap[n_snap++];
    f->path = fm_xstrdup(path);
    f->data = fm_test_read_file(path, &f->len);
    return 0;
}

static int count_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    if (flag == FTW_F && S_ISREG(sb->st_mode) && !in_store(path, ftw)) {
        walked++;
        bool known = false;
        for (int i = 0; i < n_snap && !known; i++) known = !strcmp(snap[i].path, path);
        ck_assert_msg(known, "a refused command left %s behind", path);
    }
    return 0;
}

/* The earlier run's files are as they were, and nothing was added. */
static void assert_untouched(void)
{
    for (int i = 0; i < n_snap; i++) {
        size_t len;
        char *now = fm_test_read_file(snap[i].path, &len);
        ck_assert_msg(len == snap[i].len && !memcmp(now, snap[i].data, len),
                      "%s changed after a refused command", snap[i].path);
        free(now);
    }
    walked = 0;
    nftw(run_dir, count_one, 16, FTW_PHYS);
    ck_assert_int_eq(walked, n_snap);
    /* The store still holds the earlier run, completed, and no refused run
     * is left "running". */
    char db[4300];
    snprintf(db, sizeof db, "%s/runs.db", run_dir);
    char *show[] = {FMHOST, "runs", "show", "1", "--runs-db", db, NULL};
    fm_test_proc r;
    fm_test_spawn(&r, show, NULL, TIMEOUT);
    ck_assert_msg(r.status == 0 && strstr(r.out, "status            completed"), "%s%s", r.out,
                  r.err);
    fm_test_proc_free(&r);
    char *running[] = {FMHOST, "runs", "list", "--status", "running", "--runs-db", db, NULL};
    fm_test_spawn(&r, running, NULL, TIMEOUT);
    ck_assert_msg(r.status == 0 && strstr(r.out, "\n0 runs in "), "%s%s", r.out, r.err);
    fm_test_proc_free(&r);
}

static void setup(void)
{
    snprintf(work, sizeof work, "%s", fm_test_tmpdir());
    snprintf(run_dir, sizeof run_dir, "%s/run", work);
    fm_test_proc r;
    char *argv[] = {FMHOST, "train", "--model", "mlp", "--data-dir", SAMPLE_DIR, "--epochs", "1",
                    "--limit", "200", "--threads", "1", "--quiet", "--out", run_dir, NULL};
    fm_test_spawn(&r, argv, NULL, 300);
    ck_assert_msg(r.status == 0, "the earlier run failed (exit %d):\n%s", r.status, r.err);
    fm_test_proc_free(&r);
    nftw(run_dir, snapshot_one, 16, FTW_PHYS);
    /* The checkpoint, metrics.csv, summary.json and the report at least. */
    ck_assert_int_ge(n_snap, 8);
    /* Where the tests make their bad files. */
    char bad[1100];
    snprintf(bad, sizeof bad, "%s/bad", work);
    ck_assert_int_eq(mkdir(bad, 0777), 0);
}

static void teardown(void)
{
    fm_test_rmtree(work);
    for (int i = 0; i < n_snap; i++) {
        free(snap[i].path);
        free(snap[i].data);
    }
    free(snap);
}

/* ---- running a refused command --------------------------------------------------- */

/* "@x" stands for work/x, so that the tables below can name files the
 * tests make. */
static const char *expand(const char *s, char *buf, size_t len)
{
    if (s[0] != '@') return s;
    snprintf(buf, len, "%s/%s", work, s + 1);
    return buf;
}

static char *bad_path(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/bad/%s", work, name);
    return buf;
}

/* The options every command of a kind starts with; a case's own come after
 * them (and so win: getopt keeps the last value).  A command that wrongly
 * succeeded would write into run_dir, which assert_untouched notices. */
typedef enum kind { K_TRAIN, K_EVAL, K_BENCH, K_SCRIPT, K_REPORT } kind;

static const char *const kind_args[][12] = {
    [K_TRAIN] = {"train", "--data-dir", SAMPLE_DIR, "--out", "@run", "--epochs", "1", "--limit",
                 "100", "--threads", "1", "--quiet"},
    [K_EVAL] = {"eval", "--data-dir", SAMPLE_DIR, "--out", "@run", "--threads", "1"},
    [K_BENCH] = {"bench", "--data-dir", SAMPLE_DIR, "--batches", "1", "--threads", "1"},
    [K_SCRIPT] = {"script"},
    [K_REPORT] = {"report"},
};

typedef struct refusal {
    kind kind;
    const char *args[12];
    int status;
    const char *needles[5];  /* in stderr: the file or value, and the fix */
} refusal;

static void expect_refusal(const refusal *c)
{
    char bufs[32][4300];
    char *argv[32] = {FMHOST};
    int n = 1;
    char shown[2048] = "fmhost";
    for (int pass = 0; pass < 2; pass++) {
        const char *const *list = pass == 0 ? kind_args[c->kind] : c->args;
        for (int i = 0; i < 12 && list[i]; i++) {
            ck_assert_int_lt(n, 31);
            argv[n] = (char *)expand(list[i], bufs[n], sizeof bufs[n]);
            strncat(shown, " ", sizeof shown - strlen(shown) - 1);
            strncat(shown, argv[n], sizeof shown - strlen(shown) - 1);
            n++;
        }
    }
    argv[n] = NULL;
    fm_test_proc r;
    fm_test_spawn(&r, argv, NULL, TIMEOUT);
    ck_assert_msg(r.status == c->status, "%s: exit %d, want %d; stderr:\n%s", shown, r.status,
                  c->status, r.err);
    for (int k = 0; k < 5 && c->needles[k]; k++) {
        char buf[4300];
        const char *needle = expand(c->needles[k], buf, sizeof buf);
        ck_assert_msg(strstr(r.err, needle), "%s: \"%s\" not in stderr:\n%s", shown, needle, r.err);
    }
    fm_test_proc_free(&r);
}

static void expect_all(const refusal *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) expect_refusal(&cases[i]);
    assert_untouched();
}

/* ---- making bad files ------------------------------------------------------------- */

static void make_dir(const char *path)
{
    ck_assert_msg(mkdir(path, 0777) == 0, "mkdir %s", path);
}

static unsigned char *gzip_bytes(const void *data, size_t len, size_t *out_len)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    ck_assert_int_eq(deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
    size_t cap = deflateBound(&z, (uLong)len);
    unsigned char *out = fm_xmalloc(cap);
    z.next_in = (Bytef *)data;
    z.avail_in = (uInt)len;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    ck_assert_int_eq(deflate(&z, Z_FINISH), Z_STREAM_END);
    *out_len = cap - z.avail_out;
    deflateEnd(&z);
    return out;
}

static void write_gz(const char *path, const void *data, size_t len)
{
    size_t gz_len;
    unsigned char *gz = gzip_bytes(data, len, &gz_len);
    fm_test_write_file(path, gz, gz_len);
    free(gz);
}

static void put_be32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (24 - 8 * i));
}

static const char *const data_files[] = {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"};

/* work/bad/<name>/: the sample's four files as links, except `file`, left
 * for the caller to make (NULL: all four linked). */
static char *data_dir(char *buf, size_t len, const char *name, const char *file)
{
    bad_path(buf, len, name);
    make_dir(buf);
    for (int i = 0; i < 4; i++) {
        if (file && !strcmp(file, data_files[i])) continue;
        char from[4096], to[4400];
        snprintf(from, sizeof from, "%s/%s", SAMPLE_DIR, data_files[i]);
        snprintf(to, sizeof to, "%s/%s", buf, data_files[i]);
        ck_assert_int_eq(symlink(from, to), 0);
    }
    return buf;
}

static char *in_dir(char *buf, size_t len, const char *dir, const char *file)
{
    snprintf(buf, len, "%s/%s", dir, file);
    return buf;
}

/* How many images the sample's training split holds (its label header). */
static uint32_t sample_train_count(void)
{
    gzFile gz = gzopen(SAMPLE_DIR "/train-labels-idx1-ubyte.gz", "rb");
    ck_assert_ptr_nonnull(gz);
    unsigned char h[8];
    ck_assert_int_eq(gzread(gz, h, 8), 8);
    gzclose(gz);
    return (uint32_t)h[4] << 24 | (uint32_t)h[5] << 16 | (uint32_t)h[6] << 8 | h[7];
}

/* A label file of n labels, all 0 but label `odd_at` (if >= 0) = odd,
 * with `extra` bytes after them. */
static void write_labels(const char *path, uint32_t n, int odd_at, unsigned odd, size_t extra)
{
    size_t len = 8 + n + extra;
    unsigned char *b = fm_xcalloc(len, 1);
    put_be32(b, 0x801);
    put_be32(b + 4, n);
    if (odd_at >= 0) b[8 + odd_at] = (unsigned char)odd;
    write_gz(path, b, len);
    free(b);
}

/* ---- data ------------------------------------------------------------------------- */

START_TEST(test_bad_data)
{
    char d[32][4200], f[4400];
    uint32_t n = sample_train_count();
    const char *images = data_files[0], *labels = data_files[1];

    data_dir(d[0], sizeof d[0], "lacking", data_files[3]);

    data_dir(d[1], sizeof d[1], "truncated", images);
    size_t len;
    char *gz = fm_test_read_file(SAMPLE_DIR "/train-images-idx3-ubyte.gz", &len);
    fm_test_write_file(in_dir(f, sizeof f, d[1], images), gz, 1000);

    data_dir(d[2], sizeof d[2], "corrupt_gzip", labels);
    char *lab_gz = fm_test_read_file(SAMPLE_DIR "/train-labels-idx1-ubyte.gz", &len);
    lab_gz[len / 2] ^= 0x5a;
    fm_test_write_file(in_dir(f, sizeof f, d[2], labels), lab_gz, len);
    free(lab_gz);

    unsigned char head[16];
    put_be32(head, 0x804);
    put_be32(head + 4, n);
    put_be32(head + 8, 28);
    put_be32(head + 12, 28);
    data_dir(d[3], sizeof d[3], "magic", images);
    write_gz(in_dir(f, sizeof f, d[3], images), head, 16);

    data_dir(d[4], sizeof d[4], "swapped", images);
    unlink(in_dir(f, sizeof f, d[4], labels));
    ck_assert_int_eq(symlink(SAMPLE_DIR "/train-labels-idx1-ubyte.gz", in_dir(f, sizeof f, d[4], images)), 0);
    ck_assert_int_eq(symlink(SAMPLE_DIR "/train-images-idx3-ubyte.gz", in_dir(f, sizeof f, d[4], labels)), 0);

    put_be32(head, 0x803);
    put_be32(head + 8, 32);
    put_be32(head + 12, 32);
    data_dir(d[5], sizeof d[5], "size", images);
    write_gz(in_dir(f, sizeof f, d[5], images), head, 16);

    data_dir(d[6], sizeof d[6], "count", labels);
    write_labels(in_dir(f, sizeof f, d[6], labels), n - 1, -1, 0, 0);
    data_dir(d[7], sizeof d[7], "label", labels);
    write_labels(in_dir(f, sizeof f, d[7], labels), n, 7, 10, 0);
    data_dir(d[8], sizeof d[8], "trailing", labels);
    write_labels(in_dir(f, sizeof f, d[8], labels), n, -1, 0, 5);
    data_dir(d[9], sizeof d[9], "empty", labels);
    fm_test_write_file(in_dir(f, sizeof f, d[9], labels), "", 0);

    data_dir(d[10], sizeof d[10], "fifo", images);
    ck_assert_int_eq(mkfifo(in_dir(f, sizeof f, d[10], images), 0666), 0);
    data_dir(d[11], sizeof d[11], "directory", images);
    make_dir(in_dir(f, sizeof f, d[11], images));

    put_be32(head + 4, 20000000);
    put_be32(head + 8, 28);
    put_be32(head + 12, 28);
    data_dir(d[12], sizeof d[12], "claims", images);
    write_gz(in_dir(f, sizeof f, d[12], images), head, 16);
    free(gz);

#define DATA(dir) {"--model", "mlp", "--data-dir", dir}
    const refusal cases[] = {
        {K_TRAIN, DATA("@missing"), 1, {"@missing", "Point --data-dir"}},
        {K_TRAIN, DATA(d[0]), 1, {d[0], "lacks t10k-labels-idx1-ubyte.gz", "Point --data-dir"}},
        {K_TRAIN, DATA(d[1]), 1, {"truncated/train-images-idx3-ubyte.gz", "truncated", "re-download"}},
        {K_TRAIN, DATA(d[2]), 1, {"corrupt_gzip/train-labels", "corrupt gzip stream", "re-download"}},
        {K_TRAIN, DATA(d[3]), 1, {"magic/train-images", "wrong magic number 0x00000804", "re-download"}},
        {K_TRAIN, DATA(d[4]), 1, {"swapped/train-images", "images and labels swapped", "Give each file its name"}},
        {K_TRAIN, DATA(d[5]), 1, {"size/train-images", "32x32", "point --data-dir"}},
        {K_TRAIN, DATA(d[6]), 1, {"count/train-labels", "counts must match", "of one split"}},
        {K_TRAIN, DATA(d[7]), 1, {"label/train-labels", "label 10 at index 7", "re-download"}},
        {K_TRAIN, DATA(d[8]), 1, {"trailing/train-labels", "5 trailing bytes", "re-download"}},
        {K_TRAIN, DATA(d[9]), 1, {"empty/train-labels", "empty file", "re-download"}},
        {K_TRAIN, DATA(d[10]), 1, {d[10], "train-images-idx3-ubyte.gz (not a regular file)", "Point --data-dir"}},
        {K_TRAIN, DATA(d[11]), 1, {d[11], "train-images-idx3-ubyte.gz (not a regular file)", "Point --data-dir"}},
        {K_TRAIN, DATA(d[12]), 1, {"claims/train-images", "20000000 images", "re-download"}},
        /* eval reads the test split through the same reader. */
        {K_EVAL, DATA(d[0]), 1, {d[0], "lacks t10k-labels-idx1-ubyte.gz", "Point --data-dir"}},
    };
#undef DATA
    expect_all(cases, sizeof cases / sizeof cases[0]);
}
END_TEST

/* ---- checkpoints ------------------------------------------------------------------ */

/* The earlier run's checkpoint, split into its header and data. */
typedef struct st_parts {
    json_t *header;
    char *data;
    size_t data_len;
} st_parts;

static st_parts st_read(void)
{
    char path[4400];
    snprintf(path, sizeof path, "%s/artifacts/mlp_best.safetensors", run_dir);
    size_t len;
    char *raw = fm_test_read_file(path, &len);
    uint64_t hlen;
    memcpy(&hlen, raw, 8);
    ck_assert_uint_le(8 + hlen, len);
    json_error_t e;
    st_parts p = {json_loadb(raw + 8, hlen, 0, &e), NULL, len - 8 - hlen};
    ck_assert_msg(p.header != NULL, "%s", e.text);
    p.data = fm_xmalloc(p.data_len + 64);
    memcpy(p.data, raw + 8 + hlen, p.data_len);
    free(raw);
    return p;
}

/* Writes header (padded to 8 bytes) and data_len bytes of data. */
static void st_write(const char *path, json_t *header, const char *data, size_t data_len)
{
    char *text = json_dumps(header, JSON_COMPACT);
    size_t tl = strlen(text), hl = (tl + 7) / 8 * 8;
    size_t len = 8 + hl + data_len;
    char *buf = fm_xmalloc(len);
    uint64_t hlen = hl;
    memcpy(buf, &hlen, 8);
    memcpy(buf + 8, text, tl);
    memset(buf + 8 + tl, ' ', hl - tl);
    memcpy(buf + 8 + hl, data, data_len);
    fm_test_write_file(path, buf, len);
    free(buf);
    free(text);
}

/* The header with tensor `name`'s data_offsets moved by `by` bytes. */
static json_t *moved(const st_parts *p, const char *name, long by)
{
    json_t *h = json_deep_copy(p->header);
    json_t *offs = json_object_get(json_object_get(h, name), "data_offsets");
    ck_assert_ptr_nonnull(offs);
    for (int i = 0; i < 2; i++)
        json_array_set_new(offs, i, json_integer(json_integer_value(json_array_get(offs, i)) + by));
    return h;
}

/* Most memory a machine may have for the too-large model below to be
 * refused rather than attempted. */
#define HUGE_MODEL_GB 200.0

START_TEST(test_bad_checkpoints)
{
    char p[16][4200];
    st_parts st = st_read();
    json_t *h;

    st_write(bad_path(p[0], sizeof p[0], "truncated.safetensors"), st.header, st.data, 5000);
    /* fc3.bias is the last tensor: moved on, it leaves a gap. */
    st_write(bad_path(p[1], sizeof p[1], "gap.safetensors"), h = moved(&st, "fc3.bias", 4), st.data,
             st.data_len + 4);
    json_decref(h);
    st_write(bad_path(p[2], sizeof p[2], "overlap.safetensors"), h = moved(&st, "fc1.bias", -4),
             st.data, st.data_len);
    json_decref(h);
    st_write(bad_path(p[3], sizeof p[3], "trailing.safetensors"), st.header, st.data, st.data_len + 16);

    unsigned char huge_len[16] = {0, 0, 0, 0, 0, 1, 0, 0, '{', '}'};
    fm_test_write_file(bad_path(p[4], sizeof p[4], "header_len.safetensors"), huge_len, 10);

    size_t big = 17000000;
    char *blob = fm_xmalloc(8 + big);
    uint64_t big_len = big;
    memcpy(blob, &big_len, 8);
    memset(blob + 8, ' ', big);
    fm_test_write_file(bad_path(p[5], sizeof p[5], "header_size.safetensors"), blob, 8 + big);
    free(blob);

    const char not_json[] = "\x0f\0\0\0\0\0\0\0{\"a\": [1, 2,,]}";
    fm_test_write_file(bad_path(p[6], sizeof p[6], "not_json.safetensors"), not_json,
                       sizeof not_json - 1);

    h = json_deep_copy(st.header);
    json_object_set_new(json_object_get(h, "fc2.weight"), "dtype", json_string("F64"));
    st_write(bad_path(p[7], sizeof p[7], "dtype.safetensors"), h, st.data, st.data_len);
    json_decref(h);

    bad_path(p[8], sizeof p[8], "directory.safetensors");
    make_dir(p[8]);
    ck_assert_int_eq(mkfifo(bad_path(p[9], sizeof p[9], "fifo.safetensors"), 0666), 0);

    /* Metadata asking for a model far larger than the machine. */
    h = json_deep_copy(st.header);
    json_t *md = json_object_get(h, "__metadata__");
    json_object_set_new(md, "plugin", json_string("rescnn"));
    json_object_set_new(md, "hparams", json_string("width=1024 blocks=64"));
    st_write(bad_path(p[10], sizeof p[10], "huge_model.safetensors"), h, st.data, st.data_len);
    json_decref(h);
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    bool small_machine = (double)pages * (double)page < HUGE_MODEL_GB * 1e9;

    char best[4400];
    snprintf(best, sizeof best, "%s/artifacts/mlp_best.safetensors", run_dir);
#define EVAL(...) {"--model", "mlp", "--weights", __VA_ARGS__}
    const refusal cases[] = {
        {K_EVAL, EVAL(p[0]), 1, {p[0], "not inside the data section", "saved whole by fmhost"}},
        {K_EVAL, EVAL(p[1]), 1, {p[1], "leaving a gap", "saved whole by fmhost"}},
        {K_EVAL, EVAL(p[2]), 1, {p[2], "overlapping", "saved whole by fmhost"}},
        {K_EVAL, EVAL(p[3]), 1, {p[3], "16 bytes follow the last tensor", "saved whole by fmhost"}},
        {K_EVAL, EVAL(p[4]), 1, {p[4], "larger than the file", "saved whole by fmhost"}},
        {K_EVAL, EVAL(p[5]), 1, {p[5], "exceeds the 16000000-byte limit", "saved whole by fmhost"}},
        {K_EVAL, EVAL(p[6]), 1, {p[6], "not valid JSON", "saved whole by fmhost"}},
        {K_EVAL, EVAL(p[7]), 1, {p[7], "dtype \"F64\"", "saved whole by fmhost"}},
        {K_EVAL, EVAL(p[8]), 1, {p[8], "not a regular file", "give the path of a checkpoint"}},
        {K_EVAL, EVAL(p[9]), 1, {p[9], "not a regular file", "give the path of a checkpoint"}},
        {K_EVAL, EVAL("/dev/null"), 1, {"/dev/null", "not a regular file"}},
        {K_EVAL, EVAL("@bad/missing.safetensors"), 1, {"@bad/missing.safetensors", "No such file"}},
        /* Another model's checkpoint, or other hyper-parameters. */
        {K_EVAL, {"--model", "cnn", "--weights", best}, 1,
         {best, "'conv1.weight' is missing", "saved by plugin 'mlp'", "load it into that model"}},
        {K_EVAL, EVAL(best, "--set", "hidden1=64"), 1,
         {best, "'fc1.weight' has shape [256, 784], the model expects [64, 784]",
          "hidden1=256 hidden2=128", "load it into that model"}},
        {K_EVAL, {"--model", "rescnn", "--weights", p[10]}, 1,
         {"width=1024 blocks=64", "GB", "choose smaller hyper-parameters"}},
    };
#undef EVAL
    size_t n = sizeof cases / sizeof cases[0];
    expect_all(cases, small_machine ? n : n - 1);
    json_decref(st.header);
    free(st.data);
}
END_TEST

/* ---- plugins ---------------------------------------------------------------------- */

START_TEST(test_bad_plugins)
{
    char text[4200], dir[4200], fifo[4200];
    fm_test_write_file(bad_path(text, sizeof text, "notaplugin.so"), "text, not ELF\n", 14);
    make_dir(bad_path(dir, sizeof dir, "dir.so"));
    ck_assert_int_eq(mkfifo(bad_path(fifo, sizeof fifo, "fifo.so"), 0666), 0);

#define PLUGIN(path) {"--plugin", path}
#define DESC_FIX "fix the plugin's descriptor and rebuild it"
    const refusal cases[] = {
        {K_TRAIN, PLUGIN(text), 1, {text, "no ELF header", "give the path of a plugin .so"}},
        {K_TRAIN, PLUGIN(dir), 1, {dir, "not found", "give the path to the .so"}},
        {K_TRAIN, PLUGIN(fifo), 1, {fifo, "not found", "give the path to the .so"}},
        {K_TRAIN, PLUGIN("@bad/missing.so"), 1, {"@bad/missing.so", "give the path to the .so"}},
        {K_TRAIN, {"--model", "nosuchmodel"}, 1, {"nosuchmodel", "build the plugins"}},
        {K_TRAIN, PLUGIN(TEST_PLUGIN("broken_no_symbol")), 1,
         {"broken_no_symbol.so", "no symbol fm_plugin_descriptor", "docs/writing-plugins.md"}},
        {K_TRAIN, PLUGIN(TEST_PLUGIN("broken_undefined_symbol")), 1,
         {"broken_undefined_symbol.so", "fm_test_no_such_function", "rebuild the plugin"}},
        {K_TRAIN, PLUGIN(TEST_PLUGIN("broken_abi_major")), 1,
         {"broken_abi_major.so", "plugin ABI 2.0", "rebuild the plugin"}},
        {K_TRAIN, PLUGIN(TEST_PLUGIN("broken_newer_minor")), 1,
         {"broken_newer_minor.so", "newer than this fmhost", "upgrade fmhost"}},
        {K_TRAIN, PLUGIN(TEST_PLUGIN("broken_small_struct")), 1,
         {"broken_small_struct.so", "struct_size 8", "set it to sizeof(fm_plugin_desc)"}},
        {K_TRAIN, PLUGIN(TEST_PLUGIN("broken_null_desc")), 1, {"broken_null_desc.so", DESC_FIX}},
        {K_TRAIN, PLUGIN(TEST_PLUGIN("broken_bad_name")), 1, {"'Tiny-Model'", DESC_FIX}},
        {K_TRAIN, PLUGIN(TEST_PLUGIN("broken_null_create")), 1, {"lacks create()", DESC_FIX}},
        {K_TRAIN, PLUGIN(TEST_PLUGIN("broken_hp_bad_name")), 1, {"'Width'", DESC_FIX}},
        {K_TRAIN, PLUGIN(TEST_PLUGIN("broken_hp_duplicate")), 1, {"declared twice", DESC_FIX}},
        {K_TRAIN, PLUGIN(TEST_PLUGIN("broken_hp_bad_default")), 1, {"'wide'", DESC_FIX}},
        {K_TRAIN, PLUGIN(TEST_PLUGIN("broken_hp_bad_type")), 1, {"invalid type 9", DESC_FIX}},
        {K_TRAIN, PLUGIN(TEST_PLUGIN("broken_hp_no_help")), 1, {"no help text", DESC_FIX}},
        {K_TRAIN, PLUGIN(TEST_PLUGIN("broken_bad_signature")), 1, {"\"i(x)\"", DESC_FIX}},
        {K_TRAIN, PLUGIN(TEST_PLUGIN("broken_duplicate_export")), 1,
         {"export 'answer' is declared twice", DESC_FIX}},
        /* A plugin that loads but whose forward() returns nonsense. */
        {K_TRAIN, PLUGIN(TEST_PLUGIN("broken_forward_null")), 1, {"plugin tiny", "forward()"}},
        {K_TRAIN, PLUGIN(TEST_PLUGIN("broken_forward_shape")), 1, {"plugin tiny", "logits [64, 10]"}},
        {K_EVAL, PLUGIN(text), 1, {text, "no ELF header"}},
        {K_BENCH, PLUGIN(TEST_PLUGIN("broken_abi_major")), 1, {"plugin ABI 2.0", "rebuild the plugin"}},
    };
#undef PLUGIN
#undef DESC_FIX
    expect_all(cases, sizeof cases / sizeof cases[0]);
}
END_TEST

/* ---- command lines ----------------------------------------------------------------- */

/* Usage errors say "see fmhost <cmd> --help" and name the option and value. */
START_TEST(test_bad_command_lines)
{
#define TRAIN(...) {K_TRAIN, {"--model", "mlp", __VA_ARGS__}, 2
#define OPT(opt, value) TRAIN(opt, value), {opt, "'" value "'", "fmhost train --help"}}
    const refusal cases[] = {
        OPT("--epochs", "0"),
        OPT("--epochs", "1e3"),
        OPT("--batch-size", "0"),
        OPT("--batch-size", "70000"),
        OPT("--patience", "-1"),
        OPT("--val-split", "1"),
        OPT("--val-split", "nan"),
        OPT("--seed", "-1"),
        OPT("--seed", "x"),
        OPT("--limit", "-5"),
        OPT("--lr", "0"),
        OPT("--lr", "inf"),
        OPT("--momentum", "1"),
        OPT("--weight-decay", "-1"),
        OPT("--step-size", "0"),
        OPT("--gamma", "0"),
        OPT("--min-lr", "-1"),
        OPT("--warmup", "-1"),
        OPT("--threads", "257"),
        OPT("--clip-grad-norm", "-1"),
        OPT("--optimizer", "adagrad"),
        OPT("--scheduler", "linear"),
        TRAIN("--warmup", "3", "--epochs", "2"), {"--warmup 3", "--epochs"}},
        TRAIN("--frob"), {"--frob", "fmhost train --help"}},
        TRAIN("stray"), {"'stray'", "fmhost train --help"}},
        TRAIN("--epochs"), {"--epochs", "needs a value"}},
        TRAIN("--nesterov"), {"--nesterov", "--optimizer sgd"}},
        /* --set: the key, the value, what the plugin declares. */
        TRAIN("--set", "nokey"), {"--set 'nokey'", "KEY=VALUE"}},
        TRAIN("--set", "=3"), {"'=3'", "key=value"}},
        TRAIN("--set", "nokey=3"), {"'nokey'", "declared: hidden1, hidden2, dropout"}},
        TRAIN("--set", "hidden1=abc"), {"hidden1", "'abc' is not a valid int"}},
        TRAIN("--set", "hidden1=0"), {"hidden1=0", "[1, 65536]"}},
        TRAIN("--set", "dropout=1.5"), {"dropout=1.5", "[0, 1)"}},
        {K_TRAIN, {"--model", "lenet", "--set", "batchnorm=maybe"}, 2,
         {"batchnorm", "'maybe'", "true/false/1/0/yes/no"}},
        TRAIN("--kernels", "bogus"), {"'bogus'", "portable", "leave out --kernels"}},
        {K_EVAL, {"--model", "mlp", "--threads", "x"}, 2, {"--threads", "'x'", "fmhost eval --help"}},
        {K_EVAL, {"--model", "mlp", "--frob"}, 2, {"--frob", "fmhost eval --help"}},
        {K_EVAL, {"--model", "mlp", "--weights"}, 2, {"--weights", "needs a value"}},
        {K_EVAL, {"--model", "mlp", "--set", "hidden1"}, 2, {"'hidden1'", "KEY=VALUE"}},
        {K_EVAL, {"--model", "mlp", "--kernels", "avx3"}, 2, {"'avx3'", "leave out --kernels"}},
        {K_BENCH, {"--model", "mlp", "--batches", "0"}, 2, {"--batches", "'0'", "fmhost bench --help"}},
        {K_BENCH, {"--model", "mlp", "--batch-size", "5000"}, 2, {"--batch-size", "'5000'", "fmhost bench --help"}},
        {K_BENCH, {"--model", "mlp", "--eval-batch", "0"}, 2, {"--eval-batch", "'0'", "fmhost bench --help"}},
        {K_BENCH, {"--model", "mlp", "--threads", "-1"}, 2, {"--threads", "'-1'", "fmhost bench --help"}},
        {K_BENCH, {"--model", "mlp", "--set", "width=8"}, 2, {"'width'", "declared: hidden1"}},
        {K_BENCH, {"--model", "mlp", "--kernels", "AVX2"}, 2, {"'AVX2'", "leave out --kernels"}},
        {K_SCRIPT, {"--kernels", "bogus", "x.lua"}, 2, {"'bogus'", "leave out --kernels"}},
        {K_SCRIPT, {"--frob", "x.lua"}, 2, {"--frob", "fmhost script --help"}},
    };
#undef OPT
#undef TRAIN
    expect_all(cases, sizeof cases / sizeof cases[0]);

    /* A model too large for the machine is refused before it is allocated. */
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if ((double)pages * (double)page < HUGE_MODEL_GB * 1e9) {
        const refusal huge = {K_TRAIN, {"--model", "rescnn", "--set", "width=1024", "--set", "blocks=64"},
                              1, {"width=1024 blocks=64", "GB", "choose smaller hyper-parameters"}};
        expect_all(&huge, 1);
    }
}
END_TEST

/* ---- Lua ----------------------------------------------------------------------------- */

/* Each script is written to work/bad/<name>.lua and run with out=<run dir>
 * and data=<sample>: the error names the script's line and the culprit. */
static const struct {
    const char *name, *body, *needles[3];
} lua_cases[] = {
    {"syntax", "local x =\n", {"syntax.lua:2", "near <eof>"}},
    {"error", "error('the script failed')\n", {"error.lua:1", "the script failed"}},
    {"unknown_option", "fm.train{plugin = 'mlp', data_dir = fm.args.data, out = fm.args.out,\n"
     "  epochs = 1, limit = 100, quiet = true, frob = 3}\n",
     {"unknown_option.lua:1", "unknown option 'frob'", "options: plugin"}},
    {"option_type", "fm.train{plugin = 'mlp', data_dir = fm.args.data, out = fm.args.out,\n"
     "  epochs = 'many'}\n", {"option_type.lua:1", "'epochs' must be an integer, got string"}},
    {"option_value", "fm.train{plugin = 'mlp', data_dir = fm.args.data, out = fm.args.out,\n"
     "  epochs = 0}\n", {"option_value.lua:1", "'epochs' is 0", "between 1 and 100000"}},
    {"scheduler", "fm.train{plugin = 'mlp', data_dir = fm.args.data, out = fm.args.out,\n"
     "  scheduler = 'linear'}\n", {"scheduler.lua:1", "'linear'", "choose constant, step, cosine or onecycle"}},
    {"set", "fm.train{plugin = 'mlp', data_dir = fm.args.data, out = fm.args.out,\n"
     "  set = {hidden1 = 'x'}}\n", {"set.lua:1", "hidden1", "'x' is not a valid int"}},
    {"plugin", "fm.train{plugin = 'nosuchmodel', data_dir = fm.args.data, out = fm.args.out}\n",
     {"plugin.lua:1", "nosuchmodel", "build the plugins"}},
    {"data", "fm.train{plugin = 'mlp', data_dir = fm.args.out .. '/nodata', out = fm.args.out}\n",
     {"data.lua:1", "nodata", "Point --data-dir"}},
    {"callback", "fm.train{plugin = 'mlp', data_dir = fm.args.data, out = fm.args.out,\n"
     "  epochs = 1, limit = 100, quiet = true, artifacts = false,\n"
     "  on_step = function(s) error('callback failed') end}\n",
     {"callback.lua:3", "callback failed"}},
};

/* ---- metrics.csv, as `fmhost report` reads it ---------------------------------------- */

START_TEST(test_bad_metrics)
{
    static const char *const bodies[] = {"", "garbage\n1,2,3\n",
                                         "epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds\n"
                                         "1,0.5,0.8,0.6,x,0.001,1.0,9\n"};
    char d[4][2048], f[4400];
    for (int i = 0; i < 4; i++) {
        char name[32];
        snprintf(name, sizeof name, "results%d", i);
        make_dir(bad_path(d[i], sizeof d[i], name));
        in_dir(f, sizeof f, d[i], "metrics.csv");
        if (i < 3)
            fm_test_write_file(f, bodies[i], strlen(bodies[i]));
        else
            ck_assert_int_eq(mkfifo(f, 0666), 0);
    }
    const refusal cases[] = {
        {K_REPORT, {d[0]}, 1, {"results0/metrics.csv", "empty file", "expected the header"}},
        {K_REPORT, {d[1]}, 1, {"results1/metrics.csv:1", "not a metrics.csv"}},
        {K_REPORT, {d[2]}, 1, {"results2/metrics.csv:2", "expected 7"}},
        {K_REPORT, {d[3]}, 1, {"results3/metrics.csv", "not a regular file"}},
        {K_REPORT, {"@bad/results_missing"}, 1, {"@bad/results_missing/metrics.csv", "No such file"}},
    };
    expect_all(cases, sizeof cases / sizeof cases[0]);
}
END_TEST

START_TEST(test_bad_lua)
{
    char out_arg[4300], data_arg[4300];
    snprintf(out_arg, sizeof out_arg, "out=%s", run_dir);
    snprintf(data_arg, sizeof data_arg, "data=%s", SAMPLE_DIR);
    for (size_t i = 0; i < sizeof lua_cases / sizeof lua_cases[0]; i++) {
        char path[4300], body[2048];
        bad_path(path, sizeof path, lua_cases[i].name);
        strcat(path, ".lua");
        snprintf(body, sizeof body, "local fm = require 'fm' %s", lua_cases[i].body);
        fm_test_write_file(path, body, strlen(body));
        refusal c = {K_SCRIPT, {path, out_arg, data_arg}, 1, {NULL}};
        for (int k = 0; k < 3; k++) c.needles[k] = lua_cases[i].needles[k];
        expect_refusal(&c);
    }
    const refusal missing = {K_SCRIPT, {"@bad/missing.lua"}, 1, {"@bad/missing.lua", "No such file"}};
    expect_refusal(&missing);
    assert_untouched();
}
END_TEST

static Suite *bad_inputs_suite(void)
{
    Suite *s = suite_create("bad_inputs");
    TCase *tc = tcase_create("refusals");
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_bad_data);
    tcase_add_test(tc, test_bad_checkpoints);
    tcase_add_test(tc, test_bad_plugins);
    tcase_add_test(tc, test_bad_command_lines);
    tcase_add_test(tc, test_bad_metrics);
    tcase_add_test(tc, test_bad_lua);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return fm_test_run(bad_inputs_suite()); }
