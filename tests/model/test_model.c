/*
 * test_model.c — lorac's transformer with LoRA against transformers 5.17 + PEFT 0.21 in
 * float64 (tests/fixtures/model-ref, made by tests/reference/make_model_fixtures.py on
 * three tiny models: Mistral with GQA and head_dim != hidden/heads, tied Llama with one
 * kv head and llama3 rope, Qwen2 with biases and linear rope).
 *
 * Checked: rotary inv_freq, logits with and without adapters (real positions of a
 * right-padded batch), the loss with and without a masked prompt span, every LoRA
 * gradient, greedy generation through the KV cache (tokens and each step's logits),
 * gradient checkpointing (same gradients), and the memory plan against the arena. And one
 * step at many rows on a bf16 `lorac init` model (tiny-rows, test_rows), where the card
 * takes its bf16 paths: the CPU to 1e-5 of float64, the card to twice the error of
 * PyTorch's own bf16 path on the same step.
 *
 * Tolerances: lorac computes in float32 over float32 weights; the reference is float64
 * on the same (float32-representable) weights and adapters. Float32 rounding (6e-8)
 * grows with the depth of each sum (at most a few hundred terms here) and through ~10
 * sequential ops per block: errors of ~1e-6 relative to the largest magnitude are
 * expected, so 1e-5 of the tensor's largest magnitude is the bound (the brief's ~1e-5);
 * the losses (means of O(1) terms) must agree to 1e-6 relative.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "core/file.h"
#include "core/json.h"
#include "harness.h"
#include "hub/sha256.h"
#include "io/safetensors.h"
#include "model/internal.h"
#include "model/model.h"
#include "train/optim.h"

/* test_model_cuda.c includes this file with TEST_DEVICE "cuda" and a looser TOL (and
 * TEST_EXTRA: its own tests, run after these). */
#ifndef TEST_DEVICE
#define TEST_DEVICE "cpu"
#define TOL 1.0
#endif

#define MODELS "tests/fixtures/models/"
#define REF "tests/fixtures/model-ref/"

typedef struct {
    cJSON *j;
    lc_safetensors ref, ad;
    lc_model *m;
    int64_t B, T, V;
    int32_t *tok, *tgt, *tgtm;
    int lengths[8];
} fixture;

static int64_t jint(const cJSON *j, const char *k) { return (int64_t)cJSON_GetObjectItem(j, k)->valuedouble; }
static double jnum(const cJSON *j, const char *k) { return cJSON_GetObjectItem(j, k)->valuedouble; }

static void fill_ids(int32_t *dst, const cJSON *rows, int64_t T) {
    int b = 0;
    for (const cJSON *r = rows->child; r; r = r->next, b++) {
        int t = 0;
        for (const cJSON *v = r->child; v; v = v->next, t++) dst[b * T + t] = (int32_t)v->valuedouble;
    }
}

/* The F64 reference tensor `name` (must exist, n elements). */
static const double *ref64(fixture *f, const char *name, size_t n) {
    const lc_tensor *t = lc_st_find(&f->ref, name);
    if (!t || t->dtype != LC_DT_F64 || t->numel != n || ((uintptr_t)t->data % 8)) {
        printf("  reference tensor %s missing or malformed\n", name);
        return NULL;
    }
    return t->data;
}

static const char *fixture_device = TEST_DEVICE; // where open_fixture loads the model

/* open_fixture with the model at model (a folder; NULL: MODELS name). */
static bool open_fixture_at(fixture *f, const char *name, const char *model, bool with_lora) {
    memset(f, 0, sizeof *f);
    char p[256];
    snprintf(p, sizeof p, REF "%s.json", name);
    if (lc_json_parse_file(p, 1 << 20, &f->j) < 0) return printf("  %s\n", lc_errmsg()), false;
    snprintf(p, sizeof p, REF "%s.ref.safetensors", name);
    if (lc_st_open(&f->ref, p) < 0) return printf("  %s\n", lc_errmsg()), false;
    snprintf(p, sizeof p, REF "%s.adapters.safetensors", name);
    if (lc_st_open(&f->ad, p) < 0) return printf("  %s\n", lc_errmsg()), false;
    snprintf(p, sizeof p, MODELS "%s", name);
    if (lc_model_load_on(model ? model : p, fixture_device, &f->m) < 0) return printf("  %s\n", lc_errmsg()), false;
    f->B = jint(f->j, "B"), f->T = jint(f->j, "T"), f->V = lc_model_cfg(f->m)->vocab_size;
    size_t n = (size_t)(f->B * f->T);
    f->tok = malloc(n * 4), f->tgt = malloc(n * 4), f->tgtm = malloc(n * 4);
    fill_ids(f->tok, cJSON_GetObjectItem(f->j, "tokens"), f->T);
    fill_ids(f->tgt, cJSON_GetObjectItem(f->j, "targets"), f->T);
    const cJSON *tm = cJSON_GetObjectItem(f->j, "targets_masked");
    if (tm) fill_ids(f->tgtm, tm, f->T);
    else memcpy(f->tgtm, f->tgt, n * 4);
    int b = 0;
    for (const cJSON *v = cJSON_GetObjectItem(f->j, "lengths")->child; v; v = v->next) f->lengths[b++] = (int)v->valuedouble;
    if (!with_lora) return true;
    lc_lora_config lc;
    lc_lora_config_default(&lc);
    lc.rank = (int)jint(f->j, "rank");
    lc.scale = (float)jnum(f->j, "scale");
    lc.num_layers = (int)jint(f->j, "num_layers");
    lc.keys = 0;
    for (const cJSON *k = cJSON_GetObjectItem(f->j, "keys")->child; k; k = k->next) {
        int key = lc_lora_key_parse(k->valuestring);
        if (key < 0) return printf("  unknown lora key %s\n", k->valuestring), false;
        lc.keys |= 1u << key;
    }
    if (lc_model_add_lora(f->m, &lc, 7) < 0) return printf("  %s\n", lc_errmsg()), false;
    size_t np;
    lc_lora_param *ps = lc_model_lora(f->m, &np);
    if (np * 2 != f->ad.n_tensors) return printf("  %zu adapters, file has %zu tensors\n", np, f->ad.n_tensors), false;
    for (size_t i = 0; i < np; i++) {
        char an[160], bn[160];
        snprintf(an, sizeof an, "%s.lora_a", ps[i].name);
        snprintf(bn, sizeof bn, "%s.lora_b", ps[i].name);
        const lc_tensor *ta = lc_st_find(&f->ad, an), *tb = lc_st_find(&f->ad, bn);
        if (!ta || !tb || ta->numel != (size_t)(ps[i].in * ps[i].r) || tb->numel != (size_t)(ps[i].r * ps[i].out))
            return printf("  adapter %s missing or misshapen\n", ps[i].name), false;
        lc_to_f32(ps[i].a, ta->data, ta->dtype, ta->numel);
        lc_to_f32(ps[i].b, tb->data, tb->dtype, tb->numel);
    }
    return true;
}

static bool open_fixture(fixture *f, const char *name, bool with_lora) {
    return open_fixture_at(f, name, NULL, with_lora);
}

static void close_fixture(fixture *f) {
    lc_model_free(f->m);
    lc_st_close(&f->ref), lc_st_close(&f->ad);
    cJSON_Delete(f->j);
    free(f->tok), free(f->tgt), free(f->tgtm);
}

/* max |a - ref| / max |ref| over n elements (the elements where keep is set). */
static double rel_err(const float *a, const double *ref, size_t n, const bool *keep) {
    double md = 0, mr = 0;
    for (size_t i = 0; i < n; i++) {
        if (keep && !keep[i]) continue;
        double d = fabs((double)a[i] - ref[i]);
        md = d > md ? d : md;
        mr = fabs(ref[i]) > mr ? fabs(ref[i]) : mr;
    }
    return mr > 0 ? md / mr : md;
}

static const char *NAMES[] = {"tiny-mistral", "tiny-llama", "tiny-qwen2"};

static bool fixtures_present(void) {
    FILE *fp = fopen(REF "tiny-mistral.json", "r");
    if (fp) fclose(fp);
    return fp != NULL;
}

static void test_rope_inv_freq(void) {
    if (!fixtures_present()) SKIP("tests/fixtures/model-ref is absent");
    for (int i = 0; i < 3; i++) {
        fixture f;
        if (!open_fixture(&f, NAMES[i], false)) {
            CHECK_MSG(0, "%s: fixture", NAMES[i]);
            close_fixture(&f);
            continue;
        }
        int64_t half = lc_model_cfg(f.m)->head_dim / 2;
        float inv[512];
        lc_rope_inv_freq(lc_model_cfg(f.m), inv);
        const double *r = ref64(&f, "inv_freq", (size_t)half);
        CHECK(r != NULL);
        for (int64_t k = 0; r && k < half; k++)
            CHECK_MSG(fabs(inv[k] - r[k]) <= 2e-7 * fabs(r[k]), "%s inv_freq[%lld] %.9g vs %.9g", NAMES[i],
                      (long long)k, (double)inv[k], r[k]);
        close_fixture(&f);
    }
}

static void check_logits(fixture *f, const char *what, const char *refname) {
    size_t n = (size_t)(f->B * f->T * f->V);
    float *lg = malloc(n * sizeof(float));
    bool *keep = calloc(n, 1);
    for (int64_t b = 0; b < f->B; b++)
        for (int64_t t = 0; t < f->lengths[b]; t++)
            memset(keep + (size_t)((b * f->T + t) * f->V), 1, (size_t)f->V);
    lc_batch bt = {f->B, f->T, f->tok, NULL, 0};
    CHECK_OK(lc_model_logits(f->m, &bt, lg));
    const double *r = ref64(f, refname, n);
    CHECK(r != NULL);
    if (r) {
        double e = rel_err(lg, r, n, keep);
        printf("  %s %s: logits rel err %.2e\n", what, refname, e);
        CHECK_MSG(e < 1e-5 * TOL, "%s %s rel err %.3e", what, refname, e);
    }
    free(lg), free(keep);
}

static void test_logits_base(void) {
    if (!fixtures_present()) SKIP("tests/fixtures/model-ref is absent");
    for (int i = 0; i < 3; i++) {
        fixture f;
        if (open_fixture(&f, NAMES[i], false)) check_logits(&f, NAMES[i], "logits_base");
        else CHECK_MSG(0, "%s: fixture", NAMES[i]);
        close_fixture(&f);
    }
}

static void test_logits_lora(void) {
    if (!fixtures_present()) SKIP("tests/fixtures/model-ref is absent");
    for (int i = 0; i < 3; i++) {
        fixture f;
        if (open_fixture(&f, NAMES[i], true)) check_logits(&f, NAMES[i], "logits");
        else CHECK_MSG(0, "%s: fixture", NAMES[i]);
        close_fixture(&f);
    }
}

/* Runs forward_backward on targets and checks loss and every gradient. */
static void check_grads(fixture *f, const char *name, const int32_t *tgt, const char *lossk,
                        const char *ntokk, const char *prefix, bool ckpt) {
    lc_model_set_grad_checkpoint(f->m, ckpt);
    lc_batch bt = {f->B, f->T, f->tok, tgt, 0};
    double loss;
    int64_t nt;
    CHECK_OK(lc_model_forward_backward(f->m, &bt, &loss, &nt));
    double want = jnum(f->j, lossk);
    CHECK_EQ_INT(nt, jint(f->j, ntokk));
    CHECK_MSG(fabs(loss - want) <= 1e-6 * TOL * fabs(want), "%s %s: loss %.10g vs %.10g", name, lossk, loss, want);
    size_t np;
    lc_lora_param *ps = lc_model_lora(f->m, &np);
    double worst = 0;
    for (size_t i = 0; i < np; i++) {
        char n[200];
        snprintf(n, sizeof n, "%s.%s.lora_a", prefix, ps[i].name);
        const double *ra = ref64(f, n, (size_t)(ps[i].in * ps[i].r));
        snprintf(n, sizeof n, "%s.%s.lora_b", prefix, ps[i].name);
        const double *rb = ref64(f, n, (size_t)(ps[i].r * ps[i].out));
        CHECK(ra && rb);
        if (!ra || !rb) continue;
        double ea = rel_err(ps[i].ga, ra, (size_t)(ps[i].in * ps[i].r), NULL);
        double eb = rel_err(ps[i].gb, rb, (size_t)(ps[i].r * ps[i].out), NULL);
        CHECK_MSG(ea < 1e-5 * TOL && eb < 1e-5 * TOL, "%s %s %s: grad rel err A %.3e B %.3e", name, prefix, ps[i].name, ea, eb);
        worst = fmax(worst, fmax(ea, eb));
    }
    printf("  %s %s%s%s: loss %.9f (ref %.9f), %zu adapters, worst grad rel err %.2e\n", name, prefix,
           ckpt ? " (checkpointed)" : "", f->m->be->lora_group_rows ? "" : " (adapters grouped)", loss, want, np,
           worst);
}

static void test_loss_and_grads(void) {
    if (!fixtures_present()) SKIP("tests/fixtures/model-ref is absent");
    for (int i = 0; i < 3; i++) {
        fixture f;
        if (open_fixture(&f, NAMES[i], true)) {
            // the adapters of one input as one product each way (projs_group) and one by one
            int64_t rows = f.m->be->lora_group_rows;
            for (int g = 0; g < 2; g++) {
                f.m->be->lora_group_rows = g ? INT64_MAX : 0;
                check_grads(&f, NAMES[i], f.tgt, "loss", "ntok", "grad", false);
                check_grads(&f, NAMES[i], f.tgtm, "loss_masked", "ntok_masked", "grad_masked", false);
            }
            f.m->be->lora_group_rows = rows;
            // eval loss: no gradients, same number
            lc_batch bt = {f.B, f.T, f.tok, f.tgt, 0};
            double sum;
            int64_t nt;
            CHECK_OK(lc_model_loss(f.m, &bt, &sum, &nt));
            double want = jnum(f.j, "loss");
            CHECK_MSG(nt > 0 && fabs(sum / (double)nt - want) <= 1e-6 * TOL * want, "%s eval loss %.10g vs %.10g",
                      NAMES[i], sum / (double)nt, want);
        } else CHECK_MSG(0, "%s: fixture", NAMES[i]);
        close_fixture(&f);
    }
}

static void test_grad_checkpoint(void) {
    if (!fixtures_present()) SKIP("tests/fixtures/model-ref is absent");
    for (int i = 0; i < 3; i++) {
        fixture f;
        if (!open_fixture(&f, NAMES[i], true)) {
            CHECK_MSG(0, "%s: fixture", NAMES[i]);
            close_fixture(&f);
            continue;
        }
        check_grads(&f, NAMES[i], f.tgt, "loss", "ntok", "grad", true);
        // the same numbers bit for bit as without checkpointing (same ops, same order)
        size_t np;
        lc_lora_param *ps = lc_model_lora(f.m, &np);
        size_t tot = 0;
        for (size_t k = 0; k < np; k++) tot += (size_t)((ps[k].in + ps[k].out) * ps[k].r);
        float *g1 = malloc(tot * 4);
        memcpy(g1, ps[0].ga, tot * 4); // gradients are one contiguous block
        lc_model_set_grad_checkpoint(f.m, false);
        lc_batch bt = {f.B, f.T, f.tok, f.tgt, 0};
        double loss;
        int64_t nt;
        CHECK_OK(lc_model_forward_backward(f.m, &bt, &loss, &nt));
        CHECK_MSG(!memcmp(g1, ps[0].ga, tot * 4), "%s: checkpointed gradients differ", NAMES[i]);
        free(g1);
        close_fixture(&f);
    }
}

/* One step's loss and every gradient (one contiguous block) with recompute counts (full,
 * mlp); also checks that the arena laid out what lc_model_activation_bytes counts. */
static double recompute_step(fixture *f, int full, int mlp, float *g, size_t n) {
    lc_model_set_recompute(f->m, full, mlp);
    lc_batch bt = {f->B, f->T, f->tok, f->tgt, 0};
    double loss = NAN;
    int64_t nt;
    CHECK_OK(lc_model_forward_backward(f->m, &bt, &loss, &nt));
    CHECK_EQ_INT(lc_model_activation_bytes(f->m, f->B, f->T, full, mlp),
                 f->m->ar[LC_MODE_TRAIN].floats * sizeof(float));
    size_t np;
    lc_lora_param *ps = lc_model_lora(f->m, &np);
    memcpy(g, ps[0].ga, n * 4);
    return loss;
}

/* Keeping less for the backward (lc_model_set_recompute: blocks checkpointed whole, gate
 * and up recomputed; the adapters' products grouped) gives the same loss and gradients bit
 * for bit as keeping everything,
 * on the PEFT fixtures (2 of 3 blocks adapted: those are checked against PEFT above) and
 * with every block adapted; lc_model_fit_recompute picks a setting that fits, keeps
 * everything when that fits, and fails below checkpointing's memory. */
static void test_recompute(void) {
    if (!fixtures_present()) SKIP("tests/fixtures/model-ref is absent");
    static const int sets[][2] = {{0, 1}, {0, 2}, {0, 3}, {1, 1}, {1, 2}, {2, 1}, {2, 0}, {-1, 0}, {0, -1}};
    for (int i = 0; i < 3; i++)
        for (int all = 0; all < 2; all++) {
            fixture f;
            if (!open_fixture(&f, NAMES[i], !all)) {
                CHECK_MSG(0, "%s: fixture", NAMES[i]);
                close_fixture(&f);
                continue;
            }
            if (all) {
                lc_lora_config lc;
                lc_lora_config_default(&lc);
                lc.rank = 4, lc.scale = 2.0f, lc.num_layers = -1;
                CHECK_OK(lc_model_add_lora(f.m, &lc, 5));
                size_t np;
                lc_lora_param *ps = lc_model_lora(f.m, &np);
                for (size_t k = 0; k < np; k++) // B non-zero: every path carries gradient
                    for (int64_t j = 0; j < ps[k].r * ps[k].out; j++) ps[k].b[j] = 0.01f * (float)((j * 7 + (int64_t)k) % 13 - 6);
            }
            int n = lc_model_adapted_blocks(f.m);
            int64_t rows = f.m->be->lora_group_rows; // the grouped adapter products (projs_group)
            f.m->be->lora_group_rows = 0;
            size_t np, tot = 0;
            lc_lora_param *ps = lc_model_lora(f.m, &np);
            for (size_t k = 0; k < np; k++) tot += (size_t)((ps[k].in + ps[k].out) * ps[k].r);
            float *g0 = malloc(tot * 4), *g1 = malloc(tot * 4);
            double l0 = recompute_step(&f, 0, 0, g0, tot);
            int same = 0, tried = 0;
            for (size_t k = 0; k < sizeof sets / sizeof *sets; k++) {
                if (sets[k][0] > n || sets[k][1] > n) continue;
                double l1 = recompute_step(&f, sets[k][0], sets[k][1], g1, tot);
                bool eq = l1 == l0 && !memcmp(g0, g1, tot * 4);
                CHECK_MSG(eq, "%s (%s adapted) recompute (%d, %d): loss %.10g vs %.10g, gradients %s", NAMES[i],
                          all ? "all" : "2", sets[k][0], sets[k][1], l1, l0, memcmp(g0, g1, tot * 4) ? "differ" : "same");
                same += eq, tried++;
            }
            // from keeping all to checkpointing, by gate/up recomputed then blocks checkpointed
            // one at a time: memory never grows, and falls from end to end
            size_t prev = (size_t)-1, a0 = lc_model_activation_bytes(f.m, f.B, f.T, 0, 0);
            for (int k = 0; k <= 2 * n; k++) {
                int fu = k <= n ? 0 : k - n, ml = k <= n ? k : n - fu;
                size_t b = lc_model_activation_bytes(f.m, f.B, f.T, fu, ml);
                CHECK_MSG(b <= prev, "%s: (%d, %d) lays out %zu bytes, more than the step before (%zu)", NAMES[i], fu,
                          ml, b, prev);
                prev = b;
            }
            size_t ck = lc_model_activation_bytes(f.m, f.B, f.T, -1, 0), mid = lc_model_activation_bytes(f.m, f.B, f.T, 1, n - 1);
            if (n >= 3) CHECK(ck < mid && mid < a0); // (n - 1, 1) is checkpointing: the top block keeps only x
            else CHECK(ck <= mid && mid <= a0);
            int fu = -2, ml = -2;
            CHECK_OK(lc_model_fit_recompute(f.m, f.B, f.T, a0, &fu, &ml));
            CHECK_MSG(fu == 0 && ml <= 1, "%s: everything fits, got (%d, %d)", NAMES[i], fu, ml);
            CHECK_OK(lc_model_fit_recompute(f.m, f.B, f.T, mid, &fu, &ml));
            CHECK_MSG(lc_model_activation_bytes(f.m, f.B, f.T, fu, ml) <= mid && (fu > 0 || ml > 1 || mid == a0),
                      "%s: budget of (1, %d) gave (%d, %d)", NAMES[i], n - 1, fu, ml);
            CHECK_OK(lc_model_fit_recompute(f.m, f.B, f.T, ck, &fu, &ml));
            CHECK_MSG(lc_model_activation_bytes(f.m, f.B, f.T, fu, ml) == ck,
                      "%s: budget of checkpointing gave (%d, %d)", NAMES[i], fu, ml);
            CHECK_MSG(lc_model_fit_recompute(f.m, f.B, f.T, ck - 1, &fu, &ml) == -1, "%s: below checkpointing fits",
                      NAMES[i]);
            printf("  %s, %d of %d blocks adapted: %d recompute settings, the same loss and gradient bits; "
                   "activations: all kept %zu, (1, %d) %zu, checkpointing %zu bytes\n",
                   NAMES[i], n, (int)lc_model_cfg(f.m)->num_hidden_layers, tried, a0, n - 1, mid, ck);
            CHECK_EQ_INT(same, tried);
            f.m->be->lora_group_rows = rows;
            free(g0), free(g1);
            close_fixture(&f);
        }
}

/* lc_model_greedy's callback: records the tokens, stops at the stop-th. */
typedef struct {
    int32_t got[64];
    int n, stop;
} greedy_rec;

static int rec_token(void *ctx, int32_t id) {
    greedy_rec *r = ctx;
    if (r->n < 64) r->got[r->n] = id;
    return ++r->n == r->stop;
}

/* An ->argmax on the host for a backend without one (CPU: its memory is the host's and
 * its ops have run when they return), so lc_model_greedy's queued path runs here too. */
static int32_t host_slots[LC_ARGMAX_SLOTS];
static void host_argmax(lc_backend *be, int32_t *dst, const float *lg, int64_t V, int slot) {
    (void)be;
    int32_t best = 0;
    for (int64_t v = 1; v < V; v++) best = lg[v] > lg[best] ? (int32_t)v : best;
    dst[0] = host_slots[slot] = best;
}
static int host_argmax_read(lc_backend *be, int slot, int32_t *id) {
    (void)be;
    *id = host_slots[slot];
    return 0;
}

/* lc_model_greedy from the prompt against the reference's greedy tokens (want[0] fed, the
 * rest handed over), queued (->argmax; the host's stand-in where the backend has none) and
 * with every step's logits read back (LORAC_GREEDY_AHEAD=0): the same tokens, the cache
 * holding what was fed; stopped half way, the cache continues with the reference's logits. */
static void check_greedy_loop(fixture *f, const char *name, const int32_t *prompt, int np, const int32_t *want,
                              int ng, const double *rl) {
    lc_backend *be = f->m->be;
    bool stand_in = !be->argmax;
    float *lg = malloc((size_t)f->V * 4);
    for (int mode = 0; mode < 2; mode++) {
        if (mode == 1) setenv("LORAC_GREEDY_AHEAD", "0", 1);
        if (stand_in && mode == 0) be->argmax = host_argmax, be->argmax_read = host_argmax_read;
        for (int stop = 0; stop < 2; stop++) {
            lc_kv_cache *kv;
            CHECK_OK(lc_kv_cache_create(f->m, 32, &kv));
            CHECK_OK(lc_model_step(f->m, kv, prompt, np, lg));
            greedy_rec r = {{0}, 0, stop ? ng / 2 : -1};
            CHECK_OK(lc_model_greedy(f->m, kv, want[0], ng - 1, rec_token, &r));
            int n = stop ? ng / 2 : ng - 1;
            CHECK_MSG(r.n == n, "%s %s: %d tokens handed over, want %d", name, mode ? "read back" : "queued", r.n, n);
            bool same = r.n == n;
            for (int i = 0; i < n && same; i++) same = r.got[i] == want[i + 1];
            CHECK_MSG(same, "%s %s: greedy tokens differ from the reference's", name, mode ? "read back" : "queued");
            CHECK_EQ_INT(lc_kv_cache_len(kv), np + n);
            if (stop && rl) { // the last token handed over was not fed: feed it, the reference's next logits
                CHECK_OK(lc_model_step(f->m, kv, &want[n], 1, lg));
                double e = rel_err(lg, rl + (size_t)(n + 1) * f->V, (size_t)f->V, NULL);
                CHECK_MSG(e < 1e-5 * TOL, "%s after a stop: logits rel err %.3e", name, e);
            }
            lc_kv_cache_free(kv);
        }
        if (stand_in) be->argmax = NULL, be->argmax_read = NULL;
        unsetenv("LORAC_GREEDY_AHEAD");
    }
    printf("  %s: lc_model_greedy queued and read back: the reference's tokens, stopped half way too%s\n", name,
           stand_in ? " (host argmax standing in)" : "");
    free(lg);
}

static void test_greedy(void) {
    if (!fixtures_present()) SKIP("tests/fixtures/model-ref is absent");
    for (int i = 0; i < 3; i++) {
        fixture f;
        if (!open_fixture(&f, NAMES[i], true)) {
            CHECK_MSG(0, "%s: fixture", NAMES[i]);
            close_fixture(&f);
            continue;
        }
        int32_t prompt[64], want[64];
        int np = 0, ng = 0;
        for (const cJSON *v = cJSON_GetObjectItem(f.j, "gen_prompt")->child; v; v = v->next) prompt[np++] = (int32_t)v->valuedouble;
        for (const cJSON *v = cJSON_GetObjectItem(f.j, "gen_tokens")->child; v; v = v->next) want[ng++] = (int32_t)v->valuedouble;
        const double *rl = ref64(&f, "gen_logits", (size_t)(ng * f.V));
        CHECK(rl != NULL);
        lc_kv_cache *kv;
        CHECK_OK(lc_kv_cache_create(f.m, 32, &kv));
        float *lg = malloc((size_t)f.V * 4);
        CHECK_OK(lc_model_step(f.m, kv, prompt, np, lg));
        double worst = 0;
        for (int s = 0; s < ng && rl; s++) {
            double e = rel_err(lg, rl + (size_t)s * f.V, (size_t)f.V, NULL);
            worst = fmax(worst, e);
            CHECK_MSG(e < 1e-5 * TOL, "%s step %d logits rel err %.3e", NAMES[i], s, e);
            int32_t best = 0;
            for (int64_t v = 1; v < f.V; v++) best = lg[v] > lg[best] ? (int32_t)v : best;
            CHECK_MSG(best == want[s], "%s step %d: greedy token %d, reference %d", NAMES[i], s, best, want[s]);
            CHECK_OK(lc_model_step(f.m, kv, &best, 1, lg));
        }
        CHECK_EQ_INT(lc_kv_cache_len(kv), np + ng);
        printf("  %s: %d greedy tokens equal, worst step logits rel err %.2e\n", NAMES[i], ng, worst);
        // a full cache refuses more
        int32_t many[32] = {0};
        CHECK_FAILS(lc_model_step(f.m, kv, many, 32, lg), "capacity");
        free(lg);
        lc_kv_cache_free(kv);
        if (ng >= 4) check_greedy_loop(&f, NAMES[i], prompt, np, want, ng, rl);
        else CHECK_MSG(0, "%s: the fixture has %d greedy tokens, the loop check needs 4", NAMES[i], ng);
        close_fixture(&f);
    }
}

static void test_memory_plan(void) {
    if (!fixtures_present()) SKIP("tests/fixtures/model-ref is absent");
    fixture f;
    if (!open_fixture(&f, "tiny-mistral", true)) {
        CHECK(0);
        close_fixture(&f);
        return;
    }
    for (int ck = 0; ck < 2; ck++) {
        lc_memory_plan p;
        CHECK_OK(lc_model_memory_plan(lc_model_cfg(f.m), lc_model_lora_config(f.m), f.B, f.T, ck, &p));
        lc_model_set_grad_checkpoint(f.m, ck);
        lc_batch bt = {f.B, f.T, f.tok, f.tgt, 0};
        double loss;
        int64_t nt;
        CHECK_OK(lc_model_forward_backward(f.m, &bt, &loss, &nt));
        CHECK_EQ_INT(p.activations, f.m->ar[LC_MODE_TRAIN].floats * sizeof(float));
        size_t np, tot = 0;
        lc_lora_param *ps = lc_model_lora(f.m, &np);
        for (size_t k = 0; k < np; k++) tot += (size_t)((ps[k].in + ps[k].out) * ps[k].r) * 4;
        CHECK_EQ_INT(p.adapters, tot);
        CHECK_EQ_INT(p.optimizer, 2 * tot);
        CHECK_EQ_INT(p.weights, (size_t)lc_config_param_count(lc_model_cfg(f.m)) * 4);
        printf("  plan (ckpt %d): weights %zu, adapters %zu, activations %zu bytes\n", ck, p.weights,
               p.adapters, p.activations);
    }
    { // evaluation lays out in the training arena's buffer (the two never run at once): a
        // loss between two training steps leaves the second step's loss and gradients the
        // first's bits, and the model holds one buffer, of the larger layout
        lc_model_set_grad_checkpoint(f.m, false);
        lc_batch bt = {f.B, f.T, f.tok, f.tgt, 0};
        size_t np;
        lc_lora_param *ps = lc_model_lora(f.m, &np);
        size_t n = (size_t)(ps[0].in * ps[0].r), m = (size_t)(ps[0].out * ps[0].r);
        float *ga = malloc(n * 4), *gb = malloc(m * 4);
        double l1 = NAN, l2 = NAN, le = NAN;
        int64_t nt;
        CHECK_OK(lc_model_forward_backward(f.m, &bt, &l1, &nt));
        memcpy(ga, ps[0].ga, n * 4), memcpy(gb, ps[0].gb, m * 4);
        CHECK_OK(lc_model_loss(f.m, &bt, &le, &nt));
        CHECK_OK(lc_model_forward_backward(f.m, &bt, &l2, &nt));
        const lc_arena *tr = &f.m->ar[LC_MODE_TRAIN], *ev = &f.m->ar[LC_MODE_EVAL];
        CHECK_MSG(l1 == l2 && !memcmp(ga, ps[0].ga, n * 4) && !memcmp(gb, ps[0].gb, m * 4),
                  "a loss between two steps changed the second (%.9g vs %.9g)", l1, l2);
        CHECK_MSG(tr->base == f.m->arena && ev->base == f.m->arena, "the arenas do not share one buffer");
        size_t big = tr->floats > ev->floats ? tr->floats : ev->floats;
        CHECK_EQ_INT(f.m->arena_cap, big);
        printf("  training %zu and evaluation %zu bytes in one buffer of %zu; a loss between two steps: the same "
               "loss and gradient bits\n", tr->floats * 4, ev->floats * 4, f.m->arena_cap * 4);
        free(ga), free(gb);
    }
    lc_memory_plan p0, p1;
    CHECK_OK(lc_model_memory_plan(lc_model_cfg(f.m), lc_model_lora_config(f.m), 8, 512, false, &p0));
    CHECK_OK(lc_model_memory_plan(lc_model_cfg(f.m), lc_model_lora_config(f.m), 8, 512, true, &p1));
    CHECK(p1.activations < p0.activations);
    CHECK_FAILS(lc_model_memory_plan(lc_model_cfg(f.m), NULL, 0, 5, false, &p0), "positive");
    close_fixture(&f);
}

static void test_bad_input(void) {
    if (!fixtures_present()) SKIP("tests/fixtures/model-ref is absent");
    lc_model *m;
    CHECK_FAILS(lc_model_load("tests/fixtures/models/no-such-model", &m), "no-such-model");
    fixture f;
    if (!open_fixture(&f, "tiny-qwen2", false)) {
        CHECK(0);
        close_fixture(&f);
        return;
    }
    int32_t tok[4] = {1, 2, 3, 256}, tgt[4] = {2, 3, -1, -1};
    lc_batch bt = {1, 4, tok, tgt, 0};
    double loss;
    int64_t nt;
    CHECK_FAILS(lc_model_forward_backward(f.m, &bt, &loss, &nt), "add_lora");
    CHECK_FAILS(lc_model_loss(f.m, &bt, &loss, &nt), "outside the model's vocabulary");
    tok[3] = 4, tgt[1] = -2;
    CHECK_FAILS(lc_model_loss(f.m, &bt, &loss, &nt), "must be -1");
    lc_lora_config lc;
    lc_lora_config_default(&lc);
    lc.rank = 0;
    CHECK_FAILS(lc_model_add_lora(f.m, &lc, 1), "rank");
    lc_lora_config_default(&lc);
    lc.keys = 0;
    CHECK_FAILS(lc_model_add_lora(f.m, &lc, 1), "no keys");
    lc_lora_config_default(&lc);
    CHECK_OK(lc_model_add_lora(f.m, &lc, 1)); // num_layers 16 capped at 2
    CHECK_EQ_INT(lc_model_lora_config(f.m)->num_layers, 2);
    CHECK_FAILS(lc_model_add_lora(f.m, &lc, 1), "already");
    CHECK_EQ_INT(lc_lora_key_parse("lm_head"), -1);
    close_fixture(&f);
}

/* Whole training trajectories: several Adam/AdamW updates of every adapter against
 * transformers + PEFT + torch.optim in float64 (tests/reference/make_train_fixtures.py).
 * The losses before each update must agree to 1e-5 relative, as the single-step loss
 * does; the adapters after the last update to 1e-4 of their largest value: Adam divides
 * by sqrt(v), which turns the ~1e-6 relative rounding of fp32 gradients into larger
 * update differences where a gradient is near zero, and they add up over the steps. The
 * worst measured is 3.9e-5 (tiny-mistral, 6 steps, attention summed in sgemm's order;
 * 9.8e-6 with the scalar loops), so the bound leaves a factor of 2.5 over the worst. */
static void check_trajectory(const char *case_name) {
    char p[256];
    cJSON *c;
    snprintf(p, sizeof p, "tests/fixtures/train-ref/%s.json", case_name);
    if (lc_json_parse_file(p, 1 << 20, &c) < 0) SKIP("%s", lc_errmsg());
    fixture f;
    const char *model = cJSON_GetObjectItem(c, "model")->valuestring;
    if (!open_fixture(&f, model, true)) {
        CHECK_MSG(0, "%s: cannot open the %s fixture", case_name, model);
        cJSON_Delete(c);
        return;
    }
    lc_safetensors fin;
    snprintf(p, sizeof p, "tests/fixtures/train-ref/%s.safetensors", case_name);
    CHECK_OK(lc_st_open(&fin, p));
    bool masked = cJSON_IsTrue(cJSON_GetObjectItem(c, "masked"));
    bool adamw = !strcmp(cJSON_GetObjectItem(c, "optimizer")->valuestring, "adamw");
    lc_adam_config ac = lc_adam_defaults(adamw ? LC_OPTIM_ADAMW : LC_OPTIM_ADAM);
    ac.weight_decay = jnum(c, "weight_decay");
    double lr = jnum(c, "lr");
    size_t np;
    lc_lora_param *ps = lc_model_lora(f.m, &np);
    float **mom = calloc(4 * np, sizeof *mom);
    for (size_t i = 0; i < np; i++) {
        mom[4 * i] = calloc((size_t)(ps[i].in * ps[i].r), 4);
        mom[4 * i + 1] = calloc((size_t)(ps[i].in * ps[i].r), 4);
        mom[4 * i + 2] = calloc((size_t)(ps[i].r * ps[i].out), 4);
        mom[4 * i + 3] = calloc((size_t)(ps[i].r * ps[i].out), 4);
    }
    lc_batch b = {f.B, f.T, f.tok, masked ? f.tgtm : f.tgt, 0};
    int step = 0;
    for (const cJSON *l = cJSON_GetObjectItem(c, "losses")->child; l; l = l->next, step++) {
        double loss;
        int64_t ntok;
        CHECK_OK(lc_model_forward_backward(f.m, &b, &loss, &ntok));
        double rel = fabs(loss - l->valuedouble) / fabs(l->valuedouble);
        CHECK_MSG(rel < 1e-5 * TOL, "%s step %d: loss %.9f, reference %.9f", case_name, step, loss, l->valuedouble);
        for (size_t i = 0; i < np; i++) {
            lc_adam_update(&ac, lr, step + 1, ps[i].a, ps[i].ga, mom[4 * i], mom[4 * i + 1],
                           (size_t)(ps[i].in * ps[i].r));
            lc_adam_update(&ac, lr, step + 1, ps[i].b, ps[i].gb, mom[4 * i + 2], mom[4 * i + 3],
                           (size_t)(ps[i].r * ps[i].out));
        }
    }
    double worst = 0;
    for (size_t i = 0; i < np; i++) {
        char an[160], bn[160];
        snprintf(an, sizeof an, "%s.lora_a", ps[i].name);
        snprintf(bn, sizeof bn, "%s.lora_b", ps[i].name);
        const lc_tensor *ta = lc_st_find(&fin, an), *tb = lc_st_find(&fin, bn);
        if (!ta || !tb || ta->dtype != LC_DT_F64 || tb->dtype != LC_DT_F64) {
            CHECK_MSG(0, "%s: final adapter %s missing", case_name, ps[i].name);
            continue;
        }
        double ea = rel_err(ps[i].a, ta->data, ta->numel, NULL);
        double eb = rel_err(ps[i].b, tb->data, tb->numel, NULL);
        worst = ea > worst ? ea : worst;
        worst = eb > worst ? eb : worst;
        CHECK_MSG(ea < 1e-4 * TOL && eb < 1e-4 * TOL, "%s: %s after %d steps: A %.2e, B %.2e", case_name,
                  ps[i].name, step, ea, eb);
    }
    printf("  %s: %d steps, worst adapter difference %.2e of the largest value\n", case_name, step, worst);
    for (size_t i = 0; i < 4 * np; i++) free(mom[i]);
    free(mom);
    lc_st_close(&fin);
    close_fixture(&f);
    cJSON_Delete(c);
}

/* ‖g − ref‖ / ‖ref‖ over every adapter gradient of f's model against the F32 reference
 * tensors prefix.<name>.lora_a / .lora_b; *worst: the largest per-tensor max-abs error over
 * the tensor's largest magnitude. Negative when a reference tensor is missing. */
static double grads_err_l2(fixture *f, const char *prefix, double *worst) {
    size_t np;
    lc_lora_param *ps = lc_model_lora(f->m, &np);
    double num = 0, den = 0;
    *worst = 0;
    for (size_t i = 0; i < np; i++)
        for (int ab = 0; ab < 2; ab++) {
            char n[200];
            snprintf(n, sizeof n, "%s.%s.lora_%c", prefix, ps[i].name, ab ? 'b' : 'a');
            const lc_tensor *t = lc_st_find(&f->ref, n);
            size_t k = (size_t)(ps[i].r * (ab ? ps[i].out : ps[i].in));
            if (!t || t->dtype != LC_DT_F32 || t->numel != k) return printf("  %s missing or malformed\n", n), -1;
            const float *g = ab ? ps[i].gb : ps[i].ga, *r = t->data;
            double md = 0, mr = 0;
            for (size_t j = 0; j < k; j++) {
                double d = (double)g[j] - r[j];
                num += d * d, den += (double)r[j] * r[j];
                md = fmax(md, fabs(d)), mr = fmax(mr, fabs((double)r[j]));
            }
            *worst = fmax(*worst, mr > 0 ? md / mr : INFINITY);
        }
    return den > 0 ? sqrt(num / den) : INFINITY;
}

/* A training step at many rows (2 × 160 tokens, the second padded after 131) on a bf16
 * `lorac init` model (hidden 128, heads of 64, 3 blocks, rank 4 on every projection; made
 * here again with the fixture's command and checked against its SHA-256) against
 * transformers + PEFT in float64 on the same weights (tests/fixtures/model-ref/tiny-rows.*,
 * tests/reference/make_rows_fixture.py). On the CPU (float32 activations over the bf16
 * weights) the loss within 1e-6 and the gradients within 1e-5 (norm-wise and per tensor),
 * as the float32 fixtures'. On the card, 320 rows take every bf16 path of the 7B shape's
 * steps (->lora_group_rows: the adapters grouped, the activations and the backward's dy
 * kept as bf16, the adapters' input gradients folded into the frozen products, gate/up
 * written as bf16): their error against float64 is held to twice what PyTorch's own bf16
 * path (bf16 weights, float32 adapters, autocast, measured by the script on an H100) makes
 * on the same step. */
static void test_rows(void) {
    if (!fixtures_present()) SKIP("tests/fixtures/model-ref is absent");
    char dir[] = "/tmp/lorac-test-rows-XXXXXX", out[300], st[340];
    if (!mkdtemp(dir)) SKIP("cannot make a temporary folder");
    snprintf(out, sizeof out, "%s/m", dir);
    char *argv[] = {"init", "--config", REF "tiny-rows.config.json", "--tokenizer",
                    "tests/fixtures/tokenizers/bl-gpt2/tokenizer.json", "--out", out, "--dtype", "bf16", "--seed", "5",
                    "-q", NULL};
    fflush(stdout);
    CHECK_EQ_INT(cmd_init(12, argv), 0);
    fixture f;
    bool ok = open_fixture_at(&f, "tiny-rows", out, true);
    CHECK(ok);
    if (ok) {
        snprintf(st, sizeof st, "%s/model.safetensors", out);
        char hex[65] = "";
        size_t len = 0;
        char *bytes = NULL;
        if (lc_read_file(st, (size_t)1 << 30, &bytes, &len) == 0) {
            lc_sha256 h;
            lc_sha256_init(&h);
            lc_sha256_update(&h, bytes, len);
            lc_sha256_final_hex(&h, hex);
            free(bytes);
        }
        const cJSON *want = cJSON_GetObjectItem(f.j, "model_sha256");
        CHECK_MSG(want && !strcmp(hex, want->valuestring),
                  "lorac init made another model than the fixture's (sha256 %s, fixture %s)", hex,
                  want ? want->valuestring : "none");
        lc_batch bt = {f.B, f.T, f.tok, f.tgt, 0};
        double loss = 0, worst = 0;
        int64_t nt = 0;
        bool card = strcmp(fixture_device, "cpu") != 0;
        // the CPU in float32 first (its bf16 products, where the processor has them, below)
        if (!card) lc_model_set_bf16_matmul(f.m, false);
        CHECK_OK(lc_model_forward_backward(f.m, &bt, &loss, &nt));
        CHECK_EQ_INT(nt, jint(f.j, "ntok"));
        double lref = jnum(f.j, "loss"), e = grads_err_l2(&f, "grad", &worst);
        double pe = jnum(f.j, "bf16_grad_rel_err_l2"), pw = jnum(f.j, "bf16_grad_rel_err_max");
        double pl = fabs(jnum(f.j, "loss_bf16") - lref) / lref;
        printf("  tiny-rows (%lld rows, %s): loss %.9f (ref %.9f, %.1e), gradients rel err %.2e norm-wise, %.2e "
               "largest per tensor; PyTorch's bf16 path on the same step: loss %.1e, gradients %.2e / %.2e\n",
               (long long)(f.B * f.T), fixture_device, loss, lref, fabs(loss - lref) / lref, e, worst, pl, pe, pw);
        if (!card) {
            CHECK_MSG(fabs(loss - lref) <= 1e-6 * lref && e >= 0 && e <= 1e-5 && worst <= 1e-5,
                      "tiny-rows on the CPU: loss %.10g vs %.10g, gradients %.3e / %.3e (bound 1e-5)", loss, lref, e,
                      worst);
            // a processor with bf16 dot products (AVX512-BF16) multiplies the bf16 weights in
            // bf16 by default: held to the card's bound
            if (lc_model_set_bf16_matmul(f.m, true)) {
                CHECK_OK(lc_model_forward_backward(f.m, &bt, &loss, &nt));
                e = grads_err_l2(&f, "grad", &worst);
                printf("  tiny-rows (cpu, bf16 products): loss %.9f (%.1e), gradients rel err %.2e / %.2e (bounds "
                       "twice PyTorch's bf16 path)\n", loss, fabs(loss - lref) / lref, e, worst);
                CHECK_MSG(fabs(loss - lref) <= fmax(2 * pl, 1e-4) * lref && e >= 0 && e <= 2 * pe && worst <= 2 * pw,
                          "tiny-rows on the CPU in bf16: loss %.10g vs %.10g, gradients %.3e / %.3e (bounds %.3e / "
                          "%.3e)", loss, lref, e, worst, 2 * pe, 2 * pw);
            } else {
                printf("  tiny-rows (cpu): this processor has no bf16 dot products: float32 only\n");
            }
        } else {
            CHECK_MSG(fabs(loss - lref) <= fmax(2 * pl, 1e-4) * lref && e >= 0 && e <= 2 * pe && worst <= 2 * pw,
                      "tiny-rows on the card: loss %.10g vs %.10g, gradients %.3e / %.3e (bounds twice PyTorch's bf16 "
                      "path: %.3e / %.3e)", loss, lref, e, worst, 2 * pe, 2 * pw);
        }
        // every block checkpointed: the recompute repeats the forward's ops on the same inputs,
        // so the same loss and gradient bits (on the card at these many rows too)
        size_t np, ng = 0;
        lc_lora_param *ps = lc_model_lora(f.m, &np);
        for (size_t i = 0; i < np; i++) ng += (size_t)((ps[i].in + ps[i].out) * ps[i].r);
        float *g0 = malloc(ng * 4);
        for (size_t i = 0, o = 0; i < np; i++) {
            memcpy(g0 + o, ps[i].ga, (size_t)(ps[i].in * ps[i].r) * 4), o += (size_t)(ps[i].in * ps[i].r);
            memcpy(g0 + o, ps[i].gb, (size_t)(ps[i].r * ps[i].out) * 4), o += (size_t)(ps[i].r * ps[i].out);
        }
        lc_model_set_grad_checkpoint(f.m, true);
        double lc = 0;
        CHECK_OK(lc_model_forward_backward(f.m, &bt, &lc, &nt));
        bool same = lc == loss;
        for (size_t i = 0, o = 0; i < np; i++) {
            same = same && !memcmp(g0 + o, ps[i].ga, (size_t)(ps[i].in * ps[i].r) * 4), o += (size_t)(ps[i].in * ps[i].r);
            same = same && !memcmp(g0 + o, ps[i].gb, (size_t)(ps[i].r * ps[i].out) * 4), o += (size_t)(ps[i].r * ps[i].out);
        }
        lc_model_set_grad_checkpoint(f.m, false);
        printf("  tiny-rows checkpointed: loss and gradients %s\n", same ? "the same bits" : "DIFFER");
        CHECK_MSG(same, "tiny-rows checkpointed: loss %.10g vs %.10g, or the gradients differ", lc, loss);
        free(g0);
    }
    close_fixture(&f);
    snprintf(st, sizeof st, "rm -rf '%s'", dir);
    CHECK_EQ_INT(system(st), 0);
}

static void test_trajectory_mistral_adamw(void) { check_trajectory("tiny-mistral-adamw"); }
static void test_trajectory_llama_adam_masked(void) { check_trajectory("tiny-llama-adam-masked"); }
static void test_trajectory_qwen2_adamw(void) { check_trajectory("tiny-qwen2-adamw"); }

int main(void) {
#ifdef TEST_NEEDS_GPU
    lc_backend *probe = lc_backend_new(TEST_DEVICE);
    if (!probe) {
        printf("  skip: every test: %s\n", lc_errmsg());
        RUN(test_skipped_without_gpu);
        return t_summary();
    }
    probe->free(probe);
#endif
    RUN(test_rope_inv_freq);
    RUN(test_logits_base);
    RUN(test_logits_lora);
    RUN(test_loss_and_grads);
    RUN(test_grad_checkpoint);
    RUN(test_recompute);
    RUN(test_greedy);
    RUN(test_memory_plan);
    RUN(test_bad_input);
    RUN(test_trajectory_mistral_adamw);
    RUN(test_trajectory_llama_adam_masked);
    RUN(test_trajectory_qwen2_adamw);
    RUN(test_rows);
#ifdef TEST_EXTRA
    TEST_EXTRA();
#endif
    return t_summary();
}
