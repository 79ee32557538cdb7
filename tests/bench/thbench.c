/*
 * thbench.c - twinhub's benchmarks: "the emulator is never the bottleneck".
 * Each case measures twinhub and a baseline in the same run and prints the
 * ratio (docs/performance.md):
 *
 *   telemetry  N devices publishing QoS 0 / QoS 1 with a property bag:
 *              twinhub (recording off, on, and with an event subscriber)
 *              against plain mosquitto relaying to one subscriber
 *   twin       reported PATCH and GET round trips from 1 and 50 devices
 *              against a minimal echo plugin
 *   fanout     one control-API updateTwin to each of 1,000 devices until
 *              every desired notification arrived, against plain mosquitto
 *              delivering 1,000 direct publishes
 *   scale      10,000 connected devices with ~1 KB twins: broker memory and
 *              connect rate against plain mosquitto with the same connections
 *   tlsfront   50 devices over TLS: mosquitto's TLS listener with the TLS shim
 *              (X.509's way in) against the same listener without it, twin GETs
 *              and telemetry
 *   fleet      100,000 registered devices, up to the descriptor limit connected:
 *              memory, a job over all, a query over all, a restart with
 *              --state-dir (bench_fleet.c; only with --only fleet)
 *
 * Usage: thbench [--only telemetry,twin,fanout,scale,tlsfront,fleet] [--quick]
 *                [--scale-devices N] [--fleet-devices N] [--fleet-rounds N] [--report FILE] [-v]
 *                [--twinhub PATH] [--plugin PATH] [--echo-plugin PATH] [--mosquitto PATH]
 * Exit status: 0 when every case ran (targets met or not), 1 when a case
 * could not run, 2 on a usage or setup error. Run through scripts/bench.sh.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef THB_DEFAULT_TWINHUB
#define THB_DEFAULT_TWINHUB "twinhub"
#endif
#ifndef THB_DEFAULT_PLUGIN
#define THB_DEFAULT_PLUGIN "twinhub_plugin.so"
#endif
#ifndef THB_DEFAULT_TLSSHIM
#define THB_DEFAULT_TLSSHIM "twinhub_tlsshim.so"
#endif
#ifndef THB_DEFAULT_ECHO_PLUGIN
#define THB_DEFAULT_ECHO_PLUGIN "echo_plugin.so"
#endif
#ifndef THB_DEFAULT_MOSQUITTO
#define THB_DEFAULT_MOSQUITTO "/usr/sbin/mosquitto"
#endif

/* Descriptors the load generator needs besides the scale connections. */
#define FD_MARGIN 200

struct thb_config thb_cfg;
static FILE *report;

#define MAX_TARGETS 32
static struct {
    char line[512];
    bool met;
} targets[MAX_TARGETS];
static int ntargets;

void thb_out(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fflush(stdout);
    if (report) {
        va_start(ap, fmt);
        vfprintf(report, fmt, ap);
        va_end(ap);
        fflush(report);
    }
}

void thb_target(const char *name, bool met, const char *fmt, ...)
{
    if (ntargets == MAX_TARGETS) {
        return;
    }
    char detail[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    snprintf(targets[ntargets].line, sizeof targets[ntargets].line, "%s: %s", name, detail);
    targets[ntargets].met = met;
    ntargets++;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: thbench [--only telemetry,twin,fanout,scale,tlsfront,fleet] [--quick]\n"
               "               [--scale-devices N] [--fleet-devices N] [--fleet-rounds N]\n"
               "               [--report FILE] [-v] [--twinhub PATH] [--plugin PATH]\n"
               "               [--echo-plugin PATH] [--mosquitto PATH]\n");
}

static void set_path(char *dst, const char *src)
{
    if (snprintf(dst, THB_PATH_MAX, "%s", src) >= THB_PATH_MAX) {
        thb_die("path too long: %s", src);
    }
}

/* Raise RLIMIT_NOFILE to the hard limit; lower the scale case to what fits. */
static void raise_fd_limit(bool scale)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        return;
    }
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    /* The load generator and the broker (which inherits this limit) each hold one descriptor
     * per connection. */
    long can = rl.rlim_cur == RLIM_INFINITY ? 1000000 : (long)rl.rlim_cur - FD_MARGIN;
    /* The fleet case connects as many devices as fit, at most 19,800 (20,000 less the margin). */
    if (thb_cfg.fleet_connected > can) {
        thb_cfg.fleet_connected = can < 100 ? 100 : (int)(can / 100 * 100);
    }
    if (thb_cfg.fleet_connected > thb_cfg.fleet_devices) {
        thb_cfg.fleet_connected = thb_cfg.fleet_devices;
    }
    if (scale && can < thb_cfg.scale_devices) {
        int lowered = (int)(can / 100 * 100);
        if (lowered < 100) {
            lowered = 100;
        }
        thb_out(
            "NOTE: the open-file limit (hard limit %llu) allows %ld connections per process, "
            "fewer than the %d devices of the scale case; it runs with %d devices. "
            "Raise the hard limit (ulimit -Hn, or LimitNOFILE in systemd) to run it in full.\n\n",
            (unsigned long long)rl.rlim_max, can, thb_cfg.scale_devices, lowered);
        thb_cfg.scale_devices = lowered;
    }
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

/*
 * CPU in use by other processes while nothing of ours runs (500 ms sample). The cases share
 * the machine's CPUs with whatever else runs, so this goes into the report.
 */
static double background_load(void)
{
    int64_t b0 = thb_machine_busy_us(), t0 = thb_now_us();
    struct timespec ts = {0, 500 * 1000000L};
    nanosleep(&ts, NULL);
    int64_t b1 = thb_machine_busy_us(), t1 = thb_now_us();
    return b0 < 0 || b1 < 0 ? 0 : (double)(b1 - b0) / (double)(t1 - t0);
}

static double worst_background;

static void check_background(const char *name)
{
    double load = background_load();
    if (load > worst_background) {
        worst_background = load;
    }
    if (load > 0.15) {
        thb_out("WARNING: before the %s case other processes kept %.2f CPUs busy; its numbers "
                "are less reliable (run on an idle machine).\n\n",
                name, load);
    }
}

static bool want(const char *only, const char *name)
{
    if (!only) {
        return true;
    }
    size_t nl = strlen(name);
    for (const char *p = only; *p;) {
        size_t l = strcspn(p, ",");
        if (l == nl && !strncmp(p, name, l)) {
            return true;
        }
        p += l + (p[l] == ',');
    }
    return false;
}

int main(int argc, char **argv)
{
    const char *only = NULL, *report_path = NULL;
    enum {
        O_ONLY = 1,
        O_QUICK,
        O_SCALE,
        O_REPORT,
        O_TWINHUB,
        O_PLUGIN,
        O_ECHO,
        O_MOSQ,
        O_FLEET,
        O_ROUNDS
    };
    static const struct option longopts[] = {
        {"only", required_argument, NULL, O_ONLY},
        {"quick", no_argument, NULL, O_QUICK},
        {"scale-devices", required_argument, NULL, O_SCALE},
        {"fleet-devices", required_argument, NULL, O_FLEET},
        {"fleet-rounds", required_argument, NULL, O_ROUNDS},
        {"report", required_argument, NULL, O_REPORT},
        {"twinhub", required_argument, NULL, O_TWINHUB},
        {"plugin", required_argument, NULL, O_PLUGIN},
        {"echo-plugin", required_argument, NULL, O_ECHO},
        {"mosquitto", required_argument, NULL, O_MOSQ},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    set_path(thb_cfg.twinhub, THB_DEFAULT_TWINHUB);
    set_path(thb_cfg.plugin, THB_DEFAULT_PLUGIN);
    set_path(thb_cfg.echo_plugin, THB_DEFAULT_ECHO_PLUGIN);
    set_path(thb_cfg.tlsshim, THB_DEFAULT_TLSSHIM);
    set_path(thb_cfg.mosquitto, THB_DEFAULT_MOSQUITTO);
    thb_cfg.scale_devices = 10000;
    thb_cfg.fleet_devices = 100000;
    thb_cfg.fleet_connected = 19800;
    thb_cfg.fleet_rounds = 3;
    thb_cfg.time_scale = 1.0;
    int opt;
    while ((opt = getopt_long(argc, argv, "vh", longopts, NULL)) != -1) {
        switch (opt) {
        case O_ONLY:
            only = optarg;
            break;
        case O_QUICK:
            thb_cfg.time_scale = 0.25;
            thb_cfg.scale_devices = 2000;
            break;
        case O_FLEET:
            thb_cfg.fleet_devices = atoi(optarg);
            if (thb_cfg.fleet_devices < 100 || thb_cfg.fleet_devices > 200000) {
                thb_die("--fleet-devices must be 100..200000");
            }
            break;
        case O_ROUNDS:
            thb_cfg.fleet_rounds = atoi(optarg);
            if (thb_cfg.fleet_rounds < 1 || thb_cfg.fleet_rounds > THB_FLEET_MAX_ROUNDS ||
                thb_cfg.fleet_rounds % 2 == 0) {
                thb_die("--fleet-rounds must be odd, 1..15 (the median of the rounds is compared)");
            }
            break;
        case O_SCALE:
            thb_cfg.scale_devices = atoi(optarg);
            if (thb_cfg.scale_devices < 10 || thb_cfg.scale_devices > 99999) {
                thb_die("--scale-devices must be 10..99999");
            }
            break;
        case O_REPORT:
            report_path = optarg;
            break;
        case O_TWINHUB:
            set_path(thb_cfg.twinhub, optarg);
            break;
        case O_PLUGIN:
            set_path(thb_cfg.plugin, optarg);
            break;
        case O_ECHO:
            set_path(thb_cfg.echo_plugin, optarg);
            break;
        case O_MOSQ:
            set_path(thb_cfg.mosquitto, optarg);
            break;
        case 'v':
            thb_cfg.verbose = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    const char *files[] = {thb_cfg.twinhub, thb_cfg.plugin, thb_cfg.echo_plugin, thb_cfg.mosquitto,
                           thb_cfg.tlsshim};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        if (access(files[i], R_OK) != 0) {
            thb_die("%s: %s (build with `ninja -C <builddir>` or pass the path)", files[i],
                    strerror(errno));
        }
    }
    signal(SIGPIPE, SIG_IGN);
    if (report_path && !(report = fopen(report_path, "w"))) {
        thb_die("cannot write %s: %s", report_path, strerror(errno));
    }
    const char *tmp = getenv("TMPDIR");
    if (snprintf(thb_cfg.work, sizeof thb_cfg.work, "%s/thbench-XXXXXX",
                 tmp && *tmp ? tmp : "/tmp") >= (int)sizeof thb_cfg.work) {
        thb_die("TMPDIR is too long");
    }
    if (!mkdtemp(thb_cfg.work)) {
        thb_die("mkdtemp %s: %s", thb_cfg.work, strerror(errno));
    }
    snprintf(thb_cfg.cert_dir, sizeof thb_cfg.cert_dir, "%s/certs", thb_cfg.work);

    char date[64];
    time_t now = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S %Z", localtime(&now));
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    thb_out("# thbench %s, %ld CPUs%s\n\n", date, ncpu, thb_cfg.time_scale < 1 ? ", --quick" : "");
    {
        const char *alloc = thb_broker_malloc();
        const char *base = strrchr(alloc, '/');
        thb_out(
            "The broker's allocator (what `twinhub serve` preloads, and what the like-for-like "
            "baselines get with the I/O layer): %s. Plain mosquitto runs on glibc's malloc.\n\n",
            *alloc ? (base ? base + 1 : alloc)
                   : "none, glibc's malloc (jemalloc not found, "
                     "or TWINHUB_BROKER_MALLOC=glibc)");
    }
    raise_fd_limit(want(only, "scale"));

    int64_t t0 = thb_now_us();
    int failed = 0;
    static const struct {
        const char *name;
        int (*run)(void);
    } cases[] = {
        {"telemetry", thb_bench_telemetry}, {"twin", thb_bench_twin},
        {"fanout", thb_bench_fanout},       {"scale", thb_bench_scale},
        {"tlsfront", thb_bench_tlsfront},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (want(only, cases[i].name)) {
            check_background(cases[i].name);
            failed += cases[i].run() != 0;
        }
    }
    /* The fleet case takes minutes and about 1 GB: only when asked for by name. */
    if (only && want(only, "fleet")) {
        check_background("fleet");
        failed += thb_bench_fleet() != 0;
    }

    thb_out("## Targets\n\n");
    int met = 0;
    for (int i = 0; i < ntargets; i++) {
        thb_out("- %s %s\n", targets[i].met ? "MET    " : "NOT MET", targets[i].line);
        met += targets[i].met;
    }
    thb_out("\n%d of %d targets met; %d case(s) failed to run; total %.0f s; background load "
            "up to %.2f CPUs\n",
            met, ntargets, failed, (double)(thb_now_us() - t0) / 1e6, worst_background);
    if (!thb_cfg.verbose) {
        nftw(thb_cfg.work, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    } else {
        fprintf(stderr, "thbench: kept %s\n", thb_cfg.work);
    }
    if (report) {
        fclose(report);
    }
    return failed ? 1 : 0;
}
