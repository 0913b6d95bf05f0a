/*
 * file.h — checked file access: whole-file reads, read-only maps, atomic writes.
 *
 * Every failure records a message naming the path and the system's reason (see
 * error.h). Atomic writes go to a temporary name in the destination's folder, are
 * flushed with fsync, then renamed over the destination: a crash or a full disk never
 * leaves a half-written file where a good one was.
 */
#ifndef LC_FILE_H
#define LC_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* Reads all of path into a new NUL-terminated buffer (*data, owned by the caller);
 * fails when the file is larger than max_bytes. Returns 0 or -1. */
int lc_read_file(const char *path, size_t max_bytes, char **data, size_t *len);

typedef struct {
    const unsigned char *data; // the mapped bytes (NULL for an empty file)
    size_t len;
} lc_map;

/* Maps path read-only into *m. Returns 0 or -1. */
int lc_map_file(const char *path, lc_map *m);
void lc_unmap(lc_map *m);

typedef struct {
    FILE *f;
    char *path; // final destination
    char *tmp;  // temporary name beside it
} lc_atomic;

/* Opens a temporary file beside path for writing. Returns 0 or -1. */
int lc_atomic_open(lc_atomic *a, const char *path);
/* Writes n bytes; returns 0, or -1 naming the destination (e.g. disk full). */
int lc_atomic_write(lc_atomic *a, const void *p, size_t n);
/* Flushes, fsyncs and renames over the destination. On failure removes the
 * temporary and leaves any old file untouched. Returns 0 or -1. */
int lc_atomic_commit(lc_atomic *a);
/* Abandons the write: closes and removes the temporary. */
void lc_atomic_abort(lc_atomic *a);

/* Writes n bytes to path atomically (open, write, commit). Returns 0 or -1. */
int lc_write_file_atomic(const char *path, const void *p, size_t n);

bool lc_is_dir(const char *path);
bool lc_is_file(const char *path);
/* Creates a folder and its parents (mkdir -p). Returns 0 or -1. */
int lc_mkdirs(const char *path);
/* "dir/name" in a new string owned by the caller. */
char *lc_path_join(const char *dir, const char *name);

#endif
