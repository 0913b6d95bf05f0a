# test_quantize.sh — quantized base weights end to end on the demo-shaped random model:
# `lorac quantize` writes nf4 / q4 / q8 folders (MLX's layout and config keys, bitsandbytes'
# tensor names) that load back with the same losses as --quantize at load time; training,
# generation and eval run over them; bad input is one error line and leaves nothing behind.
# With a GPU: training over an NF4 / q4 base on the card reports the CPU's losses within
# 0.02 (bf16 products on the card; float32 on the CPU); SKIPs without CUDA or a GPU.
. tests/lib.sh
M="$T_TMP/model"
D="$T_TMP/data"
"$LORAC" init --config models/demo/config.json --tokenizer tests/fixtures/tokenizers/demo-spm/tokenizer.json \
    --out "$M" -q >/dev/null 2>&1 || { echo "  FAIL: init"; }
mkdir -p "$D"
python3 - "$D" <<'PY'
import json, random, sys
ops = [("Adds rs1 and rs2 into rd", "add rd, rs1, rs2"), ("Subtracts rs2 from rs1 into rd", "sub rd, rs1, rs2")]
r = random.Random(1)
for name, n in (("train", 24), ("valid", 8), ("test", 8)):
    with open(f"{sys.argv[1]}/{name}.jsonl", "w") as f:
        for _ in range(n):
            d, a = r.choice(ops)
            f.write(json.dumps({"text": f"<s>[INST] {d}[/INST] {a}</s>"}) + "\n")
PY

written_equals_load_time() {
    for f in nf4 q4 q8; do
        expect_exit 0 "$LORAC" quantize --model "$M" --out "$T_TMP/m-$f" --format $f
        [ -f "$T_TMP/m-$f/tokenizer.json" ] || fail "$f: tokenizer not copied"
        expect_exit 0 "$LORAC" eval --model "$T_TMP/m-$f" --data "$D" --json
        a=$OUT_TXT
        expect_exit 0 "$LORAC" eval --model "$M" --data "$D" --json --quantize $f
        [ "$a" = "$OUT_TXT" ] || fail "$f: written folder $a vs load-time $OUT_TXT"
    done
    ls "$T_TMP" | grep -q partial && fail "a partial folder was left"
    python3 - "$T_TMP" <<'PY' || fail "layout"
import json, struct, sys
t = sys.argv[1]
def header(p):
    b = open(p, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    return json.loads(b[8:8 + n])
h = header(f"{t}/m-q4/model.safetensors")
w = h["model.layers.0.mlp.down_proj.weight"]
assert w["dtype"] == "U32" and w["shape"] == [256, 768 * 4 // 32], w
assert h["model.layers.0.mlp.down_proj.scales"]["shape"] == [256, 12]
assert h["model.layers.0.mlp.down_proj.biases"]["dtype"] == "BF16"
assert h["model.embed_tokens.weight"]["dtype"] == "BF16"
c = json.load(open(f"{t}/m-q4/config.json"))
assert c["quantization"]["bits"] == 4 and c["quantization"]["group_size"] == 64, c["quantization"]
assert c["quantization"]["model.embed_tokens"] is False
h = header(f"{t}/m-nf4/model.safetensors")
base = "model.layers.1.self_attn.q_proj.weight"
assert h[base]["dtype"] == "U8" and h[base]["shape"] == [256 * 256 // 2, 1], h[base]
for s in (".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map", ".quant_state.bitsandbytes__nf4"):
    assert base + s in h, s
c = json.load(open(f"{t}/m-nf4/config.json"))
q = c["quantization_config"]
assert q["quant_method"] == "bitsandbytes" and q["bnb_4bit_quant_type"] == "nf4" and q["bnb_4bit_use_double_quant"]
PY
}

runs_over_quantized() {
    expect_exit 0 "$LORAC" train --model "$T_TMP/m-nf4" --data "$D" --adapter-path "$T_TMP/a" --iters 4 \
        --batch-size 4 --steps-per-report 2 --steps-per-eval 4 --num-layers 2 --lora-rank 4 --save-every 100
    contains "$OUT_TXT" "(nf4)"
    [ -f "$T_TMP/a/adapters.safetensors" ] || fail "no adapters"
    expect_exit 0 "$LORAC" eval --model "$T_TMP/m-nf4" --adapter-path "$T_TMP/a" --data "$D"
    expect_exit 0 "$LORAC" generate --model "$T_TMP/m-q4" --max-tokens 4 --prompt "add" --seed 1
    expect_exit 0 "$LORAC" train --model "$M" --data "$D" --adapter-path "$T_TMP/b" --iters 2 \
        --batch-size 2 --num-layers 1 --lora-rank 4 --quantize q8 --quantize-embeddings --save-every 100
    contains "$OUT_TXT" "q8 (group 64)"
    # the plan counts the weights as held: quantized at load into owned memory
    contains "$OUT_TXT" "GiB quantized at load into memory"
}

errors_are_one_line() {
    expect_exit 2 "$LORAC" eval --model "$M" --data "$D" --quantize q3
    contains "$ERR_TXT" "nf4, q4, q8"
    one_line "$ERR_TXT"
    expect_exit 2 "$LORAC" eval --model "$T_TMP/m-q4" --data "$D" --quantize nf4
    contains "$ERR_TXT" "already quantized"
    one_line "$ERR_TXT"
    expect_exit 2 "$LORAC" quantize --model "$M" --out "$T_TMP/m-q4"
    contains "$ERR_TXT" "already exists"
    expect_exit 2 "$LORAC" quantize --model "$M" --out "$T_TMP/x" --format q5
    one_line "$ERR_TXT"
    # a projection whose companion is missing: located error
    cp -r "$T_TMP/m-q4" "$T_TMP/broken"
    python3 - "$T_TMP/broken/model.safetensors" <<'PY'
import json, struct, sys
p = sys.argv[1]
b = open(p, "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
h["model.layers.0.mlp.up_proj.biaseX"] = h.pop("model.layers.0.mlp.up_proj.biases")
s = json.dumps(h).encode()
s += b" " * ((8 - len(s) % 8) % 8)
open(p, "wb").write(struct.pack("<Q", len(s)) + s + b[8 + n:])
PY
    expect_exit 2 "$LORAC" eval --model "$T_TMP/broken" --data "$D"
    contains "$ERR_TXT" "model.layers.0.mlp.up_proj"
    one_line "$ERR_TXT"
}

# The numbers after "Train loss" / "Val loss" in a training log, one a line.
losses() { printf '%s\n' "$1" | grep -o '[A-Za-z]* loss [0-9.]*' | awk '{print $3}'; }

cuda_matches_cpu() {
    if ! "$LORAC" --version | grep -q cuda; then skip "this build has no CUDA backend"; return; fi
    for f in nf4 q4; do
        set -- --data "$D" --iters 8 --batch-size 4 --steps-per-report 2 --steps-per-eval 4 \
            --num-layers 2 --lora-rank 8 --learning-rate 2e-3 --save-every 100 --quantize $f
        "$LORAC" train --model "$M" --adapter-path "$T_TMP/g-$f" --device cuda "$@" >"$T_TMP/g.out" 2>&1
        rc=$?
        if [ $rc -ne 0 ] && grep -qi "no usable GPU" "$T_TMP/g.out"; then
            skip "no GPU: $(tail -n 1 "$T_TMP/g.out")"
            return
        fi
        [ $rc -eq 0 ] || { fail "$f on cuda: $(tail -n 2 "$T_TMP/g.out")"; continue; }
        expect_exit 0 "$LORAC" train --model "$M" --adapter-path "$T_TMP/c-$f" --device cpu "$@"
        losses "$(cat "$T_TMP/g.out")" >"$T_TMP/g.loss"
        losses "$OUT_TXT" >"$T_TMP/c.loss"
        echo "  $f cuda: $(tr '\n' ' ' <"$T_TMP/g.loss")/ cpu: $(tr '\n' ' ' <"$T_TMP/c.loss")"
        [ "$(wc -l <"$T_TMP/g.loss")" -ge 4 ] || fail "$f: too few losses on cuda"
        paste "$T_TMP/g.loss" "$T_TMP/c.loss" | awk -v f=$f '{d = $1 - $2; if (d < 0) d = -d;
            if (d > 0.02 || $2 == "") {print "  " f ": loss " $1 " vs cpu " $2; bad = 1}} END {exit bad}' ||
            fail "$f: cuda losses differ from cpu's by more than 0.02"
    done
}

run_test written_equals_load_time
run_test runs_over_quantized
run_test errors_are_one_line
run_test cuda_matches_cpu
finish
