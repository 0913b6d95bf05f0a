/*
 * log.h — messages to stderr and progress bars.
 *
 * lc_info/lc_warn write one line to stderr (info is silenced by lc_log_quiet). The
 * progress bar draws itself only when stderr is a terminal, with rate and ETA, at most
 * ten times a second; elsewhere it stays silent so logs are not flooded.
 */
#ifndef LC_LOG_H
#define LC_LOG_H

#include <stdbool.h>
#include <stdint.h>

void lc_log_quiet(bool quiet);
void lc_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void lc_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Monotonic time in seconds. */
double lc_now(void);

typedef struct {
    const char *label;
    int64_t total, done, done0; // done0: where this run started (a resumed run)
    double t0, last_draw;
    bool tty;
} lc_progress;

void lc_progress_start(lc_progress *p, const char *label, int64_t total);
void lc_progress_update(lc_progress *p, int64_t done);
/* Sets the starting point of a resumed run (the rate and ETA count from there). */
void lc_progress_resume_at(lc_progress *p, int64_t done);
/* Erases the bar so that a log line can be printed; the next update draws it again. */
void lc_progress_clear(lc_progress *p);
void lc_progress_finish(lc_progress *p);

#endif
