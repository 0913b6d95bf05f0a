/*
 * fuzz_chat.c — libFuzzer target: chat templates and messages. The input's first part (up
 * to the first NUL byte) is a chat_template source to recognise; the rest is a JSON array
 * of {"role", "content"} messages, rendered as text by every family and as ids by the
 * demo tokenizer (tests/fixtures/tokenizers/demo-spm, read once from the repository
 * root). Any crash, leak or sanitizer report is a bug; failures with an error are fine.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/vec.h"
#include "text/chat.h"
#include "text/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static lc_tokenizer *g_tok;

static void free_tok(void) { lc_tokenizer_free(g_tok); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_tok) {
        if (lc_tokenizer_load_dir("tests/fixtures/tokenizers/demo-spm", &g_tok) != 0) abort();
        atexit(free_tok);
    }
    const char *p = (const char *)data;
    const char *nul = memchr(p, 0, size);
    size_t tlen = nul ? (size_t)(nul - p) : size;
    char *tmpl = malloc(tlen + 1);
    memcpy(tmpl, p, tlen);
    tmpl[tlen] = '\0';
    lc_chat_family detected;
    int have = lc_chat_detect(tmpl, &detected) == 0;
    free(tmpl);
    if (!nul) return 0;
    cJSON *j;
    if (lc_json_parse(nul + 1, size - tlen - 1, "fuzz messages", &j) != 0) return 0;
    size_t n = cJSON_IsArray(j) ? (size_t)cJSON_GetArraySize(j) : 0;
    lc_chat_msg *m = calloc(n + 1, sizeof *m);
    size_t k = 0;
    const cJSON *e, *list = cJSON_IsArray(j) ? j : NULL;
    cJSON_ArrayForEach(e, list) {
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(e, "role");
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "content");
        if (cJSON_IsString(r) && cJSON_IsString(c)) m[k++] = (lc_chat_msg){r->valuestring, c->valuestring};
    }
    for (int f = 0; f < LC_CHAT_N_FAMILIES; f++)
        for (int gen = 0; gen < 2; gen++) {
            lc_buf b = {0};
            (void)lc_chat_render_text((lc_chat_family)f, m, k, gen, f == LC_CHAT_PHI3 ? NULL : "<s>", "</s>", &b);
            lc_buf_free(&b);
        }
    lc_ids ids = {0};
    (void)lc_chat_render_ids(g_tok, have ? detected : LC_CHAT_MISTRAL, m, k, true, &ids);
    lc_ids_free(&ids);
    free(m);
    cJSON_Delete(j);
    return 0;
}
