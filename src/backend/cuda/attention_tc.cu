/*
 * attention_tc.cu — causal grouped-query attention of training shapes on the tensor
 * cores, forward and backward, in FlashAttention-2's structure: bf16 operands in
 * mma.sync m16n8k16 with float32 accumulation, a float32 online softmax, no T×T matrix
 * in memory. It reads q, k, v and the backward's dout as bf16 in backend.h's layout
 * (attention.cu makes bf16 copies of float32 operands, and of dout while it sums
 * D = rowsum(dout·out)) and writes float32 results (the forward's out in bf16 too).
 *
 * Tiles: every tile in shared memory is row-major bf16 (rows padded by 8 bf16, so the
 * 8 rows of an ldmatrix hit 8 different bank groups); fragments come from ldmatrix, and
 * ldmatrix.trans where a tile is a B operand along its columns (V in P V, K in dS K, Q
 * and dO in the dk/dv products), so nothing is stored transposed. Every tile arrives by
 * cp.async straight into its padded place (rows past the end as zeros). Tiles a block
 * streams (K/V in the forward and dq, Q/dO with their lse/D in dk/dv) have two buffers:
 * at the top of each step the block waits for the tile it is about to use, passes one
 * barrier (after which nobody reads the other buffer any more) and issues the next
 * tile's copy into the other buffer, which lands while the block computes.
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
 * Shared memory: for D 128 this needs up to 103 KB a block, more than compute capability
 * 8.6 and 8.9 allow (99 KB). Where the default does not fit (the device's opt-in limit,
 * asked once) or LORAC_CUDA_ATT_SMALL=1, a small configuration runs the backward: dq
 * takes its Q and dO rows into registers through the memory of the K/V buffers before
 * streaming them (the same sums, the same bits), dk/dv streams query tiles of 32 (16 a
 * warp). The forward (68 KB) is the same in both. Where neither fits, lc_cuda_att_tc_ok
 * says no.
 *
 * Scope: pos0 = 0 (query t sees keys 0..t), head_dim 64 or 128, 16-byte aligned
 * tensors; attention.cu decides (lc_cuda_att_tc_ok) and keeps its float32 kernels for
 * everything else (decoding, short sequences, LORAC_CUDA_ATT=fp32). Owns nothing.
 *
 * Fragments, mma and the copies: mma.h (two C tiles side by side are one A fragment: P, dS).
 */
#include <cuda_bf16.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <type_traits>

#include "backend/cuda/cuda.h"
#include "backend/cuda/mma.h"

#define TC_BQ 128   // query rows per forward / dq block (8 warps × 16)
#define TC_BK 32    // keys per streamed tile of the forward and dq
#define TC_BKV 64   // keys per dk/dv block (4 warp rows × 16)
#define TC_BQ2 64   // queries per streamed tile of the dk/dv pass (2 halves × 32)
#define TC_THREADS 256
#define TC_LOG2E 1.4426950408889634f

typedef __nv_bfloat16 bf16;

__device__ __forceinline__ float ex2(float x) { // 2^x; -inf gives 0
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

/* Issues the copies of rows row0..row0+R-1 of a bf16 matrix whose row r starts at src + r·rs
 * (D values) into the tile dst (R, D+8), in 16-byte chunks; rows at or after lim become
 * zeros. Every thread of the block takes part; a warp covers whole rows (coalesced). The
 * caller commits and waits. */
template <int R, int D> __device__ __forceinline__ void tile_async(bf16 *dst, const bf16 *src, size_t rs, int row0, int lim) {
    static_assert(R * D / 8 % TC_THREADS == 0, "tile not a multiple of the block");
#pragma unroll
    for (int i = 0; i < R * D / 8 / TC_THREADS; i++) {
        int idx = threadIdx.x + i * TC_THREADS, r = idx / (D / 8), c = idx % (D / 8) * 8, row = row0 + r;
        cp16(dst + r * (D + 8) + c, src + (size_t)min(row, lim - 1) * rs + c, row < lim);
    }
}

/* The K and V tiles at key s0 into the buffer pair kv (K, then V), committed as one group. */
template <int D>
__device__ __forceinline__ void kv_async(bf16 *kv, const bf16 *kb, const bf16 *vb, size_t krs, int s0, int T) {
    tile_async<TC_BK, D>(kv, kb, krs, s0, T);
    tile_async<TC_BK, D>(kv + TC_BK * (D + 8), vb, krs, s0, T);
    cp_commit();
}

/* The top of key-tile step j (keys s0..): waits for its tiles (the only copy in flight),
 * one barrier (every warp is then done with step j−1's buffer), then the next tile's copy
 * into that buffer when there is one before kend. Returns the pair to read: K, then V. */
template <int D>
__device__ __forceinline__ const bf16 *next_kv(bf16 *kv2, const bf16 *kb, const bf16 *vb, size_t krs, int j,
                                               int s0, int kend, int T) {
    constexpr int PAIR = 2 * TC_BK * (D + 8);
    cp_wait();
    __syncthreads();
    if (s0 + TC_BK < kend) kv_async<D>(kv2 + ((j + 1) & 1) * PAIR, kb, vb, krs, s0 + TC_BK, T);
    return kv2 + (j & 1) * PAIR;
}

/* ---- forward ---- */

/* grid (H, B, ceil(T/TC_BQ)), TC_THREADS. out (B,T,H,D) =, lse (B,H,T) = (when not NULL);
 * k, v (B,S,KV,D) with S ≥ T; sl2 = log2(e)/sqrt(D). Query tiles run last first, and the
 * tile is the grid's slowest index: every head's longest rows start before any shorter
 * ones, so the last blocks to run are the shortest (the same for dq, and dk/dv's key tiles
 * first to last). */
template <int D, typename TO>
__global__ void __launch_bounds__(TC_THREADS, 2) k_tc_fwd(TO *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v,
                                                          int T, int S, int H, int KV, float sl2) {
    extern __shared__ __align__(16) unsigned char smraw[];
    bf16 *Qs = (bf16 *)smraw, *kv2 = Qs + TC_BQ * (D + 8); // kv2: two (K, V) buffer pairs
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31, c4 = lane & 3;
    int q0 = (gridDim.z - 1 - blockIdx.z) * TC_BQ, h = blockIdx.x, b = blockIdx.y, kh = h / (H / KV);
    const bf16 *qb = q + ((size_t)b * T * H + h) * D;
    const bf16 *kb = k + ((size_t)b * S * KV + kh) * D, *vb = v + ((size_t)b * S * KV + kh) * D;
    size_t krs = (size_t)KV * D;
    tile_async<TC_BQ, D>(Qs, qb, (size_t)H * D, q0, T);
    kv_async<D>(kv2, kb, vb, krs, 0, T); // one group with Q's copies
    int r0 = w * 16, t0 = q0 + r0 + (lane >> 2); // this thread's rows: t0 and t0 + 8
    float o[D / 8][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
#pragma unroll
    for (int n = 0; n < D / 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    int kend = min(q0 + TC_BQ, T);
    for (int s0 = 0, j = 0; s0 < kend; s0 += TC_BK, j++) {
        const bf16 *Ks = next_kv<D>(kv2, kb, vb, krs, j, s0, kend, T), *Vs = Ks + TC_BK * (D + 8);
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

/* Where the backward's results go: float32 dq, dk, dv (RB false), or (RB) rotated back
 * (R^T, position t of row t) and rounded: dqb rows of ldq values, dkb and dvb rows of ldkv;
 * cs/sn the (T, D/2) tables. k_rope's pair arithmetic (lc_rope_pair) and rounding. */
struct tc_bout {
    float *dq, *dk, *dv;
    bf16 *dqb, *dkb, *dvb;
    int64_t ldq, ldkv;
    const float *cs, *sn;
    float dir; // -1: the inverse rotation, s negated as k_rope's dir does
};

/* The rotated, rounded result of one row's values v[n][e] (columns n·8 + c + e of the
 * fragment layout, c = 2·(lane % 4)) at position t into row: pairs (j, j + D/2) sit in the
 * same thread (n and n + D/16). */
template <int D, class V>
__device__ __forceinline__ void tc_store_rot(bf16 *row, const tc_bout &o, int t, int c, V v) {
    const float *cr = o.cs + (size_t)t * (D / 2) + c, *sr = o.sn + (size_t)t * (D / 2) + c;
#pragma unroll
    for (int n = 0; n < D / 16; n++) {
        float y1[2], y2[2];
#pragma unroll
        for (int e = 0; e < 2; e++) lc_rope_pair(v(n, e), v(n + D / 16, e), cr[n * 8 + e], o.dir * sr[n * 8 + e], y1[e], y2[e]);
        *reinterpret_cast<__nv_bfloat162 *>(row + c + n * 8) = __floats2bfloat162_rn(y1[0], y1[1]);
        *reinterpret_cast<__nv_bfloat162 *>(row + c + n * 8 + D / 2) = __floats2bfloat162_rn(y2[0], y2[1]);
    }
}

/* dq (B,T,H,D) = scale · Σ_s dS K. grid (H, B, ceil(T/TC_BQ)), TC_THREADS; Dr (B,H,T) =
 * rowsum(dout·out). The Q and dO tiles are read once, into the warps' registers as A
 * fragments; SMALL: they lie where the K/V buffers go, which are filled only after
 * (dq_smem; the same arithmetic in the same order, so the same bits). */
template <int D, bool SMALL, bool RB>
__global__ void __launch_bounds__(TC_THREADS) k_tc_dq(tc_bout ob, const bf16 *dout, const bf16 *q, const bf16 *k,
                                                      const bf16 *v, const float *lse, const float *Dr, int T,
                                                      int H, int KV, float sl2, float scale) {
    extern __shared__ __align__(16) unsigned char smraw[];
    bf16 *Qs = (bf16 *)smraw, *Os = Qs + TC_BQ * (D + 8), *kv2 = SMALL ? Qs : Os + TC_BQ * (D + 8);
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31, c4 = lane & 3;
    int q0 = (gridDim.z - 1 - blockIdx.z) * TC_BQ, h = blockIdx.x, b = blockIdx.y, kh = h / (H / KV);
    size_t qoff = ((size_t)b * T * H + h) * D, koff = ((size_t)b * T * KV + kh) * D, krs = (size_t)KV * D;
    const bf16 *kb = k + koff, *vb = v + koff;
    int kend = min(q0 + TC_BQ, T);
    tile_async<TC_BQ, D>(Qs, q + qoff, (size_t)H * D, q0, T);
    tile_async<TC_BQ, D>(Os, dout + qoff, (size_t)H * D, q0, T);
    cp_commit();
    if (!SMALL) kv_async<D>(kv2, kb, vb, krs, 0, T);
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
    // the warp's Q and dO rows stay in registers as A fragments (the block's rows are fixed)
    uint32_t qf[D / 16][4], of[D / 16][4];
    if (SMALL) cp_wait();
    else asm volatile("cp.async.wait_group 1;" ::: "memory"); // Q and dO (the K/V copy may fly on)
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
        frag_a(qf[kk], Qs, D + 8, r0, kk * 16, lane);
        frag_a(of[kk], Os, D + 8, r0, kk * 16, lane);
    }
    if (SMALL) {
        __syncthreads(); // every warp has its rows: the K/V buffers may come in over them
        kv_async<D>(kv2, kb, vb, krs, 0, T);
    }
    for (int s0 = 0, j = 0; s0 < kend; s0 += TC_BK, j++) {
        const bf16 *Ks = next_kv<D>(kv2, kb, vb, krs, j, s0, kend, T), *Vs = Ks + TC_BK * (D + 8);
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
        if constexpr (RB) {
            tc_store_rot<D>(ob.dqb + ((size_t)b * T + t) * ob.ldq + (size_t)h * D, ob, t, c4 * 2,
                            [&](int n, int e) { return acc[n][2 * r + e] * scale; });
            continue;
        }
        float *row = ob.dq + (((size_t)b * T + t) * H + h) * D + c4 * 2;
#pragma unroll
        for (int n = 0; n < D / 8; n++)
            *reinterpret_cast<float2 *>(row + n * 8) = make_float2(acc[n][2 * r] * scale, acc[n][2 * r + 1] * scale);
    }
}

/* dk (B,T,KV,D) = scale · Σ dS^T Q, dv = Σ P^T dO, summed over the heads of the kv head's
 * group in order and the queries at or after each key. grid (KV, B, ceil(T/TC_BKV)).
 * BQ2: queries per streamed tile (TC_BQ2, or 32 where shared memory is short), each warp
 * taking BQ2/2 of them. */
template <int D, int BQ2, bool RB>
__global__ void __launch_bounds__(TC_THREADS) k_tc_dkdv(tc_bout ob, const bf16 *dout, const bf16 *q,
                                                        const bf16 *k, const bf16 *v, const float *lse,
                                                        const float *Dr, int T, int H, int KV, float sl2,
                                                        float scale) {
    extern __shared__ __align__(16) unsigned char smraw[];
    constexpr int QW = BQ2 / 2, QO = 2 * BQ2 * (D + 8); // queries a warp; one Q/dO buffer pair
    float *LD2 = (float *)smraw; // two buffers of (lse, D), BQ2 each
    bf16 *Ks = (bf16 *)(LD2 + 4 * BQ2), *Vs = Ks + TC_BKV * (D + 8), *QO2 = Vs + TC_BKV * (D + 8);
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31, c4 = lane & 3;
    int j0 = blockIdx.z * TC_BKV, kh = blockIdx.x, b = blockIdx.y, G = H / KV;
    int kr = (w & 3) * 16, qh = (w >> 2) * QW; // the warp's keys j0+kr.. and query half qh..
    size_t koff = ((size_t)b * T * KV + kh) * D, qrs = (size_t)H * D;
    int nt = (T - j0 + BQ2 - 1) / BQ2, nit = G * nt; // query tiles a head, steps
    auto issue = [&](int it) { // step it's tiles: head kh·G + it/nt, queries j0 + (it%nt)·BQ2..
        int h = kh * G + it / nt, t0 = j0 + it % nt * BQ2;
        size_t qoff = ((size_t)b * T * H + h) * D, loff = ((size_t)b * H + h) * T;
        bf16 *Qb = QO2 + (it & 1) * QO;
        float *Lb = LD2 + (it & 1) * 2 * BQ2;
        tile_async<BQ2, D>(Qb, q + qoff, qrs, t0, T);
        tile_async<BQ2, D>(Qb + BQ2 * (D + 8), dout + qoff, qrs, t0, T);
        if (threadIdx.x < BQ2) {
            int t = t0 + threadIdx.x, tc = min(t, T - 1);
            cp4(Lb + threadIdx.x, lse + loff + tc, t < T);
            cp4(Lb + BQ2 + threadIdx.x, Dr + loff + tc, t < T);
        }
        cp_commit();
    };
    tile_async<TC_BKV, D>(Ks, k + koff, (size_t)KV * D, j0, T);
    tile_async<TC_BKV, D>(Vs, v + koff, (size_t)KV * D, j0, T);
    issue(0); // one group with K's and V's copies
    int s0 = j0 + kr + (lane >> 2); // this thread's keys: s0 and s0 + 8
    float adk[D / 8][4], adv[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; n++)
#pragma unroll
        for (int i = 0; i < 4; i++) adk[n][i] = adv[n][i] = 0.0f;
    for (int it = 0; it < nit; it++) {
        int t0 = j0 + it % nt * BQ2;
        cp_wait();
        __syncthreads(); // step it's tiles are in; every warp is done with the other buffer
        if (it + 1 < nit) issue(it + 1);
        const bf16 *Qs = QO2 + (it & 1) * QO, *Os = Qs + BQ2 * (D + 8);
        const float *Ls = LD2 + (it & 1) * 2 * BQ2, *Ds = Ls + BQ2;
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
                float p = (t < s || t >= T) ? 0.0f : ex2(sc[n][i] * sl2 - Ls[tl] * TC_LOG2E);
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
    float *rk = (float *)smraw + ((w & 3) * (D / 8) * 4) * 32 + lane, *rv = rk + 4 * (D / 8) * 4 * 32;
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
        if constexpr (RB) {
            size_t ro = ((size_t)b * T + s) * ob.ldkv + (size_t)kh * D;
            tc_store_rot<D>(ob.dkb + ro, ob, s, c4 * 2,
                            [&](int n, int e) { return (adk[n][2 * r + e] + rk[(n * 4 + 2 * r) * 32 + e * 32]) * scale; });
#pragma unroll
            for (int n = 0; n < D / 8; n++) {
                int i0 = (n * 4 + 2 * r) * 32, i1 = i0 + 32;
                *reinterpret_cast<__nv_bfloat162 *>(ob.dvb + ro + c4 * 2 + n * 8) =
                    __floats2bfloat162_rn(adv[n][2 * r] + rv[i0], adv[n][2 * r + 1] + rv[i1]);
            }
            continue;
        }
        size_t off = (((size_t)b * T + s) * KV + kh) * D + c4 * 2;
#pragma unroll
        for (int n = 0; n < D / 8; n++) {
            int i0 = (n * 4 + 2 * r) * 32, i1 = i0 + 32;
            *reinterpret_cast<float2 *>(ob.dk + off + n * 8) =
                make_float2((adk[n][2 * r] + rk[i0]) * scale, (adk[n][2 * r + 1] + rk[i1]) * scale);
            *reinterpret_cast<float2 *>(ob.dv + off + n * 8) =
                make_float2(adv[n][2 * r] + rv[i0], adv[n][2 * r + 1] + rv[i1]);
        }
    }
}

/* ---- launch ---- */

/* Dynamic shared memory of each kernel (bytes). The default configuration needs, for D 128,
 * 68 KB (forward), 102 KB (dq) and 103 KB (dk/dv): more than the 99 KB a block may have on
 * compute capability 8.6 and 8.9. The small one (dq's K/V buffers over its Q tile, dk/dv on
 * query tiles of 32) needs 68, 68 and 69 KB. dk/dv also needs room for the sums of warps
 * 4-7 at its end. */
template <int D> static size_t fwd_smem() { return (size_t)(TC_BQ + 4 * TC_BK) * (D + 8) * 2; }
template <int D, bool SMALL> static size_t dq_smem() {
    size_t kv = (size_t)4 * TC_BK * (D + 8) * 2, qo = (size_t)2 * TC_BQ * (D + 8) * 2;
    static_assert(4 * TC_BK <= TC_BQ, "the small dq's K/V buffers must fit over its Q tile");
    return SMALL ? qo : qo + kv;
}
template <int D, int BQ2> static size_t dkdv_smem() {
    size_t tiles = (size_t)4 * BQ2 * 4 + (size_t)(2 * TC_BKV + 4 * BQ2) * (D + 8) * 2;
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

template <int D, typename TO>
static void tc_fwd(lc_cuda *c, TO *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v, int64_t B, int64_t T,
                   int64_t S, int64_t H, int64_t KV) {
    size_t sm = fwd_smem<D>();
    LC_CK(c, cudaFuncSetAttribute(k_tc_fwd<D, TO>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm));
    dim3 grid((unsigned)H, (unsigned)B, (unsigned)((T + TC_BQ - 1) / TC_BQ));
    k_tc_fwd<D, TO><<<grid, TC_THREADS, sm, c->st>>>(out, lse, q, k, v, (int)T, (int)S, (int)H, (int)KV,
                                                    TC_LOG2E / sqrtf((float)D));
    LC_LAUNCHED(c);
}

void lc_cuda_att_tc_fwd(lc_cuda *c, void *out, bool out16, float *lse, const void *q, const void *k, const void *v,
                        int64_t B, int64_t T, int64_t S, int64_t H, int64_t KV, int64_t D) {
    typedef const bf16 *H16;
    if (!out16 && D == 64) tc_fwd<64>(c, (float *)out, lse, (H16)q, (H16)k, (H16)v, B, T, S, H, KV);
    else if (!out16) tc_fwd<128>(c, (float *)out, lse, (H16)q, (H16)k, (H16)v, B, T, S, H, KV);
    else if (D == 64) tc_fwd<64>(c, (bf16 *)out, lse, (H16)q, (H16)k, (H16)v, B, T, S, H, KV);
    else tc_fwd<128>(c, (bf16 *)out, lse, (H16)q, (H16)k, (H16)v, B, T, S, H, KV);
}

template <int D, bool SMALL, bool RB>
static void tc_bwd(lc_cuda *c, const tc_bout &ob, const bf16 *dout, const bf16 *q, const bf16 *k, const bf16 *v,
                   const float *lse, const float *Dr, int64_t B, int64_t T, int64_t H, int64_t KV) {
    constexpr int BQ2 = SMALL ? 32 : TC_BQ2;
    float scale = 1.0f / sqrtf((float)D), sl2 = TC_LOG2E * scale;
    size_t sq = dq_smem<D, SMALL>(), skv = dkdv_smem<D, BQ2>();
    LC_CK(c, cudaFuncSetAttribute(k_tc_dq<D, SMALL, RB>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sq));
    LC_CK(c, cudaFuncSetAttribute(k_tc_dkdv<D, BQ2, RB>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)skv));
    dim3 gq((unsigned)H, (unsigned)B, (unsigned)((T + TC_BQ - 1) / TC_BQ));
    k_tc_dq<D, SMALL, RB><<<gq, TC_THREADS, sq, c->st>>>(ob, dout, q, k, v, lse, Dr, (int)T, (int)H, (int)KV, sl2, scale);
    LC_LAUNCHED(c);
    dim3 gk((unsigned)KV, (unsigned)B, (unsigned)((T + TC_BKV - 1) / TC_BKV));
    k_tc_dkdv<D, BQ2, RB><<<gk, TC_THREADS, skv, c->st>>>(ob, dout, q, k, v, lse, Dr, (int)T, (int)H, (int)KV, sl2,
                                                          scale);
    LC_LAUNCHED(c);
}

template <bool RB>
static void tc_bwd_d(lc_cuda *c, const tc_bout &ob, const void *dout, const void *q, const void *k, const void *v,
                     const float *lse, const float *Dr, int64_t B, int64_t T, int64_t H, int64_t KV, int64_t D) {
    typedef const bf16 *H16;
    H16 o = (H16)dout, qb = (H16)q, kb = (H16)k, vb = (H16)v;
    if (D == 64) {
        if (tc_config<64>() == 0) tc_bwd<64, false, RB>(c, ob, o, qb, kb, vb, lse, Dr, B, T, H, KV);
        else tc_bwd<64, true, RB>(c, ob, o, qb, kb, vb, lse, Dr, B, T, H, KV);
    } else {
        if (tc_config<128>() == 0) tc_bwd<128, false, RB>(c, ob, o, qb, kb, vb, lse, Dr, B, T, H, KV);
        else tc_bwd<128, true, RB>(c, ob, o, qb, kb, vb, lse, Dr, B, T, H, KV);
    }
}

/* The caller asked lc_cuda_att_tc_ok, so a configuration fits. */
void lc_cuda_att_tc_bwd(lc_cuda *c, float *dq, float *dk, float *dv, const void *dout, const void *q, const void *k,
                        const void *v, const float *lse, const float *Dr, int64_t B, int64_t T, int64_t H, int64_t KV,
                        int64_t D) {
    tc_bout ob = {dq, dk, dv, NULL, NULL, NULL, 0, 0, NULL, NULL, 0.0f};
    tc_bwd_d<false>(c, ob, dout, q, k, v, lse, Dr, B, T, H, KV, D);
}

void lc_cuda_att_tc_bwd_rb(lc_cuda *c, void *dqb, void *dkb, void *dvb, int64_t ldq, int64_t ldkv, const void *dout,
                           const void *q, const void *k, const void *v, const float *lse, const float *Dr,
                           const float *cos, const float *sin, int64_t B, int64_t T, int64_t H, int64_t KV, int64_t D) {
    tc_bout ob = {NULL, NULL, NULL, (bf16 *)dqb, (bf16 *)dkb, (bf16 *)dvb, ldq, ldkv, cos, sin, -1.0f};
    tc_bwd_d<true>(c, ob, dout, q, k, v, lse, Dr, B, T, H, KV, D);
}
