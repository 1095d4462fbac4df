/* Winograd F(2x2, 3x3)'s transforms over the vector layer: lanes are
 * tiles (input and output transforms) or channels (the weight gradient's
 * operands).  The products between them are GEMMs; the algorithm, the
 * layouts and the choice of when to use it are in core/ops/conv2d.c. */
#include "kset.h"
#include "vec.h"

/* v[xi] = (B^T d B)[xi] (xi = 4a + b) of FM_VL input tiles d (lanes),
 * B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]. */
FM_VEC_INLINE void wino_bt_d_b(fm_vf v[16], fm_vf d[4][4])
{
    fm_vf t[4][4];
    for (int jj = 0; jj < 4; jj++) {
        t[0][jj] = fm_vf_sub(d[0][jj], d[2][jj]);
        t[1][jj] = fm_vf_add(d[1][jj], d[2][jj]);
        t[2][jj] = fm_vf_sub(d[2][jj], d[1][jj]);
        t[3][jj] = fm_vf_sub(d[1][jj], d[3][jj]);
    }
    for (int a = 0; a < 4; a++) {
        v[4 * a] = fm_vf_sub(t[a][0], t[a][2]);
        v[4 * a + 1] = fm_vf_add(t[a][1], t[a][2]);
        v[4 * a + 2] = fm_vf_sub(t[a][2], t[a][1]);
        v[4 * a + 3] = fm_vf_sub(t[a][1], t[a][3]);
    }
}

/* One row of tiles: v[xi * stride + tx] = (B^T d B)[xi] of the 4x4 input
 * tile d at rows 0..3, columns 2tx .. 2tx+3 of src (row stride ld), for tx
 * < tw.  d's columns are the even and odd elements of each row, and of the
 * row two further on.  Whole vectors are loaded and stored: the lanes past
 * tw read and write what the caller leaves room for (WINO_SLACK floats past
 * src's rows and v's last row), and a later row overwrites them. */
FM_VEC_INLINE void wino_input_row(float *v, size_t stride, const float *src, size_t ld, int tw)
{
    for (int t0 = 0; t0 < tw; t0 += FM_VL) {
        fm_vf d[4][4], q[16];
        for (int i = 0; i < 4; i++) {
            const float *r = src + (size_t)i * ld + 2 * t0;
            fm_vf a = fm_vf_load(r), b = fm_vf_load(r + FM_VL);
            fm_vf a2 = fm_vf_load(r + 2), b2 = fm_vf_load(r + 2 + FM_VL);
            d[i][0] = fm_vf_even(a, b);
            d[i][1] = fm_vf_odd(a, b);
            d[i][2] = fm_vf_even(a2, b2);
            d[i][3] = fm_vf_odd(a2, b2);
        }
        wino_bt_d_b(q, d);
        for (int xi = 0; xi < 16; xi++) fm_vf_store(v + (size_t)xi * stride + t0, q[xi]);
    }
}

/* The th rows of tiles of one plane: src a padded image (row stride ld),
 * v its first tile's transforms (tiles row after row, tw to a row). */
void FM_K(wino_input_plane)(float *v, size_t stride, const float *src, size_t ld, int th, int tw)
{
    for (int ty = 0; ty < th; ty++)
        wino_input_row(v + (size_t)ty * tw, stride, src + (size_t)(2 * ty) * ld, ld, tw);
}

/* A^T M A of FM_VL tiles (lanes) of products m[xi * stride], A^T = [1 1 1 0;
 * 0 1 -1 -1]: the tiles' two output rows, each as two vectors of pixels
 * (the tiles' two columns side by side). */
FM_VEC_INLINE void wino_output_tiles(fm_vf out[2][2], const float *m, size_t stride)
{
    fm_vf s[2][4];
    for (int jj = 0; jj < 4; jj++) {
        fm_vf q[4];
        for (int i = 0; i < 4; i++) q[i] = fm_vf_load(m + (size_t)(4 * i + jj) * stride);
        s[0][jj] = fm_vf_add(fm_vf_add(q[0], q[1]), q[2]);
        s[1][jj] = fm_vf_sub(fm_vf_sub(q[1], q[2]), q[3]);
    }
    for (int i = 0; i < 2; i++) {
        fm_vf y0 = fm_vf_add(fm_vf_add(s[i][0], s[i][1]), s[i][2]);
        fm_vf y1 = fm_vf_sub(fm_vf_sub(s[i][1], s[i][2]), s[i][3]);
        out[i][0] = fm_vf_zip_lo(y0, y1);
        out[i][1] = fm_vf_zip_hi(y0, y1);
    }
}

/* The first n lanes of dst = v + bias (if any), added to what is there
 * unless `store`. */
FM_VEC_INLINE void wino_put(float *dst, fm_vf v, const float *bias, const bool store, int n)
{
    if (bias) v = fm_vf_add(v, fm_vf_set1(*bias));
    if (!store) v = fm_vf_add(fm_vf_loadn(dst, n), v);
    fm_vf_storen(dst, v, n);
}

/* The h x w plane dst from its tiles' products (m: the first tile's; tw
 * to a row of tiles, read as whole vectors, lanes past tw unused -- see
 * WINO_SLACK); + *bias if any, added to dst unless `store`.  The flag is
 * a constant in each call below, so each is its own loop. */
FM_VEC_INLINE void wino_output_plane_as(float *dst, const float *m, size_t stride, int th, int tw,
                                        int h, int w, const float *bias, const bool store)
{
    for (int ty = 0; ty < th; ty++, m += tw) {
        int rows = h - 2 * ty < 2 ? 1 : 2;
        for (int t0 = 0; t0 < tw; t0 += FM_VL) {
            fm_vf out[2][2];
            wino_output_tiles(out, m + t0, stride);
            for (int i = 0; i < rows; i++)
                for (int half = 0; half < 2; half++) {
                    int x = 2 * t0 + FM_VL * half;
                    if (x >= w) break;
                    wino_put(dst + (size_t)(2 * ty + i) * w + x, out[i][half], bias, store, w - x);
                }
        }
    }
}

void FM_K(wino_output_plane)(float *dst, const float *m, size_t stride, int th, int tw, int h,
                             int w, const float *bias, bool store)
{
    if (store)
        wino_output_plane_as(dst, m, stride, th, tw, h, w, bias, true);
    else
        wino_output_plane_as(dst, m, stride, th, tw, h, w, bias, false);
}

/* One tile of the weight gradient's operands, FM_VL channels at a time
 * (lanes are channels, read from channel-minor planes; cin and cout are
 * multiples of FM_VL): v[xi*vstride + c] = (B^T d B)[xi] for the 4x4 input
 * tile d at x (position stride ldx, row stride rx positions), c < cin; and
 * the output gradient's (A dY A^T)[xi] for the 2x2 tile at dy (likewise
 * ldy, ry), o < cout, stored as tile t of nt in a prepacked A [cout, nt]
 * (fm_gemm_packed_at) at m + xi*mstride: each half vector is one packed
 * tile's column. */
void FM_K(wino_grad_tile)(float *v, size_t vstride, const float *x, size_t ldx, size_t rx,
                          int cin, float *m, size_t mstride, const float *dy, size_t ldy,
                          size_t ry, int cout, size_t t, size_t nt)
{
    for (int c = 0; c < cin; c += FM_VL) {
        fm_vf d[4][4], q[16];
        for (int i = 0; i < 4; i++)
            for (int jj = 0; jj < 4; jj++)
                d[i][jj] = fm_vf_load(x + ((size_t)i * rx + (size_t)jj) * ldx + c);
        wino_bt_d_b(q, d);
        for (int xi = 0; xi < 16; xi++) fm_vf_store(v + (size_t)xi * vstride + c, q[xi]);
    }
    const fm_vf zero = fm_vf_zero();
    for (int o = 0; o < cout; o += FM_VL) {
        fm_vf y[2][2], r[4][2], q[16];
        for (int i = 0; i < 2; i++)
            for (int jj = 0; jj < 2; jj++)
                y[i][jj] = fm_vf_load(dy + ((size_t)i * ry + (size_t)jj) * ldy + o);
        /* A dY: rows y0, y0 + y1, y0 - y1, -y1; then the same along columns. */
        for (int jj = 0; jj < 2; jj++) {
            r[0][jj] = y[0][jj];
            r[1][jj] = fm_vf_add(y[0][jj], y[1][jj]);
            r[2][jj] = fm_vf_sub(y[0][jj], y[1][jj]);
            r[3][jj] = fm_vf_sub(zero, y[1][jj]);
        }
        for (int a = 0; a < 4; a++) {
            q[4 * a] = r[a][0];
            q[4 * a + 1] = fm_vf_add(r[a][0], r[a][1]);
            q[4 * a + 2] = fm_vf_sub(r[a][0], r[a][1]);
            q[4 * a + 3] = fm_vf_sub(zero, r[a][1]);
        }
        for (int h = 0; h < 2; h++) {
            size_t at = fm_gemm_packed_at((size_t)o + (size_t)h * (FM_VL / 2), t, (size_t)cout, nt,
                                          FM_VL / 2);
            for (int xi = 0; xi < 16; xi++) fm_vf_store_half(m + (size_t)xi * mstride + at, q[xi], h);
        }
    }
}
