#!/bin/bash
# cuda_train.sh — lorac's CUDA backend against PyTorch + transformers + PEFT on the same
# card, the same Mistral-7B-v0.3-shaped model (random bf16 weights) and the same work,
# in one run; prints one table (tokens/s or s/step, peak GPU memory, ratio, MFU).
#
# Work (random token ids, LoRA rank 16 on the seven projections, AdamW, fp32 adapters):
#   recipe    last 16 blocks, batch 2 × 68 tokens (the RISC-V rows' length)
#   8x512     all 32 blocks, batch 8 × 512, no recompute
#   8x512-ck  the same with gradient checkpointing
#   8x512-24g lorac with --memory-limit 24 (what the backward keeps chosen to fit 24 GiB:
#             gate/up recomputed, then blocks checkpointed), against PEFT's checkpointed
#             run (its only setting under 24 GiB)
#   generate  batch 1, greedy, 64 new tokens after a 16-token prompt: lorac with the recipe
#             row's trained adapters (16 blocks) in place, PEFT without adapters; then both
#             without (lorac: build/bench_decode --rank 0, the median of 3 runs); then lorac
#             with adapters of the recipe's shape merged into the weights in memory
#             (bench_decode --fuse, as `lorac generate --fuse`), PEFT without
#   recipe-nf4, 8x512-nf4  the recipe and 8x512 rows over an NF4 base (--quantize nf4:
#             bitsandbytes' layout, nested absmax, quantized at load time), against lorac's
#             own bf16 rows; the PyTorch + PEFT + bitsandbytes column is filled only where
#             python3 imports bitsandbytes (it is run by no row yet: "not installed" otherwise)
# Peak memory: the whole process on the card (nvidia-smi's memory.used, sampled every
# 100 ms, minus its value before the run), for both programs alike.
# MFU: useful matrix FLOPs (forward 2·P per token over every block and the lm_head, the
# input-gradient pass 2·P over the adapted blocks and the lm_head, causal attention
# 2·T·H·D per block forward and twice that backward; recompute not counted) over the
# dense bf16 peak of the H100 SXM / H200 datasheet, 989 TFLOP/s.
#
# Usage (on the GPU machine, from the repository root):
#   bench/cuda_train.sh [WORK_DIR]        default /tmp/lorac-cuda-bench; the model is kept
#   LORAC_INIT=1 bench/cuda_train.sh      make the model with `lorac init` (~5 min, one
#                                         thread) instead of PyTorch on the card (seconds)
#   STEPS=20 bench/cuda_train.sh          timed steps per training row (default 10)
#   COMMIT=abc1234 bench/cuda_train.sh   the commit to print when the tree is a copy without git
#   ROWS="lorac-recipe lorac-8x512" ...    run only these runs (default: all; names as below)
#   PROFILE=1 bench/cuda_train.sh         also runs the recipe (and decoding) once more with
#                                         LORAC_CUDA_PROFILE=1: the per-op table lands in
#                                         WORK_DIR/runs/lorac-recipe-prof.err
# Needs: nvcc (make builds build/lorac and build/bench_train with the CUDA backend) unless
# LORAC/BENCH point at built binaries; python3 with torch, transformers, peft.
set -euo pipefail
cd "$(dirname "$0")/.."
W=${1:-/tmp/lorac-cuda-bench}
LORAC=${LORAC:-build/lorac}
BENCH=${BENCH:-build/bench_train}
DECODE=${DECODE:-build/bench_decode}
PY=${PYTHON:-python3}
STEPS=${STEPS:-10}
[ -x "$LORAC" ] && [ -x "$BENCH" ] && [ -x "$DECODE" ] || make "$LORAC" "$BENCH" "$DECODE"
"$LORAC" --version | grep -q cuda || { echo "error: $LORAC has no CUDA backend (is nvcc on PATH?)" >&2; exit 1; }
mkdir -p "$W/runs"
cat >"$W/config.json" <<'JSON'
{"architectures": ["MistralForCausalLM"], "model_type": "mistral", "vocab_size": 32768,
 "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
 "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
 "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-05,
 "tie_word_embeddings": false, "sliding_window": null, "bos_token_id": 1, "eos_token_id": 2,
 "torch_dtype": "bfloat16", "hidden_act": "silu"}
JSON
TOK=${TOK:-tests/fixtures/tokenizers/demo-spm/tokenizer.json}
if [ ! -f "$W/model/model.safetensors" ] && [ ! -f "$W/model/model.safetensors.index.json" ]; then
    if [ "${LORAC_INIT:-0}" = 1 ]; then
        "$LORAC" init --config "$W/config.json" --tokenizer "$TOK" --out "$W/model" -q
    else
        mkdir -p "$W/model"
        cp "$W/config.json" "$TOK" "$W/model/"
        "$PY" bench/cuda_train_peft.py make-model "$W/model" >"$W/runs/make.json"
    fi
fi

# peak NAME CMD...: runs CMD with its stdout in runs/NAME.json and its peak memory in runs/NAME.mem
# (skipped unless NAME is in $ROWS, when ROWS is set)
ROWS=${ROWS:-}
peak() {
    local name=$1
    shift
    if [ -n "$ROWS" ] && [[ " $ROWS " != *" $name "* ]]; then return 0; fi
    local base
    base=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0)
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 -lms 100 >"$W/runs/$name.poll" &
    local pid=$!
    "$@" >"$W/runs/$name.json" 2>"$W/runs/$name.err" || { kill $pid; echo "error: $name failed:" >&2; tail -5 "$W/runs/$name.err" >&2; return 1; }
    kill $pid
    wait $pid 2>/dev/null || true
    echo $(( $(sort -n "$W/runs/$name.poll" | tail -1) - base )) >"$W/runs/$name.mem"
    echo "$name: $(cat "$W/runs/$name.json")" >&2
}

M=$W/model
peak lorac-recipe "$BENCH" --device cuda --model "$M" --batch 2 --seq 68 --num-layers 16 --steps $((STEPS * 3)) --warmup 3 --decode 64 || true
peak peft-recipe "$PY" bench/cuda_train_peft.py train --model "$M" --batch 2 --seq 68 --num-layers 16 --steps $((STEPS * 3)) --warmup 3 || true
peak lorac-8x512 "$BENCH" --device cuda --model "$M" --batch 8 --seq 512 --num-layers -1 --steps "$STEPS" --warmup 2 || true
peak peft-8x512 "$PY" bench/cuda_train_peft.py train --model "$M" --batch 8 --seq 512 --num-layers -1 --steps "$STEPS" --warmup 2 || true
peak lorac-8x512-ck "$BENCH" --device cuda --model "$M" --batch 8 --seq 512 --num-layers -1 --checkpoint --steps "$STEPS" --warmup 2 || true
peak peft-8x512-ck "$PY" bench/cuda_train_peft.py train --model "$M" --batch 8 --seq 512 --num-layers -1 --checkpoint --steps "$STEPS" --warmup 2 || true
peak lorac-8x512-24g "$BENCH" --device cuda --model "$M" --batch 8 --seq 512 --num-layers -1 --memory-limit 24 --steps "$STEPS" --warmup 2 || true
peak lorac-recipe-nf4 "$BENCH" --device cuda --model "$M" --quantize nf4 --batch 2 --seq 68 --num-layers 16 --steps $((STEPS * 3)) --warmup 3 --decode 64 || true
peak lorac-8x512-nf4 "$BENCH" --device cuda --model "$M" --quantize nf4 --batch 8 --seq 512 --num-layers -1 --steps "$STEPS" --warmup 2 || true
peak peft-generate "$PY" bench/cuda_train_peft.py generate --model "$M" --tokens 64 || true
peak lorac-generate "$DECODE" --device cuda --model "$M" --rank 0 --tokens 64 --reps 3 - || true
peak lorac-generate-fused "$DECODE" --device cuda --model "$M" --num-layers 16 --fuse --tokens 64 --reps 3 - || true
if [ "${PROFILE:-0}" = 1 ]; then
    LORAC_CUDA_PROFILE=1 "$BENCH" --device cuda --model "$M" --batch 2 --seq 68 --num-layers 16 --steps $((STEPS * 3)) --warmup 3 --decode 64 >"$W/runs/lorac-recipe-prof.json" 2>"$W/runs/lorac-recipe-prof.err" || true
    if [ -z "$ROWS" ] || [[ " $ROWS " == *" lorac-8x512 "* ]]; then
        LORAC_CUDA_PROFILE=1 "$BENCH" --device cuda --model "$M" --batch 8 --seq 512 --num-layers -1 --steps "$STEPS" --warmup 2 >"$W/runs/lorac-8x512-prof.json" 2>"$W/runs/lorac-8x512-prof.err" || true
    fi
fi

BNB=$("$PY" -c 'import bitsandbytes; print(bitsandbytes.__version__)' 2>/dev/null || echo none)
"$PY" - "$W/runs" "${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}" "$BNB" <<'PY'
import json, os, sys, datetime
runs, commit = sys.argv[1], sys.argv[2]
def get(name):
    try:
        j = json.loads(open(os.path.join(runs, name + ".json")).read().strip().splitlines()[-1])
        j["mem_gib"] = int(open(os.path.join(runs, name + ".mem")).read()) / 1024
        return j
    except Exception:
        return None
C, I, L, H, KV, D, V = 4096, 14336, 32, 32, 8, 128, 32768
P_blk = 2 * C * H * D + 2 * C * KV * D + 3 * C * I
def flops_per_token(T, nl):
    Lb = L if nl < 0 else nl
    att = 2 * T * H * D  # causal: T/2 keys on average, QK^T and PV, 2 FLOPs each
    fwd = 2 * (L * P_blk + V * C) + L * att
    bwd = 2 * (Lb * P_blk + V * C) + Lb * 2 * att
    return fwd + bwd
PEAK = 989e12
dev = None
rows = []
def train_row(label, a, b, T, nl, per_step):
    global dev
    la, pb = get(a), get(b)
    for j in (la, pb):
        if j and not dev: dev = j.get("device")
    f = flops_per_token(T, nl)
    def cell(j):
        if not j: return "failed", "", ""
        v = "%.1f ms/step" % (j["step_s"] * 1e3) if per_step else "%.0f tok/s" % j["tokens_per_s"]
        return v, "%.1f GiB" % j["mem_gib"], "%.1f%%" % (100 * f * j["tokens_per_s"] / PEAK)
    ca, cb = cell(la), cell(pb)
    ratio = "%.2fx" % (la["tokens_per_s"] / pb["tokens_per_s"]) if la and pb else ""
    extra = " (optimizer %.1f ms)" % (la["opt_s"] * 1e3) if la else ""
    rows.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (label, ca[0] + extra, cb[0], ratio, ca[1], cb[1], ca[2], cb[2]))
train_row("recipe: last 16 blocks, batch 2 x 68", "lorac-recipe", "peft-recipe", 68, 16, True)
train_row("all 32 blocks, batch 8 x 512", "lorac-8x512", "peft-8x512", 512, -1, False)
train_row("same, gradient checkpointing", "lorac-8x512-ck", "peft-8x512-ck", 512, -1, False)
j24 = get("lorac-8x512-24g")
# bench_train reports lc_model_set_recompute's counts; the second counts the top block,
# which recomputes nothing
lab = "same, within 24 GiB (lorac --memory-limit 24%s; PEFT checkpointed)" % (
    ": %d blocks checkpointed, gate/up recomputed in %d" % (j24["recompute"][0], j24["recompute"][1] - 1)
    if j24 and "recompute" in j24 else "")
train_row(lab, "lorac-8x512-24g", "peft-8x512-ck", 512, -1, False)
lg, pg = get("lorac-recipe"), get("peft-generate")
gl = "%.1f tok/s" % lg["decode_tokens_per_s"] if lg else "failed"
gp = "%.1f tok/s" % pg["tokens_per_s"] if pg else "failed"
gr = "%.2fx" % (lg["decode_tokens_per_s"] / pg["tokens_per_s"]) if lg and pg else ""
rows.append("| generate, batch 1, greedy, 64 tokens (lorac with the recipe's adapters, PEFT without) | %s | %s | %s | | %s | | |"
            % (gl, gp, gr, "%.1f GiB" % pg["mem_gib"] if pg else ""))
def decode_median(name):
    try:
        v = sorted(json.loads(l)["decode_tokens_per_s"] for l in open(os.path.join(runs, name + ".json")) if l.strip())
        return v[len(v) // 2], int(open(os.path.join(runs, name + ".mem")).read()) / 1024
    except Exception:
        return None
dp = decode_median("lorac-generate")
rows.append("| same, no adapters on either side | %s | %s | %s | %s | %s | | |" % (
    "%.1f tok/s" % dp[0] if dp else "failed", gp, "%.2fx" % (dp[0] / pg["tokens_per_s"]) if dp and pg else "",
    "%.1f GiB" % dp[1] if dp else "", "%.1f GiB" % pg["mem_gib"] if pg else ""))
df = decode_median("lorac-generate-fused")
rows.append("| same, lorac with the recipe's adapters merged in memory (`generate --fuse`), PEFT without | %s | %s | "
                "%s | %s | %s | | |" % ("%.1f tok/s" % df[0] if df else "failed", gp,
                                        "%.2fx" % (df[0] / pg["tokens_per_s"]) if df and pg else "",
                                        "%.1f GiB" % df[1] if df else "", "%.1f GiB" % pg["mem_gib"] if pg else ""))
print("card: %s; date: %s; commit: %s" % (dev, datetime.date.today().isoformat(), commit))
print("| work | lorac (CUDA) | PyTorch + PEFT | ratio | lorac peak | PEFT peak | lorac MFU | PEFT MFU |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for r in rows: print(r)
bnb = sys.argv[3]
q = []
def nf4_row(label, a, b, per_step):
    na, bb = get(a), get(b)
    if not na and not bb: return
    def v(j):
        if not j: return "failed"
        return "%.1f ms/step" % (j["step_s"] * 1e3) if per_step else "%.0f tok/s" % j["tokens_per_s"]
    ratio = "%.2fx" % (na["tokens_per_s"] / bb["tokens_per_s"]) if na and bb else ""
    mem = lambda j: "%.1f GiB" % j["mem_gib"] if j else ""
    other = "not available (bitsandbytes not installed)" if bnb == "none" else "not run (bitsandbytes %s present)" % bnb
    q.append("| %s | %s | %s | %s | %s | %s | %s |" % (label, v(na), v(bb), ratio, mem(na), mem(bb), other))
nf4_row("recipe: last 16 blocks, batch 2 x 68", "lorac-recipe-nf4", "lorac-recipe", True)
nf4_row("all 32 blocks, batch 8 x 512", "lorac-8x512-nf4", "lorac-8x512", False)
na, bb = get("lorac-recipe-nf4"), get("lorac-recipe")
if na:
    q.append("| generate, batch 1, greedy, 64 tokens | %.1f tok/s | %s | %s | | | not available |" % (na["decode_tokens_per_s"],
             "%.1f tok/s" % bb["decode_tokens_per_s"] if bb else "", "%.2fx" % (na["decode_tokens_per_s"] / bb["decode_tokens_per_s"]) if bb else ""))
if q:
    print()
    print("| work, NF4 base | lorac NF4 (CUDA) | lorac bf16 (CUDA) | NF4 / bf16 speed | NF4 peak | bf16 peak | PyTorch + PEFT + bitsandbytes |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in q: print(r)
PY
