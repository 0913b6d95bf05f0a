/*
 * hub.c — Hugging Face Hub downloads into huggingface_hub's cache layout (see hub.h and
 * cache.h). Owns: the file listing, the default file filter, the plan of what to fetch
 * (metadata by HEAD, the free-space check), the blob transfers (.incomplete, resume,
 * size and sha256 checks, lock, rename, symlink) and the model look-up by repo id.
 * Must not: print (beyond the progress bar and lc_info lines), exit, or log the token.
 */
#include "hub/hub.h"

#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "core/error.h"
#include "core/file.h"
#include "core/json.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/vec.h"
#include "hub/cache.h"
#include "hub/http.h"
#include "hub/sha256.h"

/* "org/name" (or "name" when plain is allowed) of the characters the Hub allows. */
static bool repo_id_shape(const char *name, bool plain) {
    if (!name || !*name || name[0] == '.' || name[0] == '/' || name[0] == '-') return false;
    const char *slash = strchr(name, '/');
    if (!slash && !plain) return false;
    if (slash && (!slash[1] || strchr(slash + 1, '/'))) return false;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
              *p == '_' || *p == '.' || *p == '/'))
            return false;
    return !strstr(name, "..");
}

bool lc_hub_is_repo_id(const char *name) {
    return repo_id_shape(name, false) && !lc_is_dir(name) && !lc_is_file(name);
}

/* ----------------------------------------------------------- listing */

typedef struct {
    char *path;
    int64_t size;     // -1: unknown
    char sha256[65];  // the LFS digest in hex, "" when the listing gives none
    char blob_id[41]; // the git blob sha1 ("blobId"), "" when none
} entry;

static void entries_free(entry *e, size_t n) {
    for (size_t i = 0; i < n; i++) free(e[i].path);
    free(e);
}

static bool hex_of_len(const char *s, size_t n) { return strlen(s) == n && strspn(s, "0123456789abcdef") == n; }

/* GET {ep}/api/{models|datasets}/{repo}/revision/{rev}?blobs=true: the commit and the
 * files (path, size, LFS sha256, blob id). */
static int list_repo(const char *ep, const char *repo, bool dataset, const char *rev, char **sha, entry **out,
                     size_t *n_out) {
    lc_buf url = {0}, body = {0};
    lc_buf_printf(&url, "%s/api/%s/%s/revision/", ep, dataset ? "datasets" : "models", repo);
    lc_hub_url_escape(&url, rev, true);
    lc_buf_puts(&url, "?blobs=true");
    lc_hub_sink s = {.mem = &body};
    long status = 0;
    int rc = -1;
    cJSON *j = NULL;
    entry *e = NULL;
    size_t n = 0;
    if (lc_hub_http_get(url.data, repo, &s, 0, &status) != 0) {
        lc_fail_prefix("cannot list the files of the Hub repo (no network? for offline use fetch the folder by hand, "
                       "e.g. 'huggingface-cli download %s --local-dir DIR', and give DIR)",
                       repo);
        goto done;
    }
    if (status != 200) {
        lc_hub_status_fail(repo, url.data, status, dataset);
        goto done;
    }
    lc_buf what = {0};
    lc_buf_printf(&what, "%s (the Hub's listing of %s)", url.data, repo);
    int prc = lc_json_parse(body.data, body.len, what.data, &j);
    lc_buf_free(&what);
    if (prc != 0) goto done;
    const cJSON *sib = cJSON_GetObjectItemCaseSensitive(j, "siblings");
    if (!cJSON_IsArray(sib)) {
        lc_fail("%s: the Hub's listing %s has no \"siblings\" array", repo, url.data);
        goto done;
    }
    const cJSON *shaj = cJSON_GetObjectItemCaseSensitive(j, "sha");
    *sha = xstrdup(cJSON_IsString(shaj) && lc_hub_safe_path(shaj->valuestring) && !strchr(shaj->valuestring, '/')
                       ? shaj->valuestring
                       : rev);
    size_t cap = (size_t)cJSON_GetArraySize(sib) + 1;
    e = xcalloc(cap, sizeof *e);
    const cJSON *it;
    cJSON_ArrayForEach(it, sib) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(it, "rfilename");
        if (!cJSON_IsString(name)) continue;
        if (!lc_hub_safe_path(name->valuestring)) {
            lc_fail("%s: the Hub's listing names an unsafe path '%s'", repo, name->valuestring);
            goto done;
        }
        const cJSON *size = cJSON_GetObjectItemCaseSensitive(it, "size");
        e[n].path = xstrdup(name->valuestring);
        e[n].size = cJSON_IsNumber(size) && size->valuedouble >= 0 ? (int64_t)size->valuedouble : -1;
        const cJSON *lfs = cJSON_GetObjectItemCaseSensitive(it, "lfs");
        const cJSON *dig = cJSON_GetObjectItemCaseSensitive(lfs, "sha256");
        if (cJSON_IsString(dig) && hex_of_len(dig->valuestring, 64)) memcpy(e[n].sha256, dig->valuestring, 65);
        const cJSON *bid = cJSON_GetObjectItemCaseSensitive(it, "blobId");
        if (cJSON_IsString(bid) && hex_of_len(bid->valuestring, 40)) memcpy(e[n].blob_id, bid->valuestring, 41);
        n++;
    }
    rc = 0;
done:
    if (rc != 0) {
        entries_free(e, n);
        e = NULL;
        n = 0;
    }
    *out = e;
    *n_out = n;
    cJSON_Delete(j);
    lc_buf_free(&url);
    lc_buf_free(&body);
    return rc;
}

/* ------------------------------------------------------------ filter */

static const char *const SKIPPED_FORMATS[] = {"*.bin",       "*.pt",         "*.pth",  "*.h5",   "*.msgpack",
                                              "*.onnx",      "*.ot",         "*.gguf", "*.ckpt", "*.tflite",
                                              "original/*",  "*.onnx_data",
                                              "consolidated*"}; // Mistral's own format, beside the HF shards

static bool wanted(const char *path, const lc_hub_options *o, bool *format_skip) {
    *format_skip = false;
    if (o->include && o->n_include > 0) {
        for (size_t i = 0; i < o->n_include; i++)
            if (fnmatch(o->include[i], path, 0) == 0) return true;
        return false;
    }
    if (o->dataset) return true;
    for (size_t i = 0; i < sizeof SKIPPED_FORMATS / sizeof SKIPPED_FORMATS[0]; i++)
        if (fnmatch(SKIPPED_FORMATS[i], path, 0) == 0) {
            *format_skip = true;
            return false;
        }
    return true;
}

/* ------------------------------------------------------------- files */

static int64_t file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) ? (int64_t)st.st_size : -1;
}

/* The sha256 of a file's bytes in hex. Returns 0 or -1. */
static int file_sha256(const char *path, char hex[65]) {
    lc_map m;
    if (lc_map_file(path, &m) != 0) return -1;
    lc_sha256 s;
    lc_sha256_init(&s);
    if (m.len) lc_sha256_update(&s, m.data, m.len);
    lc_sha256_final_hex(&s, hex);
    lc_unmap(&m);
    return 0;
}

/* One file to fetch: where from, under which blob name, how big, which digest. */
typedef struct {
    const entry *e;
    char *url;     // {ep}/[datasets/]{repo}/resolve/{commit}/{path}
    char *blob;    // {folder}/blobs/{etag}
    char *pointer; // {folder}/snapshots/{commit}/{path}
    char etag[136];
    int64_t size;  // -1 unknown
    char sha256[65];
} job;

static bool disk_full_errno(int e) {
#ifdef EDQUOT
    if (e == EDQUOT) return true;
#endif
    return e == ENOSPC || e == EFBIG;
}

/* The one-line message for a write that ran out of room. */
static int disk_full_fail(const job *j, const char *tmp, int err, int64_t on_disk) {
    lc_buf blobs = {0};
    lc_buf_append(&blobs, j->blob, (size_t)(strrchr(j->blob, '/') - j->blob));
    int64_t avail = lc_hub_free_bytes(blobs.data);
    lc_buf_free(&blobs);
    long long need = j->size >= 0 ? (long long)(j->size - on_disk) : -1;
    return lc_fail("%s: writing %s stopped: %s%s, after %lld of %lld bytes: %lld more bytes are needed and the "
                   "file system has %lld free; make room (or point HF_HUB_CACHE at a larger disk) and run again: "
                   "the part written stays in that .incomplete file and the download resumes from it",
                   j->e->path, tmp, strerror(err), err == EFBIG ? " (also what a file-size limit, ulimit -f, gives)" : "",
                   (long long)on_disk, (long long)j->size, need, (long long)avail);
}

/* Holds {cache}/.locks/{repo folder}/{etag}.lock (huggingface_hub's lock file) so that no
 * other lorac or Python process writes the same blob at once. Returns the descriptor or -1. */
static int lock_blob(const char *folder, const char *etag) {
    const char *base = strrchr(folder, '/');
    lc_buf p = {0};
    lc_buf_append(&p, folder, base ? (size_t)(base - folder) : 0);
    lc_buf_printf(&p, "/.locks/%s/%s.lock", base ? base + 1 : folder, etag);
    int fd = -1;
    if (lc_hub_mkdirs_for(p.data) != 0) goto done;
    fd = open(p.data, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        lc_fail("%s: cannot open the lock file: %s", p.data, strerror(errno));
        goto done;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        lc_fail("%s: another process is downloading this file (it holds the lock); wait for it to finish and run "
                "again",
                p.data);
        close(fd);
        fd = -1;
    }
done:
    lc_buf_free(&p);
    return fd;
}

/* Fetches one blob into blob.incomplete (resumed when present), checks its size and
 * digest and renames it to the blob; then links the snapshot's pointer to it. */
static int fetch_job(const char *repo, const char *folder, const lc_hub_options *o, const job *j) {
    lc_buf tmp = {0};
    lc_buf_printf(&tmp, "%s.incomplete", j->blob);
    int rc = -1, lock = -1;
    FILE *f = NULL;
    if (lc_hub_mkdirs_for(j->blob) != 0) goto done;
    if ((lock = lock_blob(folder, j->etag)) < 0) goto done;
    int64_t done_already = file_size(j->blob);
    if (done_already >= 0 && (j->size < 0 || done_already == j->size)) goto link; // two paths, one blob
    int64_t have = file_size(tmp.data);
    if (have < 0) have = 0;
    if (j->size >= 0 && have > j->size) have = 0;
    f = fopen(tmp.data, have > 0 ? "ab" : "wb");
    if (!f) {
        lc_fail("%s: cannot write: %s", tmp.data, strerror(errno));
        goto done;
    }
    setvbuf(f, NULL, _IONBF, 0); // every byte handed over is on disk or its error is seen
    lc_progress bar;
    lc_progress_start(&bar, j->e->path, j->size);
    if (have > 0) lc_progress_resume_at(&bar, have);
    lc_hub_sink s = {.f = f, .bar = o->quiet ? NULL : &bar, .offset = have};
    long status = 0;
    int g = lc_hub_http_get(j->url, repo, &s, have, &status);
    if (g == 0 && have > 0 && status == 200) {
        /* the server ignored the range: it sent the whole file; start again from zero */
        fclose(f);
        f = fopen(tmp.data, "wb");
        if (!f) {
            lc_fail("%s: cannot write: %s", tmp.data, strerror(errno));
            goto done;
        }
        setvbuf(f, NULL, _IONBF, 0);
        have = 0;
        s = (lc_hub_sink){.f = f, .bar = o->quiet ? NULL : &bar, .offset = 0};
        g = lc_hub_http_get(j->url, repo, &s, 0, &status);
    }
    if (!o->quiet) lc_progress_finish(&bar);
    if (g != 0) {
        if (disk_full_errno(s.write_errno)) {
            fclose(f);
            f = NULL;
            int64_t on_disk = file_size(tmp.data);
            disk_full_fail(j, tmp.data, s.write_errno, on_disk < 0 ? 0 : on_disk);
        } else {
            lc_fail_prefix("%s: download interrupted (the part fetched is kept as %s and resumed by the next run)",
                           j->e->path, tmp.data);
        }
        goto done;
    }
    if (status == 416 && j->size >= 0 && have == j->size) status = 206; // it was complete already
    if (status != 200 && status != 206) {
        lc_hub_status_fail(repo, j->url, status, o->dataset);
        fclose(f);
        f = NULL;
        unlink(tmp.data);
        goto done;
    }
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
        int err = errno;
        if (disk_full_errno(err)) disk_full_fail(j, tmp.data, err, file_size(tmp.data));
        else lc_fail("%s: writing failed: %s", tmp.data, strerror(err));
        goto done;
    }
    fclose(f);
    f = NULL;
    int64_t got = file_size(tmp.data);
    if (j->size >= 0 && got != j->size) {
        lc_fail("%s: %s gave %lld bytes, the Hub says %lld; the file was removed, run again", repo, j->url,
                (long long)got, (long long)j->size);
        unlink(tmp.data);
        goto done;
    }
    if (j->sha256[0]) {
        char got_hex[65];
        if (file_sha256(tmp.data, got_hex) != 0) goto done;
        if (strcmp(got_hex, j->sha256) != 0) {
            lc_fail("%s: %s has sha256 %s, the Hub's LFS digest is %s; the file was removed, run again", repo, j->url,
                    got_hex, j->sha256);
            unlink(tmp.data);
            goto done;
        }
    }
    if (rename(tmp.data, j->blob) != 0) {
        lc_fail("%s: cannot rename to %s: %s", tmp.data, j->blob, strerror(errno));
        goto done;
    }
link:;
    char *target = lc_hub_blob_target(j->e->path, j->etag);
    rc = lc_hub_link(j->pointer, target);
    free(target);
done:
    if (f) fclose(f);
    if (lock >= 0) close(lock);
    lc_buf_free(&tmp);
    return rc;
}

/* Fills j (url, etag, size, digest) for entry e at commit: the Hub's HEAD headers as
 * huggingface_hub reads them, the listing's blob id and LFS digest where headers lack. */
static int plan_job(const char *ep, const char *repo, const char *folder, const char *commit, const lc_hub_options *o,
                    const entry *e, const char *pointer, job *j) {
    memset(j, 0, sizeof *j);
    j->e = e;
    lc_buf url = {0};
    lc_buf_printf(&url, "%s/%s%s/resolve/%s/", ep, o->dataset ? "datasets/" : "", repo, commit);
    lc_hub_url_escape(&url, e->path, false);
    j->url = url.data;
    j->pointer = xstrdup(pointer);
    lc_hub_meta m;
    if (lc_hub_http_head(j->url, repo, &m) != 0) return -1;
    if (m.status >= 400) return lc_hub_status_fail(repo, j->url, m.status, o->dataset);
    const char *etag = m.etag[0] ? m.etag : e->sha256[0] ? e->sha256 : e->blob_id;
    if (!etag[0])
        return lc_fail("%s: %s gives no ETag (and the listing no blob id): lorac cannot name the file in the cache; "
                       "is HF_ENDPOINT a Hugging Face Hub?",
                       repo, j->url);
    if (!lc_hub_safe_path(etag) || strchr(etag, '/') || strlen(etag) >= sizeof j->etag)
        return lc_fail("%s: %s gives the ETag '%s', which is not a file name", repo, j->url, etag);
    snprintf(j->etag, sizeof j->etag, "%s", etag);
    j->size = e->size >= 0 ? e->size : m.size;
    if (e->sha256[0]) memcpy(j->sha256, e->sha256, 65);
    else if (hex_of_len(j->etag, 64)) memcpy(j->sha256, j->etag, 65); // an LFS file's etag is its sha256
    lc_buf b = {0};
    lc_buf_printf(&b, "%s/blobs/%s", folder, j->etag);
    j->blob = b.data;
    return 0;
}

static void jobs_free(job *jobs, size_t n) {
    for (size_t i = 0; i < n; i++) free(jobs[i].url), free(jobs[i].blob), free(jobs[i].pointer);
    free(jobs);
}

/* ------------------------------------------------------------ public */

int lc_hub_download(const char *repo, const lc_hub_options *o, char **dir, lc_hub_stats *st) {
    *dir = NULL;
    lc_hub_stats local = {0};
    if (!st) st = &local;
    *st = (lc_hub_stats){0};
    if (!repo_id_shape(repo, true))
        return lc_fail("'%s' is not a Hugging Face repo id (org/name)", repo ? repo : "");
    const char *rev = o->revision ? o->revision : "main";
    if (!lc_hub_safe_path(rev)) return lc_fail("--revision '%s': not a branch, tag or commit name", rev);
    if (lc_hub_offline()) {
        if (lc_hub_cached_snapshot(repo, o->dataset, rev, dir) != 0)
            return lc_fail_prefix("HF_HUB_OFFLINE is set, so lorac uses the cache only");
        return 0;
    }
    char *ep = lc_hub_endpoint();
    char *sha = NULL;
    entry *e = NULL;
    size_t n = 0, n_jobs = 0;
    job *jobs = NULL;
    char *folder = lc_hub_repo_folder(repo, o->dataset);
    lc_buf snap = {0}, blobs = {0};
    int rc = -1;
    if (list_repo(ep, repo, o->dataset, rev, &sha, &e, &n) != 0) goto done;
    lc_buf_printf(&snap, "%s/snapshots/%s", folder, sha);
    lc_buf_printf(&blobs, "%s/blobs", folder);
    if (lc_mkdirs(snap.data) != 0 || lc_mkdirs(blobs.data) != 0) goto done;
    if (lc_hub_write_ref(folder, rev, sha) != 0) goto done;
    st->listed = n;
    jobs = xcalloc(n + 1, sizeof *jobs);
    int64_t need = 0;
    for (size_t i = 0; i < n; i++) {
        bool fmt;
        if (!wanted(e[i].path, o, &fmt)) {
            if (fmt) st->skipped_format++;
            continue;
        }
        char *pointer = lc_path_join(snap.data, e[i].path);
        int64_t have = file_size(pointer); // follows the symlink to its blob
        if (have >= 0 && (e[i].size < 0 || have == e[i].size)) {
            st->skipped_present++;
            free(pointer);
            continue;
        }
        job *j = &jobs[n_jobs];
        int p = plan_job(ep, repo, folder, sha, o, &e[i], pointer, j);
        free(pointer);
        n_jobs++;
        if (p != 0) goto done;
        int64_t blob = file_size(j->blob);
        if (blob >= 0 && (j->size < 0 || blob == j->size)) {
            /* the bytes are cached already (another revision, or Python fetched them) */
            char *target = lc_hub_blob_target(e[i].path, j->etag);
            int l = lc_hub_link(j->pointer, target);
            free(target);
            if (l != 0) goto done;
            st->skipped_present++;
            free(j->url), free(j->blob), free(j->pointer);
            n_jobs--;
            continue;
        }
        if (j->size > 0) {
            lc_buf t = {0};
            lc_buf_printf(&t, "%s.incomplete", j->blob);
            int64_t part = file_size(t.data);
            lc_buf_free(&t);
            need += j->size - (part > 0 && part <= j->size ? part : 0);
        }
    }
    int64_t avail = lc_hub_free_bytes(blobs.data);
    if (avail >= 0 && need > avail) {
        lc_fail("%s: the %zu files to download need %lld more bytes but the file system of %s has %lld free; "
                "make room, or point HF_HUB_CACHE (or HF_HOME) at a larger disk, and run again",
                repo, n_jobs, (long long)need, blobs.data, (long long)avail);
        goto done;
    }
    for (size_t i = 0; i < n_jobs; i++) {
        if (fetch_job(repo, folder, o, &jobs[i]) != 0) goto done;
        st->fetched++;
    }
    *dir = xstrdup(snap.data);
    rc = 0;
done:
    jobs_free(jobs, n_jobs);
    entries_free(e, n);
    free(sha);
    free(ep);
    free(folder);
    lc_buf_free(&snap);
    lc_buf_free(&blobs);
    return rc;
}

/* The cached snapshot of main for a model repo (config.json present), or NULL. */
static char *cached_model(const char *repo) {
    char *d = NULL;
    if (lc_hub_cached_snapshot(repo, false, "main", &d) != 0) {
        lc_err_clear();
        return NULL;
    }
    char *cfg = lc_path_join(d, "config.json");
    bool ok = lc_is_file(cfg);
    free(cfg);
    if (!ok) {
        free(d);
        return NULL;
    }
    return d;
}

int lc_hub_resolve_model(const char *name, char **dir) {
    *dir = NULL;
    if (!name || !*name) return lc_fail("give --model DIR or a Hugging Face repo id");
    if (lc_is_dir(name)) {
        *dir = xstrdup(name);
        return 0;
    }
    if (!lc_hub_is_repo_id(name)) {
        if (lc_is_file(name))
            return lc_fail("%s: is a file; give the model's folder (config.json, tokenizer, *.safetensors)", name);
        return lc_fail("%s: no such model folder (nor a Hugging Face repo id org/name)", name);
    }
    *dir = cached_model(name);
    if (*dir) return 0;
    if (lc_hub_offline())
        return lc_fail("%s: not in the Hugging Face cache and HF_HUB_OFFLINE is set; run 'lorac download %s' "
                       "with network first",
                       name, name);
    lc_hub_options o = {0};
    if (lc_hub_download(name, &o, dir, NULL) != 0)
        return lc_fail_prefix("no local folder '%s', so it was taken for a Hub repo id", name);
    char *cfg = lc_path_join(*dir, "config.json");
    bool ok = lc_is_file(cfg);
    free(cfg);
    if (!ok) {
        free(*dir);
        *dir = NULL;
        return lc_fail("%s: the repo has no config.json; is it a model?", name);
    }
    return 0;
}
