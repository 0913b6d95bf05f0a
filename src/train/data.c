/*
 * data.c — JSONL data sets tokenized for training, and mlx-lm-style batches. See data.h.
 */
#include "train/data.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/file.h"
#include "core/json.h"
#include "core/mem.h"
#include "core/rng.h"
#include "core/vec.h"
#include "text/chat.h"

#define DATA_MAX_BYTES ((size_t)4 << 30)
/* The longest line (one example) read; longer ones are refused without reading them
 * to their end, so a file with a line of gigabytes costs neither time nor memory. */
#define DATA_MAX_LINE ((size_t)64 << 20)
#define PAD_TO 32

const char *lc_data_form_name(lc_data_form f) {
    return f == LC_DATA_TEXT ? "text" : f == LC_DATA_COMPLETION ? "prompt/completion" : "messages";
}

size_t lc_dataset_len(const lc_dataset *d, size_t i) { return d->start[i + 1] - d->start[i]; }

void lc_dataset_free(lc_dataset *d) {
    free(d->ids);
    free(d->start);
    free(d->offset);
    memset(d, 0, sizeof *d);
}

/* ---- one line ---- */

typedef struct {
    const lc_tokenizer *t;
    const lc_data_options *o;
    lc_chat_family family;
    bool have_family;
    int32_t bos, eos;
} ctx;

static int get_family(ctx *c, const char *where) {
    if (c->have_family) return 0;
    if (c->o->chat_family >= 0) {
        c->family = (lc_chat_family)c->o->chat_family;
    } else {
        const char *tpl = lc_tokenizer_chat_template(c->t);
        if (!tpl)
            return lc_fail("%s: chat data needs a chat template, but the tokenizer has none "
                           "(tokenizer_config.json has no chat_template); pass --chat-template "
                           "NAME or use the text form",
                           where);
        if (lc_chat_detect(tpl, &c->family) != 0) return lc_fail_prefix("%s", where);
    }
    c->have_family = true;
    return 0;
}

static int text_ids(ctx *c, const char *text, lc_ids *ids) {
    if (lc_tokenizer_encode(c->t, text, strlen(text), LC_TOK_ADD_SPECIAL, ids) != 0) return -1;
    // never a double BOS: a text that starts with <s> already has its own
    if (c->bos >= 0 && ids->len >= 2 && ids->data[0] == c->bos && ids->data[1] == c->bos) {
        memmove(ids->data, ids->data + 1, (ids->len - 1) * sizeof *ids->data);
        ids->len--;
    }
    return 0;
}

/* Renders msgs[0..n) to ids; *offset = the length of the rendering of msgs[0..n-1) with a
 * generation prompt when the last message is the assistant's (mlx-lm's mask offset). */
static int chat_ids(ctx *c, const lc_chat_msg *msgs, size_t n, lc_ids *ids, size_t *offset,
                    const char *where) {
    if (get_family(c, where) != 0) return -1;
    if (lc_chat_render_ids(c->t, c->family, msgs, n, false, ids) != 0) return lc_fail_prefix("%s", where);
    *offset = 0;
    if (n > 1) {
        lc_ids head = {0};
        bool gen = !strcmp(msgs[n - 1].role, "assistant");
        int rc = lc_chat_render_ids(c->t, c->family, msgs, n - 1, gen, &head);
        *offset = head.len;
        lc_ids_free(&head);
        if (rc != 0) return lc_fail_prefix("%s", where);
        if (*offset > ids->len) *offset = ids->len;
    }
    return 0;
}

static int need_string(const cJSON *obj, const char *key, const char **out, const char *where) {
    int rc = lc_json_str(obj, key, out, where);
    if (rc == 0) return lc_fail("%s: missing \"%s\"", where, key);
    return rc < 0 ? -1 : 0;
}

static int line_form(const cJSON *j, lc_data_form *f, const char *where) {
    if (!cJSON_IsObject(j)) return lc_fail("%s: expected a JSON object per line", where);
    if (cJSON_GetObjectItemCaseSensitive(j, "text")) *f = LC_DATA_TEXT;
    else if (cJSON_GetObjectItemCaseSensitive(j, "messages")) *f = LC_DATA_CHAT;
    else if (cJSON_GetObjectItemCaseSensitive(j, "prompt") ||
             cJSON_GetObjectItemCaseSensitive(j, "completion"))
        *f = LC_DATA_COMPLETION;
    else
        return lc_fail("%s: expected a \"text\", a \"prompt\" and \"completion\", or a "
                       "\"messages\" field (mlx-lm's data forms)",
                       where);
    return 0;
}

/* The messages of a chat line (*m: a new array of n messages borrowing j's strings).
 * Returns 0 or -1. */
static int parse_messages(const cJSON *j, lc_chat_msg **m, size_t *n, const char *where) {
    *m = NULL;
    *n = 0;
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(j, "tools");
    if (tools && !cJSON_IsNull(tools))
        return lc_fail("%s: \"tools\" is not supported yet (lorac's chat templates render no "
                       "tool definitions or calls); drop it or the line",
                       where);
    const cJSON *arr;
    int rc = lc_json_arr(j, "messages", &arr, where);
    if (rc <= 0) return rc < 0 ? -1 : lc_fail("%s: \"messages\" is null", where);
    size_t cnt = (size_t)cJSON_GetArraySize(arr), i = 0;
    if (cnt == 0) return lc_fail("%s: \"messages\" is empty", where);
    lc_chat_msg *msgs = xcalloc(cnt, sizeof *msgs);
    const cJSON *e;
    rc = 0;
    cJSON_ArrayForEach(e, arr) {
        char w[700];
        snprintf(w, sizeof w, "%s: messages[%zu]", where, i);
        if (!cJSON_IsObject(e)) rc = lc_fail("%s: expected {\"role\", \"content\"}", w);
        else if (need_string(e, "role", &msgs[i].role, w) || need_string(e, "content", &msgs[i].content, w))
            rc = -1;
        if (rc) break;
        i++;
    }
    if (rc != 0) {
        free(msgs);
        return -1;
    }
    *m = msgs;
    *n = cnt;
    return 0;
}

/* Tokenizes one parsed line into ids; *offset is the first trained token, *tail the start
 * of the part that must hold the EOS (the last assistant turn, or 0). */
static int line_ids(ctx *c, const cJSON *j, lc_data_form form, lc_ids *ids, size_t *offset,
                    const char *where) {
    size_t head = 0;
    if (form == LC_DATA_TEXT) {
        const char *text;
        if (need_string(j, "text", &text, where) != 0) return -1;
        if (text_ids(c, text, ids) != 0) return lc_fail_prefix("%s", where);
    } else if (form == LC_DATA_COMPLETION) {
        lc_chat_msg m[2] = {{"user", NULL}, {"assistant", NULL}};
        if (need_string(j, "prompt", &m[0].content, where) != 0 ||
            need_string(j, "completion", &m[1].content, where) != 0)
            return -1;
        if (chat_ids(c, m, 2, ids, &head, where) != 0) return -1;
    } else {
        lc_chat_msg *m;
        size_t n;
        if (parse_messages(j, &m, &n, where) != 0) return -1;
        int rc = chat_ids(c, m, n, ids, &head, where);
        free(m);
        if (rc != 0) return -1;
    }
    *offset = c->o->mask_prompt ? head : 0;
    // EOS always trained: it must close the text, or appear in the last turn
    bool has_eos = false;
    if (c->eos >= 0) {
        if (form == LC_DATA_TEXT) has_eos = ids->len && ids->data[ids->len - 1] == c->eos;
        else
            for (size_t k = head; k < ids->len && !has_eos; k++) has_eos = ids->data[k] == c->eos;
        if (!has_eos) lc_ids_push(ids, c->eos);
    }
    return 0;
}

int lc_dataset_parse(lc_dataset *d, const char *text, size_t len, const char *what,
                     const lc_tokenizer *t, const lc_data_options *o) {
    memset(d, 0, sizeof *d);
    d->max_seq_length = o->max_seq_length;
    ctx c = {t, o, LC_CHAT_MISTRAL, false, lc_tokenizer_bos(t), lc_tokenizer_eos(t)};
    lc_ids all = {0}, line = {0};
    size_t cap = 0, lineno = 0, first_line = 0;
    int rc = 0;
    const char *p = text, *end = text + len;
    while (p < end && rc == 0) {
        size_t left = (size_t)(end - p);
        const char *nl = memchr(p, '\n', left < DATA_MAX_LINE + 1 ? left : DATA_MAX_LINE + 1);
        const char *le = nl ? nl : end;
        lineno++;
        if ((size_t)(le - p) > DATA_MAX_LINE) {
            rc = lc_fail("%s:%zu: the line is longer than %zu MiB; one example per line, each "
                         "shorter than that",
                         what, lineno, DATA_MAX_LINE >> 20);
            break;
        }
        const char *nul = memchr(p, '\0', (size_t)(le - p));
        if (nul) {
            rc = lc_fail("%s:%zu:%zu: a NUL byte (JSON text holds none; is this a binary file?)",
                         what, lineno, (size_t)(nul - p) + 1);
            break;
        }
        const char *q = p;
        while (q < le && (*q == ' ' || *q == '\t' || *q == '\r')) q++;
        if (q < le) {
            char where[600];
            snprintf(where, sizeof where, "%s:%zu", what, lineno);
            cJSON *j;
            lc_data_form form = LC_DATA_TEXT;
            size_t offset = 0;
            rc = lc_json_parse(p, (size_t)(le - p), where, &j);
            if (rc == 0) {
                rc = line_form(j, &form, where);
                if (rc == 0 && d->n == 0) d->form = form, first_line = lineno;
                if (rc == 0 && form != d->form)
                    rc = lc_fail("%s: this line is in the %s form but line %zu is in the %s form; "
                                 "a file holds one form",
                                 where, lc_data_form_name(form), first_line,
                                 lc_data_form_name(d->form));
                lc_ids_clear(&line);
                if (rc == 0) rc = line_ids(&c, j, form, &line, &offset, where);
                cJSON_Delete(j);
            }
            if (rc == 0) {
                if (d->n + 1 >= cap) {
                    cap = cap ? cap * 2 : 256;
                    d->start = xrealloc(d->start, (cap + 1) * sizeof *d->start);
                    d->offset = xrealloc(d->offset, cap * sizeof *d->offset);
                }
                d->start[d->n] = all.len;
                d->offset[d->n] = offset;
                lc_ids_append(&all, line.data, line.len);
                if ((int64_t)line.len > o->max_seq_length) d->n_truncated++;
                d->n++;
            }
        }
        p = nl ? nl + 1 : end;
    }
    lc_ids_free(&line);
    if (rc == 0 && d->n == 0) rc = lc_fail("%s: holds no examples", what);
    if (rc != 0) {
        lc_ids_free(&all);
        lc_dataset_free(d);
        return -1;
    }
    d->start[d->n] = all.len;
    d->ids = all.data ? all.data : xmalloc(sizeof *d->ids);
    return 0;
}

int lc_dataset_load(lc_dataset *d, const char *path, const lc_tokenizer *t, const lc_data_options *o) {
    memset(d, 0, sizeof *d);
    /* mapped, not read: only the lines parsed are paged in */
    lc_map m;
    if (lc_map_file(path, &m) != 0) return -1;
    if (m.len > DATA_MAX_BYTES) {
        size_t n = m.len;
        lc_unmap(&m);
        return lc_fail("%s: file is %zu bytes, more than the %zu GiB this reader accepts; split it",
                       path, n, DATA_MAX_BYTES >> 30);
    }
    int rc = lc_dataset_parse(d, m.data ? (const char *)m.data : "", m.len, path, t, o);
    lc_unmap(&m);
    return rc;
}

static int cmp_size(const void *x, const void *y) {
    size_t a = *(const size_t *)x, b = *(const size_t *)y;
    return a < b ? -1 : a > b;
}

void lc_dataset_stats(const lc_dataset *d, lc_data_stats *s) {
    memset(s, 0, sizeof *s);
    s->count = d->n;
    s->n_truncated = d->n_truncated;
    if (!d->n) return;
    size_t *len = xmalloc(d->n * sizeof *len);
    for (size_t i = 0; i < d->n; i++) len[i] = lc_dataset_len(d, i), s->tokens += len[i];
    qsort(len, d->n, sizeof *len, cmp_size);
    s->min = len[0];
    s->median = len[(d->n - 1) / 2];
    s->max = len[d->n - 1];
    free(len);
}

/* ---- batches ---- */

static const lc_dataset *g_sort_d; // qsort has no context argument in C11

static int cmp_by_len(const void *x, const void *y) {
    size_t a = *(const size_t *)x, b = *(const size_t *)y;
    size_t la = lc_dataset_len(g_sort_d, a), lb = lc_dataset_len(g_sort_d, b);
    if (la != lb) return la < lb ? -1 : 1;
    return a < b ? -1 : a > b; // stable, as Python's sorted
}

/* This epoch's batch order: a Fisher-Yates shuffle seeded by (seed, epoch) alone, so that
 * any position can be rebuilt from its numbers. */
static void make_order(lc_batcher *b) {
    for (size_t i = 0; i < b->n_batches; i++) b->order[i] = i;
    if (!b->shuffle) return;
    uint64_t s = b->pos.seed ^ (0xd1b54a32d192ed03ull * (uint64_t)(b->pos.epoch + 1));
    for (size_t i = b->n_batches; i > 1; i--) {
        uint64_t bound = i, limit = UINT64_MAX - UINT64_MAX % bound, r;
        do r = lc_splitmix64(&s);
        while (r >= limit); // no modulo bias
        size_t j = (size_t)(r % bound), tmp = b->order[i - 1];
        b->order[i - 1] = b->order[j];
        b->order[j] = tmp;
    }
}

size_t lc_dataset_sorted(const lc_dataset *d, size_t *idx) {
    for (size_t i = 0; i < d->n; i++) idx[i] = i;
    g_sort_d = d;
    qsort(idx, d->n, sizeof *idx, cmp_by_len);
    return d->n;
}

int lc_batcher_init(lc_batcher *b, const lc_dataset *d, int64_t batch_size, int64_t max_seq_length,
                    uint64_t seed, bool shuffle) {
    memset(b, 0, sizeof *b);
    if (batch_size < 1) return lc_fail("batch_size must be >= 1, got %lld", (long long)batch_size);
    if (max_seq_length < 2)
        return lc_fail("max_seq_length must be >= 2, got %lld", (long long)max_seq_length);
    if (d->n < (size_t)batch_size)
        return lc_fail("the data set has %zu examples, fewer than batch_size=%lld: lower the batch "
                       "size or add examples",
                       d->n, (long long)batch_size);
    b->d = d;
    b->batch_size = batch_size;
    b->max_seq_length = max_seq_length;
    b->shuffle = shuffle;
    b->sorted = xmalloc(d->n * sizeof *b->sorted);
    lc_dataset_sorted(d, b->sorted);
    b->n_batches = d->n / (size_t)batch_size;
    b->order = xmalloc(b->n_batches * sizeof *b->order);
    b->pos.seed = seed;
    make_order(b);
    return 0;
}

void lc_batcher_free(lc_batcher *b) {
    free(b->sorted);
    free(b->order);
    memset(b, 0, sizeof *b);
}

void lc_batch_buf_free(lc_batch_buf *bt) {
    free(bt->tokens);
    free(bt->targets);
    memset(bt, 0, sizeof *bt);
}

int lc_batch_fill(const lc_dataset *d, const size_t *idx, size_t B, int64_t max_seq_length,
                  lc_batch_buf *out) {
    size_t maxlen = 0;
    for (size_t j = 0; j < B; j++)
        if (lc_dataset_len(d, idx[j]) > maxlen) maxlen = lc_dataset_len(d, idx[j]);
    // mlx-lm: pad to one plus the nearest multiple of 32, at most max_seq_length
    size_t width = 1 + PAD_TO * ((maxlen + PAD_TO - 1) / PAD_TO);
    if (width > (size_t)max_seq_length) width = (size_t)max_seq_length;
    size_t T = width - 1;
    if (B * T > out->cap) {
        out->cap = B * T;
        out->tokens = xrealloc(out->tokens, out->cap * sizeof *out->tokens);
        out->targets = xrealloc(out->targets, out->cap * sizeof *out->targets);
    }
    out->B = (int64_t)B;
    out->T = (int64_t)T;
    out->n_targets = 0;
    for (size_t j = 0; j < B; j++) {
        const int32_t *seq = d->ids + d->start[idx[j]];
        size_t len = lc_dataset_len(d, idx[j]), off = d->offset[idx[j]];
        if (len > width) len = width; // truncation
        int32_t *tok = out->tokens + j * T, *tgt = out->targets + j * T;
        for (size_t i = 0; i < T; i++) {
            tok[i] = i < len ? seq[i] : 0;
            bool trained = i + 1 < len && i + 1 >= off;
            tgt[i] = trained ? seq[i + 1] : -1;
            out->n_targets += trained;
        }
    }
    return 0;
}

int lc_batcher_next(lc_batcher *b, lc_batch_buf *out) {
    if (b->pos.index >= (int64_t)b->n_batches) {
        b->pos.epoch++;
        b->pos.index = 0;
        make_order(b);
    }
    const size_t *idx = b->sorted + b->order[b->pos.index] * (size_t)b->batch_size;
    b->pos.index++;
    return lc_batch_fill(b->d, idx, (size_t)b->batch_size, b->max_seq_length, out);
}

lc_data_pos lc_batcher_pos(const lc_batcher *b) { return b->pos; }

void lc_data_pos_format(const lc_data_pos *p, char *buf, size_t cap) {
    snprintf(buf, cap, "%" PRIu64 ":%" PRId64 ":%" PRId64, p->seed, p->epoch, p->index);
}

int lc_data_pos_parse(const char *text, lc_data_pos *p) {
    unsigned long long seed;
    long long epoch, index;
    int used = 0;
    if (sscanf(text, "%llu:%lld:%lld%n", &seed, &epoch, &index, &used) != 3 || text[used] ||
        epoch < 0 || index < 0)
        return lc_fail("data position '%s' is not seed:epoch:index", text);
    p->seed = seed;
    p->epoch = epoch;
    p->index = index;
    return 0;
}

int lc_batcher_seek(lc_batcher *b, const lc_data_pos *p) {
    if (p->seed != b->pos.seed)
        return lc_fail("the saved data position is for seed %" PRIu64 ", this run uses seed %" PRIu64,
                       p->seed, b->pos.seed);
    if (p->index > (int64_t)b->n_batches)
        return lc_fail("the saved data position (batch %" PRId64 ") is past this data's %zu batches: "
                       "did the data or batch size change?",
                       p->index, b->n_batches);
    b->pos = *p;
    make_order(b);
    return 0;
}

/* ---- prompts and answers ---- */

static char *trimmed(const char *s, size_t n) {
    while (n && (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')) s++, n--;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r')) n--;
    return xstrndup(s, n);
}

static bool ends_with(const char *s, size_t n, const char *suffix) {
    size_t k = strlen(suffix);
    return k && k <= n && !memcmp(s + n - k, suffix, k);
}

/* The family's text between a user message and the answer (sep), the part of it that
 * the generation prompt holds (*gen_len: sep[0..gen_len) — the prompt ends there, as it
 * does for `lorac generate`), and the text after the answer (end), from renderings with
 * sentinel contents. Returns 0 or -1. */
static int answer_marks(ctx *c, lc_buf *sep, size_t *gen_len, lc_buf *end, const char *where) {
    if (get_family(c, where) != 0) return -1;
    const char *bos = c->bos >= 0 ? lc_tokenizer_piece(c->t, c->bos) : NULL;
    const char *eos = c->eos >= 0 ? lc_tokenizer_piece(c->t, c->eos) : NULL;
    lc_chat_msg m[2] = {{"user", "\x01"}, {"assistant", "\x02"}};
    lc_buf r = {0}, g = {0};
    int rc = lc_chat_render_text(c->family, m, 2, false, bos, eos, &r);
    if (rc == 0) rc = lc_chat_render_text(c->family, m, 1, true, bos, eos, &g);
    const char *u = rc == 0 ? strchr(r.data, '\x01') : NULL, *a = u ? strchr(u, '\x02') : NULL;
    const char *gu = rc == 0 ? strchr(g.data, '\x01') : NULL;
    if (rc != 0) rc = lc_fail_prefix("%s", where);
    else if (!a || !gu)
        rc = lc_fail("%s: cannot tell where the %s template puts the answer", where,
                     lc_chat_family_name(c->family));
    else {
        lc_buf_append(sep, u + 1, (size_t)(a - u - 1));
        lc_buf_puts(end, a + 1);
        size_t gl = strlen(gu + 1);
        *gen_len = gl <= sep->len && !memcmp(sep->data, gu + 1, gl) ? gl : sep->len;
    }
    lc_buf_free(&r);
    lc_buf_free(&g);
    return rc;
}

/* The last occurrence of needle in s[0..n), or NULL. */
static const char *last_of(const char *s, size_t n, const char *needle) {
    size_t k = strlen(needle);
    if (!k || k > n) return NULL;
    for (size_t i = n - k + 1; i-- > 0;)
        if (!memcmp(s + i, needle, k)) return s + i;
    return NULL;
}

/* A text row: split at the family's answer mark (the last one: the final answer); the
 * prompt ids are the longest common prefix of the whole text's ids and the ids of the
 * text up to the end of the generation prompt. */
static int task_text_row(ctx *c, const char *text, const lc_buf *sep, size_t gen_len,
                         const lc_buf *end, lc_task_row *r, lc_ids *full, lc_ids *pre,
                         const char *where) {
    size_t n = strlen(text), k = sep->len;
    while (k > gen_len && (sep->data[k - 1] == ' ' || sep->data[k - 1] == '\n')) k--;
    const char *at = last_of(text, n, sep->data), *stop = at ? at + sep->len : NULL;
    if (!at && k) { // the answer glued to the mark: "[/INST]add" for "[/INST] add"
        char *core = xstrndup(sep->data, k);
        at = last_of(text, n, core);
        stop = at ? at + k : NULL;
        free(core);
    }
    if (!at)
        return lc_fail("%s: cannot find where the answer starts (the %s template puts \"%s\" "
                       "before it): --generate needs rows with a prompt and an answer (or pass "
                       "--chat-template NAME)",
                       where, lc_chat_family_name(c->family), sep->data);
    const char *pend = at + gen_len;
    lc_ids_clear(full);
    lc_ids_clear(pre);
    char *head = xstrndup(text, (size_t)(pend - text));
    int rc = text_ids(c, text, full);
    if (rc == 0) rc = text_ids(c, head, pre);
    free(head);
    if (rc != 0) return lc_fail_prefix("%s", where);
    size_t m = 0;
    while (m < full->len && m < pre->len && full->data[m] == pre->data[m]) m++;
    if (m == 0) return lc_fail("%s: the prompt has no tokens", where);
    // the answer: after the mark, without the end-of-turn text (or the EOS), trimmed
    const char *a = stop;
    size_t an = n - (size_t)(stop - text);
    char *endt = trimmed(end->data, end->len);
    const char *eos = c->eos >= 0 ? lc_tokenizer_piece(c->t, c->eos) : NULL;
    if (ends_with(a, an, end->data)) an -= end->len;
    else if (ends_with(a, an, endt)) an -= strlen(endt);
    else if (eos && ends_with(a, an, eos)) an -= strlen(eos);
    free(endt);
    r->prompt = trimmed(text, (size_t)(pend - text));
    r->target = trimmed(a, an);
    r->ids = xmalloc(m * sizeof *r->ids);
    memcpy(r->ids, full->data, m * sizeof *r->ids);
    r->n_ids = m;
    return 0;
}

/* A chat row (msgs[0..n), the last the answer): the prompt is everything before it with
 * the generation prompt, as the mask offset of training. */
static int task_chat_row(ctx *c, const lc_chat_msg *m, size_t n, lc_task_row *r, lc_ids *ids,
                         const char *where) {
    if (n < 2 || strcmp(m[n - 1].role, "assistant"))
        return lc_fail("%s: the last message is not the assistant's: no answer to score", where);
    if (get_family(c, where) != 0) return -1;
    lc_ids_clear(ids);
    if (lc_chat_render_ids(c->t, c->family, m, n - 1, true, ids) != 0) return lc_fail_prefix("%s", where);
    if (!ids->len) return lc_fail("%s: the prompt has no tokens", where);
    const char *q = "";
    for (size_t i = 0; i + 1 < n; i++)
        if (!strcmp(m[i].role, "user")) q = m[i].content;
    r->prompt = xstrdup(q);
    r->target = trimmed(m[n - 1].content, strlen(m[n - 1].content));
    r->ids = xmalloc(ids->len * sizeof *r->ids);
    memcpy(r->ids, ids->data, ids->len * sizeof *r->ids);
    r->n_ids = ids->len;
    return 0;
}

void lc_task_set_free(lc_task_set *s) {
    for (size_t i = 0; i < s->n; i++) {
        free(s->rows[i].prompt);
        free(s->rows[i].target);
        free(s->rows[i].ids);
    }
    free(s->rows);
    memset(s, 0, sizeof *s);
}

int lc_task_set_load(lc_task_set *s, const char *path, const lc_tokenizer *t,
                     const lc_data_options *o, size_t limit) {
    memset(s, 0, sizeof *s);
    char *text;
    size_t len;
    if (lc_read_file(path, DATA_MAX_BYTES, &text, &len) != 0) return -1;
    ctx c = {t, o, LC_CHAT_MISTRAL, false, lc_tokenizer_bos(t), lc_tokenizer_eos(t)};
    lc_buf sep = {0}, end = {0};
    size_t gen_len = 0;
    lc_ids a = {0}, b = {0};
    bool marks = false;
    size_t cap = 0, lineno = 0;
    int rc = 0;
    for (const char *p = text, *e = text + len; p < e && rc == 0 && (!limit || s->n < limit);) {
        const char *nl = memchr(p, '\n', (size_t)(e - p)), *le = nl ? nl : e;
        lineno++;
        const char *q = p;
        while (q < le && (*q == ' ' || *q == '\t' || *q == '\r')) q++;
        if (q < le) {
            char where[600];
            snprintf(where, sizeof where, "%s:%zu", path, lineno);
            cJSON *j = NULL;
            lc_data_form form = LC_DATA_TEXT;
            lc_task_row r = {0};
            r.line = lineno;
            rc = lc_json_parse(p, (size_t)(le - p), where, &j);
            if (rc == 0) rc = line_form(j, &form, where);
            if (rc == 0 && s->n == 0) s->form = form;
            if (rc == 0 && form != s->form)
                rc = lc_fail("%s: this line is in the %s form, the first in the %s form; a file "
                             "holds one form",
                             where, lc_data_form_name(form), lc_data_form_name(s->form));
            if (rc == 0 && form == LC_DATA_TEXT) {
                const char *tx;
                if (!marks) rc = answer_marks(&c, &sep, &gen_len, &end, where), marks = rc == 0;
                if (rc == 0) rc = need_string(j, "text", &tx, where);
                if (rc == 0) rc = task_text_row(&c, tx, &sep, gen_len, &end, &r, &a, &b, where);
            } else if (rc == 0 && form == LC_DATA_COMPLETION) {
                lc_chat_msg m[2] = {{"user", NULL}, {"assistant", NULL}};
                rc = need_string(j, "prompt", &m[0].content, where);
                if (rc == 0) rc = need_string(j, "completion", &m[1].content, where);
                if (rc == 0) rc = task_chat_row(&c, m, 2, &r, &a, where);
            } else if (rc == 0) {
                lc_chat_msg *m;
                size_t n;
                rc = parse_messages(j, &m, &n, where);
                if (rc == 0) rc = task_chat_row(&c, m, n, &r, &a, where);
                free(m);
            }
            cJSON_Delete(j);
            if (rc == 0) {
                if (s->n == cap) {
                    cap = cap ? 2 * cap : 64;
                    s->rows = xrealloc(s->rows, cap * sizeof *s->rows);
                }
                s->rows[s->n++] = r;
            } else {
                free(r.prompt), free(r.target), free(r.ids);
            }
        }
        p = nl ? nl + 1 : e;
    }
    free(text);
    lc_buf_free(&sep);
    lc_buf_free(&end);
    lc_ids_free(&a);
    lc_ids_free(&b);
    if (rc == 0 && s->n == 0) rc = lc_fail("%s: holds no examples", path);
    if (rc != 0) lc_task_set_free(s);
    return rc;
}
