#!/bin/sh
# The quality cost of quantized base weights, measured on the project's RISC-V demo recipe
# (configs/demo.yaml on the demo model, as `make demo` runs it): for bf16 (as stored) and
# --quantize nf4 / q4 / q8, the validation and test losses of the base model and of the
# adapters trained over it. Prints a Markdown
# table. ITERS overrides the recipe's 600 steps (the README says which was used).
# Usage: scripts/quant_quality.sh [LORAC] [WORK_DIR]   (default build/lorac, /tmp/lorac-qq)
set -eu
LORAC=${1:-build/lorac}
W=${2:-/tmp/lorac-qq}
ITERS=${ITERS:-600}
cd "$(dirname "$0")/.."
mkdir -p "$W"
if [ ! -f "$W/model/config.json" ]; then
    "$LORAC" init --config models/demo/config.json \
        --tokenizer tests/fixtures/tokenizers/demo-spm/tokenizer.json --out "$W/model" --seed 0 >/dev/null
fi
if [ ! -f "$W/data/valid.jsonl" ]; then
    "$LORAC" prepare --input datasets/riscv/rows.jsonl --model "$W/model" --split-by paraphrase \
        --out "$W/data" >/dev/null
fi
loss() { # split, adapters ("" none), quantize flag ("" none)
    a=""; [ -n "$2" ] && a="--adapter-path $2"
    "$LORAC" eval --model "$W/model" --data "$W/data" --split "$1" --json $a $3 |
        python3 -c 'import json,sys; print("%.4f" % json.load(sys.stdin)["loss"])'
}
echo "| base weights | val loss, base | val loss, trained | test loss, trained |"
echo "| --- | --- | --- | --- |"
for q in bf16 nf4 q4 q8; do
    flag=""; [ "$q" != bf16 ] && flag="--quantize $q"
    "$LORAC" train -c configs/demo.yaml --model "$W/model" --data "$W/data" --adapter-path "$W/a-$q" \
        --iters "$ITERS" --save-every "$ITERS" --steps-per-eval "$ITERS" --val-batches 1 $flag \
        >"$W/train-$q.txt"
    echo "| $q | $(loss valid "" "$flag") | $(loss valid "$W/a-$q" "$flag") | $(loss test "$W/a-$q" "$flag") |"
done
