/*
 * test_data.c — JSONL data forms, tokenization rules and batches.
 *
 * Expected ids come from the tokenizers' own fixtures, never from lorac: the demo-spm
 * tokenizer's tests/fixtures/tokenizer/demo-spm.jsonl (ids made by the `tokenizers`
 * library) composed by Mistral's documented chat encoding [1, 3] + user + [4] + assistant
 * + [2] (shared assets README), and tests/fixtures/chat/mistral.jsonl (ids made by
 * transformers' apply_chat_template with the shared Mistral tokenizer; skipped when the
 * shared assets are absent).
 */
#include <cjson/cJSON.h>

#include "core/file.h"
#include "core/json.h"
#include "core/mem.h"
#include "harness.h"
#include "text/chat.h"
#include "train/data.h"

#define DEMO "tests/fixtures/tokenizers/demo-spm"
#define DEMO_IDS "tests/fixtures/tokenizer/demo-spm.jsonl"

static cJSON *fixtures; // array of demo-spm fixture objects

static void load_fixtures(void) {
    char *text;
    size_t len;
    fixtures = cJSON_CreateArray();
    if (lc_read_file(DEMO_IDS, 1 << 24, &text, &len) != 0) return;
    for (char *p = text, *nl; *p; p = nl + 1) {
        nl = strchr(p, '\n');
        if (!nl) break;
        cJSON *j = cJSON_ParseWithLength(p, (size_t)(nl - p));
        if (j) cJSON_AddItemToArray(fixtures, j);
    }
    free(text);
}

/* The fixture ids of text ("ids": no special tokens, "ids_special": with them). */
static lc_ids fx(const char *text, const char *which) {
    lc_ids out = {0};
    const cJSON *e;
    cJSON_ArrayForEach(e, fixtures) {
        if (strcmp(cJSON_GetObjectItem(e, "text")->valuestring, text)) continue;
        const cJSON *v;
        cJSON_ArrayForEach(v, cJSON_GetObjectItem(e, which)) lc_ids_push(&out, (int32_t)v->valueint);
        return out;
    }
    printf("  no fixture for \"%s\"\n", text);
    lc_ids_push(&out, -99);
    return out;
}

static lc_tokenizer *demo(void) {
    lc_tokenizer *t = NULL;
    if (lc_tokenizer_load_dir(DEMO, &t) != 0) printf("  %s\n", lc_errmsg());
    return t;
}

static lc_data_options opts(bool mask) {
    lc_data_options o = {mask, 2048, LC_CHAT_MISTRAL};
    return o;
}

static bool example_is(const lc_dataset *d, size_t i, const lc_ids *want) {
    size_t n = lc_dataset_len(d, i);
    bool ok = n == want->len && !memcmp(d->ids + d->start[i], want->data, n * sizeof(int32_t));
    if (!ok) {
        printf("  example %zu:", i);
        for (size_t k = 0; k < n; k++) printf(" %d", d->ids[d->start[i] + k]);
        printf("\n  expected  :");
        for (size_t k = 0; k < want->len; k++) printf(" %d", want->data[k]);
        printf("\n");
    }
    return ok;
}

static int parse(lc_dataset *d, const char *text, const lc_tokenizer *t, lc_data_options o) {
    return lc_dataset_parse(d, text, strlen(text), "train.jsonl", t, &o);
}

static void test_text_form(void) {
    lc_tokenizer *t = demo();
    if (!t) SKIP("demo-spm tokenizer did not load");
    lc_dataset d;
    CHECK_OK(parse(&d, "{\"text\": \"Hello world\"}\n\n"
                       "{\"text\": \"<s>[INST] What is 2+2?[/INST] 4</s>\"}\n",
                   t, opts(false)));
    CHECK_EQ_INT(d.n, 2);
    CHECK(d.form == LC_DATA_TEXT);
    // BOS from add_special, EOS appended
    lc_ids w = fx("Hello world", "ids_special");
    lc_ids_push(&w, 2);
    CHECK(example_is(&d, 0, &w));
    lc_ids_free(&w);
    // the recipe's form: already <s> ... </s>: neither a second BOS nor a second EOS
    w = fx("<s>[INST] What is 2+2?[/INST] 4</s>", "ids");
    CHECK(w.len > 2 && w.data[0] == 1 && w.data[w.len - 1] == 2);
    CHECK(example_is(&d, 1, &w));
    CHECK(d.ids[d.start[1] + 1] != 1);
    lc_ids_free(&w);
    CHECK_EQ_INT(d.offset[0], 0);
    lc_dataset_free(&d);
    lc_tokenizer_free(t);
}

static void test_completion_form(void) {
    lc_tokenizer *t = demo();
    if (!t) SKIP("demo-spm tokenizer did not load");
    lc_dataset d;
    CHECK_OK(parse(&d, "{\"prompt\": \"Hello world\", \"completion\": \"add rd, rs1, rs2\"}\n", t,
                   opts(true)));
    // Mistral: [1, 3] + sp(user) + [4] + sp(assistant) + [2]
    lc_ids w = {0}, u = fx("Hello world", "ids"), a = fx("add rd, rs1, rs2", "ids");
    lc_ids_push(&w, 1), lc_ids_push(&w, 3);
    lc_ids_append(&w, u.data, u.len);
    lc_ids_push(&w, 4);
    size_t prompt_len = w.len;
    lc_ids_append(&w, a.data, a.len);
    lc_ids_push(&w, 2);
    CHECK(d.form == LC_DATA_COMPLETION);
    CHECK(example_is(&d, 0, &w));
    CHECK_EQ_INT(d.offset[0], prompt_len);
    // the batch: prompt targets ignored, completion and EOS trained, nothing after
    lc_batcher b;
    lc_batch_buf bt = {0};
    CHECK_OK(lc_batcher_init(&b, &d, 1, 2048, 0, true));
    CHECK_OK(lc_batcher_next(&b, &bt));
    CHECK_EQ_INT(bt.T, 32);
    for (size_t i = 0; i < (size_t)bt.T; i++) {
        int32_t want = i + 1 >= prompt_len && i + 1 < w.len ? w.data[i + 1] : -1;
        CHECK_MSG(bt.targets[i] == want, "target %zu: %d vs %d", i, bt.targets[i], want);
        CHECK(bt.tokens[i] == (i < w.len ? w.data[i] : 0));
    }
    CHECK_EQ_INT(bt.n_targets, (int64_t)(w.len - prompt_len));
    CHECK_EQ_INT(bt.targets[w.len - 2], 2); // EOS trained
    lc_batch_buf_free(&bt);
    lc_batcher_free(&b);
    lc_dataset_free(&d);
    // without mask_prompt everything after the first token is trained
    CHECK_OK(parse(&d, "{\"prompt\": \"Hello world\", \"completion\": \"add rd, rs1, rs2\"}\n", t,
                   opts(false)));
    CHECK_EQ_INT(d.offset[0], 0);
    lc_dataset_free(&d);
    lc_ids_free(&w), lc_ids_free(&u), lc_ids_free(&a);
    lc_tokenizer_free(t);
}

static void test_messages_form(void) {
    lc_tokenizer *t = demo();
    if (!t) SKIP("demo-spm tokenizer did not load");
    lc_dataset d;
    const char *line = "{\"messages\": [{\"role\": \"user\", \"content\": \"Hello\"}, "
                       "{\"role\": \"assistant\", \"content\": \"a\"}, "
                       "{\"role\": \"user\", \"content\": \"Hello world\"}, "
                       "{\"role\": \"assistant\", \"content\": \"add rd, rs1, rs2\"}]}\n";
    CHECK_OK(parse(&d, line, t, opts(true)));
    lc_ids w = {0}, u1 = fx("Hello", "ids"), a1 = fx("a", "ids"), u2 = fx("Hello world", "ids"),
           a2 = fx("add rd, rs1, rs2", "ids");
    lc_ids_push(&w, 1), lc_ids_push(&w, 3);
    lc_ids_append(&w, u1.data, u1.len);
    lc_ids_push(&w, 4);
    lc_ids_append(&w, a1.data, a1.len);
    lc_ids_push(&w, 2), lc_ids_push(&w, 3);
    lc_ids_append(&w, u2.data, u2.len);
    lc_ids_push(&w, 4);
    size_t head = w.len;
    lc_ids_append(&w, a2.data, a2.len);
    lc_ids_push(&w, 2);
    CHECK(d.form == LC_DATA_CHAT);
    CHECK(example_is(&d, 0, &w));
    CHECK_EQ_INT(d.offset[0], head); // all but the last assistant turn masked
    lc_dataset_free(&d);
    lc_ids_free(&w), lc_ids_free(&u1), lc_ids_free(&a1), lc_ids_free(&u2), lc_ids_free(&a2);
    lc_tokenizer_free(t);
}

/* Conversations ending with the assistant from the transformers-made chat fixtures. */
static void test_messages_vs_transformers(void) {
    const char *assets = t_assets();
    if (!assets) SKIP("shared assets absent: no Mistral tokenizer");
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/mistral-7b-instruct-v0.3-tokenizer", assets);
    lc_tokenizer *t = NULL;
    if (lc_tokenizer_load_dir(dir, &t) != 0) SKIP("%s", lc_errmsg());
    char *text;
    size_t len;
    CHECK_OK(lc_read_file("tests/fixtures/chat/mistral.jsonl", 1 << 24, &text, &len));
    int checked = 0;
    for (char *p = text, *nl; p && *p; p = nl ? nl + 1 : NULL) {
        nl = strchr(p, '\n');
        cJSON *j = cJSON_ParseWithLength(p, nl ? (size_t)(nl - p) : strlen(p));
        if (!j) continue;
        const cJSON *msgs = cJSON_GetObjectItem(j, "messages");
        const cJSON *last = cJSON_GetArrayItem(msgs, cJSON_GetArraySize(msgs) - 1);
        if (cJSON_IsTrue(cJSON_GetObjectItem(j, "add_generation_prompt")) ||
            strcmp(cJSON_GetObjectItem(last, "role")->valuestring, "assistant") ||
            cJSON_GetObjectItem(j, "tools") || !cJSON_GetArraySize(cJSON_GetObjectItem(j, "ids"))) {
            cJSON_Delete(j);
            continue;
        }
        cJSON *line = cJSON_CreateObject();
        cJSON_AddItemReferenceToObject(line, "messages", (cJSON *)msgs);
        char *s = cJSON_PrintUnformatted(line);
        lc_dataset d;
        lc_data_options o = {false, 4096, -1}; // family from the tokenizer's chat_template
        if (lc_dataset_parse(&d, s, strlen(s), "fixture", t, &o) == 0) {
            lc_ids w = {0};
            const cJSON *v;
            cJSON_ArrayForEach(v, cJSON_GetObjectItem(j, "ids")) lc_ids_push(&w, v->valueint);
            CHECK_MSG(example_is(&d, 0, &w), "case %s", cJSON_GetObjectItem(j, "name")->valuestring);
            lc_ids_free(&w);
            lc_dataset_free(&d);
            checked++;
        } else {
            CHECK_MSG(0, "case %s: %s", cJSON_GetObjectItem(j, "name")->valuestring, lc_errmsg());
        }
        free(s);
        cJSON_Delete(line);
        cJSON_Delete(j);
    }
    CHECK(checked > 0);
    printf("  %d conversations match transformers\n", checked);
    free(text);
    lc_tokenizer_free(t);
}

static void test_errors(void) {
    lc_tokenizer *t = demo();
    if (!t) SKIP("demo-spm tokenizer did not load");
    lc_dataset d;
    CHECK_FAILS(parse(&d, "{\"text\": \"a\"}\n{\"text\": \n", t, opts(false)), "train.jsonl:2: invalid JSON");
    CHECK_FAILS(parse(&d, "{\"txt\": \"a\"}\n", t, opts(false)), "train.jsonl:1: expected a \"text\"");
    CHECK_FAILS(parse(&d, "{\"text\": 5}\n", t, opts(false)), "train.jsonl:1");
    CHECK_FAILS(parse(&d, "{\"text\": \"a\"}\n{\"prompt\": \"a\", \"completion\": \"b\"}\n", t,
                      opts(false)),
                "train.jsonl:2: this line is in the prompt/completion form but line 1 is in the text");
    CHECK_FAILS(parse(&d, "{\"prompt\": \"a\"}\n", t, opts(false)), "train.jsonl:1: missing \"completion\"");
    CHECK_FAILS(parse(&d, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}], \"tools\": []}\n",
                      t, opts(false)),
                "train.jsonl:1: \"tools\" is not supported yet");
    CHECK_FAILS(parse(&d, "{\"messages\": [{\"role\": \"assistant\", \"content\": \"a\"}]}\n", t,
                      opts(false)),
                "train.jsonl:1: mistral chat template");
    CHECK_FAILS(parse(&d, "{\"messages\": [{\"role\": \"user\"}]}\n", t, opts(false)),
                "train.jsonl:1: messages[0]: missing \"content\"");
    CHECK_FAILS(parse(&d, "\n\n", t, opts(false)), "holds no examples");
    lc_data_options o = {false, 2048, -1};
    lc_tokenizer *plain; /* a tokenizer without a chat_template */
    CHECK_OK(lc_tokenizer_load_dir("tests/fixtures/tokenizers/bl-gpt2", &plain));
    CHECK_FAILS(lc_dataset_parse(&d, "{\"prompt\": \"a\", \"completion\": \"b\"}", 34, "x.jsonl", plain, &o),
                "x.jsonl:1: chat data needs a chat template");
    lc_tokenizer_free(plain);
    CHECK_FAILS(lc_dataset_load(&d, "/nonexistent/train.jsonl", t, &o), "/nonexistent/train.jsonl");
    lc_tokenizer_free(t);
}

/* A data set of n texts whose lengths differ (k words each). */
static void make_set(lc_dataset *d, lc_tokenizer *t, int n, int64_t msl) {
    lc_buf b = {0};
    for (int i = 0; i < n; i++) {
        lc_buf_puts(&b, "{\"text\": \"");
        for (int k = 0; k <= (i * 7) % 23; k++) lc_buf_puts(&b, "add rd, rs1, rs2 ");
        lc_buf_puts(&b, "\"}\n");
    }
    lc_data_options o = {false, msl, -1};
    if (lc_dataset_parse(d, b.data, b.len, "gen.jsonl", t, &o) != 0) printf("  %s\n", lc_errmsg());
    lc_buf_free(&b);
}

static void test_batching(void) {
    lc_tokenizer *t = demo();
    if (!t) SKIP("demo-spm tokenizer did not load");
    lc_dataset d;
    make_set(&d, t, 21, 2048);
    CHECK_EQ_INT(d.n, 21);
    lc_data_stats st;
    lc_dataset_stats(&d, &st);
    CHECK_EQ_INT(st.count, 21);
    CHECK(st.min < st.median && st.median < st.max);
    CHECK_EQ_INT(st.n_truncated, 0);
    lc_batcher b;
    CHECK_FAILS(lc_batcher_init(&b, &d, 22, 2048, 0, true), "fewer than batch_size=22");
    CHECK_OK(lc_batcher_init(&b, &d, 4, 2048, 7, true));
    CHECK_EQ_INT(b.n_batches, 5); // 21 / 4: the tail is dropped
    // one epoch hands out every batch once; the batches group similar lengths
    lc_batch_buf bt = {0};
    int seen[5] = {0};
    for (int k = 0; k < 5; k++) {
        CHECK_OK(lc_batcher_next(&b, &bt));
        size_t first = b.order[k];
        seen[first]++;
        size_t maxlen = 0;
        for (int j = 0; j < 4; j++) {
            size_t L = lc_dataset_len(&d, b.sorted[first * 4 + j]);
            if (L > maxlen) maxlen = L;
        }
        CHECK_EQ_INT(bt.T, 32 * ((maxlen + 31) / 32)); // width 1 + 32k, inputs one shorter
        CHECK_EQ_INT(bt.B, 4);
    }
    for (int k = 0; k < 5; k++) CHECK_EQ_INT(seen[k], 1);
    lc_data_pos p = lc_batcher_pos(&b);
    CHECK_EQ_INT(p.epoch, 0);
    CHECK_EQ_INT(p.index, 5);
    // save, take 7 more (into the next epochs), restore in a fresh batcher: same batches
    char text[64];
    lc_data_pos_format(&p, text, sizeof text);
    CHECK_EQ_STR(text, "7:0:5");
    int32_t *rec = xmalloc(7 * 4 * 2048 * sizeof *rec);
    size_t at = 0;
    for (int k = 0; k < 7; k++) {
        CHECK_OK(lc_batcher_next(&b, &bt));
        memcpy(rec + at, bt.targets, (size_t)(bt.B * bt.T) * sizeof *rec);
        at += (size_t)(bt.B * bt.T);
    }
    CHECK_EQ_INT(lc_batcher_pos(&b).epoch, 2); // 12 batches of 5 per epoch
    lc_batcher c;
    lc_data_pos q;
    CHECK_OK(lc_data_pos_parse(text, &q));
    CHECK_OK(lc_batcher_init(&c, &d, 4, 2048, 7, true));
    CHECK_OK(lc_batcher_seek(&c, &q));
    at = 0;
    int same = 1;
    for (int k = 0; k < 7; k++) {
        CHECK_OK(lc_batcher_next(&c, &bt));
        same &= !memcmp(rec + at, bt.targets, (size_t)(bt.B * bt.T) * sizeof *rec);
        at += (size_t)(bt.B * bt.T);
    }
    CHECK(same);
    // another seed gives another order (for this set, some batch differs)
    lc_batcher e;
    CHECK_OK(lc_batcher_init(&e, &d, 4, 2048, 8, true));
    lc_batcher f;
    CHECK_OK(lc_batcher_init(&f, &d, 4, 2048, 7, true));
    int differ2 = 0;
    for (size_t k = 0; k < 5; k++) differ2 |= e.order[k] != f.order[k];
    CHECK(differ2);
    CHECK_FAILS(lc_batcher_seek(&e, &q), "seed 7");
    CHECK_FAILS(lc_data_pos_parse("1:2", &q), "is not seed:epoch:index");
    lc_batcher_free(&f);
    lc_batcher_free(&e);
    lc_batcher_free(&c);
    free(rec);
    // no shuffle: the sorted order
    CHECK_OK(lc_batcher_init(&c, &d, 4, 2048, 7, false));
    for (size_t k = 0; k < 5; k++) CHECK_EQ_INT(c.order[k], k);
    lc_batcher_free(&c);
    lc_batcher_free(&b);
    lc_batch_buf_free(&bt);
    lc_dataset_free(&d);
    lc_tokenizer_free(t);
}

static void test_truncation(void) {
    lc_tokenizer *t = demo();
    if (!t) SKIP("demo-spm tokenizer did not load");
    lc_dataset d;
    make_set(&d, t, 8, 40);
    lc_data_stats st;
    lc_dataset_stats(&d, &st);
    CHECK(st.n_truncated > 0 && st.max > 40);
    lc_batcher b;
    lc_batch_buf bt = {0};
    CHECK_OK(lc_batcher_init(&b, &d, 8, 40, 0, false));
    CHECK_OK(lc_batcher_next(&b, &bt));
    CHECK_EQ_INT(bt.T, 39); // width capped at max_seq_length
    // the longest row: tokens are its first 39, targets its tokens 1..39
    size_t longest = b.sorted[7];
    const int32_t *seq = d.ids + d.start[longest];
    int ok = 1;
    for (int i = 0; i < 39; i++) ok &= bt.tokens[7 * 39 + i] == seq[i] && bt.targets[7 * 39 + i] == seq[i + 1];
    CHECK(ok);
    lc_batch_buf_free(&bt);
    lc_batcher_free(&b);
    lc_dataset_free(&d);
    lc_tokenizer_free(t);
}

int main(void) {
    load_fixtures();
    RUN(test_text_form);
    RUN(test_completion_form);
    RUN(test_messages_form);
    RUN(test_messages_vs_transformers);
    RUN(test_errors);
    RUN(test_batching);
    RUN(test_truncation);
    cJSON_Delete(fixtures);
    return t_summary();
}
