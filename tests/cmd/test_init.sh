# test_init.sh — `lorac init`: a random-weight model folder from a config.json.
# The folder's weights are checked against the config by tests/cmd/test_init.c; here:
# the files, determinism by seed, sharding, and one-line errors with exit status 2.
. tests/lib.sh
CFG="$T_TMP/config.json"
cat >"$CFG" <<'JSON'
{"architectures": ["MistralForCausalLM"], "vocab_size": 96, "hidden_size": 32,
 "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
 "num_key_value_heads": 2, "rope_theta": 1000000.0, "torch_dtype": "bfloat16",
 "bos_token_id": 1, "eos_token_id": 2, "sliding_window": null}
JSON
TOK="$T_TMP/tok/tokenizer.json"
mkdir -p "$T_TMP/tok"
printf '{"version": "1.0", "model": {"type": "BPE"}}\n' >"$TOK"
printf '{"bos_token": "<s>"}\n' >"$T_TMP/tok/tokenizer_config.json"

init_tiny() {
    expect_exit 0 "$LORAC" init --config "$CFG" --tokenizer "$TOK" --out "$T_TMP/a" --seed 7 -q
    for f in config.json generation_config.json tokenizer.json tokenizer_config.json model.safetensors; do
        [ -f "$T_TMP/a/$f" ] || fail "missing $f"
    done
    contains "$OUT_TXT" "MistralForCausalLM"
    contains "$(cat "$T_TMP/a/config.json")" '"torch_dtype": "bfloat16"'
    contains "$(cat "$T_TMP/a/generation_config.json")" '"eos_token_id": 2'
    cmp -s "$TOK" "$T_TMP/a/tokenizer.json" || fail "tokenizer not copied byte for byte"
    ls "$T_TMP/a" | grep -q 'tmp' && fail "a temporary file was left behind"
}

same_seed_same_bytes() {
    expect_exit 0 "$LORAC" init --config "$CFG" --tokenizer "$TOK" --out "$T_TMP/b" --seed 7 -q
    expect_exit 0 "$LORAC" init --config "$CFG" --tokenizer "$TOK" --out "$T_TMP/c" --seed 8 -q
    cmp -s "$T_TMP/a/model.safetensors" "$T_TMP/b/model.safetensors" || fail "seed 7 twice differs"
    cmp -s "$T_TMP/a/model.safetensors" "$T_TMP/c/model.safetensors" && fail "seeds 7 and 8 agree"
    # tensors are filled in parallel: the bytes must not depend on the thread count
    OMP_NUM_THREADS=1 expect_exit 0 "$LORAC" init --config "$CFG" --tokenizer "$TOK" --out "$T_TMP/t1" --seed 7 -q
    OMP_NUM_THREADS=3 expect_exit 0 "$LORAC" init --config "$CFG" --tokenizer "$TOK" --out "$T_TMP/t3" --seed 7 -q
    cmp -s "$T_TMP/a/model.safetensors" "$T_TMP/t1/model.safetensors" || fail "1 thread differs"
    cmp -s "$T_TMP/a/model.safetensors" "$T_TMP/t3/model.safetensors" || fail "3 threads differ"
}

sharded_and_dtypes() {
    expect_exit 0 "$LORAC" init --config "$CFG" --tokenizer "$TOK" --out "$T_TMP/s" --seed 7 \
        --shard-size 8KB --dtype f32 -q
    [ -f "$T_TMP/s/model.safetensors.index.json" ] || fail "no index"
    ls "$T_TMP/s" | grep -q '^model-00001-of-000[0-9][0-9].safetensors$' || fail "no first shard"
    [ -f "$T_TMP/s/model.safetensors" ] && fail "a single file beside the shards"
    contains "$(cat "$T_TMP/s/config.json")" '"torch_dtype": "float32"'
    expect_exit 0 "$LORAC" init --config "$CFG" --tokenizer "$TOK" --out "$T_TMP/h" --dtype f16 -q
    contains "$(head -c 200 "$T_TMP/h/model.safetensors")" '"F16"'
}

bad_options() {
    for args in "--bogus" "--config" "--tokenizer $TOK --out $T_TMP/x" \
                "--config $CFG --out $T_TMP/x" "--config $CFG --tokenizer $TOK" \
                "--config $CFG --tokenizer $TOK --out $T_TMP/x --dtype int4" \
                "--config $CFG --tokenizer $TOK --out $T_TMP/x --seed -1" \
                "--config $CFG --tokenizer $TOK --out $T_TMP/x --shard-size 5XB" \
                "--config $CFG --tokenizer $T_TMP/nope --out $T_TMP/x" \
                "--config $T_TMP/nope.json --tokenizer $TOK --out $T_TMP/x" \
                "--config $CFG --tokenizer $TOK --out $T_TMP/x extra"; do
        # shellcheck disable=SC2086
        expect_exit 2 "$LORAC" init $args
        one_line "$ERR_TXT"
        contains "$ERR_TXT" "error:"
    done
    printf '{"architectures": ["GPT2LMHeadModel"]}' >"$T_TMP/gpt2.json"
    expect_exit 2 "$LORAC" init --config "$T_TMP/gpt2.json" --tokenizer "$TOK" --out "$T_TMP/x"
    contains "$ERR_TXT" "architecture 'GPT2LMHeadModel' is not supported"
    one_line "$ERR_TXT"
    expect_exit 0 "$LORAC" init --help
    contains "$OUT_TXT" "--shard-size"
}

run_test init_tiny
run_test same_seed_same_bytes
run_test sharded_and_dtypes
run_test bad_options
finish
