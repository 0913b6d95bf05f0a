/*
 * prepare.c — rows to train/valid/test JSONL. See prepare.h.
 *
 * Owns: the CSV reader, the prompt template, grouping (by sorting, ids by first
 * appearance), the seeded shuffle and the cut into splits. Never prints.
 */
#include "train/prepare.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/file.h"
#include "core/json.h"
#include "core/mem.h"
#include "text/chat.h"

const char *const lc_split_names[LC_N_SPLITS] = {"train", "valid", "test"};

#define MAX_INPUT_BYTES ((size_t)4 << 30)
/* The longest JSONL line read; a longer one is refused without reading it to its end. */
#define MAX_LINE_BYTES ((size_t)64 << 20)

/* ------------------------------------------------------------------ CSV (RFC 4180) */

typedef struct {
    lc_buf *f; // fields of the record being read
    size_t n, cap;
} csv_rec;

static void rec_field(csv_rec *r) {
    if (r->n == r->cap) {
        r->cap = r->cap ? 2 * r->cap : 8;
        r->f = xrealloc(r->f, r->cap * sizeof *r->f);
    }
    r->f[r->n++] = (lc_buf){0};
    lc_buf_puts(&r->f[r->n - 1], "");
}

static void rec_clear(csv_rec *r) {
    for (size_t i = 0; i < r->n; i++) lc_buf_free(&r->f[i]);
    r->n = 0;
}

/* Reads one record starting at *pos into r; *line counts line breaks. Returns 1 when a
 * record was read, 0 at the end of the text, -1 on an error. */
static int csv_record(const char *s, size_t len, size_t *pos, size_t *line, const char *what,
                      csv_rec *r) {
    size_t i = *pos;
    rec_clear(r);
    if (i >= len) return 0;
    size_t start_line = *line;
    rec_field(r);
    bool quoted = false, after_quote = false;
    while (i < len) {
        char c = s[i];
        lc_buf *f = &r->f[r->n - 1];
        if (quoted) {
            if (c == '"' && i + 1 < len && s[i + 1] == '"') {
                lc_buf_putc(f, '"');
                i += 2;
            } else if (c == '"') {
                quoted = false;
                after_quote = true;
                i++;
            } else {
                if (c == '\n') (*line)++;
                lc_buf_putc(f, c);
                i++;
            }
            continue;
        }
        if (c == ',') {
            rec_field(r);
            after_quote = false;
            i++;
        } else if (c == '\n' || (c == '\r' && i + 1 < len && s[i + 1] == '\n')) {
            i += c == '\r' ? 2 : 1;
            (*line)++;
            break;
        } else if (after_quote) {
            return lc_fail("%s: line %zu: '%c' after the closing quote of field %zu; a quoted "
                           "field must be followed by a comma or the end of the line",
                           what, *line, c, r->n);
        } else if (c == '"') {
            if (f->len)
                return lc_fail("%s: line %zu: a '\"' inside the unquoted field %zu; quote the "
                               "whole field and double the quote (\"\")",
                               what, *line, r->n);
            quoted = true;
            i++;
        } else {
            lc_buf_putc(f, c);
            i++;
        }
    }
    if (quoted)
        return lc_fail("%s: line %zu: a quoted field opened here is never closed", what,
                       start_line);
    *pos = i;
    return 1;
}

int lc_csv_parse(const char *text, size_t len, const char *what, cJSON **rows) {
    *rows = NULL;
    size_t pos = 0, line = 1;
    csv_rec hdr = {0}, r = {0};
    cJSON *arr = cJSON_CreateArray();
    int rc = csv_record(text, len, &pos, &line, what, &hdr);
    if (rc == 0) rc = lc_fail("%s: empty CSV file (expected a header row of field names)", what);
    for (size_t i = 0; rc == 1 && i < hdr.n; i++) {
        if (!hdr.f[i].len) rc = lc_fail("%s: line 1: header field %zu is empty", what, i + 1);
        for (size_t j = 0; rc == 1 && j < i; j++)
            if (!strcmp(hdr.f[i].data, hdr.f[j].data))
                rc = lc_fail("%s: line 1: the field name '%s' occurs twice", what, hdr.f[i].data);
    }
    while (rc == 1) {
        size_t rec_line = line;
        rc = csv_record(text, len, &pos, &line, what, &r);
        if (rc != 1) break;
        if (r.n == 1 && r.f[0].len == 0) continue; // a blank line
        if (r.n != hdr.n) {
            rc = lc_fail("%s: line %zu: %zu fields, the header has %zu", what, rec_line, r.n,
                         hdr.n);
            break;
        }
        cJSON *o = cJSON_CreateObject();
        for (size_t i = 0; i < r.n; i++)
            cJSON_AddItemToObject(o, hdr.f[i].data, cJSON_CreateString(r.f[i].data));
        cJSON_AddItemToArray(arr, o);
    }
    rec_clear(&hdr);
    rec_clear(&r);
    free(hdr.f);
    free(r.f);
    if (rc < 0) {
        cJSON_Delete(arr);
        return -1;
    }
    *rows = arr;
    return 0;
}

/* ------------------------------------------------------------------ reading rows */

static bool ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* Checks that every element of a JSON array is an object. */
static int check_objects(const cJSON *arr, const char *what) {
    size_t i = 0;
    for (const cJSON *o = arr->child; o; o = o->next, i++)
        if (!cJSON_IsObject(o))
            return lc_fail("%s: row %zu is %s, expected an object of fields", what, i + 1,
                           lc_json_type_name(o));
    return 0;
}

static int parse_jsonl(const char *text, size_t len, const char *path, cJSON **rows) {
    cJSON *arr = cJSON_CreateArray();
    size_t line = 0;
    for (size_t i = 0; i < len;) {
        size_t left = len - i;
        const char *nl = memchr(text + i, '\n', left < MAX_LINE_BYTES + 1 ? left : MAX_LINE_BYTES + 1);
        size_t end = nl ? (size_t)(nl - text) : len;
        line++;
        if (end - i > MAX_LINE_BYTES) {
            cJSON_Delete(arr);
            return lc_fail("%s: line %zu is longer than %zu MiB; one row per line, each shorter "
                           "than that",
                           path, line, MAX_LINE_BYTES >> 20);
        }
        size_t a = i, b = end;
        while (a < b && (text[a] == ' ' || text[a] == '\t' || text[a] == '\r')) a++;
        while (b > a && (text[b - 1] == ' ' || text[b - 1] == '\t' || text[b - 1] == '\r')) b--;
        i = end + 1;
        if (a == b) continue;
        char what[64];
        snprintf(what, sizeof what, "line %zu", line);
        cJSON *o;
        if (lc_json_parse(text + a, b - a, what, &o) != 0) {
            cJSON_Delete(arr);
            return lc_fail_prefix("%s", path);
        }
        if (!cJSON_IsObject(o)) {
            cJSON_Delete(arr);
            lc_fail("%s: line %zu is %s, expected one JSON object per line", path, line,
                    lc_json_type_name(o));
            cJSON_Delete(o);
            return -1;
        }
        cJSON_AddItemToArray(arr, o);
    }
    *rows = arr;
    return 0;
}

int lc_rows_load(const char *path, cJSON **rows) {
    *rows = NULL;
    /* mapped, not read: a JSONL line too long is refused before it is paged in */
    lc_map m;
    if (lc_map_file(path, &m) != 0) return -1;
    if (m.len > MAX_INPUT_BYTES) {
        size_t n = m.len;
        lc_unmap(&m);
        return lc_fail("%s: file is %zu bytes, more than the %zu GiB this reader accepts; split it",
                       path, n, MAX_INPUT_BYTES >> 30);
    }
    const char *text = m.data ? (const char *)m.data : "";
    size_t len = m.len;
    size_t k = 0;
    while (k < len && (text[k] == ' ' || text[k] == '\n' || text[k] == '\r' || text[k] == '\t'))
        k++;
    int rc;
    if (ends_with(path, ".csv") || ends_with(path, ".CSV")) {
        rc = lc_csv_parse(text, len, path, rows);
    } else if (ends_with(path, ".json") || (k < len && text[k] == '[')) {
        rc = lc_json_parse(text, len, path, rows);
        if (rc == 0 && !cJSON_IsArray(*rows))
            rc = lc_fail("%s: the file is %s, expected a JSON array of row objects (or use JSONL: "
                         "one object a line)",
                         path, lc_json_type_name(*rows));
        if (rc == 0) rc = check_objects(*rows, path);
    } else {
        rc = parse_jsonl(text, len, path, rows);
    }
    lc_unmap(&m);
    if (rc != 0) {
        cJSON_Delete(*rows);
        *rows = NULL;
        return -1;
    }
    if (cJSON_GetArraySize(*rows) == 0) {
        cJSON_Delete(*rows);
        *rows = NULL;
        return lc_fail("%s: no rows", path);
    }
    return 0;
}

/* ------------------------------------------------------------------ fields and template */

/* Lists an object's field names into b (for messages). */
static void field_names(const cJSON *o, lc_buf *b) {
    for (const cJSON *c = o->child; c; c = c->next) {
        if (b->len) lc_buf_puts(b, ", ");
        lc_buf_puts(b, c->string ? c->string : "?");
    }
    if (!b->len) lc_buf_puts(b, "none");
}

/* The text of a row's field (strings as they are; numbers and booleans spelled as JSON
 * spells them) in a new string, or NULL with an error naming the row, the field and `use`. */
static char *field_text(const cJSON *row, size_t i, const char *field, const char *what,
                        const char *use) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(row, field);
    if (cJSON_IsString(v)) return xstrdup(v->valuestring);
    if (cJSON_IsNumber(v) || cJSON_IsBool(v)) {
        char *p = cJSON_PrintUnformatted(v);
        char *s = xstrdup(p);
        cJSON_free(p);
        return s;
    }
    if (!v || cJSON_IsNull(v)) {
        lc_buf names = {0};
        field_names(row, &names);
        lc_fail("%s: row %zu has no field '%s' (%s; its fields: %s)", what, i + 1, field, use,
                names.data);
        lc_buf_free(&names);
    } else {
        lc_fail("%s: row %zu: field '%s' is %s, expected text (%s)", what, i + 1, field,
                lc_json_type_name(v), use);
    }
    return NULL;
}

/* Renders the template for one row into out: "{name}" is the row's field, "{{" and "}}"
 * are braces. Returns 0 or -1. */
static int render_template(const char *tpl, const cJSON *row, size_t i, const char *what,
                           lc_buf *out) {
    lc_buf_clear(out);
    lc_buf_puts(out, "");
    for (const char *p = tpl; *p;) {
        if ((p[0] == '{' && p[1] == '{') || (p[0] == '}' && p[1] == '}')) {
            lc_buf_putc(out, p[0]);
            p += 2;
        } else if (p[0] == '{') {
            const char *end = strchr(p, '}');
            if (!end)
                return lc_fail("--prompt-template: '{' at character %zu is never closed (write "
                               "'{{' for a literal brace)",
                               (size_t)(p - tpl) + 1);
            char *name = xstrndup(p + 1, (size_t)(end - p - 1));
            char *v = field_text(row, i, name, what, "used by --prompt-template");
            free(name);
            if (!v) return -1;
            lc_buf_puts(out, v);
            free(v);
            p = end + 1;
        } else {
            lc_buf_putc(out, *p++);
        }
    }
    return 0;
}

/* One output line (with its newline) in the chosen form, appended to line. */
static int format_line(const lc_prep_options *o, const char *prompt, const char *target,
                       lc_buf *line) {
    lc_buf_clear(line);
    switch (o->format) {
    case LC_PREP_TEXT: {
        lc_chat_msg msgs[2] = {{"user", prompt}, {"assistant", target}};
        lc_buf text = {0};
        int rc = lc_chat_render_text((lc_chat_family)o->chat_family, msgs, 2, false, o->bos_text,
                                     o->eos_text, &text);
        if (rc == 0) {
            lc_buf_puts(line, "{\"text\": ");
            lc_json_quote(line, text.data, text.len);
            lc_buf_puts(line, "}\n");
        }
        lc_buf_free(&text);
        return rc;
    }
    case LC_PREP_CHAT:
        lc_buf_puts(line, "{\"messages\": [{\"role\": \"user\", \"content\": ");
        lc_json_quote(line, prompt, strlen(prompt));
        lc_buf_puts(line, "}, {\"role\": \"assistant\", \"content\": ");
        lc_json_quote(line, target, strlen(target));
        lc_buf_puts(line, "}]}\n");
        return 0;
    case LC_PREP_COMPLETIONS:
        lc_buf_puts(line, "{\"prompt\": ");
        lc_json_quote(line, prompt, strlen(prompt));
        lc_buf_puts(line, ", \"completion\": ");
        lc_json_quote(line, target, strlen(target));
        lc_buf_puts(line, "}\n");
        return 0;
    }
    return lc_fail("prepare: unknown output format %d", (int)o->format);
}

/* ------------------------------------------------------------------ grouping, shuffling */

static const char *const *g_keys; // the keys qsort compares (grouping is single-threaded)

static int cmp_key_idx(const void *a, const void *b) {
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    int c = strcmp(g_keys[i], g_keys[j]);
    return c ? c : (i > j) - (i < j);
}

/* Numbers equal keys[0..n) alike: gid[i] in [0, groups), in order of first appearance.
 * Returns the number of groups. */
static size_t group_ids(const char *const *keys, size_t n, size_t *gid) {
    if (n == 0) return 0;
    size_t *idx = xmalloc(n * sizeof *idx), *first = xmalloc(n * sizeof *first);
    for (size_t i = 0; i < n; i++) idx[i] = i;
    g_keys = keys;
    qsort(idx, n, sizeof *idx, cmp_key_idx);
    for (size_t k = 0; k < n; k++) {
        bool same = k && !strcmp(keys[idx[k]], keys[idx[k - 1]]);
        first[idx[k]] = same ? first[idx[k - 1]] : idx[k]; // the run's smallest index
    }
    size_t *map = xmalloc(n * sizeof *map), groups = 0;
    for (size_t i = 0; i < n; i++) map[i] = (size_t)-1;
    for (size_t i = 0; i < n; i++) {
        if (map[first[i]] == (size_t)-1) map[first[i]] = groups++;
        gid[i] = map[first[i]];
    }
    free(map);
    free(first);
    free(idx);
    return groups;
}

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Fisher-Yates over a[0..n) with the generator state *s. */
static void shuffle(size_t *a, size_t n, uint64_t *s) {
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(splitmix64(s) % i);
        size_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}

/* ------------------------------------------------------------------ prepare */

typedef struct {
    size_t n;
    char **input, **target, **line, **key; // per row (key: the unit key, or NULL)
} rowset;

static void rowset_free(rowset *s) {
    for (size_t i = 0; i < s->n; i++) {
        free(s->input[i]);
        free(s->target[i]);
        free(s->line[i]);
        free(s->key[i]);
    }
    free(s->input);
    free(s->target);
    free(s->line);
    free(s->key);
}

static int check_options(const lc_prep_options *o) {
    double v = o->valid_fraction, t = o->test_fraction;
    if (!(v >= 0 && v < 1) || !(t >= 0 && t < 1) || !(v + t < 1))
        return lc_fail("--valid-fraction %g and --test-fraction %g: each must be in [0, 1) and "
                       "their sum below 1 (training needs rows)",
                       v, t);
    if (o->format == LC_PREP_TEXT &&
        (o->chat_family < 0 || o->chat_family >= (int)LC_CHAT_N_FAMILIES))
        return lc_fail("--format text needs a chat template: give --model DIR (its tokenizer's "
                       "template) or --chat-template NAME");
    return 0;
}

int lc_prepare(const cJSON *rows, const char *what, const lc_prep_options *o, lc_prep_result *r) {
    if (check_options(o) != 0) return -1;
    const char *split_by = o->split_by ? o->split_by : "row";
    bool by_row = !strcmp(split_by, "row"), para = !strcmp(split_by, "paraphrase");
    size_t n_all = (size_t)cJSON_GetArraySize(rows);
    rowset s = {0};
    s.input = xcalloc(n_all + 1, sizeof *s.input);
    s.target = xcalloc(n_all + 1, sizeof *s.target);
    s.line = xcalloc(n_all + 1, sizeof *s.line);
    s.key = xcalloc(n_all + 1, sizeof *s.key);
    lc_buf prompt = {0}, line = {0};
    int rc = 0;
    size_t *gid = NULL, *units = NULL, *unit_of = NULL, *order = NULL, *split_of_unit = NULL;
    uint64_t rng = o->seed;

    /* 1. every row: its input, target, prompt and output line (dropping exact repeats) */
    size_t i = 0;
    for (const cJSON *row = rows->child; row; row = row->next, i++) {
        char *in = field_text(row, i, o->input_field, what, "the input: --input-field");
        char *tg = in ? field_text(row, i, o->output_field, what, "the target: --output-field")
                      : NULL;
        char *key = NULL;
        if (tg && para) {
            key = xmalloc(strlen(tg) + strlen(in) + 2);
            sprintf(key, "%s\x1f%s", tg, in);
        } else if (tg && !by_row) {
            key = field_text(row, i, split_by, what, "the unit of --split-by");
        }
        if (!tg || (!by_row && !key) ||
            render_template(o->prompt_template, row, i, what, &prompt) != 0 ||
            format_line(o, prompt.data, tg, &line) != 0) {
            free(in);
            free(tg);
            free(key);
            rc = -1;
            goto done;
        }
        s.input[s.n] = in;
        s.target[s.n] = tg;
        s.key[s.n] = key;
        s.line[s.n++] = xstrndup(line.data, line.len);
    }
    r->n_in = s.n;
    if (s.n == 0) {
        rc = lc_fail("%s: no rows", what);
        goto done;
    }
    gid = xmalloc(s.n * sizeof *gid);
    if (o->dedupe) {
        group_ids((const char *const *)s.line, s.n, gid);
        size_t k = 0, seen = 0;
        for (size_t j = 0; j < s.n; j++) {
            if (gid[j] < seen) { // a repeat of an earlier line
                free(s.input[j]);
                free(s.target[j]);
                free(s.line[j]);
                free(s.key[j]);
                continue;
            }
            seen++;
            s.input[k] = s.input[j], s.target[k] = s.target[j];
            s.line[k] = s.line[j], s.key[k] = s.key[j];
            k++;
        }
        r->n_dupes = s.n - k;
        s.n = k;
    }
    size_t n = s.n;

    /* 2. units: rows that go to one split together */
    unit_of = xmalloc(n * sizeof *unit_of);
    size_t n_units = n;
    if (by_row) {
        for (size_t j = 0; j < n; j++) unit_of[j] = j;
    } else {
        n_units = group_ids((const char *const *)s.key, n, unit_of);
    }
    size_t *unit_rows = xcalloc(n_units, sizeof *unit_rows);
    for (size_t j = 0; j < n; j++) unit_rows[unit_of[j]]++;
    order = xmalloc(n_units * sizeof *order);
    for (size_t u = 0; u < n_units; u++) order[u] = u;
    if (o->shuffle) shuffle(order, n_units, &rng);

    /* 3. the cut */
    double ftrain = 1.0 - o->valid_fraction - o->test_fraction;
    size_t n_train = (size_t)floor((double)n * ftrain + 1e-9);
    size_t n_valid = o->test_fraction > 0 ? (size_t)floor((double)n * o->valid_fraction + 1e-9)
                                          : n - n_train;
    split_of_unit = xmalloc(n_units * sizeof *split_of_unit);
    if (!para) {
        size_t before = 0;
        for (size_t k = 0; k < n_units; k++) {
            size_t u = order[k];
            split_of_unit[u] = before < n_train             ? LC_SPLIT_TRAIN
                               : before < n_train + n_valid ? LC_SPLIT_VALID
                                                            : LC_SPLIT_TEST;
            before += unit_rows[u];
        }
    } else {
        /* each target's first unit (in order) stays in train; the others are cut by valid
         * and test counts of ⌊n·fraction⌋ rows */
        const char **tkeys = xmalloc(n * sizeof *tkeys);
        for (size_t j = 0; j < n; j++) tkeys[j] = s.target[j];
        size_t *tgid = xmalloc(n * sizeof *tgid);
        size_t n_targets = group_ids(tkeys, n, tgid);
        size_t *target_of_unit = xmalloc(n_units * sizeof *target_of_unit);
        for (size_t j = 0; j < n; j++) target_of_unit[unit_of[j]] = tgid[j];
        bool *has_train = xcalloc(n_targets + 1, sizeof *has_train);
        size_t want_valid = (size_t)floor((double)n * o->valid_fraction + 1e-9);
        size_t want_test = (size_t)floor((double)n * o->test_fraction + 1e-9);
        size_t before = 0;
        for (size_t k = 0; k < n_units; k++) {
            size_t u = order[k];
            if (!has_train[target_of_unit[u]]) {
                has_train[target_of_unit[u]] = true;
                split_of_unit[u] = LC_SPLIT_TRAIN;
                continue;
            }
            split_of_unit[u] = before < want_valid               ? LC_SPLIT_VALID
                               : before < want_valid + want_test ? LC_SPLIT_TEST
                                                                 : LC_SPLIT_TRAIN;
            before += unit_rows[u];
        }
        free(has_train);
        free(target_of_unit);
        free(tgid);
        free(tkeys);
    }

    /* 4. output: units in order, rows of a unit in file order */
    size_t *start = xcalloc(n_units + 1, sizeof *start), *fill = xcalloc(n_units, sizeof *fill);
    for (size_t u = 0; u < n_units; u++) start[u + 1] = start[u] + unit_rows[u];
    units = xmalloc(n * sizeof *units);
    for (size_t j = 0; j < n; j++) units[start[unit_of[j]] + fill[unit_of[j]]++] = j;
    for (int sp = 0; sp < LC_N_SPLITS; sp++) lc_buf_puts(&r->out[sp], "");
    for (size_t k = 0; k < n_units; k++) {
        size_t u = order[k];
        int sp = (int)split_of_unit[u];
        for (size_t m = start[u]; m < start[u + 1]; m++) {
            lc_buf_puts(&r->out[sp], s.line[units[m]]);
            r->n[sp]++;
        }
    }
    free(start);
    free(fill);
    free(unit_rows);

    /* 5. leaks: an input in more than one split */
    size_t n_inputs = group_ids((const char *const *)s.input, n, gid);
    unsigned *mask = xcalloc(n_inputs + 1, sizeof *mask);
    for (size_t j = 0; j < n; j++) mask[gid[j]] |= 1u << split_of_unit[unit_of[j]];
    for (size_t j = 0; j < n; j++) {
        unsigned m = mask[gid[j]];
        if (m && (m & (m - 1))) {
            r->n_leaks++;
            if (!r->leak_example) r->leak_example = xstrdup(s.input[j]);
            mask[gid[j]] = 0; // count each input once
        }
    }
    free(mask);

done:
    free(gid);
    free(units);
    free(unit_of);
    free(order);
    free(split_of_unit);
    lc_buf_free(&prompt);
    lc_buf_free(&line);
    rowset_free(&s);
    return rc;
}

int lc_prepare_write(const lc_prep_result *r, const char *dir) {
    if (lc_mkdirs(dir) != 0) return -1;
    for (int sp = 0; sp < LC_N_SPLITS; sp++) {
        char name[32];
        snprintf(name, sizeof name, "%s.jsonl", lc_split_names[sp]);
        char *path = lc_path_join(dir, name);
        int rc = lc_write_file_atomic(path, r->out[sp].data ? r->out[sp].data : "", r->out[sp].len);
        free(path);
        if (rc != 0) return -1;
    }
    return 0;
}

int lc_prepare_stats(const lc_prep_result *r, const lc_tokenizer *t, int chat_family,
                     int64_t max_seq_length, lc_data_stats stats[LC_N_SPLITS]) {
    for (int sp = 0; sp < LC_N_SPLITS; sp++) {
        memset(&stats[sp], 0, sizeof stats[sp]);
        if (r->n[sp] == 0) continue;
        lc_dataset d = {0};
        lc_data_options o = {.mask_prompt = false, .max_seq_length = max_seq_length,
                             .chat_family = chat_family};
        if (lc_dataset_parse(&d, r->out[sp].data, r->out[sp].len, lc_split_names[sp], t, &o) != 0)
            return -1;
        lc_dataset_stats(&d, &stats[sp]);
        lc_dataset_free(&d);
    }
    return 0;
}

void lc_prep_result_free(lc_prep_result *r) {
    for (int sp = 0; sp < LC_N_SPLITS; sp++) lc_buf_free(&r->out[sp]);
    free(r->leak_example);
    memset(r, 0, sizeof *r);
}
