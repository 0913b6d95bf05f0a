/*
 * sample.c — next-token choice. See sample.h.
 *
 * Filters apply in transformers' order on the temperature-scaled distribution:
 * top-k, then top-p (keep the smallest set of most likely tokens whose probability
 * reaches p; the most likely always stays), then min-p (drop tokens below min_p times
 * the top probability). The draw uses a splitmix64 generator: the same seed gives the
 * same text on every machine.
 */
#include "model/sample.h"

#include <math.h>
#include <stdlib.h>

#include "core/error.h"
#include "core/mem.h"
#include "core/rng.h"

struct lc_sample_item {
    float p;
    int32_t id;
};

lc_sample_config lc_sample_defaults(void) {
    lc_sample_config c = {0.0f, 1.0f, 0, 0.0f, 0};
    return c;
}

int lc_sample_validate(const lc_sample_config *c) {
    if (!(c->temp >= 0) || !isfinite(c->temp)) return lc_fail("--temp must be >= 0, got %g", c->temp);
    if (!(c->top_p > 0 && c->top_p <= 1)) return lc_fail("--top-p must be in (0, 1], got %g", c->top_p);
    if (c->top_k < 0) return lc_fail("--top-k must be >= 0, got %d", c->top_k);
    if (!(c->min_p >= 0 && c->min_p < 1)) return lc_fail("--min-p must be in [0, 1), got %g", c->min_p);
    return 0;
}

void lc_sampler_init(lc_sampler *s, const lc_sample_config *c) {
    s->c = *c;
    s->rng = c->seed ^ 0x9E3779B97F4A7C15ull;
    s->cap = 0;
    s->items = NULL;
}

void lc_sampler_free(lc_sampler *s) {
    free(s->items);
    s->items = NULL;
    s->cap = 0;
}

static int by_prob_desc(const void *a, const void *b) {
    const struct lc_sample_item *x = a, *y = b;
    if (x->p != y->p) return x->p < y->p ? 1 : -1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static int32_t argmax(const float *logits, int64_t V) {
    int64_t best = 0;
    for (int64_t i = 1; i < V; i++)
        if (logits[i] > logits[best]) best = i;
    return (int32_t)best;
}

int32_t lc_sample(lc_sampler *s, const float *logits, int64_t V) {
    if (s->c.temp == 0 || V == 1) return argmax(logits, V);
    if (s->cap < V) {
        s->items = xrealloc(s->items, (size_t)V * sizeof *s->items);
        s->cap = V;
    }
    float mx = logits[argmax(logits, V)];
    double sum = 0;
    for (int64_t i = 0; i < V; i++) {
        float p = expf((logits[i] - mx) / s->c.temp);
        s->items[i].p = p;
        s->items[i].id = (int32_t)i;
        sum += p;
    }
    for (int64_t i = 0; i < V; i++) s->items[i].p = (float)(s->items[i].p / sum);
    qsort(s->items, (size_t)V, sizeof *s->items, by_prob_desc);
    int64_t n = V;
    if (s->c.top_k > 0 && s->c.top_k < n) n = s->c.top_k;
    if (s->c.top_p < 1) {
        double acc = 0;
        int64_t keep = 0;
        while (keep < n) {
            acc += s->items[keep++].p;
            if (acc >= s->c.top_p) break;
        }
        n = keep;
    }
    if (s->c.min_p > 0) {
        float floor_p = s->c.min_p * s->items[0].p;
        int64_t keep = 1;
        while (keep < n && s->items[keep].p >= floor_p) keep++;
        n = keep;
    }
    double total = 0;
    for (int64_t i = 0; i < n; i++) total += s->items[i].p;
    double u = lc_uniform(&s->rng) * total;
    for (int64_t i = 0; i < n; i++) {
        u -= s->items[i].p;
        if (u < 0) return s->items[i].id;
    }
    return s->items[n - 1].id;
}
