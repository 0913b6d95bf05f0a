/*
 * test_json_input.c — hostile JSON text gets one located error from lc_json_parse: bytes
 * that are not UTF-8 (stray continuation bytes, overlong forms, UTF-16 surrogates, code
 * points past U+10FFFF, a sequence cut short) and nesting deeper than cJSON's limit;
 * valid UTF-8 of every length passes. The byte sequences are those RFC 3629 rules out.
 */
#include <string.h>

#include "core/json.h"
#include "harness.h"

static int parse(const char *text) {
    cJSON *j = NULL;
    int rc = lc_json_parse(text, strlen(text), "t.json", &j);
    cJSON_Delete(j);
    return rc;
}

static void invalid_utf8(void) {
    CHECK_FAILS(parse("{\"a\": \"\x80\"}"), "t.json: invalid UTF-8 at line 1, column 8 (byte 7 is 0x80)");
    CHECK_FAILS(parse("{\"a\": \"\xC0\xAF\"}"), "byte 7 is 0xC0");         /* overlong '/' */
    CHECK_FAILS(parse("{\"a\": \"\xE0\x80\xAF\"}"), "byte 7 is 0xE0");     /* overlong, 3 bytes */
    CHECK_FAILS(parse("{\"a\": \"\xED\xA0\x80\"}"), "byte 7 is 0xED");     /* U+D800 */
    CHECK_FAILS(parse("{\"a\": \"\xF4\x90\x80\x80\"}"), "byte 7 is 0xF4"); /* U+110000 */
    CHECK_FAILS(parse("{\"a\": \"\xF5\x80\x80\x80\"}"), "byte 7 is 0xF5");
    CHECK_FAILS(parse("{\"a\":\n \"x\xE2\x82\"}"), "line 2, column 4");    /* cut short */
    CHECK_OK(parse("{\"a\": \"A \xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 \xF4\x8F\xBF\xBF\"}"));
}

static void deep_nesting(void) {
    static char text[5000];
    memset(text, '[', 2000);
    memset(text + 2000, ']', 2000);
    CHECK_FAILS(parse(text), "nested deeper than 1000 levels");
    memset(text, 0, sizeof text);
    memset(text, '[', 900);
    memset(text + 900, ']', 900);
    CHECK_OK(parse(text));
}

int main(void) {
    RUN(invalid_utf8);
    RUN(deep_nesting);
    return t_summary();
}
