/*
 * decode.cu — the one-token decoding step on the card (->decode): the whole step of a
 * batch-1 sequence (embedding, every block, final norm, lm_head) in 8 kernels a block
 * instead of ~36 single ops, recorded once as a CUDA graph and replayed for every token.
 *
 * The block weights are bf16 or float32, or NF4 (blocks of 64 within rows of a multiple
 * of 64, one 4-bit map): the products then read the codes, 8 a lane a load with their
 * block's scale, and multiply lut[code] · absmax rounded to bf16 — the values of the
 * single ops (quant.cu's k_qgemv), 0.5 bytes a weight read instead of 2.
 *
 * Kernels of one block (x the residual stream, u = x A an adapter's rank-r projection):
 *   norm    x += s·u_down B_down of the previous block (or x = embedding row), xn = RMSNorm
 *   gemv    q, k, v = xn W^T (+ bias) in one launch; extra blocks of the same launch write
 *           the partial sums of the adapters' u = xn A (CH input rows a block)
 *   attn    q, k, v += s·u B and RoPE at the device position (k, v stored in the cache at
 *           that position), then one query row a head over keys 0..pos
 *   gemv    xmid = x + att Wo^T (+ u_o partials)
 *   norm    xmid += s·u_o B_o, xn = RMSNorm
 *   gemv    gate, up = xn W^T (+ u_gate, u_up partials)
 *   swiglu  h = silu(gate + s·u B) · (up + s·u B)
 *   gemv    x' = xmid + h Wd^T (+ u_down partials; its s·u B waits for the next norm)
 * Every kernel is launched with programmatic dependent launch (sm_90; LORAC_CUDA_PDL=0
 * turns it off) and waits for its predecessor before reading, so launches overlap the
 * previous kernel's tail. Everything that changes from token to token is read from
 * device memory: the token id (the model's upload) and the position (a device int
 * written before each launch), so one recorded graph serves every token of a sequence. A new descriptor (another cache,
 * arena, rope table, adapters added, scale, shapes) records a new graph; adapter values
 * rewritten in place (lorac serve's per-request copies, training) are read at replay.
 *
 * Switches (read at every step): LORAC_CUDA_DECODE=0 declines (the model runs the
 * single ops), LORAC_CUDA_GRAPH=0 launches the fused kernels directly, and the
 * profiler (LORAC_CUDA_PROFILE=1) declines so its per-op table stays whole;
 * LORAC_CUDA_DECODE_SPLIT, LORAC_CUDA_DECODE_PF=0 (no L2 prefetch of the adapters' B by the
 * products' adapter blocks), LORAC_CUDA_DECODE_L2PF (MB of the next product's weights the
 * small kernels' extra blocks prefetch into L2; default 4, 0 off), LORAC_CUDA_DECODE_ASPLIT
 * (blocks a head's attention is split over; default one per 256 positions of the cache, at
 * most 8) and, in measuring builds, LORAC_CUDA_DECODE_SKIP choose kernels and are part of the
 * recorded graph's key.
 *
 * Owns a stream of its own (blocking: ordered with the legacy stream the rest of the
 * backend uses), the step's scratch, the position's device and pinned host words and the
 * recorded graph; lc_cuda_decode_free releases them. Numerics: the single ops' float32
 * arithmetic (bf16 weights widened, float32 sums); only summation orders differ.
 */
#include <cuda_bf16.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <type_traits>

#include "backend/cuda/cuda.h"

extern "C" {
#include "core/mem.h"
}

#define RMAX 32  // largest adapter rank
#define CH 256   // input rows of an adapter's A per partial-sum block
#define GW 4     // warps (output rows) of a product block; also 128 partial-sum threads
#define GU 2     // weight loads in flight per lane (16-byte; NF4: 4-byte words of codes);
                 // LORAC_CUDA_DECODE_U=8: 8, as before the ninth round — fewer a warp and more
                 // warps resident measured faster (cuda_notes.md "grp9")
#define NW 1024  // threads of the norm kernel
#define AW 32    // warps of the attention kernel
#define MAXD 256 // largest head_dim
#define DPL (MAXD / 32)
#define XR 4      // columns of the norm a thread keeps in registers (more are re-read)
#define NSTG 3072 // shared floats staging the norm's adapter partial sums
#define ASPLIT_KEYS 256 // cache positions a block of a head's decoding attention (attn_splits)
#define ASPLIT_MAX 8
#define NPOS 8    // pinned host words of the position: steps the host may queue before waiting

/* ------------------------------------------------------------ kernels */

/* The next product's first weight bytes (up to 3 regions), fetched into L2 by nb extra
 * blocks of a small kernel (blocks first, first + 1, ...), one `prefetch.global.L2` a
 * 128-byte line, while the kernel's own blocks wait and work: the memory streams weights
 * during the small kernel's chain of dependent reads (cuda_notes.md, "l2pf12"). */
struct dl2 {
    const char *p[3];
    size_t n[3];
    int first, nb;
};

/* Thread t of `step` threads prefetches its share of the n bytes at p into L2, one
 * 128-byte line a `prefetch.global.L2` (p NULL: nothing). */
__device__ __forceinline__ void d_pf_lines(const void *p, size_t n, size_t t, size_t step) {
    for (size_t c = t; p && c * 128 < n; c += step)
        asm volatile("prefetch.global.L2 [%0];" ::"l"((const char *)p + c * 128));
}

/* Block b (0 <= b < nb) of f's extra blocks issues its share of the prefetches. */
__device__ __forceinline__ void d_l2pf(const dl2 &f, int b) {
    size_t t = (size_t)b * blockDim.x + threadIdx.x, step = (size_t)f.nb * blockDim.x;
    for (int m = 0; m < 3; m++)
        d_pf_lines(m == 0 ? f.p[0] : m == 1 ? f.p[1] : f.p[2], m == 0 ? f.n[0] : m == 1 ? f.n[1] : f.n[2], t, step);
}

__device__ __forceinline__ float d_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Sum over the block (every thread gets it); sh holds 32 floats. */
__device__ __forceinline__ float d_block_sum(float v, float *sh) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = d_warp_sum(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    float t = lane < nw ? sh[lane] : 0.0f;
    return d_warp_sum(t);
}

/* u[j][k] (k < r) = the sum over chunks c, in chunk order, of part_j[c·r + k], for each
 * j < 3 with part_j set (the others untouched). The whole block stages the partial sums in
 * shared memory, tile floats at a time (one round trip a tile: every load in flight at
 * once), then thread j·r + k adds its column in order, so the sums are those of a serial
 * loop. Every thread of the block calls it (barriers); blockDim ≥ 3·r, tile ≥ 3·RMAX. */
__device__ __forceinline__ void d_sum_u(float (*u)[RMAX], const float *p0, const float *p1, const float *p2,
                                        int chunks, int r, float *stage, int tile) {
    int t = threadIdx.x, n = blockDim.x, per = tile / 3, cpt = per / r;
    int j = t / r, k = t % r;
    const float *pj = j == 0 ? p0 : j == 1 ? p1 : p2;
    bool mine = t < 3 * r && pj;
    float acc = 0.0f;
    for (int c0 = 0; c0 < chunks; c0 += cpt) {
        int nc = min(cpt, chunks - c0), m = nc * r, tot = 3 * m;
        for (int i0 = 0; i0 < tot; i0 += 4 * n) {
            float v[4];
#pragma unroll
            for (int q = 0; q < 4; q++) {
                int i = i0 + q * n + t, jj = i / m;
                const float *pp = jj == 0 ? p0 : jj == 1 ? p1 : p2;
                v[q] = i < tot && pp ? pp[(size_t)c0 * r + (i - jj * m)] : 0.0f;
            }
#pragma unroll
            for (int q = 0; q < 4; q++) {
                int i = i0 + q * n + t, jj = i / m;
                if (i < tot) stage[jj * per + (i - jj * m)] = v[q];
            }
        }
        __syncthreads();
        if (mine)
            for (int c = 0; c < nc; c++) acc += stage[j * per + c * r + k];
        __syncthreads();
    }
    if (mine) u[j][k] = acc;
    __syncthreads();
}

/* B's column j of an adapter with B (r, out), r ≤ RB: every load in flight at once
 * (read-only path: B does not change during a step, so it may be read before the wait). */
template <int RB>
__device__ __forceinline__ void d_bcol(float *bv, const float *b, int r, int out, int j) {
#pragma unroll
    for (int k = 0; k < RB; k++) bv[k] = k < r ? __ldg(b + (size_t)k * out + j) : 0.0f;
}

/* (u B)[j] from B's column bv (d_bcol): the same in-order sum as a serial loop. */
template <int RB>
__device__ __forceinline__ float d_ubv(const float *u, const float *bv, int r) {
    float t = 0.0f;
#pragma unroll
    for (int k = 0; k < RB; k++)
        if (k < r) t += u[k] * bv[k];
    return t;
}

/* (u B)[j] of an adapter with B (r, out), r ≤ RB. */
template <int RB>
__device__ __forceinline__ float d_ub(const float *u, const float *b, int r, int out, int j) {
    float bv[RB];
    d_bcol<RB>(bv, b, r, out, j);
    return d_ubv<RB>(u, bv, r);
}

/* A product launch: up to 3 row segments over one input x (I), and up to 3 adapters'
 * partial sums over the same x. */
struct dseg {
    const void *W;           // (rows, I) values, or NF4 codes (I/2 bytes a row)
    const float *bias, *res; // (rows) or NULL: out = x W^T + bias + res
    float *out;
    int rows;
    int ld; // elements from one weight row to the next (0: the product's width I; plain weights)
    // NF4: the blocks' scales, float32 absmax, or (nested) uint8 codes into the map with
    // absmax2 (one a 2^b2sh blocks) and the offset
    const void *am;
    const float *am2;
    float off;
    int nested, b2sh;
};
struct djob {
    const float *A; // (I, r)
    float *part;    // (chunks, r)
};
struct dgemv {
    dseg seg[3];
    int nseg;
    djob job[3];
    int njob, chunks, r;
    const float *x;
    int I;
    const float *pf[3]; // B matrices the next small kernel reads (r·out floats each), or NULL:
    int pfn[3];         // the adapter blocks prefetch them into L2 before their wait
    float code[16];     // NF4: the 4-bit map, and the nested 8-bit map (device), one for
    const float *code2; // every weight of the step (usable() checks)
};

/* The NF4 block weights' tag type: a load is a 4-byte word, 8 codes of one block of 64
 * (the single ops' unit, quant.cu's k_qgemv); plain weights load 16 bytes. */
struct dnf4 {};
template <typename T> struct dvec {
    static constexpr int N = 16 / sizeof(T);
    typedef uint4 L;
};
template <> struct dvec<dnf4> {
    static constexpr int N = 8;
    typedef uint32_t L;
};
__device__ __forceinline__ uint4 d_zero(uint4) { return make_uint4(0, 0, 0, 0); }
__device__ __forceinline__ uint32_t d_zero(uint32_t) { return 0u; }

/* Adapter block b of jb prefetches its share of g's pf matrices into L2 (128-byte lines). */
__device__ __forceinline__ void d_prefetch_b(const dgemv &g, int b, int jb) {
    size_t t = (size_t)b * blockDim.x + threadIdx.x, step = (size_t)jb * blockDim.x;
    for (int m = 0; m < 3; m++)
        d_pf_lines(m == 0 ? g.pf[0] : m == 1 ? g.pf[1] : g.pf[2],
                   (size_t)(m == 0 ? g.pfn[0] : m == 1 ? g.pfn[1] : g.pfn[2]) * sizeof(float), t, step);
}

__device__ __forceinline__ void d_vec(const uint4 &u, float *f, __nv_bfloat16) {
    const __nv_bfloat162 *h = (const __nv_bfloat162 *)&u;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 t = __bfloat1622float2(h[i]);
        f[2 * i] = t.x, f[2 * i + 1] = t.y;
    }
}
__device__ __forceinline__ void d_vec(const uint4 &u, float *f, float) {
    f[0] = __uint_as_float(u.x), f[1] = __uint_as_float(u.y), f[2] = __uint_as_float(u.z), f[3] = __uint_as_float(u.w);
}
/* 8 NF4 codes (element 2k in the high nibble of byte k) times their block's scale am,
 * each rounded to bf16: the values the single ops multiply (quant.cu's k_qgemv). */
__device__ __forceinline__ void d_vec_nf4(uint32_t w, float am, const float *lut, float *f) {
#pragma unroll
    for (int b = 0; b < 4; b++) {
        unsigned byte = (w >> (8 * b)) & 0xFFu;
        f[2 * b] = __bfloat162float(__float2bfloat16_rn(__fmul_rn(lut[byte >> 4], am)));
        f[2 * b + 1] = __bfloat162float(__float2bfloat16_rn(__fmul_rn(lut[byte & 0xFu], am)));
    }
}

/* One block of partial sums: part[ch][k] = sum over rows i of chunk ch of x[i] A[i][k]. */
__device__ void d_adapter_part(const dgemv &g, int b) {
    __shared__ float sh[GW][RMAX];
    int j = b / g.chunks, ch = b % g.chunks, r = g.r;
    const djob jb = j == 0 ? g.job[0] : j == 1 ? g.job[1] : g.job[2];
    float acc[RMAX];
#pragma unroll
    for (int k = 0; k < RMAX; k++) acc[k] = 0.0f;
    int end = min((ch + 1) * CH, g.I);
    for (int i = ch * CH + (int)threadIdx.x; i < end; i += GW * 32) {
        float xi = g.x[i];
        const float *a = jb.A + (size_t)i * r;
#pragma unroll
        for (int k = 0; k < RMAX; k++)
            if (k < r) acc[k] += xi * a[k];
    }
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
    for (int k = 0; k < RMAX; k++)
        if (k < r) {
            float t = d_warp_sum(acc[k]);
            if (lane == 0) sh[w][k] = t;
        }
    __syncthreads();
    if ((int)threadIdx.x < r) {
        float t = 0.0f;
        for (int q = 0; q < GW; q++) t += sh[q][threadIdx.x];
        jb.part[(size_t)ch * r + threadIdx.x] = t;
    }
}

/* The product: blocks [0, njob·chunks) write adapters' partial sums, the rest GW / KS
 * output rows each, KS warps a row splitting its length (short per-warp work shortens
 * the product's tail). Each warp streams its part of the weight row once in 16-byte
 * loads (NF4: 4-byte words of 8 codes), U in flight a lane; the first loads go out before
 * waiting on the previous kernel, as in cuda.cu's GEMV. The KS parts are added in order (no atomics). */
template <typename T, int KS, int U>
__global__ void __launch_bounds__(GW * 32) k_dgemv(dgemv g) {
    LC_PDL_TRIGGER();
    constexpr int VEC = dvec<T>::N;
    constexpr bool Q = std::is_same<T, dnf4>::value;
    __shared__ float part_sum[GW];
    __shared__ float lut[Q ? 16 : 1], map2[Q ? 256 : 1];
    int jb = g.njob * g.chunks;
    if ((int)blockIdx.x < jb) {
        d_prefetch_b(g, blockIdx.x, jb);
        LC_PDL_WAIT();
        d_adapter_part(g, blockIdx.x);
        return;
    }
    int wi = threadIdx.x >> 5, lane = threadIdx.x & 31, kp = wi % KS, si = 0;
    int o = ((int)blockIdx.x - jb) * (GW / KS) + wi / KS;
    if (o >= g.seg[0].rows) {
        o -= g.seg[0].rows, si = 1;
        if (g.nseg > 1 && o >= g.seg[1].rows) o -= g.seg[1].rows, si = 2;
    }
    bool live = si < g.nseg && o < (si == 0 ? g.seg[0].rows : si == 1 ? g.seg[1].rows : g.seg[2].rows);
    const dseg s = si == 0 ? g.seg[0] : si == 1 ? g.seg[1] : g.seg[2];
    int nv = g.I / VEC, per = (nv + KS - 1) / KS, vb = kp * per, ve = min(nv, vb + per);
    size_t rowb = Q ? (size_t)g.I / 2 : (size_t)(s.ld ? s.ld : g.I) * sizeof(T); // bytes from row to row
    typedef typename dvec<T>::L LT;
    const LT *w = (const LT *)((const uint8_t *)s.W + (size_t)(live ? o : 0) * rowb) + vb;
    int n = live ? ve - vb : 0;
    LT cur[U], nxt[U];
    // NF4: a load's block scale (absmax, or the nested code and absmax2); block of load v
    // (of this warp's part): the row's first block + (vb + v) / 8
    float sa[Q ? U : 1], san[Q ? U : 1];
    unsigned sj[Q ? U : 1], sjn[Q ? U : 1];
    size_t b0 = (size_t)(live ? o : 0) * (size_t)(g.I / 64);
    auto scale_load = [&](int v, float &a, unsigned &j) {
        size_t bi = b0 + (size_t)((vb + v) >> 3);
        if (s.nested) j = ((const uint8_t *)s.am)[bi], a = s.am2[bi >> s.b2sh];
        else a = ((const float *)s.am)[bi], j = 0;
    };
#pragma unroll
    for (int u = 0; u < U; u++) {
        int v = u * 32 + lane;
        cur[u] = v < n ? __ldcs(w + v) : d_zero(LT());
        if constexpr (Q) {
            sa[u] = 0.0f, sj[u] = 0;
            if (v < n) scale_load(v, sa[u], sj[u]);
        }
    }
    if constexpr (Q) { // the maps, before the wait (they do not change)
        if (threadIdx.x < 16) lut[threadIdx.x] = g.code[threadIdx.x];
        if (g.code2)
            for (int i = threadIdx.x; i < 256; i += GW * 32) map2[i] = g.code2[i];
        __syncthreads();
    }
    LC_PDL_WAIT();
    const float *x = g.x + (size_t)vb * VEC;
    float acc = 0.0f;
    for (int v0 = 0; v0 < n; v0 += 32 * U) {
        int vn = v0 + 32 * U;
#pragma unroll
        for (int u = 0; u < U; u++) {
            int v = vn + u * 32 + lane;
            nxt[u] = v < n ? __ldcs(w + v) : d_zero(LT());
            if constexpr (Q) {
                san[u] = 0.0f, sjn[u] = 0;
                if (v < n) scale_load(v, san[u], sjn[u]);
            }
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            int v = v0 + u * 32 + lane;
            if (v >= n) break;
            float wf[VEC];
            if constexpr (Q) {
                float am = s.nested ? __fadd_rn(__fmul_rn(map2[sj[u]], sa[u]), s.off) : sa[u];
                d_vec_nf4(cur[u], am, lut, wf);
            } else {
                d_vec(cur[u], wf, T());
            }
            const float4 *xp = (const float4 *)(x + (size_t)v * VEC);
#pragma unroll
            for (int e = 0; e < VEC / 4; e++) {
                float4 a = __ldg(xp + e);
                acc += wf[4 * e] * a.x + wf[4 * e + 1] * a.y + wf[4 * e + 2] * a.z + wf[4 * e + 3] * a.w;
            }
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            cur[u] = nxt[u];
            if constexpr (Q) sa[u] = san[u], sj[u] = sjn[u];
        }
    }
    acc = d_warp_sum(acc);
    if (KS > 1) {
        if (lane == 0) part_sum[wi] = acc;
        __syncthreads();
        if (kp) return;
        acc = 0.0f;
#pragma unroll
        for (int q = 0; q < KS; q++) acc += part_sum[wi + q];
    }
    if (lane == 0 && live) {
        if (s.bias) acc += s.bias[o];
        if (s.res) acc = s.res[o] + acc;
        s.out[o] = acc;
    }
}

/* x (+= s·u B of a pending adapter, or = an embedding row), xn = RMSNorm(x) · ln. */
struct dnorm {
    float *x, *xn;
    const float *ln;
    float eps;
    int C;
    const void *emb; // (V, C) or NULL
    int emb_bf16;
    const int32_t *tok;
    const float *part, *b; // pending adapter (chunks, r) partials and B (r, C), or NULL
    int chunks, r;
    float scale;
    int *bump; // the final norm: the device position, advanced by one once every block has read it
};

/* Element c of the norm's input: the embedding row's or x's, plus a pending adapter's s·u B
 * (then written back to x). */
template <int RB>
__device__ __forceinline__ float d_norm_in(const dnorm &a, const float *u, size_t row, int c) {
    float v;
    if (a.emb) v = a.emb_bf16 ? __bfloat162float(((const __nv_bfloat16 *)a.emb)[row + c]) : ((const float *)a.emb)[row + c];
    else v = a.x[c];
    if (a.part) v = v + a.scale * d_ub<RB>(u, a.b, a.r, a.C, c);
    if (a.emb || a.part) a.x[c] = v;
    return v;
}

/* One block: the pending adapter's u from its partial sums (d_sum_u), x and its sum of
 * squares (the first XR columns a thread kept in registers, ln loaded before the wait),
 * then xn. The sums run in the order of a serial loop over c = t, t + NW, ... */
template <int RB>
__global__ void __launch_bounds__(NW) k_dnorm(dnorm a, dl2 f) {
    LC_PDL_TRIGGER();
    if ((int)blockIdx.x >= f.first) {
        d_l2pf(f, (int)blockIdx.x - f.first);
        return;
    }
    __shared__ float u[3][RMAX], sh[32], stage[NSTG];
    int t = threadIdx.x, C = a.C;
    float lnv[XR], xv[XR];
#pragma unroll
    for (int q = 0; q < XR; q++) {
        int c = t + q * NW;
        lnv[q] = c < C ? __ldg(a.ln + c) : 0.0f;
    }
    LC_PDL_WAIT();
    if (a.bump && t == 0) *a.bump += 1; // every attention kernel before has read it
    if (a.part) d_sum_u(u, a.part, NULL, NULL, a.chunks, a.r, stage, NSTG);
    size_t row = a.emb ? (size_t)*a.tok * (size_t)C : 0;
    float ss = 0.0f;
#pragma unroll
    for (int q = 0; q < XR; q++) {
        int c = t + q * NW;
        float v = 0.0f;
        if (c < C) {
            v = d_norm_in<RB>(a, u[0], row, c);
            ss += v * v;
        }
        xv[q] = v;
    }
    for (int c = t + XR * NW; c < C; c += NW) {
        float v = d_norm_in<RB>(a, u[0], row, c);
        ss += v * v;
    }
    ss = d_block_sum(ss, sh);
    float r = (float)(1.0 / sqrt((double)ss / (double)C + (double)a.eps));
#pragma unroll
    for (int q = 0; q < XR; q++) {
        int c = t + q * NW;
        if (c < C) a.xn[c] = lnv[q] * (xv[q] * r);
    }
    for (int c = t + XR * NW; c < C; c += NW) a.xn[c] = a.ln[c] * (a.x[c] * r);
}

/* The new row's q, k, v (product outputs) with the adapters' s·u B added and RoPE at the
 * device position; attention reads them and stores k and v in the cache's row pos. */
struct dpost {
    const float *q, *k, *v;
    float *kc, *vc;
    const float *cos, *sin;
    const int *pos;
    int H, KV, D;
    const float *part[3], *b[3];
    int chunks, r;
    float scale;
    int ns;          // blocks a head, each over its share of the keys (1: one block, no merge)
    float *sp;       // ns > 1: each block's (D + 2) partial floats, (H, ns, D + 2)
    unsigned *cnt;   // ns > 1: (H) arrivals, zero before the kernel (the last block resets)
};

static_assert(AW == 32, "k_dattn merges one warp's partial a lane");

/* One query row a head (grid H · ns): first the head's q and its kv head's new k, v
 * (adapters, RoPE) into shared memory, the first head of each kv group storing k, v in the
 * cache at pos; then warp w takes keys w, w+AW, ... of the block's keys (all of 0..pos when
 * ns is 1, else its ns-th share; the new one from shared memory) with its own online
 * softmax — each cached key's rows loaded while the one before is multiplied, the first
 * before the wait — and the warps merge them, output columns spread over the warps (cuda's
 * decoding attention). With ns > 1 (long caches) each block writes its unnormalised partial
 * and its max and sum, and the last of a head's blocks to arrive merges them in block order.
 * DP: head_dim / 32 rounded up (4 or DPL). */
template <int RB, int DP, bool SPL>
__global__ void __launch_bounds__(AW * 32) k_dattn(float *out, dpost a, float scale, dl2 pf) {
    LC_PDL_TRIGGER();
    if ((int)blockIdx.x >= pf.first) {
        d_l2pf(pf, (int)blockIdx.x - pf.first);
        return;
    }
    __shared__ float u[3][RMAX], qs[MAXD], ks[MAXD], vs[MAXD];
    __shared__ float sm_m[AW], sm_l[AW], sm_acc[MAXD][AW + 1]; // acc (d, warp), padded
    int H = a.H, KV = a.KV, D = a.D, h2 = D / 2, HD = H * D, KVD = KV * D;
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31, t = threadIdx.x;
    int ns = SPL ? a.ns : 1, h = SPL ? (int)blockIdx.x / ns : (int)blockIdx.x, sp = SPL ? (int)blockIdx.x % ns : 0;
    int g = h / (H / KV);
    int p = *a.pos; // the position: written before the graph (or by the step before)
    int per = SPL ? (p + ns) / ns : p + 1, s0 = sp * per, s1 = min(p + 1, s0 + per); // this block's keys
    bool mine = s0 <= p && p < s1;                                     // holds the new key
    // before the wait, what no earlier kernel writes: the rotation and B's columns
    int isq = t < h2, i = isq ? t : t - h2, which = isq ? 0 : 1, out_n = isq ? HD : KVD;
    int j1 = (isq ? h : g) * D + i, j2 = j1 + h2, jv = g * D + (t - 2 * h2);
    bool rot = t < 2 * h2, val = !rot && t < 2 * h2 + D;
    float c = 0.0f, sn = 0.0f, b1[RB], b2[RB];
    const float *bb = rot ? a.b[which] : a.b[2];
    bool ad = (rot && a.part[which]) || (val && a.part[2]);
    if (rot) c = __ldg(a.cos + (size_t)p * h2 + i), sn = __ldg(a.sin + (size_t)p * h2 + i);
#pragma unroll
    for (int k = 0; k < RB; k++) b1[k] = b2[k] = 0.0f;
    if (ad) {
        d_bcol<RB>(b1, bb, a.r, rot ? out_n : KVD, rot ? j1 : jv);
        if (rot) d_bcol<RB>(b2, bb, a.r, out_n, j2);
    }
    // a cached key's k and v rows (DP values a lane), the next one's in flight while the
    // current one is multiplied; the warp's first (written by earlier steps) before the wait
    float kn[DP], vn[DP];
    auto rows = [&](int s) {
        const float *kr = a.kc + ((size_t)s * KV + g) * D, *vr = a.vc + ((size_t)s * KV + g) * D;
#pragma unroll
        for (int i = 0; i < DP; i++) {
            int d = lane + 32 * i;
            kn[i] = d < D ? kr[d] : 0.0f, vn[i] = d < D ? vr[d] : 0.0f;
        }
    };
    if (s0 + w < min(s1, p)) rows(s0 + w);
    LC_PDL_WAIT();
    float x1 = 0.0f, x2 = 0.0f;
    if (rot) {
        const float *src = isq ? a.q : a.k;
        x1 = src[j1], x2 = src[j2];
    } else if (val) x1 = a.v[jv];
    if (a.part[0] || a.part[1] || a.part[2])
        d_sum_u(u, a.part[0], a.part[1], a.part[2], a.chunks, a.r, &sm_acc[0][0], AW * MAXD);
    if (rot) { // a rotated pair of q (t < h2) or of k
        if (a.part[which]) {
            x1 = x1 + a.scale * d_ubv<RB>(u[which], b1, a.r);
            x2 = x2 + a.scale * d_ubv<RB>(u[which], b2, a.r);
        }
        float *dst = isq ? qs : ks;
        dst[i] = x1 * c - x2 * sn;
        dst[i + h2] = x2 * c + x1 * sn;
    } else if (val) {
        if (a.part[2]) x1 = x1 + a.scale * d_ubv<RB>(u[2], b1, a.r);
        vs[t - 2 * h2] = x1;
    }
    __syncthreads();
    if (mine && h % (H / KV) == 0 && t < D) {
        size_t off = (size_t)p * KVD + (size_t)g * D + t;
        a.kc[off] = ks[t], a.vc[off] = vs[t];
    }
    float qv[DP], acc[DP], m = -INFINITY, l = 0.0f;
#pragma unroll
    for (int i = 0; i < DP; i++) {
        int d = lane + 32 * i;
        qv[i] = d < D ? qs[d] : 0.0f;
        acc[i] = 0.0f;
    }
    for (int s = s0 + w; s < s1; s += AW) {
        float dot = 0.0f, kv[DP], vv[DP];
#pragma unroll
        for (int i = 0; i < DP; i++) {
            int d = lane + 32 * i;
            kv[i] = s == p ? (d < D ? ks[d] : 0.0f) : kn[i];
            vv[i] = s == p ? (d < D ? vs[d] : 0.0f) : vn[i];
        }
        if (s + AW < min(s1, p)) rows(s + AW);
#pragma unroll
        for (int i = 0; i < DP; i++)
            if (lane + 32 * i < D) dot += qv[i] * kv[i];
        float sc = d_warp_sum(dot) * scale;
        float mn = fmaxf(m, sc), corr = expf(m - mn), pr = expf(sc - mn);
        l = l * corr + pr;
#pragma unroll
        for (int i = 0; i < DP; i++) {
            int d = lane + 32 * i;
            if (d < D) acc[i] = acc[i] * corr + pr * vv[i];
        }
        m = mn;
    }
    if (lane == 0) sm_m[w] = m, sm_l[w] = l;
#pragma unroll
    for (int i = 0; i < DP; i++) {
        int d = lane + 32 * i;
        if (d < D) sm_acc[d][w] = acc[i];
    }
    __syncthreads();
    // the merge, spread over the warps: lane j holds warp j's partial (AW == 32), every warp
    // forms the weights, warp w the outputs d = w, w + AW, ... each as one warp sum
    float mj = sm_m[lane], M = mj;
    for (int k = 16; k > 0; k >>= 1) M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, k));
    float fj = mj == -INFINITY ? 0.0f : expf(mj - M), L = d_warp_sum(sm_l[lane] * fj), inv = 1.0f / L;
    float *o = out + (size_t)h * D;
    if constexpr (!SPL) {
        for (int d = w; d < D; d += AW) {
            float tt = d_warp_sum(sm_acc[d][lane] * fj);
            if (lane == 0) o[d] = tt * inv;
        }
        return;
    }
    float *mypart = a.sp + ((size_t)h * ns + sp) * (D + 2);
    for (int d = w; d < D; d += AW) {
        float tt = d_warp_sum(sm_acc[d][lane] * fj);
        if (lane == 0) mypart[d] = tt;
    }
    if (t == 0) mypart[D] = M, mypart[D + 1] = L;
    __threadfence();
    __syncthreads();
    __shared__ bool last;
    if (t == 0) last = atomicAdd(a.cnt + h, 1u) == (unsigned)(ns - 1);
    __syncthreads();
    if (!last) return;
    __threadfence(); // every block of the head has written its partial: merge them in order
    const float *hp = a.sp + (size_t)h * ns * (D + 2);
    float mb = lane < ns ? hp[(size_t)lane * (D + 2) + D] : -INFINITY, Mh = mb;
    for (int k = 16; k > 0; k >>= 1) Mh = fmaxf(Mh, __shfl_xor_sync(0xffffffffu, Mh, k));
    float fb = mb == -INFINITY ? 0.0f : expf(mb - Mh);
    float Lh = d_warp_sum(lane < ns ? hp[(size_t)lane * (D + 2) + D + 1] * fb : 0.0f), ih = 1.0f / Lh;
    for (int d = w; d < D; d += AW) {
        float tt = d_warp_sum(lane < ns ? hp[(size_t)lane * (D + 2) + d] * fb : 0.0f);
        if (lane == 0) o[d] = tt * ih;
    }
    if (t == 0) a.cnt[h] = 0;
}

/* h = silu(gate + s·u B) · (up + s·u B). */
struct dswi {
    const float *gate, *up;
    float *h;
    int I;
    const float *part[2], *b[2];
    int chunks, r;
    float scale;
};

/* One element a thread (the grid covers I exactly): B's columns loaded before the wait. */
template <int RB>
__global__ void __launch_bounds__(256) k_dswiglu(dswi a, dl2 f) {
    LC_PDL_TRIGGER();
    if ((int)blockIdx.x >= f.first) {
        d_l2pf(f, (int)blockIdx.x - f.first);
        return;
    }
    __shared__ float u[3][RMAX], stage[3 * 512];
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    bool in = i < a.I;
    float bg[RB], bu[RB];
#pragma unroll
    for (int k = 0; k < RB; k++) bg[k] = bu[k] = 0.0f;
    if (in && a.part[0]) d_bcol<RB>(bg, a.b[0], a.r, a.I, i);
    if (in && a.part[1]) d_bcol<RB>(bu, a.b[1], a.r, a.I, i);
    LC_PDL_WAIT();
    float g = in ? a.gate[i] : 0.0f, up = in ? a.up[i] : 0.0f;
    if (a.part[0] || a.part[1]) d_sum_u(u, a.part[0], a.part[1], NULL, a.chunks, a.r, stage, 3 * 512);
    if (!in) return;
    if (a.part[0]) g = g + a.scale * d_ubv<RB>(u[0], bg, a.r);
    if (a.part[1]) up = up + a.scale * d_ubv<RB>(u[1], bu, a.r);
    a.h[i] = g / (1.0f + expf(-g)) * up;
}

/* ------------------------------------------------------------ host side */

struct lc_cuda_dec {
    cudaStream_t st;
    int *dpos, *hpos;   // the position: device word, pinned host words (NPOS, a ring)
    unsigned npos;      // copies of the position queued so far (the next host word: npos % NPOS)
    int64_t dev_pos;    // what dpos will hold once the queued steps have run (-1: unknown)
    float *buf;         // scratch
    size_t cap;         // floats
    float *x[2], *xmid, *xn, *q, *kb, *vb, *att, *gate, *up, *h, *part[7];
    int ns;             // attention's blocks a head (attn_splits); with ns > 1 its partials
    float *asp;         // (H, ns, D + 2) and arrival counters (H), zeroed before each step
    unsigned *acnt;
    lc_decode_step key; // what exec replays (blocks pointer NULL)
    lc_decode_block *kblk;
    int64_t kL;
    bool have_key, failed; // a key is held; recording it failed (run it directly)
    unsigned ktune;        // tune_word() of the held key
    cudaGraphExec_t exec;
};

static bool env_off(const char *name) {
    const char *e = getenv(name);
    return e && !strcmp(e, "0");
}

static int vec_of(lc_dtype t) { return t == LC_DT_BF16 ? 8 : 4; }

static bool aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

/* Whether quantized block weights are ones the products take: NF4 in blocks of 64 along
 * rows of a multiple of 64, one 4-bit map, all nested or none (one nested map), scales
 * aligned. */
static bool quant_ok(const lc_decode_step *s) {
    const lc_cuda_wq *w0 = (const lc_cuda_wq *)s->blocks[0].q[0];
    if (!w0 || s->C % 64 || (s->H * s->D) % 64 || s->I % 64) return false;
    for (int64_t l = 0; l < s->L; l++)
        for (int k = 0; k < 7; k++) {
            const lc_cuda_wq *w = (const lc_cuda_wq *)s->blocks[l].q[k];
            if (!w || w->q.fmt != LC_QUANT_NF4 || w->q.group != 64 || w->q.nested != w0->q.nested ||
                memcmp(w->q.code, w0->q.code, sizeof w->q.code) || ((uintptr_t)w->q.absmax & 3))
                return false;
            if (w->q.nested && (!w->code2 || ((uintptr_t)w->q.absmax2 & 3) || w->q.block2 <= 0 ||
                                (w->q.block2 & (w->q.block2 - 1)) || memcmp(w->q.code2, w0->q.code2, sizeof w->q.code2)))
                return false;
        }
    return true;
}

/* Whether this step's shapes and dtypes are ones the kernels take. */
static bool usable(const lc_decode_step *s, int64_t pos) {
    bool ok_dt = (s->quant || s->wdt == LC_DT_BF16 || s->wdt == LC_DT_F32) && (s->hdt == LC_DT_BF16 || s->hdt == LC_DT_F32) &&
                 (s->edt == LC_DT_BF16 || s->edt == LC_DT_F32);
    if (s->quant && (!s->blocks || s->L <= 0 || !quant_ok(s))) return false;
    if (!ok_dt || s->L <= 0 || s->C <= 0 || s->H <= 0 || s->KV <= 0 || s->H % s->KV || s->D % 2 || s->D > MAXD ||
        s->r < 0 || s->r > RMAX || pos < 0 || pos >= s->S || !s->blocks || !s->tok || !s->logits)
        return false;
    int64_t vw = s->quant ? 32 : vec_of(s->wdt), HD = s->H * s->D;
    if (s->C % vw || HD % vw || s->I % vw || s->C % vec_of(s->hdt) || !aligned16(s->lm_head)) return false;
    if (s->V * s->C > INT32_MAX || s->I > INT32_MAX / 4 || s->V > INT32_MAX / 4) return false;
    for (int64_t l = 0; l < s->L; l++) {
        const lc_decode_block *b = &s->blocks[l];
        for (int k = 0; k < 7; k++) {
            if (!b->w[k] || !aligned16(b->w[k])) return false;
            if (b->la[k] && (!b->lb[k] || s->r <= 0)) return false;
        }
    }
    return true;
}

static size_t chunks_of(int64_t in) { return (size_t)((in + CH - 1) / CH); }

/* Lays out the scratch for s (pointers set when base is given); returns its floats. */
/* Blocks a head's decoding attention is split over (dpost.ns): LORAC_CUDA_DECODE_ASPLIT
 * (1..16), else one per ASPLIT_KEYS positions of the cache's capacity, at most ASPLIT_MAX
 * (a graph is recorded for a cache, so the split follows its capacity, not the position). */
typedef void (*attn_fn)(float *, dpost, float, dl2);
/* The attention kernel for head_dim D, rank bound 16 or RMAX, split over blocks or not. */
static attn_fn attn_kernel(int D, bool r16, bool split) {
    if (split)
        return D <= 128 ? (r16 ? k_dattn<16, 4, true> : k_dattn<RMAX, 4, true>)
                        : (r16 ? k_dattn<16, DPL, true> : k_dattn<RMAX, DPL, true>);
    return D <= 128 ? (r16 ? k_dattn<16, 4, false> : k_dattn<RMAX, 4, false>)
                    : (r16 ? k_dattn<16, DPL, false> : k_dattn<RMAX, DPL, false>);
}

static int attn_splits(const lc_decode_step *s) {
    const char *e = getenv("LORAC_CUDA_DECODE_ASPLIT");
    int n = e ? atoi(e) : 0;
    if (n >= 1 && n <= 16) return n;
    n = (int)(s->S / ASPLIT_KEYS);
    return n < 1 ? 1 : n > ASPLIT_MAX ? ASPLIT_MAX : n;
}

static size_t layout(lc_cuda_dec *d, float *base, const lc_decode_step *s) {
    size_t off = 0, r = (size_t)(s->r > 0 ? s->r : 1), HD = (size_t)(s->H * s->D), KVD = (size_t)(s->KV * s->D);
    size_t C = (size_t)s->C, I = (size_t)s->I;
    auto take = [&](size_t n) {
        float *p = base ? base + off : NULL;
        off += (n + 63) & ~(size_t)63;
        return p;
    };
    float *x0 = take(C), *x1 = take(C), *xmid = take(C), *xn = take(C), *q = take(HD), *kb = take(KVD);
    float *vb = take(KVD), *att = take(HD), *gate = take(I), *up = take(I), *h = take(I);
    int64_t in[7] = {s->C, s->C, s->C, s->H * s->D, s->C, s->C, s->I};
    float *part[7];
    for (int k = 0; k < 7; k++) part[k] = take(chunks_of(in[k]) * r);
    int ns = attn_splits(s);
    float *asp = ns > 1 ? take((size_t)(s->H * ns) * (size_t)(s->D + 2)) : NULL;
    float *acnt = ns > 1 ? take((size_t)s->H) : NULL;
    if (base) {
        d->ns = ns, d->asp = asp, d->acnt = (unsigned *)acnt;
        d->x[0] = x0, d->x[1] = x1, d->xmid = xmid, d->xn = xn, d->q = q, d->kb = kb, d->vb = vb;
        d->att = att, d->gate = gate, d->up = up, d->h = h;
        for (int k = 0; k < 7; k++) d->part[k] = part[k];
    }
    return off;
}

static void drop_graph(lc_cuda_dec *d) {
    if (d->exec) cudaGraphExecDestroy(d->exec);
    d->exec = NULL;
    d->have_key = false, d->failed = false;
}

void lc_cuda_decode_free(lc_cuda *c) {
    lc_cuda_dec *d = c->dec;
    if (!d) return;
    drop_graph(d);
    if (d->buf) cudaFree(d->buf);
    if (d->dpos) cudaFree(d->dpos);
    if (d->hpos) cudaFreeHost(d->hpos);
    if (d->st) cudaStreamDestroy(d->st);
    free(d->kblk);
    free(d);
    c->dec = NULL;
}

cudaStream_t lc_cuda_decode_stream(lc_cuda *c) { return c->dec && c->st == 0 ? c->dec->st : c->st; }

/* The decoding state, made on first use; NULL (error recorded) when the card refuses. */
static lc_cuda_dec *dec_of(lc_cuda *c) {
    if (c->dec) return c->dec;
    lc_cuda_dec *d = (lc_cuda_dec *)xcalloc(1, sizeof *d);
    c->dec = d;
    LC_CK(c, cudaStreamCreate(&d->st)); // blocking: ordered with the legacy stream
    d->dev_pos = -1;
    LC_CK(c, cudaMalloc(&d->dpos, sizeof(int)));
    LC_CK(c, cudaMallocHost(&d->hpos, NPOS * sizeof(int)));
    if (c->err[0]) {
        lc_cuda_decode_free(c);
        return NULL;
    }
    return d;
}

/* The switches a recording bakes in (LORAC_CUDA_DECODE_SPLIT, LORAC_CUDA_DECODE_PF,
 * LORAC_CUDA_DECODE_U, LORAC_CUDA_DECODE_L2PF, LORAC_CUDA_DECODE_ASPLIT, and
 * LORAC_CUDA_DECODE_SKIP in measuring builds),
 * hashed into one word: changing one records a new graph. */
static unsigned tune_word(void) {
    const char *names[] = {"LORAC_CUDA_DECODE_SPLIT", "LORAC_CUDA_DECODE_SKIP", "LORAC_CUDA_DECODE_PF",
                           "LORAC_CUDA_DECODE_U", "LORAC_CUDA_DECODE_L2PF", "LORAC_CUDA_DECODE_ASPLIT"};
    unsigned h = 2166136261u;
    for (int i = 0; i < 6; i++) {
        const char *e = getenv(names[i]);
        for (const char *p = e ? e : "-"; *p; p++) h = (h ^ (unsigned char)*p) * 16777619u;
        h = (h ^ 0xffu) * 16777619u;
    }
    return h;
}

static bool same_key(const lc_cuda_dec *d, const lc_decode_step *s) {
    if (!d->have_key || d->kL != s->L || d->ktune != tune_word()) return false;
    lc_decode_step t;
    memcpy(&t, s, sizeof t);
    t.blocks = NULL;
    return !memcmp(&t, &d->key, sizeof t) && !memcmp(d->kblk, s->blocks, (size_t)s->L * sizeof *s->blocks);
}

static void keep_key(lc_cuda_dec *d, const lc_decode_step *s) {
    memcpy(&d->key, s, sizeof d->key);
    d->key.blocks = NULL;
    d->kblk = (lc_decode_block *)xrealloc(d->kblk, (size_t)s->L * sizeof *d->kblk);
    memcpy(d->kblk, s->blocks, (size_t)s->L * sizeof *s->blocks);
    d->kL = s->L;
    d->ktune = tune_word();
    d->have_key = true, d->failed = false;
}

/* Launches kernel k on st, with programmatic dependent launch when pdl (every kernel here
 * waits, LC_PDL_WAIT, before it reads what an earlier one wrote). */
template <typename... Ex, typename... Act>
static cudaError_t go(cudaStream_t st, bool pdl, void (*k)(Ex...), dim3 grid, dim3 block, Act... args) {
    cudaLaunchConfig_t cfg = {};
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.gridDim = grid, cfg.blockDim = block, cfg.dynamicSmemBytes = 0, cfg.stream = st;
    cfg.attrs = at, cfg.numAttrs = pdl ? 1 : 0;
    return cudaLaunchKernelEx(&cfg, k, args...);
}

template <typename T, int KS, int U = GU>
static cudaError_t gemv_go(cudaStream_t st, bool pdl, const dgemv &g) {
    int rows = 0;
    for (int i = 0; i < g.nseg; i++) rows += g.seg[i].rows;
    dim3 grid((unsigned)(g.njob * g.chunks + (rows + GW / KS - 1) / (GW / KS)));
    return go(st, pdl, k_dgemv<T, KS, U>, grid, dim3(GW * 32), g);
}

/* Warps a weight row of `bytes` is split over: LORAC_CUDA_DECODE_SPLIT (1, 2 or 4), else
 * 4 for rows of 24 KB or more, 2 for 6 KB or more, else 1 (measured on the 7B shapes:
 * bench/results/cuda_notes.md). */
static int split_of(size_t bytes) {
    const char *e = getenv("LORAC_CUDA_DECODE_SPLIT");
    int ks = e ? atoi(e) : 0;
    if (ks == 1 || ks == 2 || ks == 4) return ks;
    return bytes >= 24 * 1024 ? 4 : bytes >= 6 * 1024 ? 2 : 1;
}

/* LORAC_CUDA_DECODE_U=8: the products keep 8 loads in flight a lane (GU otherwise). */
static bool u8(void) {
    const char *e = getenv("LORAC_CUDA_DECODE_U");
    return e && atoi(e) == 8;
}

static cudaError_t gemv(cudaStream_t st, bool pdl, lc_dtype dt, dgemv &g) {
    if (g.nseg < 3) memset(&g.seg[g.nseg], 0, sizeof(dseg) * (size_t)(3 - g.nseg));
    int ks = split_of((size_t)g.I * (dt == LC_DT_BF16 ? 2 : 4));
    if (u8()) { // the loads in flight before the ninth round
        if (dt == LC_DT_BF16)
            return ks == 4   ? gemv_go<__nv_bfloat16, 4, 8>(st, pdl, g)
                   : ks == 2 ? gemv_go<__nv_bfloat16, 2, 8>(st, pdl, g)
                             : gemv_go<__nv_bfloat16, 1, 8>(st, pdl, g);
        return ks == 4 ? gemv_go<float, 4, 8>(st, pdl, g) : ks == 2 ? gemv_go<float, 2, 8>(st, pdl, g)
                                                                   : gemv_go<float, 1, 8>(st, pdl, g);
    }
    if (dt == LC_DT_BF16)
        return ks == 4 ? gemv_go<__nv_bfloat16, 4>(st, pdl, g) : ks == 2 ? gemv_go<__nv_bfloat16, 2>(st, pdl, g)
                                                                         : gemv_go<__nv_bfloat16, 1>(st, pdl, g);
    return ks == 4 ? gemv_go<float, 4>(st, pdl, g) : ks == 2 ? gemv_go<float, 2>(st, pdl, g) : gemv_go<float, 1>(st, pdl, g);
}

/* A product launch g over block weights of s: plain ones of dtype s->wdt, or NF4 with the
 * segments' scales and the maps filled from their handles q[0..nseg). */
static cudaError_t gemv_w(cudaStream_t st, bool pdl, const lc_decode_step *s, dgemv &g, const void *const *q) {
    if (!s->quant) return gemv(st, pdl, s->wdt, g);
    if (g.nseg < 3) memset(&g.seg[g.nseg], 0, sizeof(dseg) * (size_t)(3 - g.nseg));
    for (int i = 0; i < g.nseg; i++) {
        const lc_cuda_wq *w = (const lc_cuda_wq *)q[i];
        dseg &sg = g.seg[i];
        sg.am = w->q.absmax, sg.am2 = (const float *)w->q.absmax2, sg.off = w->q.offset;
        sg.nested = w->q.nested ? 1 : 0, sg.b2sh = 0;
        while (sg.nested && (1LL << sg.b2sh) < w->q.block2) sg.b2sh++;
    }
    const lc_cuda_wq *w0 = (const lc_cuda_wq *)q[0];
    memcpy(g.code, w0->q.code, sizeof g.code);
    g.code2 = w0->q.nested ? w0->code2 : NULL;
    int ks = split_of((size_t)g.I / 2);
    if (u8())
        return ks == 4 ? gemv_go<dnf4, 4, 8>(st, pdl, g) : ks == 2 ? gemv_go<dnf4, 2, 8>(st, pdl, g)
                                                          : gemv_go<dnf4, 1, 8>(st, pdl, g);
    return ks == 4 ? gemv_go<dnf4, 4>(st, pdl, g) : ks == 2 ? gemv_go<dnf4, 2>(st, pdl, g) : gemv_go<dnf4, 1>(st, pdl, g);
}

/* A product segment: out = x W^T (+ bias) (+ res) over `rows` rows ld apart (0: the
 * product's width; NF4 fields zero). */
static dseg seg_of(const void *W, const float *bias, const float *res, float *out, int64_t rows, int64_t ld = 0) {
    dseg sg;
    memset(&sg, 0, sizeof sg);
    sg.W = W, sg.bias = bias, sg.res = res, sg.out = out, sg.rows = (int)rows, sg.ld = (int)ld;
    return sg;
}

/* Adds adapter k of block b (B of r·out floats) to a product's jobs when it has one; its
 * adapter blocks also prefetch B into L2 for the next kernel unless LORAC_CUDA_DECODE_PF=0. */
static void add_job(dgemv &g, const lc_decode_block *b, int k, float *part, int r, int64_t out) {
    if (!b->la[k]) return;
    if (!env_off("LORAC_CUDA_DECODE_PF")) g.pf[g.njob] = b->lb[k], g.pfn[g.njob] = (int)(r * out);
    g.job[g.njob].A = b->la[k], g.job[g.njob].part = part;
    g.njob++;
}

#define GO(call)                                  \
    do {                                          \
        cudaError_t e_ = (call);                  \
        if (e_ != cudaSuccess) return e_;         \
    } while (0)

#ifdef LC_DECODE_MEASURE
/* Measuring builds only (nvcc -DLC_DECODE_MEASURE; bench/results/cuda_notes.md, "Decode graph,
 * round 2"): LORAC_CUDA_DECODE_SKIP, a mask of the kernels left out of every block (1 norm,
 * 2 q/k/v, 4 attention, 8 o, 16 second norm, 32 gate/up, 64 swiglu, 128 down; 256 the
 * final norm and lm_head). The step's time without a kernel, against the whole step, is
 * what that kernel costs inside the graph. The logits are wrong. */
static int skip_mask(void) {
    const char *e = getenv("LORAC_CUDA_DECODE_SKIP");
    return e ? atoi(e) : 0;
}
#define SKIP(bit) (skip & (bit))
#else
#define SKIP(bit) 0
#endif

/* How much of the next product the small kernels prefetch into L2: LORAC_CUDA_DECODE_L2PF
 * (MB, 0 off; default L2PF_MB, measured best of 2-32 on an H100), over L2PF_BLOCKS extra
 * blocks. */
#define L2PF_MB 4
#define L2PF_BLOCKS 32
struct l2cfg {
    size_t bytes;
    int nb;
};
static l2cfg l2_cfg(void) {
    const char *e = getenv("LORAC_CUDA_DECODE_L2PF");
    double mb = e ? atof(e) : L2PF_MB;
    l2cfg c = {mb > 0 && mb < 1024 ? (size_t)(mb * 1048576.0) : 0, L2PF_BLOCKS};
    if (!c.bytes) c.nb = 0;
    return c;
}

/* The first c.bytes of regions (p[i], n[i] bytes) for a small kernel whose own blocks are
 * [0, first). */
static dl2 l2_of(const l2cfg &c, int first, const void *p0, size_t n0, const void *p1 = NULL, size_t n1 = 0,
                 const void *p2 = NULL, size_t n2 = 0) {
    dl2 f = {};
    f.first = first, f.nb = c.nb;
    const void *p[3] = {p0, p1, p2};
    size_t n[3] = {n0, n1, n2}, left = c.bytes;
    for (int i = 0; i < 3 && left; i++) {
        if (!p[i]) continue;
        size_t k = n[i] < left ? n[i] : left;
        f.p[i] = (const char *)p[i], f.n[i] = k, left -= k;
    }
    return f;
}

/* Queues the whole step on d->st; returns the first launch error. */
static cudaError_t enqueue(lc_cuda_dec *d, const lc_decode_step *s, bool pdl) {
#ifdef LC_DECODE_MEASURE
    int skip = skip_mask();
#endif
    cudaStream_t st = d->st;
    int C = (int)s->C, H = (int)s->H, KV = (int)s->KV, D = (int)s->D, I = (int)s->I, r = s->r;
    int HD = H * D, KVD = KV * D, cC = (int)chunks_of(C), cHD = (int)chunks_of(HD), cI = (int)chunks_of(I);
    bool r16 = r <= 16;                       // the small kernels' unrolled rank bound
    l2cfg lc = l2_cfg();
    // bytes of a block weight of n rows over m inputs (NF4: the codes)
    auto wb = [&](int64_t n, int64_t m) {
        return (size_t)n * (size_t)m * (s->quant ? 1 : s->wdt == LC_DT_BF16 ? 2 : 4) / (s->quant ? 2 : 1);
    };
    const float *pend = NULL, *pend_b = NULL; // the previous block's down adapter
    float *x = d->x[0];
    for (int64_t l = 0; l < s->L; l++) {
        const lc_decode_block *b = &s->blocks[l];
        float *xo = d->x[(l + 1) & 1];
        dnorm n1 = {x, d->xn, b->ln1, s->eps, C, l == 0 ? s->embed : NULL, s->edt == LC_DT_BF16, s->tok,
                    pend, pend_b, cI, r, s->scale, NULL};
        dl2 f = l2_of(lc, 1, b->w[0], wb(HD, C), b->w[1], wb(KVD, C), b->w[2], wb(KVD, C));
        if (!SKIP(1)) GO(go(st, pdl, r16 ? k_dnorm<16> : k_dnorm<RMAX>, dim3(1 + f.nb), dim3(NW), n1, f));
        dgemv g = {};
        g.seg[0] = seg_of(b->w[0], b->bias[0], NULL, d->q, HD, b->ld[0]);
        g.seg[1] = seg_of(b->w[1], b->bias[1], NULL, d->kb, KVD, b->ld[1]);
        g.seg[2] = seg_of(b->w[2], b->bias[2], NULL, d->vb, KVD, b->ld[2]);
        g.nseg = 3, g.chunks = cC, g.r = r, g.x = d->xn, g.I = C;
        for (int k = 0; k < 3; k++) add_job(g, b, k, d->part[k], r, k ? KVD : HD);
        if (!SKIP(2)) GO(gemv_w(st, pdl, s, g, &b->q[0]));
        dpost p = {d->q,  d->kb, d->vb, b->kc,     b->vc, s->cos, s->sin, d->dpos, H,      KV,
                   D,     {},    {},    cC,        r,     s->scale, d->ns, d->asp, d->acnt};
        for (int k = 0; k < 3; k++)
            if (b->la[k]) p.part[k] = d->part[k], p.b[k] = b->lb[k];
        f = l2_of(lc, H * d->ns, b->w[3], wb(C, HD));
        if (!SKIP(4))
            GO(go(st, pdl, attn_kernel(D, r16, d->ns > 1), dim3((unsigned)(H * d->ns + f.nb)), dim3(AW * 32), d->att, p,
                  1.0f / sqrtf((float)D), f));
        g = dgemv{};
        g.seg[0] = seg_of(b->w[3], NULL, x, d->xmid, C, b->ld[3]);
        g.nseg = 1, g.chunks = cHD, g.r = r, g.x = d->att, g.I = HD;
        add_job(g, b, 3, d->part[3], r, C);
        if (!SKIP(8)) GO(gemv_w(st, pdl, s, g, &b->q[3]));
        dnorm n2 = {d->xmid, d->xn, b->ln2, s->eps, C, NULL, 0, NULL, b->la[3] ? d->part[3] : NULL, b->lb[3],
                    cHD, r, s->scale, NULL};
        f = l2_of(lc, 1, b->w[4], wb(I, C), b->w[5], wb(I, C));
        if (!SKIP(16)) GO(go(st, pdl, r16 ? k_dnorm<16> : k_dnorm<RMAX>, dim3(1 + f.nb), dim3(NW), n2, f));
        g = dgemv{};
        g.seg[0] = seg_of(b->w[4], NULL, NULL, d->gate, I, b->ld[4]);
        g.seg[1] = seg_of(b->w[5], NULL, NULL, d->up, I, b->ld[5]);
        g.nseg = 2, g.chunks = cC, g.r = r, g.x = d->xn, g.I = C;
        add_job(g, b, 4, d->part[4], r, I);
        add_job(g, b, 5, d->part[5], r, I);
        if (!SKIP(32)) GO(gemv_w(st, pdl, s, g, &b->q[4]));
        dswi w = {d->gate, d->up, d->h, I, {}, {}, cC, r, s->scale};
        for (int k = 0; k < 2; k++)
            if (b->la[4 + k]) w.part[k] = d->part[4 + k], w.b[k] = b->lb[4 + k];
        unsigned nb = (unsigned)((I + 255) / 256);
        f = l2_of(lc, (int)nb, b->w[6], wb(C, I));
        if (!SKIP(64)) GO(go(st, pdl, r16 ? k_dswiglu<16> : k_dswiglu<RMAX>, dim3(nb + f.nb), dim3(256), w, f));
        g = dgemv{};
        g.seg[0] = seg_of(b->w[6], NULL, d->xmid, xo, C, b->ld[6]);
        g.nseg = 1, g.chunks = cI, g.r = r, g.x = d->h, g.I = I;
        add_job(g, b, 6, d->part[6], r, C);
        if (!SKIP(128)) GO(gemv_w(st, pdl, s, g, &b->q[6]));
        pend = b->la[6] ? d->part[6] : NULL, pend_b = b->lb[6];
        x = xo;
    }
    dnorm nf = {x, d->xn, s->norm_f, s->eps, C, NULL, 0, NULL, pend, pend_b, cI, r, s->scale, d->dpos};
    dl2 f = l2_of(lc, 1, s->lm_head, (size_t)(s->V * s->C) * (s->hdt == LC_DT_BF16 ? 2 : 4));
    if (!SKIP(256)) GO(go(st, pdl, r16 ? k_dnorm<16> : k_dnorm<RMAX>, dim3(1 + f.nb), dim3(NW), nf, f));
    dgemv g = {};
    g.seg[0] = seg_of(s->lm_head, NULL, NULL, s->logits, (int)s->V);
    g.nseg = 1, g.chunks = 1, g.r = r, g.x = d->xn, g.I = C;
    if (!SKIP(256)) GO(gemv(st, pdl, s->hdt, g));
    return cudaSuccess;
}

/* Records the step as a graph (d->exec); returns whether it worked (errors cleared). */
static bool record(lc_cuda_dec *d, const lc_decode_step *s, bool pdl) {
    cudaGraph_t g = NULL;
    if (cudaStreamBeginCapture(d->st, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
        cudaGetLastError();
        return false;
    }
    cudaError_t e = enqueue(d, s, pdl);
    cudaError_t e2 = cudaStreamEndCapture(d->st, &g);
    if (e == cudaSuccess && e2 == cudaSuccess && g &&
        cudaGraphInstantiate(&d->exec, g, 0) == cudaSuccess) {
        cudaGraphDestroy(g);
        return true;
    }
    if (g) cudaGraphDestroy(g);
    d->exec = NULL;
    cudaGetLastError();
    return false;
}

int lc_cuda_decode(lc_backend *be, const lc_decode_step *s, int64_t pos) {
    lc_cuda *c = (lc_cuda *)be->impl;
    if (env_off("LORAC_CUDA_DECODE") || c->prof || !usable(s, pos)) return 1;
    lc_cuda_dec *d = dec_of(c);
    if (!d) return 1;
    size_t need = layout(d, NULL, s);
    if (need > d->cap) { // new scratch: every recorded pointer is stale
        drop_graph(d);
        if (d->buf) LC_CK(c, cudaFree(d->buf));
        d->buf = NULL, d->cap = 0;
        if (cudaMalloc(&d->buf, need * sizeof(float)) != cudaSuccess) {
            cudaGetLastError();
            d->buf = NULL;
            return 1; // the single ops need no scratch of this size
        }
        d->cap = need;
    }
    layout(d, d->buf, s);
    // each step's final norm advances the device position, so consecutive tokens need no
    // copy; otherwise the copy reads its host word when it runs: a ring of them lets the
    // host queue up to NPOS steps ahead of the card (lc_model_greedy queues one)
    bool copy = d->dev_pos != pos;
#ifdef LC_DECODE_MEASURE
    copy = true; // a skipped final norm would not advance it
#endif
    if (copy) {
        int *hp = d->hpos + d->npos++ % NPOS;
        *hp = (int)pos;
        LC_CK(c, cudaMemcpyAsync(d->dpos, hp, sizeof(int), cudaMemcpyHostToDevice, d->st));
    }
    d->dev_pos = pos + 1;
    if (d->ns > 1) LC_CK(c, cudaMemsetAsync(d->acnt, 0, (size_t)s->H * sizeof(unsigned), d->st));
    if (!env_off("LORAC_CUDA_GRAPH")) {
        bool same = same_key(d, s);
        if (same && d->exec) {
            LC_CK(c, cudaGraphLaunch(d->exec, d->st));
            be->decode_replays++;
            return 0;
        }
        if (!same) {
            drop_graph(d);
            keep_key(d, s);
            if (record(d, s, c->pdl) || (c->pdl && record(d, s, false))) {
                LC_CK(c, cudaGraphLaunch(d->exec, d->st));
                be->decode_captures++;
                return 0;
            }
            d->failed = true; // this descriptor runs directly until it changes
        }
    }
    cudaError_t e = enqueue(d, s, c->pdl);
    if (e != cudaSuccess) lc_cuda_error(c, __FILE__, __LINE__, "the decoding step's launches", cudaGetErrorString(e));
    return 0;
}
