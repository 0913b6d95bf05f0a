/*
 * test_tokenizer.c — the tokenizer against the reference libraries: every line of the
 * fixtures made by `tokenizers` / `sentencepiece` (tests/fixtures/tokenizer/<name>.jsonl:
 * ids, ids with special tokens, both decodes, and streaming decode), the RISC-V data
 * set's hashes (*.riscv.json), hand-checked small tokenizers, and bad input that must
 * fail with one clear line. Fixture-based tests SKIP when the fixtures or the shared
 * assets are absent.
 */
#include <stdint.h>
#include <time.h>

#include "core/file.h"
#include "core/json.h"
#include "core/mem.h"
#include "harness.h"
#include "text/tokenizer.h"

#define FIX "tests/fixtures/tokenizer"
#define OWN "tests/fixtures/tokenizers"

/* ---------------------------------------------------------- helpers */

static void ids_of(const cJSON *o, const char *key, lc_ids *out) {
    lc_ids_clear(out);
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, key);
    for (const cJSON *e = a ? a->child : NULL; e; e = e->next) lc_ids_push(out, (int32_t)e->valuedouble);
}

static bool ids_eq(const lc_ids *a, const lc_ids *b) {
    return a->len == b->len && (a->len == 0 || !memcmp(a->data, b->data, a->len * sizeof *a->data));
}

static void print_ids(const char *label, const lc_ids *v) {
    printf("      %s [", label);
    for (size_t i = 0; i < v->len && i < 60; i++) printf("%s%d", i ? ", " : "", v->data[i]);
    printf("%s]\n", v->len > 60 ? ", ..." : "");
}

static void print_text(const char *label, const char *s, size_t n) {
    lc_buf q = {0};
    lc_json_quote(&q, s, n > 200 ? 200 : n);
    printf("      %s %s\n", label, q.data);
    lc_buf_free(&q);
}

/* Whether s[0..n) ends on a character boundary. */
static bool lc_utf8_check_test(const char *s, size_t n) {
    size_t k = 0;
    while (k < n) {
        unsigned c = (unsigned char)s[k];
        k += c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    }
    return k == n;
}

/* Loads a tokenizer of the fixture set by name, or returns NULL with *why set. */
static lc_tokenizer *load_named(const char *name, const char **why) {
    static char path[1024], cfg[1024];
    const char *a = t_assets();
    lc_tokenizer *t = NULL;
    *why = NULL;
    if (!strcmp(name, "mistral-json") || !strcmp(name, "mistral-legacy") ||
        !strcmp(name, "mistral-spm")) {
        if (!a) {
            *why = "shared assets absent (../shared/assets)";
            return NULL;
        }
        const char *file = !strcmp(name, "mistral-json")     ? "tokenizer.json"
                           : !strcmp(name, "mistral-legacy") ? "tokenizer.legacy.json"
                                                             : "tokenizer.model";
        snprintf(path, sizeof path, "%s/mistral-7b-instruct-v0.3-tokenizer/%s", a, file);
        if (lc_tokenizer_load_file(path, NULL, &t)) {
            *why = lc_errmsg();
            return NULL;
        }
        return t;
    }
    snprintf(path, sizeof path, OWN "/%s/tokenizer.json", name);
    snprintf(cfg, sizeof cfg, OWN "/%s/tokenizer_config.json", name);
    if (!lc_is_file(path)) {
        *why = "fixtures absent (tests/fixtures/tokenizers)";
        return NULL;
    }
    if (lc_tokenizer_load_file(path, lc_is_file(cfg) ? cfg : NULL, &t)) {
        *why = lc_errmsg();
        return NULL;
    }
    return t;
}

/* ------------------------------------------------------ fixture lines */

static void check_fixture(const char *name) {
    char path[512];
    snprintf(path, sizeof path, FIX "/%s.jsonl", name);
    if (!lc_is_file(path)) SKIP("%s absent: reference fixtures not present", path);
    const char *why;
    lc_tokenizer *t = load_named(name, &why);
    if (!t) {
        if (strstr(why, "absent") || strstr(why, "not built")) SKIP("%s: %s", name, why);
        CHECK_MSG(0, "loading %s: %s", name, why);
        return;
    }
    bool spm = !strcmp(name, "mistral-spm");
    char *data;
    size_t len;
    CHECK_OK(lc_read_file(path, 64u << 20, &data, &len));
    lc_buf text = {0}, want_dec = {0}, want_skip = {0}, got = {0}, stream = {0};
    lc_ids want = {0}, want_sp = {0}, ids = {0};
    int lines = 0, bad = 0;
    for (char *line = data, *nl; line && *line; line = nl ? nl + 1 : NULL) {
        nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        if (!*line) continue;
        lines++;
        cJSON *o;
        if (lc_json_parse(line, strlen(line), path, &o)) {
            CHECK_MSG(0, "%s", lc_errmsg());
            break;
        }
        t_json_string_field(line, "text", &text);
        t_json_string_field(line, "decoded", &want_dec);
        t_json_string_field(line, "decoded_skip", &want_skip);
        ids_of(o, "ids", &want);
        ids_of(o, "ids_special", &want_sp);
        cJSON_Delete(o);
        int flags = spm ? LC_TOK_NO_PARSE_SPECIAL : 0;
        const char *what = NULL;
        lc_ids_clear(&ids);
        if (lc_tokenizer_encode(t, text.data, text.len, flags, &ids)) what = lc_errmsg();
        bool ok_ids = !what && ids_eq(&ids, &want);
        lc_ids sp = {0};
        if (!what && lc_tokenizer_encode(t, text.data, text.len, flags | LC_TOK_ADD_SPECIAL, &sp))
            what = lc_errmsg();
        bool ok_sp = !what && ids_eq(&sp, &want_sp);
        lc_buf_clear(&got);
        bool ok_dec = !lc_tokenizer_decode(t, want.data, want.len, false, &got) &&
                      got.len == want_dec.len && (!got.len || !memcmp(got.data, want_dec.data, got.len));
        lc_buf_clear(&got);
        bool ok_skip = !lc_tokenizer_decode(t, want.data, want.len, true, &got) &&
                       got.len == want_skip.len && (!got.len || !memcmp(got.data, want_skip.data, got.len));
        lc_detok d;
        lc_detok_init(&d, t, false);
        lc_buf_clear(&stream);
        bool ok_stream = true;
        for (size_t i = 0; i < want.len && ok_stream; i++) {
            size_t before = stream.len;
            ok_stream = !lc_detok_push(&d, want.data[i], &stream);
            // never half a UTF-8 character at the end of what was handed out
            for (size_t k = before; ok_stream && k < stream.len;) {
                unsigned c = (unsigned char)stream.data[k];
                size_t l = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
                ok_stream = k + l <= stream.len;
                k += l;
            }
        }
        ok_stream = ok_stream && !lc_detok_finish(&d, &stream) && stream.len == want_dec.len &&
                    !memcmp(stream.data ? stream.data : "", want_dec.data, stream.len);
        lc_detok_free(&d);
        if (!(ok_ids && ok_sp && ok_dec && ok_skip && ok_stream)) {
            if (++bad <= 5) {
                printf("    mismatch %s line %d:%s%s%s%s%s%s\n", name, lines, ok_ids ? "" : " ids",
                       ok_sp ? "" : " ids_special", ok_dec ? "" : " decoded",
                       ok_skip ? "" : " decoded_skip", ok_stream ? "" : " stream",
                       what ? " (error)" : "");
                print_text("text:    ", text.data, text.len);
                if (what) printf("      error: %s\n", what);
                if (!ok_ids) print_ids("want:    ", &want), print_ids("got:     ", &ids);
                if (!ok_sp) print_ids("want_sp: ", &want_sp), print_ids("got_sp:  ", &sp);
                if (!ok_dec || !ok_skip || !ok_stream) {
                    print_text("decoded: ", want_dec.data, want_dec.len);
                    lc_buf_clear(&got);
                    lc_tokenizer_decode(t, want.data, want.len, !ok_dec ? false : true, &got);
                    print_text("got:     ", got.data ? got.data : "", got.len);
                    if (!ok_stream) print_text("stream:  ", stream.data ? stream.data : "", stream.len);
                }
            }
        }
        lc_ids_free(&sp);
    }
    CHECK_MSG(bad == 0, "%s: %d of %d fixture lines differ from the reference library", name, bad,
              lines);
    CHECK(lines > 0);
    free(data);
    lc_buf_free(&text), lc_buf_free(&want_dec), lc_buf_free(&want_skip), lc_buf_free(&got);
    lc_buf_free(&stream);
    lc_ids_free(&want), lc_ids_free(&want_sp), lc_ids_free(&ids);
    lc_tokenizer_free(t);
}

static void test_fixture_mistral_json(void) { check_fixture("mistral-json"); }
static void test_fixture_mistral_legacy(void) { check_fixture("mistral-legacy"); }
static void test_fixture_mistral_spm(void) { check_fixture("mistral-spm"); }
static void test_fixture_demo_spm(void) { check_fixture("demo-spm"); }
static void test_fixture_bl_gpt2(void) { check_fixture("bl-gpt2"); }
static void test_fixture_bl_llama3(void) { check_fixture("bl-llama3"); }
static void test_fixture_bl_qwen2(void) { check_fixture("bl-qwen2"); }

/* ------------------------------------------------------ RISC-V hashes */

static void check_riscv(const char *name) {
    char path[512];
    snprintf(path, sizeof path, FIX "/%s.riscv.json", name);
    if (!lc_is_file(path)) SKIP("%s absent: reference fixtures not present", path);
    const char *a = t_assets();
    if (!a) SKIP("shared assets absent (../shared/assets)");
    const char *why;
    lc_tokenizer *t = load_named(name, &why);
    if (!t) {
        if (strstr(why, "absent") || strstr(why, "not built")) SKIP("%s: %s", name, why);
        CHECK_MSG(0, "loading %s: %s", name, why);
        return;
    }
    cJSON *ref;
    CHECK_OK(lc_json_parse_file(path, 64u << 20, &ref));
    if (!ref) {
        lc_tokenizer_free(t);
        return;
    }
    const char *want_hash = cJSON_GetObjectItemCaseSensitive(ref, "fnv1a64")->valuestring;
    int want_rows = cJSON_GetObjectItemCaseSensitive(ref, "rows")->valueint;
    const cJSON *sample = cJSON_GetObjectItemCaseSensitive(ref, "sample");
    int flags = !strcmp(name, "mistral-spm") ? LC_TOK_NO_PARSE_SPECIAL : 0;
    uint64_t h = 0xcbf29ce484222325ull;
    int rows = 0, bad_samples = 0;
    size_t bytes = 0;
    double secs = 0;
    lc_buf text = {0};
    lc_ids ids = {0}, want = {0};
    const char *files[2] = {"train.jsonl", "valid.jsonl"};
    for (int f = 0; f < 2; f++) {
        char dp[1024];
        snprintf(dp, sizeof dp, "%s/riscv-instruction-specification/%s", a, files[f]);
        char *data;
        size_t len;
        if (lc_read_file(dp, 256u << 20, &data, &len)) {
            CHECK_MSG(0, "%s", lc_errmsg());
            break;
        }
        for (char *line = data, *nl; line && *line; line = nl ? nl + 1 : NULL) {
            nl = strchr(line, '\n');
            if (nl) *nl = '\0';
            if (!*line) continue;
            t_json_string_field(line, "text", &text);
            lc_ids_clear(&ids);
            struct timespec t0, t1;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            int rc = lc_tokenizer_encode(t, text.data, text.len, flags, &ids);
            clock_gettime(CLOCK_MONOTONIC, &t1);
            secs += (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
            bytes += text.len;
            if (rc) {
                CHECK_MSG(0, "row %d: %s", rows, lc_errmsg());
                break;
            }
            for (size_t i = 0; i <= ids.len; i++) {
                uint32_t v = i < ids.len ? (uint32_t)ids.data[i] : 0xFFFFFFFFu;
                for (int k = 0; k < 4; k++) h = (h ^ ((v >> (8 * k)) & 0xFF)) * 0x100000001b3ull;
            }
            for (const cJSON *s = sample ? sample->child : NULL; s; s = s->next) {
                if (cJSON_GetObjectItemCaseSensitive(s, "row")->valueint != rows) continue;
                ids_of(s, "ids", &want);
                if (!ids_eq(&ids, &want) && ++bad_samples <= 3) {
                    printf("    %s riscv row %d differs\n", name, rows);
                    print_text("text: ", text.data, text.len);
                    print_ids("want: ", &want);
                    print_ids("got:  ", &ids);
                }
            }
            rows++;
        }
        free(data);
    }
    char got_hash[17];
    snprintf(got_hash, sizeof got_hash, "%016llx", (unsigned long long)h);
    printf("  %s: %d rows, %.2f MB in %.3f s single-threaded = %.2f MB/s\n", name, rows,
           (double)bytes / 1e6, secs, (double)bytes / 1e6 / (secs > 0 ? secs : 1e-9));
    CHECK_EQ_INT(rows, want_rows);
    CHECK_EQ_INT(bad_samples, 0);
    CHECK_EQ_STR(got_hash, want_hash);
    cJSON_Delete(ref);
    lc_buf_free(&text);
    lc_ids_free(&ids), lc_ids_free(&want);
    lc_tokenizer_free(t);
}

static void test_riscv_mistral_json(void) { check_riscv("mistral-json"); }
static void test_riscv_mistral_legacy(void) { check_riscv("mistral-legacy"); }
static void test_riscv_mistral_spm(void) { check_riscv("mistral-spm"); }
static void test_riscv_demo_spm(void) { check_riscv("demo-spm"); }
static void test_riscv_bl_gpt2(void) { check_riscv("bl-gpt2"); }
static void test_riscv_bl_llama3(void) { check_riscv("bl-llama3"); }
static void test_riscv_bl_qwen2(void) { check_riscv("bl-qwen2"); }

/* ------------------------------------------------- hand-made tokenizers */

/* A 14-token SentencePiece-style BPE. Expected ids follow from the library's rules:
 * Metaspace replaces ' ' by U+2581 and (prepend_scheme first) prepends one to the first
 * section; BPE merges the lowest-ranked pair first; characters outside the vocabulary
 * fall back to <0xXX> pieces (here only 0x21 '!' and 0xC3/0xA9 for 'é' exist). */
static const char TINY[] =
    "{\"version\":\"1.0\",\"added_tokens\":["
    "{\"id\":0,\"content\":\"<unk>\",\"special\":true,\"normalized\":false},"
    "{\"id\":1,\"content\":\"<s>\",\"special\":true,\"normalized\":false}],"
    "\"normalizer\":null,"
    "\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\","
    "\"prepend_scheme\":\"first\",\"split\":false},"
    "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":"
    "\"<s>\",\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],\"pair\":[],"
    "\"special_tokens\":{\"<s>\":{\"id\":\"<s>\",\"ids\":[1],\"tokens\":[\"<s>\"]}}},"
    "\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":"
    "{\"String\":\"\\u2581\"},\"content\":\" \"},{\"type\":\"ByteFallback\"},{\"type\":"
    "\"Fuse\"},{\"type\":\"Strip\",\"content\":\" \",\"start\":1,\"stop\":0}]},"
    "\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":\"<unk>\",\"fuse_unk\":true,"
    "\"byte_fallback\":true,\"vocab\":{\"<unk>\":0,\"<s>\":1,\"<0x21>\":2,\"<0xC3>\":3,"
    "\"<0xA9>\":4,\"\\u2581\":5,\"a\":6,\"b\":7,\"c\":8,\"\\u2581a\":9,\"bc\":10,"
    "\"\\u2581ab\":11,\"ab\":12,\"\\u2581abc\":13},"
    "\"merges\":[\"\\u2581 a\",[\"b\",\"c\"],\"\\u2581a b\",\"a b\",\"\\u2581ab c\"]}}";

static lc_tokenizer *tiny(void) {
    lc_tokenizer *t = NULL;
    CHECK_OK(lc_tokenizer_load_mem(TINY, strlen(TINY), NULL, 0, "tiny.json", NULL, &t));
    return t;
}

static void expect(lc_tokenizer *t, const char *text, int flags, const int32_t *want, size_t n) {
    lc_ids ids = {0};
    CHECK_OK(lc_tokenizer_encode(t, text, strlen(text), flags, &ids));
    bool ok = ids.len == n && (n == 0 || !memcmp(ids.data, want, n * sizeof *want));
    CHECK_MSG(ok, "encoding \"%s\"", text);
    if (!ok) print_ids("got:", &ids);
    lc_ids_free(&ids);
}

static void test_tiny_bpe(void) {
    lc_tokenizer *t = tiny();
    if (!t) return;
    // "abc" -> "▁abc": ▁+a (rank 0) then b+c (rank 1) then ▁a+b? no: ▁a,bc has no merge
    // -> [9, 10]
    expect(t, "abc", 0, (int32_t[]){9, 10}, 2);
    // "ab" -> ▁ab: ▁+a, then ▁a+b (rank 2) -> [11]
    expect(t, "ab", 0, (int32_t[]){11}, 1);
    // "ab c" -> "▁ab▁c": one word (split false): ▁a, ▁ab, then ▁, c -> [11, 5, 8]
    expect(t, "ab c", 0, (int32_t[]){11, 5, 8}, 3);
    // byte fallback: "!" -> ▁ then <0x21>; "é" -> <0xC3><0xA9>
    expect(t, "a!", 0, (int32_t[]){9, 2}, 2);
    expect(t, "\xC3\xA9", 0, (int32_t[]){5, 3, 4}, 3);
    // 'z' has no piece nor byte piece -> <unk>; two in a row fuse (fuse_unk)
    expect(t, "zz", 0, (int32_t[]){5, 0}, 2);
    // special token in the text; the section after it does not start the input
    expect(t, "<s>ab", 0, (int32_t[]){1, 12}, 2);
    expect(t, "<s>ab", LC_TOK_NO_PARSE_SPECIAL, (int32_t[]){5, 0, 12}, 3); // < s > fuse into one unk
    expect(t, "ab", LC_TOK_ADD_SPECIAL, (int32_t[]){1, 11}, 2);
    expect(t, "ab", LC_TOK_CONTINUATION, (int32_t[]){12}, 1);
    expect(t, "", 0, NULL, 0);
    expect(t, "", LC_TOK_ADD_SPECIAL, (int32_t[]){1}, 1);
    CHECK(lc_tokenizer_adds_bos(t));
    CHECK(!lc_tokenizer_adds_eos(t));
    CHECK_EQ_INT(lc_tokenizer_bos(t), 1);
    CHECK_EQ_INT(lc_tokenizer_vocab_size(t), 14);
    CHECK_EQ_INT(lc_tokenizer_token_id(t, "\xE2\x96\x81" "abc"), 13);
    CHECK_EQ_STR(lc_tokenizer_piece(t, 12), "ab");
    CHECK(lc_tokenizer_is_special(t, 1));
    CHECK(!lc_tokenizer_is_special(t, 9));
    lc_tokenizer_free(t);
}

static void test_tiny_decode(void) {
    lc_tokenizer *t = tiny();
    if (!t) return;
    lc_buf b = {0};
    // Replace ▁ -> ' ', bytes C3 A9 -> é, fuse, strip one leading space
    CHECK_OK(lc_tokenizer_decode(t, (int32_t[]){1, 9, 5, 3, 4, 2}, 6, false, &b));
    CHECK_EQ_STR(b.data, "<s> a é!"); // Strip only removes a space that starts the text
    lc_buf_clear(&b);
    CHECK_OK(lc_tokenizer_decode(t, (int32_t[]){1, 9, 5, 3, 4, 2}, 6, true, &b));
    CHECK_EQ_STR(b.data, "a é!");
    lc_buf_clear(&b);
    // a lone continuation byte is not UTF-8: one U+FFFD per byte of the run
    CHECK_OK(lc_tokenizer_decode(t, (int32_t[]){9, 4, 4}, 3, false, &b));
    CHECK_EQ_STR(b.data, "a\xEF\xBF\xBD\xEF\xBF\xBD");
    lc_buf_clear(&b);
    CHECK_FAILS(lc_tokenizer_decode(t, (int32_t[]){9, 14}, 2, false, &b), "cannot decode id 14");
    // streaming: é arrives in two byte pieces and is handed out whole
    lc_detok d;
    lc_detok_init(&d, t, false);
    CHECK_OK(lc_detok_push(&d, 9, &b));
    CHECK_EQ_STR(b.data, "a");
    CHECK_OK(lc_detok_push(&d, 5, &b));
    CHECK_OK(lc_detok_push(&d, 3, &b));
    CHECK(strcmp(b.data, "a \xEF\xBF\xBD") != 0);
    CHECK_OK(lc_detok_push(&d, 4, &b));
    // a byte run is all-or-nothing (another byte could still make it invalid): é waits
    // for the run to end
    CHECK_EQ_STR(b.data, "a ");
    CHECK_OK(lc_detok_finish(&d, &b));
    CHECK_EQ_STR(b.data, "a \xC3\xA9");
    lc_detok_free(&d);
    lc_buf_free(&b);
    lc_tokenizer_free(t);
}

/* The TINY text with one substring replaced, for the bad-input tests. */
static int load_edited(const char *from, const char *to, lc_tokenizer **out) {
    const char *p = strstr(TINY, from);
    if (!p) {
        printf("  test bug: \"%s\" not in TINY\n", from);
        return 0;
    }
    lc_buf b = {0};
    lc_buf_append(&b, TINY, (size_t)(p - TINY));
    lc_buf_puts(&b, to);
    lc_buf_puts(&b, p + strlen(from));
    int rc = lc_tokenizer_load_mem(b.data, b.len, NULL, 0, "tiny.json", NULL, out);
    lc_buf_free(&b);
    if (rc == 0) lc_tokenizer_free(*out);
    return rc;
}

static void test_bad_files(void) {
    lc_tokenizer *t;
    CHECK_FAILS(lc_tokenizer_load_mem(TINY, 200, NULL, 0, "tiny.json", NULL, &t),
                "tiny.json: invalid JSON");
    CHECK_FAILS(lc_tokenizer_load_mem(TINY, strlen(TINY) - 3, NULL, 0, "tiny.json", NULL, &t),
                "tiny.json: invalid JSON");
    CHECK_FAILS(load_edited("\"type\":\"BPE\"", "\"type\":\"Unigram\"", &t),
                "model.type \"Unigram\" is not supported");
    CHECK_FAILS(load_edited("\"type\":\"Metaspace\"", "\"type\":\"BertPreTokenizer\"", &t),
                "tiny.json: pre_tokenizer: pre-tokenizer type \"BertPreTokenizer\"");
    CHECK_FAILS(load_edited("\"normalizer\":null", "\"normalizer\":{\"type\":\"Precompiled\"}", &t),
                "normalizer type \"Precompiled\" is not supported");
    CHECK_FAILS(load_edited("\"normalizer\":null",
                            "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":"
                            "\"NFC\"},{\"type\":\"Nope\"}]}",
                            &t),
                "normalizer.normalizers[1]");
    CHECK_FAILS(load_edited("{\"type\":\"Fuse\"}", "{\"type\":\"CTC\"}", &t),
                "decoder.decoders[2]: decoder type \"CTC\"");
    CHECK_FAILS(load_edited("\"c\":8", "\"c\":\"8\"", &t), "model.vocab[\"c\"] must be an id");
    CHECK_FAILS(load_edited("\"c\":8", "\"c\":7", &t), "id 7 is given to both");
    CHECK_FAILS(load_edited("\"c\":8", "\"c\":2000000000", &t), "model.vocab[\"c\"] must be an id");
    CHECK_FAILS(load_edited("{\"id\":1,", "{\"id\":-1,", &t), "added_tokens[1]: \"id\" -1 is out of range");
    CHECK_FAILS(load_edited("[\"b\",\"c\"]", "[\"b\",\"q\"]", &t),
                "model.merges[1]: token \"q\" is not in model.vocab");
    CHECK_FAILS(load_edited("\"a b\"", "\"c a\"", &t),
                "model.merges[3]: the merged token \"ca\" is not in model.vocab");
    CHECK_FAILS(load_edited("\"a b\"", "\"a  b\"", &t), "model.merges[3]");
    CHECK_FAILS(load_edited("\"dropout\":null", "\"dropout\":0.1", &t), "dropout must be null");
    CHECK_FAILS(load_edited("\"ids\":[1]", "\"ids\":[99]", &t), "not an id of this vocabulary");
    CHECK_FAILS(load_edited("{\"id\":1,\"content\":\"<s>\"", "{\"id\":3,\"content\":\"<s>\"", &t),
                "added_tokens[1]: \"<s>\" has id 3 but model.vocab gives it id 1");
    CHECK_FAILS(load_edited("\"special\":true,\"normalized\":false}]",
                            "\"special\":\"yes\",\"normalized\":false}]", &t),
                "added_tokens[1]: \"special\" must be true or false");
    CHECK_FAILS(load_edited("\"prepend_scheme\":\"first\"", "\"prepend_scheme\":\"sometimes\"", &t),
                "prepend_scheme must be");
    CHECK_FAILS(load_edited("\"pre_tokenizer\":{\"type\":\"Metaspace\"",
                            "\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\"},"
                            "\"behavior\":\"Isolated\"},\"x\":{\"type\":\"Metaspace\"",
                            &t),
                "regex does not compile");
    CHECK_FAILS(lc_tokenizer_load_file("/nonexistent/tokenizer.json", NULL, &t),
                "/nonexistent/tokenizer.json");
}

static void test_bad_text(void) {
    lc_tokenizer *t = tiny();
    if (!t) return;
    lc_ids ids = {0};
    CHECK_FAILS(lc_tokenizer_encode(t, "ab\xC3(", 4, 0, &ids), "not valid UTF-8 (byte 2");
    CHECK_FAILS(lc_tokenizer_encode(t, "\xED\xA0\x80", 3, 0, &ids), "not valid UTF-8");
    CHECK_EQ_INT(ids.len, 0);
    lc_ids_free(&ids);
    lc_tokenizer_free(t);
}

/* Byte-level: the GPT-2 alphabet and a tiny byte-level BPE with the GPT-2 regex. */
static void test_byte_level_tiny(void) {
    static const char J[] =
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"h\":0,\"i\":1,\"\\u0120\":2,\"hi\":3,"
        "\"\\u0120hi\":4,\"!\":5,\"\\u010a\":6},\"merges\":[\"h i\",\"\\u0120 hi\"]},"
        "\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true},"
        "\"decoder\":{\"type\":\"ByteLevel\"},\"added_tokens\":[]}";
    lc_tokenizer *t = NULL;
    CHECK_OK(lc_tokenizer_load_mem(J, strlen(J), NULL, 0, "bl.json", NULL, &t));
    if (!t) return;
    CHECK_EQ_STR(lc_tokenizer_kind(t), "byte-level BPE from tokenizer.json");
    // regex: "hi" | " hi" | "!" | "\n" -> ids 3, 4, 5, 6
    expect(t, "hi hi!\n", 0, (int32_t[]){3, 4, 5, 6}, 4);
    lc_buf b = {0};
    CHECK_OK(lc_tokenizer_decode(t, (int32_t[]){3, 4, 5, 6}, 4, false, &b));
    CHECK_EQ_STR(b.data, "hi hi!\n");
    lc_buf_free(&b);
    lc_tokenizer_free(t);
}

/* Streaming decode of random id sequences (byte pieces, specials and all) must hand out
 * exactly the full decode, whose correctness the fixtures check, and never half a
 * character. */
static void check_stream_random(const char *name) {
    const char *why;
    lc_tokenizer *t = load_named(name, &why);
    if (!t) SKIP("%s: %s", name, why);
    uint64_t r = 0x9E3779B97F4A7C15ull;
    int32_t V = lc_tokenizer_vocab_size(t);
    lc_ids ids = {0};
    lc_buf full = {0}, st = {0};
    int bad = 0;
    for (int round = 0; round < 300 && bad < 3; round++) {
        lc_ids_clear(&ids);
        int len = 1 + round % 40;
        for (int i = 0; i < len; i++) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            uint32_t x = (uint32_t)(r >> 33);
            // half the time a low id (specials and byte pieces live there)
            lc_ids_push(&ids, (int32_t)(x % 2 ? (x >> 1) % (V < 300 ? V : 300) : (x >> 1) % V));
        }
        for (int skip = 0; skip < 2; skip++) {
            lc_buf_clear(&full), lc_buf_clear(&st);
            CHECK_OK(lc_tokenizer_decode(t, ids.data, ids.len, skip, &full));
            lc_detok d;
            lc_detok_init(&d, t, skip);
            for (size_t i = 0; i < ids.len; i++) {
                CHECK_OK(lc_detok_push(&d, ids.data[i], &st));
                CHECK(lc_utf8_check_test(st.data, st.len));
            }
            CHECK_OK(lc_detok_finish(&d, &st));
            lc_detok_free(&d);
            if (full.len != st.len || memcmp(full.data ? full.data : "", st.data ? st.data : "", st.len)) {
                bad++;
                print_ids("ids:", &ids);
                print_text("full:  ", full.data ? full.data : "", full.len);
                print_text("stream:", st.data ? st.data : "", st.len);
            }
        }
    }
    CHECK_MSG(bad == 0, "%s: streaming decode differs from the full decode", name);
    lc_ids_free(&ids);
    lc_buf_free(&full), lc_buf_free(&st);
    lc_tokenizer_free(t);
}

static void test_stream_random_mistral(void) { check_stream_random("mistral-json"); }
static void test_stream_random_demo_spm(void) { check_stream_random("demo-spm"); }
static void test_stream_random_bl_qwen2(void) { check_stream_random("bl-qwen2"); }

/* tokenizer_config.json: transformers' LlamaTokenizerFast rebuilds the post-processor
 * from add_bos_token / add_eos_token; other classes keep the file's post-processor. */
static void test_config(void) {
    lc_tokenizer *t = NULL;
    const char *llama = "{\"tokenizer_class\": \"LlamaTokenizerFast\", \"add_bos_token\": false, "
                        "\"add_eos_token\": true, \"bos_token\": \"<s>\", \"eos_token\": "
                        "{\"content\": \"<unk>\"}, \"chat_template\": [{\"name\": \"tool_use\", "
                        "\"template\": \"T\"}, {\"name\": \"default\", \"template\": \"D\"}]}";
    CHECK_OK(lc_tokenizer_load_mem(TINY, strlen(TINY), llama, strlen(llama), "tiny.json",
                                   "tiny_config.json", &t));
    if (t) {
        expect(t, "ab", LC_TOK_ADD_SPECIAL, (int32_t[]){11, 0}, 2);
        CHECK(!lc_tokenizer_adds_bos(t));
        CHECK(lc_tokenizer_adds_eos(t));
        CHECK_EQ_INT(lc_tokenizer_eos(t), 0);
        CHECK_EQ_STR(lc_tokenizer_chat_template(t), "D");
        lc_tokenizer_free(t);
    }
    const char *other = "{\"tokenizer_class\": \"PreTrainedTokenizerFast\", \"add_bos_token\": "
                        "false, \"chat_template\": \"{{ x }}\"}";
    CHECK_OK(lc_tokenizer_load_mem(TINY, strlen(TINY), other, strlen(other), "tiny.json",
                                   "tiny_config.json", &t));
    if (t) {
        expect(t, "ab", LC_TOK_ADD_SPECIAL, (int32_t[]){1, 11}, 2);
        CHECK_EQ_STR(lc_tokenizer_chat_template(t), "{{ x }}");
        lc_tokenizer_free(t);
    }
    const char *bad = "{\"bos_token\": \"<bos>\"}";
    CHECK_FAILS(lc_tokenizer_load_mem(TINY, strlen(TINY), bad, strlen(bad), "tiny.json",
                                      "tiny_config.json", &t),
                "tiny_config.json: bos_token \"<bos>\" is not a token of tiny.json");
    const char *bad2 = "{\"add_bos_token\": 1}";
    CHECK_FAILS(lc_tokenizer_load_mem(TINY, strlen(TINY), bad2, strlen(bad2), "tiny.json",
                                      "tiny_config.json", &t),
                "tiny_config.json: \"add_bos_token\" must be true or false");
}

/* The Mistral folder: tokenizer.json + tokenizer_config.json (README of the shared assets:
 * <unk>=0 <s>=1 </s>=2 [INST]=3 [/INST]=4; the config says add_bos_token). */
static void test_mistral_dir(void) {
    const char *a = t_assets();
    if (!a) SKIP("shared assets absent (../shared/assets)");
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/mistral-7b-instruct-v0.3-tokenizer", a);
    lc_tokenizer *t = NULL;
    CHECK_OK(lc_tokenizer_load_dir(dir, &t));
    if (!t) return;
    CHECK_EQ_INT(lc_tokenizer_vocab_size(t), 32768);
    CHECK_EQ_INT(lc_tokenizer_bos(t), 1);
    CHECK_EQ_INT(lc_tokenizer_eos(t), 2);
    CHECK_EQ_INT(lc_tokenizer_unk(t), 0);
    CHECK_EQ_INT(lc_tokenizer_pad(t), -1);
    CHECK(lc_tokenizer_adds_bos(t));
    CHECK(!lc_tokenizer_adds_eos(t));
    CHECK(lc_tokenizer_is_special(t, 3));
    CHECK_EQ_INT(lc_tokenizer_token_id(t, "[/INST]"), 4);
    CHECK_EQ_INT(lc_tokenizer_token_id(t, "<0x0A>"), 771 + 10);
    CHECK(lc_tokenizer_chat_template(t) != NULL);
    CHECK(strstr(lc_tokenizer_kind(t), "SentencePiece-style") != NULL);
    lc_ids ids = {0};
    CHECK_OK(lc_tokenizer_encode(t, "[INST]", 6, LC_TOK_ADD_SPECIAL, &ids));
    CHECK(ids.len == 2 && ids.data[0] == 1 && ids.data[1] == 3);
    lc_ids_free(&ids);
    lc_tokenizer_free(t);
}

int main(void) {
    RUN(test_mistral_dir);
    RUN(test_config);
    RUN(test_stream_random_mistral);
    RUN(test_stream_random_demo_spm);
    RUN(test_stream_random_bl_qwen2);
    RUN(test_tiny_bpe);
    RUN(test_tiny_decode);
    RUN(test_bad_files);
    RUN(test_bad_text);
    RUN(test_byte_level_tiny);
    RUN(test_fixture_mistral_json);
    RUN(test_fixture_mistral_legacy);
    RUN(test_fixture_mistral_spm);
    RUN(test_fixture_demo_spm);
    RUN(test_fixture_bl_gpt2);
    RUN(test_fixture_bl_llama3);
    RUN(test_fixture_bl_qwen2);
    RUN(test_riscv_mistral_json);
    RUN(test_riscv_mistral_legacy);
    RUN(test_riscv_mistral_spm);
    RUN(test_riscv_demo_spm);
    RUN(test_riscv_bl_gpt2);
    RUN(test_riscv_bl_llama3);
    RUN(test_riscv_bl_qwen2);
    return t_summary();
}
