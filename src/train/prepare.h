/*
 * prepare.h — turning a table of rows (JSONL, a JSON array, or CSV) into mlx-lm's
 * train/valid/test JSONL: one prompt built from a template over each row's fields, one
 * target field, the output in the text, chat (messages) or completions (prompt/completion)
 * form, split by row, by the value of a field (held-out groups) or by paraphrase.
 *
 * Splits. Units are shuffled with the seed (splitmix64 + Fisher-Yates; --no-shuffle keeps
 * the file's order) and cut in that order: train takes the units that start before
 * ⌊n·(1−valid−test)⌋ rows, valid those before that + ⌊n·valid⌋ (all the rest when test is
 * 0), test the rest. A unit is
 *   "row"        one row (an ordered 90/10 cut reproduces the recipe's split);
 *   FIELD        every row with one value of FIELD (e.g. mnemonic: held-out instructions);
 *   "paraphrase" one distinct input within a target: every target keeps its first input
 *                in train, and ⌊n·valid⌋ / ⌊n·test⌋ of the other inputs go to valid/test,
 *                so those splits hold unseen wordings of seen targets.
 * Leaks (an input value in two splits) are counted, never hidden.
 *
 * Owns the output text of its result; never prints.
 */
#ifndef LC_TRAIN_PREPARE_H
#define LC_TRAIN_PREPARE_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/vec.h"
#include "text/tokenizer.h"
#include "train/data.h"

#define LC_PREP_DEFAULT_TEMPLATE                                                              \
    "Write the RISC-V assembly instruction for the following operation:\n{description}"

typedef enum { LC_PREP_TEXT, LC_PREP_CHAT, LC_PREP_COMPLETIONS } lc_prep_format;

typedef struct {
    const char *input_field;     // the field whose value is "the input" (leaks, paraphrase)
    const char *output_field;    // the target
    const char *prompt_template; // "{field}" substituted, "{{" / "}}" literal braces
    lc_prep_format format;
    int chat_family;             // for LC_PREP_TEXT: an lc_chat_family
    const char *bos_text, *eos_text; // for LC_PREP_TEXT: the tokenizer's BOS/EOS strings
    double valid_fraction, test_fraction;
    uint64_t seed;
    bool shuffle, dedupe;
    const char *split_by; // NULL or "row", "paraphrase", or a field name
} lc_prep_options;

enum { LC_SPLIT_TRAIN, LC_SPLIT_VALID, LC_SPLIT_TEST, LC_N_SPLITS };

typedef struct {
    lc_buf out[LC_N_SPLITS]; // JSONL text of each split
    size_t n[LC_N_SPLITS];   // rows per split
    size_t n_in, n_dupes;    // rows read; rows dropped by dedupe
    size_t n_leaks;          // distinct inputs found in more than one split
    char *leak_example;      // one such input (owned), or NULL
} lc_prep_result;

/* The names of the splits ("train", "valid", "test"). */
extern const char *const lc_split_names[LC_N_SPLITS];

/* Parses RFC 4180 CSV (header row of field names; quoted fields with "" escapes and line
 * breaks; CRLF or LF) into a new cJSON array of objects with string values (*rows, owned
 * by the caller). `what` names the text in errors, which give the line. Returns 0 or -1. */
int lc_csv_parse(const char *text, size_t len, const char *what, cJSON **rows);

/* Reads a table of rows: .csv as CSV, .json as one JSON array of objects, anything else
 * as JSONL (one object a line; a file starting with '[' as a JSON array). *rows is a new
 * cJSON array of objects owned by the caller. Returns 0 or -1. */
int lc_rows_load(const char *path, cJSON **rows);

/* Formats and splits rows (`what` names them in errors) into r (zeroed by the caller;
 * free with lc_prep_result_free). Returns 0, or -1 on a missing/non-text field, an
 * unknown template field or bad fractions. */
int lc_prepare(const cJSON *rows, const char *what, const lc_prep_options *o, lc_prep_result *r);

/* Writes DIR/train.jsonl, valid.jsonl and test.jsonl atomically (DIR created). Returns 0
 * or -1. */
int lc_prepare_write(const lc_prep_result *r, const char *dir);

/* Token-length statistics of each split as lorac train will tokenize it (train/data.h with
 * chat_family, -1 to detect); n_truncated counts rows over max_seq_length. Returns 0 or -1. */
int lc_prepare_stats(const lc_prep_result *r, const lc_tokenizer *t, int chat_family,
                     int64_t max_seq_length, lc_data_stats stats[LC_N_SPLITS]);

void lc_prep_result_free(lc_prep_result *r);

#endif
