/*
 * safetensors.c — safetensors reading (mapped, validated) and streaming atomic
 * writing. See safetensors.h for the format and the rules.
 */
#include "io/safetensors.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "core/error.h"
#include "core/json.h"
#include "core/mem.h"
#include "core/vec.h"

/* The reference reader refuses headers above 100 MB; so do we. */
#define MAX_HEADER 100000000ULL
/* Integers in JSON are doubles: beyond 2^53 they are no longer exact. */
#define MAX_JSON_INT 9007199254740992.0

/* ------------------------------------------------------------------ dtypes */

static const struct {
    const char *name;
    size_t size;
} DTYPES[LC_DT_COUNT] = {
    [LC_DT_BOOL] = {"BOOL", 1},       [LC_DT_U8] = {"U8", 1},   [LC_DT_I8] = {"I8", 1},
    [LC_DT_F8_E5M2] = {"F8_E5M2", 1}, [LC_DT_F8_E4M3] = {"F8_E4M3", 1},
    [LC_DT_I16] = {"I16", 2},         [LC_DT_U16] = {"U16", 2}, [LC_DT_F16] = {"F16", 2},
    [LC_DT_BF16] = {"BF16", 2},       [LC_DT_I32] = {"I32", 4}, [LC_DT_U32] = {"U32", 4},
    [LC_DT_F32] = {"F32", 4},         [LC_DT_F64] = {"F64", 8}, [LC_DT_I64] = {"I64", 8},
    [LC_DT_U64] = {"U64", 8},
};

const char *lc_dtype_name(lc_dtype dt) { return dt < LC_DT_COUNT ? DTYPES[dt].name : "?"; }
size_t lc_dtype_size(lc_dtype dt) { return dt < LC_DT_COUNT ? DTYPES[dt].size : 0; }

int lc_dtype_from_name(const char *name, lc_dtype *dt) {
    for (int i = 0; i < LC_DT_COUNT; i++)
        if (!strcmp(name, DTYPES[i].name)) {
            *dt = (lc_dtype)i;
            return 0;
        }
    return -1;
}

const char *lc_shape_str(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t n = 0;
    n += (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n < cap) snprintf(buf + n, cap - n, "]");
    return buf;
}

/* ------------------------------------------------------------ conversions */

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float lc_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

float lc_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1F, mant = h & 0x3FF;
    if (exp == 0) {
        float v = (float)mant * 5.9604644775390625e-08f; // mant · 2^-24, exact
        return sign ? -v : v;
    }
    if (exp == 31) return bits_f32(sign | 0x7F800000u | (mant << 13));
    return bits_f32(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t lc_f32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FC0;
    u += 0x7FFFu + ((u >> 16) & 1); // round to nearest, ties to even
    return (uint16_t)(u >> 16);
}

uint16_t lc_f32_to_f16(float f) {
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    u &= 0x7FFFFFFFu;
    if (u > 0x7F800000u) return sign | 0x7E00;  // NaN
    if (u >= 0x477FF000u) return sign | 0x7C00; // 65520 and up round to infinity
    if (u < 0x38800000u) {                      // an f16 subnormal (or zero)
        // Adding 0.5 puts the units of 2^-24 in the low mantissa bits, rounded by the FPU.
        float g = bits_f32(u) + 0.5f;
        return sign | (uint16_t)(f32_bits(g) - 0x3F000000u);
    }
    uint32_t odd = (u >> 13) & 1;
    u += 0xC8000FFFu + odd; // rebias the exponent (-112 << 23) and round to nearest even
    return sign | (uint16_t)(u >> 13);
}

int lc_to_f32(float *out, const void *src, lc_dtype dt, size_t n) {
    const unsigned char *s = src;
    uint16_t h;
    switch (dt) {
    case LC_DT_F32:
        memcpy(out, src, n * 4);
        return 0;
    case LC_DT_BF16:
        for (size_t i = 0; i < n; i++) memcpy(&h, s + 2 * i, 2), out[i] = lc_bf16_to_f32(h);
        return 0;
    case LC_DT_F16:
        for (size_t i = 0; i < n; i++) memcpy(&h, s + 2 * i, 2), out[i] = lc_f16_to_f32(h);
        return 0;
    default:
        return lc_fail("cannot convert %s to F32 (only F32, F16 and BF16 weights are supported)",
                       lc_dtype_name(dt));
    }
}

int lc_from_f32(void *dst, lc_dtype dt, const float *src, size_t n) {
    unsigned char *d = dst;
    uint16_t h;
    switch (dt) {
    case LC_DT_F32:
        memcpy(dst, src, n * 4);
        return 0;
    case LC_DT_BF16:
        for (size_t i = 0; i < n; i++) h = lc_f32_to_bf16(src[i]), memcpy(d + 2 * i, &h, 2);
        return 0;
    case LC_DT_F16:
        for (size_t i = 0; i < n; i++) h = lc_f32_to_f16(src[i]), memcpy(d + 2 * i, &h, 2);
        return 0;
    default:
        return lc_fail("cannot convert F32 to %s (only F32, F16 and BF16 are supported)",
                       lc_dtype_name(dt));
    }
}

/* ---------------------------------------------------------------- reading */

static void push_tensor(lc_safetensors *st, size_t *cap, const lc_tensor *t) {
    if (st->n_tensors == *cap) {
        *cap = *cap ? *cap * 2 : 64;
        st->tensors = xrealloc(st->tensors, *cap * sizeof *st->tensors);
    }
    st->tensors[st->n_tensors++] = *t;
}

/* Reads a non-negative integer that JSON holds exactly; 0 or -1 (no error recorded). */
static int json_index(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!isfinite(d) || d < 0 || d != floor(d) || d > MAX_JSON_INT) return -1;
    *out = (uint64_t)d;
    return 0;
}

static int cmp_offset(const void *a, const void *b) {
    const lc_tensor *x = a, *y = b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

/* Parses one tensor entry of the header into t. */
static int parse_entry(lc_tensor *t, const cJSON *e, const char *what, size_t data_start,
                       size_t data_len) {
    const char *name = e->string;
    char sh[256];
    if (!cJSON_IsObject(e))
        return lc_fail("%s: tensor '%s' must be an object {dtype, shape, data_offsets}, found %s",
                       what, name, lc_json_type_name(e));
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    if (!cJSON_IsString(dt))
        return lc_fail("%s: tensor '%s' has no \"dtype\" string (the header is corrupted)", what,
                       name);
    if (lc_dtype_from_name(dt->valuestring, &t->dtype) != 0)
        return lc_fail("%s: tensor '%s' has unknown dtype '%.32s' (known: F64, F32, F16, BF16, "
                       "I64, I32, I16, I8, U8, BOOL, U16, U32, U64, F8_E4M3, F8_E5M2)",
                       what, name, dt->valuestring);
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
    if (!cJSON_IsArray(shape))
        return lc_fail("%s: tensor '%s' has no \"shape\" array (the header is corrupted)", what,
                       name);
    int nd = cJSON_GetArraySize(shape);
    if (nd > LC_ST_MAX_DIMS)
        return lc_fail("%s: tensor '%s' has %d dimensions, more than the %d lorac reads", what,
                       name, nd, LC_ST_MAX_DIMS);
    t->ndim = 0;
    size_t numel = 1;
    bool overflow = false;
    for (const cJSON *d = shape->child; d; d = d->next) {
        uint64_t v;
        if (json_index(d, &v) != 0) {
            if (cJSON_IsNumber(d) && d->valuedouble < 0)
                return lc_fail("%s: tensor '%s' has a negative dimension %g in its shape", what,
                               name, d->valuedouble);
            return lc_fail("%s: tensor '%s': shape entries must be non-negative integers, found "
                           "%s",
                           what, name, cJSON_IsNumber(d) ? "a fraction or a huge number"
                                                         : lc_json_type_name(d));
        }
        t->shape[t->ndim++] = (int64_t)v;
        if (v > SIZE_MAX || lc_mul_size(numel, (size_t)v, &numel) != 0) overflow = true;
    }
    if (!overflow && lc_mul_size(numel, lc_dtype_size(t->dtype), &t->nbytes) != 0) overflow = true;
    if (overflow)
        return lc_fail("%s: tensor '%s' of shape %s is too large to address (size overflow; the "
                       "header is corrupted)",
                       what, name, lc_shape_str(sh, sizeof sh, t->ndim, t->shape));
    t->numel = numel;
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    uint64_t b, en;
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 || json_index(off->child, &b) != 0 ||
        json_index(off->child->next, &en) != 0)
        return lc_fail("%s: tensor '%s' needs \"data_offsets\": [begin, end] of two non-negative "
                       "integers (the header is corrupted)",
                       what, name);
    if (en < b)
        return lc_fail("%s: tensor '%s' has data_offsets [%llu, %llu] that end before they begin",
                       what, name, (unsigned long long)b, (unsigned long long)en);
    if (en - b != t->nbytes)
        return lc_fail("%s: tensor '%s' is %s %s = %zu bytes, but its data_offsets [%llu, %llu] "
                       "span %llu (the header is inconsistent)",
                       what, name, lc_dtype_name(t->dtype),
                       lc_shape_str(sh, sizeof sh, t->ndim, t->shape), t->nbytes,
                       (unsigned long long)b, (unsigned long long)en,
                       (unsigned long long)(en - b));
    if (en > data_len)
        return lc_fail("%s: tensor '%s' needs %zu bytes at offset %llu, file has %zu (truncated "
                       "download? fetch the file again)",
                       what, name, t->nbytes, (unsigned long long)(data_start + b),
                       data_start + data_len);
    t->offset = data_start + (size_t)b;
    return 0;
}

/* Parses the file at index fi of st (its bytes at buf) and appends its tensors. */
static int parse_file(lc_safetensors *st, size_t *cap, int fi, const unsigned char *buf,
                      size_t len, const char *what) {
    if (len < 8)
        return lc_fail("%s: file is %zu bytes, too short for the 8-byte header length (truncated "
                       "download? fetch the file again)",
                       what, len);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | buf[i];
    if (n > MAX_HEADER)
        return lc_fail("%s: header length %llu is absurd (the limit is %llu bytes): not a "
                       "safetensors file, or a corrupted one",
                       what, (unsigned long long)n, MAX_HEADER);
    if (n > len - 8)
        return lc_fail("%s: header length %llu runs past the end of the file (%zu bytes; "
                       "truncated download? fetch the file again)",
                       what, (unsigned long long)n, len);
    char hwhat[600];
    snprintf(hwhat, sizeof hwhat, "%s: header", what);
    cJSON *root;
    if (lc_json_parse((const char *)buf + 8, (size_t)n, hwhat, &root) != 0) return -1;
    int rc = 0;
    if (!cJSON_IsObject(root)) {
        rc = lc_fail("%s: header must be a JSON object, found %s", what, lc_json_type_name(root));
        goto done;
    }
    size_t data_start = 8 + (size_t)n, data_len = len - data_start, first = st->n_tensors;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (!strcmp(e->string, "__metadata__")) {
            if (!cJSON_IsObject(e)) {
                rc = lc_fail("%s: __metadata__ must be an object of strings, found %s", what,
                             lc_json_type_name(e));
                goto done;
            }
            for (const cJSON *m = e->child; m; m = m->next)
                if (!cJSON_IsString(m)) {
                    rc = lc_fail("%s: __metadata__ value of '%s' must be a string, found %s", what,
                                 m->string, lc_json_type_name(m));
                    goto done;
                }
            if (fi == 0 && !st->meta) {
                size_t k = 0, count = (size_t)cJSON_GetArraySize(e);
                st->meta = xcalloc(2 * count + 1, sizeof *st->meta);
                for (const cJSON *m = e->child; m; m = m->next) {
                    st->meta[k++] = xstrdup(m->string);
                    st->meta[k++] = xstrdup(m->valuestring);
                }
                st->n_meta = count;
            }
            continue;
        }
        lc_tensor t = {0};
        if (parse_entry(&t, e, what, data_start, data_len) != 0) {
            rc = -1;
            goto done;
        }
        t.name = xstrdup(e->string);
        t.data = buf + t.offset;
        t.file = fi;
        push_tensor(st, cap, &t);
    }
    // Overlaps: in offset order, each tensor must start at or after the previous end.
    lc_tensor *ts = st->tensors + first;
    size_t nt = st->n_tensors - first;
    if (nt > 1) qsort(ts, nt, sizeof *ts, cmp_offset);
    size_t end = data_start;
    const lc_tensor *prev = NULL;
    for (size_t i = 0; i < nt; i++) {
        if (ts[i].nbytes == 0) continue;
        if (prev && ts[i].offset < end) {
            rc = lc_fail("%s: tensors '%s' (bytes %zu..%zu) and '%s' (bytes %zu..%zu) overlap "
                         "(the file is corrupted)",
                         what, prev->name, prev->offset, end, ts[i].name, ts[i].offset,
                         ts[i].offset + ts[i].nbytes);
            goto done;
        }
        prev = &ts[i];
        end = ts[i].offset + ts[i].nbytes;
    }
done:
    cJSON_Delete(root);
    return rc;
}

static const lc_safetensors *g_sort_st; // qsort has no context argument in C11

static int cmp_name(const void *a, const void *b) {
    return strcmp(g_sort_st->tensors[*(const size_t *)a].name,
                  g_sort_st->tensors[*(const size_t *)b].name);
}

/* Builds the name index and rejects a name that appears twice. */
static int index_names(lc_safetensors *st) {
    st->by_name = xmalloc((st->n_tensors + 1) * sizeof *st->by_name);
    for (size_t i = 0; i < st->n_tensors; i++) st->by_name[i] = i;
    g_sort_st = st;
    qsort(st->by_name, st->n_tensors, sizeof *st->by_name, cmp_name);
    g_sort_st = NULL;
    for (size_t i = 1; i < st->n_tensors; i++) {
        const lc_tensor *a = &st->tensors[st->by_name[i - 1]], *b = &st->tensors[st->by_name[i]];
        if (!strcmp(a->name, b->name))
            return lc_fail("%s: tensor '%s' appears twice%s%s (the model files are corrupted)",
                           st->files[b->file].path, b->name, a->file != b->file ? ", also in " : "",
                           a->file != b->file ? st->files[a->file].path : "");
    }
    return 0;
}

int lc_st_parse(lc_safetensors *st, const void *buf, size_t len, const char *what) {
    memset(st, 0, sizeof *st);
    size_t cap = 0;
    st->files = xcalloc(1, sizeof *st->files);
    st->n_files = 1;
    st->files[0].path = xstrdup(what);
    st->files[0].n_bytes = len;
    if (parse_file(st, &cap, 0, buf, len, what) != 0) return -1;
    return index_names(st);
}

static int open_one(lc_safetensors *st, size_t *cap, int fi, const char *path) {
    lc_st_file *f = &st->files[fi];
    f->path = xstrdup(path);
    if (lc_map_file(path, &f->map) != 0) return -1;
    f->n_bytes = f->map.len;
    return parse_file(st, cap, fi, f->map.data, f->map.len, path);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int open_index(lc_safetensors *st, const char *index_path) {
    cJSON *root;
    if (lc_json_parse_file(index_path, (size_t)256 << 20, &root) != 0) return -1;
    int rc = -1;
    const cJSON *wm = NULL;
    char **names = NULL;
    size_t n_names = 0;
    if (lc_json_obj(root, "weight_map", &wm, index_path) <= 0) {
        if (!wm) lc_fail("%s: no \"weight_map\" object (is this a model.safetensors.index.json?)",
                         index_path);
        goto done;
    }
    size_t count = (size_t)cJSON_GetArraySize(wm);
    names = xcalloc(count + 1, sizeof *names);
    for (const cJSON *e = wm->child; e; e = e->next) {
        if (!cJSON_IsString(e)) {
            lc_fail("%s: weight_map entry '%s' must name a file, found %s", index_path, e->string,
                    lc_json_type_name(e));
            goto done;
        }
        const char *fn = e->valuestring;
        if (!fn[0] || fn[0] == '/' || strstr(fn, "..") || strchr(fn, '\\')) {
            lc_fail("%s: weight_map entry '%s' names '%s', which is not a file name inside the "
                    "model folder",
                    index_path, e->string, fn);
            goto done;
        }
        names[n_names++] = e->valuestring;
    }
    qsort(names, n_names, sizeof *names, cmp_str);
    size_t u = 0;
    for (size_t i = 0; i < n_names; i++)
        if (u == 0 || strcmp(names[u - 1], names[i])) names[u++] = names[i];
    // The folder of the index.
    char *dir = xstrdup(index_path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
    else strcpy(dir, ".");
    st->files = xcalloc(u + 1, sizeof *st->files);
    size_t cap = 0;
    for (size_t i = 0; i < u; i++) {
        char *p = lc_path_join(dir, names[i]);
        st->n_files = (int)i + 1;
        int r = open_one(st, &cap, (int)i, p);
        free(p);
        if (r != 0) {
            if (!st->files[i].map.data && !lc_is_file(st->files[i].path))
                lc_fail_prefix("%s: shard '%s' is missing (download it again)", index_path,
                               names[i]);
            free(dir);
            goto done;
        }
    }
    free(dir);
    if (index_names(st) != 0) goto done;
    for (const cJSON *e = wm->child; e; e = e->next) {
        const lc_tensor *t = lc_st_find(st, e->string);
        const char *want = e->valuestring;
        const char *have = t ? strrchr(st->files[t->file].path, '/') : NULL;
        have = have ? have + 1 : t ? st->files[t->file].path : NULL;
        if (!t || strcmp(have, want)) {
            lc_fail("%s: weight_map puts tensor '%s' in '%s', which does not hold it (the index "
                    "and the shards disagree; download the model again)",
                    index_path, e->string, want);
            goto done;
        }
    }
    rc = 0;
done:
    free(names);
    cJSON_Delete(root);
    return rc;
}

int lc_st_open(lc_safetensors *st, const char *path) {
    memset(st, 0, sizeof *st);
    if (lc_is_dir(path)) {
        char *idx = lc_path_join(path, "model.safetensors.index.json");
        char *one = lc_path_join(path, "model.safetensors");
        int rc;
        if (lc_is_file(idx)) rc = open_index(st, idx);
        else if (lc_is_file(one)) rc = lc_st_open(st, one);
        else
            rc = lc_fail("%s: no model.safetensors or model.safetensors.index.json in this folder "
                         "(is it a Hugging Face model folder?)",
                         path);
        free(idx);
        free(one);
        return rc;
    }
    size_t n = strlen(path);
    if (n >= 5 && !strcmp(path + n - 5, ".json")) return open_index(st, path);
    size_t cap = 0;
    st->files = xcalloc(1, sizeof *st->files);
    st->n_files = 1;
    if (open_one(st, &cap, 0, path) != 0) return -1;
    return index_names(st);
}

void lc_st_close(lc_safetensors *st) {
    for (int i = 0; i < st->n_files; i++) {
        lc_unmap(&st->files[i].map);
        free(st->files[i].path);
    }
    for (size_t i = 0; i < st->n_tensors; i++) free((char *)st->tensors[i].name);
    for (size_t i = 0; i < 2 * st->n_meta; i++) free(st->meta[i]);
    free(st->meta);
    free(st->files);
    free(st->tensors);
    free(st->by_name);
    memset(st, 0, sizeof *st);
}

const lc_tensor *lc_st_find(const lc_safetensors *st, const char *name) {
    size_t lo = 0, hi = st->n_tensors;
    if (!st->by_name) return NULL;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const lc_tensor *t = &st->tensors[st->by_name[mid]];
        int c = strcmp(t->name, name);
        if (c == 0) return t;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

const char *lc_st_meta(const lc_safetensors *st, const char *key) {
    for (size_t i = 0; i < st->n_meta; i++)
        if (!strcmp(st->meta[2 * i], key)) return st->meta[2 * i + 1];
    return NULL;
}

/* ---------------------------------------------------------------- writing */

typedef struct {
    char *name;
    lc_dtype dtype;
    int ndim;
    int64_t shape[LC_ST_MAX_DIMS];
    size_t nbytes, numel;
    size_t begin;   // in its file's data section
    size_t written; // bytes received so far
    int shard;
} wtensor;

struct lc_st_writer {
    wtensor *t;
    size_t n, cap;
    char **meta; // key, value pairs
    size_t n_meta;
    bool begun, failed;
    char *dir;          // begin_dir: the folder; NULL for one file
    char **paths;       // each file's destination
    size_t *data_start; // each file's 8 + header length
    int n_files, cur;   // files planned; the one open (-1: none)
    lc_atomic a;
    size_t pos; // write position in the open file
    size_t last;
};

lc_st_writer *lc_st_writer_new(void) {
    lc_st_writer *w = xcalloc(1, sizeof *w);
    w->cur = -1;
    return w;
}

int lc_st_writer_add(lc_st_writer *w, const char *name, lc_dtype dt, int ndim, const int64_t *shape) {
    if (w->begun) return lc_fail("safetensors writer: tensor '%s' declared after writing began", name);
    if ((unsigned)dt >= LC_DT_COUNT) return lc_fail("safetensors writer: tensor '%s' has no dtype", name);
    if (ndim < 0 || ndim > LC_ST_MAX_DIMS)
        return lc_fail("safetensors writer: tensor '%s' has %d dimensions (at most %d)", name, ndim,
                       LC_ST_MAX_DIMS);
    for (size_t i = 0; i < w->n; i++)
        if (!strcmp(w->t[i].name, name))
            return lc_fail("safetensors writer: tensor '%s' declared twice", name);
    wtensor t = {.dtype = dt, .ndim = ndim};
    size_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || lc_mul_size(numel, (size_t)shape[i], &numel) != 0)
            return lc_fail("safetensors writer: tensor '%s' has a negative or overflowing shape",
                           name);
        t.shape[i] = shape[i];
    }
    if (lc_mul_size(numel, lc_dtype_size(dt), &t.nbytes) != 0)
        return lc_fail("safetensors writer: tensor '%s' is too large (size overflow)", name);
    t.numel = numel;
    t.name = xstrdup(name);
    if (w->n == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 64;
        w->t = xrealloc(w->t, w->cap * sizeof *w->t);
    }
    w->t[w->n++] = t;
    return 0;
}

void lc_st_writer_meta(lc_st_writer *w, const char *key, const char *value) {
    for (size_t i = 0; i < w->n_meta; i++)
        if (!strcmp(w->meta[2 * i], key)) {
            free(w->meta[2 * i + 1]);
            w->meta[2 * i + 1] = xstrdup(value);
            return;
        }
    w->meta = xrealloc(w->meta, (2 * w->n_meta + 2) * sizeof *w->meta);
    w->meta[2 * w->n_meta] = xstrdup(key);
    w->meta[2 * w->n_meta + 1] = xstrdup(value);
    w->n_meta++;
}

static const lc_st_writer *g_sort_w;

/* The reference order: larger dtype alignment first, then names in byte order. */
static int cmp_layout(const void *a, const void *b) {
    const wtensor *x = &g_sort_w->t[*(const size_t *)a], *y = &g_sort_w->t[*(const size_t *)b];
    if (x->dtype != y->dtype) return x->dtype > y->dtype ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int cmp_meta(const void *a, const void *b) { // elements: char ** (a key, its value after)
    return strcmp(**(char **const *)a, **(char **const *)b);
}

/* Lays out file f (its tensors' begin offsets) and returns its header, padded. */
static void layout_file(lc_st_writer *w, int f, lc_buf *h) {
    size_t *idx = xmalloc((w->n + 1) * sizeof *idx), k = 0;
    for (size_t i = 0; i < w->n; i++)
        if (w->t[i].shard == f) idx[k++] = i;
    g_sort_w = w;
    qsort(idx, k, sizeof *idx, cmp_layout);
    g_sort_w = NULL;
    lc_buf_putc(h, '{');
    bool comma = false;
    if (w->n_meta) {
        // Sort the pairs by key: an array of pointers to each pair's key.
        char ***pairs = xmalloc(w->n_meta * sizeof *pairs);
        for (size_t i = 0; i < w->n_meta; i++) pairs[i] = &w->meta[2 * i];
        qsort(pairs, w->n_meta, sizeof *pairs, cmp_meta);
        lc_buf_puts(h, "\"__metadata__\":{");
        for (size_t i = 0; i < w->n_meta; i++) {
            if (i) lc_buf_putc(h, ',');
            lc_json_quote(h, pairs[i][0], strlen(pairs[i][0]));
            lc_buf_putc(h, ':');
            lc_json_quote(h, pairs[i][1], strlen(pairs[i][1]));
        }
        lc_buf_putc(h, '}');
        free(pairs);
        comma = true;
    }
    size_t off = 0;
    for (size_t j = 0; j < k; j++) {
        wtensor *t = &w->t[idx[j]];
        t->begin = off;
        off += t->nbytes;
        if (comma) lc_buf_putc(h, ',');
        comma = true;
        lc_json_quote(h, t->name, strlen(t->name));
        lc_buf_printf(h, ":{\"dtype\":\"%s\",\"shape\":[", lc_dtype_name(t->dtype));
        for (int d = 0; d < t->ndim; d++)
            lc_buf_printf(h, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        lc_buf_printf(h, "],\"data_offsets\":[%zu,%zu]}", t->begin, off);
    }
    lc_buf_putc(h, '}');
    while (h->len % 8) lc_buf_putc(h, ' ');
    free(idx);
}

/* Opens file f and writes its length field and header. */
static int open_file(lc_st_writer *w, int f) {
    lc_buf h = {0};
    layout_file(w, f, &h);
    unsigned char len8[8];
    uint64_t n = h.len;
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)(n >> (8 * i));
    int rc = lc_atomic_open(&w->a, w->paths[f]);
    if (rc == 0) rc = lc_atomic_write(&w->a, len8, 8);
    if (rc == 0) rc = lc_atomic_write(&w->a, h.data, h.len);
    w->data_start[f] = 8 + h.len;
    lc_buf_free(&h);
    if (rc != 0) {
        if (w->a.f) lc_atomic_abort(&w->a);
        return -1;
    }
    w->cur = f;
    w->pos = w->data_start[f];
    return 0;
}

/* Checks that file f got all its bytes and renames it into place. */
static int close_file(lc_st_writer *w, int f) {
    for (size_t i = 0; i < w->n; i++) {
        wtensor *t = &w->t[i];
        if (t->shard == f && t->written != t->nbytes) {
            lc_atomic_abort(&w->a);
            w->cur = -1;
            return lc_fail("%s: tensor '%s' got %zu of its %zu bytes (nothing was written in its "
                           "place)",
                           w->paths[f], t->name, t->written, t->nbytes);
        }
    }
    // A file whose last tensors are empty is still as long as its header says.
    if (fseeko(w->a.f, 0, SEEK_END) != 0) {
        lc_atomic_abort(&w->a);
        w->cur = -1;
        return lc_fail("%s: cannot seek: %s", w->paths[f], strerror(errno));
    }
    w->cur = -1;
    return lc_atomic_commit(&w->a);
}

static int begin_common(lc_st_writer *w) {
    if (w->begun) return lc_fail("safetensors writer: begin called twice");
    w->begun = true;
    w->data_start = xcalloc((size_t)w->n_files, sizeof *w->data_start);
    return open_file(w, 0);
}

int lc_st_writer_begin(lc_st_writer *w, const char *path) {
    w->n_files = 1;
    w->paths = xcalloc(1, sizeof *w->paths);
    w->paths[0] = xstrdup(path);
    for (size_t i = 0; i < w->n; i++) w->t[i].shard = 0;
    return begin_common(w);
}

int lc_st_writer_begin_dir(lc_st_writer *w, const char *dir, size_t shard_bytes) {
    int shard = 0;
    size_t size = 0;
    for (size_t i = 0; i < w->n; i++) {
        size_t b = w->t[i].nbytes;
        if (shard_bytes && size > 0 && (size + b > shard_bytes || size + b < size)) {
            shard++;
            size = 0;
        }
        w->t[i].shard = shard;
        size += b;
    }
    w->n_files = shard + 1;
    if (w->n_files > 99999)
        return lc_fail("%s: %d shards are too many (at most 99999); raise the shard size", dir,
                       w->n_files);
    w->dir = xstrdup(dir);
    w->paths = xcalloc((size_t)w->n_files, sizeof *w->paths);
    for (int f = 0; f < w->n_files; f++) {
        char name[64];
        if (w->n_files == 1) snprintf(name, sizeof name, "model.safetensors");
        else snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", f + 1, w->n_files);
        w->paths[f] = lc_path_join(dir, name);
    }
    return begin_common(w);
}

int lc_st_writer_n_files(const lc_st_writer *w) { return w->n_files; }

int lc_st_writer_write(lc_st_writer *w, const char *name, const void *p, size_t n) {
    if (!w->begun || w->failed)
        return lc_fail("safetensors writer: write of '%s' %s", name,
                       w->failed ? "after an earlier failure" : "before begin");
    size_t i = w->last;
    if (i >= w->n || strcmp(w->t[i].name, name)) {
        for (i = 0; i < w->n && strcmp(w->t[i].name, name); i++) {}
        if (i == w->n) return lc_fail("safetensors writer: tensor '%s' was never declared", name);
        w->last = i;
    }
    wtensor *t = &w->t[i];
    if (t->shard < w->cur || w->cur < 0)
        return lc_fail("%s: tensor '%s' written after its shard was closed (write tensors in "
                       "declaration order)",
                       w->paths[t->shard], name);
    while (w->cur < t->shard) {
        int next = w->cur + 1;
        if (close_file(w, w->cur) != 0 || open_file(w, next) != 0) {
            w->failed = true;
            return -1;
        }
    }
    if (n > t->nbytes - t->written)
        return lc_fail("%s: tensor '%s' takes %zu bytes; %zu more would exceed it",
                       w->paths[t->shard], name, t->nbytes, t->written + n);
    size_t at = w->data_start[t->shard] + t->begin + t->written;
    if (at != w->pos && fseeko(w->a.f, (off_t)at, SEEK_SET) != 0) {
        w->failed = true;
        return lc_fail("%s: cannot seek: %s", w->paths[t->shard], strerror(errno));
    }
    if (lc_atomic_write(&w->a, p, n) != 0) {
        w->failed = true;
        return -1;
    }
    w->pos = at + n;
    t->written += n;
    return 0;
}

static int cmp_wname(const void *a, const void *b) {
    return strcmp(g_sort_w->t[*(const size_t *)a].name, g_sort_w->t[*(const size_t *)b].name);
}

static int write_index(lc_st_writer *w) {
    size_t total = 0, params = 0;
    size_t *idx = xmalloc((w->n + 1) * sizeof *idx);
    for (size_t i = 0; i < w->n; i++) {
        idx[i] = i;
        total += w->t[i].nbytes;
        params += w->t[i].numel;
    }
    g_sort_w = w;
    qsort(idx, w->n, sizeof *idx, cmp_wname);
    g_sort_w = NULL;
    lc_buf b = {0};
    lc_buf_printf(&b, "{\n  \"metadata\": {\n    \"total_parameters\": %zu,\n    \"total_size\": %zu\n"
                      "  },\n  \"weight_map\": {",
                  params, total);
    for (size_t j = 0; j < w->n; j++) {
        const wtensor *t = &w->t[idx[j]];
        const char *fn = strrchr(w->paths[t->shard], '/');
        fn = fn ? fn + 1 : w->paths[t->shard];
        lc_buf_puts(&b, j ? ",\n    " : "\n    ");
        lc_json_quote(&b, t->name, strlen(t->name));
        lc_buf_puts(&b, ": ");
        lc_json_quote(&b, fn, strlen(fn));
    }
    lc_buf_puts(&b, "\n  }\n}\n");
    char *path = lc_path_join(w->dir, "model.safetensors.index.json");
    int rc = lc_write_file_atomic(path, b.data, b.len);
    free(path);
    lc_buf_free(&b);
    free(idx);
    return rc;
}

int lc_st_writer_commit(lc_st_writer *w) {
    if (!w->begun || w->failed || w->cur < 0)
        return lc_fail("safetensors writer: commit %s",
                       w->failed ? "after an earlier failure" : "without an open file");
    while (w->cur < w->n_files - 1) {
        int next = w->cur + 1;
        if (close_file(w, w->cur) != 0 || open_file(w, next) != 0) {
            w->failed = true;
            return -1;
        }
    }
    if (close_file(w, w->cur) != 0) {
        w->failed = true;
        return -1;
    }
    if (!w->dir) return 0;
    // A folder holds one layout: drop what a previous model of the other layout left.
    char *idx = lc_path_join(w->dir, "model.safetensors.index.json");
    char *one = lc_path_join(w->dir, "model.safetensors");
    int rc = 0;
    if (w->n_files > 1) {
        rc = write_index(w);
        if (rc == 0 && lc_is_file(one)) unlink(one);
    } else if (lc_is_file(idx)) {
        unlink(idx);
    }
    free(idx);
    free(one);
    return rc;
}

void lc_st_writer_free(lc_st_writer *w) {
    if (!w) return;
    if (w->cur >= 0) lc_atomic_abort(&w->a);
    for (size_t i = 0; i < w->n; i++) free(w->t[i].name);
    for (size_t i = 0; i < 2 * w->n_meta; i++) free(w->meta[i]);
    for (int f = 0; f < w->n_files; f++) free(w->paths ? w->paths[f] : NULL);
    free(w->paths);
    free(w->meta);
    free(w->t);
    free(w->data_start);
    free(w->dir);
    free(w);
}
