/*
 * generate.c — `lorac generate`: one prompt, one answer, streamed.
 *
 * Thin: loads the model (+ adapters) and tokenizer, renders the prompt with the chat
 * template (or raw with --ignore-chat-template), generates (src/model/generate) and
 * prints the text as it comes, or {"text", "tokens"} with --json.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "core/error.h"
#include "core/json.h"
#include "core/vec.h"
#include "model/generate.h"
#include "model/model.h"
#include "text/tokenizer.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: lorac generate --model DIR --prompt TEXT [options]\n\n"
            "Generates an answer to one prompt, streaming it to the terminal.\n\n"
            "  --model DIR             model folder\n"
            "  --adapter-path PATH     LoRA adapters (mlx-lm or PEFT folder, or a .safetensors)\n"
            "  --fuse                  merge the adapters into the weights in memory first: faster\n"
            "                          (rounded to the weights' dtype, as `lorac fuse` writes them)\n"
            LC_DEVICE_HELP
            "  --prompt TEXT           the prompt ('-' reads standard input)\n"
            "  --system-prompt TEXT    a system message before the prompt\n"
            "  --max-tokens N          at most N new tokens (default 100)\n"
            "  --temp T                sampling temperature; 0 is greedy (default 0)\n"
            "  --top-p P               nucleus filter (default 1: off)\n"
            "  --top-k K               keep the K most likely tokens (default 0: off)\n"
            "  --min-p P               drop tokens below P x the top probability (default 0)\n"
            "  --seed S                sampling seed (default 0)\n"
            "  --chat-template NAME    mistral, llama2, llama3, chatml or phi3 (default: detected)\n"
            "  --ignore-chat-template  use the prompt as raw text (special tokens recognised)\n"
            "  --json                  print {\"text\": ..., \"tokens\": [ids]} at the end\n"
            "  -v, --verbose           token counts and speeds on stderr\n"
            LC_QUANT_HELP
               "  -h, --help              this help\n");
}

static int print_text(void *ctx, const char *text, size_t n) {
    (void)ctx;
    fwrite(text, 1, n, stdout);
    fflush(stdout);
    return 0;
}

static int collect_text(void *ctx, const char *text, size_t n) {
    lc_buf_append((lc_buf *)ctx, text, n);
    return 0;
}

int cmd_generate(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},       {"adapter-path", required_argument, 0, 'a'},
        {"prompt", required_argument, 0, 'p'},      {"system-prompt", required_argument, 0, 's'},
        {"max-tokens", required_argument, 0, 'n'},  LC_SAMPLE_OPTIONS,
        {"chat-template", required_argument, 0, 'c'}, {"ignore-chat-template", no_argument, 0, 'r'},
        {"json", no_argument, 0, 'j'},              {"verbose", no_argument, 0, 'v'},
        LC_DEVICE_OPTION, LC_QUANT_OPTIONS,         LC_FUSE_OPTION,   {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *model = NULL, *adapters = NULL, *prompt = NULL, *system = NULL, *chat = NULL;
    long long max_tokens = 100;
    bool raw = false, json = false, verbose = false, fuse = false;
    lc_sample_config sc = lc_sample_defaults();
    int c;
    lc_load_options lo = {0};
    optind = 1;
    while ((c = getopt_long(argc, argv, "vh", opts, NULL)) != -1) {
        int so = lc_cmd_sample_opt(c, optarg, &sc);
        if (so == 2) return 2;
        if (so == 1) continue;
        switch (c) {
        case 'm': model = optarg; break;
        case 'a': adapters = optarg; break;
        case 'D': lo.device = optarg; break;
        case 'p': prompt = optarg; break;
        case 's': system = optarg; break;
        case 'n':
            if (lc_cmd_parse_int(optarg, "--max-tokens", 0, 1 << 24, &max_tokens)) return 2;
            break;
        case 'c': chat = optarg; break;
        case 'r': raw = true; break;
        case 'j': json = true; break;
        case 'v': verbose = true; break;
        case 0x160: fuse = true; break;
        case 0x151:
        case 0x152:
            if (lc_cmd_quant_opt(c, optarg, "generate", &lo) == 2) return 2;
            break;
        case 'h': usage(stdout); return 0;
        default: return lc_cmd_usage_error("generate", "invalid option");
        }
    }
    if (optind < argc) return lc_cmd_usage_error("generate", "unexpected argument '%s'", argv[optind]);
    if (!model) return lc_cmd_usage_error("generate", "give --model DIR");
    if (!prompt) return lc_cmd_usage_error("generate", "give --prompt TEXT");
    if (lc_sample_validate(&sc) != 0) return lc_cmd_fail();
    if (fuse && !adapters) return lc_cmd_usage_error("generate", "--fuse needs --adapter-path");

    lc_buf in = {0};
    if (!strcmp(prompt, "-")) {
        lc_cmd_slurp(stdin, &in);
        prompt = in.data ? in.data : "";
    }
    lc_model *m;
    lc_tokenizer *t;
    if (lc_cmd_load_model_opts(model, adapters, &lo, &m, &t) != 0) {
        lc_buf_free(&in);
        return lc_cmd_fail();
    }
    if (fuse && lc_cmd_fuse(m, adapters) != 0) {
        lc_buf_free(&in);
        lc_tokenizer_free(t);
        lc_model_free(m);
        return lc_cmd_fail();
    }
    lc_ids ids = {0}, out = {0};
    lc_buf text = {0};
    lc_gen_stats st;
    int rc = lc_cmd_prompt_ids(t, chat, raw, system, prompt, &ids);
    if (rc == 0)
        rc = lc_generate(m, t, ids.data, (int64_t)ids.len, max_tokens, &sc,
                         json ? collect_text : print_text, json ? (void *)&text : NULL, &out, &st);
    if (rc == 0) {
        if (json) {
            lc_buf j = {0};
            lc_buf_puts(&j, "{\"text\": ");
            lc_json_quote(&j, text.data ? text.data : "", text.len);
            lc_buf_puts(&j, ", \"tokens\": [");
            for (size_t i = 0; i < out.len; i++) lc_buf_printf(&j, i ? ", %d" : "%d", (int)out.data[i]);
            lc_buf_puts(&j, "]}\n");
            fwrite(j.data, 1, j.len, stdout);
            lc_buf_free(&j);
        } else {
            putchar('\n');
        }
        if (verbose)
            fprintf(stderr, "prompt: %lld tokens, %.1f tokens/s; generation: %lld tokens, %.1f tokens/s%s\n",
                    (long long)st.prompt_tokens, st.prefill_s > 0 ? st.prompt_tokens / st.prefill_s : 0,
                    (long long)st.generated, st.decode_s > 0 ? st.generated / st.decode_s : 0,
                    st.hit_eos ? " (stopped at EOS)" : "");
    }
    lc_ids_free(&ids);
    lc_ids_free(&out);
    lc_buf_free(&text);
    lc_buf_free(&in);
    lc_tokenizer_free(t);
    lc_model_free(m);
    return rc == 0 ? 0 : lc_cmd_fail();
}
