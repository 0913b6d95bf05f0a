# test_fuse.sh — `lorac fuse` end to end: the folder it writes (config.json equal to the
# base's but for the dtype, generation config and tokenizer files copied, a valid index
# whose weight map and total size match the shard files), the plan line, adapters of both
# layouts giving the same bytes, and bad input: one error line, exit 2, nothing left.
# Also checks the committed result of tests/reference/check_fuse_transformers.py when it
# exists (tests/fixtures/fuse/transformers_check.json).
. tests/lib.sh
B="$T_TMP/base"
A="$T_TMP/ad"
W="$T_TMP/work"
mkdir -p "$W"
cp -r tests/fixtures/models/tiny-mistral "$B"
# tokenizer files of any content: fuse copies them byte for byte
printf '{"fake": "tokenizer"}\n' >"$B/tokenizer.json"
printf '{"chat_template": null}\n' >"$B/tokenizer_config.json"
printf '{{ messages }}\n' >"$B/chat_template.jinja"
printf '{"eos_token": "</s>"}\n' >"$B/special_tokens_map.json"
"$LORAC_BUILD/tests/model/test_fuse" --write-adapters "$A" >/dev/null 2>&1 || echo "  FAIL: test_fuse --write-adapters"

folder_is_complete() {
    expect_exit 0 "$LORAC" fuse --model "$B" --adapter-path "$A/tiny-mistral/adapters" --save-path "$W/f1" --dtype bf16
    contains "$OUT_TXT" "Memory plan"
    contains "$OUT_TXT" "Fusing 14 of 30 tensors"
    for f in config.json generation_config.json tokenizer.json tokenizer_config.json chat_template.jinja special_tokens_map.json model.safetensors; do
        [ -f "$W/f1/$f" ] || fail "missing $f"
    done
    for f in tokenizer.json tokenizer_config.json chat_template.jinja special_tokens_map.json generation_config.json; do
        cmp -s "$B/$f" "$W/f1/$f" || fail "$f differs from the base's"
    done
    python3 - "$B/config.json" "$W/f1/config.json" <<'PY' || fail "config.json: not the base's with dtype bfloat16"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
assert b.pop("dtype") == "bfloat16", b
a.pop("dtype")
assert a == b, (a, b)
PY
    [ "$(ls -a "$W" | grep -c 'tmp-')" -eq 0 ] || fail "a temporary folder was left"
}

index_matches_files() {
    expect_exit 0 "$LORAC" fuse --model "$B" --adapter-path "$A/tiny-mistral/adapters/peft" --save-path "$W/f2" --max-shard-size 30KB -q
    [ -z "$OUT_TXT" ] || fail "-q printed: $OUT_TXT"
    python3 - "$W/f2" <<'PY' || fail "index does not match the shard files"
import json, os, struct, sys
d = sys.argv[1]
idx = json.load(open(os.path.join(d, "model.safetensors.index.json")))
shards = sorted(f for f in os.listdir(d) if f.endswith(".safetensors"))
n = len(shards)
assert n > 1 and shards == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)], shards
total, seen = 0, {}
for s in shards:
    raw = open(os.path.join(d, s), "rb").read()
    hl = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + hl])
    assert hdr.pop("__metadata__") == {"format": "pt"}
    for name, t in hdr.items():
        b, e = t["data_offsets"]
        total += e - b
        seen[name] = s
    assert 8 + hl + max(t["data_offsets"][1] for t in hdr.values()) == len(raw)
assert idx["weight_map"] == seen, "weight_map"
assert idx["metadata"]["total_size"] == total, (idx["metadata"], total)
PY
    # the same weights as one file: F32 from the mlx-lm layout and from the PEFT layout agree
    expect_exit 0 "$LORAC" fuse --model "$B" --adapter-path "$A/tiny-mistral/adapters" --save-path "$W/f3" -q
    expect_exit 0 "$LORAC" fuse --model "$B" --adapter-path "$A/tiny-mistral/adapters/peft" --save-path "$W/f4" -q
    cmp -s "$W/f3/model.safetensors" "$W/f4/model.safetensors" || fail "layouts fuse differently"
}

tied_stays_tied() {
    expect_exit 0 "$LORAC" fuse --model tests/fixtures/models/tiny-llama --adapter-path "$A/tiny-llama/adapters" --save-path "$W/t" -q
    python3 - "$W/t" <<'PY' || fail "the tied model got an lm_head or lost tie_word_embeddings"
import json, struct, sys
raw = open(sys.argv[1] + "/model.safetensors", "rb").read()
hdr = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])
assert "lm_head.weight" not in hdr and "model.embed_tokens.weight" in hdr
assert json.load(open(sys.argv[1] + "/config.json"))["tie_word_embeddings"] is True
PY
}

bad_input() {
    mkdir -p "$W/bad" && cd "$W/bad" || return
    expect_exit 2 "$LORAC" fuse --model "$B" --adapter-path "$A/tiny-llama/adapters" --save-path out
    one_line "$ERR_TXT"; contains "$ERR_TXT" "trained for another model"
    expect_exit 2 "$LORAC" fuse --model "$T_TMP/nowhere" --adapter-path "$A/tiny-llama/adapters" --save-path out
    one_line "$ERR_TXT"; contains "$ERR_TXT" "nowhere"
    expect_exit 2 "$LORAC" fuse --model "$B" --adapter-path "$T_TMP/none" --save-path out
    one_line "$ERR_TXT"
    mkdir -p "$T_TMP/noweights" && cp "$B/config.json" "$T_TMP/noweights/"
    expect_exit 2 "$LORAC" fuse --model "$T_TMP/noweights" --adapter-path "$A/tiny-mistral/adapters" --save-path out
    one_line "$ERR_TXT"
    mkdir -p "$T_TMP/lone" && cp "$A/tiny-mistral/adapters/adapters.safetensors" "$T_TMP/lone/"
    expect_exit 2 "$LORAC" fuse --model "$B" --adapter-path "$T_TMP/lone/adapters.safetensors" --save-path out --dtype f32
    one_line "$ERR_TXT"; contains "$ERR_TXT" "scale"
    expect_exit 2 "$LORAC" fuse --model "$B" --adapter-path "$A/tiny-mistral/adapters" --dtype f8
    one_line "$ERR_TXT"
    expect_exit 2 "$LORAC" fuse --model "$B" --adapter-path "$A/tiny-mistral/adapters" --max-shard-size lots
    one_line "$ERR_TXT"
    [ -z "$(ls -A)" ] || fail "bad input left: $(ls -A)"
    mkdir out && echo keep >out/notes.txt
    expect_exit 2 "$LORAC" fuse --model "$B" --adapter-path "$A/tiny-mistral/adapters" --save-path out
    one_line "$ERR_TXT"; contains "$ERR_TXT" "--force"
    [ "$(ls -A out)" = notes.txt ] || fail "the existing folder was touched"
    expect_exit 0 "$LORAC" fuse --model "$B" --adapter-path "$A/tiny-mistral/adapters" --save-path out --force -q
    [ -f out/model.safetensors ] && [ ! -f out/notes.txt ] || fail "--force did not replace the folder"
    [ "$(ls -A)" = out ] || fail "left beside the output: $(ls -A)"
    cd - >/dev/null || return
}

# `lorac generate --fuse` (the adapters merged in memory) answers what the folder `lorac fuse`
# writes in the base's dtype answers, token for token, over bf16 weights and a real tokenizer
generate_fuse_matches_folder() {
    mkdir -p "$T_TMP/g"
    tiny_model "$T_TMP/g/m" bfloat16 || fail "init"
    expect_exit 0 "$LORAC" train --model "$T_TMP/g/m" --data "$T_TMP/g/m.data" --adapter-path "$T_TMP/g/ad" --iters 4 \
        --batch-size 2 --lora-rank 4 --learning-rate 0.05 --num-layers 2 --device cpu
    expect_exit 0 "$LORAC" fuse --model "$T_TMP/g/m" --adapter-path "$T_TMP/g/ad" --save-path "$T_TMP/g/f" -q
    set -- --prompt "Adds rs1 and rs2" --ignore-chat-template --max-tokens 12 --json --device cpu
    expect_exit 0 "$LORAC" generate --model "$T_TMP/g/m" --adapter-path "$T_TMP/g/ad" --fuse "$@"
    local merged="$OUT_TXT"
    expect_exit 0 "$LORAC" generate --model "$T_TMP/g/f" "$@"
    local folder="$OUT_TXT"
    expect_exit 0 "$LORAC" generate --model "$T_TMP/g/m" --adapter-path "$T_TMP/g/ad" "$@"
    local products="$OUT_TXT"
    [ -n "$merged" ] && [ "$merged" = "$folder" ] || fail "generate --fuse: '$merged', the fused folder: '$folder'"
    printf '%s' "$merged" | python3 -c 'import json,sys; assert len(json.load(sys.stdin)["tokens"]) > 0' ||
        fail "generate --fuse: no tokens in '$merged'"
    [ -n "$products" ] || fail "generate with the adapters as products printed nothing"
}

transformers_agrees() {
    R=tests/fixtures/fuse/transformers_check.json
    if [ ! -f "$R" ]; then
        skip "$R is absent (run tests/reference/check_fuse_transformers.py on the GPU machine; see tests/fixtures/README.md)"
        return
    fi
    python3 - "$R" <<'PY' || fail "$R does not record a pass"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["ok"] is True, "ok"
names = {(c["model"], c["dtype"]) for c in r["cases"]}
for m in ("tiny-mistral", "tiny-llama"):
    for d in ("float32", "bfloat16"):
        assert (m, d) in names, (m, d)
for c in r["cases"]:
    assert c["ok"] is True and c["logits_rel_err"] <= c["tolerance"], c
PY
}

run_test folder_is_complete
run_test index_matches_files
run_test tied_stays_tied
run_test bad_input
run_test generate_fuse_matches_folder
run_test transformers_agrees
finish
