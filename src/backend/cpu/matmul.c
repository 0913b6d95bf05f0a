/*
 * matmul.c — the CPU backend's matrix products: frozen weights in their stored dtype
 * times float32 activations (forward and input-gradient), and plain float32 gemm.
 *
 * OpenMP splits each product into blocks (of output columns for the forward, of input
 * columns for the backward) and each thread calls a single-threaded OpenBLAS sgemm on
 * its block. A BF16/F16 or quantized (NF4, MLX affine) weight block is first converted
 * (dequantized) into that thread's scratch; an aligned F32 weight is used in place. So a weight is never converted whole and never
 * held twice. Owns nothing (scratch belongs to the backend).
 */
#include <stdint.h>
#include <stdlib.h>

#include <cblas.h>
#undef I // <cblas.h> pulls in <complex.h>, whose I we do not use

#include "backend/cpu/cpu.h"
#include "core/mem.h"

/* One row of bf16 as float32: the bf16 bits are the top half of the float's. Written
 * so the compiler vectorizes it (aligned source) with a byte-wise fallback. */
static void bf16_row(float *d, const unsigned char *p, int64_t n) {
    if ((uintptr_t)p % 2 == 0) {
        const uint16_t *h = (const uint16_t *)(const void *)p;
        uint32_t *u = (uint32_t *)(void *)d;
#pragma omp simd
        for (int64_t c = 0; c < n; c++) u[c] = (uint32_t)h[c] << 16;
        return;
    }
    for (int64_t c = 0; c < n; c++) {
        uint16_t h;
        memcpy(&h, p + 2 * c, 2);
        uint32_t u = (uint32_t)h << 16;
        memcpy(&d[c], &u, 4);
    }
}

void lc_cpu_convert_block(float *dst, const lc_wt *w, int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
    int64_t wc = c1 - c0;
    for (int64_t r = r0; r < r1; r++) {
        float *d = dst + (size_t)(r - r0) * wc;
        if (w->q) { // quantized: decoded row by row
            lc_wq_dequant_row(d, w, r, c0, c1);
            continue;
        }
        size_t base = (size_t)r * w->cols + c0;
        if (w->dtype == LC_DT_BF16) {
            bf16_row(d, (const unsigned char *)w->data + 2 * base, wc);
        } else if (w->dtype == LC_DT_F32) {
            memcpy(d, (const unsigned char *)w->data + 4 * base, (size_t)wc * 4);
        } else {
            for (int64_t c = 0; c < wc; c++) d[c] = lc_cpu_wget(w, base + (size_t)c);
        }
    }
}

static bool f32_direct(const lc_wt *w) {
    return !w->q && w->dtype == LC_DT_F32 && ((uintptr_t)w->data % sizeof(float)) == 0;
}

/* A block width for splitting n among nt threads: about two blocks per thread (each
 * sgemm call packs its whole activation operand again, so fewer calls are cheaper; two
 * per thread leave room for dynamic balancing), a multiple of 16, at least 16 and at
 * most cap. */
static int64_t block_width(int64_t n, int nt, int64_t cap) {
    int64_t b = (n + 2 * nt - 1) / (2 * nt);
    b = (b + 15) / 16 * 16;
    if (b > cap) b = cap;
    if (b < 16) b = 16;
    return b;
}

/* Floats of scratch a thread may use for one weight block (4 MiB). */
#define PANEL_FLOATS ((int64_t)1 << 20)

/* ---- BF16 weights multiplied in bf16 (when c->bf16) ---- */

/* x (N, K) rounded to bf16 rows of Kp (K rounded up to even) in the backend's buffer. */
static const uint16_t *acts_bf16(lc_cpu *c, const float *x, int64_t N, int64_t K, int64_t Kp) {
    size_t need = (size_t)(N * Kp);
    if (c->xb_cap < need) {
        free(c->xb);
        c->xb = xmalloc(need * sizeof(uint16_t));
        c->xb_cap = need;
    }
    uint16_t *xb = c->xb;
#pragma omp parallel for num_threads(c->nt) schedule(static) if (N * K > 65536)
    for (int64_t r = 0; r < N; r++) lc_cpu_rows_to_bf16(xb + (size_t)r * Kp, x + (size_t)r * K, 1, K, Kp);
    return xb;
}

/* A block width for the bf16 kernels: block_width's, in whole 32-column tiles. */
static int64_t block_width32(int64_t n, int nt, int64_t Kp) {
    int64_t cap = PANEL_FLOATS / Kp / 32 * 32;
    int64_t b = block_width(n, nt, cap > 32 ? cap : 32);
    return (b + 31) / 32 * 32;
}

static void matmul_bf16(lc_cpu *c, float *out, const float *x, const lc_wt *w, const float *bias,
                        int64_t N, bool accumulate) {
    int64_t O = w->rows, I = w->cols, Ip = (I + 1) & ~(int64_t)1;
    const uint16_t *xb = acts_bf16(c, x, N, I, Ip);
    if (N <= LC_BF16_GEMV_ROWS) { // decoding: read the weight in place
        int64_t bw = block_width(O, c->nt, 1 << 20), nb = (O + bw - 1) / bw;
#pragma omp parallel for num_threads(c->nt) schedule(dynamic, 1)
        for (int64_t blk = 0; blk < nb; blk++) {
            int64_t o0 = blk * bw, o1 = o0 + bw < O ? o0 + bw : O;
            lc_cpu_bf16_gemv(out + o0, O, xb, N, Ip, w, o0, o1, accumulate, bias ? bias + o0 : NULL);
        }
        return;
    }
    int64_t bw = block_width32(O, c->nt, Ip), nb = (O + bw - 1) / bw;
#pragma omp parallel for num_threads(c->nt) schedule(dynamic, 1)
    for (int64_t blk = 0; blk < nb; blk++) {
        int64_t o0 = blk * bw, o1 = o0 + bw < O ? o0 + bw : O, n = o1 - o0;
        uint32_t *pk = (uint32_t *)lc_cpu_scratch_get(c, lc_cpu_tid(), (size_t)((n + 31) / 32 * 32 * Ip / 2));
        lc_cpu_bf16_pack_rows(pk, w, o0, o1);
        lc_cpu_bf16_gemm(out + o0, O, xb, N, Ip, pk, n, accumulate, bias ? bias + o0 : NULL);
    }
}

static void matmul_dx_bf16(lc_cpu *c, float *dx, const float *dy, const lc_wt *w, int64_t N,
                           bool accumulate) {
    int64_t O = w->rows, I = w->cols, Op = (O + 1) & ~(int64_t)1;
    const uint16_t *yb = acts_bf16(c, dy, N, O, Op);
    int64_t bw = block_width32(I, c->nt, Op), nb = (I + bw - 1) / bw;
#pragma omp parallel for num_threads(c->nt) schedule(dynamic, 1)
    for (int64_t blk = 0; blk < nb; blk++) {
        int64_t i0 = blk * bw, i1 = i0 + bw < I ? i0 + bw : I, n = i1 - i0;
        uint32_t *pk = (uint32_t *)lc_cpu_scratch_get(c, lc_cpu_tid(), (size_t)((n + 31) / 32 * 32 * Op / 2));
        lc_cpu_bf16_pack_cols(pk, w, i0, i1);
        lc_cpu_bf16_gemm(dx + i0, I, yb, N, Op, pk, n, accumulate, NULL);
    }
}

void lc_cpu_matmul(lc_backend *be, float *out, const float *x, const lc_wt *w, const float *bias,
                   int64_t N, bool accumulate) {
    lc_cpu *c = be->impl;
    if (c->bf16 && !w->q && w->dtype == LC_DT_BF16) {
        matmul_bf16(c, out, x, w, bias, N, accumulate);
        return;
    }
    int64_t O = w->rows, I = w->cols;
    int64_t cap = PANEL_FLOATS / I > 16 ? PANEL_FLOATS / I : 16;
    int64_t bw = block_width(O, c->nt, cap), nb = (O + bw - 1) / bw;
    bool direct = f32_direct(w);
#pragma omp parallel for num_threads(c->nt) schedule(dynamic, 1)
    for (int64_t blk = 0; blk < nb; blk++) {
        int64_t o0 = blk * bw, o1 = o0 + bw < O ? o0 + bw : O, n = o1 - o0;
        const float *wp;
        if (direct) {
            wp = (const float *)w->data + (size_t)o0 * I;
        } else {
            float *s = lc_cpu_scratch_get(c, lc_cpu_tid(), (size_t)n * I);
            lc_cpu_convert_block(s, w, o0, o1, 0, I);
            wp = s;
        }
        float beta = accumulate ? 1.0f : 0.0f;
        if (bias) { // out = bias (+ out), then += x W^T
            for (int64_t r = 0; r < N; r++) {
                float *o = out + (size_t)r * O + o0;
                for (int64_t j = 0; j < n; j++) o[j] = (accumulate ? o[j] : 0.0f) + bias[o0 + j];
            }
            beta = 1.0f;
        }
        // out[:, o0:o1] (N,n) = x (N,I) * Wblk^T (I,n)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, (int)n, (int)I, 1.0f, x, (int)I,
                    wp, (int)I, beta, out + o0, (int)O);
    }
}

void lc_cpu_matmul_dx(lc_backend *be, float *dx, const float *dy, const lc_wt *w, int64_t N,
                      bool accumulate) {
    lc_cpu *c = be->impl;
    if (c->bf16 && !w->q && w->dtype == LC_DT_BF16) {
        matmul_dx_bf16(c, dx, dy, w, N, accumulate);
        return;
    }
    int64_t O = w->rows, I = w->cols;
    int64_t cap = PANEL_FLOATS / O > 16 ? PANEL_FLOATS / O : 16;
    int64_t bw = block_width(I, c->nt, cap), nb = (I + bw - 1) / bw;
    bool direct = f32_direct(w);
    float beta = accumulate ? 1.0f : 0.0f;
#pragma omp parallel for num_threads(c->nt) schedule(dynamic, 1)
    for (int64_t blk = 0; blk < nb; blk++) {
        int64_t i0 = blk * bw, i1 = i0 + bw < I ? i0 + bw : I, n = i1 - i0;
        // forward: out = x W^T  =>  dx[:, i0:i1] (N,n) = dy (N,O) * W[:, i0:i1] (O,n)
        if (direct) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, (int)n, (int)O, 1.0f, dy,
                        (int)O, (const float *)w->data + i0, (int)I, beta, dx + i0, (int)I);
        } else {
            float *s = lc_cpu_scratch_get(c, lc_cpu_tid(), (size_t)O * n);
            lc_cpu_convert_block(s, w, 0, O, i0, i1);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, (int)n, (int)O, 1.0f, dy,
                        (int)O, s, (int)n, beta, dx + i0, (int)I);
        }
    }
}

void lc_cpu_gemm(lc_backend *be, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                 const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                 int64_t ldc) {
    lc_cpu *c = be->impl;
    if (M <= 0 || N <= 0) return;
    CBLAS_TRANSPOSE tA = ta ? CblasTrans : CblasNoTrans, tB = tb ? CblasTrans : CblasNoTrans;
    bool split_m = M >= N;
    int64_t len = split_m ? M : N;
    int64_t bw = block_width(len, c->nt, INT64_MAX / 2), nb = (len + bw - 1) / bw;
    if ((double)M * N * K < 1e6) nb = 1, bw = len; // not worth the threads
#pragma omp parallel for num_threads(c->nt) schedule(dynamic, 1) if (nb > 1)
    for (int64_t blk = 0; blk < nb; blk++) {
        int64_t s0 = blk * bw, n = s0 + bw < len ? bw : len - s0;
        if (split_m) { // rows s0.. of C and of op(A)
            const float *a = ta ? A + s0 : A + (size_t)s0 * lda;
            cblas_sgemm(CblasRowMajor, tA, tB, (int)n, (int)N, (int)K, alpha, a, (int)lda, B, (int)ldb,
                        beta, C + (size_t)s0 * ldc, (int)ldc);
        } else { // columns s0.. of C and of op(B)
            const float *b = tb ? B + (size_t)s0 * ldb : B + s0;
            cblas_sgemm(CblasRowMajor, tA, tB, (int)M, (int)n, (int)K, alpha, A, (int)lda, b, (int)ldb,
                        beta, C + s0, (int)ldc);
        }
    }
}
