"""check_init_with_transformers.py — do model folders written by `lorac init` load in
transformers and safetensors exactly as lorac means them?

    python3 tests/reference/check_init_with_transformers.py DIR...

For each folder: AutoModelForCausalLM.from_pretrained must report no missing,
unexpected or mismatched tensors; every parameter must equal the stored bytes; the
config must mean what lorac wrote (head_dim, kv heads, rope); and each weight file,
read with safetensors and written again with safetensors.torch.save_file, must come
out byte-identical (lorac's header layout is the reference library's). Prints one line
per check and "ALL OK" at the end when everything held.
"""
import filecmp
import json
import os
import sys
import tempfile

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM

ok = True


def check(cond, what):
    global ok
    print(("ok   " if cond else "FAIL ") + what)
    ok = ok and bool(cond)


for d in sys.argv[1:]:
    name = os.path.basename(d.rstrip("/"))
    cfg = AutoConfig.from_pretrained(d)
    raw = json.load(open(os.path.join(d, "config.json")))
    model, info = AutoModelForCausalLM.from_pretrained(d, output_loading_info=True, dtype="auto")
    check(not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"],
          f"{name}: loads with no missing/unexpected/mismatched tensors {info}")
    check(cfg.head_dim == raw["head_dim"] and cfg.num_key_value_heads == raw["num_key_value_heads"],
          f"{name}: head_dim {cfg.head_dim}, kv heads {cfg.num_key_value_heads}")
    rp = getattr(cfg, "rope_parameters", None) or {}
    check(rp.get("rope_theta") == raw["rope_theta"], f"{name}: rope {rp}")
    files = sorted(f for f in os.listdir(d) if f.endswith(".safetensors"))
    stored = {}
    for f in files:
        p = os.path.join(d, f)
        with safe_open(p, framework="pt") as sf:
            check(sf.metadata() == {"format": "pt"}, f"{name}/{f}: metadata {sf.metadata()}")
        t = load_file(p)
        stored.update(t)
        with tempfile.TemporaryDirectory() as tmp:
            q = os.path.join(tmp, f)
            save_file(t, q, metadata={"format": "pt"})
            check(filecmp.cmp(p, q, shallow=False), f"{name}/{f}: byte-identical to save_file")
    sd = model.state_dict()
    same = all(torch.equal(sd[k].cpu(), v) for k, v in stored.items() if k in sd)
    check(same, f"{name}: {len(stored)} stored tensors equal the loaded parameters")
    n = sum(p.numel() for p in model.parameters())
    print(f"     {name}: {n} parameters, dtype {next(model.parameters()).dtype}")
    w = [v.float() for k, v in stored.items() if k.endswith("proj.weight")]
    allw = torch.cat([x.flatten() for x in w])
    print(f"     {name}: projection weights mean {allw.mean():.5f} std {allw.std():.5f}")
    ids = torch.tensor([[1, 5, 9, 3]])
    with torch.no_grad():
        out = model(ids).logits
    check(torch.isfinite(out).all(), f"{name}: forward pass gives finite logits {tuple(out.shape)}")
print("ALL OK" if ok else "SOME CHECKS FAILED")
