/* chunks.c — a batch in chunks that depend on its size only, and sums over
 * chunks in one fixed binary tree, whichever ranks computed which chunks.
 *
 * Floating-point addition is not associative: a sum over the batch is the
 * same bits under 1, 2 or 4 ranks only if it is always added in the same
 * order.  MPI_Allreduce's order depends on the rank count and on the
 * algorithm Open MPI picks, so fmhost never uses it: every sum is this
 * tree over chunk index (the reproducible reductions of ReproRed and
 * KaMPIng's), the leaves computed by whichever rank holds the chunk.  A
 * rank adds up its whole subtrees itself; rank 0 receives those, adds the
 * nodes that span ranks, and sends the root back. */
#include "fm/fm_dist.h"

#include <stdlib.h>
#include <string.h>

#include "../ops/ops_util.h"

int fm_chunk_size(int batch)
{
    return batch <= FM_BATCH_CHUNKS ? 1 : (batch + FM_BATCH_CHUNKS - 1) / FM_BATCH_CHUNKS;
}

int fm_chunk_count(int batch)
{
    if (batch <= 0) return 0;
    int size = fm_chunk_size(batch);
    return (batch + size - 1) / size;
}

void fm_chunk_share(int n_chunks, int rank, int size, int *first, int *end)
{
    FM_ASSERT(n_chunks >= 0 && size >= 1 && rank >= 0 && rank < size);
    *first = (int)((int64_t)n_chunks * rank / size);
    *end = (int)((int64_t)n_chunks * (rank + 1) / size);
}

void fm_chunk_slice(int batch, int *offset, int *n)
{
    int size = fm_chunk_size(batch), first, end;
    fm_chunk_share(fm_chunk_count(batch), fm_dist_rank(), fm_dist_size(), &first, &end);
    *offset = first * size;
    *n = (end * size < batch ? end * size : batch) - *offset;
}

static size_t type_bytes(fm_chunk_type type) { return type == FM_CHUNK_F64 ? 8 : 4; }

/* a[i] += b[i], i in [begin, end). */
static void add_range(fm_chunk_type type, void *a, const void *b, int64_t begin, int64_t end)
{
    if (type == FM_CHUNK_F64) {
        double *x = a;
        const double *y = b;
        for (int64_t i = begin; i < end; i++) x[i] += y[i];
    } else {
        float *x = a;
        const float *y = b;
        for (int64_t i = begin; i < end; i++) x[i] += y[i];
    }
}

/* The local subtrees: node [lo, hi) (within [first, end)) summed into the
 * slot of chunk lo, for elements [begin, end) of each part. */
typedef struct local_job {
    fm_chunk_type type;
    char *parts;
    size_t stride;  /* bytes per chunk's part */
    int first;
    const int *roots;  /* pairs lo, hi */
    int n_roots;
} local_job;

static void local_node(const local_job *j, int lo, int hi, int64_t begin, int64_t end)
{
    if (hi - lo < 2) return;
    int mid = fm_chunk_tree_mid(lo, hi);
    local_node(j, lo, mid, begin, end);
    local_node(j, mid, hi, begin, end);
    add_range(j->type, j->parts + (size_t)(lo - j->first) * j->stride,
              j->parts + (size_t)(mid - j->first) * j->stride, begin, end);
}

/* Blocks of elements small enough that a block's tree stays in the cache. */
#define CHUNK_BLOCK 2048

static void local_range(void *arg, int64_t begin, int64_t end)
{
    const local_job *j = arg;
    for (int64_t b = begin; b < end; b += CHUNK_BLOCK) {
        int64_t e = end - b < CHUNK_BLOCK ? end : b + CHUNK_BLOCK;
        for (int r = 0; r < j->n_roots; r++) local_node(j, j->roots[2 * r], j->roots[2 * r + 1], b, e);
    }
}

/* The largest nodes of the tree over [lo, hi) that lie within [first, end),
 * in chunk order, as pairs into roots; returns how many. */
static int local_roots(int lo, int hi, int first, int end, int *roots, int n)
{
    if (hi <= first || lo >= end || lo >= hi) return n;
    if (lo >= first && hi <= end) {
        roots[2 * n] = lo;
        roots[2 * n + 1] = hi;
        return n + 1;
    }
    int mid = fm_chunk_tree_mid(lo, hi);
    n = local_roots(lo, mid, first, end, roots, n);
    return local_roots(mid, hi, first, end, roots, n);
}

/* Rank 0's part: the nodes received (lo, hi, data) and the rest of the tree. */
typedef struct received {
    int n;
    const int32_t *span;  /* pairs lo, hi */
    const char *const *data;
} received;

/* Node [lo, hi) of the tree into out [len]. */
static void root_node(fm_chunk_type type, const received *rv, int lo, int hi, int64_t len,
                      char *out)
{
    size_t bytes = (size_t)len * type_bytes(type);
    for (int i = 0; i < rv->n; i++)
        if (rv->span[2 * i] == lo && rv->span[2 * i + 1] == hi) {
            memcpy(out, rv->data[i], bytes);
            return;
        }
    FM_ASSERT(hi - lo >= 2);  /* every leaf comes from some rank */
    int mid = fm_chunk_tree_mid(lo, hi);
    char *right = fm_xmalloc(bytes ? bytes : 1);
    root_node(type, rv, lo, mid, len, out);
    root_node(type, rv, mid, hi, len, right);
    add_range(type, out, right, 0, len);
    free(right);
}

/* With several ranks: the local roots to rank 0, the root back. */
static fm_status exchange(fm_chunk_type type, void *sum, const char *parts, size_t stride,
                          int64_t len, int n_chunks, int first, const int *roots, int n_roots)
{
    /* Message: n_roots (int32), then per root lo, hi (int32) and its data. */
    size_t bytes = (size_t)len * type_bytes(type);
    size_t msg_len = sizeof(int32_t) + (size_t)n_roots * (2 * sizeof(int32_t) + bytes);
    char *msg = fm_xmalloc(msg_len), *p = msg;
    int32_t count = n_roots;
    memcpy(p, &count, sizeof count);
    p += sizeof count;
    for (int r = 0; r < n_roots; r++) {
        int32_t span[2] = {roots[2 * r], roots[2 * r + 1]};
        memcpy(p, span, sizeof span);
        p += sizeof span;
        memcpy(p, parts + (size_t)(span[0] - first) * stride, bytes);
        p += bytes;
    }
    int size = fm_dist_size();
    size_t *lens = fm_xcalloc((size_t)size, sizeof *lens);
    void *all = NULL;
    fm_status st = fm_dist_gather(msg, msg_len, &all, lens);
    free(msg);
    void *root = NULL;
    size_t root_len = 0;
    if (st == FM_OK && fm_dist_rank() == 0) {
        /* Every chunk's leaf lies in exactly one received node. */
        int32_t *span = fm_xmalloc(2 * (size_t)n_chunks * sizeof *span);
        const char **data = fm_xmalloc((size_t)n_chunks * sizeof *data);
        received rv = {0, span, data};
        const char *q = all;
        for (int r = 0; r < size; r++) {
            const char *next = q + lens[r];
            int32_t k;
            FM_ASSERT(lens[r] >= sizeof k);
            memcpy(&k, q, sizeof k);
            q += sizeof k;
            for (int32_t i = 0; i < k; i++) {
                FM_ASSERT(rv.n < n_chunks && (size_t)(next - q) >= 2 * sizeof(int32_t) + bytes);
                memcpy(span + 2 * rv.n, q, 2 * sizeof(int32_t));
                q += 2 * sizeof(int32_t);
                data[rv.n++] = q;
                q += bytes;
            }
            FM_ASSERT(q == next);
        }
        root_len = bytes;
        root = fm_xmalloc(bytes ? bytes : 1);
        root_node(type, &rv, 0, n_chunks, len, root);
        free(span);
        free(data);
    }
    free(all);
    free(lens);
    if (st == FM_OK) st = fm_dist_broadcast(&root, &root_len);
    if (st == FM_OK) {
        FM_ASSERT(root_len == bytes);
        memcpy(sum, root, bytes);
    }
    free(root);
    return st;
}

fm_status fm_chunk_sum(fm_chunk_type type, void *sum, void *parts, int64_t len, int n_chunks,
                       int first, int end, bool across)
{
    FM_ASSERT(len >= 0 && n_chunks >= 1 && 0 <= first && first <= end && end <= n_chunks);
    /* At most two roots per level of the tree. */
    int roots[2 * 2 * 32], n_roots = local_roots(0, n_chunks, first, end, roots, 0);
    size_t stride = (size_t)len * type_bytes(type);
    local_job j = {type, parts, stride, first, roots, n_roots};
    fm_ops_parallel_range(len, FM_OPS_GRAIN / 8, local_range, &j);
    if (!across || fm_dist_size() == 1) {
        FM_ASSERT(first == 0 && end == n_chunks);
        if (sum != parts) memcpy(sum, parts, stride);
        return FM_OK;
    }
    return exchange(type, sum, parts, stride, len, n_chunks, first, roots, n_roots);
}

void fm_chunk_sum_or_die(fm_chunk_type type, void *sum, void *parts, int64_t len, int n_chunks,
                         int first, int end, bool across)
{
    if (fm_chunk_sum(type, sum, parts, len, n_chunks, first, end, across) == FM_OK) return;
    fm_log(FM_LOG_ERROR, "a sum over the ranks of the job failed: %s", fm_error_message());
    abort();
}
