#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_spm: small hand-made SentencePiece BPE models.

Usage: python3 fuzz/make_spm_seeds.py   (from the repository root)
Field numbers are those of sentencepiece_model.proto (ModelProto.pieces = 1,
trainer_spec = 2, normalizer_spec = 3; SentencePiece piece = 1, score = 2, type = 3;
TrainerSpec model_type = 3, byte_fallback = 35, pad_id = 43; NormalizerSpec name = 1,
add_dummy_prefix = 3, remove_extra_whitespaces = 4).
"""
import os
import struct

SP = "\u2581"


def varint(v):
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def key(f, w):
    return varint(f << 3 | w)


def ld(f, b):
    if isinstance(b, str):
        b = b.encode()
    return key(f, 2) + varint(len(b)) + b


def piece(p, score, typ=1):
    m = ld(1, p) + key(2, 5) + struct.pack("<f", score)
    if typ != 1:
        m += key(3, 0) + varint(typ)
    return ld(1, m)


def model(pieces, byte_fallback, dummy=1, remove_ws=0, suffix=0):
    out = piece("<unk>", 0, 2) + piece("<s>", 0, 3) + piece("</s>", 0, 3)
    if byte_fallback:
        out += b"".join(piece("<0x%02X>" % b, 0, 6) for b in range(256))
    out += b"".join(piece(*p) for p in pieces)
    t = key(3, 0) + varint(2) + key(43, 0) + varint(-1)
    if byte_fallback:
        t += key(35, 0) + varint(1)
    if suffix:
        t += key(24, 0) + varint(1)
    n = ld(1, "identity") + key(3, 0) + varint(dummy) + key(4, 0) + varint(remove_ws)
    return out + ld(2, t) + ld(3, n)


words = [(SP, -10), ("a", -10), ("b", -10), ("c", -10), ("ab", -1), ("bc", -0.5),
         ("abc", -2), (SP + "a", -4), ("H", -5), ("e", -5), ("l", -5), ("o", -5),
         ("He", -3), ("ll", -3), ("llo", -2), (SP + "He", -1)]
seeds = {
    "bytes.model": model(words + [("xy", 5, 5), ("<sep>", 0, 4)], True),
    "unk.model": model(words, False),
    "strip.model": model(words + [(SP + SP, -1e9)], True, dummy=1, remove_ws=1),
    "suffix.model": model(words + [("a" + SP, -0.5)], False, dummy=1, suffix=1),
}
d = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "fuzz_spm")
os.makedirs(d, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)
