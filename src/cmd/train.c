/*
 * train.c — `lorac train`: LoRA fine-tuning from a YAML config (mlx-lm's keys) and/or
 * long flags. Thin: parses the options (src/train/options), installs the Ctrl-C
 * handler, and hands over to the trainer (src/train/trainer).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmd/cmd.h"
#include "core/error.h"
#include "train/options.h"
#include "train/trainer.h"

static volatile sig_atomic_t g_stop;

static void on_sigint(int sig) {
    (void)sig;
    if (g_stop) _exit(130); /* a second Ctrl-C: stop now */
    g_stop = 1;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: lorac train [-c config.yaml] [--option value ...] [--resume]\n\n"
            "Trains LoRA adapters. The YAML file takes mlx-lm's keys (the recipe's\n"
            "lora_config.yaml runs unchanged); every key is also a flag (batch_size is\n"
            "--batch-size), and flags override the file.\n\n"
            "  --resume               continue from the newest complete checkpoint in adapter_path\n"
            "  --chat-template NAME   chat family for prompt/completion and messages data\n"
            "                         (mistral, llama2, llama3, chatml, phi3; default: detected)\n"
            "  -h, --help             this help\n\n%s",
            lc_train_options_help());
}

int cmd_train(int argc, char **argv) {
    bool resume = false;
    int chat_family = -1;
    /* lorac's own flags first; the rest go to the options parser */
    char **rest = calloc((size_t)argc + 1, sizeof *rest);
    int n = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            free(rest);
            return 0;
        } else if (!strcmp(argv[i], "--resume")) {
            resume = true;
        } else if (!strcmp(argv[i], "--chat-template")) {
            lc_chat_family f;
            if (i + 1 >= argc || lc_chat_family_parse(argv[++i], &f) != 0) {
                free(rest);
                if (i >= argc) return lc_cmd_usage_error("train", "--chat-template needs a name");
                return lc_cmd_fail();
            }
            chat_family = (int)f;
        } else {
            rest[n++] = argv[i];
        }
    }
    lc_train_options o;
    int rc = lc_train_options_parse(&o, n, rest);
    free(rest);
    if (rc != 0) return lc_cmd_fail();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (lc_train_run(&o, resume, chat_family, &g_stop) != 0) return lc_cmd_fail();
    return 0;
}
