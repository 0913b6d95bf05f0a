/*
 * test_smoke.c — the model on a `lorac init` folder with BF16 weights (the dtype of
 * real checkpoints): it loads, its loss at initialisation is close to ln(V) (weights
 * drawn with std 0.02 give nearly uniform logits), fresh adapters (B = 0) change
 * nothing and get gradients only in B, a few SGD steps on the adapters lower the loss,
 * dropout changes the loss but eval does not see it, and generation runs.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmd/cmd.h"
#include "core/file.h"
#include "harness.h"
#include "model/model.h"

static void test_bf16_init_model(void) {
    char dir[] = "/tmp/lorac-smoke-XXXXXX";
    if (!mkdtemp(dir)) SKIP("no temporary folder");
    char out[300];
    snprintf(out, sizeof out, "%s/m", dir);
    char *argv[] = {"init", "--config", "tests/fixtures/models/tiny-mistral/config.json", "--tokenizer",
                    "tests/fixtures/tokenizers/bl-gpt2/tokenizer.json", "--out", out, "--dtype", "bf16",
                    "--seed", "3", "-q", NULL};
    fflush(stdout);
    CHECK_EQ_INT(cmd_init(12, argv), 0);
    lc_model *m;
    CHECK_OK(lc_model_load(out, &m));
    if (!m) return;
    const lc_model_config *c = lc_model_cfg(m);
    int64_t B = 2, T = 16, V = c->vocab_size;
    int32_t tok[32], tgt[32];
    for (int i = 0; i < 32; i++) tok[i] = (int32_t)((i * 37 + 11) % V), tgt[i] = (i % 16) < 15 ? (int32_t)((i * 53 + 5) % V) : -1;
    lc_batch bt = {B, T, tok, tgt, 1};
    double base, sum;
    int64_t nt;
    CHECK_OK(lc_model_loss(m, &bt, &sum, &nt));
    base = sum / (double)nt;
    CHECK_EQ_INT(nt, 30);
    CHECK_MSG(fabs(base - log((double)V)) < 0.05, "initial loss %.4f vs ln V %.4f", base, log((double)V));
    lc_lora_config lc;
    lc_lora_config_default(&lc);
    lc.rank = 4, lc.scale = 2.0f;
    CHECK_OK(lc_model_add_lora(m, &lc, 5));
    double loss;
    CHECK_OK(lc_model_forward_backward(m, &bt, &loss, &nt));
    CHECK_MSG(fabs(loss - base) < 1e-6, "fresh adapters change the loss: %.8f vs %.8f", loss, base);
    size_t np;
    lc_lora_param *ps = lc_model_lora(m, &np);
    CHECK_EQ_INT(np, 21); // 3 layers x 7 keys (num_layers 16 capped at 3)
    double ga = 0, gb = 0;
    for (size_t i = 0; i < np; i++) {
        for (int64_t j = 0; j < ps[i].in * ps[i].r; j++) ga += fabs(ps[i].ga[j]);
        for (int64_t j = 0; j < ps[i].r * ps[i].out; j++) gb += fabs(ps[i].gb[j]);
    }
    CHECK(ga == 0.0 && gb > 0 && isfinite(gb));
    double first = loss;
    for (int step = 0; step < 5; step++) {
        for (size_t i = 0; i < np; i++) {
            for (int64_t j = 0; j < ps[i].in * ps[i].r; j++) ps[i].a[j] -= 0.5f * ps[i].ga[j];
            for (int64_t j = 0; j < ps[i].r * ps[i].out; j++) ps[i].b[j] -= 0.5f * ps[i].gb[j];
        }
        CHECK_OK(lc_model_forward_backward(m, &bt, &loss, &nt));
    }
    printf("  bf16 model: loss %.4f at init, %.4f after 5 SGD steps on the adapters\n", first, loss);
    CHECK(loss < first - 0.01);
    // dropout: a different loss in training, none in evaluation
    lc_model_free(m);
    CHECK_OK(lc_model_load(out, &m));
    lc.dropout = 0.5f;
    CHECK_OK(lc_model_add_lora(m, &lc, 5));
    ps = lc_model_lora(m, &np);
    for (size_t i = 0; i < np; i++)
        for (int64_t j = 0; j < ps[i].r * ps[i].out; j++) ps[i].b[j] = 0.05f * (float)((j % 7) - 3);
    double l1, l2;
    CHECK_OK(lc_model_forward_backward(m, &bt, &l1, &nt));
    bt.seed = 2;
    CHECK_OK(lc_model_forward_backward(m, &bt, &l2, &nt));
    CHECK(l1 != l2);
    double e1, e2;
    CHECK_OK(lc_model_loss(m, &bt, &e1, &nt));
    bt.seed = 1;
    CHECK_OK(lc_model_loss(m, &bt, &e2, &nt));
    CHECK(e1 == e2);
    // generation through the cache matches the logits of a full pass
    lc_kv_cache *kv;
    CHECK_OK(lc_kv_cache_create(m, 16, &kv));
    float *lg = malloc((size_t)V * 4), *full = malloc((size_t)(16 * V) * 4);
    CHECK_OK(lc_model_step(m, kv, tok, 10, lg));
    CHECK_OK(lc_model_step(m, kv, tok + 10, 1, lg));
    lc_batch one = {1, 11, tok, NULL, 0};
    CHECK_OK(lc_model_logits(m, &one, full));
    double md = 0, mr = 0;
    for (int64_t v = 0; v < V; v++) md = fmax(md, fabs(lg[v] - full[10 * V + v])), mr = fmax(mr, fabs(full[10 * V + v]));
    CHECK_MSG(md <= 1e-5 * mr, "cached decode differs from the full pass by %.3e (max %.3e)", md, mr);
    free(lg), free(full);
    lc_kv_cache_free(kv);
    lc_model_free(m);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
}

int main(void) {
    RUN(test_bf16_init_model);
    return t_summary();
}
