# test_rows.sh — `lorac prepare --dataset` on data sets published only as Parquet: the rows
# come from the datasets server (/splits, then /rows 100 at a time) of the loopback Hub
# look-alike (tests/hub/fake_hub.py), are cached as JSONL in order and complete, work
# offline afterwards, carry the token, and fail in one line on 401, 404, a server that
# keeps failing (after retrying a busy one), truncated cells and ambiguous splits.
. tests/lib.sh
. tests/hub/hub_lib.sh

# a Parquet-only data set repo ORG/NAME with N rows in config CONFIG, split SPLIT
make_parquet_set() {
    repo=$1 n=$2 config=${3:-default} split=${4:-train}
    mkdir -p "$HUBROOT/datasets/$repo/data" "$HUBROOT/rows/$repo/$config"
    printf 'PAR1 not really parquet PAR1' >"$HUBROOT/datasets/$repo/data/$split-00000-of-00001.parquet"
    printf -- '---\nlicense: mit\n---\n# rows\n' >"$HUBROOT/datasets/$repo/README.md"
    i=0
    while [ $i -lt "$n" ]; do
        printf '{"description": "row %d: adds rs1 and rs2 into rd", "instructions": "add rd, rs1, rs2", "n": %d}\n' $i $i
        i=$((i + 1))
    done >"$HUBROOT/rows/$repo/$config/$split.jsonl"
}

rows_file() { # the JSONL that lorac cached for data set $1
    find "$HF_HOME/hub/datasets--$(echo "$1" | sed 's#/#--#')/lorac-rows" -name '*.jsonl' | head -n 1
}

paginated_rows_in_order() {
    expect_exit 0 "$LORAC" prepare --dataset acme/pq --format completions --no-shuffle \
        --valid-fraction 0.1 --test-fraction 0 --out "$T_TMP/p1"
    contains "$OUT_TXT" "250 rows from"
    [ "$(wc -l <"$T_TMP/p1/train.jsonl")" -eq 225 ] || fail "expected 225 train rows"
    [ "$(wc -l <"$T_TMP/p1/valid.jsonl")" -eq 25 ] || fail "expected 25 valid rows"
    f=$(rows_file acme/pq)
    case "$f" in */lorac-rows/*/default/train.jsonl) ;; *) fail "rows cached at '$f'" ;; esac
    # the rows in the server's order, every one, the row objects as served
    python3 - "$f" "$HUBROOT/rows/acme/pq/default/train.jsonl" <<'PY' || fail "cached rows differ from the served ones"
import json, sys
got = [json.loads(l) for l in open(sys.argv[1])]
want = [json.loads(l) for l in open(sys.argv[2])]
sys.exit(0 if got == want else 1)
PY
    # the data set's snapshot holds README.md but no Parquet (never downloaded)
    find "$HF_HOME/hub/datasets--acme--pq" -name '*.parquet' | grep -q . && fail "the Parquet file was downloaded"
    check_layout dataset acme/pq main --files README.md --complete
}

offline_from_cache() {
    expect_exit 0 env HF_HUB_OFFLINE=1 HF_ENDPOINT=http://127.0.0.1:1 HF_DATASETS_SERVER=http://127.0.0.1:1 \
        "$LORAC" prepare --dataset acme/pq --format completions --out "$T_TMP/p2"
    contains "$OUT_TXT" "250 rows from"
    expect_exit 2 env HF_HUB_OFFLINE=1 "$LORAC" prepare --dataset acme/never --format completions --out "$T_TMP/p3"
    [ -n "$SHOW" ] && echo "$ERR_TXT"
    one_line "$ERR_TXT"; contains "$ERR_TXT" "HF_HUB_OFFLINE"
}

configs_and_splits() {
    expect_exit 2 "$LORAC" prepare --dataset acme/multi --format completions --out "$T_TMP/p4"
    [ -n "$SHOW" ] && echo "$ERR_TXT"
    one_line "$ERR_TXT"; contains "$ERR_TXT" "--dataset-config"; contains "$ERR_TXT" "alpha, beta"
    expect_exit 0 "$LORAC" prepare --dataset acme/multi --dataset-config beta --format completions \
        --valid-fraction 0 --test-fraction 0 --out "$T_TMP/p5"
    contains "$OUT_TXT" "7 rows from"
    expect_exit 2 "$LORAC" prepare --dataset acme/multi --dataset-config beta --dataset-split nope \
        --format completions --out "$T_TMP/p6"
    one_line "$ERR_TXT"; contains "$ERR_TXT" "no split 'nope'"
    expect_exit 0 "$LORAC" prepare --dataset acme/multi --dataset-config alpha --dataset-split test \
        --format completions --valid-fraction 0 --test-fraction 0 --out "$T_TMP/p7"
    contains "$OUT_TXT" "3 rows from"
    expect_exit 2 "$LORAC" prepare --input x.jsonl --dataset-split train --format completions --out "$T_TMP/p8"
    one_line "$ERR_TXT"
}

token_and_errors() {
    expect_exit 2 "$LORAC" prepare --dataset private/pq --format completions --out "$T_TMP/p9"
    [ -n "$SHOW" ] && echo "$ERR_TXT"
    one_line "$ERR_TXT"; contains "$ERR_TXT" "401"; contains "$ERR_TXT" "HF_TOKEN"
    expect_exit 0 env HF_TOKEN=sekrit "$LORAC" prepare --dataset private/pq --format completions --out "$T_TMP/p10"
    case "$ERR_TXT$OUT_TXT" in *sekrit*) fail "the token was printed" ;; esac
    contains "$OUT_TXT" "120 rows from"
    expect_exit 2 "$LORAC" prepare --dataset rowsprivate/pq --format completions --out "$T_TMP/p9b"
    [ -n "$SHOW" ] && echo "$ERR_TXT"
    one_line "$ERR_TXT"; contains "$ERR_TXT" "/dsv/splits"; contains "$ERR_TXT" "401"; contains "$ERR_TXT" "HF_TOKEN"
    printf 'sekrit\n' >"$HF_HOME/token"
    expect_exit 0 "$LORAC" prepare --dataset rowsprivate/pq --format completions --out "$T_TMP/p9c"
    rm -f "$HF_HOME/token"
    # a data set the Hub has but the datasets server does not know
    mkdir -p "$HUBROOT/datasets/acme/noviewer" && printf '# x\n' >"$HUBROOT/datasets/acme/noviewer/README.md"
    expect_exit 2 "$LORAC" prepare --dataset acme/noviewer --format completions --out "$T_TMP/p11"
    [ -n "$SHOW" ] && echo "$ERR_TXT"
    one_line "$ERR_TXT"; contains "$ERR_TXT" "404"; contains "$ERR_TXT" "/dsv/splits?dataset=acme%2Fnoviewer"
    # busy once at offset 100: retried, complete
    expect_exit 0 "$LORAC" prepare --dataset rowsbusy/pq --format completions --out "$T_TMP/p12"
    contains "$OUT_TXT" "150 rows from"
    # failing from offset 100 on: one line naming the page, nothing cached under the final name
    expect_exit 2 "$LORAC" prepare --dataset rowsfail/pq --format completions --out "$T_TMP/p13"
    [ -n "$SHOW" ] && echo "$ERR_TXT"
    one_line "$ERR_TXT"; contains "$ERR_TXT" "500"; contains "$ERR_TXT" "offset=100"
    contains "$ERR_TXT" "Unexpected error."
    [ -n "$(rows_file rowsfail/pq)" ] && fail "a partial rows file under its final name"
    expect_exit 2 "$LORAC" prepare --dataset rowscut/pq --format completions --out "$T_TMP/p14"
    [ -n "$SHOW" ] && echo "$ERR_TXT"
    one_line "$ERR_TXT"; contains "$ERR_TXT" "truncated cell 'description' of row 3"
    [ -d "$T_TMP/p13" ] && fail "prepare wrote output after a failure"
    expect_exit 2 env HF_DATASETS_SERVER=http://127.0.0.1:1 "$LORAC" prepare --dataset acme/pq2 \
        --format completions --out "$T_TMP/p15"
    [ -n "$SHOW" ] && echo "$ERR_TXT"
    one_line "$ERR_TXT"; contains "$ERR_TXT" "HF_DATASETS_SERVER"
}

make_parquet_set acme/pq 250
make_parquet_set acme/pq2 5
make_parquet_set acme/multi 3 alpha test
make_parquet_set acme/multi 4 alpha train
make_parquet_set acme/multi 7 beta train
make_parquet_set private/pq 120
make_parquet_set rowsprivate/pq 12
make_parquet_set rowsbusy/pq 150
make_parquet_set rowsfail/pq 150
make_parquet_set rowscut/pq 10
if start_server; then
    run_test paginated_rows_in_order
    run_test offline_from_cache
    run_test configs_and_splits
    run_test token_and_errors
else
    skip_all() { skip "python3 or the loopback server is not available"; }
    run_test skip_all
fi
finish
