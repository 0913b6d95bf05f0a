/*
 * http.h — the HTTP/1.1 layer of `lorac serve`: a request parser that works on bytes in
 * memory (head and chunked body, so that it can be fuzzed without sockets), a connection
 * reader with timeouts on top of it, and response writers (whole responses, chunked
 * streams) that never raise SIGPIPE.
 *
 * What it accepts: origin-form requests of HTTP/1.0 and 1.1, CRLF or bare-LF line ends,
 * bodies framed by Content-Length or Transfer-Encoding: chunked (trailers skipped),
 * Expect: 100-continue, keep-alive by the version's default and the Connection header.
 * What it refuses, with the status to answer: malformed heads (400), heads over the
 * limit (431), bodies over the limit (413), a body-carrying method without framing (411),
 * both framings at once or conflicting lengths (400), other transfer codings (501), other
 * versions (505), slow requests (408).
 *
 * It owns the connection's input buffer; it knows nothing of JSON or of OpenAI. It never
 * prints; failures are lc_fail messages plus a status code.
 */
#ifndef LC_HTTP_H
#define LC_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/vec.h"

#define LC_HTTP_MAX_HEADERS 100

typedef struct {
    const char *name, *value; // point into the request's head copy
} lc_http_header;

typedef struct {
    char *head;              // owned copy of the head, cut into NUL-terminated pieces
    const char *method;      // "GET", "POST", ...
    const char *target;      // "/v1/models?x" as sent
    const char *path;        // owned: target without the query
    int minor;               // HTTP/1.<minor>
    lc_http_header headers[LC_HTTP_MAX_HEADERS];
    size_t n_headers;
    int64_t content_length;  // -1: none given
    bool chunked;            // Transfer-Encoding: chunked
    bool keep_alive;         // the connection stays open after the answer
    bool expect_continue;    // Expect: 100-continue
    lc_buf body;             // the decoded body
} lc_http_request;

/* Parses a request head from buf[0..len) into req (reset first; free with
 * lc_http_request_free). Returns the head's length when it is complete, 0 when more bytes
 * are needed (and the head so far fits max_head), or -1 with *status (400, 431, 501, 505)
 * and an lc_fail message. */
long lc_http_parse_head(const char *buf, size_t len, size_t max_head, lc_http_request *req,
                        int *status);

/* Decodes a chunked body at the start of buf[0..len) into out (cleared first). Returns
 * the bytes consumed (through the last chunk and trailers) when complete, 0 when more are
 * needed, or -1 with *status (400 malformed, 413 decoded size over max_body). */
long lc_http_parse_chunked(const char *buf, size_t len, size_t max_body, lc_buf *out,
                           int *status);

/* The value of a header (case-insensitive name; the first one), or NULL. */
const char *lc_http_header_get(const lc_http_request *r, const char *name);
/* Whether a comma-separated header value list contains token (case-insensitive). */
bool lc_http_has_token(const char *list, const char *token);
void lc_http_request_free(lc_http_request *r);
/* The reason phrase of a status code ("Not Found"); "Unknown" for others. */
const char *lc_http_reason(int status);

/* ---- connections ---- */

typedef struct {
    int fd;
    int timeout_ms; // idle wait for a request, and the time a whole request may take
    lc_buf in;      // received bytes not yet consumed
} lc_http_conn;

/* Reads the next request into req. Returns 0 with a complete request; 1 when the peer
 * closed or stayed idle past the timeout before sending anything (close quietly); -1 when
 * the request cannot be served: *status is the code to answer with (then close), or 0 when
 * nothing can be answered (the peer went away mid-request). Sends "100 Continue" when the
 * request expects it and its body is within max_body. */
int lc_http_read_request(lc_http_conn *c, size_t max_head, size_t max_body, lc_http_request *req,
                         int *status);

/* Sends all n bytes (MSG_NOSIGNAL), waiting at most timeout_ms for the peer to take each
 * part. Returns 0, or -1 when the peer is gone or stalled. */
int lc_http_send_all(int fd, const void *p, size_t n, int timeout_ms);
/* Appends a response head to b: status line, Content-Type (may be NULL), Content-Length
 * (content_length >= 0) or Transfer-Encoding: chunked (-1, HTTP/1.1) or neither (-2: the
 * body ends when the connection closes), Connection, and extra (whole "Name: value\r\n"
 * lines, may be NULL). */
void lc_http_head(lc_buf *b, int status, const char *content_type, long long content_length,
                  bool keep_alive, const char *extra);
/* Sends a complete response with body[0..n). Returns 0 or -1 (peer gone). */
int lc_http_respond(lc_http_conn *c, int status, const char *content_type, const char *body,
                    size_t n, bool keep_alive, const char *extra);
/* Appends one chunk of a chunked body to b (n == 0: the last chunk). */
void lc_http_chunk(lc_buf *b, const char *data, size_t n);
/* Whether the peer has closed its side (a zero-byte peek; pipelined bytes do not count). */
bool lc_http_peer_closed(int fd);

#endif
