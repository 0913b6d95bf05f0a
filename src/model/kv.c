/*
 * kv.c — generation: a key/value cache for one sequence and the step that appends
 * tokens to it and returns the next-token logits.
 *
 * The cache holds, for each block, the rotated keys and the values of every position
 * so far ((L, capacity, KV, D) each, fp32, backend memory); a step runs the blocks on
 * the new tokens only, attending to the cache. One new token goes through the backend's
 * fused step (->decode: on CUDA one recorded graph replayed per token) when it has one;
 * the cache keeps that step's descriptor. Owns the cache's memory.
 */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/mem.h"
#include "model/internal.h"
#include "model/sample.h"

struct lc_kv_cache {
    lc_backend *be;
    int64_t cap, len, L, KVD;
    float *k, *v; // (L, cap, KV, D)
    lc_decode_step step;      // the one-token step's descriptor (->decode)
    lc_decode_block *blocks;  // (L) its blocks
};

int lc_kv_cache_create(const lc_model *m, int64_t capacity, lc_kv_cache **out) {
    *out = NULL;
    const lc_model_config *c = &m->cfg;
    if (capacity <= 0 || capacity > (int64_t)1 << 24)
        return lc_fail("kv cache: capacity %lld must be between 1 and 16M positions", (long long)capacity);
    lc_kv_cache *kv = xcalloc(1, sizeof *kv);
    kv->be = m->be, kv->cap = capacity, kv->L = c->num_hidden_layers;
    kv->KVD = c->num_key_value_heads * c->head_dim;
    size_t bytes = (size_t)(kv->L * capacity * kv->KVD) * sizeof(float);
    kv->k = m->be->alloc(m->be, bytes), kv->v = m->be->alloc(m->be, bytes);
    kv->blocks = xcalloc((size_t)kv->L, sizeof *kv->blocks);
    *out = kv;
    return 0;
}

void lc_kv_cache_free(lc_kv_cache *kv) {
    if (!kv) return;
    kv->be->release(kv->be, kv->k), kv->be->release(kv->be, kv->v);
    free(kv->blocks);
    free(kv);
}

void lc_kv_cache_reset(lc_kv_cache *kv) { kv->len = 0; }

int64_t lc_kv_cache_len(const lc_kv_cache *kv) { return kv->len; }

/* One new token through the backend's fused step (->decode) when it has one and the
 * block weights are all plain (F32/BF16, one dtype) or all quantized (the backend says
 * which formats it takes): fills kv's descriptor and queues the step (logits into
 * a->logits). Returns 0 (queued) or 1 (not taken: run the single ops). */
static int step_fused(lc_model *m, lc_kv_cache *kv, lc_arena *a) {
    lc_backend *be = m->be;
    if (!be->decode) return 1;
    const lc_model_config *c = &m->cfg;
    int L = (int)c->num_hidden_layers;
    lc_dtype wdt = m->blocks[0].w[0].dtype;
    bool quant = m->blocks[0].w[0].q != NULL;
    if (m->embed.q || m->lm_head.q) return 1;
    for (int l = 0; l < L; l++)
        for (int k = 0; k < LC_NKEYS; k++)
            if ((m->blocks[l].w[k].q != NULL) != quant || m->blocks[l].w[k].dtype != wdt || m->blocks[l].w[k].ld % 8)
                return 1; // (spare columns, ->weight_room: rows of 16-byte loads)
    lc_rope_ensure(m, kv->cap); // one table for the whole cache: the descriptor stays the same
    lc_decode_step *s = &kv->step;
    memset(s, 0, sizeof *s);
    memset(kv->blocks, 0, (size_t)L * sizeof *kv->blocks);
    s->L = L, s->C = c->hidden_size, s->H = c->num_attention_heads, s->KV = c->num_key_value_heads;
    s->D = c->head_dim, s->I = c->intermediate_size, s->V = c->vocab_size, s->S = kv->cap;
    s->wdt = wdt, s->edt = m->embed.dtype, s->hdt = m->lm_head.dtype, s->quant = quant;
    s->r = m->has_lora ? m->lcfg.rank : 0;
    s->scale = m->has_lora ? m->lcfg.scale : 0.0f;
    s->eps = (float)c->rms_norm_eps;
    s->embed = m->embed.data, s->lm_head = m->lm_head.data, s->norm_f = m->norm_f;
    s->cos = m->rope_cos, s->sin = m->rope_sin, s->tok = a->tok, s->logits = a->logits;
    s->blocks = kv->blocks;
    for (int l = 0; l < L; l++) {
        lc_block *bk = &m->blocks[l];
        lc_decode_block *d = &kv->blocks[l];
        for (int k = 0; k < LC_NKEYS; k++) {
            d->w[k] = bk->w[k].data, d->q[k] = bk->w[k].q, d->ld[k] = bk->w[k].ld;
            if (bk->lora[k]) d->la[k] = bk->lora[k]->a, d->lb[k] = bk->lora[k]->b;
        }
        for (int k = 0; k < 3; k++) d->bias[k] = bk->bias[k];
        d->ln1 = bk->ln1, d->ln2 = bk->ln2;
        d->kc = kv->k + (size_t)(l * kv->cap * kv->KVD), d->vc = kv->v + (size_t)(l * kv->cap * kv->KVD);
    }
    return be->decode(be, s, kv->len);
}

/* Queues the step for n tokens at the cache's end (tokens NULL: the one token the last
 * ->argmax wrote into the arena) and advances the cache; *ap the arena whose logits
 * (V) follow the last token once the step has run. Returns 0 or -1 (nothing queued). */
static int step_queue(lc_model *m, lc_kv_cache *kv, const int32_t *tokens, int64_t n, lc_arena **ap) {
    if (n <= 0) return lc_fail("step: needs at least one token");
    if (kv->len + n > kv->cap)
        return lc_fail("step: %lld cached + %lld new positions exceed the cache's capacity %lld; "
                       "create a larger cache or shorten the prompt",
                       (long long)kv->len, (long long)n, (long long)kv->cap);
    if (tokens && lc_check_ids(m, tokens, NULL, 1, n) < 0) return -1;
    if (m->cfg.sliding_window > 0 && kv->len + n > m->cfg.sliding_window)
        return lc_fail("step: position %lld is past the model's sliding_window (%lld), which lorac "
                       "does not implement",
                       (long long)(kv->len + n), (long long)m->cfg.sliding_window);
    lc_backend *be = m->be;
    int64_t C = m->cfg.hidden_size, pos0 = kv->len;
    int L = (int)m->cfg.num_hidden_layers;
    lc_rope_ensure(m, pos0 + n);
    lc_arena *a = lc_arena_prepare(m, LC_MODE_KV, 1, n);
    if (tokens) be->upload(be, a->tok, tokens, (size_t)n * sizeof(int32_t));
    if (n != 1 || step_fused(m, kv, a) != 0) {
        be->embedding(be, a->xpp[0], a->tok, &m->embed, n);
        for (int l = 0; l < L; l++) {
            float *kl = kv->k + (size_t)(l * kv->cap * kv->KVD), *vl = kv->v + (size_t)(l * kv->cap * kv->KVD);
            float *xo = l + 1 == L ? a->xf : a->xpp[(l + 1) & 1];
            lc_block_forward(m, l, &a->scratch, a->xpp[l & 1], xo, 1, n, pos0, kl + pos0 * kv->KVD,
                             vl + pos0 * kv->KVD, kl, vl, kv->cap, false, 0, a);
        }
        const float *last = a->xf + (n - 1) * C;
        be->rmsnorm(be, a->xnf, a->rstdf, last, m->norm_f, 1, C, (float)m->cfg.rms_norm_eps);
        be->matmul(be, a->logits, a->xnf, &m->lm_head, NULL, 1, false);
    }
    kv->len += n;
    *ap = a;
    return 0;
}

int lc_model_step(lc_model *m, lc_kv_cache *kv, const int32_t *tokens, int64_t n, float *logits) {
    lc_arena *a;
    if (step_queue(m, kv, tokens, n, &a) != 0) return -1;
    m->be->download(m->be, logits, a->logits, (size_t)m->cfg.vocab_size * sizeof(float));
    if (m->be->sync(m->be) != 0) {
        kv->len -= n;
        return -1;
    }
    return 0;
}

/* The greedy loop with the argmax on the host: one step, its logits read back, the next
 * token chosen, each in turn. */
static int greedy_host(lc_model *m, lc_kv_cache *kv, int32_t tok, int64_t max, lc_token_fn on_token, void *ctx) {
    int64_t V = m->cfg.vocab_size;
    float *logits = xmalloc((size_t)V * sizeof *logits);
    lc_sampler s;
    lc_sample_config sc = lc_sample_defaults();
    lc_sampler_init(&s, &sc);
    int rc = 0;
    for (int64_t i = 0; i < max && rc == 0; i++) {
        if (lc_model_step(m, kv, &tok, 1, logits) != 0) rc = -1;
        else if ((rc = on_token(ctx, tok = lc_sample(&s, logits, V))) > 0) rc = 0, max = 0;
    }
    lc_sampler_free(&s);
    free(logits);
    return rc < 0 ? -1 : 0;
}

int lc_model_greedy(lc_model *m, lc_kv_cache *kv, int32_t first, int64_t max, lc_token_fn on_token, void *ctx) {
    lc_backend *be = m->be;
    const char *e = getenv("LORAC_GREEDY_AHEAD");
    if (max <= 0) return 0;
    if (!be->argmax || !be->argmax_read || (e && strcmp(e, "0") == 0))
        return greedy_host(m, kv, first, max, on_token, ctx);
    int64_t V = m->cfg.vocab_size, queued = 0, len0 = kv->len, i = 0;
    lc_arena *a;
    // step i feeds the token step i - 1 chose (the first: `first`) and its argmax goes to
    // slot i % LC_ARGMAX_SLOTS; step i + 1 is queued before the host waits for step i's
    // token, so the card runs on while the host hands the token over
    for (; i < max; i++) {
        for (; queued < max && queued <= i + 1; queued++) {
            if (step_queue(m, kv, queued ? NULL : &first, 1, &a) != 0) goto fail;
            be->argmax(be, a->tok, a->logits, V, (int)(queued % LC_ARGMAX_SLOTS));
        }
        int32_t id;
        if (be->argmax_read(be, (int)(i % LC_ARGMAX_SLOTS), &id) != 0) goto fail;
        int rc = on_token(ctx, id);
        if (rc != 0) { // the step queued past i fed a token the caller did not take
            kv->len = len0 + i + 1;
            return be->sync(be) != 0 || rc < 0 ? -1 : 0;
        }
    }
    return be->sync(be) != 0 ? -1 : 0;
fail: // the cache keeps the steps whose tokens were read
    be->sync(be);
    kv->len = len0 + i;
    return -1;
}
