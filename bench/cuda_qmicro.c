/*
 * cuda_qmicro.c — `build/cuda_qmicro`: per-call time of the products over an NF4 base
 * (nested absmax, random codes) at the 7B shapes against the same products over a bf16
 * weight, on the card (src/backend/cuda/quant.cu).
 *
 * Rows: q/o (4096, 4096), k/v (1024, 4096), gate/up (14336, 4096), down (4096, 14336);
 * for N = 1 (decoding), 136 (the recipe step) and 4096 (batch 8 × 512), the forward
 * product (matmul) and the input gradient (matmul_dx). Columns: the bf16 weight; two NF4
 * weights in turn, each dequantized when its product comes (LORAC_CUDA_DQ_PREFETCH=0);
 * the same with each dequantized ahead of time during the other's product (products
 * back to back: no small ops between them to hide the copy behind, so the least the
 * overlap gives). Times are wall clock over REPS calls after a warm-up, the card drained
 * before and after. Prints one table on stdout. A benchmark program: prints and exits on
 * errors; exits 0 with a note when this build or machine has no CUDA backend.
 *
 * Usage: build/cuda_qmicro [REPS]   (default 20)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/backend.h"
#include "backend/quant.h"
#include "core/error.h"
#include "core/mem.h"

static uint64_t rs = 0x1234567;
static uint64_t rnd(void) { // splitmix64
    uint64_t z = (rs += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static double t0g;
static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void die(void) {
    fprintf(stderr, "error: %s\n", lc_errmsg());
    exit(1);
}

/* Microseconds a call: REPS calls of the product, alternating over w[0..nw), after one
 * warm-up round. */
static double time_op(lc_backend *be, int dx, float *out, const float *in, const lc_wt *w, int nw, int64_t N,
                      int reps) {
    for (int r = -nw; r < reps; r++) {
        if (r == 0 && be->sync(be)) die();
        if (r == 0) t0g = now();
        const lc_wt *wi = &w[(r + nw) % nw];
        if (dx) be->matmul_dx(be, out, in, wi, N, false);
        else be->matmul(be, out, in, wi, NULL, N, false);
    }
    if (be->sync(be)) die();
    return 1e6 * (now() - t0g) / reps;
}

static lc_wt nf4_weight(lc_backend *be, int64_t O, int64_t I, lc_wquant *q) {
    size_t n = (size_t)(O * I), nb = n / 64;
    uint8_t *codes = xmalloc(n / 2), *am = xmalloc(nb);
    float *am2 = xmalloc((nb + 255) / 256 * 4);
    for (size_t i = 0; i < n / 2; i++) codes[i] = (uint8_t)rnd();
    for (size_t i = 0; i < nb; i++) am[i] = (uint8_t)rnd();
    for (size_t i = 0; i < (nb + 255) / 256; i++) am2[i] = 0.01f;
    memset(q, 0, sizeof *q);
    q->fmt = LC_QUANT_NF4, q->bits = 4, q->group = 64, q->nested = true, q->block2 = 256, q->offset = 0.02f;
    q->absmax = am, q->absmax2 = am2;
    memcpy(q->code, LC_NF4_CODE, sizeof q->code);
    lc_quant_dynamic_map(q->code2);
    lc_wt wq = {codes, LC_DT_U8, O, I, q, 0};
    if (be->weight(be, &wq)) die();
    free(codes), free(am), free(am2);
    return wq;
}

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 20;
    lc_backend *be = lc_backend_new("cuda");
    if (!be) {
        printf("cuda_qmicro: no CUDA backend here (%s)\n", lc_errmsg());
        return 0;
    }
    static const struct {
        const char *name;
        int64_t O, I;
    } shapes[] = {{"q/o", 4096, 4096}, {"k/v", 1024, 4096}, {"gate/up", 14336, 4096}, {"down", 4096, 14336}};
    static const int64_t Ns[] = {1, 136, 4096};
    float *x = be->alloc(be, 4096 * (size_t)14336 * 4), *y = be->alloc(be, 4096 * (size_t)14336 * 4);
    printf("| weight | N | op | bf16 us | nf4, dequantized in line us | nf4, two weights in turn, ahead of time us |\n");
    printf("| --- | --- | --- | --- | --- | --- |\n");
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        int64_t O = shapes[si].O, I = shapes[si].I;
        size_t n = (size_t)(O * I);
        uint16_t *hb = xmalloc(n * 2);
        for (size_t i = 0; i < n; i++) hb[i] = (uint16_t)(0x3C00 + (rnd() & 0x3FF)) ^ (uint16_t)((rnd() & 1) << 15);
        lc_wt wb = {hb, LC_DT_BF16, O, I, NULL, 0};
        if (be->weight(be, &wb)) die();
        free(hb);
        lc_wquant q[2];
        lc_wt wq[2] = {nf4_weight(be, O, I, &q[0]), nf4_weight(be, O, I, &q[1])};
        for (size_t ni = 0; ni < sizeof Ns / sizeof *Ns; ni++) {
            int64_t N = Ns[ni];
            for (int dx = 0; dx < 2; dx++) {
                printf("| %s (%lld, %lld) | %lld | %s | %.1f |", shapes[si].name, (long long)O, (long long)I,
                       (long long)N, dx ? "dx" : "fwd", time_op(be, dx, y, x, &wb, 1, N, reps));
                setenv("LORAC_CUDA_DQ_PREFETCH", "0", 1);
                printf(" %.1f |", time_op(be, dx, y, x, wq, 2, N, reps));
                setenv("LORAC_CUDA_DQ_PREFETCH", "1", 1);
                printf(" %.1f |\n", time_op(be, dx, y, x, wq, 2, N, reps));
                fflush(stdout);
            }
        }
    }
    be->free(be);
    return 0;
}
