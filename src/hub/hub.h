/*
 * hub.h — the Hugging Face Hub: list a repository's files at a revision and download
 * them into the cache that huggingface_hub uses, so that Python tools and lorac share
 * one download.
 *
 * Protocol: GET {endpoint}/api/{models|datasets}/{repo}/revision/{rev} gives the commit
 * ("sha") and the file names ("siblings"); each file comes from
 * {endpoint}/[datasets/]{repo}/resolve/{rev}/{path}, redirects followed. The endpoint is
 * $HF_ENDPOINT (default https://huggingface.co); the token $HF_TOKEN, else HF_TOKEN= in a
 * .env file of the working folder, else the file that
 * `huggingface-cli login` writes ($HF_HOME/token), sent as a Bearer header and never
 * printed. The cache is $HF_HUB_CACHE, else $HF_HOME/hub, else
 * ~/.cache/huggingface/hub: {models|datasets}--org--name/refs/REV holds the commit and
 * snapshots/COMMIT/PATH the files. lorac writes the files straight into the snapshot
 * folder (no blobs/ and symlinks; huggingface_hub reads such a snapshot as it is). A
 * file is fetched into PATH.incomplete (resumed with a Range request on the next run)
 * and renamed only once complete (the size of the listing, and the sha256 of the Hub's
 * LFS digest when the listing gives one), so no final name ever holds a partial file.
 * This module never prints except the progress bar (core/log.h) and never exits.
 */
#ifndef LC_HUB_H
#define LC_HUB_H

#include <stdbool.h>
#include <stddef.h>

typedef struct {
    const char *revision;              // NULL: "main"
    bool dataset;                      // a data set repository, else a model
    const char *const *include;        // globs (fnmatch, '*' crosses '/'); NULL: defaults
    size_t n_include;
    bool quiet;                        // no progress bar nor log lines
} lc_hub_options;

typedef struct {
    size_t listed, fetched, skipped_present, skipped_format;
} lc_hub_stats;

/* Downloads the files of repo that the options select into the cache; *dir (owned by the
 * caller) is the snapshot folder, *st (may be NULL) counts what was done. Files already
 * complete are not fetched again; model formats lorac cannot load (*.bin, *.pt, *.pth,
 * *.h5, *.msgpack, *.onnx, *.ot, *.gguf, *.ckpt, *.tflite, Mistral's consolidated*, files under original/) are skipped unless
 * an include glob asks. Returns 0 or -1 (one line naming the repo, the URL and the fix). */
int lc_hub_download(const char *repo, const lc_hub_options *o, char **dir, lc_hub_stats *st);

/* True when name has the shape of a repo id ("org/name", "name" excluded) and is not a path
 * that exists. */
bool lc_hub_is_repo_id(const char *name);

/* The local folder of a model: name itself when it is a folder; for a repo id the cached
 * snapshot of main (config.json present), downloaded first when missing (never with
 * HF_HUB_OFFLINE=1). *dir is owned by the caller. Returns 0 or -1. */
int lc_hub_resolve_model(const char *name, char **dir);

#endif
