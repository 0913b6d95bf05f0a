/*
 * rope.c — the rotary embedding's frequencies and cos/sin tables, as transformers
 * computes them: inv_freq in float32 arithmetic (the default rule, `linear` and
 * `llama3` scaling), angles pos · inv_freq rounded to float32, then cos and sin of that
 * float32 angle. transformers does this in float32 whatever the model's dtype, so this
 * is the definition lorac matches. Owns the tables (model memory); host-side setup
 * work only, the rotation itself is a backend op.
 */
#include <math.h>
#include <stdlib.h>

#include "core/mem.h"
#include "model/internal.h"

void lc_rope_inv_freq(const lc_model_config *c, float *inv) {
    int64_t D = c->head_dim, half = D / 2;
    float base = (float)c->rope_theta;
    for (int64_t i = 0; i < half; i++) {
        float e = (float)(2 * i) / (float)D;
        inv[i] = 1.0f / powf(base, e);
    }
    if (c->rope_type == LC_ROPE_LINEAR) {
        for (int64_t i = 0; i < half; i++) inv[i] /= (float)c->rope_factor;
    } else if (c->rope_type == LC_ROPE_LLAMA3) {
        float factor = (float)c->rope_factor, lo = (float)c->rope_low_freq_factor;
        float hi = (float)c->rope_high_freq_factor;
        float old = (float)c->rope_original_max_position_embeddings;
        float lo_wavelen = old / lo, hi_wavelen = old / hi;
        for (int64_t i = 0; i < half; i++) {
            float wavelen = (float)(2.0 * M_PI) / inv[i];
            float f = wavelen > lo_wavelen ? inv[i] / factor : inv[i];
            float smooth = (old / wavelen - lo) / (hi - lo);
            float smoothed = (1.0f - smooth) * f / factor + smooth * f;
            bool medium = !(wavelen < hi_wavelen) && !(wavelen > lo_wavelen);
            inv[i] = medium ? smoothed : f;
        }
    }
}

void lc_rope_ensure(lc_model *m, int64_t n) {
    if (n <= m->rope_len) return;
    int64_t len = 2 * m->rope_len > n ? 2 * m->rope_len : n, half = m->cfg.head_dim / 2;
    if (len < 64) len = 64;
    float *inv = xmalloc((size_t)half * sizeof(float));
    float *cs = xmalloc((size_t)(len * half) * sizeof(float)), *sn = xmalloc((size_t)(len * half) * sizeof(float));
    lc_rope_inv_freq(&m->cfg, inv);
    for (int64_t p = 0; p < len; p++)
        for (int64_t i = 0; i < half; i++) {
            float angle = (float)p * inv[i];
            cs[p * half + i] = (float)cos((double)angle);
            sn[p * half + i] = (float)sin((double)angle);
        }
    lc_backend *be = m->be;
    be->release(be, m->rope_cos), be->release(be, m->rope_sin);
    size_t bytes = (size_t)(len * half) * sizeof(float);
    m->rope_cos = be->alloc(be, bytes), m->rope_sin = be->alloc(be, bytes);
    be->upload(be, m->rope_cos, cs, bytes), be->upload(be, m->rope_sin, sn, bytes);
    m->rope_len = len;
    free(inv), free(cs), free(sn);
}
