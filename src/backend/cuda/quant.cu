/*
 * quant.cu — quantized weights on the card (NF4 with plain or nested absmax, MLX affine
 * 2/4/8-bit): their bf16 views for the products, and quantized embedding rows.
 *
 * A product over a quantized weight reads a bf16 copy of the whole matrix, made by one
 * dequantization kernel (16-byte stores, the 4-bit map and the nested 8-bit map in
 * shared memory, each block's scale decoded once per 8 values). The copies live in a
 * ring of LORAC_CUDA_DQ_DEPTH buffers (2 to 4, each the size of the largest weight) and
 * are made on a second, non-blocking stream of the lowest priority (graph.cu's step stream
 * has the highest: the copies take the SMs the step's kernels leave): each weight
 * remembers which quantized weight's product followed its own last time, and whether as
 * a forward or an input-gradient product (apart for its forward and its input-gradient
 * product: the adapted blocks' weights come in both passes, in different orders), and
 * when its product
 * is asked for, the depth - 1 weights that followed it along that chain are dequantized
 * into the other buffers right away (those not there already; the buffer filled or read
 * longest ago goes first), so each copy is made while the products and the small ops
 * before its own run (a training step, and decoding, ask for the weights in the same
 * order every time). A wrong guess costs one dequantization, never a wrong result: a
 * buffer is used only for the weight it holds, the products' stream waits for its copy
 * (event), and a buffer is refilled only after the product reading it is done (event).
 * LORAC_CUDA_DQ_PREFETCH=0 dequantizes each weight only when its product comes.
 * Recorded training steps (graph.cu): lc_cuda_quant_capture_fork / _join bring the
 * side stream into the recording and back, the recording starts from buffers treated as
 * empty, and lc_cuda_quant_graph_leave sets the bookkeeping to what the recording left
 * in the buffers after each launch (a replay runs no host code); growing the buffers
 * inside a recording is refused (it needs a synchronize; the first, direct, sighting of
 * a step grows them).
 * Products of up to 8 rows (decoding) over NF4 and affine 4/8-bit weights skip the copy:
 * k_qgemv reads the codes and gives the copy path's values bit for bit
 * (LORAC_CUDA_QGEMV=0: the copy path). Forward products of 9..256 rows over NF4 on
 * sm_90a cards skip it too (qgemm.cu, cuda.cu decides); input gradients still come here.
 *
 * Owns the dequantization kernels and the per-backend state (stream, events, ring;
 * lc_cuda.q), freed by lc_cuda_quant_free. Must not change the numbers: every element is
 * quant.c's float32 value (no fused multiply-adds) rounded once to bf16.
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda.h"

extern "C" {
#include "backend/quant.h"
#include "core/mem.h"
}

#define Q_GRID_STRIDE(i, n) \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

static inline unsigned q_blocks(size_t n) {
    size_t b = (n + 255) / 256;
    if (b > 65535u * 16u) b = 65535u * 16u;
    return b ? (unsigned)b : 1u;
}

/* ------------------------------------------------------------ the weight's fields */

/* What the dequantization kernels read of a quantized weight on the card (by value). */
struct dq_args {
    const void *codes;           // NF4 bytes / affine uint32 words
    const void *scales, *biases; // affine (rows, cols/group) of sdtype
    const void *absmax, *absmax2;
    const float *code2;          // nested map (device)
    float code[16];
    float offset;
    long long group, block2, cols;
    int nf4, nested, bits, sdtype; // sdtype: 0 F32, 1 BF16, 2 F16
    int gsh, b2sh;                 // log2 of group / block2 when powers of two, else -1
};

static int log2_exact(long long v) {
    for (int k = 0; k < 62; k++)
        if (v == 1LL << k) return k;
    return -1;
}

static dq_args dq_of(const lc_wt *w) {
    const lc_cuda_wq *d = (const lc_cuda_wq *)w->q;
    const lc_wquant *q = &d->q;
    dq_args a;
    memset(&a, 0, sizeof a);
    a.codes = w->data, a.scales = q->scales, a.biases = q->biases, a.absmax = q->absmax;
    a.absmax2 = q->absmax2, a.code2 = d->code2, a.offset = q->offset;
    memcpy(a.code, q->code, sizeof a.code);
    a.group = q->group, a.block2 = q->block2, a.cols = w->cols;
    a.nf4 = q->fmt == LC_QUANT_NF4, a.nested = q->nested, a.bits = q->bits;
    a.sdtype = q->sdtype == LC_DT_F32 ? 0 : q->sdtype == LC_DT_BF16 ? 1 : 2;
    a.gsh = log2_exact(a.group), a.b2sh = a.nested ? log2_exact(a.block2) : 0;
    return a;
}

__device__ __forceinline__ float dq_ld(const void *p, int dt, size_t i) {
    if (dt == 0) return ((const float *)p)[i];
    if (dt == 1) return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    return __half2float(((const __half *)p)[i]);
}

/* The scale of NF4 block b (quant.c's nf4_absmax; _rn: no fused multiply-add, as the
 * CPU computes it). */
__device__ __forceinline__ float dq_absmax(const dq_args &a, size_t b) {
    if (!a.nested) return ((const float *)a.absmax)[b];
    unsigned j = ((const uint8_t *)a.absmax)[b];
    return __fadd_rn(__fmul_rn(a.code2[j], ((const float *)a.absmax2)[b / (size_t)a.block2]), a.offset);
}

/* The 4-bit / `bits`-bit code of flat element i. */
__device__ __forceinline__ unsigned dq_code(const dq_args &a, size_t i) {
    if (a.nf4) {
        unsigned byte = ((const uint8_t *)a.codes)[i / 2];
        return i % 2 ? byte & 0xFu : byte >> 4;
    }
    // rows are whole words (cols * bits % 32 == 0), so the flat index finds the word
    size_t per = 32 / (size_t)a.bits;
    uint32_t word = ((const uint32_t *)a.codes)[i / per];
    return (word >> (i % per * (size_t)a.bits)) & ((1u << a.bits) - 1);
}

/* Flat element i as float32, exactly lc_wq_dequant_row's value. Groups never straddle
 * rows (affine: cols % group == 0), so the flat index finds the group too. */
__device__ __forceinline__ float dq_elem(const dq_args &a, const float *lut, size_t i) {
    unsigned q = dq_code(a, i);
    size_t g = i / (size_t)a.group;
    if (a.nf4) return __fmul_rn(lut[q], dq_absmax(a, g));
    return __fadd_rn(__fmul_rn(dq_ld(a.scales, a.sdtype, g), (float)q), dq_ld(a.biases, a.sdtype, g));
}

/* The 4-bit map into shared memory (static indices: a parameter array indexed by a
 * code would go through local memory). Every thread of the block must call it. */
__device__ __forceinline__ void dq_lut(const dq_args &a, float *lut) {
    if (threadIdx.x == 0) {
#pragma unroll
        for (int k = 0; k < 16; k++) lut[k] = a.code[k];
    }
    __syncthreads();
}

/* ------------------------------------------------------------ kernels */

/* dst (n bf16) = flat elements e0 .. e0+n of the weight, one a thread (any shape). */
__global__ void k_dequant_any(__nv_bfloat16 *dst, dq_args a, size_t e0, size_t n) {
    __shared__ float lut[16];
    dq_lut(a, lut);
    Q_GRID_STRIDE(i, n) dst[i] = __float2bfloat16_rn(dq_elem(a, lut, e0 + i));
}

/* Units of 8 elements (one 16-byte bf16 store each); a thread takes DQ_U units 32 apart,
 * so each of its loads is one coalesced 128-byte (NF4, 4-bit) line per warp and each
 * store 512 bytes, with DQ_U independent loads in flight. */
#define DQ_U 4
#define DQ_THREADS 256

/* The codes and scales of unit gu (8 values, flat elements 8·gu ..) of a weight of KIND
 * (0: NF4; 2, 4, 8: affine bits); STREAM loads the codes with the evict-first hint. */
template <int KIND, bool STREAM>
__device__ __forceinline__ void dq_unit_load(const dq_args &a, size_t gu, uint2 &raw, float &s0, float &s1,
                                             unsigned &j8) {
    size_t g = (gu * 8) >> a.gsh;
    raw = make_uint2(0, 0), s0 = s1 = 0.0f, j8 = 0;
    if (KIND == 0 || KIND == 4) raw.x = STREAM ? __ldcs((const uint32_t *)a.codes + gu) : ((const uint32_t *)a.codes)[gu];
    else if (KIND == 8) raw = STREAM ? __ldcs((const uint2 *)a.codes + gu) : ((const uint2 *)a.codes)[gu];
    else raw.x = ((const uint16_t *)a.codes)[gu]; // 2-bit: half a word, little-endian
    if (KIND == 0) {
        if (a.nested) {
            j8 = ((const uint8_t *)a.absmax)[g];
            s1 = ((const float *)a.absmax2)[g >> a.b2sh];
        } else {
            s0 = ((const float *)a.absmax)[g];
        }
    } else {
        s0 = dq_ld(a.scales, a.sdtype, g), s1 = dq_ld(a.biases, a.sdtype, g);
    }
}

/* A unit's 8 values from what dq_unit_load read, exactly lc_wq_dequant_row's (no fused
 * multiply-adds); lut and map2 are the 4-bit and nested maps in shared memory. */
template <int KIND>
__device__ __forceinline__ void dq_unit_values(const dq_args &a, const float *lut, const float *map2, uint2 raw,
                                               float s0, float s1, unsigned j8, float *v) {
    if (KIND == 0) {
        float am = a.nested ? __fadd_rn(__fmul_rn(map2[j8], s1), a.offset) : s0;
#pragma unroll
        for (int b = 0; b < 4; b++) { // bytes 4u..4u+3; the first element in the high nibble
            unsigned byte = (raw.x >> (8 * b)) & 0xFFu;
            v[2 * b] = __fmul_rn(lut[byte >> 4], am);
            v[2 * b + 1] = __fmul_rn(lut[byte & 0xFu], am);
        }
    } else {
#pragma unroll
        for (int e = 0; e < 8; e++) {
            unsigned q;
            if (KIND == 8) q = ((e < 4 ? raw.x : raw.y) >> (8 * (e & 3))) & 0xFFu;
            else if (KIND == 4) q = (raw.x >> (4 * e)) & 0xFu;
            else q = (raw.x >> (2 * e)) & 0x3u;
            v[e] = __fadd_rn(__fmul_rn(s0, (float)q), s1);
        }
    }
}

/* dst (8·nu bf16) = flat elements 8·u0 .. 8·(u0+nu). KIND 0: NF4; 2, 4, 8: affine bits.
 * Needs group % 8 == 0 and group, block2 powers of two (shifts find the scales). The
 * 16-entry map and the nested 256-entry map sit in shared memory. */
template <int KIND>
__global__ void __launch_bounds__(DQ_THREADS) k_dequant_u8(uint4 *dst, dq_args a, size_t u0, unsigned nu) {
    __shared__ float lut[16];
    __shared__ float map2[256];
    if (KIND == 0) {
        if (threadIdx.x < 16) lut[threadIdx.x] = a.code[threadIdx.x & 15];
        if (a.nested) map2[threadIdx.x] = a.code2[threadIdx.x]; // 256 threads
        __syncthreads();
    }
    unsigned lane = threadIdx.x & 31, warp = (blockIdx.x * DQ_THREADS + threadIdx.x) >> 5;
    unsigned base = warp * (32u * DQ_U) + lane;
    // loads first: the codes and each unit's scales
    uint2 raw[DQ_U];
    float s0[DQ_U], s1[DQ_U];
    unsigned j8[DQ_U];
#pragma unroll
    for (int k = 0; k < DQ_U; k++) {
        unsigned u = base + 32u * k;
        raw[k] = make_uint2(0, 0), s0[k] = s1[k] = 0.0f, j8[k] = 0;
        if (u < nu) dq_unit_load<KIND, false>(a, u0 + u, raw[k], s0[k], s1[k], j8[k]);
    }
#pragma unroll
    for (int k = 0; k < DQ_U; k++) {
        unsigned u = base + 32u * k;
        if (u >= nu) continue;
        float v[8];
        dq_unit_values<KIND>(a, lut, map2, raw[k], s0[k], s1[k], j8[k], v);
        uint4 o;
        __nv_bfloat162 p[4];
#pragma unroll
        for (int b = 0; b < 4; b++) p[b] = __floats2bfloat162_rn(v[2 * b], v[2 * b + 1]);
        memcpy(&o, p, sizeof o);
        dst[u] = o;
    }
}

/* Launches the dequantization of flat elements e0 .. e0+n into dst on stream s. */
static void dq_launch(lc_cuda *c, __nv_bfloat16 *dst, const dq_args &a, size_t e0, size_t n, cudaStream_t s) {
    if (!n) return;
    bool fast = (e0 % 8 == 0) && (n % 8 == 0) && n / 8 < ((size_t)1 << 31) && a.group % 8 == 0 && a.gsh >= 0 &&
                a.b2sh >= 0 && (a.nf4 || a.bits == 2 || a.bits == 4 || a.bits == 8);
    if (!fast) {
        k_dequant_any<<<q_blocks(n), 256, 0, s>>>(dst, a, e0, n);
        LC_LAUNCHED(c);
        return;
    }
    unsigned nu = (unsigned)(n / 8);
    unsigned blocks = (nu + DQ_THREADS * DQ_U - 1) / (DQ_THREADS * DQ_U);
    size_t u0 = e0 / 8;
    if (a.nf4) k_dequant_u8<0><<<blocks, DQ_THREADS, 0, s>>>((uint4 *)dst, a, u0, nu);
    else if (a.bits == 4) k_dequant_u8<4><<<blocks, DQ_THREADS, 0, s>>>((uint4 *)dst, a, u0, nu);
    else if (a.bits == 8) k_dequant_u8<8><<<blocks, DQ_THREADS, 0, s>>>((uint4 *)dst, a, u0, nu);
    else k_dequant_u8<2><<<blocks, DQ_THREADS, 0, s>>>((uint4 *)dst, a, u0, nu);
    LC_LAUNCHED(c);
}

/* Rows of a quantized table, dequantized straight to float32 (the CPU's values exactly). */
__global__ void k_embedding_q(float *out, const int32_t *tokens, dq_args a) {
    __shared__ float lut[16];
    dq_lut(a, lut);
    int64_t n = blockIdx.x, C = a.cols;
    size_t row = (size_t)tokens[n] * (size_t)C;
    float *o = out + (size_t)n * C;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) o[c] = dq_elem(a, lut, row + (size_t)c);
}

/* ------------------------------------------------------------ state */

/* A ring of whole-weight bf16 buffers (LORAC_CUDA_DQ_DEPTH of them, 2 to LC_CUDA_DQ_MAX,
 * default 3: measured best with the step stream's priority; 4 gains nothing more):
 * the one the current product reads, and the ones the next weights along the learned
 * order are dequantized into ahead of time on the side stream. */
struct lc_cuda_q {
    cudaStream_t s;                         // the dequantization stream (non-blocking)
    cudaEvent_t ready[LC_CUDA_DQ_MAX];      // buffer b holds holds[b] (recorded on s)
    cudaEvent_t freed[LC_CUDA_DQ_MAX];      // the product over buffer b is done (recorded on the products' stream)
    cudaEvent_t side;                       // s's queued work (the products' stream waits on it around a graph)
    bool capturing;                         // between lc_cuda_quant_capture_fork and _join
    __nv_bfloat16 *buf[LC_CUDA_DQ_MAX];     // the first nbuf allocated
    int nbuf;
    size_t cap;                             // bytes of each buffer
    const lc_cuda_wq *holds[LC_CUDA_DQ_MAX]; // the weight each buffer holds (or is being filled with); NULL: none
    unsigned long long used[LC_CUDA_DQ_MAX], clock; // when each buffer was last filled or read (the victim: the oldest)
    int cur;                                // the buffer of the last product (-1: none yet)
    lc_cuda_wq *last;                       // the weight of the last product
    int last_dx;                            // whether that product was an input gradient
};

static lc_cuda_q *q_state(lc_cuda *c) {
    if (c->q) return c->q;
    lc_cuda_q *q = (lc_cuda_q *)xcalloc(1, sizeof *q);
    LC_CK(c, cudaStreamCreateWithFlags(&q->s, cudaStreamNonBlocking)); // the lowest priority
    for (int b = 0; b < LC_CUDA_DQ_MAX; b++) {
        LC_CK(c, cudaEventCreateWithFlags(&q->ready[b], cudaEventDisableTiming));
        LC_CK(c, cudaEventCreateWithFlags(&q->freed[b], cudaEventDisableTiming));
    }
    LC_CK(c, cudaEventCreateWithFlags(&q->side, cudaEventDisableTiming));
    q->cur = -1;
    c->q = q;
    return q;
}

void lc_cuda_quant_free(lc_cuda *c) {
    lc_cuda_q *q = c->q;
    if (!q) return;
    cudaStreamSynchronize(q->s);
    for (int b = 0; b < LC_CUDA_DQ_MAX; b++) {
        if (q->buf[b]) cudaFree(q->buf[b]);
        cudaEventDestroy(q->ready[b]), cudaEventDestroy(q->freed[b]);
    }
    cudaEventDestroy(q->side);
    cudaStreamDestroy(q->s);
    free(q);
    c->q = NULL;
}

/* Whether dequantizing ahead of time and reusing a buffer's copy are on
 * (LORAC_CUDA_DQ_PREFETCH=0: every product dequantizes its weight when it comes; read
 * each call: tests and the micro-benchmark change it). */
static bool prefetch_on(void) {
    const char *e = getenv("LORAC_CUDA_DQ_PREFETCH");
    return !(e && !strcmp(e, "0"));
}

/* The ring's size, LORAC_CUDA_DQ_DEPTH (2 to LC_CUDA_DQ_MAX; anything else: the default):
 * up to depth - 1 weights are dequantized ahead. Read each call, like prefetch_on. */
#define DQ_DEPTH_DEFAULT 3
static int dq_depth(void) {
    const char *e = getenv("LORAC_CUDA_DQ_DEPTH");
    if (e && e[0] >= '2' && e[0] <= '0' + LC_CUDA_DQ_MAX && !e[1]) return e[0] - '0';
    return DQ_DEPTH_DEFAULT;
}

/* Queues on the side stream: buffer b (once its last product is done) = weight d. */
static void fill(lc_cuda *c, lc_cuda_q *q, int b, const lc_cuda_wq *d) {
    lc_wt w = {d->codes, LC_DT_U8, d->rows, d->cols, &d->q, 0};
    LC_CK(c, cudaStreamWaitEvent(q->s, q->freed[b], 0));
    dq_launch(c, q->buf[b], dq_of(&w), 0, (size_t)d->rows * (size_t)d->cols, q->s);
    LC_CK(c, cudaEventRecord(q->ready[b], q->s));
    q->holds[b] = d, q->used[b] = ++q->clock;
}

/* The buffer among the first n holding d (-1: none). */
static int holder(const lc_cuda_q *q, int n, const lc_cuda_wq *d) {
    for (int b = 0; b < n; b++)
        if (q->holds[b] == d) return b;
    return -1;
}

/* The buffer to refill among the first n: not the current one, holding none of keep[0..nk),
 * empty if one is, else the one filled or read longest ago (one always exists: nk < n
 * and keep[0] is the current buffer's weight). */
static int victim(const lc_cuda_q *q, int n, const lc_cuda_wq *const *keep, int nk) {
    int v = -1;
    for (int b = 0; b < n; b++) {
        if (b == q->cur) continue;
        bool kept = false;
        for (int k = 0; k < nk && !kept; k++) kept = q->holds[b] == keep[k];
        if (kept) continue;
        if (!q->holds[b]) return b;
        if (v < 0 || q->used[b] < q->used[v]) v = b;
    }
    return v >= 0 ? v : (q->cur == 0 ? 1 : 0); // (unreachable: defensive)
}

/* Allocates the ring: n buffers of `bytes` (the old ones freed after a synchronize when
 * they are too small; added ones need none: nothing uses them yet). */
static void grow(lc_cuda *c, lc_cuda_q *q, int n, size_t bytes) {
    if (q->cap < bytes) { // nothing may still use the old buffers
        LC_CK(c, cudaDeviceSynchronize());
        for (int b = 0; b < q->nbuf; b++) {
            if (q->buf[b]) LC_CK(c, cudaFree(q->buf[b]));
            q->buf[b] = NULL, q->holds[b] = NULL;
        }
        q->nbuf = 0, q->cap = bytes, q->cur = -1;
    }
    for (int b = q->nbuf; b < n; b++, q->nbuf++) {
        q->holds[b] = NULL;
        if (cudaMalloc((void **)&q->buf[b], q->cap) != cudaSuccess) {
            q->buf[b] = NULL;
            lc_cuda_oom(c, q->cap, "dequantization buffers");
            return;
        }
    }
}

/* ------------------------------------------------------------ the bf16 view */

lc_wt lc_cuda_dequantized(lc_cuda *c, const lc_wt *w, bool dx) {
    LC_PROF(c, "dequantize", 0);
    lc_cuda_q *q = q_state(c);
    lc_cuda_wq *d = (lc_cuda_wq *)w->q;
    d->codes = w->data, d->rows = w->rows, d->cols = w->cols;
    cudaStream_t main_s = 0;
    LC_BK(c, cublasGetStream(c->blas, &main_s));
    size_t bytes = (size_t)w->rows * (size_t)w->cols * sizeof(__nv_bfloat16);
    bool pf = prefetch_on();
    int n = dq_depth();
    if ((q->cap < bytes || q->nbuf < n) && q->capturing) { // cudaMalloc (and a synchronize): never inside a recording
        lc_cuda_error(c, __FILE__, __LINE__, "lc_cuda_dequantized",
                      "the dequantization buffers would grow while a step is recorded (the step runs directly)");
        lc_wt none = {NULL, LC_DT_BF16, w->rows, w->cols, NULL, 0};
        return none;
    }
    if (q->cap < bytes || q->nbuf < n) grow(c, q, n, bytes);
    if (c->err[0]) {
        lc_wt none = {NULL, LC_DT_BF16, w->rows, w->cols, NULL, 0};
        return none;
    }
    // the last product (queued on main_s by now) releases its buffer
    if (q->cur >= 0) LC_CK(c, cudaEventRecord(q->freed[q->cur], main_s));
    for (int j = n; j < q->nbuf; j++) q->holds[j] = NULL; // a smaller ring than before: its first n
    int b = pf ? holder(q, n, d) : -1; // dequantized ahead of time, or the same weight again
    if (b < 0) {
        const lc_cuda_wq *none = NULL;
        b = victim(q, n, &none, 0);
        fill(c, q, b, d);
    }
    LC_CK(c, cudaStreamWaitEvent(main_s, q->ready[b], 0));
    // learn the order
    if (q->last) q->last->next[q->last_dx] = d, q->last->next_dx[q->last_dx] = dx ? 1 : 0;
    q->last = d, q->last_dx = dx ? 1 : 0;
    q->cur = b, q->used[b] = ++q->clock;
    // start on the n - 1 weights that followed this one last time, each in a buffer
    // holding none of them
    if (pf) {
        const lc_cuda_wq *keep[LC_CUDA_DQ_MAX] = {d};
        int nk = 1;
        const lc_cuda_wq *at = d;
        int k = dx ? 1 : 0;
        for (int step = 1; step < n; step++) {
            const lc_cuda_wq *nx = at->next[k];
            if (!nx) break;
            k = at->next_dx[k], at = nx;
            bool seen = false;
            for (int j = 0; j < nk && !seen; j++) seen = keep[j] == nx;
            if (seen) continue;
            if (holder(q, n, nx) < 0) fill(c, q, victim(q, n, keep, nk), nx);
            keep[nk++] = nx;
        }
    }
    lc_wt v = {q->buf[b], LC_DT_BF16, w->rows, w->cols, NULL, 0};
    return v;
}

void lc_cuda_embedding_q(lc_cuda *c, float *out, const int32_t *tokens, const lc_wt *table, int64_t N) {
    k_embedding_q<<<(unsigned)N, 256, 0, c->st>>>(out, tokens, dq_of(table));
    LC_LAUNCHED(c);
}

/* ------------------------------------------------------------ recorded steps (graph.cu) */

void lc_cuda_quant_graph_enter(lc_cuda *c, cudaStream_t st) {
    if (c->n_wqs == 0) return;
    lc_cuda_q *q = q_state(c);
    LC_CK(c, cudaEventRecord(q->side, q->s)); // a fill queued by a direct product may still run
    LC_CK(c, cudaStreamWaitEvent(st, q->side, 0));
}

void lc_cuda_quant_capture_fork(lc_cuda *c, cudaStream_t st) {
    lc_cuda_q *q = c->q;
    if (!q) return;
    // the recording starts from empty buffers, whatever they hold now; every event it
    // waits on is recorded inside it, and the side stream joins it here
    for (int b = 0; b < LC_CUDA_DQ_MAX; b++) {
        q->holds[b] = NULL, q->used[b] = 0;
        LC_CK(c, cudaEventRecord(q->freed[b], st));
        LC_CK(c, cudaEventRecord(q->ready[b], st));
    }
    q->cur = -1, q->clock = 0;
    LC_CK(c, cudaStreamWaitEvent(q->s, q->freed[0], 0));
    q->capturing = true;
}

void lc_cuda_quant_capture_join(lc_cuda *c, cudaStream_t st, lc_cuda_qsnap *snap) {
    memset(snap, 0, sizeof *snap);
    snap->cur = -1;
    lc_cuda_q *q = c->q;
    if (!q || !q->capturing) return;
    LC_CK(c, cudaEventRecord(q->side, q->s));
    LC_CK(c, cudaStreamWaitEvent(st, q->side, 0));
    q->capturing = false;
    memcpy(snap->holds, q->holds, sizeof snap->holds);
    memcpy(snap->used, q->used, sizeof snap->used);
    snap->clock = q->clock, snap->cur = q->cur, snap->last = q->last, snap->last_dx = q->last_dx;
}

void lc_cuda_quant_graph_leave(lc_cuda *c, cudaStream_t st, const lc_cuda_qsnap *snap) {
    lc_cuda_q *q = c->q;
    if (!q) return;
    q->capturing = false;
    // the events were last recorded inside the recording (unusable outside it) or by its
    // replay's host code, which does not run: every buffer is ready and free once the
    // graph (or what ran on st) is done
    for (int b = 0; b < LC_CUDA_DQ_MAX; b++) {
        LC_CK(c, cudaEventRecord(q->freed[b], st));
        LC_CK(c, cudaEventRecord(q->ready[b], st));
    }
    if (snap) { // what the recording left in the buffers, which every replay leaves too
        memcpy(q->holds, snap->holds, sizeof q->holds);
        memcpy(q->used, snap->used, sizeof q->used);
        q->clock = snap->clock, q->cur = snap->cur, q->last = snap->last, q->last_dx = snap->last_dx;
    } else { // nothing trustworthy: the next product dequantizes
        memset(q->holds, 0, sizeof q->holds);
        q->cur = -1;
    }
}

void lc_cuda_quant_buffers(lc_cuda *c, const void **bufs, size_t *cap) {
    const lc_cuda_q *q = c->q;
    for (int b = 0; b < LC_CUDA_DQ_MAX; b++) bufs[b] = q ? q->buf[b] : NULL;
    *cap = q ? q->cap : 0;
}

/* ------------------------------------------------------------ decoding products */

/* out (N, O) (+)= x (N, I) W^T (+ bias) for N <= 8 rows straight from the codes (NF4,
 * affine 4/8-bit): a warp a weight row, 8 units of 8 values a lane in flight, each unit
 * dequantized as k_dequant_u8 does it and rounded to bf16, then multiplied exactly as
 * cuda.cu's k_gemv_bf16 multiplies the bf16 copy (same units a lane, same order, same
 * expression) — the copy path's values, without writing and re-reading 2 bytes a weight.
 * Decoding reads 0.5 (NF4) bytes a weight instead of 4.5. */
#define QV_WARPS 4
#define QV_U 8

template <int KIND, int NR>
__global__ void __launch_bounds__(QV_WARPS * 32)
    k_qgemv(float *out, const float *x, dq_args a, const float *bias, int O, int I, int acc) {
    __shared__ float lut[16];
    __shared__ float map2[256];
    if (KIND == 0) {
        if (threadIdx.x < 16) lut[threadIdx.x] = a.code[threadIdx.x & 15];
        if (a.nested)
            for (int i = threadIdx.x; i < 256; i += QV_WARPS * 32) map2[i] = a.code2[i];
        __syncthreads();
    }
    int o = blockIdx.x * QV_WARPS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (o >= O) return;
    int nv = I / 8;                 // units of 8 values in the row
    size_t u0 = (size_t)o * (size_t)nv; // the row's first unit
    float s[NR];
#pragma unroll
    for (int n = 0; n < NR; n++) s[n] = 0.0f;
    for (int v0 = 0; v0 < nv; v0 += 32 * QV_U) {
        uint2 raw[QV_U];
        float s0[QV_U], s1[QV_U];
        unsigned j8[QV_U];
#pragma unroll
        for (int k = 0; k < QV_U; k++) {
            int v = v0 + k * 32 + lane;
            raw[k] = make_uint2(0, 0), s0[k] = s1[k] = 0.0f, j8[k] = 0;
            if (v < nv) dq_unit_load<KIND, true>(a, u0 + (size_t)v, raw[k], s0[k], s1[k], j8[k]);
        }
#pragma unroll
        for (int k = 0; k < QV_U; k++) {
            int v = v0 + k * 32 + lane;
            if (v >= nv) break;
            float wv[8], wf[8];
            dq_unit_values<KIND>(a, lut, map2, raw[k], s0[k], s1[k], j8[k], wv);
#pragma unroll
            for (int e = 0; e < 8; e++) wf[e] = __bfloat162float(__float2bfloat16_rn(wv[e]));
#pragma unroll
            for (int n = 0; n < NR; n++) {
                const float4 *xp = (const float4 *)(x + (size_t)n * I) + 2 * v;
                float4 p = __ldg(xp), q = __ldg(xp + 1);
                s[n] += wf[0] * p.x + wf[1] * p.y + wf[2] * p.z + wf[3] * p.w + wf[4] * q.x + wf[5] * q.y +
                        wf[6] * q.z + wf[7] * q.w;
            }
        }
    }
    lc_gemv_store<NR>(s, lane, out, bias, o, O, acc);
}

template <int KIND>
static void qgemv_kind(lc_cuda *c, unsigned grid, int N, float *out, const float *x, const dq_args &a,
                       const float *bias, int O, int I, int acc) {
    switch (N) {
#define QV_CASE(R) case R: k_qgemv<KIND, R><<<grid, QV_WARPS * 32, 0, c->st>>>(out, x, a, bias, O, I, acc); break;
        QV_CASE(1) QV_CASE(2) QV_CASE(3) QV_CASE(4) QV_CASE(5) QV_CASE(6) QV_CASE(7) QV_CASE(8)
#undef QV_CASE
    }
}

bool lc_cuda_qgemv(lc_cuda *c, float *out, const float *x, const lc_wt *w, const float *bias, int64_t N,
                   bool accumulate) {
    const char *e = getenv("LORAC_CUDA_QGEMV"); // read each call: tests compare both paths
    if (e && !strcmp(e, "0")) return false;
    if (N < 1 || N > 8 || w->rows <= 0 || w->cols % 8 || ((uintptr_t)x & 15) || w->rows > INT32_MAX ||
        w->cols > INT32_MAX)
        return false;
    dq_args a = dq_of(w);
    bool ok = a.group % 8 == 0 && a.gsh >= 0 && a.b2sh >= 0 && (a.nf4 || a.bits == 4 || a.bits == 8);
    if (!ok) return false;
    LC_PROF(c, "matmul (codes) N=%lld", N);
    int O = (int)w->rows, I = (int)w->cols, acc = accumulate ? 1 : 0;
    unsigned grid = (unsigned)((O + QV_WARPS - 1) / QV_WARPS);
    if (a.nf4) qgemv_kind<0>(c, grid, (int)N, out, x, a, bias, O, I, acc);
    else if (a.bits == 4) qgemv_kind<4>(c, grid, (int)N, out, x, a, bias, O, I, acc);
    else qgemv_kind<8>(c, grid, (int)N, out, x, a, bias, O, I, acc);
    LC_LAUNCHED(c);
    return true;
}
