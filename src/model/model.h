/*
 * model.h — the transformer (Llama, Mistral, Qwen2) with LoRA adapters: loading,
 * forward, backward for the LoRA parameters only, loss, logits, and generation with a
 * KV cache. Written once over the backend interface (src/backend/backend.h).
 *
 * Base weights stay memory-mapped in their stored dtype (F32/F16/BF16, or quantized: NF4
 * or MLX affine, see backend/quant.h) or are quantized at load time into memory the
 * model owns; they never get gradients: no gradient buffer for a base weight exists. LoRA follows DESIGN.md: for a projection
 * y = W x (+ bias), an adapter adds scale · B (A x), with A (in, r) initialised
 * uniform ±1/sqrt(in) from a seeded portable generator and B (r, out) zero; adapters
 * sit on the last num_layers blocks on the chosen keys; dropout (inverted, seeded)
 * applies to the adapter's input in training only.
 *
 * Activations live in one arena per shape, sized by the same layout that
 * lc_model_memory_plan reports, so a run can print its plan before anything is
 * allocated. Library code: returns 0/-1 with lc_fail messages; never prints or exits.
 */
#ifndef LC_MODEL_H
#define LC_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "io/adapters.h"
#include "backend/backend.h"
#include "io/config.h"

/* The projections (lc_lora_key of io/adapters.h) under the model's short names. */
#define LC_KEY_Q LC_LORA_Q
#define LC_KEY_K LC_LORA_K
#define LC_KEY_V LC_LORA_V
#define LC_KEY_O LC_LORA_O
#define LC_KEY_GATE LC_LORA_GATE
#define LC_KEY_UP LC_LORA_UP
#define LC_KEY_DOWN LC_LORA_DOWN
#define LC_NKEYS LC_LORA_N_KEYS
#define LC_KEYS_ALL LC_LORA_ALL_KEYS

typedef struct {
    int rank;          // r
    float scale;       // y += scale · B(A x)
    float dropout;     // probability on the adapter's input, training only
    unsigned keys;     // bitmask of 1u << lc_lora_key
    int num_layers;    // the last N blocks (capped at the model's count); -1: all
} lc_lora_config;

/* mlx-lm's defaults with the seven keys: rank 8, scale 20, dropout 0, 16 layers. */
void lc_lora_config_default(lc_lora_config *c);

/* One adapter: A (in, r) and B (r, out), their gradients, row-major fp32. */
typedef struct {
    char name[96]; // mlx-lm naming: "model.layers.N.self_attn.q_proj"
    int layer;
    lc_lora_key key;
    int64_t in, out, r;
    float *a, *b;   // (in, r), (r, out)
    float *ga, *gb; // same shapes: d(mean loss)/d(a), d(...)/d(b)
} lc_lora_param;

/* A batch: B rows of T tokens, right-padded. targets[b][t] is the token that should
 * follow position t (-1: not a target: padding, masked prompt). */
typedef struct {
    int64_t B, T;
    const int32_t *tokens;  // (B, T)
    const int32_t *targets; // (B, T); may be NULL for lc_model_logits
    uint64_t seed;          // dropout seed of this step
} lc_batch;

typedef struct lc_model lc_model;

/* Loads a model folder (config.json, weights mapped), checks every tensor against the
 * config, and creates its CPU backend. *out is owned by the caller (lc_model_free).
 * Returns 0 or -1. */
int lc_model_load(const char *dir, lc_model **out);
/* lc_model_load on a named backend (lc_backend_new: "cpu", "cuda", "cuda:N", "auto"); on
 * CUDA the frozen weights are copied to the card. Returns 0 or -1. */
int lc_model_load_on(const char *dir, const char *device, lc_model **out);
/* The device the model runs on, in words ("cpu", or the card's name). */
const char *lc_model_device(const lc_model *m);

/* How to load: quantize F32/F16/BF16 projections at load time (into memory the model
 * owns, one projection at a time: never a float32 copy of the model), and whether the
 * embedding table and lm_head are quantized too (default: they stay as stored). */
typedef struct {
    lc_quant_config quantize; // fmt LC_QUANT_NONE: as stored
    bool quantize_embeddings;
    const char *device;       // backend (lc_backend_new's names); NULL: "cpu"
} lc_load_options;

/* lc_model_load with options (o may be NULL). A folder that is already quantized loads as
 * it is; asking to quantize it again is an error. Returns 0 or -1. */
int lc_model_load_opts(const char *dir, const lc_load_options *o, lc_model **out);
/* Bytes of base weights the model holds (mapped or quantized in memory). */
size_t lc_model_weight_bytes(const lc_model *m);
/* Of them, the bytes quantized at load time into memory the model owns (the rest are
 * mapped from the files). */
size_t lc_model_owned_weight_bytes(const lc_model *m);
/* The weight of a projection of block l (key lc_lora_key), the embedding table (l = -1,
 * key 0) or lm_head (l = -1, key 1), for fuse and inspection; NULL when out of range. */
const lc_wt *lc_model_weight(const lc_model *m, int l, int key);
void lc_model_free(lc_model *m);
/* The model's config (owned by the model). */
const lc_model_config *lc_model_cfg(const lc_model *m);

/* Adds adapters per c (A uniform ±1/sqrt(in) from seed, B zero). Once per model.
 * Returns 0 or -1. */
int lc_model_add_lora(lc_model *m, const lc_lora_config *c, uint64_t seed);
/* The adapters (n of them, by layer then key q,k,v,o,gate,up,down); NULL when none. */
lc_lora_param *lc_model_lora(lc_model *m, size_t *n);
/* Merges the model's adapters into its frozen weights and drops them, so that it runs
 * without the adapters' products (what `lorac fuse` writes, held in memory): each adapted
 * weight W (out, in) becomes W + scale · (A B)^T, the delta summed in float32 and the sum
 * rounded once to the weight's dtype (PEFT's merge). The card merges in place
 * (->merge_lora); on the CPU each adapted weight is first copied out of the mapped file
 * (the model owns the copy). Quantized weights are refused before anything changes.
 * Returns 0, or -1 (lc_fail; after a backend error mid-way the model is half merged: free
 * it). The model may take new adapters afterwards (lc_model_add_lora). */
int lc_model_merge_lora(lc_model *m);
/* The LoRA config in force (NULL before lc_model_add_lora). */
const lc_lora_config *lc_model_lora_config(const lc_model *m);
/* Recompute each block's activations in the backward instead of keeping them (on:
 * lc_model_set_recompute(m, -1, 0); off: (m, 0, 0)). */
void lc_model_set_grad_checkpoint(lc_model *m, bool on);
/* What training keeps for the backward, between keeping everything (0, 0) and gradient
 * checkpointing (-1, 0): the lowest `full` adapted blocks keep only their input and run
 * their forward again before their backward; the highest `mlp` of the others keep all but
 * their MLP's gate and up (the two largest activations), recomputed from the kept
 * residual by the two products that made them. -1: all. The gradients are the same bits
 * whatever the counts (the same ops on the same inputs; on the card, packing, the blocks
 * that keep no gate/up of their own pack them into one shared bf16 pair when they
 * recompute, and their backward reads it as the kept blocks' reads theirs). */
void lc_model_set_recompute(lc_model *m, int full, int mlp);
/* The number of blocks that carry adapters (0 before lc_model_add_lora). */
int lc_model_adapted_blocks(const lc_model *m);
/* The cheapest counts for lc_model_set_recompute whose activations (as
 * lc_model_activation_bytes counts them) fit budget bytes for a batch of (B, T): the
 * least recomputation, a block's whole forward counted 1 and its gate/up products 0.7
 * (the ratio measured on an H100), fewer bytes on a tie. Returns 0, or -1 (counts set
 * to full checkpointing) when even that does not fit. */
int lc_model_fit_recompute(const lc_model *m, int64_t B, int64_t T, size_t budget, int *full, int *mlp);
/* on (the default after loading, unless the environment sets LORAC_MATMUL=fp32): products with BF16 base weights run in bf16 with
 * float32 accumulation where the CPU has AVX512-BF16 (as PyTorch computes with bf16
 * weights); off: in float32. F32/F16 weights always run in float32. Returns whether bf16
 * products are on. */
bool lc_model_set_bf16_matmul(lc_model *m, bool on);

/* Forward and backward: *loss = mean cross-entropy over the targets != -1, *ntok =
 * their count; every ga/gb = (overwritten with) its gradient. Dropout on. The backward
 * stops at the lowest block that carries adapters. Returns 0 or -1. */
int lc_model_forward_backward(lc_model *m, const lc_batch *b, double *loss, int64_t *ntok);
/* Evaluation (no dropout, no gradients): *sum_loss = summed cross-entropy over the
 * targets != -1, *ntok = their count. Returns 0 or -1. */
int lc_model_loss(lc_model *m, const lc_batch *b, double *sum_loss, int64_t *ntok);
/* logits (B, T, V) of the batch (no dropout). Returns 0 or -1. */
int lc_model_logits(lc_model *m, const lc_batch *b, float *logits);

/* ---- optimizer state on the model's device ---- */
/* n zeroed floats that both the host and the model's device reach (for Adam moments and
 * accumulated gradients); free with lc_model_shared_free. */
float *lc_model_shared_alloc(lc_model *m, size_t n);
void lc_model_shared_free(lc_model *m, float *p);
/* One Adam/AdamW update on the model's device (arrays from the adapters or
 * lc_model_shared_alloc); the host may read them after lc_model_sync. */
void lc_model_adam(lc_model *m, const lc_adam_args *a, float *p, const float *g, float *mo, float *v,
                   size_t n);
/* Whether the n floats at x (the model's device or shared memory) are all finite, checked
 * where they live (on a card: one kernel and one word read back; the host never touches
 * the pages); waits for the queued work. */
bool lc_model_all_finite(lc_model *m, const float *x, size_t n);
/* Gradient arithmetic where the arrays live (shared memory; on a card the host never
 * touches the pages): the sum of squares of n floats in double (the host's loop on the
 * CPU, a fixed-order reduction on a card; waits for the queued work); x = x · a (x / a
 * with divide); acc += g; x = 0. */
double lc_model_sumsq(lc_model *m, const float *x, size_t n);
void lc_model_scale(lc_model *m, float *x, float a, bool divide, size_t n);
void lc_model_accumulate(lc_model *m, float *acc, const float *g, size_t n);
void lc_model_zero(lc_model *m, float *x, size_t n);
/* Waits for the device's queued work. Returns 0, or -1 with its error. */
int lc_model_sync(lc_model *m);
/* What the model changes on its backend before its first training step (on a card: the
 * weights the adapters' input gradients fold into moved next to spare rows;
 * lc_model_forward_backward does it too), for a trainer to run before it reads the device's
 * free memory. Returns 0 or -1 (lc_fail). */
int lc_model_train_prepare(lc_model *m);
/* The free and total memory of the model's device: 1 and both set on a card, 0 on the
 * host (the CPU backend: the caller reads the host's memory itself), -1 on an error. */
int lc_model_device_memory(const lc_model *m, size_t *free_bytes, size_t *total_bytes);
/* Device memory a training step of (B, T) takes besides the weights, adapters,
 * optimizer and activation arena (the backend's scratch and context; an estimate,
 * 0 on the CPU). */
size_t lc_model_scratch_bytes(const lc_model *m, int64_t B, int64_t T);
/* Whether the model runs on the CPU backend. */
bool lc_model_on_cpu(const lc_model *m);

/* ---- generation ---- */
typedef struct lc_kv_cache lc_kv_cache;
/* A cache for one sequence of up to capacity positions; *out owned by the caller.
 * Returns 0 or -1. */
int lc_kv_cache_create(const lc_model *m, int64_t capacity, lc_kv_cache **out);
void lc_kv_cache_free(lc_kv_cache *kv);
/* Forgets the cached positions (the cache can be reused for a new sequence). */
void lc_kv_cache_reset(lc_kv_cache *kv);
/* The number of positions cached. */
int64_t lc_kv_cache_len(const lc_kv_cache *kv);
/* Appends n tokens at the cache's end and writes the logits (V) that follow the last
 * one (prefill: n = prompt length; decode: n = 1). Returns 0 or -1. */
int lc_model_step(lc_model *m, lc_kv_cache *kv, const int32_t *tokens, int64_t n, float *logits);
/* Called with each token greedy decoding chooses: 0 goes on, 1 stops, -1 stops with an
 * error (lc_fail'd by the callback). */
typedef int (*lc_token_fn)(void *ctx, int32_t id);
/* Greedy decoding from the cache's end: feeds `first`, takes the argmax of the logits that
 * follow (lc_sample's greedy), hands it to on_token, feeds it, and so on, up to max tokens
 * handed over (the last one not fed) or until on_token stops; the cache then holds every
 * token fed (`first` and those handed over but the last). Where the backend takes the
 * argmax itself (->argmax), the step that feeds a token is queued before the host hears of
 * it, so the device never waits on the host; LORAC_GREEDY_AHEAD=0 reads every step's
 * logits back instead (the same tokens). Returns 0 or -1 (the cache then holds the tokens
 * fed before the failing step). */
int lc_model_greedy(lc_model *m, lc_kv_cache *kv, int32_t first, int64_t max, lc_token_fn on_token, void *ctx);

/* ---- memory ---- */
typedef struct {
    size_t weights;     // the mapped base weights (stored dtype)
    size_t adapters;    // LoRA A and B, fp32
    size_t gradients;   // their gradients, fp32
    size_t optimizer;   // Adam moments: 2 × adapters
    size_t activations; // the training arena for (B, T)
    size_t total;
} lc_memory_plan;

/* The memory a training run of (B, T) needs, from the config alone (weights counted
 * in cfg's dtype, F32 when it has none; the seven projections quantized per cfg->quant,
 * the embedding table and lm_head too when cfg->quant.embeddings). lora may be NULL (no adapters). Returns 0 or -1. */
/* Bytes of base weights a model of this config holds (see lc_model_memory_plan). */
size_t lc_model_weight_plan(const lc_model_config *cfg);
int lc_model_memory_plan(const lc_model_config *cfg, const lc_lora_config *lora, int64_t B,
                         int64_t T, bool grad_checkpoint, lc_memory_plan *plan);

/* Whether training m without checkpointing keeps each adapted block's SwiGLU inputs
 * (gate, up) as bf16 instead of float32: when m's backend offers ->swiglu_pack (CUDA,
 * whose products round activations to bf16 anyway), no gate/up weight is float32 (those
 * products stay float32) and more than two blocks carry adapters (the float32 pair all
 * blocks share costs what two save); LORAC_PACK_GATE_UP=0 turns it off. The config-only
 * plan above counts float32 (the larger). */
bool lc_model_packs_gate_up(const lc_model *m);
/* Whether a block that keeps gate and up as bf16 (above) also leaves SwiGLU's input
 * gradients dgate and dup as bf16 in their place for the frozen input-gradient products,
 * which would otherwise round them to bf16 in a pass of their own (the same bits): when
 * the backend offers ->swiglu_bwd_packed_b and ->matmul_dx_b (CUDA); LORAC_PACKED_DY=0
 * turns it off. */
bool lc_model_packs_dy(const lc_model *m);
/* Whether, with the above and without dropout, the gate and up adapters' gradient products
 * (gb = s u^T dy, du = s dy b^T) also read those bf16 dgate and dup, as bf16 products
 * (->gemm_b; u and b rounded to bf16, float32 sums: what PyTorch's bf16 autocast does),
 * so their float32 copies are never written: gradients within bf16 rounding of the
 * float32 products', not the same bits. LORAC_PACKED_DY_ADAPTERS=0 turns it off. */
bool lc_model_dy16_adapters(const lc_model *m);
/* Whether, with the above, SwiGLU's backward writes h again only as its bf16 rounding (over
 * h's float32 room) where the backward needs h, and down's adapter takes ga = h^T du from
 * it as a bf16 product (->gemm_b, as bf16 autocast does): half the bytes written and read.
 * LORAC_PACKED_H_GA=0 turns it off (h in float32, ga on TF32/float32). */
bool lc_model_h16_ga(const lc_model *m);
/* Whether training keeps each block's q, k, v (after RoPE) and attention output (o's
 * input) only as their bf16 roundings, half their memory (~2.5 GiB of a 7B model's 8 x 512
 * step): when the backend offers ->attention_b, ->attention_bwd_b, ->rope_b, ->to_bf16,
 * ->matmul_n_b and ->gemm_b (CUDA, whose attention and o product round them to bf16
 * anyway), every o weight is bf16 (not quantized) and there is no dropout. The attention's
 * results are the same bits; o's adapter takes u = att a and ga = att^T du as bf16
 * products (as bf16 autocast does), and the backward's D = rowsum(dout · out) reads the
 * bf16 out. LORAC_PACKED_ATT=0 turns it off. The config-only plan counts float32. */
bool lc_model_att16(const lc_model *m);
/* Whether m's adapters' float32 products that the card runs through cuBLAS may use TF32
 * tensor cores (->lora_tf32): on CUDA, when no frozen block weight is float32 (bf16 or
 * quantized bases, whose products round the activations to bf16 anyway; the float32
 * fixtures keep float32 products); LORAC_LORA_TF32=0 turns it off. */
bool lc_model_lora_tf32(const lc_model *m);
/* Whether such a block's SwiGLU also writes h rounded to bf16 (into the arena's gradient
 * scratch, free during the forward) for down's frozen product, which would otherwise round
 * h in a pass of its own (the same bits): down a bf16 weight (not quantized), the backend
 * offering ->matmul_n_b (CUDA); LORAC_PACKED_H=0 turns it off. */
bool lc_model_packs_h(const lc_model *m, const lc_wt *down);
/* Whether training m folds gate's and up's adapters' last products (out += s u b) into
 * SwiGLU (->swiglu_lora): when the backend offers it (CUDA), without dropout (projs' grouped
 * path), rank <= 32; LORAC_FOLD_GATE_UP=0 turns it off. */
bool lc_model_folds_gate_up(const lc_model *m);
/* Whether training m writes gate's and up's frozen products as bf16 straight into the
 * block's bf16 pair (->matmul_n_bo), which SwiGLU (->swiglu_lora) then reads, adds the
 * adapters' s u b to and rounds again in place: no float32 gate and up anywhere (the
 * arena's float32 pair and the scratch's gate/up are gone: 2 N I floats), half the bytes
 * the products write and SwiGLU reads. The frozen part is rounded to bf16 before the
 * adapters' part is added (a bf16 layer under PyTorch's autocast rounds it so too), so
 * the forward moves within bf16 rounding. When m packs gate/up, folds them, takes the
 * gradients from bf16 dy (lc_model_dy16_adapters), its backend offers ->matmul_n_bo and
 * every gate/up weight is bf16, not quantized; LORAC_GU16=0 turns it off. At many rows,
 * where gate and up both carry adapters of a rank that is a multiple of 4, the adapters'
 * part goes into the products themselves instead ([xn | u] [W | s b^T]^T over spare
 * columns the weights get before the first step, lc_model_make_room; SwiGLU then only
 * reads the pair); LORAC_GU_FOLD=0 keeps it in SwiGLU. */
bool lc_model_gu16(const lc_model *m);
/* The activation bytes training m at (B, T) lays out with lc_model_set_recompute's counts
 * full, mlp: lc_memory_plan's activations as this model and backend will allocate them
 * (packing included). */
size_t lc_model_activation_bytes(const lc_model *m, int64_t B, int64_t T, int full, int mlp);
/* The bytes of the evaluation arena (lc_model_loss, lc_model_logits, decoding) for batches
 * of (B, T). It shares one buffer with the training arena (the two never run at once), so
 * a run that trains and validates holds the larger of the two. */
size_t lc_model_eval_bytes(const lc_model *m, int64_t B, int64_t T);

#endif
