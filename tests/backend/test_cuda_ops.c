/*
 * test_cuda_ops.c — every operation of the CUDA backend against the CPU backend, on
 * fresh random inputs each run (the seed is printed; LORAC_TEST_SEED repeats one), with
 * every device output poisoned (NaN) before the call so an unwritten element fails.
 *
 * Measure: ‖cuda − cpu‖ / ‖cpu‖ (L2). Bounds: float32 ops 1e-5 (different summation
 * orders and expf against the CPU's polynomial: ~1e-7 expected); products with BF16
 * weights 1e-2 against the CPU in float32 (the card rounds activations to bf16, 2^-9
 * relative per element, and accumulates in float32: ~3e-3 expected), except the card's
 * small-N path (up to 8 rows, float32 activations: 1e-5); the dropout mask,
 * embedding rows and zero/copy exactly. Quantized weights (NF4 nested and not, MLX
 * affine 2/4/8-bit with F32/F16/BF16 scales): the same products over the same codes on
 * both backends, 1e-2 (the card multiplies a bf16 dequantization), embedding rows exact;
 * NF4 products of 9..256 rows on the tensor cores (qgemm.cu) also against the card's copy
 * path, 1e-5 (same bf16 values, another summation order).
 * Tensor-core attention (training shapes): 1e-2 / 2e-2, derived above test_attention_tc,
 * and bit-identical on a second run. SKIPs (visibly) when this build has no CUDA or
 * no GPU answers, as on CI.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/backend.h"
#include "backend/quant.h"
#include "core/error.h"
#include "core/rng.h"
#include "io/safetensors.h"
#include "model/sample.h"
#include "harness.h"
#include "train/optim.h"

static lc_backend *cpu, *gpu;
static uint64_t rs;
static char why[LC_ERRMSG_MAX]; // why there is no CUDA backend

static float *rnd(size_t n, float scale) {
    float *x = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = (float)((2.0 * lc_uniform(&rs) - 1.0) * scale);
    return x;
}

/* A device copy of host data. */
static void *up(const void *h, size_t bytes) {
    void *d = gpu->alloc(gpu, bytes);
    gpu->upload(gpu, d, h, bytes);
    return d;
}

/* A device buffer of n floats, all NaN. */
static float *poisoned(size_t n) {
    float *h = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) h[i] = NAN;
    float *d = up(h, n * sizeof(float));
    free(h);
    return d;
}

/* Host copy of n device floats (syncs; a device error fails the check). */
static float *down(const float *d, size_t n) {
    float *h = malloc(n * sizeof(float));
    gpu->download(gpu, h, d, n * sizeof(float));
    CHECK_OK(gpu->sync(gpu));
    return h;
}

/* ‖a − b‖ / ‖b‖; infinity when a holds a NaN. */
static double rel(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(a[i]) || isnan(b[i])) return INFINITY;
        double d = (double)a[i] - b[i];
        num += d * d, den += (double)b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* Compares device result d (n floats) to host reference ref; frees nothing. */
static void expect(const char *what, const float *d, const float *ref, size_t n, double bound) {
    float *h = down(d, n);
    double e = rel(h, ref, n);
    printf("  %-28s rel err %.2e (bound %.0e)\n", what, e, bound);
    CHECK_MSG(e <= bound, "%s: rel err %.3e over %.0e", what, e, bound);
    free(h);
}

static bool have_gpu(void) { return gpu != NULL; }

/* A weight matrix of dtype dt on the host (returned through *host, to free) and its
 * float32 values. */
static lc_wt make_wt(lc_dtype dt, int64_t rows, int64_t cols, void **host, float **f32) {
    size_t n = (size_t)(rows * cols);
    float *v = rnd(n, 0.5f);
    lc_wt w = {NULL, dt, rows, cols, NULL, 0};
    if (dt == LC_DT_F32) {
        *host = malloc(n * 4);
        memcpy(*host, v, n * 4);
    } else {
        uint16_t *h = malloc(n * 2);
        for (size_t i = 0; i < n; i++) {
            if (dt == LC_DT_BF16) {
                uint32_t u;
                memcpy(&u, &v[i], 4);
                h[i] = (uint16_t)(u >> 16); // truncation keeps v exact below
                u = (uint32_t)h[i] << 16;
                memcpy(&v[i], &u, 4);
            } else { // F16 from a value representable in half: k / 1024
                float q = roundf(v[i] * 1024.0f) / 1024.0f;
                v[i] = q;
                // encode q as IEEE half
                uint32_t u;
                memcpy(&u, &q, 4);
                uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
                float a = fabsf(q);
                if (a == 0.0f) h[i] = sign;
                else {
                    int e;
                    float m = frexpf(a, &e); // a = m 2^e, m in [0.5, 1)
                    int he = e - 1 + 15;
                    if (he <= 0) { // subnormal: a = k 2^-24
                        h[i] = (uint16_t)(sign | (uint16_t)lroundf(a * 16777216.0f));
                    } else {
                        uint16_t mant = (uint16_t)lroundf((m * 2.0f - 1.0f) * 1024.0f);
                        h[i] = (uint16_t)(sign | (uint16_t)(he << 10) | mant);
                    }
                }
            }
        }
        *host = h;
    }
    w.data = *host;
    *f32 = v;
    return w;
}

static void test_elementwise(void) {
    if (!have_gpu()) SKIP("no CUDA backend: %s", why);
    size_t n = 100003;
    float *a = rnd(n, 3), *b = rnd(n, 3), *ref = malloc(n * 4);
    float *da = up(a, n * 4), *db = up(b, n * 4), *o = poisoned(n);
    cpu->add(cpu, ref, a, b, n);
    gpu->add(gpu, o, da, db, n);
    expect("add", o, ref, n, 0);
    memcpy(ref, a, n * 4);
    cpu->axpy(cpu, ref, -0.75f, b, n);
    gpu->copy(gpu, o, da, n);
    gpu->axpy(gpu, o, -0.75f, db, n);
    expect("copy + axpy", o, ref, n, 1e-7);
    for (int k = 0; k < 2; k++) {
        float p = k ? 0.1f : 0.5f;
        uint64_t seed = lc_splitmix64(&rs);
        cpu->dropout(cpu, ref, a, n, p, seed);
        gpu->dropout(gpu, o, da, n, p, seed);
        expect(k ? "dropout p=0.1 (exact mask)" : "dropout p=0.5 (exact mask)", o, ref, n, 0);
    }
    memset(ref, 0, n * 4);
    gpu->zero(gpu, o, n);
    expect("zero", o, ref, n, 0);
    // copy2d: an adapter's columns into a group's (aligned: 16-byte path), and an odd
    // shape; the rest of the destination keeps its NaN
    static const int64_t cs[][5] = {{1000, 16, 16, 48, 16}, {777, 5, 7, 13, 3}, {4, 32, 32, 64, 32}};
    for (int k = 0; k < 3; k++) {
        int64_t rows = cs[k][0], cols = cs[k][1], ldx = cs[k][2], ldo = cs[k][3], off = cs[k][4];
        size_t no = (size_t)(rows * ldo);
        float *d = poisoned(no), *h = malloc(no * 4);
        for (size_t i = 0; i < no; i++) h[i] = NAN;
        cpu->copy2d(cpu, h + off, ldo, a, ldx, rows, cols);
        gpu->copy2d(gpu, d + off, ldo, da, ldx, rows, cols);
        float *g = down(d, no);
        size_t bad = 0;
        for (size_t i = 0; i < no; i++) bad += memcmp(&g[i], &h[i], 4) != 0;
        printf("  copy2d %lld x %lld (ld %lld -> %lld): %zu of %zu floats differ from the CPU's\n", (long long)rows,
               (long long)cols, (long long)ldx, (long long)ldo, bad, no);
        CHECK_EQ_INT(bad, 0);
        free(g), free(h), gpu->release(gpu, d);
    }
    // copy2d_n: three adapters' columns side by side into one group (the 16-byte path), then
    // back out of it; and two odd copies (4-byte path); against the CPU's ->copy2d_n
    CHECK_MSG(gpu->copy2d_n != NULL && cpu->copy2d_n != NULL, "a backend offers no ->copy2d_n");
    if (gpu->copy2d_n && cpu->copy2d_n) {
        static const int64_t ns[][5] = {{1000, 16, 16, 48, 3}, {1000, 16, 48, 16, 3}, {777, 5, 7, 13, 2}};
        for (int k = 0; k < 3; k++) {
            int64_t rows = ns[k][0], cols = ns[k][1], ldx = ns[k][2], ldo = ns[k][3];
            int cn = (int)ns[k][4];
            // sources: copy j reads a (or da) at j·cols when the source is the wide side, else
            // j·rows·ldx; destinations likewise
            bool wide_out = ldo > ldx, wide_in = ldx > ldo;
            size_t no = (size_t)(rows * ldo) * (wide_out ? 1 : (size_t)cn);
            float *d = poisoned(no), *h = malloc(no * 4);
            for (size_t i = 0; i < no; i++) h[i] = NAN;
            float *ho[LC_GEMM_N_MAX], *go[LC_GEMM_N_MAX];
            const float *hx[LC_GEMM_N_MAX], *gx[LC_GEMM_N_MAX];
            int64_t lo[LC_GEMM_N_MAX], lx[LC_GEMM_N_MAX];
            for (int j = 0; j < cn; j++) {
                size_t oo = wide_out ? (size_t)(j * cols) : (size_t)(j * rows * ldo);
                size_t ox = wide_in ? (size_t)(j * cols) : (size_t)(j * rows * ldx);
                ho[j] = h + oo, go[j] = d + oo, hx[j] = a + ox, gx[j] = da + ox, lo[j] = ldo, lx[j] = ldx;
            }
            cpu->copy2d_n(cpu, cn, ho, lo, hx, lx, rows, cols);
            gpu->copy2d_n(gpu, cn, go, lo, gx, lx, rows, cols);
            float *g = down(d, no);
            size_t bad = 0;
            for (size_t i = 0; i < no; i++) bad += memcmp(&g[i], &h[i], 4) != 0;
            printf("  copy2d_n %d × %lld x %lld (ld %lld -> %lld): %zu of %zu floats differ from the CPU's\n", cn,
                   (long long)rows, (long long)cols, (long long)ldx, (long long)ldo, bad, no);
            CHECK_EQ_INT(bad, 0);
            free(g), free(h), gpu->release(gpu, d);
        }
    }
    free(a), free(b), free(ref);
    gpu->release(gpu, da), gpu->release(gpu, db), gpu->release(gpu, o);
}

/* ->matmul_dx_b from dy's bf16 rounding (lc_from_f32's round to nearest even) against
 * ->matmul_dx from the float32 dy (ddy on the card), = and +=: the same bits where the
 * weight is bf16 or quantized; for float32 weights it must decline and write nothing. */
static void check_dx_b(const lc_wt *wd, const float *dy, const float *ddy, const float *dx0, int64_t N, int64_t O,
                       int64_t I, const char *name) {
    CHECK_MSG(gpu->matmul_dx_b != NULL, "the CUDA backend offers no matmul_dx_b");
    if (!gpu->matmul_dx_b) return;
    uint16_t *hb = malloc((size_t)(N * O) * 2);
    CHECK_OK(lc_from_f32(hb, LC_DT_BF16, dy, (size_t)(N * O)));
    void *dyb = up(hb, (size_t)(N * O) * 2);
    float *a = poisoned((size_t)(N * I)), *b = poisoned((size_t)(N * I));
    char what[96];
    for (int acc = 0; acc < 2; acc++) {
        if (acc) gpu->upload(gpu, a, dx0, (size_t)(N * I) * 4), gpu->upload(gpu, b, dx0, (size_t)(N * I) * 4);
        gpu->matmul_dx(gpu, a, ddy, wd, N, acc);
        bool took = gpu->matmul_dx_b(gpu, b, dyb, wd, N, acc);
        float *ha = down(a, (size_t)(N * I)), *hbx = down(b, (size_t)(N * I));
        snprintf(what, sizeof what, "matmul_dx_b %s%s", name, acc ? " +=" : "");
        if (!wd->q && wd->dtype == LC_DT_F32) {
            CHECK_MSG(!took, "%s: took float32 weights", what);
            bool untouched = true;
            for (int64_t i = 0; i < N * I && !acc; i++) untouched = untouched && isnan(hbx[i]);
            CHECK_MSG(untouched, "%s: declined but wrote", what);
            printf("  %-28s declined (float32 weights)\n", what);
        } else {
            CHECK_MSG(took, "%s: declined", what);
            CHECK_MSG(!memcmp(ha, hbx, (size_t)(N * I) * 4), "%s: differs from matmul_dx's bits", what);
            printf("  %-28s the same bits as matmul_dx\n", what);
        }
        free(ha), free(hbx);
    }
    // ->matmul_dx_bo: the float32 product's sums rounded once to bf16 (cuBLASLt may sum in
    // another order for a bf16 out: within one rounding of matmul_dx's values, 2^-8)
    CHECK_MSG(gpu->matmul_dx_bo != NULL, "the CUDA backend offers no matmul_dx_bo");
    uint16_t *pz = malloc((size_t)(N * I) * 2);
    memset(pz, 0xff, (size_t)(N * I) * 2); // NaN
    void *ob = up(pz, (size_t)(N * I) * 2);
    bool took = gpu->matmul_dx_bo && gpu->matmul_dx_bo(gpu, ob, dyb, wd, N);
    snprintf(what, sizeof what, "matmul_dx_bo %s", name);
    if (wd->q || wd->dtype != LC_DT_BF16) {
        CHECK_MSG(!took, "%s: took a weight that is not plain bf16", what);
        printf("  %-28s declined (not plain bf16)\n", what);
    } else if (took) {
        gpu->matmul_dx(gpu, a, ddy, wd, N, false);
        float *ha = down(a, (size_t)(N * I)), *got = malloc((size_t)(N * I) * 4);
        gpu->download(gpu, pz, ob, (size_t)(N * I) * 2);
        CHECK_OK(gpu->sync(gpu));
        lc_to_f32(got, pz, LC_DT_BF16, (size_t)(N * I));
        double e = rel(got, ha, (size_t)(N * I));
        printf("  %-28s rel err %.2e from matmul_dx (bound 4e-3)\n", what, e);
        CHECK_MSG(e <= 4e-3, "%s: rel err %.3e over 4e-3", what, e);
        free(ha), free(got);
    } else {
        CHECK_MSG(took, "%s: declined a plain bf16 weight", what);
    }
    free(pz), free(hb);
    gpu->release(gpu, ob), gpu->release(gpu, dyb), gpu->release(gpu, a), gpu->release(gpu, b);
}

/* ->matmul_n_b of one weight from x's bf16 rounding against ->matmul from the float32 x (dx on the card),
 * with bias and accumulating: the same bits over bf16 weights at more than 8 rows; at 8 or
 * fewer (where ->matmul multiplies float32 x) within 1e-5 of ->matmul over x's bf16 values
 * (the same exact products, summed in another order); it must decline (and write nothing)
 * for other weights. */
static void check_x_b(const lc_wt *wd, const float *x, const float *dxv, const float *acc0, const float *dbias, int64_t N,
                      int64_t O, int64_t I, const char *name) {
    CHECK_MSG(gpu->matmul_n_b != NULL, "the CUDA backend offers no matmul_n_b");
    if (!gpu->matmul_n_b) return;
    uint16_t *hb = malloc((size_t)(N * I) * 2);
    CHECK_OK(lc_from_f32(hb, LC_DT_BF16, x, (size_t)(N * I)));
    void *xb = up(hb, (size_t)(N * I) * 2);
    float *a = poisoned((size_t)(N * O)), *b = poisoned((size_t)(N * O));
    bool want = !wd->q && wd->dtype == LC_DT_BF16, small = N <= 8;
    float *xv = malloc((size_t)(N * I) * 4); // x's bf16 values
    for (int64_t i = 0; i < N * I; i++) {
        uint32_t u = (uint32_t)hb[i] << 16;
        memcpy(&xv[i], &u, 4);
    }
    float *dxr = up(xv, (size_t)(N * I) * 4);
    char what[96];
    for (int acc = 0; acc < 2; acc++) {
        if (acc) gpu->upload(gpu, a, acc0, (size_t)(N * O) * 4), gpu->upload(gpu, b, acc0, (size_t)(N * O) * 4);
        gpu->matmul(gpu, a, small ? dxr : dxv, wd, acc ? NULL : dbias, N, acc);
        const float *bi = acc ? NULL : dbias;
        bool took = gpu->matmul_n_b(gpu, 1, &b, xb, &wd, &bi, N, acc);
        float *ha = down(a, (size_t)(N * O)), *hbx = down(b, (size_t)(N * O));
        snprintf(what, sizeof what, "matmul_n_b %s N=%lld%s", name, (long long)N, acc ? " +=" : " + bias");
        if (!want) {
            bool untouched = true;
            for (int64_t i = 0; i < N * O && !acc; i++) untouched = untouched && isnan(hbx[i]);
            CHECK_MSG(!took && untouched, "%s: took it (or wrote) where it must decline", what);
            printf("  %-28s declined\n", what);
        } else if (small) {
            double e = rel(hbx, ha, (size_t)(N * O));
            CHECK_MSG(took && e <= 1e-5, "%s: %s, rel err %.3e from matmul over x's bf16 values (bound 1e-5)", what,
                      took ? "took it" : "declined", e);
            printf("  %-28s rel err %.2e from matmul over x's bf16 values (bound 1e-5)\n", what, e);
        } else {
            CHECK_MSG(took, "%s: declined", what);
            CHECK_MSG(!memcmp(ha, hbx, (size_t)(N * O) * 4), "%s: differs from matmul's bits", what);
            printf("  %-28s the same bits as matmul\n", what);
        }
        free(ha), free(hbx);
    }
    free(hb), free(xv);
    gpu->release(gpu, xb), gpu->release(gpu, a), gpu->release(gpu, b), gpu->release(gpu, dxr);
}

/* N rows of I inputs; N <= 8 with I % 8 == 0 takes the card's small-N (decoding) path
 * for BF16 weights, other shapes cuBLAS. */
static void check_matmul(lc_dtype dt, double bound, int64_t N, int64_t I) {
    int64_t O = 96;
    // the small-N path reads x in float32: only summation order differs from the CPU
    double fbound = dt == LC_DT_BF16 && N <= 8 && I % 8 == 0 ? 1e-5 : bound;
    void *hw;
    float *wf;
    lc_wt w = make_wt(dt, O, I, &hw, &wf);
    lc_wt wd = w;
    CHECK_OK(gpu->weight(gpu, &wd));
    float *x = rnd((size_t)(N * I), 2), *bias = rnd((size_t)O, 1), *acc0 = rnd((size_t)(N * O), 1);
    float *dy = rnd((size_t)(N * O), 1), *dx0 = rnd((size_t)(N * I), 1);
    float *dxv = up(x, (size_t)(N * I) * 4), *dbias = up(bias, (size_t)O * 4), *ddy = up(dy, (size_t)(N * O) * 4);
    char what[64];
    const char *dn = lc_dtype_name(dt);
    // out = x W^T + bias
    float *ref = malloc((size_t)(N * O) * 4);
    cpu->matmul(cpu, ref, x, &w, bias, N, false);
    float *o = poisoned((size_t)(N * O));
    gpu->matmul(gpu, o, dxv, &wd, dbias, N, false);
    snprintf(what, sizeof what, "matmul %s N=%lld I=%lld + bias", dn, (long long)N, (long long)I);
    expect(what, o, ref, (size_t)(N * O), fbound);
    // accumulate, no bias
    memcpy(ref, acc0, (size_t)(N * O) * 4);
    cpu->matmul(cpu, ref, x, &w, NULL, N, true);
    gpu->upload(gpu, o, acc0, (size_t)(N * O) * 4);
    gpu->matmul(gpu, o, dxv, &wd, NULL, N, true);
    snprintf(what, sizeof what, "matmul %s N=%lld I=%lld +=", dn, (long long)N, (long long)I);
    expect(what, o, ref, (size_t)(N * O), fbound);
    // dx = dy W, then += dy W
    float *rdx = malloc((size_t)(N * I) * 4);
    cpu->matmul_dx(cpu, rdx, dy, &w, N, false);
    float *odx = poisoned((size_t)(N * I));
    gpu->matmul_dx(gpu, odx, ddy, &wd, N, false);
    snprintf(what, sizeof what, "matmul_dx %s", dn);
    expect(what, odx, rdx, (size_t)(N * I), bound);
    memcpy(rdx, dx0, (size_t)(N * I) * 4);
    cpu->matmul_dx(cpu, rdx, dy, &w, N, true);
    gpu->upload(gpu, odx, dx0, (size_t)(N * I) * 4);
    gpu->matmul_dx(gpu, odx, ddy, &wd, N, true);
    snprintf(what, sizeof what, "matmul_dx %s +=", dn);
    expect(what, odx, rdx, (size_t)(N * I), bound);
    check_dx_b(&wd, dy, ddy, dx0, N, O, I, dn);
    check_x_b(&wd, x, dxv, acc0, dbias, N, O, I, dn);
    // embedding rows (exact: the same values widened)
    int32_t tok[9];
    for (int i = 0; i < 9; i++) tok[i] = (int32_t)(lc_splitmix64(&rs) % (uint64_t)O);
    int32_t *dtok = up(tok, sizeof tok);
    float *re = malloc((size_t)(9 * I) * 4), *oe = poisoned((size_t)(9 * I));
    cpu->embedding(cpu, re, tok, &w, 9);
    gpu->embedding(gpu, oe, dtok, &wd, 9);
    snprintf(what, sizeof what, "embedding %s", dn);
    expect(what, oe, re, (size_t)(9 * I), 0);
    free(hw), free(wf), free(x), free(bias), free(acc0), free(dy), free(dx0), free(ref), free(rdx), free(re);
    gpu->release(gpu, dxv), gpu->release(gpu, dbias), gpu->release(gpu, ddy), gpu->release(gpu, o);
    gpu->release(gpu, odx), gpu->release(gpu, dtok), gpu->release(gpu, oe);
}

static void test_matmul(void) {
    if (!have_gpu()) SKIP("no CUDA backend: %s", why);
    lc_backend_cpu_set_bf16(cpu, false); // the reference multiplies in float32
    check_matmul(LC_DT_F32, 1e-5, 37, 200);
    check_matmul(LC_DT_F16, 1e-5, 37, 200);
    check_matmul(LC_DT_BF16, 1e-2, 37, 200);
    for (int64_t n = 1; n <= 8; n++) check_matmul(LC_DT_BF16, 1e-2, n, 2056);
    check_matmul(LC_DT_BF16, 1e-2, 3, 203); // I % 8 != 0: cuBLAS
    check_matmul(LC_DT_F32, 1e-5, 1, 200);
}

/* A quantized (O, I) weight on the host: fmt NF4 (nested or not) or affine (bits, group,
 * scales in sdtype), made by quant.c's quantizers from fresh random values. The buffers
 * are returned through bufs (to free). */
typedef struct {
    lc_wquant q;
    void *codes, *a, *b, *c; // codes; scales / absmax; biases / absmax2; unused
} qweight;

static lc_wt make_qwt(qweight *h, lc_quant_format fmt, bool nested, int bits, int64_t group, lc_dtype sdtype,
                      int64_t O, int64_t I) {
    size_t n = (size_t)(O * I);
    float *v = rnd(n, 0.5f);
    memset(h, 0, sizeof *h);
    h->q.fmt = fmt, h->q.bits = bits, h->q.group = group, h->q.sdtype = sdtype;
    h->codes = calloc(lc_wq_code_bytes(fmt, bits, O, I) + 4, 1);
    if (fmt == LC_QUANT_NF4) {
        size_t nb = (n + (size_t)group - 1) / (size_t)group;
        float *am = malloc(nb * 4);
        lc_quant_nf4(h->codes, am, v, n, group);
        memcpy(h->q.code, LC_NF4_CODE, sizeof h->q.code);
        if (nested) {
            lc_quant_dynamic_map(h->q.code2);
            h->q.nested = true, h->q.block2 = 256;
            h->a = malloc(nb);
            h->b = malloc((nb + 255) / 256 * 4);
            lc_quant_nf4_nest(h->a, h->b, &h->q.offset, am, nb, 256, h->q.code2);
            free(am);
            h->q.absmax = h->a, h->q.absmax2 = h->b;
        } else {
            h->a = am;
            h->q.absmax = am;
        }
    } else {
        size_t ng = n / (size_t)group;
        h->a = malloc(ng * 4), h->b = malloc(ng * 4);
        CHECK_OK(lc_quant_affine(h->codes, h->a, h->b, sdtype, v, O, I, bits, group));
        h->q.scales = h->a, h->q.biases = h->b;
    }
    free(v);
    lc_wt w = {h->codes, LC_DT_BF16, O, I, &h->q, 0};
    return w;
}

/* matmul (+ bias, +=), matmul_dx (=, +=) and embedding over one quantized weight on the
 * card against the CPU backend over the same codes: products 1e-2 (the card dequantizes
 * to bf16 and rounds activations to bf16; the CPU multiplies the float32 values), the
 * embedding exactly (the card dequantizes its rows to float32 as the CPU does). */
static void check_qmatmul(const char *name, lc_quant_format fmt, bool nested, int bits, int64_t group,
                          lc_dtype sdtype, int64_t O, int64_t I, int64_t N) {
    qweight h;
    lc_wt w = make_qwt(&h, fmt, nested, bits, group, sdtype, O, I);
    lc_wt wd = w;
    CHECK_OK(gpu->weight(gpu, &wd));
    CHECK(wd.data != w.data && wd.q != w.q);
    float *x = rnd((size_t)(N * I), 2), *bias = rnd((size_t)O, 1), *acc0 = rnd((size_t)(N * O), 1);
    float *dy = rnd((size_t)(N * O), 1), *dx0 = rnd((size_t)(N * I), 1);
    float *dxv = up(x, (size_t)(N * I) * 4), *dbias = up(bias, (size_t)O * 4), *ddy = up(dy, (size_t)(N * O) * 4);
    char what[96];
    float *ref = malloc((size_t)(N * O) * 4), *o = poisoned((size_t)(N * O));
    cpu->matmul(cpu, ref, x, &w, bias, N, false);
    gpu->matmul(gpu, o, dxv, &wd, dbias, N, false);
    snprintf(what, sizeof what, "matmul %s N=%lld + bias", name, (long long)N);
    expect(what, o, ref, (size_t)(N * O), 1e-2);
    if (N <= 8) { // decoding sizes read the codes directly: against the bf16 copy's product
        float *o2 = poisoned((size_t)(N * O));
        setenv("LORAC_CUDA_QGEMV", "0", 1);
        gpu->matmul(gpu, o2, dxv, &wd, dbias, N, false);
        unsetenv("LORAC_CUDA_QGEMV");
        float *h2 = down(o2, (size_t)(N * O)), *h1 = down(o, (size_t)(N * O));
        snprintf(what, sizeof what, "matmul %s N=%lld from the codes vs the bf16 copy", name, (long long)N);
        expect(what, o, h2, (size_t)(N * O), 1e-6);
        printf("  %s: %s\n", what, memcmp(h1, h2, (size_t)(N * O) * 4) ? "close, not bitwise" : "the same bits");
        free(h1), free(h2);
        gpu->release(gpu, o2);
    }
    memcpy(ref, acc0, (size_t)(N * O) * 4);
    cpu->matmul(cpu, ref, x, &w, NULL, N, true);
    gpu->upload(gpu, o, acc0, (size_t)(N * O) * 4);
    gpu->matmul(gpu, o, dxv, &wd, NULL, N, true);
    snprintf(what, sizeof what, "matmul %s N=%lld +=", name, (long long)N);
    expect(what, o, ref, (size_t)(N * O), 1e-2);
    float *rdx = malloc((size_t)(N * I) * 4), *odx = poisoned((size_t)(N * I));
    cpu->matmul_dx(cpu, rdx, dy, &w, N, false);
    gpu->matmul_dx(gpu, odx, ddy, &wd, N, false);
    snprintf(what, sizeof what, "matmul_dx %s", name);
    expect(what, odx, rdx, (size_t)(N * I), 1e-2);
    memcpy(rdx, dx0, (size_t)(N * I) * 4);
    cpu->matmul_dx(cpu, rdx, dy, &w, N, true);
    gpu->upload(gpu, odx, dx0, (size_t)(N * I) * 4);
    gpu->matmul_dx(gpu, odx, ddy, &wd, N, true);
    snprintf(what, sizeof what, "matmul_dx %s +=", name);
    expect(what, odx, rdx, (size_t)(N * I), 1e-2);
    check_dx_b(&wd, dy, ddy, dx0, N, O, I, name);
    int32_t tok[9];
    for (int i = 0; i < 9; i++) tok[i] = (int32_t)(lc_splitmix64(&rs) % (uint64_t)O);
    tok[0] = (int32_t)(O - 1); // the last row (NF4: the tensor's tail)
    int32_t *dtok = up(tok, sizeof tok);
    float *re = malloc((size_t)(9 * I) * 4), *oe = poisoned((size_t)(9 * I));
    cpu->embedding(cpu, re, tok, &w, 9);
    gpu->embedding(gpu, oe, dtok, &wd, 9);
    snprintf(what, sizeof what, "embedding %s (exact)", name);
    expect(what, oe, re, (size_t)(9 * I), 0);
    free(x), free(bias), free(acc0), free(dy), free(dx0), free(ref), free(rdx), free(re);
    free(h.codes), free(h.a), free(h.b);
    gpu->release(gpu, dxv), gpu->release(gpu, dbias), gpu->release(gpu, ddy), gpu->release(gpu, o);
    gpu->release(gpu, odx), gpu->release(gpu, dtok), gpu->release(gpu, oe);
}

static void test_quantized(void) {
    if (!have_gpu()) SKIP("no CUDA backend: %s", why);
    lc_backend_cpu_set_bf16(cpu, false);
    // each product's weight dequantized when it comes, then ahead of time (quant.cu: here
    // the successor guessed from the previous calls is always a different weight, so
    // every guess is wrong: the copy is made again when the product comes)
    static const char *prefetch[] = {"0", "1"};
    for (size_t k = 0; k < 2; k++) {
        setenv("LORAC_CUDA_DQ_PREFETCH", prefetch[k], 1);
        printf("  dequantize ahead of time: %s\n", prefetch[k][0] == '1' ? "on" : "off");
        // nested NF4 over 384 blocks (two nested blocks); then decoding sizes
        check_qmatmul("nf4 nested", LC_QUANT_NF4, true, 4, 64, LC_DT_F32, 96, 256, 37);
        check_qmatmul("nf4 nested", LC_QUANT_NF4, true, 4, 64, LC_DT_F32, 96, 256, 3);
        // plain absmax; 37 × 203 = 7511 elements: the one-a-thread kernel and an odd tail
        check_qmatmul("nf4 odd shape", LC_QUANT_NF4, false, 4, 64, LC_DT_F32, 37, 203, 5);
        check_qmatmul("nf4 odd shape", LC_QUANT_NF4, false, 4, 64, LC_DT_F32, 37, 203, 11);
        check_qmatmul("nf4", LC_QUANT_NF4, false, 4, 64, LC_DT_F32, 64, 128, 40);
        // 1000 × 520: 65000 units of 8 values, not a multiple of the kernel's 1024 a block
        check_qmatmul("nf4 nested 1000x520", LC_QUANT_NF4, true, 4, 64, LC_DT_F32, 1000, 520, 37);
        check_qmatmul("q4 g64 bf16 1000x512", LC_QUANT_AFFINE, false, 4, 64, LC_DT_BF16, 1000, 512, 19);
        check_qmatmul("q8 g64 f16 1000x512", LC_QUANT_AFFINE, false, 8, 64, LC_DT_F16, 1000, 512, 19);
        check_qmatmul("q4 g64 bf16", LC_QUANT_AFFINE, false, 4, 64, LC_DT_BF16, 96, 256, 37);
        check_qmatmul("q4 g32 f16", LC_QUANT_AFFINE, false, 4, 32, LC_DT_F16, 96, 256, 2);
        check_qmatmul("q8 g64 f32", LC_QUANT_AFFINE, false, 8, 64, LC_DT_F32, 96, 256, 37);
        check_qmatmul("q8 g32 bf16", LC_QUANT_AFFINE, false, 8, 32, LC_DT_BF16, 40, 96, 1);
        check_qmatmul("q2 g64 bf16", LC_QUANT_AFFINE, false, 2, 64, LC_DT_BF16, 40, 128, 9);
    }
    unsetenv("LORAC_CUDA_DQ_PREFETCH");
}

/* The tensor-core product over NF4 codes (qgemm.cu: 9..256 rows, weight rows a multiple
 * of 128, columns of 64) against the CPU backend (1e-2: bf16 weights and activations,
 * float32 sums; check_qmatmul, which also runs the input gradient through the copy path)
 * and against the whole-weight copy + cuBLAS path on the card over the same bf16 values
 * (LORAC_CUDA_QGEMM=0), where only the float32 summation order differs: 1e-5. Shapes:
 * several row tiles, an inner dimension split unevenly, one row tile split 16 ways, more
 * row tiles than SMs, nested and plain absmax; row counts across the kernel's sizes.
 * The card must take the fused path when LORAC_TEST_NEED_QGEMM=1 (an H100 / H200 run:
 * tests/README); elsewhere both sides may be the copy path, which is said. */
static void check_qgemm(const char *name, bool nested, int64_t O, int64_t I, int64_t N) {
    long long before = gpu->fused_products;
    check_qmatmul(name, LC_QUANT_NF4, nested, 4, 64, LC_DT_F32, O, I, N);
    bool fused = gpu->fused_products > before;
    qweight h;
    lc_wt w = make_qwt(&h, LC_QUANT_NF4, nested, 4, 64, LC_DT_F32, O, I);
    lc_wt wd = w;
    CHECK_OK(gpu->weight(gpu, &wd));
    float *x = rnd((size_t)(N * I), 2), *bias = rnd((size_t)O, 1);
    float *dxv = up(x, (size_t)(N * I) * 4), *dbias = up(bias, (size_t)O * 4);
    float *o = poisoned((size_t)(N * O)), *oc = poisoned((size_t)(N * O));
    gpu->matmul(gpu, o, dxv, &wd, dbias, N, false);
    setenv("LORAC_CUDA_QGEMM", "0", 1);
    gpu->matmul(gpu, oc, dxv, &wd, dbias, N, false);
    unsetenv("LORAC_CUDA_QGEMM");
    float *hc = down(oc, (size_t)(N * O));
    char what[96];
    snprintf(what, sizeof what, "%s N=%lld: codes = copy", name, (long long)N);
    expect(what, o, hc, (size_t)(N * O), 1e-5);
    printf("  %s: %s\n", what, fused ? "the tensor-core product ran" : "copy path on both sides (no sm_90a card)");
    const char *need = getenv("LORAC_TEST_NEED_QGEMM");
    if (need && !strcmp(need, "1")) CHECK_MSG(fused, "%s: the fused NF4 product did not run", what);
    free(x), free(bias), free(hc), free(h.codes), free(h.a), free(h.b);
    gpu->release(gpu, dxv), gpu->release(gpu, dbias), gpu->release(gpu, o), gpu->release(gpu, oc);
}

/* ->matmul_n over n NF4 weights of one input (q/k/v, gate/up): the tensor-core product
 * takes them in one launch (their row tiles side by side, the inner dimension split for
 * all of them) — against the CPU's products (1e-2) and the copy path's (1e-5), with a
 * bias on every other weight, =, and += onto fresh values; nested and plain scales mixed. */
static void check_qgemm_n(const char *name, int n, const int64_t *O, int64_t I, int64_t N) {
    enum { NM = 4 };
    CHECK(n <= NM);
    qweight h[NM];
    lc_wt w[NM], wd[NM];
    const lc_wt *pw[NM], *pwd[NM];
    float *x = rnd((size_t)(N * I), 2), *dxv = up(x, (size_t)(N * I) * 4);
    float *bias[NM], *dbias[NM], *acc0[NM], *o[NM], *oc[NM], *ref[NM];
    for (int i = 0; i < n; i++) {
        w[i] = make_qwt(&h[i], LC_QUANT_NF4, i % 2 == 0, 4, 64, LC_DT_F32, O[i], I);
        wd[i] = w[i];
        CHECK_OK(gpu->weight(gpu, &wd[i]));
        pw[i] = &w[i], pwd[i] = &wd[i];
        bias[i] = i % 2 ? NULL : rnd((size_t)O[i], 1);
        dbias[i] = bias[i] ? up(bias[i], (size_t)O[i] * 4) : NULL;
        acc0[i] = rnd((size_t)(N * O[i]), 1);
        ref[i] = malloc((size_t)(N * O[i]) * 4);
        o[i] = poisoned((size_t)(N * O[i])), oc[i] = poisoned((size_t)(N * O[i]));
    }
    for (int accum = 0; accum < 2; accum++) {
        for (int i = 0; i < n; i++) {
            memcpy(ref[i], acc0[i], (size_t)(N * O[i]) * 4);
            if (accum) gpu->upload(gpu, o[i], acc0[i], (size_t)(N * O[i]) * 4), gpu->upload(gpu, oc[i], acc0[i], (size_t)(N * O[i]) * 4);
        }
        cpu->matmul_n(cpu, n, ref, x, pw, (const float *const *)bias, N, accum);
        long long before = gpu->fused_products;
        gpu->matmul_n(gpu, n, o, dxv, pwd, (const float *const *)dbias, N, accum);
        bool fused = gpu->fused_products - before == n;
        setenv("LORAC_CUDA_QGEMM", "0", 1);
        gpu->matmul_n(gpu, n, oc, dxv, pwd, (const float *const *)dbias, N, accum);
        unsetenv("LORAC_CUDA_QGEMM");
        for (int i = 0; i < n; i++) {
            char what[128];
            snprintf(what, sizeof what, "matmul_n %s N=%lld [%d/%d]%s", name, (long long)N, i, n, accum ? " +=" : "");
            expect(what, o[i], ref[i], (size_t)(N * O[i]), 1e-2);
            float *hc = down(oc[i], (size_t)(N * O[i]));
            snprintf(what + strlen(what), sizeof what - strlen(what), ": codes = copy");
            expect(what, o[i], hc, (size_t)(N * O[i]), 1e-5);
            free(hc);
        }
        printf("  matmul_n %s N=%lld%s: %s\n", name, (long long)N, accum ? " +=" : "",
               fused ? "one tensor-core launch" : "copy path on both sides (no sm_90a card)");
        const char *need = getenv("LORAC_TEST_NEED_QGEMM");
        if (need && !strcmp(need, "1")) CHECK_MSG(fused, "matmul_n %s: the fused NF4 product did not run", name);
    }
    for (int i = 0; i < n; i++) {
        free(bias[i]), free(acc0[i]), free(ref[i]), free(h[i].codes), free(h[i].a), free(h[i].b);
        if (dbias[i]) gpu->release(gpu, dbias[i]);
        gpu->release(gpu, o[i]), gpu->release(gpu, oc[i]);
    }
    free(x);
    gpu->release(gpu, dxv);
}

static void test_quantized_codes_tc(void) {
    if (!have_gpu()) SKIP("no CUDA backend: %s", why);
    lc_backend_cpu_set_bf16(cpu, false);
    static const int64_t Ns[] = {9, 16, 77, 136, 256};
    for (size_t k = 0; k < sizeof Ns / sizeof *Ns; k++) {
        check_qgemm("nf4 nested 256x512", true, 256, 512, Ns[k]);
        check_qgemm("nf4 384x1088", false, 384, 1088, Ns[k]);
        check_qgemm("nf4 nested 128x4096", true, 128, 4096, Ns[k]);
    }
    check_qgemm("nf4 nested 1024x256", true, 1024, 256, 136); // more row tiles than SMs on small cards
    check_qgemm("nf4 16512x512", false, 16512, 512, 9); // 129 row tiles, two splits
    static const int64_t qkv[] = {512, 128, 128}, gu[] = {1152, 1152}, big[] = {8320, 8320};
    for (size_t k = 0; k < sizeof Ns / sizeof *Ns; k++) {
        check_qgemm_n("q/k/v 512,128,128 x 1024", 3, qkv, 1024, Ns[k]);
        check_qgemm_n("gate/up 1152 x 384", 2, gu, 384, Ns[k]);
    }
    check_qgemm_n("gate/up 8320 x 256", 2, big, 256, 136); // 130 row tiles, splits from both
}

/* Products over five quantized weights in a repeating order with breaks (the same
 * weight twice, a skipped one, a new order), as a training step asks for them: each
 * result against the CPU's, 1e-2, whether the copy was made ahead of time, reused, or
 * guessed wrong and made again; with a ring of 2, 3 and 4 buffers (LORAC_CUDA_DQ_DEPTH:
 * up to 3 weights dequantized ahead along the learned chain), prefetch on and off, and
 * the depth changed between two products. */
static void test_quantized_order(void) {
    if (!have_gpu()) SKIP("no CUDA backend: %s", why);
    lc_backend_cpu_set_bf16(cpu, false);
    enum { NW = 5 };
    qweight h[NW];
    lc_wt w[NW], wd[NW];
    w[0] = make_qwt(&h[0], LC_QUANT_NF4, true, 4, 64, LC_DT_F32, 300, 256);
    w[1] = make_qwt(&h[1], LC_QUANT_AFFINE, false, 4, 64, LC_DT_BF16, 200, 512);
    w[2] = make_qwt(&h[2], LC_QUANT_NF4, false, 4, 64, LC_DT_F32, 128, 320);
    w[3] = make_qwt(&h[3], LC_QUANT_NF4, true, 4, 64, LC_DT_F32, 96, 448);
    w[4] = make_qwt(&h[4], LC_QUANT_AFFINE, false, 8, 64, LC_DT_F16, 256, 192);
    const int64_t N = 21;
    float *x[NW], *dxv[NW], *ref[NW], *dy[NW], *ddy[NW], *rdx[NW];
    for (int i = 0; i < NW; i++) {
        wd[i] = w[i];
        CHECK_OK(gpu->weight(gpu, &wd[i]));
        x[i] = rnd((size_t)(N * w[i].cols), 2);
        dxv[i] = up(x[i], (size_t)(N * w[i].cols) * 4);
        ref[i] = malloc((size_t)(N * w[i].rows) * 4);
        cpu->matmul(cpu, ref[i], x[i], &w[i], NULL, N, false);
        dy[i] = rnd((size_t)(N * w[i].rows), 1);
        ddy[i] = up(dy[i], (size_t)(N * w[i].rows) * 4);
        rdx[i] = malloc((size_t)(N * w[i].cols) * 4);
        cpu->matmul_dx(cpu, rdx[i], dy[i], &w[i], N, false);
    }
    // i: the forward product over weight i; NW + i: its input gradient (the two passes
    // of a step: forward 0 1 2 3 4, gradients 4 3 2 1 0; breaks after the third step)
    static const int order[] = {0, 1, 2, 3, 4, 9, 8, 7, 6, 5, 0, 1, 2, 3, 4, 9, 8, 7, 6, 5, 0, 1, 2, 3, 4, 9, 8, 7,
                                6, 5, 0, 0, 1, 2, 0, 4, 3, 9, 5, 8, 7, 6, 0, 1, 2, 3, 4, 9, 8, 7, 6, 5, 2, 2, 7,
                                7, 6, 6, 5, 1, 0, 4, 3, 2, 1, 0, 3, 4, 9, 8, 7, 6, 5};
    const size_t no = sizeof order / sizeof *order;
    static const char *const depths[] = {"2", "3", "4", "4", "3"};
    for (size_t di = 0; di < sizeof depths / sizeof *depths; di++) {
        bool pf = di != 3;
        setenv("LORAC_CUDA_DQ_DEPTH", depths[di], 1);
        if (!pf) setenv("LORAC_CUDA_DQ_PREFETCH", "0", 1);
        int bad = 0;
        for (size_t s = 0; s < no; s++) {
            if (di == 4 && s == no / 2) setenv("LORAC_CUDA_DQ_DEPTH", "2", 1); // a smaller ring mid-way
            int i = order[s] % NW, dx = order[s] >= NW;
            size_t n = (size_t)(N * (dx ? w[i].cols : w[i].rows));
            float *o = poisoned(n);
            if (dx) gpu->matmul_dx(gpu, o, ddy[i], &wd[i], N, false);
            else gpu->matmul(gpu, o, dxv[i], &wd[i], NULL, N, false);
            float *hh = down(o, n);
            double e = rel(hh, dx ? rdx[i] : ref[i], n);
            if (e > 1e-2) printf("  step %zu (weight %d%s): rel err %.2e\n", s, i, dx ? ", dx" : "", e), bad++;
            free(hh);
            gpu->release(gpu, o);
        }
        printf("  %zu products in a repeating order, depth %s%s, prefetch %s: %d over 1e-2\n", no, depths[di],
               di == 4 ? " then 2" : "", pf ? "on" : "off", bad);
        CHECK_MSG(bad == 0, "depth %s: %d products wrong", depths[di], bad);
        unsetenv("LORAC_CUDA_DQ_PREFETCH");
    }
    unsetenv("LORAC_CUDA_DQ_DEPTH");
    for (int i = 0; i < NW; i++) {
        free(x[i]), free(ref[i]), free(dy[i]), free(rdx[i]), free(h[i].codes), free(h[i].a), free(h[i].b);
        gpu->release(gpu, dxv[i]), gpu->release(gpu, ddy[i]);
    }
}

/* ‖a − b‖ / ‖b‖ over the first N columns of M rows of ld (the padding left out);
 * infinity when a holds a NaN there. */
static double rel_rows(const float *a, const float *b, int64_t M, int64_t N, int64_t ld) {
    double num = 0, den = 0;
    bool bad = false;
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            float x = a[i * ld + j], y = b[i * ld + j];
            bad |= isnan(x);
            num += ((double)x - y) * ((double)x - y), den += (double)y * y;
        }
    return bad ? INFINITY : sqrt(num / den);
}

static void test_gemm(void) {
    if (!have_gpu()) SKIP("no CUDA backend: %s", why);
    // cuBLAS; the small-K kernel (K <= 32, M over one 8-row tile); the thin-output kernels
    // (A^T B with M or N <= 32, K <= 1024); the split-K kernel (N <= 64, K >= 256, M over
    // one 32-row tile, K not a multiple of its 128-chunks); M = 1 (decoding)
    static const int64_t shapes[][3] = {{45, 33, 70}, {45, 33, 16}, {70, 16, 1000}, {1, 16, 300},
                                        {16, 300, 136}, {300, 16, 136}, {40, 16, 2000}, {1, 300, 16}};
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++)
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            int64_t M = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
            // row-major with padded leading dimensions
            int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5, ldc = N + 2;
            size_t na = (size_t)((ta ? K : M) * lda), nb = (size_t)((tb ? N : K) * ldb), nc = (size_t)(M * ldc);
            float *A = rnd(na, 1), *B = rnd(nb, 1), *C = rnd(nc, 1), *ref = malloc(nc * 4);
            memcpy(ref, C, nc * 4);
            cpu->gemm(cpu, ta, tb, M, N, K, 0.7f, A, lda, B, ldb, 0.5f, ref, ldc);
            float *dA = up(A, na * 4), *dB = up(B, nb * 4), *dC = up(C, nc * 4);
            gpu->gemm(gpu, ta, tb, M, N, K, 0.7f, dA, lda, dB, ldb, 0.5f, dC, ldc);
            char what[48];
            snprintf(what, sizeof what, "gemm %lldx%lldx%lld ta=%d tb=%d beta=0.5", (long long)M,
                     (long long)N, (long long)K, ta, tb);
            expect(what, dC, ref, nc, 1e-5);
            // beta 0 over a NaN-poisoned C: every element written, NaN never read
            float *dP = poisoned(nc);
            cpu->gemm(cpu, ta, tb, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, ref, ldc);
            gpu->gemm(gpu, ta, tb, M, N, K, 1.0f, dA, lda, dB, ldb, 0.0f, dP, ldc);
            float *h = down(dP, nc);
            // padding columns stay NaN on the card and hold the old values on the CPU
            double e = rel_rows(h, ref, M, N, ldc);
            CHECK_MSG(e <= 1e-5, "gemm %lldx%lldx%lld ta=%d tb=%d beta=0: rel err %.3e", (long long)M,
                      (long long)N, (long long)K, ta, tb, e);
            free(A), free(B), free(C), free(ref), free(h);
            gpu->release(gpu, dA), gpu->release(gpu, dB), gpu->release(gpu, dC), gpu->release(gpu, dP);
        }
}

/* ->gemm with ->lora_tf32 on, at shapes cuBLAS runs (many rows; u = x a, du = dy b^T,
 * ga = x^T du, gb = u^T dy at 8 x 512's proportions): within TF32 rounding of the CPU's
 * float32 product, and not the float32 GEMM's bits (the tensor cores did run). */
static void test_gemm_tf32(void) {
    if (!have_gpu()) SKIP("no CUDA backend: %s", why);
    static const int64_t shapes[][5] = {{600, 48, 1000, 0, 0}, {600, 16, 700, 0, 1}, {1000, 16, 600, 1, 0},
                                        {16, 700, 600, 1, 0}};
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        int64_t M = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
        bool ta = shapes[si][3], tb = shapes[si][4];
        int64_t lda = ta ? M : K, ldb = tb ? K : N, ldc = N;
        size_t na = (size_t)((ta ? K : M) * lda), nb = (size_t)((tb ? N : K) * ldb), nc = (size_t)(M * ldc);
        float *A = rnd(na, 1), *B = rnd(nb, 1), *ref = malloc(nc * 4);
        cpu->gemm(cpu, ta, tb, M, N, K, 0.7f, A, lda, B, ldb, 0.0f, ref, ldc);
        float *dA = up(A, na * 4), *dB = up(B, nb * 4), *d32 = poisoned(nc), *dtf = poisoned(nc);
        gpu->gemm(gpu, ta, tb, M, N, K, 0.7f, dA, lda, dB, ldb, 0.0f, d32, ldc);
        gpu->lora_tf32 = true;
        gpu->gemm(gpu, ta, tb, M, N, K, 0.7f, dA, lda, dB, ldb, 0.0f, dtf, ldc);
        gpu->lora_tf32 = false;
        char what[96];
        snprintf(what, sizeof what, "gemm tf32 %lldx%lldx%lld ta=%d tb=%d", (long long)M, (long long)N, (long long)K, ta,
                 tb);
        float *h32 = down(d32, nc), *htf = down(dtf, nc);
        double e = rel(htf, ref, nc), e32 = rel(h32, ref, nc);
        CHECK_MSG(e <= 2e-3 && e > 4 * e32, "%s: rel err %.3e (float32 GEMM %.3e): want TF32's, within 2e-3", what,
                  e, e32);
        printf("  %-34s rel err %.1e (float32 GEMM %.1e)\n", what, e, e32);
        free(A), free(B), free(ref), free(h32), free(htf);
        gpu->release(gpu, dA), gpu->release(gpu, dB), gpu->release(gpu, d32), gpu->release(gpu, dtf);
    }
}

/* ->gemm_b (the gate/up adapters' gb = s u^T dy and du = s dy b^T from a bf16 dy) against
 * the CPU's ->gemm of both operands rounded to bf16 (lc_from_f32's round to nearest even):
 * each operand given as bf16 or float32, padded leading dimensions, beta 0 over a
 * NaN-poisoned C and beta 0.5. */
static void test_gemm_b(void) {
    if (!have_gpu()) SKIP("no CUDA backend: %s", why);
    CHECK_MSG(gpu->gemm_b != NULL, "the CUDA backend offers no ->gemm_b");
    if (!gpu->gemm_b) return;
    static const int64_t shapes[][5] = {{16, 300, 136, 1, 0}, {136, 16, 300, 0, 1}, {45, 33, 70, 0, 0}};
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++)
        for (int mode = 0; mode < 4; mode++) {
            int64_t M = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
            bool ta = shapes[si][3], tb = shapes[si][4], a16 = mode & 1, b16 = mode & 2;
            int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5, ldc = N + 2;
            size_t na = (size_t)((ta ? K : M) * lda), nb = (size_t)((tb ? N : K) * ldb), nc = (size_t)(M * ldc);
            float *A = rnd(na, 1), *B = rnd(nb, 1), *C = rnd(nc, 1), *ref = malloc(nc * 4);
            uint16_t *Ah = malloc(na * 2), *Bh = malloc(nb * 2);
            CHECK_OK(lc_from_f32(Ah, LC_DT_BF16, A, na));
            CHECK_OK(lc_from_f32(Bh, LC_DT_BF16, B, nb));
            float *Ar = malloc(na * 4), *Br = malloc(nb * 4);
            lc_to_f32(Ar, Ah, LC_DT_BF16, na), lc_to_f32(Br, Bh, LC_DT_BF16, nb);
            void *dA = a16 ? up(Ah, na * 2) : up(A, na * 4), *dB = b16 ? up(Bh, nb * 2) : up(B, nb * 4);
            for (int beta1 = 0; beta1 < 2; beta1++) {
                float beta = beta1 ? 0.5f : 0.0f;
                float *dC = beta1 ? up(C, nc * 4) : poisoned(nc);
                memcpy(ref, C, nc * 4);
                cpu->gemm(cpu, ta, tb, M, N, K, 0.7f, Ar, lda, Br, ldb, beta, ref, ldc);
                gpu->gemm_b(gpu, ta, tb, M, N, K, 0.7f, dA, lda, a16, dB, ldb, b16, beta, dC, ldc);
                float *h = down(dC, nc);
                double e = rel_rows(h, ref, M, N, ldc);
                CHECK_MSG(e <= 1e-5, "gemm_b %lldx%lldx%lld ta=%d tb=%d A %s B %s beta %.1f: rel err %.3e", (long long)M,
                          (long long)N, (long long)K, ta, tb, a16 ? "bf16" : "f32", b16 ? "bf16" : "f32", beta, e);
                free(h);
                gpu->release(gpu, dC);
            }
            printf("  gemm_b %lldx%lldx%lld ta=%d tb=%d A %s B %s: within 1e-5 of the bf16-rounded CPU product\n",
                   (long long)M, (long long)N, (long long)K, ta, tb, a16 ? "bf16" : "f32", b16 ? "bf16" : "f32");
            free(A), free(B), free(C), free(ref), free(Ah), free(Bh), free(Ar), free(Br);
            gpu->release(gpu, dA), gpu->release(gpu, dB);
        }
}

/* n ->gemm products of one shape (M, N, K, ta, tb) in a row, each with its own A, B and
 * C (or one shared A when shareA), against the CPU: beta 0 over NaN-poisoned C (every
 * element written, none read), then beta 1 (accumulate). */
static void check_gemm_many(const char *name, int n, bool ta, bool tb, int64_t M, int64_t N, int64_t K,
                            bool shareA) {
    enum { NMAX = 4 };
    int64_t lda = (ta ? M : K) + 1, ldb = tb ? K : N, ldc = N;
    size_t na = (size_t)((ta ? K : M) * lda), nb = (size_t)((tb ? N : K) * ldb), nc = (size_t)(M * ldc);
    float *hA[NMAX], *hB[NMAX], *hC[NMAX], *dA[NMAX], *dB[NMAX], *dC[NMAX];
    for (int beta1 = 0; beta1 < 2; beta1++) {
        for (int i = 0; i < n; i++) {
            hA[i] = shareA && i ? hA[0] : rnd(na, 1);
            hB[i] = rnd(nb, 1), hC[i] = rnd(nc, 1);
            dA[i] = shareA && i ? dA[0] : up(hA[i], na * 4);
            dB[i] = up(hB[i], nb * 4);
            dC[i] = beta1 ? up(hC[i], nc * 4) : poisoned(nc);
        }
        for (int i = 0; i < n; i++) {
            float alpha = 0.5f + 0.25f * (float)i, beta = beta1 ? 1.0f : 0.0f;
            cpu->gemm(cpu, ta, tb, M, N, K, alpha, hA[i], lda, hB[i], ldb, beta, hC[i], ldc);
            gpu->gemm(gpu, ta, tb, M, N, K, alpha, dA[i], lda, dB[i], ldb, beta, dC[i], ldc);
        }
        for (int i = 0; i < n; i++) {
            char what[96];
            snprintf(what, sizeof what, "gemm %s [%d/%d] %s", name, i + 1, n, beta1 ? "+=" : "=");
            expect(what, dC[i], hC[i], nc, 1e-5);
        }
        for (int i = 0; i < n; i++) {
            if (!(shareA && i)) free(hA[i]), gpu->release(gpu, dA[i]);
            free(hB[i]), free(hC[i]);
            gpu->release(gpu, dB[i]), gpu->release(gpu, dC[i]);
        }
    }
}

static void test_gemm_adapters(void) {
    if (!have_gpu()) SKIP("no CUDA backend: %s", why);
    // the adapters' products, each kernel class of lora_gemm.cu several times in a row
    // (the split-K kernel's arrival counters must be back at zero for the next call):
    // u = x a (thin output, long K: one chunk, several, a ragged last one), du = s dy b^T
    // (the same, B transposed), out += s u b and dx += du a^T (short K), gb = s u^T dy and
    // ga = x^T du (A^T B over the rows); ranks 8, 16 and 32; row counts not multiples of
    // the 16-row tiles
    check_gemm_many("u = x a", 3, false, false, 37, 16, 1000, true);
    check_gemm_many("u = x a one chunk", 2, false, false, 37, 16, 200, true);
    check_gemm_many("u = x a r8", 2, false, false, 38, 8, 300, true);
    check_gemm_many("u = x a r32", 2, false, false, 38, 32, 700, true);
    check_gemm_many("du = dy b^T", 3, false, true, 37, 16, 700, false);
    check_gemm_many("du r32", 2, false, true, 21, 32, 1300, false);
    check_gemm_many("out += u b", 3, false, false, 37, 300, 16, false);
    check_gemm_many("out += u b r32", 2, false, false, 37, 300, 32, false);
    check_gemm_many("dx += du a^T", 2, false, true, 37, 300, 16, false);
    check_gemm_many("dx r8", 2, false, true, 17, 700, 8, false);
    check_gemm_many("gb = u^T dy", 3, true, false, 16, 300, 137, false);
    check_gemm_many("gb r32", 2, true, false, 32, 100, 256, false);
    check_gemm_many("ga = x^T du", 3, true, false, 300, 16, 137, true);
    check_gemm_many("ga r8", 1, true, false, 200, 8, 50, false);
    check_gemm_many("ga r32", 2, true, false, 77, 32, 1, false);
    check_gemm_many("decoding u", 2, false, false, 1, 16, 4096, true);
    check_gemm_many("decoding out", 2, false, false, 1, 4096, 16, false);
    // shapes cuBLAS keeps (many rows; rank 64; A^T B over more than 256 rows)
    check_gemm_many("cuBLAS M=300", 2, false, false, 300, 16, 400, true);
    check_gemm_many("cuBLAS N=64", 2, false, false, 40, 64, 400, true);
    check_gemm_many("cuBLAS gb K=300", 1, true, false, 16, 100, 300, false);
    // the recipe's shapes (2 x 68 rows, hidden 4096, MLP 14336, rank 16)
    check_gemm_many("recipe u", 3, false, false, 136, 16, 4096, true);
    check_gemm_many("recipe u down", 1, false, false, 136, 16, 14336, false);
    check_gemm_many("recipe du up", 2, false, true, 136, 16, 14336, false);
    check_gemm_many("recipe out += u b up", 2, false, false, 136, 14336, 16, false);
    check_gemm_many("recipe dx += du a^T down", 1, false, true, 136, 14336, 16, false);
    check_gemm_many("recipe gb", 2, true, false, 16, 4096, 136, false);
    check_gemm_many("recipe ga", 2, true, false, 4096, 16, 136, true);
}

/* One ->gemm_n group of n products (shapes sh[i] = {M, N, K}, one transpose pair) against
 * the same products as ->gemm calls on the card (the same bits: each block of a grouped
 * launch does what it does alone) and on the CPU (within 1e-5); beta 0 over poisoned C,
 * then beta 1, then beta 1 with X (the term read from X over a poisoned C; the single
 * calls read a copy of X in C). */
static void check_gemm_group(const char *name, int n, bool ta, bool tb, const int64_t (*sh)[3]) {
    enum { NMAX = 4 };
    float *hA[NMAX], *hB[NMAX], *hC[NMAX], *dA[NMAX], *dB[NMAX], *dC[NMAX], *dS[NMAX], *hX[NMAX], *dX[NMAX];
    lc_gemm_args hg[NMAX], dg[NMAX];
    size_t nc[NMAX];
    for (int mode = 0; mode < 3; mode++) {
        int beta1 = mode > 0;
        for (int i = 0; i < n; i++) {
            int64_t M = sh[i][0], N = sh[i][1], K = sh[i][2];
            int64_t lda = (ta ? M : K) + 1, ldb = tb ? K : N, ldc = N;
            size_t na = (size_t)((ta ? K : M) * lda), nb = (size_t)((tb ? N : K) * ldb);
            nc[i] = (size_t)(M * ldc);
            hA[i] = rnd(na, 1), hB[i] = rnd(nb, 1), hC[i] = rnd(nc[i], 1);
            dA[i] = up(hA[i], na * 4), dB[i] = up(hB[i], nb * 4);
            dC[i] = beta1 && mode < 2 ? up(hC[i], nc[i] * 4) : poisoned(nc[i]);
            dS[i] = beta1 ? up(hC[i], nc[i] * 4) : poisoned(nc[i]);
            hX[i] = NULL, dX[i] = NULL;
            if (mode == 2) { // C's values move to X; C is poisoned on both sides
                hX[i] = hC[i], hC[i] = malloc(nc[i] * 4), dX[i] = up(hX[i], nc[i] * 4);
                for (size_t j = 0; j < nc[i]; j++) hC[i][j] = NAN;
            }
            float alpha = 0.5f + 0.25f * (float)i, beta = beta1 ? 1.0f : 0.0f;
            lc_gemm_args h = {ta, tb, M, N, K, alpha, beta, hA[i], hB[i], lda, ldb, ldc, hC[i], hX[i]};
            lc_gemm_args d = {ta, tb, M, N, K, alpha, beta, dA[i], dB[i], lda, ldb, ldc, dC[i], dX[i]};
            hg[i] = h, dg[i] = d;
        }
        cpu->gemm_n(cpu, n, hg);
        gpu->gemm_n(gpu, n, dg);
        for (int i = 0; i < n; i++)
            gpu->gemm(gpu, ta, tb, dg[i].M, dg[i].N, dg[i].K, dg[i].alpha, dA[i], dg[i].lda, dB[i], dg[i].ldb,
                      dg[i].beta, dS[i], dg[i].ldc);
        for (int i = 0; i < n; i++) {
            char what[96];
            snprintf(what, sizeof what, "gemm_n %s [%d/%d] %s", name, i + 1, n,
                     mode == 2 ? "= X +" : beta1 ? "+=" : "=");
            expect(what, dC[i], hC[i], nc[i], 1e-5);
            float *g = down(dC[i], nc[i]), *one = down(dS[i], nc[i]);
            CHECK_MSG(!memcmp(g, one, nc[i] * 4), "%s: grouped and single launches differ", what);
            free(g), free(one);
            free(hA[i]), free(hB[i]), free(hC[i]), free(hX[i]);
            gpu->release(gpu, dA[i]), gpu->release(gpu, dB[i]), gpu->release(gpu, dC[i]), gpu->release(gpu, dS[i]);
            if (dX[i]) gpu->release(gpu, dX[i]);
        }
    }
}

static void test_gemm_groups(void) {
    if (!have_gpu()) SKIP("no CUDA backend: %s", why);
    // the groups the model launches: q/k/v (outputs 4096/1024/1024 at the recipe; here
    // 300/100/100) and gate/up, each kind of adapter product; rows off the tiles
    static const int64_t u3[][3] = {{37, 16, 1000}, {37, 16, 1000}, {37, 16, 1000}};
    static const int64_t out3[][3] = {{37, 300, 16}, {37, 100, 16}, {37, 100, 16}};
    static const int64_t gb3[][3] = {{16, 300, 137}, {16, 100, 137}, {16, 100, 137}};
    static const int64_t du3[][3] = {{37, 16, 1000}, {37, 16, 300}, {37, 16, 300}};
    static const int64_t ga3[][3] = {{300, 16, 137}, {300, 16, 137}, {300, 16, 137}};
    static const int64_t r32[][3] = {{20, 32, 700}, {20, 8, 2000}};
    static const int64_t mixed[][3] = {{37, 16, 1000}, {300, 16, 400}}; // the second is cuBLAS's
    check_gemm_group("u = x a (q/k/v)", 3, false, false, u3);
    check_gemm_group("out += s u b (q/k/v)", 3, false, false, out3);
    check_gemm_group("gb (q/k/v)", 3, true, false, gb3);
    check_gemm_group("du (q/k/v)", 3, false, true, du3);
    check_gemm_group("ga (q/k/v)", 3, true, false, ga3);
    check_gemm_group("u ranks 32 and 8", 2, false, false, r32);
    check_gemm_group("mixed classes", 2, false, false, mixed);
    // the recipe's q/k/v du and gate/up u at full size
    static const int64_t rdu[][3] = {{136, 16, 4096}, {136, 16, 1024}, {136, 16, 1024}};
    static const int64_t rup[][3] = {{136, 16, 4096}, {136, 16, 4096}};
    check_gemm_group("recipe du (q/k/v)", 3, false, true, rdu);
    check_gemm_group("recipe u (gate/up)", 2, false, false, rup);
    // many rows: the residual's out = X + s u b (o, down: the small-K kernel reading X, one
    // product and a group) and a cuBLAS shape (X copied to C first)
    static const int64_t res1[][3] = {{300, 700, 16}};
    static const int64_t res2[][3] = {{300, 700, 16}, {300, 130, 16}};
    static const int64_t cub1[][3] = {{300, 16, 400}};
    check_gemm_group("many rows out = x + s u b", 1, false, false, res1);
    check_gemm_group("many rows out = x + s u b, two", 2, false, false, res2);
    check_gemm_group("many rows cuBLAS with X", 1, false, false, cub1);
}

/* A ->gemm_n group of small-K products (!ta, !tb; shapes sh[i] = {M, N, K}) run by default and
 * with LORAC_CUDA_VEC=0 (k_lg_ksmall, a column a thread) on the same inputs: every output bit
 * for bit — at 1024 rows or more, rank ≤ 16 and even widths the default is k_lg_ksmall2 (two
 * columns a thread). with_x: C = X + alpha A B (the residual's path), else C = alpha A B;
 * alpha 0.75, so the epilogue's rounding shows. */
static void check_ksmall_pair(const char *name, int n, const int64_t (*sh)[3], bool with_x) {
    enum { NMAX = 4 };
    float *dA[NMAX], *dB[NMAX], *dX[NMAX], *dC[2][NMAX];
    lc_gemm_args g[2][NMAX];
    size_t nc[NMAX];
    for (int i = 0; i < n; i++) {
        int64_t M = sh[i][0], N = sh[i][1], K = sh[i][2];
        size_t na = (size_t)(M * K), nb = (size_t)(K * N);
        nc[i] = (size_t)(M * N);
        float *hA = rnd(na, 1), *hB = rnd(nb, 1), *hX = rnd(nc[i], 1);
        dA[i] = up(hA, na * 4), dB[i] = up(hB, nb * 4), dX[i] = with_x ? up(hX, nc[i] * 4) : NULL;
        for (int v = 0; v < 2; v++) {
            dC[v][i] = poisoned(nc[i]);
            lc_gemm_args a = {false, false, M, N, K, 0.75f, with_x ? 1.0f : 0.0f, dA[i], dB[i], K, N, N, dC[v][i],
                              dX[i]};
            g[v][i] = a;
        }
        free(hA), free(hB), free(hX);
    }
    gpu->gemm_n(gpu, n, g[0]);
    setenv("LORAC_CUDA_VEC", "0", 1);
    gpu->gemm_n(gpu, n, g[1]);
    unsetenv("LORAC_CUDA_VEC");
    for (int i = 0; i < n; i++) {
        float *a = down(dC[0][i], nc[i]), *b = down(dC[1][i], nc[i]);
        bool same = !memcmp(a, b, nc[i] * 4);
        CHECK_MSG(same, "%s [%d/%d] %lldx%lld: default and LORAC_CUDA_VEC=0 differ", name, i + 1, n,
                  (long long)sh[i][0], (long long)sh[i][1]);
        if (same)
            printf("  %-28s [%d/%d] %lld x %lld x %lld%s: default = LORAC_CUDA_VEC=0 bit for bit\n", name, i + 1, n,
                   (long long)sh[i][0], (long long)sh[i][1], (long long)sh[i][2], with_x ? ", X +" : "");
        free(a), free(b);
        gpu->release(gpu, dA[i]), gpu->release(gpu, dB[i]), gpu->release(gpu, dC[0][i]), gpu->release(gpu, dC[1][i]);
        if (dX[i]) gpu->release(gpu, dX[i]);
    }
}

/* The adapters' short-K products at many rows (the 8 × 512 row has 4096): out += s u b
 * and dx += du a^T wider than 8192 go to k_lg_ksmall, the others stay with cuBLAS
 * (LORAC_CUDA_LORA_MANY=0: all cuBLAS) — each way against the CPU within 1e-5, several
 * calls in a row, ranks 8, 16 and 32, rows off the 16-row tiles; a group of them, the same
 * bits as single launches. */
static void test_gemm_many_rows(void) {
    if (!have_gpu()) SKIP("no CUDA backend: %s", why);
    for (int k = 0; k < 2; k++) {
        if (k) setenv("LORAC_CUDA_LORA_MANY", "0", 1);
        printf("  %s\n", k ? "LORAC_CUDA_LORA_MANY=0 (cuBLAS)" : "default");
        check_gemm_many("rows out += u b", 3, false, false, 601, 300, 16, false);
        check_gemm_many("rows out += u b r32", 2, false, false, 333, 700, 32, false);
        check_gemm_many("rows out += u b r8", 2, false, false, 300, 130, 8, false);
        check_gemm_many("rows dx += du a^T 8200 wide", 2, false, true, 517, 8200, 16, false);
        check_gemm_many("rows dx += du a^T (cuBLAS)", 2, false, true, 517, 700, 8, false);
        check_gemm_many("8x512 out += u b up", 1, false, false, 4096, 14336, 16, false);
        static const int64_t out3[][3] = {{600, 1000, 16}, {600, 300, 16}, {600, 300, 16}};
        check_gemm_group("rows out += u b (q/k/v)", 3, false, false, out3);
    }
    unsetenv("LORAC_CUDA_LORA_MANY");
    // the pair kernel (1024 rows or more) against the one-column kernel: q/k/v's group (row
    // tiles off 64, past one 512-column tile), the residual's X + (o, down: 4096 wide), an odd
    // width beside rank 8 (the group falls back)
    static const int64_t q3[][3] = {{1100, 1030, 16}, {1100, 300, 16}, {1100, 300, 16}};
    static const int64_t x1[][3] = {{1024, 700, 16}, {1030, 4096, 16}};
    static const int64_t odd[][3] = {{1030, 301, 16}, {1030, 200, 8}};
    check_ksmall_pair("small-K pairs (q/k/v)", 3, q3, false);
    check_ksmall_pair("small-K pairs", 2, x1, true);
    check_ksmall_pair("small-K odd width, r8", 2, odd, false);
}

/* ->matmul_n over BF16 weights of one input (the card converts x once) against the CPU's
 * (float32): = with a bias on one, then +=; and each against ->matmul on the card. */
static void check_matmul_n(int64_t N, int64_t I, int n, const int64_t *O) {
    void *hw[LC_GEMM_N_MAX];
    float *wf[LC_GEMM_N_MAX], *ref[LC_GEMM_N_MAX], *o[LC_GEMM_N_MAX], *o1[LC_GEMM_N_MAX], *bias = NULL, *dbias = NULL;
    lc_wt w[LC_GEMM_N_MAX], wd[LC_GEMM_N_MAX];
    const lc_wt *pw[LC_GEMM_N_MAX], *pwd[LC_GEMM_N_MAX];
    const float *hb[LC_GEMM_N_MAX] = {0}, *db[LC_GEMM_N_MAX] = {0};
    float *x = rnd((size_t)(N * I), 2), *dx = up(x, (size_t)(N * I) * 4);
    bias = rnd((size_t)O[0], 1), dbias = up(bias, (size_t)O[0] * 4);
    hb[0] = bias, db[0] = dbias;
    for (int i = 0; i < n; i++) {
        w[i] = make_wt(LC_DT_BF16, O[i], I, &hw[i], &wf[i]);
        wd[i] = w[i];
        CHECK_OK(gpu->weight(gpu, &wd[i]));
        pw[i] = &w[i], pwd[i] = &wd[i];
        ref[i] = malloc((size_t)(N * O[i]) * 4);
        o[i] = poisoned((size_t)(N * O[i]));
        o1[i] = poisoned((size_t)(N * O[i]));
    }
    for (int accum = 0; accum < 2; accum++) {
        if (accum)
            for (int i = 0; i < n; i++) {
                float *a0 = rnd((size_t)(N * O[i]), 1);
                memcpy(ref[i], a0, (size_t)(N * O[i]) * 4);
                gpu->upload(gpu, o[i], a0, (size_t)(N * O[i]) * 4);
                gpu->upload(gpu, o1[i], a0, (size_t)(N * O[i]) * 4);
                free(a0);
            }
        cpu->matmul_n(cpu, n, ref, x, pw, hb, N, accum);
        gpu->matmul_n(gpu, n, o, dx, pwd, db, N, accum);
        for (int i = 0; i < n; i++) gpu->matmul(gpu, o1[i], dx, pwd[i], db[i], N, accum);
        for (int i = 0; i < n; i++) {
            char what[96];
            snprintf(what, sizeof what, "matmul_n N=%lld I=%lld O=%lld [%d/%d] %s", (long long)N, (long long)I,
                     (long long)O[i], i + 1, n, accum ? "+=" : "=");
            expect(what, o[i], ref[i], (size_t)(N * O[i]), 1e-2);
            float *a = down(o[i], (size_t)(N * O[i])), *b = down(o1[i], (size_t)(N * O[i]));
            // the same tuned product on the same bf16 copy: the same bits as ->matmul
            CHECK_MSG(!memcmp(a, b, (size_t)(N * O[i]) * 4), "%s: differs from ->matmul", what);
            free(a), free(b);
        }
        // ->matmul_n_b from x's bf16 rounding: ->matmul_n's bits above 8 rows; at 8 or fewer
        // (->matmul_n multiplies float32 x there) within x's rounding, 1e-2
        if (gpu->matmul_n_b && !accum) {
            uint16_t *xh = malloc((size_t)(N * I) * 2);
            CHECK_OK(lc_from_f32(xh, LC_DT_BF16, x, (size_t)(N * I)));
            void *xb = up(xh, (size_t)(N * I) * 2);
            float *ob[LC_GEMM_N_MAX];
            for (int i = 0; i < n; i++) ob[i] = poisoned((size_t)(N * O[i]));
            bool took = gpu->matmul_n_b(gpu, n, ob, xb, pwd, db, N, false);
            CHECK_MSG(took, "matmul_n_b N=%lld: declined", (long long)N);
            double emax = 0;
            for (int i = 0; i < n && took; i++) {
                float *a = down(o[i], (size_t)(N * O[i])), *b = down(ob[i], (size_t)(N * O[i]));
                double e = rel(b, a, (size_t)(N * O[i]));
                emax = e > emax ? e : emax;
                if (N > 8)
                    CHECK_MSG(!memcmp(a, b, (size_t)(N * O[i]) * 4), "matmul_n_b [%d/%d]: differs from ->matmul_n", i + 1,
                              n);
                else CHECK_MSG(e <= 1e-2, "matmul_n_b [%d/%d] N=%lld: rel err %.3e (bound 1e-2)", i + 1, n, (long long)N, e);
                free(a), free(b);
            }
            if (took && N > 8)
                printf("  matmul_n_b N=%lld I=%lld, %d weights: the same bits as matmul_n\n", (long long)N, (long long)I, n);
            else if (took)
                printf("  matmul_n_b N=%lld I=%lld, %d weights: rel err %.2e from matmul_n (bound 1e-2)\n", (long long)N,
                       (long long)I, n, emax);
            for (int i = 0; i < n; i++) gpu->release(gpu, ob[i]);
            // ->matmul_n_bo: bf16 outputs from xb, and from x (rounded by the backend) the same
            // bits; within bf16 rounding of ->matmul_n_b's float32 sums (another cuBLASLt
            // kernel may sum in another order: most elements the same bf16, none far)
            if (gpu->matmul_n_bo) {
                void *b1[LC_GEMM_N_MAX], *b2[LC_GEMM_N_MAX];
                float *of[LC_GEMM_N_MAX];
                const float *nob[LC_GEMM_N_MAX] = {0};
                for (int i = 0; i < n; i++) {
                    b1[i] = gpu->alloc(gpu, (size_t)(N * O[i]) * 2), b2[i] = gpu->alloc(gpu, (size_t)(N * O[i]) * 2);
                    of[i] = poisoned((size_t)(N * O[i]));
                }
                bool t1 = gpu->matmul_n_bo(gpu, n, b1, NULL, xb, pwd, N, 0);
                bool t2 = gpu->matmul_n_bo(gpu, n, b2, dx, NULL, pwd, N, 0);
                bool t3 = gpu->matmul_n_b(gpu, n, of, xb, pwd, nob, N, false);
                CHECK_MSG(t1 && t2 && t3, "matmul_n_bo N=%lld: declined", (long long)N);
                double emax = 0, same = 0, tot = 0;
                for (int i = 0; i < n && t1 && t2 && t3; i++) {
                    size_t k = (size_t)(N * O[i]);
                    uint16_t *h1 = malloc(k * 2), *h2 = malloc(k * 2), *want = malloc(k * 2);
                    float *f1 = malloc(k * 4), *fo = down(of[i], k);
                    gpu->download(gpu, h1, b1[i], k * 2), gpu->download(gpu, h2, b2[i], k * 2);
                    CHECK_OK(gpu->sync(gpu));
                    CHECK_MSG(!memcmp(h1, h2, k * 2), "matmul_n_bo [%d/%d]: from x differs from from xb", i + 1, n);
                    lc_to_f32(f1, h1, LC_DT_BF16, k);
                    CHECK_OK(lc_from_f32(want, LC_DT_BF16, fo, k));
                    for (size_t j = 0; j < k; j++) same += h1[j] == want[j];
                    tot += (double)k;
                    double e = rel(f1, fo, k);
                    emax = e > emax ? e : emax;
                    free(h1), free(h2), free(want), free(f1), free(fo);
                }
                printf("  matmul_n_bo N=%lld I=%lld, %d weights: from x = from xb bit for bit; %.1f%% of the outputs "
                       "the float32 sums' bf16, rel err %.2e (bound 4e-3)\n", (long long)N, (long long)I, n,
                       tot > 0 ? 100 * same / tot : 0.0, emax);
                CHECK_MSG(emax <= 4e-3 && same >= 0.9 * tot, "matmul_n_bo: rel err %.3e, %.0f of %.0f the same bf16",
                          emax, same, tot);
                for (int i = 0; i < n; i++) gpu->release(gpu, b1[i]), gpu->release(gpu, b2[i]), gpu->release(gpu, of[i]);
            }
            gpu->release(gpu, xb);
            free(xh);
        }
    }
    for (int i = 0; i < n; i++) {
        free(hw[i]), free(wf[i]), free(ref[i]);
        gpu->release(gpu, o[i]), gpu->release(gpu, o1[i]);
    }
    free(x), free(bias);
    gpu->release(gpu, dx), gpu->release(gpu, dbias);
}

static void test_matmul_n(void) {
    if (!have_gpu()) SKIP("no CUDA backend: %s", why);
    static const int64_t qkv[3] = {256, 64, 64}, gu[2] = {688, 688}, one[1] = {96};
    check_matmul_n(37, 200, 3, qkv);
    check_matmul_n(136, 256, 2, gu);
    check_matmul_n(3, 200, 3, qkv); // few rows: ->matmul each (the small-N path)
    check_matmul_n(20, 64, 1, one);
}

/* The outputs of one ->swiglu_lora call on fresh copies of its inputs (h, then gate and up
 * written back or their bf16 pair, then h's bf16 copy), as host bytes. */
static uint8_t *swiglu_lora_bytes(int64_t N, int64_t I, int r, bool both, bool pack, const float *g, const float *u,
                                  const float *ug, const float *uu, const float *bg, const float *bu, float s,
                                  size_t *len) {
    size_t n = (size_t)(N * I), nh = n * 4, ngu = pack ? 2 * n * 2 : 2 * n * 4, nb = pack ? n * 2 : 0;
    float *dg = up(g, n * 4), *du = up(u, n * 4), *dug = up(ug, (size_t)N * r * 4), *duu = up(uu, (size_t)N * r * 4);
    float *dbg = up(bg, (size_t)r * I * 4), *dbu = up(bu, (size_t)r * I * 4), *dh = poisoned(n);
    void *gu = pack ? gpu->alloc(gpu, 2 * n * 2) : NULL, *hb = pack ? gpu->alloc(gpu, n * 2) : NULL;
    gpu->swiglu_lora(gpu, dh, gu, dg, du, N, I, dug, dbg, both ? duu : NULL, both ? dbu : NULL, r, s, hb);
    uint8_t *o = malloc(nh + ngu + nb);
    gpu->download(gpu, o, dh, nh);
    if (pack) gpu->download(gpu, o + nh, gu, ngu), gpu->download(gpu, o + nh + ngu, hb, nb);
    else gpu->download(gpu, o + nh, dg, n * 4), gpu->download(gpu, o + nh + n * 4, du, n * 4);
    CHECK_OK(gpu->sync(gpu));
    void *dv[] = {dg, du, dug, duu, dbg, dbu, dh, gu, hb};
    for (size_t i = 0; i < sizeof dv / sizeof *dv; i++)
        if (dv[i]) gpu->release(gpu, dv[i]);
    *len = nh + ngu + nb;
    return o;
}

/* ->swiglu_lora reading gate and up from the bf16 pair and writing the sums back over it (gate
 * and up NULL: lc_model_gu16) against the same call from float32 gate/up holding the pair's
 * values exactly: h, the pair and h's bf16 copy bit for bit; with LORAC_CUDA_VEC=0 too. */
static void check_swiglu_in_place(int64_t N, int64_t I, int r, bool both, const float *g, const float *u,
                                  const float *ug, const float *uu, const float *bg, const float *bu, float s,
                                  const char *what) {
    size_t n = (size_t)(N * I);
    uint16_t *pair = malloc(2 * n * 2);
    float *gr = malloc(n * 4), *ur = malloc(n * 4);
    CHECK_OK(lc_from_f32(pair, LC_DT_BF16, g, n));
    CHECK_OK(lc_from_f32(pair + n, LC_DT_BF16, u, n));
    lc_to_f32(gr, pair, LC_DT_BF16, n), lc_to_f32(ur, pair + n, LC_DT_BF16, n);
    for (int vec = 1; vec >= 0; vec--) {
        if (!vec) setenv("LORAC_CUDA_VEC", "0", 1);
        size_t la;
        uint8_t *want = swiglu_lora_bytes(N, I, r, both, true, gr, ur, ug, uu, bg, bu, s, &la);
        float *dug = up(ug, (size_t)N * r * 4), *duu = up(uu, (size_t)N * r * 4), *dh = poisoned(n);
        float *dbg = up(bg, (size_t)r * I * 4), *dbu = up(bu, (size_t)r * I * 4);
        void *gu = up(pair, 2 * n * 2), *hb = gpu->alloc(gpu, n * 2);
        gpu->swiglu_lora(gpu, dh, gu, NULL, NULL, N, I, dug, dbg, both ? duu : NULL, both ? dbu : NULL, r, s, hb);
        uint8_t *got = malloc(la);
        gpu->download(gpu, got, dh, n * 4), gpu->download(gpu, got + n * 4, gu, 2 * n * 2);
        gpu->download(gpu, got + n * 4 + 2 * n * 2, hb, n * 2);
        CHECK_OK(gpu->sync(gpu));
        unsetenv("LORAC_CUDA_VEC");
        CHECK_MSG(la == n * 4 + 3 * n * 2 && !memcmp(got, want, la),
                  "%s: in place from the bf16 pair differs from float32 gate/up of the same values%s", what,
                  vec ? "" : " (LORAC_CUDA_VEC=0)");
        free(want), free(got);
        void *dv[] = {dug, duu, dh, dbg, dbu, gu, hb};
        for (size_t i = 0; i < sizeof dv / sizeof *dv; i++) gpu->release(gpu, dv[i]);
    }
    printf("  %-28s in place from the bf16 pair: h, the pair and bf16 h bit for bit (both kernels)\n", what);
    free(pair), free(gr), free(ur);
}

/* ->swiglu_lora against the CPU's out += s u b (->gemm) then ->swiglu: rows and columns
 * off the tiles, ranks 16 and 24 (the two kernel widths), one adapter or both, gate/up
 * written back or kept as bf16; then the default against the one-column kernel
 * (LORAC_CUDA_VEC=0), every output bit for bit — the pair kernel (two columns a thread)
 * where it runs: rank ≤ 16, I even, 1024 rows or more. */
static void check_swiglu_lora(int64_t N, int64_t I, int r, bool both, bool pack) {
    size_t n = (size_t)(N * I);
    float s = 1.7f;
    float *g = rnd(n, 3), *u = rnd(n, 2), *ug = rnd((size_t)N * r, 1), *uu = rnd((size_t)N * r, 1);
    float *bg = rnd((size_t)r * I, 0.3f), *bu = rnd((size_t)r * I, 0.3f), *rg = malloc(n * 4), *ru = malloc(n * 4);
    float *rh = malloc(n * 4);
    memcpy(rg, g, n * 4), memcpy(ru, u, n * 4);
    cpu->gemm(cpu, false, false, N, I, r, s, ug, r, bg, I, 1.0f, rg, I);
    if (both) cpu->gemm(cpu, false, false, N, I, r, s, uu, r, bu, I, 1.0f, ru, I);
    cpu->swiglu(cpu, rh, rg, ru, n);
    float *dg = up(g, n * 4), *du = up(u, n * 4), *dug = up(ug, (size_t)N * r * 4), *duu = up(uu, (size_t)N * r * 4);
    float *dbg = up(bg, (size_t)r * I * 4), *dbu = up(bu, (size_t)r * I * 4), *dh = poisoned(n);
    void *gu = pack ? gpu->alloc(gpu, 2 * n * 2) : NULL, *hb = pack ? gpu->alloc(gpu, n * 2) : NULL;
    gpu->swiglu_lora(gpu, dh, gu, dg, du, N, I, dug, dbg, both ? duu : NULL, both ? dbu : NULL, r, s, hb);
    char what[96];
    snprintf(what, sizeof what, "swiglu_lora %lldx%lld r%d%s%s h", (long long)N, (long long)I, r, both ? "" : " gate only",
             pack ? " packed" : "");
    expect(what, dh, rh, n, 1e-6);
    if (hb) { // h's bf16 copy: round to nearest even of the h written
        float *hh = down(dh, n);
        uint16_t *want = malloc(n * 2), *got = malloc(n * 2);
        CHECK_OK(lc_from_f32(want, LC_DT_BF16, hh, n));
        gpu->download(gpu, got, hb, n * 2);
        CHECK_OK(gpu->sync(gpu));
        CHECK_MSG(!memcmp(got, want, n * 2), "%s: bf16 h differs from round-to-nearest-even of h", what);
        printf("  %-28s bf16 h bit for bit\n", what);
        free(hh), free(want), free(got);
        gpu->release(gpu, hb);
    }
    if (pack) { // gate, up untouched; their bf16 within rounding of the sums
        float *hg = down(dg, n), *hu = down(du, n), *cg = malloc(n * 4), *cu = malloc(n * 4);
        uint16_t *b = malloc(2 * n * 2);
        gpu->download(gpu, b, gu, 2 * n * 2);
        CHECK_OK(gpu->sync(gpu));
        lc_to_f32(cg, b, LC_DT_BF16, n), lc_to_f32(cu, b + n, LC_DT_BF16, n);
        CHECK_MSG(!memcmp(hg, g, n * 4) && !memcmp(hu, u, n * 4), "%s: gate/up changed while packing", what);
        double e1 = rel(cg, rg, n), e2 = rel(cu, ru, n);
        printf("  %-28s bf16 gate %.2e, up %.2e (bound 4e-3)\n", what, e1, e2);
        CHECK_MSG(e1 <= 4e-3 && e2 <= 4e-3, "%s: bf16 gate/up rel err %.3e / %.3e", what, e1, e2);
        free(hg), free(hu), free(cg), free(cu), free(b);
        gpu->release(gpu, gu);
    } else {
        expect("  gate written back", dg, rg, n, 1e-6);
        expect("  up written back", du, ru, n, 1e-6);
    }
    if (pack) check_swiglu_in_place(N, I, r, both, g, u, ug, uu, bg, bu, s, what);
    size_t la, lb;
    uint8_t *wide = swiglu_lora_bytes(N, I, r, both, pack, g, u, ug, uu, bg, bu, s, &la);
    setenv("LORAC_CUDA_VEC", "0", 1);
    uint8_t *one = swiglu_lora_bytes(N, I, r, both, pack, g, u, ug, uu, bg, bu, s, &lb);
    unsetenv("LORAC_CUDA_VEC");
    CHECK_MSG(la == lb && !memcmp(wide, one, la), "%s: the pair kernel's outputs differ from the one-column kernel's",
              what);
    printf("  %-28s default = LORAC_CUDA_VEC=0, every output bit for bit%s\n", what,
           r <= 16 && I % 2 == 0 && N >= 1024 ? " (pair kernel)" : "");
    free(wide), free(one);
    free(g), free(u), free(ug), free(uu), free(bg), free(bu), free(rg), free(ru), free(rh);
    void *dv[] = {dg, du, dug, duu, dbg, dbu, dh};
    for (size_t i = 0; i < sizeof dv / sizeof *dv; i++) gpu->release(gpu, dv[i]);
}

/* ->swiglu_lora in place with no adapter (the pair's products held the adapters' part
 * already): h and its bf16 copy from the bf16 pair, the pair left as it was; the default
 * (k_swiglu_pair where N·I is a multiple of 8) against the one-column kernel
 * (LORAC_CUDA_VEC=0) bit for bit, and h within 1e-6 of the CPU's ->swiglu of the pair's
 * values; with h's float32 and without (only the bf16 copy). */
static void check_swiglu_pair(int64_t N, int64_t I) {
    size_t n = (size_t)(N * I);
    float *g = rnd(n, 3), *u = rnd(n, 2), *gr = malloc(n * 4), *ur = malloc(n * 4), *rh = malloc(n * 4);
    uint16_t *pair = malloc(2 * n * 2);
    CHECK_OK(lc_from_f32(pair, LC_DT_BF16, g, n));
    CHECK_OK(lc_from_f32(pair + n, LC_DT_BF16, u, n));
    lc_to_f32(gr, pair, LC_DT_BF16, n), lc_to_f32(ur, pair + n, LC_DT_BF16, n);
    cpu->swiglu(cpu, rh, gr, ur, n);
    uint8_t *got[2];
    size_t nb = n * 4 + 3 * n * 2;
    double e = 0;
    for (int vec = 1; vec >= 0; vec--) {
        if (!vec) setenv("LORAC_CUDA_VEC", "0", 1);
        got[vec] = malloc(nb);
        for (int with = 0; with < 2; with++) {
            void *gu = up(pair, 2 * n * 2), *hb = gpu->alloc(gpu, n * 2);
            float *dh = with ? poisoned(n) : NULL;
            gpu->swiglu_lora(gpu, dh, gu, NULL, NULL, N, I, NULL, NULL, NULL, NULL, 16, 1.5f, hb);
            uint16_t *p2 = malloc(2 * n * 2), *h2 = malloc(n * 2);
            gpu->download(gpu, p2, gu, 2 * n * 2), gpu->download(gpu, h2, hb, n * 2);
            if (with) gpu->download(gpu, got[vec], dh, n * 4);
            CHECK_OK(gpu->sync(gpu));
            CHECK_MSG(!memcmp(p2, pair, 2 * n * 2), "swiglu_lora %lldx%lld in place, no adapter: the pair changed",
                      (long long)N, (long long)I);
            if (with) memcpy(got[vec] + n * 4, p2, 2 * n * 2), memcpy(got[vec] + n * 4 + 2 * n * 2, h2, n * 2);
            if (!with) { // the bf16 copy written without h, kept to compare with the one written with it
                got[vec] = realloc(got[vec], nb + n * 2);
                memcpy(got[vec] + nb, h2, n * 2);
            }
            free(p2), free(h2);
            gpu->release(gpu, gu), gpu->release(gpu, hb);
            if (dh) gpu->release(gpu, dh);
        }
        unsetenv("LORAC_CUDA_VEC");
        if (vec) e = rel((const float *)got[1], rh, n);
    }
    CHECK_MSG(!memcmp(got[0], got[1], nb + n * 2), "swiglu_lora %lldx%lld in place, no adapter: the default differs "
              "from the one-column kernel (LORAC_CUDA_VEC=0)", (long long)N, (long long)I);
    CHECK_MSG(!memcmp(got[1] + nb, got[1] + n * 4 + 2 * n * 2, n * 2),
              "swiglu_lora in place, no adapter: bf16 h without float32 h differs from with it");
    CHECK_MSG(e <= 1e-6, "swiglu_lora in place, no adapter: h rel err %.3e from the CPU (bound 1e-6)", e);
    printf("  %-28s in place, no adapter: the pair untouched, h and bf16 h the one-column kernel's bits, "
           "h rel err %.1e (CPU)\n", "swiglu_lora (pair only)", e);
    free(got[0]), free(got[1]), free(g), free(u), free(gr), free(ur), free(rh), free(pair);
}

static void test_swiglu_lora(void) {
    if (!have_gpu()) SKIP("no CUDA backend: %s", why);
    CHECK_MSG(gpu->swiglu_lora != NULL, "the CUDA backend offers no ->swiglu_lora");
    if (!gpu->swiglu_lora) return;
    check_swiglu_lora(37, 300, 16, true, false);
    check_swiglu_lora(37, 300, 16, true, true);
    check_swiglu_lora(70, 520, 24, false, false);
    check_swiglu_lora(70, 520, 24, true, true);
    check_swiglu_lora(5, 1000, 8, true, true);
    // the pair kernel (lora_gemm.cu's SW2_ROWS: 1024 rows or more): past a 512-column tile,
    // a last row tile of 2 rows; both adapters written back; I odd (one column a thread)
    check_swiglu_lora(1090, 1030, 16, false, true);
    check_swiglu_lora(1024, 600, 16, true, false);
    check_swiglu_lora(1024, 301, 16, true, true);
    check_swiglu_pair(1090, 1032);
    check_swiglu_pair(37, 301); // N·I not a multiple of 8: the one-column kernel both ways
}

/* ->rope_b (bwd: ->rope_bwd_b) from the float32 values x: the bf16 rounding of what ->rope
 * (->rope_bwd) makes of x in place, bit for bit, written out of place with x left as it was;
 * then into rows of a wider stride (a token's heads, then 8 values it leaves alone). */
static void check_rope_b(bool bwd, const float *x, const float *dcs, const float *dsn, int64_t B, int64_t T,
                         int64_t H, int64_t D, int64_t pos0) {
    const char *name = bwd ? "rope_bwd_b" : "rope_b";
    void (*op_b)(lc_backend *, void *, int64_t, const float *, const float *, const float *, int64_t, int64_t,
                 int64_t, int64_t, int64_t) = bwd ? gpu->rope_bwd_b : gpu->rope_b;
    CHECK_MSG(op_b != NULL, "the CUDA backend offers no ->%s", name);
    if (!op_b) return;
    size_t nx = (size_t)(B * T * H * D);
    float *t = up(x, nx * 4), *xi = up(x, nx * 4);
    (bwd ? gpu->rope_bwd : gpu->rope)(gpu, t, dcs, dsn, B, T, H, D, pos0);
    float *ht = down(t, nx);
    uint16_t *want = malloc(nx * 2), *got = malloc(nx * 2);
    CHECK_OK(lc_from_f32(want, LC_DT_BF16, ht, nx));
    void *ob = gpu->alloc(gpu, nx * 2);
    op_b(gpu, ob, H * D, xi, dcs, dsn, B, T, H, D, pos0);
    gpu->download(gpu, got, ob, nx * 2);
    float *after = down(xi, nx);
    CHECK_MSG(!memcmp(got, want, nx * 2), "%s differs from %s's values rounded", name, bwd ? "rope_bwd" : "rope");
    CHECK_MSG(!memcmp(after, x, nx * 4), "%s changed its input", name);
    size_t nt = (size_t)(B * T), w = (size_t)(H * D), ld = w + 8;
    uint16_t *wide = malloc(nt * ld * 2);
    memset(wide, 0xff, nt * ld * 2);
    void *obw = up(wide, nt * ld * 2);
    op_b(gpu, obw, (int64_t)ld, xi, dcs, dsn, B, T, H, D, pos0);
    gpu->download(gpu, wide, obw, nt * ld * 2);
    CHECK_OK(gpu->sync(gpu));
    bool rows_ok = true;
    for (size_t t = 0; t < nt; t++) {
        rows_ok &= !memcmp(wide + t * ld, want + t * w, w * 2);
        for (size_t j = w; j < ld; j++) rows_ok &= wide[t * ld + j] == 0xffff;
    }
    CHECK_MSG(rows_ok, "%s at row stride %zu: not the packed rows' bits, or the gaps written", name, ld);
    gpu->release(gpu, obw);
    free(wide);
    printf("  %-28s %s's values rounded, bit for bit; its input untouched; strided rows too\n", name,
           bwd ? "rope_bwd" : "rope");
    gpu->release(gpu, ob), gpu->release(gpu, t), gpu->release(gpu, xi);
    free(ht), free(want), free(got), free(after);
}

/* ->rope (in place) and ->rope_b, ->rope_bwd_b at the 7B model's q shape (rows of 32 heads
 * of 128, 300 tokens of 2 sequences from position 0, written into rows of q|k|v's width):
 * four pairs a thread by default against LORAC_CUDA_VEC=0's pair a thread, bit for bit. */
static void check_rope_vec(void) {
    int64_t B = 2, T = 150, H = 32, D = 128, N = B * T, ld = (H + 16) * D;
    size_t nx = (size_t)(N * H * D), nt = (size_t)(T * D / 2);
    float *cs = malloc(nt * 4), *sn = malloc(nt * 4), *x = rnd(nx, 3);
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < D / 2; i++) {
            float a = (float)t * powf(500000.0f, -(float)(2 * i) / (float)D);
            cs[t * D / 2 + i] = cosf(a), sn[t * D / 2 + i] = sinf(a);
        }
    float *dcs = up(cs, nt * 4), *dsn = up(sn, nt * 4);
    bool same = true;
    for (int op = 0; op < 3; op++) {
        size_t bytes = op ? (size_t)N * (size_t)ld * 2 : nx * 4;
        unsigned char *got[2];
        for (int v = 0; v < 2; v++) {
            if (v) setenv("LORAC_CUDA_VEC", "0", 1);
            float *dx = up(x, nx * 4);
            unsigned char *h = malloc(bytes);
            memset(h, 0xff, bytes);
            void *o = op ? up(h, bytes) : NULL;
            if (op == 0) gpu->rope(gpu, dx, dcs, dsn, B, T, H, D, 0);
            else (op == 1 ? gpu->rope_b : gpu->rope_bwd_b)(gpu, o, ld, dx, dcs, dsn, B, T, H, D, 0);
            gpu->download(gpu, h, op ? o : (void *)dx, bytes);
            CHECK_OK(gpu->sync(gpu));
            got[v] = h;
            gpu->release(gpu, dx);
            if (o) gpu->release(gpu, o);
            unsetenv("LORAC_CUDA_VEC");
        }
        same &= !memcmp(got[0], got[1], bytes);
        CHECK_MSG(!memcmp(got[0], got[1], bytes), "%s at 32 x 128: default and LORAC_CUDA_VEC=0 differ",
                  op == 0 ? "rope" : op == 1 ? "rope_b" : "rope_bwd_b");
        free(got[0]), free(got[1]);
    }
    if (same) printf("  %-28s rope, rope_b, rope_bwd_b: default = LORAC_CUDA_VEC=0 bit for bit\n", "rope 300 x 32 x 128");
    gpu->release(gpu, dcs), gpu->release(gpu, dsn);
    free(cs), free(sn), free(x);
}

static void test_norm_rope_swiglu(void) {
    if (!have_gpu()) SKIP("no CUDA backend: %s", why);
    int64_t N = 29, C = 320;
    size_t nc = (size_t)(N * C);
    float *x = rnd(nc, 2), *w = rnd((size_t)C, 1), *g = rnd(nc, 1), *dx0 = rnd(nc, 1);
    float *ro = malloc(nc * 4), *rr = malloc((size_t)N * 4);
    cpu->rmsnorm(cpu, ro, rr, x, w, N, C, 1e-5f);
    float *dx = up(x, nc * 4), *dw = up(w, (size_t)C * 4), *o = poisoned(nc), *r = poisoned((size_t)N);
    gpu->rmsnorm(gpu, o, r, dx, dw, N, C, 1e-5f);
    expect("rmsnorm", o, ro, nc, 1e-6);
    expect("rmsnorm rstd", r, rr, (size_t)N, 1e-6);
    float *rd = malloc(nc * 4);
    memcpy(rd, dx0, nc * 4);
    cpu->rmsnorm_bwd(cpu, rd, g, x, w, rr, N, C);
    float *dg = up(g, nc * 4), *ddx = up(dx0, nc * 4);
    gpu->rmsnorm_bwd(gpu, ddx, dg, dx, dw, r, N, C);
    expect("rmsnorm_bwd +=", ddx, rd, nc, 1e-5);
    // many rows: the register-held kernels (1, 4 and 8 float4s a thread, a partial last
    // one), and a width they do not take
    static const int64_t shapes[][2] = {{600, 1024}, {520, 4096}, {512, 7000}, {513, 322}};
    for (size_t k = 0; k < sizeof shapes / sizeof *shapes; k++) {
        int64_t N2 = shapes[k][0], C2 = shapes[k][1];
        size_t n2 = (size_t)(N2 * C2);
        float *x2 = rnd(n2, 2), *w2 = rnd((size_t)C2, 1), *g2 = rnd(n2, 1), *d2 = rnd(n2, 1);
        float *o2r = malloc(n2 * 4), *r2r = malloc((size_t)N2 * 4), *d2r = malloc(n2 * 4);
        cpu->rmsnorm(cpu, o2r, r2r, x2, w2, N2, C2, 1e-5f);
        memcpy(d2r, d2, n2 * 4);
        cpu->rmsnorm_bwd(cpu, d2r, g2, x2, w2, r2r, N2, C2);
        float *dx2 = up(x2, n2 * 4), *dw2 = up(w2, (size_t)C2 * 4), *o2 = poisoned(n2), *r2 = poisoned((size_t)N2);
        float *dg2 = up(g2, n2 * 4), *dd2 = up(d2, n2 * 4);
        gpu->rmsnorm(gpu, o2, r2, dx2, dw2, N2, C2, 1e-5f);
        gpu->rmsnorm_bwd(gpu, dd2, dg2, dx2, dw2, r2, N2, C2);
        char what[64];
        snprintf(what, sizeof what, "rmsnorm %lldx%lld", (long long)N2, (long long)C2);
        expect(what, o2, o2r, n2, 1e-6);
        expect("  rstd", r2, r2r, (size_t)N2, 1e-6);
        expect("  rmsnorm_bwd +=", dd2, d2r, n2, 1e-5);
        { // ->rmsnorm_b: out's bf16 rounding (round to nearest even), with out and without it
            CHECK_MSG(gpu->rmsnorm_b != NULL, "the CUDA backend offers no ->rmsnorm_b");
            float *ho = down(o2, n2), *o3 = poisoned(n2), *r3 = poisoned((size_t)N2);
            uint16_t *want = malloc(n2 * 2), *got = malloc(n2 * 2);
            CHECK_OK(lc_from_f32(want, LC_DT_BF16, ho, n2));
            for (int with = 0; with < 2; with++) {
                void *ob = gpu->alloc(gpu, n2 * 2);
                gpu->rmsnorm_b(gpu, with ? o3 : NULL, ob, 0, r3, dx2, dw2, N2, C2, 1e-5f);
                gpu->download(gpu, got, ob, n2 * 2);
                CHECK_OK(gpu->sync(gpu));
                CHECK_MSG(!memcmp(got, want, n2 * 2), "%s: rmsnorm_b's bf16 out differs from out rounded", what);
                float *h3 = down(o3, n2), *hr = down(r3, (size_t)N2), *hr2 = down(r2, (size_t)N2);
                if (with) CHECK_MSG(!memcmp(h3, ho, n2 * 4), "%s: rmsnorm_b's out differs from rmsnorm's", what);
                CHECK_MSG(!memcmp(hr, hr2, (size_t)N2 * 4), "%s: rmsnorm_b's rstd differs", what);
                gpu->release(gpu, ob);
                free(h3), free(hr), free(hr2);
            }
            printf("  %-28s bf16 out bit for bit, with and without the float32 out\n", "rmsnorm_b");
            free(ho), free(want), free(got);
            gpu->release(gpu, o3), gpu->release(gpu, r3);
        }
        { // ->rmsnorm_bwd_b: the same dx bits as ->rmsnorm_bwd (dd2, from d2), and their bf16
            // rounding, packed and into rows of a wider stride (16 spare columns: 8-byte
            // stores; 6: 4-byte), the spare columns untouched; ->to_bf16 of that dx: the same
            // bf16 bits
            CHECK_MSG(gpu->rmsnorm_bwd_b && gpu->to_bf16, "the CUDA backend offers no ->rmsnorm_bwd_b / ->to_bf16");
            float *hd = down(dd2, n2);
            uint16_t *want = malloc(n2 * 2), *got = malloc(n2 * 2);
            CHECK_OK(lc_from_f32(want, LC_DT_BF16, hd, n2));
            for (int64_t spare = 0; spare <= 16; spare += spare ? 10 : 6) {
                int64_t ldb = C2 + spare;
                size_t nb = (size_t)(N2 * ldb);
                uint16_t *wide = malloc(nb * 2);
                memset(wide, 0xff, nb * 2); // NaN bf16s: every element written, the spare ones kept
                void *db = up(wide, nb * 2);
                float *d3 = up(d2, n2 * 4);
                gpu->rmsnorm_bwd_b(gpu, d3, db, ldb, dg2, dx2, dw2, r2, N2, C2);
                float *h3 = down(d3, n2);
                gpu->download(gpu, wide, db, nb * 2);
                CHECK_OK(gpu->sync(gpu));
                CHECK_MSG(!memcmp(h3, hd, n2 * 4), "%s: rmsnorm_bwd_b's dx differs from rmsnorm_bwd's (ldb %lld)",
                          what, (long long)ldb);
                bool same = true, kept = true;
                for (int64_t r = 0; r < N2; r++) {
                    same &= !memcmp(wide + r * ldb, want + r * C2, (size_t)C2 * 2);
                    for (int64_t j = C2; j < ldb; j++) kept &= wide[r * ldb + j] == 0xffff;
                }
                CHECK_MSG(same, "%s: rmsnorm_bwd_b's bf16 dx differs from dx rounded (ldb %lld)", what,
                          (long long)ldb);
                CHECK_MSG(kept, "%s: rmsnorm_bwd_b wrote a spare column (ldb %lld)", what, (long long)ldb);
                gpu->release(gpu, db), gpu->release(gpu, d3);
                free(h3), free(wide);
            }
            void *tb = gpu->alloc(gpu, n2 * 2);
            gpu->to_bf16(gpu, tb, dd2, n2);
            gpu->download(gpu, got, tb, n2 * 2);
            CHECK_OK(gpu->sync(gpu));
            CHECK_MSG(!memcmp(got, want, n2 * 2), "%s: to_bf16 differs from the rounding", what);
            printf("  %-28s the same dx bits, its bf16 rounding bit for bit at row strides C, C + 6, C + 16 "
                   "(and ->to_bf16's)\n", "rmsnorm_bwd_b");
            gpu->release(gpu, tb);
            free(hd), free(want), free(got);
        }
        free(x2), free(w2), free(g2), free(d2), free(o2r), free(r2r), free(d2r);
        void *dv[] = {dx2, dw2, o2, r2, dg2, dd2};
        for (size_t i = 0; i < sizeof dv / sizeof *dv; i++) gpu->release(gpu, dv[i]);
    }
    // rope on (B, T, H, D) at pos0
    int64_t B = 2, T = 7, H = 3, D = 64, P = 40, pos0 = 5;
    size_t nx = (size_t)(B * T * H * D);
    float *cs = malloc((size_t)(P * D / 2) * 4), *sn = malloc((size_t)(P * D / 2) * 4);
    for (int64_t p = 0; p < P; p++)
        for (int64_t i = 0; i < D / 2; i++) {
            float a = (float)p * powf(10000.0f, -(float)(2 * i) / (float)D);
            cs[p * D / 2 + i] = cosf(a), sn[p * D / 2 + i] = sinf(a);
        }
    float *xr = rnd(nx, 1), *ref = malloc(nx * 4);
    float *dcs = up(cs, (size_t)(P * D / 2) * 4), *dsn = up(sn, (size_t)(P * D / 2) * 4), *dxr = up(xr, nx * 4);
    memcpy(ref, xr, nx * 4);
    cpu->rope(cpu, ref, cs, sn, B, T, H, D, pos0);
    gpu->rope(gpu, dxr, dcs, dsn, B, T, H, D, pos0);
    expect("rope", dxr, ref, nx, 1e-6);
    float *before = down(dxr, nx), *x0 = rnd(nx, 1);
    check_rope_b(true, before, dcs, dsn, B, T, H, D, pos0); // on rope's output, as training does
    check_rope_b(false, x0, dcs, dsn, B, T, H, D, pos0);
    free(before), free(x0);
    cpu->rope_bwd(cpu, ref, cs, sn, B, T, H, D, pos0);
    gpu->rope_bwd(gpu, dxr, dcs, dsn, B, T, H, D, pos0);
    expect("rope_bwd (after rope)", dxr, ref, nx, 1e-6);
    check_rope_vec();
    // swiglu
    size_t n = 50001;
    float *ga = rnd(n, 4), *u = rnd(n, 2), *dout = rnd(n, 1), *rs1 = malloc(n * 4), *rs2 = malloc(n * 4);
    float *dga = up(ga, n * 4), *du = up(u, n * 4), *ddo = up(dout, n * 4), *os1 = poisoned(n), *os2 = poisoned(n);
    cpu->swiglu(cpu, rs1, ga, u, n);
    gpu->swiglu(gpu, os1, dga, du, n);
    expect("swiglu", os1, rs1, n, 1e-6);
    float *oh = poisoned(n), *fh = poisoned(n);
    gpu->swiglu(gpu, fh, dga, du, n); // the card's forward bits, for the h below
    cpu->swiglu_bwd(cpu, rs1, rs2, NULL, dout, ga, u, n);
    gpu->swiglu_bwd(gpu, os1, os2, NULL, ddo, dga, du, n);
    expect("swiglu_bwd dgate", os1, rs1, n, 1e-6);
    expect("swiglu_bwd dup", os2, rs2, n, 1e-6);
    // in place, as the model calls it (dgate over gate, dup over dout), with h again
    gpu->swiglu_bwd(gpu, dga, ddo, oh, ddo, dga, du, n);
    expect("swiglu_bwd dgate over gate", dga, rs1, n, 1e-6);
    expect("swiglu_bwd dup over dout", ddo, rs2, n, 1e-6);
    {
        float *hh = down(oh, n), *hf = down(fh, n);
        CHECK_MSG(!memcmp(hh, hf, n * 4), "swiglu_bwd's h differs from swiglu's bits");
        printf("  %-28s bit for bit\n", "swiglu_bwd h = swiglu");
        free(hh), free(hf);
    }
    // packed: h the same bits as swiglu, gate and up kept as bf16 (rounded to nearest
    // even, as lc_from_f32 rounds), the backward from those values against the CPU's
    {
        CHECK_MSG(gpu->swiglu_pack && gpu->swiglu_bwd_packed, "the CUDA backend offers no packed SwiGLU");
        float *g2 = rnd(n, 4), *u2 = rnd(n, 2), *d2 = rnd(n, 1), *rg = malloc(n * 4), *ru = malloc(n * 4);
        float *dg2 = up(g2, n * 4), *du2 = up(u2, n * 4), *dd2 = up(d2, n * 4), *ph = poisoned(n), *pf = poisoned(n);
        uint16_t *want = malloc(2 * n * 2), *got = malloc(2 * n * 2);
        void *gu = gpu->alloc(gpu, 2 * n * 2);
        gpu->swiglu(gpu, pf, dg2, du2, n);
        void *hb = gpu->alloc(gpu, n * 2);
        gpu->swiglu_pack(gpu, ph, gu, dg2, du2, n, hb);
        float *a = down(ph, n), *b = down(pf, n);
        CHECK_MSG(!memcmp(a, b, n * 4), "swiglu_pack's out differs from swiglu's bits");
        {
            uint16_t *hw = malloc(n * 2), *hg = malloc(n * 2);
            CHECK_OK(lc_from_f32(hw, LC_DT_BF16, b, n));
            gpu->download(gpu, hg, hb, n * 2);
            CHECK_OK(gpu->sync(gpu));
            CHECK_MSG(!memcmp(hw, hg, n * 2), "swiglu_pack's bf16 out differs from round-to-nearest-even");
            free(hw), free(hg);
            gpu->release(gpu, hb);
        }
        free(a), free(b);
        gpu->download(gpu, got, gu, 2 * n * 2);
        CHECK_OK(gpu->sync(gpu));
        CHECK_OK(lc_from_f32(want, LC_DT_BF16, g2, n));
        CHECK_OK(lc_from_f32(want + n, LC_DT_BF16, u2, n));
        CHECK_MSG(!memcmp(got, want, 2 * n * 2), "swiglu_pack's bf16 gate/up differ from round-to-nearest-even");
        printf("  %-28s bit for bit (out = swiglu, gate/up = bf16)\n", "swiglu_pack");
        lc_to_f32(rg, want, LC_DT_BF16, n), lc_to_f32(ru, want + n, LC_DT_BF16, n);
        float *r1 = malloc(n * 4), *r2 = malloc(n * 4), *r3 = malloc(n * 4);
        cpu->swiglu_bwd(cpu, r1, r2, r3, d2, rg, ru, n);
        gpu->swiglu_bwd_packed(gpu, dg2, dd2, ph, dd2, gu, n); // dgate over the old gate, dup over dout
        expect("swiglu_bwd_packed dgate", dg2, r1, n, 1e-6);
        expect("swiglu_bwd_packed dup", dd2, r2, n, 1e-6);
        expect("swiglu_bwd_packed h", ph, r3, n, 1e-6);
        // with dgate's and dup's bf16 roundings left over gu: the same float32 bits as
        // swiglu_bwd_packed, gu round-to-nearest-even of them
        {
            CHECK_MSG(gpu->swiglu_bwd_packed_b != NULL, "the CUDA backend offers no swiglu_bwd_packed_b");
            float *eg = up(rg, n * 4), *eu = up(ru, n * 4), *ed = up(d2, n * 4), *eh = poisoned(n);
            void *gu2 = gpu->alloc(gpu, 2 * n * 2);
            gpu->swiglu_pack(gpu, eh, gu2, eg, eu, n, NULL); // the same bf16 gate/up as gu
            void *gu3 = gpu->alloc(gpu, 2 * n * 2); // the same with no float32 dgate, dup
            gpu->swiglu_pack(gpu, eh, gu3, eg, eu, n, NULL);
            void *hb3 = gpu->alloc(gpu, n * 2); // and h only as bf16 (down's ga from it)
            gpu->swiglu_bwd_packed_b(gpu, NULL, NULL, NULL, ed, gu3, n, hb3);
            gpu->swiglu_bwd_packed_b(gpu, eg, ed, eh, ed, gu2, n, NULL); // in place, as the model calls it
            float *ag = down(eg, n), *bg = down(dg2, n), *au = down(ed, n), *bu = down(dd2, n), *ah = down(eh, n);
            float *bh = down(ph, n);
            CHECK_MSG(!memcmp(ag, bg, n * 4) && !memcmp(au, bu, n * 4) && !memcmp(ah, bh, n * 4),
                      "swiglu_bwd_packed_b's dgate/dup/h differ from swiglu_bwd_packed's bits");
            uint16_t *wb = malloc(2 * n * 2), *gb2 = malloc(2 * n * 2);
            CHECK_OK(lc_from_f32(wb, LC_DT_BF16, bg, n));
            CHECK_OK(lc_from_f32(wb + n, LC_DT_BF16, bu, n));
            gpu->download(gpu, gb2, gu2, 2 * n * 2);
            CHECK_OK(gpu->sync(gpu));
            CHECK_MSG(!memcmp(gb2, wb, 2 * n * 2), "swiglu_bwd_packed_b's bf16 dgate/dup differ from round-to-nearest-even");
            gpu->download(gpu, gb2, gu3, 2 * n * 2);
            CHECK_OK(gpu->sync(gpu));
            CHECK_MSG(!memcmp(gb2, wb, 2 * n * 2), "swiglu_bwd_packed_b without dgate/dup: other bf16 dgate/dup");
            CHECK_OK(lc_from_f32(wb, LC_DT_BF16, bh, n));
            gpu->download(gpu, gb2, hb3, n * 2);
            CHECK_OK(gpu->sync(gpu));
            CHECK_MSG(!memcmp(gb2, wb, n * 2), "swiglu_bwd_packed_b's bf16 h differs from h's round-to-nearest-even");
            gpu->release(gpu, gu3);
            gpu->release(gpu, hb3);
            printf("  %-28s bit for bit (= swiglu_bwd_packed, gu = bf16 dgate/dup, bf16 h)\n", "swiglu_bwd_packed_b");
            free(ag), free(bg), free(au), free(bu), free(ah), free(bh), free(wb), free(gb2);
            void *ev[] = {eg, eu, ed, eh, gu2};
            for (size_t i = 0; i < sizeof ev / sizeof *ev; i++) gpu->release(gpu, ev[i]);
        }
        free(g2), free(u2), free(d2), free(rg), free(ru), free(want), free(got), free(r1), free(r2), free(r3);
        void *dv[] = {dg2, du2, dd2, ph, pf, gu};
        for (size_t i = 0; i < sizeof dv / sizeof *dv; i++) gpu->release(gpu, dv[i]);
    }
    free(x), free(w), free(g), free(dx0), free(ro), free(rr), free(rd), free(cs), free(sn), free(xr), free(ref);
    free(ga), free(u), free(dout), free(rs1), free(rs2);
    void *dev[] = {dx, dw, o, r, dg, ddx, dcs, dsn, dxr, dga, du, ddo, os1, os2, oh, fh};
    for (size_t i = 0; i < sizeof dev / sizeof *dev; i++) gpu->release(gpu, dev[i]);
}

/* ->swiglu_bwd_packed_b four elements a thread (n a multiple of 4, aligned) and one (else,
 * or LORAC_CUDA_VEC=0): both the bits of ->swiglu_bwd_packed (one element a thread), gu the
 * rounding of dgate/dup, hb of h; in place as the model calls it, and with only the bf16
 * outputs. */
static void test_swiglu_bwd_wide(void) {
    if (!have_gpu()) SKIP("no CUDA backend: %s", why);
    const size_t sizes[] = {4 * 12289, 4 * 12289 + 3};
    for (int si = 0; si < 2; si++)
        for (int vec = 1; vec >= 0; vec--) {
            size_t n = sizes[si];
            if (!vec) setenv("LORAC_CUDA_VEC", "0", 1);
            float *g = rnd(n, 4), *u = rnd(n, 2), *d = rnd(n, 1);
            float *dg = up(g, n * 4), *du = up(u, n * 4), *dd = up(d, n * 4), *h0 = poisoned(n);
            void *gu0 = gpu->alloc(gpu, 2 * n * 2), *gu1 = gpu->alloc(gpu, 2 * n * 2);
            void *gu2 = gpu->alloc(gpu, 2 * n * 2);
            gpu->swiglu_pack(gpu, h0, gu0, dg, du, n, NULL);
            gpu->swiglu_pack(gpu, h0, gu1, dg, du, n, NULL);
            gpu->swiglu_pack(gpu, h0, gu2, dg, du, n, NULL);
            float *rg = poisoned(n), *ru = up(d, n * 4), *rh = poisoned(n); // the reference: dup over dout
            gpu->swiglu_bwd_packed(gpu, rg, ru, rh, ru, gu0, n);
            float *eg = poisoned(n), *ed = up(d, n * 4), *eh = poisoned(n);
            void *hb = gpu->alloc(gpu, n * 2);
            gpu->swiglu_bwd_packed_b(gpu, eg, ed, eh, ed, gu1, n, NULL); // in place, as the model calls it
            gpu->swiglu_bwd_packed_b(gpu, NULL, NULL, NULL, dd, gu2, n, hb); // only the bf16 outputs
            // from dout's bf16 values (->swiglu_bwd_packed_bb): the float32 op's bits from the same values
            float *d16 = malloc(n * 4);
            uint16_t *dh = malloc(n * 2);
            CHECK_OK(lc_from_f32(dh, LC_DT_BF16, d, n));
            lc_to_f32(d16, dh, LC_DT_BF16, n);
            float *dd16 = up(d16, n * 4);
            void *ddb = up(dh, n * 2), *gu3 = gpu->alloc(gpu, 2 * n * 2), *gu4 = gpu->alloc(gpu, 2 * n * 2);
            void *hb3 = gpu->alloc(gpu, n * 2), *hb4 = gpu->alloc(gpu, n * 2);
            gpu->swiglu_pack(gpu, h0, gu3, dg, du, n, NULL);
            gpu->swiglu_pack(gpu, h0, gu4, dg, du, n, NULL);
            gpu->swiglu_bwd_packed_b(gpu, NULL, NULL, NULL, dd16, gu3, n, hb3);
            gpu->swiglu_bwd_packed_bb(gpu, ddb, gu4, n, hb4);
            {
                uint16_t *x3 = malloc(3 * n * 2), *x4 = malloc(3 * n * 2);
                gpu->download(gpu, x3, gu3, 2 * n * 2), gpu->download(gpu, x3 + 2 * n, hb3, n * 2);
                gpu->download(gpu, x4, gu4, 2 * n * 2), gpu->download(gpu, x4 + 2 * n, hb4, n * 2);
                CHECK_OK(gpu->sync(gpu));
                CHECK_MSG(!memcmp(x3, x4, 3 * n * 2), "n %zu%s: swiglu_bwd_packed_bb differs from "
                          "swiglu_bwd_packed_b over the same dout values", n, vec ? "" : " (LORAC_CUDA_VEC=0)");
                free(x3), free(x4);
            }
            free(d16), free(dh);
            void *dv16[] = {dd16, ddb, gu3, gu4, hb3, hb4};
            for (size_t i = 0; i < sizeof dv16 / sizeof *dv16; i++) gpu->release(gpu, dv16[i]);
            unsetenv("LORAC_CUDA_VEC");
            float *a[3] = {down(rg, n), down(ru, n), down(rh, n)}, *b[3] = {down(eg, n), down(ed, n), down(eh, n)};
            for (int k = 0; k < 3; k++)
                CHECK_MSG(!memcmp(a[k], b[k], n * 4), "n %zu%s: swiglu_bwd_packed_b's %s differs from "
                          "swiglu_bwd_packed's", n, vec ? "" : " (LORAC_CUDA_VEC=0)",
                          k == 0 ? "dgate" : k == 1 ? "dup" : "h");
            uint16_t *want = malloc(2 * n * 2), *got = malloc(2 * n * 2);
            CHECK_OK(lc_from_f32(want, LC_DT_BF16, a[0], n));
            CHECK_OK(lc_from_f32(want + n, LC_DT_BF16, a[1], n));
            for (int k = 0; k < 2; k++) {
                gpu->download(gpu, got, k ? gu2 : gu1, 2 * n * 2);
                CHECK_OK(gpu->sync(gpu));
                CHECK_MSG(!memcmp(got, want, 2 * n * 2), "n %zu: bf16 dgate/dup (%s) differ from their rounding", n,
                          k ? "bf16 only" : "in place");
            }
            CHECK_OK(lc_from_f32(want, LC_DT_BF16, a[2], n));
            gpu->download(gpu, got, hb, n * 2);
            CHECK_OK(gpu->sync(gpu));
            CHECK_MSG(!memcmp(got, want, n * 2), "n %zu: bf16 h differs from h's rounding", n);
            printf("  %-28s n %zu%s: bit for bit (= swiglu_bwd_packed; _bb = _b over bf16 dout)\n",
                   "swiglu_bwd_packed_b", n,
                   vec ? "" : ", LORAC_CUDA_VEC=0");
            for (int k = 0; k < 3; k++) free(a[k]), free(b[k]);
            free(g), free(u), free(d), free(want), free(got);
            void *dv[] = {dg, du, dd, h0, gu0, gu1, gu2, rg, ru, rh, eg, ed, eh, hb};
            for (size_t i = 0; i < sizeof dv / sizeof *dv; i++) gpu->release(gpu, dv[i]);
        }
}

static void test_cross_entropy(void) {
    if (!have_gpu()) SKIP("no CUDA backend: %s", why);
    int64_t N = 23, V = 5003;
    size_t n = (size_t)(N * V);
    float *l = rnd(n, 6), *ref = malloc(n * 4);
    int32_t tg[23];
    for (int i = 0; i < N; i++) tg[i] = (i % 5 == 3) ? -1 : (int32_t)(lc_splitmix64(&rs) % (uint64_t)V);
    int32_t *dtg = up(tg, sizeof tg);
    memcpy(ref, l, n * 4);
    double want = cpu->cross_entropy(cpu, ref, tg, N, V, 0.0f);
    float *dl = up(l, n * 4);
    double got = gpu->cross_entropy(gpu, dl, dtg, N, V, 0.0f);
    CHECK_OK(gpu->sync(gpu));
    printf("  cross_entropy loss %.9f vs cpu %.9f\n", got, want);
    CHECK_MSG(fabs(got - want) <= 1e-6 * fabs(want), "loss %.9g vs %.9g", got, want);
    expect("cross_entropy (logits kept)", dl, l, n, 0);
    want = cpu->cross_entropy(cpu, ref, tg, N, V, 0.25f);
    got = gpu->cross_entropy(gpu, dl, dtg, N, V, 0.25f);
    CHECK_MSG(fabs(got - want) <= 1e-6 * fabs(want), "loss with grad %.9g vs %.9g", got, want);
    expect("cross_entropy grad", dl, ref, n, 1e-5);
    free(l), free(ref);
    gpu->release(gpu, dtg), gpu->release(gpu, dl);
}

static void check_attention(int64_t B, int64_t T, int64_t H, int64_t KV, int64_t D) {
    char what[96];
    size_t nq = (size_t)(B * T * H * D), nk = (size_t)(B * T * KV * D), nl = (size_t)(B * H * T);
    float *q = rnd(nq, 1.5f), *k = rnd(nk, 1.5f), *v = rnd(nk, 1), *dout = rnd(nq, 1);
    float *ro = malloc(nq * 4), *rl = malloc(nl * 4);
    cpu->attention(cpu, ro, rl, q, k, v, B, T, T, H, KV, D, 0);
    float *dq = up(q, nq * 4), *dk = up(k, nk * 4), *dv = up(v, nk * 4), *ddo = up(dout, nq * 4);
    float *o = poisoned(nq), *lse = poisoned(nl);
    gpu->attention(gpu, o, lse, dq, dk, dv, B, T, T, H, KV, D, 0);
    snprintf(what, sizeof what, "attention B%lld T%lld H%lld/%lld D%lld", (long long)B, (long long)T,
             (long long)H, (long long)KV, (long long)D);
    expect(what, o, ro, nq, 1e-5);
    expect("  its lse", lse, rl, nl, 1e-6);
    float *rq = malloc(nq * 4), *rk = malloc(nk * 4), *rv = malloc(nk * 4);
    cpu->attention_bwd(cpu, rq, rk, rv, dout, q, k, v, ro, rl, B, T, H, KV, D);
    float *gq = poisoned(nq), *gk = poisoned(nk), *gv = poisoned(nk);
    gpu->attention_bwd(gpu, gq, gk, gv, ddo, dq, dk, dv, o, lse, B, T, H, KV, D);
    expect("  attention_bwd dq", gq, rq, nq, 1e-5);
    expect("  attention_bwd dk", gk, rk, nk, 1e-5);
    expect("  attention_bwd dv", gv, rv, nk, 1e-5);
    // decoding: Tq new rows at pos0 against a cache of S positions
    int64_t S = T + 9, Tq = 3, pos0 = T - Tq + 4;
    size_t ns = (size_t)(B * S * KV * D), nq2 = (size_t)(B * Tq * H * D);
    float *kc = rnd(ns, 1.5f), *vc = rnd(ns, 1), *q2 = rnd(nq2, 1.5f), *ro2 = malloc(nq2 * 4);
    cpu->attention(cpu, ro2, NULL, q2, kc, vc, B, Tq, S, H, KV, D, pos0);
    float *dkc = up(kc, ns * 4), *dvc = up(vc, ns * 4), *dq2 = up(q2, nq2 * 4), *o2 = poisoned(nq2);
    gpu->attention(gpu, o2, NULL, dq2, dkc, dvc, B, Tq, S, H, KV, D, pos0);
    expect("  attention at pos0 (cache)", o2, ro2, nq2, 1e-5);
    // one new row (the card's decoding kernel), with its lse
    {
        int64_t p1 = S - 3;
        size_t n1 = (size_t)(B * H * D), nl1 = (size_t)(B * H);
        float *r1 = malloc(n1 * 4), *rl1 = malloc(nl1 * 4), *o1 = poisoned(n1), *l1 = poisoned(nl1);
        float *h1 = malloc(n1 * 4); // the first row of each sequence of q2
        for (int64_t b = 0; b < B; b++) memcpy(h1 + b * H * D, q2 + b * Tq * H * D, (size_t)(H * D) * 4);
        cpu->attention(cpu, r1, rl1, h1, kc, vc, B, 1, S, H, KV, D, p1);
        float *dq1 = up(h1, n1 * 4);
        gpu->attention(gpu, o1, l1, dq1, dkc, dvc, B, 1, S, H, KV, D, p1);
        expect("  attention one row (decoding)", o1, r1, n1, 1e-5);
        expect("  its lse", l1, rl1, nl1, 1e-6);
        free(r1), free(rl1), free(h1);
        gpu->release(gpu, o1), gpu->release(gpu, l1), gpu->release(gpu, dq1);
    }
    free(q), free(k), free(v), free(dout), free(ro), free(rl), free(rq), free(rk), free(rv);
    free(kc), free(vc), free(q2), free(ro2);
    void *dev[] = {dq, dk, dv, ddo, o, lse, gq, gk, gv, dkc, dvc, dq2, o2};
    for (size_t i = 0; i < sizeof dev / sizeof *dev; i++) gpu->release(gpu, dev[i]);
}

static void test_attention(void) {
    if (!have_gpu()) SKIP("no CUDA backend: %s", why);
    setenv("LORAC_CUDA_ATT", "fp32", 1); // the float32 kernels (head_dim 64/128 would take the tensor cores)
    check_attention(2, 45, 4, 2, 64);  // GQA, T not a multiple of the tiles (dk/dv a block per head)
    check_attention(2, 520, 4, 2, 32); // GQA with enough key blocks for a block per group
    check_attention(1, 70, 2, 1, 16);  // head_dim below a warp
    check_attention(2, 33, 4, 4, 128); // no grouping, Mistral's head_dim
    check_attention(1, 20, 2, 1, 256); // the largest head_dim
    unsetenv("LORAC_CUDA_ATT");
}

/* x rounded to the nearest bf16 (ties to even), in place. */
static void round_bf16(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
        memcpy(&x[i], &u, 4);
    }
}

/* Whether two device buffers of n floats hold the same bits. */
static bool same_bits(const float *a, const float *b, size_t n) {
    float *ha = down(a, n), *hb = down(b, n);
    bool eq = memcmp(ha, hb, n * sizeof(float)) == 0;
    free(ha), free(hb);
    return eq;
}

/* The tensor-core kernels (attention_tc.cu: pos0 = 0, T >= LORAC_CUDA_ATT_MIN_T, head_dim 64/128) against
 * the CPU: forward (out, lse) with key capacity S >= T, and when S == T the backward (dq,
 * dk, dv) too, each run twice to check that the results repeat bit for bit. bf16_in:
 * the inputs are bf16 values already (so only the kernels' own roundings count); bound:
 * out/dq/dk/dv, lbound: lse. */
static void check_attention_tc(int64_t B, int64_t T, int64_t S, int64_t H, int64_t KV, int64_t D, bool bf16_in,
                               double bound, double lbound) {
    char what[128];
    size_t nq = (size_t)(B * T * H * D), nk = (size_t)(B * S * KV * D), nl = (size_t)(B * H * T);
    float *q = rnd(nq, 1.5f), *k = rnd(nk, 1.5f), *v = rnd(nk, 1), *dout = rnd(nq, 1);
    if (bf16_in) round_bf16(q, nq), round_bf16(k, nk), round_bf16(v, nk), round_bf16(dout, nq);
    float *ro = malloc(nq * 4), *rl = malloc(nl * 4);
    cpu->attention(cpu, ro, rl, q, k, v, B, T, S, H, KV, D, 0);
    float *dq = up(q, nq * 4), *dk = up(k, nk * 4), *dv = up(v, nk * 4), *ddo = up(dout, nq * 4);
    float *o = poisoned(nq), *lse = poisoned(nl), *o2 = poisoned(nq);
    gpu->attention(gpu, o, lse, dq, dk, dv, B, T, S, H, KV, D, 0);
    gpu->attention(gpu, o2, NULL, dq, dk, dv, B, T, S, H, KV, D, 0);
    snprintf(what, sizeof what, "tc attention B%lld T%lld S%lld H%lld/%lld D%lld%s%s", (long long)B, (long long)T,
             (long long)S, (long long)H, (long long)KV, (long long)D, bf16_in ? " bf16 in" : "",
             getenv("LORAC_CUDA_ATT_SMALL") ? " small" : "");
    expect(what, o, ro, nq, bound);
    expect("  its lse", lse, rl, nl, lbound);
    CHECK_MSG(same_bits(o, o2, nq), "%s: a second forward differs", what);
    float *gq = NULL, *gk = NULL, *gv = NULL, *gq2 = NULL, *gk2 = NULL, *gv2 = NULL;
    float *rq = NULL, *rk = NULL, *rv = NULL;
    if (S == T) {
        rq = malloc(nq * 4), rk = malloc(nk * 4), rv = malloc(nk * 4);
        cpu->attention_bwd(cpu, rq, rk, rv, dout, q, k, v, ro, rl, B, T, H, KV, D);
        gq = poisoned(nq), gk = poisoned(nk), gv = poisoned(nk);
        gq2 = poisoned(nq), gk2 = poisoned(nk), gv2 = poisoned(nk);
        gpu->attention_bwd(gpu, gq, gk, gv, ddo, dq, dk, dv, o, lse, B, T, H, KV, D);
        gpu->attention_bwd(gpu, gq2, gk2, gv2, ddo, dq, dk, dv, o, lse, B, T, H, KV, D);
        expect("  attention_bwd dq", gq, rq, nq, bound);
        expect("  attention_bwd dk", gk, rk, nk, bound);
        expect("  attention_bwd dv", gv, rv, nk, bound);
        CHECK_MSG(same_bits(gq, gq2, nq) && same_bits(gk, gk2, nk) && same_bits(gv, gv2, nk),
                  "%s: a second backward differs", what);
    }
    free(q), free(k), free(v), free(dout), free(ro), free(rl), free(rq), free(rk), free(rv);
    void *dev[] = {dq, dk, dv, ddo, o, lse, o2, gq, gk, gv, gq2, gk2, gv2};
    for (size_t i = 0; i < sizeof dev / sizeof *dev; i++)
        if (dev[i]) gpu->release(gpu, dev[i]);
}

/* Bounds of the tensor-core path. Its operands are bf16 (unit roundoff u = 2^-9 ≈ 2e-3)
 * with float32 accumulation and softmax. With bf16 inputs the products Q K^T and dO V^T
 * are exact up to float32 sums, and the only roundings left are P (before P V, P^T dO)
 * and dS (before dS K, dS^T Q): one relative error of at most u per term, of random sign,
 * so each output's L2-relative error is about u/sqrt(3) ≈ 1e-3; bound 1e-2 (5u) leaves
 * room for the cancellation in dP - D, while a wrong mask, head or tile index gives O(1).
 * lse is float32 arithmetic on exact scores, but the tensor cores do not round each add
 * (Hopper aligns the products to the largest exponent) and ex2.approx is good to 2^-22:
 * ~1e-6 expected, bound 1e-4. With float32 inputs the rounding of
 * q, k, v and dout adds about u per operand: 2e-2 (PyTorch's bf16 rtol is 1.6e-2), lse
 * (scores off by ~1e-3 absolute, lse ~ log T): 1e-3. */
static void attention_tc_cases(void) {
    check_attention_tc(2, 200, 200, 4, 2, 128, true, 1e-2, 1e-4);  // T not a multiple of 64, GQA, B 2
    check_attention_tc(1, 512, 512, 32, 8, 128, true, 1e-2, 1e-4); // the 7B model's heads (32/8)
    check_attention_tc(2, 1024, 1024, 4, 1, 64, true, 1e-2, 1e-4); // long, one kv head, D 64
    check_attention_tc(1, 300, 300, 8, 8, 64, false, 2e-2, 1e-3);  // float32 inputs, no grouping
    check_attention_tc(2, 150, 170, 4, 2, 64, true, 1e-2, 1e-4);   // forward into a longer cache (prefill)
    setenv("LORAC_CUDA_ATT_MIN_T", "1", 1);                         // short sequences on the tensor cores
    check_attention_tc(2, 68, 68, 32, 8, 128, true, 1e-2, 1e-4);    // the recipe's rows: 2 tiles, the 2nd partial
    check_attention_tc(3, 20, 20, 4, 2, 64, true, 1e-2, 1e-4);     // one partial tile
    check_attention_tc(1, 1, 3, 4, 1, 128, false, 2e-2, 1e-3);     // one row into a longer cache (forward)
    check_attention_tc(2, 40, 57, 4, 4, 128, false, 2e-2, 1e-3);   // into a longer cache
    unsetenv("LORAC_CUDA_ATT_MIN_T");
}

/* The cases above in both configurations: the default and the small one of cards with
 * 99 KB of shared memory a block (LORAC_CUDA_ATT_SMALL=1; the same bounds: the same
 * roundings, other tiles). */
static void test_attention_tc(void) {
    if (!have_gpu()) SKIP("no CUDA backend: %s", why);
    attention_tc_cases();
    setenv("LORAC_CUDA_ATT_SMALL", "1", 1);
    attention_tc_cases();
    unsetenv("LORAC_CUDA_ATT_SMALL");
    // LORAC_CUDA_ATT=fp32 takes the float32 kernels: the float32 bounds hold
    setenv("LORAC_CUDA_ATT", "fp32", 1);
    check_attention_tc(1, 130, 130, 4, 2, 128, false, 1e-5, 1e-6);
    unsetenv("LORAC_CUDA_ATT");
}

/* A device bf16 copy of n host floats (rounded), and the float32 values it holds (*vals). */
static void *up_bf16(const float *x, size_t n, float **vals) {
    uint16_t *h = malloc(n * 2);
    CHECK_OK(lc_from_f32(h, LC_DT_BF16, x, n));
    *vals = malloc(n * 4);
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)h[i] << 16;
        memcpy(&(*vals)[i], &u, 4);
    }
    void *d = up(h, n * 2);
    free(h);
    return d;
}

/* ->attention_bwd_rb against ->attention_bwd_b's results dq, dk, dv (on the same inputs)
 * put through ->rope_bwd_b and ->to_bf16_rows, bit for bit: into three packed tensors, and
 * into one row a token of dq | dk | dv (q/k/v's interleaved copies) with 8 values a row it
 * leaves alone; and against the CPU's ->rope_bwd of the same dq, dk within bf16 rounding. */
static void check_attention_bwd_rb(const char *what, const float *dq, const float *dk, const float *dv,
                                   const float *ddo, const void *qb, const void *kb, const void *vb, const void *o16,
                                   const float *lse, int64_t B, int64_t T, int64_t H, int64_t KV, int64_t D) {
    CHECK_MSG(gpu->attention_bwd_rb != NULL, "the CUDA backend offers no ->attention_bwd_rb");
    if (!gpu->attention_bwd_rb) return;
    size_t N = (size_t)(B * T), HD = (size_t)(H * D), KD = (size_t)(KV * D), nq = N * HD, nk = N * KD;
    float *cs = malloc(N * (size_t)D / 2 * 4), *sn = malloc(N * (size_t)D / 2 * 4);
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < D / 2; i++) {
            float a = (float)t * powf(10000.0f, -(float)(2 * i) / (float)D);
            cs[t * D / 2 + i] = cosf(a), sn[t * D / 2 + i] = sinf(a);
        }
    float *dcs = up(cs, (size_t)(T * D / 2) * 4), *dsn = up(sn, (size_t)(T * D / 2) * 4);
    // the reference: the three calls it replaces, on copies (rope_bwd_b leaves its input)
    for (int lay = 0; lay < 2; lay++) {
        size_t ld = lay ? HD + 2 * KD + 8 : 0, tot = lay ? N * ld : nq + 2 * nk;
        size_t ldq = lay ? ld : HD, ldk = lay ? ld : KD, oq = 0, ok = lay ? HD : nq, ov = lay ? HD + KD : nq + nk;
        uint16_t *h = malloc(tot * 2), *want = malloc(tot * 2);
        memset(h, 0xff, tot * 2);
        uint16_t *rw = up(h, tot * 2), *rg = up(h, tot * 2);
        gpu->rope_bwd_b(gpu, rw + oq, (int64_t)ldq, dq, dcs, dsn, B, T, H, D, 0);
        gpu->rope_bwd_b(gpu, rw + ok, (int64_t)ldk, dk, dcs, dsn, B, T, KV, D, 0);
        gpu->to_bf16_rows(gpu, rw + ov, (int64_t)ldk, dv, (int64_t)N, (int64_t)KD);
        float *sq = poisoned(nq), *sk = poisoned(nk), *sv = poisoned(nk);
        gpu->attention_bwd_rb(gpu, rg + oq, rg + ok, rg + ov, (int64_t)ldq, (int64_t)ldk, sq, sk, sv, ddo, qb, kb, vb,
                              o16, lse, dcs, dsn, B, T, H, KV, D);
        gpu->download(gpu, want, rw, tot * 2);
        gpu->download(gpu, h, rg, tot * 2);
        CHECK_OK(gpu->sync(gpu));
        CHECK_MSG(!memcmp(h, want, tot * 2), "%s: attention_bwd_rb (%s) differs from attention_bwd_b, rope_bwd_b, "
                  "to_bf16_rows", what, lay ? "interleaved rows" : "packed");
        if (!lay) { // the CPU's rotation of the same float32 dq, dk: within bf16's rounding
            float *fq = down(dq, nq), *fk = down(dk, nk), *gq = malloc(nq * 4), *gk = malloc(nk * 4);
            cpu->rope_bwd(cpu, fq, cs, sn, B, T, H, D, 0);
            cpu->rope_bwd(cpu, fk, cs, sn, B, T, KV, D, 0);
            CHECK_OK(lc_to_f32(gq, h, LC_DT_BF16, nq));
            CHECK_OK(lc_to_f32(gk, h + nq, LC_DT_BF16, nk));
            double e = fmax(rel(gq, fq, nq), rel(gk, fk, nk));
            CHECK_MSG(e < 4e-3, "%s: attention_bwd_rb's dq, dk off the CPU's rotation of them by %.2e", what, e);
            free(fq), free(fk), free(gq), free(gk);
        }
        gpu->release(gpu, rw), gpu->release(gpu, rg), gpu->release(gpu, sq), gpu->release(gpu, sk),
            gpu->release(gpu, sv);
        free(h), free(want);
    }
    printf("  %-44s attention_bwd_rb: rope_bwd_b's and to_bf16_rows' bits\n", what);
    gpu->release(gpu, dcs), gpu->release(gpu, dsn);
    free(cs), free(sn);
}

/* ->attention_b and ->attention_bwd_b (training keeps q, k, v, out as bf16) against
 * ->attention and ->attention_bwd on the same values in float32, bit for bit: the forward's
 * out is the bf16 rounding of ->attention's, its lse the same; the backward's dq, dk, dv
 * are ->attention_bwd's given out as the bf16 values. On the tensor cores both read the
 * same bf16 operands; elsewhere (LORAC_CUDA_ATT=fp32, head_dim not 64/128, short rows) the
 * bf16 ops run the float32 kernels on float32 copies. */
static void check_attention_b(int64_t B, int64_t T, int64_t H, int64_t KV, int64_t D) {
    size_t nq = (size_t)(B * T * H * D), nk = (size_t)(B * T * KV * D), nl = (size_t)(B * H * T);
    float *q0 = rnd(nq, 1.5f), *k0 = rnd(nk, 1.5f), *v0 = rnd(nk, 1), *dout = rnd(nq, 1);
    float *qv, *kv, *vv;
    void *qb = up_bf16(q0, nq, &qv), *kb = up_bf16(k0, nk, &kv), *vb = up_bf16(v0, nk, &vv);
    float *dq = up(qv, nq * 4), *dk = up(kv, nk * 4), *dv = up(vv, nk * 4), *ddo = up(dout, nq * 4);
    float *o = poisoned(nq), *lse = poisoned(nl), *lse16 = poisoned(nl);
    void *o16 = gpu->alloc(gpu, nq * 2);
    gpu->attention(gpu, o, lse, dq, dk, dv, B, T, T, H, KV, D, 0);
    gpu->attention_b(gpu, o16, lse16, qb, kb, vb, B, T, H, KV, D);
    float *ho = down(o, nq);
    uint16_t *want = malloc(nq * 2), *got = malloc(nq * 2);
    CHECK_OK(lc_from_f32(want, LC_DT_BF16, ho, nq));
    gpu->download(gpu, got, o16, nq * 2);
    char what[128];
    snprintf(what, sizeof what, "attention_b B%lld T%lld H%lld/%lld D%lld%s", (long long)B, (long long)T, (long long)H,
             (long long)KV, (long long)D, getenv("LORAC_CUDA_ATT") ? " (fp32 kernels)" : "");
    CHECK_MSG(!memcmp(got, want, nq * 2), "%s: out is not ->attention's rounded", what);
    CHECK_MSG(same_bits(lse, lse16, nl), "%s: lse differs from ->attention's", what);
    // the backward, given out as its bf16 values
    float *ov = malloc(nq * 4);
    for (size_t i = 0; i < nq; i++) {
        uint32_t u = (uint32_t)got[i] << 16;
        memcpy(&ov[i], &u, 4);
    }
    float *dov = up(ov, nq * 4);
    float *gq = poisoned(nq), *gk = poisoned(nk), *gv = poisoned(nk);
    float *bq = poisoned(nq), *bk = poisoned(nk), *bv = poisoned(nk);
    gpu->attention_bwd(gpu, gq, gk, gv, ddo, dq, dk, dv, dov, lse, B, T, H, KV, D);
    gpu->attention_bwd_b(gpu, bq, bk, bv, ddo, qb, kb, vb, o16, lse16, B, T, H, KV, D);
    CHECK_MSG(same_bits(gq, bq, nq) && same_bits(gk, bk, nk) && same_bits(gv, bv, nk),
              "%s: attention_bwd_b differs from ->attention_bwd on the same values", what);
    printf("  %-44s ->attention's bits (out rounded), backward too\n", what);
    check_attention_bwd_rb(what, bq, bk, bv, ddo, qb, kb, vb, o16, lse16, B, T, H, KV, D);
    free(q0), free(k0), free(v0), free(dout), free(qv), free(kv), free(vv), free(ho), free(want), free(got), free(ov);
    void *dev[] = {qb, kb, vb, dq, dk, dv, ddo, o, lse, lse16, o16, dov, gq, gk, gv, bq, bk, bv};
    for (size_t i = 0; i < sizeof dev / sizeof *dev; i++) gpu->release(gpu, dev[i]);
}

static void test_attention_b(void) {
    if (!have_gpu()) SKIP("no CUDA backend: %s", why);
    CHECK_MSG(gpu->attention_b && gpu->attention_bwd_b, "the CUDA backend offers no ->attention_b");
    check_attention_b(1, 512, 32, 8, 128); // the 7B model's heads, tensor cores
    check_attention_b(2, 200, 4, 2, 64);   // partial tiles, GQA, D 64
    check_attention_b(2, 68, 8, 2, 128);   // the recipe's rows
    check_attention_b(3, 9, 4, 2, 64);     // shorter than the tensor cores take: float32 copies
    check_attention_b(2, 45, 4, 2, 32);    // head_dim 32: float32 copies
    setenv("LORAC_CUDA_ATT_SMALL", "1", 1); // the small configuration's tiles
    check_attention_b(2, 200, 4, 2, 128);
    unsetenv("LORAC_CUDA_ATT_SMALL");
    setenv("LORAC_CUDA_ATT", "fp32", 1);
    check_attention_b(2, 130, 4, 2, 128);
    unsetenv("LORAC_CUDA_ATT");
}

/* ->weight_n: three bf16 weights of one column count laid out one after another, so that
 * ->matmul_dx_b over the view of all their rows with dy's three parts interleaved a row at a
 * time is the sum of the three products (against the CPU's, float32 over the same values);
 * it declines float32 weights and unequal column counts. And ->to_bf16_rows: the rounding
 * into rows of a wider stride, the gaps untouched. */
static void test_weight_n(void) {
    if (!have_gpu()) SKIP("no CUDA backend: %s", why);
    CHECK_MSG(gpu->weight_n && gpu->to_bf16_rows, "the CUDA backend offers no ->weight_n / ->to_bf16_rows");
    if (!gpu->weight_n || !gpu->to_bf16_rows) return;
    int64_t rows[3] = {96, 32, 32}, I = 72, N = 40, O = 160; // q, k, v-like: rows 96 + 32 + 32
    void *host[3];
    float *f[3];
    lc_wt w[3], *wp[3] = {&w[0], &w[1], &w[2]};
    for (int i = 0; i < 3; i++) w[i] = make_wt(LC_DT_BF16, rows[i], I, &host[i], &f[i]);
    CHECK_EQ_INT(gpu->weight_n(gpu, 3, wp), 0);
    CHECK_MSG((char *)w[1].data == (char *)w[0].data + rows[0] * I * 2 &&
                  (char *)w[2].data == (char *)w[1].data + rows[1] * I * 2,
              "weight_n: the weights are not one after another");
    lc_wt cat = w[0];
    cat.rows = O;
    // dy's three parts (N, rows[i]) at bf16 values, interleaved into rows of O
    float *dy[3], *ref = malloc((size_t)(N * I) * 4), *part = malloc((size_t)(N * I) * 4);
    uint16_t *dyi = malloc((size_t)(N * O) * 2);
    for (int i = 0, c0 = 0; i < 3; c0 += (int)rows[i], i++) {
        dy[i] = rnd((size_t)(N * rows[i]), 1);
        round_bf16(dy[i], (size_t)(N * rows[i]));
        float *ddy = up(dy[i], (size_t)(N * rows[i]) * 4);
        void *rb = gpu->alloc(gpu, (size_t)(N * O) * 2);
        gpu->to_bf16_rows(gpu, rb, O, ddy, N, rows[i]); // only this part's columns of each row
        uint16_t *got = malloc((size_t)(N * O) * 2);
        gpu->download(gpu, got, rb, (size_t)(N * O) * 2);
        CHECK_OK(gpu->sync(gpu));
        for (int64_t r = 0; r < N; r++) memcpy(dyi + r * O + c0, got + r * O, (size_t)rows[i] * 2);
        uint16_t *want = malloc((size_t)(N * rows[i]) * 2);
        CHECK_OK(lc_from_f32(want, LC_DT_BF16, dy[i], (size_t)(N * rows[i])));
        bool same = true;
        for (int64_t r = 0; r < N; r++) same &= !memcmp(got + r * O, want + r * rows[i], (size_t)rows[i] * 2);
        CHECK_MSG(same, "to_bf16_rows: rows of stride %lld differ from the rounding", (long long)O);
        lc_wt wf = {f[i], LC_DT_F32, rows[i], I, NULL, 0};
        cpu->matmul_dx(cpu, i ? part : ref, dy[i], &wf, N, false);
        if (i)
            for (int64_t j = 0; j < N * I; j++) ref[j] += part[j];
        gpu->release(gpu, ddy), gpu->release(gpu, rb);
        free(got), free(want);
    }
    void *db = up(dyi, (size_t)(N * O) * 2);
    float *dx = poisoned((size_t)(N * I));
    CHECK_MSG(gpu->matmul_dx_b(gpu, dx, db, &cat, N, false), "matmul_dx_b declined the joined weights");
    expect("weight_n: one product over q|k|v", dx, ref, (size_t)(N * I), 1e-5);
    // declined: float32 weights, unequal column counts (left for ->weight)
    void *ha, *hb, *hc;
    float *fa, *fb, *fc;
    lc_wt a = make_wt(LC_DT_F32, 8, 16, &ha, &fa), b = make_wt(LC_DT_BF16, 8, 16, &hb, &fb);
    lc_wt c = make_wt(LC_DT_BF16, 8, 24, &hc, &fc);
    lc_wt *p1[2] = {&b, &a}, *p2[2] = {&b, &c};
    CHECK_EQ_INT(gpu->weight_n(gpu, 2, p1), 1);
    CHECK_EQ_INT(gpu->weight_n(gpu, 2, p2), 1);
    CHECK_MSG(a.data == ha && b.data == hb && c.data == hc, "weight_n declined but moved a weight");
    printf("  %-28s q|k|v side by side, one product = the three (CPU); declines float32, unequal columns\n",
           "weight_n");
    free(ha), free(hb), free(hc), free(fa), free(fb), free(fc);
    for (int i = 0; i < 3; i++) free(host[i]), free(f[i]), free(dy[i]);
    free(ref), free(part), free(dyi);
    gpu->release(gpu, db), gpu->release(gpu, dx);
}

/* ->weight_room: q|k|v-like weights laid out by ->weight_n, and one weight by ->weight,
 * moved with spare rows after them: the rows kept (the joined product the same bits), the
 * spare rows zero; ->to_bf16_t writes adapters' a^T rounded into them (against the host's
 * rounding, the row's tail untouched) and ->matmul_dx_b over rows + spare with du beside
 * dy in each row is dy W + du a^T (the CPU's, float32 over the bf16 values). Declines
 * float32 weights and a weight that is not its allocation's start, changing nothing. */
static void check_room(int n, const int64_t *rows, int64_t I, int64_t N, int r) {
    void *host[3];
    float *f[3];
    lc_wt w[3], *wp[3] = {&w[0], &w[1], &w[2]};
    int64_t O = 0, R = (int64_t)n * r;
    for (int i = 0; i < n; i++) w[i] = make_wt(LC_DT_BF16, rows[i], I, &host[i], &f[i]), O += rows[i];
    if (n > 1) CHECK_EQ_INT(gpu->weight_n(gpu, n, wp), 0);
    else CHECK_OK(gpu->weight(gpu, &w[0]));
    lc_wt cat = w[0];
    cat.rows = O;
    float *dy = rnd((size_t)(N * O), 1), *ref = malloc((size_t)(N * I) * 4), *part = malloc((size_t)(N * I) * 4);
    round_bf16(dy, (size_t)(N * O));
    uint16_t *dyb = malloc((size_t)(N * (O + R)) * 2), *packed = malloc((size_t)(N * O) * 2);
    CHECK_OK(lc_from_f32(packed, LC_DT_BF16, dy, (size_t)(N * O)));
    void *dp = up(packed, (size_t)(N * O) * 2);
    float *dx0 = poisoned((size_t)(N * I)), *dx1 = poisoned((size_t)(N * I));
    CHECK_MSG(gpu->matmul_dx_b(gpu, dx0, dp, &cat, N, false), "matmul_dx_b declined the weight");
    const void *before = w[0].data;
    int64_t ex[3] = {0, 0, 0};
    ex[n - 1] = R; // after the last (q|k|v stay one after another)
    CHECK_EQ_INT(gpu->weight_room(gpu, n, wp, ex, NULL), 0);
    CHECK_MSG(w[0].data != before, "weight_room: the weight did not move");
    for (int i = 1; i < n; i++)
        CHECK_MSG((char *)w[i].data == (char *)w[i - 1].data + rows[i - 1] * I * 2,
                  "weight_room: the weights are no longer one after another");
    cat.data = w[0].data;
    CHECK_MSG(gpu->matmul_dx_b(gpu, dx1, dp, &cat, N, false), "matmul_dx_b declined the moved weight");
    float *h0 = down(dx0, (size_t)(N * I)), *h1 = down(dx1, (size_t)(N * I));
    CHECK_MSG(!memcmp(h0, h1, (size_t)(N * I) * 4), "weight_room: the product over the moved rows differs");
    uint16_t *sp = malloc((size_t)(R * I) * 2);
    gpu->download(gpu, sp, (const uint16_t *)w[0].data + O * I, (size_t)(R * I) * 2);
    CHECK_OK(gpu->sync(gpu));
    bool zero = true;
    for (int64_t j = 0; j < R * I; j++) zero &= sp[j] == 0;
    CHECK_MSG(zero, "weight_room: the spare rows are not zero");
    // the adapters: a (I, r) each, du (N, r) each beside dy in rows of O + R
    float *du = rnd((size_t)(N * R), 1), *wf = malloc((size_t)((O + R) * I) * 4);
    round_bf16(du, (size_t)(N * R));
    for (int i = 0, o = 0; i < n; o += (int)rows[i], i++) memcpy(wf + o * I, f[i], (size_t)(rows[i] * I) * 4);
    for (int64_t t = 0; t < N; t++) {
        CHECK_OK(lc_from_f32(dyb + t * (O + R), LC_DT_BF16, dy + t * O, (size_t)O));
        CHECK_OK(lc_from_f32(dyb + t * (O + R) + O, LC_DT_BF16, du + t * R, (size_t)R));
    }
    for (int i = 0; i < n; i++) {
        float *a = rnd((size_t)(I * r), 0.3f);
        float *da = up(a, (size_t)(I * r) * 4);
        gpu->to_bf16_t(gpu, (uint16_t *)w[0].data + (O + i * r) * I, I, da, I, r, 1.0f);
        round_bf16(a, (size_t)(I * r));
        for (int64_t k = 0; k < r; k++)
            for (int64_t j = 0; j < I; j++) wf[(O + i * r + k) * I + j] = a[j * r + k];
        gpu->release(gpu, da), free(a);
    }
    gpu->download(gpu, sp, (const uint16_t *)w[0].data + O * I, (size_t)(R * I) * 2);
    CHECK_OK(gpu->sync(gpu));
    uint16_t *want = malloc((size_t)(R * I) * 2);
    CHECK_OK(lc_from_f32(want, LC_DT_BF16, wf + O * I, (size_t)(R * I)));
    CHECK_MSG(!memcmp(sp, want, (size_t)(R * I) * 2), "to_bf16_t: a^T's rows differ from the rounding");
    float *dyw = malloc((size_t)(N * (O + R)) * 4);
    for (int64_t t = 0; t < N; t++)
        memcpy(dyw + t * (O + R), dy + t * O, (size_t)O * 4), memcpy(dyw + t * (O + R) + O, du + t * R, (size_t)R * 4);
    lc_wt whole = {wf, LC_DT_F32, O + R, I, NULL, 0};
    cpu->matmul_dx(cpu, ref, dyw, &whole, N, false);
    void *db = up(dyb, (size_t)(N * (O + R)) * 2);
    lc_wt fold = cat;
    fold.rows = O + R;
    float *dx2 = poisoned((size_t)(N * I));
    CHECK_MSG(gpu->matmul_dx_b(gpu, dx2, db, &fold, N, false), "matmul_dx_b declined the folded view");
    char what[96];
    snprintf(what, sizeof what, "room: [dy | du] [W ; a^T] %d×", n);
    expect(what, dx2, ref, (size_t)(N * I), 1e-5);
    if (n > 1) { // not an allocation's start: declined, unchanged
        const void *d1 = w[1].data;
        lc_wt *p1 = &w[1];
        int64_t e1 = r;
        CHECK_EQ_INT(gpu->weight_room(gpu, 1, &p1, &e1, NULL), 1);
        CHECK_MSG(w[1].data == d1, "weight_room declined but moved a weight");
    }
    for (int i = 0; i < n; i++) free(host[i]), free(f[i]);
    free(dy), free(ref), free(part), free(dyb), free(packed), free(h0), free(h1), free(sp), free(du), free(wf);
    free(want), free(dyw);
    gpu->release(gpu, dp), gpu->release(gpu, dx0), gpu->release(gpu, dx1), gpu->release(gpu, dx2);
    gpu->release(gpu, db);
}

/* bf16 bits (n) as float32 values. */
static float *bf16_vals(const uint16_t *h, size_t n) {
    float *f = malloc((n ? n : 1) * 4);
    lc_to_f32(f, h, LC_DT_BF16, n);
    return f;
}

/* ->weight_room with spare columns (xcols): two gate/up-like weights (O, I), each moved with
 * 2r zeroed columns a row (row stride I + 2r); the rows kept and the spare columns zero;
 * ->to_bf16_t writes s b^T into them (the host's rounding of s·b, the rest untouched); then
 * ->matmul_n_bo over [x | u] (xk = 2r) against the CPU's float32 product of the same bf16
 * values, [x | u] [W | v]^T; and the single ops reading the moved weights at their row
 * stride — ->matmul at 3 rows (the GEMV) and at 40, ->matmul_dx_b, ->matmul_n_bo without
 * xk, ->merge_lora — against the same ops over unmoved copies (the GEMV and merge bit for
 * bit; cuBLASLt may pick another kernel for another row stride: within 1e-6). A weight
 * joined to others (->weight_n's) is declined with columns, unchanged. */
static void check_cols(int64_t O, int64_t I, int64_t N, int r) {
    void *host[2], *hc[2];
    float *f[2], *fc[2];
    lc_wt w[2], c[2], *wp[2] = {&w[0], &w[1]};
    int64_t R = 2 * r, ld = I + R, ex[2] = {0, 0}, xc[2] = {R, R};
    for (int i = 0; i < 2; i++) {
        w[i] = make_wt(LC_DT_BF16, O, I, &host[i], &f[i]);
        c[i] = w[i], hc[i] = NULL, fc[i] = NULL;
        CHECK_OK(gpu->weight(gpu, &w[i]));
        CHECK_OK(gpu->weight(gpu, &c[i])); // the unmoved copy
    }
    CHECK_EQ_INT(gpu->weight_room(gpu, 2, wp, ex, xc), 0);
    bool kept = true, zero = true;
    uint16_t *row = malloc((size_t)(O * ld) * 2);
    for (int i = 0; i < 2; i++) {
        CHECK_MSG(w[i].ld == ld && lc_wt_ld(&w[i]) == ld && w[i].cols == I && w[i].rows == O,
                  "weight_room: row stride %lld (want %lld)", (long long)w[i].ld, (long long)ld);
        gpu->download(gpu, row, w[i].data, (size_t)(O * ld) * 2);
        CHECK_OK(gpu->sync(gpu));
        for (int64_t o = 0; o < O; o++) {
            kept &= !memcmp(row + o * ld, (const uint16_t *)host[i] + o * I, (size_t)I * 2);
            for (int64_t j = I; j < ld; j++) zero &= row[o * ld + j] == 0;
        }
    }
    CHECK_MSG(kept && zero, "weight_room with columns: rows %s, spare columns %s", kept ? "kept" : "changed",
              zero ? "zero" : "not zero");
    // s b^T: weight 0's in its first r spare columns, weight 1's in its last r
    float s = 0.75f, *b[2], *v = calloc((size_t)(2 * O * R), 4); // v (2 O, R): the spare columns' values
    for (int i = 0; i < 2; i++) {
        b[i] = rnd((size_t)(r * O), 0.4f);
        float *db = up(b[i], (size_t)(r * O) * 4);
        gpu->to_bf16_t(gpu, (uint16_t *)w[i].data + I + i * r, ld, db, r, O, s);
        for (int64_t k = 0; k < r; k++)
            for (int64_t o = 0; o < O; o++) v[(i * O + o) * R + i * r + k] = s * b[i][k * O + o];
        gpu->release(gpu, db);
    }
    round_bf16(v, (size_t)(2 * O * R));
    bool cols = true;
    for (int i = 0; i < 2; i++) {
        gpu->download(gpu, row, w[i].data, (size_t)(O * ld) * 2);
        CHECK_OK(gpu->sync(gpu));
        float *rv = bf16_vals(row, (size_t)(O * ld));
        for (int64_t o = 0; o < O; o++) {
            cols &= !memcmp(rv + o * ld, f[i] + o * I, (size_t)I * 4);
            cols &= !memcmp(rv + o * ld + I, v + (i * O + o) * R, (size_t)R * 4);
        }
        free(rv);
    }
    CHECK_MSG(cols, "to_bf16_t: s b^T's columns differ from the host's rounding, or the row changed");
    // [x | u] (N, I + R) at bf16 values; the CPU's product over [W | v] in float32
    float *xu = rnd((size_t)(N * ld), 1), *wv = malloc((size_t)(2 * O * ld) * 4), *ref = malloc((size_t)(2 * N * O) * 4);
    round_bf16(xu, (size_t)(N * ld));
    for (int i = 0; i < 2; i++)
        for (int64_t o = 0; o < O; o++)
            memcpy(wv + (i * O + o) * ld, f[i] + o * I, (size_t)I * 4),
                memcpy(wv + (i * O + o) * ld + I, v + (i * O + o) * R, (size_t)R * 4);
    lc_wt whole = {wv, LC_DT_F32, 2 * O, ld, NULL, 0};
    float *both = malloc((size_t)(N * 2 * O) * 4);
    cpu->matmul(cpu, both, xu, &whole, NULL, N, false);
    for (int64_t t = 0; t < N; t++)
        for (int i = 0; i < 2; i++) memcpy(ref + (i * N + t) * O, both + t * 2 * O + i * O, (size_t)O * 4);
    uint16_t *xb = malloc((size_t)(N * ld) * 2);
    CHECK_OK(lc_from_f32(xb, LC_DT_BF16, xu, (size_t)(N * ld)));
    void *dxb = up(xb, (size_t)(N * ld) * 2), *ob[2];
    for (int i = 0; i < 2; i++) ob[i] = gpu->alloc(gpu, (size_t)(N * O) * 2);
    const lc_wt *cw[2] = {&w[0], &w[1]}, *cc[2] = {&c[0], &c[1]};
    CHECK_MSG(gpu->matmul_n_bo(gpu, 2, ob, NULL, dxb, cw, N, R), "matmul_n_bo declined xk %lld", (long long)R);
    CHECK_MSG(!gpu->matmul_n_bo(gpu, 2, ob, NULL, dxb, cc, N, R), "matmul_n_bo took xk over weights without room");
    double emax = 0;
    for (int i = 0; i < 2; i++) {
        uint16_t *h = malloc((size_t)(N * O) * 2);
        gpu->download(gpu, h, ob[i], (size_t)(N * O) * 2);
        CHECK_OK(gpu->sync(gpu));
        float *hv = bf16_vals(h, (size_t)(N * O));
        double e = rel(hv, ref + i * N * O, (size_t)(N * O));
        emax = e > emax ? e : emax;
        free(h), free(hv);
    }
    CHECK_MSG(emax <= 4e-3, "matmul_n_bo [x | u] [W | v]^T: rel err %.3e from the CPU (bound 4e-3: bf16 out)", emax);
    // the single ops at the row stride, against the unmoved copies
    float *x = rnd((size_t)(N * I), 1), *dy = rnd((size_t)(N * O), 1);
    round_bf16(dy, (size_t)(N * O));
    float *dxd = up(x, (size_t)(N * I) * 4);
    uint16_t *dyh = malloc((size_t)(N * O) * 2);
    CHECK_OK(lc_from_f32(dyh, LC_DT_BF16, dy, (size_t)(N * O)));
    void *dyd = up(dyh, (size_t)(N * O) * 2);
    double e2 = 0, e3 = 0;
    bool gemv = true;
    for (int k = 0; k < 3; k++) {
        int64_t n = k == 0 ? 3 : N, m = k == 2 ? N * I : n * O;
        float *p = poisoned((size_t)m), *q = poisoned((size_t)m);
        if (k < 2) gpu->matmul(gpu, p, dxd, &w[0], NULL, n, false), gpu->matmul(gpu, q, dxd, &c[0], NULL, n, false);
        else gpu->matmul_dx_b(gpu, p, dyd, &w[1], N, false), gpu->matmul_dx_b(gpu, q, dyd, &c[1], N, false);
        float *hp = down(p, (size_t)m), *hq = down(q, (size_t)m);
        double e = rel(hp, hq, (size_t)m);
        if (k == 0) gemv = !memcmp(hp, hq, (size_t)m * 4);
        else if (k == 1) e2 = e;
        else e3 = e;
        free(hp), free(hq);
        gpu->release(gpu, p), gpu->release(gpu, q);
    }
    CHECK_MSG(gemv, "matmul at 3 rows (GEMV): the moved weight's result differs from the unmoved's bits");
    CHECK_MSG(e2 <= 1e-6 && e3 <= 1e-6, "matmul %.2e, matmul_dx_b %.2e from the unmoved weights' (bound 1e-6)", e2, e3);
    void *o1[2], *o2[2];
    for (int i = 0; i < 2; i++) o1[i] = gpu->alloc(gpu, (size_t)(N * O) * 2), o2[i] = gpu->alloc(gpu, (size_t)(N * O) * 2);
    CHECK(gpu->matmul_n_bo(gpu, 2, o1, dxd, NULL, cw, N, 0) && gpu->matmul_n_bo(gpu, 2, o2, dxd, NULL, cc, N, 0));
    double e4 = 0;
    for (int i = 0; i < 2; i++) {
        uint16_t *h1 = malloc((size_t)(N * O) * 2), *h2 = malloc((size_t)(N * O) * 2);
        gpu->download(gpu, h1, o1[i], (size_t)(N * O) * 2), gpu->download(gpu, h2, o2[i], (size_t)(N * O) * 2);
        CHECK_OK(gpu->sync(gpu));
        float *v1 = bf16_vals(h1, (size_t)(N * O)), *v2 = bf16_vals(h2, (size_t)(N * O));
        double e = rel(v1, v2, (size_t)(N * O));
        e4 = e > e4 ? e : e4;
        free(h1), free(h2), free(v1), free(v2);
    }
    CHECK_MSG(e4 <= 4e-3, "matmul_n_bo without xk: rel err %.2e from the unmoved weights' (bound 4e-3)", e4);
    // merge at the row stride: the row's values as merging into the unmoved copy, the spare
    // columns untouched
    bool merged = true;
    if (gpu->merge_lora) {
        float *a = rnd((size_t)(I * r), 0.3f), *bb = rnd((size_t)(r * O), 0.3f);
        float *ha = up(a, (size_t)(I * r) * 4), *hb = up(bb, (size_t)(r * O) * 4);
        CHECK_OK(gpu->merge_lora(gpu, &w[0], ha, hb, r, 0.5f));
        CHECK_OK(gpu->merge_lora(gpu, &c[0], ha, hb, r, 0.5f));
        uint16_t *h2 = malloc((size_t)(O * I) * 2);
        gpu->download(gpu, row, w[0].data, (size_t)(O * ld) * 2), gpu->download(gpu, h2, c[0].data, (size_t)(O * I) * 2);
        CHECK_OK(gpu->sync(gpu));
        float *rv = bf16_vals(row, (size_t)(O * ld));
        for (int64_t o = 0; o < O; o++) {
            merged &= !memcmp(row + o * ld, h2 + o * I, (size_t)I * 2);
            merged &= !memcmp(rv + o * ld + I, v + o * R, (size_t)R * 4);
        }
        free(rv), free(h2), free(a), free(bb);
        gpu->release(gpu, ha), gpu->release(gpu, hb);
        CHECK_MSG(merged, "merge_lora at a row stride: values differ from the unmoved weight's, or a spare column changed");
    }
    printf("  %-28s %lld x %lld + %lld columns: rows kept, spare columns zero, s b^T rounded into them; [x | u] "
           "[W | v]^T rel err %.2e (CPU); GEMV the same bits, matmul %.1e, matmul_dx_b %.1e, bf16 out %.1e%s\n",
           "weight_room (columns)", (long long)O, (long long)I, (long long)R, emax, e2, e3, e4,
           gpu->merge_lora ? ", merge the same bits" : "");
    // joined weights take no columns
    void *jh[2];
    float *jf[2];
    lc_wt j[2], *jp[2] = {&j[0], &j[1]};
    for (int i = 0; i < 2; i++) j[i] = make_wt(LC_DT_BF16, 16, 32, &jh[i], &jf[i]);
    CHECK_EQ_INT(gpu->weight_n(gpu, 2, jp), 0);
    const void *j0 = j[0].data;
    int64_t jx[2] = {0, 0}, jc[2] = {0, 8};
    CHECK_EQ_INT(gpu->weight_room(gpu, 2, jp, jx, jc), 1);
    CHECK_MSG(j[0].data == j0 && !j[1].ld, "weight_room declined columns on a joined weight but changed it");
    for (int i = 0; i < 2; i++) free(jh[i]), free(jf[i]), free(host[i]), free(f[i]), free(b[i]);
    for (int i = 0; i < 2; i++) gpu->release(gpu, ob[i]), gpu->release(gpu, o1[i]), gpu->release(gpu, o2[i]);
    free(row), free(v), free(xu), free(wv), free(ref), free(both), free(xb), free(x), free(dy), free(dyh);
    gpu->release(gpu, dxb), gpu->release(gpu, dxd), gpu->release(gpu, dyd);
    (void)hc, (void)fc;
}

static void test_weight_room(void) {
    if (!have_gpu()) SKIP("no CUDA backend: %s", why);
    CHECK_MSG(gpu->weight_room && gpu->to_bf16_t, "the CUDA backend offers no ->weight_room / ->to_bf16_t");
    if (!gpu->weight_room || !gpu->to_bf16_t) return;
    int64_t qkv[3] = {96, 32, 32}, o[1] = {72}, odd[1] = {40};
    check_room(3, qkv, 72, 40, 16);
    check_room(1, o, 72, 40, 16);
    check_room(1, odd, 100, 33, 8); // rows and columns not multiples of 32
    check_cols(96, 72, 40, 8);
    check_cols(200, 64, 300, 16); // many rows: cuBLASLt's kernels
    void *ha;
    float *fa;
    lc_wt a = make_wt(LC_DT_F32, 8, 16, &ha, &fa), *pa = &a;
    CHECK_OK(gpu->weight(gpu, &a));
    const void *da = a.data;
    int64_t e4 = 4;
    CHECK_EQ_INT(gpu->weight_room(gpu, 1, &pa, &e4, NULL), 1);
    CHECK_MSG(a.data == da, "weight_room declined a float32 weight but moved it");
    // a block's group in one allocation: q|k|v (->weight_n), o and down (->weight each, other
    // column counts, odd sizes), rooms after v, o and down: every weight's bytes kept, q|k|v
    // still one after another, o and down at 256-byte offsets, the spare rows zero
    int64_t gr[5] = {24, 8, 8, 40, 40}, gc[5] = {40, 40, 40, 24, 72}, gx[5] = {0, 0, 6, 2, 3};
    void *gh[5];
    float *gf[5];
    lc_wt g[5], *gp[5];
    for (int i = 0; i < 5; i++) g[i] = make_wt(LC_DT_BF16, gr[i], gc[i], &gh[i], &gf[i]), gp[i] = &g[i];
    CHECK_EQ_INT(gpu->weight_n(gpu, 3, gp), 0);
    CHECK_OK(gpu->weight(gpu, &g[3]));
    CHECK_OK(gpu->weight(gpu, &g[4]));
    CHECK_EQ_INT(gpu->weight_room(gpu, 5, gp, gx, NULL), 0);
    CHECK_MSG((char *)g[1].data == (char *)g[0].data + gr[0] * gc[0] * 2 &&
                  (char *)g[2].data == (char *)g[1].data + gr[1] * gc[1] * 2,
              "weight_room: q|k|v no longer one after another");
    CHECK_MSG(!((uintptr_t)g[3].data & 255) && !((uintptr_t)g[4].data & 255) &&
                  (char *)g[3].data >= (char *)g[2].data + (gr[2] + gx[2]) * gc[2] * 2 &&
                  (char *)g[4].data >= (char *)g[3].data + (gr[3] + gx[3]) * gc[3] * 2,
              "weight_room: o and down not at 256-byte offsets after the rooms before them");
    bool kept = true, zero = true;
    for (int i = 0; i < 5; i++) {
        size_t nb = (size_t)(gr[i] * gc[i]) * 2, ne = (size_t)(gx[i] * gc[i]) * 2;
        uint8_t *h = malloc(nb + ne + 1);
        gpu->download(gpu, h, g[i].data, nb + ne);
        CHECK_OK(gpu->sync(gpu));
        kept &= !memcmp(h, gh[i], nb);
        for (size_t j = nb; j < nb + ne; j++) zero &= h[j] == 0;
        free(h);
    }
    CHECK_MSG(kept, "weight_room: a weight's bytes changed in the move");
    CHECK_MSG(zero, "weight_room: spare rows not zero");
    printf("  %-28s rows kept, spare rows zero, a^T rounded into them, one product = dy W + du a^T (CPU); "
           "q|k|v, o and down moved as one; declines float32 and inner weights\n",
           "weight_room, to_bf16_t");
    for (int i = 0; i < 5; i++) free(gh[i]), free(gf[i]);
    free(ha), free(fa);
}

/* ->lora_dy: n adapters of rank r over N rows, their bf16 dy side by side in rows of ldy
 * values (q/k/v's interleaved dq|dk|dv, with spare columns after) or each its own, against
 * the CPU in float64 over the same bf16 values (u and b rounded as ->gemm_b rounds them):
 * gb = s u^T dy and du = s dy b^T into NaN-poisoned outputs, du in rows wider than r
 * (the columns past r untouched); then the same call again, the same bits. */
static void check_lora_dy(int n, const int64_t *o, int64_t N, int64_t r, bool joined) {
    int64_t ldy = 0, off[LC_GEMM_N_MAX], ldu = r + 6;
    for (int i = 0; i < n; i++) off[i] = joined ? ldy : 0, ldy = joined ? ldy + o[i] : ldy;
    if (joined) ldy += 8; // spare columns, as the folded input-gradient products leave
    float s = 1.75f;
    uint16_t *yh[LC_GEMM_N_MAX] = {0};
    float *yv[LC_GEMM_N_MAX], *uv[LC_GEMM_N_MAX], *bv[LC_GEMM_N_MAX], *ur[LC_GEMM_N_MAX], *br[LC_GEMM_N_MAX];
    void *dy[LC_GEMM_N_MAX];
    float *du[LC_GEMM_N_MAX], *dgb[LC_GEMM_N_MAX], *ddu[LC_GEMM_N_MAX], *dgb2[LC_GEMM_N_MAX], *ddu2[LC_GEMM_N_MAX];
    lc_dy_args a[LC_GEMM_N_MAX];
    for (int i = 0; i < n; i++) {
        int64_t ly = joined ? ldy : o[i];
        size_t ny = (size_t)(N * ly);
        if (!joined || i == 0) {
            float *y = rnd(ny, 1);
            yh[i] = malloc(ny * 2);
            CHECK_OK(lc_from_f32(yh[i], LC_DT_BF16, y, ny));
            free(y);
            dy[i] = up(yh[i], ny * 2);
        } else {
            dy[i] = (uint16_t *)dy[0] + off[i];
        }
        yv[i] = bf16_vals(joined ? yh[0] : yh[i], ny);
        uv[i] = rnd((size_t)(N * r), 1), bv[i] = rnd((size_t)(r * o[i]), 1);
        ur[i] = malloc((size_t)(N * r) * 4), br[i] = malloc((size_t)(r * o[i]) * 4);
        memcpy(ur[i], uv[i], (size_t)(N * r) * 4), memcpy(br[i], bv[i], (size_t)(r * o[i]) * 4);
        round_bf16(ur[i], (size_t)(N * r)), round_bf16(br[i], (size_t)(r * o[i]));
        du[i] = up(uv[i], (size_t)(N * r) * 4);
        float *db = up(bv[i], (size_t)(r * o[i]) * 4);
        dgb[i] = poisoned((size_t)(r * o[i])), ddu[i] = poisoned((size_t)(N * ldu));
        lc_dy_args d = {dy[i], ly, o[i], du[i], db, dgb[i], ddu[i], ldu};
        a[i] = d;
    }
    bool took = gpu->lora_dy(gpu, n, N, r, s, a);
    CHECK_MSG(took, "lora_dy declined %d products of rank %lld over %lld rows", n, (long long)r, (long long)N);
    for (int i = 0; i < n && took; i++) {
        int64_t ly = joined ? ldy : o[i], c0 = joined ? off[i] : 0;
        float *gref = malloc((size_t)(r * o[i]) * 4), *dref = calloc((size_t)(N * ldu), 4); // du's rows of ldu
        for (int64_t k = 0; k < r; k++)
            for (int64_t j = 0; j < o[i]; j++) {
                double t = 0;
                for (int64_t m = 0; m < N; m++) t += (double)ur[i][m * r + k] * yv[i][m * ly + c0 + j];
                gref[k * o[i] + j] = (float)(s * t);
            }
        for (int64_t m = 0; m < N; m++)
            for (int64_t k = 0; k < r; k++) {
                double t = 0;
                for (int64_t j = 0; j < o[i]; j++) t += (double)yv[i][m * ly + c0 + j] * br[i][k * o[i] + j];
                dref[m * ldu + k] = (float)(s * t);
            }
        float *g = down(dgb[i], (size_t)(r * o[i])), *d = down(ddu[i], (size_t)(N * ldu));
        double eg = rel(g, gref, (size_t)(r * o[i])), ed = rel_rows(d, dref, N, r, ldu);
        bool pad = true; // du's columns past r: still the poison
        for (int64_t m = 0; m < N; m++)
            for (int64_t k = r; k < ldu; k++) pad &= isnan(d[m * ldu + k]);
        printf("  lora_dy %d×(N %lld o %lld r %lld)%s #%d: gb %.2e du %.2e\n", n, (long long)N, (long long)o[i],
               (long long)r, joined ? " joined" : "", i, eg, ed);
        CHECK_MSG(eg <= 1e-5 && ed <= 1e-5, "lora_dy #%d: gb %.3e du %.3e over 1e-5", i, eg, ed);
        CHECK_MSG(pad, "lora_dy #%d wrote du's columns past the rank", i);
        free(g), free(d), free(gref), free(dref);
    }
    // the same call again: the same bits
    for (int i = 0; i < n; i++) {
        dgb2[i] = poisoned((size_t)(r * o[i])), ddu2[i] = poisoned((size_t)(N * ldu));
        lc_dy_args d = a[i];
        d.gb = dgb2[i], d.du = ddu2[i], a[i] = d;
    }
    if (took) gpu->lora_dy(gpu, n, N, r, s, a);
    for (int i = 0; i < n && took; i++)
        CHECK_MSG(same_bits(dgb[i], dgb2[i], (size_t)(r * o[i])) && same_bits(ddu[i], ddu2[i], (size_t)(N * ldu)),
                  "lora_dy #%d: a second call gave other bits", i);
    for (int i = 0; i < n; i++) {
        if (!joined || i == 0) gpu->release(gpu, dy[i]);
        gpu->release(gpu, du[i]), gpu->release(gpu, (void *)a[i].b), gpu->release(gpu, dgb[i]);
        gpu->release(gpu, ddu[i]), gpu->release(gpu, dgb2[i]), gpu->release(gpu, ddu2[i]);
        free(yh[i]), free(yv[i]), free(uv[i]), free(bv[i]), free(ur[i]), free(br[i]);
    }
}

static void test_lora_dy(void) {
    if (!have_gpu()) SKIP("no CUDA backend: %s", why);
    CHECK_MSG(gpu->lora_dy != NULL, "the CUDA backend offers no ->lora_dy");
    if (!gpu->lora_dy) return;
    static const int64_t qkv[] = {256, 64, 64}, gu[] = {1000, 1000}, one[] = {136};
    check_lora_dy(3, qkv, 600, 16, true);  // q/k/v: two row groups, the last one short
    check_lora_dy(2, gu, 1100, 16, false); // gate/up: column groups, rows not a tile's multiple
    check_lora_dy(1, one, 300, 8, false);  // one row group, rank 8
    check_lora_dy(3, qkv, 1030, 12, true); // rank 12 (padded to 16)
    // declined: a rank past 16, a width not of 8 columns
    lc_dy_args d = {NULL, 100, 100, NULL, NULL, NULL, NULL, 32};
    CHECK_MSG(!gpu->lora_dy(gpu, 1, 64, 32, 1.0f, &d), "lora_dy took rank 32");
    d.o = d.ldy = 101;
    CHECK_MSG(!gpu->lora_dy(gpu, 1, 64, 16, 1.0f, &d), "lora_dy took 101 columns");
    // declined before reading anything: partial sums past the backend's allowance (gate and
    // up over 32,768 rows)
    void *tiny = gpu->alloc(gpu, 256);
    lc_dy_args big[2];
    for (int i = 0; i < 2; i++) {
        lc_dy_args b = {tiny, 14336, 14336, tiny, tiny, tiny, tiny, 16};
        big[i] = b;
    }
    CHECK_MSG(!gpu->lora_dy(gpu, 2, 32768, 16, 1.0f, big), "lora_dy took gate and up over 32,768 rows");
    CHECK_OK(gpu->sync(gpu));
    gpu->release(gpu, tiny);
}

static void test_adam(void) {
    if (!have_gpu()) SKIP("no CUDA backend: %s", why);
    size_t n = 70001;
    for (int k = 0; k < 2; k++) {
        lc_adam_config c = lc_adam_defaults(k ? LC_OPTIM_ADAMW : LC_OPTIM_ADAM);
        c.weight_decay = k ? 0.05 : 0.01;
        float *p = rnd(n, 1), *g = rnd(n, 0.1f), *m = rnd(n, 0.01f), *v = rnd(n, 1e-3f);
        for (size_t i = 0; i < n; i++) v[i] = fabsf(v[i]);
        float *dp = up(p, n * 4), *dg = up(g, n * 4), *dm = up(m, n * 4), *dv = up(v, n * 4);
        lc_adam_args a = lc_adam_args_make(&c, 3e-4, 7);
        lc_adam_update(&c, 3e-4, 7, p, g, m, v, n); // the trainer's CPU update
        gpu->adam(gpu, dp, dg, dm, dv, n, &a);
        expect(k ? "adamw (vs lc_adam_update) p" : "adam (vs lc_adam_update) p", dp, p, n, 1e-7);
        expect("  m", dm, m, n, 1e-7);
        expect("  v", dv, v, n, 1e-7);
        free(p), free(g), free(m), free(v);
        gpu->release(gpu, dp), gpu->release(gpu, dg), gpu->release(gpu, dm), gpu->release(gpu, dv);
    }
}

/* ->argmax against lc_sample's greedy on the host: random logits of several sizes, equal
 * largest values (the lowest index wins), -inf everywhere, NaNs at 0 and elsewhere; the
 * token lands in the device word and in the host slot, slots read in any order. */
static void test_argmax(void) {
    if (!have_gpu()) SKIP("no CUDA backend: %s", why);
    CHECK_MSG(gpu->argmax && gpu->argmax_read, "the CUDA backend offers no ->argmax");
    if (!gpu->argmax || !gpu->argmax_read) return;
    int64_t sizes[] = {1, 5, 1023, 1024, 1025, 12292, 32768, 50001}; // multiples of 4 take 16-byte loads
    lc_sampler s;
    lc_sample_config sc = lc_sample_defaults();
    lc_sampler_init(&s, &sc);
    int32_t *dst = gpu->alloc(gpu, sizeof(int32_t));
    int cases = 0, wrong = 0;
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++)
        for (int kind = 0; kind < 5; kind++) {
            int64_t V = sizes[k];
            float *lg = rnd((size_t)V, 3);
            int64_t a = V / 3, b = V - 1 - V / 5; // two places for equal largest values
            if (kind == 1) lg[a] = lg[b] = 100.0f;
            if (kind == 2)
                for (int64_t i = 0; i < V; i++) lg[i] = -INFINITY;
            if (kind == 3) lg[0] = NAN;
            if (kind == 4) lg[a] = NAN, lg[b] = 50.0f;
            float *d = up(lg, (size_t)V * 4);
            int32_t want = lc_sample(&s, lg, V), got = -1, got_dev = -1;
            int slot = (int)((k * 5 + (size_t)kind) % LC_ARGMAX_SLOTS);
            gpu->argmax(gpu, dst, d, V, slot);
            CHECK_OK(gpu->argmax_read(gpu, slot, &got));
            gpu->download(gpu, &got_dev, dst, sizeof got_dev);
            CHECK_OK(gpu->sync(gpu));
            cases++;
            if (got != want || got_dev != want) {
                wrong++;
                printf("    V %lld case %d: host slot %d, device %d, lc_sample %d\n", (long long)V, kind, got, got_dev,
                       want);
            }
            gpu->release(gpu, d);
            free(lg);
        }
    // every slot queued before any is read
    int32_t want[LC_ARGMAX_SLOTS];
    float *ds[LC_ARGMAX_SLOTS];
    for (int slot = 0; slot < LC_ARGMAX_SLOTS; slot++) {
        float *lg = rnd(4099, 1);
        want[slot] = lc_sample(&s, lg, 4099);
        ds[slot] = up(lg, 4099 * 4);
        gpu->argmax(gpu, dst, ds[slot], 4099, slot);
        free(lg);
    }
    for (int slot = LC_ARGMAX_SLOTS - 1; slot >= 0; slot--) {
        int32_t got = -1;
        CHECK_OK(gpu->argmax_read(gpu, slot, &got));
        cases++, wrong += got != want[slot];
        gpu->release(gpu, ds[slot]);
    }
    CHECK_MSG(wrong == 0, "argmax: %d of %d cases differ from lc_sample's greedy", wrong, cases);
    printf("  argmax: %d cases, each lc_sample's greedy token\n", cases);
    gpu->release(gpu, dst);
    lc_sampler_free(&s);
}

static void test_errors(void) {
    if (!have_gpu()) SKIP("no CUDA backend: %s", why);
    // a dtype the card cannot multiply is one clear error
    uint8_t raw[16] = {0};
    lc_wt w = {raw, LC_DT_I8, 4, 4, NULL, 0};
    CHECK_FAILS(gpu->weight(gpu, &w), "not supported");
    CHECK(lc_backend_new("cuda:200") == NULL);
    CHECK(lc_backend_new("tpu") == NULL);
}

int main(void) {
    const char *s = getenv("LORAC_TEST_SEED");
    rs = s ? strtoull(s, NULL, 10) : (uint64_t)time(NULL);
    printf("  seed %llu (LORAC_TEST_SEED repeats it)\n", (unsigned long long)rs);
    cpu = lc_backend_cpu_new(0);
    gpu = lc_backend_new("cuda");
    if (!gpu) snprintf(why, sizeof why, "%s", lc_errmsg());
    RUN(test_elementwise);
    RUN(test_matmul);
    RUN(test_quantized);
    RUN(test_quantized_codes_tc);
    RUN(test_quantized_order);
    RUN(test_gemm);
    RUN(test_gemm_adapters);
    RUN(test_gemm_b);
    RUN(test_gemm_tf32);
    RUN(test_gemm_groups);
    RUN(test_gemm_many_rows);
    RUN(test_matmul_n);
    RUN(test_norm_rope_swiglu);
    RUN(test_swiglu_lora);
    RUN(test_swiglu_bwd_wide);
    RUN(test_cross_entropy);
    RUN(test_attention);
    RUN(test_attention_tc);
    RUN(test_attention_b);
    RUN(test_weight_n);
    RUN(test_weight_room);
    RUN(test_lora_dy);
    RUN(test_adam);
    RUN(test_argmax);
    RUN(test_errors);
    if (gpu) gpu->free(gpu);
    cpu->free(cpu);
    return t_summary();
}
