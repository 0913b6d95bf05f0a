/*
 * options.c — `lorac train` options from defaults, YAML (libyaml's document API, for line
 * numbers) and long flags. See options.h. One table describes the top-level keys; the
 * three nested sections (lora_parameters, optimizer_config, lr_schedule) have their own.
 */
#include "train/options.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "core/error.h"
#include "core/file.h"
#include "core/json.h"
#include "core/mem.h"
#include "io/adapters.h"

#define YAML_MAX_BYTES (4u << 20)

/* ---- defaults ---- */

static void set_str(char *dst, const char *src) { snprintf(dst, LC_OPT_STR_MAX, "%s", src); }

void lc_train_options_defaults(lc_train_options *o) {
    memset(o, 0, sizeof *o);
    set_str(o->model, "mlx_model");
    set_str(o->data, "data/");
    set_str(o->adapter_path, "adapters");
    set_str(o->device, "auto");
    o->batch_size = 4;
    o->iters = 1000;
    o->num_layers = 16;
    o->steps_per_report = 10;
    o->steps_per_eval = 200;
    o->val_batches = 25;
    o->save_every = 100;
    o->max_seq_length = 2048;
    o->seed = 0;
    o->test_batches = 500;
    o->grad_accumulation_steps = 1;
    o->learning_rate = 1e-5;
    o->lora.rank = 8;
    o->lora.scale = 20.0;
    o->lora.alpha = 16;
    o->lora.dropout = 0.0;
    o->lora.keys = LC_LORA_ALL_KEYS;
    o->optimizer = LC_OPTIM_ADAM;
    o->adam = lc_adam_defaults(LC_OPTIM_ADAM);
    o->adamw = lc_adam_defaults(LC_OPTIM_ADAMW);
    o->lr_schedule.kind = LC_SCHED_NONE;
}

double lc_train_options_lora_scale(const lc_train_options *o) {
    if (o->lora.has_scale) return o->lora.scale;
    if (o->lora.has_alpha) return o->lora.alpha / (double)o->lora.rank;
    return o->lora.scale;
}

const lc_adam_config *lc_train_options_adam(const lc_train_options *o) {
    return o->optimizer == LC_OPTIM_ADAMW ? &o->adamw : &o->adam;
}

/* ---- nearest names ---- */

static size_t edit_distance(const char *a, const char *b) {
    size_t n = strlen(a), m = strlen(b);
    size_t *row = xmalloc((m + 1) * sizeof *row);
    for (size_t j = 0; j <= m; j++) row[j] = j;
    for (size_t i = 1; i <= n; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= m; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    size_t d = row[m];
    free(row);
    return d;
}

/* The valid name closest to s: one that contains s (or that s contains) first, else the
 * smallest edit distance. */
static const char *nearest(const char *s, const char *const *names) {
    const char *best = names[0];
    size_t bd = (size_t)-1;
    for (size_t i = 0; names[i]; i++) {
        size_t d = edit_distance(s, names[i]);
        if (*s && (strstr(names[i], s) || strstr(s, names[i]))) d = d / 8;
        if (d < bd) bd = d, best = names[i];
    }
    return best;
}

/* ---- typed values ---- */

typedef enum { V_STR, V_INT, V_NUM, V_BOOL } vtype;

/* A scalar as the YAML file or the command line gave it. */
typedef struct {
    const char *text;
    bool quoted; // a quoted YAML scalar: always a string
    bool null;   // YAML null (~, null, empty)
} scalar;

static bool yaml_bool(const char *s, bool *out) {
    static const char *const t[] = {"true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON", 0};
    static const char *const f[] = {"false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF", 0};
    for (int i = 0; t[i]; i++)
        if (!strcmp(s, t[i])) return *out = true, true;
    for (int i = 0; f[i]; i++)
        if (!strcmp(s, f[i])) return *out = false, true;
    return false;
}

static int parse_int(const scalar *v, const char *where, int64_t *out) {
    char *end;
    errno = 0;
    long long x = v->quoted ? 0 : strtoll(v->text, &end, 10);
    if (v->quoted || errno || end == v->text || *end)
        return lc_fail("%s: expects an integer, got %s\"%s\"", where, v->quoted ? "the string " : "",
                       v->text);
    *out = x;
    return 0;
}

static int parse_num(const scalar *v, const char *where, double *out) {
    char *end;
    double x = v->quoted ? 0 : strtod(v->text, &end);
    if (v->quoted || end == v->text || *end || !isfinite(x))
        return lc_fail("%s: expects a number, got %s\"%s\"", where, v->quoted ? "the string " : "",
                       v->text);
    *out = x;
    return 0;
}

static int parse_bool(const scalar *v, const char *where, bool *out) {
    if (v->quoted || !yaml_bool(v->text, out))
        return lc_fail("%s: expects true or false, got \"%s\"", where, v->text);
    return 0;
}

static int int_range(const char *where, int64_t x, int64_t lo, bool minus_one) {
    if (x >= lo || (minus_one && x == -1)) return 0;
    return lc_fail("%s: must be >= %lld%s, got %lld", where, (long long)lo,
                   minus_one ? " (or -1 for all)" : "", (long long)x);
}

/* ---- the top-level keys ---- */

typedef enum { K_PLAIN, K_OPTIMIZER, K_FINETUNE, K_LORA, K_OPTCFG, K_SCHED } kkind;

typedef struct {
    const char *key;
    kkind kind;
    vtype t;
    size_t off;
    int64_t lo;     // V_INT: smallest value
    bool minus_one; // V_INT: -1 also allowed (all)
    bool nullable;  // V_STR: null clears it
    const char *help;
} field;

#define F(k, t, lo, m1, help) {#k, K_PLAIN, t, offsetof(lc_train_options, k), lo, m1, false, help}

static const field fields[] = {
    F(model, V_STR, 0, 0, "model folder or Hugging Face repo id"),
    F(train, V_BOOL, 0, 0, "train (a flag)"),
    F(data, V_STR, 0, 0, "folder with train.jsonl, valid.jsonl, test.jsonl"),
    F(adapter_path, V_STR, 0, 0, "folder to save the adapters in (default adapters)"),
    {"resume_adapter_file", K_PLAIN, V_STR, offsetof(lc_train_options, resume_adapter_file), 0, 0,
     true, "adapter weights to start from"},
    F(batch_size, V_INT, 1, 0, "sequences per batch (default 4)"),
    F(iters, V_INT, 0, 0, "training steps (default 1000)"),
    F(learning_rate, V_NUM, 0, 0, "learning rate (default 1e-5)"),
    F(num_layers, V_INT, 1, 1, "adapt the last N layers, -1 all (default 16)"),
    F(steps_per_report, V_INT, 1, 0, "steps between loss reports (default 10)"),
    F(steps_per_eval, V_INT, 1, 0, "steps between validations (default 200)"),
    F(val_batches, V_INT, 1, 1, "validation batches, -1 all (default 25)"),
    F(save_every, V_INT, 1, 0, "steps between checkpoints (default 100)"),
    F(max_seq_length, V_INT, 2, 0, "longest sequence in tokens (default 2048)"),
    F(grad_checkpoint, V_BOOL, 0, 0, "recompute activations to save memory (a flag)"),
    F(mask_prompt, V_BOOL, 0, 0, "train on completions only (a flag)"),
    F(seed, V_INT, 0, 0, "random seed (default 0)"),
    F(test, V_BOOL, 0, 0, "evaluate on test.jsonl after training (a flag)"),
    F(test_batches, V_INT, 1, 1, "test batches, -1 all (default 500)"),
    F(grad_accumulation_steps, V_INT, 1, 0, "micro-batches per update (default 1)"),
    F(device, V_STR, 0, 0, "cpu, cuda or cuda:N (default auto: cuda when built in and a GPU answers)"),
    F(clip_grad_norm, V_NUM, 0, 0, "clip the global gradient norm to this (default 0: off)"),
    F(memory_limit, V_NUM, 0, 0, "GiB the run may take; recompute activations to fit (default 0: the device's)"),
    F(plot, V_STR, 0, 0, "SVG of the loss curves (default <adapter_path>/loss.svg; none: off)"),
    F(quantize, V_STR, 0, 0, "quantize the base weights at load time: nf4, q4 or q8"),
    F(quantize_embeddings, V_BOOL, 0, 0, "quantize embed_tokens and lm_head too (a flag)"),
    {"optimizer", K_OPTIMIZER, V_STR, 0, 0, 0, false, "adam or adamw (default adam)"},
    {"fine_tune_type", K_FINETUNE, V_STR, 0, 0, 0, false, "lora (the only one lorac trains)"},
    {"lora_parameters", K_LORA, V_STR, 0, 0, 0, false, NULL},
    {"optimizer_config", K_OPTCFG, V_STR, 0, 0, 0, false, NULL},
    {"lr_schedule", K_SCHED, V_STR, 0, 0, 0, false, NULL},
};
#define N_FIELDS (sizeof fields / sizeof fields[0])

static const field *find_field(const char *key) {
    for (size_t i = 0; i < N_FIELDS; i++)
        if (!strcmp(fields[i].key, key)) return &fields[i];
    return NULL;
}

static const char *const *field_names(void) {
    static const char *names[N_FIELDS + 1];
    for (size_t i = 0; i < N_FIELDS; i++) names[i] = fields[i].key;
    return names;
}

/* Sets a plain field, the optimizer or fine_tune_type from a scalar. */
static int set_scalar(lc_train_options *o, const field *f, const scalar *v, const char *where) {
    if (f->kind == K_OPTIMIZER) {
        if (v->null) return 0;
        if (!strcmp(v->text, "adam") || !strcmp(v->text, "Adam")) o->optimizer = LC_OPTIM_ADAM;
        else if (!strcmp(v->text, "adamw") || !strcmp(v->text, "AdamW")) o->optimizer = LC_OPTIM_ADAMW;
        else
            return lc_fail("%s: lorac implements adam and adamw, got \"%s\"", where, v->text);
        return 0;
    }
    if (f->kind == K_FINETUNE) {
        if (v->null || !strcmp(v->text, "lora")) return 0;
        return lc_fail("%s: lorac trains \"lora\" only, got \"%s\"", where, v->text);
    }
    char *p = (char *)o + f->off;
    if (v->null) { // mlx-lm: None means the default
        if (f->nullable) p[0] = 0;
        return 0;
    }
    switch (f->t) {
    case V_STR:
        if (strlen(v->text) >= LC_OPT_STR_MAX)
            return lc_fail("%s: longer than %d bytes", where, LC_OPT_STR_MAX - 1);
        set_str(p, v->text);
        return 0;
    case V_BOOL: return parse_bool(v, where, (bool *)p);
    case V_NUM: {
        double x;
        if (parse_num(v, where, &x) != 0) return -1;
        if (x < 0) return lc_fail("%s: must be >= 0, got %g", where, x);
        *(double *)p = x;
        return 0;
    }
    case V_INT: {
        int64_t x;
        if (parse_int(v, where, &x) != 0 || int_range(where, x, f->lo, f->minus_one) != 0) return -1;
        *(int64_t *)p = x;
        return 0;
    }
    }
    return 0;
}

/* ---- nested sections' scalars (shared by YAML and flags) ---- */

static const char *const lora_keys[] = {"rank", "alpha", "scale", "dropout", "keys", 0};
static const char *const adam_keys[] = {"weight_decay", "betas", "eps", 0};
static const char *const sched_keys[] = {"name", "arguments", "warmup", "warmup_init", 0};
static const char *const sched_names[] = {"cosine_decay", "linear_schedule", "linear", "constant", 0};

static int set_lora(lc_train_options *o, const char *key, const scalar *v, const char *where) {
    if (v->null) return 0;
    if (!strcmp(key, "rank")) {
        int64_t x;
        if (parse_int(v, where, &x) != 0 || int_range(where, x, 1, false) != 0) return -1;
        if (x > 65536) return lc_fail("%s: must be <= 65536, got %lld", where, (long long)x);
        o->lora.rank = x;
    } else if (!strcmp(key, "alpha")) {
        if (parse_num(v, where, &o->lora.alpha) != 0) return -1;
        if (o->lora.alpha <= 0) return lc_fail("%s: must be > 0, got %g", where, o->lora.alpha);
        o->lora.has_alpha = true;
    } else if (!strcmp(key, "scale")) {
        if (parse_num(v, where, &o->lora.scale) != 0) return -1;
        o->lora.has_scale = true;
    } else if (!strcmp(key, "dropout")) {
        if (parse_num(v, where, &o->lora.dropout) != 0) return -1;
        if (o->lora.dropout < 0 || o->lora.dropout >= 1)
            return lc_fail("%s: must be in [0, 1), got %g", where, o->lora.dropout);
    }
    return 0;
}

/* Adds one name of `keys` to the set (which the caller cleared first). */
static int add_key(unsigned *keys, const char *name, const char *where) {
    int k = lc_lora_key_parse(name);
    if (k >= 0) {
        *keys |= 1u << k;
        return 0;
    }
    static const char *all[2 * LC_LORA_N_KEYS + 1];
    for (int i = 0; i < LC_LORA_N_KEYS; i++) {
        all[2 * i] = lc_lora_key_path((lc_lora_key)i);
        all[2 * i + 1] = lc_lora_key_short((lc_lora_key)i);
    }
    return lc_fail("%s: unknown module '%s' (did you mean '%s'? lorac adapts q_proj, k_proj, "
                   "v_proj, o_proj, gate_proj, up_proj, down_proj)",
                   where, name, nearest(name, all));
}

static int set_sched_name(lc_schedule *s, const scalar *v, const char *where) {
    const char *n = v->text;
    if (!strcmp(n, "cosine_decay")) s->kind = LC_SCHED_COSINE;
    else if (!strcmp(n, "linear_schedule") || !strcmp(n, "linear")) s->kind = LC_SCHED_LINEAR;
    else if (!strcmp(n, "constant")) s->kind = LC_SCHED_CONSTANT;
    else
        return lc_fail("%s: unknown schedule '%s' (did you mean '%s'? lorac has cosine_decay, "
                       "linear_schedule, constant)",
                       where, n, nearest(n, sched_names));
    return 0;
}

static int set_adam(lc_adam_config *c, const char *key, const scalar *v, const char *where) {
    if (v->null) return 0;
    double x;
    if (parse_num(v, where, &x) != 0) return -1;
    if (!strcmp(key, "weight_decay")) {
        if (x < 0) return lc_fail("%s: must be >= 0, got %g", where, x);
        c->weight_decay = x;
    } else {
        if (x <= 0) return lc_fail("%s: must be > 0, got %g", where, x);
        c->eps = x;
    }
    return 0;
}

static int set_beta(double *b, const scalar *v, const char *where) {
    if (parse_num(v, where, b) != 0) return -1;
    if (*b < 0 || *b >= 1) return lc_fail("%s: each beta must be in [0, 1), got %g", where, *b);
    return 0;
}

/* ---- YAML ---- */

typedef struct {
    yaml_document_t *doc;
    const char *what;
    char where[LC_OPT_STR_MAX + 128];
} ycx;

static const char *at(ycx *c, const yaml_node_t *n, const char *key) {
    snprintf(c->where, sizeof c->where, "%s:%lu%s%s", c->what,
             (unsigned long)n->start_mark.line + 1, *key ? ": " : "", key);
    return c->where;
}

static scalar yscalar(const yaml_node_t *n) {
    scalar s;
    s.text = (const char *)n->data.scalar.value;
    bool plain = n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE ||
                 n->data.scalar.style == YAML_ANY_SCALAR_STYLE;
    s.quoted = !plain;
    s.null = plain && (!strcmp(s.text, "") || !strcmp(s.text, "~") || !strcmp(s.text, "null") ||
                       !strcmp(s.text, "Null") || !strcmp(s.text, "NULL"));
    return s;
}

static bool is_null_node(const yaml_node_t *n) {
    return n->type == YAML_SCALAR_NODE && yscalar(n).null;
}

static const char *node_kind(const yaml_node_t *n) {
    return n->type == YAML_MAPPING_NODE ? "a mapping" : n->type == YAML_SEQUENCE_NODE ? "a list" : "a value";
}

static int need_scalar(ycx *c, const yaml_node_t *n, const char *key) {
    if (n->type == YAML_SCALAR_NODE) return 0;
    return lc_fail("%s: expects a single value, got %s", at(c, n, key), node_kind(n));
}

/* Calls fn for each key/value of a mapping node; unknown keys fail naming the nearest. */
typedef int (*pair_fn)(ycx *c, lc_train_options *o, const char *key, const yaml_node_t *k,
                       const yaml_node_t *v, void *arg);

static int each_pair(ycx *c, lc_train_options *o, const yaml_node_t *map, const char *section,
                     const char *const *valid, pair_fn fn, void *arg) {
    if (map->type != YAML_MAPPING_NODE)
        return lc_fail("%s: expects a mapping (key: value lines), got %s", at(c, map, section),
                       node_kind(map));
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        const yaml_node_t *k = yaml_document_get_node(c->doc, p->key);
        const yaml_node_t *v = yaml_document_get_node(c->doc, p->value);
        if (!k || !v || k->type != YAML_SCALAR_NODE)
            return lc_fail("%s: a key must be a plain name", at(c, map, section));
        const char *key = (const char *)k->data.scalar.value;
        bool known = false;
        for (size_t i = 0; valid[i]; i++) known |= !strcmp(valid[i], key);
        if (!known) {
            char full[300];
            snprintf(full, sizeof full, "%s%s%s", section, *section ? "." : "", key);
            return lc_fail("%s: unknown key '%s' (did you mean '%s'?)", at(c, k, ""), full,
                           nearest(key, valid));
        }
        char full[300];
        snprintf(full, sizeof full, "%s%s%s", section, *section ? "." : "", key);
        if (fn(c, o, full, k, v, arg) != 0) return -1;
    }
    return 0;
}

static int lora_pair(ycx *c, lc_train_options *o, const char *key, const yaml_node_t *k,
                     const yaml_node_t *v, void *arg) {
    (void)arg;
    const char *leaf = (const char *)k->data.scalar.value;
    if (!strcmp(leaf, "keys")) {
        if (is_null_node(v)) return 0;
        if (v->type != YAML_SEQUENCE_NODE)
            return lc_fail("%s: expects a list of module names, e.g. [self_attn.q_proj, "
                           "self_attn.v_proj]",
                           at(c, v, key));
        unsigned keys = 0;
        for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top; it++) {
            const yaml_node_t *e = yaml_document_get_node(c->doc, *it);
            if (!e || e->type != YAML_SCALAR_NODE)
                return lc_fail("%s: expects module names", at(c, v, key));
            if (add_key(&keys, (const char *)e->data.scalar.value, at(c, e, key)) != 0) return -1;
        }
        if (!keys) return lc_fail("%s: the list is empty", at(c, v, key));
        o->lora.keys = keys;
        return 0;
    }
    if (need_scalar(c, v, key) != 0) return -1;
    scalar s = yscalar(v);
    return set_lora(o, leaf, &s, at(c, v, key));
}

static int adam_pair(ycx *c, lc_train_options *o, const char *key, const yaml_node_t *k,
                     const yaml_node_t *v, void *arg) {
    (void)o;
    lc_adam_config *cfg = arg;
    const char *leaf = (const char *)k->data.scalar.value;
    if (!strcmp(leaf, "betas")) {
        if (v->type != YAML_SEQUENCE_NODE || v->data.sequence.items.top - v->data.sequence.items.start != 2)
            return lc_fail("%s: expects a list of two numbers, e.g. [0.9, 0.999]", at(c, v, key));
        double b[2];
        for (int i = 0; i < 2; i++) {
            const yaml_node_t *e = yaml_document_get_node(c->doc, v->data.sequence.items.start[i]);
            if (need_scalar(c, e, key) != 0) return -1;
            scalar s = yscalar(e);
            if (set_beta(&b[i], &s, at(c, e, key)) != 0) return -1;
        }
        cfg->beta1 = b[0], cfg->beta2 = b[1];
        return 0;
    }
    if (need_scalar(c, v, key) != 0) return -1;
    scalar s = yscalar(v);
    return set_adam(cfg, leaf, &s, at(c, v, key));
}

static int optcfg_pair(ycx *c, lc_train_options *o, const char *key, const yaml_node_t *k,
                       const yaml_node_t *v, void *arg) {
    (void)arg;
    if (is_null_node(v)) return 0;
    const char *leaf = (const char *)k->data.scalar.value;
    lc_adam_config *cfg = !strcmp(leaf, "adamw") ? &o->adamw : &o->adam;
    return each_pair(c, o, v, key, adam_keys, adam_pair, cfg);
}

static int sched_pair(ycx *c, lc_train_options *o, const char *key, const yaml_node_t *k,
                      const yaml_node_t *v, void *arg) {
    (void)arg;
    lc_schedule *s = &o->lr_schedule;
    const char *leaf = (const char *)k->data.scalar.value;
    if (!strcmp(leaf, "arguments")) {
        if (v->type != YAML_SEQUENCE_NODE)
            return lc_fail("%s: expects a list of numbers, e.g. [1e-5, 1000, 0]", at(c, v, key));
        s->n_args = 0;
        for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top; it++) {
            const yaml_node_t *e = yaml_document_get_node(c->doc, *it);
            if (s->n_args == 3) return lc_fail("%s: at most 3 arguments", at(c, v, key));
            if (need_scalar(c, e, key) != 0) return -1;
            scalar sc = yscalar(e);
            if (parse_num(&sc, at(c, e, key), &s->args[s->n_args++]) != 0) return -1;
        }
        return 0;
    }
    if (need_scalar(c, v, key) != 0) return -1;
    scalar sc = yscalar(v);
    if (sc.null) return 0;
    if (!strcmp(leaf, "name")) return set_sched_name(s, &sc, at(c, v, key));
    if (!strcmp(leaf, "warmup")) {
        if (parse_int(&sc, at(c, v, key), &s->warmup) != 0) return -1;
        return int_range(c->where, s->warmup, 0, false);
    }
    if (parse_num(&sc, at(c, v, key), &s->warmup_init) != 0) return -1;
    if (s->warmup_init < 0) return lc_fail("%s: must be >= 0, got %g", c->where, s->warmup_init);
    return 0;
}

static int top_pair(ycx *c, lc_train_options *o, const char *key, const yaml_node_t *k,
                    const yaml_node_t *v, void *arg) {
    (void)k, (void)arg;
    const field *f = find_field(key);
    switch (f->kind) {
    case K_LORA:
        if (is_null_node(v)) return 0;
        return each_pair(c, o, v, key, lora_keys, lora_pair, NULL);
    case K_OPTCFG: {
        if (is_null_node(v)) return 0;
        static const char *const names[] = {"adam", "adamw", 0};
        return each_pair(c, o, v, key, names, optcfg_pair, NULL);
    }
    case K_SCHED: {
        if (is_null_node(v)) {
            o->lr_schedule.kind = LC_SCHED_NONE;
            return 0;
        }
        lc_schedule keep = o->lr_schedule;
        memset(&o->lr_schedule, 0, sizeof o->lr_schedule);
        if (each_pair(c, o, v, key, sched_keys, sched_pair, NULL) != 0) return -1;
        if (o->lr_schedule.kind == LC_SCHED_NONE) {
            o->lr_schedule = keep;
            return lc_fail("%s: needs a name (cosine_decay, linear_schedule or constant)",
                           at(c, v, key));
        }
        return lc_schedule_validate(&o->lr_schedule, at(c, v, key));
    }
    default:
        if (need_scalar(c, v, key) != 0) return -1;
        scalar s = yscalar(v);
        return set_scalar(o, f, &s, at(c, v, key));
    }
}

int lc_train_options_apply_yaml(lc_train_options *o, const char *text, size_t len, const char *what) {
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser)) return lc_fail("%s: cannot start the YAML parser", what);
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        int rc = lc_fail("%s:%lu: invalid YAML: %s", what,
                         (unsigned long)parser.problem_mark.line + 1,
                         parser.problem ? parser.problem : "unknown problem");
        yaml_parser_delete(&parser);
        return rc;
    }
    /* one document, as mlx-lm's yaml.load insists: a second one would be ignored silently */
    yaml_document_t next;
    int more = 0;
    if (yaml_parser_load(&parser, &next)) {
        more = yaml_document_get_root_node(&next) != NULL;
        yaml_document_delete(&next);
    }
    if (more) {
        unsigned long line = (unsigned long)parser.mark.line + 1;
        yaml_parser_delete(&parser);
        yaml_document_delete(&doc);
        return lc_fail("%s:%lu: a second YAML document (after ---); a config holds one", what, line);
    }
    yaml_parser_delete(&parser);
    int rc = 0;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    ycx c = {&doc, what, ""};
    if (root && !is_null_node(root)) {
        if (root->type != YAML_MAPPING_NODE)
            rc = lc_fail("%s: expected key: value lines (a YAML mapping) at the top, got %s", what,
                         node_kind(root));
        else
            rc = each_pair(&c, o, root, "", field_names(), top_pair, NULL);
    }
    yaml_document_delete(&doc);
    return rc;
}

int lc_train_options_load_yaml(lc_train_options *o, const char *path) {
    char *text;
    size_t len;
    if (lc_read_file(path, YAML_MAX_BYTES, &text, &len) != 0) return -1;
    int rc = lc_train_options_apply_yaml(o, text, len, path);
    free(text);
    if (rc == 0) set_str(o->config, path);
    return rc;
}

/* ---- flags ---- */

/* Flags beyond the top-level keys: the nested options, flattened. */
static const char *const extra_flags[] = {
    "config",  "lora-rank",     "lora-alpha",  "lora-scale",       "lora-dropout", "lora-keys",
    "weight-decay", "lr-schedule", "lr-schedule-args", "warmup", "warmup-init", 0};

static bool is_bool_flag(const field *f) { return f && f->kind == K_PLAIN && f->t == V_BOOL; }

static const char *const *flag_names(void) {
    static const char *names[N_FIELDS + 16];
    static char dashed[N_FIELDS][64];
    size_t n = 0;
    for (size_t i = 0; i < N_FIELDS; i++) {
        if (fields[i].kind >= K_LORA) continue;
        snprintf(dashed[i], sizeof dashed[i], "%s", fields[i].key);
        for (char *p = dashed[i]; *p; p++)
            if (*p == '_') *p = '-';
        names[n++] = dashed[i];
    }
    for (size_t i = 0; extra_flags[i]; i++) names[n++] = extra_flags[i];
    names[n] = NULL;
    return names;
}

/* Splits a comma-separated list into numbers. */
static int num_list(const char *text, const char *where, double *out, int max, int *n) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", text);
    *n = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (*n == max) return lc_fail("%s: at most %d values", where, max);
        scalar s = {tok, false, false};
        if (parse_num(&s, where, &out[(*n)++]) != 0) return -1;
    }
    return 0;
}

static int apply_flag(lc_train_options *o, const char *name, const char *val, double *wd,
                      bool *has_wd, const char *where) {
    scalar s = {val, false, false};
    char key[128];
    snprintf(key, sizeof key, "%s", name);
    for (char *p = key; *p; p++)
        if (*p == '-') *p = '_';
    const field *f = find_field(key);
    if (f && f->kind < K_LORA) return set_scalar(o, f, &s, where);
    if (!strncmp(name, "lora-", 5) && strcmp(name, "lora-keys")) return set_lora(o, name + 5, &s, where);
    if (!strcmp(name, "lora-keys")) {
        unsigned keys = 0;
        char buf[512];
        snprintf(buf, sizeof buf, "%s", val);
        for (char *sv = NULL, *t = strtok_r(buf, ",", &sv); t; t = strtok_r(NULL, ",", &sv))
            if (add_key(&keys, t, where) != 0) return -1;
        if (!keys) return lc_fail("%s: the list is empty", where);
        o->lora.keys = keys;
        return 0;
    }
    if (!strcmp(name, "weight-decay")) {
        if (parse_num(&s, where, wd) != 0) return -1;
        if (*wd < 0) return lc_fail("%s: must be >= 0, got %g", where, *wd);
        *has_wd = true;
        return 0;
    }
    lc_schedule *sc = &o->lr_schedule;
    if (!strcmp(name, "lr-schedule")) {
        if (!strcmp(val, "none")) {
            sc->kind = LC_SCHED_NONE;
            return 0;
        }
        return set_sched_name(sc, &s, where);
    }
    if (!strcmp(name, "lr-schedule-args")) return num_list(val, where, sc->args, 3, &sc->n_args);
    if (!strcmp(name, "warmup")) {
        if (parse_int(&s, where, &sc->warmup) != 0) return -1;
        return int_range(where, sc->warmup, 0, false);
    }
    if (!strcmp(name, "warmup-init")) {
        if (parse_num(&s, where, &sc->warmup_init) != 0) return -1;
        return sc->warmup_init < 0 ? lc_fail("%s: must be >= 0", where) : 0;
    }
    return lc_fail("%s: unhandled option", where);
}

int lc_train_options_parse(lc_train_options *o, int argc, char **argv) {
    lc_train_options_defaults(o);
    const char *const *names = flag_names();
    // the config file first, wherever it stands
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *path = NULL;
        if (!strcmp(a, "-c") || !strcmp(a, "--config")) {
            if (i + 1 >= argc) return lc_fail("%s: needs a file name", a);
            path = argv[i + 1];
        } else if (!strncmp(a, "--config=", 9)) {
            path = a + 9;
        }
        if (path && lc_train_options_load_yaml(o, path) != 0) return -1;
    }
    double wd = 0;
    bool has_wd = false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-c")) {
            i++;
            continue;
        }
        if (strncmp(a, "--", 2) || !a[2])
            return lc_fail("unexpected argument '%s' (options are long flags such as "
                           "--batch-size 4; see lorac train --help)",
                           a);
        char name[128];
        const char *eq = strchr(a, '='), *val = NULL;
        size_t n = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        if (n >= sizeof name) n = sizeof name - 1;
        memcpy(name, a + 2, n);
        name[n] = 0;
        for (char *p = name; *p; p++)
            if (*p == '_') *p = '-';
        bool known = false;
        for (size_t k = 0; names[k]; k++) known |= !strcmp(names[k], name);
        if (!known)
            return lc_fail("unknown option --%s (did you mean --%s?)", name, nearest(name, names));
        if (!strcmp(name, "config")) {
            if (!eq) i++;
            continue;
        }
        char key[128], where[160];
        snprintf(key, sizeof key, "%s", name);
        for (char *p = key; *p; p++)
            if (*p == '-') *p = '_';
        snprintf(where, sizeof where, "--%s", name);
        if (eq) {
            val = eq + 1;
        } else if (is_bool_flag(find_field(key))) {
            val = "true";
        } else {
            if (i + 1 >= argc) return lc_fail("--%s: needs a value", name);
            val = argv[++i];
        }
        if (apply_flag(o, name, val, &wd, &has_wd, where) != 0) return -1;
    }
    if (has_wd) lc_train_options_adam(o) == &o->adam ? (void)(o->adam.weight_decay = wd)
                                                      : (void)(o->adamw.weight_decay = wd);
    if (o->lr_schedule.kind != LC_SCHED_NONE &&
        lc_schedule_validate(&o->lr_schedule, "--lr-schedule") != 0)
        return -1;
    return 0;
}

/* ---- output ---- */

static void put_num(lc_buf *b, double v) {
    char tmp[40];
    for (int p = 1; p <= 17; p++) {
        snprintf(tmp, sizeof tmp, "%.*g", p, v);
        if (strtod(tmp, NULL) == v) break;
    }
    lc_buf_puts(b, tmp);
    if (!strpbrk(tmp, ".eEn")) lc_buf_puts(b, ".0"); // a float stays a float for Python
}

static void put_str(lc_buf *b, const char *s) { lc_json_quote(b, s, strlen(s)); }

static void put_adam(lc_buf *b, const lc_adam_config *c) {
    lc_buf_puts(b, "{\"betas\": [");
    put_num(b, c->beta1);
    lc_buf_puts(b, ", ");
    put_num(b, c->beta2);
    lc_buf_puts(b, "], \"eps\": ");
    put_num(b, c->eps);
    lc_buf_puts(b, ", \"weight_decay\": ");
    put_num(b, c->weight_decay);
    lc_buf_putc(b, '}');
}

void lc_train_options_to_json(const lc_train_options *o, lc_buf *b) {
#define KI(k) lc_buf_printf(b, "\"" #k "\": %" PRId64 ", ", o->k)
#define KB(k) lc_buf_printf(b, "\"" #k "\": %s, ", o->k ? "true" : "false")
#define KS(k) (lc_buf_puts(b, "\"" #k "\": "), put_str(b, o->k), lc_buf_puts(b, ", "))
#define KN(k) (lc_buf_puts(b, "\"" #k "\": "), put_num(b, o->k), lc_buf_puts(b, ", "))
    lc_buf_putc(b, '{');
    KS(adapter_path);
    KI(batch_size);
    KN(clip_grad_norm);
    if (o->config[0]) KS(config);
    else lc_buf_puts(b, "\"config\": null, ");
    KS(data);
    lc_buf_puts(b, "\"fine_tune_type\": \"lora\", ");
    KI(grad_accumulation_steps);
    KB(grad_checkpoint);
    KI(iters);
    KN(learning_rate);
    lc_buf_puts(b, "\"lora_parameters\": {");
    if (o->lora.has_alpha) lc_buf_puts(b, "\"alpha\": "), put_num(b, o->lora.alpha), lc_buf_puts(b, ", ");
    lc_buf_puts(b, "\"dropout\": ");
    put_num(b, o->lora.dropout);
    lc_buf_puts(b, ", \"keys\": [");
    bool first = true;
    for (int k = 0; k < LC_LORA_N_KEYS; k++)
        if ((o->lora.keys >> k) & 1) {
            lc_buf_puts(b, first ? "" : ", ");
            put_str(b, lc_lora_key_path((lc_lora_key)k));
            first = false;
        }
    lc_buf_printf(b, "], \"rank\": %" PRId64 ", \"scale\": ", o->lora.rank);
    put_num(b, lc_train_options_lora_scale(o));
    lc_buf_puts(b, "}, \"lr_schedule\": ");
    const lc_schedule *s = &o->lr_schedule;
    if (s->kind == LC_SCHED_NONE) {
        lc_buf_puts(b, "null, ");
    } else {
        lc_buf_puts(b, "{\"arguments\": [");
        for (int i = 0; i < s->n_args; i++) {
            if (i) lc_buf_puts(b, ", ");
            put_num(b, s->args[i]);
        }
        lc_buf_printf(b, "], \"name\": \"%s\", \"warmup\": %" PRId64 ", \"warmup_init\": ",
                      lc_schedule_name(s->kind), s->warmup);
        put_num(b, s->warmup_init);
        lc_buf_puts(b, "}, ");
    }
    KB(mask_prompt);
    KI(max_seq_length);
    if (o->memory_limit > 0) KN(memory_limit);
    KS(model);
    KI(num_layers);
    lc_buf_printf(b, "\"optimizer\": \"%s\", ", o->optimizer == LC_OPTIM_ADAMW ? "adamw" : "adam");
    lc_buf_puts(b, "\"optimizer_config\": {\"adam\": ");
    put_adam(b, &o->adam);
    lc_buf_puts(b, ", \"adamw\": ");
    put_adam(b, &o->adamw);
    lc_buf_puts(b, "}, ");
    if (o->quantize[0]) KS(quantize);
    if (o->quantize_embeddings) KB(quantize_embeddings);
    if (o->resume_adapter_file[0]) KS(resume_adapter_file);
    else lc_buf_puts(b, "\"resume_adapter_file\": null, ");
    KI(save_every);
    KI(seed);
    KI(steps_per_eval);
    KI(steps_per_report);
    KB(test);
    KI(test_batches);
    KB(train);
    lc_buf_printf(b, "\"val_batches\": %" PRId64 "}", o->val_batches);
#undef KI
#undef KB
#undef KS
#undef KN
}

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++) h = (h ^ c[i]) * 0x100000001b3ull;
    return h;
}

uint64_t lc_train_options_hash(const lc_train_options *o) {
    lc_buf b = {0};
    const lc_adam_config *a = lc_train_options_adam(o);
    lc_buf_printf(&b, "model=%s\ndata=%s\nbatch=%" PRId64 "\nlayers=%" PRId64 "\nmsl=%" PRId64
                      "\nseed=%" PRId64 "\naccum=%" PRId64 "\nmask=%d\nlr=%.17g\nclip=%.17g\n",
                  o->model, o->data, o->batch_size, o->num_layers, o->max_seq_length, o->seed,
                  o->grad_accumulation_steps, o->mask_prompt, o->learning_rate, o->clip_grad_norm);
    lc_buf_printf(&b, "rank=%" PRId64 "\nscale=%.17g\ndropout=%.17g\nkeys=%u\n", o->lora.rank,
                  lc_train_options_lora_scale(o), o->lora.dropout, o->lora.keys);
    lc_buf_printf(&b, "opt=%d\nb1=%.17g\nb2=%.17g\neps=%.17g\nwd=%.17g\n", (int)o->optimizer,
                  a->beta1, a->beta2, a->eps, a->weight_decay);
    const lc_schedule *s = &o->lr_schedule;
    lc_buf_printf(&b, "sched=%d:%d:%.17g:%.17g:%.17g:%" PRId64 ":%.17g\n", (int)s->kind, s->n_args,
                  s->args[0], s->args[1], s->args[2], s->warmup, s->warmup_init);
    uint64_t h = fnv(0xcbf29ce484222325ull, b.data, b.len);
    lc_buf_free(&b);
    return h;
}

const char *lc_train_options_help(void) {
    return "  -c, --config FILE         YAML file with these options (mlx-lm's lora_config.yaml keys)\n"
           "  --model PATH|REPO         model folder or Hugging Face repo id\n"
           "  --train / --test          train; evaluate on test.jsonl afterwards\n"
           "  --data DIR                folder with train.jsonl, valid.jsonl, test.jsonl\n"
           "  --adapter-path DIR        where adapters are saved (default adapters)\n"
           "  --resume-adapter-file F   adapter weights to start from\n"
           "  --batch-size N            sequences per batch (default 4)\n"
           "  --iters N                 training steps (default 1000)\n"
           "  --learning-rate X         learning rate (default 1e-5)\n"
           "  --num-layers N            adapt the last N layers, -1 all (default 16)\n"
           "  --steps-per-report N      steps between loss reports (default 10)\n"
           "  --steps-per-eval N        steps between validations (default 200)\n"
           "  --val-batches N           validation batches, -1 all (default 25)\n"
           "  --test-batches N          test batches, -1 all (default 500)\n"
           "  --save-every N            steps between checkpoints (default 100)\n"
           "  --max-seq-length N        longest sequence in tokens (default 2048)\n"
           "  --grad-checkpoint         recompute activations to save memory\n"
           "  --memory-limit GIB        the most memory the run may take: the backward keeps\n"
           "                            fewer activations to fit (default: what the device has)\n"
           "  --grad-accumulation-steps N  micro-batches per update (default 1)\n"
           "  --mask-prompt             train on completions only\n"
           "  --seed N                  random seed (default 0)\n"
           "  --optimizer adam|adamw    (default adam); --weight-decay X\n"
           "  --lora-rank N --lora-alpha X --lora-scale X --lora-dropout X\n"
           "  --lora-keys q_proj,v_proj,...  projections to adapt (default all seven)\n"
           "  --lr-schedule NAME --lr-schedule-args a,b,c --warmup N --warmup-init X\n"
           "                            cosine_decay [init, steps, end], linear_schedule\n"
           "                            [init, end, steps], constant [lr]\n"
           "  --clip-grad-norm X        clip the global gradient norm (default off)\n"
           "  --plot FILE               SVG of the train/validation loss curves, rewritten at\n"
           "                            each report (default <adapter-path>/loss.svg; none: off)\n"

           "  --quantize nf4|q4|q8      quantize the base weights at load time (default: as\n"
           "                            stored); --quantize-embeddings: embed/lm_head too\n";
}
