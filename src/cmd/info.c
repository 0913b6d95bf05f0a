/*
 * info.c — `lorac info MODEL`: what a model folder holds.
 *
 * Thin: reads config.json (src/io/config), opens the weights (src/io/safetensors,
 * memory-mapped: nothing is loaded), loads the tokenizer (src/text) and prints the
 * architecture, parameter count, dtypes, file sizes, tokenizer kind, chat-template
 * family and special ids — as text, or as one JSON object with --json. A folder with
 * only tokenizer files is fine (the model parts are then reported as absent); weights
 * that do not match the config are an error.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "core/error.h"
#include "core/file.h"
#include "core/json.h"
#include "core/mem.h"
#include "core/vec.h"
#include "hub/hub.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "text/chat.h"
#include "text/tokenizer.h"

static void usage(FILE *f) {
    fprintf(f, "usage: lorac info MODEL [--json] [--chat-template NAME]\n\n"
               "Describes a Hugging Face model folder: architecture, parameter count, weight\n"
               "dtypes and sizes, tokenizer kind, chat-template family and special ids.\n\n"
               "  --json                one JSON object instead of text\n"
               "  --chat-template NAME  the chat-template family to report (mistral, llama2,\n"
               "                        llama3, chatml, phi3) instead of the detected one\n"
               "  -h, --help            this help\n");
}

/* A key/value report, printed as aligned text or as a JSON object. */
typedef struct {
    bool json;
    lc_buf out;
    int n;
} report;

static void put_key(report *r, const char *key) {
    if (r->json) {
        lc_buf_puts(&r->out, r->n++ ? ",\n  " : "{\n  ");
        lc_json_quote(&r->out, key, strlen(key));
        lc_buf_puts(&r->out, ": ");
    } else {
        lc_buf_printf(&r->out, "%-22s ", key);
    }
}

static void put_str(report *r, const char *key, const char *v) {
    put_key(r, key);
    if (r->json) {
        if (v) lc_json_quote(&r->out, v, strlen(v));
        else lc_buf_puts(&r->out, "null");
    } else {
        lc_buf_printf(&r->out, "%s\n", v ? v : "-");
    }
}

static void put_int(report *r, const char *key, long long v) {
    put_key(r, key);
    lc_buf_printf(&r->out, r->json ? "%lld" : "%lld\n", v);
}

static void put_num(report *r, const char *key, double v) {
    put_key(r, key);
    lc_buf_printf(&r->out, r->json ? "%.17g" : "%g\n", v);
}

static void put_bool(report *r, const char *key, bool v) {
    put_key(r, key);
    lc_buf_puts(&r->out, r->json ? (v ? "true" : "false") : (v ? "yes\n" : "no\n"));
}

/* A token id with its string: "1 (<s>)" in text, {"id": 1, "token": "<s>"} in JSON. */
static void put_tok(report *r, const char *key, const lc_tokenizer *t, int32_t id) {
    put_key(r, key);
    const char *p = id >= 0 ? lc_tokenizer_piece(t, id) : NULL;
    if (r->json) {
        if (id < 0) {
            lc_buf_puts(&r->out, "null");
            return;
        }
        lc_buf_printf(&r->out, "{\"id\": %d, \"token\": ", (int)id);
        if (p) lc_json_quote(&r->out, p, strlen(p));
        else lc_buf_puts(&r->out, "null");
        lc_buf_puts(&r->out, "}");
    } else if (id < 0) {
        lc_buf_puts(&r->out, "-\n");
    } else {
        lc_buf_printf(&r->out, "%d (%s)\n", (int)id, p ? p : "?");
    }
}

static void human_bytes(char *buf, size_t cap, double b) {
    const char *u[] = {"B", "KB", "MB", "GB", "TB"};
    int i = 0;
    while (b >= 1000 && i < 4) b /= 1000, i++;
    snprintf(buf, cap, i ? "%.2f %s" : "%.0f %s", b, u[i]);
}

static int report_model(report *r, const char *dir, bool *has_config) {
    char *cfg_path = lc_path_join(dir, "config.json");
    *has_config = lc_is_file(cfg_path);
    if (!*has_config) {
        free(cfg_path);
        put_str(r, "architecture", NULL);
        return 0;
    }
    lc_model_config c;
    int rc = lc_config_load(&c, cfg_path);
    free(cfg_path);
    if (rc != 0) return -1;
    put_str(r, "architecture", lc_arch_name(c.arch));
    put_int(r, "parameters", (long long)lc_config_param_count(&c));
    put_int(r, "vocab_size", c.vocab_size);
    put_int(r, "hidden_size", c.hidden_size);
    put_int(r, "intermediate_size", c.intermediate_size);
    put_int(r, "layers", c.num_hidden_layers);
    put_int(r, "attention_heads", c.num_attention_heads);
    put_int(r, "kv_heads", c.num_key_value_heads);
    put_int(r, "head_dim", c.head_dim);
    put_num(r, "rope_theta", c.rope_theta);
    put_str(r, "rope_scaling", c.rope_type == LC_ROPE_LLAMA3   ? "llama3"
                               : c.rope_type == LC_ROPE_LINEAR ? "linear"
                                                               : NULL);
    put_int(r, "max_position", c.max_position_embeddings);
    put_num(r, "rms_norm_eps", c.rms_norm_eps);
    put_bool(r, "tied_embeddings", c.tie_word_embeddings);
    put_bool(r, "attention_bias", c.attention_bias);
    if (c.sliding_window > 0) put_int(r, "sliding_window", c.sliding_window);
    else put_str(r, "sliding_window", NULL);
    put_str(r, "config_dtype", c.has_dtype ? lc_dtype_name(c.dtype) : NULL);

    /* Weights: optional (a config-only folder), checked against the config when there. */
    char *idx = lc_path_join(dir, "model.safetensors.index.json");
    char *one = lc_path_join(dir, "model.safetensors");
    bool has_weights = lc_is_file(idx) || lc_is_file(one);
    free(idx);
    free(one);
    if (!has_weights) {
        put_str(r, "weights", NULL);
        return 0;
    }
    lc_safetensors st;
    if (lc_st_open(&st, dir) != 0 || lc_config_check_weights(&c, &st, dir) != 0) {
        lc_st_close(&st);
        return -1;
    }
    size_t total = 0;
    size_t by_dtype[32] = {0};
    for (int i = 0; i < st.n_files; i++) total += st.files[i].n_bytes;
    for (size_t i = 0; i < st.n_tensors; i++)
        if ((unsigned)st.tensors[i].dtype < 32) by_dtype[st.tensors[i].dtype] += st.tensors[i].numel;
    char hb[32];
    human_bytes(hb, sizeof hb, (double)total);
    put_int(r, "weight_files", st.n_files);
    put_int(r, "weight_bytes", (long long)total);
    if (!r->json) {
        /* the human size next to the exact one */
        r->out.len--;
        lc_buf_printf(&r->out, " (%s)\n", hb);
    }
    put_int(r, "tensors", (long long)st.n_tensors);
    lc_buf d = {0};
    for (int dt = 0; dt < 32; dt++) {
        if (!by_dtype[dt]) continue;
        if (d.len) lc_buf_puts(&d, ", ");
        lc_buf_printf(&d, "%s %zu", lc_dtype_name((lc_dtype)dt), by_dtype[dt]);
    }
    put_str(r, "weight_dtypes", d.data);
    lc_buf_free(&d);
    lc_st_close(&st);
    return 0;
}

static int report_tokenizer(report *r, const char *dir, const char *chat_override) {
    lc_tokenizer *t;
    if (lc_tokenizer_load_dir(dir, &t) != 0) return -1;
    put_str(r, "tokenizer", lc_tokenizer_kind(t));
    put_int(r, "tokenizer_vocab", lc_tokenizer_vocab_size(t));
    put_tok(r, "bos", t, lc_tokenizer_bos(t));
    put_tok(r, "eos", t, lc_tokenizer_eos(t));
    put_tok(r, "unk", t, lc_tokenizer_unk(t));
    put_tok(r, "pad", t, lc_tokenizer_pad(t));
    put_bool(r, "adds_bos", lc_tokenizer_adds_bos(t));
    put_bool(r, "adds_eos", lc_tokenizer_adds_eos(t));
    int rc = 0;
    lc_chat_family f;
    if (chat_override) {
        if (lc_chat_family_parse(chat_override, &f) != 0) rc = -1;
        else put_str(r, "chat_template", lc_chat_family_name(f));
    } else if (!lc_tokenizer_chat_template(t)) {
        put_str(r, "chat_template", NULL);
    } else if (lc_chat_detect(lc_tokenizer_chat_template(t), &f) == 0) {
        put_str(r, "chat_template", lc_chat_family_name(f));
    } else {
        put_str(r, "chat_template", "unrecognised (pass --chat-template NAME)");
        lc_err_clear();
    }
    lc_tokenizer_free(t);
    return rc;
}

int cmd_info(int argc, char **argv) {
    static const struct option opts[] = {{"json", no_argument, 0, 'j'},
                                         {"chat-template", required_argument, 0, 'c'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    report r = {0};
    const char *chat = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'j': r.json = true; break;
        case 'c': chat = optarg; break;
        case 'h': usage(stdout); return 0;
        default: return lc_cmd_usage_error("info", "invalid option");
        }
    }
    if (optind + 1 != argc) return lc_cmd_usage_error("info", "give one model folder");
    const char *name = argv[optind];
    if (!lc_is_dir(name) && !lc_hub_is_repo_id(name)) {
        lc_fail("%s: not a folder (give a Hugging Face model folder or repo id)", name);
        return lc_cmd_fail();
    }
    char *local = NULL; // a repo id: its cached snapshot, downloaded when missing
    if (lc_hub_resolve_model(name, &local) != 0) return lc_cmd_fail();
    const char *dir = local;
    put_str(&r, "model", dir);
    bool has_config;
    int rc = report_model(&r, dir, &has_config);
    if (rc == 0) rc = report_tokenizer(&r, dir, chat);
    free(local);
    if (rc != 0) {
        lc_buf_free(&r.out);
        return lc_cmd_fail();
    }
    if (r.json) lc_buf_puts(&r.out, "\n}\n");
    fwrite(r.out.data, 1, r.out.len, stdout);
    lc_buf_free(&r.out);
    return 0;
}
