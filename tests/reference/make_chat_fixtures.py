#!/usr/bin/env python3
"""make_chat_fixtures.py — reference chat-template renderings for lorac's src/text/chat.c.

For each family (mistral, llama2, llama3, chatml, phi3) it renders a set of conversations
with transformers' apply_chat_template, with and without the generation prompt, and writes
  tests/fixtures/chat/<family>.jsonl   one line per (conversation, add_generation_prompt):
      {"family", "name", "tokenizer", "tokenizer_config", "messages",
       "add_generation_prompt", "text" (tokenize=False), "ids" (tokenize=True)}
    mistral lines also get "ids_spm": Mistral's own encoding with tokenizer.model through
    the sentencepiece library (what golden_tokens_v3.json shows), when it is installed;
    or, where the template raises, {"...", "error": "<the template's message>"} instead of
    text/ids. "ids" is null (with "ids_note") where the reference is not comparable (see
    MISTRAL_IDS_NOTES), or in --text-only mode.
  tests/fixtures/chat/templates/<family>.jinja   the published template (not mistral's: the
      C test reads that one from the shared assets)
  tests/fixtures/chat/<family>/tokenizer_config.json   bos/eos as used here + the template
  tests/fixtures/chat/<family>/tokenizer.json   only where the project tokenizer lacked one of
      the family's control tokens: a copy with them added as special tokens.
Paths in the fixtures are relative to the repository root; "$ASSETS/" stands for the shared
assets folder (--assets here, t_assets() in the C test).

Usage (from the repository root; Python 3.12, transformers 5.x, tokenizers, jinja2):
    python3 tests/reference/make_chat_fixtures.py --out tests/fixtures/chat [--assets .assets]
    python3 tests/reference/make_chat_fixtures.py --text-only ...   # jinja2 alone: no ids
Templates (published chat_template strings, as in tokenizer_config.json after JSON decoding):
  mistral  Mistral-7B-Instruct-v0.3, <assets>/.../chat_template_v3_spm.jinja
  llama2   meta-llama/Llama-2-7b-chat-hf
  llama3   meta-llama/Meta-Llama-3-8B-Instruct (the 3.0 template: no tools, no dates)
  chatml   Qwen/Qwen2-7B-Instruct (same as Qwen1.5-Chat)
  phi3     microsoft/Phi-3-mini-4k-instruct (July 2024 revision)
"""
import argparse
import json
import os
import sys

MISTRAL_DIR = "mistral-7b-instruct-v0.3-tokenizer"

# ---------------------------------------------------------------- published templates
# Llama-2: the tokenizer_config.json string has '\\n' (JSON), i.e. a Jinja escape "\n".
LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
PHI3 = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}"
    "{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)

# base: the project tokenizer (tests/fixtures/tokenizers/<name>) or the shared assets' file;
# needs: the control tokens the family's ids use (added as special tokens when missing;
# rstrip as in the model's own tokenizer.json).
FAMILIES = {
    "mistral": dict(template=None, base="$ASSETS/" + MISTRAL_DIR + "/tokenizer.json",
                    config="$ASSETS/" + MISTRAL_DIR + "/tokenizer_config.json",
                    bos="<s>", eos="</s>", needs=[]),
    "llama2": dict(template=LLAMA2, base="tests/fixtures/tokenizers/demo-spm/tokenizer.json",
                   bos="<s>", eos="</s>", needs=[]),
    "llama3": dict(template=LLAMA3, base="tests/fixtures/tokenizers/bl-llama3/tokenizer.json",
                   bos="<|begin_of_text|>", eos="<|eot_id|>",
                   needs=[("<|begin_of_text|>", False), ("<|start_header_id|>", False),
                          ("<|end_header_id|>", False), ("<|eot_id|>", False)]),
    "chatml": dict(template=CHATML, base="tests/fixtures/tokenizers/bl-qwen2/tokenizer.json",
                   bos=None, eos="<|im_end|>",
                   needs=[("<|endoftext|>", False), ("<|im_start|>", False), ("<|im_end|>", False)]),
    # Phi-3-mini's tokenizer is Llama's SentencePiece BPE plus these added tokens.
    "phi3": dict(template=PHI3, base="tests/fixtures/tokenizers/demo-spm/tokenizer.json",
                 bos="<s>", eos="<|endoftext|>",
                 needs=[("<|endoftext|>", False), ("<|assistant|>", True), ("<|system|>", True),
                        ("<|end|>", True), ("<|user|>", True)]),
}

# ---------------------------------------------------------------- conversations
S, U, A = "system", "user", "assistant"


def m(role, content):
    return {"role": role, "content": content}


CONVERSATIONS = [
    ("single", [m(U, "Hello!")]),
    ("two-turns", [m(U, "What is 2+2?"), m(A, "4."), m(U, "And 3+3?")]),
    ("ends-with-assistant", [m(U, "Name a colour."), m(A, "Blue")]),
    ("system", [m(S, "You are terse."), m(U, "Hi there")]),
    ("system-multi", [m(S, "Answer in French."), m(U, "Hello"), m(A, "Bonjour"),
                      m(U, "Thanks"), m(A, "De rien"), m(U, "Bye")]),
    ("unicode", [m(U, "Grüße, 世界! 🙂 Привет"), m(A, "नमस्ते — ça va? ١٢٣"), m(U, "e\u0301 vs é")]),
    ("spaces", [m(U, "  leading and trailing  "), m(A, " answer with spaces "), m(U, "\ttabbed\t")]),
    ("unicode-spaces", [m(U, "\u3000full-width\u2003em\u00a0"), m(A, "\u2028sep\u0085")]),
    ("newlines", [m(S, "Line one.\nLine two."), m(U, "a\nb\n\nc\n"), m(A, "\nok\n"), m(U, "\n")]),
    ("special-text", [m(U, "What do [INST] and <s> and <|im_start|> mean?"),
                      m(A, "Markers like </s> [/INST] <|eot_id|> <|end|>."), m(U, "ok")]),
    ("empty-user", [m(U, ""), m(A, "Nothing to say?")]),
    ("empty-assistant", [m(U, "Say nothing."), m(A, ""), m(U, "Good.")]),
    ("empty-system", [m(S, ""), m(U, "Hi")]),
    ("system-only", [m(S, "Only a system prompt.")]),
    ("two-systems", [m(S, "Rule one."), m(U, "Hi"), m(S, "Rule two."), m(U, "Go")]),
    ("user-user", [m(U, "First part."), m(U, "Second part.")]),
    ("assistant-first", [m(A, "I speak first."), m(U, "Hello")]),
    ("other-role", [m(U, "Call it."), m(A, "Calling."), m("ipython", "42"), m(U, "So?")]),
    ("long", [m(U, "Write code:\n```c\nint main(void) { return 0; }\n```"),
              m(A, "Done: `return 0;` exits with status 0.")] * 3),
]

# Mistral's own ids differ from transformers' encoding of the rendered text here.
MISTRAL_IDS_NOTES = {
    "special-text": "transformers parses [INST] etc. typed in a message as control tokens; "
                    "Mistral's encoding keeps them text",
    "empty-user": "transformers encodes the space of '[INST] ' as a token; SentencePiece "
                  "encodes an empty message to nothing",
}


# ---------------------------------------------------------------- rendering
def jinja_env():
    """The Jinja environment transformers renders chat templates in."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env


def jinja_render(env, template, messages, gen, bos, eos):
    kw = {}
    if bos is not None:
        kw["bos_token"] = bos
    if eos is not None:
        kw["eos_token"] = eos
    return env.from_string(template).render(messages=messages, tools=None, documents=None,
                                            add_generation_prompt=gen, **kw)


def hf_ids(tok, messages, gen):
    try:
        r = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=gen,
                                    return_dict=False)
    except TypeError:
        r = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=gen)
    if hasattr(r, "keys"):
        r = r["input_ids"]
    if hasattr(r, "tolist"):
        r = r.tolist()
    if r and isinstance(r[0], list):
        r = r[0]
    return [int(i) for i in r]


def mistral_spm_ids(sp, messages):
    """Mistral's own encoding with its SentencePiece model (mistral_common's v3 instruct
    tokenizer, as golden_tokens_v3.json shows it): each message encoded on its own, control
    tokens as ids; systems joined before the last user message; same-role runs joined."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    groups = []
    for msg in messages:
        if msg["role"] == "system":
            continue
        if groups and groups[-1][0] == msg["role"]:
            groups[-1][1] += "\n\n" + msg["content"]
        else:
            groups.append([msg["role"], msg["content"]])
    last_user = max((i for i, g in enumerate(groups) if g[0] == "user"), default=-1)
    inst, inst_end = sp.piece_to_id("[INST]"), sp.piece_to_id("[/INST]")
    ids = [sp.bos_id()]
    for i, (role, content) in enumerate(groups):
        if role == "user":
            text = system + "\n\n" + content if i == last_user and system else content
            ids += [inst] + sp.encode(text) + [inst_end]
        else:
            ids += sp.encode(content) + [sp.eos_id()]
    return ids


def resolve(path, assets):
    return os.path.join(assets, path[len("$ASSETS/"):]) if path.startswith("$ASSETS/") else path


def prepare_tokenizer(fam, spec, out, assets):
    """Returns (tokenizer path, config path) as written into the fixtures, writing the
    family's config (and a tokenizer copy when control tokens had to be added)."""
    base, config = spec["base"], spec.get("config")
    if fam == "mistral":
        return base, config
    famdir = os.path.join(out, fam)
    os.makedirs(famdir, exist_ok=True)
    tok_path = base
    if spec["needs"] and not ARGS.text_only:
        from tokenizers import AddedToken, Tokenizer
        tk = Tokenizer.from_file(resolve(base, assets))
        added = {a.content for a in tk.get_added_tokens_decoder().values()}
        missing = [(t, rs) for t, rs in spec["needs"] if t not in added]
        if missing:
            tk.add_special_tokens([AddedToken(t, rstrip=rs, lstrip=False, single_word=False,
                                              normalized=False, special=True)
                                   for t, rs in missing])
            tok_path = os.path.join(famdir, "tokenizer.json")
            tk.save(tok_path)
            print(f"  {fam}: added {[t for t, _ in missing]} to {base} -> {tok_path} "
                  f"({os.path.getsize(tok_path)} bytes)")
    elif os.path.exists(os.path.join(famdir, "tokenizer.json")):
        tok_path = os.path.join(famdir, "tokenizer.json")  # from an earlier full run
    cfg = {"bos_token": spec["bos"], "eos_token": spec["eos"], "add_bos_token": False,
           "add_eos_token": False, "chat_template": spec["template"]}
    config = os.path.join(famdir, "tokenizer_config.json")
    with open(config, "w", encoding="utf-8") as f:
        json.dump(cfg, f, ensure_ascii=False, indent=1)
        f.write("\n")
    return tok_path, config


def make_family(fam, spec, out, assets, env):
    template = spec["template"]
    if template is None:
        with open(os.path.join(assets, MISTRAL_DIR, "chat_template_v3_spm.jinja"), encoding="utf-8") as f:
            template = f.read()
    else:
        os.makedirs(os.path.join(out, "templates"), exist_ok=True)
        with open(os.path.join(out, "templates", fam + ".jinja"), "w", encoding="utf-8") as f:
            f.write(template)
    tok_path, config = prepare_tokenizer(fam, spec, out, assets)
    hf = None
    if not ARGS.text_only:
        from transformers import PreTrainedTokenizerFast
        kw = {k + "_token": spec[k] for k in ("bos", "eos") if spec[k] is not None}
        hf = PreTrainedTokenizerFast(tokenizer_file=resolve(tok_path, assets), **kw)
        hf.chat_template = template
        from tokenizers import Tokenizer
        raw = Tokenizer.from_file(resolve(tok_path, assets))
        sp = None
        if fam == "mistral":
            try:
                import sentencepiece
                sp = sentencepiece.SentencePieceProcessor(
                    model_file=os.path.join(assets, MISTRAL_DIR, "tokenizer.model"))
            except ImportError:
                print("  WARNING: no sentencepiece: mistral fixtures get no ids_spm", file=sys.stderr)

    lines, n_err, n_noids = [], 0, 0
    for name, messages in CONVERSATIONS:
        for gen in (False, True):
            rec = {"family": fam, "name": name, "tokenizer": tok_path, "tokenizer_config": config,
                   "messages": messages, "add_generation_prompt": gen}
            try:
                text = jinja_render(env, template, messages, gen, spec["bos"], spec["eos"])
            except Exception as e:  # the template's raise_exception, or a Jinja error
                rec["error"] = str(e)
                n_err += 1
                if hf is not None:  # transformers must raise as well
                    try:
                        hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
                        sys.exit(f"{fam}/{name}: jinja2 raised '{e}' but transformers did not")
                    except Exception:
                        pass
                lines.append(rec)
                continue
            rec["text"], rec["ids"] = text, None
            if hf is not None:
                hf_text = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
                if hf_text != text:
                    sys.exit(f"{fam}/{name}: transformers renders {hf_text!r}, jinja2 {text!r}")
                ids = hf_ids(hf, messages, gen)
                raw_ids = raw.encode(text, add_special_tokens=False).ids
                if raw_ids != ids:
                    print(f"  WARNING {fam}/{name}: transformers ids differ from tokenizers' "
                          f"encode(text); keeping transformers'", file=sys.stderr)
                    rec["ids_tokenizers"] = raw_ids
                rec["ids"] = ids
                if sp is not None:
                    rec["ids_spm"] = mistral_spm_ids(sp, messages)
                if fam == "mistral" and name in MISTRAL_IDS_NOTES:
                    rec["ids"], rec["ids_note"] = None, MISTRAL_IDS_NOTES[name]
            if rec["ids"] is None:
                n_noids += 1
            lines.append(rec)
    path = os.path.join(out, fam + ".jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for rec in lines:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    print(f"wrote {path}: {len(lines)} lines ({n_err} template errors, {n_noids} without ids), "
          f"{os.path.getsize(path)} bytes; tokenizer {tok_path}")


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="tests/fixtures/chat")
    ap.add_argument("--assets", default=".assets", help="the shared assets folder")
    ap.add_argument("--text-only", action="store_true",
                    help="render with jinja2 alone (no transformers/tokenizers): ids are null")
    ap.add_argument("--family", action="append", choices=sorted(FAMILIES),
                    help="only these families (repeatable)")
    ARGS = ap.parse_args()
    if not os.path.isdir(os.path.join(ARGS.assets, MISTRAL_DIR)):
        sys.exit(f"error: {ARGS.assets}/{MISTRAL_DIR} not found; pass --assets DIR")
    if not ARGS.text_only:
        try:
            import tokenizers  # noqa: F401
            import transformers
        except ImportError as e:
            sys.exit(f"error: {e}; install transformers and tokenizers, or pass --text-only")
        print(f"transformers {transformers.__version__}, tokenizers {tokenizers.__version__}")
        for fam, spec in FAMILIES.items():
            p = resolve(spec["base"], ARGS.assets)
            if (not ARGS.family or fam in ARGS.family) and not os.path.isfile(p):
                sys.exit(f"error: {p} not found (run tests/reference/make_tokenizer_fixtures.py first)")
    os.makedirs(ARGS.out, exist_ok=True)
    env = jinja_env()
    for fam, spec in FAMILIES.items():
        if not ARGS.family or fam in ARGS.family:
            make_family(fam, spec, ARGS.out, ARGS.assets, env)
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(ARGS.out) for f in fs)
    print(f"{ARGS.out}: {total} bytes in all" + (" (over the 200 KB budget!)" if total > 200_000 else ""))


ARGS = None
if __name__ == "__main__":
    main()
