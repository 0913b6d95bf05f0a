"""make_io_fixtures.py — reference files for tests/io, written by the real libraries.

Run where torch, safetensors and transformers are installed (the GPU machine has them):
    python3 tests/reference/make_io_fixtures.py OUTDIR
It writes OUTDIR/io-fixtures.tar.gz; unpack it into tests/io/fixtures/ref/. Every file in
it comes from safetensors / transformers themselves, so lorac's reader, writer and
config parser are checked against the libraries, never against lorac's own output:

  dtypes.safetensors      one tensor per dtype (safetensors.torch.save_file), metadata
  layout.safetensors      mixed dtypes whose name order differs from the dtype order:
                          lorac's writer must reproduce this file byte for byte
  layout_meta.safetensors one tensor, two metadata keys
  empty.safetensors       no tensors, no metadata
  convert.safetensors     bit patterns for the conversions: bf16/f16 -> f32 (torch) and
                          f32 -> bf16 round-to-nearest-even (torch's .to(bfloat16))
  tiny-llama/             LlamaForCausalLM saved by transformers in several shards
                          (model-0000K-of-0000N.safetensors + index + 5.x config.json)
  tiny-qwen2/             Qwen2ForCausalLM (tied embeddings, q/k/v bias), one file
  configs.json            what transformers makes of each config in config/ (head_dim,
                          kv heads, rope parameters, ...) and the exact parameter count
  versions.json           the library versions that wrote all this
"""
import io
import json
import os
import sys
import tarfile
import traceback

import safetensors
import torch
import transformers
from safetensors.torch import save_file

out = sys.argv[1]
here = os.path.dirname(os.path.abspath(__file__))
cfg_dir = os.path.join(here, "..", "io", "fixtures", "config")
work = os.path.join(out, "ref")
os.makedirs(work, exist_ok=True)


def step(fn):
    try:
        fn()
        print("ok", fn.__name__)
    except Exception:
        print("FAILED", fn.__name__)
        traceback.print_exc()


def dtypes():
    t = {
        "f64": torch.tensor([1.0, -2.5, 1e300, 5e-324], dtype=torch.float64),
        "f32": torch.tensor([[1.0, -2.5, 3.0], [0.1, 1e-45, 65504.0]], dtype=torch.float32),
        "f16": torch.tensor([1.0, -2.5, 65504.0, 6e-8, 0.1], dtype=torch.float16),
        "bf16": torch.tensor([1.0, -2.5, 3.140625, 1e38, 0.1], dtype=torch.bfloat16),
        "i64": torch.tensor([-(2**63), 2**63 - 1, 0, 7], dtype=torch.int64),
        "i32": torch.tensor([-(2**31), 2**31 - 1, 5], dtype=torch.int32),
        "i16": torch.tensor([-32768, 32767], dtype=torch.int16),
        "i8": torch.tensor([-128, 127, 3], dtype=torch.int8),
        "u8": torch.tensor([0, 255, 9], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "u16": torch.tensor([0, 65535], dtype=torch.uint16),
        "u32": torch.tensor([0, 4000000000], dtype=torch.uint32),
        "u64": torch.tensor([0, 2**62], dtype=torch.uint64),
        "f8_e4m3": torch.tensor([1.0, -2.0, 448.0], dtype=torch.float8_e4m3fn),
        "f8_e5m2": torch.tensor([1.0, -2.0, 57344.0], dtype=torch.float8_e5m2),
        "empty": torch.zeros((0, 3), dtype=torch.float32),
        "scalar": torch.tensor(3.5, dtype=torch.float32),
    }
    save_file(t, os.path.join(work, "dtypes.safetensors"), metadata={"format": "pt"})


def layout():
    t = {
        "a.weight": torch.arange(6, dtype=torch.float16).reshape(2, 3),
        "b": torch.arange(3, dtype=torch.int64),
        "c.bias": torch.tensor([1, 0, 1], dtype=torch.bool),
        "d": torch.arange(4, dtype=torch.bfloat16),
        "e": torch.arange(5, dtype=torch.float32),
        "z.first": torch.arange(2, dtype=torch.float64),
        "A.upper": torch.arange(3, dtype=torch.uint8),
        "m": torch.arange(7, dtype=torch.float32).reshape(7, 1),
    }
    save_file(t, os.path.join(work, "layout.safetensors"), metadata={"format": "pt"})
    save_file({"x": torch.ones(3)}, os.path.join(work, "layout_meta.safetensors"),
              metadata={"format": "pt", "note": "two \"keys\" é"})
    save_file({}, os.path.join(work, "empty.safetensors"))


def convert():
    f16_bits = list(range(0, 0x0400)) + list(range(0x0400, 0x7C00, 7)) + list(range(0x7C00, 0x7C10)) \
        + [0x7E00, 0x8000, 0x8001, 0x83FF, 0x8400, 0xBC00, 0xFBFF, 0xFC00, 0xFE00]
    f16 = torch.tensor(f16_bits, dtype=torch.int32).to(torch.int16).view(torch.float16)
    bf16_bits = list(range(0, 0x10000, 97)) + [0x0001, 0x007F, 0x0080, 0x7F7F, 0x7F80, 0x7FC0,
                                                0x8000, 0x8001, 0xFF80, 0xFFC0]
    bf16 = torch.tensor(bf16_bits, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)
    import random
    rnd = random.Random(1)
    f32_bits = [0x3F800000, 0x3F808000, 0x3F818000, 0x3F808001, 0x3F807FFF, 0x7F7FFFFF,
                0x7F7F8000, 0x7F7F7FFF, 0x00000001, 0x00008000, 0x00018000, 0x80000000,
                0xBF808000, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0xFFC00001,
                0x7FFFFFFF, 0x00400000, 0x3FFFFFFF]
    f32_bits += [rnd.getrandbits(32) for _ in range(2000)]
    f32 = torch.tensor([b - (1 << 32) if b >= (1 << 31) else b for b in f32_bits],
                       dtype=torch.int64).to(torch.int32).view(torch.float32)
    t = {
        "f16_in": f16.contiguous(),
        "f16_as_f32": f16.to(torch.float32),
        "bf16_in": bf16.contiguous(),
        "bf16_as_f32": bf16.to(torch.float32),
        "f32_in": f32.contiguous(),
        "f32_as_bf16": f32.to(torch.bfloat16),
    }
    save_file(t, os.path.join(work, "convert.safetensors"))


def tiny_models():
    from transformers import (LlamaConfig, LlamaForCausalLM, Qwen2Config,
                              Qwen2ForCausalLM)
    torch.manual_seed(0)
    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64}
    try:
        cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          max_position_embeddings=128, rope_parameters=rope,
                          tie_word_embeddings=False, bos_token_id=1, eos_token_id=[2, 3])
    except TypeError:
        cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          max_position_embeddings=128, rope_theta=500000.0, rope_scaling=rope,
                          tie_word_embeddings=False, bos_token_id=1, eos_token_id=[2, 3])
    m = LlamaForCausalLM(cfg).to(torch.bfloat16)
    m.save_pretrained(os.path.join(work, "tiny-llama"), max_shard_size="6KB")
    torch.manual_seed(1)
    qcfg = Qwen2Config(vocab_size=48, hidden_size=16, intermediate_size=24, num_hidden_layers=1,
                       num_attention_heads=4, num_key_value_heads=1,
                       max_position_embeddings=64, tie_word_embeddings=True,
                       bos_token_id=5, eos_token_id=6)
    q = Qwen2ForCausalLM(qcfg).to(torch.float32)
    q.save_pretrained(os.path.join(work, "tiny-qwen2"))
    info = {}
    for name, model in (("tiny-llama", m), ("tiny-qwen2", q)):
        info[name] = {
            "n_params": sum(p.numel() for p in model.parameters()),
            "state_dict": {k: list(v.shape) for k, v in model.state_dict().items()},
        }
    with open(os.path.join(work, "tiny_models.json"), "w") as f:
        json.dump(info, f, indent=1, sort_keys=True)


def configs():
    from transformers import AutoConfig, AutoModelForCausalLM
    res = {}
    for fn in sorted(os.listdir(cfg_dir)):
        if not fn.endswith(".json") or "generation_config" in fn:
            continue
        import shutil
        import tempfile
        d = tempfile.mkdtemp()
        shutil.copy(os.path.join(cfg_dir, fn), os.path.join(d, "config.json"))
        c = AutoConfig.from_pretrained(d)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(c)
        r = {k: getattr(c, k, None) for k in (
            "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
            "num_attention_heads", "num_key_value_heads", "head_dim",
            "max_position_embeddings", "rms_norm_eps", "tie_word_embeddings",
            "sliding_window", "bos_token_id", "eos_token_id", "attention_bias")}
        r["rope_parameters"] = getattr(c, "rope_parameters", None)
        r["rope_theta"] = getattr(c, "rope_theta", None)
        r["dtype"] = str(getattr(c, "dtype", getattr(c, "torch_dtype", None)))
        r["n_params"] = sum(p.numel() for p in model.parameters())
        r["q_proj_bias"] = model.model.layers[0].self_attn.q_proj.bias is not None
        r["saved_5x"] = json.loads(c.to_json_string(use_diff=False))
        res[fn] = r
    with open(os.path.join(work, "configs.json"), "w") as f:
        json.dump(res, f, indent=1, sort_keys=True, default=str)


def versions():
    with open(os.path.join(work, "versions.json"), "w") as f:
        json.dump({"safetensors": safetensors.__version__, "torch": torch.__version__,
                   "transformers": transformers.__version__}, f, indent=1)


for s in (dtypes, layout, convert, tiny_models, configs, versions):
    step(s)
buf = io.BytesIO()
with tarfile.open(os.path.join(out, "io-fixtures.tar.gz"), "w:gz") as tar:
    tar.add(work, arcname="ref")
for root, _, files in os.walk(work):
    for fn in sorted(files):
        p = os.path.join(root, fn)
        print(os.path.relpath(p, work), os.path.getsize(p))
