# test_recipe.sh — the README's recipe block (between <!-- recipe:begin --> and
# <!-- recipe:end -->), run word for word in a fresh folder with configs/riscv-mistral.yaml,
# against the loopback Hub look-alike (tests/hub/fake_hub.py): a tiny Mistral-shaped model
# stands in for mistralai/Mistral-7B-Instruct-v0.3 and a Parquet-only data set under the
# recipe's id davidpirkl/riscv-instruction-specification serves the project's RISC-V rows
# through the datasets server. Checks the prepared splits (the recipe's ordered 90/10 cut
# and text format, against the served rows) and the adapters and checkpoints of the run.
. tests/lib.sh
. tests/hub/hub_lib.sh

DS=davidpirkl/riscv-instruction-specification
export OMP_NUM_THREADS=1 # a tiny model: one thread is fastest, and the machine is shared

setup() {
    make_repo mistralai/Mistral-7B-Instruct-v0.3
    mkdir -p "$HUBROOT/datasets/$DS/data" "$HUBROOT/rows/$DS/default"
    printf 'PAR1 stand-in PAR1' >"$HUBROOT/datasets/$DS/data/train-00000-of-00001.parquet"
    printf -- '---\nlicense: unknown\n---\n# stand-in\n' >"$HUBROOT/datasets/$DS/README.md"
    # the recipe's schema: description and instructions only
    python3 -c '
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(json.dumps({"description": r["description"], "instructions": r["instructions"]}))
' datasets/riscv/rows.jsonl >"$HUBROOT/rows/$DS/default/train.jsonl"
    sed -n '/<!-- recipe:begin/,/<!-- recipe:end/p' README.md | sed '/^```/d; /^<!--/d' >"$T_TMP/recipe.sh"
    mkdir -p "$T_TMP/work/configs" "$T_TMP/bin"
    cp configs/riscv-mistral.yaml "$T_TMP/work/configs/"
    ln -s "$LORAC" "$T_TMP/bin/lorac"
}

readme_recipe_runs() {
    grep -q 'lorac prepare --dataset davidpirkl/riscv-instruction-specification' "$T_TMP/recipe.sh" ||
        fail "the README's recipe block was not found"
    grep -q '^lorac train -c configs/riscv-mistral.yaml$' "$T_TMP/recipe.sh" || fail "no train line in the block"
    root=$PWD
    cd "$T_TMP/work" || return
    expect_exit 0 env PATH="$T_TMP/bin:$PATH" sh -e "$T_TMP/recipe.sh"
    cd "$root" || return
    [ -n "$SHOW" ] && echo "$OUT_TXT"
    n=$(wc -l <"$HUBROOT/rows/$DS/default/train.jsonl")
    ntrain=$((n * 9 / 10))
    [ "$(wc -l <"$T_TMP/work/data/train.jsonl")" -eq "$ntrain" ] || fail "train.jsonl: expected $ntrain rows"
    [ "$(wc -l <"$T_TMP/work/data/valid.jsonl")" -eq $((n - ntrain)) ] || fail "valid.jsonl: expected $((n - ntrain)) rows"
    # the recipe's text: <s>[INST] prompt\ndescription[/INST] instructions</s>, rows in order
    python3 - "$HUBROOT/rows/$DS/default/train.jsonl" "$T_TMP/work/data" "$ntrain" <<'PY' || fail "the prepared rows are not the recipe's"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
k = int(sys.argv[3])
want = ["<s>[INST] Write the RISC-V assembly instruction for the following operation:\n%s[/INST] %s</s>"
        % (r["description"], r["instructions"]) for r in rows]
got = [json.loads(l)["text"] for l in open(sys.argv[2] + "/train.jsonl")]
got += [json.loads(l)["text"] for l in open(sys.argv[2] + "/valid.jsonl")]
sys.exit(0 if got == want[:k] + want[k:] and len(got) == len(rows) else 1)
PY
    for f in adapters.safetensors adapter_config.json 0000100_adapters.safetensors 0000600_adapters.safetensors; do
        [ -s "$T_TMP/work/adapters/$f" ] || fail "adapters/$f missing"
    done
    [ -e "$T_TMP/work/adapters/0000700_adapters.safetensors" ] && fail "more than 600 iterations"
    grep -q '"rank": 16' "$T_TMP/work/adapters/adapter_config.json" || fail "rank is not 16"
    grep -q '"scale": 16' "$T_TMP/work/adapters/adapter_config.json" || fail "scale is not 16"
    # the model came from the (fake) Hub into the cache, by the config's repo id
    check_layout model mistralai/Mistral-7B-Instruct-v0.3 main --served "$HUBROOT/mistralai/Mistral-7B-Instruct-v0.3" \
        --files config.json model.safetensors tokenizer.json
}

if command -v python3 >/dev/null && setup && start_server; then
    run_test readme_recipe_runs
else
    skip_all() { skip "python3 or the loopback server is not available"; }
    run_test skip_all
fi
finish
