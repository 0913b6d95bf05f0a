/*
 * eval.c — `lorac eval`: token-weighted mean loss and perplexity of a data split, with or
 * without adapters; with --generate also the task metrics (an answer generated for every
 * row, scored: exact match, mnemonic, assembles); with --compare the base model and the
 * adapters side by side. Thin: loads (src/cmd/common), reads the split (src/train/data),
 * evaluates (src/train/trainer's lc_eval_loss, src/train/task), prints.
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "core/error.h"
#include "core/file.h"
#include "core/json.h"
#include "core/log.h"
#include "core/mem.h"
#include "train/data.h"
#include "train/score.h"
#include "train/task.h"
#include "train/trainer.h"

static void usage(FILE *f) {
    fprintf(f, "usage: lorac eval --model DIR --data DIR [options]\n\n"
               "Loss and perplexity of a data split (every example, token-weighted); with\n"
               "--generate also the task metrics: an answer generated for every row (greedy)\n"
               "and scored against the row's answer.\n\n"
               "  --model DIR            model folder\n"
               "  --adapter-path PATH    LoRA adapters (mlx-lm or PEFT folder, or a .safetensors)\n"
               LC_DEVICE_HELP
               "  --data DIR             folder with train/valid/test.jsonl\n"
               "  --split NAME           train, valid or test (default valid)\n"
               "  --mask-prompt          score only the completions (loss)\n"
               "  --batch-size N         examples per batch (default 4; loss)\n"
               "  --max-seq-length N     truncate longer examples (default 2048; loss)\n"
               "  --chat-template NAME   chat family for chat data (default: detected)\n"
               "  --limit N              only the first N rows of the split\n"
               "  --json                 print the summary as one JSON object\n"
               "task metrics:\n"
               "  --generate             generate and score: exact match (whitespace, operand\n"
               "                         separators and mnemonic case normalised), mnemonic\n"
               "                         match, assembles (GNU as, placeholders made concrete)\n"
               "  --compare              the base model and the adapters on the same rows, one\n"
               "                         table (needs --adapter-path; implies --generate)\n"
               "  --max-tokens N         new tokens per answer at most (default 64)\n"
               "  --report FILE          one JSON object per row: prompt, target, output(s),\n"
               "                         scores (implies --generate)\n"
               "  --assembler PATH       the assembler (default " LC_ASM_DEFAULT ")\n"
               "  --march ISA            its -march (default " LC_ASM_DEFAULT_MARCH ")\n"
               LC_QUANT_HELP
               "  -h, --help             this help\n");
}

/* One column of the results: a model (base or with adapters) over the same rows. */
typedef struct {
    const char *name;
    const char *adapters; // NULL: the base model
    double loss;
    int64_t tokens;
    lc_task_result r;
} column;

static double rate(size_t k, size_t n) { return n ? 100.0 * (double)k / (double)n : 0; }

static void json_num(lc_buf *b, const char *key, double v) {
    if (isfinite(v)) lc_buf_printf(b, "\"%s\": %.8g", key, v);
    else lc_buf_printf(b, "\"%s\": null", key);
}

/* {"loss", "ppl", "tokens", ["exact", "mnemonic", "assembles"]} of a column (rates 0..1). */
static void json_column(lc_buf *b, const column *c, bool gen) {
    lc_buf_puts(b, "{");
    json_num(b, "loss", c->loss);
    lc_buf_puts(b, ", ");
    json_num(b, "ppl", exp(c->loss));
    lc_buf_printf(b, ", \"tokens\": %lld", (long long)c->tokens);
    if (gen) {
        size_t n = c->r.n;
        lc_buf_puts(b, ", ");
        json_num(b, "exact", n ? (double)c->r.exact / (double)n : 0);
        lc_buf_puts(b, ", ");
        json_num(b, "mnemonic", n ? (double)c->r.mnemonic / (double)n : 0);
        if (c->r.measured) {
            lc_buf_puts(b, ", ");
            json_num(b, "assembles", n ? (double)c->r.assembles / (double)n : 0);
        } else {
            lc_buf_puts(b, ", \"assembles\": null");
        }
    }
    lc_buf_puts(b, "}");
}

static void json_delta(lc_buf *b, const column *x, const column *y) {
    size_t n = x->r.n;
    lc_buf_puts(b, "{");
    json_num(b, "loss", y->loss - x->loss);
    lc_buf_puts(b, ", ");
    json_num(b, "ppl", exp(y->loss) - exp(x->loss));
    lc_buf_puts(b, ", ");
    json_num(b, "exact", n ? ((double)y->r.exact - (double)x->r.exact) / (double)n : 0);
    lc_buf_puts(b, ", ");
    json_num(b, "mnemonic", n ? ((double)y->r.mnemonic - (double)x->r.mnemonic) / (double)n : 0);
    if (x->r.measured && y->r.measured) {
        lc_buf_puts(b, ", ");
        json_num(b, "assembles", n ? ((double)y->r.assembles - (double)x->r.assembles) / (double)n : 0);
    } else {
        lc_buf_puts(b, ", \"assembles\": null");
    }
    lc_buf_puts(b, "}");
}

/* The table: a row per metric, a column per model, a delta column when there are two. */
static void print_table(const column *c, size_t nc, size_t rows) {
    printf("%-10s", "metric");
    for (size_t k = 0; k < nc; k++) printf(" %12s", c[k].name);
    if (nc == 2) printf(" %12s", "delta");
    printf("\n%-10s", "loss");
    for (size_t k = 0; k < nc; k++) printf(" %12.4f", c[k].loss);
    if (nc == 2) printf(" %+12.4f", c[1].loss - c[0].loss);
    printf("\n%-10s", "ppl");
    for (size_t k = 0; k < nc; k++) printf(" %12.3f", exp(c[k].loss));
    if (nc == 2) printf(" %+12.3f", exp(c[1].loss) - exp(c[0].loss));
    printf("\n");
    static const char *const names[] = {"exact", "mnemonic", "assembles"};
    for (int m = 0; m < 3; m++) {
        printf("%-10s", names[m]);
        size_t v[2] = {0, 0};
        bool ok = true;
        for (size_t k = 0; k < nc; k++) {
            v[k] = m == 0 ? c[k].r.exact : m == 1 ? c[k].r.mnemonic : c[k].r.assembles;
            if (m == 2 && !c[k].r.measured) {
                printf(" %12s", "n/a");
                ok = false;
            } else {
                printf(" %11.1f%%", rate(v[k], rows));
            }
        }
        if (nc == 2) {
            if (ok) printf(" %+11.1f%%", rate(v[1], rows) - rate(v[0], rows));
            else printf(" %12s", "n/a");
        }
        printf("\n");
    }
}

static void report_scores(lc_buf *b, const lc_task_score *s) {
    lc_buf_printf(b, "\"exact\": %s, \"mnemonic\": %s, \"assembles\": %s", s->exact ? "true" : "false",
                  s->mnemonic ? "true" : "false",
                  s->assembles < 0 ? "null" : s->assembles ? "true" : "false");
}

/* The report: one JSON object per row. Returns 0 or -1. */
static int write_report(const char *path, const lc_task_set *s, const column *c, size_t nc) {
    lc_buf b = {0};
    for (size_t i = 0; i < s->n; i++) {
        const lc_task_row *r = &s->rows[i];
        lc_buf_printf(&b, "{\"line\": %zu, \"prompt\": ", r->line);
        lc_json_quote(&b, r->prompt, strlen(r->prompt));
        lc_buf_puts(&b, ", \"target\": ");
        lc_json_quote(&b, r->target, strlen(r->target));
        if (nc == 1) {
            lc_buf_puts(&b, ", \"output\": ");
            lc_json_quote(&b, c[0].r.output[i], strlen(c[0].r.output[i]));
            lc_buf_puts(&b, ", ");
            report_scores(&b, &c[0].r.score[i]);
        } else {
            for (size_t k = 0; k < nc; k++) {
                lc_buf_printf(&b, ", \"%s\": {\"output\": ", c[k].name);
                lc_json_quote(&b, c[k].r.output[i], strlen(c[k].r.output[i]));
                lc_buf_puts(&b, ", ");
                report_scores(&b, &c[k].r.score[i]);
                lc_buf_puts(&b, "}");
            }
        }
        lc_buf_puts(&b, "}\n");
    }
    int rc = lc_write_file_atomic(path, b.data ? b.data : "", b.len);
    lc_buf_free(&b);
    return rc;
}

/* Loss (and answers when gen) of one column. Returns 0 or -1. */
static int run_column(column *c, const char *model, const lc_load_options *lo, const char *path,
                      const lc_data_options *dopt,
                      int64_t B, int64_t L, size_t limit, bool gen, int64_t max_tokens,
                      lc_task_set *set) {
    lc_model *m;
    lc_tokenizer *t;
    if (lc_cmd_load_model_opts(model, c->adapters, lo, &m, &t) != 0) return -1;
    lc_dataset d = {0};
    int rc = lc_dataset_load(&d, path, t, dopt);
    if (rc == 0) {
        if (limit && d.n > limit) d.n = limit;
        rc = lc_eval_loss(m, &d, B, L, -1, &c->loss, &c->tokens);
        lc_dataset_free(&d);
    }
    if (rc == 0 && gen && !set->rows) rc = lc_task_set_load(set, path, t, dopt, limit);
    if (rc == 0 && gen) {
        char label[64];
        snprintf(label, sizeof label, "generate (%s)", c->name);
        rc = lc_task_generate(m, t, set, max_tokens, label, &c->r);
        if (rc == 0)
            lc_info("%s: %zu answers, %lld tokens in %.1f s", c->name, c->r.n,
                    (long long)c->r.tokens, c->r.seconds);
        else
            lc_fail_prefix("%s", path);
    }
    lc_tokenizer_free(t);
    lc_model_free(m);
    return rc;
}

int cmd_eval(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},   {"adapter-path", required_argument, 0, 'a'},
        {"data", required_argument, 0, 'd'},    {"split", required_argument, 0, 's'},
        {"mask-prompt", no_argument, 0, 'k'},   {"batch-size", required_argument, 0, 'b'},
        {"max-seq-length", required_argument, 0, 'L'}, {"chat-template", required_argument, 0, 'c'},
        {"json", no_argument, 0, 'j'},          {"generate", no_argument, 0, 'g'},
        {"compare", no_argument, 0, 'C'},       {"max-tokens", required_argument, 0, 'n'},
        {"limit", required_argument, 0, 'l'},   {"report", required_argument, 0, 'r'},
        {"assembler", required_argument, 0, 'A'}, {"march", required_argument, 0, 'R'},
        {"help", no_argument, 0, 'h'},          LC_DEVICE_OPTION, LC_QUANT_OPTIONS,
        {0, 0, 0, 0}};
    const char *model = NULL, *adapters = NULL, *data = NULL, *split = "valid", *chat = NULL;
    const char *report = NULL;
    lc_asm_config ac = {LC_ASM_DEFAULT, LC_ASM_DEFAULT_MARCH};
    long long B = 4, L = 2048, max_tokens = 64, limit = 0;
    bool mask = false, json = false, gen = false, compare = false;
    int c;
    lc_load_options lo = {0};
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'D': lo.device = optarg; break;
        case 'a': adapters = optarg; break;
        case 'd': data = optarg; break;
        case 's': split = optarg; break;
        case 'k': mask = true; break;
        case 'b':
            if (lc_cmd_parse_int(optarg, "--batch-size", 1, 1 << 20, &B)) return 2;
            break;
        case 'L':
            if (lc_cmd_parse_int(optarg, "--max-seq-length", 2, 1 << 24, &L)) return 2;
            break;
        case 'c': chat = optarg; break;
        case 'j': json = true; break;
        case 'g': gen = true; break;
        case 'C': compare = gen = true; break;
        case 'n':
            if (lc_cmd_parse_int(optarg, "--max-tokens", 1, 1 << 20, &max_tokens)) return 2;
            break;
        case 'l':
            if (lc_cmd_parse_int(optarg, "--limit", 1, 1ll << 40, &limit)) return 2;
            break;
        case 'r': report = optarg, gen = true; break;
        case 'A': ac.path = optarg; break;
        case 'R': ac.march = optarg; break;
        case 0x151:
        case 0x152:
            if (lc_cmd_quant_opt(c, optarg, "eval", &lo) == 2) return 2;
            break;
        case 'h': usage(stdout); return 0;
        default: return lc_cmd_usage_error("eval", "invalid option");
        }
    }
    if (optind < argc) return lc_cmd_usage_error("eval", "unexpected argument '%s'", argv[optind]);
    if (!model || !data) return lc_cmd_usage_error("eval", "give --model DIR and --data DIR");
    if (strcmp(split, "train") && strcmp(split, "valid") && strcmp(split, "test"))
        return lc_cmd_usage_error("eval", "--split must be train, valid or test, got '%s'", split);
    if (compare && !adapters)
        return lc_cmd_usage_error("eval", "--compare needs --adapter-path A: it compares the base "
                                          "model with those adapters");
    lc_data_options dopt = {mask, L, -1};
    if (chat) {
        lc_chat_family f;
        if (lc_chat_family_parse(chat, &f) != 0) return lc_cmd_fail();
        dopt.chat_family = (int)f;
    }
    char name[32];
    snprintf(name, sizeof name, "%s.jsonl", split);
    char *path = lc_path_join(data, name);
    if (!lc_is_file(path)) {
        fprintf(stderr, "error: %s: no such file; --data names a folder with train.jsonl, "
                        "valid.jsonl and test.jsonl (lorac prepare writes them)\n", path);
        free(path);
        return 2;
    }
    if (report) { // fail before the work, not after it
        char *dir = xstrdup(report), *slash = strrchr(dir, '/');
        if (slash) slash[slash == dir] = 0;
        bool ok = !slash || lc_is_dir(dir);
        free(dir);
        if (!ok) {
            fprintf(stderr, "error: --report %s: its folder does not exist; create it or give "
                            "another path\n", report);
            free(path);
            return 2;
        }
    }
    column cols[2] = {{0}};
    size_t nc = 0;
    if (compare) {
        cols[nc++] = (column){.name = "base"};
        cols[nc++] = (column){.name = "adapters", .adapters = adapters};
    } else {
        cols[nc++] = (column){.name = adapters ? "adapters" : "base", .adapters = adapters};
    }
    lc_task_set set = {0};
    int rc = 0;
    for (size_t k = 0; k < nc && rc == 0; k++)
        rc = run_column(&cols[k], model, &lo, path, &dopt, B, L, (size_t)limit, gen, max_tokens, &set);
    const char *asm_why = NULL;
    char why[LC_ERRMSG_MAX];
    if (rc == 0 && gen) {
        lc_task_result *rs[2] = {&cols[0].r, &cols[1].r};
        if (lc_task_assemble(&ac, rs, nc) != 0) {
            snprintf(why, sizeof why, "%s", lc_errmsg());
            asm_why = why;
            lc_warn("assembles: not measured: %s", why);
        }
    }
    if (rc == 0 && report) rc = write_report(report, &set, cols, nc);
    if (rc == 0 && json) {
        lc_buf b = {0};
        if (!gen) {
            json_column(&b, &cols[0], false);
        } else {
            lc_buf_printf(&b, "{\"rows\": %zu, \"max_tokens\": %lld, \"assembler\": ", set.n, max_tokens);
            if (asm_why) lc_buf_puts(&b, "null");
            else lc_json_quote(&b, ac.path, strlen(ac.path));
            for (size_t k = 0; k < nc; k++) {
                lc_buf_printf(&b, ", \"%s\": ", cols[k].name);
                json_column(&b, &cols[k], true);
            }
            if (nc == 2) {
                lc_buf_puts(&b, ", \"delta\": ");
                json_delta(&b, &cols[0], &cols[1]);
            }
            lc_buf_puts(&b, "}");
        }
        printf("%s\n", b.data);
        lc_buf_free(&b);
    } else if (rc == 0 && !gen) {
        printf("%s: loss %.4f, ppl %.4f over %lld tokens\n", path, cols[0].loss, exp(cols[0].loss),
               (long long)cols[0].tokens);
    } else if (rc == 0) {
        printf("%s: %zu rows, greedy, at most %lld new tokens each; loss over %lld tokens\n", path,
               set.n, max_tokens, (long long)cols[0].tokens);
        print_table(cols, nc, set.n);
        if (asm_why) printf("assembles: not measured: %s\n", asm_why);
        else printf("assembles: %s -march=%s\n", ac.path, ac.march);
    }
    for (size_t k = 0; k < nc; k++) lc_task_result_free(&cols[k].r);
    lc_task_set_free(&set);
    free(path);
    return rc == 0 ? 0 : lc_cmd_fail();
}
