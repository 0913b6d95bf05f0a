/*
 * hub.h — the Hugging Face Hub: list a repository's files at a revision and download
 * them into the cache that huggingface_hub uses, so that Python tools and lorac share
 * one download; and the rows of a data set published only as Parquet, through the Hub's
 * datasets server.
 *
 * Protocol: GET {endpoint}/api/{models|datasets}/{repo}/revision/{rev} gives the commit
 * ("sha") and the files ("siblings"); a HEAD of
 * {endpoint}/[datasets/]{repo}/resolve/{commit}/{path} gives each file's ETag
 * (X-Linked-Etag for LFS files: the sha256; else ETag: the git blob sha1) and the GET
 * its bytes, redirects followed. The endpoint is $HF_ENDPOINT (default
 * https://huggingface.co); the token $HF_TOKEN, else HF_TOKEN= in a .env file of the
 * working folder, else the file that `huggingface-cli login` writes ($HF_HOME/token),
 * sent as a Bearer header and never printed. The cache layout is huggingface_hub's
 * (cache.h): blobs/ETAG, snapshots/COMMIT/PATH as relative symlinks, refs/REV. A blob is
 * fetched into ETAG.incomplete (resumed with a Range request on the next run) and renamed
 * only once complete (the size of the listing, and the sha256 of the Hub's LFS digest),
 * so no final name ever holds a partial file. Before fetching, the bytes still to come
 * are compared with the free space of the cache's disk. HF_HUB_OFFLINE=1 answers from
 * the cache alone (refs/REV gives the commit).
 * This module never prints except the progress bar and lc_info/lc_warn lines (core/log.h)
 * and never exits.
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
 * complete (in this snapshot, or as a blob of another) are not fetched again; with
 * HF_HUB_OFFLINE set, *dir is the cached snapshot of the revision. Model formats lorac
 * cannot load (*.bin, *.pt, *.pth, *.h5, *.msgpack, *.onnx, *.ot, *.gguf, *.ckpt,
 * *.tflite, Mistral's consolidated*, files under original/) are skipped unless an
 * include glob asks. Returns 0 or -1 (one line naming the repo, the URL and the fix; a
 * full disk names the file, the bytes needed and the bytes free). */
int lc_hub_download(const char *repo, const lc_hub_options *o, char **dir, lc_hub_stats *st);

typedef struct {
    const char *config; // NULL: the data set's only config, else "default"
    const char *split;  // NULL: "train", else the only split
    bool quiet;         // no progress bar
} lc_hub_rows_options;

/* The rows of one split of data set repo, fetched page by page (100 rows) from the
 * datasets server ($HF_DATASETS_SERVER, default https://datasets-server.huggingface.co:
 * /splits, then /rows) and written as JSONL (one "row" object a line, in order) to
 * {cache}/datasets--org--name/lorac-rows/{commit}/{config}/{split}.jsonl, atomically;
 * *path (owned by the caller) is that file. commit names the data set's revision (the
 * snapshot folder's name). A file already there is used as it is, offline too. Returns
 * 0 or -1 (one line: 401/403 how to get access, 404, truncated cells, a short page). */
int lc_hub_dataset_rows(const char *repo, const char *commit, const lc_hub_rows_options *o, char **path);

/* True when name has the shape of a repo id ("org/name", "name" excluded) and is not a path
 * that exists. */
bool lc_hub_is_repo_id(const char *name);

/* The local folder of a model: name itself when it is a folder; for a repo id the cached
 * snapshot of main (config.json present), downloaded first when missing (never with
 * HF_HUB_OFFLINE=1). *dir is owned by the caller. Returns 0 or -1. */
int lc_hub_resolve_model(const char *name, char **dir);

#endif
