/*
 * test_core.c — the core layer: errors, growable arrays, files written atomically,
 * JSON access with located errors.
 */
#include <stdint.h>
#include <unistd.h>

#include "core/file.h"
#include "core/json.h"
#include "core/mem.h"
#include "core/vec.h"
#include "harness.h"

static char g_dir[] = "/tmp/lorac-test-core-XXXXXX";

static void test_error_prefix(void) {
    CHECK_EQ_INT(lc_fail("bad %d", 7), -1);
    lc_fail_prefix("file.json");
    CHECK_EQ_STR(lc_errmsg(), "file.json: bad 7");
}

static void test_vec(void) {
    lc_buf b = {0};
    for (int i = 0; i < 1000; i++) lc_buf_printf(&b, "%d,", i);
    CHECK(b.len == strlen(b.data));
    CHECK(!strncmp(b.data, "0,1,2,", 6));
    lc_buf_free(&b);
    lc_ids v = {0};
    for (int i = 0; i < 100000; i++) lc_ids_push(&v, i);
    CHECK_EQ_INT(v.len, 100000);
    CHECK_EQ_INT(v.data[99999], 99999);
    lc_ids_free(&v);
    size_t out;
    CHECK_EQ_INT(lc_mul_size(SIZE_MAX / 2, 3, &out), -1);
    CHECK_EQ_INT(lc_mul_size(1 << 20, 1 << 20, &out), 0);
}

static void test_atomic_write_keeps_old_on_abort(void) {
    char *p = lc_path_join(g_dir, "a.txt");
    CHECK_OK(lc_write_file_atomic(p, "first", 5));
    lc_atomic a;
    CHECK_OK(lc_atomic_open(&a, p));
    CHECK_OK(lc_atomic_write(&a, "second-but-broken", 17));
    lc_atomic_abort(&a);
    char *data;
    size_t len;
    CHECK_OK(lc_read_file(p, 100, &data, &len));
    CHECK_EQ_STR(data, "first");
    free(data);
    CHECK_FAILS(lc_read_file(p, 2, &data, &len), "more than");
    free(p);
}

static void test_json_errors_are_located(void) {
    cJSON *j;
    CHECK_FAILS(lc_json_parse("{\n  \"a\": 1,\n  \"b\": }", 20, "x.json", &j), "line 3");
    CHECK_FAILS(lc_json_parse("{\"a\": [1, 2", 11, "x.json", &j), "truncated");
    CHECK_OK(lc_json_parse("{\"a\": 1.5, \"s\": \"t\", \"n\": null}", 31, "x.json", &j));
    int64_t i = 42;
    CHECK_FAILS(lc_json_int(j, "a", &i, "x.json"), "\"a\" must be an integer");
    const char *s = NULL;
    CHECK_EQ_INT(lc_json_str(j, "s", &s, "x.json"), 1);
    CHECK_EQ_STR(s, "t");
    CHECK_EQ_INT(lc_json_int(j, "n", &i, "x.json"), 0);
    CHECK_EQ_INT(i, 42);
    CHECK_FAILS(lc_json_int(j, "s", &i, "x.json"), "found a string");
    cJSON_Delete(j);
}

static void test_json_quote(void) {
    lc_buf b = {0};
    lc_json_quote(&b, "a\"\n\x01\xff\xc3\xa9", 7);
    CHECK_EQ_STR(b.data, "\"a\\\"\\n\\u0001\\ufffd\xc3\xa9\"");
    lc_buf_free(&b);
}

static void test_json_unquote(void) {
    lc_buf b = {0};
    const char *in = " \"a\\u0000b\\n\\ud83d\\ude00\\u00e9\\\"\" ";
    CHECK_OK(lc_json_unquote(in, strlen(in), "x", &b));
    CHECK_EQ_INT(b.len, 11);
    CHECK(!memcmp(b.data, "a\0b\n\xf0\x9f\x98\x80\xc3\xa9\"", 11));
    CHECK_FAILS(lc_json_unquote("\"abc", 4, "line 3", &b), "line 3: unterminated");
    CHECK_FAILS(lc_json_unquote("12", 2, "line 3", &b), "expected a JSON string");
    CHECK_FAILS(lc_json_unquote("\"a\" x", 6, "line 3", &b), "after the JSON string");
    CHECK_FAILS(lc_json_unquote("\"\\q\"", 4, "line 3", &b), "bad escape");
    lc_buf_free(&b);
}

int main(void) {
    if (!mkdtemp(g_dir)) return 1;
    RUN(test_error_prefix);
    RUN(test_vec);
    RUN(test_atomic_write_keeps_old_on_abort);
    RUN(test_json_errors_are_located);
    RUN(test_json_quote);
    RUN(test_json_unquote);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd) != 0) return 1;
    return t_summary();
}
