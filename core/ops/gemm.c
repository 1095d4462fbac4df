/* Matrix products for the kernels: fm_gemm_serial and its variants (one
 * thread's product, by the kernel set in use) and fm_sgemm (a product split
 * over the pool).
 *
 * The vector sets run fmhost's own GEMM (core/kernels/gemm.c), which sums
 * every element of C in an order fixed by the shapes, wherever the element
 * lies in C.  The portable set calls cblas_sgemm on B as stored, gathered
 * first into the caller's workspace when B comes as a table of rows or of
 * column segments; OpenBLAS promises no such independence (its kernels may
 * round an element differently in a product cut differently), so
 * everything above cuts products by their shapes alone.
 *
 * fm_sgemm cuts C into fixed-size blocks of rows or columns (whichever
 * dimension is larger), the block size depending on the shape only; each
 * block is one fm_gemm_serial.  The reduction dimension k is never split:
 * results are bit-identical for 1, 2 or 64 threads, on every set. */
#include "ops_util.h"

#include <cblas.h>

/* Below this many multiply-adds the pool's dispatch costs more than it saves. */
#define GEMM_PARALLEL_MIN ((int64_t)1 << 18)
/* Aim for about this many blocks: enough to balance a few threads. */
#define GEMM_TARGET_BLOCKS 8
/* Blocks narrower than this make the kernels inefficient. */
#define GEMM_MIN_BLOCK 32

const char *fm_gemm_blas_core(void) { return openblas_get_corename(); }

size_t fm_gemm_pack_floats(int n, int k, bool b_table)
{
    if (fm_kset_active()->gemm) return FM_GEMM_OWN_PACK_FLOATS;
    /* Room to gather a B given as a table; a cache line at least, so that
     * regions laid out one after another stay 64-byte aligned. */
    size_t gather = b_table ? (size_t)n * (size_t)k : 0;
    return gather < 16 ? 16 : (gather + 15) / 16 * 16;
}

static void gemm_product(bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                         const float *a, int lda, const float *a_packed, const fm_gemm_b *gb,
                         float beta, float *c, int ldc, float *pack)
{
    FM_ASSERT(m >= 0 && n >= 0 && k >= 0);
    if (m == 0 || n == 0) return;
    if (k == 0) {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) {
                float *e = c + (size_t)i * ldc + j;
                *e = beta == 0.0f ? 0.0f : beta * *e;
            }
        return;
    }
    const fm_kset *ks = fm_kset_active();
    if (ks->gemm) {
        ks->gemm(trans_a, trans_b, m, n, k, alpha, a, lda, a_packed, gb, beta, c, ldc, pack);
        return;
    }
    const float *b = gb->b;
    int ldb = gb->ldb;
    if (gb->segs) {
        for (int p = 0; p < k; p++)
            for (int t = 0; t < n / gb->seg; t++)
                memcpy(pack + (size_t)p * n + (size_t)t * gb->seg,
                       gb->segs[t] + (size_t)p * gb->ldb, (size_t)gb->seg * sizeof *pack);
        b = pack;
        ldb = n;
    } else if (gb->rows) {
        int nrows = trans_b ? n : k;
        ldb = trans_b ? k : n;
        for (int r = 0; r < nrows; r++)
            memcpy(pack + (size_t)r * ldb, gb->rows[r], (size_t)ldb * sizeof *pack);
        b = pack;
    }
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c,
                ldc);
}

void fm_gemm_serial(bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                    const float *a, int lda, const float *a_packed, const float *b, int ldb,
                    float beta, float *c, int ldc, float *pack)
{
    fm_gemm_b gb = {.b = b, .ldb = ldb};
    gemm_product(trans_a, trans_b, m, n, k, alpha, a, lda, a_packed, &gb, beta, c, ldc, pack);
}

void fm_gemm_serial_rows(bool bf16, bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                         const float *a, int lda, const float *a_packed,
                         const float *const *b_rows, float beta, float *c, int ldc, float *pack)
{
    fm_gemm_b gb = {.rows = b_rows};
    (bf16 ? fm_gemm_bf16_product : gemm_product)(trans_a, trans_b, m, n, k, alpha, a, lda,
                                                 a_packed, &gb, beta, c, ldc, pack);
}

void fm_gemm_serial_segs(bool bf16, int m, int n, int k, float alpha, const float *a, int lda,
                         const float *const *b_segs, int seg, int ldb, float beta, float *c,
                         int ldc, float *pack)
{
    FM_ASSERT(seg > 0 && n % seg == 0);
    fm_gemm_b gb = {.segs = b_segs, .seg = seg, .ldb = ldb};
    (bf16 ? fm_gemm_bf16_product : gemm_product)(false, false, m, n, k, alpha, a, lda, NULL, &gb,
                                                 beta, c, ldc, pack);
}

size_t fm_gemm_prepacked_floats(int m, int k)
{
    int mr = fm_kset_active()->gemm_mr;
    if (mr == 0) return 0;
    return (size_t)(m + mr - 1) / (size_t)mr * (size_t)mr * (size_t)k;
}

const float *fm_gemm_prepack_a(bool trans_a, int m, int k, const float *a, int lda, float *dst)
{
    const fm_kset *ks = fm_kset_active();
    if (!ks->gemm_prepack) return NULL;
    ks->gemm_prepack(trans_a, m, k, a, lda, dst);
    return dst;
}

void fm_transpose(float *dst, size_t ldd, const float *src, size_t lds, int rows, int cols)
{
    const fm_kset *ks = fm_kset_active();
    if (ks->transpose) {
        ks->transpose(dst, ldd, src, lds, rows, cols);
        return;
    }
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) dst[(size_t)j * ldd + i] = src[(size_t)i * lds + j];
}

typedef struct gemm_job {
    bool trans_a, trans_b, split_rows;
    int m, n, k, block;
    float alpha, beta;
    const float *a, *b;
    int lda, ldb, ldc;
    float *c;
    float *pack;         /* pack_floats per thread */
    size_t pack_floats;
    bool bf16;           /* fm_gemm_serial_bf16's products */
    const float *bias;   /* [n] added to every row of C after its product, or NULL */
} gemm_job;

static void gemm_block(void *arg, int task, int thread)
{
    const gemm_job *j = arg;
    int start = task * j->block;
    int total = j->split_rows ? j->m : j->n;
    int len = total - start < j->block ? total - start : j->block;
    const float *a = j->a, *b = j->b;
    float *c = j->c;
    int m = j->m, n = j->n;
    if (j->split_rows) {
        /* Rows of C are rows of op(A): row r of A, or column r of a transposed A. */
        a += j->trans_a ? (size_t)start : (size_t)start * (size_t)j->lda;
        c += (size_t)start * (size_t)j->ldc;
        m = len;
    } else {
        b += j->trans_b ? (size_t)start * (size_t)j->ldb : (size_t)start;
        c += (size_t)start;
        n = len;
    }
    float *pack = j->pack + (size_t)thread * j->pack_floats;
    if (j->bf16)
        fm_gemm_serial_bf16(j->trans_a, j->trans_b, m, n, j->k, j->alpha, a, j->lda, NULL, b,
                            j->ldb, j->beta, c, j->ldc, pack);
    else
        fm_gemm_serial(j->trans_a, j->trans_b, m, n, j->k, j->alpha, a, j->lda, NULL, b, j->ldb,
                       j->beta, c, j->ldc, pack);
    if (j->bias) {
        /* While the block is in cache: the same sums, product + bias. */
        const float *bias = j->bias + (j->split_rows ? 0 : start);
        for (int i = 0; i < m; i++) {
            float *ci = c + (size_t)i * (size_t)j->ldc;
            for (int col = 0; col < n; col++) ci[col] += bias[col];
        }
    }
}

/* dst [cols, rows] = src [rows, cols]^T, TRANSPOSE_ROWS rows of src a task. */
#define TRANSPOSE_ROWS 64

typedef struct transpose_job {
    float *dst;
    const float *src;
    int lds, rows, cols;
} transpose_job;

static void transpose_rows(void *arg, int task, int thread)
{
    (void)thread;
    const transpose_job *j = arg;
    int r0 = task * TRANSPOSE_ROWS;
    int rows = j->rows - r0 < TRANSPOSE_ROWS ? j->rows - r0 : TRANSPOSE_ROWS;
    fm_transpose(j->dst + r0, (size_t)j->rows, j->src + (size_t)r0 * (size_t)j->lds,
                 (size_t)j->lds, rows, j->cols);
}

/* fm_sgemm, or with bf16 fm_sgemm_bf16: the same blocks either way; bias,
 * if not NULL, is added to each row of C after the product. */
static void sgemm_blocks(fm_graph *g, bool bf16, bool trans_a, bool trans_b, int m, int n, int k,
                         float alpha, const float *a, int lda, const float *b, int ldb,
                         float beta, float *c, int ldc, const float *bias)
{
    FM_ASSERT(m >= 0 && n >= 0 && k >= 0);
    if (m == 0 || n == 0) return;
    gemm_job j = {
        .trans_a = trans_a, .trans_b = trans_b, .split_rows = m >= n,
        .m = m, .n = n, .k = k, .alpha = alpha, .beta = beta,
        .a = a, .b = b, .lda = lda, .ldb = ldb, .ldc = ldc, .c = c, .bf16 = bf16,
        .bias = bias,
    };
    int total = j.split_rows ? m : n;
    bool serial = (int64_t)m * n * k < GEMM_PARALLEL_MIN || total < 2 * GEMM_MIN_BLOCK;
    if (serial) {
        j.block = total;
    } else {
        /* Round to 16 so blocks start on 64-byte boundaries of a row of C. */
        int block = (total + GEMM_TARGET_BLOCKS - 1) / GEMM_TARGET_BLOCKS;
        block = (block + 15) / 16 * 16;
        j.block = block < GEMM_MIN_BLOCK ? GEMM_MIN_BLOCK : block;
    }
    int blocks = (total + j.block - 1) / j.block;
    fm_arena_mark mark = fm_arena_mark_get(fm_graph_arena(g));
    if (blocks > 1 && j.split_rows && trans_b) {
        /* Every block of rows would pack all of the transposed B for itself
         * (a linear layer's weight, evaluated 256 images at a time): turn it
         * once, here, and let the blocks read it in place.  fmhost's kernels
         * sum each element of C in the same order either way; on the
         * portable set the choice, like the blocks, follows the shape only. */
        float *bt = fm_graph_alloc(g, (size_t)k * (size_t)n * sizeof *bt);  // [k, n]
        transpose_job tj = {.dst = bt, .src = b, .lds = ldb, .rows = n, .cols = k};
        fm_parallel_for((n + TRANSPOSE_ROWS - 1) / TRANSPOSE_ROWS, transpose_rows, &tj);
        j.b = bt;
        j.ldb = n;
        j.trans_b = false;
    }
    /* One block runs here as thread 0 (also inside another op's task, whose
     * thread index could exceed a single pack); more get a pack per thread. */
    int packs = blocks == 1 ? 1 : fm_get_threads();
    j.pack_floats = bf16 ? fm_gemm_bf16_pack_floats() : fm_gemm_pack_floats(0, 0, false);
    j.pack = fm_graph_alloc(g, j.pack_floats * (size_t)packs * sizeof(float));
    if (blocks == 1)
        gemm_block(&j, 0, 0);
    else
        fm_parallel_for(blocks, gemm_block, &j);
    fm_arena_release(fm_graph_arena(g), mark);
}

void fm_sgemm(fm_graph *g, bool trans_a, bool trans_b, int m, int n, int k, float alpha,
              const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc)
{
    sgemm_blocks(g, false, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, NULL);
}

void fm_sgemm_bf16(fm_graph *g, bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                   const float *a, int lda, const float *b, int ldb, float beta, float *c,
                   int ldc)
{
    sgemm_blocks(g, true, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, NULL);
}

void fm_sgemm_linear(fm_graph *g, bool bf16, int m, int n, int k, const float *x,
                     const float *w, const float *bias, float *y)
{
    sgemm_blocks(g, bf16, false, true, m, n, k, 1.0f, x, k, w, k, 0.0f, y, n, bias);
}

typedef struct tn_tree_job {
    int m, n, k, size;
    const float *a, *b;
    float *g;
} tn_tree_job;

static void tn_tree_range(void *arg, int64_t begin, int64_t end)
{
    const tn_tree_job *j = arg;
    fm_kset_active()->gemm_tn_tree(j->m, j->n, j->k, j->size, j->a, j->m, j->b, j->n, j->g, j->n,
                                   (int)begin, (int)end);
}

/* Columns of g a task takes: whole register tiles on every vector set. */
#define TN_TREE_GRAIN 192

bool fm_gemm_tn_tree(int m, int n, int k, int size, const float *a, const float *b, float *g)
{
    const fm_kset *ks = fm_kset_active();
    if (!ks->gemm_tn_tree || m <= 0 || n <= 0 || k <= 0 || size <= 0 || size > FM_GEMM_KC ||
        (k + size - 1) / size > FM_BATCH_CHUNKS)
        return false;
    tn_tree_job j = {m, n, k, size, a, b, g};
    fm_ops_parallel_range(n, TN_TREE_GRAIN, tn_tree_range, &j);
    return true;
}
