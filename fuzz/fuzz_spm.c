/*
 * fuzz_spm.c — libFuzzer target for the SentencePiece model reader (src/text/spm.c):
 * loads the input as a tokenizer.model from memory and, when it loads, encodes a fixed
 * text and decodes the result (and every id once), and checks that the fast encode path
 * gives the same ids as the plain one on that text and on one made of the model's first
 * pieces. Any crash, leak, UBSan report or abort is a bug; a load error is the expected
 * outcome for most inputs.
 * Seeds in fuzz/corpus/fuzz_spm/ are small hand-made valid models (fuzz/make_spm_seeds.py).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "text/spm.h"

/* Aborts unless lc_spm_encode and lc_spm_encode_plain agree on text. */
static void same_both_ways(const lc_spm *s, const char *text, size_t len) {
    lc_ids a = {0}, b = {0};
    int ra = lc_spm_encode(s, text, len, &a), rb = lc_spm_encode_plain(s, text, len, &b);
    if (ra != rb || a.len != b.len || (a.len && memcmp(a.data, b.data, a.len * sizeof *a.data)))
        abort();
    lc_ids_free(&a);
    lc_ids_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lc_spm *s = NULL;
    if (lc_spm_load_mem(data, size, "fuzz.model", &s) != 0) return 0;
    static const char text[] = "  Hello\tw\xc3\xb6rld <s>[INST] ab<sep>c \xff\xfe 1234 \xf0\x9f\x98\x80";
    lc_ids ids = {0};
    lc_buf out = {0};
    if (lc_spm_encode(s, text, sizeof text - 1, &ids) == 0) lc_spm_decode(s, ids.data, ids.len, &out);
    same_both_ways(s, text, sizeof text - 1);
    int32_t n = lc_spm_size(s);
    lc_buf pieces = {0};
    for (int32_t i = 0; i < n && i < 64; i++) {
        lc_buf_puts(&pieces, lc_spm_piece(s, i));
        if (i % 3 == 0) lc_buf_putc(&pieces, ' ');
    }
    same_both_ways(s, pieces.data ? pieces.data : "", pieces.len);
    lc_buf_free(&pieces);
    for (int32_t i = 0; i < n && i < 4096; i++) lc_spm_decode(s, &i, 1, &out);
    lc_spm_bos(s);
    lc_spm_eos(s);
    lc_spm_pad(s);
    lc_spm_unk(s);
    lc_ids_free(&ids);
    lc_buf_free(&out);
    lc_spm_free(s);
    return 0;
}
