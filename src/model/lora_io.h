/*
 * lora_io.h — moving adapters between a model and adapter files (src/io/adapters.h).
 */
#ifndef LC_LORA_IO_H
#define LC_LORA_IO_H

#include "io/adapters.h"
#include "model/model.h"

/* Adds adapters shaped as s (rank, scale, keys, layers) to m and copies s's weights in;
 * `what` names s in errors. Returns 0 or -1. */
int lc_model_apply_adapters(lc_model *m, const lc_adapter_set *s, const char *what);
/* Copies s's weights into m's existing adapters (same rank, layers and keys). Returns 0 or -1. */
int lc_model_copy_adapters(lc_model *m, const lc_adapter_set *s, const char *what);
/* Fills s with a view of m's adapters (A and B point into the model; free the view with
 * lc_model_adapter_view_free, never lc_adapters_free). Returns 0 or -1. */
int lc_model_adapter_view(lc_model *m, lc_adapter_set *s);
void lc_model_adapter_view_free(lc_adapter_set *s);

#endif
