/*
 * fuse.c — `lorac fuse`: merge LoRA adapters (mlx-lm or PEFT layout) into the base
 * weights and write a Hugging Face model folder. Thin: parses the options, loads the
 * adapters, prints the plan, and hands over to src/model/fuse.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "core/error.h"
#include "core/log.h"
#include "hub/hub.h"
#include "io/adapters.h"
#include "model/fuse.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: lorac fuse --model DIR [--adapter-path DIR] [--save-path DIR] [options]\n\n"
            "Merges LoRA adapters into the base weights (W' = W + scale * (A B)^T, in fp32, cast\n"
            "once) and writes a Hugging Face model folder that transformers loads as it loads\n"
            "the base: config.json, generation_config.json, the tokenizer files, safetensors\n"
            "weights (sharded, with model.safetensors.index.json, when larger than a shard).\n"
            "A quantized base (lorac quantize, MLX q4/q8, bitsandbytes NF4) is dequantized and\n"
            "the result written as a plain model (bf16, no quantization keys in config.json).\n\n"
            "  --model DIR            the base model folder or Hub repo id\n"
            "  --adapter-path PATH    adapter folder (mlx-lm or PEFT layout) or an mlx-lm\n"
            "                         .safetensors file (default adapters)\n"
            "  --save-path DIR        the folder to write (default fused_model); it must not\n"
            "                         exist or be empty, unless --force\n"
            "  --dtype T              bf16, f16 or f32 (default: each tensor's stored dtype;\n"
            "                         bf16 for a quantized base)\n"
            "  --max-shard-size SIZE  largest weight file, e.g. 5GB, 500MB, 2GiB (default 5GB)\n"
            "  --force                replace an existing model folder at --save-path\n"
            "  --quantize nf4|q4|q8   quantize a float base at load time first, as training with\n"
            "                         --quantize did, then dequantize (a quantized base folder\n"
            "                         needs no flag: it is always dequantized)\n"
            "  --quantize-embeddings  with --quantize: embed_tokens and lm_head too\n"
            "  -q, --quiet            no plan line, no progress bar\n"
            "  -h, --help             this help\n");
}

static double mib(size_t b) { return (double)b / 1048576.0; }

int cmd_fuse(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", required_argument, NULL, 'm'},      {"adapter-path", required_argument, NULL, 'a'},
        {"save-path", required_argument, NULL, 'o'},  {"dtype", required_argument, NULL, 'd'},
        {"max-shard-size", required_argument, NULL, 'S'}, {"force", no_argument, NULL, 'f'},
        {"quiet", no_argument, NULL, 'q'},            {"help", no_argument, NULL, 'h'},
        LC_QUANT_OPTIONS,                             {NULL, 0, NULL, 0}};
    lc_load_options lo = {0};
    const char *model = NULL, *adapters = "adapters", *save = "fused_model", *dtype = NULL;
    lc_fuse_options fo = {.keep_dtype = true, .dtype = LC_DT_BF16,
                          .max_shard_bytes = 5000000000ULL, .progress = true};
    bool quiet = false;
    opterr = 0;
    optind = 1;
    int o;
    while ((o = getopt_long(argc, argv, ":hq", opts, NULL)) != -1) {
        switch (o) {
        case 'm': model = optarg; break;
        case 'a': adapters = optarg; break;
        case 'o': save = optarg; break;
        case 'd': dtype = optarg; break;
        case 'f': fo.force = true; break;
        case 'q': quiet = true; break;
        case 'S':
            if (lc_cmd_parse_size(optarg, &fo.max_shard_bytes) != 0)
                return lc_cmd_usage_error("fuse", "--max-shard-size must be a size like 5GB, "
                                                  "500MB or 2GiB, not '%s'",
                                          optarg);
            break;
        case 'h': usage(stdout); return 0;
        case 0x151:
        case 0x152:
            if (lc_cmd_quant_opt(o, optarg, "fuse", &lo) == 2) return 2;
            break;
        case ':': return lc_cmd_usage_error("fuse", "option '%s' needs a value", argv[optind - 1]);
        default: return lc_cmd_usage_error("fuse", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return lc_cmd_usage_error("fuse", "unexpected argument '%s'", argv[optind]);
    if (!model) return lc_cmd_usage_error("fuse", "--model is required");
    if (!*save) return lc_cmd_usage_error("fuse", "--save-path must not be empty");
    if (dtype) {
        fo.keep_dtype = false;
        if (!strcmp(dtype, "nf4") || !strcmp(dtype, "q4") || !strcmp(dtype, "q8"))
            return lc_cmd_usage_error("fuse", "--dtype %s: lorac fuse writes bf16, f16 or f32 only; "
                                              "merging adapters into 4-bit (or 8-bit) weights "
                                              "rounds most of their change away and degrades "
                                              "quality: fuse to bf16, then run `lorac quantize` on "
                                              "the fused model if you need it smaller",
                                      dtype);
        if (lc_cmd_parse_dtype(dtype, "fuse", &fo.dtype) != 0) return 2;
    }
    if (lo.quantize_embeddings && lo.quantize.fmt == LC_QUANT_NONE)
        return lc_cmd_usage_error("fuse", "--quantize-embeddings needs --quantize");
    fo.quantize = lo.quantize;
    fo.quantize_embeddings = lo.quantize_embeddings;
    fo.progress = !quiet;
    char *dir = NULL;
    if (lc_hub_resolve_model(model, &dir) != 0) return lc_cmd_fail();
    lc_adapter_set s;
    if (lc_adapters_load(adapters, &s) != 0) {
        free(dir);
        return lc_cmd_fail();
    }
    long long rank = (long long)s.rank;
    double scale = s.scale;
    lc_fuser *f;
    int rc = lc_fuser_open(&f, dir, &s, adapters, &fo);
    lc_adapters_free(&s);
    if (rc != 0) {
        free(dir);
        return lc_cmd_fail();
    }
    const lc_fuse_plan *p = lc_fuser_plan(f);
    if (!quiet && p->base_quant.fmt != LC_QUANT_NONE) {
        char qn[64];
        printf("Dequantizing the %s base (%.1f MiB held) into %s: a plain model, without the "
               "quantization config or its scales\n",
               lc_quant_name(&p->base_quant, qn, sizeof qn), mib(p->held_bytes),
               lc_dtype_name(p->config_dtype));
    }
    if (!quiet) {
        printf("Memory plan: base weights %.1f MiB (mapped, read once), adapters %.1f MiB (fp32), "
               "working buffers %.1f MiB (fp32: one tensor at a time)\n",
               mib(p->mapped_bytes), mib(p->adapter_bytes), mib(p->work_bytes));
        printf("Fusing %zu of %zu tensors (rank %lld, scale %g) into %s: %s, %.1f MiB in %d file%s\n",
               p->n_fused, p->n_tensors, rank, scale, save,
               lc_dtype_name(p->config_dtype), mib(p->out_bytes), p->n_files,
               p->n_files == 1 ? "" : "s");
        fflush(stdout);
    }
    rc = lc_fuser_write(f, save);
    lc_fuser_free(f);
    free(dir);
    if (rc != 0) return lc_cmd_fail();
    if (!quiet) printf("Saved the fused model to %s\n", save);
    return 0;
}
