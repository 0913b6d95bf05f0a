/*
 * quantize.c — `lorac quantize`: writes a quantized copy of a F32/F16/BF16 model folder
 * once, so later runs load it as it is.
 *
 * q4/q8 write MLX's layout (X.weight as packed uint32, X.scales, X.biases in the model's
 * dtype, config.json "quantization": {group_size, bits, mode}) so that mlx-lm loads the
 * folder; nf4 writes the layout transformers + bitsandbytes save a 4-bit model in
 * (X.weight as uint8 pairs, X.weight.absmax, .quant_map, .nested_absmax,
 * .nested_quant_map, .quant_state.bitsandbytes__nf4, and a bitsandbytes
 * "quantization_config"). The seven projections of every block are quantized; the
 * embedding table and lm_head only with --quantize-embeddings; everything else is copied
 * as stored. One projection at a time goes through float32 panels of 64 rows: never a
 * float32 copy of the model. The folder is built under a temporary name beside --out
 * and renamed into place at the end, so --out is either complete or absent.
 */
#include <dirent.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/quant.h"
#include "cmd/cmd.h"
#include "core/error.h"
#include "core/file.h"
#include "core/mem.h"
#include "hub/hub.h"

static void usage(FILE *f) {
    fprintf(f, "usage: lorac quantize --model DIR --out DIR [options]\n"
               "Writes a quantized copy of a bf16/f16/f32 model folder.\n"
               "  --model DIR|REPO       the model to quantize\n"
               "  --out DIR              the new folder (must not exist)\n"
               "  --format nf4|q4|q8     nf4: bitsandbytes' layout (blocks of 64, double-quantized\n"
               "                         maxima); q4/q8: MLX's affine layout, loadable by mlx-lm\n"
               "                         (default q4)\n"
               "  --group-size 32|64|128 values per scale for q4/q8 (default 64)\n"
               "  --quantize-embeddings  quantize embed_tokens and lm_head too (default: as stored)\n"
               "  -h, --help             this help\n");
}

static const char *dtype_torch(lc_dtype d) {
    return d == LC_DT_BF16 ? "bfloat16" : d == LC_DT_F16 ? "float16" : "float32";
}

typedef struct {
    const lc_tensor *t;
    bool quant;
    int64_t rows, cols;
} item;

/* Declares the output tensors of one input tensor. */
static int declare(lc_st_writer *w, const item *it, const lc_quant_config *q) {
    const lc_tensor *t = it->t;
    char n[256];
    if (!it->quant) return lc_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape);
    int64_t R = it->rows, C = it->cols;
    size_t len = strlen(t->name) - strlen(".weight");
    if (q->fmt == LC_QUANT_AFFINE) {
        int64_t ws[2] = {R, C * q->bits / 32}, ss[2] = {R, C / q->group_size};
        snprintf(n, sizeof n, "%.*s.scales", (int)len, t->name);
        if (lc_st_writer_add(w, t->name, LC_DT_U32, 2, ws) || lc_st_writer_add(w, n, t->dtype, 2, ss))
            return -1;
        snprintf(n, sizeof n, "%.*s.biases", (int)len, t->name);
        return lc_st_writer_add(w, n, t->dtype, 2, ss);
    }
    size_t N = (size_t)R * (size_t)C, nb = (N + 63) / 64, nb2 = (nb + 255) / 256;
    int64_t ws[2] = {(int64_t)((N + 1) / 2), 1}, s_nb = (int64_t)nb, s_nb2 = (int64_t)nb2, s16 = 16,
            s256 = 256;
    char js[256];
    int64_t jl = snprintf(js, sizeof js,
                          "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"%s\", \"shape\": "
                          "[%lld, %lld], \"nested_blocksize\": 256, \"nested_dtype\": \"float32\", "
                          "\"nested_offset\": %.9e}",
                          dtype_torch(t->dtype), (long long)R, (long long)C, 1.0);
    if (lc_st_writer_add(w, t->name, LC_DT_U8, 2, ws)) return -1;
#define ADD(suf, dt, sz)                                                                           \
    snprintf(n, sizeof n, "%s" suf, t->name);                                                      \
    if (lc_st_writer_add(w, n, dt, 1, &(sz))) return -1;
    ADD(".absmax", LC_DT_U8, s_nb);
    ADD(".quant_map", LC_DT_F32, s16);
    ADD(".nested_absmax", LC_DT_F32, s_nb2);
    ADD(".nested_quant_map", LC_DT_F32, s256);
    ADD(".quant_state.bitsandbytes__nf4", LC_DT_U8, jl);
#undef ADD
    return 0;
}

static int put(lc_st_writer *w, const char *name, const char *suffix, const void *p, size_t n) {
    char full[256];
    snprintf(full, sizeof full, "%s%s", name, suffix);
    return lc_st_writer_write(w, full, p, n);
}

/* Quantizes one tensor 64 rows at a time and writes its outputs. */
static int write_quantized(lc_st_writer *w, const item *it, const lc_quant_config *q) {
    const lc_tensor *t = it->t;
    int64_t R = it->rows, C = it->cols, P = 64;
    size_t es = lc_dtype_size(t->dtype), N = (size_t)R * (size_t)C;
    float *panel = xmalloc((size_t)P * (size_t)C * sizeof(float));
    int rc = 0;
    if (q->fmt == LC_QUANT_AFFINE) {
        size_t ng = (size_t)(C / q->group_size), G = (size_t)R * ng;
        uint32_t *codes = xmalloc((size_t)P * (size_t)C * (size_t)q->bits / 32 * 4);
        char *sc = xmalloc(G * es), *bi = xmalloc(G * es); // the whole tensor's (small)
        size_t len = strlen(t->name) - strlen(".weight");
        char sn[256], bn[256];
        snprintf(sn, sizeof sn, "%.*s.scales", (int)len, t->name);
        snprintf(bn, sizeof bn, "%.*s.biases", (int)len, t->name);
        for (int64_t r0 = 0; r0 < R && rc == 0; r0 += P) {
            int64_t nr = R - r0 < P ? R - r0 : P;
            lc_to_f32(panel, (const unsigned char *)t->data + (size_t)r0 * (size_t)C * es, t->dtype,
                      (size_t)nr * (size_t)C);
            rc = lc_quant_affine(codes, sc + (size_t)r0 * ng * es, bi + (size_t)r0 * ng * es, t->dtype,
                                 panel, nr, C, q->bits, q->group_size);
            if (rc == 0) rc = lc_st_writer_write(w, t->name, codes, (size_t)nr * (size_t)C * (size_t)q->bits / 8);
        }
        // then the companions, in declaration order (they may sit in the next shard)
        if (rc == 0) rc = lc_st_writer_write(w, sn, sc, G * es);
        if (rc == 0) rc = lc_st_writer_write(w, bn, bi, G * es);
        free(codes), free(sc), free(bi);
    } else {
        size_t nb = (N + 63) / 64, nb2 = (nb + 255) / 256;
        uint8_t *codes = xmalloc((size_t)P * (size_t)C / 2 + 1);
        float *am = xmalloc(nb * sizeof(float)), *am2 = xmalloc(nb2 * sizeof(float));
        uint8_t *qa = xmalloc(nb);
        for (int64_t r0 = 0; r0 < R && rc == 0; r0 += P) {
            int64_t nr = R - r0 < P ? R - r0 : P;
            size_t off = (size_t)r0 * (size_t)C, len = (size_t)nr * (size_t)C;
            lc_to_f32(panel, (const unsigned char *)t->data + off * es, t->dtype, len);
            lc_quant_nf4(codes, am + off / 64, panel, len, 64);
            rc = lc_st_writer_write(w, t->name, codes, (len + 1) / 2);
        }
        float code2[256], off;
        lc_quant_dynamic_map(code2);
        lc_quant_nf4_nest(qa, am2, &off, am, nb, 256, code2);
        char js[256];
        int jl = snprintf(js, sizeof js,
                          "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"%s\", \"shape\": "
                          "[%lld, %lld], \"nested_blocksize\": 256, \"nested_dtype\": \"float32\", "
                          "\"nested_offset\": %.9e}",
                          dtype_torch(t->dtype), (long long)R, (long long)C, (double)off);
        if (rc == 0) rc = put(w, t->name, ".absmax", qa, nb);
        if (rc == 0) rc = put(w, t->name, ".quant_map", LC_NF4_CODE, sizeof LC_NF4_CODE);
        if (rc == 0) rc = put(w, t->name, ".nested_absmax", am2, nb2 * sizeof(float));
        if (rc == 0) rc = put(w, t->name, ".nested_quant_map", code2, sizeof code2);
        if (rc == 0) rc = put(w, t->name, ".quant_state.bitsandbytes__nf4", js, (size_t)jl);
        free(codes), free(am), free(am2), free(qa);
    }
    free(panel);
    return rc;
}

/* Copies the folder's other files (tokenizer, generation config, ...) into out. */
static int copy_side_files(const char *src, const char *out) {
    DIR *d = opendir(src);
    if (!d) return lc_fail("%s: cannot list the folder", src);
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d))) {
        const char *n = e->d_name;
        size_t l = strlen(n);
        if (n[0] == '.' || !strcmp(n, "config.json") ||
            (l > 12 && !strcmp(n + l - 12, ".safetensors")) ||
            (l > 23 && !strcmp(n + l - 23, ".safetensors.index.json")))
            continue;
        char *p = lc_path_join(src, n), *q = lc_path_join(out, n), *buf = NULL;
        size_t len = 0;
        if (lc_is_file(p)) {
            rc = lc_read_file(p, (size_t)1 << 30, &buf, &len);
            if (rc == 0) rc = lc_write_file_atomic(q, buf, len);
        }
        free(buf), free(p), free(q);
    }
    closedir(d);
    return rc;
}

static int run(const char *dir, const char *out, const lc_quant_config *q) {
    lc_model_config c;
    lc_safetensors st = {0};
    lc_st_writer *w = NULL;
    lc_param_spec *spec = NULL;
    item *items = NULL;
    char *tmp = NULL, *text = NULL, *cj = NULL, *cfgpath = lc_path_join(dir, "config.json");
    size_t tl = 0, n = 0;
    int rc = -1;
    if (lc_is_dir(out) || lc_is_file(out)) {
        lc_fail("%s: already exists; give a new folder to --out", out);
        goto done;
    }
    if (lc_config_load(&c, dir) || lc_st_open(&st, dir) || lc_config_check_weights(&c, &st, dir))
        goto done;
    if (c.quant.fmt != LC_QUANT_NONE) {
        lc_fail("%s: the model is already quantized; quantize the original bf16/f16/f32 model", dir);
        goto done;
    }
    n = lc_config_tensors(&c, &spec);
    items = xcalloc(n, sizeof *items);
    w = lc_st_writer_new();
    for (size_t i = 0; i < n; i++) {
        const lc_tensor *t = lc_st_find(&st, spec[i].name);
        bool emb = !strcmp(spec[i].name, "model.embed_tokens.weight") || !strcmp(spec[i].name, "lm_head.weight");
        items[i] = (item){t, spec[i].ndim == 2 && (!emb || q->embeddings), spec[i].shape[0],
                          spec[i].ndim == 2 ? spec[i].shape[1] : 1};
        if (items[i].quant && q->fmt == LC_QUANT_AFFINE && items[i].cols % q->group_size) {
            lc_fail("%s: '%s' has %lld columns, not a multiple of the group size %lld; use "
                    "--group-size 32 or --format nf4",
                    dir, t->name, (long long)items[i].cols, (long long)q->group_size);
            goto done;
        }
        if (declare(w, &items[i], q) != 0) goto done;
    }
    tmp = xmalloc(strlen(out) + 32);
    sprintf(tmp, "%s.partial-%d", out, (int)getpid());
    if (lc_mkdirs(tmp) != 0 || lc_st_writer_begin_dir(w, tmp, (size_t)5 << 30) != 0) goto done;
    char a[64];
    fprintf(stderr, "quantizing %s to %s (%s)\n", dir, out, lc_quant_name(q, a, sizeof a));
    for (size_t i = 0; i < n; i++) {
        int r = items[i].quant ? write_quantized(w, &items[i], q)
                               : lc_st_writer_write(w, items[i].t->name, items[i].t->data, items[i].t->nbytes);
        if (r != 0) goto done;
    }
    if (lc_st_writer_commit(w) != 0) goto done;
    if (lc_read_file(cfgpath, (size_t)16 << 20, &text, &tl) != 0) goto done;
    if (!(cj = lc_config_json_with_quant(text, tl, q, cfgpath))) goto done;
    char *cp = lc_path_join(tmp, "config.json");
    int r = lc_write_file_atomic(cp, cj, strlen(cj));
    free(cp);
    if (r != 0 || copy_side_files(dir, tmp) != 0) goto done;
    if (rename(tmp, out) != 0) {
        lc_fail("%s: cannot rename %s into place", out, tmp);
        goto done;
    }
    rc = 0;
done:
    lc_st_writer_free(w);
    lc_st_close(&st);
    free(spec), free(items), free(text), free(cj), free(cfgpath);
    if (rc != 0 && tmp && lc_is_dir(tmp)) { // leave nothing half-written behind
        DIR *d = opendir(tmp);
        struct dirent *e;
        while (d && (e = readdir(d)))
            if (e->d_name[0] != '.') {
                char *p = lc_path_join(tmp, e->d_name);
                unlink(p);
                free(p);
            }
        if (d) closedir(d);
        rmdir(tmp);
    }
    free(tmp);
    return rc;
}

int cmd_quantize(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},       {"out", required_argument, 0, 'o'},
        {"format", required_argument, 0, 'f'},      {"group-size", required_argument, 0, 'g'},
        {"quantize-embeddings", no_argument, 0, 'e'}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *model = NULL, *out = NULL, *format = "q4";
    long long gs = 64;
    bool emb = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'o': out = optarg; break;
        case 'f': format = optarg; break;
        case 'g':
            if (lc_cmd_parse_int(optarg, "--group-size", 32, 128, &gs)) return 2;
            if (gs != 32 && gs != 64 && gs != 128)
                return lc_cmd_usage_error("quantize", "--group-size must be 32, 64 or 128");
            break;
        case 'e': emb = true; break;
        case 'h': usage(stdout); return 0;
        default: return lc_cmd_usage_error("quantize", "invalid option");
        }
    }
    if (optind < argc) return lc_cmd_usage_error("quantize", "unexpected argument '%s'", argv[optind]);
    if (!model || !out) return lc_cmd_usage_error("quantize", "give --model DIR and --out DIR");
    lc_quant_config q;
    if (lc_quant_parse(format, &q, "--format") != 0 || q.fmt == LC_QUANT_NONE)
        return lc_cmd_usage_error("quantize", "--format must be nf4, q4 or q8, not '%s'", format);
    if (q.fmt == LC_QUANT_AFFINE) q.group_size = gs;
    else if (gs != 64) return lc_cmd_usage_error("quantize", "nf4 uses blocks of 64 (bitsandbytes'); drop --group-size");
    q.embeddings = emb;
    char *dir = NULL;
    if (lc_hub_resolve_model(model, &dir) != 0) return lc_cmd_fail();
    int rc = lc_model_dir_check(dir) == 0 ? run(dir, out, &q) : -1;
    free(dir);
    if (rc != 0) return lc_cmd_fail();
    printf("%s\n", out);
    return 0;
}
