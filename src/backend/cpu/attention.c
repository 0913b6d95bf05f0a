/*
 * attention.c — causal grouped-query attention on the CPU, forward and backward.
 *
 * One query row at a time: its scores against the keys it may see go to a per-thread
 * row buffer (never a T×T matrix), softmax in float with a double sum, then the
 * weighted sum of values. The forward keeps each row's log-sum-exp, so the backward
 * recomputes the probabilities instead of storing them. The backward runs one task per
 * (batch, kv head), which owns the dk/dv rows of that head: no two threads write the
 * same gradient. Owns nothing.
 */
#include <math.h>

#include "backend/cpu/cpu.h"

static inline float dotf(const float *a, const float *b, int64_t n) {
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

void lc_cpu_attention(lc_backend *be, float *out, float *lse, const float *q, const float *k,
                      const float *v, int64_t B, int64_t Tq, int64_t S, int64_t H, int64_t KV,
                      int64_t D, int64_t pos0) {
    lc_cpu *c = be->impl;
    int64_t G = H / KV;
    float scale = 1.0f / sqrtf((float)D);
#pragma omp parallel for num_threads(c->nt) schedule(dynamic, 4) collapse(3)
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t t = 0; t < Tq; t++) {
                float *p = lc_cpu_scratch_get(c, lc_cpu_tid(), (size_t)S);
                const float *qr = q + (((size_t)b * Tq + t) * H + h) * D;
                const float *kb = k + ((size_t)b * S * KV + h / G) * D;
                const float *vb = v + ((size_t)b * S * KV + h / G) * D;
                int64_t nk = pos0 + t + 1 < S ? pos0 + t + 1 : S;
                float mx = -INFINITY;
                for (int64_t j = 0; j < nk; j++) {
                    p[j] = dotf(qr, kb + (size_t)j * KV * D, D) * scale;
                    mx = p[j] > mx ? p[j] : mx;
                }
                double sum = 0;
                for (int64_t j = 0; j < nk; j++) sum += (p[j] = expf(p[j] - mx));
                float inv = (float)(1.0 / sum);
                float *o = out + (((size_t)b * Tq + t) * H + h) * D;
                for (int64_t d = 0; d < D; d++) o[d] = 0;
                for (int64_t j = 0; j < nk; j++) {
                    const float *vr = vb + (size_t)j * KV * D;
                    float w = p[j] * inv;
                    for (int64_t d = 0; d < D; d++) o[d] += w * vr[d];
                }
                if (lse) lse[((size_t)b * H + h) * Tq + t] = mx + (float)log(sum);
            }
}

void lc_cpu_attention_bwd(lc_backend *be, float *dq, float *dk, float *dv, const float *dout,
                          const float *q, const float *k, const float *v, const float *out,
                          const float *lse, int64_t B, int64_t T, int64_t H, int64_t KV, int64_t D) {
    lc_cpu *c = be->impl;
    int64_t G = H / KV;
    float scale = 1.0f / sqrtf((float)D);
#pragma omp parallel for num_threads(c->nt) schedule(dynamic, 1) collapse(2)
    for (int64_t b = 0; b < B; b++)
        for (int64_t kh = 0; kh < KV; kh++) {
            const float *kb = k + ((size_t)b * T * KV + kh) * D, *vb = v + ((size_t)b * T * KV + kh) * D;
            float *dkb = dk + ((size_t)b * T * KV + kh) * D, *dvb = dv + ((size_t)b * T * KV + kh) * D;
            for (int64_t j = 0; j < T; j++)
                for (int64_t d = 0; d < D; d++) dkb[(size_t)j * KV * D + d] = dvb[(size_t)j * KV * D + d] = 0;
            for (int64_t h = kh * G; h < (kh + 1) * G; h++)
                for (int64_t t = 0; t < T; t++) {
                    size_t row = ((size_t)b * T + t) * H + h;
                    const float *qr = q + row * D, *go = dout + row * D, *o = out + row * D;
                    float *gq = dq + row * D, L = lse[((size_t)b * H + h) * T + t];
                    // forward: o = sum_j p_j v_j, p_j = exp(s_j - L), s_j = scale q.k_j
                    float Di = dotf(go, o, D); // sum_j p_j dP_j
                    for (int64_t d = 0; d < D; d++) gq[d] = 0;
                    for (int64_t j = 0; j <= t; j++) {
                        const float *kr = kb + (size_t)j * KV * D, *vr = vb + (size_t)j * KV * D;
                        float pj = expf(dotf(qr, kr, D) * scale - L);
                        float dP = dotf(go, vr, D);  // d/dp_j
                        float dS = pj * (dP - Di) * scale; // d/d(q.k_j)
                        float *gk = dkb + (size_t)j * KV * D, *gv = dvb + (size_t)j * KV * D;
                        for (int64_t d = 0; d < D; d++) {
                            gq[d] += dS * kr[d];
                            gk[d] += dS * qr[d];
                            gv[d] += pj * go[d];
                        }
                    }
                }
        }
}
