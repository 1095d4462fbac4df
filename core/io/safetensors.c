/* safetensors.c — checkpoints in the safetensors format, and fm_meta.
 *
 * Layout: u64 little-endian header length N, N bytes of JSON
 * {"__metadata__": {str: str}, "<name>": {"dtype", "shape", "data_offsets"}},
 * then the data section; offsets are relative to its start.  The reader
 * assumes nothing about a file it is given: every length, offset and shape is
 * checked before use, and the model is written only once all checks passed.
 * It follows the reference implementation's rules: the tensors' byte ranges,
 * in order, tile the data section exactly (no gap, no overlap, nothing
 * after the last); and it bounds what a header may cost before parsing it.
 * A float32 tensor may be stored as BF16 or F16: it is widened on load, and
 * written as BF16 or F16 when the caller asks (fm_safetensors_save_as).
 */
#include "fm/fm_io.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fm/fm_tensor.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "safetensors data is little-endian; this code copies it as is");

/* The reference implementation accepts headers up to 100 MB; parsing one
 * that size can cost a gigabyte of JSON objects.  A tensor's entry takes at
 * least ST_MIN_ENTRY bytes ({"dtype":"F32","shape":[],"data_offsets":[0,0]}
 * and a key), so 16 MB still describes over 300,000 tensors. */
#define ST_MAX_HEADER (16u * 1000u * 1000u)
#define ST_MIN_ENTRY 48u
#define ST_MAX_DIMS 16

/* ---- fm_meta ---------------------------------------------------------------- */

struct fm_meta {
    int n;
    char **keys;
    char **values;
};

static fm_meta *meta_new(void)
{
    return fm_xcalloc(1, sizeof(fm_meta));
}

/* false when out of memory (the header's size bounds how often). */
static bool meta_add(fm_meta *meta, const char *key, const char *value)
{
    char **keys = realloc(meta->keys, (size_t)(meta->n + 1) * sizeof(char *));
    if (keys) meta->keys = keys;
    char **values = keys ? realloc(meta->values, (size_t)(meta->n + 1) * sizeof(char *)) : NULL;
    if (values) meta->values = values;
    char *k = values ? strdup(key) : NULL, *v = k ? strdup(value) : NULL;
    if (!v) {
        free(k);
        return false;
    }
    meta->keys[meta->n] = k;
    meta->values[meta->n] = v;
    meta->n++;
    return true;
}

const char *fm_meta_get(const fm_meta *meta, const char *key)
{
    if (meta == NULL || key == NULL)
        return NULL;
    for (int i = 0; i < meta->n; i++)
        if (strcmp(meta->keys[i], key) == 0)
            return meta->values[i];
    return NULL;
}

int fm_meta_count(const fm_meta *meta)
{
    return meta ? meta->n : 0;
}

const char *fm_meta_key(const fm_meta *meta, int i)
{
    FM_ASSERT(meta != NULL && i >= 0 && i < meta->n);
    return meta->keys[i];
}

const char *fm_meta_value(const fm_meta *meta, int i)
{
    FM_ASSERT(meta != NULL && i >= 0 && i < meta->n);
    return meta->values[i];
}

void fm_meta_free(fm_meta *meta)
{
    if (meta == NULL)
        return;
    for (int i = 0; i < meta->n; i++) {
        free(meta->keys[i]);
        free(meta->values[i]);
    }
    free(meta->keys);
    free(meta->values);
    free(meta);
}

/* ---- shared helpers ------------------------------------------------------- */

/* The dtypes of a file: the model's own (F32, I64), and the 16-bit floats of
 * PyTorch's model.bfloat16() and model.half() state dicts, which stand for
 * F32 tensors, widened on load; fmhost writes BF16 or F16 on request. */
typedef enum st_dtype { ST_F32, ST_I64, ST_BF16, ST_F16 } st_dtype;

static const struct {
    const char *name;
    size_t size;
} st_dtypes[] = {
    [ST_F32] = {"F32", sizeof(float)},
    [ST_I64] = {"I64", sizeof(int64_t)},
    [ST_BF16] = {"BF16", sizeof(uint16_t)},
    [ST_F16] = {"F16", sizeof(uint16_t)},
};

static st_dtype st_dtype_of(fm_dtype d)
{
    return d == FM_I64 ? ST_I64 : ST_F32;
}

static const char *dtype_name(fm_dtype d)
{
    return st_dtypes[st_dtype_of(d)].name;
}

static size_t dtype_size(fm_dtype d)
{
    return st_dtypes[st_dtype_of(d)].size;
}

/* What a model tensor is stored as when floats go to the file as `as`. */
static st_dtype st_dtype_saved(fm_dtype d, fm_float_dtype as)
{
    if (d == FM_I64) return ST_I64;
    return as == FM_FLOAT_BF16 ? ST_BF16 : as == FM_FLOAT_F16 ? ST_F16 : ST_F32;
}

static bool is_num_batches_tracked(const char *name)
{
    static const char suffix[] = "num_batches_tracked";
    size_t n = strlen(name), k = sizeof suffix - 1;
    return n >= k && strcmp(name + n - k, suffix) == 0;
}

static void shape_str(const int64_t *shape, int ndim, char *buf, size_t len)
{
    size_t used = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && used < len; i++)
        used += (size_t)snprintf(buf + used, len - used, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (used < len)
        snprintf(buf + used, len - used, "]");
}

/* ---- writer ------------------------------------------------------------------ */

/* One tensor's data as `as`: BF16 and F16 converted a block at a time, so
 * that saving costs no allocation. */
static bool write_data(FILE *f, const fm_tensor *t, st_dtype as)
{
    if (as != ST_BF16 && as != ST_F16) {
        size_t bytes = (size_t)t->numel * st_dtypes[as].size;
        const void *src = t->dtype == FM_I64 ? (const void *)t->i64 : (const void *)t->data;
        return fwrite(src, 1, bytes, f) == bytes;
    }
    enum { BLOCK = 2048 };
    uint16_t block[BLOCK];
    for (size_t i = 0, n; i < (size_t)t->numel; i += n) {
        n = (size_t)t->numel - i < BLOCK ? (size_t)t->numel - i : BLOCK;
        if (as == ST_BF16)
            fm_bf16_from_f32_n(block, t->data + i, n);
        else
            fm_f16_from_f32_n(block, t->data + i, n);
        if (fwrite(block, sizeof block[0], n, f) != n) return false;
    }
    return true;
}

fm_status fm_safetensors_save(const char *path, const fm_model *m, const char *const *meta,
                              int n_meta)
{
    return fm_safetensors_save_as(path, m, meta, n_meta, FM_FLOAT_F32);
}

fm_status fm_safetensors_save_as(const char *path, const fm_model *m, const char *const *meta,
                                 int n_meta, fm_float_dtype as)
{
    FM_ASSERT(path != NULL && m != NULL && n_meta >= 0 && (n_meta == 0 || meta != NULL));
    FM_ASSERT(as == FM_FLOAT_F32 || as == FM_FLOAT_BF16 || as == FM_FLOAT_F16);
    json_t *root = json_object();
    json_t *md = json_object();
    json_object_set_new(md, "format", json_string("pt"));
    for (int i = 0; i < n_meta; i++) {
        const char *k = meta[2 * i], *v = meta[2 * i + 1];
        FM_ASSERT(k != NULL && v != NULL);
        if (strcmp(k, "format") != 0)
            json_object_set_new(md, k, json_string(v));
    }
    json_object_set_new(root, "__metadata__", md);

    int count = fm_model_count(m);
    uint64_t offset = 0;
    for (int i = 0; i < count; i++) {
        fm_model_entry e = fm_model_entry_at(m, i);
        const fm_tensor *t = e.tensor;
        json_t *shape = json_array();
        bool scalar = t->dtype == FM_I64 && t->numel == 1 && is_num_batches_tracked(e.name);
        if (!scalar)
            for (int d = 0; d < t->ndim; d++)
                json_array_append_new(shape, json_integer(t->shape[d]));
        st_dtype sd = st_dtype_saved(t->dtype, as);
        uint64_t bytes = (uint64_t)t->numel * st_dtypes[sd].size;
        json_t *desc = json_object();
        json_object_set_new(desc, "dtype", json_string(st_dtypes[sd].name));
        json_object_set_new(desc, "shape", shape);
        json_object_set_new(desc, "data_offsets",
                            json_pack("[II]", (json_int_t)offset, (json_int_t)(offset + bytes)));
        json_object_set_new(root, e.name, desc);
        offset += bytes;
    }
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    FM_ASSERT(text != NULL);

    size_t text_len = strlen(text);
    size_t header_len = (text_len + 7) / 8 * 8;
    char tmp[PATH_MAX + 64];
    FILE *f = fm_atomic_open(path, tmp, sizeof tmp);
    if (f == NULL) {
        free(text);
        return fm_error_status();
    }
    uint64_t n_le = header_len;  /* the host is little-endian (asserted above) */
    bool ok = fwrite(&n_le, 8, 1, f) == 1 && fwrite(text, 1, text_len, f) == text_len;
    for (size_t i = text_len; ok && i < header_len; i++)
        ok = fputc(' ', f) != EOF;
    free(text);
    for (int i = 0; ok && i < count; i++) {
        const fm_tensor *t = fm_model_entry_at(m, i).tensor;
        ok = write_data(f, t, st_dtype_saved(t->dtype, as));
    }
    if (!ok) {
        int e = errno ? errno : EIO;
        fm_atomic_abort(f, tmp);
        return fm_error_set(FM_ERR_IO, "cannot write %s: %s", path, strerror(e));
    }
    return fm_atomic_commit(f, tmp, path);
}

/* ---- reader -------------------------------------------------------------------- */

typedef struct st_tensor {
    const char *name;  /* the JSON key; lives as long as the parsed header */
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    uint64_t begin, end;  /* relative to the data section */
} st_tensor;

typedef struct st_file {
    const char *path;
    FILE *f;
    json_t *root;
    uint64_t data_start, data_len;
    st_tensor *tensors;
    int n_tensors;
    fm_meta *meta;
} st_file;

static void st_close(st_file *s)
{
    if (s->f)
        fclose(s->f);
    json_decref(s->root);
    free(s->tensors);
    fm_meta_free(s->meta);
    memset(s, 0, sizeof *s);
}

static fm_status parse_metadata(st_file *s, json_t *md)
{
    if (!json_is_object(md))
        return fm_error_set(FM_ERR_FORMAT, "%s: \"__metadata__\" is not a JSON object", s->path);
    const char *key;
    json_t *value;
    json_object_foreach(md, key, value) {
        if (!json_is_string(value))
            return fm_error_set(FM_ERR_FORMAT,
                                "%s: metadata value for \"%s\" is not a string (safetensors "
                                "metadata maps strings to strings)",
                                s->path, key);
        if (!meta_add(s->meta, key, json_string_value(value)))
            return fm_error_set(FM_ERR_NOMEM, "%s: out of memory reading the metadata", s->path);
    }
    return FM_OK;
}

static fm_status parse_tensor(st_file *s, const char *name, json_t *desc, st_tensor *t)
{
    const char *p = s->path;
    if (!json_is_object(desc))
        return fm_error_set(FM_ERR_FORMAT, "%s: tensor '%s': entry is not a JSON object", p, name);
    t->name = name;

    json_t *dtype = json_object_get(desc, "dtype");
    if (!json_is_string(dtype))
        return fm_error_set(FM_ERR_FORMAT, "%s: tensor '%s': \"dtype\" missing or not a string",
                            p, name);
    const char *ds = json_string_value(dtype);
    size_t known = sizeof st_dtypes / sizeof st_dtypes[0], k = 0;
    while (k < known && strcmp(ds, st_dtypes[k].name) != 0) k++;
    if (k == known)
        return fm_error_set(FM_ERR_FORMAT,
                            "%s: tensor '%s' has dtype \"%.32s\"; fmhost reads F32, BF16 and F16 "
                            "(as float32) and I64",
                            p, name, ds);
    t->dtype = (st_dtype)k;

    json_t *shape = json_object_get(desc, "shape");
    if (!json_is_array(shape))
        return fm_error_set(FM_ERR_FORMAT, "%s: tensor '%s': \"shape\" missing or not an array",
                            p, name);
    size_t ndim = json_array_size(shape);
    if (ndim > ST_MAX_DIMS)
        return fm_error_set(FM_ERR_FORMAT, "%s: tensor '%s' has %zu dimensions (at most %d)", p,
                            name, ndim, ST_MAX_DIMS);
    t->ndim = (int)ndim;
    uint64_t numel = 1;
    for (size_t i = 0; i < ndim; i++) {
        json_t *d = json_array_get(shape, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return fm_error_set(FM_ERR_FORMAT,
                                "%s: tensor '%s': shape entry %zu is not a non-negative integer",
                                p, name, i);
        t->shape[i] = json_integer_value(d);
        if (__builtin_mul_overflow(numel, (uint64_t)t->shape[i], &numel))
            return fm_error_set(FM_ERR_FORMAT, "%s: tensor '%s': shape overflows", p, name);
    }

    json_t *offs = json_object_get(desc, "data_offsets");
    if (!json_is_array(offs) || json_array_size(offs) != 2 ||
        !json_is_integer(json_array_get(offs, 0)) || !json_is_integer(json_array_get(offs, 1)))
        return fm_error_set(FM_ERR_FORMAT,
                            "%s: tensor '%s': \"data_offsets\" is not an array of two integers", p,
                            name);
    json_int_t b = json_integer_value(json_array_get(offs, 0));
    json_int_t e = json_integer_value(json_array_get(offs, 1));
    if (b < 0 || e < b || (uint64_t)e > s->data_len)
        return fm_error_set(FM_ERR_FORMAT,
                            "%s: tensor '%s': data_offsets [%lld, %lld] are not inside the data "
                            "section of %llu bytes",
                            p, name, (long long)b, (long long)e, (unsigned long long)s->data_len);
    t->begin = (uint64_t)b;
    t->end = (uint64_t)e;
    uint64_t bytes;
    char sb[256];
    shape_str(t->shape, t->ndim, sb, sizeof sb);
    if (__builtin_mul_overflow(numel, (uint64_t)st_dtypes[t->dtype].size, &bytes))
        return fm_error_set(FM_ERR_FORMAT, "%s: tensor '%s': shape %s of %s overflows 64 bits", p,
                            name, sb, ds);
    if (bytes != t->end - t->begin) {
        return fm_error_set(FM_ERR_FORMAT,
                            "%s: tensor '%s': shape %s of dtype \"%s\" needs %llu bytes but "
                            "data_offsets span %llu",
                            p, name, sb, st_dtypes[t->dtype].name, (unsigned long long)bytes,
                            (unsigned long long)(t->end - t->begin));
    }
    return FM_OK;
}

/* JSON objects in the header text, braces inside strings not counted: an
 * upper bound on the entries, known before the parser allocates them. */
static size_t header_objects(const char *text, size_t len)
{
    size_t objects = 0;
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (in_string) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '{') {
            objects++;
        }
    }
    return objects;
}

static int offsets_cmp(const void *pa, const void *pb)
{
    const st_tensor *a = *(const st_tensor *const *)pa, *b = *(const st_tensor *const *)pb;
    if (a->begin != b->begin) return a->begin < b->begin ? -1 : 1;
    return a->end < b->end ? -1 : a->end > b->end;
}

/* The tensors' byte ranges, sorted, must tile the data section: each starts
 * where the previous one ended, the first at 0, the last ends the file. */
static fm_status check_layout(st_file *s)
{
    const st_tensor **order = malloc(((size_t)s->n_tensors + 1) * sizeof *order);
    if (!order) return fm_error_set(FM_ERR_NOMEM, "%s: out of memory checking offsets", s->path);
    for (int i = 0; i < s->n_tensors; i++) order[i] = &s->tensors[i];
    qsort(order, (size_t)s->n_tensors, sizeof *order, offsets_cmp);
    uint64_t at = 0;
    fm_status st = FM_OK;
    for (int i = 0; i < s->n_tensors && st == FM_OK; i++) {
        if (order[i]->begin != at)
            st = fm_error_set(FM_ERR_FORMAT,
                              "%s: tensor '%s' starts at byte %llu of the data section, %s "
                              "(tensors must be packed without gaps or overlaps)",
                              s->path, order[i]->name, (unsigned long long)order[i]->begin,
                              order[i]->begin > at ? "leaving a gap after the tensor before it"
                                                   : "overlapping the tensor before it");
        at = order[i]->end;
    }
    if (st == FM_OK && at != s->data_len)
        st = fm_error_set(FM_ERR_FORMAT,
                          "%s: %llu bytes follow the last tensor (the data section must end "
                          "where the last tensor does): truncated or corrupt file",
                          s->path, (unsigned long long)(s->data_len - at));
    free(order);
    return st;
}

/* Opens path and validates its header; on success s holds the open file, the
 * tensors and the metadata. */
static fm_status st_open_checked(st_file *s, const char *path)
{
    memset(s, 0, sizeof *s);
    s->path = path;
    s->meta = meta_new();
    /* Not blocking, and checked to be a regular file before any read: a
     * FIFO or a device given as a checkpoint is refused, not waited on. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) return fm_error_set(FM_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return fm_error_set(FM_ERR_IO, "cannot read %s: not a regular file (give the path of a "
                            "checkpoint file)", path);
    }
    s->f = fdopen(fd, "rb");
    if (s->f == NULL) {
        close(fd);
        return fm_error_set(FM_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    }
    uint64_t size = (uint64_t)st.st_size;
    uint64_t hlen;
    if (size < 8 || fread(&hlen, 8, 1, s->f) != 1)
        return fm_error_set(FM_ERR_FORMAT,
                            "%s: %llu bytes, too short for a safetensors file (truncated?)", path,
                            (unsigned long long)size);
    if (hlen > size - 8)
        return fm_error_set(FM_ERR_FORMAT,
                            "%s: header length %llu is larger than the file (%llu bytes): "
                            "truncated or not a safetensors file",
                            path, (unsigned long long)hlen, (unsigned long long)size);
    if (hlen > ST_MAX_HEADER)
        return fm_error_set(FM_ERR_FORMAT, "%s: header length %llu exceeds the %u-byte limit",
                            path, (unsigned long long)hlen, ST_MAX_HEADER);
    s->data_start = 8 + hlen;
    s->data_len = size - s->data_start;

    char *text = malloc(hlen + 1);
    if (text == NULL)
        return fm_error_set(FM_ERR_NOMEM, "%s: cannot allocate %llu bytes for the header", path,
                            (unsigned long long)hlen);
    if (fread(text, 1, hlen, s->f) != hlen) {
        free(text);
        return fm_error_set(FM_ERR_IO, "cannot read %s: %s", path,
                            ferror(s->f) ? strerror(errno) : "file changed while reading");
    }
    size_t objects = header_objects(text, hlen);
    if (objects > 2 + hlen / ST_MIN_ENTRY) {  /* + the root and the metadata */
        free(text);
        return fm_error_set(FM_ERR_FORMAT,
                            "%s: the header holds %zu JSON objects in %llu bytes, more than "
                            "tensor descriptions fit: not a safetensors file",
                            path, objects, (unsigned long long)hlen);
    }
    json_error_t jerr;
    s->root = json_loadb(text, hlen, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (s->root == NULL)
        return fm_error_set(FM_ERR_FORMAT,
                            "%s: the header is not valid JSON (line %d, column %d: %s): not a "
                            "safetensors file",
                            path, jerr.line, jerr.column, jerr.text);
    if (!json_is_object(s->root))
        return fm_error_set(FM_ERR_FORMAT, "%s: the header is not a JSON object", path);

    s->tensors = calloc(json_object_size(s->root) + 1, sizeof(st_tensor));
    if (s->tensors == NULL)
        return fm_error_set(FM_ERR_NOMEM, "%s: out of memory for %zu header entries", path,
                            json_object_size(s->root));
    const char *key;
    json_t *value;
    json_object_foreach(s->root, key, value) {
        fm_status st_ = strcmp(key, "__metadata__") == 0
                            ? parse_metadata(s, value)
                            : parse_tensor(s, key, value, &s->tensors[s->n_tensors++]);
        if (st_ != FM_OK)
            return st_;
    }
    return check_layout(s);
}

/* st_open_checked, with what to do said once for every malformed file. */
static fm_status st_open(st_file *s, const char *path)
{
    fm_status st = st_open_checked(s, path);
    if (st == FM_ERR_FORMAT) {
        char why[1536];
        snprintf(why, sizeof why, "%s", fm_error_message());
        fm_error_set(st, "%s; use a checkpoint saved whole by fmhost (or by safetensors' "
                     "save_file)", why);
    }
    return st;
}

static const st_tensor *st_find(const st_file *s, const char *name)
{
    for (int i = 0; i < s->n_tensors; i++)
        if (strcmp(s->tensors[i].name, name) == 0)
            return &s->tensors[i];
    return NULL;
}

static bool shape_matches(const st_tensor *ft, const fm_tensor *t)
{
    /* PyTorch's 0-d tensors (num_batches_tracked) are [1] in the model. */
    if (ft->ndim == 0)
        return t->numel == 1 && t->ndim <= 1;
    if (ft->ndim != t->ndim)
        return false;
    for (int i = 0; i < t->ndim; i++)
        if (ft->shape[i] != t->shape[i])
            return false;
    return true;
}

/* What to do when the file holds another model's tensors: use the model
 * its metadata names, when it names one. */
static const char *other_model_fix(const st_file *s, char *buf, size_t len)
{
    const char *plugin = fm_meta_get(s->meta, "plugin"), *hp = fm_meta_get(s->meta, "hparams");
    if (plugin)
        snprintf(buf, len, "it was saved by plugin '%.64s'%s%.256s: load it into that model",
                 plugin, hp ? " with " : "", hp ? hp : "");
    else
        snprintf(buf, len, "load it into the model and hyper-parameters that saved it");
    return buf;
}

static fm_status st_check_model(const st_file *s, const fm_model *m)
{
    char fix[512];
    int count = fm_model_count(m);
    for (int i = 0; i < count; i++) {
        fm_model_entry e = fm_model_entry_at(m, i);
        char want[128];
        fm_tensor_shape_str(e.tensor, want, sizeof want);
        const st_tensor *ft = st_find(s, e.name);
        if (ft == NULL)
            return fm_error_set(FM_ERR_FORMAT,
                                "%s: tensor '%s' is missing (the model expects %s %s): a "
                                "checkpoint of another model or hyper-parameters: %s",
                                s->path, e.name, dtype_name(e.tensor->dtype), want,
                                other_model_fix(s, fix, sizeof fix));
        if (e.tensor->dtype == FM_I64 && ft->dtype != ST_I64)
            return fm_error_set(FM_ERR_FORMAT,
                                "%s: tensor '%s' has dtype %s, the model expects I64: an integer "
                                "buffer is read only as I64; save it as int64 (model.half() and "
                                "model.bfloat16() leave it so)",
                                s->path, e.name, st_dtypes[ft->dtype].name);
        if (e.tensor->dtype == FM_F32 && ft->dtype == ST_I64)
            return fm_error_set(FM_ERR_FORMAT,
                                "%s: tensor '%s' has dtype I64, the model expects F32 (or BF16 "
                                "or F16, widened to F32): %s",
                                s->path, e.name, other_model_fix(s, fix, sizeof fix));
        if (!shape_matches(ft, e.tensor)) {
            char have[256];
            shape_str(ft->shape, ft->ndim, have, sizeof have);
            return fm_error_set(FM_ERR_FORMAT,
                                "%s: tensor '%s' has shape %s, the model expects %s: %s", s->path,
                                e.name, have, want, other_model_fix(s, fix, sizeof fix));
        }
    }
    for (int i = 0; i < s->n_tensors; i++)
        if (fm_model_find(m, s->tensors[i].name) == NULL)
            return fm_error_set(FM_ERR_FORMAT,
                                "%s: tensor '%s' is in the file but not in the model: a "
                                "checkpoint of another model or hyper-parameters: %s",
                                s->path, s->tensors[i].name, other_model_fix(s, fix, sizeof fix));
    return FM_OK;
}

fm_status fm_safetensors_load(const char *path, fm_model *m, fm_meta **meta_out)
{
    FM_ASSERT(path != NULL && m != NULL);
    if (meta_out)
        *meta_out = NULL;
    st_file s;
    fm_status st = st_open(&s, path);
    if (st == FM_OK)
        st = st_check_model(&s, m);
    if (st != FM_OK) {
        st_close(&s);
        return st;
    }

    /* Stage everything first: a read error halfway must not leave the model
     * half old, half new.  The sizes were checked against the model above:
     * the file's bytes are at most the model's. */
    int count = fm_model_count(m);
    size_t total = 0;
    for (int i = 0; i < count; i++) {
        const st_tensor *ft = st_find(&s, fm_model_entry_at(m, i).name);
        total += (size_t)(ft->end - ft->begin);
    }
    char *stage = malloc(total ? total : 1);
    if (stage == NULL) {
        st_close(&s);
        return fm_error_set(FM_ERR_NOMEM, "%s: cannot allocate %zu bytes", path, total);
    }
    size_t at = 0;
    for (int i = 0; i < count && st == FM_OK; i++) {
        fm_model_entry e = fm_model_entry_at(m, i);
        const st_tensor *ft = st_find(&s, e.name);
        size_t bytes = (size_t)(ft->end - ft->begin);
        if (fseeko(s.f, (off_t)(s.data_start + ft->begin), SEEK_SET) != 0 ||
            fread(stage + at, 1, bytes, s.f) != bytes)
            st = fm_error_set(FM_ERR_IO, "cannot read tensor '%s' from %s: %s", e.name, path,
                              ferror(s.f) ? strerror(errno) : "file changed while reading");
        at += bytes;
    }
    if (st == FM_OK) {
        at = 0;
        for (int i = 0; i < count; i++) {
            fm_model_entry e = fm_model_entry_at(m, i);
            fm_tensor *t = e.tensor;
            const st_tensor *ft = st_find(&s, e.name);
            size_t n = (size_t)t->numel;
            /* Every dtype's size is even, so a 16-bit tensor's bytes are
             * aligned in the malloc'ed stage. */
            const uint16_t *half = (const uint16_t *)(const void *)(stage + at);
            if (ft->dtype == ST_BF16)
                fm_f32_from_bf16_n(t->data, half, n);
            else if (ft->dtype == ST_F16)
                fm_f32_from_f16_n(t->data, half, n);
            else
                memcpy(t->dtype == FM_I64 ? (void *)t->i64 : (void *)t->data, stage + at,
                       n * dtype_size(t->dtype));
            at += (size_t)(ft->end - ft->begin);
        }
        if (meta_out) {
            *meta_out = s.meta;
            s.meta = NULL;
        }
    }
    free(stage);
    st_close(&s);
    return st;
}

fm_status fm_safetensors_read_meta(const char *path, fm_meta **out)
{
    FM_ASSERT(path != NULL && out != NULL);
    *out = NULL;
    st_file s;
    fm_status st = st_open(&s, path);
    if (st == FM_OK) {
        *out = s.meta;
        s.meta = NULL;
    }
    st_close(&s);
    return st;
}
