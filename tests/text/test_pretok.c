/*
 * test_pretok.c — normalizers and pre-tokenizers on their own. The expected words are the
 * examples that the `tokenizers` library documents for these components (the split
 * behaviours on "the-final--countdown" in normalizer.rs, Metaspace's "Hey friend!" and
 * "Hey   friend!", ByteLevel's GPT-2 sentence, Digits), not lorac's own output.
 */
#include "core/json.h"
#include "harness.h"
#include "text/pretok.h"

/* Splits text with the pre-tokenizer described by json and compares with the words
 * given as one string separated by '|'. */
static void expect_words(const char *json, const char *text, bool first, const char *want) {
    cJSON *j;
    lc_pretok *p = NULL;
    CHECK_OK(lc_json_parse(json, strlen(json), "pt.json", &j));
    if (!j) return;
    CHECK_OK(lc_pretok_build(j, "pt.json", &p));
    lc_pretok_out o = {0};
    if (p) CHECK_OK(lc_pretok_split(p, text, strlen(text), first, &o));
    lc_buf got = {0};
    for (size_t i = 0; i < o.n_words; i++) {
        if (i) lc_buf_putc(&got, '|');
        lc_buf_append(&got, o.bytes.data + o.starts[i], o.starts[i + 1] - o.starts[i]);
    }
    lc_buf_append(&got, "", 0); // NUL-terminated even when empty
    CHECK_MSG(!strcmp(got.data, want), "%s on \"%s\": got \"%s\", want \"%s\"", json, text,
              got.data, want);
    lc_buf_free(&got);
    lc_pretok_out_free(&o);
    lc_pretok_free(p);
    cJSON_Delete(j);
}

static void test_split_behaviors(void) {
    const char *t = "the-final--countdown";
#define SPLIT(b) "{\"type\":\"Split\",\"pattern\":{\"String\":\"-\"},\"behavior\":\"" b "\",\"invert\":false}"
    expect_words(SPLIT("Removed"), t, true, "the|final|countdown");
    expect_words(SPLIT("Isolated"), t, true, "the|-|final|-|-|countdown");
    expect_words(SPLIT("MergedWithPrevious"), t, true, "the-|final-|-|countdown");
    expect_words(SPLIT("MergedWithNext"), t, true, "the|-final|-|-countdown");
    expect_words(SPLIT("Contiguous"), t, true, "the|-|final|--|countdown");
    expect_words("{\"type\":\"Split\",\"pattern\":{\"Regex\":\"-+\"},\"behavior\":\"Isolated\","
                 "\"invert\":false}",
                 t, true, "the|-|final|--|countdown");
    // invert: the pattern marks what to keep
    expect_words("{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\w+\"},\"behavior\":"
                 "\"Removed\",\"invert\":true}",
                 t, true, "the|final|countdown");
#undef SPLIT
}

static void test_metaspace(void) {
    const char *always = "{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\",\"prepend_scheme\":"
                         "\"always\",\"split\":true}";
    expect_words(always, "Hey friend!", true, "\xE2\x96\x81Hey|\xE2\x96\x81" "friend!");
    expect_words(always, "Hey   friend!", true,
                 "\xE2\x96\x81Hey|\xE2\x96\x81|\xE2\x96\x81|\xE2\x96\x81" "friend!");
    expect_words(always, "Hey", false, "\xE2\x96\x81Hey");
    const char *first = "{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\",\"prepend_scheme\":"
                        "\"first\",\"split\":false}";
    expect_words(first, "Hey friend!", true, "\xE2\x96\x81Hey\xE2\x96\x81" "friend!");
    expect_words(first, "Hey", false, "Hey");
    expect_words(first, " Hey", true, "\xE2\x96\x81Hey"); // already starts with one
    expect_words(first, "", true, "");
    const char *never = "{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\",\"prepend_scheme\":"
                        "\"never\",\"split\":false}";
    expect_words(never, "Hey you", true, "Hey\xE2\x96\x81you");
}

static void test_byte_level_and_digits(void) {
    expect_words("{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true}",
                 "Hello my friend, how is your day going?", true,
                 "Hello|\xC4\xA0my|\xC4\xA0" "friend|,|\xC4\xA0how|\xC4\xA0is|\xC4\xA0your|"
                 "\xC4\xA0" "day|\xC4\xA0going|?");
    expect_words("{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"use_regex\":false}",
                 "a\nb", true, "\xC4\xA0" "a\xC4\x8A" "b");
    expect_words("{\"type\":\"Digits\",\"individual_digits\":true}", "Hey 123 friend!", true,
                 "Hey |1|2|3| friend!");
    expect_words("{\"type\":\"Digits\",\"individual_digits\":false}", "Hey 123 friend!", true,
                 "Hey |123| friend!");
    CHECK_EQ_STR(lc_byte_level_char(' '), "\xC4\xA0");
    CHECK_EQ_STR(lc_byte_level_char('\n'), "\xC4\x8A");
    CHECK_EQ_STR(lc_byte_level_char('a'), "a");
    CHECK_EQ_INT(lc_byte_level_byte(0x120), ' ');
    CHECK_EQ_INT(lc_byte_level_byte(0x2581), -1);
}

static void expect_norm(const char *json, const char *text, const char *want) {
    cJSON *j;
    lc_normalizer *n = NULL;
    CHECK_OK(lc_json_parse(json, strlen(json), "n.json", &j));
    if (!j) return;
    CHECK_OK(lc_normalizer_build(j, "n.json", &n));
    lc_buf out = {0};
    if (n) CHECK_OK(lc_normalize(n, text, strlen(text), &out));
    lc_buf_append(&out, "", 0);
    CHECK_MSG(!strcmp(out.data, want), "%s on \"%s\": got \"%s\", want \"%s\"", json, text,
              out.data, want);
    lc_buf_free(&out);
    lc_normalizer_free(n);
    cJSON_Delete(j);
}

static void test_normalizers(void) {
    const char *legacy = "{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":"
                         "\"\\u2581\"},{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},"
                         "\"content\":\"\\u2581\"}]}";
    expect_norm(legacy, "Hey you", "\xE2\x96\x81Hey\xE2\x96\x81you");
    expect_norm(legacy, "", ""); // Prepend leaves an empty string alone
    expect_norm("{\"type\":\"NFD\"}", "\xC3\xA9", "e\xCC\x81");
    expect_norm("{\"type\":\"NFC\"}", "e\xCC\x81", "\xC3\xA9");
    expect_norm("{\"type\":\"NFKC\"}", "\xEF\xAC\x81", "fi");
    expect_norm("{\"type\":\"Lowercase\"}", "HeLLo \xC3\x89", "hello \xC3\xA9");
    expect_norm("{\"type\":\"Strip\",\"strip_left\":true,\"strip_right\":false}", " \t x \n",
                "x \n");
    expect_norm("{\"type\":\"Replace\",\"pattern\":{\"Regex\":\" {2,}\"},\"content\":\"_\"}",
                "a  b c   d", "a_b c_d");
}

static void test_bad_components(void) {
    cJSON *j;
    lc_pretok *p;
    lc_normalizer *n;
    CHECK_OK(lc_json_parse("{\"type\":\"Punctuation\"}", 22, "x.json", &j));
    CHECK_FAILS(lc_pretok_build(j, "x.json", &p),
                "x.json: pre_tokenizer: pre-tokenizer type \"Punctuation\" is not supported");
    CHECK_FAILS(lc_normalizer_build(j, "x.json", &n), "normalizer type \"Punctuation\"");
    cJSON_Delete(j);
    const char *split = "{\"type\":\"Split\",\"pattern\":{\"String\":\"-\"},\"behavior\":"
                        "\"Sideways\"}";
    CHECK_OK(lc_json_parse(split, strlen(split), "x.json", &j));
    CHECK_FAILS(lc_pretok_build(j, "x.json", &p), "pre_tokenizer.behavior \"Sideways\"");
    cJSON_Delete(j);
    CHECK_OK(lc_json_parse("[1]", 3, "x.json", &j));
    CHECK_FAILS(lc_pretok_build(j, "x.json", &p), "pre_tokenizer must be an object");
    cJSON_Delete(j);
}

int main(void) {
    RUN(test_split_behaviors);
    RUN(test_metaspace);
    RUN(test_byte_level_and_digits);
    RUN(test_normalizers);
    RUN(test_bad_components);
    return t_summary();
}
