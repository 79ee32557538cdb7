/*
 * bench_fleet.c - a fleet on one hub (docs/performance.md "Fleet"): a
 * registry of 100,000 devices with ~1 KB twins, as many of them connected as
 * one process may hold (the descriptor limit, 19,800 with the usual 20,000),
 * and what a service does to a fleet:
 *
 *   A. twinhub --registry (no state dir): registry load (start to ready),
 *      broker RSS loaded and with the fleet connected, connect rate (against
 *      plain mosquitto on the same connections, --fleet-rounds each (3), alternated, both brokers
 * up; medians), a query over every twin (SELECT COUNT() ... WHERE on a desired value), and a
 * twin-update job over all registered devices: time until the job reports every twin updated, and
 * until every connected device has its notification. B. twinhub --registry --state-dir: the same
 * job with every twin written to the state directory; the broker restarted (SIGTERM, started again
 * on the state directory: state-dir start-up time), every connected device reconnecting (500
 * CONNECTs in flight: time until all are connected again), and nothing lost (the job and every
 * twin's desired value are there).
 *
 * Only with --only fleet (it takes minutes and about 1 GB); every wait is
 * bounded, everything runs on 127.0.0.1, and the brokers are stopped at the end.
 */
#define _GNU_SOURCE
#include "bench.h"
#include "ctl_proto.h"
#include "fleet.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FLEET_DESIRED_BYTES 1000
#define FLEET_CONNECT_WINDOW 64
#define FLEET_RECONNECT_WINDOW 500
#define FLEET_JOB_TIMEOUT_S 120
#define FLEET_CTL_TIMEOUT_S 60
#define CTL_INDEX (-7)

static const char *const filters[] = {
    "devices/%s/messages/devicebound/#",
    "$iothub/methods/POST/#",
    "$iothub/twin/res/#",
    "$iothub/twin/PATCH/properties/desired/#",
};

struct fleet_state {
    char marker[48]; /* in the current job's desired patch */
    long notified;   /* devices that got the notification with the marker */
    char *ctl_reply; /* last control response payload (malloc'd) */
};

static void fleet_packet(struct thb_conn *c, uint8_t hdr, const uint8_t *body, size_t len,
                         void *arg)
{
    struct fleet_state *s = arg;
    struct thb_publish pub;
    if ((hdr >> 4) != THB_PUBLISH || !thb_parse_publish(hdr, body, len, &pub)) {
        return;
    }
    if (c->index == CTL_INDEX) {
        free(s->ctl_reply);
        s->ctl_reply = strndup((const char *)pub.payload, pub.payload_len);
        return;
    }
    static const char desired[] = "$iothub/twin/PATCH/properties/desired/";
    if (!c->a && s->marker[0] && pub.topic_len > sizeof desired - 1 &&
        !memcmp(pub.topic, desired, sizeof desired - 1) &&
        memmem(pub.payload, pub.payload_len, s->marker, strlen(s->marker))) {
        c->a = 1;
        s->notified++;
    }
}

/* One control command (a JSON object text); its response entry's "data", or NULL on error. */
static cJSON *ctl_call(struct thb_loop *l, struct thb_conn *ctl, struct fleet_state *s,
                       const char *cmd)
{
    char *payload;
    if (asprintf(&payload, "{\"commands\":[%s]}", cmd) < 0) {
        thb_die("out of memory");
    }
    free(s->ctl_reply);
    s->ctl_reply = NULL;
    thb_send_publish(ctl, TH_CONTROL_TOPIC, payload, strlen(payload), 0, 0);
    thb_conn_flush(ctl);
    free(payload);
    int64_t deadline = thb_now_us() + FLEET_CTL_TIMEOUT_S * 1000000LL;
    while (!s->ctl_reply && thb_now_us() < deadline) {
        thb_loop_step(l, 10);
    }
    cJSON *root = s->ctl_reply ? cJSON_Parse(s->ctl_reply) : NULL;
    cJSON *entry = cJSON_GetArrayItem(cJSON_GetObjectItem(root, "responses"), 0);
    cJSON *data = cJSON_DetachItemFromObject(entry, "data");
    if (!data) {
        fprintf(stderr, "thbench: fleet: control command failed: %s -> %s\n", cmd,
                s->ctl_reply ? s->ctl_reply : "(no answer)");
    }
    cJSON_Delete(root);
    return data;
}

struct job_times {
    double updated_s;  /* until getJob says completed with every device succeeded */
    double notified_s; /* until every connected device has its notification */
    long devices, succeeded;
    bool ok;
};

/* Create a twin-update job over every device and time it (see the file comment). */
static struct job_times run_job(struct thb_loop *l, struct thb_conn *ctl, struct fleet_state *s,
                                const char *job_id, int n_conn)
{
    struct job_times t = {0};
    char cmd[512];
    snprintf(s->marker, sizeof s->marker, "mark-%s", job_id);
    s->notified = 0;
    snprintf(cmd, sizeof cmd,
             "{\"command\":\"createJob\",\"jobId\":\"%s\",\"job\":{\"type\":\"scheduleUpdateTwin\","
             "\"queryCondition\":\"status = 'enabled'\",\"updateTwin\":{\"properties\":"
             "{\"desired\":{\"rollout\":\"%s\"}}}}}",
             job_id, s->marker);
    int64_t t0 = thb_now_us(), deadline = t0 + FLEET_JOB_TIMEOUT_S * 1000000LL;
    cJSON *job = ctl_call(l, ctl, s, cmd);
    cJSON_Delete(job);
    if (!job) {
        return t;
    }
    snprintf(cmd, sizeof cmd, "{\"command\":\"getJob\",\"jobId\":\"%s\"}", job_id);
    while (thb_now_us() < deadline && (!t.updated_s || !t.notified_s)) {
        int64_t poll_until = thb_now_us() + 200000;
        while (thb_now_us() < poll_until) { /* serve the devices between polls */
            thb_loop_step(l, 10);
            if (!t.notified_s && s->notified >= n_conn) {
                t.notified_s = (double)(thb_now_us() - t0) / 1e6;
            }
        }
        if (t.updated_s) {
            continue;
        }
        job = ctl_call(l, ctl, s, cmd);
        const char *status = cJSON_GetStringValue(cJSON_GetObjectItem(job, "status"));
        if (status && strcmp(status, "running") && strcmp(status, "queued")) {
            cJSON *st = cJSON_GetObjectItem(job, "deviceJobStatistics");
            t.devices = (long)cJSON_GetNumberValue(cJSON_GetObjectItem(st, "deviceCount"));
            t.succeeded = (long)cJSON_GetNumberValue(cJSON_GetObjectItem(st, "succeededCount"));
            t.updated_s = (double)(thb_now_us() - t0) / 1e6;
        }
        cJSON_Delete(job);
    }
    t.ok = t.updated_s > 0 && t.notified_s > 0;
    return t;
}

/* SELECT COUNT() over every twin; seconds, and the count in *count. */
static double run_query(struct thb_loop *l, struct thb_conn *ctl, struct fleet_state *s,
                        const char *where, long *count)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "{\"command\":\"query\",\"query\":\"SELECT COUNT() AS n FROM devices WHERE %s\"}",
             where);
    int64_t t0 = thb_now_us();
    cJSON *data = ctl_call(l, ctl, s, cmd);
    double secs = (double)(thb_now_us() - t0) / 1e6;
    cJSON *first = cJSON_GetArrayItem(cJSON_GetObjectItem(data, "items"), 0);
    *count = data ? (long)cJSON_GetNumberValue(cJSON_GetObjectItem(first, "n")) : -1;
    cJSON_Delete(data);
    return secs;
}

/* Connect n devices; *rate is CONNACKs per second, *cpu_us (when not NULL) the broker's CPU per
 * connection from the first CONNECT to the last SUBACK. */
static int connect_fleet(struct thb_loop *l, struct thb_conn *devs, int n, int port, int window,
                         double *rate, pid_t broker, double *cpu_us)
{
    struct thb_fleet_timing ft;
    int64_t cpu0 = thb_proc_cpu_us(broker);
    if (thb_fleet_connect(l, devs, n, port, filters, 4, 1, window, &ft) != 0) {
        return -1;
    }
    *rate = (double)n / ((double)ft.connack_us / 1e6);
    if (cpu_us) {
        *cpu_us = (double)(thb_proc_cpu_us(broker) - cpu0) / n;
    }
    return 0;
}

int thb_bench_fleet(void)
{
    int n_reg = thb_cfg.fleet_devices, n_conn = thb_cfg.fleet_connected;
    char registry[THB_PATH_MAX + 32], state[THB_PATH_MAX + 32];
    snprintf(registry, sizeof registry, "%s/registry-fleet.json", thb_cfg.work);
    snprintf(state, sizeof state, "%s/state-fleet", thb_cfg.work);
    int64_t tw = thb_now_us();
    if (thb_write_registry(registry, n_reg, FLEET_DESIRED_BYTES) != 0) {
        return -1;
    }
    if (thb_cfg.verbose) {
        fprintf(stderr, "thbench: fleet: registry of %d devices written in %.1f s\n", n_reg,
                (double)(thb_now_us() - tw) / 1e6);
    }
    struct thb_conn *devs = calloc((size_t)n_conn, sizeof *devs);
    struct thb_conn ctl = {0};
    struct fleet_state s = {0};
    struct thb_broker b;
    struct thb_loop l;
    double base_rate = 0, rate = 0, rate_state = 0, reconnect_s = 0, query_s = 0;
    double base_cpu = 0, cpu = 0;
    double base_rates[THB_FLEET_MAX_ROUNDS] = {0}, base_cpus[THB_FLEET_MAX_ROUNDS] = {0};
    double rates[THB_FLEET_MAX_ROUNDS] = {0}, cpus[THB_FLEET_MAX_ROUNDS] = {0};
    const int rounds =
        thb_cfg.fleet_rounds < THB_FLEET_MAX_ROUNDS ? thb_cfg.fleet_rounds : THB_FLEET_MAX_ROUNDS;
    long rss0 = 0, rss_loaded = 0, rss_conn = 0, base_rss0 = 0, base_rss = 0, count = 0;
    long count_after = -1;
    double load_s = 0, seed_s = 0, restart_s = 0;
    struct job_times job_a = {0}, job_b = {0};
    char *status_after = NULL;
    char th_malloc[64] = "?", base_malloc[64] = "?"; /* the brokers' allocators */
    int rc = -1;
    if (!devs) {
        thb_die("out of memory");
    }

    /* The connect rate: plain mosquitto and twinhub with the registry (no state dir) both up,
     * the fleet connected to each `rounds` times, alternated (mosquitto, twinhub;
     * twinhub, mosquitto; ...), closed after each round but twinhub's last, which phase A goes
     * on with; the medians are compared. One round per broker moved the ratio from 0.79 to 1.46
     * between runs of the same build. */
    struct thb_broker plain;
    if (thb_broker_start(&plain, THB_PLAIN, NULL, NULL) != 0) {
        goto fail;
    }
    base_rss0 = thb_proc_status_kb(plain.broker, "VmRSS");

    /* A: the registry, no state dir. */
    if (thb_broker_start(&b, THB_TWINHUB, NULL, NULL) != 0) {
        thb_broker_stop(&plain);
        goto fail;
    }
    rss0 = thb_proc_status_kb(b.broker, "VmRSS");
    thb_broker_stop(&b);
    if (thb_broker_start(&b, THB_TWINHUB, registry, NULL) != 0) {
        thb_broker_stop(&plain);
        goto fail;
    }
    load_s = (double)b.start_us / 1e6;
    rss_loaded = thb_proc_status_kb(b.broker, "VmRSS");
    for (int round = 0; round < rounds; round++) {
        bool last = round == rounds - 1;
        /* twinhub first in odd rounds; always last in the last round, whose fleet stays. */
        for (int k = 0; k < 2; k++) {
            bool th = last ? k == 1 : (k == 0) == (round % 2 == 1);
            struct thb_broker *tb = th ? &b : &plain;
            memset(devs, 0, (size_t)n_conn * sizeof *devs);
            thb_loop_init(&l, fleet_packet, NULL, &s);
            if (connect_fleet(&l, devs, n_conn, tb->port, FLEET_CONNECT_WINDOW,
                              th ? &rates[round] : &base_rates[round], tb->broker,
                              th ? &cpus[round] : &base_cpus[round]) != 0) {
                thb_broker_stop(&plain);
                goto fail_a;
            }
            if (thb_cfg.verbose) {
                fprintf(stderr,
                        "thbench: fleet connect round %d, %s: %.0f/s, %.1f us (RSS %ld kB, "
                        "AnonHugePages %ld kB)\n",
                        round + 1, th ? "twinhub" : "mosquitto",
                        th ? rates[round] : base_rates[round], th ? cpus[round] : base_cpus[round],
                        thb_proc_status_kb(tb->broker, "VmRSS"),
                        thb_proc_smaps_kb(tb->broker, "AnonHugePages"));
            }
            if (!th && last) {
                base_rss = thb_proc_status_kb(plain.broker, "VmRSS");
            }
            if (th && last) {
                break; /* phase A goes on with this fleet and loop */
            }
            thb_fleet_close(devs, n_conn);
            thb_loop_free(&l);
        }
    }
    thb_proc_malloc(plain.broker, base_malloc, sizeof base_malloc);
    thb_proc_malloc(b.broker, th_malloc, sizeof th_malloc);
    thb_broker_stop(&plain);
    base_rate = thb_median(base_rates, rounds), base_cpu = thb_median(base_cpus, rounds);
    rate = thb_median(rates, rounds), cpu = thb_median(cpus, rounds);
    if (thb_service_connect(&l, &ctl, CTL_INDEX, b.port, TH_CONTROL_RESPONSE_TOPIC, 0) != 0) {
        goto fail_a;
    }
    l.on_packet = fleet_packet;
    l.arg = &s;
    rss_conn = thb_proc_status_kb(b.broker, "VmRSS");
    query_s = run_query(&l, &ctl, &s, "properties.desired.config.setting00 != 'x'", &count);
    job_a = run_job(&l, &ctl, &s, "fleet-a", n_conn);
    if (thb_cfg.verbose) {
        fprintf(stderr, "thbench: fleet A: load %.1f s, query %.2f s (%ld), job %.1f/%.1f s\n",
                load_s, query_s, count, job_a.updated_s, job_a.notified_s);
    }
    thb_fleet_close(&ctl, 1);
    thb_fleet_close(devs, n_conn);
    thb_loop_free(&l);
    thb_broker_stop(&b);

    /* B: the state dir: seed, job, restart, reconnect. */
    thb_cfg.state_dir = state;
    if (thb_broker_start(&b, THB_TWINHUB, registry, NULL) != 0) {
        goto fail;
    }
    seed_s = (double)b.start_us / 1e6;
    memset(devs, 0, (size_t)n_conn * sizeof *devs);
    memset(&ctl, 0, sizeof ctl);
    thb_loop_init(&l, fleet_packet, NULL, &s);
    if (connect_fleet(&l, devs, n_conn, b.port, FLEET_CONNECT_WINDOW, &rate_state, b.broker,
                      NULL) != 0 ||
        thb_service_connect(&l, &ctl, CTL_INDEX, b.port, TH_CONTROL_RESPONSE_TOPIC, 0) != 0) {
        goto fail_a;
    }
    l.on_packet = fleet_packet;
    l.arg = &s;
    job_b = run_job(&l, &ctl, &s, "fleet-b", n_conn);
    thb_broker_stop(&b); /* the devices' connections end with it */
    thb_fleet_close(&ctl, 1);
    thb_fleet_close(devs, n_conn);
    thb_loop_free(&l);
    if (thb_broker_start(&b, THB_TWINHUB, registry, NULL) != 0) {
        goto fail;
    }
    restart_s = (double)b.start_us / 1e6;
    memset(devs, 0, (size_t)n_conn * sizeof *devs);
    memset(&ctl, 0, sizeof ctl);
    thb_loop_init(&l, fleet_packet, NULL, &s);
    /* All at once, as far as the broker's listen backlog lets them in: with every SYN sent
     * together the kernel drops most and retries them a second and more later, so
     * FLEET_RECONNECT_WINDOW connections are in flight at a time. */
    if (connect_fleet(&l, devs, n_conn, b.port, FLEET_RECONNECT_WINDOW, &reconnect_s, b.broker,
                      NULL) != 0 ||
        thb_service_connect(&l, &ctl, CTL_INDEX, b.port, TH_CONTROL_RESPONSE_TOPIC, 0) != 0) {
        goto fail_a;
    }
    reconnect_s = n_conn / reconnect_s; /* connect_fleet gives a rate */
    l.on_packet = fleet_packet;
    l.arg = &s;
    {
        char where[128];
        snprintf(where, sizeof where, "properties.desired.rollout = 'mark-fleet-b'");
        (void)run_query(&l, &ctl, &s, where, &count_after);
        cJSON *j = ctl_call(&l, &ctl, &s, "{\"command\":\"getJob\",\"jobId\":\"fleet-b\"}");
        const char *st = cJSON_GetStringValue(cJSON_GetObjectItem(j, "status"));
        status_after = strdup(st ? st : "?");
        cJSON_Delete(j);
    }
    rc = 0;
fail_a:
    thb_fleet_close(&ctl, 1);
    thb_fleet_close(devs, n_conn);
    thb_loop_free(&l);
    thb_broker_stop(&b);
fail:
    thb_cfg.state_dir = NULL;
    free(devs);
    free(s.ctl_reply);
    if (rc != 0) {
        fprintf(stderr, "thbench: fleet could not run\n");
        free(status_after);
        return -1;
    }

    double mb = 1024.0;
    thb_out("## Fleet: %d registered devices, %d connected\n\n", n_reg, n_conn);
    thb_out("Twins of ~%d B of desired properties each (registry file); the connected devices "
            "subscribe to the 4 usual topics. %d connections is what one process may hold here "
            "(descriptor limit, less a margin). The brokers' malloc: twinhub's %s (what `serve` "
            "preloads, or TWINHUB_BROKER_MALLOC), plain mosquitto's %s.\n\n",
            FLEET_DESIRED_BYTES, n_conn, th_malloc, base_malloc);
    thb_out("| measure | twinhub | mosquitto |\n|---|---|---|\n");
    thb_out("| registry load (start to ready) | %.2f s | |\n", load_s);
    thb_out("| broker RSS: empty / registry loaded / %d connected | %.0f / %.0f / %.0f MB | "
            "%.0f / - / %.0f MB |\n",
            n_conn, rss0 / mb, rss_loaded / mb, rss_conn / mb, base_rss0 / mb, base_rss / mb);
    thb_out("| connects/s (%d in flight; median of %d rounds, alternated, min-max) | %.0f "
            "(%.0f-%.0f) | %.0f (%.0f-%.0f) |\n",
            FLEET_CONNECT_WINDOW, rounds, rate, rates[0], rates[rounds - 1], base_rate,
            base_rates[0], base_rates[rounds - 1]);
    thb_out("| broker CPU per connection (CONNECT and 4 subscriptions; median) | %.1f µs | %.1f µs "
            "|\n",
            cpu, base_cpu);
    thb_out("| query `SELECT COUNT()` over %d twins | %.2f s (%ld matched) | |\n", n_reg, query_s,
            count);
    thb_out("| twin-update job over %d devices: every twin updated / every connected device "
            "notified | %.1f s / %.1f s (%ld of %ld succeeded) | |\n",
            n_reg, job_a.updated_s, job_a.notified_s, job_a.succeeded, job_a.devices);
    thb_out("| first start with a state dir (writes %d device files) | %.1f s | |\n", n_reg,
            seed_s);
    thb_out("| the same job with --state-dir (every twin written to its file) | %.1f s / %.1f s "
            "(%ld of %ld succeeded) | |\n",
            job_b.updated_s, job_b.notified_s, job_b.succeeded, job_b.devices);
    thb_out("| broker restart: state-dir start-up (start to ready) | %.2f s | |\n", restart_s);
    thb_out("| %d devices reconnecting after the restart (%d in flight): until all connected | "
            "%.1f s | |\n",
            n_conn, FLEET_RECONNECT_WINDOW, reconnect_s);
    thb_out(
        "| after the restart: twins with the job's value / job status | %ld of %ld / %s | |\n\n",
        count_after, job_b.devices, status_after);

    /* The jobs select every device: the registry's and serve's development device. */
    bool a_ok = job_a.ok && job_a.devices >= n_reg && job_a.succeeded == job_a.devices;
    thb_target("fleet: broker RSS < 1 GB with the registry and the connected devices",
               rss_conn < 1024 * 1024, "%.0f MB with %d registered, %d connected", rss_conn / mb,
               n_reg, n_conn);
    thb_target("fleet: connect rate >= mosquitto's", rate >= base_rate,
               "%.0f/s vs %.0f/s (%.2f; broker CPU per connection %.1f vs %.1f µs)", rate,
               base_rate, base_rate > 0 ? rate / base_rate : 0, cpu, base_cpu);
    thb_target("fleet: twin-update job over every device < 10 s",
               a_ok && job_a.notified_s < 10 && job_a.updated_s < 10,
               "every twin updated after %.1f s, every connected device notified after %.1f s",
               job_a.updated_s, job_a.notified_s);
    thb_target("fleet: state-dir start-up < 5 s", restart_s < 5, "%.2f s with %d devices",
               restart_s, n_reg);
    thb_target("fleet: query over every twin < 1 s", query_s < 1 && count >= n_reg,
               "%.2f s over %d twins", query_s, n_reg);
    thb_target("fleet: nothing lost across the restart",
               job_b.devices >= n_reg && count_after == job_b.devices && status_after &&
                   !strcmp(status_after, "completed"),
               "%ld of %ld twins with the job's value, job %s", count_after, job_b.devices,
               status_after);
    free(status_after);
    return a_ok ? 0 : -1;
}
