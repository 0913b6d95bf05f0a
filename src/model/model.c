/*
 * model.c — loading a model folder, the activation arena, and the transformer's
 * forward and backward (LoRA gradients only), loss and logits.
 *
 * Owns the model: the mapped weights (through lc_safetensors), the descriptors of
 * quantized weights and the buffers of those quantized at load time, fp32 copies of the
 * small vectors (norm weights, biases), the rotary tables, the adapters and the
 * arenas. All arithmetic goes through the backend (m->be); this file only sequences
 * operations and lays out memory. The arena layout is one function, used both to
 * allocate and to plan (lc_model_memory_plan), so the printed plan is the truth.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "backend/quant.h"
#include "core/error.h"
#include "core/json.h"
#include "core/mem.h"
#include "model/internal.h"

/* ------------------------------------------------------------ shapes */

int lc_lora_first_layer(const lc_model_config *c, const lc_lora_config *lora) {
    int L = (int)c->num_hidden_layers;
    if (!lora || !(lora->keys & LC_KEYS_ALL) || lora->rank <= 0 || lora->num_layers == 0) return L;
    if (lora->num_layers < 0 || lora->num_layers >= L) return 0;
    return L - lora->num_layers;
}

/* ------------------------------------------------------------ arena layout */

static float *take(size_t *off, float *base, size_t n) {
    float *p = base ? base + *off : NULL;
    *off += (n + 15) & ~(size_t)15; // 64-byte steps
    return p;
}

/* Lays out one block's activations at *off (pointers set only when base is given). The
 * normed inputs (xn1, xn2) and SwiGLU's output h are not kept per block: every block
 * writes them into the arena's one xn (N, C) and h (N, I), and the backward recomputes
 * them from what is kept (x, xmid, their rstd, gate, up) — ~2C + I floats a token of
 * every adapted block, a third of what a block keeps. gu (the arena's one pair, when it
 * has one): gate and up are gu[0], gu[1] (N, I), and with keep_gu the block keeps them
 * as bf16 (N·I floats of room) instead (packing); without, it keeps neither (they are
 * recomputed, or the block's backward follows its forward). att16 (training): q, k, v and
 * att take bf16 values (lc_model_att16). gus: the arena's one bf16 pair for blocks that keep
 * no gate/up of their own (NULL: none). */
static void acts_layout(size_t *off, float *base, const lc_model_config *c, const lc_lora_config *lora,
                        int64_t B, int64_t T, bool with_x, bool train, float *xn, float *h, float *const *gu,
                        bool keep_gu, bool att16, void *gus, bool g16, lc_acts *s) {
    size_t N = (size_t)(B * T), C = (size_t)c->hidden_size, I = (size_t)c->intermediate_size;
    size_t HD = (size_t)(c->num_attention_heads * c->head_dim);
    size_t KVD = (size_t)(c->num_key_value_heads * c->head_dim);
    lc_acts t = {0};
    if (with_x) t.x = take(off, base, N * C);
    t.rstd1 = take(off, base, N);
    t.rstd2 = take(off, base, N);
    t.xn1 = t.xn2 = xn;
    size_t w = att16 ? 2 : 1; // values a float of room holds
    t.q = take(off, base, (N * HD + w - 1) / w);
    t.k = take(off, base, (N * KVD + w - 1) / w);
    t.v = take(off, base, (N * KVD + w - 1) / w);
    t.att = take(off, base, (N * HD + w - 1) / w);
    if (train) t.lse = take(off, base, (size_t)(B * c->num_attention_heads * T));
    t.xmid = take(off, base, N * C);
    if (g16) { // no float32 gate and up: the products write the bf16 pair (lc_model_gu16)
        if (keep_gu) t.gu = take(off, base, N * I);
    } else if (gu) {
        t.gate = gu[0], t.up = gu[1];
        if (keep_gu) t.gu = take(off, base, N * I);
    } else {
        t.gate = take(off, base, N * I), t.up = take(off, base, N * I);
    }
    if (!t.gu) t.gu = gus;
    t.h = h;
    if (lora && lora->rank > 0)
        for (int k = 0; k < LC_NKEYS; k++)
            if (lora->keys & (1u << k)) t.u[k] = take(off, base, N * (size_t)lora->rank);
    if (s) *s = t;
}

/* The recompute counts as a model of first adapted block `first` of L applies them: full
 * in [0, n], mlp in [1, n - full] (0 when full = n), n = L - first; -1 asks for all. */
static void recompute_norm(int L, int first, int full, int mlp, int *f, int *g) {
    int n = L - first;
    if (full < 0 || full > n) full = n;
    if (mlp < 0 || mlp > n - full) mlp = n - full;
    if (full > 0 && full == n - 1) full = n, mlp = 0; // the top block alone keeps only its input then too
    if (mlp < 1 && full < n) mlp = 1;                  // the top block never keeps gate and up (below)
    *f = full, *g = mlp;
}

/* What training keeps of adapted block l for its backward, given the normalized counts
 * (recompute_norm): the lowest `full` blocks keep only their input and run their forward
 * again before their backward (gradient checkpointing); the highest `mlp` keep all but
 * gate and up, which they recompute (the MLP's first products, from xmid); the rest keep
 * everything. The top block's backward follows its forward, so it recomputes nothing:
 * it keeps only its input where the arena has the one-block scratch anyway (a block
 * below it is unadapted or checkpointed), else all but gate and up. */
static int block_keep(int l, int L, int first, int full, int mlp) {
    if (l == L - 1) return first > 0 || full > 0 ? LC_KEEP_INPUT : LC_KEEP_NO_MLP;
    if (l - first < full) return LC_KEEP_INPUT;
    if (l >= L - mlp) return LC_KEEP_NO_MLP;
    return LC_KEEP_ALL;
}

/* The arena of a mode and shape: returns its size in floats; sets a's pointers when
 * a->base is set (a->saved then has L entries). full, mlp: normalized (recompute_norm;
 * ignored unless training); att16: q, k, v and att as bf16 (training's and evaluation's,
 * lc_arena_prepare); d16: the backend writes the backward's bf16 dy copies (dy16); g16
 * (training, with pack): no float32 gate and up (lc_model_gu16): the blocks that keep none
 * of their own, the scratch's included, write theirs into the shared bf16 pair. */
static size_t arena_layout(const lc_model_config *c, const lc_lora_config *lora, int mode, int64_t B,
                           int64_t T, int full, int mlp, bool pack, bool att16, bool d16, bool g16, lc_arena *a) {
    float *base = a ? a->base : NULL;
    size_t off = 0, N = (size_t)(B * T), C = (size_t)c->hidden_size, V = (size_t)c->vocab_size;
    size_t I = (size_t)c->intermediate_size, HD = (size_t)(c->num_attention_heads * c->head_dim);
    size_t KVD = (size_t)(c->num_key_value_heads * c->head_dim);
    int L = (int)c->num_hidden_layers, first = lc_lora_first_layer(c, lora);
    bool train = mode == LC_MODE_TRAIN;
    g16 = g16 && train && pack;
    float *xn = take(&off, base, N * C), *h = take(&off, base, N * I); // every block's, in turn
    bool scratch = !train || first > 0, pair = false;
    if (train)
        for (int l = first; l < L; l++) {
            int k = block_keep(l, L, first, full, mlp);
            scratch |= k == LC_KEEP_INPUT;
            pair |= k == LC_KEEP_NO_MLP || (k == LC_KEEP_ALL && pack);
        }
    // gate and up of the blocks that do not keep them as float32, the scratch's included
    float *gu[2] = {NULL, NULL}, *const *kgu = NULL;
    if (pair && !g16) gu[0] = take(&off, base, N * I), gu[1] = take(&off, base, N * I), kgu = gu;
    // packing, the adapted blocks that keep no gate/up (the top one, those recomputing gate/up
    // or their whole forward) pack them into one shared bf16 pair where their backward follows
    // (the top block's forward, the others' recompute), for the packed backward's bf16 paths
    bool shared = false;
    if (train && pack)
        for (int l = first; l < L; l++) shared |= block_keep(l, L, first, full, mlp) != LC_KEEP_ALL;
    shared |= g16 && scratch;
    float *gus = shared ? take(&off, base, N * I) : NULL;
    if (train)
        for (int l = first; l < L; l++) {
            int k = block_keep(l, L, first, full, mlp);
            lc_acts *s = a ? &a->saved[l] : NULL;
            if (k == LC_KEEP_INPUT) {
                float *x = take(&off, base, N * C);
                if (s) s->x = x;
            } else {
                acts_layout(&off, base, c, lora, B, T, true, true, xn, h, k == LC_KEEP_ALL && !pack ? NULL : kgu,
                            k == LC_KEEP_ALL, att16, k == LC_KEEP_ALL ? NULL : gus, g16, s);
            }
            if (s) s->keep = k;
        }
    if (scratch)
        acts_layout(&off, base, c, lora, B, T, false, train, xn, h, kgu, false, att16, gus, g16,
                    a ? &a->scratch : NULL);
    float *xpp0 = NULL, *xpp1 = NULL;
    if (!train || first > 0) xpp0 = take(&off, base, N * C), xpp1 = take(&off, base, N * C);
    float *xf = take(&off, base, N * C), *rstdf = take(&off, base, N), *xnf = take(&off, base, N * C);
    // Rows of logits at a time (up to 64 MiB): every chunk converts the whole lm_head
    // twice (forward and input gradient), so fewer chunks convert less.
    int64_t chunk = (int64_t)((1u << 24) / V);
    if (chunk < 16) chunk = 16;
    if (chunk > (int64_t)N) chunk = (int64_t)N;
    // in training, the backward's bf16 copies of dres and dq|dk|dv (with the adapters'
    // spare columns, dx_fold) go into the chunk after xn16's (dy16): it grows to hold them
    // (at the 7B shape by N · r bf16 at 8 × 512 rows; at 4 × 2048, twice 64 MiB); with bf16
    // gate/up, xn16's rows hold u_gate | u_up too (2 r more: gate/up's fold, gu_fold_on)
    size_t room = (size_t)chunk * V, g = I > 2 * HD + 2 * KVD ? I : 2 * HD + 2 * KVD;
    if (train && d16 && lora && lora->rank > 0 && lora->dropout <= 0) {
        size_t r = (size_t)lora->rank, used = (N * (2 * HD + 2 * KVD) + 15) & ~(size_t)15;
        size_t xk = g16 ? 2 * r : 0, half = ((N * (C + xk) + 1) / 2 + 15) & ~(size_t)15;
        size_t hr = ((N * (C + r) + 1) / 2 + 15) & ~(size_t)15;
        size_t q1 = (N * (HD + 2 * KVD + 3 * r) + 1) / 2, need = half + hr + (N * g >= used + q1 ? 0 : q1);
        if (need > room) room = need;
    }
    float *logits = take(&off, base, room);
    float *dres = NULL, *dxn = NULL, *g1 = NULL, *du = NULL, *lg = NULL, *xd = NULL;
    if (train) {
        dres = take(&off, base, N * C);
        dxn = take(&off, base, N * C);
        g1 = take(&off, base, N * g); // dh (dgate in h, dup over dh), or datt|dq|dk|dv
        if (lora && lora->rank > 0) {
            du = take(&off, base, 3 * N * (size_t)lora->rank); // q, k, v at once
            lg = take(&off, base, 6 * C * (size_t)lora->rank); // projs_group's A and ga
        }
        if (lora && lora->dropout > 0) {
            size_t mx = C > I ? C : I;
            xd = take(&off, base, N * (mx > HD ? mx : HD));
        }
    }
    int32_t *tok = (int32_t *)take(&off, base, N), *tgt = (int32_t *)take(&off, base, N);
    if (a && base) {
        a->xpp[0] = xpp0, a->xpp[1] = xpp1, a->gus = gus;
        a->xf = xf, a->rstdf = rstdf, a->xnf = xnf, a->logits = logits, a->chunk = chunk, a->room = room;
        a->dres = dres, a->dxn = dxn, a->g1 = g1, a->du = du, a->lg = lg, a->xd = xd, a->tok = tok, a->tgt = tgt;
    }
    return off;
}

bool lc_model_packs_gate_up(const lc_model *m) {
    const char *e = getenv("LORAC_PACK_GATE_UP");
    if ((e && !strcmp(e, "0")) || !m->be->swiglu_pack || !m->be->swiglu_bwd_packed) return false;
    int L = (int)m->cfg.num_hidden_layers;
    if (L - m->first <= 2) return false; // the shared float32 pair costs what two blocks save
    for (int l = 0; l < L; l++) // products over float32 weights stay float32 throughout
        for (int k = LC_KEY_GATE; k <= LC_KEY_UP; k++)
            if (!m->blocks[l].w[k].q && m->blocks[l].w[k].dtype == LC_DT_F32) return false;
    return true;
}

bool lc_model_packs_h(const lc_model *m, const lc_wt *down) {
    const char *e = getenv("LORAC_PACKED_H");
    return !(e && !strcmp(e, "0")) && m->be->matmul_n_b && !down->q && down->dtype == LC_DT_BF16;
}

bool lc_model_packs_dy(const lc_model *m) {
    const char *e = getenv("LORAC_PACKED_DY");
    return !(e && !strcmp(e, "0")) && m->be->swiglu_bwd_packed_b && m->be->matmul_dx_b;
}

bool lc_model_lora_tf32(const lc_model *m) {
    const char *e = getenv("LORAC_LORA_TF32");
    if ((e && !strcmp(e, "0")) || strcmp(m->be->name, "cuda") != 0) return false;
    for (int64_t l = 0; l < m->cfg.num_hidden_layers; l++)
        for (int k = 0; k < LC_NKEYS; k++)
            if (!m->blocks[l].w[k].q && m->blocks[l].w[k].dtype == LC_DT_F32) return false;
    return true;
}

bool lc_model_dy16_adapters(const lc_model *m) {
    const char *e = getenv("LORAC_PACKED_DY_ADAPTERS");
    return !(e && !strcmp(e, "0")) && m->be->gemm_b && lc_model_packs_dy(m);
}

bool lc_model_h16_ga(const lc_model *m) {
    const char *e = getenv("LORAC_PACKED_H_GA");
    return !(e && !strcmp(e, "0")) && lc_model_dy16_adapters(m);
}

/* Whether the backward's dh (down's input gradient) is written only as bf16 — down's folded
 * input-gradient product rounding its sums (->matmul_dx_bo) and SwiGLU's backward reading
 * them (->swiglu_bwd_packed_bb), as PyTorch's bf16 layers hand their input gradients on —
 * over down's plain bf16 weight w; LORAC_DH16=0 keeps float32 dh. */
static bool dh16_on(const lc_model *m, const lc_wt *w) {
    const char *e = getenv("LORAC_DH16");
    return !(e && !strcmp(e, "0")) && m->be->matmul_dx_bo && m->be->swiglu_bwd_packed_bb && !w->q &&
           w->dtype == LC_DT_BF16;
}

bool lc_model_att16(const lc_model *m) {
    const char *e = getenv("LORAC_PACKED_ATT");
    lc_backend *be = m->be;
    if ((e && !strcmp(e, "0")) || !be->attention_b || !be->attention_bwd_b || !be->rope_b || !be->to_bf16 ||
        !be->matmul_n_b || !be->gemm_b || m->lcfg.dropout > 0)
        return false;
    for (int64_t l = 0; l < m->cfg.num_hidden_layers; l++)
        if (m->blocks[l].w[LC_KEY_O].q || m->blocks[l].w[LC_KEY_O].dtype != LC_DT_BF16) return false;
    return true;
}

bool lc_model_folds_gate_up(const lc_model *m) {
    const char *e = getenv("LORAC_FOLD_GATE_UP");
    return !(e && !strcmp(e, "0")) && m->be->swiglu_lora && m->lcfg.dropout <= 0 && m->lcfg.rank <= 32;
}

bool lc_model_gu16(const lc_model *m) {
    const char *e = getenv("LORAC_GU16");
    if ((e && !strcmp(e, "0")) || !m->be->matmul_n_bo || !lc_model_packs_gate_up(m) || !lc_model_folds_gate_up(m) ||
        !lc_model_dy16_adapters(m))
        return false;
    for (int64_t l = 0; l < m->cfg.num_hidden_layers; l++)
        for (int k = LC_KEY_GATE; k <= LC_KEY_UP; k++)
            if (m->blocks[l].w[k].q || m->blocks[l].w[k].dtype != LC_DT_BF16) return false;
    return true;
}

size_t lc_model_activation_bytes(const lc_model *m, int64_t B, int64_t T, int full, int mlp) {
    int L = (int)m->cfg.num_hidden_layers, f, g;
    recompute_norm(L, m->first, full, mlp, &f, &g);
    return arena_layout(&m->cfg, m->has_lora ? &m->lcfg : NULL, LC_MODE_TRAIN, B, T, f, g,
                        lc_model_packs_gate_up(m), lc_model_att16(m), m->be->rmsnorm_bwd_b != NULL, lc_model_gu16(m),
                        NULL) *
           sizeof(float);
}

/* Whether evaluation takes the bf16 attention operands too (lc_model_att16): its forward
 * puts q, k, v in float32 in h first (free until the MLP half), which must hold them. */
static bool eval_att16(const lc_model *m) {
    const lc_model_config *c = &m->cfg;
    return lc_model_att16(m) &&
           c->intermediate_size >= (c->num_attention_heads + 2 * c->num_key_value_heads) * c->head_dim;
}

size_t lc_model_eval_bytes(const lc_model *m, int64_t B, int64_t T) {
    return arena_layout(&m->cfg, m->has_lora ? &m->lcfg : NULL, LC_MODE_EVAL, B, T, 0, 0, false, eval_att16(m),
                        false, false, NULL) *
           sizeof(float);
}

/* What the backward recomputes with normalized counts (full, mlp), in blocks' forwards:
 * a whole forward 1, gate/up alone 0.7 (a recomputed forward skips down's product, so
 * gate's and up's are ~0.74 of its matrix work; measured on an H100 at 8 × 512 over a 7B
 * shape: 3.47 and 2.38 ms a block, 0.69). The top block recomputes nothing. */
static double recompute_cost(int L, int first, int full, int mlp) {
    double c = 0;
    for (int l = first; l < L - 1; l++) {
        int k = block_keep(l, L, first, full, mlp);
        c += k == LC_KEEP_INPUT ? 1.0 : k == LC_KEEP_NO_MLP ? 0.7 : 0.0;
    }
    return c;
}

int lc_model_fit_recompute(const lc_model *m, int64_t B, int64_t T, size_t budget, int *full, int *mlp) {
    int L = (int)m->cfg.num_hidden_layers, n = L - m->first, bf = n, bg = 0;
    double best = -1;
    size_t best_bytes = 0;
    for (int f0 = 0; f0 <= n; f0++)
        for (int g0 = 0; g0 <= n - f0; g0++) {
            int f, g;
            recompute_norm(L, m->first, f0, g0, &f, &g);
            if (f != f0 || g != g0) continue; // the same layout as a normalized pair
            size_t b = lc_model_activation_bytes(m, B, T, f, g);
            if (b > budget) continue;
            double c = recompute_cost(L, m->first, f, g);
            if (best < 0 || c < best - 1e-9 || (c < best + 1e-9 && b < best_bytes))
                best = c, best_bytes = b, bf = f, bg = g;
        }
    *full = bf, *mlp = bg;
    return best < 0 ? -1 : 0;
}

lc_arena *lc_arena_prepare(lc_model *m, int mode, int64_t B, int64_t T) {
    bool train = mode == LC_MODE_TRAIN, pack = train && lc_model_packs_gate_up(m), g16 = pack && lc_model_gu16(m);
    bool att16 = train ? lc_model_att16(m) : mode == LC_MODE_EVAL && eval_att16(m);
    mode = train ? LC_MODE_TRAIN : LC_MODE_EVAL; // decoding lays out in evaluation's arena
    lc_arena *a = &m->ar[mode];
    int full = 0, mlp = 0;
    if (train) recompute_norm((int)m->cfg.num_hidden_layers, m->first, m->rc_full, m->rc_mlp, &full, &mlp);
    if (a->base && a->B == B && a->T == T && a->full == full && a->mlp == mlp && a->pack == pack &&
        a->att16 == att16 && a->g16 == g16)
        return a;
    const lc_lora_config *lora = m->has_lora ? &m->lcfg : NULL;
    bool d16 = train && m->be->rmsnorm_bwd_b;
    size_t need = arena_layout(&m->cfg, lora, mode, B, T, full, mlp, pack, att16, d16, g16, NULL);
    // Both modes lay out in the model's one buffer: evaluation (and decoding) runs between
    // training steps, never inside one, and a step keeps nothing in its arena from one step
    // to the next, so validating costs no memory beside training's. A layout that fits
    // keeps the buffer (its pointers, and so the recorded steps of every shape laid out in
    // it, stay valid: real training varies T step to step); a larger one replaces it, and
    // the other mode lays out again when next used.
    if (need > m->arena_cap) {
        if (m->arena) m->be->release(m->be, m->arena);
        m->arena = m->be->alloc(m->be, need * sizeof(float)), m->arena_cap = need;
        lc_arena *o = &m->ar[!mode];
        free(o->saved);
        memset(o, 0, sizeof *o);
    }
    free(a->saved);
    memset(a, 0, sizeof *a);
    a->mode = mode, a->B = B, a->T = T, a->full = full, a->mlp = mlp, a->pack = pack, a->att16 = att16, a->g16 = g16;
    a->floats = need, a->base = m->arena;
    a->saved = xcalloc((size_t)m->cfg.num_hidden_layers, sizeof *a->saved);
    arena_layout(&m->cfg, lora, mode, B, T, full, mlp, pack, att16, d16, g16, a);
    return a;
}

static size_t lora_floats(const lc_model_config *c, const lc_lora_config *lora) {
    int L = (int)c->num_hidden_layers, first = lc_lora_first_layer(c, lora);
    size_t n = 0;
    for (int l = first; l < L; l++)
        for (int k = 0; k < LC_NKEYS; k++)
            if (lora->keys & (1u << k)) {
                int64_t in, out;
                lc_lora_key_dims(c, (lc_lora_key)k, &in, &out);
                n += (size_t)((in + out) * lora->rank);
            }
    return n;
}

size_t lc_model_weight_plan(const lc_model_config *cfg) {
    lc_dtype dt = cfg->has_dtype ? cfg->dtype : LC_DT_F32;
    const lc_quant_config *q = &cfg->quant;
    lc_param_spec *s;
    size_t n = lc_config_tensors(cfg, &s), total = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t rows = s[i].shape[0], cols = s[i].ndim > 1 ? s[i].shape[1] : 1;
        bool emb = !strcmp(s[i].name, "model.embed_tokens.weight") || !strcmp(s[i].name, "lm_head.weight");
        if (q->fmt != LC_QUANT_NONE && s[i].ndim == 2 && (!emb || q->embeddings))
            total += lc_wq_total_bytes(q->fmt, q->bits, q->group_size, dt, rows, cols);
        else
            total += (size_t)(rows * cols) * lc_dtype_size(dt);
    }
    free(s);
    return total;
}

int lc_model_memory_plan(const lc_model_config *cfg, const lc_lora_config *lora, int64_t B,
                         int64_t T, bool grad_checkpoint, lc_memory_plan *plan) {
    if (B <= 0 || T <= 0)
        return lc_fail("memory plan: batch size (%lld) and sequence length (%lld) must be positive",
                       (long long)B, (long long)T);
    memset(plan, 0, sizeof *plan);
    plan->weights = lc_model_weight_plan(cfg);
    if (lora && lc_lora_first_layer(cfg, lora) < cfg->num_hidden_layers)
        plan->adapters = lora_floats(cfg, lora) * sizeof(float);
    plan->gradients = plan->adapters;
    plan->optimizer = 2 * plan->adapters;
    int L = (int)cfg->num_hidden_layers, full, mlp;
    recompute_norm(L, lc_lora_first_layer(cfg, lora), grad_checkpoint ? -1 : 0, 0, &full, &mlp);
    plan->activations = arena_layout(cfg, lora, LC_MODE_TRAIN, B, T, full, mlp, false, false, false, false, NULL) *
                        sizeof(float);
    plan->total = plan->weights + plan->adapters + plan->gradients + plan->optimizer + plan->activations;
    return 0;
}

/* ------------------------------------------------------------ loading */

static const char *KEY_PATH[LC_NKEYS] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                         "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                         "mlp.down_proj"};

static const lc_tensor *need(lc_model *m, const char *name, const char *dir) {
    const lc_tensor *t = lc_st_find(&m->st, name);
    if (!t) lc_fail("%s: tensor '%s' is missing", dir, name);
    return t;
}

/* ---- quantized weights stored in the folder ---- */

static const lc_tensor *companion(lc_model *m, const char *base, const char *suffix, const char *dir,
                                  const char *name) {
    char n[256];
    snprintf(n, sizeof n, "%s%s", base, suffix);
    const lc_tensor *t = lc_st_find(&m->st, n);
    if (!t) lc_fail("%s: quantized weight '%s' has no '%s' beside it", dir, name, n);
    return t;
}

static bool is_float(lc_dtype d) { return d == LC_DT_F32 || d == LC_DT_F16 || d == LC_DT_BF16; }

/* MLX affine: weight (rows, cols*bits/32) U32, X.scales / X.biases (rows, cols/group). */
static int affine_of(lc_model *m, const lc_tensor *t, const char *name, const char *dir, int64_t rows,
                     int64_t cols, lc_wquant *q) {
    char base[200], a[64], b[64];
    size_t n = strlen(name) - strlen(".weight");
    snprintf(base, sizeof base, "%.*s", (int)n, name);
    const lc_tensor *sc = companion(m, base, ".scales", dir, name), *bi = sc ? companion(m, base, ".biases", dir, name) : NULL;
    if (!bi) return -1;
    int64_t words = t->ndim == 2 ? t->shape[1] : 0;
    if (t->ndim != 2 || t->shape[0] != rows || words <= 0 || (words * 32) % cols)
        return lc_fail("%s: quantized weight '%s' has shape %s; a (%lld, %lld) matrix packs into "
                       "(%lld, %lld × bits / 32) uint32 words (is config.json's quantization right?)",
                       dir, name, lc_shape_str(a, sizeof a, t->ndim, t->shape), (long long)rows,
                       (long long)cols, (long long)rows, (long long)cols);
    int64_t bits = words * 32 / cols;
    if (bits != 2 && bits != 4 && bits != 8)
        return lc_fail("%s: quantized weight '%s' holds %lld-bit codes; lorac reads 2, 4 and 8 bits",
                       dir, name, (long long)bits);
    int64_t ng = sc->ndim == 2 ? sc->shape[1] : 0;
    if (sc->ndim != 2 || sc->shape[0] != rows || ng <= 0 || cols % ng ||
        (cols / ng != 32 && cols / ng != 64 && cols / ng != 128))
        return lc_fail("%s: '%s.scales' has shape %s; for %lld columns in groups of 32, 64 or 128 it "
                       "must be (%lld, %lld / group_size)",
                       dir, base, lc_shape_str(a, sizeof a, sc->ndim, sc->shape), (long long)cols,
                       (long long)rows, (long long)cols);
    if (bi->ndim != 2 || bi->shape[0] != sc->shape[0] || bi->shape[1] != ng || bi->dtype != sc->dtype ||
        !is_float(sc->dtype))
        return lc_fail("%s: '%s.biases' is %s %s and '%s.scales' %s %s; both must be the same "
                       "F32/F16/BF16 shape",
                       dir, base, lc_dtype_name(bi->dtype), lc_shape_str(a, sizeof a, bi->ndim, bi->shape),
                       base, lc_dtype_name(sc->dtype), lc_shape_str(b, sizeof b, sc->ndim, sc->shape));
    *q = (lc_wquant){.fmt = LC_QUANT_AFFINE, .bits = (int)bits, .group = cols / ng,
                     .scales = sc->data, .biases = bi->data, .sdtype = sc->dtype};
    return 0;
}

/* bitsandbytes NF4/FP4: weight (ceil(n/2), 1) U8 with X.weight.absmax, .quant_map,
 * .quant_state.bitsandbytes__nf4 (JSON bytes) and, double-quantized, .nested_absmax and
 * .nested_quant_map. */
static int bnb_of(lc_model *m, const lc_tensor *t, const char *name, const char *dir, int64_t rows,
                  int64_t cols, lc_wquant *q) {
    char a[64];
    size_t n = (size_t)rows * (size_t)cols;
    if (t->numel != (n + 1) / 2)
        return lc_fail("%s: 4-bit weight '%s' holds %zu bytes; a (%lld, %lld) matrix needs %zu",
                       dir, name, t->numel, (long long)rows, (long long)cols, (n + 1) / 2);
    char qsname[256];
    snprintf(qsname, sizeof qsname, "%s.quant_state.bitsandbytes__nf4", name);
    const lc_tensor *qs = lc_st_find(&m->st, qsname);
    if (!qs) {
        snprintf(qsname, sizeof qsname, "%s.quant_state.bitsandbytes__fp4", name);
        qs = lc_st_find(&m->st, qsname);
    }
    if (!qs || qs->dtype != LC_DT_U8)
        return lc_fail("%s: 4-bit weight '%s' has no uint8 '%s.quant_state.bitsandbytes__nf4' beside "
                       "it (is it a bitsandbytes checkpoint?)",
                       dir, name, name);
    cJSON *js;
    if (lc_json_parse((const char *)qs->data, qs->numel, qsname, &js) != 0) return -1;
    int64_t block = 64, block2 = 256;
    double offset = 0;
    const cJSON *shape = NULL;
    int rc = 0;
    if (lc_json_int(js, "blocksize", &block, qsname) < 0 ||
        lc_json_int(js, "nested_blocksize", &block2, qsname) < 0 ||
        lc_json_num(js, "nested_offset", &offset, qsname) < 0 || lc_json_arr(js, "shape", &shape, qsname) < 0)
        rc = -1;
    if (rc == 0 && (!shape || cJSON_GetArraySize(shape) != 2 ||
                    cJSON_GetArrayItem(shape, 0)->valuedouble != (double)rows ||
                    cJSON_GetArrayItem(shape, 1)->valuedouble != (double)cols))
        rc = lc_fail("%s: its \"shape\" is not [%lld, %lld] (the shape config.json implies)", qsname,
                     (long long)rows, (long long)cols);
    if (rc == 0 && (block <= 0 || block % 2 || block > (1 << 20) || block2 <= 0 || block2 > (1 << 20)))
        rc = lc_fail("%s: blocksize %lld / nested_blocksize %lld are not usable block sizes", qsname,
                     (long long)block, (long long)block2);
    bool nested = cJSON_GetObjectItemCaseSensitive(js, "nested_absmax") ||
                  cJSON_GetObjectItemCaseSensitive(js, "nested_offset");
    cJSON_Delete(js);
    if (rc) return -1;
    size_t nb = (n + (size_t)block - 1) / (size_t)block;
    const lc_tensor *am = companion(m, name, ".absmax", dir, name);
    const lc_tensor *map = am ? companion(m, name, ".quant_map", dir, name) : NULL;
    if (!map) return -1;
    if (map->dtype != LC_DT_F32 || map->numel != 16)
        return lc_fail("%s: '%s.quant_map' must be 16 F32 values (found %s %s)", dir, name,
                       lc_dtype_name(map->dtype), lc_shape_str(a, sizeof a, map->ndim, map->shape));
    *q = (lc_wquant){.fmt = LC_QUANT_NF4, .bits = 4, .group = block, .absmax = am->data,
                     .nested = nested, .block2 = block2, .offset = (float)offset};
    memcpy(q->code, map->data, sizeof q->code);
    if (am->numel != nb || am->dtype != (nested ? LC_DT_U8 : LC_DT_F32))
        return lc_fail("%s: '%s.absmax' must be %zu %s values (%zu blocks of %lld), found %s %s", dir,
                       name, nb, nested ? "U8" : "F32", nb, (long long)block, lc_dtype_name(am->dtype),
                       lc_shape_str(a, sizeof a, am->ndim, am->shape));
    if (!nested) return 0;
    const lc_tensor *na = companion(m, name, ".nested_absmax", dir, name);
    const lc_tensor *nm = na ? companion(m, name, ".nested_quant_map", dir, name) : NULL;
    if (!nm) return -1;
    size_t nb2 = (nb + (size_t)block2 - 1) / (size_t)block2;
    if (na->dtype != LC_DT_F32 || na->numel != nb2)
        return lc_fail("%s: '%s.nested_absmax' must be %zu F32 values, found %s %s", dir, name, nb2,
                       lc_dtype_name(na->dtype), lc_shape_str(a, sizeof a, na->ndim, na->shape));
    if (nm->dtype != LC_DT_F32 || nm->numel != 256)
        return lc_fail("%s: '%s.nested_quant_map' must be 256 F32 values, found %s %s", dir, name,
                       lc_dtype_name(nm->dtype), lc_shape_str(a, sizeof a, nm->ndim, nm->shape));
    q->absmax2 = na->data;
    memcpy(q->code2, nm->data, sizeof q->code2);
    return 0;
}

/* ---- quantizing at load time ---- */

static void *own(lc_model *m, size_t bytes) {
    void *p = xmalloc(bytes ? bytes : 1);
    m->owned = xrealloc(m->owned, (m->n_owned + 1) * sizeof *m->owned);
    m->owned[m->n_owned++] = p;
    m->wbytes += bytes;
    m->owned_bytes += bytes;
    return p;
}

void *lc_model_own(lc_model *m, size_t bytes) { return own(m, bytes); }

/* Lets the kernel drop the mapped pages of a tensor already converted (they are read
 * again from the file if ever needed), so a model quantized at load never has its whole
 * file resident. */
static void release_pages(const lc_tensor *t) {
    long pg = sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)t->data + (uintptr_t)pg - 1) & ~((uintptr_t)pg - 1);
    uintptr_t e = ((uintptr_t)t->data + t->nbytes) & ~((uintptr_t)pg - 1);
    if (e > a) madvise((void *)a, e - a, MADV_DONTNEED);
}

/* Quantizes a float tensor (rows, cols) per qc into memory the model owns, 64 rows at
 * a time through a float32 panel. */
static int quantize_weight(lc_model *m, const lc_tensor *t, const char *name, const char *dir,
                           int64_t rows, int64_t cols, const lc_quant_config *qc, lc_wt *w,
                           lc_wquant *q) {
    if (qc->fmt == LC_QUANT_AFFINE && cols % qc->group_size)
        return lc_fail("%s: '%s' has %lld columns, not a multiple of the group size %lld; use "
                       "--quantize nf4 or a group size that divides it",
                       dir, name, (long long)cols, (long long)qc->group_size);
    const int64_t P = 64;
    float *panel = xmalloc((size_t)P * (size_t)cols * sizeof(float));
    size_t n = (size_t)rows * (size_t)cols, es = lc_dtype_size(t->dtype);
    void *codes = own(m, lc_wq_code_bytes(qc->fmt, qc->bits, rows, cols));
    if (qc->fmt == LC_QUANT_AFFINE) {
        size_t ng = n / (size_t)qc->group_size, ses = lc_dtype_size(t->dtype);
        void *sc = own(m, ng * ses), *bi = own(m, ng * ses);
        for (int64_t r0 = 0; r0 < rows; r0 += P) {
            int64_t nr = rows - r0 < P ? rows - r0 : P;
            size_t off = (size_t)r0 * (size_t)cols;
            lc_to_f32(panel, (const unsigned char *)t->data + off * es, t->dtype, (size_t)nr * (size_t)cols);
            size_t g0 = off / (size_t)qc->group_size;
            lc_quant_affine((uint32_t *)codes + off * (size_t)qc->bits / 32, (char *)sc + g0 * ses,
                            (char *)bi + g0 * ses, t->dtype, panel, nr, cols, qc->bits, qc->group_size);
        }
        *q = (lc_wquant){.fmt = LC_QUANT_AFFINE, .bits = qc->bits, .group = qc->group_size,
                         .scales = sc, .biases = bi, .sdtype = t->dtype};
    } else {
        size_t G = (size_t)qc->group_size, nb = (n + G - 1) / G;
        float *am = xmalloc(nb * sizeof(float));
        for (int64_t r0 = 0; r0 < rows; r0 += P) { // P*cols is a multiple of 64: whole blocks
            int64_t nr = rows - r0 < P ? rows - r0 : P;
            size_t off = (size_t)r0 * (size_t)cols, len = (size_t)nr * (size_t)cols;
            lc_to_f32(panel, (const unsigned char *)t->data + off * es, t->dtype, len);
            lc_quant_nf4((uint8_t *)codes + off / 2, am + off / G, panel, len, qc->group_size);
        }
        *q = (lc_wquant){.fmt = LC_QUANT_NF4, .bits = 4, .group = qc->group_size};
        memcpy(q->code, LC_NF4_CODE, sizeof q->code);
        if (qc->nested) {
            q->nested = true, q->block2 = 256;
            lc_quant_dynamic_map(q->code2);
            uint8_t *qa = own(m, nb);
            float *a2 = own(m, (nb + 255) / 256 * sizeof(float));
            lc_quant_nf4_nest(qa, a2, &q->offset, am, nb, 256, q->code2);
            q->absmax = qa, q->absmax2 = a2;
            free(am);
        } else {
            m->owned = xrealloc(m->owned, (m->n_owned + 1) * sizeof *m->owned);
            m->owned[m->n_owned++] = am;
            m->wbytes += nb * sizeof(float);
            m->owned_bytes += nb * sizeof(float);
            q->absmax = am;
        }
    }
    free(panel);
    release_pages(t);
    w->data = codes, w->dtype = qc->fmt == LC_QUANT_AFFINE ? LC_DT_U32 : LC_DT_U8;
    w->rows = rows, w->cols = cols, w->q = q;
    return 0;
}

/* The 2-D weight `name` (rows, cols): mapped as stored (float or quantized), or quantized
 * now when qc asks for it. */
static int weight_load(lc_model *m, const char *name, const char *dir, int64_t rows, int64_t cols,
                       const lc_quant_config *qc, lc_wt *w) {
    const lc_tensor *t = need(m, name, dir);
    if (!t) return -1;
    *w = (lc_wt){t->data, t->dtype, rows, cols, NULL, 0};
    if (is_float(t->dtype)) {
        if (!qc || qc->fmt == LC_QUANT_NONE) {
            m->wbytes += t->nbytes;
            return 0;
        }
        return quantize_weight(m, t, name, dir, rows, cols, qc, w, &m->wq[m->n_wq++]);
    }
    lc_wquant *q = &m->wq[m->n_wq];
    int rc;
    if (t->dtype == LC_DT_U32 && m->cfg.quant.fmt == LC_QUANT_AFFINE) rc = affine_of(m, t, name, dir, rows, cols, q);
    else if (t->dtype == LC_DT_U8 && m->cfg.quant.fmt == LC_QUANT_NF4) rc = bnb_of(m, t, name, dir, rows, cols, q);
    else
        return lc_fail("%s: tensor '%s' is %s, which does not match config.json's quantization (%s)",
                       dir, name, lc_dtype_name(t->dtype),
                       m->cfg.quant.fmt == LC_QUANT_NONE ? "none" : m->cfg.quant.fmt == LC_QUANT_NF4 ? "bitsandbytes 4-bit" : "MLX affine");
    if (rc) return -1;
    m->n_wq++;
    w->q = q;
    m->wbytes += lc_wq_total_bytes(q->fmt, q->bits, q->group, q->sdtype, rows, cols);
    return 0;
}

/* weight_load, then made usable by the backend (copied to the card for CUDA; quantized
 * weights go as their codes and companions). */
static int weight_of(lc_model *m, const char *name, const char *dir, int64_t rows, int64_t cols,
                     const lc_quant_config *qc, lc_wt *w) {
    if (weight_load(m, name, dir, rows, cols, qc, w) != 0) return -1;
    if (m->be->weight(m->be, w) != 0) return lc_fail_prefix("%s: %s", dir, name);
    return 0;
}

/* An fp32 copy of a small tensor (a norm weight or a bias) in backend memory. */
static float *vec_of(lc_model *m, const char *name, const char *dir) {
    const lc_tensor *t = need(m, name, dir);
    if (!t) return NULL;
    float *host = xmalloc(t->numel * sizeof(float));
    lc_to_f32(host, t->data, t->dtype, t->numel);
    float *d = m->be->alloc(m->be, t->numel * sizeof(float));
    m->be->upload(m->be, d, host, t->numel * sizeof(float));
    free(host);
    return d;
}

int lc_model_load(const char *dir, lc_model **out) { return lc_model_load_opts(dir, NULL, out); }

int lc_model_load_on(const char *dir, const char *device, lc_model **out) {
    lc_load_options o = {.device = device};
    return lc_model_load_opts(dir, &o, out);
}

int lc_model_load_opts(const char *dir, const lc_load_options *o, lc_model **out) {
    const char *device = o && o->device ? o->device : "cpu";
    *out = NULL;
    lc_model *m = xcalloc(1, sizeof *m);
    if (lc_config_load(&m->cfg, dir) < 0 || lc_st_open(&m->st, dir) < 0 ||
        lc_config_check_weights(&m->cfg, &m->st, dir) < 0 || !(m->be = lc_backend_new(device))) {
        lc_model_free(m);
        return -1;
    }
    lc_model_config *c = &m->cfg;
    const lc_quant_config *want = o && o->quantize.fmt != LC_QUANT_NONE ? &o->quantize : NULL;
    if (want && c->quant.fmt != LC_QUANT_NONE) {
        char a[64];
        lc_fail("%s: the model is already quantized (%s); drop --quantize (or quantize the "
                "original bf16 model)",
                dir, lc_quant_name(&c->quant, a, sizeof a));
        lc_model_free(m);
        return -1;
    }
    if (!strcmp(m->be->name, "cpu")) {
        /* LORAC_MATMUL=fp32 keeps every product in float32 (exact fp32 math over bf16 weights) */
        const char *mm = getenv("LORAC_MATMUL");
        lc_backend_cpu_set_bf16(m->be, !(mm && !strcmp(mm, "fp32")));
    }
    int L = (int)c->num_hidden_layers;
    m->first = L;
    m->blocks = xcalloc((size_t)L, sizeof *m->blocks);
    m->wq = xcalloc((size_t)L * LC_NKEYS + 2, sizeof *m->wq);
    const lc_quant_config *eq = want && o->quantize_embeddings ? want : NULL;
    char name[160];
    int64_t V = c->vocab_size, C = c->hidden_size;
    int rc = weight_of(m, "model.embed_tokens.weight", dir, V, C, eq, &m->embed);
    if (rc == 0 && !c->tie_word_embeddings) rc = weight_of(m, "lm_head.weight", dir, V, C, eq, &m->lm_head);
    else m->lm_head = m->embed;
    if (rc == 0 && !(m->norm_f = vec_of(m, "model.norm.weight", dir))) rc = -1;
    for (int l = 0; l < L && rc == 0; l++) {
        lc_block *b = &m->blocks[l];
        // q, k and v first read, then placed together where the backend can (weight_n)
        for (int k = 0; k < 3 && rc == 0; k++) {
            int64_t in, outd;
            lc_lora_key_dims(c, (lc_lora_key)k, &in, &outd);
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, KEY_PATH[k]);
            rc = weight_load(m, name, dir, outd, in, want, &b->w[k]);
        }
        lc_wt *w3[3] = {&b->w[0], &b->w[1], &b->w[2]};
        int placed = rc == 0 && m->be->weight_n ? m->be->weight_n(m->be, 3, w3) : 1;
        if (placed < 0) rc = lc_fail_prefix("%s: layer %d's q, k, v", dir, l);
        if (placed == 0) {
            b->qkv = b->w[0];
            b->qkv.rows = b->w[0].rows + b->w[1].rows + b->w[2].rows;
        }
        for (int k = 0; k < LC_NKEYS && rc == 0; k++) {
            int64_t in, outd;
            lc_lora_key_dims(c, (lc_lora_key)k, &in, &outd);
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, KEY_PATH[k]);
            if (k >= 3) rc = weight_of(m, name, dir, outd, in, want, &b->w[k]);
            else if (placed == 1 && m->be->weight(m->be, &b->w[k]) != 0) rc = lc_fail_prefix("%s: %s", dir, name);
            if (rc == 0 && k < 3 && c->attention_bias) {
                snprintf(name, sizeof name, "model.layers.%d.%s.bias", l, KEY_PATH[k]);
                if (!(b->bias[k] = vec_of(m, name, dir))) rc = -1;
            }
        }
        snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
        if (rc == 0 && !(b->ln1 = vec_of(m, name, dir))) rc = -1;
        snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", l);
        if (rc == 0 && !(b->ln2 = vec_of(m, name, dir))) rc = -1;
    }
    if (rc < 0) {
        lc_model_free(m);
        return -1;
    }
    // the config now says how the weights are held (the memory plan reads it)
    if (want) c->quant = *want;
    if (c->quant.fmt != LC_QUANT_NONE) c->quant.embeddings = m->embed.q != NULL;
    if (c->quant.fmt != LC_QUANT_NONE && m->n_wq > 0) {
        const lc_wquant *q = m->blocks[0].w[0].q ? m->blocks[0].w[0].q : &m->wq[0];
        c->quant.bits = q->bits, c->quant.group_size = q->group;
        if (q->fmt == LC_QUANT_NF4) c->quant.nested = q->nested;
    }
    *out = m;
    return 0;
}

size_t lc_model_weight_bytes(const lc_model *m) { return m->wbytes; }

size_t lc_model_owned_weight_bytes(const lc_model *m) { return m->owned_bytes; }

const lc_wt *lc_model_weight(const lc_model *m, int l, int key) {
    if (l == -1 && key == 0) return &m->embed;
    if (l == -1 && key == 1) return &m->lm_head;
    if (l < 0 || l >= m->cfg.num_hidden_layers || key < 0 || key >= LC_NKEYS) return NULL;
    return &m->blocks[l].w[key];
}

void lc_model_free(lc_model *m) {
    if (!m) return;
    lc_backend *be = m->be;
    if (be) {
        be->release(be, m->arena);
        if (m->blocks)
            for (int l = 0; l < m->cfg.num_hidden_layers; l++) {
                lc_block *b = &m->blocks[l];
                be->release(be, b->ln1), be->release(be, b->ln2);
                for (int k = 0; k < 3; k++) be->release(be, b->bias[k]);
            }
        be->release(be, m->norm_f);
        be->release(be, m->rope_cos), be->release(be, m->rope_sin);
        be->release(be, m->lora_mem), be->release(be, m->grad_mem);
        be->release(be, m->scal);
        be->free(be);
    }
    for (int mode = 0; mode < 2; mode++) free(m->ar[mode].saved);
    for (size_t i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    free(m->wq);
    free(m->blocks);
    free(m->params);
    lc_st_close(&m->st);
    free(m);
}

const lc_model_config *lc_model_cfg(const lc_model *m) { return &m->cfg; }

void lc_model_set_grad_checkpoint(lc_model *m, bool on) { lc_model_set_recompute(m, on ? -1 : 0, 0); }

void lc_model_set_recompute(lc_model *m, int full, int mlp) { m->rc_full = full, m->rc_mlp = mlp; }

int lc_model_adapted_blocks(const lc_model *m) { return (int)m->cfg.num_hidden_layers - m->first; }

bool lc_model_set_bf16_matmul(lc_model *m, bool on) {
    if (strcmp(m->be->name, "cpu") != 0) return true; // CUDA: BF16 weights always multiply in bf16
    return lc_backend_cpu_set_bf16(m->be, on);
}

float *lc_model_shared_alloc(lc_model *m, size_t n) {
    return m->be->alloc_shared(m->be, n * sizeof(float));
}

void lc_model_shared_free(lc_model *m, float *p) { m->be->release(m->be, p); }

void lc_model_adam(lc_model *m, const lc_adam_args *a, float *p, const float *g, float *mo, float *v,
                   size_t n) {
    m->be->adam(m->be, p, g, mo, v, n, a);
}

int lc_model_sync(lc_model *m) { return m->be->sync(m->be); }

double lc_model_sumsq(lc_model *m, const float *x, size_t n) {
    if (m->be->sumsq) return m->be->sumsq(m->be, x, n);
    m->be->sync(m->be);
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return s;
}

void lc_model_scale(lc_model *m, float *x, float a, bool divide, size_t n) {
    if (m->be->scale) {
        m->be->scale(m->be, x, a, divide, n);
        return;
    }
    m->be->sync(m->be);
    for (size_t i = 0; i < n; i++) x[i] = divide ? x[i] / a : x[i] * a;
}

void lc_model_accumulate(lc_model *m, float *acc, const float *g, size_t n) { m->be->axpy(m->be, acc, 1.0f, g, n); }

void lc_model_zero(lc_model *m, float *x, size_t n) { m->be->zero(m->be, x, n); }

bool lc_model_all_finite(lc_model *m, const float *x, size_t n) {
    if (m->be->all_finite) return m->be->all_finite(m->be, x, n);
    m->be->sync(m->be);
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return false;
    return true;
}

bool lc_model_on_cpu(const lc_model *m) { return !strcmp(m->be->name, "cpu"); }

int lc_model_train_prepare(lc_model *m) { return lc_model_make_room(m); }

int lc_model_device_memory(const lc_model *m, size_t *free_bytes, size_t *total_bytes) {
    *free_bytes = *total_bytes = 0;
    if (!m->be->mem_info) return 0;
    return m->be->mem_info(m->be, free_bytes, total_bytes) == 0 ? 1 : -1;
}

size_t lc_model_scratch_bytes(const lc_model *m, int64_t B, int64_t T) {
    if (lc_model_on_cpu(m)) return 0;
    /* the card's: bf16 copies of a product's input and of its output gradient (the
     * widest: N × intermediate and N × hidden), the cuBLASLt workspace and small per-row
     * buffers, and the context with the kernels loaded (~0.5 GiB measured on an H100 as
     * the process's use before the first allocation, and 64 MiB for the kernels loaded as
     * they are first used: plans of 8 x 513 steps came out 0.04-0.05 GiB under the
     * measured peaks without it) */
    size_t N = (size_t)(B * T), C = (size_t)m->cfg.hidden_size, I = (size_t)m->cfg.intermediate_size;
    return N * (I + C) * 2 + ((size_t)96 << 20) + ((size_t)576 << 20);
}

const char *lc_model_device(const lc_model *m) {
    return m->be->device_name ? m->be->device_name : m->be->name;
}

int lc_check_ids(const lc_model *m, const int32_t *tok, const int32_t *tgt, int64_t B, int64_t T) {
    int64_t V = m->cfg.vocab_size;
    for (int64_t i = 0; i < B * T; i++) {
        if (tok[i] < 0 || tok[i] >= V)
            return lc_fail("batch: token id %d at row %lld, position %lld is outside the model's "
                           "vocabulary (0..%lld); is the tokenizer the model's own?",
                           tok[i], (long long)(i / T), (long long)(i % T), (long long)V - 1);
        if (tgt && (tgt[i] < -1 || tgt[i] >= V))
            return lc_fail("batch: target %d at row %lld, position %lld must be -1 (ignored) or a "
                           "token id below %lld",
                           tgt[i], (long long)(i / T), (long long)(i % T), (long long)V);
    }
    if (m->cfg.sliding_window > 0 && T > m->cfg.sliding_window)
        return lc_fail("batch: sequence length %lld exceeds the model's sliding_window (%lld), "
                       "which lorac does not implement; use --max-seq-length %lld or less",
                       (long long)T, (long long)m->cfg.sliding_window,
                       (long long)m->cfg.sliding_window);
    return 0;
}

static int check_batch(const lc_model *m, const lc_batch *b, bool need_targets) {
    if (b->B <= 0 || b->T <= 0 || !b->tokens || (need_targets && !b->targets))
        return lc_fail("batch: needs B > 0, T > 0, tokens%s (got B %lld, T %lld)",
                       need_targets ? " and targets" : "", (long long)b->B, (long long)b->T);
    if (b->B * b->T > INT32_MAX / 4)
        return lc_fail("batch: %lld × %lld tokens is too many for one step; lower the batch size",
                       (long long)b->B, (long long)b->T);
    return lc_check_ids(m, b->tokens, need_targets ? b->targets : NULL, b->B, b->T);
}

/* ------------------------------------------------------------ projections */

/* The dropout seed of one adapter in one step. */
static uint64_t drop_seed(uint64_t seed, int l, int k) {
    return seed * 0x9E3779B97F4A7C15ULL + (uint64_t)(l * LC_NKEYS + k + 1) * 0xD1B54A32D192ED03ULL;
}

/* out (N, out) (+)= x W^T + bias, plus the adapter's scale · (drop(x) A) B with A x
 * kept in u. */
static void proj_fwd(lc_model *m, lc_arena *a, float *out, bool acc, const float *x, const lc_wt *w,
                     const float *bias, lc_lora_param *p, float *u, int64_t N, bool train, uint64_t ds) {
    lc_backend *be = m->be;
    be->matmul(be, out, x, w, bias, N, acc);
    if (!p) return;
    const float *xin = x;
    if (train && m->lcfg.dropout > 0) {
        be->dropout(be, a->xd, x, (size_t)(N * p->in), m->lcfg.dropout, ds);
        xin = a->xd;
    }
    be->gemm(be, false, false, N, p->r, p->in, 1.0f, xin, p->in, p->a, p->r, 0.0f, u, p->r);
    be->gemm(be, false, false, N, p->out, p->r, m->lcfg.scale, u, p->r, p->b, p->out, 1.0f, out, p->out);
}

/* Backward of proj_fwd (train): ga, gb = their gradients; dx (N, in) (+)= dy W + the
 * adapter's path when need_dx. x NULL: ga is left to projs_ga (du stays in a->du). */
static void proj_bwd(lc_model *m, lc_arena *a, float *dx, bool acc, const float *dy, const float *x,
                     const lc_wt *w, lc_lora_param *p, const float *u, int64_t N, bool need_dx,
                     uint64_t ds) {
    lc_backend *be = m->be;
    float s = m->lcfg.scale;
    bool drop = m->lcfg.dropout > 0;
    if (p) {
        // forward: out += s · u b, u = xin a
        be->gemm(be, true, false, p->r, p->out, N, s, u, p->r, dy, p->out, 0.0f, p->gb, p->out); // gb = s u^T dy
        be->gemm(be, false, true, N, p->r, p->out, s, dy, p->out, p->b, p->out, 0.0f, a->du, p->r); // du = s dy b^T
        if (x) {
            const float *xin = x;
            if (drop) {
                be->dropout(be, a->xd, x, (size_t)(N * p->in), m->lcfg.dropout, ds);
                xin = a->xd;
            }
            be->gemm(be, true, false, p->in, p->r, N, 1.0f, xin, p->in, a->du, p->r, 0.0f, p->ga, p->r); // ga = xin^T du
        }
    }
    if (!need_dx) return;
    be->matmul_dx(be, dx, dy, w, N, acc); // forward: out = x W^T
    if (!p) return;
    if (drop) { // forward: xin = drop(x)  =>  dx += drop(du a^T)
        be->gemm(be, false, true, N, p->in, p->r, 1.0f, a->du, p->r, p->a, p->r, 0.0f, a->xd, p->in);
        be->dropout(be, a->xd, a->xd, (size_t)(N * p->in), m->lcfg.dropout, ds);
        be->axpy(be, dx, 1.0f, a->xd, (size_t)(N * p->in));
    } else { // dx += du a^T
        be->gemm(be, false, true, N, p->in, p->r, 1.0f, a->du, p->r, p->a, p->r, 1.0f, dx, p->in);
    }
}

/* How many of the n projections of one input carry an adapter (all of rank *r), when
 * they take projs_fwd/projs_bwd's grouped products: training without dropout, at least
 * two of them, and the backend's lora_group_rows rows or more (the products then run
 * once over the input with their A side by side, (in, k r), in a->lg). Else 0. */
static int projs_group(const lc_model *m, int n, lc_lora_param *const *p, int64_t N, int64_t *r) {
    int k = 0;
    *r = 0;
    if (m->lcfg.dropout > 0 || N < m->be->lora_group_rows) return 0;
    for (int i = 0; i < n; i++) {
        if (!p[i]) continue;
        if ((k && p[i]->r != *r) || p[i]->in != m->cfg.hidden_size) return 0;
        *r = p[i]->r, k++;
    }
    return k >= 2 && k * *r <= 3 * m->lcfg.rank ? k : 0;
}

/* k copies of (rows, cols): out[j] (row stride ldo[j]) = x[j] (row stride ldx[j]), in one
 * backend call where it has ->copy2d_n. */
static void copies(lc_backend *be, int k, float *const *out, const int64_t *ldo, const float *const *x,
                   const int64_t *ldx, int64_t rows, int64_t cols) {
    if (be->copy2d_n && k <= LC_GEMM_N_MAX) {
        be->copy2d_n(be, k, out, ldo, x, ldx, rows, cols);
        return;
    }
    for (int j = 0; j < k; j++) be->copy2d(be, out[j], ldo[j], x[j], ldx[j], rows, cols);
}

/* a->lg's first half = the k adapters' A side by side: (in, k r). */
static float *group_a(lc_model *m, lc_arena *a, int n, lc_lora_param *const *p, int64_t r) {
    int64_t k = 0, in = m->cfg.hidden_size;
    float *out[LC_GEMM_N_MAX];
    const float *x[LC_GEMM_N_MAX];
    int64_t ldo[LC_GEMM_N_MAX], ldx[LC_GEMM_N_MAX];
    for (int i = 0; i < n; i++)
        if (p[i]) k++;
    for (int i = 0, j = 0; i < n; i++)
        if (p[i]) out[j] = a->lg + j * r, ldo[j] = k * r, x[j] = p[i]->a, ldx[j] = r, j++;
    copies(m->be, (int)k, out, ldo, x, ldx, in, r);
    return a->lg;
}

/* The kg adapters' u = x a over one input (all of rank r) as one product over their A side
 * by side (group_a): u side by side in a->du (free outside the backward; left there), then
 * each copied to uo[j], the adapted ones in order. x float32, or else its bf16 copy xb in
 * rows ldxb apart. */
static void group_u(lc_model *m, lc_arena *a, int n, lc_lora_param *const *p, int64_t r, int kg, int64_t N,
                    const float *x, const void *xb, int64_t ldxb, float *const *uo) {
    lc_backend *be = m->be;
    const float *ag = group_a(m, a, n, p, r);
    int64_t in = m->cfg.hidden_size;
    if (x) be->gemm(be, false, false, N, kg * r, in, 1.0f, x, in, ag, kg * r, 0.0f, a->du, kg * r);
    else be->gemm_b(be, false, false, N, kg * r, in, 1.0f, xb, ldxb, true, ag, kg * r, false, 0.0f, a->du, kg * r);
    const float *ux[LC_GEMM_N_MAX];
    int64_t lo[LC_GEMM_N_MAX], lx[LC_GEMM_N_MAX];
    for (int j = 0; j < kg; j++) lo[j] = r, ux[j] = a->du + j * r, lx[j] = kg * r;
    copies(be, kg, uo, lo, ux, lx, N, r);
}

/* Where projs_bwd puts the j-th adapter's du (N, r): side by side (row stride k r) when
 * grouped, else one after another (row stride r). */
static float *du_at(lc_arena *a, int j, int k, bool grouped, int64_t N, int64_t r, int64_t *ld) {
    *ld = grouped ? k * r : r;
    return grouped ? a->du + (size_t)(j * r) : a->du + (size_t)j * (size_t)(N * r);
}

/* Several projections of one input x (q/k/v; gate/up; or one): out[i] (+)= x W_i^T +
 * bias_i + adapter i's path, the same values as proj_fwd on each, with the frozen
 * products in one ->matmul_n (x converted once on the card) and each of the adapters'
 * two products grouped in one ->gemm_n, when training without dropout (else proj_fwd
 * on each: dropout has one scratch for the dropped input). At many rows (projs_group)
 * the adapters' u = x a are one product over x with their A side by side (copied to
 * each u after). keep_b (that grouped path only): out += s u b is left to the caller
 * (->swiglu_lora). res (n 1 only, or NULL): out = res + the rest (acc ignored). At the
 * backend's lora_group_rows rows or more, when every projection has an adapter, out
 * first gets (res +) s u b and the frozen products add to it (the card adds in the
 * products' epilogue instead of reading and writing out again). */
static void projs_fwd(lc_model *m, lc_arena *a, int n, float *const *out, bool acc, const float *res,
                      const float *x, const lc_wt *const *w, const float *const *bias, lc_lora_param *const *p,
                      float *const *u, int64_t N, bool train, const uint64_t *ds, bool keep_b, const void *xb) {
    lc_backend *be = m->be;
    // the frozen products, from x's bf16 copy xb where there is one
#define MATMUL_N(accum)                                                                           \
    do {                                                                                          \
        if (!(xb && be->matmul_n_b(be, n, out, xb, w, bias, N, (accum))))                         \
            be->matmul_n(be, n, out, x, w, bias, N, (accum));                                      \
    } while (0)
    // out NULL (with keep_b, training without dropout): the caller ran the frozen products
    // (block_mlp_fwd's bf16 gate and up), only the adapters' u = x a here
    bool frozen = out != NULL;
    float *none[LC_GEMM_N_MAX] = {NULL};
    if (!frozen) out = none;
    int np = 0;
    for (int i = 0; i < n; i++) np += p[i] != NULL;
    bool first = frozen && train && m->lcfg.dropout <= 0 && !keep_b && np == n && N >= be->lora_group_rows;
    if (res && !first) be->copy(be, out[0], res, (size_t)(N * w[0]->rows)), acc = true;
    if ((!train && x) || m->lcfg.dropout > 0) { // inference keeps its plain sequence (x only as
                                                // bf16: evaluation's o, below, as training's)
        for (int i = 0; i < n; i++) proj_fwd(m, a, out[i], acc, x, w[i], bias[i], p[i], u[i], N, train, ds[i]);
        return;
    }
    if (!first && frozen) MATMUL_N(acc);
    lc_gemm_args g[LC_GEMM_N_MAX], h[LC_GEMM_N_MAX];
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (!p[i]) continue;
        lc_gemm_args gi = {false, false, N, p[i]->r, p[i]->in, 1.0f, 0.0f, x, p[i]->a, p[i]->in, p[i]->r,
                           p[i]->r, u[i], NULL};
        lc_gemm_args hi = {false, false, N, p[i]->out, p[i]->r, m->lcfg.scale, 1.0f, u[i], p[i]->b, p[i]->r,
                           p[i]->out, p[i]->out, out[i], NULL};
        if (first) hi.beta = acc || res ? 1.0f : 0.0f, hi.X = res; // out (=|+=) (res +) s u b
        g[k] = gi, h[k++] = hi;
    }
    if (!k) return;
    int64_t r;
    int kg = projs_group(m, n, p, N, &r);
    if (kg) { // u side by side in a->du, then each to its place
        float *uo[LC_GEMM_N_MAX];
        for (int j = 0; j < kg; j++) uo[j] = g[j].C;
        group_u(m, a, n, p, r, kg, N, x, xb, m->cfg.hidden_size, uo);
    } else if (!x) { // x only as bf16: u = xb a as bf16 products
        for (int i = 0; i < n; i++)
            if (p[i])
                be->gemm_b(be, false, false, N, p[i]->r, p[i]->in, 1.0f, xb, p[i]->in, true, p[i]->a, p[i]->r, false,
                           0.0f, u[i], p[i]->r);
    } else {
        be->gemm_n(be, k, g); // u = x a
    }
    if (!keep_b) be->gemm_n(be, k, h); // out += s u b
    if (first) MATMUL_N(true);
#undef MATMUL_N
}

/* An adapter's u = drop(x) a alone, by the ops projs_fwd (one projection) runs for it:
 * the same values. */
static void proj_u(lc_model *m, lc_arena *a, const float *x, lc_lora_param *p, float *u, int64_t N, uint64_t ds) {
    lc_backend *be = m->be;
    if (m->lcfg.dropout > 0) {
        be->dropout(be, a->xd, x, (size_t)(N * p->in), m->lcfg.dropout, ds);
        be->gemm(be, false, false, N, p->r, p->in, 1.0f, a->xd, p->in, p->a, p->r, 0.0f, u, p->r);
        return;
    }
    lc_gemm_args g = {false, false, N, p->r, p->in, 1.0f, 0.0f, x, p->a, p->in, p->r, p->r, u, NULL};
    be->gemm_n(be, 1, &g);
}

/* The adapters' ga = x^T du with each du where projs_bwd wrote it (no dropout): one
 * product over x into a->lg's second half, copied to each ga, when grouped; else one
 * ->gemm_n. */
static void projs_ga_of(lc_model *m, lc_arena *a, int n, const float *x, lc_lora_param *const *p, int64_t N,
                        const void *xb) {
    lc_backend *be = m->be;
    int64_t r;
    int kg = projs_group(m, n, p, N, &r);
    if (kg) {
        int64_t in = m->cfg.hidden_size, kr = kg * r;
        float *gg = a->lg + (size_t)(in * 3 * m->lcfg.rank);
        if (x) be->gemm(be, true, false, in, kr, N, 1.0f, x, in, a->du, kr, 0.0f, gg, kr);
        else be->gemm_b(be, true, false, in, kr, N, 1.0f, xb, in, true, a->du, kr, false, 0.0f, gg, kr); // xn16
        float *go[LC_GEMM_N_MAX];
        const float *gx[LC_GEMM_N_MAX];
        int64_t lo[LC_GEMM_N_MAX], lx[LC_GEMM_N_MAX];
        int j = 0;
        for (int i = 0; i < n; i++)
            if (p[i]) go[j] = p[i]->ga, lo[j] = r, gx[j] = gg + j * r, lx[j] = kr, j++;
        copies(be, j, go, lo, gx, lx, in, r);
        return;
    }
    if (!x) { // x only as bf16 (xn16): bf16 products
        for (int i = 0, k = 0; i < n; i++) {
            if (!p[i]) continue;
            int64_t ld;
            const float *du = du_at(a, k++, 0, false, N, p[i]->r, &ld);
            be->gemm_b(be, true, false, p[i]->in, p[i]->r, N, 1.0f, xb, p[i]->in, true, du, ld, false, 0.0f, p[i]->ga,
                       p[i]->r);
        }
        return;
    }
    lc_gemm_args ga[LC_GEMM_N_MAX];
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (!p[i]) continue;
        int64_t ld, ri = p[i]->r;
        const float *du = du_at(a, k, 0, false, N, ri, &ld);
        lc_gemm_args b3 = {true, false, p[i]->in, ri, N, 1.0f, 0.0f, x, du, p[i]->in, ld, ri, p[i]->ga, NULL};
        ga[k++] = b3;
    }
    if (k) be->gemm_n(be, k, ga);
}

/* Backward of projs_fwd: every adapter's ga, gb =; dx (N, in) (+)= sum over i of dy_i W_i
 * + adapter i's path when need_dx. The adapters' gb and du products are grouped in one
 * ->gemm_n each (du of adapter j where du_at says), and ga (projs_ga_of). At the
 * backend's lora_group_rows rows or more, dx first gets the adapters' du a^T (one product
 * when grouped), and the frozen products add to it (the card adds in the products'
 * epilogue rather than reading and writing dx again); else each frozen product, then its
 * adapter's. x NULL: the ga products are left to projs_ga (with dropout, only for one
 * projection: proj_bwd keeps one du). wcat (with dyb): the n weights side by side as one
 * (lc_block.qkv), the n dyb interleaved in rows of ldy values (dyb[0] the row's start):
 * the frozen products are one; ldy 0: each dyb its own packed (N, out). fold (> 0: every
 * one of the n has an adapter, grouped when n > 1, with dyb; dx_fold): dyb[0]'s rows hold
 * fold spare columns after the n dy (ldy = their sum + fold) and the weight (wcat, or w[0]
 * when n is 1) as many spare rows (lc_block.room): the adapters' du and a^T are rounded
 * into them and dx (+)= [dy | du] [W ; a^T] is one bf16 product; dxb (with fold, !acc, where
 * ->matmul_dx_bo takes the weight): that product's sums rounded to bf16 into dxb instead,
 * dx not written. Returns whether dxb took dx. */
static bool projs_bwd(lc_model *m, lc_arena *a, int n, float *dx, bool acc, const float *const *dy,
                      const float *x, const lc_wt *const *w, lc_lora_param *const *p, float *const *u,
                      int64_t N, bool need_dx, const uint64_t *ds, const void *const *dyb, const void *xb,
                      const lc_wt *wcat, int64_t ldy, int64_t fold, void *dxb) {
    lc_backend *be = m->be;
    // the frozen input-gradient product of projection i, from dy's bf16 copy where there is one
#define MATMUL_DX(i, accum)                                                                       \
    do {                                                                                          \
        if (!(dyb && dyb[i] && be->matmul_dx_b(be, dx, dyb[i], w[i], N, (accum))))                \
            be->matmul_dx(be, dx, dy[i], w[i], N, (accum));                                        \
    } while (0)
    if (m->lcfg.dropout > 0) {
        for (int i = 0; i < n; i++) proj_bwd(m, a, dx, acc || i > 0, dy[i], x, w[i], p[i], u[i], N, need_dx, ds[i]);
        return false;
    }
    float s = m->lcfg.scale;
    int64_t rg;
    int kg = projs_group(m, n, p, N, &rg);
    lc_gemm_args gb[LC_GEMM_N_MAX], du[LC_GEMM_N_MAX];
    float *dus[LC_GEMM_N_MAX] = {0};
    int64_t lds[LC_GEMM_N_MAX] = {0};
    int k = 0;
    bool b16 = false; // dy only as bf16 (dy[i] NULL): gb and du as bf16 products (->gemm_b)
    for (int i = 0; i < n; i++) {
        if (!p[i]) continue;
        int64_t r = p[i]->r, o = p[i]->out;
        dus[i] = du_at(a, k, kg, kg > 0, N, r, &lds[i]);
        lc_gemm_args b1 = {true, false, r, o, N, s, 0.0f, u[i], dy[i], r, o, o, p[i]->gb, NULL}; // gb = s u^T dy
        lc_gemm_args b2 = {false, true, N, r, o, s, 0.0f, dy[i], p[i]->b, o, o, lds[i], dus[i], NULL}; // du = s dy b^T
        gb[k] = b1, du[k++] = b2;
        b16 |= !dy[i];
    }
    if (k && b16) {
        // both products of every adapter from one read of its dy (->lora_dy), else two each
        lc_dy_args da[LC_GEMM_N_MAX];
        int nd = 0;
        int64_t r0 = 0;
        bool one = be->lora_dy != NULL;
        for (int i = 0; i < n && one; i++) {
            if (!p[i]) continue;
            if (nd == LC_GEMM_N_MAX || (nd && p[i]->r != r0)) { // one rank a call
                one = false;
                break;
            }
            int64_t o = p[i]->out;
            lc_dy_args d = {dyb[i], ldy ? ldy : o, o, u[i], p[i]->b, p[i]->gb, dus[i], lds[i]};
            r0 = p[i]->r, da[nd++] = d;
        }
        if (!(one && nd && be->lora_dy(be, nd, N, r0, s, da)))
            for (int i = 0; i < n; i++) {
                if (!p[i]) continue;
                int64_t r = p[i]->r, o = p[i]->out;
                int64_t ly = ldy ? ldy : o;
                be->gemm_b(be, true, false, r, o, N, s, u[i], r, false, dyb[i], ly, true, 0.0f, p[i]->gb, o);
                be->gemm_b(be, false, true, N, r, o, s, dyb[i], ly, true, p[i]->b, o, false, 0.0f, dus[i], lds[i]);
            }
        if (x || xb) projs_ga_of(m, a, n, x, p, N, xb);
    } else if (k) {
        be->gemm_n(be, k, gb);
        be->gemm_n(be, k, du);
        if (x || xb) projs_ga_of(m, a, n, x, p, N, xb);
    }
    if (!need_dx) return false;
    if (fold) { // du beside dy, a^T below W (the adapters in order, as du_at put their du)
        lc_wt wf = wcat ? *wcat : *w[0];
        int64_t O = wf.rows, in = lc_wt_ld(&wf);
        uint16_t *yb = (uint16_t *)dyb[0];
        if (kg || n == 1) be->to_bf16_rows(be, yb + O, O + fold, a->du, N, fold); // side by side already
        for (int i = 0, j = 0; i < n; i++) {
            if (!p[i]) continue;
            if (!kg && n > 1) be->to_bf16_rows(be, yb + O + j * p[i]->r, O + fold, dus[i], N, p[i]->r);
            be->to_bf16_t(be, (uint16_t *)wf.data + (O + j++ * p[i]->r) * in, in, p[i]->a, p[i]->in, p[i]->r, 1.0f);
        }
        wf.rows = O + fold;
        if (dxb && !acc && be->matmul_dx_bo && be->matmul_dx_bo(be, dxb, yb, &wf, N)) return true;
        be->matmul_dx_b(be, dx, yb, &wf, N, acc);
        return false;
    }
    if (k && N >= be->lora_group_rows) { // dx (+)= the adapters' du a^T, then the frozen products add
        if (kg) {
            const float *ag = group_a(m, a, n, p, rg);
            int64_t in = m->cfg.hidden_size;
            be->gemm(be, false, true, N, in, kg * rg, 1.0f, a->du, kg * rg, ag, kg * rg, acc ? 1.0f : 0.0f, dx, in);
        } else {
            bool first = !acc;
            for (int i = 0; i < n; i++) {
                if (!p[i]) continue;
                be->gemm(be, false, true, N, p[i]->in, p[i]->r, 1.0f, dus[i], lds[i], p[i]->a, p[i]->r,
                         first ? 0.0f : 1.0f, dx, p[i]->in);
                first = false;
            }
        }
        if (wcat) be->matmul_dx_b(be, dx, dyb[0], wcat, N, true); // the n products as one
        else
            for (int i = 0; i < n; i++) MATMUL_DX(i, true);
        return false;
    }
    if (wcat) be->matmul_dx_b(be, dx, dyb[0], wcat, N, acc);
    for (int i = 0; i < n; i++) {
        if (!wcat) MATMUL_DX(i, acc || i > 0);
        if (p[i]) // dx += du a^T
            be->gemm(be, false, true, N, p[i]->in, p[i]->r, 1.0f, dus[i], lds[i], p[i]->a, p[i]->r, 1.0f, dx,
                     p[i]->in);
    }
    return false;
#undef MATMUL_DX
}

/* The ga products projs_bwd left (it was given no x): ga = drop(x)^T du with each du
 * where projs_bwd wrote it, and the same ops as it would have run. */
static void projs_ga(lc_model *m, lc_arena *a, int n, const float *x, lc_lora_param *const *p, int64_t N,
                     const uint64_t *ds) {
    lc_backend *be = m->be;
    if (m->lcfg.dropout <= 0) {
        projs_ga_of(m, a, n, x, p, N, NULL);
        return;
    }
    for (int i = 0; i < n; i++) { // proj_bwd's order: one du, in a->du
        if (!p[i]) continue;
        int64_t r = p[i]->r, in = p[i]->in;
        be->dropout(be, a->xd, x, (size_t)(N * in), m->lcfg.dropout, ds[i]);
        be->gemm(be, true, false, in, r, N, 1.0f, a->xd, in, a->du, r, 0.0f, p[i]->ga, r);
    }
}

/* ------------------------------------------------------------ blocks */

/* Where a training step at N rows keeps the normed inputs (xn1, xn2) only as bf16, or
 * NULL: the arena's logits chunk (free outside the head's loss), when it holds N x C bf16
 * values, at the many rows where their products all take bf16 (->lora_group_rows), the
 * frozen weights bf16 (->matmul_n_b), no dropout; LORAC_PACKED_XN=0 turns it off. Their
 * products (frozen: ->matmul_n_b; the adapters' u and ga: ->gemm_b) read that copy, and
 * the backward recomputes it where an adapter needs it (the top block's too). */
static void *xn16(const lc_model *m, lc_arena *a, int64_t N) {
    const char *e = getenv("LORAC_PACKED_XN");
    lc_backend *be = m->be;
    if ((e && !strcmp(e, "0")) || !be->rmsnorm_b || !be->matmul_n_b || !be->gemm_b ||
        m->lcfg.dropout > 0 || N < be->lora_group_rows || a->mode != LC_MODE_TRAIN || !a->logits)
        return NULL;
    int64_t C = m->cfg.hidden_size;
    if ((size_t)a->chunk * (size_t)m->cfg.vocab_size < (size_t)(N * C + 1) / 2) return NULL;
    for (int64_t l = 0; l < m->cfg.num_hidden_layers; l++)
        for (int k = 0; k < LC_NKEYS; k++)
            if (k != LC_KEY_O && k != LC_KEY_DOWN && (m->blocks[l].w[k].q || m->blocks[l].w[k].dtype != LC_DT_BF16))
                return NULL;
    return a->logits;
}

/* Whether block bk's q/k/v input-gradient products run as one (its weights side by side,
 * the bf16 dq | dk | dv interleaved a token a row); LORAC_QKV_DX=0 turns it off. */
static bool qkv_cat(const lc_model *m, const lc_block *bk) {
    const char *e = getenv("LORAC_QKV_DX");
    return !(e && !strcmp(e, "0")) && bk->qkv.data && m->be->to_bf16_rows && m->be->matmul_dx_b;
}

/* Whether the attention's backward writes dq|dk|dv's bf16 copies itself, rotated back
 * (->attention_bwd_rb, where dy16 and the bf16 attention are on); LORAC_ATT_ROPE_BWD=0
 * turns it off. */
static bool att_rope_bwd(const lc_model *m) {
    const char *e = getenv("LORAC_ATT_ROPE_BWD");
    return !(e && !strcmp(e, "0")) && m->be->attention_bwd_rb;
}

/* The spare columns the backward's bf16 dy copies give the folded input-gradient products
 * [dy | du] [W ; a^T] (projs_bwd): *od for dres's (o's and down's dy: the rank, where every
 * adapted block's o and down weights have the room, lc_model_make_room), *qkv for
 * dq|dk|dv's interleaved rows (3 ranks, where q|k|v's do and their products are one,
 * qkv_cat); 0 where a product does not fold. LORAC_DX_FOLD=0 turns it off. */
static void dx_fold(const lc_model *m, int64_t *od, int64_t *qkv) {
    const char *e = getenv("LORAC_DX_FOLD");
    int64_t r = m->lcfg.rank;
    bool on = !(e && !strcmp(e, "0")) && m->has_lora && m->be->to_bf16_t && m->be->to_bf16_rows &&
              m->lcfg.dropout <= 0 && m->first < m->cfg.num_hidden_layers;
    *od = on && m->room_od >= r ? r : 0;
    *qkv = on && m->room_qkv >= 3 * r && qkv_cat(m, &m->blocks[m->first]) ? 3 * r : 0;
}

/* The backward's bf16 copies of the residual stream's gradient (dres: o's and down's dy)
 * and of dq|dk|dv after RoPE's backward, written by the ops that make them
 * (->rmsnorm_bwd_b, ->rope_bwd_b, ->to_bf16) instead of a rounding pass before each
 * frozen input-gradient product (->matmul_dx_b: the bits as_bf16 made); the adapters' gb
 * and du read them too (->gemm_b: bf16 products from bf16 dy, as bf16 autocast forms
 * them), so no float32 dy is read after them and none of dq/dk/dv is rotated in place.
 * Where: dres's in the logits chunk past xn16's half (free outside the head's loss); dq's,
 * dk's, dv's past dv in g1, or else past dres's in the chunk. At the many rows where the
 * adapters' products take bf16 (->lora_group_rows), without dropout, over block weights
 * that are bf16 or quantized; LORAC_PACKED_DRES=0 turns it off. Returns whether on,
 * with *dres and *dqkv set (NULL when off) and their row strides *ldr (dres's: C, plus the
 * spare columns of dx_fold's o and down) and *ldq (dq|dk|dv's interleaved rows: (H + 2 KV)
 * D, plus q/k/v's spare columns); without room in the chunk for the spare columns, none. */
static bool dy16(const lc_model *m, const lc_arena *a, int64_t N, void **dres, void **dqkv, int64_t *ldr,
                 int64_t *ldq) {
    const char *e = getenv("LORAC_PACKED_DRES");
    lc_backend *be = m->be;
    const lc_model_config *c = &m->cfg;
    *dres = *dqkv = NULL;
    size_t C = (size_t)c->hidden_size, I = (size_t)c->intermediate_size, n = (size_t)N;
    size_t HD = (size_t)(c->num_attention_heads * c->head_dim), KVD = (size_t)(c->num_key_value_heads * c->head_dim);
    *ldr = (int64_t)C, *ldq = (int64_t)(HD + 2 * KVD);
    if ((e && !strcmp(e, "0")) || !be->rmsnorm_bwd_b || !be->rope_bwd_b || !be->to_bf16 || !be->gemm_b ||
        !be->matmul_dx_b || m->lcfg.dropout > 0 || N < be->lora_group_rows || a->mode != LC_MODE_TRAIN || !a->logits)
        return false;
    for (int64_t l = 0; l < c->num_hidden_layers; l++)
        for (int k = 0; k < LC_NKEYS; k++)
            if (!m->blocks[l].w[k].q && m->blocks[l].w[k].dtype != LC_DT_BF16) return false;
    int64_t fod, fqkv;
    dx_fold(m, &fod, &fqkv);
    size_t room = a->room; // the logits chunk's floats
    // floats of xn16's copy (N, C), or (N, C + 2 r) where gate/up fold (the forward's, which
    // a recompute writes while dres's copy is live), 64-byte steps
    size_t half = ((n * (C + (size_t)(a->g16 ? m->room_gu : 0)) + 1) / 2 + 15) & ~(size_t)15;
    size_t used = n * (2 * HD + 2 * KVD), g1 = n * (I > 2 * HD + 2 * KVD ? I : 2 * HD + 2 * KVD);
    for (int pass = 0; pass < 2; pass++, fod = fqkv = 0) { // with the folds' spare columns, else without
        size_t hr = ((n * (C + (size_t)fod) + 1) / 2 + 15) & ~(size_t)15; // dres's copy (N, C + fod)
        size_t qkv = (n * (HD + 2 * KVD + (size_t)fqkv) + 1) / 2;
        if (room < half + hr) continue;
        if (g1 >= ((used + 15) & ~(size_t)15) + qkv) *dqkv = a->g1 + ((used + 15) & ~(size_t)15);
        else if (room >= half + hr + qkv) *dqkv = a->logits + half + hr;
        else continue;
        *dres = a->logits + half;
        *ldr = (int64_t)C + fod, *ldq = (int64_t)(HD + 2 * KVD) + fqkv;
        return true;
    }
    return false;
}

/* Whether gate's and up's adapters go into their frozen products (->matmul_n_bo over
 * [xn | u_gate | u_up] and the weights' spare columns [W | s b^T], so SwiGLU only reads the
 * pair): with the bf16 pair (lc_model_gu16), both adapted, a backend with ->weight_room and
 * the bf16 roundings; LORAC_GU_FOLD=0 turns it off. */
static bool gu_fold_on(const lc_model *m) {
    const char *e = getenv("LORAC_GU_FOLD");
    lc_backend *be = m->be;
    unsigned keys = m->lcfg.keys;
    // (rows of whole 16-byte steps: the rank a multiple of 4, the hidden size of 8)
    return !(e && !strcmp(e, "0")) && m->has_lora && be->weight_room && be->to_bf16_t && be->to_bf16_rows &&
           be->gemm_b && (keys >> LC_KEY_GATE & 1u) && (keys >> LC_KEY_UP & 1u) && m->lcfg.rank % 4 == 0 &&
           m->cfg.hidden_size % 8 == 0 &&
           m->first < (int)m->cfg.num_hidden_layers && lc_model_gu16(m);
}

int lc_model_make_room(lc_model *m) {
    lc_backend *be = m->be;
    const char *e = getenv("LORAC_DX_FOLD");
    int L = (int)m->cfg.num_hidden_layers;
    int64_t r = m->lcfg.rank;
    unsigned keys = m->lcfg.keys;
    m->room_od = m->room_qkv = m->room_gu = 0;
    if (!m->has_lora || !be->weight_room || !be->to_bf16_t || m->first >= L) return 0;
    bool dx = !(e && !strcmp(e, "0"));
    bool od = dx && (keys & (1u << LC_KEY_O)) && (keys & (1u << LC_KEY_DOWN));
    bool qkv = dx && (keys & 7u) == 7u;
    bool gu = gu_fold_on(m);
    for (int l = m->first; l < L && qkv; l++) qkv = m->blocks[l].qkv.data != NULL;
    // the blocks short of room moved a group at a time into one allocation (up to ~1 GiB:
    // the allocation's rounding paid once for many weights, not once a weight, and no more
    // than that much memory more while they move)
    enum { GMAX = 70 };
    lc_wt *w[GMAX];
    int64_t ex[GMAX], xc[GMAX];
    int grp[GMAX], n = 0, nb = 0;
    size_t bytes = 0, grown = 0;
    for (int l = m->first; l <= L && (od || qkv || gu); l++) {
        lc_block *b = l < L ? &m->blocks[l] : NULL;
        bool need = b && ((od && (b->room[LC_KEY_O] < r || b->room[LC_KEY_DOWN] < r)) ||
                          (qkv && b->room[LC_KEY_Q] < 3 * r) ||
                          (gu && (b->xroom[LC_KEY_GATE] < 2 * r || b->xroom[LC_KEY_UP] < 2 * r)));
        if (n && (!b || (need && (n + 7 > GMAX || bytes >= ((size_t)1 << 30))))) { // the group so far
            int rc = be->weight_room(be, n, w, ex, xc);
            if (rc < 0) return -1;
            if (rc) {
                od = qkv = gu = false;
                break;
            }
            m->wmoves++, m->wbytes += grown;
            for (int j = 0; j < nb; j++) {
                lc_block *g = &m->blocks[grp[j]];
                if (qkv) g->room[LC_KEY_Q] = 3 * r, g->qkv.data = g->w[0].data;
                if (od) g->room[LC_KEY_O] = g->room[LC_KEY_DOWN] = r;
                if (gu) g->xroom[LC_KEY_GATE] = g->xroom[LC_KEY_UP] = 2 * r;
            }
            n = nb = 0, bytes = grown = 0;
        }
        if (!need) continue;
        for (int k = 0; k < LC_NKEYS; k++) {
            bool in = qkv ? k <= LC_KEY_V : false, cols = gu && (k == LC_KEY_GATE || k == LC_KEY_UP);
            in |= od && (k == LC_KEY_O || k == LC_KEY_DOWN);
            if (!in && !cols) continue;
            lc_wt *wk = &b->w[k];
            w[n] = wk, ex[n] = k == LC_KEY_V ? 3 * r : k < LC_KEY_V || cols ? 0 : r, xc[n] = cols ? 2 * r : 0;
            int64_t had = k == LC_KEY_V ? b->room[LC_KEY_Q] : k == LC_KEY_O || k == LC_KEY_DOWN ? b->room[k] : 0;
            size_t now = (size_t)((wk->rows + had) * lc_wt_ld(wk)) * 2; // (spare rows from a move before)
            size_t then = (size_t)((wk->rows + ex[n]) * (wk->cols + xc[n])) * 2;
            grown += then > now ? then - now : 0, bytes += now, n++;
        }
        grp[nb++] = l;
    }
    m->room_od = od ? r : 0, m->room_qkv = qkv ? 3 * r : 0, m->room_gu = gu ? 2 * r : 0;
    return 0;
}

/* Block l's attention half: x (N, C) -> s->xmid, its activations into s. New keys/values
 * go to kdst/vdst (rows of (B, S, KV, D) at pos0); attention reads kall/vall (B, S, KV, D). */
static void block_attn_fwd(lc_model *m, int l, lc_acts *s, const float *x, int64_t B, int64_t T, int64_t pos0,
                           float *kdst, float *vdst, const float *kall, const float *vall, int64_t S, bool train,
                           uint64_t seed, lc_arena *a) {
    lc_backend *be = m->be;
    const lc_model_config *c = &m->cfg;
    lc_block *bk = &m->blocks[l];
    int64_t N = B * T, C = c->hidden_size, H = c->num_attention_heads, KV = c->num_key_value_heads;
    int64_t D = c->head_dim;
    float eps = (float)c->rms_norm_eps;
    void *xnb = train ? xn16(m, a, N) : NULL; // xn1 only as bf16
    if (xnb) be->rmsnorm_b(be, NULL, xnb, 0, s->rstd1, x, bk->ln1, N, C, eps);
    else be->rmsnorm(be, s->xn1, s->rstd1, x, bk->ln1, N, C, eps);
    // att16 (training and evaluation, pos0 0, kdst = kall = s->k): q, k, v in float32 into
    // g1 (training's: free in the forward, and in the backward before a block recomputes) or
    // h (evaluation's: free until the MLP half), then rotated and rounded into s->q, s->k,
    // s->v, and the attention writes s->att as bf16
    bool b16 = a && a->att16;
    float *qf = b16 ? (a->g1 ? a->g1 : s->h) : s->q, *kf = b16 ? qf + N * H * D : kdst, *vf = b16 ? kf + N * KV * D : vdst;
    {
        float *o3[3] = {qf, kf, vf};
        const lc_wt *w3[3] = {&bk->w[LC_KEY_Q], &bk->w[LC_KEY_K], &bk->w[LC_KEY_V]};
        const float *b3[3] = {bk->bias[0], bk->bias[1], bk->bias[2]};
        lc_lora_param *p3[3] = {bk->lora[LC_KEY_Q], bk->lora[LC_KEY_K], bk->lora[LC_KEY_V]};
        float *u3[3] = {s->u[LC_KEY_Q], s->u[LC_KEY_K], s->u[LC_KEY_V]};
        uint64_t d3[3] = {drop_seed(seed, l, LC_KEY_Q), drop_seed(seed, l, LC_KEY_K), drop_seed(seed, l, LC_KEY_V)};
        projs_fwd(m, a, 3, o3, false, NULL, xnb ? NULL : s->xn1, w3, b3, p3, u3, N, train, d3, false, xnb);
    }
    if (b16) {
        be->rope_b(be, s->q, H * D, qf, m->rope_cos, m->rope_sin, B, T, H, D, 0);
        be->rope_b(be, s->k, KV * D, kf, m->rope_cos, m->rope_sin, B, T, KV, D, 0);
        be->to_bf16(be, s->v, vf, (size_t)(N * KV * D));
        be->attention_b(be, s->att, s->lse, s->q, s->k, s->v, B, T, H, KV, D);
    } else {
        be->rope(be, s->q, m->rope_cos, m->rope_sin, B, T, H, D, pos0);
        be->rope(be, kdst, m->rope_cos, m->rope_sin, B, T, KV, D, pos0);
        be->attention(be, s->att, s->lse, s->q, kall, vall, B, T, S, H, KV, D, pos0);
    }
    { // xmid = x + att Wo^T
        float *o1 = s->xmid;
        const lc_wt *w1 = &bk->w[LC_KEY_O];
        const float *b1 = NULL;
        lc_lora_param *p1 = bk->lora[LC_KEY_O];
        uint64_t d1 = drop_seed(seed, l, LC_KEY_O);
        projs_fwd(m, a, 1, &o1, true, x, b16 ? NULL : s->att, &w1, &b1, &p1, &s->u[LC_KEY_O], N, train, &d1, false,
                  b16 ? s->att : NULL);
    }
}

/* Whether a block's forward at N rows over acts s keeps h only as bf16 (no float32 h: see
 * block_mlp_fwd), given that it writes the bf16 copy: at the many rows where the frozen
 * and adapter products all take it (->lora_group_rows), without dropout, packing. */
static bool h_only16(const lc_model *m, const lc_acts *s, int64_t N) {
    return s->gu && m->lcfg.dropout <= 0 && N >= m->be->lora_group_rows && m->be->gemm_b;
}

/* Block l's MLP half: s->xmid -> xout (N, C), its activations into s. down: 2 the whole
 * half; 1 all but down's frozen product and xout (a recompute: the backward needs down's
 * u = h a, not the block's output); 0 gate, up and h only. */
static void block_mlp_fwd(lc_model *m, int l, lc_acts *s, float *xout, int64_t B, int64_t T, bool train,
                          uint64_t seed, lc_arena *a, int down) {
    lc_backend *be = m->be;
    const lc_model_config *c = &m->cfg;
    lc_block *bk = &m->blocks[l];
    int64_t N = B * T, C = c->hidden_size, I = c->intermediate_size;
    float eps = (float)c->rms_norm_eps;
    void *xnb = train ? xn16(m, a, N) : NULL; // xn2 only as bf16
    // gate's and up's out += s u b folded into SwiGLU where the backend can (training
    // without dropout: projs_fwd's grouped path)
    lc_lora_param *pg = bk->lora[LC_KEY_GATE], *pu = bk->lora[LC_KEY_UP];
    bool fold = train && (pg || pu) && lc_model_folds_gate_up(m);
    void *g16 = train && a->g16 ? (s->gu ? s->gu : a->gus) : NULL;
    // or into gate's and up's frozen products (gu_fold_on): xn2's bf16 rows with u_gate | u_up
    // beside xn (the logits chunk holds them), s b^T in the weights' spare columns
    int64_t r = m->lcfg.rank, xk = 0;
    if (g16 && fold && xnb && pg && pu && pg->r == r && pu->r == r && m->room_gu >= 2 * r &&
        bk->xroom[LC_KEY_GATE] >= 2 * r && bk->xroom[LC_KEY_UP] >= 2 * r &&
        a->room >= (size_t)((N * (C + 2 * r) + 1) / 2))
        xk = 2 * r;
    if (xnb) be->rmsnorm_b(be, NULL, xnb, C + xk, s->rstd2, s->xmid, bk->ln2, N, C, eps);
    else be->rmsnorm(be, s->xn2, s->rstd2, s->xmid, bk->ln2, N, C, eps);
    // h's bf16 copy for down's frozen product (the arena's g1 is free in the forward); at
    // many rows the only copy: down's adapter takes u from it too (->gemm_b) and the
    // backward writes h again (h_only16)
    // (with bf16 gate/up, a whole recompute's too where h is kept only as bf16: its down u
    // from the same copy as the forward's; g1 is free before the block's backward)
    bool hb_on = down == 2 || (down == 1 && a->g16 && h_only16(m, s, N));
    void *hb = hb_on && train && m->lcfg.dropout <= 0 && s->gu && lc_model_packs_h(m, &bk->w[LC_KEY_DOWN]) ? a->g1 : NULL;
    float *hout = hb && h_only16(m, s, N) ? NULL : s->h;
    if (down == 0 && s->gu && s->gu == a->gus) hout = NULL; // its backward writes h again from the pair
    // no float32 gate and up (lc_model_gu16): the products write the bf16 pair, the block's
    // own or the arena's shared one (where the block packs only when it recomputes, or is
    // below the adapters), and SwiGLU adds the adapters' part there in place (g16 above)
    {
        float *o2[2] = {s->gate, s->up};
        const lc_wt *w2[2] = {&bk->w[LC_KEY_GATE], &bk->w[LC_KEY_UP]};
        const float *b2[2] = {NULL, NULL};
        lc_lora_param *p2[2] = {bk->lora[LC_KEY_GATE], bk->lora[LC_KEY_UP]};
        float *u2[2] = {s->u[LC_KEY_GATE], s->u[LC_KEY_UP]};
        uint64_t d2[2] = {drop_seed(seed, l, LC_KEY_GATE), drop_seed(seed, l, LC_KEY_UP)};
        if (xk) { // u = xn a as projs_fwd's grouped path forms it, then [xn | u] [W | s b^T]^T
            lc_lora_param *pp[2] = {pg, pu};
            group_u(m, a, 2, pp, r, 2, N, NULL, xnb, C + xk, u2);
            be->to_bf16_rows(be, (uint16_t *)xnb + C, C + xk, a->du, N, 2 * r);
            for (int j = 0; j < 2; j++) // gate's rows: s b^T, zeros; up's: zeros, s b^T
                be->to_bf16_t(be, (uint16_t *)w2[j]->data + C + j * r, lc_wt_ld(w2[j]), pp[j]->b, r, I,
                              m->lcfg.scale);
        }
        if (g16) {
            void *ob[2] = {g16, (uint16_t *)g16 + N * I};
            be->matmul_n_bo(be, 2, ob, xnb ? NULL : s->xn2, xnb, w2, N, xk); // lc_model_gu16: bf16 weights
        }
        if ((!g16 || fold) && !xk)
            projs_fwd(m, a, 2, g16 ? NULL : o2, false, NULL, xnb ? NULL : s->xn2, w2, b2, p2, u2, N, train, d2, fold,
                      xnb);
    }
    if (g16 && xk) // the pair holds the adapters' part already: only read
        be->swiglu_lora(be, hout, g16, NULL, NULL, N, I, NULL, NULL, NULL, NULL, (int)r, m->lcfg.scale, hb);
    else if (g16)
        be->swiglu_lora(be, hout, g16, NULL, NULL, N, I, fold && pg ? s->u[LC_KEY_GATE] : NULL,
                        fold && pg ? pg->b : NULL, fold && pu ? s->u[LC_KEY_UP] : NULL, fold && pu ? pu->b : NULL,
                        (int)m->lcfg.rank, m->lcfg.scale, hb);
    else if (fold)
        be->swiglu_lora(be, hout, s->gu, s->gate, s->up, N, I, pg ? s->u[LC_KEY_GATE] : NULL, pg ? pg->b : NULL,
                        pu ? s->u[LC_KEY_UP] : NULL, pu ? pu->b : NULL, (int)m->lcfg.rank, m->lcfg.scale, hb);
    else if (s->gu) be->swiglu_pack(be, hout, s->gu, s->gate, s->up, (size_t)(N * I), hb);
    else be->swiglu(be, s->h, s->gate, s->up, (size_t)(N * I));
    lc_lora_param *p1 = bk->lora[LC_KEY_DOWN];
    uint64_t d1 = drop_seed(seed, l, LC_KEY_DOWN);
    if (down == 2) {
        const lc_wt *w1 = &bk->w[LC_KEY_DOWN]; // xout = xmid + h Wd^T
        const float *b1 = NULL;
        projs_fwd(m, a, 1, &xout, true, s->xmid, hout, &w1, &b1, &p1, &s->u[LC_KEY_DOWN], N, train, &d1, false, hb);
    } else if (down == 1 && p1 && !hout) { // u = h a from h's bf16 copy, as the forward's
        const lc_wt *w1 = &bk->w[LC_KEY_DOWN];
        const float *b1 = NULL;
        projs_fwd(m, a, 1, NULL, false, NULL, NULL, &w1, &b1, &p1, &s->u[LC_KEY_DOWN], N, train, &d1, true, hb);
    } else if (down == 1 && p1) {
        proj_u(m, a, s->h, p1, s->u[LC_KEY_DOWN], N, d1);
    }
}

/* Block l: x (N, C) -> xout (N, C), activations into s. New keys/values go to kdst/vdst
 * (rows of (B, S, KV, D) at pos0); attention reads kall/vall (B, S, KV, D). */
void lc_block_forward(lc_model *m, int l, lc_acts *s, const float *x, float *xout, int64_t B,
                      int64_t T, int64_t pos0, float *kdst, float *vdst, const float *kall,
                      const float *vall, int64_t S, bool train, uint64_t seed, lc_arena *a) {
    m->be->lora_tf32 = lc_model_lora_tf32(m);
    block_attn_fwd(m, l, s, x, B, T, pos0, kdst, vdst, kall, vall, S, train, seed, a);
    block_mlp_fwd(m, l, s, xout, B, T, train, seed, a, 2);
}

/* Before block l's backward (training): its forward again where it kept only its input
 * x (whole), else gate, up and h from the xmid it kept — the same ops on the same
 * inputs, so the same values as the forward's. */
static void block_recompute(lc_model *m, int l, lc_acts *s, const float *x, int64_t B, int64_t T, bool whole,
                            uint64_t seed, lc_arena *a) {
    if (whole) block_attn_fwd(m, l, s, x, B, T, 0, s->k, s->v, s->k, s->v, T, true, seed, a);
    block_mlp_fwd(m, l, s, NULL, B, T, true, seed, a, whole ? 1 : 0);
}

/* Backward of block l (training, pos0 0): on entry a->dres = d(block output); on return
 * it is d(block input) when need_dx (else partial). Every adapter's ga/gb =. fresh: this
 * block's forward was the last to write the shared xn and h (so they hold its xn2 and h);
 * else they are recomputed here, and xn1 always is, where an adapter needs them. */
static void block_backward(lc_model *m, int l, lc_acts *s, const float *x, int64_t B, int64_t T,
                           bool need_dx, bool fresh, bool h_fresh, uint64_t seed, lc_arena *a) {
    lc_backend *be = m->be;
    const lc_model_config *c = &m->cfg;
    lc_block *bk = &m->blocks[l];
    int64_t N = B * T, C = c->hidden_size, H = c->num_attention_heads, KV = c->num_key_value_heads;
    int64_t D = c->head_dim, I = c->intermediate_size;
    float eps = (float)c->rms_norm_eps;
    be->lora_tf32 = lc_model_lora_tf32(m);
#define DS(k) drop_seed(seed, l, k)
    // dh = d(down's input), then SwiGLU's input gradients in place (dgate over gate, dup
    // over dh), with h written again beside them when stale: down's adapter gradient
    // ga = h^T du, h's only reader, comes last. (The recomputed norms below write
    // rstd1/rstd2 again: the same kernel on the same input, the same values.)
    float *dh = a->g1, *dgate = s->gate, *dup = dh;
    bool dyb = s->gu && lc_model_packs_dy(m); // dgate's, dup's bf16 copies over gu, for their dx products
    // and, without dropout, for their adapters' gb and du too: then no float32 dgate, dup
    bool only16 = dyb && m->lcfg.dropout <= 0 && lc_model_dy16_adapters(m);
    // dres's bf16 copy (written with dres by the norm's backward after it, or the head's)
    // and dq|dk|dv's (by RoPE's backward) for o's, down's and q/k/v's products (dy16)
    void *drb, *dqkvb;
    int64_t ldr, ldq; // their row strides; dres's spare columns fod (o's and down's folds)
    bool d16 = dy16(m, a, N, &drb, &dqkvb, &ldr, &ldq);
    int64_t fod = d16 ? ldr - C : 0;
    const void *yr16 = drb;
    {
        const float *y1 = d16 ? NULL : a->dres;
        const lc_wt *w1 = &bk->w[LC_KEY_DOWN];
        lc_lora_param *p1 = bk->lora[LC_KEY_DOWN];
        uint64_t d1 = DS(LC_KEY_DOWN);
        float *hh = !(fresh && h_fresh) && p1 ? s->h : NULL;
        void *hh16 = hh && only16 && lc_model_h16_ga(m) ? (void *)s->h : NULL; // h as bf16 for ga
        // dh only as bf16 (down's folded product rounds it; SwiGLU's backward reads that)
        bool b16 = only16 && fod && (!hh || hh16) && dh16_on(m, w1);
        b16 = projs_bwd(m, a, 1, dh, false, &y1, NULL, &w1, &p1, &s->u[LC_KEY_DOWN], N, true, &d1,
                        d16 ? &yr16 : NULL, NULL, NULL, fod ? ldr : 0, fod, b16 ? (void *)dh : NULL);
        if (b16)
            be->swiglu_bwd_packed_bb(be, dh, s->gu, (size_t)(N * I), hh16);
        else if (dyb)
            be->swiglu_bwd_packed_b(be, only16 ? NULL : dgate, only16 ? NULL : dup, hh16 ? NULL : hh, dh, s->gu,
                                    (size_t)(N * I), hh16);
        else if (s->gu) be->swiglu_bwd_packed(be, dgate, dup, hh, dh, s->gu, (size_t)(N * I));
        else be->swiglu_bwd(be, dgate, dup, hh, dh, s->gate, s->up, (size_t)(N * I));
        if (hh16) projs_ga_of(m, a, 1, NULL, &p1, N, hh16);
        else projs_ga(m, a, 1, s->h, &p1, N, &d1);
    }
    void *xnb = xn16(m, a, N); // the normed inputs only as bf16 (recomputed: the forward's is gone)
    if (xnb && (bk->lora[LC_KEY_GATE] || bk->lora[LC_KEY_UP]))
        be->rmsnorm_b(be, NULL, xnb, 0, s->rstd2, s->xmid, bk->ln2, N, C, eps);
    else if (!fresh && (bk->lora[LC_KEY_GATE] || bk->lora[LC_KEY_UP]))
        be->rmsnorm(be, s->xn2, s->rstd2, s->xmid, bk->ln2, N, C, eps);
    {
        const float *y2[2] = {only16 ? NULL : dgate, only16 ? NULL : dup};
        const lc_wt *w2[2] = {&bk->w[LC_KEY_GATE], &bk->w[LC_KEY_UP]};
        lc_lora_param *p2[2] = {bk->lora[LC_KEY_GATE], bk->lora[LC_KEY_UP]};
        float *u2[2] = {s->u[LC_KEY_GATE], s->u[LC_KEY_UP]};
        uint64_t d2[2] = {DS(LC_KEY_GATE), DS(LC_KEY_UP)};
        const void *yb2[2] = {s->gu, dyb ? (const uint16_t *)s->gu + N * I : NULL};
        projs_bwd(m, a, 2, a->dxn, false, y2, xnb ? NULL : s->xn2, w2, p2, u2, N, true, d2, dyb ? yb2 : NULL, xnb,
                  NULL, 0, 0, NULL);
    }
    if (d16) be->rmsnorm_bwd_b(be, a->dres, drb, ldr, a->dxn, s->xmid, bk->ln2, s->rstd2, N, C); // dres = d xmid
    else be->rmsnorm_bwd(be, a->dres, a->dxn, s->xmid, bk->ln2, s->rstd2, N, C);
    float *datt = a->g1, *dq = datt + N * H * D, *dk = dq + N * H * D, *dv = dk + N * KV * D;
    {
        const float *y1 = d16 ? NULL : a->dres;
        const lc_wt *w1 = &bk->w[LC_KEY_O];
        lc_lora_param *p1 = bk->lora[LC_KEY_O];
        uint64_t d1 = DS(LC_KEY_O);
        projs_bwd(m, a, 1, datt, false, &y1, a->att16 ? NULL : s->att, &w1, &p1, &s->u[LC_KEY_O], N, true, &d1,
                  d16 ? &yr16 : NULL, a->att16 ? s->att : NULL, NULL, fod ? ldr : 0, fod, NULL);
    }
    // the bf16 copies: one after another, or with q, k, v's weights side by side (qkv_cat)
    // interleaved, a token's dq | dk | dv in one row, for one input-gradient product over all
    bool cat = d16 && qkv_cat(m, bk);
    int64_t ld = cat ? ldq : 0, fqkv = cat ? ldq - (H + 2 * KV) * D : 0;
    uint16_t *dqb = dqkvb, *dkb = NULL, *dvb = NULL;
    if (dqb) dkb = dqb + (cat ? H * D : N * H * D), dvb = dkb + (cat ? KV * D : N * KV * D);
    // the attention's backward writing those copies itself (rotated, rounded: no float32
    // dq, dk, dv in between) where the backend offers it; LORAC_ATT_ROPE_BWD=0 turns it off
    bool rb = d16 && a->att16 && att_rope_bwd(m);
    if (rb)
        be->attention_bwd_rb(be, dqb, dkb, dvb, cat ? ld : H * D, cat ? ld : KV * D, dq, dk, dv, datt, s->q, s->k,
                             s->v, s->att, s->lse, m->rope_cos, m->rope_sin, B, T, H, KV, D);
    else if (a->att16) be->attention_bwd_b(be, dq, dk, dv, datt, s->q, s->k, s->v, s->att, s->lse, B, T, H, KV, D);
    else be->attention_bwd(be, dq, dk, dv, datt, s->q, s->k, s->v, s->att, s->lse, B, T, H, KV, D);
    if (d16 && !rb) { // rotated and rounded into their bf16 copies (dq, dk, dv left as they are)
        be->rope_bwd_b(be, dqb, cat ? ld : H * D, dq, m->rope_cos, m->rope_sin, B, T, H, D, 0);
        be->rope_bwd_b(be, dkb, cat ? ld : KV * D, dk, m->rope_cos, m->rope_sin, B, T, KV, D, 0);
        if (cat) be->to_bf16_rows(be, dvb, ld, dv, N, KV * D);
        else be->to_bf16(be, dvb, dv, (size_t)(N * KV * D));
    } else if (!d16) {
        be->rope_bwd(be, dq, m->rope_cos, m->rope_sin, B, T, H, D, 0);
        be->rope_bwd(be, dk, m->rope_cos, m->rope_sin, B, T, KV, D, 0);
    }
    if (xnb && (bk->lora[LC_KEY_Q] || bk->lora[LC_KEY_K] || bk->lora[LC_KEY_V]))
        be->rmsnorm_b(be, NULL, xnb, 0, s->rstd1, x, bk->ln1, N, C, eps);
    else if (bk->lora[LC_KEY_Q] || bk->lora[LC_KEY_K] || bk->lora[LC_KEY_V])
        be->rmsnorm(be, s->xn1, s->rstd1, x, bk->ln1, N, C, eps);
    {
        const float *y3[3] = {d16 ? NULL : dq, d16 ? NULL : dk, d16 ? NULL : dv};
        const void *yb3[3] = {dqb, dkb, dvb};
        const lc_wt *w3[3] = {&bk->w[LC_KEY_Q], &bk->w[LC_KEY_K], &bk->w[LC_KEY_V]};
        lc_lora_param *p3[3] = {bk->lora[LC_KEY_Q], bk->lora[LC_KEY_K], bk->lora[LC_KEY_V]};
        float *u3[3] = {s->u[LC_KEY_Q], s->u[LC_KEY_K], s->u[LC_KEY_V]};
        uint64_t d3[3] = {DS(LC_KEY_Q), DS(LC_KEY_K), DS(LC_KEY_V)};
        projs_bwd(m, a, 3, a->dxn, false, y3, xnb ? NULL : s->xn1, w3, p3, u3, N, need_dx, d3, d16 ? yb3 : NULL, xnb,
                  cat ? &bk->qkv : NULL, ld, fqkv, NULL);
    }
    if (need_dx && d16) be->rmsnorm_bwd_b(be, a->dres, drb, ldr, a->dxn, x, bk->ln1, s->rstd1, N, C); // dres = d x
    else if (need_dx) be->rmsnorm_bwd(be, a->dres, a->dxn, x, bk->ln1, s->rstd1, N, C);
#undef DS
}

/* ------------------------------------------------------------ whole model */

/* The residual stream entering block l (l == L: the final one). */
static float *xin(lc_model *m, lc_arena *a, int l) {
    if (l == m->cfg.num_hidden_layers) return a->xf;
    if (a->mode == LC_MODE_TRAIN && l >= m->first) return a->saved[l].x;
    return a->xpp[l & 1];
}

/* The acts block l keeps its forward in. */
static lc_acts *acts_of(lc_model *m, lc_arena *a, int l) {
    if (a->mode == LC_MODE_TRAIN && l >= m->first && a->saved[l].keep != LC_KEEP_INPUT) return &a->saved[l];
    return &a->scratch;
}

/* Embedding and all blocks: leaves the final residual stream in a->xf. */
static void forward_blocks(lc_model *m, lc_arena *a, int64_t B, int64_t T, bool train, uint64_t seed) {
    lc_backend *be = m->be;
    int L = (int)m->cfg.num_hidden_layers;
    be->embedding(be, xin(m, a, 0), a->tok, &m->embed, B * T);
    for (int l = 0; l < L; l++) {
        lc_acts *s = acts_of(m, a, l), t;
        // packed by its recompute, not here (with bf16 gate/up the forward writes the shared
        // pair anyway, and takes h's bf16 copy as the kept blocks do)
        if (s->gu && s->gu == a->gus && l < L - 1 && !a->g16)
            t = *s, t.gu = NULL, s = &t;
        lc_block_forward(m, l, s, xin(m, a, l), xin(m, a, l + 1), B, T, 0, s->k, s->v, s->k, s->v, T,
                         train, seed, a);
    }
}

/* Final norm, lm_head and cross-entropy in chunks of rows: the summed loss is added to
 * m->scal->loss_sum (backend memory); with grad also a->dxn = d(loss · grad_scale)/d(normed
 * final stream), grad_scale read from m->scal on the backend. */
static void head_loss(lc_model *m, lc_arena *a, int64_t N, bool grad) {
    lc_backend *be = m->be;
    int64_t C = m->cfg.hidden_size, V = m->cfg.vocab_size;
    be->rmsnorm(be, a->xnf, a->rstdf, a->xf, m->norm_f, N, C, (float)m->cfg.rms_norm_eps);
    for (int64_t r0 = 0; r0 < N; r0 += a->chunk) {
        int64_t n = N - r0 < a->chunk ? N - r0 : a->chunk;
        be->matmul(be, a->logits, a->xnf + r0 * C, &m->lm_head, NULL, n, false);
        be->cross_entropy_sum(be, &m->scal->loss_sum, a->logits, a->tgt + r0, n, V,
                              grad ? &m->scal->grad_scale : NULL);
        if (grad) be->matmul_dx(be, a->dxn + r0 * C, a->logits, &m->lm_head, n, false);
    }
}

static int64_t count_targets(const lc_batch *b) {
    int64_t n = 0;
    for (int64_t i = 0; i < b->B * b->T; i++) n += b->targets[i] >= 0;
    return n;
}

static void upload_ids(lc_model *m, lc_arena *a, const lc_batch *b) {
    size_t n = (size_t)(b->B * b->T) * sizeof(int32_t);
    m->be->upload(m->be, a->tok, b->tokens, n);
    if (b->targets) m->be->upload(m->be, a->tgt, b->targets, n);
}

/* Sets the step's numbers in backend memory: loss sum 0, the gradient scale. */
static void scalars_set(lc_model *m, float grad_scale) {
    if (!m->scal) m->scal = m->be->alloc(m->be, sizeof *m->scal);
    lc_step_scalars h = {0.0, grad_scale, 0.0f};
    m->be->upload(m->be, m->scal, &h, sizeof h);
}

/* The loss sum of the step just synced. */
static double scalars_loss(lc_model *m) {
    lc_step_scalars h;
    m->be->download(m->be, &h, m->scal, sizeof h);
    return h.loss_sum;
}

/* What one training step's queued operations depend on besides the values in memory:
 * equal keys queue the same operations with the same arguments (->replay's contract).
 * Zeroed before filling (padding); the adapters' descriptors follow it. */
typedef struct {
    int64_t B, T;
    int32_t full, mlp, first, pack, fold, dyb, hb, tf32, xn, d16, att16, g16;
    const float *arena, *rope_cos, *rope_sin, *lora_mem, *grad_mem;
    const void *scal, *params;
    size_t n_params, floats;
    int64_t rope_len, group_rows; // group_rows: the backend's lora_group_rows (tests move it)
    int64_t ldr, ldq;             // dy16's row strides
    int64_t wmoves;               // lc_model.wmoves: the weights' pointers recorded
    int64_t room_gu;              // gate's and up's folded forward products (gu_fold_on)
    lc_lora_config lcfg;
} step_key;

typedef struct {
    lc_model *m;
    lc_arena *a;
    int64_t B, T;
    uint64_t seed;
} step_ctx;

/* The step's operations after the ids and numbers are in place: forward, loss and its
 * gradient, backward (every adapter's ga, gb =). */
static void step_body(void *ctx) {
    step_ctx *x = ctx;
    lc_model *m = x->m;
    lc_arena *a = x->a;
    lc_backend *be = m->be;
    int64_t B = x->B, T = x->T, N = B * T, C = m->cfg.hidden_size;
    int L = (int)m->cfg.num_hidden_layers;
    forward_blocks(m, a, B, T, true, x->seed);
    head_loss(m, a, N, true);
    be->zero(be, a->dres, (size_t)(N * C));
    void *drb, *dqkvb;
    int64_t ldr, ldq;
    if (dy16(m, a, N, &drb, &dqkvb, &ldr, &ldq))
        be->rmsnorm_bwd_b(be, a->dres, drb, ldr, a->dxn, a->xf, m->norm_f, a->rstdf, N, C);
    else be->rmsnorm_bwd(be, a->dres, a->dxn, a->xf, m->norm_f, a->rstdf, N, C);
    for (int l = L - 1; l >= m->first; l--) {
        lc_acts *s = acts_of(m, a, l);
        int keep = a->saved[l].keep;
        if (l < L - 1 && keep != LC_KEEP_ALL) // recompute what the block did not keep (the top's is fresh)
            block_recompute(m, l, s, xin(m, a, l), B, T, keep == LC_KEEP_INPUT, x->seed, a);
        bool rec = l < L - 1 && keep != LC_KEEP_ALL; // recomputed above (h in float32 again)
        // h as the kept blocks have it (again from the bf16 pair) where the block packed into
        // a->gus: the gradients then do not depend on what the plan recomputes
        bool hf = !(s->gu && s->gu == a->gus) &&
                  (rec || !h_only16(m, s, N) || !lc_model_packs_h(m, &m->blocks[l].w[LC_KEY_DOWN]));
        block_backward(m, l, s, xin(m, a, l), B, T, l > m->first, rec || l == L - 1, hf, x->seed, a);
    }
}

/* Queues step_body: through ->replay (recorded once per key, then replayed) where the
 * backend has it and the step is the same every time given its key; dropout draws a new
 * mask from each step's seed (a host argument of its ops), so it always runs directly. */
static void step_run(lc_model *m, step_ctx *x) {
    lc_backend *be = m->be;
    if (!be->replay || m->lcfg.dropout > 0) {
        step_body(x);
        return;
    }
    size_t np = m->n_params * sizeof *m->params;
    unsigned char *kb = xmalloc(sizeof(step_key) + np);
    step_key k;
    memset(&k, 0, sizeof k);
    k.B = x->B, k.T = x->T, k.full = x->a->full, k.mlp = x->a->mlp, k.first = m->first, k.pack = x->a->pack;
    k.att16 = x->a->att16, k.g16 = x->a->g16;
    k.fold = lc_model_folds_gate_up(m);
    k.dyb = lc_model_packs_dy(m) + 2 * lc_model_dy16_adapters(m) + 4 * lc_model_h16_ga(m) +
            8 * (m->first < m->cfg.num_hidden_layers && dh16_on(m, &m->blocks[m->first].w[LC_KEY_DOWN]));
    k.tf32 = lc_model_lora_tf32(m), k.group_rows = be->lora_group_rows;
    k.xn = xn16(m, x->a, x->B * x->T) != NULL;
    void *drb, *dqkvb;
    int64_t ldr, ldq;
    k.d16 = dy16(m, x->a, x->B * x->T, &drb, &dqkvb, &ldr, &ldq);
    k.ldr = ldr, k.ldq = ldq; // the folds' spare columns (dx_fold)
    k.wmoves = m->wmoves, k.room_gu = m->room_gu;
    k.d16 += 2 * (k.d16 && m->cfg.num_hidden_layers > 0 && qkv_cat(m, &m->blocks[m->cfg.num_hidden_layers - 1]));
    k.d16 += 4 * (k.d16 && k.att16 && att_rope_bwd(m));
    k.hb = m->cfg.num_hidden_layers > 0 && lc_model_packs_h(m, &m->blocks[0].w[LC_KEY_DOWN]);
    k.arena = x->a->base, k.floats = x->a->floats;
    k.rope_cos = m->rope_cos, k.rope_sin = m->rope_sin, k.rope_len = m->rope_len;
    k.lora_mem = m->lora_mem, k.grad_mem = m->grad_mem, k.scal = m->scal;
    k.params = m->params, k.n_params = m->n_params, k.lcfg = m->lcfg;
    memcpy(kb, &k, sizeof k);
    memcpy(kb + sizeof k, m->params, np); // the adapters' pointers and shapes
    be->replay(be, kb, sizeof k + np, step_body, x);
    free(kb);
}

int lc_model_forward_backward(lc_model *m, const lc_batch *b, double *loss, int64_t *ntok) {
    if (!m->has_lora || m->n_params == 0)
        return lc_fail("forward_backward: the model has no adapters (call lc_model_add_lora first)");
    if (check_batch(m, b, true) < 0) return -1;
    int64_t B = b->B, T = b->T;
    lc_rope_ensure(m, T);
    if (lc_model_make_room(m) < 0) return -1;
    lc_arena *a = lc_arena_prepare(m, LC_MODE_TRAIN, B, T);
    upload_ids(m, a, b);
    int64_t nt = count_targets(b);
    *ntok = nt;
    lc_backend *be = m->be;
    if (nt == 0) { // no targets: the loss and every gradient are zero
        *loss = 0.0;
        for (size_t i = 0; i < m->n_params; i++) {
            lc_lora_param *p = &m->params[i];
            be->zero(be, p->ga, (size_t)(p->in * p->r));
            be->zero(be, p->gb, (size_t)(p->r * p->out));
        }
        return be->sync(be);
    }
    scalars_set(m, (float)(1.0 / (double)nt));
    step_ctx x = {m, a, B, T, b->seed};
    step_run(m, &x);
    if (be->sync(be) != 0) return -1; // the gradients are readable on the host from here
    *loss = scalars_loss(m) / (double)nt;
    return 0;
}

int lc_model_loss(lc_model *m, const lc_batch *b, double *sum_loss, int64_t *ntok) {
    if (check_batch(m, b, true) < 0) return -1;
    lc_rope_ensure(m, b->T);
    lc_arena *a = lc_arena_prepare(m, LC_MODE_EVAL, b->B, b->T);
    upload_ids(m, a, b);
    *ntok = count_targets(b);
    scalars_set(m, 0.0f);
    forward_blocks(m, a, b->B, b->T, false, 0);
    head_loss(m, a, b->B * b->T, false);
    if (m->be->sync(m->be) != 0) return -1;
    *sum_loss = scalars_loss(m);
    return 0;
}

int lc_model_logits(lc_model *m, const lc_batch *b, float *logits) {
    if (check_batch(m, b, false) < 0) return -1;
    lc_rope_ensure(m, b->T);
    lc_arena *a = lc_arena_prepare(m, LC_MODE_EVAL, b->B, b->T);
    lc_batch nb = *b;
    nb.targets = NULL;
    upload_ids(m, a, &nb);
    lc_backend *be = m->be;
    int64_t N = b->B * b->T, C = m->cfg.hidden_size, V = m->cfg.vocab_size;
    forward_blocks(m, a, b->B, b->T, false, 0);
    be->rmsnorm(be, a->xnf, a->rstdf, a->xf, m->norm_f, N, C, (float)m->cfg.rms_norm_eps);
    for (int64_t r0 = 0; r0 < N; r0 += a->chunk) {
        int64_t n = N - r0 < a->chunk ? N - r0 : a->chunk;
        be->matmul(be, a->logits, a->xnf + r0 * C, &m->lm_head, NULL, n, false);
        be->download(be, logits + r0 * V, a->logits, (size_t)(n * V) * sizeof(float));
    }
    return be->sync(be);
}
