#!/usr/bin/env python3
"""hf_cache.py — huggingface_hub's cache layout, written and checked by its rules, in pure
Python (huggingface_hub itself is not installed here), for tests/hub/test_cache.sh.

  hf_cache.py make CACHE TYPE REPO_ID COMMIT SRC_DIR [--ref NAME]... [--lfs-over N]
      writes SRC_DIR's files into CACHE the way huggingface_hub's hf_hub_download does
  hf_cache.py check CACHE TYPE REPO_ID REVISION [--served DIR] [--files F...] [--complete]
      checks that a reader following huggingface_hub's rules accepts the cache of
      REPO_ID at REVISION; prints one "FAIL: ..." line per problem, exit status 1 if any

The rules, from huggingface_hub's src/huggingface_hub/file_download.py (hf_hub_download,
_create_symlink, _cache_commit_hash_for_specific_revision, repo_folder_name,
try_to_load_from_cache, _normalize_etag) and its cache docstring:
  R1 the repo folder is CACHE/"{type}s--" + repo_id with "/" replaced by "--"
  R2 blobs/ETAG holds the bytes; ETAG is the normalised (W/ and quotes stripped)
     X-Linked-Etag header (an LFS file: its sha256) or else the ETag header (a git file:
     its git blob sha1, i.e. sha1(b"blob %d\\0" % size + bytes))
  R3 snapshots/COMMIT/PATH is a symlink whose target is
     os.path.relpath(blob, os.path.dirname(pointer)): "../../blobs/ETAG" for a top-level
     file, one more "../" per folder in PATH
  R4 refs/REVISION holds the commit, written with Path.write_text (no newline) and read
     with open().read() (no strip) by try_to_load_from_cache, so a newline would break
     the look-up; a revision that is already a commit hash (^[0-9a-f]{40}$) gets no ref;
     "refs/pr/1" nests as refs/refs/pr/1
  R5 a download in progress is blobs/ETAG.incomplete; .locks/REPO_FOLDER/ETAG.lock is
     the lock file (left behind); .no_exist/COMMIT/PATH marks a file known to be absent
"""
import hashlib
import os
import re
import sys

COMMIT = re.compile(r"^[0-9a-f]{40}$")


def git_blob_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def repo_folder(cache, kind, repo_id):  # R1
    return os.path.join(cache, "--".join([kind + "s"] + repo_id.split("/")))


def make(cache, kind, repo_id, commit, src, refs, lfs_over):
    folder = repo_folder(cache, kind, repo_id)
    for base, _, files in os.walk(src):
        for f in sorted(files):
            full = os.path.join(base, f)
            rel = os.path.relpath(full, src)
            data = open(full, "rb").read()
            lfs = len(data) > lfs_over or f.endswith(".safetensors")
            etag = hashlib.sha256(data).hexdigest() if lfs else git_blob_sha1(data)  # R2
            blob = os.path.join(folder, "blobs", etag)
            os.makedirs(os.path.dirname(blob), exist_ok=True)
            with open(blob, "wb") as out:
                out.write(data)
            pointer = os.path.join(folder, "snapshots", commit, rel)
            os.makedirs(os.path.dirname(pointer), exist_ok=True)
            if os.path.lexists(pointer):
                os.remove(pointer)
            os.symlink(os.path.relpath(blob, os.path.dirname(pointer)), pointer)  # R3
            lock = os.path.join(cache, ".locks", os.path.basename(folder), etag + ".lock")  # R5
            os.makedirs(os.path.dirname(lock), exist_ok=True)
            open(lock, "a").close()
    for ref in refs:  # R4
        path = os.path.join(folder, "refs", ref)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as out:
            out.write(commit)
    print(os.path.join(folder, "snapshots", commit))


def check(cache, kind, repo_id, revision, served, files, complete):
    bad = []
    folder = repo_folder(cache, kind, repo_id)
    if not os.path.isdir(folder):
        print("FAIL: no repo folder %s" % folder)
        return 1
    if COMMIT.match(revision):
        commit = revision
        if os.path.exists(os.path.join(folder, "refs", revision)):
            bad.append("a ref file named after a commit hash (R4)")
    else:
        ref = os.path.join(folder, "refs", revision)
        if not os.path.isfile(ref):
            print("FAIL: no refs/%s" % revision)
            return 1
        commit = open(ref).read()  # as try_to_load_from_cache reads it: no strip
        if not COMMIT.match(commit) or commit.endswith("\n"):
            bad.append("refs/%s holds %r, not exactly a 40-hex commit (R4)" % (revision, commit))
    snap = os.path.join(folder, "snapshots", commit)
    if not os.path.isdir(snap):
        for b in bad + ["no snapshot folder for commit %r" % commit]:
            print("FAIL: " + b)
        return 1
    blobs = os.path.realpath(os.path.join(folder, "blobs"))
    seen = []
    for base, dirs, names in os.walk(snap):
        for name in names:
            pointer = os.path.join(base, name)
            rel = os.path.relpath(pointer, snap)
            seen.append(rel)
            if not os.path.islink(pointer):
                bad.append("%s is not a symlink (R3)" % rel)
                continue
            target = os.readlink(pointer)
            if os.path.isabs(target):
                bad.append("%s links to an absolute path %s (R3)" % (rel, target))
                continue
            etag = os.path.basename(target)
            blob = os.path.join(folder, "blobs", etag)
            want = os.path.relpath(blob, os.path.dirname(pointer))
            if target != want:
                bad.append("%s links to %s, huggingface_hub writes %s (R3)" % (rel, target, want))
            if os.path.dirname(os.path.realpath(pointer)) != blobs:
                bad.append("%s does not resolve into blobs/ (R3)" % rel)
            if not os.path.isfile(blob) or os.path.islink(blob):
                bad.append("%s: blob %s missing or not a plain file (R2)" % (rel, etag))
                continue
            data = open(blob, "rb").read()
            if len(etag) == 64:
                if hashlib.sha256(data).hexdigest() != etag:
                    bad.append("%s: blob %s is not the sha256 of its bytes (R2)" % (rel, etag))
            elif len(etag) == 40:
                if git_blob_sha1(data) != etag:
                    bad.append("%s: blob %s is not the git blob sha1 of its bytes (R2)" % (rel, etag))
            else:
                bad.append("%s: blob name %s is neither a sha256 nor a git sha1 (R2)" % (rel, etag))
            if served is not None:
                src = os.path.join(served, rel)
                if not os.path.isfile(src) or open(src, "rb").read() != data:
                    bad.append("%s differs from the served file" % rel)
    for f in files:
        # try_to_load_from_cache: snapshots/COMMIT/FILE must be a file (through the link)
        if not os.path.isfile(os.path.join(snap, f)):
            bad.append("try_to_load_from_cache would not find %s" % f)
    if complete:
        for f in os.listdir(os.path.join(folder, "blobs")):
            if f.endswith(".incomplete"):
                bad.append("blobs/%s left behind (R5)" % f)
    for b in bad:
        print("FAIL: " + b)
    if not bad:
        print("ok %d files" % len(seen))
    return 1 if bad else 0


def main(argv):
    opts = {"--ref": [], "--files": [], "--served": None, "--lfs-over": 10 << 20, "--complete": False}
    pos, key = [], None
    for a in argv[1:]:
        if a in ("--ref", "--served", "--lfs-over"):
            key = a
        elif a == "--files":
            key = "--files"
        elif a == "--complete":
            opts["--complete"], key = True, None
        elif key == "--files":
            opts["--files"].append(a)
        elif key == "--ref":
            opts["--ref"].append(a)
            key = None
        elif key:
            opts[key] = a
            key = None
        else:
            pos.append(a)
    if len(pos) == 6 and pos[0] == "make":
        make(pos[1], pos[2], pos[3], pos[4], pos[5], opts["--ref"], int(opts["--lfs-over"]))
        return 0
    if len(pos) == 5 and pos[0] == "check":
        return check(pos[1], pos[2], pos[3], pos[4], opts["--served"], opts["--files"], opts["--complete"])
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
