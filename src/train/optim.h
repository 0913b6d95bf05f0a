/*
 * optim.h — the optimizer arithmetic of training, over fp32 arrays: Adam and AdamW as
 * PyTorch defines them (torch.optim.Adam / AdamW, bias-corrected), the learning-rate
 * schedules of mlx-lm (mlx.optimizers.schedulers: cosine_decay, linear_schedule, joined
 * with a linear warm-up as mlx-lm's build_schedule does), global gradient-norm clipping
 * as torch.nn.utils.clip_grad_norm_, and gradient accumulation.
 *
 * Owns nothing: every function works on arrays the caller owns. Never prints.
 * Step numbers: `step` counts optimizer updates already done (0 for the first update),
 * as mlx's optimizers evaluate a schedule and as torch's LambdaLR hands its lambda the
 * epoch count; Adam's bias correction uses t = step + 1.
 */
#ifndef LC_TRAIN_OPTIM_H
#define LC_TRAIN_OPTIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"

typedef enum { LC_OPTIM_ADAM, LC_OPTIM_ADAMW } lc_optim_kind;

typedef struct {
    lc_optim_kind kind;
    double beta1, beta2, eps;
    double weight_decay; // Adam: L2 added to the gradient; AdamW: decoupled p -= lr*wd*p
} lc_adam_config;

/* torch's defaults: betas (0.9, 0.999), eps 1e-8, weight decay 0 (Adam) or 0.01 (AdamW). */
lc_adam_config lc_adam_defaults(lc_optim_kind kind);

/* One Adam/AdamW update of n parameters p with gradient g and moments m, v (zero before
 * the first update), at learning rate lr; t is the 1-based update count (bias
 * correction). Overwrites p, m, v; g is only read. */
void lc_adam_update(const lc_adam_config *c, double lr, int64_t t, float *p, const float *g,
                    float *m, float *v, size_t n);

/* The constants of that update as a backend's adam op takes them (backend/backend.h). */
lc_adam_args lc_adam_args_make(const lc_adam_config *c, double lr, int64_t t);

/* ---- learning-rate schedules ---- */

typedef enum {
    LC_SCHED_NONE,     // constant at the option learning_rate
    LC_SCHED_CONSTANT, // arguments [lr]
    LC_SCHED_COSINE,   // cosine_decay: [init, decay_steps, end = 0]
    LC_SCHED_LINEAR,   // linear_schedule: [init, end, steps]
} lc_sched_kind;

typedef struct {
    lc_sched_kind kind;
    double args[3];
    int n_args;
    int64_t warmup;     // steps of linear warm-up before the schedule (0: none)
    double warmup_init; // learning rate the warm-up starts from
} lc_schedule;

/* The learning rate of update `step` (0-based): base_lr for LC_SCHED_NONE, else the
 * schedule, preceded when warmup > 0 by linear_schedule(warmup_init, args[0], warmup)
 * for steps 0..warmup and the schedule at (step - warmup - 1) after, as mlx's
 * join_schedules([warmup, schedule], [warmup + 1]) does. */
double lc_schedule_lr(const lc_schedule *s, double base_lr, int64_t step);

/* Checks the number and ranges of a schedule's arguments; `what` prefixes the error
 * (e.g. "lora.yaml:12: lr_schedule"). Returns 0 or -1. */
int lc_schedule_validate(const lc_schedule *s, const char *what);

/* The schedule's name as mlx-lm spells it ("cosine_decay", "linear_schedule", "constant"). */
const char *lc_schedule_name(lc_sched_kind k);

/* ---- gradients ---- */

/* The global L2 norm over `count` arrays (g[i] of n[i] floats), accumulated in double. */
double lc_grad_norm(float *const *g, const size_t *n, size_t count);

/* torch.nn.utils.clip_grad_norm_(max_norm): multiplies every gradient by
 * min(1, max_norm / (norm + 1e-6)). Returns the norm before clipping. */
double lc_clip_grad_norm(float *const *g, const size_t *n, size_t count, double max_norm);

/* Gradient accumulation over micro-batches, as mlx-lm: the update uses the mean of the
 * micro-batches' gradients. acc += g for n floats (acc zeroed by the caller first). */
void lc_grad_accumulate(float *acc, const float *g, size_t n);
/* acc *= 1/steps, turning the sum of `steps` micro-batch gradients into their mean. */
void lc_grad_accumulate_finish(float *acc, size_t n, int64_t steps);

#endif
