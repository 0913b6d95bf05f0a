/*
 * attention_tc.cu — causal grouped-query attention of training shapes on the tensor
 * cores, forward and backward, in FlashAttention-2's structure: bf16 operands in
 * mma.sync m16n8k16 with float32 accumulation, a float32 online softmax, no T×T matrix
 * in memory. It reads the float32 activations of backend.h's layout and writes float32
 * results; each tile is rounded to bf16 as it is copied into shared memory.
 *
 * Forward: a block per (query tile of 64, head, batch), 4 warps of 16 query rows; key
 * tiles of 64 up to the diagonal. Backward (after attention.cu's D = rowsum(dout·out)):
 * one pass over query tiles for dq (P recomputed from lse, dP = dO V^T,
 * dS = P (dP − D), dq = scale · dS K) and one over key tiles for dk/dv (a block per
 * (key tile of 64, kv head, batch) looping over the heads of its group in order and the
 * query tiles at or after it: dv = Σ P^T dO, dk = scale · Σ dS^T Q). No atomics: every
 * sum has a fixed order, so results repeat bit for bit on a card.
 *
 * Scope: pos0 = 0 (query t sees keys 0..t), head_dim 64 or 128, 16-byte aligned
 * tensors; attention.cu decides (lc_cuda_att_tc_ok) and keeps its float32 kernels for
 * everything else (decoding, short sequences, LORAC_CUDA_ATT=fp32). Owns nothing.
 *
 * Fragments (PTX ISA, mma.m16n8k16 .bf16): g = lane / 4, c = lane % 4. A (16×16, row):
 * regs {row g, k 2c..2c+1}, {row g+8, k 2c}, {row g, k 2c+8}, {row g+8, k 2c+8}.
 * B (16×8): regs {k 2c..2c+1, n g}, {k 2c+8.., n g}. C (16×8, f32): {row g, n 2c, 2c+1},
 * {row g+8, n 2c, 2c+1}. Two C tiles side by side are one A fragment (P, dS).
 * Shared tiles are padded by 8 bf16 a row so the 32-bit fragment loads miss no bank.
 */
#include <cuda_bf16.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda.h"

#define TC_BQ 64  // query rows per forward / dq block (4 warps × 16)
#define TC_BK 64  // keys per tile (forward, dq) and per dk/dv block (4 warps × 16)
#define TC_BQ2 32 // query rows per inner tile of the dk/dv pass
#define TC_THREADS 128
#define TC_LOG2E 1.4426950408889634f

typedef __nv_bfloat16 bf16;

/* ---- fragments ---- */

__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi); // .x (lower address, lower k) = lo
    uint32_t r;
    memcpy(&r, &v, 4);
    return r;
}

__device__ __forceinline__ uint32_t ld32(const bf16 *p) { return *reinterpret_cast<const uint32_t *>(p); }

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

/* A fragment: rows r0..r0+15, columns k0..k0+15 of row-major M (leading dimension ld). */
__device__ __forceinline__ void frag_a(uint32_t a[4], const bf16 *M, int ld, int r0, int k0, int lane) {
    const bf16 *p = M + (r0 + (lane >> 2)) * ld + k0 + (lane & 3) * 2;
    a[0] = ld32(p), a[1] = ld32(p + 8 * ld), a[2] = ld32(p + 8), a[3] = ld32(p + 8 * ld + 8);
}

/* B fragment whose column n is row n0+n of M and whose k runs along that row from k0. */
__device__ __forceinline__ void frag_b(uint32_t &b0, uint32_t &b1, const bf16 *M, int ld, int n0, int k0,
                                       int lane) {
    const bf16 *p = M + (n0 + (lane >> 2)) * ld + k0 + (lane & 3) * 2;
    b0 = ld32(p), b1 = ld32(p + 8);
}

/* The A fragment of the 16×16 block made of C tiles x and y (columns 0-7 and 8-15). */
__device__ __forceinline__ void c_to_a(uint32_t a[4], const float x[4], const float y[4]) {
    a[0] = pack2(x[0], x[1]), a[1] = pack2(x[2], x[3]), a[2] = pack2(y[0], y[1]), a[3] = pack2(y[2], y[3]);
}

/* Rows row0..row0+R-1 of a float32 matrix whose row r starts at src + r·rs (D floats) into
 * bf16 shared memory: row-major dst[r][d] (ld D+8) when dst, transposed dstT[d][r] (ld R+8)
 * when dstT; rows at or after lim are zeros. All threads of the block take part. */
template <int R, int D>
__device__ __forceinline__ void load_tile(bf16 *dst, bf16 *dstT, const float *src, size_t rs, int row0, int lim) {
    for (int idx = threadIdx.x; idx < R * D / 4; idx += TC_THREADS) {
        int r = idx % R, c = (idx / R) * 4, row = row0 + r;
        float4 x = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (row < lim) x = *reinterpret_cast<const float4 *>(src + (size_t)row * rs + c);
        if (dst) *reinterpret_cast<uint2 *>(dst + r * (D + 8) + c) = make_uint2(pack2(x.x, x.y), pack2(x.z, x.w));
        if (dstT) {
            bf16 *t = dstT + c * (R + 8) + r;
            t[0] = __float2bfloat16_rn(x.x), t[R + 8] = __float2bfloat16_rn(x.y);
            t[2 * (R + 8)] = __float2bfloat16_rn(x.z), t[3 * (R + 8)] = __float2bfloat16_rn(x.w);
        }
    }
}

/* ---- forward ---- */

/* grid (ceil(T/TC_BQ), H, B), TC_THREADS. out (B,T,H,D) =, lse (B,H,T) = (when not NULL);
 * k, v (B,S,KV,D) with S ≥ T; sl2 = log2(e)/sqrt(D). Query tiles run last first (the
 * longest rows start first). */
template <int D>
__global__ void __launch_bounds__(TC_THREADS) k_tc_fwd(float *out, float *lse, const float *q, const float *k,
                                                       const float *v, int T, int S, int H, int KV, float sl2) {
    extern __shared__ __align__(16) unsigned char smraw[];
    bf16 *Qs = (bf16 *)smraw, *Ks = Qs + TC_BQ * (D + 8), *Vt = Ks + TC_BK * (D + 8); // Vt: (D, TC_BK+8)
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31, c4 = lane & 3;
    int q0 = (gridDim.x - 1 - blockIdx.x) * TC_BQ, h = blockIdx.y, b = blockIdx.z, kh = h / (H / KV);
    const float *qb = q + ((size_t)b * T * H + h) * D;
    const float *kb = k + ((size_t)b * S * KV + kh) * D, *vb = v + ((size_t)b * S * KV + kh) * D;
    load_tile<TC_BQ, D>(Qs, NULL, qb, (size_t)H * D, q0, T);
    int r0 = w * 16, t0 = q0 + r0 + (lane >> 2); // this thread's rows: t0 and t0 + 8
    float o[D / 8][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
#pragma unroll
    for (int n = 0; n < D / 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    int kend = min(q0 + TC_BQ, T);
    for (int s0 = 0; s0 < kend; s0 += TC_BK) {
        __syncthreads();
        load_tile<TC_BK, D>(Ks, NULL, kb, (size_t)KV * D, s0, T);
        load_tile<TC_BK, D>(NULL, Vt, vb, (size_t)KV * D, s0, T);
        __syncthreads();
        // S = Q K^T (log2 units, scaled)
        float sc[TC_BK / 8][4];
#pragma unroll
        for (int n = 0; n < TC_BK / 8; n++) sc[n][0] = sc[n][1] = sc[n][2] = sc[n][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            uint32_t a[4];
            frag_a(a, Qs, D + 8, r0, kk * 16, lane);
#pragma unroll
            for (int n = 0; n < TC_BK / 8; n++) {
                uint32_t b0, b1;
                frag_b(b0, b1, Ks, D + 8, n * 8, kk * 16, lane);
                mma(sc[n], a, b0, b1);
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
            uint32_t a[4];
            c_to_a(a, sc[2 * kk], sc[2 * kk + 1]);
#pragma unroll
            for (int n = 0; n < D / 8; n++) {
                uint32_t b0, b1;
                frag_b(b0, b1, Vt, TC_BK + 8, n * 8, kk * 16, lane);
                mma(o[n], a, b0, b1);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
        int t = t0 + r * 8;
        if (t >= T) continue;
        float inv = 1.0f / l[r], *orow = out + (((size_t)b * T + t) * H + h) * D + c4 * 2;
#pragma unroll
        for (int n = 0; n < D / 8; n++)
            *reinterpret_cast<float2 *>(orow + n * 8) = make_float2(o[n][2 * r] * inv, o[n][2 * r + 1] * inv);
        if (lse && c4 == 0) lse[((size_t)b * H + h) * T + t] = (m[r] + log2f(l[r])) * (1.0f / TC_LOG2E);
    }
}

/* ---- backward ---- */

/* dq (B,T,H,D) = scale · Σ_s dS K. grid (ceil(T/TC_BQ), H, B), TC_THREADS; Dr (B,H,T) =
 * rowsum(dout·out). */
template <int D>
__global__ void __launch_bounds__(TC_THREADS) k_tc_dq(float *dq, const float *dout, const float *q, const float *k,
                                                      const float *v, const float *lse, const float *Dr, int T,
                                                      int H, int KV, float sl2, float scale) {
    extern __shared__ __align__(16) unsigned char smraw[];
    bf16 *Qs = (bf16 *)smraw, *Os = Qs + TC_BQ * (D + 8), *Ks = Os + TC_BQ * (D + 8);
    bf16 *Vs = Ks + TC_BK * (D + 8), *Kt = Vs + TC_BK * (D + 8); // Kt: (D, TC_BK+8)
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31, c4 = lane & 3;
    int q0 = (gridDim.x - 1 - blockIdx.x) * TC_BQ, h = blockIdx.y, b = blockIdx.z, kh = h / (H / KV);
    size_t qoff = ((size_t)b * T * H + h) * D, koff = ((size_t)b * T * KV + kh) * D;
    load_tile<TC_BQ, D>(Qs, NULL, q + qoff, (size_t)H * D, q0, T);
    load_tile<TC_BQ, D>(Os, NULL, dout + qoff, (size_t)H * D, q0, T);
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
    int kend = min(q0 + TC_BQ, T);
    for (int s0 = 0; s0 < kend; s0 += TC_BK) {
        __syncthreads();
        load_tile<TC_BK, D>(Ks, Kt, k + koff, (size_t)KV * D, s0, T);
        load_tile<TC_BK, D>(Vs, NULL, v + koff, (size_t)KV * D, s0, T);
        __syncthreads();
        float sc[TC_BK / 8][4], dp[TC_BK / 8][4];
#pragma unroll
        for (int n = 0; n < TC_BK / 8; n++)
#pragma unroll
            for (int i = 0; i < 4; i++) sc[n][i] = dp[n][i] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            uint32_t a[4], ao[4];
            frag_a(a, Qs, D + 8, r0, kk * 16, lane);
            frag_a(ao, Os, D + 8, r0, kk * 16, lane);
#pragma unroll
            for (int n = 0; n < TC_BK / 8; n++) {
                uint32_t b0, b1;
                frag_b(b0, b1, Ks, D + 8, n * 8, kk * 16, lane);
                mma(sc[n], a, b0, b1); // S = Q K^T
                frag_b(b0, b1, Vs, D + 8, n * 8, kk * 16, lane);
                mma(dp[n], ao, b0, b1); // dP = dO V^T
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
            uint32_t a[4];
            c_to_a(a, sc[2 * kk], sc[2 * kk + 1]);
#pragma unroll
            for (int n = 0; n < D / 8; n++) {
                uint32_t b0, b1;
                frag_b(b0, b1, Kt, TC_BK + 8, n * 8, kk * 16, lane);
                mma(acc[n], a, b0, b1);
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
 * group in order and the queries at or after each key. grid (ceil(T/TC_BK), KV, B). */
template <int D>
__global__ void __launch_bounds__(TC_THREADS) k_tc_dkdv(float *dk, float *dv, const float *dout, const float *q,
                                                        const float *k, const float *v, const float *lse,
                                                        const float *Dr, int T, int H, int KV, float sl2,
                                                        float scale) {
    extern __shared__ __align__(16) unsigned char smraw[];
    bf16 *Ks = (bf16 *)smraw, *Vs = Ks + TC_BK * (D + 8), *Qs = Vs + TC_BK * (D + 8);
    bf16 *Os = Qs + TC_BQ2 * (D + 8), *Qt = Os + TC_BQ2 * (D + 8), *Ot = Qt + D * (TC_BQ2 + 8); // Qt, Ot: (D, TC_BQ2+8)
    float *Ls = (float *)(Ot + D * (TC_BQ2 + 8)), *Ds = Ls + TC_BQ2;
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31, c4 = lane & 3;
    int j0 = blockIdx.x * TC_BK, kh = blockIdx.y, b = blockIdx.z, G = H / KV;
    size_t koff = ((size_t)b * T * KV + kh) * D;
    load_tile<TC_BK, D>(Ks, NULL, k + koff, (size_t)KV * D, j0, T);
    load_tile<TC_BK, D>(Vs, NULL, v + koff, (size_t)KV * D, j0, T);
    int r0 = w * 16, s0 = j0 + r0 + (lane >> 2); // this thread's keys: s0 and s0 + 8
    float adk[D / 8][4], adv[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; n++)
#pragma unroll
        for (int i = 0; i < 4; i++) adk[n][i] = adv[n][i] = 0.0f;
    for (int h = kh * G; h < kh * G + G; h++) {
        size_t qoff = ((size_t)b * T * H + h) * D;
        for (int t0 = j0; t0 < T; t0 += TC_BQ2) {
            __syncthreads();
            load_tile<TC_BQ2, D>(Qs, Qt, q + qoff, (size_t)H * D, t0, T);
            load_tile<TC_BQ2, D>(Os, Ot, dout + qoff, (size_t)H * D, t0, T);
            if (threadIdx.x < TC_BQ2) {
                int t = t0 + threadIdx.x;
                Ls[threadIdx.x] = t < T ? lse[((size_t)b * H + h) * T + t] * TC_LOG2E : 0.0f;
                Ds[threadIdx.x] = t < T ? Dr[((size_t)b * H + h) * T + t] : 0.0f;
            }
            __syncthreads();
            if (t0 + TC_BQ2 <= j0 + r0) continue; // every query of the tile precedes the warp's keys
            float sc[TC_BQ2 / 8][4], dp[TC_BQ2 / 8][4];
#pragma unroll
            for (int n = 0; n < TC_BQ2 / 8; n++)
#pragma unroll
                for (int i = 0; i < 4; i++) sc[n][i] = dp[n][i] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++) {
                uint32_t a[4], av[4];
                frag_a(a, Ks, D + 8, r0, kk * 16, lane);
                frag_a(av, Vs, D + 8, r0, kk * 16, lane);
#pragma unroll
                for (int n = 0; n < TC_BQ2 / 8; n++) {
                    uint32_t b0, b1;
                    frag_b(b0, b1, Qs, D + 8, n * 8, kk * 16, lane);
                    mma(sc[n], a, b0, b1); // S^T = K Q^T
                    frag_b(b0, b1, Os, D + 8, n * 8, kk * 16, lane);
                    mma(dp[n], av, b0, b1); // dP^T = V dO^T
                }
            }
#pragma unroll
            for (int n = 0; n < TC_BQ2 / 8; n++)
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    int tl = n * 8 + c4 * 2 + (i & 1), t = t0 + tl, s = s0 + (i >> 1) * 8;
                    float p = (t < s || t >= T) ? 0.0f : ex2(sc[n][i] * sl2 - Ls[tl]);
                    sc[n][i] = p, dp[n][i] = p * (dp[n][i] - Ds[tl]);
                }
            // dv += P^T dO (forward: O = P V), dk += dS^T Q (forward: S = Q K^T)
#pragma unroll
            for (int kk = 0; kk < TC_BQ2 / 16; kk++) {
                uint32_t ap[4], ad[4];
                c_to_a(ap, sc[2 * kk], sc[2 * kk + 1]);
                c_to_a(ad, dp[2 * kk], dp[2 * kk + 1]);
#pragma unroll
                for (int n = 0; n < D / 8; n++) {
                    uint32_t b0, b1;
                    frag_b(b0, b1, Ot, TC_BQ2 + 8, n * 8, kk * 16, lane);
                    mma(adv[n], ap, b0, b1);
                    frag_b(b0, b1, Qt, TC_BQ2 + 8, n * 8, kk * 16, lane);
                    mma(adk[n], ad, b0, b1);
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int s = s0 + r * 8;
        if (s >= T) continue;
        size_t off = (((size_t)b * T + s) * KV + kh) * D + c4 * 2;
#pragma unroll
        for (int n = 0; n < D / 8; n++) {
            *reinterpret_cast<float2 *>(dk + off + n * 8) = make_float2(adk[n][2 * r] * scale, adk[n][2 * r + 1] * scale);
            *reinterpret_cast<float2 *>(dv + off + n * 8) = make_float2(adv[n][2 * r], adv[n][2 * r + 1]);
        }
    }
}

/* ---- launch ---- */

template <int D> static size_t fwd_smem() { return (size_t)(TC_BQ + TC_BK) * (D + 8) * 2 + (size_t)D * (TC_BK + 8) * 2; }
template <int D> static size_t dq_smem() { return (size_t)(2 * TC_BQ + 2 * TC_BK) * (D + 8) * 2 + (size_t)D * (TC_BK + 8) * 2; }
template <int D> static size_t dkdv_smem() {
    return (size_t)(2 * TC_BK + 2 * TC_BQ2) * (D + 8) * 2 + (size_t)2 * D * (TC_BQ2 + 8) * 2 + 2 * TC_BQ2 * sizeof(float);
}

bool lc_cuda_att_tc_ok(int64_t Tq, int64_t S, int64_t D, int64_t pos0, const void *const *ptrs, int n) {
    const char *e = getenv("LORAC_CUDA_ATT");
    if (e && !strcmp(e, "fp32")) return false;
    // shortest sequence taken (LORAC_CUDA_ATT_MIN_T; default 16: measured faster than the
    // float32 kernels from the recipe's 68 tokens up, bench/results/cuda_notes.md)
    const char *mt = getenv("LORAC_CUDA_ATT_MIN_T");
    int64_t min_t = mt && *mt ? strtoll(mt, NULL, 10) : 16;
    if (pos0 != 0 || Tq < min_t || Tq < 1 || S < Tq || (D != 64 && D != 128)) return false;
    for (int i = 0; i < n; i++)
        if ((uintptr_t)ptrs[i] % 16) return false;
    return true;
}

template <int D>
static void tc_fwd(lc_cuda *c, float *out, float *lse, const float *q, const float *k, const float *v, int64_t B,
                   int64_t T, int64_t S, int64_t H, int64_t KV) {
    size_t sm = fwd_smem<D>();
    LC_CK(c, cudaFuncSetAttribute(k_tc_fwd<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm));
    dim3 grid((unsigned)((T + TC_BQ - 1) / TC_BQ), (unsigned)H, (unsigned)B);
    k_tc_fwd<D><<<grid, TC_THREADS, sm, c->st>>>(out, lse, q, k, v, (int)T, (int)S, (int)H, (int)KV,
                                          TC_LOG2E / sqrtf((float)D));
    LC_LAUNCHED(c);
}

void lc_cuda_att_tc_fwd(lc_cuda *c, float *out, float *lse, const float *q, const float *k, const float *v,
                        int64_t B, int64_t T, int64_t S, int64_t H, int64_t KV, int64_t D) {
    if (D == 64) tc_fwd<64>(c, out, lse, q, k, v, B, T, S, H, KV);
    else tc_fwd<128>(c, out, lse, q, k, v, B, T, S, H, KV);
}

template <int D>
static void tc_bwd(lc_cuda *c, float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                   const float *v, const float *lse, const float *Dr, int64_t B, int64_t T, int64_t H, int64_t KV) {
    float scale = 1.0f / sqrtf((float)D), sl2 = TC_LOG2E * scale;
    size_t sq = dq_smem<D>(), skv = dkdv_smem<D>();
    LC_CK(c, cudaFuncSetAttribute(k_tc_dq<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sq));
    LC_CK(c, cudaFuncSetAttribute(k_tc_dkdv<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)skv));
    dim3 gq((unsigned)((T + TC_BQ - 1) / TC_BQ), (unsigned)H, (unsigned)B);
    k_tc_dq<D><<<gq, TC_THREADS, sq, c->st>>>(dq, dout, q, k, v, lse, Dr, (int)T, (int)H, (int)KV, sl2, scale);
    LC_LAUNCHED(c);
    dim3 gk((unsigned)((T + TC_BK - 1) / TC_BK), (unsigned)KV, (unsigned)B);
    k_tc_dkdv<D><<<gk, TC_THREADS, skv, c->st>>>(dk, dv, dout, q, k, v, lse, Dr, (int)T, (int)H, (int)KV, sl2, scale);
    LC_LAUNCHED(c);
}

void lc_cuda_att_tc_bwd(lc_cuda *c, float *dq, float *dk, float *dv, const float *dout, const float *q,
                        const float *k, const float *v, const float *lse, const float *Dr, int64_t B, int64_t T,
                        int64_t H, int64_t KV, int64_t D) {
    if (D == 64) tc_bwd<64>(c, dq, dk, dv, dout, q, k, v, lse, Dr, B, T, H, KV);
    else tc_bwd<128>(c, dq, dk, dv, dout, q, k, v, lse, Dr, B, T, H, KV);
}
