/*
 * json.c — JSON access with located errors. See json.h.
 */
#include "core/json.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/file.h"

/* How many brackets are open at the end of text[0..len); *in_string: whether it ends
 * inside a string. */
static long open_depth(const char *text, size_t len, bool *in_string) {
    long depth = 0;
    bool in_str = false;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (in_str) {
            if (c == '\\') i++;
            else if (c == '"') in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
    *in_string = in_str;
    return depth;
}

/* True when text ends inside a string or with brackets left open: a truncated file. */
static bool ends_open(const char *text, size_t len) {
    bool in_str;
    long depth = open_depth(text, len, &in_str);
    return in_str || depth > 0;
}

/* The offset of the first byte of text that is not part of valid UTF-8 (no overlong
 * forms, surrogates or code points past U+10FFFF), or len when all of it is. */
static size_t utf8_invalid_at(const unsigned char *t, size_t len) {
    size_t i = 0;
    while (i < len) {
        unsigned c = t[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
        if (n == 0 || i + n > len) return i;
        unsigned lo = 0x80, hi = 0xBF; /* the allowed range of the second byte */
        if (c == 0xE0) lo = 0xA0;
        else if (c == 0xED) hi = 0x9F;
        else if (c == 0xF0) lo = 0x90;
        else if (c == 0xF4) hi = 0x8F;
        if (t[i + 1] < lo || t[i + 1] > hi) return i;
        for (size_t k = 2; k < n; k++)
            if ((t[i + k] & 0xC0) != 0x80) return i;
        i += n;
    }
    return len;
}

int lc_json_parse(const char *text, size_t len, const char *what, cJSON **out) {
    const char *end = NULL;
    *out = NULL;
    size_t bad = utf8_invalid_at((const unsigned char *)text, len);
    if (bad < len) {
        size_t line = 1, col = 1;
        for (size_t i = 0; i < bad; i++) {
            if (text[i] == '\n') line++, col = 1;
            else col++;
        }
        return lc_fail("%s: invalid UTF-8 at line %zu, column %zu (byte %zu is 0x%02X); JSON "
                       "must be UTF-8: fix the file's encoding",
                       what, line, col, bad, (unsigned)(unsigned char)text[bad]);
    }
    *out = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (*out) return 0;
    size_t off = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
    size_t line = 1, col = 1;
    for (size_t i = 0; i < off; i++) {
        if (text[i] == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    bool in_str;
    if (open_depth(text, off, &in_str) >= CJSON_NESTING_LIMIT)
        return lc_fail("%s: JSON nested deeper than %d levels at line %zu, column %zu", what,
                       CJSON_NESTING_LIMIT, line, col);
    if (off >= len || (off + 1 >= len && ends_open(text, len)))
        return lc_fail("%s: invalid JSON: unexpected end of input at line %zu, column %zu "
                       "(is the file truncated?)",
                       what, line, col);
    return lc_fail("%s: invalid JSON at line %zu, column %zu (byte %zu)", what, line, col, off);
}

int lc_json_parse_file(const char *path, size_t max_bytes, cJSON **out) {
    char *text;
    size_t len;
    *out = NULL;
    if (lc_read_file(path, max_bytes, &text, &len) != 0) return -1;
    int rc = lc_json_parse(text, len, path, out);
    free(text);
    return rc;
}

const char *lc_json_type_name(const cJSON *v) {
    if (!v) return "nothing";
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    return "an invalid value";
}

static const cJSON *get(const cJSON *obj, const char *key) {
    if (!cJSON_IsObject(obj)) return NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsNull(v) ? NULL : v;
}

static int wrong(const cJSON *v, const char *key, const char *want, const char *what) {
    return lc_fail("%s: \"%s\" must be %s, found %s", what, key, want, lc_json_type_name(v));
}

int lc_json_int(const cJSON *obj, const char *key, int64_t *out, const char *what) {
    const cJSON *v = get(obj, key);
    if (!v) return 0;
    if (!cJSON_IsNumber(v)) return wrong(v, key, "an integer", what);
    double d = v->valuedouble;
    if (!isfinite(d) || d != floor(d) || d < -9007199254740992.0 || d > 9007199254740992.0)
        return lc_fail("%s: \"%s\" must be an integer, found %g", what, key, d);
    *out = (int64_t)d;
    return 1;
}

int lc_json_num(const cJSON *obj, const char *key, double *out, const char *what) {
    const cJSON *v = get(obj, key);
    if (!v) return 0;
    if (!cJSON_IsNumber(v)) return wrong(v, key, "a number", what);
    if (!isfinite(v->valuedouble))
        return lc_fail("%s: \"%s\" must be a finite number", what, key);
    *out = v->valuedouble;
    return 1;
}

int lc_json_bool(const cJSON *obj, const char *key, bool *out, const char *what) {
    const cJSON *v = get(obj, key);
    if (!v) return 0;
    if (!cJSON_IsBool(v)) return wrong(v, key, "true or false", what);
    *out = cJSON_IsTrue(v);
    return 1;
}

int lc_json_str(const cJSON *obj, const char *key, const char **out, const char *what) {
    const cJSON *v = get(obj, key);
    if (!v) return 0;
    if (!cJSON_IsString(v)) return wrong(v, key, "a string", what);
    *out = v->valuestring;
    return 1;
}

int lc_json_obj(const cJSON *obj, const char *key, const cJSON **out, const char *what) {
    const cJSON *v = get(obj, key);
    if (!v) return 0;
    if (!cJSON_IsObject(v)) return wrong(v, key, "an object", what);
    *out = v;
    return 1;
}

int lc_json_arr(const cJSON *obj, const char *key, const cJSON **out, const char *what) {
    const cJSON *v = get(obj, key);
    if (!v) return 0;
    if (!cJSON_IsArray(v)) return wrong(v, key, "an array", what);
    *out = v;
    return 1;
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when it is invalid. */
static size_t utf8_valid_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    size_t len;
    unsigned min;
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0) len = 2, min = 0x80;
    else if ((c & 0xF0) == 0xE0) len = 3, min = 0x800;
    else if ((c & 0xF8) == 0xF0) len = 4, min = 0x10000;
    else return 0;
    if (len > n) return 0;
    unsigned cp = c & (0x7F >> len);
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

void lc_json_quote(lc_buf *b, const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    lc_buf_putc(b, '"');
    for (size_t i = 0; i < n;) {
        unsigned c = p[i];
        if (c == '"' || c == '\\') {
            lc_buf_putc(b, '\\');
            lc_buf_putc(b, (char)c);
            i++;
        } else if (c == '\n') {
            lc_buf_puts(b, "\\n"), i++;
        } else if (c == '\t') {
            lc_buf_puts(b, "\\t"), i++;
        } else if (c == '\r') {
            lc_buf_puts(b, "\\r"), i++;
        } else if (c < 0x20 || c == 0x7F) {
            lc_buf_printf(b, "\\u%04x", c), i++;
        } else {
            size_t l = utf8_valid_len(p + i, n - i);
            if (l == 0) {
                lc_buf_puts(b, "\\ufffd");
                i++;
            } else {
                lc_buf_append(b, p + i, l);
                i += l;
            }
        }
    }
    lc_buf_putc(b, '"');
}

static int hex4(const char *p, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

static void put_utf8(lc_buf *b, unsigned cp) {
    char u[4];
    size_t n;
    if (cp < 0x80) u[0] = (char)cp, n = 1;
    else if (cp < 0x800) u[0] = (char)(0xC0 | cp >> 6), u[1] = (char)(0x80 | (cp & 0x3F)), n = 2;
    else if (cp < 0x10000)
        u[0] = (char)(0xE0 | cp >> 12), u[1] = (char)(0x80 | ((cp >> 6) & 0x3F)),
        u[2] = (char)(0x80 | (cp & 0x3F)), n = 3;
    else
        u[0] = (char)(0xF0 | cp >> 18), u[1] = (char)(0x80 | ((cp >> 12) & 0x3F)),
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), u[3] = (char)(0x80 | (cp & 0x3F)), n = 4;
    lc_buf_append(b, u, n);
}

int lc_json_unquote(const char *text, size_t len, const char *what, lc_buf *out) {
    size_t i = 0;
    lc_buf_clear(out);
    lc_buf_append(out, "", 0); /* out->data is a string even when the value is "" */
    while (i < len && (text[i] == ' ' || text[i] == '\t' || text[i] == '\r' || text[i] == '\n')) i++;
    if (i >= len || text[i] != '"')
        return lc_fail("%s: expected a JSON string (e.g. \"some text\") at column %zu", what, i + 1);
    for (i++;; i++) {
        if (i >= len) return lc_fail("%s: unterminated JSON string", what);
        unsigned char c = (unsigned char)text[i];
        if (c == '"') break;
        if (c < 0x20)
            return lc_fail("%s: raw control character in JSON string at column %zu (escape it)", what,
                           i + 1);
        if (c != '\\') {
            lc_buf_putc(out, (char)c);
            continue;
        }
        if (++i >= len) return lc_fail("%s: unterminated JSON string", what);
        switch (text[i]) {
        case '"': lc_buf_putc(out, '"'); break;
        case '\\': lc_buf_putc(out, '\\'); break;
        case '/': lc_buf_putc(out, '/'); break;
        case 'b': lc_buf_putc(out, '\b'); break;
        case 'f': lc_buf_putc(out, '\f'); break;
        case 'n': lc_buf_putc(out, '\n'); break;
        case 'r': lc_buf_putc(out, '\r'); break;
        case 't': lc_buf_putc(out, '\t'); break;
        case 'u': {
            unsigned cp, lo;
            if (i + 4 >= len || hex4(text + i + 1, &cp) != 0)
                return lc_fail("%s: bad \\u escape at column %zu", what, i);
            i += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF && i + 6 < len && text[i + 1] == '\\' &&
                text[i + 2] == 'u' && hex4(text + i + 3, &lo) == 0 && lo >= 0xDC00 && lo <= 0xDFFF) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                i += 6;
            } else if (cp >= 0xD800 && cp <= 0xDFFF) {
                cp = 0xFFFD; /* a lone surrogate, as Python's json would refuse to encode */
            }
            put_utf8(out, cp);
            break;
        }
        default: return lc_fail("%s: bad escape '\\%c' at column %zu", what, text[i], i);
        }
    }
    for (i++; i < len; i++)
        if (!(text[i] == ' ' || text[i] == '\t' || text[i] == '\r' || text[i] == '\n'))
            return lc_fail("%s: unexpected text after the JSON string at column %zu", what, i + 1);
    return 0;
}
