/*
 * backend.h — the compute interface the transformer is written over.
 *
 * A backend is a table of operations on float32 activations that live in the backend's
 * memory (host memory for the CPU backend, device memory for a CUDA one). The model
 * layer calls these and never loops over tensor elements itself, so one model
 * implementation runs on every backend. Frozen weights are passed as lc_wt: a view of
 * a matrix in its stored dtype (F32, F16 or BF16) or quantized (NF4, MLX affine 4/8-bit),
 * never converted whole.
 *
 * Conventions: outputs first; sizes are int64_t, offsets size_t; every backward says
 * whether it overwrites (=) or accumulates (+=) its outputs. Dimension letters:
 * N rows (B*T), B batch, T time, S key capacity, C channels, I/O in/out features,
 * H heads, KV kv-heads, D head dim, V vocab.
 *
 * This header owns no memory; a backend owns its scratch buffers and frees them in
 * ->free. Operations do not fail (sizes are checked by the model before calling); a
 * backend whose device can fail (CUDA) records the first error and reports it at the
 * next ->sync, which the model calls at the end of every step.
 */
#ifndef LC_BACKEND_H
#define LC_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io/config.h"
#include "io/safetensors.h"

/* How a quantized weight is stored (src/backend/quant.h reads and writes them).
 * LC_QUANT_AFFINE: MLX's affine format: each row holds cols/group groups; element c of
 * row r is scale[r][c/group] * q + bias[r][c/group], q a `bits`-bit code packed into
 * little-endian uint32 words, lowest bits first (data: (rows, cols*bits/32) words).
 * LC_QUANT_NF4: bitsandbytes' 4-bit blockwise format over the flattened matrix: element i
 * is code[q_i] * absmax[i / group], two codes a byte, element 2k in the high nibble of
 * byte k (data: ceil(rows*cols/2) bytes); absmax is float32, or (nested: bitsandbytes'
 * double quantization) uint8 codes j with absmax = code2[j] * absmax2[i / group / block2]
 * + offset. Pointers may be unaligned (they point into mapped files); read them with
 * memcpy. (lc_quant_format is in io/config.h.) */
typedef struct {
    lc_quant_format fmt;
    int bits;      // affine: 2, 4 or 8; nf4: 4
    int64_t group; // affine: columns per group (32, 64, 128); nf4: block size (64)
    // affine
    const void *scales, *biases; // (rows, cols/group) of sdtype
    lc_dtype sdtype;             // LC_DT_F32, LC_DT_F16 or LC_DT_BF16
    // nf4
    const void *absmax;  // (nblocks) F32, or U8 codes when nested
    bool nested;
    const void *absmax2; // (ceil(nblocks / block2)) F32, when nested
    int64_t block2;      // the nested block size (256)
    float offset;        // added to every dequantized absmax, when nested
    float code[16];      // the 4-bit value map (quant_map)
    float code2[256];    // the nested 8-bit map (nested_quant_map)
} lc_wquant;

/* A frozen weight matrix (rows, cols) in row-major order, stored as dtype. A linear
 * layer of Hugging Face stores (out, in); an embedding table (V, C). When q is set the
 * matrix is quantized: data holds the packed codes as q describes and dtype is unused. */
typedef struct {
    const void *data;
    lc_dtype dtype; // LC_DT_F32, LC_DT_F16 or LC_DT_BF16
    int64_t rows, cols;
    const lc_wquant *q; // NULL: stored as dtype
    int64_t ld;         // elements from one row's start to the next's; 0: cols (only
                        // ->weight_room with extra columns sets it)
} lc_wt;

/* A weight's row stride in elements. */
static inline int64_t lc_wt_ld(const lc_wt *w) { return w->ld ? w->ld : w->cols; }

/* The constants of one Adam/AdamW update (torch.optim's arithmetic), made by
 * train/optim.c's lc_adam_args_make. */
typedef struct {
    float step_size; // lr / (1 - beta1^t)
    float bc2_sqrt;  // sqrt(1 - beta2^t)
    float w1;        // 1 - beta1 (exp_avg.lerp_(grad, 1 - beta1))
    float b2, w2;    // beta2, 1 - beta2
    float eps, wd;   // epsilon; weight decay
    float decay;     // AdamW: 1 - lr * wd
    bool decoupled;  // AdamW (decay the parameter) rather than Adam (L2 on the gradient)
} lc_adam_args;

/* One float32 product of ->gemm_n: C (M,N) = alpha op(A) op(B) + beta C, row-major,
 * cblas_sgemm's meaning (as ->gemm's arguments); with X set, beta X (M,N; row stride ldc,
 * not overlapping C) in place of beta C, as if X were copied to C first. */
typedef struct {
    bool ta, tb;
    int64_t M, N, K;
    float alpha, beta;
    const float *A, *B;
    int64_t lda, ldb, ldc;
    float *C;
    const float *X; // NULL: C
} lc_gemm_args;

/* One adapter of ->lora_dy: its output gradient dy (bf16, (N, o), row stride ldy), u (N,
 * r) and b (r, o) (float32), and where gb (r, o) and du (N, r; row stride ldu) go. */
typedef struct {
    const void *dy;
    int64_t ldy, o;
    const float *u, *b;
    float *gb, *du;
    int64_t ldu;
} lc_dy_args;

/* One block of the one-token decoding step (->decode): device pointers. */
typedef struct {
    const void *w[7];        // q, k, v, o, gate, up, down weights (lc_decode_step.wdt), or their codes
    const void *q[7];        // with lc_decode_step.quant: the backend's handles of them (lc_wt.q)
    int64_t ld[7];           // plain weights: elements from row to row (lc_wt_ld; 0: the width)
    const float *bias[3];    // q, k, v biases, or NULL
    const float *ln1, *ln2;  // (C) the two RMSNorm weights
    const float *la[7], *lb[7]; // adapter A (in, r) and B (r, out) per projection, or NULL
    float *kc, *vc;          // this block's key and value cache (S, KV, D)
} lc_decode_block;

/* The whole one-token decoding step of a batch-1 sequence: embedding of tok[0], every
 * block (its new key/value row written at the position), final norm and lm_head. Every
 * pointer and number a backend may bake into a recorded replay is in here, so two steps
 * with equal descriptors (memcmp, blocks compared by content) differ only in the token
 * (read from tok) and the position (an argument of ->decode). Zero it before filling. */
typedef struct {
    int64_t L, C, H, KV, D, I, V, S; // S: the cache's capacity (positions)
    lc_dtype wdt, edt, hdt;   // dtypes of the block weights, embedding table, lm_head (F32/BF16)
    int quant;                // 1: every block weight is quantized (w the codes, q the handles)
    int r;                    // adapters' rank (0: none)
    float scale, eps;         // adapters' scale; RMSNorm epsilon
    const void *embed, *lm_head; // (V, C) each
    const float *norm_f;      // (C)
    const float *cos, *sin;   // rotary tables (P, D/2) with P >= S
    const int32_t *tok;       // device: the token id
    float *logits;            // device: (V) out
    const lc_decode_block *blocks; // (L) not part of the comparison as a pointer
} lc_decode_step;

typedef struct lc_backend lc_backend;

#define LC_GEMM_N_MAX 8 // products of one ->gemm_n / ->matmul_n call
#define LC_ARGMAX_SLOTS 4 // ->argmax's host slots

struct lc_backend {
    const char *name;
    const char *device_name; // the device in words (CUDA: the card's name; CPU: NULL)
    void *impl;
    int threads;
    /* Rows from which the model groups the adapters of one input (q/k/v; gate/up) into
     * one product each way (their A side by side): at many rows the adapters' products
     * are bound by reading the input and writing its gradient, which one product does
     * once; at few rows ->gemm_n's grouped launches are quicker. 0: always; INT64_MAX:
     * never (the adapters one by one, dx after the frozen products). */
    int64_t lora_group_rows;
    /* Whether ->gemm may multiply on TF32 tensor cores (inputs rounded to 10-bit
     * mantissas, float32 sums) where it would run a float32 GEMM: the model sets it
     * around its blocks while its frozen weights are bf16 or quantized, whose products
     * round the activations to bf16 anyway (lc_model_lora_tf32); false otherwise. */
    bool lora_tf32;

    /* ---- memory ---- */
    void *(*alloc)(lc_backend *be, size_t bytes);        // zeroed; aborts when out of memory
    void (*release)(lc_backend *be, void *p);
    void (*upload)(lc_backend *be, void *dst, const void *host, size_t bytes);
    void (*download)(lc_backend *be, void *host, const void *src, size_t bytes);
    void (*free)(lc_backend *be); // frees the backend itself
    /* Memory that both the host and the backend read and write (LoRA weights and
     * gradients, which the optimizer and the adapter files touch from the host): zeroed;
     * the host may touch it only after ->sync. CPU: alloc; CUDA: managed memory. Freed
     * with release. */
    void *(*alloc_shared)(lc_backend *be, size_t bytes);
    /* Optional (NULL: the host's memory, which the trainer reads itself): the device
     * memory free now and in all, in bytes. Returns 0 or -1. */
    int (*mem_info)(lc_backend *be, size_t *free_bytes, size_t *total_bytes);
    /* Optional (NULL: the caller scans on the host): whether all n floats at x (backend or
     * shared memory) are finite, after the queued work; synchronizes. Where shared memory
     * lives on the device, a host scan would move every page to the host and back. */
    bool (*all_finite)(lc_backend *be, const float *x, size_t n);
    /* Optional, with all_finite's reason (NULL: the caller loops on the host): the sum of
     * x[i]² over n floats in double, in a fixed order (the same bits every call), after the
     * queued work (synchronizes); and x[i] = x[i] · a, or x[i] / a with divide, queued. */
    double (*sumsq)(lc_backend *be, const float *x, size_t n);
    void (*scale)(lc_backend *be, float *x, float a, bool divide, size_t n);
    /* Waits for the queued work. Returns 0, or -1 (lc_fail) with the first error any
     * operation met since the last sync (CUDA: a failed launch or library call). */
    int (*sync)(lc_backend *be);
    /* Makes a frozen weight usable by this backend's products and embedding: CPU: leaves
     * it as it is (the mapped file); CUDA: copies it to the card once (F16 widened to F32;
     * owned by the backend, freed with it) and points w->data there. Returns 0 or -1
     * (out of device memory; a dtype the backend cannot multiply). */
    int (*weight)(lc_backend *be, lc_wt *w);
    /* Optional (NULL: the model merges on the host; CUDA): w (out, in; bf16 or float32, not
     * quantized, made usable by ->weight) += scale · (a b)^T in place, a (in, r) and b (r,
     * out) float32 in shared memory: each element's delta summed in float32 over k in
     * order, scaled, added to the weight's value and rounded once to its dtype (to nearest
     * even), as PEFT's merge does. Returns 0 or -1. */
    int (*merge_lora)(lc_backend *be, lc_wt *w, const float *a, const float *b, int64_t r, float scale);
    /* Optional (NULL where not offered; CUDA): ->weight for the n weights w, laid out one
     * after another in one allocation (w[i + 1]'s first row right after w[i]'s last), so
     * that a product may take them as one weight of Σ rows (lc_model: q, k and v's input
     * gradients as one product). Returns 0, 1 when it cannot (quantized, not bf16, unequal
     * column counts: ->weight each then), or -1 (out of device memory). */
    int (*weight_n)(lc_backend *be, int n, lc_wt *const *w);
    /* Optional (NULL where not offered; CUDA): the n bf16 weights w (made usable by ->weight
     * or ->weight_n) moved into one new allocation, one after another, each w[i] followed
     * by extra[i] zeroed rows of its row stride and, where xcols (or NULL) gives weight i
     * xcols[i] > 0 columns more, each of its rows by that many zeroed columns (w[i]->ld then
     * cols + xcols[i]: every product reads the weight at its row stride; a weight joined to
     * others, ->weight_n's, takes none); a weight that followed the one before it
     * in its allocation (->weight_n's, extra[i - 1] 0) still does, and each other one starts
     * at a 256-byte offset; the allocations they started are freed. Each w[i]->data is
     * updated, w[i]->rows and ->cols unchanged. A product may then take a weight's rows (or
     * ->weight_n's joined ones) plus its extra ones, which the caller writes, as one weight
     * (lc_model: the adapters' a^T beside the frozen weight, one input-gradient product), or
     * its columns plus the extra ones (the adapters' b^T beside it, one forward product over
     * [x | u]); one allocation for
     * many weights rounds up once rather than once a weight. Returns 0, 1 having changed
     * nothing (quantized, not bf16, a weight neither starting an allocation nor following the
     * one before it, no room on the card), or -1 (lc_fail: a copy on the card failed). An
     * allocation that holds several weights (->weight_n's) is freed: all of them must be
     * among the n. */
    int (*weight_room)(lc_backend *be, int n, lc_wt *const *w, const int64_t *extra, const int64_t *xcols);

    /* ---- elementwise ---- */
    void (*zero)(lc_backend *be, float *x, size_t n);                            // x = 0
    void (*copy)(lc_backend *be, float *out, const float *x, size_t n);          // out = x
    /* out (rows, cols; row stride ldo) = x (rows, cols; row stride ldx); no overlap. */
    void (*copy2d)(lc_backend *be, float *out, int64_t ldo, const float *x, int64_t ldx, int64_t rows,
                   int64_t cols);
    /* n (<= LC_GEMM_N_MAX) such copies of one shape, out[i] (row stride ldo[i]) = x[i] (row
     * stride ldx[i]), in one call: the adapters' side-by-side groups (their A, u and ga). */
    void (*copy2d_n)(lc_backend *be, int n, float *const *out, const int64_t *ldo, const float *const *x,
                     const int64_t *ldx, int64_t rows, int64_t cols);
    void (*add)(lc_backend *be, float *out, const float *a, const float *b, size_t n); // out = a + b
    void (*axpy)(lc_backend *be, float *y, float a, const float *x, size_t n);   // y += a x
    /* Inverted dropout: out[i] = x[i] * keep(seed, i) / (1 - p), keep false with
     * probability p, from a counter-based hash of (seed, i) (so forward and backward see
     * the same mask without storing it; its own backward is the same call on gradients). */
    void (*dropout)(lc_backend *be, float *out, const float *x, size_t n, float p, uint64_t seed);

    /* One Adam/AdamW update in place of n parameters p with gradient g and moments m, v
     * (shared or backend memory), lc_adam_update's arithmetic element for element. */
    void (*adam)(lc_backend *be, float *p, const float *g, float *m, float *v, size_t n,
                 const lc_adam_args *a);

    /* ---- matrix products ---- */
    /* out (N,O) = x (N,I) W^T + bias (O, may be NULL); += when accumulate. */
    void (*matmul)(lc_backend *be, float *out, const float *x, const lc_wt *w, const float *bias,
                   int64_t N, bool accumulate);
    /* Backward of matmul for its input: dx (N,I) = (or += when accumulate) dy (N,O) W. */
    void (*matmul_dx)(lc_backend *be, float *dx, const float *dy, const lc_wt *w, int64_t N,
                      bool accumulate);
    /* C (M,N) = alpha op(A) op(B) + beta C, all float32 row-major (cblas_sgemm's meaning). */
    void (*gemm)(lc_backend *be, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                 const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                 int64_t ldc);

    /* n products (n <= LC_GEMM_N_MAX), the same values as n calls of ->gemm in order; no
     * product's C may overlap another's inputs or output (the card runs them in one
     * launch where their shapes allow). */
    void (*gemm_n)(lc_backend *be, int n, const lc_gemm_args *g);
    /* n products of one input (n <= LC_GEMM_N_MAX): out[i] (N,O_i) = x W_i^T + bias[i]
     * (bias may be NULL), += when accumulate: the same values as n calls of ->matmul
     * (the card converts x to bf16 once), except that over NF4 weights the card may add
     * the float32 partial sums of the inner dimension in another grouping (one launch for
     * all n splits it differently; the bf16 products are the same). */
    void (*matmul_n)(lc_backend *be, int n, float *const *out, const float *x, const lc_wt *const *w,
                     const float *const *bias, int64_t N, bool accumulate);

    /* ---- layers ---- */
    /* out (N,C) = table[tokens[n]] (tokens already checked to lie in [0, V)). */
    void (*embedding)(lc_backend *be, float *out, const int32_t *tokens, const lc_wt *table, int64_t N);
    /* out (N,C) = x * rstd * w, rstd (N) = 1 / sqrt(mean(x^2) + eps). out may alias x. */
    void (*rmsnorm)(lc_backend *be, float *out, float *rstd, const float *x, const float *w,
                    int64_t N, int64_t C, float eps);
    /* dx (N,C) += d/dx of the rmsnorm above, given dout, x, w and the saved rstd. */
    void (*rmsnorm_bwd)(lc_backend *be, float *dx, const float *dout, const float *x, const float *w,
                        const float *rstd, int64_t N, int64_t C);
    /* Rotary embedding, rotate-half layout, in place on x (B,T,H,D): position of row t is
     * pos0 + t; cos/sin tables (P, D/2) cover every position used. */
    void (*rope)(lc_backend *be, float *x, const float *cos, const float *sin, int64_t B, int64_t T,
                 int64_t H, int64_t D, int64_t pos0);
    /* Backward of rope, in place on dx (the inverse rotation): dx = R^T dx. */
    void (*rope_bwd)(lc_backend *be, float *dx, const float *cos, const float *sin, int64_t B,
                     int64_t T, int64_t H, int64_t D, int64_t pos0);
    /* Causal grouped-query attention. q (B,Tq,H,D); k, v (B,S,KV,D); query t sits at
     * position pos0 + t and sees keys 0..pos0+t. out (B,Tq,H,D) =; lse (B,H,Tq) = the
     * log-sum-exp of each score row (may be NULL). Scores are scaled by 1/sqrt(D). */
    void (*attention)(lc_backend *be, float *out, float *lse, const float *q, const float *k,
                      const float *v, int64_t B, int64_t Tq, int64_t S, int64_t H, int64_t KV,
                      int64_t D, int64_t pos0);
    /* Backward of attention with pos0 = 0, Tq = S = T: dq, dk, dv =. */
    void (*attention_bwd)(lc_backend *be, float *dq, float *dk, float *dv, const float *dout,
                          const float *q, const float *k, const float *v, const float *out,
                          const float *lse, int64_t B, int64_t T, int64_t H, int64_t KV, int64_t D);
    /* out (N,I) = silu(gate) * up. */
    void (*swiglu)(lc_backend *be, float *out, const float *gate, const float *up, size_t n);
    /* dgate =, dup = backward of swiglu given dout; and h = swiglu(gate, up) again, the
     * same bits as ->swiglu, when h is not NULL. Each element's gate, up and dout are read
     * before its outputs are written: dgate may be gate and dup may be dout (the model
     * keeps both in place). */
    void (*swiglu_bwd)(lc_backend *be, float *dgate, float *dup, float *h, const float *dout,
                       const float *gate, const float *up, size_t n);
    /* Optional (NULL where not offered; CUDA has them, its products round activations to
     * bf16 anyway): ->swiglu that also keeps gate and up rounded to bf16 (round to
     * nearest even) in gu, 2n bf16 (gate's n, then up's), for ->swiglu_bwd_packed, which
     * is ->swiglu_bwd reading them from gu (h from the rounded values). */
    void (*swiglu_pack)(lc_backend *be, float *out, void *gu, const float *gate, const float *up, size_t n,
                        void *outb);
    void (*swiglu_bwd_packed)(lc_backend *be, float *dgate, float *dup, float *h, const float *dout,
                              const void *gu, size_t n);
    /* Optional (NULL where not offered; CUDA): ->swiglu_bwd_packed that then also leaves
     * dgate and dup rounded to bf16 (round to nearest even) in gu, over gate's and up's
     * values (dgate's n, then dup's), for ->matmul_dx_b and ->gemm_b; dgate and dup may be
     * NULL (only the bf16 ones written). Each element's gate and up are read before its
     * outputs are written. hb (or NULL): h's bf16 rounding, n values, for down's adapter's
     * ga from bf16 (->gemm_b); h may then be NULL. */
    void (*swiglu_bwd_packed_b)(lc_backend *be, float *dgate, float *dup, float *h, const float *dout, void *gu,
                                size_t n, void *hb);
    /* Optional (NULL where not offered; CUDA): ->swiglu_bwd_packed_b from dout's bf16 values
     * doutb (n of them; ->matmul_dx_bo's), writing only dgate's and dup's bf16 roundings into
     * gu, and h's into hb when not NULL. */
    void (*swiglu_bwd_packed_bb)(lc_backend *be, const void *doutb, void *gu, size_t n, void *hb);
    /* Optional (NULL where not offered; CUDA): ->matmul_dx given dy's bf16 rounding dyb
     * (N, O) instead of dy, where w is bf16 or quantized (whose products round dy to bf16
     * anyway): the same bits as ->matmul_dx from the float32 dy. Returns false, having
     * done nothing, for other weights (the caller runs ->matmul_dx). */
    bool (*matmul_dx_b)(lc_backend *be, float *dx, const void *dyb, const lc_wt *w, int64_t N, bool accumulate);
    /* Optional (NULL where not offered; CUDA): ->matmul_dx_b with a bf16 out: dxb (N, in) =
     * dyb W, the float32 sums rounded once to bf16 (nearest even), written (no accumulation).
     * Returns false, having done nothing, where w is not a plain bf16 weight. */
    bool (*matmul_dx_bo)(lc_backend *be, void *dxb, const void *dyb, const lc_wt *w, int64_t N);
    /* Optional (NULL where not offered; CUDA): ->gemm where A (a16) or B (b16) or both are
     * bf16 (row-major, their ld in elements); a float32 operand is rounded to bf16 first,
     * and the products are bf16 × bf16 summed in float32 (as PyTorch's bf16 autocast
     * multiplies an adapter): for the adapters' gradients from a bf16 dy. */
    void (*gemm_b)(lc_backend *be, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const void *A,
                   int64_t lda, bool a16, const void *B, int64_t ldb, bool b16, float beta, float *C, int64_t ldc);
    /* Optional (NULL where not offered; CUDA): for n (<= LC_GEMM_N_MAX) adapters of rank r
     * over N rows, both products of each from one read of its bf16 dy: gb = s u^T dy and
     * du = s dy b^T, u and b rounded to bf16 and the sums in float32 (->gemm_b's two
     * products, summed in another fixed order). Returns false, having done nothing, where
     * it does not take the shapes (the caller runs ->gemm_b). */
    bool (*lora_dy)(lc_backend *be, int n, int64_t N, int64_t r, float s, const lc_dy_args *a);
    /* Optional (NULL where not offered; CUDA): SwiGLU with the adapters' last products of
     * gate and up folded in: gate (N, I) += scale · ug bg and up += scale · uu bu, each
     * where its u (N, r) is not NULL (b (r, I); r <= 32; the sums as ->gemm's small-K
     * path forms them), then out = swiglu(gate, up); gu NULL: gate and up are written
     * back, else they are kept only as bf16 in gu as ->swiglu_pack keeps them (gate and
     * up then still hold their inputs). gate and up both NULL (gu given): their values are
     * read from gu itself (bf16, as ->matmul_n_bo writes them) and the sums written back
     * over them, rounded again; with ug and uu NULL too, gu is only read (SwiGLU of a pair
     * whose products already hold the adapters' part: ->matmul_n_bo's xk). */
    void (*swiglu_lora)(lc_backend *be, float *out, void *gu, float *gate, float *up, int64_t N, int64_t I,
                        const float *ug, const float *bg, const float *uu, const float *bu, int r, float scale,
                        void *outb);
    /* (->swiglu_pack and ->swiglu_lora: outb, when not NULL, also receives out rounded to
     * bf16 (round to nearest even), for ->matmul_n_b and ->gemm_b; it must not overlap gate,
     * up or gu; out may then be NULL: only the bf16 copy written.) */
    /* Optional (NULL where not offered; CUDA): ->matmul_n (n >= 1) given x's bf16 rounding
     * xb (N, I) instead of x, where every weight is bf16 (not quantized): above 8 rows the
     * same bits as ->matmul_n from the float32 x (at 8 or fewer, where ->matmul_n multiplies
     * float32 x, the product of xb). Returns false, having done nothing, otherwise. */
    bool (*matmul_n_b)(lc_backend *be, int n, float *const *out, const void *xb, const lc_wt *const *w,
                       const float *const *bias, int64_t N, bool accumulate);
    /* Optional (NULL where not offered; CUDA): n frozen products with bf16 outputs: outb[i]
     * (N, rows_i) = x W_i^T, summed in float32 and rounded once to bf16 (nearest even), from
     * xb (x's bf16 rounding) or, when xb is NULL, x rounded by the backend; no bias, no
     * accumulation (what a bf16 layer under PyTorch's autocast writes). Every weight bf16,
     * not quantized, of one width; returns false, having done nothing, otherwise. xk > 0
     * (xb given, every weight's row stride at least its width + xk): the products run over
     * xk more inner columns, each weight's spare columns (->weight_room) against the
     * columns of xb (row stride width + xk) past x's — [x | u] [W | v]^T in one sum. */
    bool (*matmul_n_bo)(lc_backend *be, int n, void *const *outb, const float *x, const void *xb,
                        const lc_wt *const *w, int64_t N, int64_t xk);
    /* Optional (NULL where not offered; CUDA): ->rmsnorm that also writes out's bf16
     * rounding (round to nearest even) into outb, rows of ldb values (0: C; the columns
     * past C left as they are); out may be NULL (only outb written). */
    void (*rmsnorm_b)(lc_backend *be, float *out, void *outb, int64_t ldb, float *rstd, const float *x, const float *w,
                      int64_t N, int64_t C, float eps);
    /* Optional (NULL where not offered; CUDA): ->rmsnorm_bwd that also writes the updated
     * dx's bf16 rounding (round to nearest even) into dxb (N, C; row stride ldb >= C, the
     * columns beyond C untouched): the same dx bits (ldb even; an odd one may sum dx in
     * another order). */
    void (*rmsnorm_bwd_b)(lc_backend *be, float *dx, void *dxb, int64_t ldb, const float *dout, const float *x,
                          const float *w, const float *rstd, int64_t N, int64_t C);
    /* Optional (NULL where not offered; CUDA): ->rope_bwd out of place, rounded: outb
     * (B,T,H,D bf16, ldo values from one token's row of heads to the next: H·D packed) = the
     * bf16 rounding of R^T dx; dx is left as it was. */
    void (*rope_bwd_b)(lc_backend *be, void *outb, int64_t ldo, const float *dx, const float *cos, const float *sin,
                       int64_t B, int64_t T, int64_t H, int64_t D, int64_t pos0);
    /* Optional (NULL where not offered; CUDA): out (n bf16) = x rounded to nearest even. */
    void (*to_bf16)(lc_backend *be, void *out, const float *x, size_t n);
    /* Optional (NULL where not offered; CUDA): out (rows, cols bf16; row stride ldo) = x
     * (rows, cols, packed) rounded to nearest even; cols even. */
    void (*to_bf16_rows)(lc_backend *be, void *out, int64_t ldo, const float *x, int64_t rows, int64_t cols);
    /* Optional (NULL where not offered; CUDA): out (cols, rows bf16; row stride ldo) = scale
     * x^T, x (rows, cols, packed), each value's product with scale rounded to nearest even:
     * an adapter's a (in, r) as a^T's rows, or its b (r, out) times its scale as columns. */
    void (*to_bf16_t)(lc_backend *be, void *out, int64_t ldo, const float *x, int64_t rows, int64_t cols,
                      float scale);
    /* Optional (NULL where not offered; CUDA; offered with the two below): ->rope out of
     * place, rounded: outb (B,T,H,D bf16, row stride ldo as ->rope_bwd_b's) = the bf16
     * rounding of R x; x is left as it was. */
    void (*rope_b)(lc_backend *be, void *outb, int64_t ldo, const float *x, const float *cos, const float *sin,
                   int64_t B, int64_t T, int64_t H, int64_t D, int64_t pos0);
    /* Optional (NULL where not offered; CUDA): ->attention of training (pos0 0, S = T) with
     * q, k, v and out bf16 (the bf16 rounding of what ->attention writes from the same
     * values; lse float32), and its backward from them (->attention_bwd's results from the
     * same values): the activations training keeps only as bf16. */
    void (*attention_b)(lc_backend *be, void *out, float *lse, const void *q, const void *k, const void *v,
                        int64_t B, int64_t T, int64_t H, int64_t KV, int64_t D);
    void (*attention_bwd_b)(lc_backend *be, float *dq, float *dk, float *dv, const float *dout, const void *q,
                            const void *k, const void *v, const void *out, const float *lse, int64_t B, int64_t T,
                            int64_t H, int64_t KV, int64_t D);
    /* Optional (NULL where not offered; CUDA; with ->attention_bwd_b, ->rope_bwd_b and
     * ->to_bf16_rows): ->attention_bwd_b with its results rotated back and rounded as
     * ->rope_bwd_b (dq, dk) and ->to_bf16_rows (dv) would: dqb (B,T,H,D), dkb and dvb
     * (B,T,KV,D), bf16, ldq / ldkv values from one token's row to the next; cos/sin as
     * ->rope's (positions 0..T-1). The same bits as those three calls. dq, dk, dv are room
     * ->attention_bwd_b's float32 results may take (their contents after: undefined). */
    void (*attention_bwd_rb)(lc_backend *be, void *dqb, void *dkb, void *dvb, int64_t ldq, int64_t ldkv, float *dq,
                             float *dk, float *dv, const float *dout, const void *q, const void *k, const void *v,
                             const void *out, const float *lse, const float *cos, const float *sin, int64_t B,
                             int64_t T, int64_t H, int64_t KV, int64_t D);
    /* Cross-entropy over rows of logits (N,V): returns the sum over rows with
     * targets[n] >= 0 of logsumexp(row) - row[target] (rows with -1 are ignored). When
     * grad_scale != 0, logits are overwritten (=) with grad_scale * d(loss)/d(logits)
     * (softmax - onehot; ignored rows become 0). */
    double (*cross_entropy)(lc_backend *be, float *logits, const int32_t *targets, int64_t N,
                            int64_t V, float grad_scale);
    /* ->cross_entropy with nothing read back: *sum (backend memory, one double) += the
     * sum ->cross_entropy returns (the same bits); when grad_scale (backend memory, one
     * float; may be NULL) holds a nonzero g, logits are overwritten (=) with g ·
     * d(loss)/d(logits). The caller downloads *sum after ->sync, so a recorded step
     * (->replay) reads and writes both on the device. */
    void (*cross_entropy_sum)(lc_backend *be, double *sum, float *logits, const int32_t *targets,
                              int64_t N, int64_t V, const float *grad_scale);

    /* ---- one-token decoding (optional: NULL where the backend has none, e.g. CPU) ---- */
    /* Queues one whole decoding step s at position pos (0 <= pos < s->S): logits written,
     * the block's key/value rows stored at pos. Returns 0 (queued; errors come at ->sync),
     * or 1 when this backend does not run this step (shapes, dtypes, a switch): the caller
     * then runs the ops above. CUDA records the step as a graph once and replays it while
     * the descriptor stays the same. The host may queue up to 8 steps before it waits. */
    int (*decode)(lc_backend *be, const lc_decode_step *s, int64_t pos);
    long long decode_captures, decode_replays; // graphs recorded / replayed (tests, notes)
    /* Optional, both or neither (NULL: the model downloads the logits and takes the argmax
     * on the host). argmax queues dst[0] = the argmax of logits[0..V) — lc_sample's greedy:
     * the lowest index among equal largest values, 0 when logits[0] is NaN, other NaNs
     * never chosen — and a copy of it into the host's slot (0 <= slot < LC_ARGMAX_SLOTS),
     * so the next step can read its token from dst without the host in between.
     * argmax_read waits for the work queued up to that slot's argmax and gives its value.
     * Returns 0, or -1 (lc_fail) with the first error since the last sync, as ->sync. */
    void (*argmax)(lc_backend *be, int32_t *dst, const float *logits, int64_t V, int slot);
    int (*argmax_read)(lc_backend *be, int slot, int32_t *id);

    /* ---- recorded steps (optional: NULL where the backend has none, e.g. CPU) ---- */
    /* Runs body(ctx), which queues this backend's operations, either directly or as a
     * replay of a recording: the backend keeps a few recordings keyed by the key's
     * bytes (key_bytes of them, compared with memcmp). A key seen for the first time runs
     * body directly (first-use work: tuning, scratch growth); on the second sighting body
     * is recorded and replayed; from then on an equal key replays without calling body.
     * So body must queue the same operations with the same arguments whenever the key is
     * equal, read whatever differs between calls (ids, scalars) from backend memory that
     * the caller fills before, and never wait for the device. Returns 0 (queued; errors
     * come at ->sync). CUDA runs body directly when LORAC_CUDA_GRAPH=0 or
     * LORAC_CUDA_STEP_GRAPH=0, under LORAC_CUDA_PROFILE, or with quantized weights. */
    int (*replay)(lc_backend *be, const void *key, size_t key_bytes, void (*body)(void *ctx), void *ctx);
    long long step_captures, step_replays; // ->replay's recordings made / replayed
    long long fused_products; // CUDA: products over NF4 weights read from the codes on the tensor cores
};

/* A CPU backend with `threads` OpenMP threads (0: OpenMP's default). Never NULL.
 * Products with BF16 weights start in float32 (the weight converted panel by panel). */
lc_backend *lc_backend_cpu_new(int threads);
/* on: products with BF16 weights round their activations to bf16 and multiply in bf16
 * with float32 accumulation (PyTorch's bf16 arithmetic; about twice the speed), where the
 * CPU has AVX512-BF16; off: float32. Returns whether bf16 products are now on. */
bool lc_backend_cpu_set_bf16(lc_backend *be, bool on);

/* A CUDA backend on GPU `device` (src/backend/cuda; only in builds made with nvcc).
 * Products with BF16 weights round activations to bf16 and run in cuBLAS with float32
 * accumulation, except those of up to 8 rows (decoding), which read the float32
 * activations as they are; F32 weights run in float32 (SGEMM). NULL (lc_fail) when
 * there is no usable GPU or driver. */
lc_backend *lc_backend_cuda_new(int device);

/* A backend by name (src/backend/select.c): "cpu", "cuda" or "cuda:N" (GPU N), "auto"
 * (cuda when this build has it and a GPU answers, else cpu). NULL (lc_fail) when the
 * named one cannot be made (unknown name, no CUDA in this build, no GPU). */
lc_backend *lc_backend_new(const char *device);
/* The backends this build has, e.g. "cpu, cuda". */
const char *lc_backend_list(void);

#endif
