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
 * every result is bit-identical for any thread count.
 *
 * Stride-1 convolutions skip im2col altogether (the "direct" path).  A group
 * of images is laid side by side in one zero-padded plane per channel, Wg
 * columns wide, image i's pixels starting at column pad + i*F with (at
 * least) `pad` zero columns between neighbours.  The receptive-field row of
 * weight tap (c, ki, kj) over a run of output pixels is then a contiguous
 * slice of that plane, provided the output is computed on a grid Wg wide:
 * image i's outputs are columns i*F .. i*F + OW - 1 of each grid row, and
 * the columns between are thrown away.  So B of the GEMM is a table of
 * pointers into the planes (fm_gemm_serial_rows) and nothing is copied nine
 * times.  The backward pass uses the same trick: the weight gradient is the
 * product of the wide output gradient (its thrown-away columns zeroed) and
 * the same rows; the input gradient is a correlation of the zero-bordered
 * output gradient with the taps, whose rows are slices of that gradient
 * shifted the other way.  The price is the thrown-away columns' arithmetic;
 * sharing the padding between images keeps it small on small maps (7x7
 * maps, eight to a plane: 16%; one at a time it would be 29%).
 *
 * Strided convolutions take the same path through a polyphase split: with
 * stride s, the padded plane is cut into s*s phase planes (rows = a mod s,
 * columns = b mod s), and tap (ki, kj) reads phase (ki mod s, kj mod s)
 * shifted by (ki/s, kj/s) -- again a contiguous slice per output row.  The
 * input gradient is computed per phase: phase (a, b) of dx is the
 * correlation of the output gradient with the taps ki = a (mod s),
 * kj = b (mod s) alone.
 *
 * 3x3 stride-1 convolutions with 16 channels or more (on the vector kernel
 * sets, avx2 and avx512, which decide alike) go by Winograd's F(2x2, 3x3)
 * instead, on the same padded
 * planes: 16 products per group of images, of transformed kernels [O, C]
 * by transformed 4x4 input tiles [C, tiles], 2.25 times fewer
 * multiplications.  The input gradient is the same computation on the
 * bordered output gradient with the kernels rotated, and on even maps the
 * weight gradient is its adjoint: du[xi] = dM[xi] V[xi]^T summed over the
 * tiles, folded back to 3x3 kernels.  Each result is still summed in an
 * order fixed by the shapes.  The forward's padded planes (and a 1x1
 * convolution's im2col blocks) are kept for the backward when it will run,
 * so the weight gradient does not lay them out again. */
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

typedef struct conv_geom {
    int n, c, h, w;           /* input [N, C, H, W] */
    int o, kh, kw;            /* weight [O, C, KH, KW] */
    int oh, ow, stride, pad;  /* output [N, O, OH, OW] */
    int k;                    /* C*KH*KW: rows of the im2col matrix */
    int p;                    /* OH*OW */
    int chunk, nchunks;       /* images per chunk, number of chunks */
    int sub;                  /* chunks per chunk of the batch (fm_graph_chunks) */
    fm_chunks batch;
    /* Direct path: images per plane, the distance F between their first
     * columns, the plane's width Wg and rows Hq (a phase plane's, with
     * stride), the wide output length OH*Wg, and the plane strides of the
     * padded input (per channel and phase) and of the zero-bordered output
     * gradient (per channel). */
    bool direct;
    bool tap_major;  /* weight gradient parts [O][KH*KW][C] (conv_direct_weight_grad) */
    int group, frame, wg, hq, nw;
    size_t plane_x, plane_d, lead;
    /* Winograd (conv_wino_group): tiles per image th x tw, images per
     * product, and the most tiles of one product. */
    bool wino, wino_dw;  /* wino_dw: the weight gradient too (channels by 16) */
    bool bf16;           /* products on the bfloat16 kernels (conv_gemm) */
    int th, tw, wsub;
    size_t wnt;
} conv_geom;

/* Images per plane: as many as fit this many columns (28x28 maps: 2, 14x14:
 * 4, 7x7: 8 with a 3x3 kernel), within a chunk.  Wider planes would waste
 * a little less and need a larger workspace. */
#define CONV_DIRECT_COLS 64
/* The direct path computes Wg/(group*OW) times the arithmetic of the
 * output; it pays when that waste stays under this fraction. */
#define CONV_DIRECT_MAX_WASTE 0.2
/* Strides up to this go through the direct path (stride^2 phases). */
#define CONV_DIRECT_MAX_STRIDE 3
#define CONV_MAX_PHASES (CONV_DIRECT_MAX_STRIDE * CONV_DIRECT_MAX_STRIDE)

static size_t conv_round16(size_t n) { return (n + 15) / 16 * 16; }

/* Lays out the direct path for chunks of cg->chunk images; false when it
 * does not apply or would waste too much. */
static bool conv_direct_layout(conv_geom *cg)
{
    const int s = cg->stride, wq = (cg->w + 2 * cg->pad + s - 1) / s;
    /* A kernel narrower than the stride leaves phases unread (a strided 1x1
     * shortcut reads one of four): gathering them costs more than im2col. */
    if (s > CONV_DIRECT_MAX_STRIDE || cg->kh < s || cg->kw < s) return false;
    /* Image i+1's pixels start F columns after image i's.  With stride 1
     * they may share the zero columns between them: image i's outputs read
     * up to column i*F + W + 2*pad - 1, which must stay short of image
     * i+1's pixels.  Phase planes keep a whole padded image each. */
    if (s == 1)
        cg->frame = cg->w + cg->pad > cg->ow ? cg->w + cg->pad : cg->ow;
    else
        cg->frame = wq;
    cg->group = CONV_DIRECT_COLS / cg->frame;
    if (cg->group > cg->chunk) cg->group = cg->chunk;
    if (cg->group < 1) cg->group = 1;
    cg->wg = (cg->group - 1) * cg->frame + wq;
    cg->hq = (cg->h + 2 * cg->pad + s - 1) / s;
    return (double)(cg->wg - cg->group * cg->ow) / (cg->group * cg->ow) <= CONV_DIRECT_MAX_WASTE;
}

/* Winograd F(2x2, 3x3) computes a 3x3, stride-1, pad-1 convolution's 2x2
 * output tiles from 4x4 input tiles with 16 products of [O, C] by [C,
 * tiles] -- 2.25 times fewer multiplications than the direct product.  The
 * transforms are additions on vectors of 16 tiles, so the maps must be at
 * least WINO_MIN_TW tiles wide for them to pay. */
#define WINO_MIN_TW 4
/* Tiles per product: the transformed input and output of one product,
 * 16 * channels * tiles floats each, stay in the core's L2 cache. */
#define WINO_TILES 256
/* Floats past the end of each array the transforms read or write whole
 * vectors in (see conv_wino_input_row). */
#define WINO_SLACK 64

static void conv_wino_layout(conv_geom *cg, bool allowed)
{
    cg->th = (cg->oh + 1) / 2;
    cg->tw = (cg->ow + 1) / 2;
    cg->wino = allowed && fm_kset_active()->gemm && cg->kh == 3 && cg->kw == 3 &&
               cg->stride == 1 && cg->pad == 1 && cg->tw >= WINO_MIN_TW && cg->c >= 16 && cg->o >= 16;
    if (!cg->wino) return;
    int per = cg->th * cg->tw;
    cg->wsub = WINO_TILES / per;
    if (cg->wsub > cg->group) cg->wsub = cg->group;
    if (cg->wsub < 1) cg->wsub = 1;
    cg->wnt = (size_t)cg->wsub * per;
    /* The weight gradient's products run over every tile: on odd maps the
     * tiles past the edge (31% more on 7x7) cost more than the direct path
     * saves there (measured on ResCNN's 7x7 stage).  Its operands go
     * channel-minor, a vector of channels at a time: channels by 16
     * (AVX-512's lanes, twice AVX2's), so that both vector sets take the
     * same path and agree bit for bit. */
    cg->wino_dw = cg->c % 16 == 0 && cg->o % 16 == 0 && cg->h % 2 == 0 && cg->w % 2 == 0;
}

/* bf16: operands that are bfloat16 values, whose products must stay exact
 * (no Winograd, see fm_graph.h). */
static conv_geom conv_geom_make(const fm_graph *g, const fm_tensor *x, const fm_tensor *w,
                                int stride, int pad, bool bf16)
{
    fm_chunks ch;
    fm_graph_chunks(g, x->shape[0], &ch);
    conv_geom cg = {
        .n = x->shape[0], .c = x->shape[1], .h = x->shape[2], .w = x->shape[3],
        .o = w->shape[0], .kh = w->shape[2], .kw = w->shape[3],
        .stride = stride, .pad = pad,
    };
    cg.oh = (cg.h + 2 * pad - cg.kh) / stride + 1;
    cg.ow = (cg.w + 2 * pad - cg.kw) / stride + 1;
    cg.k = cg.c * cg.kh * cg.kw;
    cg.p = cg.oh * cg.ow;
    /* On the portable set a bf16 convolution's products stay OpenBLAS's, on
     * the rounded operands (exact products, float32 sums): the bf16 loop
     * there is a scalar one. */
    cg.bf16 = bf16 && fm_kset_active()->gemm;
    /* The batch's chunks (fm_graph_chunks): the direct path's, or cut in
     * `sub` equal parts for im2col, whose block [K, chunk*P] should fit
     * CONV_COL_FLOATS: a chunk's weight gradient is its parts' sum, then
     * the chunks' tree, whichever rank holds it. */
    int chunk = (int)(CONV_COL_FLOATS / ((int64_t)cg.k * cg.p));
    if (chunk < 1) chunk = 1;
    if (chunk > ch.size) chunk = ch.size;
    while (ch.size % chunk) chunk--;
    cg.chunk = ch.size;
    cg.sub = 1;
    cg.direct = conv_direct_layout(&cg);
    if (cg.direct) {
        cg.nw = cg.oh * cg.wg;
        conv_wino_layout(&cg, !bf16);
        /* A tap's row runs OH*Wg elements from offset (ki/s)*Wg + kj/s: up
         * to kw - 1 past the plane, into zeros of its own.  Winograd's tiles
         * on an odd map read a row past the plane (for outputs that are
         * dropped): one more zero row keeps the reads inside. */
        int xrows = cg.hq + (cg.wino && cg.h % 2);
        cg.plane_x = conv_round16((size_t)xrows * cg.wg + (size_t)cg.kw);
        /* The output gradient sits `lead` zeros in, so that rows shifted back
         * by up to ((kh-1)/s)*Wg + (kw-1)/s stay inside, and is followed by
         * zero rows up to the last phase row the input gradient reads. */
        cg.lead = (size_t)((cg.kh - 1) / stride) * cg.wg + (size_t)((cg.kw - 1) / stride);
        int rows = cg.oh > cg.hq ? cg.oh : cg.hq;
        cg.plane_d = conv_round16(cg.lead + (size_t)rows * cg.wg + 16);
        /* Segments narrower than a vector would make narrow tiles. */
        cg.tap_major = cg.c % 16 == 0;
    } else {
        cg.chunk = chunk;
        cg.sub = ch.size / chunk;
    }
    cg.batch = ch;
    cg.nchunks = (cg.n + cg.chunk - 1) / cg.chunk;
    return cg;
}

/* The products of a convolution: float32, or bfloat16 operands summed as
 * vdpbf16ps sums (fm_gemm_serial_bf16) where cg->bf16. */
static void conv_gemm(const conv_geom *cg, bool ta, bool tb, int m, int n, int k,
                      const float *a, int lda, const float *a_packed, const float *b, int ldb,
                      float beta, float *c, int ldc, float *pack)
{
    if (cg->bf16)
        fm_gemm_serial_bf16(ta, tb, m, n, k, 1.0f, a, lda, a_packed, b, ldb, beta, c, ldc, pack);
    else
        fm_gemm_serial(ta, tb, m, n, k, 1.0f, a, lda, a_packed, b, ldb, beta, c, ldc, pack);
}

/* Workspace floats of one product (B [k, n], b_table: given as a table). */
static size_t conv_pack_floats(const conv_geom *cg, int n, int k, bool b_table)
{
    return cg->bf16 ? fm_gemm_bf16_pack_floats() : fm_gemm_pack_floats(n, k, b_table);
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
        memcpy(row + p, x + (size_t)y * cg->w, (size_t)cg->w * sizeof *row);
    }
    for (int i = 0; i < p * wp; i++) row[i] = 0.0f;
    return buf;
}

/* Row copies for im2col, col2im and the direct path: the vector sets'
 * kernels (core/kernels/conv_rows.c) where the set has them, else these
 * loops -- same values, same order of additions. */

/* dst[0..n) = src + bias: one output row. */
static void conv_row_bias(float *dst, const float *src, int n, float bias, const fm_kset *ks)
{
    if (ks->row_copy) {
        ks->row_copy(dst, src, n, false, &bias);
        return;
    }
    for (int x = 0; x < n; x++) dst[x] = src[x] + bias;
}

/* dst[0..n) += src, or = src when `store`. */
static void conv_row_put(float *dst, const float *src, int n, bool store, const fm_kset *ks)
{
    if (ks->row_copy) {
        ks->row_copy(dst, src, n, !store, NULL);
    } else if (store) {
        memcpy(dst, src, (size_t)n * sizeof *dst);
    } else {
        for (int x = 0; x < n; x++) dst[x] += src[x];
    }
}

/* dst[0..n) = src[0], src[s], src[2s], ...: one output row of a tap. */
static void conv_row_gather(float *dst, const float *src, int n, int s, const fm_kset *ks)
{
    if (ks->row_copy && s == 1) {
        ks->row_copy(dst, src, n, false, NULL);
    } else if (ks->row_stride2 && s == 2) {
        ks->row_stride2(dst, src, n);
    } else {
        for (int x = 0; x < n; x++) dst[x] = src[(size_t)x * s];
    }
}

/* dst[0], dst[s], dst[2s], ... (n of them) += src[0..n), or = with `store`. */
static void conv_row_scatter(float *dst, const float *src, int n, int s, bool store,
                             const fm_kset *ks)
{
    if (s == 1) {
        conv_row_put(dst, src, n, store, ks);
    } else if (s == 2 && ks->row_scatter2 && !store) {
        ks->row_scatter2(dst, src, n);
    } else if (store) {
        for (int x = 0; x < n; x++) dst[(size_t)x * s] = src[x];
    } else {
        for (int x = 0; x < n; x++) dst[(size_t)x * s] += src[x];
    }
}

/* col [K, nb*P] (row stride nb*P) <- receptive fields of x [nb, C, H, W];
 * padbuf holds one padded plane. */
static void conv_im2col(float *col, float *padbuf, const float *x, int nb, const conv_geom *cg)
{
    const fm_kset *ks = fm_kset_active();
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
                    for (int oy = 0; oy < oh; oy++, dst += ow, src += (size_t)s * wp)
                        conv_row_gather(dst, src, ow, s, ks);
                }
        }
}

/* dx [nb, C, H, W] += (or, with `store`, =) the columns of dcol [K, nb*P]
 * folded back onto the pixels they were read from; padbuf holds one padded
 * plane. */
static void conv_col2im(float *dx, float *padbuf, const float *dcol, int nb, bool store,
                        const conv_geom *cg)
{
    size_t cols = (size_t)nb * cg->p, plane = (size_t)cg->h * cg->w;
    int s = cg->stride, p = cg->pad, wp = cg->w + 2 * p, oh = cg->oh, ow = cg->ow;
    size_t padded = (size_t)(cg->h + 2 * p) * wp;
    const fm_kset *ks = fm_kset_active();
    for (int i = 0; i < nb; i++)
        for (int c = 0; c < cg->c; c++) {
            float *xp = dx + ((size_t)i * cg->c + c) * plane;
            /* With padding, sum into a zeroed padded plane and add its
             * interior to dx; without, accumulate into dx directly. */
            float *acc = xp;
            if (p > 0) {
                acc = padbuf;
                memset(acc, 0, padded * sizeof *acc);
            } else if (store) {
                memset(acc, 0, plane * sizeof *acc);
            }
            for (int ki = 0; ki < cg->kh; ki++)
                for (int kj = 0; kj < cg->kw; kj++) {
                    const float *src = dcol + (size_t)((c * cg->kh + ki) * cg->kw + kj) * cols +
                                       (size_t)i * cg->p;
                    float *dst = acc + (size_t)ki * wp + kj;
                    for (int oy = 0; oy < oh; oy++, src += ow, dst += (size_t)s * wp)
                        conv_row_scatter(dst, src, ow, s, false, ks);
                }
            if (p > 0)
                for (int y = 0; y < cg->h; y++)
                    conv_row_put(xp + (size_t)y * cg->w, acc + (size_t)(y + p) * wp + p, cg->w,
                                 store, ks);
        }
}

/* Sum of a[0..n) in double.  Eight interleaved partial sums, combined in a
 * fixed order, hide the latency of the additions. */
static double conv_sum(const float *a, int n)
{
    double lane[8] = {0};
    fm_k_lane_sums_fn *vec = fm_kset_active()->lane_sums;
    int q = vec ? (int)vec(lane, a, n) : 0;
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
    bool dx_store;    /* dx is fresh: store into it rather than add */
    /* A bf16 convolution that does its own casts (fm_conv2d's `fused`):
     * dx rounded before it reaches x's gradient, as the cast would. */
    bool round_dx;
    float *dw_part;   // [nchunks, O, K] or NULL
    double *db_part;  // [nchunks, O] or NULL
    /* Direct dx, per phase: [C, O*taps] the phase's taps regrouped per input
     * channel, or NULL. */
    const float *wt[CONV_MAX_PHASES];
    /* The A operands shared by every chunk, packed once (NULL: pack as
     * needed): W for the forward product; for the input gradient W^T
     * (im2col) or each phase's wt (direct). */
    const float *w_packed, *dx_a_packed[CONV_MAX_PHASES];
    float *ws;        // per thread, see conv_ws_floats / conv_direct_ws
    size_t ws_stride; // floats per thread region
    /* Direct path: every group's padded input [C][phases][plane_x], laid
     * out by the forward and kept for the weight gradient (NULL: each pass
     * pads into its workspace). */
    float *xp_saved;
    /* im2col path, where the block is no larger than the input (1x1
     * convolutions): every chunk's col [K, chunk*P], kept the same way. */
    float *col_saved;
    /* Winograd: the transformed kernels u [16][O'][C'] of this pass's
     * product (C' channels in, O' out) and each one packed. */
    const float *wino_u, *wino_a[16];
} conv_job;

/* A thread's region on the direct path: GEMM pack, row table, padded input
 * [C][phases][plane_x] and (tap_major) the same channel-minor
 * [phases][plane_x][C], bordered output gradient [O][plane_d], product
 * [O][nw] or [phases][C][Hq*Wg] (or, for Winograd's weight gradient, the
 * bordered gradient channel-minor [plane_d][O]), and Winograd's transforms. */
typedef struct conv_direct_ws {
    float *pack;
    const float **rows;
    float *xp, *xt, *d, *out;
    float *wv, *wm;  /* Winograd: transformed input [16][C'][wnt] and output [16][O'][wnt] */
} conv_direct_ws;

static size_t conv_max(size_t a, size_t b) { return a > b ? a : b; }

static size_t conv_direct_floats(const conv_geom *cg, conv_direct_ws *ws, float *base)
{
    size_t taps = (size_t)cg->kh * cg->kw, hw = (size_t)cg->hq * cg->wg;
    size_t phases = (size_t)cg->stride * cg->stride;
    size_t pack = conv_max(conv_pack_floats(cg, cg->nw, cg->k, true),
                           conv_max(conv_pack_floats(cg, cg->k, cg->nw, true),
                                    conv_pack_floats(cg, (int)hw, (int)(cg->o * taps), true)));
    size_t wino = 0;
    if (cg->wino)
        wino = conv_round16(16 * (conv_max((size_t)cg->c, (size_t)cg->o) * cg->wnt + WINO_SLACK));
    size_t sizes[8] = {
        conv_round16(pack),
        conv_round16(2 * conv_max((size_t)cg->k, cg->o * taps)), /* pointers */
        (size_t)cg->c * phases * cg->plane_x,
        cg->tap_major ? (size_t)cg->c * phases * cg->plane_x : 0,
        (size_t)cg->o * cg->plane_d,
        conv_round16(conv_max(conv_max((size_t)cg->o * cg->nw, phases * cg->c * hw),
                              cg->wino_dw ? (size_t)cg->o * cg->plane_d : 0)),
        wino,
        wino,
    };
    size_t at[8], total = 0;
    for (int i = 0; i < 8; i++) {
        at[i] = total;
        total += sizes[i];
    }
    if (ws)
        *ws = (conv_direct_ws){base + at[0], (const float **)(base + at[1]), base + at[2],
                               base + at[3], base + at[4], base + at[5], base + at[6],
                               base + at[7]};
    return total;
}

/* A thread's region on the im2col path: GEMM pack, col [K, chunk*P], a
 * staging block [O, chunk*P] (the forward's output, the backward's dy) and
 * one padded plane. */
typedef struct conv_im2col_ws {
    float *pack, *col, *stage, *padbuf;
} conv_im2col_ws;

static size_t conv_im2col_floats(const conv_geom *cg, conv_im2col_ws *ws, float *base)
{
    size_t cols = (size_t)cg->chunk * cg->p;
    size_t padded = (size_t)(cg->h + 2 * cg->pad) * (size_t)(cg->w + 2 * cg->pad);
    /* The products' B are plain matrices: the pack does not depend on them. */
    size_t pack = conv_round16(conv_pack_floats(cg, 0, 0, false));
    float *col = base + pack;
    if (ws) *ws = (conv_im2col_ws){base, col, col + cg->k * cols, col + (cg->k + cg->o) * cols};
    /* Rounded so that every thread's region stays 64-byte aligned. */
    return conv_round16(pack + ((size_t)cg->k + (size_t)cg->o) * cols + padded);
}

static size_t conv_ws_floats(const conv_geom *cg)
{
    return cg->direct ? conv_direct_floats(cg, NULL, NULL) : conv_im2col_floats(cg, NULL, NULL);
}

/* Chunk `task`: its first image (*n0) and number of images (returned), and
 * the calling thread's workspace (*ws). */
static int conv_task_span(const conv_job *j, int task, int thread, int *n0, float **ws)
{
    const conv_geom *cg = &j->cg;
    *n0 = task * cg->chunk;
    *ws = j->ws + (size_t)thread * j->ws_stride;
    return cg->n - *n0 < cg->chunk ? cg->n - *n0 : cg->chunk;
}

static float *conv_ws_alloc(fm_graph *g, const conv_geom *cg, size_t *stride)
{
    *stride = conv_ws_floats(cg);
    return fm_graph_alloc(g, *stride * (size_t)fm_get_threads() * sizeof(float));
}

/* xp [C][phases][plane_x] <- the nb (<= group) images x [nb, C, H, W] side
 * by side, split into phases, zeros everywhere else. */
static void conv_direct_pad_input(float *xp, const float *x, int nb, const conv_geom *cg)
{
    const int s = cg->stride, p = cg->pad;
    const size_t plane = (size_t)cg->h * cg->w;
    const fm_kset *ks = fm_kset_active();
    memset(xp, 0, (size_t)cg->c * s * s * cg->plane_x * sizeof *xp);
    for (int i = 0; i < nb; i++)
        for (int c = 0; c < cg->c; c++)
            for (int y = 0; y < cg->h; y++) {
                const float *src = x + ((size_t)i * cg->c + c) * plane + (size_t)y * cg->w;
                int a = (y + p) % s, u = (y + p) / s;
                /* Pixels x = r (mod s) land in phase column b = (r + p) mod s,
                 * from v = (r + p) / s on. */
                float *dst[CONV_DIRECT_MAX_STRIDE];
                for (int r = 0; r < s && r < cg->w; r++)
                    dst[r] = xp + ((size_t)c * s * s + (size_t)a * s + (r + p) % s) * cg->plane_x +
                             (size_t)u * cg->wg + (size_t)i * cg->frame + (r + p) / s;
                if (s == 2 && ks->row_unweave2 && cg->w > 1) {
                    ks->row_unweave2(dst[0], dst[1], src, cg->w);
                    continue;
                }
                for (int r = 0; r < s && r < cg->w; r++)
                    conv_row_gather(dst[r], src + r, (cg->w - r + s - 1) / s, s, ks);
            }
}

/* Where tap (ki, kj)'s row starts within one channel's phase planes: phase
 * (ki mod s, kj mod s) shifted by (ki/s, kj/s). */
static size_t conv_tap_offset(const conv_geom *cg, int ki, int kj)
{
    const int s = cg->stride;
    return (size_t)((ki % s) * s + kj % s) * cg->plane_x + (size_t)(ki / s) * cg->wg +
           (size_t)(kj / s);
}

/* Row (c, ki, kj) of the implicit im2col matrix: plane c's phases shifted
 * by the tap. */
static void conv_direct_input_rows(const float **rows, const float *xp, const conv_geom *cg)
{
    const size_t channel = (size_t)cg->stride * cg->stride * cg->plane_x;
    for (int c = 0; c < cg->c; c++)
        for (int ki = 0; ki < cg->kh; ki++)
            for (int kj = 0; kj < cg->kw; kj++)
                *rows++ = xp + (size_t)c * channel + conv_tap_offset(cg, ki, kj);
}

/* Phase (a, b) of the input gradient: its taps (th x tw of them) and the
 * phase rows u0 .. u0+rows-1 that hold real (unpadded) input rows. */
typedef struct conv_phase {
    int th, tw, u0, rows;
} conv_phase;

static conv_phase conv_phase_make(const conv_geom *cg, int a, int b)
{
    const int s = cg->stride, p = cg->pad;
    conv_phase ph = {
        .th = a < cg->kh ? (cg->kh - a + s - 1) / s : 0,
        .tw = b < cg->kw ? (cg->kw - b + s - 1) / s : 0,
        .u0 = p > a ? (p - a + s - 1) / s : 0,
    };
    /* Padded row s*u + a holds input row s*u + a - p. */
    ph.rows = (p + cg->h - 1 - a) / s - ph.u0 + 1;
    return ph;
}

/* The group of images from i on, within the chunk n0 .. n0+nb-1. */
static int conv_group_size(int i, int n0, int nb, const conv_geom *cg)
{
    return n0 + nb - i < cg->group ? n0 + nb - i : cg->group;
}

/* Floats of one group's padded input, and of every group's of the batch
 * (groups start afresh in each chunk). */
static size_t conv_group_floats(const conv_geom *cg)
{
    return (size_t)cg->c * cg->stride * cg->stride * cg->plane_x;
}

static size_t conv_groups_per_chunk(const conv_geom *cg)
{
    return (size_t)(cg->chunk + cg->group - 1) / cg->group;
}

static size_t conv_saved_floats(const conv_geom *cg)
{
    /* + what Winograd's input transform reads past the last plane */
    return (size_t)cg->nchunks * conv_groups_per_chunk(cg) * conv_group_floats(cg) + WINO_SLACK;
}

/* Where the group of images from i on keeps its padded input: its slot of
 * the saved planes, or the thread's workspace. */
static float *conv_group_planes(const conv_job *j, int i, const conv_direct_ws *ws)
{
    const conv_geom *cg = &j->cg;
    if (!j->xp_saved) return ws->xp;
    size_t group = (size_t)(i / cg->chunk) * conv_groups_per_chunk(cg) +
                   (size_t)(i % cg->chunk / cg->group);
    return j->xp_saved + group * conv_group_floats(cg);
}

/* Row a of G applied to three values: G = [1 0 0; 1/2 1/2 1/2;
 * 1/2 -1/2 1/2; 0 0 1]. */
static float conv_wino_g(int a, float k0, float k1, float k2)
{
    switch (a) {
    case 0: return k0;
    case 1: return 0.5f * ((k0 + k1) + k2);
    case 2: return 0.5f * ((k0 - k1) + k2);
    default: return k2;
    }
}

/* u [O'][C'] = (G k G^T)[a][b] (xi = 4a + b) of every kernel: of w [O][C][3][3]
 * (O' = O, C' = C) for the forward's product, or, with `flip`, of the
 * kernels rotated by 180 degrees and transposed (O' = C, C' = O) -- the
 * input gradient is the correlation of dy with those. */
static void conv_wino_weights(float *u, int xi, const float *w, int o, int c, bool flip)
{
    const int a = xi / 4, b = xi % 4;
    for (int oo = 0; oo < o; oo++)
        for (int cc = 0; cc < c; cc++) {
            const float *k = w + ((size_t)oo * c + cc) * 9;
            float t[3];
            for (int jj = 0; jj < 3; jj++) {
                /* column jj of k, rotated with flip */
                if (flip)
                    t[jj] = conv_wino_g(a, k[8 - jj], k[5 - jj], k[2 - jj]);
                else
                    t[jj] = conv_wino_g(a, k[jj], k[3 + jj], k[6 + jj]);
            }
            u[flip ? (size_t)cc * o + oo : (size_t)oo * c + cc] = conv_wino_g(b, t[0], t[1], t[2]);
        }
}

/* The transforms themselves run in the vector sets' kernels
 * (core/kernels/winograd.c), as do the products: Winograd runs on those
 * sets only. */

/* The gn images' share of the transformed weight gradient, summed into
 * chunk `task`'s part du [16][O][C] (overwritten for the chunk's first
 * group): du[xi] = dM[xi] V[xi] over the tiles, dM [O][tiles] the
 * transformed output gradient (from the bordered ws->d), V [tiles][C] the
 * transformed input (from the padded planes xp).  Both come from
 * channel-minor copies of the planes, so that dM is written packed and V
 * as plain rows: the products pack nothing. */
static void conv_wino_weight_grad(const conv_job *j, int task, bool first, int gn,
                                  const float *xp, const conv_direct_ws *ws)
{
    const conv_geom *cg = &j->cg;
    const int per = cg->th * cg->tw;
    float *du = j->dw_part + (size_t)task * 16 * cg->o * cg->c;
    float *dt = ws->out;  /* the bordered gradient channel-minor [plane_d][O] */
    const fm_kset *ks = fm_kset_active();
    fm_transpose(ws->xt, (size_t)cg->c, xp, cg->plane_x, cg->c, (int)cg->plane_x);
    fm_transpose(dt, (size_t)cg->o, ws->d, cg->plane_d, cg->o, (int)cg->plane_d);
    for (int g0 = 0; g0 < gn; g0 += cg->wsub) {
        int sub = gn - g0 < cg->wsub ? gn - g0 : cg->wsub;
        size_t nt = (size_t)sub * per;
        size_t vstride = nt * cg->c, mstride = nt * cg->o;
        for (int g = 0; g < sub; g++)
            for (int ty = 0; ty < cg->th; ty++)
                for (int tx = 0; tx < cg->tw; tx++) {
                    size_t t = (size_t)(g * cg->th + ty) * cg->tw + tx;
                    size_t pos = (size_t)(2 * ty) * cg->wg + (size_t)(g0 + g) * cg->frame +
                                 (size_t)(2 * tx);
                    ks->wino_grad_tile(ws->wv + t * cg->c, vstride, ws->xt + pos * cg->c,
                                       (size_t)cg->c, (size_t)cg->wg, cg->c, ws->wm, mstride,
                                       dt + (cg->lead + pos) * cg->o, (size_t)cg->o,
                                       (size_t)cg->wg, cg->o, t, nt);
                }
        float beta = first && g0 == 0 ? 0.0f : 1.0f;
        /* (A is only there packed: this path runs where the own kernel does.) */
        for (int xi = 0; xi < 16; xi++)
            fm_gemm_serial(false, false, cg->o, cg->c, (int)nt, 1.0f, ws->wm + xi * mstride,
                           (int)nt, ws->wm + xi * mstride, ws->wv + xi * vstride, cg->c, beta,
                           du + (size_t)xi * cg->o * cg->c, cg->c, ws->pack);
    }
}

/* dW [O][C][3][3] += G^T du G for every (o, c), du [16][O][C] the summed
 * transformed gradient (the adjoint of conv_wino_weights). */
static void conv_wino_weight_grad_fold(float *dw, const float *du, int o, int c)
{
    size_t xi = (size_t)o * c;
    for (size_t oc = 0; oc < xi; oc++) {
        float u[4][4], t[3][4];
        for (int a = 0; a < 4; a++)
            for (int b = 0; b < 4; b++) u[a][b] = du[(size_t)(4 * a + b) * xi + oc];
        for (int b = 0; b < 4; b++) {
            t[0][b] = u[0][b] + 0.5f * (u[1][b] + u[2][b]);
            t[1][b] = 0.5f * (u[1][b] - u[2][b]);
            t[2][b] = 0.5f * (u[1][b] + u[2][b]) + u[3][b];
        }
        float *k = dw + oc * 9;
        for (int i = 0; i < 3; i++) {
            k[3 * i] += t[i][0] + 0.5f * (t[i][1] + t[i][2]);
            k[3 * i + 1] += 0.5f * (t[i][1] - t[i][2]);
            k[3 * i + 2] += 0.5f * (t[i][1] + t[i][2]) + t[i][3];
        }
    }
}

/* The gn images of a group by Winograd: cin channels of padded images in
 * src (padded pixel (r, c) of image g, channel ch at
 * src + ch*cstride + r*Wg + g*F + c) to cout channels of dst [gn, cout, H, W]
 * (+ bias, stored or added).  wino_u and wino_a are the job's transformed
 * kernels [16][cout][cin]. */
static void conv_wino_group(const conv_job *j, const float *src, size_t cstride, int cin,
                            int cout, float *dst, const float *bias, bool store, int gn,
                            const conv_direct_ws *ws)
{
    const conv_geom *cg = &j->cg;
    const fm_kset *ks = fm_kset_active();
    const int per = cg->th * cg->tw;
    const size_t plane = (size_t)cg->h * cg->w;
    for (int g0 = 0; g0 < gn; g0 += cg->wsub) {
        int sub = gn - g0 < cg->wsub ? gn - g0 : cg->wsub;
        size_t nt = (size_t)sub * per;
        size_t vstride = (size_t)cin * nt + WINO_SLACK, mstride = (size_t)cout * nt + WINO_SLACK;
        for (int c = 0; c < cin; c++)
            for (int g = 0; g < sub; g++)
                ks->wino_input_plane(ws->wv + c * nt + (size_t)g * per, vstride,
                                     src + c * cstride + (size_t)(g0 + g) * cg->frame,
                                     (size_t)cg->wg, cg->th, cg->tw);
        for (int xi = 0; xi < 16; xi++)
            fm_gemm_serial(false, false, cout, (int)nt, cin, 1.0f,
                           j->wino_u + (size_t)xi * cout * cin, cin, j->wino_a[xi],
                           ws->wv + xi * vstride, (int)nt, 0.0f, ws->wm + xi * mstride, (int)nt,
                           ws->pack);
        for (int g = 0; g < sub; g++)
            for (int o = 0; o < cout; o++)
                ks->wino_output_plane(dst + ((size_t)(g0 + g) * cout + o) * plane,
                                      ws->wm + o * nt + (size_t)g * per, mstride, cg->th,
                                      cg->tw, cg->h, cg->w, bias ? bias + o : NULL, store);
    }
}

static void conv_direct_forward(const conv_job *j, int n0, int nb, const conv_direct_ws *ws)
{
    const conv_geom *cg = &j->cg;
    const fm_kset *ks = fm_kset_active();
    for (int i = n0, gn; i < n0 + nb; i += gn) {
        gn = conv_group_size(i, n0, nb, cg);
        float *xp = conv_group_planes(j, i, ws);
        conv_direct_pad_input(xp, j->x + (size_t)i * cg->c * cg->h * cg->w, gn, cg);
        if (cg->wino) {
            conv_wino_group(j, xp, cg->plane_x, cg->c, cg->o, j->y + (size_t)i * cg->o * cg->p,
                            j->b, true, gn, ws);
            continue;
        }
        conv_direct_input_rows(ws->rows, xp, cg);
        fm_gemm_serial_rows(cg->bf16, false, false, cg->o, cg->nw, cg->k, 1.0f, j->w, cg->k,
                            j->w_packed, ws->rows, 0.0f, ws->out, cg->nw, ws->pack);
        for (int g = 0; g < gn; g++)
            for (int o = 0; o < cg->o; o++) {
                float *dst = j->y + ((size_t)(i + g) * cg->o + o) * cg->p;
                const float *src = ws->out + (size_t)o * cg->nw + (size_t)g * cg->frame;
                float bias = j->b ? j->b[o] : 0.0f;
                for (int oy = 0; oy < cg->oh; oy++, dst += cg->ow, src += cg->wg)
                    conv_row_bias(dst, src, cg->ow, bias, ks);
            }
    }
}

/* d [O][plane_d] <- the nb images' dy [nb, O, OH, OW] laid on the wide grid
 * `lead` zeros in, the thrown-away columns and everything around zero. */
static void conv_direct_border_grad(float *d, const float *dy, int nb, const conv_geom *cg)
{
    memset(d, 0, (size_t)cg->o * cg->plane_d * sizeof *d);
    for (int i = 0; i < nb; i++)
        for (int o = 0; o < cg->o; o++) {
            const float *src = dy + ((size_t)i * cg->o + o) * cg->p;
            float *row = d + (size_t)o * cg->plane_d + cg->lead + (size_t)i * cg->frame;
            for (int oy = 0; oy < cg->oh; oy++, row += cg->wg, src += cg->ow)
                memcpy(row, src, (size_t)cg->ow * sizeof *row);
        }
}

/* A group's share of the weight gradient, summed into chunk `task`'s part
 * (overwriting it for the chunk's first group): dW = dout_wide [O, nw] .
 * rows^T, where row (c, tap) of the implicit im2col matrix is the group's
 * padded input xp shifted by the tap.  With tap_major, the part is [O][KH*KW][C] and
 * the planes are first laid out channel-minor: then a tap's rows are one
 * contiguous segment per position and B needs no packing -- one transpose
 * of the planes instead of transposing every tap's rows. */
static void conv_direct_weight_grad(const conv_job *j, int task, bool first, const float *xp,
                                    const conv_direct_ws *ws)
{
    const conv_geom *cg = &j->cg;
    const int s = cg->stride;
    const size_t positions = (size_t)s * s * cg->plane_x;
    float *dw = j->dw_part + (size_t)task * cg->o * cg->k;
    if (!cg->tap_major) {
        conv_direct_input_rows(ws->rows, xp, cg);
        fm_gemm_serial_rows(cg->bf16, false, true, cg->o, cg->k, cg->nw, 1.0f, ws->d + cg->lead,
                            (int)cg->plane_d, NULL, ws->rows, first ? 0.0f : 1.0f, dw, cg->k,
                            ws->pack);
        return;
    }
    fm_transpose(ws->xt, (size_t)cg->c, xp, positions, cg->c, (int)positions);
    /* With stride 1 a row of taps (ki, 0 .. KW-1) reads consecutive
     * positions: one segment KW*C wide, so the tiles are wide too. */
    const int run = s == 1 ? cg->kw : 1;
    const float **seg = ws->rows;
    for (int ki = 0; ki < cg->kh; ki++)
        for (int kj = 0; kj < cg->kw; kj += run)
            *seg++ = ws->xt + conv_tap_offset(cg, ki, kj) * cg->c;
    fm_gemm_serial_segs(cg->bf16, cg->o, cg->k, cg->nw, 1.0f, ws->d + cg->lead, (int)cg->plane_d,
                        ws->rows, run * cg->c, cg->c, first ? 0.0f : 1.0f, dw, cg->k, ws->pack);
}

/* dx of the gn images from i on, from the bordered output gradient in ws->d:
 * phase by phase, padded-input position (s*u + a, s*v + b) gets tap
 * (a + s*m, b + s*n) of output (u - m, v - n), so its rows are the gradient
 * plane shifted back by m*Wg + n; then the phases are woven back into dx. */
static void conv_direct_input_grad(const conv_job *j, int i, int gn, const conv_direct_ws *ws)
{
    const conv_geom *cg = &j->cg;
    const int s = cg->stride, p = cg->pad;
    const size_t phase_out = (size_t)cg->c * cg->hq * cg->wg;
    conv_phase ph[CONV_MAX_PHASES];
    for (int a = 0; a < s; a++)
        for (int b = 0; b < s; b++) {
            conv_phase *f = &ph[a * s + b];
            *f = conv_phase_make(cg, a, b);
            const float **r = ws->rows;
            for (int o = 0; o < cg->o; o++)
                for (int m = 0; m < f->th; m++)
                    for (int n = 0; n < f->tw; n++)
                        *r++ = ws->d + (size_t)o * cg->plane_d + cg->lead +
                               ((ptrdiff_t)(f->u0 - m) * cg->wg - n);
            int taps = f->th * f->tw, wide = f->rows * cg->wg;
            float *out = ws->out + (size_t)(a * s + b) * phase_out;
            fm_gemm_serial_rows(cg->bf16, false, false, cg->c, wide, cg->o * taps, 1.0f,
                                j->wt[a * s + b], cg->o * taps, j->dx_a_packed[a * s + b],
                                ws->rows, 0.0f, out, wide, ws->pack);
            /* The cast's backward adds round(dx) to a gradient that is zero
             * when fresh: a stored -0 becomes +0 there too (-0 + x is x). */
            const float zero = j->dx_store ? 0.0f : -0.0f;
            if (j->round_dx)
                for (size_t e = 0; e < (size_t)cg->c * wide; e++)
                    out[e] = zero + fm_ops_bf16_round(out[e]);
        }
    const fm_kset *ks = fm_kset_active();
    for (int g = 0; g < gn; g++)
        for (int c = 0; c < cg->c; c++)
            for (int y = 0; y < cg->h; y++) {
                float *dst = j->dx + (((size_t)(i + g) * cg->c + c) * cg->h + y) * cg->w;
                int a = (y + p) % s, u = (y + p) / s;
                /* Pixels x = r (mod s) come from phase column b = (r + p) mod s. */
                const float *src[CONV_DIRECT_MAX_STRIDE];
                for (int r = 0; r < s && r < cg->w; r++) {
                    int b = (r + p) % s;
                    const conv_phase *f = &ph[a * s + b];
                    src[r] = ws->out + (size_t)(a * s + b) * phase_out +
                             ((size_t)c * f->rows + (size_t)(u - f->u0)) * cg->wg +
                             (size_t)g * cg->frame + (size_t)((r + p) / s);
                }
                if (s == 2 && ks->row_weave2 && cg->w > 1) {
                    ks->row_weave2(dst, src[0], src[1], cg->w, j->dx_store);
                    continue;
                }
                for (int r = 0; r < s && r < cg->w; r++)
                    conv_row_scatter(dst + r, src[r], (cg->w - r + s - 1) / s, s, j->dx_store,
                                     ks);
            }
}

static void conv_direct_backward(const conv_job *j, int task, int n0, int nb,
                                 const conv_direct_ws *ws)
{
    const conv_geom *cg = &j->cg;
    for (int i = n0, gn; i < n0 + nb; i += gn) {
        gn = conv_group_size(i, n0, nb, cg);
        conv_direct_border_grad(ws->d, j->dy + (size_t)i * cg->o * cg->p, gn, cg);
        if (j->db_part)
            for (int o = 0; o < cg->o; o++)
                j->db_part[(size_t)task * cg->o + o] +=
                    conv_sum(ws->d + (size_t)o * cg->plane_d + cg->lead, cg->nw);
        if (j->dw_part) {
            /* The group's padded input: the forward's, or laid out again. */
            if (!j->xp_saved)
                conv_direct_pad_input(ws->xp, j->x + (size_t)i * cg->c * cg->h * cg->w, gn, cg);
            const float *xp = conv_group_planes(j, i, ws);
            if (cg->wino_dw)
                conv_wino_weight_grad(j, task, i == n0, gn, xp, ws);
            else
                conv_direct_weight_grad(j, task, i == n0, xp, ws);
        }
        if (j->dx && cg->wino)
            /* dy with one zero around: padded (r, c) is dy (r-1, c-1). */
            conv_wino_group(j, ws->d + cg->lead - cg->wg - 1, cg->plane_d, cg->o, cg->c,
                            j->dx + (size_t)i * cg->c * cg->h * cg->w, NULL, j->dx_store, gn,
                            ws);
        else if (j->dx)
            conv_direct_input_grad(j, i, gn, ws);
    }
}

/* Whether the im2col path keeps its blocks for the backward: when they are
 * no larger than the input. */
static bool conv_saves_col(const conv_geom *cg)
{
    return !cg->direct && (size_t)cg->k * cg->p <= (size_t)cg->c * cg->h * cg->w;
}

/* Chunk `task`'s im2col block: its slot of the saved blocks, or the
 * thread's workspace. */
static float *conv_chunk_col(const conv_job *j, int task, const conv_im2col_ws *ws)
{
    const conv_geom *cg = &j->cg;
    if (!j->col_saved) return ws->col;
    return j->col_saved + (size_t)task * cg->k * cg->chunk * cg->p;
}

/* The im2col path's forward for chunk `task`, the nb images from n0. */
static void conv_im2col_forward(const conv_job *j, int task, int n0, int nb,
                                const conv_im2col_ws *ws)
{
    const conv_geom *cg = &j->cg;
    int cols = nb * cg->p;
    float *col = conv_chunk_col(j, task, ws);
    conv_im2col(col, ws->padbuf, j->x + (size_t)n0 * cg->c * cg->h * cg->w, nb, cg);
    /* One image's [O, P] block is its slice of y: no staging copy, the bias
     * is then added in place. */
    float *gemm_out = nb == 1 ? j->y + (size_t)n0 * cg->o * cg->p : ws->stage;
    conv_gemm(cg, false, false, cg->o, cols, cg->k, j->w, cg->k, j->w_packed, col, cols, 0.0f,
              gemm_out, cols, ws->pack);
    if (nb == 1 && !j->b) return;
    const fm_kset *ks = fm_kset_active();
    for (int i = 0; i < nb; i++)
        for (int o = 0; o < cg->o; o++)
            conv_row_bias(j->y + ((size_t)(n0 + i) * cg->o + o) * cg->p,
                          gemm_out + (size_t)o * cols + (size_t)i * cg->p, cg->p,
                          j->b ? j->b[o] : 0.0f, ks);
}

/* The im2col path's backward for chunk `task`, the nb images from n0. */
static void conv_im2col_backward(const conv_job *j, int task, int n0, int nb,
                                 const conv_im2col_ws *ws)
{
    const conv_geom *cg = &j->cg;
    int cols = nb * cg->p;
    /* dy of the chunk as [O, nb*P]; for one image that is its slice of dy. */
    const float *dout = j->dy + (size_t)n0 * cg->o * cg->p;
    if (nb > 1) {
        for (int i = 0; i < nb; i++)
            for (int o = 0; o < cg->o; o++)
                memcpy(ws->stage + (size_t)o * cols + (size_t)i * cg->p,
                       j->dy + ((size_t)(n0 + i) * cg->o + o) * cg->p,
                       (size_t)cg->p * sizeof *ws->stage);
        dout = ws->stage;
    }
    if (j->db_part)
        for (int o = 0; o < cg->o; o++)
            j->db_part[(size_t)task * cg->o + o] = conv_sum(dout + (size_t)o * cols, cols);
    if (j->dw_part) {
        const float *col = conv_chunk_col(j, task, ws);
        if (!j->col_saved)
            conv_im2col(ws->col, ws->padbuf, j->x + (size_t)n0 * cg->c * cg->h * cg->w, nb, cg);
        conv_gemm(cg, false, true, cg->o, cg->k, cols, dout, cols, NULL, col, cols, 0.0f,
                  j->dw_part + (size_t)task * cg->o * cg->k, cg->k, ws->pack);
    }
    if (j->dx) {
        conv_gemm(cg, true, false, cg->k, cols, cg->o, j->w, cg->k, j->dx_a_packed[0], dout,
                  cols, 0.0f, ws->col, cols, ws->pack);
        conv_col2im(j->dx + (size_t)n0 * cg->c * cg->h * cg->w, ws->padbuf, ws->col, nb,
                    j->dx_store, cg);
    }
}

/* Chunk `task` of the forward, or of the backward when the job has dy: the
 * calling thread's workspace laid out for the path, then the path's work. */
static void conv_task(void *arg, int task, int thread)
{
    const conv_job *j = arg;
    int n0;
    float *base;
    int nb = conv_task_span(j, task, thread, &n0, &base);
    if (j->cg.direct) {
        conv_direct_ws ws;
        conv_direct_floats(&j->cg, &ws, base);
        if (j->dy)
            conv_direct_backward(j, task, n0, nb, &ws);
        else
            conv_direct_forward(j, n0, nb, &ws);
        return;
    }
    conv_im2col_ws ws;
    conv_im2col_floats(&j->cg, &ws, base);
    if (j->dy)
        conv_im2col_backward(j, task, n0, nb, &ws);
    else
        conv_im2col_forward(j, task, n0, nb, &ws);
}

/* Whether bf16 convolutions on the direct path do their own casts
 * (fm_conv2d_bf16_fuse). */
static bool conv_bf16_fuse = true;

void fm_conv2d_bf16_fuse(bool on) { conv_bf16_fuse = on; }

fm_tensor *fm_conv2d(fm_graph *g, fm_tensor *x, fm_tensor *w, fm_tensor *b, int stride, int pad)
{
    FM_ASSERT(fm_ops_is_f32(x) && fm_ops_is_f32(w));
    FM_ASSERT(x->ndim == 4 && w->ndim == 4);
    FM_ASSERT(x->shape[1] == w->shape[1]);
    FM_ASSERT(stride >= 1 && pad >= 0);
    FM_ASSERT(x->shape[2] + 2 * pad >= w->shape[2] && x->shape[3] + 2 * pad >= w->shape[3]);
    if (b) FM_ASSERT(fm_ops_is_f32(b) && b->ndim == 1 && b->shape[0] == w->shape[0]);
    bool bf16 = fm_graph_precision(g) == FM_PRECISION_BF16;
    conv_geom cg = conv_geom_make(g, x, w, stride, pad, bf16);
    /* The direct path on the bf16 kernels rounds x and w as it packs them,
     * and rounds its own gradients: no cast (and no copy of x) needed. */
    bool fused = bf16 && cg.bf16 && cg.direct && conv_bf16_fuse;
    if (bf16 && !fused) fm_ops_autocast(g, &x, &w, &b);
    fm_node *n = fm_node_new(g, FM_OP_CONV2D, 3, (fm_tensor *[]){x, w, b});
    n->iarg[0] = stride;
    n->iarg[1] = pad;
    n->iarg[2] = bf16;
    n->iarg[3] = fused;  /* rounds its own operands, bias and gradients */
    n->out = fm_graph_tensor(g, 4, (int[]){cg.n, cg.o, cg.oh, cg.ow});
    fm_tensor *y = fm_graph_apply(g, n);
    return bf16 ? fm_ops_to_bf16_in_place(g, y) : y;
}

/* dW += the batch's sum of the weight gradient (the chunks' tree), laid
 * out as dW. */
typedef struct conv_dw_add_job {
    const float *sum;  // [O*K], K as (c, tap), or (tap, c) when tap_major
    float *dw;         // [O*K]
    bool tap_major;
    int c, taps;
    bool round;        /* dw += round(0 + sum): a fused bf16 convolution's cast */
} conv_dw_add_job;

static void conv_dw_add_range(void *arg, int64_t begin, int64_t end)
{
    const conv_dw_add_job *j = arg;
    /* A block at a time: vectorised passes over a buffer in the cache. */
    float acc[1024];
    for (int64_t b0 = begin; b0 < end; b0 += 1024) {
        int64_t len = end - b0 < 1024 ? end - b0 : 1024;
        memcpy(acc, j->sum + b0, (size_t)len * sizeof *acc);
        if (j->round)
            for (int64_t i = 0; i < len; i++) acc[i] = fm_ops_bf16_round(0.0f + acc[i]);
        if (!j->tap_major) {
            for (int64_t i = 0; i < len; i++) j->dw[b0 + i] += acc[i];
            continue;
        }
        /* Element (o, tap, c) of the parts is (o, c, tap) of dW. */
        const int64_t k = (int64_t)j->c * j->taps;
        int64_t o = b0 / k, tap = b0 % k / j->c, c = b0 % j->c;
        for (int64_t i = 0; i < len; i++) {
            j->dw[o * k + c * j->taps + tap] += acc[i];
            if (++c == j->c) {
                c = 0;
                if (++tap == j->taps) {
                    tap = 0;
                    o++;
                }
            }
        }
    }
}

/* part [chunks, size]: chunk c's part = the sum of parts c*sub ..
 * c*sub + sub - 1 (those below nparts), in order, in place. */
typedef struct conv_sub_sum_job {
    float *part;
    size_t size;
    int sub, nparts, chunks;
} conv_sub_sum_job;

static void conv_sub_sum_range(void *arg, int64_t begin, int64_t end)
{
    const conv_sub_sum_job *j = arg;
    for (int c = 0; c < j->chunks; c++) {
        float *dst = j->part + (size_t)c * j->size;
        const float *first = j->part + (size_t)c * j->sub * j->size;
        if (dst != first) memcpy(dst + begin, first + begin, (size_t)(end - begin) * sizeof *dst);
        for (int t = c * j->sub + 1; t < (c + 1) * j->sub && t < j->nparts; t++) {
            const float *p = j->part + (size_t)t * j->size;
            for (int64_t i = begin; i < end; i++) dst[i] += p[i];
        }
    }
}

/* op(A) [m, k] packed once in the arena for all chunks, for the products
 * cg runs; NULL on the portable set. */
static const float *conv_prepack(fm_graph *g, const conv_geom *cg, bool trans, int m, int k,
                                 const float *a, int lda)
{
    size_t floats = cg->bf16 ? fm_gemm_bf16_prepacked_floats(m, k) : fm_gemm_prepacked_floats(m, k);
    if (floats == 0) return NULL;
    float *dst = fm_graph_alloc(g, floats * sizeof(float));
    return cg->bf16 ? fm_gemm_bf16_prepack_a(trans, m, k, a, lda, dst)
                    : fm_gemm_prepack_a(trans, m, k, a, lda, dst);
}

/* The job's Winograd kernels for the forward (flip false) or the input
 * gradient, in the arena. */
typedef struct conv_wino_prep {
    const conv_job *j;
    float *u, *packed[16];
    int cout, cin;
    bool flip;
} conv_wino_prep;

static void conv_wino_prepare_task(void *arg, int xi, int thread)
{
    (void)thread;
    const conv_wino_prep *p = arg;
    float *u = p->u + (size_t)xi * p->cout * p->cin;
    conv_wino_weights(u, xi, p->j->w, p->j->cg.o, p->j->cg.c, p->flip);
    fm_gemm_prepack_a(false, p->cout, p->cin, u, p->cin, p->packed[xi]);
}

static void conv_wino_prepare(fm_graph *g, conv_job *j, bool flip)
{
    const conv_geom *cg = &j->cg;
    conv_wino_prep p = {.j = j, .cout = flip ? cg->c : cg->o, .cin = flip ? cg->o : cg->c,
                        .flip = flip};
    size_t floats = (size_t)p.cout * p.cin;
    p.u = fm_graph_alloc(g, 16 * floats * sizeof(float));
    for (int xi = 0; xi < 16; xi++)
        p.packed[xi] = fm_graph_alloc(g, fm_gemm_prepacked_floats(p.cout, p.cin) * sizeof(float));
    /* Sixteen transforms and packings of up to 128 x 128 floats: a pass too
     * long to leave to one thread. */
    fm_parallel_for(16, conv_wino_prepare_task, &p);
    j->wino_u = p.u;
    for (int xi = 0; xi < 16; xi++) j->wino_a[xi] = p.packed[xi];
}

void fm_op_conv2d_forward(fm_graph *g, fm_node *n)
{
    const fm_tensor *b = n->in[2];
    conv_job j = {
        .cg = conv_geom_make(g, n->in[0], n->in[1], n->iarg[0], n->iarg[1], n->iarg[2]),
        .x = n->in[0]->data, .w = n->in[1]->data, .b = b ? b->data : NULL,
        .y = n->out->data,
    };
    /* Kept past the mark, for the backward's weight gradient. */
    if (j.cg.direct && n->record && n->in[1]->requires_grad) {
        j.xp_saved = fm_graph_alloc(g, conv_saved_floats(&j.cg) * sizeof(float));
        n->saved = j.xp_saved;
    } else if (conv_saves_col(&j.cg) && n->record && n->in[1]->requires_grad) {
        size_t floats = (size_t)j.cg.nchunks * j.cg.chunk * j.cg.k * j.cg.p;
        j.col_saved = fm_graph_alloc(g, floats * sizeof(float));
        n->saved = j.col_saved;
    }
    fm_arena_mark mark = fm_arena_mark_get(fm_graph_arena(g));
    if (n->iarg[3] && j.b) {
        /* A fused bf16 convolution's cast of its bias. */
        float *rb = fm_graph_alloc(g, (size_t)j.cg.o * sizeof(float));
        for (int o = 0; o < j.cg.o; o++) rb[o] = fm_ops_bf16_round(j.b[o]);
        j.b = rb;
    }
    if (j.cg.wino)
        conv_wino_prepare(g, &j, false);
    else
        j.w_packed = conv_prepack(g, &j.cg, false, j.cg.o, j.cg.k, j.w, j.cg.k);
    j.ws = conv_ws_alloc(g, &j.cg, &j.ws_stride);
    fm_parallel_for(j.cg.nchunks, conv_task, &j);
    fm_arena_release(fm_graph_arena(g), mark);
}

void fm_op_conv2d_backward(fm_graph *g, fm_node *n)
{
    bool want_dx = fm_node_wants_grad(n, 0), want_dw = fm_node_wants_grad(n, 1),
         want_db = fm_node_wants_grad(n, 2);
    if (!want_dx && !want_dw && !want_db) return;
    conv_job j = {
        .cg = conv_geom_make(g, n->in[0], n->in[1], n->iarg[0], n->iarg[1], n->iarg[2]),
        .x = n->in[0]->data, .w = n->in[1]->data, .dy = n->out->grad,
        .dx = want_dx ? n->in[0]->grad : NULL,
        .dx_store = want_dx && fm_node_grad_overwrite(n, 0),
        .round_dx = n->iarg[3],
    };
    const conv_geom *cg = &j.cg;
    if (cg->direct)
        j.xp_saved = n->saved;
    else
        j.col_saved = n->saved;
    size_t wsize = (size_t)cg->o * cg->k;
    /* Winograd's parts are of the transformed gradient [16][O][C]. */
    size_t psize = cg->wino_dw ? 16 * (size_t)cg->o * cg->c : wsize;
    fm_arena_mark mark = fm_arena_mark_get(fm_graph_arena(g));
    if (want_dw) j.dw_part = fm_graph_alloc(g, (size_t)cg->nchunks * psize * sizeof(float));
    if (want_db) {
        j.db_part = fm_graph_alloc(g, (size_t)cg->nchunks * cg->o * sizeof(double));
        memset(j.db_part, 0, (size_t)cg->nchunks * cg->o * sizeof(double));
    }
    if (cg->wino && want_dx) {
        conv_wino_prepare(g, &j, true);
    } else if (cg->direct && want_dx) {
        /* Per phase, wt [C, O*taps]: the direct input gradient's A operands. */
        const int st = cg->stride;
        float *wt = fm_graph_alloc(g, wsize * sizeof(float));
        for (int a = 0; a < st; a++)
            for (int b = 0; b < st; b++) {
                conv_phase f = conv_phase_make(cg, a, b);
                int taps = f.th * f.tw;
                float *t = wt;
                for (int c = 0; c < cg->c; c++)
                    for (int o = 0; o < cg->o; o++) {
                        const float *taps_oc = j.w + ((size_t)o * cg->c + c) * cg->kh * cg->kw;
                        for (int m = 0; m < f.th; m++)
                            for (int n = 0; n < f.tw; n++)
                                *t++ = taps_oc[(a + st * m) * cg->kw + b + st * n];
                    }
                j.wt[a * st + b] = wt;
                j.dx_a_packed[a * st + b] = conv_prepack(g, cg, false, cg->c, cg->o * taps, wt,
                                                         cg->o * taps);
                wt = t;
            }
    } else if (want_dx) {
        j.dx_a_packed[0] = conv_prepack(g, cg, true, cg->k, cg->o, j.w, cg->k);
    }
    j.ws = conv_ws_alloc(g, cg, &j.ws_stride);
    fm_parallel_for(cg->nchunks, conv_task, &j);

    /* Each chunk of the batch: its parts summed in order (im2col), then the
     * chunks' tree (fm_chunk_sum) into the first part. */
    const fm_chunks *ch = &cg->batch;
    if (want_dw) {
        if (cg->sub > 1) {
            conv_sub_sum_job sj = {j.dw_part, psize, cg->sub, cg->nchunks, ch->end - ch->first};
            fm_ops_parallel_range((int64_t)psize, FM_OPS_GRAIN / 4, conv_sub_sum_range, &sj);
        }
        fm_chunks_sum(ch, FM_CHUNK_F32, j.dw_part, j.dw_part, (int64_t)psize);
    }
    if (want_dw && cg->wino_dw) {
        conv_wino_weight_grad_fold(n->in[1]->grad, j.dw_part, cg->o, cg->c);
    } else if (want_dw) {
        conv_dw_add_job aj = {j.dw_part, n->in[1]->grad, cg->tap_major, cg->c, cg->kh * cg->kw,
                              n->iarg[3]};
        fm_ops_parallel_range((int64_t)wsize, FM_OPS_GRAIN / 4, conv_dw_add_range, &aj);
    }
    if (want_db) {
        for (int c = 0; c < ch->end - ch->first; c++)
            for (int o = 0; o < cg->o; o++) {
                double s = 0.0;
                for (int t = c * cg->sub; t < (c + 1) * cg->sub && t < cg->nchunks; t++)
                    s += j.db_part[(size_t)t * cg->o + o];
                j.db_part[(size_t)c * cg->o + o] = s;
            }
        fm_chunks_sum(ch, FM_CHUNK_F64, j.db_part, j.db_part, cg->o);
        float *db = n->in[2]->grad;
        for (int o = 0; o < cg->o; o++) {
            float s = (float)j.db_part[o];
            db[o] += n->iarg[3] ? fm_ops_bf16_round(0.0f + s) : s;
        }
    }
    fm_arena_release(fm_graph_arena(g), mark);
}
