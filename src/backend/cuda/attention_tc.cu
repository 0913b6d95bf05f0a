/*
 * attention_tc.cu — causal grouped-query attention of training shapes on the tensor
 * cores, forward and backward, in FlashAttention-2's structure: bf16 operands in
 * mma.sync m16n8k16 with float32 accumulation, a float32 online softmax, no T×T matrix
 * in memory. It reads the activations of backend.h's layout, q, k, v (and the forward's
 * out) in float32 or bf16 (->attention_b: training keeps them only as bf16), and writes
 * float32 results (the forward's out in bf16 too).
 *
 * Tiles: every tile in shared memory is row-major bf16 (rows padded by 8 bf16, so the
 * 8 rows of an ldmatrix hit 8 different bank groups); fragments come from ldmatrix, and
 * ldmatrix.trans where a tile is a B operand along its columns (V in P V, K in dS K, Q
 * and dO in the dk/dv products), so nothing is stored transposed. Tiles that a block
 * streams (K/V in the forward and dq, Q/dO in dk/dv) arrive by cp.async into a float32
 * staging area while the block computes on the previous tile; at the top of each step
 * the staged tile is rounded to bf16 and the copy of the next one is issued. Tiles read
 * once (a block's Q, dO or K, V) are read coalesced, all loads in flight, then rounded.
 * bf16 sources stage as bf16 in the staging area's first half and are copied unchanged
 * (the values a float32 source rounds to give the same bits).
 *
 * Forward: a block per (query tile of 128, head, batch), 8 warps of 16 query rows; key
 * tiles of 32 up to the diagonal; a warp skips the tiles wholly after its rows. Backward
 * (after attention.cu's D = rowsum(dout·out)): one pass over query tiles for dq (the
 * forward's tiling, each warp's Q and dO rows held in registers as A fragments; P
 * recomputed from lse, dP = dO V^T, dS = P (dP − D), dq = scale · dS K) and one over key
 * tiles for dk/dv (a block per (key tile of 64, kv head, batch), 8 warps: warp w takes
 * keys 16(w%4).. and the query half w/4 of each query tile of 64; it loops over the heads
 * of its group in order and the query tiles at or after its keys: dv = Σ P^T dO,
 * dk = scale · Σ dS^T Q; at the end the second half's sums are added to the first's
 * through shared memory). No atomics: every sum has a fixed order, so results repeat bit
 * for bit on a card.
 *
 * Shared memory: for D 128 this needs up to 133 KB a block, more than compute capability
 * 8.6 and 8.9 allow (99 KB). Where the default does not fit (the device's opt-in limit,
 * asked once) or LORAC_CUDA_ATT_SMALL=1, a small configuration runs the backward: dq
 * reads its Q and dO tiles through the memory of the K/V tiles before streaming them (the
 * same sums, the same bits), dk/dv streams query tiles of 32 (16 a warp). The forward
 * (83 KB) is the same in both. Where neither fits, lc_cuda_att_tc_ok says no.
 *
 * Scope: pos0 = 0 (query t sees keys 0..t), head_dim 64 or 128, 16-byte aligned
 * tensors; attention.cu decides (lc_cuda_att_tc_ok) and keeps its float32 kernels for
 * everything else (decoding, short sequences, LORAC_CUDA_ATT=fp32). Owns nothing.
 *
 * Fragments (PTX ISA, mma.m16n8k16 .bf16): g = lane / 4, c = lane % 4. A (16×16, row):
 * regs {row g, k 2c..2c+1}, {row g+8, k 2c}, {row g, k 2c+8}, {row g+8, k 2c+8}.
 * B (16×8): regs {k 2c..2c+1, n g}, {k 2c+8.., n g}. C (16×8, f32): {row g, n 2c, 2c+1},
 * {row g+8, n 2c, 2c+1}. Two C tiles side by side are one A fragment (P, dS).
 */
#include <cuda_bf16.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <type_traits>

#include "backend/cuda/cuda.h"

#define TC_BQ 128   // query rows per forward / dq block (8 warps × 16)
#define TC_BK 32    // keys per streamed tile of the forward and dq
#define TC_BKV 64   // keys per dk/dv block (4 warp rows × 16)
#define TC_BQ2 64   // queries per streamed tile of the dk/dv pass (2 halves × 32)
#define TC_THREADS 256
#define TC_LOG2E 1.4426950408889634f

typedef __nv_bfloat16 bf16;

/* ---- fragments and copies ---- */

__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi); // .x (lower address, lower k) = lo
    uint32_t r;
    memcpy(&r, &v, 4);
    return r;
}

__device__ __forceinline__ uint32_t saddr(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

__device__ __forceinline__ float ex2(float x) { // 2^x; -inf gives 0
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

/* c (16×8) += a (16×16) b (16×8). */
__device__ __forceinline__ void mma(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* Four 8×8 bf16 matrices; lanes 8j..8j+7 give the row addresses of matrix j, and register
 * j holds row lane/4, elements 2(lane%4), +1 of matrix j (.trans: of its transpose). */
__device__ __forceinline__ void ldsm4(uint32_t r[4], const bf16 *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(saddr(p)));
}
__device__ __forceinline__ void ldsm4t(uint32_t r[4], const bf16 *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(saddr(p)));
}

/* A fragment: rows r0..r0+15, columns k0..k0+15 of row-major M (leading dimension ld). */
__device__ __forceinline__ void frag_a(uint32_t a[4], const bf16 *M, int ld, int r0, int k0, int lane) {
    ldsm4(a, M + (r0 + (lane & 15)) * ld + k0 + (lane >> 4) * 8);
}

/* B fragments of n0..n0+7 (b[0], b[1]) and n0+8..n0+15 (b[2], b[3]) whose column n is
 * row n of M and whose k runs along that row from k0. */
__device__ __forceinline__ void frag_b2(uint32_t b[4], const bf16 *M, int ld, int n0, int k0, int lane) {
    ldsm4(b, M + (n0 + (lane & 7) + (lane >> 4) * 8) * ld + k0 + ((lane >> 3) & 1) * 8);
}

/* The same where B is M itself: k is M's row k0.., n its column n0.. (ldmatrix.trans). */
__device__ __forceinline__ void frag_bt2(uint32_t b[4], const bf16 *M, int ld, int k0, int n0, int lane) {
    ldsm4t(b, M + (k0 + (lane & 7) + ((lane >> 3) & 1) * 8) * ld + n0 + (lane >> 4) * 8);
}

/* The A fragment of the 16×16 block made of C tiles x and y (columns 0-7 and 8-15). */
__device__ __forceinline__ void c_to_a(uint32_t a[4], const float x[4], const float y[4]) {
    a[0] = pack2(x[0], x[1]), a[1] = pack2(x[2], x[3]), a[2] = pack2(y[0], y[1]), a[3] = pack2(y[2], y[3]);
}

/* cp.async of n bytes (4 or 16); zeros when !ok (src must still be a valid address). */
__device__ __forceinline__ void cp16(void *dst, const void *src, bool ok) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(saddr(dst)), "l"(src), "r"(ok ? 16 : 0)
                 : "memory");
}
__device__ __forceinline__ void cp4(void *dst, const void *src, bool ok) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(saddr(dst)), "l"(src), "r"(ok ? 4 : 0)
                 : "memory");
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
__device__ __forceinline__ void cp_wait() { asm volatile("cp.async.wait_all;" ::: "memory"); }

/* Rows row0..row0+R-1 of a float32 or bf16 (TI) matrix whose row r starts at src + r·rs (D
 * values), moved in 16-byte chunks of E = 16 / sizeof(TI) values: stage copies them by
 * cp.async into the staging tile stg (R, D, as TI: a bf16 tile fills its first half),
 * unstage turns that into the bf16 tile dst (R, D+8), load_tile does both at once with plain
 * loads (all in flight before the first store). put16 writes one chunk to a bf16 tile:
 * float32 values rounded, bf16 ones copied unchanged (the same bits a float32 source rounds
 * to). Rows at or after lim are zeros. Every thread of the block takes part, each handling
 * the same chunks in stage and unstage (so cp_wait alone makes its own copies visible to it);
 * a warp covers whole rows (coalesced). */
template <typename TI> __device__ __forceinline__ void put16(bf16 *dst, uint4 x) {
    if constexpr (std::is_same<TI, float>::value)
        *reinterpret_cast<uint2 *>(dst) = make_uint2(pack2(__uint_as_float(x.x), __uint_as_float(x.y)),
                                                     pack2(__uint_as_float(x.z), __uint_as_float(x.w)));
    else
        *reinterpret_cast<uint4 *>(dst) = x;
}

template <int R, int D, typename TI>
__device__ __forceinline__ void stage(float *stg, const TI *src, size_t rs, int row0, int lim) {
    constexpr int E = 16 / sizeof(TI);
    static_assert(R * D / E % TC_THREADS == 0, "tile not a multiple of the block");
    TI *s = (TI *)stg;
#pragma unroll
    for (int i = 0; i < R * D / E / TC_THREADS; i++) {
        int idx = threadIdx.x + i * TC_THREADS, r = idx / (D / E), c = idx % (D / E) * E, row = row0 + r;
        cp16(s + r * D + c, src + (size_t)min(row, lim - 1) * rs + c, row < lim);
    }
}

template <int R, int D, typename TI> __device__ __forceinline__ void unstage(bf16 *dst, const float *stg) {
    constexpr int E = 16 / sizeof(TI);
    const TI *s = (const TI *)stg;
#pragma unroll
    for (int i = 0; i < R * D / E / TC_THREADS; i++) {
        int idx = threadIdx.x + i * TC_THREADS, r = idx / (D / E), c = idx % (D / E) * E;
        put16<TI>(dst + r * (D + 8) + c, *reinterpret_cast<const uint4 *>(s + r * D + c));
    }
}

/* Issues the copies of the K and V tiles at key s0 into the staging area (K, then V). */
template <int D, typename TI>
__device__ __forceinline__ void stage_kv(float *stg, const TI *kb, const TI *vb, size_t krs, int s0, int T) {
    stage<TC_BK, D>(stg, kb, krs, s0, T);
    stage<TC_BK, D>(stg + TC_BK * D, vb, krs, s0, T);
    cp_commit();
}

/* The top of a key-tile step at s0: the staged tile rounded into Ks, Vs once every warp is
 * done with them, then the next tile's copy issued when there is one before kend. */
template <int D, typename TI>
__device__ __forceinline__ void next_kv(bf16 *Ks, bf16 *Vs, float *stg, const TI *kb, const TI *vb, size_t krs, int s0,
                                        int kend, int T) {
    cp_wait();
    __syncthreads(); // every warp is done with Ks, Vs
    unstage<TC_BK, D, TI>(Ks, stg);
    unstage<TC_BK, D, TI>(Vs, stg + TC_BK * D);
    __syncthreads(); // Ks, Vs ready; the staging area is free
    if (s0 + TC_BK < kend) stage_kv<D>(stg, kb, vb, krs, s0 + TC_BK, T);
}

template <int R, int D, typename TI>
__device__ __forceinline__ void load_tile(bf16 *dst, const TI *src, size_t rs, int row0, int lim) {
    constexpr int E = 16 / sizeof(TI), N = R * D / E / TC_THREADS;
    static_assert(N * TC_THREADS == R * D / E, "tile not a multiple of the block");
    uint4 x[N];
#pragma unroll
    for (int i = 0; i < N; i++) {
        int idx = threadIdx.x + i * TC_THREADS, r = idx / (D / E), c = idx % (D / E) * E, row = row0 + r;
        x[i] = row < lim ? __ldg(reinterpret_cast<const uint4 *>(src + (size_t)row * rs + c)) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int i = 0; i < N; i++) {
        int idx = threadIdx.x + i * TC_THREADS, r = idx / (D / E), c = idx % (D / E) * E;
        put16<TI>(dst + r * (D + 8) + c, x[i]);
    }
}

/* ---- forward ---- */

/* grid (ceil(T/TC_BQ), H, B), TC_THREADS. out (B,T,H,D) =, lse (B,H,T) = (when not NULL);
 * k, v (B,S,KV,D) with S ≥ T; sl2 = log2(e)/sqrt(D). Query tiles run last first (the
 * longest rows start first). */
template <int D, typename TI, typename TO>
__global__ void __launch_bounds__(TC_THREADS, 2) k_tc_fwd(TO *out, float *lse, const TI *q, const TI *k, const TI *v,
                                                          int T, int S, int H, int KV, float sl2) {
    extern __shared__ __align__(16) unsigned char smraw[];
    float *stg = (float *)smraw; // (2, TC_BK, D): the next K and V tiles
    bf16 *Qs = (bf16 *)(stg + 2 * TC_BK * D), *Ks = Qs + TC_BQ * (D + 8), *Vs = Ks + TC_BK * (D + 8);
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31, c4 = lane & 3;
    int q0 = (gridDim.x - 1 - blockIdx.x) * TC_BQ, h = blockIdx.y, b = blockIdx.z, kh = h / (H / KV);
    const TI *qb = q + ((size_t)b * T * H + h) * D;
    const TI *kb = k + ((size_t)b * S * KV + kh) * D, *vb = v + ((size_t)b * S * KV + kh) * D;
    size_t krs = (size_t)KV * D;
    stage_kv<D>(stg, kb, vb, krs, 0, T);
    load_tile<TC_BQ, D>(Qs, qb, (size_t)H * D, q0, T);
    int r0 = w * 16, t0 = q0 + r0 + (lane >> 2); // this thread's rows: t0 and t0 + 8
    float o[D / 8][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
#pragma unroll
    for (int n = 0; n < D / 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    int kend = min(q0 + TC_BQ, T);
    for (int s0 = 0; s0 < kend; s0 += TC_BK) {
        next_kv<D, TI>(Ks, Vs, stg, kb, vb, krs, s0, kend, T);
        if (s0 > q0 + r0 + 15) continue; // every key of the tile is after the warp's rows
        // S = Q K^T (log2 units, scaled)
        float sc[TC_BK / 8][4];
#pragma unroll
        for (int n = 0; n < TC_BK / 8; n++) sc[n][0] = sc[n][1] = sc[n][2] = sc[n][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            uint32_t a[4], bb[4];
            frag_a(a, Qs, D + 8, r0, kk * 16, lane);
#pragma unroll
            for (int n = 0; n < TC_BK / 16; n++) {
                frag_b2(bb, Ks, D + 8, n * 16, kk * 16, lane);
                mma(sc[2 * n], a, bb[0], bb[1]);
                mma(sc[2 * n + 1], a, bb[2], bb[3]);
            }
        }
        // causal mask, running max (key 0 is in every row's first tile: the max is finite)
        float mx[2] = {m[0], m[1]};
#pragma unroll
        for (int n = 0; n < TC_BK / 8; n++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                int s = s0 + n * 8 + c4 * 2 + (i & 1), t = t0 + (i >> 1) * 8;
                float x = (s > t || s >= T) ? -INFINITY : sc[n][i] * sl2;
                sc[n][i] = x;
                mx[i >> 1] = fmaxf(mx[i >> 1], x);
            }
        float corr[2];
#pragma unroll
        for (int r = 0; r < 2; r++) {
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
            corr[r] = ex2(m[r] - mx[r]);
            m[r] = mx[r], l[r] *= corr[r];
        }
#pragma unroll
        for (int n = 0; n < TC_BK / 8; n++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                float p = ex2(sc[n][i] - mx[i >> 1]);
                sc[n][i] = p, l[i >> 1] += p;
            }
#pragma unroll
        for (int n = 0; n < D / 8; n++) o[n][0] *= corr[0], o[n][1] *= corr[0], o[n][2] *= corr[1], o[n][3] *= corr[1];
        // O += P V
#pragma unroll
        for (int kk = 0; kk < TC_BK / 16; kk++) {
            uint32_t a[4], bb[4];
            c_to_a(a, sc[2 * kk], sc[2 * kk + 1]);
#pragma unroll
            for (int n = 0; n < D / 16; n++) {
                frag_bt2(bb, Vs, D + 8, kk * 16, n * 16, lane);
                mma(o[2 * n], a, bb[0], bb[1]);
                mma(o[2 * n + 1], a, bb[2], bb[3]);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
        int t = t0 + r * 8;
        if (t >= T) continue;
        float inv = 1.0f / l[r];
        TO *orow = out + (((size_t)b * T + t) * H + h) * D + c4 * 2;
#pragma unroll
        for (int n = 0; n < D / 8; n++) {
            if constexpr (std::is_same<TO, float>::value)
                *reinterpret_cast<float2 *>(orow + n * 8) = make_float2(o[n][2 * r] * inv, o[n][2 * r + 1] * inv);
            else
                *reinterpret_cast<uint32_t *>(orow + n * 8) = pack2(o[n][2 * r] * inv, o[n][2 * r + 1] * inv);
        }
        if (lse && c4 == 0) lse[((size_t)b * H + h) * T + t] = (m[r] + log2f(l[r])) * (1.0f / TC_LOG2E);
    }
}

/* ---- backward ---- */

/* dq (B,T,H,D) = scale · Σ_s dS K. grid (ceil(T/TC_BQ), H, B), TC_THREADS; Dr (B,H,T) =
 * rowsum(dout·out). SMALL: the Q and dO tiles pass one after the other through the memory
 * of the K/V tiles and their staging, before the first K/V copy is issued (dq_smem; the
 * same arithmetic in the same order, so the same bits). */
template <int D, bool SMALL, typename TI>
__global__ void __launch_bounds__(TC_THREADS) k_tc_dq(float *dq, const float *dout, const TI *q, const TI *k,
                                                      const TI *v, const float *lse, const float *Dr, int T,
                                                      int H, int KV, float sl2, float scale) {
    extern __shared__ __align__(16) unsigned char smraw[];
    float *stg = (float *)smraw; // (2, TC_BK, D): the next K and V tiles
    bf16 *Qs = SMALL ? (bf16 *)smraw : (bf16 *)(stg + 2 * TC_BK * D), *Os = SMALL ? Qs : Qs + TC_BQ * (D + 8);
    bf16 *Ks = SMALL ? (bf16 *)(stg + 2 * TC_BK * D) : Os + TC_BQ * (D + 8), *Vs = Ks + TC_BK * (D + 8);
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31, c4 = lane & 3;
    int q0 = (gridDim.x - 1 - blockIdx.x) * TC_BQ, h = blockIdx.y, b = blockIdx.z, kh = h / (H / KV);
    size_t qoff = ((size_t)b * T * H + h) * D, koff = ((size_t)b * T * KV + kh) * D, krs = (size_t)KV * D;
    int kend = min(q0 + TC_BQ, T);
    if (!SMALL) stage_kv<D>(stg, k + koff, v + koff, krs, 0, T);
    // the warp's Q and dO rows stay in registers as A fragments (the block's rows are fixed)
    uint32_t qf[D / 16][4], of[D / 16][4];
    load_tile<TC_BQ, D>(Qs, q + qoff, (size_t)H * D, q0, T);
    if (SMALL) {
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) frag_a(qf[kk], Qs, D + 8, w * 16, kk * 16, lane);
        __syncthreads(); // every warp has its Q rows: Os (= Qs) may be overwritten
    }
    load_tile<TC_BQ, D>(Os, dout + qoff, (size_t)H * D, q0, T);
    int r0 = w * 16, t0 = q0 + r0 + (lane >> 2);
    float L[2], Dd[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int t = t0 + r * 8;
        L[r] = t < T ? lse[((size_t)b * H + h) * T + t] * TC_LOG2E : 0.0f;
        Dd[r] = t < T ? Dr[((size_t)b * H + h) * T + t] : 0.0f;
    }
    float acc[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
        if (!SMALL) frag_a(qf[kk], Qs, D + 8, r0, kk * 16, lane);
        frag_a(of[kk], Os, D + 8, r0, kk * 16, lane);
    }
    if (SMALL) {
        __syncthreads(); // every warp has its dO rows: the K/V tiles may come in
        stage_kv<D>(stg, k + koff, v + koff, krs, 0, T);
    }
    for (int s0 = 0; s0 < kend; s0 += TC_BK) {
        next_kv<D, TI>(Ks, Vs, stg, k + koff, v + koff, krs, s0, kend, T);
        if (s0 > q0 + r0 + 15) continue; // every key of the tile is after the warp's rows
        float sc[TC_BK / 8][4], dp[TC_BK / 8][4];
#pragma unroll
        for (int n = 0; n < TC_BK / 8; n++)
#pragma unroll
            for (int i = 0; i < 4; i++) sc[n][i] = dp[n][i] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            uint32_t bb[4];
#pragma unroll
            for (int n = 0; n < TC_BK / 16; n++) {
                frag_b2(bb, Ks, D + 8, n * 16, kk * 16, lane);
                mma(sc[2 * n], qf[kk], bb[0], bb[1]); // S = Q K^T
                mma(sc[2 * n + 1], qf[kk], bb[2], bb[3]);
                frag_b2(bb, Vs, D + 8, n * 16, kk * 16, lane);
                mma(dp[2 * n], of[kk], bb[0], bb[1]); // dP = dO V^T
                mma(dp[2 * n + 1], of[kk], bb[2], bb[3]);
            }
        }
        // P = exp(S·scale − lse) (forward: the softmax), dS = P (dP − D)
#pragma unroll
        for (int n = 0; n < TC_BK / 8; n++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                int s = s0 + n * 8 + c4 * 2 + (i & 1), t = t0 + (i >> 1) * 8;
                float p = (s > t || s >= T) ? 0.0f : ex2(sc[n][i] * sl2 - L[i >> 1]);
                sc[n][i] = p * (dp[n][i] - Dd[i >> 1]);
            }
        // dq += dS K (forward: S = Q K^T)
#pragma unroll
        for (int kk = 0; kk < TC_BK / 16; kk++) {
            uint32_t a[4], bb[4];
            c_to_a(a, sc[2 * kk], sc[2 * kk + 1]);
#pragma unroll
            for (int n = 0; n < D / 16; n++) {
                frag_bt2(bb, Ks, D + 8, kk * 16, n * 16, lane);
                mma(acc[2 * n], a, bb[0], bb[1]);
                mma(acc[2 * n + 1], a, bb[2], bb[3]);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int t = t0 + r * 8;
        if (t >= T) continue;
        float *row = dq + (((size_t)b * T + t) * H + h) * D + c4 * 2;
#pragma unroll
        for (int n = 0; n < D / 8; n++)
            *reinterpret_cast<float2 *>(row + n * 8) = make_float2(acc[n][2 * r] * scale, acc[n][2 * r + 1] * scale);
    }
}

/* dk (B,T,KV,D) = scale · Σ dS^T Q, dv = Σ P^T dO, summed over the heads of the kv head's
 * group in order and the queries at or after each key. grid (ceil(T/TC_BKV), KV, B).
 * BQ2: queries per streamed tile (TC_BQ2, or 32 where shared memory is short), each warp
 * taking BQ2/2 of them. */
template <int D, int BQ2, typename TI>
__global__ void __launch_bounds__(TC_THREADS) k_tc_dkdv(float *dk, float *dv, const float *dout, const TI *q,
                                                        const TI *k, const TI *v, const float *lse,
                                                        const float *Dr, int T, int H, int KV, float sl2,
                                                        float scale) {
    extern __shared__ __align__(16) unsigned char smraw[];
    constexpr int QW = BQ2 / 2; // queries a warp
    float *stg = (float *)smraw;                         // (2, BQ2, D): the next Q and dO tiles
    float *Lstg = stg + 2 * BQ2 * D, *Dstg = Lstg + BQ2; // their lse and D
    float *Ls = Dstg + BQ2, *Ds = Ls + BQ2;
    bf16 *Ks = (bf16 *)(Ds + BQ2), *Vs = Ks + TC_BKV * (D + 8), *Qs = Vs + TC_BKV * (D + 8);
    bf16 *Os = Qs + BQ2 * (D + 8);
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31, c4 = lane & 3;
    int j0 = blockIdx.x * TC_BKV, kh = blockIdx.y, b = blockIdx.z, G = H / KV;
    int kr = (w & 3) * 16, qh = (w >> 2) * QW; // the warp's keys j0+kr.. and query half qh..
    size_t koff = ((size_t)b * T * KV + kh) * D, qrs = (size_t)H * D;
    int nt = (T - j0 + BQ2 - 1) / BQ2, nit = G * nt; // query tiles a head, steps
    auto issue = [&](int it) { // stage step it: head kh·G + it/nt, queries j0 + (it%nt)·BQ2..
        int h = kh * G + it / nt, t0 = j0 + it % nt * BQ2;
        size_t qoff = ((size_t)b * T * H + h) * D, loff = ((size_t)b * H + h) * T;
        stage<BQ2, D>(stg, q + qoff, qrs, t0, T);
        stage<BQ2, D>(stg + BQ2 * D, dout + qoff, qrs, t0, T);
        if (threadIdx.x < BQ2) {
            int t = t0 + threadIdx.x, tc = min(t, T - 1);
            cp4(Lstg + threadIdx.x, lse + loff + tc, t < T);
            cp4(Dstg + threadIdx.x, Dr + loff + tc, t < T);
        }
        cp_commit();
    };
    issue(0);
    load_tile<TC_BKV, D>(Ks, k + koff, (size_t)KV * D, j0, T);
    load_tile<TC_BKV, D>(Vs, v + koff, (size_t)KV * D, j0, T);
    int s0 = j0 + kr + (lane >> 2); // this thread's keys: s0 and s0 + 8
    float adk[D / 8][4], adv[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; n++)
#pragma unroll
        for (int i = 0; i < 4; i++) adk[n][i] = adv[n][i] = 0.0f;
    for (int it = 0; it < nit; it++) {
        int t0 = j0 + it % nt * BQ2;
        cp_wait();
        __syncthreads(); // every warp is done with Qs, Os, Ls, Ds
        unstage<BQ2, D, TI>(Qs, stg);
        unstage<BQ2, D, float>(Os, stg + BQ2 * D);
        if (threadIdx.x < BQ2) Ls[threadIdx.x] = Lstg[threadIdx.x] * TC_LOG2E, Ds[threadIdx.x] = Dstg[threadIdx.x];
        __syncthreads(); // the tiles are ready; the staging area is free
        if (it + 1 < nit) issue(it + 1);
        if (t0 + qh + QW - 1 < j0 + kr) continue; // every query of the warp's half precedes its keys
        float sc[QW / 8][4], dp[QW / 8][4]; // the warp's queries
#pragma unroll
        for (int n = 0; n < QW / 8; n++)
#pragma unroll
            for (int i = 0; i < 4; i++) sc[n][i] = dp[n][i] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            uint32_t a[4], av[4], bb[4];
            frag_a(a, Ks, D + 8, kr, kk * 16, lane);
            frag_a(av, Vs, D + 8, kr, kk * 16, lane);
#pragma unroll
            for (int n = 0; n < QW / 16; n++) {
                frag_b2(bb, Qs, D + 8, qh + n * 16, kk * 16, lane);
                mma(sc[2 * n], a, bb[0], bb[1]); // S^T = K Q^T
                mma(sc[2 * n + 1], a, bb[2], bb[3]);
                frag_b2(bb, Os, D + 8, qh + n * 16, kk * 16, lane);
                mma(dp[2 * n], av, bb[0], bb[1]); // dP^T = V dO^T
                mma(dp[2 * n + 1], av, bb[2], bb[3]);
            }
        }
#pragma unroll
        for (int n = 0; n < QW / 8; n++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                int tl = qh + n * 8 + c4 * 2 + (i & 1), t = t0 + tl, s = s0 + (i >> 1) * 8;
                float p = (t < s || t >= T) ? 0.0f : ex2(sc[n][i] * sl2 - Ls[tl]);
                sc[n][i] = p, dp[n][i] = p * (dp[n][i] - Ds[tl]);
            }
        // dv += P^T dO (forward: O = P V), dk += dS^T Q (forward: S = Q K^T)
#pragma unroll
        for (int kk = 0; kk < QW / 16; kk++) {
            uint32_t ap[4], ad[4], bb[4];
            c_to_a(ap, sc[2 * kk], sc[2 * kk + 1]);
            c_to_a(ad, dp[2 * kk], dp[2 * kk + 1]);
#pragma unroll
            for (int n = 0; n < D / 16; n++) {
                frag_bt2(bb, Os, D + 8, qh + kk * 16, n * 16, lane);
                mma(adv[2 * n], ap, bb[0], bb[1]);
                mma(adv[2 * n + 1], ap, bb[2], bb[3]);
                frag_bt2(bb, Qs, D + 8, qh + kk * 16, n * 16, lane);
                mma(adk[2 * n], ad, bb[0], bb[1]);
                mma(adk[2 * n + 1], ad, bb[2], bb[3]);
            }
        }
    }
    // the second query half's sums (warps 4-7) join the first's (warps 0-3) through shared
    // memory (from its start: no tile is read any more, no copy is in flight), in that order
    __syncthreads();
    float *rk = stg + ((w & 3) * (D / 8) * 4) * 32 + lane, *rv = rk + 4 * (D / 8) * 4 * 32;
    if (w >= 4) {
#pragma unroll
        for (int n = 0; n < D / 8; n++)
#pragma unroll
            for (int i = 0; i < 4; i++) rk[(n * 4 + i) * 32] = adk[n][i], rv[(n * 4 + i) * 32] = adv[n][i];
    }
    __syncthreads();
    if (w >= 4) return;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int s = s0 + r * 8;
        if (s >= T) continue;
        size_t off = (((size_t)b * T + s) * KV + kh) * D + c4 * 2;
#pragma unroll
        for (int n = 0; n < D / 8; n++) {
            int i0 = (n * 4 + 2 * r) * 32, i1 = i0 + 32;
            *reinterpret_cast<float2 *>(dk + off + n * 8) =
                make_float2((adk[n][2 * r] + rk[i0]) * scale, (adk[n][2 * r + 1] + rk[i1]) * scale);
            *reinterpret_cast<float2 *>(dv + off + n * 8) =
                make_float2(adv[n][2 * r] + rv[i0], adv[n][2 * r + 1] + rv[i1]);
        }
    }
}

/* ---- launch ---- */

/* Dynamic shared memory of each kernel (bytes). The default configuration needs, for D 128,
 * 83 KB (forward), 117 KB (dq) and 133 KB (dk/dv): more than the 99 KB a block may have on
 * compute capability 8.6 and 8.9. The small one (dq through one Q/dO tile over the K/V
 * memory, dk/dv on query tiles of 32) needs 83, 49 and 84 KB. dk/dv also needs room for
 * the sums of warps 4-7 at its end. */
template <int D> static size_t fwd_smem() { return (size_t)2 * TC_BK * D * 4 + (size_t)(TC_BQ + 2 * TC_BK) * (D + 8) * 2; }
template <int D, bool SMALL> static size_t dq_smem() {
    size_t kv = (size_t)2 * TC_BK * D * 4 + (size_t)2 * TC_BK * (D + 8) * 2, qo = (size_t)TC_BQ * (D + 8) * 2;
    return SMALL ? (kv > qo ? kv : qo) : kv + 2 * qo;
}
template <int D, int BQ2> static size_t dkdv_smem() {
    size_t tiles = (size_t)(2 * BQ2 * D + 4 * BQ2) * 4 + (size_t)(2 * TC_BKV + 2 * BQ2) * (D + 8) * 2;
    size_t sums = (size_t)2 * 4 * (D / 8) * 4 * 32 * 4;
    return tiles > sums ? tiles : sums;
}

/* The device's limit of dynamic shared memory a block (opt-in), asked once: the process
 * keeps one device. */
static size_t tc_smem_max(void) {
    static int max = -1;
    if (max < 0) {
        int dev = 0, v = 0;
        if (cudaGetDevice(&dev) != cudaSuccess ||
            cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess)
            v = 0, cudaGetLastError(); // no answer: no tensor-core path
        max = v;
    }
    return (size_t)max;
}

/* The configuration of head size D: 0 default, 1 small (where the default's shared memory
 * does not fit the card, or LORAC_CUDA_ATT_SMALL=1), -1 none fits. */
template <int D> static int tc_config(void) {
    size_t lim = tc_smem_max();
    const char *e = getenv("LORAC_CUDA_ATT_SMALL");
    bool small = e && *e && strcmp(e, "0");
    if (!small && fwd_smem<D>() <= lim && dq_smem<D, false>() <= lim && dkdv_smem<D, TC_BQ2>() <= lim) return 0;
    if (fwd_smem<D>() <= lim && dq_smem<D, true>() <= lim && dkdv_smem<D, 32>() <= lim) return 1;
    return -1;
}

bool lc_cuda_att_tc_ok(int64_t Tq, int64_t S, int64_t D, int64_t pos0, const void *const *ptrs, int n) {
    const char *e = getenv("LORAC_CUDA_ATT");
    if (e && !strcmp(e, "fp32")) return false;
    // shortest sequence taken (LORAC_CUDA_ATT_MIN_T; default 16: measured faster than the
    // float32 kernels from the recipe's 68 tokens up, bench/results/cuda_notes.md)
    const char *mt = getenv("LORAC_CUDA_ATT_MIN_T");
    int64_t min_t = mt && *mt ? strtoll(mt, NULL, 10) : 16;
    if (pos0 != 0 || Tq < min_t || Tq < 1 || S < Tq || (D != 64 && D != 128)) return false;
    if ((D == 64 ? tc_config<64>() : tc_config<128>()) < 0) return false; // shared memory too small
    for (int i = 0; i < n; i++)
        if ((uintptr_t)ptrs[i] % 16) return false;
    return true;
}

template <int D, typename TI, typename TO>
static void tc_fwd(lc_cuda *c, TO *out, float *lse, const TI *q, const TI *k, const TI *v, int64_t B, int64_t T,
                   int64_t S, int64_t H, int64_t KV) {
    size_t sm = fwd_smem<D>();
    LC_CK(c, cudaFuncSetAttribute(k_tc_fwd<D, TI, TO>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm));
    dim3 grid((unsigned)((T + TC_BQ - 1) / TC_BQ), (unsigned)H, (unsigned)B);
    k_tc_fwd<D, TI, TO><<<grid, TC_THREADS, sm, c->st>>>(out, lse, q, k, v, (int)T, (int)S, (int)H, (int)KV,
                                                        TC_LOG2E / sqrtf((float)D));
    LC_LAUNCHED(c);
}

void lc_cuda_att_tc_fwd(lc_cuda *c, void *out, float *lse, const void *q, const void *k, const void *v, bool b16,
                        int64_t B, int64_t T, int64_t S, int64_t H, int64_t KV, int64_t D) {
    typedef const float *F;
    typedef const bf16 *H16;
    if (!b16 && D == 64) tc_fwd<64>(c, (float *)out, lse, (F)q, (F)k, (F)v, B, T, S, H, KV);
    else if (!b16) tc_fwd<128>(c, (float *)out, lse, (F)q, (F)k, (F)v, B, T, S, H, KV);
    else if (D == 64) tc_fwd<64>(c, (bf16 *)out, lse, (H16)q, (H16)k, (H16)v, B, T, S, H, KV);
    else tc_fwd<128>(c, (bf16 *)out, lse, (H16)q, (H16)k, (H16)v, B, T, S, H, KV);
}

template <int D, bool SMALL, typename TI>
static void tc_bwd(lc_cuda *c, float *dq, float *dk, float *dv, const float *dout, const TI *q, const TI *k,
                   const TI *v, const float *lse, const float *Dr, int64_t B, int64_t T, int64_t H, int64_t KV) {
    constexpr int BQ2 = SMALL ? 32 : TC_BQ2;
    float scale = 1.0f / sqrtf((float)D), sl2 = TC_LOG2E * scale;
    size_t sq = dq_smem<D, SMALL>(), skv = dkdv_smem<D, BQ2>();
    LC_CK(c, cudaFuncSetAttribute(k_tc_dq<D, SMALL, TI>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sq));
    LC_CK(c, cudaFuncSetAttribute(k_tc_dkdv<D, BQ2, TI>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)skv));
    dim3 gq((unsigned)((T + TC_BQ - 1) / TC_BQ), (unsigned)H, (unsigned)B);
    k_tc_dq<D, SMALL, TI><<<gq, TC_THREADS, sq, c->st>>>(dq, dout, q, k, v, lse, Dr, (int)T, (int)H, (int)KV, sl2,
                                                         scale);
    LC_LAUNCHED(c);
    dim3 gk((unsigned)((T + TC_BKV - 1) / TC_BKV), (unsigned)KV, (unsigned)B);
    k_tc_dkdv<D, BQ2, TI><<<gk, TC_THREADS, skv, c->st>>>(dk, dv, dout, q, k, v, lse, Dr, (int)T, (int)H, (int)KV,
                                                          sl2, scale);
    LC_LAUNCHED(c);
}

template <typename TI>
static void tc_bwd_of(lc_cuda *c, float *dq, float *dk, float *dv, const float *dout, const TI *q, const TI *k,
                      const TI *v, const float *lse, const float *Dr, int64_t B, int64_t T, int64_t H, int64_t KV,
                      int64_t D) {
    if (D == 64) {
        if (tc_config<64>() == 0) tc_bwd<64, false>(c, dq, dk, dv, dout, q, k, v, lse, Dr, B, T, H, KV);
        else tc_bwd<64, true>(c, dq, dk, dv, dout, q, k, v, lse, Dr, B, T, H, KV);
    } else {
        if (tc_config<128>() == 0) tc_bwd<128, false>(c, dq, dk, dv, dout, q, k, v, lse, Dr, B, T, H, KV);
        else tc_bwd<128, true>(c, dq, dk, dv, dout, q, k, v, lse, Dr, B, T, H, KV);
    }
}

/* The caller asked lc_cuda_att_tc_ok, so a configuration fits. */
void lc_cuda_att_tc_bwd(lc_cuda *c, float *dq, float *dk, float *dv, const float *dout, const void *q, const void *k,
                        const void *v, bool b16, const float *lse, const float *Dr, int64_t B, int64_t T, int64_t H,
                        int64_t KV, int64_t D) {
    if (b16)
        tc_bwd_of(c, dq, dk, dv, dout, (const bf16 *)q, (const bf16 *)k, (const bf16 *)v, lse, Dr, B, T, H, KV, D);
    else
        tc_bwd_of(c, dq, dk, dv, dout, (const float *)q, (const float *)k, (const float *)v, lse, Dr, B, T, H, KV, D);
}
