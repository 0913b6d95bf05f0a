/*
 * test_chat.c — chat templates against transformers' renderings and Mistral's golden ids.
 *
 * Reference data: tests/fixtures/chat/<family>.jsonl and templates/ (written by
 * tests/reference/make_chat_fixtures.py with transformers/jinja2), the shared assets'
 * Mistral template, tokenizer and golden_tokens_v3.json. Tests skip, saying why, while
 * fixtures, assets or the tokenizer implementation are absent.
 */
#include <stdbool.h>
#include <stdint.h>

#include "core/file.h"
#include "core/json.h"
#include "core/mem.h"
#include "harness.h"
#include "text/chat.h"
#include "text/tokenizer.h"

#define FIXTURES "tests/fixtures/chat"
#define MISTRAL_DIR "mistral-7b-instruct-v0.3-tokenizer"

/* ---------------------------------------------------------------- helpers */

/* "$ASSETS/x" -> "<assets>/x" (NULL when the assets are absent); other paths as they are. */
static char *resolve(const char *p) {
    if (strncmp(p, "$ASSETS/", 8)) return xstrdup(p);
    if (!t_assets()) return NULL;
    return lc_path_join(t_assets(), p + 8);
}

static char *asset(const char *name) {
    char rel[512];
    snprintf(rel, sizeof rel, "$ASSETS/" MISTRAL_DIR "/%s", name);
    return resolve(rel);
}

/* A special token's text in a tokenizer_config.json (a string or {"content": ...}). */
static const char *config_token(const cJSON *cfg, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (cJSON_IsString(v)) return v->valuestring;
    if (cJSON_IsObject(v)) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(v, "content");
        if (cJSON_IsString(c)) return c->valuestring;
    }
    return NULL;
}

/* Whether a tokenizer load failed only because this branch has no tokenizer yet. */
/* Whether the last tokenizer load failed because the shared assets are not here. */
static bool tokenizer_absent(void) { return strstr(lc_errmsg(), "shared assets absent") != NULL; }

/* The records of a fixture file, as an array of parsed lines (NULL when absent). */
static cJSON *read_jsonl(const char *path) {
    char *data;
    size_t len;
    if (!lc_is_file(path) || lc_read_file(path, 64u << 20, &data, &len)) return NULL;
    cJSON *arr = cJSON_CreateArray();
    size_t line = 1;
    for (char *p = data; *p; line++) {
        char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        if (n) {
            cJSON *rec;
            if (lc_json_parse(p, n, path, &rec)) {
                printf("  %s:%zu: %s\n", path, line, lc_errmsg());
                cJSON_Delete(arr);
                free(data);
                return NULL;
            }
            cJSON_AddItemToArray(arr, rec);
        }
        p += n + (nl ? 1 : 0);
    }
    free(data);
    return arr;
}

/* The messages of a record, pointing into it. *n set; caller frees the array. */
static lc_chat_msg *record_msgs(const cJSON *rec, size_t *n) {
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(rec, "messages");
    *n = (size_t)cJSON_GetArraySize(arr);
    lc_chat_msg *m = xcalloc(*n ? *n : 1, sizeof *m);
    size_t i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr) {
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(it, "role");
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(it, "content");
        m[i].role = cJSON_IsString(r) ? r->valuestring : NULL;
        m[i].content = cJSON_IsString(c) ? c->valuestring : NULL;
        i++;
    }
    return m;
}

static const char *rec_str(const cJSON *rec, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(rec, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Prints where two id lists first differ. */
static bool same_ids(const lc_ids *got, const cJSON *want, const char *what) {
    size_t n = (size_t)cJSON_GetArraySize(want), i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, want) {
        if (i >= got->len || got->data[i] != (int32_t)it->valueint) break;
        i++;
    }
    if (i == n && got->len == n) return true;
    printf("  %s: ids differ at %zu (got %zu ids, want %zu): got %d, want %d\n", what, i, got->len,
           n, i < got->len ? got->data[i] : -1,
           i < n ? cJSON_GetArrayItem(want, (int)i)->valueint : -1);
    return false;
}

/* ---------------------------------------------------------------- names and detection */

static void test_family_names(void) {
    for (int f = 0; f < LC_CHAT_N_FAMILIES; f++) {
        lc_chat_family g;
        CHECK_OK(lc_chat_family_parse(lc_chat_family_name((lc_chat_family)f), &g));
        CHECK_EQ_INT(g, f);
    }
    lc_chat_family g;
    CHECK_FAILS(lc_chat_family_parse("vicuna", &g), "one of mistral, llama2, llama3, chatml, phi3");
    CHECK_FAILS(lc_chat_family_parse(NULL, &g), "--chat-template");
}

static void check_detect(const char *src, lc_chat_family want, const char *what) {
    lc_chat_family got = LC_CHAT_N_FAMILIES;
    if (lc_chat_detect(src, &got))
        CHECK_MSG(0, "%s: %s", what, lc_errmsg());
    else
        CHECK_MSG(got == want, "%s: detected %s, want %s", what, lc_chat_family_name(got),
                  lc_chat_family_name(want));
}

static void test_detect_published_templates(void) {
    static const struct {
        const char *name;
        lc_chat_family f;
    } fam[] = {{"llama2", LC_CHAT_LLAMA2},
               {"llama3", LC_CHAT_LLAMA3},
               {"chatml", LC_CHAT_CHATML},
               {"phi3", LC_CHAT_PHI3}};
    int found = 0;
    for (size_t i = 0; i < sizeof fam / sizeof *fam; i++) {
        char path[256];
        snprintf(path, sizeof path, FIXTURES "/templates/%s.jinja", fam[i].name);
        char *src;
        size_t len;
        if (!lc_is_file(path)) continue;
        CHECK_OK(lc_read_file(path, 1 << 20, &src, &len));
        check_detect(src, fam[i].f, path);
        free(src);
        found++;
    }
    if (!found)
        SKIP("no templates in " FIXTURES "/templates (run tests/reference/make_chat_fixtures.py)");
}

static void test_detect_mistral_assets(void) {
    char *jinja = asset("chat_template_v3_spm.jinja"), *cfgp = asset("tokenizer_config.json");
    if (!jinja) SKIP("shared assets absent (../shared/assets)");
    char *src;
    size_t len;
    CHECK_OK(lc_read_file(jinja, 1 << 20, &src, &len));
    check_detect(src, LC_CHAT_MISTRAL, "chat_template_v3_spm.jinja");
    free(src);
    cJSON *cfg;
    CHECK_OK(lc_json_parse_file(cfgp, 1 << 20, &cfg));
    const char *tpl = NULL;
    CHECK_EQ_INT(lc_json_str(cfg, "chat_template", &tpl, cfgp), 1);
    if (tpl) check_detect(tpl, LC_CHAT_MISTRAL, "tokenizer_config.json chat_template");
    cJSON_Delete(cfg);
    free(jinja);
    free(cfgp);
}

/* Variants published on the Hub (short excerpts holding the telling parts). */
static void test_detect_variants(void) {
    /* An earlier Mistral-7B-Instruct-v0.3 revision (tools as [AVAILABLE_TOOLS], trim). */
    check_detect("{{- bos_token }}{%- for message in loop_messages %}{%- if message[\"role\"] == "
                 "\"user\" %}{%- if tools is not none %}{{- \"[AVAILABLE_TOOLS] [\" }}{%- endif "
                 "%}{{- \"[INST] \" + message[\"content\"] + \"[/INST]\" }}{%- elif "
                 "message[\"role\"] == \"assistant\" %}{{- \" \" + message[\"content\"]|trim + "
                 "eos_token}}{%- endif %}{%- endfor %}",
                 LC_CHAT_MISTRAL, "mistral v0.3 first revision");
    /* Llama-3.1 style: headers, eot, tools and dates. */
    check_detect("{{- bos_token }}{%- if custom_tools is defined %}{%- endif %}{{- "
                 "\"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}{{- \"Cutting Knowledge "
                 "Date: December 2023\\n\" }}{{- \"<|eot_id|>\" }}",
                 LC_CHAT_LLAMA3, "llama 3.1");
    /* Phi-3.5-mini: skips empty system messages. */
    check_detect(
        "{% for message in messages %}{% if message['role'] == 'system' and "
        "message['content'] %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif "
        "message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + "
        "'<|end|>\n'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + "
        "message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}",
        LC_CHAT_PHI3, "phi 3.5");

    const char *want = "chat template not recognised; pass --chat-template NAME (one of mistral, "
                       "llama2, llama3, chatml, phi3)";
    lc_chat_family f;
    CHECK_FAILS(lc_chat_detect("{{ messages }}", &f), want);
    /* Zephyr: <|user|> but eos_token instead of <|end|>. */
    CHECK_FAILS(lc_chat_detect("{% for message in messages %}{% if message['role'] == 'user' "
                               "%}{{ '<|user|>\n' + message['content'] + eos_token }}{% endif "
                               "%}{% endfor %}",
                               &f),
                want);
    /* Mistral v0.1 layout, "[INST] x [/INST]", where [INST] is text. */
    CHECK_FAILS(lc_chat_detect("{{ bos_token }}{% for message in messages %}{{ '[INST] ' + "
                               "message['content'] + ' [/INST]' }}{% endfor %}",
                               &f),
                want);
    /* Mistral v7 (system prompt as [SYSTEM_PROMPT] control tokens). */
    CHECK_FAILS(lc_chat_detect("{{- '[SYSTEM_PROMPT]' + system_message + '[/SYSTEM_PROMPT]' }}"
                               "{{- '[INST]' + message['content'] + '[/INST]' }}",
                               &f),
                want);
    /* Phi-4 (ChatML tokens with <|im_sep|>). */
    CHECK_FAILS(lc_chat_detect("{{'<|im_start|>system<|im_sep|>' + message['content'] + "
                               "'<|im_end|>'}} You are a helpful assistant.",
                               &f),
                want);
    CHECK_FAILS(lc_chat_detect("", &f), "--chat-template");
    CHECK_FAILS(lc_chat_detect(NULL, &f), "--chat-template");
}

static void test_detect_fixture_configs(void) {
    static const char *names[] = {"llama2", "llama3", "chatml", "phi3"};
    int found = 0;
    for (size_t i = 0; i < 4; i++) {
        char path[256];
        snprintf(path, sizeof path, FIXTURES "/%s/tokenizer_config.json", names[i]);
        if (!lc_is_file(path)) continue;
        cJSON *cfg;
        CHECK_OK(lc_json_parse_file(path, 1 << 20, &cfg));
        const char *tpl = NULL;
        lc_chat_family want;
        CHECK_OK(lc_chat_family_parse(names[i], &want));
        if (lc_json_str(cfg, "chat_template", &tpl, path) == 1) check_detect(tpl, want, path);
        cJSON_Delete(cfg);
        found++;
    }
    if (!found) SKIP("no tokenizer configs in " FIXTURES);
}

/* ---------------------------------------------------------------- render_text vs transformers */

static void run_text(const char *family) {
    char path[256];
    snprintf(path, sizeof path, FIXTURES "/%s.jsonl", family);
    cJSON *recs = read_jsonl(path);
    if (!recs) SKIP("%s absent (run tests/reference/make_chat_fixtures.py)", path);
    lc_chat_family f;
    CHECK_OK(lc_chat_family_parse(family, &f));
    int checked = 0;
    const cJSON *rec;
    cJSON_ArrayForEach(rec, recs) {
        const char *name = rec_str(rec, "name"), *cfgpath = rec_str(rec, "tokenizer_config");
        char *cfgfile = cfgpath ? resolve(cfgpath) : NULL;
        if (!cfgfile) {
            printf("  skip %s/%s: %s unavailable\n", family, name, cfgpath ? cfgpath : "config");
            continue;
        }
        cJSON *cfg = NULL;
        CHECK_OK(lc_json_parse_file(cfgfile, 1 << 20, &cfg));
        free(cfgfile);
        const char *bos = cfg ? config_token(cfg, "bos_token") : NULL;
        const char *eos = cfg ? config_token(cfg, "eos_token") : NULL;
        size_t n;
        lc_chat_msg *msgs = record_msgs(rec, &n);
        bool gen = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(rec, "add_generation_prompt"));
        lc_buf out = {0};
        const char *err = rec_str(rec, "error"), *want = rec_str(rec, "text");
        lc_err_clear();
        int rc = lc_chat_render_text(f, msgs, n, gen, bos, eos, &out);
        if (err) {
            CHECK_MSG(rc != 0, "%s/%s gen=%d: should fail with \"%s\"", family, name, gen, err);
            CHECK_MSG(rc == 0 || strstr(lc_errmsg(), err), "%s/%s: message \"%s\" lacks \"%s\"",
                      family, name, lc_errmsg(), err);
        } else {
            CHECK_MSG(rc == 0, "%s/%s gen=%d: %s", family, name, gen, lc_errmsg());
            CHECK_MSG(rc || (want && !strcmp(out.data, want)),
                      "%s/%s gen=%d: renders\n    \"%s\"\n  want\n    \"%s\"", family, name, gen,
                      out.data, want ? want : "(null)");
        }
        checked++;
        lc_buf_free(&out);
        free(msgs);
        cJSON_Delete(cfg);
    }
    cJSON_Delete(recs);
    if (!checked) SKIP("%s: no record could be checked", path);
}

static void test_text_mistral(void) { run_text("mistral"); }
static void test_text_llama2(void) { run_text("llama2"); }
static void test_text_llama3(void) { run_text("llama3"); }
static void test_text_chatml(void) { run_text("chatml"); }
static void test_text_phi3(void) { run_text("phi3"); }

/* ---------------------------------------------------------------- render_ids vs transformers */

static lc_tokenizer *load_tokenizer(const char *tok, const char *cfg) {
    char *tp = resolve(tok), *cp = cfg ? resolve(cfg) : NULL;
    lc_tokenizer *t = NULL;
    if (!tp)
        lc_fail("shared assets absent for %s", tok);
    else if (lc_tokenizer_load_file(tp, cp, &t))
        t = NULL;
    free(tp);
    free(cp);
    return t;
}

/* Checks render_ids against the records' `field` ids; tok_override (a path) replaces the
 * records' tokenizer. */
static void run_ids_field(const char *family, const char *field, const char *tok_override) {
    char path[256];
    snprintf(path, sizeof path, FIXTURES "/%s.jsonl", family);
    cJSON *recs = read_jsonl(path);
    if (!recs) SKIP("%s absent (run tests/reference/make_chat_fixtures.py)", path);
    lc_chat_family f;
    CHECK_OK(lc_chat_family_parse(family, &f));
    int checked = 0;
    lc_tokenizer *t = NULL;
    const cJSON *rec;
    cJSON_ArrayForEach(rec, recs) {
        const cJSON *want = cJSON_GetObjectItemCaseSensitive(rec, field);
        if (!cJSON_IsArray(want)) continue;
        const char *name = rec_str(rec, "name");
        const char *tok = tok_override ? tok_override : rec_str(rec, "tokenizer");
        if (!t && !(t = load_tokenizer(tok, rec_str(rec, "tokenizer_config")))) {
            if (tokenizer_absent()) {
                cJSON_Delete(recs);
                SKIP("%s", lc_errmsg());
            }
            CHECK_MSG(0, "%s: loading %s: %s", family, tok, lc_errmsg());
            break;
        }
        size_t n;
        lc_chat_msg *msgs = record_msgs(rec, &n);
        bool gen = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(rec, "add_generation_prompt"));
        lc_ids ids = {0};
        char what[256];
        snprintf(what, sizeof what, "%s/%s gen=%d (%s)", family, name, gen, field);
        if (lc_chat_render_ids(t, f, msgs, n, gen, &ids))
            CHECK_MSG(0, "%s: %s", what, lc_errmsg());
        else
            CHECK_MSG(same_ids(&ids, want, what), "%s: ids differ from the reference", what);
        checked++;
        lc_ids_free(&ids);
        free(msgs);
    }
    lc_tokenizer_free(t);
    cJSON_Delete(recs);
    if (!checked) SKIP("%s: no record has %s (a --text-only run?)", path, field);
}

static void run_ids(const char *family) { run_ids_field(family, "ids", NULL); }

static void test_ids_mistral(void) { run_ids("mistral"); }
static void test_ids_mistral_spm(void) {
    run_ids_field("mistral", "ids_spm", "$ASSETS/" MISTRAL_DIR "/tokenizer.model");
}
static void test_ids_llama2(void) { run_ids("llama2"); }
static void test_ids_llama3(void) { run_ids("llama3"); }
static void test_ids_chatml(void) { run_ids("chatml"); }
static void test_ids_phi3(void) { run_ids("phi3"); }

/* ---------------------------------------------------------------- Mistral's golden ids */

/* The plain-message parts of golden_tokens_v3.json: its conversation without the tools. */
static const lc_chat_msg golden_msgs[] = {
    {"user", "What's the weather like today"},
    {"assistant", "Sure, can you please provide me with your location?"},
    {"user", "I'm in Paris, France."},
    {"assistant", "The current temperature in Paris, France is 22 degrees Celsius."},
    {"user", "what is the weather going to be like in Paris, France over the next x days"},
    {"assistant", "Please tell me the number of days you want the weather forecast for."},
    {"system", "Don't make assumptions about what values to plug into functions.\n\nAsk for "
               "clarification if a user request is ambiguous."},
    {"user", "5 days"},
};

/* golden minus [AVAILABLE_TOOLS]..[/AVAILABLE_TOOLS] (ids 6..7) and from [TOOL_CALLS] (5) on. */
static int golden_plain(lc_ids *want) {
    char *p = asset("golden_tokens_v3.json");
    if (!p) return 1;
    cJSON *g;
    int rc = lc_json_parse_file(p, 1 << 20, &g);
    free(p);
    if (rc) return -1;
    const cJSON *tok = cJSON_GetObjectItemCaseSensitive(g, "tokens"), *it;
    bool in_tools = false;
    if (!cJSON_IsArray(tok)) {
        cJSON_Delete(g);
        return lc_fail("golden_tokens_v3.json: no \"tokens\" array");
    }
    cJSON_ArrayForEach(it, tok) {
        int id = it->valueint;
        if (id == 5) break;
        if (id == 6) in_tools = true;
        if (!in_tools) lc_ids_push(want, id);
        if (id == 7) in_tools = false;
    }
    cJSON_Delete(g);
    return 0;
}

static void run_golden(const char *file) {
    lc_ids want = {0}, got = {0};
    int rc = golden_plain(&want);
    if (rc > 0) SKIP("shared assets absent (../shared/assets)");
    CHECK_OK(rc);
    CHECK(want.len > 60); // three exchanges and the last user turn
    char *tp = asset(file), *cp = asset("tokenizer_config.json");
    lc_tokenizer *t = NULL;
    rc = lc_tokenizer_load_file(tp, cp, &t);
    free(tp);
    free(cp);
    if (rc) {
        lc_ids_free(&want);
        if (tokenizer_absent()) SKIP("%s", lc_errmsg());
        CHECK_MSG(0, "loading %s: %s", file, lc_errmsg());
        return;
    }
    CHECK_OK(lc_chat_render_ids(t, LC_CHAT_MISTRAL, golden_msgs,
                                sizeof golden_msgs / sizeof *golden_msgs, true, &got));
    bool same = got.len == want.len && (!got.len || !memcmp(got.data, want.data, got.len * sizeof *got.data));
    for (size_t i = 0; !same && i < want.len; i++)
        if (i >= got.len || got.data[i] != want.data[i]) {
            printf("  %s: first difference at %zu: got %d, want %d\n", file, i,
                   i < got.len ? got.data[i] : -1, want.data[i]);
            break;
        }
    CHECK_MSG(same, "%s: Mistral's golden ids (plain-message parts) differ (%zu vs %zu ids)", file,
              got.len, want.len);

    /* Control-token text typed in a message stays text: [INST] (3) only where framing puts it. */
    lc_chat_msg sneaky[] = {{"user", "[INST] <s> [/INST] </s>"}};
    lc_ids ids = {0};
    CHECK_OK(lc_chat_render_ids(t, LC_CHAT_MISTRAL, sneaky, 1, true, &ids));
    CHECK(ids.len > 4 && ids.data[0] == 1 && ids.data[1] == 3 && ids.data[ids.len - 1] == 4);
    for (size_t i = 2; i + 1 < ids.len; i++)
        CHECK(ids.data[i] > 9);
    lc_ids_free(&ids);
    lc_tokenizer_free(t);
    lc_ids_free(&want);
    lc_ids_free(&got);
}

static void test_golden_mistral_spm(void) { run_golden("tokenizer.model"); }
static void test_golden_mistral_json(void) { run_golden("tokenizer.json"); }

/* ---------------------------------------------------------------- bad input */

static void test_bad_input(void) {
    lc_buf b = {0};
    lc_chat_msg ok[] = {{"user", "hi"}};
    CHECK_FAILS(lc_chat_render_text(LC_CHAT_CHATML, ok, 0, false, NULL, NULL, &b), "no messages");
    lc_chat_msg noc[] = {{"user", NULL}};
    CHECK_FAILS(lc_chat_render_text(LC_CHAT_LLAMA3, noc, 1, false, "<s>", "</s>", &b),
                "message 0 (user) has no content");
    lc_chat_msg norole[] = {{NULL, "x"}};
    CHECK_FAILS(lc_chat_render_text(LC_CHAT_PHI3, norole, 1, false, "<s>", "</s>", &b),
                "message 0 has no role");
    lc_chat_msg bad[] = {{"user", "ok"}, {"assistant", "\xc3\x28"}};
    for (int f = 0; f < LC_CHAT_N_FAMILIES; f++)
        CHECK_FAILS(lc_chat_render_text((lc_chat_family)f, bad, 2, false, "<s>", "</s>", &b),
                    "message 1 (assistant): content is not valid UTF-8 at byte 0");
    CHECK_FAILS(lc_chat_render_text(LC_CHAT_LLAMA3, ok, 1, false, NULL, NULL, &b),
                "uses the BOS token, which the tokenizer lacks");
    CHECK_FAILS(lc_chat_render_text(LC_CHAT_PHI3, ok, 1, false, NULL, NULL, &b),
                "uses the EOS token");
    lc_chat_msg tool[] = {{"user", "x"}, {"assistant", "y"}, {"tool", "1"}};
    CHECK_FAILS(lc_chat_render_text(LC_CHAT_MISTRAL, tool, 3, false, "<s>", "</s>", &b),
                "tool messages (and tool calls) are not supported");
    CHECK_FAILS(lc_chat_render_text((lc_chat_family)99, ok, 1, false, "<s>", "</s>", &b),
                "unknown family");
    /* Nothing but a system message: Mistral renders BOS alone, ChatML the system turn. */
    lc_chat_msg sys[] = {{"system", "s"}};
    lc_buf_clear(&b);
    CHECK_OK(lc_chat_render_text(LC_CHAT_MISTRAL, sys, 1, true, "<s>", "</s>", &b));
    CHECK_EQ_STR(b.data, "<s>");
    lc_buf_free(&b);
}

int main(void) {
    RUN(test_family_names);
    RUN(test_detect_published_templates);
    RUN(test_detect_mistral_assets);
    RUN(test_detect_variants);
    RUN(test_detect_fixture_configs);
    RUN(test_text_mistral);
    RUN(test_text_llama2);
    RUN(test_text_llama3);
    RUN(test_text_chatml);
    RUN(test_text_phi3);
    RUN(test_ids_mistral);
    RUN(test_ids_mistral_spm);
    RUN(test_ids_llama2);
    RUN(test_ids_llama3);
    RUN(test_ids_chatml);
    RUN(test_ids_phi3);
    RUN(test_golden_mistral_spm);
    RUN(test_golden_mistral_json);
    RUN(test_bad_input);
    return t_summary();
}
