/*
 * chat.h — chat templates: a conversation (system/user/assistant messages) rendered to the
 * text and the token ids that a model family was trained on.
 *
 * lorac does not run Jinja. It knows five families and reproduces, in C, what each one's
 * published template renders (transformers' apply_chat_template):
 *   mistral  Mistral-7B-Instruct-v0.3 (SentencePiece "v3" control tokens [INST] [/INST]);
 *   llama2   Llama-2-chat (<<SYS>> inside the first [INST]);
 *   llama3   Llama-3-Instruct (header tokens, <|eot_id|>; the 3.0 template, no tools/dates);
 *   chatml   Qwen2-Instruct ChatML (<|im_start|>, default system prompt);
 *   phi3     Phi-3-mini-instruct (<|user|> ... <|end|>).
 * Tool calls and tool results (Mistral [TOOL_CALLS], [TOOL_RESULTS]) are not supported.
 *
 * Token ids: for mistral, Mistral's own encoding (control tokens inserted as ids, each
 * message encoded on its own, so "[INST]" typed in a message stays text); for the other
 * families, the tokenizer's encoding of the rendered text with special tokens recognised
 * (what transformers does). This module owns no state; it never prints.
 */
#ifndef LC_CHAT_H
#define LC_CHAT_H

#include <stdbool.h>
#include <stddef.h>

#include "core/vec.h"
#include "text/tokenizer.h"

typedef enum {
    LC_CHAT_MISTRAL,
    LC_CHAT_LLAMA2,
    LC_CHAT_LLAMA3,
    LC_CHAT_CHATML,
    LC_CHAT_PHI3,
    LC_CHAT_N_FAMILIES,
} lc_chat_family;

/* One message: role ("system", "user", "assistant"; llama3 and chatml take any role
 * string, as their templates do) and content (NUL-terminated UTF-8). Borrowed. */
typedef struct {
    const char *role;
    const char *content;
} lc_chat_msg;

/* Recognises the family of a chat template's source (tokenizer_config.json's chat_template)
 * by characteristic substrings of the published templates. Returns 0, or -1 with an error
 * telling to pass --chat-template when the template is none of the five. */
int lc_chat_detect(const char *template_src, lc_chat_family *out);

/* Parses a family name ("mistral", "llama2", "llama3", "chatml", "phi3"). Returns 0 or -1. */
int lc_chat_family_parse(const char *name, lc_chat_family *out);

/* The family's name as lc_chat_family_parse takes it (a static string). */
const char *lc_chat_family_name(lc_chat_family f);

/* Appends to out exactly the string the family's template renders for msgs[0..n)
 * (apply_chat_template(..., tokenize=False)); bos_text/eos_text are the tokenizer's BOS/EOS
 * strings (NULL when it has none: an error for families whose template uses it). Checks the
 * roles and their order as the template does. Returns 0, or -1 (out then unspecified). */
int lc_chat_render_text(lc_chat_family f, const lc_chat_msg *msgs, size_t n,
                        bool add_generation_prompt, const char *bos_text, const char *eos_text,
                        lc_buf *out);

/* Appends to out the token ids the model family was trained on for msgs[0..n), with t's
 * vocabulary: Mistral's own encoding for mistral, else the encoding of the rendered text
 * with special tokens recognised. Fails when t lacks the family's control tokens.
 * Returns 0, or -1 (out then unspecified). */
int lc_chat_render_ids(const lc_tokenizer *t, lc_chat_family f, const lc_chat_msg *msgs, size_t n,
                       bool add_generation_prompt, lc_ids *out);

#endif
