/*
 * sample.h — choosing the next token from logits: greedy, or temperature sampling
 * with top-k, top-p (nucleus) and min-p filters, as transformers/mlx-lm define them.
 *
 * The sampler owns a scratch buffer and a seeded portable generator; it never
 * allocates per call after the first and never prints.
 */
#ifndef LC_SAMPLE_H
#define LC_SAMPLE_H

#include <stdint.h>

typedef struct {
    float temp;  // 0: greedy
    float top_p; // 1: off
    int top_k;   // 0: off
    float min_p; // 0: off
    uint64_t seed;
} lc_sample_config;

typedef struct {
    lc_sample_config c;
    uint64_t rng;
    int64_t cap;
    struct lc_sample_item *items; // (cap) scratch
} lc_sampler;

/* Greedy, temperature 0, no filters, seed 0. */
lc_sample_config lc_sample_defaults(void);
/* Checks ranges (temp >= 0, 0 < top_p <= 1, top_k >= 0, 0 <= min_p < 1). Returns 0 or -1. */
int lc_sample_validate(const lc_sample_config *c);
void lc_sampler_init(lc_sampler *s, const lc_sample_config *c);
void lc_sampler_free(lc_sampler *s);
/* The next token from logits (V). Ties in greedy go to the lowest id (as argmax). */
int32_t lc_sample(lc_sampler *s, const float *logits, int64_t V);

#endif
