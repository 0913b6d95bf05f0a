/*
 * data.h — training data: JSONL files in mlx-lm's three forms, tokenized, and batches.
 *
 * Forms (mlx_lm/tuner/datasets.py), decided by the first line, the same on every line:
 *   {"text": ...}                      tokenized as is (special tokens in it recognised)
 *   {"prompt": ..., "completion": ...} the chat [user: prompt, assistant: completion]
 *   {"messages": [{role, content}...]} the chat ("tools" is refused for now)
 * Chats go through the model family's chat template (text/chat.h): the family comes from
 * the tokenizer's chat_template unless the options name one.
 * Rules: never a double BOS (a text that already starts with <s> gets no second one);
 * EOS always trained (appended when the text, or the last assistant turn of a chat, does
 * not end with it); mask_prompt ignores the targets of the prompt (prompt/completion: the
 * prompt; messages: everything before the last turn, as mlx-lm masks); sequences longer
 * than max_seq_length are truncated (counted in n_truncated; the caller warns once).
 *
 * Batches follow mlx-lm's iterate_batches: examples sorted by length, cut into batches of
 * batch_size (a tail shorter than a batch is dropped), the batch order shuffled with the
 * seed and reshuffled every epoch, each batch padded to 1 + a multiple of 32 (at most
 * max_seq_length) and split into inputs and next-token targets of T = width - 1.
 * Targets are -1 where ignored: padding, masked prompt, the last position. The position
 * (seed, epoch, batch index) can be saved as text and restored exactly.
 *
 * Owns the token arrays of its datasets and the buffers of its batches; never prints.
 */
#ifndef LC_TRAIN_DATA_H
#define LC_TRAIN_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "text/tokenizer.h"

typedef enum { LC_DATA_TEXT, LC_DATA_COMPLETION, LC_DATA_CHAT } lc_data_form;

typedef struct {
    bool mask_prompt;
    int64_t max_seq_length;
    int chat_family; // an lc_chat_family, or -1: detect from the tokenizer's chat_template
} lc_data_options;

typedef struct {
    lc_data_form form;
    int32_t *ids;   // every example's tokens back to back (full length, not truncated)
    size_t *start;  // (n + 1) offsets into ids
    size_t *offset; // (n) index of the first token whose prediction is trained
    size_t n;
    size_t n_truncated; // examples longer than max_seq_length
    int64_t max_seq_length;
} lc_dataset;

/* Tokenizes JSONL text (`what`, e.g. "data/train.jsonl", names it in errors, which give the
 * line). Blank lines are skipped. Returns 0 or -1. */
int lc_dataset_parse(lc_dataset *d, const char *text, size_t len, const char *what,
                     const lc_tokenizer *t, const lc_data_options *o);
/* Reads and tokenizes a JSONL file. Returns 0 or -1. */
int lc_dataset_load(lc_dataset *d, const char *path, const lc_tokenizer *t, const lc_data_options *o);
void lc_dataset_free(lc_dataset *d);
/* The number of tokens of example i. */
size_t lc_dataset_len(const lc_dataset *d, size_t i);
/* "text", "prompt/completion" or "messages". */
const char *lc_data_form_name(lc_data_form f);

typedef struct {
    size_t count, tokens;     // examples; tokens in all of them
    size_t min, median, max;  // lengths (median: the lower middle one)
    size_t n_truncated;
} lc_data_stats;

void lc_dataset_stats(const lc_dataset *d, lc_data_stats *s);

/* ---- batches ---- */

typedef struct {
    uint64_t seed;
    int64_t epoch; // passes over the data completed
    int64_t index; // batches of this epoch already handed out
} lc_data_pos;

typedef struct {
    int32_t *tokens;  // (B, T) inputs, padding 0
    int32_t *targets; // (B, T) next token, -1 where ignored
    int64_t B, T;
    int64_t n_targets; // targets that are not -1
    size_t cap;
} lc_batch_buf;

typedef struct {
    const lc_dataset *d;
    int64_t batch_size, max_seq_length;
    bool shuffle;
    size_t *sorted;   // (n) example indices by length (stable)
    size_t n_batches;
    size_t *order;    // (n_batches) this epoch's batch order
    lc_data_pos pos;
} lc_batcher;

/* Prepares batches of d (which must outlive b); shuffle false keeps the sorted order (for
 * evaluation). Fails when d has fewer than batch_size examples. Returns 0 or -1. */
int lc_batcher_init(lc_batcher *b, const lc_dataset *d, int64_t batch_size, int64_t max_seq_length,
                    uint64_t seed, bool shuffle);
void lc_batcher_free(lc_batcher *b);
/* Writes d's example indices sorted by length (stable) into idx (d->n entries); returns d->n. */
size_t lc_dataset_sorted(const lc_dataset *d, size_t *idx);
/* Fills out with the batch of examples idx[0..B): padded as the batcher pads, inputs and
 * next-token targets (-1 where ignored). Returns 0. */
int lc_batch_fill(const lc_dataset *d, const size_t *idx, size_t B, int64_t max_seq_length,
                  lc_batch_buf *out);
/* Fills out with the next batch (starting the next epoch after the last). Returns 0. */
int lc_batcher_next(lc_batcher *b, lc_batch_buf *out);
void lc_batch_buf_free(lc_batch_buf *bt);

/* The position, as a value and as text ("seed:epoch:index"). */
lc_data_pos lc_batcher_pos(const lc_batcher *b);
void lc_data_pos_format(const lc_data_pos *p, char *buf, size_t cap);
/* Parses the text form. Returns 0 or -1. */
int lc_data_pos_parse(const char *text, lc_data_pos *p);
/* Continues from a saved position (same data and seed). Returns 0, or -1 when it does not fit. */
int lc_batcher_seek(lc_batcher *b, const lc_data_pos *p);

/* ---- prompts and answers (task evaluation: generate from the prompt, score the answer) ---- */

/* One row split where the answer starts. text form: at the last place where the chat
 * family's template puts the assistant's answer after a user message ("[/INST]" for
 * mistral), the answer's end-of-turn text removed; prompt/completion: the prompt rendered
 * with the generation prompt; messages: every message before the last, which must be the
 * assistant's. The prompt ids are exactly the ones training saw before the answer. */
typedef struct {
    char *prompt;  // text form: the text before the answer; else the (last) user message
    char *target;  // the expected answer, trimmed
    int32_t *ids;  // (n_ids) the prompt's tokens, the generation prompt included
    size_t n_ids;
    size_t line;   // its line in the file
} lc_task_row;

typedef struct {
    lc_task_row *rows;
    size_t n;
    lc_data_form form;
} lc_task_set;

/* Reads up to limit rows (0: all) of a JSONL file in any of the three forms into s.
 * Fails, naming the line, on a row with no answer to score. Returns 0 or -1. */
int lc_task_set_load(lc_task_set *s, const char *path, const lc_tokenizer *t,
                     const lc_data_options *o, size_t limit);
void lc_task_set_free(lc_task_set *s);

#endif
