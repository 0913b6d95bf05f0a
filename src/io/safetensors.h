/*
 * safetensors.h — reading and writing the safetensors format of Hugging Face.
 *
 * A file is: 8 bytes little-endian N, N bytes of JSON header, then the tensor bytes.
 * The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}
 * (offsets relative to the data section) and may hold "__metadata__" (string → string).
 *
 * Reading maps files read-only (src/core/file.h) and validates every header field
 * before anything points into the data: sizes, offsets, overlaps, overflow. A model
 * folder is either one model.safetensors or shards listed by model.safetensors.index.json
 * (each shard mapped once; lookups by name span the shards).
 *
 * Writing streams: tensors are declared first (name, dtype, shape), the header is laid
 * out as the reference Python library lays it out (tensors ordered by dtype alignment,
 * largest first, then by name; compact JSON; spaces to a multiple of 8), and the bytes
 * of each tensor are then written in pieces, so no model ever sits whole in memory.
 * Files are written atomically (temporary name, fsync, rename).
 *
 * This module owns the maps and the header copies; it never prints or exits.
 */
#ifndef LC_IO_SAFETENSORS_H
#define LC_IO_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/file.h"

/* Element types, in the reference library's order of increasing alignment (the
 * writer sorts by it). */
typedef enum {
    LC_DT_BOOL,
    LC_DT_U8,
    LC_DT_I8,
    LC_DT_F8_E5M2,
    LC_DT_F8_E4M3,
    LC_DT_I16,
    LC_DT_U16,
    LC_DT_F16,
    LC_DT_BF16,
    LC_DT_I32,
    LC_DT_U32,
    LC_DT_F32,
    LC_DT_F64,
    LC_DT_I64,
    LC_DT_U64,
    LC_DT_COUNT
} lc_dtype;

/* The header's name of a dtype ("BF16"). */
const char *lc_dtype_name(lc_dtype dt);
/* Bytes per element. */
size_t lc_dtype_size(lc_dtype dt);
/* Sets *dt from a header name; returns 0, or -1 (no error recorded) when unknown. */
int lc_dtype_from_name(const char *name, lc_dtype *dt);

#define LC_ST_MAX_DIMS 8

typedef struct {
    const char *name; // owned by the set
    lc_dtype dtype;
    int ndim;
    int64_t shape[LC_ST_MAX_DIMS];
    size_t numel;
    size_t nbytes;
    const void *data; // into the file's map; may be unaligned in files of other writers
    size_t offset;    // of the data from the start of its file
    int file;         // index into lc_safetensors.files
} lc_tensor;

typedef struct {
    char *path;     // as opened
    lc_map map;     // whole file (empty when parsed from memory)
    size_t n_bytes; // total length
} lc_st_file;

typedef struct {
    lc_st_file *files;
    int n_files;
    lc_tensor *tensors; // file by file, in offset order within a file
    size_t n_tensors;
    size_t *by_name; // indices into tensors, sorted by name
    char **meta; // __metadata__ of the first file: key, value, key, value, ...
    size_t n_meta;
} lc_safetensors;

/* Opens a .safetensors file, a model.safetensors.index.json, or a folder holding one
 * of them (the index wins). Everything is validated. Returns 0 or -1; close with
 * lc_st_close either way. */
int lc_st_open(lc_safetensors *st, const char *path);
/* Parses a whole safetensors file held in memory (len bytes at buf, which must outlive
 * st); `what` names it in errors. Returns 0 or -1. */
int lc_st_parse(lc_safetensors *st, const void *buf, size_t len, const char *what);
void lc_st_close(lc_safetensors *st);

/* The tensor called name, or NULL. */
const lc_tensor *lc_st_find(const lc_safetensors *st, const char *name);
/* A __metadata__ value, or NULL. */
const char *lc_st_meta(const lc_safetensors *st, const char *key);
/* "[4096, 14336]" into buf (for messages). */
const char *lc_shape_str(char *buf, size_t cap, int ndim, const int64_t *shape);

/* ---- element conversion (the model layer computes in fp32) ---- */

float lc_bf16_to_f32(uint16_t h);
float lc_f16_to_f32(uint16_t h);
/* Round to nearest even; any NaN becomes the quiet NaN 0x7FC0. */
uint16_t lc_f32_to_bf16(float f);
/* Round to nearest even; overflow becomes infinity. */
uint16_t lc_f32_to_f16(float f);
/* out[i] = src[i] as fp32 for n elements of a F32, F16 or BF16 tensor (src may be
 * unaligned). Returns 0, or -1 for other dtypes. */
int lc_to_f32(float *out, const void *src, lc_dtype dt, size_t n);
/* dst (of dtype F32, F16 or BF16) = src, rounding to nearest even. Returns 0 or -1. */
int lc_from_f32(void *dst, lc_dtype dt, const float *src, size_t n);

/* ---- writing ---- */

typedef struct lc_st_writer lc_st_writer;

/* A new writer with nothing declared; free with lc_st_writer_free. */
lc_st_writer *lc_st_writer_new(void);
/* Declares a tensor. Returns 0, or -1 for a duplicate name, too many dimensions or a
 * size that overflows. */
int lc_st_writer_add(lc_st_writer *w, const char *name, lc_dtype dt, int ndim, const int64_t *shape);
/* Adds a __metadata__ entry (keys are written sorted). */
void lc_st_writer_meta(lc_st_writer *w, const char *key, const char *value);
/* Starts writing one file at path: lays out and writes the header. Returns 0 or -1. */
int lc_st_writer_begin(lc_st_writer *w, const char *path);
/* Starts writing a model folder: model.safetensors when everything fits in
 * shard_bytes (0: no limit), else model-0000K-of-0000N.safetensors in declaration
 * order plus model.safetensors.index.json. Returns 0 or -1. */
int lc_st_writer_begin_dir(lc_st_writer *w, const char *dir, size_t shard_bytes);
/* Appends n bytes to tensor `name`. Tensors of one file may come in any order; across
 * shards, in declaration order. Returns 0 or -1. */
int lc_st_writer_write(lc_st_writer *w, const char *name, const void *p, size_t n);
/* Checks that every tensor got all its bytes, then renames the files into place
 * (the index last). Returns 0 or -1 (nothing half-written is left under a final name). */
int lc_st_writer_commit(lc_st_writer *w);
/* Number of files begin_dir planned (1 when unsharded). */
int lc_st_writer_n_files(const lc_st_writer *w);
/* Abandons any file not committed and frees w. */
void lc_st_writer_free(lc_st_writer *w);

#endif
