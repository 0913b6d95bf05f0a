/*
 * init.c — `lorac init`: a model folder with random weights for any supported config
 * (for tests and benchmarks): config.json (normalized), generation_config.json, the
 * tokenizer copied, and safetensors weights.
 *
 * Weights are normal(0, initializer_range) as transformers initializes them (norm
 * weights 1, biases 0), drawn from a seeded generator that is the same on every machine:
 * each tensor has its own xoshiro256** stream keyed by (seed, tensor name), and the
 * normal deviates come from the polar method with a logarithm computed here from IEEE
 * operations only (no libm transcendental whose last bit may differ between systems).
 * Tensors are filled in parallel, a window of about 128 MiB a thread at a time (or the
 * largest tensor), and written in order; the bytes do not depend on the thread count.
 */
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF // the same bits everywhere: no fused multiply-add
#endif

#include <getopt.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "core/rng.h"
#include "core/error.h"
#include "core/file.h"
#include "core/log.h"
#include "core/mem.h"
#include "io/config.h"
#include "io/safetensors.h"

/* ------------------------------------------------------------ generator */

typedef struct {
    uint64_t s[4];
} rng;

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(rng *r) { // xoshiro256**
    uint64_t *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

/* The stream of one tensor: seeded from the run's seed and the tensor's name (FNV-1a). */
static void rng_seed(rng *r, uint64_t seed, const char *name) {
    uint64_t h = 0xCBF29CE484222325ULL;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 0x100000001B3ULL;
    uint64_t x = seed ^ h;
    for (int i = 0; i < 4; i++) r->s[i] = lc_splitmix64(&x);
}

/* Uniform in (-1, 1) with 53 random bits. */
static double rng_sym(rng *r) { return (double)(rng_next(r) >> 11) * (2.0 / 9007199254740992.0) - 1.0; }

/* ln(x) for x > 0 from frexp, + - * / only: ln(m·2^e) = 2·atanh((m-1)/(m+1)) + e·ln 2. */
static double portable_log(double x) {
    int e;
    double m = frexp(x, &e); // m in [0.5, 1), exact
    if (m < 0.70710678118654752) {
        m *= 2;
        e--;
    }
    double t = (m - 1) / (m + 1), t2 = t * t, term = t, sum = 0;
    for (int k = 1; k < 40; k += 2) { // |t| < 0.172: 20 terms reach far below double precision
        sum += term / k;
        term *= t2;
    }
    return 2 * sum + e * 0.69314718055994530942;
}

/* A standard normal deviate (Marsaglia's polar method; the second value is dropped so
 * that a stream is a plain function of its position). */
static double rng_normal(rng *r) {
    for (;;) {
        double u = rng_sym(r), v = rng_sym(r), s = u * u + v * v;
        if (s > 0 && s < 1) return u * sqrt(-2 * portable_log(s) / s);
    }
}

/* -------------------------------------------------------------- options */

static void usage(FILE *f) {
    fprintf(f,
            "usage: lorac init --config FILE --tokenizer FILE --out DIR [options]\n\n"
            "Creates a model folder with random weights for a config.json (Llama, Mistral or\n"
            "Qwen2): config.json, generation_config.json, the tokenizer, safetensors weights.\n\n"
            "  --config FILE      config.json to build (generation_config.json beside it is used)\n"
            "  --tokenizer FILE   tokenizer.json or tokenizer.model to copy (a\n"
            "                     tokenizer_config.json beside it is copied too)\n"
            "  --out DIR          the folder to write (created if needed)\n"
            "  --seed N           random seed (default 0); the same seed gives the same bytes\n"
            "  --dtype T          bf16, f16 or f32 (default: the config's dtype, else bf16)\n"
            "  --shard-size SIZE  largest weight file, e.g. 5GB, 500MB, 2GiB (default 5GB)\n"
            "  -q, --quiet        no progress output\n"
            "  -h, --help         this help\n");
}

/* ------------------------------------------------------------ the files */

static int copy_file(const char *src, const char *dst) {
    char *data;
    size_t len;
    if (lc_read_file(src, (size_t)1 << 30, &data, &len) != 0) return -1;
    int rc = lc_write_file_atomic(dst, data, len);
    free(data);
    return rc;
}

static int write_text(const char *dir, const char *name, char *text) {
    char *p = lc_path_join(dir, name);
    int rc = lc_write_file_atomic(p, text, strlen(text));
    free(p);
    free(text);
    return rc;
}

/* Copies the tokenizer (named by its kind) and a tokenizer_config.json beside it. */
static int copy_tokenizer(const char *tok, const char *out) {
    const char *base = strrchr(tok, '/');
    base = base ? base + 1 : tok;
    const char *name = base;
    if (strcmp(base, "tokenizer.json") && strcmp(base, "tokenizer.model")) {
        // Another name: a JSON file is a tokenizer.json, anything else a SentencePiece model.
        FILE *f = fopen(tok, "rb");
        int c = ' ';
        while (f && (c = fgetc(f)) != EOF && (c == ' ' || c == '\n' || c == '\t' || c == '\r')) {}
        if (f) fclose(f);
        name = c == '{' ? "tokenizer.json" : "tokenizer.model";
    }
    char *dst = lc_path_join(out, name);
    int rc = copy_file(tok, dst);
    free(dst);
    if (rc != 0) return -1;
    char *dir = xstrdup(tok);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
    char *tc = lc_path_join(slash ? dir : ".", "tokenizer_config.json");
    if (lc_is_file(tc)) {
        dst = lc_path_join(out, "tokenizer_config.json");
        rc = copy_file(tc, dst);
        free(dst);
    }
    free(tc);
    free(dir);
    return rc;
}

static bool ends_with(const char *s, const char *tail) {
    size_t n = strlen(s), k = strlen(tail);
    return n >= k && !strcmp(s + n - k, tail);
}

/* Fills n values of tensor s (its own stream, from the start) as dtype dt into out. */
static void fill_tensor(unsigned char *out, const lc_param_spec *s, const lc_model_config *c,
                        lc_dtype dt, uint64_t seed) {
    enum { CHUNK = 1 << 14 };
    float buf[CHUNK];
    size_t numel = (size_t)s->shape[0] * (size_t)(s->ndim > 1 ? s->shape[1] : 1);
    bool norm = ends_with(s->name, "layernorm.weight") || !strcmp(s->name, "model.norm.weight");
    bool bias = ends_with(s->name, ".bias");
    rng r;
    rng_seed(&r, seed, s->name);
    for (size_t at = 0; at < numel; at += CHUNK) {
        size_t k = numel - at < CHUNK ? numel - at : CHUNK;
        for (size_t j = 0; j < k; j++)
            buf[j] = norm ? 1.0f : bias ? 0.0f : (float)(c->initializer_range * rng_normal(&r));
        lc_from_f32(out + at * lc_dtype_size(dt), dt, buf, k);
    }
}

/* Declares, fills and commits the weights. Tensors are filled in parallel (OpenMP), a
 * window of consecutive tensors at a time (about 128 MiB a thread, at least one tensor),
 * and written in order: each tensor has its own stream, so the bytes do not depend on
 * the thread count. Returns 0 or -1. */
static int write_weights(const lc_model_config *c, lc_dtype dt, const char *out, uint64_t seed,
                         size_t shard, bool quiet, int *n_files, size_t *total) {
    lc_param_spec *s;
    size_t n = lc_config_tensors(c, &s);
    lc_st_writer *w = lc_st_writer_new();
    lc_st_writer_meta(w, "format", "pt");
    *total = 0;
    int rc = 0;
    size_t es = lc_dtype_size(dt), biggest = 0;
    size_t *off = xmalloc((n + 1) * sizeof *off);
    for (size_t i = 0; i < n && rc == 0; i++) {
        rc = lc_st_writer_add(w, s[i].name, dt, s[i].ndim, s[i].shape);
        size_t nb = (size_t)s[i].shape[0] * (size_t)(s[i].ndim > 1 ? s[i].shape[1] : 1) * es;
        *total += nb;
        if (nb > biggest) biggest = nb;
    }
    if (rc == 0) rc = lc_st_writer_begin_dir(w, out, shard);
    int threads = omp_get_max_threads();
    size_t budget = (size_t)(threads > 0 ? threads : 1) * ((size_t)128 << 20);
    if (budget < biggest) budget = biggest;
    unsigned char *win = xmalloc(budget);
    lc_progress bar;
    size_t done = 0;
    if (!quiet) lc_progress_start(&bar, "init", (int64_t)*total);
    for (size_t i0 = 0; i0 < n && rc == 0;) {
        /* the window: tensors i0..i1 that fit the budget together */
        size_t i1 = i0, used = 0;
        while (i1 < n) {
            size_t nb = (size_t)s[i1].shape[0] * (size_t)(s[i1].ndim > 1 ? s[i1].shape[1] : 1) * es;
            if (i1 > i0 && used + nb > budget) break;
            off[i1 - i0] = used;
            used += nb;
            i1++;
        }
        long long cnt = (long long)(i1 - i0);
#pragma omp parallel for schedule(dynamic, 1)
        for (long long k = 0; k < cnt; k++) fill_tensor(win + off[k], &s[i0 + (size_t)k], c, dt, seed);
        for (size_t i = i0; i < i1 && rc == 0; i++) {
            size_t nb = (size_t)s[i].shape[0] * (size_t)(s[i].ndim > 1 ? s[i].shape[1] : 1) * es;
            rc = lc_st_writer_write(w, s[i].name, win + off[i - i0], nb);
            done += nb;
            if (!quiet) lc_progress_update(&bar, (int64_t)done);
        }
        i0 = i1;
    }
    if (rc == 0) rc = lc_st_writer_commit(w);
    if (!quiet) lc_progress_finish(&bar);
    *n_files = lc_st_writer_n_files(w);
    lc_st_writer_free(w);
    free(win);
    free(off);
    free(s);
    return rc;
}

int cmd_init(int argc, char **argv) {
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"tokenizer", required_argument, NULL, 't'},
        {"out", required_argument, NULL, 'o'},    {"seed", required_argument, NULL, 's'},
        {"dtype", required_argument, NULL, 'd'},  {"shard-size", required_argument, NULL, 'S'},
        {"quiet", no_argument, NULL, 'q'},        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char *config = NULL, *tok = NULL, *out = NULL, *dtype = NULL;
    uint64_t seed = 0;
    size_t shard = 5000000000ULL;
    bool quiet = false;
    opterr = 0;
    optind = 1;
    int o;
    while ((o = getopt_long(argc, argv, ":hq", opts, NULL)) != -1) {
        switch (o) {
        case 'c': config = optarg; break;
        case 't': tok = optarg; break;
        case 'o': out = optarg; break;
        case 'd': dtype = optarg; break;
        case 'q': quiet = true; break;
        case 's': {
            char *end;
            if (!optarg[0] || optarg[0] == '-' || (seed = strtoull(optarg, &end, 10), *end))
                return lc_cmd_usage_error("init", "--seed must be a non-negative integer, not '%s'",
                                          optarg);
            break;
        }
        case 'S':
            if (lc_cmd_parse_size(optarg, &shard) != 0)
                return lc_cmd_usage_error("init", "--shard-size must be a size like 5GB, 500MB or "
                                                  "2GiB, not '%s'",
                                          optarg);
            break;
        case 'h': usage(stdout); return 0;
        case ':': return lc_cmd_usage_error("init", "option '%s' needs a value", argv[optind - 1]);
        default: return lc_cmd_usage_error("init", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return lc_cmd_usage_error("init", "unexpected argument '%s'", argv[optind]);
    if (!config) return lc_cmd_usage_error("init", "--config is required");
    if (!tok) return lc_cmd_usage_error("init", "--tokenizer is required");
    if (!out) return lc_cmd_usage_error("init", "--out is required");
    lc_dtype dt = LC_DT_BF16;
    if (dtype && lc_cmd_parse_dtype(dtype, "init", &dt) != 0) return 2;
    if (!lc_is_file(tok))
        return lc_cmd_usage_error("init", "--tokenizer '%s' is not a readable file", tok);
    lc_model_config c;
    if (lc_config_load(&c, config) != 0) return lc_cmd_fail();
    if (!dtype && c.has_dtype) dt = c.dtype;
    c.has_dtype = true;
    c.dtype = dt;
    if (lc_mkdirs(out) != 0) return lc_cmd_fail();
    if (write_text(out, "config.json", lc_config_to_json(&c)) != 0 ||
        write_text(out, "generation_config.json", lc_generation_config_to_json(&c)) != 0 ||
        copy_tokenizer(tok, out) != 0)
        return lc_cmd_fail();
    int n_files = 0;
    size_t total = 0;
    if (write_weights(&c, dt, out, seed, shard, quiet, &n_files, &total) != 0) {
        lc_cmd_fail();
        return 1;
    }
    printf("wrote %s: %s, %lld parameters, %s, %.3f GB in %d weight file%s\n", out,
           lc_arch_name(c.arch), (long long)lc_config_param_count(&c), lc_dtype_name(dt),
           (double)total / 1e9, n_files, n_files == 1 ? "" : "s");
    return 0;
}
