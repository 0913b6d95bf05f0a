/*
 * score.c — normalising, comparing and assembling answers. See score.h.
 *
 * Owns: the placeholder table, the operand-class rules (which registers of an
 * instruction are floating-point), the batch assembler run with its temporary files.
 * Must not: print, or give the assembler a line that could change how others assemble.
 */
#include "train/score.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/error.h"
#include "core/mem.h"

extern char **environ;

#define MAX_LINE 200
#define LABEL "lc_label" // what `label` becomes; defined at the top of the source file

/* ------------------------------------------------------------------ normalisation */

static bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v'; }

/* One operand s[0..n): trimmed, whitespace runs collapsed, none beside '(' or ')'. */
static void put_operand(lc_buf *out, const char *s, size_t n) {
    bool pending = false, any = false;
    char prev = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (is_space(c)) {
            pending = any;
            continue;
        }
        if (pending && prev != '(' && prev != ')' && c != '(' && c != ')') lc_buf_putc(out, ' ');
        pending = false;
        lc_buf_putc(out, c);
        prev = c;
        any = true;
    }
}

/* One line s[0..n) normalised onto out; returns false (nothing written) when blank. */
static bool put_line(lc_buf *out, const char *s, size_t n) {
    while (n && is_space(*s)) s++, n--;
    while (n && is_space(s[n - 1])) n--;
    if (!n) return false;
    size_t i = 0;
    while (i < n && !is_space(s[i])) lc_buf_putc(out, (char)tolower((unsigned char)s[i++]));
    while (i < n && is_space(s[i])) i++;
    if (i == n) return true;
    lc_buf_putc(out, ' ');
    for (bool first = true; i <= n; first = false) {
        size_t j = i;
        while (j < n && s[j] != ',') j++;
        if (!first) lc_buf_puts(out, ", ");
        put_operand(out, s + i, j - i);
        i = j + 1;
    }
    return true;
}

void lc_asm_normalize(const char *text, lc_buf *out) {
    bool any = false;
    lc_buf_reserve(out, 0);
    out->data[out->len] = 0; // a C string even when nothing is added
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        size_t mark = out->len;
        if (any) lc_buf_putc(out, '\n');
        if (put_line(out, p, n)) any = true;
        else out->len = mark, out->data[mark] = 0;
        p += n + (nl != NULL);
    }
}

void lc_asm_mnemonic(const char *text, lc_buf *out) {
    lc_buf norm = {0};
    lc_asm_normalize(text, &norm);
    size_t n = strcspn(norm.data, " \n");
    lc_buf_append(out, norm.data, n);
    lc_buf_free(&norm);
}

void lc_task_score_text(const char *output, const char *target, lc_task_score *s) {
    lc_buf a = {0}, b = {0}, ma = {0}, mb = {0};
    lc_asm_normalize(output, &a);
    lc_asm_normalize(target, &b);
    lc_asm_mnemonic(output, &ma);
    lc_asm_mnemonic(target, &mb);
    s->exact = a.len == b.len && !memcmp(a.data, b.data, a.len);
    s->mnemonic = ma.len && ma.len == mb.len && !memcmp(ma.data, mb.data, ma.len);
    s->assembles = -1;
    lc_buf_free(&a);
    lc_buf_free(&b);
    lc_buf_free(&ma);
    lc_buf_free(&mb);
}

/* ------------------------------------------------------------------ placeholders */

enum { RD = 1, RS1 = 2, RS2 = 4, RS3 = 8 };

static bool starts(const char *s, const char *p) { return !strncmp(s, p, strlen(p)); }

static bool int_format(const char *f) {
    return !strcmp(f, "w") || !strcmp(f, "wu") || !strcmp(f, "l") || !strcmp(f, "lu");
}

/* Which of rd, rs1, rs2, rs3 are floating-point registers for mnemonic m (lower-case). */
static unsigned float_classes(const char *m) {
    if (!(starts(m, "f") || starts(m, "c.f")) || starts(m, "fence")) return 0;
    static const char *const csr_moves[] = {"frcsr", "fscsr", "frrm",     "fsrm",
                                            "fsrmi", "frflags", "fsflags", "fsflagsi"};
    for (size_t i = 0; i < sizeof csr_moves / sizeof *csr_moves; i++)
        if (!strcmp(m, csr_moves[i])) return 0;
    static const char *const loads[] = {"flw", "fld", "flh", "flq", "c.flw", "c.fld", "c.flwsp", "c.fldsp"};
    static const char *const stores[] = {"fsw", "fsd", "fsh", "fsq", "c.fsw", "c.fsd", "c.fswsp", "c.fsdsp"};
    for (size_t i = 0; i < sizeof loads / sizeof *loads; i++) {
        if (!strcmp(m, loads[i])) return RD;   // a float destination, an integer base
        if (!strcmp(m, stores[i])) return RS2; // a float source, an integer base
    }
    char p[3][16] = {{0}};
    int np = 0;
    for (const char *s = m; *s && np < 3; np++) {
        size_t n = strcspn(s, ".");
        if (n >= sizeof p[0]) return RD | RS1 | RS2 | RS3;
        memcpy(p[np], s, n);
        s += n + (s[n] == '.');
    }
    if (!strcmp(p[0], "fmv") && np == 3) {
        if (!strcmp(p[1], "x")) return RS1; // fmv.x.w: integer rd, float rs1
        if (!strcmp(p[2], "x")) return RD;  // fmv.w.x: float rd, integer rs1
    }
    if (!strcmp(p[0], "fcvt") && np == 3 && int_format(p[1]) != int_format(p[2]))
        return int_format(p[1]) ? RS1 : RD;
    if (!strcmp(p[0], "feq") || !strcmp(p[0], "flt") || !strcmp(p[0], "fle") ||
        !strcmp(p[0], "fclass"))
        return RS1 | RS2; // an integer result
    return RD | RS1 | RS2 | RS3;
}

/* The concrete operand for placeholder w[0..n), or NULL when w is none. */
static const char *placeholder(const char *w, size_t n, unsigned fl) {
    static const struct {
        const char *name, *x, *f; // f: when the operand is a floating-point register
        unsigned cls;
    } tab[] = {
        {"rd", "a0", "fa0", RD},     {"rs1", "a1", "fa1", RS1},  {"rs2", "a2", "fa2", RS2},
        {"rs3", "a3", "fa3", RS3},   {"rs", "a1", "fa1", RS1},   {"fd", "fa0", "fa0", 0},
        {"fs1", "fa1", "fa1", 0},    {"fs2", "fa2", "fa2", 0},   {"fs3", "fa3", "fa3", 0},
        {"imm", "16", "16", 0},      {"offset", "16", "16", 0},  {"shamt", "16", "16", 0},
        {"uimm", "16", "16", 0},     {"nzimm", "16", "16", 0},   {"zimm", "16", "16", 0},
        {"nzuimm", "16", "16", 0},   {"label", LABEL, LABEL, 0}, {"csr", "mscratch", "mscratch", 0},
        {"pred", "rw", "rw", 0},     {"succ", "rw", "rw", 0},    {"rm", "dyn", "dyn", 0},
    };
    for (size_t i = 0; i < sizeof tab / sizeof *tab; i++)
        if (strlen(tab[i].name) == n && !memcmp(tab[i].name, w, n))
            return (tab[i].cls & fl) ? tab[i].f : tab[i].x;
    return NULL;
}

/* True when line could be one instruction and nothing else (see score.h). */
static bool instruction_like(const char *s) {
    size_t n = strlen(s);
    if (!n || n > MAX_LINE || !isalpha((unsigned char)s[0])) return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c > 0x7e || strchr(":;#\"'\\`", c)) return false;
    }
    return !strstr(s, "/*") && !strstr(s, "*/") && !strstr(s, "//");
}

int lc_asm_concretize(const char *line, lc_buf *out) {
    if (!instruction_like(line)) return -1;
    size_t m = strcspn(line, " ");
    char mn[64];
    if (m >= sizeof mn) return -1;
    for (size_t i = 0; i < m; i++) mn[i] = (char)tolower((unsigned char)line[i]);
    mn[m] = 0;
    unsigned fl = float_classes(mn);
    lc_buf_puts(out, mn);
    for (const char *p = line + m; *p;) {
        if (isalnum((unsigned char)*p) || *p == '_') {
            const char *w = p;
            while (isalnum((unsigned char)*p) || *p == '_') p++;
            const char *c = isalpha((unsigned char)*w) ? placeholder(w, (size_t)(p - w), fl) : NULL;
            if (c) lc_buf_puts(out, c);
            else lc_buf_append(out, w, (size_t)(p - w));
        } else {
            lc_buf_putc(out, *p++);
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ the assembler */

bool lc_asm_available(const lc_asm_config *c) {
    if (!c->path || !*c->path) return false;
    struct stat st;
    if (strchr(c->path, '/')) return stat(c->path, &st) == 0 && S_ISREG(st.st_mode) && !access(c->path, X_OK);
    const char *path = getenv("PATH");
    if (!path) path = "/usr/bin:/bin";
    bool found = false;
    while (!found) {
        size_t n = strcspn(path, ":");
        char *full = xmalloc(n + strlen(c->path) + 2);
        snprintf(full, n + strlen(c->path) + 2, "%.*s/%s", (int)n, n ? path : ".", c->path);
        found = stat(full, &st) == 0 && S_ISREG(st.st_mode) && !access(full, X_OK);
        free(full);
        if (!path[n]) break;
        path += n + 1;
    }
    return found;
}

typedef struct {
    const lc_asm_config *c;
    char src[64], err[64]; // temporary file names
    int runs;
    int works; // -1 not yet known, 1 the assembler runs and takes -march, 0 not
} asm_ctx;

#define HEADER_LINES 2 // "\t.text" and the label

static int make_temp(char *name, size_t cap) {
    const char *dir = getenv("TMPDIR");
    if (!dir || !*dir || strlen(dir) > cap - 24) dir = "/tmp";
    snprintf(name, cap, "%s/lorac-as-XXXXXX", dir);
    int fd = mkstemp(name);
    if (fd < 0) return lc_fail("%s: cannot create a temporary file for the assembler: %s", name, strerror(errno));
    close(fd);
    return 0;
}

/* Runs the assembler over lines[0..n) (n may be 0: a probe). *clean = it exited 0;
 * *named = every error it reported named a line in range, and at least one did; errs
 * (n entries) = 1 where a line has an error. Returns 0, or -1 when it could not run. */
static int run_as(asm_ctx *a, const char *const *lines, size_t n, bool *clean, bool *named,
                  signed char *errs) {
    FILE *f = fopen(a->src, "w");
    if (!f) return lc_fail("%s: cannot write the assembler's input: %s", a->src, strerror(errno));
    fprintf(f, "\t.text\n%s:\n", LABEL);
    for (size_t i = 0; i < n; i++) fprintf(f, "\t%s\n", lines[i]);
    if (n == 0) fputs("\tnop\n", f);
    if (fclose(f) != 0) return lc_fail("%s: cannot write the assembler's input: %s", a->src, strerror(errno));
    char march[128];
    snprintf(march, sizeof march, "-march=%s", a->c->march);
    char *argv[] = {(char *)a->c->path, march, "-o", "/dev/null", a->src, NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, a->err, O_WRONLY | O_TRUNC, 0);
    pid_t pid;
    int e = posix_spawnp(&pid, a->c->path, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (e != 0) return lc_fail("cannot run the assembler '%s': %s", a->c->path, strerror(e));
    a->runs++;
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return lc_fail("waiting for the assembler '%s': %s", a->c->path, strerror(errno));
    *clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    *named = false;
    if (errs) memset(errs, 0, n);
    if (*clean || !WIFEXITED(status)) return 0; // a signal: nothing it said can be trusted
    f = fopen(a->err, "r");
    if (!f) return 0;
    char buf[1024];
    size_t plen = strlen(a->src);
    bool unnamed = false, any = false;
    while (fgets(buf, sizeof buf, f)) {
        if (strstr(buf, "Fatal error") || strstr(buf, "internal error")) unnamed = true;
        char *err = strstr(buf, ": Error:");
        if (!err) continue;
        char *end = NULL;
        unsigned long ln = 0;
        if (!strncmp(buf, a->src, plen) && buf[plen] == ':') ln = strtoul(buf + plen + 1, &end, 10);
        if (ln > HEADER_LINES && ln <= HEADER_LINES + n && end == err) {
            if (errs) errs[ln - HEADER_LINES - 1] = 1;
            any = true;
        } else {
            unnamed = true;
        }
    }
    fclose(f);
    *named = any && !unnamed;
    return 0;
}

/* Does the assembler run and take -march? Cached in a->works. Returns 0 or -1. */
static int probe(asm_ctx *a) {
    if (a->works < 0) {
        bool clean, named;
        if (run_as(a, NULL, 0, &clean, &named, NULL) != 0) return -1;
        a->works = clean;
    }
    if (!a->works)
        return lc_fail("the assembler '%s' fails on a plain nop with -march=%s: give a --march it "
                       "knows or a newer binutils",
                       a->c->path, a->c->march);
    return 0;
}

/* ok[i] = whether lines[i] assembles, for lines[0..n), halving on unexplained failures. */
static int check_lines(asm_ctx *a, const char *const *lines, size_t n, signed char *ok) {
    if (n == 0) return 0;
    bool clean, named;
    signed char *errs = xmalloc(n);
    int rc = run_as(a, lines, n, &clean, &named, errs);
    if (rc == 0 && (clean || named)) {
        for (size_t i = 0; i < n; i++) ok[i] = clean ? 1 : !errs[i];
    } else if (rc == 0) {
        // it failed without saying where: is it the assembler, or one of these lines?
        rc = probe(a);
        if (rc == 0 && n == 1) ok[0] = 0;
        else if (rc == 0) {
            size_t h = n / 2;
            rc = check_lines(a, lines, h, ok);
            if (rc == 0) rc = check_lines(a, lines + h, n - h, ok + h);
        }
    }
    free(errs);
    return rc;
}

int lc_asm_check(const lc_asm_config *c, const char *const *text, size_t n, signed char *ok,
                 int *runs) {
    if (runs) *runs = 0;
    if (!lc_asm_available(c))
        return lc_fail("the assembler '%s' is not installed (Debian: binutils-riscv64-linux-gnu, "
                       "installed by scripts/deps.sh)",
                       c->path ? c->path : "");
    if (!c->march || !*c->march || strlen(c->march) > 100 || strspn(c->march, "abcdefghijklmnopqrstuvwxyz0123456789_") != strlen(c->march))
        return lc_fail("-march '%s' is not an ISA string (e.g. %s)", c->march ? c->march : "",
                       LC_ASM_DEFAULT_MARCH);
    asm_ctx a = {c, "", "", 0, -1};
    if (make_temp(a.src, sizeof a.src) != 0) return -1;
    if (make_temp(a.err, sizeof a.err) != 0) {
        remove(a.src);
        return -1;
    }
    // every line of every answer, concrete, with the answer it belongs to
    lc_buf all = {0}, norm = {0};
    size_t nl = 0, cap = 0, *owner = NULL, *at = NULL;
    signed char *res = xmalloc(n ? n : 1);
    for (size_t i = 0; i < n; i++) {
        lc_buf_clear(&norm);
        lc_asm_normalize(text[i], &norm);
        res[i] = norm.len > 0;
        for (const char *p = norm.data; res[i] && *p;) {
            size_t len = strcspn(p, "\n");
            char *line = xstrndup(p, len);
            size_t mark = all.len;
            if (lc_asm_concretize(line, &all) != 0) {
                res[i] = 0;
            } else {
                lc_buf_putc(&all, 0);
                if (nl == cap) {
                    cap = cap ? 2 * cap : 64;
                    owner = xrealloc(owner, cap * sizeof *owner);
                    at = xrealloc(at, cap * sizeof *at);
                }
                owner[nl] = i, at[nl++] = mark;
            }
            free(line);
            p += len + (p[len] == '\n');
        }
    }
    const char **lines = xmalloc((nl ? nl : 1) * sizeof *lines);
    for (size_t k = 0; k < nl; k++) lines[k] = all.data + at[k];
    signed char *lok = xmalloc(nl ? nl : 1);
    int rc = check_lines(&a, lines, nl, lok);
    if (rc == 0) {
        for (size_t k = 0; k < nl; k++)
            if (!lok[k]) res[owner[k]] = 0;
        memcpy(ok, res, n);
    }
    if (runs) *runs = a.runs;
    remove(a.src);
    remove(a.err);
    free(lok);
    free(lines);
    free(owner);
    free(at);
    free(res);
    lc_buf_free(&all);
    lc_buf_free(&norm);
    return rc;
}
