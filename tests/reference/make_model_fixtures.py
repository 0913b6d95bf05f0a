"""make_model_fixtures.py — reference numbers for lorac's transformer and LoRA, made by
transformers 5.17 + PEFT 0.21 in float64.

    python3 tests/reference/make_model_fixtures.py OUTDIR

Builds three tiny models with random float32 weights (Mistral: GQA, untied, head_dim
larger than hidden/heads; Llama: tied embeddings, one kv head, llama3 rope scaling;
Qwen2: q/k/v biases, linear rope scaling), saves each with save_pretrained under
OUTDIR/models/<name>/, then runs the same weights in float64 with PEFT LoRA adapters
whose B is random (not zero) so that every gradient is non-trivial. Writes, under
OUTDIR/model-ref/:
  <name>.adapters.safetensors  the adapters, F32, in lorac's (mlx-lm) layout:
                               model.layers.N.<module>.lora_a [in, r], .lora_b [r, out]
  <name>.ref.safetensors       F64: inv_freq, logits (B,T,V) with adapters, logits_base
                               without, gen_logits (S,V) of each greedy step, and
                               grad.<module>.lora_a / .lora_b (loss over all targets),
                               grad_masked.<...> (prompt span masked too)
  <name>.json                  LoRA settings, the batch (tokens, lengths, targets,
                               targets_masked; -1 = ignored), loss, loss_masked, token
                               counts, the greedy prompt, tokens and top-2 margins.
Targets are already shifted: targets[b][t] is the token that should follow position t.
The loss is the mean of -log softmax(logits)[target] over targets != -1, computed here
in float64 (not by transformers' own loss helper).

Numerics: transformers' RMSNorm casts to float32 internally; it is replaced here by the
same formula in the input dtype so that the reference is float64 end to end. The
rotary cos/sin are computed by transformers in float32 whatever the model dtype (that is
its definition, also for float32 models), and lorac mirrors that.
"""
import json
import math
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config
from peft import LoraConfig, get_peft_model

OUT = sys.argv[1]
KEYS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SUB = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
       "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}


def rms_forward(self, x):  # the float64-faithful RMSNorm (same formula, no cast)
    var = x.pow(2).mean(-1, keepdim=True)
    return self.weight * (x * torch.rsqrt(var + self.variance_epsilon))


from transformers.models.llama import modeling_llama
from transformers.models.mistral import modeling_mistral
from transformers.models.qwen2 import modeling_qwen2
modeling_llama.LlamaRMSNorm.forward = rms_forward
modeling_mistral.MistralRMSNorm.forward = rms_forward
modeling_qwen2.Qwen2RMSNorm.forward = rms_forward

MODELS = [
    dict(name="tiny-mistral", cls=MistralConfig, seed=1,
         cfg=dict(vocab_size=256, hidden_size=32, intermediate_size=96, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                  max_position_embeddings=128, rope_theta=10000.0, rms_norm_eps=1e-5,
                  tie_word_embeddings=False, sliding_window=None, bos_token_id=1,
                  eos_token_id=2),
         r=4, scale=2.0, num_layers=2, keys=KEYS),
    dict(name="tiny-llama", cls=LlamaConfig, seed=2,
         cfg=dict(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=1, head_dim=8,
                  max_position_embeddings=128, rope_theta=500000.0, rms_norm_eps=1e-6,
                  rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                    high_freq_factor=4.0, original_max_position_embeddings=16),
                  tie_word_embeddings=True, bos_token_id=1, eos_token_id=2),
         r=2, scale=1.5, num_layers=-1, keys=["q_proj", "v_proj", "down_proj"]),
    dict(name="tiny-qwen2", cls=Qwen2Config, seed=3,
         cfg=dict(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=128, rope_theta=1000000.0, rms_norm_eps=1e-6,
                  rope_scaling=dict(rope_type="linear", factor=2.0),
                  tie_word_embeddings=False, use_sliding_window=False, bos_token_id=1,
                  eos_token_id=2),
         r=4, scale=0.5, num_layers=1, keys=KEYS),
]

B, T = 3, 12
LENGTHS = [12, 9, 5]
PROMPT_LENS = [4, 3, 2]
GEN_PROMPT_LEN, GEN_STEPS = 5, 8


def make(spec):
    torch.manual_seed(spec["seed"])
    config = spec["cls"](**spec["cfg"])
    config._attn_implementation = "sdpa"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="sdpa")
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif n.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(0.2 * torch.randn_like(p))
    mdir = os.path.join(OUT, "models", spec["name"])
    model.save_pretrained(mdir, safe_serialization=True)
    print(spec["name"], "rope", getattr(model.config, "rope_parameters", None))

    V, L = config.vocab_size, config.num_hidden_layers
    layers = list(range(L)) if spec["num_layers"] < 0 else list(range(L - spec["num_layers"], L))
    r, scale = spec["r"], spec["scale"]
    model = model.double()
    pcfg = LoraConfig(r=r, lora_alpha=scale * r, lora_dropout=0.0, bias="none",
                      target_modules=spec["keys"], layers_to_transform=layers)
    pm = get_peft_model(model, pcfg)
    adapters, names = {}, []
    with torch.no_grad():
        for li in layers:
            for k in spec["keys"]:
                mod = pm.base_model.model.model.layers[li]
                mod = getattr(getattr(mod, SUB[k]), k)
                A, Bm = mod.lora_A["default"].weight, mod.lora_B["default"].weight  # (r,in), (out,r)
                fin, fout = A.shape[1], Bm.shape[0]
                a = (torch.rand(fin, r) * 2 - 1) / math.sqrt(fin)  # float32
                b = 0.1 * torch.randn(r, fout)
                A.copy_(a.t().double())
                Bm.copy_(b.t().double())
                nm = f"model.layers.{li}.{SUB[k]}.{k}"
                adapters[nm + ".lora_a"] = a.contiguous()
                adapters[nm + ".lora_b"] = b.contiguous()
                names.append((nm, mod))
                assert abs(mod.scaling["default"] - scale) < 1e-12
    pm = pm.double()
    pm.eval()

    g = torch.Generator().manual_seed(100 + spec["seed"])
    tokens = torch.randint(3, V, (B, T), generator=g)
    targets = torch.full((B, T), -1, dtype=torch.long)
    targets_m = torch.full((B, T), -1, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.long)
    for b in range(B):
        n = LENGTHS[b]
        tokens[b, n:] = 0
        mask[b, :n] = 1
        for t in range(n - 1):
            targets[b, t] = tokens[b, t + 1]
            if t >= PROMPT_LENS[b] - 1:
                targets_m[b, t] = tokens[b, t + 1]

    def loss_of(logits, tg):
        lp = torch.log_softmax(logits, dim=-1)
        sel = tg >= 0
        return -(lp[sel, tg[sel]]).sum() / sel.sum(), int(sel.sum())

    ref = {"inv_freq": pm.base_model.model.model.rotary_emb.inv_freq.detach().double().clone()}
    att_scale = float(getattr(pm.base_model.model.model.rotary_emb, "attention_scaling", 1.0))
    res = {}
    for key, tg in (("", targets), ("_masked", targets_m)):
        pm.zero_grad(set_to_none=True)
        logits = pm(input_ids=tokens, attention_mask=mask).logits
        loss, ntok = loss_of(logits, tg)
        loss.backward()
        res["loss" + key] = loss.item()
        res["ntok" + key] = ntok
        if key == "":
            ref["logits"] = logits.detach().clone()
        for nm, mod in names:
            ref[f"grad{key}.{nm}.lora_a"] = mod.lora_A["default"].weight.grad.t().contiguous().clone()
            ref[f"grad{key}.{nm}.lora_b"] = mod.lora_B["default"].weight.grad.t().contiguous().clone()
    with torch.no_grad():
        with pm.disable_adapter():
            ref["logits_base"] = pm(input_ids=tokens, attention_mask=mask).logits.clone()
        prompt = torch.randint(3, V, (1, GEN_PROMPT_LEN), generator=g)
        ids, gl, margins = prompt.clone(), [], []
        for _ in range(GEN_STEPS):  # greedy, no cache: the plain definition
            lg = pm(input_ids=ids).logits[0, -1]
            top = torch.topk(lg, 2).values
            margins.append((top[0] - top[1]).item())
            gl.append(lg.clone())
            ids = torch.cat([ids, lg.argmax().view(1, 1)], dim=1)
        ref["gen_logits"] = torch.stack(gl)
    rdir = os.path.join(OUT, "model-ref")
    os.makedirs(rdir, exist_ok=True)
    save_file(adapters, os.path.join(rdir, spec["name"] + ".adapters.safetensors"))
    save_file({k: v.contiguous() for k, v in ref.items()}, os.path.join(rdir, spec["name"] + ".ref.safetensors"))
    meta = dict(model=spec["name"], rank=r, scale=scale, alpha=scale * r, num_layers=spec["num_layers"],
                layers=layers, keys=spec["keys"], attention_scaling=att_scale, B=B, T=T,
                tokens=tokens.tolist(), lengths=LENGTHS, prompt_lens=PROMPT_LENS,
                targets=targets.tolist(), targets_masked=targets_m.tolist(), **res,
                gen_prompt=prompt[0].tolist(), gen_tokens=ids[0, GEN_PROMPT_LEN:].tolist(),
                gen_margins=margins,
                versions=dict(torch=torch.__version__,
                              transformers=__import__("transformers").__version__,
                              peft=__import__("peft").__version__))
    with open(os.path.join(rdir, spec["name"] + ".json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(spec["name"], "loss", res["loss"], "masked", res["loss_masked"], "margins",
          [round(m, 4) for m in margins])


for spec in MODELS:
    make(spec)
print("ALL OK")
