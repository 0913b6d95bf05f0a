/*
 * log.c — messages and progress bars. See log.h.
 */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static bool g_quiet;

void lc_log_quiet(bool quiet) { g_quiet = quiet; }

void lc_info(const char *fmt, ...) {
    if (g_quiet) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void lc_warn(const char *fmt, ...) {
    va_list ap;
    fputs("warning: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

double lc_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void fmt_secs(char *out, size_t n, double s) {
    if (s < 0 || s > 1e7) {
        snprintf(out, n, "--:--");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(out, n, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
    else snprintf(out, n, "%02ld:%02ld", t / 60, t % 60);
}

static void draw(lc_progress *p, bool final) {
    double el = lc_now() - p->t0;
    double frac = p->total > 0 ? (double)p->done / (double)p->total : 0;
    if (frac > 1) frac = 1;
    char bar[31];
    int fill = (int)(frac * 30);
    for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
    bar[30] = '\0';
    char e[32], eta[32];
    fmt_secs(e, sizeof e, el);
    double rate = el > 0 ? (double)(p->done - p->done0) / el : 0;
    fmt_secs(eta, sizeof eta, rate > 0 ? (double)(p->total - p->done) / rate : -1);
    fprintf(stderr, "\r%s [%s] %3.0f%% %lld/%lld %s<%s %.1f/s%s", p->label, bar, 100 * frac,
            (long long)p->done, (long long)p->total, e, eta, rate, final ? "\n" : "");
    fflush(stderr);
}

void lc_progress_start(lc_progress *p, const char *label, int64_t total) {
    p->label = label;
    p->total = total;
    p->done = p->done0 = 0;
    p->t0 = lc_now();
    p->last_draw = 0;
    p->tty = !g_quiet && isatty(fileno(stderr));
    if (p->tty) draw(p, false);
}

void lc_progress_update(lc_progress *p, int64_t done) {
    p->done = done;
    if (!p->tty) return;
    double t = lc_now();
    if (t - p->last_draw < 0.1) return;
    p->last_draw = t;
    draw(p, false);
}

void lc_progress_resume_at(lc_progress *p, int64_t done) {
    p->done = p->done0 = done;
    p->t0 = lc_now();
    if (p->tty) draw(p, false);
}

void lc_progress_clear(lc_progress *p) {
    if (!p->tty) return;
    fputs("\r\033[K", stderr);
    fflush(stderr);
    p->last_draw = 0;
}

void lc_progress_finish(lc_progress *p) {
    if (p->tty) draw(p, true);
}
