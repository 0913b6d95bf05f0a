"""make_quant_fixtures.py — reference quantized matrices for tests/backend/test_quant.c.

Runs with plain python3 (no numpy, no torch):
    python3 tests/reference/make_quant_fixtures.py [OUTDIR]   (default tests/fixtures/quant)
and writes OUTDIR/quant.safetensors plus OUTDIR/README.md. Where bitsandbytes (with torch)
imports, the NF4 part is made by bitsandbytes itself (functional.quantize_4bit,
compress_statistics=True) and the file's metadata says so ("nf4_path"); where mlx imports
and --mlx is given, the affine part is made by mx.quantize ("affine_path"). Otherwise both
follow the published definitions below, in float32 arithmetic emulated exactly (every
+ - * / of two float32 values is done in double, which is exact enough, then rounded to
float32 with struct):

NF4 (bitsandbytes functional.quantize_4bit / dequantize_4bit, default backend): blocks of
64 over the flattened matrix, absmax = max |x|, scaled = clamp(x * (1/absmax), -1, 1),
code = argmin |scaled - NF4[k]| (first on ties), two codes a byte, element 2i in the high
nibble. Double quantization (compress_statistics): offset = mean(absmax), the values
absmax - offset are quantized blockwise (blocks of 256) against create_dynamic_map(signed)
the same way with 256 values, giving uint8 codes and a float32 absmax per 256 blocks.
Dequantized: absmax_i = code2[q_i] * absmax2[i // 256] + offset; w = NF4[q] * absmax.
The tensors are named as bitsandbytes saves them (X.weight, X.weight.absmax,
X.weight.quant_map, X.weight.nested_absmax, X.weight.nested_quant_map,
X.weight.quant_state.bitsandbytes__nf4 holding the JSON of the other fields).

MLX affine (mx.quantize, mode "affine", as its Metal and CUDA kernels compute it, float32):
w_min = min of the group, w_max = max(0, max of the group) (the kernels start the maximum
at 0), scale = max((w_max - w_min) / (2^bits - 1), 1e-7), negated unless |w_min| > |w_max|,
edge = w_min or w_max accordingly, q0 = round(edge / scale) (half away from zero); if
q0 != 0: scale = edge / q0, bias = edge, else bias = 0; q = min(round((w - bias) / scale),
2^bits - 1) with the float32 scale; scales and biases are stored in the weight's dtype, the
codes packed into uint32 words lowest bits first. Dequantized: scale * q + bias.

Cases: nf4 (130 x 128 bf16: 260 blocks, so two nested blocks; one block of zeros),
nf4tail (6 x 80: a partial last block), q4g64 and q8g32 (bf16, with an all-zero, an
all-equal, an all-negative and an all-positive group), q4g32f (float32 source).
For each X: X.source (the matrix), X.expected (float32 dequantization), and the
quantized tensors.
"""
import json
import math
import os
import random
import struct
import sys

OUT = next((a for a in sys.argv[1:] if not a.startswith("--")), None) or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "quant")
USE_MLX = "--mlx" in sys.argv


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def bf16_bits(x):
    u = struct.unpack("<I", struct.pack("<f", x))[0]
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF


def bf16(x):
    return struct.unpack("<f", struct.pack("<I", bf16_bits(x) << 16))[0]


def round_away(x):
    return math.copysign(math.floor(abs(x) + 0.5), x)


NF4 = [f32(v) for v in [
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0]]


def linspace_f32(start, end, steps):
    start, end = f32(start), f32(end)
    if steps == 1:
        return [start]
    step = f32((end - start) / (steps - 1))
    half = steps // 2
    return [f32(start + f32(step * i)) if i < half else f32(end - f32(step * (steps - i - 1)))
            for i in range(steps)]


def dynamic_map():
    """create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8) in float32."""
    data = []
    for i in range(7):
        b = linspace_f32(0.1, 1.0, 2 ** i + 1)
        means = [f32(f32(b[k] + b[k + 1]) / 2.0) for k in range(len(b) - 1)]
        s = f32(10.0 ** (-6 + i))
        data += [f32(s * m) for m in means]
        data += [f32(-s * m) for m in means]
    data += [0.0, 1.0]
    return sorted(data)


def argmin_first(x, code):
    best, bd = 0, abs(f32(x - code[0]))
    for k in range(1, len(code)):
        d = abs(f32(x - code[k]))
        if d < bd:
            best, bd = k, d
    return best


def blockwise(vals, code, block):
    """bitsandbytes' quantize_blockwise / the first level of quantize_4bit."""
    codes, absmax = [], []
    for b0 in range(0, len(vals), block):
        blk = vals[b0:b0 + block]
        am = max(abs(v) for v in blk)
        absmax.append(am)
        inv = f32(1.0 / am) if am > 0 else math.inf
        for v in blk:
            if am == 0:
                codes.append(code.index(0.0))  # any code: absmax 0 dequantizes to 0
                continue
            s = min(1.0, max(-1.0, f32(v * inv)))
            codes.append(argmin_first(s, code))
    return codes, absmax


def nf4_reference(vals):
    codes, absmax = blockwise(vals, NF4, 64)
    offset = f32(math.fsum(absmax) / len(absmax))
    code2 = dynamic_map()
    q2, absmax2 = blockwise([f32(a - offset) for a in absmax], code2, 256)
    return codes, q2, absmax2, offset, code2, "reference (published table and layout)"


def nf4_bnb(vals, shape):
    import bitsandbytes as bnb
    import bitsandbytes.functional as F
    import torch
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    A = torch.tensor(vals, dtype=torch.float32).reshape(shape).to(torch.bfloat16).to(dev)
    packed, st = F.quantize_4bit(A, blocksize=64, compress_statistics=True, quant_type="nf4")
    p = packed.reshape(-1).cpu().tolist()
    codes = []
    for byte in p:
        codes += [byte >> 4, byte & 0xF]
    codes = codes[:len(vals)]
    return (codes, st.absmax.cpu().tolist(), st.state2.absmax.cpu().tolist(), float(st.offset.item()),
            st.state2.code.cpu().tolist(), "bitsandbytes %s (%s)" % (bnb.__version__, dev)), [
        f32(x) for x in st.code.cpu().tolist()]


def nf4_expected(codes, q2, absmax2, offset, code2, code):
    out = []
    for i, c in enumerate(codes):
        b = i // 64
        am = f32(f32(code2[q2[b]] * absmax2[b // 256]) + offset)
        out.append(f32(code[c] * am))
    return out


def affine_reference(vals, rows, cols, bits, group, store):
    n_bins, eps = float((1 << bits) - 1), f32(1e-7)
    per = 32 // bits
    words, scales, biases, expected = [], [], [], []
    for r in range(rows):
        row = vals[r * cols:(r + 1) * cols]
        codes = []
        for g0 in range(0, cols, group):
            x = row[g0:g0 + group]
            w_min, w_max = min(x), max(0.0, max(x))
            scale = f32(f32(w_max - w_min) / n_bins)
            scale = max(scale, eps)
            side = abs(w_min) > abs(w_max)
            scale = scale if side else -scale
            edge = w_min if side else w_max
            q0 = round_away(f32(edge / scale))
            bias = 0.0
            if q0 != 0:
                scale, bias = f32(edge / q0), edge
            s_st, b_st = store(scale), store(bias)
            scales.append(s_st)
            biases.append(b_st)
            for v in x:
                q = round_away(f32(f32(v - bias) / scale))
                q = int(min(max(q, 0.0), n_bins))
                codes.append(q)
                expected.append(f32(f32(s_st * q) + b_st))
        for k in range(0, cols, per):
            word = 0
            for j in range(per):
                word |= codes[k + j] << (bits * j)
            words.append(word)
    return words, scales, biases, expected


def affine_mlx(vals, rows, cols, bits, group, f32src):
    import mlx.core as mx
    w = mx.array(vals, dtype=mx.float32).reshape(rows, cols)
    if not f32src:
        w = w.astype(mx.bfloat16)
    q, s, b = mx.quantize(w, group_size=group, bits=bits)
    deq = (mx.dequantize(q, s.astype(mx.float32), b.astype(mx.float32), group_size=group, bits=bits))
    return (q.reshape(-1).tolist(), s.astype(mx.float32).reshape(-1).tolist(),
            b.astype(mx.float32).reshape(-1).tolist(), deq.reshape(-1).tolist())


# ---------------------------------------------------------------- safetensors writer
tensors = {}


def add(name, dtype, shape, payload):
    tensors[name] = (dtype, list(shape), payload)


def pack_f32(v):
    return struct.pack("<%df" % len(v), *v)


def pack_bf16(v):
    return struct.pack("<%dH" % len(v), *[bf16_bits(x) for x in v])


def write(path, meta):
    order = sorted(tensors)
    header, off, blobs = {}, 0, []
    for n in order:
        dt, shape, data = tensors[n]
        header[n] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(data)]}
        off += len(data)
        blobs.append(data)
    header["__metadata__"] = meta
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    os.replace(path + ".tmp", path)


def main():
    rng = random.Random(20240611)
    meta = {}

    def nf4_case(name, rows, cols, zero_block):
        vals = [bf16(rng.gauss(0.0, 0.02)) for _ in range(rows * cols)]
        if zero_block:
            for i in range(64 * 3, 64 * 4):
                vals[i] = 0.0
        code = NF4
        try:
            import bitsandbytes  # noqa: F401
            (codes, q2, absmax2, offset, code2, path), code = nf4_bnb(vals, (rows, cols))
        except ImportError:
            codes, q2, absmax2, offset, code2, path = nf4_reference(vals)
        meta[name + "_path"] = path
        packed = bytearray()
        c = codes + [0] * (len(codes) % 2)
        for i in range(0, len(c), 2):
            packed.append((c[i] << 4) | c[i + 1])
        w = name + ".weight"
        add(name + ".source", "BF16", [rows, cols], pack_bf16(vals))
        add(w, "U8", [len(packed), 1], bytes(packed))
        add(w + ".absmax", "U8", [len(q2)], bytes(q2))
        add(w + ".quant_map", "F32", [16], pack_f32(code))
        add(w + ".nested_absmax", "F32", [len(absmax2)], pack_f32(absmax2))
        add(w + ".nested_quant_map", "F32", [256], pack_f32(code2))
        qs = json.dumps({"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [rows, cols],
                         "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": offset})
        add(w + ".quant_state.bitsandbytes__nf4", "U8", [len(qs)], qs.encode())
        add(name + ".expected", "F32", [rows, cols], pack_f32(nf4_expected(codes, q2, absmax2, offset, code2, code)))

    nf4_case("nf4", 130, 128, True)
    nf4_case("nf4tail", 6, 80, False)

    def affine_case(name, rows, cols, bits, group, f32src):
        vals = [rng.gauss(0.0, 0.02) for _ in range(rows * cols)]
        if not f32src:
            vals = [bf16(v) for v in vals]
            for j in range(group):  # row 1: zero, equal, all-negative, all-positive groups
                vals[cols + j] = 0.0
                vals[cols + group + j] = bf16(0.0123)
                vals[cols + 2 * group + j] = bf16(-abs(vals[cols + 2 * group + j]) - 0.001)
                vals[cols + 3 * group + j] = bf16(abs(vals[cols + 3 * group + j]) + 0.001)
        else:
            vals = [f32(v) for v in vals]
        store = f32 if f32src else bf16
        if USE_MLX:
            words, scales, biases, expected = affine_mlx(vals, rows, cols, bits, group, f32src)
            import mlx.core as mx
            meta[name + "_path"] = "mlx %s (cpu)" % mx.__version__
        else:
            words, scales, biases, expected = affine_reference(vals, rows, cols, bits, group, store)
            meta[name + "_path"] = "reference (MLX's GPU-kernel definition)"
        pk = pack_f32 if f32src else pack_bf16
        dt = "F32" if f32src else "BF16"
        add(name + ".source", dt, [rows, cols], pk(vals))
        add(name + ".weight", "U32", [rows, cols * bits // 32], struct.pack("<%dI" % len(words), *words))
        add(name + ".scales", dt, [rows, cols // group], pk(scales))
        add(name + ".biases", dt, [rows, cols // group], pk(biases))
        add(name + ".expected", "F32", [rows, cols], pack_f32(expected))
        meta[name + "_bits"] = str(bits)
        meta[name + "_group"] = str(group)

    affine_case("q4g64", 16, 256, 4, 64, False)
    affine_case("q8g32", 16, 128, 8, 32, False)
    affine_case("q4g32f", 8, 128, 4, 32, True)
    os.makedirs(OUT, exist_ok=True)
    write(os.path.join(OUT, "quant.safetensors"), meta)
    print("wrote", os.path.join(OUT, "quant.safetensors"), json.dumps(meta, indent=1))


if __name__ == "__main__":
    main()
