#!/bin/sh
# The main job on the embedded default, offline, a couple of minutes on 2 cores:
# make the demo model (random weights, the project's own tokenizer), prepare the
# project's RISC-V data set, show the validation loss and a few answers, fine-tune with
# configs/demo.yaml, show them again, and measure base vs adapters on the test split
# (lorac eval --compare). Usage: scripts/demo.sh [LORAC]
set -eu
LORAC=${1:-build/lorac}
cd "$(dirname "$0")/.."
PROMPT='Write the RISC-V assembly instruction for the following operation:'

show() { # $1: label, $2: adapter folder or ""
    echo
    echo "== $1"
    if [ -n "$2" ]; then
        "$LORAC" eval --model demo/model --adapter-path "$2" --data demo/data --split test
    else
        "$LORAC" eval --model demo/model --data demo/data --split test
    fi
    python3 - demo/data/test.jsonl <<'PY' >demo/questions.txt
import json, sys
rows = [json.loads(l)["text"] for l in open(sys.argv[1], encoding="utf-8")]
for t in rows[:: max(1, len(rows) // 4)][:4]:
    q, a = t.split("operation:\n", 1)[1].split("[/INST] ", 1)
    print(json.dumps([q, a.replace("</s>", "")]))
PY
    while IFS= read -r line; do
        q=$(printf '%s' "$line" | python3 -c 'import json,sys; print(json.loads(sys.stdin.read())[0])')
        want=$(printf '%s' "$line" | python3 -c 'import json,sys; print(json.loads(sys.stdin.read())[1])')
        if [ -n "$2" ]; then
            got=$("$LORAC" generate --model demo/model --adapter-path "$2" --max-tokens 16 --prompt "$PROMPT
$q")
        else
            got=$("$LORAC" generate --model demo/model --max-tokens 16 --prompt "$PROMPT
$q")
        fi
        printf '  Q: %s\n     expected: %s\n     answer:   %s\n' "$q" "$want" "$got"
    done <demo/questions.txt
}

rm -rf demo
mkdir -p demo
"$LORAC" init --config models/demo/config.json \
    --tokenizer tests/fixtures/tokenizers/demo-spm/tokenizer.json --out demo/model --seed 0
"$LORAC" info demo/model
"$LORAC" prepare --input datasets/riscv/rows.jsonl --model demo/model --split-by paraphrase \
    --out demo/data
show "before training (the demo model has random weights: expect noise)" ""
"$LORAC" train -c configs/demo.yaml
show "after training (test split: wordings the training never saw)" demo/adapters
echo
echo "== task metrics on the test split, base model vs adapters: greedy answers scored by exact"
echo "   match, mnemonic and whether GNU as accepts them (every row in demo/eval.jsonl)"
"$LORAC" eval --model demo/model --adapter-path demo/adapters --data demo/data --split test \
    --compare --report demo/eval.jsonl
echo
echo "Adapters: demo/adapters (mlx-lm layout; PEFT copy in demo/adapters/peft); the loss"
echo "curves: demo/adapters/loss.svg (open it in a browser; numbers in metrics.jsonl)."
echo "Ask it yourself:"
printf '%s\n' "  $LORAC chat --model demo/model --adapter-path demo/adapters --prefix '$PROMPT\\n'"
