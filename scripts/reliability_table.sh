#!/bin/sh
# reliability_table.sh — renders the README's reliability table (markdown) from what the
# test suite counted: build/reliability/* (kill points survived, bad-input cases, the
# suite's totals; written by tests/cmd/test_crash.sh, tests/cmd/test_bad_input.sh and
# tests/run.sh), build-asan/reliability/suite (`make asan`) and build-fuzz/reliability/*
# (fuzz/run.sh: executions per target). Nothing in it is typed by hand; a count that
# was not measured reads "not run".
# Usage: scripts/reliability_table.sh [--readme] [BUILD [ASAN_BUILD]]
#   --readme  replace the table between the README's reliability-table markers
set -u
cd "$(dirname "$0")/.." || exit 1
if [ "${1:-}" = --readme ]; then
    shift
    t=$(mktemp)
    "$0" "$@" >"$t" || exit 1
    awk -v tf="$t" '
        /^<!-- reliability table/ { print; while ((getline l < tf) > 0) print l; skip = 1; next }
        /^<!-- end of reliability table/ { skip = 0 }
        !skip' README.md >README.md.new && mv README.md.new README.md
    rm -f "$t"
    exit 0
fi
B=${1:-build}
A=${2:-build-asan}
val() { if [ -s "$1" ]; then cat "$1"; else echo "not run"; fi; }
word() { if [ -s "$1" ]; then awk -v k="$2" '{print $k}' "$1"; else echo "not run"; fi; }
echo "Measured at commit $(git rev-parse --short HEAD 2>/dev/null || echo '?') on $(uname -m), $(nproc) cores."
echo
echo "| what the suite checks | count | where |"
echo "| --- | ---: | --- |"
echo "| SIGKILL points survived: named points (\`kill_points\`) | $(val "$B/reliability/kill_points") | tests/cmd/test_crash.sh |"
echo "| SIGKILL at a random time survived (\`random_kills\`) | $(val "$B/reliability/random_kills") | tests/cmd/test_crash.sh |"
echo "| bad-input cases: one line, exit 2, no crash (\`bad_input_cases\`) | $(val "$B/reliability/bad_input_cases") | tests/cmd/bad_input.cases |"
for f in build-fuzz/reliability/fuzz_*; do
    [ -f "$f" ] || continue
    n=$(basename "$f")
    echo "| fuzz executions, $n, ASan+UBSan, $(word "$f" 2) s (\`$n\`) | $(word "$f" 1) | fuzz/$n.c |"
done
echo "| tests passed (\`suite\`) | $(word "$B/reliability/suite" 1) | make test |"
echo "| tests passed under ASan+UBSan (\`asan_suite\`) | $(word "$A/reliability/suite" 1) | make asan |"
