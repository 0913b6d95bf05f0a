/*
 * test_options.c — `lorac train` options: mlx-lm's defaults (mlx_lm/lora.py CONFIG_DEFAULTS),
 * the original recipe's lora_config.yaml verbatim, every key, flags over the file, and
 * the errors (nearest names, file:line:key).
 */
#include <unistd.h>

#include "core/file.h"
#include "core/json.h"
#include "harness.h"
#include "io/adapters.h"
#include "train/options.h"

/* The original recipe's config, byte for byte. */
static const char *RECIPE = "model: \"mistralai/Mistral-7B-Instruct-v0.3\"\n"
                            "train: true\n"
                            "data: \"data\"\n"
                            "batch_size: 2\n"
                            "iters: 600\n"
                            "learning_rate: 1.0e-5\n"
                            "steps_per_eval: 50\n"
                            "adapter_path: \"adapters\"\n"
                            "save_every: 100\n"
                            "lora_parameters:\n"
                            "  rank: 16\n"
                            "  alpha: 16\n"
                            "  dropout: 0.0\n"
                            "  scale: 16.0\n";

static int yaml(lc_train_options *o, const char *text) {
    lc_train_options_defaults(o);
    return lc_train_options_apply_yaml(o, text, strlen(text), "cfg.yaml");
}

static void test_defaults(void) {
    lc_train_options o;
    lc_train_options_defaults(&o);
    CHECK_EQ_STR(o.model, "mlx_model");
    CHECK_EQ_STR(o.data, "data/");
    CHECK_EQ_STR(o.adapter_path, "adapters");
    CHECK(!o.train && !o.test && !o.grad_checkpoint && !o.mask_prompt);
    CHECK_EQ_INT(o.batch_size, 4);
    CHECK_EQ_INT(o.iters, 1000);
    CHECK_EQ_INT(o.num_layers, 16);
    CHECK_EQ_INT(o.val_batches, 25);
    CHECK_EQ_INT(o.steps_per_report, 10);
    CHECK_EQ_INT(o.steps_per_eval, 200);
    CHECK_EQ_INT(o.save_every, 100);
    CHECK_EQ_INT(o.test_batches, 500);
    CHECK_EQ_INT(o.max_seq_length, 2048);
    CHECK_EQ_INT(o.seed, 0);
    CHECK_EQ_INT(o.grad_accumulation_steps, 1);
    CHECK(o.learning_rate == 1e-5);
    CHECK_EQ_INT(o.lora.rank, 8);
    CHECK(lc_train_options_lora_scale(&o) == 20.0);
    CHECK(o.lora.dropout == 0.0);
    CHECK_EQ_INT(o.lora.keys, LC_LORA_ALL_KEYS);
    CHECK(o.optimizer == LC_OPTIM_ADAM);
    CHECK(o.lr_schedule.kind == LC_SCHED_NONE);
    CHECK(o.clip_grad_norm == 0);
    CHECK(o.memory_limit == 0);
    CHECK(o.adamw.weight_decay == 0.01 && o.adam.weight_decay == 0);
}

static void test_recipe_verbatim(void) {
    lc_train_options o;
    CHECK_OK(yaml(&o, RECIPE));
    CHECK_EQ_STR(o.model, "mistralai/Mistral-7B-Instruct-v0.3");
    CHECK(o.train);
    CHECK_EQ_STR(o.data, "data");
    CHECK_EQ_INT(o.batch_size, 2);
    CHECK_EQ_INT(o.iters, 600);
    CHECK(o.learning_rate == 1.0e-5);
    CHECK_EQ_INT(o.steps_per_eval, 50);
    CHECK_EQ_STR(o.adapter_path, "adapters");
    CHECK_EQ_INT(o.save_every, 100);
    CHECK_EQ_INT(o.lora.rank, 16);
    CHECK(o.lora.alpha == 16 && o.lora.dropout == 0.0);
    CHECK(lc_train_options_lora_scale(&o) == 16.0); // scale given: scale
    CHECK_EQ_INT(o.num_layers, 16);                // untouched defaults
    CHECK_EQ_INT(o.max_seq_length, 2048);
    // only alpha: alpha / rank, as PEFT
    CHECK_OK(yaml(&o, "lora_parameters:\n  rank: 16\n  alpha: 32\n"));
    CHECK(lc_train_options_lora_scale(&o) == 2.0);
    // the same file through the command line, with a flag overriding it
    char path[] = "/tmp/lorac-test-options-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0) return;
    close(fd);
    CHECK_OK(lc_write_file_atomic(path, RECIPE, strlen(RECIPE)));
    char *argv[] = {"--batch-size", "8", "-c", path, "--learning-rate=2e-4", "--mask-prompt"};
    CHECK_OK(lc_train_options_parse(&o, 6, argv));
    CHECK_EQ_INT(o.batch_size, 8);   // flag over file
    CHECK_EQ_INT(o.iters, 600);      // file over default
    CHECK(o.learning_rate == 2e-4);
    CHECK(o.mask_prompt && o.train);
    CHECK_EQ_STR(o.config, path);
    unlink(path);
}

static void test_every_key(void) {
    lc_train_options o;
    const char *all = "model: m\n"
                      "train: yes\n"
                      "test: True\n"
                      "data: d\n"
                      "adapter_path: a\n"
                      "resume_adapter_file: r.safetensors\n"
                      "batch_size: 3\n"
                      "iters: 7\n"
                      "learning_rate: 3e-4\n"
                      "num_layers: -1\n"
                      "steps_per_report: 2\n"
                      "steps_per_eval: 5\n"
                      "val_batches: -1\n"
                      "save_every: 9\n"
                      "max_seq_length: 512\n"
                      "grad_checkpoint: true\n"
                      "mask_prompt: true\n"
                      "seed: 42\n"
                      "test_batches: 11\n"
                      "grad_accumulation_steps: 4\n"
                      "clip_grad_norm: 1.0\n"
                      "memory_limit: 23.5\n"
                      "fine_tune_type: lora\n"
                      "optimizer: adamw\n"
                      "optimizer_config:\n"
                      "  adamw:\n"
                      "    weight_decay: 0.1\n"
                      "    betas: [0.8, 0.95]\n"
                      "    eps: 1e-6\n"
                      "lr_schedule:\n"
                      "  name: cosine_decay\n"
                      "  warmup: 10\n"
                      "  warmup_init: 1e-7\n"
                      "  arguments: [3e-4, 100, 1e-6]\n"
                      "lora_parameters:\n"
                      "  rank: 4\n"
                      "  dropout: 0.05\n"
                      "  scale: 2.0\n"
                      "  keys: [self_attn.q_proj, v_proj, \"mlp.down_proj\"]\n";
    CHECK_OK(yaml(&o, all));
    CHECK_EQ_STR(o.model, "m");
    CHECK(o.train && o.test && o.grad_checkpoint && o.mask_prompt);
    CHECK_EQ_STR(o.resume_adapter_file, "r.safetensors");
    CHECK_EQ_INT(o.batch_size, 3);
    CHECK_EQ_INT(o.iters, 7);
    CHECK(o.learning_rate == 3e-4);
    CHECK_EQ_INT(o.num_layers, -1);
    CHECK_EQ_INT(o.val_batches, -1);
    CHECK_EQ_INT(o.save_every, 9);
    CHECK_EQ_INT(o.max_seq_length, 512);
    CHECK_EQ_INT(o.seed, 42);
    CHECK_EQ_INT(o.test_batches, 11);
    CHECK_EQ_INT(o.grad_accumulation_steps, 4);
    CHECK(o.clip_grad_norm == 1.0);
    CHECK(o.memory_limit == 23.5);
    CHECK(o.optimizer == LC_OPTIM_ADAMW);
    const lc_adam_config *a = lc_train_options_adam(&o);
    CHECK(a->weight_decay == 0.1 && a->beta1 == 0.8 && a->beta2 == 0.95 && a->eps == 1e-6);
    CHECK(o.lr_schedule.kind == LC_SCHED_COSINE && o.lr_schedule.n_args == 3);
    CHECK(o.lr_schedule.warmup == 10 && o.lr_schedule.warmup_init == 1e-7);
    CHECK(o.lr_schedule.args[1] == 100);
    CHECK_EQ_INT(o.lora.rank, 4);
    CHECK(o.lora.dropout == 0.05 && lc_train_options_lora_scale(&o) == 2.0);
    CHECK_EQ_INT(o.lora.keys, (1u << LC_LORA_Q) | (1u << LC_LORA_V) | (1u << LC_LORA_DOWN));
    // null means the default, as in mlx-lm
    CHECK_OK(yaml(&o, "resume_adapter_file: null\nlr_schedule: ~\nbatch_size:\n"));
    CHECK_EQ_STR(o.resume_adapter_file, "");
    CHECK_EQ_INT(o.batch_size, 4);
    // the JSON written into adapter_config.json parses and carries the values
    CHECK_OK(yaml(&o, all));
    lc_buf b = {0};
    lc_train_options_to_json(&o, &b);
    cJSON *j;
    CHECK_OK(lc_json_parse(b.data, b.len, "options json", &j));
    if (j) {
        CHECK(cJSON_GetObjectItem(j, "batch_size")->valuedouble == 3);
        CHECK(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "lora_parameters"), "scale")->valuedouble == 2);
        CHECK_EQ_STR(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "lr_schedule"), "name")->valuestring,
                     "cosine_decay");
        cJSON_Delete(j);
    }
    lc_buf_free(&b);
}

static void test_flags(void) {
    lc_train_options o;
    char *argv[] = {"--model",         "x",          "--train",        "--iters",    "5",
                    "--num_layers",    "-1",         "--lora-rank",    "32",         "--lora-alpha",
                    "64",              "--lora-keys", "q_proj,mlp.up_proj", "--optimizer", "adamw",
                    "--weight-decay",  "0.2",        "--lr-schedule",  "linear",     "--lr-schedule-args",
                    "1e-4,0,100",      "--warmup",   "5",              "--clip-grad-norm", "0.5",
                    "--memory-limit", "20"};
    CHECK_OK(lc_train_options_parse(&o, (int)(sizeof argv / sizeof *argv), argv));
    CHECK_EQ_STR(o.model, "x");
    CHECK(o.train);
    CHECK_EQ_INT(o.iters, 5);
    CHECK_EQ_INT(o.num_layers, -1);
    CHECK_EQ_INT(o.lora.rank, 32);
    CHECK(lc_train_options_lora_scale(&o) == 2.0);
    CHECK_EQ_INT(o.lora.keys, (1u << LC_LORA_Q) | (1u << LC_LORA_UP));
    CHECK(o.optimizer == LC_OPTIM_ADAMW && o.adamw.weight_decay == 0.2);
    CHECK(o.lr_schedule.kind == LC_SCHED_LINEAR && o.lr_schedule.args[2] == 100);
    CHECK(o.lr_schedule.warmup == 5);
    CHECK(o.clip_grad_norm == 0.5);
    CHECK(o.memory_limit == 20);
    // the hash follows what matters for resuming, not iters or the memory limit (what the
    // backward recomputes gives the same gradients)
    uint64_t h = lc_train_options_hash(&o);
    o.iters = 99;
    CHECK(lc_train_options_hash(&o) == h);
    o.memory_limit = 12;
    CHECK(lc_train_options_hash(&o) == h);
    o.lora.rank = 8;
    CHECK(lc_train_options_hash(&o) != h);
}

static void test_errors(void) {
    lc_train_options o;
    CHECK_FAILS(yaml(&o, "model: m\nbatchsize: 2\n"),
                "cfg.yaml:2: unknown key 'batchsize' (did you mean 'batch_size'?)");
    CHECK_FAILS(yaml(&o, "lora_parameters:\n  rnak: 8\n"),
                "cfg.yaml:2: unknown key 'lora_parameters.rnak' (did you mean 'rank'?)");
    CHECK_FAILS(yaml(&o, "iters: 600\nbatch_size: two\n"),
                "cfg.yaml:2: batch_size: expects an integer, got \"two\"");
    CHECK_FAILS(yaml(&o, "batch_size: \"2\"\n"), "cfg.yaml:1: batch_size: expects an integer, got the string");
    CHECK_FAILS(yaml(&o, "batch_size: 0\n"), "cfg.yaml:1: batch_size: must be >= 1, got 0");
    CHECK_FAILS(yaml(&o, "num_layers: -2\n"), "num_layers: must be >= 1 (or -1 for all), got -2");
    CHECK_FAILS(yaml(&o, "train: maybe\n"), "cfg.yaml:1: train: expects true or false");
    CHECK_FAILS(yaml(&o, "learning_rate: fast\n"), "learning_rate: expects a number");
    CHECK_FAILS(yaml(&o, "\n\nlora_parameters:\n  dropout: 1.5\n"),
                "cfg.yaml:4: lora_parameters.dropout: must be in [0, 1)");
    CHECK_FAILS(yaml(&o, "lora_parameters:\n  keys: [q_prj]\n"),
                "unknown module 'q_prj' (did you mean 'q_proj'?");
    CHECK_FAILS(yaml(&o, "optimizer: sgd\n"), "cfg.yaml:1: optimizer: lorac implements adam and adamw");
    CHECK_FAILS(yaml(&o, "optimizer_config:\n  adamw:\n    betas: 0.9\n"),
                "cfg.yaml:3: optimizer_config.adamw.betas: expects a list of two numbers");
    CHECK_FAILS(yaml(&o, "lr_schedule:\n  name: cosine\n  arguments: [1, 2]\n"),
                "unknown schedule 'cosine' (did you mean 'cosine_decay'?");
    CHECK_FAILS(yaml(&o, "lr_schedule:\n  name: cosine_decay\n  arguments: [1e-5]\n"),
                "cfg.yaml:2: lr_schedule: cosine_decay takes arguments");
    CHECK_FAILS(yaml(&o, "fine_tune_type: dora\n"), "lorac trains \"lora\" only");
    CHECK_FAILS(yaml(&o, "model: [a, b]\n"), "cfg.yaml:1: model: expects a single value, got a list");
    CHECK_FAILS(yaml(&o, "- a\n- b\n"), "expected key: value lines");
    CHECK_FAILS(yaml(&o, "model: \"unterminated\n"), "cfg.yaml:");
    char *a1[] = {"--batchsize", "2"};
    CHECK_FAILS(lc_train_options_parse(&o, 2, a1), "unknown option --batchsize (did you mean --batch-size?)");
    char *a2[] = {"--iters"};
    CHECK_FAILS(lc_train_options_parse(&o, 1, a2), "--iters: needs a value");
    char *a3[] = {"--iters", "1.5"};
    CHECK_FAILS(lc_train_options_parse(&o, 2, a3), "--iters: expects an integer, got \"1.5\"");
    char *a4[] = {"stray"};
    CHECK_FAILS(lc_train_options_parse(&o, 1, a4), "unexpected argument 'stray'");
    char *a5[] = {"-c", "/nonexistent/lora.yaml"};
    CHECK_FAILS(lc_train_options_parse(&o, 2, a5), "/nonexistent/lora.yaml");
    char *a6[] = {"--lr-schedule", "cosine_decay"};
    CHECK_FAILS(lc_train_options_parse(&o, 2, a6), "--lr-schedule: cosine_decay takes arguments");
    char *a7[] = {"--lora-keys", "self_attn.x_proj"};
    CHECK_FAILS(lc_train_options_parse(&o, 2, a7), "--lora-keys: unknown module");
}

int main(void) {
    RUN(test_defaults);
    RUN(test_recipe_verbatim);
    RUN(test_every_key);
    RUN(test_flags);
    RUN(test_errors);
    return t_summary();
}
