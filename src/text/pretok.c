/*
 * pretok.c — normalizers and pre-tokenizers of a tokenizer.json pipeline, with the
 * semantics of Hugging Face's `tokenizers` (the normalizers and pre_tokenizers modules,
 * tokenizer/normalizer.rs for the split behaviours). See pretok.h.
 *
 * Owns: the built normalizer/pre-tokenizer trees, compiled PCRE2 patterns (UTF + UCP,
 * JIT when available). Must not: keep per-call state in the trees (they are shared
 * between threads), accept a type it does not implement.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "text/pretok.h"

#include <pcre2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "core/error.h"
#include "core/json.h"
#include "core/mem.h"
#include "text/utf8.h"

/* ---------------------------------------------------------------- patterns */

struct lc_pattern {
    char *lit; // String pattern (NULL for a regex)
    size_t lit_len;
    pcre2_code *re;
};

static int lc_regex_compile(const char *src, const char *what, const char *place, pcre2_code **out) {
    int err;
    PCRE2_SIZE at;
    *out = pcre2_compile((PCRE2_SPTR)src, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err,
                         &at, NULL);
    if (!*out) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return lc_fail("%s: %s: regex does not compile at offset %zu: %s", what, place,
                       (size_t)at, (const char *)msg);
    }
    pcre2_jit_compile(*out, PCRE2_JIT_COMPLETE); // optional speed-up; failure is harmless
    return 0;
}

int lc_pattern_build(const cJSON *node, const char *what, const char *place, lc_pattern **out) {
    *out = NULL;
    const cJSON *s = cJSON_IsObject(node) ? cJSON_GetObjectItemCaseSensitive(node, "String") : NULL;
    const cJSON *r = cJSON_IsObject(node) ? cJSON_GetObjectItemCaseSensitive(node, "Regex") : NULL;
    if (cJSON_IsString(s)) {
        lc_pattern *p = xcalloc(1, sizeof *p);
        p->lit = xstrdup(s->valuestring);
        p->lit_len = strlen(p->lit);
        *out = p;
        return 0;
    }
    if (cJSON_IsString(r)) {
        lc_pattern *p = xcalloc(1, sizeof *p);
        if (lc_regex_compile(r->valuestring, what, place, &p->re)) {
            free(p);
            return -1;
        }
        *out = p;
        return 0;
    }
    return lc_fail("%s: %s must be {\"String\": ...} or {\"Regex\": ...}, found %s", what, place,
                   lc_json_type_name(node));
}

void lc_pattern_free(lc_pattern *p) {
    if (!p) return;
    free(p->lit);
    if (p->re) pcre2_code_free(p->re);
    free(p);
}

/* A list of (start, end, is_match) spans covering a string, as `Pattern::find_matches`. */
typedef struct {
    size_t *a, *b;
    unsigned char *m;
    size_t n, cap;
} spans;

static void spans_push(spans *s, size_t a, size_t b, bool m) {
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 16;
        s->a = xrealloc(s->a, s->cap * sizeof *s->a);
        s->b = xrealloc(s->b, s->cap * sizeof *s->b);
        s->m = xrealloc(s->m, s->cap);
    }
    s->a[s->n] = a, s->b[s->n] = b, s->m[s->n] = m;
    s->n++;
}

static void spans_free(spans *s) {
    free(s->a), free(s->b), free(s->m);
    memset(s, 0, sizeof *s);
}

/* First occurrence of needle (m > 0 bytes) in hay[0..n), or NULL. */
static const char *find_bytes(const char *hay, size_t n, const char *needle, size_t m) {
    if (m > n) return NULL;
    const char *end = hay + (n - m);
    for (const char *p = hay; p <= end; p++) {
        p = memchr(p, needle[0], (size_t)(end - p) + 1);
        if (!p) return NULL;
        if (!memcmp(p, needle, m)) return p;
    }
    return NULL;
}

/* Finds the matches of a pattern in s[0..n) as spans (non-overlapping, left to right). */
static int pattern_spans(const lc_pattern *p, const char *s, size_t n, spans *out) {
    out->n = 0;
    if (n == 0) {
        spans_push(out, 0, 0, false);
        return 0;
    }
    size_t prev = 0;
    if (p->lit) {
        if (p->lit_len == 0) {
            spans_push(out, 0, n, false);
            return 0;
        }
        size_t i = 0;
        while (i + p->lit_len <= n) {
            const char *hit = find_bytes(s + i, n - i, p->lit, p->lit_len);
            if (!hit) break;
            size_t a = (size_t)(hit - s);
            if (a != prev) spans_push(out, prev, a, false);
            spans_push(out, a, a + p->lit_len, true);
            prev = i = a + p->lit_len;
        }
    } else {
        pcre2_match_data *md = pcre2_match_data_create_from_pattern(p->re, NULL);
        if (!md) return lc_fail("out of memory for a regex match");
        size_t at = 0;
        while (at <= n) {
            int rc = pcre2_match(p->re, (PCRE2_SPTR)s, n, at, PCRE2_NO_UTF_CHECK, md, NULL);
            if (rc == PCRE2_ERROR_NOMATCH) break;
            if (rc < 0) {
                PCRE2_UCHAR msg[256];
                pcre2_get_error_message(rc, msg, sizeof msg);
                pcre2_match_data_free(md);
                return lc_fail("regex match failed: %s", (const char *)msg);
            }
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            size_t a = ov[0], b = ov[1];
            if (a != prev) spans_push(out, prev, a, false);
            spans_push(out, a, b, true);
            prev = b;
            if (b == a) { // empty match: step over one character
                if (b >= n) break;
                at = b + lc_utf8_len((unsigned char)s[b]);
            } else {
                at = b;
            }
        }
        pcre2_match_data_free(md);
    }
    if (prev != n) spans_push(out, prev, n, false);
    return 0;
}

int lc_pattern_replace(const lc_pattern *p, const char *s, size_t n, const char *with,
                       size_t with_len, lc_buf *out) {
    spans sp = {0};
    if (pattern_spans(p, s, n, &sp)) return -1;
    for (size_t i = 0; i < sp.n; i++) {
        if (sp.m[i] && sp.b[i] > sp.a[i]) lc_buf_append(out, with, with_len);
        else if (!sp.m[i]) lc_buf_append(out, s + sp.a[i], sp.b[i] - sp.a[i]);
    }
    spans_free(&sp);
    return 0;
}

/* Spans of each single character satisfying pred (each its own match). */
static void pred_spans(const char *s, size_t n, bool (*pred)(uint32_t, const void *),
                       const void *ctx, spans *out) {
    out->n = 0;
    size_t last = 0, i = 0;
    while (i < n) {
        uint32_t cp;
        size_t l = lc_utf8_dec((const unsigned char *)s + i, n - i, &cp);
        if (!l) cp = 0xFFFD, l = 1;
        if (pred(cp, ctx)) {
            if (last < i) spans_push(out, last, i, false);
            spans_push(out, i, i + l, true);
            last = i + l;
        }
        i += l;
    }
    if (n > last) spans_push(out, last, n, false);
    if (n == 0) spans_push(out, 0, 0, false);
}

enum { B_REMOVED, B_ISOLATED, B_PREV, B_NEXT, B_CONTIG };

/* Applies a split behaviour (normalizer.rs `split`) to spans; the result is in `res`
 * as pieces to keep (m == 0) or drop (m == 1). */
static void apply_behavior(const spans *in, int behavior, bool invert, spans *res) {
    res->n = 0;
    bool prev = false;
    switch (behavior) {
    case B_ISOLATED:
        for (size_t i = 0; i < in->n; i++) spans_push(res, in->a[i], in->b[i], false);
        break;
    case B_REMOVED:
        for (size_t i = 0; i < in->n; i++) spans_push(res, in->a[i], in->b[i], in->m[i] ^ invert);
        break;
    case B_CONTIG:
        for (size_t i = 0; i < in->n; i++) {
            bool m = in->m[i] ^ invert;
            if (m == prev && res->n) res->b[res->n - 1] = in->b[i];
            else spans_push(res, in->a[i], in->b[i], false);
            prev = m;
        }
        break;
    case B_PREV:
        for (size_t i = 0; i < in->n; i++) {
            bool m = in->m[i] ^ invert;
            if (m && !prev && res->n) res->b[res->n - 1] = in->b[i];
            else spans_push(res, in->a[i], in->b[i], false);
            prev = m;
        }
        break;
    case B_NEXT:
        for (size_t k = in->n; k-- > 0;) {
            bool m = in->m[k] ^ invert;
            if (m && !prev && res->n) res->a[res->n - 1] = in->a[k];
            else spans_push(res, in->a[k], in->b[k], false);
            prev = m;
        }
        for (size_t i = 0, j = res->n ? res->n - 1 : 0; i < j; i++, j--) { // reverse
            size_t t = res->a[i];
            res->a[i] = res->a[j], res->a[j] = t;
            t = res->b[i];
            res->b[i] = res->b[j], res->b[j] = t;
            unsigned char u = res->m[i];
            res->m[i] = res->m[j], res->m[j] = u;
        }
        break;
    }
}

/* -------------------------------------------------------------- normalizers */

enum { NZ_PREPEND, NZ_REPLACE, NZ_NFC, NZ_NFD, NZ_NFKC, NZ_NFKD, NZ_LOWER, NZ_STRIP, NZ_SEQ };

struct lc_normalizer {
    int type;
    char *str; // Prepend: the prefix; Replace: the content
    size_t str_len;
    lc_pattern *pat;
    bool left, right;
    lc_normalizer **kids;
    size_t n_kids;
};

void lc_normalizer_free(lc_normalizer *n) {
    if (!n) return;
    free(n->str);
    lc_pattern_free(n->pat);
    for (size_t i = 0; i < n->n_kids; i++) lc_normalizer_free(n->kids[i]);
    free(n->kids);
    free(n);
}

static int type_of(const cJSON *node, const char *what, const char *place, const char **type) {
    if (!cJSON_IsObject(node))
        return lc_fail("%s: %s must be an object, found %s", what, place, lc_json_type_name(node));
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(node, "type");
    if (!cJSON_IsString(t))
        return lc_fail("%s: %s.type must be a string, found %s", what, place,
                       lc_json_type_name(t));
    *type = t->valuestring;
    return 0;
}

static int get_str(const cJSON *node, const char *key, const char *what, const char *place,
                   bool required, const char **out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(node, key);
    if (!v || cJSON_IsNull(v)) {
        if (required) return lc_fail("%s: %s.%s is missing", what, place, key);
        return 0;
    }
    if (!cJSON_IsString(v))
        return lc_fail("%s: %s.%s must be a string, found %s", what, place, key,
                       lc_json_type_name(v));
    *out = v->valuestring;
    return 0;
}

static int get_bool(const cJSON *node, const char *key, const char *what, const char *place,
                    bool *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(node, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsBool(v))
        return lc_fail("%s: %s.%s must be true or false, found %s", what, place, key,
                       lc_json_type_name(v));
    *out = cJSON_IsTrue(v);
    return 0;
}

static int norm_build(const cJSON *node, const char *what, const char *place,
                      lc_normalizer **out) {
    const char *type;
    *out = NULL;
    if (type_of(node, what, place, &type)) return -1;
    lc_normalizer *n = xcalloc(1, sizeof *n);
    char sub[512];
    if (!strcmp(type, "Prepend")) {
        const char *p = NULL;
        n->type = NZ_PREPEND;
        if (get_str(node, "prepend", what, place, true, &p)) goto fail;
        n->str = xstrdup(p), n->str_len = strlen(p);
    } else if (!strcmp(type, "Replace")) {
        const char *c = NULL;
        n->type = NZ_REPLACE;
        if (get_str(node, "content", what, place, true, &c)) goto fail;
        n->str = xstrdup(c), n->str_len = strlen(c);
        snprintf(sub, sizeof sub, "%s.pattern", place);
        if (lc_pattern_build(cJSON_GetObjectItemCaseSensitive(node, "pattern"), what, sub,
                             &n->pat))
            goto fail;
    } else if (!strcmp(type, "NFC")) {
        n->type = NZ_NFC;
    } else if (!strcmp(type, "NFD")) {
        n->type = NZ_NFD;
    } else if (!strcmp(type, "NFKC")) {
        n->type = NZ_NFKC;
    } else if (!strcmp(type, "NFKD")) {
        n->type = NZ_NFKD;
    } else if (!strcmp(type, "Lowercase")) {
        n->type = NZ_LOWER;
    } else if (!strcmp(type, "Strip")) {
        n->type = NZ_STRIP;
        n->left = n->right = true;
        if (get_bool(node, "strip_left", what, place, &n->left) ||
            get_bool(node, "strip_right", what, place, &n->right))
            goto fail;
    } else if (!strcmp(type, "Sequence")) {
        n->type = NZ_SEQ;
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(node, "normalizers");
        if (!cJSON_IsArray(arr)) {
            lc_fail("%s: %s.normalizers must be an array, found %s", what, place,
                    lc_json_type_name(arr));
            goto fail;
        }
        int k = cJSON_GetArraySize(arr);
        n->kids = xcalloc((size_t)k + 1, sizeof *n->kids);
        for (int i = 0; i < k; i++) {
            snprintf(sub, sizeof sub, "%s.normalizers[%d]", place, i);
            if (norm_build(cJSON_GetArrayItem(arr, i), what, sub, &n->kids[i])) goto fail;
            n->n_kids++;
        }
    } else {
        lc_fail("%s: %s: normalizer type \"%s\" is not supported by lorac (supported: Prepend, "
                "Replace, NFC, NFD, NFKC, NFKD, Lowercase, Strip, Sequence)",
                what, place, type);
        goto fail;
    }
    *out = n;
    return 0;
fail:
    lc_normalizer_free(n);
    return -1;
}

int lc_normalizer_build(const cJSON *node, const char *what, lc_normalizer **out) {
    *out = NULL;
    if (!node || cJSON_IsNull(node)) return 0;
    return norm_build(node, what, "normalizer", out);
}

static int unicode_form(int type, const char *s, size_t len, lc_buf *out) {
    if (len == 0) return 0;
    int opt = UTF8PROC_STABLE;
    if (type == NZ_NFC) opt |= UTF8PROC_COMPOSE;
    if (type == NZ_NFD) opt |= UTF8PROC_DECOMPOSE;
    if (type == NZ_NFKC) opt |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
    if (type == NZ_NFKD) opt |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t n =
        utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)len, &dst, opt);
    if (n < 0) return lc_fail("unicode normalization failed: %s", utf8proc_errmsg(n));
    lc_buf_append(out, dst, (size_t)n);
    free(dst);
    return 0;
}

static int norm_apply(const lc_normalizer *n, const char *s, size_t len, lc_buf *out) {
    switch (n->type) {
    case NZ_PREPEND:
        if (len) lc_buf_append(out, n->str, n->str_len);
        lc_buf_append(out, s, len);
        return 0;
    case NZ_REPLACE:
        return lc_pattern_replace(n->pat, s, len, n->str, n->str_len, out);
    case NZ_NFC:
    case NZ_NFD:
    case NZ_NFKC:
    case NZ_NFKD:
        return unicode_form(n->type, s, len, out);
    case NZ_LOWER:
        for (size_t i = 0; i < len;) {
            uint32_t cp;
            size_t l = lc_utf8_dec((const unsigned char *)s + i, len - i, &cp);
            if (!l) return lc_fail("text is not valid UTF-8 at byte %zu", i);
            char enc[4];
            if (cp == 0x130) { // the one multi-character lower-case mapping: İ -> i + U+0307
                lc_buf_append(out, "i\xCC\x87", 3);
            } else {
                lc_buf_append(out, enc, lc_utf8_enc((uint32_t)utf8proc_tolower((int32_t)cp), enc));
            }
            i += l;
        }
        return 0;
    case NZ_STRIP: {
        size_t a = 0, b = len;
        uint32_t cp;
        while (n->left && a < b) {
            size_t l = lc_utf8_dec((const unsigned char *)s + a, b - a, &cp);
            if (!l || !lc_is_space(cp)) break;
            a += l;
        }
        while (n->right && b > a) {
            size_t k = b - 1;
            while (k > a && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
            size_t l = lc_utf8_dec((const unsigned char *)s + k, b - k, &cp);
            if (!l || !lc_is_space(cp)) break;
            b = k;
        }
        lc_buf_append(out, s + a, b - a);
        return 0;
    }
    case NZ_SEQ: {
        lc_buf cur = {0}, nxt = {0};
        lc_buf_append(&cur, s, len);
        for (size_t i = 0; i < n->n_kids; i++) {
            lc_buf_clear(&nxt);
            if (norm_apply(n->kids[i], cur.data, cur.len, &nxt)) {
                lc_buf_free(&cur), lc_buf_free(&nxt);
                return -1;
            }
            lc_buf t = cur;
            cur = nxt, nxt = t;
        }
        lc_buf_append(out, cur.data, cur.len);
        lc_buf_free(&cur), lc_buf_free(&nxt);
        return 0;
    }
    }
    return lc_fail("internal: unknown normalizer");
}

int lc_normalize(const lc_normalizer *n, const char *s, size_t len, lc_buf *out) {
    if (!n) {
        lc_buf_append(out, s, len);
        return 0;
    }
    return norm_apply(n, s, len, out);
}

/* ----------------------------------------------------------- word lists */

/* Words with, for each, whether it starts at offset 0 of the original input section
 * (Metaspace's prepend_scheme "first" looks at that). */
typedef struct {
    lc_buf bytes;
    size_t *off, *len;
    unsigned char *origin;
    size_t n, cap;
} wlist;

static void wl_push(wlist *w, const char *p, size_t n, bool origin) {
    if (n == 0) return; // empty splits are dropped, as PreTokenizedString::split does
    if (w->n == w->cap) {
        w->cap = w->cap ? w->cap * 2 : 16;
        w->off = xrealloc(w->off, w->cap * sizeof *w->off);
        w->len = xrealloc(w->len, w->cap * sizeof *w->len);
        w->origin = xrealloc(w->origin, w->cap);
    }
    w->off[w->n] = w->bytes.len;
    w->len[w->n] = n;
    w->origin[w->n] = origin;
    w->n++;
    lc_buf_append(&w->bytes, p, n);
}

static void wl_clear(wlist *w) {
    lc_buf_clear(&w->bytes);
    w->n = 0;
}

static void wl_free(wlist *w) {
    lc_buf_free(&w->bytes);
    free(w->off), free(w->len), free(w->origin);
    memset(w, 0, sizeof *w);
}

/* ---------------------------------------------------------- pre-tokenizers */

enum { PT_METASPACE, PT_BYTELEVEL, PT_SPLIT, PT_DIGITS, PT_WSSPLIT, PT_WHITESPACE, PT_SEQ };
enum { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER };

struct lc_pretok {
    int type;
    char rep[8]; // Metaspace replacement (UTF-8)
    size_t rep_len;
    uint32_t rep_cp;
    int prepend;
    bool split, add_prefix_space, use_regex, invert, individual;
    int behavior;
    lc_pattern *pat; // Split; ByteLevel's GPT-2 regex; Whitespace's regex
    lc_pretok **kids;
    size_t n_kids;
};

void lc_pretok_free(lc_pretok *p) {
    if (!p) return;
    lc_pattern_free(p->pat);
    for (size_t i = 0; i < p->n_kids; i++) lc_pretok_free(p->kids[i]);
    free(p->kids);
    free(p);
}

static const char GPT2_REGEX[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static lc_pattern *regex_pattern(const char *src, const char *what, const char *place) {
    lc_pattern *p = xcalloc(1, sizeof *p);
    if (lc_regex_compile(src, what, place, &p->re)) {
        free(p);
        return NULL;
    }
    return p;
}

static int pre_build(const cJSON *node, const char *what, const char *place, lc_pretok **out) {
    const char *type;
    *out = NULL;
    if (type_of(node, what, place, &type)) return -1;
    lc_pretok *p = xcalloc(1, sizeof *p);
    char sub[512];
    if (!strcmp(type, "Metaspace")) {
        const char *rep = "\xE2\x96\x81", *scheme = NULL;
        p->type = PT_METASPACE;
        p->split = true;
        p->prepend = PREPEND_ALWAYS;
        bool aps = true;
        if (get_str(node, "replacement", what, place, false, &rep) ||
            get_str(node, "prepend_scheme", what, place, false, &scheme) ||
            get_bool(node, "split", what, place, &p->split) ||
            get_bool(node, "add_prefix_space", what, place, &aps))
            goto fail;
        uint32_t cp;
        size_t l = lc_utf8_dec((const unsigned char *)rep, strlen(rep), &cp);
        if (!l || rep[l] != '\0') {
            lc_fail("%s: %s.replacement must be exactly one character, found \"%s\"", what,
                    place, rep);
            goto fail;
        }
        memcpy(p->rep, rep, l);
        p->rep_len = l, p->rep_cp = cp;
        if (scheme) {
            if (!strcmp(scheme, "always")) p->prepend = PREPEND_ALWAYS;
            else if (!strcmp(scheme, "first")) p->prepend = PREPEND_FIRST;
            else if (!strcmp(scheme, "never")) p->prepend = PREPEND_NEVER;
            else {
                lc_fail("%s: %s.prepend_scheme must be \"always\", \"first\" or \"never\", "
                        "found \"%s\"",
                        what, place, scheme);
                goto fail;
            }
        } else if (!aps) {
            p->prepend = PREPEND_NEVER; // older files: add_prefix_space false
        }
    } else if (!strcmp(type, "ByteLevel")) {
        p->type = PT_BYTELEVEL;
        p->add_prefix_space = true;
        p->use_regex = true;
        if (get_bool(node, "add_prefix_space", what, place, &p->add_prefix_space) ||
            get_bool(node, "use_regex", what, place, &p->use_regex))
            goto fail;
        snprintf(sub, sizeof sub, "%s (ByteLevel regex)", place);
        if (p->use_regex && !(p->pat = regex_pattern(GPT2_REGEX, what, sub))) goto fail;
    } else if (!strcmp(type, "Split")) {
        const char *beh = NULL;
        p->type = PT_SPLIT;
        snprintf(sub, sizeof sub, "%s.pattern", place);
        if (lc_pattern_build(cJSON_GetObjectItemCaseSensitive(node, "pattern"), what, sub,
                             &p->pat) ||
            get_str(node, "behavior", what, place, true, &beh) ||
            get_bool(node, "invert", what, place, &p->invert))
            goto fail;
        static const char *names[] = {"Removed", "Isolated", "MergedWithPrevious",
                                      "MergedWithNext", "Contiguous"};
        p->behavior = -1;
        for (int i = 0; i < 5; i++)
            if (!strcmp(beh, names[i])) p->behavior = i;
        if (p->behavior < 0) {
            lc_fail("%s: %s.behavior \"%s\" is not one of Removed, Isolated, "
                    "MergedWithPrevious, MergedWithNext, Contiguous",
                    what, place, beh);
            goto fail;
        }
    } else if (!strcmp(type, "Digits")) {
        p->type = PT_DIGITS;
        if (get_bool(node, "individual_digits", what, place, &p->individual)) goto fail;
    } else if (!strcmp(type, "WhitespaceSplit")) {
        p->type = PT_WSSPLIT;
    } else if (!strcmp(type, "Whitespace")) {
        p->type = PT_WHITESPACE;
        if (!(p->pat = regex_pattern("\\w+|[^\\w\\s]+", what, place))) goto fail;
    } else if (!strcmp(type, "Sequence")) {
        p->type = PT_SEQ;
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(node, "pretokenizers");
        if (!cJSON_IsArray(arr)) {
            lc_fail("%s: %s.pretokenizers must be an array, found %s", what, place,
                    lc_json_type_name(arr));
            goto fail;
        }
        int k = cJSON_GetArraySize(arr);
        p->kids = xcalloc((size_t)k + 1, sizeof *p->kids);
        for (int i = 0; i < k; i++) {
            snprintf(sub, sizeof sub, "%s.pretokenizers[%d]", place, i);
            if (pre_build(cJSON_GetArrayItem(arr, i), what, sub, &p->kids[i])) goto fail;
            p->n_kids++;
        }
    } else {
        lc_fail("%s: %s: pre-tokenizer type \"%s\" is not supported by lorac (supported: "
                "Metaspace, ByteLevel, Split, Digits, Whitespace, WhitespaceSplit, Sequence)",
                what, place, type);
        goto fail;
    }
    *out = p;
    return 0;
fail:
    lc_pretok_free(p);
    return -1;
}

int lc_pretok_build(const cJSON *node, const char *what, lc_pretok **out) {
    *out = NULL;
    if (!node || cJSON_IsNull(node)) return 0;
    return pre_build(node, what, "pre_tokenizer", out);
}

bool lc_pretok_is_byte_level(const lc_pretok *p) {
    if (!p) return false;
    if (p->type == PT_BYTELEVEL) return true;
    for (size_t i = 0; i < p->n_kids; i++)
        if (lc_pretok_is_byte_level(p->kids[i])) return true;
    return false;
}

/* The GPT-2 byte-level alphabet: printable Latin-1 bytes stand for themselves, the other
 * 68 bytes for U+0100 + their rank among those. */
static char g_bl_char[256][3];
static int16_t g_bl_byte[324];
static pthread_once_t g_bl_once = PTHREAD_ONCE_INIT;

static void bl_init(void) {
    int k = 0;
    for (int i = 0; i < 324; i++) g_bl_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        bool keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
        uint32_t cp = keep ? (uint32_t)b : (uint32_t)(256 + k++);
        char enc[4];
        size_t l = lc_utf8_enc(cp, enc);
        memcpy(g_bl_char[b], enc, l);
        g_bl_char[b][l] = '\0';
        g_bl_byte[cp] = (int16_t)b;
    }
}

const char *lc_byte_level_char(unsigned char b) {
    pthread_once(&g_bl_once, bl_init);
    return g_bl_char[b];
}

int lc_byte_level_byte(uint32_t cp) {
    pthread_once(&g_bl_once, bl_init);
    return cp < 324 ? g_bl_byte[cp] : -1;
}

static bool is_numeric(uint32_t cp, const void *ctx) {
    (void)ctx;
    if (cp < 0x80) return cp >= '0' && cp <= '9';
    utf8proc_category_t c = utf8proc_category((int32_t)cp);
    return c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO;
}

static bool is_ws(uint32_t cp, const void *ctx) {
    (void)ctx;
    return lc_is_space(cp);
}

static bool is_cp(uint32_t cp, const void *ctx) { return cp == *(const uint32_t *)ctx; }

/* Pushes the pieces kept by a behaviour over spans of s. */
static void push_pieces(const char *s, const spans *res, bool origin, wlist *out) {
    for (size_t i = 0; i < res->n; i++)
        if (!res->m[i]) wl_push(out, s + res->a[i], res->b[i] - res->a[i], origin && res->a[i] == 0);
}

/* Applies pre-tokenizer p to one piece s[0..n), appending its words to out. */
static int pre_apply(const lc_pretok *p, const char *s, size_t n, bool origin, wlist *out,
                     spans *sp, spans *res) {
    switch (p->type) {
    case PT_METASPACE: {
        lc_buf t = {0};
        // the check is on the text after ' ' became the replacement
        bool starts = (n && s[0] == ' ') || (n >= p->rep_len && !memcmp(s, p->rep, p->rep_len));
        if (n && !starts &&
            (p->prepend == PREPEND_ALWAYS || (p->prepend == PREPEND_FIRST && origin)))
            lc_buf_append(&t, p->rep, p->rep_len);
        for (size_t i = 0; i < n; i++) {
            if (s[i] == ' ') lc_buf_append(&t, p->rep, p->rep_len);
            else lc_buf_putc(&t, s[i]);
        }
        if (p->split) {
            pred_spans(t.data, t.len, is_cp, &p->rep_cp, sp);
            apply_behavior(sp, B_NEXT, false, res);
            push_pieces(t.data, res, origin, out);
        } else {
            wl_push(out, t.data, t.len, origin);
        }
        lc_buf_free(&t);
        return 0;
    }
    case PT_BYTELEVEL: {
        lc_buf t = {0}, m = {0};
        wlist tmp = {0};
        if (p->add_prefix_space && n && s[0] != ' ') lc_buf_putc(&t, ' ');
        lc_buf_append(&t, s, n);
        if (p->use_regex) {
            if (pattern_spans(p->pat, t.data, t.len, sp)) {
                lc_buf_free(&t);
                return -1;
            }
            apply_behavior(sp, B_ISOLATED, false, res);
            push_pieces(t.data, res, origin, &tmp);
        } else {
            wl_push(&tmp, t.data, t.len, origin);
        }
        // map each word's bytes to the byte-level alphabet
        for (size_t w = 0; w < tmp.n; w++) {
            lc_buf_clear(&m);
            const unsigned char *src = (const unsigned char *)tmp.bytes.data + tmp.off[w];
            for (size_t i = 0; i < tmp.len[w]; i++) lc_buf_puts(&m, lc_byte_level_char(src[i]));
            wl_push(out, m.data, m.len, tmp.origin[w]);
        }
        lc_buf_free(&t), lc_buf_free(&m);
        wl_free(&tmp);
        return 0;
    }
    case PT_SPLIT:
        if (pattern_spans(p->pat, s, n, sp)) return -1;
        apply_behavior(sp, p->behavior, p->invert, res);
        push_pieces(s, res, origin, out);
        return 0;
    case PT_DIGITS:
        pred_spans(s, n, is_numeric, NULL, sp);
        apply_behavior(sp, p->individual ? B_ISOLATED : B_CONTIG, false, res);
        push_pieces(s, res, origin, out);
        return 0;
    case PT_WSSPLIT:
        pred_spans(s, n, is_ws, NULL, sp);
        apply_behavior(sp, B_REMOVED, false, res);
        push_pieces(s, res, origin, out);
        return 0;
    case PT_WHITESPACE:
        if (pattern_spans(p->pat, s, n, sp)) return -1;
        apply_behavior(sp, B_REMOVED, true, res);
        push_pieces(s, res, origin, out);
        return 0;
    case PT_SEQ: {
        wlist a = {0}, b = {0};
        wl_push(&a, s, n, origin);
        for (size_t k = 0; k < p->n_kids; k++) {
            wl_clear(&b);
            for (size_t w = 0; w < a.n; w++) {
                if (pre_apply(p->kids[k], a.bytes.data + a.off[w], a.len[w], a.origin[w], &b,
                              sp, res)) {
                    wl_free(&a), wl_free(&b);
                    return -1;
                }
            }
            wlist t = a;
            a = b, b = t;
        }
        for (size_t w = 0; w < a.n; w++)
            wl_push(out, a.bytes.data + a.off[w], a.len[w], a.origin[w]);
        wl_free(&a), wl_free(&b);
        return 0;
    }
    }
    return lc_fail("internal: unknown pre-tokenizer");
}

void lc_pretok_out_clear(lc_pretok_out *o) {
    lc_buf_clear(&o->bytes);
    o->n_words = 0;
    if (o->starts) o->starts[0] = 0;
}

void lc_pretok_out_free(lc_pretok_out *o) {
    lc_buf_free(&o->bytes);
    free(o->starts);
    memset(o, 0, sizeof *o);
}

static void out_push(lc_pretok_out *o, const char *p, size_t n) {
    if (o->n_words + 2 > o->cap) {
        o->cap = o->cap ? o->cap * 2 : 16;
        o->starts = xrealloc(o->starts, o->cap * sizeof *o->starts);
    }
    if (o->n_words == 0) o->starts[0] = o->bytes.len;
    lc_buf_append(&o->bytes, p, n);
    o->n_words++;
    o->starts[o->n_words] = o->bytes.len;
}

int lc_pretok_split(const lc_pretok *p, const char *s, size_t len, bool first_section,
                    lc_pretok_out *out) {
    if (!p) {
        if (len) out_push(out, s, len);
        return 0;
    }
    wlist w = {0};
    spans sp = {0}, res = {0};
    int rc = pre_apply(p, s, len, first_section, &w, &sp, &res);
    if (rc == 0)
        for (size_t i = 0; i < w.n; i++) out_push(out, w.bytes.data + w.off[i], w.len[i]);
    wl_free(&w);
    spans_free(&sp), spans_free(&res);
    return rc;
}
