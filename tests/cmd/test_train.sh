# test_train.sh — `lorac train`, `generate`, `eval` and `chat` end to end on a small
# random-weight model: the loss falls, an interrupted run resumes bit for bit, Ctrl-C
# leaves a resumable checkpoint, adapters of both layouts load back, errors are one line.
. tests/lib.sh
M="$T_TMP/model"
D="$T_TMP/data"
"$LORAC" init --config models/demo/config.json --tokenizer tests/fixtures/tokenizers/demo-spm/tokenizer.json \
    --out "$M" -q >/dev/null 2>&1 || { echo "  FAIL: init"; }
mkdir -p "$D"
python3 - "$D" <<'PY'
import json, random, sys
ops = [("Adds rs1 and rs2 into rd", "add rd, rs1, rs2"), ("Subtracts rs2 from rs1 into rd", "sub rd, rs1, rs2"),
       ("Shifts rs1 left by rs2 into rd", "sll rd, rs1, rs2"), ("Loads a word at offset from rs1 into rd", "lw rd, offset(rs1)")]
r = random.Random(1)
for name, n in (("train", 48), ("valid", 12), ("test", 12)):
    with open(f"{sys.argv[1]}/{name}.jsonl", "w") as f:
        for _ in range(n):
            d, a = r.choice(ops)
            f.write(json.dumps({"text": f"<s>[INST] {d}[/INST] {a}</s>"}) + "\n")
PY
A="--model $M --data $D --batch-size 4 --steps-per-report 5 --steps-per-eval 10 --learning-rate 1e-3 --num-layers -1 --lora-rank 4 --save-every 10 --lora-dropout 0.1 --seed 3"

loss_falls() {
    expect_exit 0 "$LORAC" train $A --adapter-path "$T_TMP/a" --iters 20 --test
    contains "$OUT_TXT" "Memory plan"
    contains "$OUT_TXT" "Test loss"
    python3 - "$T_TMP/a/metrics.jsonl" <<'PY' || fail "metrics: loss did not fall or fields missing"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
tr = [r["train_loss"] for r in rows if "train_loss" in r]
va = [r["val_loss"] for r in rows if "val_loss" in r]
assert all(k in rows[-1] for k in ("step", "train_loss", "learning_rate", "tokens_per_sec", "peak_mem_gb", "val_loss")), rows[-1]
assert tr[-1] < tr[0] - 0.5 and va[-1] < va[0] - 0.5, (tr, va)
PY
    for f in adapters.safetensors adapter_config.json 0000010_adapters.safetensors peft/adapter_model.safetensors peft/adapter_config.json; do
        [ -f "$T_TMP/a/$f" ] || fail "missing $f"
    done
}

resume_is_bit_identical() {
    expect_exit 0 "$LORAC" train $A --adapter-path "$T_TMP/r" --iters 10
    expect_exit 0 "$LORAC" train $A --adapter-path "$T_TMP/r" --iters 20 --resume
    contains "$OUT_TXT" "Resuming from"
    [ -f "$T_TMP/a/adapters.safetensors" ] || { fail "needs loss_falls first"; return; }
    cmp -s "$T_TMP/a/adapters.safetensors" "$T_TMP/r/adapters.safetensors" ||
        fail "resumed adapters differ from the uninterrupted run's"
}

sigint_saves_resumable() {
    "$LORAC" train $A --adapter-path "$T_TMP/s" --iters 100000 --steps-per-eval 1000000 >"$T_TMP/s.log" 2>&1 &
    pid=$!
    sleep 2
    kill -INT $pid
    wait $pid
    rc=$?
    [ $rc -eq 0 ] || fail "Ctrl-C exit status $rc"
    contains "$(cat "$T_TMP/s.log")" "continue with --resume"
    ls "$T_TMP/s"/*_train_state.safetensors >/dev/null 2>&1 || fail "no train state after Ctrl-C"
    ls "$T_TMP/s" | grep -q tmp && fail "a temporary file was left behind"
}

use_adapters() {
    [ -f "$T_TMP/a/adapters.safetensors" ] || { fail "needs loss_falls first"; return; }
    expect_exit 0 "$LORAC" generate --model "$M" --adapter-path "$T_TMP/a" --chat-template mistral \
        --prompt "Adds rs1 and rs2 into rd" --max-tokens 8 --json
    g1=$OUT_TXT
    expect_exit 0 "$LORAC" generate --model "$M" --adapter-path "$T_TMP/a/peft" --chat-template mistral \
        --prompt "Adds rs1 and rs2 into rd" --max-tokens 8 --json
    [ "$g1" = "$OUT_TXT" ] || fail "mlx-lm and PEFT layouts generate differently: $g1 vs $OUT_TXT"
    expect_exit 0 "$LORAC" eval --model "$M" --adapter-path "$T_TMP/a" --data "$D" --split test --json
    with=$OUT_TXT
    expect_exit 0 "$LORAC" eval --model "$M" --data "$D" --split test --json
    python3 -c 'import json,sys; a=json.loads(sys.argv[1]); b=json.loads(sys.argv[2]); assert a["loss"] < b["loss"] - 0.5 and a["tokens"] == b["tokens"]' "$with" "$OUT_TXT" ||
        fail "eval: adapters should lower the test loss: $with vs $OUT_TXT"
    printf 'Adds rs1 and rs2 into rd\nquit\n' | "$LORAC" chat --model "$M" --adapter-path "$T_TMP/a" \
        --chat-template mistral --max-tokens 4 >"$T_TMP/chat.out" 2>&1 || fail "chat failed: $(cat "$T_TMP/chat.out")"
}

errors_are_one_line() {
    printf 'batchsize: 4\n' >"$T_TMP/bad.yaml"
    expect_exit 2 "$LORAC" train -c "$T_TMP/bad.yaml"
    one_line "$ERR_TXT"; contains "$ERR_TXT" "batch_size"
    expect_exit 2 "$LORAC" train $A --adapter-path "$T_TMP/x" --learning-rate abc
    one_line "$ERR_TXT"
    expect_exit 2 "$LORAC" train $A --adapter-path "$T_TMP/none" --resume
    one_line "$ERR_TXT"; contains "$ERR_TXT" "no complete train state"
    printf '{"text": "a"}\n{"txt": "b"}\n' >"$D/bad.jsonl"
    mkdir -p "$T_TMP/bd" && cp "$D/bad.jsonl" "$T_TMP/bd/train.jsonl"
    expect_exit 2 "$LORAC" train --model "$M" --data "$T_TMP/bd" --adapter-path "$T_TMP/y" --iters 1
    one_line "$ERR_TXT"; contains "$ERR_TXT" "train.jsonl"
    expect_exit 2 "$LORAC" generate --model "$M" --prompt hi --chat-template mistral --adapter-path "$T_TMP/nowhere"
    one_line "$ERR_TXT"
    expect_exit 2 "$LORAC" generate --model "$M" --prompt hi --temp -1
    one_line "$ERR_TXT"
}

# memory_limit: the backward keeps less to fit (printed in the plan), the adapters are the
# same bits as a run that keeps everything (dropout on: the recompute redraws the same
# masks); a limit nothing fits fails in one line before writing anything
memory_limit_fits() {
    local L="--batch-size 48 --iters 2 --steps-per-eval 100 --device cpu" # the limits are the CPU's plan
    expect_exit 0 "$LORAC" train $A $L --adapter-path "$T_TMP/m0"
    contains "$OUT_TXT" "everything kept"
    expect_exit 0 "$LORAC" train $A $L --adapter-path "$T_TMP/m1" --memory-limit 0.065
    contains "$OUT_TXT" "blocks checkpointed, gate/up recomputed"
    contains "$OUT_TXT" "to fit memory_limit 0.065 GiB"
    cmp -s "$T_TMP/m0/adapters.safetensors" "$T_TMP/m1/adapters.safetensors" || fail "memory_limit changed the adapters"
    expect_exit 2 "$LORAC" train $A $L --adapter-path "$T_TMP/m2" --memory-limit 0.045
    one_line "$ERR_TXT"; contains "$ERR_TXT" "even with every block checkpointed"
    [ ! -e "$T_TMP/m2" ] || fail "a failed plan left $T_TMP/m2"
}

run_test loss_falls
run_test resume_is_bit_identical
run_test sigint_saves_resumable
run_test use_adapters
run_test errors_are_one_line
run_test memory_limit_fits
finish
