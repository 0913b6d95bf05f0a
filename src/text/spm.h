/*
 * spm.h — SentencePiece tokenizer.model (protobuf) with `sentencepiece`'s semantics.
 *
 * BRANCH h/tok NOTE: this header only declares the API that the SentencePiece helper
 * implements in its own branch; the lead replaces it (and the stub spm.c) with the real
 * files when merging.
 */
#ifndef LC_SPM_H
#define LC_SPM_H

#include <stddef.h>
#include <stdint.h>

#include "core/vec.h"

typedef struct lc_spm lc_spm;

/* Piece types, as sentencepiece's ModelProto.SentencePiece.Type. */
enum { LC_SPM_NORMAL = 1, LC_SPM_UNKNOWN = 2, LC_SPM_CONTROL = 3, LC_SPM_USER_DEFINED = 4,
       LC_SPM_UNUSED = 5, LC_SPM_BYTE = 6 };

int lc_spm_load(const char *path, lc_spm **out);
int lc_spm_load_mem(const void *data, size_t len, const char *what, lc_spm **out);
void lc_spm_free(lc_spm *s);
/* = sp.encode(text), no BOS. */
int lc_spm_encode(const lc_spm *s, const char *text, size_t len, lc_ids *out);
/* = sp.decode(ids). */
int lc_spm_decode(const lc_spm *s, const int32_t *ids, size_t n, lc_buf *out);
int32_t lc_spm_size(const lc_spm *s);
const char *lc_spm_piece(const lc_spm *s, int32_t id);
int lc_spm_type(const lc_spm *s, int32_t id);
int32_t lc_spm_piece_id(const lc_spm *s, const char *piece);
int32_t lc_spm_bos(const lc_spm *s);
int32_t lc_spm_eos(const lc_spm *s);
int32_t lc_spm_unk(const lc_spm *s);
int32_t lc_spm_pad(const lc_spm *s);

#endif
