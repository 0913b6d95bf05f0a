/*
 * cuda.h — internals of the CUDA backend shared by its files (cuda.cu: the table,
 * memory, elementwise ops, layers and products; attention.cu: attention forward and
 * backward in float32; attention_tc.cu: the tensor-core kernels for training shapes;
 * gemm.cu: tuned cuBLASLt bf16 products; lora_gemm.cu: the adapters' small fp32
 * products; quant.cu: quantized weights (their bf16 copies, decoding products from the
 * codes); decode.cu: the fused one-token decoding step and its CUDA graph; graph.cu: the
 * training step recorded as a CUDA graph and replayed). CUDA C++ only; the C code sees
 * the backend through backend/backend.h.
 *
 * Streams: every op queues its work on c->st, which is 0 (the legacy default stream,
 * ordered with cudaMemcpy) except while graph.cu runs, records or replays a step on its
 * own blocking stream (still ordered with the legacy stream).
 *
 * Errors: every runtime and cuBLAS call is checked; the first failure is kept in the
 * backend (lc_cuda.err) and ->sync reports it as one lc_fail line, since the
 * operations themselves cannot fail by the interface's contract.
 */
#ifndef LC_BACKEND_CUDA_H
#define LC_BACKEND_CUDA_H

#include <cublas_v2.h>
#include <cuda_runtime.h>

extern "C" {
#include "backend/backend.h"
#include "core/error.h"
}

typedef struct {
    int device;
    char name[256];          // the card's name
    cublasHandle_t blas;
    char err[512];           // the first error since the last sync ("" when none)
    void **weights;          // device copies made by ->weight (freed with the backend)
    size_t n_weights, cap_weights;
    void *xb;                // bf16 scratch for product operands
    size_t xb_cap;           // bytes
    struct lc_cuda_wq **wqs; // descriptors of the quantized weights on the card (freed with the backend)
    size_t n_wqs, cap_wqs;
    float *rows;             // per-row scratch (cross-entropy losses, attention D)
    size_t rows_cap;         // floats
    float *att32;            // float32 copies of bf16 attention operands the tensor cores cannot take
    size_t att32_cap;        // floats
    float *host_rows;        // pinned host copy of rows' losses
    size_t host_rows_cap;
    bool pdl;                // launch the small-N product programmatically (sm_90+, LORAC_CUDA_PDL != 0)
    unsigned *counter;       // LC_NCOUNTERS device words for single-launch reductions (zero between launches)
    unsigned *flag;          // one device word for ->all_finite (NULL until used)
    int32_t *amax_host;      // ->argmax's slots, mapped pinned host memory (NULL until used)
    cudaEvent_t amax_ev[LC_ARGMAX_SLOTS]; // recorded after each slot's argmax
    double *part;            // ->sumsq's partial sums (NULL until used)
    struct lc_cuda_prof *prof; // LORAC_CUDA_PROFILE=1: per-op event timings (else NULL)
    struct lc_cuda_lt *lt;     // gemm.cu: cuBLASLt handle, tuned plans, workspace (NULL until used)
    struct lc_cuda_q *q;     // quant.cu's buffers, stream and events (NULL until a quantized product)
    struct lc_cuda_qg *qg;   // qgemm.cu's probe and split-K scratch (NULL until an NF4 product)
    struct lc_cuda_dec *dec;   // the one-token decoding step (decode.cu; NULL until first used)
    cudaStream_t st;           // the stream ops queue on (0 but inside graph.cu's steps)
    struct lc_cuda_graph *graph; // graph.cu's recorded training steps (NULL until first used)
} lc_cuda;

/* A quantized weight on the card: the descriptor ->weight points lc_wt.q at (q first, so
 * the two pointers are one), its companions (scales/biases, absmax/absmax2) in device
 * memory as stored, and the nested 8-bit map copied to the card (NULL unless nested). */
struct lc_cuda_wq {
    lc_wquant q;
    float *code2; // device (256)
    // quant.cu: the weight as its last product saw it, and, for its forward [0] and
    // input-gradient [1] product, the quantized weight whose product came next last time
    // (the one to dequantize ahead of time) and whether that was its input gradient (the
    // chain walked further ahead)
    const void *codes;
    int64_t rows, cols;
    struct lc_cuda_wq *next[2];
    int next_dx[2];
};

/* Per-op profile (LORAC_CUDA_PROFILE=1): each op records an event pair on the stream;
 * the pairs are read at ->sync and summed per key (op name and row count), and the
 * table is printed on stderr when the backend is freed. Keys are made with printf
 * formats; a key index is returned for lc_cuda_prof_end. */
int lc_cuda_prof_begin(lc_cuda *c, const char *fmt, long long n);
void lc_cuda_prof_end(lc_cuda *c, int slot);

/* Times the rest of the enclosing scope as one op when profiling is on. */
struct lc_prof_scope {
    lc_cuda *c;
    int slot;
    lc_prof_scope(lc_cuda *c_, const char *fmt, long long n) : c(c_), slot(c_->prof ? lc_cuda_prof_begin(c_, fmt, n) : -1) {}
    ~lc_prof_scope() {
        if (slot >= 0) lc_cuda_prof_end(c, slot);
    }
};
#define LC_PROF(c, fmt, n) lc_prof_scope prof_scope_((c), (fmt), (long long)(n))

/* Records the first error (file:line, what, why) unless one is already kept. */
void lc_cuda_error(lc_cuda *c, const char *file, int line, const char *what, const char *why);

#define LC_CK(c, call)                                                                        \
    do {                                                                                      \
        cudaError_t e_ = (call);                                                              \
        if (e_ != cudaSuccess) lc_cuda_error((c), __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
    } while (0)

/* The same for a cuBLAS / cuBLASLt call. */
#define LC_BK(c, call)                                                                        \
    do {                                                                                      \
        cublasStatus_t s_ = (call);                                                           \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                      \
            lc_cuda_error((c), __FILE__, __LINE__, #call, cublasGetStatusString(s_));         \
    } while (0)

/* Programmatic dependent launch (Hopper): a kernel that starts with LC_PDL_TRIGGER lets a
 * successor launched with the programmatic attribute (the small-N product) start its
 * blocks early; that successor waits (LC_PDL_WAIT) for this grid's completion before it
 * reads or writes anything an earlier op touches. No-ops below sm_90. */
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define LC_PDL_TRIGGER() asm volatile("griddepcontrol.launch_dependents;" ::: "memory")
#define LC_PDL_WAIT() asm volatile("griddepcontrol.wait;" ::: "memory")
#else
#define LC_PDL_TRIGGER() ((void)0)
#define LC_PDL_WAIT() ((void)0)
#endif

/* One rotary pair of the rotate-half layout: (y1, y2) = (x1 c − x2 s, x2 c + x1 s) (the
 * inverse rotation passes s negated), each with x1's product fused (fma(x1, c, −x2 s),
 * fma(x1, s, x2 c)) and written out, so that no compiler choice moves a bit: ->rope's kernel
 * and the attention backward that rotates its results (attention_tc.cu) give the same bits. */
__device__ __forceinline__ void lc_rope_pair(float x1, float x2, float c, float s, float &y1, float &y2) {
    y1 = __fmaf_rn(x1, c, -__fmul_rn(x2, s));
    y2 = __fmaf_rn(x1, s, __fmul_rn(x2, c));
}

/* The end of a small-N product's warp (cuda.cu's bf16 rows, quant.cu's rows from codes):
 * lane sums s[0..NR) over the warp, and lane n writes row n's output o of O (+ bias[o];
 * added to what is there when acc). */
template <int NR>
__device__ __forceinline__ void lc_gemv_store(float *s, int lane, float *out, const float *bias, int o, int O,
                                              int acc) {
#pragma unroll
    for (int n = 0; n < NR; n++) {
        float t = s[n];
        for (int d = 16; d > 0; d >>= 1) t += __shfl_xor_sync(0xffffffffu, t, d);
        s[n] = t;
    }
    if (lane < NR) {
        float r = 0.0f;
#pragma unroll
        for (int n = 0; n < NR; n++)
            if (n == lane) r = s[n];
        if (bias) r += bias[o];
        float *op = out + (size_t)lane * O + o;
        *op = acc ? *op + r : r;
    }
}

/* Checks the launch just made. */
#define LC_LAUNCHED(c) LC_CK(c, cudaGetLastError())

/* Ends the program with the one out-of-memory line (->alloc's contract). */
void lc_cuda_oom(lc_cuda *c, size_t bytes, const char *what);

/* quant.cu: a bf16 view of quantized weight w for one product, forward (dx false) or
 * input gradient (dx true) (valid until the product after next is asked for); the
 * caller queues its product on the cuBLAS handle's stream right after. */
lc_wt lc_cuda_dequantized(lc_cuda *c, const lc_wt *w, bool dx);
/* qgemm.cu: whether the tensor-core product reading NF4 codes takes weight w with N
 * activation rows (9..256; LORAC_CUDA_QGEMM, format, shape, an sm_90a-capable card). */
bool lc_cuda_qgemm_ok(lc_cuda *c, const lc_wt *w, int64_t N);
/* Whether it takes the n weights of one input together (each one ok, the same columns and
 * the same 4-bit map). */
bool lc_cuda_qgemm_n_ok(lc_cuda *c, int n, const lc_wt *const *w, int64_t N);
/* That product (lc_cuda_qgemm_ok true): out (N, rows) (=, += when accumulate) x (N, cols)
 * W^T + bias, x float32 (rounded to bf16 as the copy path rounds it), on c->st. */
void lc_cuda_qgemm(lc_cuda *c, float *out, const float *x, const lc_wt *w, const float *bias, int64_t N,
                   bool accumulate);
/* n of them over one x (lc_cuda_qgemm_n_ok true) in one launch: x converted once, the
 * weights' row tiles side by side; bias may be NULL. The same values as n lc_cuda_qgemm
 * calls. */
void lc_cuda_qgemm_n(lc_cuda *c, int n, float *const *out, const float *x, const lc_wt *const *w,
                     const float *const *bias, int64_t N, bool accumulate);
/* Frees qgemm.cu's state (with the backend). */
void lc_cuda_qgemm_free(lc_cuda *c);
/* quant.cu: out (N,O) (+)= x W^T (+ bias) for N <= 8 rows read straight from a quantized
 * weight's codes (NF4, affine 4/8-bit; the bf16 copy path's values); returns false,
 * having done nothing, for other formats or shapes, or with LORAC_CUDA_QGEMV=0. */
bool lc_cuda_qgemv(lc_cuda *c, float *out, const float *x, const lc_wt *w, const float *bias, int64_t N,
                   bool accumulate);
/* out (N, cols) = rows tokens[0..N) of quantized table, float32 as the CPU computes them. */
void lc_cuda_embedding_q(lc_cuda *c, float *out, const int32_t *tokens, const lc_wt *table, int64_t N);
/* Frees quant.cu's state and the whole-weight scratch (with the backend). */
void lc_cuda_quant_free(lc_cuda *c);

/* The most dequantization buffers (LORAC_CUDA_DQ_DEPTH's largest value). */
#define LC_CUDA_DQ_MAX 4
/* What quant.cu's buffers hold once a recorded step has run (its host bookkeeping at the
 * end of the recording; every replay leaves the buffers the same). */
typedef struct {
    const struct lc_cuda_wq *holds[LC_CUDA_DQ_MAX];
    unsigned long long used[LC_CUDA_DQ_MAX], clock;
    int cur;
    struct lc_cuda_wq *last;
    int last_dx;
} lc_cuda_qsnap;
/* graph.cu's steps over quantized weights. Before recording or replaying on stream st
 * (outside capture): st waits for the dequantization stream's queued work. */
void lc_cuda_quant_graph_enter(lc_cuda *c, cudaStream_t st);
/* Right after cudaStreamBeginCapture(st): forgets what the buffers hold (the recording
 * dequantizes its first product itself) and forks the dequantization stream from st. */
void lc_cuda_quant_capture_fork(lc_cuda *c, cudaStream_t st);
/* Right before cudaStreamEndCapture(st): joins the dequantization stream back into st;
 * *snap = what the buffers hold at the end of the recording. */
void lc_cuda_quant_capture_join(lc_cuda *c, cudaStream_t st, lc_cuda_qsnap *snap);
/* After a recorded step's launch on st, or a failed recording (snap NULL: the buffers'
 * contents are forgotten): the events and bookkeeping match what the buffers hold. */
void lc_cuda_quant_graph_leave(lc_cuda *c, cudaStream_t st, const lc_cuda_qsnap *snap);
/* The dequantization buffers a recording points at: bufs[LC_CUDA_DQ_MAX] (NULL where not
 * allocated), *cap their size in bytes (0 before any). */
void lc_cuda_quant_buffers(lc_cuda *c, const void **bufs, size_t *cap);

/* Grows the backend's per-row scratch to n floats; returns it. */
float *lc_cuda_rows(lc_cuda *c, size_t n);
/* Whether the wide kernels may run (16-byte, pair and row-vector twins of the elementwise,
 * norm and adapter kernels, the same bits): false when LORAC_CUDA_VEC=0. */
bool lc_cuda_vec(void);
/* The backend's bf16 scratch with room for `bytes` (grown as needed, kept): what one op
 * rounds its float32 operands into; nothing in it outlives the op. */
void *lc_cuda_xb(lc_cuda *c, size_t bytes);

/* gemm.cu. Column-major out (m,n) = op(W) (m,k) · x (k,n) + beta out, W and x bf16, out
 * float32 (cublasGemmEx's meaning, op(W) = W^T when ta), through cuBLASLt with the
 * algorithm tuned for the shape on first use. */
void lc_cuda_gemm_bf16(lc_cuda *c, bool ta, int m, int n, int k, const void *W, int lda, const void *x, int ldb,
                       float beta, float *out, int ldc);
/* lc_cuda_gemm_bf16 with a bf16 out (the float32 sums rounded once, nearest even), beta 0. */
void lc_cuda_gemm_bf16o(lc_cuda *c, bool ta, int m, int n, int k, const void *W, int lda, const void *x, int ldb,
                        void *out, int ldc);
#define LC_NCOUNTERS 128 // arrival counters at c->counter (LC_GEMM_N_MAX products × 16 row tiles)
/* lora_gemm.cu: the adapters' fp32 product C = alpha op(A) op(B) + beta C (->gemm's
 * meaning) when a kernel there takes its shape (rank-sized side <= 32, few rows);
 * returns false, having done nothing, otherwise. tf32: cuBLAS would run it on TF32 tensor
 * cores (->lora_tf32), which moves some shapes back to cuBLAS. */
bool lc_cuda_lora_gemm(lc_cuda *c, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                       int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc, bool tf32);
/* ->gemm_n: products of one lora_gemm.cu kernel class in one launch (the same bits as
 * one by one), anything else as ->gemm calls in order. */
void lc_cuda_gemm_n(lc_backend *be, int n, const lc_gemm_args *g);
/* ->lora_dy (lora_dy.cu). */
bool lc_cuda_lora_dy(lc_backend *be, int n, int64_t N, int64_t r, float s, const lc_dy_args *a);
/* ->swiglu_lora (lora_gemm.cu; rank r <= 32). */
void lc_cuda_swiglu_lora(lc_backend *be, float *h, void *gu, float *gate, float *up, int64_t N, int64_t I,
                         const float *ug, const float *bg, const float *uu, const float *bu, int r, float scale,
                         void *hb);
/* Frees gemm.cu's state (with the backend). */
void lc_cuda_lt_free(lc_cuda *c);

void lc_cuda_attention(lc_backend *be, float *out, float *lse, const float *q, const float *k,
                       const float *v, int64_t B, int64_t Tq, int64_t S, int64_t H, int64_t KV,
                       int64_t D, int64_t pos0);
void lc_cuda_attention_bwd(lc_backend *be, float *dq, float *dk, float *dv, const float *dout,
                           const float *q, const float *k, const float *v, const float *out,
                           const float *lse, int64_t B, int64_t T, int64_t H, int64_t KV, int64_t D);

/* Tensor-core attention (attention_tc.cu). Whether it takes a call: pos0 = 0, Tq ≥ LORAC_CUDA_ATT_MIN_T (16),
 * S ≥ Tq, D 64 or 128, the n tensors in ptrs 16-byte aligned, LORAC_CUDA_ATT is not
 * "fp32", and the kernels' shared memory fits the device (the default configuration or,
 * where it does not or LORAC_CUDA_ATT_SMALL=1, the small one). */
bool lc_cuda_att_tc_ok(int64_t Tq, int64_t S, int64_t D, int64_t pos0, const void *const *ptrs, int n);
/* Forward with pos0 = 0: out (B,T,H,D) =, lse (B,H,T) = (may be NULL); q, k, v (B,S,KV,D)
 * bf16; out float32, or with out16 bf16. */
void lc_cuda_att_tc_fwd(lc_cuda *c, void *out, bool out16, float *lse, const void *q, const void *k, const void *v,
                        int64_t B, int64_t T, int64_t S, int64_t H, int64_t KV, int64_t D);
/* Backward (attention_bwd's contract: dq, dk, dv =) given Dr (B,H,T) = rowsum(dout·out);
 * dout, q, k, v bf16. */
void lc_cuda_att_tc_bwd(lc_cuda *c, float *dq, float *dk, float *dv, const void *dout, const void *q, const void *k,
                        const void *v, const float *lse, const float *Dr, int64_t B, int64_t T, int64_t H, int64_t KV,
                        int64_t D);
/* The same backward with its results rotated back and rounded (->attention_bwd_rb's
 * contract): dqb (B,T,H,D) = bf16(R^T dq), dkb = bf16(R^T dk), dvb = bf16(dv), rows of ldq
 * (dq) and ldkv (dk, dv) values from one token to the next; cos/sin (T, D/2) at positions
 * 0..T-1. The rotation and rounding are ->rope_bwd_b's and ->to_bf16's, so the same bits. */
void lc_cuda_att_tc_bwd_rb(lc_cuda *c, void *dqb, void *dkb, void *dvb, int64_t ldq, int64_t ldkv, const void *dout,
                           const void *q, const void *k, const void *v, const float *lse, const float *Dr,
                           const float *cos, const float *sin, int64_t B, int64_t T, int64_t H, int64_t KV, int64_t D);
/* ->attention_b and ->attention_bwd_b (attention.cu): q, k, v, out bf16, training's pos0 0. */
void lc_cuda_attention_b(lc_backend *be, void *out, float *lse, const void *q, const void *k, const void *v,
                         int64_t B, int64_t T, int64_t H, int64_t KV, int64_t D);
void lc_cuda_attention_bwd_b(lc_backend *be, float *dq, float *dk, float *dv, const float *dout, const void *q,
                             const void *k, const void *v, const void *out, const float *lse, int64_t B, int64_t T,
                             int64_t H, int64_t KV, int64_t D);
void lc_cuda_attention_bwd_rb(lc_backend *be, void *dqb, void *dkb, void *dvb, int64_t ldq, int64_t ldkv, float *dq,
                              float *dk, float *dv, const float *dout, const void *q, const void *k, const void *v,
                              const void *out, const float *lse, const float *cos, const float *sin, int64_t B,
                              int64_t T, int64_t H, int64_t KV, int64_t D);
/* gemm.cu: the cuBLASLt workspace a recorded product points at, and its size (NULL, 0
 * before any product). */
void lc_cuda_lt_ws(lc_cuda *c, const void **ws, size_t *bytes);

/* graph.cu: ->replay (a training step recorded as a CUDA graph, cached by its key) and
 * the release of its stream and graphs (called by ->free). */
int lc_cuda_replay(lc_backend *be, const void *key, size_t key_bytes, void (*body)(void *ctx), void *ctx);
void lc_cuda_graph_free(lc_cuda *c);

/* decode.cu: ->decode (the fused one-token step, recorded as a CUDA graph) and the
 * release of its stream, scratch and graph (called by ->free). */
int lc_cuda_decode(lc_backend *be, const lc_decode_step *s, int64_t pos);
void lc_cuda_decode_free(lc_cuda *c);
/* The decoding step's stream once it has one (ops that follow a step there, ->argmax,
 * queue behind it without a wait across streams), else c->st. */
cudaStream_t lc_cuda_decode_stream(lc_cuda *c);

#endif
