/*
 * fuzz_jsonl.c — libFuzzer target: JSONL training data in mlx-lm's three forms, tokenized
 * with the demo tokenizer (tests/fixtures/tokenizers/demo-spm, read once from the
 * repository root, where fuzz/run.sh runs), then batched. The input's first byte sets the
 * options (mask_prompt, chat family, a short max_seq_length); the rest is the file. Any
 * crash, leak or sanitizer report is a bug; failures with an error message are fine.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "text/chat.h"
#include "text/tokenizer.h"
#include "train/data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static lc_tokenizer *g_tok;

static void free_tok(void) { lc_tokenizer_free(g_tok); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_tok) {
        if (lc_tokenizer_load_dir("tests/fixtures/tokenizers/demo-spm", &g_tok) != 0) abort();
        atexit(free_tok);
    }
    if (size < 1) return 0;
    lc_data_options o = {(data[0] & 1) != 0, (data[0] & 2) ? 8 : 2048,
                         (data[0] & 4) ? (int)LC_CHAT_MISTRAL : -1};
    lc_dataset d;
    if (lc_dataset_parse(&d, (const char *)data + 1, size - 1, "fuzz.jsonl", g_tok, &o) != 0) return 0;
    lc_data_stats st;
    lc_dataset_stats(&d, &st);
    lc_batcher bt;
    if (lc_batcher_init(&bt, &d, 1 + (data[0] >> 4) % 3, o.max_seq_length, 1, true) == 0) {
        lc_batch_buf bb = {0};
        for (int i = 0; i < 4; i++)
            if (lc_batcher_next(&bt, &bb) != 0) break;
        lc_batch_buf_free(&bb);
        lc_batcher_free(&bt);
    }
    lc_dataset_free(&d);
    return 0;
}
