/*
 * tokenizer_stub.c — TEMPORARY stand-in for the tokenizer, on branch h/chat ONLY.
 *
 * The real implementation of tokenizer.h lives on another branch. This file exists so that
 * h/chat links: every call fails with "tokenizer not built" (the chat id tests skip on that
 * message). DELETE THIS FILE when merging h/chat into a branch that has the tokenizer.
 */
#include "core/error.h"
#include "text/tokenizer.h"

#define STUB_MSG "tokenizer not built (tokenizer_stub.c stands in for it on this branch)"

int lc_tokenizer_load_dir(const char *dir, lc_tokenizer **out) {
    (void)dir;
    *out = NULL;
    return lc_fail(STUB_MSG);
}

int lc_tokenizer_load_file(const char *path, const char *config_path, lc_tokenizer **out) {
    (void)path, (void)config_path;
    *out = NULL;
    return lc_fail(STUB_MSG);
}

void lc_tokenizer_free(lc_tokenizer *t) { (void)t; }

int lc_tokenizer_encode(const lc_tokenizer *t, const char *text, size_t len, int flags,
                        lc_ids *out) {
    (void)t, (void)text, (void)len, (void)flags, (void)out;
    return lc_fail(STUB_MSG);
}

int lc_tokenizer_decode(const lc_tokenizer *t, const int32_t *ids, size_t n, bool skip_special,
                        lc_buf *out) {
    (void)t, (void)ids, (void)n, (void)skip_special, (void)out;
    return lc_fail(STUB_MSG);
}

void lc_detok_init(lc_detok *d, const lc_tokenizer *t, bool skip_special) {
    *d = (lc_detok){.t = t, .skip_special = skip_special};
}
int lc_detok_push(lc_detok *d, int32_t id, lc_buf *out) {
    (void)d, (void)id, (void)out;
    return lc_fail(STUB_MSG);
}
int lc_detok_finish(lc_detok *d, lc_buf *out) {
    (void)d, (void)out;
    return lc_fail(STUB_MSG);
}
void lc_detok_free(lc_detok *d) { lc_ids_free(&d->ids); }

int32_t lc_tokenizer_vocab_size(const lc_tokenizer *t) {
    (void)t;
    return 0;
}
int32_t lc_tokenizer_token_id(const lc_tokenizer *t, const char *token) {
    (void)t, (void)token;
    return -1;
}
const char *lc_tokenizer_piece(const lc_tokenizer *t, int32_t id) {
    (void)t, (void)id;
    return NULL;
}
bool lc_tokenizer_is_special(const lc_tokenizer *t, int32_t id) {
    (void)t, (void)id;
    return false;
}
int32_t lc_tokenizer_bos(const lc_tokenizer *t) {
    (void)t;
    return -1;
}
int32_t lc_tokenizer_eos(const lc_tokenizer *t) {
    (void)t;
    return -1;
}
int32_t lc_tokenizer_unk(const lc_tokenizer *t) {
    (void)t;
    return -1;
}
int32_t lc_tokenizer_pad(const lc_tokenizer *t) {
    (void)t;
    return -1;
}
bool lc_tokenizer_adds_bos(const lc_tokenizer *t) {
    (void)t;
    return false;
}
bool lc_tokenizer_adds_eos(const lc_tokenizer *t) {
    (void)t;
    return false;
}
const char *lc_tokenizer_kind(const lc_tokenizer *t) {
    (void)t;
    return "not built";
}
const char *lc_tokenizer_chat_template(const lc_tokenizer *t) {
    (void)t;
    return NULL;
}
