/*
 * graph.cu — ->replay: a training step (the model's forward and backward, ~1,500 small
 * launches) recorded once as a CUDA graph and replayed, so the host stops paying each
 * launch and the card stops idling between them.
 *
 * Owns a blocking stream (ordered with the legacy stream the rest of the backend uses, so
 * the uploads before a step and the optimizer after it need no extra waits) and up to
 * GRAPH_SLOTS keys, each with its graph once recorded; least recently used first out.
 * A key seen for the first time runs its body directly on that stream (first-use work:
 * gemm.cu's per-shape tuning, which times on the legacy stream and waits for the card;
 * scratch growth); the second sighting records the body (stream capture, thread-local
 * mode: any legacy-stream or synchronous call inside fails the recording, which is then
 * dropped and the body run directly, and that key is never recorded again); later ones
 * replay it. A recording also keeps the backend's scratch pointers it baked in (the bf16
 * operand buffer, the per-row scratch, the cuBLASLt workspace): when one has been
 * reallocated since (a larger shape ran), the key is recorded again.
 * Quantized weights: quant.cu dequantizes them into its ring of buffers on its own
 * stream, ahead of time, by host bookkeeping of what each buffer holds. A recording forks that stream
 * from the graph stream and joins it back (so its fills are in the graph), starts from
 * buffers it treats as empty (its first product dequantizes inside the graph) and keeps
 * the bookkeeping at its end; after every launch of it that bookkeeping is restored (a
 * replay leaves the buffers exactly as the recording did) and the events re-recorded on
 * the graph stream, and before a launch the graph stream waits for the side stream's
 * queued fills. The buffers' addresses are part of the scratch a recording points at.
 * Must not: record under LORAC_CUDA_PROFILE (its events are on the legacy stream), or
 * while an error is pending; LORAC_CUDA_GRAPH=0 or LORAC_CUDA_STEP_GRAPH=0 run every body
 * directly on the legacy stream (main's path).
 */
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda.h"

extern "C" {
#include "core/mem.h"
}

#define GRAPH_SLOTS 8

/* The scratch a recording points at. */
struct scratch_sig {
    const void *xb, *rows, *ws, *qb[LC_CUDA_DQ_MAX];
    size_t xb_cap, rows_cap, ws_cap, q_cap;
};

struct slot {
    void *key; // NULL: free
    size_t n;
    cudaGraphExec_t exec; // NULL: seen once, not recorded yet
    bool failed;          // recording failed: run directly
    scratch_sig sig;      // of exec
    lc_cuda_qsnap qs;     // what quant.cu's buffers hold after exec ran
    unsigned long long used;
};

struct lc_cuda_graph {
    cudaStream_t st;
    slot s[GRAPH_SLOTS];
    unsigned long long tick;
};

static bool env_off(const char *name) {
    const char *e = getenv(name);
    return e && !strcmp(e, "0");
}

static scratch_sig sig_of(lc_cuda *c) {
    scratch_sig g;
    memset(&g, 0, sizeof g);
    g.xb = c->xb, g.xb_cap = c->xb_cap, g.rows = c->rows, g.rows_cap = c->rows_cap;
    lc_cuda_lt_ws(c, &g.ws, &g.ws_cap);
    lc_cuda_quant_buffers(c, g.qb, &g.q_cap);
    return g;
}

static void drop_exec(slot *s) {
    if (s->exec) cudaGraphExecDestroy(s->exec);
    s->exec = NULL;
}

static void drop_slot(slot *s) {
    drop_exec(s);
    free(s->key);
    memset(s, 0, sizeof *s);
}

void lc_cuda_graph_free(lc_cuda *c) {
    lc_cuda_graph *g = c->graph;
    if (!g) return;
    for (int i = 0; i < GRAPH_SLOTS; i++) drop_slot(&g->s[i]);
    if (g->st) cudaStreamDestroy(g->st);
    free(g);
    c->graph = NULL;
}

/* Points the backend's ops (kernels, copies, cuBLAS, cuBLASLt) at stream st. */
static void use_stream(lc_cuda *c, cudaStream_t st) {
    c->st = st;
    cublasStatus_t s = cublasSetStream(c->blas, st);
    if (s != CUBLAS_STATUS_SUCCESS) lc_cuda_error(c, __FILE__, __LINE__, "cublasSetStream", cublasGetStatusString(s));
}

/* Runs body directly on the graph stream. */
static void run_direct(lc_cuda *c, lc_cuda_graph *g, void (*body)(void *), void *ctx) {
    use_stream(c, g->st);
    body(ctx);
    use_stream(c, 0);
}

/* Records body into s->exec; returns whether it worked (errors met while recording are
 * cleared: nothing ran, and the caller runs body directly). */
static bool record(lc_cuda *c, lc_cuda_graph *g, slot *s, void (*body)(void *), void *ctx) {
    cudaGraph_t gr = NULL;
    use_stream(c, g->st);
    lc_cuda_quant_graph_enter(c, g->st);
    if (cudaStreamBeginCapture(g->st, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
        cudaGetLastError();
        use_stream(c, 0);
        return false;
    }
    lc_cuda_quant_capture_fork(c, g->st);
    body(ctx);
    lc_cuda_qsnap qs;
    lc_cuda_quant_capture_join(c, g->st, &qs);
    cudaError_t e = cudaStreamEndCapture(g->st, &gr);
    use_stream(c, 0);
    // each node keeps its stream's priority: the step's ops over quant.cu's dequantization
    // copies (LORAC_CUDA_DQ_PRIO=0: the launch stream's for all)
    unsigned long long fl = env_off("LORAC_CUDA_DQ_PRIO") ? 0 : cudaGraphInstantiateFlagUseNodePriority;
    bool ok = e == cudaSuccess && gr && !c->err[0] && cudaGraphInstantiate(&s->exec, gr, fl) == cudaSuccess;
    if (gr) cudaGraphDestroy(gr);
    if (!ok) {
        s->exec = NULL;
        c->err[0] = 0; // the recording's errors: nothing was queued
        cudaGetLastError();
        lc_cuda_quant_graph_leave(c, g->st, NULL); // its fills never ran
        return false;
    }
    s->sig = sig_of(c);
    s->qs = qs;
    return true;
}

int lc_cuda_replay(lc_backend *be, const void *key, size_t key_bytes, void (*body)(void *ctx), void *ctx) {
    lc_cuda *c = (lc_cuda *)be->impl;
    if (env_off("LORAC_CUDA_GRAPH") || env_off("LORAC_CUDA_STEP_GRAPH") || c->prof || c->err[0]) {
        body(ctx);
        return 0;
    }
    lc_cuda_graph *g = c->graph;
    if (!g) {
        g = (lc_cuda_graph *)xcalloc(1, sizeof *g);
        // blocking: ordered with the legacy stream; the highest priority, above quant.cu's
        // side stream (the default, lowest), so the copies ahead of time take the SMs the
        // step's own kernels leave (LORAC_CUDA_DQ_PRIO=0: the default priority; cuda_notes,
        // "Deeper dequantization prefetch (dqdeep)")
        int lo = 0, hi = 0;
        if (!env_off("LORAC_CUDA_DQ_PRIO")) cudaDeviceGetStreamPriorityRange(&lo, &hi);
        if (cudaStreamCreateWithPriority(&g->st, cudaStreamDefault, hi) != cudaSuccess) {
            cudaGetLastError();
            free(g);
            body(ctx);
            return 0;
        }
        c->graph = g;
    }
    g->tick++;
    slot *s = NULL;
    for (int i = 0; i < GRAPH_SLOTS && !s; i++)
        if (g->s[i].key && g->s[i].n == key_bytes && !memcmp(g->s[i].key, key, key_bytes)) s = &g->s[i];
    if (!s) { // first sighting: keep the key (in the least recently used slot), run directly
        s = &g->s[0];
        for (int i = 1; i < GRAPH_SLOTS; i++)
            if (g->s[i].used < s->used) s = &g->s[i];
        drop_slot(s);
        s->key = xmalloc(key_bytes ? key_bytes : 1);
        memcpy(s->key, key, key_bytes);
        s->n = key_bytes;
        s->used = g->tick;
        run_direct(c, g, body, ctx);
        return 0;
    }
    s->used = g->tick;
    if (s->failed) {
        run_direct(c, g, body, ctx);
        return 0;
    }
    if (s->exec) {
        scratch_sig now = sig_of(c);
        if (!memcmp(&now, &s->sig, sizeof now)) {
            lc_cuda_quant_graph_enter(c, g->st);
            LC_CK(c, cudaGraphLaunch(s->exec, g->st));
            lc_cuda_quant_graph_leave(c, g->st, &s->qs);
            be->step_replays++;
            return 0;
        }
        drop_exec(s); // a scratch buffer it points at was reallocated: record again
    }
    if (!record(c, g, s, body, ctx)) {
        s->failed = true;
        run_direct(c, g, body, ctx);
        return 0;
    }
    LC_CK(c, cudaGraphLaunch(s->exec, g->st));
    lc_cuda_quant_graph_leave(c, g->st, &s->qs);
    be->step_captures++;
    return 0;
}
