/*
 * mma.h — the tensor-core fragments and asynchronous copies that attention_tc.cu and
 * lora_dy.cu share: mma.sync m16n8k16 over bf16 with float32 sums, ldmatrix loads of its
 * fragments from row-major bf16 tiles in shared memory, and cp.async copies into them.
 *
 * Fragments (PTX ISA, mma.m16n8k16 .bf16): g = lane / 4, c = lane % 4. A (16×16, row):
 * regs {row g, k 2c..2c+1}, {row g+8, k 2c}, {row g, k 2c+8}, {row g+8, k 2c+8}.
 * B (16×8): regs {k 2c..2c+1, n g}, {k 2c+8.., n g}. C (16×8, f32): {row g, n 2c, 2c+1},
 * {row g+8, n 2c, 2c+1}. Two C tiles side by side are one A fragment (c_to_a).
 */
#ifndef LC_BACKEND_CUDA_MMA_H
#define LC_BACKEND_CUDA_MMA_H

#include <cuda_bf16.h>
#include <stdint.h>
#include <string.h>

__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi); // .x (lower address, lower k) = lo
    uint32_t r;
    memcpy(&r, &v, 4);
    return r;
}

__device__ __forceinline__ uint32_t saddr(const void *p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}

/* c (16×8) += a (16×16) b (16×8). */
__device__ __forceinline__ void mma(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* Four 8×8 bf16 matrices; lanes 8j..8j+7 give the row addresses of matrix j, and register
 * j holds row lane/4, elements 2(lane%4), +1 of matrix j (.trans: of its transpose). */
__device__ __forceinline__ void ldsm4(uint32_t r[4], const __nv_bfloat16 *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(saddr(p)));
}
__device__ __forceinline__ void ldsm4t(uint32_t r[4], const __nv_bfloat16 *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(saddr(p)));
}

/* A fragment: rows r0..r0+15, columns k0..k0+15 of row-major M (leading dimension ld). */
__device__ __forceinline__ void frag_a(uint32_t a[4], const __nv_bfloat16 *M, int ld, int r0,
                                       int k0, int lane) {
    ldsm4(a, M + (r0 + (lane & 15)) * ld + k0 + (lane >> 4) * 8);
}

/* B fragments of n0..n0+7 (b[0], b[1]) and n0+8..n0+15 (b[2], b[3]) whose column n is
 * row n of M and whose k runs along that row from k0. */
__device__ __forceinline__ void frag_b2(uint32_t b[4], const __nv_bfloat16 *M, int ld, int n0,
                                        int k0, int lane) {
    ldsm4(b, M + (n0 + (lane & 7) + (lane >> 4) * 8) * ld + k0 + ((lane >> 3) & 1) * 8);
}

/* The same where B is M itself: k is M's row k0.., n its column n0.. (ldmatrix.trans). */
__device__ __forceinline__ void frag_bt2(uint32_t b[4], const __nv_bfloat16 *M, int ld, int k0,
                                         int n0, int lane) {
    ldsm4t(b, M + (k0 + (lane & 7) + ((lane >> 3) & 1) * 8) * ld + n0 + (lane >> 4) * 8);
}

/* The A fragment of the 16×16 block made of C tiles x and y (columns 0-7 and 8-15). */
__device__ __forceinline__ void c_to_a(uint32_t a[4], const float x[4], const float y[4]) {
    a[0] = pack2(x[0], x[1]), a[1] = pack2(x[2], x[3]), a[2] = pack2(y[0], y[1]),
    a[3] = pack2(y[2], y[3]);
}

/* cp.async of n bytes (4 or 16); zeros when !ok (src must still be a valid address). */
__device__ __forceinline__ void cp16(void *dst, const void *src, bool ok) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(saddr(dst)), "l"(src),
                 "r"(ok ? 16 : 0)
                 : "memory");
}
__device__ __forceinline__ void cp4(void *dst, const void *src, bool ok) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(saddr(dst)), "l"(src),
                 "r"(ok ? 4 : 0)
                 : "memory");
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
__device__ __forceinline__ void cp_wait() { asm volatile("cp.async.wait_all;" ::: "memory"); }

/* A fragment whose A is the transpose of row-major M: A (m, k) = M[k0 + k][m0 + m]
 * (ldmatrix.trans; M's rows k0..k0+15, columns m0..m0+15). */
__device__ __forceinline__ void frag_at(uint32_t a[4], const __nv_bfloat16 *M, int ld, int k0,
                                        int m0, int lane) {
    ldsm4t(a, M + (k0 + (lane & 7) + ((lane >> 4) & 1) * 8) * ld + m0 + ((lane >> 3) & 1) * 8);
}

/* One B fragment (16×8) with B (k, n) = M[k0 + k][n0 + n] (ldmatrix.x2.trans; lanes 0-15
 * give the addresses, the others repeat them). */
__device__ __forceinline__ void frag_bt1(uint32_t b[2], const __nv_bfloat16 *M, int ld, int k0,
                                         int n0, int lane) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];"
                 : "=r"(b[0]), "=r"(b[1])
                 : "r"(saddr(M + (k0 + (lane & 15)) * ld + n0)));
}

#endif
