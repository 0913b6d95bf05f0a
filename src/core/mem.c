/*
 * mem.c — checked allocation. See mem.h.
 */
#include "core/mem.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void oom(const char *what, size_t n, const char *file, int line) {
    fprintf(stderr, "fatal: %s:%d: %s(%zu bytes) failed: %s\n", file, line, what, n,
            strerror(errno ? errno : ENOMEM));
    abort();
}

void *lc_xmalloc(size_t n, const char *file, int line) {
    void *p = malloc(n ? n : 1);
    if (!p) oom("malloc", n, file, line);
    return p;
}

void *lc_xcalloc(size_t count, size_t size, const char *file, int line) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) oom("calloc", count * size, file, line);
    return p;
}

void *lc_xrealloc(void *p, size_t n, const char *file, int line) {
    void *q = realloc(p, n ? n : 1);
    if (!q) oom("realloc", n, file, line);
    return q;
}

char *lc_xstrdup(const char *s, const char *file, int line) {
    return lc_xstrndup(s, strlen(s), file, line);
}

char *lc_xstrndup(const char *s, size_t n, const char *file, int line) {
    char *p = lc_xmalloc(n + 1, file, line);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

int lc_mul_size(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return -1;
    *out = a * b;
    return 0;
}
