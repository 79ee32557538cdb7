/*
 * harness.c - integration-test harness: runs the real `twinhub serve` (the
 * Debian mosquitto broker with our plugin) on free loopback ports and drives
 * it with libmosquitto clients. See harness.h for the contracts.
 *
 * Waiting discipline: nothing sleeps. Serve's readiness is its "twinhub:
 * ready" stdout line (read by a thread, signalled through a condition
 * variable), its exit is a pidfd becoming readable, and every MQTT wait is a
 * condition wait on the client's queue, all bounded by a deadline.
 */
#define _GNU_SOURCE
#include "harness.h"
#include "th_net.h"

#include <stdarg.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <mosquitto.h>

#include "hubinfo_file.h"
#include "registry.h"
#include "sas.h"
#include "th_file.h"

/* Logs, /proc entries and recordings the tests read back. */
#define IT_MAX_FILE_BYTES (256u * 1024 * 1024)
#define IT_READY_TIMEOUT_MS 20000 /* first start makes a CA and a server key */
#define IT_STOP_TIMEOUT_MS 10000

static void diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void diag(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("# ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* Prints a file's content as TAP diagnostics (each line prefixed "# "). */
static void diag_file(const char *label, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    char line[4096];
    diag("---- %s (%s) ----", label, path);
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        diag("%s", line);
    }
    fclose(f);
}

/* A whole file (logs, /proc entries, info files); NULL when unreadable. */
static char *read_file(const char *path)
{
    return th_file_read(path, IT_MAX_FILE_BYTES, NULL);
}

char *it_strdupf(const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        abort();
    va_end(ap);
    return s;
}

static void deadline_after(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static void cond_init_monotonic(pthread_cond_t *cv)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &attr);
    pthread_condattr_destroy(&attr);
}

/* ------------------------------------------------------------------ ports */

int it_free_port(void)
{
    return th_free_loopback_port();
}

/* -------------------------------------------------------------------- hub */

/* Copies serve's stdout into dir/stdout.log and flags the "twinhub: ready" line. */
static void *reader_main(void *arg)
{
    struct it_hub *hub = arg;
    char path[IT_PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/stdout.log", hub->dir);
    FILE *log = fopen(path, "a");
    char line[8192];
    size_t llen = 0;
    for (;;) {
        struct pollfd fds[2] = {{.fd = hub->stdout_fd, .events = POLLIN},
                                {.fd = hub->stop_pipe[0], .events = POLLIN}};
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (fds[1].revents)
            break;
        char buf[4096];
        ssize_t n = read(hub->stdout_fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (log) {
            fwrite(buf, 1, (size_t)n, log);
            fflush(log);
        }
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] != '\n') {
                if (llen < sizeof line - 1)
                    line[llen++] = buf[i];
                continue;
            }
            line[llen] = '\0';
            while (llen > 0 && isspace((unsigned char)line[llen - 1]))
                line[--llen] = '\0';
            if (strcmp(line, "twinhub: ready") == 0) {
                pthread_mutex_lock(&hub->mu);
                hub->ready = true;
                pthread_cond_broadcast(&hub->cv);
                pthread_mutex_unlock(&hub->mu);
            }
            llen = 0;
        }
    }
    if (log)
        fclose(log);
    pthread_mutex_lock(&hub->mu);
    hub->eof = true;
    pthread_cond_broadcast(&hub->cv);
    pthread_mutex_unlock(&hub->mu);
    return NULL;
}

static void reader_stop(struct it_hub *hub)
{
    if (!hub->reader_started)
        return;
    if (write(hub->stop_pipe[1], "x", 1) < 0) {
        /* the thread also ends at EOF */
    }
    pthread_join(hub->reader, NULL);
    hub->reader_started = false;
    close(hub->stop_pipe[0]);
    close(hub->stop_pipe[1]);
    close(hub->stdout_fd);
    hub->stdout_fd = -1;
}

/* Waits for pid (our child) to exit within ms; returns its wait status or -1 on timeout. */
static int wait_child(pid_t pid, int ms)
{
    int status = 0;
    int pfd = pidfd_open(pid, 0);
    if (pfd >= 0) {
        struct pollfd p = {.fd = pfd, .events = POLLIN};
        int r;
        do {
            r = poll(&p, 1, ms);
        } while (r < 0 && errno == EINTR);
        close(pfd);
        if (r == 0)
            return -1;
    }
    if (waitpid(pid, &status, 0) != pid)
        return -1;
    return status;
}

/* Pids of live (non-zombie) processes in process group pgid, other than skip. */
static int group_members(pid_t pgid, pid_t *out, int max)
{
    int n = 0;
    DIR *d = opendir("/proc");
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < max) {
        if (!isdigit((unsigned char)e->d_name[0]))
            continue;
        char path[300];
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        char *st = read_file(path);
        if (!st)
            continue;
        char *rp = strrchr(st, ')');
        char state = 0;
        int ppid = 0, pgrp = 0;
        if (rp && sscanf(rp + 1, " %c %d %d", &state, &ppid, &pgrp) == 3 && pgrp == pgid &&
            state != 'Z')
            out[n++] = (pid_t)atoi(e->d_name);
        free(st);
    }
    closedir(d);
    return n;
}

/* Waits up to ms for an arbitrary process to end (pidfd); true when gone. */
static bool wait_gone(pid_t pid, int ms)
{
    int pfd = pidfd_open(pid, 0);
    if (pfd < 0)
        return errno == ESRCH;
    struct pollfd p = {.fd = pfd, .events = POLLIN};
    int r;
    do {
        r = poll(&p, 1, ms);
    } while (r < 0 && errno == EINTR);
    close(pfd);
    return r > 0;
}

static void reap_orphans(void)
{
    /* We are a child subreaper: collect any descendants that ended. */
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int read_info(struct it_hub *hub, const char *info_path, int *info_pid)
{
    struct th_hubinfo info;
    char err[IT_PATH_MAX + 200];
    if (th_hubinfo_load(info_path, &info, err, sizeof err) != TH_OK) {
        diag("%s", err);
        return -1;
    }
    if (!info.ca_file[0] || info.mqtt_port != hub->mqtt_port ||
        info.mqtts_port != hub->mqtts_port) {
        diag("info file lacks caFile or its ports (%d, %d) differ from %d, %d", info.mqtt_port,
             info.mqtts_port, hub->mqtt_port, hub->mqtts_port);
        return -1;
    }
    snprintf(hub->hub_name, sizeof hub->hub_name, "%s", info.hub_name);
    snprintf(hub->ca_file, sizeof hub->ca_file, "%s", info.ca_file);
    *info_pid = (int)info.pid;
    return 0;
}

/* One attempt; *port_in_use tells the caller whether a retry with new ports makes sense. */
static int start_once(struct it_hub *hub, const char *bin, const char *reg,
                      const char *const *extra, bool *port_in_use)
{
    *port_in_use = false;
    hub->mqtt_port = it_free_port();
    do {
        hub->mqtts_port = it_free_port();
    } while (hub->mqtts_port == hub->mqtt_port);
    if (hub->mqtt_port < 0 || hub->mqtts_port < 0) {
        diag("no free port: %s", strerror(errno));
        return -1;
    }
    char certs[IT_PATH_MAX + 16], info[IT_PATH_MAX + 16], mp[16], sp[16];
    snprintf(certs, sizeof certs, "%s/certs", hub->dir);
    snprintf(info, sizeof info, "%s/info.json", hub->dir);
    snprintf(hub->stderr_path, sizeof hub->stderr_path, "%s/stderr.log", hub->dir);
    snprintf(mp, sizeof mp, "%d", hub->mqtt_port);
    snprintf(sp, sizeof sp, "%d", hub->mqtts_port);
    unlink(info);

    int out[2];
    if (pipe2(out, O_CLOEXEC) < 0 || pipe2(hub->stop_pipe, O_CLOEXEC) < 0) {
        diag("pipe: %s", strerror(errno));
        return -1;
    }
    const char *argv[16 + IT_MAX_EXTRA_ARGS];
    int ac = 0;
    argv[ac++] = bin;
    argv[ac++] = "serve";
    argv[ac++] = "--mqtt-port";
    argv[ac++] = mp;
    argv[ac++] = "--mqtts-port";
    argv[ac++] = sp;
    argv[ac++] = "--cert-dir";
    argv[ac++] = certs;
    argv[ac++] = "--info-file";
    argv[ac++] = info;
    argv[ac++] = "--registry";
    argv[ac++] = reg;
    /* No HTTPS gateway (443 by default) unless a test asks for one in its extra arguments,
     * which come later and win: hubs of parallel tests must not compete for a port. */
    argv[ac++] = "--https-port";
    argv[ac++] = "0";
    if (getenv("IT_VERBOSE"))
        argv[ac++] = "-v";
    for (int i = 0; extra && extra[i] && i < IT_MAX_EXTRA_ARGS; i++)
        argv[ac++] = extra[i];
    argv[ac] = NULL;

    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        diag("fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        setpgid(0, 0);
        int err = open(hub->stderr_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        int nul = open("/dev/null", O_RDONLY);
        if (err < 0 || nul < 0 || dup2(out[1], 1) < 0 || dup2(err, 2) < 0 || dup2(nul, 0) < 0)
            _exit(126);
        execv(bin, (char *const *)argv);
        dprintf(2, "exec %s: %s\n", bin, strerror(errno));
        _exit(127);
    }
    setpgid(pid, pid);
    close(out[1]);
    hub->pid = pid;
    hub->stdout_fd = out[0];
    hub->ready = hub->eof = false;
    if (pthread_create(&hub->reader, NULL, reader_main, hub) != 0) {
        diag("pthread_create failed");
        kill(-pid, SIGKILL);
        wait_child(pid, IT_STOP_TIMEOUT_MS);
        return -1;
    }
    hub->reader_started = true;

    struct timespec dl;
    deadline_after(&dl, IT_READY_TIMEOUT_MS);
    pthread_mutex_lock(&hub->mu);
    while (!hub->ready && !hub->eof) {
        if (pthread_cond_timedwait(&hub->cv, &hub->mu, &dl) == ETIMEDOUT)
            break;
    }
    bool ready = hub->ready;
    pthread_mutex_unlock(&hub->mu);

    int info_pid = 0;
    if (ready && read_info(hub, info, &info_pid) == 0)
        return 0;

    if (!ready)
        diag("twinhub serve did not print 'twinhub: ready' within %d ms", IT_READY_TIMEOUT_MS);
    kill(-pid, SIGKILL);
    int st = wait_child(pid, IT_STOP_TIMEOUT_MS);
    reader_stop(hub);
    hub->pid = 0;
    if (st >= 0 && WIFEXITED(st))
        diag("twinhub serve exited with status %d", WEXITSTATUS(st));
    char *errtext = read_file(hub->stderr_path);
    if (errtext && (strcasestr(errtext, "in use") || strcasestr(errtext, "EADDRINUSE")))
        *port_in_use = true;
    free(errtext);
    char so[IT_PATH_MAX + 16];
    snprintf(so, sizeof so, "%s/stdout.log", hub->dir);
    diag_file("twinhub serve stdout", so);
    diag_file("twinhub serve stderr", hub->stderr_path);
    return -1;
}

int it_hub_start(struct it_hub *hub)
{
    return it_hub_start_with(hub, NULL, NULL);
}

int it_hub_start_with(struct it_hub *hub, const char *registry, const char *const *extra_args)
{
    memset(hub, 0, sizeof *hub);
    hub->stdout_fd = -1;
    pthread_mutex_init(&hub->mu, NULL);
    cond_init_monotonic(&hub->cv);
    mosquitto_lib_init();
    /* Orphaned descendants (a broker that outlives serve) come to us, so we can see them. */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    signal(SIGPIPE, SIG_IGN);

    const char *bin = getenv("TWINHUB_BIN");
    const char *reg = registry ? registry : getenv("IT_REGISTRY");
    if (!bin || !reg) {
        diag("TWINHUB_BIN and IT_REGISTRY must be set (meson sets them)");
        return -1;
    }
    const char *tmp = getenv("TMPDIR");
    snprintf(hub->dir, sizeof hub->dir, "%s/twinhub-it-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(hub->dir)) {
        diag("mkdtemp: %s", strerror(errno));
        return -1;
    }
    for (int attempt = 0; attempt < 2; attempt++) {
        bool in_use = false;
        if (start_once(hub, bin, reg, extra_args, &in_use) == 0)
            return 0;
        if (!in_use)
            break;
        diag("port in use; retrying once with new ports");
    }
    return -1;
}

int it_hub_stop(struct it_hub *hub)
{
    if (hub->pid <= 0)
        return -1;
    int rc = 0;
    pid_t pid = hub->pid;
    kill(pid, SIGTERM);
    int st = wait_child(pid, IT_STOP_TIMEOUT_MS);
    if (st < 0) {
        diag("twinhub serve did not exit within %d ms of SIGTERM", IT_STOP_TIMEOUT_MS);
        kill(-pid, SIGKILL);
        wait_child(pid, IT_STOP_TIMEOUT_MS);
        rc = -1;
    } else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        diag("twinhub serve ended with %s %d after SIGTERM (expected exit status 0)",
             WIFEXITED(st) ? "exit status" : "signal",
             WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
        rc = -1;
    }
    /* The broker must not outlive serve. Give a slow exit a bounded grace period. */
    pid_t left[16];
    int n = group_members(pid, left, 16);
    for (int i = 0; i < n; i++) {
        if (!wait_gone(left[i], IT_STOP_TIMEOUT_MS)) {
            diag("process %d of serve's group still runs %d ms after serve exited", (int)left[i],
                 IT_STOP_TIMEOUT_MS);
            kill(left[i], SIGKILL);
            rc = -1;
        }
    }
    reap_orphans();
    reader_stop(hub);
    hub->pid = 0;
    if (rc == 0) {
        if (!getenv("IT_KEEP"))
            nftw(hub->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    } else {
        char so[IT_PATH_MAX + 16];
        snprintf(so, sizeof so, "%s/stdout.log", hub->dir);
        diag_file("twinhub serve stdout", so);
        diag_file("twinhub serve stderr", hub->stderr_path);
    }
    return rc;
}

pid_t it_hub_broker_pid(const struct it_hub *hub)
{
    pid_t found = -1;
    if (hub->pid <= 0)
        return -1;
    DIR *d = opendir("/proc");
    if (!d)
        return -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!isdigit((unsigned char)e->d_name[0]))
            continue;
        char path[300];
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        char *st = read_file(path);
        if (!st)
            continue;
        char *lp = strchr(st, '('), *rp = strrchr(st, ')');
        char state = 0;
        int ppid = 0;
        if (lp && rp && rp > lp && sscanf(rp + 1, " %c %d", &state, &ppid) == 2 &&
            ppid == hub->pid && state != 'Z' && strncmp(lp + 1, "mosquitto", 9) == 0)
            found = (pid_t)atoi(e->d_name);
        free(st);
        if (found > 0)
            break;
    }
    closedir(d);
    return found;
}

int it_hub_kill_broker(struct it_hub *hub, int *serve_status)
{
    *serve_status = -1;
    pid_t broker = it_hub_broker_pid(hub);
    if (broker <= 0) {
        diag("no mosquitto child of serve (pid %d) found", (int)hub->pid);
        return -1;
    }
    if (kill(broker, SIGKILL) != 0) {
        diag("kill(%d, SIGKILL): %s", (int)broker, strerror(errno));
        return -1;
    }
    if (!wait_gone(broker, IT_STOP_TIMEOUT_MS)) {
        diag("mosquitto (pid %d) still runs %d ms after SIGKILL", (int)broker, IT_STOP_TIMEOUT_MS);
        return -1;
    }
    int rc = 0;
    pid_t pid = hub->pid;
    /* serve notices the broker's death and exits; SIGTERM covers a serve that waits on. */
    int st = wait_child(pid, IT_STOP_TIMEOUT_MS);
    if (st < 0) {
        kill(pid, SIGTERM);
        st = wait_child(pid, IT_STOP_TIMEOUT_MS);
    }
    if (st < 0) {
        diag("twinhub serve did not exit after its broker was killed");
        kill(-pid, SIGKILL);
        wait_child(pid, IT_STOP_TIMEOUT_MS);
        rc = -1;
    }
    *serve_status = st;
    reap_orphans();
    reader_stop(hub);
    hub->pid = 0;
    if (rc == 0 && !getenv("IT_KEEP"))
        nftw(hub->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return rc;
}

int it_rmtree(const char *path)
{
    return nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

char *it_read_file(const char *path)
{
    return read_file(path);
}

/* ----------------------------------------------------------------- tokens */

long long it_expiry(void)
{
    return (long long)time(NULL) + 3600;
}

char *it_device_token(const char *host, const char *device_id, const char *module_id,
                      const char *key, long long expiry)
{
    char *uri = module_id ? it_strdupf("%s/devices/%s/modules/%s", host, device_id, module_id)
                          : it_strdupf("%s/devices/%s", host, device_id);
    char buf[1024];
    th_result r = th_sas_sign(uri, key, expiry, NULL, buf, sizeof buf);
    free(uri);
    assert_int_equal(r, TH_OK);
    return strdup(buf);
}

char *it_device_username(const char *host, const char *device_id, const char *module_id)
{
    if (module_id)
        return it_strdupf("%s/%s/%s/?api-version=" IT_API_VERSION, host, device_id, module_id);
    return it_strdupf("%s/%s/?api-version=" IT_API_VERSION, host, device_id);
}

/* ---------------------------------------------------------------- clients */

void it_msg_free(struct it_msg *m)
{
    if (!m)
        return;
    free(m->topic);
    free(m->payload);
    free(m);
}

static void on_connect(struct mosquitto *mosq, void *obj, int rc)
{
    struct it_client *c = obj;
    pthread_mutex_lock(&c->mu);
    c->connack = rc;
    c->connected = rc == 0;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    if (rc != 0)
        mosquitto_disconnect(mosq); /* no automatic reconnect after a refusal */
}

static void on_disconnect(struct mosquitto *mosq, void *obj, int rc)
{
    struct it_client *c = obj;
    pthread_mutex_lock(&c->mu);
    c->connected = false;
    c->disconnected = true;
    c->disconnect_rc = rc;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    /* Sets the state to "disconnecting" so libmosquitto's loop ends instead of reconnecting:
     * a test that sees a connection closed must not see it come back by itself. */
    mosquitto_disconnect(mosq);
}

static void on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *msg)
{
    (void)mosq;
    struct it_client *c = obj;
    struct it_msg *m = calloc(1, sizeof *m);
    if (!m)
        abort();
    m->topic = strdup(msg->topic);
    m->payload = malloc((size_t)msg->payloadlen + 1);
    if (!m->topic || !m->payload)
        abort();
    if (msg->payloadlen > 0)
        memcpy(m->payload, msg->payload, (size_t)msg->payloadlen);
    m->payload[msg->payloadlen] = '\0';
    m->len = msg->payloadlen;
    m->qos = msg->qos;
    m->retain = msg->retain;
    pthread_mutex_lock(&c->mu);
    if (c->tail)
        c->tail->next = m;
    else
        c->head = m;
    c->tail = m;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void on_subscribe(struct mosquitto *mosq, void *obj, int mid, int qos_count,
                         const int *granted)
{
    (void)mosq;
    struct it_client *c = obj;
    pthread_mutex_lock(&c->mu);
    c->suback_mid = mid;
    c->suback_granted = qos_count > 0 ? granted[0] : -1;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void on_publish(struct mosquitto *mosq, void *obj, int mid)
{
    (void)mosq;
    struct it_client *c = obj;
    pthread_mutex_lock(&c->mu);
    c->last_puback_mid = mid;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/*
 * The client's network thread. libmosquitto's own loop_start thread ends silently on some
 * errors (a failed TLS handshake never reaches on_disconnect), so the end of the loop is
 * what marks the connection ended here.
 */
static void *net_main(void *arg)
{
    struct it_client *c = arg;
    int rc = mosquitto_loop_forever(c->mosq, -1, 1);
    pthread_mutex_lock(&c->mu);
    if (!c->disconnected)
        c->disconnect_rc = rc;
    c->connected = false;
    c->disconnected = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

struct it_client *it_client_connect(const struct it_hub *hub, const struct it_connect_opts *o,
                                    int *connack)
{
    struct it_client *c = calloc(1, sizeof *c);
    assert_non_null(c);
    snprintf(c->client_id, sizeof c->client_id, "%s", o->client_id);
    pthread_mutex_init(&c->mu, NULL);
    cond_init_monotonic(&c->cv);
    c->connack = -1;
    c->suback_mid = -1;
    c->mosq = mosquitto_new(o->client_id, !o->persistent, c);
    assert_non_null(c->mosq);
    /* publish/subscribe from the test thread while net_main runs the loop */
    mosquitto_threaded_set(c->mosq, true);
    mosquitto_int_option(c->mosq, MOSQ_OPT_PROTOCOL_VERSION,
                         o->protocol ? o->protocol : MQTT_PROTOCOL_V311);
    mosquitto_int_option(c->mosq, MOSQ_OPT_TCP_NODELAY, 1);
    mosquitto_connect_callback_set(c->mosq, on_connect);
    mosquitto_disconnect_callback_set(c->mosq, on_disconnect);
    mosquitto_message_callback_set(c->mosq, on_message);
    mosquitto_subscribe_callback_set(c->mosq, on_subscribe);
    mosquitto_publish_callback_set(c->mosq, on_publish);
    if (o->username || o->password)
        assert_int_equal(mosquitto_username_pw_set(c->mosq, o->username, o->password),
                         MOSQ_ERR_SUCCESS);
    int port = o->port;
    if (o->tls) {
        assert_int_equal(mosquitto_tls_set(c->mosq, o->ca_file ? o->ca_file : hub->ca_file, NULL,
                                           o->cert_file, o->key_file, NULL),
                         MOSQ_ERR_SUCCESS);
        if (!port)
            port = hub->mqtts_port;
    } else if (!port) {
        port = hub->mqtt_port;
    }
    int rc = mosquitto_connect(c->mosq, o->host ? o->host : "127.0.0.1", port, 60);
    if (rc != MOSQ_ERR_SUCCESS) {
        /* No network thread: with no connection it would only keep retrying. */
        c->disconnected = true;
        c->disconnect_rc = rc;
        *connack = -1;
        return c;
    }
    assert_int_equal(pthread_create(&c->thread, NULL, net_main, c), 0);
    c->loop_started = true;

    struct timespec dl;
    deadline_after(&dl, IT_WAIT_MS);
    pthread_mutex_lock(&c->mu);
    while (c->connack < 0 && !c->disconnected) {
        if (pthread_cond_timedwait(&c->cv, &c->mu, &dl) == ETIMEDOUT)
            break;
    }
    *connack = c->connack;
    pthread_mutex_unlock(&c->mu);
    return c;
}

void it_client_close(struct it_client *c)
{
    if (!c)
        return;
    if (c->loop_started) {
        mosquitto_disconnect(c->mosq); /* the loop ends once the state is "disconnecting" */
        pthread_join(c->thread, NULL);
    }
    mosquitto_destroy(c->mosq);
    struct it_msg *m = c->head;
    while (m) {
        struct it_msg *next = m->next;
        it_msg_free(m);
        m = next;
    }
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

struct it_client *it_device_open(const struct it_hub *hub, const char *device_id,
                                 const char *module_id, const char *key)
{
    char *user = it_device_username(hub->hub_name, device_id, module_id);
    char *pass = it_device_token(hub->hub_name, device_id, module_id, key, it_expiry());
    char *cid = module_id ? it_strdupf("%s/%s", device_id, module_id) : strdup(device_id);
    struct it_connect_opts o = {.client_id = cid, .username = user, .password = pass};
    int connack;
    struct it_client *c = it_client_connect(hub, &o, &connack);
    free(user);
    free(pass);
    free(cid);
    if (connack != 0)
        diag("%s%s%s: CONNACK %d (expected 0)", device_id, module_id ? "/" : "",
             module_id ? module_id : "", connack);
    assert_int_equal(connack, 0);
    return c;
}

struct it_client *it_service_open(const struct it_hub *hub, bool events)
{
    static int seq;
    char cid[64], pass[1024];
    snprintf(cid, sizeof cid, "svc-%d-%d", (int)getpid(), ++seq);
    assert_int_equal(
        th_sas_sign(hub->hub_name, TH_DEV_OWNER_KEY, it_expiry(), "iothubowner", pass, sizeof pass),
        TH_OK);
    struct it_connect_opts o = {.client_id = cid, .username = hub->hub_name, .password = pass};
    int connack;
    struct it_client *c = it_client_connect(hub, &o, &connack);
    if (connack != 0)
        diag("service principal %s: CONNACK %d (expected 0)", cid, connack);
    assert_int_equal(connack, 0);
    assert_int_equal(it_client_subscribe(c, TH_CONTROL_RESPONSE_TOPIC, 1, IT_WAIT_MS), 1);
    if (events)
        assert_int_equal(it_client_subscribe(c, TH_EVENTS_TOPIC, 1, IT_WAIT_MS), 1);
    return c;
}

struct it_client *it_service_open_policy(const struct it_hub *hub, const char *policy,
                                         const char *key, int *connack)
{
    static int seq;
    char cid[64], pass[1024];
    snprintf(cid, sizeof cid, "svcp-%d-%d", (int)getpid(), ++seq);
    assert_int_equal(th_sas_sign(hub->hub_name, key, it_expiry(), policy, pass, sizeof pass),
                     TH_OK);
    struct it_connect_opts o = {.client_id = cid, .username = hub->hub_name, .password = pass};
    struct it_client *c = it_client_connect(hub, &o, connack);
    if (*connack == 0)
        assert_int_equal(it_client_subscribe(c, TH_CONTROL_RESPONSE_TOPIC, 1, IT_WAIT_MS), 1);
    return c;
}

int it_client_subscribe(struct it_client *c, const char *topic, int qos, int timeout_ms)
{
    int mid = -1;
    if (mosquitto_subscribe(c->mosq, &mid, topic, qos) != MOSQ_ERR_SUCCESS)
        return -1;
    struct timespec dl;
    deadline_after(&dl, timeout_ms);
    int granted = -1;
    pthread_mutex_lock(&c->mu);
    while (c->suback_mid != mid && !c->disconnected) {
        if (pthread_cond_timedwait(&c->cv, &c->mu, &dl) == ETIMEDOUT)
            break;
    }
    if (c->suback_mid == mid)
        granted = c->suback_granted;
    pthread_mutex_unlock(&c->mu);
    return granted;
}

int it_client_publish(struct it_client *c, const char *topic, const void *payload, int len, int qos,
                      bool retain)
{
    return mosquitto_publish(c->mosq, NULL, topic, len, payload, qos, retain);
}

bool it_client_publish_acked(struct it_client *c, const char *topic, const char *payload,
                             int timeout_ms)
{
    int mid = -1;
    if (mosquitto_publish(c->mosq, &mid, topic, payload ? (int)strlen(payload) : 0, payload, 1,
                          false) != MOSQ_ERR_SUCCESS)
        return false;
    struct timespec dl;
    deadline_after(&dl, timeout_ms);
    pthread_mutex_lock(&c->mu);
    while (c->last_puback_mid != mid && !c->disconnected) {
        if (pthread_cond_timedwait(&c->cv, &c->mu, &dl) == ETIMEDOUT)
            break;
    }
    bool acked = c->last_puback_mid == mid;
    pthread_mutex_unlock(&c->mu);
    return acked;
}

int it_client_publish_str(struct it_client *c, const char *topic, const char *payload, int qos)
{
    return it_client_publish(c, topic, payload, payload ? (int)strlen(payload) : 0, qos, false);
}

struct it_msg *it_client_wait_match(struct it_client *c, it_msg_pred pred, void *arg,
                                    int timeout_ms)
{
    struct timespec dl;
    deadline_after(&dl, timeout_ms);
    struct it_msg *found = NULL;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        struct it_msg *prev = NULL;
        for (struct it_msg *m = c->head; m; prev = m, m = m->next) {
            if (!pred(m, arg))
                continue;
            if (prev)
                prev->next = m->next;
            else
                c->head = m->next;
            if (c->tail == m)
                c->tail = prev;
            m->next = NULL;
            found = m;
            break;
        }
        /* a closed connection brings nothing new: stop waiting */
        if (found || c->disconnected)
            break;
        if (pthread_cond_timedwait(&c->cv, &c->mu, &dl) == ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&c->mu);
    return found;
}

static bool pred_prefix(const struct it_msg *m, void *arg)
{
    return strncmp(m->topic, arg, strlen(arg)) == 0;
}

static bool pred_topic(const struct it_msg *m, void *arg)
{
    return strcmp(m->topic, arg) == 0;
}

struct it_msg *it_client_wait_prefix(struct it_client *c, const char *prefix, int timeout_ms)
{
    return it_client_wait_match(c, pred_prefix, (void *)prefix, timeout_ms);
}

struct it_msg *it_client_wait_topic(struct it_client *c, const char *topic, int timeout_ms)
{
    return it_client_wait_match(c, pred_topic, (void *)topic, timeout_ms);
}

int it_client_count_prefix(struct it_client *c, const char *prefix)
{
    int n = 0;
    pthread_mutex_lock(&c->mu);
    for (struct it_msg *m = c->head; m; m = m->next)
        if (pred_prefix(m, (void *)prefix))
            n++;
    pthread_mutex_unlock(&c->mu);
    return n;
}

bool it_client_wait_disconnect(struct it_client *c, int timeout_ms)
{
    struct timespec dl;
    deadline_after(&dl, timeout_ms);
    pthread_mutex_lock(&c->mu);
    while (!c->disconnected) {
        if (pthread_cond_timedwait(&c->cv, &c->mu, &dl) == ETIMEDOUT)
            break;
    }
    bool d = c->disconnected;
    pthread_mutex_unlock(&c->mu);
    return d;
}

bool it_client_is_connected(struct it_client *c)
{
    pthread_mutex_lock(&c->mu);
    bool r = c->connected;
    pthread_mutex_unlock(&c->mu);
    return r;
}

/* ------------------------------------------------------------ twin helpers */

char *it_topic_param(const char *topic, const char *name)
{
    const char *q = strchr(topic, '?');
    if (!q)
        return NULL;
    return it_bag_get(q + 1, name);
}

struct twin_match {
    const char *rid;
};

static bool pred_twin_res(const struct it_msg *m, void *arg)
{
    struct twin_match *tm = arg;
    if (strncmp(m->topic, "$iothub/twin/res/", 17) != 0)
        return false;
    char *rid = it_topic_param(m->topic, "$rid");
    bool ok = rid && strcmp(rid, tm->rid) == 0;
    free(rid);
    return ok;
}

struct it_msg *it_twin_request(struct it_client *c, const char *rid, const char *patch, int *status)
{
    return it_twin_request_query(c, rid, "", patch, status);
}

struct it_msg *it_twin_request_query(struct it_client *c, const char *rid, const char *more,
                                     const char *patch, int *status)
{
    char *topic = patch ? it_strdupf("$iothub/twin/PATCH/properties/reported/?$rid=%s%s", rid, more)
                        : it_strdupf("$iothub/twin/GET/?$rid=%s%s", rid, more);
    int rc = it_client_publish(c, topic, patch, patch ? (int)strlen(patch) : 0, 1, false);
    free(topic);
    assert_int_equal(rc, MOSQ_ERR_SUCCESS);
    struct twin_match tm = {rid};
    struct it_msg *m = it_client_wait_match(c, pred_twin_res, &tm, IT_WAIT_MS);
    *status = m ? atoi(m->topic + 17) : -1;
    return m;
}

/* ------------------------------------------------------------- control API */

static int corr_seq;

static void control_vsend(struct it_client *svc, char *corr, const char *fmt, va_list ap)
{
    char *text = NULL;
    if (vasprintf(&text, fmt, ap) < 0)
        abort();
    cJSON *cmd = cJSON_Parse(text);
    if (!cmd)
        diag("test bug: control command is not JSON: %s", text);
    free(text);
    assert_non_null(cmd);
    snprintf(corr, 32, "it-%d-%d", (int)getpid(), ++corr_seq);
    const char *corrs[1] = {corr};
    char *body = th_ctl_request_print(&cmd, 1, corrs);
    cJSON_Delete(cmd);
    assert_non_null(body);
    assert_int_equal(it_client_publish_str(svc, TH_CONTROL_TOPIC, body, 1), MOSQ_ERR_SUCCESS);
    free(body);
}

void it_control_send(struct it_client *svc, char *corr, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    control_vsend(svc, corr, fmt, ap);
    va_end(ap);
}

/* Finds the response entry for corr in a response message; NULL if absent. */
static cJSON *response_entry(const struct it_msg *m, const char *corr)
{
    if (strcmp(m->topic, TH_CONTROL_RESPONSE_TOPIC) != 0)
        return NULL;
    cJSON *responses = NULL;
    struct th_error err = {0};
    if (th_ctl_responses_parse(m->payload, (size_t)m->len, (size_t)m->len, &responses, &err) !=
        TH_OK)
        return NULL;
    cJSON *found = th_ctl_find(responses, corr, false);
    if (found)
        found = cJSON_DetachItemViaPointer(responses, found);
    cJSON_Delete(responses);
    return found;
}

static bool pred_response(const struct it_msg *m, void *arg)
{
    cJSON *e = response_entry(m, arg);
    cJSON_Delete(e);
    return e != NULL;
}

cJSON *it_control_wait(struct it_client *svc, const char *corr, int timeout_ms)
{
    struct it_msg *m = it_client_wait_match(svc, pred_response, (void *)corr, timeout_ms);
    if (!m) {
        diag("no control response for correlationData %s within %d ms", corr, timeout_ms);
        return NULL;
    }
    cJSON *e = response_entry(m, corr);
    it_msg_free(m);
    return e;
}

cJSON *it_control(struct it_client *svc, int timeout_ms, const char *fmt, ...)
{
    char corr[32];
    va_list ap;
    va_start(ap, fmt);
    control_vsend(svc, corr, fmt, ap);
    va_end(ap);
    return it_control_wait(svc, corr, timeout_ms);
}

cJSON *it_control_ok(struct it_client *svc, const char *fmt, ...)
{
    char corr[32];
    va_list ap;
    va_start(ap, fmt);
    control_vsend(svc, corr, fmt, ap);
    va_end(ap);
    cJSON *e = it_control_wait(svc, corr, IT_WAIT_MS);
    assert_non_null(e);
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(e, "error");
    if (err) {
        char *text = cJSON_PrintUnformatted(e);
        diag("control command failed (expected success): %s", text ? text : "?");
        free(text);
    }
    assert_null(err);
    cJSON *data = cJSON_DetachItemFromObjectCaseSensitive(e, "data");
    cJSON_Delete(e);
    assert_non_null(data);
    return data;
}

cJSON *it_control_err(struct it_client *svc, int status, int code, const char *fmt, ...)
{
    char corr[32];
    va_list ap;
    va_start(ap, fmt);
    control_vsend(svc, corr, fmt, ap);
    va_end(ap);
    cJSON *e = it_control_wait(svc, corr, IT_WAIT_MS);
    assert_non_null(e);
    int got_status = (int)it_json_num(e, "status", -1),
        got_code = (int)it_json_num(e, "errorCode", -1);
    if (got_status != status || got_code != code || !it_json_str(e, "error")) {
        char *text = cJSON_PrintUnformatted(e);
        diag("expected error %d/%d, got: %s", status, code, text ? text : "?");
        free(text);
    }
    assert_int_equal(got_status, status);
    assert_int_equal(got_code, code);
    assert_non_null(it_json_str(e, "error"));
    assert_null(cJSON_GetObjectItemCaseSensitive(e, "data"));
    return e;
}

cJSON *it_read_json(const char *path)
{
    char *text = read_file(path);
    if (!text) {
        diag("cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    cJSON *doc = cJSON_Parse(text);
    if (!doc)
        diag("%s is not JSON", path);
    free(text);
    return doc;
}

struct event_match {
    const char *topic;
    it_event_pred pred;
    void *arg;
};

static bool pred_event(const struct it_msg *m, void *arg)
{
    struct event_match *em = arg;
    if (strcmp(m->topic, em->topic) != 0)
        return false;
    if (!em->pred)
        return true;
    cJSON *rec = cJSON_ParseWithLength(m->payload, (size_t)m->len);
    bool ok = rec && em->pred(rec, em->arg);
    cJSON_Delete(rec);
    return ok;
}

cJSON *it_event_wait(struct it_client *svc, const char *kind, const char *device_id,
                     const char *module_id, it_event_pred pred, void *arg, int timeout_ms)
{
    char *topic = module_id ? it_strdupf("$twinhub/events/%s/%s/%s", kind, device_id, module_id)
                            : it_strdupf("$twinhub/events/%s/%s", kind, device_id);
    struct event_match em = {topic, pred, arg};
    struct it_msg *m = it_client_wait_match(svc, pred_event, &em, timeout_ms);
    if (!m)
        diag("no matching event on %s within %d ms", topic, timeout_ms);
    free(topic);
    if (!m)
        return NULL;
    cJSON *rec = cJSON_ParseWithLength(m->payload, (size_t)m->len);
    it_msg_free(m);
    return rec;
}

/* ------------------------------------------------------------------- JSON */

const cJSON *it_json_get(const cJSON *obj, const char *path)
{
    char buf[512];
    snprintf(buf, sizeof buf, "%s", path);
    const cJSON *cur = obj;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ".", &save); tok && cur; tok = strtok_r(NULL, ".", &save))
        cur = cJSON_IsObject(cur) ? cJSON_GetObjectItemCaseSensitive(cur, tok) : NULL;
    return cur;
}

const char *it_json_str(const cJSON *obj, const char *path)
{
    const cJSON *v = it_json_get(obj, path);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

double it_json_num(const cJSON *obj, const char *path, double fallback)
{
    const cJSON *v = it_json_get(obj, path);
    return cJSON_IsNumber(v) ? v->valuedouble : fallback;
}

cJSON *it_msg_json(const struct it_msg *m)
{
    return m ? cJSON_ParseWithLength(m->payload, (size_t)m->len) : NULL;
}

/* ---------------------------------------------------------------- strings */

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch = tolower(ch);
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1;
}

char *it_url_decode(const char *s, size_t len)
{
    char *out = malloc(len + 1);
    if (!out)
        abort();
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%' && i + 2 < len && hexval((unsigned char)s[i + 1]) >= 0 &&
            hexval((unsigned char)s[i + 2]) >= 0) {
            out[o++] =
                (char)(hexval((unsigned char)s[i + 1]) * 16 + hexval((unsigned char)s[i + 2]));
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    return out;
}

char *it_bag_get(const char *bag, const char *key)
{
    const char *p = bag;
    while (*p) {
        const char *end = strchr(p, '&');
        size_t plen = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', plen);
        size_t klen = eq ? (size_t)(eq - p) : plen;
        char *k = it_url_decode(p, klen);
        bool hit = strcmp(k, key) == 0;
        free(k);
        if (hit)
            return eq ? it_url_decode(eq + 1, plen - klen - 1) : strdup("");
        if (!end)
            break;
        p = end + 1;
    }
    return NULL;
}
