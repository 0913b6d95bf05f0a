#!/usr/bin/env python3
"""Reference optimizer trajectories of whole LoRA models: transformers 5.x + PEFT in float64.

Run on the GPU machine from the repository root, after make_model_fixtures.py made
tests/fixtures/models/ and tests/fixtures/model-ref/:

    python3 tests/reference/make_train_fixtures.py tests/fixtures/train-ref

For each case it loads a tiny model and the adapters of model-ref/<name>.adapters.safetensors
(A uniform, B random, mlx-lm layout) into PEFT in float64, then runs `steps` updates of
torch.optim.Adam or AdamW on the fixture batch (targets as model-ref/<name>.json gives
them, masked or not) and writes <OUT>/<case>.json (the case, the loss before every
update) and <OUT>/<case>.safetensors (the adapters after the last update, F64, mlx-lm
names). tests/model/test_train_steps.c replays them with lorac's model and optimizer.
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM
from peft import LoraConfig, get_peft_model

SUB = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
       "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}


def rms_forward(self, x):  # float64-faithful RMSNorm, as in make_model_fixtures.py
    var = x.pow(2).mean(-1, keepdim=True)
    return self.weight * (x * torch.rsqrt(var + self.variance_epsilon))


from transformers.models.llama import modeling_llama
from transformers.models.mistral import modeling_mistral
from transformers.models.qwen2 import modeling_qwen2
for m in (modeling_llama.LlamaRMSNorm, modeling_mistral.MistralRMSNorm, modeling_qwen2.Qwen2RMSNorm):
    m.forward = rms_forward

CASES = [
    dict(case="tiny-mistral-adamw", model="tiny-mistral", optimizer="adamw", lr=1e-2,
         weight_decay=0.01, masked=False, steps=6),
    dict(case="tiny-llama-adam-masked", model="tiny-llama", optimizer="adam", lr=5e-3,
         weight_decay=0.0, masked=True, steps=6),
    dict(case="tiny-qwen2-adamw", model="tiny-qwen2", optimizer="adamw", lr=2e-2,
         weight_decay=0.1, masked=False, steps=4),
]


def run(c, out):
    ref = json.load(open(f"tests/fixtures/model-ref/{c['model']}.json"))
    ad = load_file(f"tests/fixtures/model-ref/{c['model']}.adapters.safetensors")
    model = AutoModelForCausalLM.from_pretrained(f"tests/fixtures/models/{c['model']}",
                                                 dtype=torch.float32, attn_implementation="sdpa")
    model = model.double()
    L = model.config.num_hidden_layers
    layers = list(range(L)) if ref["num_layers"] < 0 else list(range(L - ref["num_layers"], L))
    r, scale = ref["rank"], ref["scale"]
    pm = get_peft_model(model, LoraConfig(r=r, lora_alpha=scale * r, lora_dropout=0.0, bias="none",
                                          target_modules=ref["keys"], layers_to_transform=layers))
    mods = []
    with torch.no_grad():
        for li in layers:
            for k in ref["keys"]:
                mod = getattr(getattr(pm.base_model.model.model.layers[li], SUB[k]), k)
                nm = f"model.layers.{li}.{SUB[k]}.{k}"
                mod.lora_A["default"].weight.copy_(ad[nm + ".lora_a"].t().double())
                mod.lora_B["default"].weight.copy_(ad[nm + ".lora_b"].t().double())
                mods.append((nm, mod))
    pm = pm.double()
    pm.train()
    params = [p for _, p in pm.named_parameters() if p.requires_grad]
    opt_cls = torch.optim.AdamW if c["optimizer"] == "adamw" else torch.optim.Adam
    opt = opt_cls(params, lr=c["lr"], weight_decay=c["weight_decay"], foreach=False)
    tokens = torch.tensor(ref["tokens"])
    targets = torch.tensor(ref["targets_masked" if c["masked"] else "targets"])
    mask = torch.zeros_like(tokens)
    for b, n in enumerate(ref["lengths"]):
        mask[b, :n] = 1
    losses = []
    for _ in range(c["steps"]):
        opt.zero_grad(set_to_none=True)
        logits = pm(input_ids=tokens, attention_mask=mask).logits
        lp = torch.log_softmax(logits, dim=-1)
        sel = targets >= 0
        loss = -(lp[sel, targets[sel]]).sum() / sel.sum()
        loss.backward()
        losses.append(loss.item())
        opt.step()
    final = {}
    for nm, mod in mods:
        final[nm + ".lora_a"] = mod.lora_A["default"].weight.detach().t().contiguous().clone()
        final[nm + ".lora_b"] = mod.lora_B["default"].weight.detach().t().contiguous().clone()
    save_file(final, os.path.join(out, c["case"] + ".safetensors"))
    rec = dict(c, losses=losses, betas=[0.9, 0.999], eps=1e-8,
               versions={"torch": torch.__version__, "transformers": __import__("transformers").__version__,
                         "peft": __import__("peft").__version__})
    with open(os.path.join(out, c["case"] + ".json"), "w") as f:
        json.dump(rec, f, indent=1)
    print(c["case"], "losses", ["%.6f" % x for x in losses])


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/train-ref"
    os.makedirs(out, exist_ok=True)
    for c in CASES:
        run(c, out)


if __name__ == "__main__":
    main()
