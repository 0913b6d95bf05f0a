# test_crash.sh — crashes lose nothing: real `lorac train` runs are killed (SIGKILL) at
# named points (core/testhook.h: between a write and its rename, just after a rename,
# mid-write, between steps) and at random times; each time the newest complete
# checkpoint must be byte-identical to the one an uninterrupted run wrote and loadable,
# no half-written file may sit under a final name, and resuming must finish with
# adapters, PEFT copy and train state bit-identical to the uninterrupted run's (CPU).
# Then: a full disk while saving (a file-size limit; a tiny tmpfs when root may mount
# one) is one error line naming the file, keeps the previous checkpoint and leaves no
# temporary; a NaN loss or gradient stops the run naming the step and the last good
# checkpoint, and never writes NaN adapters.
. tests/lib.sh
M="$T_TMP/model"
D="$T_TMP/data"
"$LORAC" init --config models/demo/config.json --tokenizer tests/fixtures/tokenizers/demo-spm/tokenizer.json \
    --out "$M" -q >/dev/null 2>&1 || echo "  FAIL: init"
mkdir -p "$D"
python3 - "$D" <<'PY'
import json, random, sys
ops = [("Adds rs1 and rs2 into rd", "add rd, rs1, rs2"), ("Subtracts rs2 from rs1 into rd", "sub rd, rs1, rs2"),
       ("Shifts rs1 left by rs2 into rd", "sll rd, rs1, rs2"), ("Loads a word at offset from rs1 into rd", "lw rd, offset(rs1)")]
r = random.Random(1)
for name, n in (("train", 48), ("valid", 12)):
    with open(f"{sys.argv[1]}/{name}.jsonl", "w") as f:
        for _ in range(n):
            d, a = r.choice(ops)
            f.write(json.dumps({"text": f"<s>[INST] {d}[/INST] {a}</s>"}) + "\n")
PY
# saves at 5, 10, 15 and 20; each save renames 6 files (adapters, adapter_config.json,
# checkpoint, PEFT model, PEFT config, train state): 24 renames in a run
A="--model $M --data $D --batch-size 4 --steps-per-report 5 --steps-per-eval 10 --learning-rate 1e-3 --num-layers -1 --lora-rank 4 --save-every 5 --lora-dropout 0.1 --seed 3 --iters 20"
REF="$T_TMP/ref"
"$LORAC" train $A --adapter-path "$REF" >"$T_TMP/ref.log" 2>&1 || echo "  FAIL: the reference run: $(tail -n 3 "$T_TMP/ref.log")"
REF_LAST=$(grep '^Iter 20: Train loss' "$T_TMP/ref.log" | sed 's/.*\(Trained Tokens [0-9]*\).*/\1/')

# check_intact DIR : what a killed run left is whole: every numbered file equals the
# uninterrupted run's, adapters.safetensors equals one of its checkpoints, and the
# newest checkpoint and the folder load.
check_intact() {
    dir=$1
    for f in "$dir"/*_adapters.safetensors "$dir"/*_train_state.safetensors; do
        [ -f "$f" ] || continue
        cmp -s "$f" "$REF/$(basename "$f")" || fail "$(basename "$f") differs from the uninterrupted run's"
    done
    if [ -f "$dir/adapters.safetensors" ]; then
        same=0
        for c in "$REF"/*_adapters.safetensors; do cmp -s "$c" "$dir/adapters.safetensors" && same=1; done
        [ $same -eq 1 ] || fail "adapters.safetensors is none of the uninterrupted run's checkpoints"
        expect_exit 0 "$LORAC" eval --model "$M" --adapter-path "$dir" --data "$D" --split valid --json
    fi
    newest=$(ls "$dir"/*_adapters.safetensors 2>/dev/null | tail -n 1)
    [ -n "$newest" ] && expect_exit 0 "$LORAC" eval --model "$M" --adapter-path "$newest" --data "$D" --split valid --json
    [ -f "$dir/peft/adapter_config.json" ] && [ -f "$dir/peft/adapter_model.safetensors" ] &&
        expect_exit 0 "$LORAC" eval --model "$M" --adapter-path "$dir/peft" --data "$D" --split valid --json
}

# resume_and_compare DIR : finishes the run (--resume when a train state survived, else
# afresh) and compares the results with the uninterrupted run's.
resume_and_compare() {
    dir=$1
    if ls "$dir"/*_train_state.safetensors >/dev/null 2>&1; then
        "$LORAC" train $A --adapter-path "$dir" --resume >"$dir.log" 2>&1 || fail "resume failed: $(tail -n 2 "$dir.log")"
    else
        "$LORAC" train $A --adapter-path "$dir" >"$dir.log" 2>&1 || fail "fresh start failed: $(tail -n 2 "$dir.log")"
    fi
    for f in adapters.safetensors peft/adapter_model.safetensors 0000020_train_state.safetensors; do
        cmp -s "$REF/$f" "$dir/$f" || fail "after resuming, $f differs from the uninterrupted run's"
    done
    last=$(grep '^Iter 20: Train loss' "$dir.log" | sed 's/.*\(Trained Tokens [0-9]*\).*/\1/')
    grep -q '(iteration 20)' "$dir.log" || [ "$last" = "$REF_LAST" ] || fail "after resuming: '$last', the uninterrupted run said '$REF_LAST'"
    leftovers=$(find "$dir" -name '*.tmp.*')
    [ -z "$leftovers" ] || fail "temporary files left after resuming: $leftovers"
}

KILLED=0
kill_points() {
    [ -f "$REF/adapters.safetensors" ] || { fail "no reference run"; return; }
    i=0
    for point in step:3 step:12 atomic-write:1 atomic-write:40 atomic-write:200 atomic-rename:1 \
                 atomic-rename:3 atomic-rename:6 atomic-rename:12 atomic-rename:20 atomic-rename:24 \
                 atomic-done:6 atomic-done:19; do
        i=$((i + 1))
        dir="$T_TMP/k$i"
        before=$T_CUR
        LORAC_TEST_KILL_AT=$point "$LORAC" train $A --adapter-path "$dir" >"$dir.kill.log" 2>&1
        rc=$?
        [ $rc -eq 137 ] || { fail "$point: expected death by SIGKILL (137), got $rc"; continue; }
        check_intact "$dir"
        resume_and_compare "$dir"
        if [ $T_CUR -eq $before ]; then KILLED=$((KILLED + 1)); else echo "  (at kill point $point)"; fi
    done
    record_count kill_points $KILLED
    check_readme_count kill_points $KILLED
}

random_kills() {
    [ -f "$REF/adapters.safetensors" ] || { fail "no reference run"; return; }
    n=0
    for i in 1 2 3 4; do
        dir="$T_TMP/rand$i"
        ms=$(( $(od -An -N2 -tu2 /dev/urandom) % 700 + 100 ))
        "$LORAC" train $A --adapter-path "$dir" >"$dir.kill.log" 2>&1 &
        pid=$!
        sleep "$(printf '0.%03d' "$ms")"
        kill -KILL $pid 2>/dev/null
        wait $pid
        rc=$?
        [ $rc -eq 137 ] && n=$((n + 1))
        echo "  killed after ${ms} ms (exit $rc)"
        check_intact "$dir"
        resume_and_compare "$dir"
    done
    record_count random_kills $n
}

# Killed just after each of the first renames (the loss plot, then the first save's
# files): wherever adapters.safetensors stands, the folder loads (adapter_config.json is
# written before it; a random kill once landed between the two and left adapters without
# their config).
first_renames() {
    [ -f "$REF/adapters.safetensors" ] || { fail "no reference run"; return; }
    for k in 1 2 3 4; do
        dir="$T_TMP/first$k"
        LORAC_TEST_KILL_AT=atomic-done:$k "$LORAC" train $A --adapter-path "$dir" >"$dir.kill.log" 2>&1
        rc=$?
        [ $rc -eq 137 ] || { fail "atomic-done:$k: expected death by SIGKILL (137), got $rc"; continue; }
        if [ -f "$dir/adapters.safetensors" ] && [ ! -f "$dir/adapter_config.json" ]; then
            fail "atomic-done:$k: adapters.safetensors stands without adapter_config.json"
        fi
        check_intact "$dir"
    done
    resume_and_compare "$T_TMP/first4"
}

# The first part of a run that a full-disk run then continues: saves at 5 and 10.
start_to_10() {
    "$LORAC" train $A --adapter-path "$1" --iters 10 >"$1.first.log" 2>&1 || fail "first part failed"
}

disk_full_file_limit() {
    # 700 blocks (358400 bytes with dash's 512-byte blocks, 716800 with bash's 1 KiB):
    # an adapters file (317040 bytes) fits, a train state (952064) does not
    for blocks in 700 100; do
        dir="$T_TMP/full$blocks"
        start_to_10 "$dir"
        cp "$dir/adapters.safetensors" "$T_TMP/prev_adapters"
        (ulimit -f $blocks && exec "$LORAC" train $A --adapter-path "$dir" --resume) >"$T_TMP/out" 2>"$T_TMP/err"
        rc=$?
        ERR_TXT=$(cat "$T_TMP/err")
        [ $rc -eq 2 ] || fail "limit $blocks: exit $rc, expected 2; stderr: $ERR_TXT"
        one_line "$ERR_TXT"
        contains "$ERR_TXT" "File too large"
        if [ $blocks -eq 700 ]; then
            contains "$ERR_TXT" "0000015_train_state.safetensors"
        else
            contains "$ERR_TXT" "$dir/adapters.safetensors"
            cmp -s "$T_TMP/prev_adapters" "$dir/adapters.safetensors" || fail "the previous adapters.safetensors was not kept"
        fi
        cmp -s "$REF/0000010_train_state.safetensors" "$dir/0000010_train_state.safetensors" ||
            fail "limit $blocks: the previous train state changed"
        leftovers=$(find "$dir" -name '*.tmp.*')
        [ -z "$leftovers" ] || fail "limit $blocks: temporary files left behind: $leftovers"
        check_intact "$dir"
        resume_and_compare "$dir"
    done
}

disk_full_tmpfs() {
    if [ "$(id -u)" -ne 0 ] || ! unshare -m true 2>/dev/null; then
        skip "needs root and unshare -m to mount a small tmpfs (the file-size-limit test covers the rest)"
        return
    fi
    dir="$T_TMP/tmpfs"
    start_to_10 "$T_TMP/first"
    mkdir -p "$dir"
    # the folder at step 10 takes about 3.2 MB; 4 MB holds it but not the next save
    unshare -m sh -c "mount -t tmpfs -o size=4m lorac-test '$dir' || exit 99
        cp -r '$T_TMP/first/.' '$dir/' || exit 98
        '$LORAC' train $A --adapter-path '$dir' --resume >'$T_TMP/out' 2>'$T_TMP/err'
        echo \$? >'$T_TMP/rc'
        cmp -s '$REF/0000010_train_state.safetensors' '$dir/0000010_train_state.safetensors' || echo 'train state 10 changed' >>'$T_TMP/bad'
        for f in '$dir'/*_adapters.safetensors '$dir'/*_train_state.safetensors; do
            cmp -s \"\$f\" '$REF'/\$(basename \"\$f\") || echo \"\$f differs\" >>'$T_TMP/bad'
        done
        find '$dir' -name '*.tmp.*' >>'$T_TMP/bad'
        '$LORAC' eval --model '$M' --adapter-path '$dir' --data '$D' --split valid --json >/dev/null 2>>'$T_TMP/bad' || echo 'folder does not load' >>'$T_TMP/bad'"
    urc=$?
    if [ $urc -eq 99 ]; then skip "mount -t tmpfs is not allowed here"; return; fi
    [ $urc -eq 0 ] || { fail "tmpfs test failed to run ($urc)"; return; }
    ERR_TXT=$(cat "$T_TMP/err")
    [ "$(cat "$T_TMP/rc")" = 2 ] || fail "exit $(cat "$T_TMP/rc"), expected 2; stderr: $ERR_TXT"
    one_line "$ERR_TXT"
    contains "$ERR_TXT" "No space left on device"
    contains "$ERR_TXT" "$dir/"
    [ -s "$T_TMP/bad" ] && fail "after the full disk: $(cat "$T_TMP/bad")"
}

# A NaN forced into the loss or a gradient at step 7, and a learning rate so large that
# the weights overflow: the run stops with the step, the last good checkpoint and what
# to try; the files of the save at step 5 stay as they were.
nan_stops() {
    for hook in loss:7 grad:7 huge-lr; do
        dir="$T_TMP/nan-$hook"
        if [ $hook = huge-lr ]; then
            expect_exit 2 "$LORAC" train $A --adapter-path "$dir" --learning-rate 1e38 --lora-dropout 0
        else
            expect_exit 2 env LORAC_TEST_NAN_AT=$hook "$LORAC" train $A --adapter-path "$dir"
            contains "$ERR_TXT" "iteration 7:"
            contains "$ERR_TXT" "0000005_train_state.safetensors"
            cmp -s "$REF/adapters.safetensors" "$dir/adapters.safetensors" && fail "$hook: final adapters written"
            cmp -s "$REF/0000005_adapters.safetensors" "$dir/adapters.safetensors" ||
                fail "$hook: adapters.safetensors is not the step-5 save"
        fi
        one_line "$ERR_TXT"
        contains "$ERR_TXT" "NaN"
        contains "$ERR_TXT" "learning_rate"
        contains "$ERR_TXT" "--clip-grad-norm"
        contains "$ERR_TXT" "last good checkpoint"
        check_intact_finite "$dir"
    done
}

# check_intact_finite DIR : every adapters file in DIR holds only finite numbers.
check_intact_finite() {
    for f in "$1"/*adapters.safetensors "$1"/peft/adapter_model.safetensors; do
        [ -f "$f" ] || continue
        python3 - "$f" <<'PY' || fail "$f holds NaN or infinite weights"
import json, math, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
for k, v in h.items():
    if k == "__metadata__": continue
    s, e = v["data_offsets"]
    xs = struct.unpack(f"<{(e - s) // 4}f", b[8 + n + s:8 + n + e])
    assert all(math.isfinite(x) for x in xs), k
PY
    done
}

run_test kill_points
run_test random_kills
run_test first_renames
run_test disk_full_file_limit
run_test disk_full_tmpfs
run_test nan_stops
finish
