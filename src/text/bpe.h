/*
 * bpe.h — the BPE model of tokenizer.json ("model": {"type": "BPE", ...}), with the
 * semantics of Hugging Face's `tokenizers` (models/bpe/model.rs and word.rs): vocab,
 * merges in either form ("a b" or ["a", "b"]), byte_fallback, unk_token, fuse_unk,
 * ignore_merges, continuing_subword_prefix, end_of_word_suffix. dropout must be null or 0.
 *
 * Encoding a word is a priority-queue merge over a linked list of symbols with the merge
 * ranks in a hash table: O(n log n) in the word's length. The model is immutable after
 * building and may be shared between threads; per-call memory lives in lc_bpe_scratch.
 */
#ifndef LC_BPE_H
#define LC_BPE_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/vec.h"

typedef struct lc_bpe lc_bpe;

/* Ids must be below this (real vocabularies have at most a few hundred thousand); a file
 * with larger ids is rejected rather than allocating tables for them. */
#define LC_MAX_TOKEN_ID (1 << 24)

/* Per-call working memory for lc_bpe_encode_word; zero-initialise, free when done. */
typedef struct {
    int32_t *id, *prev, *next;
    uint32_t *len;
    void *heap;
    size_t cap, heap_cap;
} lc_bpe_scratch;

/* Builds the model from tokenizer.json's "model" object; errors name `what` and the JSON
 * path. Returns 0 or -1; *out owned by the caller. */
int lc_bpe_build(const cJSON *model, const char *what, lc_bpe **out);
void lc_bpe_free(lc_bpe *b);

/* Appends the ids of one pre-tokenized word w[0..n) (valid UTF-8). Returns 0, or -1 when a
 * character has no token, no byte fallback and no usable unk_token. */
int lc_bpe_encode_word(const lc_bpe *b, const char *w, size_t n, lc_bpe_scratch *s,
                       lc_ids *out);
void lc_bpe_scratch_free(lc_bpe_scratch *s);

/* The id of the vocabulary entry s[0..n), or -1. */
int32_t lc_bpe_id(const lc_bpe *b, const char *s, size_t n);
/* The vocabulary string of id, or NULL (out of range or a hole). */
const char *lc_bpe_piece(const lc_bpe *b, int32_t id);
/* Number of vocabulary entries (what `tokenizers` calls the model's vocab size). */
int32_t lc_bpe_count(const lc_bpe *b);
/* Largest id + 1. */
int32_t lc_bpe_id_end(const lc_bpe *b);
/* Whether the model falls back to <0xXX> byte pieces. */
bool lc_bpe_byte_fallback(const lc_bpe *b);

#endif
