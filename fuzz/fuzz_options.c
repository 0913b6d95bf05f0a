/*
 * fuzz_options.c — libFuzzer target: `lorac train`'s options. The input's first part (up
 * to the first NUL byte) is a YAML config applied over the defaults; the rest, split at NUL
 * bytes, is a command line (flags and their values, the numeric parsers included).
 * Whatever is accepted must be printable as adapter_config.json and hashable. Any crash,
 * leak or sanitizer report is a bug; failures with an error message are fine.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/vec.h"
#include "train/options.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Accepted options can be written out; reading them must not crash either. */
static void use(const lc_train_options *o) {
    lc_buf b = {0};
    lc_train_options_to_json(o, &b);
    (void)lc_train_options_hash(o);
    (void)lc_train_options_lora_scale(o);
    (void)lc_train_options_adam(o);
    lc_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *p = (const char *)data;
    const char *nul = memchr(p, 0, size);
    size_t ylen = nul ? (size_t)(nul - p) : size;
    lc_train_options o;
    lc_train_options_defaults(&o);
    if (lc_train_options_apply_yaml(&o, p, ylen, "fuzz.yaml") == 0) use(&o);
    if (!nul) return 0;
    /* the command line: NUL-separated words (a copy, NUL-terminated) */
    size_t rest = size - ylen - 1;
    char *words = malloc(rest + 1);
    memcpy(words, nul + 1, rest);
    words[rest] = '\0';
    char *argv[64];
    int argc = 0;
    for (char *w = words; w <= words + rest && argc < 64; w += strlen(w) + 1) {
        /* a config file named on the command line would read the disk: keep to memory */
        if (!strcmp(w, "-c") || !strncmp(w, "--config", 8)) goto out;
        argv[argc++] = w;
    }
    if (lc_train_options_parse(&o, argc, argv) == 0) use(&o);
out:
    free(words);
    return 0;
}
