/*
 * harness.h — the test harness: one executable per test file, each a list of test
 * functions run by RUN(). CHECK records a failure with file and line and carries on;
 * SKIP ends a test with a visible reason. t_summary() prints the counts line that
 * tests/run.sh adds up, and returns the exit status (non-zero when anything failed).
 */
#ifndef LC_TEST_HARNESS_H
#define LC_TEST_HARNESS_H

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/json.h"
#include "core/vec.h"

static int t_passed, t_failed, t_skipped;
static int t_cur_failed, t_cur_skipped;

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (!(cond)) t_fail_at(__FILE__, __LINE__, "%s", #cond);                            \
    } while (0)

#define CHECK_MSG(cond, ...)                                                               \
    do {                                                                                   \
        if (!(cond)) t_fail_at(__FILE__, __LINE__, __VA_ARGS__);                            \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                 \
    do {                                                                                   \
        long long t_a_ = (long long)(a), t_b_ = (long long)(b);                            \
        if (t_a_ != t_b_) t_fail_at(__FILE__, __LINE__, "%s == %s (%lld vs %lld)", #a, #b, t_a_, t_b_); \
    } while (0)

#define CHECK_EQ_STR(a, b)                                                                 \
    do {                                                                                   \
        const char *t_a_ = (a), *t_b_ = (b);                                               \
        if (!t_a_ || !t_b_ || strcmp(t_a_, t_b_))                                          \
            t_fail_at(__FILE__, __LINE__, "%s == %s (\"%s\" vs \"%s\")", #a, #b,            \
                      t_a_ ? t_a_ : "(null)", t_b_ ? t_b_ : "(null)");                     \
    } while (0)

/* Checks that a library call returned 0, printing its error otherwise. */
#define CHECK_OK(call)                                                                     \
    do {                                                                                   \
        if ((call) != 0) t_fail_at(__FILE__, __LINE__, "%s failed: %s", #call, lc_errmsg()); \
    } while (0)

/* Checks that a library call failed and that its message contains `needle`. */
#define CHECK_FAILS(call, needle)                                                          \
    do {                                                                                   \
        lc_err_clear();                                                                    \
        if ((call) == 0) t_fail_at(__FILE__, __LINE__, "%s should have failed", #call);    \
        else if (!strstr(lc_errmsg(), (needle)))                                           \
            t_fail_at(__FILE__, __LINE__, "%s: message \"%s\" lacks \"%s\"", #call,        \
                      lc_errmsg(), (needle));                                              \
    } while (0)

#define SKIP(...)                                                                          \
    do {                                                                                   \
        printf("  skip: ");                                                                \
        printf(__VA_ARGS__);                                                               \
        printf("\n");                                                                      \
        t_cur_skipped = 1;                                                                 \
        return;                                                                            \
    } while (0)

#define RUN(fn) t_run(#fn, fn)

__attribute__((format(printf, 3, 4), unused)) static void t_fail_at(const char *file, int line,
                                                                   const char *fmt, ...) {
    va_list ap;
    printf("  FAIL %s:%d: ", file, line);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    t_cur_failed++;
}

__attribute__((unused)) static void t_run(const char *name, void (*fn)(void)) {
    t_cur_failed = t_cur_skipped = 0;
    lc_err_clear();
    fn();
    if (t_cur_failed) {
        t_failed++;
        printf("FAIL %s\n", name);
    } else if (t_cur_skipped) {
        t_skipped++;
        printf("skip %s\n", name);
    } else {
        t_passed++;
        printf("ok   %s\n", name);
    }
    fflush(stdout);
}

__attribute__((unused)) static int t_summary(void) {
    printf("RESULT %d %d %d\n", t_passed, t_failed, t_skipped);
    return t_failed ? 1 : 0;
}

/* The shared assets folder (../shared/assets from the project root, or
 * $LORAC_SHARED/assets), or NULL when it is absent. */
__attribute__((unused)) static const char *t_assets(void) {
    static char path[4096];
    const char *root = getenv("LORAC_SHARED");
    snprintf(path, sizeof path, "%s/assets", root ? root : "../shared");
    FILE *f;
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/README.md", path);
    if (!(f = fopen(probe, "r"))) return NULL;
    fclose(f);
    return path;
}

/* Decodes the string value of "key" in a one-line JSON object through lc_json_unquote
 * (cJSON stops at \u0000, which fixture corpora hold). Returns 0, or -1 when absent. */
__attribute__((unused)) static int t_json_string_field(const char *line, const char *key,
                                                       lc_buf *out) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\": \"", key);
    const char *p = strstr(line, pat);
    if (!p) return -1;
    const char *start = p + strlen(pat) - 1, *e = start + 1;
    while (*e && *e != '"') e += (*e == '\\' && e[1]) ? 2 : 1;
    if (!*e) return -1;
    return lc_json_unquote(start, (size_t)(e - start) + 1, key, out);
}

#endif
