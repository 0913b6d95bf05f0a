/*
 * gemm.cu — products of the CUDA backend for the training step (cuda.cu calls these):
 *  - the frozen bf16 products through cuBLASLt: by default the heuristic's first pick for
 *    each shape (the same algorithm in every process, so runs and resumed runs repeat bit
 *    for bit on a card); with LORAC_CUDA_TUNE=1, the first time a shape (transpose, M, N,
 *    K, leading dimensions, accumulate) is seen, the heuristic's top candidates and
 *    split-K variants of the best few are each timed (L2 flushed between runs, a scratch
 *    output) and the fastest is kept for the backend's life (about 1% faster on the
 *    recipe, but two processes may pick kernels that round differently);
 *  - ->gemm_n: several small fp32 products of the adapters in one launch (q/k/v's or
 *    gate/up's products of one kind; only with LORAC_CUDA_GROUP=1: they measured slower
 *    than one ->gemm each), by shape class: a thin output over a long inner
 *    size (u = x a, du = s dy b^T: one block per 4 rows, threads over K, a fixed-order
 *    block sum), a short inner size (out += s u b: one thread an output) and A^T B over
 *    the batch rows (gb, ga: shared-memory tiles). Other shapes, or groups of mixed
 *    classes, run as ->gemm calls in order.
 *
 * Owns the cuBLASLt handle, the shape plans and the split-K workspace (freed by
 * lc_cuda_lt_free with the backend). Tuning allocates and frees a scratch output and an
 * L2 flush buffer once per shape, and synchronizes the card (once per shape, early in
 * the first steps). Must not: change what a product computes (every candidate is the
 * same product; sums of each kernel here run in a fixed order, so a process gives the
 * same bits run to run; two processes may tune to different algorithms, whose roundings
 * differ within float32 accumulation).
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
    int ta, m, n, k, lda, ldb, ldc, acc;
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
                   const void *x, float beta, float *out, cudaStream_t st) {
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
                           bool acc, const void *W, const void *x) {
    for (size_t i = 0; i < L->n; i++) {
        lt_plan *p = &L->plans[i];
        if (p->ta == (int)ta && p->m == m && p->n == n && p->k == k && p->lda == lda && p->ldb == ldb &&
            p->ldc == ldc && p->acc == (int)acc)
            return p;
    }
    if (L->n == L->cap) {
        L->cap = L->cap ? 2 * L->cap : 32;
        L->plans = (lt_plan *)xrealloc(L->plans, L->cap * sizeof *L->plans);
    }
    lt_plan *p = &L->plans[L->n++];
    memset(p, 0, sizeof *p);
    p->ta = ta, p->m = m, p->n = n, p->k = k, p->lda = lda, p->ldb = ldb, p->ldc = ldc, p->acc = acc;
    cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = CUBLAS_OP_N;
    if (cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F) != CUBLAS_STATUS_SUCCESS ||
        cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa) != CUBLAS_STATUS_SUCCESS ||
        cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb) != CUBLAS_STATUS_SUCCESS ||
        cublasLtMatrixLayoutCreate(&p->A, CUDA_R_16BF, ta ? k : m, ta ? m : k, lda) != CUBLAS_STATUS_SUCCESS ||
        cublasLtMatrixLayoutCreate(&p->B, CUDA_R_16BF, k, n, ldb) != CUBLAS_STATUS_SUCCESS ||
        cublasLtMatrixLayoutCreate(&p->C, CUDA_R_32F, m, n, ldc) != CUBLAS_STATUS_SUCCESS)
        return p; // ok stays false: cublasGemmEx
    lt_tune(c, L, p, W, x, acc ? 1.0f : 0.0f);
    if (p->ok && !ws_reserve(L, p->ws)) p->ok = false;
    return p;
}

void lc_cuda_gemm_bf16(lc_cuda *c, bool ta, int m, int n, int k, const void *W, int lda, const void *x, int ldb,
                       float beta, float *out, int ldc) {
    lc_cuda_lt *L = lt_of(c);
    if (L->h) {
        lt_plan *p = lt_plan_of(c, L, ta, m, n, k, lda, ldb, ldc, beta != 0.0f, W, x);
        if (p->ok && lt_run(L, p, &p->algo, p->ws, W, x, beta, out, c->st)) return;
    }
    float one = 1.0f;
    LC_BK(c, cublasGemmEx(c->blas, ta ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, W, CUDA_R_16BF, lda, x,
                          CUDA_R_16BF, ldb, &beta, out, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

/* ------------------------------------------------------------ grouped adapter products */

/* The products of one launch, by value (kernel parameter space). */
struct grp {
    lc_gemm_args p[LC_GEMM_N_MAX];
};

__device__ __forceinline__ void store_c(float *c, float alpha, float s, float beta) {
    *c = beta == 0.0f ? alpha * s : alpha * s + beta * *c;
}

/* Thin output over a long K (N <= TH_N, !ta): block (x: 4-row tile, y: product); thread t
 * sums k = t, t + 256, ...; the block adds the 256 partial sums in a fixed order. */
#define TH_MT 4
#define TH_N 16
template <bool TB>
__global__ void __launch_bounds__(256) k_grp_thin(grp g) {
    const lc_gemm_args &p = g.p[blockIdx.y];
    int M = (int)p.M, N = (int)p.N, K = (int)p.K, m0 = blockIdx.x * TH_MT;
    if (m0 >= M) return;
    const float *A = p.A, *B = p.B;
    int64_t lda = p.lda, ldb = p.ldb;
    float acc[TH_MT][TH_N];
#pragma unroll
    for (int r = 0; r < TH_MT; r++)
#pragma unroll
        for (int j = 0; j < TH_N; j++) acc[r][j] = 0.0f;
    int mr = min(TH_MT, M - m0);
#pragma unroll 2
    for (int k = threadIdx.x; k < K; k += 256) {
        float b[TH_N];
#pragma unroll
        for (int j = 0; j < TH_N; j++) b[j] = j < N ? (TB ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j]) : 0.0f;
#pragma unroll
        for (int r = 0; r < TH_MT; r++) {
            float a = r < mr ? A[(size_t)(m0 + r) * lda + k] : 0.0f;
#pragma unroll
            for (int j = 0; j < TH_N; j++) acc[r][j] += a * b[j];
        }
    }
    __shared__ float red[8][TH_MT * TH_N];
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
    for (int r = 0; r < TH_MT; r++)
#pragma unroll
        for (int j = 0; j < TH_N; j++) {
            float v = acc[r][j];
            for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
            if (lane == 0) red[w][r * TH_N + j] = v;
        }
    __syncthreads();
    int t = threadIdx.x;
    if (t < TH_MT * TH_N) {
        int r = t / TH_N, j = t % TH_N;
        if (r < mr && j < N) {
            float s = 0.0f;
#pragma unroll
            for (int q = 0; q < 8; q++) s += red[q][t];
            store_c(p.C + (size_t)(m0 + r) * p.ldc + j, p.alpha, s, p.beta);
        }
    }
}

/* Short K (<= 32): one thread an output; block (x: over M*N, y: product). */
__global__ void k_grp_smallk(grp g) {
    const lc_gemm_args &p = g.p[blockIdx.y];
    size_t total = (size_t)p.M * (size_t)p.N;
    int N = (int)p.N, K = (int)p.K;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        int m = (int)(i / N), n = (int)(i % N);
        float s = 0.0f;
        for (int k = 0; k < K; k++)
            s += (p.ta ? p.A[(size_t)k * p.lda + m] : p.A[(size_t)m * p.lda + k]) *
                 (p.tb ? p.B[(size_t)n * p.ldb + k] : p.B[(size_t)k * p.ldb + n]);
        store_c(p.C + (size_t)m * p.ldc + n, p.alpha, s, p.beta);
    }
}

/* A^T B (ta, !tb) in TM × TN tiles (256 threads, TM*TN/256 outputs each), K in chunks of
 * TK through shared memory; block (x: tile, y: product). */
#define TK 64
template <int TM, int TN>
__global__ void __launch_bounds__(256) k_grp_tn(grp g) {
    const lc_gemm_args &p = g.p[blockIdx.y];
    int M = (int)p.M, N = (int)p.N, K = (int)p.K;
    int tn = (N + TN - 1) / TN, tiles = ((M + TM - 1) / TM) * tn;
    if ((int)blockIdx.x >= tiles) return;
    int m0 = (blockIdx.x / tn) * TM, n0 = (blockIdx.x % tn) * TN;
    __shared__ float As[TK][TM], Bs[TK][TN];
    constexpr int PER = TM * TN / 256;
    float acc[PER];
#pragma unroll
    for (int j = 0; j < PER; j++) acc[j] = 0.0f;
    for (int k0 = 0; k0 < K; k0 += TK) {
        for (int idx = threadIdx.x; idx < TK * TM; idx += 256) {
            int kk = idx / TM, mm = idx % TM;
            As[kk][mm] = k0 + kk < K && m0 + mm < M ? p.A[(size_t)(k0 + kk) * p.lda + m0 + mm] : 0.0f;
        }
        for (int idx = threadIdx.x; idx < TK * TN; idx += 256) {
            int kk = idx / TN, nn = idx % TN;
            Bs[kk][nn] = k0 + kk < K && n0 + nn < N ? p.B[(size_t)(k0 + kk) * p.ldb + n0 + nn] : 0.0f;
        }
        __syncthreads();
        int kn = min(TK, K - k0);
#pragma unroll
        for (int j = 0; j < PER; j++) {
            int o = threadIdx.x + 256 * j, mm = o / TN, nn = o % TN;
            float s = acc[j];
            for (int kk = 0; kk < kn; kk++) s += As[kk][mm] * Bs[kk][nn];
            acc[j] = s;
        }
        __syncthreads();
    }
#pragma unroll
    for (int j = 0; j < PER; j++) {
        int o = threadIdx.x + 256 * j, m = m0 + o / TN, n = n0 + o % TN;
        if (m < M && n < N) store_c(p.C + (size_t)m * p.ldc + n, p.alpha, acc[j], p.beta);
    }
}

enum { CL_NONE, CL_THIN, CL_THIN_TB, CL_SMALLK, CL_TN_WIDE, CL_TN_TALL };

/* The kernel class of one product (CL_NONE: ->gemm). */
static int class_of(const lc_gemm_args *p) {
    if (p->M <= 0 || p->N <= 0 || p->M > INT32_MAX / 2 || p->N > INT32_MAX / 2 || p->K > INT32_MAX / 2) return CL_NONE;
    if (p->K <= 32 && p->M <= 256) return CL_SMALLK; // more rows: cuBLAS's tiles win
    if (!p->ta && p->N <= TH_N && p->K >= 256 && p->M <= 256) return p->tb ? CL_THIN_TB : CL_THIN;
    if (p->ta && !p->tb && p->K <= 256) {
        if (p->M <= 16) return CL_TN_WIDE;
        if (p->N <= 16) return CL_TN_TALL;
    }
    return CL_NONE;
}

void lc_cuda_gemm_n(lc_backend *be, int n, const lc_gemm_args *g) {
    lc_cuda *c = (lc_cuda *)be->impl;
    if (n <= 0) return;
    // off unless LORAC_CUDA_GROUP=1 (a developer's switch): the grouped kernels measured
    // slower than one ->gemm each (recipe 23.4 against 22.6 ms/step, H200, cuda_notes.md)
    static int off = -1;
    if (off < 0) off = !(getenv("LORAC_CUDA_GROUP") && !strcmp(getenv("LORAC_CUDA_GROUP"), "1"));
    int cl = n <= LC_GEMM_N_MAX && !off ? class_of(&g[0]) : CL_NONE;
    for (int i = 1; i < n && cl != CL_NONE; i++)
        if (class_of(&g[i]) != cl) cl = CL_NONE;
    if (cl == CL_NONE) {
        for (int i = 0; i < n; i++)
            be->gemm(be, g[i].ta, g[i].tb, g[i].M, g[i].N, g[i].K, g[i].alpha, g[i].A, g[i].lda, g[i].B, g[i].ldb,
                     g[i].beta, g[i].C, g[i].ldc);
        return;
    }
    LC_PROF(c, "gemm_n class %lld", cl);
    grp G;
    memset(&G, 0, sizeof G);
    int64_t gx = 1;
    for (int i = 0; i < n; i++) {
        G.p[i] = g[i];
        int64_t b;
        switch (cl) {
        case CL_THIN:
        case CL_THIN_TB: b = (g[i].M + TH_MT - 1) / TH_MT; break;
        case CL_SMALLK: b = (g[i].M * g[i].N + 255) / 256; break;
        case CL_TN_WIDE: b = ((g[i].M + 15) / 16) * ((g[i].N + 63) / 64); break;
        default: b = ((g[i].M + 63) / 64) * ((g[i].N + 15) / 16); break;
        }
        gx = b > gx ? b : gx;
    }
    if (gx > 65535 * 16) gx = 65535 * 16; // the small-K kernel strides over the rest
    dim3 grid((unsigned)gx, (unsigned)n);
    switch (cl) {
    case CL_THIN: k_grp_thin<false><<<grid, 256, 0, c->st>>>(G); break;
    case CL_THIN_TB: k_grp_thin<true><<<grid, 256, 0, c->st>>>(G); break;
    case CL_SMALLK: k_grp_smallk<<<grid, 256, 0, c->st>>>(G); break;
    case CL_TN_WIDE: k_grp_tn<16, 64><<<grid, 256, 0, c->st>>>(G); break;
    default: k_grp_tn<64, 16><<<grid, 256, 0, c->st>>>(G); break;
    }
    LC_LAUNCHED(c);
}
