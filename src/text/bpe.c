/*
 * bpe.c — the BPE model of tokenizer.json. See bpe.h.
 *
 * Owns the vocabulary (one string arena + an open-addressing hash from string to id),
 * the id -> string table and the merge table (open addressing, key = the two ids).
 * Must not: keep per-call state in lc_bpe (it is shared between threads).
 */
#include "text/bpe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/json.h"
#include "core/mem.h"
#include "text/utf8.h"

typedef struct {
    uint64_t key; // (a << 32) | b, UINT64_MAX when empty
    uint32_t rank;
    int32_t id;
} merge_slot;

struct lc_bpe {
    char *arena;          // every vocab string, NUL-terminated
    size_t *str_off;      // (n_entries) offset in arena
    uint32_t *str_len;    // (n_entries)
    int32_t *entry_id;    // (n_entries)
    int32_t *table;       // (table_cap) entry index or -1
    size_t n_entries, table_cap;
    const char **piece;   // (id_end) string of each id, NULL for holes
    int32_t id_end;
    merge_slot *merges;   // (merge_cap)
    size_t merge_cap;
    int32_t byte_id[256]; // <0xXX> pieces, -1 when absent
    int32_t ascii_id[128];
    bool byte_fallback, fuse_unk, ignore_merges;
    char *unk;            // unk_token or NULL
    char *prefix, *suffix; // continuing_subword_prefix, end_of_word_suffix or NULL
};

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

static uint64_t hash_u64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

int32_t lc_bpe_id(const lc_bpe *b, const char *s, size_t n) {
    size_t mask = b->table_cap - 1;
    for (size_t i = hash_bytes(s, n) & mask;; i = (i + 1) & mask) {
        int32_t e = b->table[i];
        if (e < 0) return -1;
        if (b->str_len[e] == n && !memcmp(b->arena + b->str_off[e], s, n)) return b->entry_id[e];
    }
}

static const merge_slot *merge_find(const lc_bpe *b, int32_t x, int32_t y) {
    uint64_t key = ((uint64_t)(uint32_t)x << 32) | (uint32_t)y;
    size_t mask = b->merge_cap - 1;
    for (size_t i = hash_u64(key) & mask;; i = (i + 1) & mask) {
        if (b->merges[i].key == key) return &b->merges[i];
        if (b->merges[i].key == UINT64_MAX) return NULL;
    }
}

/* Inserts or overwrites (a later duplicate merge wins, as in a Rust HashMap collect). */
static void merge_put(lc_bpe *b, int32_t x, int32_t y, uint32_t rank, int32_t id) {
    uint64_t key = ((uint64_t)(uint32_t)x << 32) | (uint32_t)y;
    size_t mask = b->merge_cap - 1;
    size_t i = hash_u64(key) & mask;
    while (b->merges[i].key != UINT64_MAX && b->merges[i].key != key) i = (i + 1) & mask;
    b->merges[i].key = key, b->merges[i].rank = rank, b->merges[i].id = id;
}

void lc_bpe_free(lc_bpe *b) {
    if (!b) return;
    free(b->arena), free(b->str_off), free(b->str_len), free(b->entry_id), free(b->table);
    free(b->piece), free(b->merges), free(b->unk), free(b->prefix), free(b->suffix);
    free(b);
}

static int opt_str(const cJSON *m, const char *key, const char *what, char **out) {
    const char *s = NULL;
    int rc = lc_json_str(m, key, &s, what);
    if (rc < 0) return -1;
    if (rc == 1) *out = xstrdup(s);
    return 0;
}

/* Parses merge i (either "a b" or ["a", "b"]) into the two strings (pointers into tmp). */
static int merge_parts(const cJSON *it, int i, const char *what, char **tmp, const char **a,
                       const char **b) {
    if (cJSON_IsString(it)) {
        const char *s = it->valuestring;
        const char *sp = strchr(s, ' ');
        if (!sp || strchr(sp + 1, ' '))
            return lc_fail("%s: model.merges[%d] \"%s\" must be two tokens separated by one "
                           "space",
                           what, i, s);
        free(*tmp);
        *tmp = xstrdup(s);
        (*tmp)[sp - s] = '\0';
        *a = *tmp, *b = *tmp + (sp - s) + 1;
        return 0;
    }
    if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 &&
        cJSON_IsString(cJSON_GetArrayItem(it, 0)) && cJSON_IsString(cJSON_GetArrayItem(it, 1))) {
        *a = cJSON_GetArrayItem(it, 0)->valuestring;
        *b = cJSON_GetArrayItem(it, 1)->valuestring;
        return 0;
    }
    return lc_fail("%s: model.merges[%d] must be a string \"a b\" or an array of two strings, "
                   "found %s",
                   what, i, lc_json_type_name(it));
}

int lc_bpe_build(const cJSON *m, const char *what, lc_bpe **out) {
    *out = NULL;
    if (!cJSON_IsObject(m))
        return lc_fail("%s: \"model\" must be an object, found %s", what, lc_json_type_name(m));
    const char *type = NULL;
    char wm[512];
    snprintf(wm, sizeof wm, "%s: model", what);
    if (lc_json_str(m, "type", &type, wm) < 0) return -1;
    if (type && strcmp(type, "BPE"))
        return lc_fail("%s: model.type \"%s\" is not supported by lorac (only BPE)", what, type);
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(m, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(m, "merges");
    if (!cJSON_IsObject(vocab))
        return lc_fail("%s: model.vocab must be an object of token -> id, found %s", what,
                       lc_json_type_name(vocab));
    if (merges && !cJSON_IsNull(merges) && !cJSON_IsArray(merges))
        return lc_fail("%s: model.merges must be an array, found %s", what,
                       lc_json_type_name(merges));
    const cJSON *drop = cJSON_GetObjectItemCaseSensitive(m, "dropout");
    if (drop && !cJSON_IsNull(drop) && !(cJSON_IsNumber(drop) && drop->valuedouble == 0.0))
        return lc_fail("%s: model.dropout must be null or 0 (BPE dropout is for training; "
                       "lorac encodes deterministically)",
                       what);

    lc_bpe *b = xcalloc(1, sizeof *b);
    b->fuse_unk = false;
    if (lc_json_bool(m, "byte_fallback", &b->byte_fallback, wm) < 0 ||
        lc_json_bool(m, "fuse_unk", &b->fuse_unk, wm) < 0 ||
        lc_json_bool(m, "ignore_merges", &b->ignore_merges, wm) < 0 ||
        opt_str(m, "unk_token", wm, &b->unk) ||
        opt_str(m, "continuing_subword_prefix", wm, &b->prefix) ||
        opt_str(m, "end_of_word_suffix", wm, &b->suffix))
        goto fail;

    // vocabulary
    size_t n = (size_t)cJSON_GetArraySize(vocab), bytes = 0;
    for (const cJSON *e = vocab->child; e; e = e->next) bytes += strlen(e->string) + 1;
    b->arena = xmalloc(bytes + 1);
    b->str_off = xmalloc((n + 1) * sizeof *b->str_off);
    b->str_len = xmalloc((n + 1) * sizeof *b->str_len);
    b->entry_id = xmalloc((n + 1) * sizeof *b->entry_id);
    b->table_cap = 16;
    while (b->table_cap < 2 * n) b->table_cap *= 2;
    b->table = xmalloc(b->table_cap * sizeof *b->table);
    memset(b->table, 0xFF, b->table_cap * sizeof *b->table);
    size_t pos = 0;
    int32_t max_id = -1;
    for (const cJSON *e = vocab->child; e; e = e->next) {
        if (!cJSON_IsNumber(e) || e->valuedouble != (double)(int64_t)e->valuedouble ||
            e->valuedouble < 0 || e->valuedouble >= LC_MAX_TOKEN_ID) {
            lc_fail("%s: model.vocab[\"%s\"] must be an id (an integer from 0 to %d), "
                    "found %s",
                    what, e->string, LC_MAX_TOKEN_ID - 1,
                    cJSON_IsNumber(e) ? "an out-of-range number" : lc_json_type_name(e));
            goto fail;
        }
        size_t len = strlen(e->string), k = b->n_entries;
        if (len > UINT32_MAX) goto fail;
        if (lc_bpe_id(b, e->string, len) >= 0) {
            lc_fail("%s: model.vocab: token \"%s\" appears twice", what, e->string);
            goto fail;
        }
        memcpy(b->arena + pos, e->string, len + 1);
        b->str_off[k] = pos, b->str_len[k] = (uint32_t)len;
        b->entry_id[k] = (int32_t)e->valuedouble;
        pos += len + 1;
        size_t mask = b->table_cap - 1, i = hash_bytes(e->string, len) & mask;
        while (b->table[i] >= 0) i = (i + 1) & mask;
        b->table[i] = (int32_t)k;
        b->n_entries++;
        if (b->entry_id[k] > max_id) max_id = b->entry_id[k];
    }
    b->id_end = max_id + 1;
    b->piece = xcalloc((size_t)b->id_end + 1, sizeof *b->piece);
    for (size_t k = 0; k < b->n_entries; k++) {
        int32_t id = b->entry_id[k];
        if (b->piece[id]) {
            lc_fail("%s: model.vocab: id %d is given to both \"%s\" and \"%s\"", what, id,
                    b->piece[id], b->arena + b->str_off[k]);
            goto fail;
        }
        b->piece[id] = b->arena + b->str_off[k];
    }
    for (int i = 0; i < 256; i++) {
        char code[8];
        snprintf(code, sizeof code, "<0x%02X>", i);
        b->byte_id[i] = lc_bpe_id(b, code, 6);
    }
    for (int i = 0; i < 128; i++) {
        char c = (char)i;
        b->ascii_id[i] = lc_bpe_id(b, &c, 1);
    }

    // merges
    int nm = merges ? cJSON_GetArraySize(merges) : 0;
    b->merge_cap = 16;
    while (b->merge_cap < 2 * (size_t)nm) b->merge_cap *= 2;
    b->merges = xmalloc(b->merge_cap * sizeof *b->merges);
    for (size_t i = 0; i < b->merge_cap; i++) b->merges[i].key = UINT64_MAX;
    size_t plen = b->prefix ? strlen(b->prefix) : 0;
    char *tmp = NULL;
    lc_buf cat = {0};
    int i = 0;
    for (const cJSON *it = merges ? merges->child : NULL; it; it = it->next, i++) {
        const char *x = NULL, *y = NULL;
        if (merge_parts(it, i, what, &tmp, &x, &y)) goto fail_m;
        int32_t ix = lc_bpe_id(b, x, strlen(x)), iy = lc_bpe_id(b, y, strlen(y));
        if (ix < 0 || iy < 0) {
            lc_fail("%s: model.merges[%d]: token \"%s\" is not in model.vocab", what, i,
                    ix < 0 ? x : y);
            goto fail_m;
        }
        lc_buf_clear(&cat);
        lc_buf_puts(&cat, x);
        size_t ylen = strlen(y);
        if (ylen < plen) {
            lc_fail("%s: model.merges[%d]: \"%s\" is shorter than continuing_subword_prefix",
                    what, i, y);
            goto fail_m;
        }
        lc_buf_append(&cat, y + plen, ylen - plen); // the prefix of the right part goes
        int32_t iz = lc_bpe_id(b, cat.data, cat.len);
        if (iz < 0) {
            lc_fail("%s: model.merges[%d]: the merged token \"%s\" is not in model.vocab", what,
                    i, cat.data);
            goto fail_m;
        }
        merge_put(b, ix, iy, (uint32_t)i, iz);
    }
    free(tmp);
    lc_buf_free(&cat);
    *out = b;
    return 0;
fail_m:
    free(tmp);
    lc_buf_free(&cat);
fail:
    lc_bpe_free(b);
    return -1;
}

const char *lc_bpe_piece(const lc_bpe *b, int32_t id) {
    return id >= 0 && id < b->id_end ? b->piece[id] : NULL;
}
int32_t lc_bpe_count(const lc_bpe *b) { return (int32_t)b->n_entries; }
int32_t lc_bpe_id_end(const lc_bpe *b) { return b->id_end; }
bool lc_bpe_byte_fallback(const lc_bpe *b) { return b->byte_fallback; }

/* ------------------------------------------------------------ encoding */

typedef struct {
    uint32_t rank, pos;
    int32_t id;
} hentry;

static bool h_less(const hentry *x, const hentry *y) {
    return x->rank != y->rank ? x->rank < y->rank : x->pos < y->pos;
}

static void h_push(lc_bpe_scratch *s, size_t *n, hentry e) {
    if (*n == s->heap_cap) {
        s->heap_cap = s->heap_cap ? s->heap_cap * 2 : 64;
        s->heap = xrealloc(s->heap, s->heap_cap * sizeof(hentry));
    }
    hentry *h = s->heap;
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!h_less(&e, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = e;
}

static hentry h_pop(lc_bpe_scratch *s, size_t *n) {
    hentry *h = s->heap, top = h[0], last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && h_less(&h[c + 1], &h[c])) c++;
        if (!h_less(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = last;
    return top;
}

static void sym_add(lc_bpe_scratch *s, size_t *n, int32_t id, uint32_t len) {
    if (*n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 256;
        s->id = xrealloc(s->id, s->cap * sizeof *s->id);
        s->prev = xrealloc(s->prev, s->cap * sizeof *s->prev);
        s->next = xrealloc(s->next, s->cap * sizeof *s->next);
        s->len = xrealloc(s->len, s->cap * sizeof *s->len);
    }
    size_t k = (*n)++;
    s->id[k] = id, s->len[k] = len;
    s->prev[k] = (int32_t)k - 1;
    s->next[k] = -1;
    if (k) s->next[k - 1] = (int32_t)k;
}

void lc_bpe_scratch_free(lc_bpe_scratch *s) {
    free(s->id), free(s->prev), free(s->next), free(s->len), free(s->heap);
    memset(s, 0, sizeof *s);
}

int lc_bpe_encode_word(const lc_bpe *b, const char *w, size_t n, lc_bpe_scratch *s,
                       lc_ids *out) {
    if (n == 0) return 0;
    if (b->ignore_merges) {
        int32_t id = lc_bpe_id(b, w, n);
        if (id >= 0) {
            lc_ids_push(out, id);
            return 0;
        }
    }
    // split into characters (model.rs merge_word)
    size_t ns = 0;
    int32_t unk_id = -1;
    uint32_t unk_len = 0;
    bool unk_pending = false;
    lc_buf tmp = {0};
    for (size_t i = 0; i < n;) {
        size_t l = lc_utf8_len((unsigned char)w[i]);
        if (i + l > n) l = n - i;
        bool first = i == 0, last = i + l == n;
        int32_t id;
        const char *str = w + i;
        size_t slen = l;
        if ((!first && b->prefix) || (last && b->suffix)) {
            lc_buf_clear(&tmp);
            if (!first && b->prefix) lc_buf_puts(&tmp, b->prefix);
            lc_buf_append(&tmp, w + i, l);
            if (last && b->suffix) lc_buf_puts(&tmp, b->suffix);
            str = tmp.data, slen = tmp.len;
        }
        if (slen == 1 && (unsigned char)str[0] < 128) id = b->ascii_id[(unsigned char)str[0]];
        else id = lc_bpe_id(b, str, slen);
        if (id >= 0) {
            if (unk_pending) {
                sym_add(s, &ns, unk_id, unk_len);
                unk_pending = false;
            }
            sym_add(s, &ns, id, (uint32_t)l);
        } else {
            bool done = false;
            if (b->byte_fallback) {
                bool all = true;
                for (size_t k = 0; k < slen; k++) all = all && b->byte_id[(unsigned char)str[k]] >= 0;
                if (all) {
                    for (size_t k = 0; k < slen; k++)
                        sym_add(s, &ns, b->byte_id[(unsigned char)str[k]], 1);
                    done = true;
                }
            }
            if (!done) {
                int32_t u = b->unk ? lc_bpe_id(b, b->unk, strlen(b->unk)) : -1;
                if (u < 0) {
                    lc_buf_free(&tmp);
                    if (!b->unk)
                        return lc_fail("the text has a character (\"%.*s\") that has no token, "
                                       "and the model has no unk_token nor byte fallback",
                                       (int)l, w + i);
                    return lc_fail("the model's unk_token \"%s\" is not in its vocabulary",
                                   b->unk);
                }
                if (unk_pending && b->fuse_unk) {
                    unk_len += (uint32_t)l;
                } else {
                    if (unk_pending) sym_add(s, &ns, unk_id, unk_len);
                    unk_id = u, unk_len = (uint32_t)l, unk_pending = true;
                }
            }
        }
        i += l;
    }
    lc_buf_free(&tmp);
    if (unk_pending) sym_add(s, &ns, unk_id, unk_len);

    // merge by rank, lowest first, leftmost on ties (word.rs merge_all)
    size_t nh = 0;
    for (size_t k = 0; k + 1 < ns; k++) {
        const merge_slot *m = merge_find(b, s->id[k], s->id[k + 1]);
        if (m) h_push(s, &nh, (hentry){m->rank, (uint32_t)k, m->id});
    }
    while (nh) {
        hentry top = h_pop(s, &nh);
        size_t p = top.pos;
        if (s->len[p] == 0 || s->next[p] < 0) continue;
        size_t q = (size_t)s->next[p];
        const merge_slot *m = merge_find(b, s->id[p], s->id[q]);
        if (!m || m->id != top.id) continue;
        s->id[p] = top.id;
        s->len[p] += s->len[q];
        s->next[p] = s->next[q];
        s->len[q] = 0;
        if (s->next[q] >= 0) s->prev[s->next[q]] = (int32_t)p;
        if (s->prev[p] >= 0) {
            size_t r = (size_t)s->prev[p];
            const merge_slot *mm = merge_find(b, s->id[r], s->id[p]);
            if (mm) h_push(s, &nh, (hentry){mm->rank, (uint32_t)r, mm->id});
        }
        if (s->next[p] >= 0) {
            const merge_slot *mm = merge_find(b, s->id[p], s->id[s->next[p]]);
            if (mm) h_push(s, &nh, (hentry){mm->rank, (uint32_t)p, mm->id});
        }
    }
    for (size_t k = 0; k < ns; k++)
        if (s->len[k]) lc_ids_push(out, s->id[k]);
    return 0;
}
