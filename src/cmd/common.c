/*
 * common.c — what every command shares: printing errors the one agreed way.
 */
#include <stdarg.h>
#include <stdio.h>

#include "cmd/cmd.h"
#include "core/error.h"

int lc_cmd_fail(void) {
    fprintf(stderr, "error: %s\n", lc_errmsg()[0] ? lc_errmsg() : "unknown failure");
    return 2;
}

int lc_cmd_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "error: lorac %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see 'lorac %s --help')\n", cmd);
    return 2;
}
