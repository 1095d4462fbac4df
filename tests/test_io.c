/* test_io.c — atomic writes, mkdir -p, safetensors round trips and hostile files. */
#include <check.h>
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fm/fm_io.h"
#include "fm/fm_model.h"
#include "fm_test_util.h"

/* ---- helpers ---------------------------------------------------------------------- */

/* A model shaped like a tiny Linear + BatchNorm: F32 parameters and buffers,
 * and an I64 num_batches_tracked stored as [1]. */
static fm_model *tiny_model(uint64_t seed)
{
    fm_model *m = fm_model_new();
    fm_model_param(m, "fc1.weight", 2, (int[]){3, 4}, FM_INIT_FAN_IN, 4);
    fm_model_param(m, "fc1.bias", 1, (int[]){3}, FM_INIT_FAN_IN, 4);
    fm_model_buffer(m, "bn.running_mean", FM_F32, 1, (int[]){3}, FM_INIT_ZEROS);
    fm_model_buffer(m, "bn.num_batches_tracked", FM_I64, 1, (int[]){1}, FM_INIT_ZEROS);
    fm_model_finalize(m, seed);
    fm_model_find(m, "bn.running_mean")->data[1] = 0.5f + (float)seed;
    fm_model_find(m, "bn.num_batches_tracked")->i64[0] = 1000 + (int64_t)seed;
    return m;
}

static void *state_of(const fm_model *m)
{
    void *buf = malloc(fm_model_state_bytes(m));
    fm_model_state_save(m, buf);
    return buf;
}

static bool model_has_state(const fm_model *m, const void *state)
{
    void *now = state_of(m);
    bool same = memcmp(now, state, fm_model_state_bytes(m)) == 0;
    free(now);
    return same;
}

static char *read_file(const char *path, size_t *len)
{
    char *data;
    ck_assert_msg(fm_file_read_all(path, 1 << 26, &data, len) == FM_OK, "%s",
                  fm_error_message());
    return data;
}

static char dir[4096];

static const char *in_dir(const char *name)
{
    static char path[8][4200];
    static int next;
    char *p = path[next++ % 8];
    snprintf(p, sizeof path[0], "%s/%s", dir, name);
    return p;
}

static void setup(void)
{
    snprintf(dir, sizeof dir, "%s", fm_test_tmpdir());
}

/* A safetensors file from a header string and a data section. */
static void write_st(const char *path, const char *header, const void *data, size_t data_len)
{
    size_t hlen = strlen(header);
    size_t total = 8 + hlen + data_len;
    unsigned char *buf = malloc(total);
    uint64_t n = hlen;
    memcpy(buf, &n, 8);
    memcpy(buf + 8, header, hlen);
    if (data_len)
        memcpy(buf + 8 + hlen, data, data_len);
    fm_test_write_file(path, buf, total);
    free(buf);
}

static const char *const tiny_names[4] = {"fc1.weight", "fc1.bias", "bn.running_mean",
                                          "bn.num_batches_tracked"};
static const char *const tiny_descs[4] = {
    "{\"dtype\":\"F32\",\"shape\":[3,4],\"data_offsets\":[0,48]}",
    "{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[48,60]}",
    "{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[60,72]}",
    "{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[72,80]}",
};

/* A file with tiny_model's four tensor names described by descs ("" drops
 * one), `extra` entries appended, and data_len bytes of data. */
static void write_tiny_entries(const char *path, const char *const descs[4], const char *extra,
                               size_t data_len)
{
    char header[4096] = "{\"__metadata__\":{\"format\":\"pt\"}";
    for (int i = 0; i < 4; i++) {
        if (*descs[i] == '\0')
            continue;
        strcat(header, ",\"");
        strcat(header, tiny_names[i]);
        strcat(header, "\":");
        strcat(header, descs[i]);
    }
    if (extra) {
        strcat(header, ",");
        strcat(header, extra);
    }
    strcat(header, "}");
    unsigned char data[128];
    ck_assert_uint_le(data_len, sizeof data);
    for (size_t i = 0; i < data_len; i++)
        data[i] = (unsigned char)(i * 7);
    write_st(path, header, data, data_len);
}

/* The four tensors of tiny_model with one entry replaced by `override`
 * (name given) or dropped (override ""), plus `extra` appended; 80 bytes of
 * data, which the four fill exactly. */
static void write_tiny_header(const char *path, const char *which, const char *override,
                              const char *extra)
{
    const char *descs[4];
    for (int i = 0; i < 4; i++)
        descs[i] = which && strcmp(which, tiny_names[i]) == 0 ? override : tiny_descs[i];
    write_tiny_entries(path, descs, extra, 80);
}

/* Loads path into a fresh tiny model, expects refusal with status st and a
 * message containing every string of `want`, and the model untouched. */
static void expect_refused(const char *path, fm_status st, const char *const *want, int n_want)
{
    fm_model *m = tiny_model(3);
    void *before = state_of(m);
    fm_meta *meta = (fm_meta *)1;
    fm_status got = fm_safetensors_load(path, m, &meta);
    const char *msg = fm_error_message();
    ck_assert_msg(got == st, "expected %s, got %s (%s)", fm_status_name(st), fm_status_name(got),
                  msg);
    ck_assert_ptr_null(meta);
    ck_assert_msg(strstr(msg, path) != NULL, "message does not name the file: %s", msg);
    for (int i = 0; i < n_want; i++)
        ck_assert_msg(strstr(msg, want[i]) != NULL, "message lacks \"%s\": %s", want[i], msg);
    ck_assert_msg(model_has_state(m, before), "a refused load changed the model");
    free(before);
    fm_model_free(m);
}

#define REFUSED(path, st, ...)                                                             \
    do {                                                                                   \
        const char *want_[] = {__VA_ARGS__};                                               \
        expect_refused(path, st, want_, (int)(sizeof want_ / sizeof want_[0]));            \
    } while (0)

/* ---- atomic writes and directories --------------------------------------------------- */

START_TEST(test_write_atomic_replaces)
{
    const char *path = in_dir("a.txt");
    ck_assert_int_eq(fm_file_write_atomic(path, "old", 3), FM_OK);
    ck_assert_int_eq(fm_file_write_atomic(path, "new content", 11), FM_OK);
    size_t len;
    char *data = read_file(path, &len);
    ck_assert_uint_eq(len, 11);
    ck_assert_str_eq(data, "new content");
    free(data);
    /* No temporary file is left behind. */
    DIR *d = opendir(dir);
    struct dirent *e;
    int files = 0;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.') {
            files++;
            ck_assert_msg(strstr(e->d_name, ".tmp.") == NULL, "left over: %s", e->d_name);
        }
    closedir(d);
    ck_assert_int_eq(files, 1);
}
END_TEST

/* A write that fails halfway (file size limit: works even as root) keeps the
 * old file and removes the temporary one. */
START_TEST(test_write_atomic_failure_keeps_old)
{
    const char *path = in_dir("keep.txt");
    ck_assert_int_eq(fm_file_write_atomic(path, "old!", 4), FM_OK);
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit old_lim, lim;
    getrlimit(RLIMIT_FSIZE, &old_lim);
    lim = old_lim;
    lim.rlim_cur = 16;
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    static char big[100000];
    memset(big, 'x', sizeof big);
    fm_status st = fm_file_write_atomic(path, big, sizeof big);
    setrlimit(RLIMIT_FSIZE, &old_lim);
    ck_assert_int_eq(st, FM_ERR_IO);
    ck_assert_msg(strstr(fm_error_message(), path) != NULL, "%s", fm_error_message());
    size_t len;
    char *data = read_file(path, &len);
    ck_assert_str_eq(data, "old!");
    free(data);
    ck_assert(!fm_test_tmp_left(path));
}
END_TEST

START_TEST(test_write_atomic_unwritable_dir)
{
    const char *sub = in_dir("ro");
    ck_assert_int_eq(fm_mkdirs(sub), FM_OK);
    char path[4300];
    snprintf(path, sizeof path, "%s/f.txt", sub);
    ck_assert_int_eq(fm_file_write_atomic(path, "old", 3), FM_OK);
    chmod(sub, 0555);
    bool root = geteuid() == 0;  /* root writes anywhere: then only the missing-dir case */
    fm_status st = fm_file_write_atomic(path, "new", 3);
    chmod(sub, 0755);
    if (!root) {
        ck_assert_int_eq(st, FM_ERR_IO);
        ck_assert_msg(strstr(fm_error_message(), path) != NULL, "%s", fm_error_message());
        size_t len;
        char *data = read_file(path, &len);
        ck_assert_str_eq(data, "old");
        free(data);
    }
    snprintf(path, sizeof path, "%s/no/such/dir/f.txt", dir);
    ck_assert_int_eq(fm_file_write_atomic(path, "x", 1), FM_ERR_IO);
    ck_assert_msg(strstr(fm_error_message(), path) != NULL, "%s", fm_error_message());
    ck_assert_msg(strstr(fm_error_message(), "No such file") != NULL, "%s", fm_error_message());
}
END_TEST

START_TEST(test_atomic_stream_abort_and_commit)
{
    const char *path = in_dir("s.txt");
    ck_assert_int_eq(fm_file_write_atomic(path, "old", 3), FM_OK);
    char tmp[4300];
    FILE *f = fm_atomic_open(path, tmp, sizeof tmp);
    ck_assert_ptr_nonnull(f);
    fputs("half-written", f);
    fm_atomic_abort(f, tmp);
    ck_assert_int_ne(access(tmp, F_OK), 0);
    size_t len;
    char *data = read_file(path, &len);
    ck_assert_str_eq(data, "old");
    free(data);

    f = fm_atomic_open(path, tmp, sizeof tmp);
    ck_assert_ptr_nonnull(f);
    fprintf(f, "%d lines\n", 2);
    ck_assert_int_eq(fm_atomic_commit(f, tmp, path), FM_OK);
    data = read_file(path, &len);
    ck_assert_str_eq(data, "2 lines\n");
    free(data);
}
END_TEST

START_TEST(test_mkdirs)
{
    const char *deep = in_dir("x/y/z/");
    ck_assert_int_eq(fm_mkdirs(deep), FM_OK);
    ck_assert_int_eq(fm_mkdirs(deep), FM_OK);  /* existing is fine */
    struct stat st;
    ck_assert_int_eq(stat(in_dir("x/y/z"), &st), 0);
    ck_assert(S_ISDIR(st.st_mode));
    const char *file = in_dir("x/plain");
    ck_assert_int_eq(fm_file_write_atomic(file, "f", 1), FM_OK);
    ck_assert_int_eq(fm_mkdirs(file), FM_ERR_IO);
    ck_assert_msg(strstr(fm_error_message(), file) != NULL, "%s", fm_error_message());
    const char *below = in_dir("x/plain/sub");
    ck_assert_int_eq(fm_mkdirs(below), FM_ERR_IO);
}
END_TEST

START_TEST(test_read_all_limit)
{
    const char *path = in_dir("r.bin");
    fm_test_write_file(path, "0123456789", 10);
    char *data;
    size_t len;
    ck_assert_int_eq(fm_file_read_all(path, 9, &data, &len), FM_ERR_FORMAT);
    ck_assert_int_eq(fm_file_read_all(path, 10, &data, &len), FM_OK);
    ck_assert_uint_eq(len, 10);
    ck_assert_int_eq(data[10], '\0');
    free(data);
    ck_assert_int_eq(fm_file_read_all(in_dir("missing"), 10, &data, &len), FM_ERR_IO);
    ck_assert_ptr_null(data);
}
END_TEST

START_TEST(test_csv_field_quoting)
{
    const char *path = in_dir("c.csv");
    FILE *f = fopen(path, "w");
    fm_csv_write_field(f, "plain");
    fputc(',', f);
    fm_csv_write_field(f, "a,b");
    fputc(',', f);
    fm_csv_write_field(f, "say \"hi\"");
    fclose(f);
    size_t len;
    char *data = read_file(path, &len);
    ck_assert_str_eq(data, "plain,\"a,b\",\"say \"\"hi\"\"\"");
    free(data);
}
END_TEST

/* ---- 16-bit floats ------------------------------------------------------------------------ */

/* Round to nearest even, worked out in double: the two bfloat16 values
 * around |x| (the truncated one and the next, 2^128 past the largest
 * finite one) and which of them is nearer, exactly, as doubles hold both
 * differences without rounding. */
static uint16_t bf16_reference(float x)
{
    if (isnan(x)) return 0x7FC0;
    uint16_t sign = (uint16_t)(fm_test_bits_of(x) >> 16 & 0x8000u);
    uint16_t lo = (uint16_t)(fm_test_bits_of(x) >> 16 & 0x7FFFu);
    if (isinf(x)) return sign | lo;
    double a = fabs((double)x), below = (double)fm_test_float_of((uint32_t)lo << 16);
    double above = lo == 0x7F7F ? ldexp(1.0, 128) : (double)fm_test_float_of((uint32_t)(lo + 1) << 16);
    double to_below = a - below, to_above = above - a;
    bool up = to_above < to_below || (to_above == to_below && (lo & 1));
    return (uint16_t)(sign | (lo + up));
}

/* Every bfloat16 widens exactly (its bits in float32's upper half) and
 * rounds back to itself; a NaN comes back as 0x7FC0, as in c10.  (The
 * loops here fail with ck_abort_msg: Check's ck_assert marks a point, a
 * write to the parent process, at every success.) */
START_TEST(test_bf16_round_trip_exhaustive)
{
    int nans = 0;
    for (uint32_t h = 0; h <= 0xFFFF; h++) {
        float f = fm_f32_from_bf16((uint16_t)h);
        if (fm_test_bits_of(f) != h << 16) ck_abort_msg("bf16 %04x widened to %08x", h, fm_test_bits_of(f));
        bool nan = (h & 0x7F80) == 0x7F80 && (h & 0x7F) != 0;
        nans += nan;
        uint16_t back = fm_bf16_from_f32(f), want = nan ? 0x7FC0 : (uint16_t)h;
        if (back != want)
            ck_abort_msg("bf16 %04x -> %g -> %04x, want %04x", h, (double)f, back, want);
    }
    ck_assert_int_eq(nans, 2 * 127);
}
END_TEST

/* Every binary16 against its value worked out with ldexp. */
START_TEST(test_f16_exhaustive)
{
    for (uint32_t h = 0; h <= 0xFFFF; h++) {
        uint32_t sign = h >> 15, exp = h >> 10 & 0x1F, mant = h & 0x3FF;
        float got = fm_f32_from_f16((uint16_t)h);
        if (exp == 0x1F && mant != 0) {
            /* Sign and payload kept, the NaN quiet. */
            uint32_t want = sign << 31 | 0x7FC00000u | mant << 13;
            if (!isnan(got) || fm_test_bits_of(got) != want)
                ck_abort_msg("f16 NaN %04x -> %08x, want %08x", h, fm_test_bits_of(got), want);
            continue;
        }
        double v = exp == 0x1F ? INFINITY
                   : exp == 0  ? ldexp((double)mant, -24)
                               : ldexp((double)(mant + 1024), (int)exp - 25);
        float want = (float)(sign ? -v : v);
        if (fm_test_bits_of(got) != fm_test_bits_of(want))
            ck_abort_msg("f16 %04x -> %08x (%g), want %08x (%g)", h, fm_test_bits_of(got), (double)got,
                         fm_test_bits_of(want), (double)want);
    }
}
END_TEST

/* Rounding to bfloat16 against the double-arithmetic reference on four
 * million floats: random bit patterns (every exponent, subnormals and
 * infinities among them), half of them with the dropped half made a tie or
 * one unit either side of one, and every NaN to 0x7FC0 whatever its sign. */
START_TEST(test_bf16_rounding_random)
{
    static const uint16_t near_tie[] = {0x8000, 0x7FFF, 0x8001, 0x0000, 0xFFFF, 0x0001};
    fm_rng rng;
    fm_rng_seed(&rng, 20240615, FM_RNG_TEST);
    int ties = 0, nans = 0, overflows = 0;
    for (int i = 0; i < 4000000; i++) {
        uint32_t u = fm_rng_u32(&rng);
        if (i & 1) u = (u & 0xFFFF0000u) | near_tie[fm_rng_below(&rng, 6)];
        float x = fm_test_float_of(u);
        uint16_t got = fm_bf16_from_f32(x), want = bf16_reference(x);
        if (got != want) ck_abort_msg("%08x (%a): got %04x, want %04x", u, (double)x, got, want);
        ties += (u & 0xFFFF) == 0x8000 && !isnan(x);
        nans += isnan(x);
        overflows += isfinite(x) && (got & 0x7FFF) == 0x7F80;
    }
    ck_assert_int_gt(ties, 250000);
    ck_assert_int_gt(nans, 10000);
    ck_assert_int_gt(overflows, 20);
    /* Ties both ways, and the edges. */
    ck_assert_uint_eq(fm_bf16_from_f32(fm_test_float_of(0x3F808000u)), 0x3F80);  /* to even: down */
    ck_assert_uint_eq(fm_bf16_from_f32(fm_test_float_of(0x3F818000u)), 0x3F82);  /* to even: up */
    ck_assert_uint_eq(fm_bf16_from_f32(fm_test_float_of(0x3F808001u)), 0x3F81);
    ck_assert_uint_eq(fm_bf16_from_f32(fm_test_float_of(0x7F7F8000u)), 0x7F80);  /* to infinity */
    ck_assert_uint_eq(fm_bf16_from_f32(fm_test_float_of(0x7F7F7FFFu)), 0x7F7F);
    ck_assert_uint_eq(fm_bf16_from_f32(fm_test_float_of(0x00008000u)), 0x0000);  /* subnormal tie */
    ck_assert_uint_eq(fm_bf16_from_f32(fm_test_float_of(0x80018000u)), 0x8002);
    ck_assert_uint_eq(fm_bf16_from_f32(fm_test_float_of(0xFFC00001u)), 0x7FC0);  /* NaN, sign dropped */
    ck_assert_uint_eq(fm_bf16_from_f32(fm_test_float_of(0x7F800001u)), 0x7FC0);
    /* The array form agrees. */
    float a[5] = {1.0f, -0.0f, fm_test_float_of(0x3F818000u), INFINITY, fm_test_float_of(0x7F800001u)};
    uint16_t b[5];
    fm_bf16_from_f32_n(b, a, 5);
    for (int i = 0; i < 5; i++) ck_assert_uint_eq(b[i], fm_bf16_from_f32(a[i]));
    float c[5];
    fm_f32_from_bf16_n(c, b, 5);
    for (int i = 0; i < 5; i++) ck_assert_uint_eq(fm_test_bits_of(c[i]), (uint32_t)b[i] << 16);
    const uint16_t h[3] = {0x3C00, 0x0001, 0xFBFF};
    fm_f32_from_f16_n(c, h, 3);
    ck_assert(c[0] == 1.0f && c[1] == ldexpf(1.0f, -24) && c[2] == -65504.0f);
}
END_TEST

/* Rounding to binary16 against a double-arithmetic reference: the two
 * binary16 magnitudes around |x| (from fm_f32_from_f16, exact) and which is
 * nearer, ties to the even one; 65520 and up to infinity; NaN to 0x7E00
 * with the sign kept (c10::Half). */
static uint16_t f16_reference(float x)
{
    uint16_t sign = signbit(x) ? 0x8000 : 0;
    if (isnan(x)) return sign | 0x7E00;
    double a = fabs((double)x);
    if (a >= 65520.0) return sign | 0x7C00;
    uint16_t lo = 0;  /* the largest magnitude <= a, by bisection over the ordered codes */
    for (uint16_t step = 0x4000; step; step >>= 1)
        if (lo + step <= 0x7BFF && (double)fm_f32_from_f16((uint16_t)(lo + step)) <= a) lo += step;
    double below = fm_f32_from_f16(lo);
    double above = lo == 0x7BFF ? 65536.0 : (double)fm_f32_from_f16((uint16_t)(lo + 1));
    double to_below = a - below, to_above = above - a;
    bool up = to_above < to_below || (to_above == to_below && (lo & 1));
    return (uint16_t)(sign | (lo + up));
}

/* Every binary16 rounds back to itself (NaNs to 0x7E00 with their sign);
 * the midpoints between neighbours and one float either side of them round
 * as the reference says; then random floats of every exponent. */
START_TEST(test_f16_rounding)
{
    for (uint32_t h = 0; h <= 0xFFFF; h++) {
        float f = fm_f32_from_f16((uint16_t)h);
        uint16_t want = isnan(f) ? (uint16_t)((h & 0x8000) | 0x7E00) : (uint16_t)h;
        if (fm_f16_from_f32(f) != want)
            ck_abort_msg("f16 %04x -> %a -> %04x, want %04x", h, (double)f, fm_f16_from_f32(f), want);
        if (h >= 0x7BFF) continue;  /* positive and finite below the largest: signs come below */
        float mid = (float)(((double)f + fm_f32_from_f16((uint16_t)(h + 1))) / 2);  /* exact */
        const float probes[3] = {mid, nextafterf(mid, 0.0f), nextafterf(mid, INFINITY)};
        for (int k = 0; k < 3; k++) {
            float x = probes[k];
            if (fm_f16_from_f32(x) != f16_reference(x))
                ck_abort_msg("%a: got %04x, want %04x", (double)x, fm_f16_from_f32(x),
                             f16_reference(x));
        }
    }
    fm_rng rng;
    fm_rng_seed(&rng, 20261207, FM_RNG_TEST);
    for (int i = 0; i < 200000; i++) {
        /* Exponents around binary16's range, where the cases are. */
        uint32_t u = (fm_rng_u32(&rng) & 0x807FFFFFu) | (uint32_t)(96 + fm_rng_below(&rng, 48)) << 23;
        if (i % 7 == 0) u = fm_rng_u32(&rng);  /* and anything at all */
        float x = fm_test_float_of(u);
        if (fm_f16_from_f32(x) != f16_reference(x))
            ck_abort_msg("%08x (%a): got %04x, want %04x", u, (double)x, fm_f16_from_f32(x),
                         f16_reference(x));
    }
    ck_assert_uint_eq(fm_f16_from_f32(65519.996f), 0x7BFF);
    ck_assert_uint_eq(fm_f16_from_f32(65520.0f), 0x7C00);
    ck_assert_uint_eq(fm_f16_from_f32(-INFINITY), 0xFC00);
    ck_assert_uint_eq(fm_f16_from_f32(ldexpf(1.0f, -25)), 0x0000);  /* a tie: to even, zero */
    ck_assert_uint_eq(fm_f16_from_f32(ldexpf(1.5f, -24)), 0x0002);  /* a tie: to even, up */
    ck_assert_uint_eq(fm_f16_from_f32(fm_test_float_of(0xFFC00001u)), 0xFE00);
    float a[3] = {1.0f, -2.5f, 65504.0f};
    uint16_t b[3];
    fm_f16_from_f32_n(b, a, 3);
    ck_assert(b[0] == 0x3C00 && b[1] == 0xC100 && b[2] == 0x7BFF);
}
END_TEST

START_TEST(test_float_dtype_names)
{
    fm_float_dtype d = FM_FLOAT_F32;
    ck_assert_int_eq(fm_float_dtype_parse("bf16", &d), FM_OK);
    ck_assert_int_eq(d, FM_FLOAT_BF16);
    ck_assert_str_eq(fm_float_dtype_name(d), "bf16");
    ck_assert_int_eq(fm_float_dtype_parse("f32", &d), FM_OK);
    ck_assert_int_eq(d, FM_FLOAT_F32);
    ck_assert_str_eq(fm_float_dtype_name(d), "f32");
    ck_assert_int_eq(fm_float_dtype_parse("f16", &d), FM_OK);
    ck_assert_int_eq(d, FM_FLOAT_F16);
    ck_assert_str_eq(fm_float_dtype_name(d), "f16");
    d = FM_FLOAT_F32;
    ck_assert_int_eq(fm_float_dtype_parse("fp16", &d), FM_ERR_ARG);
    ck_assert_msg(strstr(fm_error_message(), "'fp16'") && strstr(fm_error_message(), "bf16"),
                  "%s", fm_error_message());
    ck_assert_int_eq(d, FM_FLOAT_F32);
}
END_TEST

/* ---- safetensors ----------------------------------------------------------------------- */

START_TEST(test_st_round_trip)
{
    const char *path = in_dir("m.safetensors");
    fm_model *a = tiny_model(1);
    const char *meta[] = {"plugin", "mlp", "epoch", "7", "format", "ignored"};
    ck_assert_int_eq(fm_safetensors_save(path, a, meta, 3), FM_OK);

    fm_model *b = tiny_model(2);
    void *sa = state_of(a);
    ck_assert(!model_has_state(b, sa));
    fm_meta *md = NULL;
    ck_assert_msg(fm_safetensors_load(path, b, &md) == FM_OK, "%s", fm_error_message());
    ck_assert(model_has_state(b, sa));
    ck_assert_int_eq(fm_model_find(b, "bn.num_batches_tracked")->i64[0], 1001);
    ck_assert_str_eq(fm_meta_get(md, "format"), "pt");
    ck_assert_str_eq(fm_meta_get(md, "plugin"), "mlp");
    ck_assert_str_eq(fm_meta_get(md, "epoch"), "7");
    ck_assert_ptr_null(fm_meta_get(md, "missing"));
    ck_assert_int_eq(fm_meta_count(md), 3);
    ck_assert_str_eq(fm_meta_key(md, 0), "format");
    fm_meta_free(md);

    fm_meta *only = NULL;
    ck_assert_int_eq(fm_safetensors_read_meta(path, &only), FM_OK);
    ck_assert_str_eq(fm_meta_value(only, 1), "mlp");
    fm_meta_free(only);

    /* Saving again gives the same bytes (checkpoints are reproducible). */
    const char *again = in_dir("m2.safetensors");
    ck_assert_int_eq(fm_safetensors_save(again, b, meta, 3), FM_OK);
    size_t l1, l2;
    char *d1 = read_file(path, &l1), *d2 = read_file(again, &l2);
    ck_assert_uint_eq(l1, l2);
    ck_assert(memcmp(d1, d2, l1) == 0);
    free(d1);
    free(d2);
    free(sa);
    fm_model_free(a);
    fm_model_free(b);
}
END_TEST

START_TEST(test_st_header_layout)
{
    const char *path = in_dir("h.safetensors");
    fm_model *m = tiny_model(1);
    ck_assert_int_eq(fm_safetensors_save(path, m, NULL, 0), FM_OK);
    size_t len;
    char *data = read_file(path, &len);
    uint64_t hlen;
    memcpy(&hlen, data, 8);
    ck_assert_uint_eq(hlen % 8, 0);
    /* 12 + 3 + 3 floats and one int64, packed. */
    ck_assert_uint_eq(len, 8 + hlen + 18 * 4 + 8);
    char *header = strndup(data + 8, hlen);
    ck_assert_int_eq(header[0], '{');
    size_t end = hlen;
    while (end > 0 && header[end - 1] == ' ')
        end--;
    ck_assert_int_eq(header[end - 1], '}');
    ck_assert_uint_lt(hlen - end, 8);
    ck_assert_msg(strstr(header, "\"__metadata__\":{\"format\":\"pt\"}") != NULL, "%s", header);
    ck_assert_msg(strstr(header, "\"fc1.weight\":{\"dtype\":\"F32\",\"shape\":[3,4],"
                                 "\"data_offsets\":[0,48]}") != NULL,
                  "%s", header);
    ck_assert_msg(strstr(header, "\"bn.num_batches_tracked\":{\"dtype\":\"I64\",\"shape\":[],"
                                 "\"data_offsets\":[72,80]}") != NULL,
                  "%s", header);
    /* The data: fc1.weight first, num_batches_tracked last, little-endian. */
    const fm_tensor *w = fm_model_find(m, "fc1.weight");
    ck_assert(memcmp(data + 8 + hlen, w->data, 48) == 0);
    int64_t nbt;
    memcpy(&nbt, data + 8 + hlen + 72, 8);
    ck_assert_int_eq(nbt, 1001);
    free(header);
    free(data);
    fm_model_free(m);
}
END_TEST

START_TEST(test_st_accepts_shape_one_for_scalar)
{
    const char *path = in_dir("one.safetensors");
    write_tiny_header(path, "bn.num_batches_tracked",
                      "{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[72,80]}", NULL);
    fm_model *m = tiny_model(1);
    ck_assert_msg(fm_safetensors_load(path, m, NULL) == FM_OK, "%s", fm_error_message());
    int64_t want;
    unsigned char bytes[8];
    for (int i = 0; i < 8; i++)
        bytes[i] = (unsigned char)((72 + i) * 7);
    memcpy(&want, bytes, 8);
    ck_assert_int_eq(fm_model_find(m, "bn.num_batches_tracked")->i64[0], want);
    fm_model_free(m);
}
END_TEST

START_TEST(test_st_refuses_truncated)
{
    const char *path = in_dir("t.safetensors");
    fm_model *m = tiny_model(1);
    ck_assert_int_eq(fm_safetensors_save(path, m, NULL, 0), FM_OK);
    fm_model_free(m);
    size_t len;
    char *data = read_file(path, &len);
    const char *cut = in_dir("cut.safetensors");
    fm_test_write_file(cut, data, len - 4);
    REFUSED(cut, FM_ERR_FORMAT, "bn.num_batches_tracked", "not inside the data section");
    fm_test_write_file(cut, data, 5);
    REFUSED(cut, FM_ERR_FORMAT, "too short");
    fm_test_write_file(cut, data, 40);
    REFUSED(cut, FM_ERR_FORMAT, "header length");
    free(data);
}
END_TEST

START_TEST(test_st_refuses_header_too_long)
{
    const char *path = in_dir("long.safetensors");
    unsigned char buf[64] = {0};
    uint64_t n = 1000;
    memcpy(buf, &n, 8);
    memcpy(buf + 8, "{}", 2);
    fm_test_write_file(path, buf, sizeof buf);
    REFUSED(path, FM_ERR_FORMAT, "header length 1000");
    n = UINT64_MAX;
    memcpy(buf, &n, 8);
    fm_test_write_file(path, buf, sizeof buf);
    REFUSED(path, FM_ERR_FORMAT, "header length");
}
END_TEST

START_TEST(test_st_refuses_bad_json)
{
    const char *path = in_dir("j.safetensors");
    write_st(path, "{\"a\": [1, 2", NULL, 0);
    REFUSED(path, FM_ERR_FORMAT, "not valid JSON");
    write_st(path, "[1, 2]  ", NULL, 0);
    REFUSED(path, FM_ERR_FORMAT, "not a JSON object");
    write_st(path, "{\"__metadata__\":{\"epoch\":7}}", NULL, 0);
    REFUSED(path, FM_ERR_FORMAT, "epoch", "not a string");
    write_tiny_header(path, NULL, NULL,
                      "\"fc1.bias\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[48,60]}");
    REFUSED(path, FM_ERR_FORMAT, "not valid JSON");  /* duplicate key */
    /* Not a safetensors file at all. */
    fm_test_write_file(path, "PK\3\4 this is a zip file, really........", 40);
    REFUSED(path, FM_ERR_FORMAT, "header length");
}
END_TEST

START_TEST(test_st_refuses_wrong_dtype)
{
    const char *path = in_dir("d.safetensors");
    write_tiny_header(path, "fc1.bias", "{\"dtype\":\"F64\",\"shape\":[3],\"data_offsets\":[48,60]}",
                      NULL);
    REFUSED(path, FM_ERR_FORMAT, "fc1.bias", "F64", "reads F32, BF16 and F16");
    /* A known dtype, but not the model's (the layout moved to fit). */
    const char *descs[4] = {tiny_descs[0], tiny_descs[1],
                            "{\"dtype\":\"I64\",\"shape\":[3],\"data_offsets\":[60,84]}",
                            "{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[84,92]}"};
    write_tiny_entries(path, descs, NULL, 92);
    REFUSED(path, FM_ERR_FORMAT, "bn.running_mean", "dtype I64", "expects F32");
}
END_TEST

/* A hand-built file of PyTorch's 16-bit dtypes: fc1.weight as BF16,
 * fc1.bias as F16, beside an F32 and an I64 tensor; each F32 tensor of the
 * model gets the widened values, the I64 one its own. */
START_TEST(test_st_loads_bf16_and_f16)
{
    const char *path = in_dir("half.safetensors");
    const char *descs[4] = {
        "{\"dtype\":\"BF16\",\"shape\":[3,4],\"data_offsets\":[0,24]}",
        "{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[24,30]}",
        "{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[30,42]}",
        "{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[42,50]}",
    };
    const uint16_t w[12] = {0x3F80, 0xBFC0, 0x0001, 0x8000, 0x7F7F, 0xFF80,
                            0x3EAA, 0x4049, 0xC2F7, 0x0080, 0x7FC0, 0x3C23};
    const uint16_t b[3] = {0x3C00, 0x0001, 0xFBFF};  /* 1, 2^-24, -65504 */
    const float rm[3] = {0.25f, -3.5f, 1e-3f};
    const int64_t nbt = 123456789012345;
    unsigned char data[50];
    memcpy(data, w, 24);
    memcpy(data + 24, b, 6);
    memcpy(data + 30, rm, 12);
    memcpy(data + 42, &nbt, 8);
    char header[1024] = "{\"__metadata__\":{\"format\":\"pt\"}";
    for (int i = 0; i < 4; i++) {
        strcat(header, ",\"");
        strcat(header, tiny_names[i]);
        strcat(header, "\":");
        strcat(header, descs[i]);
    }
    strcat(header, "}");
    write_st(path, header, data, sizeof data);

    fm_model *m = tiny_model(2);
    ck_assert_msg(fm_safetensors_load(path, m, NULL) == FM_OK, "%s", fm_error_message());
    const fm_tensor *weight = fm_model_find(m, "fc1.weight"), *bias = fm_model_find(m, "fc1.bias");
    for (int i = 0; i < 12; i++)
        ck_assert_msg(fm_test_bits_of(weight->data[i]) == (uint32_t)w[i] << 16, "weight[%d] = %08x", i,
                      fm_test_bits_of(weight->data[i]));
    ck_assert(bias->data[0] == 1.0f);
    ck_assert(bias->data[1] == ldexpf(1.0f, -24));
    ck_assert(bias->data[2] == -65504.0f);
    ck_assert(memcmp(fm_model_find(m, "bn.running_mean")->data, rm, sizeof rm) == 0);
    ck_assert(fm_model_find(m, "bn.num_batches_tracked")->i64[0] == nbt);
    fm_model_free(m);
}
END_TEST

/* A BF16 save: the header says BF16 (I64 stays I64), the data is
 * fm_bf16_from_f32 of each weight, the metadata as given, and loading it
 * back gives the rounded weights. */
START_TEST(test_st_save_bf16)
{
    const char *path = in_dir("bf16.safetensors");
    fm_model *a = tiny_model(1);
    fm_model_find(a, "fc1.weight")->data[0] = 1.00390625f;  /* a tie: rounds to even, 1.0 */
    fm_model_find(a, "fc1.weight")->data[1] = 1.01171875f;  /* a tie: rounds up */
    const char *meta[] = {"plugin", "mlp", "dtype", "bf16"};
    ck_assert_int_eq(fm_safetensors_save_as(path, a, meta, 2, FM_FLOAT_BF16), FM_OK);
    ck_assert(!fm_test_tmp_left(path));
    size_t len;
    char *file = read_file(path, &len);
    uint64_t hlen;
    memcpy(&hlen, file, 8);
    ck_assert_uint_eq(hlen % 8, 0);
    ck_assert_uint_eq(len, 8 + hlen + 18 * 2 + 8);
    char *header = strndup(file + 8, hlen);
    ck_assert_msg(strstr(header, "\"fc1.weight\":{\"dtype\":\"BF16\",\"shape\":[3,4],"
                                 "\"data_offsets\":[0,24]}") != NULL, "%s", header);
    ck_assert_msg(strstr(header, "\"bn.running_mean\":{\"dtype\":\"BF16\",\"shape\":[3],"
                                 "\"data_offsets\":[30,36]}") != NULL, "%s", header);
    ck_assert_msg(strstr(header, "\"bn.num_batches_tracked\":{\"dtype\":\"I64\",\"shape\":[],"
                                 "\"data_offsets\":[36,44]}") != NULL, "%s", header);
    ck_assert_msg(strstr(header, "\"__metadata__\":{\"format\":\"pt\",\"plugin\":\"mlp\","
                                 "\"dtype\":\"bf16\"}") != NULL, "%s", header);
    free(header);

    const char *data = file + 8 + hlen;
    size_t at = 0;
    fm_model *b = tiny_model(2);
    ck_assert_msg(fm_safetensors_load(path, b, NULL) == FM_OK, "%s", fm_error_message());
    for (int i = 0; i < fm_model_count(a); i++) {
        const fm_tensor *t = fm_model_entry_at(a, i).tensor, *u = fm_model_entry_at(b, i).tensor;
        if (t->dtype == FM_I64) {
            ck_assert(memcmp(data + at, t->i64, 8) == 0 && u->i64[0] == t->i64[0]);
            at += 8;
            continue;
        }
        for (int64_t k = 0; k < t->numel; k++, at += 2) {
            uint16_t h;
            memcpy(&h, data + at, 2);
            ck_assert_msg(h == fm_bf16_from_f32(t->data[k]), "%s[%lld]: %04x, want %04x",
                          fm_model_entry_at(a, i).name, (long long)k, h,
                          fm_bf16_from_f32(t->data[k]));
            ck_assert_uint_eq(fm_test_bits_of(u->data[k]), (uint32_t)h << 16);
        }
    }
    ck_assert_uint_eq(at, 44);
    ck_assert(fm_model_find(b, "fc1.weight")->data[0] == 1.0f);
    ck_assert(fm_model_find(b, "fc1.weight")->data[1] == 1.015625f);
    free(file);
    fm_model_free(a);
    fm_model_free(b);
}
END_TEST

/* An F16 save: the header says F16 (I64 stays I64), each weight is
 * fm_f16_from_f32 of it, and loading the file back gives those values. */
START_TEST(test_st_save_f16)
{
    const char *path = in_dir("f16.safetensors");
    fm_model *a = tiny_model(1);
    ck_assert_int_eq(fm_safetensors_save_as(path, a, NULL, 0, FM_FLOAT_F16), FM_OK);
    size_t len;
    char *file = read_file(path, &len);
    uint64_t hlen;
    memcpy(&hlen, file, 8);
    ck_assert_uint_eq(len, 8 + hlen + 18 * 2 + 8);
    char *header = strndup(file + 8, hlen);
    ck_assert_msg(strstr(header, "\"fc1.weight\":{\"dtype\":\"F16\",\"shape\":[3,4],"
                                 "\"data_offsets\":[0,24]}") != NULL, "%s", header);
    ck_assert_msg(strstr(header, "\"bn.num_batches_tracked\":{\"dtype\":\"I64\"") != NULL, "%s",
                  header);
    free(header);
    fm_model *b = tiny_model(2);
    ck_assert_msg(fm_safetensors_load(path, b, NULL) == FM_OK, "%s", fm_error_message());
    const char *data = file + 8 + hlen;
    size_t at = 0;
    for (int i = 0; i < fm_model_count(a); i++) {
        const fm_tensor *t = fm_model_entry_at(a, i).tensor, *u = fm_model_entry_at(b, i).tensor;
        if (t->dtype == FM_I64) {
            at += 8;
            continue;
        }
        for (int64_t k = 0; k < t->numel; k++, at += 2) {
            uint16_t h;
            memcpy(&h, data + at, 2);
            ck_assert_uint_eq(h, fm_f16_from_f32(t->data[k]));
            ck_assert(u->data[k] == fm_f32_from_f16(h));
        }
    }
    free(file);
    fm_model_free(a);
    fm_model_free(b);
}
END_TEST

/* A 16-bit tensor is sized by its own dtype: BF16 given F32's byte count
 * is refused naming the tensor, the dtype and both sizes; an integer
 * buffer is read only as I64. */
START_TEST(test_st_refuses_bad_bf16)
{
    const char *path = in_dir("badbf16.safetensors");
    write_tiny_header(path, "fc1.weight", "{\"dtype\":\"BF16\",\"shape\":[3,4],\"data_offsets\":[0,48]}",
                      NULL);
    REFUSED(path, FM_ERR_FORMAT, "'fc1.weight'", "BF16", "needs 24 bytes", "span 48",
            "safetensors' save_file");
    write_tiny_header(path, "fc1.bias", "{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[48,60]}",
                      NULL);
    REFUSED(path, FM_ERR_FORMAT, "'fc1.bias'", "F16", "needs 6 bytes", "span 12");
    /* Sized right, but the rest no longer tiles the data section. */
    write_tiny_header(path, "fc1.weight", "{\"dtype\":\"BF16\",\"shape\":[3,4],\"data_offsets\":[0,24]}",
                      NULL);
    REFUSED(path, FM_ERR_FORMAT, "fc1.bias", "starts at byte 48", "gap");
    const char *descs[4] = {tiny_descs[0], tiny_descs[1], tiny_descs[2],
                            "{\"dtype\":\"BF16\",\"shape\":[],\"data_offsets\":[72,74]}"};
    write_tiny_entries(path, descs, NULL, 74);
    REFUSED(path, FM_ERR_FORMAT, "'bn.num_batches_tracked'", "dtype BF16", "expects I64",
            "int64");
}
END_TEST

START_TEST(test_st_refuses_shape_mismatch)
{
    const char *path = in_dir("s.safetensors");
    write_tiny_header(path, "fc1.weight", "{\"dtype\":\"F32\",\"shape\":[4,3],\"data_offsets\":[0,48]}",
                      NULL);
    REFUSED(path, FM_ERR_FORMAT, "tensor 'fc1.weight' has shape [4, 3], the model expects [3, 4]");
    write_tiny_header(path, "fc1.weight", "{\"dtype\":\"F32\",\"shape\":[12],\"data_offsets\":[0,48]}",
                      NULL);
    REFUSED(path, FM_ERR_FORMAT, "[12]", "[3, 4]");
    write_tiny_header(path, "fc1.weight", "{\"dtype\":\"F32\",\"shape\":[3,-4],\"data_offsets\":[0,48]}",
                      NULL);
    REFUSED(path, FM_ERR_FORMAT, "fc1.weight", "non-negative");
    write_tiny_header(path, "fc1.weight", "{\"dtype\":\"F32\",\"shape\":[3,4.0],\"data_offsets\":[0,48]}",
                      NULL);
    REFUSED(path, FM_ERR_FORMAT, "fc1.weight", "non-negative integer");
}
END_TEST

START_TEST(test_st_refuses_missing_and_extra)
{
    const char *path = in_dir("me.safetensors");
    const char *descs[4] = {tiny_descs[0], tiny_descs[1], tiny_descs[2], ""};
    write_tiny_entries(path, descs, NULL, 72);
    REFUSED(path, FM_ERR_FORMAT, "'bn.num_batches_tracked'", "missing");
    write_tiny_entries(path, tiny_descs,
                       "\"fc2.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[80,88]}",
                       88);
    REFUSED(path, FM_ERR_FORMAT, "'fc2.bias'", "not in the model");
}
END_TEST

START_TEST(test_st_refuses_bad_offsets)
{
    const char *path = in_dir("o.safetensors");
    write_tiny_header(path, "fc1.bias", "{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[76,88]}",
                      NULL);
    REFUSED(path, FM_ERR_FORMAT, "fc1.bias", "not inside the data section");
    write_tiny_header(path, "fc1.bias", "{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[60,48]}",
                      NULL);
    REFUSED(path, FM_ERR_FORMAT, "fc1.bias", "[60, 48]");
    write_tiny_header(path, "fc1.bias", "{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[-4,8]}",
                      NULL);
    REFUSED(path, FM_ERR_FORMAT, "fc1.bias", "data_offsets");
    write_tiny_header(path, "fc1.bias", "{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[48]}",
                      NULL);
    REFUSED(path, FM_ERR_FORMAT, "fc1.bias", "two integers");
    /* Offsets near 2^63 and shapes whose byte count overflows 64 bits. */
    write_tiny_header(path, "fc1.bias",
                      "{\"dtype\":\"F32\",\"shape\":[3],"
                      "\"data_offsets\":[9223372036854775800,9223372036854775807]}",
                      NULL);
    REFUSED(path, FM_ERR_FORMAT, "fc1.bias", "not inside the data section");
    write_tiny_header(path, "fc1.bias",
                      "{\"dtype\":\"F32\",\"shape\":[4611686018427387904],\"data_offsets\":[0,0]}",
                      NULL);
    REFUSED(path, FM_ERR_FORMAT, "fc1.bias", "overflows");
    write_tiny_header(path, "fc1.bias",
                      "{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],"
                      "\"data_offsets\":[0,0]}",
                      NULL);
    REFUSED(path, FM_ERR_FORMAT, "fc1.bias", "overflows");
    write_tiny_header(path, "fc1.bias",
                      "{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,18446744073709551615]}",
                      NULL);
    REFUSED(path, FM_ERR_FORMAT, "JSON");  /* beyond jansson's integers */
}
END_TEST

START_TEST(test_st_refuses_size_mismatch)
{
    const char *path = in_dir("n.safetensors");
    write_tiny_header(path, "fc1.bias", "{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[48,64]}",
                      NULL);
    REFUSED(path, FM_ERR_FORMAT, "fc1.bias", "needs 12 bytes", "span 16");
}
END_TEST

/* The last tensor is wrong: nothing of the earlier, valid ones may have
 * been copied. */
/* The reference implementation's layout rules: the tensors' byte ranges,
 * sorted, tile the data section exactly. */
START_TEST(test_st_refuses_gaps_overlaps_trailing)
{
    const char *path = in_dir("layout.safetensors");
    write_tiny_header(path, "fc1.bias", "", NULL);
    REFUSED(path, FM_ERR_FORMAT, "bn.running_mean", "starts at byte 60", "gap");
    write_tiny_header(path, "fc1.bias", "{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[40,52]}",
                      NULL);
    REFUSED(path, FM_ERR_FORMAT, "fc1.bias", "starts at byte 40", "overlapping");
    write_tiny_entries(path, tiny_descs, NULL, 88);
    REFUSED(path, FM_ERR_FORMAT, "8 bytes follow the last tensor");
    /* A zero-size tensor anywhere in the order is no gap. */
    write_tiny_entries(path, tiny_descs,
                       "\"empty\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[48,48]}", 80);
    REFUSED(path, FM_ERR_FORMAT, "'empty'", "not in the model");
}
END_TEST

/* A header whose object count its length cannot hold is refused before
 * it is parsed (millions of keys would cost gigabytes of JSON objects). */
START_TEST(test_st_refuses_header_of_many_objects)
{
    const char *path = in_dir("many.safetensors");
    size_t n = 20000, len = 0;
    char *header = malloc(16 * n + 16);
    len += (size_t)sprintf(header + len, "{");
    for (size_t i = 0; i < n; i++) len += (size_t)sprintf(header + len, "%s\"%zx\":{}", i ? "," : "", i % 4096);
    sprintf(header + len, "}");
    write_st(path, header, NULL, 0);
    free(header);
    REFUSED(path, FM_ERR_FORMAT, "JSON objects", "not a safetensors file");
}
END_TEST

/* A FIFO given as a checkpoint is refused at once, not waited on. */
START_TEST(test_st_refuses_fifo)
{
    const char *path = in_dir("fifo.safetensors");
    ck_assert_int_eq(mkfifo(path, 0600), 0);
    double t0 = fm_now();
    REFUSED(path, FM_ERR_IO, "not a regular file");
    ck_assert_double_lt(fm_now() - t0, 5.0);
}
END_TEST

START_TEST(test_st_refused_load_leaves_model)
{
    const char *path = in_dir("late.safetensors");
    const char *descs[4] = {tiny_descs[0], tiny_descs[1], tiny_descs[2],
                            "{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[72,88]}"};
    write_tiny_entries(path, descs, NULL, 88);
    REFUSED(path, FM_ERR_FORMAT, "bn.num_batches_tracked", "[2]", "[1]");
    REFUSED(in_dir("does-not-exist.safetensors"), FM_ERR_IO, "does-not-exist");
}
END_TEST

/* Random corruption of a valid file: every load either succeeds or is
 * refused cleanly, never crashes, and a refusal leaves the model alone. */
START_TEST(test_st_mutations)
{
    const char *path = in_dir("fz.safetensors");
    fm_model *src = tiny_model(1);
    fm_float_dtype as = _i == 0 ? FM_FLOAT_F32 : FM_FLOAT_BF16;
    size_t data_len = as == FM_FLOAT_F32 ? 80 : 44;
    ck_assert_int_eq(fm_safetensors_save_as(path, src, NULL, 0, as), FM_OK);
    fm_model_free(src);
    size_t len;
    char *orig = read_file(path, &len);
    char *buf = malloc(len);
    fm_rng rng;
    fm_rng_seed(&rng, 99, FM_RNG_TEST);
    const char *mut = in_dir("mut.safetensors");
    int refused = 0;
    for (int iter = 0; iter < 300; iter++) {
        memcpy(buf, orig, len);
        int flips = 1 + (int)fm_rng_below(&rng, 4);
        for (int k = 0; k < flips; k++) {
            /* Mostly the header, where the structure is. */
            size_t at = fm_rng_below(&rng, 4) ? fm_rng_below(&rng, (uint32_t)(len - data_len))
                                              : fm_rng_below(&rng, (uint32_t)len);
            buf[at] = (char)fm_rng_u32(&rng);
        }
        size_t n = fm_rng_below(&rng, 5) == 0 ? fm_rng_below(&rng, (uint32_t)len) : len;
        fm_test_write_file(mut, buf, n);
        fm_model *m = tiny_model(5);
        void *before = state_of(m);
        if (fm_safetensors_load(mut, m, NULL) != FM_OK) {
            refused++;
            ck_assert(model_has_state(m, before));
            ck_assert(strstr(fm_error_message(), mut) != NULL);
        }
        free(before);
        fm_model_free(m);
    }
    ck_assert_int_gt(refused, 100);
    free(buf);
    free(orig);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("io");
    TCase *tc = tcase_create("atomic");
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_add_test(tc, test_write_atomic_replaces);
    tcase_add_test(tc, test_write_atomic_failure_keeps_old);
    tcase_add_test(tc, test_write_atomic_unwritable_dir);
    tcase_add_test(tc, test_atomic_stream_abort_and_commit);
    tcase_add_test(tc, test_mkdirs);
    tcase_add_test(tc, test_read_all_limit);
    tcase_add_test(tc, test_csv_field_quoting);
    suite_add_tcase(s, tc);

    tc = tcase_create("half");
    tcase_add_test(tc, test_bf16_round_trip_exhaustive);
    tcase_add_test(tc, test_f16_exhaustive);
    tcase_add_test(tc, test_bf16_rounding_random);
    tcase_add_test(tc, test_f16_rounding);
    tcase_add_test(tc, test_float_dtype_names);
    suite_add_tcase(s, tc);

    tc = tcase_create("safetensors");
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_add_test(tc, test_st_round_trip);
    tcase_add_test(tc, test_st_header_layout);
    tcase_add_test(tc, test_st_accepts_shape_one_for_scalar);
    tcase_add_test(tc, test_st_refuses_truncated);
    tcase_add_test(tc, test_st_refuses_header_too_long);
    tcase_add_test(tc, test_st_refuses_bad_json);
    tcase_add_test(tc, test_st_refuses_wrong_dtype);
    tcase_add_test(tc, test_st_refuses_shape_mismatch);
    tcase_add_test(tc, test_st_refuses_missing_and_extra);
    tcase_add_test(tc, test_st_refuses_bad_offsets);
    tcase_add_test(tc, test_st_refuses_gaps_overlaps_trailing);
    tcase_add_test(tc, test_st_refuses_header_of_many_objects);
    tcase_add_test(tc, test_st_refuses_fifo);
    tcase_add_test(tc, test_st_refuses_size_mismatch);
    tcase_add_test(tc, test_st_refused_load_leaves_model);
    tcase_add_test(tc, test_st_loads_bf16_and_f16);
    tcase_add_test(tc, test_st_save_bf16);
    tcase_add_test(tc, test_st_save_f16);
    tcase_add_test(tc, test_st_refuses_bad_bf16);
    tcase_add_loop_test(tc, test_st_mutations, 0, 2);  /* an F32 file, a BF16 one */
    suite_add_tcase(s, tc);
    return fm_test_run(s);
}
