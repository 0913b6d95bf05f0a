/*
 * error.c — the thread-local error message behind lc_fail(). See error.h.
 */
#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char g_msg[LC_ERRMSG_MAX];

int lc_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_msg, sizeof g_msg, fmt, ap);
    va_end(ap);
    return -1;
}

int lc_fail_prefix(const char *fmt, ...) {
    char old[LC_ERRMSG_MAX];
    memcpy(old, g_msg, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(g_msg, sizeof g_msg, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n + 2 >= sizeof g_msg) return -1;
    memcpy(g_msg + n, ": ", 2);
    size_t room = sizeof g_msg - (size_t)n - 2;
    size_t len = strnlen(old, sizeof old - 1);
    if (len >= room) len = room - 1;
    memcpy(g_msg + n + 2, old, len);
    g_msg[n + 2 + len] = '\0';
    return -1;
}

const char *lc_errmsg(void) { return g_msg; }

void lc_err_clear(void) { g_msg[0] = '\0'; }
