# test_serve.sh — `lorac serve` over loopback: curl and the official `openai` npm client,
# whole answers and server-sent events, stop strings across token boundaries, per-request
# adapters, every bad input of the issue (each followed by a good request that must
# succeed), slow/partial/abandoned connections, a full queue, an API key, a short load
# run, and a clean shutdown. Every answer is compared with `lorac generate`'s for the
# same prompt (greedy decoding is deterministic).
. tests/lib.sh
. tests/serve/serve_lib.sh

# The references: lorac generate's answers (chat template and raw) for each prompt.
REFS="$T_TMP/refs.json"
python3 - "$LORAC" "$M" "$N" "$T_TMP/ad" >"$REFS" <<'PY' || echo "  FAIL: references"
import json, subprocess, sys
lorac, model, n, ad = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
prompts = ["Adds rs1 and rs2 into rd", "hi", "Ünïcödé ✓ — Σ"]
def gen(p, *extra):
    out = subprocess.run([lorac, "generate", "--model", model, "--prompt", p, "--max-tokens", n, "--json", *extra],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)
refs = {"prompts": prompts, "max_tokens": int(n), "timeout_s": 2, "long_tokens": 1500, "clients": 4, "per_client": 4,
        "chat": {}, "completion": {}, "tokens": {"chat": {}, "completion": {}}}
for p in prompts:
    c = gen(p, "--chat-template", "mistral"); r = gen(p, "--ignore-chat-template")
    refs["chat"][p], refs["tokens"]["chat"][p] = c["text"], len(c["tokens"])
    refs["completion"][p], refs["tokens"]["completion"][p] = r["text"], len(r["tokens"])
refs["sampled"] = gen(prompts[0], "--chat-template", "mistral", "--temp", "0.9", "--top-p", "0.95", "--seed", "42")["text"]
refs["adapted"] = gen(prompts[0], "--chat-template", "mistral", "--adapter-path", ad)["text"]
refs["prompt_ids"] = len(json.loads(subprocess.run([lorac, "tokenize", "--model", model, "--chat", "--chat-template",
    "mistral", "--add-generation-prompt", json.dumps([{"role": "user", "content": prompts[0]}])],
    check=True, capture_output=True, text=True).stdout))
print(json.dumps(refs))
PY
P0="Adds rs1 and rs2 into rd"

# stop_server SIGNAL : the server must exit 0 within 10 s and say so.
stop_server() {
    kill -"$1" $PID
    i=0
    while kill -0 $PID 2>/dev/null; do
        i=$((i + 1)); [ $i -gt 100 ] && { fail "the server did not stop on SIG$1"; kill -9 $PID; break; }
        sleep 0.1
    done
    wait $PID; rc=$?
    [ $rc -eq 0 ] || fail "the server exited $rc on SIG$1: $(tail -3 "$log")"
}
# post PATH JSON [curl args] : POSTs; sets CODE and BODY.
post() {
    _path=$1; _body=$2; shift 2
    CODE=$(curl -s -o "$T_TMP/body" -w '%{http_code}' "$@" -H 'Content-Type: application/json' \
        --data-binary "$_body" "$URL$_path")
    BODY=$(cat "$T_TMP/body")
}
# jq_py EXPR : evaluates a Python expression over d = json.loads($BODY) and r = the refs.
jq_py() { python3 -c "import json,sys; d=json.loads(sys.argv[1]); r=json.load(open(sys.argv[2])); print($1)" "$BODY" "$REFS"; }
# good_chat WHAT : a good request answers lorac generate's text.
good_chat() {
    post /v1/chat/completions "{\"messages\": [{\"role\": \"user\", \"content\": \"$P0\"}], \"max_tokens\": $N, \"temperature\": 0}"
    [ "$CODE" = 200 ] || { fail "$1: the good request got $CODE: $BODY"; return; }
    [ "$(jq_py 'd["choices"][0]["message"]["content"] == r["chat"][r["prompts"][0]]')" = True ] ||
        fail "$1: the good request answered $BODY"
}

MAIN_LOG="$T_TMP/main.log"
start_server "$MAIN_LOG" --timeout 2 --max-body 65536 --max-tokens-limit 1500

answers_equal_generate() {
    CODE=$(curl -s -o "$T_TMP/body" -w '%{http_code}' "$URL/health"); [ "$CODE" = 200 ] || fail "/health: $CODE"
    CODE=$(curl -s -o "$T_TMP/body" -w '%{http_code}' "$URL/v1/models"); BODY=$(cat "$T_TMP/body")
    [ "$(jq_py 'd["object"] == "list" and d["data"][0]["object"] == "model" and d["data"][0]["id"].endswith("model")')" = True ] ||
        fail "/v1/models: $CODE $BODY"
    for p in "$P0" "hi" "Ünïcödé ✓ — Σ"; do
        q=$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$p")
        post /v1/chat/completions "{\"model\": \"x\", \"messages\": [{\"role\": \"user\", \"content\": $q}], \"max_tokens\": $N, \"temperature\": 0, \"seed\": 3, \"user\": \"unknown fields are ignored\", \"frequency_penalty\": 0}"
        [ "$(jq_py "d['choices'][0]['message'] == {'role': 'assistant', 'content': r['chat'][$q]} and d['object'] == 'chat.completion' and d['id'].startswith('chatcmpl-') and d['created'] > 1.7e9 and d['usage']['completion_tokens'] == r['tokens']['chat'][$q] and d['usage']['total_tokens'] == d['usage']['prompt_tokens'] + d['usage']['completion_tokens'] and d['choices'][0]['finish_reason'] == ('length' if r['tokens']['chat'][$q] == $N else 'stop')")" = True ] ||
            fail "chat $p: $CODE $BODY"
        post /v1/completions "{\"prompt\": $q, \"max_tokens\": $N, \"temperature\": 0}"
        [ "$(jq_py "d['choices'][0]['text'] == r['completion'][$q] and d['object'] == 'text_completion' and d['id'].startswith('cmpl-') and d['usage']['completion_tokens'] == r['tokens']['completion'][$q]")" = True ] ||
            fail "completion $p: $CODE $BODY"
    done
    # the prompt is the chat template's rendering: its token count is lorac tokenize --chat's
    post /v1/chat/completions "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"Adds rs1 \"}, {\"type\": \"text\", \"text\": \"and rs2 into rd\"}]}], \"max_tokens\": $N, \"temperature\": 0}"
    [ "$(jq_py 'd["usage"]["prompt_tokens"] == r["prompt_ids"] and d["choices"][0]["message"]["content"] == r["chat"][r["prompts"][0]]')" = True ] ||
        fail "content parts / prompt_tokens: $BODY"
    # sampling with a seed: the same tokens as lorac generate --temp --top-p --seed
    post /v1/chat/completions "{\"messages\": [{\"role\": \"user\", \"content\": \"$P0\"}], \"max_tokens\": $N, \"temperature\": 0.9, \"top_p\": 0.95, \"seed\": 42}"
    [ "$(jq_py 'd["choices"][0]["message"]["content"] == r["sampled"] != r["chat"][r["prompts"][0]]')" = True ] ||
        fail "seeded sampling: $BODY (lorac generate: $(jq_py 'r["sampled"]'))"
    # max_tokens absent: bounded by --default-max-tokens and the context; max_tokens 0 gives nothing
    post /v1/completions "{\"prompt\": [\"hi\"], \"max_tokens\": 0}"
    [ "$(jq_py 'd["choices"][0]["text"] == "" and d["choices"][0]["finish_reason"] == "length"')" = True ] || fail "max_tokens 0: $BODY"
}

streaming_equals_generate() {
    for kind in chat completion; do
        if [ $kind = chat ]; then path=/v1/chat/completions; req="\"messages\": [{\"role\": \"user\", \"content\": \"$P0\"}]"
        else path=/v1/completions; req="\"prompt\": \"$P0\""; fi
        curl -s -N -D "$T_TMP/h" -o "$T_TMP/sse" -H 'Content-Type: application/json' \
            --data-binary "{$req, \"max_tokens\": $N, \"temperature\": 0, \"stream\": true, \"stream_options\": {\"include_usage\": true}}" "$URL$path"
        grep -qi '^content-type: text/event-stream' "$T_TMP/h" || fail "$kind stream: $(cat "$T_TMP/h")"
        python3 - "$T_TMP/sse" "$REFS" $kind <<'PY' || fail "$kind stream differs (see above)"
import json, sys
raw, r, kind = open(sys.argv[1], encoding="utf-8").read(), json.load(open(sys.argv[2])), sys.argv[3]
blocks = [b for b in raw.split("\n\n") if b]
assert all(b.startswith("data: ") for b in blocks), blocks[:2]
assert blocks[-1] == "data: [DONE]", blocks[-1]
evs = [json.loads(b[6:]) for b in blocks[:-1]]
text, finish, usage = "", None, None
for e in evs:
    assert e["object"] == ("chat.completion.chunk" if kind == "chat" else "text_completion"), e
    assert e["id"] == evs[0]["id"]
    if e.get("usage"): usage = e["usage"]; assert e["choices"] == [] and e is evs[-1]; continue
    c = e["choices"][0]
    text += (c["delta"].get("content") or "") if kind == "chat" else c["text"]
    if c["finish_reason"]: finish = c["finish_reason"]
if kind == "chat": assert evs[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}, evs[0]
p = r["prompts"][0]
assert text == r[kind][p], (text, r[kind][p])
assert finish == ("length" if r["tokens"][kind][p] == r["max_tokens"] else "stop"), finish
assert usage["completion_tokens"] == r["tokens"][kind][p], usage
PY
    done
}

# Stop strings spanning token boundaries (built from the streamed pieces), as a string
# and as an array, whole and streamed: the answer is the reference cut before the first
# occurrence, nothing of the stop string leaks, finish_reason is "stop".
stop_strings() {
    curl -s -N -o "$T_TMP/sse" -H 'Content-Type: application/json' \
        --data-binary "{\"prompt\": \"$P0\", \"max_tokens\": $N, \"temperature\": 0, \"stream\": true}" "$URL/v1/completions"
    python3 - "$T_TMP/sse" "$REFS" "$URL" <<'PY' || fail "stop strings (see above)"
import json, sys, urllib.request
raw, r, url = open(sys.argv[1], encoding="utf-8").read(), json.load(open(sys.argv[2])), sys.argv[3]
pieces = [json.loads(b[6:])["choices"][0]["text"] for b in raw.split("\n\n") if b.startswith("data: {")]
pieces = [p for p in pieces if p]
full = "".join(pieces)
assert full == r["completion"][r["prompts"][0]]
def ask(stop, stream):
    body = json.dumps({"prompt": r["prompts"][0], "max_tokens": r["max_tokens"], "temperature": 0, "stop": stop,
                       "stream": stream}).encode()
    out = urllib.request.urlopen(urllib.request.Request(url + "/v1/completions", body,
                                 {"Content-Type": "application/json"}), timeout=30).read().decode()
    if not stream:
        c = json.loads(out)["choices"][0]; return c["text"], c["finish_reason"]
    text, fin = "", None
    for b in out.split("\n\n"):
        if b.startswith("data: {"):
            c = json.loads(b[6:])["choices"][0]; text += c["text"]; fin = c["finish_reason"] or fin
    return text, fin
checked = 0
for i in range(1, len(pieces)):
    left, right = pieces[i - 1], pieces[i]
    stop = left[-2:] + right[:2]
    if len(stop) < 2: continue
    want = full[:full.find(stop)]
    for s, stream in ((stop, False), ([ "never-there", stop ], True), (stop, True)):
        got = ask(s, stream)
        assert got == (want, "stop"), (s, stream, got, want)
    checked += 1
    if checked == 3: break
assert checked, pieces
assert ask(["never-there"], False) == (full, "length" if r["tokens"]["completion"][r["prompts"][0]] == r["max_tokens"] else "stop")
PY
}

per_request_adapters() {
    body="\"messages\": [{\"role\": \"user\", \"content\": \"$P0\"}], \"max_tokens\": $N, \"temperature\": 0"
    post /v1/chat/completions "{$body, \"adapters\": \"ad\"}"
    [ "$(jq_py 'd["choices"][0]["message"]["content"] == r["adapted"] != r["chat"][r["prompts"][0]]')" = True ] ||
        fail "adapters: $CODE $BODY"
    good_chat "after adapters (the base model again)"
    post /v1/chat/completions "{$body, \"adapters\": \"./ad\", \"stream\": true}"
    python3 -c 'import json,sys; r=json.load(open(sys.argv[2])); t="".join(json.loads(b[6:])["choices"][0]["delta"].get("content","") for b in sys.argv[1].split("\n\n") if b.startswith("data: {")); assert t == r["adapted"], t' "$BODY" "$REFS" ||
        fail "adapters, cached, streamed: $BODY"
}

bad_inputs() {
    C=/v1/chat/completions
    python3 - "$T_TMP" "$P0" >"$T_TMP/cases.json" <<'PY'
import json, sys
tmp, p0 = sys.argv[1], sys.argv[2]
C, Q = "/v1/chat/completions", "/v1/completions"
msg = '"messages": [{"role": "user", "content": "%s"}]' % p0
def c(extra): return "{%s, %s}" % (msg, extra)
cases = [
    [C, '{"messages": [{"role": "user", "content": "hi"}', 400, None], [C, "[1, 2]", 400, None], [C, "", 400, None],
    [C, "{}", 400, "messages"], [C, '{"messages": []}', 400, "messages"], [C, '{"messages": "hi"}', 400, "messages"],
    [C, '{"messages": [{"content": "hi"}]}', 400, "messages"],
    [C, '{"messages": [{"role": "user", "content": 5}]}', 400, "messages"],
    [C, '{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}', 400, "messages"],
    [C, '{"messages": [{"role": "assistant", "content": "x"}]}', 400, "messages"],
    [C, c('"max_tokens": "10"'), 400, "max_tokens"], [C, c('"max_tokens": 1.5'), 400, "max_tokens"],
    [C, c('"max_tokens": -1'), 400, "max_tokens"], [C, c('"max_tokens": 5000'), 400, "max_tokens"],
    [C, c('"temperature": "hot"'), 400, "temperature"], [C, c('"temperature": 3'), 400, "temperature"],
    [C, c('"top_p": 0'), 400, "top_p"], [C, c('"seed": "x"'), 400, "seed"], [C, c('"stop": 5'), 400, "stop"],
    [C, c('"stop": ["a", 1]'), 400, "stop"], [C, c('"stream": "yes"'), 400, "stream"], [C, c('"n": 2'), 400, "n"],
    [C, c('"model": 7'), 400, "model"], [C, c('"stream_options": true'), 400, "stream_options"],
    [C, c('"adapters": "../ad"'), 400, "adapters"], [C, c('"adapters": "%s/ad"' % tmp), 400, "adapters"],
    [C, c('"adapters": "nowhere"'), 400, "adapters"], [C, c('"adapters": "model"'), 400, "adapters"],
    [C, c('"adapters": 5'), 400, "adapters"],
    [Q, '{"prompt": ["a", "b"]}', 400, "prompt"], [Q, '{"prompt": {"a": 1}}', 400, "prompt"],
    [Q, '{"prompt": [1, 99999]}', 400, "prompt"], [Q, '{"max_tokens": 3}', 400, "prompt"],
    [Q, json.dumps({"prompt": "word " * 3000, "max_tokens": 10}), 400, "prompt", "context_length_exceeded"],
    [Q, json.dumps({"prompt": "x", "max_tokens": 20, "adapters": None}), 200, None],  # a control: fine
    [C, '{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10, "top_k": -1}', 400, "top_k"],
    [C, '{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "unknown": {"x": [1]}}', 200, None],
]
print(json.dumps(cases))
PY
    python3 tests/serve/scenarios.py "${URL##*:}" curl_errors "$REFS" "$T_TMP/cases.json" || fail "bad requests"
    # a body over --max-body (curl sends Expect: 100-continue; the answer comes first)
    python3 -c 'import json; print(json.dumps({"prompt": "x" * 70000}))' >"$T_TMP/big.json"
    CODE=$(curl -s -o "$T_TMP/body" -w '%{http_code}' -H 'Content-Type: application/json' --data-binary @"$T_TMP/big.json" "$URL/v1/completions")
    [ "$CODE" = 413 ] && grep -q request_too_large "$T_TMP/body" || fail "huge body: $CODE $(cat "$T_TMP/body")"
    CODE=$(curl -s -o "$T_TMP/body" -w '%{http_code}' -H 'Expect:' -H 'Content-Type: application/json' --data-binary @"$T_TMP/big.json" "$URL/v1/completions")
    [ "$CODE" = 413 ] || fail "huge body without Expect: $CODE"
    good_chat "after huge bodies"
    # unknown routes and wrong methods
    CODE=$(curl -s -o "$T_TMP/body" -w '%{http_code}' "$URL/v1/nothing"); [ "$CODE" = 404 ] || fail "404: $CODE"
    CODE=$(curl -s -o "$T_TMP/body" -w '%{http_code}' "$URL/v1/chat/completions"); [ "$CODE" = 405 ] || fail "405: $CODE"
    CODE=$(curl -s -o "$T_TMP/body" -w '%{http_code}' "$URL/v1/models/other"); [ "$CODE" = 404 ] || fail "model 404: $CODE"
    # a chunked request body from curl
    CODE=$(curl -s -o "$T_TMP/body" -w '%{http_code}' -H 'Transfer-Encoding: chunked' -H 'Content-Type: application/json' \
        --data-binary "{\"prompt\": \"$P0\", \"max_tokens\": $N, \"temperature\": 0}" "$URL/v1/completions")
    BODY=$(cat "$T_TMP/body")
    [ "$CODE" = 200 ] && [ "$(jq_py 'd["choices"][0]["text"] == r["completion"][r["prompts"][0]]')" = True ] ||
        fail "chunked body: $CODE $BODY"
}

raw_http() { python3 tests/serve/scenarios.py "${URL##*:}" raw "$REFS" || fail "raw HTTP scenarios"; }
client_disconnects() {
    python3 tests/serve/scenarios.py "${URL##*:}" disconnect "$REFS" || fail "disconnect scenario"
    sleep 0.3
    grep -q "client gone: stopped" "$MAIN_LOG" || fail "no generation was stopped for a departed client: $(grep serve: "$MAIN_LOG" | tail -3)"
}
load_run() { python3 tests/serve/scenarios.py "${URL##*:}" load "$REFS" || fail "load run"; }

run_test answers_equal_generate
run_test streaming_equals_generate
run_test stop_strings
run_test per_request_adapters
run_test bad_inputs
run_test raw_http
run_test client_disconnects
run_test load_run
T_CUR=0; stop_server TERM; grep -q "serve: stopped" "$MAIN_LOG" || fail "no 'stopped' line"
[ $T_CUR -eq 0 ] || { T_FAILED=$((T_FAILED + 1)); echo "FAIL sigterm_shutdown"; }

# A second server: an API key from the environment, a queue of one.
KEY_LOG="$T_TMP/key.log"
LORAC_API_KEY=s3cret start_server "$KEY_LOG" --queue 1 --max-tokens-limit 1500

api_key() {
    grep -q "API key required" "$KEY_LOG" || fail "the start line does not mention the key"
    CODE=$(curl -s -o "$T_TMP/body" -w '%{http_code}' "$URL/v1/models"); BODY=$(cat "$T_TMP/body")
    [ "$CODE" = 401 ] && [ "$(jq_py 'd["error"]["code"]')" = invalid_api_key ] || fail "no key: $CODE $BODY"
    CODE=$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer wrong' "$URL/v1/models"); [ "$CODE" = 401 ] || fail "wrong key: $CODE"
    post /v1/completions '{"prompt": "hi"}'; [ "$CODE" = 401 ] || fail "no key on completions: $CODE"
    CODE=$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer s3cret' "$URL/v1/models"); [ "$CODE" = 200 ] || fail "right key: $CODE"
    CODE=$(curl -s -o /dev/null -w '%{http_code}' "$URL/health"); [ "$CODE" = 200 ] || fail "/health needs no key: $CODE"
}

queue_full() {
    SERVE_KEY=s3cret python3 tests/serve/scenarios.py "${URL##*:}" queue "$REFS" || fail "queue scenario"
}

openai_client() {
    NPM_DIR=build/npm
    if [ ! -f "$NPM_DIR/node_modules/openai/package.json" ]; then
        if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
            skip "node/npm not installed (scripts/deps.sh installs them)"; return
        fi
        mkdir -p "$NPM_DIR"
        if ! timeout 120 npm install --prefix "$NPM_DIR" --no-audit --no-fund --loglevel=error openai@6 >"$T_TMP/npm.log" 2>&1; then
            skip "the npm registry is unreachable: $(tail -1 "$T_TMP/npm.log")"; return
        fi
    fi
    node tests/serve/openai_client.cjs "$PWD/$NPM_DIR/node_modules/openai" "$URL/v1" s3cret "$REFS" || fail "openai client"
}

run_test api_key
run_test queue_full
run_test openai_client
# SIGINT during a stream: the stream ends properly ([DONE]), the server exits 0
T_CUR=0
curl -s -N -o "$T_TMP/cut.sse" -H 'Authorization: Bearer s3cret' -H 'Content-Type: application/json' \
    --data-binary "{\"prompt\": \"$P0\", \"max_tokens\": 1500, \"stream\": true}" "$URL/v1/completions" &
CURL=$!
i=0; while [ ! -s "$T_TMP/cut.sse" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
stop_server INT; wait $CURL
grep -q "serve: stopped" "$KEY_LOG" || fail "no 'stopped' line after SIGINT"
grep -q "server stopping: cut short" "$KEY_LOG" || fail "the running generation was not cut short: $(tail -3 "$KEY_LOG")"
[ "$(tail -c 14 "$T_TMP/cut.sse")" = "data: [DONE]" ] || fail "the stream cut by SIGINT did not end with [DONE]: $(tail -c 200 "$T_TMP/cut.sse")"
[ $T_CUR -eq 0 ] || { T_FAILED=$((T_FAILED + 1)); echo "FAIL sigint_shutdown"; }

command_errors() {
    expect_exit 2 "$LORAC" serve --port 0
    one_line "$ERR_TXT"; contains "$ERR_TXT" "--model"
    expect_exit 2 "$LORAC" serve --model "$M" --port 99999
    one_line "$ERR_TXT"
    expect_exit 2 "$LORAC" serve --model "$T_TMP/nowhere" --port 0
    one_line "$ERR_TXT"; contains "$ERR_TXT" "nowhere"
    expect_exit 2 "$LORAC" serve --model "$M" --port 0 --chat-template nope
    one_line "$ERR_TXT"
    # a port in use
    python3 -c 'import socket,time,sys; s=socket.socket(); s.bind(("127.0.0.1",0)); s.listen(); print(s.getsockname()[1], flush=True); time.sleep(5)' >"$T_TMP/port" &
    holder=$!
    i=0; while [ ! -s "$T_TMP/port" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    expect_exit 2 "$LORAC" serve --model "$M" --port "$(cat "$T_TMP/port")" --chat-template mistral
    one_line "$ERR_TXT"; contains "$ERR_TXT" "in use"
    kill $holder 2>/dev/null; wait $holder 2>/dev/null
}
run_test command_errors
finish
