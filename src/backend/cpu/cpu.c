/*
 * cpu.c — the CPU backend: its table, memory, per-thread scratch, and the elementwise
 * and per-row layers (dropout, embedding, RMSNorm, RoPE, SwiGLU, cross-entropy).
 *
 * Owns the per-thread scratch buffers (freed with the backend). Loops are OpenMP
 * parallel over rows; reductions along a row accumulate in double. Matrix products
 * live in matmul.c, attention in attention.c. Never prints or exits (allocation
 * failures abort through xmalloc).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif
#include <cblas.h>
#undef I // <cblas.h> pulls in <complex.h>, whose I we do not use

#include "backend/cpu/cpu.h"
#include "core/mem.h"

/* ------------------------------------------------------------ threads and memory */

int lc_cpu_tid(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

float *lc_cpu_scratch_get(lc_cpu *c, int tid, size_t n) {
    lc_cpu_scratch *s = &c->scr[tid];
    if (s->cap < n) {
        free(s->p);
        s->p = xmalloc(n * sizeof(float));
        s->cap = n;
    }
    return s->p;
}

static void *cpu_alloc(lc_backend *be, size_t bytes) {
    (void)be;
    return xcalloc(1, bytes ? bytes : 1);
}

static void cpu_release(lc_backend *be, void *p) {
    (void)be;
    free(p);
}

static void cpu_copy_bytes(lc_backend *be, void *dst, const void *src, size_t bytes) {
    (void)be;
    if (bytes) memcpy(dst, src, bytes);
}

static void cpu_free(lc_backend *be) {
    if (!be) return;
    lc_cpu *c = be->impl;
    for (int i = 0; i < c->nt; i++) free(c->scr[i].p);
    free(c->scr);
    free(c->xb);
    free(c);
    free(be);
}

/* ------------------------------------------------------------ elementwise */

static void cpu_zero(lc_backend *be, float *x, size_t n) {
    (void)be;
    if (n) memset(x, 0, n * sizeof(float));
}

static void cpu_copy(lc_backend *be, float *out, const float *x, size_t n) {
    (void)be;
    if (n && out != x) memmove(out, x, n * sizeof(float));
}

static void cpu_add(lc_backend *be, float *out, const float *a, const float *b, size_t n) {
    int nt = ((lc_cpu *)be->impl)->nt;
#pragma omp parallel for num_threads(nt) schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

static void cpu_axpy(lc_backend *be, float *y, float a, const float *x, size_t n) {
    int nt = ((lc_cpu *)be->impl)->nt;
#pragma omp parallel for num_threads(nt) schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) y[i] += a * x[i];
}

/* A 64-bit mix of (seed, i): splitmix64's finalizer over their combination. */
static inline uint64_t mix64(uint64_t seed, uint64_t i) {
    uint64_t z = seed + 0x9E3779B97F4A7C15ULL * (i + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static void cpu_dropout(lc_backend *be, float *out, const float *x, size_t n, float p, uint64_t seed) {
    int nt = ((lc_cpu *)be->impl)->nt;
    // keep when the top 24 bits, as a fraction of 2^24, are >= p
    uint64_t thresh = (uint64_t)((double)p * 16777216.0);
    float keep = 1.0f / (1.0f - p);
#pragma omp parallel for num_threads(nt) schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) out[i] = (mix64(seed, i) >> 40) >= thresh ? x[i] * keep : 0.0f;
}

/* ------------------------------------------------------------ layers */

static void cpu_embedding(lc_backend *be, float *out, const int32_t *tokens, const lc_wt *table,
                          int64_t N) {
    int nt = ((lc_cpu *)be->impl)->nt;
    int64_t C = table->cols;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t n = 0; n < N; n++)
        lc_cpu_convert_block(out + (size_t)n * C, table, tokens[n], tokens[n] + 1, 0, C);
}

static void cpu_rmsnorm(lc_backend *be, float *out, float *rstd, const float *x, const float *w,
                        int64_t N, int64_t C, float eps) {
    int nt = ((lc_cpu *)be->impl)->nt;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * C;
        float *o = out + (size_t)n * C;
        double ss = 0;
        for (int64_t c = 0; c < C; c++) ss += (double)xr[c] * xr[c];
        float r = (float)(1.0 / sqrt(ss / (double)C + (double)eps));
        if (rstd) rstd[n] = r;
        for (int64_t c = 0; c < C; c++) o[c] = w[c] * (xr[c] * r);
    }
}

static void cpu_rmsnorm_bwd(lc_backend *be, float *dx, const float *dout, const float *x,
                            const float *w, const float *rstd, int64_t N, int64_t C) {
    int nt = ((lc_cpu *)be->impl)->nt;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * C, *g = dout + (size_t)n * C;
        float *d = dx + (size_t)n * C, r = rstd[n];
        // forward: out = w * (x * r), r = (mean(x^2) + eps)^-1/2
        // dx = r * (w*g - xhat * mean(w*g*xhat)), xhat = x * r
        double dot = 0;
        for (int64_t c = 0; c < C; c++) dot += (double)w[c] * g[c] * xr[c] * r;
        float m = (float)(dot / (double)C);
        for (int64_t c = 0; c < C; c++) d[c] += r * (w[c] * g[c] - xr[c] * r * m);
    }
}

static void rope_apply(lc_cpu *c, float *x, const float *cos, const float *sin, int64_t B, int64_t T,
                       int64_t H, int64_t D, int64_t pos0, float dir) {
    int64_t h2 = D / 2;
#pragma omp parallel for num_threads(c->nt) schedule(static) collapse(2)
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            const float *cs = cos + (size_t)(pos0 + t) * h2, *sn = sin + (size_t)(pos0 + t) * h2;
            for (int64_t h = 0; h < H; h++) {
                float *r = x + (((size_t)b * T + t) * H + h) * D;
                for (int64_t i = 0; i < h2; i++) {
                    // forward (dir 1): out1 = x1 cos - x2 sin; out2 = x2 cos + x1 sin
                    // backward (dir -1) is the transpose: the rotation by -angle
                    float x1 = r[i], x2 = r[i + h2], s = dir * sn[i];
                    r[i] = x1 * cs[i] - x2 * s;
                    r[i + h2] = x2 * cs[i] + x1 * s;
                }
            }
        }
}

static void cpu_rope(lc_backend *be, float *x, const float *cos, const float *sin, int64_t B,
                     int64_t T, int64_t H, int64_t D, int64_t pos0) {
    rope_apply(be->impl, x, cos, sin, B, T, H, D, pos0, 1.0f);
}

static void cpu_rope_bwd(lc_backend *be, float *dx, const float *cos, const float *sin, int64_t B,
                         int64_t T, int64_t H, int64_t D, int64_t pos0) {
    rope_apply(be->impl, dx, cos, sin, B, T, H, D, pos0, -1.0f);
}

static void cpu_swiglu(lc_backend *be, float *out, const float *gate, const float *up, size_t n) {
    int nt = ((lc_cpu *)be->impl)->nt;
#pragma omp parallel for num_threads(nt) schedule(static) if (n > 16384)
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

static void cpu_swiglu_bwd(lc_backend *be, float *dgate, float *dup, const float *dout,
                           const float *gate, const float *up, size_t n) {
    int nt = ((lc_cpu *)be->impl)->nt;
#pragma omp parallel for num_threads(nt) schedule(static) if (n > 16384)
    for (size_t i = 0; i < n; i++) {
        // forward: out = g * s(g) * u, s = sigmoid
        float g = gate[i], s = 1.0f / (1.0f + expf(-g)), d = dout[i];
        dup[i] = d * g * s;
        dgate[i] = d * up[i] * s * (1.0f + g * (1.0f - s));
    }
}

/* e^x for x <= 0 (softmax terms), within about 2 ulp (Cephes' expf polynomial on
 * x - n ln 2), written so that loops over it vectorize; below -87 it returns about
 * 1e-38 instead of underflowing. */
static inline float exp_neg(float x) {
    x = x < -87.0f ? -87.0f : x;
    float t = x * 1.44269504088896341f - 0.5f; // n = round(x / ln 2), x <= 0
    int32_t n = (int32_t)t;                    // truncation toward zero of a value <= -0.5
    n = (float)n > t ? n - 1 : n;              // floor
    n += 1;
    float fn = (float)n;
    float r = x - fn * 0.693359375f + fn * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float y = p * r * r + r + 1.0f;
    int32_t bits = (n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, 4);
    return y * scale;
}

static double cpu_cross_entropy(lc_backend *be, float *logits, const int32_t *targets, int64_t N,
                                int64_t V, float grad_scale) {
    int nt = ((lc_cpu *)be->impl)->nt;
    double total = 0;
#pragma omp parallel for num_threads(nt) schedule(static) reduction(+ : total)
    for (int64_t n = 0; n < N; n++) {
        float *l = logits + (size_t)n * V;
        int32_t t = targets[n];
        if (t < 0) {
            if (grad_scale != 0.0f) memset(l, 0, (size_t)V * sizeof(float));
            continue;
        }
        float mx = l[0];
        for (int64_t j = 1; j < V; j++) mx = l[j] > mx ? l[j] : mx;
        double s = 0; // float exponentials, summed in double
#pragma omp simd reduction(+ : s)
        for (int64_t j = 0; j < V; j++) s += exp_neg(l[j] - mx);
        double lse = (double)mx + log(s);
        total += lse - (double)l[t];
        if (grad_scale != 0.0f) {
            // loss = lse - l[t]  =>  dl[j] = softmax[j] - [j == t]
            float f = (float)((double)grad_scale / s);
#pragma omp simd
            for (int64_t j = 0; j < V; j++) l[j] = exp_neg(l[j] - mx) * f;
            l[t] -= grad_scale;
        }
    }
    return total;
}

/* ------------------------------------------------------------ the table */

lc_backend *lc_backend_cpu_new(int threads) {
#ifdef _OPENMP
    if (threads <= 0) threads = omp_get_max_threads();
#else
    threads = 1;
#endif
    openblas_set_num_threads(1); // one threading layer: OpenMP splits, sgemm runs serially
    lc_cpu *c = xcalloc(1, sizeof *c);
    c->nt = threads;
    c->scr = xcalloc((size_t)threads, sizeof *c->scr);
    lc_backend *be = xcalloc(1, sizeof *be);
    be->name = "cpu";
    be->impl = c;
    be->threads = threads;
    be->alloc = cpu_alloc;
    be->release = cpu_release;
    be->upload = cpu_copy_bytes;
    be->download = cpu_copy_bytes;
    be->free = cpu_free;
    be->zero = cpu_zero;
    be->copy = cpu_copy;
    be->add = cpu_add;
    be->axpy = cpu_axpy;
    be->dropout = cpu_dropout;
    be->matmul = lc_cpu_matmul;
    be->matmul_dx = lc_cpu_matmul_dx;
    be->gemm = lc_cpu_gemm;
    be->embedding = cpu_embedding;
    be->rmsnorm = cpu_rmsnorm;
    be->rmsnorm_bwd = cpu_rmsnorm_bwd;
    be->rope = cpu_rope;
    be->rope_bwd = cpu_rope_bwd;
    be->attention = lc_cpu_attention;
    be->attention_bwd = lc_cpu_attention_bwd;
    be->swiglu = cpu_swiglu;
    be->swiglu_bwd = cpu_swiglu_bwd;
    be->cross_entropy = cpu_cross_entropy;
    return be;
}

bool lc_backend_cpu_set_bf16(lc_backend *be, bool on) {
    lc_cpu *c = be->impl;
    c->bf16 = on && lc_cpu_bf16_available();
    return c->bf16;
}
