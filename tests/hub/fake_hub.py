#!/usr/bin/env python3
"""fake_hub.py — a tiny Hugging Face Hub look-alike on loopback for tests/hub/*.sh.

Usage: fake_hub.py ROOT PORT_FILE
Serves ROOT/<org>/<name>/... as model repos and ROOT/datasets/<org>/<name>/... as data
sets, the way the Hub's HTTP API does:
  GET /api/models/<org>/<name>/revision/<rev>?blobs=true
      {"sha", "siblings": [{"rfilename", "size", "blobId", "lfs": {"sha256", "size"}}]}
      (files over 1 KiB are "LFS" files: listed with "lfs"; blobId is the git blob sha1)
  HEAD|GET /<org>/<name>/resolve/<rev>/<path>  (and /datasets/<org>/<name>/resolve/...)
      every answer carries X-Repo-Commit (the listing's sha);
      a regular file: 200 with ETag "<git blob sha1>" (README.md: the weak form W/"...");
      an LFS file: 302 to the absolute URL /cdn/... with X-Linked-Etag "<sha256>" and
      X-Linked-Size, while its ETag names something else (as on the Hub);
      generation_config.json: a relative 307 to /moved/... (a renamed repo), which
      answers like resolve.
  GET /cdn/<org>/<name>/<path>   the bytes (Range "bytes=N-" answered with 206)
The datasets server, under /dsv (HF_DATASETS_SERVER=<endpoint>/dsv), from
ROOT/rows/<org>/<name>/<config>/<split>.jsonl:
  GET /dsv/splits?dataset=<org>/<name>   {"splits": [{"dataset", "config", "split"}], ...}
  GET /dsv/rows?dataset=..&config=..&split=..&offset=O&length=N   (N <= 100)
      {"features", "rows": [{"row_idx", "row", "truncated_cells"}], "num_rows_total",
       "num_rows_per_page", "partial"}; an unknown data set or split: 404 {"error"}
Failure injection, by organisation name or file name:
  org "broken":  every file is sent truncated (half the bytes, full Content-Length, then close)
  org "flaky":   the first full (non-Range) request of each *.safetensors is truncated
  org "private": 401 unless the request carries "Authorization: Bearer sekrit" (rows too)
  org "gated":   403 always
  org "corrupt": the listing gives a wrong LFS sha256 for *.safetensors
  org "noetag":  no ETag headers and no blobId/lfs in the listing
  org "rowsprivate": the datasets server wants the token (the Hub does not)
  org "rowsbusy": the first request for rows at offset 100 answers 500 (then it works)
  org "rowsfail": rows from offset 100 on answer 500 {"error": ...} always
  org "rowscut":  row 3 comes with truncated_cells ["description"]
An unknown repo is a 404 with the Hub's JSON error body.
Binds 127.0.0.1 on a free port and writes the port number to PORT_FILE.
"""
import hashlib
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

ROOT = os.path.abspath(sys.argv[1])
SEEN = set()
LOCK = threading.Lock()


def repo_dir(org, name, kind=""):
    d = os.path.join(ROOT, kind, org, name)
    return d if os.path.isdir(d) and ".." not in (org, name) else None


def git_blob_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def commit_of(org, name):
    return hashlib.sha1((org + "/" + name).encode()).hexdigest()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send_json(self, code, obj, extra=None):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not self.head:
            self.wfile.write(body)

    def not_found(self):
        self.send_json(404, {"error": "Repository not found"})

    def do_HEAD(self):
        self.head = True
        self.route()

    def do_GET(self):
        self.head = False
        self.route()

    def route(self):
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        if parts[0] == "dsv":
            return self.datasets_server(parts[1:], parse_qs(url.query))
        org = parts[3] if parts[0] == "api" and len(parts) > 3 else parts[0]
        if parts[0] in ("datasets", "moved", "cdn") and len(parts) > 1:
            org = parts[1]
        if parts[0] == "moved" and len(parts) > 2 and parts[1] == "datasets":
            org = parts[2]
        if org == "private" and self.headers.get("Authorization") != "Bearer sekrit":
            return self.send_json(401, {"error": "Invalid credentials"})
        if org == "gated":
            return self.send_json(403, {"error": "Access to this repo is restricted"})
        if len(parts) >= 6 and parts[0] == "api" and parts[1] in ("models", "datasets") and parts[4] == "revision":
            return self.listing(parts[2], parts[3], "" if parts[1] == "models" else "datasets")
        moved = parts[0] == "moved"
        if moved:
            parts = parts[1:]
        if len(parts) >= 6 and parts[0] == "datasets" and parts[3] == "resolve":
            return self.resolve(parts[1], parts[2], "/".join(parts[5:]), "datasets", moved)
        if len(parts) >= 5 and parts[2] == "resolve":
            return self.resolve(parts[0], parts[1], "/".join(parts[4:]), "", moved)
        if len(parts) >= 4 and parts[0] == "cdn":
            if parts[1] == "datasets":
                return self.serve(parts[2], parts[3], "/".join(parts[4:]), "datasets")
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
                data = open(full, "rb").read()
                item = {"rfilename": os.path.relpath(full, d), "size": len(data)}
                if org != "noetag":
                    item["blobId"] = git_blob_sha1(data)
                if len(data) > 1024 and org != "noetag":
                    digest = hashlib.sha256(data).hexdigest()
                    if org == "corrupt" and f.endswith(".safetensors"):
                        digest = hashlib.sha256(b"something else").hexdigest()
                    item["lfs"] = {"sha256": digest, "size": len(data)}
                sib.append(item)
        self.send_json(200, {"id": org + "/" + name, "sha": commit_of(org, name), "siblings": sib})

    def resolve(self, org, name, rel, kind, moved):
        d = repo_dir(org, name, kind)
        full = os.path.normpath(os.path.join(d, rel)) if d else None
        if not full or not full.startswith(d + os.sep) or not os.path.isfile(full):
            return self.not_found()
        prefix = "/datasets" if kind else ""
        rev = self.path.split("/resolve/", 1)[1].split("/", 1)[0]
        if rel == "generation_config.json" and not moved:
            self.send_response(307)
            self.send_header("Location", "/moved%s/%s/%s/resolve/%s/%s" % (prefix, org, name, rev, rel))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = open(full, "rb").read()
        hdr = {"X-Repo-Commit": commit_of(org, name)}
        if len(data) > 1024:
            if org != "noetag":
                hdr["X-Linked-Etag"] = '"%s"' % hashlib.sha256(data).hexdigest()
                hdr["ETag"] = '"%s"' % hashlib.sha1(b"pointer " + data[:64]).hexdigest()
            hdr["X-Linked-Size"] = str(len(data))
            host = self.headers.get("Host")
            hdr["Location"] = "http://%s/cdn%s/%s/%s/%s" % (host, prefix, org, name, rel)
            self.send_response(302)
            for k, v in hdr.items():
                self.send_header(k, v)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if org != "noetag":
            etag = '"%s"' % git_blob_sha1(data)
            hdr["ETag"] = "W/" + etag if rel == "README.md" else etag
        return self.serve(org, name, rel, kind, hdr)

    def serve(self, org, name, rel, kind="", hdr=None):
        d = repo_dir(org, name, kind)
        full = os.path.normpath(os.path.join(d, rel)) if d else None
        if not full or not full.startswith(d + os.sep) or not os.path.isfile(full):
            return self.not_found()
        data = open(full, "rb").read()
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[6:-1])
        truncate = org == "broken" and not self.head
        if org == "flaky" and rel.endswith(".safetensors") and start == 0 and not self.head:
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
        for k, v in (hdr or {}).items():
            self.send_header(k, v)
        if start:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data)))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.head:
            return
        if truncate:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    # ------------------------------------------------------------ datasets server

    def datasets_server(self, parts, q):
        ds = q.get("dataset", [""])[0]
        org = ds.split("/")[0]
        if org in ("private", "rowsprivate") and self.headers.get("Authorization") != "Bearer sekrit":
            return self.send_json(401, {"error": "The dataset does not exist, or is not accessible without authentication (private or gated). Please check the spelling of the dataset name or retry with authentication."})
        base = os.path.join(ROOT, "rows", ds)
        if not ds or ".." in ds or not os.path.isdir(base):
            return self.send_json(404, {"error": "The dataset does not exist on the Hub."})
        if parts == ["splits"]:
            splits = []
            for config in sorted(os.listdir(base)):
                for f in sorted(os.listdir(os.path.join(base, config))):
                    splits.append({"dataset": ds, "config": config, "split": f[: -len(".jsonl")]})
            return self.send_json(200, {"splits": splits, "pending": [], "failed": []})
        if parts != ["rows"]:
            return self.send_json(404, {"error": "Not found."})
        config, split = q.get("config", [""])[0], q.get("split", [""])[0]
        path = os.path.join(base, config, split + ".jsonl")
        if ".." in config + split or not os.path.isfile(path):
            return self.send_json(404, {"error": "The config or the split does not exist in the dataset"})
        offset, length = int(q.get("offset", ["0"])[0]), int(q.get("length", ["100"])[0])
        if length > 100:
            return self.send_json(422, {"error": "Parameter 'length' must not be greater than 100"})
        if offset >= 100 and org == "rowsfail":
            return self.send_json(500, {"error": "Unexpected error."})
        if offset >= 100 and org == "rowsbusy":
            with LOCK:
                first = path not in SEEN
                SEEN.add(path)
            if first:
                return self.send_json(500, {"error": "The server is busier than usual and the response is not ready yet. Please retry later."})
        rows = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
        page = []
        for i in range(offset, min(offset + length, len(rows))):
            cut = ["description"] if org == "rowscut" and i == 3 else []
            page.append({"row_idx": i, "row": rows[i], "truncated_cells": cut})
        feats = [{"feature_idx": k, "name": n, "type": {"dtype": "string", "_type": "Value"}}
                 for k, n in enumerate(rows[0].keys() if rows else [])]
        self.send_json(200, {"features": feats, "rows": page, "num_rows_total": len(rows),
                             "num_rows_per_page": 100, "partial": False})


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client that hangs up mid-answer (the truncation tests) is expected


def main():
    srv = Server(("127.0.0.1", 0), Handler)
    with open(sys.argv[2] + ".tmp", "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(sys.argv[2] + ".tmp", sys.argv[2])
    srv.serve_forever()


if __name__ == "__main__":
    main()
