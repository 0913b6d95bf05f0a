# Runs every libFuzzer target briefly (FUZZ_SECONDS, default 5 s each): a reader that
# crashes, leaks or trips UBSan on some input fails this test.
. tests/lib.sh
T_LOG="$T_TMP/fuzz.log"
fuzz_targets() {
    n=$(ls build-fuzz/bin/fuzz_* 2>/dev/null | wc -l)
    if [ "$n" -eq 0 ]; then skip "no fuzz targets built (make fuzz-build)"; return; fi
    FUZZ_SECONDS=${FUZZ_SECONDS:-5} fuzz/run.sh >"$T_LOG" 2>&1 || fail "a fuzz target failed"
    cat "$T_LOG"
}
run_test fuzz_targets
finish
