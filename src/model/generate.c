/*
 * generate.c — generation with a KV cache. See generate.h.
 */
#include "model/generate.h"

#include <stdlib.h>

#include "core/error.h"
#include "core/log.h"
#include "core/mem.h"

static bool is_eos(const lc_model_config *c, const lc_tokenizer *t, int32_t id) {
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos_token_ids[i] == id) return true;
    return id == lc_tokenizer_eos(t);
}

int lc_generate(lc_model *m, const lc_tokenizer *t, const int32_t *prompt, int64_t n_prompt,
                int64_t max_tokens, const lc_sample_config *sc, lc_gen_emit emit, void *ctx,
                lc_ids *out, lc_gen_stats *stats) {
    const lc_model_config *c = lc_model_cfg(m);
    lc_gen_stats st = {0};
    st.prompt_tokens = n_prompt;
    if (n_prompt <= 0) return lc_fail("generate: the prompt has no tokens");
    if (max_tokens < 0) return lc_fail("generate: --max-tokens must be >= 0");
    int64_t cap = n_prompt + max_tokens;
    if (cap > c->max_position_embeddings)
        return lc_fail("generate: prompt (%lld tokens) + max tokens (%lld) exceed the model's "
                       "%lld positions; shorten the prompt or lower --max-tokens",
                       (long long)n_prompt, (long long)max_tokens,
                       (long long)c->max_position_embeddings);
    for (int64_t i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= c->vocab_size)
            return lc_fail("generate: prompt token %d is outside the model's vocabulary (%lld)",
                           (int)prompt[i], (long long)c->vocab_size);
    lc_kv_cache *kv;
    if (lc_kv_cache_create(m, cap, &kv) != 0) return -1;
    float *logits = xmalloc((size_t)c->vocab_size * sizeof *logits);
    lc_sampler s;
    lc_sampler_init(&s, sc);
    lc_detok d;
    lc_detok_init(&d, t, true);
    lc_buf text = {0};
    int rc = 0;
    double t0 = lc_now();
    if (lc_model_step(m, kv, prompt, n_prompt, logits) != 0) rc = -1;
    st.prefill_s = lc_now() - t0;
    t0 = lc_now();
    for (int64_t i = 0; rc == 0 && i < max_tokens; i++) {
        int32_t id = lc_sample(&s, logits, c->vocab_size);
        if (is_eos(c, t, id)) {
            st.hit_eos = true;
            break;
        }
        st.generated++;
        if (out) lc_ids_push(out, id);
        lc_buf_clear(&text);
        if (lc_detok_push(&d, id, &text) != 0) {
            rc = -1;
            break;
        }
        if (emit && text.len && emit(ctx, text.data, text.len)) break;
        if (i + 1 < max_tokens && lc_model_step(m, kv, &id, 1, logits) != 0) rc = -1;
    }
    if (rc == 0) {
        lc_buf_clear(&text);
        if (lc_detok_finish(&d, &text) != 0) rc = -1;
        else if (emit && text.len) emit(ctx, text.data, text.len);
    }
    st.decode_s = lc_now() - t0;
    lc_buf_free(&text);
    lc_detok_free(&d);
    lc_sampler_free(&s);
    free(logits);
    lc_kv_cache_free(kv);
    if (stats) *stats = st;
    return rc;
}
