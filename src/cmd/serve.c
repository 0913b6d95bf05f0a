/*
 * serve.c — `lorac serve`: an OpenAI-compatible HTTP server (src/serve/server.h).
 *
 * Thin: parses the options, loads the model (+ adapters) and tokenizer, picks the chat
 * template, opens the server, prints its URL, and stops it on SIGINT/SIGTERM (SIGPIPE is
 * ignored: a client that goes away is an error on its own connection, not a signal).
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "core/error.h"
#include "core/log.h"
#include "hub/hub.h"
#include "serve/server.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: lorac serve --model DIR [options]\n\n"
            "An OpenAI-compatible HTTP server: GET /v1/models, POST /v1/chat/completions,\n"
            "POST /v1/completions (stream: true for server-sent events), GET /health.\n\n"
            "  --model DIR               model folder or Hugging Face repo id\n"
            "  --adapter-path PATH       LoRA adapters loaded at start (mlx-lm or PEFT folder)\n"
            "  --fuse                    merge those into the weights in memory (faster; per-request\n"
            "                            adapters still load onto a base of their own)\n"
            "  --device DEV              cpu, cuda or cuda:N (default: cuda when built in and a\n"
            "                            GPU answers, else cpu)\n"
            "  --quantize nf4|q4|q8      quantize the base weights at load time (default: as\n"
            "                            stored); models for per-request adapters load the same way\n"
            "  --quantize-embeddings     quantize embed_tokens and lm_head too\n"
            "  --host ADDR               address to listen on (default 127.0.0.1)\n"
            "  --port N                  port (default 8080; 0: any free port, printed)\n"
            "  --api-key KEY             require 'Authorization: Bearer KEY' (default: $LORAC_API_KEY)\n"
            "  --max-body BYTES          largest request body (default 4194304; more: 413)\n"
            "  --max-tokens-limit N      largest max_tokens a request may ask (default 4096; more: 400)\n"
            "  --default-max-tokens N    max_tokens when a request gives none (default 512)\n"
            "  --timeout S               seconds a request may take to arrive; idle keep-alive\n"
            "                            and stalled clients are closed after it (default 30)\n"
            "  --queue N                 requests that may wait for the model (default 32; more: 503)\n"
            "  --max-connections N       open connections at once (default 64; more: 503)\n"
            "  --adapter-cache N         models with per-request adapters kept loaded (default 2)\n"
            "  --chat-template NAME      mistral, llama2, llama3, chatml or phi3 (default: detected)\n"
            "  --model-id NAME           the model's name in answers (default: --model as given)\n"
            "  -h, --help                this help\n");
}

static lc_server *g_server;

static void on_signal(int sig) {
    (void)sig;
    if (g_server) lc_server_stop(g_server);
}

int cmd_serve(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},          {"adapter-path", required_argument, 0, 'a'},
        {"host", required_argument, 0, 'H'},           {"port", required_argument, 0, 'p'},
        {"api-key", required_argument, 0, 'k'},        {"max-body", required_argument, 0, 'b'},
        {"max-tokens-limit", required_argument, 0, 'L'}, {"default-max-tokens", required_argument, 0, 'D'},
        {"device", required_argument, 0, 'V'},
        {"timeout", required_argument, 0, 'T'},        {"queue", required_argument, 0, 'q'},
        {"max-connections", required_argument, 0, 'C'}, {"adapter-cache", required_argument, 0, 'A'},
        {"chat-template", required_argument, 0, 'c'},  {"model-id", required_argument, 0, 'i'},
        {"help", no_argument, 0, 'h'},                 LC_QUANT_OPTIONS, LC_FUSE_OPTION,
        {0, 0, 0, 0}};
    lc_load_options lo = {0};
    lc_serve_config sc;
    lc_serve_defaults(&sc);
    const char *model = NULL, *chat = NULL;
    sc.api_key = getenv("LORAC_API_KEY");
    if (sc.api_key && !*sc.api_key) sc.api_key = NULL;
    long long v;
    int c;
    bool fuse = false;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'a': sc.adapter_path = optarg; break;
        case 'H': sc.host = optarg; break;
        case 'p':
            if (lc_cmd_parse_int(optarg, "--port", 0, 65535, &v)) return 2;
            sc.port = (int)v;
            break;
        case 'k':
            if (!*optarg) return lc_cmd_usage_error("serve", "--api-key is empty");
            sc.api_key = optarg;
            break;
        case 'b':
            if (lc_cmd_parse_int(optarg, "--max-body", 1, 1ll << 32, &v)) return 2;
            sc.max_body = (size_t)v;
            break;
        case 'L':
            if (lc_cmd_parse_int(optarg, "--max-tokens-limit", 1, 1 << 24, &v)) return 2;
            sc.max_tokens_limit = v;
            break;
        case 'D':
            if (lc_cmd_parse_int(optarg, "--default-max-tokens", 1, 1 << 24, &v)) return 2;
            sc.default_max_tokens = v;
            break;
        case 'T':
            if (lc_cmd_parse_int(optarg, "--timeout", 1, 86400, &v)) return 2;
            sc.timeout_ms = (int)v * 1000;
            break;
        case 'q':
            if (lc_cmd_parse_int(optarg, "--queue", 1, 1 << 16, &v)) return 2;
            sc.queue_size = (int)v;
            break;
        case 'C':
            if (lc_cmd_parse_int(optarg, "--max-connections", 1, 1 << 16, &v)) return 2;
            sc.max_connections = (int)v;
            break;
        case 'A':
            if (lc_cmd_parse_int(optarg, "--adapter-cache", 1, 64, &v)) return 2;
            sc.adapter_cache = (int)v;
            break;
        case 'c': chat = optarg; break;
        case 'V': sc.device = optarg; break;
        case 'i': sc.model_id = optarg; break;
        case 'h': usage(stdout); return 0;
        case 0x160: fuse = true; break;
        case 0x151:
        case 0x152:
            if (lc_cmd_quant_opt(c, optarg, "serve", &lo) == 2) return 2;
            break;
        default: return lc_cmd_usage_error("serve", "invalid option");
        }
    }
    if (optind < argc) return lc_cmd_usage_error("serve", "unexpected argument '%s'", argv[optind]);
    if (!model) return lc_cmd_usage_error("serve", "give --model DIR");
    if (fuse && !sc.adapter_path) return lc_cmd_usage_error("serve", "--fuse needs --adapter-path");
    if (!sc.model_id) sc.model_id = model;
    if (lo.quantize_embeddings && lo.quantize.fmt == LC_QUANT_NONE)
        return lc_cmd_usage_error("serve", "--quantize-embeddings needs --quantize");
    lo.device = sc.device;
    sc.quantize = lo.quantize;
    sc.quantize_embeddings = lo.quantize_embeddings;

    char *dir = NULL;
    lc_model *m = NULL;
    lc_tokenizer *t = NULL;
    if (lc_hub_resolve_model(model, &dir) != 0 || lc_cmd_load_model_opts(dir, sc.adapter_path, &lo, &m, &t) != 0 ||
        (fuse && lc_cmd_fuse(m, sc.adapter_path) != 0)) {
        lc_tokenizer_free(t);
        lc_model_free(m);
        free(dir);
        return lc_cmd_fail();
    }
    sc.model_dir = dir;
    sc.model = m;
    sc.tok = t;
    sc.has_chat = lc_cmd_chat_family(t, chat, &sc.chat) == 0;
    int rc = 0;
    if (!sc.has_chat) {
        if (chat) {
            rc = lc_cmd_fail();
            goto out;
        }
        lc_warn("serve: chat completions are off: %s", lc_errmsg());
    }
    lc_server *s;
    if (lc_server_open(&sc, &s) != 0) {
        rc = lc_cmd_fail();
        goto out;
    }
    g_server = s;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    bool v6 = strchr(sc.host, ':') != NULL;
    printf("lorac serve: listening on http://%s%s%s:%d (model %s%s%s%s)\n", v6 ? "[" : "", sc.host, v6 ? "]" : "",
           lc_server_port(s), sc.model_id, sc.adapter_path ? ", adapters " : "",
           sc.adapter_path ? sc.adapter_path : "", sc.api_key ? ", API key required" : "");
    fflush(stdout);
    if (lc_server_run(s) != 0) rc = lc_cmd_fail();
    g_server = NULL;
    lc_server_free(s);
    lc_info("serve: stopped");
out:
    lc_tokenizer_free(t);
    lc_model_free(m);
    free(dir);
    return rc;
}
