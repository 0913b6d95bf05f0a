#!/usr/bin/env python3
"""Single-thread encoding speed: lorac against the `tokenizers` and `sentencepiece`
libraries on the same text, in one run. Run where those packages are installed (the GPU
machine), from the repository root, after building lorac:

    python3 bench/tokenizer_speed.py --lorac build/lorac --assets ASSETS_DIR

The text is the RISC-V rows of the shared assets repeated to 8 MB. Each tool encodes it
line by line (one call per row) and as one string; the time counted is the encoding
calls alone (lorac reports it with `tokenize --count --json`, which excludes reading
and printing). Token counts must agree, else the comparison is void.
"""
import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def lorac_count(lorac, tok, data, jsonl):
    args = [lorac, "tokenize", "--tokenizer", tok, "--count", "--json"]
    if tok.endswith(".model"):
        args.append("--no-parse-special")  # sp.encode reads "<s>" in text as text
    if jsonl:
        args.append("--jsonl")
    p = subprocess.run(args, input=data.encode("utf-8"), capture_output=True, check=True)
    r = json.loads(p.stdout)
    return r["tokens"], r["seconds"]


def best(fn, repeat):
    out = None
    t = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        t = min(t, time.perf_counter() - t0)
    return out, t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lorac", default="build/lorac")
    ap.add_argument("--assets", default=".assets")
    ap.add_argument("--mb", type=float, default=8.0)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    import sentencepiece as spm
    import tokenizers

    rows = []
    for name in ("train.jsonl", "valid.jsonl"):
        with open(os.path.join(a.assets, "riscv-instruction-specification", name), encoding="utf-8") as f:
            rows += [json.loads(l)["text"] for l in f if l.strip()]
    lines = []
    size = 0
    while size < a.mb * 1e6:
        for r in rows:
            lines.append(r)
            size += len(r.encode("utf-8"))
    whole = "\n".join(lines)
    nbytes = len(whole.encode("utf-8"))
    jsonl = "\n".join(json.dumps(l, ensure_ascii=False) for l in lines) + "\n"
    mis = os.path.join(a.assets, "mistral-7b-instruct-v0.3-tokenizer")
    results = []

    for fname in ("tokenizer.json", "tokenizer.model"):
        path = os.path.join(mis, fname)
        if fname.endswith(".json"):
            t = tokenizers.Tokenizer.from_file(path)
            peer = "tokenizers %s" % tokenizers.__version__
            enc_lines = lambda: sum(len(t.encode(l, add_special_tokens=False).ids) for l in lines)
            enc_whole = lambda: len(t.encode(whole, add_special_tokens=False).ids)
        else:
            sp = spm.SentencePieceProcessor(model_file=path)
            peer = "sentencepiece %s" % spm.__version__
            enc_lines = lambda: sum(len(sp.encode(l)) for l in lines)
            enc_whole = lambda: len(sp.encode(whole))
        for mode, fn, data, is_jsonl in (("line by line", enc_lines, jsonl, True),
                                         ("one string", enc_whole, whole, False)):
            n_peer, t_peer = best(fn, a.repeat)
            n_lc, t_lc = min((lorac_count(a.lorac, path, data, is_jsonl) for _ in range(a.repeat)),
                             key=lambda x: x[1])
            results.append((fname, mode, peer, nbytes / t_peer / 1e6, nbytes / t_lc / 1e6,
                            n_peer, n_lc))

    print("\nSingle-thread encoding of %.1f MB (RISC-V rows, %d lines)" % (nbytes / 1e6, len(lines)))
    print("| file | mode | peer | peer MB/s | lorac MB/s | lorac / peer | tokens agree |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    ok = True
    for f, mode, peer, mp, ml, n_p, n_l in results:
        agree = "yes" if n_p == n_l else "NO (%d vs %d)" % (n_l, n_p)
        ok &= n_p == n_l
        print("| %s | %s | %s | %.2f | %.2f | %.2fx | %s |" % (f, mode, peer, mp, ml, ml / mp, agree))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
