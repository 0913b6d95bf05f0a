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
    char prefix[LC_ERRMSG_MAX], old[LC_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, g_msg, sizeof old);
    snprintf(g_msg, sizeof g_msg, "%s: %s", prefix, old);
    return -1;
}

const char *lc_errmsg(void) { return g_msg; }

void lc_err_clear(void) { g_msg[0] = '\0'; }
