/*
 * optim.c — Adam/AdamW, learning-rate schedules, gradient clipping and accumulation.
 * See optim.h. The update follows the order of operations of PyTorch's single-tensor
 * Adam in fp32 (scalars computed in double, then used in float), so that results agree
 * with torch to a few ulps per step.
 */
#include "train/optim.h"

#include <math.h>

#include "core/error.h"

lc_adam_config lc_adam_defaults(lc_optim_kind kind) {
    lc_adam_config c = {kind, 0.9, 0.999, 1e-8, kind == LC_OPTIM_ADAMW ? 0.01 : 0.0};
    return c;
}

lc_adam_args lc_adam_args_make(const lc_adam_config *c, double lr, int64_t t) {
    lc_adam_args a;
    a.step_size = (float)(lr / (1.0 - pow(c->beta1, (double)t)));
    a.bc2_sqrt = (float)sqrt(1.0 - pow(c->beta2, (double)t));
    a.w1 = (float)(1.0 - c->beta1);
    a.b2 = (float)c->beta2, a.w2 = (float)(1.0 - c->beta2);
    a.eps = (float)c->eps;
    a.wd = (float)c->weight_decay;
    a.decay = (float)(1.0 - lr * c->weight_decay);
    a.decoupled = c->kind == LC_OPTIM_ADAMW;
    return a;
}

void lc_adam_update(const lc_adam_config *c, double lr, int64_t t, float *p, const float *g,
                    float *m, float *v, size_t n) {
    const double bc1 = 1.0 - pow(c->beta1, (double)t);
    const double bc2 = 1.0 - pow(c->beta2, (double)t);
    const float step_size = (float)(lr / bc1);
    const float bc2_sqrt = (float)sqrt(bc2);
    const float w1 = (float)(1.0 - c->beta1); // exp_avg.lerp_(grad, 1 - beta1)
    const float b2 = (float)c->beta2, w2 = (float)(1.0 - c->beta2);
    const float eps = (float)c->eps;
    const float wd = (float)c->weight_decay;
    const float decay = (float)(1.0 - lr * c->weight_decay); // AdamW: param.mul_(1 - lr*wd)
    const bool decoupled = c->kind == LC_OPTIM_ADAMW;
    for (size_t i = 0; i < n; i++) {
        float gi = g[i];
        if (c->weight_decay != 0) {
            if (decoupled) p[i] *= decay;
            else gi = gi + wd * p[i]; // grad.add(param, alpha=weight_decay)
        }
        // lerp with weight < 0.5: self + weight * (end - self)
        m[i] = m[i] + w1 * (gi - m[i]);
        v[i] = v[i] * b2 + w2 * (gi * gi);
        float denom = sqrtf(v[i]) / bc2_sqrt + eps;
        p[i] = p[i] + (-step_size) * (m[i] / denom);
    }
}

/* ---- schedules ---- */

const char *lc_schedule_name(lc_sched_kind k) {
    switch (k) {
    case LC_SCHED_CONSTANT: return "constant";
    case LC_SCHED_COSINE: return "cosine_decay";
    case LC_SCHED_LINEAR: return "linear_schedule";
    default: return "none";
    }
}

static double linear_at(double init, double end, double steps, double step) {
    if (step > steps) step = steps;
    return step * ((end - init) / steps) + init;
}

static double main_at(const lc_schedule *s, double base_lr, double step) {
    switch (s->kind) {
    case LC_SCHED_CONSTANT: return s->args[0];
    case LC_SCHED_COSINE: {
        double init = s->args[0], decay_steps = s->args[1];
        double end = s->n_args > 2 ? s->args[2] : 0.0;
        double k = step < decay_steps ? step : decay_steps;
        double decay = 0.5 * (1.0 + cos((M_PI / decay_steps) * k));
        return end + decay * (init - end);
    }
    case LC_SCHED_LINEAR: return linear_at(s->args[0], s->args[1], s->args[2], step);
    default: return base_lr;
    }
}

double lc_schedule_lr(const lc_schedule *s, double base_lr, int64_t step) {
    if (!s || s->kind == LC_SCHED_NONE) return base_lr;
    if (s->warmup > 0) {
        if (step < s->warmup + 1)
            return linear_at(s->warmup_init, s->args[0], (double)s->warmup, (double)step);
        return main_at(s, base_lr, (double)(step - s->warmup - 1));
    }
    return main_at(s, base_lr, (double)step);
}

int lc_schedule_validate(const lc_schedule *s, const char *what) {
    int lo = 0, hi = 0;
    const char *form = "";
    switch (s->kind) {
    case LC_SCHED_NONE: return 0;
    case LC_SCHED_CONSTANT: lo = hi = 1, form = "[lr]"; break;
    case LC_SCHED_COSINE: lo = 2, hi = 3, form = "[init, decay_steps, end]"; break;
    case LC_SCHED_LINEAR: lo = hi = 3, form = "[init, end, steps]"; break;
    }
    if (s->n_args < lo || s->n_args > hi)
        return lc_fail("%s: %s takes arguments %s%s, got %d value%s", what,
                       lc_schedule_name(s->kind), form, lo < hi ? " (end optional)" : "",
                       s->n_args, s->n_args == 1 ? "" : "s");
    for (int i = 0; i < s->n_args; i++)
        if (!isfinite(s->args[i]) || s->args[i] < 0)
            return lc_fail("%s: argument %d (%g) must be a finite number >= 0", what, i + 1,
                           s->args[i]);
    if (s->kind == LC_SCHED_COSINE && s->args[1] < 1)
        return lc_fail("%s: cosine_decay's decay_steps must be >= 1, got %g", what, s->args[1]);
    if (s->kind == LC_SCHED_LINEAR && s->args[2] < 1)
        return lc_fail("%s: linear_schedule's steps must be >= 1, got %g", what, s->args[2]);
    if (s->warmup < 0) return lc_fail("%s: warmup must be >= 0, got %lld", what, (long long)s->warmup);
    if (!isfinite(s->warmup_init) || s->warmup_init < 0)
        return lc_fail("%s: warmup_init must be a finite number >= 0, got %g", what, s->warmup_init);
    return 0;
}

/* ---- gradients ---- */

double lc_grad_norm(float *const *g, const size_t *n, size_t count) {
    double total = 0;
    for (size_t k = 0; k < count; k++)
        for (size_t i = 0; i < n[k]; i++) total += (double)g[k][i] * g[k][i];
    return sqrt(total);
}

double lc_clip_grad_norm(float *const *g, const size_t *n, size_t count, double max_norm) {
    double norm = lc_grad_norm(g, n, count);
    double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0) {
        float c = (float)coef;
        for (size_t k = 0; k < count; k++)
            for (size_t i = 0; i < n[k]; i++) g[k][i] *= c;
    }
    return norm;
}

void lc_grad_accumulate(float *acc, const float *g, size_t n) {
    for (size_t i = 0; i < n; i++) acc[i] += g[i];
}

void lc_grad_accumulate_finish(float *acc, size_t n, int64_t steps) {
    if (steps <= 1) return;
    float s = (float)steps;
    for (size_t i = 0; i < n; i++) acc[i] /= s; // mlx-lm: x / grad_accum_steps
}
