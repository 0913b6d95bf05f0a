# hub_lib.sh — shared set-up of the tests/hub/test_*.sh scripts (sourced after tests/lib.sh):
# a clean Hugging Face environment under $T_TMP, tiny model repos made by lorac init, and
# the loopback Hub look-alike tests/hub/fake_hub.py (HF_ENDPOINT, HF_DATASETS_SERVER).
HUBROOT="$T_TMP/served"
TOK=tests/fixtures/tokenizers/demo-spm/tokenizer.json
SRV_PID=""
trap '[ -n "$SRV_PID" ] && kill "$SRV_PID" 2>/dev/null; rm -rf "$T_TMP"' EXIT
# no token or cache of the machine's user leaks in
unset HF_TOKEN HF_HUB_OFFLINE HF_HUB_CACHE XDG_CACHE_HOME HF_DATASETS_SERVER LORAC_HUB_FREE_BYTES
export HF_HOME="$T_TMP/hf"

make_repo() { # make_repo ORG/NAME: a tiny Mistral-shaped model by lorac init plus files to skip
    d="$HUBROOT/$1"
    mkdir -p "$d/original" "$d/extra"
    cat >"$T_TMP/config.json" <<'JSON'
{"architectures": ["MistralForCausalLM"], "vocab_size": 1040, "hidden_size": 32,
 "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
 "num_key_value_heads": 2, "rope_theta": 1000000.0, "torch_dtype": "bfloat16",
 "bos_token_id": 1, "eos_token_id": 2, "sliding_window": null}
JSON
    "$LORAC" init --config "$T_TMP/config.json" --tokenizer "$TOK" --out "$d" --seed 3 -q >/dev/null ||
        fail "lorac init failed"
    printf 'weights in pickle\n' >"$d/pytorch_model.bin"
    printf 'gguf\n' >"$d/model.Q4_K_M.gguf"
    printf 'pth\n' >"$d/original/consolidated.00.pth"
    printf 'mistral format\n' >"$d/consolidated.safetensors"
    printf '# tiny\n' >"$d/README.md"
    printf 'nested\n' >"$d/extra/notes.txt"
}

start_server() {
    command -v python3 >/dev/null || return 1
    python3 tests/hub/fake_hub.py "$HUBROOT" "$T_TMP/port" &
    SRV_PID=$!
    i=0
    while [ ! -s "$T_TMP/port" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
    [ -s "$T_TMP/port" ] || return 1
    export HF_ENDPOINT="http://127.0.0.1:$(cat "$T_TMP/port")"
    export HF_DATASETS_SERVER="$HF_ENDPOINT/dsv"
}

# check_layout TYPE REPO REV [args of hf_cache.py check]: huggingface_hub's rules hold
check_layout() {
    kind=$1 repo=$2 rev=$3
    shift 3
    out=$(python3 tests/hub/hf_cache.py check "$HF_HOME/hub" "$kind" "$repo" "$rev" "$@") ||
        fail "the cache of $repo is not huggingface_hub's layout: $out"
}
