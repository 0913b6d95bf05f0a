/*
 * attention.cu — causal grouped-query attention on the card, forward and backward, in
 * the flash style: keys and values stream through shared memory in tiles of 32 and
 * each query row keeps an online softmax (running max, running sum, output
 * accumulator), so no T×T matrix exists in memory. Float32 throughout.
 *
 * One new row (decoding, Tq == 1) has its own kernel: 32 warps split the keys and merge
 * their partial softmaxes. Backward of short sequences gives each head its own dk/dv
 * blocks (partial sums added in head order afterwards) so the card has enough blocks.
 *
 * Layout (backend.h): q (B,Tq,H,D); k, v (B,S,KV,D); out (B,Tq,H,D); lse (B,H,Tq).
 * Head h reads kv head h / (H/KV). One warp owns one query row (forward, dq) or one
 * key row (dk, dv); lane j of a warp scores key (or query) j of the tile, and each
 * lane owns dimensions lane, lane+32, ... of the accumulators. head_dim up to 256.
 * Owns nothing beyond the backend's per-row scratch (the backward's D = rowsum(dout·out)
 * and the per-head partial dk/dv).
 *
 * Training shapes (pos0 = 0, T ≥ 16, head_dim 64/128) go to the tensor-core kernels of
 * attention_tc.cu (bf16 operands, float32 softmax and sums) unless LORAC_CUDA_ATT=fp32;
 * they read bf16 only: the float32 entry points round q, k, v into the backend's bf16
 * scratch first (the values the kernels multiply), and the backward's D kernel writes
 * dout's bf16 rounding there beside D.
 * ->attention_b / ->attention_bwd_b take q, k, v and out as bf16 (training keeps them so):
 * the tensor-core kernels read them as they are; other shapes run the float32 kernels
 * on float32 copies (c->att32), the forward's out rounded after.
 */
#include <cuda_bf16.h>
#include <math.h>

#include "backend/cuda/cuda.h"

#define TILE 32   // keys (or queries) per shared-memory tile
#define ROWS 8    // warps per block: query rows (forward, dq) or key rows (dk, dv)
#define MAXD 256  // largest head_dim
#define DPL (MAXD / 32)

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* grid (ceil(Tq/ROWS), H, B), ROWS warps. */
__global__ void k_att_fwd(float *out, float *lse, const float *q, const float *k, const float *v,
                          int Tq, int S, int H, int KV, int D, int pos0, float scale) {
    extern __shared__ float sm[];
    int ld = D + 1;
    float *Ks = sm, *Vs = Ks + TILE * ld, *Qs = Vs + TILE * ld;
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int b = blockIdx.z, h = blockIdx.y, g = h / (H / KV);
    int t = blockIdx.x * ROWS + w;
    bool valid = t < Tq;
    for (int d = lane; d < D; d += 32) Qs[w * D + d] = valid ? q[(((size_t)b * Tq + t) * H + h) * D + d] : 0.0f;
    int tlast = min((int)blockIdx.x * ROWS + ROWS - 1, Tq - 1);
    int kend = min(pos0 + tlast + 1, S), myend = min(pos0 + t + 1, S);
    float m = -INFINITY, l = 0.0f, acc[DPL];
#pragma unroll
    for (int i = 0; i < DPL; i++) acc[i] = 0.0f;
    for (int s0 = 0; s0 < kend; s0 += TILE) {
        __syncthreads();
        for (int idx = threadIdx.x; idx < TILE * D; idx += blockDim.x) {
            int j = idx / D, d = idx - j * D, s = s0 + j;
            size_t off = (((size_t)b * S + s) * KV + g) * D + d;
            Ks[j * ld + d] = s < kend ? k[off] : 0.0f;
            Vs[j * ld + d] = s < kend ? v[off] : 0.0f;
        }
        __syncthreads();
        if (!valid || s0 >= myend) continue;
        int s = s0 + lane;
        float sc = -INFINITY;
        if (s < myend) {
            float dot = 0.0f;
            for (int d = 0; d < D; d++) dot += Qs[w * D + d] * Ks[lane * ld + d];
            sc = dot * scale;
        }
        float mn = fmaxf(m, warp_max(sc));
        float p = s < myend ? expf(sc - mn) : 0.0f;
        float corr = expf(m - mn);
        l = l * corr + warp_sum(p);
#pragma unroll
        for (int i = 0; i < DPL; i++) acc[i] *= corr;
        int jn = min(TILE, myend - s0);
        for (int j = 0; j < jn; j++) {
            float pj = __shfl_sync(0xffffffffu, p, j);
#pragma unroll
            for (int i = 0; i < DPL; i++) {
                int d = lane + 32 * i;
                if (d < D) acc[i] += pj * Vs[j * ld + d];
            }
        }
        m = mn;
    }
    if (!valid) return;
    float inv = 1.0f / l;
    float *o = out + (((size_t)b * Tq + t) * H + h) * D;
#pragma unroll
    for (int i = 0; i < DPL; i++) {
        int d = lane + 32 * i;
        if (d < D) o[d] = acc[i] * inv;
    }
    if (lse && lane == 0) lse[((size_t)b * H + h) * Tq + t] = m + logf(l);
}


#define DEC_W 32 // warps of the decoding kernel

/* One query row per (head, batch) (decoding, Tq == 1): grid (H, B), DEC_W warps; warp w
 * takes keys w, w+DEC_W, ... with the lanes splitting D, keeps its own online softmax, and
 * warp 0 merges the DEC_W partial results. */
__global__ void k_att_dec(float *out, float *lse, const float *q, const float *k, const float *v, int S,
                          int H, int KV, int D, int pos0, float scale) {
    LC_PDL_TRIGGER();
    __shared__ float sm_m[DEC_W], sm_l[DEC_W], sm_acc[DEC_W][MAXD];
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int h = blockIdx.x, b = blockIdx.y, g = h / (H / KV);
    int end = min(pos0 + 1, S);
    const float *qr = q + ((size_t)b * H + h) * D;
    float qv[DPL], acc[DPL], m = -INFINITY, l = 0.0f;
#pragma unroll
    for (int i = 0; i < DPL; i++) {
        int d = lane + 32 * i;
        qv[i] = d < D ? qr[d] : 0.0f;
        acc[i] = 0.0f;
    }
    for (int s = w; s < end; s += DEC_W) {
        size_t off = (((size_t)b * S + s) * KV + g) * D;
        float dot = 0.0f;
#pragma unroll
        for (int i = 0; i < DPL; i++) {
            int d = lane + 32 * i;
            if (d < D) dot += qv[i] * k[off + d];
        }
        float sc = warp_sum(dot) * scale;
        float mn = fmaxf(m, sc), corr = expf(m - mn), p = expf(sc - mn);
        l = l * corr + p;
#pragma unroll
        for (int i = 0; i < DPL; i++) {
            int d = lane + 32 * i;
            if (d < D) acc[i] = acc[i] * corr + p * v[off + d];
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
    float M = -INFINITY, L = 0.0f, f[DEC_W];
    for (int j = 0; j < DEC_W; j++) M = fmaxf(M, sm_m[j]);
    for (int j = 0; j < DEC_W; j++) f[j] = sm_m[j] == -INFINITY ? 0.0f : expf(sm_m[j] - M), L += sm_l[j] * f[j];
    float inv = 1.0f / L, *o = out + ((size_t)b * H + h) * D;
    for (int d = lane; d < D; d += 32) {
        float a = 0.0f;
        for (int j = 0; j < DEC_W; j++) a += sm_acc[j][d] * f[j];
        o[d] = a * inv;
    }
    if (lse && lane == 0) lse[(size_t)b * H + h] = M + logf(L);
}

__global__ void k_bf16_to_f32(float *dst, const __nv_bfloat16 *src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __bfloat162float(src[i]);
}

__global__ void k_f32_to_bf16(__nv_bfloat16 *dst, const float *src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __float2bfloat16_rn(src[i]);
}

static unsigned grid_of(size_t n) { return (unsigned)(n / 256 + 1 < 4096 ? n / 256 + 1 : 4096); }

/* Room for n bf16 tensors of ns[i] values each in the backend's bf16 scratch, one after
 * another (each from a 64-value boundary): p[i]. */
static void bf16_room(lc_cuda *c, int n, const size_t *ns, __nv_bfloat16 **p) {
    size_t tot = 0;
    for (int i = 0; i < n; i++) tot += (ns[i] + 63) & ~(size_t)63;
    __nv_bfloat16 *b = (__nv_bfloat16 *)lc_cuda_xb(c, tot * sizeof(__nv_bfloat16));
    for (int i = 0; i < n; i++) p[i] = b, b += (ns[i] + 63) & ~(size_t)63;
}

/* dst[i] (ns[i] values, room the caller has) = src[i] rounded to bf16. */
static void narrow_into(lc_cuda *c, int n, const float *const *src, const size_t *ns, __nv_bfloat16 *const *dst) {
    for (int i = 0; i < n; i++) {
        k_f32_to_bf16<<<grid_of(ns[i]), 256, 0, c->st>>>(dst[i], src[i], ns[i]);
        LC_LAUNCHED(c);
    }
}

/* bf16 copies of the n float32 tensors src[i] in the bf16 scratch: b[i]. */
static void narrow(lc_cuda *c, int n, const float *const *src, const size_t *ns, __nv_bfloat16 **b) {
    bf16_room(c, n, ns, b);
    narrow_into(c, n, src, ns, b);
}

static size_t fwd_smem(int D) { return (size_t)(2 * TILE * (D + 1) + ROWS * D) * sizeof(float); }

void lc_cuda_attention(lc_backend *be, float *out, float *lse, const float *q, const float *k,
                       const float *v, int64_t B, int64_t Tq, int64_t S, int64_t H, int64_t KV,
                       int64_t D, int64_t pos0) {
    lc_cuda *c = (lc_cuda *)be->impl;
    LC_PROF(c, "attention Tq=%lld", Tq);
    if (B <= 0 || Tq <= 0 || H <= 0) return;
    if (D > MAXD) {
        lc_cuda_error(c, __FILE__, __LINE__, "attention", "head_dim above 256 is not supported");
        return;
    }
    if (Tq == 1) {
        k_att_dec<<<dim3((unsigned)H, (unsigned)B), DEC_W * 32, 0, c->st>>>(out, lse, q, k, v, (int)S, (int)H, (int)KV,
                                                               (int)D, (int)pos0, 1.0f / sqrtf((float)D));
        LC_LAUNCHED(c);
        return;
    }
    const void *al[] = {out, q, k, v};
    if (lc_cuda_att_tc_ok(Tq, S, D, pos0, al, 4)) {
        __nv_bfloat16 *b[3];
        size_t nq = (size_t)(B * Tq * H * D), nk = (size_t)(B * S * KV * D), ns[] = {nq, nk, nk};
        const float *src[] = {q, k, v};
        narrow(c, 3, src, ns, b);
        lc_cuda_att_tc_fwd(c, out, false, lse, b[0], b[1], b[2], B, Tq, S, H, KV, D);
        return;
    }
    size_t sm = fwd_smem((int)D);
    if (sm > 48 * 1024)
        LC_CK(c, cudaFuncSetAttribute(k_att_fwd, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm));
    dim3 grid((unsigned)((Tq + ROWS - 1) / ROWS), (unsigned)H, (unsigned)B);
    k_att_fwd<<<grid, ROWS * 32, sm, c->st>>>(out, lse, q, k, v, (int)Tq, (int)S, (int)H, (int)KV, (int)D,
                                       (int)pos0, 1.0f / sqrtf((float)D));
    LC_LAUNCHED(c);
}

__device__ __forceinline__ float as_float(float x) { return x; }
__device__ __forceinline__ float as_float(__nv_bfloat16 x) { return __bfloat162float(x); }

/* Dr (B,H,T) = sum_d dout · out of each row; one warp a row (out float32 or bf16); db (when
 * not NULL) = dout rounded to bf16 (the tensor-core backward's operand). */
template <typename TO>
__global__ void k_att_rowdot(float *Dr, __nv_bfloat16 *db, const float *dout, const TO *out, int T, int H, int D,
                             size_t rows) {
    size_t r = (size_t)blockIdx.x * ROWS + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (r >= rows) return;
    // r indexes (b, t, h) in the activations' order
    const float *a = dout + r * D;
    const TO *o = out + r * D;
    float s = 0.0f;
    for (int d = lane; d < D; d += 32) s += a[d] * as_float(o[d]);
    if (db)
        for (int d = lane; d < D; d += 32) db[r * D + d] = __float2bfloat16_rn(a[d]);
    s = warp_sum(s);
    size_t h = r % H, bt = r / H, t = bt % T, b = bt / T;
    if (lane == 0) Dr[(b * H + h) * T + t] = s;
}

/* dq: grid (ceil(T/ROWS), H, B); a warp a query row. */
__global__ void k_att_dq(float *dq, const float *dout, const float *q, const float *k, const float *v,
                         const float *lse, const float *Dr, int T, int H, int KV, int D, float scale) {
    extern __shared__ float sm[];
    int ld = D + 1;
    float *Ks = sm, *Vs = Ks + TILE * ld, *Qs = Vs + TILE * ld, *Os = Qs + ROWS * D;
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int b = blockIdx.z, h = blockIdx.y, g = h / (H / KV);
    int t = blockIdx.x * ROWS + w;
    bool valid = t < T;
    size_t qoff = (((size_t)b * T + t) * H + h) * D;
    for (int d = lane; d < D; d += 32) {
        Qs[w * D + d] = valid ? q[qoff + d] : 0.0f;
        Os[w * D + d] = valid ? dout[qoff + d] : 0.0f;
    }
    float L = valid ? lse[((size_t)b * H + h) * T + t] : 0.0f;
    float Di = valid ? Dr[((size_t)b * H + h) * T + t] : 0.0f;
    int kend = min((int)blockIdx.x * ROWS + ROWS, T), myend = t + 1;
    float acc[DPL];
#pragma unroll
    for (int i = 0; i < DPL; i++) acc[i] = 0.0f;
    for (int s0 = 0; s0 < kend; s0 += TILE) {
        __syncthreads();
        for (int idx = threadIdx.x; idx < TILE * D; idx += blockDim.x) {
            int j = idx / D, d = idx - j * D, s = s0 + j;
            size_t off = (((size_t)b * T + s) * KV + g) * D + d;
            Ks[j * ld + d] = s < kend ? k[off] : 0.0f;
            Vs[j * ld + d] = s < kend ? v[off] : 0.0f;
        }
        __syncthreads();
        if (!valid || s0 >= myend) continue;
        int s = s0 + lane;
        float ds = 0.0f;
        if (s < myend) {
            float qk = 0.0f, dp = 0.0f;
            for (int d = 0; d < D; d++) {
                qk += Qs[w * D + d] * Ks[lane * ld + d];
                dp += Os[w * D + d] * Vs[lane * ld + d];
            }
            float p = expf(qk * scale - L);
            ds = p * (dp - Di);
        }
        int jn = min(TILE, myend - s0);
        for (int j = 0; j < jn; j++) {
            float dj = __shfl_sync(0xffffffffu, ds, j);
#pragma unroll
            for (int i = 0; i < DPL; i++) {
                int d = lane + 32 * i;
                if (d < D) acc[i] += dj * Ks[j * ld + d];
            }
        }
    }
    if (!valid) return;
#pragma unroll
    for (int i = 0; i < DPL; i++) {
        int d = lane + 32 * i;
        if (d < D) dq[qoff + d] = acc[i] * scale;
    }
}

/* dk, dv: grid (ceil(T/ROWS), KV, B); a warp a key row, summing over the heads of its
 * group and the queries at or after it. With part (few blocks otherwise: short sequences):
 * grid (ceil(T/ROWS), H, B), one head a block, each head's share written to its slice of
 * part (G slices of dk, then G of dv) for k_att_sum_heads to add in a fixed order. */
__global__ void k_att_dkdv(float *dk, float *dv, const float *dout, const float *q, const float *k,
                           const float *v, const float *lse, const float *Dr, int T, int H, int KV,
                           int D, float scale, float *part) {
    extern __shared__ float sm[];
    int ld = D + 1;
    float *Qs = sm, *Os = Qs + TILE * ld, *Kw = Os + TILE * ld, *Vw = Kw + ROWS * D;
    float *Ls = Vw + ROWS * D, *Ds = Ls + TILE;
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    bool hsplit = part != NULL;
    int b = blockIdx.z, G = H / KV, g = hsplit ? (int)blockIdx.y / G : (int)blockIdx.y;
    int h0 = hsplit ? (int)blockIdx.y : g * G, h1 = hsplit ? h0 + 1 : h0 + G;
    int j = blockIdx.x * ROWS + w;
    bool valid = j < T;
    size_t koff = (((size_t)b * T + j) * KV + g) * D;
    for (int d = lane; d < D; d += 32) {
        Kw[w * D + d] = valid ? k[koff + d] : 0.0f;
        Vw[w * D + d] = valid ? v[koff + d] : 0.0f;
    }
    float adk[DPL], adv[DPL];
#pragma unroll
    for (int i = 0; i < DPL; i++) adk[i] = adv[i] = 0.0f;
    int tstart = ((int)blockIdx.x * ROWS / TILE) * TILE;
    for (int h = h0; h < h1; h++) {
        for (int t0 = tstart; t0 < T; t0 += TILE) {
            __syncthreads();
            for (int idx = threadIdx.x; idx < TILE * D; idx += blockDim.x) {
                int i = idx / D, d = idx - i * D, t = t0 + i;
                size_t off = (((size_t)b * T + t) * H + h) * D + d;
                Qs[i * ld + d] = t < T ? q[off] : 0.0f;
                Os[i * ld + d] = t < T ? dout[off] : 0.0f;
            }
            if (threadIdx.x < TILE) {
                int t = t0 + threadIdx.x;
                Ls[threadIdx.x] = t < T ? lse[((size_t)b * H + h) * T + t] : 0.0f;
                Ds[threadIdx.x] = t < T ? Dr[((size_t)b * H + h) * T + t] : 0.0f;
            }
            __syncthreads();
            if (!valid || t0 + TILE <= j) continue;
            int t = t0 + lane;
            float p = 0.0f, ds = 0.0f;
            if (t < T && t >= j) {
                float qk = 0.0f, dp = 0.0f;
                for (int d = 0; d < D; d++) {
                    qk += Qs[lane * ld + d] * Kw[w * D + d];
                    dp += Os[lane * ld + d] * Vw[w * D + d];
                }
                p = expf(qk * scale - Ls[lane]);
                ds = p * (dp - Ds[lane]);
            }
            for (int i = 0; i < TILE; i++) {
                float pi = __shfl_sync(0xffffffffu, p, i), di = __shfl_sync(0xffffffffu, ds, i);
                if (pi == 0.0f && di == 0.0f) continue;
#pragma unroll
                for (int e = 0; e < DPL; e++) {
                    int d = lane + 32 * e;
                    if (d < D) {
                        adv[e] += pi * Os[i * ld + d];
                        adk[e] += di * Qs[i * ld + d];
                    }
                }
            }
        }
    }
    if (!valid) return;
#pragma unroll
    for (int e = 0; e < DPL; e++) {
        int d = lane + 32 * e;
        if (d < D && hsplit) {
            size_t nk = (size_t)gridDim.z * T * KV * D, hh = (size_t)(h0 - g * G);
            part[hh * nk + koff + d] = adk[e] * scale, part[(G + hh) * nk + koff + d] = adv[e];
        } else if (d < D) {
            dk[koff + d] = adk[e] * scale, dv[koff + d] = adv[e];
        }
    }
}

/* dk, dv (n each) = the sums of their G head slices of part, in head order. */
__global__ void k_att_sum_heads(float *dk, float *dv, const float *part, size_t n, int G) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float a = 0.0f, b = 0.0f;
        for (int h = 0; h < G; h++) a += part[h * n + i], b += part[(G + h) * n + i];
        dk[i] = a, dv[i] = b;
    }
}

void lc_cuda_attention_bwd(lc_backend *be, float *dq, float *dk, float *dv, const float *dout,
                           const float *q, const float *k, const float *v, const float *out,
                           const float *lse, int64_t B, int64_t T, int64_t H, int64_t KV, int64_t D) {
    lc_cuda *c = (lc_cuda *)be->impl;
    LC_PROF(c, "attention_bwd", 0);
    if (B <= 0 || T <= 0 || H <= 0) return;
    if (D > MAXD) {
        lc_cuda_error(c, __FILE__, __LINE__, "attention_bwd", "head_dim above 256 is not supported");
        return;
    }
    size_t rows = (size_t)(B * T * H), nk = (size_t)(B * T * KV * D);
    // few key-row blocks (short sequences): a block per head, not per group
    int64_t kb = (T + ROWS - 1) / ROWS, G = H / KV;
    const void *al[] = {dq, dk, dv, dout, q, k, v};
    bool tc = lc_cuda_att_tc_ok(T, T, D, 0, al, 7);
    bool hsplit = !tc && G > 1 && kb * KV * B < 256;
    size_t rows_al = (rows + 63) & ~(size_t)63;
    float *Dr = lc_cuda_rows(c, rows_al + (hsplit ? 2 * (size_t)G * nk : 0));
    float *part = hsplit ? Dr + rows_al : NULL;
    // the tensor-core kernels read bf16: dout's copy made beside D, then q's, k's and v's
    __nv_bfloat16 *b[4] = {NULL, NULL, NULL, NULL};
    size_t ns[] = {rows * D, rows * D, nk, nk};
    if (tc) bf16_room(c, 4, ns, b);
    k_att_rowdot<<<(unsigned)((rows + ROWS - 1) / ROWS), ROWS * 32, 0, c->st>>>(Dr, b[0], dout, out, (int)T, (int)H,
                                                                       (int)D, rows);
    LC_LAUNCHED(c);
    if (tc) {
        const float *src[] = {q, k, v};
        narrow_into(c, 3, src, ns + 1, b + 1);
        lc_cuda_att_tc_bwd(c, dq, dk, dv, b[0], b[1], b[2], b[3], lse, Dr, B, T, H, KV, D);
        return;
    }
    float scale = 1.0f / sqrtf((float)D);
    size_t sq = (size_t)(2 * TILE * (D + 1) + 2 * ROWS * D) * sizeof(float);
    size_t skv = (size_t)(2 * TILE * (D + 1) + 2 * ROWS * D + 2 * TILE) * sizeof(float);
    if (sq > 48 * 1024)
        LC_CK(c, cudaFuncSetAttribute(k_att_dq, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sq));
    if (skv > 48 * 1024)
        LC_CK(c, cudaFuncSetAttribute(k_att_dkdv, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)skv));
    dim3 gq((unsigned)((T + ROWS - 1) / ROWS), (unsigned)H, (unsigned)B);
    k_att_dq<<<gq, ROWS * 32, sq, c->st>>>(dq, dout, q, k, v, lse, Dr, (int)T, (int)H, (int)KV, (int)D, scale);
    LC_LAUNCHED(c);
    dim3 gk((unsigned)kb, (unsigned)(hsplit ? H : KV), (unsigned)B);
    k_att_dkdv<<<gk, ROWS * 32, skv, c->st>>>(dk, dv, dout, q, k, v, lse, Dr, (int)T, (int)H, (int)KV, (int)D,
                                       scale, part);
    LC_LAUNCHED(c);
    if (hsplit) {
        k_att_sum_heads<<<(unsigned)((nk + 255) / 256), 256, 0, c->st>>>(dk, dv, part, nk, (int)G);
        LC_LAUNCHED(c);
    }
}

/* ---- bf16 operands (training) ---- */


/* c->att32 with room for n floats (kept for the next call). */
static float *att32(lc_cuda *c, size_t n) {
    if (c->att32_cap < n) {
        if (c->att32) LC_CK(c, cudaFree(c->att32));
        c->att32 = NULL, c->att32_cap = 0;
        if (cudaMalloc(&c->att32, n * sizeof(float)) != cudaSuccess) {
            lc_cuda_error(c, __FILE__, __LINE__, "attention", "out of device memory for float32 attention operands");
            return NULL;
        }
        c->att32_cap = n;
    }
    return c->att32;
}

/* Float32 copies of the n bf16 tensors src[i] (ns[i] values each) in c->att32, one after
 * another (each from a 64-float boundary): dst[i]; returns false when there is no room. */
static bool widen(lc_cuda *c, int n, const void *const *src, const size_t *ns, float **dst) {
    size_t tot = 0;
    for (int i = 0; i < n; i++) tot += (ns[i] + 63) & ~(size_t)63;
    float *p = att32(c, tot);
    if (!p) return false;
    for (int i = 0; i < n; i++) {
        dst[i] = p;
        if (src[i]) {
            k_bf16_to_f32<<<grid_of(ns[i]), 256, 0, c->st>>>(p, (const __nv_bfloat16 *)src[i], ns[i]);
            LC_LAUNCHED(c);
        }
        p += (ns[i] + 63) & ~(size_t)63;
    }
    return true;
}

/* Float32 copies of training's bf16 q (B,T,H,D), k, v (B,T,KV,D) and, when not NULL, out
 * (B,T,H,D): f[0..3] (f[3] room only when out is NULL); false when there is no room. */
static bool widen_qkvo(lc_cuda *c, const void *q, const void *k, const void *v, const void *out, int64_t B, int64_t T,
                       int64_t H, int64_t KV, int64_t D, float **f) {
    size_t nq = (size_t)(B * T * H * D), nk = (size_t)(B * T * KV * D);
    const void *src[] = {q, k, v, out};
    size_t ns[] = {nq, nk, nk, nq};
    return widen(c, 4, src, ns, f);
}

void lc_cuda_attention_b(lc_backend *be, void *out, float *lse, const void *q, const void *k, const void *v,
                         int64_t B, int64_t T, int64_t H, int64_t KV, int64_t D) {
    lc_cuda *c = (lc_cuda *)be->impl;
    if (B <= 0 || T <= 0 || H <= 0) return;
    const void *al[] = {out, q, k, v};
    if (lc_cuda_att_tc_ok(T, T, D, 0, al, 4)) {
        LC_PROF(c, "attention (bf16) T=%lld", T);
        lc_cuda_att_tc_fwd(c, out, true, lse, q, k, v, B, T, T, H, KV, D);
        return;
    }
    float *f[4];
    if (!widen_qkvo(c, q, k, v, NULL, B, T, H, KV, D, f)) return;
    lc_cuda_attention(be, f[3], lse, f[0], f[1], f[2], B, T, T, H, KV, D, 0);
    size_t nq = (size_t)(B * T * H * D);
    k_f32_to_bf16<<<grid_of(nq), 256, 0, c->st>>>((__nv_bfloat16 *)out, f[3], nq);
    LC_LAUNCHED(c);
}

/* The tensor-core backward's inputs from float32 dout and bf16 out: Dr (B,H,T) =
 * rowsum(dout·out) and dout's bf16 copy *db (both in the backend's rooms). */
static float *rowdot_b(lc_cuda *c, __nv_bfloat16 **db, const float *dout, const void *out, int64_t B, int64_t T,
                       int64_t H, int64_t D) {
    size_t rows = (size_t)(B * T * H);
    float *Dr = lc_cuda_rows(c, (rows + 63) & ~(size_t)63);
    size_t nd = rows * D;
    bf16_room(c, 1, &nd, db);
    k_att_rowdot<<<(unsigned)((rows + ROWS - 1) / ROWS), ROWS * 32, 0, c->st>>>(
        Dr, *db, dout, (const __nv_bfloat16 *)out, (int)T, (int)H, (int)D, rows);
    LC_LAUNCHED(c);
    return Dr;
}

void lc_cuda_attention_bwd_b(lc_backend *be, float *dq, float *dk, float *dv, const float *dout, const void *q,
                             const void *k, const void *v, const void *out, const float *lse, int64_t B, int64_t T,
                             int64_t H, int64_t KV, int64_t D) {
    lc_cuda *c = (lc_cuda *)be->impl;
    if (B <= 0 || T <= 0 || H <= 0) return;
    const void *al[] = {dq, dk, dv, dout, q, k, v};
    if (lc_cuda_att_tc_ok(T, T, D, 0, al, 7)) {
        LC_PROF(c, "attention_bwd (bf16)", 0);
        __nv_bfloat16 *db;
        float *Dr = rowdot_b(c, &db, dout, out, B, T, H, D);
        lc_cuda_att_tc_bwd(c, dq, dk, dv, db, q, k, v, lse, Dr, B, T, H, KV, D);
        return;
    }
    float *f[4];
    if (!widen_qkvo(c, q, k, v, out, B, T, H, KV, D, f)) return;
    lc_cuda_attention_bwd(be, dq, dk, dv, dout, f[0], f[1], f[2], f[3], lse, B, T, H, KV, D);
}

/* ->attention_bwd_rb: on the tensor cores, the kernels write the rotated, rounded results
 * themselves (no float32 dq, dk, dv); elsewhere ->attention_bwd_b into dq, dk, dv, then
 * ->rope_bwd_b and ->to_bf16_rows as the caller would have run them. */
void lc_cuda_attention_bwd_rb(lc_backend *be, void *dqb, void *dkb, void *dvb, int64_t ldq, int64_t ldkv, float *dq,
                              float *dk, float *dv, const float *dout, const void *q, const void *k, const void *v,
                              const void *out, const float *lse, const float *cos, const float *sin, int64_t B,
                              int64_t T, int64_t H, int64_t KV, int64_t D) {
    lc_cuda *c = (lc_cuda *)be->impl;
    if (B <= 0 || T <= 0 || H <= 0) return;
    const void *al[] = {dout, q, k, v};
    if (lc_cuda_att_tc_ok(T, T, D, 0, al, 4)) {
        LC_PROF(c, "attention_bwd (bf16, rotated bf16 out)", 0);
        __nv_bfloat16 *db;
        float *Dr = rowdot_b(c, &db, dout, out, B, T, H, D);
        lc_cuda_att_tc_bwd_rb(c, dqb, dkb, dvb, ldq, ldkv, db, q, k, v, lse, Dr, cos, sin, B, T, H, KV, D);
        return;
    }
    lc_cuda_attention_bwd_b(be, dq, dk, dv, dout, q, k, v, out, lse, B, T, H, KV, D);
    be->rope_bwd_b(be, dqb, ldq, dq, cos, sin, B, T, H, D, 0);
    be->rope_bwd_b(be, dkb, ldkv, dk, cos, sin, B, T, KV, D, 0);
    be->to_bf16_rows(be, dvb, ldkv, dv, B * T, KV * D);
}
