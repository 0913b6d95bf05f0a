/*
 * fuzz_config.c — libFuzzer target: config.json parsing. Any input must give a clean
 * error, or a config that survives a write and a read and whose tensor list is sane.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lc_model_config c, d;
    if (lc_config_parse(&c, (const char *)data, size, "fuzz config.json") == 0) {
        char *j = lc_config_to_json(&c);
        if (lc_config_parse(&d, j, strlen(j), "rewritten config.json") != 0 || memcmp(&c, &d, sizeof c))
            abort(); // what we write must read back the same
        free(j);
        if (c.num_hidden_layers <= 64) {
            lc_param_spec *s;
            size_t n = lc_config_tensors(&c, &s);
            if (n < 3) abort();
            free(s);
        }
        (void)lc_config_merge_generation(&c, (const char *)data, size, "fuzz generation_config.json");
    }
    return 0;
}
