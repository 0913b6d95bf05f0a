/*
 * fuzz_http.c — libFuzzer target: the HTTP request parser of `lorac serve`. Any input
 * must give a complete head, "need more", or a refusal with a 4xx/5xx status; a complete
 * head is parsed the same from any longer buffer, and its chunked body (when the head
 * says chunked) decodes within the limit or is refused the same way.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "serve/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *s = (const char *)data;
    lc_http_request r = {0};
    int st = 0;
    long n = lc_http_parse_head(s, size, 4096, &r, &st);
    if (n < 0 && (st < 400 || st > 599)) abort();
    if (n > (long)size || (n == 0 && size > 4096 + 64)) abort();
    if (n > 0) {
        if (!r.method || !r.path || !r.target || (r.minor != 0 && r.minor != 1)) abort();
        if (r.chunked && r.content_length >= 0) abort();
        lc_buf body = {0};
        long m = lc_http_parse_chunked(s + n, size - (size_t)n, 1000, &body, &st);
        if (m < 0 && st != 400 && st != 413) abort();
        if (m > 0 && (body.len > 1000 || m > (long)(size - (size_t)n))) abort();
        lc_buf_free(&body);
    }
    lc_http_request_free(&r);
    return 0;
}
