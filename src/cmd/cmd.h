/*
 * cmd.h — the commands of the lorac binary. Each is one file in src/cmd: parse
 * options, call the layers, print. A command returns the process exit status:
 * 0 success, 2 bad input or usage (after printing one "error: ..." line), 1 other.
 */
#ifndef LC_CMD_H
#define LC_CMD_H

#define LORAC_VERSION "0.1.0"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} lc_command;

/* Prints "error: <current error message>" to stderr; returns 2. */
int lc_cmd_fail(void);
/* Prints "error: <formatted message>" to stderr; returns 2. */
int lc_cmd_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

int cmd_info(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_init(int argc, char **argv);

#endif
