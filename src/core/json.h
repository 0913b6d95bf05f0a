/*
 * json.h — JSON access through cJSON (Debian's libcjson), with errors that name the
 * file, the place and the key.
 *
 * The typed getters return 1 when the key is present with the right type, 0 when it is
 * absent or null (the output is left untouched, so callers preset defaults), and -1
 * with an error recorded when it has the wrong type or an out-of-range value.
 */
#ifndef LC_JSON_H
#define LC_JSON_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/vec.h"

/* Parses len bytes of text; `what` (usually the file name) prefixes any error, which
 * gives the line and column of the fault. *out is owned by the caller (cJSON_Delete). */
int lc_json_parse(const char *text, size_t len, const char *what, cJSON **out);
/* Reads and parses a file of at most max_bytes. */
int lc_json_parse_file(const char *path, size_t max_bytes, cJSON **out);

int lc_json_int(const cJSON *obj, const char *key, int64_t *out, const char *what);
int lc_json_num(const cJSON *obj, const char *key, double *out, const char *what);
int lc_json_bool(const cJSON *obj, const char *key, bool *out, const char *what);
/* *out points into the cJSON tree (valid while it lives). */
int lc_json_str(const cJSON *obj, const char *key, const char **out, const char *what);
/* Present as an object (1), absent/null (0), or wrong type (-1). */
int lc_json_obj(const cJSON *obj, const char *key, const cJSON **out, const char *what);
int lc_json_arr(const cJSON *obj, const char *key, const cJSON **out, const char *what);

/* The name of a cJSON value's type, for messages ("string", "number", ...). */
const char *lc_json_type_name(const cJSON *v);

/* Appends s to b as a JSON string literal (quotes, escapes; invalid UTF-8 bytes are
 * written as U+FFFD). */
void lc_json_quote(lc_buf *b, const char *s, size_t n);

/* Decodes text[0..len), which must be exactly one JSON string literal (whitespace around
 * it allowed), into out — unlike cJSON, keeping "\u0000" as a NUL byte; out->len is the
 * decoded length and out->data a NUL-terminated buffer (never NULL). Returns 0 or -1 naming `what` and the column. */
int lc_json_unquote(const char *text, size_t len, const char *what, lc_buf *out);

#endif
