/*
 * chat.c — the five chat template families of chat.h, written out in C.
 *
 * Each family's renderer follows its published Jinja template step by step (the comments
 * quote the template lines they implement), including the template's own checks and error
 * texts. Mistral is rendered through a "sink" that receives control tokens and message
 * texts, so that one walk over the conversation gives both the text and Mistral's own ids.
 * Owns nothing beyond the call; never prints.
 */
#include "text/chat.h"

#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

#include "core/error.h"
#include "core/mem.h"

#define FAMILY_CHOICES "one of mistral, llama2, llama3, chatml, phi3"

static const char *const family_names[LC_CHAT_N_FAMILIES] = {
    [LC_CHAT_MISTRAL] = "mistral", [LC_CHAT_LLAMA2] = "llama2", [LC_CHAT_LLAMA3] = "llama3",
    [LC_CHAT_CHATML] = "chatml",   [LC_CHAT_PHI3] = "phi3",
};

/* ---------------------------------------------------------------- names and detection */

const char *lc_chat_family_name(lc_chat_family f) {
    return (unsigned)f < LC_CHAT_N_FAMILIES ? family_names[f] : "unknown";
}

int lc_chat_family_parse(const char *name, lc_chat_family *out) {
    for (int f = 0; f < LC_CHAT_N_FAMILIES; f++)
        if (name && !strcmp(name, family_names[f])) {
            *out = (lc_chat_family)f;
            return 0;
        }
    return lc_fail("--chat-template: unknown template '%s'; pass " FAMILY_CHOICES,
                   name ? name : "(null)");
}

static bool has(const char *s, const char *needle) { return strstr(s, needle) != NULL; }

int lc_chat_detect(const char *src, lc_chat_family *out) {
    if (!src || !*src)
        return lc_fail("tokenizer_config.json has no chat_template; pass --chat-template NAME "
                       "(" FAMILY_CHOICES ")");
    /* Llama-2-chat: the system prompt goes between <<SYS>> markers inside [INST]. */
    if (has(src, "<<SYS>>") && has(src, "[INST]")) {
        *out = LC_CHAT_LLAMA2;
        return 0;
    }
    /* Mistral v3 (every revision of Mistral-7B-Instruct-v0.3's template): [INST] ...[/INST]
     * with no space before [/INST]. The v1 layout "[INST] x [/INST]" (v0.1/v0.2, where
     * [INST] is plain text) and the v7 [SYSTEM_PROMPT] family render differently. */
    if (has(src, "[INST]") && has(src, "[/INST]") && !has(src, "' [/INST]'") &&
        !has(src, "\" [/INST]\"") && !has(src, "[SYSTEM_PROMPT]")) {
        *out = LC_CHAT_MISTRAL;
        return 0;
    }
    /* Llama-3.x Instruct: header tokens and <|eot_id|>. */
    if (has(src, "<|start_header_id|>") && has(src, "<|end_header_id|>") &&
        has(src, "<|eot_id|>")) {
        *out = LC_CHAT_LLAMA3;
        return 0;
    }
    /* Qwen2/Qwen1.5 ChatML, whose default system prompt is "You are a helpful assistant."
     * Phi-4 (<|im_sep|>), Qwen2.5 ("You are Qwen...") and Qwen3 (<think>) differ. */
    if (has(src, "<|im_start|>") && has(src, "<|im_end|>") &&
        has(src, "You are a helpful assistant.") && !has(src, "<|im_sep|>") &&
        !has(src, "You are Qwen") && !has(src, "<think>")) {
        *out = LC_CHAT_CHATML;
        return 0;
    }
    /* Phi-3 / Phi-3.5 mini instruct. */
    if (has(src, "<|user|>") && has(src, "<|assistant|>") && has(src, "<|end|>")) {
        *out = LC_CHAT_PHI3;
        return 0;
    }
    return lc_fail("tokenizer_config.json: chat template not recognised; pass --chat-template "
                   "NAME (" FAMILY_CHOICES ")");
}

/* ---------------------------------------------------------------- text helpers */

/* Python's str.isspace (what Jinja's trim and str.strip() remove). */
static bool py_space(utf8proc_int32_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

/* Appends s with Python whitespace removed at both ends (s is valid UTF-8). */
static void put_stripped(lc_buf *out, const char *s, size_t len) {
    size_t i = 0, begin = len, end = 0;
    while (i < len) {
        utf8proc_int32_t c;
        utf8proc_ssize_t k =
            utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(len - i), &c);
        if (k <= 0) k = 1; // unreachable: contents are checked first
        if (!py_space(c)) {
            if (begin == len) begin = i;
            end = i + (size_t)k;
        }
        i += (size_t)k;
    }
    if (begin < end) lc_buf_append(out, s + begin, end - begin);
}

/* Checks every message has a role and valid UTF-8 content. */
static int check_msgs(lc_chat_family f, const lc_chat_msg *msgs, size_t n) {
    if (n == 0)
        return lc_fail("%s chat template: the conversation has no messages", family_names[f]);
    for (size_t i = 0; i < n; i++) {
        if (!msgs[i].role || !*msgs[i].role)
            return lc_fail("%s chat template: message %zu has no role", family_names[f], i);
        if (!msgs[i].content)
            return lc_fail("%s chat template: message %zu (%s) has no content", family_names[f], i,
                           msgs[i].role);
        const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)msgs[i].content;
        size_t len = strlen(msgs[i].content), at = 0;
        while (at < len) {
            utf8proc_int32_t c;
            utf8proc_ssize_t k = utf8proc_iterate(p + at, (utf8proc_ssize_t)(len - at), &c);
            if (k <= 0)
                return lc_fail("%s chat template: message %zu (%s): content is not valid UTF-8 "
                               "at byte %zu",
                               family_names[f], i, msgs[i].role, at);
            at += (size_t)k;
        }
    }
    return 0;
}

static bool is_role(const lc_chat_msg *m, const char *role) { return !strcmp(m->role, role); }

static int need_text(lc_chat_family f, const char *s, const char *what) {
    if (s) return 0;
    return lc_fail("%s chat template: the template uses the %s token, which the tokenizer lacks "
                   "(set it in tokenizer_config.json or pick another --chat-template)",
                   family_names[f], what);
}

/* ---------------------------------------------------------------- Mistral v3 */

/* Where a Mistral walk goes: text (render_text) or ids (render_ids). */
typedef struct {
    lc_buf *text;
    const char *bos, *eos;
    const lc_tokenizer *t;
    lc_ids *ids;
    int32_t id[4];   // bos, eos, [INST], [/INST]
    bool space_cont; // encode " " + text as a continuation (else text on its own)
} msink;

enum { M_BOS, M_EOS, M_INST, M_INST_END };
static const char *const m_ctrl_text[4] = {NULL, NULL, "[INST]", "[/INST]"};

static int m_ctrl(msink *s, int which) {
    if (s->ids) {
        lc_ids_push(s->ids, s->id[which]);
        return 0;
    }
    const char *txt = which == M_BOS ? s->bos : which == M_EOS ? s->eos : m_ctrl_text[which];
    if (need_text(LC_CHAT_MISTRAL, txt, which == M_BOS ? "BOS" : "EOS")) return -1;
    lc_buf_puts(s->text, txt);
    return 0;
}

/* A message's text. The template writes it after a space ("[INST] " + content, " " + content);
 * Mistral encodes it on its own with SentencePiece, which adds the same "▁" in front. */
static int m_text(msink *s, const char *p, size_t len) {
    if (!s->ids) {
        lc_buf_putc(s->text, ' ');
        lc_buf_append(s->text, p, len);
        return 0;
    }
    if (len == 0) return 0; // SentencePiece encodes "" to nothing
    if (!s->space_cont) return lc_tokenizer_encode(s->t, p, len, LC_TOK_NO_PARSE_SPECIAL, s->ids);
    lc_buf tmp = {0};
    lc_buf_putc(&tmp, ' ');
    lc_buf_append(&tmp, p, len);
    int rc = lc_tokenizer_encode(s->t, tmp.data, tmp.len,
                                 LC_TOK_NO_PARSE_SPECIAL | LC_TOK_CONTINUATION, s->ids);
    lc_buf_free(&tmp);
    return rc;
}

typedef struct {
    const char *role; // borrowed from the first message of the group
    lc_buf content;   // the group's contents joined by "\n\n"
} mgroup;

static int mistral_walk(msink *s, const lc_chat_msg *msgs, size_t n) {
    int rc = -1;
    lc_buf system = {0};
    mgroup *g = xcalloc(n, sizeof *g);
    size_t ng = 0, n_system = 0;

    /* {%- if message['role'] == 'system' %} ... system_parts | join('\n\n') */
    for (size_t i = 0; i < n; i++) {
        if (is_role(&msgs[i], "system")) {
            if (n_system++) lc_buf_puts(&system, "\n\n");
            lc_buf_puts(&system, msgs[i].content);
            continue;
        }
        if (is_role(&msgs[i], "tool")) {
            lc_fail("mistral chat template: message %zu: tool messages (and tool calls) are not "
                    "supported by lorac",
                    i);
            goto done;
        }
        /* Aggregate consecutive messages with the same role, joined by '\n\n'. */
        if (ng && !strcmp(g[ng - 1].role, msgs[i].role)) {
            lc_buf_puts(&g[ng - 1].content, "\n\n");
        } else {
            g[ng++].role = msgs[i].role;
            lc_buf_puts(&g[ng - 1].content, ""); // a NUL even when empty
        }
        lc_buf_puts(&g[ng - 1].content, msgs[i].content);
    }

    /* Validates message ordering. */
    if (ng && strcmp(g[0].role, "user")) {
        lc_fail("mistral chat template: Conversation must start with a user message, got %s.",
                g[0].role);
        goto done;
    }
    size_t last_user = 0;
    for (size_t i = 0; i < ng; i++) {
        if (i) {
            const char *prev = g[i - 1].role, *cur = g[i].role;
            bool ok = !strcmp(prev, "user") ? !strcmp(cur, "assistant")
                                            : !strcmp(cur, "user"); // prev is assistant
            if (!ok) {
                lc_fail("mistral chat template: Unexpected role '%s' after role '%s'", cur, prev);
                goto done;
            }
        }
        if (!strcmp(g[i].role, "user")) last_user = i;
    }

    if (m_ctrl(s, M_BOS)) goto done;
    for (size_t i = 0; i < ng; i++) {
        if (!strcmp(g[i].role, "user")) {
            /* '[INST] ' + (system_message + '\n\n' on the last user message) + content + '[/INST]'
             */
            if (m_ctrl(s, M_INST)) goto done;
            if (i == last_user && system.len) {
                lc_buf both = {0};
                lc_buf_append(&both, system.data, system.len);
                lc_buf_puts(&both, "\n\n");
                lc_buf_append(&both, g[i].content.data, g[i].content.len);
                int r = m_text(s, both.data, both.len);
                lc_buf_free(&both);
                if (r) goto done;
            } else if (m_text(s, g[i].content.data, g[i].content.len)) {
                goto done;
            }
            if (m_ctrl(s, M_INST_END)) goto done;
        } else {
            /* ' ' + content + eos_token; an empty content has neither text nor tool calls. */
            if (!g[i].content.len) {
                lc_fail("mistral chat template: Assistant message must have a string or a list of "
                        "chunks in content or a list of tool calls. (assistant turn %zu is empty)",
                        i);
                goto done;
            }
            if (m_text(s, g[i].content.data, g[i].content.len) || m_ctrl(s, M_EOS)) goto done;
        }
    }
    rc = 0;
done:
    for (size_t i = 0; i < ng; i++)
        lc_buf_free(&g[i].content);
    free(g);
    lc_buf_free(&system);
    return rc;
}

/* ---------------------------------------------------------------- the other families */

static int render_llama2(const lc_chat_msg *msgs, size_t n, const char *bos, const char *eos,
                         lc_buf *out) {
    /* {% if messages[0]['role'] == 'system' %} loop_messages = messages[1:] */
    size_t start = is_role(&msgs[0], "system") ? 1 : 0;
    const char *system = start ? msgs[0].content : NULL;
    lc_buf content = {0};
    int rc = -1;
    for (size_t i = start; i < n; i++) {
        size_t k = i - start;
        bool user = is_role(&msgs[i], "user");
        if (user != (k % 2 == 0)) {
            lc_fail("llama2 chat template: Conversation roles must alternate "
                    "user/assistant/user/assistant/... (message %zu is %s)",
                    i, msgs[i].role);
            goto done;
        }
        /* '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] */
        lc_buf_clear(&content);
        if (k == 0 && system) {
            lc_buf_puts(&content, "<<SYS>>\n");
            lc_buf_puts(&content, system);
            lc_buf_puts(&content, "\n<</SYS>>\n\n");
        }
        lc_buf_puts(&content, msgs[i].content);
        if (user) {
            /* bos_token + '[INST] ' + content.strip() + ' [/INST]' */
            if (need_text(LC_CHAT_LLAMA2, bos, "BOS")) goto done;
            lc_buf_puts(out, bos);
            lc_buf_puts(out, "[INST] ");
            put_stripped(out, content.data, content.len);
            lc_buf_puts(out, " [/INST]");
        } else if (is_role(&msgs[i], "assistant")) {
            /* ' ' + content.strip() + ' ' + eos_token */
            if (need_text(LC_CHAT_LLAMA2, eos, "EOS")) goto done;
            lc_buf_putc(out, ' ');
            put_stripped(out, content.data, content.len);
            lc_buf_putc(out, ' ');
            lc_buf_puts(out, eos);
        } // any other role in an assistant's place renders nothing, as in the template
    }
    rc = 0;
done:
    lc_buf_free(&content);
    return rc;
}

static int render_llama3(const lc_chat_msg *msgs, size_t n, bool gen, const char *bos,
                         lc_buf *out) {
    for (size_t i = 0; i < n; i++) {
        /* (bos_token on the first) + '<|start_header_id|>' + role + '<|end_header_id|>\n\n'
         * + message['content'] | trim + '<|eot_id|>' */
        if (i == 0) {
            if (need_text(LC_CHAT_LLAMA3, bos, "BOS")) return -1;
            lc_buf_puts(out, bos);
        }
        lc_buf_puts(out, "<|start_header_id|>");
        lc_buf_puts(out, msgs[i].role);
        lc_buf_puts(out, "<|end_header_id|>\n\n");
        put_stripped(out, msgs[i].content, strlen(msgs[i].content));
        lc_buf_puts(out, "<|eot_id|>");
    }
    if (gen) lc_buf_puts(out, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    return 0;
}

static void render_chatml(const lc_chat_msg *msgs, size_t n, bool gen, lc_buf *out) {
    /* Qwen2's default system prompt when the first message is not a system message. */
    if (!is_role(&msgs[0], "system"))
        lc_buf_puts(out, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n");
    for (size_t i = 0; i < n; i++) {
        lc_buf_puts(out, "<|im_start|>");
        lc_buf_puts(out, msgs[i].role);
        lc_buf_putc(out, '\n');
        lc_buf_puts(out, msgs[i].content);
        lc_buf_puts(out, "<|im_end|>\n");
    }
    if (gen) lc_buf_puts(out, "<|im_start|>assistant\n");
}

static int render_phi3(const lc_chat_msg *msgs, size_t n, bool gen, const char *eos, lc_buf *out) {
    for (size_t i = 0; i < n; i++) {
        const char *tag = is_role(&msgs[i], "system")      ? "<|system|>\n"
                          : is_role(&msgs[i], "user")      ? "<|user|>\n"
                          : is_role(&msgs[i], "assistant") ? "<|assistant|>\n"
                                                           : NULL;
        if (!tag) continue; // other roles render nothing, as in the template
        lc_buf_puts(out, tag);
        lc_buf_puts(out, msgs[i].content);
        lc_buf_puts(out, "<|end|>\n");
    }
    /* {% if add_generation_prompt %}'<|assistant|>\n'{% else %}eos_token{% endif %} */
    if (gen) {
        lc_buf_puts(out, "<|assistant|>\n");
    } else {
        if (need_text(LC_CHAT_PHI3, eos, "EOS")) return -1;
        lc_buf_puts(out, eos);
    }
    return 0;
}

/* ---------------------------------------------------------------- public entry points */

int lc_chat_render_text(lc_chat_family f, const lc_chat_msg *msgs, size_t n,
                        bool add_generation_prompt, const char *bos_text, const char *eos_text,
                        lc_buf *out) {
    if ((unsigned)f >= LC_CHAT_N_FAMILIES)
        return lc_fail("chat template: unknown family %d", (int)f);
    if (check_msgs(f, msgs, n)) return -1;
    lc_buf_puts(out, ""); // out->data is a string even when the render is empty
    switch (f) {
    case LC_CHAT_MISTRAL: {
        msink s = {.text = out, .bos = bos_text, .eos = eos_text};
        return mistral_walk(&s, msgs, n);
    }
    case LC_CHAT_LLAMA2:
        return render_llama2(msgs, n, bos_text, eos_text, out);
    case LC_CHAT_LLAMA3:
        return render_llama3(msgs, n, add_generation_prompt, bos_text, out);
    case LC_CHAT_CHATML:
        render_chatml(msgs, n, add_generation_prompt, out);
        return 0;
    case LC_CHAT_PHI3:
        return render_phi3(msgs, n, add_generation_prompt, eos_text, out);
    default:
        return -1;
    }
}

/* The id of a control token the family needs, or -1 with an error. */
static int32_t need_token(const lc_tokenizer *t, lc_chat_family f, const char *tok) {
    int32_t id = lc_tokenizer_token_id(t, tok);
    if (id < 0)
        lc_fail("%s chat template needs the token %s, which the tokenizer lacks; is this the "
                "model's template? (pass --chat-template NAME: " FAMILY_CHOICES ")",
                family_names[f], tok);
    return id;
}

static const char *special_text(const lc_tokenizer *t, int32_t id) {
    return id >= 0 ? lc_tokenizer_piece(t, id) : NULL;
}

/* How to get SentencePiece's encoding of a message on its own (a "▁" in front, spaces as
 * "▁") from this tokenizer: " " + text as a continuation where that gives the same ids as
 * the text on its own (tokenizer.json with Metaspace, which does not prepend "▁" to text
 * that starts with a space); else the text on its own (SentencePiece models, and the legacy
 * Prepend("▁") normalizer, which prepend to every section). */
static int probe_space_cont(const lc_tokenizer *t, bool *space_cont) {
    lc_ids a = {0}, b = {0};
    int rc = lc_tokenizer_encode(t, "a", 1, LC_TOK_NO_PARSE_SPECIAL, &a);
    if (!rc)
        rc = lc_tokenizer_encode(t, " a", 2, LC_TOK_NO_PARSE_SPECIAL | LC_TOK_CONTINUATION, &b);
    *space_cont = !rc && a.len == b.len && !memcmp(a.data, b.data, a.len * sizeof *a.data);
    lc_ids_free(&a);
    lc_ids_free(&b);
    return rc;
}

int lc_chat_render_ids(const lc_tokenizer *t, lc_chat_family f, const lc_chat_msg *msgs, size_t n,
                       bool add_generation_prompt, lc_ids *out) {
    if ((unsigned)f >= LC_CHAT_N_FAMILIES)
        return lc_fail("chat template: unknown family %d", (int)f);
    if (check_msgs(f, msgs, n)) return -1;
    if (f == LC_CHAT_MISTRAL) {
        msink s = {.t = t, .ids = out};
        s.id[M_BOS] = lc_tokenizer_bos(t);
        s.id[M_EOS] = lc_tokenizer_eos(t);
        if (s.id[M_BOS] < 0 || s.id[M_EOS] < 0)
            return lc_fail("mistral chat template: the tokenizer has no BOS or EOS token (check "
                           "tokenizer_config.json bos_token/eos_token)");
        if ((s.id[M_INST] = need_token(t, f, "[INST]")) < 0) return -1;
        if ((s.id[M_INST_END] = need_token(t, f, "[/INST]")) < 0) return -1;
        if (probe_space_cont(t, &s.space_cont)) return -1;
        return mistral_walk(&s, msgs, n);
    }

    static const char *const needs[LC_CHAT_N_FAMILIES][4] = {
        [LC_CHAT_LLAMA3] = {"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"},
        [LC_CHAT_CHATML] = {"<|im_start|>", "<|im_end|>"},
        [LC_CHAT_PHI3] = {"<|user|>", "<|assistant|>", "<|end|>"},
    };
    for (int i = 0; i < 4 && needs[f][i]; i++)
        if (need_token(t, f, needs[f][i]) < 0) return -1;

    lc_buf text = {0};
    int rc =
        lc_chat_render_text(f, msgs, n, add_generation_prompt, special_text(t, lc_tokenizer_bos(t)),
                            special_text(t, lc_tokenizer_eos(t)), &text);
    if (!rc) rc = lc_tokenizer_encode(t, text.data, text.len, 0, out);
    lc_buf_free(&text);
    return rc;
}
