/*
 * fuse.c — merging LoRA adapters into the base weights; writing a Hugging Face model
 * folder. See fuse.h.
 *
 * Sections: the config text, planning (open), the weights, the folder (temporary
 * folder, rename into place, clean-up).
 */
#include "model/fuse.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend/backend.h"
#include "core/error.h"
#include "core/file.h"
#include "core/json.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/vec.h"
#include "backend/quant.h"
#include "model/model.h"

/* The files of a tokenizer that transformers and the other tools look for beside a
 * model; the ones present are copied. */
static const char *const TOKENIZER_FILES[] = {
    "tokenizer.json",    "tokenizer.model",          "tokenizer.model.v3",  "tekken.json",
    "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
    "merges.txt",        "chat_template.jinja",      "chat_template.json",  NULL};

/* Elements converted per piece when a tensor streams through fp32. */
enum { CHUNK = 1 << 20 };

struct lc_fuser {
    char *dir;           // the base model folder
    char *what;          // names the adapters in errors
    lc_fuse_options o;
    lc_model_config cfg;
    char *config_text;   // config.json with the output dtype
    lc_safetensors st;
    lc_adapter_set ad;   // a copy of the caller's set
    lc_param_spec *spec; // the tensors to write, in transformers' order
    size_t n_spec;
    int *adapter_of;     // (n_spec): index into ad.t, or -1
    size_t chunk;        // elements per conversion piece (at most CHUNK)
    lc_model *model;     // a quantized base, loaded (NULL: a float base, read from st)
    const lc_wt **wt;    // (n_spec) with model: the loader's view of each 2-D weight, or NULL
    size_t big_bytes;    // the largest float tensor with an adapter, in fp32
    lc_fuse_plan plan;
};

/* ---------------------------------------------------------- the config text */

static const char *torch_dtype_name(lc_dtype dt) {
    return dt == LC_DT_BF16 ? "bfloat16" : dt == LC_DT_F16 ? "float16" : "float32";
}

static size_t skip_ws(const char *s, size_t i, size_t n) {
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) i++;
    return i;
}

/* s[i] is '"': returns the index just past the closing quote. */
static size_t skip_string(const char *s, size_t i, size_t n) {
    for (i++; i < n && s[i] != '"'; i++)
        if (s[i] == '\\') i++;
    return i < n ? i + 1 : n;
}

/* Returns the index just past the JSON value at s[i] (the text is known to be valid). */
static size_t skip_value(const char *s, size_t i, size_t n) {
    if (s[i] == '"') return skip_string(s, i, n);
    if (s[i] == '{' || s[i] == '[') {
        int depth = 0;
        while (i < n) {
            char c = s[i];
            if (c == '"') {
                i = skip_string(s, i, n);
                continue;
            }
            if (c == '{' || c == '[') depth++;
            else if ((c == '}' || c == ']') && --depth == 0) return i + 1;
            i++;
        }
        return n;
    }
    while (i < n && s[i] != ',' && s[i] != '}' && s[i] != ']' && s[i] != ' ' && s[i] != '\n' &&
           s[i] != '\t' && s[i] != '\r')
        i++;
    return i;
}

/* One change to the config text: bytes [at, end) become `with`. */
typedef struct {
    size_t at, end;
    const char *with;
} text_edit;

/* The config text with its dtype keys set to dt and, when drop_quant, its quantization
 * members removed (with the comma that joined each to its neighbours). */
static int config_text_edit(const char *text, size_t len, lc_dtype dt, bool drop_quant,
                            const char *what, char **out) {
    *out = NULL;
    cJSON *j;
    if (lc_json_parse(text, len, what, &j) != 0) return -1;
    bool obj = cJSON_IsObject(j);
    cJSON_Delete(j);
    if (!obj) return lc_fail("%s: expected a JSON object", what);
    char value[32];
    snprintf(value, sizeof value, "\"%s\"", torch_dtype_name(dt));
    /* Walk the top-level members, noting the dtype values and the members to drop. */
    text_edit ed[16];
    size_t ne = 0, kept = 0, dtypes = 0;
    size_t i = skip_ws(text, 0, len) + 1; // past '{'
    size_t open = i, prev_end = 0;        // prev_end: just past the last kept value
    bool cut_pending = false;             // a dropped member waits for the next one's start
    size_t cut_at = 0;
    for (;;) {
        i = skip_ws(text, i, len);
        if (i >= len || text[i] == '}') break;
        size_t k0 = i;
        if (cut_pending) { // the dropped member (and its comma) run up to this key
            if (ne < 16) ed[ne++] = (text_edit){cut_at, k0, ""};
            cut_pending = false;
        }
        i = skip_string(text, i, len);
        size_t klen = i - k0;
        i = skip_ws(text, i, len) + 1; // past ':'
        i = skip_ws(text, i, len);
        size_t v0 = i;
        i = skip_value(text, i, len);
        size_t v1 = i;
        bool quant = (klen == 14 && !memcmp(text + k0, "\"quantization\"", 14)) ||
                     (klen == 21 && !memcmp(text + k0, "\"quantization_config\"", 21));
        if (drop_quant && quant) {
            cut_at = k0;
            cut_pending = true;
        } else {
            if ((klen == 13 && !memcmp(text + k0, "\"torch_dtype\"", 13)) ||
                (klen == 7 && !memcmp(text + k0, "\"dtype\"", 7))) {
                if (ne < 16) ed[ne++] = (text_edit){v0, v1, value};
                dtypes++;
            }
            kept++;
            prev_end = v1;
        }
        i = skip_ws(text, i, len);
        if (i < len && text[i] == ',') i++;
    }
    if (cut_pending) { // the last member was dropped: take the comma before it instead
        size_t from = kept ? prev_end : cut_at, to = i;
        while (to > from && (text[to - 1] == ' ' || text[to - 1] == '\n' || text[to - 1] == '\t' ||
                             text[to - 1] == '\r'))
            to--;
        while (ne > 0 && ed[ne - 1].at >= from) ne--; // dropped members just before it
        ed[ne++] = (text_edit){from, to, ""};
    }
    if (ne == 16) return lc_fail("%s: too many dtype or quantization keys", what);
    lc_buf b = {0};
    size_t at = 0;
    if (dtypes == 0) {
        lc_buf_append(&b, text, open);
        lc_buf_printf(&b, "\n  \"torch_dtype\": %s%s", value, kept ? "," : "\n");
        at = open;
    }
    for (size_t k = 0; k < ne; k++) { // the edits are in text order and never overlap
        lc_buf_append(&b, text + at, ed[k].at - at);
        lc_buf_puts(&b, ed[k].with);
        at = ed[k].end;
    }
    lc_buf_append(&b, text + at, len - at);
    *out = b.data;
    return 0;
}

int lc_config_text_set_dtype(const char *text, size_t len, lc_dtype dt, const char *what,
                             char **out) {
    return config_text_edit(text, len, dt, false, what, out);
}

int lc_config_text_dequantized(const char *text, size_t len, lc_dtype dt, const char *what,
                               char **out) {
    return config_text_edit(text, len, dt, true, what, out);
}

/* ---------------------------------------------------------- planning */

void lc_fuser_free(lc_fuser *f) {
    if (!f) return;
    free(f->dir);
    free(f->what);
    free(f->config_text);
    lc_st_close(&f->st);
    lc_adapters_free(&f->ad);
    free(f->spec);
    free(f->adapter_of);
    free(f->wt);
    lc_model_free(f->model);
    free(f);
}

const lc_fuse_plan *lc_fuser_plan(const lc_fuser *f) { return &f->plan; }

/* A deep copy of s (lc_adapters_free frees it). */
static void copy_adapters(lc_adapter_set *dst, const lc_adapter_set *s) {
    *dst = *s;
    dst->t = xcalloc(s->n ? s->n : 1, sizeof *dst->t);
    for (size_t i = 0; i < s->n; i++) {
        dst->t[i] = s->t[i];
        size_t na = (size_t)(s->t[i].in * s->t[i].r), nb = (size_t)(s->t[i].r * s->t[i].out);
        dst->t[i].a = xmalloc(na * sizeof(float) + 1);
        dst->t[i].b = xmalloc(nb * sizeof(float) + 1);
        memcpy(dst->t[i].a, s->t[i].a, na * sizeof(float));
        memcpy(dst->t[i].b, s->t[i].b, nb * sizeof(float));
    }
}

static size_t spec_numel(const lc_param_spec *p) {
    return (size_t)p->shape[0] * (size_t)(p->ndim > 1 ? p->shape[1] : 1);
}

int lc_fuser_open(lc_fuser **out, const char *model_dir, const lc_adapter_set *s,
                  const char *what, const lc_fuse_options *o) {
    *out = NULL;
    if (!o->keep_dtype && o->dtype != LC_DT_F32 && o->dtype != LC_DT_F16 && o->dtype != LC_DT_BF16)
        return lc_fail("fuse: the output dtype must be F32, F16 or BF16, not %s",
                       lc_dtype_name(o->dtype));
    if (!(s->scale != 0 && isfinite(s->scale)))
        return lc_fail("%s: the LoRA scale is unknown or zero (an adapters .safetensors file needs "
                       "its adapter_config.json beside it): give the adapter folder",
                       what);
    if (lc_model_dir_check(model_dir) != 0) return -1;
    lc_fuser *f = xcalloc(1, sizeof *f);
    f->dir = xstrdup(model_dir);
    f->what = xstrdup(what);
    f->o = *o;
    copy_adapters(&f->ad, s);
    char *cpath = lc_path_join(model_dir, "config.json");
    char *text = NULL;
    size_t len = 0;
    cJSON *cj = NULL;
    int rc = lc_read_file(cpath, (size_t)16 << 20, &text, &len);
    if (rc == 0) rc = lc_json_parse(text, len, cpath, &cj);
    cJSON_Delete(cj);
    if (rc == 0) rc = lc_config_load(&f->cfg, model_dir);
    if (rc == 0) rc = lc_st_open(&f->st, model_dir);
    if (rc == 0) rc = lc_config_check_weights(&f->cfg, &f->st, model_dir);
    if (rc == 0) rc = lc_adapters_check(&f->ad, &f->cfg, what);
    if (rc != 0) goto fail;
    f->plan.base_quant = f->cfg.quant;
    if (f->cfg.quant.fmt != LC_QUANT_NONE || o->quantize.fmt != LC_QUANT_NONE) {
        /* a quantized base: the loader reads every format (and quantizes at load when
         * asked); its weights are dequantized a panel at a time when written */
        lc_load_options lo = {.quantize = o->quantize,
                              .quantize_embeddings = o->quantize_embeddings, .device = "cpu"};
        if (lc_model_load_opts(model_dir, &lo, &f->model) != 0) goto fail;
        f->plan.base_quant = lc_model_cfg(f->model)->quant;
        f->plan.held_bytes = lc_model_weight_bytes(f->model);
        if (f->o.keep_dtype) f->o.keep_dtype = false, f->o.dtype = LC_DT_BF16;
        o = &f->o;
    }

    f->n_spec = lc_config_tensors(&f->cfg, &f->spec);
    if (f->model) {
        f->wt = xcalloc(f->n_spec + 1, sizeof *f->wt);
        for (size_t i = 0; i < f->n_spec; i++) {
            const char *nm = f->spec[i].name;
            if (!strcmp(nm, "model.embed_tokens.weight")) f->wt[i] = lc_model_weight(f->model, -1, 0);
            else if (!strcmp(nm, "lm_head.weight")) f->wt[i] = lc_model_weight(f->model, -1, 1);
            for (int l = 0; l < f->cfg.num_hidden_layers && !f->wt[i]; l++)
                for (int k = 0; k < LC_NKEYS; k++) {
                    char wname[160];
                    snprintf(wname, sizeof wname, "model.layers.%d.%s.weight", l,
                             lc_lora_key_path((lc_lora_key)k));
                    if (!strcmp(wname, nm)) f->wt[i] = lc_model_weight(f->model, l, k);
                }
        }
    }
    f->adapter_of = xmalloc(f->n_spec * sizeof *f->adapter_of + 1);
    lc_fuse_plan *p = &f->plan;
    for (size_t i = 0; i < f->n_spec; i++) {
        f->adapter_of[i] = -1;
        for (size_t k = 0; k < f->ad.n; k++) {
            char wname[128];
            snprintf(wname, sizeof wname, "%s.weight", f->ad.t[k].name);
            if (!strcmp(wname, f->spec[i].name)) f->adapter_of[i] = (int)k;
        }
    }
    for (size_t k = 0; k < f->ad.n; k++) {
        bool found = false;
        for (size_t i = 0; i < f->n_spec && !found; i++) found = f->adapter_of[i] == (int)k;
        if (!found) {
            rc = lc_fail("%s: adapter %s has no weight %s.weight in %s to merge into", what,
                         f->ad.t[k].name, f->ad.t[k].name, model_dir);
            goto fail;
        }
        p->adapter_bytes += (size_t)(f->ad.t[k].in + f->ad.t[k].out) * (size_t)f->ad.t[k].r * 4;
    }

    /* the plan: sizes, files (the writer's rule: a new file when the next tensor would
     * overflow a non-empty one), dtype */
    size_t shard = 0;
    p->n_files = 1;
    size_t biggest = 0;
    f->chunk = 1;
    for (size_t i = 0; i < f->n_spec; i++) {
        const lc_tensor *t = lc_st_find(&f->st, f->spec[i].name);
        lc_dtype dt = o->keep_dtype ? t->dtype : o->dtype;
        size_t nb = spec_numel(&f->spec[i]) * lc_dtype_size(dt);
        if (f->wt && f->wt[i] && f->wt[i]->q) {
            /* dequantized a panel of rows at a time: no whole-tensor fp32 buffer */
            p->n_tensors++;
            p->out_bytes += nb;
            if (f->adapter_of[i] >= 0) p->n_fused++;
            if (o->max_shard_bytes && shard > 0 && shard + nb > o->max_shard_bytes) {
                p->n_files++;
                shard = 0;
            }
            shard += nb;
            continue;
        }
        if (o->max_shard_bytes && shard > 0 && shard + nb > o->max_shard_bytes) {
            p->n_files++;
            shard = 0;
        }
        shard += nb;
        p->out_bytes += nb;
        if (spec_numel(&f->spec[i]) > f->chunk) f->chunk = spec_numel(&f->spec[i]);
        p->n_tensors++;
        if (f->adapter_of[i] >= 0) {
            p->n_fused++;
            if (spec_numel(&f->spec[i]) * 4 > biggest) biggest = spec_numel(&f->spec[i]) * 4;
        }
    }
    if (f->chunk > CHUNK) f->chunk = CHUNK;
    for (size_t i = 0; f->wt && i < f->n_spec; i++) // a panel holds at least one row
        if (f->wt[i] && (size_t)f->wt[i]->cols > f->chunk) f->chunk = (size_t)f->wt[i]->cols;
    f->big_bytes = biggest;
    p->work_bytes = biggest + f->chunk * (4 + 4);
    for (int k = 0; k < f->st.n_files; k++) p->mapped_bytes += f->st.files[k].n_bytes;
    const lc_tensor *emb = lc_st_find(&f->st, "model.embed_tokens.weight");
    p->config_dtype = o->keep_dtype ? emb->dtype : o->dtype;
    size_t nt = 0;
    for (size_t k = 0; TOKENIZER_FILES[k]; k++) {
        char *tp = lc_path_join(model_dir, TOKENIZER_FILES[k]);
        if (lc_is_file(tp) && nt + 1 < sizeof p->tokenizer_files / sizeof p->tokenizer_files[0])
            p->tokenizer_files[nt++] = TOKENIZER_FILES[k];
        free(tp);
    }
    rc = (f->model ? lc_config_text_dequantized : lc_config_text_set_dtype)(
        text, len, p->config_dtype, cpath, &f->config_text);
    if (rc != 0) goto fail;
    free(cpath);
    free(text);
    *out = f;
    return 0;
fail:
    free(cpath);
    free(text);
    lc_fuser_free(f);
    return -1;
}

/* ---------------------------------------------------------- the weights */

/* Writes n elements at src (dtype sdt) as dtype ddt to tensor `name`, through fp32 in
 * pieces (bytes copied as they are when the dtypes agree). */
static int write_converted(lc_st_writer *w, const char *name, const void *src, lc_dtype sdt,
                           lc_dtype ddt, size_t n, size_t chunk, float *f32, unsigned char *bytes,
                           lc_progress *bar, size_t *done) {
    size_t es = lc_dtype_size(sdt), ed = lc_dtype_size(ddt);
    for (size_t at = 0; at < n; at += chunk) {
        size_t k = n - at < chunk ? n - at : chunk;
        const unsigned char *s = (const unsigned char *)src + at * es;
        int rc;
        if (sdt == ddt) {
            rc = lc_st_writer_write(w, name, s, k * es);
        } else {
            rc = lc_to_f32(f32, s, sdt, k);
            if (rc == 0) rc = lc_from_f32(bytes, ddt, f32, k);
            if (rc == 0) rc = lc_st_writer_write(w, name, bytes, k * ed);
        }
        if (rc != 0) return -1;
        *done += k * ed;
        if (bar) lc_progress_update(bar, (int64_t)*done);
    }
    return 0;
}

/* W (out, in) in fp32 += scale · (A B)^T: C (out, in) = scale · op(B) op(A) with
 * op(B) = B^T (out, r) from B stored (r, out), op(A) = A^T (r, in) from A stored (in, r). */
void lc_fuse_add_delta(lc_backend *be, float *w, const float *a, const float *b, int64_t in, int64_t out, int64_t r,
                       float scale) {
    be->gemm(be, true, true, out, in, r, scale, b, out, a, r, 1.0f, w, in);
}

static void add_delta(lc_backend *be, float *w, const lc_lora_tensor *t, float scale) {
    lc_fuse_add_delta(be, w, t->a, t->b, t->in, t->out, t->r, scale);
}

/* Writes the quantized weight of spec i as dtype dt: rows dequantized into fp32 a panel
 * at a time (f->chunk elements at most), the adapter's rows of scale · (A B)^T added. */
static int write_dequantized(lc_fuser *f, lc_st_writer *w, size_t i, lc_dtype dt, lc_backend *be,
                             float *panel, unsigned char *bytes, lc_progress *bar, size_t *done) {
    const lc_wt *q = f->wt[i];
    const lc_lora_tensor *a = f->adapter_of[i] >= 0 ? &f->ad.t[f->adapter_of[i]] : NULL;
    int64_t P = (int64_t)(f->chunk / (size_t)q->cols);
    if (P < 1) P = 1;
    for (int64_t r0 = 0; r0 < q->rows; r0 += P) {
        int64_t nr = q->rows - r0 < P ? q->rows - r0 : P;
        size_t n = (size_t)nr * (size_t)q->cols;
        if (lc_wt_dequantize_rows(panel, q, r0, r0 + nr) != 0)
            return lc_fail_prefix("%s: %s", f->dir, f->spec[i].name);
        if (a) // rows r0.. of B^T: columns r0.. of B (r, out)
            be->gemm(be, true, true, nr, a->in, a->r, (float)f->ad.scale, a->b + r0, a->out, a->a,
                     a->r, 1.0f, panel, a->in);
        if (lc_from_f32(bytes, dt, panel, n) != 0 ||
            lc_st_writer_write(w, f->spec[i].name, bytes, n * lc_dtype_size(dt)) != 0)
            return -1;
        *done += n * lc_dtype_size(dt);
        if (bar) lc_progress_update(bar, (int64_t)*done);
    }
    return 0;
}

static int write_weights(lc_fuser *f, const char *dir) {
    const lc_fuse_options *o = &f->o;
    lc_st_writer *w = lc_st_writer_new();
    lc_st_writer_meta(w, "format", "pt");
    int rc = 0;
    for (size_t i = 0; i < f->n_spec && rc == 0; i++) {
        const lc_tensor *t = lc_st_find(&f->st, f->spec[i].name);
        rc = lc_st_writer_add(w, f->spec[i].name, o->keep_dtype ? t->dtype : o->dtype,
                              f->spec[i].ndim, f->spec[i].shape);
    }
    if (rc == 0) rc = lc_st_writer_begin_dir(w, dir, o->max_shard_bytes);
    float *f32 = xmalloc(f->chunk * sizeof *f32);
    unsigned char *bytes = xmalloc(f->chunk * 4);
    float *big = NULL;
    lc_backend *be = f->plan.n_fused ? lc_backend_cpu_new(0) : NULL;
    float *panel = f->model ? xmalloc(f->chunk * sizeof *panel) : NULL;
    lc_progress bar;
    size_t done = 0;
    if (o->progress) lc_progress_start(&bar, "fuse", (int64_t)f->plan.out_bytes);
    for (size_t i = 0; i < f->n_spec && rc == 0; i++) {
        const lc_tensor *t = lc_st_find(&f->st, f->spec[i].name);
        lc_dtype dt = o->keep_dtype ? t->dtype : o->dtype;
        size_t n = t->numel;
        if (f->wt && f->wt[i] && f->wt[i]->q) {
            rc = write_dequantized(f, w, i, dt, be, panel, bytes, o->progress ? &bar : NULL, &done);
            continue;
        }
        if (f->adapter_of[i] < 0) {
            rc = write_converted(w, t->name, t->data, t->dtype, dt, n, f->chunk, f32, bytes,
                                 o->progress ? &bar : NULL, &done);
            continue;
        }
        const lc_lora_tensor *a = &f->ad.t[f->adapter_of[i]];
        if (!big) big = xmalloc(f->big_bytes + 4);
        rc = lc_to_f32(big, t->data, t->dtype, n);
        if (rc != 0) {
            lc_fail("%s: cannot read %s as %s", f->dir, t->name, lc_dtype_name(t->dtype));
            break;
        }
        add_delta(be, big, a, (float)f->ad.scale);
        rc = write_converted(w, t->name, big, LC_DT_F32, dt, n, f->chunk, f32, bytes,
                             o->progress ? &bar : NULL, &done);
    }
    if (rc == 0) rc = lc_st_writer_commit(w);
    if (o->progress) lc_progress_finish(&bar);
    if (be) be->free(be);
    lc_st_writer_free(w);
    free(big);
    free(panel);
    free(f32);
    free(bytes);
    return rc;
}

/* ---------------------------------------------------------- the folder */

static int copy_file(const char *src, const char *dst) {
    char *data;
    size_t len;
    if (lc_read_file(src, (size_t)4 << 30, &data, &len) != 0) return -1;
    int rc = lc_write_file_atomic(dst, data, len);
    free(data);
    return rc;
}

static int write_in(const char *dir, const char *name, const char *text) {
    char *p = lc_path_join(dir, name);
    int rc = lc_write_file_atomic(p, text, strlen(text));
    free(p);
    return rc;
}

/* Removes a folder holding only plain files (what this module writes). Returns 0 or -1
 * (no error recorded: used on the way out of a failure, whose message stands). */
static int remove_flat_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *p = lc_path_join(dir, e->d_name);
        unlink(p);
        free(p);
    }
    closedir(d);
    return rmdir(dir);
}

/* 0: absent; 1: an empty folder; 2: a folder of plain files; 3: a folder with
 * subfolders; 4: not a folder. */
static int dest_state(const char *path) {
    struct stat sb;
    if (lstat(path, &sb) != 0) return 0;
    if (!S_ISDIR(sb.st_mode)) return 4;
    DIR *d = opendir(path);
    if (!d) return 3;
    int state = 1;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *p = lc_path_join(path, e->d_name);
        struct stat fs;
        if (lstat(p, &fs) == 0 && S_ISDIR(fs.st_mode)) state = 3;
        else if (state < 2) state = 2;
        free(p);
    }
    closedir(d);
    return state;
}

/* fsyncs a folder so that renames inside it survive a crash (best effort). */
static void sync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

static char *parent_of(const char *path) {
    char *p = xstrdup(path);
    size_t n = strlen(p);
    while (n > 1 && p[n - 1] == '/') p[--n] = '\0';
    char *slash = strrchr(p, '/');
    if (!slash) {
        free(p);
        return xstrdup(".");
    }
    if (slash == p) slash[1] = '\0';
    else *slash = '\0';
    return p;
}

int lc_fuser_write(lc_fuser *f, const char *save_path) {
    int state = dest_state(save_path);
    if (state == 4)
        return lc_fail("%s: exists and is not a folder; choose another --save-path", save_path);
    if (state >= 2 && !f->o.force)
        return lc_fail("%s: exists and is not empty; pass --force to replace it, or choose "
                       "another --save-path",
                       save_path);
    if (state == 3)
        return lc_fail("%s: holds subfolders; --force replaces only a flat model folder (remove "
                       "it yourself, or choose another --save-path)",
                       save_path);
    char *parent = parent_of(save_path);
    if (lc_mkdirs(parent) != 0) {
        free(parent);
        return -1;
    }
    /* the new folder is built beside the destination, then renamed into place */
    size_t n = strlen(save_path);
    while (n > 1 && save_path[n - 1] == '/') n--;
    char *tmp = xmalloc(n + 16);
    snprintf(tmp, n + 16, "%.*s.tmp-XXXXXX", (int)n, save_path);
    if (!mkdtemp(tmp)) {
        int e = errno;
        free(tmp);
        free(parent);
        return lc_fail("%s: cannot create a temporary folder beside it: %s", save_path,
                       strerror(e));
    }
    mode_t mask = umask(0); // mkdtemp makes 0700; a model folder is as readable as any other
    umask(mask);
    chmod(tmp, 0777 & ~mask);
    int rc = write_in(tmp, "config.json", f->config_text);
    char *gsrc = lc_path_join(f->dir, "generation_config.json");
    if (rc == 0) {
        char *gdst = lc_path_join(tmp, "generation_config.json");
        if (lc_is_file(gsrc)) {
            rc = copy_file(gsrc, gdst);
        } else {
            char *g = lc_generation_config_to_json(&f->cfg);
            rc = lc_write_file_atomic(gdst, g, strlen(g));
            free(g);
        }
        free(gdst);
    }
    free(gsrc);
    for (size_t k = 0; rc == 0 && f->plan.tokenizer_files[k]; k++) {
        char *src = lc_path_join(f->dir, f->plan.tokenizer_files[k]);
        char *dst = lc_path_join(tmp, f->plan.tokenizer_files[k]);
        rc = copy_file(src, dst);
        free(src);
        free(dst);
    }
    if (rc == 0) rc = write_weights(f, tmp);
    char *old = NULL;
    if (rc == 0 && state == 1 && rmdir(save_path) != 0)
        rc = lc_fail("%s: cannot replace the empty folder: %s", save_path, strerror(errno));
    if (rc == 0 && state == 2) { // --force: move the old folder aside first
        old = xmalloc(n + 16);
        snprintf(old, n + 16, "%.*s.old-XXXXXX", (int)n, save_path);
        if (!mkdtemp(old) || rename(save_path, old) != 0) {
            rc = lc_fail("%s: cannot move the old folder aside: %s", save_path, strerror(errno));
            rmdir(old);
            free(old);
            old = NULL;
        }
    }
    if (rc == 0 && rename(tmp, save_path) != 0) {
        rc = lc_fail("%s: cannot rename %s into place: %s", save_path, tmp, strerror(errno));
        if (old) rename(old, save_path); // put the old folder back
    }
    if (rc == 0) {
        sync_dir(parent);
        if (old) remove_flat_dir(old);
    } else {
        remove_flat_dir(tmp);
        if (old) rmdir(old);
    }
    free(old);
    free(tmp);
    free(parent);
    return rc;
}
