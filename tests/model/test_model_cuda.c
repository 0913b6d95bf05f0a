/*
 * test_model_cuda.c — the model tests of test_model.c (transformers + PEFT fixtures:
 * logits, losses, every LoRA gradient, greedy generation through the KV cache,
 * checkpointing, Adam/AdamW trajectories) run on the CUDA backend. The fixture models
 * are float32, so the card multiplies them in float32 (SGEMM) and every bound is
 * test_model.c's times 10: only summation order and expf differ from the CPU.
 *
 * Then the fused one-token step (->decode, src/backend/cuda/decode.cu) on its own: the
 * same greedy sequence over many positions through the single ops
 * (LORAC_CUDA_DECODE=0), the fused kernels launched directly (LORAC_CUDA_GRAPH=0) and
 * the recorded graph replayed, after a cache reset, with every adapter rewritten in
 * place between generations (the graph must read the new values), with a second cache
 * (a new graph), against the CPU backend; once on the float32 fixtures and once on a
 * bf16 copy of tiny-mistral (the bf16 product kernels). The same models without adapters
 * (and NF4, and adapters on some projections only: products without adapter blocks beside
 * products with) against the single ops and the CPU, with lc_model_greedy's queued loop.
 * Batch 1 only: the cache's step has no batch.
 *
 * Then the recorded training step (->replay, src/backend/cuda/graph.cu): 14 training
 * steps with AdamW updates on the card, changing T and back and turning gradient
 * checkpointing on and off (new recordings, replays of old ones), with an eval loss in
 * between, once with LORAC_CUDA_STEP_GRAPH=0 and once with the graph, on each fixture
 * model and on the bf16 copy: losses, every step's gradients and the final adapters must
 * be the same bits. The fixture tests above (loss, gradients, trajectories against
 * PEFT) already run with the graph on. LORAC_CUDA_GRAPH=0 and dropout run directly.
 * The same comparison over quantized bases (NF4; MLX affine 4-bit with the embedding
 * table and lm_head quantized), with ahead-of-time dequantization on and off, and a
 * greedy generation between two replays: its tokens and logits the same bits too.
 * Skips (visibly) when the build has no CUDA or no GPU answers.
 */
#include "backend/backend.h"

#define TEST_DEVICE "cuda"
#define TOL 10.0
#define TEST_NEEDS_GPU 1
#define TEST_EXTRA extra_tests

static void test_skipped_without_gpu(void);
static void extra_tests(void);

#include "test_model.c"

#include <unistd.h>

#include "cmd/cmd.h"
#include "core/file.h"
#include "model/fuse.h"

static void test_skipped_without_gpu(void) { SKIP("no CUDA backend (see above)"); }

#define GEN 12 // greedy steps after the prompt (positions np .. np + GEN)

/* max |a - b| / max |b| over n floats. */
static double frel(const float *a, const float *b, size_t n) {
    double md = 0, mr = 0;
    for (size_t i = 0; i < n; i++) {
        md = fmax(md, fabs((double)a[i] - (double)b[i]));
        mr = fmax(mr, fabs((double)b[i]));
    }
    return mr > 0 ? md / mr : md;
}

/* Resets kv, steps the prompt, then GEN greedy tokens; the logits of every step after
 * the prompt's into lg (GEN × V), the tokens into tok. Returns 0 or -1. */
static int run_gen(lc_model *m, lc_kv_cache *kv, const int32_t *prompt, int np, int32_t *tok, float *lg) {
    int64_t V = lc_model_cfg(m)->vocab_size;
    lc_kv_cache_reset(kv);
    float *cur = malloc((size_t)V * 4);
    if (lc_model_step(m, kv, prompt, np, cur) < 0) return free(cur), -1;
    for (int s = 0; s < GEN; s++) {
        int32_t best = 0;
        for (int64_t v = 1; v < V; v++) best = cur[v] > cur[best] ? (int32_t)v : best;
        tok[s] = best;
        if (lc_model_step(m, kv, &best, 1, cur) < 0) return free(cur), -1;
        memcpy(lg + (size_t)s * V, cur, (size_t)V * 4);
    }
    free(cur);
    return 0;
}

/* Rewrites every adapter in place (host writes into the shared memory, as lorac serve's
 * and the trainer's updates do): A scaled, B replaced by a fixed pattern. */
static void rewrite_adapters(lc_model *m, int round) {
    lc_model_sync(m);
    size_t n;
    lc_lora_param *p = lc_model_lora(m, &n);
    for (size_t i = 0; i < n; i++) {
        for (int64_t j = 0; j < p[i].in * p[i].r; j++) p[i].a[j] *= 0.75f;
        for (int64_t j = 0; j < p[i].r * p[i].out; j++)
            p[i].b[j] = 0.05f * sinf((float)(j + 1) * (0.37f + 0.11f * (float)round) + (float)i);
    }
}

typedef struct {
    int32_t tok[GEN];
    float *lg;
} gen_out;

/* The whole comparison on one pair of models (cuda, cpu) with the same weights and
 * adapters; tol bounds the fused steps against the single ops and the CPU. */
static void compare_paths(const char *name, lc_model *mc, lc_model *mh, const int32_t *prompt, int np, double tol) {
    lc_backend *be = mc->be;
    int64_t V = lc_model_cfg(mc)->vocab_size;
    size_t nl = (size_t)GEN * (size_t)V;
    gen_out single, direct, graph, again, cpu, swap_g, swap_s, swap_c, cache2;
    gen_out *all[] = {&single, &direct, &graph, &again, &cpu, &swap_g, &swap_s, &swap_c, &cache2};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) all[i]->lg = malloc(nl * 4);
    lc_kv_cache *kv, *kh, *kv2;
    CHECK_OK(lc_kv_cache_create(mc, 32, &kv));
    CHECK_OK(lc_kv_cache_create(mh, 32, &kh));
    CHECK_OK(lc_kv_cache_create(mc, 24, &kv2));
    CHECK(be->decode != NULL);

    setenv("LORAC_CUDA_DECODE", "0", 1);
    long long c0 = be->decode_captures, r0 = be->decode_replays;
    CHECK_OK(run_gen(mc, kv, prompt, np, single.tok, single.lg));
    CHECK_MSG(be->decode_captures == c0 && be->decode_replays == r0, "%s: LORAC_CUDA_DECODE=0 still used ->decode", name);
    unsetenv("LORAC_CUDA_DECODE");
    setenv("LORAC_CUDA_GRAPH", "0", 1);
    CHECK_OK(run_gen(mc, kv, prompt, np, direct.tok, direct.lg));
    CHECK_MSG(be->decode_captures == c0 && be->decode_replays == r0, "%s: LORAC_CUDA_GRAPH=0 recorded a graph", name);
    unsetenv("LORAC_CUDA_GRAPH");
    CHECK_OK(run_gen(mc, kv, prompt, np, graph.tok, graph.lg));
    CHECK_MSG(be->decode_captures == c0 + 1 && be->decode_replays == r0 + GEN - 1,
              "%s: %lld graphs recorded, %lld replays (want 1, %d)", name, be->decode_captures - c0,
              be->decode_replays - r0, GEN - 1);
    CHECK_OK(run_gen(mc, kv, prompt, np, again.tok, again.lg)); // after a reset: the same graph
    CHECK_MSG(be->decode_captures == c0 + 1 && be->decode_replays == r0 + 2 * GEN - 1,
              "%s: a cache reset recorded a new graph", name);
    CHECK_OK(run_gen(mh, kh, prompt, np, cpu.tok, cpu.lg));

    double e_ds = frel(direct.lg, single.lg, nl), e_gd = frel(graph.lg, direct.lg, nl);
    double e_ag = frel(again.lg, graph.lg, nl), e_gc = frel(graph.lg, cpu.lg, nl), e_sc = frel(single.lg, cpu.lg, nl);
    CHECK_MSG(!memcmp(single.tok, cpu.tok, sizeof cpu.tok), "%s: single ops' tokens differ from the CPU's", name);
    CHECK_MSG(!memcmp(direct.tok, single.tok, sizeof cpu.tok), "%s: fused tokens differ from the single ops'", name);
    CHECK_MSG(!memcmp(graph.tok, single.tok, sizeof cpu.tok), "%s: graph tokens differ from the single ops'", name);
    CHECK_MSG(!memcmp(again.tok, graph.tok, sizeof cpu.tok), "%s: replay after reset gives other tokens", name);
    CHECK_MSG(e_ds < tol, "%s: fused vs single ops rel err %.3e", name, e_ds);
    CHECK_MSG(e_gd == 0.0, "%s: graph vs direct fused rel err %.3e (same kernels: want 0)", name, e_gd);
    CHECK_MSG(e_ag == 0.0, "%s: replay after reset rel err %.3e", name, e_ag);
    CHECK_MSG(e_gc < tol, "%s: graph vs CPU rel err %.3e", name, e_gc);
    printf("  %s: %d tokens from position %d equal on every path; fused-single %.1e, graph-direct %.1e, "
           "graph-cpu %.1e, single-cpu %.1e\n", name, GEN, np, e_ds, e_gd, e_gc, e_sc);

    // adapters rewritten in place between generations: the replay must read them
    rewrite_adapters(mc, 1), rewrite_adapters(mh, 1);
    CHECK_OK(run_gen(mc, kv, prompt, np, swap_g.tok, swap_g.lg));
    CHECK_MSG(be->decode_captures == c0 + 1, "%s: rewriting adapter values recorded a new graph", name);
    setenv("LORAC_CUDA_DECODE", "0", 1);
    CHECK_OK(run_gen(mc, kv, prompt, np, swap_s.tok, swap_s.lg));
    unsetenv("LORAC_CUDA_DECODE");
    CHECK_OK(run_gen(mh, kh, prompt, np, swap_c.tok, swap_c.lg));
    double e_changed = frel(swap_g.lg, graph.lg, nl), e_sw = frel(swap_g.lg, swap_s.lg, nl), e_swc = frel(swap_g.lg, swap_c.lg, nl);
    CHECK_MSG(e_changed > 10 * tol, "%s: rewritten adapters changed the logits by only %.3e", name, e_changed);
    CHECK_MSG(!memcmp(swap_g.tok, swap_c.tok, sizeof cpu.tok), "%s: rewritten adapters: graph tokens differ from the CPU's", name);
    CHECK_MSG(e_sw < tol && e_swc < tol, "%s: rewritten adapters: graph vs single %.3e, vs CPU %.3e", name, e_sw, e_swc);

    // a second cache: its own graph, same answers
    CHECK_OK(run_gen(mc, kv2, prompt, np, cache2.tok, cache2.lg));
    CHECK_MSG(be->decode_captures == c0 + 2, "%s: a new cache did not record a new graph", name);
    double e_c2 = frel(cache2.lg, swap_c.lg, nl);
    CHECK_MSG(e_c2 < tol && !memcmp(cache2.tok, swap_c.tok, sizeof cpu.tok), "%s: second cache vs CPU %.3e", name, e_c2);
    printf("  %s: rewritten adapters moved the logits %.1e; graph vs single %.1e, vs CPU %.1e; second cache %.1e\n",
           name, e_changed, e_sw, e_swc, e_c2);

    lc_kv_cache_free(kv), lc_kv_cache_free(kh), lc_kv_cache_free(kv2);
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) free(all[i]->lg);
}

static void gen_prompt(const fixture *f, int32_t *prompt, int *np) {
    *np = 0;
    for (const cJSON *v = cJSON_GetObjectItem(f->j, "gen_prompt")->child; v; v = v->next) prompt[(*np)++] = (int32_t)v->valuedouble;
}

/* Fixture model `name` on the card (*fc) and on the CPU (*fh) with its greedy prompt; false
 * (a failed check) when either did not open. Close both either way. */
static bool open_pair_lora(const char *name, bool with_lora, fixture *fc, fixture *fh, int32_t *prompt, int *np) {
    fixture_device = "cuda";
    bool okc = open_fixture(fc, name, with_lora);
    fixture_device = "cpu";
    bool okh = open_fixture(fh, name, with_lora);
    fixture_device = TEST_DEVICE;
    CHECK_MSG(okc && okh, "%s: fixture", name);
    if (okc && okh) gen_prompt(fc, prompt, np);
    return okc && okh;
}

/* open_pair_lora with the fixture's adapters. */
static bool open_pair(const char *name, fixture *fc, fixture *fh, int32_t *prompt, int *np) {
    return open_pair_lora(name, true, fc, fh, prompt, np);
}

/* The fused step of a model without adapters on the card (mc; its products have no adapter
 * blocks, its small kernels nothing pending): the recorded graph against the same kernels
 * launched directly (bit for bit), the single ops and the CPU's model mh (when given), tol
 * apart, the same tokens everywhere; then lc_model_greedy (queued: the position advanced on
 * the card between its steps) gives the graph's tokens. */
static void check_plain(const char *name, lc_model *mc, lc_model *mh, const int32_t *prompt, int np, double tol) {
    lc_backend *be = mc->be;
    int64_t V = lc_model_cfg(mc)->vocab_size;
    size_t nl = (size_t)GEN * (size_t)V;
    gen_out single, direct, graph, cpu;
    gen_out *all[] = {&single, &direct, &graph, &cpu};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) all[i]->lg = malloc(nl * 4);
    lc_kv_cache *kv;
    CHECK_OK(lc_kv_cache_create(mc, 32, &kv));
    setenv("LORAC_CUDA_DECODE", "0", 1);
    CHECK_OK(run_gen(mc, kv, prompt, np, single.tok, single.lg));
    unsetenv("LORAC_CUDA_DECODE");
    setenv("LORAC_CUDA_GRAPH", "0", 1);
    CHECK_OK(run_gen(mc, kv, prompt, np, direct.tok, direct.lg));
    unsetenv("LORAC_CUDA_GRAPH");
    long long c0 = be->decode_captures, r0 = be->decode_replays;
    CHECK_OK(run_gen(mc, kv, prompt, np, graph.tok, graph.lg));
    CHECK_MSG(be->decode_captures == c0 + 1 && be->decode_replays == r0 + GEN - 1,
              "%s: %lld graphs recorded, %lld replays (want 1, %d)", name, be->decode_captures - c0,
              be->decode_replays - r0, GEN - 1);
    double e_gd = frel(graph.lg, direct.lg, nl), e_gs = frel(graph.lg, single.lg, nl), e_gc = -1;
    CHECK_MSG(e_gd == 0.0, "%s: graph vs direct %.3e (want 0)", name, e_gd);
    CHECK_MSG(e_gs < tol, "%s: vs single ops %.3e", name, e_gs);
    CHECK_MSG(!memcmp(graph.tok, single.tok, sizeof single.tok), "%s: tokens differ from the single ops'", name);
    if (mh) {
        lc_kv_cache *kh;
        CHECK_OK(lc_kv_cache_create(mh, 32, &kh));
        CHECK_OK(run_gen(mh, kh, prompt, np, cpu.tok, cpu.lg));
        e_gc = frel(graph.lg, cpu.lg, nl);
        CHECK_MSG(e_gc < tol && !memcmp(graph.tok, cpu.tok, sizeof cpu.tok), "%s: graph vs CPU %.3e", name, e_gc);
        lc_kv_cache_free(kh);
    }
    // queued greedy decoding: no position copy between its steps
    float *lg = malloc((size_t)V * 4);
    lc_kv_cache_reset(kv);
    CHECK_OK(lc_model_step(mc, kv, prompt, np, lg));
    greedy_rec r = {{0}, 0, -1};
    CHECK_OK(lc_model_greedy(mc, kv, graph.tok[0], GEN - 1, rec_token, &r));
    bool same = r.n == GEN - 1;
    for (int i = 0; i < GEN - 1 && same; i++) same = r.got[i] == graph.tok[i + 1];
    CHECK_MSG(same, "%s: lc_model_greedy's tokens differ from the step by step graph's", name);
    char cpu_e[32] = "not compared";
    if (mh) snprintf(cpu_e, sizeof cpu_e, "%.1e", e_gc);
    printf("  %s, no adapters: graph = direct, vs single ops %.1e, vs CPU %s; greedy %s\n", name, e_gs, cpu_e,
           same ? "same" : "differs");
    free(lg);
    lc_kv_cache_free(kv);
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) free(all[i]->lg);
}

/* compare_paths on each fixture model with its adapters, then check_plain on it without
 * (float32 products). */
static void test_decode_graph(void) {
    if (!fixtures_present()) SKIP("tests/fixtures/model-ref is absent");
    for (int i = 0; i < 3; i++)
        for (int lora = 1; lora >= 0; lora--) {
            fixture fc, fh;
            int32_t prompt[64];
            int np;
            if (open_pair_lora(NAMES[i], lora, &fc, &fh, prompt, &np)) {
                if (lora) compare_paths(NAMES[i], fc.m, fh.m, prompt, np, 1e-5 * TOL);
                else check_plain(NAMES[i], fc.m, fh.m, prompt, np, 1e-5 * TOL);
            }
            close_fixture(&fc), close_fixture(&fh);
        }
}

/* A bf16 copy of fixture model `name` in folder dir (config.json says bfloat16). */
static int write_bf16_model(const char *name, const char *dir) {
    char p[512];
    snprintf(p, sizeof p, MODELS "%s/model.safetensors", name);
    lc_safetensors st;
    if (lc_st_open(&st, p) < 0) return lc_st_close(&st), -1;
    lc_st_writer *w = lc_st_writer_new();
    int rc = 0;
    for (size_t i = 0; i < st.n_tensors && rc == 0; i++)
        rc = lc_st_writer_add(w, st.tensors[i].name, LC_DT_BF16, st.tensors[i].ndim, st.tensors[i].shape);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    if (rc == 0) rc = lc_st_writer_begin(w, p);
    for (size_t i = 0; i < st.n_tensors && rc == 0; i++) {
        const lc_tensor *t = &st.tensors[i];
        float *f = malloc(t->numel * 4);
        uint16_t *h = malloc(t->numel * 2);
        rc = lc_to_f32(f, t->data, t->dtype, t->numel);
        if (rc == 0) rc = lc_from_f32(h, LC_DT_BF16, f, t->numel);
        if (rc == 0) rc = lc_st_writer_write(w, t->name, h, t->numel * 2);
        free(f), free(h);
    }
    if (rc == 0) rc = lc_st_writer_commit(w);
    lc_st_writer_free(w);
    lc_st_close(&st);
    char *text = NULL, *out = NULL;
    size_t len = 0;
    snprintf(p, sizeof p, MODELS "%s/config.json", name);
    if (rc == 0) rc = lc_read_file(p, 1 << 20, &text, &len);
    if (rc == 0) rc = lc_config_text_set_dtype(text, len, LC_DT_BF16, p, &out);
    snprintf(p, sizeof p, "%s/config.json", dir);
    if (rc == 0) rc = lc_write_file_atomic(p, out, strlen(out));
    free(text), free(out);
    return rc;
}

static int load_bf16(const char *dir, const char *device, unsigned keys, int rank, lc_model **m) {
    if (lc_model_load_on(dir, device, m) < 0) return -1;
    lc_lora_config lc;
    lc_lora_config_default(&lc);
    lc.rank = rank, lc.num_layers = 2, lc.scale = 2.0f; // tiny-mistral has 3 blocks: one unadapted
    lc.keys = keys;
    if (lc_model_add_lora(*m, &lc, 11) < 0) return -1;
    rewrite_adapters(*m, 0); // B non-zero: the adapters matter
    return 0;
}

/* The same bf16 model (dir, write_bf16_model's) with the same adapters on the card (*mc)
 * and on the CPU (*mh, float32 products as the card's); NULL where a load failed. */
static void load_pair(const char *dir, unsigned keys, int rank, lc_model **mc, lc_model **mh) {
    *mc = *mh = NULL;
    CHECK_OK(load_bf16(dir, "cuda", keys, rank, mc));
    CHECK_OK(load_bf16(dir, "cpu", keys, rank, mh));
    if (*mh) lc_model_set_bf16_matmul(*mh, false);
}

/* Removes write_bf16_model's folder. */
static void remove_bf16_model(const char *dir) {
    char p[600];
    snprintf(p, sizeof p, "%s/model.safetensors", dir), unlink(p);
    snprintf(p, sizeof p, "%s/config.json", dir), unlink(p);
    rmdir(dir);
}

/* The products with each weight row split over 1, 2 and 4 warps (the tiny rows would
 * take 1) against the single ops. */
static void check_splits(lc_model *m, const int32_t *prompt, int np) {
    int64_t V = lc_model_cfg(m)->vocab_size;
    size_t nl = (size_t)GEN * (size_t)V;
    int32_t ts[GEN], tk[GEN];
    float *ls = malloc(nl * 4), *lk = malloc(nl * 4);
    lc_kv_cache *kv;
    CHECK_OK(lc_kv_cache_create(m, 32, &kv));
    setenv("LORAC_CUDA_DECODE", "0", 1);
    CHECK_OK(run_gen(m, kv, prompt, np, ts, ls));
    unsetenv("LORAC_CUDA_DECODE");
    setenv("LORAC_CUDA_GRAPH", "0", 1);
    const char *ks[] = {"1", "2", "4"};
    for (int i = 0; i < 3; i++) {
        setenv("LORAC_CUDA_DECODE_SPLIT", ks[i], 1);
        CHECK_OK(run_gen(m, kv, prompt, np, tk, lk));
        double e = frel(lk, ls, nl);
        CHECK_MSG(e < 1e-5 * TOL && !memcmp(tk, ts, sizeof ts), "split %s: rel err %.3e vs the single ops", ks[i], e);
        printf("  rows split over %s warps: tokens equal, rel err %.1e\n", ks[i], e);
    }
    unsetenv("LORAC_CUDA_DECODE_SPLIT");
    unsetenv("LORAC_CUDA_GRAPH");
    lc_kv_cache_free(kv);
    free(ls), free(lk);
}

/* The decoding attention split over several blocks a head (long caches take it by default;
 * LORAC_CUDA_DECODE_ASPLIT forces it here): on each fixture model, ns 3 and 5 (some blocks
 * with no keys at the first positions), graph and direct against the single ops and the
 * CPU; then 12 more steps from a 60-token prompt with ns 4 against the single ops. */
static void test_decode_attention_split(void) {
    if (!fixtures_present()) SKIP("tests/fixtures/model-ref is absent");
    const char *ns[] = {"3", "5"};
    for (int i = 0; i < 3; i++) {
        fixture fc, fh;
        int32_t prompt[64];
        int np;
        if (open_pair(NAMES[i], &fc, &fh, prompt, &np)) {
            for (int k = 0; k < 2; k++) {
                char name[96];
                snprintf(name, sizeof name, "%s, attention over %s blocks a head", NAMES[i], ns[k]);
                setenv("LORAC_CUDA_DECODE_ASPLIT", ns[k], 1);
                compare_paths(name, fc.m, fh.m, prompt, np, 1e-5 * TOL);
                unsetenv("LORAC_CUDA_DECODE_ASPLIT");
            }
            int64_t V = lc_model_cfg(fc.m)->vocab_size;
            int32_t longp[60];
            for (int t = 0; t < 60; t++) longp[t] = (int32_t)((t * 37 + 11) % V);
            size_t nl = (size_t)GEN * (size_t)V;
            gen_out a, b;
            a.lg = malloc(nl * 4), b.lg = malloc(nl * 4);
            lc_kv_cache *kv;
            CHECK_OK(lc_kv_cache_create(fc.m, 60 + GEN + 1, &kv));
            setenv("LORAC_CUDA_DECODE", "0", 1);
            CHECK_OK(run_gen(fc.m, kv, longp, 60, a.tok, a.lg));
            unsetenv("LORAC_CUDA_DECODE");
            setenv("LORAC_CUDA_DECODE_ASPLIT", "4", 1);
            CHECK_OK(run_gen(fc.m, kv, longp, 60, b.tok, b.lg));
            unsetenv("LORAC_CUDA_DECODE_ASPLIT");
            double e = frel(b.lg, a.lg, nl);
            CHECK_MSG(e < 1e-5 * TOL && !memcmp(a.tok, b.tok, sizeof a.tok),
                      "%s: 60-token prompt, attention over 4 blocks: rel err %.3e vs the single ops", NAMES[i], e);
            printf("  %s: 60-token prompt, attention over 4 blocks a head: tokens equal, rel err %.1e\n", NAMES[i], e);
            lc_kv_cache_free(kv);
            free(a.lg), free(b.lg);
        }
        close_fixture(&fc), close_fixture(&fh);
    }
}

static void test_decode_graph_bf16(void) {
    if (!fixtures_present()) SKIP("tests/fixtures/model-ref is absent");
    char dir[] = "/tmp/lorac-test-bf16-XXXXXX";
    if (!mkdtemp(dir)) SKIP("cannot make a temporary folder");
    CHECK_OK(write_bf16_model("tiny-mistral", dir));
    lc_model *mc, *mh;
    load_pair(dir, LC_KEYS_ALL, 8, &mc, &mh);
    if (mc && mh) {
        CHECK_MSG(mc->blocks[0].w[0].dtype == LC_DT_BF16, "the bf16 copy did not load as bf16");
        int32_t prompt[] = {3, 17, 99, 5, 250, 8, 41};
        // both multiply bf16 weights by float32 activations in float32: only sum order differs
        compare_paths("tiny-mistral bf16", mc, mh, prompt, 7, 1e-5 * TOL);
        check_splits(mc, prompt, 7);
    }
    lc_model_free(mc), lc_model_free(mh);
    // adapters on some projections only: up without gate (the gate/up launch's adapter
    // jobs shift), o and down without the rest
    load_pair(dir, LC_KEY_K | LC_KEY_O | LC_KEY_UP | LC_KEY_DOWN, 8, &mc, &mh);
    if (mc && mh) {
        int32_t prompt[] = {3, 17, 99, 5, 250, 8, 41};
        compare_paths("tiny-mistral bf16, k/o/up/down adapters", mc, mh, prompt, 7, 1e-5 * TOL);
    }
    lc_model_free(mc), lc_model_free(mh);
    // adapters on o only, on q and down only: blocks whose products run without adapter
    // blocks beside blocks with
    unsigned only[] = {LC_KEY_O, LC_KEY_Q | LC_KEY_DOWN};
    const char *only_name[] = {"tiny-mistral bf16, o adapters", "tiny-mistral bf16, q and down adapters"};
    for (int k = 0; k < 2; k++) {
        load_pair(dir, only[k], 8, &mc, &mh);
        if (mc && mh) {
            int32_t prompt[] = {3, 17, 99, 5, 250, 8, 41};
            compare_paths(only_name[k], mc, mh, prompt, 7, 1e-5 * TOL);
        }
        lc_model_free(mc), lc_model_free(mh);
    }
    // no adapters: rows over 1, 2 and 4 warps
    mc = mh = NULL;
    CHECK_OK(lc_model_load_on(dir, "cuda", &mc));
    CHECK_OK(lc_model_load_on(dir, "cpu", &mh));
    if (mc && mh) {
        lc_model_set_bf16_matmul(mh, false);
        int32_t prompt[] = {3, 17, 99, 5, 250, 8, 41};
        const char *ks[] = {NULL, "1", "2", "4"};
        for (int i = 0; i < 4; i++) {
            char name[64];
            snprintf(name, sizeof name, "tiny-mistral bf16, rows split %s", ks[i] ? ks[i] : "by default");
            if (ks[i]) setenv("LORAC_CUDA_DECODE_SPLIT", ks[i], 1);
            check_plain(name, mc, mh, prompt, 7, 1e-5 * TOL);
            unsetenv("LORAC_CUDA_DECODE_SPLIT");
        }
    }
    lc_model_free(mc), lc_model_free(mh);
    // rank 24: the small kernels' unrolled bound of 32 (ranks up to 16 take the bound 16)
    load_pair(dir, LC_KEYS_ALL, 24, &mc, &mh);
    if (mc && mh) {
        int32_t prompt[] = {3, 17, 99, 5, 250, 8, 41};
        compare_paths("tiny-mistral bf16, rank 24", mc, mh, prompt, 7, 1e-5 * TOL);
    }
    lc_model_free(mc), lc_model_free(mh);
    remove_bf16_model(dir);
}

/* lc_model_merge_lora (`generate --fuse`) on the card (->merge_lora, in place) against the
 * CPU's merge (checked bit for bit against `lorac fuse`'s folder by test_fuse): every merged
 * bf16 weight the same, or one ulp apart where the float32 deltas round differently (at most
 * 1%); generation after the merge the CPU's tokens, logits within float32 order; and the
 * merged model's logits within bf16 rounding of the unmerged one's. */
static void test_merge_lora(void) {
    if (!fixtures_present()) SKIP("tests/fixtures/model-ref is absent");
    char dir[] = "/tmp/lorac-test-merge-XXXXXX";
    if (!mkdtemp(dir)) SKIP("cannot make a temporary folder");
    CHECK_OK(write_bf16_model("tiny-mistral", dir));
    lc_model *mc, *mh;
    load_pair(dir, LC_KEYS_ALL, 8, &mc, &mh);
    if (mc && mh) {
        int32_t prompt[] = {3, 17, 99, 5, 250, 8, 41};
        int64_t V = lc_model_cfg(mc)->vocab_size;
        size_t nl = (size_t)GEN * (size_t)V;
        gen_out un, gc, gh;
        un.lg = malloc(nl * 4), gc.lg = malloc(nl * 4), gh.lg = malloc(nl * 4);
        lc_kv_cache *kv, *kh;
        CHECK_OK(lc_kv_cache_create(mc, 32, &kv));
        CHECK_OK(run_gen(mc, kv, prompt, 7, un.tok, un.lg)); // with the adapters as products
        lc_kv_cache_free(kv);
        CHECK_OK(lc_model_merge_lora(mc));
        CHECK_OK(lc_model_merge_lora(mh));
        size_t total = 0, off1 = 0, worse = 0;
        for (int l = 0; l < (int)mc->cfg.num_hidden_layers; l++)
            for (int k = 0; k < LC_NKEYS; k++) {
                const lc_wt *wc = &mc->blocks[l].w[k], *wh = &mh->blocks[l].w[k];
                size_t n = (size_t)(wc->rows * wc->cols);
                uint16_t *hc = malloc(n * 2);
                mc->be->download(mc->be, hc, wc->data, n * 2);
                CHECK_OK(lc_model_sync(mc));
                const uint16_t *hh = wh->data;
                for (size_t i = 0; i < n; i++) {
                    int d = (int)hc[i] - (int)hh[i];
                    off1 += d == 1 || d == -1, worse += d > 1 || d < -1;
                }
                total += n;
                free(hc);
            }
        printf("  merged bf16 weights, card vs CPU: %zu of %zu one ulp apart, %zu more\n", off1, total, worse);
        CHECK_MSG(worse == 0 && off1 * 100 <= total, "merge: %zu weights one ulp apart, %zu more, of %zu", off1, worse,
                  total);
        CHECK_OK(lc_kv_cache_create(mc, 32, &kv));
        CHECK_OK(lc_kv_cache_create(mh, 32, &kh));
        CHECK_OK(run_gen(mc, kv, prompt, 7, gc.tok, gc.lg));
        CHECK_OK(run_gen(mh, kh, prompt, 7, gh.tok, gh.lg));
        double e_ch = frel(gc.lg, gh.lg, nl), e_un = frel(gc.lg, un.lg, nl);
        printf("  generation merged: tokens %s the CPU's, logits rel err %.1e; merged vs the adapters as products "
               "%.1e\n", memcmp(gc.tok, gh.tok, sizeof gc.tok) ? "NOT" : "equal to", e_ch, e_un);
        CHECK_MSG(!memcmp(gc.tok, gh.tok, sizeof gc.tok) && e_ch < 1e-3, "merged: card vs CPU rel err %.3e", e_ch);
        CHECK_MSG(e_un < 2e-2 && e_un > 0, "merged vs unmerged: rel err %.3e (want (0, 2e-2))", e_un);
        lc_kv_cache_free(kv), lc_kv_cache_free(kh);
        free(un.lg), free(gc.lg), free(gh.lg);
    }
    lc_model_free(mc), lc_model_free(mh);
    remove_bf16_model(dir);
}

/* Writes dir/config.json (a Mistral of hidden 128, 4/2 heads of hd (32 unless set), vocab
 * 256, the given intermediate size and depth) and makes dir/m from it with `lorac init`
 * (bf16, seed). */
static void init_model_c(const char *dir, int hidden, int inter, int layers, int hd, const char *seed, char *out,
                         size_t outn) {
    char cfg[300], text[700];
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    snprintf(out, outn, "%s/m", dir);
    snprintf(text, sizeof text,
             "{\"architectures\": [\"MistralForCausalLM\"], \"model_type\": \"mistral\", \"vocab_size\": 256,"
             " \"hidden_size\": %d, \"intermediate_size\": %d, \"num_hidden_layers\": %d,"
             " \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"head_dim\": %d,"
             " \"max_position_embeddings\": 128, \"rope_theta\": 10000.0, \"rms_norm_eps\": 1e-05,"
             " \"tie_word_embeddings\": false, \"bos_token_id\": 1, \"eos_token_id\": 2}", hidden, inter, layers,
             hd);
    CHECK_OK(lc_write_file_atomic(cfg, text, strlen(text)));
    char *argv[] = {"init", "--config", cfg, "--tokenizer", "tests/fixtures/tokenizers/bl-gpt2/tokenizer.json",
                    "--out", out, "--dtype", "bf16", "--seed", (char *)seed, "-q", NULL};
    fflush(stdout);
    CHECK_EQ_INT(cmd_init(12, argv), 0);
}

static void init_model_hd(const char *dir, int inter, int layers, int hd, const char *seed, char *out, size_t outn) {
    init_model_c(dir, 128, inter, layers, hd, seed, out, outn);
}

static void init_model(const char *dir, int inter, int layers, const char *seed, char *out, size_t outn) {
    init_model_hd(dir, inter, layers, 32, seed, out, outn);
}

/* The fused step over an NF4 base: a `lorac init` model (bf16, rows of 128 and 384: whole
 * NF4 blocks of 64 in every row) quantized at load with nested absmax (bitsandbytes'
 * default), adapters on every projection of both blocks. Its products read the codes and
 * round each dequantized value to bf16, as the single ops' k_qgemv does, so the fused
 * step (direct and replayed) is checked against the single ops on the card: the same
 * tokens, logits within float32 summation order, the replay bit for bit; a cache reset
 * replays, rewritten adapters are read at replay. (The single ops over NF4 are checked
 * against the CPU by test_cuda_ops and tests/cmd/test_quantize.sh.) */
static void test_decode_graph_nf4(void) {
    char dir[] = "/tmp/lorac-test-nf4-XXXXXX";
    if (!mkdtemp(dir)) SKIP("cannot make a temporary folder");
    char out[300];
    init_model(dir, 384, 2, "7", out, sizeof out);
    lc_load_options lo;
    memset(&lo, 0, sizeof lo);
    lo.device = "cuda";
    CHECK_OK(lc_quant_parse("nf4", &lo.quantize, "test"));
    lc_model *m = NULL;
    CHECK_OK(lc_model_load_opts(out, &lo, &m));
    if (m) {
        CHECK_MSG(m->blocks[0].w[0].q != NULL, "the model did not load quantized");
        lc_lora_config lc;
        lc_lora_config_default(&lc);
        lc.rank = 8, lc.num_layers = 2, lc.scale = 2.0f, lc.keys = LC_KEYS_ALL;
        CHECK_OK(lc_model_add_lora(m, &lc, 11));
        rewrite_adapters(m, 0);
        lc_backend *be = m->be;
        int64_t V = lc_model_cfg(m)->vocab_size;
        size_t nl = (size_t)GEN * (size_t)V;
        int32_t prompt[] = {3, 17, 99, 5, 250, 8, 41};
        gen_out single, direct, graph, again, swap_g, swap_s;
        gen_out *all[] = {&single, &direct, &graph, &again, &swap_g, &swap_s};
        for (size_t i = 0; i < sizeof all / sizeof *all; i++) all[i]->lg = malloc(nl * 4);
        lc_kv_cache *kv;
        CHECK_OK(lc_kv_cache_create(m, 32, &kv));
        long long c0 = be->decode_captures, r0 = be->decode_replays;
        setenv("LORAC_CUDA_DECODE", "0", 1);
        CHECK_OK(run_gen(m, kv, prompt, 7, single.tok, single.lg));
        unsetenv("LORAC_CUDA_DECODE");
        setenv("LORAC_CUDA_GRAPH", "0", 1);
        CHECK_OK(run_gen(m, kv, prompt, 7, direct.tok, direct.lg));
        unsetenv("LORAC_CUDA_GRAPH");
        CHECK_OK(run_gen(m, kv, prompt, 7, graph.tok, graph.lg));
        CHECK_MSG(be->decode_captures == c0 + 1 && be->decode_replays == r0 + GEN - 1,
                  "nf4: %lld graphs recorded, %lld replays (want 1, %d): the fused step did not take the codes",
                  be->decode_captures - c0, be->decode_replays - r0, GEN - 1);
        CHECK_OK(run_gen(m, kv, prompt, 7, again.tok, again.lg));
        double e_ds = frel(direct.lg, single.lg, nl), e_gd = frel(graph.lg, direct.lg, nl);
        double e_ag = frel(again.lg, graph.lg, nl);
        CHECK_MSG(!memcmp(direct.tok, single.tok, sizeof single.tok), "nf4: fused tokens differ from the single ops'");
        CHECK_MSG(!memcmp(graph.tok, single.tok, sizeof single.tok), "nf4: graph tokens differ from the single ops'");
        CHECK_MSG(e_ds < 1e-5 * TOL, "nf4: fused vs single ops rel err %.3e", e_ds);
        CHECK_MSG(e_gd == 0.0 && e_ag == 0.0, "nf4: graph vs direct %.3e, replay after reset %.3e (want 0)", e_gd, e_ag);
        // against the CPU's NF4 model (float32 dequantization; the card rounds each
        // dequantized weight to bf16, so 1e-2): the logits of every step up to and
        // including the first whose greedy token differs (a near tie may flip it)
        lc_load_options lh = lo;
        lh.device = "cpu";
        lc_model *mh = NULL;
        CHECK_OK(lc_model_load_opts(out, &lh, &mh));
        if (mh) {
            CHECK_OK(lc_model_add_lora(mh, &lc, 11));
            rewrite_adapters(mh, 0);
            gen_out cpu;
            cpu.lg = malloc(nl * 4);
            lc_kv_cache *kh;
            CHECK_OK(lc_kv_cache_create(mh, 32, &kh));
            CHECK_OK(run_gen(mh, kh, prompt, 7, cpu.tok, cpu.lg));
            int k = 1;
            while (k < GEN && cpu.tok[k - 1] == graph.tok[k - 1]) k++;
            double e_gc = frel(graph.lg, cpu.lg, (size_t)k * (size_t)V);
            printf("  nf4: graph vs CPU rel err %.1e over %d of %d steps\n", e_gc, k, GEN);
            CHECK_MSG(e_gc < 1e-2, "nf4: graph vs CPU rel err %.3e over %d steps", e_gc, k);
            lc_kv_cache_free(kh);
            free(cpu.lg);
        }
        lc_model_free(mh);
        rewrite_adapters(m, 1);
        CHECK_OK(run_gen(m, kv, prompt, 7, swap_g.tok, swap_g.lg));
        CHECK_MSG(be->decode_captures == c0 + 1, "nf4: rewriting adapter values recorded a new graph");
        setenv("LORAC_CUDA_DECODE", "0", 1);
        CHECK_OK(run_gen(m, kv, prompt, 7, swap_s.tok, swap_s.lg));
        unsetenv("LORAC_CUDA_DECODE");
        double e_changed = frel(swap_g.lg, graph.lg, nl), e_sw = frel(swap_g.lg, swap_s.lg, nl);
        CHECK_MSG(e_changed > 1e-3, "nf4: rewritten adapters changed the logits by only %.3e", e_changed);
        CHECK_MSG(e_sw < 1e-5 * TOL && !memcmp(swap_g.tok, swap_s.tok, sizeof single.tok),
                  "nf4: rewritten adapters: graph vs single %.3e", e_sw);
        printf("  nf4 (nested absmax, 128 x 384): %d tokens equal on every path; fused-single %.1e, graph-direct "
               "%.1e; rewritten adapters moved the logits %.1e, graph vs single %.1e\n",
               GEN, e_ds, e_gd, e_changed, e_sw);
        lc_kv_cache_free(kv);
        for (size_t i = 0; i < sizeof all / sizeof *all; i++) free(all[i]->lg);
    }
    lc_model_free(m);
    // no adapters (against the single ops; the CPU's float32 dequantization is 1e-2 away,
    // above)
    m = NULL;
    CHECK_OK(lc_model_load_opts(out, &lo, &m));
    if (m) {
        int32_t prompt[] = {3, 17, 99, 5, 250, 8, 41};
        check_plain("nf4", m, NULL, prompt, 7, 1e-5 * TOL);
    }
    lc_model_free(m);
    char cmdline[400];
    snprintf(cmdline, sizeof cmdline, "rm -rf '%s'", dir);
    CHECK_EQ_INT(system(cmdline), 0);
}

/* ---- the recorded training step (->replay, src/backend/cuda/graph.cu) ---- */

#define GSTEPS 14

/* What one run of the step sequence produced: every step's loss, gradients, eval sum. */
typedef struct {
    double loss[GSTEPS], eval[GSTEPS];
    float *grads; // (GSTEPS, n)
    float *final; // (n) the adapters after the last update
    long long captures, replays;
    int32_t gen_tok[GEN]; // the greedy generation after step 8 (when step_gen)
    float *gen_lg;        // (GEN, V) its logits, or NULL
    size_t n_lg;          // GEN · V
} step_run_out;

/* Set by the quantized-base cases: how graph_case loads the model (NULL: as the fixture
 * does), and whether run_steps generates after step 8 (a decode through the
 * dequantization buffers between two replays). */
static const lc_load_options *step_load;
static bool step_gen;

/* The columns [0, T1) of each row of a (B, T) id matrix. */
static int32_t *cut_ids(const int32_t *ids, int64_t B, int64_t T, int64_t T1) {
    int32_t *o = malloc((size_t)(B * T1) * 4);
    for (int64_t b = 0; b < B; b++) memcpy(o + b * T1, ids + b * T, (size_t)T1 * 4);
    return o;
}

/* GSTEPS training steps of m (fresh adapters from its loader), each followed by one
 * AdamW update on the device: the fixture's T four times, then T - 3 three times, T once,
 * gradient checkpointing on for three, off again for two, and T - 3 once; an eval loss
 * after step 6. Records everything into o (n floats of adapters). */
static void run_steps(lc_model *m, const int32_t *tok, const int32_t *tgt, int64_t B, int64_t T, size_t n,
                      step_run_out *o) {
    lc_backend *be = m->be;
    size_t np;
    lc_lora_param *ps = lc_model_lora(m, &np);
    float *mom = lc_model_shared_alloc(m, 2 * n);
    int64_t T1 = T - 3;
    int32_t *tok1 = cut_ids(tok, B, T, T1), *tgt1 = cut_ids(tgt, B, T, T1);
    static const int shape[GSTEPS] = {0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1}; // 1: T - 3
    static const int ckpt[GSTEPS] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0};
    lc_adam_config ac = lc_adam_defaults(LC_OPTIM_ADAMW);
    long long c0 = be->step_captures, r0 = be->step_replays;
    for (int s = 0; s < GSTEPS; s++) {
        lc_model_set_grad_checkpoint(m, ckpt[s] != 0);
        lc_batch b = {B, shape[s] ? T1 : T, shape[s] ? tok1 : tok, shape[s] ? tgt1 : tgt, (uint64_t)s};
        int64_t nt;
        CHECK_OK(lc_model_forward_backward(m, &b, &o->loss[s], &nt));
        memcpy(o->grads + (size_t)s * n, ps[0].ga, n * 4); // gradients are one contiguous run
        o->eval[s] = 0;
        if (s == 5) {
            lc_batch e = {B, T, tok, tgt, 0};
            CHECK_OK(lc_model_loss(m, &e, &o->eval[s], &nt));
        }
        if (s == 7 && o->gen_lg) { // step 8 replayed T's recording; 9 runs directly, 12-14 replay
            lc_kv_cache *kv = NULL;
            int32_t prompt[] = {3, 17, 99, 5, 250, 8, 41};
            CHECK_OK(lc_kv_cache_create(m, 32, &kv));
            if (kv) CHECK_OK(run_gen(m, kv, prompt, 7, o->gen_tok, o->gen_lg));
            lc_kv_cache_free(kv);
        }
        lc_adam_args aa = lc_adam_args_make(&ac, 1e-2, s + 1);
        lc_model_adam(m, &aa, ps[0].a, ps[0].ga, mom, mom + n, n);
        CHECK_OK(lc_model_sync(m));
    }
    memcpy(o->final, ps[0].a, n * 4);
    o->captures = be->step_captures - c0, o->replays = be->step_replays - r0;
    lc_model_shared_free(m, mom);
    free(tok1), free(tgt1);
}

/* Loads model `name` with the fixture's adapters on the card (dir: a model folder in
 * place of the fixture's own, e.g. a bf16 copy) and runs the step sequence under the
 * current switches. */
static bool graph_case(const char *name, const char *dir, float dropout, step_run_out *o, size_t *n) {
    fixture f;
    bool ok = open_fixture(&f, name, false);
    if (ok && dir) {
        lc_model_free(f.m);
        ok = lc_model_load_on(dir, "cuda", &f.m) == 0;
    }
    if (ok && step_load) {
        char p[256];
        snprintf(p, sizeof p, MODELS "%s", name);
        lc_model_free(f.m);
        ok = lc_model_load_opts(dir ? dir : p, step_load, &f.m) == 0;
    }
    if (ok) {
        lc_lora_config lc;
        lc_lora_config_default(&lc);
        lc.rank = (int)jint(f.j, "rank"), lc.scale = (float)jnum(f.j, "scale");
        lc.num_layers = (int)jint(f.j, "num_layers"), lc.dropout = dropout;
        ok = lc_model_add_lora(f.m, &lc, 7) == 0;
    }
    if (ok) {
        size_t np;
        lc_lora_param *ps = lc_model_lora(f.m, &np);
        *n = 0;
        for (size_t i = 0; i < np; i++) *n += (size_t)((ps[i].in + ps[i].out) * ps[i].r);
        for (size_t i = 0; i < np; i++) // B non-zero, so every gradient is
            for (int64_t j = 0; j < ps[i].r * ps[i].out; j++) ps[i].b[j] = 0.02f * sinf(0.7f * (float)j + (float)i);
        o->grads = malloc((size_t)GSTEPS * *n * 4), o->final = malloc(*n * 4);
        o->n_lg = (size_t)GEN * (size_t)lc_model_cfg(f.m)->vocab_size;
        o->gen_lg = step_gen ? malloc(o->n_lg * 4) : NULL;
        run_steps(f.m, f.tok, f.tgtm, f.B, f.T, *n, o);
    } else printf("  %s: %s\n", name, lc_errmsg());
    close_fixture(&f);
    return ok;
}

/* The same step sequence with the graph off and on (same binary): losses, eval sums,
 * every step's gradients and the final adapters the same bits. */
static void compare_graph(const char *name, const char *fix, const char *dir) {
    step_run_out off, on;
    size_t n = 0, n2 = 0;
    setenv("LORAC_CUDA_STEP_GRAPH", "0", 1);
    bool a = graph_case(fix, dir, 0.0f, &off, &n);
    unsetenv("LORAC_CUDA_STEP_GRAPH");
    bool b = a && graph_case(fix, dir, 0.0f, &on, &n2);
    CHECK_MSG(a && b && n == n2, "%s: the step sequence did not run", name);
    if (!a || !b || n != n2) return;
    CHECK_MSG(off.captures == 0 && off.replays == 0, "%s: LORAC_CUDA_STEP_GRAPH=0 recorded %lld graphs", name, off.captures);
    // keys: T (steps 1-4), T-3 (5-7; step 14 replays it), T checkpointed (9-11); steps 8, 12, 13 replay T's
    CHECK_MSG(on.captures >= 3 && on.replays >= 6, "%s: %lld recordings, %lld replays (want >= 3, >= 6)", name,
              on.captures, on.replays);
    int bad = -1;
    for (int s = 0; s < GSTEPS && bad < 0; s++)
        if (on.loss[s] != off.loss[s] || on.eval[s] != off.eval[s] ||
            memcmp(on.grads + (size_t)s * n, off.grads + (size_t)s * n, n * 4))
            bad = s;
    CHECK_MSG(bad < 0, "%s: step %d differs with the graph (loss %.9g vs %.9g)", name, bad + 1,
              bad >= 0 ? on.loss[bad] : 0.0, bad >= 0 ? off.loss[bad] : 0.0);
    CHECK_MSG(!memcmp(on.final, off.final, n * 4), "%s: adapters after %d steps differ with the graph", name, GSTEPS);
    if (on.gen_lg && off.gen_lg)
        CHECK_MSG(!memcmp(on.gen_tok, off.gen_tok, sizeof on.gen_tok) && !memcmp(on.gen_lg, off.gen_lg, on.n_lg * 4),
                  "%s: the generation between replays differs with the graph", name);
    CHECK_MSG(off.loss[GSTEPS - 1] != off.loss[4], "%s: the updates did not move the loss", name);
    printf("  %s: %d steps (T, T-3, checkpointing, back) bit-identical with the graph: %lld recordings, %lld replays; "
           "loss %.6f -> %.6f\n", name, GSTEPS, on.captures, on.replays, on.loss[0], on.loss[GSTEPS - 1]);
    free(off.grads), free(off.final), free(on.grads), free(on.final), free(off.gen_lg), free(on.gen_lg);
}

static void test_step_graph(void) {
    if (!fixtures_present()) SKIP("tests/fixtures/model-ref is absent");
    for (int i = 0; i < 3; i++) compare_graph(NAMES[i], NAMES[i], NULL);
    // bf16 weights: the cuBLASLt products and bf16 operands. Each model's backend tunes
    // its own algorithms by timing, and two tunings may pick kernels that round
    // differently: the heuristic's first pick (LORAC_CUDA_TUNE=0) makes both runs use
    // the same ones, so any difference left would be the graph's
    char dir[] = "/tmp/lorac-test-bf16g-XXXXXX";
    if (!mkdtemp(dir)) SKIP("cannot make a temporary folder");
    CHECK_OK(write_bf16_model("tiny-mistral", dir));
    setenv("LORAC_CUDA_TUNE", "0", 1);
    compare_graph("tiny-mistral bf16", "tiny-mistral", dir);
    unsetenv("LORAC_CUDA_TUNE");
    remove_bf16_model(dir);
}

/* The recorded step over a quantized base (NF4 with nested absmax; MLX affine 4-bit in
 * groups of 32 with the embedding table and lm_head quantized too), with quant.cu's
 * ahead-of-time dequantization on and off (LORAC_CUDA_DQ_PREFETCH=0) and with rings of
 * 2, 3 and 4 buffers (LORAC_CUDA_DQ_DEPTH): the step sequence
 * plus a greedy generation after step 8 (direct products through the dequantization
 * buffers between two replays), the same bits with and without the graph. The products
 * are bf16 (the dequantized copies) through cuBLASLt, so the heuristic's first algorithm
 * (LORAC_CUDA_TUNE=0) for both models, as for the bf16 copy. */
static void test_step_graph_quant(void) {
    if (!fixtures_present()) SKIP("tests/fixtures/model-ref is absent");
    lc_load_options lo;
    memset(&lo, 0, sizeof lo);
    lo.device = "cuda";
    setenv("LORAC_CUDA_TUNE", "0", 1);
    step_gen = true;
    // k: 0 nf4 prefetch on, 1 nf4 (tiny-llama) prefetch off, 2 q4 on, 3 q4 off; 4, 5: nf4
    // with a ring of 3 and 4 buffers (LORAC_CUDA_DQ_DEPTH); 6: q4 with 4
    for (int k = 0; k < 7; k++) {
        bool affine = k == 2 || k == 3 || k == 6, pf = k != 1 && k != 3;
        const char *depth = k == 4 ? "3" : k >= 5 ? "4" : "2";
        CHECK_OK(lc_quant_parse(affine ? "q4" : "nf4", &lo.quantize, "test"));
        if (affine) lo.quantize.group_size = 32; // the fixtures' rows are 32 and 96 wide
        lo.quantize_embeddings = affine;
        step_load = &lo;
        if (!pf) setenv("LORAC_CUDA_DQ_PREFETCH", "0", 1);
        setenv("LORAC_CUDA_DQ_DEPTH", depth, 1);
        const char *fix = k == 1 ? "tiny-llama" : "tiny-mistral";
        char name[112];
        snprintf(name, sizeof name, "%s %s%s, prefetch %s, depth %s", fix, affine ? "q4/g32" : "nf4",
                 affine ? " (embeddings too)" : "", pf ? "on" : "off", depth);
        compare_graph(name, fix, NULL);
        unsetenv("LORAC_CUDA_DQ_PREFETCH");
        unsetenv("LORAC_CUDA_DQ_DEPTH");
    }
    step_load = NULL, step_gen = false;
    unsetenv("LORAC_CUDA_TUNE");
}

/* The switches and the cases that run directly: LORAC_CUDA_GRAPH=0 turns the step's
 * graph off too; dropout > 0 never records (its mask's seed changes every step), and
 * gives the same bits as with the graph switched off. */
static void test_step_graph_off(void) {
    if (!fixtures_present()) SKIP("tests/fixtures/model-ref is absent");
    step_run_out g0, d_on, d_off;
    size_t n;
    setenv("LORAC_CUDA_GRAPH", "0", 1);
    if (graph_case("tiny-llama", NULL, 0.0f, &g0, &n)) {
        CHECK_MSG(g0.captures == 0 && g0.replays == 0, "LORAC_CUDA_GRAPH=0 recorded %lld step graphs", g0.captures);
        free(g0.grads), free(g0.final);
    }
    unsetenv("LORAC_CUDA_GRAPH");
    if (graph_case("tiny-llama", NULL, 0.1f, &d_on, &n)) {
        CHECK_MSG(d_on.captures == 0 && d_on.replays == 0, "dropout: %lld step graphs recorded", d_on.captures);
        setenv("LORAC_CUDA_STEP_GRAPH", "0", 1);
        if (graph_case("tiny-llama", NULL, 0.1f, &d_off, &n)) {
            CHECK_MSG(!memcmp(d_on.grads, d_off.grads, (size_t)GSTEPS * n * 4) &&
                          !memcmp(d_on.final, d_off.final, n * 4),
                      "dropout: results differ between runs");
            free(d_off.grads), free(d_off.final);
        }
        unsetenv("LORAC_CUDA_STEP_GRAPH");
        free(d_on.grads), free(d_on.final);
    }
    printf("  LORAC_CUDA_GRAPH=0 and dropout 0.1 run every step directly\n");
}

/* One training step of m on (tok, tgt): its loss, and its gradients (one contiguous run
 * of n floats) into g. */
static double step_grads(lc_model *m, const int32_t *tok, const int32_t *tgt, int64_t B, int64_t T, float *g,
                         size_t *n) {
    size_t np;
    lc_lora_param *ps = lc_model_lora(m, &np);
    *n = 0;
    for (size_t i = 0; i < np; i++) *n += (size_t)((ps[i].in + ps[i].out) * ps[i].r);
    lc_batch b = {B, T, tok, tgt, 0};
    double loss = 0;
    int64_t nt;
    CHECK_OK(lc_model_forward_backward(m, &b, &loss, &nt));
    if (g) memcpy(g, ps[0].ga, *n * 4);
    return loss;
}

/* The gradients of m's step on (tok, tgt) under every recompute setting of rs (n of them;
 * direct, recorded, replayed) against the all-kept step's loss l0 and gradients g0 (bits);
 * each setting's lc_model_activation_bytes against its arena. */
static void check_recompute_bits(lc_model *m, const int (*rs)[2], int nrs, const int32_t *tok, const int32_t *tgt,
                                 int64_t B, int64_t T, double l0, const float *g0, size_t n) {
    float *gr = malloc(n * 4);
    for (int k = 0; k < nrs; k++) {
        lc_model_set_recompute(m, rs[k][0], rs[k][1]);
        for (int rep = 0; rep < 3; rep++) {
            size_t n3 = 0;
            double lr = step_grads(m, tok, tgt, B, T, gr, &n3);
            CHECK_MSG(n3 == n && lr == l0 && !memcmp(gr, g0, n * 4),
                      "recompute (%d, %d) step %d: loss %.9g vs %.9g, gradients %s the all-kept ones", rs[k][0],
                      rs[k][1], rep, lr, l0, memcmp(gr, g0, n * 4) ? "differ from" : "equal");
        }
        CHECK_EQ_INT(lc_model_activation_bytes(m, B, T, rs[k][0], rs[k][1]), m->ar[LC_MODE_TRAIN].floats * sizeof(float));
        CHECK_MSG(m->ar[LC_MODE_TRAIN].gus != NULL, "recompute (%d, %d): no shared bf16 pair", rs[k][0], rs[k][1]);
    }
    lc_model_set_recompute(m, 0, 0);
    free(gr);
}

/* Training over bf16 weights keeps each saved block's gate and up as bf16
 * (->swiglu_pack): the same loss bits (the forward is unchanged), gradients within bf16
 * rounding of the float32-kept ones (LORAC_PACK_GATE_UP=0), less activation memory, and
 * lc_model_activation_bytes equal to what the arena lays out. The float32 fixtures keep
 * float32 (their products are float32), and so does a model with two adapted blocks
 * (nothing to save). Run with gate's and up's products in float32 (LORAC_GU16=0): the
 * switches below turn off paths the bf16 products need, which would move the loss;
 * test_gu16 checks those products against this path. */
static void test_packed_gate_up(void) {
    if (!fixtures_present()) SKIP("tests/fixtures/model-ref is absent");
    char dir[] = "/tmp/lorac-test-bf16p-XXXXXX";
    if (!mkdtemp(dir)) SKIP("cannot make a temporary folder");
    fixture f;
    lc_model *m = NULL, *m2 = NULL;
    bool ok = open_fixture(&f, "tiny-mistral", false);
    CHECK(ok);
    CHECK_OK(write_bf16_model("tiny-mistral", dir));
    CHECK_OK(load_bf16(dir, "cuda", LC_KEYS_ALL, 8, &m2)); // 2 of its 3 blocks adapted
    if (m2) CHECK_MSG(!lc_model_packs_gate_up(m2), "two adapted blocks pack gate/up");
    lc_model_free(m2);
    CHECK_OK(lc_model_load_on(dir, "cuda", &m));
    if (m) {
        lc_lora_config lc;
        lc_lora_config_default(&lc);
        lc.rank = 8, lc.num_layers = -1, lc.scale = 2.0f; // all 3 blocks
        CHECK_OK(lc_model_add_lora(m, &lc, 11));
        rewrite_adapters(m, 0);
    }
    setenv("LORAC_GU16", "0", 1);
    if (ok && m) {
        CHECK_MSG(!lc_model_packs_gate_up(f.m), "the float32 fixture packs gate/up");
        CHECK_MSG(lc_model_packs_gate_up(m), "the bf16 copy does not pack gate/up");
        size_t n = 0, n2 = 0;
        step_grads(m, f.tok, f.tgtm, f.B, f.T, NULL, &n);
        float *gp = malloc(n * 4), *gf = malloc(n * 4);
        double lp = step_grads(m, f.tok, f.tgtm, f.B, f.T, gp, &n);
        size_t bp = lc_model_activation_bytes(m, f.B, f.T, 0, 0);
        CHECK_EQ_INT(bp, m->ar[LC_MODE_TRAIN].floats * sizeof(float));
        CHECK_MSG(m->ar[LC_MODE_TRAIN].pack, "the arena did not pack");
        // dgate's and dup's bf16 copies left over gu for their input-gradient products
        // (->swiglu_bwd_packed_b, ->matmul_dx_b) and h's written by SwiGLU for down's
        // (->matmul_n_b), or each rounded by those products: the same bits; the gate/up
        // adapters' gb and du from the bf16 dgate/dup (->gemm_b, the default): the same
        // loss (the forward), gradients within bf16 rounding
        {
            CHECK_MSG(lc_model_packs_dy(m) && lc_model_dy16_adapters(m), "the card does not keep dgate/dup as bf16");
            CHECK_MSG(lc_model_packs_h(m, &m->blocks[0].w[LC_KEY_DOWN]), "the card does not write h as bf16");
            const char *sw[] = {"LORAC_PACKED_DY", "LORAC_PACKED_DY_ADAPTERS", "LORAC_PACKED_H"};
            float *gd[3];
            double ld[3];
            for (int i = 0; i < 3; i++) {
                size_t nd = 0;
                gd[i] = malloc(n * 4);
                setenv(sw[i], "0", 1);
                ld[i] = step_grads(m, f.tok, f.tgtm, f.B, f.T, gd[i], &nd);
                unsetenv(sw[i]);
                CHECK_MSG(nd == n && ld[i] == lp, "%s=0: loss %.9g vs %.9g", sw[i], ld[i], lp);
            }
            CHECK_MSG(lc_model_dy16_adapters(m) && lc_model_packs_h(m, &m->blocks[0].w[LC_KEY_DOWN]),
                      "the switches did not come back on");
            CHECK_MSG(!memcmp(gd[1], gd[0], n * 4), "bf16 dgate/dup for the frozen products only: gradients differ "
                                                      "from float32 dgate/dup's bits");
            CHECK_MSG(!memcmp(gd[2], gp, n * 4), "LORAC_PACKED_H=0: gradients differ from the bf16 h's bits");
            double num = 0, den = 0;
            for (size_t i = 0; i < n; i++) {
                double d = (double)gp[i] - gd[0][i];
                num += d * d, den += (double)gd[0][i] * gd[0][i];
            }
            double e16 = den > 0 ? sqrt(num / den) : INFINITY;
            printf("  tiny-mistral bf16: dgate/dup and h as bf16 for the frozen products: the same loss and gradient "
                   "bits; gate/up adapters' gradients from bf16 dgate/dup: rel err %.2e (bound 1e-2)\n", e16);
            CHECK_MSG(e16 > 0 && e16 <= 1e-2, "gate/up adapters from bf16 dy: rel err %.3e (want (0, 1e-2])", e16);
            // as at many rows (->lora_group_rows 0: grouped adapters, outputs first, and h
            // kept only as bf16: down's u from it, the backward writing h again, the top
            // block too): the loss within 1e-3 (down's u from bf16 h and a, as bf16 autocast
            // forms it), gradients within 1e-2 of float32's
            // (and the normed inputs only as bf16: their products from the copy, the backward
            // norming again; LORAC_PACKED_XN=0 keeps them float32)
            int64_t gr = m->be->lora_group_rows;
            m->be->lora_group_rows = 0;
            float *gm = malloc(n * 4), *gprev = malloc(n * 4), *g2 = malloc(n * 4);
            double lprev = 0;
            // (and then the residual's gradient and dq/dk/dv as bf16 for o's, down's and
            // q/k/v's gb, du and frozen dx: LORAC_PACKED_DRES=0 keeps them float32; the last
            // pass with down's ga from float32 h, LORAC_PACKED_H_GA=0, where the others take
            // the bf16 h the backward writes again; then the third's with q/k/v's frozen input
            // gradients as three products, LORAC_QKV_DX=0, where the others take one over the
            // three weights side by side)
            static const char *what[] = {"h only as bf16", "h and xn only as bf16",
                                         "h, xn, dres and dq/dk/dv only as bf16", "the same, down's ga from float32 h",
                                         "the third, q/k/v's dx as three products"};
            static const double bounds[] = {1e-2, 2e-2, 2e-2, 2e-2, 2e-2};
            CHECK_MSG(m->blocks[0].qkv.data != NULL, "q, k, v were not laid out side by side (->weight_n)");
            for (int xn = 0; xn < 5; xn++) {
                size_t nm = 0;
                if (!xn) setenv("LORAC_PACKED_XN", "0", 1);
                if (xn < 2) setenv("LORAC_PACKED_DRES", "0", 1);
                if (xn == 3) setenv("LORAC_PACKED_H_GA", "0", 1);
                if (xn == 4) setenv("LORAC_QKV_DX", "0", 1);
                CHECK_MSG(lc_model_h16_ga(m) == (xn != 3), "LORAC_PACKED_H_GA not read");
                double lm = step_grads(m, f.tok, f.tgtm, f.B, f.T, gm, &nm);
                unsetenv("LORAC_PACKED_XN");
                unsetenv("LORAC_PACKED_DRES");
                unsetenv("LORAC_PACKED_H_GA");
                unsetenv("LORAC_QKV_DX");
                num = 0, den = 0;
                for (size_t i = 0; i < n && nm == n; i++) {
                    double d = (double)gm[i] - gd[0][i];
                    num += d * d, den += (double)gd[0][i] * gd[0][i];
                }
                double em = den > 0 && nm == n ? sqrt(num / den) : INFINITY;
                printf("  tiny-mistral bf16 as at many rows (%s): loss %.9f (%.1e from float32 h's), "
                       "gradients rel err %.2e from float32 dy's (bound %.0e)\n", what[xn], lm, fabs(lm - lp) / lp, em,
                       bounds[xn]);
                // each of dgate/dup, h, xn and the other dy rounded to bf16 before the adapters'
                // products (as bf16 autocast multiplies them) moves the gradients by ~4e-3 more
                CHECK_MSG(fabs(lm - lp) <= 1e-3 * lp && em <= bounds[xn], "many rows (%s): loss %.9g vs %.9g, "
                          "gradients rel err %.3e (bound %.0e)", what[xn], lm, lp, em, bounds[xn]);
                if (xn == 2) // the switch took the bf16 path: o's, down's and q/k/v's gb and du moved
                    CHECK_MSG(nm == n && memcmp(gm, gprev, n * 4) != 0, "LORAC_PACKED_DRES changed no gradient");
                if (xn == 3) // down's ga from float32 h: its gradients move, the loss does not
                    CHECK_MSG(nm == n && memcmp(gm, gprev, n * 4) != 0 && lm == lprev,
                              "LORAC_PACKED_H_GA=0 changed no gradient, or the loss");
                if (xn == 2) memcpy(g2, gm, n * 4);
                if (xn == 4) { // one product or three: the same frozen sums in another order
                               // (here, with K 64 + 32 + 32, bf16 products whose float32 sums come
                               // out exact), and the one folds the adapters' du a^T in as bf16
                               // products (dx_fold) where the three add float32 du a^T's
                    double a = 0, b = 0;
                    for (size_t i = 0; i < n && nm == n; i++) {
                        double d = (double)gm[i] - g2[i];
                        a += d * d, b += (double)g2[i] * g2[i];
                    }
                    double e3 = b > 0 && nm == n ? sqrt(a / b) : INFINITY;
                    printf("  q/k/v's dx as one product against three: gradients rel err %.2e (bound 5e-3), "
                           "the loss the same bits\n", e3);
                    CHECK_MSG(e3 <= 5e-3 && lm == lprev, "LORAC_QKV_DX=0: gradients %.3e from one product's "
                              "(bound 5e-3), or the loss moved", e3);
                }
                lprev = lm;
                memcpy(gprev, gm, n * 4);
            }
            m->be->lora_group_rows = gr;
            free(gm), free(gprev), free(g2);
            for (int i = 0; i < 3; i++) free(gd[i]);
        }
        setenv("LORAC_PACK_GATE_UP", "0", 1);
        CHECK_MSG(!lc_model_packs_gate_up(m), "LORAC_PACK_GATE_UP=0 still packs");
        double lf = step_grads(m, f.tok, f.tgtm, f.B, f.T, gf, &n2);
        size_t bf = lc_model_activation_bytes(m, f.B, f.T, 0, 0);
        CHECK_EQ_INT(bf, m->ar[LC_MODE_TRAIN].floats * sizeof(float));
        unsetenv("LORAC_PACK_GATE_UP");
        CHECK_MSG(bp < bf, "packing lays out %zu bytes, float32 %zu", bp, bf);
        CHECK_MSG(lp == lf, "the loss changed with packing (%.9g vs %.9g)", lp, lf);
        double num = 0, den = 0;
        for (size_t i = 0; i < n && n == n2; i++) {
            double d = (double)gp[i] - gf[i];
            num += d * d, den += (double)gf[i] * gf[i];
        }
        double e = den > 0 ? sqrt(num / den) : INFINITY;
        printf("  tiny-mistral bf16: loss %.9f both ways, gradients packed vs float32 rel err %.2e (bound 1e-2), "
               "activations %zu vs %zu bytes\n", lp, e, bp, bf);
        CHECK_MSG(n == n2 && e <= 1e-2 && e > 0, "packed gradients: rel err %.3e (want (0, 1e-2])", e);
        // q, k, v and att kept only as bf16 (lc_model_att16, on here) or in float32
        // (LORAC_PACKED_ATT=0). The fixture's rows (12 tokens, below the tensor cores' 16)
        // take the float32 attention kernels, which with float32 q, k, v round nothing:
        // bf16 q, k, v, out (one rounding each, 2^-9, through the softmax and dP - D's
        // cancellation) and o's adapter over bf16 att (u and ga, as bf16 autocast
        // multiplies them): the loss within 1e-3, gradients within 3e-2 (measured 1.9e-2;
        // the tensor-core attention's bound with float32 inputs is 2e-2, test_cuda_ops)
        // and not the same bits; fewer bytes kept. (Where the tensor cores take the rows
        // they round q, k, v either way: test_cuda_ops's attention_b, the same bits.)
        {
            CHECK_MSG(lc_model_att16(m) && m->ar[LC_MODE_TRAIN].att16, "the card does not keep q/k/v/att as bf16");
            setenv("LORAC_PACKED_ATT", "0", 1);
            size_t na = 0;
            float *g32 = malloc(n * 4);
            double la = step_grads(m, f.tok, f.tgtm, f.B, f.T, g32, &na);
            size_t ba = lc_model_activation_bytes(m, f.B, f.T, 0, 0);
            bool off = !lc_model_att16(m) && !m->ar[LC_MODE_TRAIN].att16;
            unsetenv("LORAC_PACKED_ATT");
            double na2 = 0, da = 0;
            for (size_t i = 0; i < n && na == n; i++) {
                double d = (double)gp[i] - g32[i];
                na2 += d * d, da += (double)g32[i] * g32[i];
            }
            double ea = da > 0 && na == n ? sqrt(na2 / da) : INFINITY;
            printf("  tiny-mistral bf16: q/k/v/att as bf16 vs float32: loss %.9f / %.9f, gradients rel err %.2e "
                   "(bound 3e-2), activations %zu vs %zu bytes\n", lp, la, ea, bp, ba);
            CHECK_MSG(off, "LORAC_PACKED_ATT=0 still keeps q/k/v/att as bf16");
            CHECK_MSG(bp < ba, "q/k/v/att as bf16 lay out %zu bytes, float32 %zu", bp, ba);
            CHECK_MSG(fabs(la - lp) <= 1e-3 * fabs(la) && ea > 0 && ea <= 3e-2,
                      "q/k/v/att as bf16: loss %.9g vs %.9g, gradients rel err %.3e (want (0, 3e-2])", lp, la, ea);
            free(g32);
        }
        // blocks that recompute gate and up (or their whole forward) keep no bf16 copy of
        // their own: they pack into the arena's shared one when they recompute (the top
        // block in its forward), and their backward takes the packed path from it, h written
        // again from it as the kept blocks' is: whatever the plan, the gradients are the
        // all-kept packed ones bit for bit; recorded steps of each setting (a key each)
        // replay the same
        static const int rs[][2] = {{0, 3}, {1, 2}, {-1, 0}, {0, 3}, {0, 2}};
        check_recompute_bits(m, rs, 5, f.tok, f.tgtm, f.B, f.T, lp, gp, n);
        CHECK_MSG(memcmp(gp, gf, n * 4) != 0, "the packed gradients equal float32's");
        printf("  tiny-mistral bf16, packing on: recompute (0, 3), (1, 2), checkpointing, (0, 2): the all-kept packed "
               "gradients bit for bit (3 steps each); activations %zu / %zu / %zu bytes\n",
               lc_model_activation_bytes(m, f.B, f.T, 0, 3), lc_model_activation_bytes(m, f.B, f.T, 1, 2),
               lc_model_activation_bytes(m, f.B, f.T, -1, 0));
        // gate's and up's out += s u b folded into SwiGLU (->swiglu_lora) or not: float32
        // sums either way, the same terms
        CHECK_MSG(lc_model_folds_gate_up(m), "the card does not fold gate/up's adapters");
        setenv("LORAC_FOLD_GATE_UP", "0", 1);
        CHECK_MSG(!lc_model_folds_gate_up(m), "LORAC_FOLD_GATE_UP=0 still folds");
        double lu = step_grads(m, f.tok, f.tgtm, f.B, f.T, gf, &n2);
        unsetenv("LORAC_FOLD_GATE_UP");
        num = 0, den = 0;
        for (size_t i = 0; i < n && n == n2; i++) {
            double d = (double)gp[i] - gf[i];
            num += d * d, den += (double)gf[i] * gf[i];
        }
        double eu = den > 0 ? sqrt(num / den) : INFINITY;
        printf("  tiny-mistral bf16: folded vs not: loss %.9f / %.9f, gradients rel err %.2e (bound 1e-5)\n", lp, lu,
               eu);
        CHECK_MSG(eu <= 1e-5 && fabs(lp - lu) <= 1e-6 * fabs(lu), "folded vs not: gradients %.3e, loss %.9g vs %.9g", eu,
                  lp, lu);
        free(gp), free(gf);
    }
    unsetenv("LORAC_GU16");
    lc_model_free(m);
    if (ok) close_fixture(&f);
    remove_bf16_model(dir);
}

/* A `lorac init` bf16 model (init_model_c's shape) in dir (a mkdtemp folder) loaded on the
 * card, with rank-8 adapters (scale 2) on every projection of every block rewritten to
 * nonzero values, at "many rows" (lora_group_rows 0; *gr the backend's before, for
 * drop_lora_model); NULL when it did not load (the failure checked). */
static lc_model *init_lora_model(const char *dir, int hidden, int inter, int layers, int hd, const char *seed,
                                 uint64_t lseed, int64_t *gr) {
    char out[300];
    init_model_c(dir, hidden, inter, layers, hd, seed, out, sizeof out);
    lc_model *m = NULL;
    CHECK_OK(lc_model_load_on(out, "cuda", &m));
    if (!m) return NULL;
    lc_lora_config lc;
    lc_lora_config_default(&lc);
    lc.rank = 8, lc.num_layers = -1, lc.scale = 2.0f;
    CHECK_OK(lc_model_add_lora(m, &lc, lseed));
    rewrite_adapters(m, 0);
    *gr = m->be->lora_group_rows;
    m->be->lora_group_rows = 0;
    return m;
}

/* init_lora_model's model freed (its lora_group_rows put back) and dir removed. */
static void drop_lora_model(lc_model *m, int64_t gr, const char *dir) {
    if (m) m->be->lora_group_rows = gr;
    lc_model_free(m);
    char cmdline[400];
    snprintf(cmdline, sizeof cmdline, "rm -rf '%s'", dir);
    CHECK_EQ_INT(system(cmdline), 0);
}

/* The "many rows" tests' set-up: init_lora_model in a new temporary folder named for the
 * test, 2 × 24 token ids and targets (k: their multipliers and offsets over the vocabulary
 * of 256), and one step taken (the adapters' gradient floats in n). */
enum { MR_B = 2, MR_T = 24 };
typedef struct {
    char dir[64];
    lc_model *m; // NULL when it did not load (the failure checked)
    int64_t gr;
    int32_t tok[MR_B * MR_T], tgt[MR_B * MR_T];
    size_t n;
} many_rows;

/* Returns false when no folder could be made; many_rows_close frees what it made. */
static bool many_rows_open(many_rows *t, const char *name, int hidden, int inter, int layers, int hd,
                           const char *seed, uint64_t lseed, const int k[4]) {
    snprintf(t->dir, sizeof t->dir, "/tmp/lorac-test-%s-XXXXXX", name);
    t->m = NULL, t->gr = 0, t->n = 0;
    if (!mkdtemp(t->dir)) return false;
    for (int i = 0; i < MR_B * MR_T; i++)
        t->tok[i] = (int32_t)((i * k[0] + k[1]) % 256), t->tgt[i] = (int32_t)((i * k[2] + k[3]) % 256);
    t->m = init_lora_model(t->dir, hidden, inter, layers, hd, seed, lseed, &t->gr);
    if (t->m) step_grads(t->m, t->tok, t->tgt, MR_B, MR_T, NULL, &t->n);
    return true;
}

static void many_rows_close(many_rows *t) { drop_lora_model(t->m, t->gr, t->dir); }

/* A step of m with the switch sw set to 0 (its loss into *loff), then three with it unset
 * (direct, recorded, replayed: checked the same bits; the first's loss into *lon): the
 * default's gradients' ‖on − off‖ / ‖off‖ over the n of them. */
static double switch_err(lc_model *m, const char *sw, const int32_t *tok, const int32_t *tgt, int64_t B, int64_t T,
                         size_t n, double *loff, double *lon) {
    size_t n2 = 0;
    float *g0 = malloc(n * 4), *g1 = malloc(n * 4), *g2 = malloc(n * 4);
    setenv(sw, "0", 1);
    *loff = step_grads(m, tok, tgt, B, T, g0, &n2);
    unsetenv(sw);
    for (int rep = 0; rep < 3; rep++) { // direct, recorded, replayed
        double l = step_grads(m, tok, tgt, B, T, rep ? g2 : g1, &n2);
        if (!rep) *lon = l;
        else CHECK_MSG(l == *lon && !memcmp(g2, g1, n * 4), "step %d: loss or gradients differ from the first", rep);
    }
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)g1[i] - g0[i];
        num += d * d, den += (double)g0[i] * g0[i];
    }
    free(g0), free(g1), free(g2);
    return den > 0 ? sqrt(num / den) : INFINITY;
}

/* The backward's bf16 copies of dres and dq/dk/dv (LORAC_PACKED_DRES) where g1 has room for
 * dq|dk|dv past dv (intermediate 640 against 2·HD + 2·KVD = 384, as at the 7B shape; the
 * fixtures' shapes put them in the logits chunk instead, test_packed_gate_up): a `lorac
 * init` bf16 model at "many rows" (lora_group_rows 0): the same loss bits (the forward is
 * unchanged), gradients within bf16 rounding of the float32-dy ones and not their bits,
 * and a direct, a recorded and a replayed step the same bits. */
static void test_dres16_g1(void) {
    many_rows t;
    static const int k[4] = {37, 11, 53, 5};
    if (!many_rows_open(&t, "dres", 128, 640, 3, 32, "9", 13, k)) SKIP("cannot make a temporary folder");
    if (t.m) {
        double l0 = 0, l1 = 0, e = switch_err(t.m, "LORAC_PACKED_DRES", t.tok, t.tgt, MR_B, MR_T, t.n, &l0, &l1);
        printf("  init model, intermediate 640 (dq|dk|dv's copy in g1): loss %.9f both ways, gradients rel err %.2e "
               "from float32 dy's (bound 2e-2; 3 steps the same bits)\n", l1, e);
        CHECK_MSG(l1 == l0, "LORAC_PACKED_DRES changed the loss (%.9g vs %.9g)", l1, l0);
        CHECK_MSG(e > 0 && e <= 2e-2, "bf16 dres and dq/dk/dv: gradients rel err %.3e (want (0, 2e-2])", e);
    }
    many_rows_close(&t);
}

/* The adapters' input gradients folded into the frozen ones (lc_model_make_room, dx_fold):
 * o's, down's and q|k|v's weights moved with spare rows for a^T, dres's and dq|dk|dv's bf16
 * copies with spare columns for du (a model whose vocabulary is its hidden size: the logits
 * chunk, where dres's copy lies, grows for them as at the 7B shape's 8 × 512 rows), one
 * product [dy | du] [W ; a^T] each, against
 * LORAC_DX_FOLD=0 (du a^T in float32 first, the frozen product adding to it): the same loss
 * bits (the forward is unchanged), gradients within bf16 rounding of du and a^T and not
 * their bits (the path taken), a direct, a recorded and a replayed step the same bits; and
 * with the switch back on, the rooms found again without moving the weights. */
static void test_dx_fold(void) {
    many_rows t;
    static const int k[4] = {31, 5, 43, 9};
    if (!many_rows_open(&t, "dxfold", 256, 1280, 3, 64, "4", 21, k)) SKIP("cannot make a temporary folder");
    lc_model *m = t.m;
    if (m) {
        int64_t r = m->lcfg.rank;
        CHECK_MSG(m->room_od == r && m->room_qkv == 3 * r, "rooms %lld / %lld after the first step (want %lld / %lld)",
                  (long long)m->room_od, (long long)m->room_qkv, (long long)r, (long long)(3 * r));
        // vocabulary = hidden size: xn16's and dres's bf16 copies fill the logits chunk
        // exactly; it grows by dres's spare columns (dq|dk|dv's copy goes into g1)
        const lc_arena *ar = &m->ar[LC_MODE_TRAIN];
        CHECK_MSG(ar->room > (size_t)ar->chunk * 256, "the logits chunk did not grow for the spare columns (%zu floats)",
                  ar->room);
        for (int l = 0; l < (int)m->cfg.num_hidden_layers; l++)
            CHECK_MSG(m->blocks[l].room[LC_KEY_O] == r && m->blocks[l].room[LC_KEY_DOWN] == r &&
                          m->blocks[l].room[LC_KEY_Q] == 3 * r && m->blocks[l].qkv.data == m->blocks[l].w[0].data,
                      "block %d: rooms not made, or q|k|v not at q's place", l);
        const void *wo = m->blocks[0].w[LC_KEY_O].data;
        setenv("LORAC_DX_FOLD", "0", 1);
        CHECK_EQ_INT(lc_model_make_room(m), 0);
        CHECK_MSG(m->room_od == 0 && m->room_qkv == 0, "LORAC_DX_FOLD=0 left the rooms in use");
        unsetenv("LORAC_DX_FOLD");
        double l0 = 0, l1 = 0, e = switch_err(m, "LORAC_DX_FOLD", t.tok, t.tgt, MR_B, MR_T, t.n, &l0, &l1);
        CHECK_MSG(m->room_od == r && m->blocks[0].w[LC_KEY_O].data == wo, "the rooms were made again (weights moved)");
        printf("  init model, rank 8: [dy | du] [W ; a^T] as one product: loss %.9f both ways, gradients rel err %.2e "
               "from du a^T's in float32 (bound 5e-3; 3 steps the same bits)\n", l1, e);
        CHECK_MSG(l1 == l0, "LORAC_DX_FOLD changed the loss (%.9g vs %.9g)", l1, l0);
        CHECK_MSG(e > 0 && e <= 5e-3, "folded input gradients: rel err %.3e (want (0, 5e-3])", e);
    }
    many_rows_close(&t);
}

/* The attention's backward writing dq|dk|dv's bf16 copies itself, dq and dk rotated back
 * (->attention_bwd_rb, on the tensor cores: heads of 64, 24 tokens), against float32 dq,
 * dk, dv then RoPE's backward and the rounding as separate passes (LORAC_ATT_ROPE_BWD=0): a
 * `lorac init` bf16 model at "many rows" (the bf16 copies on), the same loss and gradient
 * bits, direct and through the step graph; and the copies' path taken (LORAC_PACKED_DRES=0,
 * float32 dy, moves the gradients). */
static void test_att_rope_bwd(void) {
    many_rows t;
    static const int k[4] = {29, 3, 41, 7};
    if (!many_rows_open(&t, "attrope", 128, 1024, 2, 64, "5", 17, k)) SKIP("cannot make a temporary folder");
    lc_model *m = t.m;
    if (m) {
        size_t n = t.n, n2 = 0;
        float *g[4];
        double l[4];
        for (int i = 0; i < 4; i++) g[i] = malloc(n * 4);
        for (int i = 0; i < 4; i++) { // default direct, default again (replayed), the switch off, float32 dy
            if (i == 2) setenv("LORAC_ATT_ROPE_BWD", "0", 1);
            if (i == 3) setenv("LORAC_PACKED_DRES", "0", 1);
            l[i] = step_grads(m, t.tok, t.tgt, MR_B, MR_T, g[i], &n2);
            unsetenv("LORAC_ATT_ROPE_BWD");
            unsetenv("LORAC_PACKED_DRES");
        }
        CHECK_MSG(l[1] == l[0] && !memcmp(g[1], g[0], n * 4), "a second step differs from the first");
        CHECK_MSG(l[2] == l[0] && !memcmp(g[2], g[0], n * 4),
                  "LORAC_ATT_ROPE_BWD=0: loss or gradients differ from the attention backward's own copies");
        CHECK_MSG(memcmp(g[3], g[0], n * 4) != 0, "LORAC_PACKED_DRES=0 changed no gradient: the copies' path not taken");
        printf("  init model, heads of 64, 2 x 24 tokens: loss %.9f; ->attention_bwd_rb's gradients the separate "
               "passes' bits (direct and replayed)\n", l[0]);
        for (int i = 0; i < 4; i++) free(g[i]);
    }
    many_rows_close(&t);
}

/* Gate's and up's frozen products written as bf16 into the block's bf16 pair, SwiGLU adding
 * the adapters' s u b there in place (lc_model_gu16), against float32 products that SwiGLU
 * reads and packs (LORAC_GU16=0): a `lorac init` bf16 model at "many rows", all 3 blocks
 * adapted. The frozen part is rounded once more (as a bf16 layer under autocast rounds
 * it): the loss within 1e-3 and not the same bits (the path taken), gradients within
 * 1e-2; a direct, a recorded and a replayed step the same bits; no float32 pair in the
 * arena (2 N I floats fewer, kept everything or checkpointed); every recompute setting
 * the all-kept gradients bit for bit, at many rows and at few. Then with the lowest block unadapted (the scratch's
 * gate and up in the shared pair too): the loss within 1e-3 of float32 products'. */
static void test_gu16(void) {
    many_rows t;
    static const int k[4] = {29, 7, 47, 3};
    if (!many_rows_open(&t, "gu16", 128, 640, 3, 32, "6", 19, k)) SKIP("cannot make a temporary folder");
    lc_model *m = t.m;
    enum { B = MR_B, T = MR_T, I = 640 };
    const int32_t *tok = t.tok, *tgt = t.tgt;
    int64_t gr = t.gr;
    if (m) {
        CHECK_MSG(lc_model_gu16(m), "the card does not write gate/up as bf16");
        size_t n = t.n;
        CHECK_MSG(m->ar[LC_MODE_TRAIN].g16, "the arena was not laid out for bf16 gate/up");
        size_t on = lc_model_activation_bytes(m, B, T, 0, 0), onck = lc_model_activation_bytes(m, B, T, -1, 0);
        CHECK_EQ_INT(on, m->ar[LC_MODE_TRAIN].floats * sizeof(float));
        setenv("LORAC_GU16", "0", 1);
        size_t off = lc_model_activation_bytes(m, B, T, 0, 0), offck = lc_model_activation_bytes(m, B, T, -1, 0);
        unsetenv("LORAC_GU16");
        CHECK_MSG(off - on == (size_t)(2 * B * T * I) * 4 && offck - onck == (size_t)(2 * B * T * I) * 4,
                  "bf16 gate/up save %zu / %zu bytes (kept / checkpointed; want %d)", off - on, offck - onck,
                  2 * B * T * I * 4);
        double l0 = 0, l1 = 0, e = switch_err(m, "LORAC_GU16", tok, tgt, B, T, n, &l0, &l1);
        printf("  init model, intermediate 640: gate/up as bf16 products: loss %.9f against %.9f (%.1e), gradients "
               "rel err %.2e (bound 1e-2; 3 steps the same bits); activations %zu vs %zu bytes (checkpointed %zu vs "
               "%zu)\n", l1, l0, fabs(l1 - l0) / l0, e, on, off, onck, offck);
        CHECK_MSG(l1 != l0 && fabs(l1 - l0) <= 1e-3 * l0, "bf16 gate/up: loss %.9g vs %.9g (want within 1e-3, not equal)",
                  l1, l0);
        CHECK_MSG(e > 0 && e <= 1e-2, "bf16 gate/up: gradients rel err %.3e (want (0, 1e-2])", e);
        // at many rows (h kept only as bf16: the recomputing blocks' forwards and whole
        // recomputes take down's u from h's bf16 copy as the kept blocks' do) and at the
        // backend's own lora_group_rows (few rows: float32 h everywhere)
        int64_t many = m->be->lora_group_rows;
        float *g0 = malloc(n * 4);
        static const int rs[][2] = {{0, 3}, {1, 2}, {-1, 0}, {0, 2}};
        for (int few = 0; few < 2; few++) {
            m->be->lora_group_rows = few ? gr : many;
            size_t n0 = 0;
            double la = step_grads(m, tok, tgt, B, T, g0, &n0);
            check_recompute_bits(m, rs, 4, tok, tgt, B, T, la, g0, n);
        }
        printf("  the same at many and at few rows, recompute (0, 3), (1, 2), checkpointing, (0, 2): the all-kept "
               "gradients bit for bit\n");
        m->be->lora_group_rows = many;
        free(g0);
    }
    many_rows_close(&t);
    // blocks below the adapters run through the scratch: its gate and up in the shared pair
    char dir2[] = "/tmp/lorac-test-gu16b-XXXXXX", out[300];
    if (!mkdtemp(dir2)) return;
    init_model_c(dir2, 128, 640, 4, 32, "7", out, sizeof out);
    lc_model *m2 = NULL;
    int64_t g2 = 0;
    CHECK_OK(lc_model_load_on(out, "cuda", &m2));
    if (m2) {
        lc_lora_config lc;
        lc_lora_config_default(&lc);
        lc.rank = 8, lc.num_layers = 3, lc.scale = 2.0f;
        CHECK_OK(lc_model_add_lora(m2, &lc, 23));
        rewrite_adapters(m2, 0);
        g2 = m2->be->lora_group_rows;
        m2->be->lora_group_rows = 0;
        size_t n = 0;
        step_grads(m2, tok, tgt, B, T, NULL, &n);
        double l0 = 0, l1 = 0, e = switch_err(m2, "LORAC_GU16", tok, tgt, B, T, n, &l0, &l1);
        CHECK_MSG(lc_model_gu16(m2) && m2->ar[LC_MODE_TRAIN].g16 && m2->ar[LC_MODE_TRAIN].scratch.gu != NULL &&
                      m2->ar[LC_MODE_TRAIN].scratch.gate == NULL,
                  "the last 3 of 4 blocks adapted: the scratch keeps float32 gate/up");
        printf("  the last 3 of 4 blocks adapted: loss %.9f against %.9f, gradients rel err %.2e (bound 1e-2)\n", l1,
               l0, e);
        CHECK_MSG(l1 != l0 && fabs(l1 - l0) <= 1e-3 * l0 && e > 0 && e <= 1e-2,
                  "last 3 of 4: loss %.9g vs %.9g, gradients rel err %.3e", l1, l0, e);
    }
    drop_lora_model(m2, g2, dir2);
}

/* Gate's and up's adapters in their frozen products (the default with bf16 gate/up):
 * [xn | u_gate | u_up] [W | s b^T]^T as one bf16 product over the weights' 2 r spare columns
 * (->weight_room), SwiGLU only reading the pair, against SwiGLU adding s u b to the pair in
 * float32 (LORAC_GU_FOLD=0): a `lorac init` bf16 model at "many rows", all 3 blocks adapted.
 * u and s b are rounded to bf16 (as PEFT's adapters under autocast multiply) and the pair
 * once instead of twice: the loss within 1e-4 and not the same bits (the path taken),
 * gradients within 1e-2; a direct, a recorded and a replayed step the same bits; the
 * columns found again without moving the weights; every recompute setting the all-kept
 * bits; then decoding over the moved weights (the fused step reads gate's and up's rows at
 * their stride) against the single ops and the CPU. test_rows checks the training path
 * against transformers + PEFT. */
static void test_gu_fold(void) {
    many_rows t;
    static const int k[4] = {23, 9, 59, 1};
    if (!many_rows_open(&t, "gufold", 128, 640, 3, 32, "8", 29, k)) SKIP("cannot make a temporary folder");
    lc_model *m = t.m;
    enum { B = MR_B, T = MR_T, C = 128 };
    const int32_t *tok = t.tok, *tgt = t.tgt;
    if (m) {
        size_t n = t.n;
        int64_t r = m->lcfg.rank;
        CHECK_MSG(m->room_gu == 2 * r, "room_gu %lld after the first step (want %lld)", (long long)m->room_gu,
                  (long long)(2 * r));
        for (int l = 0; l < (int)m->cfg.num_hidden_layers; l++)
            for (int k = LC_KEY_GATE; k <= LC_KEY_UP; k++)
                CHECK_MSG(m->blocks[l].xroom[k] == 2 * r && lc_wt_ld(&m->blocks[l].w[k]) == C + 2 * r,
                          "block %d key %d: %lld spare columns, row stride %lld", l, k, (long long)m->blocks[l].xroom[k],
                          (long long)lc_wt_ld(&m->blocks[l].w[k]));
        const void *wg = m->blocks[0].w[LC_KEY_GATE].data;
        double l0 = 0, l1 = 0, e = switch_err(m, "LORAC_GU_FOLD", tok, tgt, B, T, n, &l0, &l1);
        CHECK_MSG(m->room_gu == 2 * r && m->blocks[0].w[LC_KEY_GATE].data == wg,
                  "the columns were made again (weights moved)");
        printf("  init model, rank 8: gate/up's adapters in the frozen products: loss %.9f against %.9f (%.1e), "
               "gradients rel err %.2e (bound 1e-2; 3 steps the same bits)\n", l1, l0, fabs(l1 - l0) / l0, e);
        CHECK_MSG(l1 != l0 && fabs(l1 - l0) <= 1e-4 * l0, "gate/up fold: loss %.9g vs %.9g (want within 1e-4, not equal)",
                  l1, l0);
        CHECK_MSG(e > 0 && e <= 1e-2, "gate/up fold: gradients rel err %.3e (want (0, 1e-2])", e);
        float *g0 = malloc(n * 4);
        static const int rs[][2] = {{0, 3}, {1, 2}, {-1, 0}, {0, 2}};
        size_t n0 = 0;
        double la = step_grads(m, tok, tgt, B, T, g0, &n0);
        check_recompute_bits(m, rs, 4, tok, tgt, B, T, la, g0, n);
        printf("  recompute (0, 3), (1, 2), checkpointing, (0, 2): the all-kept gradients bit for bit\n");
        free(g0);
        // decoding after training, over the moved weights (gate's and up's rows C + 2r apart):
        // the fused step and its graph against the single ops and the CPU (float32 products)
        // on the same weights and adapters
        char path[300];
        snprintf(path, sizeof path, "%s/m", t.dir);
        lc_model *mh = NULL;
        CHECK_OK(lc_model_load_on(path, "cpu", &mh));
        if (mh) {
            lc_lora_config lc;
            lc_lora_config_default(&lc);
            lc.rank = 8, lc.num_layers = -1, lc.scale = 2.0f;
            CHECK_OK(lc_model_add_lora(mh, &lc, 29));
            rewrite_adapters(mh, 0);
            lc_model_set_bf16_matmul(mh, false);
            int32_t prompt[] = {3, 17, 99, 5, 250, 8, 41};
            compare_paths("init model, gate/up rows with spare columns", m, mh, prompt, 7, 1e-5 * TOL);
        }
        lc_model_free(mh);
    }
    many_rows_close(&t);
}

/* The gradient arithmetic the trainer runs on the card (lc_model_all_finite, _sumsq,
 * _scale, _accumulate, _zero) on shared memory, against the host's loops: the same bits
 * for the elementwise ones, the sum of squares within double rounding of the host's. */
static void test_grad_ops_card(void) {
    if (!fixtures_present()) SKIP("tests/fixtures/model-ref is absent");
    fixture f;
    if (!open_fixture(&f, "tiny-mistral", false)) {
        CHECK(0);
        close_fixture(&f);
        return;
    }
    size_t n = 3000017;
    float *x = lc_model_shared_alloc(f.m, n), *y = lc_model_shared_alloc(f.m, n);
    float *hx = malloc(n * 4), *hy = malloc(n * 4);
    uint64_t st = 99;
    for (size_t i = 0; i < n; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        hx[i] = (float)((double)(st >> 11) / 9007199254740992.0 - 0.5) * 3.0f;
        hy[i] = (float)i * 1e-7f - 0.1f;
    }
    memcpy(x, hx, n * 4), memcpy(y, hy, n * 4);
    double want = 0;
    for (size_t i = 0; i < n; i++) want += (double)hx[i] * hx[i];
    double got = lc_model_sumsq(f.m, x, n), again = lc_model_sumsq(f.m, x, n);
    CHECK_MSG(fabs(got - want) <= 1e-12 * want && got == again, "sumsq %.17g vs host %.17g (again %.17g)", got, want,
              again);
    CHECK(lc_model_all_finite(f.m, x, n));
    lc_model_accumulate(f.m, y, x, n);           // y += x
    lc_model_scale(f.m, y, 3.0f, true, n);       // y /= 3
    lc_model_scale(f.m, x, 0.37f, false, n - 5); // x *= 0.37 but the last 5
    lc_model_sync(f.m);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        float wy = (hy[i] + hx[i]) / 3.0f, wx = i < n - 5 ? hx[i] * 0.37f : hx[i];
        bad += memcmp(&wy, &y[i], 4) != 0 || memcmp(&wx, &x[i], 4) != 0;
    }
    CHECK_MSG(bad == 0, "%zu elements differ from the host's arithmetic", bad);
    x[n - 1] = INFINITY;
    CHECK(!lc_model_all_finite(f.m, x, n));
    x[n - 1] = 0, x[12345] = NAN;
    CHECK(!lc_model_all_finite(f.m, x, n));
    CHECK(lc_model_all_finite(f.m, x, 12345));
    lc_model_zero(f.m, x, n);
    lc_model_sync(f.m);
    CHECK(lc_model_sumsq(f.m, x, n) == 0.0);
    printf("  card: sum of squares of %zu floats %.12g (host %.12g), accumulate/scale the same bits, NaN and Inf "
           "found\n", n, got, want);
    lc_model_shared_free(f.m, x), lc_model_shared_free(f.m, y);
    free(hx), free(hy);
    close_fixture(&f);
}

static void extra_tests(void) {
    RUN(test_decode_graph);
    RUN(test_decode_graph_bf16);
    RUN(test_decode_attention_split);
    RUN(test_merge_lora);
    RUN(test_decode_graph_nf4);
    RUN(test_step_graph);
    RUN(test_step_graph_off);
    RUN(test_step_graph_quant);
    RUN(test_packed_gate_up);
    RUN(test_dres16_g1);
    RUN(test_att_rope_bwd);
    RUN(test_dx_fold);
    RUN(test_gu16);
    RUN(test_gu_fold);
    RUN(test_grad_ops_card);
}
