/*
 * lora_dy.cu — ->lora_dy: an adapter's two products from its output gradient, gb = s uᵀ dy
 * (r × o) and du = s dy bᵀ (N × r), from one read of the bf16 dy. As two ->gemm_b calls
 * each product streams all of dy (117 MB for gate or up at 8 × 512 tokens, 352 MB a 7B
 * block); here every dy tile comes into shared memory once and feeds both, on the tensor
 * cores (mma.sync m16n8k16, bf16 operands, float32 sums; u and b rounded to bf16 on the way
 * in, as ->gemm_b rounds them).
 *
 * Tiling: a block takes DY_RB rows (DY_NT tiles of DY_TR) and a group of column chunks
 * (DY_TC wide); 8 warps. A step is one dy tile (DY_TR × DY_TC), copied by cp.async into one
 * of DY_ST buffers while the block works on the ones before. Warp w forms du for rows
 * 16w.. of the tile (its sums over the block's columns kept in registers for all DY_NT
 * tiles) and gb for columns 8w.. of the chunk (summed over the block's rows, then written).
 * Ranks are padded to 16 (zeros past r). Where several column groups share rows, each
 * block writes its du sums (over its columns) as a partial sum, and where several row groups
 * share columns its gb sums (over its rows), into the backend's row scratch; a second kernel
 * adds them in group order and scales by s. No atomics: a call gives the same bits every
 * time. Measured (bench/results/cuda_notes.md, "gb and du from one read of dy, and dh as bf16
 * (r22)"): gate/up's pair at 8 × 512 116 µs against 191 µs for the four ->gemm_b products.
 *
 * Scope: r <= 16 and a multiple of 4, o and dy's row stride multiples of 8, dy 16-byte
 * aligned, u with row stride r, partial sums of at most DY_SCRATCH bytes (gate and up over up
 * to ~11,500 rows); anything else is declined (the caller runs ->gemm_b).
 * LORAC_CUDA_LORA_DY=0 declines everything. Owns nothing.
 */
#include <cuda_bf16.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda.h"
#include "backend/cuda/mma.h"

#define DY_TR 128 // rows of a dy tile (8 warps × 16)
#define DY_TC 64  // columns of a dy tile (a chunk)
#define DY_NT 4   // row tiles of a block
#define DY_RB (DY_TR * DY_NT)
#define DY_ST 3 // dy tiles in flight, plus the one in use
// a dy tile's row in shared memory (bf16; the 8 rows of an ldmatrix on 8 bank groups)
#define DY_LD (DY_TC + 8)
#define DY_RP 16          // ranks, padded
#define DY_LU (DY_RP + 8) // a u row in shared memory
#define DY_THREADS 256
// the partial sums' bytes at most (8 × 512: 22 MiB for gate and up)
#define DY_SCRATCH ((size_t)48 << 20)

typedef __nv_bfloat16 bf16;

struct dy_prod {
    const bf16 *dy;
    const float *u, *b;
    float *gb, *du;
    // partial sums: gb's (row groups, r, o), du's (column groups, N, 16); NULL with one group
    float *gw, *dw;
    int64_t ldy, ldu;
    int o, chunks, cpg, ngc; // columns, chunks, chunks a column group, column groups
};
struct dy_grp {
    dy_prod p[LC_GEMM_N_MAX];
    int N, r, ngr; // rows, rank, row groups
    float s;
};

static_assert(DY_RP * DY_TC / 4 == DY_THREADS, "a b chunk is one float4 a thread");

/* This thread's four values of the b chunk at column c0 (DY_RP × DY_TC; zeros past r and o). */
__device__ __forceinline__ float4 b_load(const dy_prod &p, int r, int c0) {
    int k = threadIdx.x / (DY_TC / 4), c = c0 + threadIdx.x % (DY_TC / 4) * 4;
    return k < r && c < p.o ? *reinterpret_cast<const float4 *>(p.b + (size_t)k * p.o + c)
                            : make_float4(0.f, 0.f, 0.f, 0.f);
}

/* ... rounded to bf16 into the chunk's tile bs (ranks a row). */
__device__ __forceinline__ void b_store(bf16 *bs, float4 v) {
    bf16 *d = bs + threadIdx.x / (DY_TC / 4) * DY_LD + threadIdx.x % (DY_TC / 4) * 4;
    *reinterpret_cast<__nv_bfloat162 *>(d) = __floats2bfloat162_rn(v.x, v.y);
    *reinterpret_cast<__nv_bfloat162 *>(d + 2) = __floats2bfloat162_rn(v.z, v.w);
}

/* grid (max column groups, row groups, products), DY_THREADS. */
__global__ void __launch_bounds__(DY_THREADS) k_lora_dy(const __grid_constant__ dy_grp g) {
    extern __shared__ __align__(16) unsigned char smraw[];
    const dy_prod &p = g.p[blockIdx.z];
    if ((int)blockIdx.x >= p.ngc) return; // past this product's column groups
    bf16 *ys = (bf16 *)smraw, *us = ys + DY_ST * DY_TR * DY_LD, *bs = us + DY_RB * DY_LU;
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, N = g.N, r = g.r;
    const int row0 = blockIdx.y * DY_RB, ch0 = blockIdx.x * p.cpg, nch = min(p.cpg, p.chunks - ch0);
    const int nt = min(DY_NT, (N - row0 + DY_TR - 1) / DY_TR), steps = nch * DY_NT;
    auto issue = [&](int st) { // step st's tile (chunk st / DY_NT, row tile st % DY_NT), if any
        int t = st % DY_NT, ch = st / DY_NT;
        if (st < steps && t < nt) {
            bf16 *d = ys + st % DY_ST * DY_TR * DY_LD;
            int r0 = row0 + t * DY_TR, c0 = (ch0 + ch) * DY_TC;
            for (int i = threadIdx.x; i < DY_TR * DY_TC / 8; i += DY_THREADS) {
                int rr = i / (DY_TC / 8), cc = i % (DY_TC / 8) * 8, row = r0 + rr, col = c0 + cc;
                bool ok = row < N && col < p.o;
                cp16(d + rr * DY_LD + cc, p.dy + (size_t)(ok ? row : 0) * p.ldy + (ok ? col : 0),
                     ok);
            }
        }
        cp_commit();
    };
    for (int st = 0; st < DY_ST - 1; st++)
        issue(st);
    // u's rows of the block, rounded to bf16 (zeros past r and N), and the first b chunk:
    // every load issued before the first store
    constexpr int UL = DY_RB * DY_RP / 4 / DY_THREADS; // float4s of u a thread
    static_assert(DY_RB * DY_RP / 4 % DY_THREADS == 0, "u's rows are not a multiple of the block");
    float4 uv[UL], b0 = b_load(p, r, ch0 * DY_TC);
#pragma unroll
    for (int j = 0; j < UL; j++) {
        int i = threadIdx.x + j * DY_THREADS, k = i % (DY_RP / 4) * 4, row = row0 + i / (DY_RP / 4);
        uv[j] = row < N && k < r ? *reinterpret_cast<const float4 *>(p.u + (size_t)row * r + k)
                                 : make_float4(0.f, 0.f, 0.f, 0.f);
    }
#pragma unroll
    for (int j = 0; j < UL; j++) {
        int i = threadIdx.x + j * DY_THREADS;
        bf16 *d = us + i / (DY_RP / 4) * DY_LU + i % (DY_RP / 4) * 4;
        *reinterpret_cast<__nv_bfloat162 *>(d) = __floats2bfloat162_rn(uv[j].x, uv[j].y);
        *reinterpret_cast<__nv_bfloat162 *>(d + 2) = __floats2bfloat162_rn(uv[j].z, uv[j].w);
    }
    b_store(bs, b0);
    float4 bn = make_float4(0.f, 0.f, 0.f, 0.f); // the next chunk's b, on its way
    float du[DY_NT][2][4];
#pragma unroll
    for (int t = 0; t < DY_NT; t++)
#pragma unroll
        for (int j = 0; j < 2; j++)
            du[t][j][0] = du[t][j][1] = du[t][j][2] = du[t][j][3] = 0.0f;
    const int gq = lane >> 2, c2 = (lane & 3) * 2;
    for (int ch = 0; ch < nch; ch++) {
        const bf16 *bc = bs + (ch & 1) * DY_RP * DY_LD;
        float gb[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        uint32_t bf[DY_TC / 16][4]; // the chunk's b as du's B fragments (k: its columns, n: ranks)
#pragma unroll
        for (int t = 0; t < DY_NT; t++) {
            int st = ch * DY_NT + t;
            asm volatile("cp.async.wait_group %0;" ::"n"(DY_ST - 2) : "memory");
            __syncthreads(); // step st's tile is in; every warp is done with step st-1's buffer
            issue(st + DY_ST - 1);
            if (t == 0) {
#pragma unroll
                for (int kk = 0; kk < DY_TC / 16; kk++)
                    frag_b2(bf[kk], bc, DY_LD, 0, kk * 16, lane);
                if (ch + 1 < nch) bn = b_load(p, r, (ch0 + ch + 1) * DY_TC);
            }
            // the next chunk's b into the other tile (read last at this chunk's first step)
            if (t == DY_NT - 1 && ch + 1 < nch) b_store(bs + ((ch + 1) & 1) * DY_RP * DY_LD, bn);
            if (t >= nt) continue;
            const bf16 *y = ys + st % DY_ST * DY_TR * DY_LD;
            // du (rows 16w.. of the tile) += dy b^T over the chunk's columns
#pragma unroll
            for (int kk = 0; kk < DY_TC / 16; kk++) {
                uint32_t a[4];
                frag_a(a, y, DY_LD, w * 16, kk * 16, lane);
                mma(du[t][0], a, bf[kk][0], bf[kk][1]);
                mma(du[t][1], a, bf[kk][2], bf[kk][3]);
            }
            // gb (columns 8w.. of the chunk) += u^T dy over the tile's rows
#pragma unroll
            for (int kk = 0; kk < DY_TR / 16; kk++) {
                uint32_t a[4], b2[2];
                frag_at(a, us, DY_LU, t * DY_TR + kk * 16, 0, lane);
                frag_bt1(b2, y, DY_LD, kk * 16, w * 8, lane);
                mma(gb, a, b2[0], b2[1]);
            }
        }
        // the chunk's gb over the block's rows: ranks gq, gq + 8, columns c2, c2 + 1
        int col = (ch0 + ch) * DY_TC + w * 8 + c2;
        if (col < p.o) {
            float sc = p.gw ? 1.0f : g.s;
            float *dst = p.gw ? p.gw + (size_t)blockIdx.y * r * p.o : p.gb;
#pragma unroll
            for (int h = 0; h < 2; h++) {
                int k = gq + 8 * h;
                if (k < r)
                    *reinterpret_cast<float2 *>(dst + (size_t)k * p.o + col) =
                        make_float2(gb[2 * h] * sc, gb[2 * h + 1] * sc);
            }
        }
    }
    // du of the block's rows over its columns: rows gq, gq + 8 of each warp's 16, ranks c2, c2 + 1
    // (+8)
    float sc = p.dw ? 1.0f : g.s;
#pragma unroll
    for (int t = 0; t < DY_NT; t++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            int row = row0 + t * DY_TR + w * 16 + gq + 8 * h;
            if (t >= nt || row >= N) continue;
            float *dst =
                p.dw ? p.dw + ((size_t)blockIdx.x * N + row) * DY_RP : p.du + (size_t)row * p.ldu;
#pragma unroll
            for (int j = 0; j < 2; j++) {
                int k = j * 8 + c2;
                if (k < r)
                    *reinterpret_cast<float2 *>(dst + k) =
                        make_float2(du[t][j][2 * h] * sc, du[t][j][2 * h + 1] * sc);
            }
        }
}

/* The partial sums added in group order and scaled: gb (r, o) from gw's row groups, du
 * (N, r) from dw's column groups. grid (blocks, products), DY_THREADS; grid-stride. */
__global__ void __launch_bounds__(DY_THREADS) k_lora_dy_sum(const __grid_constant__ dy_grp g) {
    const dy_prod &p = g.p[blockIdx.y];
    const int N = g.N, r = g.r;
    size_t ngb = p.gw ? (size_t)r * p.o : 0, ndu = p.dw ? (size_t)N * r : 0;
    for (size_t i = blockIdx.x * (size_t)DY_THREADS + threadIdx.x; i < ngb + ndu;
         i += (size_t)gridDim.x * DY_THREADS) {
        if (i < ngb) {
            float s = 0.0f;
            for (int q = 0; q < g.ngr; q++)
                s += p.gw[(size_t)q * r * p.o + i];
            p.gb[i] = s * g.s;
        } else {
            size_t j = i - ngb, row = j / r, k = j % r;
            float s = 0.0f;
            for (int q = 0; q < p.ngc; q++)
                s += p.dw[((size_t)q * N + row) * DY_RP + k];
            p.du[row * p.ldu + k] = s * g.s;
        }
    }
}

static size_t dy_smem(void) {
    return (size_t)(DY_ST * DY_TR * DY_LD + DY_RB * DY_LU + 2 * DY_RP * DY_LD) * 2;
}

/* The device's multiprocessors, asked once (the process keeps one device). */
static int dy_sms(void) {
    static int n = 0;
    if (!n) {
        int dev = 0, v = 0;
        if (cudaGetDevice(&dev) != cudaSuccess ||
            cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || v < 1)
            v = 1, cudaGetLastError();
        n = v;
    }
    return n;
}

bool lc_cuda_lora_dy(lc_backend *be, int n, int64_t N, int64_t r, float s, const lc_dy_args *a) {
    lc_cuda *c = (lc_cuda *)be->impl;
    const char *e = getenv("LORAC_CUDA_LORA_DY");
    if ((e && !strcmp(e, "0")) || n < 1 || n > LC_GEMM_N_MAX || r < 1 || r > DY_RP || r % 4 ||
        N < 1 || N > (1 << 30))
        return false;
    for (int i = 0; i < n; i++)
        if (a[i].o < 1 || a[i].o % 8 || a[i].ldy % 8 || (uintptr_t)a[i].dy % 16 ||
            (uintptr_t)a[i].u % 16 || (uintptr_t)a[i].b % 16 || (uintptr_t)a[i].gb % 8 ||
            (uintptr_t)a[i].du % 8 || a[i].ldu % 2 || a[i].o > (1 << 30))
            return false;
    dy_grp g;
    memset(&g, 0, sizeof g);
    g.N = (int)N, g.r = (int)r, g.s = s, g.ngr = (int)((N + DY_RB - 1) / DY_RB);
    // chunks a column group: about two blocks a multiprocessor over all products
    int64_t units = 0;
    for (int i = 0; i < n; i++)
        units += (a[i].o + DY_TC - 1) / DY_TC * g.ngr;
    int64_t slots = 2 * (int64_t)dy_sms(), cpg = (units + slots - 1) / slots;
    cpg = cpg < 1 ? 1 : cpg;
    size_t scratch = 0;
    int ngc = 1;
    for (int i = 0; i < n; i++) {
        dy_prod &p = g.p[i];
        p.dy = (const bf16 *)a[i].dy, p.u = a[i].u, p.b = a[i].b, p.gb = a[i].gb, p.du = a[i].du;
        p.ldy = a[i].ldy, p.ldu = a[i].ldu, p.o = (int)a[i].o;
        p.chunks = (int)((a[i].o + DY_TC - 1) / DY_TC);
        p.cpg = (int)(cpg < p.chunks ? cpg : p.chunks);
        p.ngc = (p.chunks + p.cpg - 1) / p.cpg;
        ngc = p.ngc > ngc ? p.ngc : ngc;
        if (g.ngr > 1) scratch += (size_t)g.ngr * r * p.o;
        if (p.ngc > 1) scratch += (size_t)p.ngc * N * DY_RP;
    }
    // the partial sums grow with the rows (gb's: 3.6 KB a row for gate and up together); past
    // DY_SCRATCH the products run as ->gemm_b (lc_model_scratch_bytes allows the backend 96 MiB)
    if (scratch * sizeof(float) > DY_SCRATCH) return false;
    LC_PROF(c, "lora_dy (LoRA gb, du) M=%lld", N);
    if (scratch) {
        float *part = lc_cuda_rows(c, scratch);
        for (int i = 0; i < n; i++) {
            dy_prod &p = g.p[i];
            if (g.ngr > 1) p.gw = part, part += (size_t)g.ngr * r * p.o;
            if (p.ngc > 1) p.dw = part, part += (size_t)p.ngc * N * DY_RP;
        }
    }
    size_t sm = dy_smem();
    LC_CK(c, cudaFuncSetAttribute(k_lora_dy, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm));
    k_lora_dy<<<dim3((unsigned)ngc, (unsigned)g.ngr, (unsigned)n), DY_THREADS, sm, c->st>>>(g);
    LC_LAUNCHED(c);
    if (scratch) {
        k_lora_dy_sum<<<dim3((unsigned)dy_sms(), (unsigned)n), DY_THREADS, 0, c->st>>>(g);
        LC_LAUNCHED(c);
    }
    return true;
}
