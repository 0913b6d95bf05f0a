/*
 * prepare.c — `lorac prepare`: a data set file to train/valid/test JSONL.
 *
 * Thin: parses options, reads the rows and formats/splits them (train/prepare), writes
 * the three files, prints counts, leaks and token-length statistics.
 */
#include <dirent.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "core/error.h"
#include "core/file.h"
#include "core/mem.h"
#include "core/vec.h"
#include "hub/hub.h"
#include "text/chat.h"
#include "text/tokenizer.h"
#include "train/prepare.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: lorac prepare --input FILE --out DIR [options]\n\n"
            "Turns a data set file into train.jsonl, valid.jsonl and test.jsonl for lorac train.\n\n"
            "  --input FILE            rows as JSONL, a JSON array (.json) or CSV with a header (.csv)\n"
            "  --dataset REPO_ID       instead of --input: a Hugging Face data set, downloaded into\n"
            "                          the cache; its one JSONL/JSON/CSV file is read, or, when it\n"
            "                          has none (Parquet only), its rows come from the Hub's\n"
            "                          datasets server ($HF_DATASETS_SERVER)\n"
            "  --dataset-file PATH     with --dataset: which file of the repository to read\n"
            "  --dataset-config NAME   with --dataset, rows from the datasets server: the config\n"
            "                          (default: the only one, else \"default\")\n"
            "  --dataset-split NAME    ... and the split (default: train, else the only one)\n"
            "  --out DIR               where the three files go (created; written atomically)\n"
            "  --model DIR             the model folder whose tokenizer and chat template are used\n"
            "                          (needed by --format text; gives token statistics)\n"
            "  --input-field NAME      the input field (default description)\n"
            "  --output-field NAME     the target field (default instructions)\n"
            "  --prompt-template T     the prompt, {field} replaced by the row's field; \\n, \\t and\n"
            "                          \\\\ are escapes, {{ and }} braces (default: \"Write the RISC-V\n"
            "                          assembly instruction for the following operation:\\n{description}\")\n"
            "  --format F              text (the chat template applied: {\"text\"}), chat\n"
            "                          ({\"messages\"}) or completions ({\"prompt\", \"completion\"});\n"
            "                          default text\n"
            "  --chat-template NAME    with --format text: mistral, llama2, llama3, chatml or phi3\n"
            "                          (default: detected from the model's tokenizer_config.json)\n"
            "  --valid-fraction X      share of rows for valid.jsonl (default 0.1)\n"
            "  --test-fraction X       share of rows for test.jsonl (default 0.1)\n"
            "  --seed N                the shuffle's seed (default 0)\n"
            "  --no-shuffle            keep the file's order: train takes the first\n"
            "                          floor(n*(1-valid-test)) rows, then valid, then test\n"
            "  --dedupe                drop rows whose formatted line repeats an earlier one\n"
            "  --split-by UNIT         row (default); a field name such as mnemonic (all rows with\n"
            "                          one value go to one split: held-out groups); or paraphrase\n"
            "                          (valid/test get unseen wordings of targets seen in train)\n"
            "  --max-seq-length N      report rows longer than N tokens (default 2048)\n"
            "  -h, --help              this help\n");
}

/* Turns the escapes \n, \t and \\ of a command-line template into characters (new string). */
static char *unescape(const char *s) {
    char *out = xmalloc(strlen(s) + 1), *q = out;
    for (; *s; s++) {
        if (s[0] == '\\' && (s[1] == 'n' || s[1] == 't' || s[1] == '\\')) {
            *q++ = s[1] == 'n' ? '\n' : s[1] == 't' ? '\t' : '\\';
            s++;
        } else {
            *q++ = *s;
        }
    }
    *q = 0;
    return out;
}

static void print_stats(const char *name, const lc_data_stats *s, long long max_len) {
    if (!s->count) {
        printf("  %-5s  no rows\n", name);
        return;
    }
    printf("  %-5s  %zu tokens; per row min %zu, median %zu, max %zu; %zu over %lld\n", name,
           s->tokens, s->min, s->median, s->max, s->n_truncated, max_len);
}

/* Appends to v the files under dir (relative paths) whose names end in .jsonl, .json or
 * .csv, leaving out the Hub's metadata files. */
static void find_data_files(const char *root, const char *rel, lc_buf *list, int *n) {
    char *dir = rel[0] ? lc_path_join(root, rel) : xstrdup(root);
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char *r = rel[0] ? lc_path_join(rel, e->d_name) : xstrdup(e->d_name);
        char *full = lc_path_join(root, r);
        size_t L = strlen(e->d_name);
        if (lc_is_dir(full)) {
            find_data_files(root, r, list, n);
        } else if ((L > 6 && !strcmp(e->d_name + L - 6, ".jsonl")) ||
                   (L > 5 && !strcmp(e->d_name + L - 5, ".json") &&
                    strcmp(e->d_name, "dataset_infos.json") && strcmp(e->d_name, "dataset_info.json")) ||
                   (L > 4 && !strcmp(e->d_name + L - 4, ".csv"))) {
            if ((*n)++) lc_buf_puts(list, ", ");
            lc_buf_puts(list, r);
        }
        free(full);
        free(r);
    }
    if (d) closedir(d);
    free(dir);
}

/* Downloads a Hub data set and sets *path (owned by the caller) to the file to read:
 * `file` when given, else its one JSONL/JSON/CSV file, else (a data set published as
 * Parquet) the rows of one split from the datasets server, cached as JSONL. */
static int dataset_input(const char *repo, const char *file, const lc_hub_rows_options *ro, char **path) {
    const char *globs[] = {file ? file : "*.jsonl", "*.json", "*.csv", "*.md"};
    lc_hub_options ho = {.dataset = true, .include = globs, .n_include = file ? 1 : 4, .quiet = ro->quiet};
    char *snap = NULL;
    if (lc_hub_download(repo, &ho, &snap, NULL) != 0) return -1;
    int rc = 0;
    if (file) {
        *path = lc_path_join(snap, file);
        if (!lc_is_file(*path)) {
            rc = lc_fail("%s: the data set has no file '%s' (see the repository's file list)", repo, file);
            free(*path);
            *path = NULL;
        }
    } else {
        lc_buf list = {0};
        int n = 0;
        find_data_files(snap, "", &list, &n);
        if (n == 1) *path = lc_path_join(snap, list.data);
        else if (n == 0) {
            const char *slash = strrchr(snap, '/');
            if (lc_hub_dataset_rows(repo, slash ? slash + 1 : snap, ro, path) != 0)
                rc = lc_fail_prefix("%s has no JSONL, JSON or CSV file (lorac does not read Parquet), so its "
                                    "rows were asked of the datasets server",
                                    repo);
        } else
            rc = lc_fail("%s: the data set has %d data files (%s): pick one with --dataset-file", repo,
                         n, list.data);
        lc_buf_free(&list);
    }
    free(snap);
    return rc;
}

int cmd_prepare(int argc, char **argv) {
    static const struct option opts[] = {
        {"input", required_argument, 0, 'i'},
        {"dataset", required_argument, 0, 'D'},
        {"dataset-file", required_argument, 0, 'F'},
        {"dataset-config", required_argument, 0, 'C'},
        {"dataset-split", required_argument, 0, 'S'},
        {"out", required_argument, 0, 'o'},
        {"model", required_argument, 0, 'm'},
        {"input-field", required_argument, 0, 'I'},
        {"output-field", required_argument, 0, 'O'},
        {"prompt-template", required_argument, 0, 'p'},
        {"format", required_argument, 0, 'f'},
        {"chat-template", required_argument, 0, 'T'},
        {"valid-fraction", required_argument, 0, 'v'},
        {"test-fraction", required_argument, 0, 't'},
        {"seed", required_argument, 0, 's'},
        {"no-shuffle", no_argument, 0, 'N'},
        {"dedupe", no_argument, 0, 'd'},
        {"split-by", required_argument, 0, 'b'},
        {"max-seq-length", required_argument, 0, 'L'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *input = NULL, *out = NULL, *model = NULL, *chat_template = NULL;
    const char *dataset = NULL, *dataset_file = NULL;
    lc_hub_rows_options ro = {0};
    char *input_owned = NULL, *model_dir = NULL;
    const char *tpl_arg = NULL;
    lc_prep_options o = {.input_field = "description",
                         .output_field = "instructions",
                         .format = LC_PREP_TEXT,
                         .chat_family = -1,
                         .valid_fraction = 0.1,
                         .test_fraction = 0.1,
                         .shuffle = true};
    long long seed = 0, max_len = 2048;
    float frac;
    int c, e;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'i': input = optarg; break;
        case 'D': dataset = optarg; break;
        case 'F': dataset_file = optarg; break;
        case 'C': ro.config = optarg; break;
        case 'S': ro.split = optarg; break;
        case 'o': out = optarg; break;
        case 'm': model = optarg; break;
        case 'I': o.input_field = optarg; break;
        case 'O': o.output_field = optarg; break;
        case 'p': tpl_arg = optarg; break;
        case 'T': chat_template = optarg; break;
        case 'f':
            if (!strcmp(optarg, "text")) o.format = LC_PREP_TEXT;
            else if (!strcmp(optarg, "chat")) o.format = LC_PREP_CHAT;
            else if (!strcmp(optarg, "completions")) o.format = LC_PREP_COMPLETIONS;
            else
                return lc_cmd_usage_error("prepare", "--format '%s': use text, chat or completions",
                                          optarg);
            break;
        case 'v':
        case 't':
            if ((e = lc_cmd_parse_float(optarg, c == 'v' ? "--valid-fraction" : "--test-fraction",
                                        &frac)))
                return e;
            /* keep the decimal value exactly as typed: 0.1 as a double, not a float */
            *(c == 'v' ? &o.valid_fraction : &o.test_fraction) = strtod(optarg, NULL);
            break;
        case 's':
            if ((e = lc_cmd_parse_int(optarg, "--seed", 0, (long long)1 << 62, &seed))) return e;
            break;
        case 'L':
            if ((e = lc_cmd_parse_int(optarg, "--max-seq-length", 1, (long long)1 << 40, &max_len)))
                return e;
            break;
        case 'N': o.shuffle = false; break;
        case 'd': o.dedupe = true; break;
        case 'b': o.split_by = optarg; break;
        case 'h': usage(stdout); return 0;
        default: return lc_cmd_usage_error("prepare", "invalid option");
        }
    }
    if (optind < argc)
        return lc_cmd_usage_error("prepare", "unexpected argument '%s'", argv[optind]);
    if (input && dataset) return lc_cmd_usage_error("prepare", "give --input or --dataset, not both");
    if (!input && !dataset)
        return lc_cmd_usage_error("prepare", "give --input FILE (JSONL, JSON or CSV) or --dataset REPO_ID");
    if ((dataset_file || ro.config || ro.split) && !dataset)
        return lc_cmd_usage_error("prepare", "--dataset-file, --dataset-config and --dataset-split need --dataset");
    if (!out) return lc_cmd_usage_error("prepare", "give --out DIR");
    if (o.format == LC_PREP_TEXT && !model)
        return lc_cmd_usage_error("prepare", "--format text applies the chat template of a model: "
                                             "give --model DIR (or use --format chat/completions)");
    o.seed = (uint64_t)seed;

    lc_tokenizer *t = NULL;
    cJSON *rows = NULL;
    lc_prep_result r = {0};
    char *tpl = unescape(tpl_arg ? tpl_arg : LC_PREP_DEFAULT_TEMPLATE);
    o.prompt_template = tpl;
    int rc = -1;
    lc_chat_family fam = LC_CHAT_MISTRAL;
    bool have_fam = false;
    if (dataset) {
        if (dataset_input(dataset, dataset_file, &ro, &input_owned) != 0) goto done;
        input = input_owned;
    }
    if (model) {
        if (lc_hub_resolve_model(model, &model_dir) != 0) goto done;
        if (lc_tokenizer_load_dir(model_dir, &t) != 0) goto done;
        if (chat_template || lc_tokenizer_chat_template(t) || o.format == LC_PREP_TEXT) {
            if (lc_cmd_chat_family(t, chat_template, &fam) != 0) goto done;
            have_fam = true;
        }
        int32_t bos = lc_tokenizer_bos(t), eos = lc_tokenizer_eos(t);
        o.bos_text = bos >= 0 ? lc_tokenizer_piece(t, bos) : NULL;
        o.eos_text = eos >= 0 ? lc_tokenizer_piece(t, eos) : NULL;
        if (have_fam) o.chat_family = (int)fam;
    }
    if (lc_rows_load(input, &rows) != 0) goto done;
    if (lc_prepare(rows, input, &o, &r) != 0) goto done;
    if (lc_prepare_write(&r, out) != 0) goto done;

    printf("%zu rows from %s", r.n_in, input);
    if (o.dedupe) printf(" (%zu repeated rows dropped)", r.n_dupes);
    printf("\ntrain %zu, valid %zu, test %zu rows -> %s/{train,valid,test}.jsonl\n",
           r.n[LC_SPLIT_TRAIN], r.n[LC_SPLIT_VALID], r.n[LC_SPLIT_TEST], out);
    if (r.n_leaks)
        printf("leaks: %zu %s values occur in more than one split (e.g. \"%.60s\")\n", r.n_leaks,
               o.input_field, r.leak_example);
    else
        printf("leaks: none (no %s value occurs in two splits)\n", o.input_field);
    if (t) {
        lc_data_stats st[LC_N_SPLITS];
        if (lc_prepare_stats(&r, t, have_fam ? (int)fam : -1, max_len, st) != 0) goto done;
        printf("token lengths (%s's tokenizer, as lorac train reads the files):\n", model);
        for (int sp = 0; sp < LC_N_SPLITS; sp++) print_stats(lc_split_names[sp], &st[sp], max_len);
    } else {
        printf("token lengths: give --model DIR to count them\n");
    }
    rc = 0;
done:
    free(input_owned);
    free(model_dir);
    free(tpl);
    lc_prep_result_free(&r);
    cJSON_Delete(rows);
    lc_tokenizer_free(t);
    return rc == 0 ? 0 : lc_cmd_fail();
}
