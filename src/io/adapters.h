/*
 * adapters.h — LoRA adapter files: the mlx-lm layout, the PEFT layout, and lorac's
 * resumable training checkpoints.
 *
 * mlx-lm folder (what the original recipe wrote, and what mlx_lm.generate/fuse load):
 *   adapters.safetensors   model.layers.N.<module>.lora_a (in, r), .lora_b (r, out), F32
 *   adapter_config.json    fine_tune_type "lora", num_layers, lora_parameters {rank, scale,
 *                          dropout, keys} and the rest of the training configuration
 *   NNNNNNN_adapters.safetensors   checkpoints (7-digit step), same tensors
 * PEFT folder (transformers/PEFT/vLLM), written to <adapter folder>/peft:
 *   adapter_model.safetensors  base_model.model.model.layers.N.<module>.lora_A.weight (r, in),
 *                              .lora_B.weight (out, r), F32
 *   adapter_config.json        peft_type LORA, r, lora_alpha = scale * r, target_modules,
 *                              layers_to_transform, task_type CAUSAL_LM, ...
 * Either loads back into one lc_adapter_set. Resumable checkpoints
 * (NNNNNNN_train_state.safetensors) hold the adapters, the Adam moments and, in
 * __metadata__, the step, RNG state, data position, trained tokens and options hash.
 *
 * Every file is written atomically. This module owns the arrays of the sets it loads;
 * it never prints or exits.
 */
#ifndef LC_IO_ADAPTERS_H
#define LC_IO_ADAPTERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io/config.h"

/* The seven projections a LoRA adapter may sit on, in the order lorac lists them. */
typedef enum {
    LC_LORA_Q,
    LC_LORA_K,
    LC_LORA_V,
    LC_LORA_O,
    LC_LORA_GATE,
    LC_LORA_UP,
    LC_LORA_DOWN,
    LC_LORA_N_KEYS
} lc_lora_key;

#define LC_LORA_ALL_KEYS ((1u << LC_LORA_N_KEYS) - 1)

/* mlx-lm's module path of a key ("self_attn.q_proj", "mlp.down_proj"). */
const char *lc_lora_key_path(lc_lora_key k);
/* PEFT's short name ("q_proj", "down_proj"). */
const char *lc_lora_key_short(lc_lora_key k);
/* Parses either spelling; returns the key, or -1 (no error recorded) when unknown. */
int lc_lora_key_parse(const char *s);
/* The (in, out) sizes of a key's projection in a model of config c. */
void lc_lora_key_dims(const lc_model_config *c, lc_lora_key k, int64_t *in, int64_t *out);

/* One adapted projection. */
typedef struct {
    char name[96]; // "model.layers.N.self_attn.q_proj"
    int layer;
    lc_lora_key key;
    int64_t in, out, r;
    float *a; // (in, r)
    float *b; // (r, out)
} lc_lora_tensor;

typedef struct {
    lc_lora_tensor *t; // sorted by (layer, key)
    size_t n;
    int64_t rank;
    double scale;   // y = W x + scale * B(A x)
    double dropout;
    int64_t num_layers; // as configured (-1: all)
    unsigned keys;      // bit set of lc_lora_key
} lc_adapter_set;

/* Allocates zeroed A and B for `keys` on the last `num_layers` layers (-1: all) of a model
 * of config c. Returns 0, or -1 when num_layers exceeds the model's layers. */
int lc_adapters_alloc(lc_adapter_set *s, const lc_model_config *c, int64_t num_layers,
                      unsigned keys, int64_t rank, double scale, double dropout);
void lc_adapters_free(lc_adapter_set *s);
/* The tensor of (layer, key), or NULL. */
lc_lora_tensor *lc_adapters_find(const lc_adapter_set *s, int layer, lc_lora_key key);

/* ---- mlx-lm layout ---- */

/* Writes the tensors to a safetensors file (adapters.safetensors or a checkpoint) in
 * mlx-lm's names and shapes. Returns 0 or -1. */
int lc_adapters_write_mlx(const char *path, const lc_adapter_set *s);
/* Writes dir/adapter_config.json: the keys of config_json (a JSON object: the training
 * configuration; may be NULL) with fine_tune_type, num_layers and lora_parameters taken
 * from s, sorted, indented by 4 as mlx-lm's save_config. Returns 0 or -1. */
int lc_adapters_write_mlx_config(const char *dir, const lc_adapter_set *s, const char *config_json);
/* "dir/NNNNNNN_adapters.safetensors" (owned by the caller). */
char *lc_adapters_checkpoint_path(const char *dir, int64_t step);

/* ---- PEFT layout ---- */

/* Writes dir/adapter_model.safetensors and dir/adapter_config.json (creates dir). base_model
 * is base_model_name_or_path (may be NULL). Returns 0 or -1. */
int lc_adapters_write_peft(const char *dir, const lc_adapter_set *s, const char *base_model);

/* ---- loading ---- */

/* Loads an adapter folder of either layout (adapter_config.json decides: peft_type means
 * PEFT), or an mlx-lm .safetensors file (its rank from the shapes; scale and dropout from
 * an adapter_config.json beside it when present). Returns 0 or -1. */
int lc_adapters_load(const char *path, lc_adapter_set *s);
/* Checks that every tensor fits a model of config c (layer index, in/out sizes, rank).
 * Returns 0, or -1 naming the first tensor that does not and what the model has. */
int lc_adapters_check(const lc_adapter_set *s, const lc_model_config *c, const char *what);

/* ---- resumable training checkpoints ---- */

/* Adam moments of one lc_lora_tensor, same shapes as a and b. */
typedef struct {
    float *m_a, *v_a; // (in, r)
    float *m_b, *v_b; // (r, out)
} lc_lora_moments;

typedef struct {
    int64_t step;         // optimizer updates done
    uint64_t options_hash; // of the options that must match to resume
    char rng[256];        // the trainer's RNG state, as text
    char data_pos[256];   // the batcher's position, as text
    int64_t trained_tokens; // target tokens trained on so far (0 in files that predate it)
} lc_train_state_meta;

/* "dir/NNNNNNN_train_state.safetensors" (owned by the caller). */
char *lc_train_state_path(const char *dir, int64_t step);
/* Writes adapters + moments (one per tensor of s) + meta as one safetensors file,
 * atomically. Returns 0 or -1. */
int lc_train_state_write(const char *path, const lc_adapter_set *s, const lc_lora_moments *mom,
                         const lc_train_state_meta *meta);
/* Reads a train-state file: *s and *mom (s->n moments, owned by the caller: free with
 * lc_train_state_free_moments) and *meta. Returns 0 or -1. */
int lc_train_state_read(const char *path, lc_adapter_set *s, lc_lora_moments **mom,
                        lc_train_state_meta *meta);
void lc_train_state_free_moments(lc_lora_moments *mom, size_t n);
/* Finds the newest complete train-state file in dir (the highest step whose file reads
 * back whole). *path is owned by the caller; returns 1 when found, 0 when none, -1 on
 * error (a folder that cannot be read). */
int lc_train_state_find_latest(const char *dir, char **path, int64_t *step);

#endif
