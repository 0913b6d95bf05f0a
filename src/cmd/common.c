/*
 * common.c — what the commands share: printing errors the one agreed way, parsing
 * numbers, loading a model with its adapters and tokenizer, building prompts.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "core/error.h"
#include "hub/hub.h"
#include "model/lora_io.h"

int lc_cmd_fail(void) {
    fprintf(stderr, "error: %s\n", lc_errmsg()[0] ? lc_errmsg() : "unknown failure");
    return 2;
}

int lc_cmd_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "error: lorac %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see 'lorac %s --help')\n", cmd);
    return 2;
}

/* ---- shared by the commands that run a model ---- */

int lc_cmd_quant_opt(int c, const char *arg, const char *cmd, lc_load_options *o) {
    if (c == 0x152) {
        o->quantize_embeddings = true;
        return 1;
    }
    if (c != 0x151) return 0;
    if (lc_quant_parse(arg, &o->quantize, "--quantize") != 0) {
        lc_cmd_usage_error(cmd, "%s", lc_errmsg());
        return 2;
    }
    return 1;
}

int lc_cmd_load_model(const char *model_dir, const char *adapter_path, const char *device,
                      lc_model **m, lc_tokenizer **t) {
    lc_load_options o = {.device = device};
    return lc_cmd_load_model_opts(model_dir, adapter_path, &o, m, t);
}

int lc_cmd_load_model_opts(const char *model_dir, const char *adapter_path,
                           const lc_load_options *o, lc_model **m, lc_tokenizer **t) {
    *m = NULL;
    *t = NULL;
    if (!model_dir) return lc_fail("give --model DIR (a Hugging Face model folder or repo id)");
    char *dir = NULL;
    if (lc_hub_resolve_model(model_dir, &dir) != 0) return -1;
    if (lc_model_dir_check(dir) != 0) goto fail;
    lc_load_options lo = o ? *o : (lc_load_options){0};
    if (!lo.device) lo.device = "auto";
    if (lc_model_load_opts(dir, &lo, m) != 0) goto fail;
    if (lc_tokenizer_load_dir(dir, t) != 0) goto fail;
    if (lc_tokenizer_vocab_size(*t) > lc_model_cfg(*m)->vocab_size) {
        lc_fail("%s: the tokenizer has %d tokens, the model's vocab_size is %lld", dir,
                (int)lc_tokenizer_vocab_size(*t), (long long)lc_model_cfg(*m)->vocab_size);
        goto fail;
    }
    if (adapter_path) {
        lc_adapter_set s;
        if (lc_adapters_load(adapter_path, &s) != 0) goto fail;
        int rc = lc_model_apply_adapters(*m, &s, adapter_path);
        lc_adapters_free(&s);
        if (rc != 0) goto fail;
    }
    free(dir);
    return 0;
fail:
    free(dir);
    lc_tokenizer_free(*t);
    lc_model_free(*m);
    *m = NULL;
    *t = NULL;
    return -1;
}

int lc_cmd_fuse(lc_model *m, const char *adapter_path) {
    if (!adapter_path) return lc_fail("--fuse merges adapters into the weights: give --adapter-path too");
    if (lc_model_merge_lora(m) != 0) return lc_fail_prefix("%s", adapter_path);
    return 0;
}

int lc_cmd_chat_family(const lc_tokenizer *t, const char *name, lc_chat_family *f) {
    if (name) return lc_chat_family_parse(name, f);
    if (!lc_tokenizer_chat_template(t))
        return lc_fail("the tokenizer has no chat_template: pass --chat-template NAME (mistral, "
                       "llama2, llama3, chatml, phi3), or --ignore-chat-template for raw text");
    return lc_chat_detect(lc_tokenizer_chat_template(t), f);
}

int lc_cmd_prompt_ids(const lc_tokenizer *t, const char *chat_template, bool raw,
                      const char *system, const char *user, lc_ids *out) {
    lc_ids_clear(out);
    if (raw) {
        if (lc_tokenizer_encode(t, user, strlen(user), LC_TOK_ADD_SPECIAL, out) != 0) return -1;
        /* never a double BOS: a prompt that spells "<s>" itself keeps just that one */
        int32_t bos = lc_tokenizer_bos(t);
        if (out->len >= 2 && bos >= 0 && out->data[0] == bos && out->data[1] == bos) {
            memmove(out->data, out->data + 1, (out->len - 1) * sizeof *out->data);
            out->len--;
        }
        return 0;
    }
    lc_chat_family f;
    if (lc_cmd_chat_family(t, chat_template, &f) != 0) return -1;
    lc_chat_msg msgs[2];
    size_t n = 0;
    if (system) msgs[n++] = (lc_chat_msg){"system", system};
    msgs[n++] = (lc_chat_msg){"user", user};
    return lc_chat_render_ids(t, f, msgs, n, true, out);
}

int lc_cmd_parse_int(const char *s, const char *name, long long min, long long max, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) {
        fprintf(stderr, "error: %s must be an integer from %lld to %lld, got '%s'\n", name, min, max, s);
        return 2;
    }
    *out = v;
    return 0;
}

int lc_cmd_parse_float(const char *s, const char *name, float *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) {
        fprintf(stderr, "error: %s must be a number, got '%s'\n", name, s);
        return 2;
    }
    *out = (float)v;
    return 0;
}

int lc_cmd_sample_opt(int c, const char *arg, lc_sample_config *sc) {
    long long v;
    switch (c) {
    case 't': return lc_cmd_parse_float(arg, "--temp", &sc->temp) ? 2 : 1;
    case 'P': return lc_cmd_parse_float(arg, "--top-p", &sc->top_p) ? 2 : 1;
    case 'M': return lc_cmd_parse_float(arg, "--min-p", &sc->min_p) ? 2 : 1;
    case 'K':
        if (lc_cmd_parse_int(arg, "--top-k", 0, 1 << 30, &v)) return 2;
        sc->top_k = (int)v;
        return 1;
    case 'S':
        if (lc_cmd_parse_int(arg, "--seed", 0, 1ll << 62, &v)) return 2;
        sc->seed = (uint64_t)v;
        return 1;
    default: return 0;
    }
}

int lc_cmd_parse_dtype(const char *s, const char *cmd, lc_dtype *out) {
    if (!strcmp(s, "bf16") || !strcmp(s, "bfloat16")) *out = LC_DT_BF16;
    else if (!strcmp(s, "f16") || !strcmp(s, "float16")) *out = LC_DT_F16;
    else if (!strcmp(s, "f32") || !strcmp(s, "float32")) *out = LC_DT_F32;
    else return lc_cmd_usage_error(cmd, "--dtype must be bf16, f16 or f32, not '%s'", s);
    return 0;
}

int lc_cmd_parse_size(const char *s, size_t *out) {
    char *end;
    double v = strtod(s, &end);
    if (end == s || !(v > 0)) return -1;
    static const struct {
        const char *unit;
        double mul;
    } U[] = {{"", 1},     {"B", 1},           {"KB", 1e3},      {"MB", 1e6},
             {"GB", 1e9}, {"TB", 1e12},       {"KIB", 1024.0},  {"MIB", 1048576.0},
             {"GIB", 1073741824.0}, {"TIB", 1099511627776.0}};
    char unit[8] = {0};
    size_t n = strlen(end);
    if (n >= sizeof unit) return -1;
    for (size_t i = 0; i < n; i++) unit[i] = (char)(end[i] >= 'a' && end[i] <= 'z' ? end[i] - 32 : end[i]);
    for (size_t i = 0; i < sizeof U / sizeof U[0]; i++)
        if (!strcmp(unit, U[i].unit)) {
            double b = v * U[i].mul;
            if (b < 1 || b > 1.8e19) return -1;
            *out = (size_t)b;
            return 0;
        }
    return -1;
}

void lc_cmd_slurp(FILE *f, lc_buf *b) {
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) lc_buf_append(b, chunk, n);
}
