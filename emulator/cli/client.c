/*
 * client.c - the plumbing every admin subcommand shares (client.h): command
 * line parsing with global options, finding the running hub (docs/cli.md,
 * "Finding the hub"), one connection as a service principal (docs/control-api.md,
 * "Who may use it") through the control-API client (emulator/ctl/ctl_client.h),
 * one control call at a time, and table/JSON output.
 *
 * One thread: the client drives libmosquitto against a monotonic deadline,
 * so every wait is bounded by --timeout and nothing sleeps.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <mosquitto.h>

#include "client.h"
#include "connstr.h"
#include "ctl_client.h"
#include "hubinfo_file.h"
#include "json.h"
#include "th_file.h"

#define DEFAULT_HOST "127.0.0.1"
#define DEFAULT_MQTT_PORT 1883
#define TOKEN_LIFETIME_S 3600
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
            "  --cert-dir DIR            find the hub in DIR/hub.json (default: serve's cert dir)\n"
            "  --connection-string CS    a service connection string: HostName=...;\n"
            "                            SharedAccessKeyName=...;SharedAccessKey=...\n"
            "  --host H, --port N        where to connect (with --connection-string the\n"
            "                            default is 127.0.0.1 port 1883)\n"
            "  --ca-file FILE            connect with TLS, trusting FILE (default port then 8883)\n"
            "  -v, --verbose             show the control requests and responses on stderr\n"
            "  -h, --help                show the help of the command\n"
            "\n"
            "exit status: 0 done, 1 the hub refused the command (or another failure),\n"
            "2 bad command line, 3 no running hub could be reached.\n");
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
        /* The core says "JSON body is not valid JSON (error near byte 2); send ...": keep
         * the fact, and name our input instead of "JSON body". */
        const char *m = e.message;
        if (!strncmp(m, "JSON body ", 10))
            snprintf(err, errsize, "%s %.*s", what, (int)strcspn(m + 10, ";"), m + 10);
        else if (!strncmp(m, "JSON ", 5))
            snprintf(err, errsize, "%s: %.*s", what, (int)strcspn(m, ";"), m);
        else
            snprintf(err, errsize, "%s is not valid JSON: %s", what,
                     m[0] ? m : th_result_str(e.result));
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

/* ---- finding the hub -------------------------------------------------------------------- */

struct hub_target {
    struct th_ctl_target ctl;   /* where and as whom */
    char gateway[320];          /* GatewayHostName for device connection strings; "" unknown */
    char source[PATH_MAX + 64]; /* where we found it, for messages */
    long pid;                   /* serve's pid from the hub file, 0 when unknown */
};

/* Copy `len` bytes of `src` into `dst`; false when it does not fit. */
static bool copy_n(char *dst, size_t size, const char *src, size_t len)
{
    if (len >= size)
        return false;
    memcpy(dst, src, len);
    dst[len] = '\0';
    return true;
}

/*
 * Take the hub name, policy and key from a service connection string
 * (core/connstr.h); its GatewayHostName, when present, goes to `gateway`.
 * Returns -1 or TH_EXIT_USAGE.
 */
static int parse_conn_str(const struct th_args *a, const char *text, struct hub_target *t,
                          char *gateway, size_t gwsize)
{
    struct th_connstr cs;
    struct th_error err = {0};
    if (th_connstr_parse(text, &cs, &err) != TH_OK)
        return th_usage_error(a, "--connection-string: %s", err.message);
    if (!cs.host_name[0] || !cs.key_name[0] || !cs.key[0])
        return th_usage_error(a, "--connection-string needs HostName, SharedAccessKeyName and "
                                 "SharedAccessKey (a service connection string, such as the one "
                                 "`twinhub serve` prints)");
    snprintf(t->ctl.hub_name, sizeof t->ctl.hub_name, "%s", cs.host_name);
    snprintf(t->ctl.policy, sizeof t->ctl.policy, "%s", cs.key_name);
    snprintf(t->ctl.key, sizeof t->ctl.key, "%s", cs.key);
    snprintf(gateway, gwsize, "%s", cs.gateway);
    return -1;
}

/* Split "host[:port]" or "[v6]:port" from a GatewayHostName into where we connect. */
static void apply_gateway(struct th_ctl_target *t, const char *gw)
{
    const char *colon = NULL;
    if (gw[0] == '[') {
        const char *close = strchr(gw, ']');
        if (!close)
            return;
        copy_n(t->host, sizeof t->host, gw + 1, (size_t)(close - gw - 1));
        colon = close[1] == ':' ? close + 1 : NULL;
    } else {
        colon = strchr(gw, ':');
        copy_n(t->host, sizeof t->host, gw, colon ? (size_t)(colon - gw) : strlen(gw));
    }
    long port;
    if (colon && th_parse_long(colon + 1, 1, 65535, &port))
        t->port = (int)port;
}

/* Fill t from a hub info file. Returns -1, or an exit code after a message. */
static int read_hub_file(const struct th_args *a, const char *path, bool explicit_file,
                         struct hub_target *t)
{
    char err[PATH_MAX + 320];
    struct th_hubinfo info;
    th_result r = th_hubinfo_load(path, &info, err, sizeof err);
    if (r == TH_ERR_NOT_FOUND) {
        if (explicit_file)
            fprintf(stderr,
                    "twinhub: no hub info file at %s: is the hub running? Start it with "
                    "`twinhub serve --info-file %s`, or pass --hub with the right file\n",
                    path, path);
        else
            fprintf(stderr,
                    "twinhub: no running hub found (%s does not exist); start one with "
                    "`twinhub serve`, or pass --hub FILE or --connection-string\n",
                    path);
        return TH_EXIT_UNREACHABLE;
    }
    if (r == TH_ERR_FORMAT) {
        fprintf(stderr, "twinhub: %s; pass --hub with the info file of a running hub\n", err);
        return TH_EXIT_FAIL;
    }
    struct th_error e = {0};
    if (r == TH_OK && th_ctl_target_from_hubinfo(&info, &t->ctl, &e) != TH_OK)
        snprintf(err, sizeof err, "%s: %s", path, e.message);
    if (r != TH_OK || e.result != TH_OK) {
        fprintf(stderr, "twinhub: %s\n", err);
        return TH_EXIT_FAIL;
    }
    snprintf(t->source, sizeof t->source, "hub file %s", path);
    t->pid = info.pid;
    /* GatewayHostName as serve prints it, for device connection strings. */
    if (th_connstr_gateway(t->ctl.host, info.mqtts_port, t->gateway, sizeof t->gateway) != TH_OK)
        t->gateway[0] = '\0';
    if (!a->conn_str) {
        if (!info.service_cs[0]) {
            fprintf(stderr,
                    "twinhub: the hub in %s has no development service connection string "
                    "(it runs with --no-dev-identities); pass --connection-string with a "
                    "policy from its registry\n",
                    path);
            return TH_EXIT_USAGE;
        }
        char gw[320];
        int rc = parse_conn_str(a, info.service_cs, t, gw, sizeof gw);
        if (rc >= 0)
            return rc;
        /* The token's sr is the hub name serve runs with. */
        snprintf(t->ctl.hub_name, sizeof t->ctl.hub_name, "%s", info.hub_name);
    }
    return -1;
}

/* Work out where and as whom to connect (docs/cli.md, "Finding the hub"). */
static int locate_hub(const struct th_args *a, struct hub_target *t)
{
    memset(t, 0, sizeof *t);
    int rc;
    if (a->hub_file) {
        if ((rc = read_hub_file(a, a->hub_file, true, t)) >= 0)
            return rc;
    } else if (!a->conn_str) {
        char dir[PATH_MAX], path[PATH_MAX + 16];
        if (a->cert_dir)
            snprintf(dir, sizeof dir, "%s", a->cert_dir);
        else if (!th_certs_default_dir(dir, sizeof dir))
            return TH_EXIT_UNREACHABLE;
        if (snprintf(path, sizeof path, "%s/%s", dir, TH_HUBINFO_FILE_NAME) >= (int)sizeof path)
            return th_usage_error(a, "--cert-dir is too long");
        if ((rc = read_hub_file(a, path, false, t)) >= 0)
            return rc;
    }
    if (a->conn_str) {
        char gw[320];
        if ((rc = parse_conn_str(a, a->conn_str, t, gw, sizeof gw)) >= 0)
            return rc;
        if (!a->hub_file) {
            snprintf(t->source, sizeof t->source, "--connection-string");
            snprintf(t->ctl.host, sizeof t->ctl.host, "%s", DEFAULT_HOST);
            t->ctl.port = a->ca_file ? TH_MQTTS_DEFAULT_PORT : DEFAULT_MQTT_PORT;
            if (gw[0]) {
                int before = t->ctl.port;
                apply_gateway(&t->ctl, gw);
                /* A GatewayHostName port is the TLS port; without a CA we use plain MQTT. */
                if (!a->ca_file)
                    t->ctl.port = before;
            }
        }
    }
    if (a->host)
        snprintf(t->ctl.host, sizeof t->ctl.host, "%s", a->host);
    if (a->ca_file) {
        t->ctl.tls = true;
        snprintf(t->ctl.ca_file, sizeof t->ctl.ca_file, "%s", a->ca_file);
        if (access(a->ca_file, R_OK) != 0)
            return th_usage_error(a, "--ca-file %s: %s", a->ca_file, strerror(errno));
    }
    if (a->port) {
        t->ctl.port = a->port;
        if (!a->ca_file)
            t->ctl.tls = false;
    }
    if (t->ctl.tls && !t->ctl.ca_file[0])
        return th_usage_error(a, "the hub only listens with TLS; pass --ca-file with its CA");
    return -1;
}

/* ---- the connection --------------------------------------------------------------------- */

struct th_client {
    struct th_ctl_client *ctl;
    struct hub_target t;
    char client_id[64]; /* also the prefix of our correlationData */
    double timeout_s;
};

/* Append the hint that tells a user how to get a hub when the one we found is gone. */
static void unreachable_hint(const struct th_client *c)
{
    if (c->t.pid > 0 && kill((pid_t)c->t.pid, 0) != 0 && errno == ESRCH)
        fprintf(stderr,
                "twinhub: the hub in %s (pid %ld) is not running any more; start "
                "`twinhub serve`, or pass --hub FILE\n",
                c->t.source, c->t.pid);
    else
        fprintf(stderr, "twinhub: is the hub running? Start it with `twinhub serve`, or pass "
                        "--hub FILE or --connection-string with --host/--port\n");
}

static const char *connack_text(int rc)
{
    switch (rc) {
    case 1:
        return "unacceptable protocol version";
    case 2:
        return "client id rejected";
    case 3:
        return "server unavailable";
    case 4:
        return "bad user name or password";
    case 5:
        return "not authorized";
    default:
        return "refused";
    }
}

/* Say why th_ctl_client_connect failed; returns the exit code. */
static int connect_failed(const struct th_client *c, const struct th_ctl_failure *why)
{
    const struct th_ctl_target *t = &c->t.ctl;
    const char *rc_text = why->rc != MOSQ_ERR_SUCCESS ? mosquitto_strerror(why->rc) : "";
    const char *sep = why->rc != MOSQ_ERR_SUCCESS ? ": " : "";
    switch (why->what) {
    case TH_CTL_FAIL_KEY:
        fprintf(stderr,
                "twinhub: the SharedAccessKey of policy '%s' (from %s) is not valid base64; "
                "check the connection string\n",
                t->policy, c->t.source[0] ? c->t.source : "the connection string");
        return TH_EXIT_USAGE;
    case TH_CTL_FAIL_CA:
        fprintf(stderr, "twinhub: cannot use CA file %s: %s\n", t->ca_file, rc_text);
        return TH_EXIT_FAIL;
    case TH_CTL_FAIL_CONNECT:
        fprintf(stderr, "twinhub: cannot connect to the hub at %s port %d (%s): %s\n", t->host,
                t->port, c->t.source, why->rc == MOSQ_ERR_ERRNO ? strerror(why->err) : rc_text);
        unreachable_hint(c);
        return TH_EXIT_UNREACHABLE;
    case TH_CTL_FAIL_REFUSED:
        fprintf(stderr,
                "twinhub: the hub at %s port %d refused the service connection (%s); "
                "check the connection string's policy and key (%s)\n",
                t->host, t->port, connack_text(why->rc), c->t.source);
        return TH_EXIT_UNREACHABLE;
    case TH_CTL_FAIL_NO_CONNACK:
        fprintf(stderr, "twinhub: no MQTT answer from %s port %d (%s) within %g s%s%s\n", t->host,
                t->port, c->t.source, c->timeout_s, sep, rc_text);
        unreachable_hint(c);
        return TH_EXIT_UNREACHABLE;
    case TH_CTL_FAIL_SUBSCRIBE:
    case TH_CTL_FAIL_NONE:
        break;
    }
    fprintf(stderr,
            "twinhub: the hub %s the subscription to %s%s%s; the policy '%s' may lack "
            "service rights\n",
            why->subacked ? "refused" : "did not confirm", TH_CONTROL_RESPONSE_TOPIC, sep, rc_text,
            t->policy);
    return TH_EXIT_FAIL;
}

int th_client_open(const struct th_args *a, double default_timeout_s, struct th_client **out)
{
    *out = NULL;
    struct th_client *c = calloc(1, sizeof *c);
    if (!c)
        return th_oom();
    int rc = locate_hub(a, &c->t);
    if (rc >= 0) {
        free(c);
        return rc;
    }
    c->timeout_s = a->timeout_s > 0 ? a->timeout_s : default_timeout_s;
    snprintf(c->client_id, sizeof c->client_id, "twinhub-cli-%ld", (long)getpid());
    struct th_ctl_opts o = {
        .client_id = c->client_id,
        .corr_prefix = c->client_id,
        .token_lifetime_s = TOKEN_LIFETIME_S,
        .trace_send = a->verbose ? "twinhub: -> " : NULL,
        .trace_recv = a->verbose ? "twinhub: <- " : NULL,
    };
    c->ctl = th_ctl_client_new(&o);
    if (!c->ctl) {
        free(c);
        return th_oom();
    }
    const struct th_ctl_target *t = &c->t.ctl;
    if (a->verbose)
        fprintf(stderr, "twinhub: connecting to %s port %d (%s) as %s, policy %s, hub %s (%s)\n",
                t->host, t->port, t->tls ? "TLS" : "plain MQTT", c->client_id, t->policy,
                t->hub_name, c->t.source);
    struct th_ctl_failure why;
    if (!th_ctl_client_connect(c->ctl, t, (int)(c->timeout_s * 1000), &why)) {
        rc = connect_failed(c, &why);
        th_client_close(c);
        return rc;
    }
    *out = c;
    return -1;
}

void th_client_close(struct th_client *c)
{
    if (!c)
        return;
    th_ctl_client_free(c->ctl);
    free(c);
}

int th_client_call(struct th_client *c, cJSON *command, double timeout_s, cJSON **data)
{
    *data = NULL;
    const char *name = th_str(command, "command", "?");
    cJSON *entry = NULL;
    int rc = th_ctl_client_call(c->ctl, command, (int)(timeout_s * 1000), &entry);
    if (!entry) {
        if (rc == MOSQ_ERR_NOMEM)
            return th_oom();
        if (rc != MOSQ_ERR_SUCCESS) {
            fprintf(stderr, "twinhub: lost the connection to the hub during %s: %s\n", name,
                    mosquitto_strerror(rc));
            unreachable_hint(c);
            return TH_EXIT_UNREACHABLE;
        }
        fprintf(stderr,
                "twinhub: no answer to %s from the hub within %g s; pass --timeout S to wait "
                "longer\n",
                name, timeout_s);
        return TH_EXIT_FAIL;
    }
    int status = 0, code = 0;
    const char *error = th_ctl_entry_error(entry, &status, &code);
    if (error) {
        fprintf(stderr, "twinhub: %s (status %d, errorCode %d)\n", error, status, code);
        cJSON_Delete(entry);
        return TH_EXIT_FAIL;
    }
    cJSON *d = cJSON_DetachItemFromObjectCaseSensitive(entry, "data");
    cJSON_Delete(entry);
    *data = d ? d : cJSON_CreateNull();
    if (!*data)
        return th_oom();
    return -1;
}

int th_call_once(const struct th_args *a, cJSON *command, cJSON **data, struct th_hub_info *info)
{
    *data = NULL;
    if (!command)
        return th_oom();
    struct th_client *c;
    int rc = th_client_open(a, TH_CLI_DEFAULT_TIMEOUT_S, &c);
    if (rc < 0) {
        if (info) {
            snprintf(info->hub_name, sizeof info->hub_name, "%s", c->t.ctl.hub_name);
            snprintf(info->gateway, sizeof info->gateway, "%s", c->t.gateway);
        }
        rc = th_client_call(c, command, c->timeout_s, data);
        th_client_close(c);
    }
    cJSON_Delete(command);
    return rc;
}

cJSON *th_command_new(const char *name)
{
    cJSON *c = cJSON_CreateObject();
    if (c && !cJSON_AddStringToObject(c, "command", name)) {
        cJSON_Delete(c);
        return NULL;
    }
    return c;
}

bool th_command_ids(cJSON *cmd, const char *device_id, const char *module_id)
{
    return cmd && cJSON_AddStringToObject(cmd, "deviceId", device_id) &&
           (!module_id || cJSON_AddStringToObject(cmd, "moduleId", module_id));
}

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

/* ---- output ----------------------------------------------------------------------------- */

void th_print_json_to(FILE *out, const cJSON *item)
{
    char *text = cJSON_Print(item);
    if (!text) {
        fprintf(stderr, "twinhub: out of memory printing JSON\n");
        return;
    }
    /*
     * cJSON indents with tabs and puts a tab after each colon. JSON strings
     * never hold a raw tab, so every tab is layout: two spaces at the start
     * of a line, one space elsewhere.
     */
    bool line_start = true;
    for (const char *p = text; *p; p++) {
        /* An empty object or array reads better as "{}" than spread over two lines. */
        if ((*p == '{' || *p == '[') && p[1] == '\n') {
            const char *q = p + 2;
            while (*q == '\t')
                q++;
            if (*q == (*p == '{' ? '}' : ']')) {
                fputs(*p == '{' ? "{}" : "[]", out);
                p = q;
                line_start = false;
                continue;
            }
        }
        if (*p == '\t') {
            fputs(line_start ? "  " : " ", out);
            continue;
        }
        line_start = *p == '\n';
        fputc(*p, out);
    }
    fputc('\n', out);
    cJSON_free(text);
}

void th_print_json(const cJSON *item)
{
    th_print_json_to(stdout, item);
}

int th_finish(const struct th_args *a, int rc, cJSON *data, th_human_fn human, const void *ctx)
{
    if (rc < 0) {
        if (a->json)
            th_print_json(data);
        else
            human(data, ctx);
        rc = TH_EXIT_OK;
    }
    cJSON_Delete(data);
    return rc;
}

int th_oom(void)
{
    fprintf(stderr, "twinhub: out of memory\n");
    return TH_EXIT_FAIL;
}

const char *th_str(const cJSON *obj, const char *key, const char *fallback)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) ? v->valuestring : fallback;
}

double th_num(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

struct th_table {
    int ncols;
    size_t nrows, cap;
    char **cells; /* nrows * ncols, row 0 is the header */
};

struct th_table *th_table_new(int ncols, const char *const *headers)
{
    struct th_table *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->ncols = ncols;
    if (!th_table_row(t, headers)) {
        th_table_free(t);
        return NULL;
    }
    return t;
}

bool th_table_row(struct th_table *t, const char *const *cells)
{
    if (t->nrows == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        char **nc = realloc(t->cells, cap * (size_t)t->ncols * sizeof *nc);
        if (!nc)
            return false;
        t->cells = nc;
        t->cap = cap;
    }
    char **row = t->cells + t->nrows * (size_t)t->ncols;
    for (int i = 0; i < t->ncols; i++) {
        row[i] = strdup(cells[i] ? cells[i] : "");
        if (!row[i]) {
            for (int j = 0; j < i; j++)
                free(row[j]);
            return false;
        }
    }
    t->nrows++;
    return true;
}

void th_table_print(const struct th_table *t, FILE *out)
{
    size_t width[32] = {0};
    int ncols = t->ncols < 32 ? t->ncols : 32;
    for (size_t r = 0; r < t->nrows; r++)
        for (int i = 0; i < ncols; i++) {
            size_t w = strlen(t->cells[r * (size_t)t->ncols + (size_t)i]);
            if (w > width[i])
                width[i] = w;
        }
    for (size_t r = 0; r < t->nrows; r++) {
        for (int i = 0; i < ncols; i++) {
            const char *cell = t->cells[r * (size_t)t->ncols + (size_t)i];
            if (i == ncols - 1)
                fprintf(out, "%s\n", cell);
            else
                fprintf(out, "%-*s  ", (int)width[i], cell);
        }
    }
}

void th_table_free(struct th_table *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->nrows * (size_t)t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    free(t);
}
