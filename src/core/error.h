/*
 * error.h — how library code reports failure.
 *
 * Library functions return 0 on success and -1 on failure after recording one line
 * of explanation with lc_fail(). The message is thread-local and names the file, the
 * place and, where possible, the fix. Only src/cmd and src/main.c print it and exit.
 * This module owns the message buffer; it never prints or exits.
 */
#ifndef LC_ERROR_H
#define LC_ERROR_H

#include <stddef.h>

#define LC_ERRMSG_MAX 1024

/* Records a printf-style message as the current error; returns -1. */
int lc_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Prepends "prefix: " to the current error message (adds context on the way up); returns -1. */
int lc_fail_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The current error message ("" when none was recorded). */
const char *lc_errmsg(void);

/* Forgets the current error. */
void lc_err_clear(void);

#endif
