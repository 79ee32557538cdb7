/*
 * args.c - the command lines of the admin subcommands (client.h): the
 * global options every admin command accepts (docs/cli.md, "Global
 * options"), the subcommand's own options and positional arguments, JSON and
 * number arguments, and picking the action of a command with actions.
 * Nothing here exits: usage errors are printed and returned as
 * TH_EXIT_USAGE.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client.h"
#include "json.h"
#include "th_file.h"

/* Exports and imports can be far larger than one twin; the hub caps what it accepts. */
#define MAX_JSON_BYTES (64u * 1024 * 1024)
#define MAX_JSON_DEPTH 64

/* ---- command lines ---------------------------------------------------------------------- */

enum global_opt {
    G_HUB,
    G_CONN,
    G_HOST,
    G_PORT,
    G_CA,
    G_CERT_DIR,
    G_TIMEOUT,
    G_JSON,
    G_VERBOSE,
    G_HELP
};

static const struct th_optspec global_specs[] = {
    [G_HUB] = {"hub", 0, true},
    [G_CONN] = {"connection-string", 0, true},
    [G_HOST] = {"host", 0, true},
    [G_PORT] = {"port", 0, true},
    [G_CA] = {"ca-file", 0, true},
    [G_CERT_DIR] = {"cert-dir", 0, true},
    [G_TIMEOUT] = {"timeout", 0, true},
    [G_JSON] = {"json", 0, false},
    [G_VERBOSE] = {"verbose", 'v', false},
    [G_HELP] = {"help", 'h', false},
};
#define NGLOBAL (sizeof global_specs / sizeof global_specs[0])

void th_global_options_usage(FILE *out)
{
    fprintf(out,
            "\n"
            "global options (any admin command):\n"
            "  --json                    print the hub's answer as JSON (for scripts)\n"
            "  --timeout S               give up waiting for the hub after S seconds (default 10)\n"
            "  --hub FILE                the running hub's info file (twinhub serve --info-file)\n"
            "  --cert-dir DIR            find the hub in DIR/hubs/ (default: serve's cert dir)\n"
            "  --connection-string CS    a service connection string: HostName=...;\n"
            "                            SharedAccessKeyName=...;SharedAccessKey=...\n"
            "  --host H, --port N        where to connect (with --connection-string the\n"
            "                            default is its HostName if an address, else\n"
            "                            127.0.0.1, port 1883); --port N also picks the hub\n"
            "                            listening on N when several run\n"
            "  --ca-file FILE            connect with TLS, trusting FILE (default port then 8883)\n"
            "  -v, --verbose             show the control requests and responses on stderr\n"
            "  -h, --help                show the help of the command\n"
            "\n"
            "exit status: 0 done, 1 the hub refused the command (or another failure),\n"
            "2 bad command line or several hubs run, 3 no running hub could be reached.\n");
}

int th_usage_error(const struct th_args *a, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "twinhub %s: ", a->cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "; see %s\n", a->usage);
    return TH_EXIT_USAGE;
}

/* Which spec `arg` ("--name", "--name=v" or "-x") names; NULL when none. */
static const struct th_optspec *match_spec(const struct th_optspec *specs, size_t n,
                                           const char *arg, const char **inline_value)
{
    *inline_value = NULL;
    if (arg[1] != '-') { /* "-x" */
        for (size_t i = 0; i < n && specs[i].name; i++)
            if (specs[i].short_name && arg[1] == specs[i].short_name && arg[2] == '\0')
                return &specs[i];
        return NULL;
    }
    const char *name = arg + 2;
    size_t len = strcspn(name, "=");
    for (size_t i = 0; i < n && specs[i].name; i++) {
        if (strlen(specs[i].name) == len && !strncmp(specs[i].name, name, len)) {
            if (name[len] == '=')
                *inline_value = name + len + 1;
            return &specs[i];
        }
    }
    return NULL;
}

bool th_parse_long(const char *text, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || end == text || *end || v < min || v > max)
        return false;
    *out = v;
    return true;
}

static int set_global(struct th_args *a, enum global_opt g, const char *value)
{
    switch (g) {
    case G_HUB:
        a->hub_file = value;
        break;
    case G_CONN:
        a->conn_str = value;
        break;
    case G_HOST:
        a->host = value;
        break;
    case G_PORT: {
        long v;
        if (!th_parse_long(value, 1, 65535, &v))
            return th_usage_error(a, "--port '%s' is not a port number (1-65535)", value);
        a->port = (int)v;
        break;
    }
    case G_CA:
        a->ca_file = value;
        break;
    case G_CERT_DIR:
        a->cert_dir = value;
        break;
    case G_TIMEOUT: {
        char *end;
        errno = 0;
        double v = strtod(value, &end);
        if (errno || end == value || *end || !(v > 0) || v > 86400)
            return th_usage_error(a, "--timeout '%s' is not a number of seconds (0 < S <= 86400)",
                                  value);
        a->timeout_s = v;
        break;
    }
    case G_JSON:
        a->json = true;
        break;
    case G_VERBOSE:
        a->verbose = true;
        break;
    case G_HELP:
        a->help = true;
        break;
    }
    for (const char *p = value ? value : ""; *p; p++)
        if (*p == '\n' || *p == '\r')
            return th_usage_error(a, "--%s must not contain line breaks", global_specs[g].name);
    return -1;
}

int th_args_parse(struct th_args *a, const char *cmd, const char *usage,
                  const struct th_optspec *specs, int argc, char **argv)
{
    memset(a, 0, sizeof *a);
    a->cmd = cmd;
    a->usage = usage;
    a->timeout_s = -1;
    size_t nspecs = 0;
    while (specs && specs[nspecs].name)
        nspecs++;
    bool options_done = false;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (options_done || arg[0] != '-' || !strcmp(arg, "-")) {
            if (a->npos >= TH_CLI_MAX_ARGS)
                return th_usage_error(a, "too many arguments");
            a->pos[a->npos++] = arg;
            continue;
        }
        if (!strcmp(arg, "--")) {
            options_done = true;
            continue;
        }
        const char *value;
        const struct th_optspec *spec = match_spec(global_specs, NGLOBAL, arg, &value);
        bool global = spec != NULL;
        if (!spec)
            spec = match_spec(specs, nspecs, arg, &value);
        if (!spec) {
            int len = (int)strcspn(arg, "=");
            return th_usage_error(a, "unknown option %.*s", len, arg);
        }
        if (spec->has_arg && !value) {
            if (i + 1 >= argc)
                return th_usage_error(a, "--%s needs a value", spec->name);
            value = argv[++i];
        } else if (!spec->has_arg && value) {
            return th_usage_error(a, "--%s takes no value", spec->name);
        }
        if (global) {
            int rc = set_global(a, (enum global_opt)(spec - global_specs), value);
            if (rc >= 0)
                return rc;
            continue;
        }
        if (a->nopts >= TH_CLI_MAX_ARGS)
            return th_usage_error(a, "too many options");
        a->opts[a->nopts++] = (struct th_optval){spec->name, value};
    }
    return -1;
}

int th_global_option_span(const char *arg)
{
    const char *value;
    if (arg[0] != '-' || !arg[1])
        return 0;
    const struct th_optspec *spec = match_spec(global_specs, NGLOBAL, arg, &value);
    if (!spec || spec - global_specs == G_HELP)
        return 0;
    return spec->has_arg && !value ? 2 : 1;
}

const char *th_args_get(const struct th_args *a, const char *name)
{
    for (int i = a->nopts - 1; i >= 0; i--)
        if (!strcmp(a->opts[i].name, name))
            return a->opts[i].value;
    return NULL;
}

bool th_args_has(const struct th_args *a, const char *name)
{
    for (int i = 0; i < a->nopts; i++)
        if (!strcmp(a->opts[i].name, name))
            return true;
    return false;
}

cJSON *th_parse_json_text(const char *text, size_t len, const char *what, char *err, size_t errsize)
{
    struct th_error e = {0};
    cJSON *out = NULL;
    if (th_json_parse(text, len, MAX_JSON_BYTES, MAX_JSON_DEPTH, &out, &e) != TH_OK) {
        th_json_error_about(&e, what, err, errsize);
        return NULL;
    }
    /* Sent on as JSON text, the string would arrive cut at the NUL: refused like the hub does. */
    if (th_json_refuse_nul(out, what, &e) != TH_OK) {
        snprintf(err, errsize, "%s", e.message);
        cJSON_Delete(out);
        return NULL;
    }
    return out;
}

cJSON *th_read_json_file(const char *path, char *err, size_t errsize)
{
    bool is_stdin = !strcmp(path, "-");
    const char *what = is_stdin ? "standard input" : path;
    size_t len = 0;
    char *text = is_stdin ? th_file_read_fd(STDIN_FILENO, MAX_JSON_BYTES, &len)
                          : th_file_read(path, MAX_JSON_BYTES, &len);
    if (!text) {
        if (errno == EISDIR)
            snprintf(err, errsize, "cannot read %s: it is a directory", what);
        else
            snprintf(err, errsize, "cannot read %s: %s", what, strerror(errno));
        return NULL;
    }
    cJSON *out = th_parse_json_text(text, len, what, err, errsize);
    free(text);
    return out;
}

int th_arg_json(const struct th_args *a, const char *opt, const char *text, bool want_object,
                cJSON **out)
{
    char err[PATH_MAX + 320];
    const char *p = text;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    cJSON *v;
    bool inline_json = *p == '{' || *p == '[';
    if (inline_json)
        v = th_parse_json_text(text, strlen(text), opt, err, sizeof err);
    else
        v = th_read_json_file(text, err, sizeof err);
    if (!v)
        return th_usage_error(a, "%s%s%s; give JSON such as '{\"a\":1}' or a file that holds it",
                              inline_json ? "" : opt, inline_json ? "" : ": ", err);
    if (want_object && !cJSON_IsObject(v)) {
        cJSON_Delete(v);
        return th_usage_error(a, "%s must be a JSON object such as '{\"a\":1}'", opt);
    }
    *out = v;
    return -1;
}

int th_arg_number(const struct th_args *a, const char *opt, const char *text, double min,
                  double max, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end || v < min || v > max)
        return th_usage_error(a, "%s '%s' must be a number from %g to %g", opt, text, min, max);
    *out = v;
    return -1;
}

/* ---- commands with actions -------------------------------------------------------------- */

/* Whether `name` is one of the space-separated words in `list`. */
static bool word_in(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        size_t len = strcspn(p, " ");
        if (len == n && !strncmp(p, name, n))
            return true;
        p += len;
        while (*p == ' ')
            p++;
    }
    return false;
}

int th_run_command(const char *cmd, const struct th_action *actions, const struct th_optspec *specs,
                   void (*usage)(FILE *out), int argc, char **argv)
{
    struct th_args a;
    char help[64];
    snprintf(help, sizeof help, "twinhub help %s", cmd);
    int rc = th_args_parse(&a, cmd, help, specs, argc, argv);
    if (rc >= 0)
        return rc;
    if (a.help) {
        usage(stdout);
        return TH_EXIT_OK;
    }
    const struct th_action *act = NULL;
    int first = 0;
    if (!actions[0].name) {
        act = &actions[0];
    } else {
        if (a.npos == 0) {
            char list[256] = "";
            for (const struct th_action *x = actions; x->run; x++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s",
                         list[0] ? ", " : "", x->name);
            return th_usage_error(&a, "say what to do: %s", list);
        }
        for (const struct th_action *x = actions; x->run; x++)
            if (!strcmp(x->name, a.pos[0]))
                act = x;
        if (!act)
            return th_usage_error(&a, "unknown action '%s'", a.pos[0]);
        first = 1;
    }
    for (int i = 0; i < a.nopts; i++)
        if (!word_in(act->options, a.opts[i].name))
            return th_usage_error(&a, "--%s is not an option of `twinhub %s%s%s`", a.opts[i].name,
                                  cmd, act->name ? " " : "", act->name ? act->name : "");
    int nargs = a.npos - first;
    if (nargs < act->min_args || nargs > act->max_args) {
        if (nargs < act->min_args)
            return th_usage_error(&a, "missing argument: `twinhub %s%s%s %s`", cmd,
                                  act->name ? " " : "", act->name ? act->name : "", act->shape);
        return th_usage_error(&a, "unexpected argument '%s': `twinhub %s%s%s %s`",
                              a.pos[first + act->max_args], cmd, act->name ? " " : "",
                              act->name ? act->name : "", act->shape);
    }
    return act->run(&a, a.pos + first, nargs);
}
