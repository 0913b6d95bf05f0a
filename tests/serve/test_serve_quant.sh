# test_serve_quant.sh — `lorac serve --quantize`: answers equal `lorac generate --quantize`
# for the same prompts (greedy decoding is deterministic), with and without per-request
# adapters (whose models must load quantized the same way), and the option errors.
. tests/lib.sh
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 # tiny model: threads only slow it down
M="$T_TMP/model"
N=12
"$LORAC" init --config models/demo/config.json --tokenizer tests/fixtures/tokenizers/demo-spm/tokenizer.json \
    --out "$M" -q >/dev/null 2>&1 || echo "  FAIL: init"
# adapters with large random weights on q and v (mlx-lm layout): they change the answers
python3 - "$T_TMP/ad" <<'PY'
import json, os, random, struct, sys
d = sys.argv[1]; os.makedirs(d, exist_ok=True)
r, rnd, hdr, blob = 4, random.Random(5), {}, b""
for layer in range(4):
    for key, out in (("q_proj", 256), ("v_proj", 128)):
        for name, shape in (("lora_a", [256, r]), ("lora_b", [r, out])):
            vals = [rnd.uniform(-0.3, 0.3) for _ in range(shape[0] * shape[1])]
            data = struct.pack("<%df" % len(vals), *vals)
            hdr[f"model.layers.{layer}.self_attn.{key}.{name}"] = {"dtype": "F32", "shape": shape,
                                                                   "data_offsets": [len(blob), len(blob) + len(data)]}
            blob += data
h = json.dumps(hdr).encode(); h += b" " * (-len(h) % 8)
open(f"{d}/adapters.safetensors", "wb").write(struct.pack("<Q", len(h)) + h + blob)
json.dump({"fine_tune_type": "lora", "num_layers": 4, "lora_parameters": {"rank": r, "scale": 20.0, "dropout": 0.0}},
          open(f"{d}/adapter_config.json", "w"))
PY
P0="Adds rs1 and rs2 into rd"
# gen ARGS... : lorac generate's text for P0 (chat template), greedy
gen() {
    "$LORAC" generate --model "$M" --prompt "$P0" --max-tokens $N --chat-template mistral --json "$@" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["text"])'
}
REF_Q=$(gen --quantize q8)
REF_QA=$(gen --quantize q8 --adapter-path "$T_TMP/ad")
REF_A=$(gen --adapter-path "$T_TMP/ad")

start_server() {
    log=$1; shift
    (cd "$T_TMP" && exec "$LORAC" serve --model "$M" --port 0 --chat-template mistral "$@") >"$log" 2>&1 &
    PID=$!
    i=0
    while ! grep -q "listening on" "$log" 2>/dev/null; do
        i=$((i + 1))
        if [ $i -gt 300 ] || ! kill -0 $PID 2>/dev/null; then fail "the server did not start: $(cat "$log")"; return 1; fi
        sleep 0.1
    done
    URL=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$log")
}
# chat_text [EXTRA JSON] : the answer's text to P0
chat_text() {
    curl -s -H 'Content-Type: application/json' --data-binary \
        "{\"messages\": [{\"role\": \"user\", \"content\": \"$P0\"}], \"max_tokens\": $N, \"temperature\": 0$1}" \
        "$URL/v1/chat/completions" | python3 -c 'import json,sys; print(json.load(sys.stdin)["choices"][0]["message"]["content"])'
}

answers_equal_generate_quantized() {
    start_server "$T_TMP/serve.log" --quantize q8 || return
    got=$(chat_text)
    [ "$got" = "$REF_Q" ] || fail "serve --quantize q8 answered '$got', generate --quantize q8 '$REF_Q'"
    got=$(chat_text ', "adapters": "ad"')
    [ "$got" = "$REF_QA" ] || fail "per-request adapters answered '$got', generate --quantize q8 --adapter-path '$REF_QA'"
    kill -TERM $PID; wait $PID || fail "the server exited $? on SIGTERM"
    # the adapted answers differ between the q8 and the bf16 base here, so the per-request
    # check above tells whether the adapters' model was quantized
    [ "$REF_QA" != "$REF_A" ] || skip "q8 and bf16 give the same adapted answer: the per-request check is weaker"
}

option_errors() {
    expect_exit 2 "$LORAC" serve --model "$M" --quantize q5
    contains "$ERR_TXT" "nf4, q4, q8"
    one_line "$ERR_TXT"
    expect_exit 2 "$LORAC" serve --model "$M" --quantize-embeddings
    contains "$ERR_TXT" "needs --quantize"
}

run_test answers_equal_generate_quantized
run_test option_errors
finish
