/*
 * cache.h — huggingface_hub's cache layout on disk, read and written the way its
 * file_download.py does, so that a download by either tool serves the other:
 *
 *   {cache}/models--org--name/            (datasets--org--name for data sets)
 *     blobs/ETAG                          the bytes; ETAG is the sha256 of an LFS file,
 *                                         the git blob sha1 of any other file
 *     blobs/ETAG.incomplete               a download in progress (resumed)
 *     snapshots/COMMIT/PATH -> ../../blobs/ETAG   a relative symlink, one more ../ per
 *                                         folder in PATH
 *     refs/REVISION                       the commit of a branch or tag, 40 hex digits,
 *                                         no newline (refs/pr/1 nests)
 *   {cache}/.locks/models--org--name/ETAG.lock    held while a blob is written
 *
 * {cache} is $HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else
 * ~/.cache/huggingface/hub. This module touches only the file system: no network, no
 * printing.
 */
#ifndef LC_HUB_CACHE_H
#define LC_HUB_CACHE_H

#include <stdbool.h>
#include <stdint.h>

/* The cache folder (see above); new string. */
char *lc_hub_cache_root(void);

/* "{cache}/models--org--name" (or datasets--...); new string. */
char *lc_hub_repo_folder(const char *repo, bool dataset);

/* True for a full commit hash: 40 lower-case hex digits. */
bool lc_hub_is_commit(const char *rev);

/* A relative path of a repository (or a revision like refs/pr/1) that is safe to join
 * under a folder: no empty, "." or ".." part, not absolute, no backslash. */
bool lc_hub_safe_path(const char *p);

/* The commit that `rev` names in the cache: rev itself when it is a commit hash, else the
 * content of refs/REV (trailing white space dropped). *commit is new. Returns 0, or -1
 * naming the missing ref file. */
int lc_hub_read_ref(const char *folder, const char *rev, char **commit);

/* Writes refs/REV = commit (no newline, as huggingface_hub does) unless rev is the commit
 * itself or the file already says so. Returns 0 or -1. */
int lc_hub_write_ref(const char *folder, const char *rev, const char *commit);

/* The snapshot folder of repo at rev in the cache, with no network: *dir is new. Returns
 * 0, or -1 with a message saying what is missing and to download with network first. */
int lc_hub_cached_snapshot(const char *repo, bool dataset, const char *rev, char **dir);

/* The link target of snapshots/COMMIT/path to blobs/etag: "../../blobs/ETAG" with one
 * more "../" per '/' in path. New string. */
char *lc_hub_blob_target(const char *path, const char *etag);

/* Makes pointer a symlink to target (replacing what was there, atomically through a
 * temporary name), creating pointer's folders. Returns 0 or -1. */
int lc_hub_link(const char *pointer, const char *target);

/* Free bytes for an unprivileged user on the file system of dir (statvfs); the
 * LORAC_HUB_FREE_BYTES environment variable overrides it (for tests). -1 when unknown. */
int64_t lc_hub_free_bytes(const char *dir);

/* Creates path's parent folders. Returns 0 or -1. */
int lc_hub_mkdirs_for(const char *path);

#endif
