/*
 * cli.h - private interface between the parts of the `twinhub` command:
 * the subcommand entry points (main.c dispatches to them) and the
 * development certificate store used by `twinhub serve` (certs.c).
 */
#ifndef TH_CLI_H
#define TH_CLI_H

/* <limits.h> is shadowed by emulator/core/limits.h on the include path. */
#include <linux/limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>

/* Exit codes shared by every subcommand (docs/cli.md, "Exit status"). */
#define TH_EXIT_OK 0
#define TH_EXIT_FAIL 1  /* something at run time failed; the message says what */
#define TH_EXIT_USAGE 2 /* unknown option or bad value; nothing was started */

/*
 * `twinhub serve`: argv[0] is "serve". Runs until SIGINT/SIGTERM or until
 * the broker dies, and returns the process exit code.
 */
int th_cmd_serve(int argc, char **argv);
/* The `twinhub serve --help` text. */
void th_usage_serve(FILE *out);

/*
 * `twinhub run FILE...` and `twinhub verify RECORDING --scenario FILE`
 * (run.c, verify.c; docs/scenarios.md): argv[0] is the subcommand name.
 */
int th_cmd_run(int argc, char **argv);
void th_usage_run(FILE *out);
int th_cmd_verify(int argc, char **argv);
void th_usage_verify(FILE *out);

/* `twinhub security ensure|check|status` (security.c; docs/cli.md). */
int th_cmd_security(int argc, char **argv);
void th_usage_security(FILE *out);
/* config.c: twinhub config (automatic configurations) */
int th_cmd_config(int argc, char **argv);
void th_usage_config(FILE *out);

/* `twinhub monitor` (monitor.c; docs/cli.md): follow the hub's events. */
int th_cmd_monitor(int argc, char **argv);
void th_usage_monitor(FILE *out);

/* Absolute paths of the four files in a cert directory. */
struct th_cert_files {
    char ca_cert[PATH_MAX];     /* ca.pem, 0644 */
    char ca_key[PATH_MAX];      /* ca.key, 0600 */
    char server_cert[PATH_MAX]; /* server.pem, 0644 */
    char server_key[PATH_MAX];  /* server.key, 0600 */
};

/*
 * The default cert directory: $XDG_DATA_HOME/twinhub when XDG_DATA_HOME is an
 * absolute path, else ~/.local/share/twinhub. Returns false (after printing
 * why) when neither can be worked out or the result does not fit.
 */
bool th_certs_default_dir(char *buf, size_t size);

/*
 * Make sure `dir` (absolute, created 0700 with its parents if missing) holds
 * a usable development CA and a server certificate signed by it whose SANs
 * cover localhost, 127.0.0.1, ::1 and every entry of `names` (host names or
 * IP literals, duplicates allowed), valid for at least 30 more days.
 * Missing or unusable files are created; an existing CA is kept whenever it
 * is usable, so clients that already trust it keep working. Concurrent
 * callers on the same directory are serialised with a lock file.
 * The server pair is server.pem/server.key, or server-<variant>.pem/.key
 * when `variant` (a host name or IP literal: a hub's own bind address) is
 * not NULL, so hubs on different addresses keep certificates of their own.
 * Prints errors (and, with `verbose`, what it created) to stderr; returns
 * false on failure. Fills `out` on success.
 */
bool th_certs_ensure(const char *dir, const char *const *names, size_t nnames,
                     const char *variant, bool verbose, struct th_cert_files *out);

struct x509_st;
/* Add one X.509 extension given in openssl.cnf syntax (e.g. "critical,CA:FALSE") to `cert`,
 * with `issuer` as the context for key identifiers; false when OpenSSL refuses it. */
bool th_certs_add_ext(struct x509_st *cert, struct x509_st *issuer, int nid, const char *value);

/* ---- processes and files (proc.c), for serve, run and verify ---- */

/*
 * Block SIGCHLD, SIGINT, SIGTERM and SIGHUP (the previous mask into
 * *old_mask), ignore SIGPIPE, and return a non-blocking close-on-exec
 * signalfd for those signals. Returns -1 with errno set on failure; *blocked
 * says whether the signals were blocked (and SIGPIPE ignored) before that.
 */
int th_signals_open(sigset_t *old_mask, bool *blocked);

/*
 * In a child just forked by `parent`: restore `old_mask` and SIGPIPE, and
 * have the child get SIGTERM when the parent dies. False when the parent is
 * gone already; the child should then _exit.
 */
bool th_child_setup(const sigset_t *old_mask, pid_t parent);

/* "exited with code 3" / "was killed by signal 11 (Segmentation fault)" / "stopped (status N)". */
void th_describe_status(int status, char *buf, size_t size);

/*
 * Create directory `dir` and its missing parents with `mode`;
 * existing ones are left as they are. On failure returns false with errno
 * set and, when `failed` is non-NULL, the path that could not be created in
 * it. Does not check that an existing `dir` is a directory.
 */
bool th_make_dirs(const char *dir, mode_t mode, char *failed, size_t failed_size);

/*
 * Write `text` to `path` (created or truncated). On failure prints
 * "<who>: cannot write <path>: <reason>" and returns false.
 */
bool th_write_text_file(const char *who, const char *path, const char *text);

/* Remove `path` and everything below it, as far as possible; "" and NULL do nothing. */
void th_rmtree(const char *path);

/* The last `n` lines of a file (of its last 16 KB), for failure reports; NULL when it is
 * empty or unreadable. The caller frees. */
char *th_tail_lines(const char *path, int n);

#endif
