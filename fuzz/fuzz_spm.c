/*
 * fuzz_spm.c — libFuzzer target for the SentencePiece model reader (src/text/spm.c):
 * loads the input as a tokenizer.model from memory and, when it loads, encodes a fixed
 * text and decodes the result (and every id once). Any crash, leak or UBSan report is a
 * bug; a load error is the expected outcome for most inputs.
 * Seeds in fuzz/corpus/fuzz_spm/ are small hand-made valid models (fuzz/make_spm_seeds.py).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "text/spm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lc_spm *s = NULL;
    if (lc_spm_load_mem(data, size, "fuzz.model", &s) != 0) return 0;
    static const char text[] = "  Hello\tw\xc3\xb6rld <s>[INST] ab<sep>c \xff\xfe 1234 \xf0\x9f\x98\x80";
    lc_ids ids = {0};
    lc_buf out = {0};
    if (lc_spm_encode(s, text, sizeof text - 1, &ids) == 0) lc_spm_decode(s, ids.data, ids.len, &out);
    int32_t n = lc_spm_size(s);
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
