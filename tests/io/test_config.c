/*
 * test_config.c — config.json reading, checked against what transformers 5.17 makes of
 * the same files (tests/io/fixtures/ref/configs.json: head_dim, kv heads, rope
 * parameters, exact parameter counts of the instantiated models) and against configs
 * and weights that transformers itself saved (ref/tiny-llama, ref/tiny-qwen2).
 * The 4.x inputs in fixtures/config/ restate the published config.json files of
 * Mistral-7B-Instruct-v0.3, Llama-3.1-8B(-Instruct) and Qwen2.5-0.5B-Instruct.
 */
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "core/json.h"
#include "harness.h"
#include "io/config.h"

#define FIX "tests/io/fixtures/"

static int parse_str(lc_model_config *c, const char *s) {
    return lc_config_parse(c, s, strlen(s), "config.json");
}

/* Compares a parsed config with transformers' view of it (one entry of configs.json). */
static void check_against(const lc_model_config *c, const cJSON *r, const char *name) {
#define NUM(key) (cJSON_GetObjectItem(r, key) ? cJSON_GetObjectItem(r, key)->valuedouble : -1)
    CHECK_MSG(c->vocab_size == NUM("vocab_size"), "%s vocab_size", name);
    CHECK_MSG(c->hidden_size == NUM("hidden_size"), "%s hidden_size", name);
    CHECK_MSG(c->intermediate_size == NUM("intermediate_size"), "%s intermediate_size", name);
    CHECK_MSG(c->num_hidden_layers == NUM("num_hidden_layers"), "%s layers", name);
    CHECK_MSG(c->num_attention_heads == NUM("num_attention_heads"), "%s heads", name);
    CHECK_MSG(c->num_key_value_heads == NUM("num_key_value_heads"), "%s kv heads", name);
    const cJSON *hd = cJSON_GetObjectItem(r, "head_dim");
    int64_t want_hd = cJSON_IsNumber(hd) ? (int64_t)hd->valuedouble
                                         : (int64_t)(NUM("hidden_size") / NUM("num_attention_heads"));
    CHECK_MSG(c->head_dim == want_hd, "%s head_dim %lld", name, (long long)c->head_dim);
    CHECK_MSG(c->max_position_embeddings == NUM("max_position_embeddings"), "%s max pos", name);
    CHECK_MSG(c->rms_norm_eps == NUM("rms_norm_eps"), "%s eps", name);
    CHECK_MSG(c->tie_word_embeddings == cJSON_IsTrue(cJSON_GetObjectItem(r, "tie_word_embeddings")),
              "%s tie", name);
    CHECK_MSG(c->attention_bias == cJSON_IsTrue(cJSON_GetObjectItem(r, "q_proj_bias")), "%s bias",
              name);
    const cJSON *sw = cJSON_GetObjectItem(r, "sliding_window");
    CHECK_MSG(c->sliding_window == (cJSON_IsNumber(sw) ? (int64_t)sw->valuedouble : 0),
              "%s sliding window", name);
    CHECK_MSG(c->bos_token_id == NUM("bos_token_id"), "%s bos", name);
    CHECK_MSG(c->n_eos == 1 && c->eos_token_ids[0] == NUM("eos_token_id"), "%s eos", name);
    const cJSON *rp = cJSON_GetObjectItem(r, "rope_parameters");
    CHECK_MSG(c->rope_theta == cJSON_GetObjectItem(rp, "rope_theta")->valuedouble, "%s theta", name);
    const char *type = cJSON_GetObjectItem(rp, "rope_type")->valuestring;
    CHECK_MSG((c->rope_type == LC_ROPE_LLAMA3) == !strcmp(type, "llama3"), "%s rope type", name);
    if (c->rope_type == LC_ROPE_LLAMA3) {
        CHECK(c->rope_factor == cJSON_GetObjectItem(rp, "factor")->valuedouble);
        CHECK(c->rope_low_freq_factor == cJSON_GetObjectItem(rp, "low_freq_factor")->valuedouble);
        CHECK(c->rope_high_freq_factor == cJSON_GetObjectItem(rp, "high_freq_factor")->valuedouble);
        CHECK(c->rope_original_max_position_embeddings ==
              cJSON_GetObjectItem(rp, "original_max_position_embeddings")->valuedouble);
    }
    CHECK_MSG(lc_config_param_count(c) == (int64_t)NUM("n_params"), "%s: %lld parameters, "
              "transformers counts %.0f", name, (long long)lc_config_param_count(c), NUM("n_params"));
    CHECK(c->has_dtype && c->dtype == LC_DT_BF16);
#undef NUM
}

/* Each published 4.x config, and transformers' own 5.x rewrite of it, read the same. */
static void test_published_configs_match_transformers(void) {
    cJSON *ref;
    CHECK_OK(lc_json_parse_file(FIX "ref/configs.json", 1 << 20, &ref));
    if (!ref) return;
    int n = 0;
    for (const cJSON *e = ref->child; e; e = e->next, n++) {
        char path[256];
        snprintf(path, sizeof path, FIX "config/%s", e->string);
        lc_model_config c, c5;
        CHECK_OK(lc_config_load(&c, path));
        check_against(&c, e, path);
        char *saved = cJSON_Print(cJSON_GetObjectItem(e, "saved_5x"));
        CHECK_OK(lc_config_parse(&c5, saved, strlen(saved), "5.x config.json"));
        check_against(&c5, e, e->string);
        free(saved);
    }
    CHECK_EQ_INT(n, 3);
    cJSON_Delete(ref);
    lc_model_config c;
    CHECK_OK(lc_config_load(&c, FIX "config/mistral-7b-instruct-v0.3.json"));
    CHECK(c.arch == LC_ARCH_MISTRAL && c.sliding_window == 0 && !c.attention_bias);
    CHECK_EQ_INT(lc_config_param_count(&c), 7248023552LL);
    CHECK_OK(lc_config_load(&c, FIX "config/qwen2.5-0.5b-instruct.json"));
    CHECK(c.arch == LC_ARCH_QWEN2 && c.attention_bias && c.tie_word_embeddings && c.head_dim == 64);
}

static void test_generation_config_merge(void) {
    lc_model_config c;
    CHECK_OK(lc_config_load(&c, FIX "config/llama-3.1-8b.json"));
    CHECK(c.n_eos == 1 && c.eos_token_ids[0] == 128001);
    char *text;
    size_t len;
    CHECK_OK(lc_read_file(FIX "config/llama-3.1-8b-instruct.generation_config.json", 1 << 20, &text, &len));
    CHECK_OK(lc_config_merge_generation(&c, text, len, "generation_config.json"));
    free(text);
    CHECK(c.n_eos == 3 && c.eos_token_ids[0] == 128001 && c.eos_token_ids[1] == 128008 &&
          c.eos_token_ids[2] == 128009 && c.bos_token_id == 128000);
    // A generation config without ids keeps the model's.
    CHECK_OK(lc_config_merge_generation(&c, "{\"temperature\": 0.6}", 20, "generation_config.json"));
    CHECK_EQ_INT(c.n_eos, 3);
}

/* Configs and weights saved by transformers 5.17 itself (5.x layout). */
static void test_transformers_saved_models(void) {
    cJSON *ref;
    CHECK_OK(lc_json_parse_file(FIX "ref/tiny_models.json", 1 << 20, &ref));
    if (!ref) return;
    static const char *names[] = {"tiny-llama", "tiny-qwen2"};
    for (int k = 0; k < 2; k++) {
        char dir[128];
        snprintf(dir, sizeof dir, FIX "ref/%s", names[k]);
        lc_model_config c;
        CHECK_OK(lc_config_load(&c, dir));
        const cJSON *info = cJSON_GetObjectItem(ref, names[k]);
        CHECK_EQ_INT(lc_config_param_count(&c), cJSON_GetObjectItem(info, "n_params")->valuedouble);
        // Our tensor list is transformers' state dict (less a tied lm_head).
        lc_param_spec *s;
        size_t n = lc_config_tensors(&c, &s);
        const cJSON *sd = cJSON_GetObjectItem(info, "state_dict");
        int in_sd = 0;
        for (const cJSON *e = sd->child; e; e = e->next)
            if (!(c.tie_word_embeddings && !strcmp(e->string, "lm_head.weight"))) in_sd++;
        CHECK_EQ_INT(n, in_sd);
        for (size_t i = 0; i < n; i++) {
            const cJSON *shape = cJSON_GetObjectItem(sd, s[i].name);
            CHECK_MSG(shape && cJSON_GetArraySize(shape) == s[i].ndim &&
                          shape->child->valuedouble == s[i].shape[0],
                      "%s: %s", names[k], s[i].name);
        }
        free(s);
        lc_safetensors st;
        CHECK_OK(lc_st_open(&st, dir));
        CHECK_OK(lc_config_check_weights(&c, &st, dir));
        lc_st_close(&st);
    }
    lc_model_config c;
    CHECK_OK(lc_config_load(&c, FIX "ref/tiny-llama"));
    CHECK(c.rope_type == LC_ROPE_LLAMA3 && c.rope_original_max_position_embeddings == 64 &&
          c.rope_theta == 500000.0 && c.n_eos == 2 && c.eos_token_ids[1] == 3 && c.head_dim == 4);
    CHECK(c.has_dtype && c.dtype == LC_DT_BF16);
    CHECK_OK(lc_config_load(&c, FIX "ref/tiny-qwen2"));
    CHECK(c.arch == LC_ARCH_QWEN2 && c.attention_bias && c.has_dtype && c.dtype == LC_DT_F32);
    cJSON_Delete(ref);
}

static void test_weights_mismatch(void) {
    lc_model_config c;
    lc_safetensors st;
    CHECK_OK(lc_st_open(&st, FIX "ref/tiny-llama"));
    CHECK_OK(lc_config_load(&c, FIX "ref/tiny-llama"));
    lc_model_config more = c, wide = c, fewer = c;
    more.num_hidden_layers = 3;
    CHECK_FAILS(lc_config_check_weights(&more, &st, "tiny"),
                "tensor 'model.layers.2.self_attn.q_proj.weight' is missing");
    wide.intermediate_size = 33;
    CHECK_FAILS(lc_config_check_weights(&wide, &st, "tiny"),
                "'model.layers.0.mlp.gate_proj.weight' has shape [32, 16], but config.json implies [33, 16]");
    fewer.num_hidden_layers = 1;
    CHECK_FAILS(lc_config_check_weights(&fewer, &st, "tiny"), "unexpected tensor 'model.layers.1.");
    lc_st_close(&st);
}

static void test_write_roundtrip(void) {
    static const char *files[] = {"config/mistral-7b-instruct-v0.3.json", "config/llama-3.1-8b.json",
                                  "config/qwen2.5-0.5b-instruct.json", "ref/tiny-llama/config.json"};
    for (int k = 0; k < 4; k++) {
        char path[200];
        snprintf(path, sizeof path, FIX "%s", files[k]);
        lc_model_config a, b;
        CHECK_OK(lc_config_load(&a, path));
        char *j = lc_config_to_json(&a);
        CHECK_OK(parse_str(&b, j));
        CHECK_MSG(!memcmp(&a, &b, sizeof a), "%s does not survive a write and a read", files[k]);
        free(j);
    }
    lc_model_config c;
    CHECK_OK(lc_config_load(&c, FIX "config/llama-3.1-8b.json"));
    char *j = lc_config_to_json(&c);
    CHECK(strstr(j, "\"rms_norm_eps\": 1e-05,") && strstr(j, "\"rope_theta\": 500000.0,") &&
          strstr(j, "\"rope_type\": \"llama3\"") && strstr(j, "\"torch_dtype\": \"bfloat16\""));
    free(j);
}

static void test_bad_configs(void) {
    lc_model_config c;
    const char *base = "\"vocab_size\":100,\"hidden_size\":64,\"intermediate_size\":128,"
                       "\"num_hidden_layers\":2,\"num_attention_heads\":4";
    char buf[1024];
#define BAD(extra, needle)                                                                 \
    do {                                                                                   \
        snprintf(buf, sizeof buf, "{\"architectures\":[\"LlamaForCausalLM\"]%s,%s}", extra, base); \
        CHECK_FAILS(parse_str(&c, buf), needle);                                           \
        CHECK(!strchr(lc_errmsg(), '\n'));                                                 \
    } while (0)
    snprintf(buf, sizeof buf, "{\"architectures\":[\"LlamaForCausalLM\"],%s}", base);
    CHECK_OK(parse_str(&c, buf));
    CHECK(c.head_dim == 16 && c.num_key_value_heads == 4 && c.rope_theta == 10000.0 && c.bos_token_id == -1);
    CHECK_FAILS(parse_str(&c, "{\"architectures\":[\"GPT2LMHeadModel\"]}"),
                "config.json: architecture 'GPT2LMHeadModel' is not supported (supported: "
                "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)");
    CHECK_FAILS(parse_str(&c, "{\"vocab_size\":1}"), "no \"architectures\" or \"model_type\"");
    CHECK_FAILS(parse_str(&c, "{\"architectures\":[\"LlamaForCausalLM\"],"), "invalid JSON");
    CHECK_FAILS(parse_str(&c, "{\"architectures\":[\"MistralForCausalLM\"]}"), "\"vocab_size\" is missing");
    BAD(",\"num_key_value_heads\":3", "must be a multiple of num_key_value_heads (3)");
    BAD(",\"hidden_size\":66", "not a multiple of num_attention_heads");
    BAD(",\"head_dim\":15", "must be even");
    BAD(",\"vocab_size\":-5", "\"vocab_size\" is -5");
    BAD(",\"num_hidden_layers\":0", "\"num_hidden_layers\" is 0");
    BAD(",\"hidden_act\":\"gelu\"", "hidden_act 'gelu' is not supported");
    BAD(",\"mlp_bias\":true", "mlp_bias");
    BAD(",\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4.0}", "rope type 'yarn' is not supported");
    BAD(",\"rope_scaling\":{\"type\":\"dynamic\",\"factor\":4.0}", "rope type 'dynamic'");
    BAD(",\"rope_parameters\":{\"rope_type\":\"llama3\",\"factor\":8.0}", "needs \"low_freq_factor\"");
    BAD(",\"rope_scaling\":{\"rope_type\":\"linear\"}", "needs \"factor\"");
    BAD(",\"rope_theta\":-1", "rope_theta");
    BAD(",\"rms_norm_eps\":0", "rms_norm_eps");
    BAD(",\"eos_token_id\":[1,\"x\"]", "non-negative integer token ids");
    BAD(",\"eos_token_id\":100", "eos_token_id 100 is outside the vocabulary");
    BAD(",\"bos_token_id\":-1e05", "must be a non-negative token id");
    BAD(",\"torch_dtype\":\"int8\"", "'int8' is not supported");
    BAD(",\"hidden_size\":\"64\"", "must be an integer");
    // linear rope and 5.x keys are read.
    snprintf(buf, sizeof buf, "{\"architectures\":[\"LlamaForCausalLM\"],%s,\"rope_parameters\":"
             "{\"rope_type\":\"linear\",\"factor\":2.0,\"rope_theta\":1e6},\"dtype\":\"float16\","
             "\"eos_token_id\":[1,2],\"bos_token_id\":null}", base);
    CHECK_OK(parse_str(&c, buf));
    CHECK(c.rope_type == LC_ROPE_LINEAR && c.rope_factor == 2.0 && c.rope_theta == 1e6 &&
          c.dtype == LC_DT_F16 && c.n_eos == 2 && c.bos_token_id == -1);
    CHECK_FAILS(lc_config_load(&c, "tests/io/fixtures/no-such-config.json"), "cannot open");
#undef BAD
}

int main(void) {
    RUN(test_published_configs_match_transformers);
    RUN(test_generation_config_merge);
    RUN(test_transformers_saved_models);
    RUN(test_weights_mismatch);
    RUN(test_write_roundtrip);
    RUN(test_bad_configs);
    return t_summary();
}
