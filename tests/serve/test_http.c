/*
 * test_http.c — the HTTP/1.1 layer of `lorac serve` (src/serve/http.h): request heads
 * and chunked bodies per RFC 9112 (complete, byte-by-byte incomplete, and each refusal
 * with its status), keep-alive rules, and the connection reader over a socketpair
 * (pipelining, body framing, timeouts, a peer that goes away).
 */
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "serve/http.h"

static long head(const char *s, lc_http_request *r, int *status) {
    return lc_http_parse_head(s, strlen(s), 16384, r, status);
}

static void test_head_ok(void) {
    lc_http_request r = {0};
    int st;
    const char *s = "\r\nPOST /v1/completions?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length:  12 \r\n"
                    "Connection: Keep-Alive, Upgrade\r\nX-E:\r\n\r\nBODY";
    long n = head(s, &r, &st);
    CHECK_EQ_INT(n, (long)(strstr(s, "BODY") - s));
    CHECK_EQ_STR(r.method, "POST");
    CHECK_EQ_STR(r.path, "/v1/completions");
    CHECK_EQ_STR(r.target, "/v1/completions?x=1");
    CHECK_EQ_INT(r.minor, 1);
    CHECK_EQ_INT(r.content_length, 12);
    CHECK(r.keep_alive && !r.chunked && !r.expect_continue);
    CHECK_EQ_STR(lc_http_header_get(&r, "content-length"), "12");
    CHECK_EQ_STR(lc_http_header_get(&r, "x-e"), "");
    CHECK(lc_http_header_get(&r, "nope") == NULL);
    /* every proper prefix is incomplete, never an error */
    for (size_t i = 0; i < (size_t)n; i++) {
        long m = lc_http_parse_head(s, i, 16384, &r, &st);
        CHECK_MSG(m == 0, "prefix %zu: %ld (%s)", i, m, lc_errmsg());
    }
    /* bare LF line ends; HTTP/1.0 closes unless keep-alive; 1.1 closes on "close" */
    CHECK(head("GET / HTTP/1.0\n\n", &r, &st) > 0 && !r.keep_alive && r.content_length == -1);
    CHECK(head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", &r, &st) > 0 && r.keep_alive);
    CHECK(head("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", &r, &st) > 0 && !r.keep_alive);
    CHECK(head("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\nExpect: 100-continue\r\n\r\n", &r, &st) > 0 &&
          r.chunked && r.expect_continue);
    CHECK(head("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", &r, &st) > 0 &&
          r.content_length == 5);
    lc_http_request_free(&r);
}

static void test_head_refused(void) {
    static const struct {
        const char *req;
        int status;
        const char *msg;
    } cases[] = {
        {"GET\r\n\r\n", 400, "request line"},
        {"GET /\r\n\r\n", 400, "no version"},
        {"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, "version"},
        {"GET / HTTX/1.1\r\nHost: a\r\n\r\n", 400, "version"},
        {"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "method"},
        {"GET / HTTP/1.1\r\n\r\n", 400, "Host"},
        {"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400, "folded"},
        {"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n", 400, "header name"},
        {"GET / HTTP/1.1\r\nHost: a\r\nnocolon\r\n\r\n", 400, "malformed header"},
        {"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", 400, "control"},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400, "Content-Length"},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400, "conflicting"},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400, "Content-Length"},
        {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501, "Transfer-Encoding"},
        {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400, "both"},
        {"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "HTTP/1.1"},
    };
    lc_http_request r = {0};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int st = 0;
        long n = head(cases[i].req, &r, &st);
        CHECK_MSG(n == -1 && st == cases[i].status && strstr(lc_errmsg(), cases[i].msg),
                  "case %zu: %ld status %d '%s'", i, n, st, lc_errmsg());
    }
    /* NUL in the head; a head over the limit, complete or not */
    int st;
    const char nul[] = "GET / HTTP/1.1\r\nHost: a\0b\r\n\r\n";
    CHECK(lc_http_parse_head(nul, sizeof nul - 1, 16384, &r, &st) == -1 && st == 400);
    char big[2000];
    memset(big, 'a', sizeof big);
    memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
    CHECK(lc_http_parse_head(big, sizeof big, 1000, &r, &st) == -1 && st == 431);
    CHECK(lc_http_parse_head(big, 999, 1000, &r, &st) == 0);
    lc_buf many = {0};
    lc_buf_puts(&many, "GET / HTTP/1.1\r\nHost: a\r\n");
    for (int i = 0; i < 120; i++) lc_buf_printf(&many, "X-%d: y\r\n", i);
    lc_buf_puts(&many, "\r\n");
    CHECK(lc_http_parse_head(many.data, many.len, 16384, &r, &st) == -1 && st == 431);
    lc_buf_free(&many);
    lc_http_request_free(&r);
}

static void test_chunked(void) {
    lc_buf out = {0};
    int st;
    const char *s = "4;name=v\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\nNEXT";
    long n = lc_http_parse_chunked(s, strlen(s), 1000, &out, &st);
    CHECK_EQ_INT(n, (long)(strstr(s, "NEXT") - s));
    CHECK_EQ_STR(out.data, "Wikipedia in\r\n\r\nchunks.");
    for (size_t i = 0; i < (size_t)n; i++) {
        long m = lc_http_parse_chunked(s, i, 1000, &out, &st);
        CHECK_MSG(m == 0, "prefix %zu: %ld (%s)", i, m, lc_errmsg());
    }
    CHECK(lc_http_parse_chunked("3\nabc\n0\n\n", 9, 1000, &out, &st) == 9 && !strcmp(out.data, "abc"));
    CHECK(lc_http_parse_chunked("5\r\nabc", 6, 4, &out, &st) == -1 && st == 413);
    CHECK(lc_http_parse_chunked("ffffffffffffffffffffff\r\n", 24, 1000, &out, &st) == -1 && st == 413);
    CHECK(lc_http_parse_chunked("3\r\nabc\r\n3\r\nabc\r\n0\r\n\r\n", 25, 5, &out, &st) == -1 && st == 413);
    CHECK(lc_http_parse_chunked("zz\r\n", 4, 1000, &out, &st) == -1 && st == 400);
    CHECK(lc_http_parse_chunked("3x\r\n", 4, 1000, &out, &st) == -1 && st == 400);
    CHECK(lc_http_parse_chunked("3\r\nabcd\r\n", 10, 1000, &out, &st) == -1 && st == 400);
    lc_buf_free(&out);
}

static void test_tokens(void) {
    CHECK(lc_http_has_token("keep-alive", "keep-alive"));
    CHECK(lc_http_has_token(" Upgrade ,  CLOSE ", "close"));
    CHECK(!lc_http_has_token("closed", "close"));
    CHECK(!lc_http_has_token(NULL, "close"));
    CHECK(!lc_http_has_token("", "close"));
    CHECK_EQ_STR(lc_http_reason(413), "Content Too Large");
}

static void test_connection(void) {
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    lc_http_conn c = {.fd = sv[0], .timeout_ms = 300};
    lc_http_request r = {0};
    int st;
    /* two pipelined requests: a Content-Length body and a chunked one */
    const char *two = "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                      "POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\n\r\n";
    CHECK(write(sv[1], two, strlen(two)) == (ssize_t)strlen(two));
    CHECK(lc_http_read_request(&c, 16384, 100, &r, &st) == 0 && !strcmp(r.path, "/a") && !strcmp(r.body.data, "abc"));
    CHECK(lc_http_read_request(&c, 16384, 100, &r, &st) == 0 && !strcmp(r.path, "/b") && !strcmp(r.body.data, "de"));
    /* nothing more: idle timeout, quietly */
    CHECK(lc_http_read_request(&c, 16384, 100, &r, &st) == 1);
    /* a partial request: 408 */
    CHECK(write(sv[1], "GET / HT", 8) == 8);
    CHECK(lc_http_read_request(&c, 16384, 100, &r, &st) == -1 && st == 408);
    c.in.len = 0;
    /* a body over the limit: 413 before reading it; a POST without length: 411 */
    const char *big = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n";
    CHECK(write(sv[1], big, strlen(big)) == (ssize_t)strlen(big));
    CHECK(lc_http_read_request(&c, 16384, 100, &r, &st) == -1 && st == 413);
    c.in.len = 0;
    const char *nolen = "POST / HTTP/1.1\r\nHost: x\r\n\r\n";
    CHECK(write(sv[1], nolen, strlen(nolen)) == (ssize_t)strlen(nolen));
    CHECK(lc_http_read_request(&c, 16384, 100, &r, &st) == -1 && st == 411);
    c.in.len = 0;
    /* a response goes out whole */
    CHECK_OK(lc_http_respond(&c, 200, "text/plain", "hi", 2, true, NULL));
    char buf[256];
    ssize_t got = read(sv[1], buf, sizeof buf - 1);
    CHECK(got > 0);
    buf[got > 0 ? got : 0] = '\0';
    CHECK(strstr(buf, "HTTP/1.1 200 OK\r\n") == buf && strstr(buf, "Content-Length: 2\r\n") &&
          strstr(buf, "Connection: keep-alive\r\n") && strstr(buf, "\r\n\r\nhi"));
    /* the peer leaves mid-request: nothing to answer; afterwards sending fails, no SIGPIPE */
    CHECK(!lc_http_peer_closed(sv[0]));
    CHECK(write(sv[1], "GET / HTTP/1.1\r\n", 16) == 16);
    close(sv[1]);
    CHECK(lc_http_read_request(&c, 16384, 100, &r, &st) == -1 && st == 0);
    CHECK(lc_http_peer_closed(sv[0]));
    CHECK(lc_http_send_all(sv[0], "x", 1, 100) == -1);
    close(sv[0]);
    lc_buf_free(&c.in);
    lc_http_request_free(&r);
}

int main(void) {
    RUN(test_head_ok);
    RUN(test_head_refused);
    RUN(test_chunked);
    RUN(test_tokens);
    RUN(test_connection);
    return t_summary();
}
