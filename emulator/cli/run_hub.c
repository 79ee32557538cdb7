/*
 * run_hub.c - the hub of `twinhub run` (docs/scenarios.md, "Running"): its
 * own `twinhub serve` (this same binary) with a state directory, so that
 * restartHub keeps the state, or a running hub given with --hub (its info
 * file). Waits go through th_run_pump, which reads serve's stdout until
 * "twinhub: ready" and reaps it when it exits.
 *
 * The own hub listens on a loopback address of its own, 127.x.y.z (Linux
 * routes all of 127.0.0.0/8 to lo), on the standard ports 8883 and 1883 and,
 * when it may bind it, 443: an agent whose SDK hard-codes 8883 (the Azure
 * IoT C SDKs) dials HostName=127.x.y.z unmodified, and runs side by side
 * each get another address. The address is the hub's name as well, so the
 * connection string needs no GatewayHostName, and serve issues a server
 * certificate for it (server-<address>.pem in the cert dir, cached). An
 * flock on a file per address in the cert dir keeps concurrent runners off
 * each other's address; a bind probe skips addresses someone else listens
 * on. 127.0.0.1 is never used (a user's `twinhub serve` lives there).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <arpa/inet.h>

#include "ctl_client.h" /* th_ctl_target_from_hubinfo */
#include "hubinfo_file.h"
#include "registry.h" /* TH_DEV_OWNER_KEY */
#include "run.h"
#include "th_net.h"
#include "util.h"

/* The standard ports of IoT Hub (protocol.md): what SDKs hard-code. */
#define STD_MQTTS_PORT 8883
#define STD_MQTT_PORT 1883
#define STD_HTTPS_PORT 443
/* Candidates 127.84.72.1, 127.84.72.2, ... ("TH"): one per concurrent run. */
#define ADDR_FIRST_B 84
#define ADDR_FIRST_C 72
#define ADDR_TRIES 508

/* Candidate `i` as text. */
static void addr_candidate(int i, char buf[static 16])
{
    snprintf(buf, 16, "127.%d.%d.%d", ADDR_FIRST_B, (ADDR_FIRST_C + i / 254) & 0xff, 1 + i % 254);
}

/* Whether `port` on `ip` can be bound the way mosquitto binds it: 0 or the errno. */
static int probe_bind(const char *ip, int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return errno;
    int one = 1, err = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, ip, &sa.sin_addr);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        err = errno;
    close(fd);
    return err;
}

void th_run_hub_release_addr(struct run *r)
{
    if (r->addr.lock_fd >= 0)
        close(r->addr.lock_fd); /* releases the flock */
    r->addr.lock_fd = -1;
    r->addr.ip[0] = '\0';
}

/*
 * Choose the next free 127.x.y.z for the run's hubs (r->addr). False when
 * this machine has no such addresses or none is free: then the hub falls back
 * to free ports on 127.0.0.1 (r->addr.fallback).
 */
static bool pick_addr(struct run *r, const char *lock_dir)
{
    th_run_hub_release_addr(r);
    for (; r->addr.next < ADDR_TRIES; r->addr.next++) {
        char ip[16], lock[PATH_MAX];
        addr_candidate(r->addr.next, ip);
        int fd = -1;
        if (snprintf(lock, sizeof lock, "%s/.run-%s.lock", lock_dir, ip) < (int)sizeof lock)
            fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) != 0) {
            close(fd); /* another runner has it */
            continue;
        }
        int e1 = probe_bind(ip, STD_MQTTS_PORT);
        int e2 = e1 ? e1 : probe_bind(ip, STD_MQTT_PORT);
        if (e2 == EADDRINUSE) {
            if (fd >= 0)
                close(fd);
            continue;
        }
        if (e2) {
            /* EADDRNOTAVAIL: 127/8 is not ours here; anything else: the same for every one */
            if (fd >= 0)
                close(fd);
            if (r->o.verbose)
                fprintf(stderr, "twinhub run: cannot listen on %s: %s; using free ports on "
                                "127.0.0.1\n", ip, strerror(e2));
            return false;
        }
        snprintf(r->addr.ip, sizeof r->addr.ip, "%s", ip);
        r->addr.lock_fd = fd;
        r->addr.https = probe_bind(ip, STD_HTTPS_PORT) == 0;
        r->addr.next++;
        if (!r->addr.https && !r->addr.noted) {
            r->addr.noted = true;
            fprintf(stderr,
                    "twinhub run: note: the hubs have no HTTPS listener: port 443 needs root or "
                    "cap_net_bind_service (sudo setcap cap_net_bind_service=+ep twinhub); MQTT "
                    "is on 8883 and 1883 as usual\n");
        }
        return true;
    }
    if (r->o.verbose)
        fprintf(stderr, "twinhub run: no free address in 127.%d.%d.0/23; using free ports on "
                        "127.0.0.1\n", ADDR_FIRST_B, ADDR_FIRST_C);
    return false;
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
bool th_run_hub_spawn(struct run *r)
{
    struct hub *h = &r->hub;
    char mp[16], sp[16], hp[16], info[PATH_MAX + 16], state[PATH_MAX + 16];
    snprintf(mp, sizeof mp, "%d", h->mqtt_port);
    snprintf(sp, sizeof sp, "%d", h->mqtts_port);
    snprintf(hp, sizeof hp, "%d", h->https_port);
    snprintf(info, sizeof info, "%s/hub.json", h->dir);
    snprintf(state, sizeof state, "%s/state", h->dir);
    const char *argv[32];
    int ac = 0;
    argv[ac++] = "twinhub";
    argv[ac++] = "serve";
    argv[ac++] = "--mqtt-port";
    argv[ac++] = mp;
    argv[ac++] = "--mqtts-port";
    argv[ac++] = sp;
    /* Scenarios drive the hub through the control API; 443 is for agents on WebSockets. */
    argv[ac++] = "--https-port";
    argv[ac++] = hp;
    if (h->host[0] && strcmp(h->host, "127.0.0.1") != 0) {
        argv[ac++] = "--bind";
        argv[ac++] = h->host;
    }
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
        th_run_pump(r, (int)(deadline - th_mono_ms()));
    if (h->ready)
        h->ready_ms = th_mono_ms();
    return h->ready;
}

void th_run_hub_stop(struct run *r)
{
    struct hub *h = &r->hub;
    if (h->pid > 0) {
        kill(h->pid, SIGTERM);
        int64_t deadline = th_mono_ms() + HUB_STOP_MS;
        while (h->pid > 0 && th_mono_ms() < deadline)
            th_run_pump(r, (int)(deadline - th_mono_ms()));
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
void th_run_hub_explain(struct run *r)
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
    char *tail = r->o.verbose ? NULL : th_tail_lines(h->log, LOG_TAIL_LINES);
    if (tail) {
        fprintf(stderr, "%s\n", tail);
        free(tail);
    }
}

/* Start the runner's own hub for the current scenario: its own address (or free ports),
 * retried on another one when taken. */
int th_run_hub_start_own(struct run *r)
{
    struct hub *h = &r->hub;
    h->own = true;
    h->out_fd = -1;
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
    if (!th_make_dirs(h->cert_dir, 0700, NULL, 0)) {
        fprintf(stderr, "twinhub run: cannot create %s: %s\n", h->cert_dir, strerror(errno));
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
    for (int attempt = 0; attempt < 4; attempt++) {
        if (!r->addr.fallback && !r->addr.ip[0] && !pick_addr(r, h->cert_dir))
            r->addr.fallback = true;
        if (r->addr.fallback) {
            snprintf(h->hub_name, sizeof h->hub_name, "127.0.0.1"); /* serve's default name */
            snprintf(h->host, sizeof h->host, "127.0.0.1");
            h->mqtt_port = th_free_loopback_port();
            do
                h->mqtts_port = th_free_loopback_port();
            while (h->mqtts_port == h->mqtt_port);
            h->https_port = 0;
            if (h->mqtt_port <= 0 || h->mqtts_port <= 0) {
                fprintf(stderr, "twinhub run: no free loopback port: %s\n", strerror(errno));
                return EXIT_HUB;
            }
        } else {
            /* The address is the hub's name: HostName is what the agent dials. */
            snprintf(h->hub_name, sizeof h->hub_name, "%s", r->addr.ip);
            snprintf(h->host, sizeof h->host, "%s", r->addr.ip);
            h->mqtt_port = STD_MQTT_PORT;
            h->mqtts_port = STD_MQTTS_PORT;
            h->https_port = r->addr.https ? STD_HTTPS_PORT : 0;
        }
        if (th_run_hub_spawn(r))
            return 0;
        if (r->interrupted)
            return EXIT_HUB;
        /* Another process may have taken a port between our check and serve's. */
        char *tail = th_tail_lines(h->log, 5);
        bool in_use = tail && strstr(tail, "in use");
        free(tail);
        if (!in_use || h->pid > 0)
            break;
        th_run_hub_release_addr(r); /* the next attempt picks the next address */
    }
    th_run_hub_explain(r);
    th_run_hub_stop(r);
    return EXIT_HUB;
}

/* Read a running hub's info file (serve --info-file) for --hub. */
int th_run_hub_use_file(struct run *r)
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
    snprintf(h->id_scope, sizeof h->id_scope, "%s", info.id_scope);
    snprintf(h->ca_file, sizeof h->ca_file, "%s", t.ca_file);
    snprintf(h->host, sizeof h->host, "%s", t.host);
    snprintf(h->policy, sizeof h->policy, "%s", t.policy);
    snprintf(h->key, sizeof h->key, "%s", t.key);
    return 0;
}
