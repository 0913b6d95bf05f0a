# test_prepare.sh — `lorac prepare` end to end: the recipe's own train/valid files
# reproduced value for value, CSV read as Python's csv module reads it, the project data
# set's held-out-instruction and paraphrase splits checked by Python, one-line errors.
. tests/lib.sh
RECIPE="$SHARED/assets/riscv-instruction-specification"
MISTRAL="$SHARED/assets/mistral-7b-instruct-v0.3-tokenizer"
ROWS=datasets/riscv/rows.jsonl

# The recipe's settings (an ordered 90/10 cut, Mistral's template) give its files exactly.
reproduces_recipe() {
    if [ ! -f "$RECIPE/rows.jsonl" ] || [ ! -d "$MISTRAL" ]; then
        skip "shared assets absent ($RECIPE, $MISTRAL)"; return
    fi
    expect_exit 0 "$LORAC" prepare --input "$RECIPE/rows.jsonl" --model "$MISTRAL" --format text \
        --no-shuffle --valid-fraction 0.1 --test-fraction 0 --out "$T_TMP/r"
    contains "$OUT_TXT" "train 1884, valid 210, test 0"
    contains "$OUT_TXT" "leaks: 190"
    contains "$OUT_TXT" "over 2048"
    for s in train valid; do
        python3 - "$T_TMP/r/$s.jsonl" "$RECIPE/$s.jsonl" <<'PY' || fail "$s.jsonl differs from the recipe's"
import json, sys
got = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8")]
want = [json.loads(l) for l in open(sys.argv[2], encoding="utf-8")]
assert len(got) == len(want), (len(got), len(want))
for i, (g, w) in enumerate(zip(got, want)):
    assert g == w, (i + 1, g, w)
PY
    done
    [ -s "$T_TMP/r/test.jsonl" ] && fail "test.jsonl should be empty"
    # --dedupe drops the repeated pairs the recipe's data has
    expect_exit 0 "$LORAC" prepare --input "$RECIPE/rows.jsonl" --format completions --dedupe \
        --no-shuffle --out "$T_TMP/d"
    n=$(python3 -c 'import json,sys
print(len({(r["description"], r["instructions"]) for r in map(json.loads, open(sys.argv[1]))}))' "$RECIPE/rows.jsonl")
    got=$(cat "$T_TMP/d/train.jsonl" "$T_TMP/d/valid.jsonl" "$T_TMP/d/test.jsonl" | wc -l)
    [ "$got" -eq "$n" ] || fail "--dedupe kept $got rows, Python counts $n distinct pairs"
}

# CSV with quotes, doubled quotes, commas and line breaks in fields, CRLF: the prompt and
# completion of each row equal what Python's csv module and str.format make of it.
csv_like_python() {
    printf 'q,a,n\r\n"say ""hi"", then, go","li a0, 1",1\r\nplain,"two\nlines",2\r\n"",x,3\r\n' >"$T_TMP/in.csv"
    expect_exit 0 "$LORAC" prepare --input "$T_TMP/in.csv" --input-field q --output-field a \
        --prompt-template 'Q{n}: {q}\n{{braces}}' --format completions --no-shuffle \
        --valid-fraction 0 --test-fraction 0 --out "$T_TMP/c"
    python3 - "$T_TMP/in.csv" "$T_TMP/c/train.jsonl" <<'PY' || fail "CSV rows differ from Python's reading"
import csv, json, sys
want = [{"prompt": "Q{n}: {q}\n{{braces}}".format(**r), "completion": r["a"]}
        for r in csv.DictReader(open(sys.argv[1], newline=""))]
got = [json.loads(l) for l in open(sys.argv[2])]
assert got == want, (got, want)
PY
    # chat form and a JSON array input
    printf '[{"description": "d1", "instructions": "nop"}, {"description": "d2", "instructions": "ret"}]' >"$T_TMP/in.json"
    expect_exit 0 "$LORAC" prepare --input "$T_TMP/in.json" --format chat --prompt-template '{description}' \
        --no-shuffle --valid-fraction 0.5 --test-fraction 0 --out "$T_TMP/j"
    [ "$(cat "$T_TMP/j/valid.jsonl")" = '{"messages": [{"role": "user", "content": "d2"}, {"role": "assistant", "content": "ret"}]}' ] ||
        fail "chat form: $(cat "$T_TMP/j/valid.jsonl")"
}

# Held-out instructions: no mnemonic (so no description) in two splits; deterministic.
held_out_instructions() {
    expect_exit 0 "$LORAC" prepare --input "$ROWS" --format completions --split-by mnemonic --seed 3 --out "$T_TMP/h"
    contains "$OUT_TXT" "leaks: none"
    expect_exit 0 "$LORAC" prepare --input "$ROWS" --format completions --split-by mnemonic --seed 3 --out "$T_TMP/h2"
    for s in train valid test; do cmp -s "$T_TMP/h/$s.jsonl" "$T_TMP/h2/$s.jsonl" || fail "$s differs between two runs with one seed"; done
    expect_exit 0 "$LORAC" prepare --input "$ROWS" --format completions --split-by mnemonic --seed 4 --out "$T_TMP/h3"
    cmp -s "$T_TMP/h/valid.jsonl" "$T_TMP/h3/valid.jsonl" && fail "seeds 3 and 4 gave the same valid split"
    python3 - "$ROWS" "$T_TMP/h" <<'PY' || fail "held-out split is wrong (see above)"
import json, sys
mn = {r["instructions"]: r["mnemonic"] for r in map(json.loads, open(sys.argv[1]))}
split = {}
for s in ("train", "valid", "test"):
    rows = [json.loads(l) for l in open(f"{sys.argv[2]}/{s}.jsonl")]
    assert rows, s
    for r in rows:
        m = mn[r["completion"]]
        assert split.setdefault(m, s) == s, (m, split[m], s)
n = sum(1 for _ in open(sys.argv[1]))
assert abs(sum(1 for _ in open(f"{sys.argv[2]}/valid.jsonl")) - n * 0.1) < 40
PY
}

# Paraphrases: every valid/test target also in train, by another wording; no description in two splits.
paraphrase_split() {
    expect_exit 0 "$LORAC" prepare --input "$ROWS" --format completions --split-by paraphrase --out "$T_TMP/p"
    contains "$OUT_TXT" "leaks: none"
    python3 - "$ROWS" "$T_TMP/p" <<'PY' || fail "paraphrase split is wrong (see above)"
import json, sys
n = sum(1 for _ in open(sys.argv[1]))
got = {s: [json.loads(l) for l in open(f"{sys.argv[2]}/{s}.jsonl")] for s in ("train", "valid", "test")}
assert sum(map(len, got.values())) == n
train_targets = {r["completion"] for r in got["train"]}
seen = {}
for s, rows in got.items():
    for r in rows:
        assert seen.setdefault(r["prompt"], s) == s, r
        if s != "train":
            assert r["completion"] in train_targets, r
assert len(got["valid"]) == int(n * 0.1) and len(got["test"]) == int(n * 0.1), [len(v) for v in got.values()]
PY
}

bad_input() {
    printf '{"description": "x"}\n' >"$T_TMP/nofield.jsonl"
    expect_exit 2 "$LORAC" prepare --input "$T_TMP/nofield.jsonl" --format completions --out "$T_TMP/o"
    one_line "$ERR_TXT"; contains "$ERR_TXT" "row 1 has no field 'instructions'"
    expect_exit 2 "$LORAC" prepare --input "$T_TMP/nofield.jsonl" --format completions --input-field nosuch --out "$T_TMP/o"
    one_line "$ERR_TXT"; contains "$ERR_TXT" "no field 'nosuch'"
    expect_exit 2 "$LORAC" prepare --input "$ROWS" --format completions --split-by nosuch --out "$T_TMP/o"
    one_line "$ERR_TXT"; contains "$ERR_TXT" "no field 'nosuch'"
    expect_exit 2 "$LORAC" prepare --input "$ROWS" --format completions --prompt-template '{nosuch}' --out "$T_TMP/o"
    one_line "$ERR_TXT"; contains "$ERR_TXT" "--prompt-template"
    printf 'a,b\n"open,1\n' >"$T_TMP/bad1.csv"
    expect_exit 2 "$LORAC" prepare --input "$T_TMP/bad1.csv" --format completions --input-field a --output-field b --out "$T_TMP/o"
    one_line "$ERR_TXT"; contains "$ERR_TXT" "never closed"
    printf 'a,b\n1,2,3\n' >"$T_TMP/bad2.csv"
    expect_exit 2 "$LORAC" prepare --input "$T_TMP/bad2.csv" --format completions --input-field a --output-field b --out "$T_TMP/o"
    one_line "$ERR_TXT"; contains "$ERR_TXT" "line 2: 3 fields"
    printf 'a,b\nx"y,2\n' >"$T_TMP/bad3.csv"
    expect_exit 2 "$LORAC" prepare --input "$T_TMP/bad3.csv" --format completions --input-field a --output-field b --out "$T_TMP/o"
    one_line "$ERR_TXT"; contains "$ERR_TXT" "unquoted"
    expect_exit 2 "$LORAC" prepare --input "$ROWS" --format completions --valid-fraction 0.6 --test-fraction 0.5 --out "$T_TMP/o"
    one_line "$ERR_TXT"; contains "$ERR_TXT" "sum below 1"
    expect_exit 2 "$LORAC" prepare --input "$ROWS" --format completions --valid-fraction -0.1 --out "$T_TMP/o"
    one_line "$ERR_TXT"
    printf '{"description": "x", "instructions": "y"}\n[1]\n' >"$T_TMP/notobj.jsonl"
    expect_exit 2 "$LORAC" prepare --input "$T_TMP/notobj.jsonl" --format completions --out "$T_TMP/o"
    one_line "$ERR_TXT"; contains "$ERR_TXT" "line 2"
    expect_exit 2 "$LORAC" prepare --input "$ROWS" --out "$T_TMP/o"
    one_line "$ERR_TXT"; contains "$ERR_TXT" "--model"
    expect_exit 2 "$LORAC" prepare --input "$T_TMP/none.jsonl" --format chat --out "$T_TMP/o"
    one_line "$ERR_TXT"; contains "$ERR_TXT" "none.jsonl"
    [ -e "$T_TMP/o" ] && fail "a failed run left $T_TMP/o behind"
    return 0
}

run_test reproduces_recipe
run_test csv_like_python
run_test held_out_instructions
run_test paraphrase_split
run_test bad_input
finish
