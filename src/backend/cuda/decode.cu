/*
 * decode.cu — the one-token decoding step on the card (->decode): the whole step of a
 * batch-1 sequence (embedding, every block, final norm, lm_head) in 8 kernels a block
 * instead of ~36 single ops, recorded once as a CUDA graph and replayed for every token.
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
 * profiler (LORAC_CUDA_PROFILE=1) declines so its per-op table stays whole.
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

#include "backend/cuda/cuda.h"

extern "C" {
#include "core/mem.h"
}

#define RMAX 32  // largest adapter rank
#define CH 256   // input rows of an adapter's A per partial-sum block
#define GW 4     // warps (output rows) of a product block; also 128 partial-sum threads
#define GU 8     // 16-byte weight loads in flight per lane
#define NT 256   // threads (columns) of a norm block
#define NBMAX 64 // norm blocks at most (C <= NT * NBMAX)
#define NCNT 6   // arrival counters a block: o adapter, o squares, gate/up adapters, down adapter,
                 // down squares, q/k/v adapters
#define AW 32    // warps of the attention kernel
#define MAXD 256 // largest head_dim
#define DPL (MAXD / 32)

/* ------------------------------------------------------------ kernels */

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

/* The RMS scale of a split norm, 1 / sqrt(sum of its blocks' sums of squares / C + eps),
 * in two halves so a warp can load early and finish late: every lane of the warp calls
 * both and gets the same bits (an xor-butterfly sum), whichever kernel reads it. */
struct dscale {
    const float *ssp; // (nb <= 64) sums of squares, or NULL: no scale
    int nb, C;
    float eps;
};

__device__ __forceinline__ float d_ss_load(const dscale &s, int lane) {
    float t = lane < s.nb ? s.ssp[lane] : 0.0f;
    return lane + 32 < s.nb ? t + s.ssp[lane + 32] : t;
}

__device__ __forceinline__ float d_rs_fin(float part, const dscale &s) {
    return (float)(1.0 / sqrt((double)d_warp_sum(part) / (double)s.C + (double)s.eps));
}

/* A product launch: up to 3 row segments over one input x (I), and up to 3 adapters'
 * partial sums over the same x; with sc.ssp, x is a split norm's unscaled ln·x and every
 * output row is multiplied by its scale. */
struct dseg {
    const void *W;           // (rows, I)
    const float *bias, *res; // (rows) or NULL: out = x W^T + bias + s·u B + res
    float *out;
    int rows;
    const float *B; // the segment's adapter B (r, rows), its u from job `job` of this launch, or NULL
    int job;
};
struct djob {
    const float *A; // (I, r)
    float *part;    // (chunks, r)
};
/* What the rows of o and down do after the dot besides out: write xl = ln·out for the
 * next products; add the squares of the block's outputs to ssb and, in the block that
 * arrives last at scnt, sum ssb in block order into ssf (the next products' RMS scale: no
 * norm kernel between the products). */
struct dep {
    const float *ln; // (rows) or NULL: no xl, no sums of squares
    float *xl, *ssb, *ssf;
    unsigned *scnt;
};
struct dgemv {
    dseg seg[3];
    int nseg;
    djob job[3];
    int njob, chunks, r;
    const float *x;
    int I;
    dscale sc;
    unsigned *jcnt; // the adapter blocks count themselves here when set (segments with B)
    float scale;    // the adapters' s
    dep ep;
};

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
        __threadfence();
    }
    if (!g.jcnt) return;
    // counted: the last adapter block to arrive sums every job's partials (in chunk order
    // within each of G groups, then the groups in order) into u at part + chunks·r, and
    // counts once more (njob·chunks + 1: u ready)
    __shared__ bool last;
    __shared__ float red[GW * 32];
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(g.jcnt, 1u) == (unsigned)(g.njob * g.chunks) - 1;
    __syncthreads();
    if (!last) return;
    __threadfence();
    int G = (GW * 32) / r, t = threadIdx.x;
    for (int jj = 0; jj < g.njob; jj++) {
        const float *part = jj == 0 ? g.job[0].part : jj == 1 ? g.job[1].part : g.job[2].part;
        if (t < G * r) {
            int k = t % r, gi = t / r;
            float s = 0.0f;
            for (int c = gi; c < g.chunks; c += G) s += __ldcg(part + (size_t)c * r + k);
            red[t] = s;
        }
        __syncthreads();
        if (t < r) {
            float s = 0.0f;
            for (int q = 0; q < G; q++) s += red[q * r + t];
            ((float *)part)[(size_t)g.chunks * r + t] = s;
        }
        __syncthreads();
    }
    if (t < r) __threadfence();
    __syncthreads();
    if (t == 0) atomicAdd(g.jcnt, 1u);
}

/* Waits (lane 0 spinning, the warp after it) until *cnt reaches target: the adapter blocks
 * of this launch, which come first in the grid and wait on nothing, have written. */
__device__ __forceinline__ void d_await(unsigned *cnt, unsigned target) {
    if ((threadIdx.x & 31) == 0) {
        while (atomicAdd(cnt, 0u) < target) __nanosleep(64);
        __threadfence();
    }
    __syncwarp();
}

/* (u B)[o] by a warp, u[k] = mul · u0[k] (the summed u, read past L1, lane k). */
__device__ __forceinline__ float d_ub_warp(const float *u0, int r, float mul, const float *b, int out, int o) {
    int lane = threadIdx.x & 31;
    float t = 0.0f;
    if (lane < r) t = (mul * __ldcg(u0 + lane)) * b[(size_t)lane * out + o];
    return d_warp_sum(t);
}

/* A warp's stream over n 16-byte vectors of a weight row: d_first issues the first GU
 * loads a lane (before the wait on the previous kernel), d_dot the rest and returns the
 * lane's part of the dot with x (VEC floats a vector). */
__device__ __forceinline__ void d_first(uint4 (&cur)[GU], const uint4 *w, int n, int lane) {
#pragma unroll
    for (int u = 0; u < GU; u++) {
        int v = u * 32 + lane;
        cur[u] = v < n ? __ldcs(w + v) : make_uint4(0, 0, 0, 0);
    }
}

template <typename T>
__device__ __forceinline__ float d_dot(uint4 (&cur)[GU], const uint4 *w, int n, const float *x, int lane) {
    constexpr int VEC = 16 / sizeof(T);
    uint4 nxt[GU];
    float acc = 0.0f;
    for (int v0 = 0; v0 < n; v0 += 32 * GU) {
        int vn = v0 + 32 * GU;
#pragma unroll
        for (int u = 0; u < GU; u++) {
            int v = vn + u * 32 + lane;
            nxt[u] = v < n ? __ldcs(w + v) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int u = 0; u < GU; u++) {
            int v = v0 + u * 32 + lane;
            if (v >= n) break;
            float wf[VEC];
            d_vec(cur[u], wf, T());
            const float4 *xp = (const float4 *)(x + (size_t)v * VEC);
#pragma unroll
            for (int e = 0; e < VEC / 4; e++) {
                float4 a = __ldg(xp + e);
                acc += wf[4 * e] * a.x + wf[4 * e + 1] * a.y + wf[4 * e + 2] * a.z + wf[4 * e + 3] * a.w;
            }
        }
#pragma unroll
        for (int u = 0; u < GU; u++) cur[u] = nxt[u];
    }
    return acc;
}

/* The product: blocks [0, njob·chunks) write adapters' partial sums, the rest GW / KS
 * output rows each, KS warps a row splitting its length (short per-warp work shortens
 * the product's tail). Each warp streams its part of the weight row once in 16-byte
 * loads, GU in flight a lane; the first loads go out before waiting on the previous
 * kernel, as in cuda.cu's GEMV. The KS parts are added in order (no atomics). */
template <typename T, int KS>
__global__ void __launch_bounds__(GW * 32) k_dgemv(dgemv g) {
    LC_PDL_TRIGGER();
    constexpr int VEC = 16 / sizeof(T);
    __shared__ float part_sum[GW];
    int jb = g.njob * g.chunks;
    if ((int)blockIdx.x < jb) {
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
    const uint4 *w = (const uint4 *)((const T *)s.W + (size_t)(live ? o : 0) * g.I) + vb;
    int n = live ? ve - vb : 0;
    uint4 cur[GU];
    d_first(cur, w, n, lane);
    LC_PDL_WAIT();
    float ssl = g.sc.ssp ? d_ss_load(g.sc, lane) : 0.0f;
    float acc = d_warp_sum(d_dot<T>(cur, w, n, g.x + (size_t)vb * VEC, lane));
    float rs = g.sc.ssp ? d_rs_fin(ssl, g.sc) : 1.0f, sq = 0.0f;
    if (KS > 1) {
        if (lane == 0) part_sum[wi] = acc;
        __syncthreads();
        acc = 0.0f;
#pragma unroll
        for (int q = 0; q < KS; q++) acc += part_sum[wi - kp + q];
    }
    if (kp == 0 && live) {
        float ub = 0.0f;
        if (s.B) { // u = rs · the summed (ln·x) A
            d_await(g.jcnt, (unsigned)jb + 1);
            const float *u0 = (s.job == 0 ? g.job[0].part : s.job == 1 ? g.job[1].part : g.job[2].part);
            ub = d_ub_warp(u0 + (size_t)g.chunks * g.r, g.r, rs, s.B, s.rows, o);
        }
        if (lane == 0) {
            if (g.sc.ssp) acc *= rs;
            if (s.bias) acc += s.bias[o];
            if (s.B) acc = acc + g.scale * ub;
            if (s.res) acc = s.res[o] + acc;
            s.out[o] = acc;
            if (g.ep.ln) g.ep.xl[o] = g.ep.ln[o] * acc, sq = acc * acc;
        }
    }
    if (!g.ep.ln) return;
    // the block's sum of squares; the last block to arrive sums them all in block order
    __shared__ float sqs[GW];
    __shared__ bool last;
    if (lane == 0) sqs[wi] = sq;
    __syncthreads();
    int rb = (int)blockIdx.x - jb, nrb = (int)gridDim.x - jb;
    if (threadIdx.x == 0) {
        float t = 0.0f;
        for (int q = 0; q < GW; q++) t += sqs[q];
        g.ep.ssb[rb] = t;
        __threadfence();
        last = atomicAdd(g.ep.scnt, 1u) == (unsigned)nrb - 1;
    }
    __syncthreads();
    if (!last) return;
    __threadfence(); // every block's sum, 16 loads in flight a thread, added in a fixed order
    float t = 0.0f;
    for (int q0 = 0; q0 < nrb; q0 += GW * 32 * 16) {
        float v[16];
#pragma unroll
        for (int j = 0; j < 16; j++) {
            int q = q0 + j * GW * 32 + (int)threadIdx.x;
            v[j] = q < nrb ? __ldcg(g.ep.ssb + q) : 0.0f;
        }
#pragma unroll
        for (int j = 0; j < 16; j++) t += v[j];
    }
    t = d_warp_sum(t);
    if (lane == 0) sqs[wi] = t;
    __syncthreads();
    if (threadIdx.x == 0) *g.ep.ssf = sqs[0] + sqs[1] + sqs[2] + sqs[3];
}

/* gate/up and swiglu in one launch: blocks [0, jb) write the gate/up adapters' partial
 * sums of (ln·x) A (aj's jobs, counted at aj.jcnt); block jb + b takes indices 2b, 2b+1,
 * warps 0-1 their gate rows and warps 2-3 their up rows over ln·x; each warp adds its
 * adapter's s·u B (u = rs · the partials, awaited after its dot) and the block writes
 * h = silu(gate) · up. */
struct dgu {
    const void *Wg, *Wu; // (I, C)
    float *h;
    int I, C;
    dscale sc;
    const float *b[2]; // B (r, I) of the gate / up adapter, or NULL
    float scale;
    dgemv aj; // x = ln·x (C), the adapter jobs (gate's first), chunks, r, jcnt
};

template <typename T>
__global__ void __launch_bounds__(GW * 32) k_dgu(dgu a) {
    LC_PDL_TRIGGER();
    constexpr int VEC = 16 / sizeof(T);
    __shared__ float val[GW];
    int jb = a.aj.njob * a.aj.chunks;
    if ((int)blockIdx.x < jb) {
        LC_PDL_WAIT();
        d_adapter_part(a.aj, blockIdx.x);
        return;
    }
    int wi = threadIdx.x >> 5, lane = threadIdx.x & 31, which = wi >> 1;
    int i = ((int)blockIdx.x - jb) * 2 + (wi & 1);
    bool live = i < a.I;
    const uint4 *w = (const uint4 *)((const T *)(which ? a.Wu : a.Wg) + (size_t)(live ? i : 0) * a.C);
    int n = live ? a.C / VEC : 0;
    uint4 cur[GU];
    d_first(cur, w, n, lane);
    LC_PDL_WAIT();
    float ssl = d_ss_load(a.sc, lane);
    float acc = d_warp_sum(d_dot<T>(cur, w, n, a.aj.x, lane));
    float rs = d_rs_fin(ssl, a.sc), v = acc * rs;
    const float *b = a.b[which];
    if (b && live) {
        d_await(a.aj.jcnt, (unsigned)jb + 1);
        const float *part = a.aj.job[which && a.b[0] ? 1 : 0].part;
        v = v + a.scale * d_ub_warp(part + (size_t)a.aj.chunks * a.aj.r, a.aj.r, rs, b, a.I, i);
    }
    if (lane == 0) val[wi] = v;
    __syncthreads();
    if (threadIdx.x < 2) {
        int j = ((int)blockIdx.x - jb) * 2 + (int)threadIdx.x;
        if (j < a.I) {
            float g = val[threadIdx.x], up = val[2 + threadIdx.x];
            a.h[j] = g / (1.0f + expf(-g)) * up;
        }
    }
}

/* The first block's input, split over NB blocks of NT columns: x = the token's embedding
 * row, xl = ln·x (the products multiply by the RMS scale) and block b's sum of squares
 * ssp[b]. */
struct dnorm {
    float *x, *xl;
    const float *ln;
    int C;
    const void *emb; // (V, C)
    int emb_bf16;
    const int32_t *tok;
    float *ssp;
};

__global__ void __launch_bounds__(NT) k_dnorm(dnorm a) {
    LC_PDL_TRIGGER();
    LC_PDL_WAIT();
    __shared__ float sh[32];
    int c = (int)blockIdx.x * NT + (int)threadIdx.x;
    float v = 0.0f;
    if (c < a.C) {
        size_t row = (size_t)*a.tok * (size_t)a.C;
        v = a.emb_bf16 ? __bfloat162float(((const __nv_bfloat16 *)a.emb)[row + c]) : ((const float *)a.emb)[row + c];
        a.x[c] = v;
        a.xl[c] = a.ln[c] * v;
    }
    float ss = d_block_sum(v * v, sh);
    if (threadIdx.x == 0) a.ssp[blockIdx.x] = ss;
}

/* The new row's q, k, v (product outputs, adapters included) and RoPE at the device
 * position; attention reads them and stores k and v in the cache's row pos. */
struct dpost {
    const float *q, *k, *v;
    float *kc, *vc;
    const float *cos, *sin;
    const int *pos;
    int H, KV, D;
};

/* One query row a head (grid H): first the head's q and its kv head's new k, v (RoPE)
 * into shared memory, the first head of each kv group storing k, v in the cache at
 * pos; then warp w takes keys w, w+AW, ... up to pos (the new one from shared memory)
 * with its own online softmax, and warp 0 merges them (cuda's decoding attention). */
__global__ void __launch_bounds__(AW * 32) k_dattn(float *out, dpost a, float scale) {
    LC_PDL_TRIGGER();
    LC_PDL_WAIT();
    __shared__ float qs[MAXD], ks[MAXD], vs[MAXD];
    __shared__ float sm_m[AW], sm_l[AW], sm_acc[AW][MAXD];
    int H = a.H, KV = a.KV, D = a.D, h2 = D / 2, KVD = KV * D;
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31, t = threadIdx.x;
    int h = blockIdx.x, g = h / (H / KV), p = *a.pos;
    if (t < 2 * h2) { // a rotated pair of q (t < h2) or of k
        int isq = t < h2, i = isq ? t : t - h2;
        int j1 = (isq ? h : g) * D + i, j2 = j1 + h2;
        const float *src = isq ? a.q : a.k;
        float x1 = src[j1], x2 = src[j2];
        float c = a.cos[(size_t)p * h2 + i], sn = a.sin[(size_t)p * h2 + i];
        float *dst = isq ? qs : ks;
        dst[i] = x1 * c - x2 * sn;
        dst[i + h2] = x2 * c + x1 * sn;
    } else if (t < 2 * h2 + D) {
        int d = t - 2 * h2, j = g * D + d;
        vs[d] = a.v[j];
    }
    __syncthreads();
    if (h % (H / KV) == 0 && t < D) {
        size_t off = (size_t)p * KVD + (size_t)g * D + t;
        a.kc[off] = ks[t], a.vc[off] = vs[t];
    }
    float qv[DPL], acc[DPL], m = -INFINITY, l = 0.0f;
#pragma unroll
    for (int i = 0; i < DPL; i++) {
        int d = lane + 32 * i;
        qv[i] = d < D ? qs[d] : 0.0f;
        acc[i] = 0.0f;
    }
    for (int s = w; s <= p; s += AW) {
        size_t off = ((size_t)s * KV + g) * D;
        const float *kr = s == p ? ks : a.kc + off, *vr = s == p ? vs : a.vc + off;
        float dot = 0.0f;
#pragma unroll
        for (int i = 0; i < DPL; i++) {
            int d = lane + 32 * i;
            if (d < D) dot += qv[i] * kr[d];
        }
        float sc = d_warp_sum(dot) * scale;
        float mn = fmaxf(m, sc), corr = expf(m - mn), pr = expf(sc - mn);
        l = l * corr + pr;
#pragma unroll
        for (int i = 0; i < DPL; i++) {
            int d = lane + 32 * i;
            if (d < D) acc[i] = acc[i] * corr + pr * vr[d];
        }
        m = mn;
    }
    if (lane == 0) sm_m[w] = m, sm_l[w] = l;
#pragma unroll
    for (int i = 0; i < DPL; i++) {
        int d = lane + 32 * i;
        if (d < D) sm_acc[w][d] = acc[i];
    }
    __syncthreads();
    if (w) return;
    float M = -INFINITY, L = 0.0f, f[AW];
    for (int j = 0; j < AW; j++) M = fmaxf(M, sm_m[j]);
    for (int j = 0; j < AW; j++) f[j] = sm_m[j] == -INFINITY ? 0.0f : expf(sm_m[j] - M), L += sm_l[j] * f[j];
    float inv = 1.0f / L, *o = out + (size_t)h * D;
    for (int d = lane; d < D; d += 32) {
        float tt = 0.0f;
        for (int j = 0; j < AW; j++) tt += sm_acc[j][d] * f[j];
        o[d] = tt * inv;
    }
}

/* ------------------------------------------------------------ host side */

struct lc_cuda_dec {
    cudaStream_t st;
    int *dpos, *hpos;   // the position: device word, pinned host word
    float *buf;         // scratch
    size_t cap;         // floats
    float *x[2], *xmid, *xn, *q, *kb, *vb, *att, *h, *ssp, *ssb, *ssf, *part[7];
    unsigned *cnt; // NCNT arrival counters a block, zeroed at the start of every step
    lc_decode_step key; // what exec replays (blocks pointer NULL)
    lc_decode_block *kblk;
    int64_t kL;
    bool have_key, failed; // a key is held; recording it failed (run it directly)
    int nsm;               // the card's multiprocessors
    unsigned ktune;        // tune_word() of the held key
    cudaGraphExec_t exec;
};

static bool env_off(const char *name) {
    const char *e = getenv(name);
    return e && !strcmp(e, "0");
}

static int vec_of(lc_dtype t) { return t == LC_DT_BF16 ? 8 : 4; }

static bool aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

/* Whether this step's shapes and dtypes are ones the kernels take. */
static bool usable(const lc_decode_step *s, int64_t pos) {
    bool ok_dt = (s->wdt == LC_DT_BF16 || s->wdt == LC_DT_F32) && (s->hdt == LC_DT_BF16 || s->hdt == LC_DT_F32) &&
                 (s->edt == LC_DT_BF16 || s->edt == LC_DT_F32);
    if (!ok_dt || s->L <= 0 || s->C <= 0 || s->H <= 0 || s->KV <= 0 || s->H % s->KV || s->D % 2 || s->D > MAXD ||
        s->r < 0 || s->r > RMAX || pos < 0 || pos >= s->S || !s->blocks || !s->tok || !s->logits)
        return false;
    int64_t vw = vec_of(s->wdt), HD = s->H * s->D;
    if (s->C > (int64_t)NT * NBMAX) return false;
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
static size_t layout(lc_cuda_dec *d, float *base, const lc_decode_step *s) {
    size_t off = 0, r = (size_t)(s->r > 0 ? s->r : 1), HD = (size_t)(s->H * s->D), KVD = (size_t)(s->KV * s->D);
    size_t C = (size_t)s->C, I = (size_t)s->I;
    auto take = [&](size_t n) {
        float *p = base ? base + off : NULL;
        off += (n + 63) & ~(size_t)63;
        return p;
    };
    float *x0 = take(C), *x1 = take(C), *xmid = take(C), *xn = take(C), *q = take(HD), *kb = take(KVD);
    float *vb = take(KVD), *att = take(HD), *h = take(I), *ssp = take(NBMAX), *ssb = take(C), *ssf = take(1);
    float *cnt = take((size_t)(NCNT * s->L));
    int64_t in[7] = {s->C, s->C, s->C, s->H * s->D, s->C, s->C, s->I};
    float *part[7];
    for (int k = 0; k < 7; k++) part[k] = take((chunks_of(in[k]) + 1) * r); // + the summed u
    if (base) {
        d->x[0] = x0, d->x[1] = x1, d->xmid = xmid, d->xn = xn, d->q = q, d->kb = kb, d->vb = vb;
        d->att = att, d->h = h, d->ssp = ssp, d->ssb = ssb, d->ssf = ssf, d->cnt = (unsigned *)cnt;
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

/* The decoding state, made on first use; NULL (error recorded) when the card refuses. */
static lc_cuda_dec *dec_of(lc_cuda *c) {
    if (c->dec) return c->dec;
    lc_cuda_dec *d = (lc_cuda_dec *)xcalloc(1, sizeof *d);
    c->dec = d;
    LC_CK(c, cudaStreamCreate(&d->st)); // blocking: ordered with the legacy stream
    LC_CK(c, cudaMalloc(&d->dpos, sizeof(int)));
    LC_CK(c, cudaMallocHost(&d->hpos, sizeof(int)));
    int dev = 0;
    LC_CK(c, cudaGetDevice(&dev));
    LC_CK(c, cudaDeviceGetAttribute(&d->nsm, cudaDevAttrMultiProcessorCount, dev));
    if (c->err[0]) {
        lc_cuda_decode_free(c);
        return NULL;
    }
    return d;
}

/* The kernel-choice switches a recording bakes in (hashed into one word). */
static unsigned tune_word(void) {
    const char *names[] = {"LORAC_CUDA_DECODE_SPLIT", "LORAC_CUDA_DECODE_SKIP", ""};
    unsigned h = 2166136261u;
    for (int i = 0; i < 3; i++) {
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

template <typename T, int KS>
static cudaError_t gemv_go(cudaStream_t st, bool pdl, const dgemv &g) {
    int rows = 0;
    for (int i = 0; i < g.nseg; i++) rows += g.seg[i].rows;
    dim3 grid((unsigned)(g.njob * g.chunks + (rows + GW / KS - 1) / (GW / KS)));
    return go(st, pdl, k_dgemv<T, KS>, grid, dim3(GW * 32), g);
}

/* Warps a weight row of `bytes` is split over: LORAC_CUDA_DECODE_SPLIT (1, 2 or 4), else
 * one warp for every 16 KB up to 4 (measured on the 7B shapes: bench/results/cuda_notes.md). */
static int split_of(size_t bytes) {
    const char *e = getenv("LORAC_CUDA_DECODE_SPLIT");
    int ks = e ? atoi(e) : 0;
    if (ks == 1 || ks == 2 || ks == 4) return ks;
    return bytes >= 24 * 1024 ? 4 : bytes >= 12 * 1024 ? 2 : 1;
}

static cudaError_t gemv(cudaStream_t st, bool pdl, lc_dtype dt, dgemv &g) {
    if (g.nseg < 3) memset(&g.seg[g.nseg], 0, sizeof(dseg) * (size_t)(3 - g.nseg));
    int ks = split_of((size_t)g.I * (dt == LC_DT_BF16 ? 2 : 4));
    if (dt == LC_DT_BF16)
        return ks == 4 ? gemv_go<__nv_bfloat16, 4>(st, pdl, g) : ks == 2 ? gemv_go<__nv_bfloat16, 2>(st, pdl, g)
                                                                         : gemv_go<__nv_bfloat16, 1>(st, pdl, g);
    return ks == 4 ? gemv_go<float, 4>(st, pdl, g) : ks == 2 ? gemv_go<float, 2>(st, pdl, g) : gemv_go<float, 1>(st, pdl, g);
}

/* Adds adapter k of block b to a product's jobs when it has one; with seg >= 0 that
 * segment's rows add its s·u B (u awaited in the launch). */
static void add_job(dgemv &g, const lc_decode_block *b, int k, float *part, int seg) {
    if (!b->la[k]) return;
    g.job[g.njob].A = b->la[k], g.job[g.njob].part = part;
    if (seg >= 0) g.seg[seg].B = b->lb[k], g.seg[seg].job = g.njob;
    g.njob++;
}

#define GO(call)                                  \
    do {                                          \
        cudaError_t e_ = (call);                  \
        if (e_ != cudaSuccess) return e_;         \
    } while (0)

#ifdef LC_DECODE_MEASURE
/* Measuring builds only (-DLC_DECODE_MEASURE): LORAC_CUDA_DECODE_SKIP, a mask of kernels
 * left out of the step (1 the embedding's norm, 2 q/k/v, 4 attention, 8 o, 32 gate/up,
 * 64 down, 128 lm_head): the step's time without them. Wrong logits. */
static int skip_mask(void) {
    const char *e = getenv("LORAC_CUDA_DECODE_SKIP");
    return e ? atoi(e) : 0;
}
#define SKIP(bit) (skip & (bit))
#else
#define SKIP(bit) 0
#endif

/* Queues the whole step on d->st; returns the first launch error. Kernels: the embedding
 * row's split norm, then a block's q/k/v, attention, o, gate/up+swiglu, down (5): o and
 * down finish their rows (own adapter added) and leave ln·x and the RMS sum of squares
 * for the next products, so no norm kernel runs between blocks. */
static cudaError_t enqueue(lc_cuda_dec *d, const lc_decode_step *s, bool pdl) {
#ifdef LC_DECODE_MEASURE
    int skip = skip_mask();
#endif
    cudaStream_t st = d->st;
    int C = (int)s->C, H = (int)s->H, KV = (int)s->KV, D = (int)s->D, I = (int)s->I, r = s->r;
    int HD = H * D, KVD = KV * D, cC = (int)chunks_of(C), cHD = (int)chunks_of(HD), cI = (int)chunks_of(I);
    int nb = (C + NT - 1) / NT;
    dscale sc0 = {d->ssp, nb, C, s->eps}, sc1 = {d->ssf, 1, C, s->eps};
    GO(cudaMemsetAsync(d->cnt, 0, sizeof(unsigned) * NCNT * (size_t)s->L, st));
    float *x = d->x[0];
    dnorm n0 = {x, d->xn, s->blocks[0].ln1, C, s->embed, s->edt == LC_DT_BF16, s->tok, d->ssp};
    if (!SKIP(1)) GO(go(st, false, k_dnorm, dim3((unsigned)nb), dim3(NT), n0)); // after the memset
    for (int64_t l = 0; l < s->L; l++) {
        const lc_decode_block *b = &s->blocks[l];
        unsigned *cnt = d->cnt + NCNT * l;
        const dscale &sc = l == 0 ? sc0 : sc1;
        float *xo = d->x[(l + 1) & 1];
        dgemv g = {};
        g.seg[0] = {b->w[0], b->bias[0], NULL, d->q, HD, NULL, 0};
        g.seg[1] = {b->w[1], b->bias[1], NULL, d->kb, KVD, NULL, 0};
        g.seg[2] = {b->w[2], b->bias[2], NULL, d->vb, KVD, NULL, 0};
        g.nseg = 3, g.chunks = cC, g.r = r, g.x = d->xn, g.I = C, g.sc = sc;
        g.jcnt = cnt + 5, g.scale = s->scale;
        for (int k = 0; k < 3; k++) add_job(g, b, k, d->part[k], k);
        if (!SKIP(2)) GO(gemv(st, pdl, s->wdt, g));
        dpost p = {d->q, d->kb, d->vb, b->kc, b->vc, s->cos, s->sin, d->dpos, H, KV, D};
        if (!SKIP(4)) GO(go(st, pdl, k_dattn, dim3((unsigned)H), dim3(AW * 32), d->att, p, 1.0f / sqrtf((float)D)));
        g = dgemv{};
        g.seg[0] = {b->w[3], NULL, x, d->xmid, C, NULL, 0};
        g.nseg = 1, g.chunks = cHD, g.r = r, g.x = d->att, g.I = HD;
        g.jcnt = cnt, g.scale = s->scale;
        add_job(g, b, 3, d->part[3], 0);
        g.ep.ln = b->ln2, g.ep.xl = d->xn, g.ep.ssb = d->ssb, g.ep.ssf = d->ssf, g.ep.scnt = cnt + 1;
        if (!SKIP(8)) GO(gemv(st, pdl, s->wdt, g));
        dgu u = {b->w[4], b->w[5], d->h, I, C, sc1, {b->lb[4], b->lb[5]}, s->scale, dgemv{}};
        u.aj.x = d->xn, u.aj.I = C, u.aj.chunks = cC, u.aj.r = r, u.aj.jcnt = cnt + 2;
        add_job(u.aj, b, 4, d->part[4], -1);
        add_job(u.aj, b, 5, d->part[5], -1);
        if (!b->la[4]) u.b[0] = NULL;
        if (!b->la[5]) u.b[1] = NULL;
        dim3 gu((unsigned)(u.aj.njob * cC + (I + 1) / 2));
        if (!SKIP(32))
            GO(s->wdt == LC_DT_BF16 ? go(st, pdl, k_dgu<__nv_bfloat16>, gu, dim3(GW * 32), u)
                                    : go(st, pdl, k_dgu<float>, gu, dim3(GW * 32), u));
        g = dgemv{};
        g.seg[0] = {b->w[6], NULL, d->xmid, xo, C, NULL, 0};
        g.nseg = 1, g.chunks = cI, g.r = r, g.x = d->h, g.I = I;
        g.jcnt = cnt + 3, g.scale = s->scale;
        add_job(g, b, 6, d->part[6], 0);
        g.ep.ln = l + 1 < s->L ? s->blocks[l + 1].ln1 : s->norm_f;
        g.ep.xl = d->xn, g.ep.ssb = d->ssb, g.ep.ssf = d->ssf, g.ep.scnt = cnt + 4;
        if (!SKIP(64)) GO(gemv(st, pdl, s->wdt, g));
        x = xo;
    }
    dgemv g = {};
    g.seg[0] = {s->lm_head, NULL, NULL, s->logits, (int)s->V, NULL, 0};
    g.nseg = 1, g.chunks = 1, g.r = r, g.x = d->xn, g.I = C, g.sc = s->L > 0 ? sc1 : sc0;
    if (!SKIP(128)) GO(gemv(st, pdl, s->hdt, g));
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
    // the previous step is over (the model syncs every step): the host word is free
    *d->hpos = (int)pos;
    LC_CK(c, cudaMemcpyAsync(d->dpos, d->hpos, sizeof(int), cudaMemcpyHostToDevice, d->st));
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
