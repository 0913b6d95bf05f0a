/*
 * cpu.h — internals of the CPU backend shared by its files, and the plain reference
 * kernels (*_naive) that tests hold the fast kernels against.
 *
 * The CPU backend computes in float32 with OpenMP threads; matrix products go to
 * OpenBLAS's sgemm, which is set to one thread so that there is one threading layer
 * (OpenMP partitions the work and each thread calls a single-threaded sgemm).
 * Weights in BF16/F16 are converted a panel of rows (or columns) at a time into a
 * per-thread scratch buffer, never whole. The naive kernels are serial, accumulate in
 * double and share no code with the fast ones beyond element conversion.
 */
#ifndef LC_BACKEND_CPU_H
#define LC_BACKEND_CPU_H

#include <string.h>

#include "backend/backend.h"
#include "backend/quant.h"

typedef struct {
    float *p;
    size_t cap; // floats
} lc_cpu_scratch;

typedef struct {
    int nt;               // threads
    lc_cpu_scratch *scr;  // (nt) one per thread
    bool avx512;          // the CPU runs AVX-512F code (row exponentials)
    bool bf16;            // BF16 weights multiply in bf16 (lc_backend_cpu_set_bf16)
    uint16_t *xb;         // activations rounded to bf16 for those products
    size_t xb_cap;        // its capacity in elements
} lc_cpu;

/* Thread tid's scratch of at least n floats (grown as needed; owned by the backend). */
float *lc_cpu_scratch_get(lc_cpu *c, int tid, size_t n);
/* The calling thread's index inside a parallel region (0 outside). */
int lc_cpu_tid(void);

/* Element idx of a weight as float32. */
static inline float lc_cpu_wget(const lc_wt *w, size_t idx) {
    if (w->q) return lc_wt_get(w, idx);
    const unsigned char *p = w->data;
    if (w->dtype == LC_DT_F32) {
        float f;
        memcpy(&f, p + 4 * idx, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, p + 2 * idx, 2);
    if (w->dtype == LC_DT_BF16) {
        uint32_t u = (uint32_t)h << 16;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    return lc_f16_to_f32(h);
}

/* dst (r1-r0, c1-c0) = w[r0:r1, c0:c1] as float32. */
void lc_cpu_convert_block(float *dst, const lc_wt *w, int64_t r0, int64_t r1, int64_t c0, int64_t c1);

/* ---- bf16 products (bf16.c; AVX512-BF16, fp32 accumulation) ---- */
/* Rows at or below which a bf16 product reads the weight directly (gemv) instead of
 * packing it. */
#define LC_BF16_GEMV_ROWS 4
/* Whether this CPU and OS run the bf16 kernels. */
bool lc_cpu_bf16_available(void);
/* dst (N, Kp) = src (N, K) rounded to bf16 (nearest even); columns K..Kp-1 = 0. Like
 * the kernels below, only for a CPU where lc_cpu_bf16_available(). */
void lc_cpu_rows_to_bf16(uint16_t *dst, const float *src, int64_t N, int64_t K, int64_t Kp);
/* Packs rows o0..o1 of a BF16 weight (out, in) for lc_cpu_bf16_gemm (the forward):
 * ceil((o1-o0)/32) tiles of ceil(in/2) × 32 bf16 pairs. */
void lc_cpu_bf16_pack_rows(uint32_t *pk, const lc_wt *w, int64_t o0, int64_t o1);
/* Packs columns i0..i1 of a BF16 weight (out, in) (the input gradient): tiles of
 * ceil(out/2) × 32 pairs. */
void lc_cpu_bf16_pack_cols(uint32_t *pk, const lc_wt *w, int64_t i0, int64_t i1);
/* out (N, n; row stride ldo) (+)= xb (N, Kp) times the packed tiles (+ bias (n)). */
void lc_cpu_bf16_gemm(float *out, int64_t ldo, const uint16_t *xb, int64_t N, int64_t Kp,
                      const uint32_t *pk, int64_t n, bool acc, const float *bias);
/* out (N <= LC_BF16_GEMV_ROWS, o1-o0) (+)= xb (N, Kp) w[o0:o1]^T (+ bias), reading the
 * BF16 weight in place. */
void lc_cpu_bf16_gemv(float *out, int64_t ldo, const uint16_t *xb, int64_t N, int64_t Kp,
                      const lc_wt *w, int64_t o0, int64_t o1, bool acc, const float *bias);

/* The fast kernels (the vtable's entries). */
void lc_cpu_matmul(lc_backend *be, float *out, const float *x, const lc_wt *w, const float *bias,
                   int64_t N, bool accumulate);
void lc_cpu_matmul_dx(lc_backend *be, float *dx, const float *dy, const lc_wt *w, int64_t N,
                      bool accumulate);
void lc_cpu_gemm(lc_backend *be, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                 const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                 int64_t ldc);
void lc_cpu_attention(lc_backend *be, float *out, float *lse, const float *q, const float *k,
                      const float *v, int64_t B, int64_t Tq, int64_t S, int64_t H, int64_t KV,
                      int64_t D, int64_t pos0);
void lc_cpu_attention_bwd(lc_backend *be, float *dq, float *dk, float *dv, const float *dout,
                          const float *q, const float *k, const float *v, const float *out,
                          const float *lse, int64_t B, int64_t T, int64_t H, int64_t KV, int64_t D);

/* ---- plain references (serial, double accumulation); same contracts as the vtable ---- */
void lc_cpu_matmul_naive(float *out, const float *x, const lc_wt *w, const float *bias, int64_t N,
                         bool accumulate);
void lc_cpu_matmul_dx_naive(float *dx, const float *dy, const lc_wt *w, int64_t N, bool accumulate);
void lc_cpu_gemm_naive(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                       int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
void lc_cpu_attention_naive(float *out, float *lse, const float *q, const float *k, const float *v,
                            int64_t B, int64_t Tq, int64_t S, int64_t H, int64_t KV, int64_t D,
                            int64_t pos0);
void lc_cpu_attention_bwd_naive(float *dq, float *dk, float *dv, const float *dout, const float *q,
                                const float *k, const float *v, const float *out, const float *lse,
                                int64_t B, int64_t T, int64_t H, int64_t KV, int64_t D);
double lc_cpu_cross_entropy_naive(float *logits, const int32_t *targets, int64_t N, int64_t V,
                                  float grad_scale);

#endif
