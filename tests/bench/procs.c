/*
 * procs.c - the processes a benchmark measures: plain mosquitto, mosquitto
 * with the echo plugin, and `twinhub serve` (whose mosquitto child is the
 * broker we measure); their CPU time and memory from /proc; free ports;
 * device identities, SAS tokens and generated registry files.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <openssl/evp.h>

#include "jemalloc_path.h"
#include "registry.h"
#include "sas.h"

#define READY_TIMEOUT_MS 200000 /* the fleet case seeds a state dir with 100,000 devices */
#define STOP_TIMEOUT_MS 15000

int64_t thb_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int thb_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) != 0) {
        thb_die("cannot find a free port: %s", strerror(errno));
    }
    close(fd);
    return ntohs(sa.sin_port);
}

/* True once 127.0.0.1:port accepts a TCP connection. */
static bool accepts(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    if (fd >= 0) {
        close(fd);
    }
    return ok;
}

/* fork + exec argv with stdout to out_fd (or the log file) and stderr to the log file. */
static pid_t spawn(char *const argv[], int out_fd, const char *log_path)
{
    pid_t pid = fork();
    if (pid < 0) {
        thb_die("fork: %s", strerror(errno));
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM); /* never outlive the benchmark */
        int log = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (log >= 0) {
            dup2(log, 2);
            dup2(out_fd >= 0 ? out_fd : log, 1);
        }
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0) {
            dup2(devnull, 0);
        }
        execv(argv[0], argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    return pid;
}

static void print_file(const char *label, const char *path)
{
    FILE *f = fopen(path, "r");
    char line[1024];
    if (!f) {
        return;
    }
    fprintf(stderr, "---- %s (%s)\n", label, path);
    while (fgets(line, sizeof line, f)) {
        fputs(line, stderr);
    }
    fclose(f);
}

/* The mosquitto child of `twinhub serve`. */
static pid_t child_of(pid_t parent)
{
    char path[320], buf[256];
    snprintf(path, sizeof path, "/proc/%d/task/%d/children", (int)parent, (int)parent);
    FILE *f = fopen(path, "r");
    if (f) {
        long v = 0;
        if (fgets(buf, sizeof buf, f) && sscanf(buf, "%ld", &v) == 1 && v > 0) {
            fclose(f);
            return (pid_t)v;
        }
        fclose(f);
    }
    /* Fallback: scan /proc for a process whose parent is `parent`. */
    DIR *d = opendir("/proc");
    struct dirent *e;
    pid_t found = -1;
    while (d && (e = readdir(d)) != NULL && found < 0) {
        if (!isdigit((unsigned char)e->d_name[0])) {
            continue;
        }
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        FILE *s = fopen(path, "r");
        if (!s) {
            continue;
        }
        if (fgets(buf, sizeof buf, s)) {
            char *rp = strrchr(buf, ')');
            int ppid = 0;
            if (rp && sscanf(rp + 2, "%*c %d", &ppid) == 1 && ppid == parent) {
                found = (pid_t)atoi(e->d_name);
            }
        }
        fclose(s);
    }
    if (d) {
        closedir(d);
    }
    return found;
}

const char *thb_broker_malloc(void)
{
    static char lib[PATH_MAX];
    const char *env = getenv("TWINHUB_BROKER_MALLOC");
    if (env && (!strcmp(env, "glibc") || !strcmp(env, "system"))) {
        return "";
    }
    if (env && *env) {
        return env;
    }
    th_jemalloc_find(lib, sizeof lib); /* "" when not found */
    return lib;
}

static int start_mosquitto(struct thb_broker *b, bool echo, bool iolayer)
{
    char conf[THB_PATH_MAX + 32], log[THB_PATH_MAX + 32];
    snprintf(conf, sizeof conf, "%s/mosquitto.conf", b->dir);
    snprintf(log, sizeof log, "%s/broker.log", b->dir);
    const struct passwd *pw = getpwuid(getuid());
    for (int attempt = 0; attempt < 3; attempt++) {
        b->port = thb_free_port();
        FILE *f = fopen(conf, "w");
        if (!f) {
            fprintf(stderr, "thbench: cannot write %s: %s\n", conf, strerror(errno));
            return -1;
        }
        /* The baseline settings of mosquitto-plugin-facts.md: no drops, no Nagle delays.
         * The echo broker keeps the default queue limit, like twinhub's: with
         * max_queued_messages 0, mosquitto 2.0.11 drops the connection of a client that a
         * plugin publishes to ("Bad socket read/write ... Unknown error"). */
        fprintf(f,
                "per_listener_settings false\n"
                "allow_anonymous true\n"
                "%s"
                "set_tcp_nodelay true\n"
                "persistence false\n"
                "log_dest stderr\n"
                "log_type error\n"
                "listener %d 127.0.0.1\n",
                echo ? "" : "max_queued_messages 0\n", b->port);
        if (pw) {
            fprintf(f, "user %s\n", pw->pw_name);
        }
        if (echo) {
            fprintf(f, "plugin %s\n", thb_cfg.echo_plugin);
        }
        fclose(f);
        char *argv[] = {thb_cfg.mosquitto, "-c", conf, NULL};
        int64_t t0 = thb_now_us();
        /* The like-for-like baseline: what `twinhub serve` preloads into its broker: the shim
         * (its I/O layer; its TLS part does nothing on a plain listener) and the allocator. */
        if (iolayer) {
            char preload[2 * THB_PATH_MAX + 2];
            const char *alloc = thb_broker_malloc();
            snprintf(preload, sizeof preload, "%s%s%s", thb_cfg.tlsshim, *alloc ? " " : "", alloc);
            setenv("LD_PRELOAD", preload, 1);
        }
        b->child = b->broker = spawn(argv, -1, log);
        if (iolayer) {
            unsetenv("LD_PRELOAD");
        }
        while (thb_now_us() - t0 < 10000000) {
            int st;
            if (waitpid(b->child, &st, WNOHANG) == b->child) {
                b->child = b->broker = -1;
                break; /* port taken meanwhile? try another */
            }
            if (accepts(b->port)) {
                b->start_us = thb_now_us() - t0;
                return 0;
            }
            sleep_ms(2);
        }
        if (b->child > 0) {
            kill(b->child, SIGKILL);
            waitpid(b->child, NULL, 0);
            b->child = b->broker = -1;
        }
    }
    print_file("mosquitto output", log);
    return -1;
}

/*
 * True when `twinhub serve --help` lists opt. Options added later (an HTTPS
 * gateway listener) are turned off only where serve has them.
 */
static bool serve_has_option(const char *opt)
{
    static char help[16384];
    static bool read_once;
    if (!read_once) {
        int pfd[2];
        read_once = true;
        if (pipe2(pfd, O_CLOEXEC) != 0) {
            return false;
        }
        char log[THB_PATH_MAX + 32];
        snprintf(log, sizeof log, "%s/serve-help.log", thb_cfg.work);
        char *argv[] = {thb_cfg.twinhub, "serve", "--help", NULL};
        pid_t pid = spawn(argv, pfd[1], log);
        close(pfd[1]);
        size_t len = 0;
        ssize_t r;
        while (len < sizeof help - 1 && (r = read(pfd[0], help + len, sizeof help - 1 - len)) > 0) {
            len += (size_t)r;
        }
        help[len] = '\0';
        close(pfd[0]);
        waitpid(pid, NULL, 0);
    }
    return strstr(help, opt) != NULL;
}

static int start_twinhub(struct thb_broker *b, const char *registry, const char *record)
{
    char log[THB_PATH_MAX + 32], port_s[16];
    snprintf(log, sizeof log, "%s/serve.log", b->dir);
    for (int attempt = 0; attempt < 3; attempt++) {
        b->port = thb_free_port();
        snprintf(port_s, sizeof port_s, "%d", b->port);
        char *argv[20];
        int n = 0;
        argv[n++] = thb_cfg.twinhub;
        argv[n++] = "serve";
        argv[n++] = "--mqtt-port";
        argv[n++] = port_s;
        argv[n++] = "--mqtts-port";
        argv[n++] = "0";
        argv[n++] = "--hub-name";
        argv[n++] = THB_HUB_NAME;
        argv[n++] = "--cert-dir";
        argv[n++] = thb_cfg.cert_dir;
        argv[n++] = "--plugin";
        argv[n++] = thb_cfg.plugin;
        argv[n++] = "--mosquitto";
        argv[n++] = thb_cfg.mosquitto;
        if (serve_has_option("--https-port")) {
            argv[n++] = "--https-port"; /* the REST/WebSocket gateway is not measured */
            argv[n++] = "0";
        }
        if (registry) {
            argv[n++] = "--registry";
            argv[n++] = (char *)registry;
        }
        if (record) {
            argv[n++] = "--record";
            argv[n++] = (char *)record;
        }
        if (thb_cfg.state_dir) {
            argv[n++] = "--state-dir";
            argv[n++] = (char *)thb_cfg.state_dir;
        }
        argv[n] = NULL;
        int pfd[2];
        if (pipe2(pfd, O_CLOEXEC) != 0) {
            thb_die("pipe: %s", strerror(errno));
        }
        int64_t t0 = thb_now_us();
        /* The child gets the write end without O_CLOEXEC through dup2 in spawn(). */
        b->child = spawn(argv, pfd[1], log);
        close(pfd[1]);
        char acc[8192];
        size_t len = 0;
        bool ready = false;
        while (!ready && thb_now_us() - t0 < (int64_t)READY_TIMEOUT_MS * 1000) {
            struct pollfd p = {.fd = pfd[0], .events = POLLIN};
            if (poll(&p, 1, 100) <= 0) {
                continue;
            }
            ssize_t r = read(pfd[0], acc + len, sizeof acc - 1 - len);
            if (r <= 0) {
                break; /* serve exited */
            }
            len += (size_t)r;
            acc[len] = '\0';
            ready = strstr(acc, "twinhub: ready\n") != NULL;
            if (len > sizeof acc / 2) { /* keep the tail only */
                memmove(acc, acc + len - 64, 64);
                len = 64;
            }
        }
        if (ready) {
            b->out_fd = pfd[0]; /* kept open: serve may still print before it exits */
            b->start_us = thb_now_us() - t0;
            b->broker = child_of(b->child);
            if (b->broker <= 0) {
                fprintf(stderr, "thbench: cannot find the mosquitto child of serve %d\n",
                        (int)b->child);
                thb_broker_stop(b);
                return -1;
            }
            return 0;
        }
        close(pfd[0]);
        int st = 0;
        kill(b->child, SIGTERM);
        waitpid(b->child, &st, 0);
        b->child = -1;
        if (WIFEXITED(st) && WEXITSTATUS(st) == 1) {
            FILE *f = fopen(log, "r");
            char text[4096] = "";
            size_t got = f ? fread(text, 1, sizeof text - 1, f) : 0;
            text[got] = '\0';
            if (f) {
                fclose(f);
            }
            if (strstr(text, "in use")) {
                continue; /* a race for the port: take another */
            }
        }
        break;
    }
    print_file("twinhub serve output", log);
    return -1;
}

int thb_broker_start(struct thb_broker *b, enum thb_broker_kind kind, const char *registry,
                     const char *record)
{
    static int seq;
    memset(b, 0, sizeof *b);
    b->kind = kind;
    b->child = b->broker = -1;
    b->out_fd = -1;
    snprintf(b->dir, sizeof b->dir, "%s/broker-%d", thb_cfg.work, ++seq);
    if (mkdir(b->dir, 0700) != 0) {
        fprintf(stderr, "thbench: mkdir %s: %s\n", b->dir, strerror(errno));
        return -1;
    }
    int rc = kind == THB_TWINHUB ? start_twinhub(b, registry, record)
                                 : start_mosquitto(b, kind == THB_ECHO, kind == THB_PLAIN_IO);
    if (rc == 0 && thb_cfg.verbose) {
        static const char *const names[] = {"mosquitto", "mosquitto + echo plugin", "twinhub",
                                            "mosquitto + twinhub's I/O layer"};
        fprintf(stderr, "thbench: %s%s on port %d, broker pid %d, ready in %.1f ms\n", names[kind],
                record ? " --record" : "", b->port, (int)b->broker, (double)b->start_us / 1000);
    }
    return rc;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void thb_broker_stop(struct thb_broker *b)
{
    if (b->child > 0) {
        kill(b->child, SIGTERM);
        int64_t t0 = thb_now_us();
        int st;
        while (waitpid(b->child, &st, WNOHANG) == 0) {
            if (thb_now_us() - t0 > (int64_t)STOP_TIMEOUT_MS * 1000) {
                fprintf(stderr, "thbench: broker %d did not stop in %d ms; killing it\n",
                        (int)b->child, STOP_TIMEOUT_MS);
                kill(b->child, SIGKILL);
                if (b->broker > 0 && b->broker != b->child) {
                    kill(b->broker, SIGKILL);
                }
                waitpid(b->child, &st, 0);
                break;
            }
            sleep_ms(2);
        }
    }
    b->child = b->broker = -1;
    if (b->out_fd > 0) {
        close(b->out_fd);
        b->out_fd = -1;
    }
    if (b->dir[0] && !thb_cfg.verbose) {
        nftw(b->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    }
}

/* utime+stime from /proc/<pid>/stat (clock ticks). */
static int64_t stat_cpu_us(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) {
        return -1;
    }
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *rp = strrchr(buf, ')');
    unsigned long long ut = 0, st = 0;
    /* After "(comm)": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
     * utime stime (fields 3..15). */
    if (!rp ||
        sscanf(rp + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2) {
        return -1;
    }
    long hz = sysconf(_SC_CLK_TCK);
    return (int64_t)((ut + st) * 1000000ULL / (unsigned long long)hz);
}

int64_t thb_proc_cpu_us(pid_t pid)
{
    /* The same CPU time as /proc/<pid>/stat's utime+stime, but in nanoseconds instead of
     * 10 ms ticks: the sum of every thread's /proc/<pid>/task/<tid>/schedstat run time. */
    char path[96];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d) {
        return -1;
    }
    unsigned long long total = 0;
    bool any = false;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!isdigit((unsigned char)e->d_name[0])) {
            continue;
        }
        char sp[384];
        snprintf(sp, sizeof sp, "/proc/%d/task/%s/schedstat", (int)pid, e->d_name);
        FILE *f = fopen(sp, "r");
        unsigned long long ns = 0;
        if (f && fscanf(f, "%llu", &ns) == 1) {
            total += ns;
            any = true;
        }
        if (f) {
            fclose(f);
        }
    }
    closedir(d);
    return any ? (int64_t)(total / 1000) : stat_cpu_us(pid);
}

int64_t thb_machine_busy_us(void)
{
    FILE *f = fopen("/proc/stat", "r");
    unsigned long long v[8] = {0};
    if (!f) {
        return -1;
    }
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n != 8) {
        return -1;
    }
    /* user nice system idle iowait irq softirq steal: everything but idle and iowait */
    unsigned long long busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    return (int64_t)(busy * 1000000ULL / (unsigned long long)sysconf(_SC_CLK_TCK));
}

int64_t thb_self_cpu_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The value of "FIELD:" in a /proc file of kB lines; -1 when absent. */
static long proc_field_kb(pid_t pid, const char *file, const char *field)
{
    char path[64], line[256];
    size_t fl = strlen(field);
    snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, file);
    FILE *f = fopen(path, "r");
    long v = -1;
    while (f && fgets(line, sizeof line, f)) {
        if (!strncmp(line, field, fl) && line[fl] == ':') {
            v = strtol(line + fl + 1, NULL, 10);
            break;
        }
    }
    if (f) {
        fclose(f);
    }
    return v;
}

long thb_proc_status_kb(pid_t pid, const char *field)
{
    return proc_field_kb(pid, "status", field);
}

long thb_proc_smaps_kb(pid_t pid, const char *field)
{
    return proc_field_kb(pid, "smaps_rollup", field);
}

void thb_proc_malloc(pid_t pid, char *out, size_t size)
{
    static const char *const known[] = {"libjemalloc", "libmimalloc", "libtcmalloc"};
    char path[64], line[1024];
    snprintf(path, sizeof path, "/proc/%d/maps", (int)pid);
    snprintf(out, size, "glibc");
    FILE *f = fopen(path, "r");
    bool found = false;
    while (f && !found && fgets(line, sizeof line, f)) {
        const char *slash = strrchr(line, '/');
        for (size_t i = 0; slash && !found && i < sizeof known / sizeof *known; i++) {
            if (!strncmp(slash + 1, known[i], strlen(known[i]))) {
                snprintf(out, size, "%.*s", (int)strcspn(slash + 1, "\n"), slash + 1);
                found = true;
            }
        }
    }
    if (f) {
        fclose(f);
    }
}

/* ---- identities ---- */

void thb_device_id(int i, char *buf, size_t size)
{
    snprintf(buf, size, "bd-%05d", i);
}

void thb_device_key(int i, char *buf, size_t size)
{
    unsigned char raw[33];
    /* 32 bytes: "twinhub-bench-key-" (18) + 5 digits + "-" + 8 = 32 */
    snprintf((char *)raw, sizeof raw, "twinhub-bench-key-%05u-%08x", (unsigned)i % 100000u,
             (unsigned)i * 2654435761u);
    if (size < 64) {
        thb_die("key buffer too small");
    }
    EVP_EncodeBlock((unsigned char *)buf, raw, 32);
}

static int64_t token_expiry(void)
{
    return (int64_t)time(NULL) + 3 * 3600;
}

void thb_device_credentials(int i, char *user, size_t usize, char *pass, size_t psize)
{
    char id[32], key[64], sr[256];
    thb_device_id(i, id, sizeof id);
    thb_device_key(i, key, sizeof key);
    snprintf(user, usize, "%s/%s/?api-version=%s", THB_HUB_NAME, id, THB_API_VERSION);
    snprintf(sr, sizeof sr, "%s/devices/%s", THB_HUB_NAME, id);
    if (th_sas_sign(sr, key, token_expiry(), NULL, pass, psize) != TH_OK) {
        thb_die("cannot sign a token for %s", id);
    }
}

void thb_service_password(char *pass, size_t psize)
{
    if (th_sas_sign(THB_HUB_NAME, TH_DEV_OWNER_KEY, token_expiry(), "iothubowner", pass, psize) !=
        TH_OK) {
        thb_die("cannot sign the service token");
    }
}

int thb_write_registry(const char *path, int n, int desired_bytes)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "thbench: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    fprintf(f, "{\"devices\":[\n");
    for (int i = 0; i < n; i++) {
        char id[32], key[64];
        thb_device_id(i, id, sizeof id);
        thb_device_key(i, key, sizeof key);
        fprintf(f,
                "%s{\"deviceId\":\"%s\",\"authentication\":{\"type\":\"sas\",\"symmetricKey\":"
                "{\"primaryKey\":\"%s\",\"secondaryKey\":\"%s\"}}",
                i ? ",\n" : "", id, key, key);
        if (desired_bytes > 0) {
            /* About desired_bytes of twin content: names plus string values. */
            fprintf(f, ",\"tags\":{\"site\":\"bench\"},\"properties\":{\"desired\":{\"config\":{");
            int used = 0;
            for (int k = 0; used < desired_bytes; k++) {
                fprintf(f, "%s\"setting%02d\":\"value-%05d-%02d-abcdefghijklmnopqrstuvwxyz\"",
                        k ? "," : "", k, i, k);
                used += 9 + 40; /* name + value, the hub's size rule */
            }
            fprintf(f, "}}}");
        }
        fputc('}', f);
    }
    fprintf(f, "\n]}\n");
    if (ferror(f) | (fclose(f) != 0)) {
        fprintf(stderr, "thbench: cannot write %s\n", path);
        return -1;
    }
    return 0;
}

/* ---- small helpers ---- */

void thb_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("thbench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

void thb_sort_i64(int64_t *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_i64);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double thb_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int64_t thb_percentile(const int64_t *sorted, size_t n, double p)
{
    if (n == 0) {
        return 0;
    }
    size_t k = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
    return sorted[k < n ? k : n - 1];
}
