#!/bin/sh
# Runs every libFuzzer target in build-fuzz/bin for $FUZZ_SECONDS seconds each, starting
# from its seed corpus fuzz/corpus/NAME (copied, so the committed seeds stay as they
# are). Prints one line per target: "fuzz NAME: N executions, ok" or the crash, and
# records "EXECUTIONS SECONDS" in build-fuzz/reliability/NAME for the README's table
# (scripts/reliability_table.sh). Exit status 1 when any target found a crash.
set -u
cd "$(dirname "$0")/.." || exit 1
secs=${FUZZ_SECONDS:-5}
status=0
mkdir -p build-fuzz/reliability
for bin in build-fuzz/bin/fuzz_*; do
    [ -x "$bin" ] || continue
    name=$(basename "$bin")
    work=$(mktemp -d)
    [ -d "fuzz/corpus/$name" ] && cp -r "fuzz/corpus/$name/." "$work/"
    log="$work.log"
    if "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -artifact_prefix="$work/" "$work" >"$log" 2>&1; then
        execs=$(grep -o 'Done [0-9]* runs' "$log" | grep -o '[0-9]*')
        echo "fuzz $name: ${execs:-?} executions in ${secs}s, ok"
        echo "${execs:-0} $secs" >"build-fuzz/reliability/$name"
    else
        echo "fuzz $name: FAILED"
        tail -n 40 "$log"
        status=1
    fi
    rm -rf "$work" "$log"
done
exit $status
