/*
 * plot.c — loss curves from metrics.jsonl to SVG. See plot.h.
 *
 * Sections: the log, axes (nice ticks), the picture.
 */
#include "train/plot.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/file.h"
#include "core/json.h"
#include "core/mem.h"

/* ---------------------------------------------------------------- the log */

static void push(lc_loss_point **a, size_t *n, size_t *cap, int64_t step, double loss) {
    if (*n == *cap) {
        *cap = *cap ? 2 * *cap : 64;
        *a = xrealloc(*a, *cap * sizeof **a);
    }
    (*a)[(*n)++] = (lc_loss_point){step, loss};
}

/* Drops the points at or after step. */
static void cut(const lc_loss_point *a, size_t *n, int64_t step) {
    while (*n > 0 && a[*n - 1].step >= step) (*n)--;
}

void lc_loss_log_add(lc_loss_log *log, int64_t step, int has_train, double train, int has_val,
                     double val) {
    cut(log->train, &log->n_train, step);
    cut(log->val, &log->n_val, step);
    if (has_train && isfinite(train)) push(&log->train, &log->n_train, &log->cap_train, step, train);
    if (has_val && isfinite(val)) push(&log->val, &log->n_val, &log->cap_val, step, val);
}

int lc_loss_log_read(const char *path, lc_loss_log *log) {
    memset(log, 0, sizeof *log);
    char *text;
    size_t len;
    if (lc_read_file(path, (size_t)1 << 30, &text, &len) != 0) return -1;
    for (char *line = text; line < text + len;) {
        char *nl = memchr(line, '\n', (size_t)(text + len - line));
        size_t n = nl ? (size_t)(nl - line) : (size_t)(text + len - line);
        cJSON *j = cJSON_ParseWithLength(line, n);
        const cJSON *s = j ? cJSON_GetObjectItemCaseSensitive(j, "step") : NULL;
        if (cJSON_IsNumber(s)) {
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "train_loss");
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "val_loss");
            lc_loss_log_add(log, (int64_t)s->valuedouble, cJSON_IsNumber(t),
                            cJSON_IsNumber(t) ? t->valuedouble : 0, cJSON_IsNumber(v),
                            cJSON_IsNumber(v) ? v->valuedouble : 0);
        } else if (n > 0) {
            log->n_skipped++;
        }
        cJSON_Delete(j);
        line += n + 1;
    }
    free(text);
    return 0;
}

void lc_loss_log_free(lc_loss_log *log) {
    free(log->train);
    free(log->val);
    memset(log, 0, sizeof *log);
}

/* ---------------------------------------------------------------- axes */

/* A tick spacing of 1, 2 or 5 × 10^k giving about `want` intervals over span. */
static double nice_step(double span, int want) {
    double raw = span / want, p = pow(10, floor(log10(raw))), f = raw / p;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

static void xml_text(lc_buf *b, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '&': lc_buf_puts(b, "&amp;"); break;
        case '<': lc_buf_puts(b, "&lt;"); break;
        case '>': lc_buf_puts(b, "&gt;"); break;
        case '"': lc_buf_puts(b, "&quot;"); break;
        default:
            if ((unsigned char)*s >= 0x20 || *s == '\t') lc_buf_putc(b, *s);
        }
    }
}

/* ---------------------------------------------------------------- the picture */

enum { W = 800, H = 480, ML = 70, MR = 24, MT = 64, MB = 56 };

typedef struct {
    double x0, x1, y0, y1;
} frame;

static double px(const frame *f, double x) { return ML + (x - f->x0) / (f->x1 - f->x0) * (W - ML - MR); }
static double py(const frame *f, double y) { return H - MB - (y - f->y0) / (f->y1 - f->y0) * (H - MT - MB); }

static void series(lc_buf *b, const frame *f, const lc_loss_point *p, size_t n, const char *cls,
                   const char *color) {
    if (n == 0) return;
    lc_buf_printf(b, "<polyline class=\"%s\" fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"",
                  cls, color);
    for (size_t i = 0; i < n; i++)
        lc_buf_printf(b, "%s%.2f,%.2f", i ? " " : "", px(f, (double)p[i].step), py(f, p[i].loss));
    lc_buf_puts(b, "\"/>\n");
    if (n <= 200)
        for (size_t i = 0; i < n; i++)
            lc_buf_printf(b, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"2.5\" fill=\"%s\"><title>%s loss %.4f at "
                             "iteration %lld</title></circle>\n",
                          px(f, (double)p[i].step), py(f, p[i].loss), color,
                          strcmp(cls, "train") ? "validation" : "train", p[i].loss,
                          (long long)p[i].step);
}

void lc_loss_plot_svg(const lc_loss_log *log, const char *title, const char *subtitle, lc_buf *b) {
    frame f = {INFINITY, -INFINITY, INFINITY, -INFINITY};
    const lc_loss_point *all[2] = {log->train, log->val};
    size_t ns[2] = {log->n_train, log->n_val};
    for (int s = 0; s < 2; s++)
        for (size_t i = 0; i < ns[s]; i++) {
            double x = (double)all[s][i].step, y = all[s][i].loss;
            f.x0 = fmin(f.x0, x), f.x1 = fmax(f.x1, x), f.y0 = fmin(f.y0, y), f.y1 = fmax(f.y1, y);
        }
    if (!isfinite(f.x0)) f = (frame){0, 1, 0, 1}; // nothing logged yet
    f.x0 = f.x0 > 1 ? f.x0 : 0;
    if (f.x1 <= f.x0) f.x1 = f.x0 + 1;
    double pad = (f.y1 - f.y0) * 0.05;
    if (pad <= 0) pad = fabs(f.y0) * 0.05 + 0.05;
    f.y0 -= pad, f.y1 += pad;
    double xs = nice_step(f.x1 - f.x0, 8), ys = nice_step(f.y1 - f.y0, 6);
    if (xs < 1) xs = 1; // iterations are whole numbers
    f.x0 = floor(f.x0 / xs) * xs, f.x1 = ceil(f.x1 / xs) * xs;
    f.y0 = floor(f.y0 / ys) * ys, f.y1 = ceil(f.y1 / ys) * ys;

    lc_buf_printf(b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                     "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                     "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"12\">\n",
                  W, H, W, H);
    lc_buf_printf(b, "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n", W, H);
    lc_buf_printf(b, "<text x=\"%d\" y=\"24\" text-anchor=\"middle\" font-size=\"16\" "
                     "font-weight=\"bold\">",
                  W / 2);
    xml_text(b, title ? title : "Training loss");
    lc_buf_puts(b, "</text>\n");
    if (subtitle) {
        lc_buf_printf(b, "<text x=\"%d\" y=\"42\" text-anchor=\"middle\" fill=\"#555\">", W / 2);
        xml_text(b, subtitle);
        lc_buf_puts(b, "</text>\n");
    }
    /* grid, ticks and their labels */
    lc_buf_puts(b, "<g class=\"axes\" stroke=\"#ddd\">\n");
    for (double y = f.y0; y <= f.y1 + ys * 1e-6; y += ys)
        lc_buf_printf(b, "<line x1=\"%d\" x2=\"%d\" y1=\"%.2f\" y2=\"%.2f\"/>\n", ML, W - MR,
                      py(&f, y), py(&f, y));
    for (double x = f.x0; x <= f.x1 + xs * 1e-6; x += xs)
        lc_buf_printf(b, "<line x1=\"%.2f\" x2=\"%.2f\" y1=\"%d\" y2=\"%d\"/>\n", px(&f, x), px(&f, x),
                      MT, H - MB);
    lc_buf_puts(b, "</g>\n<g class=\"ticks\" fill=\"#333\">\n");
    int yd = ys >= 1 ? 0 : (int)ceil(-log10(ys) - 1e-9);
    for (double y = f.y0; y <= f.y1 + ys * 1e-6; y += ys)
        lc_buf_printf(b, "<text x=\"%d\" y=\"%.2f\" text-anchor=\"end\">%.*f</text>\n", ML - 6,
                      py(&f, y) + 4, yd, y);
    for (double x = f.x0; x <= f.x1 + xs * 1e-6; x += xs)
        lc_buf_printf(b, "<text x=\"%.2f\" y=\"%d\" text-anchor=\"middle\">%.0f</text>\n", px(&f, x),
                      H - MB + 18, x);
    lc_buf_puts(b, "</g>\n");
    lc_buf_printf(b, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" "
                     "stroke=\"#333\"/>\n",
                  ML, MT, W - ML - MR, H - MT - MB);
    lc_buf_printf(b, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">iteration</text>\n",
                  ML + (W - ML - MR) / 2, H - 14);
    lc_buf_printf(b, "<text x=\"18\" y=\"%d\" text-anchor=\"middle\" transform=\"rotate(-90 18 %d)\">"
                     "loss (mean cross-entropy per target token)</text>\n",
                  MT + (H - MT - MB) / 2, MT + (H - MT - MB) / 2);
    /* the curves */
    series(b, &f, log->train, log->n_train, "train", "#1f77b4");
    series(b, &f, log->val, log->n_val, "val", "#ff7f0e");
    /* the legend, top right inside the frame */
    int lx = W - MR - 190, ly = MT + 10;
    lc_buf_printf(b, "<g class=\"legend\">\n<rect x=\"%d\" y=\"%d\" width=\"180\" height=\"46\" "
                     "fill=\"white\" fill-opacity=\"0.85\" stroke=\"#999\"/>\n",
                  lx, ly);
    lc_buf_printf(b, "<line x1=\"%d\" x2=\"%d\" y1=\"%d\" y2=\"%d\" stroke=\"#1f77b4\" "
                     "stroke-width=\"2\"/><text x=\"%d\" y=\"%d\">train loss (%zu points)</text>\n",
                  lx + 8, lx + 32, ly + 15, ly + 15, lx + 38, ly + 19, log->n_train);
    lc_buf_printf(b, "<line x1=\"%d\" x2=\"%d\" y1=\"%d\" y2=\"%d\" stroke=\"#ff7f0e\" "
                     "stroke-width=\"2\"/><text x=\"%d\" y=\"%d\">validation loss (%zu points)</text>\n",
                  lx + 8, lx + 32, ly + 33, ly + 33, lx + 38, ly + 37, log->n_val);
    lc_buf_puts(b, "</g>\n</svg>\n");
}

int lc_loss_plot_file(const char *metrics_path, const char *svg_path, const char *title,
                      const char *subtitle) {
    lc_loss_log log;
    if (lc_loss_log_read(metrics_path, &log) != 0) return -1;
    lc_buf b = {0};
    lc_loss_plot_svg(&log, title, subtitle, &b);
    int rc = lc_write_file_atomic(svg_path, b.data, b.len);
    lc_buf_free(&b);
    lc_loss_log_free(&log);
    return rc;
}
