/*
 * chat.c — `lorac chat`: the recipe's interactive loop. Reads a line, answers it with
 * the model (+ adapters), streaming; keeps the conversation as history unless
 * --no-history; an optional fixed prefix (the recipe's RISC-V instruction) goes before
 * each question; `quit` or `exit` (or end of input) ends it.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "cmd/cmd.h"
#include "core/error.h"
#include "core/mem.h"
#include "core/vec.h"
#include "model/generate.h"
#include "text/chat.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: lorac chat --model DIR [options]\n\n"
            "An interactive session: type a question, get a streamed answer; 'quit' or 'exit' ends.\n\n"
            "  --model DIR            model folder\n"
            "  --adapter-path PATH    LoRA adapters (mlx-lm or PEFT folder, or a .safetensors)\n"
            "  --fuse                 merge the adapters into the weights in memory first: faster\n"
            "                         (rounded to the weights' dtype, as `lorac fuse` writes them)\n"
            LC_DEVICE_HELP
            "  --prefix TEXT          put TEXT before every question (e.g. the recipe's\n"
            "                         'Write the RISC-V assembly instruction for the following operation:\\n')\n"
            "  --system-prompt TEXT   a system message\n"
            "  --no-history           answer each question on its own\n"
            "  --max-tokens N         at most N new tokens per answer (default 256)\n"
            "  --temp T, --top-p P, --top-k K, --min-p P, --seed S   sampling (default greedy)\n"
            "  --chat-template NAME   mistral, llama2, llama3, chatml or phi3 (default: detected)\n"
            LC_QUANT_HELP
               "  -h, --help             this help\n");
}

static int print_text(void *ctx, const char *text, size_t n) {
    lc_buf_append((lc_buf *)ctx, text, n);
    fwrite(text, 1, n, stdout);
    fflush(stdout);
    return 0;
}

int cmd_chat(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},      {"adapter-path", required_argument, 0, 'a'},
        {"prefix", required_argument, 0, 'x'},     {"system-prompt", required_argument, 0, 's'},
        {"no-history", no_argument, 0, 'H'},       {"max-tokens", required_argument, 0, 'n'},
        LC_SAMPLE_OPTIONS,                         {"chat-template", required_argument, 0, 'c'},
        LC_DEVICE_OPTION, LC_QUANT_OPTIONS,        LC_FUSE_OPTION,   {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *model = NULL, *adapters = NULL, *prefix = "", *system = NULL, *chat = NULL;
    long long max_tokens = 256;
    bool history = true, fuse = false;
    lc_sample_config sc = lc_sample_defaults();
    int c;
    lc_load_options lo = {0};
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        int so = lc_cmd_sample_opt(c, optarg, &sc);
        if (so == 2) return 2;
        if (so == 1) continue;
        switch (c) {
        case 'm': model = optarg; break;
        case 'a': adapters = optarg; break;
        case 'D': lo.device = optarg; break;
        case 'x': prefix = optarg; break;
        case 's': system = optarg; break;
        case 'H': history = false; break;
        case 'n':
            if (lc_cmd_parse_int(optarg, "--max-tokens", 1, 1 << 24, &max_tokens)) return 2;
            break;
        case 'c': chat = optarg; break;
        case 0x160: fuse = true; break;
        case 0x151:
        case 0x152:
            if (lc_cmd_quant_opt(c, optarg, "chat", &lo) == 2) return 2;
            break;
        case 'h': usage(stdout); return 0;
        default: return lc_cmd_usage_error("chat", "invalid option");
        }
    }
    if (optind < argc) return lc_cmd_usage_error("chat", "unexpected argument '%s'", argv[optind]);
    if (!model) return lc_cmd_usage_error("chat", "give --model DIR");
    if (lc_sample_validate(&sc) != 0) return lc_cmd_fail();
    if (fuse && !adapters) return lc_cmd_usage_error("chat", "--fuse needs --adapter-path");
    /* C-style escapes in --prefix ("\n") as the recipe writes it on a command line */
    lc_buf pre = {0};
    for (const char *p = prefix; *p; p++) {
        if (p[0] == '\\' && p[1] == 'n') lc_buf_putc(&pre, '\n'), p++;
        else lc_buf_putc(&pre, *p);
    }
    lc_model *m;
    lc_tokenizer *t;
    if (lc_cmd_load_model_opts(model, adapters, &lo, &m, &t) != 0) {
        lc_buf_free(&pre);
        return lc_cmd_fail();
    }
    if (fuse && lc_cmd_fuse(m, adapters) != 0) {
        lc_buf_free(&pre);
        lc_tokenizer_free(t);
        lc_model_free(m);
        return lc_cmd_fail();
    }
    lc_chat_family fam;
    if (lc_cmd_chat_family(t, chat, &fam) != 0) {
        lc_tokenizer_free(t);
        lc_model_free(m);
        return lc_cmd_fail();
    }
    /* the conversation: owned strings, system first when given */
    size_t n = 0, cap = 16;
    lc_chat_msg *msgs = xcalloc(cap, sizeof *msgs);
    if (system) msgs[n++] = (lc_chat_msg){"system", xstrdup(system)};
    size_t keep = n;
    lc_ids ids = {0};
    lc_buf answer = {0};
    char *line = NULL;
    size_t lcap = 0;
    ssize_t len;
    int rc = 0;
    fprintf(stderr, "lorac chat: type a question; 'quit' or 'exit' ends.\n");
    for (;;) {
        fputs(">> ", stdout);
        fflush(stdout);
        if ((len = getline(&line, &lcap, stdin)) < 0) break;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = '\0';
        if (!strcmp(line, "quit") || !strcmp(line, "exit")) break;
        if (len == 0) continue;
        if (!history) {
            for (size_t i = keep; i < n; i++) free((char *)msgs[i].content);
            n = keep;
        }
        if (n + 2 > cap) msgs = xrealloc(msgs, (cap *= 2) * sizeof *msgs);
        lc_buf q = {0};
        lc_buf_append(&q, pre.data ? pre.data : "", pre.len);
        lc_buf_append(&q, line, (size_t)len);
        msgs[n++] = (lc_chat_msg){"user", q.data};
        lc_ids_clear(&ids);
        lc_buf_clear(&answer);
        if (lc_chat_render_ids(t, fam, msgs, n, true, &ids) != 0 ||
            lc_generate(m, t, ids.data, (int64_t)ids.len, max_tokens, &sc, print_text, &answer,
                        NULL, NULL) != 0) {
            rc = -1;
            break;
        }
        putchar('\n');
        msgs[n++] = (lc_chat_msg){"assistant", xstrdup(answer.data ? answer.data : "")};
    }
    for (size_t i = 0; i < n; i++) free((char *)msgs[i].content);
    free(msgs);
    free(line);
    lc_ids_free(&ids);
    lc_buf_free(&answer);
    lc_buf_free(&pre);
    lc_tokenizer_free(t);
    lc_model_free(m);
    return rc == 0 ? 0 : lc_cmd_fail();
}
