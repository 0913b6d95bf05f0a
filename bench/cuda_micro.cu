/*
 * cuda_micro.cu — microbenchmarks of the CUDA backend's pieces on the card, for
 * bench/results/cuda_notes.md: the host cost of a kernel launch, device-to-device copy
 * bandwidth, and the per-call time of the backend's products at the 7B model's shapes
 * (matmul with 1 and 136 rows, the adapters' fp32 products, attention), by events over many
 * calls; `cuda_micro attention` runs the attention rows alone, `cuda_micro lora` the
 * adapters' products at the 8 × 512 row's 4096 rows (default choice against cuBLAS),
 * `cuda_micro overlap` frozen and adapter products on two streams, alone and together,
 * `cuda_micro read` the card's read bandwidth (several launch shapes; the best is decoding's
 * ceiling), `cuda_micro rows` the decoding products' read pattern against it, `cuda_micro
 * dxk` the adapters' input gradient folded into the frozen product as more inner size,
 * `cuda_micro gu16` gate's and up's products with float32 or bf16 out and SwiGLU reading
 * either, `cuda_micro dy` the adapters' gb and du from bf16 dy as two products or one pass
 * (->lora_dy).
 * Built by hand on the development machine (see cuda_notes.md) against build/liblorac.a;
 * prints one table. A benchmark program: prints and exits on errors.
 */
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

extern "C" {
#include "backend/backend.h"
#include "core/error.h"
}
#include "backend/cuda/cuda.h"

__global__ void k_empty(int *p) {
    if (p && threadIdx.x == 1234567) *p = 1;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

#define CK(x)                                                                            \
    do {                                                                                 \
        cudaError_t e_ = (x);                                                            \
        if (e_ != cudaSuccess) {                                                         \
            fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(e_));                   \
            exit(1);                                                                     \
        }                                                                                \
    } while (0)

__global__ void k_fill(__nv_bfloat16 *w, size_t n, unsigned seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        unsigned h = (unsigned)(i * 2654435761u) ^ seed;
        h ^= h >> 13, h *= 0x5bd1e995u, h ^= h >> 15;
        w[i] = __float2bfloat16(((h & 0xffff) / 65536.0f - 0.5f) * 0.04f);
    }
}

__global__ void k_fillf(float *w, size_t n, unsigned seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        unsigned h = (unsigned)(i * 2654435761u) ^ seed;
        h ^= h >> 13, h *= 0x5bd1e995u, h ^= h >> 15;
        w[i] = (h & 0xffff) / 32768.0f - 1.0f;
    }
}

static lc_backend *be;

/* Per-call ms of fn over reps calls, by events. */
template <class F> static double timed(int reps, F fn) {
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    for (int i = 0; i < 5; i++) fn(i);
    CK(cudaEventRecord(a, 0));
    for (int i = 0; i < reps; i++) fn(i);
    CK(cudaEventRecord(b, 0));
    CK(cudaEventSynchronize(b));
    float ms;
    CK(cudaEventElapsedTime(&ms, a, b));
    if (be->sync(be)) {
        fprintf(stderr, "error: %s\n", lc_errmsg());
        exit(1);
    }
    return ms / reps;
}

/* Streams n 16-byte words, U loads in flight a thread, and keeps their XOR (so the loads
 * stay): the card's read bandwidth, the ceiling of batch-1 decoding. */
template <int U> __global__ void k_read(const uint4 *p, size_t n, unsigned *out) {
    unsigned acc = 0;
    size_t step = (size_t)gridDim.x * blockDim.x, i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    for (; i + (U - 1) * step < n; i += U * step) {
        uint4 v[U];
#pragma unroll
        for (int u = 0; u < U; u++) v[u] = __ldcs(p + i + u * step);
#pragma unroll
        for (int u = 0; u < U; u++) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
    }
    for (; i < n; i += step) {
        uint4 v = __ldcs(p + i);
        acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    if (acc == 0x9e3779b9u) *out = acc;
}

/* The decoding products' read pattern without their arithmetic choices: a warp a row of
 * rowv 16-byte words, U loads in flight a lane with the next round issued before this one is
 * used (k_dgemv's pipeline), 4 warps a block. TILED lays a block's 4 rows out chunk by chunk
 * (each warp's 512-byte round beside the other three's), DOT adds k_dgemv's x loads and sums. */
template <int U, bool TILED, bool DOT>
__global__ void __launch_bounds__(128) k_rows(const uint4 *W, int rowv, int nrows, const float *x, float *out) {
    extern __shared__ float pad[]; // only its size: it sets how many blocks a multiprocessor holds
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31, row = blockIdx.x * 4 + w;
    if (row >= nrows) return;
    auto at = [&](int v) -> const uint4 * {
        if (!TILED) return W + (size_t)row * rowv + v;
        size_t g = (size_t)blockIdx.x * 4 * rowv;
        return W + g + (size_t)(v >> 5) * 128 + w * 32 + (v & 31);
    };
    uint4 cur[U], nxt[U];
#pragma unroll
    for (int u = 0; u < U; u++) {
        int v = u * 32 + lane;
        cur[u] = v < rowv ? __ldcs(at(v)) : make_uint4(0, 0, 0, 0);
    }
    float acc = 0.0f;
    unsigned xr = 0;
    for (int v0 = 0; v0 < rowv; v0 += 32 * U) {
#pragma unroll
        for (int u = 0; u < U; u++) {
            int v = v0 + 32 * U + u * 32 + lane;
            nxt[u] = v < rowv ? __ldcs(at(v)) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            int v = v0 + u * 32 + lane;
            if (v >= rowv) break;
            if (DOT) {
                const __nv_bfloat162 *h = (const __nv_bfloat162 *)&cur[u];
                const float4 *xp = (const float4 *)(x + (size_t)v * 8);
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    float4 a = __ldg(xp + e);
                    float2 p = __bfloat1622float2(h[2 * e]), q = __bfloat1622float2(h[2 * e + 1]);
                    acc += p.x * a.x + p.y * a.y + q.x * a.z + q.y * a.w;
                }
            } else {
                xr ^= cur[u].x ^ cur[u].y ^ cur[u].z ^ cur[u].w;
            }
        }
#pragma unroll
        for (int u = 0; u < U; u++) cur[u] = nxt[u];
    }
    if (!DOT) acc = (float)xr;
    for (int o = 16; o; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (lane == 0) out[row] = acc;
}

/* The products' read pattern against the grid-stride read: the pattern over 4 GiB (no
 * launch edges), then launches of one product's size back to back (their edges included). */
static void bench_rows(void) {
    size_t bytes = (size_t)4 << 30, n = bytes / 16;
    uint4 *p;
    unsigned *o;
    float *x, *out;
    CK(cudaMalloc(&p, bytes));
    CK(cudaMalloc(&o, 4));
    CK(cudaMalloc(&x, 14336 * 4));
    CK(cudaMalloc(&out, (size_t)(bytes / 8192) * 4));
    CK(cudaMemset(p, 0, bytes));
    CK(cudaMemset(x, 0, 14336 * 4));
    int sms;
    CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    double ms = timed(10, [&](int) { k_read<4><<<sms * 2, 1024>>>(p, n, o); });
    printf("| grid-stride read, 4 GiB, 2 x 1024 threads a multiprocessor, 4 loads | %.3f TB/s |\n", bytes / (ms * 1e-3) / 1e12);
    ms = timed(10, [&](int) { k_read<2><<<sms * 9, 128>>>(p, n, o); });
    printf("| grid-stride read, 4 GiB, 9 x 128 threads a multiprocessor, 2 loads | %.3f TB/s |\n", bytes / (ms * 1e-3) / 1e12);
    typedef void (*kf)(const uint4 *, int, int, const float *, float *);
    struct { kf f; const char *name; } ks[] = {{k_rows<2, false, false>, "rows, U 2"},
                                              {k_rows<2, true, false>, "rows tiled, U 2"},
                                              {k_rows<2, false, true>, "rows + x sums, U 2"},
                                              {k_rows<2, true, true>, "rows tiled + x sums, U 2"},
                                              {k_rows<4, false, true>, "rows + x sums, U 4"}};
    for (auto &k : ks) CK(cudaFuncSetAttribute(k.f, cudaFuncAttributeMaxDynamicSharedMemorySize, 200 * 1024));
    for (int rowb : {8192, 28672}) {
        int rowv = rowb / 16, nrows = (int)(bytes / rowb) & ~3;
        for (auto &k : ks)
            for (int nb : {8, 9, 12, 16}) {
                size_t sm = (size_t)(225 * 1024 / nb) - 1024;
                int act;
                CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&act, k.f, 128, sm));
                ms = timed(5, [&](int) { k.f<<<nrows / 4, 128, sm>>>(p, rowv, nrows, x, out); });
                printf("| %s, rows of %d bytes over 4 GiB | %d blocks a multiprocessor (%d resident) | %.3f TB/s |\n", k.name,
                       rowb, nb, act, (double)nrows * rowb / (ms * 1e-3) / 1e12);
            }
    }
    // one product's size at a time, launches back to back over rotating stretches (no L2 hits)
    struct { int rows, rowb; const char *name; } pr[] = {{4096, 8192, "o 4096 x 4096"}, {6144, 8192, "q/k/v 6144 x 4096"},
                                                         {28672, 8192, "gate/up 28672 x 4096"}, {4096, 28672, "down 4096 x 14336"}};
    for (auto &q : pr)
        for (int kk : {0, 2})
            for (int nb : {9, 12}) {
                kf f = ks[kk].f;
                size_t one = (size_t)q.rows * q.rowb, sm = (size_t)(225 * 1024 / nb) - 1024;
                int slots = (int)(bytes / one);
                ms = timed(100, [&](int i) {
                    f<<<q.rows / 4, 128, sm>>>(p + (size_t)(i % slots) * (one / 16), q.rowb / 16, q.rows, x, out);
                });
                printf("| %s, %s, launches back to back | %d blocks a multiprocessor | %.2f us | %.3f TB/s |\n", ks[kk].name, q.name,
                       nb, ms * 1e3, one / (ms * 1e-3) / 1e12);
            }
    CK(cudaFree(p));
    CK(cudaFree(o));
    CK(cudaFree(x));
    CK(cudaFree(out));
}

/* The adapters' input-gradient path folded into the frozen one as more inner size: dx = dy W
 * + du aᵀ as one bf16 product [dy | du] · [W ; aᵀ] (K = O + r) against today's two (du aᵀ
 * in float32 / TF32 first, then the frozen product adding to it), at the 8 × 512 row's
 * shapes. Times only (the operands are not laid out for real). */
static void bench_dxk(void) {
    lc_cuda *c = (lc_cuda *)be->impl;
    const int N = 4096;
    bool tf = be->lora_tf32;
    be->lora_tf32 = true; // as training over bf16 weights sets it (lc_model_lora_tf32)
    struct { int O, in, r; const char *name; } sh[] = {{4096, 4096, 16, "o"}, {6144, 4096, 48, "q/k/v (one product)"},
                                                      {28672, 4096, 32, "gate/up (one product)"}, {4096, 14336, 16, "down"}};
    for (auto &q : sh) {
        int K2 = q.O + q.r;
        __nv_bfloat16 *W = (__nv_bfloat16 *)be->alloc(be, (size_t)K2 * q.in * 2), *dy = (__nv_bfloat16 *)be->alloc(be, (size_t)N * K2 * 2);
        float *dx = (float *)be->alloc(be, (size_t)N * q.in * 4), *du = (float *)be->alloc(be, (size_t)N * q.r * 4);
        float *A = (float *)be->alloc(be, (size_t)q.in * q.r * 4);
        k_fill<<<1024, 256>>>(W, (size_t)K2 * q.in, 1);
        k_fill<<<1024, 256>>>(dy, (size_t)N * K2, 2);
        k_fillf<<<1024, 256>>>(du, (size_t)N * q.r, 3);
        k_fillf<<<1024, 256>>>(A, (size_t)q.in * q.r, 4);
        double ta = timed(20, [&](int) { lc_cuda_gemm_bf16(c, false, q.in, N, q.O, W, q.in, dy, q.O, 1.0f, dx, q.in); });
        double tc = timed(20, [&](int) { be->gemm(be, false, true, N, q.in, q.r, 1.0f, du, q.r, A, q.r, 0.0f, dx, q.in); });
        double tb = timed(20, [&](int) { lc_cuda_gemm_bf16(c, false, q.in, N, K2, W, q.in, dy, K2, 0.0f, dx, q.in); });
        double t0 = timed(20, [&](int) { lc_cuda_gemm_bf16(c, false, q.in, N, q.O, W, q.in, dy, q.O, 0.0f, dx, q.in); });
        printf("| dx %s (N %d, O %d, in %d, r %d) | du aT %.1f us + frozen (beta 1) %.1f us = %.1f | one product K %d: %.1f us | frozen alone (beta 0) %.1f us |\n",
               q.name, N, q.O, q.in, q.r, 1e3 * tc, 1e3 * ta, 1e3 * (ta + tc), K2, 1e3 * tb, 1e3 * t0);
        void *all[] = {W, dy, dx, du, A};
        for (void *p : all) be->release(be, p);
    }
    be->lora_tf32 = tf;
}

/* Read bandwidth over a 4 GiB buffer for several launch shapes (the best is the ceiling),
 * and the device-to-device copy's (bytes read plus written). */
static void bench_read(void) {
    size_t bytes = (size_t)4 << 30, n = bytes / 16;
    uint4 *p;
    unsigned *o;
    CK(cudaMalloc(&p, bytes));
    CK(cudaMalloc(&o, 4));
    CK(cudaMemset(p, 1, bytes));
    int sms;
    CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    double best = 0;
    printf("| read, 4 GiB | blocks a multiprocessor | threads | loads in flight | TB/s |\n");
    printf("| --- | --- | --- | --- | --- |\n");
    for (int bpm : {2, 4, 8, 16})
        for (int th : {256, 512, 1024})
            for (int u : {2, 4, 8}) {
                if (bpm * th > 2048) continue;
                dim3 g((unsigned)(sms * bpm)), b((unsigned)th);
                double ms = timed(10, [&](int) {
                    if (u == 2) k_read<2><<<g, b>>>(p, n, o);
                    else if (u == 4) k_read<4><<<g, b>>>(p, n, o);
                    else k_read<8><<<g, b>>>(p, n, o);
                });
                double tb = bytes / (ms * 1e-3) / 1e12;
                if (tb > best) best = tb;
                printf("| | %d | %d | %d | %.3f |\n", bpm, th, u, tb);
            }
    double ms = timed(10, [&](int) { CK(cudaMemcpyAsync(p + n / 2, p, bytes / 2, cudaMemcpyDeviceToDevice, 0)); });
    printf("read ceiling %.3f TB/s: a 14.50 GB bf16 7B token at that rate %.3f ms (%.1f tok/s); copy %.3f TB/s\n", best,
           14.50e9 / (best * 1e12) * 1e3, best * 1e12 / 14.50e9, bytes / (ms * 1e-3) / 1e12);
    CK(cudaFree(p));
    CK(cudaFree(o));
}

/* Attention forward and backward at the recipe's, the 8x512 row's and a 2x1024 shape
 * (Mistral: H 32, KV 8, D 128), inputs uniform in (-1, 1); TFLOP/s counts the causal
 * half: forward 2 products, backward 5 (FlashAttention's count), 2·B·H·D·T²/2 each. */
static void bench_attention(void) {
    for (int T : {68, 512, 1024}) {
        int Bt = T == 68 ? 2 : T == 512 ? 8 : 2, H = 32, KV = 8, D = 128;
        size_t nq = (size_t)Bt * T * H * D, nk = (size_t)Bt * T * KV * D;
        float *q = (float *)be->alloc(be, nq * 4), *k = (float *)be->alloc(be, nk * 4), *v = (float *)be->alloc(be, nk * 4);
        float *o = (float *)be->alloc(be, nq * 4), *lse = (float *)be->alloc(be, (size_t)Bt * H * T * 4);
        float *dq = (float *)be->alloc(be, nq * 4), *dk = (float *)be->alloc(be, nk * 4), *dv = (float *)be->alloc(be, nk * 4);
        k_fillf<<<1024, 256>>>(q, nq, 1);
        k_fillf<<<1024, 256>>>(k, nk, 2);
        k_fillf<<<1024, 256>>>(v, nk, 3);
        double tf = timed(20, [&](int) { be->attention(be, o, lse, q, k, v, Bt, T, T, H, KV, D, 0); });
        double tb = timed(20, [&](int) { be->attention_bwd(be, dq, dk, dv, o, q, k, v, o, lse, Bt, T, H, KV, D); });
        double f = 2.0 * Bt * H * D * (double)T * T / 2;
        printf("| attention B%d T%d | fwd %.1f us (%.1f TFLOP/s) | bwd %.1f us (%.1f TFLOP/s) |\n", Bt, T, 1e3 * tf,
               2 * f / tf / 1e9, 1e3 * tb, 5 * f / tb / 1e9);
        // the bf16 ops training runs (q, k, v and out kept as bf16; dout float32)
        void *qb = be->alloc(be, nq * 2), *kb = be->alloc(be, nk * 2), *vb = be->alloc(be, nk * 2);
        void *ob = be->alloc(be, nq * 2);
        be->to_bf16(be, qb, q, nq), be->to_bf16(be, kb, k, nk), be->to_bf16(be, vb, v, nk);
        tf = timed(20, [&](int) { be->attention_b(be, ob, lse, qb, kb, vb, Bt, T, H, KV, D); });
        tb = timed(20, [&](int) { be->attention_bwd_b(be, dq, dk, dv, o, qb, kb, vb, ob, lse, Bt, T, H, KV, D); });
        printf("| attention_b B%d T%d | fwd %.1f us (%.1f TFLOP/s) | bwd %.1f us (%.1f TFLOP/s) |\n", Bt, T,
               1e3 * tf, 2 * f / tf / 1e9, 1e3 * tb, 5 * f / tb / 1e9);
        void *all[] = {q, k, v, o, lse, dq, dk, dv, qb, kb, vb, ob};
        for (void *p : all) be->release(be, p);
    }
}

/* The adapters' six float32 products (rank 16) at the 8 × 512 row's 4096 rows, for each
 * width the model has (q/o 4096, k/v 1024 out, gate/up/down 14336), through cuBLAS and
 * with lora_gemm.cu's many-rows choice (default) and through cuBLAS alone
 * (LORAC_CUDA_LORA_MANY=0), with the memory floor: the bytes each must move at 3.35 TB/s. */
static void bench_lora_rows(void) {
    const int M = 4096, r = 16, widths[] = {1024, 4096, 14336};
    float *x = (float *)be->alloc(be, (size_t)M * 14336 * 4), *y = (float *)be->alloc(be, (size_t)M * 14336 * 4);
    float *A = (float *)be->alloc(be, (size_t)14336 * r * 4), *Bm = (float *)be->alloc(be, (size_t)r * 14336 * 4);
    float *u = (float *)be->alloc(be, (size_t)M * r * 4), *g = (float *)be->alloc(be, (size_t)14336 * r * 4);
    k_fillf<<<1024, 256>>>(x, (size_t)M * 14336, 1);
    k_fillf<<<1024, 256>>>(y, (size_t)M * 14336, 2);
    k_fillf<<<1024, 256>>>(A, (size_t)14336 * r, 3);
    k_fillf<<<1024, 256>>>(Bm, (size_t)14336 * r, 4);
    k_fillf<<<1024, 256>>>(u, (size_t)M * r, 5);
    const char *ways[] = {"0", ""};
    for (int w : widths) {
        double fl = (double)M * w * 4 / 3.35e6; // us to move one M × w float32 matrix once
        for (int k = 0; k < 2; k++) {
            if (*ways[k]) setenv("LORAC_CUDA_LORA_MANY", ways[k], 1);
            else unsetenv("LORAC_CUDA_LORA_MANY");
            double t1 = timed(50, [&](int) { be->gemm(be, false, false, M, r, w, 1.0f, x, w, A, r, 0.0f, u, r); });
            double t2 = timed(50, [&](int) { be->gemm(be, false, false, M, w, r, 2.0f, u, r, Bm, w, 1.0f, y, w); });
            double t3 = timed(50, [&](int) { be->gemm(be, true, false, r, w, M, 2.0f, u, r, y, w, 0.0f, g, w); });
            double t4 = timed(50, [&](int) { be->gemm(be, false, true, M, r, w, 2.0f, y, w, Bm, w, 0.0f, u, r); });
            double t5 = timed(50, [&](int) { be->gemm(be, true, false, w, r, M, 1.0f, x, w, u, r, 0.0f, g, r); });
            double t6 = timed(50, [&](int) { be->gemm(be, false, true, M, w, r, 1.0f, u, r, A, r, 1.0f, x, w); });
            printf("| LoRA M=%d width %d, %s | u=xa %.1f | out+=sub %.1f | gb %.1f | du %.1f | ga %.1f | dx+= %.1f us |"
                   " floor %.0f / %.0f us (read / read+write) |\n",
                   M, w, k ? "default" : "cuBLAS", 1e3 * t1, 1e3 * t2, 1e3 * t3, 1e3 * t4, 1e3 * t5, 1e3 * t6, fl,
                   2 * fl);
        }
    }
    unsetenv("LORAC_CUDA_LORA_MANY");
    void *all[] = {x, y, A, Bm, u, g};
    for (void *p : all) be->release(be, p);
}

/* The adapters' products at the 8 x 512 row's shapes (4096 rows, rank 16; q/k/v grouped 48
 * wide) that the step's profile showed far over their bytes, each way the backend can run
 * it: cuBLAS on TF32 or float32 (->gemm with lora_tf32 on / off), bf16 products (->gemm_b),
 * and split or padded to another width. */
static void bench_lora_shapes(void) {
    const int M = 4096;
    size_t big = (size_t)M * 14336;
    float *x = (float *)be->alloc(be, big * 4), *y = (float *)be->alloc(be, big * 4);
    __nv_bfloat16 *xb = (__nv_bfloat16 *)be->alloc(be, big * 2);
    float *A = (float *)be->alloc(be, (size_t)14336 * 64 * 4), *u = (float *)be->alloc(be, (size_t)M * 64 * 4);
    float *g = (float *)be->alloc(be, (size_t)14336 * 64 * 4);
    k_fillf<<<1024, 256>>>(x, big, 1);
    k_fillf<<<1024, 256>>>(y, big, 2);
    k_fill<<<1024, 256>>>(xb, big, 3);
    k_fillf<<<1024, 256>>>(A, (size_t)14336 * 64, 4);
    k_fillf<<<1024, 256>>>(u, (size_t)M * 64, 5);
    bool tf = be->lora_tf32;
    auto row = [&](const char *what, double mb, std::initializer_list<std::pair<const char *, double>> v) {
        printf("| %s | floor %.1f us |", what, mb / 3.0e6);
        for (auto &e : v) printf(" %s %.1f |", e.first, 1e3 * e.second);
        printf("\n");
    };
    auto T = [&](bool t32, auto fn) {
        be->lora_tf32 = t32;
        double ms = timed(40, fn);
        be->lora_tf32 = tf;
        return ms;
    };
    row("o: u = x a, x float32 (M4096 N16 K4096)", 64e6,
        {{"tf32", T(true, [&](int) { be->gemm(be, false, false, M, 16, 4096, 1.0f, x, 4096, A, 16, 0.0f, u, 16); })},
         {"fp32", T(false, [&](int) { be->gemm(be, false, false, M, 16, 4096, 1.0f, x, 4096, A, 16, 0.0f, u, 16); })},
         {"bf16", T(true, [&](int) {
              be->gemm_b(be, false, false, M, 16, 4096, 1.0f, x, 4096, false, A, 16, false, 0.0f, u, 16);
          })}});
    row("q/k/v: u = xn16 a, 48 wide (M4096 N48 K4096)", 32e6,
        {{"N48", T(true, [&](int) {
              be->gemm_b(be, false, false, M, 48, 4096, 1.0f, xb, 4096, true, A, 48, false, 0.0f, u, 48);
          })},
         {"3xN16", T(true, [&](int) {
              for (int j = 0; j < 3; j++)
                  be->gemm_b(be, false, false, M, 16, 4096, 1.0f, xb, 4096, true, A + 16 * j, 48, false, 0.0f,
                             u + 16 * j, 48);
          })},
         {"N32+N16", T(true, [&](int) {
              be->gemm_b(be, false, false, M, 32, 4096, 1.0f, xb, 4096, true, A, 48, false, 0.0f, u, 48);
              be->gemm_b(be, false, false, M, 16, 4096, 1.0f, xb, 4096, true, A + 32, 48, false, 0.0f, u + 32, 48);
          })},
         {"N64", T(true, [&](int) {
              be->gemm_b(be, false, false, M, 64, 4096, 1.0f, xb, 4096, true, A, 64, false, 0.0f, u, 64);
          })},
         {"N32", T(true, [&](int) {
              be->gemm_b(be, false, false, M, 32, 4096, 1.0f, xb, 4096, true, A, 32, false, 0.0f, u, 32);
          })}});
    row("q/k/v: dx = du a^T, K 48 (M4096 N4096 K48)", 64e6,
        {{"tf32", T(true, [&](int) { be->gemm(be, false, true, M, 4096, 48, 1.0f, u, 48, A, 48, 0.0f, y, 4096); })},
         {"fp32", T(false, [&](int) { be->gemm(be, false, true, M, 4096, 48, 1.0f, u, 48, A, 48, 0.0f, y, 4096); })},
         {"K32+K16", T(true, [&](int) {
              be->gemm(be, false, true, M, 4096, 32, 1.0f, u, 48, A, 48, 0.0f, y, 4096);
              be->gemm(be, false, true, M, 4096, 16, 1.0f, u + 32, 48, A + 32, 48, 1.0f, y, 4096);
          })},
         {"K64", T(true, [&](int) { be->gemm(be, false, true, M, 4096, 64, 1.0f, u, 64, A, 64, 0.0f, y, 4096); })},
         {"K32", T(true, [&](int) { be->gemm(be, false, true, M, 4096, 32, 1.0f, u, 32, A, 32, 0.0f, y, 4096); })},
         {"bf16", T(true, [&](int) {
              be->gemm_b(be, false, true, M, 4096, 48, 1.0f, u, 48, false, A, 48, false, 0.0f, y, 4096);
          })}});
    unsetenv("LORAC_CUDA_LORA_MANY");
    double d1 = T(true, [&](int) { be->gemm(be, false, true, M, 14336, 16, 1.0f, u, 16, A, 16, 0.0f, y, 14336); });
    double d3 = T(false, [&](int) { be->gemm(be, false, true, M, 14336, 16, 1.0f, u, 16, A, 16, 0.0f, y, 14336); });
    setenv("LORAC_CUDA_LORA_MANY", "0", 1);
    double d2 = T(true, [&](int) { be->gemm(be, false, true, M, 14336, 16, 1.0f, u, 16, A, 16, 0.0f, y, 14336); });
    double d4 = T(false, [&](int) { be->gemm(be, false, true, M, 14336, 16, 1.0f, u, 16, A, 16, 0.0f, y, 14336); });
    unsetenv("LORAC_CUDA_LORA_MANY");
    row("down: dx = du a^T (M4096 N14336 K16)", 235e6,
        {{"default", d1}, {"default fp32", d3}, {"cuBLAS tf32", d2}, {"cuBLAS fp32", d4}});
    row("gate/up: gb = s u^T dy16 (M16 N14336 K4096)", 117e6,
        {{"bf16", T(true, [&](int) {
              be->gemm_b(be, true, false, 16, 14336, M, 2.0f, u, 16, false, xb, 14336, true, 0.0f, g, 14336);
          })},
         {"tf32 (float32 dy)", T(true, [&](int) {
              be->gemm(be, true, false, 16, 14336, M, 2.0f, u, 16, y, 14336, 0.0f, g, 14336);
          })}});
    row("q/o/down: gb = s u^T dy16 (M16 N4096 K4096)", 32e6,
        {{"bf16", T(true, [&](int) {
              be->gemm_b(be, true, false, 16, 4096, M, 2.0f, u, 16, false, xb, 4096, true, 0.0f, g, 4096);
          })},
         {"tf32 (float32 dy)", T(true, [&](int) {
              be->gemm(be, true, false, 16, 4096, M, 2.0f, u, 16, y, 4096, 0.0f, g, 4096);
          })}});
    row("down: u = h16 a (M4096 N16 K14336)", 117e6,
        {{"bf16", T(true, [&](int) {
              be->gemm_b(be, false, false, M, 16, 14336, 1.0f, xb, 14336, true, A, 16, false, 0.0f, u, 16);
          })}});
    row("down: ga = h^T du, h float32 (M14336 N16 K4096)", 235e6,
        {{"tf32", T(true, [&](int) { be->gemm(be, true, false, 14336, 16, M, 1.0f, x, 14336, u, 16, 0.0f, g, 16); })},
         {"fp32", T(false, [&](int) { be->gemm(be, true, false, 14336, 16, M, 1.0f, x, 14336, u, 16, 0.0f, g, 16); })},
         {"bf16 (h16)", T(true, [&](int) {
              be->gemm_b(be, true, false, 14336, 16, M, 1.0f, xb, 14336, true, u, 16, false, 0.0f, g, 16);
          })}});
    void *all[] = {x, y, xb, A, u, g};
    for (void *p : all) be->release(be, p);
}

/* Whether the adapters' weight-gradient products (memory-bound) can run beside the frozen
 * bf16 products (compute-bound) on a second stream: one 8 × 512 block's gate/up input
 * gradients (two products 4096 × 4096 × 14336, from bf16 dy) on one stream, the adapters'
 * gb and ga of gate, up, q and o (rank 16, TF32 / bf16 as the model runs them) on another
 * (a second backend: its own cuBLAS handle and scratch), alone and together, with the
 * second stream at lower, equal and higher priority. */
static void bench_overlap(void) {
    const int N = 4096, C = 4096, I = 14336, r = 16;
    lc_backend *be2 = lc_backend_cuda_new(0);
    if (!be2) {
        fprintf(stderr, "error: %s\n", lc_errmsg());
        exit(1);
    }
    lc_cuda *c1 = (lc_cuda *)be->impl, *c2 = (lc_cuda *)be2->impl;
    __nv_bfloat16 *W = (__nv_bfloat16 *)be->alloc(be, (size_t)2 * I * C * 2);
    __nv_bfloat16 *dyb = (__nv_bfloat16 *)be->alloc(be, (size_t)2 * N * I * 2);
    __nv_bfloat16 *xb = (__nv_bfloat16 *)be->alloc(be, (size_t)N * C * 2);
    float *dx = (float *)be->alloc(be, (size_t)N * C * 4);
    float *y = (float *)be2->alloc(be2, (size_t)N * C * 4), *x = (float *)be2->alloc(be2, (size_t)N * C * 4);
    float *u = (float *)be2->alloc(be2, (size_t)N * 64 * 4), *du = (float *)be2->alloc(be2, (size_t)N * 64 * 4);
    float *g = (float *)be2->alloc(be2, (size_t)I * 64 * 4);
    k_fill<<<1024, 256>>>(W, (size_t)2 * I * C, 1);
    k_fill<<<1024, 256>>>(dyb, (size_t)2 * N * I, 2);
    k_fill<<<1024, 256>>>(xb, (size_t)N * C, 3);
    k_fillf<<<1024, 256>>>(y, (size_t)N * C, 4);
    k_fillf<<<1024, 256>>>(x, (size_t)N * C, 5);
    k_fillf<<<1024, 256>>>(u, (size_t)N * 64, 6);
    k_fillf<<<1024, 256>>>(du, (size_t)N * 64, 7);
    CK(cudaDeviceSynchronize());
    be2->lora_tf32 = true;
    auto G = [&]() { // gate's and up's dx products, accumulating
        for (int j = 0; j < 2; j++)
            lc_cuda_gemm_bf16(c1, false, C, N, I, W + (size_t)j * I * C, C, dyb + (size_t)j * N * I, I, 1.0f, dx, C);
    };
    auto A = [&]() { // gb, ga of gate and up (bf16 dy, bf16 xn), of q and o (float32, TF32)
        for (int j = 0; j < 2; j++)
            be2->gemm_b(be2, true, false, r, I, N, 1.0f, u, r, false, dyb + (size_t)j * N * I, I, true, 0.0f, g, I);
        be2->gemm_b(be2, true, false, C, 2 * r, N, 1.0f, xb, C, true, du, 2 * r, false, 0.0f, g, 2 * r);
        for (int j = 0; j < 2; j++) {
            be2->gemm(be2, true, false, r, C, N, 1.0f, u, r, y, C, 0.0f, g, C);
            be2->gemm(be2, true, false, C, r, N, 1.0f, x, C, du, r, 0.0f, g, r);
        }
    };
    G(), A(); // first-use tuning on the legacy stream
    CK(cudaDeviceSynchronize());
    int lo, hi;
    CK(cudaDeviceGetStreamPriorityRange(&lo, &hi));
    cudaStream_t s1, s2[3];
    int mid = (lo + hi) / 2, pr[3] = {lo, mid, hi}; // greater priorities are numerically lower
    const char *pn[3] = {"lower", "equal", "higher"};
    CK(cudaStreamCreateWithPriority(&s1, cudaStreamNonBlocking, mid));
    for (int v = 0; v < 3; v++) CK(cudaStreamCreateWithPriority(&s2[v], cudaStreamNonBlocking, pr[v]));
    printf("stream priorities %d (least) .. %d (greatest); the frozen products' stream %d\n", lo, hi, mid);
    cudaEvent_t e0, e1, f;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    CK(cudaEventCreateWithFlags(&f, cudaEventDisableTiming));
    const int reps = 10;
    for (int round = 0; round < 3; round++)
        for (int v = 0; v < 3; v++) {
            c1->st = s1, cublasSetStream(c1->blas, s1);
            c2->st = s2[v], cublasSetStream(c2->blas, s2[v]);
            float tg, ta, tb;
            CK(cudaEventRecord(e0, s1));
            for (int i = 0; i < reps; i++) G();
            CK(cudaEventRecord(e1, s1));
            CK(cudaEventSynchronize(e1));
            CK(cudaEventElapsedTime(&tg, e0, e1));
            CK(cudaEventRecord(e0, s2[v]));
            for (int i = 0; i < reps; i++) A();
            CK(cudaEventRecord(e1, s2[v]));
            CK(cudaEventSynchronize(e1));
            CK(cudaEventElapsedTime(&ta, e0, e1));
            CK(cudaEventRecord(e0, s1));
            CK(cudaStreamWaitEvent(s2[v], e0, 0));
            for (int i = 0; i < reps; i++) G(), A();
            CK(cudaEventRecord(f, s2[v]));
            CK(cudaStreamWaitEvent(s1, f, 0));
            CK(cudaEventRecord(e1, s1));
            CK(cudaEventSynchronize(e1));
            CK(cudaEventElapsedTime(&tb, e0, e1));
            if (be->sync(be) || be2->sync(be2)) {
                fprintf(stderr, "error: %s\n", lc_errmsg());
                exit(1);
            }
            printf("| overlap, second stream %s priority | frozen %.3f ms | adapters %.3f ms | sum %.3f | together "
                   "%.3f ms | adapters hidden %.0f%% |\n",
                   pn[v], tg / reps, ta / reps, (tg + ta) / reps, tb / reps, 100.0 * (tg + ta - tb) / ta);
        }
    c1->st = 0, cublasSetStream(c1->blas, 0);
    c2->st = 0, cublasSetStream(c2->blas, 0);
    void *all1[] = {W, dyb, xb, dx};
    for (void *p : all1) be->release(be, p);
    void *all2[] = {y, x, u, du, g};
    for (void *p : all2) be2->release(be2, p);
    be2->free(be2);
}

/* Gate's and up's products with float32 out against bf16 out (lc_cuda_gemm_bf16o, the
 * heuristic's pick, or the tuned one with LORAC_CUDA_TUNE=1), and SwiGLU with the adapters
 * folded in reading float32 gate/up (packing into gu) against reading gu's bf16 in place. */
static void bench_gu16(void) {
    lc_cuda *c = (lc_cuda *)be->impl;
    const int C = 4096, I = 14336, r = 16;
    int rows[] = {4096, 136};
    for (int N : rows) {
        __nv_bfloat16 *W = (__nv_bfloat16 *)be->alloc(be, (size_t)I * C * 2);
        __nv_bfloat16 *x = (__nv_bfloat16 *)be->alloc(be, (size_t)N * C * 2);
        float *g = (float *)be->alloc(be, (size_t)N * I * 4), *u = (float *)be->alloc(be, (size_t)N * I * 4);
        __nv_bfloat16 *gu = (__nv_bfloat16 *)be->alloc(be, (size_t)N * I * 4);
        __nv_bfloat16 *hb = (__nv_bfloat16 *)be->alloc(be, (size_t)N * I * 2);
        float *ug = (float *)be->alloc(be, (size_t)N * r * 4), *uu = (float *)be->alloc(be, (size_t)N * r * 4);
        float *bg = (float *)be->alloc(be, (size_t)r * I * 4), *bu = (float *)be->alloc(be, (size_t)r * I * 4);
        k_fill<<<1024, 256>>>(W, (size_t)I * C, 1);
        k_fill<<<1024, 256>>>(x, (size_t)N * C, 2);
        k_fillf<<<1024, 256>>>(ug, (size_t)N * r, 3);
        k_fillf<<<1024, 256>>>(uu, (size_t)N * r, 4);
        k_fillf<<<1024, 256>>>(bg, (size_t)r * I, 5);
        k_fillf<<<1024, 256>>>(bu, (size_t)r * I, 6);
        double t32 = timed(20, [&](int) { lc_cuda_gemm_bf16(c, true, I, N, C, W, C, x, C, 0.0f, g, I); });
        double t16 = timed(20, [&](int) { lc_cuda_gemm_bf16o(c, true, I, N, C, W, C, x, C, gu, I); });
        lc_cuda_gemm_bf16(c, true, I, N, C, W, C, x, C, 0.0f, u, I);
        double s32 = timed(20, [&](int) { be->swiglu_lora(be, NULL, gu, g, u, N, I, ug, bg, uu, bu, r, 2.0f, hb); });
        double s16 = timed(20, [&](int) { be->swiglu_lora(be, NULL, gu, NULL, NULL, N, I, ug, bg, uu, bu, r, 2.0f, hb); });
        double s8 = timed(20, [&](int) { be->swiglu_lora(be, NULL, gu, NULL, NULL, N, I, NULL, NULL, NULL, NULL, r, 2.0f, hb); });
        printf("| gate/up N %d (O %d, in %d) | product float32 out %.1f us, bf16 out %.1f us "
               "| swiglu_lora float32 in %.1f us, bf16 in place %.1f us, the pair only (no adapter) %.1f us |\n",
               N, I, C, 1e3 * t32, 1e3 * t16, 1e3 * s32, 1e3 * s16, 1e3 * s8);
        // the adapters folded into the product as more inner size: [x | u] [W | s b^T]^T over
        // K = C + xk columns of rows ld apart (W's and x's), bf16 out
        const int fk[][2] = {{C, C}, {C + 2 * r, C + 2 * r}, {C + 2 * r, C + 64}, {C + 64, C + 64}, {C + 2 * r, C + 128}};
        __nv_bfloat16 *Wf = (__nv_bfloat16 *)be->alloc(be, (size_t)I * (C + 128) * 2);
        __nv_bfloat16 *xf = (__nv_bfloat16 *)be->alloc(be, (size_t)N * (C + 128) * 2);
        k_fill<<<1024, 256>>>(Wf, (size_t)I * (C + 128), 7);
        k_fill<<<1024, 256>>>(xf, (size_t)N * (C + 128), 8);
        printf("| folded, N %d |", N);
        for (auto &f : fk) {
            double t = timed(20, [&](int) { lc_cuda_gemm_bf16o(c, true, I, N, f[0], Wf, f[1], xf, f[1], gu, I); });
            printf(" K %d ld %d: %.1f us |", f[0], f[1], 1e3 * t);
        }
        printf("\n");
        be->release(be, Wf), be->release(be, xf);
        void *all[] = {W, x, g, u, gu, hb, ug, uu, bg, bu};
        for (void *p : all) be->release(be, p);
    }
}

/* The adapters' gb = s u^T dy and du = s dy b^T from bf16 dy at the 8 × 512 row's shapes
 * (4096 rows, rank 16): two ->gemm_b calls an adapter against one ->lora_dy for the group
 * (q/k/v's dy interleaved in rows with 48 spare columns; gate and up; o alone). Floor: dy
 * read once at 3.0 TB/s. Several copies of dy rotate so L2 does not hold the one read. */
static void bench_lora_dy(void) {
    const int64_t M = 4096, r = 16;
    struct grp {
        const char *name;
        int n;
        int64_t o[3], ldy;
    } gs[] = {{"q/k/v (dq|dk|dv rows + 48)", 3, {4096, 1024, 1024}, 6144 + 48},
              {"gate/up", 2, {14336, 14336, 0}, 0},
              {"o (dres + 16)", 1, {4096, 0, 0}, 4096 + 16}};
    const int ROT = 3;
    for (auto &g : gs) {
        size_t per = 0; // bf16 values of one copy of the group's dy
        for (int i = 0; i < g.n; i++) per += (size_t)M * (g.ldy ? 0 : g.o[i]);
        if (g.ldy) per = (size_t)M * g.ldy;
        __nv_bfloat16 *y = (__nv_bfloat16 *)be->alloc(be, per * 2 * ROT);
        k_fill<<<1024, 256>>>(y, per * ROT, 7);
        float *u[3], *b[3], *gb[3], *du[3];
        double mb = 0;
        for (int i = 0; i < g.n; i++) {
            u[i] = (float *)be->alloc(be, (size_t)M * r * 4), b[i] = (float *)be->alloc(be, (size_t)r * g.o[i] * 4);
            gb[i] = (float *)be->alloc(be, (size_t)r * g.o[i] * 4), du[i] = (float *)be->alloc(be, (size_t)M * r * 4);
            k_fillf<<<256, 256>>>(u[i], (size_t)M * r, 8 + i);
            k_fillf<<<256, 256>>>(b[i], (size_t)r * g.o[i], 11 + i);
            mb += (double)M * g.o[i] * 2;
        }
        auto dyp = [&](int rot, int i) {
            __nv_bfloat16 *base = y + (size_t)rot * per;
            if (g.ldy) {
                int64_t off = 0;
                for (int j = 0; j < i; j++) off += g.o[j];
                return base + off;
            }
            size_t off = 0;
            for (int j = 0; j < i; j++) off += (size_t)M * g.o[j];
            return base + off;
        };
        auto two_of = [&](int rot) { // two ->gemm_b products an adapter
            for (int i = 0; i < g.n; i++) {
                int64_t ly = g.ldy ? g.ldy : g.o[i];
                be->gemm_b(be, true, false, r, g.o[i], M, 2.0f, u[i], r, false, dyp(rot, i), ly, true, 0.0f, gb[i],
                           g.o[i]);
                be->gemm_b(be, false, true, M, r, g.o[i], 2.0f, dyp(rot, i), ly, true, b[i], g.o[i], false, 0.0f,
                           du[i], r);
            }
        };
        auto one_of = [&](int rot) { // one ->lora_dy for the group
            lc_dy_args a[3];
            for (int i = 0; i < g.n; i++) {
                lc_dy_args d = {dyp(rot, i), g.ldy ? g.ldy : g.o[i], g.o[i], u[i], b[i], gb[i], du[i], r};
                a[i] = d;
            }
            if (!be->lora_dy(be, g.n, M, r, 2.0f, a)) {
                fprintf(stderr, "lora_dy declined %s\n", g.name);
                exit(1);
            }
        };
        double two = timed(30, [&](int it) { two_of(it % ROT); });
        double one = timed(30, [&](int it) { one_of(it % ROT); });
        // as in the step: dy just written (a copy into it first, its time taken off)
        __nv_bfloat16 *src = y + per; // another copy of the same size
        auto wr = [&]() { CK(cudaMemcpyAsync(y, src, per * 2, cudaMemcpyDeviceToDevice, 0)); };
        double cp = timed(30, [&](int) { wr(); });
        double two_w = timed(30, [&](int) { wr(), two_of(0); });
        double one_w = timed(30, [&](int) { wr(), one_of(0); });
        printf("| %s: gb and du | floor %.1f us | 2 x gemm_b each %.1f us | lora_dy %.1f us | dy just written: "
               "%.1f / %.1f us |\n",
               g.name, mb / 3.0e6, 1e3 * two, 1e3 * one, 1e3 * (two_w - cp), 1e3 * (one_w - cp));
        for (int i = 0; i < g.n; i++)
            be->release(be, u[i]), be->release(be, b[i]), be->release(be, gb[i]), be->release(be, du[i]);
        be->release(be, y);
    }
}

int main(int argc, char **argv) {
    be = lc_backend_cuda_new(0);
    if (!be) {
        fprintf(stderr, "error: %s\n", lc_errmsg());
        return 1;
    }
    printf("card: %s\n", be->device_name);
    if (argc > 1 && !strcmp(argv[1], "lora")) { // the adapters' products at 4096 rows alone
        bench_lora_rows();
        be->free(be);
        return 0;
    }
    if (argc > 1 && !strcmp(argv[1], "overlap")) { // frozen and adapter products on two streams
        bench_overlap();
        be->free(be);
        return 0;
    }
    if (argc > 1 && !strcmp(argv[1], "shapes")) { // the adapters' slow shapes, each way
        bench_lora_shapes();
        be->free(be);
        return 0;
    }
    if (argc > 1 && !strcmp(argv[1], "read")) { // the card's read bandwidth (decoding's ceiling)
        bench_read();
        be->free(be);
        return 0;
    }
    if (argc > 1 && !strcmp(argv[1], "dxk")) { // the adapters' dx folded into the frozen product
        bench_dxk();
        be->free(be);
        return 0;
    }
    if (argc > 1 && !strcmp(argv[1], "gu16")) { // gate/up products with bf16 out, SwiGLU reading them
        bench_gu16();
        be->free(be);
        return 0;
    }
    if (argc > 1 && !strcmp(argv[1], "rows")) { // the decoding products' read pattern
        bench_rows();
        be->free(be);
        return 0;
    }
    if (argc > 1 && !strcmp(argv[1], "dy")) { // the adapters' gb and du, two products or one pass
        bench_lora_dy();
        be->free(be);
        return 0;
    }
    if (argc > 1 && !strcmp(argv[1], "attention")) { // the attention rows alone
        bench_attention();
        be->free(be);
        return 0;
    }
    // launches: host time per launch (queue), and per launch with the device draining
    int n = 20000;
    k_empty<<<1, 32>>>(NULL);
    CK(cudaDeviceSynchronize());
    double t0 = now();
    for (int i = 0; i < n; i++) k_empty<<<1, 32>>>(NULL);
    double th = now() - t0;
    CK(cudaDeviceSynchronize());
    double tall = now() - t0;
    printf("| empty kernel launch | host %.2f us/launch | with drain %.2f us/launch |\n", 1e6 * th / n, 1e6 * tall / n);
    // copy bandwidth
    size_t bytes = (size_t)2 << 30;
    void *s, *d;
    CK(cudaMalloc(&s, bytes));
    CK(cudaMalloc(&d, bytes));
    CK(cudaMemset(s, 1, bytes));
    double ms = timed(10, [&](int) { CK(cudaMemcpyAsync(d, s, bytes, cudaMemcpyDeviceToDevice, 0)); });
    printf("| D2D copy 2 GiB | %.3f ms | %.0f GB/s (read+write) |\n", ms, 2.0 * bytes / ms / 1e6);
    CK(cudaFree(s));
    CK(cudaFree(d));
    // products at the 7B shapes; 4 copies of each weight rotate so L2 never holds one
    struct { int O, I; const char *name; } sh[] = {{4096, 4096, "q/o 4096x4096"}, {1024, 4096, "k/v 1024x4096"},
                                                     {14336, 4096, "gate/up 14336x4096"}, {4096, 14336, "down 4096x14336"},
                                                     {32768, 4096, "lm_head 32768x4096"}};
    int Ns[] = {1, 136};
    float *x = (float *)be->alloc(be, (size_t)136 * 14336 * 4), *y = (float *)be->alloc(be, (size_t)136 * 32768 * 4);
    for (auto &q : sh) {
        lc_wt w[4];
        for (int k = 0; k < 4; k++) {
            size_t ne = (size_t)q.O * q.I;
            __nv_bfloat16 *p;
            CK(cudaMalloc(&p, ne * 2));
            k_fill<<<1024, 256>>>(p, ne, 17u + k);
            w[k].data = p, w[k].dtype = LC_DT_BF16, w[k].rows = q.O, w[k].cols = q.I;
        }
        for (int N : Ns) {
            double t = timed(100, [&](int i) { be->matmul(be, y, x, &w[i & 3], NULL, N, false); });
            double gbs = (double)q.O * q.I * 2 / t / 1e6;
            printf("| matmul N=%d %s | %.2f us | %.0f GB/s of weight |\n", N, q.name, 1e3 * t, gbs);
        }
        double t = timed(100, [&](int i) { be->matmul_dx(be, x, y, &w[i & 3], 136, false); });
        printf("| matmul_dx N=136 %s | %.2f us | %.0f GB/s of weight |\n", q.name, 1e3 * t, (double)q.O * q.I * 2 / t / 1e6);
        for (int k = 0; k < 4; k++) CK(cudaFree((void *)w[k].data));
    }
    // the adapters' products (rank 16): u = x a; out += s u b; gb = s u^T dy; du = s dy b^T;
    // ga = x^T du; dx += du a^T
    int r = 16;
    float *A = (float *)be->alloc(be, (size_t)14336 * r * 4), *Bm = (float *)be->alloc(be, (size_t)r * 14336 * 4);
    float *u = (float *)be->alloc(be, (size_t)136 * r * 4), *g = (float *)be->alloc(be, (size_t)14336 * r * 4);
    int ins[] = {4096, 14336};
    for (int M : {1, 136})
        for (int in : ins) {
            double t1 = timed(200, [&](int) { be->gemm(be, false, false, M, r, in, 1.0f, x, in, A, r, 0.0f, u, r); });
            double t2 = timed(200, [&](int) { be->gemm(be, false, false, M, in, r, 2.0f, u, r, Bm, in, 1.0f, y, in); });
            printf("| LoRA M=%d in/out=%d | u=xa %.2f us | out+=s u b %.2f us |", M, in, 1e3 * t1, 1e3 * t2);
            if (M == 136) {
                double t3 = timed(200, [&](int) { be->gemm(be, true, false, r, in, M, 2.0f, u, r, y, in, 0.0f, g, in); });
                double t4 = timed(200, [&](int) { be->gemm(be, false, true, M, r, in, 2.0f, y, in, Bm, in, 0.0f, u, r); });
                double t5 = timed(200, [&](int) { be->gemm(be, true, false, in, r, M, 1.0f, x, in, u, r, 0.0f, g, r); });
                double t6 = timed(200, [&](int) { be->gemm(be, false, true, M, in, r, 1.0f, u, r, A, r, 1.0f, x, in); });
                printf(" gb %.2f | du %.2f | ga %.2f | dx+= %.2f us |", 1e3 * t3, 1e3 * t4, 1e3 * t5, 1e3 * t6);
            }
            printf("\n");
        }
    // the adapters' gradients live in shared (managed) memory: ga = x^T du (in 14336) and
    // gb = s u^T dy (out 14336) into device memory and into managed memory
    {
        int in = 14336, M = 136;
        float *gd = (float *)be->alloc(be, (size_t)in * r * 4);
        float *ga0 = (float *)be->alloc_shared(be, (size_t)in * r * 4);
        float *outs[] = {gd, ga0};
        const char *nm[] = {"device", "managed"};
        for (int i = 0; i < 2; i++) {
            float *o = outs[i];
            double ta = timed(200, [&](int) { be->gemm(be, true, false, in, r, M, 1.0f, x, in, u, r, 0.0f, o, r); });
            double tg = timed(200, [&](int) { be->gemm(be, true, false, r, in, M, 2.0f, u, r, y, in, 0.0f, o, in); });
            printf("| grads in %s | ga %.2f us | gb %.2f us |\n", nm[i], 1e3 * ta, 1e3 * tg);
        }
        be->release(be, gd), be->release(be, ga0);
    }
    bench_attention();
    be->free(be);
    return 0;
}
