/*
 * fuzz_safetensors.c — libFuzzer target: safetensors header parsing from memory. Any
 * input must give a clean error or a set whose every tensor lies inside the buffer.
 */
#include <stddef.h>
#include <stdint.h>

#include "io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lc_safetensors st;
    if (lc_st_parse(&st, data, size, "fuzz.safetensors") == 0) {
        volatile unsigned sum = 0;
        for (size_t i = 0; i < st.n_tensors; i++) {
            const lc_tensor *t = &st.tensors[i];
            if (t->nbytes) sum += ((const uint8_t *)t->data)[0] + ((const uint8_t *)t->data)[t->nbytes - 1];
            (void)lc_st_find(&st, t->name);
        }
        (void)lc_st_meta(&st, "format");
    }
    lc_st_close(&st);
    return 0;
}
