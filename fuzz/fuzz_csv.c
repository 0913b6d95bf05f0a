/*
 * fuzz_csv.c — libFuzzer target: the CSV reader and the prepare step behind it. Any
 * input must give a clean error or rows that prepare formats and splits without fault.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "train/prepare.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cJSON *rows;
    if (lc_csv_parse((const char *)data, size, "fuzz.csv", &rows) != 0) return 0;
    const cJSON *first = rows->child;
    if (first && first->child) {
        /* the first column is both input and target: every row has it */
        const char *f = first->child->string;
        lc_prep_options o = {.input_field = f, .output_field = f, .prompt_template = "{{x}}",
                             .format = LC_PREP_COMPLETIONS, .valid_fraction = 0.3,
                             .test_fraction = 0.2, .seed = size, .shuffle = true,
                             .dedupe = size & 1, .split_by = size & 2 ? "paraphrase" : f};
        lc_prep_result r = {0};
        if (lc_prepare(rows, "fuzz.csv", &o, &r) != 0) abort(); // valid rows must prepare
        if (r.n[0] + r.n[1] + r.n[2] + r.n_dupes != r.n_in) abort();
        lc_prep_result_free(&r);
    }
    cJSON_Delete(rows);
    return 0;
}
