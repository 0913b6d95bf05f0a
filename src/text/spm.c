/*
 * spm.c — a SentencePiece model (tokenizer.model) with sentencepiece's semantics. See spm.h.
 *
 * Owns: the protobuf wire-format reader, the piece table (hash of piece -> id in the two
 * classes sentencepiece keeps: "normal" = NORMAL/USER_DEFINED/UNUSED and "reserved" =
 * UNKNOWN/CONTROL/BYTE), the trie of user-defined symbols, the identity normalizer, the
 * BPE encoder (a binary heap of candidate pairs over a linked list of symbols, as
 * bpe_model.cc does, plus a faster path with identical output: the text cut into
 * segments no merge crosses, merges looked up by pairs of ids, a per-thread cache of
 * segment -> ids; see "BPE encode") and the decoder.
 * Each thread that encodes keeps one scratch area (buffers and that cache, a few MB at
 * most), freed when the thread exits.
 * Must not: print, exit, or approximate a construct it does not implement (a
 * precompiled_charsmap normalizer, a non-BPE model): those are errors naming them.
 * Field numbers are those of google/sentencepiece's sentencepiece_model.proto.
 */
#include "text/spm.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <threads.h>

#include "core/error.h"
#include "core/file.h"
#include "core/mem.h"

#define SPM_MAX_FILE ((size_t)1 << 30)   // 1 GiB: real models are a few MB
#define SPM_MAX_PIECES ((size_t)1 << 26) // far above any real vocabulary
#define SPM_MAX_PIECE_LEN 8000           // sentencepiece rejects pieces this long
#define SPM_MAX_TEXT ((size_t)512 << 20) // encode input limit (symbol indices are int32)

static const char kSpace[] = "\xe2\x96\x81";               // U+2581, what a space becomes
static const char kReplacement[] = "\xef\xbf\xbd";         // U+FFFD
static const char kDefaultUnkSurface[] = " \xe2\x81\x87 "; // " ⁇ "

typedef struct {
    int32_t child, sibling; // first child / next sibling node, -1 for none
    uint8_t byte;
    uint8_t terminal; // a user-defined symbol ends here
} trie_node;

typedef struct {
    uint32_t tag; // high bits of the piece's hash: most misses end here
    int32_t id;   // -1: empty
} slot;

typedef struct {
    uint64_t key; // left id << 32 | right id; PAIR_EMPTY: empty
    int32_t id;   // the normal-class piece spelled left + right
} pair_slot;

#define PAIR_EMPTY UINT64_MAX

struct lc_spm {
    char *what;     // the file name, for errors and describe
    int32_t n;      // number of pieces
    char *arena;    // every piece, NUL-terminated, back to back
    size_t *off;    // (n) offset of piece i in arena
    uint32_t *len;  // (n) byte length of piece i
    float *score;   // (n)
    uint8_t *type;  // (n) LC_SPM_NORMAL ...
    int32_t *canon; // (n) PieceToId(piece(i)): i unless a reserved piece shares the string
    slot *table;    // (mask + 1) open-addressing hash of piece -> id
    size_t mask;
    int32_t unk_id;       // the UNKNOWN piece
    int32_t byte_id[256]; // <0xXX> pieces (-1 without byte_fallback)
    bool has_unused;
    // The fast encode path (see lc_spm_encode): usable when no merge can cross the point
    // before a U+2581 that follows another character, and no piece is unused.
    bool segmentable;
    int32_t ascii_id[128]; // normal-class piece of each ASCII character, -1 for none
    pair_slot *pairs;      // (pair_mask + 1) hash of (left id, right id) -> merged piece
    size_t pair_mask;
    uint64_t gen; // unique per loaded model: tags the per-thread encode cache
    trie_node *trie; // user-defined symbols; NULL when there are none
    size_t trie_n;

    // trainer_spec
    int model_type;
    int32_t vocab_size;
    bool byte_fallback, treat_ws_as_suffix, split_by_whitespace, allow_ws_only_pieces, split_digits;
    char *unk_piece, *bos_piece, *eos_piece, *pad_piece, *unk_surface;
    // normalizer_spec
    char *norm_name;
    bool add_dummy_prefix, remove_extra_ws, escape_ws;
    char *desc;
};

/* ---------------------------------------------------------------- UTF-8 ----- */

/* Length of the UTF-8 character that starts with byte b, as sentencepiece's OneCharLen. */
static size_t one_char_len(unsigned char b) {
    return (size_t) "\1\1\1\1\1\1\1\1\1\1\1\1\2\2\3\4"[b >> 4];
}

/* sentencepiece's IsValidDecodeUTF8: the length of the valid character at p, or 0 when
 * the bytes there are malformed (overlong, surrogate, > U+10FFFF, truncated). */
static size_t utf8_valid_len(const unsigned char *p, size_t n) {
    if (n == 0) return 0;
    unsigned char c = p[0];
    if (c < 0x80) return 1;
    if (n >= 2 && (c & 0xE0) == 0xC0) {
        uint32_t cp = ((uint32_t)(c & 0x1F) << 6) | (p[1] & 0x3Fu);
        if ((p[1] & 0xC0) == 0x80 && cp >= 0x80) return 2;
    } else if (n >= 3 && (c & 0xF0) == 0xE0) {
        uint32_t cp =
            ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(p[1] & 0x3F) << 6) | (p[2] & 0x3Fu);
        if ((p[1] & 0xC0) == 0x80 && (p[2] & 0xC0) == 0x80 && cp >= 0x800 &&
            !(cp >= 0xD800 && cp < 0xE000))
            return 3;
    } else if (n >= 4 && (c & 0xF8) == 0xF0) {
        uint32_t cp = ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(p[1] & 0x3F) << 12) |
                      ((uint32_t)(p[2] & 0x3F) << 6) | (p[3] & 0x3Fu);
        if ((p[1] & 0xC0) == 0x80 && (p[2] & 0xC0) == 0x80 && (p[3] & 0xC0) == 0x80 &&
            cp >= 0x10000 && cp <= 0x10FFFF)
            return 4;
    }
    return 0;
}

static bool utf8_valid(const unsigned char *p, size_t n) {
    while (n) {
        size_t k = utf8_valid_len(p, n);
        if (!k) return false;
        p += k;
        n -= k;
    }
    return true;
}

/* ------------------------------------------------------- protobuf reader ----- */

/* A view of one message: bytes [pos, end) of the file, named `msg` (with index idx
 * when >= 0, e.g. "pieces[17]") in errors. Offsets are absolute in the file. */
typedef struct {
    const unsigned char *buf;
    size_t pos, end;
    const char *what; // the file
    const char *msg;
    long idx;
} pb_reader;

static const char *pb_msg(const pb_reader *r, char *tmp, size_t cap) {
    if (r->idx >= 0)
        snprintf(tmp, cap, "%s[%ld]", r->msg, r->idx);
    else
        snprintf(tmp, cap, "%s", r->msg);
    return tmp;
}

static int pb_varint(pb_reader *r, const char *field, uint64_t *v) {
    char m[64];
    size_t start = r->pos;
    uint64_t x = 0;
    for (int i = 0; i < 10; i++) {
        if (r->pos >= r->end)
            return lc_fail("%s: truncated varint (%s %s) at byte %zu: the %s ends at byte %zu; "
                           "the file is cut short or corrupt",
                           r->what, pb_msg(r, m, sizeof m), field, start, r->msg, r->end);
        unsigned char b = r->buf[r->pos++];
        if (i == 9 && b > 1) break;
        x |= (uint64_t)(b & 0x7F) << (7 * i);
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return lc_fail("%s: malformed varint (%s %s) at byte %zu: more than 64 bits; the file is "
                   "corrupt",
                   r->what, pb_msg(r, m, sizeof m), field, start);
}

/* Reads a field key. *at: where it starts. Rejects field 0 and the group / invalid wire types. */
static int pb_key(pb_reader *r, uint32_t *field, int *wire, size_t *at) {
    char m[64];
    uint64_t k;
    *at = r->pos;
    if (pb_varint(r, "field key", &k)) return -1;
    *field = (uint32_t)(k >> 3);
    *wire = (int)(k & 7);
    if ((k >> 3) == 0 || (k >> 3) > 0x1FFFFFFF)
        return lc_fail("%s: invalid field number %llu in %s at byte %zu; the file is not a "
                       "SentencePiece model or is corrupt",
                       r->what, (unsigned long long)(k >> 3), pb_msg(r, m, sizeof m), *at);
    if (*wire == 3 || *wire == 4 || *wire > 5)
        return lc_fail("%s: field %u of %s at byte %zu has wire type %d (%s), which no "
                       "SentencePiece model uses; the file is corrupt",
                       r->what, *field, pb_msg(r, m, sizeof m), *at, *wire,
                       *wire == 3 || *wire == 4 ? "group" : "invalid");
    return 0;
}

static int pb_need(pb_reader *r, size_t n, const char *field, size_t at) {
    char m[64];
    if (n > r->end - r->pos)
        return lc_fail("%s: %s %s at byte %zu needs %zu bytes from byte %zu, but the %s ends at "
                       "byte %zu; the file is cut short or corrupt",
                       r->what, pb_msg(r, m, sizeof m), field, at, n, r->pos, r->msg, r->end);
    return 0;
}

/* Reads a length-delimited value: [*off, *off + *n). */
static int pb_bytes(pb_reader *r, const char *field, size_t at, size_t *off, size_t *n) {
    uint64_t l;
    if (pb_varint(r, field, &l)) return -1;
    if (pb_need(r, l > SIZE_MAX ? SIZE_MAX : (size_t)l, field, at)) return -1;
    *off = r->pos;
    *n = (size_t)l;
    r->pos += (size_t)l;
    return 0;
}

static int pb_skip(pb_reader *r, int wire, size_t at) {
    uint64_t v;
    size_t off, n;
    switch (wire) {
    case 0:
        return pb_varint(r, "unknown field", &v);
    case 1:
        if (pb_need(r, 8, "unknown fixed64 field", at)) return -1;
        r->pos += 8;
        return 0;
    case 2:
        return pb_bytes(r, "unknown field", at, &off, &n);
    default:
        if (pb_need(r, 4, "unknown fixed32 field", at)) return -1;
        r->pos += 4;
        return 0;
    }
}

static int pb_expect(pb_reader *r, const char *field, uint32_t num, int wire, int want, size_t at) {
    static const char *names[] = {"varint", "fixed64", "length-delimited", "", "", "fixed32"};
    char m[64];
    if (wire == want) return 0;
    return lc_fail("%s: %s.%s (field %u) at byte %zu has wire type %d (%s), expected %d (%s); "
                   "the file is corrupt or not a SentencePiece model",
                   r->what, pb_msg(r, m, sizeof m), field, num, at, wire, names[wire], want,
                   names[want]);
}

static int pb_float(pb_reader *r, const char *field, size_t at, float *f) {
    if (pb_need(r, 4, field, at)) return -1;
    const unsigned char *p = r->buf + r->pos;
    uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    memcpy(f, &u, 4);
    r->pos += 4;
    return 0;
}

/* A string field kept by the model: UTF-8 without NUL, copied into a new string. */
static int pb_string(pb_reader *r, const char *field, size_t at, char **out) {
    char m[64];
    size_t off, n;
    if (pb_bytes(r, field, at, &off, &n)) return -1;
    if (memchr(r->buf + off, 0, n) || !utf8_valid(r->buf + off, n))
        return lc_fail("%s: %s.%s at byte %zu is not valid UTF-8 text; the file is corrupt",
                       r->what, pb_msg(r, m, sizeof m), field, at);
    free(*out);
    *out = xstrndup((const char *)r->buf + off, n);
    return 0;
}

static pb_reader pb_sub(const pb_reader *r, size_t off, size_t n, const char *msg, long idx) {
    pb_reader s = {r->buf, off, off + n, r->what, msg, idx};
    return s;
}

/* ------------------------------------------------------------- parsing ----- */

typedef struct {
    size_t *off; // piece string in the file
    uint32_t *len;
    float *score;
    uint8_t *type;
    size_t *at; // where the piece's message starts, for errors
    size_t n, cap;
    bool charsmap, denorm_charsmap;
    size_t charsmap_len;
} parsed;

static int parse_piece(pb_reader *r, parsed *p) {
    char m[64];
    size_t start = r->pos;
    bool has_piece = false;
    uint64_t v;
    size_t off = 0, n = 0;
    float score = 0;
    uint64_t type = LC_SPM_NORMAL;
    while (r->pos < r->end) {
        uint32_t f;
        int w;
        size_t at;
        if (pb_key(r, &f, &w, &at)) return -1;
        if (f == 1) {
            if (pb_expect(r, "piece", f, w, 2, at) || pb_bytes(r, "piece", at, &off, &n)) return -1;
            has_piece = true;
        } else if (f == 2) {
            if (pb_expect(r, "score", f, w, 5, at) || pb_float(r, "score", at, &score)) return -1;
        } else if (f == 3) {
            if (pb_expect(r, "type", f, w, 0, at) || pb_varint(r, "type", &v)) return -1;
            if (v < LC_SPM_NORMAL || v > LC_SPM_BYTE)
                return lc_fail("%s: %s.type at byte %zu is %llu, not a piece type (1..6); the "
                               "file is corrupt or newer than lorac",
                               r->what, pb_msg(r, m, sizeof m), at, (unsigned long long)v);
            type = v;
        } else if (pb_skip(r, w, at)) {
            return -1;
        }
    }
    const unsigned char *s = r->buf + off;
    if (!has_piece || n == 0)
        return lc_fail("%s: %s (byte %zu) has an empty piece string; sentencepiece rejects this "
                       "model",
                       r->what, pb_msg(r, m, sizeof m), start);
    if (n >= SPM_MAX_PIECE_LEN)
        return lc_fail("%s: %s (byte %zu) is %zu bytes long; sentencepiece rejects pieces of "
                       "%d bytes or more",
                       r->what, pb_msg(r, m, sizeof m), start, n, SPM_MAX_PIECE_LEN);
    if (memchr(s, 0, n))
        return lc_fail("%s: %s (byte %zu) contains a NUL character; sentencepiece rejects this "
                       "model",
                       r->what, pb_msg(r, m, sizeof m), start);
    if (!utf8_valid(s, n))
        return lc_fail("%s: %s (byte %zu) is not valid UTF-8; the file is corrupt", r->what,
                       pb_msg(r, m, sizeof m), start);
    if (p->n == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 1024;
        p->off = xrealloc(p->off, p->cap * sizeof *p->off);
        p->len = xrealloc(p->len, p->cap * sizeof *p->len);
        p->score = xrealloc(p->score, p->cap * sizeof *p->score);
        p->type = xrealloc(p->type, p->cap * sizeof *p->type);
        p->at = xrealloc(p->at, p->cap * sizeof *p->at);
    }
    p->off[p->n] = off;
    p->len[p->n] = (uint32_t)n;
    p->score[p->n] = score;
    p->type[p->n] = (uint8_t)type;
    p->at[p->n] = start;
    p->n++;
    return 0;
}

static int read_bool(pb_reader *r, const char *name, uint32_t f, int w, size_t at, bool *b) {
    uint64_t v;
    if (pb_expect(r, name, f, w, 0, at) || pb_varint(r, name, &v)) return -1;
    *b = v != 0;
    return 0;
}

static int read_int32(pb_reader *r, const char *name, uint32_t f, int w, size_t at, int32_t *x) {
    uint64_t v;
    if (pb_expect(r, name, f, w, 0, at) || pb_varint(r, name, &v)) return -1;
    *x = (int32_t)(uint32_t)v; // int32 is sign-extended on the wire; keep the low 32 bits
    return 0;
}

static int read_str(pb_reader *r, const char *name, uint32_t f, int w, size_t at, char **s) {
    if (pb_expect(r, name, f, w, 2, at)) return -1;
    return pb_string(r, name, at, s);
}

static int parse_trainer(pb_reader *r, lc_spm *s) {
    char m[64];
    while (r->pos < r->end) {
        uint32_t f;
        int w;
        size_t at;
        int rc = 0;
        int32_t mt;
        if (pb_key(r, &f, &w, &at)) return -1;
        switch (f) {
        case 3:
            if (read_int32(r, "model_type", f, w, at, &mt)) return -1;
            if (mt < LC_SPM_UNIGRAM || mt > LC_SPM_CHAR)
                return lc_fail("%s: %s.model_type at byte %zu is %d, not a model type (1..4)",
                               r->what, pb_msg(r, m, sizeof m), at, mt);
            s->model_type = mt;
            break;
        case 4:
            rc = read_int32(r, "vocab_size", f, w, at, &s->vocab_size);
            break;
        case 22:
            rc = read_bool(r, "split_by_whitespace", f, w, at, &s->split_by_whitespace);
            break;
        case 24:
            rc = read_bool(r, "treat_whitespace_as_suffix", f, w, at, &s->treat_ws_as_suffix);
            break;
        case 25:
            rc = read_bool(r, "split_digits", f, w, at, &s->split_digits);
            break;
        case 26:
            rc = read_bool(r, "allow_whitespace_only_pieces", f, w, at, &s->allow_ws_only_pieces);
            break;
        case 35:
            rc = read_bool(r, "byte_fallback", f, w, at, &s->byte_fallback);
            break;
        case 44:
            rc = read_str(r, "unk_surface", f, w, at, &s->unk_surface);
            break;
        case 45:
            rc = read_str(r, "unk_piece", f, w, at, &s->unk_piece);
            break;
        case 46:
            rc = read_str(r, "bos_piece", f, w, at, &s->bos_piece);
            break;
        case 47:
            rc = read_str(r, "eos_piece", f, w, at, &s->eos_piece);
            break;
        case 48:
            rc = read_str(r, "pad_piece", f, w, at, &s->pad_piece);
            break;
        default:
            rc = pb_skip(r, w, at);
        }
        if (rc) return -1;
    }
    return 0;
}

/* NormalizerSpec (also the denormalizer's): keeps the flags when `s` is given. */
static int parse_normalizer(pb_reader *r, lc_spm *s, bool *charsmap, size_t *charsmap_len) {
    while (r->pos < r->end) {
        uint32_t f;
        int w;
        size_t at, off, n;
        int rc = 0;
        bool b = false;
        char *tmp = NULL;
        if (pb_key(r, &f, &w, &at)) return -1;
        switch (f) {
        case 1:
            rc = read_str(r, "name", f, w, at, &tmp);
            if (!rc && s) {
                free(s->norm_name);
                s->norm_name = tmp;
                tmp = NULL;
            }
            free(tmp);
            break;
        case 2:
            rc = pb_expect(r, "precompiled_charsmap", f, w, 2, at) ||
                 pb_bytes(r, "precompiled_charsmap", at, &off, &n);
            if (!rc) {
                *charsmap = n > 0;
                *charsmap_len = n;
            }
            break;
        case 3:
            rc = read_bool(r, "add_dummy_prefix", f, w, at, &b);
            if (s) s->add_dummy_prefix = b;
            break;
        case 4:
            rc = read_bool(r, "remove_extra_whitespaces", f, w, at, &b);
            if (s) s->remove_extra_ws = b;
            break;
        case 5:
            rc = read_bool(r, "escape_whitespaces", f, w, at, &b);
            if (s) s->escape_ws = b;
            break;
        default:
            rc = pb_skip(r, w, at);
        }
        if (rc) return -1;
    }
    return 0;
}

static int parse_model(pb_reader *r, lc_spm *s, parsed *p) {
    while (r->pos < r->end) {
        uint32_t f;
        int w;
        size_t at, off, n;
        if (pb_key(r, &f, &w, &at)) return -1;
        if (f == 1 || f == 2 || f == 3 || f == 5) {
            static const char *names[] = {"", "pieces",           "trainer_spec", "normalizer_spec",
                                          "", "denormalizer_spec"};
            if (pb_expect(r, names[f], f, w, 2, at) || pb_bytes(r, names[f], at, &off, &n))
                return -1;
            if (f == 1 && p->n >= SPM_MAX_PIECES)
                return lc_fail("%s: more than %zu pieces at byte %zu; the file is corrupt", r->what,
                               SPM_MAX_PIECES, at);
            pb_reader sub = pb_sub(r, off, n, names[f], f == 1 ? (long)p->n : -1);
            int rc = f == 1   ? parse_piece(&sub, p)
                     : f == 2 ? parse_trainer(&sub, s)
                     : f == 3 ? parse_normalizer(&sub, s, &p->charsmap, &p->charsmap_len)
                              : parse_normalizer(&sub, NULL, &p->denorm_charsmap, &n);
            if (rc) return -1;
        } else if (pb_skip(r, w, at)) {
            return -1;
        }
    }
    return 0;
}

/* ---------------------------------------------------------- piece table ----- */

static uint64_t hash_bytes(const char *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 0x100000001b3ull;
    h ^= h >> 31;
    h *= 0x9e3779b97f4a7c15ull;
    return h ^ (h >> 29);
}

static bool is_normal_class(int type) {
    return type == LC_SPM_NORMAL || type == LC_SPM_USER_DEFINED || type == LC_SPM_UNUSED;
}

/* The id of piece p[0..n) in one class (normal or reserved), or -1. */
static int32_t find_piece(const lc_spm *s, const char *p, size_t n, bool normal) {
    uint64_t h = hash_bytes(p, n);
    uint32_t tag = (uint32_t)(h >> 32);
    for (size_t i = (size_t)h & s->mask;; i = (i + 1) & s->mask) {
        int32_t id = s->table[i].id;
        if (id < 0) return -1;
        if (s->table[i].tag == tag && s->len[id] == n &&
            is_normal_class(s->type[id]) == normal &&
            memcmp(s->arena + s->off[id], p, n) == 0)
            return id;
    }
}

/* sentencepiece's PieceToId: reserved pieces first, then normal ones, else unk. */
static int32_t piece_to_id(const lc_spm *s, const char *p, size_t n) {
    int32_t id = find_piece(s, p, n, false);
    if (id < 0) id = find_piece(s, p, n, true);
    return id < 0 ? s->unk_id : id;
}

static void trie_insert(lc_spm *s, const char *p, size_t n) {
    if (!s->trie) {
        s->trie = xmalloc(16 * sizeof *s->trie);
        s->trie[0] = (trie_node){-1, -1, 0, 0};
        s->trie_n = 1;
    }
    int32_t node = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t c = s->trie[node].child;
        while (c >= 0 && s->trie[c].byte != (uint8_t)p[i])
            c = s->trie[c].sibling;
        if (c < 0) {
            if ((s->trie_n & (s->trie_n - 1)) == 0 && s->trie_n >= 16)
                s->trie = xrealloc(s->trie, 2 * s->trie_n * sizeof *s->trie);
            c = (int32_t)s->trie_n++;
            s->trie[c] = (trie_node){-1, s->trie[node].child, (uint8_t)p[i], 0};
            s->trie[node].child = c;
        }
        node = c;
    }
    s->trie[node].terminal = 1;
}

/* sentencepiece's PrefixMatcher::PrefixMatch: the longest user-defined symbol at p
 * (*found = true), else one character (clipped to n). */
static size_t prefix_match(const lc_spm *s, const char *p, size_t n, bool *found) {
    size_t best = 0;
    if (s->trie) {
        int32_t node = 0;
        for (size_t i = 0; i < n; i++) {
            int32_t c = s->trie[node].child;
            while (c >= 0 && s->trie[c].byte != (uint8_t)p[i])
                c = s->trie[c].sibling;
            if (c < 0) break;
            node = c;
            if (s->trie[node].terminal) best = i + 1;
        }
    }
    *found = best > 0;
    if (best) return best;
    size_t k = one_char_len((unsigned char)p[0]);
    return k < n ? k : n;
}

/* -------------------------------------------------------------- loading ----- */

static void parsed_free(parsed *p) {
    free(p->off);
    free(p->len);
    free(p->score);
    free(p->type);
    free(p->at);
}

static void pair_insert(lc_spm *s, int32_t left, int32_t right, int32_t id) {
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    size_t h = (size_t)((key * 0x9e3779b97f4a7c15ull) >> 20) & s->pair_mask;
    while (s->pairs[h].key != PAIR_EMPTY && s->pairs[h].key != key)
        h = (h + 1) & s->pair_mask;
    s->pairs[h] = (pair_slot){key, id};
}

/* The normal-class piece spelled piece(left) + piece(right), or -1. */
static inline int32_t pair_find(const lc_spm *s, int32_t left, int32_t right) {
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    for (size_t h = (size_t)((key * 0x9e3779b97f4a7c15ull) >> 20) & s->pair_mask;;
         h = (h + 1) & s->pair_mask) {
        if (s->pairs[h].key == key) return s->pairs[h].id;
        if (s->pairs[h].key == PAIR_EMPTY) return -1;
    }
}

/* Whether the normal-class piece p[0..n) holds a U+2581 right after another character:
 * then a merge could cross the segment boundaries of the fast encode path. */
static bool crosses_space(const char *p, size_t n) {
    for (size_t i = 1; i + 3 <= n; i++)
        if (memcmp(p + i, kSpace, 3) == 0 && (i < 3 || memcmp(p + i - 3, kSpace, 3) != 0))
            return true;
    return false;
}

/* The tables of the fast encode path: the ASCII characters' ids, every merge as a pair
 * of ids (each normal-class piece split at each character boundary into two
 * normal-class pieces), and whether segmenting is exact for this vocabulary. */
static void build_fast_tables(lc_spm *s) {
    static atomic_uint_fast64_t next_gen = 1;
    s->gen = (uint64_t)atomic_fetch_add(&next_gen, 1);
    for (int c = 0; c < 128; c++) {
        char ch = (char)c;
        s->ascii_id[c] = find_piece(s, &ch, 1, true);
    }
    size_t cap = 16, n = (size_t)s->n;
    while (cap < 4 * n)
        cap *= 2;
    s->pairs = xmalloc(cap * sizeof *s->pairs);
    for (size_t i = 0; i < cap; i++)
        s->pairs[i] = (pair_slot){PAIR_EMPTY, -1};
    s->pair_mask = cap - 1;
    size_t npairs = 0;
    s->segmentable = !s->has_unused;
    for (size_t i = 0; i < n; i++) {
        if (!is_normal_class(s->type[i])) continue;
        const char *p = s->arena + s->off[i];
        size_t len = s->len[i];
        // A NaN score orders pairs differently in a heap and in a scan.
        if (crosses_space(p, len) || s->score[i] != s->score[i]) s->segmentable = false;
        for (size_t k = one_char_len((unsigned char)p[0]); k < len;
             k += one_char_len((unsigned char)p[k])) {
            int32_t l = find_piece(s, p, k, true), r = find_piece(s, p + k, len - k, true);
            if (l < 0 || r < 0) continue;
            if (2 * (npairs + 1) > cap) { // more splits than expected: grow
                pair_slot *old = s->pairs;
                size_t oldcap = cap;
                cap *= 2;
                s->pairs = xmalloc(cap * sizeof *s->pairs);
                for (size_t j = 0; j < cap; j++)
                    s->pairs[j] = (pair_slot){PAIR_EMPTY, -1};
                s->pair_mask = cap - 1;
                for (size_t j = 0; j < oldcap; j++)
                    if (old[j].key != PAIR_EMPTY)
                        pair_insert(s, (int32_t)(old[j].key >> 32), (int32_t)(uint32_t)old[j].key,
                                    old[j].id);
                free(old);
            }
            pair_insert(s, l, r, (int32_t)i);
            npairs++;
        }
    }
}

/* Builds the tables from the parsed pieces and checks what sentencepiece's
 * InitializePieces checks. */
static int build(lc_spm *s, const unsigned char *buf, parsed *p) {
    const char *what = s->what;
    if (s->model_type != LC_SPM_BPE) {
        static const char *names[] = {"", "UNIGRAM", "BPE", "WORD", "CHAR"};
        return lc_fail("%s: model type %s is not implemented (lorac reads SentencePiece BPE "
                       "models, as Llama-2 and Mistral use)%s",
                       what, names[s->model_type],
                       s->model_type == LC_SPM_UNIGRAM ? "; UNIGRAM is also what a model "
                                                         "without a trainer_spec means"
                                                       : "");
    }
    if (p->charsmap)
        return lc_fail("%s: normalizer '%s' (a precompiled_charsmap of %zu bytes) is not "
                       "implemented; lorac supports SentencePiece models with the identity "
                       "normalizer (Llama-2, Mistral)",
                       what, s->norm_name ? s->norm_name : "", p->charsmap_len);
    if (p->denorm_charsmap)
        return lc_fail("%s: a denormalizer (denormalizer_spec.precompiled_charsmap) is not "
                       "implemented",
                       what);
    if (p->n == 0) return lc_fail("%s: the model has no pieces; unk is not defined", what);

    size_t n = p->n, total = 0;
    for (size_t i = 0; i < n; i++)
        total += (size_t)p->len[i] + 1;
    s->n = (int32_t)n;
    s->arena = xmalloc(total);
    s->off = xmalloc(n * sizeof *s->off);
    s->len = p->len;
    s->score = p->score;
    s->type = p->type;
    p->len = NULL;
    p->score = NULL;
    p->type = NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(s->arena + o, buf + p->off[i], s->len[i]);
        s->arena[o + s->len[i]] = '\0';
        s->off[i] = o;
        o += (size_t)s->len[i] + 1;
    }

    size_t cap = 16;
    while (cap < 2 * n)
        cap *= 2;
    s->table = xmalloc(cap * sizeof *s->table);
    for (size_t i = 0; i < cap; i++)
        s->table[i] = (slot){0, -1};
    s->mask = cap - 1;
    s->unk_id = -1;
    for (int i = 0; i < 256; i++)
        s->byte_id[i] = -1;
    bool bytes_seen[256] = {false};
    for (size_t i = 0; i < n; i++) {
        const char *str = s->arena + s->off[i];
        int type = s->type[i];
        int32_t dup = find_piece(s, str, s->len[i], is_normal_class(type));
        if (dup >= 0)
            return lc_fail("%s: piece %zu '%s' (byte %zu) duplicates piece %d; sentencepiece "
                           "rejects this model",
                           what, i, str, p->at[i], dup);
        uint64_t hv = hash_bytes(str, s->len[i]);
        size_t h = (size_t)hv & s->mask;
        while (s->table[h].id >= 0)
            h = (h + 1) & s->mask;
        s->table[h] = (slot){(uint32_t)(hv >> 32), (int32_t)i};
        if (type == LC_SPM_USER_DEFINED) trie_insert(s, str, s->len[i]);
        if (type == LC_SPM_UNUSED) s->has_unused = true;
        if (type == LC_SPM_UNKNOWN) {
            if (s->unk_id >= 0)
                return lc_fail("%s: piece %zu '%s' (byte %zu) is a second unknown piece after "
                               "%d; sentencepiece rejects this model",
                               what, i, str, p->at[i], s->unk_id);
            s->unk_id = (int32_t)i;
        }
        if (type == LC_SPM_BYTE) {
            if (!s->byte_fallback)
                return lc_fail("%s: byte piece %zu '%s' (byte %zu) although "
                               "trainer_spec.byte_fallback is false; sentencepiece rejects "
                               "this model",
                               what, i, str, p->at[i]);
            // Exactly "<0xXX>" with upper-case hex digits, as ByteToPiece writes it.
            static const char hex[] = "0123456789ABCDEF";
            const char *h1 = s->len[i] == 6 ? memchr(hex, str[3], 16) : NULL;
            const char *h2 = s->len[i] == 6 ? memchr(hex, str[4], 16) : NULL;
            if (!h1 || !h2 || !str[3] || !str[4] || memcmp(str, "<0x", 3) || str[5] != '>')
                return lc_fail("%s: byte piece %zu '%s' (byte %zu) is not of the form <0xXX>", what,
                               i, str, p->at[i]);
            unsigned v = (unsigned)((h1 - hex) * 16 + (h2 - hex));
            bytes_seen[v] = true;
            s->byte_id[v] = (int32_t)i;
        }
    }
    if (s->unk_id < 0)
        return lc_fail("%s: no piece has type UNKNOWN (unk is not defined); sentencepiece "
                       "rejects this model",
                       what);
    if (s->byte_fallback)
        for (int b = 0; b < 256; b++)
            if (!bytes_seen[b])
                return lc_fail("%s: trainer_spec.byte_fallback is true but there is no byte "
                               "piece <0x%02X> (all 256 are needed)",
                               what, b);
    s->canon = xmalloc(n * sizeof *s->canon);
    for (size_t i = 0; i < n; i++)
        s->canon[i] = piece_to_id(s, s->arena + s->off[i], s->len[i]);
    build_fast_tables(s);

    lc_buf d = {0};
    lc_buf_printf(&d, "SentencePiece BPE, %d pieces%s, normalizer %s%s%s", s->n,
                  s->byte_fallback ? ", byte fallback" : "",
                  s->norm_name && *s->norm_name ? s->norm_name : "identity (unnamed)",
                  s->add_dummy_prefix ? ", add_dummy_prefix" : "",
                  s->remove_extra_ws ? ", remove_extra_whitespaces" : "");
    s->desc = d.data;
    return 0;
}

int lc_spm_load_mem(const void *data, size_t len, const char *what, lc_spm **out) {
    *out = NULL;
    lc_spm *s = xcalloc(1, sizeof *s);
    s->what = xstrdup(what ? what : "tokenizer.model");
    // Defaults of sentencepiece_model.proto.
    s->model_type = LC_SPM_UNIGRAM;
    s->vocab_size = 8000;
    s->split_by_whitespace = true;
    s->add_dummy_prefix = s->remove_extra_ws = s->escape_ws = true;
    parsed p = {0};
    pb_reader r = {data, 0, len, s->what, "ModelProto", -1};
    int rc = len == 0 ? lc_fail("%s: the file is empty; expected a SentencePiece model", s->what)
                      : parse_model(&r, s, &p);
    if (!rc) rc = build(s, data, &p);
    parsed_free(&p);
    if (rc) {
        lc_spm_free(s);
        return -1;
    }
    *out = s;
    return 0;
}

int lc_spm_load(const char *path, lc_spm **out) {
    char *data;
    size_t len;
    *out = NULL;
    if (lc_read_file(path, SPM_MAX_FILE, &data, &len)) return -1;
    int rc = lc_spm_load_mem(data, len, path, out);
    free(data);
    return rc;
}

void lc_spm_free(lc_spm *s) {
    if (!s) return;
    free(s->what);
    free(s->arena);
    free(s->off);
    free(s->len);
    free(s->score);
    free(s->type);
    free(s->canon);
    free(s->table);
    free(s->trie);
    free(s->pairs);
    free(s->unk_piece);
    free(s->bos_piece);
    free(s->eos_piece);
    free(s->pad_piece);
    free(s->unk_surface);
    free(s->norm_name);
    free(s->desc);
    free(s);
}

/* ----------------------------------------------------------- normalizer ----- */

/* One step of Normalizer::NormalizePrefix without a charsmap: a user-defined symbol
 * verbatim, else one valid character, else U+FFFD for one malformed byte. */
static size_t norm_prefix(const lc_spm *s, const char *p, size_t n, const char **chunk,
                          size_t *chunk_len) {
    bool found;
    if (s->trie) {
        size_t k = prefix_match(s, p, n, &found);
        if (found) {
            *chunk = p;
            *chunk_len = k;
            return k;
        }
    }
    size_t k = utf8_valid_len((const unsigned char *)p, n);
    if (!k) {
        *chunk = kReplacement;
        *chunk_len = 3;
        return 1;
    }
    *chunk = p;
    *chunk_len = k;
    return k;
}

static void add_ws(const lc_spm *s, lc_buf *out) {
    if (s->escape_ws)
        lc_buf_append(out, kSpace, 3);
    else
        lc_buf_putc(out, ' ');
}

/* Normalizer::Normalize for an identity normalizer (no charsmap): appends to out. */
static void normalize(const lc_spm *s, const char *text, size_t len, lc_buf *out) {
    size_t pos = 0;
    const char *c;
    size_t cn;
    if (len == 0) return;
    if (s->remove_extra_ws) {
        while (pos < len) {
            size_t k = norm_prefix(s, text + pos, len - pos, &c, &cn);
            if (!(cn == 1 && c[0] == ' ')) break;
            pos += k;
        }
        if (pos == len) return;
    }
    lc_buf_reserve(out, 3 * (len - pos) + 6);
    if (!s->treat_ws_as_suffix && s->add_dummy_prefix) add_ws(s, out);
    bool prev_space = s->remove_extra_ws;
    while (pos < len) {
        size_t k;
        if (!s->trie && (unsigned char)text[pos] < 0x80) { // fast path: ASCII
            c = text + pos;
            cn = k = 1;
        } else {
            k = norm_prefix(s, text + pos, len - pos, &c, &cn);
        }
        while (prev_space && cn && c[0] == ' ')
            c++, cn--;
        if (cn) {
            for (size_t i = 0; i < cn; i++) {
                if (s->escape_ws && c[i] == ' ')
                    lc_buf_append(out, kSpace, 3);
                else
                    lc_buf_putc(out, c[i]);
            }
            prev_space = c[cn - 1] == ' ';
        }
        pos += k;
        if (!s->remove_extra_ws) prev_space = false;
    }
    if (s->remove_extra_ws) {
        const char *sp = s->escape_ws ? kSpace : " ";
        size_t spn = s->escape_ws ? 3 : 1;
        while (out->len >= spn && memcmp(out->data + out->len - spn, sp, spn) == 0)
            out->len -= spn;
        out->data[out->len] = '\0';
    }
    if (s->treat_ws_as_suffix && s->add_dummy_prefix) add_ws(s, out);
}

/* ------------------------------------------------------------ BPE encode ----- */

/*
 * Two paths give the same ids. The plain path runs bpe_model.cc's algorithm on the
 * whole normalized text. The fast path (when s->segmentable) cuts the normalized text
 * before every U+2581 that follows another character: no piece spans such a point and
 * no piece is unused (whose resegmenting depends on merges proposed anywhere in the
 * text), so every merge stays inside one segment and the segments' merges do not
 * interact. Each segment is then encoded alone (a linear scan for the best pair when it
 * is short, the heap otherwise), through a per-thread cache of segment -> ids; a run of
 * unknowns across segments still becomes one unk.
 */

typedef struct {
    int32_t prev, next;  // neighbours in the list, -1 at the ends
    uint32_t start, len; // bytes of the normalized text; len 0 once merged away
    bool freeze;         // a user-defined symbol: never merged
} symbol;

typedef struct {
    float score;
    int32_t left, right;
    uint32_t size; // bytes of the merged piece (stale when the symbols changed)
} pair;

/* Heap order of bpe_model.cc: higher score first, then the leftmost pair. */
static bool pair_before(const pair *a, const pair *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

#define SMALL_MAX 64                // segments of at most this many characters: linear scan
#define CACHE_MIN ((size_t)1 << 10)   // cache hash slots at first (at most half are used)
#define CACHE_MAX ((size_t)1 << 16)   // ... and at most
#define CACHE_MAX_SEG 96            // longer segments are not cached
#define CACHE_MAX_BYTES ((size_t)2 << 20)
#define SCRATCH_KEEP ((size_t)4 << 20) // larger buffers are freed after a call

typedef struct {
    uint64_t hash;
    uint32_t off, ids;   // bytes in cache_bytes, first id in cache_ids
    uint16_t len, nids;  // len 0: empty slot
} cache_slot;

/* Per-thread working memory, reused between calls. */
typedef struct {
    lc_buf norm;
    symbol *sym;
    size_t capsym;
    pair *heap;
    size_t nheap, capheap;
    // rev_merge of bpe_model.cc for unused pieces: id -> length of its left part.
    int32_t *rev_key;
    uint32_t *rev_left;
    size_t rev_n, rev_cap; // rev_cap: power of two or 0
    uint32_t *stack;       // (start, len) pairs still to resegment
    size_t nstack, capstack;
    // Short segments: symbol ids (-1: no normal piece), starts, lengths, frozen flags
    // and the piece each adjacent pair merges into (-1: none).
    int32_t sid[SMALL_MAX], spair[SMALL_MAX];
    uint32_t sstart[SMALL_MAX], slen[SMALL_MAX];
    bool sfrz[SMALL_MAX];
    lc_ids seg; // ids of the segment being encoded
    // The segment cache, valid for the model whose gen is cache_gen.
    uint64_t cache_gen;
    cache_slot *cache;
    size_t cache_n, cache_cap; // cache_cap: a power of two
    lc_buf cache_bytes;
    lc_ids cache_ids;
} scratch;

static void heap_push(scratch *w, pair p) {
    if (w->nheap == w->capheap) {
        w->capheap = w->capheap ? 2 * w->capheap : 256;
        w->heap = xrealloc(w->heap, w->capheap * sizeof *w->heap);
    }
    size_t i = w->nheap++;
    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (!pair_before(&p, &w->heap[up])) break;
        w->heap[i] = w->heap[up];
        i = up;
    }
    w->heap[i] = p;
}

static pair heap_pop(scratch *w) {
    pair top = w->heap[0], last = w->heap[--w->nheap];
    size_t i = 0, n = w->nheap;
    for (;;) {
        size_t l = 2 * i + 1, best = l;
        if (l >= n) break;
        if (l + 1 < n && pair_before(&w->heap[l + 1], &w->heap[l])) best = l + 1;
        if (!pair_before(&w->heap[best], &last)) break;
        w->heap[i] = w->heap[best];
        i = best;
    }
    if (n) w->heap[i] = last;
    return top;
}

static void rev_put(scratch *w, int32_t id, uint32_t left) {
    if (2 * (w->rev_n + 1) > w->rev_cap) {
        size_t cap = w->rev_cap ? 2 * w->rev_cap : 64;
        int32_t *k = xmalloc(cap * sizeof *k);
        uint32_t *v = xmalloc(cap * sizeof *v);
        for (size_t i = 0; i < cap; i++)
            k[i] = -1;
        for (size_t i = 0; i < w->rev_cap; i++) {
            if (w->rev_key[i] < 0) continue;
            size_t h = ((uint32_t)w->rev_key[i] * 2654435761u) & (cap - 1);
            while (k[h] >= 0)
                h = (h + 1) & (cap - 1);
            k[h] = w->rev_key[i];
            v[h] = w->rev_left[i];
        }
        free(w->rev_key);
        free(w->rev_left);
        w->rev_key = k;
        w->rev_left = v;
        w->rev_cap = cap;
    }
    size_t h = ((uint32_t)id * 2654435761u) & (w->rev_cap - 1);
    while (w->rev_key[h] >= 0 && w->rev_key[h] != id)
        h = (h + 1) & (w->rev_cap - 1);
    if (w->rev_key[h] < 0) w->rev_n++;
    w->rev_key[h] = id;
    w->rev_left[h] = left; // the latest proposal wins, as rev_merge[piece] = ... does
}

static bool rev_get(const scratch *w, int32_t id, uint32_t *left) {
    if (!w->rev_n) return false;
    size_t h = ((uint32_t)id * 2654435761u) & (w->rev_cap - 1);
    for (; w->rev_key[h] >= 0; h = (h + 1) & (w->rev_cap - 1))
        if (w->rev_key[h] == id) {
            *left = w->rev_left[h];
            return true;
        }
    return false;
}

/* Forgets every proposal: rev_merge lives for one Encode call. */
static void rev_clear(scratch *w) {
    if (!w->rev_n) return;
    for (size_t i = 0; i < w->rev_cap; i++)
        w->rev_key[i] = -1;
    w->rev_n = 0;
}

/* MaybeAddNewSymbolPair of bpe_model.cc. */
static void maybe_add_pair(const lc_spm *s, scratch *w, int32_t left, int32_t right) {
    if (left < 0 || right < 0 || w->sym[left].freeze || w->sym[right].freeze) return;
    const symbol *l = &w->sym[left], *r = &w->sym[right];
    uint32_t size = l->len + r->len;
    int32_t id = find_piece(s, w->norm.data + l->start, size, true);
    if (id < 0) return;
    heap_push(w, (pair){s->score[id], left, right, size});
    if (s->type[id] == LC_SPM_UNUSED) rev_put(w, id, l->len);
}

static void stack_push(scratch *w, uint32_t start, uint32_t len) {
    if (w->nstack + 2 > w->capstack) {
        w->capstack = w->capstack ? 2 * w->capstack : 64;
        w->stack = xrealloc(w->stack, w->capstack * sizeof *w->stack);
    }
    w->stack[w->nstack++] = start;
    w->stack[w->nstack++] = len;
}

/* Appends the ids of one final piece p[0..l) whose PieceToId is id, as
 * PopulateSentencePieceText does: an unknown becomes its bytes under byte fallback, else
 * a run of unknowns becomes one unk. */
static inline void emit_id(const lc_spm *s, int32_t id, const char *p, uint32_t l, bool *prev_unk,
                           lc_ids *out) {
    bool unk = id == s->unk_id;
    if (unk && s->byte_fallback) {
        for (uint32_t i = 0; i < l; i++)
            lc_ids_push(out, s->byte_id[(unsigned char)p[i]]);
    } else if (!(unk && *prev_unk)) {
        lc_ids_push(out, id);
    }
    *prev_unk = unk;
}

/* Emits the final ids of one piece [start, start + len) of the normalized text, as the
 * resegment step of bpe_model.cc then PopulateSentencePieceText do. */
static void emit_piece(const lc_spm *s, scratch *w, uint32_t start, uint32_t len, bool *prev_unk,
                       lc_ids *out) {
    stack_push(w, start, len);
    while (w->nstack) {
        uint32_t l = w->stack[--w->nstack], st = w->stack[--w->nstack];
        const char *p = w->norm.data + st;
        int32_t id = piece_to_id(s, p, l);
        uint32_t left;
        // An unused piece is split (recursively) where it was last proposed.
        if (s->type[id] == LC_SPM_UNUSED && rev_get(w, id, &left) && left > 0 && left < l) {
            stack_push(w, st + left, l - left); // the right part, after the left one
            stack_push(w, st, left);
            continue;
        }
        emit_id(s, id, p, l, prev_unk, out);
    }
}

/* bpe_model.cc's Encode on the normalized text [a, b): characters (user-defined symbols
 * whole and frozen) in a linked list, candidate pairs in a heap, best pair merged until
 * none is left; then the pieces are emitted. */
static void bpe_heap(const lc_spm *s, scratch *w, size_t a, size_t b, bool *prev_unk,
                     lc_ids *out) {
    const char *norm = w->norm.data;
    if (b - a > w->capsym) {
        free(w->sym);
        w->capsym = b - a;
        w->sym = xmalloc(w->capsym * sizeof *w->sym);
    }
    int32_t nsym = 0;
    for (size_t pos = a; pos < b;) {
        bool found;
        size_t k = prefix_match(s, norm + pos, b - pos, &found);
        int32_t i = nsym++;
        w->sym[i] = (symbol){i - 1, pos + k < b ? i + 1 : -1, (uint32_t)pos, (uint32_t)k, found};
        pos += k;
    }
    w->nheap = 0;
    for (int32_t i = 1; i < nsym; i++)
        maybe_add_pair(s, w, i - 1, i);
    while (w->nheap) {
        pair top = heap_pop(w);
        symbol *l = &w->sym[top.left], *r = &w->sym[top.right];
        if (l->len == 0 || r->len == 0 || l->len + r->len != top.size) continue; // stale
        l->len += r->len;
        l->next = r->next;
        if (r->next >= 0) w->sym[r->next].prev = top.left;
        r->len = 0;
        maybe_add_pair(s, w, l->prev, top.left);
        maybe_add_pair(s, w, top.left, l->next);
    }
    for (int32_t i = 0; i >= 0; i = w->sym[i].next)
        emit_piece(s, w, w->sym[i].start, w->sym[i].len, prev_unk, out);
}

/* The piece symbols i and i + 1 of a short segment merge into, or -1. */
static inline int32_t small_merge(const lc_spm *s, const scratch *w, int i) {
    if (w->sfrz[i] || w->sfrz[i + 1]) return -1;
    if (w->sid[i] >= 0 && w->sid[i + 1] >= 0) return pair_find(s, w->sid[i], w->sid[i + 1]);
    return find_piece(s, w->norm.data + w->sstart[i], w->slen[i] + w->slen[i + 1], true);
}

/* The same merges as bpe_heap for a segment [a, b) of at most SMALL_MAX characters
 * (fast path only: no unused pieces), found by scanning for the best pair (highest
 * score, leftmost on ties) with the merges looked up by id pairs. Returns false, having
 * done nothing, when the segment has more characters. */
static bool bpe_small(const lc_spm *s, scratch *w, size_t a, size_t b, bool *prev_unk,
                      lc_ids *out) {
    const char *norm = w->norm.data;
    int n = 0;
    for (size_t pos = a; pos < b; n++) {
        if (n == SMALL_MAX) return false;
        unsigned char c = (unsigned char)norm[pos];
        bool found = false;
        size_t k;
        int32_t id;
        if (c < 0x80 && !s->trie) {
            k = 1;
            id = s->ascii_id[c];
        } else {
            k = prefix_match(s, norm + pos, b - pos, &found);
            id = k == 1 && c < 0x80 ? s->ascii_id[c] : find_piece(s, norm + pos, k, true);
        }
        w->sid[n] = id;
        w->sstart[n] = (uint32_t)pos;
        w->slen[n] = (uint32_t)k;
        w->sfrz[n] = found;
        pos += k;
    }
    for (int i = 0; i + 1 < n; i++)
        w->spair[i] = small_merge(s, w, i);
    for (;;) {
        int best = -1;
        float bs = 0;
        for (int i = 0; i + 1 < n; i++) {
            int32_t m = w->spair[i];
            if (m >= 0 && (best < 0 || s->score[m] > bs)) {
                best = i;
                bs = s->score[m];
            }
        }
        if (best < 0) break;
        w->sid[best] = w->spair[best];
        w->slen[best] += w->slen[best + 1];
        size_t tail = (size_t)(n - best - 2);
        memmove(w->sid + best + 1, w->sid + best + 2, tail * sizeof *w->sid);
        memmove(w->sstart + best + 1, w->sstart + best + 2, tail * sizeof *w->sstart);
        memmove(w->slen + best + 1, w->slen + best + 2, tail * sizeof *w->slen);
        memmove(w->sfrz + best + 1, w->sfrz + best + 2, tail * sizeof *w->sfrz);
        memmove(w->spair + best + 1, w->spair + best + 2, tail * sizeof *w->spair);
        n--;
        if (best > 0) w->spair[best - 1] = small_merge(s, w, best - 1);
        if (best + 1 < n) w->spair[best] = small_merge(s, w, best);
    }
    for (int i = 0; i < n; i++) {
        const char *p = norm + w->sstart[i];
        int32_t id = w->sid[i] >= 0 ? s->canon[w->sid[i]] : piece_to_id(s, p, w->slen[i]);
        emit_id(s, id, p, w->slen[i], prev_unk, out);
    }
    return true;
}

static uint64_t seg_hash(const char *p, size_t n) {
    uint64_t h = 0x9e3779b97f4a7c15ull ^ n;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        h = (h ^ v) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
        p += 8;
        n -= 8;
    }
    uint64_t v = 0;
    memcpy(&v, p, n);
    h = (h ^ v) * 0xc4ceb9fe1a85ec53ull;
    return h ^ (h >> 29);
}

static void cache_reset(scratch *w, uint64_t gen) {
    if (!w->cache) {
        w->cache_cap = CACHE_MIN;
        w->cache = xmalloc(w->cache_cap * sizeof *w->cache);
    }
    memset(w->cache, 0, w->cache_cap * sizeof *w->cache);
    w->cache_n = 0;
    w->cache_gen = gen;
    lc_buf_clear(&w->cache_bytes);
    lc_ids_clear(&w->cache_ids);
}

/* Appends a segment's ids (encoded with no unknown before it) to out, dropping a leading
 * unk that continues a run of unknowns. */
static void append_seg(const lc_spm *s, const int32_t *ids, size_t n, bool *prev_unk,
                       lc_ids *out) {
    if (!n) return;
    size_t skip = *prev_unk && ids[0] == s->unk_id;
    lc_ids_append(out, ids + skip, n - skip);
    *prev_unk = ids[n - 1] == s->unk_id;
}

/* Encodes the segment [a, b) of the normalized text through the cache. */
static void encode_segment(const lc_spm *s, scratch *w, size_t a, size_t b, bool *prev_unk,
                           lc_ids *out) {
    const char *p = w->norm.data + a;
    size_t len = b - a, h = 0;
    uint64_t hv = 0;
    bool cacheable = len <= CACHE_MAX_SEG;
    size_t mask = w->cache_cap - 1;
    if (cacheable) {
        hv = seg_hash(p, len);
        for (h = (size_t)hv & mask; w->cache[h].len; h = (h + 1) & mask) {
            const cache_slot *c = &w->cache[h];
            if (c->hash == hv && c->len == len && memcmp(w->cache_bytes.data + c->off, p, len) == 0) {
                append_seg(s, w->cache_ids.data + c->ids, c->nids, prev_unk, out);
                return;
            }
        }
    }
    bool seg_unk = false;
    lc_ids_clear(&w->seg);
    if (!bpe_small(s, w, a, b, &seg_unk, &w->seg)) bpe_heap(s, w, a, b, &seg_unk, &w->seg);
    append_seg(s, w->seg.data, w->seg.len, prev_unk, out);
    if (!cacheable || w->seg.len > UINT16_MAX) return;
    if (2 * (w->cache_n + 1) > w->cache_cap && w->cache_cap < CACHE_MAX) { // grow
        cache_slot *old = w->cache;
        size_t oldcap = w->cache_cap;
        w->cache_cap *= 2;
        mask = w->cache_cap - 1;
        w->cache = xcalloc(w->cache_cap, sizeof *w->cache);
        for (size_t i = 0; i < oldcap; i++) {
            if (!old[i].len) continue;
            for (h = (size_t)old[i].hash & mask; w->cache[h].len; h = (h + 1) & mask)
                ;
            w->cache[h] = old[i];
        }
        free(old);
    } else if (2 * (w->cache_n + 1) > w->cache_cap ||
               w->cache_bytes.len + len > CACHE_MAX_BYTES) { // full: start again
        cache_reset(w, s->gen);
    }
    for (h = (size_t)hv & mask; w->cache[h].len; h = (h + 1) & mask)
        ;
    w->cache[h] = (cache_slot){hv, (uint32_t)w->cache_bytes.len, (uint32_t)w->cache_ids.len,
                               (uint16_t)len, (uint16_t)w->seg.len};
    w->cache_n++;
    lc_buf_append(&w->cache_bytes, p, len);
    lc_ids_append(&w->cache_ids, w->seg.data, w->seg.len);
}

/* The fast path on the normalized text in w->norm: segment by segment. */
static void encode_fast(const lc_spm *s, scratch *w, lc_ids *out) {
    if (w->cache_gen != s->gen || !w->cache) cache_reset(w, s->gen);
    const char *norm = w->norm.data;
    size_t n = w->norm.len, a = 0;
    bool prev_unk = false;
    for (size_t p = 1; p + 3 <= n;) {
        const char *q = memchr(norm + p, 0xE2, n - p - 2);
        if (!q) break;
        p = (size_t)(q - norm);
        if (memcmp(q, kSpace, 3) == 0) {
            if (p < 3 || memcmp(q - 3, kSpace, 3) != 0) {
                encode_segment(s, w, a, p, &prev_unk, out);
                a = p;
            }
            p += 3;
        } else {
            p++;
        }
    }
    encode_segment(s, w, a, n, &prev_unk, out);
}

static void scratch_free(scratch *w) {
    lc_buf_free(&w->norm);
    free(w->sym);
    free(w->heap);
    free(w->rev_key);
    free(w->rev_left);
    free(w->stack);
    lc_ids_free(&w->seg);
    free(w->cache);
    lc_buf_free(&w->cache_bytes);
    lc_ids_free(&w->cache_ids);
    free(w);
}

/* Frees what one long text made grow, keeping the rest for the next call. */
static void scratch_trim(scratch *w) {
    if (w->norm.cap > SCRATCH_KEEP) lc_buf_free(&w->norm);
    if (w->capsym * sizeof *w->sym > SCRATCH_KEEP) {
        free(w->sym);
        w->sym = NULL;
        w->capsym = 0;
    }
    if (w->capheap * sizeof *w->heap > SCRATCH_KEEP) {
        free(w->heap);
        w->heap = NULL;
        w->capheap = 0;
    }
    if (w->rev_cap * sizeof *w->rev_key > SCRATCH_KEEP) {
        free(w->rev_key);
        free(w->rev_left);
        w->rev_key = NULL;
        w->rev_left = NULL;
        w->rev_cap = w->rev_n = 0;
    }
    if (w->seg.cap * sizeof *w->seg.data > SCRATCH_KEEP) lc_ids_free(&w->seg);
}

/* Each thread's scratch lives in a tss slot whose destructor frees it at thread exit. */
static tss_t scratch_key;
static bool scratch_key_ok;
static once_flag scratch_once = ONCE_FLAG_INIT;

static void scratch_destroy(void *p) { scratch_free(p); }
static void scratch_key_init(void) {
    scratch_key_ok = tss_create(&scratch_key, scratch_destroy) == thrd_success;
}

/* This thread's scratch, or a new one that the caller frees when *owned. */
static scratch *scratch_get(bool *owned) {
    call_once(&scratch_once, scratch_key_init);
    *owned = false;
    scratch *w = scratch_key_ok ? tss_get(scratch_key) : NULL;
    if (w) return w;
    w = xcalloc(1, sizeof *w);
    if (scratch_key_ok && tss_set(scratch_key, w) == thrd_success) return w;
    *owned = true;
    return w;
}

static int encode(const lc_spm *s, const char *text, size_t len, lc_ids *out, bool fast) {
    if (len > SPM_MAX_TEXT)
        return lc_fail("%s: text of %zu bytes is too long to encode at once (limit %zu); split "
                       "it",
                       s->what, len, SPM_MAX_TEXT);
    bool owned;
    scratch *w = scratch_get(&owned);
    lc_buf_clear(&w->norm);
    normalize(s, text, len, &w->norm);
    if (w->norm.len) {
        if (fast && s->segmentable) {
            encode_fast(s, w, out);
        } else {
            bool prev_unk = false;
            rev_clear(w);
            bpe_heap(s, w, 0, w->norm.len, &prev_unk, out);
        }
    }
    if (owned)
        scratch_free(w);
    else
        scratch_trim(w);
    return 0;
}

int lc_spm_encode(const lc_spm *s, const char *text, size_t len, lc_ids *out) {
    return encode(s, text, len, out, true);
}

int lc_spm_encode_plain(const lc_spm *s, const char *text, size_t len, lc_ids *out) {
    return encode(s, text, len, out, false);
}

/* ---------------------------------------------------------------- decode ----- */

/* ProcessBytePieces of sentencepiece_processor.cc: bytes as UTF-8, U+FFFD per bad byte. */
static void flush_bytes(lc_buf *bytes, lc_buf *out) {
    const unsigned char *p = (const unsigned char *)bytes->data;
    size_t n = bytes->len;
    while (n) {
        size_t k = utf8_valid_len(p, n);
        if (!k) {
            lc_buf_append(out, kReplacement, 3);
            k = 1;
        } else {
            lc_buf_append(out, p, k);
        }
        p += k;
        n -= k;
    }
    lc_buf_clear(bytes);
}

int lc_spm_decode(const lc_spm *s, const int32_t *ids, size_t n, lc_buf *out) {
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= s->n)
            return lc_fail("%s: cannot decode id %d (position %zu): the vocabulary has ids 0..%d",
                           s->what, ids[i], i, s->n - 1);
    const size_t start = out->len;
    lc_buf bytes = {0};
    bool is_bos_ws = true, bos_ws_seen = false;
    for (size_t i = 0; i < n; i++) {
        int32_t id = s->canon[ids[i]];
        const char *p = s->arena + s->off[id];
        size_t pn = s->len[id];
        int type = s->type[id];
        if (type == LC_SPM_BYTE) {
            unsigned v = 0;
            for (int k = 3; k < 5; k++)
                v = v * 16 + (unsigned)(p[k] <= '9' ? p[k] - '0' : p[k] - 'A' + 10);
            lc_buf_putc(&bytes, (char)v);
            continue;
        }
        flush_bytes(&bytes, out);
        if (bos_ws_seen || out->len != start) is_bos_ws = false;
        bos_ws_seen = false;
        if (type == LC_SPM_CONTROL) continue; // invisible
        if (type == LC_SPM_UNKNOWN) {
            lc_buf_puts(out, s->unk_surface ? s->unk_surface : kDefaultUnkSurface);
            continue;
        }
        if (is_bos_ws && (s->add_dummy_prefix || s->remove_extra_ws)) {
            if (pn >= 3 && memcmp(p, kSpace, 3) == 0) {
                p += 3;
                pn -= 3;
                bos_ws_seen = true;
            }
            if (s->remove_extra_ws) bos_ws_seen = false; // strip every leading space
        }
        for (size_t k = 0; k < pn;) {
            if (pn - k >= 3 && memcmp(p + k, kSpace, 3) == 0) {
                lc_buf_putc(out, ' ');
                k += 3;
            } else {
                lc_buf_putc(out, p[k++]);
            }
        }
    }
    flush_bytes(&bytes, out);
    lc_buf_free(&bytes);
    return 0;
}

/* ------------------------------------------------------------- accessors ----- */

int32_t lc_spm_size(const lc_spm *s) { return s->n; }

const char *lc_spm_piece(const lc_spm *s, int32_t id) {
    return id >= 0 && id < s->n ? s->arena + s->off[id] : NULL;
}

float lc_spm_score(const lc_spm *s, int32_t id) {
    return id >= 0 && id < s->n ? s->score[id] : 0.0f;
}

int lc_spm_type(const lc_spm *s, int32_t id) { return id >= 0 && id < s->n ? s->type[id] : 0; }

int32_t lc_spm_piece_id(const lc_spm *s, const char *piece) {
    size_t n = strlen(piece);
    int32_t id = find_piece(s, piece, n, false);
    return id >= 0 ? id : find_piece(s, piece, n, true);
}

/* bos_id() etc. of sentencepiece_processor.cc: PieceToId(piece) when of the right type. */
static int32_t special(const lc_spm *s, const char *piece, const char *dflt, int type) {
    const char *p = piece && *piece ? piece : dflt;
    int32_t id = piece_to_id(s, p, strlen(p));
    return s->type[id] == type ? id : -1;
}

int32_t lc_spm_bos(const lc_spm *s) { return special(s, s->bos_piece, "<s>", LC_SPM_CONTROL); }
int32_t lc_spm_eos(const lc_spm *s) { return special(s, s->eos_piece, "</s>", LC_SPM_CONTROL); }
int32_t lc_spm_pad(const lc_spm *s) { return special(s, s->pad_piece, "<pad>", LC_SPM_CONTROL); }
int32_t lc_spm_unk(const lc_spm *s) { return special(s, s->unk_piece, "<unk>", LC_SPM_UNKNOWN); }

bool lc_spm_fast_encode(const lc_spm *s) { return s->segmentable; }
int lc_spm_model_type(const lc_spm *s) { return s->model_type; }
bool lc_spm_byte_fallback(const lc_spm *s) { return s->byte_fallback; }
bool lc_spm_add_dummy_prefix(const lc_spm *s) { return s->add_dummy_prefix; }
bool lc_spm_remove_extra_whitespaces(const lc_spm *s) { return s->remove_extra_ws; }
const char *lc_spm_normalizer_name(const lc_spm *s) { return s->norm_name ? s->norm_name : ""; }
const char *lc_spm_describe(const lc_spm *s) { return s->desc; }
