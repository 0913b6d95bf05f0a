# test_riscv_assembles.sh — every target of the project's RISC-V data set
# (datasets/riscv/rows.jsonl) assembles with GNU as for riscv64, and the file is what
# datasets/riscv/generate.py makes from its table. Placeholder operands get concrete
# ones of the class the instruction needs (integer or floating-point registers, chosen by
# the rules of the ISA, not by the generator), small immediates that every form accepts,
# a label defined in the file and a CSR name.
. tests/lib.sh
ROWS=datasets/riscv/rows.jsonl
AS=${RISCV_AS:-riscv64-linux-gnu-as}
MARCH=rv64gc_zba_zbb_zbs_zicsr_zifencei

rows_up_to_date() {
    python3 datasets/riscv/generate.py --check 2>"$T_TMP/err" || fail "$(cat "$T_TMP/err")"
}

rows_well_formed() {
    python3 - "$ROWS" <<'PY' || fail "rows.jsonl is malformed (see above)"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8")]
keys = {"description", "instructions", "extension", "mnemonic", "kind"}
exts = {"RV32I", "RV64I", "M", "A", "F", "D", "Zicsr", "Zifencei", "C", "Zba", "Zbb", "Zbs"}
bad = [r for r in rows if set(r) != keys or r["extension"] not in exts
       or not r["instructions"].startswith(r["mnemonic"])]
assert not bad, bad[:3]
assert len(rows) >= 800, len(rows)
assert exts == {r["extension"] for r in rows}, exts - {r["extension"] for r in rows}
per = {}
for r in rows:
    per.setdefault(r["instructions"], set()).add(r["description"])
few = [k for k, v in per.items() if len(v) < 3]
assert not few, ("fewer than 3 wordings", few[:5])
by_desc = {}
for r in rows:
    assert by_desc.setdefault(r["description"], r["instructions"]) == r["instructions"], r
PY
}

all_rows_assemble() {
    if ! command -v "$AS" >/dev/null 2>&1; then
        skip "$AS not installed (Debian: binutils-riscv64-linux-gnu, see scripts/deps.sh)"
        return
    fi
    # One source line per distinct target, a comment naming the row; the assembler's
    # errors name the source line, which maps back to the row.
    python3 - "$ROWS" "$T_TMP/all.s" "$T_TMP/map" <<'PY'
import json, re, sys
rows = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8")]

def float_classes(m):
    """Which of rd, rs1, rs2, rs3 are floating-point registers for mnemonic m."""
    if not (m.startswith("f") or m.startswith("c.f")) or m in ("fence", "fence.i"):
        return set()
    if m in ("frcsr", "fscsr", "frrm", "fsrm", "frflags", "fsflags"):
        return set()
    if m.startswith(("flw", "fld", "c.fld")):
        return {"rd"}
    if m.startswith(("fsw", "fsd", "c.fsd")):
        return {"rs2"}
    p = m.split(".")
    if p[0] == "fmv":
        if p[1:] == ["x", "w"] or p[1:] == ["x", "d"]:
            return {"rs1"}
        if p[1:] == ["w", "x"] or p[1:] == ["d", "x"]:
            return {"rd"}
    if p[0] == "fcvt":
        ints = {"w", "wu", "l", "lu"}
        return ({"rs1"} if p[1] in ints else {"rd"}) if (p[1] in ints) != (p[2] in ints) else {"rd", "rs1"}
    if p[0] in ("feq", "flt", "fle", "fclass"):
        return {"rs1", "rs2"}
    return {"rd", "rs1", "rs2", "rs3"}

XREG = {"rd": "a0", "rs1": "a1", "rs2": "a2", "rs3": "a3", "rs": "a1"}  # x10..x13: valid in C's 3-bit fields
FREG = {"rd": "fa0", "rs1": "fa1", "rs2": "fa2", "rs3": "fa3", "rs": "fa1"}
OTHER = {"imm": "16", "offset": "16", "label": "target", "csr": "mscratch"}
lines, seen = ["\t.text", "target:"], {}
for i, r in enumerate(rows, 1):
    asm = r["instructions"]
    if asm in seen:
        continue
    fl = float_classes(r["mnemonic"])
    def sub(mo):
        w = mo.group(0)
        if w in XREG:
            return FREG[w] if w in fl else XREG[w]
        return OTHER.get(w, w)
    ops = asm.split(None, 1)
    conc = ops[0] + ("\t" + re.sub(r"\b[a-z][a-z0-9]*\b", sub, ops[1]) if len(ops) > 1 else "")
    seen[asm] = len(lines) + 1
    lines.append(conc + "\t# row %d: %s" % (i, asm))
open(sys.argv[2], "w").write("\n".join(lines) + "\n")
PY
    if ! "$AS" -march=$MARCH -o "$T_TMP/all.o" "$T_TMP/all.s" 2>"$T_TMP/err"; then
        n=$(grep -c 'Error' "$T_TMP/err")
        while IFS= read -r e; do
            ln=$(printf '%s\n' "$e" | sed -n 's/^[^:]*:\([0-9]*\): Error.*/\1/p')
            [ -n "$ln" ] && fail "does not assemble: $(sed -n "${ln}p" "$T_TMP/all.s") — ${e#*Error: }"
        done <"$T_TMP/err"
        [ "$n" -gt 0 ] || fail "$AS failed: $(cat "$T_TMP/err")"
    fi
    # the placeholders must have been replaced: no 'rd'/'rs1'/'imm' symbol left behind
    riscv64-linux-gnu-nm "$T_TMP/all.o" 2>/dev/null | grep -Ev ' (t|T) target$' | grep -q . &&
        fail "undefined symbols left: $(riscv64-linux-gnu-nm "$T_TMP/all.o" | head -3)"
    return 0
}

run_test rows_up_to_date
run_test rows_well_formed
run_test all_rows_assemble
finish
