/*
 * lora.c — LoRA adapters on a model: configuration, naming, creation and
 * initialisation.
 *
 * A (in, r) starts uniform in ±1/sqrt(in) from a generator that gives the same bits on
 * every machine (splitmix64 keyed by the seed and the adapter's name, 53-bit uniforms,
 * IEEE-exact arithmetic); B (r, out) starts at zero, so a fresh adapter changes
 * nothing. Owns the adapter and gradient memory (freed with the model).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/mem.h"
#include "core/rng.h"
#include "io/safetensors.h"
#include "model/fuse.h"
#include "model/internal.h"

void lc_lora_config_default(lc_lora_config *c) {
    c->rank = 8;
    c->scale = 20.0f;
    c->dropout = 0.0f;
    c->keys = LC_KEYS_ALL;
    c->num_layers = 16;
}

static uint64_t stream_of(uint64_t seed, const char *name) {
    uint64_t h = 0xCBF29CE484222325ULL;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) h = (h ^ *p) * 0x100000001B3ULL;
    return h ^ (seed * 0x9E3779B97F4A7C15ULL);
}

int lc_model_add_lora(lc_model *m, const lc_lora_config *c, uint64_t seed) {
    if (m->has_lora) return lc_fail("lora: the model already has adapters");
    if (c->rank <= 0 || c->rank > 4096)
        return lc_fail("lora: rank %d must be between 1 and 4096", c->rank);
    if (!(c->keys & LC_KEYS_ALL))
        return lc_fail("lora: no keys chosen (choose some of q_proj, k_proj, v_proj, o_proj, "
                       "gate_proj, up_proj, down_proj)");
    if (!(c->dropout >= 0.0f && c->dropout < 1.0f))
        return lc_fail("lora: dropout %g must be in [0, 1)", (double)c->dropout);
    if (!isfinite(c->scale)) return lc_fail("lora: scale must be a finite number");
    if (c->num_layers == 0 || c->num_layers < -1)
        return lc_fail("lora: num_layers %d must be positive or -1 (all)", c->num_layers);
    const lc_model_config *cfg = &m->cfg;
    int L = (int)cfg->num_hidden_layers;
    m->lcfg = *c;
    if (m->lcfg.num_layers > L) m->lcfg.num_layers = L; // mlx-lm's default 16 on a smaller model
    m->first = lc_lora_first_layer(cfg, &m->lcfg);
    size_t n = 0, floats = 0;
    for (int l = m->first; l < L; l++)
        for (int k = 0; k < LC_NKEYS; k++)
            if (c->keys & (1u << k)) {
                int64_t in, out;
                lc_lora_key_dims(cfg, (lc_lora_key)k, &in, &out);
                n++, floats += (size_t)((in + out) * c->rank);
            }
    lc_backend *be = m->be;
    m->params = xcalloc(n, sizeof *m->params);
    // the host initialises, loads, saves and updates these: memory both sides reach
    m->lora_mem = be->alloc_shared(be, floats * sizeof(float));
    m->grad_mem = be->alloc_shared(be, floats * sizeof(float));
    size_t i = 0, off = 0;
    for (int l = m->first; l < L; l++)
        for (int k = 0; k < LC_NKEYS; k++) {
            if (!(c->keys & (1u << k))) continue;
            lc_lora_param *p = &m->params[i++];
            snprintf(p->name, sizeof p->name, "model.layers.%d.%s.%s", l,
                     k < LC_KEY_GATE ? "self_attn" : "mlp", lc_lora_key_short((lc_lora_key)k));
            p->layer = l, p->key = (lc_lora_key)k, p->r = c->rank;
            lc_lora_key_dims(cfg, (lc_lora_key)k, &p->in, &p->out);
            size_t na = (size_t)(p->in * p->r), nb = (size_t)(p->r * p->out);
            p->a = m->lora_mem + off, p->ga = m->grad_mem + off, off += na;
            p->b = m->lora_mem + off, p->gb = m->grad_mem + off, off += nb;
            uint64_t st = stream_of(seed, p->name);
            double bound = 1.0 / sqrt((double)p->in);
            for (size_t j = 0; j < na; j++) {
                double u = lc_uniform(&st); // [0, 1)
                p->a[j] = (float)((2.0 * u - 1.0) * bound);
            }
            m->blocks[l].lora[k] = p;
        }
    m->n_params = n;
    m->has_lora = true;
    m->room_od = m->room_qkv = m->room_gu = 0; // found again before the first training step (lc_model_make_room)
    for (int mode = 0; mode < 2; mode++) { // the arenas now need room for adapters
        free(m->ar[mode].saved);
        memset(&m->ar[mode], 0, sizeof m->ar[mode]);
    }
    be->release(be, m->arena);
    m->arena = NULL, m->arena_cap = 0;
    return 0;
}

/* The host's merge of adapter p into weight w (mapped from the file, read-only): the weight
 * widened to float32, the delta added by the backend's float32 ->gemm (lorac fuse's
 * arithmetic), rounded back into a copy the model owns. */
static void merge_on_host(lc_model *m, lc_wt *w, const lc_lora_param *p) {
    size_t n = (size_t)(w->rows * w->cols), es = lc_dtype_size(w->dtype);
    float *f = xmalloc(n * sizeof *f);
    lc_to_f32(f, w->data, w->dtype, n);
    lc_fuse_add_delta(m->be, f, p->a, p->b, p->in, p->out, p->r, m->lcfg.scale);
    void *d = lc_model_own(m, n * es);
    lc_from_f32(d, w->dtype, f, n);
    free(f);
    w->data = d;
}

int lc_model_merge_lora(lc_model *m) {
    if (!m->has_lora) return lc_fail("merge: the model has no adapters");
    lc_backend *be = m->be;
    for (size_t i = 0; i < m->n_params; i++) { // every weight first: nothing merged on a refusal
        const lc_wt *w = &m->blocks[m->params[i].layer].w[m->params[i].key];
        if (w->q)
            return lc_fail("merge: %s's base weight is quantized; merging needs bf16/f16/f32 weights (write a "
                           "merged model with `lorac fuse`, then quantize that)", m->params[i].name);
        if (w->dtype != LC_DT_BF16 && w->dtype != LC_DT_F16 && w->dtype != LC_DT_F32)
            return lc_fail("merge: %s's base weight is %s; merging needs bf16, f16 or f32", m->params[i].name,
                           lc_dtype_name(w->dtype));
    }
    if (be->sync(be) != 0) return -1; // the adapters' values are readable on the host from here
    for (size_t i = 0; i < m->n_params; i++) {
        lc_lora_param *p = &m->params[i];
        lc_wt *w = &m->blocks[p->layer].w[p->key];
        if (be->merge_lora) {
            if (be->merge_lora(be, w, p->a, p->b, p->r, m->lcfg.scale) != 0) return -1;
        } else {
            merge_on_host(m, w, p);
        }
        m->blocks[p->layer].lora[p->key] = NULL;
    }
    if (be->sync(be) != 0) return -1;
    be->release(be, m->lora_mem), be->release(be, m->grad_mem);
    free(m->params);
    m->lora_mem = m->grad_mem = NULL, m->params = NULL, m->n_params = 0;
    m->has_lora = false, m->first = (int)m->cfg.num_hidden_layers;
    m->room_od = m->room_qkv = m->room_gu = 0;
    for (int mode = 0; mode < 2; mode++) { // the arenas had room for adapters
        free(m->ar[mode].saved);
        memset(&m->ar[mode], 0, sizeof m->ar[mode]);
    }
    be->release(be, m->arena);
    m->arena = NULL, m->arena_cap = 0;
    return 0;
}

lc_lora_param *lc_model_lora(lc_model *m, size_t *n) {
    *n = m->n_params;
    return m->params;
}

const lc_lora_config *lc_model_lora_config(const lc_model *m) { return m->has_lora ? &m->lcfg : NULL; }
