/*
 * plot.c — `lorac plot`: draws the train and validation loss curves of a training run
 * (its adapter folder's metrics.jsonl) as an SVG. Thin: src/train/plot does the work.
 * `lorac train` redraws the same picture by itself after each report; this command
 * draws it again, elsewhere or with another title.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "core/error.h"
#include "core/file.h"
#include "core/mem.h"
#include "train/plot.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: lorac plot [ADAPTER_DIR] [--log FILE] [--out FILE] [--title TEXT]\n\n"
            "Draws the train and validation loss curves of a `lorac train` run as an SVG\n"
            "picture (open it in a browser). A resumed run's records replace the interrupted\n"
            "run's from the step it resumed at.\n\n"
            "  ADAPTER_DIR     the run's adapter folder (default adapters)\n"
            "  --log FILE      the metrics log (default ADAPTER_DIR/metrics.jsonl)\n"
            "  --out FILE      the picture to write (default ADAPTER_DIR/loss.svg)\n"
            "  --title TEXT    the title (default: the folder's name)\n"
            "  -h, --help      this help\n");
}

int cmd_plot(int argc, char **argv) {
    static const struct option opts[] = {{"log", required_argument, NULL, 'l'},
                                         {"out", required_argument, NULL, 'o'},
                                         {"title", required_argument, NULL, 't'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *dir = "adapters", *log = NULL, *out = NULL, *title = NULL;
    opterr = 0;
    optind = 1;
    int o;
    while ((o = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (o) {
        case 'l': log = optarg; break;
        case 'o': out = optarg; break;
        case 't': title = optarg; break;
        case 'h': usage(stdout); return 0;
        case ':': return lc_cmd_usage_error("plot", "option '%s' needs a value", argv[optind - 1]);
        default: return lc_cmd_usage_error("plot", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) dir = argv[optind++];
    if (optind < argc) return lc_cmd_usage_error("plot", "unexpected argument '%s'", argv[optind]);
    char *lp = log ? xstrdup(log) : lc_path_join(dir, "metrics.jsonl");
    char *op = out ? xstrdup(out) : lc_path_join(dir, "loss.svg");
    char deft[512];
    snprintf(deft, sizeof deft, "Loss of %.400s", log ? log : dir);
    lc_loss_log l;
    int rc = lc_loss_log_read(lp, &l);
    if (rc == 0 && l.n_train + l.n_val == 0)
        rc = lc_fail("%s: no train_loss or val_loss records (is it a lorac train metrics.jsonl?)", lp);
    if (rc == 0) {
        lc_buf b = {0};
        lc_loss_plot_svg(&l, title ? title : deft, NULL, &b);
        rc = lc_write_file_atomic(op, b.data, b.len);
        lc_buf_free(&b);
        if (rc == 0)
            printf("wrote %s: %zu train and %zu validation points%s\n", op, l.n_train, l.n_val,
                   l.n_skipped ? " (unreadable lines skipped)" : "");
    }
    if (rc == 0 || l.train || l.val) lc_loss_log_free(&l);
    free(lp);
    free(op);
    return rc == 0 ? 0 : lc_cmd_fail();
}
