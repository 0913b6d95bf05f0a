# lib.sh — helpers for the command-line tests (tests/**/test_*.sh), sourced by them.
# Each test is a function; `run_test NAME` runs it and counts; `finish` prints the
# RESULT line that tests/run.sh adds up. $LORAC is the binary under test.
T_PASSED=0 T_FAILED=0 T_SKIPPED=0 T_CUR=0 T_SKIP=0
T_TMP=$(mktemp -d)
trap 'rm -rf "$T_TMP"' EXIT
SHARED=${LORAC_SHARED:-../shared}

fail() { echo "  FAIL: $*"; T_CUR=$((T_CUR + 1)); }
skip() { echo "  skip: $*"; T_SKIP=1; }

# expect_exit CODE CMD... : runs CMD, keeps stdout in $OUT_TXT and stderr in $ERR_TXT.
expect_exit() {
    want=$1; shift
    "$@" >"$T_TMP/out" 2>"$T_TMP/err"
    got=$?
    OUT_TXT=$(cat "$T_TMP/out"); ERR_TXT=$(cat "$T_TMP/err")
    [ "$got" -eq "$want" ] || fail "'$*' exited $got, expected $want; stderr: $ERR_TXT"
}
# contains HAYSTACK NEEDLE
contains() { case "$1" in *"$2"*) ;; *) fail "expected '$2' in: $1" ;; esac; }
# one_line TEXT : the text is exactly one line (error messages are one line).
one_line() { [ "$(printf '%s\n' "$1" | wc -l)" -eq 1 ] || fail "expected one line, got: $1"; }

run_test() {
    T_CUR=0 T_SKIP=0
    "$1"
    if [ "$T_CUR" -ne 0 ]; then T_FAILED=$((T_FAILED + 1)); echo "FAIL $1"
    elif [ "$T_SKIP" -ne 0 ]; then T_SKIPPED=$((T_SKIPPED + 1)); echo "skip $1"
    else T_PASSED=$((T_PASSED + 1)); echo "ok   $1"; fi
}
finish() { echo "RESULT $T_PASSED $T_FAILED $T_SKIPPED"; [ "$T_FAILED" -eq 0 ]; }

# tiny_model DIR DTYPE : a 2-block Mistral (hidden 64, vocab 1024, the demo SentencePiece
# tokenizer) made by `lorac init` in DIR, its weights DTYPE ("float32", "bfloat16"), and
# DIR.data/train.jsonl: eight copies of one recipe-style row. Returns init's status.
tiny_model() {
    mkdir -p "$1.cfg" "$1.data"
    cat >"$1.cfg/config.json" <<EOF
{"architectures": ["MistralForCausalLM"], "model_type": "mistral", "vocab_size": 1024,
 "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
 "num_key_value_heads": 2, "head_dim": 16, "hidden_act": "silu", "max_position_embeddings": 512,
 "rope_theta": 10000.0, "rms_norm_eps": 1e-05, "tie_word_embeddings": false,
 "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "$2"}
EOF
    for i in 1 2 3 4 5 6 7 8; do echo '{"text": "<s>[INST] Adds rs1 and rs2 into rd[/INST] add rd, rs1, rs2</s>"}'; done \
        >"$1.data/train.jsonl"
    "$LORAC" init --config "$1.cfg/config.json" --tokenizer tests/fixtures/tokenizers/demo-spm/tokenizer.json \
        --out "$1" -q >/dev/null 2>&1
}

# record_count KEY N : writes a number the test suite counted (kill points survived,
# bad-input cases, ...) to $LORAC_BUILD/reliability/KEY, for scripts/reliability_table.sh.
record_count() {
    d="${LORAC_BUILD:-build}/reliability"
    mkdir -p "$d" && echo "$2" >"$d/$1"
}
# readme_count KEY : the count the README's reliability table gives for KEY (its row
# names the key in backticks), or nothing.
readme_count() {
    grep -F "(\`$1\`)" README.md | head -n 1 | awk -F'|' '{gsub(/[^0-9]/, "", $3); print $3}'
}
# check_readme_count KEY N : the README's table must say N for KEY (so it cannot go stale).
check_readme_count() {
    got=$(readme_count "$1")
    [ "$got" = "$2" ] || fail "README's reliability table says '$got' for \`$1\`, the suite counted $2: run scripts/reliability_table.sh and paste its output into the README"
}
