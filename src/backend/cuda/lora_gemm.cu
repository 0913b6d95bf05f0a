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
 *    column in registers, op(A)'s rows in shared memory, the 16 C loads issued at once; also
 *    at many rows (out += s u b; dx += du a^T wider than 8192), where it beats cuBLAS;
 *  - N <= 32, !ta (u = x a, du = s dy b^T): the inner size in chunks of 256 (512 when
 *    long), op(B)'s chunk in shared memory, a warp per 2 rows with lanes over the chunk;
 *    chunk sums go to a scratch and the last block of each row tile (an arrival counter)
 *    adds them in chunk order;
 *  - ta, !tb, K <= 256 (gb = s u^T dy, ga = x^T du: the inner size is the batch rows):
 *    a block per 32 columns of the wide operand, its 8 warps over the rows, the narrow
 *    operand in shared memory, the warps' sums added in warp order.
 * Every sum runs in a fixed order, so a call gives the same bits every time.
 * ->gemm_n runs up to LC_GEMM_N_MAX products of one class in one launch (blockIdx.z picks
 * the product; a block past its product's extent returns), each block doing exactly what
 * it does alone, so a group gives the same bits as its products one by one: q/k/v's and
 * gate/up's products each cost one launch's latency instead of two or three.
 * Also ->swiglu_lora: SwiGLU with gate's and up's out += s u b folded in (the small-K
 * tiling, both products' sums exactly as the small-K kernel forms them). At 1,024 rows or
 * more (rank ≤ 16, even widths) the small-K products and SwiGLU run as pair kernels: two
 * columns a thread over 64-row tiles, the same sums in the same order (the same bits;
 * LORAC_CUDA_VEC=0 keeps a column a thread). SwiGLU also reads gate and up from their bf16
 * pair and writes the sums back over it in place (lc_model_gu16: the frozen products wrote
 * them as bf16), each tile's next rows loaded before its stores.
 * Owns nothing: partial sums live in the backend's row scratch (lc_cuda_rows), the
 * arrival counters are the backend's (zero between launches; each last block resets its
 * own). Must not: take shapes outside the three classes (the caller runs cuBLAS).
 */
#include <cuda_bf16.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda.h"

#define LG_THREADS 256
#define KS_RT 16  // rows of one small-K block
#define TH_RW 2   // rows of one warp in the thin kernel
#define TH_MT (TH_RW * (LG_THREADS / 32)) // rows of one thin block
#define TN_WARPS (LG_THREADS / 32)
#define LG_TILES 16 // row tiles of one thin product at most (256 rows / TH_MT)

/* One product of a launch. The A^T B kernel reads A as the wide operand W (lda its
 * leading dimension), B as the narrow one S, M as W's column count and N as S's. */
struct lg_prod {
    const float *A, *B, *X; // X: where the small-K kernel reads beta's term (C, or ->gemm_n's X)
    float *C, *part; // part: the thin kernel's chunk sums (NULL with one chunk)
    int64_t lda, ldb, ldc;
    int M, N, K, kc, chunks; // kc, chunks: the thin kernel's inner chunks
    float alpha, beta;
    bool ta, tb, wide_n; // wide_n: the A^T B kernel writes C[j*ldc + c] (else C[c*ldc + j])
};
struct lg_grp {
    lg_prod p[LC_GEMM_N_MAX];
};

/* K <= KM: grid (ceil(N/256), ceil(M/KS_RT)). */
template <int KM>
__global__ void __launch_bounds__(LG_THREADS) k_lg_ksmall(const __grid_constant__ lg_grp g) {
    LC_PDL_TRIGGER();
    const lg_prod &p = g.p[blockIdx.z];
    const bool ta = p.ta, tb = p.tb;
    const int M = p.M, N = p.N, K = p.K;
    const float alpha = p.alpha, beta = p.beta, *__restrict__ A = p.A, *__restrict__ B = p.B;
    const int64_t lda = p.lda, ldb = p.ldb, ldc = p.ldc;
    float *C = p.C;
    const float *X = p.X;
    if ((int)blockIdx.y * KS_RT >= M || (int)blockIdx.x * LG_THREADS >= N) return; // past this product
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
    for (int r = 0; r < KS_RT; r++) c0[r] = beta != 0.0f && on && r < rows ? X[(size_t)(m0 + r) * ldc + n] : 0.0f;
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

/* ->swiglu_lora's arguments: gate, up (N, I) += scale · u b where u (N, r) is given, then
 * h = swiglu; gu NULL: gate, up written back, else bf16 into gu (2, N, I); gate and up
 * NULL: read from gu (bf16) and written back over it. */
struct lg_swi {
    float *h, *gate, *up;
    __nv_bfloat16 *gu, *hb; // hb: h rounded to bf16 as well, or NULL
    const float *ug, *bg, *uu, *bu;
    int64_t N, I;
    int r;
    float scale;
};

/* grid (ceil(I/256), ceil(N/SW_ROWS)): a thread per column, its adapters' B columns in
 * registers for SW_ROWS rows (B read once a 64-row tile, not once a 16-row one), the rows
 * in chunks of KS_RT as k_lg_ksmall takes them (its loads first, its sum in k order,
 * alpha s + beta c with beta 1), then k_swiglu's expression. */
#define SW_ROWS 64
/* gate and up of rows m0.. (up to rows) at column n, from float32 gate/up or (B16, in place)
 * from their bf16 bits in gu. */
template <bool B16>
__device__ __forceinline__ void lg_swiglu_load(const lg_swi &a, int64_t m0, int rows, int64_t n, float *g0,
                                               float *u0) {
    const int64_t I = a.I;
    const unsigned short *gb = (const unsigned short *)a.gu, *ub = gb + a.N * I;
#pragma unroll
    for (int r = 0; r < KS_RT; r++) {
        const int64_t i = (m0 + r) * I + n;
        if (B16) {
            g0[r] = r < rows ? __uint_as_float((unsigned)gb[i] << 16) : 0.0f;
            u0[r] = r < rows ? __uint_as_float((unsigned)ub[i] << 16) : 0.0f;
        } else {
            g0[r] = r < rows ? a.gate[i] : 0.0f;
            u0[r] = r < rows ? a.up[i] : 0.0f;
        }
    }
}

template <int KM>
__device__ __forceinline__ void lg_swiglu_rows(const lg_swi &a, const float (*sg)[KM], const float (*su)[KM],
                                               const float *bg, const float *bu, int64_t m0, int rows, int64_t n,
                                               const float *g0, const float *u0) {
    const int64_t I = a.I;
#pragma unroll
    for (int r = 0; r < KS_RT; r++) {
        if (r >= rows) break;
        float g = g0[r], u = u0[r];
        if (a.ug) {
            float s = 0.0f;
#pragma unroll
            for (int k = 0; k < KM; k++) s += sg[r][k] * bg[k];
            g = a.scale * s + 1.0f * g;
        }
        if (a.uu) {
            float s = 0.0f;
#pragma unroll
            for (int k = 0; k < KM; k++) s += su[r][k] * bu[k];
            u = a.scale * s + 1.0f * u;
        }
        int64_t i = (m0 + r) * I + n;
        float hv = g / (1.0f + expf(-g)) * u;
        if (a.h) a.h[i] = hv;
        if (a.hb) a.hb[i] = __float2bfloat16_rn(hv);
        if (a.gu) {
            if (a.gate || a.ug || a.uu) a.gu[i] = __float2bfloat16_rn(g), a.gu[a.N * I + i] = __float2bfloat16_rn(u);
        } else {
            a.gate[i] = g, a.up[i] = u;
        }
    }
}

template <int KM, bool B16>
__global__ void __launch_bounds__(LG_THREADS) k_lg_swiglu(const __grid_constant__ lg_swi a) {
    LC_PDL_TRIGGER();
    __shared__ float sg[SW_ROWS][KM], su[SW_ROWS][KM];
    const int K = a.r;
    const int64_t t0 = (int64_t)blockIdx.y * SW_ROWS, n = (int64_t)blockIdx.x * LG_THREADS + threadIdx.x, I = a.I;
    const int trows = (int)min((int64_t)SW_ROWS, a.N - t0);
    const bool on = n < I;
    float bg[KM], bu[KM];
    for (int i = threadIdx.x; i < SW_ROWS * KM; i += LG_THREADS) {
        int rr = i / KM, k = i % KM;
        bool ok = rr < trows && k < K;
        sg[rr][k] = ok && a.ug ? a.ug[(t0 + rr) * K + k] : 0.0f;
        su[rr][k] = ok && a.uu ? a.uu[(t0 + rr) * K + k] : 0.0f;
    }
#pragma unroll
    for (int k = 0; k < KM; k++) {
        bg[k] = on && k < K && a.bg ? a.bg[(int64_t)k * I + n] : 0.0f;
        bu[k] = on && k < K && a.bu ? a.bu[(int64_t)k * I + n] : 0.0f;
    }
    __syncthreads();
    if (!on) return;
    // in place (B16): each chunk's bf16 bits loaded before the previous chunk's stores (at
    // rank 32 that costs the second block a multiprocessor: there the loads follow the stores)
    if constexpr (B16 && KM <= 16) {
        const unsigned short *gp = (const unsigned short *)a.gu, *up = gp + a.N * I;
        unsigned short gb[KS_RT], ub[KS_RT];
#pragma unroll
        for (int r = 0; r < KS_RT; r++) {
            const int64_t i = (t0 + r) * I + n;
            gb[r] = r < trows ? gp[i] : 0, ub[r] = r < trows ? up[i] : 0;
        }
        for (int c0 = 0; c0 < trows; c0 += KS_RT) {
            float g0[KS_RT], u0[KS_RT];
#pragma unroll
            for (int r = 0; r < KS_RT; r++)
                g0[r] = __uint_as_float((unsigned)gb[r] << 16), u0[r] = __uint_as_float((unsigned)ub[r] << 16);
            const int nrows = min(KS_RT, trows - c0 - KS_RT);
#pragma unroll
            for (int r = 0; r < KS_RT; r++) {
                const int64_t i = (t0 + c0 + KS_RT + r) * I + n;
                gb[r] = r < nrows ? gp[i] : 0, ub[r] = r < nrows ? up[i] : 0;
            }
            lg_swiglu_rows<KM>(a, sg + c0, su + c0, bg, bu, t0 + c0, min(KS_RT, trows - c0), n, g0, u0);
        }
    } else {
        for (int c0 = 0; c0 < trows; c0 += KS_RT) {
            float g0[KS_RT], u0[KS_RT];
            lg_swiglu_load<B16>(a, t0 + c0, min(KS_RT, trows - c0), n, g0, u0);
            lg_swiglu_rows<KM>(a, sg + c0, su + c0, bg, bu, t0 + c0, min(KS_RT, trows - c0), n, g0, u0);
        }
    }
}

/* Two columns a thread (rank bound 16): the same sums, in the same order, as
 * lg_swiglu_rows — each u row's values read 4 at a time from shared memory and used for
 * both columns, gate/up/h moved as pairs (8-byte float32, 4-byte bf16 accesses) — so half
 * the shared-memory loads and memory instructions an element. Needs I even and 8-byte
 * aligned rows (sw2_ok). grid (ceil(I/512), ceil(N/SW_ROWS)). */
#define SW2_RT 8 // rows a chunk: 2 × 2 pairs of loads in flight a row
__device__ __forceinline__ float sw2_sum(const float *ur, const float *bc) {
    float s = 0.0f;
#pragma unroll
    for (int k4 = 0; k4 < 4; k4++) {
        float4 q = *(const float4 *)(ur + 4 * k4);
        s += q.x * bc[4 * k4];
        s += q.y * bc[4 * k4 + 1];
        s += q.z * bc[4 * k4 + 2];
        s += q.w * bc[4 * k4 + 3];
    }
    return s;
}

/* One row of k_lg_swiglu2: columns n, n + 1 of row m (index i) from their gate g and up u
 * (the frozen products'), the adapters' sums added, h and the stores. */
__device__ __forceinline__ void sw2_row(const lg_swi &a, const float *sgr, const float *sur, const float (*bg)[16],
                                        const float (*bu)[16], float g[2], float u[2], int64_t i) {
    float hv[2];
#pragma unroll
    for (int c = 0; c < 2; c++) { // lg_swiglu_rows' expressions, column by column
        if (a.ug) g[c] = a.scale * sw2_sum(sgr, bg[c]) + 1.0f * g[c];
        if (a.uu) u[c] = a.scale * sw2_sum(sur, bu[c]) + 1.0f * u[c];
        hv[c] = g[c] / (1.0f + expf(-g[c])) * u[c];
    }
    if (a.h) *(float2 *)(a.h + i) = make_float2(hv[0], hv[1]);
    if (a.hb) *(__nv_bfloat162 *)(a.hb + i) = __floats2bfloat162_rn(hv[0], hv[1]);
    if (a.gu) {
        if (!(a.gate || a.ug || a.uu)) return; // in place with no adapter: the pair as it was
        *(__nv_bfloat162 *)(a.gu + i) = __floats2bfloat162_rn(g[0], g[1]);
        *(__nv_bfloat162 *)(a.gu + a.N * a.I + i) = __floats2bfloat162_rn(u[0], u[1]);
    } else {
        *(float2 *)(a.gate + i) = make_float2(g[0], g[1]);
        *(float2 *)(a.up + i) = make_float2(u[0], u[1]);
    }
}

/* B16: gate and up read from gu's bf16 (in place, a.gate NULL), each chunk's pairs loaded
 * before the previous chunk's stores (the compiler may not move loads of gu past stores to
 * it); else from float32 gate/up. One instantiation each, so that neither holds the
 * other's registers (128 at most: 2 blocks a multiprocessor). */
template <bool B16>
__global__ void __launch_bounds__(LG_THREADS, 2) k_lg_swiglu2(const __grid_constant__ lg_swi a) {
    LC_PDL_TRIGGER();
    __shared__ __align__(16) float sg[SW_ROWS][16], su[SW_ROWS][16];
    const int K = a.r;
    const int64_t t0 = (int64_t)blockIdx.y * SW_ROWS, I = a.I;
    const int64_t n = 2 * ((int64_t)blockIdx.x * LG_THREADS + threadIdx.x);
    const int trows = (int)min((int64_t)SW_ROWS, a.N - t0);
    const bool on = n < I;
    float bg[2][16], bu[2][16];
    for (int i = threadIdx.x; i < SW_ROWS * 16; i += LG_THREADS) {
        int rr = i / 16, k = i % 16;
        bool ok = rr < trows && k < K;
        sg[rr][k] = ok && a.ug ? a.ug[(t0 + rr) * K + k] : 0.0f;
        su[rr][k] = ok && a.uu ? a.uu[(t0 + rr) * K + k] : 0.0f;
    }
#pragma unroll
    for (int k = 0; k < 16; k++) {
        float2 vg = on && k < K && a.bg ? *(const float2 *)(a.bg + (int64_t)k * I + n) : make_float2(0.0f, 0.0f);
        float2 vu = on && k < K && a.bu ? *(const float2 *)(a.bu + (int64_t)k * I + n) : make_float2(0.0f, 0.0f);
        bg[0][k] = vg.x, bg[1][k] = vg.y, bu[0][k] = vu.x, bu[1][k] = vu.y;
    }
    __syncthreads();
    if (!on) return;
    if constexpr (B16) {
        const unsigned *gu32 = (const unsigned *)a.gu, *uu32 = (const unsigned *)(a.gu + a.N * I);
        unsigned gw[SW2_RT], uw[SW2_RT];
#pragma unroll
        for (int r = 0; r < SW2_RT; r++) {
            const int64_t i = ((t0 + r) * I + n) / 2;
            gw[r] = r < trows ? gu32[i] : 0u, uw[r] = r < trows ? uu32[i] : 0u;
        }
        for (int c0 = 0; c0 < trows; c0 += SW2_RT) {
            const int rows = min(SW2_RT, trows - c0), nrows = min(SW2_RT, trows - c0 - SW2_RT);
            const int64_t m0 = t0 + c0;
            unsigned gn[SW2_RT], un[SW2_RT];
#pragma unroll
            for (int r = 0; r < SW2_RT; r++) {
                const int64_t i = ((m0 + SW2_RT + r) * I + n) / 2;
                gn[r] = r < nrows ? gu32[i] : 0u, un[r] = r < nrows ? uu32[i] : 0u;
            }
#pragma unroll
            for (int r = 0; r < SW2_RT; r++) {
                if (r >= rows) break;
                float g[2] = {__uint_as_float(gw[r] << 16), __uint_as_float(gw[r] & 0xffff0000u)};
                float u[2] = {__uint_as_float(uw[r] << 16), __uint_as_float(uw[r] & 0xffff0000u)};
                sw2_row(a, sg[c0 + r], su[c0 + r], bg, bu, g, u, (m0 + r) * I + n);
            }
#pragma unroll
            for (int r = 0; r < SW2_RT; r++) gw[r] = gn[r], uw[r] = un[r];
        }
    } else {
        for (int c0 = 0; c0 < trows; c0 += SW2_RT) {
            const int rows = min(SW2_RT, trows - c0);
            const int64_t m0 = t0 + c0;
            float2 g0[SW2_RT], u0[SW2_RT];
#pragma unroll
            for (int r = 0; r < SW2_RT; r++) {
                const int64_t i = (m0 + r) * I + n;
                g0[r] = r < rows ? *(const float2 *)(a.gate + i) : make_float2(0.0f, 0.0f);
                u0[r] = r < rows ? *(const float2 *)(a.up + i) : make_float2(0.0f, 0.0f);
            }
#pragma unroll
            for (int r = 0; r < SW2_RT; r++) {
                if (r >= rows) break;
                float g[2] = {g0[r].x, g0[r].y}, u[2] = {u0[r].x, u0[r].y};
                sw2_row(a, sg[c0 + r], su[c0 + r], bg, bu, g, u, (m0 + r) * I + n);
            }
        }
    }
}

/* k_lg_ksmall for many rows (K ≤ 16, !tb): tiles of KS2_ROWS rows (op(A)'s tile in shared
 * memory, B's columns read once a tile, not once a 16-row one), two columns a thread (each A
 * value read 4 at a time and used for both; C, X and B as 8-byte pairs). The same sums in the
 * same order as k_lg_ksmall<16>, and its epilogue as nvcc forms it there (alpha s rounded,
 * then fma(beta, x, that)), written out so that no other fusion is chosen: the same bits.
 * grid (ceil(N/512), ceil(M/KS2_ROWS), n). */
#define KS2_ROWS 64
#define KS2_RT 8
__global__ void __launch_bounds__(LG_THREADS) k_lg_ksmall2(const __grid_constant__ lg_grp g) {
    LC_PDL_TRIGGER();
    const lg_prod &p = g.p[blockIdx.z];
    if ((int)blockIdx.y * KS2_ROWS >= p.M || (int)blockIdx.x * LG_THREADS * 2 >= p.N) return; // past this product
    __shared__ __align__(16) float as[KS2_ROWS][16];
    const int m0 = blockIdx.y * KS2_ROWS, trows = min(KS2_ROWS, p.M - m0), K = p.K;
    const int n = 2 * (blockIdx.x * LG_THREADS + threadIdx.x);
    const bool on = n < p.N;
    for (int i = threadIdx.x; i < KS2_ROWS * 16; i += LG_THREADS) { // op(A)'s tile
        int r = i / 16, k = i % 16;
        as[r][k] = r < trows && k < K ? (p.ta ? p.A[(size_t)k * p.lda + m0 + r] : p.A[(size_t)(m0 + r) * p.lda + k])
                                      : 0.0f;
    }
    float b[2][16]; // B's two columns
#pragma unroll
    for (int k = 0; k < 16; k++) {
        float2 v = on && k < K ? *(const float2 *)(p.B + (size_t)k * p.ldb + n) : make_float2(0.0f, 0.0f);
        b[0][k] = v.x, b[1][k] = v.y;
    }
    const float alpha = p.alpha, beta = p.beta, *X = p.X;
    const int64_t ldc = p.ldc;
    float *C = p.C;
    __syncthreads();
    if (!on) return;
    for (int c0 = 0; c0 < trows; c0 += KS2_RT) {
        const int rows = min(KS2_RT, trows - c0);
        float2 cv[KS2_RT];
#pragma unroll
        for (int r = 0; r < KS2_RT; r++)
            cv[r] = beta != 0.0f && r < rows ? *(const float2 *)(X + (size_t)(m0 + c0 + r) * ldc + n)
                                             : make_float2(0.0f, 0.0f);
#pragma unroll
        for (int r = 0; r < KS2_RT; r++) {
            if (r >= rows) break;
            float t0 = __fmul_rn(alpha, sw2_sum(as[c0 + r], b[0])), t1 = __fmul_rn(alpha, sw2_sum(as[c0 + r], b[1]));
            float2 o = beta == 0.0f ? make_float2(t0, t1)
                                    : make_float2(__fmaf_rn(beta, cv[r].x, t0), __fmaf_rn(beta, cv[r].y, t1));
            *(float2 *)(C + (size_t)(m0 + c0 + r) * ldc + n) = o;
        }
    }
}

/* Whether k_lg_ksmall2 takes a launch of n small-K products: each !tb, K ≤ 16, at least
 * KS2_MIN rows, N, ldb and ldc even, B, C and X 8-byte aligned; LORAC_CUDA_VEC not 0. */
#define KS2_MIN 1024
static bool ks2_ok(const lg_grp *g, int n) {
    if (!lc_cuda_vec()) return false; // a column a thread
    for (int i = 0; i < n; i++) {
        const lg_prod &p = g->p[i];
        if (p.tb || p.K > 16 || p.M < KS2_MIN || p.N % 2 || p.ldb % 2 || p.ldc % 2 ||
            ((uintptr_t)p.B | (uintptr_t)p.C | (uintptr_t)p.X) & 7)
            return false;
    }
    return true;
}

/* Whether k_lg_swiglu2 takes a: rank ≤ 16, I even, every array 8-byte aligned (so each
 * row's pairs are), LORAC_CUDA_VEC not 0, and SW2_ROWS rows or more (its blocks cover twice
 * the columns: at the recipe's 136 rows it left multiprocessors idle, 1% slower a step;
 * at 4096, 1% faster; cuda_notes.md "r17"). */
#define SW2_ROWS 1024
static bool sw2_ok(const lg_swi &a) {
    if (!lc_cuda_vec() || a.r > 16 || a.I % 2 || a.N < SW2_ROWS) return false; // else a column a thread
    const void *p[] = {a.h, a.gate, a.up, a.gu, a.hb, a.bg, a.bu};
    for (size_t i = 0; i < sizeof p / sizeof *p; i++)
        if ((uintptr_t)p[i] & 7) return false;
    return true;
}

/* SwiGLU of the bf16 pair alone (in place with no adapter: the frozen products held the
 * adapters' part already, ->matmul_n_bo's xk): 8 elements a thread, the pair's 16-byte
 * loads, h (float32, optional) and its bf16 copy (optional) as 16-byte stores; the pair is
 * only read. The same expression per element as lg_swiglu_rows and sw2_row, so the same bits.
 * n a multiple of 8, every array 16-byte aligned (sw8_ok). */
__global__ void __launch_bounds__(256) k_swiglu_pair(float *h, __nv_bfloat16 *hb, const __nv_bfloat16 *gu, int64_t n) {
    LC_PDL_TRIGGER();
    const int64_t i = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * 8;
    if (i >= n) return;
    uint4 gw = *(const uint4 *)(gu + i), uw = *(const uint4 *)(gu + n + i);
    const unsigned *gp = (const unsigned *)&gw, *up = (const unsigned *)&uw;
    float hv[8];
#pragma unroll
    for (int k = 0; k < 8; k++) {
        unsigned gb = k & 1 ? gp[k / 2] & 0xffff0000u : gp[k / 2] << 16;
        unsigned ub = k & 1 ? up[k / 2] & 0xffff0000u : up[k / 2] << 16;
        float g = __uint_as_float(gb), u = __uint_as_float(ub);
        hv[k] = g / (1.0f + expf(-g)) * u;
    }
    if (h) {
        *(float4 *)(h + i) = make_float4(hv[0], hv[1], hv[2], hv[3]);
        *(float4 *)(h + i + 4) = make_float4(hv[4], hv[5], hv[6], hv[7]);
    }
    if (hb) {
        uint4 o;
        unsigned *op = (unsigned *)&o;
#pragma unroll
        for (int k = 0; k < 4; k++) {
            __nv_bfloat162 t = __floats2bfloat162_rn(hv[2 * k], hv[2 * k + 1]);
            memcpy(&op[k], &t, 4);
        }
        *(uint4 *)(hb + i) = o;
    }
}

/* Whether k_swiglu_pair takes a: in place (gu, no float32 gate/up), no adapter, N·I a
 * multiple of 8, the arrays 16-byte aligned; LORAC_CUDA_VEC not 0. */
static bool sw8_ok(const lg_swi &a) {
    if (!lc_cuda_vec() || !a.gu || a.gate || a.up || a.ug || a.uu || (a.N * a.I) % 8) return false;
    return !(((uintptr_t)a.h | (uintptr_t)a.gu | (uintptr_t)a.hb) & 15);
}

void lc_cuda_swiglu_lora(lc_backend *be, float *h, void *gu, float *gate, float *up, int64_t N, int64_t I,
                         const float *ug, const float *bg, const float *uu, const float *bu, int r, float scale,
                         void *hb) {
    lc_cuda *c = (lc_cuda *)be->impl;
    LC_PROF(c, gu ? "swiglu_lora+pack n=%lld" : "swiglu_lora n=%lld", N * I);
    if (N <= 0 || I <= 0) return;
    lg_swi a = {h, gate, up, (__nv_bfloat16 *)gu, (__nv_bfloat16 *)hb, ug, bg, uu, bu, N, I, r, scale};
    if (sw8_ok(a)) {
        int64_t n = N * I;
        k_swiglu_pair<<<(unsigned)((n / 8 + 255) / 256), 256, 0, c->st>>>(h, (__nv_bfloat16 *)hb, a.gu, n);
        LC_LAUNCHED(c);
        return;
    }
    if (sw2_ok(a)) {
        dim3 g2((unsigned)((I / 2 + LG_THREADS - 1) / LG_THREADS), (unsigned)((N + SW_ROWS - 1) / SW_ROWS));
        if (gate) k_lg_swiglu2<false><<<g2, LG_THREADS, 0, c->st>>>(a);
        else k_lg_swiglu2<true><<<g2, LG_THREADS, 0, c->st>>>(a);
        LC_LAUNCHED(c);
        return;
    }
    dim3 grid((unsigned)((I + LG_THREADS - 1) / LG_THREADS), (unsigned)((N + SW_ROWS - 1) / SW_ROWS));
    if (r > 16 && gate) k_lg_swiglu<32, false><<<grid, LG_THREADS, 0, c->st>>>(a);
    else if (r > 16) k_lg_swiglu<32, true><<<grid, LG_THREADS, 0, c->st>>>(a);
    else if (gate) k_lg_swiglu<16, false><<<grid, LG_THREADS, 0, c->st>>>(a);
    else k_lg_swiglu<16, true><<<grid, LG_THREADS, 0, c->st>>>(a);
    LC_LAUNCHED(c);
}

/* !ta, N <= NM: grid (chunks of kc, ceil(M/TH_MT)); dynamic shared memory kc (NM+1)
 * floats. With one chunk the block writes C itself. */
template <int NM>
__global__ void __launch_bounds__(LG_THREADS) k_lg_thin(const __grid_constant__ lg_grp g, unsigned *counters) {
    LC_PDL_TRIGGER();
    const lg_prod &p = g.p[blockIdx.z];
    const bool tb = p.tb;
    const int M = p.M, N = p.N, K = p.K, kc = p.kc, chunks = p.chunks;
    const float alpha = p.alpha, beta = p.beta, *__restrict__ A = p.A, *__restrict__ B = p.B;
    const int64_t lda = p.lda, ldb = p.ldb, ldc = p.ldc;
    float *C = p.C, *part = p.part;
    int chunk = blockIdx.x, m0 = blockIdx.y * TH_MT;
    if (chunk >= chunks || m0 >= M) return; // past this product
    counters += blockIdx.z * LG_TILES;
    extern __shared__ float bs[]; // bs[k * (NM+1) + n] = op(B)(k0 + k, n), zero past the chunk or N
    const int ld = NM + 1;
    int k0 = chunk * kc, kn = min(kc, K - k0);
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
__global__ void __launch_bounds__(LG_THREADS) k_lg_tn(const __grid_constant__ lg_grp g) {
    LC_PDL_TRIGGER();
    const lg_prod &p = g.p[blockIdx.z];
    const bool wide_n = p.wide_n;
    const int ncols = p.M, R = p.N, K = p.K;
    const float alpha = p.alpha, beta = p.beta, *__restrict__ W = p.A, *__restrict__ S = p.B;
    const int64_t ldw = p.lda, lds = p.ldb, ldc = p.ldc;
    float *C = p.C;
    if ((int)blockIdx.x * 32 >= ncols) return; // past this product
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

enum { LG_NONE, LG_TN, LG_KSMALL, LG_THIN };

/* Which kernel takes a product (->gemm's arguments), LG_NONE for cuBLAS. */
static int lg_class(bool ta, bool tb, int64_t M, int64_t N, int64_t K, bool tf32) {
    if (M <= 0 || N <= 0 || K <= 0) return LG_NONE;
    if (ta && !tb && K <= 256 && (M <= 32 || N <= 32)) return LG_TN; // the batch rows are the inner size
    if (M > 256) { // many rows (8 × 512: 4096): cuBLAS, except the short-K products where
        // k_lg_ksmall is faster (out += s u b at any width; dx += du a^T beyond 8192 columns
        // where cuBLAS runs float32, not TF32: cuda_notes.md "The adapters' products at 4096
        // rows", "l2pf12"); LORAC_CUDA_LORA_MANY=0: cuBLAS
        const char *e = getenv("LORAC_CUDA_LORA_MANY"), *w = getenv("LORAC_CUDA_LORA_WIDE");
        bool off = e && !strcmp(e, "0"), wide = !tf32 || (w && !strcmp(w, "1"));
        return !off && K <= 32 && (!tb || (N > 8192 && wide)) ? LG_KSMALL : LG_NONE;
    }
    if (K <= 32) return LG_KSMALL;
    if (!ta && N <= 32) return LG_THIN;
    return LG_NONE;
}

/* The launch description of one product of class cl; *scratch counts the chunk-sum floats
 * it needs (part is set by lg_launch). */
static lg_prod lg_prep(int cl, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                       int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc, size_t *scratch) {
    lg_prod p;
    memset(&p, 0, sizeof p);
    p.A = A, p.B = B, p.C = C, p.X = C, p.lda = lda, p.ldb = ldb, p.ldc = ldc;
    p.M = (int)M, p.N = (int)N, p.K = (int)K, p.alpha = alpha, p.beta = beta, p.ta = ta, p.tb = tb;
    if (cl == LG_TN) {
        bool wide_n = M <= 32 && (N > 32 || N >= M);
        p.wide_n = wide_n;
        p.M = (int)(wide_n ? N : M), p.N = (int)(wide_n ? M : N); // W's columns, S's columns
        p.A = wide_n ? B : A, p.B = wide_n ? A : B;
        p.lda = wide_n ? ldb : lda, p.ldb = wide_n ? lda : ldb;
    } else if (cl == LG_THIN) {
        int64_t kc = 256, chunks = (K + 255) / 256;
        if (chunks > 32 && N <= 16) kc = 512, chunks = (K + 511) / 512; // fewer partial sums to add
        p.kc = (int)kc, p.chunks = (int)chunks;
        if (chunks > 1) *scratch += (size_t)(chunks * M * N);
    }
    return p;
}

/* Launches n products of class cl (n >= 1) as one grid. */
static void lg_launch(lc_cuda *c, int cl, lg_grp *g, int n, size_t scratch) {
    unsigned gx = 1, gy = 1;
    int big = 0, kcmax = 0;
    size_t sm = 0;
    if (scratch) {
        float *part = lc_cuda_rows(c, scratch);
        for (int i = 0; i < n; i++)
            if (g->p[i].chunks > 1) g->p[i].part = part, part += (size_t)g->p[i].chunks * g->p[i].M * g->p[i].N;
    }
    for (int i = 0; i < n; i++) {
        const lg_prod &p = g->p[i];
        unsigned x = 1, y = 1;
        if (cl == LG_TN) {
            x = (unsigned)((p.M + 31) / 32);
            big |= p.N > 16;
        } else if (cl == LG_KSMALL) {
            x = (unsigned)((p.N + LG_THREADS - 1) / LG_THREADS), y = (unsigned)((p.M + KS_RT - 1) / KS_RT);
            big |= p.K > 16;
        } else {
            x = (unsigned)p.chunks, y = (unsigned)((p.M + TH_MT - 1) / TH_MT);
            big |= p.N > 16;
            kcmax = p.kc > kcmax ? p.kc : kcmax;
        }
        gx = x > gx ? x : gx, gy = y > gy ? y : gy;
    }
    dim3 grid(gx, gy, (unsigned)n);
    if (cl == LG_TN) {
        int rm = big ? 32 : 16;
        for (int i = 0; i < n; i++) {
            size_t need = (size_t)g->p[i].K * rm > (size_t)TN_WARPS * rm * 33 ? (size_t)g->p[i].K * rm
                                                                                : (size_t)TN_WARPS * rm * 33;
            sm = need > sm ? need : sm;
        }
        sm *= sizeof(float);
        if (big) k_lg_tn<32><<<grid, LG_THREADS, sm, c->st>>>(*g);
        else k_lg_tn<16><<<grid, LG_THREADS, sm, c->st>>>(*g);
    } else if (cl == LG_KSMALL) {
        if (!big && ks2_ok(g, n)) {
            unsigned x2 = 1, y2 = 1;
            for (int i = 0; i < n; i++) {
                unsigned x = (unsigned)((g->p[i].N + 2 * LG_THREADS - 1) / (2 * LG_THREADS));
                unsigned y = (unsigned)((g->p[i].M + KS2_ROWS - 1) / KS2_ROWS);
                x2 = x > x2 ? x : x2, y2 = y > y2 ? y : y2;
            }
            k_lg_ksmall2<<<dim3(x2, y2, (unsigned)n), LG_THREADS, 0, c->st>>>(*g);
        } else if (big)
            k_lg_ksmall<32><<<grid, LG_THREADS, 0, c->st>>>(*g);
        else
            k_lg_ksmall<16><<<grid, LG_THREADS, 0, c->st>>>(*g);
    } else {
        sm = (size_t)kcmax * ((big ? 32 : 16) + 1) * sizeof(float);
        if (big) k_lg_thin<32><<<grid, LG_THREADS, sm, c->st>>>(*g, c->counter);
        else k_lg_thin<16><<<grid, LG_THREADS, sm, c->st>>>(*g, c->counter);
    }
    LC_LAUNCHED(c);
}

bool lc_cuda_lora_gemm(lc_cuda *c, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                       int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc, bool tf32) {
    int cl = lg_class(ta, tb, M, N, K, tf32);
    if (cl == LG_NONE) return false;
    lg_grp g;
    size_t scratch = 0;
    g.p[0] = lg_prep(cl, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, &scratch);
    lg_launch(c, cl, &g, 1, scratch);
    return true;
}

void lc_cuda_gemm_n(lc_backend *be, int n, const lc_gemm_args *a) {
    lc_cuda *c = (lc_cuda *)be->impl;
    if (n <= 0) return;
    int cl = n <= LC_GEMM_N_MAX ? lg_class(a[0].ta, a[0].tb, a[0].M, a[0].N, a[0].K, be->lora_tf32) : LG_NONE;
    bool x = false; // some product reads beta's term from X
    for (int i = 0; i < n; i++) x |= a[i].X && a[i].X != a[i].C && a[i].beta != 0.0f;
    for (int i = 1; i < n && cl != LG_NONE; i++)
        if (lg_class(a[i].ta, a[i].tb, a[i].M, a[i].N, a[i].K, be->lora_tf32) != cl) cl = LG_NONE;
    if (x && cl != LG_KSMALL) // only the small-K kernel reads X: the others take a copy first
        for (int i = 0; i < n; i++)
            if (a[i].X && a[i].X != a[i].C && a[i].beta != 0.0f)
                LC_CK(c, cudaMemcpy2DAsync(a[i].C, (size_t)a[i].ldc * sizeof(float), a[i].X,
                                           (size_t)a[i].ldc * sizeof(float), (size_t)a[i].N * sizeof(float),
                                           (size_t)a[i].M, cudaMemcpyDeviceToDevice, c->st));
    if (cl == LG_NONE || (n == 1 && !(x && cl == LG_KSMALL))) { // mixed classes, cuBLAS shapes, or nothing to group
        for (int i = 0; i < n; i++)
            be->gemm(be, a[i].ta, a[i].tb, a[i].M, a[i].N, a[i].K, a[i].alpha, a[i].A, a[i].lda, a[i].B, a[i].ldb,
                     a[i].beta, a[i].C, a[i].ldc);
        return;
    }
    LC_PROF(c, "gemm_n (LoRA) M=%lld", a[0].M);
    lg_grp g;
    size_t scratch = 0;
    for (int i = 0; i < n; i++) {
        g.p[i] = lg_prep(cl, a[i].ta, a[i].tb, a[i].M, a[i].N, a[i].K, a[i].alpha, a[i].A, a[i].lda, a[i].B, a[i].ldb,
                         a[i].beta, a[i].C, a[i].ldc, &scratch);
        if (a[i].X) g.p[i].X = a[i].X;
    }
    lg_launch(c, cl, &g, n, scratch);
}
