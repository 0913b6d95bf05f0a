/*
 * quant.c — the quantized weight formats: dequantization (rows, elements) and the two
 * quantizers. See quant.h for the definitions followed. Owns nothing.
 */
#include "backend/quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

const float LC_NF4_CODE[16] = {
    -1.0f,
    -0.6961928009986877f,
    -0.5250730514526367f,
    -0.39491748809814453f,
    -0.28444138169288635f,
    -0.18477343022823334f,
    -0.09105003625154495f,
    0.0f,
    0.07958029955625534f,
    0.16093020141124725f,
    0.24611230194568634f,
    0.33791524171829224f,
    0.44070982933044434f,
    0.5626170039176941f,
    0.7229568362236023f,
    1.0f,
};

/* ------------------------------------------------------------ element access */

static inline float ld_f32(const void *p, size_t i) {
    float f;
    memcpy(&f, (const unsigned char *)p + 4 * i, 4);
    return f;
}

static inline uint32_t ld_u32(const void *p, size_t i) {
    uint32_t u;
    memcpy(&u, (const unsigned char *)p + 4 * i, 4);
    return u;
}

/* Element i of a F32/F16/BF16 array as float32. */
static inline float ld_dt(const void *p, lc_dtype dt, size_t i) {
    if (dt == LC_DT_F32) return ld_f32(p, i);
    uint16_t h;
    memcpy(&h, (const unsigned char *)p + 2 * i, 2);
    return dt == LC_DT_BF16 ? lc_bf16_to_f32(h) : lc_f16_to_f32(h);
}

/* The dequantized absmax of NF4 block b. */
static inline float nf4_absmax(const lc_wquant *q, size_t b) {
    if (!q->nested) return ld_f32(q->absmax, b);
    uint8_t j = ((const uint8_t *)q->absmax)[b];
    return q->code2[j] * ld_f32(q->absmax2, b / (size_t)q->block2) + q->offset;
}

float lc_wt_get(const lc_wt *w, size_t idx) {
    const lc_wquant *q = w->q;
    if (!q) return ld_dt(w->data, w->dtype, idx);
    if (q->fmt == LC_QUANT_NF4) {
        uint8_t byte = ((const uint8_t *)w->data)[idx / 2];
        unsigned code = idx % 2 ? byte & 0xF : byte >> 4;
        return q->code[code] * nf4_absmax(q, idx / (size_t)q->group);
    }
    size_t r = idx / (size_t)w->cols, c = idx % (size_t)w->cols;
    size_t per = 32 / (size_t)q->bits, words = (size_t)w->cols / per;
    uint32_t word = ld_u32(w->data, r * words + c / per);
    uint32_t code = (word >> (c % per * (size_t)q->bits)) & ((1u << q->bits) - 1);
    size_t g = r * ((size_t)w->cols / (size_t)q->group) + c / (size_t)q->group;
    return ld_dt(q->scales, q->sdtype, g) * (float)code + ld_dt(q->biases, q->sdtype, g);
}

void lc_wq_dequant_row(float *dst, const lc_wt *w, int64_t r, int64_t c0, int64_t c1) {
    const lc_wquant *q = w->q;
    if (q->fmt == LC_QUANT_NF4) {
        const uint8_t *p = w->data;
        size_t i = (size_t)r * (size_t)w->cols + (size_t)c0, end = i + (size_t)(c1 - c0);
        size_t G = (size_t)q->group;
        while (i < end) {
            size_t b = i / G, stop = (b + 1) * G < end ? (b + 1) * G : end;
            float am = nf4_absmax(q, b);
            float lut[16];
            for (int k = 0; k < 16; k++) lut[k] = q->code[k] * am;
            if (i % 2) *dst++ = lut[p[i / 2] & 0xF], i++;
            for (; i + 1 < stop; i += 2) {
                uint8_t byte = p[i / 2];
                dst[0] = lut[byte >> 4];
                dst[1] = lut[byte & 0xF];
                dst += 2;
            }
            if (i < stop) *dst++ = lut[p[i / 2] >> 4], i++;
        }
        return;
    }
    int bits = q->bits;
    size_t per = 32 / (size_t)bits, words = (size_t)w->cols / per, G = (size_t)q->group;
    size_t ng = (size_t)w->cols / G;
    uint32_t mask = (1u << bits) - 1;
    const unsigned char *row = (const unsigned char *)w->data + 4 * (size_t)r * words;
    size_t c = (size_t)c0;
    while (c < (size_t)c1) {
        size_t g = c / G, stop = (g + 1) * G < (size_t)c1 ? (g + 1) * G : (size_t)c1;
        float s = ld_dt(q->scales, q->sdtype, (size_t)r * ng + g);
        float b = ld_dt(q->biases, q->sdtype, (size_t)r * ng + g);
        for (; c < stop; c++) {
            uint32_t word = ld_u32(row, c / per);
            *dst++ = s * (float)((word >> (c % per * (size_t)bits)) & mask) + b;
        }
    }
}

int lc_wt_dequantize_rows(float *dst, const lc_wt *w, int64_t r0, int64_t r1) {
    if (r0 < 0 || r1 > w->rows || r0 > r1)
        return lc_fail("dequantize: rows %lld..%lld are outside the weight's %lld rows", (long long)r0,
                       (long long)r1, (long long)w->rows);
    for (int64_t r = r0; r < r1; r++) {
        float *d = dst + (size_t)(r - r0) * (size_t)w->cols;
        if (w->q) {
            lc_wq_dequant_row(d, w, r, 0, w->cols);
        } else if (lc_to_f32(d, (const unsigned char *)w->data + (size_t)r * (size_t)w->cols *
                                                                     lc_dtype_size(w->dtype),
                             w->dtype, (size_t)w->cols) != 0) {
            return lc_fail("dequantize: weight dtype %s is not F32, F16 or BF16",
                           lc_dtype_name(w->dtype));
        }
    }
    return 0;
}

/* ------------------------------------------------------------ sizes */

size_t lc_wq_code_bytes(lc_quant_format fmt, int bits, int64_t rows, int64_t cols) {
    size_t n = (size_t)rows * (size_t)cols;
    if (fmt == LC_QUANT_NF4) return (n + 1) / 2;
    return n * (size_t)bits / 8;
}

size_t lc_wq_total_bytes(lc_quant_format fmt, int bits, int64_t group, lc_dtype sdtype,
                         int64_t rows, int64_t cols) {
    size_t n = (size_t)rows * (size_t)cols, codes = lc_wq_code_bytes(fmt, bits, rows, cols);
    if (fmt == LC_QUANT_AFFINE) return codes + 2 * (n / (size_t)group) * lc_dtype_size(sdtype);
    size_t nb = (n + (size_t)group - 1) / (size_t)group;
    return codes + nb + (nb + 255) / 256 * 4 + (16 + 256) * 4;
}

/* ------------------------------------------------------------ dynamic map */

/* torch.linspace(start, end, steps) in float32 (its CPU kernel's arithmetic). */
static void linspace_f32(float *out, float start, float end, int steps) {
    if (steps == 1) {
        out[0] = start;
        return;
    }
    float step = (end - start) / (float)(steps - 1);
    int half = steps / 2;
    for (int i = 0; i < steps; i++)
        out[i] = i < half ? start + step * (float)i : end - step * (float)(steps - i - 1);
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

void lc_quant_dynamic_map(float code2[256]) {
    /* signed, 7 exponent bits, 8 bits: for i in 0..6, 2^i + 1 boundaries in [0.1, 1],
     * their midpoints times ±10^(i-6); then 0 and 1. */
    int n = 0;
    float b[65];
    static const double pow10[7] = {1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0};
    for (int i = 0; i < 7; i++) {
        int items = (1 << i) + 1;
        linspace_f32(b, 0.1f, 1.0f, items);
        float s = (float)pow10[i];
        for (int k = 0; k + 1 < items; k++) {
            float mean = (b[k] + b[k + 1]) / 2.0f;
            code2[n++] = s * mean;
            code2[n++] = -s * mean;
        }
    }
    code2[n++] = 0.0f;
    code2[n++] = 1.0f;
    qsort(code2, 256, sizeof(float), cmp_float);
}

/* ------------------------------------------------------------ quantizers */

static void st_dt(void *p, lc_dtype dt, size_t i, float v) {
    if (dt == LC_DT_F32) {
        memcpy((unsigned char *)p + 4 * i, &v, 4);
        return;
    }
    uint16_t h = dt == LC_DT_BF16 ? lc_f32_to_bf16(v) : lc_f32_to_f16(v);
    memcpy((unsigned char *)p + 2 * i, &h, 2);
}

int lc_quant_affine(uint32_t *q, void *scales, void *biases, lc_dtype sdtype, const float *w,
                    int64_t rows, int64_t cols, int bits, int64_t group) {
    if (bits != 2 && bits != 4 && bits != 8)
        return lc_fail("quantize: %d bits are not supported (2, 4 or 8)", bits);
    if (group <= 0 || cols % group != 0 || group % (32 / bits) != 0)
        return lc_fail("quantize: %lld columns do not divide into groups of %lld", (long long)cols,
                       (long long)group);
    const float n_bins = (float)((1 << bits) - 1), eps = 1e-7f;
    size_t per = 32 / (size_t)bits, ng = (size_t)(cols / group);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++)
        for (size_t g = 0; g < ng; g++) {
            const float *x = w + (size_t)r * (size_t)cols + g * (size_t)group;
            float w_min = INFINITY, w_max = 0.0f; // the kernels start the maximum at 0
            for (int64_t j = 0; j < group; j++) {
                w_min = x[j] < w_min ? x[j] : w_min;
                w_max = x[j] > w_max ? x[j] : w_max;
            }
            float scale = (w_max - w_min) / n_bins;
            if (!(scale > eps)) scale = eps;
            bool side = fabsf(w_min) > fabsf(w_max);
            scale = side ? scale : -scale;
            float edge = side ? w_min : w_max;
            float q0 = roundf(edge / scale);
            float bias = 0.0f;
            if (q0 != 0.0f) {
                scale = edge / q0;
                bias = edge;
            }
            st_dt(scales, sdtype, (size_t)r * ng + g, scale);
            st_dt(biases, sdtype, (size_t)r * ng + g, bias);
            uint32_t *out = q + ((size_t)r * (size_t)cols + g * (size_t)group) / per;
            for (int64_t j = 0; j < group; j += (int64_t)per) {
                uint32_t word = 0;
                for (size_t k = 0; k < per; k++) {
                    float v = roundf((x[j + (int64_t)k] - bias) / scale);
                    v = v < 0.0f ? 0.0f : v > n_bins ? n_bins : v;
                    word |= (uint32_t)v << (k * (size_t)bits);
                }
                out[(size_t)j / per] = word;
            }
        }
    return 0;
}

/* The index of the nearest of n ascending values, the first on ties (as
 * torch.argmin(|x - code|) picks it): the nearest is one of the two neighbours of x. */
static unsigned nearest(float x, const float *code, int n) {
    int lo = 0, hi = n; // first index with code[i] >= x
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (code[mid] < x) lo = mid + 1;
        else hi = mid;
    }
    if (lo == n) return (unsigned)(n - 1);
    if (lo == 0) return 0;
    return fabsf(x - code[lo - 1]) <= fabsf(x - code[lo]) ? (unsigned)(lo - 1) : (unsigned)lo;
}

void lc_quant_nf4(uint8_t *packed, float *absmax, const float *w, size_t n, int64_t block) {
    size_t G = (size_t)block, nb = (n + G - 1) / G;
#pragma omp parallel for schedule(static)
    for (size_t b = 0; b < nb; b++) {
        size_t i0 = b * G, i1 = i0 + G < n ? i0 + G : n;
        float am = 0.0f;
        for (size_t i = i0; i < i1; i++) am = fabsf(w[i]) > am ? fabsf(w[i]) : am;
        absmax[b] = am;
        float inv = 1.0f / am;
        for (size_t i = i0; i < i1; i++) {
            unsigned code = 7; // 0.0 (a block of zeros)
            if (am > 0.0f) {
                float s = w[i] * inv;
                s = s < -1.0f ? -1.0f : s > 1.0f ? 1.0f : s;
                code = nearest(s, LC_NF4_CODE, 16);
            }
            if (i % 2 == 0) packed[i / 2] = (uint8_t)(code << 4);
            else packed[i / 2] |= (uint8_t)code;
        }
    }
}

void lc_quant_nf4_nest(uint8_t *qabs, float *absmax2, float *offset, const float *absmax,
                       size_t nblocks, int64_t block2, const float code2[256]) {
    double sum = 0;
    for (size_t i = 0; i < nblocks; i++) sum += absmax[i];
    float off = nblocks ? (float)(sum / (double)nblocks) : 0.0f;
    *offset = off;
    size_t G = (size_t)block2;
    for (size_t b = 0; b * G < nblocks; b++) {
        size_t i0 = b * G, i1 = i0 + G < nblocks ? i0 + G : nblocks;
        float am = 0.0f;
        for (size_t i = i0; i < i1; i++) am = fabsf(absmax[i] - off) > am ? fabsf(absmax[i] - off) : am;
        absmax2[b] = am;
        float inv = 1.0f / am;
        for (size_t i = i0; i < i1; i++) {
            float s = am > 0.0f ? (absmax[i] - off) * inv : 0.0f;
            s = s < -1.0f ? -1.0f : s > 1.0f ? 1.0f : s;
            qabs[i] = (uint8_t)nearest(s, code2, 256);
        }
    }
}
