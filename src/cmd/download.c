/*
 * download.c — `lorac download REPO_ID`: fetch a model's (or data set's) files from the
 * Hugging Face Hub into huggingface_hub's cache (src/hub) and print the snapshot folder.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "core/log.h"
#include "core/mem.h"
#include "hub/hub.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: lorac download REPO_ID [options]\n\n"
            "Downloads a repository from the Hugging Face Hub into the cache that huggingface_hub\n"
            "uses ($HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub), in its\n"
            "layout (blobs/ETAG, snapshots/COMMIT/PATH symlinks, refs/REVISION), and prints the\n"
            "snapshot folder. Files already complete are not fetched again; an interrupted file\n"
            "is resumed; a download that does not fit the free disk space is refused up front.\n"
            "For models, formats lorac does not load (*.bin, *.pt, *.pth, *.h5,\n"
            "*.msgpack, *.onnx, *.gguf, consolidated*, original/...) are skipped unless\n"
            "--include asks.\n"
            "Environment: HF_ENDPOINT (default https://huggingface.co), HF_TOKEN (else HF_TOKEN=\n"
            "in ./.env, else the token file of 'huggingface-cli login'), HF_HUB_OFFLINE=1\n"
            "(the cache only: print the cached snapshot of the revision).\n\n"
            "  --revision R         branch, tag, refs/pr/N or commit (default main)\n"
            "  --include GLOB       only files matching GLOB ('*' crosses '/'); repeatable\n"
            "  --repo-type T        model (default) or dataset\n"
            "  -q, --quiet          no progress output\n"
            "  -h, --help           this help\n");
}

int cmd_download(int argc, char **argv) {
    static const struct option opts[] = {{"revision", required_argument, 0, 'r'},
                                         {"include", required_argument, 0, 'i'},
                                         {"repo-type", required_argument, 0, 't'},
                                         {"quiet", no_argument, 0, 'q'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    lc_hub_options o = {0};
    const char **inc = xcalloc((size_t)argc + 1, sizeof *inc);
    size_t n_inc = 0;
    int c, rc = 0;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "qh", opts, NULL)) != -1) {
        switch (c) {
        case 'r': o.revision = optarg; break;
        case 'i': inc[n_inc++] = optarg; break;
        case 't':
            if (!strcmp(optarg, "model")) o.dataset = false;
            else if (!strcmp(optarg, "dataset")) o.dataset = true;
            else {
                rc = lc_cmd_usage_error("download", "--repo-type must be model or dataset, got '%s'", optarg);
                goto done;
            }
            break;
        case 'q': o.quiet = true; break;
        case 'h': usage(stdout); goto done;
        default: rc = lc_cmd_usage_error("download", "invalid option"); goto done;
        }
    }
    if (optind + 1 != argc) {
        rc = lc_cmd_usage_error("download", "give one repo id (org/name)");
        goto done;
    }
    o.include = inc;
    o.n_include = n_inc;
    lc_log_quiet(o.quiet);
    const char *repo = argv[optind];
    char *dir = NULL;
    lc_hub_stats st;
    if (lc_hub_download(repo, &o, &dir, &st) != 0) {
        rc = lc_cmd_fail();
        goto done;
    }
    lc_info("%s: %zu files listed, %zu downloaded, %zu already complete, %zu skipped (formats lorac "
            "does not load)",
            repo, st.listed, st.fetched, st.skipped_present, st.skipped_format);
    printf("%s\n", dir);
    free(dir);
done:
    free(inc);
    return rc;
}
