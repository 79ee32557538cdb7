/*
 * run.c - `twinhub run FILE...` (docs/scenarios.md, "Running"): for each
 * scenario, start a hub (`twinhub serve` from this same binary on free
 * loopback ports, with a state directory so that restartHub keeps state)
 * or use a running one (--hub), seed the registry, start the agent with
 * its connection string, run the steps through the control API, and decide
 * the expectations with the engine of emulator/scenario/ fed by the live
 * event stream ($twinhub/events/#). Prints one line per step, writes JUnit
 * and the recording, stops everything.
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
#include <ftw.h>
#include <getopt.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <mosquitto.h>

#include "cli.h"
#include "client.h" /* th_command_new */
#include "connstr.h"
#include "ctl_client.h"
#include "hubinfo_file.h"
#include "json.h"
#include "registry.h"
#include "scenario.h"
#include "util.h"

#define EXIT_HUB 3 /* the hub could not be started or reached */
#define READY_TIMEOUT_MS 15000
#define CONNECT_TIMEOUT_MS 10000
#define CALL_TIMEOUT_MS 15000
#define MARK_TIMEOUT_MS 10000
#define AGENT_STOP_MS 5000
#define HUB_STOP_MS 12000
#define MAX_FILES 256
#define MAX_JSON_BYTES (64u * 1024 * 1024)
#define LOG_TAIL_LINES 20
#define TOKEN_LIFETIME_S (24 * 3600)

/* ---- state ---- */

struct opts {
    const char *agent;
    const char *hub_file;
    const char *junit;
    const char *record;
    const char *report_dir;
    bool verbose;
    const char *files[MAX_FILES];
    size_t nfiles;
};

struct hub {
    bool own;
    pid_t pid; /* serve, when own; 0 when not running */
    int status;
    int out_fd;
    char out[8192];
    size_t outlen;
    bool ready;
    int mqtt_port, mqtts_port;
    char host[300]; /* where the control client and the agent connect */
    char hub_name[256];
    char ca_file[PATH_MAX];
    char policy[64];
    char key[128];
    char dir[PATH_MAX]; /* own: the run directory (state, info, registry, log) */
    char cert_dir[PATH_MAX];
    char log[PATH_MAX + 16];
    char registry[PATH_MAX + 16];
    char record[PATH_MAX];
    int64_t ready_ms; /* when it became ready (monotonic) */
};

struct agent {
    pid_t pid; /* 0 when not running */
    bool started, exited, reported;
    int status;
    char log[PATH_MAX + 32];
};

struct run {
    struct opts o;
    int sig_fd;
    sigset_t old_mask;
    bool interrupted;
    int64_t t0_ms;
    struct hub hub;
    struct th_ctl_client *ctl; /* the control connection (emulator/ctl), NULL when closed */
    char ctl_id[64];           /* its client id */
    struct agent agent;
    const struct th_scenario *s;
    struct th_scn_session *ss;
    FILE *own_record; /* with --hub and --record: the runner writes what it sees */
    char report_dir[PATH_MAX];
    bool report_dir_temp;
    bool any_failed;
};

void th_usage_run(FILE *out)
{
    fprintf(
        out,
        "usage: twinhub run FILE... [--agent CMD] [--hub FILE] [--junit FILE]\n"
        "                   [--record FILE] [--report-dir DIR] [-v]\n"
        "\n"
        "Run scenario files against an agent. Without --hub each scenario gets its own hub\n"
        "on free loopback ports; the agent is started with its connection string in\n"
        "TWINHUB_CONNECTION_STRING; one line is printed per step.\n"
        "\n"
        "options:\n"
        "  --agent CMD       the agent's command line (overrides the scenario's agent.command)\n"
        "  --hub FILE        use the running hub described by FILE (serve --info-file)\n"
        "  --junit FILE      write a JUnit XML report (one testsuite per scenario)\n"
        "  --record FILE     write the hub's recording, with one mark per step (truncated\n"
        "                    first), for `twinhub verify`\n"
        "  --report-dir DIR  where agent.log goes (default: a temporary directory, kept\n"
        "                    when a step fails)\n"
        "  -v, --verbose     show the hub's output, every event and the timings\n"
        "  -h, --help        show this text\n"
        "\n"
        "exit status: 0 every step passed, 1 a step failed, 2 a scenario is invalid,\n"
        "3 the hub could not be started. See docs/scenarios.md.\n");
}

/* ---- files ---- */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void rmtree(const char *path)
{
    if (path && path[0])
        nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* The last `n` lines of a file, for failure reports; the caller frees. */
static char *file_tail(const char *path, int n)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    long from = size > 16384 ? size - 16384 : 0;
    fseek(f, from, SEEK_SET);
    char *buf = malloc((size_t)(size - from) + 1);
    size_t got = buf ? fread(buf, 1, (size_t)(size - from), f) : 0;
    fclose(f);
    if (!buf)
        return NULL;
    buf[got] = '\0';
    if (got == 0) {
        free(buf);
        return NULL;
    }
    char *p = buf + got;
    if (p > buf && p[-1] == '\n')
        p--;
    int lines = 0;
    while (p > buf) {
        if (p[-1] == '\n' && ++lines == n)
            break;
        p--;
    }
    char *out = strdup(p);
    free(buf);
    return out;
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
static void pump(struct run *r, int timeout_ms)
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
    pump(arg, timeout_ms);
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

static void add_ids(cJSON *cmd, const char *d, const char *m)
{
    if (d)
        cJSON_AddStringToObject(cmd, "deviceId", d);
    if (m)
        cJSON_AddStringToObject(cmd, "moduleId", m);
}

/* The outcome the engine checks: data on success, {"error","status","errorCode"} on failure. */
static cJSON *outcome_of(const cJSON *entry)
{
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(entry, "error");
    if (err && !cJSON_IsNull(err)) {
        cJSON *o = cJSON_CreateObject();
        if (o) {
            cJSON_AddItemToObject(o, "error", cJSON_Duplicate(err, 1));
            cJSON_AddNumberToObject(o, "status", th_json_number(entry, "status", 0));
            cJSON_AddNumberToObject(o, "errorCode", th_json_number(entry, "errorCode", 0));
        }
        return o;
    }
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(entry, "data");
    return data ? cJSON_Duplicate(data, 1) : cJSON_CreateObject();
}

/* ---- the hub ---- */

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &sl) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

/* Where the runner keeps its development certificates between runs. */
static void run_cert_dir(struct hub *h)
{
    const char *xdg = getenv("XDG_CACHE_HOME");
    const char *home = getenv("HOME");
    char dir[PATH_MAX];
    if (xdg && xdg[0] == '/')
        snprintf(dir, sizeof dir, "%s/twinhub/run-certs", xdg);
    else if (home && home[0] == '/')
        snprintf(dir, sizeof dir, "%s/.cache/twinhub/run-certs", home);
    else
        dir[0] = '\0';
    if (dir[0] && th_make_dirs(dir, 0700, NULL, 0) && access(dir, W_OK) == 0 &&
        snprintf(h->cert_dir, sizeof h->cert_dir, "%s", dir) < (int)sizeof h->cert_dir)
        return;
    if (snprintf(h->cert_dir, sizeof h->cert_dir, "%s/certs", h->dir) >= (int)sizeof h->cert_dir)
        h->cert_dir[0] = '\0'; /* serve then says what is wrong */
}

/* Start `twinhub serve` with the hub's settings; wait until it is ready or gone. */
static bool hub_spawn(struct run *r)
{
    struct hub *h = &r->hub;
    char mp[16], sp[16], info[PATH_MAX + 16], state[PATH_MAX + 16];
    snprintf(mp, sizeof mp, "%d", h->mqtt_port);
    snprintf(sp, sizeof sp, "%d", h->mqtts_port);
    snprintf(info, sizeof info, "%s/hub.json", h->dir);
    snprintf(state, sizeof state, "%s/state", h->dir);
    const char *argv[24];
    int ac = 0;
    argv[ac++] = "twinhub";
    argv[ac++] = "serve";
    argv[ac++] = "--mqtt-port";
    argv[ac++] = mp;
    argv[ac++] = "--mqtts-port";
    argv[ac++] = sp;
    argv[ac++] = "--https-port"; /* scenarios drive the hub through the control API */
    argv[ac++] = "0";
    argv[ac++] = "--hub-name";
    argv[ac++] = h->hub_name;
    argv[ac++] = "--cert-dir";
    argv[ac++] = h->cert_dir;
    argv[ac++] = "--info-file";
    argv[ac++] = info;
    argv[ac++] = "--state-dir";
    argv[ac++] = state;
    if (h->registry[0]) {
        /* A scenario with a registry gets exactly that registry (docs/scenarios.md). */
        argv[ac++] = "--registry";
        argv[ac++] = h->registry;
        argv[ac++] = "--no-dev-identities";
    }
    if (h->record[0]) {
        argv[ac++] = "--record";
        argv[ac++] = h->record;
    }
    if (r->o.verbose)
        argv[ac++] = "-v";
    argv[ac] = NULL;

    /* This same binary; resolved first (an exec of /proc/self/exe under a tool such as
     * valgrind would start the tool instead). */
    char self_exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self_exe, sizeof self_exe - 1);
    if (n <= 0)
        snprintf(self_exe, sizeof self_exe, "/proc/self/exe");
    else
        self_exe[n] = '\0';
    int out[2];
    if (pipe2(out, O_CLOEXEC) != 0)
        return false;
    int logfd = r->o.verbose ? -1 : open(h->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        if (!th_child_setup(&r->old_mask, parent))
            _exit(1);
        setpgid(0, 0); /* Ctrl-C reaches the runner, which stops the hub in order */
        int nul = open("/dev/null", O_RDONLY);
        if (nul >= 0)
            dup2(nul, 0);
        dup2(out[1], 1);
        if (logfd >= 0)
            dup2(logfd, 2);
        execv(self_exe, (char *const *)argv);
        dprintf(2, "twinhub run: cannot run twinhub serve: %s\n", strerror(errno));
        _exit(127);
    }
    close(out[1]);
    if (logfd >= 0)
        close(logfd);
    if (pid < 0) {
        close(out[0]);
        return false;
    }
    h->pid = pid;
    h->out_fd = out[0];
    h->outlen = 0;
    h->ready = false;
    fcntl(h->out_fd, F_SETFL, O_NONBLOCK);
    int64_t deadline = th_mono_ms() + READY_TIMEOUT_MS;
    while (!h->ready && h->pid > 0 && th_mono_ms() < deadline && !r->interrupted)
        pump(r, (int)(deadline - th_mono_ms()));
    if (h->ready)
        h->ready_ms = th_mono_ms();
    return h->ready;
}

static void hub_stop(struct run *r)
{
    struct hub *h = &r->hub;
    if (h->pid > 0) {
        kill(h->pid, SIGTERM);
        int64_t deadline = th_mono_ms() + HUB_STOP_MS;
        while (h->pid > 0 && th_mono_ms() < deadline)
            pump(r, (int)(deadline - th_mono_ms()));
        if (h->pid > 0) {
            kill(-h->pid, SIGKILL);
            kill(h->pid, SIGKILL);
            waitpid(h->pid, NULL, 0);
            h->pid = 0;
        }
    }
    if (h->out_fd >= 0) {
        close(h->out_fd);
        h->out_fd = -1;
    }
}

/* Why the hub did not come up, from its log. */
static void hub_explain(struct run *r)
{
    struct hub *h = &r->hub;
    if (h->pid == 0) {
        char how[128];
        th_describe_status(h->status, how, sizeof how);
        fprintf(stderr, "twinhub run: the hub (twinhub serve) %s before it was ready\n", how);
    } else {
        fprintf(stderr, "twinhub run: the hub was not ready within %d s\n",
                READY_TIMEOUT_MS / 1000);
    }
    char *tail = r->o.verbose ? NULL : file_tail(h->log, LOG_TAIL_LINES);
    if (tail) {
        fprintf(stderr, "%s\n", tail);
        free(tail);
    }
}

/* Start the runner's own hub for the current scenario: free ports, retried when taken. */
static int hub_start_own(struct run *r)
{
    struct hub *h = &r->hub;
    h->own = true;
    h->out_fd = -1;
    snprintf(h->hub_name, sizeof h->hub_name, "twinhub.localhost");
    snprintf(h->host, sizeof h->host, "127.0.0.1");
    snprintf(h->policy, sizeof h->policy, "iothubowner");
    snprintf(h->key, sizeof h->key, "%s", TH_DEV_OWNER_KEY);
    const char *tmp = getenv("TMPDIR");
    if (!tmp || tmp[0] != '/')
        tmp = "/tmp";
    snprintf(h->dir, sizeof h->dir, "%s/twinhub-run-XXXXXX", tmp);
    if (!mkdtemp(h->dir)) {
        fprintf(stderr, "twinhub run: cannot create a directory in %s: %s\n", tmp, strerror(errno));
        h->dir[0] = '\0';
        return EXIT_HUB;
    }
    snprintf(h->log, sizeof h->log, "%s/hub.log", h->dir);
    run_cert_dir(h);
    if (snprintf(h->ca_file, sizeof h->ca_file, "%s/ca.pem", h->cert_dir) >=
        (int)sizeof h->ca_file) {
        fprintf(stderr, "twinhub run: the certificate directory's path is too long\n");
        return EXIT_HUB;
    }
    h->registry[0] = '\0';
    if (r->s->registry) {
        snprintf(h->registry, sizeof h->registry, "%s/registry.json", h->dir);
        char *text = cJSON_Print(r->s->registry);
        bool ok = text && th_write_text_file("twinhub run", h->registry, text);
        free(text);
        if (!ok)
            return EXIT_HUB;
    }
    for (int attempt = 0; attempt < 3; attempt++) {
        h->mqtt_port = free_port();
        do
            h->mqtts_port = free_port();
        while (h->mqtts_port == h->mqtt_port);
        if (h->mqtt_port <= 0 || h->mqtts_port <= 0) {
            fprintf(stderr, "twinhub run: no free loopback port: %s\n", strerror(errno));
            return EXIT_HUB;
        }
        if (hub_spawn(r))
            return 0;
        if (r->interrupted)
            return EXIT_HUB;
        /* Another process may have taken a port between our check and serve's. */
        char *tail = file_tail(h->log, 5);
        bool in_use = tail && strstr(tail, "in use");
        free(tail);
        if (!in_use || h->pid > 0)
            break;
    }
    hub_explain(r);
    hub_stop(r);
    return EXIT_HUB;
}

/* Read a running hub's info file (serve --info-file) for --hub. */
static int hub_use_file(struct run *r)
{
    struct hub *h = &r->hub;
    h->own = false;
    h->out_fd = -1;
    char err[PATH_MAX + 320];
    struct th_hubinfo info;
    th_result res = th_hubinfo_load(r->o.hub_file, &info, err, sizeof err);
    if (res == TH_ERR_NOT_FOUND || res == TH_ERR_FORMAT) {
        fprintf(stderr,
                "twinhub run: --hub: %s; give the info file of a running "
                "`twinhub serve --info-file FILE`\n",
                err);
        return EXIT_HUB;
    }
    struct th_ctl_target t;
    struct th_error e = {0};
    if (res != TH_OK || th_ctl_target_from_hubinfo(&info, &t, &e) != TH_OK || !t.policy[0]) {
        fprintf(stderr,
                "twinhub run: --hub %s does not describe a hub with the development service "
                "policy (hubName, ports, serviceConnectionString)\n",
                r->o.hub_file);
        return EXIT_HUB;
    }
    h->mqtt_port = info.mqtt_port;
    h->mqtts_port = info.mqtts_port;
    snprintf(h->hub_name, sizeof h->hub_name, "%s", t.hub_name);
    snprintf(h->ca_file, sizeof h->ca_file, "%s", t.ca_file);
    snprintf(h->host, sizeof h->host, "%s", t.host);
    snprintf(h->policy, sizeof h->policy, "%s", t.policy);
    snprintf(h->key, sizeof h->key, "%s", t.key);
    return 0;
}

/* ---- run variables and identities ---- */

static void gateway(const struct run *r, char *buf, size_t size)
{
    const struct hub *h = &r->hub;
    bool v6 = strchr(h->host, ':') != NULL;
    if (h->mqtts_port && h->mqtts_port != 8883)
        snprintf(buf, size, v6 ? "[%s]:%d" : "%s:%d", h->host, h->mqtts_port);
    else
        snprintf(buf, size, v6 ? "[%s]" : "%s", h->host);
}

static void conn_string(const struct run *r, const char *d, const char *m, const char *key,
                        char *buf, size_t size)
{
    char gw[340];
    gateway(r, gw, sizeof gw);
    snprintf(buf, size, "HostName=%s;DeviceId=%s;%s%s%sSharedAccessKey=%s;GatewayHostName=%s",
             r->hub.hub_name, d, m ? "ModuleId=" : "", m ? m : "", m ? ";" : "", key, gw);
}

/* Set the run variables of one identity from its getDevice answer. */
static void identity_vars(struct run *r, const char *d, const char *m, const cJSON *ident)
{
    const cJSON *auth = cJSON_GetObjectItemCaseSensitive(ident, "authentication");
    const cJSON *sym = cJSON_GetObjectItemCaseSensitive(auth, "symmetricKey");
    const char *key = th_json_string(sym, "primaryKey", NULL);
    if (!key)
        return;
    char cs[1200], name[800];
    conn_string(r, d, m, key, cs, sizeof cs);
    if (m) {
        snprintf(name, sizeof name, "module.%s.%s.connectionString", d, m);
        th_scn_session_set_var(r->ss, name, cs);
    } else {
        snprintf(name, sizeof name, "device.%s.connectionString", d);
        th_scn_session_set_var(r->ss, name, cs);
        snprintf(name, sizeof name, "device.%s.primaryKey", d);
        th_scn_session_set_var(r->ss, name, key);
    }
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
    cJSON *cmd = th_command_new("getDevice");
    add_ids(cmd, d, m);
    cJSON *e = ctl_call(r, cmd, CALL_TIMEOUT_MS);
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
    cJSON_AddStringToObject(dev, "deviceId", TH_DEV_DEVICE_ID);
    cJSON_AddItemToArray(ids, dev);
    cJSON *mod = cJSON_CreateObject();
    cJSON_AddStringToObject(mod, "deviceId", TH_DEV_DEVICE_ID);
    cJSON_AddStringToObject(mod, "moduleId", TH_DEV_MODULE_ID);
    cJSON_AddItemToArray(ids, mod);
    size_t n = (size_t)cJSON_GetArraySize(ids);
    cJSON **cmds = calloc(2 * n, sizeof *cmds);
    char(*corrs)[TH_CTL_CORR_MAX] = calloc(2 * n, sizeof *corrs);
    bool ok = cmds && corrs;
    for (size_t i = 0; ok && i < n; i++) {
        const cJSON *id = cJSON_GetArrayItem(ids, (int)i);
        const char *d = th_json_string(id, "deviceId", NULL);
        const char *m = th_json_string(id, "moduleId", NULL);
        cmds[2 * i] = th_command_new("getTwin");
        cmds[2 * i + 1] = th_command_new("getDevice");
        ok = cmds[2 * i] && cmds[2 * i + 1];
        if (ok) {
            add_ids(cmds[2 * i], d, m);
            add_ids(cmds[2 * i + 1], d, m);
        }
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
    char unknown[300];
    char *command_line = th_vars_subst_string(cmdline, vars, unknown, sizeof unknown);
    if (!command_line) {
        fprintf(stderr, "twinhub run: the agent command uses ${%s}, which is not known\n", unknown);
        return false;
    }
    /* The environment: ours plus the hub's and the scenario's. */
    char mp[16], sp[16];
    snprintf(mp, sizeof mp, "%d", r->hub.mqtt_port);
    snprintf(sp, sizeof sp, "%d", r->hub.mqtts_port);
    const char *fixed[][2] = {
        {"TWINHUB_CONNECTION_STRING", cs},   {"IOTHUB_DEVICE_CONNECTION_STRING", cs},
        {"TWINHUB_CA_FILE", r->hub.ca_file}, {"NODE_EXTRA_CA_CERTS", r->hub.ca_file},
        {"SSL_CERT_FILE", r->hub.ca_file},   {"TWINHUB_MQTT_PORT", mp},
        {"TWINHUB_MQTTS_PORT", sp},          {"TWINHUB_HUB_NAME", r->hub.hub_name},
    };
    size_t nenv = sizeof fixed / sizeof fixed[0] + (size_t)cJSON_GetArraySize(s->agent_env);
    char **env_set = calloc(nenv + 1, 2 * sizeof *env_set);
    size_t k = 0;
    for (size_t i = 0; env_set && i < sizeof fixed / sizeof fixed[0]; i++) {
        env_set[k++] = strdup(fixed[i][0]);
        env_set[k++] = strdup(fixed[i][1]);
    }
    const cJSON *c;
    cJSON_ArrayForEach(c, s->agent_env)
    {
        if (!env_set)
            break;
        char *v = th_vars_subst_string(c->valuestring, vars, unknown, sizeof unknown);
        if (!v) {
            fprintf(stderr, "twinhub run: agent.env.%s uses ${%s}, which is not known\n", c->string,
                    unknown);
            v = strdup("");
        }
        env_set[k++] = strdup(c->string);
        env_set[k++] = v;
    }
    int logfd = open(r->agent.log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (logfd < 0) {
        fprintf(stderr, "twinhub run: cannot write %s: %s\n", r->agent.log, strerror(errno));
    }
    fflush(NULL);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        if (!th_child_setup(&r->old_mask, parent))
            _exit(1);
        setpgid(0, 0); /* its own group: the whole agent can be stopped at once */
        for (size_t i = 0; env_set && i < k; i += 2)
            setenv(env_set[i], env_set[i + 1], 1);
        if (s->dir[0] && chdir(s->dir) != 0) {
            dprintf(logfd >= 0 ? logfd : 2, "twinhub run: cannot enter %s: %s\n", s->dir,
                    strerror(errno));
            _exit(126);
        }
        int nul = open("/dev/null", O_RDONLY);
        if (nul >= 0)
            dup2(nul, 0);
        if (logfd >= 0) {
            dup2(logfd, 1);
            dup2(logfd, 2);
        }
        execl("/bin/sh", "sh", "-c", command_line, (char *)NULL);
        _exit(127);
    }
    if (logfd >= 0)
        close(logfd);
    for (size_t i = 0; env_set && i < k; i++)
        free(env_set[i]);
    free(env_set);
    if (pid < 0) {
        fprintf(stderr, "twinhub run: cannot start the agent: %s\n", strerror(errno));
        free(command_line);
        return false;
    }
    setpgid(pid, pid);
    if (r->o.verbose)
        fprintf(stderr, "twinhub run: started the agent (pid %ld) as %s%s%s: %s\n", (long)pid, d,
                m ? "/" : "", m ? m : "", command_line);
    free(command_line);
    r->agent.pid = pid;
    r->agent.started = true;
    r->agent.exited = false;
    r->agent.reported = false;
    return true;
}

/* SIGTERM to the agent's process group, SIGKILL after AGENT_STOP_MS. */
static void agent_stop(struct run *r)
{
    struct agent *a = &r->agent;
    if (a->pid <= 0)
        return;
    pid_t pid = a->pid;
    kill(-pid, SIGTERM);
    int64_t deadline = th_mono_ms() + AGENT_STOP_MS;
    while (a->pid > 0 && th_mono_ms() < deadline)
        pump(r, (int)(deadline - th_mono_ms()));
    if (a->pid > 0) {
        kill(-pid, SIGKILL);
        waitpid(pid, NULL, 0);
        a->pid = 0;
    } else {
        kill(-pid, SIGKILL); /* anything the shell left behind */
    }
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
        pump(r, (int)left);
    }
    return verdict_now(r, i) == TH_VERDICT_PENDING;
}

static cJSON *mark_command(const struct run *r, size_t i)
{
    const struct th_step *st = &r->s->steps[i];
    cJSON *cmd = th_command_new("mark");
    cJSON *data = cmd ? cJSON_AddObjectToObject(cmd, "data") : NULL;
    if (!data) {
        cJSON_Delete(cmd);
        return NULL;
    }
    cJSON_AddStringToObject(data, "scenario", r->s->name);
    cJSON_AddStringToObject(data, "step", st->name);
    cJSON_AddNumberToObject(data, "index", st->index);
    cJSON_AddStringToObject(data, "action", th_step_kind_name(st->kind));
    return cmd;
}

static bool scenario_mark(struct run *r, const char *action)
{
    cJSON *cmd = th_command_new("mark");
    cJSON *data = cmd ? cJSON_AddObjectToObject(cmd, "data") : NULL;
    if (!data) {
        cJSON_Delete(cmd);
        return false;
    }
    cJSON_AddStringToObject(data, "scenario", r->s->name);
    cJSON_AddStringToObject(data, "file", r->s->file);
    cJSON_AddNumberToObject(data, "index", 0);
    cJSON_AddStringToObject(data, "action", action);
    cJSON *e = ctl_call(r, cmd, CALL_TIMEOUT_MS);
    cJSON_Delete(cmd);
    bool ok = e != NULL;
    cJSON_Delete(e);
    return ok;
}

/* The control command that performs an action or a fault step; NULL for sleep/restart. */
static cJSON *action_command(struct run *r, const struct th_step *st, const cJSON *b, char *err,
                             size_t errsize)
{
    const char *d = th_json_string(b, "deviceId", NULL);
    const char *m = th_json_string(b, "moduleId", NULL);
    cJSON *cmd = NULL, *patch, *props;
    switch (st->kind) {
    case TH_STEP_PATCH_DESIRED:
    case TH_STEP_REPLACE_DESIRED:
        cmd = th_command_new(st->kind == TH_STEP_PATCH_DESIRED ? "updateTwin" : "replaceTwin");
        add_ids(cmd, d, m);
        patch = cJSON_AddObjectToObject(cmd, "patch");
        props = cJSON_AddObjectToObject(patch, "properties");
        cJSON_AddItemToObject(
            props, "desired",
            cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(
                                b, st->kind == TH_STEP_PATCH_DESIRED ? "patch" : "desired"),
                            1));
        break;
    case TH_STEP_UPDATE_TAGS:
        cmd = th_command_new("updateTwin");
        add_ids(cmd, d, m);
        patch = cJSON_AddObjectToObject(cmd, "patch");
        cJSON_AddItemToObject(patch, "tags",
                              cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(b, "tags"), 1));
        break;
    case TH_STEP_INVOKE_METHOD: {
        cmd = th_command_new("invokeMethod");
        add_ids(cmd, d, m);
        cJSON_AddStringToObject(cmd, "methodName", th_json_string(b, "methodName", ""));
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(b, "payload");
        cJSON_AddItemToObject(cmd, "payload", p ? cJSON_Duplicate(p, 1) : cJSON_CreateNull());
        static const char *const t[] = {"responseTimeoutInSeconds", "connectTimeoutInSeconds"};
        for (int i = 0; i < 2; i++)
            if (cJSON_GetObjectItemCaseSensitive(b, t[i]))
                cJSON_AddNumberToObject(cmd, t[i], th_json_number(b, t[i], 0));
        break;
    }
    case TH_STEP_SEND_C2D: {
        cmd = th_command_new("sendC2D");
        add_ids(cmd, d, NULL);
        const cJSON *bj = cJSON_GetObjectItemCaseSensitive(b, "bodyJson");
        if (bj) {
            char *text = cJSON_PrintUnformatted(bj);
            cJSON_AddStringToObject(cmd, "body", text ? text : "");
            free(text);
        } else {
            cJSON_AddStringToObject(cmd, "body", th_json_string(b, "body", ""));
        }
        static const char *const keys[] = {"messageId", "correlationId", "contentType",
                                           "contentEncoding"};
        for (size_t i = 0; i < 4; i++)
            if (th_json_string(b, keys[i], NULL))
                cJSON_AddStringToObject(cmd, keys[i], th_json_string(b, keys[i], ""));
        const cJSON *pr = cJSON_GetObjectItemCaseSensitive(b, "properties");
        if (pr)
            cJSON_AddItemToObject(cmd, "properties", cJSON_Duplicate(pr, 1));
        break;
    }
    case TH_STEP_CREATE_MODULES: {
        cmd = th_command_new("ensureModule");
        cJSON_AddStringToObject(cmd, "moduleId", th_json_string(b, "moduleId", ""));
        const cJSON *des = cJSON_GetObjectItemCaseSensitive(b, "desired");
        const char *file = th_json_string(b, "desiredFile", NULL);
        if (file) {
            char path[PATH_MAX * 2];
            snprintf(path, sizeof path, "%s%s%s", file[0] == '/' ? "" : r->s->dir,
                     file[0] == '/' ? "" : "/", file);
            FILE *f = fopen(path, "re");
            char *text = f ? calloc(1, TH_SCN_MAX_FILE_BYTES + 1) : NULL;
            size_t len = text ? fread(text, 1, TH_SCN_MAX_FILE_BYTES, f) : 0;
            if (f)
                fclose(f);
            cJSON *doc = NULL;
            struct th_error e = {0};
            if (!text || th_json_parse(text, len, TH_SCN_MAX_FILE_BYTES, TH_SCN_MAX_DEPTH, &doc,
                                       &e) != TH_OK) {
                if (snprintf(err, errsize, "cannot read desiredFile %s: %s", path,
                             text ? e.message : strerror(errno)) >= (int)errsize)
                    err[errsize - 1] = '\0';
                free(text);
                cJSON_Delete(cmd);
                return NULL;
            }
            free(text);
            cJSON_AddItemToObject(cmd, "desired", doc);
        } else if (des) {
            cJSON_AddItemToObject(cmd, "desired", cJSON_Duplicate(des, 1));
        }
        const cJSON *tags = cJSON_GetObjectItemCaseSensitive(b, "tags");
        if (tags)
            cJSON_AddItemToObject(cmd, "tags", cJSON_Duplicate(tags, 1));
        const cJSON *ids = cJSON_GetObjectItemCaseSensitive(b, "deviceIds");
        if (ids)
            cJSON_AddItemToObject(cmd, "deviceIds", cJSON_Duplicate(ids, 1));
        break;
    }
    case TH_STEP_QUERY:
        cmd = th_command_new("query");
        cJSON_AddStringToObject(cmd, "query", th_json_string(b, "query", ""));
        cJSON_AddNumberToObject(cmd, "pageSize", 1000);
        break;
    case TH_STEP_DISCONNECT:
    case TH_STEP_EXPIRE_TOKEN:
        cmd = th_command_new(st->kind == TH_STEP_DISCONNECT ? "disconnect" : "expireToken");
        add_ids(cmd, d, m);
        break;
    case TH_STEP_INJECT_ERROR:
        cmd = th_command_new("injectError");
        add_ids(cmd, d, m);
        cJSON_AddStringToObject(cmd, "operation", th_json_string(b, "operation", ""));
        cJSON_AddNumberToObject(cmd, "status", th_json_number(b, "status", 429));
        cJSON_AddNumberToObject(cmd, "count", th_json_number(b, "count", 1));
        break;
    default:
        break;
    }
    if (!cmd)
        snprintf(err, errsize, "out of memory");
    return cmd;
}

/* A query with every page: the outcome {"items": [...], "count": n}, or the error. */
static cJSON *run_query(struct run *r, const cJSON *first_entry, const char *q)
{
    cJSON *items = cJSON_CreateArray();
    const cJSON *entry = first_entry;
    cJSON *owned = NULL;
    for (int page = 0; page < 1000; page++) {
        const cJSON *err = cJSON_GetObjectItemCaseSensitive(entry, "error");
        if (!entry || (err && !cJSON_IsNull(err))) {
            cJSON *o = entry ? outcome_of(entry) : NULL;
            cJSON_Delete(items);
            cJSON_Delete(owned);
            return o;
        }
        const cJSON *data = cJSON_GetObjectItemCaseSensitive(entry, "data");
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(data, "items"))
            cJSON_AddItemToArray(items, cJSON_Duplicate(it, 1));
        const char *cont = th_json_string(data, "continuation", NULL);
        if (!cont)
            break;
        cJSON *cmd = th_command_new("query");
        cJSON_AddStringToObject(cmd, "query", q);
        cJSON_AddNumberToObject(cmd, "pageSize", 1000);
        cJSON_AddStringToObject(cmd, "continuation", cont);
        cJSON_Delete(owned);
        owned = ctl_call(r, cmd, CALL_TIMEOUT_MS);
        cJSON_Delete(cmd);
        entry = owned;
    }
    cJSON_Delete(owned);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "count", cJSON_GetArraySize(items));
    cJSON_AddItemToObject(o, "items", items);
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
    hub_stop(r);
    th_scn_session_hub_restarted(r->ss);
    if (!hub_spawn(r)) {
        hub_explain(r);
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
    cJSON *mark = mark_command(r, i);
    enum th_step_class cls = th_step_kind_class(st->kind);
    bool plain_action = (cls != TH_STEP_CLASS_EXPECTATION) && st->kind != TH_STEP_SLEEP &&
                        st->kind != TH_STEP_RESTART_HUB;
    if (plain_action) {
        char err[PATH_MAX + 200] = "";
        cJSON *cmd = action_command(r, st, b, err, sizeof err);
        if (!cmd) {
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
                pump(r, (int)left);
            }
            cJSON_Delete(th_ctl_client_take(r->ctl, corrs[0]));
            if (verdict_now(r, i) == TH_VERDICT_PENDING) {
                if (!entry) {
                    th_scn_session_set_result(r->ss, TH_VERDICT_FAIL, th_now_us(),
                                              "the hub did not answer the command in time", NULL);
                } else {
                    cJSON *outcome = st->kind == TH_STEP_QUERY
                                         ? run_query(r, entry, th_json_string(b, "query", ""))
                                         : outcome_of(entry);
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
            cJSON *cmd = th_command_new("getStatistics");
            cJSON *e = ctl_call(r, cmd, CALL_TIMEOUT_MS);
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
        pump(r, (int)(wait_ms > 1000 ? 1000 : wait_ms));
    }
}

/* ---- one scenario ---- */

static void print_agent_log(const struct run *r)
{
    if (!r->agent.started)
        return;
    char *tail = file_tail(r->agent.log, LOG_TAIL_LINES);
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
        rc = hub_use_file(r);
    } else {
        if (r->o.record)
            snprintf(r->hub.record, sizeof r->hub.record, "%s", r->o.record);
        rc = hub_start_own(r);
    }
    if (rc == 0 && !ctl_open(r))
        rc = EXIT_HUB;
    if (rc == 0)
        th_time_format(th_now_us(), out->timestamp);
    int64_t start_us = th_now_us();
    if (rc == 0 && !scenario_mark(r, "scenarioBegin"))
        rc = EXIT_HUB;
    if (rc == 0 && !r->hub.own && s->registry) {
        cJSON *cmd = th_command_new("importRegistry");
        cJSON_AddItemToObject(cmd, "registry", cJSON_Duplicate(s->registry, 1));
        cJSON *e = ctl_call(r, cmd, CALL_TIMEOUT_MS);
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
        if (!seed_identities(r))
            rc = EXIT_HUB;
    }
    if (rc != 0) {
        if (asprintf(&out->error, "the hub could not be %s", r->o.hub_file ? "used" : "started") <
            0)
            out->error = NULL;
        th_scn_session_skip_rest(r->ss);
        ctl_close(r);
        hub_stop(r);
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
    agent_stop(r);
    int passed = 0, failed = 0, skipped = 0;
    for (size_t i = 0; i < s->nsteps; i++) {
        enum th_verdict v = th_scn_session_result(r->ss, i)->verdict;
        passed += v == TH_VERDICT_PASS;
        failed += v == TH_VERDICT_FAIL;
        skipped += v == TH_VERDICT_SKIP || v == TH_VERDICT_NONE;
    }
    if (failed) {
        print_agent_log(r);
        out->system_out = r->agent.started ? file_tail(r->agent.log, LOG_TAIL_LINES) : NULL;
    }
    printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    fflush(stdout);
    out->time_s = (double)(th_now_us() - start_us) / 1e6;
    ctl_close(r);
    hub_stop(r);
    return failed ? TH_EXIT_FAIL : TH_EXIT_OK;
}

/* ---- the command ---- */

enum { OPT_AGENT = 256, OPT_HUB, OPT_JUNIT, OPT_RECORD, OPT_REPORT_DIR };

static int parse_args(int argc, char **argv, struct opts *o)
{
    static const struct option opts[] = {
        {"agent", required_argument, NULL, OPT_AGENT},
        {"hub", required_argument, NULL, OPT_HUB},
        {"junit", required_argument, NULL, OPT_JUNIT},
        {"record", required_argument, NULL, OPT_RECORD},
        {"report-dir", required_argument, NULL, OPT_REPORT_DIR},
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

int th_cmd_run(int argc, char **argv)
{
    struct run r = {.sig_fd = -1, .t0_ms = th_mono_ms()};
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
            rmtree(r.hub.dir);
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
            rmtree(r.report_dir);
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
    if (r.own_record)
        fclose(r.own_record);
    if (r.sig_fd >= 0) {
        close(r.sig_fd);
        sigprocmask(SIG_SETMASK, &r.old_mask, NULL);
    }
    return rc;
}
