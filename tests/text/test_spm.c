/*
 * test_spm.c — the SentencePiece model reader (src/text/spm.c).
 *
 * References, never our own output:
 *  - tests/fixtures/tokenizer/mistral-spm.jsonl and mistral-spm.riscv.json: ids and
 *    decodes made by the real `sentencepiece` library (SKIP while absent);
 *  - the shared assets' README facts about Mistral's tokenizer.model, and Mistral's own
 *    golden token ids (golden_tokens_v3.json): each run of non-control ids there is
 *    sp.encode of some text, so decoding it and encoding the result must give it back;
 *  - small hand-made models whose encodings follow from sentencepiece's rules by hand
 *    (bpe_model.cc: best score first, leftmost on ties, unused pieces resegmented;
 *    normalizer.cc; PopulateSentencePieceText; Decode);
 *  - hand-made broken protobufs, which must fail with one located line, never crash;
 *  - the fast encode path (segments, id-pair merges, cache) against the plain one
 *    (bpe_model.cc's algorithm on the whole text, itself checked against the fixtures):
 *    identical ids on the fixture texts, the RISC-V rows, and random texts.
 */
#include <stdint.h>
#include <time.h>

#include "core/file.h"
#include "core/json.h"
#include "core/mem.h"
#include "core/vec.h"
#include "harness.h"
#include "text/spm.h"

#define SP "\xe2\x96\x81" // U+2581

/* ------------------------------------------------ a small protobuf writer ----- */

static void w_varint(lc_buf *b, uint64_t v) {
    do {
        unsigned char c = v & 0x7F;
        v >>= 7;
        if (v) c |= 0x80;
        lc_buf_putc(b, (char)c);
    } while (v);
}
static void w_key(lc_buf *b, unsigned f, int wire) {
    w_varint(b, (uint64_t)f << 3 | (unsigned)wire);
}
static void w_bytes(lc_buf *b, unsigned f, const void *p, size_t n) {
    w_key(b, f, 2);
    w_varint(b, n);
    lc_buf_append(b, p, n);
}
static void w_str(lc_buf *b, unsigned f, const char *s) { w_bytes(b, f, s, strlen(s)); }
static void w_uint(lc_buf *b, unsigned f, uint64_t v) {
    w_key(b, f, 0);
    w_varint(b, v);
}
static void w_float(lc_buf *b, unsigned f, float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    w_key(b, f, 5);
    for (int i = 0; i < 4; i++)
        lc_buf_putc(b, (char)(u >> (8 * i)));
}
static void w_piece(lc_buf *m, const char *piece, float score, int type) {
    lc_buf p = {0};
    w_str(&p, 1, piece);
    w_float(&p, 2, score);
    if (type != LC_SPM_NORMAL) w_uint(&p, 3, (uint64_t)type);
    w_bytes(m, 1, p.data, p.len);
    lc_buf_free(&p);
}

typedef struct {
    const char *piece;
    float score;
    int type;
} tpiece;

typedef struct {
    int model_type; // 0: BPE
    bool byte_fallback, no_dummy_prefix, remove_extra_ws, ws_suffix;
    const char *charsmap; // non-NULL: a precompiled_charsmap of these bytes
} topts;

/* A model: <unk>=0, <s>=1, </s>=2, then <0x00>..<0xFF> (3..258) with byte_fallback, then
 * `pieces`. */
static void make_model(lc_buf *m, const tpiece *pieces, size_t n, topts o) {
    lc_buf_clear(m);
    w_piece(m, "<unk>", 0, LC_SPM_UNKNOWN);
    w_piece(m, "<s>", 0, LC_SPM_CONTROL);
    w_piece(m, "</s>", 0, LC_SPM_CONTROL);
    if (o.byte_fallback)
        for (int b = 0; b < 256; b++) {
            char s[8];
            snprintf(s, sizeof s, "<0x%02X>", b);
            w_piece(m, s, 0, LC_SPM_BYTE);
        }
    for (size_t i = 0; i < n; i++)
        w_piece(m, pieces[i].piece, pieces[i].score, pieces[i].type ? pieces[i].type : 1);
    lc_buf t = {0}, nz = {0};
    w_uint(&t, 3, (uint64_t)(o.model_type ? o.model_type : LC_SPM_BPE));
    w_uint(&t, 4, 1000);
    if (o.ws_suffix) w_uint(&t, 24, 1);
    if (o.byte_fallback) w_uint(&t, 35, 1);
    w_uint(&t, 43, (uint64_t)(int64_t)-1); // pad_id -1: a 10-byte varint, as real files have
    w_str(&nz, 1, o.charsmap ? "nmt_nfkc" : "identity");
    if (o.charsmap) w_str(&nz, 2, o.charsmap);
    w_uint(&nz, 3, !o.no_dummy_prefix);
    w_uint(&nz, 4, o.remove_extra_ws);
    w_bytes(m, 2, t.data, t.len);
    w_bytes(m, 3, nz.data, nz.len);
    lc_buf_free(&t);
    lc_buf_free(&nz);
}

static lc_spm *load_model(const tpiece *pieces, size_t n, topts o) {
    lc_buf m = {0};
    lc_spm *s = NULL;
    make_model(&m, pieces, n, o);
    if (lc_spm_load_mem(m.data, m.len, "hand.model", &s)) printf("  load: %s\n", lc_errmsg());
    lc_buf_free(&m);
    return s;
}

/* Encodes text and compares with the pieces expected (space-separated piece strings). */
static int check_pieces(const lc_spm *s, const char *text, const char *want) {
    lc_ids ids = {0};
    lc_buf got = {0};
    if (lc_spm_encode(s, text, strlen(text), &ids)) return 0;
    for (size_t i = 0; i < ids.len; i++)
        lc_buf_printf(&got, "%s%s", i ? " " : "", lc_spm_piece(s, ids.data[i]));
    int ok = !strcmp(got.data ? got.data : "", want);
    if (!ok)
        printf("  encode(\"%s\"): got [%s], want [%s]\n", text, got.data ? got.data : "", want);
    lc_buf_free(&got);
    lc_ids_free(&ids);
    return ok;
}

static int check_decode(const lc_spm *s, const int32_t *ids, size_t n, const char *want) {
    lc_buf out = {0};
    if (lc_spm_decode(s, ids, n, &out)) return 0;
    int ok = !strcmp(out.data ? out.data : "", want);
    if (!ok) printf("  decode: got [%s], want [%s]\n", out.data ? out.data : "", want);
    lc_buf_free(&out);
    return ok;
}

/* ------------------------------------------------------- hand-made models ----- */

static const tpiece k_pieces[] = {
    {SP, -10, 0},
    {"a", -10, 0},
    {"b", -10, 0},
    {"c", -10, 0},
    {"x", -10, 0},
    {"y", -10, 0},
    {"w", -10, 0},
    {"ab", -1, 0},
    {"bc", -0.5f, 0},
    {"abc", -2, 0},
    {"aa", -3, 0},
    {SP "a", -4, 0},
    {"xy", 5, LC_SPM_UNUSED},
    {"<sep>", 0, LC_SPM_USER_DEFINED},
    {"a<sep>", 9, 0},
    {"yw", -6, 0},
};
#define NK (sizeof k_pieces / sizeof *k_pieces)

static void test_bpe_merge_order(void) {
    lc_spm *s = load_model(k_pieces, NK, (topts){.byte_fallback = true});
    if (!s) {
        CHECK(0);
        return;
    }
    // bc (-0.5) beats ab (-1); then a+bc = abc (-2); ▁+abc is no piece.
    CHECK(check_pieces(s, "abc", SP " abc"));
    // ab beats ▁a (-4): "▁ab" -> ▁ ab.
    CHECK(check_pieces(s, "ab", SP " ab"));
    // "▁aaa": pairs ▁a (-4), aa (-3) at 1, aa (-3) at 2: the two aa tie and the leftmost
    // wins -> ▁ aa a; then ▁+aa and aa+a are no pieces, and ▁a is stale.
    CHECK(check_pieces(s, "aaa", SP " aa a"));
    CHECK(check_pieces(s, "a", SP "a"));
    // Byte fallback for what no piece covers: 'z' and the two bytes of 'é'.
    CHECK(check_pieces(s, "z", SP " <0x7A>"));
    CHECK(check_pieces(s, "\xc3\xa9", SP " <0xC3> <0xA9>"));
    // Control pieces written in the text are plain text.
    CHECK(check_pieces(s, "<s>", SP " <0x3C> <0x73> <0x3E>"));
    // Empty text: no ids at all (no dummy prefix on nothing).
    CHECK(check_pieces(s, "", ""));
    // Spaces: each becomes ▁ (no removal of extra whitespace here).
    CHECK(check_pieces(s, " a  b", SP " " SP "a " SP " " SP " b"));
    // Invalid UTF-8 becomes U+FFFD (EF BF BD) per byte, then byte fallback.
    CHECK(check_pieces(s, "\xff", SP " <0xEF> <0xBF> <0xBD>"));
    lc_spm_free(s);
}

static void test_bpe_unused_and_user_defined(void) {
    lc_spm *s = load_model(k_pieces, NK, (topts){.byte_fallback = true});
    if (!s) {
        CHECK(0);
        return;
    }
    // xy is UNUSED: it is merged (score 5) and then resegmented into x y.
    CHECK(check_pieces(s, "xy", SP " x y"));
    // The unused piece still takes part in merging: xy (5) beats yw (-6), so yw is never
    // formed; xy+w and ▁+xy are no pieces; xy is then resegmented -> ▁ x y w.
    CHECK(check_pieces(s, "xyw", SP " x y w"));
    // The user-defined symbol is matched whole and never merged (not even into the
    // high-scoring a<sep>).
    CHECK(check_pieces(s, "a<sep>b", SP "a <sep> b"));
    CHECK(check_pieces(s, "<sep><sep>", SP " <sep> <sep>"));
    // A prefix of it is not it.
    CHECK(check_pieces(s, "<se", SP " <0x3C> <0x73> <0x65>"));
    lc_spm_free(s);
}

static void test_unknown_without_byte_fallback(void) {
    lc_spm *s = load_model(k_pieces, NK, (topts){0});
    if (!s) {
        CHECK(0);
        return;
    }
    // A run of unknown characters becomes one <unk>; a known piece ends the run.
    CHECK(check_pieces(s, "zzq a", SP " <unk> " SP "a"));
    CHECK(check_pieces(s, "zaz", SP " <unk> a <unk>"));
    // Decode: the unknown piece is " ⁇ ", the first ▁ is dropped.
    int32_t ids[] = {lc_spm_piece_id(s, SP), 0, lc_spm_piece_id(s, SP), lc_spm_piece_id(s, "a")};
    CHECK(check_decode(s, ids, 4, " \xe2\x81\x87  a"));
    CHECK_EQ_INT(lc_spm_byte_fallback(s), 0);
    lc_spm_free(s);
}

static void test_normalizer_options(void) {
    tpiece p[] = {{SP, -1, 0}, {"a", -1, 0}, {"b", -1, 0}, {SP "a", 0, 0}, {"a" SP, -0.5f, 0}};
    lc_spm *s = load_model(p, 5, (topts){.remove_extra_ws = true, .byte_fallback = true});
    if (!s) {
        CHECK(0);
        return;
    }
    // Leading, trailing and repeated spaces go; the dummy prefix stays.
    CHECK(check_pieces(s, "   a    b  ", SP "a " SP " b"));
    CHECK(check_pieces(s, "    ", ""));
    CHECK_EQ_INT(lc_spm_remove_extra_whitespaces(s), 1);
    // Decode with remove_extra_whitespaces strips every leading ▁ while nothing is written.
    int32_t ids[] = {lc_spm_piece_id(s, SP), lc_spm_piece_id(s, SP "a")};
    CHECK(check_decode(s, ids, 2, "a"));
    lc_spm_free(s);

    s = load_model(p, 5, (topts){.ws_suffix = true, .byte_fallback = true});
    if (!s) {
        CHECK(0);
        return;
    }
    // treat_whitespace_as_suffix: the dummy ▁ goes at the end: "a▁b▁", where a▁ is the
    // only pair that is a piece (▁b and b▁ are not) -> a▁ b ▁.
    CHECK(check_pieces(s, "a b", "a" SP " b " SP));
    lc_spm_free(s);

    s = load_model(p, 5, (topts){.no_dummy_prefix = true, .byte_fallback = true});
    if (!s) {
        CHECK(0);
        return;
    }
    CHECK(check_pieces(s, "a", "a"));
    CHECK_EQ_INT(lc_spm_add_dummy_prefix(s), 0);
    // Without add_dummy_prefix (nor remove_extra_whitespaces) decode keeps a leading space.
    int32_t ids2[] = {lc_spm_piece_id(s, SP "a")};
    CHECK(check_decode(s, ids2, 1, " a"));
    lc_spm_free(s);
}

static void test_decode_rules(void) {
    lc_spm *s = load_model(k_pieces, NK, (topts){.byte_fallback = true});
    if (!s) {
        CHECK(0);
        return;
    }
    int32_t sp = lc_spm_piece_id(s, SP), a = lc_spm_piece_id(s, "a"),
            spa = lc_spm_piece_id(s, SP "a");
    int32_t B = 3; // <0x00>
    { // Control pieces vanish and do not count as text: the ▁ after <s> is still first.
        int32_t ids[] = {1, sp, a, 2};
        CHECK(check_decode(s, ids, 4, "a"));
    }
    { // Only the first piece's ▁ goes.
        int32_t ids[] = {spa, spa};
        CHECK(check_decode(s, ids, 2, "a a"));
    }
    { // Bytes are assembled into characters; bytes of U+2581 stay U+2581.
        int32_t ids[] = {B + 0xE2, B + 0x96, B + 0x81, B + 0xC3, B + 0xA9};
        CHECK(check_decode(s, ids, 5, SP "\xc3\xa9"));
    }
    { // Malformed byte sequences: U+FFFD per bad byte, the rest kept.
        int32_t ids[] = {B + 0xC3, B + 0x28, B + 0xE2, B + 0x96};
        CHECK(check_decode(s, ids, 4, "\xef\xbf\xbd(\xef\xbf\xbd\xef\xbf\xbd"));
    }
    { // Text written by bytes first: the following ▁ is a space.
        int32_t ids[] = {B + 0x41, spa};
        CHECK(check_decode(s, ids, 2, "A a"));
    }
    { // Out of range: an error, out untouched.
        int32_t ids[] = {a, 100000};
        lc_buf out = {0};
        lc_buf_puts(&out, "keep");
        CHECK_FAILS(lc_spm_decode(s, ids, 2, &out), "cannot decode id 100000");
        CHECK_EQ_STR(out.data, "keep");
        int32_t neg = -1;
        CHECK_FAILS(lc_spm_decode(s, &neg, 1, &out), "hand.model");
        lc_buf_free(&out);
    }
    CHECK(check_decode(s, NULL, 0, ""));
    lc_spm_free(s);
}

/* -------------------------------------------------------------- bad input ----- */

static void test_bad_protobufs(void) {
    lc_spm *s = NULL;
    CHECK_FAILS(lc_spm_load_mem("", 0, "e.model", &s), "e.model: the file is empty");
    // pieces (field 1, length-delimited) whose length varint is cut short.
    CHECK_FAILS(lc_spm_load_mem("\x0a\x80", 2, "t.model", &s), "truncated varint");
    // A length past the end.
    CHECK_FAILS(lc_spm_load_mem("\x0a\x05"
                                "a",
                                3, "t.model", &s),
                "ends at byte 3");
    // An absurd length (2^63).
    CHECK_FAILS(lc_spm_load_mem("\x0a\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", 11, "t.model", &s),
                "needs");
    // A varint of more than 64 bits.
    CHECK_FAILS(lc_spm_load_mem("\x38\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f", 11, "t.model", &s),
                "more than 64 bits");
    // pieces as a varint: wrong wire type.
    CHECK_FAILS(lc_spm_load_mem("\x08\x01", 2, "t.model", &s),
                "pieces (field 1) at byte 0 has wire type 0");
    // Group wire types and field 0.
    CHECK_FAILS(lc_spm_load_mem("\x0b", 1, "t.model", &s), "group");
    CHECK_FAILS(lc_spm_load_mem("\x00\x00", 2, "t.model", &s), "invalid field number 0");
    // Inside a piece: score as a varint.
    CHECK_FAILS(lc_spm_load_mem("\x0a\x05\x0a\x01"
                                "a\x10\x01",
                                7, "t.model", &s),
                "pieces[0].score (field 2) at byte 5 has wire type 0");
    // A truncated float.
    CHECK_FAILS(lc_spm_load_mem("\x0a\x04\x0a\x01"
                                "a\x15",
                                6, "t.model", &s),
                "pieces[0] score");

    lc_buf m = {0};
    tpiece bad_utf8[] = {{"\xff", 0, 0}};
    make_model(&m, bad_utf8, 1, (topts){0});
    CHECK_FAILS(lc_spm_load_mem(m.data, m.len, "u.model", &s), "u.model: pieces[3]");
    CHECK_FAILS(lc_spm_load_mem(m.data, m.len, "u.model", &s), "not valid UTF-8");
    tpiece dup[] = {{"a", 0, 0}, {"a", -1, 0}};
    make_model(&m, dup, 2, (topts){0});
    CHECK_FAILS(lc_spm_load_mem(m.data, m.len, "d.model", &s), "piece 4 'a'");
    tpiece ctl_dup[] = {{"<s>", 0, 0}}; // a NORMAL twin of a CONTROL piece: sentencepiece allows it
    make_model(&m, ctl_dup, 1, (topts){0});
    CHECK_OK(lc_spm_load_mem(m.data, m.len, "d.model", &s));
    if (s) {
        CHECK_EQ_INT(lc_spm_piece_id(s, "<s>"), 1);
        CHECK_EQ_INT(lc_spm_bos(s), 1);
        lc_spm_free(s);
    }
    tpiece second_unk[] = {{"<unk2>", 0, LC_SPM_UNKNOWN}};
    make_model(&m, second_unk, 1, (topts){0});
    CHECK_FAILS(lc_spm_load_mem(m.data, m.len, "x.model", &s), "second unknown piece");
    tpiece stray_byte[] = {{"<0x41>", 0, LC_SPM_BYTE}};
    make_model(&m, stray_byte, 1, (topts){0});
    CHECK_FAILS(lc_spm_load_mem(m.data, m.len, "x.model", &s), "byte_fallback is false");
    tpiece bad_byte[] = {{"<0x-1>", 0, LC_SPM_BYTE}}; // found by fuzzing: sscanf took "-1"
    make_model(&m, bad_byte, 1, (topts){.byte_fallback = true});
    CHECK_FAILS(lc_spm_load_mem(m.data, m.len, "x.model", &s), "not of the form <0xXX>");
    tpiece empty[] = {{"", 0, 0}};
    make_model(&m, empty, 1, (topts){0});
    CHECK_FAILS(lc_spm_load_mem(m.data, m.len, "x.model", &s), "empty piece");
    make_model(&m, k_pieces, NK, (topts){.model_type = LC_SPM_UNIGRAM});
    CHECK_FAILS(lc_spm_load_mem(m.data, m.len, "x.model", &s),
                "model type UNIGRAM is not implemented");
    make_model(&m, k_pieces, NK, (topts){.model_type = LC_SPM_CHAR});
    CHECK_FAILS(lc_spm_load_mem(m.data, m.len, "x.model", &s), "CHAR");
    make_model(&m, k_pieces, NK, (topts){.charsmap = "\x04\x00\x00\x00xxxxyy"});
    CHECK_FAILS(lc_spm_load_mem(m.data, m.len, "x.model", &s), "normalizer 'nmt_nfkc'");

    // No trainer_spec at all: the proto's default model type, UNIGRAM.
    lc_buf_clear(&m);
    w_piece(&m, "<unk>", 0, LC_SPM_UNKNOWN);
    CHECK_FAILS(lc_spm_load_mem(m.data, m.len, "x.model", &s), "UNIGRAM");
    // A BPE model without an unknown piece.
    lc_buf_clear(&m);
    w_piece(&m, "a", 0, LC_SPM_NORMAL);
    w_bytes(&m, 2, "\x18\x02", 2);
    CHECK_FAILS(lc_spm_load_mem(m.data, m.len, "x.model", &s), "UNKNOWN");
    // A type out of range.
    lc_buf_clear(&m);
    w_bytes(&m, 1,
            "\x0a\x01"
            "a\x18\x09",
            5);
    CHECK_FAILS(lc_spm_load_mem(m.data, m.len, "x.model", &s), "not a piece type");
    // byte_fallback with a byte piece missing.
    make_model(&m, k_pieces, NK, (topts){.byte_fallback = true});
    {
        lc_buf t = {0};
        size_t k = 0; // drop piece <0x41>: find its string
        while (k + 6 <= m.len && memcmp(m.data + k, "<0x41>", 6))
            k++;
        const char *cut = m.data + k;
        size_t at = (size_t)(cut - m.data) - 4; // 0a LEN 0a 06 '<0x41>'
        lc_buf_append(&t, m.data, at);
        lc_buf_append(&t, m.data + at + 2 + (unsigned char)m.data[at + 1],
                      m.len - at - 2 - (unsigned char)m.data[at + 1]);
        CHECK_FAILS(lc_spm_load_mem(t.data, t.len, "x.model", &s), "<0x41>");
        lc_buf_free(&t);
    }
    CHECK_FAILS(lc_spm_load("no/such/tokenizer.model", &s), "no/such/tokenizer.model");
    CHECK(s == NULL);
    lc_buf_free(&m);
}

/* Every prefix of a valid model loads or fails cleanly (ASan watches). */
static void test_truncations(void) {
    lc_buf m = {0};
    make_model(&m, k_pieces, NK, (topts){.byte_fallback = true});
    int ok = 0;
    for (size_t n = 0; n < m.len; n++) {
        lc_spm *s = NULL;
        lc_err_clear();
        if (lc_spm_load_mem(m.data, n, "cut.model", &s) == 0) {
            ok++;
            lc_ids ids = {0};
            CHECK_OK(lc_spm_encode(s, "abc xy", 6, &ids));
            lc_ids_free(&ids);
            lc_spm_free(s);
        } else {
            CHECK_MSG(strstr(lc_errmsg(), "cut.model") && !strchr(lc_errmsg(), '\n'),
                      "prefix %zu: message \"%s\"", n, lc_errmsg());
        }
    }
    // Only the cut right after the trainer spec can load (the normalizer spec then takes
    // its defaults): no unk before the pieces, no BPE before the trainer spec.
    CHECK(ok <= 1);
    lc_buf_free(&m);
}

/* ------------------------------------------------------ Mistral's model ----- */

static lc_spm *mistral(void) {
    const char *a = t_assets();
    if (!a) return NULL;
    char path[4200];
    snprintf(path, sizeof path, "%s/mistral-7b-instruct-v0.3-tokenizer/tokenizer.model", a);
    lc_spm *s = NULL;
    if (lc_spm_load(path, &s)) printf("  %s\n", lc_errmsg());
    return s;
}

static void test_mistral_facts(void) {
    if (!t_assets()) SKIP("shared assets absent (../shared/assets)");
    lc_spm *s = mistral();
    if (!s) {
        CHECK(0);
        return;
    }
    CHECK_EQ_INT(lc_spm_size(s), 32768);
    CHECK_EQ_STR(lc_spm_piece(s, 0), "<unk>");
    CHECK_EQ_STR(lc_spm_piece(s, 1), "<s>");
    CHECK_EQ_STR(lc_spm_piece(s, 2), "</s>");
    CHECK_EQ_STR(lc_spm_piece(s, 3), "[INST]");
    CHECK_EQ_STR(lc_spm_piece(s, 4), "[/INST]");
    CHECK_EQ_INT(lc_spm_type(s, 0), LC_SPM_UNKNOWN);
    for (int i = 1; i <= 770; i++)
        CHECK_MSG(lc_spm_type(s, i) == LC_SPM_CONTROL, "id %d", i);
    for (int b = 0; b < 256; b++) {
        char want[8];
        snprintf(want, sizeof want, "<0x%02X>", b);
        CHECK_EQ_STR(lc_spm_piece(s, 771 + b), want);
        CHECK_EQ_INT(lc_spm_type(s, 771 + b), LC_SPM_BYTE);
    }
    CHECK_EQ_INT(lc_spm_type(s, 1027), LC_SPM_NORMAL);
    CHECK_EQ_INT(lc_spm_unk(s), 0);
    CHECK_EQ_INT(lc_spm_bos(s), 1);
    CHECK_EQ_INT(lc_spm_eos(s), 2);
    CHECK_EQ_INT(lc_spm_pad(s), -1);
    CHECK_EQ_INT(lc_spm_piece_id(s, "[INST]"), 3);
    CHECK_EQ_INT(lc_spm_piece_id(s, "no such piece"), -1);
    CHECK(lc_spm_piece(s, 32768) == NULL);
    CHECK_EQ_INT(lc_spm_model_type(s), LC_SPM_BPE);
    CHECK(lc_spm_byte_fallback(s));
    CHECK(lc_spm_add_dummy_prefix(s));
    CHECK(!lc_spm_remove_extra_whitespaces(s));
    CHECK_EQ_STR(lc_spm_normalizer_name(s), "identity");
    CHECK(strstr(lc_spm_describe(s), "BPE") && strstr(lc_spm_describe(s), "32768"));
    // "▁" + a common word is one piece: encoding the word alone gives exactly it.
    const char *words[] = {"the", "Hello", "world", "and"};
    for (int i = 0; i < 4; i++) {
        char piece[32];
        snprintf(piece, sizeof piece, SP "%s", words[i]);
        int32_t id = lc_spm_piece_id(s, piece);
        CHECK_MSG(id > 1026, "%s is a piece", piece);
        lc_ids ids = {0};
        CHECK_OK(lc_spm_encode(s, words[i], strlen(words[i]), &ids));
        CHECK_MSG(ids.len == 1 && ids.data[0] == id, "encode(%s)", words[i]);
        lc_ids_free(&ids);
    }
    // Control tokens written in text are not control tokens.
    lc_ids ids = {0};
    CHECK_OK(lc_spm_encode(s, "[INST]", 6, &ids));
    for (size_t i = 0; i < ids.len; i++)
        CHECK(lc_spm_type(s, ids.data[i]) != LC_SPM_CONTROL);
    lc_ids_free(&ids);
    lc_spm_free(s);
}

/* Mistral's golden ids: every run between control tokens is sp.encode(text) of a text;
 * decode must give that text back and encode must give the run back. */
static void test_mistral_golden(void) {
    const char *a = t_assets();
    if (!a) SKIP("shared assets absent (../shared/assets)");
    char path[4200];
    snprintf(path, sizeof path, "%s/mistral-7b-instruct-v0.3-tokenizer/golden_tokens_v3.json", a);
    cJSON *j = NULL;
    const cJSON *arr = NULL;
    CHECK_OK(lc_json_parse_file(path, 1 << 20, &j));
    if (!j) return;
    CHECK(lc_json_arr(j, "tokens", &arr, path) == 1);
    lc_spm *s = mistral();
    if (!s || !arr) {
        cJSON_Delete(j);
        lc_spm_free(s);
        {
            CHECK(0);
            return;
        }
    }
    int n = cJSON_GetArraySize(arr), runs = 0;
    int32_t *ids = xmalloc((size_t)n * sizeof *ids + 1);
    for (int i = 0; i < n; i++)
        ids[i] = (int32_t)cJSON_GetArrayItem(arr, i)->valueint;
    for (int i = 0; i < n;) {
        if (lc_spm_type(s, ids[i]) == LC_SPM_CONTROL) {
            i++;
            continue;
        }
        int b = i;
        while (i < n && lc_spm_type(s, ids[i]) != LC_SPM_CONTROL)
            i++;
        lc_buf text = {0};
        lc_ids re = {0};
        CHECK_OK(lc_spm_decode(s, ids + b, (size_t)(i - b), &text));
        CHECK_OK(lc_spm_encode(s, text.data, text.len, &re));
        CHECK_MSG(re.len == (size_t)(i - b) && !memcmp(re.data, ids + b, re.len * sizeof *ids),
                  "golden run at %d (\"%.40s...\") does not round-trip", b, text.data);
        runs++;
        lc_buf_free(&text);
        lc_ids_free(&re);
    }
    CHECK(runs >= 10);
    free(ids);
    lc_spm_free(s);
    cJSON_Delete(j);
}

/* Every prefix at a spread of cut points of the real file fails cleanly (or loads). */
static void test_mistral_truncated(void) {
    const char *a = t_assets();
    if (!a) SKIP("shared assets absent (../shared/assets)");
    char path[4200];
    snprintf(path, sizeof path, "%s/mistral-7b-instruct-v0.3-tokenizer/tokenizer.model", a);
    char *data;
    size_t len;
    CHECK_OK(lc_read_file(path, 1 << 24, &data, &len));
    if (!data) return;
    for (size_t n = 0; n < len; n += 5881) {
        lc_spm *s = NULL;
        if (lc_spm_load_mem(data, n, "cut", &s) == 0)
            lc_spm_free(s);
        else
            CHECK_MSG(strstr(lc_errmsg(), "cut: "), "cut at %zu: %s", n, lc_errmsg());
    }
    free(data);
}

/* ------------------------------------------------- reference fixtures ----- */


static bool ids_equal(const lc_ids *a, const cJSON *arr, size_t skip_first) {
    if (!arr || (size_t)cJSON_GetArraySize(arr) != a->len + skip_first) return false;
    size_t i = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, arr) {
        if (i >= skip_first && v->valueint != a->data[i - skip_first]) return false;
        i++;
    }
    return true;
}

static void test_fixture_jsonl(void) {
    const char *path = "tests/fixtures/tokenizer/mistral-spm.jsonl";
    if (!lc_is_file(path))
        SKIP("%s absent (made by tests/reference/make_tokenizer_fixtures.py)", path);
    lc_spm *s = mistral();
    if (!s) SKIP("shared assets absent: no tokenizer.model to check the fixture with");
    char *data;
    size_t len;
    CHECK_OK(lc_read_file(path, (size_t)1 << 28, &data, &len));
    int lines = 0, bad = 0;
    lc_buf text = {0}, want = {0}, got = {0};
    for (char *line = data, *nl; data && *line; line = nl + 1) {
        nl = strchr(line, '\n');
        if (!nl) nl = line + strlen(line);
        char save = *nl;
        *nl = '\0';
        cJSON *j = cJSON_Parse(line);
        if (!j || t_json_string_field(line, "text", &text) || t_json_string_field(line, "decoded", &want)) {
            CHECK_MSG(0, "%s line %d is not a fixture line", path, lines + 1);
            cJSON_Delete(j);
            break;
        }
        lc_ids ids = {0};
        CHECK_OK(lc_spm_encode(s, text.data ? text.data : "", text.len, &ids));
        bool ok = ids_equal(&ids, cJSON_GetObjectItem(j, "ids"), 0);
        lc_ids with_bos = {0};
        lc_ids_push(&with_bos, lc_spm_bos(s));
        lc_ids_append(&with_bos, ids.data, ids.len);
        bool ok_special =
            ids_equal(&ids, cJSON_GetObjectItem(j, "ids_special"), 1) &&
            cJSON_GetArrayItem(cJSON_GetObjectItem(j, "ids_special"), 0)->valueint == lc_spm_bos(s);
        // Decode the reference ids (not ours) and compare with the reference decode.
        lc_ids ref = {0};
        const cJSON *v;
        cJSON_ArrayForEach(v, cJSON_GetObjectItem(j, "ids")) lc_ids_push(&ref, v->valueint);
        lc_buf_clear(&got);
        CHECK_OK(lc_spm_decode(s, ref.data, ref.len, &got));
        bool ok_dec = got.len == want.len && (!got.len || !memcmp(got.data, want.data, got.len));
        if (!ok || !ok_special || !ok_dec) {
            if (bad++ < 8)
                CHECK_MSG(0, "line %d \"%.60s\": encode %s, ids_special %s, decode %s", lines + 1,
                          text.data ? text.data : "", ok ? "ok" : "DIFFERS",
                          ok_special ? "ok" : "DIFFERS", ok_dec ? "ok" : "DIFFERS");
        }
        lc_ids_free(&ids);
        lc_ids_free(&with_bos);
        lc_ids_free(&ref);
        cJSON_Delete(j);
        lines++;
        *nl = save;
        if (!save) break;
    }
    printf("  %d lines, %d differ\n", lines, bad);
    CHECK(lines > 0);
    CHECK_EQ_INT(bad, 0);
    lc_buf_free(&text);
    lc_buf_free(&want);
    lc_buf_free(&got);
    free(data);
    lc_spm_free(s);
}

/* Encodes every row of the RISC-V data set (train then valid), hashes the ids as the
 * fixture does, reports the throughput, and compares with mistral-spm.riscv.json. */
static void test_riscv_rows(void) {
    const char *a = t_assets();
    if (!a) SKIP("shared assets absent (../shared/assets)");
    lc_spm *s = mistral();
    if (!s) {
        CHECK(0);
        return;
    }
    const char *files[] = {"train.jsonl", "valid.jsonl"};
    uint64_t h = 0xcbf29ce484222325ull;
    size_t rows = 0, bytes = 0;
    double secs = 0;
    lc_buf text = {0};
    cJSON *fx = NULL;
    const char *fx_path = "tests/fixtures/tokenizer/mistral-spm.riscv.json";
    if (lc_is_file(fx_path)) CHECK_OK(lc_json_parse_file(fx_path, (size_t)1 << 28, &fx));
    const cJSON *sample = fx ? cJSON_GetObjectItem(fx, "sample") : NULL;
    int sample_bad = 0;
    for (int f = 0; f < 2; f++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/riscv-instruction-specification/%s", a, files[f]);
        char *data;
        size_t len;
        CHECK_OK(lc_read_file(path, (size_t)1 << 28, &data, &len));
        if (!data) continue;
        for (char *line = data, *nl; *line; line = nl + 1) {
            nl = strchr(line, '\n');
            if (!nl) nl = line + strlen(line);
            char save = *nl;
            *nl = '\0';
            if (t_json_string_field(line, "text", &text) == 0) {
                lc_ids ids = {0};
                struct timespec t0, t1;
                clock_gettime(CLOCK_MONOTONIC, &t0);
                CHECK_OK(lc_spm_encode(s, text.data ? text.data : "", text.len, &ids));
                clock_gettime(CLOCK_MONOTONIC, &t1);
                secs += (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
                bytes += text.len;
                for (size_t i = 0; i <= ids.len; i++) {
                    uint32_t v = i < ids.len ? (uint32_t)ids.data[i] : 0xFFFFFFFFu;
                    for (int k = 0; k < 4; k++)
                        h = (h ^ ((v >> (8 * k)) & 0xFF)) * 0x100000001b3ull;
                }
                const cJSON *e;
                cJSON_ArrayForEach(e, sample) {
                    if (cJSON_GetObjectItem(e, "row")->valueint == (int)rows &&
                        !ids_equal(&ids, cJSON_GetObjectItem(e, "ids"), 0) && sample_bad++ < 5)
                        CHECK_MSG(0, "riscv row %zu differs from the fixture sample", rows);
                }
                lc_ids_free(&ids);
                rows++;
            }
            *nl = save;
            if (!save) break;
        }
        free(data);
    }
    char hex[17];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)h);
    printf("  riscv: %zu rows, %.2f MB encoded in %.3f s = %.1f MB/s (row by row), fnv1a64 %s\n",
           rows, (double)bytes / 1e6, secs, secs > 0 ? (double)bytes / 1e6 / secs : 0.0, hex);
    CHECK_EQ_INT(rows, 1884 + 210);
    lc_buf_free(&text);
    lc_spm_free(s);
    if (!fx) SKIP("%s absent: ids not compared (hash printed above)", fx_path);
    int64_t want_rows = 0;
    const char *want_hash = NULL;
    CHECK(lc_json_int(fx, "rows", &want_rows, fx_path) == 1);
    CHECK(lc_json_str(fx, "fnv1a64", &want_hash, fx_path) == 1);
    CHECK_EQ_INT(want_rows, (int64_t)rows);
    CHECK_EQ_STR(hex, want_hash);
    cJSON_Delete(fx);
}

/* ---------------------------------------- fast path against the plain path ----- */

static uint64_t rng = 0x2545f4914f6cdd1dull;
static uint32_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

/* Encodes text with both paths (the fast one twice: cold and cached) and compares. */
static bool fast_matches_plain(const lc_spm *s, const char *text, size_t len) {
    lc_ids fast = {0}, again = {0}, plain = {0};
    bool ok = !lc_spm_encode(s, text, len, &fast) && !lc_spm_encode(s, text, len, &again) &&
              !lc_spm_encode_plain(s, text, len, &plain);
    ok = ok && fast.len == plain.len && again.len == plain.len &&
         (!plain.len || (!memcmp(fast.data, plain.data, plain.len * sizeof *plain.data) &&
                         !memcmp(again.data, plain.data, plain.len * sizeof *plain.data)));
    if (!ok) {
        printf("  fast path differs on \"%.*s\" (%zu bytes): %zu/%zu ids fast, %zu plain\n",
               len < 80 ? (int)len : 80, text, len, fast.len, again.len, plain.len);
        for (size_t i = 0; i < plain.len && i < fast.len; i++)
            if (plain.data[i] != fast.data[i]) {
                printf("  first difference at id %zu: %d fast, %d plain\n", i, fast.data[i],
                       plain.data[i]);
                break;
            }
    }
    lc_ids_free(&fast);
    lc_ids_free(&again);
    lc_ids_free(&plain);
    return ok;
}

/* A random text of `parts` parts: pieces of s (with U+2581 written as a space or kept),
 * runs of spaces, newlines, the extra strings given, and random bytes (often invalid
 * UTF-8). */
static void random_text(const lc_spm *s, size_t parts, const char **extra, size_t nextra,
                        lc_buf *out) {
    lc_buf_clear(out);
    for (size_t i = 0; i < parts; i++) {
        uint32_t r = rnd() % 16;
        if (r < 9) {
            const char *p = lc_spm_piece(s, (int32_t)(rnd() % (uint32_t)lc_spm_size(s)));
            bool keep = rnd() % 4 == 0;
            for (; *p; p++) {
                if (!keep && !strncmp(p, SP, 3)) {
                    lc_buf_putc(out, ' ');
                    p += 2;
                } else {
                    lc_buf_putc(out, *p);
                }
            }
        } else if (r < 11) {
            for (uint32_t k = rnd() % 4 + 1; k; k--)
                lc_buf_putc(out, ' ');
        } else if (r < 12) {
            lc_buf_putc(out, rnd() % 2 ? '\n' : '\t');
        } else if (r < 14 && nextra) {
            lc_buf_puts(out, extra[rnd() % nextra]);
        } else {
            for (uint32_t k = rnd() % 3 + 1; k; k--)
                lc_buf_putc(out, (char)(rnd() % 256 ? rnd() % 256 : 1));
        }
    }
}

/* `n` random texts of up to 40 parts (some of up to 400) through both paths. */
static int random_fast_checks(const lc_spm *s, int n, const char **extra, size_t nextra) {
    lc_buf t = {0};
    int bad = 0;
    for (int i = 0; i < n; i++) {
        random_text(s, rnd() % (i % 50 ? 40 : 400), extra, nextra, &t);
        if (!fast_matches_plain(s, t.data ? t.data : "", t.len) && ++bad >= 5) break;
    }
    lc_buf_free(&t);
    return bad;
}

static void test_fast_path_hand_models(void) {
    const char *extra[] = {SP,   SP SP,
                           "<u>", "a<u>b",
                           "zz",  ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")};
    // Equal scores (ties go to the leftmost pair), pieces that start with runs of U+2581,
    // a user-defined symbol, characters without a piece ('z', 'q').
    tpiece base[] = {{SP, -1, 0},       {"a", -1, 0},        {"b", -1, 0},
                     {"c", -1, 0},      {SP "a", -2, 0},     {"ab", -2, 0},
                     {"bc", -2, 0},     {SP SP, -3, 0},      {SP SP "a", -3, 0},
                     {"abc", -1.5f, 0}, {SP "ab", -2.5f, 0}, {"aa", -4, 0},
                     {"aaaa", -4, 0},   {"<u>", 0, LC_SPM_USER_DEFINED}};
    size_t nb = sizeof base / sizeof *base;
    struct {
        topts o;
        bool fast;
        const char *what;
    } cases[] = {
        {{.byte_fallback = true}, true, "byte fallback"},
        {{0}, true, "unknowns without byte fallback"},
        {{.remove_extra_ws = true}, true, "remove_extra_whitespaces"},
        {{.no_dummy_prefix = true, .byte_fallback = true}, true, "no dummy prefix"},
        {{.ws_suffix = true}, true, "whitespace as suffix"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        lc_spm *s = load_model(base, nb, cases[c].o);
        if (!s) {
            CHECK(0);
            continue;
        }
        CHECK_MSG(lc_spm_fast_encode(s) == cases[c].fast, "%s: fast path %d", cases[c].what,
                  (int)lc_spm_fast_encode(s));
        CHECK_MSG(random_fast_checks(s, 3000, extra, sizeof extra / sizeof *extra) == 0, "%s",
                  cases[c].what);
        // A run of unknowns across a segment boundary is still one unk.
        CHECK(fast_matches_plain(s, "zz zq z", 7));
        lc_spm_free(s);
    }
    // No U+2581 piece and no byte fallback: segments start with an unknown, and a run of
    // unknowns across segments is one unk ("▁z▁za" -> <unk> a).
    tpiece nospace[] = {{"a", -1, 0}, {"b", -1, 0}, {"ab", -2, 0}};
    lc_spm *s = load_model(nospace, 3, (topts){0});
    CHECK(s && lc_spm_fast_encode(s));
    if (s) {
        CHECK(check_pieces(s, "z za", "<unk> a"));
        CHECK(check_pieces(s, "a b", "<unk> a <unk> b"));
        CHECK(random_fast_checks(s, 3000, extra, sizeof extra / sizeof *extra) == 0);
    }
    lc_spm_free(s);
    // A piece with U+2581 after another character, or an unused piece: the plain path.
    tpiece cross[] = {{SP, -1, 0}, {"a", -1, 0}, {"a" SP, -0.5f, 0}};
    tpiece unused[] = {{SP, -1, 0}, {"a", -1, 0}, {SP "a", -0.5f, LC_SPM_UNUSED}};
    s = load_model(cross, 3, (topts){.byte_fallback = true});
    CHECK(s && !lc_spm_fast_encode(s));
    if (s) CHECK(random_fast_checks(s, 300, extra, 2) == 0);
    lc_spm_free(s);
    s = load_model(unused, 3, (topts){.byte_fallback = true});
    CHECK(s && !lc_spm_fast_encode(s));
    lc_spm_free(s);
}

/* Calls fn(s, text, len) for every fixture text and RISC-V row; returns the count. */
static int each_corpus_text(const lc_spm *s, lc_buf *all, int *bad) {
    const char *paths[3] = {"tests/fixtures/tokenizer/mistral-spm.jsonl", NULL, NULL};
    char p1[4200], p2[4200];
    const char *a = t_assets();
    if (a) {
        snprintf(p1, sizeof p1, "%s/riscv-instruction-specification/train.jsonl", a);
        snprintf(p2, sizeof p2, "%s/riscv-instruction-specification/valid.jsonl", a);
        paths[1] = p1;
        paths[2] = p2;
    }
    lc_buf text = {0};
    int n = 0;
    for (int f = 0; f < 3; f++) {
        char *data;
        size_t len;
        if (!paths[f] || !lc_is_file(paths[f])) continue;
        CHECK_OK(lc_read_file(paths[f], (size_t)1 << 28, &data, &len));
        for (char *line = data, *nl; data && *line; line = nl + 1) {
            nl = strchr(line, '\n');
            if (!nl) nl = line + strlen(line);
            char save = *nl;
            *nl = '\0';
            if (t_json_string_field(line, "text", &text) == 0) {
                const char *t = text.data ? text.data : "";
                if (!fast_matches_plain(s, t, text.len)) ++*bad;
                lc_buf_append(all, t, text.len);
                lc_buf_putc(all, '\n');
                n++;
            }
            *nl = save;
            if (!save || *bad >= 5) break;
        }
        free(data);
    }
    lc_buf_free(&text);
    return n;
}

static void test_fast_path_mistral(void) {
    lc_spm *s = mistral();
    if (!s) SKIP("shared assets absent (../shared/assets)");
    CHECK(lc_spm_fast_encode(s));
    lc_buf all = {0};
    int bad = 0, n = each_corpus_text(s, &all, &bad);
    printf("  %d corpus texts, %d differ\n", n, bad);
    CHECK(n >= 2094);
    CHECK_EQ_INT(bad, 0);
    // Everything as one text: segments of every row in one call.
    CHECK(fast_matches_plain(s, all.data ? all.data : "", all.len));
    const char *extra[] = {"<s>", "[INST]", SP, "\xe2\x96\x81\xe2\x96\x81x", "\xf0\x9f\x98\x80"};
    CHECK_EQ_INT(random_fast_checks(s, 5000, extra, sizeof extra / sizeof *extra), 0);
    lc_buf_free(&all);
    lc_spm_free(s);
}

int main(void) {
    RUN(test_bpe_merge_order);
    RUN(test_bpe_unused_and_user_defined);
    RUN(test_unknown_without_byte_fallback);
    RUN(test_normalizer_options);
    RUN(test_decode_rules);
    RUN(test_bad_protobufs);
    RUN(test_truncations);
    RUN(test_mistral_facts);
    RUN(test_mistral_golden);
    RUN(test_mistral_truncated);
    RUN(test_fixture_jsonl);
    RUN(test_riscv_rows);
    RUN(test_fast_path_hand_models);
    RUN(test_fast_path_mistral);
    return t_summary();
}
