#!/usr/bin/env python3
"""cpu_train.py — lorac's CPU LoRA training step side by side with plain PyTorch.

Makes a Mistral-shaped model with random bf16 weights (`lorac init`), times lorac's
training step (build/bench_train: forward + backward + AdamW on LoRA r16 over all seven
projections of every layer, random token ids) and the same step in a plain-PyTorch
model of the same shape and data, each in its own process so that its peak RSS is its
own. PyTorch runs in two configurations (frozen weights bf16 / fp32, LoRA fp32) and the
faster is the peer; lorac too (bf16 products, its default on CPUs with AVX512-BF16, and
float32 ones). Runs alternate lorac / torch `--repeat` times (the machine is noisy)
and the table shows medians.

  make && python3 bench/cpu_train.py                 # 60M shape, B4×T128
  python3 bench/cpu_train.py --shape 206m            # 206M shape, B2×T256
  python3 bench/cpu_train.py --repeat 5 --steps 8 --decode 64

Needs PyTorch for the peer (Debian: `sudo apt-get install -y python3-torch`, 1.13);
without it only lorac is measured. Threads: 2 (OMP_NUM_THREADS) unless --threads.
"""
import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SHAPES = {
    "60m": dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
                num_attention_heads=8, num_key_value_heads=4, B=4, T=128),
    "206m": dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=12,
                 num_attention_heads=16, num_key_value_heads=4, B=2, T=256),
}


def config_of(shape):
    s = SHAPES[shape]
    return {
        "architectures": ["MistralForCausalLM"], "model_type": "mistral", "vocab_size": 32768,
        "hidden_size": s["hidden_size"], "intermediate_size": s["intermediate_size"],
        "num_hidden_layers": s["num_hidden_layers"],
        "num_attention_heads": s["num_attention_heads"],
        "num_key_value_heads": s["num_key_value_heads"],
        "head_dim": s["hidden_size"] // s["num_attention_heads"], "hidden_act": "silu",
        "max_position_embeddings": 4096, "rope_theta": 1000000.0, "rms_norm_eps": 1e-05,
        "initializer_range": 0.02, "tie_word_embeddings": False, "sliding_window": None,
        "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16",
    }


# ---------------------------------------------------------------- the PyTorch peer

def torch_worker(args):
    """Runs in its own process: prints one JSON line like bench_train's."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = json.load(open(os.path.join(args.model, "config.json")))
    C, I = cfg["hidden_size"], cfg["intermediate_size"]
    L, H, KV = cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D, V, r = cfg["head_dim"], cfg["vocab_size"], args.rank
    wdt = torch.bfloat16 if args.torch_mode == "bf16" else torch.float32

    def frozen(o, i):
        return (torch.randn(o, i) * 0.02).to(wdt)

    class Lora(torch.nn.Module):
        def __init__(self, i, o):
            super().__init__()
            self.w = frozen(o, i)  # a buffer-like tensor: no gradient
            self.a = torch.nn.Parameter(torch.empty(i, r).uniform_(-i ** -0.5, i ** -0.5))
            self.b = torch.nn.Parameter(torch.zeros(r, o))

        def forward(self, x):
            y = F.linear(x.to(wdt), self.w).float()
            return y + 2.0 * ((x @ self.a) @ self.b)

    inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, D, 2).float() / D))
    pos = torch.arange(args.T).float()
    ang = torch.outer(pos, inv)
    cos = torch.cat([ang.cos(), ang.cos()], -1)[None, :, None, :]
    sin = torch.cat([ang.sin(), ang.sin()], -1)[None, :, None, :]

    def rope(x):
        x1, x2 = x[..., : D // 2], x[..., D // 2:]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    def rms(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w

    mask = torch.full((args.T, args.T), float("-inf")).triu(1)

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k, self.v = Lora(C, H * D), Lora(C, KV * D), Lora(C, KV * D)
            self.o = Lora(H * D, C)
            self.g, self.u, self.d = Lora(C, I), Lora(C, I), Lora(I, C)
            self.n1, self.n2 = torch.ones(C), torch.ones(C)

        def forward(self, x):
            B, T, _ = x.shape
            h = rms(x, self.n1)
            q = rope(self.q(h).view(B, T, H, D)).transpose(1, 2)
            k = rope(self.k(h).view(B, T, KV, D)).transpose(1, 2)
            v = self.v(h).view(B, T, KV, D).transpose(1, 2)
            k = k.repeat_interleave(H // KV, 1)
            v = v.repeat_interleave(H // KV, 1)
            s = (q @ k.transpose(-1, -2)) * D ** -0.5 + mask
            a = (s.softmax(-1) @ v).transpose(1, 2).reshape(B, T, H * D)
            x = x + self.o(a)
            h = rms(x, self.n2)
            return x + self.d(F.silu(self.g(h)) * self.u(h))

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = frozen(V, C)
            self.blocks = torch.nn.ModuleList([Block() for _ in range(L)])
            self.nf = torch.ones(C)
            self.head = frozen(V, C)

        def forward(self, tok, tgt):
            x = F.embedding(tok, self.emb).float()
            for b in self.blocks:
                x = b(x)
            logits = F.linear(rms(x, self.nf).to(wdt), self.head).float()
            return F.cross_entropy(logits.view(-1, V), tgt.view(-1), ignore_index=-1)

    model = Model()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
    g = torch.Generator().manual_seed(42)
    times = []
    for s in range(args.warmup + args.steps):
        tok = torch.randint(0, V, (args.B, args.T), generator=g)
        tgt = torch.cat([tok[:, 1:], torch.full((args.B, 1), -1)], 1)
        t0 = time.perf_counter()
        loss = model(tok, tgt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        dt = time.perf_counter() - t0
        if s >= args.warmup:
            times.append(dt)
    med = statistics.median(times)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"impl": "torch-" + args.torch_mode, "step_s": med,
                      "tokens_per_s": args.B * args.T / med, "peak_rss_bytes": rss,
                      "loss": loss.item(), "torch": torch.__version__,
                      "lora_params": sum(p.numel() for p in params)}))


# ---------------------------------------------------------------- the driver

def run_json(cmd, env):
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", choices=SHAPES, default="60m")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--decode", type=int, default=0, help="also time N decoded tokens (lorac)")
    ap.add_argument("--torch-modes", default="bf16,fp32")
    ap.add_argument("--lorac-modes", default="bf16,fp32",
                    help="bf16: bf16 products (the default where the CPU has AVX512-BF16); "
                    "fp32: bench_train --fp32")
    ap.add_argument("--torch-python", help="the Python that has torch (default: this one, "
                    "else /usr/bin/python3)")
    ap.add_argument("--lorac-build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--torch-mode", default="bf16", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--B", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--T", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return torch_worker(args)

    B, T = SHAPES[args.shape]["B"], SHAPES[args.shape]["T"]
    lorac = os.path.join(args.lorac_build, "lorac")
    driver = os.path.join(args.lorac_build, "bench_train")
    for p in (lorac, driver):
        if not os.access(p, os.X_OK):
            sys.exit(f"cpu_train: {p} is missing; run 'make' first")
    # The peer runs under the first Python that has torch: this one, else Debian's.
    torch_py = None
    for py in [args.torch_python] if args.torch_python else [sys.executable, "/usr/bin/python3"]:
        if os.access(py, os.X_OK) and subprocess.run([py, "-c", "import torch"],
                                                     capture_output=True).returncode == 0:
            torch_py = py
            break
    have_torch = torch_py is not None
    if not have_torch:
        print("cpu_train: PyTorch is not installed, so only lorac is measured; on Debian 12 "
              "install it with 'sudo apt-get install -y python3-torch' (then it is found under "
              "/usr/bin/python3, or pass --torch-python)", file=sys.stderr)

    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(args.threads))
    # PyTorch's best on 2 cores: idle OpenMP workers must not spin against Debian's
    # pthread OpenBLAS threads (239 vs 542 tok/s measured). lorac runs OpenBLAS
    # single-threaded inside its OpenMP tasks (one threading layer), so it keeps
    # OpenMP's default policy.
    torch_env = dict(env)
    torch_env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    tmp = tempfile.mkdtemp(prefix="lorac-bench-")
    cfg_path = os.path.join(tmp, "config.json")
    with open(cfg_path, "w") as f:
        json.dump(config_of(args.shape), f)
    model = os.path.join(tmp, "model")
    tok = os.path.join(ROOT, "tests/fixtures/tokenizers/demo-spm/tokenizer.json")
    subprocess.run([lorac, "init", "--config", cfg_path, "--tokenizer", tok, "--out", model,
                    "--dtype", "bf16", "-q"], check=True)

    try:
        run_all(args, B, T, driver, model, torch_py, have_torch, env, torch_env)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_all(args, B, T, driver, model, torch_py, have_torch, env, torch_env):
    res = {}
    modes = [m for m in args.torch_modes.split(",") if m] if have_torch else []
    for rep in range(args.repeat):
        print(f"run {rep + 1}:", file=sys.stderr, end="")
        for mode in [m for m in args.lorac_modes.split(",") if m]:
            r = run_json([driver, "--model", model, "--batch", str(B), "--seq", str(T),
                          "--steps", str(args.steps), "--warmup", str(args.warmup),
                          "--rank", str(args.rank), "--decode", str(args.decode)]
                         + (["--fp32"] if mode == "fp32" else []), env)
            res.setdefault(r["impl"], []).append(r)
            print(f" {r['impl']} {r['tokens_per_s']:.0f} tok/s", file=sys.stderr, end="")
        for mode in modes:
            r = run_json([torch_py, os.path.abspath(__file__), "--worker",
                          "--torch-mode", mode, "--model", model, "--B", str(B), "--T", str(T),
                          "--steps", str(args.steps), "--warmup", str(args.warmup),
                          "--rank", str(args.rank), "--threads", str(args.threads)], torch_env)
            res.setdefault(r["impl"], []).append(r)
            print(f" {r['impl']} {r['tokens_per_s']:.0f} tok/s", file=sys.stderr, end="")
        print(file=sys.stderr)

    def med(impl, key):
        return statistics.median(x[key] for x in res[impl])

    gib = 1024 ** 3
    print(f"\nCPU LoRA training, {args.shape} Mistral shape, bf16 weights, B{B}×T{T}, r{args.rank} "
          f"on all 7 projections of every layer, AdamW; {args.threads} threads; medians of "
          f"{args.repeat} runs × {args.steps} steps")
    print("| implementation | step (s) | tokens/s | peak RSS (GiB) |")
    print("| --- | --- | --- | --- |")
    for impl in res:
        print(f"| {impl} | {med(impl, 'step_s'):.3f} | {med(impl, 'tokens_per_s'):.0f} | "
              f"{med(impl, 'peak_rss_bytes') / gib:.2f} |")
    peers = [i for i in res if i.startswith("torch")]
    ours = [i for i in res if i.startswith("lorac")]
    if peers:
        best = max(peers, key=lambda i: med(i, "tokens_per_s"))
        print()
        for impl in ours:
            print(f"{impl} / {best} (the faster PyTorch): speed "
                  f"{med(impl, 'tokens_per_s') / med(best, 'tokens_per_s'):.2f}×, peak RSS "
                  f"{med(impl, 'peak_rss_bytes') / med(best, 'peak_rss_bytes'):.2f}×")
    if args.decode:
        for impl in ours:
            print(f"{impl} decode (batch 1, greedy, {args.decode} tokens after 16): "
                  f"{med(impl, 'decode_tokens_per_s'):.1f} tokens/s")


if __name__ == "__main__":
    main()
