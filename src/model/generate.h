/*
 * generate.h — text generation with a KV cache: prefill the prompt, then sample one
 * token at a time until an end-of-sequence id or the token limit, streaming the text
 * through a callback that never receives half a UTF-8 character.
 */
#ifndef LC_GENERATE_H
#define LC_GENERATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/vec.h"
#include "model/model.h"
#include "model/sample.h"
#include "text/tokenizer.h"

/* Receives each new piece of text; returns 0 to go on, non-zero to stop. */
typedef int (*lc_gen_emit)(void *ctx, const char *text, size_t n);

typedef struct {
    int64_t prompt_tokens, generated;
    double prefill_s, decode_s;
    bool hit_eos; // stopped at an end-of-sequence id (else at the limit or by the callback)
} lc_gen_stats;

/* Generates up to max_tokens after prompt[0..n_prompt) with model m, sampling per sc;
 * stops at any EOS id of the config or the tokenizer (not emitted). Appends the new ids
 * to out (may be NULL) and streams their text to emit (may be NULL). Returns 0 or -1. */
int lc_generate(lc_model *m, const lc_tokenizer *t, const int32_t *prompt, int64_t n_prompt,
                int64_t max_tokens, const lc_sample_config *sc, lc_gen_emit emit, void *ctx,
                lc_ids *out, lc_gen_stats *stats);

#endif
