/*
 * tokenize.c — `lorac tokenize`: text to token ids with a model's tokenizer.
 *
 * Thin: parses options, loads the tokenizer (src/text), encodes, prints. Reads the
 * text from the command line, from stdin, or (--jsonl) one JSON string per stdin line.
 * --count reports the number of tokens and the encoding rate instead of the ids.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "cmd/cmd.h"
#include "core/error.h"
#include "core/file.h"
#include "core/json.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/vec.h"
#include "text/chat.h"
#include "text/tokenizer.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: lorac tokenize --model DIR [options] [TEXT]\n"
            "       lorac tokenize --tokenizer FILE [options] [TEXT]\n\n"
            "Prints the token ids of TEXT (or of standard input) as a JSON array.\n\n"
            "  --model DIR            model folder (tokenizer.json, else tokenizer.model)\n"
            "  --tokenizer FILE       a specific tokenizer.json or tokenizer.model\n"
            "  --add-special-tokens   add BOS/EOS as the tokenizer's post-processor says\n"
            "  --no-parse-special     treat special tokens written in the text as text\n"
            "  --jsonl                read one JSON string per line, print one array per line\n"
            "  --pieces               print the token strings instead of the ids\n"
            "  --chat                 TEXT is a conversation, a JSON array of {\"role\", \"content\"}:\n"
            "                         print the ids of its chat-template rendering\n"
            "  --add-generation-prompt  with --chat: end with the assistant's turn opening\n"
            "  --chat-template NAME   with --chat: mistral, llama2, llama3, chatml or phi3\n"
            "                         (default: detected from tokenizer_config.json)\n"
            "  --count                print the token count and encoding rate only\n"
            "  --json                 with --count: print {\"tokens\", \"bytes\", \"lines\", \"seconds\"}\n"
            "  -h, --help             this help\n");
}

typedef struct {
    int flags;
    bool chat, gen_prompt;
    const char *chat_template;
    bool pieces, count, json;
    size_t tokens, bytes, lines;
    double seconds;
    lc_ids ids;
    lc_buf out;
} tok_run;

static int print_ids(const lc_tokenizer *t, tok_run *r);

/* Encodes one text and prints it (or only counts it). Returns 0 or -1. */
static int emit(const lc_tokenizer *t, tok_run *r, const char *text, size_t len) {
    lc_ids_clear(&r->ids);
    double t0 = lc_now();
    if (lc_tokenizer_encode(t, text, len, r->flags, &r->ids) != 0) return -1;
    r->seconds += lc_now() - t0;
    r->tokens += r->ids.len;
    r->bytes += len;
    r->lines++;
    return r->count ? 0 : print_ids(t, r);
}

/* Prints r->ids (or their pieces) as one JSON array line. Returns 0. */
static int print_ids(const lc_tokenizer *t, tok_run *r) {
    lc_buf_clear(&r->out);
    lc_buf_putc(&r->out, '[');
    for (size_t i = 0; i < r->ids.len; i++) {
        if (i) lc_buf_puts(&r->out, ", ");
        if (r->pieces) {
            const char *p = lc_tokenizer_piece(t, r->ids.data[i]);
            lc_json_quote(&r->out, p ? p : "", p ? strlen(p) : 0);
        } else {
            lc_buf_printf(&r->out, "%d", (int)r->ids.data[i]);
        }
    }
    lc_buf_puts(&r->out, "]\n");
    fwrite(r->out.data, 1, r->out.len, stdout);
    return 0;
}

/* Renders a conversation (a JSON array of {"role", "content"}) with the chat template
 * into r->ids and prints them like emit(). Returns 0 or -1. */
static int emit_chat(const lc_tokenizer *t, tok_run *r, const char *text, size_t len) {
    lc_chat_family fam;
    if (r->chat_template) {
        if (lc_chat_family_parse(r->chat_template, &fam) != 0) return -1;
    } else if (!lc_tokenizer_chat_template(t)) {
        return lc_fail("the tokenizer has no chat_template; pass --chat-template NAME (one of "
                       "mistral, llama2, llama3, chatml, phi3)");
    } else if (lc_chat_detect(lc_tokenizer_chat_template(t), &fam) != 0) {
        return -1;
    }
    cJSON *j;
    if (lc_json_parse(text, len, "--chat conversation", &j) != 0) return -1;
    int n = cJSON_IsArray(j) ? cJSON_GetArraySize(j) : -1;
    if (n < 0) {
        cJSON_Delete(j);
        return lc_fail("--chat conversation: expected a JSON array of {\"role\", \"content\"}");
    }
    lc_chat_msg *msgs = xcalloc((size_t)n + 1, sizeof *msgs);
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        const cJSON *m = cJSON_GetArrayItem(j, i);
        char what[64];
        snprintf(what, sizeof what, "--chat conversation: message %d", i);
        if (lc_json_str(m, "role", &msgs[i].role, what) != 1 ||
            lc_json_str(m, "content", &msgs[i].content, what) != 1)
            rc = lc_errmsg()[0] ? -1 : lc_fail("%s: needs \"role\" and \"content\" strings", what);
    }
    lc_ids_clear(&r->ids);
    if (rc == 0) rc = lc_chat_render_ids(t, fam, msgs, (size_t)n, r->gen_prompt, &r->ids);
    free(msgs);
    cJSON_Delete(j);
    if (rc != 0) return -1;
    r->tokens += r->ids.len;
    r->lines++;
    return r->count ? 0 : print_ids(t, r);
}

/* Reads all of a stream into b. */
static void slurp(FILE *f, lc_buf *b) {
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) lc_buf_append(b, chunk, n);
}

static int run_jsonl(const lc_tokenizer *t, tok_run *r) {
    size_t lineno = 0;
    int rc = 0;
    lc_buf text = {0};
    char *buf = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&buf, &cap, stdin)) >= 0) {
        lineno++;
        while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) n--;
        if (n == 0) continue;
        char what[64];
        snprintf(what, sizeof what, "stdin line %zu", lineno);
        if (lc_json_unquote(buf, (size_t)n, what, &text) != 0) {
            rc = -1;
            break;
        }
        rc = emit(t, r, text.data ? text.data : "", text.len);
        if (rc != 0) {
            lc_fail_prefix("%s", what);
            break;
        }
    }
    free(buf);
    lc_buf_free(&text);
    return rc;
}

int cmd_tokenize(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},  {"tokenizer", required_argument, 0, 't'},
        {"add-special-tokens", no_argument, 0, 'a'}, {"no-parse-special", no_argument, 0, 'n'},
        {"jsonl", no_argument, 0, 'j'},        {"pieces", no_argument, 0, 'p'},
        {"count", no_argument, 0, 'c'},        {"json", no_argument, 0, 'J'},
        {"chat", no_argument, 0, 'C'},         {"add-generation-prompt", no_argument, 0, 'g'},
        {"chat-template", required_argument, 0, 'T'},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
    const char *model = NULL, *tokfile = NULL;
    bool jsonl = false;
    tok_run r = {0};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 't': tokfile = optarg; break;
        case 'a': r.flags |= LC_TOK_ADD_SPECIAL; break;
        case 'n': r.flags |= LC_TOK_NO_PARSE_SPECIAL; break;
        case 'j': jsonl = true; break;
        case 'p': r.pieces = true; break;
        case 'c': r.count = true; break;
        case 'J': r.json = true; break;
        case 'C': r.chat = true; break;
        case 'g': r.gen_prompt = true; break;
        case 'T': r.chat_template = optarg; break;
        case 'h': usage(stdout); return 0;
        default: return lc_cmd_usage_error("tokenize", "invalid option");
        }
    }
    if (!model && !tokfile)
        return lc_cmd_usage_error("tokenize", "give --model DIR or --tokenizer FILE");
    if (jsonl && optind < argc)
        return lc_cmd_usage_error("tokenize", "--jsonl reads standard input; drop the TEXT argument");
    if (optind + 1 < argc)
        return lc_cmd_usage_error("tokenize", "give the text as one argument (quote it)");

    lc_tokenizer *t = NULL;
    int rc;
    if (tokfile) {
        /* tokenizer_config.json from --model, else from beside the tokenizer file */
        char *dir = NULL;
        if (model) {
            dir = xstrdup(model);
        } else {
            const char *slash = strrchr(tokfile, '/');
            dir = slash ? xstrndup(tokfile, (size_t)(slash - tokfile)) : xstrdup(".");
        }
        char *cfg = lc_path_join(dir, "tokenizer_config.json");
        rc = lc_tokenizer_load_file(tokfile, lc_is_file(cfg) ? cfg : NULL, &t);
        free(cfg);
        free(dir);
    } else {
        rc = lc_tokenizer_load_dir(model, &t);
    }
    if (rc != 0) return lc_cmd_fail();

    if (r.chat && jsonl) {
        lc_tokenizer_free(t);
        return lc_cmd_usage_error("tokenize", "--chat and --jsonl do not go together");
    }
    if (r.chat) {
        lc_buf in = {0};
        if (optind < argc) lc_buf_puts(&in, argv[optind]);
        else slurp(stdin, &in);
        rc = emit_chat(t, &r, in.data ? in.data : "", in.len);
        lc_buf_free(&in);
    } else if (jsonl) {
        rc = run_jsonl(t, &r);
    } else if (optind < argc) {
        rc = emit(t, &r, argv[optind], strlen(argv[optind]));
    } else {
        lc_buf in = {0};
        slurp(stdin, &in);
        rc = emit(t, &r, in.data ? in.data : "", in.len);
        lc_buf_free(&in);
    }
    if (rc == 0 && r.count) {
        double mbs = r.seconds > 0 ? (double)r.bytes / r.seconds / 1e6 : 0;
        if (r.json)
            printf("{\"tokens\": %zu, \"bytes\": %zu, \"lines\": %zu, \"seconds\": %.6f}\n",
                   r.tokens, r.bytes, r.lines, r.seconds);
        else
            printf("%zu tokens, %zu bytes, %zu texts; encoding took %.3f s (%.2f MB/s)\n",
                   r.tokens, r.bytes, r.lines, r.seconds, mbs);
    }
    lc_ids_free(&r.ids);
    lc_buf_free(&r.out);
    lc_tokenizer_free(t);
    return rc == 0 ? 0 : lc_cmd_fail();
}
