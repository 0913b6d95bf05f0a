/*
 * cuda.h — internals of the CUDA backend shared by its files (cuda.cu: the table,
 * memory, elementwise ops, layers and products; attention.cu: attention forward and
 * backward; decode.cu: the fused one-token decoding step and its CUDA graph). CUDA
 * C++ only; the C code sees the backend through backend/backend.h.
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
    void *wdq;               // bf16 scratch: one quantized weight dequantized (largest seen)
    size_t wdq_cap;          // bytes
    struct lc_cuda_wq **wqs; // descriptors of the quantized weights on the card (freed with the backend)
    size_t n_wqs, cap_wqs;
    float *rows;             // per-row scratch (cross-entropy losses, attention D)
    size_t rows_cap;         // floats
    float *host_rows;        // pinned host copy of rows' losses
    size_t host_rows_cap;
    bool pdl;                // launch the small-N product programmatically (sm_90+, LORAC_CUDA_PDL != 0)
    unsigned *counter;       // device word for single-launch reductions (zero between launches)
    struct lc_cuda_prof *prof; // LORAC_CUDA_PROFILE=1: per-op event timings (else NULL)
    struct lc_cuda_dec *dec;   // the one-token decoding step (decode.cu; NULL until first used)
} lc_cuda;

/* A quantized weight on the card: the descriptor ->weight points lc_wt.q at (q first, so
 * the two pointers are one), its companions (scales/biases, absmax/absmax2) in device
 * memory as stored, and the nested 8-bit map copied to the card (NULL unless nested). */
struct lc_cuda_wq {
    lc_wquant q;
    float *code2; // device (256)
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

/* Checks the launch just made. */
#define LC_LAUNCHED(c) LC_CK(c, cudaGetLastError())

/* Grows the backend's per-row scratch to n floats; returns it. */
float *lc_cuda_rows(lc_cuda *c, size_t n);

void lc_cuda_attention(lc_backend *be, float *out, float *lse, const float *q, const float *k,
                       const float *v, int64_t B, int64_t Tq, int64_t S, int64_t H, int64_t KV,
                       int64_t D, int64_t pos0);
void lc_cuda_attention_bwd(lc_backend *be, float *dq, float *dk, float *dv, const float *dout,
                           const float *q, const float *k, const float *v, const float *out,
                           const float *lse, int64_t B, int64_t T, int64_t H, int64_t KV, int64_t D);

/* decode.cu: ->decode (the fused one-token step, recorded as a CUDA graph) and the
 * release of its stream, scratch and graph (called by ->free). */
int lc_cuda_decode(lc_backend *be, const lc_decode_step *s, int64_t pos);
void lc_cuda_decode_free(lc_cuda *c);

#endif
