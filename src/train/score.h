/*
 * score.h — task metrics of one answer against its target, for assembly answers: exact
 * match after normalisation, mnemonic match, and "assembles" (GNU as accepts the answer
 * once its placeholder operands are made concrete).
 *
 * Normalisation (lc_asm_normalize), line by line: surrounding whitespace dropped, blank
 * lines dropped, the mnemonic (the first word) lower-cased, operands split at commas,
 * whitespace runs inside an operand collapsed to one space and dropped next to '(' and
 * ')', operands joined with ", ". So "ADD  rd,rs1 ,  rs2" and "add rd, rs1, rs2" are equal;
 * operand case and order are kept (labels are case-sensitive).
 *
 * Placeholders (lc_asm_concretize), the data set's and the common spellings: rd, rs1,
 * rs2, rs3, rs become a0..a3 (x10..x13, valid in compressed 3-bit fields) or fa0..fa3 as
 * the mnemonic's operand classes need (the rules of the ISA: loads/stores/moves/converts
 * between the files, compares, fclass); fd, fs1, fs2, fs3 are always fa0..fa3; imm,
 * offset, shamt, uimm, nzimm, zimm become 16 (every form accepts it), label becomes a
 * label defined in the file, csr becomes mscratch, pred/succ become rw, rm dyn. A line is
 * given to the assembler only when it looks like one instruction: printable ASCII, a
 * letter first, none of : ; # " ' \ or comment openers, at most 200 bytes — directives,
 * labels, comments and several statements on a line are refused up front (they could
 * change how the lines after them assemble).
 *
 * The assembler runs once for all answers (lc_asm_check): one source file, each line
 * tagged by its number, errors ("FILE:LINE: Error: ...") mapped back to answers. When a
 * run fails without naming its lines (a crash, a fatal error), the batch is halved and
 * each half run again, down to single lines, so one line that breaks the assembler costs
 * only itself. Owns nothing between calls; never prints.
 */
#ifndef LC_TRAIN_SCORE_H
#define LC_TRAIN_SCORE_H

#include <stdbool.h>
#include <stddef.h>

#include "core/vec.h"

#define LC_ASM_DEFAULT "riscv64-linux-gnu-as"
#define LC_ASM_DEFAULT_MARCH "rv64gc_zba_zbb_zbs_zicsr_zifencei"

/* Appends the normalised form of text (see above) to out: its lines joined with "\n". */
void lc_asm_normalize(const char *text, lc_buf *out);

/* Appends the mnemonic of text (the first word of its normalised form, lower-case; "" when
 * text is blank) to out. */
void lc_asm_mnemonic(const char *text, lc_buf *out);

/* Appends one normalised line (no newline) with its placeholder operands made concrete
 * to out. Returns 0, or -1 without recording an error when the line does not look like
 * one instruction (it is then not given to the assembler). */
int lc_asm_concretize(const char *line, lc_buf *out);

typedef struct {
    bool exact;    // normalised output == normalised target
    bool mnemonic; // same mnemonic (both non-empty)
    int assembles; // 1 yes, 0 no, -1 not measured (no assembler)
} lc_task_score;

/* Fills exact and mnemonic of s for output against target; assembles = -1. */
void lc_task_score_text(const char *output, const char *target, lc_task_score *s);

typedef struct {
    const char *path;  // the assembler: a name searched in PATH, or a path
    const char *march; // its -march
} lc_asm_config;

/* True when c's assembler can be executed (found in PATH, or the path is executable). */
bool lc_asm_available(const lc_asm_config *c);

/* Checks answers text[0..n) (each normalised or not, one or more lines): ok[i] = 1 when
 * every line of text[i], made concrete, assembles, 0 when one does not or when text[i] is
 * blank. *runs (may be NULL) = assembler processes started (1 unless a run failed without
 * naming lines). Returns 0, or -1 when the assembler is missing or does not work with
 * this -march (ok then untouched: report the metric as unavailable). */
int lc_asm_check(const lc_asm_config *c, const char *const *text, size_t n, signed char *ok,
                 int *runs);

#endif
