/* 2-D convolution (cross-correlation) lowered to GEMM, a chunk of images at a
 * time.
 *
 * The batch is cut into chunks of `chunk` images, a number that depends on the
 * shape only.  For each chunk, im2col lays the receptive fields of all its
 * images side by side in a [C*KH*KW, chunk*OH*OW] workspace, so one GEMM with
 * a wide right-hand side does the work of `chunk` per-image products (which
 * are too narrow for BLAS to run at speed on 7x7 or 14x14 maps).  Chunks are
 * the tasks of fm_parallel_for; each thread owns one workspace region,
 * allocated from the arena before the parallel call.  Weight and bias
 * gradients are computed per chunk and summed in chunk order afterwards, so
 * every result is bit-identical for any thread count. */
#include "ops_util.h"

/* Bound on the im2col block of a chunk, in floats (1 MB): im2col writes it and
 * the GEMM reads it right after, so it should stay in the core's L2 cache
 * (2 MB here) rather than go through L3, and the per-thread workspace stays
 * small.  BLAS still sees >= 196 columns on every layer of the reference
 * models, and 28x28 layers get one image per chunk, which needs no staging
 * copy (see the nb == 1 paths).  On ResCNN, against the earlier 2048-column
 * chunks (2-9 MB blocks), the speed was the same within the noise of a loaded
 * machine. */
#define CONV_COL_FLOATS ((int64_t)1 << 18)
/* Split even small batches of small maps into at least this many chunks so
 * that a few threads have work. */
#define CONV_MIN_CHUNKS 4

typedef struct conv_geom {
    int n, c, h, w;           /* input [N, C, H, W] */
    int o, kh, kw;            /* weight [O, C, KH, KW] */
    int oh, ow, stride, pad;  /* output [N, O, OH, OW] */
    int k;                    /* C*KH*KW: rows of the im2col matrix */
    int p;                    /* OH*OW */
    int chunk, nchunks;       /* images per chunk, number of chunks */
} conv_geom;

static conv_geom conv_geom_make(const fm_tensor *x, const fm_tensor *w, int stride, int pad)
{
    conv_geom cg = {
        .n = x->shape[0], .c = x->shape[1], .h = x->shape[2], .w = x->shape[3],
        .o = w->shape[0], .kh = w->shape[2], .kw = w->shape[3],
        .stride = stride, .pad = pad,
    };
    cg.oh = (cg.h + 2 * pad - cg.kh) / stride + 1;
    cg.ow = (cg.w + 2 * pad - cg.kw) / stride + 1;
    cg.k = cg.c * cg.kh * cg.kw;
    cg.p = cg.oh * cg.ow;
    /* Images whose im2col block [K, chunk*P] fits CONV_COL_FLOATS, at least one. */
    int chunk = (int)(CONV_COL_FLOATS / ((int64_t)cg.k * cg.p));
    int cap = (cg.n + CONV_MIN_CHUNKS - 1) / CONV_MIN_CHUNKS;
    if (chunk > cap) chunk = cap;
    if (chunk < 1) chunk = 1;
    cg.chunk = chunk;
    cg.nchunks = (cg.n + chunk - 1) / chunk;
    return cg;
}

/* A plane of x with `pad` zeros on every side, so that im2col and col2im run
 * without bounds checks: [H + 2*pad, W + 2*pad]. */
static const float *conv_pad_plane(float *buf, const float *x, const conv_geom *cg)
{
    if (cg->pad == 0) return x;
    int p = cg->pad, wp = cg->w + 2 * p;
    for (int i = 0; i < p * wp; i++) buf[i] = 0.0f;
    float *row = buf + (size_t)p * wp;
    for (int y = 0; y < cg->h; y++, row += wp) {
        for (int i = 0; i < p; i++) row[i] = row[p + cg->w + i] = 0.0f;
        for (int i = 0; i < cg->w; i++) row[p + i] = x[(size_t)y * cg->w + i];
    }
    for (int i = 0; i < p * wp; i++) row[i] = 0.0f;
    return buf;
}

/* col [K, nb*P] (row stride nb*P) <- receptive fields of x [nb, C, H, W];
 * padbuf holds one padded plane. */
static void conv_im2col(float *col, float *padbuf, const float *x, int nb, const conv_geom *cg)
{
    size_t cols = (size_t)nb * cg->p, plane = (size_t)cg->h * cg->w;
    int s = cg->stride, wp = cg->w + 2 * cg->pad, oh = cg->oh, ow = cg->ow;
    for (int i = 0; i < nb; i++)
        for (int c = 0; c < cg->c; c++) {
            const float *xp = conv_pad_plane(padbuf, x + ((size_t)i * cg->c + c) * plane, cg);
            for (int ki = 0; ki < cg->kh; ki++)
                for (int kj = 0; kj < cg->kw; kj++) {
                    float *dst = col + (size_t)((c * cg->kh + ki) * cg->kw + kj) * cols +
                                 (size_t)i * cg->p;
                    const float *src = xp + (size_t)ki * wp + kj;
                    if (s == 1)
                        for (int oy = 0; oy < oh; oy++, dst += ow, src += wp)
                            for (int ox = 0; ox < ow; ox++) dst[ox] = src[ox];
                    else
                        for (int oy = 0; oy < oh; oy++, dst += ow, src += (size_t)s * wp)
                            for (int ox = 0; ox < ow; ox++) dst[ox] = src[ox * s];
                }
        }
}

/* dx [nb, C, H, W] += the columns of dcol [K, nb*P] folded back onto the
 * pixels they were read from; padbuf holds one padded plane. */
static void conv_col2im(float *dx, float *padbuf, const float *dcol, int nb, const conv_geom *cg)
{
    size_t cols = (size_t)nb * cg->p, plane = (size_t)cg->h * cg->w;
    int s = cg->stride, p = cg->pad, wp = cg->w + 2 * p, oh = cg->oh, ow = cg->ow;
    size_t padded = (size_t)(cg->h + 2 * p) * wp;
    for (int i = 0; i < nb; i++)
        for (int c = 0; c < cg->c; c++) {
            float *xp = dx + ((size_t)i * cg->c + c) * plane;
            /* With padding, sum into a zeroed padded plane and add its
             * interior to dx; without, accumulate into dx directly. */
            float *acc = xp;
            if (p > 0) {
                acc = padbuf;
                for (size_t q = 0; q < padded; q++) acc[q] = 0.0f;
            }
            for (int ki = 0; ki < cg->kh; ki++)
                for (int kj = 0; kj < cg->kw; kj++) {
                    const float *src = dcol + (size_t)((c * cg->kh + ki) * cg->kw + kj) * cols +
                                       (size_t)i * cg->p;
                    float *dst = acc + (size_t)ki * wp + kj;
                    if (s == 1)
                        for (int oy = 0; oy < oh; oy++, src += ow, dst += wp)
                            for (int ox = 0; ox < ow; ox++) dst[ox] += src[ox];
                    else
                        for (int oy = 0; oy < oh; oy++, src += ow, dst += (size_t)s * wp)
                            for (int ox = 0; ox < ow; ox++) dst[ox * s] += src[ox];
                }
            if (p > 0)
                for (int y = 0; y < cg->h; y++)
                    for (int x = 0; x < cg->w; x++)
                        xp[(size_t)y * cg->w + x] += acc[(size_t)(y + p) * wp + p + x];
        }
}

/* Sum of a[0..n) in double.  Eight interleaved partial sums, combined in a
 * fixed order, hide the latency of the additions. */
static double conv_sum(const float *a, int n)
{
    double lane[8] = {0};
    int q = 0;
    for (; q + 8 <= n; q += 8)
        for (int l = 0; l < 8; l++) lane[l] += a[q + l];
    for (; q < n; q++) lane[0] += a[q];
    return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

typedef struct conv_job {
    conv_geom cg;
    const float *x;   // [N, C, H, W]
    const float *w;   // [O, C, KH, KW]
    const float *b;   // [O] or NULL
    float *y;         // [N, O, OH, OW]
    const float *dy;  // [N, O, OH, OW]
    float *dx;        // [N, C, H, W] or NULL
    float *dw_part;   // [nchunks, O, K] or NULL
    double *db_part;  // [nchunks, O] or NULL
    float *ws;        // per thread: GEMM pack, col [K, chunk*P], out [O, chunk*P], padded plane
    size_t ws_stride; // floats per thread region
} conv_job;

static size_t conv_ws_floats(const conv_geom *cg)
{
    size_t cols = (size_t)cg->chunk * cg->p;
    size_t padded = (size_t)(cg->h + 2 * cg->pad) * (size_t)(cg->w + 2 * cg->pad);
    size_t n = FM_GEMM_PACK_FLOATS + ((size_t)cg->k + (size_t)cg->o) * cols + padded;
    return (n + 15) / 16 * 16;  /* keep every region 64-byte aligned */
}

static float *conv_ws_alloc(fm_graph *g, const conv_geom *cg, size_t *stride)
{
    *stride = conv_ws_floats(cg);
    return fm_graph_alloc(g, *stride * (size_t)fm_get_threads() * sizeof(float));
}

static void conv_forward_task(void *arg, int task, int thread)
{
    const conv_job *j = arg;
    const conv_geom *cg = &j->cg;
    int n0 = task * cg->chunk;
    int nb = cg->n - n0 < cg->chunk ? cg->n - n0 : cg->chunk;
    int cols = nb * cg->p;
    float *pack = j->ws + (size_t)thread * j->ws_stride;
    float *col = pack + FM_GEMM_PACK_FLOATS;
    float *out = col + (size_t)cg->k * cg->chunk * cg->p;
    float *padbuf = out + (size_t)cg->o * cg->chunk * cg->p;

    conv_im2col(col, padbuf, j->x + (size_t)n0 * cg->c * cg->h * cg->w, nb, cg);
    /* One image's [O, P] block is its slice of y: no staging copy, the bias
     * is then added in place. */
    float *gemm_out = nb == 1 ? j->y + (size_t)n0 * cg->o * cg->p : out;
    fm_gemm_serial(false, false, cg->o, cols, cg->k, 1.0f, j->w, cg->k, col, cols, 0.0f, gemm_out,
                   cols, pack);
    if (nb == 1 && !j->b) return;
    for (int i = 0; i < nb; i++)
        for (int o = 0; o < cg->o; o++) {
            float *dst = j->y + ((size_t)(n0 + i) * cg->o + o) * cg->p;
            const float *src = gemm_out + (size_t)o * cols + (size_t)i * cg->p;
            float bias = j->b ? j->b[o] : 0.0f;
            for (int q = 0; q < cg->p; q++) dst[q] = src[q] + bias;
        }
}

static void conv_backward_task(void *arg, int task, int thread)
{
    const conv_job *j = arg;
    const conv_geom *cg = &j->cg;
    int n0 = task * cg->chunk;
    int nb = cg->n - n0 < cg->chunk ? cg->n - n0 : cg->chunk;
    int cols = nb * cg->p;
    float *pack = j->ws + (size_t)thread * j->ws_stride;
    float *col = pack + FM_GEMM_PACK_FLOATS;
    float *stage = col + (size_t)cg->k * cg->chunk * cg->p;  // [O, nb*P]
    float *padbuf = stage + (size_t)cg->o * cg->chunk * cg->p;

    /* dy of the chunk as [O, nb*P]; for one image that is its slice of dy. */
    const float *dout = j->dy + (size_t)n0 * cg->o * cg->p;
    if (nb > 1) {
        for (int i = 0; i < nb; i++)
            for (int o = 0; o < cg->o; o++)
                memcpy(stage + (size_t)o * cols + (size_t)i * cg->p,
                       j->dy + ((size_t)(n0 + i) * cg->o + o) * cg->p, (size_t)cg->p * sizeof *stage);
        dout = stage;
    }
    if (j->db_part)
        for (int o = 0; o < cg->o; o++)
            j->db_part[(size_t)task * cg->o + o] = conv_sum(dout + (size_t)o * cols, cols);
    if (j->dw_part) {
        conv_im2col(col, padbuf, j->x + (size_t)n0 * cg->c * cg->h * cg->w, nb, cg);
        fm_gemm_serial(false, true, cg->o, cg->k, cols, 1.0f, dout, cols, col, cols, 0.0f,
                       j->dw_part + (size_t)task * cg->o * cg->k, cg->k, pack);
    }
    if (j->dx) {
        fm_gemm_serial(true, false, cg->k, cols, cg->o, 1.0f, j->w, cg->k, dout, cols, 0.0f, col,
                       cols, pack);
        conv_col2im(j->dx + (size_t)n0 * cg->c * cg->h * cg->w, padbuf, col, nb, cg);
    }
}

fm_tensor *fm_conv2d(fm_graph *g, fm_tensor *x, fm_tensor *w, fm_tensor *b, int stride, int pad)
{
    FM_ASSERT(fm_ops_is_f32(x) && fm_ops_is_f32(w));
    FM_ASSERT(x->ndim == 4 && w->ndim == 4);
    FM_ASSERT(x->shape[1] == w->shape[1]);
    FM_ASSERT(stride >= 1 && pad >= 0);
    FM_ASSERT(x->shape[2] + 2 * pad >= w->shape[2] && x->shape[3] + 2 * pad >= w->shape[3]);
    if (b) FM_ASSERT(fm_ops_is_f32(b) && b->ndim == 1 && b->shape[0] == w->shape[0]);
    fm_node *n = fm_node_new(g, FM_OP_CONV2D, 3, (fm_tensor *[]){x, w, b});
    n->iarg[0] = stride;
    n->iarg[1] = pad;
    conv_geom cg = conv_geom_make(x, w, stride, pad);
    n->out = fm_graph_tensor(g, 4, (int[]){cg.n, cg.o, cg.oh, cg.ow});
    return fm_graph_apply(g, n);
}

void fm_op_conv2d_forward(fm_graph *g, fm_node *n)
{
    const fm_tensor *b = n->in[2];
    conv_job j = {
        .cg = conv_geom_make(n->in[0], n->in[1], n->iarg[0], n->iarg[1]),
        .x = n->in[0]->data, .w = n->in[1]->data, .b = b ? b->data : NULL,
        .y = n->out->data,
    };
    fm_arena_mark mark = fm_arena_mark_get(fm_graph_arena(g));
    j.ws = conv_ws_alloc(g, &j.cg, &j.ws_stride);
    fm_parallel_for(j.cg.nchunks, conv_forward_task, &j);
    fm_arena_release(fm_graph_arena(g), mark);
}

void fm_op_conv2d_backward(fm_graph *g, fm_node *n)
{
    bool want_dx = fm_node_wants_grad(n, 0), want_dw = fm_node_wants_grad(n, 1),
         want_db = fm_node_wants_grad(n, 2);
    if (!want_dx && !want_dw && !want_db) return;
    conv_job j = {
        .cg = conv_geom_make(n->in[0], n->in[1], n->iarg[0], n->iarg[1]),
        .x = n->in[0]->data, .w = n->in[1]->data, .dy = n->out->grad,
        .dx = want_dx ? n->in[0]->grad : NULL,
    };
    const conv_geom *cg = &j.cg;
    size_t wsize = (size_t)cg->o * cg->k;
    fm_arena_mark mark = fm_arena_mark_get(fm_graph_arena(g));
    if (want_dw) j.dw_part = fm_graph_alloc(g, (size_t)cg->nchunks * wsize * sizeof(float));
    if (want_db)
        j.db_part = fm_graph_alloc(g, (size_t)cg->nchunks * cg->o * sizeof(double));
    j.ws = conv_ws_alloc(g, cg, &j.ws_stride);
    fm_parallel_for(cg->nchunks, conv_backward_task, &j);

    if (want_dw) {
        float *dw = n->in[1]->grad;
        for (size_t i = 0; i < wsize; i++) {
            float s = j.dw_part[i];
            for (int c = 1; c < cg->nchunks; c++) s += j.dw_part[(size_t)c * wsize + i];
            dw[i] += s;
        }
    }
    if (want_db) {
        float *db = n->in[2]->grad;
        for (int o = 0; o < cg->o; o++) {
            double s = 0.0;
            for (int c = 0; c < cg->nchunks; c++) s += j.db_part[(size_t)c * cg->o + o];
            db[o] += (float)s;
        }
    }
    fm_arena_release(fm_graph_arena(g), mark);
}
