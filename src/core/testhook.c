/*
 * testhook.c — test-only fault injection. See testhook.h.
 */
#include "core/testhook.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int state; // 0 not read yet, 1 inactive, 2 active
    char label[32];
    long n, seen;
} hook;

static hook g_kill, g_nan;

/* Parses "LABEL:N" from the environment variable var into h (inactive when absent or
 * malformed). */
static void hook_read(hook *h, const char *var) {
    h->state = 1;
    const char *v = getenv(var);
    const char *colon = v ? strrchr(v, ':') : NULL;
    if (!colon || colon == v || (size_t)(colon - v) >= sizeof h->label) return;
    char *end;
    long n = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || *end || n < 1) return;
    memcpy(h->label, v, (size_t)(colon - v));
    h->label[colon - v] = '\0';
    h->n = n;
    h->state = 2;
}

/* True the N-th time the active hook h passes its label. */
static bool hook_hit(hook *h, const char *var, const char *label) {
    if (h->state == 0) hook_read(h, var);
    if (h->state != 2 || strcmp(label, h->label)) return false;
    return ++h->seen == h->n;
}

void lc_test_kill_point(const char *label) {
    if (g_kill.state != 1 && hook_hit(&g_kill, "LORAC_TEST_KILL_AT", label)) raise(SIGKILL);
}

bool lc_test_nan_point(const char *label) {
    return g_nan.state != 1 && hook_hit(&g_nan, "LORAC_TEST_NAN_AT", label);
}
