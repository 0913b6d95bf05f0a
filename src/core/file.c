/*
 * file.c — checked file access. See file.h.
 */
#include "core/file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/mem.h"
#include "core/testhook.h"

int lc_read_file(const char *path, size_t max_bytes, char **data, size_t *len) {
    *data = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return lc_fail("%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        fclose(f);
        return lc_fail("%s: cannot stat: %s", path, strerror(errno));
    }
    if (S_ISDIR(st.st_mode)) {
        fclose(f);
        return lc_fail("%s: is a folder, expected a file", path);
    }
    if ((unsigned long long)st.st_size > max_bytes) {
        fclose(f);
        return lc_fail("%s: file is %lld bytes, more than the %zu this reader accepts", path,
                       (long long)st.st_size, max_bytes);
    }
    size_t cap = (size_t)st.st_size;
    char *buf = xmalloc(cap + 1);
    size_t n = fread(buf, 1, cap, f);
    int err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        return lc_fail("%s: read error: %s", path, strerror(errno));
    }
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return 0;
}

int lc_map_file(const char *path, lc_map *m) {
    m->data = NULL;
    m->len = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return lc_fail("%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return lc_fail("%s: cannot stat: %s", path, strerror(errno));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return lc_fail("%s: not a regular file", path);
    }
    if (st.st_size > 0) {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            close(fd);
            return lc_fail("%s: cannot map: %s", path, strerror(errno));
        }
        m->data = p;
        m->len = (size_t)st.st_size;
    }
    close(fd);
    return 0;
}

void lc_unmap(lc_map *m) {
    if (m->data) munmap((void *)m->data, m->len);
    m->data = NULL;
    m->len = 0;
}

int lc_atomic_open(lc_atomic *a, const char *path) {
    memset(a, 0, sizeof *a);
    size_t n = strlen(path);
    char *tmp = xmalloc(n + 16);
    memcpy(tmp, path, n);
    memcpy(tmp + n, ".tmp.XXXXXX", 12);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        int e = errno;
        free(tmp);
        return lc_fail("%s: cannot create a temporary file beside it: %s", path, strerror(e));
    }
    fchmod(fd, 0644);
    a->f = fdopen(fd, "wb");
    if (!a->f) {
        int e = errno;
        close(fd);
        unlink(tmp);
        free(tmp);
        return lc_fail("%s: cannot open for writing: %s", path, strerror(e));
    }
    a->path = xstrdup(path);
    a->tmp = tmp;
    return 0;
}

int lc_atomic_write(lc_atomic *a, const void *p, size_t n) {
    if (n && fwrite(p, 1, n, a->f) != n)
        return lc_fail("%s: write failed: %s (the previous file, if any, is kept)", a->path,
                       strerror(errno));
    lc_test_kill_point("atomic-write"); /* test hook (core/testhook.h): off outside tests */
    return 0;
}

static void atomic_release(lc_atomic *a) {
    free(a->path);
    free(a->tmp);
    a->path = a->tmp = NULL;
    a->f = NULL;
}

/* Flushes the folder holding path, so that a rename into it is on disk (best effort:
 * some file systems refuse to fsync a folder). */
static void sync_parent(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir = slash ? xstrndup(path, slash == path ? 1 : (size_t)(slash - path)) : xstrdup(".");
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(dir);
}

int lc_atomic_commit(lc_atomic *a) {
    int rc = 0;
    if (fflush(a->f) != 0 || fsync(fileno(a->f)) != 0) {
        rc = lc_fail("%s: cannot flush: %s (the previous file, if any, is kept)", a->path,
                     strerror(errno));
    }
    if (fclose(a->f) != 0 && rc == 0)
        rc = lc_fail("%s: cannot close: %s (the previous file, if any, is kept)", a->path,
                     strerror(errno));
    a->f = NULL;
    if (rc == 0) lc_test_kill_point("atomic-rename"); /* test hook: complete, not yet renamed */
    if (rc == 0 && rename(a->tmp, a->path) != 0)
        rc = lc_fail("%s: cannot rename %s into place: %s", a->path, a->tmp, strerror(errno));
    if (rc == 0) {
        sync_parent(a->path); /* the rename itself survives a power loss */
        lc_test_kill_point("atomic-done"); /* test hook: just renamed */
    }
    if (rc != 0) unlink(a->tmp);
    atomic_release(a);
    return rc;
}

void lc_atomic_abort(lc_atomic *a) {
    if (a->f) fclose(a->f);
    if (a->tmp) unlink(a->tmp);
    atomic_release(a);
}

int lc_write_file_atomic(const char *path, const void *p, size_t n) {
    lc_atomic a;
    if (lc_atomic_open(&a, path) != 0) return -1;
    if (lc_atomic_write(&a, p, n) != 0) {
        lc_atomic_abort(&a);
        return -1;
    }
    return lc_atomic_commit(&a);
}

bool lc_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

bool lc_is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int lc_mkdirs(const char *path) {
    char *p = xstrdup(path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = '\0';
        if (mkdir(p, 0755) != 0 && errno != EEXIST) {
            int e = errno;
            lc_fail("%s: cannot create folder %s: %s", path, p, strerror(e));
            free(p);
            return -1;
        }
        *s = '/';
    }
    int rc = 0;
    if (mkdir(p, 0755) != 0 && errno != EEXIST)
        rc = lc_fail("%s: cannot create folder: %s", path, strerror(errno));
    else if (!lc_is_dir(p))
        rc = lc_fail("%s: exists and is not a folder", path);
    free(p);
    return rc;
}

char *lc_path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    while (a > 1 && dir[a - 1] == '/') a--;
    char *p = xmalloc(a + b + 2);
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}
