/*
 * quant.h — quantized weight formats (lc_wquant in backend.h): dequantizing rows or
 * elements to float32, and quantizing float32 matrices into the two formats.
 *
 * NF4 follows bitsandbytes (functional.quantize_4bit with quant_type "nf4",
 * compress_statistics=True): blocks of 64 values over the flattened matrix, absmax =
 * max |x| of the block, each value x * (1/absmax) (float32) coded as the index of the
 * nearest of 16 values (LC_NF4_CODE), two codes a byte with the first in the high
 * nibble; double quantization stores absmax - mean(absmax) as uint8 codes of the signed
 * 8-bit dynamic map (create_dynamic_map) in blocks of 256 with their own float32 absmax.
 * Dequantization: code[q] * absmax, absmax = code2[j] * absmax2 + offset, in float32.
 *
 * The affine format follows MLX (mx.quantize, mode "affine", as its GPU kernels and CPU
 * backend compute it, in float32): per group of `group` values of a row, w_min = the
 * group's minimum, w_max = max(0, the group's maximum) (the kernels start the maximum at
 * 0), scale = max((w_max - w_min) / (2^bits - 1), 1e-7), negated unless |w_min| >
 * |w_max|; edge = w_min or w_max accordingly; q0 = round(edge / scale) (half away from
 * zero); when q0 != 0, scale = edge / q0 and bias = edge, else bias = 0; each code is
 * min(round((w - bias) / scale), 2^bits - 1) with the unrounded float32 scale; scale
 * and bias are then stored in the model's dtype. Dequantization: scale * q + bias in
 * float32 (what MLX's quantized matmul kernels accumulate).
 *
 * Everything here is plain C over caller-owned memory; nothing is allocated except
 * where a function says so; never prints or exits.
 */
#ifndef LC_BACKEND_QUANT_H
#define LC_BACKEND_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"

/* bitsandbytes' NF4 table (get_4bit_type("nf4")), index = code. */
extern const float LC_NF4_CODE[16];

/* bitsandbytes' signed dynamic 8-bit map (create_dynamic_map(signed=True), 256 sorted
 * values in [-1, 1]) computed in float32 the way torch does; used for double quantization
 * of the NF4 block maxima. Deterministic. */
void lc_quant_dynamic_map(float code2[256]);

/* Bytes of the packed codes of a (rows, cols) matrix in a format (affine: uint32 words;
 * nf4: bytes). */
size_t lc_wq_code_bytes(lc_quant_format fmt, int bits, int64_t rows, int64_t cols);
/* Bytes a quantized (rows, cols) matrix takes in all (codes + scales/biases in sdtype for
 * affine; codes + uint8 absmax + nested absmax + maps for nested nf4). */
size_t lc_wq_total_bytes(lc_quant_format fmt, int bits, int64_t group, lc_dtype sdtype,
                         int64_t rows, int64_t cols);

/* Element idx (row-major) of a weight of any kind (plain or quantized) as float32. */
float lc_wt_get(const lc_wt *w, size_t idx);
/* dst (c1-c0) = row r, columns c0..c1 of a quantized weight, as float32. */
void lc_wq_dequant_row(float *dst, const lc_wt *w, int64_t r, int64_t c0, int64_t c1);
/* dst (r1-r0, cols) = rows r0..r1 of any weight (plain or quantized) as float32 — for
 * fusing adapters onto a quantized base one panel at a time. Returns 0, or -1 (error
 * recorded) for rows out of range. */
int lc_wt_dequantize_rows(float *dst, const lc_wt *w, int64_t r0, int64_t r1);

/* MLX affine quantization of w (rows, cols), float32 values (exactly the stored model
 * values): q (rows, cols*bits/32) uint32 words; scales, biases (rows, cols/group) written
 * in sdtype (F32, F16 or BF16). Needs cols % group == 0 and bits in {2, 4, 8}. Returns 0
 * or -1. */
int lc_quant_affine(uint32_t *q, void *scales, void *biases, lc_dtype sdtype, const float *w,
                    int64_t rows, int64_t cols, int bits, int64_t group);

/* First level of NF4 for n values (a whole number of blocks, or the tensor's tail):
 * packed (ceil(n/2)) bytes; absmax (ceil(n/block)) float32. n must be even unless it is
 * the tensor's end. */
void lc_quant_nf4(uint8_t *packed, float *absmax, const float *w, size_t n, int64_t block);
/* Double quantization of nblocks float32 block maxima: *offset = their mean; qabs
 * (nblocks) uint8 codes of (absmax - offset) against code2 (lc_quant_dynamic_map) in
 * blocks of block2; absmax2 (ceil(nblocks/block2)) their float32 maxima. */
void lc_quant_nf4_nest(uint8_t *qabs, float *absmax2, float *offset, const float *absmax,
                       size_t nblocks, int64_t block2, const float code2[256]);

#endif
