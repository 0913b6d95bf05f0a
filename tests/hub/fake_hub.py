#!/usr/bin/env python3
"""fake_hub.py — a tiny Hugging Face Hub look-alike on loopback for tests/hub/test_download.sh.

Usage: fake_hub.py ROOT PORT_FILE
Serves ROOT/<org>/<name>/... as model repos, the way the Hub's HTTP API does:
  GET /api/models/<org>/<name>/revision/<rev>   {"sha", "siblings": [{"rfilename", "size"}]}
  GET /<org>/<name>/resolve/<rev>/<path>       the file (Range "bytes=N-" answered with 206)
Failure injection, by organisation name or file name:
  org "broken":  every file is sent truncated (half the bytes, full Content-Length, then close)
  org "flaky":   the first full (non-Range) request of each *.safetensors is truncated
  tokenizer.json is answered with a 302 redirect to /cdn/<org>/<name>/<path>
  org "private": 401 unless the request carries "Authorization: Bearer sekrit"
  org "gated":   403 always
  org "corrupt": the listing gives a wrong LFS sha256 for *.safetensors
Files over 1 KiB are listed with {"lfs": {"sha256", "size"}} as the Hub does for LFS files.
  an unknown repo is a 404 with the Hub's JSON error body.
Data sets live under ROOT/datasets/<org>/<name>, at /api/datasets/... and /datasets/<org>/<name>/resolve/...
Binds 127.0.0.1 on a free port and writes the port number to PORT_FILE.
"""
import hashlib
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.abspath(sys.argv[1])
SEEN = set()
LOCK = threading.Lock()


def repo_dir(org, name, kind=""):
    d = os.path.join(ROOT, kind, org, name)
    return d if os.path.isdir(d) and ".." not in (org, name) else None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send_json(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def not_found(self):
        self.send_json(404, {"error": "Repository not found"})

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        parts = path.strip("/").split("/")
        org = parts[3] if parts[0] in ("api", "datasets") and len(parts) > 3 else parts[0]
        if parts[0] == "datasets" and len(parts) > 1:
            org = parts[1]
        if org == "private" and self.headers.get("Authorization") != "Bearer sekrit":
            return self.send_json(401, {"error": "Invalid credentials"})
        if org == "gated":
            return self.send_json(403, {"error": "Access to this repo is restricted"})
        if len(parts) >= 6 and parts[0] == "api" and parts[1] in ("models", "datasets") and parts[4] == "revision":
            return self.listing(parts[2], parts[3], "" if parts[1] == "models" else "datasets")
        if len(parts) >= 6 and parts[0] == "datasets" and parts[3] == "resolve":
            return self.serve(parts[1], parts[2], "/".join(parts[5:]), "datasets")
        if len(parts) >= 5 and parts[2] == "resolve":
            org, name, rel = parts[0], parts[1], "/".join(parts[4:])
            if rel == "tokenizer.json":
                self.send_response(302)
                self.send_header("Location", "/cdn/%s/%s/%s" % (org, name, rel))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            return self.serve(org, name, rel)
        if len(parts) >= 4 and parts[0] == "cdn":
            return self.serve(parts[1], parts[2], "/".join(parts[3:]))
        self.not_found()

    def listing(self, org, name, kind=""):
        d = repo_dir(org, name, kind)
        if not d:
            return self.not_found()
        sib = []
        for base, _, files in os.walk(d):
            for f in sorted(files):
                full = os.path.join(base, f)
                item = {"rfilename": os.path.relpath(full, d), "size": os.path.getsize(full)}
                if item["size"] > 1024:
                    digest = hashlib.sha256(open(full, "rb").read()).hexdigest()
                    if org == "corrupt" and f.endswith(".safetensors"):
                        digest = hashlib.sha256(b"something else").hexdigest()
                    item["lfs"] = {"sha256": digest, "size": item["size"]}
                sib.append(item)
        sha = hashlib.sha1((org + "/" + name).encode()).hexdigest()
        self.send_json(200, {"id": org + "/" + name, "sha": sha, "siblings": sib})

    def serve(self, org, name, rel, kind=""):
        d = repo_dir(org, name, kind)
        full = os.path.normpath(os.path.join(d, rel)) if d else None
        if not full or not full.startswith(d + os.sep) or not os.path.isfile(full):
            return self.not_found()
        data = open(full, "rb").read()
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[6:-1])
        truncate = org == "broken"
        if org == "flaky" and rel.endswith(".safetensors") and start == 0:
            with LOCK:
                truncate = full not in SEEN
                SEEN.add(full)
        if start > len(data):
            self.send_response(416)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = data[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data)))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if truncate:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


def main():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(sys.argv[2] + ".tmp", "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(sys.argv[2] + ".tmp", sys.argv[2])
    srv.serve_forever()


if __name__ == "__main__":
    main()
