/*
 * internal.h — the model layer's private structures, shared by its files (model.c:
 * loading, arena, forward/backward; lora.c: adapters; rope.c: rotary tables; kv.c:
 * generation). Not for use outside src/model.
 */
#ifndef LC_MODEL_INTERNAL_H
#define LC_MODEL_INTERNAL_H

#include "backend/backend.h"
#include "model/model.h"

/* One block's frozen weights and its adapters. */
typedef struct {
    lc_wt w[LC_NKEYS];      // q (H*D, C), k, v (KV*D, C), o (C, H*D), gate, up (I, C), down (C, I)
    float *ln1, *ln2;       // (C) input / post-attention RMSNorm weights, fp32
    float *bias[3];         // (out) q, k, v biases (Qwen2), fp32, else NULL
    lc_lora_param *lora[LC_NKEYS]; // NULL where no adapter
    lc_wt qkv; // q, k, v as one (H*D + 2*KV*D, C) weight where ->weight_n laid them out one
               // after another (CUDA, bf16), else data NULL
    int64_t room[LC_NKEYS]; // spare rows after w[k] (->weight_room; q: after q|k|v's last), else 0
    int64_t xroom[LC_NKEYS]; // spare columns in w[k]'s rows (->weight_room: gate's and up's), else 0
} lc_block;

/* One block's activations (pointers into an arena; NULL where not kept). */
typedef struct {
    float *x;                  // (N, C) block input (the residual stream)
    float *rstd1, *rstd2;      // (N)
    float *xn1, *xn2;          // (N, C) normed inputs of attention and MLP
    float *q, *k, *v;          // (N, H*D), (N, KV*D) x2; q, k after rope
    float *att;                // (N, H*D) attention output (input of o_proj)
    float *lse;                // (B, H, T) attention row log-sum-exp (training)
    float *xmid;               // (N, C) residual after attention
    float *gate, *up, *h;      // (N, I); h = silu(gate) * up (in the backward, then dgate)
    void *gu;                  // (2, N, I) bf16: gate and up kept for the backward (->swiglu_pack),
                               // or NULL (then gate and up are kept)
    float *u[LC_NKEYS];        // (N, r) adapter intermediates A x
    int keep;                  // training, adapted blocks: LC_KEEP_* (what the backward finds kept)
} lc_acts;

/* What an adapted block keeps for its backward (model.c, block_keep). */
enum { LC_KEEP_ALL, LC_KEEP_NO_MLP, LC_KEEP_INPUT };

/* Arena modes. LC_MODE_KV: decoding's forward over a key/value cache, laid out in the
 * evaluation arena (ar[LC_MODE_EVAL]) but with float32 attention operands (the cache's). */
enum { LC_MODE_EVAL, LC_MODE_TRAIN, LC_MODE_KV };

/* The numbers of a step that live in backend memory, so a recorded step (->replay)
 * reads and writes them on the device: filled before the step, read after its sync. */
typedef struct {
    double loss_sum;  // the summed cross-entropy (->cross_entropy_sum adds into it)
    float grad_scale; // 1 / target tokens: d(loss)/d(logits) is scaled by it
    float pad_;
} lc_step_scalars;

/* The activation arena of one mode and shape. */
typedef struct {
    int mode;
    int64_t B, T;
    int full, mlp; // training: the blocks recomputed whole / their gate and up (recompute_norm)
    bool pack; // saved blocks keep gate and up as bf16 (lc_model_packs_gate_up)
    bool att16; // training keeps q, k, v and att as bf16 (lc_model_att16; the scratch's too)
    bool g16;   // training: gate's and up's products write bf16 into the pair (lc_model_gu16)
    float *base;
    size_t floats;           // of this layout
    lc_acts *saved;          // (L) training, l >= first: what block l keeps (.keep says what)
    lc_acts scratch;         // one block's activations (eval, unadapted blocks, recompute)
    float *xpp[2];           // (N, C) ping-pong residuals for blocks without saved input
    void *gus;               // (2, N, I) bf16: gate and up of the adapted blocks that keep none (packing), or NULL
    float *xf, *rstdf, *xnf; // (N, C), (N), (N, C) final norm
    float *logits;           // (chunk, V)
    int64_t chunk;
    size_t room;             // the logits chunk's floats: chunk · V, or a little more where the
                             // backward's bf16 copies with the folds' spare columns need it (dy16)
    float *dres, *dxn;       // (N, C) gradient of the residual stream; of a normed input
    float *g1;               // (N, max(I, 2HD + 2KVD)) dh (then dup in place), later datt|dq|dk|dv
    float *du;               // (N, 3r) the adapters' du (of one input: q, k, v at most)
    float *lg;               // (2, C, 3r) grouped adapters' A side by side, then their ga
    float *xd;               // (N, max in) dropout scratch (when dropout > 0)
    int32_t *tok, *tgt;      // (N)
} lc_arena;

struct lc_model {
    lc_model_config cfg;
    lc_safetensors st;
    lc_backend *be;
    lc_wt embed, lm_head;
    lc_wquant *wq;  // (L*7 + 2) the quantized weights' descriptors (lc_wt.q points here)
    size_t n_wq;    // those in use
    void **owned;   // buffers of weights quantized at load time (freed with the model)
    size_t n_owned;
    size_t wbytes;  // bytes of base weights as held (mapped or quantized)
    size_t owned_bytes; // of them, quantized at load into memory the model owns
    float *norm_f; // (C)
    lc_block *blocks;
    float *rope_cos, *rope_sin; // (rope_len, D/2)
    int64_t rope_len;
    // adapters
    bool has_lora;
    lc_lora_config lcfg;
    lc_lora_param *params;
    size_t n_params;
    float *lora_mem, *grad_mem;
    int first; // lowest block with adapters (L when none)
    // the fewest spare rows (lc_block.room) after o's and down's weights, and after q|k|v's
    // placed together, over the blocks from first on whose adapters fold there
    // (lc_model_make_room; 0: none): the adapters' a^T beside the frozen weight, for one
    // input-gradient product [dy | du] [W ; a^T]
    int64_t room_od, room_qkv;
    // the fewest spare columns in gate's and up's rows over those blocks (lc_model_make_room;
    // 0: none): [xn | u_gate | u_up] [W | s b^T]^T, the adapters in the frozen forward product
    int64_t room_gu;
    int64_t wmoves; // times lc_model_make_room moved weights (in the step graph's key: a
                    // recorded step holds the weights' pointers)
    int rc_full, rc_mlp; // lc_model_set_recompute's counts (-1: all)
    lc_arena ar[2]; // evaluation (and decoding), training: both in `arena` (never run at once)
    float *arena;      // the arenas' one buffer (NULL until first laid out)
    size_t arena_cap;  // its floats
    lc_step_scalars *scal; // backend memory: a step's loss sum and gradient scale (NULL until used)
};

/* The lowest adapted block for a LoRA config (L when lora is NULL or has no keys). */
int lc_lora_first_layer(const lc_model_config *c, const lc_lora_config *lora);

/* inv_freq (D/2) exactly as transformers computes it (float32 arithmetic), with
 * linear / llama3 scaling. */
void lc_rope_inv_freq(const lc_model_config *c, float *inv);
/* Makes the model's cos/sin tables cover positions [0, n). */
void lc_rope_ensure(lc_model *m, int64_t n);

/* Before training: gives the frozen weights that the adapters' input gradients fold into
 * (o and down, q|k|v placed together) spare rows for the adapters' a^T where they have
 * fewer, and sets lc_model.room_od, room_qkv, where the backend offers ->weight_room, every
 * block from first on has those adapters and LORAC_DX_FOLD is not 0 (else they are 0);
 * likewise gate's and up's weights 2 r spare columns for their adapters' s b^T, and
 * lc_model.room_gu, where their forward products fold (gu_fold). The moved weights' new
 * bytes count in lc_model_weight_bytes. Returns 0 or -1 (lc_fail). */
int lc_model_make_room(lc_model *m);
/* Host memory of `bytes` that the model owns (freed with it; counted in its weight bytes). */
void *lc_model_own(lc_model *m, size_t bytes);
/* Prepares the arena of a mode for (B, T); returns it. */
lc_arena *lc_arena_prepare(lc_model *m, int mode, int64_t B, int64_t T);
/* One block forward; see model.c. */
void lc_block_forward(lc_model *m, int l, lc_acts *s, const float *x, float *xout, int64_t B,
                      int64_t T, int64_t pos0, float *kdst, float *vdst, const float *kall,
                      const float *vall, int64_t S, bool train, uint64_t seed, lc_arena *a);
/* Checks tokens (and targets when non-NULL) against the vocabulary. Returns 0 or -1. */
int lc_check_ids(const lc_model *m, const int32_t *tok, const int32_t *tgt, int64_t B, int64_t T);

#endif
