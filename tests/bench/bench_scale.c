/*
 * bench_scale.c - many connected devices: broker memory and connect rate.
 *
 * twinhub: a registry file with N devices (explicit keys, ~500 B of desired
 * properties each) is loaded by `twinhub serve --registry`; N devices
 * connect with SAS tokens (64 CONNECTs in flight), subscribe to the 4 usual
 * IoT Hub topics, and each sends a ~500 B reported patch (QoS 1) and waits
 * for the 204, so each twin holds ~1 KB. Memory is the broker's VmRSS from
 * /proc; the per-device figure is (RSS with N devices - RSS of a twinhub
 * started without a registry) / N, so it includes the registry and twins.
 *
 * Baseline: plain mosquitto with the same N connections (same CONNECT
 * bytes), the same 4 subscriptions and the same publish (dropped: no
 * subscriber), per device (RSS with N - RSS at start) / N.
 *
 * Each broker runs SCALE_ROUNDS times, alternated; the connect rate and the
 * broker's CPU per connection (from /proc, first CONNECT to last SUBACK) are
 * the medians of the rounds.
 */
#define _GNU_SOURCE
#include "bench.h"
#include "fleet.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SCALE_DESIRED_BYTES 500
#define SCALE_PATCH_WINDOW 500
#define SCALE_TIMEOUT_S 60
/* Connect rounds per broker, alternated (mosquitto, twinhub, mosquitto, ...): connect rates
 * move by +-30 % between single runs on a shared machine, so the median is reported, with
 * the broker's CPU per connection, the steadier figure. */
#define SCALE_ROUNDS 3

static const char *const filters[] = {
    "devices/%s/messages/devicebound/#",
    "$iothub/methods/POST/#",
    "$iothub/twin/res/#",
    "$iothub/twin/PATCH/properties/desired/#",
};

struct scale_run {
    bool twinhub;
    long done, bad;
    size_t twin_len; /* body of the GET answer */
};

/* conn: a = 1 once its patch was answered (PUBACK for mosquitto, 204 for twinhub). */
static void scale_packet(struct thb_conn *c, uint8_t hdr, const uint8_t *body, size_t len,
                         void *arg)
{
    struct scale_run *r = arg;
    int type = hdr >> 4;
    struct thb_publish pub;
    if (!r->twinhub && type == THB_PUBACK && !c->a) {
        c->a = 1;
        r->done++;
    } else if (r->twinhub && type == THB_PUBLISH && thb_parse_publish(hdr, body, len, &pub)) {
        if (pub.topic_len > 20 && !memcmp(pub.topic, "$iothub/twin/res/204/", 21) && !c->a) {
            c->a = 1;
            r->done++;
        } else if (pub.topic_len > 20 && !memcmp(pub.topic, "$iothub/twin/res/200/", 21)) {
            r->twin_len = pub.payload_len;
            c->b = 1;
        } else {
            r->bad++;
        }
    }
}

static size_t reported_patch(int i, char *buf, size_t size)
{
    size_t n =
        (size_t)snprintf(buf, size, "{\"firmware\":{\"version\":\"1.4.%d\"},\"config\":{", i % 100);
    for (int k = 0; k < 11 && n < size; k++) {
        n += (size_t)snprintf(buf + n, size - n, "%s\"applied%02d\":\"state-%05d-%02d-0123456789\"",
                              k ? "," : "", k, i, k);
    }
    n += (size_t)snprintf(buf + n, size - n, "}}");
    return n;
}

/* The broker's user and system CPU (10 ms ticks) and minor page faults so far, from
 * /proc/<pid>/stat: printed per connection with -v, to tell the broker's own work from the
 * kernel's (system calls, page faults). False when unreadable. */
struct proc_split {
    unsigned long long utime, stime, minflt;
};

static bool proc_split_read(pid_t pid, struct proc_split *s)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) {
        return false;
    }
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *rp = strrchr(buf, ')');
    /* After "(comm)": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
     * utime stime (fields 3..15). */
    return rp && sscanf(rp + 2, "%*c %*d %*d %*d %*d %*d %*u %llu %*u %*u %*u %llu %llu",
                        &s->minflt, &s->utime, &s->stime) == 3;
}

struct scale_result {
    int n;
    long rss0_kb, rss_kb;  /* at start (empty for twinhub: no registry), with N devices */
    long rss_loaded_kb;    /* twinhub: after loading the registry, before connections */
    double connect_rate;   /* CONNACKs per second */
    double connect_cpu_us; /* broker CPU per device, from the first CONNECT to the last SUBACK */
    double start_ms;       /* broker start to ready */
    double user_us, sys_us, minflt; /* per connection, from /proc/<pid>/stat (-v only) */
    size_t twin_len;
    bool ok;
};

static int run_target(bool twinhub, bool iolayer, const char *registry, int n,
                      struct scale_result *out)
{
    struct thb_broker b;
    struct thb_loop l;
    struct thb_fleet_timing ft;
    struct thb_conn *devs = calloc((size_t)n, sizeof *devs);
    struct scale_run r = {.twinhub = twinhub};
    int rc = -1;
    if (!devs) {
        thb_die("out of memory");
    }
    memset(out, 0, sizeof *out);
    out->n = n;
    if (twinhub) {
        /* The hub's own footprint: started without the registry. */
        if (thb_broker_start(&b, THB_TWINHUB, NULL, NULL) != 0) {
            free(devs);
            return -1;
        }
        out->rss0_kb = thb_proc_status_kb(b.broker, "VmRSS");
        thb_broker_stop(&b);
    }
    if (thb_broker_start(&b,
                         twinhub   ? THB_TWINHUB
                         : iolayer ? THB_PLAIN_IO
                                   : THB_PLAIN,
                         twinhub ? registry : NULL, NULL) != 0) {
        free(devs);
        return -1;
    }
    out->start_ms = (double)b.start_us / 1000;
    if (twinhub) {
        out->rss_loaded_kb = thb_proc_status_kb(b.broker, "VmRSS");
    } else {
        out->rss0_kb = out->rss_loaded_kb = thb_proc_status_kb(b.broker, "VmRSS");
    }
    thb_loop_init(&l, NULL, NULL, NULL);
    struct proc_split s0 = {0}, s1 = {0};
    bool split = proc_split_read(b.broker, &s0);
    int64_t cpu0 = thb_proc_cpu_us(b.broker);
    if (thb_fleet_connect(&l, devs, n, b.port, filters, 4, 1, 64, &ft) != 0) {
        goto out;
    }
    out->connect_rate = (double)n / ((double)ft.connack_us / 1e6);
    out->connect_cpu_us = (double)(thb_proc_cpu_us(b.broker) - cpu0) / n;
    if (split && proc_split_read(b.broker, &s1)) {
        double tick_us = 1e6 / (double)sysconf(_SC_CLK_TCK);
        out->user_us = (double)(s1.utime - s0.utime) * tick_us / n;
        out->sys_us = (double)(s1.stime - s0.stime) * tick_us / n;
        out->minflt = (double)(s1.minflt - s0.minflt) / n;
    }

    l.on_packet = scale_packet;
    l.on_state = NULL;
    l.arg = &r;
    int64_t deadline = thb_now_us() + SCALE_TIMEOUT_S * 1000000LL;
    int next = 0;
    char patch[1024];
    while (r.done < n && thb_now_us() < deadline && l.closed_unexpectedly == 0) {
        while (next < n && next - r.done < SCALE_PATCH_WINDOW) {
            size_t len = reported_patch(next, patch, sizeof patch);
            thb_send_publish(&devs[next], "$iothub/twin/PATCH/properties/reported/?$rid=1", patch,
                             len, 1, 1);
            thb_conn_flush(&devs[next]);
            next++;
        }
        thb_loop_step(&l, 10);
    }
    if (twinhub && r.done == n) {
        thb_send_publish(&devs[0], "$iothub/twin/GET/?$rid=2", NULL, 0, 0, 0);
        thb_conn_flush(&devs[0]);
        while (!devs[0].b && thb_now_us() < deadline) {
            thb_loop_step(&l, 10);
        }
        out->twin_len = r.twin_len;
    }
    out->rss_kb = thb_proc_status_kb(b.broker, "VmRSS");
    out->ok = r.done == n && r.bad == 0 && l.closed_unexpectedly == 0 && (!twinhub || devs[0].b);
    if (!out->ok) {
        fprintf(stderr,
                "thbench: scale (%s): %ld of %d patches answered, %ld unexpected, %ld lost\n",
                twinhub ? "twinhub" : "mosquitto", r.done, n, r.bad, l.closed_unexpectedly);
    }
    rc = 0;
out:
    thb_fleet_close(devs, n);
    thb_loop_free(&l);
    free(devs);
    thb_broker_stop(&b);
    return rc;
}

int thb_bench_scale(void)
{
    int n = thb_cfg.scale_devices;
    struct scale_result base, like, th;
    double base_rate[SCALE_ROUNDS], th_rate[SCALE_ROUNDS], base_cpu[SCALE_ROUNDS],
        th_cpu[SCALE_ROUNDS], like_rate[SCALE_ROUNDS], like_cpu[SCALE_ROUNDS];
    bool all_ok = true;
    char registry[THB_PATH_MAX + 32];
    snprintf(registry, sizeof registry, "%s/registry-scale.json", thb_cfg.work);
    if (thb_write_registry(registry, n, SCALE_DESIRED_BYTES) != 0) {
        return -1;
    }
    for (int round = 0; round < SCALE_ROUNDS; round++) {
        /* Which broker goes first alternates too (mosquitto, twinhub; twinhub, mosquitto; ...):
         * at 10,000 devices a connection's CPU is mostly cache misses in mosquitto's
         * subscription walk, whose cost depends on what ran just before; neither broker should
         * always follow the other. The like-for-like baseline comes last. */
        bool th_first = round % 2 == 1;
        if ((th_first && run_target(true, false, registry, n, &th) != 0) ||
            run_target(false, false, NULL, n, &base) != 0 ||
            (!th_first && run_target(true, false, registry, n, &th) != 0) ||
            run_target(false, true, NULL, n, &like) != 0) {
            fprintf(stderr, "thbench: scale could not run\n");
            return -1;
        }
        base_rate[round] = base.connect_rate;
        th_rate[round] = th.connect_rate;
        base_cpu[round] = base.connect_cpu_us;
        th_cpu[round] = th.connect_cpu_us;
        like_rate[round] = like.connect_rate;
        like_cpu[round] = like.connect_cpu_us;
        all_ok = all_ok && base.ok && th.ok && like.ok;
        if (thb_cfg.verbose) {
            fprintf(stderr,
                    "thbench: scale round %d: connects/s mosquitto %.0f, twinhub %.0f; broker CPU "
                    "per connection %.1f / %.1f us (user %.1f / %.1f, system %.1f / %.1f; minor "
                    "faults %.2f / %.2f)\n",
                    round + 1, base.connect_rate, th.connect_rate, base.connect_cpu_us,
                    th.connect_cpu_us, base.user_us, th.user_us, base.sys_us, th.sys_us,
                    base.minflt, th.minflt);
        }
    }
    double base_rate_lo = base_rate[0], base_rate_hi = base_rate[0], th_rate_lo = th_rate[0],
           th_rate_hi = th_rate[0];
    for (int round = 1; round < SCALE_ROUNDS; round++) {
        base_rate_lo = base_rate[round] < base_rate_lo ? base_rate[round] : base_rate_lo;
        base_rate_hi = base_rate[round] > base_rate_hi ? base_rate[round] : base_rate_hi;
        th_rate_lo = th_rate[round] < th_rate_lo ? th_rate[round] : th_rate_lo;
        th_rate_hi = th_rate[round] > th_rate_hi ? th_rate[round] : th_rate_hi;
    }
    double base_rate_med = thb_median(base_rate, SCALE_ROUNDS),
           th_rate_med = thb_median(th_rate, SCALE_ROUNDS);
    double base_cpu_med = thb_median(base_cpu, SCALE_ROUNDS),
           th_cpu_med = thb_median(th_cpu, SCALE_ROUNDS);
    double like_rate_med = thb_median(like_rate, SCALE_ROUNDS),
           like_cpu_med = thb_median(like_cpu, SCALE_ROUNDS);
    /* Memory: the last round (the rounds differ by a few bytes per device). */
    double base_per = (double)(base.rss_kb - base.rss0_kb) * 1024 / n;
    double th_per = (double)(th.rss_kb - th.rss0_kb) * 1024 / n;
    double th_conn_per = (double)(th.rss_kb - th.rss_loaded_kb) * 1024 / n;
    double limit = 2 * base_per + (double)th.twin_len;
    thb_out("## Scale: %d connected devices\n\n", n);
    thb_out("Broker VmRSS; each device has 4 subscriptions and sent one ~%d B reported patch; "
            "twinhub's twins hold ~%d B of desired properties from the registry too. Connects/s "
            "and broker CPU per connection (CONNECT and SUBSCRIBE, first CONNECT to last SUBACK): "
            "median of %d rounds per broker, alternated (min-max of the rates); memory from the "
            "last round.\n\n",
            (int)reported_patch(0, (char[1024]){0}, 1024), SCALE_DESIRED_BYTES, SCALE_ROUNDS);
    thb_out("| | RSS at start | RSS with %d devices | per device | connects/s | broker CPU per "
            "connection | start to ready |\n",
            n);
    thb_out("|---|---|---|---|---|---|---|\n");
    thb_out("| mosquitto | %.1f MB | %.1f MB | %.0f B | %.0f (%.0f-%.0f) | %.1f µs | %.0f ms |\n",
            (double)base.rss0_kb / 1024, (double)base.rss_kb / 1024, base_per, base_rate_med,
            base_rate_lo, base_rate_hi, base_cpu_med, base.start_ms);
    thb_out("| twinhub | %.1f MB (no registry); %.1f MB (registry loaded) | %.1f MB | %.0f B "
            "(%.0f B for the connection alone) | %.0f (%.0f-%.0f) | %.1f µs | %.0f ms |\n",
            (double)th.rss0_kb / 1024, (double)th.rss_loaded_kb / 1024, (double)th.rss_kb / 1024,
            th_per, th_conn_per, th_rate_med, th_rate_lo, th_rate_hi, th_cpu_med, th.start_ms);
    thb_out("\nTwin size (GET body): %zu B. Target: twinhub per device <= 2 x mosquitto's + the "
            "twin = %.0f B. Connect rate ratio (twinhub / mosquitto, medians): %.2f; broker CPU "
            "per connection, mosquitto / twinhub: %.2f.\n\n",
            th.twin_len, limit, base_rate_med ? th_rate_med / base_rate_med : 0,
            th_cpu_med > 0 ? base_cpu_med / th_cpu_med : 0);
    thb_out("Like for like, mosquitto given what `twinhub serve` preloads into its broker (the "
            "I/O layer and the allocator): %.0f connects/s, %.1f µs of broker CPU per connection; "
            "ratio "
            "twinhub / it %.2f (CPU %.2f). This is the hub's own cost over the broker's; the "
            "comparison above is with plain mosquitto.\n\n",
            like_rate_med, like_cpu_med, like_rate_med ? th_rate_med / like_rate_med : 0,
            th_cpu_med > 0 ? like_cpu_med / th_cpu_med : 0);
    thb_target("memory per device <= 2x mosquitto + twin", th_per <= limit && all_ok,
               "%.0f B vs %.0f B (mosquitto %.0f B, twin %zu B)", th_per, limit, base_per,
               th.twin_len);
    return all_ok ? 0 : -1;
}
