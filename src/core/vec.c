/*
 * vec.c — growable byte and id arrays. See vec.h.
 */
#include "core/vec.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"

void lc_buf_reserve(lc_buf *b, size_t extra) {
    size_t need = b->len + extra + 1;
    if (need <= b->cap) return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) cap *= 2;
    b->data = xrealloc(b->data, cap);
    b->cap = cap;
}

void lc_buf_append(lc_buf *b, const void *p, size_t n) {
    lc_buf_reserve(b, n);
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void lc_buf_puts(lc_buf *b, const char *s) { lc_buf_append(b, s, strlen(s)); }

void lc_buf_putc(lc_buf *b, char c) { lc_buf_append(b, &c, 1); }

void lc_buf_printf(lc_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n <= 0) return;
    lc_buf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void lc_buf_clear(lc_buf *b) {
    b->len = 0;
    if (b->data) b->data[0] = '\0';
}

void lc_buf_free(lc_buf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void lc_ids_push(lc_ids *v, int32_t id) { lc_ids_append(v, &id, 1); }

void lc_ids_append(lc_ids *v, const int32_t *ids, size_t n) {
    if (v->len + n > v->cap) {
        size_t cap = v->cap ? v->cap : 32;
        while (cap < v->len + n) cap *= 2;
        v->data = xrealloc(v->data, cap * sizeof *v->data);
        v->cap = cap;
    }
    if (n) memcpy(v->data + v->len, ids, n * sizeof *ids);
    v->len += n;
}

void lc_ids_clear(lc_ids *v) { v->len = 0; }

void lc_ids_free(lc_ids *v) {
    free(v->data);
    v->data = NULL;
    v->len = v->cap = 0;
}
