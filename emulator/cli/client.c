/*
 * client.c - the admin subcommands' way to the hub (client.h): finding the
 * running hub (docs/cli.md, "Finding the hub"), one connection as a service
 * principal (docs/control-api.md, "Who may use it") through the control-API
 * client (emulator/ctl/ctl_client.h), and one control call at a time, with
 * the messages and exit codes of docs/cli.md ("Exit status").
 *
 * One thread: the client drives libmosquitto against a monotonic deadline,
 * so every wait is bounded by --timeout and nothing sleeps.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mosquitto.h>

#include "client.h"
#include "connstr.h"
#include "ctl_client.h"
#include "hubinfo_file.h"

#define DEFAULT_HOST "127.0.0.1"
#define DEFAULT_MQTT_PORT 1883
#define TOKEN_LIFETIME_S 3600

/* ---- finding the hub -------------------------------------------------------------------- */

struct hub_target {
    struct th_ctl_target ctl;   /* where and as whom */
    char gateway[320];          /* GatewayHostName for device connection strings; "" unknown */
    char source[PATH_MAX + 64]; /* where we found it, for messages */
    long pid;                   /* serve's pid from the hub file, 0 when unknown */
    int tls_port;               /* the hub file's MQTT/TLS port, 0 when unknown or off */
};

/* How many running hubs on one cert dir we tell apart; more are listed as "and N more". */
#define MAX_HUBS 16

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
        snprintf(t->host, sizeof t->host, "%.*s", (int)(close - gw - 1), gw + 1);
        colon = close[1] == ':' ? close + 1 : NULL;
    } else {
        colon = strchr(gw, ':');
        snprintf(t->host, sizeof t->host, "%.*s", colon ? (int)(colon - gw) : (int)strlen(gw), gw);
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
    t->tls_port = info.mqtts_port;
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

/* "MQTT 127.0.0.1:1883  MQTT/TLS 127.0.0.1:8883  HTTPS 443" for one found hub. */
static void print_hub_line(const struct th_hubinfo_entry *e)
{
    char host[300];
    if (th_hubinfo_host(&e->info, host, sizeof host) != TH_OK)
        snprintf(host, sizeof host, "?");
    fprintf(stderr, "  pid %ld  hub %s", e->info.pid, e->info.hub_name);
    if (e->info.mqtt_port)
        fprintf(stderr, "  MQTT %s:%d", host, e->info.mqtt_port);
    if (e->info.mqtts_port)
        fprintf(stderr, "  MQTT/TLS %s:%d", host, e->info.mqtts_port);
    if (e->info.https_port)
        fprintf(stderr, "  HTTPS %s:%d", host, e->info.https_port);
    fprintf(stderr, "\n    --hub %s\n", e->path);
}

/*
 * The one running hub of a cert dir (its hubs directory, serve.c), or with
 * --port the one that listens there. Returns -1 with `path` set, or an exit
 * code after saying that none or several run and how to choose.
 */
static int find_running_hub(const struct th_args *a, const char *cert_dir, char *path,
                            size_t size)
{
    char dir[PATH_MAX + 8];
    if (snprintf(dir, sizeof dir, "%s/" TH_HUBINFO_DIR_NAME, cert_dir) >= (int)sizeof dir)
        return th_usage_error(a, "--cert-dir is too long");
    struct th_hubinfo_entry *hubs = calloc(MAX_HUBS, sizeof *hubs);
    if (!hubs) {
        fprintf(stderr, "twinhub: out of memory\n");
        return TH_EXIT_FAIL;
    }
    int n = th_hubinfo_find(dir, hubs, MAX_HUBS);
    int rc = -1;
    if (n < 0) {
        fprintf(stderr, "twinhub: cannot read %s: %s; pass --hub FILE\n", dir, strerror(errno));
        rc = TH_EXIT_FAIL;
        goto out;
    }
    int all = n;
    if (a->port && n > 1 && n <= MAX_HUBS) { /* --port picks the hub that listens there */
        int kept = 0;
        for (int i = 0; i < n; i++)
            kept += hubs[i].info.mqtt_port == a->port || hubs[i].info.mqtts_port == a->port;
        for (int i = 0, k = 0; kept > 0 && i < n; i++)
            if (hubs[i].info.mqtt_port == a->port || hubs[i].info.mqtts_port == a->port)
                hubs[k++] = hubs[i];
        n = kept; /* 0: the list below shows them all */
    }
    if (n == 1) {
        snprintf(path, size, "%s", hubs[0].path);
        goto out;
    }
    if (n == 0 && all == 0) {
        fprintf(stderr,
                "twinhub: no running hub found (no hub in %s); start one with `twinhub serve`, "
                "or pass --hub FILE or --connection-string\n",
                dir);
        rc = TH_EXIT_UNREACHABLE;
        goto out;
    }
    if (n == 0)
        fprintf(stderr, "twinhub: none of the %d running hubs in %s listens on port %d:\n", all,
                dir, a->port);
    else
        fprintf(stderr,
                "twinhub: %d hubs are running in %s; choose one with --hub FILE (or --port N, "
                "one of its MQTT ports):\n",
                n, dir);
    int listed = n ? n : all;
    for (int i = 0; i < listed && i < MAX_HUBS; i++)
        print_hub_line(&hubs[i]);
    if (listed > MAX_HUBS)
        fprintf(stderr, "  and %d more\n", listed - MAX_HUBS);
    rc = n == 0 ? TH_EXIT_UNREACHABLE : TH_EXIT_USAGE;
out:
    free(hubs);
    return rc;
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
        char dir[PATH_MAX], path[TH_HUBINFO_PATH_MAX];
        if (a->cert_dir)
            snprintf(dir, sizeof dir, "%s", a->cert_dir);
        else if (!th_certs_default_dir(dir, sizeof dir))
            return TH_EXIT_UNREACHABLE;
        if ((rc = find_running_hub(a, dir, path, sizeof path)) >= 0 ||
            (rc = read_hub_file(a, path, false, t)) >= 0)
            return rc;
    }
    if (a->conn_str) {
        char gw[320];
        if ((rc = parse_conn_str(a, a->conn_str, t, gw, sizeof gw)) >= 0)
            return rc;
        if (!a->hub_file) {
            snprintf(t->source, sizeof t->source, "--connection-string");
            /* A HostName that is an address (serve's default) is where the hub is. */
            unsigned char addr[16];
            bool is_addr = inet_pton(AF_INET, t->ctl.hub_name, addr) == 1 ||
                           inet_pton(AF_INET6, t->ctl.hub_name, addr) == 1;
            snprintf(t->ctl.host, sizeof t->ctl.host, "%s",
                     is_addr ? t->ctl.hub_name : DEFAULT_HOST);
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
        /* The hub file's TLS port is dialled with TLS and the hub's CA. */
        if (!a->ca_file)
            t->ctl.tls = t->tls_port == a->port && t->ctl.ca_file[0];
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
    return th_client_open_events(a, default_timeout_s, NULL, NULL, out);
}

int th_client_open_events(const struct th_args *a, double default_timeout_s,
                          void (*on_event)(void *arg, const char *topic, const void *payload,
                                           int len),
                          void *arg, struct th_client **out)
{
    static const char *const events_topic[] = {TH_EVENTS_TOPIC};
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
        .topics = on_event ? events_topic : NULL,
        .ntopics = on_event ? 1 : 0,
        .on_message = on_event,
        .arg = arg,
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

struct th_ctl_client *th_client_ctl(struct th_client *c)
{
    return c->ctl;
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
    return th_ctl_command(name, NULL, NULL);
}

bool th_command_ids(cJSON *cmd, const char *device_id, const char *module_id)
{
    return cmd && cJSON_AddStringToObject(cmd, "deviceId", device_id) &&
           (!module_id || cJSON_AddStringToObject(cmd, "moduleId", module_id));
}
