/*
 * adapters.c — LoRA adapters in the mlx-lm and PEFT layouts, and resumable training
 * checkpoints. See adapters.h for the layouts. Owns the arrays of the sets it builds.
 */
#include "io/adapters.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/file.h"
#include "core/json.h"
#include "core/mem.h"
#include "core/vec.h"
#include "io/safetensors.h"

#define CONFIG_MAX_BYTES (16u << 20)
#define PEFT_PREFIX "base_model.model."
#define TRAIN_STATE_FORMAT "lorac-train-state-1"

/* ---- keys ---- */

static const char *const key_paths[LC_LORA_N_KEYS] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj",
};

const char *lc_lora_key_path(lc_lora_key k) { return key_paths[k]; }

const char *lc_lora_key_short(lc_lora_key k) { return strchr(key_paths[k], '.') + 1; }

int lc_lora_key_parse(const char *s) {
    for (int k = 0; k < LC_LORA_N_KEYS; k++)
        if (!strcmp(s, key_paths[k]) || !strcmp(s, lc_lora_key_short((lc_lora_key)k))) return k;
    return -1;
}

void lc_lora_key_dims(const lc_model_config *c, lc_lora_key k, int64_t *in, int64_t *out) {
    int64_t C = c->hidden_size, qd = c->num_attention_heads * c->head_dim;
    int64_t kvd = c->num_key_value_heads * c->head_dim, F = c->intermediate_size;
    switch (k) {
    case LC_LORA_Q: *in = C, *out = qd; break;
    case LC_LORA_K:
    case LC_LORA_V: *in = C, *out = kvd; break;
    case LC_LORA_O: *in = qd, *out = C; break;
    case LC_LORA_GATE:
    case LC_LORA_UP: *in = C, *out = F; break;
    default: *in = F, *out = C; break;
    }
}

/* ---- sets ---- */

static void tensor_init(lc_lora_tensor *t, int layer, lc_lora_key key, int64_t in, int64_t out,
                        int64_t r) {
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "model.layers.%d.%s", layer, key_paths[key]);
    t->layer = layer;
    t->key = key;
    t->in = in, t->out = out, t->r = r;
    t->a = xcalloc((size_t)in * (size_t)r, sizeof(float));
    t->b = xcalloc((size_t)r * (size_t)out, sizeof(float));
}

int lc_adapters_alloc(lc_adapter_set *s, const lc_model_config *c, int64_t num_layers,
                      unsigned keys, int64_t rank, double scale, double dropout) {
    memset(s, 0, sizeof *s);
    int64_t L = c->num_hidden_layers;
    if (num_layers > L)
        return lc_fail("num_layers: %lld layers requested but the model has %lld (use -1 for all)",
                       (long long)num_layers, (long long)L);
    if (rank < 1) return lc_fail("lora rank must be >= 1, got %lld", (long long)rank);
    int64_t first = num_layers < 0 ? 0 : L - num_layers;
    size_t nk = 0;
    for (int k = 0; k < LC_LORA_N_KEYS; k++) nk += (keys >> k) & 1;
    s->t = xcalloc((size_t)(L - first) * nk + 1, sizeof *s->t);
    for (int64_t l = first; l < L; l++)
        for (int k = 0; k < LC_LORA_N_KEYS; k++) {
            if (!((keys >> k) & 1)) continue;
            int64_t in, out;
            lc_lora_key_dims(c, (lc_lora_key)k, &in, &out);
            tensor_init(&s->t[s->n++], (int)l, (lc_lora_key)k, in, out, rank);
        }
    s->rank = rank;
    s->scale = scale;
    s->dropout = dropout;
    s->num_layers = num_layers;
    s->keys = keys;
    return 0;
}

void lc_adapters_free(lc_adapter_set *s) {
    for (size_t i = 0; i < s->n; i++) {
        free(s->t[i].a);
        free(s->t[i].b);
    }
    free(s->t);
    memset(s, 0, sizeof *s);
}

lc_lora_tensor *lc_adapters_find(const lc_adapter_set *s, int layer, lc_lora_key key) {
    for (size_t i = 0; i < s->n; i++)
        if (s->t[i].layer == layer && s->t[i].key == key) return &s->t[i];
    return NULL;
}

static int cmp_tensor(const void *x, const void *y) {
    const lc_lora_tensor *a = x, *b = y;
    if (a->layer != b->layer) return a->layer < b->layer ? -1 : 1;
    return (int)a->key - (int)b->key;
}

/* ---- JSON output: sorted keys, fixed indent, shortest round-trip numbers ---- */

static void put_num(lc_buf *b, double v) {
    if (v == floor(v) && fabs(v) < 1e15) {
        lc_buf_printf(b, "%.0f", v);
        return;
    }
    char tmp[40];
    for (int p = 1; p <= 17; p++) {
        snprintf(tmp, sizeof tmp, "%.*g", p, v);
        if (strtod(tmp, NULL) == v) break;
    }
    lc_buf_puts(b, tmp);
}

static int cmp_item_name(const void *x, const void *y) {
    const cJSON *a = *(const cJSON *const *)x, *b = *(const cJSON *const *)y;
    return strcmp(a->string, b->string);
}

static void put_json(lc_buf *b, const cJSON *v, int indent, int depth) {
    if (cJSON_IsObject(v) || cJSON_IsArray(v)) {
        bool obj = cJSON_IsObject(v);
        size_t n = (size_t)cJSON_GetArraySize(v);
        if (n == 0) {
            lc_buf_puts(b, obj ? "{}" : "[]");
            return;
        }
        const cJSON **items = xmalloc(n * sizeof *items);
        size_t i = 0;
        for (const cJSON *c = v->child; c; c = c->next) items[i++] = c;
        if (obj) qsort(items, n, sizeof *items, cmp_item_name);
        lc_buf_putc(b, obj ? '{' : '[');
        for (i = 0; i < n; i++) {
            lc_buf_printf(b, "%s\n%*s", i ? "," : "", indent * (depth + 1), "");
            if (obj) {
                lc_json_quote(b, items[i]->string, strlen(items[i]->string));
                lc_buf_puts(b, ": ");
            }
            put_json(b, items[i], indent, depth + 1);
        }
        lc_buf_printf(b, "\n%*s%c", indent * depth, "", obj ? '}' : ']');
        free(items);
    } else if (cJSON_IsString(v)) {
        lc_json_quote(b, v->valuestring, strlen(v->valuestring));
    } else if (cJSON_IsNumber(v)) {
        put_num(b, v->valuedouble);
    } else if (cJSON_IsBool(v)) {
        lc_buf_puts(b, cJSON_IsTrue(v) ? "true" : "false");
    } else {
        lc_buf_puts(b, "null");
    }
}

static int write_json_file(const char *path, const cJSON *root, int indent) {
    lc_buf b = {0};
    put_json(&b, root, indent, 0);
    lc_buf_putc(&b, '\n');
    int rc = lc_write_file_atomic(path, b.data, b.len);
    lc_buf_free(&b);
    return rc;
}

static void set_item(cJSON *obj, const char *key, cJSON *v) {
    cJSON_DeleteItemFromObjectCaseSensitive(obj, key);
    cJSON_AddItemToObject(obj, key, v);
}

/* Layers that hold at least one tensor, ascending; returns how many. */
static size_t set_layers(const lc_adapter_set *s, int *out) {
    size_t n = 0;
    for (size_t i = 0; i < s->n; i++)
        if (n == 0 || out[n - 1] != s->t[i].layer) out[n++] = s->t[i].layer;
    return n;
}

static unsigned set_keys(const lc_adapter_set *s) {
    unsigned k = 0;
    for (size_t i = 0; i < s->n; i++) k |= 1u << s->t[i].key;
    return k;
}

/* ---- mlx-lm layout ---- */

static int write_tensors(const char *path, const lc_adapter_set *s, const lc_lora_moments *mom,
                         const lc_train_state_meta *meta) {
    lc_st_writer *w = lc_st_writer_new();
    char name[160];
    static const char *const suffix[3] = {"", ".adam_m", ".adam_v"};
    int n_kinds = mom ? 3 : 1;
    for (size_t i = 0; i < s->n; i++) {
        const lc_lora_tensor *t = &s->t[i];
        int64_t sa[2] = {t->in, t->r}, sb[2] = {t->r, t->out};
        for (int k = 0; k < n_kinds; k++) {
            snprintf(name, sizeof name, "%s.lora_a%s", t->name, suffix[k]);
            if (lc_st_writer_add(w, name, LC_DT_F32, 2, sa) != 0) goto fail;
            snprintf(name, sizeof name, "%s.lora_b%s", t->name, suffix[k]);
            if (lc_st_writer_add(w, name, LC_DT_F32, 2, sb) != 0) goto fail;
        }
    }
    if (meta) {
        char v[64];
        lc_st_writer_meta(w, "format", TRAIN_STATE_FORMAT);
        snprintf(v, sizeof v, "%" PRId64, meta->step);
        lc_st_writer_meta(w, "step", v);
        snprintf(v, sizeof v, "%016" PRIx64, meta->options_hash);
        lc_st_writer_meta(w, "options_hash", v);
        lc_st_writer_meta(w, "rng", meta->rng);
        lc_st_writer_meta(w, "data_position", meta->data_pos);
        snprintf(v, sizeof v, "%" PRId64, meta->trained_tokens);
        lc_st_writer_meta(w, "trained_tokens", v);
        snprintf(v, sizeof v, "%.17g", s->scale);
        lc_st_writer_meta(w, "lora_scale", v);
        snprintf(v, sizeof v, "%.17g", s->dropout);
        lc_st_writer_meta(w, "lora_dropout", v);
        snprintf(v, sizeof v, "%" PRId64, s->num_layers);
        lc_st_writer_meta(w, "num_layers", v);
    } else {
        lc_st_writer_meta(w, "format", "mlx"); // what mlx.save_safetensors writes
    }
    if (lc_st_writer_begin(w, path) != 0) goto fail;
    for (size_t i = 0; i < s->n; i++) {
        const lc_lora_tensor *t = &s->t[i];
        size_t na = (size_t)t->in * (size_t)t->r * sizeof(float);
        size_t nb = (size_t)t->r * (size_t)t->out * sizeof(float);
        const float *pa[3] = {t->a, mom ? mom[i].m_a : NULL, mom ? mom[i].v_a : NULL};
        const float *pb[3] = {t->b, mom ? mom[i].m_b : NULL, mom ? mom[i].v_b : NULL};
        for (int k = 0; k < n_kinds; k++) {
            snprintf(name, sizeof name, "%s.lora_a%s", t->name, suffix[k]);
            if (lc_st_writer_write(w, name, pa[k], na) != 0) goto fail;
            snprintf(name, sizeof name, "%s.lora_b%s", t->name, suffix[k]);
            if (lc_st_writer_write(w, name, pb[k], nb) != 0) goto fail;
        }
    }
    if (lc_st_writer_commit(w) != 0) goto fail;
    lc_st_writer_free(w);
    return 0;
fail:
    lc_st_writer_free(w);
    return lc_fail_prefix("writing adapters %s", path);
}

int lc_adapters_write_mlx(const char *path, const lc_adapter_set *s) {
    return write_tensors(path, s, NULL, NULL);
}

int lc_adapters_write_mlx_config(const char *dir, const lc_adapter_set *s, const char *config_json) {
    cJSON *root = NULL;
    if (config_json) {
        if (lc_json_parse(config_json, strlen(config_json), "training configuration", &root) != 0)
            return -1;
        if (!cJSON_IsObject(root)) {
            cJSON_Delete(root);
            return lc_fail("training configuration: expected a JSON object");
        }
    } else {
        root = cJSON_CreateObject();
    }
    set_item(root, "fine_tune_type", cJSON_CreateString("lora"));
    set_item(root, "num_layers", cJSON_CreateNumber((double)s->num_layers));
    cJSON *lp = cJSON_CreateObject();
    cJSON_AddNumberToObject(lp, "rank", (double)s->rank);
    cJSON_AddNumberToObject(lp, "scale", s->scale);
    cJSON_AddNumberToObject(lp, "dropout", s->dropout);
    cJSON *keys = cJSON_AddArrayToObject(lp, "keys");
    unsigned ks = s->n ? set_keys(s) : s->keys;
    for (int k = 0; k < LC_LORA_N_KEYS; k++)
        if ((ks >> k) & 1) cJSON_AddItemToArray(keys, cJSON_CreateString(key_paths[k]));
    set_item(root, "lora_parameters", lp);
    char *path = lc_path_join(dir, "adapter_config.json");
    int rc = lc_mkdirs(dir) == 0 ? write_json_file(path, root, 4) : -1;
    free(path);
    cJSON_Delete(root);
    return rc;
}

char *lc_adapters_checkpoint_path(const char *dir, int64_t step) {
    char name[64];
    snprintf(name, sizeof name, "%07" PRId64 "_adapters.safetensors", step);
    return lc_path_join(dir, name);
}

/* ---- PEFT layout ---- */

int lc_adapters_write_peft(const char *dir, const lc_adapter_set *s, const char *base_model) {
    if (lc_mkdirs(dir) != 0) return -1;
    char *wpath = lc_path_join(dir, "adapter_model.safetensors");
    lc_st_writer *w = lc_st_writer_new();
    char name[200];
    float *tmp = NULL;
    size_t tmp_cap = 0;
    int rc = -1;
    for (size_t i = 0; i < s->n; i++) {
        const lc_lora_tensor *t = &s->t[i];
        int64_t sa[2] = {t->r, t->in}, sb[2] = {t->out, t->r};
        snprintf(name, sizeof name, PEFT_PREFIX "%s.lora_A.weight", t->name);
        if (lc_st_writer_add(w, name, LC_DT_F32, 2, sa) != 0) goto done;
        snprintf(name, sizeof name, PEFT_PREFIX "%s.lora_B.weight", t->name);
        if (lc_st_writer_add(w, name, LC_DT_F32, 2, sb) != 0) goto done;
    }
    if (lc_st_writer_begin(w, wpath) != 0) goto done;
    for (size_t i = 0; i < s->n; i++) {
        const lc_lora_tensor *t = &s->t[i];
        size_t R = (size_t)t->r, I = (size_t)t->in, O = (size_t)t->out;
        size_t need = (I > O ? I : O) * R;
        if (need > tmp_cap) tmp = xrealloc(tmp, (tmp_cap = need) * sizeof *tmp);
        for (size_t r = 0; r < R; r++) // A^T: (r, in) from (in, r)
            for (size_t k = 0; k < I; k++) tmp[r * I + k] = t->a[k * R + r];
        snprintf(name, sizeof name, PEFT_PREFIX "%s.lora_A.weight", t->name);
        if (lc_st_writer_write(w, name, tmp, R * I * sizeof(float)) != 0) goto done;
        for (size_t o = 0; o < O; o++) // B^T: (out, r) from (r, out)
            for (size_t r = 0; r < R; r++) tmp[o * R + r] = t->b[r * O + o];
        snprintf(name, sizeof name, PEFT_PREFIX "%s.lora_B.weight", t->name);
        if (lc_st_writer_write(w, name, tmp, R * O * sizeof(float)) != 0) goto done;
    }
    if (lc_st_writer_commit(w) != 0) goto done;

    cJSON *root = cJSON_CreateObject();
    cJSON_AddItemToObject(root, "alpha_pattern", cJSON_CreateObject());
    cJSON_AddNullToObject(root, "auto_mapping");
    if (base_model) cJSON_AddStringToObject(root, "base_model_name_or_path", base_model);
    else cJSON_AddNullToObject(root, "base_model_name_or_path");
    cJSON_AddStringToObject(root, "bias", "none");
    cJSON_AddFalseToObject(root, "fan_in_fan_out");
    cJSON_AddTrueToObject(root, "inference_mode");
    cJSON_AddTrueToObject(root, "init_lora_weights");
    cJSON_AddNullToObject(root, "layer_replication");
    cJSON_AddNullToObject(root, "layers_pattern");
    cJSON *layers = cJSON_AddArrayToObject(root, "layers_to_transform");
    int *ls = xmalloc((s->n + 1) * sizeof *ls);
    size_t nl = set_layers(s, ls);
    for (size_t i = 0; i < nl; i++) cJSON_AddItemToArray(layers, cJSON_CreateNumber(ls[i]));
    free(ls);
    cJSON_AddItemToObject(root, "loftq_config", cJSON_CreateObject());
    cJSON_AddNumberToObject(root, "lora_alpha", s->scale * (double)s->rank);
    cJSON_AddFalseToObject(root, "lora_bias");
    cJSON_AddNumberToObject(root, "lora_dropout", s->dropout);
    cJSON_AddNullToObject(root, "megatron_config");
    cJSON_AddStringToObject(root, "megatron_core", "megatron.core");
    cJSON_AddNullToObject(root, "modules_to_save");
    cJSON_AddStringToObject(root, "peft_type", "LORA");
    cJSON_AddNumberToObject(root, "r", (double)s->rank);
    cJSON_AddItemToObject(root, "rank_pattern", cJSON_CreateObject());
    cJSON_AddNullToObject(root, "revision");
    cJSON *tm = cJSON_AddArrayToObject(root, "target_modules");
    unsigned ks = set_keys(s);
    for (int k = 0; k < LC_LORA_N_KEYS; k++)
        if ((ks >> k) & 1)
            cJSON_AddItemToArray(tm, cJSON_CreateString(lc_lora_key_short((lc_lora_key)k)));
    cJSON_AddStringToObject(root, "task_type", "CAUSAL_LM");
    cJSON_AddFalseToObject(root, "use_dora");
    cJSON_AddFalseToObject(root, "use_rslora");
    char *cpath = lc_path_join(dir, "adapter_config.json");
    rc = write_json_file(cpath, root, 2);
    free(cpath);
    cJSON_Delete(root);
done:
    if (rc != 0) lc_fail_prefix("writing PEFT adapters %s", dir);
    lc_st_writer_free(w);
    free(tmp);
    free(wpath);
    return rc;
}

/* ---- loading ---- */

/* Parses "model.layers.N.<key path>.<leaf>" (after any prefix); sets layer, key and the
 * leaf's start. Returns 0, or -1 (no error recorded) when the name is not of that form. */
static int parse_name(const char *name, int *layer, int *key, const char **leaf) {
    const char *p = name;
    if (strncmp(p, "model.layers.", 13)) return -1;
    p += 13;
    if (!isdigit((unsigned char)*p)) return -1;
    long l = 0;
    while (isdigit((unsigned char)*p) && l < 1000000) l = l * 10 + (*p++ - '0');
    if (*p++ != '.') return -1;
    for (int k = 0; k < LC_LORA_N_KEYS; k++) {
        size_t n = strlen(key_paths[k]);
        if (!strncmp(p, key_paths[k], n) && p[n] == '.') {
            *layer = (int)l;
            *key = k;
            *leaf = p + n + 1;
            return 0;
        }
    }
    return -1;
}

/* Copies a 2-D tensor into a new fp32 array, transposed when `transpose`. */
static float *tensor_f32(const lc_tensor *t, bool transpose) {
    size_t rows = (size_t)t->shape[0], cols = (size_t)t->shape[1];
    float *tmp = xmalloc((t->numel ? t->numel : 1) * sizeof(float));
    lc_to_f32(tmp, t->data, t->dtype, t->numel);
    if (!transpose) return tmp;
    float *out = xmalloc((t->numel ? t->numel : 1) * sizeof(float));
    for (size_t r = 0; r < rows; r++)
        for (size_t c = 0; c < cols; c++) out[c * rows + r] = tmp[r * cols + c];
    free(tmp);
    return out;
}

typedef struct {
    const char *prefix; // stripped from names ("" or PEFT_PREFIX)
    const char *leaf_a, *leaf_b;
    bool transpose; // PEFT stores A (r, in), B (out, r)
    bool skip_moments; // ignore ".adam_m"/".adam_v" tensors (train state)
} layout;

static lc_lora_tensor *get_or_add(lc_adapter_set *s, size_t *cap, int layer, int key) {
    lc_lora_tensor *t = lc_adapters_find(s, layer, (lc_lora_key)key);
    if (t) return t;
    if (s->n == *cap) s->t = xrealloc(s->t, (*cap = *cap ? *cap * 2 : 16) * sizeof *s->t);
    t = &s->t[s->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "model.layers.%d.%s", layer, key_paths[key]);
    t->layer = layer;
    t->key = (lc_lora_key)key;
    return t;
}

/* Fills s->t from the tensors of st in the given layout; checks pairs and shapes. */
static int collect(lc_adapter_set *s, const lc_safetensors *st, const layout *lay,
                   const char *what) {
    size_t cap = 0;
    size_t np = strlen(lay->prefix);
    for (size_t i = 0; i < st->n_tensors; i++) {
        const lc_tensor *ten = &st->tensors[i];
        const char *name = ten->name;
        if (lay->skip_moments && (strstr(name, ".adam_m") || strstr(name, ".adam_v"))) continue;
        int layer, key;
        const char *leaf;
        if (strncmp(name, lay->prefix, np) || parse_name(name + np, &layer, &key, &leaf) != 0)
            return lc_fail("%s: tensor '%s' is not a LoRA tensor of a Llama-family projection "
                           "(expected %smodel.layers.N.self_attn.q_proj.%s and the like)",
                           what, name, lay->prefix, lay->leaf_a);
        bool is_a = !strcmp(leaf, lay->leaf_a), is_b = !strcmp(leaf, lay->leaf_b);
        if (!is_a && !is_b)
            return lc_fail("%s: tensor '%s' is not a LoRA A or B matrix (lorac supports plain "
                           "LoRA: no DoRA magnitudes, biases or other trained modules)",
                           what, name);
        if (ten->ndim != 2 ||
            (ten->dtype != LC_DT_F32 && ten->dtype != LC_DT_F16 && ten->dtype != LC_DT_BF16)) {
            char sb[64];
            return lc_fail("%s: tensor '%s' is %s %s; expected a 2-D F32, F16 or BF16 matrix",
                           what, name, lc_dtype_name(ten->dtype),
                           lc_shape_str(sb, sizeof sb, ten->ndim, ten->shape));
        }
        lc_lora_tensor *t = get_or_add(s, &cap, layer, key);
        if ((is_a && t->a) || (is_b && t->b))
            return lc_fail("%s: tensor '%s' appears twice", what, name);
        // rows/cols in lorac's orientation: A (in, r), B (r, out)
        int64_t d0 = lay->transpose ? ten->shape[1] : ten->shape[0];
        int64_t d1 = lay->transpose ? ten->shape[0] : ten->shape[1];
        if (is_a) {
            t->in = d0;
            t->a = tensor_f32(ten, lay->transpose);
            if (t->b && t->r != d1) goto rank_mismatch;
            t->r = d1;
        } else {
            t->out = d1;
            t->b = tensor_f32(ten, lay->transpose);
            if (t->a && t->r != d0) goto rank_mismatch;
            t->r = d0;
        }
        continue;
    rank_mismatch:
        return lc_fail("%s: the A and B matrices of %s disagree on the rank", what, t->name);
    }
    if (s->n == 0) return lc_fail("%s: holds no LoRA tensors", what);
    for (size_t i = 0; i < s->n; i++) {
        lc_lora_tensor *t = &s->t[i];
        if (!t->a || !t->b)
            return lc_fail("%s: %s has a LoRA %s matrix but no %s", what, t->name,
                           t->a ? "A" : "B", t->a ? "B" : "A");
        if (t->r != s->t[0].r)
            return lc_fail("%s: %s has rank %lld but %s has rank %lld (lorac needs one rank)",
                           what, t->name, (long long)t->r, s->t[0].name, (long long)s->t[0].r);
        if (t->r < 1 || t->in < 1 || t->out < 1)
            return lc_fail("%s: %s has an empty matrix", what, t->name);
    }
    qsort(s->t, s->n, sizeof *s->t, cmp_tensor);
    s->rank = s->t[0].r;
    s->keys = set_keys(s);
    return 0;
}

static int open_st(const char *path, lc_safetensors *st) {
    if (!lc_is_file(path)) {
        memset(st, 0, sizeof *st);
        return lc_fail("%s: no such file", path);
    }
    return lc_st_open(st, path);
}

/* Checks target_modules (a list of names, or one regular-expression string) and
 * layers_to_transform (a layer or a list of layers) against the tensors read. */
static int check_peft_targets(const cJSON *cfg, const char *cpath, const lc_adapter_set *s) {
    const cJSON *tm = cJSON_GetObjectItemCaseSensitive(cfg, "target_modules");
    if (tm && !cJSON_IsNull(tm) && !cJSON_IsString(tm)) {
        if (!cJSON_IsArray(tm))
            return lc_fail("%s: \"target_modules\" must be a list of module names or a string, "
                           "found %s",
                           cpath, lc_json_type_name(tm));
        unsigned listed = 0;
        bool all_known = true;
        const cJSON *e;
        cJSON_ArrayForEach(e, tm) {
            if (!cJSON_IsString(e))
                return lc_fail("%s: \"target_modules\" must hold names (strings), found %s", cpath,
                               lc_json_type_name(e));
            int k = lc_lora_key_parse(e->valuestring);
            if (k < 0) all_known = false;
            else listed |= 1u << k;
        }
        for (size_t i = 0; all_known && i < s->n; i++)
            if (!(listed & (1u << s->t[i].key)))
                return lc_fail("%s: the weights adapt %s, which \"target_modules\" does not list",
                               cpath, s->t[i].name);
    }
    const cJSON *lt = cJSON_GetObjectItemCaseSensitive(cfg, "layers_to_transform");
    if (!lt || cJSON_IsNull(lt)) return 0;
    if (!cJSON_IsNumber(lt) && !cJSON_IsArray(lt))
        return lc_fail("%s: \"layers_to_transform\" must be a layer index or a list of them, "
                       "found %s",
                       cpath, lc_json_type_name(lt));
    const cJSON *e, *list = cJSON_IsArray(lt) ? lt : NULL;
    cJSON_ArrayForEach(e, list) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble != floor(e->valuedouble) ||
            e->valuedouble > 1e6)
            return lc_fail("%s: \"layers_to_transform\" must hold layer indices (integers from 0), "
                           "found %s",
                           cpath, cJSON_IsNumber(e) ? "an out-of-range number" : lc_json_type_name(e));
    }
    for (size_t i = 0; i < s->n; i++) {
        bool in = false;
        if (cJSON_IsNumber(lt)) in = lt->valuedouble == s->t[i].layer;
        cJSON_ArrayForEach(e, list) in = in || e->valuedouble == s->t[i].layer;
        if (!in)
            return lc_fail("%s: the weights adapt %s, whose layer \"layers_to_transform\" does not "
                           "list",
                           cpath, s->t[i].name);
    }
    return 0;
}

static int load_peft(const char *dir, const cJSON *cfg, const char *cpath, lc_adapter_set *s) {
    const char *str;
    bool flag;
    double alpha = 8, r = 8, dropout = 0;
    int rc;
    if (lc_json_str(cfg, "peft_type", &str, cpath) < 0) return -1;
    if (strcmp(str, "LORA"))
        return lc_fail("%s: peft_type is \"%s\"; lorac loads LORA adapters only", cpath, str);
    if (lc_json_num(cfg, "r", &r, cpath) < 0 || lc_json_num(cfg, "lora_alpha", &alpha, cpath) < 0 ||
        lc_json_num(cfg, "lora_dropout", &dropout, cpath) < 0)
        return -1;
    if ((rc = lc_json_bool(cfg, "use_dora", &flag, cpath)) < 0) return -1;
    if (rc == 1 && flag) return lc_fail("%s: use_dora is true; lorac does not implement DoRA", cpath);
    if ((rc = lc_json_bool(cfg, "fan_in_fan_out", &flag, cpath)) < 0) return -1;
    if (rc == 1 && flag)
        return lc_fail("%s: fan_in_fan_out is true (a GPT-2-style Conv1D model); lorac adapts "
                       "Llama-family linear layers only",
                       cpath);
    if (lc_json_str(cfg, "bias", &str, cpath) == 1 && strcmp(str, "none"))
        return lc_fail("%s: bias is \"%s\"; lorac supports bias \"none\" only", cpath, str);
    bool rslora = false;
    if (lc_json_bool(cfg, "use_rslora", &rslora, cpath) < 0) return -1;
    const cJSON *pat;
    if (lc_json_obj(cfg, "rank_pattern", &pat, cpath) == 1 && cJSON_GetArraySize(pat) > 0)
        return lc_fail("%s: rank_pattern is not empty; lorac needs one rank for every module",
                       cpath);
    if (lc_json_obj(cfg, "alpha_pattern", &pat, cpath) == 1 && cJSON_GetArraySize(pat) > 0)
        return lc_fail("%s: alpha_pattern is not empty; lorac needs one alpha for every module",
                       cpath);
    char *wpath = lc_path_join(dir, "adapter_model.safetensors");
    if (!lc_is_file(wpath)) {
        free(wpath);
        return lc_fail("%s: no adapter_model.safetensors beside adapter_config.json (an "
                       "adapter_model.bin must be converted to safetensors first)",
                       dir);
    }
    lc_safetensors st;
    layout lay = {PEFT_PREFIX, "lora_A.weight", "lora_B.weight", true, false};
    rc = open_st(wpath, &st);
    if (rc == 0) rc = collect(s, &st, &lay, wpath);
    lc_st_close(&st);
    free(wpath);
    if (rc != 0) return -1;
    if ((double)s->rank != r)
        return lc_fail("%s: r is %g but the tensors have rank %lld", cpath, r, (long long)s->rank);
    if (!isfinite(alpha) || !(dropout >= 0 && dropout < 1))
        return lc_fail("%s: lora_alpha must be finite and lora_dropout in [0, 1), got %g and %g",
                       cpath, alpha, dropout);
    if (check_peft_targets(cfg, cpath, s) != 0) return -1;
    s->scale = rslora ? alpha / sqrt(r) : alpha / r;
    s->dropout = dropout;
    s->num_layers = -1;
    return 0;
}

/* Reads mlx-lm's adapter_config.json fields into s (scale, dropout, num_layers). */
static int read_mlx_config(const cJSON *cfg, const char *cpath, lc_adapter_set *s) {
    const char *str;
    if (lc_json_str(cfg, "fine_tune_type", &str, cpath) == 1 && strcmp(str, "lora"))
        return lc_fail("%s: fine_tune_type is \"%s\"; lorac loads LoRA adapters only", cpath, str);
    int64_t nl = -1;
    if (lc_json_int(cfg, "num_layers", &nl, cpath) < 0) return -1;
    const cJSON *lp;
    int rc = lc_json_obj(cfg, "lora_parameters", &lp, cpath);
    if (rc < 0) return -1;
    if (rc == 0) return lc_fail("%s: no lora_parameters (is this an mlx-lm adapter folder?)", cpath);
    double scale = 20.0, dropout = 0, rank = 0, alpha = 0;
    int has_scale, has_alpha, has_rank;
    if ((has_scale = lc_json_num(lp, "scale", &scale, cpath)) < 0 ||
        lc_json_num(lp, "dropout", &dropout, cpath) < 0 ||
        (has_rank = lc_json_num(lp, "rank", &rank, cpath)) < 0 ||
        (has_alpha = lc_json_num(lp, "alpha", &alpha, cpath)) < 0)
        return -1;
    if (!has_scale && has_alpha && s->rank > 0) scale = alpha / (double)s->rank;
    if (has_rank && (double)s->rank != rank)
        return lc_fail("%s: lora_parameters.rank is %g but the tensors have rank %lld", cpath, rank,
                       (long long)s->rank);
    if (!isfinite(scale) || !(dropout >= 0 && dropout < 1))
        return lc_fail("%s: lora_parameters.scale must be finite and dropout in [0, 1), got %g "
                       "and %g",
                       cpath, scale, dropout);
    const cJSON *keys;
    if ((rc = lc_json_arr(lp, "keys", &keys, cpath)) < 0) return -1;
    if (rc == 1) {
        unsigned listed = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, keys) {
            int k = cJSON_IsString(e) ? lc_lora_key_parse(e->valuestring) : -1;
            if (k < 0)
                return lc_fail("%s: lora_parameters.keys: %s%s%s is not one of the projections "
                               "lorac adapts (self_attn.q_proj ... mlp.down_proj)",
                               cpath, cJSON_IsString(e) ? "'" : "",
                               cJSON_IsString(e) ? e->valuestring : lc_json_type_name(e),
                               cJSON_IsString(e) ? "'" : "");
            listed |= 1u << k;
        }
        for (size_t i = 0; i < s->n; i++)
            if (!(listed & (1u << s->t[i].key)))
                return lc_fail("%s: the weights adapt %s, which lora_parameters.keys does not list",
                               cpath, s->t[i].name);
    }
    s->scale = scale;
    s->dropout = dropout;
    s->num_layers = nl;
    return 0;
}

static int load_mlx_file(const char *file, const char *cpath, lc_adapter_set *s) {
    lc_safetensors st;
    layout lay = {"", "lora_a", "lora_b", false, false};
    int rc = open_st(file, &st);
    if (rc == 0) rc = collect(s, &st, &lay, file);
    lc_st_close(&st);
    if (rc != 0) return -1;
    s->scale = 0; // unknown unless a config says
    s->num_layers = -1;
    if (!cpath || !lc_is_file(cpath)) return 0;
    cJSON *cfg;
    if (lc_json_parse_file(cpath, CONFIG_MAX_BYTES, &cfg) != 0) return -1;
    rc = read_mlx_config(cfg, cpath, s);
    cJSON_Delete(cfg);
    return rc;
}

static char *dir_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return xstrdup(".");
    if (slash == path) return xstrdup("/");
    return xstrndup(path, (size_t)(slash - path));
}

int lc_adapters_load(const char *path, lc_adapter_set *s) {
    memset(s, 0, sizeof *s);
    int rc;
    if (lc_is_dir(path)) {
        char *cpath = lc_path_join(path, "adapter_config.json");
        if (!lc_is_file(cpath)) {
            rc = lc_fail("%s: no adapter_config.json in this folder (expected an mlx-lm or PEFT "
                         "adapter folder)",
                         path);
        } else {
            cJSON *cfg;
            rc = lc_json_parse_file(cpath, CONFIG_MAX_BYTES, &cfg);
            if (rc == 0) {
                if (!cJSON_IsObject(cfg)) {
                    rc = lc_fail("%s: expected a JSON object", cpath);
                } else if (cJSON_GetObjectItemCaseSensitive(cfg, "peft_type")) {
                    rc = load_peft(path, cfg, cpath, s);
                } else {
                    char *file = lc_path_join(path, "adapters.safetensors");
                    rc = load_mlx_file(file, cpath, s);
                    free(file);
                }
                cJSON_Delete(cfg);
            }
        }
        free(cpath);
    } else if (lc_is_file(path)) {
        char *dir = dir_of(path);
        char *cpath = lc_path_join(dir, "adapter_config.json");
        rc = load_mlx_file(path, cpath, s);
        free(cpath);
        free(dir);
    } else {
        rc = lc_fail("%s: no such adapter file or folder", path);
    }
    if (rc != 0) lc_adapters_free(s);
    return rc;
}

int lc_adapters_check(const lc_adapter_set *s, const lc_model_config *c, const char *what) {
    for (size_t i = 0; i < s->n; i++) {
        const lc_lora_tensor *t = &s->t[i];
        if (t->layer >= c->num_hidden_layers)
            return lc_fail("%s: %s is on layer %d but the model has %lld layers (0..%lld): "
                           "these adapters were trained for another model",
                           what, t->name, t->layer, (long long)c->num_hidden_layers,
                           (long long)c->num_hidden_layers - 1);
        int64_t in, out;
        lc_lora_key_dims(c, t->key, &in, &out);
        if (t->in != in || t->out != out)
            return lc_fail("%s: %s maps %lld -> %lld features but the model's %s maps %lld -> "
                           "%lld: these adapters were trained for another model",
                           what, t->name, (long long)t->in, (long long)t->out,
                           lc_lora_key_short(t->key), (long long)in, (long long)out);
    }
    return 0;
}

/* ---- resumable training checkpoints ---- */

char *lc_train_state_path(const char *dir, int64_t step) {
    char name[64];
    snprintf(name, sizeof name, "%07" PRId64 "_train_state.safetensors", step);
    return lc_path_join(dir, name);
}

int lc_train_state_write(const char *path, const lc_adapter_set *s, const lc_lora_moments *mom,
                         const lc_train_state_meta *meta) {
    return write_tensors(path, s, mom, meta);
}

void lc_train_state_free_moments(lc_lora_moments *mom, size_t n) {
    if (!mom) return;
    for (size_t i = 0; i < n; i++) {
        free(mom[i].m_a);
        free(mom[i].v_a);
        free(mom[i].m_b);
        free(mom[i].v_b);
    }
    free(mom);
}

static int meta_int(const lc_safetensors *st, const char *key, const char *path, int64_t *out) {
    const char *v = lc_st_meta(st, key);
    char *end;
    if (!v) return lc_fail("%s: __metadata__ lacks '%s' (not a complete lorac train state)", path, key);
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end) return lc_fail("%s: __metadata__ '%s' is not an integer", path, key);
    *out = x;
    return 0;
}

static int meta_num(const lc_safetensors *st, const char *key, const char *path, double *out) {
    const char *v = lc_st_meta(st, key);
    char *end;
    if (!v) return lc_fail("%s: __metadata__ lacks '%s' (not a complete lorac train state)", path, key);
    *out = strtod(v, &end);
    if (end == v || *end) return lc_fail("%s: __metadata__ '%s' is not a number", path, key);
    return 0;
}

static int meta_text(const lc_safetensors *st, const char *key, const char *path, char *out,
                     size_t cap) {
    const char *v = lc_st_meta(st, key);
    if (!v) return lc_fail("%s: __metadata__ lacks '%s' (not a complete lorac train state)", path, key);
    if (strlen(v) >= cap) return lc_fail("%s: __metadata__ '%s' is too long", path, key);
    strcpy(out, v);
    return 0;
}

static int read_moment(const lc_safetensors *st, const char *path, const char *name,
                       int64_t rows, int64_t cols, float **out) {
    const lc_tensor *t = lc_st_find(st, name);
    if (!t) return lc_fail("%s: lacks tensor '%s' (not a complete lorac train state)", path, name);
    if (t->dtype != LC_DT_F32 || t->ndim != 2 || t->shape[0] != rows || t->shape[1] != cols)
        return lc_fail("%s: tensor '%s' should be F32 [%lld, %lld]", path, name, (long long)rows,
                       (long long)cols);
    *out = tensor_f32(t, false);
    return 0;
}

int lc_train_state_read(const char *path, lc_adapter_set *s, lc_lora_moments **mom,
                        lc_train_state_meta *meta) {
    memset(s, 0, sizeof *s);
    memset(meta, 0, sizeof *meta);
    *mom = NULL;
    lc_safetensors st;
    layout lay = {"", "lora_a", "lora_b", false, true};
    int rc = open_st(path, &st);
    const char *fmt = rc == 0 ? lc_st_meta(&st, "format") : NULL;
    if (rc == 0 && (!fmt || strcmp(fmt, TRAIN_STATE_FORMAT)))
        rc = lc_fail("%s: not a lorac train state (its __metadata__ format is %s%s%s, expected "
                     "\"" TRAIN_STATE_FORMAT "\")",
                     path, fmt ? "\"" : "", fmt ? fmt : "absent", fmt ? "\"" : "");
    if (rc == 0) rc = collect(s, &st, &lay, path);
    char hash[32];
    if (rc == 0)
        rc = meta_int(&st, "step", path, &meta->step) || meta_num(&st, "lora_scale", path, &s->scale) ||
                     meta_num(&st, "lora_dropout", path, &s->dropout) ||
                     meta_int(&st, "num_layers", path, &s->num_layers) ||
                     meta_text(&st, "rng", path, meta->rng, sizeof meta->rng) ||
                     meta_text(&st, "data_position", path, meta->data_pos, sizeof meta->data_pos) ||
                     meta_text(&st, "options_hash", path, hash, sizeof hash)
                 ? -1
                 : 0;
    if (rc == 0 && lc_st_meta(&st, "trained_tokens")) /* absent in older train states */
        rc = meta_int(&st, "trained_tokens", path, &meta->trained_tokens);
    if (rc == 0 && (meta->step < 0 || meta->trained_tokens < 0))
        rc = lc_fail("%s: __metadata__ 'step' and 'trained_tokens' must not be negative", path);
    if (rc == 0) {
        char *end;
        meta->options_hash = strtoull(hash, &end, 16);
        if (end == hash || *end) rc = lc_fail("%s: __metadata__ 'options_hash' is not hexadecimal", path);
    }
    if (rc == 0) {
        *mom = xcalloc(s->n + 1, sizeof **mom);
        char name[200];
        for (size_t i = 0; i < s->n && rc == 0; i++) {
            const lc_lora_tensor *t = &s->t[i];
            lc_lora_moments *m = &(*mom)[i];
            snprintf(name, sizeof name, "%s.lora_a.adam_m", t->name);
            rc = read_moment(&st, path, name, t->in, t->r, &m->m_a);
            snprintf(name, sizeof name, "%s.lora_a.adam_v", t->name);
            if (rc == 0) rc = read_moment(&st, path, name, t->in, t->r, &m->v_a);
            snprintf(name, sizeof name, "%s.lora_b.adam_m", t->name);
            if (rc == 0) rc = read_moment(&st, path, name, t->r, t->out, &m->m_b);
            snprintf(name, sizeof name, "%s.lora_b.adam_v", t->name);
            if (rc == 0) rc = read_moment(&st, path, name, t->r, t->out, &m->v_b);
        }
    }
    lc_st_close(&st);
    if (rc != 0) {
        if (*mom) lc_train_state_free_moments(*mom, s->n);
        *mom = NULL;
        lc_adapters_free(s);
    }
    return rc;
}

/* The step of a "NNNNNNN_train_state.safetensors" name, or -1. */
static int64_t state_step(const char *name) {
    static const char suffix[] = "_train_state.safetensors";
    size_t n = strlen(name), ns = sizeof suffix - 1, digits = 0;
    while (isdigit((unsigned char)name[digits])) digits++;
    if (digits < 7 || digits > 15 || n != digits + ns || strcmp(name + digits, suffix)) return -1;
    return strtoll(name, NULL, 10);
}

static int cmp_desc(const void *x, const void *y) {
    int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
    return a < b ? 1 : a > b ? -1 : 0;
}

int lc_train_state_find_latest(const char *dir, char **path, int64_t *step) {
    *path = NULL;
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT) return 0;
        return lc_fail("%s: cannot list the folder: %s", dir, strerror(errno));
    }
    int64_t *steps = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        int64_t st = state_step(e->d_name);
        if (st < 0) continue;
        if (n == cap) steps = xrealloc(steps, (cap = cap ? cap * 2 : 16) * sizeof *steps);
        steps[n++] = st;
    }
    closedir(d);
    if (n) qsort(steps, n, sizeof *steps, cmp_desc);
    int found = 0;
    for (size_t i = 0; i < n && !found; i++) {
        char *p = lc_train_state_path(dir, steps[i]);
        lc_adapter_set s;
        lc_lora_moments *mom;
        lc_train_state_meta meta;
        if (lc_train_state_read(p, &s, &mom, &meta) == 0) {
            lc_train_state_free_moments(mom, s.n);
            lc_adapters_free(&s);
            *path = p;
            *step = steps[i];
            found = 1;
        } else {
            free(p);
        }
    }
    free(steps);
    lc_err_clear();
    return found;
}
