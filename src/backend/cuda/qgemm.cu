/*
 * qgemm.cu — products over NF4 weights for 9..256 activation rows that read the 4-bit
 * codes on Hopper's tensor cores (wgmma, sm_90a), instead of a bf16 copy of the weight.
 *
 * out (N, O) (=, +=) x (N, I) W^T (+ bias), computed transposed: out^T = W x^T, so the
 * weight is wgmma's A operand, which may come from registers. A block of two warpgroups
 * owns 128 weight rows (64 each) and walks the inner dimension in tiles of 64, one NF4
 * block of each row. k_qg_tiles first converts x to bf16 (the copy path's rounding) in
 * 64-wide tiles already in the 128-byte swizzle wgmma reads B from, so a tile is one
 * contiguous copy; activation tiles and code tiles (codes, scales) come into two
 * shared-memory rings by cp.async (qg_cfg: depths and how many blocks share an SM). Each
 * thread builds the A fragment of its two rows for the next k16 step (k_dequant_u8's
 * arithmetic: lut[code] · absmax in float32, one rounding to bf16, so the product
 * multiplies exactly the copy path's bf16 values) while up to three products of its
 * warpgroup run (four fragment buffers). Where the row tiles leave SMs idle the inner
 * dimension is split over blockIdx.y; the partial sums go to a scratch and k_qgemm_sum
 * adds them in a fixed order (deterministic; LORAC_CUDA_QGEMM_SPLITS=K caps the splits).
 * The weights of one input (->matmul_n: q/k/v, gate/up) share a launch: x converted once,
 * their row tiles side by side along blockIdx.x, the splits chosen for all of them (fewer,
 * so fewer partial sums to add; LORAC_CUDA_QGEMM_N=0: a launch a weight).
 * Input gradients are not done here (cuda.cu sends them to the copy path).
 *
 * The kernel exists only in sm_90a machine code (the Makefile builds this file's sm_90
 * code as sm_90a); k_qg_probe tells the host whether this device runs it. Anything else
 * (other cards, affine formats, shapes below) goes to quant.cu's copy path.
 * LORAC_CUDA_QGEMM=0: the copy path always.
 *
 * Owns the split-K and activation-tile scratch (lc_cuda.qg), freed by lc_cuda_qgemm_free.
 */
#include <cuda_bf16.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda.h"
#include "backend/cuda/wgmma.h"

#define QG_BM 128                    // weight rows a block: two warpgroups of 64
#define QG_BK 64                     // inner tile: one NF4 block of each row
#define QG_THREADS 256
#define QG_CODES (QG_BM * QG_BK / 2) // bytes of codes a tile
#define QG_SCALES (QG_BM * 4 * 2)    // a word of absmax (or of nested codes) and a nested scale a row
#define QG_CBYTES (QG_CODES + QG_SCALES)

struct lc_cuda_qg {
    int probed, ok; // whether k_qg_probe ran, and whether this device runs the kernel
    int sms;
    float *ws; // split-K partial sums
    size_t ws_cap;
    void *xt; // the activations in tiles (k_qg_tiles)
    size_t xt_cap;
    unsigned attr; // bit NP/8 - 1: the shared-memory size was set for that instantiation
};

/* One weight of a launch: a launch covers up to LC_GEMM_N_MAX weights of one input
 * (q/k/v; gate/up), their row tiles one after another along blockIdx.x. */
struct qg_prod {
    const uint8_t *codes;   // (O, I/2) NF4 bytes, the first element in the high nibble
    const void *absmax;     // (O·I/64) float32, or uint8 codes when nested
    const float *absmax2;   // nested scales (O·I/64 / block2)
    const float *code2;     // nested map (device, 256)
    float *out;             // (N, O)
    const float *bias;      // (O) or NULL
    size_t ws;              // where its partial sums start in ws (floats)
    float offset;           // nested
    int nested, b2sh;       // b2sh: log2 of block2
    int O, t0;              // rows; its first row tile (blockIdx.x)
};

struct qg_args {
    qg_prod p[LC_GEMM_N_MAX];
    float code[16];         // the 4-bit map (the same for every weight of a launch)
    const __nv_bfloat16 *x; // (I/64 tiles, NP, 64): the activations tile by tile, swizzled (k_qg_tiles)
    float *ws;              // per weight (splits, N, O), or NULL when not split
    int np, N, I, per, acc; // np: weights; per: tiles a split
};

/* Per row count NP: up to 144 rows two blocks share an SM (≤ 128 registers, ≤ 113 KB of
 * shared memory each: more warps to hide the dequantization's latencies), else one. XS
 * activation tiles and CS code tiles in the rings, XAHEAD / CAHEAD of them loaded ahead (a
 * buffer is refilled two tiles after its last read; codes come from memory, not L2:
 * deeper). */
template <int NP> struct qg_cfg {
    static constexpr int MINB = NP <= 144 ? 2 : 1;
    static constexpr int XS = NP <= 144 ? 4 : 5, CS = NP <= 144 ? 8 : 10;
    static constexpr int XAHEAD = XS - 2, CAHEAD = CS - 2;
    static constexpr int SMEM = XS * NP * 128 + CS * QG_CBYTES + 1024;
};

__global__ void k_qg_probe(int *ok) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    *ok = 1;
#else
    *ok = 0;
#endif
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
__device__ __forceinline__ uint32_t qg_smem(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

__device__ __forceinline__ void qg_cp16(uint32_t dst, const void *src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src) : "memory");
}

__device__ __forceinline__ void qg_cp4(uint32_t dst, const void *src) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(dst), "l"(src) : "memory");
}

__device__ __forceinline__ void qg_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }

template <int N> __device__ __forceinline__ void qg_cp_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ void qg_wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void qg_wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void qg_wg_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}

/* wgmma's shared-memory descriptor of a K-major bf16 tile of 128-byte rows in the
 * 128-byte swizzle (8-row groups 1024 bytes apart; the leading offset is unused). */
__device__ __forceinline__ uint64_t qg_desc(uint32_t addr) {
    uint64_t d = (uint64_t)((addr & 0x3FFFF) >> 4);
    d |= (uint64_t)1 << 16;           // leading byte offset (16 B; ignored in this mode)
    d |= (uint64_t)(1024 >> 4) << 32; // stride byte offset: 8 rows of 128 B
    d |= (uint64_t)1 << 62;           // 128-byte swizzle
    return d;
}

/* Activation tile kt into xst: NP · 128 contiguous bytes, already in wgmma's layout. */
template <int NP> __device__ __forceinline__ void qg_load_x(const qg_args &a, uint8_t *xst, int kt) {
    uint32_t xs = qg_smem(xst) + threadIdx.x * 16;
    const uint8_t *src = (const uint8_t *)a.x + (size_t)kt * (NP * 128) + threadIdx.x * 16;
#pragma unroll
    for (int i = 0; i < (NP * 8 + QG_THREADS - 1) / QG_THREADS; i++)
        if (i * QG_THREADS + (int)threadIdx.x < NP * 8) qg_cp16(xs + i * QG_THREADS * 16, src + i * QG_THREADS * 16);
}

/* Code tile kt of weight rows o0.. into cst: codes (32 B a row), then a word of absmax
 * (nested: the word holding the row's 8-bit code) and the nested scale a row. */
__device__ __forceinline__ void qg_load_codes(const qg_prod &a, int I, uint8_t *cst, int o0, int kt) {
    int tid = threadIdx.x;
    uint32_t cs = qg_smem(cst);
    {
        int r = tid >> 1, h = tid & 1; // 128 rows × 2 chunks
        qg_cp16(cs + (uint32_t)(r * 32 + h * 16),
                a.codes + (size_t)(o0 + r) * (size_t)(I / 2) + (size_t)kt * (QG_BK / 2) + (size_t)h * 16);
    }
    uint32_t ss = cs + QG_CODES;
    size_t nb = (size_t)(I / QG_BK);
    if (tid < QG_BM) {
        size_t b = (size_t)(o0 + tid) * nb + (size_t)kt;
        if (a.nested) qg_cp4(ss + (uint32_t)tid * 4, (const uint8_t *)a.absmax + (b & ~(size_t)3));
        else qg_cp4(ss + (uint32_t)tid * 4, (const float *)a.absmax + b);
    } else if (a.nested) {
        int r = tid - QG_BM;
        size_t b = (size_t)(o0 + r) * nb + (size_t)kt;
        qg_cp4(ss + (uint32_t)(QG_BM + r) * 4, a.absmax2 + (b >> a.b2sh));
    }
}

/* The scales of this thread's rows r0 and r0 + 8 in code tile kt (stage cst). */
__device__ __forceinline__ void qg_scales(const qg_prod &a, int I, const uint8_t *cst, const float *map2, int o0,
                                          int r0, int kt, float &am0, float &am1) {
    const uint32_t *ss = (const uint32_t *)(cst + QG_CODES);
    if (a.nested) {
        size_t nb = (size_t)(I / QG_BK);
        size_t b0 = (size_t)(o0 + r0) * nb + (size_t)kt, b1 = b0 + 8 * nb;
        unsigned j0 = (ss[r0] >> (8 * (b0 & 3))) & 255u, j1 = (ss[r0 + 8] >> (8 * (b1 & 3))) & 255u;
        const float *s2 = (const float *)(ss + QG_BM);
        am0 = __fadd_rn(__fmul_rn(map2[j0], s2[r0]), a.offset);
        am1 = __fadd_rn(__fmul_rn(map2[j1], s2[r0 + 8]), a.offset);
    } else {
        am0 = __uint_as_float(ss[r0]), am1 = __uint_as_float(ss[r0 + 8]);
    }
}

/* The A fragment of k16 step s from code tile cst: rows r0 (am0) and r0 + 8 (am1), k 2c,
 * 2c + 1 from byte c of code word 2s and k 2c + 8, 2c + 9 from byte c of word 2s + 1 of
 * the row (sh = 8c). */
__device__ __forceinline__ void qg_frag(const float *lut, const uint8_t *cst, int r0, float am0, float am1, int s,
                                        unsigned sh, uint32_t *f) {
    uint2 p = *(const uint2 *)(cst + r0 * 32 + 8 * s), q = *(const uint2 *)(cst + (r0 + 8) * 32 + 8 * s);
    uint32_t w0[2] = {p.x, p.y}, w1[2] = {q.x, q.y};
    // the four bytes into one word (selector sh: byte c of the first operand, then of the
    // second), then each nibble's byte offset into the map: 4 · code
    unsigned sel = (sh >> 3) | (((sh >> 3) + 4) << 4);
    uint32_t x = __byte_perm(__byte_perm(w0[0], w1[0], sel), __byte_perm(w0[1], w1[1], sel), 0x5410);
    uint32_t hi = (x >> 2) & 0x3C3C3C3Cu, lo = (x << 2) & 0x3C3C3C3Cu;
    const char *m = (const char *)lut;
#pragma unroll
    for (int k = 0; k < 4; k++) {
        float am = k & 1 ? am1 : am0;
        float v0 = *(const float *)(m + __byte_perm(hi, 0, 0x4440 + k));
        float v1 = *(const float *)(m + __byte_perm(lo, 0, 0x4440 + k));
        __nv_bfloat162 v = __floats2bfloat162_rn(__fmul_rn(v0, am), __fmul_rn(v1, am));
        f[k] = *(uint32_t *)&v;
    }
}
#endif

/* The activations (N, I) float32 as k_qgemm_nf4 reads them: bf16 (rounded as the copy
 * path's conversion rounds), tile kt's NP rows of 64 values at xt + kt·NP·64, each row's
 * 16-byte chunk cc stored at chunk cc ^ (row % 8) (wgmma's 128-byte swizzle), rows from
 * N on zero. One 16-byte chunk a thread. */
__global__ void k_qg_tiles(__nv_bfloat16 *xt, const float *x, int N, int I, int NP) {
    size_t nch = (size_t)(I / QG_BK) * (size_t)NP * 8;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < nch; i += (size_t)gridDim.x * blockDim.x) {
        int cc = (int)(i & 7), r = (int)((i >> 3) % (size_t)NP);
        size_t kt = (i >> 3) / (size_t)NP;
        __nv_bfloat162 v[4];
        if (r < N) {
            const float4 *p = (const float4 *)(x + (size_t)r * (size_t)I + kt * QG_BK + (size_t)cc * 8);
            float4 u = p[0], w = p[1];
            v[0] = __floats2bfloat162_rn(u.x, u.y), v[1] = __floats2bfloat162_rn(u.z, u.w);
            v[2] = __floats2bfloat162_rn(w.x, w.y), v[3] = __floats2bfloat162_rn(w.z, w.w);
        } else {
            v[0] = v[1] = v[2] = v[3] = __floats2bfloat162_rn(0.0f, 0.0f);
        }
        uint4 *dst = (uint4 *)(xt + (kt * (size_t)NP + (size_t)r) * QG_BK) + (cc ^ (r & 7));
        *dst = *(uint4 *)v;
    }
}

template <int NP>
__global__ void __launch_bounds__(QG_THREADS, qg_cfg<NP>::MINB) k_qgemm_nf4(const __grid_constant__ qg_args a) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int QG_XS = qg_cfg<NP>::XS, QG_CS = qg_cfg<NP>::CS;
    constexpr int QG_XAHEAD = qg_cfg<NP>::XAHEAD, QG_CAHEAD = qg_cfg<NP>::CAHEAD;
    extern __shared__ uint8_t qg_dyn[];
    __shared__ float lut[16];
    __shared__ float map2[256];
    uint8_t *xsm = (uint8_t *)(((uintptr_t)qg_dyn + 1023) & ~(uintptr_t)1023); // the swizzle's alignment
    uint8_t *csm = xsm + QG_XS * NP * 128;
    int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    int pi = 0; // which weight of the launch this block's rows belong to
#pragma unroll
    for (int i = 1; i < LC_GEMM_N_MAX; i++)
        if (i < a.np && (int)blockIdx.x >= a.p[i].t0) pi = i;
    const qg_prod &P = a.p[pi];
    int o0 = ((int)blockIdx.x - P.t0) * QG_BM, nk = a.I / QG_BK;
    int t0 = blockIdx.y * a.per, nt = min(a.per, nk - t0);
    if (tid < 16) lut[tid] = a.code[tid];
    if (P.nested) map2[tid] = P.code2[tid];
    // copy groups: the first holds code tiles 0 .. QG_CAHEAD - 1 and activation tile 0,
    // group g activation tile g and (from the loop) code tile g + QG_CAHEAD - QG_XAHEAD:
    // waiting for group t brings both of tile t's
#pragma unroll
    for (int j = 0; j < QG_CAHEAD; j++)
        if (j < nt) qg_load_codes(P, a.I, csm + j * QG_CBYTES, o0, t0 + j);
#pragma unroll
    for (int s = 0; s < QG_XAHEAD; s++) {
        if (s < nt) qg_load_x<NP>(a, xsm + s * NP * 128, t0 + s);
        qg_commit();
    }
    float d[NP / 2]; // set by the first product (scale_d 0)
    int g = lane >> 2, c = lane & 3;
    int r0 = (warp >> 2) * 64 + (warp & 3) * 16 + g; // this thread's weight rows r0, r0 + 8 (of the block's)
    // four fragment buffers: step s's in F[s % 4]; up to 3 products in flight a warpgroup
    // (waiting for at most 2 after each commit frees the buffer of the step before those)
    uint32_t F[4][4] = {};
    float am0, am1;
    unsigned sh = 8u * (unsigned)c;
    qg_cp_wait<QG_XAHEAD - 1>(); // group 0: code tiles 0.. and activation tile 0
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    __syncthreads();
    qg_scales(P, a.I, csm, map2, o0, r0, t0, am0, am1);
    qg_frag(lut, csm, r0, am0, am1, 0, sh, F[0]);
    for (int t = 0; t < nt; t++) {
        if (t > 0) {
            qg_cp_wait<QG_XAHEAD - 1>(); // this thread's copies of tile t (and earlier) are here
            asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); // visible to wgmma's reads
            __syncthreads(); // everyone's copies; tile t - 2's products are done in every warp
        }
        if (t + QG_XAHEAD < nt) qg_load_x<NP>(a, xsm + ((t + QG_XAHEAD) % QG_XS) * NP * 128, t0 + t + QG_XAHEAD);
        if (t + QG_CAHEAD < nt) qg_load_codes(P, a.I, csm + ((t + QG_CAHEAD) % QG_CS) * QG_CBYTES, o0,
                                               t0 + t + QG_CAHEAD);
        qg_commit();
        const uint8_t *cst = csm + (t % QG_CS) * QG_CBYTES, *cnx = csm + ((t + 1) % QG_CS) * QG_CBYTES;
        float bm0 = 0.0f, bm1 = 0.0f; // tile t + 1's scales, read while this tile's products run
        uint64_t desc = qg_desc(qg_smem(xsm + (t % QG_XS) * NP * 128));
#pragma unroll
        for (int s = 0; s < 4; s++) {
            uint32_t *f = F[s];
            qg_wg_fence();
            // the B tile's k16 step s starts 32 B further; the first product overwrites d
            lc_wgmma<NP>::run(d, f[0], f[1], f[2], f[3], desc + (uint64_t)(s * 2), (t | s) != 0);
            qg_wg_commit();
            qg_wg_wait<2>(); // the step two before is done: F[(s + 2) % 4] is free
            uint32_t *done = F[(s + 2) & 3];
            asm volatile("" ::"r"(done[0]), "r"(done[1]), "r"(done[2]), "r"(done[3]) : "memory");
            if (s == 1 && t + 1 < nt) // visible: its copies were in a group waited for above
                qg_scales(P, a.I, cnx, map2, o0, r0, t0 + t + 1, bm0, bm1);
            if (s < 3) qg_frag(lut, cst, r0, am0, am1, s + 1, sh, F[s + 1]);
            else if (t + 1 < nt) qg_frag(lut, cnx, r0, bm0, bm1, 0, sh, F[0]);
        }
        am0 = bm0, am1 = bm1;
    }
    qg_wg_wait<0>();
#pragma unroll
    for (int i = 0; i < NP / 2; i++) asm volatile("" : "+f"(d[i])::"memory");
    // d[4j + 2h + e]: weight row r0 + 8h, activation row 8j + 2c + e
    int o = o0 + r0;
    float b0 = P.bias && !a.ws ? P.bias[o] : 0.0f, b1 = P.bias && !a.ws ? P.bias[o + 8] : 0.0f;
#pragma unroll
    for (int j = 0; j < NP / 8; j++) {
#pragma unroll
        for (int e = 0; e < 2; e++) {
            int n = 8 * j + 2 * c + e;
            if (n >= a.N) continue;
            float v0 = d[4 * j + e], v1 = d[4 * j + 2 + e];
            if (a.ws) {
                float *p = a.ws + P.ws + ((size_t)blockIdx.y * (size_t)a.N + (size_t)n) * (size_t)P.O + (size_t)o;
                p[0] = v0, p[8] = v1;
            } else {
                float *p = P.out + (size_t)n * (size_t)P.O + (size_t)o;
                if (a.acc) v0 += p[0], v1 += p[8];
                p[0] = v0 + b0, p[8] = v1 + b1;
            }
        }
    }
#endif
}

/* Each weight's out (=, +=) its splits' partial sums in order (+ bias): weight
 * blockIdx.y, N·O elements. */
__global__ void k_qgemm_sum(const __grid_constant__ qg_args a, int splits) {
    const qg_prod &P = a.p[blockIdx.y];
    size_t NO = (size_t)a.N * (size_t)P.O;
    const float *ws = a.ws + P.ws;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < NO; i += (size_t)gridDim.x * blockDim.x) {
        float s = ws[i];
        for (int k = 1; k < splits; k++) s += ws[(size_t)k * NO + i];
        if (a.acc) s += P.out[i];
        if (P.bias) s += P.bias[i % (size_t)P.O];
        P.out[i] = s;
    }
}

/* ------------------------------------------------------------ host */

static lc_cuda_qg *qg_state(lc_cuda *c) {
    if (!c->qg) {
        c->qg = (lc_cuda_qg *)calloc(1, sizeof(lc_cuda_qg));
        if (!c->qg) return NULL;
        LC_CK(c, cudaDeviceGetAttribute(&c->qg->sms, cudaDevAttrMultiProcessorCount, c->device));
        if (c->qg->sms < 1) c->qg->sms = 1;
    }
    return c->qg;
}

/* Whether this device runs the sm_90a kernel (one probe launch, never inside a recording). */
static bool qg_device_ok(lc_cuda *c, lc_cuda_qg *g) {
    if (g->probed) return g->ok;
    cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(c->st, &cs) != cudaSuccess || cs != cudaStreamCaptureStatusNone) return false;
    g->probed = 1;
    int *d = NULL, h = 0;
    if (cudaMalloc((void **)&d, sizeof(int)) != cudaSuccess) {
        cudaGetLastError();
        return false;
    }
    k_qg_probe<<<1, 1>>>(d);
    bool ran = cudaGetLastError() == cudaSuccess && cudaMemcpy(&h, d, sizeof h, cudaMemcpyDeviceToHost) == cudaSuccess;
    cudaFree(d);
    cudaGetLastError(); // a card this build has no code for: the copy path, no error left behind
    g->ok = ran && h == 1;
    return g->ok;
}

bool lc_cuda_qgemm_ok(lc_cuda *c, const lc_wt *w, int64_t N) {
    const char *e = getenv("LORAC_CUDA_QGEMM"); // read each call: tests compare both paths
    if ((e && !strcmp(e, "0")) || !w->q || N < 9 || N > 256) return false;
    const lc_wquant *q = &((const lc_cuda_wq *)w->q)->q;
    if (q->fmt != LC_QUANT_NF4 || q->group != QG_BK || w->rows % QG_BM || w->cols % QG_BK || w->rows <= 0 ||
        w->rows > INT32_MAX || w->cols > INT32_MAX)
        return false;
    if (((uintptr_t)w->data & 15) || ((uintptr_t)q->absmax & 3)) return false;
    if (q->nested && (((uintptr_t)q->absmax2 & 3) || q->block2 <= 0 || (q->block2 & (q->block2 - 1)))) return false;
    lc_cuda_qg *g = qg_state(c);
    return g && qg_device_ok(c, g);
}

bool lc_cuda_qgemm_n_ok(lc_cuda *c, int n, const lc_wt *const *w, int64_t N) {
    const char *e = getenv("LORAC_CUDA_QGEMM_N"); // 0: one launch a weight (measurements)
    if ((e && !strcmp(e, "0")) || n < 1 || n > LC_GEMM_N_MAX) return false;
    int64_t rows = 0;
    for (int i = 0; i < n; i++) {
        if (!lc_cuda_qgemm_ok(c, w[i], N) || w[i]->cols != w[0]->cols) return false;
        const lc_wquant *q = &((const lc_cuda_wq *)w[i]->q)->q, *q0 = &((const lc_cuda_wq *)w[0]->q)->q;
        if (memcmp(q->code, q0->code, sizeof q->code)) return false; // one map a launch
        rows += w[i]->rows;
    }
    return rows <= INT32_MAX / 2;
}

/* Grows scratch *p to bytes (outside a recording only: cudaMalloc synchronizes). */
static bool qg_grow(lc_cuda *c, void **p, size_t *cap, size_t bytes, const char *what) {
    cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    LC_CK(c, cudaStreamIsCapturing(c->st, &cs));
    if (cs != cudaStreamCaptureStatusNone) {
        lc_cuda_error(c, __FILE__, __LINE__, "lc_cuda_qgemm", "a scratch would grow while a step is recorded");
        return false;
    }
    LC_CK(c, cudaDeviceSynchronize()); // nothing may still use the old one
    if (*p) LC_CK(c, cudaFree(*p));
    *p = NULL, *cap = 0;
    if (cudaMalloc(p, bytes) != cudaSuccess) {
        *p = NULL;
        lc_cuda_oom(c, bytes, what);
        return false;
    }
    *cap = bytes;
    return true;
}

template <int NP> static void qg_launch(lc_cuda *c, lc_cuda_qg *g, dim3 grid, const qg_args &a) {
    int smem = qg_cfg<NP>::SMEM;
    if (!(g->attr & (1u << (NP / 8 - 1)))) {
        LC_CK(c, cudaFuncSetAttribute(k_qgemm_nf4<NP>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
        g->attr |= 1u << (NP / 8 - 1);
    }
    k_qgemm_nf4<NP><<<grid, QG_THREADS, smem, c->st>>>(a);
}

void lc_cuda_qgemm_n(lc_cuda *c, int n, float *const *out, const float *x, const lc_wt *const *w,
                     const float *const *bias, int64_t N, bool accumulate) {
    LC_PROF(c, "matmul (nf4 codes) N=%lld", N);
    lc_cuda_qg *g = qg_state(c);
    qg_args a;
    memset(&a, 0, sizeof a);
    a.np = n, a.N = (int)N, a.I = (int)w[0]->cols, a.acc = accumulate ? 1 : 0;
    int tiles = 0;
    size_t rows = 0;
    for (int i = 0; i < n; i++) {
        const lc_cuda_wq *d = (const lc_cuda_wq *)w[i]->q;
        const lc_wquant *q = &d->q;
        qg_prod *p = &a.p[i];
        p->codes = (const uint8_t *)w[i]->data, p->absmax = q->absmax, p->absmax2 = (const float *)q->absmax2;
        p->code2 = d->code2, p->offset = q->offset, p->nested = q->nested ? 1 : 0;
        for (p->b2sh = 0; q->nested && (1LL << p->b2sh) < q->block2; p->b2sh++) {}
        p->out = out[i], p->bias = bias ? bias[i] : NULL;
        p->O = (int)w[i]->rows, p->t0 = tiles, p->ws = rows * (size_t)N; // times splits below
        tiles += p->O / QG_BM, rows += (size_t)p->O;
    }
    memcpy(a.code, ((const lc_cuda_wq *)w[0]->q)->q.code, sizeof a.code);
    int NP = (a.N + 7) / 8 * 8; // wgmma's N: the rows rounded up to 8
    int nk = a.I / QG_BK;
    // split the inner dimension while the row tiles leave SMs idle (each split ≥ 4 tiles)
    // two blocks an SM up to 144 rows (qg_cfg)
    int per_sm = NP <= 144 ? 2 : 1;
    int splits = per_sm * g->sms / tiles;
    if (splits > nk / 4) splits = nk / 4;
    const char *sm = getenv("LORAC_CUDA_QGEMM_SPLITS"); // the most splits (measurements)
    if (sm && atoi(sm) >= 1 && splits > atoi(sm)) splits = atoi(sm);
    if (splits < 1) splits = 1;
    a.per = (nk + splits - 1) / splits;
    splits = (nk + a.per - 1) / a.per;
    for (int i = 0; i < n; i++) a.p[i].ws *= (size_t)splits;
    size_t wsb = splits > 1 ? (size_t)splits * (size_t)N * rows * sizeof(float) : 0;
    size_t xtb = (size_t)NP * (size_t)a.I * sizeof(__nv_bfloat16);
    if ((g->ws_cap < wsb && !qg_grow(c, (void **)&g->ws, &g->ws_cap, wsb, "split-K partial sums")) ||
        (g->xt_cap < xtb && !qg_grow(c, (void **)&g->xt, &g->xt_cap, xtb, "activation tiles")))
        return;
    a.ws = splits > 1 ? g->ws : NULL;
    a.x = (const __nv_bfloat16 *)g->xt;
    size_t nch = xtb / 16;
    k_qg_tiles<<<(unsigned)((nch + 255) / 256 < 8192 ? (nch + 255) / 256 : 8192), 256, 0, c->st>>>((__nv_bfloat16 *)g->xt, x, a.N, a.I,
                                                                                                   NP);
    LC_LAUNCHED(c);
    dim3 grid((unsigned)tiles, (unsigned)splits);
    switch (NP / 8) {
#define QG_CASE(k) case k: qg_launch<8 * k>(c, g, grid, a); break;
        QG_CASE(2) QG_CASE(3) QG_CASE(4) QG_CASE(5) QG_CASE(6) QG_CASE(7) QG_CASE(8) QG_CASE(9) QG_CASE(10)
        QG_CASE(11) QG_CASE(12) QG_CASE(13) QG_CASE(14) QG_CASE(15) QG_CASE(16) QG_CASE(17) QG_CASE(18)
        QG_CASE(19) QG_CASE(20) QG_CASE(21) QG_CASE(22) QG_CASE(23) QG_CASE(24) QG_CASE(25) QG_CASE(26)
        QG_CASE(27) QG_CASE(28) QG_CASE(29) QG_CASE(30) QG_CASE(31) QG_CASE(32)
#undef QG_CASE
    }
    LC_LAUNCHED(c);
    if (splits > 1) {
        size_t most = 0; // the largest weight's N·O
        for (int i = 0; i < n; i++) most = (size_t)a.p[i].O > most ? (size_t)a.p[i].O : most;
        most *= (size_t)N;
        unsigned blocks = (unsigned)((most + 255) / 256 < 4096 ? (most + 255) / 256 : 4096);
        k_qgemm_sum<<<dim3(blocks, (unsigned)n), 256, 0, c->st>>>(a, splits);
        LC_LAUNCHED(c);
    }
}

void lc_cuda_qgemm(lc_cuda *c, float *out, const float *x, const lc_wt *w, const float *bias, int64_t N,
                   bool accumulate) {
    lc_cuda_qgemm_n(c, 1, &out, x, &w, &bias, N, accumulate);
}

void lc_cuda_qgemm_free(lc_cuda *c) {
    if (!c->qg) return;
    if (c->qg->ws) cudaFree(c->qg->ws);
    if (c->qg->xt) cudaFree(c->qg->xt);
    free(c->qg);
    c->qg = NULL;
}
