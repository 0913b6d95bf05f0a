/*
 * bench_decode.c — `build/bench_decode`: batch-1 greedy decoding tokens/s on a model folder
 * under several environment settings in one process (the model is loaded once), for
 * comparing the fused decoding step's switches (src/backend/cuda/decode.cu) on one card.
 *
 * Usage: bench_decode --model DIR [--device cuda] [--num-layers 16] [--rank 16]
 *        [--tokens 64] [--reps 2] [--prompt 16] [--quantize nf4|q4|q8] [--fuse] VARIANT...
 * A VARIANT is "-" (the environment as given) or NAME=VALUE[,NAME=VALUE...]: those
 * variables are set for the variant's runs and unset after. Each run: a fresh cache, a
 * random prompt of --prompt tokens (16), 8 untimed tokens, then --tokens timed ones (greedy through
 * lc_model_greedy, as `lorac generate` decodes at temperature 0: the argmax on the card,
 * each step queued before the host reads the last one's token; LORAC_GREEDY_AHEAD=0 as a
 * variant reads every step's logits back and takes the argmax on the host). Adapters (rank --rank on the last
 * --num-layers blocks, B set non-zero) are added as the recipe does; --fuse then merges them
 * into the weights (lc_model_merge_lora, `lorac generate --fuse`). Prints one JSON line a
 * run. A benchmark program: prints errors and exits.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/log.h"
#include "core/mem.h"
#include "model/model.h"

static void die(void) {
    fprintf(stderr, "error: %s\n", lc_errmsg());
    exit(1);
}

/* Sets (on) or unsets the variables of spec "A=1,B=2". */
static void apply(const char *spec, int on) {
    if (!strcmp(spec, "-")) return;
    char *s = xstrdup(spec), *save = NULL;
    for (char *t = strtok_r(s, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(t, '=');
        if (!eq) continue;
        *eq = 0;
        if (on) setenv(t, eq + 1, 1);
        else unsetenv(t);
    }
    free(s);
}

/* lc_model_greedy's callback: keeps the last token handed over (the next one to feed). */
static int keep_last(void *ctx, int32_t id) {
    *(int32_t *)ctx = id;
    return 0;
}

static int32_t argmax(const float *v, int64_t n) {
    int32_t b = 0;
    for (int64_t i = 1; i < n; i++)
        if (v[i] > v[b]) b = (int32_t)i;
    return b;
}

int main(int argc, char **argv) {
    const char *dir = NULL, *device = "cuda", *quant = NULL; // quant: the base quantized at load
    int nl = 16, rank = 16, tokens = 64, reps = 2, fuse = 0, P = 16;
    static struct option opts[] = {{"model", 1, 0, 'm'},  {"device", 1, 0, 'D'}, {"num-layers", 1, 0, 'n'},
                                   {"rank", 1, 0, 'r'},   {"tokens", 1, 0, 't'}, {"reps", 1, 0, 'R'},
                                   {"quantize", 1, 0, 'Q'}, {"fuse", 0, 0, 'F'}, {"prompt", 1, 0, 'P'},
                                   {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm': dir = optarg; break;
        case 'D': device = optarg; break;
        case 'n': nl = atoi(optarg); break;
        case 'r': rank = atoi(optarg); break;
        case 't': tokens = atoi(optarg); break;
        case 'R': reps = atoi(optarg); break;
        case 'Q': quant = optarg; break;
        case 'F': fuse = 1; break;
        case 'P': P = atoi(optarg); break;
        default: fprintf(stderr, "usage: bench_decode --model DIR [options] VARIANT...\n"); return 2;
        }
    }
    if (!dir || tokens <= 0 || reps <= 0 || P <= 0 || optind >= argc) {
        fprintf(stderr, "bench_decode: --model DIR and at least one VARIANT are required\n");
        return 2;
    }
    lc_model *m;
    lc_load_options lo = {.device = device};
    if (quant && lc_quant_parse(quant, &lo.quantize, "--quantize") != 0) die();
    if (lc_model_load_opts(dir, &lo, &m) < 0) die();
    const lc_model_config *cfg = lc_model_cfg(m);
    lc_lora_config lc;
    lc_lora_config_default(&lc);
    lc.rank = rank, lc.scale = 2.0f, lc.dropout = 0.0f, lc.keys = LC_KEYS_ALL, lc.num_layers = nl;
    lc_model_set_bf16_matmul(m, true);
    if (rank > 0 && lc_model_add_lora(m, &lc, 1) < 0) die();
    if (lc_model_sync(m) < 0) die();
    size_t np;
    lc_lora_param *ps = lc_model_lora(m, &np);
    for (size_t i = 0; i < np; i++)
        for (int64_t j = 0; j < ps[i].r * ps[i].out; j++) ps[i].b[j] = 1e-3f * (float)((j % 7) - 3);
    if (fuse && lc_model_merge_lora(m) < 0) die();
    int64_t V = cfg->vocab_size;
    float *logits = xmalloc((size_t)V * sizeof(float));
    uint64_t seed = 7;
    for (int a = optind; a < argc; a++) {
        apply(argv[a], 1);
        for (int rep = 0; rep < reps; rep++) {
            lc_kv_cache *kv;
            if (lc_kv_cache_create(m, P + 8 + tokens, &kv) < 0) die();
            int32_t *prompt = xmalloc((size_t)P * sizeof *prompt), next;
            for (int i = 0; i < P; i++) prompt[i] = (int32_t)((seed = seed * 6364136223846793005ULL + 1) >> 33) % (int32_t)V;
            if (lc_model_step(m, kv, prompt, P, logits) < 0) die();
            next = argmax(logits, V);
            if (lc_model_greedy(m, kv, next, 8, keep_last, &next) < 0) die();
            double t0 = lc_now();
            if (lc_model_greedy(m, kv, next, tokens, keep_last, &next) < 0) die();
            double dt = lc_now() - t0;
            printf("{\"variant\": \"%s\", \"rep\": %d, \"decode_tokens_per_s\": %.2f, \"ms_per_token\": %.4f}\n", argv[a],
                   rep, tokens / dt, 1e3 * dt / tokens);
            fflush(stdout);
            free(prompt);
            lc_kv_cache_free(kv);
        }
        apply(argv[a], 0);
    }
    free(logits);
    lc_model_free(m);
    return 0;
}
