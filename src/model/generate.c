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

/* One generation's state, handed each new token by take(). */
typedef struct {
    const lc_model_config *c;
    const lc_tokenizer *t;
    lc_gen_emit emit;
    void *ctx;
    lc_ids *out;
    lc_gen_stats *st;
    lc_detok d;
    lc_buf text;
} gen_run;

/* A new token: 1 at an end-of-sequence id or when the callback stops, -1 on a
 * detokenizer error, else 0 (kept, its text emitted). */
static int take(void *ctx, int32_t id) {
    gen_run *g = ctx;
    if (is_eos(g->c, g->t, id)) {
        g->st->hit_eos = true;
        return 1;
    }
    g->st->generated++;
    if (g->out) lc_ids_push(g->out, id);
    lc_buf_clear(&g->text);
    if (lc_detok_push(&g->d, id, &g->text) != 0) return -1;
    if (g->emit && g->text.len && g->emit(g->ctx, g->text.data, g->text.len)) return 1;
    return 0;
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
    gen_run g = {c, t, emit, ctx, out, &st, {0}, {0}};
    lc_detok_init(&g.d, t, true);
    int rc = 0;
    double t0 = lc_now();
    if (lc_model_step(m, kv, prompt, n_prompt, logits) != 0) rc = -1;
    st.prefill_s = lc_now() - t0;
    t0 = lc_now();
    if (rc == 0 && max_tokens > 0) {
        int32_t id = lc_sample(&s, logits, c->vocab_size);
        int r = take(&g, id);
        if (r < 0) rc = -1;
        else if (r == 0 && sc->temp == 0) // greedy: the device may choose the tokens itself
            rc = lc_model_greedy(m, kv, id, max_tokens - 1, take, &g);
        else
            for (int64_t i = 1; r == 0 && i < max_tokens; i++) {
                if (lc_model_step(m, kv, &id, 1, logits) != 0) r = -1;
                else r = take(&g, id = lc_sample(&s, logits, c->vocab_size));
                if (r < 0) rc = -1;
            }
    }
    if (rc == 0) {
        lc_buf_clear(&g.text);
        if (lc_detok_finish(&g.d, &g.text) != 0) rc = -1;
        else if (emit && g.text.len) emit(ctx, g.text.data, g.text.len);
    }
    st.decode_s = lc_now() - t0;
    lc_buf_free(&g.text);
    lc_detok_free(&g.d);
    lc_sampler_free(&s);
    free(logits);
    lc_kv_cache_free(kv);
    if (stats) *stats = st;
    return rc;
}
