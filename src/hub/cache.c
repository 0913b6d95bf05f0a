/*
 * cache.c — huggingface_hub's cache layout (see cache.h): folder names, refs, relative
 * blob symlinks, offline snapshot look-up and the free space of the cache's disk.
 * Must not: reach the network, print or exit.
 */
#include "hub/cache.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "core/error.h"
#include "core/file.h"
#include "core/mem.h"
#include "core/vec.h"

char *lc_hub_cache_root(void) {
    const char *c = getenv("HF_HUB_CACHE");
    if (c && *c) return xstrdup(c);
    const char *h = getenv("HF_HOME");
    if (h && *h) return lc_path_join(h, "hub");
    const char *x = getenv("XDG_CACHE_HOME");
    if (x && *x) return lc_path_join(x, "huggingface/hub");
    const char *home = getenv("HOME");
    return lc_path_join(home && *home ? home : ".", ".cache/huggingface/hub");
}

char *lc_hub_repo_folder(const char *repo, bool dataset) {
    lc_buf b = {0};
    char *root = lc_hub_cache_root();
    lc_buf_printf(&b, "%s/%s--", root, dataset ? "datasets" : "models");
    free(root);
    for (const char *p = repo; *p; p++) {
        if (*p == '/') lc_buf_puts(&b, "--");
        else lc_buf_putc(&b, *p);
    }
    return b.data;
}

bool lc_hub_is_commit(const char *rev) {
    if (!rev || strlen(rev) != 40) return false;
    return strspn(rev, "0123456789abcdef") == 40;
}

bool lc_hub_safe_path(const char *p) {
    if (!p || !*p || p[0] == '/' || strchr(p, '\\')) return false;
    for (const char *s = p; *s;) {
        const char *e = strchr(s, '/');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        if (n == 0 || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.')) return false;
        if (!e) break;
        s = e + 1;
    }
    return true;
}

int lc_hub_read_ref(const char *folder, const char *rev, char **commit) {
    *commit = NULL;
    if (lc_hub_is_commit(rev)) {
        *commit = xstrdup(rev);
        return 0;
    }
    if (!lc_hub_safe_path(rev)) return lc_fail("revision '%s': not a branch, tag or commit name", rev);
    lc_buf ref = {0};
    lc_buf_printf(&ref, "%s/refs/%s", folder, rev);
    char *data = NULL;
    size_t len = 0;
    int rc = -1;
    if (!lc_is_file(ref.data)) {
        lc_fail("%s: no such file: the cache does not know which commit '%s' is", ref.data, rev);
        goto done;
    }
    if (lc_read_file(ref.data, 256, &data, &len) != 0) goto done;
    while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == '\r' || data[len - 1] == ' ')) data[--len] = 0;
    if (len == 0 || !lc_hub_safe_path(data) || strchr(data, '/')) {
        lc_fail("%s: holds '%s', not a commit hash; delete it and download again", ref.data, data);
        goto done;
    }
    *commit = data;
    data = NULL;
    rc = 0;
done:
    free(data);
    lc_buf_free(&ref);
    return rc;
}

int lc_hub_mkdirs_for(const char *path) {
    char *d = xstrdup(path);
    char *slash = strrchr(d, '/');
    int rc = 0;
    if (slash && slash != d) {
        *slash = 0;
        rc = lc_mkdirs(d);
    }
    free(d);
    return rc;
}

int lc_hub_write_ref(const char *folder, const char *rev, const char *commit) {
    if (!strcmp(rev, commit)) return 0;
    if (!lc_hub_safe_path(rev)) return lc_fail("revision '%s': not a branch, tag or commit name", rev);
    lc_buf ref = {0};
    lc_buf_printf(&ref, "%s/refs/%s", folder, rev);
    char *old = NULL;
    size_t len = 0;
    int rc = 0;
    bool same = lc_is_file(ref.data) && lc_read_file(ref.data, 256, &old, &len) == 0 && !strcmp(old, commit);
    lc_err_clear();
    if (!same) rc = lc_hub_mkdirs_for(ref.data) == 0 ? lc_write_file_atomic(ref.data, commit, strlen(commit)) : -1;
    free(old);
    lc_buf_free(&ref);
    return rc;
}

int lc_hub_cached_snapshot(const char *repo, bool dataset, const char *rev, char **dir) {
    *dir = NULL;
    char *folder = lc_hub_repo_folder(repo, dataset);
    char *commit = NULL;
    int rc = -1;
    if (!lc_is_dir(folder)) {
        lc_fail("%s: not in the Hugging Face cache (no %s); download it with network first", repo, folder);
        goto done;
    }
    if (lc_hub_read_ref(folder, rev, &commit) != 0) {
        lc_fail_prefix("%s: revision '%s' is not in the cache; download it with network first", repo, rev);
        goto done;
    }
    lc_buf d = {0};
    lc_buf_printf(&d, "%s/snapshots/%s", folder, commit);
    if (!lc_is_dir(d.data)) {
        lc_fail("%s: %s is missing: commit %s of revision '%s' is not in the cache; download it with network first",
                repo, d.data, commit, rev);
        lc_buf_free(&d);
        goto done;
    }
    *dir = d.data;
    rc = 0;
done:
    free(commit);
    free(folder);
    return rc;
}

char *lc_hub_blob_target(const char *path, const char *etag) {
    lc_buf b = {0};
    lc_buf_puts(&b, "../../");
    for (const char *p = path; *p; p++)
        if (*p == '/') lc_buf_puts(&b, "../");
    lc_buf_printf(&b, "blobs/%s", etag);
    return b.data;
}

int lc_hub_link(const char *pointer, const char *target) {
    if (lc_hub_mkdirs_for(pointer) != 0) return -1;
    lc_buf tmp = {0};
    lc_buf_printf(&tmp, "%s.lorac-link-%ld", pointer, (long)getpid());
    unlink(tmp.data);
    int rc = 0;
    if (symlink(target, tmp.data) != 0) rc = lc_fail("%s: cannot create a symlink to %s: %s", pointer, target, strerror(errno));
    else if (rename(tmp.data, pointer) != 0) {
        rc = lc_fail("%s: cannot put the symlink in place: %s", pointer, strerror(errno));
        unlink(tmp.data);
    }
    lc_buf_free(&tmp);
    return rc;
}

int64_t lc_hub_free_bytes(const char *dir) {
    const char *o = getenv("LORAC_HUB_FREE_BYTES");
    if (o && *o) {
        char *end;
        long long v = strtoll(o, &end, 10);
        if (*end == 0 && v >= 0) return (int64_t)v;
    }
    struct statvfs s;
    if (statvfs(dir, &s) != 0) return -1;
    return (int64_t)s.f_bavail * (int64_t)s.f_frsize;
}
