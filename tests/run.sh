#!/bin/sh
# Runs every test executable under BUILD/tests and every tests/**/test_*.sh script, then
# prints the total: "N passed, N failed, N skipped" (also kept in BUILD/reliability/suite).
# Exit status 1 when anything failed.
# Usage: tests/run.sh BUILD_DIR [FILTER]
set -u
BUILD=${1:-build}
FILTER=${2:-}
cd "$(dirname "$0")/.." || exit 1
export LORAC="$PWD/$BUILD/lorac" LORAC_BUILD="$PWD/$BUILD"
passed=0 failed=0 skipped=0 broken=""
tmp=$(mktemp)
for t in $(find "$BUILD/tests" -type f -name 'test_*' -perm -u+x | sort) \
         $(find tests -name 'test_*.sh' | sort); do
    case "$t" in *"$FILTER"*) ;; *) continue ;; esac
    echo "== $t"
    case "$t" in
        *.sh) sh "$t" >"$tmp" 2>&1 ;;
        *) "$t" >"$tmp" 2>&1 ;;
    esac
    rc=$?
    cat "$tmp"
    line=$(grep '^RESULT ' "$tmp" | tail -n 1)
    if [ -z "$line" ]; then
        echo "FAIL $t: exited $rc without a RESULT line (crash?)"
        failed=$((failed + 1))
        broken="$broken $t"
        continue
    fi
    set -- $line
    passed=$((passed + $2)) failed=$((failed + $3)) skipped=$((skipped + $4))
    if [ "$rc" -ne 0 ] && [ "$3" -eq 0 ]; then
        echo "FAIL $t: exited $rc"
        failed=$((failed + 1))
        broken="$broken $t"
    fi
    [ "$3" -ne 0 ] && broken="$broken $t"
done
rm -f "$tmp"
[ -n "$broken" ] && echo "failing:$broken"
echo "$passed passed, $failed failed, $skipped skipped"
# for the README's reliability table (scripts/reliability_table.sh); a filtered run is partial
if [ -z "$FILTER" ]; then
    mkdir -p "$BUILD/reliability" && echo "$passed $failed $skipped" >"$BUILD/reliability/suite"
fi
[ "$failed" -eq 0 ]
