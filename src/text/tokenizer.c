/*
 * tokenizer.c — the lc_tokenizer type: tokenizer.json (with the semantics of Hugging
 * Face's `tokenizers`: added vocabulary, normalizer, pre-tokenizer, BPE model,
 * post-processor, decoder), SentencePiece .model files (through spm.h), and
 * tokenizer_config.json. See tokenizer.h.
 *
 * Owns: the added tokens and their matching tries, the post-processor's special ids,
 * the decoder tree, the config values. Must not: change after loading (shared between
 * threads), print, or approximate a construct it does not implement (it fails instead).
 */
#include "text/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "core/error.h"
#include "core/file.h"
#include "core/json.h"
#include "core/mem.h"
#include "text/bpe.h"
#include "text/pretok.h"
#include "text/spm.h"
#include "text/utf8.h"

#define MAX_TOKENIZER_BYTES ((size_t)1 << 30)

/* ------------------------------------------------------------- tries */

/* A byte trie over the added tokens' texts, for leftmost-longest matching. */
typedef struct {
    int32_t child, sibling, token; // token: index into added[] or -1
    unsigned char byte;
} tnode;

typedef struct {
    tnode *n; // n[0] is the root
    size_t len, cap;
    bool first[256]; // bytes some token starts with
} trie;

static int32_t trie_new(trie *t, unsigned char byte) {
    if (t->len == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 64;
        t->n = xrealloc(t->n, t->cap * sizeof *t->n);
    }
    t->n[t->len] = (tnode){-1, -1, -1, byte};
    return (int32_t)t->len++;
}

static void trie_add(trie *t, const char *s, size_t len, int32_t token) {
    if (len == 0) return;
    if (!t->len) trie_new(t, 0);
    int32_t cur = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        int32_t k = t->n[cur].child;
        while (k >= 0 && t->n[k].byte != c) k = t->n[k].sibling;
        if (k < 0) {
            k = trie_new(t, c);
            t->n[k].sibling = t->n[cur].child;
            t->n[cur].child = k;
        }
        cur = k;
    }
    t->first[(unsigned char)s[0]] = true;
    if (t->n[cur].token < 0) t->n[cur].token = token; // the first token with this text wins
}

/* ------------------------------------------------------------- decoders */

enum { D_REPLACE, D_BYTEFALLBACK, D_FUSE, D_STRIP, D_BYTELEVEL, D_METASPACE, D_SEQ };

typedef struct decoder {
    int type;
    lc_pattern *pat;
    char *content;
    size_t content_len;
    uint32_t cp;        // Strip: the character; Metaspace: the replacement
    size_t start, stop; // Strip
    bool drop_first;    // Metaspace: prepend_scheme != never
    struct decoder **kids;
    size_t n_kids;
} decoder;

static void dec_free(decoder *d) {
    if (!d) return;
    lc_pattern_free(d->pat);
    free(d->content);
    for (size_t i = 0; i < d->n_kids; i++) dec_free(d->kids[i]);
    free(d->kids);
    free(d);
}

/* A list of token strings passed through the decoder chain. */
typedef struct {
    lc_buf b;
    size_t *st; // (n + 1)
    size_t n, cap;
} tlist;

static void tl_push(tlist *l, const char *s, size_t n) {
    if (l->n + 2 > l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->st = xrealloc(l->st, l->cap * sizeof *l->st);
    }
    if (l->n == 0) l->st[0] = l->b.len;
    lc_buf_append(&l->b, s, n);
    l->st[++l->n] = l->b.len;
}

static void tl_clear(tlist *l) {
    lc_buf_clear(&l->b);
    l->n = 0;
}

static void tl_free(tlist *l) {
    lc_buf_free(&l->b);
    free(l->st);
    memset(l, 0, sizeof *l);
}

/* Appends bytes as Rust's String::from_utf8_lossy does: one U+FFFD per maximal invalid
 * subsequence. */
static void append_lossy(lc_buf *out, const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t l = lc_utf8_dec(s + i, n - i, &cp);
        if (l) {
            lc_buf_append(out, s + i, l);
            i += l;
            continue;
        }
        unsigned c = s[i];
        size_t need = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
        size_t k = 1;
        if (need) {
            unsigned lo = 0x80, hi = 0xBF;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
            if (i + 1 < n && s[i + 1] >= lo && s[i + 1] <= hi) {
                k = 2;
                while (k < need && i + k < n && (s[i + k] & 0xC0) == 0x80) k++;
            }
        }
        lc_buf_append(out, "\xEF\xBF\xBD", 3);
        i += k;
    }
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* The byte of a "<0xXX>" token, or -1. */
static int byte_token(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) || s[5] != '>') return -1;
    int h = hexval(s[3]), l = hexval(s[4]);
    if (s[3] == '+' && l >= 0) return l; // u8::from_str_radix accepts a leading '+'
    return h < 0 || l < 0 ? -1 : h * 16 + l;
}

static int dec_apply(const decoder *d, tlist *in, tlist *out);

static void flush_bytes(lc_buf *bytes, tlist *out) {
    if (!bytes->len) return;
    if (lc_utf8_check(bytes->data, bytes->len) == bytes->len) {
        tl_push(out, bytes->data, bytes->len);
    } else {
        for (size_t i = 0; i < bytes->len; i++) tl_push(out, "\xEF\xBF\xBD", 3);
    }
    lc_buf_clear(bytes);
}

static int dec_apply(const decoder *d, tlist *in, tlist *out) {
    tl_clear(out);
    switch (d->type) {
    case D_REPLACE: {
        lc_buf t = {0};
        for (size_t i = 0; i < in->n; i++) {
            lc_buf_clear(&t);
            if (lc_pattern_replace(d->pat, in->b.data + in->st[i], in->st[i + 1] - in->st[i],
                                   d->content, d->content_len, &t)) {
                lc_buf_free(&t);
                return -1;
            }
            tl_push(out, t.data ? t.data : "", t.len);
        }
        lc_buf_free(&t);
        return 0;
    }
    case D_BYTEFALLBACK: {
        lc_buf bytes = {0};
        for (size_t i = 0; i < in->n; i++) {
            const char *s = in->b.data + in->st[i];
            size_t n = in->st[i + 1] - in->st[i];
            int v = byte_token(s, n);
            if (v >= 0) {
                lc_buf_putc(&bytes, (char)v);
            } else {
                flush_bytes(&bytes, out);
                tl_push(out, s, n);
            }
        }
        flush_bytes(&bytes, out);
        lc_buf_free(&bytes);
        return 0;
    }
    case D_FUSE:
        tl_push(out, in->b.data ? in->b.data + (in->n ? in->st[0] : 0) : "",
                in->n ? in->st[in->n] - in->st[0] : 0);
        return 0;
    case D_STRIP:
        for (size_t i = 0; i < in->n; i++) {
            const unsigned char *s = (const unsigned char *)in->b.data + in->st[i];
            size_t n = in->st[i + 1] - in->st[i], a = 0, b = n;
            uint32_t cp;
            for (size_t k = 0; k < d->start && a < n; k++) {
                size_t l = lc_utf8_dec(s + a, n - a, &cp);
                if (!l || cp != d->cp) break;
                a += l;
            }
            for (size_t k = 0; k < d->stop && b > a; k++) {
                size_t j = b - 1;
                while (j > a && (s[j] & 0xC0) == 0x80) j--;
                size_t l = lc_utf8_dec(s + j, b - j, &cp);
                if (!l || cp != d->cp) break;
                b = j;
            }
            tl_push(out, (const char *)s + a, b - a);
        }
        return 0;
    case D_BYTELEVEL: {
        lc_buf raw = {0}, res = {0};
        for (size_t i = 0; i < in->n; i++) {
            const unsigned char *s = (const unsigned char *)in->b.data + in->st[i];
            size_t n = in->st[i + 1] - in->st[i], mark = raw.len;
            bool all = true;
            for (size_t k = 0; k < n;) {
                uint32_t cp;
                size_t l = lc_utf8_dec(s + k, n - k, &cp);
                int by = l ? lc_byte_level_byte(cp) : -1;
                if (by < 0) {
                    all = false;
                    break;
                }
                lc_buf_putc(&raw, (char)by);
                k += l;
            }
            if (!all) {
                raw.len = mark;
                lc_buf_append(&raw, s, n);
            }
        }
        append_lossy(&res, (const unsigned char *)raw.data, raw.len);
        tl_push(out, res.data ? res.data : "", res.len);
        lc_buf_free(&raw), lc_buf_free(&res);
        return 0;
    }
    case D_METASPACE: {
        lc_buf t = {0};
        for (size_t i = 0; i < in->n; i++) {
            const unsigned char *s = (const unsigned char *)in->b.data + in->st[i];
            size_t n = in->st[i + 1] - in->st[i];
            lc_buf_clear(&t);
            for (size_t k = 0; k < n;) {
                uint32_t cp;
                size_t l = lc_utf8_dec(s + k, n - k, &cp);
                if (!l) l = 1, cp = 0xFFFD;
                if (l && cp == d->cp) {
                    if (!(i == 0 && d->drop_first)) lc_buf_putc(&t, ' ');
                } else {
                    lc_buf_append(&t, s + k, l);
                }
                k += l;
            }
            tl_push(out, t.data ? t.data : "", t.len);
        }
        lc_buf_free(&t);
        return 0;
    }
    case D_SEQ: {
        tlist a = {0}, b = {0};
        for (size_t i = 0; i < in->n; i++) tl_push(&a, in->b.data + in->st[i], in->st[i + 1] - in->st[i]);
        for (size_t k = 0; k < d->n_kids; k++) {
            if (dec_apply(d->kids[k], &a, &b)) {
                tl_free(&a), tl_free(&b);
                return -1;
            }
            tlist t = a;
            a = b, b = t;
        }
        for (size_t i = 0; i < a.n; i++) tl_push(out, a.b.data + a.st[i], a.st[i + 1] - a.st[i]);
        tl_free(&a), tl_free(&b);
        return 0;
    }
    }
    return lc_fail("internal: unknown decoder");
}

/* Whether decoding can restart at a token boundary: no Strip that cuts the end. */
static bool dec_is_local(const decoder *d) {
    if (d->type == D_STRIP && d->stop > 0) return false;
    for (size_t i = 0; i < d->n_kids; i++)
        if (!dec_is_local(d->kids[i])) return false;
    return true;
}

static bool dec_has(const decoder *d, int type) {
    if (d->type == type) return true;
    for (size_t i = 0; i < d->n_kids; i++)
        if (dec_has(d->kids[i], type)) return true;
    return false;
}

static int one_char(const char *s, uint32_t *cp) {
    size_t n = strlen(s);
    size_t l = n ? lc_utf8_dec((const unsigned char *)s, n, cp) : 0;
    return l && l == n ? 0 : -1;
}

static int dec_build(const cJSON *node, const char *what, const char *place, decoder **out) {
    *out = NULL;
    if (!cJSON_IsObject(node))
        return lc_fail("%s: %s must be an object, found %s", what, place, lc_json_type_name(node));
    const char *type = NULL;
    char wp[600], sub[600];
    snprintf(wp, sizeof wp, "%s: %s", what, place);
    if (lc_json_str(node, "type", &type, wp) <= 0)
        return type ? -1 : lc_fail("%s: %s.type is missing", what, place);
    decoder *d = xcalloc(1, sizeof *d);
    if (!strcmp(type, "Replace")) {
        const char *c = NULL;
        d->type = D_REPLACE;
        if (lc_json_str(node, "content", &c, wp) <= 0) {
            if (!c) lc_fail("%s: %s.content is missing", what, place);
            goto fail;
        }
        d->content = xstrdup(c), d->content_len = strlen(c);
        snprintf(sub, sizeof sub, "%s.pattern", place);
        if (lc_pattern_build(cJSON_GetObjectItemCaseSensitive(node, "pattern"), what, sub, &d->pat))
            goto fail;
    } else if (!strcmp(type, "ByteFallback")) {
        d->type = D_BYTEFALLBACK;
    } else if (!strcmp(type, "Fuse")) {
        d->type = D_FUSE;
    } else if (!strcmp(type, "Strip")) {
        const char *c = " ";
        int64_t a = 0, b = 0;
        d->type = D_STRIP;
        if (lc_json_str(node, "content", &c, wp) < 0 || lc_json_int(node, "start", &a, wp) < 0 ||
            lc_json_int(node, "stop", &b, wp) < 0)
            goto fail;
        if (one_char(c, &d->cp) || a < 0 || b < 0) {
            lc_fail("%s: %s: Strip needs one character as content and non-negative start/stop",
                    what, place);
            goto fail;
        }
        d->start = (size_t)a, d->stop = (size_t)b;
    } else if (!strcmp(type, "ByteLevel")) {
        d->type = D_BYTELEVEL;
    } else if (!strcmp(type, "Metaspace")) {
        const char *rep = "\xE2\x96\x81", *scheme = NULL;
        bool aps = true;
        d->type = D_METASPACE;
        if (lc_json_str(node, "replacement", &rep, wp) < 0 ||
            lc_json_str(node, "prepend_scheme", &scheme, wp) < 0 ||
            lc_json_bool(node, "add_prefix_space", &aps, wp) < 0)
            goto fail;
        if (one_char(rep, &d->cp)) {
            lc_fail("%s: %s.replacement must be exactly one character", what, place);
            goto fail;
        }
        d->drop_first = scheme ? strcmp(scheme, "never") != 0 : aps;
    } else if (!strcmp(type, "Sequence")) {
        d->type = D_SEQ;
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(node, "decoders");
        if (!cJSON_IsArray(arr)) {
            lc_fail("%s: %s.decoders must be an array, found %s", what, place,
                    lc_json_type_name(arr));
            goto fail;
        }
        int k = cJSON_GetArraySize(arr);
        d->kids = xcalloc((size_t)k + 1, sizeof *d->kids);
        for (int i = 0; i < k; i++) {
            snprintf(sub, sizeof sub, "%s.decoders[%d]", place, i);
            if (dec_build(cJSON_GetArrayItem(arr, i), what, sub, &d->kids[i])) goto fail;
            d->n_kids++;
        }
    } else {
        lc_fail("%s: %s: decoder type \"%s\" is not supported by lorac (supported: Replace, "
                "ByteFallback, Fuse, Strip, ByteLevel, Metaspace, Sequence)",
                what, place, type);
        goto fail;
    }
    *out = d;
    return 0;
fail:
    dec_free(d);
    return -1;
}

/* ------------------------------------------------------------- the type */

typedef struct {
    char *content;
    size_t len;
    int32_t id;
    bool special, single_word, lstrip, rstrip, normalized;
} added_token;

struct lc_tokenizer {
    char *what; // the file, for errors
    lc_spm *spm;
    lc_bpe *bpe;
    lc_normalizer *norm;
    lc_pretok *pre;
    decoder *dec;
    added_token *added;
    size_t n_added;
    int32_t *added_of_id; // (vocab_size) index into added[] or -1
    trie raw, normd;      // added tokens matched before / after normalization
    lc_ids prefix, suffix; // what LC_TOK_ADD_SPECIAL adds around the ids
    int32_t vocab_size, bos, eos, unk, pad;
    char *chat_template;
    char kind[200];
    bool local_decode; // the decoder chain allows lc_detok's checkpoints (see detok_emit)
    bool byte_runs;    // <0xXX> pieces decode by runs, all or nothing (ByteFallback, .model)
};

void lc_tokenizer_free(lc_tokenizer *t) {
    if (!t) return;
    free(t->what);
    lc_spm_free(t->spm);
    lc_bpe_free(t->bpe);
    lc_normalizer_free(t->norm);
    lc_pretok_free(t->pre);
    dec_free(t->dec);
    for (size_t i = 0; i < t->n_added; i++) free(t->added[i].content);
    free(t->added);
    free(t->added_of_id);
    free(t->raw.n), free(t->normd.n);
    lc_ids_free(&t->prefix), lc_ids_free(&t->suffix);
    free(t->chat_template);
    free(t);
}

int32_t lc_tokenizer_vocab_size(const lc_tokenizer *t) { return t->vocab_size; }

const char *lc_tokenizer_piece(const lc_tokenizer *t, int32_t id) {
    if (id < 0 || id >= t->vocab_size) return NULL;
    if (t->added_of_id[id] >= 0) return t->added[t->added_of_id[id]].content;
    if (t->spm) return lc_spm_piece(t->spm, id);
    return lc_bpe_piece(t->bpe, id);
}

int32_t lc_tokenizer_token_id(const lc_tokenizer *t, const char *token) {
    for (size_t i = 0; i < t->n_added; i++)
        if (!strcmp(t->added[i].content, token)) return t->added[i].id;
    if (t->spm) return lc_spm_piece_id(t->spm, token);
    return lc_bpe_id(t->bpe, token, strlen(token));
}

bool lc_tokenizer_is_special(const lc_tokenizer *t, int32_t id) {
    if (id < 0 || id >= t->vocab_size || t->added_of_id[id] < 0) return false;
    return t->added[t->added_of_id[id]].special;
}

int32_t lc_tokenizer_bos(const lc_tokenizer *t) { return t->bos; }
int32_t lc_tokenizer_eos(const lc_tokenizer *t) { return t->eos; }
int32_t lc_tokenizer_unk(const lc_tokenizer *t) { return t->unk; }
int32_t lc_tokenizer_pad(const lc_tokenizer *t) { return t->pad; }
bool lc_tokenizer_adds_bos(const lc_tokenizer *t) {
    return t->bos >= 0 && t->prefix.len && t->prefix.data[0] == t->bos;
}
bool lc_tokenizer_adds_eos(const lc_tokenizer *t) {
    return t->eos >= 0 && t->suffix.len && t->suffix.data[t->suffix.len - 1] == t->eos;
}
const char *lc_tokenizer_kind(const lc_tokenizer *t) { return t->kind; }
const char *lc_tokenizer_chat_template(const lc_tokenizer *t) { return t->chat_template; }

/* Fills added_of_id and the tries once added[] and vocab_size are known. */
static int index_added(lc_tokenizer *t) {
    t->added_of_id = xmalloc(((size_t)t->vocab_size + 1) * sizeof *t->added_of_id);
    for (int32_t i = 0; i <= t->vocab_size; i++) t->added_of_id[i] = -1;
    for (size_t i = 0; i < t->n_added; i++) {
        added_token *a = &t->added[i];
        t->added_of_id[a->id] = (int32_t)i;
        if (!a->normalized) {
            trie_add(&t->raw, a->content, a->len, (int32_t)i);
        } else {
            lc_buf nb = {0};
            if (lc_normalize(t->norm, a->content, a->len, &nb)) {
                lc_buf_free(&nb);
                return lc_fail_prefix("%s: normalizing added token \"%s\"", t->what, a->content);
            }
            trie_add(&t->normd, nb.data ? nb.data : "", nb.len, (int32_t)i);
            lc_buf_free(&nb);
        }
    }
    return 0;
}

/* --------------------------------------------------- tokenizer.json loading */

static int load_added(lc_tokenizer *t, const cJSON *arr) {
    const char *what = t->what;
    if (!arr || cJSON_IsNull(arr)) return 0;
    if (!cJSON_IsArray(arr))
        return lc_fail("%s: added_tokens must be an array, found %s", what,
                       lc_json_type_name(arr));
    size_t n = (size_t)cJSON_GetArraySize(arr);
    t->added = xcalloc(n + 1, sizeof *t->added);
    int i = 0;
    for (const cJSON *e = arr->child; e; e = e->next, i++) {
        char wp[600];
        snprintf(wp, sizeof wp, "%s: added_tokens[%d]", what, i);
        if (!cJSON_IsObject(e))
            return lc_fail("%s must be an object, found %s", wp, lc_json_type_name(e));
        int64_t id = -1;
        const char *content = NULL;
        added_token a = {0};
        a.normalized = true;
        int rc_id = lc_json_int(e, "id", &id, wp), rc_c = lc_json_str(e, "content", &content, wp);
        if (rc_id < 0 || rc_c < 0) return -1;
        if (rc_id == 0) return lc_fail("%s: \"id\" is missing", wp);
        if (rc_c == 0) return lc_fail("%s: \"content\" is missing", wp);
        if (lc_json_bool(e, "special", &a.special, wp) < 0 ||
            lc_json_bool(e, "single_word", &a.single_word, wp) < 0 ||
            lc_json_bool(e, "lstrip", &a.lstrip, wp) < 0 ||
            lc_json_bool(e, "rstrip", &a.rstrip, wp) < 0 ||
            lc_json_bool(e, "normalized", &a.normalized, wp) < 0)
            return -1;
        if (id < 0 || id >= LC_MAX_TOKEN_ID)
            return lc_fail("%s: \"id\" %lld is out of range (0..%d)", wp, (long long)id,
                           LC_MAX_TOKEN_ID - 1);
        if (!*content) continue; // the library ignores empty added tokens
        int32_t vid = lc_bpe_id(t->bpe, content, strlen(content));
        if (vid >= 0 && vid != id)
            return lc_fail("%s: \"%s\" has id %lld but model.vocab gives it id %d", wp, content,
                           (long long)id, vid);
        const char *other = lc_bpe_piece(t->bpe, (int32_t)id);
        if (vid < 0 && other)
            return lc_fail("%s: id %lld of \"%s\" is model.vocab's \"%s\"", wp, (long long)id,
                           content, other);
        for (size_t k = 0; k < t->n_added; k++) {
            if (t->added[k].id == id)
                return lc_fail("%s: id %lld is already added token \"%s\"", wp, (long long)id,
                               t->added[k].content);
            if (!strcmp(t->added[k].content, content))
                return lc_fail("%s: \"%s\" is already an added token", wp, content);
        }
        a.content = xstrdup(content);
        a.len = strlen(content);
        a.id = (int32_t)id;
        t->added[t->n_added++] = a;
        if (a.id >= t->vocab_size) t->vocab_size = a.id + 1;
    }
    return 0;
}

/* Adds the single-sequence special ids of a post-processor around prefix/suffix. */
static int load_post(lc_tokenizer *t, const cJSON *node, const char *place) {
    const char *what = t->what;
    if (!node || cJSON_IsNull(node)) return 0;
    char wp[600];
    snprintf(wp, sizeof wp, "%s: %s", what, place);
    const char *type = NULL;
    if (!cJSON_IsObject(node))
        return lc_fail("%s must be an object, found %s", wp, lc_json_type_name(node));
    if (lc_json_str(node, "type", &type, wp) <= 0)
        return type ? -1 : lc_fail("%s.type is missing", wp);
    lc_ids pre = {0}, suf = {0};
    if (!strcmp(type, "ByteLevel")) {
        return 0; // only moves offsets
    } else if (!strcmp(type, "Sequence")) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(node, "processors");
        if (!cJSON_IsArray(arr))
            return lc_fail("%s.processors must be an array, found %s", wp, lc_json_type_name(arr));
        int i = 0;
        for (const cJSON *e = arr->child; e; e = e->next, i++) {
            char sub[600];
            snprintf(sub, sizeof sub, "%s.processors[%d]", place, i);
            if (load_post(t, e, sub)) return -1;
        }
        return 0;
    } else if (!strcmp(type, "BertProcessing") || !strcmp(type, "RobertaProcessing")) {
        const cJSON *sep = cJSON_GetObjectItemCaseSensitive(node, "sep");
        const cJSON *cls = cJSON_GetObjectItemCaseSensitive(node, "cls");
        const cJSON *sid = cJSON_GetArrayItem(sep, 1), *cid = cJSON_GetArrayItem(cls, 1);
        if (!cJSON_IsArray(sep) || !cJSON_IsArray(cls) || !cJSON_IsNumber(sid) ||
            !cJSON_IsNumber(cid))
            return lc_fail("%s: sep and cls must be [\"token\", id]", wp);
        lc_ids_push(&pre, (int32_t)cid->valuedouble);
        lc_ids_push(&suf, (int32_t)sid->valuedouble);
    } else if (!strcmp(type, "TemplateProcessing")) {
        const cJSON *single = cJSON_GetObjectItemCaseSensitive(node, "single");
        const cJSON *specials = cJSON_GetObjectItemCaseSensitive(node, "special_tokens");
        if (!cJSON_IsArray(single))
            return lc_fail("%s.single must be an array, found %s", wp, lc_json_type_name(single));
        if (specials && !cJSON_IsNull(specials) && !cJSON_IsObject(specials))
            return lc_fail("%s.special_tokens must be an object, found %s", wp,
                           lc_json_type_name(specials));
        bool seen_a = false;
        int i = 0;
        for (const cJSON *e = single->child; e; e = e->next, i++) {
            const cJSON *sp = cJSON_GetObjectItemCaseSensitive(e, "SpecialToken");
            const cJSON *sq = cJSON_GetObjectItemCaseSensitive(e, "Sequence");
            if (cJSON_IsObject(sq)) {
                const cJSON *id = cJSON_GetObjectItemCaseSensitive(sq, "id");
                if (!cJSON_IsString(id) || strcmp(id->valuestring, "A") || seen_a) {
                    lc_ids_free(&pre), lc_ids_free(&suf);
                    return lc_fail("%s.single[%d]: the single template must use sequence \"A\" "
                                   "once",
                                   wp, i);
                }
                seen_a = true;
                continue;
            }
            const cJSON *name = cJSON_IsObject(sp) ? cJSON_GetObjectItemCaseSensitive(sp, "id") : NULL;
            const cJSON *st = cJSON_IsString(name) && specials
                                  ? cJSON_GetObjectItemCaseSensitive(specials, name->valuestring)
                                  : NULL;
            const cJSON *ids = st ? cJSON_GetObjectItemCaseSensitive(st, "ids") : NULL;
            if (!cJSON_IsArray(ids)) {
                lc_ids_free(&pre), lc_ids_free(&suf);
                return lc_fail("%s.single[%d] must be {\"SpecialToken\": {\"id\": name}} naming "
                               "an entry of special_tokens with \"ids\", or {\"Sequence\": ...}",
                               wp, i);
            }
            for (const cJSON *x = ids->child; x; x = x->next) {
                if (!cJSON_IsNumber(x) || x->valuedouble < 0 || x->valuedouble >= t->vocab_size ||
                    x->valuedouble != (double)(int32_t)x->valuedouble) {
                    lc_ids_free(&pre), lc_ids_free(&suf);
                    return lc_fail("%s.special_tokens[\"%s\"].ids: %s is not an id of this "
                                   "vocabulary (0..%d)",
                                   wp, name->valuestring,
                                   cJSON_IsNumber(x) ? "a number" : lc_json_type_name(x),
                                   t->vocab_size - 1);
                }
                lc_ids_push(seen_a ? &suf : &pre, (int32_t)x->valuedouble);
            }
        }
        if (!seen_a) {
            lc_ids_free(&pre), lc_ids_free(&suf);
            return lc_fail("%s.single has no {\"Sequence\": {\"id\": \"A\"}}", wp);
        }
    } else {
        return lc_fail("%s: post-processor type \"%s\" is not supported by lorac (supported: "
                       "TemplateProcessing, ByteLevel, BertProcessing, RobertaProcessing, "
                       "Sequence)",
                       wp, type);
    }
    // a later processor wraps what the earlier ones produced
    lc_ids np = {0};
    lc_ids_append(&np, pre.data, pre.len);
    lc_ids_append(&np, t->prefix.data, t->prefix.len);
    lc_ids_free(&t->prefix);
    t->prefix = np;
    lc_ids_append(&t->suffix, suf.data, suf.len);
    lc_ids_free(&pre), lc_ids_free(&suf);
    for (size_t i = 0; i < t->prefix.len + t->suffix.len; i++) {
        int32_t id = i < t->prefix.len ? t->prefix.data[i] : t->suffix.data[i - t->prefix.len];
        if (id < 0 || id >= t->vocab_size)
            return lc_fail("%s: special id %d is outside the vocabulary (0..%d)", wp, id,
                           t->vocab_size - 1);
    }
    return 0;
}

static int load_json(lc_tokenizer *t, const char *text, size_t len) {
    const char *what = t->what;
    cJSON *root;
    if (lc_json_parse(text, len, what, &root)) return -1;
    int rc = -1;
    if (!cJSON_IsObject(root)) {
        lc_fail("%s: the top level must be an object, found %s", what, lc_json_type_name(root));
        goto out;
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!model) {
        lc_fail("%s: \"model\" is missing (is this a tokenizer.json?)", what);
        goto out;
    }
    if (lc_bpe_build(model, what, &t->bpe)) goto out;
    t->vocab_size = lc_bpe_id_end(t->bpe);
    if (lc_normalizer_build(cJSON_GetObjectItemCaseSensitive(root, "normalizer"), what, &t->norm) ||
        lc_pretok_build(cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), what, &t->pre) ||
        load_added(t, cJSON_GetObjectItemCaseSensitive(root, "added_tokens")))
        goto out;
    const cJSON *dn = cJSON_GetObjectItemCaseSensitive(root, "decoder");
    if (dn && !cJSON_IsNull(dn) && dec_build(dn, what, "decoder", &t->dec)) goto out;
    if (load_post(t, cJSON_GetObjectItemCaseSensitive(root, "post_processor"), "post_processor"))
        goto out;
    const cJSON *trunc = cJSON_GetObjectItemCaseSensitive(root, "truncation");
    const cJSON *pad = cJSON_GetObjectItemCaseSensitive(root, "padding");
    if ((trunc && !cJSON_IsNull(trunc)) || (pad && !cJSON_IsNull(pad))) {
        // they change batch encodings only; lorac truncates and pads itself
    }
    if (index_added(t)) goto out;
    t->local_decode = t->dec && dec_is_local(t->dec);
    t->byte_runs = t->dec && dec_has(t->dec, D_BYTEFALLBACK);
    bool meta = false;
    const cJSON *pt = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    const cJSON *ptt = pt ? cJSON_GetObjectItemCaseSensitive(pt, "type") : NULL;
    const cJSON *nt = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    meta = (cJSON_IsString(ptt) && !strcmp(ptt->valuestring, "Metaspace")) ||
           (nt && !cJSON_IsNull(nt));
    if (lc_pretok_is_byte_level(t->pre))
        snprintf(t->kind, sizeof t->kind, "byte-level BPE from tokenizer.json");
    else if (meta || lc_bpe_byte_fallback(t->bpe))
        snprintf(t->kind, sizeof t->kind, "BPE, SentencePiece-style (Metaspace%s) from "
                 "tokenizer.json", lc_bpe_byte_fallback(t->bpe) ? ", byte fallback" : "");
    else
        snprintf(t->kind, sizeof t->kind, "BPE from tokenizer.json");
    rc = 0;
out:
    cJSON_Delete(root);
    return rc;
}

/* ------------------------------------------------------ .model loading */

static int load_spm(lc_tokenizer *t, const void *data, size_t len) {
    if (lc_spm_load_mem(data, len, t->what, &t->spm)) return -1;
    t->vocab_size = lc_spm_size(t->spm);
    t->added = xcalloc((size_t)t->vocab_size + 1, sizeof *t->added);
    for (int32_t id = 0; id < t->vocab_size; id++) {
        const char *p = lc_spm_piece(t->spm, id);
        if (lc_spm_type(t->spm, id) != LC_SPM_CONTROL || !p || !*p) continue;
        added_token a = {0};
        a.content = xstrdup(p), a.len = strlen(p), a.id = id, a.special = true;
        t->added[t->n_added++] = a;
    }
    t->bos = lc_spm_bos(t->spm), t->eos = lc_spm_eos(t->spm);
    t->unk = lc_spm_unk(t->spm), t->pad = lc_spm_pad(t->spm);
    if (t->bos >= 0) lc_ids_push(&t->prefix, t->bos); // sentencepiece Llama: add_bos by default
    snprintf(t->kind, sizeof t->kind, "SentencePiece from tokenizer.model");
    t->byte_runs = true;
    return index_added(t);
}

/* ------------------------------------------------- tokenizer_config.json */

/* A special token of the config: a string or {"content": string}. */
static int config_token(const cJSON *cfg, const char *key, const char *what, const char **out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    *out = NULL;
    if (!v || cJSON_IsNull(v)) return 0;
    if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content");
    if (!cJSON_IsString(v))
        return lc_fail("%s: \"%s\" must be a string or {\"content\": string}", what, key);
    *out = v->valuestring;
    return 1;
}

static int load_config(lc_tokenizer *t, const char *text, size_t len, const char *what) {
    cJSON *cfg;
    if (lc_json_parse(text, len, what, &cfg)) return -1;
    int rc = -1;
    if (!cJSON_IsObject(cfg)) {
        lc_fail("%s: the top level must be an object", what);
        goto out;
    }
    const char *names[4] = {"bos_token", "eos_token", "unk_token", "pad_token"};
    int32_t *dst[4] = {&t->bos, &t->eos, &t->unk, &t->pad};
    for (int i = 0; i < 4; i++) {
        const char *s;
        int r = config_token(cfg, names[i], what, &s);
        if (r < 0) goto out;
        if (r == 0) continue;
        int32_t id = lc_tokenizer_token_id(t, s);
        if (id < 0) {
            lc_fail("%s: %s \"%s\" is not a token of %s", what, names[i], s, t->what);
            goto out;
        }
        *dst[i] = id;
    }
    bool add_bos = true, add_eos = false; // LlamaTokenizer's defaults
    int rb = lc_json_bool(cfg, "add_bos_token", &add_bos, what);
    int re = lc_json_bool(cfg, "add_eos_token", &add_eos, what);
    if (rb < 0 || re < 0) goto out;
    const char *cls = NULL;
    if (lc_json_str(cfg, "tokenizer_class", &cls, what) < 0) goto out;
    static const char *llama_like[] = {"LlamaTokenizer",     "LlamaTokenizerFast",
                                       "CodeLlamaTokenizer", "CodeLlamaTokenizerFast",
                                       "GemmaTokenizer",     "GemmaTokenizerFast"};
    bool llama = t->spm != NULL;
    for (size_t i = 0; cls && i < sizeof llama_like / sizeof *llama_like; i++)
        if (!strcmp(cls, llama_like[i])) llama = true;
    if (llama) { // transformers rebuilds the post-processor from add_bos/add_eos
        lc_ids_clear(&t->prefix), lc_ids_clear(&t->suffix);
        if (add_bos && t->bos >= 0) lc_ids_push(&t->prefix, t->bos);
        if (add_eos && t->eos >= 0) lc_ids_push(&t->suffix, t->eos);
    }
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template");
    if (cJSON_IsString(ct)) {
        t->chat_template = xstrdup(ct->valuestring);
    } else if (cJSON_IsArray(ct)) {
        const char *pick = NULL;
        for (const cJSON *e = ct->child; e; e = e->next) {
            const cJSON *nm = cJSON_GetObjectItemCaseSensitive(e, "name");
            const cJSON *tp = cJSON_GetObjectItemCaseSensitive(e, "template");
            if (!cJSON_IsString(tp)) continue;
            if (!pick || (cJSON_IsString(nm) && !strcmp(nm->valuestring, "default")))
                pick = tp->valuestring;
        }
        if (pick) t->chat_template = xstrdup(pick);
    } else if (ct && !cJSON_IsNull(ct)) {
        lc_fail("%s: \"chat_template\" must be a string or a list of {name, template}", what);
        goto out;
    }
    rc = 0;
out:
    cJSON_Delete(cfg);
    return rc;
}

/* Guesses bos/eos of a tokenizer.json without a config from its post-processor. */
static void default_specials(lc_tokenizer *t) {
    if (t->bos < 0 && t->prefix.len) t->bos = t->prefix.data[0];
    if (t->eos < 0 && t->suffix.len) t->eos = t->suffix.data[t->suffix.len - 1];
}

static lc_tokenizer *new_tok(const char *what) {
    lc_tokenizer *t = xcalloc(1, sizeof *t);
    t->what = xstrdup(what);
    t->bos = t->eos = t->unk = t->pad = -1;
    return t;
}

int lc_tokenizer_load_mem(const char *data, size_t len, const char *config, size_t config_len,
                          const char *what, const char *config_what, lc_tokenizer **out) {
    *out = NULL;
    lc_tokenizer *t = new_tok(what);
    size_t i = 0;
    while (i < len && (data[i] == ' ' || data[i] == '\n' || data[i] == '\r' || data[i] == '\t')) i++;
    int rc = i < len && data[i] == '{' ? load_json(t, data, len) : load_spm(t, data, len);
    if (rc == 0 && config)
        rc = load_config(t, config, config_len, config_what ? config_what : "tokenizer_config.json");
    if (rc == 0) default_specials(t);
    if (rc) {
        lc_tokenizer_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

int lc_tokenizer_load_file(const char *path, const char *config_path, lc_tokenizer **out) {
    *out = NULL;
    char *data = NULL, *cfg = NULL;
    size_t len = 0, cfg_len = 0;
    if (lc_read_file(path, MAX_TOKENIZER_BYTES, &data, &len)) return -1;
    if (config_path && lc_read_file(config_path, 64u << 20, &cfg, &cfg_len)) {
        free(data);
        return -1;
    }
    int rc = lc_tokenizer_load_mem(data, len, cfg, cfg_len, path, config_path, out);
    free(data), free(cfg);
    return rc;
}

int lc_tokenizer_load_dir(const char *dir, lc_tokenizer **out) {
    char *json = lc_path_join(dir, "tokenizer.json");
    char *model = lc_path_join(dir, "tokenizer.model");
    char *cfg = lc_path_join(dir, "tokenizer_config.json");
    int rc;
    const char *file = lc_is_file(json) ? json : lc_is_file(model) ? model : NULL;
    if (!file) {
        *out = NULL;
        rc = lc_fail("%s: no tokenizer.json nor tokenizer.model in this folder", dir);
    } else {
        rc = lc_tokenizer_load_file(file, lc_is_file(cfg) ? cfg : NULL, out);
    }
    free(json), free(model), free(cfg);
    return rc;
}

/* ------------------------------------------------------------ encoding */

/* \w of the regex crates: alphabetic, marks, decimal digits, connector punctuation. */
static bool is_word_char(uint32_t cp) {
    if (cp < 0x80) return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || cp == '_';
    if (cp == 0x200C || cp == 0x200D) return true;
    switch (utf8proc_category((int32_t)cp)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME: case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_PC:
        return true;
    default:
        return false;
    }
}

/* The code point that ends s[0..n) (n > 0). */
static uint32_t last_cp(const char *s, size_t n, size_t *start) {
    size_t k = n - 1;
    while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
    uint32_t cp = 0xFFFD;
    lc_utf8_dec((const unsigned char *)s + k, n - k, &cp);
    *start = k;
    return cp;
}

typedef struct {
    size_t a, b;
    int32_t tok; // index into added[] or -1 for text
} seg;

typedef struct {
    seg *s;
    size_t n, cap;
} segs;

static void segs_push(segs *v, size_t a, size_t b, int32_t tok) {
    if (v->n == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 16;
        v->s = xrealloc(v->s, v->cap * sizeof *v->s);
    }
    v->s[v->n++] = (seg){a, b, tok};
}

/* added_vocabulary.rs find_matches: leftmost-longest matches of the trie's tokens, with
 * single_word / lstrip / rstrip; the result covers s[0..n). */
static void find_added(const lc_tokenizer *t, const trie *tr, const char *s, size_t n,
                       bool skip_special, segs *out) {
    out->n = 0;
    size_t start_off = 0, i = 0;
    if (tr->len) {
        while (i < n) {
            if (!tr->first[(unsigned char)s[i]]) {
                i++;
                continue;
            }
            int32_t cur = 0, best = -1;
            size_t best_end = 0;
            for (size_t j = i; j < n; j++) {
                int32_t k = tr->n[cur].child;
                while (k >= 0 && tr->n[k].byte != (unsigned char)s[j]) k = tr->n[k].sibling;
                if (k < 0) break;
                cur = k;
                int32_t tk = tr->n[k].token;
                if (tk >= 0 && !(skip_special && t->added[tk].special)) best = tk, best_end = j + 1;
            }
            if (best < 0) {
                i++;
                continue;
            }
            const added_token *a = &t->added[best];
            size_t start = i, stop = best_end;
            i = best_end; // the search resumes after this match even when it is discarded
            if (a->single_word) {
                size_t k;
                bool ws = start == 0 || !is_word_char(last_cp(s, start, &k));
                uint32_t cp = 0;
                bool we = stop == n || (lc_utf8_dec((const unsigned char *)s + stop, n - stop, &cp),
                                        !is_word_char(cp));
                if (!ws || !we) continue;
            }
            if (a->lstrip) {
                size_t ns = start, k;
                while (ns > 0 && lc_is_space(last_cp(s, ns, &k))) ns = k;
                start = ns > start_off ? ns : start_off;
            }
            if (a->rstrip) {
                uint32_t cp;
                size_t l;
                while (stop < n && (l = lc_utf8_dec((const unsigned char *)s + stop, n - stop, &cp)) &&
                       lc_is_space(cp))
                    stop += l;
            }
            if (start < start_off) start = start_off;
            if (start_off < start) segs_push(out, start_off, start, -1);
            segs_push(out, start, stop, best);
            start_off = stop;
            if (i < stop) i = stop;
        }
    }
    if (start_off != n || n == 0) segs_push(out, start_off, n, -1);
}

typedef struct {
    lc_buf norm;
    lc_pretok_out words;
    lc_bpe_scratch bpe;
    segs outer, inner;
} enc_scratch;

static int encode_text(const lc_tokenizer *t, const char *s, size_t n, int flags,
                       enc_scratch *sc, lc_ids *out) {
    bool skip = flags & LC_TOK_NO_PARSE_SPECIAL;
    find_added(t, &t->raw, s, n, skip, &sc->outer);
    for (size_t i = 0; i < sc->outer.n; i++) {
        seg g = sc->outer.s[i];
        if (g.tok >= 0) {
            lc_ids_push(out, t->added[g.tok].id);
            continue;
        }
        const char *ns = s + g.a;
        size_t nn = g.b - g.a;
        if (t->norm) {
            lc_buf_clear(&sc->norm);
            if (lc_normalize(t->norm, ns, nn, &sc->norm)) return -1;
            ns = sc->norm.data ? sc->norm.data : "", nn = sc->norm.len;
        }
        find_added(t, &t->normd, ns, nn, skip, &sc->inner);
        for (size_t j = 0; j < sc->inner.n; j++) {
            seg h = sc->inner.s[j];
            if (h.tok >= 0) {
                lc_ids_push(out, t->added[h.tok].id);
                continue;
            }
            bool first = g.a == 0 && h.a == 0 && !(flags & LC_TOK_CONTINUATION);
            lc_pretok_out_clear(&sc->words);
            if (lc_pretok_split(t->pre, ns + h.a, h.b - h.a, first, &sc->words)) return -1;
            for (size_t w = 0; w < sc->words.n_words; w++) {
                size_t a = sc->words.starts[w], b = sc->words.starts[w + 1];
                if (lc_bpe_encode_word(t->bpe, sc->words.bytes.data + a, b - a, &sc->bpe, out))
                    return -1;
            }
        }
    }
    return 0;
}

static int encode_spm(const lc_tokenizer *t, const char *s, size_t n, int flags,
                      enc_scratch *sc, lc_ids *out) {
    if (flags & LC_TOK_NO_PARSE_SPECIAL) return lc_spm_encode(t->spm, s, n, out);
    find_added(t, &t->raw, s, n, false, &sc->outer);
    for (size_t i = 0; i < sc->outer.n; i++) {
        seg g = sc->outer.s[i];
        if (g.tok >= 0) lc_ids_push(out, t->added[g.tok].id);
        else if (g.b > g.a && lc_spm_encode(t->spm, s + g.a, g.b - g.a, out)) return -1;
    }
    return 0;
}

int lc_tokenizer_encode(const lc_tokenizer *t, const char *text, size_t len, int flags,
                        lc_ids *out) {
    size_t bad = lc_utf8_check(text, len);
    if (bad != len)
        return lc_fail("text to encode is not valid UTF-8 (byte %zu of %zu is 0x%02X); fix the "
                       "input's encoding",
                       bad, len, (unsigned char)text[bad]);
    size_t mark = out->len;
    if (flags & LC_TOK_ADD_SPECIAL) lc_ids_append(out, t->prefix.data, t->prefix.len);
    enc_scratch sc = {0};
    int rc = t->spm ? encode_spm(t, text, len, flags, &sc, out)
                    : encode_text(t, text, len, flags, &sc, out);
    lc_buf_free(&sc.norm);
    lc_pretok_out_free(&sc.words);
    lc_bpe_scratch_free(&sc.bpe);
    free(sc.outer.s), free(sc.inner.s);
    if (rc) {
        out->len = mark;
        return lc_fail_prefix("%s", t->what);
    }
    if (flags & LC_TOK_ADD_SPECIAL) lc_ids_append(out, t->suffix.data, t->suffix.len);
    return 0;
}

/* ------------------------------------------------------------ decoding */

static int check_ids(const lc_tokenizer *t, const int32_t *ids, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= t->vocab_size)
            return lc_fail("%s: cannot decode id %d (position %zu): the vocabulary has ids "
                           "0..%d",
                           t->what, ids[i], i, t->vocab_size - 1);
    return 0;
}

static int decode_spm(const lc_tokenizer *t, const int32_t *ids, size_t n, bool skip,
                      lc_buf *out) {
    if (skip) return lc_spm_decode(t->spm, ids, n, out);
    size_t run = 0;
    for (size_t i = 0; i <= n; i++) {
        bool ctl = i < n && t->added_of_id[ids[i]] >= 0;
        if (i == n || ctl) {
            if (i > run && lc_spm_decode(t->spm, ids + run, i - run, out)) return -1;
            if (ctl) lc_buf_puts(out, t->added[t->added_of_id[ids[i]]].content);
            run = i + 1;
        }
    }
    return 0;
}

int lc_tokenizer_decode(const lc_tokenizer *t, const int32_t *ids, size_t n, bool skip_special,
                        lc_buf *out) {
    if (check_ids(t, ids, n)) return -1;
    if (t->spm) return decode_spm(t, ids, n, skip_special, out);
    tlist a = {0}, b = {0};
    for (size_t i = 0; i < n; i++) {
        int32_t k = t->added_of_id[ids[i]];
        const char *p = k >= 0 ? t->added[k].content : lc_bpe_piece(t->bpe, ids[i]);
        if (!p || (skip_special && k >= 0 && t->added[k].special)) continue;
        tl_push(&a, p, strlen(p));
    }
    int rc = 0;
    if (t->dec) {
        rc = dec_apply(t->dec, &a, &b);
        if (rc == 0 && b.n) lc_buf_append(out, b.b.data + b.st[0], b.st[b.n] - b.st[0]);
    } else {
        for (size_t i = 0; i < a.n; i++) {
            if (i) lc_buf_putc(out, ' ');
            lc_buf_append(out, a.b.data + a.st[i], a.st[i + 1] - a.st[i]);
        }
    }
    tl_free(&a), tl_free(&b);
    lc_buf_append(out, "", 0); // a C string even when nothing was written
    return rc;
}

/* ------------------------------------------------------------ streaming */

void lc_detok_init(lc_detok *d, const lc_tokenizer *t, bool skip_special) {
    memset(d, 0, sizeof *d);
    d->t = t;
    d->skip_special = skip_special;
}

static bool ends_with_fffd(const lc_buf *b) {
    return b->len >= 3 && !memcmp(b->data + b->len - 3, "\xEF\xBF\xBD", 3);
}

/* Decodes what follows ids[0..base): with a checkpoint, the context token ids[base-1]
 * and the tail are decoded together and the context's own text is cut off, which equals
 * the full decode's tail for the decoders allowed by local_decode (per-token Replace /
 * Metaspace, ByteFallback runs that the non-byte context ends, complete ByteLevel bytes,
 * a Strip of the start that the context absorbs). Returns 1 when the check fails. */
static int detok_tail(const lc_detok *d, lc_buf *tail) {
    const lc_tokenizer *t = d->t;
    if (d->base == 0)
        return lc_tokenizer_decode(t, d->ids.data, d->ids.len, d->skip_special, tail);
    lc_buf ctx = {0}, all = {0};
    int rc = lc_tokenizer_decode(t, d->ids.data + d->base - 1, 1, d->skip_special, &ctx);
    if (rc == 0)
        rc = lc_tokenizer_decode(t, d->ids.data + d->base - 1, d->ids.len - d->base + 1,
                                 d->skip_special, &all);
    if (rc == 0) {
        if (all.len >= ctx.len && !memcmp(all.data, ctx.data, ctx.len))
            lc_buf_append(tail, all.data + ctx.len, all.len - ctx.len);
        else
            rc = 1;
    }
    lc_buf_free(&ctx), lc_buf_free(&all);
    return rc;
}

/* Whether the last id may be the context of a checkpoint: not a byte piece (it ends a
 * ByteFallback run), not skipped, and decoding alone to text that starts with no space
 * and ends with a complete character. */
static bool detok_can_anchor(const lc_detok *d) {
    const lc_tokenizer *t = d->t;
    int32_t id = d->ids.data[d->ids.len - 1];
    const char *p = lc_tokenizer_piece(t, id);
    if (!t->local_decode || !p || byte_token(p, strlen(p)) >= 0) return false;
    if (d->skip_special && lc_tokenizer_is_special(t, id)) return false;
    lc_buf one = {0};
    bool ok = lc_tokenizer_decode(t, &id, 1, d->skip_special, &one) == 0 && one.len > 0 &&
              !ends_with_fffd(&one) && one.data[0] != ' ' &&
              lc_utf8_check(one.data, one.len) == one.len;
    lc_buf_free(&one);
    return ok;
}

/* Emits the part of the full decode past d->emitted that can no longer change: it holds
 * back a trailing U+FFFD run (bytes still arriving) and an incomplete UTF-8 tail. */
static int detok_emit(lc_detok *d, bool final, lc_buf *out) {
    lc_buf tail = {0};
    int rc = detok_tail(d, &tail);
    if (rc == 1) { // the checkpoint does not hold here: decode everything
        d->base = d->base_len = 0;
        lc_buf_clear(&tail);
        rc = detok_tail(d, &tail);
    }
    if (rc) {
        lc_buf_free(&tail);
        return -1;
    }
    size_t end = tail.len; // offsets in tail; the full text is base_len bytes longer
    if (!final) {
        while (end >= 3 && !memcmp(tail.data + end - 3, "\xEF\xBF\xBD", 3)) end -= 3;
        size_t k = end;
        while (k > 0 && ((unsigned char)tail.data[k - 1] & 0xC0) == 0x80 && end - k < 3) k--;
        if (k > 0 && (unsigned char)tail.data[k - 1] >= 0xC0 &&
            lc_utf8_len((unsigned char)tail.data[k - 1]) > end - (k - 1))
            end = k - 1;
    }
    size_t done = d->emitted - d->base_len;
    if (end > done) {
        lc_buf_append(out, tail.data + done, end - done);
        d->emitted = d->base_len + end;
    }
    if (!final && end == tail.len && d->ids.len && detok_can_anchor(d)) {
        d->base = d->ids.len;
        d->base_len = d->emitted;
    }
    lc_buf_free(&tail);
    return 0;
}

/* Whether id is a <0xXX> byte piece. */
static bool is_byte_piece(const lc_tokenizer *t, int32_t id) {
    const char *p = lc_tokenizer_piece(t, id);
    return p && byte_token(p, strlen(p)) >= 0;
}

int lc_detok_push(lc_detok *d, int32_t id, lc_buf *out) {
    if (check_ids(d->t, &id, 1)) return -1;
    lc_ids_push(&d->ids, id);
    if (!d->t->byte_runs) return detok_emit(d, false, out);
    // a run of byte pieces still open may yet turn out invalid and become all U+FFFD:
    // emit only what comes before it
    // (tokens that decode leaves out, skipped specials and holes, do not end a run)
    size_t n = d->ids.len, run = n, k = n;
    while (k > 0) {
        int32_t x = d->ids.data[k - 1];
        if (is_byte_piece(d->t, x)) run = --k;
        else if (!lc_tokenizer_piece(d->t, x) || (d->skip_special && lc_tokenizer_is_special(d->t, x))) k--;
        else break;
    }
    d->ids.len = run;
    int rc = detok_emit(d, false, out);
    d->ids.len = n;
    return rc;
}

int lc_detok_finish(lc_detok *d, lc_buf *out) { return detok_emit(d, true, out); }

void lc_detok_free(lc_detok *d) {
    lc_ids_free(&d->ids);
    memset(d, 0, sizeof *d);
}
