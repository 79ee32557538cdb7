/*
 * run_hub.c - the hub of `twinhub run` (docs/scenarios.md, "Running"): its
 * own `twinhub serve` (this same binary) on free loopback ports with a state
 * directory, so that restartHub keeps the state, or a running hub given with
 * --hub (its info file). Waits go through th_run_pump, which reads serve's
 * stdout until "twinhub: ready" and reaps it when it exits.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
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
#include "util.h"

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
bool th_run_hub_spawn(struct run *r)
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

/* Start the runner's own hub for the current scenario: free ports, retried when taken. */
int th_run_hub_start_own(struct run *r)
{
    struct hub *h = &r->hub;
    h->own = true;
    h->out_fd = -1;
    snprintf(h->hub_name, sizeof h->hub_name, "127.0.0.1"); /* serve's default name */
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
    snprintf(h->ca_file, sizeof h->ca_file, "%s", t.ca_file);
    snprintf(h->host, sizeof h->host, "%s", t.host);
    snprintf(h->policy, sizeof h->policy, "%s", t.policy);
    snprintf(h->key, sizeof h->key, "%s", t.key);
    return 0;
}
