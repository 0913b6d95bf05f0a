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

static int cpu_sync(lc_backend *be) {
    (void)be;
    return 0;
}

static int cpu_weight(lc_backend *be, lc_wt *w) {
    (void)be, (void)w; // products read the mapped weight in place
    return 0;
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

static void cpu_copy2d(lc_backend *be, float *out, int64_t ldo, const float *x, int64_t ldx, int64_t rows,
                       int64_t cols) {
    (void)be;
    for (int64_t i = 0; i < rows; i++) memcpy(out + i * ldo, x + i * ldx, (size_t)cols * sizeof(float));
}

static void cpu_copy2d_n(lc_backend *be, int n, float *const *out, const int64_t *ldo, const float *const *x,
                         const int64_t *ldx, int64_t rows, int64_t cols) {
    for (int i = 0; i < n; i++) cpu_copy2d(be, out[i], ldo[i], x[i], ldx[i], rows, cols);
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

static void cpu_adam(lc_backend *be, float *p, const float *g, float *m, float *v, size_t n,
                     const lc_adam_args *a) {
    int nt = ((lc_cpu *)be->impl)->nt;
#pragma omp parallel for num_threads(nt) schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        float gi = g[i];
        if (a->wd != 0) {
            if (a->decoupled) p[i] *= a->decay;
            else gi = gi + a->wd * p[i];
        }
        m[i] = m[i] + a->w1 * (gi - m[i]);
        v[i] = v[i] * a->b2 + a->w2 * (gi * gi);
        float denom = sqrtf(v[i]) / a->bc2_sqrt + a->eps;
        p[i] = p[i] + (-a->step_size) * (m[i] / denom);
    }
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

static void cpu_swiglu_bwd(lc_backend *be, float *dgate, float *dup, float *h, const float *dout,
                           const float *gate, const float *up, size_t n) {
    int nt = ((lc_cpu *)be->impl)->nt;
#pragma omp parallel for num_threads(nt) schedule(static) if (n > 16384)
    for (size_t i = 0; i < n; i++) {
        // forward: out = g * s(g) * u, s = sigmoid (h: cpu_swiglu's expression)
        float g = gate[i], u = up[i], e = 1.0f + expf(-g), s = 1.0f / e, d = dout[i];
        if (h) h[i] = g / e * u;
        dup[i] = d * g * s;
        dgate[i] = d * u * s * (1.0f + g * (1.0f - s));
    }
}

/* e^x for x <= 0 (softmax terms), within 1e-7 relative (Cephes' expf polynomial on
 * x - n ln 2, n = round(x / ln 2)); below -87 it returns about 1e-38 instead of
 * underflowing. AVX-512 rows use exp_neg16 below, the same arithmetic on 16 lanes. */
static inline float exp_neg(float x) {
    x = x > -87.0f ? x : -87.0f;
    // n = round(x / ln 2) by adding 1.5 * 2^23: the sum's low mantissa bits hold n
    union {
        float f;
        int32_t i;
    } t = {x * 1.44269504088896341f + 12582912.0f}, sc;
    float fn = t.f - 12582912.0f;
    int32_t n = t.i - 0x4B400000;
    float r = x - fn * 0.693359375f + fn * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float y = p * r * r + r + 1.0f;
    sc.i = (n + 127) * (1 << 23); // -126 <= n <= 0: a normal power of two
    return y * sc.f;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define LC_HAVE_AVX512_EXP 1
#define TGT512 __attribute__((target("avx512f")))

/* exp_neg on 16 lanes (the same polynomial). */
static inline __attribute__((always_inline)) TGT512 __m512 exp_neg16(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
    __m512 magic = _mm512_set1_ps(12582912.0f);
    __m512 t = _mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), magic);
    __m512 fn = _mm512_sub_ps(t, magic);
    __m512i n = _mm512_sub_epi32(_mm512_castps_si512(t), _mm512_set1_epi32(0x4B400000));
    __m512 r = _mm512_fnmadd_ps(fn, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fmadd_ps(fn, _mm512_set1_ps(2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    __m512 y = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), _mm512_set1_ps(1.0f));
    __m512i e = _mm512_slli_epi32(_mm512_add_epi32(n, _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(y, _mm512_castsi512_ps(e));
}

/* sum_j exp(l[j] - mx), the terms in float, the sum in double. */
static TGT512 double row_expsum512(const float *l, int64_t V, float mx) {
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    __m512 m = _mm512_set1_ps(mx);
    int64_t j = 0;
    for (; j + 16 <= V; j += 16) {
        __m512 e = exp_neg16(_mm512_sub_ps(_mm512_loadu_ps(l + j), m));
        s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
        s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1))));
    }
    double s = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
    for (; j < V; j++) s += exp_neg(l[j] - mx);
    return s;
}

/* l[j] = exp(l[j] - mx) * f. */
static TGT512 void row_scaled_exp512(float *l, int64_t V, float mx, float f) {
    __m512 m = _mm512_set1_ps(mx), fv = _mm512_set1_ps(f);
    int64_t j = 0;
    for (; j + 16 <= V; j += 16)
        _mm512_storeu_ps(l + j, _mm512_mul_ps(exp_neg16(_mm512_sub_ps(_mm512_loadu_ps(l + j), m)), fv));
    for (; j < V; j++) l[j] = exp_neg(l[j] - mx) * f;
}

static bool have_avx512f(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
}
#endif

static double row_expsum(const lc_cpu *c, const float *l, int64_t V, float mx) {
#ifdef LC_HAVE_AVX512_EXP
    if (c->avx512) return row_expsum512(l, V, mx);
#endif
    (void)c;
    double s = 0;
    for (int64_t j = 0; j < V; j++) s += exp_neg(l[j] - mx);
    return s;
}

static void row_scaled_exp(const lc_cpu *c, float *l, int64_t V, float mx, float f) {
#ifdef LC_HAVE_AVX512_EXP
    if (c->avx512) {
        row_scaled_exp512(l, V, mx, f);
        return;
    }
#endif
    (void)c;
    for (int64_t j = 0; j < V; j++) l[j] = exp_neg(l[j] - mx) * f;
}

static double cpu_cross_entropy(lc_backend *be, float *logits, const int32_t *targets, int64_t N,
                                int64_t V, float grad_scale) {
    const lc_cpu *c = be->impl;
    int nt = c->nt;
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
        double s = row_expsum(c, l, V, mx); // float exponentials, summed in double
        double lse = (double)mx + log(s);
        total += lse - (double)l[t];
        if (grad_scale != 0.0f) {
            // loss = lse - l[t]  =>  dl[j] = softmax[j] - [j == t]
            float f = (float)((double)grad_scale / s);
            row_scaled_exp(c, l, V, mx, f);
            l[t] -= grad_scale;
        }
    }
    return total;
}

static void cpu_cross_entropy_sum(lc_backend *be, double *sum, float *logits, const int32_t *targets,
                                  int64_t N, int64_t V, const float *grad_scale) {
    *sum += cpu_cross_entropy(be, logits, targets, N, V, grad_scale ? *grad_scale : 0.0f);
}

/* ------------------------------------------------------------ the table */

/* ->gemm_n: the products one after another (the CPU gains nothing from grouping). */
static void cpu_gemm_n(lc_backend *be, int n, const lc_gemm_args *g) {
    for (int i = 0; i < n; i++) {
        if (g[i].X && g[i].X != g[i].C && g[i].beta != 0.0f)
            cpu_copy2d(be, g[i].C, g[i].ldc, g[i].X, g[i].ldc, g[i].M, g[i].N);
        lc_cpu_gemm(be, g[i].ta, g[i].tb, g[i].M, g[i].N, g[i].K, g[i].alpha, g[i].A, g[i].lda, g[i].B, g[i].ldb,
                    g[i].beta, g[i].C, g[i].ldc);
    }
}

/* ->matmul_n: the products one after another. */
static void cpu_matmul_n(lc_backend *be, int n, float *const *out, const float *x, const lc_wt *const *w,
                         const float *const *bias, int64_t N, bool accumulate) {
    for (int i = 0; i < n; i++) lc_cpu_matmul(be, out[i], x, w[i], bias ? bias[i] : NULL, N, accumulate);
}

lc_backend *lc_backend_cpu_new(int threads) {
#ifdef _OPENMP
    if (threads <= 0) threads = omp_get_max_threads();
#else
    threads = 1;
#endif
    openblas_set_num_threads(1); // one threading layer: OpenMP splits, sgemm runs serially
    lc_cpu *c = xcalloc(1, sizeof *c);
    c->nt = threads;
#ifdef LC_HAVE_AVX512_EXP
    c->avx512 = have_avx512f();
#endif
    c->scr = xcalloc((size_t)threads, sizeof *c->scr);
    lc_backend *be = xcalloc(1, sizeof *be);
    be->name = "cpu";
    be->impl = c;
    be->threads = threads;
    // never: grouping measured ~4% on 2 cores, but it reorders sums, and the CPU's results
    // (the reference the card is checked against, the demo's) stay bit for bit as they were
    be->lora_group_rows = INT64_MAX;
    be->alloc = cpu_alloc;
    be->release = cpu_release;
    be->upload = cpu_copy_bytes;
    be->download = cpu_copy_bytes;
    be->free = cpu_free;
    be->alloc_shared = cpu_alloc;
    be->sync = cpu_sync;
    be->weight = cpu_weight;
    be->zero = cpu_zero;
    be->copy = cpu_copy;
    be->copy2d = cpu_copy2d;
    be->copy2d_n = cpu_copy2d_n;
    be->add = cpu_add;
    be->axpy = cpu_axpy;
    be->dropout = cpu_dropout;
    be->adam = cpu_adam;
    be->matmul = lc_cpu_matmul;
    be->matmul_dx = lc_cpu_matmul_dx;
    be->gemm = lc_cpu_gemm;
    be->gemm_n = cpu_gemm_n;
    be->matmul_n = cpu_matmul_n;
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
    be->cross_entropy_sum = cpu_cross_entropy_sum;
    return be;
}

bool lc_backend_cpu_set_bf16(lc_backend *be, bool on) {
    lc_cpu *c = be->impl;
    c->bf16 = on && lc_cpu_bf16_available();
    return c->bf16;
}
