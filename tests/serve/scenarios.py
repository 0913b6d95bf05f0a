"""scenarios.py — raw-socket and concurrent checks of `lorac serve`, run by test_serve.sh.

usage: python3 tests/serve/scenarios.py PORT SCENARIO REFS_JSON

REFS_JSON holds the reference answers made with `lorac generate --json` for the same
prompts: {"chat": {prompt: text}, "completion": {prompt: text}, "max_tokens": N, ...}.
Each scenario prints "  FAIL: ..." lines for what went wrong and exits 1 when anything
did; it always ends with a good request that must succeed (the server kept serving).
Standard library only (no third-party modules).
"""
import http.client
import json
import os
import socket
import sys
import threading
import time

PORT = int(sys.argv[1])
SCENARIO = sys.argv[2]
REFS = json.load(open(sys.argv[3])) if len(sys.argv) > 3 else {}
failures = []
KEY = os.environ.get("SERVE_KEY")  # the API key, when the server wants one
AUTH = b"Authorization: Bearer %s\r\n" % KEY.encode() if KEY else b""


def fail(msg):
    failures.append(msg)
    print("  FAIL: " + msg)


def connect(timeout=10):
    s = socket.create_connection(("127.0.0.1", PORT), timeout=timeout)
    return s


def recv_all(s, limit=10.0):
    """Reads until the peer closes (or the limit): the bytes and whether it closed."""
    s.settimeout(limit)
    data = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                return data, True
            data += b
    except socket.timeout:
        return data, False
    except ConnectionResetError:
        return data, True


def read_response(f):
    """Reads one HTTP response from a file object: (status, headers, body bytes)."""
    line = f.readline()
    if not line:
        return None, {}, b""
    parts = line.decode().split(" ", 2)
    status = int(parts[1])
    headers = {}
    while True:
        h = f.readline().decode()
        if h in ("\r\n", "\n", ""):
            break
        k, v = h.split(":", 1)
        headers[k.strip().lower()] = v.strip()
    body = b""
    if "content-length" in headers:
        body = f.read(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while True:
            n = int(f.readline().strip(), 16)
            if n == 0:
                f.readline()
                break
            body += f.read(n)
            f.readline()
    else:
        body = f.read()
    return status, headers, body


def request(method, path, body=None, headers=None, timeout=30):
    c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=timeout)
    h = {"Content-Type": "application/json"}
    if KEY:
        h["Authorization"] = "Bearer " + KEY
    h.update(headers or {})
    c.request(method, path, body=json.dumps(body) if isinstance(body, dict) else body, headers=h)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, dict((k.lower(), v) for k, v in r.getheaders()), data


def chat_body(prompt, **kw):
    b = {"model": "m", "messages": [{"role": "user", "content": prompt}], "temperature": 0, "seed": 7,
         "max_tokens": REFS.get("max_tokens", 12)}
    b.update(kw)
    return b


def sse_text(data, chat=True):
    """The text of a server-sent event stream and its finish_reason; checks the framing."""
    text, finish, done = "", None, False
    for block in data.decode().split("\n\n"):
        if not block.strip():
            continue
        if not block.startswith("data: "):
            fail("SSE block without 'data: ': %r" % block[:80])
            continue
        payload = block[6:]
        if payload == "[DONE]":
            done = True
            continue
        if done:
            fail("data after [DONE]")
        ev = json.loads(payload)
        if not ev.get("choices"):
            continue
        ch = ev["choices"][0]
        text += (ch["delta"].get("content") or "") if chat else ch["text"]
        if ch.get("finish_reason"):
            finish = ch["finish_reason"]
    if not done:
        fail("the stream did not end with data: [DONE]")
    return text, finish


def good_request(what):
    """A good chat request must succeed with the reference answer."""
    p = REFS["prompts"][0]
    st, _, data = request("POST", "/v1/chat/completions", chat_body(p))
    if st != 200:
        fail("%s: the good request after it got %d: %s" % (what, st, data[:200]))
        return
    got = json.loads(data)["choices"][0]["message"]["content"]
    if got != REFS["chat"][p]:
        fail("%s: the good request after it answered %r, lorac generate %r" % (what, got, REFS["chat"][p]))


# ---- scenarios ----

def raw():
    """Malformed and unusual HTTP over raw sockets; each followed by a good request."""
    timeout = REFS["timeout_s"]
    cases = [
        (b"GARBAGE\r\n\r\n", 400, "no version"),
        (b"GET /v1/models HTTP/2.0\r\nHost: x\r\n\r\n", 505, "HTTP/2.0"),
        (b"GET /v1/models HTTP/1.1\r\n\r\n", 400, "no Host"),
        (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n\r\n", 411, "no Content-Length"),
        (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n", 413, "declared huge"),
        (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400, "bad length"),
        (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "gzip"),
        (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "bad chunk"),
        (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n", 400,
         "both framings"),
        (b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 20000 + b"\r\n\r\n", 431, "huge head"),
        (b"GET /v1/models HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400, "folded header"),
    ]
    for req, want, what in cases:
        s = connect()
        s.sendall(req)
        data, closed = recv_all(s, 5)
        s.close()
        got = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else None
        if got != want:
            fail("%s: status %s, expected %d: %r" % (what, got, want, data[:200]))
        elif b'"error"' not in data:
            fail("%s: no error object in %r" % (what, data[:200]))
        if not closed:
            fail("%s: the connection stayed open after a %d" % (what, want))
    good_request("malformed heads")

    # a slow, partial request: 408 after the timeout, the connection closed
    s = connect()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{\"prompt\":")
    t0 = time.time()
    data, closed = recv_all(s, timeout + 5)
    s.close()
    if not data.startswith(b"HTTP/1.1 408"):
        fail("partial body: expected 408, got %r" % data[:100])
    if not closed or time.time() - t0 > timeout + 3:
        fail("partial body: not closed within the timeout (%.1f s)" % (time.time() - t0))
    # a connection that sends nothing is closed quietly after the timeout
    s = connect()
    data, closed = recv_all(s, timeout + 5)
    s.close()
    if data or not closed:
        fail("idle connection: expected a quiet close, got %r closed=%s" % (data[:80], closed))
    # a client that goes away mid-head
    s = connect()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHo")
    s.close()
    good_request("slow and partial requests")

    # keep-alive: two pipelined requests on one connection, both answered in order
    p = REFS["prompts"][0]
    body = json.dumps(chat_body(p)).encode()
    one = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    s = connect()
    s.sendall(one + one + b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    f = s.makefile("rb")
    for i in range(2):
        st, h, b = read_response(f)
        if st != 200 or json.loads(b)["choices"][0]["message"]["content"] != REFS["chat"][p]:
            fail("pipelined request %d: %s %r" % (i, st, b[:200]))
        if h.get("connection") != "keep-alive":
            fail("pipelined request %d: Connection %r" % (i, h.get("connection")))
    st, h, b = read_response(f)
    if st != 200 or h.get("connection") != "close" or json.loads(b)["data"][0]["object"] != "model":
        fail("Connection: close request: %s %r %r" % (st, h, b[:100]))
    rest = f.read()
    if rest:
        fail("bytes after the Connection: close answer: %r" % rest[:80])
    s.close()

    # HTTP/1.0: closes by default; a stream is delimited by the close
    s = connect()
    s.sendall(b"GET /health HTTP/1.0\r\n\r\n")
    data, closed = recv_all(s, 5)
    if not data.startswith(b"HTTP/1.1 200") or b"Connection: close" not in data or not closed:
        fail("HTTP/1.0 request: %r closed=%s" % (data[:200], closed))
    s.close()
    body = json.dumps(chat_body(p, stream=True)).encode()
    s = connect()
    s.sendall(b"POST /v1/chat/completions HTTP/1.0\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    data, closed = recv_all(s, 10)
    s.close()
    head, _, payload = data.partition(b"\r\n\r\n")
    if b"Transfer-Encoding" in head or not closed:
        fail("HTTP/1.0 stream: chunked or left open: %r" % head)
    elif sse_text(payload)[0] != REFS["chat"][p]:
        fail("HTTP/1.0 stream: text %r" % sse_text(payload)[0])

    # a chunked request body, sent in pieces, with Expect: 100-continue
    body = json.dumps(chat_body(p)).encode()
    s = connect()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
              b"Expect: 100-continue\r\nConnection: close\r\n\r\n")
    s.settimeout(5)
    cont = s.recv(25)
    if cont != b"HTTP/1.1 100 Continue\r\n\r\n":
        fail("Expect: 100-continue: got %r" % cont)
    for i in range(0, len(body), 7):
        piece = body[i:i + 7]
        s.sendall(b"%x;ext=1\r\n%s\r\n" % (len(piece), piece))
    s.sendall(b"0\r\nX-Trailer: y\r\n\r\n")
    data, _ = recv_all(s, 10)
    s.close()
    head, _, b = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200") or json.loads(b)["choices"][0]["message"]["content"] != REFS["chat"][p]:
        fail("chunked request body: %r" % data[:300])
    good_request("keep-alive, HTTP/1.0 and chunked bodies")


def disconnect():
    """A client that goes away mid-stream: the generation stops, the server goes on."""
    body = json.dumps(chat_body(REFS["prompts"][0], stream=True, max_tokens=REFS["long_tokens"])).encode()
    for _ in range(2):
        s = connect()
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        s.settimeout(10)
        got = s.recv(4096)
        if not got.startswith(b"HTTP/1.1 200"):
            fail("stream to abandon: %r" % got[:100])
        s.close()
    good_request("a client leaving mid-stream")


def queue():
    """With --queue 1: one running, one waiting, the next one gets 503; all recover."""
    long_body = json.dumps(chat_body(REFS["prompts"][0], stream=True, max_tokens=REFS["long_tokens"])).encode()
    req = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n%s" % (
        AUTH, len(long_body), long_body)
    a = connect()
    a.sendall(req)
    a.settimeout(10)
    if not a.recv(100).startswith(b"HTTP/1.1 200"):  # running now
        fail("queue: the first stream did not start")
    b = connect()
    b.sendall(req)  # waits in the queue
    time.sleep(0.3)
    st, h, data = request("POST", "/v1/chat/completions", chat_body(REFS["prompts"][0]))
    if st != 503 or "retry-after" not in h or json.loads(data)["error"]["code"] != "queue_full":
        fail("queue full: expected 503 queue_full with Retry-After, got %d %r" % (st, data[:200]))
    a.close()
    b.close()
    time.sleep(0.2)
    good_request("a full queue")


def load():
    """Several clients at once, every answer checked against lorac generate's."""
    clients, per_client = REFS["clients"], REFS["per_client"]
    results, lock = [], threading.Lock()

    def client(k):
        for i in range(per_client):
            p = REFS["prompts"][(k + i) % len(REFS["prompts"])]
            kind = ("chat", "completion")[(k + i) % 2]
            stream = (k + 2 * i) % 3 == 0
            if kind == "chat":
                path, body = "/v1/chat/completions", chat_body(p, stream=stream)
            else:
                path = "/v1/completions"
                body = {"prompt": p, "temperature": 0, "seed": 5, "max_tokens": REFS["max_tokens"], "stream": stream}
            try:
                st, _, data = request("POST", path, body, timeout=60)
            except Exception as e:  # noqa: BLE001 - any client failure is a test failure
                with lock:
                    results.append(("exception %r" % e, kind, p, None))
                continue
            if st != 200:
                got = "status %d %r" % (st, data[:100])
            elif stream:
                got = sse_text(data, kind == "chat")[0]
            else:
                ch = json.loads(data)["choices"][0]
                got = ch["message"]["content"] if kind == "chat" else ch["text"]
            with lock:
                results.append((got, kind, p, stream))

    t0 = time.time()
    ts = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    bad = [(g, k, p, s) for g, k, p, s in results if g != REFS[k][p]]
    if len(results) != clients * per_client:
        fail("load: %d answers for %d requests" % (len(results), clients * per_client))
    for g, k, p, s in bad[:5]:
        fail("load: %s %r (stream %s) answered %r, lorac generate %r" % (k, p, s, g, REFS[k][p]))
    print("  load: %d clients x %d requests, %d answers checked, %d wrong, %.2f s" %
          (clients, per_client, len(results), len(bad), time.time() - t0))
    good_request("the load run")


def curl_errors():
    """Bad requests through curl (one curl process, --next between requests): each gets
    its OpenAI error object with the right status and param, and the good request sent
    right after it on the same connection is answered correctly."""
    import subprocess
    import tempfile
    cases = json.load(open(sys.argv[4]))  # [[path, body, status, param (, code)], ...]; status 200: a control
    url = "http://127.0.0.1:%d" % PORT
    good = json.dumps(chat_body(REFS["prompts"][0]))
    tmp = tempfile.mkdtemp()
    args, outs = ["curl", "-s"], []
    for i, case in enumerate(cases):
        for j, (pth, b) in enumerate(((case[0], case[1]), ("/v1/chat/completions", good))):
            out = "%s/%d_%d" % (tmp, i, j)
            open(out + ".in", "w").write(b)
            if len(args) > 2:
                args.append("--next")
            args += ["-o", out, "-w", "%{http_code}\\n", "-H", "Content-Type: application/json",
                     "--data-binary", "@" + out + ".in", url + pth]
            outs.append(out)
    codes = subprocess.run(args, capture_output=True, text=True, timeout=120).stdout.split()
    if len(codes) != len(outs):
        fail("curl answered %d of %d requests" % (len(codes), len(outs)))
        return
    for i, case in enumerate(cases):
        path, body, status, param = case[:4]
        code, data = int(codes[2 * i]), open(outs[2 * i], "rb").read()
        try:
            if status == 200:
                ok = code == 200 and json.loads(data)["choices"][0]["finish_reason"] in ("stop", "length")
            else:
                err = json.loads(data)["error"]
                ok = (code == status and err["param"] == param and err["type"] == "invalid_request_error" and
                      err["message"] and "code" in err and (len(case) < 5 or err["code"] == case[4]))
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            fail("%s %s -> %d %r (wanted %d, param %s)" % (path, body[:120], code, data[:200], status, param))
        code, data = int(codes[2 * i + 1]), open(outs[2 * i + 1], "rb").read()
        if code != 200 or json.loads(data)["choices"][0]["message"]["content"] != REFS["chat"][REFS["prompts"][0]]:
            fail("the good request after %s %s -> %d %r" % (path, body[:80], code, data[:200]))
    print("  %d bad requests through curl, each followed by a good one" % len(cases))


{"raw": raw, "curl_errors": curl_errors, "disconnect": disconnect, "queue": queue, "load": load}[SCENARIO]()
sys.exit(1 if failures else 0)
