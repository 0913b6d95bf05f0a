/*
 * config.h — a model's config.json (and generation_config.json) as lorac needs it.
 *
 * Reads the Llama-family architectures lorac implements (LlamaForCausalLM,
 * MistralForCausalLM, Qwen2ForCausalLM) in both layouts found in the wild:
 * transformers 4.x (top-level rope_theta / rope_scaling / torch_dtype) and 5.x
 * (rope_parameters {rope_type, rope_theta, ...}, dtype). Every value is range-checked;
 * errors name the file, the key and what would be accepted. Writes configs back in the
 * 4.x layout (which 4.x and 5.x both read), lists the tensors a model of a config holds
 * (Hugging Face names and shapes), and checks a set of safetensors against that list.
 * Owns nothing beyond the struct (no pointers); never prints or exits.
 */
#ifndef LC_IO_CONFIG_H
#define LC_IO_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io/safetensors.h"

typedef enum { LC_ARCH_LLAMA, LC_ARCH_MISTRAL, LC_ARCH_QWEN2 } lc_arch;
typedef enum { LC_ROPE_DEFAULT, LC_ROPE_LINEAR, LC_ROPE_LLAMA3 } lc_rope_type;

#define LC_MAX_EOS 8

/* Quantized base weights (src/backend/quant.h): none, MLX's affine format (config.json
 * "quantization": {"group_size", "bits"}), or bitsandbytes' NF4 ("quantization_config":
 * {"quant_method": "bitsandbytes", "bnb_4bit_quant_type": "nf4", ...}). */
typedef enum { LC_QUANT_NONE = 0, LC_QUANT_AFFINE, LC_QUANT_NF4 } lc_quant_format;

typedef struct {
    lc_quant_format fmt;
    int bits;           // affine: 2, 4 or 8 (per-tensor values come from the shapes); nf4: 4
    int64_t group_size; // affine: 32, 64 or 128; nf4: the block size (64)
    bool nested;        // nf4: double quantization of the block maxima
    bool embeddings;    // embed_tokens and lm_head are quantized too
} lc_quant_config;

typedef struct {
    lc_arch arch;
    int64_t vocab_size, hidden_size, intermediate_size, num_hidden_layers;
    int64_t num_attention_heads, num_key_value_heads, head_dim;
    int64_t max_position_embeddings;
    double rope_theta;
    lc_rope_type rope_type;
    double rope_factor;                       // linear, llama3
    double rope_low_freq_factor;              // llama3
    double rope_high_freq_factor;             // llama3
    int64_t rope_original_max_position_embeddings; // llama3
    double rms_norm_eps;
    double initializer_range;
    bool tie_word_embeddings;
    bool attention_bias; // biases on q/k/v (always for Qwen2)
    int64_t sliding_window; // 0: none
    bool has_dtype;
    lc_dtype dtype; // torch_dtype / dtype when has_dtype (F32, F16 or BF16)
    int64_t bos_token_id; // -1: none
    int64_t eos_token_ids[LC_MAX_EOS];
    int n_eos;
    lc_quant_config quant; // how the stored weights are quantized (fmt NONE: not)
} lc_model_config;

/* "LlamaForCausalLM", ... */
const char *lc_arch_name(lc_arch a);

/* Parses config.json text (`what` names it in errors) into *c. Returns 0 or -1. */
int lc_config_parse(lc_model_config *c, const char *text, size_t len, const char *what);
/* Applies generation_config.json text: its bos/eos, when present, win (as in
 * transformers, whose generate() reads the generation config). Returns 0 or -1. */
int lc_config_merge_generation(lc_model_config *c, const char *text, size_t len, const char *what);
/* Reads path (a config.json, or a folder holding one) and, when it sits beside it,
 * generation_config.json. Returns 0 or -1. */
int lc_config_load(lc_model_config *c, const char *path);
/* Checks that path is a model folder, with a message that says what to do when it is a
 * file, a Hub repo id or missing. Returns 0 or -1. */
int lc_model_dir_check(const char *path);
/* Checks ranges and divisibility (parse calls it). Returns 0 or -1. */
int lc_config_validate(const lc_model_config *c, const char *what);

/* config.json in the transformers 4.x layout (sorted keys, 2-space indent, final
 * newline), with the quantization keys of lc_config_json_with_quant when c->quant says
 * the weights are quantized; the string is owned by the caller. */
char *lc_config_to_json(const lc_model_config *c);
/* generation_config.json (bos, eos); owned by the caller. */
char *lc_generation_config_to_json(const lc_model_config *c);

typedef struct {
    char name[80];
    int ndim;
    int64_t shape[2];
} lc_param_spec;

/* The tensors of a model of this config, in Hugging Face names and the order of
 * transformers' state dict; *out (n entries) is owned by the caller. Returns n. */
size_t lc_config_tensors(const lc_model_config *c, lc_param_spec **out);
/* The number of parameters (tied embeddings counted once). */
int64_t lc_config_param_count(const lc_model_config *c);
/* "nf4", "q4", "q8" (and "none") into a quant config with group size 64; returns 0, or -1
 * with an error naming `what` (the flag or key) and the accepted values. */
int lc_quant_parse(const char *s, lc_quant_config *q, const char *what);
/* "nf4", "q4/g64", ... for messages ("none" when not quantized). */
const char *lc_quant_name(const lc_quant_config *q, char *buf, size_t cap);
/* Adds the quantization keys to config.json text (MLX: "quantization" and
 * "quantization_config" {group_size, bits, mode}; NF4: transformers' bitsandbytes
 * "quantization_config"), keeping every other key. Returns a new string (caller frees) or
 * NULL with an error recorded. */
char *lc_config_json_with_quant(const char *text, size_t len, const lc_quant_config *q,
                                const char *what);
/* Checks that st holds exactly the tensors of the config, with the right shapes and a
 * floating dtype (a tied lm_head.weight and rotary inv_freq buffers are tolerated). When
 * the config is quantized, a 2-D weight may instead be stored quantized (its companion
 * tensors: .scales/.biases for MLX, .weight.absmax etc. for bitsandbytes); the model
 * loader checks their shapes.
 * `what` names the model in errors. Returns 0 or -1. */
int lc_config_check_weights(const lc_model_config *c, const lc_safetensors *st, const char *what);

#endif
