/*
 * test_safetensors.c — the safetensors reader, writer and conversions, checked against
 * files written by the reference Python library (tests/io/fixtures/ref, made by
 * tests/reference/make_io_fixtures.py with safetensors 0.8.0 / torch 2.11) and against
 * byte layouts taken from the format's specification and the reference's own tests.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/file.h"
#include "core/json.h"
#include "core/mem.h"
#include "harness.h"
#include "io/safetensors.h"

#define REF "tests/io/fixtures/ref/"

static char tmpdir[64];

static char *tmp_path(const char *name) { return lc_path_join(tmpdir, name); }

static int one_line(void) { return strchr(lc_errmsg(), '\n') == NULL; }

/* ------------------------------------------------------------- reading */

static void test_read_reference_dtypes(void) {
    lc_safetensors st;
    CHECK_OK(lc_st_open(&st, REF "dtypes.safetensors"));
    CHECK_EQ_INT(st.n_tensors, 17);
    CHECK_EQ_STR(lc_st_meta(&st, "format"), "pt");
    const lc_tensor *t = lc_st_find(&st, "f32");
    CHECK(t && t->dtype == LC_DT_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3);
    if (t) {
        float v[6];
        memcpy(v, t->data, sizeof v);
        CHECK(v[0] == 1.0f && v[1] == -2.5f && v[5] == 65504.0f);
    }
    t = lc_st_find(&st, "i64");
    CHECK(t);
    if (t) {
        int64_t v[4];
        memcpy(v, t->data, sizeof v);
        CHECK(v[0] == INT64_MIN && v[1] == INT64_MAX && v[3] == 7);
    }
    t = lc_st_find(&st, "u16");
    CHECK(t);
    if (t) CHECK(((const unsigned char *)t->data)[2] == 0xFF && t->dtype == LC_DT_U16);
    t = lc_st_find(&st, "f8_e4m3");
    CHECK(t);
    if (t) CHECK(t->dtype == LC_DT_F8_E4M3 && ((const unsigned char *)t->data)[0] == 0x38);
    t = lc_st_find(&st, "f8_e5m2");
    CHECK(t);
    if (t) CHECK(t->dtype == LC_DT_F8_E5M2 && ((const unsigned char *)t->data)[0] == 0x3C);
    t = lc_st_find(&st, "bool");
    CHECK(t);
    if (t) CHECK(t->dtype == LC_DT_BOOL && ((const unsigned char *)t->data)[1] == 0);
    t = lc_st_find(&st, "empty");
    CHECK(t && t->nbytes == 0 && t->numel == 0 && t->ndim == 2);
    t = lc_st_find(&st, "scalar");
    CHECK(t);
    if (t) {
        float v;
        memcpy(&v, t->data, 4);
        CHECK(t->ndim == 0 && t->numel == 1 && v == 3.5f);
    }
    t = lc_st_find(&st, "bf16");
    CHECK(t);
    if (t) {
        float v[5];
        CHECK_OK(lc_to_f32(v, t->data, t->dtype, 5));
        CHECK(v[0] == 1.0f && v[1] == -2.5f && v[2] == 3.140625f);
    }
    CHECK(lc_st_find(&st, "nope") == NULL);
    lc_st_close(&st);
}

static void test_read_transformers_shards(void) {
    lc_safetensors st;
    CHECK_OK(lc_st_open(&st, REF "tiny-llama"));
    CHECK_EQ_INT(st.n_files, 3);
    CHECK_EQ_INT(st.n_tensors, 21);
    const lc_tensor *t = lc_st_find(&st, "lm_head.weight");
    CHECK(t && !strcmp(strrchr(st.files[t->file].path, '/') + 1, "model-00003-of-00003.safetensors"));
    t = lc_st_find(&st, "model.layers.1.mlp.down_proj.weight");
    CHECK(t && t->dtype == LC_DT_BF16 && t->shape[0] == 16 && t->shape[1] == 32);
    lc_st_close(&st);
    // The index itself may be named too.
    CHECK_OK(lc_st_open(&st, REF "tiny-llama/model.safetensors.index.json"));
    CHECK_EQ_INT(st.n_tensors, 21);
    lc_st_close(&st);
}

/* ------------------------------------------------------------- writing */

static int cmp_bytes_file(const char *a, const char *b) {
    char *x, *y;
    size_t nx, ny;
    if (lc_read_file(a, 1 << 24, &x, &nx) || lc_read_file(b, 1 << 24, &y, &ny)) return -1;
    int same = nx == ny && !memcmp(x, y, nx);
    if (!same) {
        size_t i = 0;
        while (i < nx && i < ny && x[i] == y[i]) i++;
        printf("  files differ at byte %zu (%zu vs %zu bytes): ...%.40s\n", i, nx, ny,
               i < ny ? y + i : "");
    }
    free(x);
    free(y);
    return same ? 0 : -1;
}

/* Reads a reference file, writes its tensors back (declared in reverse name order) and
 * expects the very same bytes. */
static void rewrite_same(const char *name) {
    char ref[256];
    snprintf(ref, sizeof ref, REF "%s", name);
    lc_safetensors st;
    if (lc_st_open(&st, ref) != 0) {
        CHECK_MSG(0, "%s", lc_errmsg());
        return;
    }
    lc_st_writer *w = lc_st_writer_new();
    for (size_t i = 0; i < st.n_meta; i++) lc_st_writer_meta(w, st.meta[2 * i], st.meta[2 * i + 1]);
    for (size_t k = st.n_tensors; k-- > 0;) {
        const lc_tensor *t = &st.tensors[st.by_name[k]];
        CHECK_OK(lc_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape));
    }
    char *out = tmp_path(name);
    CHECK_OK(lc_st_writer_begin(w, out));
    for (size_t k = 0; k < st.n_tensors; k++) {
        const lc_tensor *t = &st.tensors[k];
        // In two pieces, to exercise appends.
        size_t half = t->nbytes / 2;
        CHECK_OK(lc_st_writer_write(w, t->name, t->data, half));
        CHECK_OK(lc_st_writer_write(w, t->name, (const char *)t->data + half, t->nbytes - half));
    }
    CHECK_OK(lc_st_writer_commit(w));
    lc_st_writer_free(w);
    CHECK_MSG(cmp_bytes_file(ref, out) == 0, "%s is not byte-identical to the reference", name);
    free(out);
    lc_st_close(&st);
}

static void test_layout_matches_reference(void) {
    rewrite_same("layout.safetensors");
    rewrite_same("layout_meta.safetensors");
    rewrite_same("dtypes.safetensors");
    rewrite_same("empty.safetensors");
}

/* The layout of the safetensors repository's own serialization tests, written by hand
 * from the spec: {"attn.0": F32 [1,2,3]} is a 64-byte header that needs no padding;
 * {"attn0": F32 [1,1,2,3]} is 65 bytes, padded with 7 spaces to 72. */
static void check_hand(const char *name, int ndim, const int64_t *shape, const char *header) {
    float data[6] = {0, 1, 2, 3, 4, 5};
    lc_st_writer *w = lc_st_writer_new();
    CHECK_OK(lc_st_writer_add(w, name, LC_DT_F32, ndim, shape));
    char *out = tmp_path("hand.safetensors");
    CHECK_OK(lc_st_writer_begin(w, out));
    CHECK_OK(lc_st_writer_write(w, name, data, sizeof data));
    CHECK_OK(lc_st_writer_commit(w));
    lc_st_writer_free(w);
    size_t hl = strlen(header);
    unsigned char want[200] = {(unsigned char)hl};
    memcpy(want + 8, header, hl);
    memcpy(want + 8 + hl, data, sizeof data);
    char *got;
    size_t n;
    CHECK_OK(lc_read_file(out, 4096, &got, &n));
    CHECK_EQ_INT(n, 8 + hl + sizeof data);
    CHECK(n == 8 + hl + sizeof data && !memcmp(got, want, n));
    free(got);
    free(out);
}

static void test_layout_by_hand(void) {
    int64_t s3[] = {1, 2, 3}, s4[] = {1, 1, 2, 3};
    check_hand("attn.0", 3, s3, "{\"attn.0\":{\"dtype\":\"F32\",\"shape\":[1,2,3],\"data_offsets\":[0,24]}}");
    check_hand("attn0", 4, s4,
               "{\"attn0\":{\"dtype\":\"F32\",\"shape\":[1,1,2,3],\"data_offsets\":[0,24]}}       ");
}

static void test_roundtrip_every_dtype_sharded(void) {
    lc_st_writer *w = lc_st_writer_new();
    lc_st_writer_meta(w, "format", "pt");
    unsigned char *bufs[LC_DT_COUNT];
    size_t sizes[LC_DT_COUNT];
    char name[LC_DT_COUNT][32];
    for (int d = 0; d < LC_DT_COUNT; d++) {
        int64_t shape[2] = {3 + d, 5};
        snprintf(name[d], sizeof name[d], "t.%s", lc_dtype_name((lc_dtype)d));
        CHECK_OK(lc_st_writer_add(w, name[d], (lc_dtype)d, 2, shape));
        sizes[d] = (size_t)(3 + d) * 5 * lc_dtype_size((lc_dtype)d);
        bufs[d] = xmalloc(sizes[d]);
        for (size_t i = 0; i < sizes[d]; i++) bufs[d][i] = (unsigned char)(i * 31 + d);
    }
    char *dir = tmp_path("sharded");
    CHECK_OK(lc_mkdirs(dir));
    CHECK_OK(lc_st_writer_begin_dir(w, dir, 200));
    int nf = lc_st_writer_n_files(w);
    CHECK(nf > 3);
    for (int d = 0; d < LC_DT_COUNT; d++) CHECK_OK(lc_st_writer_write(w, name[d], bufs[d], sizes[d]));
    CHECK_OK(lc_st_writer_commit(w));
    lc_st_writer_free(w);
    lc_safetensors st;
    CHECK_OK(lc_st_open(&st, dir));
    CHECK_EQ_INT(st.n_files, nf);
    CHECK_EQ_INT(st.n_tensors, LC_DT_COUNT);
    for (int d = 0; d < LC_DT_COUNT; d++) {
        const lc_tensor *t = lc_st_find(&st, name[d]);
        CHECK(t && t->dtype == (lc_dtype)d && t->shape[0] == 3 + d && t->nbytes == sizes[d] &&
              !memcmp(t->data, bufs[d], sizes[d]));
        free(bufs[d]);
    }
    CHECK_EQ_STR(lc_st_meta(&st, "format"), "pt");
    lc_st_close(&st);
    // The index carries the total size, as transformers writes it.
    char *idx = lc_path_join(dir, "model.safetensors.index.json");
    cJSON *j;
    CHECK_OK(lc_json_parse_file(idx, 1 << 20, &j));
    const cJSON *meta = cJSON_GetObjectItem(j, "metadata");
    size_t total = 0;
    for (int d = 0; d < LC_DT_COUNT; d++) total += sizes[d];
    CHECK(meta && cJSON_GetObjectItem(meta, "total_size") &&
          cJSON_GetObjectItem(meta, "total_size")->valuedouble == (double)total);
    cJSON_Delete(j);
    // Rewriting the folder unsharded removes the stale index.
    w = lc_st_writer_new();
    int64_t one = 1;
    float x = 1;
    CHECK_OK(lc_st_writer_add(w, "x", LC_DT_F32, 1, &one));
    CHECK_OK(lc_st_writer_begin_dir(w, dir, 0));
    CHECK_OK(lc_st_writer_write(w, "x", &x, 4));
    CHECK_OK(lc_st_writer_commit(w));
    lc_st_writer_free(w);
    CHECK(!lc_is_file(idx));
    CHECK_OK(lc_st_open(&st, dir));
    CHECK_EQ_INT(st.n_tensors, 1);
    lc_st_close(&st);
    free(idx);
    free(dir);
}

static void test_writer_errors(void) {
    lc_st_writer *w = lc_st_writer_new();
    int64_t s[] = {4};
    CHECK_OK(lc_st_writer_add(w, "a", LC_DT_F32, 1, s));
    CHECK_FAILS(lc_st_writer_add(w, "a", LC_DT_F32, 1, s), "declared twice");
    int64_t neg[] = {-1};
    CHECK_FAILS(lc_st_writer_add(w, "n", LC_DT_F32, 1, neg), "negative");
    char *out = tmp_path("partial.safetensors");
    CHECK_OK(lc_st_writer_begin(w, out));
    float v[5] = {0};
    CHECK_FAILS(lc_st_writer_write(w, "a", v, 20), "would exceed");
    CHECK_FAILS(lc_st_writer_write(w, "b", v, 4), "never declared");
    CHECK_OK(lc_st_writer_write(w, "a", v, 8));
    CHECK_FAILS(lc_st_writer_commit(w), "got 8 of its 16 bytes");
    CHECK(!lc_is_file(out)); // nothing half-written under the final name
    lc_st_writer_free(w);
    free(out);
}

/* ------------------------------------------------------------- conversions */

static uint32_t bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static void test_conversions_match_torch(void) {
    lc_safetensors st;
    if (lc_st_open(&st, REF "convert.safetensors") != 0) {
        CHECK_MSG(0, "%s", lc_errmsg());
        return;
    }
    const lc_tensor *fi = lc_st_find(&st, "f16_in"), *fo = lc_st_find(&st, "f16_as_f32");
    const lc_tensor *bi = lc_st_find(&st, "bf16_in"), *bo = lc_st_find(&st, "bf16_as_f32");
    const lc_tensor *si = lc_st_find(&st, "f32_in"), *so = lc_st_find(&st, "f32_as_bf16");
    CHECK(fi && fo && bi && bo && si && so);
    if (!(fi && fo && bi && bo && si && so)) return;
    int bad = 0;
    for (size_t i = 0; i < fi->numel; i++) {
        uint16_t h;
        float want;
        memcpy(&h, (const char *)fi->data + 2 * i, 2);
        memcpy(&want, (const char *)fo->data + 4 * i, 4);
        float got = lc_f16_to_f32(h);
        if (!(isnan(want) ? isnan(got) : bits(got) == bits(want))) bad++;
        if (!isnan(want) && lc_f32_to_f16(got) != h) bad++; // f32 -> f16 inverts it exactly
    }
    CHECK_EQ_INT(bad, 0);
    for (size_t i = 0; i < bi->numel; i++) {
        uint16_t h;
        float want;
        memcpy(&h, (const char *)bi->data + 2 * i, 2);
        memcpy(&want, (const char *)bo->data + 4 * i, 4);
        float got = lc_bf16_to_f32(h);
        if (!(isnan(want) ? isnan(got) : bits(got) == bits(want))) bad++;
    }
    CHECK_EQ_INT(bad, 0);
    for (size_t i = 0; i < si->numel; i++) {
        float f;
        uint16_t want;
        memcpy(&f, (const char *)si->data + 4 * i, 4);
        memcpy(&want, (const char *)so->data + 2 * i, 2);
        uint16_t got = lc_f32_to_bf16(f);
        // NaN: torch's vectorized path writes 0xFFFF, its scalar path 0x7FC0; both are NaN.
        if (isnan(f) ? (got & 0x7F80) != 0x7F80 || !(got & 0x7F) || (want & 0x7F80) != 0x7F80
                     : got != want) {
            if (bad++ < 5) printf("  f32 %08x -> bf16 %04x, torch %04x\n", bits(f), lc_f32_to_bf16(f), want);
        }
    }
    CHECK_EQ_INT(bad, 0);
    lc_st_close(&st);
    // Known patterns: 1.0, ties to even, overflow, f16 rounding to infinity.
    CHECK_EQ_INT(lc_f32_to_bf16(1.0f), 0x3F80);
    CHECK_EQ_INT(lc_f32_to_bf16(1.00390625f), 0x3F80); // 1 + 2^-8: a tie, stays even
    CHECK_EQ_INT(lc_f32_to_bf16(1.01171875f), 0x3F82); // 1 + 3·2^-8: a tie, rounds up to even
    CHECK_EQ_INT(lc_f32_to_f16(65520.0f), 0x7C00);
    CHECK_EQ_INT(lc_f32_to_f16(65504.0f), 0x7BFF);
    CHECK_EQ_INT(lc_f32_to_f16(-2.0f), 0xC000);
}

/* ------------------------------------------------------------- bad input */

/* A file: 8-byte length, the header, then `data` zero bytes (hl overrides the length). */
static unsigned char *mk(const char *header, size_t data, uint64_t hl, size_t *len) {
    size_t h = strlen(header);
    if (!hl) hl = h;
    *len = 8 + h + data;
    unsigned char *b = xcalloc(*len + 1, 1);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(hl >> (8 * i));
    memcpy(b + 8, header, h);
    return b;
}

static void bad(const char *header, size_t data, uint64_t hl, const char *needle) {
    size_t len;
    unsigned char *b = mk(header, data, hl, &len);
    lc_safetensors st;
    CHECK_FAILS(lc_st_parse(&st, b, len, "model.safetensors"), needle);
    CHECK_MSG(one_line(), "not one line: %s", lc_errmsg());
    lc_st_close(&st);
    free(b);
}

static void test_bad_headers(void) {
    lc_safetensors st;
    CHECK_FAILS(lc_st_parse(&st, "\x10\0\0\0", 4, "model.safetensors"), "too short");
    lc_st_close(&st);
    bad("{}", 0, 1000, "runs past the end");
    bad("{}", 0, 1ULL << 40, "absurd");
    bad("{\"a\":", 0, 0, "invalid JSON");
    bad("[1,2]", 0, 0, "must be a JSON object");
    bad("{\"x\":{\"dtype\":\"Q4\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, 0,
        "unknown dtype 'Q4'");
    bad("{\"x\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 24, 0,
        "= 24 bytes, but its data_offsets [0, 20] span 20");
    bad("{\"x\":{\"dtype\":\"F32\",\"shape\":[1024,256],\"data_offsets\":[0,1048576]}}", 4000, 0,
        "tensor 'x' needs 1048576 bytes at offset 75, file has 4075");
    bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
        "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}",
        24, 0, "overlap");
    bad("{\"x\":{\"dtype\":\"F32\",\"shape\":[-3],\"data_offsets\":[0,0]}}", 0, 0,
        "negative dimension -3");
    bad("{\"x\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}", 0,
        0, "overflow");
    bad("{\"x\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,0]}}", 0, 0,
        "non-negative integers");
    bad("{\"x\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, 0, "data_offsets");
    bad("{\"x\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, 0, "no \"dtype\"");
    bad("{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4, 0, "end before");
    bad("{\"__metadata__\":{\"a\":1}}", 0, 0, "__metadata__ value of 'a' must be a string");
    bad("{\"x\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
        "\"x\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
        2, 0, "appears twice");
}

static void test_bad_files(void) {
    // A truncated download of a reference file.
    char *data;
    size_t n;
    CHECK_OK(lc_read_file(REF "layout.safetensors", 1 << 20, &data, &n));
    char *p = tmp_path("truncated.safetensors");
    CHECK_OK(lc_write_file_atomic(p, data, n - 10));
    lc_safetensors st;
    CHECK_FAILS(lc_st_open(&st, p), "truncated.safetensors: tensor 'a.weight' needs 12 bytes at offset 616, file has 624");
    CHECK(one_line());
    lc_st_close(&st);
    free(p);
    free(data);
    // An index naming a shard that is not there.
    char *dir = tmp_path("missing");
    CHECK_OK(lc_mkdirs(dir));
    char *idx = lc_path_join(dir, "model.safetensors.index.json");
    const char *j = "{\"metadata\":{},\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\","
                    "\"b\":\"model-00002-of-00002.safetensors\"}}";
    CHECK_OK(lc_write_file_atomic(idx, j, strlen(j)));
    char *s1 = lc_path_join(dir, "model-00001-of-00002.safetensors");
    size_t len;
    unsigned char *b = mk("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, 0, &len);
    CHECK_OK(lc_write_file_atomic(s1, b, len));
    CHECK_FAILS(lc_st_open(&st, dir), "shard 'model-00002-of-00002.safetensors' is missing");
    CHECK(one_line());
    lc_st_close(&st);
    // An index whose map disagrees with the shard.
    j = "{\"weight_map\":{\"z\":\"model-00001-of-00002.safetensors\"}}";
    CHECK_OK(lc_write_file_atomic(idx, j, strlen(j)));
    CHECK_FAILS(lc_st_open(&st, dir), "puts tensor 'z' in 'model-00001-of-00002.safetensors'");
    lc_st_close(&st);
    j = "{\"weight_map\":{\"z\":\"../etc/passwd\"}}";
    CHECK_OK(lc_write_file_atomic(idx, j, strlen(j)));
    CHECK_FAILS(lc_st_open(&st, dir), "not a file name inside the model folder");
    lc_st_close(&st);
    j = "{\"metadata\":{}}";
    CHECK_OK(lc_write_file_atomic(idx, j, strlen(j)));
    CHECK_FAILS(lc_st_open(&st, dir), "no \"weight_map\"");
    lc_st_close(&st);
    free(b);
    free(s1);
    free(idx);
    free(dir);
    char *empty = tmp_path("nothing");
    CHECK_OK(lc_mkdirs(empty));
    CHECK_FAILS(lc_st_open(&st, empty), "no model.safetensors or model.safetensors.index.json");
    lc_st_close(&st);
    free(empty);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/lorac-st-XXXXXX");
    if (!mkdtemp(tmpdir)) return 1;
    RUN(test_read_reference_dtypes);
    RUN(test_read_transformers_shards);
    RUN(test_layout_matches_reference);
    RUN(test_layout_by_hand);
    RUN(test_roundtrip_every_dtype_sharded);
    RUN(test_writer_errors);
    RUN(test_conversions_match_torch);
    RUN(test_bad_headers);
    RUN(test_bad_files);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) printf("  could not remove %s\n", tmpdir);
    return t_summary();
}
