#!/usr/bin/env python3
"""generate.py — writes datasets/riscv/rows.jsonl from datasets/riscv/table.tsv.

Each instruction of the table (its assembly with placeholder operands, what it does as a
verb phrase, its operation as a formula) becomes several rows whose descriptions are
differently worded: the same facts through fixed sentence templates. Deterministic (no
randomness, the table's order); Python 3's standard library only.

    python3 datasets/riscv/generate.py          # (re)writes rows.jsonl beside this file
    python3 datasets/riscv/generate.py --check  # exit 1 when rows.jsonl is not up to date

Rows: {"description", "instructions"} (the recipe's schema) plus "extension" (the
extension the instruction needs: RV32I, RV64I, M, A, F, D, Zicsr, Zifencei, C, Zba, Zbb,
Zbs), "mnemonic" and "kind" (a category; "pseudo" for assembler pseudo-instructions).
The generator refuses a table in which one description would name two instructions.
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

EXT_NAMES = {
    "RV32I": "base integer ISA (RV32I)",
    "RV64I": "RV64I base integer ISA",
    "M": "M extension (multiply and divide)",
    "A": "A extension (atomics)",
    "F": "F extension (single-precision floating point)",
    "D": "D extension (double-precision floating point)",
    "Zicsr": "Zicsr extension (control and status registers)",
    "Zifencei": "Zifencei extension (instruction-fetch fence)",
    "C": "C extension (compressed 16-bit instructions)",
    "Zba": "Zba extension (address generation)",
    "Zbb": "Zbb extension (basic bit manipulation)",
    "Zbs": "Zbs extension (single-bit operations)",
}

# Expansions of the table's two-way rows: extension -> list of (extension, substitutions).
EXPAND = {
    "F/D": [("F", {"{s}": "s", "{w}": "w", "{P}": "single-precision", "{B}": "32"}),
            ("D", {"{s}": "d", "{w}": "d", "{P}": "double-precision", "{B}": "64"})],
    "A/A64": [("A", {"{w}": "w", "{W}": "32-bit word", "{B}": "32"}),
              ("A", {"{w}": "d", "{W}": "64-bit doubleword", "{B}": "64"})],
}


def base_form(verb):
    """The imperative of a third-person verb ('adds' -> 'add', 'copies' -> 'copy')."""
    if verb == "does":
        return "do"
    if verb.endswith("ies"):
        return verb[:-3] + "y"
    if verb.endswith(("ches", "shes", "sses", "xes")):
        return verb[:-2]
    if verb.endswith("s"):
        return verb[:-1]
    return verb


def conjugate(phrase, imperative):
    """Drops the ^ verb marks; with imperative, puts each marked verb in its base form."""
    words = []
    for w in phrase.split(" "):
        if w.startswith("^"):
            w = base_form(w[1:]) if imperative else w[1:]
        words.append(w)
    return " ".join(words)


def cap(s):
    return s[:1].upper() + s[1:]


def describe(ext, kind, does, expr):
    """The differently-worded descriptions of one instruction."""
    third = conjugate(does, False)
    imp = conjugate(does, True)
    name = EXT_NAMES[ext]
    if kind == "pseudo":
        where = "pseudo-instruction of the " + name
    else:
        where = name + " instruction"
    return [
        cap(third) + ".",
        cap(imp) + ".",
        "Which RISC-V instruction " + third + "?",
        "Give the instruction that " + third + ".",
        cap(where) + ": " + expr,
        "Using the " + name + ", " + imp + ".",
    ]


def read_table(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            cols = line.split("\t")
            if len(cols) != 6:
                sys.exit(f"{path}:{lineno}: expected 6 tab-separated columns, got {len(cols)}")
            mnemonic, ext, kind, asm, does, expr = cols
            for e, subs in EXPAND.get(ext, [(ext, {})]):
                vals = [mnemonic, asm, does, expr]
                for k, v in subs.items():
                    vals = [x.replace(k, v) for x in vals]
                if e not in EXT_NAMES:
                    sys.exit(f"{path}:{lineno}: unknown extension {e!r}")
                rows.append((lineno, e, kind, *vals))
    return rows


def generate(table):
    out, seen = [], {}
    for lineno, ext, kind, mnemonic, asm, does, expr in read_table(table):
        if "{" in mnemonic + asm + does or "^" in mnemonic + asm:
            sys.exit(f"{table}:{lineno}: an unexpanded placeholder in {mnemonic!r}")
        for d in describe(ext, kind, does, expr):
            if d in seen and seen[d] != asm:
                sys.exit(f"{table}:{lineno}: description {d!r} names both {seen[d]!r} and {asm!r}")
            if d in seen:
                continue
            seen[d] = asm
            out.append({"description": d, "instructions": asm, "extension": ext,
                        "mnemonic": mnemonic, "kind": kind})
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out)


def main():
    text = generate(os.path.join(HERE, "table.tsv"))
    dest = os.path.join(HERE, "rows.jsonl")
    if sys.argv[1:] == ["--check"]:
        old = open(dest, encoding="utf-8").read() if os.path.exists(dest) else ""
        if old != text:
            sys.exit(f"{dest} is out of date: run python3 datasets/riscv/generate.py")
        return
    if sys.argv[1:]:
        sys.exit("usage: generate.py [--check]")
    tmp = dest + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, dest)
    print(f"{dest}: {text.count(chr(10))} rows")


if __name__ == "__main__":
    main()
