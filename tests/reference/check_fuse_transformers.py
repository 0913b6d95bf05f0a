#!/usr/bin/env python3
"""check_fuse_transformers.py — do models fused by `lorac fuse` load in transformers and
compute what PEFT computes with the base and the adapters?

Run from the repository root where torch, transformers and peft are installed (the GPU
machine; everything runs on its CPU):

    python3 tests/reference/check_fuse_transformers.py INPUTS OUTDIR [--lorac BIN --test-fuse BIN]

INPUTS is a folder with, for each of tiny-mistral (untied) and tiny-llama (tied embeddings):
  INPUTS/<name>/adapters/        the adapters of tests/fixtures/model-ref/<name> (random,
                                 non-zero) in lorac's mlx-lm layout, written by
                                 `build/tests/model/test_fuse --write-adapters INPUTS`
  INPUTS/<name>/adapters/peft/   the PEFT copy lorac writes beside them
  INPUTS/<name>/fused-float32/   `lorac fuse --model tests/fixtures/models/<name>
  INPUTS/<name>/fused-bfloat16/   --adapter-path INPUTS/<name>/adapters --dtype f32|bf16`
With --lorac and --test-fuse (a lorac build on this machine), the script makes INPUTS
itself first; without them INPUTS must already hold those folders (made elsewhere with
tests/reference/make_fuse_inputs.sh).

For each model and dtype it checks:
  - transformers loads the fused folder with no missing, unexpected or mismatched keys,
    in the dtype config.json names, with tied embeddings still tied;
  - the weights: PEFT's merge_and_unload() of the base + the peft/ folder in float64 is the
    exact merge; the fused float32 weights must equal it to 1e-6 of each tensor's largest
    value (fp32 rounding of W + delta), and the fused bfloat16 weights must be its
    round-to-nearest-even bfloat16 (at most 1% of elements one ulp away: where fp32
    accumulation lands on the other side of a rounding boundary);
  - the logits on model-ref's batch (padded rows masked; only real positions compared):
    float32: transformers on the fused folder vs PEFT on base + adapters, both float32,
    within 1e-5 of the largest logit; bfloat16: both in bfloat16 (the base loaded in
    bfloat16 for PEFT), within twice what bfloat16 itself moves PEFT's logits away from
    float32 (the "bf16 tolerance", measured on the same model and batch).
Writes OUTDIR/transformers_check.json ({"ok", versions, "cases": [...]}) and exits
non-zero when anything fails. tests/cmd/test_fuse.sh checks the committed copy
(tests/fixtures/fuse/transformers_check.json).
"""
import json
import os
import subprocess
import sys

import peft
import torch
import transformers
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

MODELS = ["tiny-mistral", "tiny-llama"]
DTYPES = {"float32": ("f32", torch.float32), "bfloat16": ("bf16", torch.bfloat16)}


def make_inputs(inputs, lorac, test_fuse):
    subprocess.run([test_fuse, "--write-adapters", inputs], check=True)
    for name in MODELS:
        for dname, (flag, _) in DTYPES.items():
            out = os.path.join(inputs, name, "fused-" + dname)
            subprocess.run([lorac, "fuse", "--model", f"tests/fixtures/models/{name}",
                            "--adapter-path", os.path.join(inputs, name, "adapters"),
                            "--save-path", out, "--dtype", flag, "--force", "-q"], check=True)


def batch(name):
    j = json.load(open(f"tests/fixtures/model-ref/{name}.json"))
    ids = torch.tensor(j["tokens"])
    lengths = j["lengths"]
    mask = torch.zeros_like(ids)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
    return ids, mask


def logits(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits.double()


def rel_err(a, ref, mask):
    keep = mask.bool()
    d = (a[keep] - ref[keep]).abs().max().item()
    return d / ref[keep].abs().max().item()


def peft_model(base_dir, peft_dir, dtype):
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype)
    pm = PeftModel.from_pretrained(base, peft_dir)
    if dtype == torch.float64:
        pm = pm.double()
    return pm.eval()


def fused_tensors(folder):
    idx = os.path.join(folder, "model.safetensors.index.json")
    files = sorted(set(json.load(open(idx))["weight_map"].values())) if os.path.exists(idx) \
        else ["model.safetensors"]
    out = {}
    for f in files:
        out.update(load_file(os.path.join(folder, f)))
    return out


def check_case(inputs, name, dname, merged, ids, mask, pm32_logits):
    _, dtype = DTYPES[dname]
    base_dir = f"tests/fixtures/models/{name}"
    fdir = os.path.join(inputs, name, "fused-" + dname)
    peft_dir = os.path.join(inputs, name, "adapters", "peft")
    case = {"model": name, "dtype": dname, "errors": []}
    cfg = json.load(open(os.path.join(fdir, "config.json")))
    case["config_dtype"] = cfg.get("dtype", cfg.get("torch_dtype"))
    if case["config_dtype"] != dname:
        case["errors"].append(f"config.json records {case['config_dtype']}")
    fused, info = AutoModelForCausalLM.from_pretrained(fdir, dtype=dtype, output_loading_info=True)
    fused.eval()
    for k in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        if info.get(k):
            case["errors"].append(f"{k}: {sorted(map(str, info[k]))}")
    tied = fused.get_output_embeddings().weight.data_ptr() == fused.get_input_embeddings().weight.data_ptr()
    case["tied"] = tied
    if tied != bool(cfg.get("tie_word_embeddings")):
        case["errors"].append("tie_word_embeddings not honoured")

    # weights against PEFT's float64 merge
    tensors = fused_tensors(fdir)
    worst, off, total = 0.0, 0, 0
    for key, t in tensors.items():
        ref = merged[key]
        if dname == "float32":
            e = (t.double() - ref).abs().max().item() / max(ref.abs().max().item(), 1e-30)
            worst = max(worst, e)
        else:
            want = ref.to(torch.bfloat16).view(torch.int16).int()
            got = t.view(torch.int16).int()
            diff = (got - want).abs()
            if diff.max().item() > 1:
                case["errors"].append(f"{key}: bf16 weights more than one ulp off")
            off += int((diff == 1).sum().item())
            total += t.numel()
    if dname == "float32":
        case["weights_max_rel_err"] = worst
        if worst > 1e-6:
            case["errors"].append(f"weights rel err {worst:.3e} > 1e-6")
    else:
        case["weights_one_ulp_fraction"] = off / total
        if off > total / 100:
            case["errors"].append(f"{off} of {total} bf16 weights one ulp off")

    # logits
    fl = logits(fused, ids, mask)
    if dname == "float32":
        case["logits_rel_err"] = rel_err(fl, pm32_logits, mask)
        case["tolerance"] = 1e-5
    else:
        pl = logits(peft_model(base_dir, peft_dir, torch.bfloat16), ids, mask)
        noise = rel_err(pl, pm32_logits, mask)
        case["bf16_noise"] = noise
        case["logits_rel_err"] = rel_err(fl, pl, mask)
        case["tolerance"] = 2 * noise
    if not case["logits_rel_err"] <= case["tolerance"]:
        case["errors"].append(f"logits rel err {case['logits_rel_err']:.3e} > {case['tolerance']:.3e}")
    case["ok"] = not case["errors"]
    return case


def main():
    args = sys.argv[1:]
    opts = {}
    for flag in ("--lorac", "--test-fuse"):
        if flag in args:
            i = args.index(flag)
            opts[flag] = args[i + 1]
            del args[i:i + 2]
    if len(args) != 2 or len(opts) == 1:
        print(__doc__)
        return 2
    inputs, outdir = args
    if opts:
        make_inputs(inputs, opts["--lorac"], opts["--test-fuse"])
    torch.manual_seed(0)
    report = {"torch": torch.__version__, "transformers": transformers.__version__,
              "peft": peft.__version__, "cases": []}
    for name in MODELS:
        base_dir = f"tests/fixtures/models/{name}"
        peft_dir = os.path.join(inputs, name, "adapters", "peft")
        ids, mask = batch(name)
        merged = peft_model(base_dir, peft_dir, torch.float64).merge_and_unload().state_dict()
        pm32_logits = logits(peft_model(base_dir, peft_dir, torch.float32), ids, mask)
        for dname in DTYPES:
            case = check_case(inputs, name, dname, merged, ids, mask, pm32_logits)
            print(json.dumps(case))
            report["cases"].append(case)
    report["ok"] = all(c["ok"] for c in report["cases"])
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, "transformers_check.json"), "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    print("ok" if report["ok"] else "FAILED", "->", os.path.join(outdir, "transformers_check.json"))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
