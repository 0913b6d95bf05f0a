/*
 * gemm.cu — the frozen bf16 products of the CUDA backend (cuda.cu calls these), through
 * cuBLASLt: by default the heuristic's first pick for each shape (the same algorithm in
 * every process, so runs and resumed runs repeat bit for bit on a card); with
 * LORAC_CUDA_TUNE=1, the first time a shape (transpose, M, N, K, leading dimensions,
 * accumulate) is seen, the heuristic's top candidates and split-K variants
 * of the best few are each timed (L2 flushed between runs, a scratch output) and the
 * fastest is kept for the backend's life (about 1% faster on the recipe, but two
 * processes may pick kernels that round differently).
 *
 * Owns the cuBLASLt handle, the shape plans and the split-K workspace (freed by
 * lc_cuda_lt_free with the backend). Tuning allocates and frees a scratch output and an
 * L2 flush buffer once per shape, and synchronizes the card (once per shape, early in
 * the first steps). Must not: change what a product computes (every candidate is the
 * same product, so a process gives the same bits run to run; two processes may tune to
 * different algorithms, whose roundings differ within float32 accumulation).
 */
#include <cublasLt.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda.h"

extern "C" {
#include "core/mem.h"
}

/* ------------------------------------------------------------ frozen products (cuBLASLt) */

#define LT_WS_MAX ((size_t)32 << 20) // split-K workspace at most (bytes)
#define LT_FLUSH ((size_t)64 << 20)  // bytes written between timed runs (more than L2)
#define LT_CANDS 8                   // heuristic results asked for
#define LT_SPLIT_BASES 3             // best heuristic results that also get split-K variants

struct lt_plan {
    int ta, m, n, k, lda, ldb, ldc, acc, ob; // ob: out is bf16
    bool ok; // false: cuBLASLt offered nothing; cublasGemmEx runs it
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t A, B, C;
    cublasLtMatmulAlgo_t algo;
    size_t ws;
    float us; // the chosen candidate's time (diagnostics)
};

struct lc_cuda_lt {
    cublasLtHandle_t h;
    lt_plan *plans;
    size_t n, cap;
    void *ws;
    size_t ws_cap;
    bool tune;
};

static lc_cuda_lt *lt_of(lc_cuda *c) {
    if (c->lt) return c->lt;
    lc_cuda_lt *L = (lc_cuda_lt *)xcalloc(1, sizeof *L);
    if (cublasLtCreate(&L->h) != CUBLAS_STATUS_SUCCESS) L->h = NULL;
    const char *e = getenv("LORAC_CUDA_TUNE");
    L->tune = e && !strcmp(e, "1"); // opt-in: timing makes the choice differ between processes
    c->lt = L;
    return L;
}

void lc_cuda_lt_free(lc_cuda *c) {
    lc_cuda_lt *L = c->lt;
    if (!L) return;
    for (size_t i = 0; i < L->n; i++) {
        lt_plan *p = &L->plans[i];
        if (p->op) cublasLtMatmulDescDestroy(p->op);
        if (p->A) cublasLtMatrixLayoutDestroy(p->A);
        if (p->B) cublasLtMatrixLayoutDestroy(p->B);
        if (p->C) cublasLtMatrixLayoutDestroy(p->C);
    }
    free(L->plans);
    if (L->ws) cudaFree(L->ws);
    if (L->h) cublasLtDestroy(L->h);
    free(L);
    c->lt = NULL;
}

static bool lt_run(lc_cuda_lt *L, lt_plan *p, const cublasLtMatmulAlgo_t *algo, size_t ws, const void *W,
                   const void *x, float beta, void *out, cudaStream_t st) {
    float one = 1.0f;
    return cublasLtMatmul(L->h, p->op, &one, W, p->A, x, p->B, &beta, out, p->C, out, p->C, algo,
                          ws ? L->ws : NULL, ws, st) == CUBLAS_STATUS_SUCCESS;
}

void lc_cuda_lt_ws(lc_cuda *c, const void **ws, size_t *bytes) {
    *ws = c->lt ? c->lt->ws : NULL;
    *bytes = c->lt ? c->lt->ws_cap : 0;
}

static bool ws_reserve(lc_cuda_lt *L, size_t bytes) {
    if (bytes <= L->ws_cap) return true;
    if (L->ws) cudaFree(L->ws);
    L->ws = NULL, L->ws_cap = 0;
    if (cudaMalloc(&L->ws, bytes) != cudaSuccess) {
        cudaGetLastError();
        return false;
    }
    L->ws_cap = bytes;
    return true;
}

/* Picks p->algo: the heuristic's candidates and split-K variants of the best few, each
 * timed three times on a scratch output with L2 flushed before each run. */
static void lt_tune(lc_cuda *c, lc_cuda_lt *L, lt_plan *p, const void *W, const void *x, float beta) {
    cublasLtMatmulPreference_t pref;
    if (cublasLtMatmulPreferenceCreate(&pref) != CUBLAS_STATUS_SUCCESS) return;
    size_t wsmax = LT_WS_MAX;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsmax, sizeof wsmax);
    cublasLtMatmulHeuristicResult_t res[LT_CANDS];
    int nr = 0;
    if (cublasLtMatmulAlgoGetHeuristic(L->h, p->op, p->A, p->B, p->C, p->C, pref, LT_CANDS, res, &nr) !=
        CUBLAS_STATUS_SUCCESS)
        nr = 0;
    cublasLtMatmulPreferenceDestroy(pref);
    if (nr <= 0) return;
    p->ok = true, p->algo = res[0].algo, p->ws = res[0].workspaceSize;
    if (!L->tune) return;
    // candidates: the heuristic's, then split-K variants of its best few
    cublasLtMatmulAlgo_t cand[LT_CANDS + LT_SPLIT_BASES * 8];
    size_t cws[LT_CANDS + LT_SPLIT_BASES * 8];
    int nc = 0;
    for (int i = 0; i < nr; i++) cand[nc] = res[i].algo, cws[nc++] = res[i].workspaceSize;
    static const int splits[] = {2, 3, 4, 6, 8, 12, 16};
    for (int i = 0; i < nr && i < LT_SPLIT_BASES; i++)
        for (int s = 0; s < (int)(sizeof splits / sizeof *splits); s++) {
            if (nc == (int)(sizeof cand / sizeof *cand)) break;
            cublasLtMatmulAlgo_t a = res[i].algo;
            int32_t sk = splits[s];
            uint32_t red = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
            if (cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &sk, sizeof sk) !=
                    CUBLAS_STATUS_SUCCESS ||
                cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &red, sizeof red) !=
                    CUBLAS_STATUS_SUCCESS)
                continue;
            cublasLtMatmulHeuristicResult_t chk;
            if (cublasLtMatmulAlgoCheck(L->h, p->op, p->A, p->B, p->C, p->C, &a, &chk) != CUBLAS_STATUS_SUCCESS ||
                chk.workspaceSize > LT_WS_MAX)
                continue;
            cand[nc] = a, cws[nc++] = chk.workspaceSize;
        }
    size_t need = 0;
    for (int i = 0; i < nc; i++) need = cws[i] > need ? cws[i] : need;
    float *scratch = NULL;
    void *flush = NULL;
    cudaEvent_t e0 = NULL, e1 = NULL;
    if (!ws_reserve(L, need) || cudaMalloc(&scratch, (size_t)p->ldc * (size_t)p->n * sizeof(float)) != cudaSuccess ||
        cudaMalloc(&flush, LT_FLUSH) != cudaSuccess || cudaEventCreate(&e0) != cudaSuccess ||
        cudaEventCreate(&e1) != cudaSuccess) {
        cudaGetLastError(); // no room to tune: the heuristic's pick
        goto done;
    }
    cudaMemset(scratch, 0, (size_t)p->ldc * (size_t)p->n * sizeof(float));
    {
        float best = 1e30f;
        for (int i = 0; i < nc; i++) {
            if (!lt_run(L, p, &cand[i], cws[i], W, x, beta, scratch, 0)) continue; // warm-up; unusable: skip
            float tot = 0;
            bool bad = false;
            for (int r = 0; r < 3 && !bad; r++) {
                cudaMemsetAsync(flush, r, LT_FLUSH);
                cudaEventRecord(e0, 0);
                bad = !lt_run(L, p, &cand[i], cws[i], W, x, beta, scratch, 0);
                cudaEventRecord(e1, 0);
                cudaEventSynchronize(e1);
                float ms = 0;
                cudaEventElapsedTime(&ms, e0, e1);
                tot += ms;
            }
            if (cudaGetLastError() != cudaSuccess || bad) continue;
            if (tot < best) best = tot, p->algo = cand[i], p->ws = cws[i], p->us = tot * 1000.0f / 3.0f;
        }
    }
done:
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    if (scratch) cudaFree(scratch);
    if (flush) cudaFree(flush);
    if (getenv("LORAC_CUDA_TUNE_LOG")) // a developer's switch: the choice per shape on stderr
        fprintf(stderr, "lorac cuda tune: ta=%d m=%d n=%d k=%d acc=%d: %d candidates, %.1f us (ws %zu)\n", p->ta, p->m,
                p->n, p->k, p->acc, nc, (double)p->us, p->ws);
    (void)c;
}

static lt_plan *lt_plan_of(lc_cuda *c, lc_cuda_lt *L, bool ta, int m, int n, int k, int lda, int ldb, int ldc,
                           bool acc, bool ob, const void *W, const void *x) {
    for (size_t i = 0; i < L->n; i++) {
        lt_plan *p = &L->plans[i];
        if (p->ta == (int)ta && p->m == m && p->n == n && p->k == k && p->lda == lda && p->ldb == ldb &&
            p->ldc == ldc && p->acc == (int)acc && p->ob == (int)ob)
            return p;
    }
    if (L->n == L->cap) {
        L->cap = L->cap ? 2 * L->cap : 32;
        L->plans = (lt_plan *)xrealloc(L->plans, L->cap * sizeof *L->plans);
    }
    lt_plan *p = &L->plans[L->n++];
    memset(p, 0, sizeof *p);
    p->ta = ta, p->m = m, p->n = n, p->k = k, p->lda = lda, p->ldb = ldb, p->ldc = ldc, p->acc = acc, p->ob = ob;
    cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = CUBLAS_OP_N;
    if (cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F) != CUBLAS_STATUS_SUCCESS ||
        cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa) != CUBLAS_STATUS_SUCCESS ||
        cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb) != CUBLAS_STATUS_SUCCESS ||
        cublasLtMatrixLayoutCreate(&p->A, CUDA_R_16BF, ta ? k : m, ta ? m : k, lda) != CUBLAS_STATUS_SUCCESS ||
        cublasLtMatrixLayoutCreate(&p->B, CUDA_R_16BF, k, n, ldb) != CUBLAS_STATUS_SUCCESS ||
        cublasLtMatrixLayoutCreate(&p->C, ob ? CUDA_R_16BF : CUDA_R_32F, m, n, ldc) != CUBLAS_STATUS_SUCCESS)
        return p; // ok stays false: cublasGemmEx
    lt_tune(c, L, p, W, x, acc ? 1.0f : 0.0f);
    if (p->ok && !ws_reserve(L, p->ws)) p->ok = false;
    return p;
}

void lc_cuda_gemm_bf16(lc_cuda *c, bool ta, int m, int n, int k, const void *W, int lda, const void *x, int ldb,
                       float beta, float *out, int ldc) {
    lc_cuda_lt *L = lt_of(c);
    if (L->h) {
        lt_plan *p = lt_plan_of(c, L, ta, m, n, k, lda, ldb, ldc, beta != 0.0f, false, W, x);
        if (p->ok && lt_run(L, p, &p->algo, p->ws, W, x, beta, out, c->st)) return;
    }
    float one = 1.0f;
    LC_BK(c, cublasGemmEx(c->blas, ta ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, W, CUDA_R_16BF, lda, x,
                          CUDA_R_16BF, ldb, &beta, out, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

void lc_cuda_gemm_bf16o(lc_cuda *c, bool ta, int m, int n, int k, const void *W, int lda, const void *x, int ldb,
                        void *out, int ldc) {
    lc_cuda_lt *L = lt_of(c);
    if (L->h) {
        lt_plan *p = lt_plan_of(c, L, ta, m, n, k, lda, ldb, ldc, false, true, W, x);
        if (p->ok && lt_run(L, p, &p->algo, p->ws, W, x, 0.0f, out, c->st)) return;
    }
    float one = 1.0f, zero = 0.0f;
    LC_BK(c, cublasGemmEx(c->blas, ta ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, W, CUDA_R_16BF, lda, x,
                          CUDA_R_16BF, ldb, &zero, out, CUDA_R_16BF, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}
