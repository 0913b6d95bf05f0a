/*
 * http.c — HTTP/1.1 request parsing, reading with timeouts, response writing. See http.h.
 */
#include "serve/http.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "core/error.h"
#include "core/log.h"
#include "core/mem.h"

/* ---- parsing ---- */

static bool is_tchar(unsigned char ch) {
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9')) return true;
    return ch && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

/* The end of the line starting at pos (index of its '\n'), or len when there is none. */
static size_t line_end(const char *buf, size_t len, size_t pos) {
    const char *nl = memchr(buf + pos, '\n', len - pos);
    return nl ? (size_t)(nl - buf) : len;
}

/* Strips a '\r' before a '\n' at e: the length of the line [pos, e). */
static size_t line_len(const char *buf, size_t pos, size_t e) {
    return (e > pos && buf[e - 1] == '\r') ? e - pos - 1 : e - pos;
}

static int head_fail(int *status, int code, const char *fmt, const char *arg) {
    *status = code;
    return lc_fail(fmt, arg);
}

static int parse_length(const char *v, int64_t *out) {
    if (!*v) return -1;
    int64_t x = 0;
    for (const char *p = v; *p; p++) {
        if (*p < '0' || *p > '9' || p - v >= 18) return -1;
        x = x * 10 + (*p - '0');
    }
    *out = x;
    return 0;
}

long lc_http_parse_head(const char *buf, size_t len, size_t max_head, lc_http_request *req,
                        int *status) {
    lc_http_request_free(req);
    *status = 0;
    /* empty lines before the request line are skipped (RFC 9112 2.2) */
    size_t start = 0;
    while (start < len && (buf[start] == '\r' || buf[start] == '\n')) start++;
    if (start > 64) return head_fail(status, 400, "HTTP: %s", "empty lines instead of a request");
    /* find the empty line that ends the head */
    size_t pos = start, end = 0;
    bool complete = false;
    while (pos < len) {
        size_t e = line_end(buf, len, pos);
        if (e == len) break;
        if (line_len(buf, pos, e) == 0 && pos > start) {
            end = e + 1;
            complete = true;
            break;
        }
        pos = e + 1;
    }
    if (!complete) {
        if (len > max_head) return head_fail(status, 431, "HTTP: the request head is over %s", "the limit");
        return 0;
    }
    if (end > max_head) return head_fail(status, 431, "HTTP: the request head is over %s", "the limit");

    /* an owned copy, cut into C strings in place */
    size_t hl = end - start;
    req->head = xmalloc(hl + 1);
    memcpy(req->head, buf + start, hl);
    req->head[hl] = '\0';
    char *h = req->head;
    for (size_t i = 0; i < hl; i++)
        if (h[i] == '\0') return head_fail(status, 400, "HTTP: %s", "a NUL byte in the request head");

    /* request line: METHOD SP target SP HTTP/1.x */
    char *eol = strchr(h, '\n');
    *eol = '\0';
    if (eol > h && eol[-1] == '\r') eol[-1] = '\0';
    char *sp1 = strchr(h, ' ');
    if (!sp1) return head_fail(status, 400, "HTTP: malformed request line '%.80s'", h);
    *sp1 = '\0';
    char *target = sp1 + 1, *sp2 = strchr(target, ' ');
    if (!sp2) return head_fail(status, 400, "HTTP: malformed request line (no version) after '%.80s'", h);
    *sp2 = '\0';
    const char *version = sp2 + 1;
    if (!*h || strlen(h) > 15) return head_fail(status, 400, "HTTP: bad method '%.20s'", h);
    for (const char *p = h; *p; p++)
        if (!is_tchar((unsigned char)*p)) return head_fail(status, 400, "HTTP: bad method '%.20s'", h);
    if (!*target) return head_fail(status, 400, "HTTP: %s", "empty request target");
    for (const char *p = target; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return head_fail(status, 400, "HTTP: bad character in the request target '%.80s'", target);
    if (!strcmp(version, "HTTP/1.1")) req->minor = 1;
    else if (!strcmp(version, "HTTP/1.0")) req->minor = 0;
    else if (!strncmp(version, "HTTP/", 5) && version[5] >= '0' && version[5] <= '9' && version[6] == '.' &&
             version[7] >= '0' && version[7] <= '9' && !version[8])
        return head_fail(status, 505, "HTTP: version %s is not supported (1.0 and 1.1 are)", version);
    else return head_fail(status, 400, "HTTP: malformed version '%.20s'", version);
    req->method = h;
    req->target = target;
    size_t plen = strcspn(target, "?#");
    req->path = xstrndup(target, plen);

    /* header lines */
    char *p = eol + 1;
    req->content_length = -1;
    bool have_te = false;
    while (*p) {
        char *nl = strchr(p, '\n');
        *nl = '\0';
        if (nl > p && nl[-1] == '\r') nl[-1] = '\0';
        if (!*p) break; // the empty line
        if (*p == ' ' || *p == '\t')
            return head_fail(status, 400, "HTTP: %s", "folded header lines are not accepted");
        char *colon = strchr(p, ':');
        if (!colon || colon == p) return head_fail(status, 400, "HTTP: malformed header line '%.80s'", p);
        *colon = '\0';
        for (char *q = p; *q; q++)
            if (!is_tchar((unsigned char)*q)) return head_fail(status, 400, "HTTP: bad header name '%.80s'", p);
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t') v++;
        char *ve = v + strlen(v);
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) *--ve = '\0';
        for (char *q = v; *q; q++)
            if (((unsigned char)*q < 0x20 && *q != '\t') || *q == 0x7f)
                return head_fail(status, 400, "HTTP: control character in header '%.80s'", p);
        if (req->n_headers == LC_HTTP_MAX_HEADERS)
            return head_fail(status, 431, "HTTP: more than %s headers", "100");
        req->headers[req->n_headers++] = (lc_http_header){p, v};
        if (!strcasecmp(p, "Content-Length")) {
            int64_t n;
            if (parse_length(v, &n) != 0) return head_fail(status, 400, "HTTP: bad Content-Length '%.40s'", v);
            if (req->content_length >= 0 && req->content_length != n)
                return head_fail(status, 400, "HTTP: %s", "conflicting Content-Length headers");
            req->content_length = n;
        } else if (!strcasecmp(p, "Transfer-Encoding")) {
            if (have_te || strcasecmp(v, "chunked"))
                return head_fail(status, 501, "HTTP: Transfer-Encoding '%.40s' is not supported (only chunked)", v);
            have_te = true;
            req->chunked = true;
        }
        p = nl + 1;
    }
    if (req->chunked && req->content_length >= 0)
        return head_fail(status, 400, "HTTP: %s", "both Content-Length and Transfer-Encoding");
    if (req->chunked && req->minor == 0)
        return head_fail(status, 400, "HTTP: %s", "chunked bodies need HTTP/1.1");
    if (req->minor == 1 && !lc_http_header_get(req, "Host"))
        return head_fail(status, 400, "HTTP: %s", "an HTTP/1.1 request without a Host header");
    const char *conn = lc_http_header_get(req, "Connection");
    req->keep_alive = req->minor == 1 ? !lc_http_has_token(conn, "close") : lc_http_has_token(conn, "keep-alive");
    const char *expect = lc_http_header_get(req, "Expect");
    req->expect_continue = req->minor == 1 && expect && !strcasecmp(expect, "100-continue");
    return (long)end;
}

long lc_http_parse_chunked(const char *buf, size_t len, size_t max_body, lc_buf *out, int *status) {
    lc_buf_clear(out);
    *status = 0;
    size_t pos = 0;
    for (;;) {
        size_t e = line_end(buf, len, pos);
        if (e == len) {
            if (len - pos > 1024) return head_fail(status, 400, "HTTP: %s", "a chunk-size line over 1024 bytes");
            return 0;
        }
        size_t ll = line_len(buf, pos, e), i = 0;
        uint64_t size = 0;
        while (i < ll) {
            char ch = buf[pos + i];
            int d = (ch >= '0' && ch <= '9') ? ch - '0'
                    : (ch >= 'a' && ch <= 'f') ? ch - 'a' + 10
                    : (ch >= 'A' && ch <= 'F') ? ch - 'A' + 10 : -1;
            if (d < 0) break;
            if (size > max_body) return head_fail(status, 413, "HTTP: %s", "the request body is over the limit");
            size = size * 16 + (uint64_t)d;
            i++;
        }
        if (i == 0 || (i < ll && buf[pos + i] != ';' && buf[pos + i] != ' ' && buf[pos + i] != '\t'))
            return head_fail(status, 400, "HTTP: %s", "a malformed chunk size");
        if (size > max_body || out->len + size > max_body)
            return head_fail(status, 413, "HTTP: %s", "the request body is over the limit");
        pos = e + 1;
        if (size == 0) { // trailers until an empty line
            for (;;) {
                size_t te = line_end(buf, len, pos);
                if (te == len) {
                    if (len - pos > 8192) return head_fail(status, 400, "HTTP: %s", "trailers over 8192 bytes");
                    return 0;
                }
                size_t tl = line_len(buf, pos, te);
                pos = te + 1;
                if (tl == 0) return (long)pos;
            }
        }
        if (len - pos < size + 1) return 0;
        const char *data = buf + pos;
        pos += size;
        if (buf[pos] == '\r') {
            if (len - pos < 2) return 0;
            pos++;
        }
        if (buf[pos] != '\n') return head_fail(status, 400, "HTTP: %s", "a chunk not followed by CRLF");
        pos++;
        lc_buf_append(out, data, (size_t)size);
    }
}

const char *lc_http_header_get(const lc_http_request *r, const char *name) {
    for (size_t i = 0; i < r->n_headers; i++)
        if (!strcasecmp(r->headers[i].name, name)) return r->headers[i].value;
    return NULL;
}

bool lc_http_has_token(const char *list, const char *token) {
    if (!list) return false;
    size_t tl = strlen(token);
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',') p++;
        const char *s = p;
        while (*p && *p != ',') p++;
        const char *e = p;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t')) e--;
        if ((size_t)(e - s) == tl && !strncasecmp(s, token, tl)) return true;
    }
    return false;
}

void lc_http_request_free(lc_http_request *r) {
    free(r->head);
    free((char *)r->path);
    lc_buf_free(&r->body);
    memset(r, 0, sizeof *r);
    r->content_length = -1;
}

const char *lc_http_reason(int status) {
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

/* ---- connections ---- */

/* Waits until fd is readable or the deadline (lc_now seconds) passes: 1 readable, 0 timed out. */
static int wait_readable(int fd, double deadline) {
    for (;;) {
        double left = deadline - lc_now();
        if (left <= 0) return 0;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, (int)(left * 1000) + 1);
        if (r > 0) return 1;
        if (r == 0) continue;
        if (errno != EINTR) return 1; // let recv report it
    }
}

/* Receives more bytes into c->in. Returns >0 bytes, 0 peer closed, -1 error. */
static long recv_more(lc_http_conn *c) {
    lc_buf_reserve(&c->in, 65536);
    for (;;) {
        ssize_t r = recv(c->fd, c->in.data + c->in.len, 65536, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return r < 0 ? -1 : 0;
        c->in.len += (size_t)r;
        c->in.data[c->in.len] = '\0';
        return r;
    }
}

static void consume(lc_http_conn *c, size_t n) {
    memmove(c->in.data, c->in.data + n, c->in.len - n);
    c->in.len -= n;
    c->in.data[c->in.len] = '\0';
}

int lc_http_read_request(lc_http_conn *c, size_t max_head, size_t max_body, lc_http_request *req,
                         int *status) {
    *status = 0;
    lc_http_request_free(req);
    bool started = c->in.len > 0;
    double deadline = lc_now() + c->timeout_ms / 1000.0;
    long n;
    for (;;) {
        if (c->in.len) {
            n = lc_http_parse_head(c->in.data, c->in.len, max_head, req, status);
            if (n < 0) return -1;
            if (n > 0) break;
        }
        if (!wait_readable(c->fd, deadline)) {
            if (!started) return 1;
            *status = 408;
            return lc_fail("HTTP: the request did not arrive within %d ms", c->timeout_ms);
        }
        long r = recv_more(c);
        if (r <= 0) {
            if (!started) return 1;
            return lc_fail("HTTP: the client closed the connection mid-request");
        }
        if (!started) {
            started = true;
            deadline = lc_now() + c->timeout_ms / 1000.0; // the whole request from its first byte
        }
    }
    size_t head = (size_t)n;
    bool body_method = !strcmp(req->method, "POST") || !strcmp(req->method, "PUT") || !strcmp(req->method, "PATCH");
    if (req->content_length < 0 && !req->chunked) {
        if (body_method) {
            *status = 411;
            return lc_fail("HTTP: a %s request needs Content-Length (or chunked encoding)", req->method);
        }
        consume(c, head);
        return 0;
    }
    if (req->content_length > (int64_t)max_body) {
        *status = 413;
        return lc_fail("HTTP: the request body (%lld bytes) is over the limit of %zu bytes",
                       (long long)req->content_length, max_body);
    }
    if (req->expect_continue && (req->chunked || req->content_length > 0) &&
        (req->chunked || c->in.len - head < (size_t)req->content_length)) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        if (lc_http_send_all(c->fd, cont, sizeof cont - 1, c->timeout_ms) != 0) return -1;
    }
    size_t raw_cap = max_head + 8 * max_body + 65536; // chunk framing overhead included
    for (;;) {
        if (!req->chunked) {
            size_t cl = (size_t)req->content_length;
            if (c->in.len - head >= cl) {
                lc_buf_clear(&req->body);
                lc_buf_append(&req->body, c->in.data + head, cl);
                consume(c, head + cl);
                return 0;
            }
        } else {
            long used = lc_http_parse_chunked(c->in.data + head, c->in.len - head, max_body, &req->body, status);
            if (used < 0) return -1;
            if (used > 0) {
                consume(c, head + (size_t)used);
                return 0;
            }
            if (c->in.len > raw_cap) {
                *status = 413;
                return lc_fail("HTTP: the chunked request body is over the limit");
            }
        }
        if (!wait_readable(c->fd, deadline)) {
            *status = 408;
            return lc_fail("HTTP: the request body did not arrive within %d ms", c->timeout_ms);
        }
        if (recv_more(c) <= 0) return lc_fail("HTTP: the client closed the connection mid-request");
    }
}

int lc_http_send_all(int fd, const void *p, size_t n, int timeout_ms) {
    const char *s = p;
    while (n > 0) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            s += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd pf = {.fd = fd, .events = POLLOUT};
            int r = poll(&pf, 1, timeout_ms);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) return lc_fail("HTTP: the client took no data for %d ms", timeout_ms);
            if (pf.revents & (POLLERR | POLLHUP | POLLNVAL))
                return lc_fail("HTTP: the client went away");
            continue;
        }
        return lc_fail("HTTP: sending failed: %s", w < 0 ? strerror(errno) : "nothing sent");
    }
    return 0;
}

void lc_http_head(lc_buf *b, int status, const char *content_type, long long content_length,
                  bool keep_alive, const char *extra) {
    lc_buf_printf(b, "HTTP/1.1 %d %s\r\nServer: lorac\r\n", status, lc_http_reason(status));
    if (content_type) lc_buf_printf(b, "Content-Type: %s\r\n", content_type);
    if (content_length >= 0) lc_buf_printf(b, "Content-Length: %lld\r\n", content_length);
    else if (content_length == -1) lc_buf_puts(b, "Transfer-Encoding: chunked\r\n");
    lc_buf_puts(b, keep_alive ? "Connection: keep-alive\r\n" : "Connection: close\r\n");
    if (extra) lc_buf_puts(b, extra);
    lc_buf_puts(b, "\r\n");
}

int lc_http_respond(lc_http_conn *c, int status, const char *content_type, const char *body,
                    size_t n, bool keep_alive, const char *extra) {
    lc_buf b = {0};
    lc_http_head(&b, status, content_type, (long long)n, keep_alive, extra);
    lc_buf_append(&b, body, n);
    int rc = lc_http_send_all(c->fd, b.data, b.len, c->timeout_ms);
    lc_buf_free(&b);
    return rc;
}

void lc_http_chunk(lc_buf *b, const char *data, size_t n) {
    lc_buf_printf(b, "%zx\r\n", n);
    lc_buf_append(b, data, n);
    lc_buf_puts(b, "\r\n");
}

bool lc_http_peer_closed(int fd) {
    char ch;
    for (;;) {
        ssize_t r = recv(fd, &ch, 1, MSG_PEEK | MSG_DONTWAIT);
        if (r == 0) return true;
        if (r > 0) return false;
        if (errno == EINTR) continue;
        return !(errno == EAGAIN || errno == EWOULDBLOCK);
    }
}
