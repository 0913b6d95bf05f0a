/*
 * pretok.h — the normalizer and pre-tokenizer stages of a tokenizer.json pipeline,
 * with the semantics of Hugging Face's `tokenizers` library.
 *
 * Normalizers: Prepend, Replace, NFC/NFD/NFKC/NFKD (through utf8proc), Lowercase,
 * Strip, Sequence; pre-tokenizers: Metaspace (replacement, prepend_scheme
 * first/always/never, split), ByteLevel (add_prefix_space, use_regex), Split (String or
 * Regex pattern through PCRE2, behavior, invert), Digits, Whitespace, WhitespaceSplit,
 * Sequence. A type the file uses that is not
 * implemented is an error naming it and the JSON path, never a silent approximation.
 * Built once from the JSON, immutable after, shareable between threads (per-call
 * scratch lives in the caller's lc_pretok_out).
 */
#ifndef LC_PRETOK_H
#define LC_PRETOK_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

#include "core/vec.h"

typedef struct lc_normalizer lc_normalizer;
typedef struct lc_pretok lc_pretok;

/* Builds a normalizer from tokenizer.json's "normalizer" value (NULL or JSON null: the
 * identity). `what` names the file in errors. Returns 0 or -1; *out owned by caller. */
int lc_normalizer_build(const cJSON *node, const char *what, lc_normalizer **out);
void lc_normalizer_free(lc_normalizer *n);
/* Appends the normalized form of s[0..len) to out. Returns 0 or -1. */
int lc_normalize(const lc_normalizer *n, const char *s, size_t len, lc_buf *out);

/* The words a pre-tokenizer produced: word i is bytes.data[starts[i] .. starts[i+1]).
 * Each word is what the model (BPE) then encodes on its own. Reuse one across calls. */
typedef struct {
    lc_buf bytes;
    size_t *starts; // (n_words + 1)
    size_t n_words, cap;
} lc_pretok_out;

void lc_pretok_out_clear(lc_pretok_out *o);
void lc_pretok_out_free(lc_pretok_out *o);

/* Builds a pre-tokenizer from tokenizer.json's "pre_tokenizer" value (NULL or JSON null:
 * the whole text is one word). Returns 0 or -1; *out owned by caller. */
int lc_pretok_build(const cJSON *node, const char *what, lc_pretok **out);
void lc_pretok_free(lc_pretok *p);
/* Splits (already normalized) s[0..len) into words appended to out. first_section:
 * s is the first section of the input (Metaspace prepend_scheme "first" prepends only
 * then). Returns 0 or -1. */
int lc_pretok_split(const lc_pretok *p, const char *s, size_t len, bool first_section,
                    lc_pretok_out *out);
/* Whether this pre-tokenizer maps bytes to the GPT-2 byte-level alphabet (ByteLevel). */
bool lc_pretok_is_byte_level(const lc_pretok *p);

/* The GPT-2 byte-level alphabet: the UTF-8 encoding (1-2 bytes, NUL-terminated) of the
 * character that stands for byte b, and the inverse (-1 for a code point that stands for
 * no byte). */
const char *lc_byte_level_char(unsigned char b);
int lc_byte_level_byte(uint32_t codepoint);

/* A String or Regex pattern of tokenizer.json ({"String": s} or {"Regex": r}; regexes
 * through PCRE2 with UTF and UCP). Immutable once built. */
typedef struct lc_pattern lc_pattern;
/* Builds a pattern from node; `place` is its JSON path for errors. Returns 0 or -1. */
int lc_pattern_build(const cJSON *node, const char *what, const char *place, lc_pattern **out);
void lc_pattern_free(lc_pattern *p);
/* Appends s[0..n) to out with every (non-overlapping, leftmost) match replaced by `with`.
 * Returns 0 or -1. */
int lc_pattern_replace(const lc_pattern *p, const char *s, size_t n, const char *with,
                       size_t with_len, lc_buf *out);

#endif
