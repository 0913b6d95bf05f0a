/*
 * fuse.h — merging LoRA adapters into a model's weights and writing the result as a
 * Hugging Face model folder (what `lorac fuse` does; src/cmd/fuse.c is its thin front).
 *
 * For every adapted projection, W' = W + scale · (A B)^T, that is
 * W'[o][i] = W[o][i] + scale · sum_k A[i][k] B[k][o]: W is stored (out, in) as
 * transformers keeps nn.Linear weights, A is (in, r) and B (r, out) as in io/adapters.h,
 * and a row x then gets x W'^T = x W^T + scale · (x A) B, the adapted projection the
 * model computes. The sum is formed in fp32 and cast once to the output dtype (round to
 * nearest even, as torch casts). Every other tensor is copied byte for byte, or
 * converted when the output dtype differs from its stored one.
 *
 * The folder holds: config.json (the base's text with torch_dtype/dtype set to the
 * output dtype; nothing of lorac's), generation_config.json (copied, or written from the
 * config's bos/eos), the tokenizer files that exist beside the base, and the weights as
 * model.safetensors or model-0000K-of-0000N.safetensors shards plus
 * model.safetensors.index.json. Everything is written into a temporary folder beside the
 * destination (DEST.tmp-XXXXXX) and renamed into place at the end, so the destination
 * is either absent, the old folder, or the complete new one.
 *
 * Memory: the base stays memory-mapped; one adapted tensor at a time is held in fp32
 * (plus two small conversion buffers), whatever the model's size.
 *
 * A quantized base (a `lorac quantize` folder, MLX affine q4/q8, bitsandbytes NF4, or a
 * float base quantized at load time with o->quantize) is read through the model loader:
 * each quantized weight is dequantized a panel of rows at a time into fp32
 * (lc_wt_dequantize_rows), the adapter's rows added, and the panel written. The output is
 * a plain model: BF16 unless o->dtype says otherwise (keep_dtype means BF16 here), the
 * companion tensors (scales, biases, absmax, quant_map, ...) dropped, and config.json
 * without its "quantization"/"quantization_config" keys. Merging back into 4-bit
 * weights is not offered: it would round the adapters' small deltas away.
 *
 * Owns the lc_fuser and what it maps; never prints (a progress bar on a terminal when
 * asked, through core/log) and never exits.
 */
#ifndef LC_MODEL_FUSE_H
#define LC_MODEL_FUSE_H

#include <stdbool.h>
#include <stddef.h>

#include "backend/backend.h"
#include "io/adapters.h"
#include "io/config.h"
#include "io/safetensors.h"

typedef struct {
    bool keep_dtype;        // true: every tensor keeps its stored dtype; false: `dtype`
    lc_dtype dtype;         // F32, F16 or BF16 when !keep_dtype
    size_t max_shard_bytes; // largest weight file (0: one file)
    bool force;             // replace an existing non-empty destination (a flat folder)
    bool progress;          // draw a progress bar (only on a terminal)
    lc_quant_config quantize; // quantize a float base at load first (fmt NONE: no), as
                              // training with --quantize did, then dequantize
    bool quantize_embeddings; // with quantize: embed_tokens and lm_head too
} lc_fuse_options;

typedef struct {
    size_t n_tensors;     // tensors written
    size_t n_fused;       // of them, with an adapter merged in
    size_t out_bytes;     // weight bytes written
    int n_files;          // weight files (1: model.safetensors)
    size_t adapter_bytes; // the adapters' A and B, fp32
    size_t work_bytes;    // fp32 working memory: the largest adapted tensor + buffers
    size_t mapped_bytes;  // the base's weight files (mapped, paged in as read)
    lc_dtype config_dtype; // what config.json records
    lc_quant_config base_quant; // how the base is quantized (fmt NONE: a float base)
    size_t held_bytes;    // a quantized base: the weights the loader holds (mapped or owned)
    const char *tokenizer_files[16]; // the tokenizer files that will be copied (NULL-ended)
} lc_fuse_plan;

typedef struct lc_fuser lc_fuser;

/* w (out, in, float32) += scale · (a b)^T over backend be's ->gemm (float32), a (in, r), b
 * (r, out): the merge `lorac fuse` writes, and lc_model_merge_lora's on the host. */
void lc_fuse_add_delta(lc_backend *be, float *w, const float *a, const float *b, int64_t in, int64_t out, int64_t r,
                       float scale);

/* Prepares a fusion of adapters s (copied; `what` names them in errors) into the model
 * folder model_dir: reads config.json, maps the weights, checks that the weights match
 * the config and the adapters fit it, and plans the output. *out is owned by the
 * caller (lc_fuser_free). Returns 0 or -1. */
int lc_fuser_open(lc_fuser **out, const char *model_dir, const lc_adapter_set *s,
                  const char *what, const lc_fuse_options *o);
/* The plan of the fusion (owned by f). */
const lc_fuse_plan *lc_fuser_plan(const lc_fuser *f);
/* Writes the fused folder at save_path (see the file comment for the rules on an
 * existing destination). On failure nothing is left: neither a temporary folder nor a
 * changed destination. Returns 0 or -1. */
int lc_fuser_write(lc_fuser *f, const char *save_path);
void lc_fuser_free(lc_fuser *f);

/* config.json text with its top-level "torch_dtype" and "dtype" values set to the
 * transformers name of dt ("bfloat16"), added as "torch_dtype" when neither is present;
 * everything else byte for byte. *out is owned by the caller. Returns 0 or -1 (not JSON,
 * not an object). */
int lc_config_text_set_dtype(const char *text, size_t len, lc_dtype dt, const char *what,
                             char **out);
/* lc_config_text_set_dtype that also removes the top-level "quantization" and
 * "quantization_config" members (a dequantized model's config). Returns 0 or -1. */
int lc_config_text_dequantized(const char *text, size_t len, lc_dtype dt, const char *what,
                               char **out);

#endif
