/*
 * server.h — `lorac serve`: an OpenAI-compatible HTTP server over one model, its
 * tokenizer and its adapters.
 *
 * Endpoints: GET /v1/models, GET /v1/models/{id}, GET /health, POST /v1/chat/completions
 * and POST /v1/completions (also without the /v1 prefix, as mlx_lm.server takes them),
 * whole JSON answers or server-sent events (stream: true). Request fields follow OpenAI
 * and mlx_lm.server (max_tokens, temperature, top_p, top_k, min_p, stop, seed, stream,
 * stream_options.include_usage, n = 1, and `adapters`: a folder of adapters, relative to
 * the server's working folder, loaded on the base weights and kept in a small cache).
 * Errors are OpenAI error objects with 4xx/5xx codes.
 *
 * Threads: one accepts connections; one per open connection reads and parses requests
 * (bounded by max_connections; over it the answer is 503); one worker owns the model and
 * runs the generation jobs one at a time from a bounded queue (full: 503). The worker
 * writes each answer to its connection itself, so a stream goes out token by token; a
 * peer that goes away stops its generation. lc_server_stop (async-signal-safe) ends
 * lc_server_run: no new connections, the running generation stops, queued ones get 503.
 *
 * The server borrows the model and tokenizer and writes one log line per request
 * through lc_info; it installs no signal handlers (the command does).
 */
#ifndef LC_SERVER_H
#define LC_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/model.h"
#include "text/chat.h"
#include "text/tokenizer.h"

typedef struct {
    const char *host;           // address to listen on ("127.0.0.1", "0.0.0.0", "::1")
    int port;                   // 0: a free port (lc_server_port tells which)
    const char *api_key;        // NULL: no key; else requests need "Authorization: Bearer KEY"
    size_t max_body;            // request bodies over it get 413
    int64_t max_tokens_limit;   // the most max_tokens a request may ask (more: 400)
    int64_t default_max_tokens; // when a request gives none (capped by the context left)
    int timeout_ms;             // a request must arrive within it; idle keep-alive and stalled sends too
    int queue_size;             // generation requests that may wait behind the running one
    int max_connections;        // open connections at once
    int adapter_cache;          // models with per-request adapters kept loaded (LRU)
    const char *model_id;       // the name in /v1/models and in answers
    const char *model_dir;      // the model's folder: per-request adapters load on its weights
    const char *device;         // where per-request models load (lc_model_load_on; NULL: auto)
    lc_quant_config quantize;   // per-request models quantize at load as the served one did
    bool quantize_embeddings;   // (lc_load_options; fmt LC_QUANT_NONE: as stored)
    const char *adapter_path;   // the adapters loaded at start (NULL: none), as given
    lc_model *model;            // the model with the startup adapters (borrowed)
    const lc_tokenizer *tok;    // borrowed
    bool has_chat;              // false: chat completions answer 400 (no chat template)
    lc_chat_family chat;
} lc_serve_config;

typedef struct lc_server lc_server;

/* The defaults: 127.0.0.1:8080, no key, 4 MiB bodies, max_tokens limit 4096 (default
 * 512), 30 s timeout, queue 32, 64 connections, 2 cached adapter models. */
void lc_serve_defaults(lc_serve_config *c);
/* Binds and listens per c (copied; its strings and objects must outlive the server).
 * *out owned by the caller (lc_server_free). Returns 0 or -1 (address in use, ...). */
int lc_server_open(const lc_serve_config *c, lc_server **out);
/* The port the server listens on. */
int lc_server_port(const lc_server *s);
/* Serves until lc_server_stop; then closes every connection and returns 0 (-1 when a
 * thread could not be started). */
int lc_server_run(lc_server *s);
/* Asks lc_server_run to end. Async-signal-safe: may be called from a signal handler. */
void lc_server_stop(lc_server *s);
void lc_server_free(lc_server *s);

#endif
