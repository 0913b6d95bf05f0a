/*
 * hub.c — Hugging Face Hub downloads over libcurl into huggingface_hub's cache layout
 * (see hub.h). Owns: the endpoint, token and cache paths, the file listing, the file
 * transfers (.incomplete, resume, size checks, rename) and the default file filter.
 * Must not: print (beyond the progress bar and lc_info lines), exit, or log the token.
 */
#include "hub/hub.h"

#include <curl/curl.h>
#include <errno.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "core/error.h"
#include "core/file.h"
#include "core/json.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/vec.h"
#include "hub/sha256.h"

/* ------------------------------------------------------------ settings */

static char *endpoint(void) {
    const char *e = getenv("HF_ENDPOINT");
    char *s = xstrdup(e && *e ? e : "https://huggingface.co");
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == '/') s[--n] = 0;
    return s;
}

static char *cache_root(void) {
    const char *c = getenv("HF_HUB_CACHE");
    if (c && *c) return xstrdup(c);
    const char *h = getenv("HF_HOME");
    if (h && *h) return lc_path_join(h, "hub");
    const char *x = getenv("XDG_CACHE_HOME");
    if (x && *x) return lc_path_join(x, "huggingface/hub");
    const char *home = getenv("HOME");
    return lc_path_join(home && *home ? home : ".", ".cache/huggingface/hub");
}

/* HF_TOKEN=VALUE (quotes optional, "export " allowed) from a .env file in the working
 * folder, or NULL. */
static char *dotenv_token(void) {
    if (!lc_is_file(".env")) return NULL;
    char *data = NULL, *out = NULL;
    size_t len;
    if (lc_read_file(".env", (size_t)1 << 20, &data, &len) != 0) {
        lc_err_clear();
        return NULL;
    }
    for (char *line = data; line && *line && !out;) {
        char *next = strchr(line, '\n');
        if (next) *next++ = 0;
        while (*line == ' ' || *line == '\t') line++;
        if (!strncmp(line, "export ", 7)) line += 7;
        if (!strncmp(line, "HF_TOKEN=", 9)) {
            char *v = line + 9;
            size_t n = strcspn(v, "\r");
            if (n >= 2 && (v[0] == '"' || v[0] == '\'') && v[n - 1] == v[0]) v++, n -= 2;
            if (n > 0) out = xstrndup(v, n);
        }
        line = next;
    }
    memset(data, 0, len);
    free(data);
    return out;
}

/* The token: $HF_TOKEN, else ./.env's HF_TOKEN, else $HF_HOME/token (or
 * ~/.cache/huggingface/token, where `huggingface-cli login` writes it). NULL if none. */
static char *token(void) {
    const char *t = getenv("HF_TOKEN");
    if (t && *t) return xstrdup(t);
    char *d = dotenv_token();
    if (d) return d;
    const char *h = getenv("HF_HOME");
    char *path;
    if (h && *h) path = lc_path_join(h, "token");
    else {
        const char *home = getenv("HOME");
        path = lc_path_join(home && *home ? home : ".", ".cache/huggingface/token");
    }
    char *data = NULL;
    size_t len = 0;
    if (!lc_is_file(path) || lc_read_file(path, 4096, &data, &len) != 0) {
        lc_err_clear();
        free(path);
        return NULL;
    }
    free(path);
    while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == '\r' || data[len - 1] == ' ')) data[--len] = 0;
    if (len == 0) {
        free(data);
        return NULL;
    }
    return data;
}

static bool offline(void) {
    const char *o = getenv("HF_HUB_OFFLINE");
    return o && *o && strcmp(o, "0") != 0;
}

/* "{cache}/models--org--name" */
static char *repo_folder(const char *repo, bool dataset) {
    lc_buf b = {0};
    char *root = cache_root();
    lc_buf_printf(&b, "%s/%s--", root, dataset ? "datasets" : "models");
    free(root);
    for (const char *p = repo; *p; p++) {
        if (*p == '/') lc_buf_puts(&b, "--");
        else lc_buf_putc(&b, *p);
    }
    return b.data;
}

/* "org/name" (or "name" when plain is allowed) of the characters the Hub allows. */
static bool repo_id_shape(const char *name, bool plain) {
    if (!name || !*name || name[0] == '.' || name[0] == '/' || name[0] == '-') return false;
    const char *slash = strchr(name, '/');
    if (!slash && !plain) return false;
    if (slash && (!slash[1] || strchr(slash + 1, '/'))) return false;
    for (const char *p = name; *p; p++)
        if (!(( *p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_' || *p == '.' || *p == '/'))
            return false;
    return !strstr(name, "..");
}

bool lc_hub_is_repo_id(const char *name) {
    return repo_id_shape(name, false) && !lc_is_dir(name) && !lc_is_file(name);
}

/* -------------------------------------------------------------- HTTP */

static bool curl_ready;

static int ensure_curl(void) {
    if (curl_ready) return 0;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) return lc_fail("libcurl: initialisation failed");
    curl_ready = true;
    return 0;
}

typedef struct {
    lc_buf *mem;      // a body kept in memory, or
    FILE *f;          // one written to a file
    bool write_error;
    lc_progress *bar;
    int64_t offset;   // bytes already on disk before this request (a resume)
    CURL *h;          // to see the status: an error page never goes into a file
} sink;

static size_t on_data(char *p, size_t size, size_t n, void *ud) {
    sink *s = ud;
    size_t len = size * n;
    if (s->mem) {
        if (s->mem->len + len > ((size_t)64 << 20)) return 0; // a listing is never this big
        lc_buf_append(s->mem, p, len);
    } else {
        long status = 0;
        curl_easy_getinfo(s->h, CURLINFO_RESPONSE_CODE, &status);
        if (status >= 300) return len; // the body of an error answer: dropped
        if (fwrite(p, 1, len, s->f) != len) {
            s->write_error = true;
            return 0;
        }
    }
    return len;
}

static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ult, curl_off_t uln) {
    (void)ult;
    (void)uln;
    sink *s = ud;
    if (s->bar) {
        if (dltotal > 0 && s->bar->total <= 0) s->bar->total = s->offset + dltotal;
        lc_progress_update(s->bar, s->offset + dlnow);
    }
    return 0;
}

/* One GET of url into the sink; range_from > 0 asks for the rest from there. *status is
 * the final HTTP status; *resumed says the server answered 206. Returns 0 when the
 * transfer completed (any status), -1 with a message naming what and url otherwise. */
static int http_get(const char *url, const char *what, sink *s, int64_t range_from, long *status,
                    bool *resumed) {
    if (ensure_curl() != 0) return -1;
    CURL *c = curl_easy_init();
    if (!c) return lc_fail("libcurl: cannot create a handle");
    char errbuf[CURL_ERROR_SIZE] = {0};
    struct curl_slist *hdr = NULL;
    char *tok = token();
    if (tok) {
        lc_buf h = {0};
        lc_buf_printf(&h, "Authorization: Bearer %s", tok);
        hdr = curl_slist_append(hdr, h.data);
        memset(h.data, 0, h.len);
        lc_buf_free(&h);
        memset(tok, 0, strlen(tok));
        free(tok);
    }
    char range[64];
    if (range_from > 0) {
        snprintf(range, sizeof range, "%lld-", (long long)range_from);
        curl_easy_setopt(c, CURLOPT_RANGE, range);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "lorac/0.1 (huggingface_hub-compatible)");
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);  // abort a transfer stalled
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);  // for a minute
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    s->h = c;
    curl_easy_setopt(c, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(c, CURLOPT_FAILONERROR, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, s);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    CURLcode rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    if (resumed) *resumed = *status == 206;
    curl_slist_free_all(hdr);
    curl_easy_cleanup(c);
    if (rc != CURLE_OK) {
        if (s->write_error) return lc_fail("%s: writing failed: %s (is the disk full?)", what, strerror(errno));
        if (*status >= 400) return 0; // the status explains it better
        return lc_fail("%s: cannot fetch %s: %s (curl error %d)", what, url, errbuf[0] ? errbuf : curl_easy_strerror(rc),
                       (int)rc);
    }
    return 0;
}

/* The one-line explanation of an HTTP error status. */
static int http_status_fail(const char *repo, const char *url, long status, const char *ep, bool dataset) {
    const char *kind = dataset ? "datasets/" : "";
    switch (status) {
    case 401:
        return lc_fail("%s: %s answered 401 Unauthorized: the repo is private or gated; set HF_TOKEN "
                       "(or run 'huggingface-cli login') with a token that can read it",
                       repo, url);
    case 403:
        return lc_fail("%s: %s answered 403 Forbidden: the repo is gated; accept its licence at %s/%s%s "
                       "with the account whose token you use",
                       repo, url, ep, kind, repo);
    case 404:
        return lc_fail("%s: %s answered 404 Not Found: no such %s or revision (check the id, "
                       "--revision, --repo-type)",
                       repo, url, dataset ? "data set" : "model");
    default: return lc_fail("%s: %s answered HTTP %ld", repo, url, status);
    }
}

/* ----------------------------------------------------------- listing */

typedef struct {
    char *path;
    int64_t size;     // -1: unknown
    char sha256[65];  // the LFS digest in hex, "" when the listing gives none
} entry;

static void entries_free(entry *e, size_t n) {
    for (size_t i = 0; i < n; i++) free(e[i].path);
    free(e);
}

/* A path from the listing is safe to join under the snapshot folder. */
static bool safe_path(const char *p) {
    if (!*p || p[0] == '/' || strstr(p, "\\")) return false;
    for (const char *s = p; *s;) {
        const char *e = strchr(s, '/');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        if (n == 0 || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.')) return false;
        if (!e) break;
        s = e + 1;
    }
    return true;
}

static int list_repo(const char *ep, const char *repo, bool dataset, const char *rev, char **sha,
                     entry **out, size_t *n_out) {
    lc_buf url = {0}, body = {0};
    lc_buf_printf(&url, "%s/api/%s/%s/revision/%s?blobs=true", ep, dataset ? "datasets" : "models", repo, rev);
    sink s = {.mem = &body};
    long status = 0;
    int rc = -1;
    cJSON *j = NULL;
    entry *e = NULL;
    size_t n = 0;
    if (http_get(url.data, repo, &s, 0, &status, NULL) != 0) {
        lc_fail_prefix("cannot list the files of the Hub repo (no network? for offline use fetch the folder by hand, "
                       "e.g. 'huggingface-cli download %s --local-dir DIR', and give DIR)",
                       repo);
        goto done;
    }
    if (status != 200) {
        http_status_fail(repo, url.data, status, ep, dataset);
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
    *sha = xstrdup(cJSON_IsString(shaj) && safe_path(shaj->valuestring) && !strchr(shaj->valuestring, '/')
                       ? shaj->valuestring
                       : rev);
    size_t cap = (size_t)cJSON_GetArraySize(sib) + 1;
    e = xcalloc(cap, sizeof *e);
    const cJSON *it;
    cJSON_ArrayForEach(it, sib) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(it, "rfilename");
        if (!cJSON_IsString(name)) continue;
        if (!safe_path(name->valuestring)) {
            lc_fail("%s: the Hub's listing names an unsafe path '%s'", repo, name->valuestring);
            goto done;
        }
        const cJSON *size = cJSON_GetObjectItemCaseSensitive(it, "size");
        e[n].path = xstrdup(name->valuestring);
        e[n].size = cJSON_IsNumber(size) && size->valuedouble >= 0 ? (int64_t)size->valuedouble : -1;
        const cJSON *lfs = cJSON_GetObjectItemCaseSensitive(it, "lfs");
        const cJSON *dig = cJSON_GetObjectItemCaseSensitive(lfs, "sha256");
        if (cJSON_IsString(dig) && strlen(dig->valuestring) == 64 &&
            strspn(dig->valuestring, "0123456789abcdef") == 64)
            memcpy(e[n].sha256, dig->valuestring, 65);
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

static const char *const SKIPPED_FORMATS[] = {"*.bin",  "*.pt",   "*.pth",  "*.h5",     "*.msgpack",
                                              "*.onnx", "*.ot",   "*.gguf", "*.ckpt",   "*.tflite",
                                              "original/*", "*.onnx_data",
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

static int mkdirs_for(const char *path) {
    char *d = xstrdup(path);
    char *slash = strrchr(d, '/');
    int rc = 0;
    if (slash) {
        *slash = 0;
        rc = lc_mkdirs(d);
    }
    free(d);
    return rc;
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

/* Fetches one file to dst through dst.incomplete (resumed when present). */
static int fetch_file(const char *ep, const char *repo, const lc_hub_options *o, const char *rev,
                      const entry *e, const char *dst) {
    lc_buf url = {0}, tmp = {0};
    lc_buf_printf(&url, "%s/%s%s/resolve/%s/%s", ep, o->dataset ? "datasets/" : "", repo, rev, e->path);
    lc_buf_printf(&tmp, "%s.incomplete", dst);
    int rc = -1;
    FILE *f = NULL;
    if (mkdirs_for(dst) != 0) goto done;
    int64_t have = file_size(tmp.data);
    if (have < 0) have = 0;
    if (e->size >= 0 && have > e->size) have = 0;
    f = fopen(tmp.data, have > 0 ? "ab" : "wb");
    if (!f) {
        lc_fail("%s: cannot write: %s", tmp.data, strerror(errno));
        goto done;
    }
    lc_progress bar;
    lc_progress_start(&bar, e->path, e->size);
    if (have > 0) lc_progress_resume_at(&bar, have);
    sink s = {.f = f, .bar = o->quiet ? NULL : &bar, .offset = have};
    long status = 0;
    bool resumed = false;
    int g = http_get(url.data, repo, &s, have, &status, &resumed);
    if (g == 0 && have > 0 && status == 200) {
        /* the server ignored the range: it sent the whole file; start again from zero */
        fclose(f);
        f = fopen(tmp.data, "wb");
        if (!f) {
            lc_fail("%s: cannot write: %s", tmp.data, strerror(errno));
            goto done;
        }
        s = (sink){.f = f, .bar = o->quiet ? NULL : &bar, .offset = 0};
        g = http_get(url.data, repo, &s, 0, &status, &resumed);
    }
    if (!o->quiet) lc_progress_finish(&bar);
    if (g != 0) {
        lc_fail_prefix("%s: download interrupted (the part fetched is kept as %s and resumed by the next run)",
                       e->path, tmp.data);
        goto done;
    }
    if (status == 416 && e->size >= 0 && have == e->size) status = 206; // it was complete already
    if (status != 200 && status != 206) {
        http_status_fail(repo, url.data, status, ep, o->dataset);
        fclose(f);
        f = NULL;
        unlink(tmp.data);
        goto done;
    }
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
        lc_fail("%s: writing failed: %s (is the disk full?)", tmp.data, strerror(errno));
        goto done;
    }
    fclose(f);
    f = NULL;
    int64_t got = file_size(tmp.data);
    if (e->size >= 0 && got != e->size) {
        lc_fail("%s: %s gave %lld bytes, the Hub's listing says %lld; the file was removed, run again",
                repo, url.data, (long long)got, (long long)e->size);
        unlink(tmp.data);
        goto done;
    }
    if (e->sha256[0]) {
        char got_hex[65];
        if (file_sha256(tmp.data, got_hex) != 0) goto done;
        if (strcmp(got_hex, e->sha256) != 0) {
            lc_fail("%s: %s has sha256 %s, the Hub's LFS digest is %s; the file was removed, run again",
                    repo, url.data, got_hex, e->sha256);
            unlink(tmp.data);
            goto done;
        }
    }
    if (rename(tmp.data, dst) != 0) {
        lc_fail("%s: cannot rename to %s: %s", tmp.data, dst, strerror(errno));
        goto done;
    }
    rc = 0;
done:
    if (f) fclose(f);
    lc_buf_free(&url);
    lc_buf_free(&tmp);
    return rc;
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
    if (!safe_path(rev) || strchr(rev, '/')) return lc_fail("--revision '%s': not a branch, tag or commit name", rev);
    if (offline())
        return lc_fail("%s: HF_HUB_OFFLINE is set, so lorac does not reach the Hub; unset it to download", repo);
    char *ep = endpoint();
    char *sha = NULL;
    entry *e = NULL;
    size_t n = 0;
    char *folder = repo_folder(repo, o->dataset);
    lc_buf snap = {0}, ref = {0};
    int rc = -1;
    if (list_repo(ep, repo, o->dataset, rev, &sha, &e, &n) != 0) goto done;
    lc_buf_printf(&snap, "%s/snapshots/%s", folder, sha);
    if (lc_mkdirs(snap.data) != 0) goto done;
    if (strcmp(sha, rev) != 0) {
        lc_buf_printf(&ref, "%s/refs/%s", folder, rev);
        if (mkdirs_for(ref.data) != 0 || lc_write_file_atomic(ref.data, sha, strlen(sha)) != 0) goto done;
    }
    st->listed = n;
    for (size_t i = 0; i < n; i++) {
        bool fmt;
        if (!wanted(e[i].path, o, &fmt)) {
            if (fmt) st->skipped_format++;
            continue;
        }
        char *dst = lc_path_join(snap.data, e[i].path);
        int64_t have = file_size(dst);
        if (have >= 0 && (e[i].size < 0 || have == e[i].size)) {
            st->skipped_present++;
            free(dst);
            continue;
        }
        /* pin the download to the commit so that every file comes from one revision */
        int f = fetch_file(ep, repo, o, sha, &e[i], dst);
        free(dst);
        if (f != 0) goto done;
        st->fetched++;
    }
    *dir = xstrdup(snap.data);
    rc = 0;
done:
    entries_free(e, n);
    free(sha);
    free(ep);
    free(folder);
    lc_buf_free(&snap);
    lc_buf_free(&ref);
    return rc;
}

/* The cached snapshot of main for a model repo (config.json present), or NULL. */
static char *cached_snapshot(const char *repo) {
    char *folder = repo_folder(repo, false);
    lc_buf ref = {0};
    lc_buf_printf(&ref, "%s/refs/main", folder);
    char *sha = NULL, *out = NULL;
    size_t len;
    if (lc_is_file(ref.data) && lc_read_file(ref.data, 256, &sha, &len) == 0) {
        while (len > 0 && (sha[len - 1] == '\n' || sha[len - 1] == ' ')) sha[--len] = 0;
        if (len > 0 && safe_path(sha) && !strchr(sha, '/')) {
            lc_buf d = {0};
            lc_buf_printf(&d, "%s/snapshots/%s", folder, sha);
            char *cfg = lc_path_join(d.data, "config.json");
            if (lc_is_file(cfg)) out = xstrdup(d.data);
            free(cfg);
            lc_buf_free(&d);
        }
    }
    lc_err_clear();
    free(sha);
    free(folder);
    lc_buf_free(&ref);
    return out;
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
    *dir = cached_snapshot(name);
    if (*dir) return 0;
    if (offline())
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
