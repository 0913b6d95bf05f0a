/*
 * plot.h — the loss curves of a training run as an SVG picture.
 *
 * The trainer appends one JSON object per report/evaluation to
 * <adapter_path>/metrics.jsonl ({"step", "train_loss"?, "val_loss"?, ...}). This module
 * reads that log back — a resumed run appends after an interrupted one, so a step that
 * does not exceed the last one seen starts over from there: the later records replace
 * the earlier ones from that step on — and draws train and validation loss against the
 * iteration: axes with ticks and labels, a legend, a title. The SVG is written by hand
 * (no dependency) and atomically.
 *
 * Owns the arrays of an lc_loss_log; never prints or exits.
 */
#ifndef LC_TRAIN_PLOT_H
#define LC_TRAIN_PLOT_H

#include <stddef.h>
#include <stdint.h>

#include "core/vec.h"

typedef struct {
    int64_t step;
    double loss;
} lc_loss_point;

typedef struct {
    lc_loss_point *train, *val; // each in increasing step
    size_t n_train, n_val;
    size_t cap_train, cap_val;
    size_t n_skipped; // lines that were not JSON objects with a step (a torn last write)
} lc_loss_log;

/* Adds a record (has_* false: that loss is absent), restarting from step when it does not
 * exceed the last step seen. */
void lc_loss_log_add(lc_loss_log *log, int64_t step, int has_train, double train,
                     int has_val, double val);
/* Reads a metrics.jsonl file into *log (zeroed first). Returns 0, or -1 when the file
 * cannot be read. */
int lc_loss_log_read(const char *path, lc_loss_log *log);
void lc_loss_log_free(lc_loss_log *log);

/* Appends the SVG picture of log to out; title and subtitle are plain text (escaped
 * here; subtitle may be NULL). */
void lc_loss_plot_svg(const lc_loss_log *log, const char *title, const char *subtitle, lc_buf *out);
/* Reads metrics_path and writes its picture to svg_path atomically. Returns 0 or -1. */
int lc_loss_plot_file(const char *metrics_path, const char *svg_path, const char *title,
                      const char *subtitle);

#endif
