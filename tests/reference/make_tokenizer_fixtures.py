#!/usr/bin/env python3
"""Reference fixtures for lorac's tokenizers, made with the real libraries.

Run on a machine with the `tokenizers` and `sentencepiece` Python packages (the GPU
machine has them), from the repository root:

    python3 tests/reference/make_tokenizer_fixtures.py --assets ASSETS_DIR

ASSETS_DIR is the shared assets folder (mistral-7b-instruct-v0.3-tokenizer/ and
riscv-instruction-specification/ inside it). The script

1. creates the project's own small tokenizers with the `tokenizers` library under
   tests/fixtures/tokenizers/<name>/ (tokenizer.json + tokenizer_config.json);
2. encodes and decodes a corpus of awkward strings with every tokenizer and writes
   tests/fixtures/tokenizer/<name>.jsonl;
3. encodes every RISC-V row and writes tests/fixtures/tokenizer/<name>.riscv.json
   (an FNV-1a hash of all ids plus every 50th row in full).

The fixture format is described in tests/fixtures/README.md.
"""
import argparse
import inspect
import json
import os
import struct
import sys

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
from tokenizers import pre_tokenizers, processors, trainers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OWN = os.path.join(ROOT, "tests", "fixtures", "tokenizers")
FIX = os.path.join(ROOT, "tests", "fixtures", "tokenizer")

GPT2_RE = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3_RE = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"""
             r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
# The demo tokenizer's chat template: the Mistral [INST] framing (lorac detects the
# family from it), without system prompts.
DEMO_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + '[/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' ' + message['content'] + eos_token }}{% endif %}{% endfor %}")

QWEN2_RE = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"""
            r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")

# The corpus: every case a tokenizer gets wrong in practice.
CORPUS = [
    "", " ", "  ", "\n", "\t", "a", "Hello", "Hello world", " Hello world", "  Hello  world  ",
    "Hello world ", "Hello\nworld", "Hello\n\nworld\n", "\n\nleading newlines", "tabs\tand\t\tmore",
    "trailing spaces   ", "   ", "a  b   c    d", "\r\n windows line\r\n", "mixed \t\n \t whitespace",
    "The quick brown fox jumps over the lazy dog.", "I'm sure it's what they'd've wanted, y'all.",
    "DON'T SHOUT, WE'LL HEAR YOU", "1234567890 3.14159 -42 1e-5 0x1F 1,000,000",
    "Write the RISC-V assembly instruction for the following operation:\nAdds rs1 and rs2.",
    "add rd, rs1, rs2", "addi x1, x0, -2048  # comment", "lw a0, 8(sp)\nsw a0, 12(sp)",
    "def f(x):\n    return x ** 2  # square\n", "if (a[i] != b[j]) { c->d = &e; }",
    "naïve café résumé", "nai\u0308ve cafe\u0301 (NFD)", "Ångström vs A\u030angstro\u0308m",
    "日本語のテキストです。", "中文文本，包括标点符号。", "한국어 텍스트", "Русский текст и ёлка",
    "النص العربي", "हिन्दी पाठ", "ภาษาไทย", "Ελληνικά κείμενα", "עברית",
    "emoji 😀👍🏽🇫🇷 👨‍👩‍👧‍👦 family", "🤖", "math ∀x∈ℝ: x²≥0 ∑∫√∞",
    "rare 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𓀀 ꙮ", "control \x01\x02\x07\x1b[31mred\x1b[0m \x7f", "nul byte \x00 inside",
    "zero\u200bwidth\u200cjoiners\u200d", "nbsp\u00a0and\u3000ideographic space", "line\u2028separator",
    "<s>", "</s>", "<s>[INST] What is 2+2?[/INST] 4</s>", "[INST]hello[/INST]", "a<s>b</s>c",
    "[INST] [INST] nested", "<unk> token", "<|im_start|>user\nhi<|im_end|>", "<|begin_of_text|>x",
    "<|endoftext|> end", " <mask> masked ", "<mask>x", "x<mask>", "[CODE] block [CODE]block",
    "xx [CODE]", "<0x41> literal byte piece", "▁ already a metaspace ▁▁", "ĠĠ byte level chars Ċ",
    "a" * 300, "supercalifragilisticexpialidocious" * 3, "😀" * 20, " " * 40 + "x",
    "URL https://example.com/path?q=1&r=2#frag", "email user@example.org", "C:\\path\\to\\file.txt",
    "{\"json\": [1, 2, {\"k\": null}]}", "<html><body>tag soup</body></html>",
]

RISCV_PROMPT = "Write the RISC-V assembly instruction for the following operation:\n"


def training_text(assets):
    """Text to train the project's own small tokenizers on: the standard library's
    docstrings (English prose and code words), the corpus, and RISC-V rows."""
    import collections, functools, itertools, json as j2, os as o2, pathlib, re, string, textwrap
    out = []
    for mod in (collections, functools, itertools, j2, o2, pathlib, re, string, textwrap, inspect):
        for _, obj in inspect.getmembers(mod):
            doc = getattr(obj, "__doc__", None)
            if isinstance(doc, str) and len(doc) > 40:
                out.append(doc)
    out.extend(CORPUS)
    rows = os.path.join(assets, "riscv-instruction-specification", "rows.jsonl")
    with open(rows, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            out.append(RISCV_PROMPT + r["description"] + " " + r["instructions"])
    return out


def spm_style(texts, vocab_size=1024):
    """A SentencePiece-style BPE with byte fallback, laid out like Mistral's
    tokenizer.json: specials 0-4, byte pieces 5-260, then the learned pieces."""
    t = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    t.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    tr = trainers.BpeTrainer(vocab_size=vocab_size - 5 - 256, min_frequency=2, special_tokens=[],
                             limit_alphabet=200, show_progress=False)
    t.train_from_iterator(texts, trainer=tr)
    j = json.loads(t.to_str())
    learned = sorted(j["model"]["vocab"].items(), key=lambda kv: kv[1])
    specials = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]"]
    vocab = {}
    for s in specials:
        vocab[s] = len(vocab)
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    for piece, _ in learned:
        if piece not in vocab:
            vocab[piece] = len(vocab)
    j["model"]["vocab"] = vocab
    j["model"]["merges"] = [m.split(" ") if isinstance(m, str) else m for m in j["model"]["merges"]]
    j["added_tokens"] = [
        {"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True} for i, s in enumerate(specials)]
    j["normalizer"] = None
    j["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first",
                          "split": False}
    j["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 0}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}
    j["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
        {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    return Tokenizer.from_str(json.dumps(j))


def byte_level(texts, regex, vocab_size, specials, nfc=False, ignore_merges=False, bos=None):
    t = Tokenizer(models.BPE(ignore_merges=ignore_merges) if ignore_merges else models.BPE())
    if nfc:
        t.normalizer = normalizers.NFC()
    if regex is None:
        t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        t.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    t.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=specials,
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    t.train_from_iterator(texts, trainer=tr)
    if bos:
        t.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single=bos + " $A", pair=bos + " $A " + bos + " $B",
                                          special_tokens=[(bos, t.token_to_id(bos))])])
    else:
        t.post_processor = processors.ByteLevel(trim_offsets=False)
    return t


def save_own(name, tok, config):
    d = os.path.join(OWN, name)
    os.makedirs(d, exist_ok=True)
    tok.save(os.path.join(d, "tokenizer.json"), pretty=False)
    with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, ensure_ascii=False)
        f.write("\n")
    print("wrote", d, "vocab", tok.get_vocab_size(with_added_tokens=True))


def make_own(assets):
    texts = training_text(assets)
    demo = spm_style(texts)
    save_own("demo-spm", demo, {
        "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "pad_token": None, "tokenizer_class": "LlamaTokenizerFast",
        "clean_up_tokenization_spaces": False, "chat_template": DEMO_CHAT_TEMPLATE})

    gpt2 = byte_level(texts, None, 1200, ["<|endoftext|>"])
    gpt2.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=False, special=True, normalized=False)])
    gpt2.add_tokens([AddedToken("[CODE]", single_word=True, normalized=False)])
    save_own("bl-gpt2", gpt2, {"add_bos_token": False, "add_eos_token": False,
                               "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
                               "unk_token": None, "tokenizer_class": "GPT2TokenizerFast"})

    l3_specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                   "<|eot_id|>", "<|python_tag|>"]
    llama3 = byte_level(texts, LLAMA3_RE, 1500, l3_specials, ignore_merges=True, bos="<|begin_of_text|>")
    llama3.add_tokens([AddedToken("xx", rstrip=True, normalized=True)])
    save_own("bl-llama3", llama3, {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
                                   "tokenizer_class": "PreTrainedTokenizerFast"})

    qwen = byte_level(texts, QWEN2_RE, 1300, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], nfc=True)
    qwen.add_tokens([AddedToken("Ångström", normalized=True)])
    save_own("bl-qwen2", qwen, {"add_bos_token": False, "bos_token": None, "eos_token": "<|im_end|>",
                                "pad_token": "<|endoftext|>", "tokenizer_class": "Qwen2TokenizerFast"})


def fnv1a64(rows):
    h = 0xcbf29ce484222325
    for ids in rows:
        for b in b"".join(struct.pack("<i", i) for i in ids) + b"\xff\xff\xff\xff":
            h ^= b
            h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def riscv_texts(assets):
    out = []
    for name in ("train.jsonl", "valid.jsonl"):
        with open(os.path.join(assets, "riscv-instruction-specification", name), encoding="utf-8") as f:
            out.extend(json.loads(line)["text"] for line in f if line.strip())
    return out


def write_fixture(name, enc, enc_special, dec, dec_skip, riscv):
    os.makedirs(FIX, exist_ok=True)
    with open(os.path.join(FIX, name + ".jsonl"), "w", encoding="utf-8") as f:
        for text in CORPUS:
            ids = enc(text)
            f.write(json.dumps({"text": text, "ids": ids, "ids_special": enc_special(text),
                                "decoded": dec(ids), "decoded_skip": dec_skip(ids)},
                               ensure_ascii=False) + "\n")
    rows = [enc(t) for t in riscv]
    with open(os.path.join(FIX, name + ".riscv.json"), "w", encoding="utf-8") as f:
        json.dump({"files": ["train.jsonl", "valid.jsonl"], "rows": len(rows), "fnv1a64": fnv1a64(rows),
                   "sample": [{"row": i, "ids": rows[i]} for i in range(0, len(rows), 50)]}, f)
        f.write("\n")
    print("wrote", name, len(CORPUS), "corpus lines,", len(rows), "riscv rows")


def fixtures_json(name, path, riscv):
    t = Tokenizer.from_file(path)
    write_fixture(name,
                  lambda s: t.encode(s, add_special_tokens=False).ids,
                  lambda s: t.encode(s, add_special_tokens=True).ids,
                  lambda ids: t.decode(ids, skip_special_tokens=False),
                  lambda ids: t.decode(ids, skip_special_tokens=True), riscv)


def fixtures_spm(name, path, riscv):
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=path)
    write_fixture(name, lambda s: sp.encode(s), lambda s: sp.encode(s, add_bos=True),
                  lambda ids: sp.decode(ids), lambda ids: sp.decode(ids), riscv)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--assets", default=os.path.join(ROOT, ".assets"))
    ap.add_argument("--skip-own", action="store_true", help="keep the committed own tokenizers")
    a = ap.parse_args()
    import tokenizers, sentencepiece
    print("tokenizers", tokenizers.__version__, "sentencepiece", sentencepiece.__version__)
    if not a.skip_own:
        make_own(a.assets)
    riscv = riscv_texts(a.assets)
    mis = os.path.join(a.assets, "mistral-7b-instruct-v0.3-tokenizer")
    fixtures_json("mistral-json", os.path.join(mis, "tokenizer.json"), riscv)
    fixtures_json("mistral-legacy", os.path.join(mis, "tokenizer.legacy.json"), riscv)
    fixtures_spm("mistral-spm", os.path.join(mis, "tokenizer.model"), riscv)
    for name in ("demo-spm", "bl-gpt2", "bl-llama3", "bl-qwen2"):
        fixtures_json(name, os.path.join(OWN, name, "tokenizer.json"), riscv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
