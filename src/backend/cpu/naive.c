/*
 * naive.c — plain reference kernels for the CPU backend's fast ones: serial loops in
 * the most direct form of each definition, accumulating in double. They are the
 * oracles of the tests (and the CPU backend is the oracle of the CUDA one); nothing on
 * a hot path calls them. Owns nothing.
 */
#include <math.h>
#include <stdlib.h>

#include "backend/cpu/cpu.h"
#include "core/mem.h"

void lc_cpu_matmul_naive(float *out, const float *x, const lc_wt *w, const float *bias, int64_t N,
                         bool accumulate) {
    int64_t O = w->rows, I = w->cols;
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < O; o++) {
            double s = bias ? bias[o] : 0.0;
            for (int64_t i = 0; i < I; i++) s += (double)x[n * I + i] * lc_cpu_wget(w, (size_t)(o * I + i));
            out[n * O + o] = (float)(accumulate ? out[n * O + o] + s : s);
        }
}

void lc_cpu_matmul_dx_naive(float *dx, const float *dy, const lc_wt *w, int64_t N, bool accumulate) {
    int64_t O = w->rows, I = w->cols;
    for (int64_t n = 0; n < N; n++)
        for (int64_t i = 0; i < I; i++) {
            double s = 0;
            for (int64_t o = 0; o < O; o++) s += (double)dy[n * O + o] * lc_cpu_wget(w, (size_t)(o * I + i));
            dx[n * I + i] = (float)(accumulate ? dx[n * I + i] + s : s);
        }
}

void lc_cpu_gemm_naive(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                       int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double s = 0;
            for (int64_t k = 0; k < K; k++)
                s += (double)(ta ? A[k * lda + m] : A[m * lda + k]) * (tb ? B[n * ldb + k] : B[k * ldb + n]);
            double prev = beta == 0.0f ? 0.0 : (double)beta * C[m * ldc + n];
            C[m * ldc + n] = (float)(alpha * s + prev);
        }
}

void lc_cpu_attention_naive(float *out, float *lse, const float *q, const float *k, const float *v,
                            int64_t B, int64_t Tq, int64_t S, int64_t H, int64_t KV, int64_t D,
                            int64_t pos0) {
    double *s = xmalloc((size_t)S * sizeof(double));
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t t = 0; t < Tq; t++) {
                int64_t kh = h / (H / KV), nk = pos0 + t + 1 < S ? pos0 + t + 1 : S;
                const float *qr = q + ((b * Tq + t) * H + h) * D;
                double mx = -INFINITY, sum = 0;
                for (int64_t j = 0; j < nk; j++) {
                    double d = 0;
                    for (int64_t e = 0; e < D; e++) d += (double)qr[e] * k[((b * S + j) * KV + kh) * D + e];
                    s[j] = d / sqrt((double)D);
                    if (s[j] > mx) mx = s[j];
                }
                for (int64_t j = 0; j < nk; j++) sum += exp(s[j] - mx);
                for (int64_t e = 0; e < D; e++) {
                    double o = 0;
                    for (int64_t j = 0; j < nk; j++) o += exp(s[j] - mx) / sum * v[((b * S + j) * KV + kh) * D + e];
                    out[((b * Tq + t) * H + h) * D + e] = (float)o;
                }
                if (lse) lse[(b * H + h) * Tq + t] = (float)(mx + log(sum));
            }
    free(s);
}

void lc_cpu_attention_bwd_naive(float *dq, float *dk, float *dv, const float *dout, const float *q,
                                const float *k, const float *v, const float *out, const float *lse,
                                int64_t B, int64_t T, int64_t H, int64_t KV, int64_t D) {
    (void)out;
    (void)lse; // recomputed here in double from q and k
    size_t nkv = (size_t)(B * T * KV * D);
    double *gk = xcalloc(nkv, sizeof(double)), *gv = xcalloc(nkv, sizeof(double));
    double *p = xmalloc((size_t)T * sizeof(double)), *dp = xmalloc((size_t)T * sizeof(double));
    double sc = 1.0 / sqrt((double)D);
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t t = 0; t < T; t++) {
                int64_t kh = h / (H / KV);
                const float *qr = q + ((b * T + t) * H + h) * D, *go = dout + ((b * T + t) * H + h) * D;
                double mx = -INFINITY, sum = 0, dot = 0;
                for (int64_t j = 0; j <= t; j++) {
                    double d = 0;
                    for (int64_t e = 0; e < D; e++) d += (double)qr[e] * k[((b * T + j) * KV + kh) * D + e];
                    p[j] = d * sc;
                    if (p[j] > mx) mx = p[j];
                }
                for (int64_t j = 0; j <= t; j++) sum += (p[j] = exp(p[j] - mx));
                for (int64_t j = 0; j <= t; j++) {
                    p[j] /= sum;
                    dp[j] = 0;
                    for (int64_t e = 0; e < D; e++) dp[j] += (double)go[e] * v[((b * T + j) * KV + kh) * D + e];
                    dot += p[j] * dp[j];
                }
                for (int64_t e = 0; e < D; e++) {
                    double g = 0;
                    for (int64_t j = 0; j <= t; j++) g += p[j] * (dp[j] - dot) * sc * k[((b * T + j) * KV + kh) * D + e];
                    dq[((b * T + t) * H + h) * D + e] = (float)g;
                }
                for (int64_t j = 0; j <= t; j++)
                    for (int64_t e = 0; e < D; e++) {
                        size_t i = (size_t)(((b * T + j) * KV + kh) * D + e);
                        gk[i] += p[j] * (dp[j] - dot) * sc * qr[e];
                        gv[i] += p[j] * go[e];
                    }
            }
    for (size_t i = 0; i < nkv; i++) dk[i] = (float)gk[i], dv[i] = (float)gv[i];
    free(gk), free(gv), free(p), free(dp);
}

double lc_cpu_cross_entropy_naive(float *logits, const int32_t *targets, int64_t N, int64_t V,
                                  float grad_scale) {
    double total = 0;
    for (int64_t n = 0; n < N; n++) {
        float *l = logits + n * V;
        if (targets[n] < 0) {
            if (grad_scale != 0.0f)
                for (int64_t j = 0; j < V; j++) l[j] = 0;
            continue;
        }
        double mx = l[0], s = 0;
        for (int64_t j = 0; j < V; j++) mx = l[j] > mx ? l[j] : mx;
        for (int64_t j = 0; j < V; j++) s += exp(l[j] - mx);
        double lse = mx + log(s);
        total += lse - l[targets[n]];
        if (grad_scale != 0.0f)
            for (int64_t j = 0; j < V; j++) l[j] = (float)((exp(l[j] - lse) - (j == targets[n])) * grad_scale);
    }
    return total;
}
