/*
 * trainer.h — the LoRA training loop: options in, adapters out.
 *
 * Loads the model and data, prints the memory plan (and refuses a run that would not
 * fit, before allocating), trains with Adam/AdamW, reports in mlx-lm's words and to
 * <adapter_path>/metrics.jsonl (redrawing the loss curves, <adapter_path>/loss.svg or the
 * `plot` option, after each record), evaluates, checkpoints, resumes, and tests. Every file
 * is written atomically; a NaN or infinite loss or gradient stops the run naming the last
 * good checkpoint, and adapters are checked finite before every save. Library code:
 * messages go to stderr/stdout through the
 * reporting it was asked for, errors are returned (0/-1 with lc_fail).
 */
#ifndef LC_TRAINER_H
#define LC_TRAINER_H

#include <signal.h>
#include <stdbool.h>

#include "model/model.h"
#include "text/tokenizer.h"
#include "train/data.h"
#include "train/options.h"

/* Runs `lorac train` for o. resume: continue from the newest complete train state in
 * o->adapter_path. chat_family: an lc_chat_family for chat data, or -1 to detect. *stop is polled between steps (Ctrl-C): when set, a resumable
 * checkpoint is saved and the run returns 0 early. Returns 0 or -1. */
int lc_train_run(const lc_train_options *o, bool resume, int chat_family,
                 volatile sig_atomic_t *stop);

/* Token-weighted mean loss of up to max_batches batches (-1: all) of d, in its sorted
 * order, with batch size B: *loss, *ntok. Returns 0 or -1. */
int lc_eval_loss(lc_model *m, const lc_dataset *d, int64_t B, int64_t max_seq_length,
                 int64_t max_batches, double *loss, int64_t *ntok);

#endif
