/*
 * test_init.c — the weights `lorac init` writes: exactly the tensors of the config
 * (names and shapes as transformers names them), norms 1, biases 0, and the others
 * drawn from normal(0, initializer_range). The statistical checks use bounds derived
 * from the sample size (5 standard errors) plus bf16's rounding (relative 2^-8).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "core/file.h"
#include "harness.h"
#include "io/config.h"
#include "io/safetensors.h"

static char dir[64];

static int run_init(const char *cfg_json, const char *out, const char *extra) {
    char cfg[128], tok[128];
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    snprintf(tok, sizeof tok, "%s/tokenizer.json", dir);
    if (lc_write_file_atomic(cfg, cfg_json, strlen(cfg_json)) || lc_write_file_atomic(tok, "{}", 2))
        return -1;
    char *argv[16] = {"init", "--config", cfg, "--tokenizer", tok, "--out", (char *)out, "-q", "--seed", "11"};
    int argc = 10;
    if (extra) argv[argc++] = (char *)extra;
    return cmd_init(argc, argv);
}

static void test_init_weights(void) {
    const char *cfg = "{\"architectures\":[\"Qwen2ForCausalLM\"],\"vocab_size\":1000,\"hidden_size\":256,"
                      "\"intermediate_size\":512,\"num_hidden_layers\":1,\"num_attention_heads\":8,"
                      "\"num_key_value_heads\":2,\"initializer_range\":0.05,\"tie_word_embeddings\":true}";
    char out[128];
    snprintf(out, sizeof out, "%s/model", dir);
    CHECK_EQ_INT(run_init(cfg, out, NULL), 0);
    lc_model_config c;
    lc_safetensors st;
    CHECK_OK(lc_config_load(&c, out));
    CHECK_OK(lc_st_open(&st, out));
    CHECK_OK(lc_config_check_weights(&c, &st, out));
    CHECK(lc_st_find(&st, "lm_head.weight") == NULL);
    CHECK_EQ_STR(lc_st_meta(&st, "format"), "pt");
    for (size_t i = 0; i < st.n_tensors; i++) {
        const lc_tensor *t = &st.tensors[i];
        CHECK(t->dtype == LC_DT_BF16);
        float *v = malloc(t->numel * sizeof *v);
        CHECK_OK(lc_to_f32(v, t->data, t->dtype, t->numel));
        double sum = 0, sq = 0;
        for (size_t j = 0; j < t->numel; j++) sum += v[j], sq += (double)v[j] * v[j];
        double mean = sum / t->numel, sd = sqrt(sq / t->numel - mean * mean);
        const char *n = t->name;
        size_t len = strlen(n);
        if (strstr(n, "norm.weight")) {
            CHECK_MSG(mean == 1.0 && sd == 0, "%s: norms must be 1", n);
        } else if (!strcmp(n + len - 5, ".bias")) {
            CHECK_MSG(sum == 0 && sq == 0, "%s: biases must be 0", n);
        } else {
            double se = 0.05 / sqrt((double)t->numel);
            CHECK_MSG(fabs(mean) < 5 * se, "%s: mean %g", n, mean);
            CHECK_MSG(fabs(sd - 0.05) < 5 * 0.05 / sqrt(2.0 * t->numel) + 0.05 / 256, "%s: sd %g", n, sd);
        }
        free(v);
    }
    lc_st_close(&st);
}

static void test_init_shards_same_values(void) {
    // Sharding does not change a tensor's values: each tensor has its own stream.
    const char *cfg = "{\"architectures\":[\"LlamaForCausalLM\"],\"vocab_size\":64,\"hidden_size\":32,"
                      "\"intermediate_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":4}";
    char a[128], b[128];
    snprintf(a, sizeof a, "%s/one", dir);
    snprintf(b, sizeof b, "%s/many", dir);
    CHECK_EQ_INT(run_init(cfg, a, NULL), 0);
    CHECK_EQ_INT(run_init(cfg, b, "--shard-size=3KB"), 0);
    lc_safetensors x, y;
    CHECK_OK(lc_st_open(&x, a));
    CHECK_OK(lc_st_open(&y, b));
    CHECK(x.n_files == 1 && y.n_files > 2);
    CHECK_EQ_INT(x.n_tensors, y.n_tensors);
    for (size_t i = 0; i < x.n_tensors; i++) {
        const lc_tensor *t = &x.tensors[i], *u = lc_st_find(&y, t->name);
        CHECK_MSG(u && u->nbytes == t->nbytes && !memcmp(u->data, t->data, t->nbytes), "%s", t->name);
    }
    lc_st_close(&x);
    lc_st_close(&y);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/lorac-init-XXXXXX");
    if (!mkdtemp(dir)) return 1;
    RUN(test_init_weights);
    RUN(test_init_shards_same_values);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) printf("  could not remove %s\n", dir);
    return t_summary();
}
