# test_eval.sh — `lorac eval --generate / --compare / --report` end to end on a small
# random-weight model (the demo's shape and tokenizer) with briefly trained adapters:
# the prompt a row gives is the one `lorac generate` gives (text and prompt/completion
# rows alike); exact and mnemonic flags in the report agree with an independent Python
# normalisation and add up to the summary; --compare prints both columns; a missing
# assembler is reported as unmeasured, never as a pass; bad input is one line, exit 2.
# The scorer itself (and "assembles" against the real assembler) is tests/train/test_score.
. tests/lib.sh
M="$T_TMP/model"
D="$T_TMP/data"   # text rows, the recipe's form
C="$T_TMP/compl"  # the same questions as prompt/completion rows
"$LORAC" init --config models/demo/config.json --tokenizer tests/fixtures/tokenizers/demo-spm/tokenizer.json \
    --out "$M" -q >/dev/null 2>&1 || echo "  FAIL: init"
mkdir -p "$D" "$C"
python3 - "$D" "$C" <<'PY'
import json, random, sys
ops = [("Adds rs1 and rs2 into rd", "add rd, rs1, rs2"), ("Subtracts rs2 from rs1 into rd", "sub rd, rs1, rs2"),
       ("Shifts rs1 left by rs2 into rd", "sll rd, rs1, rs2"), ("Loads a word at offset from rs1 into rd", "lw rd, offset(rs1)"),
       ("Branches to label when rs1 equals rs2", "beq rs1, rs2, label"), ("Returns from a function", "ret")]
r = random.Random(1)
for name, n in (("train", 16), ("valid", 4), ("test", 6)):
    rows = ops if name == "test" else [r.choice(ops) for _ in range(n)]
    with open(f"{sys.argv[1]}/{name}.jsonl", "w") as f, open(f"{sys.argv[2]}/{name}.jsonl", "w") as g:
        for d, a in rows:
            f.write(json.dumps({"text": f"<s>[INST] {d}[/INST] {a}</s>"}) + "\n")
            g.write(json.dumps({"prompt": d, "completion": a}) + "\n")
PY
"$LORAC" train --model "$M" --data "$D" --batch-size 4 --iters 3 --num-layers -1 --lora-rank 4 \
    --adapter-path "$T_TMP/a" --seed 3 --steps-per-eval 1000 >/dev/null 2>&1 || echo "  FAIL: train"
E="--model $M --data $D --split test --max-tokens 12"

# Python's reading of the documented normalisation (README, src/train/score.h).
cat >"$T_TMP/norm.py" <<'PY'
import re
def norm(s):
    out = []
    for l in s.split("\n"):
        l = l.strip(" \t\r\f\v")
        if not l:
            continue
        p = re.split(r"[ \t\r\f\v]+", l, maxsplit=1)
        m = p[0].lower()
        if len(p) == 1:
            out.append(m)
            continue
        ops = [re.sub(r" ?([()]) ?", r"\1", re.sub(r"[ \t\r\f\v]+", " ", o.strip(" \t\r\f\v"))) for o in p[1].split(",")]
        out.append(m + " " + ", ".join(ops))
    return "\n".join(out)
def mnemonic(s):
    n = norm(s)
    return re.split(r"[ \n]", n, maxsplit=1)[0] if n else ""
PY

prompts_match_generate() {
    expect_exit 0 "$LORAC" eval $E --report "$T_TMP/text.jsonl"
    expect_exit 0 "$LORAC" eval --model "$M" --data "$C" --split test --max-tokens 12 --report "$T_TMP/compl.jsonl"
    q="Branches to label when rs1 equals rs2"
    "$LORAC" generate --model "$M" --max-tokens 12 --prompt "$q" >"$T_TMP/gen.txt" 2>/dev/null || fail "generate failed"
    python3 - "$T_TMP/text.jsonl" "$T_TMP/compl.jsonl" "$T_TMP/gen.txt" "$q" <<'PY' || fail "answers differ (see above)"
import json, sys
t = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8")]
c = [json.loads(l) for l in open(sys.argv[2], encoding="utf-8")]
assert len(t) == len(c) == 6, (len(t), len(c))
for a, b in zip(t, c):
    assert a["output"] == b["output"], (a, b)   # text and prompt/completion rows: one prompt
    assert a["target"] == b["target"], (a, b)
    assert a["prompt"].startswith("<s>[INST] ") and a["prompt"].endswith("[/INST]"), a["prompt"]
    assert b["prompt"] in a["prompt"], (a["prompt"], b["prompt"])
gen = open(sys.argv[3], encoding="utf-8").read()
row = [r for r in c if r["prompt"] == sys.argv[4]][0]
assert gen.strip() == row["output"].strip(), (gen, row["output"])  # what `lorac generate` says
PY
}

# Targets made from the model's own answers: respaced (exact), same first word (mnemonic
# only), unrelated (neither); the flags must agree with Python's normalisation.
exact_and_mnemonic_flags() {
    [ -f "$T_TMP/text.jsonl" ] || { fail "needs prompts_match_generate first"; return; }
    mkdir -p "$T_TMP/x"
    python3 - "$T_TMP/text.jsonl" "$T_TMP/x" <<'PY'
import json, re, sys
rows = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8")]
with open(sys.argv[2] + "/test.jsonl", "w") as f:
    for i, r in enumerate(rows):
        out, q = r["output"], r["prompt"]
        words = out.split()
        if i % 3 == 0 and words:   # respaced and upper-cased mnemonic: still exact
            tgt = "  " + words[0].upper() + "   " + " ,".join(" ".join(words[1:]).split(",")) + " "
        elif i % 3 == 1 and words:  # same mnemonic, other operands
            tgt = words[0] + " x9, x9"
        else:
            tgt = "zzzz rd"
        f.write(json.dumps({"text": f"{q} {tgt}</s>"}) + "\n")
PY
    expect_exit 0 "$LORAC" eval --model "$M" --data "$T_TMP/x" --split test --max-tokens 12 --json --report "$T_TMP/x.jsonl"
    printf '%s\n' "$OUT_TXT" >"$T_TMP/x.json"
    python3 - "$T_TMP/x.jsonl" "$T_TMP/x.json" "$T_TMP/norm.py" <<'PY' || fail "flags disagree (see above)"
import json, sys
exec(open(sys.argv[3]).read())
rows = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8")]
summ = json.loads(open(sys.argv[2]).read())
assert summ["rows"] == len(rows) == 6, summ
ex = mn = 0
for r in rows:
    e = norm(r["output"]) == norm(r["target"])
    m = mnemonic(r["output"]) != "" and mnemonic(r["output"]) == mnemonic(r["target"])
    assert r["exact"] == e and r["mnemonic"] == m, (r, e, m)
    ex += e
    mn += m
assert ex >= 1 and mn > ex, (ex, mn)  # the respaced rows match, the same-mnemonic ones only in part
assert abs(summ["base"]["exact"] - ex / 6) < 1e-6 and abs(summ["base"]["mnemonic"] - mn / 6) < 1e-6, summ
assert summ["base"]["assembles"] is None or 0 <= summ["base"]["assembles"] <= 1, summ
PY
}

compare_prints_both_columns() {
    expect_exit 0 "$LORAC" eval $E --adapter-path "$T_TMP/a" --compare --limit 3 --report "$T_TMP/c.jsonl"
    contains "$OUT_TXT" "3 rows"
    for w in base adapters delta loss ppl exact mnemonic assembles; do contains "$OUT_TXT" "$w"; done
    [ "$(printf '%s\n' "$OUT_TXT" | grep '^exact' | grep -o '%' | wc -l)" -eq 3 ] || fail "expected base, adapters and delta rates: $OUT_TXT"
    python3 - "$T_TMP/c.jsonl" <<'PY' || fail "compare report malformed (see above)"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8")]
assert len(rows) == 3, len(rows)
for r in rows:
    assert {"line", "prompt", "target", "base", "adapters"} <= set(r), r
    for k in ("base", "adapters"):
        assert set(r[k]) == {"output", "exact", "mnemonic", "assembles"}, r[k]
        assert isinstance(r[k]["output"], str) and isinstance(r[k]["exact"], bool)
PY
    expect_exit 0 "$LORAC" eval $E --adapter-path "$T_TMP/a" --compare --limit 2 --json
    python3 -c 'import json,sys; j=json.loads(sys.argv[1]); assert j["rows"]==2 and {"base","adapters","delta"}<=set(j), j; assert j["base"]["loss"]!=j["adapters"]["loss"], j' "$OUT_TXT" ||
        fail "compare --json: $OUT_TXT"
}

report_fields_and_limit() {
    expect_exit 0 "$LORAC" eval $E --limit 4 --report "$T_TMP/r.jsonl" --json
    python3 - "$T_TMP/r.jsonl" "$OUT_TXT" <<'PY' || fail "report malformed (see above)"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8")]
assert len(rows) == 4, len(rows)
for r in rows:
    assert set(r) == {"line", "prompt", "target", "output", "exact", "mnemonic", "assembles"}, r
    assert r["assembles"] in (True, False, None)
assert [r["line"] for r in rows] == [1, 2, 3, 4]
assert rows[3]["target"] == "lw rd, offset(rs1)", rows[3]
s = json.loads(sys.argv[2])
assert s["rows"] == 4 and s["max_tokens"] == 12 and set(s["base"]) == {"loss", "ppl", "tokens", "exact", "mnemonic", "assembles"}, s
PY
    # without --generate: the loss line as before, over the first N rows
    expect_exit 0 "$LORAC" eval $E --limit 2 --json
    python3 -c 'import json,sys; j=json.loads(sys.argv[1]); assert set(j)=={"loss","ppl","tokens"}, j' "$OUT_TXT" || fail "loss --json: $OUT_TXT"
}

no_assembler_is_not_a_pass() {
    expect_exit 0 "$LORAC" eval $E --limit 2 --assembler /nonexistent/as --json --report "$T_TMP/n.jsonl"
    contains "$ERR_TXT" "not measured"
    python3 - "$T_TMP/n.jsonl" "$OUT_TXT" <<'PY' || fail "a missing assembler must read as unmeasured"
import json, sys
assert all(json.loads(l)["assembles"] is None for l in open(sys.argv[1]))
s = json.loads(sys.argv[2])
assert s["base"]["assembles"] is None and s["assembler"] is None, s
PY
    expect_exit 0 "$LORAC" eval $E --limit 2 --generate --assembler /nonexistent/as
    contains "$OUT_TXT" "n/a"
    contains "$OUT_TXT" "not measured"
}

bad_inputs() {
    mkdir -p "$T_TMP/empty" "$T_TMP/noans"
    expect_exit 2 "$LORAC" eval --model "$M" --data "$T_TMP/empty" --split test --generate
    one_line "$ERR_TXT"; contains "$ERR_TXT" "test.jsonl: no such file"
    for v in 0 -3 abc 1x; do
        expect_exit 2 "$LORAC" eval $E --generate --limit "$v"
        one_line "$ERR_TXT"; contains "$ERR_TXT" "--limit"
    done
    expect_exit 2 "$LORAC" eval $E --max-tokens 0
    one_line "$ERR_TXT"
    expect_exit 2 "$LORAC" eval $E --compare
    one_line "$ERR_TXT"; contains "$ERR_TXT" "--adapter-path"
    printf '{"text": "<s>[INST] a[/INST] b</s>"}\n{"text": "no answer here"}\n' >"$T_TMP/noans/test.jsonl"
    expect_exit 2 "$LORAC" eval --model "$M" --data "$T_TMP/noans" --split test --generate
    one_line "$ERR_TXT"; contains "$ERR_TXT" "test.jsonl:2: cannot find where the answer starts"
    expect_exit 2 "$LORAC" eval $E --report /nonexistent-dir/r.jsonl
    one_line "$ERR_TXT"
}

run_test prompts_match_generate
run_test exact_and_mnemonic_flags
run_test compare_prints_both_columns
run_test report_fields_and_limit
run_test no_assembler_is_not_a_pass
run_test bad_inputs
finish
