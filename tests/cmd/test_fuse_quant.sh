# test_fuse_quant.sh — `lorac fuse` onto a quantized base (issue 8): over `lorac quantize`d
# nf4 / q4 / q8 folders of the demo-shaped random model, and over --quantize at load.
# Checked: the fused f32 model's loss equals the quantized base + adapters' (fp32
# products); the default output is bf16 with the base's tensor names and shapes, no
# companion tensors and no quantization keys in config.json; one fused tensor equals
# dequant(W) + scale · (A B)^T computed here in plain Python from the published formulas
# (MLX affine: scale * q + bias; bitsandbytes NF4: code[q] * (code2[j] * absmax2 + offset));
# asking for a quantized output is one error line that says why.
. tests/lib.sh
M="$T_TMP/model"
D="$T_TMP/data"
"$LORAC" init --config models/demo/config.json --tokenizer tests/fixtures/tokenizers/demo-spm/tokenizer.json \
    --out "$M" -q >/dev/null 2>&1 || echo "  FAIL: init"
mkdir -p "$D"
for s in train valid test; do
    for i in 1 2 3 4 5 6; do
        echo '{"text": "<s>[INST] Adds rs1 and rs2 into rd[/INST] add rd, rs1, rs2</s>"}'
        echo '{"text": "<s>[INST] Subtracts rs2 from rs1 into rd[/INST] sub rd, rs1, rs2</s>"}'
    done >"$D/$s.jsonl"
done
export LORAC_MATMUL=fp32 # exact float32 products: the two paths differ only in summation order

loss_of() { printf '%s' "$1" | sed 's/.*"loss": *\([0-9.e+-]*\).*/\1/'; }
# close A B TOL: |A - B| <= TOL * |B|
close() { python3 -c "import sys; a,b,t=map(float,sys.argv[1:]); sys.exit(0 if abs(a-b)<=t*abs(b) else 1)" "$1" "$2" "$3"; }

for f in nf4 q4 q8; do
    "$LORAC" quantize --model "$M" --out "$T_TMP/m-$f" --format $f >/dev/null 2>&1 || echo "  FAIL: quantize $f"
    "$LORAC" train --model "$T_TMP/m-$f" --data "$D" --adapter-path "$T_TMP/a-$f" --iters 3 --batch-size 4 \
        --num-layers 2 --lora-rank 4 --learning-rate 1e-2 --save-every 100 --steps-per-eval 100 \
        >/dev/null 2>&1 || echo "  FAIL: train $f"
done

fused_equals_base_plus_adapters() {
    for f in nf4 q4 q8; do
        expect_exit 0 "$LORAC" fuse --model "$T_TMP/m-$f" --adapter-path "$T_TMP/a-$f" --save-path "$T_TMP/f32-$f" --dtype f32
        contains "$OUT_TXT" "Dequantizing the"
        expect_exit 0 "$LORAC" eval --model "$T_TMP/f32-$f" --data "$D" --json
        fused=$(loss_of "$OUT_TXT")
        expect_exit 0 "$LORAC" eval --model "$T_TMP/m-$f" --adapter-path "$T_TMP/a-$f" --data "$D" --json
        ref=$(loss_of "$OUT_TXT")
        expect_exit 0 "$LORAC" eval --model "$T_TMP/m-$f" --data "$D" --json
        bare=$(loss_of "$OUT_TXT")
        close "$fused" "$ref" 1e-5 || fail "$f: fused f32 loss $fused vs base + adapters $ref"
        close "$bare" "$ref" 1e-3 && fail "$f: the adapters change nothing ($bare vs $ref): the test proves nothing"
        # the default: bf16 (one rounding of every weight)
        expect_exit 0 "$LORAC" fuse --model "$T_TMP/m-$f" --adapter-path "$T_TMP/a-$f" --save-path "$T_TMP/bf-$f" -q
        expect_exit 0 "$LORAC" eval --model "$T_TMP/bf-$f" --data "$D" --json
        close "$(loss_of "$OUT_TXT")" "$ref" 2e-3 || fail "$f: fused bf16 loss $(loss_of "$OUT_TXT") vs $ref"
    done
}

output_is_a_plain_model() {
    for f in nf4 q4 q8; do
        python3 - "$M" "$T_TMP/bf-$f" "$T_TMP/m-$f" <<'PY' || fail "$f: not a plain bf16 model"
import json, struct, sys
def header(p):
    b = open(p + "/model.safetensors", "rb").read(8 << 20)
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n]); h.pop("__metadata__", None)
    return h
base, out = header(sys.argv[1]), header(sys.argv[2])
assert sorted(base) == sorted(out), set(base) ^ set(out)
for k, t in out.items():
    assert t["dtype"] == "BF16" and t["shape"] == base[k]["shape"], (k, t)
c = json.load(open(sys.argv[2] + "/config.json"))
assert "quantization" not in c and "quantization_config" not in c, c
assert c["torch_dtype"] == "bfloat16", c
q = json.load(open(sys.argv[3] + "/config.json"))
for k in ("quantization", "quantization_config"):
    q.pop(k, None)
q["torch_dtype"] = "bfloat16"
assert q == c, (q, c)
PY
    done
}

load_time_equals_written() {
    for f in nf4 q8; do
        expect_exit 0 "$LORAC" fuse --model "$M" --quantize $f --adapter-path "$T_TMP/a-$f" --save-path "$T_TMP/lt-$f" --dtype f32 -q
        cmp -s "$T_TMP/lt-$f/model.safetensors" "$T_TMP/f32-$f/model.safetensors" ||
            fail "$f: --quantize at load fuses differently from the written folder"
    done
}

# One adapted tensor of the f32 output against dequantization + delta done here in Python.
tensor_matches_formula() {
    for f in nf4 q4 q8; do
        python3 - "$T_TMP/m-$f" "$T_TMP/a-$f" "$T_TMP/f32-$f" $f <<'PY' || fail "$f: fused tensor != dequant + delta"
import json, struct, sys
qdir, adir, fdir, fmt = sys.argv[1:5]
def load(p):
    b = open(p, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n]); h.pop("__metadata__", None)
    return h, b[8 + n:]
def vals(h, data, name):
    t = h[name]; s, e = t["data_offsets"]; raw = data[s:e]; dt = t["dtype"]
    if dt == "F32": return list(struct.unpack("<%df" % ((e - s) // 4), raw))
    if dt == "BF16": return [struct.unpack("<f", b"\0\0" + raw[i:i + 2])[0] for i in range(0, len(raw), 2)]
    if dt == "U8": return list(raw)
    if dt == "U32": return list(struct.unpack("<%dI" % ((e - s) // 4), raw))
    raise SystemExit("dtype " + dt)
name = "model.layers.3.self_attn.q_proj"
qh, qd = load(qdir + "/model.safetensors")
rows, cols = 256, 256
if fmt == "nf4":
    codes = vals(qh, qd, name + ".weight")
    qmap = vals(qh, qd, name + ".weight.quant_map")
    qabs = vals(qh, qd, name + ".weight.absmax")
    a2 = vals(qh, qd, name + ".weight.nested_absmax")
    map2 = vals(qh, qd, name + ".weight.nested_quant_map")
    st = json.loads(bytes(vals(qh, qd, name + ".weight.quant_state.bitsandbytes__nf4")))
    off, bs = st["nested_offset"], st["blocksize"]
    absmax = [struct.unpack("<f", struct.pack("<f", map2[j] * a2[i // 256]))[0] + off for i, j in enumerate(qabs)]
    W = []
    for i in range(rows * cols):
        byte = codes[i // 2]
        q = byte >> 4 if i % 2 == 0 else byte & 15
        W.append(qmap[q] * struct.unpack("<f", struct.pack("<f", absmax[i // bs]))[0])
else:
    bits = 4 if fmt == "q4" else 8
    words = vals(qh, qd, name + ".weight")
    sc, bi = vals(qh, qd, name + ".scales"), vals(qh, qd, name + ".biases")
    per = 32 // bits; g = 64; W = []
    for r in range(rows):
        for c in range(cols):
            w = words[(r * cols + c) // per]
            q = (w >> (bits * (c % per))) & ((1 << bits) - 1)
            k = r * (cols // g) + c // g
            W.append(sc[k] * q + bi[k])
ah, ad = load(adir + "/adapters.safetensors")
A = vals(ah, ad, name + ".lora_a"); B = vals(ah, ad, name + ".lora_b")
r = ah[name + ".lora_a"]["shape"][1]
scale = json.load(open(adir + "/adapter_config.json"))["lora_parameters"]["scale"]
fh, fd = load(fdir + "/model.safetensors")
got = vals(fh, fd, name + ".weight")
worst = 0.0; moved = 0.0
for o in range(rows):
    for i in range(cols):
        d = sum(A[i * r + k] * B[k * rows + o] for k in range(r))
        want = W[o * cols + i] + scale * d
        worst = max(worst, abs(got[o * cols + i] - want))
        moved = max(moved, abs(scale * d))
assert moved > 1e-4, "the adapter is zero: nothing is tested"
assert worst <= 1e-6, "max |fused - (dequant + delta)| = %g" % worst
PY
    done
}

errors_are_one_line() {
    expect_exit 2 "$LORAC" fuse --model "$T_TMP/m-q4" --adapter-path "$T_TMP/a-q4" --save-path "$T_TMP/x" --dtype q4
    contains "$ERR_TXT" "degrades quality"
    one_line "$ERR_TXT"
    expect_exit 2 "$LORAC" fuse --model "$T_TMP/m-q4" --adapter-path "$T_TMP/a-q4" --save-path "$T_TMP/x" --quantize nf4
    contains "$ERR_TXT" "already quantized"
    one_line "$ERR_TXT"
    expect_exit 2 "$LORAC" fuse --model "$M" --adapter-path "$T_TMP/a-q4" --save-path "$T_TMP/x" --quantize-embeddings
    contains "$ERR_TXT" "needs --quantize"
    [ -e "$T_TMP/x" ] && fail "a failed fuse left $T_TMP/x"
    true
}

run_test fused_equals_base_plus_adapters
run_test output_is_a_plain_model
run_test load_time_equals_written
run_test tensor_matches_formula
run_test errors_are_one_line
finish
