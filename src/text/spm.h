/*
 * spm.h — a SentencePiece model (tokenizer.model) with the semantics of the
 * `sentencepiece` library.
 *
 * Reads the ModelProto protobuf itself (no libprotobuf): the pieces (string, score,
 * type), the trainer spec and the normalizer spec. Encodes exactly as
 * SentencePieceProcessor::Encode does for a BPE model (normalizer.cc, bpe_model.cc,
 * PopulateSentencePieceText: whitespace escaped as U+2581, dummy prefix, user-defined
 * symbols matched whole, best-scoring merges first, unused pieces resegmented, byte
 * fallback or runs of unknowns merged into one unk) and decodes exactly as
 * SentencePieceProcessor::Decode does. What the file uses that lorac does not implement
 * (UNIGRAM/WORD/CHAR models, a precompiled_charsmap normalizer such as nmt_nfkc, a
 * denormalizer) is an error naming it, never an approximation. Every malformed input
 * (truncated varints, lengths past the end, wrong wire types, non-UTF-8 or duplicate
 * pieces, ...) is a one-line error naming the file, the field and the byte offset.
 * An lc_spm is immutable after loading and may be shared between threads.
 */
#ifndef LC_SPM_H
#define LC_SPM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/vec.h"

typedef struct lc_spm lc_spm;

/* Piece types, as in sentencepiece_model.proto's SentencePiece.Type. */
enum {
    LC_SPM_NORMAL = 1,
    LC_SPM_UNKNOWN = 2,
    LC_SPM_CONTROL = 3,
    LC_SPM_USER_DEFINED = 4,
    LC_SPM_UNUSED = 5,
    LC_SPM_BYTE = 6,
};

/* Model types, as in TrainerSpec.ModelType. Only BPE loads. */
enum { LC_SPM_UNIGRAM = 1, LC_SPM_BPE = 2, LC_SPM_WORD = 3, LC_SPM_CHAR = 4 };

/* Loads a tokenizer.model file. Returns 0 or -1; *out owned by the caller (lc_spm_free). */
int lc_spm_load(const char *path, lc_spm **out);
/* Loads a serialized ModelProto from memory (copied; `data` may be freed after).
 * `what` names the source in errors. Returns 0 or -1; *out owned by the caller. */
int lc_spm_load_mem(const void *data, size_t len, const char *what, lc_spm **out);
void lc_spm_free(lc_spm *s);

/* Appends the ids of text[0..len) to out, exactly as sentencepiece's sp.encode(text)
 * (no BOS/EOS). Invalid UTF-8 in text becomes U+FFFD per byte, as sentencepiece does.
 * Returns 0 or -1 (only for a text too long to index, > 512 MiB). */
int lc_spm_encode(const lc_spm *s, const char *text, size_t len, lc_ids *out);
/* The same ids as lc_spm_encode, always through the plain path (bpe_model.cc's algorithm
 * on the whole text, no segments, no cache): for tests of the fast path. */
int lc_spm_encode_plain(const lc_spm *s, const char *text, size_t len, lc_ids *out);
/* Whether lc_spm_encode takes the fast path for this model (no piece has U+2581 after
 * another character, no piece is unused, no score is NaN); else it is the plain path. */
bool lc_spm_fast_encode(const lc_spm *s);
/* Appends the text of ids to out, exactly as sp.decode(ids): U+2581 becomes a space, the
 * first piece's leading one is dropped under add_dummy_prefix, byte pieces are assembled
 * (invalid UTF-8 becomes U+FFFD per byte), control pieces vanish, unknown is " ⁇ ".
 * Returns 0 or -1 (an id out of range; out is then left as it was). */
int lc_spm_decode(const lc_spm *s, const int32_t *ids, size_t n, lc_buf *out);

/* Number of pieces (ids are 0 .. size-1). */
int32_t lc_spm_size(const lc_spm *s);
/* The piece string of id (NUL-terminated, owned by s), or NULL when out of range. */
const char *lc_spm_piece(const lc_spm *s, int32_t id);
/* The score of id, 0 when out of range. */
float lc_spm_score(const lc_spm *s, int32_t id);
/* The type of id (LC_SPM_NORMAL ... LC_SPM_BYTE), 0 when out of range. */
int lc_spm_type(const lc_spm *s, int32_t id);
/* The id of a piece by its exact string, as sentencepiece's PieceToId but -1 (not unk)
 * when the string is no piece. */
int32_t lc_spm_piece_id(const lc_spm *s, const char *piece);
/* Special ids as sentencepiece reports them (bos_id() etc.): the id of the trainer spec's
 * bos/eos/pad piece ("<s>", "</s>", "<pad>" by default) when it is a control piece, of
 * the unk piece when it is the unknown piece; -1 otherwise. */
int32_t lc_spm_bos(const lc_spm *s);
int32_t lc_spm_eos(const lc_spm *s);
int32_t lc_spm_unk(const lc_spm *s);
int32_t lc_spm_pad(const lc_spm *s);

/* For `lorac info`. */
int lc_spm_model_type(const lc_spm *s);        // LC_SPM_BPE
bool lc_spm_byte_fallback(const lc_spm *s);    // trainer_spec.byte_fallback
bool lc_spm_add_dummy_prefix(const lc_spm *s); // normalizer_spec.add_dummy_prefix
bool lc_spm_remove_extra_whitespaces(const lc_spm *s);
/* normalizer_spec.name ("identity" for Llama-2/Mistral; "" when absent). Owned by s. */
const char *lc_spm_normalizer_name(const lc_spm *s);
/* One line, e.g. "SentencePiece BPE, 32768 pieces, byte fallback, normalizer identity,
 * add_dummy_prefix". Owned by s. */
const char *lc_spm_describe(const lc_spm *s);

#endif
