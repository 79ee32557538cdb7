/*
 * client.h - what the admin subcommands (device, module, twin, method, c2d,
 * query, export, import, stats) share: their command lines and the global
 * options (args.c), finding the running hub and one control API call at a
 * time over one connection as a service principal (client.c, on the
 * control-API client of emulator/ctl; TH_CONTROL_TOPIC,
 * docs/control-api.md), and their output (output.c).
 *
 * Nothing here exits: every function returns, and the command returns the
 * exit code (TH_EXIT_* in cli.h) that the helpers hand back.
 */
#ifndef TH_CLI_CLIENT_H
#define TH_CLI_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include <cjson/cJSON.h>

#include "cli.h"

/* The hub could not be reached, or refused our connection (docs/cli.md, "Exit status"). */
#define TH_EXIT_UNREACHABLE 3

#define TH_CLI_DEFAULT_TIMEOUT_S 10.0
#define TH_CLI_MAX_ARGS 64 /* positional arguments plus options, per command line */

/* ---- command lines (args.c) ---- */

/* One option a subcommand accepts: "--name" (or "-x" when short is set). */
struct th_optspec {
    const char *name; /* without the leading "--" */
    char short_name;  /* 0 when none */
    bool has_arg;
};

/* One option as given. */
struct th_optval {
    const char *name;  /* the spec's name */
    const char *value; /* NULL for a flag */
};

/*
 * A parsed admin command line: the global options (hub location, --json,
 * --timeout) plus the subcommand's own positional arguments and options.
 */
struct th_args {
    const char *cmd;   /* "device", "module", ... (for messages) */
    const char *usage; /* one line: what to run for help, e.g. "twinhub help device" */
    /* global */
    const char *hub_file;
    const char *conn_str;
    const char *host;
    int port; /* 0 = from the hub file, else 1883 (8883 with --ca-file) */
    const char *ca_file;
    const char *cert_dir;
    double timeout_s; /* < 0 when not given */
    bool json;
    bool verbose;
    bool help;
    /* the subcommand's */
    const char *pos[TH_CLI_MAX_ARGS];
    int npos;
    struct th_optval opts[TH_CLI_MAX_ARGS];
    int nopts;
};

/*
 * Parse argv (argv[0] is the command name) against the global options and
 * `specs` (NULL-name terminated, may be NULL). Options and positional
 * arguments may be mixed; "--" ends the options; "--opt=value" works.
 * Returns -1 to go on, or TH_EXIT_USAGE after printing what to fix.
 */
int th_args_parse(struct th_args *a, const char *cmd, const char *usage,
                  const struct th_optspec *specs, int argc, char **argv);

/*
 * How many argv entries the global option at `arg` uses: 1 for a flag or
 * "--opt=value", 2 for "--opt value", 0 when `arg` is not a global option.
 * main.c uses it so that global options may come before the command.
 */
int th_global_option_span(const char *arg);

/* The last value of option `name`, or NULL when it was not given (or is a flag). */
const char *th_args_get(const struct th_args *a, const char *name);
/* Whether option `name` was given at all. */
bool th_args_has(const struct th_args *a, const char *name);

/* Prints "twinhub <cmd>: <message>; see <usage>" and returns TH_EXIT_USAGE. */
int th_usage_error(const struct th_args *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * A JSON argument: text that starts with '{' or '[' is parsed as JSON, "-"
 * reads standard input, anything else is a file name whose content is
 * parsed. With `want_object` the value must be an object. On success *out
 * owns the tree (cJSON_Delete). Returns -1 on success, or TH_EXIT_USAGE after
 * saying what is wrong with option `opt`.
 */
int th_arg_json(const struct th_args *a, const char *opt, const char *text, bool want_object,
                cJSON **out);

/* A number argument in [min, max]; -1 on success, else TH_EXIT_USAGE after a message. */
int th_arg_number(const struct th_args *a, const char *opt, const char *text, double min,
                  double max, double *out);

/*
 * Parse `len` bytes of `text` as JSON with the CLI's limits. On failure
 * returns NULL and puts "<what> is not valid JSON (error near byte N)" or
 * similar in err. The caller frees with cJSON_Delete.
 */
cJSON *th_parse_json_text(const char *text, size_t len, const char *what, char *err,
                          size_t errsize);

/*
 * Read a whole file, or standard input for "-", and parse it as JSON with the
 * CLI's limits. On failure returns NULL and puts a message ("cannot read X:
 * ..." or "X is not valid JSON: ...") in err. The caller frees with cJSON_Delete.
 */
cJSON *th_read_json_file(const char *path, char *err, size_t errsize);

/* A whole decimal number in [min, max], the whole of `text`; false (nothing stored) if not. */
bool th_parse_long(const char *text, long min, long max, long *out);

/* ---- commands with actions (args.c) ---- */

/*
 * One action of a command with actions ("device list", "device show", ...).
 * `options` lists the names (space-separated) of the command's options that
 * this action accepts. min_args/max_args count the positional arguments after
 * the action word; `shape` describes them ("DEVICE [MODULE]").
 * A command without action words has one entry with name NULL.
 */
struct th_action {
    const char *name;
    int (*run)(const struct th_args *a, const char *const *args, int nargs);
    const char *options;
    int min_args, max_args;
    const char *shape;
};

/*
 * Parse argv with `specs`, handle --help (usage to stdout, exit 0), pick the
 * action (the first positional argument) from `actions` (terminated by an
 * entry with run == NULL), check its options and argument count, and run it.
 * Returns the exit code.
 */
int th_run_command(const char *cmd, const struct th_action *actions, const struct th_optspec *specs,
                   void (*usage)(FILE *out), int argc, char **argv);

/* ---- the hub (client.c) ---- */

struct th_client;

/*
 * Find the hub from the global options in `a` (docs/cli.md, "Finding the
 * hub"), connect to it as a service principal, and subscribe to the control
 * response topic, all within the --timeout (or `default_timeout_s`).
 * On success *out is a connected client (free with th_client_close) and the
 * return is -1. Otherwise prints why and returns TH_EXIT_USAGE (bad options),
 * TH_EXIT_UNREACHABLE (no hub, refused, unreachable) or TH_EXIT_FAIL.
 */
int th_client_open(const struct th_args *a, double default_timeout_s, struct th_client **out);

/*
 * th_client_open that also subscribes to the hub's event stream
 * (TH_EVENTS_TOPIC): each event goes to on_event(arg, topic, payload, len),
 * called from inside the client's network calls (`twinhub monitor`).
 */
struct th_ctl_client;
int th_client_open_events(const struct th_args *a, double default_timeout_s,
                          void (*on_event)(void *arg, const char *topic, const void *payload,
                                           int len),
                          void *arg, struct th_client **out);
/* The control-API client under `c`, for a caller's own poll() loop; borrowed. */
struct th_ctl_client *th_client_ctl(struct th_client *c);

/* Disconnect and free; accepts NULL. */
void th_client_close(struct th_client *c);

/*
 * Send one control command and wait up to `timeout_s` for its response entry.
 * `command` is borrowed (a correlationData member is added to it).
 * Returns -1 with *data owning the entry's `data` (cJSON_Delete) on success;
 * on a control error prints "twinhub: <error> (status S, errorCode C)" and
 * returns TH_EXIT_FAIL (*data NULL); on a timeout or lost connection prints
 * why and returns TH_EXIT_FAIL or TH_EXIT_UNREACHABLE.
 */
int th_client_call(struct th_client *c, cJSON *command, double timeout_s, cJSON **data);

/* What a command may want to know about the hub it talked to. */
struct th_hub_info {
    char hub_name[256]; /* HostName of connection strings */
    char gateway[320];  /* GatewayHostName, "" when unknown */
};

/*
 * th_client_open + th_client_call + th_client_close for the commands that send
 * one command. Takes ownership of `command` on every path (NULL means out of
 * memory). The timeout is --timeout or TH_CLI_DEFAULT_TIMEOUT_S. Fills `info`
 * (may be NULL) once connected. Returns as th_client_call.
 */
int th_call_once(const struct th_args *a, cJSON *command, cJSON **data, struct th_hub_info *info);

/* A new command object {"command": name}, or NULL when out of memory. */
cJSON *th_command_new(const char *name);
/* Add deviceId and, when non-NULL, moduleId; false when out of memory. */
bool th_command_ids(cJSON *cmd, const char *device_id, const char *module_id);

/* ---- output (output.c) ---- */

/* How a command prints its result without --json; `ctx` is the command's own. */
typedef void (*th_human_fn)(const cJSON *data, const void *ctx);

/*
 * The end of a command that made its call: when it succeeded (rc < 0), print
 * `data` as JSON with --json, else through human(data, ctx), and return
 * TH_EXIT_OK; otherwise return rc. Frees data (may be NULL) on every path.
 */
int th_finish(const struct th_args *a, int rc, cJSON *data, th_human_fn human, const void *ctx);

/* Print `item` as pretty JSON (two-space indent) and a newline to stdout / `out`. */
void th_print_json(const cJSON *item);
void th_print_json_to(FILE *out, const cJSON *item);

/* "Out of memory" for commands; returns TH_EXIT_FAIL. */
int th_oom(void);

/*
 * A simple table: collect rows of strings, then print with columns padded to
 * the widest cell. Cells are copied.
 */
struct th_table;
struct th_table *th_table_new(int ncols, const char *const *headers);
bool th_table_row(struct th_table *t, const char *const *cells);
void th_table_print(const struct th_table *t, FILE *out);
void th_table_free(struct th_table *t);

/* A string member, or `fallback` when it is absent, null or not a string. */
const char *th_str(const cJSON *obj, const char *key, const char *fallback);
/* A number member, or 0 when it is absent or not a number. */
double th_num(const cJSON *obj, const char *key);

/* ---- subcommands (admin.c, admin_twin.c, admin_query.c) ---- */

int th_cmd_device(int argc, char **argv);
void th_usage_device(FILE *out);
int th_cmd_module(int argc, char **argv);
void th_usage_module(FILE *out);
int th_cmd_twin(int argc, char **argv);
void th_usage_twin(FILE *out);
int th_cmd_method(int argc, char **argv);
void th_usage_method(FILE *out);
int th_cmd_c2d(int argc, char **argv);
void th_usage_c2d(FILE *out);
int th_cmd_query(int argc, char **argv);
void th_usage_query(FILE *out);
int th_cmd_export(int argc, char **argv);
void th_usage_export(FILE *out);
int th_cmd_import(int argc, char **argv);
void th_usage_import(FILE *out);
int th_cmd_stats(int argc, char **argv);
void th_usage_stats(FILE *out);
/* dps.c: the provisioning service */
int th_cmd_dps(int argc, char **argv);
void th_usage_dps(FILE *out);

int th_cmd_job(int argc, char **argv); /* admin_jobs.c */
void th_usage_job(FILE *out);

/* The global options' help text, shared by every admin usage. */
void th_global_options_usage(FILE *out);

#endif
