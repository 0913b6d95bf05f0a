# test_cache.sh — lorac and huggingface_hub share one cache. tests/hub/hf_cache.py writes
# a cache the way huggingface_hub's hf_hub_download does (its rules R1-R5 are quoted in
# that file, derived from huggingface_hub's file_download.py: blobs named by the etag,
# relative snapshot symlinks, refs without a newline, refs/pr/N nested, lock files,
# .incomplete and .no_exist leftovers); lorac must read it offline, at a branch, a tag, a
# nested ref and a commit hash, and reuse its blobs online instead of downloading again.
# The other way round, what lorac writes is checked against the same rules by
# `hf_cache.py check` (and in test_download.sh after every download).
. tests/lib.sh
. tests/hub/hub_lib.sh

C1=1111111111111111111111111111111111111111
C2=2222222222222222222222222222222222222222

# huggingface_hub's cache of acme/cached: commit C1 (tag v1.0, refs/pr/1) and C2 (main),
# sharing the tokenizer blob, C2 with a nested file; plus a data set
make_python_cache() {
    src1="$T_TMP/src1" src2="$T_TMP/src2"
    make_repo_at "$src1" 3
    make_repo_at "$src2" 4
    mkdir -p "$src2/sub/deeper" && printf 'nested file\n' >"$src2/sub/deeper/notes.txt"
    python3 tests/hub/hf_cache.py make "$HF_HOME/hub" model acme/cached $C1 "$src1" --ref v1.0 --ref refs/pr/1 \
        --lfs-over 1024 >/dev/null || fail "hf_cache.py make failed"
    python3 tests/hub/hf_cache.py make "$HF_HOME/hub" model acme/cached $C2 "$src2" --ref main \
        --lfs-over 1024 >/dev/null || fail "hf_cache.py make failed"
    f="$HF_HOME/hub/models--acme--cached"
    mkdir -p "$f/.no_exist/$C2" && : >"$f/.no_exist/$C2/generation_config.json"
    printf 'half' >"$f/blobs/$(printf '%064d' 7).incomplete"
    mkdir -p "$T_TMP/dsrc/data"
    printf '{"description": "d%s", "instructions": "add rd, rs1, rs2"}\n' 1 2 3 4 5 >"$T_TMP/dsrc/data/train.jsonl"
    python3 tests/hub/hf_cache.py make "$HF_HOME/hub" dataset acme/cachedrows $C1 "$T_TMP/dsrc" --ref main \
        >/dev/null || fail "hf_cache.py make failed"
}

make_repo_at() { # make_repo_at DIR SEED: a tiny model by lorac init
    "$LORAC" init --config tests/hub/tiny_config.json --tokenizer "$TOK" --out "$1" --seed "$2" -q >/dev/null ||
        fail "lorac init failed"
}

# off CMD...: CMD with the cache only, the Hub unreachable
off() { env HF_HUB_OFFLINE=1 HF_ENDPOINT=http://127.0.0.1:1 "$@"; }

python_cache_read_offline() {
    snaps="$HF_HOME/hub/models--acme--cached/snapshots"
    check_layout model acme/cached main --files config.json model.safetensors sub/deeper/notes.txt
    check_layout model acme/cached v1.0
    expect_exit 0 off "$LORAC" info acme/cached
    contains "$OUT_TXT" "MistralForCausalLM"
    for rev in main:$C2 v1.0:$C1 refs/pr/1:$C1 $C1:$C1 $C2:$C2; do
        expect_exit 0 off "$LORAC" download acme/cached --revision "${rev%%:*}" -q
        [ "$OUT_TXT" = "$snaps/${rev##*:}" ] || fail "--revision ${rev%%:*} gave '$OUT_TXT'"
    done
    expect_exit 0 off "$LORAC" generate --model "$snaps/$C2" --max-tokens 2 --ignore-chat-template --prompt add
    expect_exit 0 off "$LORAC" prepare --dataset acme/cachedrows --format completions --valid-fraction 0 \
        --test-fraction 0 --out "$T_TMP/prep"
    contains "$OUT_TXT" "5 rows from"
    expect_exit 2 off "$LORAC" download acme/cached --revision v2.0 -q
    [ -n "$SHOW" ] && echo "$ERR_TXT"
    one_line "$ERR_TXT"; contains "$ERR_TXT" "refs/v2.0"; contains "$ERR_TXT" "HF_HUB_OFFLINE"
    expect_exit 2 off "$LORAC" download acme/cached --revision 3333333333333333333333333333333333333333 -q
    one_line "$ERR_TXT"; contains "$ERR_TXT" "snapshots/3333333333333333333333333333333333333333 is missing"
}

# online: the Hub serves the same bytes under another commit; lorac links the blobs that
# Python fetched instead of downloading them again
python_blobs_reused_online() {
    mkdir -p "$HUBROOT/acme" && cp -r "$T_TMP/src2" "$HUBROOT/acme/cached"
    before=$(ls "$HF_HOME/hub/models--acme--cached/blobs" | sort)
    expect_exit 0 "$LORAC" download acme/cached
    contains "$ERR_TXT" "0 downloaded"
    after=$(ls "$HF_HOME/hub/models--acme--cached/blobs" | sort)
    [ "$before" = "$after" ] || fail "blobs changed: $after"
    sha=$(cat "$HF_HOME/hub/models--acme--cached/refs/main")
    [ "$sha" != "$C2" ] || fail "refs/main did not move to the Hub's commit"
    check_layout model acme/cached main --served "$HUBROOT/acme/cached"
    check_layout model acme/cached v1.0 # the old refs are untouched
}

# what lorac writes passes the rules, and a reader that breaks one of them is caught
lorac_cache_checked() {
    make_repo acme/tiny
    expect_exit 0 "$LORAC" download acme/tiny -q
    check_layout model acme/tiny main --served "$HUBROOT/acme/tiny" --complete \
        --files config.json model.safetensors extra/notes.txt
    expect_exit 0 "$LORAC" download acme/tiny --revision v1 -q # a tag the fake Hub resolves to the same commit
    check_layout model acme/tiny v1 --served "$HUBROOT/acme/tiny"
    # the checker can fail: an absolute link, a newline in a ref
    snap=$(ls -d "$HF_HOME"/hub/models--acme--tiny/snapshots/*)
    ln -sf "$(readlink -f "$snap/README.md")" "$snap/README.md"
    out=$(python3 tests/hub/hf_cache.py check "$HF_HOME/hub" model acme/tiny main) && fail "the checker accepted an absolute link"
    contains "$out" "absolute path"
    printf '%s\n' "$(cat "$HF_HOME/hub/models--acme--tiny/refs/main")" >"$HF_HOME/hub/models--acme--tiny/refs/main"
    out=$(python3 tests/hub/hf_cache.py check "$HF_HOME/hub" model acme/tiny main) && fail "the checker accepted a newline in a ref"
    contains "$out" "not exactly a 40-hex commit"
}

if start_server; then
    make_python_cache
    run_test python_cache_read_offline
    run_test python_blobs_reused_online
    run_test lorac_cache_checked
else
    skip_all() { skip "python3 or the loopback server is not available"; }
    run_test skip_all
fi
finish
