/*
 * vec.h — growable arrays: bytes (lc_buf) and 32-bit token ids (lc_ids).
 *
 * Both own their storage (free with *_free) and grow geometrically. lc_buf keeps a
 * terminating NUL after its data so that it can be used as a C string.
 */
#ifndef LC_VEC_H
#define LC_VEC_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *data; // (len + 1) bytes, NUL-terminated
    size_t len, cap;
} lc_buf;

typedef struct {
    int32_t *data; // (len)
    size_t len, cap;
} lc_ids;

void lc_buf_reserve(lc_buf *b, size_t extra);
void lc_buf_append(lc_buf *b, const void *p, size_t n);
void lc_buf_puts(lc_buf *b, const char *s);
void lc_buf_putc(lc_buf *b, char c);
void lc_buf_printf(lc_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void lc_buf_clear(lc_buf *b);
void lc_buf_free(lc_buf *b);

void lc_ids_push(lc_ids *v, int32_t id);
void lc_ids_append(lc_ids *v, const int32_t *ids, size_t n);
void lc_ids_clear(lc_ids *v);
void lc_ids_free(lc_ids *v);

#endif
