/*
 * cmd.h — the commands of the lorac binary. Each is one file in src/cmd: parse
 * options, call the layers, print. A command returns the process exit status:
 * 0 success, 2 bad input or usage (after printing one "error: ..." line), 1 other.
 */
#ifndef LC_CMD_H
#define LC_CMD_H

#include <stdbool.h>
#include <stdio.h>

#include "core/vec.h"
#include "model/model.h"
#include "model/sample.h"
#include "text/chat.h"
#include "text/tokenizer.h"

#define LORAC_VERSION "0.1.0"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} lc_command;

/* Prints "error: <current error message>" to stderr; returns 2. */
int lc_cmd_fail(void);
/* Prints "error: <formatted message>" to stderr; returns 2. */
int lc_cmd_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Parses an integer option in [min, max]; prints the error and returns 2 when it is not. */
int lc_cmd_parse_int(const char *s, const char *name, long long min, long long max, long long *out);
/* Parses a finite number; prints the error and returns 2 when it is not. */
int lc_cmd_parse_float(const char *s, const char *name, float *out);
/* Parses a size: "5GB" (10^9), "2GiB" (2^30), "500MB", "4096" bytes. Returns 0, or -1
 * (nothing printed) when it is not one. */
int lc_cmd_parse_size(const char *s, size_t *out);
/* A --dtype value: bf16/bfloat16, f16/float16, f32/float32 into *out. Returns 0, or 2 after
 * printing a usage error for command cmd. */
int lc_cmd_parse_dtype(const char *s, const char *cmd, lc_dtype *out);
/* Appends all of a stream to b. */
void lc_cmd_slurp(FILE *f, lc_buf *b);
/* Loads a model folder onto `device` (lc_backend_new's names; NULL: "auto"), its
 * tokenizer and (adapter_path may be NULL) adapters of either layout; checks that they
 * fit together. Returns 0 or -1. */
int lc_cmd_load_model(const char *model_dir, const char *adapter_path, const char *device,
                      lc_model **m, lc_tokenizer **t);
/* The --device option's getopt_long entry (short code 'D') and help line. */
#define LC_DEVICE_OPTION {"device", required_argument, 0, 'D'}
#define LC_DEVICE_HELP                                                                             \
    "  --device DEV            cpu, cuda or cuda:N (default: cuda when built in and a GPU "           \
    "answers, else cpu)\n"
/* --fuse (generate, chat): getopt_long entry; lc_cmd_fuse merges the adapters the model
 * was loaded with into its weights (lc_model_merge_lora). Returns 0 or -1 (lc_fail: no
 * --adapter-path, or the merge's error). */
#define LC_FUSE_OPTION {"fuse", no_argument, 0, 0x160}
int lc_cmd_fuse(lc_model *m, const char *adapter_path);
/* lc_cmd_load_model with load options (--quantize ..., o->device; o may be NULL). */
int lc_cmd_load_model_opts(const char *model_dir, const char *adapter_path,
                           const lc_load_options *o, lc_model **m, lc_tokenizer **t);
/* The --quantize / --quantize-embeddings options of the commands that run a model:
 * getopt_long entries and their parser (returns 1 when c was one, applied to *o; 0 when
 * not; 2 after printing an error). */
#define LC_QUANT_OPTIONS                                                                           \
    {"quantize", required_argument, 0, 0x151}, {"quantize-embeddings", no_argument, 0, 0x152}
int lc_cmd_quant_opt(int c, const char *arg, const char *cmd, lc_load_options *o);
#define LC_QUANT_HELP                                                                              \
    "  --quantize nf4|q4|q8   quantize the base weights at load time (default: as stored)\n"      \
    "  --quantize-embeddings  quantize embed_tokens and lm_head too\n"
int cmd_quantize(int argc, char **argv);
/* The chat family: `name` when given, else detected from the tokenizer's chat_template.
 * Returns 0 or -1 (telling to pass --chat-template). */
int lc_cmd_chat_family(const lc_tokenizer *t, const char *name, lc_chat_family *f);
/* The ids of a one-question prompt: rendered with the chat template (system may be NULL),
 * or, raw, the text encoded with BOS (never two). Returns 0 or -1. */
int lc_cmd_prompt_ids(const lc_tokenizer *t, const char *chat_template, bool raw,
                      const char *system, const char *user, lc_ids *out);

/* The sampling options shared by generate, chat (and serve): getopt_long entries and
 * their parser. lc_cmd_sample_opt returns 1 when c was a sampling option (applied to
 * *sc), 0 when it was not, 2 after printing an error for a bad value. */
#define LC_SAMPLE_OPTIONS                                                                          \
    {"temp", required_argument, 0, 't'}, {"top-p", required_argument, 0, 'P'},                     \
        {"top-k", required_argument, 0, 'K'}, {"min-p", required_argument, 0, 'M'},                \
        {"seed", required_argument, 0, 'S'}
int lc_cmd_sample_opt(int c, const char *arg, lc_sample_config *sc);

int cmd_info(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_init(int argc, char **argv);
int cmd_prepare(int argc, char **argv);
int cmd_download(int argc, char **argv);
int cmd_fuse(int argc, char **argv);
int cmd_plot(int argc, char **argv);
int cmd_serve(int argc, char **argv);

#endif
