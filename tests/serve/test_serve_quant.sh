# test_serve_quant.sh — `lorac serve --quantize`: answers equal `lorac generate --quantize`
# for the same prompts (greedy decoding is deterministic), with and without per-request
# adapters (whose models must load quantized the same way), and the option errors. Also
# `serve --fuse` (the startup adapters merged into the weights): `generate --fuse`'s answers.
. tests/lib.sh
. tests/serve/serve_lib.sh
P0="Adds rs1 and rs2 into rd"
# gen ARGS... : lorac generate's text for P0 (chat template), greedy
gen() {
    "$LORAC" generate --model "$M" --prompt "$P0" --max-tokens $N --chat-template mistral --json "$@" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["text"])'
}
REF_Q=$(gen --quantize q8)
REF_QA=$(gen --quantize q8 --adapter-path "$T_TMP/ad")
REF_A=$(gen --adapter-path "$T_TMP/ad")

# chat_text [EXTRA JSON] : the answer's text to P0
chat_text() {
    curl -s -H 'Content-Type: application/json' --data-binary \
        "{\"messages\": [{\"role\": \"user\", \"content\": \"$P0\"}], \"max_tokens\": $N, \"temperature\": 0$1}" \
        "$URL/v1/chat/completions" | python3 -c 'import json,sys; print(json.load(sys.stdin)["choices"][0]["message"]["content"])'
}

answers_equal_generate_quantized() {
    start_server "$T_TMP/serve.log" --quantize q8 || return
    got=$(chat_text)
    [ "$got" = "$REF_Q" ] || fail "serve --quantize q8 answered '$got', generate --quantize q8 '$REF_Q'"
    got=$(chat_text ', "adapters": "ad"')
    [ "$got" = "$REF_QA" ] || fail "per-request adapters answered '$got', generate --quantize q8 --adapter-path '$REF_QA'"
    kill -TERM $PID; wait $PID || fail "the server exited $? on SIGTERM"
    # the adapted answers differ between the q8 and the bf16 base here, so the per-request
    # check above tells whether the adapters' model was quantized
    [ "$REF_QA" != "$REF_A" ] || skip "q8 and bf16 give the same adapted answer: the per-request check is weaker"
}

answers_equal_generate_fused() {
    ref=$(gen --adapter-path "$T_TMP/ad" --fuse)
    [ -n "$ref" ] || fail "generate --fuse answered nothing"
    start_server "$T_TMP/serve-fuse.log" --adapter-path "$T_TMP/ad" --fuse || return
    got=$(chat_text)
    [ "$got" = "$ref" ] || fail "serve --fuse answered '$got', generate --fuse '$ref'"
    kill -TERM $PID; wait $PID || fail "the server exited $? on SIGTERM"
}

option_errors() {
    expect_exit 2 "$LORAC" serve --model "$M" --quantize q5
    contains "$ERR_TXT" "nf4, q4, q8"
    one_line "$ERR_TXT"
    expect_exit 2 "$LORAC" serve --model "$M" --quantize-embeddings
    contains "$ERR_TXT" "needs --quantize"
    expect_exit 2 "$LORAC" serve --model "$M" --fuse
    contains "$ERR_TXT" "--fuse needs --adapter-path"
    one_line "$ERR_TXT"
}

run_test answers_equal_generate_quantized
run_test answers_equal_generate_fused
run_test option_errors
finish
