#!/bin/sh
# Checks the memory plan that `lorac train` prints for a Mistral-7B-shaped model against
# the peak resident memory measured on a couple of real steps. Makes a random-weight 7B
# model with `lorac init` (14.5 GB of bf16 on disk: needs ~16 GB free under WORK), a few
# RISC-V rows, and trains 2 steps of the recipe's LoRA (last 16 blocks, rank 16, batch 2).
# Usage: bench/memory_plan_7b.sh [WORK_DIR]   (default /tmp/lorac-7b; kept for reruns)
# TRAIN_ARGS adds flags to the training run, e.g. TRAIN_ARGS="--quantize nf4" for QLoRA.
set -eu
cd "$(dirname "$0")/.."
LORAC=${LORAC:-build/lorac}
W=${1:-/tmp/lorac-7b}
mkdir -p "$W"
cat >"$W/config.json" <<'JSON'
{"architectures": ["MistralForCausalLM"], "model_type": "mistral", "vocab_size": 32768,
 "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
 "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
 "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-05,
 "tie_word_embeddings": false, "sliding_window": null, "bos_token_id": 1, "eos_token_id": 2,
 "torch_dtype": "bfloat16", "hidden_act": "silu"}
JSON
TOK=${TOK:-../shared/assets/mistral-7b-instruct-v0.3-tokenizer/tokenizer.json}
[ -f "$TOK" ] || TOK=tests/fixtures/tokenizers/demo-spm/tokenizer.json
if [ ! -f "$W/model/config.json" ]; then
    "$LORAC" init --config "$W/config.json" --tokenizer "$TOK" --out "$W/model"
fi
mkdir -p "$W/data"
"$LORAC" prepare --input datasets/riscv/rows.jsonl --model "$W/model" --out "$W/data" >/dev/null
/usr/bin/env time -v "$LORAC" train --model "$W/model" --data "$W/data" --adapter-path "$W/adapters" \
    --iters 2 --batch-size 2 --num-layers 16 --lora-rank 16 --lora-scale 16 --steps-per-report 1 \
    --steps-per-eval 1000 --val-batches 1 --save-every 1000 ${TRAIN_ARGS:-} 2>"$W/time.txt" | tee "$W/train.txt"
plan=$(grep -o 'total [0-9.]* GiB' "$W/train.txt" | grep -o '[0-9.]*')
peak_kb=$(grep 'Maximum resident set size' "$W/time.txt" | grep -o '[0-9]*')
python3 - "$plan" "$peak_kb" <<'PY'
import sys
plan, peak = float(sys.argv[1]), int(sys.argv[2]) / 1024 / 1024
print("| memory plan (GiB) | measured peak RSS (GiB) | peak / plan |")
print("| --- | --- | --- |")
print("| %.2f | %.2f | %.2f |" % (plan, peak, peak / plan))
PY
