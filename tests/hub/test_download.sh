# test_download.sh — `lorac download` and `--model REPO_ID` against a Hub look-alike on
# loopback (tests/hub/fake_hub.py): files byte-identical to the served ones in the
# huggingface_hub cache layout, unwanted formats skipped, nothing fetched twice, a
# redirect followed, a truncated transfer rejected then resumed, a full disk refused up
# front (free-space check) or met mid-file (ulimit -f: EFBIG), and one-line errors with
# exit status 2 for 404, a refused connection, a truncated file and a missing ETag.
. tests/lib.sh
. tests/hub/hub_lib.sh

SNAP=""
download_and_layout() {
    expect_exit 0 "$LORAC" download acme/tiny
    SNAP=$OUT_TXT
    sha=$(cat "$HF_HOME/hub/models--acme--tiny/refs/main" 2>/dev/null)
    [ -n "$sha" ] || fail "no refs/main"
    [ "$SNAP" = "$HF_HOME/hub/models--acme--tiny/snapshots/$sha" ] || fail "printed '$SNAP', expected the snapshot of $sha"
    for f in config.json generation_config.json tokenizer.json tokenizer_config.json \
             model.safetensors README.md extra/notes.txt; do
        cmp -s "$HUBROOT/acme/tiny/$f" "$SNAP/$f" || fail "$f differs from the served file (or is missing)"
    done
    for f in pytorch_model.bin model.Q4_K_M.gguf original/consolidated.00.pth consolidated.safetensors; do
        [ -e "$SNAP/$f" ] && fail "$f should have been skipped"
    done
    find "$HF_HOME" -name '*.incomplete' | grep -q . && fail "a temporary file was left behind"
    contains "$ERR_TXT" "4 skipped"
    check_layout model acme/tiny main --served "$HUBROOT/acme/tiny" --complete \
        --files config.json tokenizer.json model.safetensors README.md extra/notes.txt
}

second_run_fetches_nothing() {
    expect_exit 0 "$LORAC" download acme/tiny
    contains "$ERR_TXT" "0 downloaded"
    [ "$OUT_TXT" = "$SNAP" ] || fail "a second snapshot: $OUT_TXT"
}

include_asks_for_skipped() {
    expect_exit 0 "$LORAC" download acme/tiny --include '*.bin' --include 'original/*' -q
    cmp -s "$HUBROOT/acme/tiny/pytorch_model.bin" "$SNAP/pytorch_model.bin" || fail "--include '*.bin' not fetched"
    cmp -s "$HUBROOT/acme/tiny/original/consolidated.00.pth" "$SNAP/original/consolidated.00.pth" ||
        fail "--include 'original/*' not fetched"
    [ -e "$SNAP/model.Q4_K_M.gguf" ] && fail "gguf fetched without being asked"
}

model_repo_id_from_cache() {
    expect_exit 0 "$LORAC" info acme/tiny
    contains "$OUT_TXT" "MistralForCausalLM"
    # the cache alone, offline, and with the server unreachable
    expect_exit 0 env HF_HUB_OFFLINE=1 HF_ENDPOINT=http://127.0.0.1:1 "$LORAC" info acme/tiny
    contains "$OUT_TXT" "MistralForCausalLM"
}

model_repo_id_downloads_when_missing() {
    expect_exit 0 env HF_HOME="$T_TMP/hf2" "$LORAC" generate --model acme/tiny --max-tokens 2 \
        --ignore-chat-template --prompt "add"
    snap=$(ls -d "$T_TMP"/hf2/hub/models--acme--tiny/snapshots/*)
    cmp -s "$HUBROOT/acme/tiny/model.safetensors" "$snap/model.safetensors" || fail "not downloaded on demand"
    expect_exit 2 env HF_HOME="$T_TMP/hf3" HF_HUB_OFFLINE=1 "$LORAC" info acme/tiny
    [ -n "$SHOW" ] && echo "$ERR_TXT"
    one_line "$ERR_TXT"; contains "$ERR_TXT" "HF_HUB_OFFLINE"
}

errors_are_one_line() {
    expect_exit 2 "$LORAC" download acme/missing -q
    [ -n "$SHOW" ] && echo "$ERR_TXT"
    one_line "$ERR_TXT"; contains "$ERR_TXT" "404"; contains "$ERR_TXT" "acme/missing"
    expect_exit 2 env HF_ENDPOINT=http://127.0.0.1:1 "$LORAC" download acme/tiny -q
    [ -n "$SHOW" ] && echo "$ERR_TXT"
    one_line "$ERR_TXT"; contains "$ERR_TXT" "http://127.0.0.1:1/api/models/acme/tiny"
    contains "$ERR_TXT" "curl error"; contains "$ERR_TXT" "huggingface-cli download"
    expect_exit 2 env HF_HOME="$T_TMP/hf4" HF_ENDPOINT=http://127.0.0.1:1 "$LORAC" info acme/tiny
    [ -n "$SHOW" ] && echo "$ERR_TXT"
    one_line "$ERR_TXT"; contains "$ERR_TXT" "acme/tiny"
    expect_exit 2 "$LORAC" download broken/tiny -q
    [ -n "$SHOW" ] && echo "$ERR_TXT"
    one_line "$ERR_TXT"; contains "$ERR_TXT" "broken/tiny"
    snap=$(ls -d "$HF_HOME"/hub/models--broken--tiny/snapshots/* 2>/dev/null)
    for f in config.json model.safetensors tokenizer.json; do
        [ -e "$snap/$f" ] && fail "a truncated $f under its final name"
    done
    for args in "" "a/b c/d" "acme/tiny --repo-type space" "acme/tiny --bogus" "../x" "acme/tiny --revision ../x"; do
        # shellcheck disable=SC2086
        expect_exit 2 "$LORAC" download $args
        [ -n "$SHOW" ] && echo "$ERR_TXT"
    one_line "$ERR_TXT"; contains "$ERR_TXT" "error:"
        [ -n "$SHOW" ] && echo "$ERR_TXT"
    done
}

token_and_access_errors() {
    expect_exit 2 "$LORAC" download private/tiny -q
    one_line "$ERR_TXT"; contains "$ERR_TXT" "401"; contains "$ERR_TXT" "HF_TOKEN"
    expect_exit 0 env HF_TOKEN=sekrit "$LORAC" download private/tiny
    case "$ERR_TXT$OUT_TXT" in *sekrit*) fail "the token was printed" ;; esac
    cmp -s "$HUBROOT/private/tiny/model.safetensors" "$OUT_TXT/model.safetensors" || fail "private repo not fetched with the token"
    # the token file that huggingface-cli login writes
    printf 'sekrit\n' >"$HF_HOME/token"
    expect_exit 0 "$LORAC" download private/tiny -q
    rm -f "$HF_HOME/token"
    # a .env file in the working folder
    mkdir -p "$T_TMP/wd" && printf '# x\nexport HF_TOKEN="sekrit"\n' >"$T_TMP/wd/.env"
    root=$PWD
    cd "$T_TMP/wd" && expect_exit 0 "$LORAC" download private/tiny -q
    printf 'HF_TOKEN=wrong\n' >"$T_TMP/wd/.env"
    expect_exit 2 env HF_HOME="$T_TMP/hf5" "$LORAC" download private/tiny -q
    cd "$root" || fail "cd back"
    contains "$ERR_TXT" "401"
    expect_exit 2 "$LORAC" download gated/tiny -q
    one_line "$ERR_TXT"; contains "$ERR_TXT" "403"; contains "$ERR_TXT" "$HF_ENDPOINT/gated/tiny"
}

prepare_from_hub() {
    expect_exit 0 "$LORAC" prepare --dataset acme/rows --format completions --no-shuffle \
        --valid-fraction 0.2 --test-fraction 0 --out "$T_TMP/prep"
    [ "$(wc -l <"$T_TMP/prep/train.jsonl")" -eq 8 ] || fail "expected 8 train rows"
    grep -q '"completion": "add rd, rs1, rs2"' "$T_TMP/prep/train.jsonl" || fail "completion missing"
    expect_exit 2 "$LORAC" prepare --dataset acme/two --format completions --out "$T_TMP/prep2"
    one_line "$ERR_TXT"; contains "$ERR_TXT" "--dataset-file"
    expect_exit 0 "$LORAC" prepare --dataset acme/two --dataset-file b.csv --format completions \
        --valid-fraction 0 --test-fraction 0 --out "$T_TMP/prep3"
    grep -q '"sub rd, rs1, rs2"' "$T_TMP/prep3/train.jsonl" || fail "csv row missing"
    expect_exit 2 "$LORAC" prepare --dataset acme/nothere --format completions --out "$T_TMP/prep4"
    one_line "$ERR_TXT"
}

dataset_repo() {
    expect_exit 0 "$LORAC" download acme/rows --repo-type dataset -q
    contains "$OUT_TXT" "/datasets--acme--rows/snapshots/"
    cmp -s "$HUBROOT/datasets/acme/rows/data/train.jsonl" "$OUT_TXT/data/train.jsonl" || fail "data set file differs"
    cmp -s "$HUBROOT/datasets/acme/rows/weights.bin" "$OUT_TXT/weights.bin" || fail "data sets skip no format"
}

wrong_checksum_rejected() {
    expect_exit 2 "$LORAC" download corrupt/tiny -q
    [ -n "$SHOW" ] && echo "$ERR_TXT"
    one_line "$ERR_TXT"; contains "$ERR_TXT" "sha256"; contains "$ERR_TXT" "model.safetensors"
    snap=$(ls -d "$HF_HOME"/hub/models--corrupt--tiny/snapshots/*)
    ls "$snap" | grep -q 'model.safetensors' && fail "a corrupt file was left: $(ls "$snap")"
    ls "$HF_HOME/hub/models--corrupt--tiny/blobs" | grep -q incomplete && fail "the corrupt part was kept"
}

truncated_then_resumed() {
    expect_exit 2 "$LORAC" download flaky/tiny -q
    [ -n "$SHOW" ] && echo "$ERR_TXT"
    one_line "$ERR_TXT"; contains "$ERR_TXT" "model.safetensors"
    snap=$(ls -d "$HF_HOME"/hub/models--flaky--tiny/snapshots/*)
    [ -e "$snap/model.safetensors" ] && fail "a truncated model.safetensors under its final name"
    sha=$(sha256sum "$HUBROOT/flaky/tiny/model.safetensors" | cut -d' ' -f1)
    blobs="$HF_HOME/hub/models--flaky--tiny/blobs"
    [ -e "$blobs/$sha" ] && fail "a truncated blob under its final name"
    [ -s "$blobs/$sha.incomplete" ] || fail "the part fetched was not kept for resuming as blobs/SHA256.incomplete"
    expect_exit 0 "$LORAC" download flaky/tiny -q
    cmp -s "$HUBROOT/flaky/tiny/model.safetensors" "$snap/model.safetensors" || fail "resumed file differs"
    [ -e "$blobs/$sha.incomplete" ] && fail ".incomplete left after the resume"
    check_layout model flaky/tiny main --served "$HUBROOT/flaky/tiny" --complete
}

disk_full_refused_up_front() {
    total=0
    for f in README.md config.json generation_config.json model.safetensors tokenizer.json \
             tokenizer_config.json extra/notes.txt; do
        total=$((total + $(wc -c <"$HUBROOT/acme/tiny/$f")))
    done
    expect_exit 2 env HF_HOME="$T_TMP/hf6" LORAC_HUB_FREE_BYTES=1000 "$LORAC" download acme/tiny -q
    [ -n "$SHOW" ] && echo "$ERR_TXT"
    one_line "$ERR_TXT"; contains "$ERR_TXT" "need $total more bytes"; contains "$ERR_TXT" "has 1000 free"
    contains "$ERR_TXT" "the 7 files"
    find "$T_TMP/hf6" -type f -path '*blobs*' | grep -q . && fail "something was written to blobs/"
}

# a write that fails with EFBIG (RLIMIT_FSIZE: no root needed) in the middle of the weights
disk_full_mid_file() {
    expect_exit 2 env HF_HOME="$T_TMP/hf7" sh -c 'ulimit -f 100 && exec "$0" download acme/tiny -q' "$LORAC"
    [ -n "$SHOW" ] && echo "$ERR_TXT"
    one_line "$ERR_TXT"; contains "$ERR_TXT" "model.safetensors"; contains "$ERR_TXT" "File too large"
    contains "$ERR_TXT" "of $(wc -c <"$HUBROOT/acme/tiny/model.safetensors") bytes"
    contains "$ERR_TXT" "more bytes are needed"; contains "$ERR_TXT" ".incomplete"; contains "$ERR_TXT" "resumes"
    sha=$(sha256sum "$HUBROOT/acme/tiny/model.safetensors" | cut -d' ' -f1)
    blobs="$T_TMP/hf7/hub/models--acme--tiny/blobs"
    [ -e "$blobs/$sha" ] && fail "a partial blob under its final name"
    [ -s "$blobs/$sha.incomplete" ] || fail "the part written was not kept"
    ls "$T_TMP"/hf7/hub/models--acme--tiny/snapshots/*/model.safetensors 2>/dev/null && fail "a pointer to a partial file"
    expect_exit 0 env HF_HOME="$T_TMP/hf7" "$LORAC" download acme/tiny -q
    HF_HOME="$T_TMP/hf7" check_layout model acme/tiny main --served "$HUBROOT/acme/tiny" --complete --files model.safetensors
}

no_etag_is_an_error() {
    expect_exit 2 "$LORAC" download noetag/tiny -q
    [ -n "$SHOW" ] && echo "$ERR_TXT"
    one_line "$ERR_TXT"; contains "$ERR_TXT" "no ETag"
    find "$HF_HOME/hub/models--noetag--tiny/blobs" -type f | grep -q . && fail "a blob without a name was written"
}

make_repo acme/tiny
make_repo noetag/tiny
make_repo broken/tiny
make_repo flaky/tiny
make_repo private/tiny
make_repo gated/tiny
make_repo corrupt/tiny
mkdir -p "$HUBROOT/datasets/acme/rows/data"
for i in 0 1 2 3 4 5 6 7 8 9; do
    printf '{"description": "add %s", "instructions": "add rd, rs1, rs2"}\n' "$i"
done >"$HUBROOT/datasets/acme/rows/data/train.jsonl"
mkdir -p "$HUBROOT/datasets/acme/two"
cp "$HUBROOT/datasets/acme/rows/data/train.jsonl" "$HUBROOT/datasets/acme/two/a.jsonl"
printf 'description,instructions\nsub,"sub rd, rs1, rs2"\n' >"$HUBROOT/datasets/acme/two/b.csv"
printf 'x\n' >"$HUBROOT/datasets/acme/rows/weights.bin"
if start_server; then
    run_test download_and_layout
    run_test second_run_fetches_nothing
    run_test include_asks_for_skipped
    run_test model_repo_id_from_cache
    run_test model_repo_id_downloads_when_missing
    run_test errors_are_one_line
    run_test token_and_access_errors
    run_test dataset_repo
    run_test prepare_from_hub
    run_test wrong_checksum_rejected
    run_test truncated_then_resumed
    run_test disk_full_refused_up_front
    run_test disk_full_mid_file
    run_test no_etag_is_an_error
else
    skip_all() { skip "python3 or the loopback server is not available"; }
    run_test skip_all
fi
finish
