/*
 * test_fuse.c — merging adapters into the base weights (src/model/fuse.h).
 *
 * The outside reference: tests/fixtures/model-ref holds transformers + PEFT float64
 * logits of three tiny models (Mistral untied with GQA, Llama tied with one kv head,
 * Qwen2 with biases) under random non-zero adapters. A model fused in F32 from those
 * adapters — written in both layouts, mlx-lm and PEFT, and loaded back — must give
 * those logits with no adapters attached (1e-5 of the largest, the bound and the
 * reasoning of test_model.c: fp32 rounding through a few hundred-term sums), and the
 * same as lorac's own base + adapters (1e-5). In BF16, every fused weight must be the
 * round-to-nearest-even of the exact W + scale (A B)^T (at most one ulp where fp32
 * accumulation lands on the other side of a rounding boundary, and rarely), and every
 * other tensor the conversion of the stored one; logits must agree with base + adapters
 * computed over the same bf16 base to the bf16 bound derived below. Also: sharding and
 * the index, the config text, and bad input (wrong model, missing files, an existing
 * destination) failing with one line and leaving nothing.
 *
 * `test_fuse --write-adapters DIR` writes, for each tiny model, the model-ref adapters as
 * an mlx-lm folder DIR/<name>/adapters (with the PEFT copy in adapters/peft) — the
 * inputs of tests/reference/check_fuse_transformers.py.
 */
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/file.h"
#include "core/json.h"
#include "core/mem.h"
#include "harness.h"
#include "io/adapters.h"
#include "io/safetensors.h"
#include "model/fuse.h"
#include "model/lora_io.h"
#include "model/model.h"

#define MODELS "tests/fixtures/models/"
#define REF "tests/fixtures/model-ref/"

static char tmpdir[256];
static const char *NAMES[] = {"tiny-mistral", "tiny-llama", "tiny-qwen2"};

static bool fixtures_present(void) { return lc_is_file(REF "tiny-mistral.json"); }

static char *tpath(const char *fmt, const char *a, const char *b) {
    char *p = xmalloc(512);
    char tail[256];
    snprintf(tail, sizeof tail, fmt, a, b);
    snprintf(p, 512, "%s/%s", tmpdir, tail);
    return p;
}

/* ---------------------------------------------------------------- fixtures */

typedef struct {
    cJSON *j;
    lc_adapter_set ad; // model-ref's adapters with the scale of its json
    int64_t B, T;
    int32_t *tok;
    int lengths[8];
    lc_safetensors ref;
} refcase;

static bool open_ref(refcase *r, const char *name) {
    memset(r, 0, sizeof *r);
    char p[256];
    snprintf(p, sizeof p, REF "%s.json", name);
    if (lc_json_parse_file(p, 1 << 20, &r->j) != 0) return printf("  %s\n", lc_errmsg()), false;
    snprintf(p, sizeof p, REF "%s.adapters.safetensors", name);
    if (lc_adapters_load(p, &r->ad) != 0) return printf("  %s\n", lc_errmsg()), false;
    r->ad.scale = cJSON_GetObjectItem(r->j, "scale")->valuedouble;
    r->ad.num_layers = (int64_t)cJSON_GetObjectItem(r->j, "num_layers")->valuedouble;
    snprintf(p, sizeof p, REF "%s.ref.safetensors", name);
    if (lc_st_open(&r->ref, p) != 0) return printf("  %s\n", lc_errmsg()), false;
    r->B = (int64_t)cJSON_GetObjectItem(r->j, "B")->valuedouble;
    r->T = (int64_t)cJSON_GetObjectItem(r->j, "T")->valuedouble;
    r->tok = xcalloc((size_t)(r->B * r->T), sizeof *r->tok);
    int b = 0;
    for (const cJSON *row = cJSON_GetObjectItem(r->j, "tokens")->child; row; row = row->next, b++) {
        int t = 0;
        for (const cJSON *v = row->child; v; v = v->next, t++) r->tok[b * r->T + t] = (int32_t)v->valuedouble;
    }
    b = 0;
    for (const cJSON *v = cJSON_GetObjectItem(r->j, "lengths")->child; v; v = v->next) r->lengths[b++] = (int)v->valuedouble;
    return true;
}

static void close_ref(refcase *r) {
    cJSON_Delete(r->j);
    lc_adapters_free(&r->ad);
    lc_st_close(&r->ref);
    free(r->tok);
}

/* Writes s as an mlx-lm folder dir (adapters.safetensors, adapter_config.json) with the
 * PEFT copy in dir/peft. Returns 0 or -1. */
static int write_both_layouts(const char *dir, const lc_adapter_set *s) {
    if (lc_mkdirs(dir) != 0) return -1;
    char *f = lc_path_join(dir, "adapters.safetensors"), *peft = lc_path_join(dir, "peft");
    int rc = lc_adapters_write_mlx(f, s);
    if (rc == 0) rc = lc_adapters_write_mlx_config(dir, s, NULL);
    if (rc == 0) rc = lc_adapters_write_peft(peft, s, NULL);
    free(f);
    free(peft);
    return rc;
}

static int fuse(const char *model, const lc_adapter_set *s, const char *out, bool keep,
                lc_dtype dt, size_t shard, bool force) {
    lc_fuse_options o = {.keep_dtype = keep, .dtype = dt, .max_shard_bytes = shard, .force = force};
    lc_fuser *f;
    if (lc_fuser_open(&f, model, s, "adapters", &o) != 0) return -1;
    int rc = lc_fuser_write(f, out);
    lc_fuser_free(f);
    return rc;
}

/* Logits (B, T, V) of model dir, with adapters s when not NULL, in fp32 products. */
static float *logits_of(const char *dir, const lc_adapter_set *s, const refcase *r, int64_t *V) {
    lc_model *m;
    if (lc_model_load(dir, &m) != 0) return printf("  %s\n", lc_errmsg()), NULL;
    lc_model_set_bf16_matmul(m, false);
    if (s && lc_model_apply_adapters(m, s, "adapters") != 0) {
        printf("  %s\n", lc_errmsg());
        lc_model_free(m);
        return NULL;
    }
    *V = lc_model_cfg(m)->vocab_size;
    float *lg = xmalloc((size_t)(r->B * r->T * *V) * sizeof *lg);
    lc_batch b = {r->B, r->T, r->tok, NULL, 0};
    int rc = lc_model_logits(m, &b, lg);
    lc_model_free(m);
    if (rc != 0) {
        printf("  %s\n", lc_errmsg());
        free(lg);
        return NULL;
    }
    return lg;
}

/* max |a - b| / max |b| over the real (unpadded) positions; b is float or double. */
static double rel_err(const refcase *r, int64_t V, const float *a, const float *bf, const double *bd) {
    double md = 0, mr = 0;
    for (int64_t b = 0; b < r->B; b++)
        for (int64_t t = 0; t < r->lengths[b]; t++)
            for (int64_t v = 0; v < V; v++) {
                size_t i = (size_t)((b * r->T + t) * V + v);
                double ref = bf ? (double)bf[i] : bd[i];
                md = fmax(md, fabs((double)a[i] - ref));
                mr = fmax(mr, fabs(ref));
            }
    return mr > 0 ? md / mr : md;
}

static bool same_file(const char *a, const char *b) {
    char *x, *y;
    size_t nx, ny;
    if (lc_read_file(a, 1 << 30, &x, &nx) != 0) return false;
    if (lc_read_file(b, 1 << 30, &y, &ny) != 0) return free(x), false;
    bool same = nx == ny && !memcmp(x, y, nx);
    free(x);
    free(y);
    return same;
}

/* The names in dir that contain needle (0 when none). */
static int count_entries(const char *dir, const char *needle) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.' && strstr(e->d_name, needle)) n++;
    closedir(d);
    return n;
}

/* ---------------------------------------------------------------- tests */

static void test_f32_matches_transformers(void) {
    if (!fixtures_present()) SKIP("tests/fixtures/model-ref is absent");
    for (int i = 0; i < 3; i++) {
        refcase r;
        if (!open_ref(&r, NAMES[i])) {
            CHECK_MSG(0, "%s: fixture", NAMES[i]);
            close_ref(&r);
            continue;
        }
        char *adir = tpath("%s-adapters", NAMES[i], "");
        CHECK_OK(write_both_layouts(adir, &r.ad));
        char base[256];
        snprintf(base, sizeof base, MODELS "%s", NAMES[i]);
        int64_t V = 0;
        float *own = logits_of(base, &r.ad, &r, &V);
        const lc_tensor *rt = lc_st_find(&r.ref, "logits");
        CHECK(own && rt && rt->dtype == LC_DT_F64 && rt->numel == (size_t)(r.B * r.T * V));
        char *outs[2];
        for (int layout = 0; layout < 2; layout++) {
            char *from = layout ? lc_path_join(adir, "peft") : xstrdup(adir);
            outs[layout] = tpath("%s-fused-f32-%s", NAMES[i], layout ? "peft" : "mlx");
            lc_adapter_set s;
            CHECK_OK(lc_adapters_load(from, &s));
            CHECK_OK(fuse(base, &s, outs[layout], false, LC_DT_F32, 0, false));
            lc_adapters_free(&s);
            int64_t V2 = 0;
            float *fused = logits_of(outs[layout], NULL, &r, &V2);
            CHECK(fused && V2 == V);
            if (fused && own && rt) {
                double e_ref = rel_err(&r, V, fused, NULL, rt->data);
                double e_own = rel_err(&r, V, fused, own, NULL);
                printf("  %s (%s layout): fused F32 logits vs transformers+PEFT %.2e, vs lorac "
                       "base+adapters %.2e\n",
                       NAMES[i], layout ? "PEFT" : "mlx-lm", e_ref, e_own);
                CHECK_MSG(e_ref < 1e-5, "%s: rel err %.3e vs the reference", NAMES[i], e_ref);
                CHECK_MSG(e_own < 1e-5, "%s: rel err %.3e vs base+adapters", NAMES[i], e_own);
            }
            free(fused);
            free(from);
        }
        /* both layouts give the same bytes; the tied model stays tied */
        char *a = lc_path_join(outs[0], "model.safetensors"), *b = lc_path_join(outs[1], "model.safetensors");
        CHECK_MSG(same_file(a, b), "%s: the two layouts fused differently", NAMES[i]);
        lc_safetensors st;
        CHECK_OK(lc_st_open(&st, outs[0]));
        lc_model_config c;
        CHECK_OK(lc_config_load(&c, outs[0]));
        CHECK_EQ_INT(c.tie_word_embeddings, i == 1);
        CHECK_EQ_INT(lc_st_find(&st, "lm_head.weight") != NULL, i != 1);
        CHECK_EQ_STR(lc_st_meta(&st, "format"), "pt");
        lc_st_close(&st);
        free(a), free(b), free(outs[0]), free(outs[1]), free(adir), free(own);
        close_ref(&r);
    }
}

/* Writes a copy of the model folder src with BF16 weights at dst. */
static int make_bf16_base(const char *src, const char *dst) {
    char *cp = lc_path_join(src, "config.json"), *text, *edited;
    size_t len;
    int rc = lc_read_file(cp, 1 << 20, &text, &len);
    free(cp);
    if (rc != 0) return -1;
    rc = lc_config_text_set_dtype(text, len, LC_DT_BF16, "config.json", &edited);
    free(text);
    if (rc != 0 || lc_mkdirs(dst) != 0) return -1;
    cp = lc_path_join(dst, "config.json");
    rc = lc_write_file_atomic(cp, edited, strlen(edited));
    free(cp);
    free(edited);
    lc_safetensors st;
    if (rc != 0 || lc_st_open(&st, src) != 0) return -1;
    lc_st_writer *w = lc_st_writer_new();
    lc_st_writer_meta(w, "format", "pt");
    for (size_t i = 0; i < st.n_tensors && rc == 0; i++)
        rc = lc_st_writer_add(w, st.tensors[i].name, LC_DT_BF16, st.tensors[i].ndim, st.tensors[i].shape);
    if (rc == 0) rc = lc_st_writer_begin_dir(w, dst, 0);
    for (size_t i = 0; i < st.n_tensors && rc == 0; i++) {
        const lc_tensor *t = &st.tensors[i];
        float *f = xmalloc(t->numel * 4 + 4);
        uint16_t *h = xmalloc(t->numel * 2 + 2);
        rc = lc_to_f32(f, t->data, t->dtype, t->numel);
        if (rc == 0) rc = lc_from_f32(h, LC_DT_BF16, f, t->numel);
        if (rc == 0) rc = lc_st_writer_write(w, t->name, h, t->numel * 2);
        free(f), free(h);
    }
    if (rc == 0) rc = lc_st_writer_commit(w);
    lc_st_writer_free(w);
    lc_st_close(&st);
    return rc;
}

/* The stored value of element k of t as a double. */
static double elem(const lc_tensor *t, size_t k) {
    float f;
    lc_to_f32(&f, (const unsigned char *)t->data + k * lc_dtype_size(t->dtype), t->dtype, 1);
    return f;
}

/* Checks every tensor of the fused folder `out` (dtype BF16) against the base: adapted
 * ones are RNE(W + scale (A B)^T) computed exactly (double), others the base's
 * conversion. Returns the number of adapted elements one ulp away. */
static size_t check_bf16_weights(const char *name, const char *base, const char *out,
                                 const lc_adapter_set *s, size_t *n_adapted) {
    lc_safetensors b, o;
    size_t off_by_one = 0;
    *n_adapted = 0;
    if (lc_st_open(&b, base) != 0 || lc_st_open(&o, out) != 0) {
        CHECK_MSG(0, "%s: %s", name, lc_errmsg());
        return 0;
    }
    size_t bad = 0;
    for (size_t i = 0; i < o.n_tensors; i++) {
        const lc_tensor *to = &o.tensors[i], *tb = lc_st_find(&b, to->name);
        CHECK_MSG(tb && to->dtype == LC_DT_BF16 && tb->numel == to->numel, "%s: %s", name, to->name);
        if (!tb || to->dtype != LC_DT_BF16 || tb->numel != to->numel) continue;
        const lc_lora_tensor *a = NULL;
        for (size_t k = 0; k < s->n; k++) {
            char wn[128];
            snprintf(wn, sizeof wn, "%s.weight", s->t[k].name);
            if (!strcmp(wn, to->name)) a = &s->t[k];
        }
        for (size_t k = 0; k < to->numel; k++) {
            uint16_t got;
            memcpy(&got, (const unsigned char *)to->data + 2 * k, 2);
            double want = elem(tb, k);
            if (a) {
                size_t oi = k / (size_t)a->in, ii = k % (size_t)a->in;
                double d = 0;
                for (int64_t j = 0; j < a->r; j++)
                    d += (double)a->a[ii * (size_t)a->r + (size_t)j] * a->b[(size_t)j * (size_t)a->out + oi];
                want += s->scale * d;
            }
            uint16_t exp = lc_f32_to_bf16((float)want);
            if (got == exp) continue;
            if (a && (got == exp + 1 || got + 1 == exp)) off_by_one++;
            else if (bad++ < 5)
                CHECK_MSG(0, "%s: %s[%zu] is %04x, expected %04x (%s)", name, to->name, k, got, exp,
                          a ? "adapted" : "copied");
        }
        if (a) *n_adapted += to->numel;
    }
    CHECK_EQ_INT(bad, 0);
    lc_st_close(&b);
    lc_st_close(&o);
    return off_by_one;
}

/* BF16 output from an F32 base (each tensor converted once) and from a BF16 base. The
 * logit bound for the BF16 base ("bf16 tolerance", measured on the model itself): base +
 * adapters and the fused model differ only by the rounding of each adapted weight to
 * bf16, at most half an ulp (2^-9 relative) — the same perturbation that storing the F32
 * base in bf16 puts on every weight. So the fused model may be off base + adapters by no
 * more than twice what converting the F32 base to bf16 does to its logits (with the
 * adapters on both). Measured: 7.6e-3 vs 1.9e-2 (Mistral), 4.8e-3 vs 1.3e-2 (Llama), of
 * the largest logit: these tiny random models have small logits, so relative errors are
 * large. */
static void test_bf16(void) {
    if (!fixtures_present()) SKIP("tests/fixtures/model-ref is absent");
    for (int i = 0; i < 2; i++) {
        refcase r;
        if (!open_ref(&r, NAMES[i])) {
            CHECK_MSG(0, "%s: fixture", NAMES[i]);
            close_ref(&r);
            continue;
        }
        char base[256];
        snprintf(base, sizeof base, MODELS "%s", NAMES[i]);
        char *out = tpath("%s-fused-bf16%s", NAMES[i], "");
        CHECK_OK(fuse(base, &r.ad, out, false, LC_DT_BF16, 0, false));
        size_t na, off = check_bf16_weights(NAMES[i], base, out, &r.ad, &na);
        printf("  %s F32 base -> BF16: %zu adapted elements, %zu one ulp off the exact rounding\n",
               NAMES[i], na, off);
        CHECK_MSG(off * 100 < na, "%s: %zu of %zu one ulp off", NAMES[i], off, na);
        char *cj = lc_path_join(out, "config.json");
        lc_model_config c;
        CHECK_OK(lc_config_load(&c, cj));
        CHECK(c.has_dtype && c.dtype == LC_DT_BF16);
        free(cj);

        char *b16 = tpath("%s-base-bf16%s", NAMES[i], ""), *out16 = tpath("%s-fused-from-bf16%s", NAMES[i], "");
        CHECK_OK(make_bf16_base(base, b16));
        CHECK_OK(fuse(b16, &r.ad, out16, true, LC_DT_COUNT, 0, false)); // keeps BF16
        off = check_bf16_weights(NAMES[i], b16, out16, &r.ad, &na);
        CHECK_MSG(off * 100 < na, "%s: %zu of %zu one ulp off", NAMES[i], off, na);
        int64_t V = 0, V2 = 0, V3 = 0;
        float *with = logits_of(b16, &r.ad, &r, &V), *fused = logits_of(out16, NULL, &r, &V2);
        float *f32 = logits_of(base, &r.ad, &r, &V3);
        CHECK(with && fused && f32 && V == V2 && V == V3);
        if (with && fused && f32) {
            double e = rel_err(&r, V, fused, with, NULL), conv = rel_err(&r, V, with, f32, NULL);
            printf("  %s BF16 base: fused logits vs base+adapters %.2e; storing the base in "
                   "bf16 moves them %.2e\n",
                   NAMES[i], e, conv);
            CHECK_MSG(e <= 2 * conv, "%s: bf16 rel err %.3e > 2 x %.3e", NAMES[i], e, conv);
        }
        free(with), free(fused), free(f32), free(b16), free(out16), free(out);
        close_ref(&r);
    }
}

/* lc_model_merge_lora (`generate --fuse`) on the CPU: the model with its adapters merged in
 * memory gives the logits, bit for bit, of the folder `lorac fuse` writes in the base's
 * dtype (float32 and bf16 bases; that folder is checked against transformers + PEFT above),
 * has no adapters after, and refuses a second merge. */
static void test_merge_in_memory(void) {
    if (!fixtures_present()) SKIP("tests/fixtures/model-ref is absent");
    refcase r;
    if (!open_ref(&r, NAMES[0])) {
        CHECK_MSG(0, "%s: fixture", NAMES[0]);
        close_ref(&r);
        return;
    }
    char base[256];
    snprintf(base, sizeof base, MODELS "%s", NAMES[0]);
    char *b16 = tpath("%s-merge-base-bf16%s", NAMES[0], "");
    CHECK_OK(make_bf16_base(base, b16));
    const char *bases[2] = {base, b16};
    for (int k = 0; k < 2; k++) {
        char *out = tpath("%s-merge-fused-%s", NAMES[0], k ? "bf16" : "f32");
        CHECK_OK(fuse(bases[k], &r.ad, out, true, LC_DT_COUNT, 0, false)); // the base's dtype
        int64_t V = 0;
        float *want = logits_of(out, NULL, &r, &V);
        lc_model *m = NULL;
        CHECK_OK(lc_model_load(bases[k], &m));
        float *got = NULL;
        if (m) {
            lc_model_set_bf16_matmul(m, false);
            CHECK_OK(lc_model_apply_adapters(m, &r.ad, "adapters"));
            CHECK_OK(lc_model_merge_lora(m));
            CHECK_MSG(lc_model_lora_config(m) == NULL, "adapters left after the merge");
            CHECK_FAILS(lc_model_merge_lora(m), "no adapters");
            got = xmalloc((size_t)(r.B * r.T * V) * sizeof *got);
            lc_batch b = {r.B, r.T, r.tok, NULL, 0};
            CHECK_OK(lc_model_logits(m, &b, got));
        }
        CHECK(want && got);
        if (want && got) {
            bool same = !memcmp(want, got, (size_t)(r.B * r.T * V) * sizeof *got);
            printf("  %s %s base: merged in memory, logits %s those of `lorac fuse`'s folder\n", NAMES[0],
                   k ? "bf16" : "f32", same ? "the same bits as" : "DIFFER from");
            CHECK_MSG(same, "%s: merged logits differ from the fused folder's", k ? "bf16" : "f32");
        }
        lc_model_free(m);
        free(want), free(got), free(out);
    }
    free(b16);
    close_ref(&r);
}

static void test_shards_and_index(void) {
    if (!fixtures_present()) SKIP("tests/fixtures/model-ref is absent");
    refcase r;
    if (!open_ref(&r, "tiny-mistral")) {
        CHECK(0);
        close_ref(&r);
        return;
    }
    char *one = tpath("shard-one%s%s", "", ""), *many = tpath("shard-many%s%s", "", "");
    CHECK_OK(fuse(MODELS "tiny-mistral", &r.ad, one, false, LC_DT_F32, 0, false));
    lc_fuse_options o = {.dtype = LC_DT_F32, .max_shard_bytes = 40000};
    lc_fuser *f;
    CHECK_OK(lc_fuser_open(&f, MODELS "tiny-mistral", &r.ad, "adapters", &o));
    int planned = f ? lc_fuser_plan(f)->n_files : 0;
    size_t out_bytes = f ? lc_fuser_plan(f)->out_bytes : 0;
    CHECK_OK(lc_fuser_write(f, many));
    lc_fuser_free(f);
    CHECK(planned > 1);
    CHECK_EQ_INT(count_entries(many, "-of-"), planned);
    char *single = lc_path_join(many, "model.safetensors");
    CHECK(!lc_is_file(single));
    free(single);
    /* the index: total_size, and each tensor in the file it names */
    char *ip = lc_path_join(many, "model.safetensors.index.json");
    cJSON *idx = NULL;
    CHECK_OK(lc_json_parse_file(ip, 1 << 20, &idx));
    const cJSON *meta = cJSON_GetObjectItem(idx, "metadata"), *wm = cJSON_GetObjectItem(idx, "weight_map");
    CHECK(meta && wm);
    size_t total = 0, n = 0;
    for (const cJSON *e = wm ? wm->child : NULL; e; e = e->next, n++) {
        char *fp = lc_path_join(many, e->valuestring);
        lc_safetensors st;
        CHECK_OK(lc_st_open(&st, fp));
        const lc_tensor *t = lc_st_find(&st, e->string);
        CHECK_MSG(t != NULL, "%s is not in %s", e->string, e->valuestring);
        if (t) total += t->nbytes;
        lc_st_close(&st);
        free(fp);
    }
    CHECK(meta && (size_t)cJSON_GetObjectItem(meta, "total_size")->valuedouble == total);
    CHECK_EQ_INT(total, out_bytes);
    lc_safetensors s1, s2;
    CHECK_OK(lc_st_open(&s1, one));
    CHECK_OK(lc_st_open(&s2, many));
    CHECK_EQ_INT(n, s1.n_tensors);
    CHECK_EQ_INT(s2.n_tensors, s1.n_tensors);
    for (size_t i = 0; i < s1.n_tensors; i++) {
        const lc_tensor *a = &s1.tensors[i], *b = lc_st_find(&s2, a->name);
        CHECK_MSG(b && b->nbytes == a->nbytes && !memcmp(a->data, b->data, a->nbytes), "%s differs", a->name);
    }
    lc_st_close(&s1), lc_st_close(&s2);
    cJSON_Delete(idx);
    free(ip), free(one), free(many);
    close_ref(&r);
}

static void test_config_text(void) {
    static const struct {
        const char *in;
        const char *want_key; // the key that must read "bfloat16"
    } C[] = {
        {"{\"a\": 1, \"torch_dtype\": \"float32\", \"x\": {\"dtype\": \"float32\"}}", "torch_dtype"},
        {"{\"dtype\": null, \"rope_theta\": 1000000.0}", "dtype"},
        {"{\"architectures\": [\"LlamaForCausalLM\"]}", "torch_dtype"},
        {"{}", "torch_dtype"},
    };
    for (size_t i = 0; i < sizeof C / sizeof C[0]; i++) {
        char *out = NULL;
        CHECK_OK(lc_config_text_set_dtype(C[i].in, strlen(C[i].in), LC_DT_BF16, "c", &out));
        cJSON *j = out ? cJSON_Parse(out) : NULL;
        CHECK_MSG(j != NULL, "case %zu: not JSON: %s", i, out ? out : "");
        const cJSON *v = j ? cJSON_GetObjectItem(j, C[i].want_key) : NULL;
        CHECK_MSG(cJSON_IsString(v) && !strcmp(v->valuestring, "bfloat16"), "case %zu: %s", i, out);
        if (i == 0) { // nested keys and other values untouched
            CHECK(strstr(out, "{\"dtype\": \"float32\"}") != NULL);
            CHECK(strstr(out, "\"a\": 1,") != NULL);
        }
        if (i == 1) CHECK(strstr(out, "1000000.0") != NULL); // numbers keep their spelling
        cJSON_Delete(j);
        free(out);
    }
    char *out;
    CHECK_FAILS(lc_config_text_set_dtype("[1]", 3, LC_DT_F16, "c.json", &out), "c.json");
    CHECK_FAILS(lc_config_text_set_dtype("{\"a\":", 5, LC_DT_F16, "c.json", &out), "c.json");
}

static void test_bad_input(void) {
    if (!fixtures_present()) SKIP("tests/fixtures/model-ref is absent");
    refcase r;
    if (!open_ref(&r, "tiny-llama")) {
        CHECK(0);
        close_ref(&r);
        return;
    }
    lc_fuse_options o = {.keep_dtype = true, .dtype = LC_DT_COUNT};
    lc_fuser *f;
    char *out = tpath("bad-out%s%s", "", "");
    CHECK_FAILS(lc_fuser_open(&f, MODELS "tiny-mistral", &r.ad, "llama-adapters", &o),
                "trained for another model");
    CHECK_FAILS(lc_fuser_open(&f, MODELS "no-such-model", &r.ad, "a", &o), "no-such-model");
    /* a folder with a config but no weights */
    char *noweights = tpath("noweights%s%s", "", "");
    lc_mkdirs(noweights);
    char *cfg = lc_path_join(noweights, "config.json");
    char *text;
    size_t len;
    CHECK_OK(lc_read_file(MODELS "tiny-llama/config.json", 1 << 20, &text, &len));
    CHECK_OK(lc_write_file_atomic(cfg, text, len));
    free(text);
    CHECK_FAILS(lc_fuser_open(&f, noweights, &r.ad, "a", &o), "noweights");
    double sc = r.ad.scale;
    r.ad.scale = 0;
    CHECK_FAILS(lc_fuser_open(&f, MODELS "tiny-llama", &r.ad, "a.safetensors", &o), "scale");
    r.ad.scale = sc;
    /* an existing destination: refused; with force, replaced; a file or subfolders: refused */
    lc_mkdirs(out);
    char *keep = lc_path_join(out, "keep.txt");
    CHECK_OK(lc_write_file_atomic(keep, "x", 1));
    CHECK_OK(lc_fuser_open(&f, MODELS "tiny-llama", &r.ad, "a", &o));
    CHECK_FAILS(lc_fuser_write(f, out), "not empty");
    CHECK(lc_is_file(keep));
    lc_fuser_free(f);
    o.force = true;
    CHECK_OK(lc_fuser_open(&f, MODELS "tiny-llama", &r.ad, "a", &o));
    CHECK_OK(lc_fuser_write(f, out));
    CHECK(!lc_is_file(keep));
    char *written = lc_path_join(out, "model.safetensors");
    CHECK(lc_is_file(written));
    free(written);
    CHECK_FAILS(lc_fuser_write(f, cfg), "not a folder");
    char *sub = lc_path_join(noweights, "sub");
    lc_mkdirs(sub);
    CHECK_FAILS(lc_fuser_write(f, noweights), "subfolders");
    lc_fuser_free(f);
    CHECK_EQ_INT(count_entries(tmpdir, ".tmp-"), 0);
    CHECK_EQ_INT(count_entries(tmpdir, ".old-"), 0);
    free(sub), free(keep), free(cfg), free(noweights), free(out);
    close_ref(&r);
}

/* ---------------------------------------------------------------- main */

static int write_adapters(const char *dir) {
    for (int i = 0; i < 3; i++) {
        refcase r;
        if (!open_ref(&r, NAMES[i])) return 1;
        char p[512];
        snprintf(p, sizeof p, "%s/%s/adapters", dir, NAMES[i]);
        if (write_both_layouts(p, &r.ad) != 0) return printf("%s\n", lc_errmsg()), 1;
        printf("wrote %s (and %s/peft)\n", p, p);
        close_ref(&r);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--write-adapters")) return write_adapters(argv[2]);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/lorac-test-fuse-XXXXXX");
    if (!mkdtemp(tmpdir)) return perror("mkdtemp"), 1;
    RUN(test_f32_matches_transformers);
    RUN(test_bf16);
    RUN(test_merge_in_memory);
    RUN(test_shards_and_index);
    RUN(test_config_text);
    RUN(test_bad_input);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) printf("could not remove %s\n", tmpdir);
    return t_summary();
}
