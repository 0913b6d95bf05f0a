/*
 * test_task_set.c — rows split into prompt and answer for `lorac eval --generate`, in the
 * three data forms. Expected ids come from the demo-spm tokenizer's fixtures (made by the
 * `tokenizers` library, tests/fixtures/tokenizer/demo-spm.jsonl) composed by Mistral's
 * documented chat encoding [1, 3] + user + [4] (+ assistant + [2]), never from lorac.
 */
#include <unistd.h>

#include "core/file.h"
#include "harness.h"
#include "train/data.h"

#define DEMO "tests/fixtures/tokenizers/demo-spm"

static cJSON *fixtures;

static void load_fixtures(void) {
    char *text;
    size_t len;
    fixtures = cJSON_CreateArray();
    if (lc_read_file("tests/fixtures/tokenizer/demo-spm.jsonl", 1 << 24, &text, &len) != 0) return;
    for (char *p = text, *nl; (nl = strchr(p, '\n')); p = nl + 1) {
        cJSON *j = cJSON_ParseWithLength(p, (size_t)(nl - p));
        if (j) cJSON_AddItemToArray(fixtures, j);
    }
    free(text);
}

static lc_ids fx(const char *text) {
    lc_ids out = {0};
    const cJSON *e;
    cJSON_ArrayForEach(e, fixtures) {
        if (strcmp(cJSON_GetObjectItem(e, "text")->valuestring, text)) continue;
        const cJSON *v;
        cJSON_ArrayForEach(v, cJSON_GetObjectItem(e, "ids")) lc_ids_push(&out, (int32_t)v->valueint);
        return out;
    }
    printf("  no fixture for \"%s\"\n", text);
    lc_ids_push(&out, -99);
    return out;
}

static char path[64];

static int load(lc_task_set *s, const char *jsonl, const lc_tokenizer *t, size_t limit) {
    FILE *f = fopen(path, "w");
    fputs(jsonl, f);
    fclose(f);
    lc_data_options o = {false, 2048, -1}; // the family detected from the tokenizer
    return lc_task_set_load(s, path, t, &o, limit);
}

static bool ids_are(const lc_task_row *r, const lc_ids *want) {
    bool ok = r->n_ids == want->len && !memcmp(r->ids, want->data, want->len * sizeof(int32_t));
    if (!ok) {
        printf("  prompt ids:");
        for (size_t k = 0; k < r->n_ids; k++) printf(" %d", r->ids[k]);
        printf("\n  expected  :");
        for (size_t k = 0; k < want->len; k++) printf(" %d", want->data[k]);
        printf("\n");
    }
    return ok;
}

static lc_tokenizer *tok;

static void text_rows(void) {
    if (!tok) SKIP("demo-spm tokenizer did not load");
    lc_task_set s;
    CHECK_OK(load(&s, "{\"text\": \"<s>[INST] What is 2+2?[/INST] 4</s>\"}\n\n"
                      "{\"text\": \"<s>[INST] What is 2+2?[/INST]  add rd, rs1, rs2 \\n</s>\"}\n",
                  tok, 0));
    CHECK_EQ_INT(s.n, 2);
    CHECK(s.form == LC_DATA_TEXT);
    // the prompt ids: the fixture's ids up to and including [/INST] (id 4)
    lc_ids w = fx("<s>[INST] What is 2+2?[/INST] 4</s>");
    size_t k = 0;
    while (k < w.len && w.data[k] != 4) k++;
    CHECK(k < w.len && w.data[0] == 1);
    w.len = k + 1;
    if (s.n == 2) {
        CHECK(ids_are(&s.rows[0], &w));
        CHECK_EQ_STR(s.rows[0].target, "4");
        CHECK_EQ_STR(s.rows[0].prompt, "<s>[INST] What is 2+2?[/INST]");
        CHECK_EQ_INT(s.rows[0].line, 1);
        CHECK(ids_are(&s.rows[1], &w));
        CHECK_EQ_STR(s.rows[1].target, "add rd, rs1, rs2");
        CHECK_EQ_INT(s.rows[1].line, 3);
    }
    lc_ids_free(&w);
    lc_task_set_free(&s);
    // --limit
    CHECK_OK(load(&s, "{\"text\": \"<s>[INST] a[/INST] b</s>\"}\n{\"text\": \"<s>[INST] c[/INST] d</s>\"}\n", tok, 1));
    CHECK_EQ_INT(s.n, 1);
    lc_task_set_free(&s);
    CHECK_FAILS(load(&s, "{\"text\": \"<s>[INST] a[/INST] b</s>\"}\n{\"text\": \"just text\"}\n", tok, 0),
                ":2: cannot find where the answer starts");
    CHECK(s.n == 0 && !s.rows);
}

static void completion_and_chat_rows(void) {
    if (!tok) SKIP("demo-spm tokenizer did not load");
    lc_ids w = {0}, u = fx("Hello world");
    lc_ids_push(&w, 1), lc_ids_push(&w, 3);
    lc_ids_append(&w, u.data, u.len);
    lc_ids_push(&w, 4);
    lc_task_set s;
    CHECK_OK(load(&s, "{\"prompt\": \"Hello world\", \"completion\": \" add rd, rs1, rs2\"}\n", tok, 0));
    CHECK(s.form == LC_DATA_COMPLETION && s.n == 1);
    if (s.n == 1) {
        CHECK(ids_are(&s.rows[0], &w));
        CHECK_EQ_STR(s.rows[0].prompt, "Hello world");
        CHECK_EQ_STR(s.rows[0].target, "add rd, rs1, rs2");
    }
    lc_task_set_free(&s);
    CHECK_OK(load(&s, "{\"messages\": [{\"role\": \"user\", \"content\": \"Hello world\"}, "
                      "{\"role\": \"assistant\", \"content\": \"add rd, rs1, rs2\"}]}\n",
                  tok, 0));
    CHECK(s.form == LC_DATA_CHAT && s.n == 1);
    if (s.n == 1) {
        CHECK(ids_are(&s.rows[0], &w));
        CHECK_EQ_STR(s.rows[0].prompt, "Hello world");
        CHECK_EQ_STR(s.rows[0].target, "add rd, rs1, rs2");
    }
    lc_task_set_free(&s);
    CHECK_FAILS(load(&s, "{\"messages\": [{\"role\": \"user\", \"content\": \"Hello world\"}]}\n", tok, 0),
                "no answer to score");
    CHECK_FAILS(load(&s, "{\"prompt\": \"x\"}\n", tok, 0), "missing \"completion\"");
    CHECK_FAILS(load(&s, "\n\n", tok, 0), "holds no examples");
    CHECK_FAILS(load(&s, "{\"prompt\": \"x\", \"completion\": \"y\"}\n{\"text\": \"z\"}\n", tok, 0),
                "a file holds one form");
    lc_ids_free(&w);
    lc_ids_free(&u);
}

int main(void) {
    load_fixtures();
    snprintf(path, sizeof path, "/tmp/lorac-task-XXXXXX");
    int fd = mkstemp(path);
    if (fd >= 0) close(fd);
    if (lc_tokenizer_load_dir(DEMO, &tok) != 0) printf("  %s\n", lc_errmsg());
    RUN(text_rows);
    RUN(completion_and_chat_rows);
    remove(path);
    lc_tokenizer_free(tok);
    cJSON_Delete(fixtures);
    return t_summary();
}
