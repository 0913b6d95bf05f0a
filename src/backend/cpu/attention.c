/*
 * attention.c — causal grouped-query attention on the CPU, forward and backward.
 *
 * Work goes in blocks of up to ATT_ROWS query rows of one (batch, head): the block's
 * scores against every key the block may see come from one sgemm into a per-thread
 * buffer (never a T×T matrix), softmax runs row by row in float with a double sum
 * (keys a row may not see get probability 0), and the weighted sum of values is a
 * second sgemm. The forward keeps each row's log-sum-exp, so the backward recomputes
 * the probabilities instead of storing them; its products (dP = dO V^T, dQ = dS K,
 * dK += dS^T Q, dV += P^T dO) are sgemms on the same blocks. The backward runs one task
 * per (batch, kv head), which owns the dk/dv rows of that head: no two threads write
 * the same gradient. OpenBLAS runs single-threaded inside each OpenMP task. Owns
 * nothing (buffers are the backend's per-thread scratch).
 */
#include <math.h>

#include <cblas.h>
#undef I // <cblas.h> pulls in <complex.h>, whose I we do not use

#include "backend/cpu/cpu.h"

/* Query rows per block: bounds the scratch at 2 · ATT_ROWS · S floats per thread. */
#define ATT_ROWS 64

static inline float dotf(const float *a, const float *b, int64_t n) {
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

void lc_cpu_attention(lc_backend *be, float *out, float *lse, const float *q, const float *k,
                      const float *v, int64_t B, int64_t Tq, int64_t S, int64_t H, int64_t KV,
                      int64_t D, int64_t pos0) {
    lc_cpu *c = be->impl;
    int64_t G = H / KV, nrb = (Tq + ATT_ROWS - 1) / ATT_ROWS;
    int qs = (int)(H * D), ks = (int)(KV * D);
    float scale = 1.0f / sqrtf((float)D);
#pragma omp parallel for num_threads(c->nt) schedule(dynamic, 1) collapse(3)
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t rb = 0; rb < nrb; rb++) {
                int64_t t0 = rb * ATT_ROWS, t1 = t0 + ATT_ROWS < Tq ? t0 + ATT_ROWS : Tq, nr = t1 - t0;
                int64_t nk = pos0 + t1 < S ? pos0 + t1 : S; // keys the block's last row sees
                float *p = lc_cpu_scratch_get(c, lc_cpu_tid(), (size_t)(nr * nk));
                const float *qb = q + (((size_t)b * Tq + t0) * H + h) * D;
                const float *kb = k + ((size_t)b * S * KV + h / G) * D;
                const float *vb = v + ((size_t)b * S * KV + h / G) * D;
                float *ob = out + (((size_t)b * Tq + t0) * H + h) * D;
                // p (nr, nk) = scale · q_blk (nr, D) k^T (D, nk)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nr, (int)nk, (int)D, scale, qb,
                            qs, kb, ks, 0.0f, p, (int)nk);
                for (int64_t i = 0; i < nr; i++) {
                    float *row = p + (size_t)i * nk;
                    int64_t lim = pos0 + t0 + i + 1 < S ? pos0 + t0 + i + 1 : S;
                    float mx = -INFINITY;
                    for (int64_t j = 0; j < lim; j++) mx = row[j] > mx ? row[j] : mx;
                    double sum = 0;
                    for (int64_t j = 0; j < lim; j++) sum += (row[j] = expf(row[j] - mx));
                    float inv = (float)(1.0 / sum);
                    for (int64_t j = 0; j < lim; j++) row[j] *= inv;
                    for (int64_t j = lim; j < nk; j++) row[j] = 0.0f;
                    if (lse) lse[((size_t)b * H + h) * Tq + t0 + i] = mx + (float)log(sum);
                }
                // out_blk (nr, D) = p (nr, nk) v (nk, D)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nr, (int)D, (int)nk, 1.0f, p,
                            (int)nk, vb, ks, 0.0f, ob, qs);
            }
}

void lc_cpu_attention_bwd(lc_backend *be, float *dq, float *dk, float *dv, const float *dout,
                          const float *q, const float *k, const float *v, const float *out,
                          const float *lse, int64_t B, int64_t T, int64_t H, int64_t KV, int64_t D) {
    lc_cpu *c = be->impl;
    int64_t G = H / KV;
    int qs = (int)(H * D), ks = (int)(KV * D);
    float scale = 1.0f / sqrtf((float)D);
#pragma omp parallel for num_threads(c->nt) schedule(dynamic, 1) collapse(2)
    for (int64_t b = 0; b < B; b++)
        for (int64_t kh = 0; kh < KV; kh++) {
            const float *kb = k + ((size_t)b * T * KV + kh) * D, *vb = v + ((size_t)b * T * KV + kh) * D;
            float *dkb = dk + ((size_t)b * T * KV + kh) * D, *dvb = dv + ((size_t)b * T * KV + kh) * D;
            for (int64_t j = 0; j < T; j++)
                for (int64_t d = 0; d < D; d++) dkb[(size_t)j * KV * D + d] = dvb[(size_t)j * KV * D + d] = 0;
            float *p = lc_cpu_scratch_get(c, lc_cpu_tid(), (size_t)(2 * ATT_ROWS * T));
            float *ds = p + (size_t)ATT_ROWS * T;
            for (int64_t h = kh * G; h < (kh + 1) * G; h++)
                for (int64_t t0 = 0; t0 < T; t0 += ATT_ROWS) {
                    int64_t t1 = t0 + ATT_ROWS < T ? t0 + ATT_ROWS : T, nr = t1 - t0, nk = t1;
                    size_t row0 = ((size_t)b * T + t0) * H + h;
                    const float *qb = q + row0 * D, *gob = dout + row0 * D, *ob = out + row0 * D;
                    const float *L = lse + ((size_t)b * H + h) * T + t0;
                    // forward: o = sum_j p_j v_j, p_j = exp(s_j - L), s_j = scale q.k_j
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nr, (int)nk, (int)D, scale,
                                qb, qs, kb, ks, 0.0f, p, (int)nk); // s
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nr, (int)nk, (int)D, 1.0f,
                                gob, qs, vb, ks, 0.0f, ds, (int)nk); // dP_j = dO . v_j
                    for (int64_t i = 0; i < nr; i++) {
                        float *pr = p + (size_t)i * nk, *dr = ds + (size_t)i * nk;
                        float Di = dotf(gob + (size_t)i * qs, ob + (size_t)i * qs, D); // sum_j p_j dP_j
                        int64_t lim = t0 + i + 1;
                        for (int64_t j = 0; j < lim; j++) {
                            pr[j] = expf(pr[j] - L[i]);
                            dr[j] = pr[j] * (dr[j] - Di) * scale; // d/d(q.k_j)
                        }
                        for (int64_t j = lim; j < nk; j++) pr[j] = dr[j] = 0.0f;
                    }
                    // dq_blk (nr, D) = ds (nr, nk) k (nk, D)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nr, (int)D, (int)nk, 1.0f,
                                ds, (int)nk, kb, ks, 0.0f, dq + row0 * D, qs);
                    // dk (nk, D) += ds^T (nk, nr) q_blk (nr, D);  dv += p^T dO_blk
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)nk, (int)D, (int)nr, 1.0f, ds,
                                (int)nk, qb, qs, 1.0f, dkb, ks);
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)nk, (int)D, (int)nr, 1.0f, p,
                                (int)nk, gob, qs, 1.0f, dvb, ks);
                }
        }
}
