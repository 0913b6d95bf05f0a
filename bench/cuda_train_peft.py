#!/usr/bin/env python3
"""cuda_train_peft.py — the PyTorch + transformers + PEFT side of bench/cuda_train.sh.

Three jobs, each printing one JSON line on stdout:

  make-model DIR       writes a Mistral-7B-v0.3-shaped model with random bf16 weights
                       (normal, std 0.02; norms 1) as DIR/model.safetensors, next to the
                       config.json and tokenizer already there. The same shape and dtype
                       as `lorac init` makes (which is single-threaded: ~5 minutes for 7B),
                       written from the GPU in seconds.
  train --model DIR --batch B --seq T --num-layers L [--checkpoint]
                       the LoRA training step the issue measures: rank 16, alpha 32, the
                       seven projections on the last L blocks (-1: all), dropout 0, AdamW
                       (torch defaults, lr 1e-4) over the fp32 adapters, base bf16; random
                       token ids (labels = ids, transformers shifts them); median step time
                       after warm-up, with cuda synchronisation around each step.
  generate --model DIR --tokens N
                       transformers `generate`, batch 1, greedy, N new tokens after a
                       16-token random prompt, bf16, no adapters: tokens/s.

Peak memory: torch.cuda.max_memory_reserved (what the caching allocator held on the card).
Runs on the GPU machine's own python (torch, transformers, peft).
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch

KEYS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_model(d):
    from safetensors.torch import save_file

    cfg = json.load(open(os.path.join(d, "config.json")))
    C, I, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    H, KV, V = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["vocab_size"]
    D = cfg.get("head_dim") or C // H
    g = torch.Generator(device="cuda").manual_seed(0)

    def rnd(*shape):
        return (torch.randn(*shape, generator=g, device="cuda", dtype=torch.float32) * 0.02).to(torch.bfloat16).cpu()

    t = {"model.embed_tokens.weight": rnd(V, C), "lm_head.weight": rnd(V, C),
         "model.norm.weight": torch.ones(C, dtype=torch.bfloat16)}
    for l in range(L):
        p = "model.layers.%d." % l
        t[p + "self_attn.q_proj.weight"] = rnd(H * D, C)
        t[p + "self_attn.k_proj.weight"] = rnd(KV * D, C)
        t[p + "self_attn.v_proj.weight"] = rnd(KV * D, C)
        t[p + "self_attn.o_proj.weight"] = rnd(C, H * D)
        t[p + "mlp.gate_proj.weight"] = rnd(I, C)
        t[p + "mlp.up_proj.weight"] = rnd(I, C)
        t[p + "mlp.down_proj.weight"] = rnd(C, I)
        t[p + "input_layernorm.weight"] = torch.ones(C, dtype=torch.bfloat16)
        t[p + "post_attention_layernorm.weight"] = torch.ones(C, dtype=torch.bfloat16)
    save_file(t, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    print(json.dumps({"made": d, "params": sum(x.numel() for x in t.values())}))


def load(d):
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.bfloat16, device_map="cuda")
    m.config.use_cache = False
    return m


def train(a):
    from peft import LoraConfig, get_peft_model

    m = load(a.model)
    L = m.config.num_hidden_layers
    layers = list(range(L)) if a.num_layers < 0 else list(range(L - a.num_layers, L))
    cfg = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=KEYS,
                     layers_to_transform=layers, task_type="CAUSAL_LM")
    m = get_peft_model(m, cfg)
    for p in m.parameters():
        if p.requires_grad:
            p.data = p.data.float()  # fp32 adapters, as lorac keeps them
    if a.checkpoint:
        m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        m.enable_input_require_grads()
    m.train()
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)
    V = m.config.vocab_size
    gen = torch.Generator(device="cuda").manual_seed(1)
    times = []
    torch.cuda.reset_peak_memory_stats()
    for s in range(a.warmup + a.steps):
        ids = torch.randint(0, V, (a.batch, a.seq), device="cuda", generator=gen)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = m(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if s >= a.warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    print(json.dumps({"impl": "peft", "B": a.batch, "T": a.seq, "num_layers": a.num_layers,
                      "checkpoint": a.checkpoint, "step_s": med,
                      "tokens_per_s": a.batch * a.seq / med, "loss": loss.item(),
                      "peak_bytes": torch.cuda.max_memory_reserved(),
                      "device": torch.cuda.get_device_name()}))


def generate(a):
    m = load(a.model)
    m.config.use_cache = True
    m.eval()
    V = m.config.vocab_size
    ids = torch.randint(0, V, (1, 16), device="cuda", generator=torch.Generator(device="cuda").manual_seed(2))
    kw = dict(max_new_tokens=a.tokens, min_new_tokens=a.tokens, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        m.generate(ids, **dict(kw, max_new_tokens=8, min_new_tokens=8))  # warm-up
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = m.generate(ids, **kw)
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
    n = out.shape[1] - ids.shape[1]
    print(json.dumps({"impl": "transformers", "tokens": n, "tokens_per_s": n / dt,
                      "peak_bytes": torch.cuda.max_memory_reserved(),
                      "device": torch.cuda.get_device_name()}))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="job", required=True)
    p = sub.add_parser("make-model")
    p.add_argument("dir")
    p = sub.add_parser("train")
    p.add_argument("--model", required=True)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=68)
    p.add_argument("--num-layers", type=int, default=16)
    p.add_argument("--checkpoint", action="store_true")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p = sub.add_parser("generate")
    p.add_argument("--model", required=True)
    p.add_argument("--tokens", type=int, default=64)
    a = ap.parse_args()
    if a.job == "make-model":
        make_model(a.dir)
    elif a.job == "train":
        train(a)
    else:
        generate(a)


if __name__ == "__main__":
    sys.exit(main())
