/*
 * trainer.c — the LoRA training loop. See trainer.h.
 *
 * Sections: memory (plan and the host's RAM), evaluation, checkpoints, the loop.
 * Step numbering follows mlx-lm: iterations are 1-based ("Iter 1" is after the first
 * update); validation runs at iteration 1, every steps_per_eval and at the end; train
 * reports every steps_per_report and at the end; adapters are saved every save_every
 * and at the end. A step's dropout seed is derived from (seed, step), so a resumed run
 * draws what the uninterrupted run drew.
 */
#include "train/trainer.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "core/error.h"
#include "core/file.h"
#include "core/json.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/rng.h"
#include "core/testhook.h"
#include "hub/hub.h"
#include "io/adapters.h"
#include "model/lora_io.h"
#include "train/optim.h"
#include "train/plot.h"

/* ---------------------------------------------------------------- memory */

static double peak_rss_gb(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
    return (double)ru.ru_maxrss * 1024.0 / 1e9; /* ru_maxrss is in KiB on Linux */
}

/* MemAvailable from /proc/meminfo in bytes, or 0 when unknown. */
static size_t mem_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    size_t kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %zu kB", &kb) == 1) break;
    fclose(f);
    return kb * 1024;
}

static double gib(size_t b) { return (double)b / (1024.0 * 1024.0 * 1024.0); }

/* What training keeps for the backward, in words ("everything kept", "6 of 32 blocks
 * checkpointed, gate/up recomputed in 5", ...), from lc_model_set_recompute's normalized
 * counts: mlp counts the top block, which recomputes nothing. */
static void recompute_words(char *buf, size_t n, int full, int mlp, int adapted) {
    int g = mlp - 1;
    if (full >= adapted) snprintf(buf, n, "checkpointing");
    else if (full > 0 && g > 0)
        snprintf(buf, n, "%d of %d blocks checkpointed, gate/up recomputed in %d", full, adapted, g);
    else if (full > 0) snprintf(buf, n, "%d of %d blocks checkpointed", full, adapted);
    else if (g > 0) snprintf(buf, n, "gate/up recomputed in %d of %d blocks", g, adapted);
    else snprintf(buf, n, "everything kept");
}

/* Prints the plan and sets what the backward keeps; fails (before anything big is
 * allocated) when it cannot fit. The mapped weights are paged in from the file as
 * needed and count against RAM only as the page cache allows, so the check is on what
 * must be resident: adapters, gradients, optimizer and activations, plus the weights
 * when RAM holds them. Where it would not fit — memory_limit (the whole plan), or on a
 * GPU the card's free memory; on the host the RAM available — and grad_checkpoint is
 * off, the backward keeps less: the least recomputation (blocks checkpointed whole, or
 * only their gate and up recomputed) that fits (lc_model_fit_recompute). */
static int plan_memory(lc_model *m, const lc_lora_config *lc, const lc_train_options *o, int64_t T,
                       int64_t T_eval) {
    const lc_model_config *cfg = lc_model_cfg(m);
    int64_t B = o->batch_size;
    lc_memory_plan p;
    if (lc_model_memory_plan(cfg, lc, B, T, o->grad_checkpoint, &p) != 0) return -1;
    if (lc_model_train_prepare(m) != 0) return -1; // what the first step would move, moved now
    /* the weights as the model really holds them (the config's estimate may differ: which
     * tensors a quantized folder left in bf16, nested NF4 maxima, ...; the spare rows and
     * columns the adapters fold into, once moved) */
    size_t held = lc_model_weight_bytes(m), owned = lc_model_owned_weight_bytes(m);
    /* the backend's scratch; the evaluation arena (T_eval 0: no validation or test set)
     * shares the training arena's buffer, so it counts only where it is the larger (below) */
    size_t scratch = lc_model_scratch_bytes(m, B, T);
    size_t ev = T_eval > 0 ? lc_model_eval_bytes(m, B, T_eval) : 0;
    size_t fixed = held + p.adapters + p.gradients + p.optimizer + scratch; // all but the activations
    /* where the run lives: on a card, what is not allocated yet (the activations, the
     * optimizer's moments, the backend's scratch) must fit its free memory; on the host,
     * all but the mapped weights must fit the RAM available (weights quantized at load
     * are already allocated, and MemAvailable, read now, no longer counts them) */
    size_t dfree = 0, dtotal = 0, room = (size_t)-1;
    int on_card = lc_model_device_memory(m, &dfree, &dtotal);
    if (on_card < 0) return -1;
    char where[96] = "";
    if (on_card == 1) {
        size_t later = p.optimizer + scratch; // the weights, adapters and gradients are there
        room = dfree > later ? dfree - later : 0;
        snprintf(where, sizeof where, "the card's %.2f GiB free", gib(dfree));
    } else {
        size_t avail = mem_available(), other = p.adapters + p.gradients + p.optimizer + scratch;
        if (avail) {
            room = avail > other ? avail - other : 0;
            snprintf(where, sizeof where, "the %.2f GiB of RAM available", gib(avail));
        }
    }
    size_t limit = o->memory_limit > 0 ? (size_t)(o->memory_limit * 1073741824.0) : 0;
    if (limit && fixed >= limit)
        return lc_fail("memory_limit %g GiB is below what the run needs besides its activations "
                       "(weights %.2f GiB, adapters, gradients and optimizer %.2f GiB, evaluation "
                       "and scratch %.2f GiB): raise memory_limit, or quantize the base (quantize: nf4)",
                       o->memory_limit, gib(held), gib(p.adapters + p.gradients + p.optimizer), gib(scratch));
    size_t budget = room;
    char why[128];
    snprintf(why, sizeof why, "%s", where);
    if (limit && limit - fixed < budget)
        budget = limit - fixed, snprintf(why, sizeof why, "memory_limit %g GiB", o->memory_limit);
    int adapted = lc_model_adapted_blocks(m);
    int full = o->grad_checkpoint ? -1 : 0, mlp = 0;
    if (!o->grad_checkpoint && lc_model_activation_bytes(m, B, T, 0, 0) > budget)
        lc_model_fit_recompute(m, B, T, budget, &full, &mlp); // checked below
    size_t acts = lc_model_activation_bytes(m, B, T, full, mlp);
    if (acts > budget)
        return lc_fail("the activations of batch %lld x %lld tokens do not fit %s even with every block "
                       "checkpointed (%.2f GiB; %.2f GiB left for them): lower batch_size (now %lld) or "
                       "max_seq_length (now %lld)%s",
                       (long long)B, (long long)T, why, gib(acts), gib(budget), (long long)B,
                       (long long)o->max_seq_length, limit ? ", or raise memory_limit" : "");
    if (ev > budget)
        return lc_fail("the evaluation batches of %lld x %lld tokens do not fit %s (%.2f GiB; %.2f GiB left for "
                       "them): lower batch_size (now %lld) or max_seq_length (now %lld)%s",
                       (long long)B, (long long)T_eval, why, gib(ev), gib(budget), (long long)B,
                       (long long)o->max_seq_length, limit ? ", or raise memory_limit" : "");
    if (ev > acts) scratch += ev - acts, fixed += ev - acts; // the shared buffer takes evaluation's size
    lc_model_set_recompute(m, full, mlp);
    p.total = fixed + acts;
    p.weights = held, p.activations = acts;
    char qn[64] = "mapped", how[96], keep[128];
    if (cfg->quant.fmt != LC_QUANT_NONE) lc_quant_name(&cfg->quant, qn, sizeof qn);
    if (owned) snprintf(how, sizeof how, "%s, %.2f GiB quantized at load into memory", qn, gib(owned));
    else snprintf(how, sizeof how, "%s", qn);
    int fn = full < 0 ? adapted : full;
    recompute_words(keep, sizeof keep, fn, mlp, adapted);
    bool fitted = !o->grad_checkpoint && (fn > 0 || mlp > 1);
    printf("Memory plan (batch %lld x %lld tokens, %s%s%s): weights %.2f GiB (%s), adapters %.3f GiB, "
           "gradients %.3f GiB, optimizer %.3f GiB, activations %.2f GiB, evaluation and scratch "
           "%.2f GiB; total %.2f GiB\n",
           (long long)B, (long long)T, keep, fitted ? " to fit " : "", fitted ? why : "", gib(p.weights), how,
           gib(p.adapters), gib(p.gradients), gib(p.optimizer), gib(p.activations), gib(scratch), gib(p.total));
    return 0;
}

/* ---------------------------------------------------------------- evaluation */

int lc_eval_loss(lc_model *m, const lc_dataset *d, int64_t B, int64_t max_seq_length,
                 int64_t max_batches, double *loss, int64_t *ntok) {
    *loss = 0;
    *ntok = 0;
    if (d->n == 0) return lc_fail("evaluation: the data set has no examples");
    size_t *idx = xmalloc(d->n * sizeof *idx);
    size_t n = lc_dataset_sorted(d, idx);
    lc_batch_buf bb = {0};
    double sum = 0;
    int64_t tok = 0;
    int rc = 0;
    int64_t nb = 0;
    for (size_t i = 0; i < n && (max_batches < 0 || nb < max_batches); i += (size_t)B, nb++) {
        size_t k = n - i < (size_t)B ? n - i : (size_t)B;
        lc_batch_fill(d, idx + i, k, max_seq_length, &bb);
        lc_batch b = {bb.B, bb.T, bb.tokens, bb.targets, 0};
        double s;
        int64_t t;
        if ((rc = lc_model_loss(m, &b, &s, &t)) != 0) break;
        sum += s;
        tok += t;
    }
    lc_batch_buf_free(&bb);
    free(idx);
    if (rc != 0) return -1;
    *loss = tok ? sum / (double)tok : 0;
    *ntok = tok;
    return 0;
}

/* ---------------------------------------------------------------- checkpoints */

typedef struct {
    lc_model *m;
    lc_adapter_set view; // the model's adapters, not owned
    lc_lora_moments *mom; // (view.n)
    const lc_train_options *o;
    char *config_json; // the options as adapter_config.json holds them
    int64_t trained_tokens; // target tokens of the updates done, kept across --resume
    char *last_good;        // the newest train state written or resumed from (NULL: none)
} run_state;

/* The first non-finite value of n floats, or -1 when all are finite. */
static ptrdiff_t first_nonfinite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return (ptrdiff_t)i;
    return -1;
}

/* What a user whose run went non-finite should hear after the first clause. */
static int fail_nonfinite(const run_state *rs, int64_t it, const char *what) {
    const lc_train_options *o = rs->o;
    return lc_fail("iteration %lld: %s; stopped without saving, the last good checkpoint is %s; "
                   "try a lower learning_rate (now %g)%s, and check the data",
                   (long long)it, what,
                   rs->last_good ? rs->last_good : "none (nothing was saved yet)", o->learning_rate,
                   o->clip_grad_norm > 0 ? "" : ", gradient clipping (--clip-grad-norm 1.0)");
}

/* Fails, naming the tensor, when any adapter weight is NaN or infinite: such adapters
 * must never replace good ones on disk. */
static int check_finite_adapters(const run_state *rs, int64_t step) {
    for (size_t i = 0; i < rs->view.n; i++) {
        const lc_lora_tensor *t = &rs->view.t[i];
        bool bad_a = first_nonfinite(t->a, (size_t)(t->in * t->r)) >= 0;
        if (bad_a || first_nonfinite(t->b, (size_t)(t->r * t->out)) >= 0) {
            char what[200];
            snprintf(what, sizeof what, "the adapter %s.%s holds NaN or infinite weights", t->name,
                     bad_a ? "lora_a" : "lora_b");
            return fail_nonfinite(rs, step, what);
        }
    }
    return 0;
}

/* Removes what a killed run left behind in dir: temporaries of the atomic writer
 * ("NAME.tmp.XXXXXX", see core/file.c). The finished files are never touched. */
static void remove_stale_temporaries(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *t = strstr(e->d_name, ".tmp.");
        if (!t || t == e->d_name || strlen(t) != 11) continue;
        char *p = lc_path_join(dir, e->d_name);
        if (lc_is_file(p)) unlink(p);
        free(p);
    }
    closedir(d);
}

/* Writes the mlx-lm folder (adapter_config.json, then adapters.safetensors: a kill between
 * the two leaves a config without adapters, never adapters a loader cannot read), a
 * numbered checkpoint when step > 0, the PEFT copy, and the resumable train state. */
static int save_all(run_state *rs, int64_t step, const lc_batcher *bt, bool checkpoint) {
    const char *dir = rs->o->adapter_path;
    if (check_finite_adapters(rs, step) != 0) return -1;
    if (lc_mkdirs(dir) != 0) return -1;
    int rc = lc_adapters_write_mlx_config(dir, &rs->view, rs->config_json);
    if (rc == 0) {
        char *main_path = lc_path_join(dir, "adapters.safetensors");
        rc = lc_adapters_write_mlx(main_path, &rs->view);
        free(main_path);
    }
    if (rc == 0 && checkpoint) {
        char *p = lc_adapters_checkpoint_path(dir, step);
        rc = lc_adapters_write_mlx(p, &rs->view);
        free(p);
    }
    if (rc == 0) {
        char *peft = lc_path_join(dir, "peft");
        rc = lc_adapters_write_peft(peft, &rs->view, rs->o->model);
        free(peft);
    }
    if (rc == 0) {
        lc_train_state_meta meta = {0};
        meta.step = step;
        meta.options_hash = lc_train_options_hash(rs->o);
        snprintf(meta.rng, sizeof meta.rng, "%lld", (long long)rs->o->seed);
        lc_data_pos pos = lc_batcher_pos(bt);
        lc_data_pos_format(&pos, meta.data_pos, sizeof meta.data_pos);
        meta.trained_tokens = rs->trained_tokens;
        char *p = lc_train_state_path(dir, step);
        rc = lc_train_state_write(p, &rs->view, rs->mom, &meta);
        if (rc == 0) {
            free(rs->last_good);
            rs->last_good = p;
        } else {
            free(p);
        }
    }
    return rc;
}

/* Restores adapters, moments, step and data position from the newest train state. */
static int resume_from(run_state *rs, lc_batcher *bt, int64_t *step) {
    char *path = NULL;
    int64_t found_step;
    int f = lc_train_state_find_latest(rs->o->adapter_path, &path, &found_step);
    if (f < 0) return -1;
    if (f == 0)
        return lc_fail("%s: no complete train state to resume from (run without --resume to "
                       "start afresh)",
                       rs->o->adapter_path);
    lc_adapter_set s;
    lc_lora_moments *mom = NULL;
    lc_train_state_meta meta;
    int rc = lc_train_state_read(path, &s, &mom, &meta);
    if (rc == 0 && meta.options_hash != lc_train_options_hash(rs->o))
        rc = lc_fail("%s: written by a run with other options (model, data, batching, LoRA, "
                     "optimizer, schedule or seed differ); resume with the same options",
                     path);
    if (rc == 0 && s.n != rs->view.n)
        rc = lc_fail("%s: holds %zu adapters, this run has %zu", path, s.n, rs->view.n);
    lc_data_pos pos;
    if (rc == 0 && lc_data_pos_parse(meta.data_pos, &pos) != 0) rc = lc_fail_prefix("%s", path);
    if (rc == 0 && lc_batcher_seek(bt, &pos) != 0) rc = lc_fail_prefix("%s", path);
    for (size_t i = 0; rc == 0 && i < s.n; i++) {
        lc_lora_tensor *dst = &rs->view.t[i], *src = &s.t[i];
        if (dst->layer != src->layer || dst->key != src->key || dst->in != src->in ||
            dst->out != src->out || dst->r != src->r) {
            rc = lc_fail("%s: tensor %s does not match this run's %s", path, src->name, dst->name);
            break;
        }
        size_t na = (size_t)(src->in * src->r), nb = (size_t)(src->r * src->out);
        memcpy(dst->a, src->a, na * sizeof(float));
        memcpy(dst->b, src->b, nb * sizeof(float));
        memcpy(rs->mom[i].m_a, mom[i].m_a, na * sizeof(float));
        memcpy(rs->mom[i].v_a, mom[i].v_a, na * sizeof(float));
        memcpy(rs->mom[i].m_b, mom[i].m_b, nb * sizeof(float));
        memcpy(rs->mom[i].v_b, mom[i].v_b, nb * sizeof(float));
    }
    if (rc == 0) {
        *step = meta.step;
        rs->trained_tokens = meta.trained_tokens;
        printf("Resuming from %s (iteration %lld)\n", path, (long long)meta.step);
        free(rs->last_good);
        rs->last_good = path;
        path = NULL;
    }
    lc_train_state_free_moments(mom, s.n);
    lc_adapters_free(&s);
    free(path);
    return rc;
}

/* ---------------------------------------------------------------- the loop */

static int load_split(const lc_train_options *o, const char *split, const lc_tokenizer *t,
                      const lc_data_options *dopt, lc_dataset *d, bool required) {
    char name[32];
    snprintf(name, sizeof name, "%s.jsonl", split);
    char *path = lc_path_join(o->data, name);
    int rc = 0;
    memset(d, 0, sizeof *d);
    if (!lc_is_file(path)) {
        rc = required ? lc_fail("%s: not found (the data folder needs %s)", path, name) : 1;
    } else if (lc_dataset_load(d, path, t, dopt) != 0) {
        rc = -1;
    } else {
        lc_data_stats st;
        lc_dataset_stats(d, &st);
        printf("%s: %zu examples (%s), %zu tokens, length %zu/%zu/%zu (min/median/max)\n", path,
               st.count, lc_data_form_name(d->form), st.tokens, st.min, st.median, st.max);
        if (st.n_truncated)
            lc_warn("%s: %zu examples are longer than max_seq_length %lld and are truncated", path,
                    st.n_truncated, (long long)o->max_seq_length);
    }
    free(path);
    return rc;
}

/* Redraws the loss-curve SVG from metrics.jsonl (o->plot, default <adapter_path>/loss.svg;
 * "none": off). A failure is a warning: the picture is not worth a training run. */
static void redraw_plot(const lc_train_options *o) {
    if (!strcmp(o->plot, "none")) return;
    char *metrics = lc_path_join(o->adapter_path, "metrics.jsonl");
    char *svg = o->plot[0] ? xstrdup(o->plot) : lc_path_join(o->adapter_path, "loss.svg");
    const char *mb = strrchr(o->model, '/'), *db = o->data;
    mb = mb && mb[1] ? mb + 1 : o->model;
    char title[512], sub[512];
    snprintf(title, sizeof title, "LoRA training of %.200s on %.200s", mb, db);
    snprintf(sub, sizeof sub, "rank %lld, scale %g, learning rate %g, batch %lld, %lld iterations",
             (long long)o->lora.rank, lc_train_options_lora_scale(o), o->learning_rate,
             (long long)o->batch_size, (long long)o->iters);
    if (lc_loss_plot_file(metrics, svg, title, sub) != 0) lc_warn("loss plot: %s", lc_errmsg());
    free(metrics);
    free(svg);
}

static void metrics_line(const char *dir, const char *json) {
    char *p = lc_path_join(dir, "metrics.jsonl");
    FILE *f = fopen(p, "a");
    if (f) {
        fputs(json, f);
        fputc('\n', f);
        fclose(f);
    }
    free(p);
}

/* On --resume: drops the lines of metrics.jsonl past `step` (what the interrupted run
 * logged after its last checkpoint, and the resumed run logs again); keeps the rest. */
static void metrics_truncate(const char *path, int64_t step) {
    char *text;
    size_t len;
    if (!lc_is_file(path) || lc_read_file(path, (size_t)256 << 20, &text, &len) != 0) {
        lc_err_clear();
        return;
    }
    lc_buf keep = {0};
    for (char *p = text, *end = text + len; p < end;) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *le = nl ? nl : end;
        cJSON *j = cJSON_ParseWithLength(p, (size_t)(le - p));
        const cJSON *s = j ? cJSON_GetObjectItemCaseSensitive(j, "step") : NULL;
        if (nl && cJSON_IsNumber(s) && s->valuedouble <= (double)step) lc_buf_append(&keep, p, (size_t)(le - p) + 1);
        cJSON_Delete(j);
        p = nl ? nl + 1 : end;
    }
    if (lc_write_file_atomic(path, keep.data ? keep.data : "", keep.len) != 0) lc_err_clear();
    lc_buf_free(&keep);
    free(text);
}

int lc_train_run(const lc_train_options *o, bool resume, int chat_family,
                 volatile sig_atomic_t *stop) {
    lc_model *m = NULL;
    lc_tokenizer *t = NULL;
    lc_dataset train = {0}, valid = {0}, test = {0};
    bool have_valid = false, have_test = false;
    lc_batcher bt = {0};
    lc_batch_buf bb = {0};
    run_state rs = {0};
    lc_buf cfg = {0};
    float **accum = NULL;
    float *mom_all = NULL; // the optimizer moments: m (n_params) then v (n_params)
    char *model_dir = NULL;
    int rc = -1;

    /* a Hub repo id resolves to its cached snapshot (downloaded when missing) */
    lc_load_options lo = {.quantize_embeddings = o->quantize_embeddings, .device = o->device};
    if (lc_quant_parse(o->quantize, &lo.quantize, "quantize") != 0) goto done;
    if (lc_hub_resolve_model(o->model, &model_dir) != 0 || lc_model_dir_check(model_dir) != 0 ||
        lc_model_load_opts(model_dir, &lo, &m) != 0 || lc_tokenizer_load_dir(model_dir, &t) != 0)
        goto done;
    const lc_model_config *mc = lc_model_cfg(m);
    lc_data_options dopt = {o->mask_prompt, o->max_seq_length, chat_family};
    /* the loop trains: train.jsonl is needed unless a test-only config (train: false) */
    if (load_split(o, "train", t, &dopt, &train, o->train || !o->test) < 0) goto done;
    int v = load_split(o, "valid", t, &dopt, &valid, false);
    if (v < 0) goto done;
    have_valid = v == 0;
    if (o->test) {
        if (load_split(o, "test", t, &dopt, &test, true) != 0) goto done;
        have_test = true;
    }

    lc_lora_config lc;
    lc_lora_config_default(&lc);
    lc.rank = (int)o->lora.rank;
    lc.scale = (float)lc_train_options_lora_scale(o);
    lc.dropout = (float)o->lora.dropout;
    lc.keys = o->lora.keys;
    lc.num_layers = (int)o->num_layers;
    if (lc.num_layers > mc->num_hidden_layers) lc.num_layers = (int)mc->num_hidden_layers;
    if (lc_model_add_lora(m, &lc, (uint64_t)o->seed) != 0) goto done;
    if (o->resume_adapter_file[0]) {
        lc_adapter_set s;
        if (lc_adapters_load(o->resume_adapter_file, &s) != 0) goto done;
        int r = lc_model_copy_adapters(m, &s, o->resume_adapter_file);
        lc_adapters_free(&s);
        if (r != 0) goto done;
        printf("Loaded adapter weights from %s\n", o->resume_adapter_file);
    }
    if (lc_model_adapter_view(m, &rs.view) != 0) goto done;
    rs.m = m;
    rs.o = o;
    size_t n_params = 0;
    for (size_t i = 0; i < rs.view.n; i++)
        n_params += (size_t)(rs.view.t[i].in * rs.view.t[i].r + rs.view.t[i].r * rs.view.t[i].out);
    printf("Trainable parameters: %.3f%% (%.3fM/%.3fM)\n",
           100.0 * (double)n_params / (double)lc_config_param_count(mc), (double)n_params / 1e6,
           (double)lc_config_param_count(mc) / 1e6);

    int64_t T = o->max_seq_length, T_eval = 0;
    size_t longest = 0, longest_eval = 0;
    for (size_t i = 0; i < train.n; i++)
        if (lc_dataset_len(&train, i) > longest) longest = lc_dataset_len(&train, i);
    if ((int64_t)longest < T) T = (int64_t)longest;
    for (size_t i = 0; have_valid && i < valid.n; i++)
        if (lc_dataset_len(&valid, i) > longest_eval) longest_eval = lc_dataset_len(&valid, i);
    for (size_t i = 0; have_test && i < test.n; i++)
        if (lc_dataset_len(&test, i) > longest_eval) longest_eval = lc_dataset_len(&test, i);
    if (have_valid || have_test)
        T_eval = (int64_t)longest_eval < o->max_seq_length ? (int64_t)longest_eval : o->max_seq_length;
    printf("Device: %s\n", lc_model_device(m));
    if (plan_memory(m, &lc, o, T, T_eval) != 0) goto done;

    /* optimizer moments and gradient accumulators, where the model's device reaches them
     * (CPU: plain memory; CUDA: shared memory, updated on the card) */
    rs.mom = xcalloc(rs.view.n ? rs.view.n : 1, sizeof *rs.mom);
    size_t np = 0;
    lc_lora_param *lp = lc_model_lora(m, &np);
    accum = xcalloc(2 * np + 1, sizeof *accum);
    // the moments in two arenas laid out like the adapters' (a then b, adapter by
    // adapter), so one update can cover every adapter (see the update below)
    mom_all = lc_model_shared_alloc(m, 2 * n_params + 1);
    for (size_t i = 0, off = 0; i < rs.view.n; i++) {
        size_t na = (size_t)(rs.view.t[i].in * rs.view.t[i].r);
        size_t nb = (size_t)(rs.view.t[i].r * rs.view.t[i].out);
        rs.mom[i].m_a = mom_all + off, rs.mom[i].m_b = mom_all + off + na;
        rs.mom[i].v_a = mom_all + n_params + off, rs.mom[i].v_b = mom_all + n_params + off + na;
        off += na + nb;
        if (o->grad_accumulation_steps > 1) {
            accum[2 * i] = lc_model_shared_alloc(m, na);
            accum[2 * i + 1] = lc_model_shared_alloc(m, nb);
        }
    }
    lc_train_options_to_json(o, &cfg);
    rs.config_json = cfg.data;

    if (lc_batcher_init(&bt, &train, o->batch_size, o->max_seq_length, (uint64_t)o->seed, true) != 0)
        goto done;
    int64_t step = 0;
    if (resume && resume_from(&rs, &bt, &step) != 0) goto done;
    if (lc_mkdirs(o->adapter_path) != 0) goto done;
    {
        char *mp = lc_path_join(o->adapter_path, "metrics.jsonl");
        if (!resume) unlink(mp);
        else metrics_truncate(mp, step);
        free(mp);
        char *peft = lc_path_join(o->adapter_path, "peft");
        remove_stale_temporaries(o->adapter_path);
        remove_stale_temporaries(peft);
        free(peft);
    }

    const lc_adam_config *adam = lc_train_options_adam(o);
    bool on_cpu = lc_model_on_cpu(m);
    double loss_sum = 0;
    int64_t loss_steps = 0, tokens_since = 0;
    double t_report = lc_now();
    int64_t steps_since = 0;
    lc_progress prog;
    printf("Starting training..., iters: %lld\n", (long long)o->iters);
    lc_progress_start(&prog, "train", o->iters);
    lc_progress_resume_at(&prog, step);
    rc = 0;
    while (step < o->iters) {
        if (stop && *stop) {
            lc_progress_clear(&prog);
            printf("Interrupted at iteration %lld: saving a resumable checkpoint\n", (long long)step);
            rc = save_all(&rs, step, &bt, false);
            if (rc == 0)
                printf("Saved to %s; continue with --resume\n", o->adapter_path);
            goto done;
        }
        int64_t it = step + 1;
        /* --- one optimizer update over grad_accumulation_steps micro-batches --- */
        int64_t acc = o->grad_accumulation_steps > 1 ? o->grad_accumulation_steps : 1;
        double step_loss = 0;
        int64_t step_tok = 0;
        for (int64_t micro = 0; micro < acc; micro++) {
            lc_batcher_next(&bt, &bb);
            lc_batch b = {bb.B, bb.T, bb.tokens, bb.targets,
                          lc_mix64((uint64_t)o->seed * 0x9E3779B97F4A7C15ull + (uint64_t)(step * acc + micro))};
            double loss;
            int64_t ntok;
            if ((rc = lc_model_forward_backward(m, &b, &loss, &ntok)) != 0) goto done;
            if (lc_test_nan_point("loss")) loss = NAN; /* test hook (core/testhook.h) */
            if (!isfinite(loss)) {
                char what[64];
                snprintf(what, sizeof what, "the loss is %s", isnan(loss) ? "NaN" : "infinite");
                rc = fail_nonfinite(&rs, it, what);
                goto done;
            }
            step_loss += loss;
            step_tok += ntok;
            if (acc > 1)
                for (size_t i = 0; i < np; i++) {
                    size_t na = (size_t)(lp[i].in * lp[i].r), nb = (size_t)(lp[i].r * lp[i].out);
                    if (!on_cpu) { // where the gradients live (see all_finite below)
                        if (micro == 0) lc_model_zero(m, accum[2 * i], na), lc_model_zero(m, accum[2 * i + 1], nb);
                        lc_model_accumulate(m, accum[2 * i], lp[i].ga, na);
                        lc_model_accumulate(m, accum[2 * i + 1], lp[i].gb, nb);
                        continue;
                    }
                    if (micro == 0) {
                        memset(accum[2 * i], 0, na * sizeof(float));
                        memset(accum[2 * i + 1], 0, nb * sizeof(float));
                    }
                    lc_grad_accumulate(accum[2 * i], lp[i].ga, na);
                    lc_grad_accumulate(accum[2 * i + 1], lp[i].gb, nb);
                }
        }
        float **g = xmalloc(2 * np * sizeof *g + 1);
        size_t *gn = xmalloc(2 * np * sizeof *gn + 1);
        for (size_t i = 0; i < np; i++) {
            gn[2 * i] = (size_t)(lp[i].in * lp[i].r);
            gn[2 * i + 1] = (size_t)(lp[i].r * lp[i].out);
            g[2 * i] = acc > 1 ? accum[2 * i] : lp[i].ga;
            g[2 * i + 1] = acc > 1 ? accum[2 * i + 1] : lp[i].gb;
            if (acc > 1 && !on_cpu) { // mlx-lm: x / grad_accum_steps
                lc_model_scale(m, g[2 * i], (float)acc, true, gn[2 * i]);
                lc_model_scale(m, g[2 * i + 1], (float)acc, true, gn[2 * i + 1]);
            } else if (acc > 1) {
                lc_grad_accumulate_finish(g[2 * i], gn[2 * i], acc);
                lc_grad_accumulate_finish(g[2 * i + 1], gn[2 * i + 1], acc);
            }
        }
        if (np && lc_test_nan_point("grad")) lc_model_sync(m), g[0][0] = NAN; /* test hook (core/testhook.h) */
        /* on a card the gradients live there (shared memory): checked there in one launch
         * when they are one contiguous run; the host scan below, which moves every page to
         * the host and back (32 ms a step at 42M parameters on an H100), then only names
         * the culprit */
        bool contig = !on_cpu && acc == 1 && np > 0 && np == rs.view.n;
        for (size_t i = 0, off = 0; i < np && contig; i++) {
            contig = lp[i].ga == lp[0].ga + off && lp[i].gb == lp[i].ga + gn[2 * i];
            off += gn[2 * i] + gn[2 * i + 1];
            contig = contig && (i + 1 < np || off == n_params);
        }
        bool finite = contig && lc_model_all_finite(m, lp[0].ga, n_params);
        if (!on_cpu && !contig) { // one launch a tensor (accumulated gradients are apart)
            finite = true;
            for (size_t i = 0; i < 2 * np && finite; i++) finite = lc_model_all_finite(m, g[i], gn[i]);
        }
        for (size_t i = 0; i < 2 * np && !finite; i++) {
            if (first_nonfinite(g[i], gn[i]) < 0) continue;
            char what[200];
            snprintf(what, sizeof what, "the gradient of %s.%s is NaN or infinite", rs.view.t[i / 2].name,
                     i % 2 ? "lora_b" : "lora_a");
            free(g);
            free(gn);
            rc = fail_nonfinite(&rs, it, what);
            goto done;
        }
        if (o->clip_grad_norm > 0 && on_cpu) {
            lc_clip_grad_norm(g, gn, 2 * np, o->clip_grad_norm);
        } else if (o->clip_grad_norm > 0) { // lc_clip_grad_norm's arithmetic, on the card
            double ss = 0;
            if (contig) ss = lc_model_sumsq(m, g[0], n_params);
            for (size_t i = 0; i < 2 * np && !contig; i++) ss += lc_model_sumsq(m, g[i], gn[i]);
            double coef = o->clip_grad_norm / (sqrt(ss) + 1e-6);
            for (size_t i = 0; i < 2 * np && coef < 1.0; i++) lc_model_scale(m, g[i], (float)coef, false, gn[i]);
        }
        double lr = lc_schedule_lr(&o->lr_schedule, o->learning_rate, step);
        lc_adam_args aa = lc_adam_args_make(adam, lr, step + 1);
        // on the card, one launch over every adapter when parameters, gradients and
        // moments are each one contiguous run (the same arithmetic element for element)
        bool one = contig; // the gradients are one run (above); the adapters and moments too?
        for (size_t i = 0, off = 0; i < np && one; i++) {
            one = lp[i].a == lp[0].a + off && rs.mom[i].m_a == mom_all + off && lp[i].b == lp[i].a + gn[2 * i];
            off += gn[2 * i] + gn[2 * i + 1];
        }
        if (one) lc_model_adam(m, &aa, lp[0].a, lp[0].ga, mom_all, mom_all + n_params, n_params);
        for (size_t i = 0; i < np && !one; i++) {
            if (lc_model_on_cpu(m)) {
                lc_adam_update(adam, lr, step + 1, lp[i].a, g[2 * i], rs.mom[i].m_a, rs.mom[i].v_a, gn[2 * i]);
                lc_adam_update(adam, lr, step + 1, lp[i].b, g[2 * i + 1], rs.mom[i].m_b, rs.mom[i].v_b,
                               gn[2 * i + 1]);
            } else {
                lc_model_adam(m, &aa, lp[i].a, g[2 * i], rs.mom[i].m_a, rs.mom[i].v_a, gn[2 * i]);
                lc_model_adam(m, &aa, lp[i].b, g[2 * i + 1], rs.mom[i].m_b, rs.mom[i].v_b, gn[2 * i + 1]);
            }
        }
        free(g);
        free(gn);
        if (lc_model_sync(m) != 0) goto done; // the host reads the adapters (saves) from here
        step = it;
        loss_sum += step_loss / (double)acc;
        loss_steps++;
        steps_since++;
        tokens_since += step_tok;
        rs.trained_tokens += step_tok;
        lc_test_kill_point("step"); /* test hook (core/testhook.h): off outside tests */
        lc_progress_update(&prog, step);

        bool report = it % o->steps_per_report == 0 || it == o->iters;
        bool eval = have_valid && o->steps_per_eval > 0 &&
                    (it == 1 || it % o->steps_per_eval == 0 || it == o->iters);
        lc_buf mj = {0};
        if (report) {
            double el = lc_now() - t_report;
            double tl = loss_sum / (double)loss_steps;
            lc_progress_clear(&prog);
            printf("Iter %lld: Train loss %.3f, Learning Rate %.3e, It/sec %.3f, Tokens/sec %.3f, "
                   "Trained Tokens %lld, Peak mem %.3f GB\n",
                   (long long)it, tl, lr, steps_since / el, tokens_since / el,
                   (long long)rs.trained_tokens, peak_rss_gb());
            lc_buf_printf(&mj, "{\"step\": %lld, \"train_loss\": %.6f, \"learning_rate\": %.6e, "
                               "\"tokens_per_sec\": %.3f, \"peak_mem_gb\": %.3f",
                          (long long)it, tl, lr, tokens_since / el, peak_rss_gb());
            loss_sum = 0;
            loss_steps = steps_since = tokens_since = 0;
            t_report = lc_now();
        }
        if (eval) {
            double t0 = lc_now(), vl;
            int64_t vt;
            if ((rc = lc_eval_loss(m, &valid, o->batch_size, o->max_seq_length, o->val_batches, &vl,
                                   &vt)) != 0) {
                lc_buf_free(&mj);
                goto done;
            }
            lc_progress_clear(&prog);
            printf("Iter %lld: Val loss %.3f, Val took %.3fs\n", (long long)it, vl, lc_now() - t0);
            if (!mj.len) lc_buf_printf(&mj, "{\"step\": %lld", (long long)it);
            lc_buf_printf(&mj, ", \"val_loss\": %.6f", vl);
            t_report += lc_now() - t0; /* keep eval time out of the training rate */
        }
        if (mj.len) {
            lc_buf_puts(&mj, "}");
            metrics_line(o->adapter_path, mj.data);
            redraw_plot(o);
        }
        lc_buf_free(&mj);
        if (o->save_every > 0 && it % o->save_every == 0 && it != o->iters) {
            if ((rc = save_all(&rs, step, &bt, true)) != 0) goto done;
            lc_progress_clear(&prog);
            printf("Iter %lld: Saved adapter weights to %s/adapters.safetensors and "
                   "%s/%07lld_adapters.safetensors.\n",
                   (long long)it, o->adapter_path, o->adapter_path, (long long)it);
        }
    }
    lc_progress_clear(&prog);
    if ((rc = save_all(&rs, step, &bt, o->save_every > 0 && step % o->save_every == 0)) != 0) goto done;
    printf("Saved final weights to %s/adapters.safetensors.\n", o->adapter_path);
    if (have_test) {
        double tl;
        int64_t tt;
        if ((rc = lc_eval_loss(m, &test, o->batch_size, o->max_seq_length, o->test_batches, &tl,
                               &tt)) != 0)
            goto done;
        printf("Test loss %.3f, Test ppl %.3f.\n", tl, exp(tl));
    }
done:
    free(model_dir);
    if (rs.mom) {
        for (size_t i = 0; i < rs.view.n; i++)
            if (accum) lc_model_shared_free(m, accum[2 * i]), lc_model_shared_free(m, accum[2 * i + 1]);
        lc_model_shared_free(m, mom_all);
        free(rs.mom);
    }
    free(accum);
    free(rs.last_good);
    lc_model_adapter_view_free(&rs.view);
    lc_buf_free(&cfg);
    lc_batch_buf_free(&bb);
    lc_batcher_free(&bt);
    lc_dataset_free(&train);
    if (have_valid) lc_dataset_free(&valid);
    if (have_test) lc_dataset_free(&test);
    lc_tokenizer_free(t);
    lc_model_free(m);
    return rc;
}
