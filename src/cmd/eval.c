/*
 * eval.c — `lorac eval`: token-weighted mean loss and perplexity of a data split, with
 * or without adapters. Thin: loads (src/cmd/common), reads the split (src/train/data),
 * evaluates (src/train/trainer's lc_eval_loss), prints.
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "core/error.h"
#include "core/file.h"
#include "train/data.h"
#include "train/trainer.h"

static void usage(FILE *f) {
    fprintf(f, "usage: lorac eval --model DIR --data DIR [options]\n\n"
               "Loss and perplexity of a data split (every example, token-weighted).\n\n"
               "  --model DIR            model folder\n"
               "  --adapter-path PATH    LoRA adapters (mlx-lm or PEFT folder, or a .safetensors)\n"
               "  --data DIR             folder with train/valid/test.jsonl\n"
               "  --split NAME           train, valid or test (default valid)\n"
               "  --mask-prompt          score only the completions\n"
               "  --batch-size N         examples per batch (default 4)\n"
               "  --max-seq-length N     truncate longer examples (default 2048)\n"
               "  --chat-template NAME   chat family for chat data (default: detected)\n"
               "  --json                 print {\"loss\", \"ppl\", \"tokens\"}\n"
               LC_QUANT_HELP
               "  -h, --help             this help\n");
}

int cmd_eval(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},   {"adapter-path", required_argument, 0, 'a'},
        {"data", required_argument, 0, 'd'},    {"split", required_argument, 0, 's'},
        {"mask-prompt", no_argument, 0, 'k'},   {"batch-size", required_argument, 0, 'b'},
        {"max-seq-length", required_argument, 0, 'L'}, {"chat-template", required_argument, 0, 'c'},
        {"json", no_argument, 0, 'j'},          LC_QUANT_OPTIONS,
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *model = NULL, *adapters = NULL, *data = NULL, *split = "valid", *chat = NULL;
    long long B = 4, L = 2048;
    bool mask = false, json = false;
    int c;
    lc_load_options lo = {0};
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
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
    lc_data_options dopt = {mask, L, -1};
    if (chat) {
        lc_chat_family f;
        if (lc_chat_family_parse(chat, &f) != 0) return lc_cmd_fail();
        dopt.chat_family = (int)f;
    }
    lc_model *m;
    lc_tokenizer *t;
    if (lc_cmd_load_model_opts(model, adapters, &lo, &m, &t) != 0) return lc_cmd_fail();
    char name[32];
    snprintf(name, sizeof name, "%s.jsonl", split);
    char *path = lc_path_join(data, name);
    lc_dataset d = {0};
    double loss = 0;
    int64_t ntok = 0;
    int rc = lc_dataset_load(&d, path, t, &dopt);
    if (rc == 0) rc = lc_eval_loss(m, &d, B, L, -1, &loss, &ntok);
    if (rc == 0) {
        if (json)
            printf("{\"loss\": %.6f, \"ppl\": %.6f, \"tokens\": %lld}\n", loss, exp(loss), (long long)ntok);
        else
            printf("%s: loss %.4f, ppl %.4f over %lld tokens\n", path, loss, exp(loss), (long long)ntok);
    }
    if (rc == 0 || d.ids) lc_dataset_free(&d);
    free(path);
    lc_tokenizer_free(t);
    lc_model_free(m);
    return rc == 0 ? 0 : lc_cmd_fail();
}
