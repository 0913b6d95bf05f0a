/*
 * tokenizer.h — text <-> token ids, with the semantics of the reference libraries.
 *
 * One lc_tokenizer type over two sources:
 *  - tokenizer.json, read with the semantics of Hugging Face's `tokenizers` library:
 *    SentencePiece-style BPE with byte_fallback (Llama-2/Mistral) and byte-level BPE
 *    (GPT-2/Llama-3/Qwen2), added tokens, the TemplateProcessing post-processor;
 *  - tokenizer.model (SentencePiece protobuf), with `sentencepiece`'s semantics.
 * plus tokenizer_config.json (add_bos_token/add_eos_token, special tokens, chat_template).
 * A construct the file uses that lorac does not implement is an error naming it.
 * The tokenizer is immutable after loading and may be shared between threads.
 */
#ifndef LC_TOKENIZER_H
#define LC_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/vec.h"

typedef struct lc_tokenizer lc_tokenizer;

/* Flags for lc_tokenizer_encode. */
enum {
    /* Apply the post-processor / add_bos_token / add_eos_token (e.g. prepend <s>). */
    LC_TOK_ADD_SPECIAL = 1 << 0,
    /* Treat special tokens written in the text as plain text (default: recognised, as the
     * `tokenizers` library does). As its encode_special_tokens, non-special added tokens
     * are still recognised. With a .model: the text is plain sp.encode(text). */
    LC_TOK_NO_PARSE_SPECIAL = 1 << 1,
    /* The text continues an input (it does not start it): a Metaspace pre-tokenizer with
     * prepend_scheme "first" does not prepend its replacement, as for any section of an
     * input after its first. Used by chat templates that encode a conversation in pieces.
     * (No effect with a .model: every segment is sp.encode'd.) */
    LC_TOK_CONTINUATION = 1 << 2,
};

/* Loads the tokenizer of a model folder: tokenizer.json when present, else
 * tokenizer.model; tokenizer_config.json beside it when present. *out owned by caller. */
int lc_tokenizer_load_dir(const char *dir, lc_tokenizer **out);

/* Loads one tokenizer file (tokenizer.json or a SentencePiece .model, told apart by
 * content); config_path (tokenizer_config.json) may be NULL. */
int lc_tokenizer_load_file(const char *path, const char *config_path, lc_tokenizer **out);

/* Loads a tokenizer from memory: data is a tokenizer.json text or a .model file, config
 * (may be NULL) a tokenizer_config.json text; what / config_what name them in errors. */
int lc_tokenizer_load_mem(const char *data, size_t len, const char *config, size_t config_len,
                          const char *what, const char *config_what, lc_tokenizer **out);

void lc_tokenizer_free(lc_tokenizer *t);

/* Appends the ids of text[0..len) to out. Returns 0 or -1 (e.g. an unknown byte with no
 * fallback and no unk token). */
int lc_tokenizer_encode(const lc_tokenizer *t, const char *text, size_t len, int flags,
                        lc_ids *out);

/* Appends the text of ids to out, as the reference library's decode does
 * (skip_special: leave out special tokens). Returns 0 or -1 (id out of range). */
int lc_tokenizer_decode(const lc_tokenizer *t, const int32_t *ids, size_t n, bool skip_special,
                        lc_buf *out);

/* Incremental decoding for streaming: feed ids one at a time, get text that never ends
 * in half a UTF-8 character and equals the full decode once finished. */
typedef struct {
    const lc_tokenizer *t;
    lc_ids ids;       // every id fed so far
    size_t emitted;   // bytes of the full decode already handed out
    bool skip_special;
    size_t base;      // ids[base..] are decoded after the context token ids[base-1] (0: all)
    size_t base_len;  // bytes of the full decode that come from ids[0..base)
} lc_detok;

void lc_detok_init(lc_detok *d, const lc_tokenizer *t, bool skip_special);
/* Feeds one id; appends newly complete text to out. Returns 0 or -1. */
int lc_detok_push(lc_detok *d, int32_t id, lc_buf *out);
/* Appends whatever is left (an incomplete UTF-8 tail becomes U+FFFD). */
int lc_detok_finish(lc_detok *d, lc_buf *out);
void lc_detok_free(lc_detok *d);

/* Vocabulary size: the largest id + 1 (added tokens included). */
int32_t lc_tokenizer_vocab_size(const lc_tokenizer *t);
/* The id of a token by its exact string (vocabulary or added token), or -1. */
int32_t lc_tokenizer_token_id(const lc_tokenizer *t, const char *token);
/* The string of an id as stored in the file (e.g. "▁the", "<0x0A>", "Ġthe"), or NULL. */
const char *lc_tokenizer_piece(const lc_tokenizer *t, int32_t id);
/* Whether id is a special token (special added token / SentencePiece control symbol). */
bool lc_tokenizer_is_special(const lc_tokenizer *t, int32_t id);

/* Special ids (-1 when the tokenizer has none). */
int32_t lc_tokenizer_bos(const lc_tokenizer *t);
int32_t lc_tokenizer_eos(const lc_tokenizer *t);
int32_t lc_tokenizer_unk(const lc_tokenizer *t);
int32_t lc_tokenizer_pad(const lc_tokenizer *t);
/* Whether encoding with LC_TOK_ADD_SPECIAL prepends BOS / appends EOS. */
bool lc_tokenizer_adds_bos(const lc_tokenizer *t);
bool lc_tokenizer_adds_eos(const lc_tokenizer *t);

/* One line describing the kind, e.g. "BPE, SentencePiece-style (Metaspace, byte
 * fallback) from tokenizer.json" or "byte-level BPE from tokenizer.json". */
const char *lc_tokenizer_kind(const lc_tokenizer *t);
/* tokenizer_config.json's chat_template (the default one when it is a list), or NULL. */
const char *lc_tokenizer_chat_template(const lc_tokenizer *t);

#endif
