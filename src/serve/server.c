/*
 * server.c — the OpenAI-compatible server: listening, connection threads, the bounded
 * generation queue and its worker, request validation, answers and streams. See server.h.
 *
 * Owns the listening socket, the connections, the queue and the models loaded for
 * per-request adapters; borrows the startup model and the tokenizer. Only the worker
 * thread touches a model.
 */
#include "serve/server.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"
#include "core/json.h"
#include "core/log.h"
#include "core/mem.h"
#include "io/adapters.h"
#include "model/generate.h"
#include "model/lora_io.h"
#include "serve/http.h"

#define MAX_HEAD 16384
#define MAX_STOPS 16

/* ---- requests and errors ---- */

typedef struct {
    int status;         // 400, 401, ...
    const char *type;   // "invalid_request_error", "server_error", ...
    const char *param;  // the request field at fault, or NULL
    const char *code;   // a machine-readable code, or NULL
    char msg[LC_ERRMSG_MAX];
} api_error;

static int reject(api_error *e, int status, const char *param, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int reject(api_error *e, int status, const char *param, const char *code, const char *fmt, ...) {
    e->status = status;
    e->type = status >= 500 ? "server_error" : status == 401 ? "authentication_error" : "invalid_request_error";
    e->param = param;
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return -1;
}

/* A generation request, validated, with owned strings. */
typedef struct {
    bool chat;                 // chat completion (messages) or completion (prompt)
    lc_chat_msg *msgs;         // (n_msgs) role and content owned
    size_t n_msgs;
    char *prompt;              // completion text, or NULL when prompt_ids are given
    lc_ids prompt_ids;         // completion given as token ids
    bool has_max_tokens;
    int64_t max_tokens;
    lc_sample_config sc;
    char *stop[MAX_STOPS];
    size_t n_stop;
    bool stream, include_usage;
    char *adapters;            // NULL: the startup adapters
} gen_req;

static void gen_req_free(gen_req *r) {
    for (size_t i = 0; i < r->n_msgs; i++) {
        free((char *)r->msgs[i].role);
        free((char *)r->msgs[i].content);
    }
    free(r->msgs);
    free(r->prompt);
    lc_ids_free(&r->prompt_ids);
    for (size_t i = 0; i < r->n_stop; i++) free(r->stop[i]);
    free(r->adapters);
    memset(r, 0, sizeof *r);
}

/* The field key of obj when present and not null, else NULL. */
static const cJSON *field(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return (v && !cJSON_IsNull(v)) ? v : NULL;
}

static int want_int(const cJSON *v, const char *param, int64_t min, int64_t max, int64_t *out, api_error *e) {
    if (!cJSON_IsNumber(v))
        return reject(e, 400, param, "invalid_type", "'%s' must be an integer, got %s", param, lc_json_type_name(v));
    double d = v->valuedouble;
    if (!isfinite(d) || d != floor(d))
        return reject(e, 400, param, "invalid_type", "'%s' must be an integer, got %g", param, d);
    if (d < (double)min || d > (double)max)
        return reject(e, 400, param, "invalid_value", "'%s' must be from %lld to %lld, got %.0f", param,
                      (long long)min, (long long)max, d);
    *out = (int64_t)d;
    return 0;
}

static int want_num(const cJSON *v, const char *param, double min, double max, bool open_min, double *out,
                    api_error *e) {
    if (!cJSON_IsNumber(v))
        return reject(e, 400, param, "invalid_type", "'%s' must be a number, got %s", param, lc_json_type_name(v));
    double d = v->valuedouble;
    if (!isfinite(d) || d < min || d > max || (open_min && d == min))
        return reject(e, 400, param, "invalid_value", "'%s' must be %s %g and <= %g, got %g", param,
                      open_min ? ">" : ">=", min, max, d);
    *out = d;
    return 0;
}

/* Message content: a string, null, or an array of {"type": "text", "text": ...} parts. */
static int message_content(const cJSON *c, size_t i, char **out, api_error *e) {
    if (!c || cJSON_IsNull(c)) {
        *out = xstrdup("");
        return 0;
    }
    if (cJSON_IsString(c)) {
        *out = xstrdup(c->valuestring);
        return 0;
    }
    if (!cJSON_IsArray(c))
        return reject(e, 400, "messages", "invalid_type", "messages[%zu].content must be a string or an array of "
                      "text parts, got %s", i, lc_json_type_name(c));
    lc_buf b = {0};
    lc_buf_puts(&b, "");
    const cJSON *part;
    size_t k = 0;
    cJSON_ArrayForEach(part, c) {
        const cJSON *type = cJSON_IsObject(part) ? field(part, "type") : NULL;
        const cJSON *text = cJSON_IsObject(part) ? field(part, "text") : NULL;
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "text") || !cJSON_IsString(text)) {
            lc_buf_free(&b);
            return reject(e, 400, "messages", "invalid_value", "messages[%zu].content[%zu]: only "
                          "{\"type\": \"text\", \"text\": \"...\"} parts are supported", i, k);
        }
        lc_buf_puts(&b, text->valuestring);
        k++;
    }
    *out = b.data;
    return 0;
}

static int parse_prompt(const cJSON *p, gen_req *r, api_error *e) {
    if (!p) return reject(e, 400, "prompt", "missing_required_parameter", "'prompt' is required");
    if (cJSON_IsString(p)) {
        r->prompt = xstrdup(p->valuestring);
        return 0;
    }
    if (!cJSON_IsArray(p))
        return reject(e, 400, "prompt", "invalid_type", "'prompt' must be a string, an array of one string or an "
                      "array of token ids, got %s", lc_json_type_name(p));
    int n = cJSON_GetArraySize(p);
    const cJSON *first = cJSON_GetArrayItem(p, 0);
    if (n == 1 && cJSON_IsString(first)) {
        r->prompt = xstrdup(first->valuestring);
        return 0;
    }
    if (n == 1 && cJSON_IsArray(first)) p = first; // [[ids]]
    if (cJSON_GetArraySize(p) == 0) return reject(e, 400, "prompt", "invalid_value", "'prompt' is empty");
    const cJSON *v;
    cJSON_ArrayForEach(v, p) {
        int64_t id;
        if (!cJSON_IsNumber(v))
            return reject(e, 400, "prompt", "invalid_value", "'prompt' must be one string or token ids (one prompt "
                          "per request): found %s in the array", lc_json_type_name(v));
        if (want_int(v, "prompt", 0, INT32_MAX, &id, e) != 0) return -1;
        lc_ids_push(&r->prompt_ids, (int32_t)id);
    }
    return 0;
}

/* Validates a request body into r. Unknown fields are ignored. Returns 0 or -1 (e set). */
static int parse_gen(const char *body, size_t n, bool chat, gen_req *r, api_error *e) {
    memset(r, 0, sizeof *r);
    r->chat = chat;
    r->sc = lc_sample_defaults();
    r->sc.seed = (uint64_t)time(NULL) * 0x9E3779B97F4A7C15ull ^ (uint64_t)(uintptr_t)r;
    cJSON *root;
    if (lc_json_parse(body, n, "request body", &root) != 0)
        return reject(e, 400, NULL, "invalid_json", "the body is not valid JSON: %s", lc_errmsg());
    int rc = -1;
    const cJSON *v;
    if (!cJSON_IsObject(root)) {
        reject(e, 400, NULL, "invalid_type", "the body must be a JSON object, got %s", lc_json_type_name(root));
        goto out;
    }
    if (chat) {
        const cJSON *msgs = field(root, "messages");
        if (!msgs) {
            reject(e, 400, "messages", "missing_required_parameter", "'messages' is required");
            goto out;
        }
        if (!cJSON_IsArray(msgs) || cJSON_GetArraySize(msgs) == 0) {
            reject(e, 400, "messages", "invalid_type", "'messages' must be a non-empty array of messages");
            goto out;
        }
        size_t cnt = (size_t)cJSON_GetArraySize(msgs), i = 0;
        r->msgs = xcalloc(cnt, sizeof *r->msgs);
        cJSON_ArrayForEach(v, msgs) {
            const cJSON *role = cJSON_IsObject(v) ? field(v, "role") : NULL;
            if (!cJSON_IsString(role)) {
                reject(e, 400, "messages", "invalid_value", "messages[%zu] must be an object with a string 'role'", i);
                goto out;
            }
            char *content = NULL;
            if (message_content(cJSON_GetObjectItemCaseSensitive(v, "content"), i, &content, e) != 0) goto out;
            r->msgs[i] = (lc_chat_msg){xstrdup(role->valuestring), content};
            r->n_msgs = ++i;
        }
    } else if (parse_prompt(field(root, "prompt"), r, e) != 0) {
        goto out;
    }
    const char *mt = field(root, "max_tokens") ? "max_tokens" : "max_completion_tokens";
    if ((v = field(root, mt))) {
        if (want_int(v, mt, 0, INT32_MAX, &r->max_tokens, e) != 0) goto out;
        r->has_max_tokens = true;
    }
    double d;
    int64_t k;
    if ((v = field(root, "temperature"))) {
        if (want_num(v, "temperature", 0, 2, false, &d, e) != 0) goto out;
        r->sc.temp = (float)d;
    }
    if ((v = field(root, "top_p"))) {
        if (want_num(v, "top_p", 0, 1, true, &d, e) != 0) goto out;
        r->sc.top_p = (float)d;
    }
    if ((v = field(root, "min_p"))) {
        if (want_num(v, "min_p", 0, 0.999999, false, &d, e) != 0) goto out;
        r->sc.min_p = (float)d;
    }
    if ((v = field(root, "top_k"))) {
        if (want_int(v, "top_k", 0, 1 << 30, &k, e) != 0) goto out;
        r->sc.top_k = (int)k;
    }
    if ((v = field(root, "seed"))) {
        if (want_int(v, "seed", INT64_MIN / 2, INT64_MAX / 2, &k, e) != 0) goto out;
        r->sc.seed = (uint64_t)k;
    }
    if ((v = field(root, "n"))) {
        if (want_int(v, "n", 1, 1, &k, e) != 0) goto out;
    }
    if ((v = field(root, "stop"))) {
        if (cJSON_IsString(v)) {
            if (*v->valuestring) r->stop[r->n_stop++] = xstrdup(v->valuestring);
        } else if (cJSON_IsArray(v)) {
            const cJSON *s;
            if (cJSON_GetArraySize(v) > MAX_STOPS) {
                reject(e, 400, "stop", "invalid_value", "'stop' takes at most %d strings", MAX_STOPS);
                goto out;
            }
            cJSON_ArrayForEach(s, v) {
                if (!cJSON_IsString(s)) {
                    reject(e, 400, "stop", "invalid_type", "'stop' must hold strings, found %s", lc_json_type_name(s));
                    goto out;
                }
                if (*s->valuestring) r->stop[r->n_stop++] = xstrdup(s->valuestring);
            }
        } else {
            reject(e, 400, "stop", "invalid_type", "'stop' must be a string or an array of strings, got %s",
                   lc_json_type_name(v));
            goto out;
        }
    }
    if ((v = field(root, "stream"))) {
        if (!cJSON_IsBool(v)) {
            reject(e, 400, "stream", "invalid_type", "'stream' must be a boolean, got %s", lc_json_type_name(v));
            goto out;
        }
        r->stream = cJSON_IsTrue(v);
    }
    if ((v = field(root, "stream_options"))) {
        const cJSON *iu = cJSON_IsObject(v) ? field(v, "include_usage") : NULL;
        if (!cJSON_IsObject(v) || (iu && !cJSON_IsBool(iu))) {
            reject(e, 400, "stream_options", "invalid_type", "'stream_options' must be an object like "
                   "{\"include_usage\": true}");
            goto out;
        }
        r->include_usage = cJSON_IsTrue(iu);
    }
    if ((v = field(root, "adapters"))) {
        if (!cJSON_IsString(v)) {
            reject(e, 400, "adapters", "invalid_type", "'adapters' must be a string (an adapter folder), got %s",
                   lc_json_type_name(v));
            goto out;
        }
        r->adapters = xstrdup(v->valuestring);
    }
    if ((v = field(root, "model")) && !cJSON_IsString(v)) {
        reject(e, 400, "model", "invalid_type", "'model' must be a string, got %s", lc_json_type_name(v));
        goto out;
    }
    rc = 0;
out:
    cJSON_Delete(root);
    if (rc != 0) gen_req_free(r);
    return rc;
}

/* {"error": {"message", "type", "param", "code"}} */
static void error_json(lc_buf *b, const api_error *e) {
    lc_buf_puts(b, "{\"error\": {\"message\": ");
    lc_json_quote(b, e->msg, strlen(e->msg));
    lc_buf_puts(b, ", \"type\": ");
    lc_json_quote(b, e->type, strlen(e->type));
    lc_buf_puts(b, ", \"param\": ");
    if (e->param) lc_json_quote(b, e->param, strlen(e->param));
    else lc_buf_puts(b, "null");
    lc_buf_puts(b, ", \"code\": ");
    if (e->code) lc_json_quote(b, e->code, strlen(e->code));
    else lc_buf_puts(b, "null");
    lc_buf_puts(b, "}}");
}

/* ---- the server ---- */

typedef struct job {
    gen_req r;
    lc_http_conn *conn;
    bool keep_alive; // in: the request's; out: whether the connection may stay open
    bool http11;     // the request was HTTP/1.1 (a stream can be chunked)
    bool done, conn_ok;
    int status;      // the answer's status, for the log
    struct job *next;
} job;

typedef struct {
    char *key; // realpath of the adapter folder
    lc_model *m;
    uint64_t used;
} cached_model;

struct lc_server {
    lc_serve_config c;
    int lfd, port;
    int wake[2];                // self-pipe: lc_server_stop writes, the accept loop wakes
    atomic_int stopping;
    pthread_mutex_t mu;
    pthread_cond_t work_cv;     // a job was queued, or stopping
    pthread_cond_t done_cv;     // a job finished
    pthread_cond_t conn_cv;     // a connection closed
    job *qhead, *qtail;
    int qlen;
    int nconn;
    int *conn_fds;              // (max_connections) open connections, -1 free
    time_t created;
    char *startup_key;          // realpath of the startup adapters, or NULL
    cached_model *cache;        // (adapter_cache), worker-only
    uint64_t tick;
    atomic_ulong next_id;
};

void lc_serve_defaults(lc_serve_config *c) {
    memset(c, 0, sizeof *c);
    c->host = "127.0.0.1";
    c->port = 8080;
    c->max_body = (size_t)4 << 20;
    c->max_tokens_limit = 4096;
    c->default_max_tokens = 512;
    c->timeout_ms = 30000;
    c->queue_size = 32;
    c->max_connections = 64;
    c->adapter_cache = 2;
}

int lc_server_open(const lc_serve_config *c, lc_server **out) {
    *out = NULL;
    if (!c->model || !c->tok || !c->model_id) return lc_fail("serve: no model to serve");
    if (c->queue_size < 1 || c->max_connections < 1 || c->timeout_ms < 1 || c->adapter_cache < 1)
        return lc_fail("serve: queue size, connections, timeout and adapter cache must be positive");
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", c->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE},
                    *res = NULL;
    int gai = getaddrinfo(c->host, portstr, &hints, &res);
    if (gai != 0) return lc_fail("serve: --host %s: %s", c->host, gai_strerror(gai));
    int fd = -1, err = 0;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 128) == 0) break;
        err = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        return lc_fail("serve: cannot listen on %s port %d: %s%s", c->host, c->port, strerror(err),
                       err == EADDRINUSE ? " (pick another --port, or --port 0 for any free one)" : "");
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int port = c->port;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                              : ((struct sockaddr_in *)&ss)->sin_port);
    lc_server *s = xcalloc(1, sizeof *s);
    s->c = *c;
    s->lfd = fd;
    s->port = port;
    if (pipe(s->wake) != 0) {
        close(fd);
        free(s);
        return lc_fail("serve: pipe: %s", strerror(errno));
    }
    fcntl(s->wake[0], F_SETFD, FD_CLOEXEC);
    fcntl(s->wake[1], F_SETFD, FD_CLOEXEC);
    fcntl(s->wake[1], F_SETFL, O_NONBLOCK);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->work_cv, NULL);
    pthread_cond_init(&s->done_cv, NULL);
    pthread_cond_init(&s->conn_cv, NULL);
    s->conn_fds = xmalloc((size_t)c->max_connections * sizeof *s->conn_fds);
    for (int i = 0; i < c->max_connections; i++) s->conn_fds[i] = -1;
    s->cache = xcalloc((size_t)c->adapter_cache, sizeof *s->cache);
    s->created = time(NULL);
    if (c->adapter_path) s->startup_key = realpath(c->adapter_path, NULL);
    atomic_init(&s->stopping, 0);
    atomic_init(&s->next_id, 1);
    *out = s;
    return 0;
}

int lc_server_port(const lc_server *s) { return s->port; }

void lc_server_stop(lc_server *s) {
    char ch = 'x';
    ssize_t w = write(s->wake[1], &ch, 1);
    (void)w;
}

void lc_server_free(lc_server *s) {
    if (!s) return;
    if (s->lfd >= 0) close(s->lfd);
    close(s->wake[0]);
    close(s->wake[1]);
    for (int i = 0; i < s->c.adapter_cache; i++) {
        free(s->cache[i].key);
        lc_model_free(s->cache[i].m);
    }
    free(s->cache);
    free(s->conn_fds);
    free(s->startup_key);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->work_cv);
    pthread_cond_destroy(&s->done_cv);
    pthread_cond_destroy(&s->conn_cv);
    free(s);
}

static bool stopping(lc_server *s) { return atomic_load(&s->stopping) != 0; }

/* Sends an error answer. Returns 0, or -1 when the peer is gone. */
static int send_error(lc_http_conn *conn, const api_error *e, bool keep_alive) {
    lc_buf b = {0};
    error_json(&b, e);
    const char *extra = e->status == 401   ? "WWW-Authenticate: Bearer\r\n"
                        : e->status == 503 ? "Retry-After: 1\r\n"
                        : NULL;
    int rc = lc_http_respond(conn, e->status, "application/json", b.data, b.len, keep_alive, extra);
    lc_buf_free(&b);
    return rc;
}

static int send_json(lc_http_conn *conn, const lc_buf *b, bool keep_alive) {
    return lc_http_respond(conn, 200, "application/json", b->data, b->len, keep_alive, NULL);
}

/* ---- the worker: models, prompts, generation ---- */

/* The model for a request's adapters: the startup one, or one from the cache (loaded on
 * a miss, evicting the least recently used). Returns 0 or -1 (e set). */
static int model_for(lc_server *s, const char *adapters, lc_model **m, api_error *e) {
    *m = s->c.model;
    if (!adapters || !*adapters) return 0;
    if (adapters[0] == '/' || !strcmp(adapters, "..") || !strncmp(adapters, "../", 3) ||
        strstr(adapters, "/../") || (strlen(adapters) >= 3 && !strcmp(adapters + strlen(adapters) - 3, "/..")))
        return reject(e, 400, "adapters", "invalid_value", "'adapters' must be a path relative to the folder the "
                      "server was started in, without '..' (got '%s')", adapters);
    char *key = realpath(adapters, NULL);
    if (!key)
        return reject(e, 400, "adapters", "invalid_value", "'adapters': %s: %s (paths are relative to the "
                      "folder the server was started in)", adapters, strerror(errno));
    if (s->startup_key && !strcmp(key, s->startup_key)) {
        free(key);
        return 0;
    }
    int n = s->c.adapter_cache, lru = 0;
    for (int i = 0; i < n; i++) {
        if (s->cache[i].key && !strcmp(s->cache[i].key, key)) {
            s->cache[i].used = ++s->tick;
            *m = s->cache[i].m;
            free(key);
            return 0;
        }
        if (!s->cache[i].key) lru = i;
        else if (s->cache[lru].key && s->cache[i].used < s->cache[lru].used) lru = i;
    }
    lc_model *nm = NULL;
    lc_adapter_set set;
    double t0 = lc_now();
    lc_load_options lo = {.quantize = s->c.quantize, .quantize_embeddings = s->c.quantize_embeddings,
                          .device = s->c.device};
    if (lc_model_load_opts(s->c.model_dir, &lo, &nm) != 0 || lc_adapters_load(adapters, &set) != 0) {
        lc_model_free(nm);
        free(key);
        return reject(e, 400, "adapters", "invalid_value", "'adapters': %s", lc_errmsg());
    }
    int rc = lc_model_apply_adapters(nm, &set, adapters);
    lc_adapters_free(&set);
    if (rc != 0) {
        lc_model_free(nm);
        free(key);
        return reject(e, 400, "adapters", "invalid_value", "'adapters': %s", lc_errmsg());
    }
    free(s->cache[lru].key);
    lc_model_free(s->cache[lru].m);
    s->cache[lru] = (cached_model){key, nm, ++s->tick};
    lc_info("serve: loaded adapters %s (%.2f s)", adapters, lc_now() - t0);
    *m = nm;
    return 0;
}

/* The prompt's ids: the chat template over the messages, or the completion text with
 * the tokenizer's specials (BOS) and never two BOS (as `lorac generate
 * --ignore-chat-template` builds it), or the given ids. Returns 0 or -1 (e set). */
static int prompt_ids(lc_server *s, const gen_req *r, lc_ids *ids, api_error *e) {
    const lc_tokenizer *t = s->c.tok;
    if (r->chat) {
        if (!s->c.has_chat)
            return reject(e, 400, "messages", "no_chat_template", "the model has no chat template lorac knows: "
                          "start the server with --chat-template NAME, or use /v1/completions");
        if (lc_chat_render_ids(t, s->c.chat, r->msgs, r->n_msgs, true, ids) != 0)
            return reject(e, 400, "messages", "invalid_value", "messages: %s", lc_errmsg());
        return 0;
    }
    if (!r->prompt) {
        int64_t V = lc_model_cfg(s->c.model)->vocab_size;
        for (size_t i = 0; i < r->prompt_ids.len; i++)
            if (r->prompt_ids.data[i] >= V)
                return reject(e, 400, "prompt", "invalid_value", "prompt token %d is outside the vocabulary (%lld)",
                              (int)r->prompt_ids.data[i], (long long)V);
        lc_ids_append(ids, r->prompt_ids.data, r->prompt_ids.len);
        return 0;
    }
    if (lc_tokenizer_encode(t, r->prompt, strlen(r->prompt), LC_TOK_ADD_SPECIAL, ids) != 0)
        return reject(e, 400, "prompt", "invalid_value", "prompt: %s", lc_errmsg());
    int32_t bos = lc_tokenizer_bos(t);
    if (ids->len >= 2 && bos >= 0 && ids->data[0] == bos && ids->data[1] == bos) {
        memmove(ids->data, ids->data + 1, (ids->len - 1) * sizeof *ids->data);
        ids->len--;
    }
    return 0;
}

/* What the generation callback needs: the stop strings, where the text stands, and the
 * stream (when streaming). */
typedef struct {
    lc_server *s;
    job *j;
    const char *id;
    const char *object;
    long long created;
    lc_buf all;   // every byte generated so far
    size_t sent;  // bytes of `all` delivered (the rest may begin a stop string)
    bool stopped; // a stop string was found
    bool dead;    // the peer went away
    bool halted;  // the server is stopping: the answer ends here (finish_reason "length")
    bool chunked; // HTTP/1.1 chunked stream (else close-delimited)
    lc_buf text;  // the answer, when not streaming
} gen_ctx;

/* Appends one server-sent event `data: <json>` for a delta of text (NULL: the final one
 * with finish_reason; "" with role for the chat opening). */
static void chunk_json(lc_buf *b, gen_ctx *g, const char *text, size_t n, const char *finish, bool role) {
    lc_buf_printf(b, "{\"id\": \"%s\", \"object\": \"%s\", \"created\": %lld, \"model\": ", g->id, g->object,
                  g->created);
    lc_json_quote(b, g->s->c.model_id, strlen(g->s->c.model_id));
    lc_buf_puts(b, ", \"system_fingerprint\": \"lorac\", \"choices\": [{\"index\": 0, ");
    if (g->j->r.chat) {
        lc_buf_puts(b, "\"delta\": {");
        if (role) lc_buf_puts(b, "\"role\": \"assistant\", ");
        if (text) {
            lc_buf_puts(b, "\"content\": ");
            lc_json_quote(b, text, n);
        } else if (b->data[b->len - 2] == ',') {
            b->len -= 2;
        }
        lc_buf_puts(b, "}");
    } else {
        lc_buf_puts(b, "\"text\": ");
        lc_json_quote(b, text ? text : "", text ? n : 0);
    }
    lc_buf_puts(b, ", \"logprobs\": null, \"finish_reason\": ");
    if (finish) lc_buf_printf(b, "\"%s\"", finish);
    else lc_buf_puts(b, "null");
    lc_buf_puts(b, "}]}");
}

/* Sends one SSE event (payload "data: ...\n\n") through the stream. */
static int send_event(gen_ctx *g, const char *payload, size_t n) {
    if (g->dead) return -1;
    lc_buf b = {0};
    if (g->chunked) lc_http_chunk(&b, payload, n);
    else lc_buf_append(&b, payload, n);
    int rc = lc_http_send_all(g->j->conn->fd, b.data, b.len, g->s->c.timeout_ms);
    lc_buf_free(&b);
    if (rc != 0) g->dead = true;
    return rc;
}

static void deliver(gen_ctx *g, const char *p, size_t n) {
    if (n == 0) return;
    if (!g->j->r.stream) {
        lc_buf_append(&g->text, p, n);
        return;
    }
    lc_buf ev = {0};
    lc_buf_puts(&ev, "data: ");
    chunk_json(&ev, g, p, n, NULL, false);
    lc_buf_puts(&ev, "\n\n");
    send_event(g, ev.data, ev.len);
    lc_buf_free(&ev);
}

/* The first occurrence of needle in hay[from..len), or -1. */
static long find_from(const char *hay, size_t len, size_t from, const char *needle) {
    size_t nl = strlen(needle);
    for (size_t i = from; i + nl <= len; i++)
        if (!memcmp(hay + i, needle, nl)) return (long)i;
    return -1;
}

/* lc_generate's callback: holds back text that may begin a stop string, cuts at the
 * first stop string (across token boundaries), streams or collects the rest. */
static int on_text(void *ctx, const char *text, size_t n) {
    gen_ctx *g = ctx;
    if (g->stopped || g->dead) return 1;
    if (stopping(g->s)) {
        g->halted = true;
        return 1;
    }
    lc_buf_append(&g->all, text, n);
    const gen_req *r = &g->j->r;
    size_t len = g->all.len, cut = len;
    long at = -1;
    for (size_t i = 0; i < r->n_stop; i++) {
        long p = find_from(g->all.data, len, g->sent, r->stop[i]);
        if (p >= 0 && (at < 0 || p < at)) at = p;
    }
    if (at >= 0) {
        deliver(g, g->all.data + g->sent, (size_t)at - g->sent);
        g->sent = (size_t)at;
        g->stopped = true;
        return 1;
    }
    for (size_t i = 0; i < r->n_stop; i++) { // the longest tail that begins a stop string
        size_t sl = strlen(r->stop[i]);
        for (size_t k = sl - 1; k > 0; k--) {
            if (k > len - g->sent) continue;
            if (!memcmp(g->all.data + len - k, r->stop[i], k)) {
                if (len - k < cut) cut = len - k;
                break;
            }
        }
    }
    deliver(g, g->all.data + g->sent, cut - g->sent);
    g->sent = cut;
    if (g->dead) return 1;
    if (lc_http_peer_closed(g->j->conn->fd)) { // (stopping also shuts the reading side)
        if (stopping(g->s)) g->halted = true;
        else g->dead = true;
        return 1;
    }
    return 0;
}

static void usage_json(lc_buf *b, int64_t prompt, int64_t completion) {
    lc_buf_printf(b, "\"usage\": {\"prompt_tokens\": %lld, \"completion_tokens\": %lld, \"total_tokens\": %lld}",
                  (long long)prompt, (long long)completion, (long long)(prompt + completion));
}

/* Runs one generation job: answers on its connection (success or error). */
static void run_job(lc_server *s, job *j) {
    gen_req *r = &j->r;
    lc_http_conn *conn = j->conn;
    api_error e = {0};
    lc_ids ids = {0};
    lc_model *m;
    j->conn_ok = true;
    if (lc_http_peer_closed(conn->fd)) { // gave up while queued
        j->conn_ok = false;
        j->status = 499;
        return;
    }
    if (model_for(s, r->adapters, &m, &e) != 0 || prompt_ids(s, r, &ids, &e) != 0) goto fail;
    int64_t P = (int64_t)ids.len, ctx_len = lc_model_cfg(m)->max_position_embeddings;
    if (P == 0) {
        reject(&e, 400, r->chat ? "messages" : "prompt", "invalid_value", "the prompt has no tokens");
        goto fail;
    }
    int64_t max_tokens = r->max_tokens;
    if (r->has_max_tokens && max_tokens > s->c.max_tokens_limit) {
        reject(&e, 400, "max_tokens", "invalid_value", "max_tokens is %lld; this server allows at most %lld "
               "(--max-tokens-limit)", (long long)max_tokens, (long long)s->c.max_tokens_limit);
        goto fail;
    }
    if (!r->has_max_tokens) {
        max_tokens = s->c.default_max_tokens < ctx_len - P ? s->c.default_max_tokens : ctx_len - P;
        if (max_tokens > s->c.max_tokens_limit) max_tokens = s->c.max_tokens_limit;
    }
    if (P >= ctx_len || P + max_tokens > ctx_len) {
        reject(&e, 400, "messages", "context_length_exceeded", "This model's maximum context length is %lld "
               "tokens. However, you requested %lld tokens (%lld in the %s, %lld in the completion). Please reduce "
               "the length of the %s or completion.", (long long)ctx_len, (long long)(P + max_tokens), (long long)P,
               r->chat ? "messages" : "prompt", (long long)max_tokens, r->chat ? "messages" : "prompt");
        e.param = r->chat ? "messages" : "prompt";
        goto fail;
    }
    if (lc_sample_validate(&r->sc) != 0) {
        reject(&e, 400, NULL, "invalid_value", "%s", lc_errmsg());
        goto fail;
    }

    char id[48];
    snprintf(id, sizeof id, "%s-%016lx%08lx", r->chat ? "chatcmpl" : "cmpl", (unsigned long)atomic_fetch_add(&s->next_id, 1),
             (unsigned long)(s->created & 0xffffffff));
    gen_ctx g = {.s = s, .j = j, .id = id, .object = r->chat ? (r->stream ? "chat.completion.chunk" : "chat.completion")
                                                           : "text_completion",
                 .created = (long long)time(NULL)};
    lc_buf out = {0};
    if (r->stream) {
        g.chunked = j->http11; // an HTTP/1.0 client cannot take chunks: the stream ends with the connection
        if (!j->http11) j->keep_alive = false;
        lc_http_head(&out, 200, "text/event-stream", g.chunked ? -1 : -2, j->keep_alive,
                     "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n");
        if (lc_http_send_all(conn->fd, out.data, out.len, s->c.timeout_ms) != 0) g.dead = true;
        lc_buf_clear(&out);
        if (r->chat && !g.dead) {
            lc_buf_puts(&out, "data: ");
            chunk_json(&out, &g, "", 0, NULL, true);
            lc_buf_puts(&out, "\n\n");
            send_event(&g, out.data, out.len);
            lc_buf_clear(&out);
        }
    }
    lc_gen_stats st = {0};
    int rc = g.dead ? 0 : lc_generate(m, s->c.tok, ids.data, P, max_tokens, &r->sc, on_text, &g, NULL, &st);
    if (rc == 0 && !g.stopped && !g.dead) deliver(&g, g.all.data + g.sent, g.all.len - g.sent);
    const char *finish = (g.stopped || st.hit_eos) && !g.halted ? "stop" : "length";
    if (g.halted) j->keep_alive = false;
    j->status = 200;
    if (rc != 0) {
        reject(&e, 500, NULL, "generation_failed", "generation failed: %s", lc_errmsg());
        j->status = 500;
    }
    if (r->stream) {
        if (rc != 0) {
            lc_buf_puts(&out, "data: ");
            error_json(&out, &e);
            lc_buf_puts(&out, "\n\n");
        } else {
            lc_buf_puts(&out, "data: ");
            chunk_json(&out, &g, NULL, 0, finish, false);
            lc_buf_puts(&out, "\n\n");
            if (r->include_usage) {
                lc_buf_printf(&out, "data: {\"id\": \"%s\", \"object\": \"%s\", \"created\": %lld, \"model\": ", id,
                              g.object, g.created);
                lc_json_quote(&out, s->c.model_id, strlen(s->c.model_id));
                lc_buf_puts(&out, ", \"choices\": [], ");
                usage_json(&out, P, st.generated);
                lc_buf_puts(&out, "}\n\n");
            }
        }
        lc_buf_puts(&out, "data: [DONE]\n\n");
        send_event(&g, out.data, out.len);
        if (g.chunked && !g.dead && lc_http_send_all(conn->fd, "0\r\n\r\n", 5, s->c.timeout_ms) != 0) g.dead = true;
        if (g.dead) j->conn_ok = false;
    } else if (g.dead) {
        j->conn_ok = false;
    } else if (rc != 0) {
        if (send_error(conn, &e, j->keep_alive) != 0) j->conn_ok = false;
    } else {
        lc_buf_printf(&out, "{\"id\": \"%s\", \"object\": \"%s\", \"created\": %lld, \"model\": ", id, g.object,
                      g.created);
        lc_json_quote(&out, s->c.model_id, strlen(s->c.model_id));
        lc_buf_puts(&out, ", \"system_fingerprint\": \"lorac\", \"choices\": [{\"index\": 0, ");
        const char *txt = g.text.data ? g.text.data : "";
        if (r->chat) {
            lc_buf_puts(&out, "\"message\": {\"role\": \"assistant\", \"content\": ");
            lc_json_quote(&out, txt, g.text.len);
            lc_buf_puts(&out, "}");
        } else {
            lc_buf_puts(&out, "\"text\": ");
            lc_json_quote(&out, txt, g.text.len);
        }
        lc_buf_printf(&out, ", \"logprobs\": null, \"finish_reason\": \"%s\"}], ", finish);
        usage_json(&out, P, st.generated);
        lc_buf_puts(&out, "}");
        if (send_json(conn, &out, j->keep_alive) != 0) j->conn_ok = false;
    }
    if (g.dead) j->status = 499;
    lc_info("serve: %s %s: %lld prompt + %lld completion tokens, finish %s, %.2f s%s", r->chat ? "chat" : "completion",
            id, (long long)P, (long long)st.generated, finish, st.prefill_s + st.decode_s,
            g.dead ? " (client gone: stopped)" : g.halted ? " (server stopping: cut short)" : "");
    lc_buf_free(&out);
    lc_buf_free(&g.all);
    lc_buf_free(&g.text);
    lc_ids_free(&ids);
    return;
fail:
    j->status = e.status;
    if (send_error(conn, &e, j->keep_alive) != 0) j->conn_ok = false;
    lc_ids_free(&ids);
}

static void *worker_main(void *arg) {
    lc_server *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (!s->qhead && !stopping(s)) pthread_cond_wait(&s->work_cv, &s->mu);
        job *j = s->qhead;
        if (!j) {
            pthread_mutex_unlock(&s->mu);
            break;
        }
        s->qhead = j->next;
        if (!s->qhead) s->qtail = NULL;
        s->qlen--;
        pthread_mutex_unlock(&s->mu);
        if (stopping(s)) {
            api_error e;
            reject(&e, 503, NULL, "server_stopping", "the server is shutting down");
            j->status = 503;
            j->conn_ok = send_error(j->conn, &e, false) == 0;
            j->keep_alive = false;
        } else {
            run_job(s, j);
        }
        pthread_mutex_lock(&s->mu);
        j->done = true;
        pthread_cond_broadcast(&s->done_cv);
        pthread_mutex_unlock(&s->mu);
    }
    return NULL;
}

/* ---- connections ---- */

/* Constant-time string comparison (the API key). */
static bool same_secret(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    unsigned diff = (unsigned)(la != lb);
    for (size_t i = 0; i < la; i++) diff |= (unsigned char)a[i] ^ (unsigned char)b[i % (lb ? lb : 1)];
    return diff == 0;
}

static void models_json(lc_server *s, lc_buf *b, bool list) {
    if (list) lc_buf_puts(b, "{\"object\": \"list\", \"data\": [");
    lc_buf_puts(b, "{\"id\": ");
    lc_json_quote(b, s->c.model_id, strlen(s->c.model_id));
    lc_buf_printf(b, ", \"object\": \"model\", \"created\": %lld, \"owned_by\": \"lorac\"}", (long long)s->created);
    if (list) lc_buf_puts(b, "]}");
}

/* Queues a generation job and waits for the worker to answer it. Returns whether the
 * connection may go on. */
static bool submit(lc_server *s, lc_http_conn *conn, gen_req *r, bool http11, bool *keep_alive, int *status) {
    job j = {.r = *r, .conn = conn, .keep_alive = *keep_alive, .http11 = http11};
    memset(r, 0, sizeof *r); // the job owns it now
    api_error e;
    pthread_mutex_lock(&s->mu);
    if (stopping(s) || s->qlen >= s->c.queue_size) {
        int full = !stopping(s);
        pthread_mutex_unlock(&s->mu);
        if (full) reject(&e, 503, NULL, "queue_full", "the server is busy: %d requests are waiting; retry later",
                         s->c.queue_size);
        else reject(&e, 503, NULL, "server_stopping", "the server is shutting down");
        gen_req_free(&j.r);
        *status = 503;
        *keep_alive = *keep_alive && full;
        return send_error(conn, &e, *keep_alive) == 0;
    }
    if (s->qtail) s->qtail->next = &j;
    else s->qhead = &j;
    s->qtail = &j;
    s->qlen++;
    pthread_cond_signal(&s->work_cv);
    while (!j.done) pthread_cond_wait(&s->done_cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    gen_req_free(&j.r);
    *keep_alive = j.keep_alive;
    *status = j.status;
    return j.conn_ok;
}

/* Answers one request. Returns whether the connection may go on. */
static bool handle(lc_server *s, lc_http_conn *conn, lc_http_request *q, bool *keep_alive, int *status) {
    api_error e = {0};
    const char *path = q->path;
    bool get = !strcmp(q->method, "GET"), post = !strcmp(q->method, "POST");
    if (!strncmp(path, "/v1/", 4)) path += 3; // the routes below, with or without the prefix
    bool is_models = !strcmp(path, "/models"), is_model = !strncmp(path, "/models/", 8);
    bool is_chat = !strcmp(path, "/chat/completions"), is_comp = !strcmp(path, "/completions");
    bool is_health = !strcmp(path, "/health");
    if (!is_models && !is_model && !is_chat && !is_comp && !is_health) {
        reject(&e, 404, NULL, "unknown_url", "Unknown request URL: %s %.200s (endpoints: GET /v1/models, POST "
               "/v1/chat/completions, POST /v1/completions)", q->method, q->path);
        goto err;
    }
    if (((is_models || is_model || is_health) && !get) || ((is_chat || is_comp) && !post)) {
        reject(&e, 405, NULL, "method_not_allowed", "%s is not allowed on %.200s (use %s)", q->method, q->path,
               get ? "POST" : "GET");
        *status = 405;
        lc_buf b = {0};
        error_json(&b, &e);
        int rc = lc_http_respond(conn, 405, "application/json", b.data, b.len, *keep_alive,
                                 (is_chat || is_comp) ? "Allow: POST\r\n" : "Allow: GET\r\n");
        lc_buf_free(&b);
        return rc == 0;
    }
    if (is_health) {
        *status = 200;
        static const char ok[] = "{\"status\": \"ok\"}";
        return lc_http_respond(conn, 200, "application/json", ok, sizeof ok - 1, *keep_alive, NULL) == 0;
    }
    if (s->c.api_key) {
        const char *auth = lc_http_header_get(q, "Authorization");
        if (!auth || strncasecmp(auth, "Bearer ", 7) || !same_secret(auth + 7, s->c.api_key)) {
            reject(&e, 401, NULL, "invalid_api_key", auth ? "Incorrect API key provided"
                                                          : "You didn't provide an API key: send the header "
                                                            "'Authorization: Bearer KEY'");
            goto err;
        }
    }
    if (is_models || is_model) {
        if (is_model && strcmp(path + 8, s->c.model_id)) {
            reject(&e, 404, "model", "model_not_found", "The model '%.200s' does not exist (this server has '%s')",
                   path + 8, s->c.model_id);
            goto err;
        }
        lc_buf b = {0};
        models_json(s, &b, is_models);
        *status = 200;
        bool ok = send_json(conn, &b, *keep_alive) == 0;
        lc_buf_free(&b);
        return ok;
    }
    gen_req r;
    if (parse_gen(q->body.data ? q->body.data : "", q->body.len, is_chat, &r, &e) != 0) goto err;
    return submit(s, conn, &r, q->minor == 1, keep_alive, status);
err:
    *status = e.status;
    return send_error(conn, &e, *keep_alive) == 0;
}

/* Lingering close: stop sending, discard what the peer still sends for a moment (so that
 * our answer is not lost to a reset), then close. */
static void close_conn(int fd) {
    shutdown(fd, SHUT_WR);
    char buf[4096];
    double end = lc_now() + 1.0;
    size_t total = 0;
    while (lc_now() < end && total < ((size_t)16 << 20)) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 100) <= 0) break;
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r <= 0) break;
        total += (size_t)r;
    }
    close(fd);
}

typedef struct {
    lc_server *s;
    int fd, slot;
} conn_arg;

static void *conn_main(void *arg) {
    conn_arg a = *(conn_arg *)arg;
    free(arg);
    lc_server *s = a.s;
    int one = 1;
    setsockopt(a.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    lc_http_conn c = {.fd = a.fd, .timeout_ms = s->c.timeout_ms};
    lc_http_request q = {0};
    for (;;) {
        if (stopping(s)) break;
        int status = 0;
        int rc = lc_http_read_request(&c, MAX_HEAD, s->c.max_body, &q, &status);
        if (rc == 1) break;
        if (rc < 0) {
            if (status) {
                api_error e;
                reject(&e, status, NULL, status == 413 ? "request_too_large" : status == 408 ? "request_timeout"
                                                                                            : "bad_request",
                       "%s", lc_errmsg());
                send_error(&c, &e, false);
                lc_info("serve: %s %s -> %d: %s", q.method ? q.method : "-", q.path ? q.path : "-", status, e.msg);
            }
            break;
        }
        bool keep_alive = q.keep_alive && !stopping(s);
        int st = 0;
        double t0 = lc_now();
        bool ok = handle(s, &c, &q, &keep_alive, &st);
        if (st != 200) lc_info("serve: %s %s -> %d (%.2f s)", q.method, q.path, st, lc_now() - t0);
        if (!ok || !keep_alive) break;
    }
    lc_http_request_free(&q);
    lc_buf_free(&c.in);
    close_conn(a.fd);
    pthread_mutex_lock(&s->mu);
    s->conn_fds[a.slot] = -1;
    s->nconn--;
    pthread_cond_broadcast(&s->conn_cv);
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* Refuses a connection over the limit with a 503 and closes it. */
static void refuse(lc_server *s, int fd) {
    lc_http_conn c = {.fd = fd, .timeout_ms = 1000};
    api_error e;
    reject(&e, 503, NULL, "too_many_connections", "the server has %d open connections, its limit; retry later",
           s->c.max_connections);
    send_error(&c, &e, false);
    close(fd);
}

int lc_server_run(lc_server *s) {
    pthread_t worker;
    if (pthread_create(&worker, NULL, worker_main, s) != 0)
        return lc_fail("serve: cannot start the worker thread: %s", strerror(errno));
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, (size_t)1 << 20);
    for (;;) {
        struct pollfd p[2] = {{.fd = s->lfd, .events = POLLIN}, {.fd = s->wake[0], .events = POLLIN}};
        int r = poll(p, 2, -1);
        if (r < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (p[1].revents) break;
        if (!(p[0].revents & POLLIN)) continue;
        int fd = accept(s->lfd, NULL, NULL);
        if (fd < 0) continue; // EINTR, ECONNABORTED, EMFILE: try again
        fcntl(fd, F_SETFD, FD_CLOEXEC);
        pthread_mutex_lock(&s->mu);
        int slot = -1;
        for (int i = 0; i < s->c.max_connections; i++)
            if (s->conn_fds[i] < 0) {
                slot = i;
                break;
            }
        if (slot >= 0) {
            s->conn_fds[slot] = fd;
            s->nconn++;
        }
        pthread_mutex_unlock(&s->mu);
        if (slot < 0) {
            refuse(s, fd);
            continue;
        }
        conn_arg *a = xmalloc(sizeof *a);
        *a = (conn_arg){s, fd, slot};
        pthread_t t;
        if (pthread_create(&t, &attr, conn_main, a) != 0) {
            free(a);
            close(fd);
            pthread_mutex_lock(&s->mu);
            s->conn_fds[slot] = -1;
            s->nconn--;
            pthread_mutex_unlock(&s->mu);
        }
    }
    pthread_attr_destroy(&attr);
    /* shutting down: no new connections; wake every reader; the worker stops the running
     * generation, answers the queued ones 503 and ends */
    lc_info("serve: shutting down");
    close(s->lfd);
    s->lfd = -1;
    pthread_mutex_lock(&s->mu);
    atomic_store(&s->stopping, 1);
    for (int i = 0; i < s->c.max_connections; i++)
        if (s->conn_fds[i] >= 0) shutdown(s->conn_fds[i], SHUT_RD);
    pthread_cond_broadcast(&s->work_cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(worker, NULL);
    pthread_mutex_lock(&s->mu);
    while (s->nconn > 0) pthread_cond_wait(&s->conn_cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    return 0;
}
