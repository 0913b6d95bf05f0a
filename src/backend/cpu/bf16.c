/*
 * bf16.c — matrix products with BF16 weights computed in bf16 on CPUs with AVX512-BF16
 * (vdpbf16ps: pairs of bf16 products summed into float32), as PyTorch's bf16 path does:
 * the activations are rounded to bf16 (nearest even), products accumulate in float32.
 *
 * A weight block is packed into a per-thread buffer as 32-column tiles of bf16 pairs
 * along the contraction (from rows of the stored weight for the forward, from pairs of
 * rows for the input gradient), then an 8-row × 32-column microkernel runs over it.
 * The contraction length is padded to even with zeros. Only compiled into the AVX512
 * code path by function target attributes; lc_cpu_bf16_available says whether the CPU
 * (and OS) can run it. Owns nothing.
 */
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#define LC_HAVE_BF16_KERNEL 1
#endif

#include "backend/cpu/cpu.h"

/* float -> bf16 bits, round to nearest even (NaN kept quiet). */
static inline uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1)) >> 16);
}

#ifdef LC_HAVE_BF16_KERNEL
static void rows_to_bf16_avx512(uint16_t *dst, const float *src, int64_t N, int64_t K, int64_t Kp);
#endif

void lc_cpu_rows_to_bf16(uint16_t *dst, const float *src, int64_t N, int64_t K, int64_t Kp) {
#ifdef LC_HAVE_BF16_KERNEL
    rows_to_bf16_avx512(dst, src, N, K, Kp);
    return;
#endif
    for (int64_t r = 0; r < N; r++) {
        const float *s = src + (size_t)r * K;
        uint16_t *d = dst + (size_t)r * Kp;
        for (int64_t k = 0; k < K; k++) d[k] = to_bf16(s[k]);
        for (int64_t k = K; k < Kp; k++) d[k] = 0;
    }
}

static inline uint16_t wbits(const lc_wt *w, int64_t r, int64_t c) {
    uint16_t h;
    memcpy(&h, (const unsigned char *)w->data + 2 * ((size_t)r * w->cols + c), 2);
    return h;
}

void lc_cpu_bf16_pack_rows(uint32_t *pk, const lc_wt *w, int64_t o0, int64_t o1) {
    int64_t K = w->cols, P = (K + 1) / 2, n = o1 - o0, tiles = (n + 31) / 32;
    if (K % 2 == 0 && (uintptr_t)w->data % 4 == 0) { // each row is P whole pairs: transpose
        for (int64_t t = 0; t < tiles; t++)
            for (int64_t p0 = 0; p0 < P; p0 += 64) { // 64 pairs × 32 rows at a time
                int64_t p1 = p0 + 64 < P ? p0 + 64 : P;
                for (int64_t c = 0; c < 32; c++) {
                    int64_t o = o0 + t * 32 + c;
                    uint32_t *d = pk + (size_t)t * P * 32 + c;
                    if (o >= o1) {
                        for (int64_t p = p0; p < p1; p++) d[(size_t)p * 32] = 0;
                        continue;
                    }
                    const uint32_t *src = (const uint32_t *)w->data + (size_t)o * P;
                    for (int64_t p = p0; p < p1; p++) d[(size_t)p * 32] = src[p];
                }
            }
        return;
    }
    for (int64_t t = 0; t < tiles; t++)
        for (int64_t c = 0; c < 32; c++) {
            int64_t o = o0 + t * 32 + c;
            uint32_t *d = pk + (size_t)t * P * 32 + c;
            for (int64_t p = 0; p < P; p++) {
                uint32_t lo = 0, hi = 0;
                if (o < o1) {
                    lo = wbits(w, o, 2 * p);
                    hi = 2 * p + 1 < K ? wbits(w, o, 2 * p + 1) : 0;
                }
                d[(size_t)p * 32] = lo | hi << 16;
            }
        }
}

void lc_cpu_bf16_pack_cols(uint32_t *pk, const lc_wt *w, int64_t i0, int64_t i1) {
    int64_t O = w->rows, P = (O + 1) / 2, n = i1 - i0, tiles = (n + 31) / 32;
    bool aligned = (uintptr_t)w->data % 2 == 0;
    for (int64_t t = 0; t < tiles; t++) {
        int64_t c0 = i0 + t * 32, nc = i1 - c0 < 32 ? i1 - c0 : 32;
        for (int64_t p = 0; p < P; p++) {
            uint32_t *d = pk + ((size_t)t * P + p) * 32;
            if (aligned && nc == 32 && 2 * p + 1 < O) { // two row segments, interleaved
                const uint16_t *a = (const uint16_t *)w->data + (size_t)(2 * p) * w->cols + c0;
                const uint16_t *b = a + w->cols;
#pragma omp simd
                for (int64_t c = 0; c < 32; c++) d[c] = (uint32_t)a[c] | (uint32_t)b[c] << 16;
                continue;
            }
            for (int64_t c = 0; c < 32; c++) {
                uint32_t lo = 0, hi = 0;
                if (c < nc) {
                    lo = wbits(w, 2 * p, c0 + c);
                    hi = 2 * p + 1 < O ? wbits(w, 2 * p + 1, c0 + c) : 0;
                }
                d[c] = lo | hi << 16;
            }
        }
    }
}

#ifdef LC_HAVE_BF16_KERNEL

bool lc_cpu_bf16_available(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(b & (1u << 16))) return false; // avx512f
    if (!__get_cpuid_count(7, 1, &a, &b, &c, &d) || !(a & (1u << 5))) return false;  // avx512_bf16
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return false;          // osxsave
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (lo & 0xE6) == 0xE6; // the OS saves xmm, ymm, opmask and zmm state
}

#define TGT __attribute__((target("avx512f,avx512bw,avx512bf16")))

/* vcvtne2ps2bf16 rounds to nearest even, as to_bf16 does. */
static TGT void rows_to_bf16_avx512(uint16_t *dst, const float *src, int64_t N, int64_t K, int64_t Kp) {
    for (int64_t r = 0; r < N; r++) {
        const float *s = src + (size_t)r * K;
        uint16_t *d = dst + (size_t)r * Kp;
        int64_t k = 0;
        for (; k + 32 <= K; k += 32) {
            __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(s + k + 16), _mm512_loadu_ps(s + k));
            _mm512_storeu_si512(d + k, (__m512i)v);
        }
        for (; k < K; k++) d[k] = to_bf16(s[k]);
        for (k = K; k < Kp; k++) d[k] = 0;
    }
}

/* R rows × 32 columns: out[r][0..nc) (+)= sum_p x[r] pair p · tile pair p (+ bias). */
static inline __attribute__((always_inline)) TGT void tile(int R, float *out, int64_t ldo,
                                                            const uint16_t *x, int64_t ldx,
                                                            const uint32_t *pk, int64_t P, int nc,
                                                            bool acc, const float *bias) {
    __m512 c0[8], c1[8];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) c0[r] = c1[r] = _mm512_setzero_ps();
    for (int64_t p = 0; p < P; p++) {
        __m512i w0 = _mm512_loadu_si512(pk + p * 32), w1 = _mm512_loadu_si512(pk + p * 32 + 16);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            int32_t xp; // the bf16 pair (k, k+1) of row r; memcpy: the buffer holds uint16_t
            memcpy(&xp, x + 2 * ((size_t)r * ldx + p), 4);
            __m512i xv = _mm512_set1_epi32(xp);
            c0[r] = _mm512_dpbf16_ps(c0[r], (__m512bh)xv, (__m512bh)w0);
            c1[r] = _mm512_dpbf16_ps(c1[r], (__m512bh)xv, (__m512bh)w1);
        }
    }
    __mmask16 m0 = nc >= 16 ? 0xFFFF : (__mmask16)((1u << nc) - 1);
    __mmask16 m1 = nc >= 32 ? 0xFFFF : nc <= 16 ? 0 : (__mmask16)((1u << (nc - 16)) - 1);
    __m512 b0 = bias ? _mm512_maskz_loadu_ps(m0, bias) : _mm512_setzero_ps();
    __m512 b1 = bias ? _mm512_maskz_loadu_ps(m1, bias + 16) : _mm512_setzero_ps();
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        float *o = out + (size_t)r * ldo;
        __m512 v0 = _mm512_add_ps(c0[r], b0), v1 = _mm512_add_ps(c1[r], b1);
        if (acc) {
            v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, o));
            v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, o + 16));
        }
        _mm512_mask_storeu_ps(o, m0, v0);
        _mm512_mask_storeu_ps(o + 16, m1, v1);
    }
}

TGT void lc_cpu_bf16_gemm(float *out, int64_t ldo, const uint16_t *xb, int64_t N, int64_t Kp,
                          const uint32_t *pk, int64_t n, bool acc, const float *bias) {
    int64_t P = Kp / 2, tiles = (n + 31) / 32;
    for (int64_t t = 0; t < tiles; t++) {
        int nc = n - t * 32 < 32 ? (int)(n - t * 32) : 32;
        const uint32_t *tp = pk + (size_t)t * P * 32;
        const float *bt = bias ? bias + t * 32 : NULL;
        int64_t r = 0;
        for (; r + 8 <= N; r += 8)
            tile(8, out + (size_t)r * ldo + t * 32, ldo, xb + (size_t)r * Kp, P, tp, P, nc, acc, bt);
        for (; r < N; r++)
            tile(1, out + (size_t)r * ldo + t * 32, ldo, xb + (size_t)r * Kp, P, tp, P, nc, acc, bt);
    }
}

TGT void lc_cpu_bf16_gemv(float *out, int64_t ldo, const uint16_t *xb, int64_t N, int64_t Kp,
                          const lc_wt *w, int64_t o0, int64_t o1, bool acc, const float *bias) {
    int64_t K = w->cols;
    for (int64_t o = o0; o < o1; o++) {
        const uint16_t *row = (const uint16_t *)(const void *)((const unsigned char *)w->data + 2 * (size_t)o * K);
        __m512 s[LC_BF16_GEMV_ROWS];
        for (int64_t r = 0; r < N; r++) s[r] = _mm512_setzero_ps();
        for (int64_t k = 0; k < K; k += 32) {
            __mmask32 m = K - k >= 32 ? 0xFFFFFFFFu : (__mmask32)((1u << (K - k)) - 1);
            __m512i wv = _mm512_maskz_loadu_epi16(m, row + k);
            for (int64_t r = 0; r < N; r++) {
                __m512i xv = _mm512_maskz_loadu_epi16(m, xb + (size_t)r * Kp + k);
                s[r] = _mm512_dpbf16_ps(s[r], (__m512bh)xv, (__m512bh)wv);
            }
        }
        for (int64_t r = 0; r < N; r++) {
            float *d = out + (size_t)r * ldo + (o - o0);
            float v = _mm512_reduce_add_ps(s[r]) + (bias ? bias[o - o0] : 0.0f);
            *d = acc ? *d + v : v;
        }
    }
}

#else

bool lc_cpu_bf16_available(void) { return false; }

void lc_cpu_bf16_gemv(float *out, int64_t ldo, const uint16_t *xb, int64_t N, int64_t Kp,
                      const lc_wt *w, int64_t o0, int64_t o1, bool acc, const float *bias) {
    (void)out, (void)ldo, (void)xb, (void)N, (void)Kp, (void)w, (void)o0, (void)o1, (void)acc, (void)bias;
}

void lc_cpu_bf16_gemm(float *out, int64_t ldo, const uint16_t *xb, int64_t N, int64_t Kp,
                      const uint32_t *pk, int64_t n, bool acc, const float *bias) {
    (void)out, (void)ldo, (void)xb, (void)N, (void)Kp, (void)pk, (void)n, (void)acc, (void)bias;
}

#endif
