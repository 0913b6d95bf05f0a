/*
 * options.h — the options of `lorac train`, with mlx-lm's names, YAML keys and defaults
 * (mlx_lm/lora.py CONFIG_DEFAULTS), so that an mlx-lm lora_config.yaml runs unchanged.
 *
 * Sources, later wins: the defaults, a YAML file (`-c/--config FILE`, read with libyaml),
 * long flags (`--batch-size 4`, `--batch-size=4`: each key with '-' for '_'). An unknown
 * key or flag is an error naming the nearest valid one; a wrong type or range is one line
 * naming the file, line and key (or the flag).
 *
 * The struct holds no pointers (fixed-size strings): copy it freely. Never prints.
 */
#ifndef LC_TRAIN_OPTIONS_H
#define LC_TRAIN_OPTIONS_H

#include <stdbool.h>
#include <stdint.h>

#include "core/vec.h"
#include "train/optim.h"

#define LC_OPT_STR_MAX 1024

typedef struct {
    char model[LC_OPT_STR_MAX];               // folder or Hub repo id
    char data[LC_OPT_STR_MAX];                // folder with train/valid/test.jsonl
    char adapter_path[LC_OPT_STR_MAX];
    char resume_adapter_file[LC_OPT_STR_MAX]; // "" when none
    char config[LC_OPT_STR_MAX];              // the YAML file read ("" when none)
    char plot[LC_OPT_STR_MAX];                // loss-curve SVG ("": <adapter_path>/loss.svg; "none": off)
    char device[LC_OPT_STR_MAX];              // backend: auto (default), cpu, cuda, cuda:N
    bool train, test, grad_checkpoint, mask_prompt;
    int64_t batch_size, iters, num_layers, steps_per_report, steps_per_eval, val_batches;
    int64_t save_every, max_seq_length, seed, test_batches, grad_accumulation_steps;
    double learning_rate;
    double clip_grad_norm; // 0: no clipping (lorac's; mlx-lm has none)
    double memory_limit;   // GiB the whole run may take (0: the device's memory; lorac's)
    struct {
        int64_t rank;
        double alpha, scale, dropout;
        bool has_alpha, has_scale;
        unsigned keys; // bit set of lc_lora_key (io/adapters.h)
    } lora;
    lc_optim_kind optimizer;
    lc_adam_config adam, adamw; // optimizer_config: {adam: {...}, adamw: {...}}
    lc_schedule lr_schedule;    // kind LC_SCHED_NONE when absent
    char quantize[LC_OPT_STR_MAX]; // lorac's: "" (as stored), "nf4", "q4", "q8" at load time
    bool quantize_embeddings;      // lorac's: quantize embed_tokens and lm_head too
} lc_train_options;

/* Sets mlx-lm's defaults (batch_size 4, iters 1000, learning_rate 1e-5, num_layers 16,
 * lora rank 8 scale 20 dropout 0, ...) and lorac's: keys = the seven projections. */
void lc_train_options_defaults(lc_train_options *o);

/* Applies the keys of a YAML document (text of len bytes; `what` names it in errors) over *o.
 * Returns 0 or -1. */
int lc_train_options_apply_yaml(lc_train_options *o, const char *text, size_t len, const char *what);
/* Reads a YAML file and applies it (records the path in o->config). Returns 0 or -1. */
int lc_train_options_load_yaml(lc_train_options *o, const char *path);

/* The whole of `lorac train`'s arguments (argv[0..argc), no program name): defaults, then
 * the file of -c/--config when given, then every flag. Returns 0 or -1. */
int lc_train_options_parse(lc_train_options *o, int argc, char **argv);

/* The LoRA scale: `scale` when given, else alpha / rank when alpha is given (PEFT's
 * definition), else the default 20. */
double lc_train_options_lora_scale(const lc_train_options *o);

/* The Adam configuration of the chosen optimizer. */
const lc_adam_config *lc_train_options_adam(const lc_train_options *o);

/* Appends the options as one JSON object (mlx-lm's keys: what adapter_config.json holds
 * besides fine_tune_type/num_layers/lora_parameters). */
void lc_train_options_to_json(const lc_train_options *o, lc_buf *out);

/* A hash of the options a resumed run must share with the run that wrote its checkpoint
 * (model, data, batching, LoRA shape, optimizer, schedule, seed); iters, reporting and
 * paths are left out so that a run can be extended. */
uint64_t lc_train_options_hash(const lc_train_options *o);

/* The flags' help text (one line each), for `lorac train --help`. */
const char *lc_train_options_help(void);

#endif
