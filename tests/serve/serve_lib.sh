# serve_lib.sh — sourced by the serve tests (after tests/lib.sh): the tiny random-weight
# demo-shaped model they serve ($M) and adapters with large random weights on q and v of
# every layer (mlx-lm layout, $T_TMP/ad), so that adapters visibly change the answers.
# One thread each: the model is tiny, and on a busy machine (CI, parallel jobs) OpenMP's
# spinning threads make it hundreds of times slower; the answers do not depend on it.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
M="$T_TMP/model"
N=12 # max_tokens of the compared answers
"$LORAC" init --config models/demo/config.json --tokenizer tests/fixtures/tokenizers/demo-spm/tokenizer.json \
    --out "$M" -q >/dev/null 2>&1 || echo "  FAIL: init"
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

# start_server LOG ARGS... : starts lorac serve (working folder $T_TMP) on a free port;
# sets PID and URL. Waits for the "listening" line.
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
