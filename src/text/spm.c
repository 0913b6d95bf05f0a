/*
 * spm.c — STUB, ONLY ON BRANCH h/tok: every loader fails with "not built". The
 * SentencePiece helper's real spm.c replaces this file when the lead merges.
 */
#include "text/spm.h"

#include "core/error.h"

int lc_spm_load(const char *path, lc_spm **out) {
    *out = NULL;
    return lc_fail("%s: SentencePiece .model support is not built on this branch", path);
}
int lc_spm_load_mem(const void *data, size_t len, const char *what, lc_spm **out) {
    (void)data, (void)len;
    *out = NULL;
    return lc_fail("%s: SentencePiece .model support is not built on this branch", what);
}
void lc_spm_free(lc_spm *s) { (void)s; }
int lc_spm_encode(const lc_spm *s, const char *text, size_t len, lc_ids *out) {
    (void)s, (void)text, (void)len, (void)out;
    return lc_fail("SentencePiece support is not built");
}
int lc_spm_decode(const lc_spm *s, const int32_t *ids, size_t n, lc_buf *out) {
    (void)s, (void)ids, (void)n, (void)out;
    return lc_fail("SentencePiece support is not built");
}
int32_t lc_spm_size(const lc_spm *s) { return (void)s, 0; }
const char *lc_spm_piece(const lc_spm *s, int32_t id) { return (void)s, (void)id, NULL; }
int lc_spm_type(const lc_spm *s, int32_t id) { return (void)s, (void)id, 0; }
int32_t lc_spm_piece_id(const lc_spm *s, const char *piece) { return (void)s, (void)piece, -1; }
int32_t lc_spm_bos(const lc_spm *s) { return (void)s, -1; }
int32_t lc_spm_eos(const lc_spm *s) { return (void)s, -1; }
int32_t lc_spm_unk(const lc_spm *s) { return (void)s, -1; }
int32_t lc_spm_pad(const lc_spm *s) { return (void)s, -1; }
