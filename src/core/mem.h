/*
 * mem.h — checked allocation.
 *
 * xmalloc and friends never return NULL: running out of memory prints the call site,
 * the size asked for and the reason, then aborts (there is nothing a caller could do
 * that is better). Sizes are size_t throughout; lc_mul_size checks products.
 */
#ifndef LC_MEM_H
#define LC_MEM_H

#include <stddef.h>

void *lc_xmalloc(size_t n, const char *file, int line);
void *lc_xcalloc(size_t count, size_t size, const char *file, int line);
void *lc_xrealloc(void *p, size_t n, const char *file, int line);
char *lc_xstrdup(const char *s, const char *file, int line);
char *lc_xstrndup(const char *s, size_t n, const char *file, int line);

#define xmalloc(n) lc_xmalloc((n), __FILE__, __LINE__)
#define xcalloc(c, s) lc_xcalloc((c), (s), __FILE__, __LINE__)
#define xrealloc(p, n) lc_xrealloc((p), (n), __FILE__, __LINE__)
#define xstrdup(s) lc_xstrdup((s), __FILE__, __LINE__)
#define xstrndup(s, n) lc_xstrndup((s), (n), __FILE__, __LINE__)

/* Sets *out = a * b; returns 0, or -1 when the product overflows size_t. */
int lc_mul_size(size_t a, size_t b, size_t *out);

#endif
