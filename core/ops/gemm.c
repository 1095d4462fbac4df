/* fm_sgemm: a row-major GEMM split over the host's pool.
 *
 * C is cut into fixed-size blocks of rows or columns (whichever dimension is
 * larger), the block size depending on the shape only; each block is one
 * fm_gemm_serial.  The reduction dimension k is never split, so
 * every element of C is summed by the same kernel in the same order whatever
 * the thread count: results are bit-identical for 1, 2 or 64 threads. */
#include "fm_internal.h"

/* Below this many multiply-adds the pool's dispatch costs more than it saves. */
#define GEMM_PARALLEL_MIN ((int64_t)1 << 18)
/* Aim for about this many blocks: enough to balance a few threads. */
#define GEMM_TARGET_BLOCKS 8
/* Blocks narrower than this make the kernels inefficient. */
#define GEMM_MIN_BLOCK 32

typedef struct gemm_job {
    bool trans_a, trans_b, split_rows;
    int m, n, k, block;
    float alpha, beta;
    const float *a, *b;
    int lda, ldb, ldc;
    float *c;
    float *pack;  /* FM_GEMM_PACK_FLOATS per thread */
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
    fm_gemm_serial(j->trans_a, j->trans_b, m, n, j->k, j->alpha, a, j->lda, NULL, b, j->ldb,
                   j->beta, c, j->ldc, j->pack + (size_t)thread * FM_GEMM_PACK_FLOATS);
}

void fm_sgemm(fm_graph *g, bool trans_a, bool trans_b, int m, int n, int k, float alpha,
              const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc)
{
    FM_ASSERT(m >= 0 && n >= 0 && k >= 0);
    if (m == 0 || n == 0) return;
    gemm_job j = {
        .trans_a = trans_a, .trans_b = trans_b, .split_rows = m >= n,
        .m = m, .n = n, .k = k, .alpha = alpha, .beta = beta,
        .a = a, .b = b, .lda = lda, .ldb = ldb, .ldc = ldc, .c = c,
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
    /* One block runs here as thread 0 (also inside another op's task, whose
     * thread index could exceed a single pack); more get a pack per thread. */
    int packs = blocks == 1 ? 1 : fm_get_threads();
    j.pack = fm_graph_alloc(g, FM_GEMM_PACK_FLOATS * (size_t)packs * sizeof(float));
    if (blocks == 1)
        gemm_block(&j, 0, 0);
    else
        fm_parallel_for(blocks, gemm_block, &j);
    fm_arena_release(fm_graph_arena(g), mark);
}
