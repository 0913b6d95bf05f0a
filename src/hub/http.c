/*
 * http.c — libcurl GET and HEAD for src/hub (see http.h). Owns: the endpoints, the token
 * look-up (HF_TOKEN, ./.env, the login token file), the libcurl handle set-up, the
 * parsing of the Hub's metadata headers and the HTTP error messages.
 * Must not: print (beyond the progress bar), exit, or log the token.
 */
#include "hub/http.h"

#include <curl/curl.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/error.h"
#include "core/file.h"
#include "core/mem.h"

/* ------------------------------------------------------------ settings */

static char *env_url(const char *name, const char *dflt) {
    const char *e = getenv(name);
    char *s = xstrdup(e && *e ? e : dflt);
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == '/') s[--n] = 0;
    return s;
}

char *lc_hub_endpoint(void) { return env_url("HF_ENDPOINT", "https://huggingface.co"); }

char *lc_hub_datasets_server(void) {
    return env_url("HF_DATASETS_SERVER", "https://datasets-server.huggingface.co");
}

bool lc_hub_offline(void) {
    const char *o = getenv("HF_HUB_OFFLINE");
    return o && *o && strcmp(o, "0") != 0;
}

/* HF_TOKEN=VALUE (quotes optional, "export " allowed) from a .env file in the working
 * folder, or NULL. */
static char *dotenv_token(void) {
    if (!lc_is_file(".env")) return NULL;
    char *data = NULL, *out = NULL;
    size_t len;
    if (lc_read_file(".env", (size_t)1 << 20, &data, &len) != 0) {
        lc_err_clear();
        return NULL;
    }
    for (char *line = data; line && *line && !out;) {
        char *next = strchr(line, '\n');
        if (next) *next++ = 0;
        while (*line == ' ' || *line == '\t') line++;
        if (!strncmp(line, "export ", 7)) line += 7;
        if (!strncmp(line, "HF_TOKEN=", 9)) {
            char *v = line + 9;
            size_t n = strcspn(v, "\r");
            if (n >= 2 && (v[0] == '"' || v[0] == '\'') && v[n - 1] == v[0]) v++, n -= 2;
            if (n > 0) out = xstrndup(v, n);
        }
        line = next;
    }
    memset(data, 0, len);
    free(data);
    return out;
}

/* The token: $HF_TOKEN, else ./.env's HF_TOKEN, else $HF_HOME/token (or
 * ~/.cache/huggingface/token, where `huggingface-cli login` writes it). NULL if none. */
static char *token(void) {
    const char *t = getenv("HF_TOKEN");
    if (t && *t) return xstrdup(t);
    char *d = dotenv_token();
    if (d) return d;
    const char *h = getenv("HF_HOME");
    char *path;
    if (h && *h) path = lc_path_join(h, "token");
    else {
        const char *home = getenv("HOME");
        path = lc_path_join(home && *home ? home : ".", ".cache/huggingface/token");
    }
    char *data = NULL;
    size_t len = 0;
    if (!lc_is_file(path) || lc_read_file(path, 4096, &data, &len) != 0) {
        lc_err_clear();
        free(path);
        return NULL;
    }
    free(path);
    while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == '\r' || data[len - 1] == ' ')) data[--len] = 0;
    if (len == 0) {
        free(data);
        return NULL;
    }
    return data;
}

/* ------------------------------------------------------------ libcurl */

static bool curl_ready;

static int ensure_curl(void) {
    if (curl_ready) return 0;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) return lc_fail("libcurl: initialisation failed");
    /* A file-size limit (ulimit -f) must make the write fail with EFBIG, which is reported
     * as a full disk, instead of killing the process with SIGXFSZ. Only a default
     * disposition is changed. */
    struct sigaction old;
    if (sigaction(SIGXFSZ, NULL, &old) == 0 && old.sa_handler == SIG_DFL) signal(SIGXFSZ, SIG_IGN);
    curl_ready = true;
    return 0;
}

/* A handle with the options every request shares and the Authorization header in *hdr
 * (freed by the caller with curl_slist_free_all). */
static CURL *new_handle(const char *url, struct curl_slist **hdr, char *errbuf) {
    CURL *c = curl_easy_init();
    if (!c) return NULL;
    *hdr = NULL;
    char *tok = token();
    if (tok) {
        lc_buf h = {0};
        lc_buf_printf(&h, "Authorization: Bearer %s", tok);
        *hdr = curl_slist_append(*hdr, h.data);
        memset(h.data, 0, h.len);
        lc_buf_free(&h);
        memset(tok, 0, strlen(tok));
        free(tok);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, *hdr);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "lorac/0.1 (huggingface_hub-compatible)");
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L); // abort a transfer stalled
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L); // for a minute
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_FAILONERROR, 0L);
    return c;
}

static size_t on_data(char *p, size_t size, size_t n, void *ud) {
    lc_hub_sink *s = ud;
    size_t len = size * n;
    if (s->mem) {
        if (s->mem->len + len > ((size_t)64 << 20)) return 0; // no listing or page is this big
        lc_buf_append(s->mem, p, len);
        return len;
    }
    long status = 0;
    curl_easy_getinfo((CURL *)s->curl, CURLINFO_RESPONSE_CODE, &status);
    if (status >= 300) return len; // the body of an error answer: dropped
    errno = 0;
    size_t w = fwrite(p, 1, len, s->f);
    if (w == len && fflush(s->f) != 0) w = 0; // see a full disk now, not at fclose
    if (w != len) {
        s->write_errno = errno ? errno : EIO;
        return 0;
    }
    s->written += (int64_t)len;
    return len;
}

static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ult, curl_off_t uln) {
    (void)ult;
    (void)uln;
    lc_hub_sink *s = ud;
    if (s->bar) {
        if (dltotal > 0 && s->bar->total <= 0) s->bar->total = s->offset + dltotal;
        lc_progress_update(s->bar, s->offset + dlnow);
    }
    return 0;
}

int lc_hub_http_get(const char *url, const char *what, lc_hub_sink *s, int64_t range_from, long *status) {
    *status = 0;
    if (ensure_curl() != 0) return -1;
    char errbuf[CURL_ERROR_SIZE] = {0};
    struct curl_slist *hdr = NULL;
    CURL *c = new_handle(url, &hdr, errbuf);
    if (!c) return lc_fail("libcurl: cannot create a handle");
    char range[64];
    if (range_from > 0) {
        snprintf(range, sizeof range, "%lld-", (long long)range_from);
        curl_easy_setopt(c, CURLOPT_RANGE, range);
    }
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    s->curl = c;
    s->written = 0;
    s->write_errno = 0;
    curl_easy_setopt(c, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, s);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    CURLcode rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    curl_slist_free_all(hdr);
    curl_easy_cleanup(c);
    s->curl = NULL;
    if (rc != CURLE_OK) {
        if (s->write_errno) return lc_fail("%s: writing failed: %s", what, strerror(s->write_errno));
        if (*status >= 400) return 0; // the status explains it better
        return lc_fail("%s: cannot fetch %s: %s (curl error %d)", what, url, errbuf[0] ? errbuf : curl_easy_strerror(rc),
                       (int)rc);
    }
    return 0;
}

/* ------------------------------------------------------------- HEAD */

typedef struct {
    lc_hub_meta *m;
    char linked_etag[136], etag[136], location[2048];
    int64_t linked_size, length;
} head_state;

/* Copies the value of a "Name: value\r\n" header line into out (trimmed, truncated). */
static void header_value(const char *v, size_t n, char *out, size_t cap) {
    while (n > 0 && (*v == ' ' || *v == '\t')) v++, n--;
    while (n > 0 && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' ')) n--;
    if (n >= cap) n = cap - 1;
    memcpy(out, v, n);
    out[n] = 0;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud) {
    head_state *h = ud;
    size_t len = size * n;
    const char *colon = memchr(p, ':', len);
    if (len >= 5 && !strncmp(p, "HTTP/", 5)) { // a new answer (after a redirect): start again
        h->m->commit[0] = h->linked_etag[0] = h->etag[0] = h->location[0] = 0;
        h->linked_size = h->length = -1;
        return len;
    }
    if (!colon) return len;
    size_t name = (size_t)(colon - p), vlen = len - name - 1;
    const char *v = colon + 1;
    char num[32];
#define IS(s) (name == sizeof(s) - 1 && !strncasecmp(p, s, name))
    if (IS("X-Repo-Commit")) header_value(v, vlen, h->m->commit, sizeof h->m->commit);
    else if (IS("X-Linked-Etag")) header_value(v, vlen, h->linked_etag, sizeof h->linked_etag);
    else if (IS("ETag")) header_value(v, vlen, h->etag, sizeof h->etag);
    else if (IS("Location")) header_value(v, vlen, h->location, sizeof h->location);
    else if (IS("X-Linked-Size")) {
        header_value(v, vlen, num, sizeof num);
        h->linked_size = strtoll(num, NULL, 10);
    } else if (IS("Content-Length")) {
        header_value(v, vlen, num, sizeof num);
        h->length = strtoll(num, NULL, 10);
    }
#undef IS
    return len;
}

void lc_hub_normalize_etag(char *e) {
    size_t n = strlen(e), i = 0;
    if (n >= 2 && e[0] == 'W' && e[1] == '/') i = 2;
    while (e[i] == '"') i++;
    memmove(e, e + i, n - i + 1);
    n = strlen(e);
    while (n > 0 && e[n - 1] == '"') e[--n] = 0;
}

int lc_hub_http_head(const char *url, const char *what, lc_hub_meta *m) {
    memset(m, 0, sizeof *m);
    m->size = -1;
    if (ensure_curl() != 0) return -1;
    char *cur = xstrdup(url);
    int rc = -1, hop;
    for (hop = 0; hop < 8; hop++) {
        char errbuf[CURL_ERROR_SIZE] = {0};
        struct curl_slist *hdr = NULL;
        CURL *c = new_handle(cur, &hdr, errbuf);
        if (!c) {
            lc_fail("libcurl: cannot create a handle");
            break;
        }
        head_state h = {.m = m, .linked_size = -1, .length = -1};
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
        curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, &h);
        CURLcode cc = curl_easy_perform(c);
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &m->status);
        curl_slist_free_all(hdr);
        curl_easy_cleanup(c);
        if (cc != CURLE_OK) {
            lc_fail("%s: cannot reach %s: %s (curl error %d)", what, cur, errbuf[0] ? errbuf : curl_easy_strerror(cc),
                    (int)cc);
            break;
        }
        if (m->status >= 300 && m->status < 400 && h.location[0] == '/') {
            /* a relative redirect (a renamed repo): same host, new path */
            const char *host = strstr(cur, "://");
            const char *path = host ? strchr(host + 3, '/') : NULL;
            size_t keep = path ? (size_t)(path - cur) : strlen(cur);
            lc_buf next = {0};
            lc_buf_append(&next, cur, keep);
            lc_buf_puts(&next, h.location);
            free(cur);
            cur = next.data;
            continue;
        }
        const char *e = h.linked_etag[0] ? h.linked_etag : h.etag;
        snprintf(m->etag, sizeof m->etag, "%s", e);
        lc_hub_normalize_etag(m->etag);
        m->size = h.linked_size >= 0 ? h.linked_size : h.length;
        rc = 0;
        break;
    }
    if (hop == 8) lc_fail("%s: %s redirects too often", what, url);
    free(cur);
    return rc;
}

/* ------------------------------------------------------------ errors */

int lc_hub_status_fail(const char *repo, const char *url, long status, bool dataset) {
    const char *kind = dataset ? "datasets/" : "";
    char *ep = lc_hub_endpoint();
    int rc;
    switch (status) {
    case 401:
        rc = lc_fail("%s: %s answered 401 Unauthorized: the repo is private or gated; set HF_TOKEN "
                     "(or run 'huggingface-cli login') with a token that can read it",
                     repo, url);
        break;
    case 403:
        rc = lc_fail("%s: %s answered 403 Forbidden: the repo is gated; accept its licence at %s/%s%s "
                     "with the account whose token you use",
                     repo, url, ep, kind, repo);
        break;
    case 404:
        rc = lc_fail("%s: %s answered 404 Not Found: no such %s or revision (check the id, "
                     "--revision, --repo-type)",
                     repo, url, dataset ? "data set" : "model");
        break;
    default: rc = lc_fail("%s: %s answered HTTP %ld", repo, url, status);
    }
    free(ep);
    return rc;
}

void lc_hub_url_escape(lc_buf *b, const char *s, bool slash) {
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '.' ||
            *p == '_' || *p == '~' || *p == '-' || (*p == '/' && !slash))
            lc_buf_putc(b, (char)*p);
        else
            lc_buf_printf(b, "%%%02X", *p);
    }
}
