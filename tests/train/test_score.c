/*
 * test_score.c — the task scorer: normalisation, mnemonics, placeholder substitution on
 * hand-made cases, and "assembles" against the real GNU assembler for riscv64 (skipped
 * with a message when it is not installed): known-good and known-bad lines in one run,
 * every target of the project's data set (which tests/data/test_riscv_assembles.sh
 * checks with its own substitution), and a fake assembler that crashes on one line or
 * refuses the -march.
 */
#include <sys/stat.h>
#include <unistd.h>

#include "core/file.h"
#include "core/mem.h"
#include "harness.h"
#include "train/score.h"

static char *norm(const char *s) {
    static lc_buf b;
    lc_buf_clear(&b);
    lc_asm_normalize(s, &b);
    return b.data;
}

static char *mnem(const char *s) {
    static lc_buf b;
    lc_buf_clear(&b);
    lc_asm_mnemonic(s, &b);
    return b.data;
}

static char *conc(const char *s) {
    static lc_buf b;
    lc_buf_clear(&b);
    lc_buf_puts(&b, "");
    return lc_asm_concretize(s, &b) == 0 ? b.data : "(refused)";
}

static void normalisation(void) {
    CHECK_EQ_STR(norm("add rd, rs1, rs2"), "add rd, rs1, rs2");
    CHECK_EQ_STR(norm("add rd,rs1,rs2"), "add rd, rs1, rs2");
    CHECK_EQ_STR(norm("  ADD   rd ,  rs1,\trs2  "), "add rd, rs1, rs2");
    CHECK_EQ_STR(norm("Fcvt.W.S rd, rs1"), "fcvt.w.s rd, rs1");
    CHECK_EQ_STR(norm("lw rd, offset ( rs1 )"), "lw rd, offset(rs1)");
    CHECK_EQ_STR(norm("lw rd,offset(rs1)\r\n"), "lw rd, offset(rs1)");
    CHECK_EQ_STR(norm("fence.i"), "fence.i");
    CHECK_EQ_STR(norm("  ret  "), "ret");
    CHECK_EQ_STR(norm(""), "");
    CHECK_EQ_STR(norm(" \n\t\n"), "");
    // lines: blank ones dropped, each normalised
    CHECK_EQ_STR(norm("\n add rd,rs1,rs2 \n\n SUB rd ,rs1, rs2\n"), "add rd, rs1, rs2\nsub rd, rs1, rs2");
    // operand case is kept (labels are case-sensitive); an empty operand stays visible
    CHECK_EQ_STR(norm("j Loop"), "j Loop");
    CHECK_EQ_STR(norm("add rd,,rs2"), "add rd, , rs2");
    CHECK_EQ_STR(norm("add rd rs1 rs2"), "add rd rs1 rs2");
}

static void mnemonics_and_scores(void) {
    CHECK_EQ_STR(mnem("  C.ADDI16SP sp, imm"), "c.addi16sp");
    CHECK_EQ_STR(mnem("ret"), "ret");
    CHECK_EQ_STR(mnem("\n\nlw rd, 0(rs1)\nadd rd, rs1, rs2"), "lw");
    CHECK_EQ_STR(mnem("   "), "");
    lc_task_score s;
    lc_task_score_text(" add  rd,rs1 , rs2\n", "add rd, rs1, rs2", &s);
    CHECK(s.exact && s.mnemonic && s.assembles == -1);
    lc_task_score_text("add rd, rs2, rs1", "add rd, rs1, rs2", &s);
    CHECK(!s.exact && s.mnemonic);
    lc_task_score_text("addw rd, rs1, rs2", "add rd, rs1, rs2", &s);
    CHECK(!s.exact && !s.mnemonic);
    lc_task_score_text("add rd, rs1, rs2\nadd rd, rs1, rs2", "add rd, rs1, rs2", &s);
    CHECK(!s.exact && s.mnemonic); // the whole answer counts, not its first line
    lc_task_score_text("", "", &s);
    CHECK(s.exact && !s.mnemonic); // an empty mnemonic never matches
}

static void placeholders(void) {
    CHECK_EQ_STR(conc("add rd, rs1, rs2"), "add a0, a1, a2");
    CHECK_EQ_STR(conc("fmadd.s rd, rs1, rs2, rs3"), "fmadd.s fa0, fa1, fa2, fa3");
    CHECK_EQ_STR(conc("flw rd, offset(rs1)"), "flw fa0, 16(a1)");
    CHECK_EQ_STR(conc("fsd rs2, offset(rs1)"), "fsd fa2, 16(a1)");
    CHECK_EQ_STR(conc("c.fldsp rd, offset(sp)"), "c.fldsp fa0, 16(sp)");
    CHECK_EQ_STR(conc("fcvt.w.s rd, rs1"), "fcvt.w.s a0, fa1");
    CHECK_EQ_STR(conc("fcvt.d.lu rd, rs1"), "fcvt.d.lu fa0, a1");
    CHECK_EQ_STR(conc("fcvt.s.d rd, rs1"), "fcvt.s.d fa0, fa1");
    CHECK_EQ_STR(conc("fmv.x.w rd, rs1"), "fmv.x.w a0, fa1");
    CHECK_EQ_STR(conc("fmv.d.x rd, rs1"), "fmv.d.x fa0, a1");
    CHECK_EQ_STR(conc("flt.d rd, rs1, rs2"), "flt.d a0, fa1, fa2");
    CHECK_EQ_STR(conc("fclass.s rd, rs1"), "fclass.s a0, fa1");
    CHECK_EQ_STR(conc("fsflags rd, rs1"), "fsflags a0, a1");
    CHECK_EQ_STR(conc("fence rw, rw"), "fence rw, rw");
    CHECK_EQ_STR(conc("fadd.s fd, fs1, fs2, rm"), "fadd.s fa0, fa1, fa2, dyn");
    CHECK_EQ_STR(conc("csrrw rd, csr, rs1"), "csrrw a0, mscratch, a1");
    CHECK_EQ_STR(conc("beq rs1, rs2, label"), "beq a1, a2, lc_label");
    CHECK_EQ_STR(conc("slli rd, rs1, shamt"), "slli a0, a1, 16");
    CHECK_EQ_STR(conc("lui rd, %hi(label)"), "lui a0, %hi(lc_label)");
    CHECK_EQ_STR(conc("addi rd, rs1, 0x1f"), "addi a0, a1, 0x1f"); // numbers are not words
    CHECK_EQ_STR(conc("add rd2, rs1, x5"), "add rd2, a1, x5");     // only whole words
    // refused: not one instruction
    CHECK_EQ_STR(conc(".include \"/etc/passwd\""), "(refused)");
    CHECK_EQ_STR(conc("loop: add rd, rs1, rs2"), "(refused)");
    CHECK_EQ_STR(conc("add rd, rs1, rs2 # comment"), "(refused)");
    CHECK_EQ_STR(conc("add rd, rs1, rs2; sub rd, rs1, rs2"), "(refused)");
    CHECK_EQ_STR(conc("add rd, rs1, rs2 /* open"), "(refused)");
    CHECK_EQ_STR(conc("li rd, 1 \\"), "(refused)");
    CHECK_EQ_STR(conc("1: nop"), "(refused)");
    CHECK_EQ_STR(conc("mv rd, rs1\xc2\xa0"), "(refused)");
    CHECK_EQ_STR(conc(""), "(refused)");
}

static const lc_asm_config real = {LC_ASM_DEFAULT, LC_ASM_DEFAULT_MARCH};

#define NEED_AS()                                                                          \
    do {                                                                                   \
        if (!lc_asm_available(&real))                                                      \
            SKIP("%s is not installed (Debian: binutils-riscv64-linux-gnu, scripts/deps.sh): " \
                 "the 'assembles' metric is untested",                                     \
                 LC_ASM_DEFAULT);                                                          \
    } while (0)

static void assembles_known_lines(void) {
    NEED_AS();
    static const struct {
        const char *text;
        int ok;
    } cases[] = {
        {"add rd, rs1, rs2", 1},
        {"ADD  rd,rs1 ,rs2", 1},
        {"lw rd, offset(rs1)", 1},
        {"fadd.s rd, rs1, rs2", 1},
        {"fcvt.w.s rd, rs1", 1},
        {"c.addi16sp sp, imm", 1},
        {"c.lw rd, offset(rs1)", 1},
        {"beq rs1, rs2, label", 1},
        {"csrrs rd, csr, rs1", 1},
        {"sh2add rd, rs1, rs2", 1},
        {"add a0, a1, a2\nsub t0, t1, t2", 1},
        {"ret", 1},
        {"add rd, rs1", 0},            // an operand short
        {"foo rd, rs1", 0},            // no such instruction
        {"fadd.s a0, a1, a2", 0},      // integer registers where floats belong
        {"addi rd, rs1, 5000", 0},     // immediate out of range
        {"c.addi16sp sp, 8", 0},       // must be a multiple of 16
        {"sw rd, rs1", 0},             // not an address
        {"sub rd, rs1, imm", 0},       // no immediate form
        {"add a0, a1, a2\nbogus", 0},  // one bad line fails the answer
        {"", 0},                       // nothing is not an instruction
        {".byte 1", 0},                // refused before the assembler
        {"x: add a0, a1, a2", 0},
    };
    size_t n = sizeof cases / sizeof *cases;
    const char *text[sizeof cases / sizeof *cases];
    signed char ok[sizeof cases / sizeof *cases];
    for (size_t i = 0; i < n; i++) text[i] = cases[i].text, ok[i] = -7;
    int runs = 0;
    CHECK_OK(lc_asm_check(&real, text, n, ok, &runs));
    CHECK_EQ_INT(runs, 1); // one process for the whole batch
    for (size_t i = 0; i < n; i++)
        CHECK_MSG(ok[i] == cases[i].ok, "'%s': assembles=%d, expected %d", cases[i].text, ok[i],
                  cases[i].ok);
}

/* Every target of datasets/riscv/rows.jsonl (tests/data/test_riscv_assembles.sh assembles
 * them with its own substitution), all in one run. */
static void assembles_every_dataset_target(void) {
    NEED_AS();
    char *text;
    size_t len;
    if (lc_read_file("datasets/riscv/rows.jsonl", 1 << 24, &text, &len) != 0)
        SKIP("datasets/riscv/rows.jsonl: %s", lc_errmsg());
    size_t n = 0, cap = 2048;
    char **t = xmalloc(cap * sizeof *t);
    for (char *p = text, *nl; *p && n < cap; p = nl + 1) {
        nl = strchr(p, '\n');
        if (!nl) break;
        cJSON *j = cJSON_ParseWithLength(p, (size_t)(nl - p));
        cJSON *ins = cJSON_GetObjectItemCaseSensitive(j, "instructions");
        if (cJSON_IsString(ins)) t[n++] = xstrdup(ins->valuestring);
        cJSON_Delete(j);
    }
    free(text);
    CHECK(n > 1000);
    signed char *ok = xmalloc(n);
    int runs = 0;
    CHECK_OK(lc_asm_check(&real, (const char *const *)t, n, ok, &runs));
    CHECK_EQ_INT(runs, 1);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        if (!ok[i] && bad++ < 5) CHECK_MSG(0, "data set target '%s' does not assemble", t[i]);
    for (size_t i = 0; i < n; i++) free(t[i]);
    free(t);
    free(ok);
}

/* A fake assembler (a shell script) that dies of a signal when its input holds "ebreak",
 * else runs the real one: the batch is halved until the line is alone. */
static void a_line_that_breaks_the_assembler(void) {
    NEED_AS();
    char dir[] = "/tmp/lorac-score-XXXXXX";
    if (!mkdtemp(dir)) SKIP("mkdtemp failed");
    char path[64];
    snprintf(path, sizeof path, "%s/as", dir);
    FILE *f = fopen(path, "w");
    fprintf(f, "#!/bin/sh\nfor a; do src=$a; done\n"
               "if grep -q ebreak \"$src\"; then kill -SEGV $$; fi\n"
               "exec %s \"$@\"\n",
            LC_ASM_DEFAULT);
    fclose(f);
    chmod(path, 0755);
    lc_asm_config c = {path, LC_ASM_DEFAULT_MARCH};
    const char *text[] = {"add rd, rs1, rs2", "bogus", "ebreak", "sub rd, rs1, rs2", "lw rd, offset(rs1)"};
    signed char ok[5];
    int runs = 0;
    CHECK_OK(lc_asm_check(&c, text, 5, ok, &runs));
    CHECK(ok[0] == 1 && ok[1] == 0 && ok[2] == 0 && ok[3] == 1 && ok[4] == 1);
    CHECK(runs > 1 && runs <= 8);
    // an assembler that takes no -march: unavailable, never a pass
    f = fopen(path, "w");
    fputs("#!/bin/sh\necho \"as: Error: unknown ISA\" >&2\nexit 1\n", f);
    fclose(f);
    memset(ok, 7, sizeof ok);
    CHECK_FAILS(lc_asm_check(&c, text, 5, ok, NULL), "fails on a plain nop");
    CHECK(ok[0] == 7);
    remove(path);
    rmdir(dir);
}

static void missing_assembler(void) {
    lc_asm_config c = {"lorac-no-such-assembler", LC_ASM_DEFAULT_MARCH};
    CHECK(!lc_asm_available(&c));
    const char *text[] = {"add rd, rs1, rs2"};
    signed char ok[1] = {7};
    CHECK_FAILS(lc_asm_check(&c, text, 1, ok, NULL), "not installed");
    CHECK(ok[0] == 7);
    lc_asm_config d = {"/nonexistent/as", LC_ASM_DEFAULT_MARCH};
    CHECK(!lc_asm_available(&d));
    lc_asm_config e = {LC_ASM_DEFAULT, "rv64gc -o /etc/x"};
    if (lc_asm_available(&e)) CHECK_FAILS(lc_asm_check(&e, text, 1, ok, NULL), "not an ISA string");
}

int main(void) {
    RUN(normalisation);
    RUN(mnemonics_and_scores);
    RUN(placeholders);
    RUN(assembles_known_lines);
    RUN(assembles_every_dataset_target);
    RUN(a_line_that_breaks_the_assembler);
    RUN(missing_assembler);
    return t_summary();
}
