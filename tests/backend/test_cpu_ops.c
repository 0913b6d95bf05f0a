/*
 * test_cpu_ops.c — the CPU backend's operations: every backward against central finite
 * differences of its forward, and every fast kernel against its plain *_naive
 * reference on fresh random inputs (odd sizes, so blocks split unevenly across threads).
 *
 * Finite differences: each check differentiates the scalar L = sum_i w_i out_i (random
 * w, summed in double) of the float32 forward, with step h = 1e-2 on inputs of size
 * O(1). The error of a central difference is the truncation h^2/6 |L'''| (about 2e-5
 * here) plus float32 rounding of L, about sqrt(n) 2^-24 max|w_i out_i| / h (below 1e-4
 * for the n <= 200 of these tests); so a gradient passes within 3e-4 + 1e-3 |g| (the
 * errors seen are 2e-6..2e-5), while a wrong formula is off by O(|g|).
 *
 * Fast vs naive: the naive kernels sum in double, so the difference is the fast
 * kernel's float32 rounding, bounded by gamma_K = K 2^-24 relative to sum |a_k b_k|
 * for sums of K products; checked as max|diff| <= K 2^-24 max|ref| (plus 1e-6 slack
 * for the exp/log of softmax rows).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu.h"
#include "harness.h"

static lc_backend *be;
static uint64_t rs = 12345;

static double urand(void) { // [0, 1)
    rs = rs * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(rs >> 11) * 0x1.0p-53;
}

static float *rnd(size_t n, double scale) {
    float *p = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = (float)((2 * urand() - 1) * scale);
    return p;
}

static double wsum(const float *out, const float *w, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)out[i] * w[i];
    return s;
}

/* Checks an analytic gradient g (n) of L(x) against central differences (at most 60
 * coordinates, spread over x). f computes L for the current x. */
static void fd_check(const char *what, float *x, const float *g, size_t n, double (*f)(void *), void *ctx) {
    const float h = 1e-2f;
    size_t step = n > 60 ? n / 60 : 1;
    double worst = 0;
    for (size_t i = 0; i < n; i += step) {
        float x0 = x[i];
        x[i] = x0 + h;
        double lp = f(ctx);
        x[i] = x0 - h;
        double lm = f(ctx);
        x[i] = x0;
        double fd = (lp - lm) / ((double)(x0 + h) - (double)(x0 - h)); // the steps as rounded
        double err = fabs(fd - g[i]);
        worst = err > worst ? err : worst;
        CHECK_MSG(err <= 3e-4 + 1e-3 * fabs(g[i]), "%s: d/dx[%zu] analytic %.6g vs fd %.6g", what, i,
                  (double)g[i], fd);
    }
    printf("  %s: worst |fd - analytic| %.2e\n", what, worst);
}

/* ------------------------------------------------------------ finite differences */

typedef struct {
    int64_t N, C;
    float *x, *w, *out, *rstd, *wt;
} rms_ctx;

static double rms_L(void *p) {
    rms_ctx *c = p;
    be->rmsnorm(be, c->out, c->rstd, c->x, c->w, c->N, c->C, 1e-5f);
    return wsum(c->out, c->wt, (size_t)(c->N * c->C));
}

static void test_rmsnorm_fd(void) {
    rms_ctx c = {3, 37, NULL, NULL, NULL, NULL, NULL};
    size_t n = (size_t)(c.N * c.C);
    c.x = rnd(n, 1.0), c.w = rnd((size_t)c.C, 1.0), c.out = rnd(n, 1), c.rstd = rnd((size_t)c.N, 1);
    c.wt = rnd(n, 1.0);
    rms_L(&c);
    float *dx = rnd(n, 1.0), *dx0 = malloc(n * 4);
    memcpy(dx0, dx, n * 4);
    be->rmsnorm_bwd(be, dx, c.wt, c.x, c.w, c.rstd, c.N, c.C); // += into a non-zero dx
    for (size_t i = 0; i < n; i++) dx[i] -= dx0[i];
    fd_check("rmsnorm", c.x, dx, n, rms_L, &c);
    free(c.x), free(c.w), free(c.out), free(c.rstd), free(c.wt), free(dx), free(dx0);
}

typedef struct {
    int64_t B, T, H, D, pos0;
    float *x, *tmp, *cos, *sin, *wt;
} rope_ctx;

static double rope_L(void *p) {
    rope_ctx *c = p;
    size_t n = (size_t)(c->B * c->T * c->H * c->D);
    memcpy(c->tmp, c->x, n * 4);
    be->rope(be, c->tmp, c->cos, c->sin, c->B, c->T, c->H, c->D, c->pos0);
    return wsum(c->tmp, c->wt, n);
}

static void test_rope_fd(void) {
    rope_ctx c = {2, 5, 3, 8, 2, NULL, NULL, NULL, NULL, NULL};
    size_t n = (size_t)(c.B * c.T * c.H * c.D), P = (size_t)(c.pos0 + c.T), half = (size_t)c.D / 2;
    c.x = rnd(n, 1), c.tmp = malloc(n * 4), c.wt = rnd(n, 1);
    c.cos = malloc(P * half * 4), c.sin = malloc(P * half * 4);
    for (size_t p = 0; p < P; p++)
        for (size_t i = 0; i < half; i++) {
            double a = (double)p * pow(100.0, -(double)i / (double)half);
            c.cos[p * half + i] = (float)cos(a), c.sin[p * half + i] = (float)sin(a);
        }
    float *g = malloc(n * 4);
    memcpy(g, c.wt, n * 4);
    be->rope_bwd(be, g, c.cos, c.sin, c.B, c.T, c.H, c.D, c.pos0);
    fd_check("rope", c.x, g, n, rope_L, &c);
    // rope at position 0 is the identity; the rotation keeps norms
    rope_L(&c);
    double n0 = 0, n1 = 0;
    for (size_t i = 0; i < n; i++) n0 += (double)c.x[i] * c.x[i], n1 += (double)c.tmp[i] * c.tmp[i];
    CHECK(fabs(n0 - n1) < 1e-4 * n0);
    free(c.x), free(c.tmp), free(c.wt), free(c.cos), free(c.sin), free(g);
}

typedef struct {
    int64_t B, T, H, KV, D;
    float *q, *k, *v, *out, *lse, *wt;
} att_ctx;

static double att_L(void *p) {
    att_ctx *c = p;
    be->attention(be, c->out, c->lse, c->q, c->k, c->v, c->B, c->T, c->T, c->H, c->KV, c->D, 0);
    return wsum(c->out, c->wt, (size_t)(c->B * c->T * c->H * c->D));
}

static void test_attention_fd(void) {
    att_ctx c = {2, 6, 4, 2, 8, NULL, NULL, NULL, NULL, NULL, NULL};
    size_t nq = (size_t)(c.B * c.T * c.H * c.D), nk = (size_t)(c.B * c.T * c.KV * c.D);
    c.q = rnd(nq, 1.5), c.k = rnd(nk, 1.5), c.v = rnd(nk, 1), c.out = malloc(nq * 4);
    c.lse = malloc((size_t)(c.B * c.H * c.T) * 4), c.wt = rnd(nq, 1);
    att_L(&c);
    float *dq = malloc(nq * 4), *dk = malloc(nk * 4), *dv = malloc(nk * 4);
    be->attention_bwd(be, dq, dk, dv, c.wt, c.q, c.k, c.v, c.out, c.lse, c.B, c.T, c.H, c.KV, c.D);
    fd_check("attention dq", c.q, dq, nq, att_L, &c);
    fd_check("attention dk", c.k, dk, nk, att_L, &c);
    fd_check("attention dv", c.v, dv, nk, att_L, &c);
    free(c.q), free(c.k), free(c.v), free(c.out), free(c.lse), free(c.wt), free(dq), free(dk), free(dv);
}

typedef struct {
    size_t n;
    float *g, *u, *out, *wt;
} glu_ctx;

static double glu_L(void *p) {
    glu_ctx *c = p;
    be->swiglu(be, c->out, c->g, c->u, c->n);
    return wsum(c->out, c->wt, c->n);
}

static void test_swiglu_fd(void) {
    glu_ctx c = {101, rnd(101, 3), rnd(101, 2), malloc(101 * 4), rnd(101, 1)};
    float *dg = malloc(101 * 4), *du = malloc(101 * 4);
    be->swiglu_bwd(be, dg, du, NULL, c.wt, c.g, c.u, c.n);
    fd_check("swiglu dgate", c.g, dg, c.n, glu_L, &c);
    fd_check("swiglu dup", c.u, du, c.n, glu_L, &c);
    // in place, as the model calls it: dgate over gate and dup over dout give the same
    // bits, and h = the forward's bits
    float *d2 = malloc(101 * 4), *dg2 = malloc(101 * 4), *h = malloc(101 * 4);
    memcpy(d2, c.wt, 101 * 4), memcpy(dg2, c.g, 101 * 4);
    for (int i = 0; i < 101; i++) h[i] = NAN;
    be->swiglu(be, c.out, c.g, c.u, c.n);
    be->swiglu_bwd(be, dg2, d2, h, d2, dg2, c.u, c.n);
    CHECK_MSG(!memcmp(dg2, dg, 101 * 4) && !memcmp(d2, du, 101 * 4), "swiglu_bwd in place differs");
    CHECK_MSG(!memcmp(h, c.out, 101 * 4), "swiglu_bwd's h differs from swiglu");
    free(d2), free(dg2), free(h);
    free(c.g), free(c.u), free(c.out), free(c.wt), free(dg), free(du);
}

typedef struct {
    int64_t N, V;
    float *l, *tmp;
    int32_t *t;
} ce_ctx;

static double ce_L(void *p) {
    ce_ctx *c = p;
    memcpy(c->tmp, c->l, (size_t)(c->N * c->V) * 4);
    return be->cross_entropy(be, c->tmp, c->t, c->N, c->V, 0.0f);
}

static void test_cross_entropy_fd(void) {
    int32_t t[4] = {3, -1, 0, 16};
    ce_ctx c = {4, 17, rnd(68, 3), malloc(68 * 4), t};
    float *g = malloc(68 * 4);
    memcpy(g, c.l, 68 * 4);
    double s = be->cross_entropy(be, g, t, c.N, c.V, 1.0f);
    CHECK(fabs(s - ce_L(&c)) < 1e-12);
    fd_check("cross_entropy", c.l, g, 68, ce_L, &c);
    for (int j = 0; j < 17; j++) CHECK(g[17 + j] == 0.0f); // the ignored row
    free(c.l), free(c.tmp), free(g);
}

typedef struct {
    int64_t N;
    lc_wt w;
    float *x, *out, *wt;
} mm_ctx;

static double mm_L(void *p) {
    mm_ctx *c = p;
    be->matmul(be, c->out, c->x, &c->w, NULL, c->N, false);
    return wsum(c->out, c->wt, (size_t)(c->N * c->w.rows));
}

static void test_matmul_dx_fd(void) {
    float *W = rnd(23 * 19, 1);
    mm_ctx c = {5, {W, LC_DT_F32, 23, 19, NULL}, rnd(5 * 19, 1), malloc(5 * 23 * 4), rnd(5 * 23, 1)};
    float *dx = malloc(5 * 19 * 4);
    be->matmul_dx(be, dx, c.wt, &c.w, c.N, false);
    fd_check("matmul dx", c.x, dx, 5 * 19, mm_L, &c);
    free(W), free(c.x), free(c.out), free(c.wt), free(dx);
}

typedef struct {
    size_t n;
    float *x, *out, *wt;
    float p;
} drop_ctx;

static double drop_L(void *q) {
    drop_ctx *c = q;
    be->dropout(be, c->out, c->x, c->n, c->p, 99);
    return wsum(c->out, c->wt, c->n);
}

static void test_dropout(void) {
    size_t n = 100000;
    drop_ctx c = {n, rnd(n, 1), malloc(n * 4), rnd(n, 1), 0.25f};
    drop_L(&c);
    size_t kept = 0;
    for (size_t i = 0; i < n; i++)
        if (c.out[i] != 0.0f) {
            kept++;
            CHECK(fabsf(c.out[i] - c.x[i] / 0.75f) <= 1e-6f * fabsf(c.out[i]));
        }
    // binomial(n, 0.75): sd = sqrt(n 0.75 0.25) ~ 137; 6 sd
    CHECK_MSG(fabs((double)kept - 0.75 * n) < 6 * 137, "kept %zu of %zu", kept, n);
    // its own backward: d/dx sum w drop(x) = drop(w)
    float *g = malloc(n * 4);
    be->dropout(be, g, c.wt, n, c.p, 99);
    c.n = 300;
    fd_check("dropout", c.x, g, 300, drop_L, &c);
    free(c.x), free(c.out), free(c.wt), free(g);
}

/* ------------------------------------------------------------ fast vs naive */

static double maxabs(const float *a, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fabs(a[i]) > m ? fabs(a[i]) : m;
    return m;
}

static void cmp(const char *what, const float *fast, const float *ref, size_t n, double K) {
    double md = 0;
    for (size_t i = 0; i < n; i++) md = fmax(md, fabs((double)fast[i] - ref[i]));
    double bound = K * 0x1.0p-24 * maxabs(ref, n) + 1e-6;
    CHECK_MSG(md <= bound, "%s: max diff %.3e > bound %.3e", what, md, bound);
}

/* A weight of dtype dt from fp32 values (rounded), plus those rounded values in f32. */
static void make_wt(lc_wt *w, float **vals, lc_dtype dt, int64_t rows, int64_t cols) {
    size_t n = (size_t)(rows * cols);
    float *v = rnd(n, 1);
    void *d = malloc(n * 4 + 2); // +2: an unaligned copy for F32 below
    lc_from_f32(d, dt, v, n);
    lc_to_f32(v, d, dt, n);
    w->data = d, w->dtype = dt, w->rows = rows, w->cols = cols, w->q = NULL;
    *vals = v;
}

static void test_matmul_vs_naive(void) {
    lc_dtype dts[3] = {LC_DT_F32, LC_DT_BF16, LC_DT_F16};
    int64_t N = 7, O = 203, I = 149;
    for (int d = 0; d < 3; d++)
        for (int acc = 0; acc < 2; acc++) {
            lc_wt w;
            float *vals;
            make_wt(&w, &vals, dts[d], O, I);
            float *x = rnd((size_t)(N * I), 1), *bias = rnd((size_t)O, 1);
            float *o1 = rnd((size_t)(N * O), 1), *o2 = malloc((size_t)(N * O) * 4);
            memcpy(o2, o1, (size_t)(N * O) * 4);
            be->matmul(be, o1, x, &w, acc ? bias : NULL, N, acc);
            lc_cpu_matmul_naive(o2, x, &w, acc ? bias : NULL, N, acc);
            cmp(lc_dtype_name(dts[d]), o1, o2, (size_t)(N * O), (double)I + 2);
            float *dy = rnd((size_t)(N * O), 1), *d1 = rnd((size_t)(N * I), 1), *d2 = malloc((size_t)(N * I) * 4);
            memcpy(d2, d1, (size_t)(N * I) * 4);
            be->matmul_dx(be, d1, dy, &w, N, acc);
            lc_cpu_matmul_dx_naive(d2, dy, &w, N, acc);
            cmp("matmul_dx", d1, d2, (size_t)(N * I), (double)O + 2);
            if (dts[d] == LC_DT_F32) { // an unaligned F32 weight takes the converting path
                unsigned char *u = (unsigned char *)w.data + 2;
                memmove(u, w.data, (size_t)(O * I) * 4);
                lc_wt wu = w;
                wu.data = u;
                be->matmul(be, o1, x, &wu, NULL, N, false);
                lc_cpu_matmul_naive(o2, x, &wu, NULL, N, false);
                cmp("matmul unaligned f32", o1, o2, (size_t)(N * O), (double)I + 2);
            }
            free((void *)w.data), free(vals), free(x), free(bias), free(o1), free(o2), free(dy), free(d1), free(d2);
        }
}

static void test_gemm_vs_naive(void) {
    int64_t M = 37, N = 29, K = 41;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            int64_t lda = ta ? M : K, ldb = tb ? K : N;
            float *A = rnd((size_t)(M * K), 1), *B = rnd((size_t)(K * N), 1);
            float *C1 = rnd((size_t)(M * N), 1), *C2 = malloc((size_t)(M * N) * 4);
            memcpy(C2, C1, (size_t)(M * N) * 4);
            be->gemm(be, ta, tb, M, N, K, 0.7f, A, lda, B, ldb, 0.5f, C1, N);
            lc_cpu_gemm_naive(ta, tb, M, N, K, 0.7f, A, lda, B, ldb, 0.5f, C2, N);
            cmp("gemm", C1, C2, (size_t)(M * N), (double)K + 2);
            free(A), free(B), free(C1), free(C2);
        }
    // large enough to be split across threads, along M and along N
    int64_t shapes[2][3] = {{300, 16, 257}, {16, 300, 257}};
    for (int s = 0; s < 2; s++) {
        int64_t m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
        float *A = rnd((size_t)(m * k), 1), *B = rnd((size_t)(k * n), 1);
        float *C1 = malloc((size_t)(m * n) * 4), *C2 = malloc((size_t)(m * n) * 4);
        be->gemm(be, false, false, m, n, k, 1.0f, A, k, B, n, 0.0f, C1, n);
        lc_cpu_gemm_naive(false, false, m, n, k, 1.0f, A, k, B, n, 0.0f, C2, n);
        cmp("gemm split", C1, C2, (size_t)(m * n), (double)k + 2);
        free(A), free(B), free(C1), free(C2);
    }
}

/* T = 13 fits one block of query rows; T = 150 spans three (the fast kernel's blocks
 * are 64 rows). */
static void attention_vs_naive(int64_t T) {
    int64_t B = 2, H = 6, KV = 2, D = 16;
    size_t nq = (size_t)(B * T * H * D), nk = (size_t)(B * T * KV * D);
    float *q = rnd(nq, 1), *k = rnd(nk, 1), *v = rnd(nk, 1);
    float *o1 = malloc(nq * 4), *o2 = malloc(nq * 4);
    float *l1 = malloc((size_t)(B * H * T) * 4), *l2 = malloc((size_t)(B * H * T) * 4);
    be->attention(be, o1, l1, q, k, v, B, T, T, H, KV, D, 0);
    lc_cpu_attention_naive(o2, l2, q, k, v, B, T, T, H, KV, D, 0);
    cmp("attention out", o1, o2, nq, (double)(D + T) + 2);
    cmp("attention lse", l1, l2, (size_t)(B * H * T), (double)(D + T) + 2);
    float *dout = rnd(nq, 1);
    float *g1[3] = {malloc(nq * 4), malloc(nk * 4), malloc(nk * 4)};
    float *g2[3] = {malloc(nq * 4), malloc(nk * 4), malloc(nk * 4)};
    be->attention_bwd(be, g1[0], g1[1], g1[2], dout, q, k, v, o1, l1, B, T, H, KV, D);
    lc_cpu_attention_bwd_naive(g2[0], g2[1], g2[2], dout, q, k, v, o2, l2, B, T, H, KV, D);
    cmp("attention dq", g1[0], g2[0], nq, 4.0 * (D + T * H / KV) + 2);
    cmp("attention dk", g1[1], g2[1], nk, 4.0 * (D + T * H / KV) + 2);
    cmp("attention dv", g1[2], g2[2], nk, 4.0 * (D + T * H / KV) + 2);
    // decoding: 3 queries at positions 10..12 of a cache of capacity 20 (rows past 13 unused)
    int64_t S = 20, Tq = 3, pos0 = 10;
    float *kc = rnd((size_t)(S * KV * D), 1), *vc = rnd((size_t)(S * KV * D), 1), *qd = rnd((size_t)(Tq * H * D), 1);
    be->attention(be, o1, NULL, qd, kc, vc, 1, Tq, S, H, KV, D, pos0);
    lc_cpu_attention_naive(o2, NULL, qd, kc, vc, 1, Tq, S, H, KV, D, pos0);
    cmp("attention decode", o1, o2, (size_t)(Tq * H * D), (double)(D + S) + 2);
    // cache rows past the last position are never read: capacity 13 gives the same
    float *of = malloc((size_t)(Tq * H * D) * 4);
    be->attention(be, of, NULL, qd, kc, vc, 1, Tq, 13, H, KV, D, pos0);
    CHECK(!memcmp(of, o1, (size_t)(Tq * H * D) * 4));
    free(q), free(k), free(v), free(o1), free(o2), free(l1), free(l2), free(dout), free(kc), free(vc), free(qd), free(of);
    for (int i = 0; i < 3; i++) free(g1[i]), free(g2[i]);
}

static void test_attention_vs_naive(void) {
    attention_vs_naive(13);
    attention_vs_naive(150);
}

static void test_cross_entropy_vs_naive(void) {
    int64_t N = 9, V = 1000;
    float *l1 = rnd((size_t)(N * V), 5), *l2 = malloc((size_t)(N * V) * 4);
    memcpy(l2, l1, (size_t)(N * V) * 4);
    int32_t t[9] = {0, 999, -1, 5, 17, -1, 300, 301, 2};
    double s1 = be->cross_entropy(be, l1, t, N, V, 0.25f);
    double s2 = lc_cpu_cross_entropy_naive(l2, t, N, V, 0.25f);
    CHECK_MSG(fabs(s1 - s2) <= 1e-6 * fabs(s2), "ce %.9g vs %.9g", s1, s2);
    cmp("cross_entropy grad", l1, l2, (size_t)(N * V), 16.0);
    free(l1), free(l2);
}

/* bf16 products (AVX512-BF16): the activations are rounded to bf16 and every product
 * of two bf16 values is exact in float32, so the fast result is the naive one on the
 * rounded activations within float32 accumulation error. N = 3 reads the weight in
 * place (gemv), N = 21 packs it (8-row tiles and a 5-row tail); odd sizes exercise the
 * padding of the contraction and partial 32-column tiles, even ones the fast packing. */
static void test_matmul_bf16(void) {
    lc_backend *bb = lc_backend_cpu_new(0);
    if (!lc_backend_cpu_set_bf16(bb, true)) {
        bb->free(bb);
        SKIP("this CPU has no AVX512-BF16");
    }
    int64_t O = 203, Ns[2] = {3, 21};
    for (int t = 0; t < 4; t++)
        for (int acc = 0; acc < 2; acc++) {
            int64_t N = Ns[t % 2], I = t < 2 ? 149 : 96; // 96: whole pairs, the transposing pack
            lc_wt w;
            float *vals;
            make_wt(&w, &vals, LC_DT_BF16, O, I);
            float *x = rnd((size_t)(N * I), 1), *bias = rnd((size_t)O, 1);
            float *xr = malloc((size_t)(N * I) * 4);
            uint16_t *tmp = malloc((size_t)(N * (I > O ? I : O)) * 2);
            lc_from_f32(tmp, LC_DT_BF16, x, (size_t)(N * I));
            lc_to_f32(xr, tmp, LC_DT_BF16, (size_t)(N * I));
            float *o1 = rnd((size_t)(N * O), 1), *o2 = malloc((size_t)(N * O) * 4);
            memcpy(o2, o1, (size_t)(N * O) * 4);
            bb->matmul(bb, o1, x, &w, acc ? bias : NULL, N, acc);
            lc_cpu_matmul_naive(o2, xr, &w, acc ? bias : NULL, N, acc);
            cmp("bf16 matmul", o1, o2, (size_t)(N * O), (double)I + 2);
            float *dy = rnd((size_t)(N * O), 1), *dyr = malloc((size_t)(N * O) * 4);
            lc_from_f32(tmp, LC_DT_BF16, dy, (size_t)(N * O));
            lc_to_f32(dyr, tmp, LC_DT_BF16, (size_t)(N * O));
            float *d1 = rnd((size_t)(N * I), 1), *d2 = malloc((size_t)(N * I) * 4);
            memcpy(d2, d1, (size_t)(N * I) * 4);
            bb->matmul_dx(bb, d1, dy, &w, N, acc);
            lc_cpu_matmul_dx_naive(d2, dyr, &w, N, acc);
            cmp("bf16 matmul_dx", d1, d2, (size_t)(N * I), (double)O + 2);
            free((void *)w.data), free(vals), free(x), free(bias), free(xr), free(tmp), free(o1), free(o2);
            free(dy), free(dyr), free(d1), free(d2);
        }
    bb->free(bb);
}

static void test_embedding(void) {
    lc_wt w;
    float *vals;
    make_wt(&w, &vals, LC_DT_BF16, 50, 24);
    int32_t tok[4] = {0, 49, 7, 7};
    float out[4 * 24];
    be->embedding(be, out, tok, &w, 4);
    for (int n = 0; n < 4; n++)
        for (int c = 0; c < 24; c++) CHECK(out[n * 24 + c] == vals[tok[n] * 24 + c]);
    free((void *)w.data), free(vals);
}

int main(void) {
    be = lc_backend_cpu_new(0);
    RUN(test_rmsnorm_fd);
    RUN(test_rope_fd);
    RUN(test_attention_fd);
    RUN(test_swiglu_fd);
    RUN(test_cross_entropy_fd);
    RUN(test_matmul_dx_fd);
    RUN(test_dropout);
    RUN(test_matmul_vs_naive);
    RUN(test_matmul_bf16);
    RUN(test_gemm_vs_naive);
    RUN(test_attention_vs_naive);
    RUN(test_cross_entropy_vs_naive);
    RUN(test_embedding);
    be->free(be);
    return t_summary();
}
