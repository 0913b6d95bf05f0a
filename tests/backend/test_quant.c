/*
 * test_quant.c — quantized weights (src/backend/quant.h) against reference data made by
 * tests/reference/make_quant_fixtures.py (tests/fixtures/quant/quant.safetensors: NF4 as
 * bitsandbytes defines and lays it out, MLX's affine format as mx.quantize computes it;
 * the file's metadata says whether bitsandbytes / mlx made each case or the published
 * definitions did):
 *   - dequantization (whole rows, column slices as the matmul's input-gradient panels
 *     take them, single elements) equals the reference float32 values exactly;
 *   - lorac's affine quantizer gives the reference's codes, scales and biases bit for
 *     bit, its NF4 quantizer the reference's 4-bit codes, its dynamic map the reference's;
 *   - the CPU backend's matmul / matmul_dx / embedding over a quantized weight equal the
 *     plain reference kernels over the dequantized float32 matrix, on fresh random
 *     inputs, within float32 accumulation error.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "backend/cpu/cpu.h"
#include "backend/quant.h"
#include "core/json.h"
#include "harness.h"
#include "io/safetensors.h"

#define FIX "tests/fixtures/quant/quant.safetensors"

static lc_safetensors st;
static bool have;

static const lc_tensor *T(const char *case_, const char *suffix) {
    char n[128];
    snprintf(n, sizeof n, "%s%s", case_, suffix);
    const lc_tensor *t = lc_st_find(&st, n);
    if (!t) printf("  missing fixture tensor %s\n", n);
    return t;
}

/* The NF4 weight of a fixture case, as the model loader reads bitsandbytes' tensors. */
static bool nf4_of(const char *c, lc_wt *w, lc_wquant *q) {
    const lc_tensor *src = T(c, ".source"), *wt = T(c, ".weight"), *am = T(c, ".weight.absmax"),
                    *map = T(c, ".weight.quant_map"), *na = T(c, ".weight.nested_absmax"),
                    *nm = T(c, ".weight.nested_quant_map"), *qs = T(c, ".weight.quant_state.bitsandbytes__nf4");
    if (!src || !wt || !am || !map || !na || !nm || !qs) return false;
    cJSON *j;
    if (lc_json_parse(qs->data, qs->numel, "quant_state", &j) != 0) return false;
    double off = 0;
    lc_json_num(j, "nested_offset", &off, "quant_state");
    cJSON_Delete(j);
    *q = (lc_wquant){.fmt = LC_QUANT_NF4, .bits = 4, .group = 64, .absmax = am->data, .nested = true,
                     .absmax2 = na->data, .block2 = 256, .offset = (float)off};
    memcpy(q->code, map->data, sizeof q->code);
    memcpy(q->code2, nm->data, sizeof q->code2);
    *w = (lc_wt){wt->data, LC_DT_U8, src->shape[0], src->shape[1], q, 0};
    return true;
}

static bool affine_of(const char *c, lc_wt *w, lc_wquant *q) {
    const lc_tensor *src = T(c, ".source"), *wt = T(c, ".weight"), *sc = T(c, ".scales"), *bi = T(c, ".biases");
    if (!src || !wt || !sc || !bi) return false;
    int64_t R = src->shape[0], C = src->shape[1];
    *q = (lc_wquant){.fmt = LC_QUANT_AFFINE, .bits = (int)(wt->shape[1] * 32 / C),
                     .group = C / sc->shape[1], .scales = sc->data, .biases = bi->data, .sdtype = sc->dtype};
    *w = (lc_wt){wt->data, LC_DT_U32, R, C, q, 0};
    return true;
}

static float *f32_of(const lc_tensor *t) {
    float *p = malloc(t->numel * sizeof(float));
    lc_to_f32(p, t->data, t->dtype, t->numel);
    return p;
}

/* Dequantization three ways equals .expected exactly. */
static void check_dequant(const char *c, const lc_wt *w) {
    const lc_tensor *e = T(c, ".expected");
    if (!e) {
        CHECK(0);
        return;
    }
    float *exp = f32_of(e);
    size_t n = e->numel, bad = 0;
    float *d = malloc(n * sizeof(float));
    CHECK_OK(lc_wt_dequantize_rows(d, w, 0, w->rows));
    for (size_t i = 0; i < n; i++) bad += memcmp(&d[i], &exp[i], 4) != 0;
    CHECK_MSG(bad == 0, "%s: %zu of %zu dequantized values differ from the reference", c, bad, n);
    // column slices (the matmul_dx panels), including odd starts
    int64_t c0 = 3, c1 = w->cols - 5;
    float *s = malloc((size_t)w->rows * (size_t)(c1 - c0) * sizeof(float));
    lc_cpu_convert_block(s, w, 0, w->rows, c0, c1);
    bad = 0;
    for (int64_t r = 0; r < w->rows; r++)
        for (int64_t k = c0; k < c1; k++)
            bad += s[(size_t)r * (size_t)(c1 - c0) + (size_t)(k - c0)] != exp[(size_t)r * (size_t)w->cols + (size_t)k];
    CHECK_MSG(bad == 0, "%s: %zu column-slice values differ", c, bad);
    bad = 0;
    for (size_t i = 0; i < n; i += 7) bad += lc_wt_get(w, i) != exp[i];
    CHECK_MSG(bad == 0, "%s: %zu single elements differ", c, bad);
    CHECK_FAILS(lc_wt_dequantize_rows(d, w, 0, w->rows + 1), "outside");
    free(d), free(s), free(exp);
}

static const char *const NF4_CASES[] = {"nf4", "nf4tail", NULL};
static const char *const AFFINE_CASES[] = {"q4g64", "q8g32", "q4g32f", NULL};

/* Loads each named fixture case (NF4 or affine) and hands it to fn; a case that does
 * not load fails the test. */
static void each_case(const char *const *cases, bool nf4,
                      void (*fn)(const char *c, const lc_wt *w, const lc_wquant *q)) {
    for (int k = 0; cases[k]; k++) {
        lc_wt w;
        lc_wquant q;
        if (!(nf4 ? nf4_of(cases[k], &w, &q) : affine_of(cases[k], &w, &q))) {
            CHECK(0);
            continue;
        }
        fn(cases[k], &w, &q);
    }
}

static void dequant_case(const char *c, const lc_wt *w, const lc_wquant *q) {
    (void)q;
    check_dequant(c, w);
}

static void test_nf4_dequant(void) {
    if (!have) SKIP("no %s (run tests/reference/make_quant_fixtures.py)", FIX);
    each_case(NF4_CASES, true, dequant_case);
}

static void test_affine_dequant(void) {
    if (!have) SKIP("no %s", FIX);
    each_case(AFFINE_CASES, false, dequant_case);
}

/* lorac's affine quantizer reproduces the reference's codes, scales and biases. */
static void affine_quantizer_case(const char *c, const lc_wt *w, const lc_wquant *q) {
    const lc_tensor *src = T(c, ".source"), *wt = T(c, ".weight"), *sc = T(c, ".scales"),
                    *bi = T(c, ".biases");
    float *x = f32_of(src);
    uint32_t *codes = malloc(wt->nbytes);
    void *s = malloc(sc->nbytes), *b = malloc(bi->nbytes);
    CHECK_OK(lc_quant_affine(codes, s, b, sc->dtype, x, w->rows, w->cols, q->bits, q->group));
    CHECK_MSG(!memcmp(codes, wt->data, wt->nbytes), "%s: codes differ", c);
    CHECK_MSG(!memcmp(s, sc->data, sc->nbytes), "%s: scales differ", c);
    CHECK_MSG(!memcmp(b, bi->data, bi->nbytes), "%s: biases differ", c);
    free(x), free(codes), free(s), free(b);
}

static void test_affine_quantizer(void) {
    if (!have) SKIP("no %s", FIX);
    each_case(AFFINE_CASES, false, affine_quantizer_case);
    float one[64] = {0};
    uint32_t c[8];
    float s, b;
    CHECK_FAILS(lc_quant_affine(c, &s, &b, LC_DT_F32, one, 1, 64, 3, 64), "3 bits");
    CHECK_FAILS(lc_quant_affine(c, &s, &b, LC_DT_F32, one, 1, 48, 4, 32), "groups of 32");
}

/* lorac's NF4 quantizer gives the reference's 4-bit codes (blocks of zeros aside: any
 * code dequantizes to 0 there) and the reference's nested map. */
static void nf4_quantizer_case(const char *c, const lc_wt *w, const lc_wquant *q) {
    (void)q;
    const lc_tensor *src = T(c, ".source");
    size_t n = src->numel, nb = (n + 63) / 64, bad = 0;
    float *x = f32_of(src), *am = malloc(nb * sizeof(float));
    uint8_t *codes = malloc((n + 1) / 2);
    lc_quant_nf4(codes, am, x, n, 64);
    const uint8_t *ref = w->data;
    for (size_t i = 0; i < n; i++) {
        if (am[i / 64] == 0.0f) continue;
        unsigned a = i % 2 ? codes[i / 2] & 0xF : codes[i / 2] >> 4;
        unsigned r = i % 2 ? ref[i / 2] & 0xF : ref[i / 2] >> 4;
        bad += a != r;
    }
    CHECK_MSG(bad == 0, "%s: %zu of %zu NF4 codes differ from the reference", c, bad, n);
    free(x), free(am), free(codes);
}

static void test_nf4_quantizer(void) {
    if (!have) SKIP("no %s", FIX);
    each_case(NF4_CASES, true, nf4_quantizer_case);
    float code2[256];
    lc_quant_dynamic_map(code2);
    const lc_tensor *nm = T("nf4", ".weight.nested_quant_map");
    if (nm) {
        float ref[256];
        memcpy(ref, nm->data, sizeof ref);
        size_t bad = 0;
        for (int i = 0; i < 256; i++) bad += fabsf(code2[i] - ref[i]) > 1e-7f * fabsf(ref[i]);
        CHECK_MSG(bad == 0, "%zu of 256 dynamic-map values differ", bad);
    }
}

static double urand(void) {
    static uint64_t s = 88172645463325252ull;
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    return (double)(s >> 11) / 9007199254740992.0;
}

static void cmp(const char *what, const float *fast, const float *ref, size_t n, double K) {
    double md = 0, mx = 0;
    for (size_t i = 0; i < n; i++) md = fmax(md, fabs((double)fast[i] - ref[i])), mx = fmax(mx, fabs(ref[i]));
    double bound = K * 0x1.0p-24 * mx + 1e-6;
    CHECK_MSG(md <= bound, "%s: max diff %.3e > bound %.3e", what, md, bound);
}

/* matmul / matmul_dx / embedding over a quantized weight = the plain kernels over its
 * float32 dequantization (made by lorac's quantizers from random weights). */
static void test_quantized_products(void) {
    lc_backend *be = lc_backend_cpu_new(0);
    int64_t O = 96, I = 192, N = 37;
    float *wv = malloc((size_t)(O * I) * 4);
    for (int64_t i = 0; i < O * I; i++) wv[i] = (float)((2 * urand() - 1) * 0.05);
    for (int f = 0; f < 3; f++) {
        lc_wquant q = {0};
        void *codes, *s = NULL, *b = NULL, *qa = NULL, *a2 = NULL;
        if (f < 2) { // q4 / q8, group 64, bf16 scales
            int bits = f ? 8 : 4;
            codes = malloc((size_t)(O * I) * (size_t)bits / 8);
            s = malloc((size_t)(O * I / 64) * 2), b = malloc((size_t)(O * I / 64) * 2);
            lc_quant_affine(codes, s, b, LC_DT_BF16, wv, O, I, bits, 64);
            q = (lc_wquant){.fmt = LC_QUANT_AFFINE, .bits = bits, .group = 64, .scales = s, .biases = b,
                            .sdtype = LC_DT_BF16};
        } else { // nf4, double-quantized
            size_t n = (size_t)(O * I), nb = n / 64;
            codes = malloc(n / 2);
            float *am = malloc(nb * 4);
            lc_quant_nf4(codes, am, wv, n, 64);
            q = (lc_wquant){.fmt = LC_QUANT_NF4, .bits = 4, .group = 64, .nested = true, .block2 = 256};
            memcpy(q.code, LC_NF4_CODE, sizeof q.code);
            lc_quant_dynamic_map(q.code2);
            qa = malloc(nb), a2 = malloc((nb + 255) / 256 * 4);
            lc_quant_nf4_nest(qa, a2, &q.offset, am, nb, 256, q.code2);
            q.absmax = qa, q.absmax2 = a2;
            free(am);
        }
        lc_wt w = {codes, LC_DT_U8, O, I, &q, 0};
        float *deq = malloc((size_t)(O * I) * 4);
        lc_wt_dequantize_rows(deq, &w, 0, O);
        lc_wt wf = {deq, LC_DT_F32, O, I, NULL, 0};
        float *x = malloc((size_t)(N * I) * 4), *dy = malloc((size_t)(N * O) * 4), *bias = malloc((size_t)O * 4);
        for (int64_t i = 0; i < N * I; i++) x[i] = (float)(2 * urand() - 1);
        for (int64_t i = 0; i < N * O; i++) dy[i] = (float)(2 * urand() - 1);
        for (int64_t i = 0; i < O; i++) bias[i] = (float)(2 * urand() - 1);
        float *o1 = calloc((size_t)(N * O), 4), *o2 = calloc((size_t)(N * O), 4);
        be->matmul(be, o1, x, &w, bias, N, false);
        lc_cpu_matmul_naive(o2, x, &wf, bias, N, false);
        cmp("quantized matmul", o1, o2, (size_t)(N * O), (double)I + 2);
        float *d1 = calloc((size_t)(N * I), 4), *d2 = calloc((size_t)(N * I), 4);
        be->matmul_dx(be, d1, dy, &w, N, false);
        lc_cpu_matmul_dx_naive(d2, dy, &wf, N, false);
        cmp("quantized matmul_dx", d1, d2, (size_t)(N * I), (double)O + 2);
        int32_t tok[3] = {0, 95, 17};
        float e[3 * 192];
        be->embedding(be, e, tok, &w, 3);
        size_t bad = 0;
        for (int r = 0; r < 3; r++)
            for (int64_t c = 0; c < I; c++) bad += e[r * I + c] != deq[tok[r] * I + c];
        CHECK_MSG(bad == 0, "quantized embedding: %zu values differ", bad);
        free(codes), free(s), free(b), free(qa), free(a2), free(deq), free(x), free(dy), free(bias);
        free(o1), free(o2), free(d1), free(d2);
    }
    free(wv);
    be->free(be);
}

int main(void) {
    have = lc_st_open(&st, FIX) == 0;
    if (have) {
        for (size_t i = 0; i < st.n_meta; i++) printf("fixture %s: %s\n", st.meta[2 * i], st.meta[2 * i + 1]);
    }
    RUN(test_nf4_dequant);
    RUN(test_affine_dequant);
    RUN(test_affine_quantizer);
    RUN(test_nf4_quantizer);
    RUN(test_quantized_products);
    lc_st_close(&st);
    return t_summary();
}
