# test_bad_input.sh — every reader answers bad input with one clear line: each case of
# tests/cmd/bad_input.cases builds a broken input (truncated, wrong-typed, out of range,
# hostile: absurd shapes, offsets past the end, deep nesting, invalid UTF-8, a line of
# gigabytes made sparse, never stored) and runs lorac on it. lorac must exit 2 within
# 60 s, print exactly one line to stderr, "error: ..." naming the file, the place and
# the problem (the case's expected substring), and never crash.
#
# Cases file: one case a line, four fields separated by " @@ ":
#   NAME @@ SETUP (shell, run in a fresh folder $W) @@ LORAC ARGUMENTS (shell words) @@ EXPECTED
# Lines starting with # and blank lines are skipped. Helpers for SETUP are below.
. tests/lib.sh
CASES=tests/cmd/bad_input.cases
FX="$PWD/tests/fixtures"
SPM="$PWD/fuzz/corpus/fuzz_spm/bytes.model"
TOKJ="$FX/tokenizers/demo-spm/tokenizer.json"
M="$T_TMP/model"
D="$T_TMP/model.data"
AD="$T_TMP/adapters"

# a small model, a data folder and an adapter folder (both layouts) to break copies of
tiny_model "$M" float32 || echo "  FAIL: init"
"$LORAC" train --model "$M" --data "$D" --adapter-path "$AD" --iters 2 --batch-size 2 --lora-rank 2 \
    --num-layers 2 >/dev/null 2>&1 || echo "  FAIL: training the adapters to break"

# ---- helpers for the cases' SETUP ----
# model NAME : a copy of the good model in $W/NAME
model() { cp -r "$M" "$W/$1"; }
# adapters NAME : a copy of the good adapter folder (mlx-lm layout, PEFT copy in NAME/peft)
adapters() { cp -r "$AD" "$W/$1"; }
# data NAME : a copy of the good data folder
data() { cp -r "$D" "$W/$1"; }
# jset FILE PYTHON : edits a JSON file: PYTHON runs with the document as d
jset() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); exec(sys.argv[2]); json.dump(d, open(sys.argv[1], "w"))' "$1" "$2"; }
# st FILE HEADER [DATA_BYTES] : a safetensors file with this header text (@FILE: the text of
# FILE) and zero data
st() { python3 -c 'import struct,sys; h=sys.argv[2].encode("utf-8","surrogateescape"); h=open(h[1:],"rb").read() if h[:1]==b"@" else h; open(sys.argv[1],"wb").write(struct.pack("<Q",len(h))+h+bytes(int(sys.argv[3])))' "$1" "$2" "${3:-0}"; }
# st_len FILE N : a safetensors file whose header-length field says N (no header follows)
st_len() { python3 -c 'import struct,sys; open(sys.argv[1],"wb").write(struct.pack("<Q",int(sys.argv[2]))+b"{}")' "$1" "$2"; }
# nested N OPEN CLOSE : OPEN N times, then CLOSE N times
nested() { python3 -c 'import sys; n=int(sys.argv[1]); sys.stdout.write(sys.argv[2]*n+sys.argv[3]*n)' "$@"; }
# sparse FILE SIZE : extends FILE (created empty when missing) to SIZE with a hole (nothing stored)
sparse() { touch "$1" && truncate -s "$2" "$1"; }
# bytes FILE PYTHON_BYTES_EXPR : writes the bytes of a Python expression
bytes() { python3 -c 'import sys; open(sys.argv[1],"wb").write(eval(sys.argv[2]))' "$1" "$2"; }

N_CASES=0
run_cases() {
    n=0 bad=0
    while IFS= read -r line; do
        case "$line" in '#'* | '') continue ;; esac
        name=${line%% @@ *}; rest=${line#* @@ }
        setup=${rest%% @@ *}; rest=${rest#* @@ }
        args=${rest%% @@ *}; want=${rest#* @@ }
        n=$((n + 1))
        W="$T_TMP/c$n"
        mkdir -p "$W"
        (cd "$W" && eval "$setup") >"$T_TMP/setup.log" 2>&1 || { fail "$name: setup failed: $(cat "$T_TMP/setup.log")"; bad=$((bad + 1)); continue; }
        eval "set -- $args"
        (cd "$W" && exec timeout 60 "$LORAC" "$@") >"$T_TMP/out" 2>"$T_TMP/err" </dev/null
        rc=$?
        err=$(cat "$T_TMP/err")
        before=$T_CUR
        [ $rc -eq 2 ] || fail "$name: exit $rc, expected 2; stderr: $(head -c 600 "$T_TMP/err")"
        [ "$(wc -l <"$T_TMP/err")" -eq 1 ] || fail "$name: expected one line on stderr, got: $(head -c 600 "$T_TMP/err")"
        case "$err" in "error: "*) ;; *) fail "$name: the line should start with 'error: ': $err" ;; esac
        case "$err" in *"$want"*) ;; *) fail "$name: expected '$want' in: $err" ;; esac
        [ $T_CUR -eq $before ] || bad=$((bad + 1))
        [ -n "${VERBOSE:-}" ] && echo "  $name: $err"
        rm -rf "$W"
    done <"$CASES"
    N_CASES=$((n - bad))
    echo "  $n cases, $bad failed"
    if [ $bad -eq 0 ]; then
        record_count bad_input_cases $n
        check_readme_count bad_input_cases $n
    fi
}

run_test run_cases
finish
