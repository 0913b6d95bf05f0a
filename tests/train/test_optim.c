/*
 * test_optim.c — Adam/AdamW, schedules and clipping against PyTorch.
 *
 * tests/fixtures/optim/torch_adam.json holds parameter trajectories of torch.optim.Adam and
 * AdamW (made by tests/reference/make_optim_fixtures.py): each case is replayed here with
 * the same initial parameters and gradients and must give torch's parameters after every
 * step. Tolerance: both sides compute in fp32 with the same order of operations, so they
 * differ by a few ulps per step; 1e-6 relative (about 8 ulps) plus 1e-7 absolute for
 * values near zero.
 */
#include <cjson/cJSON.h>

#include "core/json.h"
#include "core/mem.h"
#include "harness.h"
#include "train/optim.h"

#define FIXTURE "tests/fixtures/optim/torch_adam.json"

static void to_floats(const cJSON *arr, float *out) {
    size_t i = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, arr) out[i++] = (float)v->valuedouble;
}

static void replay(const cJSON *c) {
    const char *name = cJSON_GetObjectItem(c, "name")->valuestring;
    bool adamw = !strcmp(cJSON_GetObjectItem(c, "optimizer")->valuestring, "adamw");
    lc_adam_config cfg = lc_adam_defaults(adamw ? LC_OPTIM_ADAMW : LC_OPTIM_ADAM);
    const cJSON *betas = cJSON_GetObjectItem(c, "betas");
    cfg.beta1 = cJSON_GetArrayItem(betas, 0)->valuedouble;
    cfg.beta2 = cJSON_GetArrayItem(betas, 1)->valuedouble;
    cfg.eps = cJSON_GetObjectItem(c, "eps")->valuedouble;
    cfg.weight_decay = cJSON_GetObjectItem(c, "weight_decay")->valuedouble;
    double lr = cJSON_GetObjectItem(c, "lr")->valuedouble;
    const cJSON *clip = cJSON_GetObjectItem(c, "clip");
    lc_schedule sched = {0};
    const cJSON *sc = cJSON_GetObjectItem(c, "schedule");
    if (cJSON_IsObject(sc)) {
        const char *sn = cJSON_GetObjectItem(sc, "name")->valuestring;
        sched.kind = !strcmp(sn, "cosine_decay") ? LC_SCHED_COSINE : LC_SCHED_LINEAR;
        const cJSON *v;
        cJSON_ArrayForEach(v, cJSON_GetObjectItem(sc, "arguments")) sched.args[sched.n_args++] =
            v->valuedouble;
        const cJSON *w = cJSON_GetObjectItem(sc, "warmup");
        if (w) sched.warmup = (int64_t)w->valuedouble;
        w = cJSON_GetObjectItem(sc, "warmup_init");
        if (w) sched.warmup_init = w->valuedouble;
        CHECK_OK(lc_schedule_validate(&sched, name));
    }
    const cJSON *shapes = cJSON_GetObjectItem(c, "shapes");
    size_t np = (size_t)cJSON_GetArraySize(shapes);
    float *p[8], *g[8], *m[8], *v[8], *want = xmalloc(4096 * sizeof(float));
    size_t n[8];
    for (size_t k = 0; k < np; k++) {
        n[k] = 1;
        const cJSON *d;
        cJSON_ArrayForEach(d, cJSON_GetArrayItem(shapes, (int)k)) n[k] *= (size_t)d->valuedouble;
        p[k] = xcalloc(n[k], sizeof(float));
        g[k] = xcalloc(n[k], sizeof(float));
        m[k] = xcalloc(n[k], sizeof(float));
        v[k] = xcalloc(n[k], sizeof(float));
        to_floats(cJSON_GetArrayItem(cJSON_GetObjectItem(c, "init"), (int)k), p[k]);
    }
    const cJSON *grads = cJSON_GetObjectItem(c, "grads"), *params = cJSON_GetObjectItem(c, "params");
    const cJSON *lrs = cJSON_GetObjectItem(c, "lrs"), *norms = cJSON_GetObjectItem(c, "norms");
    int steps = cJSON_GetArraySize(grads), bad = 0;
    double worst = 0;
    for (int s = 0; s < steps; s++) {
        for (size_t k = 0; k < np; k++)
            to_floats(cJSON_GetArrayItem(cJSON_GetArrayItem(grads, s), (int)k), g[k]);
        if (cJSON_IsNumber(clip)) {
            double norm = lc_clip_grad_norm(g, n, np, clip->valuedouble);
            double tn = cJSON_GetArrayItem(norms, s)->valuedouble;
            CHECK_MSG(fabs(norm - tn) <= 1e-6 * tn, "%s step %d: norm %.9g vs torch %.9g", name, s,
                      norm, tn);
        }
        double step_lr = sched.kind ? lc_schedule_lr(&sched, lr, s) : lr;
        double tlr = cJSON_GetArrayItem(lrs, s)->valuedouble;
        CHECK_MSG(fabs(step_lr - tlr) <= 1e-12 * fabs(tlr) + 1e-18, "%s step %d: lr %.17g vs %.17g",
                  name, s, step_lr, tlr);
        for (size_t k = 0; k < np; k++) {
            lc_adam_update(&cfg, step_lr, s + 1, p[k], g[k], m[k], v[k], n[k]);
            to_floats(cJSON_GetArrayItem(cJSON_GetArrayItem(params, s), (int)k), want);
            for (size_t i = 0; i < n[k]; i++) {
                double d = fabs((double)p[k][i] - want[i]);
                double tol = 1e-6 * fabs(want[i]) + 1e-7;
                if (d / (fabs(want[i]) + 1e-7) > worst) worst = d / (fabs(want[i]) + 1e-7);
                if (d > tol && bad++ < 3)
                    printf("  %s step %d tensor %zu [%zu]: %.9g vs torch %.9g\n", name, s, k, i,
                           p[k][i], want[i]);
            }
        }
    }
    CHECK_MSG(bad == 0, "%s: %d parameters differ from torch", name, bad);
    printf("  %s: %d steps, worst relative difference %.2g\n", name, steps, worst);
    for (size_t k = 0; k < np; k++) free(p[k]), free(g[k]), free(m[k]), free(v[k]);
    free(want);
}

static void test_torch_fixtures(void) {
    cJSON *root;
    if (lc_json_parse_file(FIXTURE, 16 << 20, &root) != 0) SKIP("%s: %s", FIXTURE, lc_errmsg());
    const cJSON *cases = cJSON_GetObjectItem(root, "cases"), *c;
    CHECK(cJSON_GetArraySize(cases) >= 8);
    cJSON_ArrayForEach(c, cases) replay(c);
    cJSON_Delete(root);
}

static void test_schedules(void) {
    // mlx.optimizers.schedulers, by their documented formulas
    lc_schedule s = {LC_SCHED_COSINE, {1e-2, 10, 0}, 2, 0, 0};
    CHECK(fabs(lc_schedule_lr(&s, 1, 0) - 1e-2) < 1e-15);
    CHECK(fabs(lc_schedule_lr(&s, 1, 5) - 5e-3) < 1e-15);
    CHECK(fabs(lc_schedule_lr(&s, 1, 10)) < 1e-15);
    CHECK(fabs(lc_schedule_lr(&s, 1, 50)) < 1e-15); // held at the end
    lc_schedule l = {LC_SCHED_LINEAR, {0, 1, 4}, 3, 0, 0};
    CHECK(lc_schedule_lr(&l, 1, 2) == 0.5);
    CHECK(lc_schedule_lr(&l, 1, 9) == 1);
    lc_schedule w = {LC_SCHED_CONSTANT, {3e-4}, 1, 4, 0}; // warm-up 0 -> 3e-4 over 4 steps
    CHECK(lc_schedule_lr(&w, 1, 0) == 0); // mlx-lm's first update uses warmup_init
    CHECK(fabs(lc_schedule_lr(&w, 1, 2) - 1.5e-4) < 1e-18);
    CHECK(lc_schedule_lr(&w, 1, 4) == 3e-4);
    CHECK(lc_schedule_lr(&w, 1, 5) == 3e-4);
    CHECK(lc_schedule_lr(NULL, 7e-5, 3) == 7e-5);
    lc_schedule bad = {LC_SCHED_COSINE, {1e-2}, 1, 0, 0};
    CHECK_FAILS(lc_schedule_validate(&bad, "x.yaml:3: lr_schedule"),
                "x.yaml:3: lr_schedule: cosine_decay takes arguments [init, decay_steps, end]");
    lc_schedule neg = {LC_SCHED_LINEAR, {1e-2, 0, 0}, 3, 0, 0};
    CHECK_FAILS(lc_schedule_validate(&neg, "lr_schedule"), "steps must be >= 1");
}

static void test_clip_and_accumulate(void) {
    float a[2] = {3, 0}, b[1] = {4};
    float *g[2] = {a, b};
    size_t n[2] = {2, 1};
    CHECK(lc_grad_norm(g, n, 2) == 5);
    double norm = lc_clip_grad_norm(g, n, 2, 10); // no change below the limit
    CHECK(norm == 5 && a[0] == 3 && b[0] == 4);
    lc_clip_grad_norm(g, n, 2, 1);
    CHECK(fabs(a[0] - 0.6f) < 1e-6 && fabs(b[0] - 0.8f) < 1e-6);
    float acc[3] = {0}, g1[3] = {1, 2, 3}, g2[3] = {3, 2, 1};
    lc_grad_accumulate(acc, g1, 3);
    lc_grad_accumulate(acc, g2, 3);
    lc_grad_accumulate_finish(acc, 3, 2);
    CHECK(acc[0] == 2 && acc[1] == 2 && acc[2] == 2);
}

int main(void) {
    RUN(test_torch_fixtures);
    RUN(test_schedules);
    RUN(test_clip_and_accumulate);
    return t_summary();
}
