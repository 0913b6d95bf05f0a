/*
 * bench_train.c — `build/bench_train`: times lorac's LoRA training step and greedy
 * decoding on a model folder (e.g. one made by `lorac init`), for bench/cpu_train.py.
 *
 * A step is forward + backward (lc_model_forward_backward) + an AdamW update of every
 * adapter, on random token ids (targets: the next id, the last position ignored). The
 * first --warmup steps are not timed. Prints one JSON line on stdout: tokens/s, the
 * median step time, the peak resident set (getrusage) and, with --decode N, decoding
 * tokens/s (batch 1, greedy through lc_model_greedy as `lorac generate` decodes, N new tokens
 * after a 16-token prompt). Owns everything it
 * allocates; a benchmark program, so it prints errors and exits. --fp32 turns off bf16
 * products (lc_model_set_bf16_matmul), which are on by default where the CPU has them.
 * --device cuda runs on the card (bench/cuda_train.sh); --num-layers N adapts the last N
 * blocks only (default -1: all). The AdamW update runs through the model's device
 * (lc_model_adam, one call over every adapter, whose weights and gradients are each one
 * contiguous run; --host-optimizer: a loop on the host); its time is reported apart
 * (opt_s) and is part of step_s. --eval N times N evaluation passes (lc_model_loss, after one
 * untimed) over the last step's batch: eval_tokens_per_s, eval_loss. --recompute F,M sets lc_model_set_recompute's counts;
 * --memory-limit GIB picks them as `lorac train --memory-limit` does (the whole run:
 * weights, adapters, gradients, AdamW moments, the backend's scratch estimate and the
 * activations); the JSON line reports the counts and the planned bytes (plan_bytes).
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "core/error.h"
#include "core/log.h"
#include "core/mem.h"
#include "model/model.h"
#include "train/optim.h"

static void die(void) {
    fprintf(stderr, "error: %s\n", lc_errmsg());
    exit(1);
}

static uint64_t rnd(uint64_t *s) { // splitmix64
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* lc_model_greedy's callback: keeps the last token handed over. */
static int keep_last(void *ctx, int32_t id) {
    *(int32_t *)ctx = id;
    return 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* AdamW (PyTorch's formulation) on one array. */
static void adamw(float *w, const float *g, float *m1, float *m2, size_t n, int step, float lr) {
    const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = 0.01f;
    float c1 = 1.0f - powf(b1, (float)step), c2 = 1.0f - powf(b2, (float)step);
    float sc2 = sqrtf(c2);
    for (size_t i = 0; i < n; i++) {
        w[i] *= 1.0f - lr * wd;
        m1[i] = b1 * m1[i] + (1 - b1) * g[i];
        m2[i] = b2 * m2[i] + (1 - b2) * g[i] * g[i];
        w[i] -= lr / c1 * m1[i] / (sqrtf(m2[i]) / sc2 + eps);
    }
}

int main(int argc, char **argv) {
    const char *dir = NULL;
    int B = 4, T = 128, steps = 10, warmup = 2, rank = 16, decode = 0, ckpt = 0, fp32 = 0, nl = -1, evals = 0;
    const char *device = "cpu";
    const char *quant = NULL; // --quantize nf4|q4|q8: the base quantized at load time
    int host_opt = 0; // --host-optimizer: the AdamW loop on the host (the CPU bench's way)
    int rc_full = 0, rc_mlp = 0;
    double limit_gib = 0;
    static const struct option opts[] = {{"model", 1, 0, 'm'},  {"batch", 1, 0, 'b'},
                                         {"seq", 1, 0, 't'},    {"steps", 1, 0, 's'},
                                         {"warmup", 1, 0, 'w'}, {"rank", 1, 0, 'r'},
                                         {"decode", 1, 0, 'd'}, {"checkpoint", 0, 0, 'c'},
                                         {"fp32", 0, 0, 'f'},   {"device", 1, 0, 'D'},
                                         {"num-layers", 1, 0, 'L'}, {"host-optimizer", 0, 0, 'H'},
                                         {"quantize", 1, 0, 'Q'}, {"recompute", 1, 0, 'R'},
                                         {"memory-limit", 1, 0, 'M'}, {"eval", 1, 0, 'E'},
                                         {0, 0, 0, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'm': dir = optarg; break;
        case 'b': B = atoi(optarg); break;
        case 't': T = atoi(optarg); break;
        case 's': steps = atoi(optarg); break;
        case 'w': warmup = atoi(optarg); break;
        case 'r': rank = atoi(optarg); break;
        case 'd': decode = atoi(optarg); break;
        case 'c': ckpt = 1; break;
        case 'f': fp32 = 1; break;
        case 'D': device = optarg; break;
        case 'L': nl = atoi(optarg); break;
        case 'H': host_opt = 1; break;
        case 'Q': quant = optarg; break;
        case 'R':
            if (sscanf(optarg, "%d,%d", &rc_full, &rc_mlp) != 2) {
                fprintf(stderr, "bench_train: --recompute takes F,M (two counts; -1: all)\n");
                return 2;
            }
            break;
        case 'M': limit_gib = atof(optarg); break;
        case 'E': evals = atoi(optarg); break;
        default:
            fprintf(stderr, "usage: bench_train --model DIR [--batch 4] [--seq 128] [--steps 10] "
                            "[--warmup 2] [--rank 16] [--decode N] [--checkpoint] [--fp32] "
                            "[--device cpu|cuda] [--num-layers N] [--quantize nf4|q4|q8] "
                            "[--recompute F,M] [--memory-limit GIB] [--eval N]\n");
            return 2;
        }
    }
    if (!dir || B <= 0 || T <= 1 || steps <= 0 || warmup < 0 || rank <= 0) {
        fprintf(stderr, "bench_train: --model DIR is required; sizes must be positive\n");
        return 2;
    }
    lc_model *m;
    lc_load_options lo = {.device = device};
    if (quant && lc_quant_parse(quant, &lo.quantize, "--quantize") != 0) die();
    if (lc_model_load_opts(dir, &lo, &m) < 0) die();
    const lc_model_config *c = lc_model_cfg(m);
    lc_lora_config lc;
    lc_lora_config_default(&lc);
    lc.rank = rank, lc.scale = 2.0f, lc.dropout = 0.0f, lc.keys = LC_KEYS_ALL, lc.num_layers = nl;
    if (lc_model_add_lora(m, &lc, 1) < 0) die();
    lc_model_set_grad_checkpoint(m, ckpt != 0);
    size_t nlora = 0;
    {
        size_t n;
        lc_lora_param *p = lc_model_lora(m, &n);
        for (size_t i = 0; i < n; i++) nlora += (size_t)((p[i].in + p[i].out) * p[i].r);
    }
    // everything but the activations: weights, adapters + gradients + 2 moments, scratch
    size_t fixed = lc_model_weight_bytes(m) + 16 * nlora + lc_model_scratch_bytes(m, B, T);
    if (limit_gib > 0) {
        size_t limit = (size_t)(limit_gib * 1073741824.0);
        if (limit <= fixed || lc_model_fit_recompute(m, B, T, limit - fixed, &rc_full, &rc_mlp) != 0) {
            fprintf(stderr, "bench_train: batch %d x %d does not fit %.2f GiB\n", B, T, limit_gib);
            return 1;
        }
    }
    if (ckpt) rc_full = -1, rc_mlp = 0;
    lc_model_set_recompute(m, rc_full, rc_mlp);
    size_t plan = fixed + lc_model_activation_bytes(m, B, T, rc_full, rc_mlp);
    bool bf16 = lc_model_set_bf16_matmul(m, !fp32);
    size_t np;
    lc_lora_param *ps = lc_model_lora(m, &np);
    size_t nparam = 0;
    for (size_t i = 0; i < np; i++) nparam += (size_t)((ps[i].in + ps[i].out) * ps[i].r);
    float *mom = lc_model_shared_alloc(m, 2 * nparam);
    // the adapters and their gradients are each one contiguous run (lora.c): one update
    bool one = np > 0;
    for (size_t i = 0, off = 0; i < np && one; i++) {
        size_t na = (size_t)(ps[i].in * ps[i].r), nb = (size_t)(ps[i].r * ps[i].out);
        one = ps[i].a == ps[0].a + off && ps[i].b == ps[i].a + na && ps[i].ga == ps[0].ga + off &&
              ps[i].gb == ps[i].ga + na;
        off += na + nb;
    }
    lc_adam_config acfg = lc_adam_defaults(LC_OPTIM_ADAMW);

    size_t N = (size_t)B * (size_t)T;
    int32_t *tok = xmalloc(N * sizeof *tok), *tgt = xmalloc(N * sizeof *tgt);
    uint64_t seed = 42;
    double *dt = xmalloc((size_t)steps * sizeof *dt), loss = 0, t_all = 0, t_opt = 0;
    int64_t ntok;
    for (int s = 0; s < warmup + steps; s++) {
        for (size_t i = 0; i < N; i++) tok[i] = (int32_t)(rnd(&seed) % (uint64_t)c->vocab_size);
        for (size_t i = 0; i < N; i++) tgt[i] = (i + 1) % (size_t)T ? tok[i + 1] : -1;
        lc_batch bt = {B, T, tok, tgt, (uint64_t)s};
        double t0 = lc_now();
        if (lc_model_forward_backward(m, &bt, &loss, &ntok) < 0) die();
        double t_fb = lc_now();
        float *mm = mom;
        lc_adam_args aa = lc_adam_args_make(&acfg, 1e-4, s + 1);
        if (!host_opt && one) // every adapter in one update: m is mom[0, nparam), v the rest
            lc_model_adam(m, &aa, ps[0].a, ps[0].ga, mom, mom + nparam, nparam);
        for (size_t i = 0; i < np && (host_opt || !one); i++) {
            size_t na = (size_t)(ps[i].in * ps[i].r), nb = (size_t)(ps[i].r * ps[i].out);
            if (host_opt) {
                adamw(ps[i].a, ps[i].ga, mm, mm + na, na, s + 1, 1e-4f);
                adamw(ps[i].b, ps[i].gb, mm + 2 * na, mm + 2 * na + nb, nb, s + 1, 1e-4f);
            } else { // on the model's device (the card for --device cuda)
                lc_model_adam(m, &aa, ps[i].a, ps[i].ga, mm, mm + na, na);
                lc_model_adam(m, &aa, ps[i].b, ps[i].gb, mm + 2 * na, mm + 2 * na + nb, nb);
            }
            mm += 2 * na + 2 * nb;
        }
        if (lc_model_sync(m) < 0) die();
        double t1 = lc_now() - t0;
        if (s >= warmup) dt[s - warmup] = t1, t_all += t1, t_opt += lc_now() - t_fb;
    }
    qsort(dt, (size_t)steps, sizeof *dt, cmp_double);
    double med = dt[steps / 2];

    double eval_tps = 0, eval_loss = 0;
    if (evals > 0) { // the last step's batch (its ids are still in tok, tgt)
        lc_batch bt = {B, T, tok, tgt, 0};
        double sum;
        if (lc_model_loss(m, &bt, &sum, &ntok) < 0) die();
        double t0 = lc_now();
        for (int i = 0; i < evals; i++)
            if (lc_model_loss(m, &bt, &sum, &ntok) < 0) die();
        eval_tps = (double)N * evals / (lc_now() - t0), eval_loss = sum / (double)ntok;
    }
    double dec_tps = 0;
    if (decode > 0) {
        int64_t V = c->vocab_size, P = 16;
        lc_kv_cache *kv;
        if (lc_kv_cache_create(m, P + decode, &kv) < 0) die();
        float *logits = xmalloc((size_t)V * sizeof(float));
        int32_t prompt[16], next;
        for (int i = 0; i < P; i++) prompt[i] = (int32_t)(rnd(&seed) % (uint64_t)V);
        if (lc_model_step(m, kv, prompt, P, logits) < 0) die();
        double t0 = lc_now();
        next = 0;
        for (int64_t v = 1; v < V; v++)
            if (logits[v] > logits[next]) next = (int32_t)v;
        if (lc_model_greedy(m, kv, next, decode, keep_last, &next) < 0) die();
        dec_tps = decode / (lc_now() - t0);
        free(logits);
        lc_kv_cache_free(kv);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"impl\": \"lorac-%s\", \"B\": %d, \"T\": %d, \"steps\": %d, \"lora_params\": %zu, "
           "\"step_s\": %.5f, \"mean_step_s\": %.5f, \"tokens_per_s\": %.2f, "
           "\"peak_rss_bytes\": %lld, \"loss\": %.17g, \"decode_tokens_per_s\": %.3f, "
           "\"opt_s\": %.5f, \"device\": \"%s\", \"recompute\": [%d, %d], \"plan_bytes\": %zu, "
           "\"eval_tokens_per_s\": %.2f, \"eval_loss\": %.17g}\n",
           bf16 ? "bf16" : "fp32", B, T, steps, nparam, med, t_all / steps, (double)N / med, (long long)ru.ru_maxrss * 1024,
           loss, dec_tps, t_opt / steps, lc_model_device(m), rc_full, rc_mlp, plan, eval_tps, eval_loss);
    free(dt), free(tok), free(tgt);
    lc_model_shared_free(m, mom);
    lc_model_free(m);
    return 0;
}
