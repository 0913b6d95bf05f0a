/*
 * task.h — task evaluation: generate an answer for every row of a split (greedy, batch 1,
 * stopping at EOS or a token limit) and score it against the row's target (train/score.h):
 * exact match, mnemonic match, and "assembles" — measured in one assembler run over the
 * answers of every model compared, or left unmeasured (-1) when there is no assembler.
 *
 * Owns the answers and scores of its results; never prints (but draws a progress bar on
 * stderr when it is a terminal, through core/log.h).
 */
#ifndef LC_TRAIN_TASK_H
#define LC_TRAIN_TASK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/model.h"
#include "text/tokenizer.h"
#include "train/data.h"
#include "train/score.h"

typedef struct {
    size_t n;
    char **output;                         // (n) the generated answers
    lc_task_score *score;                  // (n)
    size_t exact, mnemonic, assembles;     // rows that pass each metric
    bool measured;                         // assembles was measured
    int64_t tokens;                        // tokens generated in all
    double seconds;                        // time spent generating
} lc_task_result;

/* Generates for every row of s with m (at most max_tokens new tokens each, greedy) into r
 * (zeroed here; free with lc_task_result_free) and scores exact and mnemonic; label names
 * the progress bar. Returns 0, or -1 naming the row's line. */
int lc_task_generate(lc_model *m, const lc_tokenizer *t, const lc_task_set *s,
                     int64_t max_tokens, const char *label, lc_task_result *r);

/* Measures "assembles" for the answers of rs[0..n) in one assembler run. Returns 0, or -1
 * when the assembler is missing or broken (the scores then stay unmeasured, -1). */
int lc_task_assemble(const lc_asm_config *c, lc_task_result *const *rs, size_t n);

void lc_task_result_free(lc_task_result *r);

#endif
