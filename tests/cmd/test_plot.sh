# test_plot.sh — the loss-curve SVG of `lorac train` (default <adapter-path>/loss.svg,
# --plot FILE, --plot none) and `lorac plot`: well-formed XML (python3's xml.etree), a
# train and a validation polyline with one point per report / evaluation, x increasing,
# and a resumed run's picture covering the interrupted run's iterations too.
. tests/lib.sh
M="$T_TMP/model"
D="$T_TMP/data"
"$LORAC" init --config models/demo/config.json --tokenizer tests/fixtures/tokenizers/demo-spm/tokenizer.json \
    --out "$M" -q >/dev/null 2>&1 || echo "  FAIL: init"
mkdir -p "$D"
python3 - "$D" <<'PY'
import json, sys
for name, n in (("train", 16), ("valid", 4)):
    with open(f"{sys.argv[1]}/{name}.jsonl", "w") as f:
        for i in range(n):
            f.write(json.dumps({"text": f"<s>[INST] add {i}[/INST] add rd, rs1, rs2</s>"}) + "\n")
PY
A="--model $M --data $D --batch-size 4 --steps-per-report 4 --steps-per-eval 4 --val-batches 1 --learning-rate 1e-3 --lora-rank 2 --num-layers 1 --save-every 4"

# check_svg FILE N_TRAIN N_VAL [TITLE_PART]
check_svg() {
    python3 - "$@" <<'PY' || fail "$1: not the expected picture"
import sys
import xml.etree.ElementTree as ET
path, ntrain, nval = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
title = sys.argv[4] if len(sys.argv) > 4 else None
root = ET.parse(path).getroot()
ns = "{http://www.w3.org/2000/svg}"
assert root.tag == ns + "svg", root.tag
lines = {p.get("class"): p for p in root.iter(ns + "polyline")}
assert set(lines) == {"train", "val"}, lines.keys()
for cls, want in (("train", ntrain), ("val", nval)):
    pts = [tuple(map(float, p.split(","))) for p in lines[cls].get("points").split()]
    assert len(pts) == want, (cls, len(pts), want)
    xs = [x for x, _ in pts]
    assert all(a < b for a, b in zip(xs, xs[1:])), (cls, xs)
    w, h = float(root.get("width")), float(root.get("height"))
    assert all(0 <= x <= w and 0 <= y <= h for x, y in pts), pts
texts = " ".join((t.text or "") for t in root.iter(ns + "text"))
for word in ("iteration", "loss", "train loss", "validation loss"):
    assert word in texts, word
if title:
    assert title in texts, (title, texts)
PY
}

train_writes_loss_svg() {
    expect_exit 0 "$LORAC" train $A --adapter-path "$T_TMP/a" --iters 12
    [ -f "$T_TMP/a/loss.svg" ] || { fail "no loss.svg"; return; }
    # reports at 4, 8, 12; evaluations at 1, 4, 8, 12
    check_svg "$T_TMP/a/loss.svg" 3 4 "LoRA training of model on"
    ls "$T_TMP/a" | grep -q tmp && fail "a temporary file was left behind"
}

resumed_plot_covers_the_whole_run() {
    expect_exit 0 "$LORAC" train $A --adapter-path "$T_TMP/r" --iters 8
    check_svg "$T_TMP/r/loss.svg" 2 3
    expect_exit 0 "$LORAC" train $A --adapter-path "$T_TMP/r" --iters 12 --resume
    check_svg "$T_TMP/r/loss.svg" 3 4
    # an interrupted run that logged past its last checkpoint: the resumed records win
    printf '{"step": 16, "train_loss": 9.0}\n{"step": 1, "val_loss": 5.0}\n{"step": 4, "train_loss": 4.0, "val_loss": 4.5}\n{"step": 8, "train_loss": 3.0}\n{"step": 12, "train_loss": 2.5, "val_loss": 3.0}\n{"step": 8, "train_loss": 2.9, "val_loss": 3.5}\ngarbage\n' >"$T_TMP/m.jsonl"
    expect_exit 0 "$LORAC" plot --log "$T_TMP/m.jsonl" --out "$T_TMP/m.svg" --title "My run"
    contains "$OUT_TXT" "2 train and 3 validation points"
    check_svg "$T_TMP/m.svg" 2 3 "My run"
}

plot_option_and_command() {
    expect_exit 0 "$LORAC" train $A --adapter-path "$T_TMP/p" --iters 4 --plot "$T_TMP/custom.svg"
    [ -f "$T_TMP/custom.svg" ] && [ ! -f "$T_TMP/p/loss.svg" ] || fail "--plot FILE not honoured"
    check_svg "$T_TMP/custom.svg" 1 2
    expect_exit 0 "$LORAC" train $A --adapter-path "$T_TMP/n" --iters 4 --plot none
    [ -f "$T_TMP/n/loss.svg" ] && fail "--plot none wrote a picture"
    expect_exit 0 "$LORAC" plot "$T_TMP/n"
    check_svg "$T_TMP/n/loss.svg" 1 2
    expect_exit 2 "$LORAC" plot "$T_TMP/nowhere"
    one_line "$ERR_TXT"; contains "$ERR_TXT" "metrics.jsonl"
    printf '{"step": 1}\n' >"$T_TMP/empty.jsonl"
    expect_exit 2 "$LORAC" plot --log "$T_TMP/empty.jsonl"
    one_line "$ERR_TXT"
}

run_test train_writes_loss_svg
run_test resumed_plot_covers_the_whole_run
run_test plot_option_and_command
finish
