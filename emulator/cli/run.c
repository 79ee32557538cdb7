/*
 * run.c - `twinhub run FILE...` (docs/scenarios.md, "Running"): for each
 * scenario, start a hub (`twinhub serve` from this same binary on a loopback
 * address of its own with the standard ports, with a state directory so that
 * restartHub keeps state)
 * or use a running one (--hub), seed the registry, start the agent with
 * its connection string, run the steps through the control API, and decide
 * the expectations with the engine of emulator/scenario/ fed by the live
 * event stream ($twinhub/events/#). Prints one line per step, writes JUnit
 * and the recording, stops everything. The hub process is run_hub.c, the
 * agent's run_agent.c, and the commands each step sends are built by
 * emulator/scenario/scn_actions.c.
 *
 * One thread and one poll() loop: the control connection (the control-API
 * client of emulator/ctl, driven through this loop), a signalfd for SIGCHLD
 * (agent, hub) and SIGINT/SIGTERM, and serve's stdout until it says
 * "twinhub: ready".
 * Nothing sleeps: every wait is for an event or a deadline.
 *
 * Time bounds are measured on the hub's clock (the records' `time`), the
 * same clock a recording carries, so `twinhub verify` of the recording
 * reaches the same verdicts. When the wall clock passes a step's deadline
 * the runner sends a cheap control command as a barrier: its answer comes
 * after every event the hub emitted before it, so the step is then decided.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <mosquitto.h>

#include "cli.h"
#include "connstr.h"
#include "ctl_client.h"
#include "dps.h" /* TH_DPS_DEFAULT_ID_SCOPE: hub.idScope of the runner's own hub */
#include "json.h"
#include "registry.h"
#include "run.h"
#include "scenario.h"
#include "util.h"

#define CONNECT_TIMEOUT_MS 10000
#define CALL_TIMEOUT_MS 15000
#define MARK_TIMEOUT_MS 10000
#define MAX_JSON_BYTES (64u * 1024 * 1024)
#define TOKEN_LIFETIME_S (24 * 3600)

void th_usage_run(FILE *out)
{
    fprintf(
        out,
        "usage: twinhub run FILE... [--agent CMD] [--hub FILE] [--junit FILE]\n"
        "                   [--record FILE] [--report-dir DIR] [--time-scale F]\n"
        "                   [--var NAME=VALUE]... [-v]\n"
        "\n"
        "Run scenario files against an agent. Without --hub each scenario gets its own hub\n"
        "on a loopback address of its own (127.84.72.N) with the standard ports 8883, 1883\n"
        "and, when allowed, 443; the agent is started with its connection string\n"
        "(HostName=that address) in TWINHUB_CONNECTION_STRING; one line is printed per step.\n"
        "\n"
        "options:\n"
        "  --agent CMD       the agent's command line (overrides the scenario's agent.command)\n"
        "  --hub FILE        use the running hub described by FILE (serve --info-file)\n"
        "  --junit FILE      write a JUnit XML report (one testsuite per scenario)\n"
        "  --record FILE     write the hub's recording, with one mark per step (truncated\n"
        "                    first), for `twinhub verify`\n"
        "  --report-dir DIR  where agent.log goes (default: a temporary directory, kept\n"
        "                    when a step fails)\n"
        "  --time-scale F    multiply every within, during and sleep bound by F (0.001 to\n"
        "                    1000); the agent gets F in TWINHUB_TIME_SCALE\n"
        "  --var NAME=VALUE  give the scenario variable NAME this value (repeatable)\n"
        "  -v, --verbose     show the hub's output, every event and the timings\n"
        "  -h, --help        show this text\n"
        "\n"
        "exit status: 0 every step passed, 1 a step failed, 2 a scenario is invalid,\n"
        "3 the hub could not be started. See docs/scenarios.md.\n");
}

/* ---- signals and children ---- */

static bool setup_signals(struct run *r)
{
    bool blocked;
    r->sig_fd = th_signals_open(&r->old_mask, &blocked);
    return r->sig_fd >= 0;
}

static void reap(struct run *r)
{
    int status;
    if (r->agent.pid > 0 && waitpid(r->agent.pid, &status, WNOHANG) == r->agent.pid) {
        r->agent.pid = 0;
        r->agent.exited = true;
        r->agent.status = status;
    }
    if (r->hub.pid > 0 && waitpid(r->hub.pid, &status, WNOHANG) == r->hub.pid) {
        r->hub.pid = 0;
        r->hub.status = status;
    }
}

static void read_signals(struct run *r)
{
    struct signalfd_siginfo si;
    while (read(r->sig_fd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo != SIGCHLD)
            r->interrupted = true;
    }
    reap(r);
}

/* ---- the event loop ---- */

static void drain_hub_output(struct run *r)
{
    struct hub *h = &r->hub;
    while (h->out_fd >= 0) {
        char buf[4096];
        ssize_t n = read(h->out_fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            close(h->out_fd);
            h->out_fd = -1;
            return;
        }
        if (r->o.verbose)
            fwrite(buf, 1, (size_t)n, stderr);
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] == '\n') {
                h->out[h->outlen] = '\0';
                if (!strcmp(h->out, "twinhub: ready"))
                    h->ready = true;
                h->outlen = 0;
            } else if (h->outlen < sizeof h->out - 1) {
                h->out[h->outlen++] = buf[i];
            }
        }
    }
}

/* Wait up to timeout_ms for anything (network, signals, hub output) and handle it. */
void th_run_pump(struct run *r, int timeout_ms)
{
    struct pollfd fds[3];
    nfds_t n = 0;
    int mi = -1, hi = -1;
    fds[n++] = (struct pollfd){.fd = r->sig_fd, .events = POLLIN};
    int sock = th_ctl_client_socket(r->ctl);
    if (sock >= 0) {
        mi = (int)n;
        fds[n++] = (struct pollfd){.fd = sock, .events = th_ctl_client_events(r->ctl)};
    }
    if (r->hub.out_fd >= 0) {
        hi = (int)n;
        fds[n++] = (struct pollfd){.fd = r->hub.out_fd, .events = POLLIN};
    }
    if (timeout_ms < 0)
        timeout_ms = 0;
    int rc = poll(fds, n, timeout_ms);
    if (rc < 0 && errno != EINTR)
        return;
    if (fds[0].revents)
        read_signals(r);
    if (mi >= 0)
        th_ctl_client_io(r->ctl, fds[mi].revents);
    if (hi >= 0 && fds[hi].revents)
        drain_hub_output(r);
    th_ctl_client_flush(r->ctl);
}

/* ---- the control connection ---- */

static void ctl_pump(void *arg, int timeout_ms)
{
    th_run_pump(arg, timeout_ms);
}

static bool ctl_stop(void *arg)
{
    const struct run *r = arg;
    return r->interrupted;
}

/* An event record from $twinhub/events/...: the recording, -v, and the engine. */
static void on_event(void *arg, const char *topic, const void *payload, int len)
{
    struct run *r = arg;
    if (strncmp(topic, TH_EVENTS_PREFIX, strlen(TH_EVENTS_PREFIX)) != 0)
        return;
    if (r->own_record) {
        fwrite(payload, 1, (size_t)len, r->own_record);
        fputc('\n', r->own_record);
        fflush(r->own_record);
    }
    if (r->o.verbose)
        fprintf(stderr, "  | %.*s\n", len, (const char *)payload);
    cJSON *rec = NULL;
    struct th_error e = {0};
    if (r->ss &&
        th_json_parse(payload, (size_t)len, MAX_JSON_BYTES, TH_SCN_MAX_DEPTH, &rec, &e) == TH_OK &&
        th_scn_session_feed(r->ss, rec, &e) != TH_OK && r->o.verbose)
        fprintf(stderr, "twinhub run: ignored an event: %s\n", e.message);
}

static void ctl_close(struct run *r)
{
    th_ctl_client_free(r->ctl);
    r->ctl = NULL;
}

/* Connect as the service principal and subscribe to responses and events. */
static bool ctl_open(struct run *r)
{
    const struct hub *h = &r->hub;
    ctl_close(r);
    static const char *const events[] = {TH_EVENTS_TOPIC};
    snprintf(r->ctl_id, sizeof r->ctl_id, "twinhub-run-%ld", (long)getpid());
    struct th_ctl_opts o = {
        .client_id = r->ctl_id,
        .corr_prefix = "run",
        .token_lifetime_s = TOKEN_LIFETIME_S,
        .topics = events,
        .ntopics = 1,
        .on_message = on_event,
        .pump = ctl_pump,
        .stop = ctl_stop,
        .arg = r,
        .trace_send = r->o.verbose ? "  -> " : NULL,
    };
    struct th_ctl_target t = {.port = h->mqtt_port ? h->mqtt_port : h->mqtts_port,
                              .tls = !h->mqtt_port};
    snprintf(t.hub_name, sizeof t.hub_name, "%s", h->hub_name);
    snprintf(t.policy, sizeof t.policy, "%s", h->policy);
    snprintf(t.key, sizeof t.key, "%s", h->key);
    snprintf(t.host, sizeof t.host, "%s", h->host);
    snprintf(t.ca_file, sizeof t.ca_file, "%s", h->ca_file);
    r->ctl = th_ctl_client_new(&o);
    if (!r->ctl)
        return false;
    struct th_ctl_failure why;
    if (th_ctl_client_connect(r->ctl, &t, CONNECT_TIMEOUT_MS, &why))
        return true;
    switch (why.what) {
    case TH_CTL_FAIL_KEY:
        fprintf(stderr, "twinhub run: the service key of policy %s is not valid base64\n",
                h->policy);
        break;
    case TH_CTL_FAIL_CA:
        fprintf(stderr, "twinhub run: cannot use CA file %s\n", h->ca_file);
        break;
    case TH_CTL_FAIL_CONNECT:
        fprintf(stderr, "twinhub run: cannot connect to the hub at %s port %d: %s\n", h->host,
                t.port, why.rc == MOSQ_ERR_ERRNO ? strerror(why.err) : mosquitto_strerror(why.rc));
        break;
    case TH_CTL_FAIL_REFUSED:
    case TH_CTL_FAIL_NO_CONNACK:
        fprintf(stderr, "twinhub run: the hub at %s port %d %s the service connection%s\n", h->host,
                t.port, why.what == TH_CTL_FAIL_REFUSED ? "refused" : "did not answer",
                why.what == TH_CTL_FAIL_REFUSED ? "; check the policy and key" : "");
        break;
    case TH_CTL_FAIL_SUBSCRIBE:
    case TH_CTL_FAIL_NONE:
        fprintf(stderr, "twinhub run: the hub refused the subscription to its control responses "
                        "and events; the policy needs ServiceConnect and RegistryRead\n");
        break;
    }
    return false;
}

/* Send commands in one request; their correlationData go to corrs. */
static bool ctl_send(struct run *r, cJSON *const *cmds, size_t n, char (*corrs)[TH_CTL_CORR_MAX])
{
    return r->ctl && th_ctl_client_send(r->ctl, cmds, n, corrs) == MOSQ_ERR_SUCCESS;
}

/* The response entry for `corr` (owned by the caller), or NULL after timeout_ms or a lost
 * connection. */
static cJSON *ctl_wait(struct run *r, const char *corr, int timeout_ms)
{
    cJSON *e = NULL;
    if (r->ctl)
        th_ctl_client_wait(r->ctl, corr, timeout_ms, &e);
    return e;
}

/* One command (borrowed): the entry, or NULL. */
static cJSON *ctl_call(struct run *r, cJSON *cmd, int timeout_ms)
{
    cJSON *e = NULL;
    if (r->ctl)
        th_ctl_client_call(r->ctl, cmd, timeout_ms, &e);
    return e;
}

/* Whether the control connection is gone (or was never made). */
static bool ctl_lost(const struct run *r)
{
    return !r->ctl || th_ctl_client_lost(r->ctl);
}

/* ---- run variables and identities ---- */

/*
 * GatewayHostName of the hub, for the identities' connection strings: none
 * when the hub's name is the address it listens on with 8883 (the runner's
 * own hub), so that HostName alone is what the agent dials.
 */
static void hub_gateway(const struct run *r, char *buf, size_t size)
{
    buf[0] = '\0';
    if (r->hub.own && !strcmp(r->hub.host, r->hub.hub_name) &&
        r->hub.mqtts_port == TH_MQTTS_DEFAULT_PORT)
        return;
    if (th_connstr_gateway(r->hub.host, r->hub.mqtts_port, buf, size) != TH_OK)
        buf[0] = '\0';
}

/* Set the run variables of one identity from its getDevice answer. */
static void identity_vars(struct run *r, const char *d, const char *m, const cJSON *ident)
{
    char gw[340];
    hub_gateway(r, gw, sizeof gw);
    th_scn_session_identity_vars(r->ss, d, m, ident, r->hub.hub_name, gw);
}

/*
 * For every identity the scenario names (and the development ones): its
 * twin seeds the engine (reported properties, connection state) and its keys
 * give the run variables. One request with all the commands.
 */
/*
 * Ask the hub for identity d[/m] (getDevice) and, when it knows it, set its
 * run variables. Returns whether it did.
 */
static bool fetch_identity_vars(struct run *r, const char *d, const char *m)
{
    cJSON *cmd = th_ctl_command("getDevice", d, m);
    cJSON *e = cmd ? ctl_call(r, cmd, CALL_TIMEOUT_MS) : NULL;
    cJSON_Delete(cmd);
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(e, "data");
    bool found = data != NULL;
    if (found)
        identity_vars(r, d, m, data);
    cJSON_Delete(e);
    return found;
}

static bool seed_identities(struct run *r)
{
    cJSON *ids = th_scenario_identities(r->s);
    if (!ids)
        return false;
    cJSON *dev = cJSON_CreateObject();
    if (!dev || !cJSON_AddStringToObject(dev, "deviceId", TH_DEV_DEVICE_ID) ||
        !cJSON_AddItemToArray(ids, dev)) {
        cJSON_Delete(dev);
        cJSON_Delete(ids);
        return false;
    }
    cJSON *mod = cJSON_CreateObject();
    if (!mod || !cJSON_AddStringToObject(mod, "deviceId", TH_DEV_DEVICE_ID) ||
        !cJSON_AddStringToObject(mod, "moduleId", TH_DEV_MODULE_ID) ||
        !cJSON_AddItemToArray(ids, mod)) {
        cJSON_Delete(mod);
        cJSON_Delete(ids);
        return false;
    }
    size_t n = (size_t)cJSON_GetArraySize(ids);
    cJSON **cmds = calloc(2 * n, sizeof *cmds);
    char(*corrs)[TH_CTL_CORR_MAX] = calloc(2 * n, sizeof *corrs);
    bool ok = cmds && corrs;
    for (size_t i = 0; ok && i < n; i++) {
        const cJSON *id = cJSON_GetArrayItem(ids, (int)i);
        const char *d = th_json_string(id, "deviceId", NULL);
        const char *m = th_json_string(id, "moduleId", NULL);
        cmds[2 * i] = th_ctl_command("getTwin", d, m);
        cmds[2 * i + 1] = th_ctl_command("getDevice", d, m);
        ok = cmds[2 * i] && cmds[2 * i + 1];
    }
    ok = ok && ctl_send(r, cmds, 2 * n, corrs);
    for (size_t i = 0; ok && i < n; i++) {
        const cJSON *id = cJSON_GetArrayItem(ids, (int)i);
        const char *d = th_json_string(id, "deviceId", NULL);
        const char *m = th_json_string(id, "moduleId", NULL);
        cJSON *twin = ctl_wait(r, corrs[2 * i], CALL_TIMEOUT_MS);
        cJSON *ident = twin ? ctl_wait(r, corrs[2 * i + 1], CALL_TIMEOUT_MS) : NULL;
        if (!twin || !ident) {
            fprintf(stderr, "twinhub run: the hub did not answer getTwin/getDevice\n");
            ok = false;
        } else {
            /* Unknown identities (created later by a step) are simply not seeded. */
            const cJSON *tdata = cJSON_GetObjectItemCaseSensitive(twin, "data");
            if (tdata && th_scn_session_seed_twin(r->ss, d, m, tdata) != TH_OK)
                ok = false;
            const cJSON *idata = cJSON_GetObjectItemCaseSensitive(ident, "data");
            if (idata)
                identity_vars(r, d, m, idata);
        }
        cJSON_Delete(twin);
        cJSON_Delete(ident);
    }
    for (size_t i = 0; cmds && i < 2 * n; i++)
        cJSON_Delete(cmds[i]);
    free(cmds);
    free(corrs);
    cJSON_Delete(ids);
    return ok;
}

/* Fetch the keys behind run variables a step uses that are not known yet. */
static void resolve_run_vars(struct run *r, size_t step)
{
    cJSON *missing = th_scn_session_missing_run_vars(r->ss, step);
    const cJSON *name;
    cJSON_ArrayForEach(name, missing)
    {
        const char *n = name->valuestring;
        char d[512] = "", m[512] = "";
        if (!strncmp(n, "device.", 7)) {
            const char *end = strrchr(n, '.');
            snprintf(d, sizeof d, "%.*s", (int)(end - (n + 7)), n + 7);
            fetch_identity_vars(r, d, NULL);
        } else if (!strncmp(n, "module.", 7)) {
            /* module.<device>.<module>.connectionString: ids may hold dots, try each split */
            const char *rest = n + 7;
            const char *end = strrchr(n, '.');
            for (const char *dot = strchr(rest, '.'); dot && dot < end;
                 dot = strchr(dot + 1, '.')) {
                snprintf(d, sizeof d, "%.*s", (int)(dot - rest), rest);
                snprintf(m, sizeof m, "%.*s", (int)(end - dot - 1), dot + 1);
                if (fetch_identity_vars(r, d, m))
                    break;
            }
        }
    }
    cJSON_Delete(missing);
}

/* ---- the agent ---- */

static bool agent_start(struct run *r, const char *cmdline)
{
    const struct th_scenario *s = r->s;
    const cJSON *vars = th_scn_session_vars(r->ss);
    /* Whose connection string: the scenario's identity, else the first registry device. */
    const char *d = s->agent_device, *m = s->agent_module;
    if (!d) {
        const cJSON *devs = cJSON_GetObjectItemCaseSensitive(s->registry, "devices");
        d = th_json_string(cJSON_GetArrayItem(devs, 0), "deviceId", TH_DEV_DEVICE_ID);
        m = NULL;
    }
    char name[800];
    if (m)
        snprintf(name, sizeof name, "module.%s.%s.connectionString", d, m);
    else
        snprintf(name, sizeof name, "device.%s.connectionString", d);
    const char *cs = th_json_string(vars, name, NULL);
    if (!cs) {
        fetch_identity_vars(r, d, m);
        cs = th_json_string(vars, name, NULL);
    }
    if (!cs) {
        fprintf(stderr, "twinhub run: %s%s%s is not registered on the hub; the agent needs it\n", d,
                m ? "/" : "", m ? m : "");
        return false;
    }
    return th_run_agent_spawn(r, cmdline, cs, d, m);
}

/* ---- steps ---- */

/* Whether something outside the step ended it; sets the step's result when so. */
static bool step_broken(struct run *r)
{
    if (r->interrupted) {
        th_scn_session_set_result(r->ss, TH_VERDICT_FAIL, th_now_us(), "interrupted", NULL);
        return true;
    }
    if (r->agent.started && r->agent.exited && !r->agent.reported) {
        char how[128], msg[320];
        th_describe_status(r->agent.status, how, sizeof how);
        int code = WIFEXITED(r->agent.status) ? WEXITSTATUS(r->agent.status) : 0;
        snprintf(msg, sizeof msg, "the agent %s%s", how,
                 code == 127   ? " (the shell did not find its command: check --agent or "
                                 "agent.command)"
                 : code == 126 ? " (its command is not executable)"
                               : "");
        r->agent.reported = true;
        th_scn_session_set_result(r->ss, TH_VERDICT_FAIL, th_now_us(), msg, NULL);
        return true;
    }
    if (r->hub.own && r->hub.pid == 0) {
        th_scn_session_set_result(r->ss, TH_VERDICT_FAIL, th_now_us(), "the hub stopped", NULL);
        return true;
    }
    if (ctl_lost(r)) {
        th_scn_session_set_result(r->ss, TH_VERDICT_FAIL, th_now_us(),
                                  "the control connection to the hub was lost", NULL);
        return true;
    }
    return false;
}

static enum th_verdict verdict_now(const struct run *r, size_t i)
{
    return th_scn_session_result(r->ss, i)->verdict;
}

/* Wait until the step's mark has come back through the event stream. */
static bool wait_anchored(struct run *r, size_t i)
{
    int64_t deadline = th_mono_ms() + MARK_TIMEOUT_MS;
    while (!th_scn_session_anchored(r->ss) && verdict_now(r, i) == TH_VERDICT_PENDING) {
        if (step_broken(r))
            return false;
        int64_t left = deadline - th_mono_ms();
        if (left <= 0) {
            th_scn_session_set_result(r->ss, TH_VERDICT_FAIL, th_now_us(),
                                      "the hub did not echo the step's mark event", NULL);
            return false;
        }
        th_run_pump(r, (int)left);
    }
    return verdict_now(r, i) == TH_VERDICT_PENDING;
}

static bool scenario_mark(struct run *r, const char *action)
{
    cJSON *cmd = th_scn_scenario_mark(r->s, action);
    cJSON *e = cmd ? ctl_call(r, cmd, CALL_TIMEOUT_MS) : NULL;
    cJSON_Delete(cmd);
    bool ok = e != NULL;
    cJSON_Delete(e);
    return ok;
}

/* A query with every page: the outcome {"items": [...], "count": n}, or the error. */
static cJSON *run_query(struct run *r, const cJSON *first_entry, const char *q)
{
    cJSON *items = cJSON_CreateArray();
    if (!items)
        return NULL;
    const cJSON *entry = first_entry;
    cJSON *owned = NULL;
    for (int page = 0; page < 1000; page++) {
        const cJSON *err = cJSON_GetObjectItemCaseSensitive(entry, "error");
        if (!entry || (err && !cJSON_IsNull(err))) {
            cJSON *o = entry ? th_scn_outcome(entry) : NULL;
            cJSON_Delete(items);
            cJSON_Delete(owned);
            return o;
        }
        const cJSON *data = cJSON_GetObjectItemCaseSensitive(entry, "data");
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(data, "items"))
        {
            cJSON *copy = cJSON_Duplicate(it, 1);
            if (!copy || !cJSON_AddItemToArray(items, copy)) {
                cJSON_Delete(copy);
                cJSON_Delete(items);
                cJSON_Delete(owned);
                return NULL; /* out of memory: no outcome */
            }
        }
        const char *cont = th_json_string(data, "continuation", NULL);
        if (!cont)
            break;
        cJSON *cmd = th_scn_query_command(q, cont);
        cJSON_Delete(owned);
        owned = cmd ? ctl_call(r, cmd, CALL_TIMEOUT_MS) : NULL;
        cJSON_Delete(cmd);
        entry = owned;
    }
    cJSON_Delete(owned);
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddNumberToObject(o, "count", cJSON_GetArraySize(items)) ||
        !cJSON_AddItemToObject(o, "items", items)) {
        cJSON_Delete(o);
        cJSON_Delete(items);
        return NULL;
    }
    return o;
}

static void restart_hub(struct run *r, size_t i)
{
    (void)i;
    if (!r->hub.own) {
        th_scn_session_set_result(r->ss, TH_VERDICT_FAIL, th_now_us(),
                                  "restartHub needs the runner's own hub; it cannot restart a hub "
                                  "given with --hub",
                                  NULL);
        return;
    }
    ctl_close(r);
    th_run_hub_stop(r);
    th_scn_session_hub_restarted(r->ss);
    if (!th_run_hub_spawn(r)) {
        th_run_hub_explain(r);
        th_scn_session_set_result(r->ss, TH_VERDICT_FAIL, th_now_us(),
                                  "the hub did not come back after the restart", NULL);
        return;
    }
    if (!ctl_open(r)) {
        th_scn_session_set_result(r->ss, TH_VERDICT_FAIL, th_now_us(),
                                  "could not reconnect to the restarted hub", NULL);
        return;
    }
    /* Events between the restart and our subscription were not seen: re-read the state. */
    if (!seed_identities(r)) {
        th_scn_session_set_result(r->ss, TH_VERDICT_FAIL, th_now_us(),
                                  "the restarted hub did not answer getTwin", NULL);
        return;
    }
    th_scn_session_set_result(r->ss, TH_VERDICT_PASS, th_now_us(), NULL, NULL);
}

/* Run step i: mark, act or wait, decide. */
static void run_step(struct run *r, size_t i)
{
    const struct th_step *st = &r->s->steps[i];
    resolve_run_vars(r, i);
    th_scn_session_begin_step(r->ss, i);
    if (verdict_now(r, i) != TH_VERDICT_PENDING || step_broken(r))
        return;
    const cJSON *b = th_scn_session_resolved(r->ss);
    cJSON *mark = th_scn_step_mark(r->s, i);
    enum th_step_class cls = th_step_kind_class(st->kind);
    bool plain_action = (cls != TH_STEP_CLASS_EXPECTATION) && st->kind != TH_STEP_SLEEP &&
                        st->kind != TH_STEP_RESTART_HUB;
    if (plain_action) {
        char err[PATH_MAX + 200] = "";
        cJSON *cmd = mark ? th_scn_action_command(r->s, st, b, NULL, err, sizeof err) : NULL;
        if (!cmd) {
            if (!mark)
                snprintf(err, sizeof err, "out of memory");
            cJSON_Delete(mark);
            th_scn_session_set_result(r->ss, TH_VERDICT_FAIL, th_now_us(), err, NULL);
            return;
        }
        cJSON *cmds[2] = {mark, cmd};
        char corrs[2][TH_CTL_CORR_MAX];
        int timeout = CALL_TIMEOUT_MS;
        if (st->kind == TH_STEP_INVOKE_METHOD)
            timeout = (int)(th_json_number(b, "responseTimeoutInSeconds", 30) +
                            th_json_number(b, "connectTimeoutInSeconds", 0) + 10) *
                      1000;
        bool sent = ctl_send(r, cmds, 2, corrs);
        cJSON *entry = NULL;
        if (sent && wait_anchored(r, i)) {
            int64_t deadline = th_mono_ms() + timeout;
            while (!entry && verdict_now(r, i) == TH_VERDICT_PENDING && !step_broken(r)) {
                entry = th_ctl_client_take(r->ctl, corrs[1]);
                if (entry)
                    break;
                int64_t left = deadline - th_mono_ms();
                if (left <= 0)
                    break;
                th_run_pump(r, (int)left);
            }
            cJSON_Delete(th_ctl_client_take(r->ctl, corrs[0]));
            if (verdict_now(r, i) == TH_VERDICT_PENDING) {
                if (!entry) {
                    th_scn_session_set_result(r->ss, TH_VERDICT_FAIL, th_now_us(),
                                              "the hub did not answer the command in time", NULL);
                } else {
                    cJSON *outcome = st->kind == TH_STEP_QUERY
                                         ? run_query(r, entry, th_json_string(b, "query", ""))
                                         : th_scn_outcome(entry);
                    th_scn_session_check_outcome(r->ss, outcome, th_now_us());
                    cJSON_Delete(outcome);
                }
            }
        } else if (!sent) {
            th_scn_session_set_result(r->ss, TH_VERDICT_FAIL, th_now_us(),
                                      "could not send the command to the hub", NULL);
        }
        cJSON_Delete(entry);
        cJSON_Delete(mark);
        cJSON_Delete(cmd);
        return;
    }
    /* sleep, restartHub and the expectations: the mark first */
    char corr[1][TH_CTL_CORR_MAX];
    bool sent = ctl_send(r, &mark, 1, corr);
    cJSON_Delete(mark);
    if (!sent) {
        th_scn_session_set_result(r->ss, TH_VERDICT_FAIL, th_now_us(),
                                  "could not send the step's mark to the hub", NULL);
        return;
    }
    if (!wait_anchored(r, i))
        return;
    cJSON_Delete(th_ctl_client_take(r->ctl, corr[0]));
    if (st->kind == TH_STEP_RESTART_HUB) {
        restart_hub(r, i);
        return;
    }
    /* Wait for the verdict; past the deadline, a barrier flushes the events before it. */
    while (verdict_now(r, i) == TH_VERDICT_PENDING) {
        if (step_broken(r))
            return;
        int64_t dl = th_scn_session_deadline(r->ss);
        int64_t now = th_now_us();
        if (now > dl + 1000) {
            if (st->kind == TH_STEP_SLEEP) {
                th_scn_session_set_result(r->ss, TH_VERDICT_PASS, now, NULL, NULL);
                return;
            }
            cJSON *cmd = th_ctl_command("getStatistics", NULL, NULL);
            cJSON *e = cmd ? ctl_call(r, cmd, CALL_TIMEOUT_MS) : NULL;
            cJSON_Delete(cmd);
            cJSON_Delete(e);
            if (!e && step_broken(r))
                return;
            th_scn_session_settle(r->ss, dl);
            if (verdict_now(r, i) == TH_VERDICT_PENDING)
                th_scn_session_set_result(r->ss, TH_VERDICT_FAIL, th_now_us(),
                                          "the hub did not answer the barrier command", NULL);
            return;
        }
        int64_t wait_ms = (dl + 1000 - now) / 1000 + 1;
        th_run_pump(r, (int)(wait_ms > 1000 ? 1000 : wait_ms));
    }
}

/* ---- one scenario ---- */

static void print_agent_log(const struct run *r)
{
    if (!r->agent.started)
        return;
    char *tail = th_tail_lines(r->agent.log, LOG_TAIL_LINES);
    if (!tail) {
        printf("  (the agent wrote nothing; its log is %s)\n", r->agent.log);
        return;
    }
    printf("  agent log (last lines of %s):\n", r->agent.log);
    for (char *line = strtok(tail, "\n"); line; line = strtok(NULL, "\n"))
        printf("    %s\n", line);
    free(tail);
}

struct outcome {
    struct th_scenario *s;
    struct th_scn_session *ss;
    struct th_junit_case *cases;
    char timestamp[TH_TIME_BUF];
    double time_s;
    char *error;      /* the suite could not run */
    char *system_out; /* agent log tail on failure */
};

/* Where this scenario's agent log goes. */
static void agent_log_path(struct run *r, size_t index)
{
    if (r->o.nfiles == 1) {
        snprintf(r->agent.log, sizeof r->agent.log, "%s/agent.log", r->report_dir);
        return;
    }
    const char *base = strrchr(r->s->file, '/');
    base = base ? base + 1 : r->s->file;
    char stem[256];
    snprintf(stem, sizeof stem, "%s", base);
    char *dot = strrchr(stem, '.');
    if (dot && dot != stem)
        *dot = '\0';
    char dir[PATH_MAX];
    if (snprintf(dir, sizeof dir, "%s/%zu-%s", r->report_dir, index + 1, stem) >= (int)sizeof dir)
        snprintf(dir, sizeof dir, "%s", r->report_dir);
    th_make_dirs(dir, 0755, NULL, 0);
    snprintf(r->agent.log, sizeof r->agent.log, "%s/agent.log", dir);
}

static int run_scenario(struct run *r, struct outcome *out, size_t index)
{
    const struct th_scenario *s = out->s;
    r->s = s;
    memset(&r->agent, 0, sizeof r->agent);
    memset(&r->hub, 0, sizeof r->hub);
    r->hub.out_fd = -1;
    agent_log_path(r, index);
    unlink(r->agent.log);
    printf("scenario %s (%s)\n", s->name, s->file);
    fflush(stdout);
    r->ss = th_scn_session_new(s, false);
    out->ss = r->ss;
    if (!r->ss)
        return TH_EXIT_FAIL;
    int rc = 0;
    if (r->o.hub_file) {
        rc = th_run_hub_use_file(r);
    } else {
        if (r->o.record)
            snprintf(r->hub.record, sizeof r->hub.record, "%s", r->o.record);
        rc = th_run_hub_start_own(r);
    }
    if (rc == 0 && !ctl_open(r))
        rc = EXIT_HUB;
    if (rc == 0)
        th_time_format(th_now_us(), out->timestamp);
    int64_t start_us = th_now_us();
    if (rc == 0 && !scenario_mark(r, "scenarioBegin"))
        rc = EXIT_HUB;
    if (rc == 0 && !r->hub.own && s->registry) {
        cJSON *cmd = th_ctl_command("importRegistry", NULL, NULL);
        cJSON *reg = cJSON_Duplicate(s->registry, 1);
        if (!cmd || !reg || !cJSON_AddItemToObject(cmd, "registry", reg)) {
            cJSON_Delete(reg);
            cJSON_Delete(cmd);
            cmd = NULL;
        }
        cJSON *e = cmd ? ctl_call(r, cmd, CALL_TIMEOUT_MS) : NULL;
        cJSON_Delete(cmd);
        const cJSON *err = cJSON_GetObjectItemCaseSensitive(e, "error");
        if (!e || (err && !cJSON_IsNull(err))) {
            fprintf(stderr, "twinhub run: the hub refused the scenario's registry: %s\n",
                    cJSON_IsString(err) ? err->valuestring : "no answer");
            rc = EXIT_HUB;
        }
        cJSON_Delete(e);
    }
    if (rc == 0) {
        char mp[16], sp[16];
        snprintf(mp, sizeof mp, "%d", r->hub.mqtt_port);
        snprintf(sp, sizeof sp, "%d", r->hub.mqtts_port);
        th_scn_session_set_var(r->ss, "hub.name", r->hub.hub_name);
        th_scn_session_set_var(r->ss, "hub.caFile", r->hub.ca_file);
        th_scn_session_set_var(r->ss, "hub.mqttPort", mp);
        th_scn_session_set_var(r->ss, "hub.mqttsPort", sp);
        th_scn_session_set_var(r->ss, "hub.idScope",
                               r->hub.id_scope[0] ? r->hub.id_scope : TH_DPS_DEFAULT_ID_SCOPE);
        if (!seed_identities(r))
            rc = EXIT_HUB;
    }
    if (rc != 0) {
        if (asprintf(&out->error, "the hub could not be %s", r->o.hub_file ? "used" : "started") <
            0)
            out->error = NULL;
        th_scn_session_skip_rest(r->ss);
        ctl_close(r);
        th_run_hub_stop(r);
        return rc;
    }
    const char *agent_cmd = r->o.agent ? r->o.agent : s->agent_command;
    bool agent_ok = true;
    for (size_t i = 0; i < s->nsteps; i++) {
        if (agent_cmd && !r->agent.started && (int)i == s->agent_start_at) {
            agent_ok = agent_start(r, agent_cmd);
            if (!agent_ok) {
                th_scn_session_begin_step(r->ss, i);
                th_scn_session_set_result(r->ss, TH_VERDICT_FAIL, th_now_us(),
                                          "the agent could not be started", NULL);
            }
        }
        if (i == 0 && r->o.verbose)
            fprintf(stderr, "twinhub run: first step starts %lld ms after `twinhub run` began%s\n",
                    (long long)(th_mono_ms() - r->t0_ms), r->hub.own ? "" : " (running hub)");
        if (agent_ok)
            run_step(r, i);
        const struct th_step_result *res = th_scn_session_result(r->ss, i);
        char line[4096];
        th_scn_format_line(&s->steps[i], res, line, sizeof line);
        printf("%s\n", line);
        const struct th_step_result *sr = th_scn_session_result(r->ss, i);
        if (sr->verdict == TH_VERDICT_FAIL && sr->detail)
            for (char *copy = strdup(sr->detail), *p = copy, *nl; copy && p && *p;
                 p = nl ? nl + 1 : NULL) {
                nl = strchr(p, '\n');
                printf("      %.*s\n", nl ? (int)(nl - p) : (int)strlen(p), p);
                if (!nl || !nl[1]) {
                    free(copy);
                    break;
                }
            }
        fflush(stdout);
        if (res->verdict != TH_VERDICT_PASS) {
            th_scn_session_skip_rest(r->ss);
            for (size_t k = i + 1; k < s->nsteps; k++) {
                th_scn_format_line(&s->steps[k], th_scn_session_result(r->ss, k), line,
                                   sizeof line);
                printf("%s\n", line);
            }
            break;
        }
    }
    if (!ctl_lost(r))
        scenario_mark(r, "scenarioEnd");
    th_run_agent_stop(r);
    int passed = 0, failed = 0, skipped = 0;
    for (size_t i = 0; i < s->nsteps; i++) {
        enum th_verdict v = th_scn_session_result(r->ss, i)->verdict;
        passed += v == TH_VERDICT_PASS;
        failed += v == TH_VERDICT_FAIL;
        skipped += v == TH_VERDICT_SKIP || v == TH_VERDICT_NONE;
    }
    if (failed) {
        print_agent_log(r);
        out->system_out = r->agent.started ? th_tail_lines(r->agent.log, LOG_TAIL_LINES) : NULL;
    }
    printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    fflush(stdout);
    out->time_s = (double)(th_now_us() - start_us) / 1e6;
    ctl_close(r);
    th_run_hub_stop(r);
    return failed ? TH_EXIT_FAIL : TH_EXIT_OK;
}

/* ---- the command ---- */

enum { OPT_AGENT = 256, OPT_HUB, OPT_JUNIT, OPT_RECORD, OPT_REPORT_DIR, OPT_TIME_SCALE, OPT_VAR };

static int parse_args(int argc, char **argv, struct opts *o)
{
    static const struct option opts[] = {
        {"agent", required_argument, NULL, OPT_AGENT},
        {"hub", required_argument, NULL, OPT_HUB},
        {"junit", required_argument, NULL, OPT_JUNIT},
        {"record", required_argument, NULL, OPT_RECORD},
        {"report-dir", required_argument, NULL, OPT_REPORT_DIR},
        {"time-scale", required_argument, NULL, OPT_TIME_SCALE},
        {"var", required_argument, NULL, OPT_VAR},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":vh", opts, NULL)) != -1) {
        switch (c) {
        case OPT_AGENT:
            o->agent = optarg;
            break;
        case OPT_HUB:
            o->hub_file = optarg;
            break;
        case OPT_JUNIT:
            o->junit = optarg;
            break;
        case OPT_RECORD:
            o->record = optarg;
            break;
        case OPT_REPORT_DIR:
            o->report_dir = optarg;
            break;
        case OPT_TIME_SCALE:
            if (!th_scn_parse_time_scale(optarg, &o->time_scale)) {
                fprintf(stderr,
                        "twinhub run: --time-scale %s: expected a number from %g to %g, such as "
                        "0.1 (bounds ten times shorter) or 3\n",
                        optarg, TH_SCN_TIME_SCALE_MIN, TH_SCN_TIME_SCALE_MAX);
                return TH_EXIT_USAGE;
            }
            break;
        case OPT_VAR: {
            char name[256];
            const char *value;
            if (!th_scn_parse_var_arg(optarg, name, sizeof name, &value)) {
                fprintf(stderr,
                        "twinhub run: --var %s: expected NAME=VALUE with NAME a scenario "
                        "variable (letters, digits, '_' and '-', not starting with a digit)\n",
                        optarg);
                return TH_EXIT_USAGE;
            }
            if (o->nvars == MAX_FILES) {
                fprintf(stderr, "twinhub run: at most %d --var options\n", MAX_FILES);
                return TH_EXIT_USAGE;
            }
            o->vars[o->nvars++] = optarg;
            break;
        }
        case 'v':
            o->verbose = true;
            break;
        case 'h':
            th_usage_run(stdout);
            return TH_EXIT_OK;
        case ':':
            fprintf(stderr, "twinhub run: %s needs a value; see twinhub run --help\n",
                    argv[optind - 1]);
            return TH_EXIT_USAGE;
        default:
            fprintf(stderr, "twinhub run: unknown option %s; see twinhub run --help\n",
                    argv[optind - 1]);
            return TH_EXIT_USAGE;
        }
    }
    for (int i = optind; i < argc; i++) {
        if (o->nfiles == MAX_FILES) {
            fprintf(stderr, "twinhub run: at most %d scenario files at once\n", MAX_FILES);
            return TH_EXIT_USAGE;
        }
        o->files[o->nfiles++] = argv[i];
    }
    if (o->nfiles == 0) {
        fprintf(stderr, "twinhub run: give at least one scenario file; see twinhub run --help\n");
        return TH_EXIT_USAGE;
    }
    if (o->agent && !o->agent[0]) {
        fprintf(stderr, "twinhub run: --agent needs a command line\n");
        return TH_EXIT_USAGE;
    }
    return -1;
}

/*
 * --var and --time-scale on every loaded scenario. A --var that no scenario
 * declares is a mistake (a typo would otherwise change nothing): false after
 * a message.
 */
static bool apply_options(const struct opts *o, struct outcome *outs)
{
    for (size_t v = 0; v < o->nvars; v++) {
        char name[256];
        const char *value;
        if (!th_scn_parse_var_arg(o->vars[v], name, sizeof name, &value))
            return false;
        bool declared = false;
        for (size_t i = 0; i < o->nfiles; i++) {
            th_result res = th_scenario_set_variable(outs[i].s, name, value);
            if (res == TH_ERR_NOMEM) {
                fprintf(stderr, "twinhub run: out of memory\n");
                return false;
            }
            declared = declared || res == TH_OK;
        }
        if (!declared) {
            fprintf(stderr,
                    "twinhub run: --var %s: no scenario given declares the variable %s in its "
                    "\"variables\"\n",
                    o->vars[v], name);
            return false;
        }
    }
    for (size_t i = 0; i < o->nfiles; i++)
        th_scenario_scale_time(outs[i].s, o->time_scale);
    return true;
}

int th_cmd_run(int argc, char **argv)
{
    struct run r = {.sig_fd = -1, .t0_ms = th_mono_ms(), .addr.lock_fd = -1,
                    .o.time_scale = 1.0};
    int rc = parse_args(argc, argv, &r.o);
    if (rc >= 0)
        return rc;
    r.hub.out_fd = -1;

    /* Every scenario is validated before anything starts. */
    struct outcome *outs = calloc(r.o.nfiles, sizeof *outs);
    if (!outs)
        return TH_EXIT_FAIL;
    bool invalid = false;
    for (size_t i = 0; i < r.o.nfiles; i++) {
        struct th_scn_diag diag = {0};
        outs[i].s = th_scenario_load(r.o.files[i], &diag);
        if (!outs[i].s) {
            invalid = true;
            fputs(diag.text ? diag.text : "invalid scenario\n", stderr);
            if (diag.count > TH_SCN_DIAG_MAX)
                fprintf(stderr, "%s: ... and %d more problems\n", r.o.files[i],
                        diag.count - TH_SCN_DIAG_MAX);
        }
        th_scn_diag_free(&diag);
    }
    if (invalid) {
        rc = TH_EXIT_USAGE;
        goto out;
    }
    if (!apply_options(&r.o, outs)) {
        rc = TH_EXIT_USAGE;
        goto out;
    }
    if (!setup_signals(&r)) {
        fprintf(stderr, "twinhub run: cannot set up signal handling: %s\n", strerror(errno));
        rc = TH_EXIT_FAIL;
        goto out;
    }
    /* The report directory (agent logs). */
    if (r.o.report_dir) {
        snprintf(r.report_dir, sizeof r.report_dir, "%s", r.o.report_dir);
        if (!th_make_dirs(r.report_dir, 0755, NULL, 0)) {
            fprintf(stderr, "twinhub run: cannot create --report-dir %s: %s\n", r.report_dir,
                    strerror(errno));
            rc = TH_EXIT_USAGE;
            goto out;
        }
    } else {
        const char *tmp = getenv("TMPDIR");
        snprintf(r.report_dir, sizeof r.report_dir, "%s/twinhub-report-XXXXXX",
                 tmp && tmp[0] == '/' ? tmp : "/tmp");
        if (!mkdtemp(r.report_dir)) {
            fprintf(stderr, "twinhub run: cannot create a report directory: %s\n", strerror(errno));
            rc = TH_EXIT_FAIL;
            goto out;
        }
        r.report_dir_temp = true;
    }
    /* The recording: absolute (serve runs elsewhere), truncated once for the whole run. */
    char record_abs[PATH_MAX];
    if (r.o.record) {
        if (r.o.record[0] == '/') {
            snprintf(record_abs, sizeof record_abs, "%s", r.o.record);
        } else {
            char cwd[PATH_MAX];
            if (!getcwd(cwd, sizeof cwd)) {
                rc = TH_EXIT_FAIL;
                goto out;
            }
            if (snprintf(record_abs, sizeof record_abs, "%s/%s", cwd, r.o.record) >=
                (int)sizeof record_abs) {
                fprintf(stderr, "twinhub run: --record %s: path too long\n", r.o.record);
                rc = TH_EXIT_USAGE;
                goto out;
            }
        }
        int fd = open(record_abs, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) {
            fprintf(stderr, "twinhub run: cannot write --record %s: %s\n", r.o.record,
                    strerror(errno));
            rc = TH_EXIT_USAGE;
            goto out;
        }
        close(fd);
        r.o.record = record_abs;
        if (r.o.hub_file) {
            r.own_record = fopen(record_abs, "ae");
            if (!r.own_record) {
                rc = TH_EXIT_USAGE;
                goto out;
            }
        }
    }
    rc = TH_EXIT_OK;
    size_t ran = 0;
    for (size_t i = 0; i < r.o.nfiles && !r.interrupted; i++) {
        int one = run_scenario(&r, &outs[i], i);
        ran = i + 1;
        if (r.hub.own && r.hub.dir[0])
            th_rmtree(r.hub.dir);
        r.ss = NULL;
        if (one == EXIT_HUB) {
            rc = EXIT_HUB;
            break;
        }
        if (one != TH_EXIT_OK)
            rc = TH_EXIT_FAIL;
    }
    if (r.interrupted && rc == TH_EXIT_OK)
        rc = TH_EXIT_FAIL;
    if (r.o.junit) {
        struct th_junit_suite *suites = calloc(ran ? ran : 1, sizeof *suites);
        for (size_t i = 0; suites && i < ran; i++) {
            const struct th_scenario *s = outs[i].s;
            outs[i].cases = outs[i].ss ? calloc(s->nsteps, sizeof *outs[i].cases) : NULL;
            if (outs[i].cases)
                th_scn_junit_cases(s, outs[i].ss, outs[i].cases);
            suites[i] = (struct th_junit_suite){
                .name = s->name,
                .file = s->file,
                .timestamp = outs[i].timestamp[0] ? outs[i].timestamp : NULL,
                .time_s = outs[i].time_s,
                .cases = outs[i].cases,
                .ncases = outs[i].cases ? s->nsteps : 0,
                .system_out = outs[i].system_out,
                .error = outs[i].error,
            };
        }
        char *xml = suites ? th_junit_render(suites, ran) : NULL;
        if (!xml || !th_write_text_file("twinhub run", r.o.junit, xml))
            rc = rc ? rc : TH_EXIT_FAIL;
        free(xml);
        free(suites);
    }
    if (r.report_dir_temp) {
        if (rc == TH_EXIT_OK)
            th_rmtree(r.report_dir);
        else
            printf("agent logs: %s\n", r.report_dir);
    }
out:
    for (size_t i = 0; i < r.o.nfiles; i++) {
        th_scn_session_free(outs[i].ss);
        th_scenario_free(outs[i].s);
        free(outs[i].cases);
        free(outs[i].error);
        free(outs[i].system_out);
    }
    free(outs);
    th_run_hub_release_addr(&r);
    if (r.own_record)
        fclose(r.own_record);
    if (r.sig_fd >= 0) {
        close(r.sig_fd);
        sigprocmask(SIG_SETMASK, &r.old_mask, NULL);
    }
    return rc;
}
