/*
 * task.c — generating answers for a split and scoring them. See task.h.
 */
#include "train/task.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/log.h"
#include "core/mem.h"
#include "model/generate.h"

static int collect(void *ctx, const char *text, size_t n) {
    lc_buf_append((lc_buf *)ctx, text, n);
    return 0;
}

int lc_task_generate(lc_model *m, const lc_tokenizer *t, const lc_task_set *s,
                     int64_t max_tokens, const char *label, lc_task_result *r) {
    memset(r, 0, sizeof *r);
    r->output = xcalloc(s->n ? s->n : 1, sizeof *r->output);
    r->score = xcalloc(s->n ? s->n : 1, sizeof *r->score);
    lc_sample_config sc = lc_sample_defaults(); // greedy
    lc_progress prog;
    lc_progress_start(&prog, label, (int64_t)s->n);
    double t0 = lc_now();
    int rc = 0;
    for (size_t i = 0; i < s->n && rc == 0; i++) {
        const lc_task_row *row = &s->rows[i];
        lc_buf text = {0};
        lc_buf_puts(&text, "");
        lc_gen_stats st;
        rc = lc_generate(m, t, row->ids, (int64_t)row->n_ids, max_tokens, &sc, collect, &text,
                         NULL, &st);
        if (rc != 0) {
            lc_fail_prefix("line %zu", row->line);
            lc_buf_free(&text);
            break;
        }
        r->output[i] = text.data;
        r->n = i + 1;
        r->tokens += st.generated;
        lc_task_score_text(text.data, row->target, &r->score[i]);
        r->exact += r->score[i].exact;
        r->mnemonic += r->score[i].mnemonic;
        lc_progress_update(&prog, (int64_t)i + 1);
    }
    lc_progress_finish(&prog);
    r->seconds = lc_now() - t0;
    return rc;
}

int lc_task_assemble(const lc_asm_config *c, lc_task_result *const *rs, size_t n) {
    size_t total = 0;
    for (size_t k = 0; k < n; k++) total += rs[k]->n;
    const char **text = xmalloc((total ? total : 1) * sizeof *text);
    signed char *ok = xmalloc(total ? total : 1);
    size_t j = 0;
    for (size_t k = 0; k < n; k++)
        for (size_t i = 0; i < rs[k]->n; i++) text[j++] = rs[k]->output[i];
    int rc = lc_asm_check(c, text, total, ok, NULL);
    if (rc == 0) {
        j = 0;
        for (size_t k = 0; k < n; k++) {
            rs[k]->measured = true;
            rs[k]->assembles = 0;
            for (size_t i = 0; i < rs[k]->n; i++, j++) {
                rs[k]->score[i].assembles = ok[j];
                rs[k]->assembles += ok[j] == 1;
            }
        }
    }
    free(text);
    free(ok);
    return rc;
}

void lc_task_result_free(lc_task_result *r) {
    for (size_t i = 0; i < r->n; i++) free(r->output[i]);
    free(r->output);
    free(r->score);
    memset(r, 0, sizeof *r);
}
