"""check_peft_adapters.py — PEFT's verdict on lorac's adapters, and a PEFT-written reference.

Run where torch, transformers and peft are installed (the GPU machine):
    python3 tests/reference/check_peft_adapters.py LORAC_DIR OUTDIR
LORAC_DIR is an adapter folder written by lorac (`build/tests/io/test_adapters
--write-sample LORAC_DIR`): adapters.safetensors + adapter_config.json (mlx-lm layout),
peft/ (PEFT layout) and config.json (the tiny Llama they were made for).

1. Loads LORAC_DIR/peft with peft.PeftModel.from_pretrained onto a random tiny Llama of that
   config and checks, for every tensor of the mlx-lm file, that PEFT holds
   lora_A.weight == lora_a.T and lora_B.weight == lora_b.T, that PEFT's scaling equals the
   mlx-lm scale, and that the adapted projection computes W x + scale * (x A) B.
   Writes OUTDIR/peft_check.json ({"ok": true, "peft": version, ...}) and exits non-zero on
   any mismatch.
2. Writes OUTDIR/peft-written/ with PEFT's own save_pretrained: r=4, lora_alpha=12,
   target_modules q_proj, v_proj, down_proj, layers_to_transform [1], lora_dropout 0.05, with
   lora_A[i, j] = v(layer, key, 0, i, j), lora_B[i, j] = v(layer, key, 1, i, j) where
   v = ((i*131 + j*17 + layer*7 + key*3 + ab*5) % 97) / 97 - 0.5 and key is lorac's index
   (q 0, k 1, v 2, o 3, gate 4, up 5, down 6). tests/io/test_adapters loads it.
"""
import json
import os
import sys

import peft
import torch
import transformers
from safetensors.torch import load_file

lorac_dir, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
KEYS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

with open(os.path.join(lorac_dir, "config.json")) as f:
    cfg = transformers.LlamaConfig(**json.load(f))
torch.manual_seed(0)
base = transformers.LlamaForCausalLM(cfg).float().eval()

report = {"peft": peft.__version__, "transformers": transformers.__version__,
          "torch": torch.__version__, "checked": 0, "errors": []}
mlx = load_file(os.path.join(lorac_dir, "adapters.safetensors"))
with open(os.path.join(lorac_dir, "adapter_config.json")) as f:
    mlx_cfg = json.load(f)
scale = mlx_cfg["lora_parameters"]["scale"]
import warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    model = peft.PeftModel.from_pretrained(base, os.path.join(lorac_dir, "peft"))
report["warnings"] = [str(w.message) for w in caught]
model.eval()
layers = model.base_model.model.model.layers
for name, a in mlx.items():
    if not name.endswith(".lora_a"):
        continue
    stem = name[: -len(".lora_a")]
    b = mlx[stem + ".lora_b"]
    parts = stem.split(".")  # model layers N self_attn q_proj
    layer, group, proj = int(parts[2]), parts[3], parts[4]
    mod = getattr(getattr(layers[layer], group), proj)
    if not hasattr(mod, "lora_A"):
        report["errors"].append(f"{stem}: PEFT put no LoRA on this module")
        continue
    pa = mod.lora_A["default"].weight.detach()
    pb = mod.lora_B["default"].weight.detach()
    if pa.shape != a.T.shape or not torch.equal(pa, a.T):
        report["errors"].append(f"{stem}: lora_A differs ({tuple(pa.shape)} vs {tuple(a.T.shape)})")
    if pb.shape != b.T.shape or not torch.equal(pb, b.T):
        report["errors"].append(f"{stem}: lora_B differs ({tuple(pb.shape)} vs {tuple(b.T.shape)})")
    s = mod.scaling["default"]
    if abs(s - scale) > 1e-12 * max(1.0, abs(scale)):
        report["errors"].append(f"{stem}: PEFT scaling {s} != mlx-lm scale {scale}")
    x = torch.randn(3, a.shape[0], dtype=torch.float64)
    with torch.no_grad():
        y = mod(x.float()).double()
        want = x @ mod.base_layer.weight.double().T + scale * (x @ a.double()) @ b.double()
    err = (y - want).abs().max().item() / max(1e-6, want.abs().max().item())
    if err > 1e-5:
        report["errors"].append(f"{stem}: forward differs, relative error {err:.3g}")
    report["checked"] += 1
# every LoRA module PEFT made must come from the mlx-lm file
for lname, mod in model.named_modules():
    if hasattr(mod, "lora_A") and "default" in mod.lora_A:
        rel = lname[lname.index("layers."):]  # base_model.model.model.layers.N...
        if "model." + rel + ".lora_a" not in mlx:
            report["errors"].append(f"PEFT made a LoRA module not in the lorac file: {lname}")
report["ok"] = not report["errors"] and report["checked"] > 0
with open(os.path.join(out, "peft_check.json"), "w") as f:
    json.dump(report, f, indent=2)
print(json.dumps(report, indent=2))

# 2. a PEFT-written adapter with known values
torch.manual_seed(1)
base2 = transformers.LlamaForCausalLM(cfg).float()
conf = peft.LoraConfig(r=4, lora_alpha=12, target_modules=["q_proj", "v_proj", "down_proj"],
                       layers_to_transform=[1], lora_dropout=0.05, task_type="CAUSAL_LM")
pm = peft.get_peft_model(base2, conf)


def v(layer, key, ab, i, j):
    return ((i * 131 + j * 17 + layer * 7 + key * 3 + ab * 5) % 97) / 97 - 0.5


with torch.no_grad():
    for lname, mod in pm.named_modules():
        if hasattr(mod, "lora_A") and "default" in mod.lora_A:
            layer = int(lname.split(".layers.")[1].split(".")[0])
            key = KEYS.index(lname.rsplit(".", 1)[1])
            for ab, w in ((0, mod.lora_A["default"].weight), (1, mod.lora_B["default"].weight)):
                rows, cols = w.shape
                w.copy_(torch.tensor([[v(layer, key, ab, i, j) for j in range(cols)]
                                      for i in range(rows)]))
pm.save_pretrained(os.path.join(out, "peft-written"))
sys.exit(0 if report["ok"] else 1)
