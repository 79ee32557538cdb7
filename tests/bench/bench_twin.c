/*
 * bench_twin.c - twin round trips: each device publishes a reported PATCH
 * (or a GET) at QoS 0 with a fresh $rid, waits for the matching
 * `$iothub/twin/res/...`, and sends the next at once. 1 and 50 devices.
 *
 *   baseline   mosquitto + echo_plugin.so: a canned reply, no state
 *   twinhub    the real thing: SAS-authenticated devices, JSON merge into
 *              the twin, versions, metadata, an event per operation
 *
 * Throughput = completed round trips / measured seconds; latency is from
 * the request's send() to the parse of its response (loopback, load
 * generator on the other CPU); broker CPU per round trip from /proc.
 */
#define _GNU_SOURCE
#include "bench.h"
#include "fleet.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TWIN_DEVICES 50
#define TWIN_WARMUP_S 0.2
#define TWIN_MEASURE_S 1.5
#define TWIN_MAX_SAMPLES 4000000
#define TWIN_REPEATS 3

enum twin_op { OP_PATCH, OP_GET };
static const char *const op_name[] = {"reported PATCH", "GET"};

struct twin_result {
    double rate;
    int64_t p50, p99; /* µs */
    double cpu_us;    /* broker CPU per round trip */
    long errors;
    bool ok;
};

struct twin_run {
    enum twin_op op;
    int ndev;
    bool measuring, stopping;
    int64_t *lat;
    size_t nlat;
    long completed, errors, outstanding;
};

/* conn: a = next $rid, t0 = send time of the outstanding request, c = 1 while outstanding. */
static void send_request(struct twin_run *r, struct thb_conn *c)
{
    char topic[128], body[128];
    c->a++;
    if (r->op == OP_GET) {
        snprintf(topic, sizeof topic, "$iothub/twin/GET/?$rid=%lld", (long long)c->a);
        thb_send_publish(c, topic, NULL, 0, 0, 0);
    } else {
        snprintf(topic, sizeof topic, "$iothub/twin/PATCH/properties/reported/?$rid=%lld",
                 (long long)c->a);
        int n = snprintf(body, sizeof body, "{\"temperature\":21.5,\"seq\":%lld,\"status\":\"ok\"}",
                         (long long)c->a);
        thb_send_publish(c, topic, body, (size_t)n, 0, 0);
    }
    c->c = 1;
    r->outstanding++;
    c->t0 = thb_now_us();
    thb_conn_flush(c);
}

static void twin_packet(struct thb_conn *c, uint8_t hdr, const uint8_t *body, size_t len, void *arg)
{
    struct twin_run *r = arg;
    struct thb_publish pub;
    if ((hdr >> 4) != THB_PUBLISH || !thb_parse_publish(hdr, body, len, &pub)) {
        return;
    }
    int64_t now = thb_now_us();
    /* "$iothub/twin/res/{status}/?$rid={rid}[&$version=v]" */
    char topic[256];
    size_t tl = pub.topic_len < sizeof topic - 1 ? pub.topic_len : sizeof topic - 1;
    memcpy(topic, pub.topic, tl);
    topic[tl] = '\0';
    int status = 0;
    long long rid = -1;
    const char *q = strstr(topic, "$rid=");
    if (sscanf(topic, "$iothub/twin/res/%d/", &status) != 1 || !q ||
        sscanf(q + 5, "%lld", &rid) != 1 || rid != c->a || !c->c) {
        r->errors++;
        return;
    }
    if (status != (r->op == OP_GET ? 200 : 204)) {
        r->errors++;
    }
    c->c = 0;
    r->outstanding--;
    if (r->measuring) {
        r->completed++;
        if (r->nlat < TWIN_MAX_SAMPLES) {
            r->lat[r->nlat++] = now - c->t0;
        }
    }
    if (!r->stopping) {
        send_request(r, c);
    }
}

static struct twin_result run_once(struct thb_loop *l, struct thb_conn *devs, int ndev,
                                   enum twin_op op, pid_t broker, int64_t *lat)
{
    struct twin_run r = {.op = op, .ndev = ndev, .lat = lat};
    struct twin_result res = {0};
    l->on_packet = twin_packet;
    l->on_state = NULL;
    l->arg = &r;
    long lost0 = l->closed_unexpectedly;
    for (int i = 0; i < ndev; i++) {
        devs[i].c = 0;
        send_request(&r, &devs[i]);
    }
    int64_t start = thb_now_us();
    int64_t t0 = start + (int64_t)(TWIN_WARMUP_S * thb_cfg.time_scale * 1e6), t1 = 0, cpu0 = 0;
    int64_t end = t0 + (int64_t)(TWIN_MEASURE_S * thb_cfg.time_scale * 1e6);
    while (thb_now_us() < end) {
        thb_loop_step(l, 5);
        if (!r.measuring && thb_now_us() >= t0) {
            r.measuring = true;
            t0 = thb_now_us();
            cpu0 = thb_proc_cpu_us(broker);
        }
    }
    r.measuring = false;
    r.stopping = true;
    t1 = thb_now_us();
    int64_t cpu1 = thb_proc_cpu_us(broker);
    /* Collect the answers still on their way before the next run. */
    int64_t drain_until = thb_now_us() + 3000000;
    while (r.outstanding > 0 && thb_now_us() < drain_until) {
        thb_loop_step(l, 10);
    }
    res.ok = r.outstanding == 0 && r.errors == 0 && l->closed_unexpectedly == lost0;
    res.errors = r.errors;
    res.rate = (double)r.completed / ((double)(t1 - t0) / 1e6);
    res.cpu_us = r.completed ? (double)(cpu1 - cpu0) / (double)r.completed : 0;
    thb_sort_i64(lat, r.nlat);
    res.p50 = thb_percentile(lat, r.nlat, 50);
    res.p99 = thb_percentile(lat, r.nlat, 99);
    if (!res.ok) {
        fprintf(stderr, "thbench: twin %s, %d devices: %ld errors, %ld unanswered\n", op_name[op],
                ndev, r.errors, r.outstanding);
    }
    return res;
}

static const int dev_counts[] = {1, 50};
#define NCONF 4 /* op x dev_counts */

struct twin_target {
    struct thb_broker b;
    struct thb_loop l;
    struct thb_conn devs[TWIN_DEVICES];
    bool up;
};

static int cmp_rate(const void *a, const void *b)
{
    double x = ((const struct twin_result *)a)->rate, y = ((const struct twin_result *)b)->rate;
    return (x > y) - (x < y);
}

int thb_bench_twin(void)
{
    static struct twin_target tg[2]; /* 0: echo baseline, 1: twinhub */
    static const char *const tname[] = {"echo plugin", "twinhub"};
    struct twin_result runs[2][NCONF][TWIN_REPEATS], res[2][NCONF];
    char registry[THB_PATH_MAX + 32];
    static const char *const filters[] = {"$iothub/twin/res/#"};
    int rc = 0;
    int64_t *lat = malloc(TWIN_MAX_SAMPLES * sizeof *lat);
    if (!lat) {
        thb_die("out of memory");
    }
    memset(runs, 0, sizeof runs);
    snprintf(registry, sizeof registry, "%s/registry-twin.json", thb_cfg.work);
    if (thb_write_registry(registry, TWIN_DEVICES, 0) != 0) {
        free(lat);
        return -1;
    }
    for (int t = 0; t < 2 && rc == 0; t++) {
        struct thb_fleet_timing ft;
        if (thb_broker_start(&tg[t].b, t ? THB_TWINHUB : THB_ECHO, registry, NULL) != 0) {
            rc = -1;
            break;
        }
        tg[t].up = true;
        thb_loop_init(&tg[t].l, NULL, NULL, NULL);
        rc = thb_fleet_connect(&tg[t].l, tg[t].devs, TWIN_DEVICES, tg[t].b.port, filters, 1, 0, 50,
                               &ft);
    }
    /* Interleaved: for each configuration, baseline then twinhub, TWIN_REPEATS times. */
    for (int rep = 0; rep < TWIN_REPEATS && rc == 0; rep++) {
        for (int k = 0; k < NCONF; k++) {
            for (int t = 0; t < 2; t++) {
                enum twin_op op = (enum twin_op)(k / 2);
                int ndev = dev_counts[k % 2];
                runs[t][k][rep] = run_once(&tg[t].l, tg[t].devs, ndev, op, tg[t].b.broker, lat);
                if (thb_cfg.verbose) {
                    const struct twin_result *x = &runs[t][k][rep];
                    fprintf(stderr,
                            "thbench: twin %s %s %d dev: %.0f rt/s p50 %lld us p99 %lld us, "
                            "%.1f us CPU/rt\n",
                            tname[t], op_name[op], ndev, x->rate, (long long)x->p50,
                            (long long)x->p99, x->cpu_us);
                }
            }
        }
    }
    for (int t = 0; t < 2; t++) {
        if (tg[t].up) {
            thb_fleet_close(tg[t].devs, TWIN_DEVICES);
            thb_loop_free(&tg[t].l);
            thb_broker_stop(&tg[t].b);
        }
    }
    free(lat);
    if (rc != 0) {
        fprintf(stderr, "thbench: twin round trips could not run\n");
        return -1;
    }
    for (int t = 0; t < 2; t++) {
        for (int k = 0; k < NCONF; k++) {
            qsort(runs[t][k], TWIN_REPEATS, sizeof runs[t][k][0], cmp_rate);
            res[t][k] = runs[t][k][TWIN_REPEATS / 2];
            for (int rep = 0; rep < TWIN_REPEATS; rep++) {
                res[t][k].ok = res[t][k].ok && runs[t][k][rep].ok;
            }
        }
    }

    thb_out("## Twin round trips (QoS 0)\n\n");
    thb_out("Round trips/s, p50 / p99 latency and broker CPU µs per round trip; median of %d "
            "interleaved runs (by rate).\n\n",
            TWIN_REPEATS);
    thb_out("| operation | devices | echo plugin | twinhub | ratio |\n|---|---|---|---|---|\n");
    for (int k = 0; k < NCONF; k++) {
        const struct twin_result *e = &res[0][k], *t = &res[1][k];
        double ratio = e->rate ? t->rate / e->rate : 0;
        int ndev = dev_counts[k % 2];
        thb_out("| %s | %d | %.0f/s, %.2f / %.2f ms, %.1f µs | %.0f/s, %.2f / %.2f ms, %.1f µs%s "
                "| %.2f |\n",
                op_name[k / 2], ndev, e->rate, (double)e->p50 / 1000, (double)e->p99 / 1000,
                e->cpu_us, t->rate, (double)t->p50 / 1000, (double)t->p99 / 1000, t->cpu_us,
                t->ok ? "" : " (errors)", ratio);
        thb_target("twin round trips >= 70% of the echo plugin", ratio >= 0.7 && t->ok,
                   "%s, %d device%s: %.2f", op_name[k / 2], ndev, ndev == 1 ? "" : "s", ratio);
        if (ndev == 50) {
            thb_target("twin p99 < 5 ms at 50 devices", t->p99 < 5000 && t->ok,
                       "%s: p99 %.2f ms (echo plugin %.2f ms)", op_name[k / 2],
                       (double)t->p99 / 1000, (double)e->p99 / 1000);
        }
    }
    thb_out("\n");
    return 0;
}
