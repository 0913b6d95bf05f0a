/*
 * fuzz_adapters.c — libFuzzer target: adapter folders of both layouts and train states.
 * The input's first byte picks the layout (even: mlx-lm, odd: PEFT); the rest, up to the
 * first NUL byte, is adapter_config.json and what follows is the weights file
 * (adapters.safetensors or adapter_model.safetensors). They are written to a private
 * temporary folder and loaded as a folder; the weights are also read as a resumable
 * train state. A loaded set is checked against a small model config. Any crash, leak or
 * sanitizer report is a bug; failures with an error message are fine.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/file.h"
#include "io/adapters.h"
#include "io/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char g_dir[64];

static void cleanup(void) {
    static const char *const names[] = {"adapter_config.json", "adapters.safetensors",
                                        "adapter_model.safetensors"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char *p = lc_path_join(g_dir, names[i]);
        unlink(p);
        free(p);
    }
    rmdir(g_dir);
}

/* Writes n bytes to dir/name plainly (the fuzzer's own files need no atomic write). */
static void put(const char *name, const void *p, size_t n) {
    char *path = lc_path_join(g_dir, name);
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(p, 1, n, f);
        fclose(f);
    }
    free(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_dir[0]) {
        /* in memory where the system offers it: a disk folder makes each run slow */
        snprintf(g_dir, sizeof g_dir, "%s/lorac-fuzz-adapters.XXXXXX",
                 lc_is_dir("/dev/shm") && access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
        if (!mkdtemp(g_dir)) abort();
        atexit(cleanup);
    }
    if (size < 1) return 0;
    bool peft = data[0] & 1;
    const char *p = (const char *)data + 1;
    size_t n = size - 1;
    const char *nul = memchr(p, 0, n);
    size_t clen = nul ? (size_t)(nul - p) : n;
    const char *w = nul ? nul + 1 : "";
    size_t wlen = nul ? n - clen - 1 : 0;
    const char *wname = peft ? "adapter_model.safetensors" : "adapters.safetensors";
    cleanup();
    if (lc_mkdirs(g_dir) != 0) abort();
    put("adapter_config.json", p, clen);
    put(wname, w, wlen);

    lc_adapter_set s;
    if (lc_adapters_load(g_dir, &s) == 0) {
        static const char cfg_json[] =
            "{\"architectures\": [\"MistralForCausalLM\"], \"model_type\": \"mistral\", "
            "\"vocab_size\": 1024, \"hidden_size\": 64, \"intermediate_size\": 128, "
            "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2, "
            "\"head_dim\": 16}";
        lc_model_config c;
        if (lc_config_parse(&c, cfg_json, sizeof cfg_json - 1, "fuzz config") != 0) abort();
        (void)lc_adapters_check(&s, &c, "fuzz adapters");
        lc_adapters_free(&s);
    }
    char *wpath = lc_path_join(g_dir, wname);
    lc_lora_moments *mom;
    lc_train_state_meta meta;
    if (lc_train_state_read(wpath, &s, &mom, &meta) == 0) {
        lc_train_state_free_moments(mom, s.n);
        lc_adapters_free(&s);
    }
    free(wpath);
    return 0;
}
