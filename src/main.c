/*
 * main.c — the lorac binary: dispatches to one command (src/cmd). Nothing else.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "backend/backend.h"
#include "cmd/cmd.h"

static const lc_command COMMANDS[] = {
    {"train", cmd_train, "train LoRA adapters (mlx-lm's YAML keys and flags)"},
    {"generate", cmd_generate, "answer one prompt, streaming, with or without adapters"},
    {"chat", cmd_chat, "an interactive session with a model and its adapters"},
    {"eval", cmd_eval, "loss and perplexity of a data split"},
    {"fuse", cmd_fuse, "merge adapters into the base weights; write a Hugging Face model folder"},
    {"plot", cmd_plot, "draw the train/validation loss curves of a run as an SVG"},
    {"prepare", cmd_prepare, "turn a data set file into train/valid/test JSONL"},
    {"download", cmd_download, "fetch a model or data set from the Hugging Face Hub into its cache"},
    {"serve", cmd_serve, "an OpenAI-compatible HTTP server over a model and its adapters"},
    {"info", cmd_info, "describe a model folder: architecture, sizes, tokenizer, specials"},
    {"tokenize", cmd_tokenize, "turn text into token ids with a model's tokenizer"},
    {"init", cmd_init, "create a random-weight model folder from a config.json"},
    {"quantize", cmd_quantize, "write a quantized copy of a model (nf4, or MLX's q4/q8)"},
};
static const int N_COMMANDS = (int)(sizeof COMMANDS / sizeof COMMANDS[0]);

static void usage(FILE *f) {
    fprintf(f, "lorac %s — LoRA fine-tuning of Llama/Mistral/Qwen2 models, in C\n\n", LORAC_VERSION);
    fprintf(f, "usage: lorac COMMAND [options]   (lorac COMMAND --help for its options)\n\ncommands:\n");
    for (int i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-10s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
    fprintf(f, "\n  --version  print the version and the compute backends built in\n");
}

int main(int argc, char **argv) {
    /* a write past a file-size limit (ulimit -f) fails with EFBIG and gets the usual
     * error naming the file, instead of the signal killing the process mid-save */
    signal(SIGXFSZ, SIG_IGN);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *name = argv[1];
    if (!strcmp(name, "--help") || !strcmp(name, "-h") || !strcmp(name, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(name, "--version")) {
        printf("lorac %s (backends: %s)\n", LORAC_VERSION, lc_backend_list());
        return 0;
    }
    for (int i = 0; i < N_COMMANDS; i++)
        if (COMMANDS[i].run && !strcmp(name, COMMANDS[i].name)) return COMMANDS[i].run(argc - 1, argv + 1);
    fprintf(stderr, "error: unknown command '%s' (run 'lorac --help' for the list)\n", name);
    return 2;
}
