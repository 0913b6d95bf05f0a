/*
 * config.c — config.json / generation_config.json reading, validation, writing, and
 * the tensor list of a config. See config.h.
 */
#include "io/config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/file.h"
#include "core/json.h"
#include "core/mem.h"
#include "core/vec.h"

#define MAX_DIM 2147483647LL // every size must fit an int32: the products stay in size_t
#define SUPPORTED "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM"

static const char *ARCH_NAMES[] = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"};
static const char *MODEL_TYPES[] = {"llama", "mistral", "qwen2"};

const char *lc_arch_name(lc_arch a) { return ARCH_NAMES[a]; }

/* ------------------------------------------------------------------ reading */

static int req_int(const cJSON *root, const char *key, int64_t *out, const char *what,
                   lc_arch arch) {
    int r = lc_json_int(root, key, out, what);
    if (r < 0) return -1;
    if (r == 0)
        return lc_fail("%s: \"%s\" is missing (every %s config.json has it)", what, key,
                       ARCH_NAMES[arch]);
    return 0;
}

/* Token ids: an integer, a list of integers, or null (n = 0). */
static int parse_ids(const cJSON *root, const char *key, int64_t *ids, int max, int *n,
                     const char *what) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) return 0;
    *n = 0;
    if (cJSON_IsNumber(v)) {
        if (lc_json_int(root, key, &ids[0], what) < 0) return -1;
        if (ids[0] < 0 || ids[0] > MAX_DIM)
            return lc_fail("%s: \"%s\" must be a non-negative token id, found %lld", what, key,
                           (long long)ids[0]);
        *n = 1;
        return 1;
    }
    if (!cJSON_IsArray(v))
        return lc_fail("%s: \"%s\" must be an integer or a list of integers, found %s", what, key,
                       lc_json_type_name(v));
    for (const cJSON *e = v->child; e; e = e->next) {
        double d = cJSON_IsNumber(e) ? e->valuedouble : -1;
        if (!cJSON_IsNumber(e) || d != floor(d) || d < 0 || d > MAX_DIM)
            return lc_fail("%s: \"%s\" must list non-negative integer token ids", what, key);
        if (*n == max)
            return lc_fail("%s: \"%s\" lists more than %d token ids", what, key, max);
        ids[(*n)++] = (int64_t)d;
    }
    return 1;
}

static int parse_dtype(const cJSON *root, lc_model_config *c, const char *what) {
    const char *key = cJSON_GetObjectItemCaseSensitive(root, "dtype") ? "dtype" : "torch_dtype";
    const char *s = NULL;
    if (lc_json_str(root, key, &s, what) < 0) return -1;
    if (!s || !strcmp(s, "auto")) return 0;
    c->has_dtype = true;
    if (!strcmp(s, "bfloat16")) c->dtype = LC_DT_BF16;
    else if (!strcmp(s, "float16")) c->dtype = LC_DT_F16;
    else if (!strcmp(s, "float32")) c->dtype = LC_DT_F32;
    else
        return lc_fail("%s: \"%s\" '%.40s' is not supported (bfloat16, float16 or float32)", what,
                       key, s);
    return 0;
}

static int rope_num(const cJSON *p, const char *key, double *out, const char *what,
                    const char *type) {
    int r = lc_json_num(p, key, out, what);
    if (r < 0) return -1;
    if (r == 0)
        return lc_fail("%s: rope type '%s' needs \"%s\" in its parameters", what, type, key);
    return 0;
}

static int parse_rope(const cJSON *root, lc_model_config *c, const char *what) {
    const cJSON *p = NULL;
    // 5.x: rope_parameters {rope_type, rope_theta, ...}; 4.x: rope_theta + rope_scaling.
    int r = lc_json_obj(root, "rope_parameters", &p, what);
    if (r < 0) return -1;
    if (r == 0 && lc_json_obj(root, "rope_scaling", &p, what) < 0) return -1;
    c->rope_theta = 10000.0;
    if (lc_json_num(root, "rope_theta", &c->rope_theta, what) < 0) return -1;
    c->rope_type = LC_ROPE_DEFAULT;
    if (!p) return 0;
    if (lc_json_num(p, "rope_theta", &c->rope_theta, what) < 0) return -1;
    const char *type = NULL;
    if (lc_json_str(p, "rope_type", &type, what) < 0) return -1;
    if (!type && lc_json_str(p, "type", &type, what) < 0) return -1;
    if (!type) {
        if (p->child && cJSON_IsObject(p->child))
            return lc_fail("%s: per-layer rope_parameters are not supported (lorac implements "
                           "one rope for all layers)",
                           what);
        return 0;
    }
    if (!strcmp(type, "default")) return 0;
    if (!strcmp(type, "linear")) {
        c->rope_type = LC_ROPE_LINEAR;
        return rope_num(p, "factor", &c->rope_factor, what, type);
    }
    if (!strcmp(type, "llama3")) {
        c->rope_type = LC_ROPE_LLAMA3;
        if (rope_num(p, "factor", &c->rope_factor, what, type) ||
            rope_num(p, "low_freq_factor", &c->rope_low_freq_factor, what, type) ||
            rope_num(p, "high_freq_factor", &c->rope_high_freq_factor, what, type))
            return -1;
        int64_t orig = 0;
        int q = lc_json_int(p, "original_max_position_embeddings", &orig, what);
        if (q < 0) return -1;
        if (q == 0)
            return lc_fail("%s: rope type 'llama3' needs \"original_max_position_embeddings\"",
                           what);
        c->rope_original_max_position_embeddings = orig;
        return 0;
    }
    return lc_fail("%s: rope type '%.40s' is not supported (supported: default, linear, llama3)",
                   what, type);
}

/* MLX's "quantization" / "quantization_config" {group_size, bits[, mode]} or
 * transformers' bitsandbytes "quantization_config". Per-layer entries of MLX's mixed
 * recipes (objects keyed by module path) are allowed: each tensor's bits and group size
 * come from its shapes. */
static int parse_quant(const cJSON *root, lc_model_config *c, const char *what) {
    const cJSON *q = NULL;
    if (lc_json_obj(root, "quantization", &q, what) < 0) return -1;
    if (!q && lc_json_obj(root, "quantization_config", &q, what) < 0) return -1;
    if (!q) return 0;
    const char *method = NULL;
    if (lc_json_str(q, "quant_method", &method, what) < 0) return -1;
    if (method && strcmp(method, "bitsandbytes"))
        return lc_fail("%s: quantization_config quant_method '%.40s' is not supported (lorac reads "
                       "MLX's affine \"quantization\" and bitsandbytes NF4)",
                       what, method);
    if (method) { // bitsandbytes
        bool in4 = false, in8 = false, dq = false;
        const char *type = "fp4";
        if (lc_json_bool(q, "load_in_4bit", &in4, what) < 0 ||
            lc_json_bool(q, "load_in_8bit", &in8, what) < 0 ||
            lc_json_bool(q, "bnb_4bit_use_double_quant", &dq, what) < 0 ||
            lc_json_str(q, "bnb_4bit_quant_type", &type, what) < 0)
            return -1;
        if (!in4 || in8)
            return lc_fail("%s: bitsandbytes quantization_config without load_in_4bit: true (8-bit "
                           "LLM.int8 weights are not supported; lorac reads 4-bit NF4)",
                           what);
        if (strcmp(type, "nf4") && strcmp(type, "fp4"))
            return lc_fail("%s: bnb_4bit_quant_type '%.20s' is not supported (nf4 or fp4)", what, type);
        c->quant = (lc_quant_config){LC_QUANT_NF4, 4, 64, dq, false};
        return 0;
    }
    const char *mode = NULL;
    if (lc_json_str(q, "mode", &mode, what) < 0) return -1;
    if (mode && strcmp(mode, "affine"))
        return lc_fail("%s: quantization mode '%.20s' is not supported (lorac reads MLX's affine "
                       "mode)",
                       what, mode);
    int64_t bits = 4, gs = 64;
    if (lc_json_int(q, "bits", &bits, what) < 0 || lc_json_int(q, "group_size", &gs, what) < 0)
        return -1;
    if (bits != 2 && bits != 4 && bits != 8)
        return lc_fail("%s: quantization bits %lld is not supported (2, 4 or 8)", what, (long long)bits);
    if (gs != 32 && gs != 64 && gs != 128)
        return lc_fail("%s: quantization group_size %lld is not supported (32, 64 or 128)", what,
                       (long long)gs);
    // mlx-lm quantizes embed_tokens and lm_head too unless a per-layer entry says false
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(q, "model.embed_tokens");
    c->quant = (lc_quant_config){LC_QUANT_AFFINE, (int)bits, gs, false, !cJSON_IsFalse(e)};
    return 0;
}

static int parse_root(lc_model_config *c, const cJSON *root, const char *what) {
    memset(c, 0, sizeof *c);
    if (!cJSON_IsObject(root))
        return lc_fail("%s: must be a JSON object, found %s", what, lc_json_type_name(root));
    // Architecture: architectures[0], else model_type.
    const cJSON *archs = NULL;
    const char *name = NULL;
    if (lc_json_arr(root, "architectures", &archs, what) < 0) return -1;
    if (archs && cJSON_GetArraySize(archs) > 0) {
        if (!cJSON_IsString(archs->child))
            return lc_fail("%s: \"architectures\" must list strings", what);
        name = archs->child->valuestring;
        int i = 0;
        for (; i < 3 && strcmp(name, ARCH_NAMES[i]); i++) {}
        if (i == 3)
            return lc_fail("%s: architecture '%.60s' is not supported (supported: " SUPPORTED ")",
                           what, name);
        c->arch = (lc_arch)i;
    } else {
        if (lc_json_str(root, "model_type", &name, what) < 0) return -1;
        if (!name)
            return lc_fail("%s: no \"architectures\" or \"model_type\" (is it a Hugging Face "
                           "config.json?)",
                           what);
        int i = 0;
        for (; i < 3 && strcmp(name, MODEL_TYPES[i]); i++) {}
        if (i == 3)
            return lc_fail("%s: model_type '%.60s' is not supported (supported: " SUPPORTED ")",
                           what, name);
        c->arch = (lc_arch)i;
    }
    if (req_int(root, "vocab_size", &c->vocab_size, what, c->arch) ||
        req_int(root, "hidden_size", &c->hidden_size, what, c->arch) ||
        req_int(root, "intermediate_size", &c->intermediate_size, what, c->arch) ||
        req_int(root, "num_hidden_layers", &c->num_hidden_layers, what, c->arch) ||
        req_int(root, "num_attention_heads", &c->num_attention_heads, what, c->arch))
        return -1;
    c->num_key_value_heads = c->num_attention_heads;
    if (lc_json_int(root, "num_key_value_heads", &c->num_key_value_heads, what) < 0) return -1;
    int hd = lc_json_int(root, "head_dim", &c->head_dim, what);
    if (hd < 0) return -1;
    if (hd == 0) {
        if (c->num_attention_heads <= 0 || c->hidden_size % c->num_attention_heads)
            return lc_fail("%s: hidden_size (%lld) is not a multiple of num_attention_heads "
                           "(%lld), and there is no \"head_dim\"",
                           what, (long long)c->hidden_size, (long long)c->num_attention_heads);
        c->head_dim = c->hidden_size / c->num_attention_heads;
    }
    static const int64_t default_max_pos[] = {2048, 131072, 32768};
    c->max_position_embeddings = default_max_pos[c->arch];
    if (lc_json_int(root, "max_position_embeddings", &c->max_position_embeddings, what) < 0)
        return -1;
    c->rms_norm_eps = 1e-6;
    c->initializer_range = 0.02;
    if (lc_json_num(root, "rms_norm_eps", &c->rms_norm_eps, what) < 0 ||
        lc_json_num(root, "initializer_range", &c->initializer_range, what) < 0 ||
        lc_json_bool(root, "tie_word_embeddings", &c->tie_word_embeddings, what) < 0 ||
        lc_json_bool(root, "attention_bias", &c->attention_bias, what) < 0)
        return -1;
    if (c->arch == LC_ARCH_QWEN2) c->attention_bias = true; // Qwen2 always biases q/k/v
    bool mlp_bias = false;
    if (lc_json_bool(root, "mlp_bias", &mlp_bias, what) < 0) return -1;
    if (mlp_bias) return lc_fail("%s: \"mlp_bias\": true is not supported (lorac's MLP has no biases)", what);
    const char *act = "silu";
    if (lc_json_str(root, "hidden_act", &act, what) < 0) return -1;
    if (strcmp(act, "silu"))
        return lc_fail("%s: hidden_act '%.40s' is not supported (lorac implements silu)", what, act);
    // Sliding window: Mistral's as given; Qwen2's only with use_sliding_window.
    if (c->arch != LC_ARCH_LLAMA) {
        if (lc_json_int(root, "sliding_window", &c->sliding_window, what) < 0) return -1;
        bool use = false;
        if (c->arch == LC_ARCH_QWEN2) {
            if (lc_json_bool(root, "use_sliding_window", &use, what) < 0) return -1;
            if (!use) c->sliding_window = 0;
        }
    }
    if (parse_dtype(root, c, what) < 0 || parse_rope(root, c, what) < 0 ||
        parse_quant(root, c, what) < 0)
        return -1;
    c->bos_token_id = -1;
    int64_t bos[LC_MAX_EOS];
    int nb = 0;
    if (parse_ids(root, "bos_token_id", bos, LC_MAX_EOS, &nb, what) < 0) return -1;
    if (nb > 0) c->bos_token_id = bos[0];
    if (parse_ids(root, "eos_token_id", c->eos_token_ids, LC_MAX_EOS, &c->n_eos, what) < 0)
        return -1;
    return lc_config_validate(c, what);
}

int lc_config_parse(lc_model_config *c, const char *text, size_t len, const char *what) {
    cJSON *root;
    memset(c, 0, sizeof *c);
    if (lc_json_parse(text, len, what, &root) != 0) return -1;
    int rc = parse_root(c, root, what);
    cJSON_Delete(root);
    return rc;
}

int lc_config_merge_generation(lc_model_config *c, const char *text, size_t len, const char *what) {
    cJSON *root;
    if (lc_json_parse(text, len, what, &root) != 0) return -1;
    int rc = -1;
    if (!cJSON_IsObject(root)) {
        lc_fail("%s: must be a JSON object, found %s", what, lc_json_type_name(root));
        goto done;
    }
    int64_t ids[LC_MAX_EOS];
    int n = 0, r = parse_ids(root, "bos_token_id", ids, LC_MAX_EOS, &n, what);
    if (r < 0) goto done;
    if (r > 0 && n > 0) c->bos_token_id = ids[0];
    r = parse_ids(root, "eos_token_id", ids, LC_MAX_EOS, &n, what);
    if (r < 0) goto done;
    if (r > 0 && n > 0) {
        memcpy(c->eos_token_ids, ids, (size_t)n * sizeof ids[0]);
        c->n_eos = n;
    }
    rc = lc_config_validate(c, what);
done:
    cJSON_Delete(root);
    return rc;
}

int lc_config_load(lc_model_config *c, const char *path) {
    char *cfg = lc_is_dir(path) ? lc_path_join(path, "config.json") : xstrdup(path);
    char *text = NULL;
    size_t len;
    int rc = lc_read_file(cfg, (size_t)16 << 20, &text, &len);
    if (rc == 0) rc = lc_config_parse(c, text, len, cfg);
    free(text);
    if (rc == 0) {
        char *slash = strrchr(cfg, '/');
        char *gen;
        if (slash) {
            *slash = '\0';
            gen = lc_path_join(cfg, "generation_config.json");
        } else {
            gen = xstrdup("generation_config.json");
        }
        if (lc_is_file(gen)) {
            rc = lc_read_file(gen, (size_t)16 << 20, &text, &len);
            if (rc == 0) rc = lc_config_merge_generation(c, text, len, gen);
            free(text);
        }
        free(gen);
    }
    free(cfg);
    return rc;
}

static int positive(int64_t v, const char *key, const char *what) {
    if (v <= 0 || v > MAX_DIM)
        return lc_fail("%s: \"%s\" is %lld; it must be between 1 and %lld", what, key,
                       (long long)v, MAX_DIM);
    return 0;
}

int lc_config_validate(const lc_model_config *c, const char *what) {
    if (positive(c->vocab_size, "vocab_size", what) || positive(c->hidden_size, "hidden_size", what) ||
        positive(c->intermediate_size, "intermediate_size", what) ||
        positive(c->num_hidden_layers, "num_hidden_layers", what) ||
        positive(c->num_attention_heads, "num_attention_heads", what) ||
        positive(c->num_key_value_heads, "num_key_value_heads", what) ||
        positive(c->head_dim, "head_dim", what) ||
        positive(c->max_position_embeddings, "max_position_embeddings", what))
        return -1;
    if (c->num_hidden_layers > 10000)
        return lc_fail("%s: num_hidden_layers %lld is absurd (at most 10000)", what,
                       (long long)c->num_hidden_layers);
    if (c->num_attention_heads % c->num_key_value_heads)
        return lc_fail("%s: num_attention_heads (%lld) must be a multiple of num_key_value_heads "
                       "(%lld)",
                       what, (long long)c->num_attention_heads, (long long)c->num_key_value_heads);
    if (c->head_dim % 2)
        return lc_fail("%s: head_dim (%lld) must be even for rotary embeddings", what,
                       (long long)c->head_dim);
    if (c->num_attention_heads * c->head_dim > MAX_DIM)
        return lc_fail("%s: num_attention_heads × head_dim is too large", what);
    if (!(c->rms_norm_eps > 0 && c->rms_norm_eps < 1))
        return lc_fail("%s: rms_norm_eps (%g) must be between 0 and 1", what, c->rms_norm_eps);
    if (!(c->initializer_range >= 0 && c->initializer_range < 100))
        return lc_fail("%s: initializer_range (%g) must be between 0 and 100", what,
                       c->initializer_range);
    if (!(c->rope_theta > 0))
        return lc_fail("%s: rope_theta (%g) must be positive", what, c->rope_theta);
    if (c->rope_type != LC_ROPE_DEFAULT && !(c->rope_factor > 0))
        return lc_fail("%s: the rope \"factor\" (%g) must be positive", what, c->rope_factor);
    if (c->rope_type == LC_ROPE_LLAMA3) {
        if (!(c->rope_low_freq_factor > 0 && c->rope_high_freq_factor > c->rope_low_freq_factor))
            return lc_fail("%s: llama3 rope needs 0 < low_freq_factor (%g) < high_freq_factor (%g)",
                           what, c->rope_low_freq_factor, c->rope_high_freq_factor);
        if (c->rope_original_max_position_embeddings <= 0 ||
            c->rope_original_max_position_embeddings > MAX_DIM)
            return lc_fail("%s: llama3 rope needs a positive original_max_position_embeddings",
                           what);
    }
    if (c->sliding_window < 0 || c->sliding_window > MAX_DIM)
        return lc_fail("%s: sliding_window (%lld) must be null or a positive integer", what,
                       (long long)c->sliding_window);
    if (c->bos_token_id < -1 || c->bos_token_id >= c->vocab_size)
        return lc_fail("%s: bos_token_id %lld is outside the vocabulary (vocab_size %lld)", what,
                       (long long)c->bos_token_id, (long long)c->vocab_size);
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos_token_ids[i] < 0 || c->eos_token_ids[i] >= c->vocab_size)
            return lc_fail("%s: eos_token_id %lld is outside the vocabulary (vocab_size %lld)",
                           what, (long long)c->eos_token_ids[i], (long long)c->vocab_size);
    return 0;
}

/* ------------------------------------------------------------------ writing */

/* A double as Python's repr writes it (shortest round trip; "1e-05", "500000.0"). */
static void put_double(lc_buf *b, double d) {
    char s[64];
    int p = 1;
    for (; p < 17; p++) {
        snprintf(s, sizeof s, "%.*e", p - 1, d);
        if (strtod(s, NULL) == d) break;
    }
    snprintf(s, sizeof s, "%.*e", p - 1, d);
    int exp10 = atoi(strchr(s, 'e') + 1); // the exponent as printed (after rounding)
    if (exp10 >= -4 && exp10 < 16) {
        int dec = p - 1 - exp10;
        snprintf(s, sizeof s, "%.*f", dec > 0 ? dec : 0, d);
        if (!strchr(s, '.')) strcat(s, ".0");
    }
    lc_buf_puts(b, s);
}

static void put_ids(lc_buf *b, const int64_t *ids, int n) {
    if (n == 0) lc_buf_puts(b, "null");
    else if (n == 1) lc_buf_printf(b, "%lld", (long long)ids[0]);
    else {
        lc_buf_puts(b, "[\n");
        for (int i = 0; i < n; i++)
            lc_buf_printf(b, "    %lld%s\n", (long long)ids[i], i + 1 < n ? "," : "");
        lc_buf_puts(b, "  ]");
    }
}

char *lc_config_to_json(const lc_model_config *c) {
    lc_buf b = {0};
    const char *dt = !c->has_dtype              ? NULL
                     : c->dtype == LC_DT_BF16 ? "bfloat16"
                     : c->dtype == LC_DT_F16  ? "float16"
                                              : "float32";
    lc_buf_printf(&b, "{\n  \"architectures\": [\n    \"%s\"\n  ],\n", ARCH_NAMES[c->arch]);
    lc_buf_printf(&b, "  \"attention_bias\": %s,\n", c->attention_bias ? "true" : "false");
    lc_buf_puts(&b, "  \"attention_dropout\": 0.0,\n");
    if (c->bos_token_id >= 0) lc_buf_printf(&b, "  \"bos_token_id\": %lld,\n", (long long)c->bos_token_id);
    else lc_buf_puts(&b, "  \"bos_token_id\": null,\n");
    lc_buf_puts(&b, "  \"eos_token_id\": ");
    put_ids(&b, c->eos_token_ids, c->n_eos);
    lc_buf_printf(&b, ",\n  \"head_dim\": %lld,\n", (long long)c->head_dim);
    lc_buf_puts(&b, "  \"hidden_act\": \"silu\",\n");
    lc_buf_printf(&b, "  \"hidden_size\": %lld,\n", (long long)c->hidden_size);
    lc_buf_puts(&b, "  \"initializer_range\": ");
    put_double(&b, c->initializer_range);
    lc_buf_printf(&b, ",\n  \"intermediate_size\": %lld,\n", (long long)c->intermediate_size);
    lc_buf_printf(&b, "  \"max_position_embeddings\": %lld,\n",
                  (long long)c->max_position_embeddings);
    lc_buf_puts(&b, "  \"mlp_bias\": false,\n");
    lc_buf_printf(&b, "  \"model_type\": \"%s\",\n", MODEL_TYPES[c->arch]);
    lc_buf_printf(&b, "  \"num_attention_heads\": %lld,\n", (long long)c->num_attention_heads);
    lc_buf_printf(&b, "  \"num_hidden_layers\": %lld,\n", (long long)c->num_hidden_layers);
    lc_buf_printf(&b, "  \"num_key_value_heads\": %lld,\n", (long long)c->num_key_value_heads);
    lc_buf_puts(&b, "  \"rms_norm_eps\": ");
    put_double(&b, c->rms_norm_eps);
    lc_buf_puts(&b, ",\n  \"rope_scaling\": ");
    if (c->rope_type == LC_ROPE_DEFAULT) {
        lc_buf_puts(&b, "null");
    } else {
        lc_buf_puts(&b, "{\n    \"factor\": ");
        put_double(&b, c->rope_factor);
        if (c->rope_type == LC_ROPE_LLAMA3) {
            lc_buf_puts(&b, ",\n    \"high_freq_factor\": ");
            put_double(&b, c->rope_high_freq_factor);
            lc_buf_puts(&b, ",\n    \"low_freq_factor\": ");
            put_double(&b, c->rope_low_freq_factor);
            lc_buf_printf(&b, ",\n    \"original_max_position_embeddings\": %lld",
                          (long long)c->rope_original_max_position_embeddings);
        }
        lc_buf_printf(&b, ",\n    \"rope_type\": \"%s\"\n  }",
                      c->rope_type == LC_ROPE_LLAMA3 ? "llama3" : "linear");
    }
    lc_buf_puts(&b, ",\n  \"rope_theta\": ");
    put_double(&b, c->rope_theta);
    lc_buf_puts(&b, ",\n");
    if (c->arch != LC_ARCH_LLAMA) {
        if (c->sliding_window > 0)
            lc_buf_printf(&b, "  \"sliding_window\": %lld,\n", (long long)c->sliding_window);
        else lc_buf_puts(&b, "  \"sliding_window\": null,\n");
    }
    lc_buf_printf(&b, "  \"tie_word_embeddings\": %s,\n", c->tie_word_embeddings ? "true" : "false");
    if (dt) lc_buf_printf(&b, "  \"torch_dtype\": \"%s\",\n", dt);
    lc_buf_puts(&b, "  \"use_cache\": true,\n");
    if (c->arch == LC_ARCH_QWEN2)
        lc_buf_printf(&b, "  \"use_sliding_window\": %s,\n", c->sliding_window > 0 ? "true" : "false");
    lc_buf_printf(&b, "  \"vocab_size\": %lld\n}\n", (long long)c->vocab_size);
    if (c->quant.fmt == LC_QUANT_NONE) return b.data;
    // A quantized model's config says so, in the layout its format's tools write. Only the
    // quantization keys go through cJSON (they hold no fractions: cJSON prints doubles to 15
    // digits, which would not read back exactly); they replace the final "\n}\n".
    char *q = lc_config_json_with_quant("{}", 2, &c->quant, "config.json");
    char *open = q ? strchr(q, '{') : NULL, *close = q ? strrchr(q, '}') : NULL;
    if (!open || !close || close <= open) {
        free(q);
        lc_buf_free(&b);
        return NULL;
    }
    b.len -= 3;
    lc_buf_puts(&b, ",");
    for (const char *p = open + 1; p < close; p++) { // cJSON's tabs as this file's 2 spaces
        if (*p != '\t') lc_buf_putc(&b, *p);
        else lc_buf_puts(&b, p[-1] == ':' ? " " : "  ");
    }
    lc_buf_puts(&b, "}\n");
    free(q);
    return b.data;
}

char *lc_generation_config_to_json(const lc_model_config *c) {
    lc_buf b = {0};
    lc_buf_puts(&b, "{\n");
    if (c->bos_token_id >= 0) lc_buf_printf(&b, "  \"bos_token_id\": %lld,\n", (long long)c->bos_token_id);
    lc_buf_puts(&b, "  \"eos_token_id\": ");
    put_ids(&b, c->eos_token_ids, c->n_eos);
    lc_buf_puts(&b, "\n}\n");
    return b.data;
}

/* ---------------------------------------------------------- tensor list */

static void spec(lc_param_spec *s, size_t *n, int ndim, int64_t d0, int64_t d1, const char *name) {
    lc_param_spec *p = &s[(*n)++];
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = ndim;
    p->shape[0] = d0;
    p->shape[1] = ndim > 1 ? d1 : 0;
}

size_t lc_config_tensors(const lc_model_config *c, lc_param_spec **out) {
    size_t max = 3 + (size_t)c->num_hidden_layers * 12, n = 0;
    lc_param_spec *s = xcalloc(max, sizeof *s);
    int64_t C = c->hidden_size, V = c->vocab_size, I = c->intermediate_size;
    int64_t Q = c->num_attention_heads * c->head_dim, KV = c->num_key_value_heads * c->head_dim;
    static const struct {
        const char *part;
        int ndim, bias; // bias: only with attention_bias
        char d0, d1;    // 'C' hidden, 'Q' heads·D, 'K' kv-heads·D, 'I' intermediate
    } LAYER[] = {
        {"self_attn.q_proj.weight", 2, 0, 'Q', 'C'}, {"self_attn.q_proj.bias", 1, 1, 'Q', 0},
        {"self_attn.k_proj.weight", 2, 0, 'K', 'C'}, {"self_attn.k_proj.bias", 1, 1, 'K', 0},
        {"self_attn.v_proj.weight", 2, 0, 'K', 'C'}, {"self_attn.v_proj.bias", 1, 1, 'K', 0},
        {"self_attn.o_proj.weight", 2, 0, 'C', 'Q'}, {"mlp.gate_proj.weight", 2, 0, 'I', 'C'},
        {"mlp.up_proj.weight", 2, 0, 'I', 'C'},      {"mlp.down_proj.weight", 2, 0, 'C', 'I'},
        {"input_layernorm.weight", 1, 0, 'C', 0},    {"post_attention_layernorm.weight", 1, 0, 'C', 0},
    };
    spec(s, &n, 2, V, C, "model.embed_tokens.weight");
    for (long long l = 0; l < c->num_hidden_layers; l++) {
        for (size_t k = 0; k < sizeof LAYER / sizeof LAYER[0]; k++) {
            if (LAYER[k].bias && !c->attention_bias) continue;
            int64_t d[2];
            for (int j = 0; j < 2; j++) {
                char x = j ? LAYER[k].d1 : LAYER[k].d0;
                d[j] = x == 'C' ? C : x == 'Q' ? Q : x == 'K' ? KV : x == 'I' ? I : 0;
            }
            char name[80];
            snprintf(name, sizeof name, "model.layers.%lld.%s", l, LAYER[k].part);
            spec(s, &n, LAYER[k].ndim, d[0], d[1], name);
        }
    }
    spec(s, &n, 1, C, 0, "model.norm.weight");
    if (!c->tie_word_embeddings) spec(s, &n, 2, V, C, "lm_head.weight");
    *out = s;
    return n;
}

int64_t lc_config_param_count(const lc_model_config *c) {
    lc_param_spec *s;
    size_t n = lc_config_tensors(c, &s);
    int64_t total = 0;
    for (size_t i = 0; i < n; i++) total += s[i].shape[0] * (s[i].ndim > 1 ? s[i].shape[1] : 1);
    free(s);
    return total;
}

static bool tolerated_extra(const lc_model_config *c, const char *name) {
    size_t n = strlen(name), k = strlen("rotary_emb.inv_freq");
    if (n >= k && !strcmp(name + n - k, "rotary_emb.inv_freq")) return true;
    return c->tie_word_embeddings && !strcmp(name, "lm_head.weight");
}

/* Whether name is a companion tensor of a quantized weight of the list (MLX:
 * "X.scales", "X.biases" for "X.weight"; bitsandbytes: "X.weight.absmax", ...). */
static bool quant_companion(const lc_model_config *c, const lc_param_spec *s, size_t n,
                            const char *name) {
    static const char *MLX[] = {".scales", ".biases"};
    static const char *BNB[] = {".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map",
                                ".quant_state.bitsandbytes__nf4", ".quant_state.bitsandbytes__fp4"};
    if (c->quant.fmt == LC_QUANT_NONE) return false;
    bool mlx = c->quant.fmt == LC_QUANT_AFFINE;
    const char **suf = mlx ? MLX : BNB;
    int ns = mlx ? 2 : 6;
    size_t len = strlen(name);
    for (int k = 0; k < ns; k++) {
        size_t sl = strlen(suf[k]);
        if (len <= sl || strcmp(name + len - sl, suf[k])) continue;
        char base[200];
        if (len - sl + 8 >= sizeof base) return false;
        memcpy(base, name, len - sl);
        base[len - sl] = 0;
        if (mlx) strcat(base, ".weight");
        for (size_t i = 0; i < n; i++)
            if (s[i].ndim == 2 && !strcmp(s[i].name, base)) return true;
    }
    return false;
}

int lc_quant_parse(const char *str, lc_quant_config *q, const char *what) {
    if (!strcmp(str, "nf4")) *q = (lc_quant_config){LC_QUANT_NF4, 4, 64, true, false};
    else if (!strcmp(str, "q4")) *q = (lc_quant_config){LC_QUANT_AFFINE, 4, 64, false, false};
    else if (!strcmp(str, "q8")) *q = (lc_quant_config){LC_QUANT_AFFINE, 8, 64, false, false};
    else if (!strcmp(str, "none") || !str[0]) *q = (lc_quant_config){LC_QUANT_NONE, 0, 0, false, false};
    else return lc_fail("%s: '%.40s' is not a quantization (nf4, q4, q8 or none)", what, str);
    return 0;
}

const char *lc_quant_name(const lc_quant_config *q, char *buf, size_t cap) {
    if (q->fmt == LC_QUANT_NONE) snprintf(buf, cap, "none");
    else if (q->fmt == LC_QUANT_NF4) snprintf(buf, cap, "nf4%s", q->nested ? "" : " (no double quantization)");
    else snprintf(buf, cap, "q%d (group %lld)", q->bits, (long long)q->group_size);
    return buf;
}

char *lc_config_json_with_quant(const char *text, size_t len, const lc_quant_config *q,
                                const char *what) {
    cJSON *root;
    if (lc_json_parse(text, len, what, &root) != 0) return NULL;
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        lc_fail("%s: must be a JSON object", what);
        return NULL;
    }
    cJSON_DeleteItemFromObjectCaseSensitive(root, "quantization");
    cJSON_DeleteItemFromObjectCaseSensitive(root, "quantization_config");
    if (q->fmt == LC_QUANT_AFFINE) { // mlx-lm writes both
        for (int k = 0; k < 2; k++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "group_size", (double)q->group_size);
            cJSON_AddNumberToObject(o, "bits", q->bits);
            cJSON_AddStringToObject(o, "mode", "affine");
            if (!q->embeddings) { // mlx-lm's per-layer entries: keep these as stored
                cJSON_AddBoolToObject(o, "model.embed_tokens", 0);
                cJSON_AddBoolToObject(o, "lm_head", 0);
            }
            cJSON_AddItemToObject(root, k ? "quantization_config" : "quantization", o);
        }
    } else if (q->fmt == LC_QUANT_NF4) { // transformers' BitsAndBytesConfig.to_dict()
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "quant_method", "bitsandbytes");
        cJSON_AddBoolToObject(o, "_load_in_4bit", 1);
        cJSON_AddBoolToObject(o, "_load_in_8bit", 0);
        cJSON_AddBoolToObject(o, "load_in_4bit", 1);
        cJSON_AddBoolToObject(o, "load_in_8bit", 0);
        cJSON_AddStringToObject(o, "bnb_4bit_quant_type", "nf4");
        cJSON_AddBoolToObject(o, "bnb_4bit_use_double_quant", q->nested);
        cJSON_AddStringToObject(o, "bnb_4bit_compute_dtype", "bfloat16");
        cJSON_AddStringToObject(o, "bnb_4bit_quant_storage", "uint8");
        cJSON_AddNumberToObject(o, "llm_int8_threshold", 6.0);
        cJSON_AddBoolToObject(o, "llm_int8_has_fp16_weight", 0);
        cJSON_AddNullToObject(o, "llm_int8_skip_modules");
        cJSON_AddBoolToObject(o, "llm_int8_enable_fp32_cpu_offload", 0);
        cJSON_AddItemToObject(root, "quantization_config", o);
    }
    char *out = cJSON_Print(root);
    cJSON_Delete(root);
    if (!out) lc_fail("%s: out of memory writing config.json", what);
    return out;
}

int lc_config_check_weights(const lc_model_config *c, const lc_safetensors *st, const char *what) {
    lc_param_spec *s;
    size_t n = lc_config_tensors(c, &s);
    int rc = 0;
    char a[128], b[128];
    for (size_t i = 0; i < n && rc == 0; i++) {
        const lc_tensor *t = lc_st_find(st, s[i].name);
        if (!t) {
            rc = lc_fail("%s: tensor '%s' is missing (config.json describes a %s of %lld layers; "
                         "is the download complete, and is it the right config?)",
                         what, s[i].name, ARCH_NAMES[c->arch], (long long)c->num_hidden_layers);
        } else if (c->quant.fmt != LC_QUANT_NONE && s[i].ndim == 2 &&
                   (t->dtype == LC_DT_U32 || t->dtype == LC_DT_U8)) {
            // stored quantized: the model loader checks it with its companions
        } else if (t->ndim != s[i].ndim || t->shape[0] != s[i].shape[0] ||
                   (s[i].ndim > 1 && t->shape[1] != s[i].shape[1])) {
            rc = lc_fail("%s: tensor '%s' has shape %s, but config.json implies %s (is it the "
                         "right config?)",
                         what, s[i].name, lc_shape_str(a, sizeof a, t->ndim, t->shape),
                         lc_shape_str(b, sizeof b, s[i].ndim, s[i].shape));
        } else if (t->dtype != LC_DT_F32 && t->dtype != LC_DT_F16 && t->dtype != LC_DT_BF16) {
            rc = lc_fail("%s: tensor '%s' is %s; lorac reads F32, F16 and BF16 weights "
                         "(quantized models are not supported)",
                         what, s[i].name, lc_dtype_name(t->dtype));
        }
    }
    for (size_t j = 0; j < st->n_tensors && rc == 0; j++) {
        const char *name = st->tensors[j].name;
        bool known = tolerated_extra(c, name) || quant_companion(c, s, n, name);
        for (size_t i = 0; i < n && !known; i++) known = !strcmp(s[i].name, name);
        if (!known)
            rc = lc_fail("%s: unexpected tensor '%s' (not part of a %s with this config.json; is "
                         "it the right config?)",
                         what, name, ARCH_NAMES[c->arch]);
    }
    free(s);
    return rc;
}

int lc_model_dir_check(const char *path) {
    if (lc_is_dir(path)) return 0;
    if (lc_is_file(path))
        return lc_fail("%s: is a file; give the model's folder (config.json, tokenizer, *.safetensors)",
                       path);
    const char *slash = strchr(path, '/');
    if (slash && slash != path && !strchr(slash + 1, '/') && path[0] != '.')
        return lc_fail("%s: no such folder; it looks like a Hugging Face repo id: fetch it with "
                       "'lorac download %s' and give the folder it prints",
                       path, path);
    return lc_fail("%s: no such model folder", path);
}
