/*
 * fuzz_tokenizer_json.c — libFuzzer target: loads the input's first part (up to the first
 * NUL byte) as a tokenizer.json and, when that succeeds, encodes the rest as text (with
 * and without special-token parsing) and decodes the ids back, streaming too. Any crash,
 * leak or sanitizer report is a bug; failures with an error message are fine.
 */
#include <stdint.h>
#include <string.h>

#include "core/error.h"
#include "text/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *p = (const char *)data;
    const char *nul = memchr(p, 0, size);
    size_t jlen = nul ? (size_t)(nul - p) : size;
    lc_tokenizer *t = NULL;
    if (jlen == 0 || p[0] != '{') return 0; // keep to the JSON loader
    if (lc_tokenizer_load_mem(p, jlen, NULL, 0, "fuzz.json", NULL, &t)) return 0;
    const char *text = nul ? nul + 1 : "";
    size_t tlen = nul ? size - jlen - 1 : 0;
    for (int flags = 0; flags < 8; flags++) {
        lc_ids ids = {0};
        if (lc_tokenizer_encode(t, text, tlen, flags, &ids) == 0) {
            lc_buf a = {0}, b = {0};
            lc_tokenizer_decode(t, ids.data, ids.len, flags & 1, &a);
            lc_detok d;
            lc_detok_init(&d, t, flags & 1);
            for (size_t i = 0; i < ids.len; i++) lc_detok_push(&d, ids.data[i], &b);
            lc_detok_finish(&d, &b);
            if (a.len != b.len || (a.len && memcmp(a.data, b.data, a.len))) __builtin_trap();
            lc_detok_free(&d);
            lc_buf_free(&a), lc_buf_free(&b);
        }
        lc_ids_free(&ids);
    }
    lc_tokenizer_free(t);
    return 0;
}
