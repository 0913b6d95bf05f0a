"""make_optim_fixtures.py — reference parameter trajectories of torch.optim.Adam / AdamW.

Run where torch is installed (the GPU machine has it; the arithmetic runs on the CPU in
fp32 so that it is deterministic):
    python3 tests/reference/make_optim_fixtures.py OUT.json
and commit OUT.json as tests/fixtures/optim/torch_adam.json. lorac's tests/train/test_optim
replays each case and must land on torch's parameters after every step.

Each case: a few fp32 parameter tensors, a fixed sequence of gradients (drawn here from a
seeded generator and stored in the file), N optimizer steps of torch.optim.Adam or AdamW
(foreach=False: the single-tensor code path), optionally with torch.nn.utils.clip_grad_norm_
before each step and a learning-rate schedule through torch.optim.lr_scheduler.LambdaLR
(base lr 1.0, so the lambda IS the learning rate). The schedule lambdas implement mlx's
formulas (mlx.optimizers.schedulers cosine_decay / linear_schedule / join_schedules, as
mlx-lm's build_schedule joins a warm-up) and are written out per step as "lrs".
Recorded per step: the learning rate used, the gradient norm torch's clipping returned, the
parameters after the step.
"""
import json
import math
import sys

import torch


def cosine_decay(init, decay_steps, end=0.0):
    def f(step):
        s = min(step, decay_steps)
        return end + 0.5 * (1.0 + math.cos(math.pi / decay_steps * s)) * (init - end)
    return f


def linear_schedule(init, end, steps):
    def f(step):
        s = min(step, steps)
        return s * ((end - init) / steps) + init
    return f


def with_warmup(main, init_lr, warmup, warmup_init):
    w = linear_schedule(warmup_init, init_lr, warmup)
    return lambda step: w(step) if step < warmup + 1 else main(step - warmup - 1)


SHAPES = [[4, 3], [5], [2, 6]]


def run_case(name, opt_name, steps, lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=None,
             clip=None, schedule=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(s, generator=g, dtype=torch.float32)) for s in SHAPES]
    init = [p.detach().clone().flatten().tolist() for p in params]
    kw = dict(lr=1.0 if schedule else lr, betas=betas, eps=eps, foreach=False)
    if weight_decay is not None:
        kw["weight_decay"] = weight_decay
    opt = (torch.optim.Adam if opt_name == "adam" else torch.optim.AdamW)(params, **kw)
    sched = None
    fn = None
    if schedule:
        if schedule["name"] == "cosine_decay":
            fn = cosine_decay(*schedule["arguments"])
        else:
            fn = linear_schedule(*schedule["arguments"])
        if schedule.get("warmup", 0):
            fn = with_warmup(fn, schedule["arguments"][0], schedule["warmup"],
                             schedule.get("warmup_init", 0.0))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, fn)
    grads_all, params_all, lrs, norms = [], [], [], []
    for step in range(steps):
        grads = [torch.randn(s, generator=g, dtype=torch.float32) * (0.1 + step) for s in SHAPES]
        grads_all.append([x.flatten().tolist() for x in grads])
        for p, x in zip(params, grads):
            p.grad = x.clone()
        if clip is not None:
            norms.append(float(torch.nn.utils.clip_grad_norm_(params, clip)))
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched:
            sched.step()
        params_all.append([p.detach().flatten().tolist() for p in params])
    used = opt.param_groups[0]
    return {
        "name": name, "optimizer": opt_name, "lr": lr, "betas": list(betas), "eps": eps,
        "weight_decay": used["weight_decay"], "clip": clip, "schedule": schedule,
        "shapes": SHAPES, "init": init, "grads": grads_all, "params": params_all,
        "lrs": lrs, "norms": norms,
    }


cases = [
    run_case("adam", "adam", 8),
    run_case("adam_l2", "adam", 8, weight_decay=0.1, seed=1),
    run_case("adamw_default_wd", "adamw", 8, seed=2),
    run_case("adamw_betas", "adamw", 8, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.05, seed=3),
    run_case("adamw_cosine_warmup", "adamw", 10, weight_decay=0.01, seed=4,
             schedule={"name": "cosine_decay", "arguments": [1e-2, 6, 1e-4], "warmup": 3,
                       "warmup_init": 1e-5}),
    run_case("adam_linear", "adam", 6, seed=5,
             schedule={"name": "linear_schedule", "arguments": [1e-2, 1e-3, 4]}),
    run_case("adam_clip", "adam", 8, clip=0.5, seed=6),
    run_case("adamw_clip_cosine", "adamw", 8, clip=1.0, seed=7,
             schedule={"name": "cosine_decay", "arguments": [5e-3, 8]}),
]
with open(sys.argv[1], "w") as f:
    json.dump({"torch": torch.__version__, "cases": cases}, f)
print("wrote", len(cases), "cases with torch", torch.__version__)
