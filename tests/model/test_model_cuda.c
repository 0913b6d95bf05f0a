/*
 * test_model_cuda.c — the model tests of test_model.c (transformers + PEFT fixtures:
 * logits, losses, every LoRA gradient, greedy generation through the KV cache,
 * checkpointing, Adam/AdamW trajectories) run on the CUDA backend. The fixture models
 * are float32, so the card multiplies them in float32 (SGEMM) and every bound is
 * test_model.c's times 10: only summation order and expf differ from the CPU.
 * Skips (visibly) when the build has no CUDA or no GPU answers.
 */
#include "backend/backend.h"

#define TEST_DEVICE "cuda"
#define TOL 10.0
#define TEST_NEEDS_GPU 1

static void test_skipped_without_gpu(void);

#include "test_model.c"

static void test_skipped_without_gpu(void) { SKIP("no CUDA backend (see above)"); }
