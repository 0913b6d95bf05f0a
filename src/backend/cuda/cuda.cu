/*
 * cuda.cu — the CUDA backend: its table, device memory, frozen weights on the card,
 * the elementwise and per-row layers (dropout, embedding, RMSNorm, RoPE, SwiGLU,
 * cross-entropy) and the matrix products: cuBLAS (bf16 × bf16 with float32
 * accumulation for BF16 weights, SGEMM for F32 weights); for BF16 products of up to 8
 * rows (decoding) a GEMV-style kernel that streams the weight once in 16-byte loads and
 * reads the float32 input as it is; the adapters' fp32 products of up to 256 rows (the
 * recipe, decoding) run lora_gemm.cu's kernels where cuBLAS picks one slow block.
 * Quantized weights (NF4, MLX affine) live on the card as stored; a product over one
 * reads the codes where a kernel does (up to 8 rows: quant.cu's k_qgemv; forward products
 * of 9..256 rows over NF4 on sm_90a cards: qgemm.cu), else takes quant.cu's bf16 view of
 * the whole matrix (dequantized ahead of time on a second stream when the order of
 * products repeats) down the bf16 path; embedding rows dequantize to float32 (quant.cu).
 *
 * Owns the cuBLAS handle, the device copies of the weights (->weight) and the scratch
 * buffers (bf16 operands, a dequantized weight, per-row values, reduction counters)
 * and the quantized weights' descriptors; all are freed with the backend. Work runs on
 * the legacy default stream, so it is ordered with cudaMemcpy; the small-N product is
 * launched with programmatic dependent launch on sm_90 (LORAC_CUDA_PDL=0 turns it off),
 * so its first weight loads overlap the previous op.
 * Every call is checked; the first error is kept and ->sync returns it. Attention lives
 * in attention.cu. Never prints, except the one fatal line of an out-of-memory ->alloc
 * (whose contract, like xmalloc's, is to end the program) and, when a developer sets
 * LORAC_CUDA_PROFILE=1, the per-op timing table on stderr when the backend is freed.
 *
 * Numerics: each kernel computes what its CPU counterpart computes, in float32 with
 * float32 reductions (the CPU reduces some rows in double; the differences stay near
 * 1e-7 relative); dropout's mask is the CPU's hash bit for bit. Results are the same
 * bits run to run (no atomics in any sum).
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <type_traits>

#include "backend/cuda/cuda.h"

extern "C" {
#include "backend/quant.h"
#include "core/mem.h"
}

/* ------------------------------------------------------------ errors */

void lc_cuda_error(lc_cuda *c, const char *file, int line, const char *what, const char *why) {
    if (c->err[0]) return;
    const char *base = strrchr(file, '/');
    snprintf(c->err, sizeof c->err, "cuda backend (%s:%d): %s failed: %s", base ? base + 1 : file,
             line, what, why);
}

static inline lc_cuda *impl(lc_backend *be) { return (lc_cuda *)be->impl; }

/* Blocks for n elements at 256 threads (grid-stride loops cover the rest). */
static inline unsigned blocks_for(size_t n) {
    size_t b = (n + 255) / 256;
    if (b > 65535u * 16u) b = 65535u * 16u;
    return b ? (unsigned)b : 1u;
}


/* ------------------------------------------------------------ profile */

#define PROF_KEYS 128
#define PROF_PENDING 8192

struct lc_cuda_prof {
    char key[PROF_KEYS][48];
    double ms[PROF_KEYS];
    long long count[PROF_KEYS];
    int nkeys;
    cudaEvent_t ev[PROF_PENDING][2];
    int evkey[PROF_PENDING];
    int pending;
};

static void prof_drain(lc_cuda *c) {
    lc_cuda_prof *p = c->prof;
    if (!p->pending) return;
    cudaEventSynchronize(p->ev[p->pending - 1][1]);
    for (int i = 0; i < p->pending; i++) {
        float ms = 0;
        if (cudaEventElapsedTime(&ms, p->ev[i][0], p->ev[i][1]) == cudaSuccess) p->ms[p->evkey[i]] += ms;
        else cudaGetLastError();
        p->count[p->evkey[i]]++;
    }
    p->pending = 0;
}

int lc_cuda_prof_begin(lc_cuda *c, const char *fmt, long long n) {
    lc_cuda_prof *p = c->prof;
    char k[48];
    snprintf(k, sizeof k, fmt, n);
    int key = 0;
    while (key < p->nkeys && strcmp(p->key[key], k)) key++;
    if (key == p->nkeys) {
        if (p->nkeys == PROF_KEYS) key = PROF_KEYS - 1; // the last key collects the rest
        else snprintf(p->key[p->nkeys++], sizeof p->key[0], "%s", k);
    }
    if (p->pending == PROF_PENDING) prof_drain(c);
    int slot = p->pending++;
    p->evkey[slot] = key;
    cudaEventRecord(p->ev[slot][0], 0);
    return slot;
}

void lc_cuda_prof_end(lc_cuda *c, int slot) { cudaEventRecord(c->prof->ev[slot][1], 0); }

static void prof_start(lc_cuda *c) {
    const char *e = getenv("LORAC_CUDA_PROFILE");
    if (!e || !*e || !strcmp(e, "0")) return;
    c->prof = (lc_cuda_prof *)xcalloc(1, sizeof *c->prof);
    for (int i = 0; i < PROF_PENDING; i++)
        for (int j = 0; j < 2; j++) LC_CK(c, cudaEventCreate(&c->prof->ev[i][j]));
}

/* The table, largest total first (stderr: a developer's switch, asked for by env). */
static void prof_finish(lc_cuda *c) {
    lc_cuda_prof *p = c->prof;
    if (!p) return;
    prof_drain(c);
    int ord[PROF_KEYS];
    double tot = 0;
    for (int i = 0; i < p->nkeys; i++) ord[i] = i, tot += p->ms[i];
    for (int i = 1; i < p->nkeys; i++)
        for (int j = i; j > 0 && p->ms[ord[j]] > p->ms[ord[j - 1]]; j--) {
            int t = ord[j];
            ord[j] = ord[j - 1], ord[j - 1] = t;
        }
    fprintf(stderr, "lorac cuda profile (event time per op; %.1f ms in all)\n%-40s %10s %9s %9s %6s\n", tot,
            "op", "total ms", "calls", "mean us", "share");
    for (int i = 0; i < p->nkeys; i++) {
        int k = ord[i];
        fprintf(stderr, "%-40s %10.2f %9lld %9.2f %5.1f%%\n", p->key[k], p->ms[k], p->count[k],
                p->count[k] ? 1e3 * p->ms[k] / (double)p->count[k] : 0.0, tot > 0 ? 100 * p->ms[k] / tot : 0.0);
    }
    for (int i = 0; i < PROF_PENDING; i++) cudaEventDestroy(p->ev[i][0]), cudaEventDestroy(p->ev[i][1]);
    free(p);
    c->prof = NULL;
}

/* ------------------------------------------------------------ memory */

static void fatal_oom(lc_cuda *c, size_t bytes, const char *what) {
    size_t fr = 0, tot = 0;
    cudaMemGetInfo(&fr, &tot);
    fprintf(stderr,
            "fatal: out of GPU memory on %s: %s of %.1f MiB failed (%.1f MiB free of %.1f); lower "
            "batch_size or max_seq_length, or turn on grad_checkpoint\n",
            c->name, what, bytes / 1048576.0, fr / 1048576.0, tot / 1048576.0);
    exit(1);
}

void lc_cuda_oom(lc_cuda *c, size_t bytes, const char *what) { fatal_oom(c, bytes, what); }

static int cu_mem_info(lc_backend *be, size_t *fr, size_t *tot) {
    lc_cuda *c = impl(be);
    if (cudaMemGetInfo(fr, tot) != cudaSuccess) {
        cudaGetLastError();
        return lc_fail("cuda backend: cannot read %s's free memory", c->name);
    }
    return 0;
}

static void *cu_alloc(lc_backend *be, size_t bytes) {
    lc_cuda *c = impl(be);
    void *p = NULL;
    if (!bytes) bytes = 1;
    if (cudaMalloc(&p, bytes) != cudaSuccess) {
        cudaGetLastError();
        fatal_oom(c, bytes, "cudaMalloc");
    }
    LC_CK(c, cudaMemset(p, 0, bytes));
    return p;
}

static void *cu_alloc_shared(lc_backend *be, size_t bytes) {
    lc_cuda *c = impl(be);
    void *p = NULL;
    if (!bytes) bytes = 1;
    if (cudaMallocManaged(&p, bytes, cudaMemAttachGlobal) != cudaSuccess) {
        cudaGetLastError();
        fatal_oom(c, bytes, "cudaMallocManaged");
    }
    LC_CK(c, cudaDeviceSynchronize()); // the host may write it as soon as this returns
    memset(p, 0, bytes);
    return p;
}

static void cu_release(lc_backend *be, void *p) {
    if (p) LC_CK(impl(be), cudaFree(p));
}

static void cu_upload(lc_backend *be, void *dst, const void *host, size_t bytes) {
    LC_PROF(impl(be), "upload", 0);
    if (bytes) LC_CK(impl(be), cudaMemcpy(dst, host, bytes, cudaMemcpyDefault));
}

static void cu_download(lc_backend *be, void *host, const void *src, size_t bytes) {
    LC_PROF(impl(be), "download", 0);
    if (bytes) LC_CK(impl(be), cudaMemcpy(host, src, bytes, cudaMemcpyDefault));
}

static int cu_sync(lc_backend *be) {
    lc_cuda *c = impl(be);
    LC_CK(c, cudaDeviceSynchronize());
    if (c->prof) prof_drain(c);
    if (!c->err[0]) return 0;
    lc_fail("%s", c->err);
    c->err[0] = 0;
    return -1;
}

float *lc_cuda_rows(lc_cuda *c, size_t n) {
    if (c->rows_cap < n) {
        if (c->rows) LC_CK(c, cudaFree(c->rows));
        c->rows = NULL;
        if (cudaMalloc(&c->rows, n * sizeof(float)) != cudaSuccess) fatal_oom(c, n * 4, "scratch");
        c->rows_cap = n;
    }
    return c->rows;
}

static void *xb_get(lc_cuda *c, size_t bytes) {
    if (c->xb_cap < bytes) {
        if (c->xb) LC_CK(c, cudaFree(c->xb));
        c->xb = NULL;
        if (cudaMalloc(&c->xb, bytes) != cudaSuccess) fatal_oom(c, bytes, "bf16 scratch");
        c->xb_cap = bytes;
    }
    return c->xb;
}

void *lc_cuda_xb(lc_cuda *c, size_t bytes) { return xb_get(c, bytes); }

/* Keeps device pointer d to free with the backend. */
static void keep_weight(lc_cuda *c, void *d) {
    if (c->n_weights == c->cap_weights) {
        c->cap_weights = c->cap_weights ? 2 * c->cap_weights : 64;
        c->weights = (void **)xrealloc(c->weights, c->cap_weights * sizeof(void *));
    }
    c->weights[c->n_weights++] = d;
}

/* A device copy of bytes of host memory (kept for the backend to free), or NULL (error
 * recorded: out of device memory) for a weight of rows × cols. */
static void *dev_copy(lc_cuda *c, const void *host, size_t bytes, const lc_wt *w) {
    void *d = NULL;
    if (cudaMalloc(&d, bytes ? bytes : 1) != cudaSuccess) {
        cudaGetLastError();
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        lc_fail("cuda backend: out of GPU memory copying a %lld×%lld weight to %s (%.1f MiB; "
                "%.1f MiB free of %.1f); the model does not fit this card",
                (long long)w->rows, (long long)w->cols, c->name, bytes / 1048576.0, fr / 1048576.0,
                tot / 1048576.0);
        return NULL;
    }
    keep_weight(c, d);
    if (bytes) LC_CK(c, cudaMemcpy(d, host, bytes, cudaMemcpyHostToDevice));
    return d;
}

/* The quantized branch of ->weight: the codes and their companions go to the card as
 * stored (4-bit stays 4-bit); w->q is pointed at a backend-owned descriptor whose
 * pointers are device pointers (the numbers — format, bits, group, maps — copied). */
static int weight_quant(lc_backend *be, lc_wt *w) {
    lc_cuda *c = impl(be);
    const lc_wquant *q = w->q;
    size_t n = (size_t)w->rows * (size_t)w->cols;
    if (q->fmt == LC_QUANT_AFFINE) {
        if ((q->bits != 2 && q->bits != 4 && q->bits != 8) || q->group <= 0 || w->cols % q->group ||
            q->group % (32 / q->bits))
            return lc_fail("cuda backend: an affine weight of %d bits in groups of %lld over %lld columns "
                           "is not a layout the card reads (2/4/8 bits, groups dividing the row)",
                           q->bits, (long long)q->group, (long long)w->cols);
        if (q->sdtype != LC_DT_F32 && q->sdtype != LC_DT_F16 && q->sdtype != LC_DT_BF16)
            return lc_fail("cuda backend: affine scales of dtype %s are not supported (F32, F16, BF16)",
                           lc_dtype_name(q->sdtype));
    } else if (q->fmt != LC_QUANT_NF4 || q->group <= 0 || (q->nested && q->block2 <= 0)) {
        return lc_fail("cuda backend: a quantized weight of an unknown format or block size; "
                       "use --device cpu");
    }
    struct lc_cuda_wq *d = (struct lc_cuda_wq *)xcalloc(1, sizeof *d);
    d->q = *q;
    if (c->n_wqs == c->cap_wqs) {
        c->cap_wqs = c->cap_wqs ? 2 * c->cap_wqs : 64;
        c->wqs = (struct lc_cuda_wq **)xrealloc(c->wqs, c->cap_wqs * sizeof *c->wqs);
    }
    c->wqs[c->n_wqs++] = d;
    void *codes = dev_copy(c, w->data, lc_wq_code_bytes(q->fmt, q->bits, w->rows, w->cols), w);
    if (!codes) return -1;
    if (q->fmt == LC_QUANT_AFFINE) {
        size_t sb = n / (size_t)q->group * lc_dtype_size(q->sdtype);
        if (!(d->q.scales = dev_copy(c, q->scales, sb, w)) || !(d->q.biases = dev_copy(c, q->biases, sb, w)))
            return -1;
    } else {
        size_t nb = (n + (size_t)q->group - 1) / (size_t)q->group;
        if (!(d->q.absmax = dev_copy(c, q->absmax, q->nested ? nb : nb * 4, w))) return -1;
        if (q->nested) {
            size_t nb2 = (nb + (size_t)q->block2 - 1) / (size_t)q->block2;
            if (!(d->q.absmax2 = dev_copy(c, q->absmax2, nb2 * 4, w)) ||
                !(d->code2 = (float *)dev_copy(c, q->code2, sizeof q->code2, w)))
                return -1;
        }
    }
    w->data = codes;
    w->q = &d->q;
    if (c->err[0]) return cu_sync(be);
    return 0;
}

static int cu_weight(lc_backend *be, lc_wt *w) {
    lc_cuda *c = impl(be);
    size_t n = (size_t)(w->rows * w->cols);
    size_t es;
    if (w->q) return weight_quant(be, w);
    if (w->dtype == LC_DT_BF16) es = 2;
    else if (w->dtype == LC_DT_F32 || w->dtype == LC_DT_F16) es = 4; // F16 is widened
    else
        return lc_fail("cuda backend: weights of dtype %s are not supported on the card (BF16, "
                       "F16 and F32 are); use --device cpu or a model stored in bf16",
                       lc_dtype_name(w->dtype));
    void *d = NULL;
    if (cudaMalloc(&d, n * es) != cudaSuccess) {
        cudaGetLastError();
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        return lc_fail("cuda backend: out of GPU memory copying a %lld×%lld weight to %s (%.1f MiB; "
                       "%.1f MiB free of %.1f); the model does not fit this card",
                       (long long)w->rows, (long long)w->cols, c->name, n * es / 1048576.0,
                       fr / 1048576.0, tot / 1048576.0);
    }
    if (w->dtype == LC_DT_F16) {
        size_t chunk = (size_t)1 << 20;
        float *tmp = (float *)xmalloc(chunk * sizeof(float));
        for (size_t i = 0; i < n; i += chunk) {
            size_t m = n - i < chunk ? n - i : chunk;
            lc_to_f32(tmp, (const uint16_t *)w->data + i, LC_DT_F16, m);
            LC_CK(c, cudaMemcpy((float *)d + i, tmp, m * sizeof(float), cudaMemcpyHostToDevice));
        }
        free(tmp);
        w->dtype = LC_DT_F32;
    } else {
        LC_CK(c, cudaMemcpy(d, w->data, n * es, cudaMemcpyHostToDevice));
    }
    keep_weight(c, d);
    w->data = d;
    if (c->err[0]) return cu_sync(be);
    return 0;
}

/* w (out, in) += scale · (a b)^T, element (o, i) a thread: the delta summed in float32 over
 * k in order (a (in, r), b (r, out)), scaled, added to the weight's value, rounded once. */
template <typename TW>
__global__ void k_merge_lora(TW *w, const float *a, const float *b, int64_t in, int64_t out, int64_t ld, int r,
                             float scale) {
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < (size_t)(in * out);
         idx += (size_t)gridDim.x * blockDim.x) {
        size_t o = idx / (size_t)in, i = idx % (size_t)in, e = o * (size_t)ld + i;
        float d = 0.0f;
        for (int k = 0; k < r; k++) d = fmaf(a[i * r + k], b[(size_t)k * out + o], d);
        if constexpr (std::is_same<TW, float>::value) w[e] = w[e] + scale * d;
        else w[e] = __float2bfloat16_rn(__bfloat162float(w[e]) + scale * d);
    }
}

static int cu_merge_lora(lc_backend *be, lc_wt *w, const float *a, const float *b, int64_t r, float scale) {
    lc_cuda *c = impl(be);
    if (w->q || (w->dtype != LC_DT_BF16 && w->dtype != LC_DT_F32))
        return lc_fail("cuda backend: merging adapters needs a bf16 or float32 weight on the card (this one is %s)",
                       w->q ? "quantized" : lc_dtype_name(w->dtype));
    size_t n = (size_t)(w->rows * w->cols);
    if (!n) return 0;
    if (w->dtype == LC_DT_BF16)
        k_merge_lora<<<blocks_for(n), 256, 0, c->st>>>((__nv_bfloat16 *)w->data, a, b, w->cols, w->rows, lc_wt_ld(w),
                                                        (int)r, scale);
    else
        k_merge_lora<<<blocks_for(n), 256, 0, c->st>>>((float *)w->data, a, b, w->cols, w->rows, lc_wt_ld(w), (int)r,
                                                        scale);
    LC_LAUNCHED(c);
    return c->err[0] ? cu_sync(be) : 0;
}

/* ->weight_n: n bf16 weights of one column count in one allocation, one after another. */
static int cu_weight_n(lc_backend *be, int n, lc_wt *const *w) {
    lc_cuda *c = impl(be);
    size_t tot = 0;
    for (int i = 0; i < n; i++) {
        if (w[i]->q || w[i]->dtype != LC_DT_BF16 || w[i]->cols != w[0]->cols || w[i]->ld) return 1;
        tot += (size_t)(w[i]->rows * w[i]->cols) * 2;
    }
    char *d = NULL;
    if (cudaMalloc((void **)&d, tot) != cudaSuccess) {
        cudaGetLastError();
        size_t fr = 0, all = 0;
        cudaMemGetInfo(&fr, &all);
        return lc_fail("cuda backend: out of GPU memory copying %d weights of %lld columns to %s (%.1f MiB; "
                       "%.1f MiB free of %.1f); the model does not fit this card",
                       n, (long long)w[0]->cols, c->name, tot / 1048576.0, fr / 1048576.0, all / 1048576.0);
    }
    keep_weight(c, d);
    for (int i = 0; i < n; i++) {
        size_t b = (size_t)(w[i]->rows * w[i]->cols) * 2;
        LC_CK(c, cudaMemcpy(d, w[i]->data, b, cudaMemcpyHostToDevice));
        w[i]->data = d, d += b;
    }
    if (c->err[0]) return cu_sync(be);
    return 0;
}

/* ->weight_room: the n weights copied on the card into one new allocation, each followed by
 * its extra zeroed rows and, with xcols, each row by its extra zeroed columns (a weight that
 * followed the one before it, with no extra rows between, still does; the others start at
 * 256-byte offsets); the allocations they started freed. */
static int cu_weight_room(lc_backend *be, int n, lc_wt *const *w, const int64_t *extra, const int64_t *xcols) {
    lc_cuda *c = impl(be);
    size_t tot = 0, *off = (size_t *)xmalloc((size_t)(n > 0 ? n : 1) * sizeof *off);
    bool *starts = (bool *)xcalloc((size_t)(n > 0 ? n : 1), sizeof *starts);
    int64_t *ld = (int64_t *)xmalloc((size_t)(n > 0 ? n : 1) * sizeof *ld);
    int rc = 0;
    // an allocation's start (->weight's, ->weight_n's first), or one that follows the weight
    // before it in that weight's allocation (->weight_n's others; two allocations may also lie
    // side by side: a start never follows)
    for (int i = 0; i < n; i++)
        for (size_t k = 0; k < c->n_weights && !starts[i]; k++) starts[i] = c->weights[k] == w[i]->data;
    for (int i = 0; i < n && !rc; i++) {
        int64_t xc = xcols ? xcols[i] : 0;
        ld[i] = w[i]->cols + xc;
        bool follows = i > 0 && !starts[i] && extra[i - 1] == 0 &&
                       (const char *)w[i]->data ==
                           (const char *)w[i - 1]->data + (size_t)(w[i - 1]->rows * lc_wt_ld(w[i - 1])) * 2;
        // a joined weight keeps its followers' layout: no extra columns on either side of a join
        bool joined = follows || (i + 1 < n && !starts[i + 1] && extra[i] == 0 &&
                                  (const char *)w[i + 1]->data ==
                                      (const char *)w[i]->data + (size_t)(w[i]->rows * lc_wt_ld(w[i])) * 2);
        if (w[i]->q || w[i]->dtype != LC_DT_BF16 || extra[i] < 0 || xc < 0 || (xc && joined) ||
            (follows && ld[i] != ld[i - 1]) || !(follows || starts[i]))
            rc = 1;
        if (!follows) tot = (tot + 255) & ~(size_t)255;
        off[i] = tot, tot += (size_t)((w[i]->rows + extra[i]) * ld[i]) * 2;
    }
    char *d = NULL;
    if (!rc && n > 0 && cudaMalloc((void **)&d, tot) != cudaSuccess) { // no room: the caller goes on without
        cudaGetLastError();
        rc = 1;
    }
    if (!rc && n > 0) {
        LC_CK(c, cudaMemset(d, 0, tot)); // the spare rows and columns
        for (int i = 0; i < n; i++)
            LC_CK(c, cudaMemcpy2D(d + off[i], (size_t)ld[i] * 2, w[i]->data, (size_t)lc_wt_ld(w[i]) * 2,
                                  (size_t)w[i]->cols * 2, (size_t)w[i]->rows, cudaMemcpyDeviceToDevice));
        for (int i = 0; i < n; i++) {
            for (size_t k = 0; starts[i] && k < c->n_weights; k++)
                if (c->weights[k] == w[i]->data) {
                    LC_CK(c, cudaFree(c->weights[k]));
                    c->weights[k] = c->weights[--c->n_weights];
                    break;
                }
            w[i]->data = d + off[i];
            w[i]->ld = ld[i] == w[i]->cols ? 0 : ld[i];
        }
        keep_weight(c, d);
    }
    free(off), free(starts), free(ld);
    if (rc) return rc;
    return c->err[0] ? cu_sync(be) : 0;
}

static void cu_free(lc_backend *be) {
    if (!be) return;
    lc_cuda *c = impl(be);
    cudaDeviceSynchronize();
    prof_finish(c);
    lc_cuda_lt_free(c);
    lc_cuda_decode_free(c);
    lc_cuda_graph_free(c);
    for (size_t i = 0; i < c->n_weights; i++) cudaFree(c->weights[i]);
    free(c->weights);
    for (size_t i = 0; i < c->n_wqs; i++) free(c->wqs[i]);
    free(c->wqs);
    lc_cuda_quant_free(c);
    lc_cuda_qgemm_free(c);
    if (c->xb) cudaFree(c->xb);
    if (c->rows) cudaFree(c->rows);
    if (c->att32) cudaFree(c->att32);
    if (c->counter) cudaFree(c->counter);
    if (c->flag) cudaFree(c->flag);
    if (c->amax_host) {
        cudaFreeHost(c->amax_host);
        for (int k = 0; k < LC_ARGMAX_SLOTS; k++) cudaEventDestroy(c->amax_ev[k]);
    }
    if (c->part) cudaFree(c->part);
    free(c->host_rows);
    if (c->blas) cublasDestroy(c->blas);
    free(c);
    free(be);
}

/* ------------------------------------------------------------ elementwise */

#define GRID_STRIDE(i, n) for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

__global__ void k_add(float *out, const float *a, const float *b, size_t n) {
    GRID_STRIDE(i, n) out[i] = a[i] + b[i];
}

__global__ void k_axpy(float *y, float a, const float *x, size_t n) {
    GRID_STRIDE(i, n) y[i] += a * x[i];
}

/* The CPU backend's mix64 (splitmix64's finalizer over seed and index). */
__device__ __forceinline__ uint64_t mix64(uint64_t seed, uint64_t i) {
    uint64_t z = seed + 0x9E3779B97F4A7C15ULL * (i + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

__global__ void k_dropout(float *out, const float *x, size_t n, uint64_t thresh, float keep, uint64_t seed) {
    GRID_STRIDE(i, n) out[i] = (mix64(seed, i) >> 40) >= thresh ? x[i] * keep : 0.0f;
}

static void cu_zero(lc_backend *be, float *x, size_t n) {
    LC_PROF(impl(be), "zero", 0);
    if (n) LC_CK(impl(be), cudaMemsetAsync(x, 0, n * sizeof(float), impl(be)->st));
}

static void cu_copy(lc_backend *be, float *out, const float *x, size_t n) {
    LC_PROF(impl(be), "copy", 0);
    if (n && out != x) LC_CK(impl(be), cudaMemcpyAsync(out, x, n * sizeof(float), cudaMemcpyDeviceToDevice, impl(be)->st));
}

static void cu_copy2d(lc_backend *be, float *out, int64_t ldo, const float *x, int64_t ldx, int64_t rows,
                      int64_t cols) {
    LC_PROF(impl(be), "copy2d", 0);
    if (rows > 0 && cols > 0)
        LC_CK(impl(be), cudaMemcpy2DAsync(out, (size_t)ldo * sizeof(float), x, (size_t)ldx * sizeof(float),
                                          (size_t)cols * sizeof(float), (size_t)rows, cudaMemcpyDeviceToDevice,
                                          impl(be)->st));
}

/* ->copy2d_n's copies, blockIdx.y the copy: 16 bytes a thread where every row starts
 * 16-byte aligned (V 4), else 4. */
struct cp2n {
    float *out[LC_GEMM_N_MAX];
    const float *x[LC_GEMM_N_MAX];
    int64_t ldo[LC_GEMM_N_MAX], ldx[LC_GEMM_N_MAX];
    int64_t rows, cols;
};
template <int V>
__global__ void k_copy2d_n(const __grid_constant__ cp2n a) {
    const int j = blockIdx.y;
    const int64_t cv = a.cols / V, n = a.rows * cv;
    float *out = a.out[j];
    const float *x = a.x[j];
    const int64_t ldo = a.ldo[j], ldx = a.ldx[j];
    GRID_STRIDE(i, (size_t)n) {
        int64_t r = (int64_t)i / cv, c = ((int64_t)i % cv) * V;
        if constexpr (V == 4) *(float4 *)(out + r * ldo + c) = *(const float4 *)(x + r * ldx + c);
        else out[r * ldo + c] = x[r * ldx + c];
    }
}

static void cu_copy2d_n(lc_backend *be, int n, float *const *out, const int64_t *ldo, const float *const *x,
                        const int64_t *ldx, int64_t rows, int64_t cols) {
    lc_cuda *c = impl(be);
    LC_PROF(c, "copy2d_n", 0);
    if (n <= 0 || rows <= 0 || cols <= 0) return;
    if (n > LC_GEMM_N_MAX) {
        for (int i = 0; i < n; i++) cu_copy2d(be, out[i], ldo[i], x[i], ldx[i], rows, cols);
        return;
    }
    cp2n a = {};
    bool v4 = cols % 4 == 0;
    for (int i = 0; i < n; i++) {
        a.out[i] = out[i], a.x[i] = x[i], a.ldo[i] = ldo[i], a.ldx[i] = ldx[i];
        v4 = v4 && ldo[i] % 4 == 0 && ldx[i] % 4 == 0 && !((uintptr_t)out[i] & 15) && !((uintptr_t)x[i] & 15);
    }
    a.rows = rows, a.cols = cols;
    size_t each = (size_t)(rows * (v4 ? cols / 4 : cols));
    dim3 grid((unsigned)((each + 255) / 256 < 1024 ? (each + 255) / 256 : 1024), (unsigned)n);
    if (v4) k_copy2d_n<4><<<grid, 256, 0, c->st>>>(a);
    else k_copy2d_n<1><<<grid, 256, 0, c->st>>>(a);
    LC_LAUNCHED(c);
}

static void cu_add(lc_backend *be, float *out, const float *a, const float *b, size_t n) {
    LC_PROF(impl(be), "add", 0);
    if (!n) return;
    k_add<<<blocks_for(n), 256, 0, impl(be)->st>>>(out, a, b, n);
    LC_LAUNCHED(impl(be));
}

static void cu_axpy(lc_backend *be, float *y, float a, const float *x, size_t n) {
    LC_PROF(impl(be), "axpy", 0);
    if (!n) return;
    k_axpy<<<blocks_for(n), 256, 0, impl(be)->st>>>(y, a, x, n);
    LC_LAUNCHED(impl(be));
}

static void cu_dropout(lc_backend *be, float *out, const float *x, size_t n, float p, uint64_t seed) {
    LC_PROF(impl(be), "dropout", 0);
    if (!n) return;
    // the CPU's threshold and scale, computed the same way on the host
    uint64_t thresh = (uint64_t)((double)p * 16777216.0);
    float keep = 1.0f / (1.0f - p);
    k_dropout<<<blocks_for(n), 256, 0, impl(be)->st>>>(out, x, n, thresh, keep, seed);
    LC_LAUNCHED(impl(be));
}

/* lc_adam_update's arithmetic (no fused multiply-adds, so the card rounds as the CPU). */
__global__ void k_adam(float *p, const float *g, float *m, float *v, size_t n, lc_adam_args a) {
    GRID_STRIDE(i, n) {
        float gi = g[i], pi = p[i];
        if (a.wd != 0.0f) {
            if (a.decoupled) pi = __fmul_rn(pi, a.decay);
            else gi = __fadd_rn(gi, __fmul_rn(a.wd, pi));
        }
        float mi = __fadd_rn(m[i], __fmul_rn(a.w1, __fsub_rn(gi, m[i])));
        float vi = __fadd_rn(__fmul_rn(v[i], a.b2), __fmul_rn(a.w2, __fmul_rn(gi, gi)));
        float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), a.bc2_sqrt), a.eps);
        m[i] = mi, v[i] = vi;
        p[i] = __fadd_rn(pi, __fmul_rn(-a.step_size, __fdiv_rn(mi, denom)));
    }
}

__global__ void k_nonfinite(const float *x, size_t n, unsigned *flag) {
    bool bad = false;
    GRID_STRIDE(i, n) bad |= !isfinite(x[i]);
    if (__syncthreads_or(bad) && threadIdx.x == 0) atomicOr(flag, 1u);
}

/* One launch over x into a zeroed device word, then that word read back (a sync). */
static bool cu_all_finite(lc_backend *be, const float *x, size_t n) {
    lc_cuda *c = impl(be);
    if (!n) return true;
    if (!c->flag) LC_CK(c, cudaMalloc(&c->flag, sizeof(unsigned)));
    unsigned h = 0;
    LC_CK(c, cudaMemsetAsync(c->flag, 0, sizeof(unsigned), c->st));
    size_t nb = blocks_for(n);
    k_nonfinite<<<nb < 1024 ? nb : 1024, 256, 0, c->st>>>(x, n, c->flag);
    LC_LAUNCHED(c);
    LC_CK(c, cudaMemcpyAsync(&h, c->flag, sizeof h, cudaMemcpyDeviceToHost, c->st));
    LC_CK(c, cudaStreamSynchronize(c->st));
    return h == 0;
}

/* The better of two (value, index) candidates: the larger value, the lower index among
 * equals; an index of -1 (no candidate) loses to any. Values are never NaN. */
__device__ __forceinline__ void amax_pick(float &v, int &i, float v2, int i2) {
    if (i2 >= 0 && (i < 0 || v2 > v || (v2 == v && i2 < i))) v = v2, i = i2;
}

/* One block: dst[0] = *host = the argmax of logits[0..V) as lc_sample's greedy takes it
 * (a serial scan keeping the first strictly larger value: NaNs other than logits[0]'s
 * never win, and a NaN logits[0] wins outright). */
__global__ void __launch_bounds__(1024) k_argmax(int32_t *dst, volatile int32_t *host, const float *logits, int V) {
    __shared__ float sv[32];
    __shared__ int si[32];
    float v = 0.0f;
    int idx = -1;
    // 16-byte loads where V and the row allow, 8 in flight a thread (one round trip for
    // V = 32768); the rest, or all, one float at a time
    int n4 = V % 4 == 0 && ((uintptr_t)logits & 15) == 0 ? V / 4 : 0, step = (int)blockDim.x;
    const float4 *l4 = (const float4 *)logits;
    for (int j0 = threadIdx.x; j0 < n4; j0 += 8 * step) {
        float4 q[8];
#pragma unroll
        for (int u = 0; u < 8; u++) q[u] = j0 + u * step < n4 ? l4[j0 + u * step] : make_float4(NAN, NAN, NAN, NAN);
#pragma unroll
        for (int u = 0; u < 8; u++) {
            int i = 4 * (j0 + u * step);
            float e[4] = {q[u].x, q[u].y, q[u].z, q[u].w};
#pragma unroll
            for (int k = 0; k < 4; k++)
                if (e[k] == e[k]) amax_pick(v, idx, e[k], i + k);
        }
    }
    for (int i = 4 * n4 + threadIdx.x; i < V; i += step) {
        float x = logits[i];
        if (x == x) amax_pick(v, idx, x, i);
    }
    for (int o = 16; o > 0; o >>= 1) {
        float v2 = __shfl_xor_sync(0xffffffffu, v, o);
        int i2 = __shfl_xor_sync(0xffffffffu, idx, o);
        amax_pick(v, idx, v2, i2);
    }
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    if (lane == 0) sv[w] = v, si[w] = idx;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int k = 1; k < (int)(blockDim.x >> 5); k++) amax_pick(v, idx, sv[k], si[k]);
        if (idx < 0 || logits[0] != logits[0]) idx = 0;
        dst[0] = idx, *host = idx;
    }
}

/* The kernel writes the token where the next step reads it and into a slot of mapped
 * pinned host memory; an event a slot tells the host when the slot holds it. Queued on
 * the decoding step's stream (blocking, so still ordered with the legacy stream). */
static void cu_argmax(lc_backend *be, int32_t *dst, const float *logits, int64_t V, int slot) {
    lc_cuda *c = impl(be);
    if (!c->amax_host) {
        if (cudaHostAlloc((void **)&c->amax_host, LC_ARGMAX_SLOTS * sizeof(int32_t), cudaHostAllocMapped) !=
            cudaSuccess) {
            cudaGetLastError();
            fatal_oom(c, LC_ARGMAX_SLOTS * sizeof(int32_t), "pinned host words");
        }
        for (int k = 0; k < LC_ARGMAX_SLOTS; k++)
            LC_CK(c, cudaEventCreateWithFlags(&c->amax_ev[k], cudaEventDisableTiming));
    }
    int32_t *h = NULL;
    cudaStream_t st = lc_cuda_decode_stream(c);
    LC_CK(c, cudaHostGetDevicePointer((void **)&h, c->amax_host + slot, 0));
    k_argmax<<<1, 1024, 0, st>>>(dst, h, logits, (int)V);
    LC_LAUNCHED(c);
    LC_CK(c, cudaEventRecord(c->amax_ev[slot], st));
}

static int cu_argmax_read(lc_backend *be, int slot, int32_t *id) {
    lc_cuda *c = impl(be);
    LC_CK(c, cudaEventSynchronize(c->amax_ev[slot]));
    *id = ((volatile int32_t *)c->amax_host)[slot];
    if (!c->err[0]) return 0;
    lc_fail("%s", c->err);
    c->err[0] = 0;
    return -1;
}

#define SUMSQ_BLOCKS 256

/* Partial sums of squares in double, block b over its grid-stride share of x (in order
 * within each thread, then a fixed tree across the block). */
__global__ void k_sumsq_part(const float *x, size_t n, double *part) {
    __shared__ double sh[256];
    double s = 0;
    GRID_STRIDE(i, n) s += (double)x[i] * (double)x[i];
    sh[threadIdx.x] = s;
    __syncthreads();
    for (int w = 128; w > 0; w >>= 1) {
        if ((int)threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) part[blockIdx.x] = sh[0];
}

__global__ void k_sum_parts(double *part, int n) {
    if (threadIdx.x == 0 && blockIdx.x == 0) {
        double s = 0;
        for (int i = 0; i < n; i++) s += part[i];
        part[n] = s;
    }
}

static double cu_sumsq(lc_backend *be, const float *x, size_t n) {
    lc_cuda *c = impl(be);
    if (!n) return 0.0;
    if (!c->part) LC_CK(c, cudaMalloc(&c->part, (SUMSQ_BLOCKS + 1) * sizeof(double)));
    k_sumsq_part<<<SUMSQ_BLOCKS, 256, 0, c->st>>>(x, n, c->part);
    LC_LAUNCHED(c);
    k_sum_parts<<<1, 32, 0, c->st>>>(c->part, SUMSQ_BLOCKS);
    LC_LAUNCHED(c);
    double h = 0;
    LC_CK(c, cudaMemcpyAsync(&h, c->part + SUMSQ_BLOCKS, sizeof h, cudaMemcpyDeviceToHost, c->st));
    LC_CK(c, cudaStreamSynchronize(c->st));
    return h;
}

__global__ void k_scale(float *x, float a, bool divide, size_t n) {
    GRID_STRIDE(i, n) x[i] = divide ? x[i] / a : x[i] * a;
}

static void cu_scale(lc_backend *be, float *x, float a, bool divide, size_t n) {
    LC_PROF(impl(be), "scale", 0);
    if (!n) return;
    k_scale<<<blocks_for(n), 256, 0, impl(be)->st>>>(x, a, divide, n);
    LC_LAUNCHED(impl(be));
}

static void cu_adam(lc_backend *be, float *p, const float *g, float *m, float *v, size_t n,
                    const lc_adam_args *a) {
    LC_PROF(impl(be), "adam", 0);
    if (!n) return;
    k_adam<<<blocks_for(n), 256, 0, impl(be)->st>>>(p, g, m, v, n, *a);
    LC_LAUNCHED(impl(be));
}

/* ------------------------------------------------------------ products */

__global__ void k_to_bf16(__nv_bfloat16 *dst, const float *src, size_t n) {
    GRID_STRIDE(i, n) dst[i] = __float2bfloat16_rn(src[i]);
}

__global__ void k_add_bias(float *out, const float *bias, size_t N, size_t O) {
    GRID_STRIDE(i, N * O) out[i] += bias[i % O];
}

/* k_to_bf16 four at a time (16-byte reads, 8-byte writes): n4 = n / 4, both aligned. */
__global__ void k_to_bf16_v4(uint2 *dst, const float4 *src, size_t n4) {
    GRID_STRIDE(i, n4) {
        float4 v = src[i];
        __nv_bfloat162 a = __floats2bfloat162_rn(v.x, v.y), b = __floats2bfloat162_rn(v.z, v.w);
        uint2 o;
        memcpy(&o.x, &a, 4), memcpy(&o.y, &b, 4);
        dst[i] = o;
    }
}

bool lc_cuda_vec(void) {
    const char *e = getenv("LORAC_CUDA_VEC");
    return !(e && !strcmp(e, "0"));
}

/* xb (n) = x rounded to bf16 (round to nearest even). */
static void bf16_into(lc_cuda *c, __nv_bfloat16 *xb, const float *x, size_t n) {
    if (!n) return;
    if (n % 4 == 0 && !((uintptr_t)x & 15) && !((uintptr_t)xb & 7) && lc_cuda_vec()) // else one element a thread
        k_to_bf16_v4<<<blocks_for(n / 4), 256, 0, c->st>>>((uint2 *)xb, (const float4 *)x, n / 4);
    else
        k_to_bf16<<<blocks_for(n), 256, 0, c->st>>>(xb, x, n);
    LC_LAUNCHED(c);
}

static const __nv_bfloat16 *as_bf16(lc_cuda *c, const float *x, size_t n) {
    __nv_bfloat16 *xb = (__nv_bfloat16 *)xb_get(c, n * sizeof(__nv_bfloat16));
    bf16_into(c, xb, x, n);
    return xb;
}

static void cu_to_bf16(lc_backend *be, void *out, const float *x, size_t n) {
    LC_PROF(impl(be), "to_bf16", 0);
    bf16_into(impl(be), (__nv_bfloat16 *)out, x, n);
}

/* out (rows, cols; row stride ldo) = x (rows, cols, packed) rounded; a thread a pair. */
__global__ void k_to_bf16_rows(__nv_bfloat16 *out, int64_t ldo, const float *x, int64_t cols, size_t n2) {
    GRID_STRIDE(i, n2) {
        size_t e = 2 * i, r = e / (size_t)cols, k = e % (size_t)cols;
        *reinterpret_cast<__nv_bfloat162 *>(out + r * ldo + k) = __floats2bfloat162_rn(x[e], x[e + 1]);
    }
}

static void cu_to_bf16_rows(lc_backend *be, void *out, int64_t ldo, const float *x, int64_t rows, int64_t cols) {
    lc_cuda *c = impl(be);
    LC_PROF(c, "to_bf16 (rows)", 0);
    if (rows <= 0 || cols <= 0) return;
    if (ldo == cols) {
        bf16_into(c, (__nv_bfloat16 *)out, x, (size_t)(rows * cols));
        return;
    }
    size_t n2 = (size_t)(rows * cols) / 2;
    k_to_bf16_rows<<<blocks_for(n2), 256, 0, c->st>>>((__nv_bfloat16 *)out, ldo, x, cols, n2);
    LC_LAUNCHED(c);
}

/* out (cols, rows; row stride ldo) = scale x (rows, cols, packed)^T rounded: 32 × 32 tiles
 * through shared memory (both sides' accesses along rows). */
__global__ void k_to_bf16_t(__nv_bfloat16 *out, int64_t ldo, const float *x, int64_t rows, int64_t cols,
                            float scale) {
    __shared__ float t[32][33];
    int64_t r0 = (int64_t)blockIdx.y * 32, c0 = (int64_t)blockIdx.x * 32;
    for (int i = threadIdx.y; i < 32; i += blockDim.y) {
        int64_t r = r0 + i, c = c0 + threadIdx.x;
        if (r < rows && c < cols) t[i][threadIdx.x] = x[r * cols + c];
    }
    __syncthreads();
    for (int i = threadIdx.y; i < 32; i += blockDim.y) {
        int64_t c = c0 + i, r = r0 + threadIdx.x;
        if (r < rows && c < cols) out[c * ldo + r] = __float2bfloat16_rn(__fmul_rn(scale, t[threadIdx.x][i]));
    }
}

static void cu_to_bf16_t(lc_backend *be, void *out, int64_t ldo, const float *x, int64_t rows, int64_t cols,
                         float scale) {
    lc_cuda *c = impl(be);
    LC_PROF(c, "to_bf16 (transposed)", 0);
    if (rows <= 0 || cols <= 0) return;
    dim3 grid((unsigned)((cols + 31) / 32), (unsigned)((rows + 31) / 32)), block(32, 8);
    k_to_bf16_t<<<grid, block, 0, c->st>>>((__nv_bfloat16 *)out, ldo, x, rows, cols, scale);
    LC_LAUNCHED(c);
}

/* Small-N products with BF16 weights (decoding: N = 1): out (N,O) = x (N,I) W^T, fp32 x
 * read as it is (no bf16 pass), the weight row streamed once in 16-byte loads, GEMV_U
 * of them in flight per lane, fp32 accumulation. One warp per output row; every row of
 * x shares the weight loads. Needs I % 8 == 0 and 16-byte aligned x and W. */
#define GEMV_MAXN 8
#define GEMV_U 8
#define GEMV_WARPS 4

__device__ __forceinline__ void bf16x8_to_f32(const uint4 &u, float *f) {
    const __nv_bfloat162 *h = (const __nv_bfloat162 *)&u;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 t = __bfloat1622float2(h[i]);
        f[2 * i] = t.x, f[2 * i + 1] = t.y;
    }
}

template <int NR>
__global__ void __launch_bounds__(GEMV_WARPS * 32) k_gemv_bf16(float *out, const float *x, const __nv_bfloat16 *W,
                                                            const float *bias, int O, int I, int ldw, int acc) {
    LC_PDL_TRIGGER();
    int o = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    bool live = o < O;
    const uint4 *w = (const uint4 *)(W + (size_t)(live ? o : 0) * ldw);
    int nv = I / 8; // 16-byte vectors in the row
    uint4 cur[GEMV_U], nxt[GEMV_U];
    // the weights never change: the first loads go out before waiting on the previous op
#pragma unroll
    for (int u = 0; u < GEMV_U; u++) {
        int v = u * 32 + lane;
        cur[u] = live && v < nv ? __ldcs(w + v) : make_uint4(0, 0, 0, 0);
    }
    LC_PDL_WAIT();
    if (!live) return;
    float s[NR];
#pragma unroll
    for (int n = 0; n < NR; n++) s[n] = 0.0f;
    for (int v0 = 0; v0 < nv; v0 += 32 * GEMV_U) {
        int vn = v0 + 32 * GEMV_U;
#pragma unroll
        for (int u = 0; u < GEMV_U; u++) {
            int v = vn + u * 32 + lane;
            nxt[u] = v < nv ? __ldcs(w + v) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int u = 0; u < GEMV_U; u++) {
            int v = v0 + u * 32 + lane;
            if (v >= nv) break;
            float wf[8];
            bf16x8_to_f32(cur[u], wf);
#pragma unroll
            for (int n = 0; n < NR; n++) {
                const float4 *xp = (const float4 *)(x + (size_t)n * I) + 2 * v;
                float4 a = __ldg(xp), b = __ldg(xp + 1);
                s[n] += wf[0] * a.x + wf[1] * a.y + wf[2] * a.z + wf[3] * a.w + wf[4] * b.x +
                        wf[5] * b.y + wf[6] * b.z + wf[7] * b.w;
            }
        }
#pragma unroll
        for (int u = 0; u < GEMV_U; u++) cur[u] = nxt[u];
    }
    lc_gemv_store<NR>(s, lane, out, bias, o, O, acc);
}

template <int NR>
static void gemv_launch(lc_cuda *c, dim3 grid, float *out, const float *x, const __nv_bfloat16 *W,
                        const float *bias, int O, int I, int ldw, int a) {
    if (c->pdl) {
        cudaLaunchConfig_t cfg = {};
        cudaLaunchAttribute at[1];
        at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        at[0].val.programmaticStreamSerializationAllowed = 1;
        cfg.gridDim = grid, cfg.blockDim = dim3(GEMV_WARPS * 32), cfg.dynamicSmemBytes = 0, cfg.stream = c->st;
        cfg.attrs = at, cfg.numAttrs = 1;
        if (cudaLaunchKernelEx(&cfg, k_gemv_bf16<NR>, out, x, W, bias, O, I, ldw, a) == cudaSuccess) return;
        cudaGetLastError(); // not on this stream or driver: plain launches from now on
        c->pdl = false;
    }
    k_gemv_bf16<NR><<<grid, GEMV_WARPS * 32, 0, c->st>>>(out, x, W, bias, O, I, ldw, a);
}

/* Runs the small-N path when it applies; returns whether it did. */
static bool gemv_bf16(lc_cuda *c, float *out, const float *x, const lc_wt *w, const float *bias, int64_t N,
                      bool accumulate) {
    int O = (int)w->rows, I = (int)w->cols, ldw = (int)lc_wt_ld(w);
    if (N > GEMV_MAXN || I % 8 || ldw % 8 || ((uintptr_t)x & 15) || ((uintptr_t)w->data & 15)) return false;
    dim3 grid((unsigned)((O + GEMV_WARPS - 1) / GEMV_WARPS));
    const __nv_bfloat16 *W = (const __nv_bfloat16 *)w->data;
    int a = accumulate ? 1 : 0;
    switch (N) {
#define GEMV_CASE(K) case K: gemv_launch<K>(c, grid, out, x, W, bias, O, I, ldw, a); break;
        GEMV_CASE(1) GEMV_CASE(2) GEMV_CASE(3) GEMV_CASE(4) GEMV_CASE(5) GEMV_CASE(6) GEMV_CASE(7) GEMV_CASE(8)
#undef GEMV_CASE
    default: return false;
    }
    LC_LAUNCHED(c);
    return true;
}

/* Row-major out (N,O) = x (N,I) W^T is column-major out^T (O,N) = W (O,I as I×O, ld I)^T ·
 * x^T (I×N, ld I). */
static void cu_matmul(lc_backend *be, float *out, const float *x, const lc_wt *w, const float *bias,
                      int64_t N, bool accumulate) {
    lc_cuda *c = impl(be);
    lc_wt wq;
    if (w->q && N > 0 && lc_cuda_qgemv(c, out, x, w, bias, N, accumulate)) return; // decoding: from the codes
    if (w->q && !((uintptr_t)x & 15) && lc_cuda_qgemm_ok(c, w, N)) { // 9..256 rows over NF4: codes, tensor cores
        lc_cuda_qgemm(c, out, x, w, bias, N, accumulate);
        be->fused_products++;
        return;
    }
    if (w->q) wq = lc_cuda_dequantized(c, w, false), w = &wq;
    LC_PROF(impl(be), "matmul N=%lld", N);
    int O = (int)w->rows, I = (int)w->cols, ldw = (int)lc_wt_ld(w);
    if (N <= 0 || O <= 0) return;
    float one = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    if (w->dtype == LC_DT_BF16 && gemv_bf16(c, out, x, w, bias, N, accumulate)) return;
    if (w->dtype == LC_DT_BF16) {
        const __nv_bfloat16 *xb = as_bf16(c, x, (size_t)N * I);
        lc_cuda_gemm_bf16(c, true, O, (int)N, I, w->data, ldw, xb, I, beta, out, O);
    } else {
        LC_BK(c, cublasSgemm(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, O, (int)N, I, &one,
                             (const float *)w->data, ldw, x, I, &beta, out, O));
    }
    if (bias) {
        k_add_bias<<<blocks_for((size_t)N * O), 256, 0, c->st>>>(out, bias, (size_t)N, (size_t)O);
        LC_LAUNCHED(c);
    }
}

/* Row-major dx (N,I) = dy (N,O) W (O,I) is column-major dx^T (I×N) = W (I×O, ld I) · dy^T
 * (O×N, ld O). */
static void cu_matmul_dx(lc_backend *be, float *dx, const float *dy, const lc_wt *w, int64_t N,
                         bool accumulate) {
    lc_cuda *c = impl(be);
    lc_wt wq;
    if (w->q) wq = lc_cuda_dequantized(c, w, true), w = &wq;
    LC_PROF(impl(be), "matmul_dx N=%lld", N);
    int O = (int)w->rows, I = (int)w->cols, ldw = (int)lc_wt_ld(w);
    if (N <= 0 || I <= 0) return;
    float one = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    if (w->dtype == LC_DT_BF16) {
        const __nv_bfloat16 *db = as_bf16(c, dy, (size_t)N * O);
        lc_cuda_gemm_bf16(c, false, I, (int)N, O, w->data, ldw, db, O, beta, dx, I);
    } else {
        LC_BK(c, cublasSgemm(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, I, (int)N, O, &one,
                             (const float *)w->data, ldw, dy, O, &beta, dx, I));
    }
}


/* ->gemm_b: the float32 operands rounded into the bf16 scratch (A first, B after it on a
 * 16-byte boundary), then one cublasGemmEx (bf16 inputs, float32 sums and output). Row-major
 * C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T, as in cu_gemm. */
static void cu_gemm_b(lc_backend *be, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const void *A,
                      int64_t lda, bool a16, const void *B, int64_t ldb, bool b16, float beta, float *C, int64_t ldc) {
    lc_cuda *c = impl(be);
    LC_PROF(c, "gemm_b (LoRA) M=%lld", M);
    if (M <= 0 || N <= 0) return;
    size_t na = a16 ? 0 : (size_t)((ta ? K : M) * lda), nb = b16 ? 0 : (size_t)((tb ? N : K) * ldb);
    size_t na8 = (na + 7) & ~(size_t)7;
    __nv_bfloat16 *s = na + nb ? (__nv_bfloat16 *)xb_get(c, (na8 + nb) * sizeof(__nv_bfloat16)) : NULL;
    if (na) {
        k_to_bf16<<<blocks_for(na), 256, 0, c->st>>>(s, (const float *)A, na);
        LC_LAUNCHED(c);
        A = s;
    }
    if (nb) {
        k_to_bf16<<<blocks_for(nb), 256, 0, c->st>>>(s + na8, (const float *)B, nb);
        LC_LAUNCHED(c);
        B = s + na8;
    }
    LC_BK(c, cublasGemmEx(c->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, (int)N, (int)M,
                          (int)K, &alpha, B, CUDA_R_16BF, (int)ldb, A, CUDA_R_16BF, (int)lda, &beta, C, CUDA_R_32F,
                          (int)ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

/* ->matmul_n_b, and cu_matmul_n's shared path after its as_bf16 (over more than GEMV_MAXN
 * rows): n bf16 weights (not quantized) of one width, one cuBLASLt product each. */
static bool cu_matmul_n_b(lc_backend *be, int n, float *const *out, const void *xb, const lc_wt *const *w,
                          const float *const *bias, int64_t N, bool accumulate) {
    lc_cuda *c = impl(be);
    if (n <= 0) return false;
    for (int i = 0; i < n; i++)
        if (w[i]->q || w[i]->dtype != LC_DT_BF16 || w[i]->cols != w[0]->cols) return false;
    if (N <= 0) return true;
    int I = (int)w[0]->cols;
    for (int i = 0; i < n; i++) {
        LC_PROF(c, "matmul N=%lld", N);
        int O = (int)w[i]->rows;
        lc_cuda_gemm_bf16(c, true, O, (int)N, I, w[i]->data, (int)lc_wt_ld(w[i]), (const __nv_bfloat16 *)xb, I,
                          accumulate ? 1.0f : 0.0f, out[i], O);
        if (bias && bias[i]) {
            k_add_bias<<<blocks_for((size_t)N * O), 256, 0, c->st>>>(out[i], bias[i], (size_t)N, (size_t)O);
            LC_LAUNCHED(c);
        }
    }
    return true;
}

/* ->matmul_n_bo: cu_matmul_n_b's products with bf16 outputs (cuBLASLt rounds the float32
 * sums once in its epilogue), from xb or x's as_bf16 copy; with xk, over xk more inner
 * columns of xb and of each weight's rows. */
static bool cu_matmul_n_bo(lc_backend *be, int n, void *const *outb, const float *x, const void *xb,
                           const lc_wt *const *w, int64_t N, int64_t xk) {
    lc_cuda *c = impl(be);
    if (n <= 0 || (!x && !xb) || xk < 0 || (xk && !xb)) return false;
    for (int i = 0; i < n; i++)
        if (w[i]->q || w[i]->dtype != LC_DT_BF16 || w[i]->cols != w[0]->cols || lc_wt_ld(w[i]) < w[i]->cols + xk)
            return false;
    if (N <= 0) return true;
    int I = (int)w[0]->cols, K = I + (int)xk;
    if (!xb) xb = as_bf16(c, x, (size_t)N * I);
    for (int i = 0; i < n; i++) {
        LC_PROF(c, xk ? "matmul (bf16 out, folded) N=%lld" : "matmul (bf16 out) N=%lld", N);
        int O = (int)w[i]->rows;
        lc_cuda_gemm_bf16o(c, true, O, (int)N, K, w[i]->data, (int)lc_wt_ld(w[i]), xb, K, outb[i], O);
    }
    return true;
}

/* cu_matmul_dx's bf16 path from dy's bf16 rounding (no as_bf16 pass). */
static bool cu_matmul_dx_b(lc_backend *be, float *dx, const void *dyb, const lc_wt *w, int64_t N, bool accumulate) {
    lc_cuda *c = impl(be);
    lc_wt wq;
    if (!w->q && w->dtype != LC_DT_BF16) return false;
    if (w->q) wq = lc_cuda_dequantized(c, w, true), w = &wq;
    LC_PROF(impl(be), "matmul_dx N=%lld", N);
    int O = (int)w->rows, I = (int)w->cols;
    if (N <= 0 || I <= 0) return true;
    lc_cuda_gemm_bf16(c, false, I, (int)N, O, w->data, (int)lc_wt_ld(w), (const __nv_bfloat16 *)dyb, O,
                      accumulate ? 1.0f : 0.0f, dx, I);
    return true;
}

static bool cu_matmul_dx_bo(lc_backend *be, void *dxb, const void *dyb, const lc_wt *w, int64_t N) {
    lc_cuda *c = impl(be);
    if (w->q || w->dtype != LC_DT_BF16) return false;
    LC_PROF(impl(be), "matmul_dx (bf16 out) N=%lld", N);
    int O = (int)w->rows, I = (int)w->cols;
    if (N <= 0 || I <= 0) return true;
    lc_cuda_gemm_bf16o(c, false, I, (int)N, O, w->data, (int)lc_wt_ld(w), dyb, O, dxb, I);
    return true;
}

/* ->matmul_n: NF4 weights the tensor-core product takes run in one launch of it (qgemm.cu);
 * BF16 weights (not quantized) of more than GEMV_MAXN rows share one bf16 copy of x;
 * anything else runs as ->matmul calls. */
static void cu_matmul_n(lc_backend *be, int n, float *const *out, const float *x, const lc_wt *const *w,
                        const float *const *bias, int64_t N, bool accumulate) {
    lc_cuda *c = impl(be);
    if (n > 1 && w[0]->q && !((uintptr_t)x & 15) && lc_cuda_qgemm_n_ok(c, n, w, N)) { // NF4 codes: one launch
        lc_cuda_qgemm_n(c, n, out, x, w, bias, N, accumulate);
        be->fused_products += n;
        return;
    }
    bool shared = N > GEMV_MAXN && n > 1;
    for (int i = 0; i < n && shared; i++)
        shared = !w[i]->q && w[i]->dtype == LC_DT_BF16 && w[i]->cols == w[0]->cols && w[i]->rows > 0;
    if (!shared) {
        for (int i = 0; i < n; i++) cu_matmul(be, out[i], x, w[i], bias ? bias[i] : NULL, N, accumulate);
        return;
    }
    cu_matmul_n_b(be, n, out, as_bf16(c, x, (size_t)N * w[0]->cols), w, bias, N, accumulate);
}

/* Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T, where each row-major
 * buffer read column-major is already its transpose. */
static void cu_gemm(lc_backend *be, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                    const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                    int64_t ldc) {
    LC_PROF(impl(be), "gemm (LoRA) M=%lld", M);
    lc_cuda *c = impl(be);
    if (M <= 0 || N <= 0) return;
    if (lc_cuda_lora_gemm(c, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, be->lora_tf32))
        return; // lora_gemm.cu
    if (be->lora_tf32) { // float32 in and out, TF32 tensor-core products
        LC_BK(c, cublasGemmEx(c->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, (int)N, (int)M,
                              (int)K, &alpha, B, CUDA_R_32F, (int)ldb, A, CUDA_R_32F, (int)lda, &beta, C, CUDA_R_32F,
                              (int)ldc, CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT));
        return;
    }
    LC_BK(c, cublasSgemm(c->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                         (int)N, (int)M, (int)K, &alpha, B, (int)ldb, A, (int)lda, &beta, C, (int)ldc));
}

/* ------------------------------------------------------------ reductions */

/* The sum (or max) of v over the block (blockDim.x a multiple of 32, at most 1024);
 * every thread gets the result. sh holds 32 floats. */
__device__ float block_sum(float v, float *sh) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ float block_max(float v, float *sh) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : -INFINITY;
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* ------------------------------------------------------------ layers */

__global__ void k_embedding(float *out, const int32_t *tokens, const void *table, int bf16, int64_t C) {
    int64_t n = blockIdx.x;
    size_t row = (size_t)tokens[n] * C;
    float *o = out + (size_t)n * C;
    if (bf16) {
        const __nv_bfloat16 *t = (const __nv_bfloat16 *)table + row;
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) o[c] = __bfloat162float(t[c]);
    } else {
        const float *t = (const float *)table + row;
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) o[c] = t[c];
    }
}

static void cu_embedding(lc_backend *be, float *out, const int32_t *tokens, const lc_wt *table, int64_t N) {
    LC_PROF(impl(be), "embedding", 0);
    if (N <= 0) return;
    if (table->q) {
        lc_cuda_embedding_q(impl(be), out, tokens, table, N);
        return;
    }
    k_embedding<<<(unsigned)N, 256, 0, impl(be)->st>>>(out, tokens, table->data, table->dtype == LC_DT_BF16, table->cols);
    LC_LAUNCHED(impl(be));
}

/* out (float32) and, where ob is not NULL, its bf16 rounding ob (rows of ldb); out may then
 * be NULL. */
__global__ void k_rmsnorm(float *out, float *rstd, const float *x, const float *w, int64_t C, float eps,
                          __nv_bfloat16 *ob, int64_t ldb) {
    LC_PDL_TRIGGER();
    __shared__ float sh[32];
    const float *xr = x + (size_t)blockIdx.x * C;
    float *o = out ? out + (size_t)blockIdx.x * C : NULL;
    __nv_bfloat16 *obr = ob ? ob + (size_t)blockIdx.x * ldb : NULL;
    float ss = 0;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) ss += xr[c] * xr[c];
    ss = block_sum(ss, sh);
    float r = (float)(1.0 / sqrt((double)ss / (double)C + (double)eps));
    if (rstd && threadIdx.x == 0) rstd[blockIdx.x] = r;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
        float v = w[c] * (xr[c] * r);
        if (o) o[c] = v;
        if (obr) obr[c] = __float2bfloat16_rn(v);
    }
}

/* Many rows (training): a block of NV_T threads a row, each holding its V float4s of the
 * row in registers between the sum and the scaling (one read of x, 16-byte accesses).
 * Needs C % 4 == 0, C <= 4 NV_T V and 16-byte aligned rows; the same expressions per
 * element as k_rmsnorm, the sum in another order. */
#define NV_T 256
template <int V>
__global__ void __launch_bounds__(NV_T) k_rmsnorm_v(float *out, float *rstd, const float *x, const float *w,
                                                    int64_t C, float eps, __nv_bfloat16 *ob, int64_t ldb) {
    LC_PDL_TRIGGER();
    __shared__ float sh[32];
    const float4 *xr = (const float4 *)(x + (size_t)blockIdx.x * C), *w4 = (const float4 *)w;
    float4 *o = out ? (float4 *)(out + (size_t)blockIdx.x * C) : NULL;
    uint2 *ob4 = ob ? (uint2 *)(ob + (size_t)blockIdx.x * ldb) : NULL; // (ldb a multiple of 4)
    int c4 = (int)(C / 4);
    float4 v[V];
    float ss = 0;
#pragma unroll
    for (int j = 0; j < V; j++) {
        int c = (int)threadIdx.x + j * NV_T;
        v[j] = c < c4 ? xr[c] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        ss += v[j].x * v[j].x, ss += v[j].y * v[j].y, ss += v[j].z * v[j].z, ss += v[j].w * v[j].w;
    }
    ss = block_sum(ss, sh);
    float r = (float)(1.0 / sqrt((double)ss / (double)C + (double)eps));
    if (rstd && threadIdx.x == 0) rstd[blockIdx.x] = r;
#pragma unroll
    for (int j = 0; j < V; j++) {
        int c = (int)threadIdx.x + j * NV_T;
        if (c >= c4) break;
        float4 a = w4[c], b = v[j];
        float4 y = make_float4(a.x * (b.x * r), a.y * (b.y * r), a.z * (b.z * r), a.w * (b.w * r));
        if (o) o[c] = y;
        if (ob4) {
            __nv_bfloat162 p = __floats2bfloat162_rn(y.x, y.y), q = __floats2bfloat162_rn(y.z, y.w);
            uint2 u;
            memcpy(&u.x, &p, 4), memcpy(&u.y, &q, 4);
            ob4[c] = u;
        }
    }
}

/* The backward of k_rmsnorm_v's rows, likewise: dout and x held in registers. */
template <int V>
__global__ void __launch_bounds__(NV_T) k_rmsnorm_bwd_v(float *dx, const float *dout, const float *x, const float *w,
                                                        const float *rstd, int64_t C, __nv_bfloat16 *db,
                                                        int64_t ldb) {
    __shared__ float sh[32];
    size_t off = (size_t)blockIdx.x * C;
    const float4 *xr = (const float4 *)(x + off), *g = (const float4 *)(dout + off), *w4 = (const float4 *)w;
    float4 *d = (float4 *)(dx + off);
    float r = rstd[blockIdx.x];
    int c4 = (int)(C / 4);
    float4 xv[V], gv[V];
    float dot = 0;
#pragma unroll
    for (int j = 0; j < V; j++) {
        int c = (int)threadIdx.x + j * NV_T;
        float4 z = make_float4(0.0f, 0.0f, 0.0f, 0.0f), a = c < c4 ? w4[c] : z;
        xv[j] = c < c4 ? xr[c] : z, gv[j] = c < c4 ? g[c] : z;
        dot += a.x * gv[j].x * xv[j].x * r, dot += a.y * gv[j].y * xv[j].y * r;
        dot += a.z * gv[j].z * xv[j].z * r, dot += a.w * gv[j].w * xv[j].w * r;
    }
    float m = block_sum(dot, sh) / (float)C;
#pragma unroll
    for (int j = 0; j < V; j++) {
        int c = (int)threadIdx.x + j * NV_T;
        if (c >= c4) break;
        float4 a = w4[c], t = d[c], gg = gv[j], xx = xv[j];
        t.x += r * (a.x * gg.x - xx.x * r * m), t.y += r * (a.y * gg.y - xx.y * r * m);
        t.z += r * (a.z * gg.z - xx.z * r * m), t.w += r * (a.w * gg.w - xx.w * r * m);
        d[c] = t;
        if (db) { // rows of ldb: 8-byte stores where ldb is a multiple of 4, else pairs
            __nv_bfloat162 p = __floats2bfloat162_rn(t.x, t.y), q = __floats2bfloat162_rn(t.z, t.w);
            __nv_bfloat16 *row = db + (size_t)blockIdx.x * ldb;
            if (!(ldb & 3)) {
                uint2 u;
                memcpy(&u.x, &p, 4), memcpy(&u.y, &q, 4);
                ((uint2 *)row)[c] = u;
            } else {
                ((__nv_bfloat162 *)row)[2 * c] = p, ((__nv_bfloat162 *)row)[2 * c + 1] = q;
            }
        }
    }
}

/* float4s a thread holds for a row of C with k_rmsnorm_v (1, 2, 4 or 8), or 0 when the
 * row does not suit it (the row-loop kernels run). */
static int norm_vec(int64_t N, int64_t C, const void *a, const void *b, const void *c) {
    if (N < 512 || C % 4 || ((uintptr_t)a | (uintptr_t)b | (uintptr_t)c) & 15) return 0;
    if (!lc_cuda_vec()) return 0; // the row-loop kernels (and scalar bf16 copies)
    for (int v = 1; v <= 8; v *= 2)
        if (C <= (int64_t)4 * NV_T * v) return v;
    return 0;
}

static void rmsnorm_run(lc_backend *be, float *out, __nv_bfloat16 *ob, int64_t ldb, float *rstd, const float *x,
                        const float *w, int64_t N, int64_t C, float eps) {
    if (N <= 0) return;
    cudaStream_t st = impl(be)->st;
    const void *al = out ? (const void *)out : (const void *)ob; // (ob: 8-byte rows suffice; 16 checked)
    switch (ob && ldb % 4 ? 0 : norm_vec(N, C, al, x, w)) {
    case 1: k_rmsnorm_v<1><<<(unsigned)N, NV_T, 0, st>>>(out, rstd, x, w, C, eps, ob, ldb); break;
    case 2: k_rmsnorm_v<2><<<(unsigned)N, NV_T, 0, st>>>(out, rstd, x, w, C, eps, ob, ldb); break;
    case 4: k_rmsnorm_v<4><<<(unsigned)N, NV_T, 0, st>>>(out, rstd, x, w, C, eps, ob, ldb); break;
    case 8: k_rmsnorm_v<8><<<(unsigned)N, NV_T, 0, st>>>(out, rstd, x, w, C, eps, ob, ldb); break;
    default: // few rows: more threads a row, so each thread has fewer dependent loads
        k_rmsnorm<<<(unsigned)N, N < 512 ? 1024 : 256, 0, st>>>(out, rstd, x, w, C, eps, ob, ldb);
    }
    LC_LAUNCHED(impl(be));
}

static void cu_rmsnorm(lc_backend *be, float *out, float *rstd, const float *x, const float *w,
                       int64_t N, int64_t C, float eps) {
    LC_PROF(impl(be), "rmsnorm N=%lld", N);
    rmsnorm_run(be, out, NULL, C, rstd, x, w, N, C, eps);
}

static void cu_rmsnorm_b(lc_backend *be, float *out, void *outb, int64_t ldb, float *rstd, const float *x,
                         const float *w, int64_t N, int64_t C, float eps) {
    LC_PROF(impl(be), out ? "rmsnorm+bf16 N=%lld" : "rmsnorm (bf16) N=%lld", N);
    rmsnorm_run(be, out, (__nv_bfloat16 *)outb, ldb ? ldb : C, rstd, x, w, N, C, eps);
}

__global__ void k_rmsnorm_bwd(float *dx, const float *dout, const float *x, const float *w,
                              const float *rstd, int64_t C, __nv_bfloat16 *db, int64_t ldb) {
    __shared__ float sh[32];
    size_t off = (size_t)blockIdx.x * C;
    const float *xr = x + off, *g = dout + off;
    float *d = dx + off, r = rstd[blockIdx.x];
    float dot = 0;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) dot += w[c] * g[c] * xr[c] * r;
    float m = block_sum(dot, sh) / (float)C;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
        float v = d[c] + r * (w[c] * g[c] - xr[c] * r * m);
        d[c] = v;
        if (db) db[(size_t)blockIdx.x * ldb + c] = __float2bfloat16_rn(v);
    }
}

static void rmsnorm_bwd_run(lc_backend *be, float *dx, __nv_bfloat16 *db, int64_t ldb, const float *dout,
                            const float *x, const float *w, const float *rstd, int64_t N, int64_t C) {
    if (N <= 0) return;
    cudaStream_t st = impl(be)->st;
    switch ((uintptr_t)dout & 15 || (uintptr_t)db & 7 || ldb % 2 ? 0 : norm_vec(N, C, dx, x, w)) {
    case 1: k_rmsnorm_bwd_v<1><<<(unsigned)N, NV_T, 0, st>>>(dx, dout, x, w, rstd, C, db, ldb); break;
    case 2: k_rmsnorm_bwd_v<2><<<(unsigned)N, NV_T, 0, st>>>(dx, dout, x, w, rstd, C, db, ldb); break;
    case 4: k_rmsnorm_bwd_v<4><<<(unsigned)N, NV_T, 0, st>>>(dx, dout, x, w, rstd, C, db, ldb); break;
    case 8: k_rmsnorm_bwd_v<8><<<(unsigned)N, NV_T, 0, st>>>(dx, dout, x, w, rstd, C, db, ldb); break;
    default: // few rows: more threads a row, so each thread has fewer dependent loads
        k_rmsnorm_bwd<<<(unsigned)N, N < 512 ? 1024 : 256, 0, st>>>(dx, dout, x, w, rstd, C, db, ldb);
    }
    LC_LAUNCHED(impl(be));
}

static void cu_rmsnorm_bwd(lc_backend *be, float *dx, const float *dout, const float *x,
                           const float *w, const float *rstd, int64_t N, int64_t C) {
    LC_PROF(impl(be), "rmsnorm_bwd", 0);
    rmsnorm_bwd_run(be, dx, NULL, C, dout, x, w, rstd, N, C);
}

static void cu_rmsnorm_bwd_b(lc_backend *be, float *dx, void *dxb, int64_t ldb, const float *dout, const float *x,
                             const float *w, const float *rstd, int64_t N, int64_t C) {
    LC_PROF(impl(be), "rmsnorm_bwd+bf16", 0);
    rmsnorm_bwd_run(be, dx, (__nv_bfloat16 *)dxb, ldb, dout, x, w, rstd, N, C);
}

/* Rotates x's rows: into out (may be x: in place), or, with ob, rounded into ob (out NULL;
 * ldo values from one token's heads to the next's). */
__global__ void k_rope(float *out, const float *x, const float *cs, const float *sn, int64_t T, int64_t H, int64_t D,
                       int64_t pos0, float dir, size_t n, __nv_bfloat16 *ob, int64_t ldo) {
    LC_PDL_TRIGGER();
    int64_t h2 = D / 2;
    GRID_STRIDE(idx, n) {
        int64_t i = (int64_t)(idx % h2);
        size_t row = idx / h2; // (b, t, h)
        int64_t t = (int64_t)((row / H) % T);
        const float *r = x + row * D;
        float c = cs[(pos0 + t) * h2 + i], s = dir * sn[(pos0 + t) * h2 + i];
        float y1, y2;
        lc_rope_pair(r[i], r[i + h2], c, s, y1, y2);
        if (ob) {
            __nv_bfloat16 *o = ob + (row / H) * ldo + (row % H) * D;
            o[i] = __float2bfloat16_rn(y1);
            o[i + h2] = __float2bfloat16_rn(y2);
        } else {
            out[row * D + i] = y1;
            out[row * D + i + h2] = y2;
        }
    }
}

/* k_rope four pairs a thread (16-byte float32 loads and stores, 8-byte bf16 ones) with
 * 32-bit index arithmetic (k_rope's 64-bit divisions cost more than its bytes): the same
 * values. n4 = pairs / 4; needs D/2 a multiple of 4 and the alignment rope4_ok checks. */
__global__ void k_rope4(float *out, const float *x, const float *cs, const float *sn, unsigned T, unsigned H,
                        unsigned h2, unsigned pos0, float dir, unsigned n4, __nv_bfloat16 *ob, size_t ldo) {
    LC_PDL_TRIGGER();
    const unsigned q4 = h2 / 4;
    for (unsigned idx = blockIdx.x * blockDim.x + threadIdx.x; idx < n4; idx += gridDim.x * blockDim.x) {
        unsigned i = idx % q4 * 4, row = idx / q4, t = row / H % T;
        const float *r = x + (size_t)row * 2 * h2;
        size_t ti = (size_t)(pos0 + t) * h2 + i;
        float4 a = *(const float4 *)(r + i), b = *(const float4 *)(r + i + h2);
        float4 c = *(const float4 *)(cs + ti), s = *(const float4 *)(sn + ti);
        float x1[4] = {a.x, a.y, a.z, a.w}, x2[4] = {b.x, b.y, b.z, b.w}, cv[4] = {c.x, c.y, c.z, c.w};
        float sv[4] = {s.x, s.y, s.z, s.w}, y1[4], y2[4];
#pragma unroll
        for (int e = 0; e < 4; e++) lc_rope_pair(x1[e], x2[e], cv[e], dir * sv[e], y1[e], y2[e]);
        if (ob) {
            __nv_bfloat16 *o = ob + (size_t)(row / H) * ldo + (size_t)(row % H) * 2 * h2 + i;
            __nv_bfloat162 p[4] = {__floats2bfloat162_rn(y1[0], y1[1]), __floats2bfloat162_rn(y1[2], y1[3]),
                                   __floats2bfloat162_rn(y2[0], y2[1]), __floats2bfloat162_rn(y2[2], y2[3])};
            *(uint2 *)o = make_uint2(*(unsigned *)&p[0], *(unsigned *)&p[1]);
            *(uint2 *)(o + h2) = make_uint2(*(unsigned *)&p[2], *(unsigned *)&p[3]);
        } else {
            float *w = out + (size_t)row * 2 * h2;
            *(float4 *)(w + i) = make_float4(y1[0], y1[1], y1[2], y1[3]);
            *(float4 *)(w + i + h2) = make_float4(y2[0], y2[1], y2[2], y2[3]);
        }
    }
}

/* Whether k_rope4 takes a rope: D/2 a multiple of 4, x, out and the tables 16-byte aligned,
 * ob 8-byte aligned with ldo a multiple of 4, the counts within 32 bits; LORAC_CUDA_VEC not 0. */
static bool rope4_ok(const float *out, const float *x, const float *cs, const float *sn, int64_t D, int64_t pos0,
                     int64_t T, size_t n, const __nv_bfloat16 *ob, int64_t ldo) {
    if (!lc_cuda_vec() || (D / 2) % 4 || n / 4 > UINT32_MAX / 2 || pos0 + T > UINT32_MAX / 2 || D > 65536) return false;
    if (((uintptr_t)x | (uintptr_t)cs | (uintptr_t)sn | (uintptr_t)(ob ? NULL : out)) & 15) return false;
    return !ob || (!((uintptr_t)ob & 7) && ldo % 4 == 0);
}

static void rope_run(lc_backend *be, float *out, const float *x, const float *cs, const float *sn, int64_t B,
                     int64_t T, int64_t H, int64_t D, int64_t pos0, float dir, __nv_bfloat16 *ob, int64_t ldo) {
    size_t n = (size_t)(B * T * H * (D / 2));
    if (!n) return;
    if (rope4_ok(out, x, cs, sn, D, pos0, T, n, ob, ldo))
        k_rope4<<<blocks_for(n / 4), 256, 0, impl(be)->st>>>(out, x, cs, sn, (unsigned)T, (unsigned)H,
                                                            (unsigned)(D / 2), (unsigned)pos0, dir, (unsigned)(n / 4),
                                                            ob, (size_t)ldo);
    else k_rope<<<blocks_for(n), 256, 0, impl(be)->st>>>(out, x, cs, sn, T, H, D, pos0, dir, n, ob, ldo);
    LC_LAUNCHED(impl(be));
}

static void cu_rope(lc_backend *be, float *x, const float *cos, const float *sin, int64_t B, int64_t T,
                    int64_t H, int64_t D, int64_t pos0) {
    LC_PROF(impl(be), "rope N=%lld", B * T);
    rope_run(be, x, x, cos, sin, B, T, H, D, pos0, 1.0f, NULL, 0);
}

static void cu_rope_bwd(lc_backend *be, float *dx, const float *cos, const float *sin, int64_t B,
                        int64_t T, int64_t H, int64_t D, int64_t pos0) {
    LC_PROF(impl(be), "rope_bwd", 0);
    rope_run(be, dx, dx, cos, sin, B, T, H, D, pos0, -1.0f, NULL, 0);
}

static void cu_rope_b(lc_backend *be, void *outb, int64_t ldo, const float *x, const float *cos, const float *sin,
                      int64_t B, int64_t T, int64_t H, int64_t D, int64_t pos0) {
    LC_PROF(impl(be), "rope (bf16 out) N=%lld", B * T);
    rope_run(be, NULL, x, cos, sin, B, T, H, D, pos0, 1.0f, (__nv_bfloat16 *)outb, ldo);
}

static void cu_rope_bwd_b(lc_backend *be, void *outb, int64_t ldo, const float *dx, const float *cos,
                          const float *sin, int64_t B, int64_t T, int64_t H, int64_t D, int64_t pos0) {
    LC_PROF(impl(be), "rope_bwd (bf16 out)", 0);
    rope_run(be, NULL, dx, cos, sin, B, T, H, D, pos0, -1.0f, (__nv_bfloat16 *)outb, ldo);
}

__global__ void k_swiglu(float *out, const float *gate, const float *up, size_t n) {
    LC_PDL_TRIGGER();
    GRID_STRIDE(i, n) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

__global__ void k_swiglu_pack(float *out, __nv_bfloat16 *gu, const float *gate, const float *up, size_t n,
                              __nv_bfloat16 *outb) {
    LC_PDL_TRIGGER();
    GRID_STRIDE(i, n) {
        float g = gate[i], u = up[i], h = g / (1.0f + expf(-g)) * u;
        if (out) out[i] = h;
        if (outb) outb[i] = __float2bfloat16_rn(h);
        gu[i] = __float2bfloat16_rn(g), gu[n + i] = __float2bfloat16_rn(u);
    }
}

/* Element i of SwiGLU's backward from its gate g, up u and dout d (h: k_swiglu's
 * expression, its bits). */
/* SwiGLU's value and gradients at one element: h = silu(g) u, dG, dU from dout d. */
__device__ __forceinline__ void swiglu_grad_of(float g, float u, float d, float &hv, float &dG, float &dU) {
    float e = 1.0f + expf(-g), s = 1.0f / e;
    hv = g / e * u;
    dU = d * g * s, dG = d * u * s * (1.0f + g * (1.0f - s));
}

__device__ __forceinline__ void swiglu_grad(float *dgate, float *dup, float *h, size_t i, float g, float u,
                                            float d, __nv_bfloat16 *gub = NULL, size_t n = 0,
                                            __nv_bfloat16 *hb = NULL) {
    float hv, dG, dU;
    swiglu_grad_of(g, u, d, hv, dG, dU);
    if (h) h[i] = hv;
    if (hb) hb[i] = __float2bfloat16_rn(hv);
    if (dup) dup[i] = dU;
    if (dgate) dgate[i] = dG;
    if (gub) gub[i] = __float2bfloat16_rn(dG), gub[n + i] = __float2bfloat16_rn(dU);
}

__global__ void k_swiglu_bwd(float *dgate, float *dup, float *h, const float *dout, const float *gate,
                             const float *up, size_t n) {
    GRID_STRIDE(i, n) swiglu_grad(dgate, dup, h, i, gate[i], up[i], dout[i]);
}

__global__ void k_swiglu_bwd_packed(float *dgate, float *dup, float *h, const float *dout, const __nv_bfloat16 *gu,
                                    size_t n) {
    GRID_STRIDE(i, n) swiglu_grad(dgate, dup, h, i, __bfloat162float(gu[i]), __bfloat162float(gu[n + i]), dout[i]);
}

__device__ __forceinline__ float as_f32(float x) { return x; }
__device__ __forceinline__ float as_f32(__nv_bfloat16 x) { return __bfloat162float(x); }

/* k_swiglu_bwd_packed, then dgate's and dup's bf16 roundings over gate's and up's in gu
 * (what as_bf16 would make of them for the input-gradient products); dout float32 or bf16. */
template <typename TD>
__global__ void k_swiglu_bwd_packed_b(float *dgate, float *dup, float *h, const TD *dout, __nv_bfloat16 *gu,
                                      size_t n, __nv_bfloat16 *hb) {
    GRID_STRIDE(i, n)
    swiglu_grad(dgate, dup, h, i, __bfloat162float(gu[i]), __bfloat162float(gu[n + i]), as_f32(dout[i]), gu, n, hb);
}

static void cu_swiglu(lc_backend *be, float *out, const float *gate, const float *up, size_t n) {
    LC_PROF(impl(be), "swiglu n=%lld", n);
    if (!n) return;
    k_swiglu<<<blocks_for(n), 256, 0, impl(be)->st>>>(out, gate, up, n);
    LC_LAUNCHED(impl(be));
}

static void cu_swiglu_pack(lc_backend *be, float *out, void *gu, const float *gate, const float *up, size_t n,
                           void *outb) {
    LC_PROF(impl(be), "swiglu+pack n=%lld", n);
    if (!n) return;
    k_swiglu_pack<<<blocks_for(n), 256, 0, impl(be)->st>>>(out, (__nv_bfloat16 *)gu, gate, up, n, (__nv_bfloat16 *)outb);
    LC_LAUNCHED(impl(be));
}

static void cu_swiglu_bwd_packed(lc_backend *be, float *dgate, float *dup, float *h, const float *dout,
                                 const void *gu, size_t n) {
    LC_PROF(impl(be), h ? "swiglu_bwd+h (packed)" : "swiglu_bwd (packed)", 0);
    if (!n) return;
    k_swiglu_bwd_packed<<<blocks_for(n), 256, 0, impl(be)->st>>>(dgate, dup, h, dout, (const __nv_bfloat16 *)gu, n);
    LC_LAUNCHED(impl(be));
}

/* k_swiglu_bwd_packed_b four elements a thread (n a multiple of 4, every array 16-byte
 * aligned): the same arithmetic, 16-byte float32 and 8-byte bf16 loads and stores. */
template <typename TD>
__global__ void k_swiglu_bwd_packed_b4(float *dgate, float *dup, float *h, const TD *dout, __nv_bfloat16 *gu,
                                       size_t n, __nv_bfloat16 *hb) {
    GRID_STRIDE(j, n / 4) {
        size_t i = 4 * j;
        uint2 gw = *(const uint2 *)(gu + i), uw = *(const uint2 *)(gu + n + i);
        float4 dv;
        if constexpr (std::is_same<TD, float>::value) {
            dv = *(const float4 *)(dout + i);
        } else {
            uint2 dw = *(const uint2 *)(dout + i);
            const __nv_bfloat162 *d2 = (const __nv_bfloat162 *)&dw;
            float2 da = __bfloat1622float2(d2[0]), db = __bfloat1622float2(d2[1]);
            dv = make_float4(da.x, da.y, db.x, db.y);
        }
        const __nv_bfloat162 *g2 = (const __nv_bfloat162 *)&gw, *u2 = (const __nv_bfloat162 *)&uw;
        float2 ga = __bfloat1622float2(g2[0]), gb = __bfloat1622float2(g2[1]);
        float2 ua = __bfloat1622float2(u2[0]), ub = __bfloat1622float2(u2[1]);
        float g[4] = {ga.x, ga.y, gb.x, gb.y}, u[4] = {ua.x, ua.y, ub.x, ub.y}, d[4] = {dv.x, dv.y, dv.z, dv.w};
        float hv[4], dG[4], dU[4];
#pragma unroll
        for (int e = 0; e < 4; e++) swiglu_grad_of(g[e], u[e], d[e], hv[e], dG[e], dU[e]);
        if (h) *(float4 *)(h + i) = make_float4(hv[0], hv[1], hv[2], hv[3]);
        if (hb) {
            __nv_bfloat162 q[2] = {__floats2bfloat162_rn(hv[0], hv[1]), __floats2bfloat162_rn(hv[2], hv[3])};
            *(uint2 *)(hb + i) = *(const uint2 *)q;
        }
        if (dup) *(float4 *)(dup + i) = make_float4(dU[0], dU[1], dU[2], dU[3]);
        if (dgate) *(float4 *)(dgate + i) = make_float4(dG[0], dG[1], dG[2], dG[3]);
        __nv_bfloat162 qg[2] = {__floats2bfloat162_rn(dG[0], dG[1]), __floats2bfloat162_rn(dG[2], dG[3])};
        __nv_bfloat162 qu[2] = {__floats2bfloat162_rn(dU[0], dU[1]), __floats2bfloat162_rn(dU[2], dU[3])};
        *(uint2 *)(gu + i) = *(const uint2 *)qg;
        *(uint2 *)(gu + n + i) = *(const uint2 *)qu;
    }
}

static void cu_swiglu_bwd_packed_b(lc_backend *be, float *dgate, float *dup, float *h, const float *dout, void *gu,
                                   size_t n, void *hb) {
    LC_PROF(impl(be),
            hb  ? "swiglu_bwd+h16 (packed, bf16 dy)"
            : h ? "swiglu_bwd+h (packed, bf16 dy)"
                : "swiglu_bwd (packed, bf16 dy)",
            0);
    if (!n) return;
    const void *ps[] = {dgate, dup, h, dout, gu, hb};
    bool wide = n % 4 == 0 && lc_cuda_vec(); // else one element a thread
    for (const void *p : ps) wide = wide && !((uintptr_t)p & 15);
    if (wide)
        k_swiglu_bwd_packed_b4<<<blocks_for(n / 4), 256, 0, impl(be)->st>>>(dgate, dup, h, dout, (__nv_bfloat16 *)gu,
                                                                             n, (__nv_bfloat16 *)hb);
    else
        k_swiglu_bwd_packed_b<<<blocks_for(n), 256, 0, impl(be)->st>>>(dgate, dup, h, dout, (__nv_bfloat16 *)gu, n,
                                                                        (__nv_bfloat16 *)hb);
    LC_LAUNCHED(impl(be));
}

static void cu_swiglu_bwd_packed_bb(lc_backend *be, const void *doutb, void *gu, size_t n, void *hb) {
    LC_PROF(impl(be), hb ? "swiglu_bwd+h16 (packed, bf16 dy, bf16 dout)" : "swiglu_bwd (packed, bf16 dy, bf16 dout)",
            0);
    if (!n) return;
    typedef __nv_bfloat16 b16;
    const b16 *d = (const b16 *)doutb;
    bool wide = n % 4 == 0 && lc_cuda_vec() && !((uintptr_t)doutb & 7) && !((uintptr_t)gu & 7) &&
                !((uintptr_t)hb & 7); // 8-byte bf16 accesses
    if (wide)
        k_swiglu_bwd_packed_b4<<<blocks_for(n / 4), 256, 0, impl(be)->st>>>(NULL, NULL, NULL, d, (b16 *)gu, n,
                                                                             (b16 *)hb);
    else
        k_swiglu_bwd_packed_b<<<blocks_for(n), 256, 0, impl(be)->st>>>(NULL, NULL, NULL, d, (b16 *)gu, n, (b16 *)hb);
    LC_LAUNCHED(impl(be));
}

static void cu_swiglu_bwd(lc_backend *be, float *dgate, float *dup, float *h, const float *dout,
                          const float *gate, const float *up, size_t n) {
    LC_PROF(impl(be), h ? "swiglu_bwd+h" : "swiglu_bwd", 0);
    if (!n) return;
    k_swiglu_bwd<<<blocks_for(n), 256, 0, impl(be)->st>>>(dgate, dup, h, dout, gate, up, n);
    LC_LAUNCHED(impl(be));
}

/* One row of logits: loss[n] = lse - l[target] (0 for ignored rows); with grad_scale
 * (*gsp when gsp is given: a replayed step reads it from the card) the row becomes
 * grad_scale · (softmax - onehot). */
__global__ void k_cross_entropy(float *logits, const int32_t *targets, int64_t V, float grad_scale,
                                const float *gsp, float *loss) {
    __shared__ float sh[32];
    if (gsp) grad_scale = *gsp;
    float *l = logits + (size_t)blockIdx.x * V;
    int32_t t = targets[blockIdx.x];
    if (t < 0) {
        if (grad_scale != 0.0f)
            for (int64_t j = threadIdx.x; j < V; j += blockDim.x) l[j] = 0.0f;
        if (threadIdx.x == 0) loss[blockIdx.x] = 0.0f;
        return;
    }
    float mx = -INFINITY;
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) mx = fmaxf(mx, l[j]);
    mx = block_max(mx, sh);
    float s = 0;
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) s += expf(l[j] - mx);
    s = block_sum(s, sh);
    float lt = l[t];
    if (threadIdx.x == 0) loss[blockIdx.x] = (float)((double)mx + log((double)s) - (double)lt);
    if (grad_scale == 0.0f) return;
    __syncthreads(); // every thread has read l[t]
    float f = (float)((double)grad_scale / (double)s);
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) l[j] = expf(l[j] - mx) * f;
    __syncthreads();
    if (threadIdx.x == 0) l[t] -= grad_scale;
}

static double cu_cross_entropy(lc_backend *be, float *logits, const int32_t *targets, int64_t N,
                               int64_t V, float grad_scale) {
    LC_PROF(impl(be), "cross_entropy", 0);
    lc_cuda *c = impl(be);
    if (N <= 0) return 0.0;
    float *loss = lc_cuda_rows(c, (size_t)N);
    k_cross_entropy<<<(unsigned)N, 1024, 0, c->st>>>(logits, targets, V, grad_scale, NULL, loss);
    LC_LAUNCHED(c);
    if (c->host_rows_cap < (size_t)N) {
        free(c->host_rows);
        c->host_rows = (float *)xmalloc((size_t)N * sizeof(float));
        c->host_rows_cap = (size_t)N;
    }
    LC_CK(c, cudaMemcpy(c->host_rows, loss, (size_t)N * sizeof(float), cudaMemcpyDeviceToHost));
    double total = 0;
    for (int64_t n = 0; n < N; n++) total += c->host_rows[n];
    return total;
}

/* *sum += loss[0] + ... + loss[N-1], added in order in double (the host loop of
 * cu_cross_entropy, so both give the same bits); one block stages the rows. */
__global__ void k_loss_sum(double *sum, const float *loss, int64_t N) {
    __shared__ float sh[1024];
    double t = 0.0;
    for (int64_t r0 = 0; r0 < N; r0 += 1024) {
        int64_t n = N - r0 < 1024 ? N - r0 : 1024;
        __syncthreads();
        if (threadIdx.x < n) sh[threadIdx.x] = loss[r0 + threadIdx.x];
        __syncthreads();
        if (threadIdx.x == 0)
            for (int64_t i = 0; i < n; i++) t += (double)sh[i];
    }
    if (threadIdx.x == 0) *sum += t;
}

static void cu_cross_entropy_sum(lc_backend *be, double *sum, float *logits, const int32_t *targets,
                                 int64_t N, int64_t V, const float *grad_scale) {
    LC_PROF(impl(be), "cross_entropy", 0);
    lc_cuda *c = impl(be);
    if (N <= 0) return;
    float *loss = lc_cuda_rows(c, (size_t)N);
    k_cross_entropy<<<(unsigned)N, 1024, 0, c->st>>>(logits, targets, V, 0.0f, grad_scale, loss);
    LC_LAUNCHED(c);
    k_loss_sum<<<1, 1024, 0, c->st>>>(sum, loss, N);
    LC_LAUNCHED(c);
}

/* ------------------------------------------------------------ the table */

extern "C" lc_backend *lc_backend_cuda_new(int device) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        cudaGetLastError();
        lc_fail("cuda: no usable GPU (%s); use --device cpu",
                e != cudaSuccess ? cudaGetErrorString(e) : "no device found");
        return NULL;
    }
    if (device < 0 || device >= n) {
        lc_fail("cuda: GPU %d does not exist (this machine has %d: 0..%d)", device, n, n - 1);
        return NULL;
    }
    cudaDeviceProp prop;
    if ((e = cudaSetDevice(device)) != cudaSuccess || (e = cudaGetDeviceProperties(&prop, device)) != cudaSuccess ||
        (e = cudaFree(0)) != cudaSuccess) {
        cudaGetLastError();
        lc_fail("cuda: cannot open GPU %d: %s", device, cudaGetErrorString(e));
        return NULL;
    }
    if (prop.major < 8) {
        lc_fail("cuda: GPU %d (%s) has compute capability %d.%d; lorac's CUDA backend needs 8.0 "
                "(Ampere) or newer for bf16 products; use --device cpu",
                device, prop.name, prop.major, prop.minor);
        return NULL;
    }
    lc_cuda *c = (lc_cuda *)xcalloc(1, sizeof *c);
    c->device = device;
    snprintf(c->name, sizeof c->name, "%s", prop.name);
    cublasStatus_t st = cublasCreate(&c->blas);
    if (st != CUBLAS_STATUS_SUCCESS) {
        lc_fail("cuda: cuBLAS did not start on %s: %s", c->name, cublasGetStatusString(st));
        free(c);
        return NULL;
    }
    prof_start(c);
    const char *pd = getenv("LORAC_CUDA_PDL");
    c->pdl = prop.major >= 9 && !(pd && !strcmp(pd, "0"));
    LC_CK(c, cudaMalloc(&c->counter, LC_NCOUNTERS * sizeof(unsigned)));
    LC_CK(c, cudaMemset(c->counter, 0, LC_NCOUNTERS * sizeof(unsigned)));
    lc_backend *be = (lc_backend *)xcalloc(1, sizeof *be);
    be->name = "cuda";
    be->device_name = c->name;
    be->impl = c;
    be->threads = 1;
    // Above lora_gemm.cu's few-rows kernels (256 rows), where cuBLAS runs the adapters'
    // products one by one; LORAC_CUDA_LORA_GROUP_ROWS=N moves the line (0: always).
    const char *gr = getenv("LORAC_CUDA_LORA_GROUP_ROWS");
    be->lora_group_rows = gr && *gr ? strtoll(gr, NULL, 10) : 257;
    be->alloc = cu_alloc;
    be->release = cu_release;
    be->upload = cu_upload;
    be->download = cu_download;
    be->free = cu_free;
    be->alloc_shared = cu_alloc_shared;
    be->sync = cu_sync;
    be->weight = cu_weight;
    be->weight_n = cu_weight_n;
    be->weight_room = cu_weight_room;
    be->merge_lora = cu_merge_lora;
    be->zero = cu_zero;
    be->copy = cu_copy;
    be->copy2d = cu_copy2d;
    be->copy2d_n = cu_copy2d_n;
    be->add = cu_add;
    be->axpy = cu_axpy;
    be->dropout = cu_dropout;
    be->adam = cu_adam;
    be->matmul = cu_matmul;
    be->matmul_dx = cu_matmul_dx;
    be->gemm = cu_gemm;
    be->gemm_n = lc_cuda_gemm_n;
    be->matmul_n = cu_matmul_n;
    be->embedding = cu_embedding;
    be->rmsnorm = cu_rmsnorm;
    be->rmsnorm_bwd = cu_rmsnorm_bwd;
    be->rope = cu_rope;
    be->rope_bwd = cu_rope_bwd;
    be->attention = lc_cuda_attention;
    be->attention_bwd = lc_cuda_attention_bwd;
    be->swiglu = cu_swiglu;
    be->swiglu_bwd = cu_swiglu_bwd;
    be->swiglu_pack = cu_swiglu_pack;
    be->swiglu_bwd_packed = cu_swiglu_bwd_packed;
    be->swiglu_bwd_packed_b = cu_swiglu_bwd_packed_b;
    be->swiglu_bwd_packed_bb = cu_swiglu_bwd_packed_bb;
    be->matmul_dx_b = cu_matmul_dx_b;
    be->matmul_dx_bo = cu_matmul_dx_bo;
    be->gemm_b = cu_gemm_b;
    be->lora_dy = lc_cuda_lora_dy;
    be->rmsnorm_b = cu_rmsnorm_b;
    be->rmsnorm_bwd_b = cu_rmsnorm_bwd_b;
    be->rope_bwd_b = cu_rope_bwd_b;
    be->to_bf16 = cu_to_bf16;
    be->to_bf16_rows = cu_to_bf16_rows;
    be->to_bf16_t = cu_to_bf16_t;
    be->rope_b = cu_rope_b;
    be->attention_b = lc_cuda_attention_b;
    be->attention_bwd_b = lc_cuda_attention_bwd_b;
    be->attention_bwd_rb = lc_cuda_attention_bwd_rb;
    be->matmul_n_b = cu_matmul_n_b;
    be->matmul_n_bo = cu_matmul_n_bo;
    be->swiglu_lora = lc_cuda_swiglu_lora;
    be->cross_entropy = cu_cross_entropy;
    be->cross_entropy_sum = cu_cross_entropy_sum;
    be->replay = lc_cuda_replay;
    be->mem_info = cu_mem_info;
    be->all_finite = cu_all_finite;
    be->sumsq = cu_sumsq;
    be->scale = cu_scale;
    be->decode = lc_cuda_decode;
    be->argmax = cu_argmax;
    be->argmax_read = cu_argmax_read;
    return be;
}
