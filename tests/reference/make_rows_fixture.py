"""make_rows_fixture.py — transformers + PEFT reference for a training step at many rows
(2 x 160 tokens: the card's paths for 257 rows and more, where lorac's CUDA backend keeps
activations and gradients as bf16 and folds products), on a bf16 model made by
`lorac init`.

    lorac init --config tests/fixtures/model-ref/tiny-rows.config.json \
        --tokenizer tests/fixtures/tokenizers/bl-gpt2/tokenizer.json --out M --dtype bf16 --seed 5
    python3 tests/reference/make_rows_fixture.py M OUTDIR

The model is not committed: the test makes it again with the same command and checks that
model.safetensors has the SHA-256 recorded here. Writes, under OUTDIR:
  tiny-rows.adapters.safetensors  rank-4 adapters on the seven projections of all 3 blocks,
                                  F32, lorac's (mlx-lm) layout, B random (every gradient
                                  non-trivial)
  tiny-rows.ref.safetensors       F32: grad.<module>.lora_a / .lora_b of the mean loss over
                                  the targets, computed in float64 (the bf16 weights made
                                  exact float64)
  tiny-rows.json                  the batch (tokens, targets; -1 ignored), LoRA settings,
                                  loss (float64); loss_bf16 and the relative errors against
                                  float64 of PyTorch's own bf16 path on the same step (bf16
                                  weights, float32 adapters, torch.autocast bf16 on the
                                  card, transformers' RMSNorm): norm-wise over all
                                  gradients, and the largest per tensor; the model's SHA-256.
Row 1 is padded after 131 tokens (attention mask 0, token 0, no targets).
"""
import hashlib
import json
import math
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM
from transformers.models.mistral import modeling_mistral
from peft import LoraConfig, get_peft_model

MODEL, OUT = sys.argv[1], sys.argv[2]
KEYS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SUB = {k: ("self_attn" if k in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp") for k in KEYS}
R, SCALE, B, T, LENGTHS = 4, 2.0, 2, 160, [160, 131]
orig_rms = modeling_mistral.MistralRMSNorm.forward


def rms64(self, x):  # RMSNorm in the input's dtype (float64 here), the same formula
    var = x.pow(2).mean(-1, keepdim=True)
    return self.weight * (x * torch.rsqrt(var + self.variance_epsilon))


def peft_model(model, adapters):
    pcfg = LoraConfig(r=R, lora_alpha=SCALE * R, lora_dropout=0.0, bias="none", target_modules=KEYS)
    pm = get_peft_model(model, pcfg)
    mods = []
    with torch.no_grad():
        for li, layer in enumerate(pm.base_model.model.model.layers):
            for k in KEYS:
                mod = getattr(getattr(layer, SUB[k]), k)
                nm = f"model.layers.{li}.{SUB[k]}.{k}"
                A, Bm = mod.lora_A["default"].weight, mod.lora_B["default"].weight  # (r, in), (out, r)
                A.copy_(adapters[nm + ".lora_a"].t().to(A.dtype))
                Bm.copy_(adapters[nm + ".lora_b"].t().to(Bm.dtype))
                assert abs(mod.scaling["default"] - SCALE) < 1e-12
                mods.append((nm, mod))
    return pm, mods


def step(pm, mods, tokens, mask, targets, autocast):
    pm.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        logits = pm(input_ids=tokens, attention_mask=mask).logits
    lp = torch.log_softmax(logits.to(torch.float64 if not autocast else torch.float32), dim=-1)
    sel = targets >= 0
    loss = -(lp[sel, targets[sel]]).sum() / sel.sum()
    loss.backward()
    grads = {}
    for nm, mod in mods:
        grads[nm + ".lora_a"] = mod.lora_A["default"].weight.grad.t().double().cpu().contiguous()
        grads[nm + ".lora_b"] = mod.lora_B["default"].weight.grad.t().double().cpu().contiguous()
    return loss.item(), grads


def main():
    with open(os.path.join(MODEL, "model.safetensors"), "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    torch.manual_seed(5)
    base = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.bfloat16, attn_implementation="sdpa")
    cfg = base.config
    V = cfg.vocab_size
    adapters = {}
    for li in range(cfg.num_hidden_layers):
        for k in KEYS:
            mod = getattr(getattr(base.model.layers[li], SUB[k]), k)
            fin, fout = mod.in_features, mod.out_features
            nm = f"model.layers.{li}.{SUB[k]}.{k}"
            adapters[nm + ".lora_a"] = ((torch.rand(fin, R) * 2 - 1) / math.sqrt(fin)).contiguous()
            adapters[nm + ".lora_b"] = (0.1 * torch.randn(R, fout)).contiguous()
    g = torch.Generator().manual_seed(55)
    tokens = torch.randint(3, V, (B, T), generator=g)
    mask = torch.zeros(B, T, dtype=torch.long)
    targets = torch.full((B, T), -1, dtype=torch.long)
    for b in range(B):
        n = LENGTHS[b]
        tokens[b, n:] = 0
        mask[b, :n] = 1
        targets[b, : n - 1] = tokens[b, 1:n]

    # float64: the bf16 weights made exact float64, RMSNorm in float64
    modeling_mistral.MistralRMSNorm.forward = rms64
    m64 = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.bfloat16, attn_implementation="sdpa").double()
    pm, mods = peft_model(m64, adapters)
    loss64, g64 = step(pm, mods, tokens, mask, targets, False)
    # PyTorch's bf16 path on the card: bf16 weights, float32 adapters (PEFT's default), autocast
    modeling_mistral.MistralRMSNorm.forward = orig_rms
    dev = "cuda"
    m16 = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.bfloat16, attn_implementation="sdpa")
    pm16, mods16 = peft_model(m16, adapters)
    for _, mod in mods16:
        mod.lora_A["default"].float(), mod.lora_B["default"].float()
    pm16 = pm16.to(dev)
    loss16, g16 = step(pm16, mods16, tokens.to(dev), mask.to(dev), targets.to(dev), True)

    num = den = 0.0
    worst = 0.0
    for k in g64:
        d = g16[k] - g64[k]
        num += float((d * d).sum())
        den += float((g64[k] * g64[k]).sum())
        worst = max(worst, float(d.abs().max() / g64[k].abs().max()))
    l2 = math.sqrt(num / den)
    ref = {"grad." + k: v.float() for k, v in g64.items()}
    os.makedirs(OUT, exist_ok=True)
    save_file(adapters, os.path.join(OUT, "tiny-rows.adapters.safetensors"))
    save_file(ref, os.path.join(OUT, "tiny-rows.ref.safetensors"))
    meta = dict(model="tiny-rows", model_sha256=sha, init_seed=5, rank=R, scale=SCALE, alpha=SCALE * R,
                num_layers=-1, keys=KEYS, B=B, T=T, lengths=LENGTHS, tokens=tokens.tolist(),
                targets=targets.tolist(), ntok=int((targets >= 0).sum()), loss=loss64, loss_bf16=loss16,
                bf16_grad_rel_err_l2=l2, bf16_grad_rel_err_max=worst,
                card=torch.cuda.get_device_name(0),
                versions=dict(torch=torch.__version__, transformers=__import__("transformers").__version__,
                              peft=__import__("peft").__version__))
    with open(os.path.join(OUT, "tiny-rows.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print("tiny-rows loss", loss64, "bf16", loss16, "bf16 grads rel err l2", l2, "max", worst, "sha", sha)


main()
