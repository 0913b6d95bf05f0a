/*
 * lora_gemm.cu — the adapters' float32 products where one side is the adapter's rank
 * (at most 32) and the batch has few rows (at most 256: the recipe's 2 × 68, prompts,
 * decoding through single ops). cuBLAS runs each of these in one or a few slow blocks
 * (7–20 µs for a few hundred KB); the kernels here keep many independent loads in flight
 * per thread instead. Row-major, cblas_sgemm's meaning:
 * C (M,N) = alpha op(A) op(B) + beta C, op(A)(m,k) = ta ? A[k*lda+m] : A[m*lda+k],
 * op(B)(k,n) = tb ? B[n*ldb+k] : B[k*ldb+n]; beta == 0 never reads C.
 * Three kernels, by which size is small:
 *  - K <= 32 (out += s u b, dx += du a^T): a thread per output column over 16 rows, op(B)'s
 *    column in registers, op(A)'s rows in shared memory, the 16 C loads issued at once;
 *  - N <= 32, !ta (u = x a, du = s dy b^T): the inner size in chunks of 256 (512 when
 *    long), op(B)'s chunk in shared memory, a warp per 2 rows with lanes over the chunk;
 *    chunk sums go to a scratch and the last block of each row tile (an arrival counter)
 *    adds them in chunk order;
 *  - ta, !tb, K <= 256 (gb = s u^T dy, ga = x^T du: the inner size is the batch rows):
 *    a block per 32 columns of the wide operand, its 8 warps over the rows, the narrow
 *    operand in shared memory, the warps' sums added in warp order.
 * Every sum runs in a fixed order, so a call gives the same bits every time.
 * Owns nothing: partial sums live in the backend's row scratch (lc_cuda_rows), the
 * arrival counters are the backend's (zero between launches; each last block resets its
 * own). Must not: take shapes outside the three classes (the caller runs cuBLAS).
 */
#include "backend/cuda/cuda.h"

#define LG_THREADS 256
#define KS_RT 16  // rows of one small-K block
#define TH_RW 2   // rows of one warp in the thin kernel
#define TH_MT (TH_RW * (LG_THREADS / 32)) // rows of one thin block
#define TN_WARPS (LG_THREADS / 32)

/* K <= KM: grid (ceil(N/256), ceil(M/KS_RT)). */
template <int KM>
__global__ void __launch_bounds__(LG_THREADS)
    k_lg_ksmall(bool ta, bool tb, int M, int N, int K, float alpha, const float *__restrict__ A, int64_t lda,
                const float *__restrict__ B, int64_t ldb, float beta, float *C, int64_t ldc) {
    LC_PDL_TRIGGER();
    __shared__ float as[KS_RT][KM];
    int m0 = blockIdx.y * KS_RT, rows = min(KS_RT, M - m0);
    int n = blockIdx.x * LG_THREADS + threadIdx.x;
    bool on = n < N;
    // every load first (op(A)'s rows, op(B)'s column, C), then the stores and sums
    float av[KS_RT * KM / LG_THREADS + 1], b[KM], c0[KS_RT];
#pragma unroll
    for (int u = 0; u * LG_THREADS < KS_RT * KM; u++) {
        int i = u * LG_THREADS + threadIdx.x, r = i / KM, k = i % KM;
        av[u] = i < KS_RT * KM && r < rows && k < K ? (ta ? A[(size_t)k * lda + m0 + r] : A[(size_t)(m0 + r) * lda + k])
                                                     : 0.0f;
    }
#pragma unroll
    for (int k = 0; k < KM; k++)
        b[k] = on && k < K ? (tb ? B[(size_t)n * ldb + k] : B[(size_t)k * ldb + n]) : 0.0f;
#pragma unroll
    for (int r = 0; r < KS_RT; r++) c0[r] = beta != 0.0f && on && r < rows ? C[(size_t)(m0 + r) * ldc + n] : 0.0f;
#pragma unroll
    for (int u = 0; u * LG_THREADS < KS_RT * KM; u++) {
        int i = u * LG_THREADS + threadIdx.x;
        if (i < KS_RT * KM) as[i / KM][i % KM] = av[u];
    }
    __syncthreads();
    if (!on) return;
#pragma unroll
    for (int r = 0; r < KS_RT; r++) {
        if (r >= rows) break;
        float s = 0.0f;
#pragma unroll
        for (int k = 0; k < KM; k++) s += as[r][k] * b[k];
        C[(size_t)(m0 + r) * ldc + n] = beta == 0.0f ? alpha * s : alpha * s + beta * c0[r];
    }
}

/* !ta, N <= NM: grid (chunks of kc, ceil(M/TH_MT)); dynamic shared memory kc (NM+1)
 * floats. With one chunk the block writes C itself. */
template <int NM>
__global__ void __launch_bounds__(LG_THREADS)
    k_lg_thin(bool tb, int M, int N, int K, int kc, float alpha, const float *__restrict__ A, int64_t lda,
              const float *__restrict__ B, int64_t ldb, float beta, float *C, int64_t ldc, float *part,
              unsigned *counters) {
    LC_PDL_TRIGGER();
    extern __shared__ float bs[]; // bs[k * (NM+1) + n] = op(B)(k0 + k, n), zero past the chunk or N
    const int ld = NM + 1;
    int chunk = blockIdx.x, chunks = gridDim.x, k0 = chunk * kc, kn = min(kc, K - k0);
    int m0 = blockIdx.y * TH_MT;
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31, r0 = m0 + w * TH_RW;
    float a[TH_RW][8]; // this warp's rows, 8 columns a lane: the first batch is loaded with B's chunk
#pragma unroll
    for (int r = 0; r < TH_RW; r++)
#pragma unroll
        for (int j = 0; j < 8; j++) {
            int k = j * 32 + lane;
            a[r][j] = r0 + r < M && k < kn ? A[(size_t)(r0 + r) * lda + k0 + k] : 0.0f;
        }
    int total = kc * NM;
    for (int i0 = 0; i0 < total; i0 += 16 * LG_THREADS) { // 16 loads in flight a thread
        float v[16];
#pragma unroll
        for (int j = 0; j < 16; j++) {
            int i = i0 + j * LG_THREADS + threadIdx.x, k, n;
            if (tb) k = i % kc, n = i / kc; // along B's rows: contiguous in k
            else n = i % NM, k = i / NM;
            v[j] = i < total && k < kn && n < N ? (tb ? B[(size_t)n * ldb + k0 + k] : B[(size_t)(k0 + k) * ldb + n]) : 0.0f;
        }
#pragma unroll
        for (int j = 0; j < 16; j++) {
            int i = i0 + j * LG_THREADS + threadIdx.x, k, n;
            if (tb) k = i % kc, n = i / kc;
            else n = i % NM, k = i / NM;
            if (i < total) bs[k * ld + n] = v[j];
        }
    }
    __syncthreads();
    float acc[TH_RW][NM];
#pragma unroll
    for (int r = 0; r < TH_RW; r++)
#pragma unroll
        for (int n = 0; n < NM; n++) acc[r][n] = 0.0f;
    for (int kb = 0; kb < kn; kb += 8 * 32) { // lanes over k, 8 columns of A a lane in flight
        if (kb > 0) {
#pragma unroll
            for (int r = 0; r < TH_RW; r++)
#pragma unroll
                for (int j = 0; j < 8; j++) {
                    int k = kb + j * 32 + lane;
                    a[r][j] = r0 + r < M && k < kn ? A[(size_t)(r0 + r) * lda + k0 + k] : 0.0f;
                }
        }
#pragma unroll
        for (int j = 0; j < 8; j++) {
            const float *brow = bs + (kb + j * 32 + lane) * ld; // kc is a multiple of 256: inside
#pragma unroll
            for (int n = 0; n < NM; n++) {
                float bv = brow[n];
#pragma unroll
                for (int r = 0; r < TH_RW; r++) acc[r][n] += a[r][j] * bv;
            }
        }
    }
    // the warp's sums; lane n keeps output column n
    float mine[TH_RW];
#pragma unroll
    for (int r = 0; r < TH_RW; r++) {
        mine[r] = 0.0f;
#pragma unroll
        for (int n = 0; n < NM; n++) {
            float v = acc[r][n];
            for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
            if (lane == n) mine[r] = v;
        }
    }
    if (chunks == 1) {
#pragma unroll
        for (int r = 0; r < TH_RW; r++)
            if (r0 + r < M && lane < N) {
                float *c = C + (size_t)(r0 + r) * ldc + lane;
                *c = beta == 0.0f ? alpha * mine[r] : alpha * mine[r] + beta * *c;
            }
        return;
    }
    size_t stride = (size_t)M * N; // part[chunk][m][n]
#pragma unroll
    for (int r = 0; r < TH_RW; r++)
        if (r0 + r < M && lane < N) part[chunk * stride + (size_t)(r0 + r) * N + lane] = mine[r];
    __shared__ bool last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(&counters[blockIdx.y], 1u) == (unsigned)chunks - 1;
    __syncthreads();
    if (!last) return;
    __threadfence();
    int rows = min(TH_MT, M - m0);
    for (int o = threadIdx.x; o < rows * N; o += LG_THREADS) {
        const float *p = part + (size_t)(m0 + o / N) * N + o % N;
        float t = 0.0f;
        for (int j = 0; j < chunks; j += 16) { // 16 loads in flight, added in chunk order
            float v[16];
#pragma unroll
            for (int u = 0; u < 16; u++) v[u] = j + u < chunks ? __ldcg(p + (size_t)(j + u) * stride) : 0.0f;
#pragma unroll
            for (int u = 0; u < 16; u++)
                if (j + u < chunks) t += v[u];
        }
        float *c = C + (size_t)(m0 + o / N) * ldc + o % N;
        *c = beta == 0.0f ? alpha * t : alpha * t + beta * *c;
    }
    if (threadIdx.x == 0) counters[blockIdx.y] = 0; // ready for the next launch (same stream, in order)
}

/* ta, !tb, K <= 256: out(c, j) = sum over t of W[t*ldw + c] S[t*lds + j], c < ncols, j < R
 * <= RM, written at C[j*ldc + c] (wide_n) or C[c*ldc + j]. Grid ceil(ncols/32); dynamic
 * shared memory max(K RM, 8 RM 33) floats. */
template <int RM>
__global__ void __launch_bounds__(LG_THREADS)
    k_lg_tn(bool wide_n, int ncols, int R, int K, float alpha, const float *__restrict__ W, int64_t ldw,
            const float *__restrict__ S, int64_t lds, float beta, float *C, int64_t ldc) {
    LC_PDL_TRIGGER();
    extern __shared__ float sm[];
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31, c = blockIdx.x * 32 + lane;
    float x[16]; // rows w, w + 8, ... of W: the first 16 are loaded with S
#pragma unroll
    for (int u = 0; u < 16; u++) {
        int t = w + u * TN_WARPS;
        x[u] = t < K && c < ncols ? W[(size_t)t * ldw + c] : 0.0f;
    }
    int total = K * RM;
    for (int i0 = 0; i0 < total; i0 += 16 * LG_THREADS) {
        float v[16];
#pragma unroll
        for (int u = 0; u < 16; u++) {
            int i = i0 + u * LG_THREADS + threadIdx.x, t = i / RM, j = i % RM;
            v[u] = i < total && j < R ? S[(size_t)t * lds + j] : 0.0f;
        }
#pragma unroll
        for (int u = 0; u < 16; u++) {
            int i = i0 + u * LG_THREADS + threadIdx.x;
            if (i < total) sm[i] = v[u];
        }
    }
    __syncthreads();
    float acc[RM];
#pragma unroll
    for (int j = 0; j < RM; j++) acc[j] = 0.0f;
    for (int t0 = w; t0 < K; t0 += 16 * TN_WARPS) { // 16 loads a lane in flight
        if (t0 > w) {
#pragma unroll
            for (int u = 0; u < 16; u++) {
                int t = t0 + u * TN_WARPS;
                x[u] = t < K && c < ncols ? W[(size_t)t * ldw + c] : 0.0f;
            }
        }
#pragma unroll
        for (int u = 0; u < 16; u++) {
            int t = t0 + u * TN_WARPS;
            if (t < K) {
#pragma unroll
                for (int j = 0; j < RM; j++) acc[j] += x[u] * sm[t * RM + j];
            }
        }
    }
    __syncthreads(); // S is no longer needed: the warps' sums go in its place
    const int ld = 33;
    float *red = sm; // red[(w RM + j) 33 + lane]
#pragma unroll
    for (int j = 0; j < RM; j++) red[(w * RM + j) * ld + lane] = acc[j];
    __syncthreads();
    for (int o = threadIdx.x; o < RM * 32; o += LG_THREADS) {
        int j, l;
        if (wide_n) j = o / 32, l = o % 32; // C's rows are j: consecutive threads along c
        else l = o / RM, j = o % RM;        // C's rows are c: consecutive threads along j
        int cc = blockIdx.x * 32 + l;
        if (j >= R || cc >= ncols) continue;
        float t = 0.0f;
        for (int q = 0; q < TN_WARPS; q++) t += red[(q * RM + j) * ld + l];
        float *p = wide_n ? C + (size_t)j * ldc + cc : C + (size_t)cc * ldc + j;
        *p = beta == 0.0f ? alpha * t : alpha * t + beta * *p;
    }
}

bool lc_cuda_lora_gemm(lc_cuda *c, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                       int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    if (M <= 0 || N <= 0 || K <= 0) return false;
    if (ta && !tb && K <= 256 && (M <= 32 || N <= 32)) { // the batch rows are the inner size
        bool wide_n = M <= 32 && (N > 32 || N >= M);
        int64_t R = wide_n ? M : N, ncols = wide_n ? N : M;
        const float *W = wide_n ? B : A, *S = wide_n ? A : B;
        int64_t ldw = wide_n ? ldb : lda, lds = wide_n ? lda : ldb;
        unsigned grid = (unsigned)((ncols + 31) / 32);
        if (R <= 16) {
            size_t sm = (size_t)(K * 16 > TN_WARPS * 16 * 33 ? K * 16 : TN_WARPS * 16 * 33) * sizeof(float);
            k_lg_tn<16><<<grid, LG_THREADS, sm, c->st>>>(wide_n, (int)ncols, (int)R, (int)K, alpha, W, ldw, S, lds,
                                                         beta, C, ldc);
        } else {
            size_t sm = (size_t)(K * 32 > TN_WARPS * 32 * 33 ? K * 32 : TN_WARPS * 32 * 33) * sizeof(float);
            k_lg_tn<32><<<grid, LG_THREADS, sm, c->st>>>(wide_n, (int)ncols, (int)R, (int)K, alpha, W, ldw, S, lds,
                                                         beta, C, ldc);
        }
        LC_LAUNCHED(c);
        return true;
    }
    if (M > 256) return false; // many rows: cuBLAS's tiles win (8 × 512 measured so)
    if (K <= 32) {
        dim3 grid((unsigned)((N + LG_THREADS - 1) / LG_THREADS), (unsigned)((M + KS_RT - 1) / KS_RT));
        if (K <= 16)
            k_lg_ksmall<16><<<grid, LG_THREADS, 0, c->st>>>(ta, tb, (int)M, (int)N, (int)K, alpha, A, lda, B, ldb,
                                                             beta, C, ldc);
        else
            k_lg_ksmall<32><<<grid, LG_THREADS, 0, c->st>>>(ta, tb, (int)M, (int)N, (int)K, alpha, A, lda, B, ldb,
                                                             beta, C, ldc);
        LC_LAUNCHED(c);
        return true;
    }
    if (!ta && N <= 32) {
        int64_t kc = 256, chunks = (K + 255) / 256;
        if (chunks > 32 && N <= 16) kc = 512, chunks = (K + 511) / 512; // fewer partial sums to add
        int64_t tiles = (M + TH_MT - 1) / TH_MT;
        float *part = chunks > 1 ? lc_cuda_rows(c, (size_t)(chunks * M * N)) : NULL;
        dim3 grid((unsigned)chunks, (unsigned)tiles);
        int nm = N <= 16 ? 16 : 32;
        size_t sm = (size_t)(kc * (nm + 1)) * sizeof(float);
        if (nm == 16)
            k_lg_thin<16><<<grid, LG_THREADS, sm, c->st>>>(tb, (int)M, (int)N, (int)K, (int)kc, alpha, A, lda, B,
                                                           ldb, beta, C, ldc, part, c->counter);
        else
            k_lg_thin<32><<<grid, LG_THREADS, sm, c->st>>>(tb, (int)M, (int)N, (int)K, (int)kc, alpha, A, lda, B,
                                                           ldb, beta, C, ldc, part, c->counter);
        LC_LAUNCHED(c);
        return true;
    }
    return false;
}
