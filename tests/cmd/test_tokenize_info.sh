# test_tokenize_info.sh — `lorac tokenize` and `lorac info` end to end: ids equal to the
# `tokenizers` library's (fixtures), chat rendering, JSON output, one-line errors, exit 2.
. tests/lib.sh
FIX=tests/fixtures/tokenizer
DEMO_TOK=tests/fixtures/tokenizers/demo-spm

# Every corpus line of a fixture through `tokenize --jsonl` equals the reference ids.
jsonl_equals_reference() {
    for name in demo-spm bl-llama3; do
        python3 -c 'import json,sys
for l in open(sys.argv[1]): print(json.dumps(json.loads(l)["text"]))' "$FIX/$name.jsonl" >"$T_TMP/in"
        python3 -c 'import json,sys
for l in open(sys.argv[1]): print(json.loads(l)["ids_special"])' "$FIX/$name.jsonl" >"$T_TMP/want"
        "$LORAC" tokenize --tokenizer tests/fixtures/tokenizers/$name/tokenizer.json \
            --add-special-tokens --jsonl <"$T_TMP/in" >"$T_TMP/got" 2>"$T_TMP/err" ||
            fail "$name: tokenize failed: $(cat "$T_TMP/err")"
        cmp -s "$T_TMP/want" "$T_TMP/got" || fail "$name: ids differ from the reference: $(diff "$T_TMP/want" "$T_TMP/got" | head -4)"
    done
}

count_and_pieces() {
    expect_exit 0 "$LORAC" tokenize --tokenizer "$DEMO_TOK/tokenizer.json" --count --json "<s>[INST] hi"
    python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert d["tokens"] >= 3 and d["bytes"] == 12' "$OUT_TXT" ||
        fail "bad --count --json output: $OUT_TXT"
    expect_exit 0 "$LORAC" tokenize --tokenizer "$DEMO_TOK/tokenizer.json" --pieces "<s>[INST]"
    [ "$OUT_TXT" = '["<s>", "[INST]"]' ] || fail "pieces: $OUT_TXT"
}

chat_mistral() {
    M="$SHARED/assets/mistral-7b-instruct-v0.3-tokenizer"
    if [ ! -d "$M" ]; then skip "shared assets absent ($M)"; return; fi
    # Mistral's own framing: [1, 3] + sp(user) + [4] + sp(assistant) + [2]
    expect_exit 0 "$LORAC" tokenize --model "$M" --chat '[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"}]'
    python3 - "$OUT_TXT" "$M/tokenizer.model" <<'PY' || fail "chat ids: $OUT_TXT"
import json, sys
ids = json.loads(sys.argv[1])
assert ids[:2] == [1, 3] and ids[-1] == 2 and 4 in ids, ids
PY
    expect_exit 2 "$LORAC" tokenize --model "$M" --chat '[{"role":"assistant","content":"x"}]'
    one_line "$ERR_TXT"; contains "$ERR_TXT" "must start with a user message"
    expect_exit 2 "$LORAC" tokenize --model "$M" --chat '[{"role":"user"}]'
    one_line "$ERR_TXT"; contains "$ERR_TXT" "message 0"
}

tokenize_errors() {
    expect_exit 2 "$LORAC" tokenize "text"
    one_line "$ERR_TXT"; contains "$ERR_TXT" "--model"
    expect_exit 2 "$LORAC" tokenize --model "$T_TMP/none" x
    one_line "$ERR_TXT"; contains "$ERR_TXT" "$T_TMP/none"
    printf '"ok"\n{"not": "a string"}\n' >"$T_TMP/bad.jsonl"
    expect_exit 2 "$LORAC" tokenize --tokenizer "$DEMO_TOK/tokenizer.json" --jsonl <"$T_TMP/bad.jsonl"
    one_line "$ERR_TXT"; contains "$ERR_TXT" "line 2"
    printf '{"version": "1.0", "model": {"type": "BPE", "vocab": {"a": 0}, "merges": [["a", "b"]]}}' >"$T_TMP/tok.json"
    expect_exit 2 "$LORAC" tokenize --tokenizer "$T_TMP/tok.json" x
    one_line "$ERR_TXT"; contains "$ERR_TXT" "tok.json"
    expect_exit 2 "$LORAC" tokenize --bogus
}

info_demo() {
    expect_exit 0 "$LORAC" init --config models/demo/config.json --tokenizer "$DEMO_TOK/tokenizer.json" --out "$T_TMP/m" -q
    expect_exit 0 "$LORAC" info "$T_TMP/m"
    contains "$OUT_TXT" "MistralForCausalLM"
    contains "$OUT_TXT" "BF16"
    expect_exit 0 "$LORAC" info --json "$T_TMP/m"
    python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert d["layers"] == 4 and d["bos"]["id"] == 1 and d["kv_heads"] == 4' "$OUT_TXT" ||
        fail "bad info --json: $OUT_TXT"
    # a truncated weight file is an error naming it, not a crash
    head -c 5000 "$T_TMP/m/model.safetensors" >"$T_TMP/trunc" && mv "$T_TMP/trunc" "$T_TMP/m/model.safetensors"
    expect_exit 2 "$LORAC" info "$T_TMP/m"
    one_line "$ERR_TXT"; contains "$ERR_TXT" "model.safetensors"
    expect_exit 2 "$LORAC" info "$T_TMP/nowhere"
    one_line "$ERR_TXT"
    expect_exit 2 "$LORAC" info --chat-template nope "$T_TMP/m"
    one_line "$ERR_TXT"
}

run_test jsonl_equals_reference
run_test count_and_pieces
run_test chat_mistral
run_test tokenize_errors
run_test info_demo
finish
