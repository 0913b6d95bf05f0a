#!/usr/bin/env python3
"""Do adapters written by lorac load in PEFT and give lorac's numbers?

Run on the GPU machine (transformers 5.x, PEFT) from the repository root:

    python3 tests/reference/check_lorac_adapters_peft.py MODEL_DIR ADAPTER_DIR DATA_JSONL LORAC_EVAL_JSON

MODEL_DIR is a model folder made by `lorac init` (bf16 weights), ADAPTER_DIR the `peft/`
folder that `lorac train` wrote, DATA_JSONL a {"text"} file, LORAC_EVAL_JSON the output of
`lorac eval --json` on that file with those adapters. PEFT loads the folder onto the
model (upcast to float64), computes the token-weighted mean cross-entropy of every
example (tokenized by the model's tokenizer.json through `tokenizers`, as lorac's data
layer does for text that starts with <s>: no second BOS, EOS trained) and compares it
with lorac's loss. Prints one JSON report; exit status 1 when they differ by more than
1e-4 relative (lorac computes in fp32 over the same bf16 weights).
"""
import json
import sys

import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM
from peft import PeftModel


def main():
    mdir, adir, data, lorac_json = sys.argv[1:5]
    tok = Tokenizer.from_file(f"{mdir}/tokenizer.json")
    model = AutoModelForCausalLM.from_pretrained(mdir, dtype=torch.float32).double()
    pm = PeftModel.from_pretrained(model, adir).double()
    pm.eval()
    n_lora = sum(1 for n, _ in pm.named_parameters() if "lora_" in n)
    total, count = 0.0, 0
    with torch.no_grad():
        for line in open(data, encoding="utf-8"):
            if not line.strip():
                continue
            ids = tok.encode(json.loads(line)["text"], add_special_tokens=False).ids
            x = torch.tensor([ids])
            lp = torch.log_softmax(pm(input_ids=x).logits[0, :-1], dim=-1)
            tgt = x[0, 1:]
            total += -lp[torch.arange(len(tgt)), tgt].sum().item()
            count += len(tgt)
    peft_loss = total / count
    lorac = json.load(open(lorac_json))
    rel = abs(peft_loss - lorac["loss"]) / abs(peft_loss)
    report = {"peft_loss": peft_loss, "lorac_loss": lorac["loss"], "peft_tokens": count,
              "lorac_tokens": lorac["tokens"], "relative_difference": rel, "lora_tensors": n_lora,
              "ok": rel < 1e-4 and count == lorac["tokens"]}
    print(json.dumps(report, indent=1))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
