/*
 * lora_io.c — the bridge between the model's adapters and adapter files (src/io/adapters):
 * put a loaded adapter set into a model, and view a model's adapters as a set to save.
 */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/mem.h"
#include "model/lora_io.h"

int lc_model_apply_adapters(lc_model *m, const lc_adapter_set *s, const char *what) {
    if (lc_adapters_check(s, lc_model_cfg(m), what) != 0) return -1;
    lc_lora_config c;
    lc_lora_config_default(&c);
    c.rank = (int)s->rank;
    c.scale = (float)s->scale;
    c.dropout = (float)s->dropout;
    c.keys = s->keys;
    c.num_layers = (int)s->num_layers;
    if (lc_model_add_lora(m, &c, 0) != 0) return -1;
    return lc_model_copy_adapters(m, s, what);
}

int lc_model_copy_adapters(lc_model *m, const lc_adapter_set *s, const char *what) {
    if (lc_adapters_check(s, lc_model_cfg(m), what) != 0) return -1;
    const lc_lora_config *c = lc_model_lora_config(m);
    if (!c) return lc_fail("%s: the model has no adapters to load into", what);
    if (s->rank != c->rank)
        return lc_fail("%s: rank %lld, this run's lora_parameters.rank is %d", what,
                       (long long)s->rank, c->rank);
    size_t n;
    lc_lora_param *p = lc_model_lora(m, &n);
    if (n != s->n)
        return lc_fail("%s: holds %zu adapted projections, the model expects %zu for num_layers %d "
                       "and its keys (is adapter_config.json from another run?)",
                       what, s->n, n, c->num_layers);
    for (size_t i = 0; i < n; i++) {
        const lc_lora_tensor *t = lc_adapters_find(s, p[i].layer, p[i].key);
        if (!t) return lc_fail("%s: no adapter for %s", what, p[i].name);
        memcpy(p[i].a, t->a, (size_t)(t->in * t->r) * sizeof(float));
        memcpy(p[i].b, t->b, (size_t)(t->r * t->out) * sizeof(float));
    }
    return 0;
}

int lc_model_adapter_view(lc_model *m, lc_adapter_set *s) {
    const lc_lora_config *c = lc_model_lora_config(m);
    if (!c) return lc_fail("the model has no adapters");
    size_t n;
    lc_lora_param *p = lc_model_lora(m, &n);
    memset(s, 0, sizeof *s);
    s->t = xcalloc(n ? n : 1, sizeof *s->t);
    s->n = n;
    s->rank = c->rank;
    s->scale = c->scale;
    s->dropout = c->dropout;
    s->num_layers = c->num_layers;
    s->keys = c->keys;
    for (size_t i = 0; i < n; i++) {
        lc_lora_tensor *t = &s->t[i];
        memcpy(t->name, p[i].name, sizeof t->name);
        t->layer = p[i].layer;
        t->key = p[i].key;
        t->in = p[i].in;
        t->out = p[i].out;
        t->r = p[i].r;
        t->a = p[i].a;
        t->b = p[i].b;
    }
    return 0;
}

void lc_model_adapter_view_free(lc_adapter_set *s) {
    free(s->t);
    memset(s, 0, sizeof *s);
}
