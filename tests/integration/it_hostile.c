/*
 * it_hostile.c - hostile and broken clients against the real broker + plugin:
 * malformed and oversized MQTT packets over raw TCP, floods of twin requests
 * from a device that does not read its socket, abrupt disconnects in the
 * middle of requests, connect/disconnect churn on one client id, oversized
 * and deeply nested JSON, method answers nobody asked for and garbage on the
 * control API. After each storm the hub must still serve a well-behaved
 * device correctly and must have kept everything it acknowledged: twinhub is
 * never the thing that crashes.
 *
 * Raw clients speak just enough MQTT 3.1.1 to misbehave on purpose. Worker
 * threads never call cmocka asserts (they are not thread-safe); they record
 * failures that the test thread asserts on. Every loop and wait is bounded.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <mosquitto.h>

#include "harness.h"

#define FLOOD_N 5000     /* twin requests in one flood */
#define FLOOD_SLOTS 50   /* reported keys the PATCH flood cycles through */
#define STORM_THREADS 6
#define CHURN_THREADS 4
#define CHURN_ROUNDS 40
#define ABRUPT_THREADS 4
#define ABRUPT_ROUNDS 50

static struct it_hub hub;
static pid_t broker_pid; /* the broker must never be restarted behind our back */

/* ------------------------------------------------------- failure records */

/* Failures seen by worker threads; the test thread asserts there are none. */
static atomic_int failures;
static pthread_mutex_t failure_mu = PTHREAD_MUTEX_INITIALIZER;
static char first_failure[512];

static void fail_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail_note(const char *fmt, ...)
{
    va_list ap;
    char msg[512];
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "# worker failure: %s\n", msg);
    pthread_mutex_lock(&failure_mu);
    if (atomic_fetch_add(&failures, 1) == 0)
        snprintf(first_failure, sizeof first_failure, "%s", msg);
    pthread_mutex_unlock(&failure_mu);
}

static void assert_no_worker_failures(void)
{
    int n = atomic_exchange(&failures, 0);
    if (n)
        fprintf(stderr, "# %d worker failure(s); first: %s\n", n, first_failure);
    assert_int_equal(n, 0);
}

#include "rawmqtt.h"

static struct cred cred_dev1, cred_dev2, cred_dev3, cred_dev4, cred_mod1;

/* ------------------------------------------------------------ hub checks */

static int group_setup(void **state)
{
    (void)state;
    if (it_hub_start(&hub) != 0)
        return -1;
    broker_pid = it_hub_broker_pid(&hub);
    cred_make(&cred_dev1, &hub, IT_DEV1, NULL, IT_DEV1_KEY);
    cred_make(&cred_dev2, &hub, IT_DEV2, NULL, IT_DEV2_KEY);
    cred_make(&cred_dev3, &hub, IT_DEV3, NULL, IT_DEV3_KEY);
    cred_make(&cred_dev4, &hub, IT_DEV4, NULL, IT_DEV4_KEY);
    cred_make(&cred_mod1, &hub, IT_DEV1, IT_MOD1, IT_MOD1_KEY);
    return broker_pid > 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    cred_free(&cred_dev1);
    cred_free(&cred_dev2);
    cred_free(&cred_dev3);
    cred_free(&cred_dev4);
    cred_free(&cred_mod1);
    return it_hub_stop(&hub);
}

/* The same broker process still runs and answers a device twin round trip. */
static void assert_hub_alive(void)
{
    assert_int_equal(it_hub_broker_pid(&hub), broker_pid);
    struct it_client *c = it_device_open(&hub, IT_DEV1, NULL, IT_DEV1_KEY);
    assert_int_equal(it_client_subscribe(c, "$iothub/twin/res/#", 0, IT_WAIT_MS), 0);
    int status = 0;
    struct it_msg *m = it_twin_request(c, "alive", NULL, &status);
    assert_non_null(m);
    assert_int_equal(status, 200);
    it_msg_free(m);
    it_client_close(c);
}

static double reported_version(struct it_client *svc, const char *device_id, const char *module_id)
{
    cJSON *r = module_id ? it_control(svc, IT_WAIT_MS,
                                      "{\"command\":\"getTwin\",\"deviceId\":\"%s\","
                                      "\"moduleId\":\"%s\"}",
                                      device_id, module_id)
                         : it_control(svc, IT_WAIT_MS,
                                      "{\"command\":\"getTwin\",\"deviceId\":\"%s\"}", device_id);
    assert_non_null(r);
    double v = it_json_num(r, "data.properties.reported.$version", -1);
    cJSON_Delete(r);
    assert_true(v >= 1);
    return v;
}

/* Poll getDevice until connectionState is `want` (bounded); returns whether it got there. */
static bool wait_connection_state(struct it_client *svc, const char *device_id,
                                  const char *module_id, const char *want)
{
    int64_t deadline = raw_now_ms() + RAW_WAIT_MS;
    char last[64] = "";
    do {
        cJSON *r = module_id
                       ? it_control(svc, IT_WAIT_MS,
                                    "{\"command\":\"getDevice\",\"deviceId\":\"%s\","
                                    "\"moduleId\":\"%s\"}",
                                    device_id, module_id)
                       : it_control(svc, IT_WAIT_MS,
                                    "{\"command\":\"getDevice\",\"deviceId\":\"%s\"}", device_id);
        const char *s = r ? it_json_str(r, "data.connectionState") : NULL;
        snprintf(last, sizeof last, "%s", s ? s : "(none)");
        cJSON_Delete(r);
        if (!strcmp(last, want))
            return true;
        /* Not a sleep: the next control round trip is the wait. */
    } while (raw_now_ms() < deadline);
    fprintf(stderr, "# %s%s%s: connectionState stayed '%s', expected '%s'\n", device_id,
            module_id ? "/" : "", module_id ? module_id : "", last, want);
    return false;
}

/* ---------------------------------------------------- malformed packets */

enum bad_case {
    BAD_RESERVED_TYPE,
    BAD_HTTP,
    BAD_HUGE_REMAINING_LENGTH,
    BAD_FIVE_BYTE_LENGTH,
    BAD_PUBLISH_BEFORE_CONNECT,
    BAD_PROTOCOL_NAME,
    BAD_PROTOCOL_LEVEL,
    BAD_UTF8_CLIENT_ID,
    BAD_UTF8_USERNAME,
    BAD_NO_CREDENTIALS,
    BAD_MQTT5_CONNECT,
    BAD_TRUNCATED_CONNECT,
    BAD_TRUNCATED_CONNECT_HOLD,
    BAD_DEVICE_UTF8_TOPIC,
    BAD_DEVICE_WILDCARD_TOPIC,
    BAD_DEVICE_EMPTY_TOPIC,
    BAD_DEVICE_QOS3,
    BAD_DEVICE_SECOND_CONNECT,
    BAD_DEVICE_SUBSCRIBE_UTF8,
    BAD_DEVICE_SUBSCRIBE_EMPTY,
    BAD_DEVICE_RESERVED_PACKET,
    BAD_DEVICE_TRUNCATED_PUBLISH,
    BAD_DEVICE_NUL_IN_TOPIC,
    BAD_CASES
};

static const char *const bad_names[BAD_CASES] = {
    "reserved packet type",
    "HTTP request",
    "remaining length 268 MB",
    "5-byte remaining length",
    "PUBLISH before CONNECT",
    "protocol name MQXX",
    "protocol level 99",
    "invalid UTF-8 client id",
    "invalid UTF-8 username",
    "CONNECT without credentials",
    "MQTT 5 CONNECT",
    "truncated CONNECT",
    "truncated CONNECT, held open",
    "invalid UTF-8 topic",
    "wildcard in a PUBLISH topic",
    "empty topic",
    "PUBLISH QoS 3",
    "second CONNECT",
    "SUBSCRIBE with invalid UTF-8",
    "SUBSCRIBE without a filter",
    "reserved packet type after CONNECT",
    "truncated PUBLISH",
    "NUL in a topic",
};

/*
 * One malformed exchange on a fresh connection. Returns false when the
 * broker did not behave: it must close a connection that broke the
 * protocol within RAW_WAIT_MS (cases we end ourselves only need the broker
 * to survive them).
 */
static bool run_bad_case(enum bad_case k, unsigned seed)
{
    struct raw r;
    struct buf b = {0};
    bool must_close = true, ok = true;
    bool device = k >= BAD_DEVICE_UTF8_TOPIC;

    if (device) {
        if (!raw_device(&r, hub.mqtt_port, &cred_dev2, 0, true)) {
            fail_note("%s: the device could not connect", bad_names[k]);
            return false;
        }
    } else if (!raw_open(&r, hub.mqtt_port, 0)) {
        fail_note("%s: cannot connect to the broker", bad_names[k]);
        return false;
    }
    switch (k) {
    case BAD_RESERVED_TYPE:
        b_u8(&b, 0x00);
        for (int i = 0; i < 63; i++)
            b_u8(&b, (uint8_t)(seed = seed * 1103515245u + 12345u) >> 16);
        break;
    case BAD_HTTP:
        b_put(&b, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27);
        break;
    case BAD_HUGE_REMAINING_LENGTH:
        b_put(&b, "\x10\xff\xff\xff\x7f\x00\x04MQTT\x04\x02", 12);
        break;
    case BAD_FIVE_BYTE_LENGTH:
        b_put(&b, "\x10\xff\xff\xff\xff\x01", 6);
        break;
    case BAD_PUBLISH_BEFORE_CONNECT:
        mk_publish(&b, "devices/it-dev2/messages/events/", 32, "x", 1, 0, 0);
        break;
    case BAD_PROTOCOL_NAME:
        mk_connect(&b, "MQXX", 4, "c", 1, NULL, 0, NULL, true);
        break;
    case BAD_PROTOCOL_LEVEL:
        mk_connect(&b, "MQTT", 99, "c", 1, NULL, 0, NULL, true);
        break;
    case BAD_UTF8_CLIENT_ID:
        mk_connect(&b, "MQTT", 4, "\xc3\x28\xff", 3, cred_dev2.user, strlen(cred_dev2.user),
                   cred_dev2.pass, true);
        break;
    case BAD_UTF8_USERNAME:
        mk_connect(&b, "MQTT", 4, IT_DEV2, strlen(IT_DEV2), "h/\xed\xa0\x80/?x", 9, cred_dev2.pass,
                   true);
        break;
    case BAD_NO_CREDENTIALS:
        mk_connect(&b, "MQTT", 4, IT_DEV2, strlen(IT_DEV2), NULL, 0, NULL, true);
        break;
    case BAD_MQTT5_CONNECT:
        mk_connect(&b, "MQTT", 5, IT_DEV2, strlen(IT_DEV2), cred_dev2.user, strlen(cred_dev2.user),
                   cred_dev2.pass, true);
        break;
    case BAD_TRUNCATED_CONNECT:
    case BAD_TRUNCATED_CONNECT_HOLD:
        connect_packet(&b, &cred_dev2, true);
        b.len = 12 + seed % 20; /* the header promises more than ever arrives */
        must_close = false;
        break;
    case BAD_DEVICE_UTF8_TOPIC:
        mk_publish(&b, "devices/it-dev2/messages/events/\xff\xfe", 34, "x", 1, 1, 7);
        break;
    case BAD_DEVICE_WILDCARD_TOPIC:
        mk_publish(&b, "devices/it-dev2/messages/events/#", 33, "x", 1, 0, 0);
        break;
    case BAD_DEVICE_EMPTY_TOPIC:
        mk_publish(&b, "", 0, "x", 1, 0, 0);
        break;
    case BAD_DEVICE_QOS3: {
        struct buf body = {0};
        b_str(&body, "$iothub/twin/GET/?$rid=1");
        b_u16(&body, 1);
        b_packet(&b, 0x36, &body);
        b_free(&body);
        break;
    }
    case BAD_DEVICE_SECOND_CONNECT:
        connect_packet(&b, &cred_dev2, true);
        break;
    case BAD_DEVICE_SUBSCRIBE_UTF8:
        mk_subscribe(&b, 3, "$iothub/twin/res/\xc0\x80", 19, 0);
        break;
    case BAD_DEVICE_SUBSCRIBE_EMPTY:
        mk_subscribe(&b, 3, NULL, 0, 0);
        break;
    case BAD_DEVICE_RESERVED_PACKET:
        b_put(&b, "\xf0\x00", 2);
        break;
    case BAD_DEVICE_TRUNCATED_PUBLISH:
        mk_publish(&b, "$iothub/twin/PATCH/properties/reported/?$rid=9", 46,
                   "{\"a\":\"0123456789012345678901234567890123456789\"}", 48, 0, 0);
        b.len -= 20;
        must_close = false;
        break;
    case BAD_DEVICE_NUL_IN_TOPIC:
        mk_publish(&b, "$iothub/twin/GET/?$rid=1\0devices/x", 34, "", 0, 0, 0);
        break;
    case BAD_CASES:
        break;
    }
    if (!raw_send_buf(&r, &b) && must_close) {
        /* The broker may close before reading it all: that is a close too. */
        b_free(&b);
        raw_close(&r, false);
        return true;
    }
    b_free(&b);
    if (must_close) {
        if (!raw_wait_closed(&r, RAW_WAIT_MS)) {
            fail_note("%s: the connection was not closed within %d ms", bad_names[k], RAW_WAIT_MS);
            ok = false;
        }
    } else if (k == BAD_TRUNCATED_CONNECT_HOLD) {
        struct pkt p;
        if (raw_recv(&r, &p, 100) == 1) {
            fail_note("%s: the broker answered half a CONNECT", bad_names[k]);
            free(p.body);
            ok = false;
        }
    }
    raw_close(&r, seed % 2 == 0);
    return ok;
}

struct storm_arg {
    int thread;
    int rounds;
};

static void *storm_main(void *arg)
{
    const struct storm_arg *a = arg;
    unsigned seed = 0x9e3779b9u * (unsigned)(a->thread + 1);
    for (int round = 0; round < a->rounds; round++) {
        for (int i = 0; i < BAD_CASES; i++) {
            /* Every thread walks the cases in its own order. */
            enum bad_case k = (enum bad_case)((i * 7 + a->thread * 5 + round) % BAD_CASES);
            seed = seed * 1103515245u + 12345u;
            run_bad_case(k, seed >> 8);
        }
    }
    return NULL;
}

static void test_hostile_malformed_packets_closed_succeeds(void **state)
{
    (void)state;
    pthread_t th[STORM_THREADS];
    struct storm_arg args[STORM_THREADS];
    for (int i = 0; i < STORM_THREADS; i++) {
        args[i] = (struct storm_arg){i, 2};
        assert_int_equal(pthread_create(&th[i], NULL, storm_main, &args[i]), 0);
    }
    for (int i = 0; i < STORM_THREADS; i++)
        pthread_join(th[i], NULL);
    assert_no_worker_failures();
    assert_hub_alive();
}

/* ------------------------------------------------------------ the flood */

struct flood_result {
    int sent;    /* requests written: patches and GETs */
    int patches; /* reported patches among them */
    int pubacks;
    int ok204;     /* 204 answers that arrived (the broker drops QoS 0 answers past its queue) */
    int ok200;     /* GET answers that arrived */
    int bad;       /* answers that were not 204/200 or carried the wrong $version */
    int max_acked; /* highest patch index acknowledged by PUBACK or 204 */
    bool final_seen;
    bool dropped; /* the broker closed the connection of the client that did not read */
    long long v0; /* reported $version before the flood */
};

/* Parse "$iothub/twin/res/{status}/?$rid={rid}&$version={v}" of a raw PUBLISH body. */
static bool parse_twin_res(const struct pkt *p, int *status, char *rid, size_t rid_size,
                           long long *version)
{
    if (p->len < 2)
        return false;
    size_t tlen = (size_t)p->body[0] << 8 | p->body[1];
    if (tlen + 2 > p->len)
        return false;
    char topic[512];
    if (tlen >= sizeof topic)
        return false;
    memcpy(topic, p->body + 2, tlen);
    topic[tlen] = '\0';
    if (sscanf(topic, "$iothub/twin/res/%d/", status) != 1)
        return false;
    char *r = it_topic_param(topic, "$rid");
    char *v = it_topic_param(topic, "$version");
    snprintf(rid, rid_size, "%s", r ? r : "");
    *version = v ? atoll(v) : -1;
    free(r);
    free(v);
    return true;
}

/*
 * 24 KB of reported "ballast" (six 4000-byte strings), so that each twin GET
 * answer is big and a flood of GETs overruns the socket buffers.
 */
static bool set_ballast(const struct cred *c)
{
    struct raw r;
    struct buf b = {0};
    bool ok = raw_device(&r, hub.mqtt_port, c, 0, true) && raw_subscribe(&r, "$iothub/twin/res/#");
    if (ok) {
        b_put(&b, "{", 1);
        for (int i = 0; i < 6; i++) {
            char key[16];
            b_put(&b, key, (size_t)snprintf(key, sizeof key, "%s\"b%d\":\"", i ? "," : "", i));
            for (int k = 0; k < 4000; k++)
                b_u8(&b, (uint8_t)('A' + i));
            b_u8(&b, '"');
        }
        b_put(&b, "}", 1);
        struct buf pkt = {0};
        mk_publish(&pkt, "$iothub/twin/PATCH/properties/reported/?$rid=ballast", 52, b.p, b.len, 0,
                   0);
        struct pkt p = {0};
        int status = 0;
        char rid[32];
        long long v;
        ok = raw_send_buf(&r, &pkt) && raw_recv(&r, &p, RAW_WAIT_MS) == 1 &&
             parse_twin_res(&p, &status, rid, sizeof rid, &v) && status == 204;
        free(p.body);
        b_free(&pkt);
        b_free(&b);
    }
    raw_close(&r, false);
    return ok;
}

/*
 * it-dev3, with a 2 KB receive buffer, writes FLOOD_N twin requests at QoS 1
 * (a reported patch, then a GET of its 24 KB twin, and again) and reads
 * nothing until all are written. Then it drains what comes and asks a final
 * GET, whose answer says nothing more is coming.
 *
 * The broker may end this: Debian's mosquitto 2.0.11 (CVE-2023-28366 fix)
 * closes a client that publishes while max_queued_messages (1000) packets
 * wait to be written to it, and every device publish goes through the path
 * that checks it (the hub consumes publishes by denying their routing). That
 * is the broker protecting itself from a client that never reads; what the
 * hub acknowledged before must still be there.
 */
static void *patch_flood_main(void *arg)
{
    struct flood_result *res = arg;
    struct raw r;
    res->max_acked = -1;
    if (!raw_device(&r, hub.mqtt_port, &cred_dev3, 2048, true) || !raw_subscribe(&r, "$iothub/twin/res/#")) {
        fail_note("flood: it-dev3 could not connect and subscribe");
        return NULL;
    }
    struct buf b = {0};
    for (int j = 0; j < FLOOD_N; j++) {
        char topic[96], payload[96];
        int tl, pl = 0;
        if (j % 2 == 1) {
            tl = snprintf(topic, sizeof topic, "$iothub/twin/GET/?$rid=g%d", j);
        } else {
            int i = res->patches++;
            tl = snprintf(topic, sizeof topic, "$iothub/twin/PATCH/properties/reported/?$rid=p%d",
                          i);
            pl = snprintf(payload, sizeof payload, "{\"flood\":{\"s%d\":%d},\"last\":%d}",
                          i % FLOOD_SLOTS, i, i);
        }
        mk_publish(&b, topic, (size_t)tl, payload, (size_t)pl, 1, (unsigned)(j % 65535) + 1);
    }
    if (!raw_send(&r, b.p, b.len, 30000)) {
        fail_note("flood: the broker stopped reading the flood (send of %zu bytes failed)", b.len);
        b_free(&b);
        raw_close(&r, true);
        return NULL;
    }
    b_free(&b);
    res->sent = FLOOD_N;

    int64_t deadline = raw_now_ms() + 60000;
    int finals = 0;
    int64_t final_at = 0;
    while (!res->final_seen && raw_now_ms() < deadline) {
        if (res->pubacks == FLOOD_N && (finals == 0 || raw_now_ms() - final_at > 2000) && finals < 5) {
            char topic[64];
            snprintf(topic, sizeof topic, "$iothub/twin/GET/?$rid=final-%d", finals++);
            final_at = raw_now_ms();
            if (!raw_publish(&r, topic, NULL, 0))
                break;
        }
        struct pkt p;
        int rc = raw_recv(&r, &p, 200);
        if (rc < 0) {
            res->dropped = true;
            break;
        }
        if (rc == 0)
            continue;
        uint8_t type = p.header & 0xF0;
        if (type == 0x40) {
            res->pubacks++;
        } else if (type == 0x30) {
            int status = 0;
            char rid[64];
            long long v = -1;
            if (!parse_twin_res(&p, &status, rid, sizeof rid, &v)) {
                res->bad++;
            } else if (!strncmp(rid, "final-", 6)) {
                res->final_seen = status == 200;
            } else if (rid[0] == 'g' && status == 200) {
                res->ok200++;
            } else {
                int i = atoi(rid + 1);
                if (rid[0] == 'p' && status == 204 && v == res->v0 + i + 1) {
                    res->ok204++;
                    if (i > res->max_acked)
                        res->max_acked = i;
                } else if (res->bad++ < 5) {
                    fprintf(stderr, "# flood: rid %s answered %d with $version %lld (v0 %lld)\n",
                            rid, status, v, res->v0);
                }
            }
        }
        free(p.body);
    }
    if (res->pubacks == FLOOD_N)
        res->max_acked = res->patches - 1; /* the broker acknowledged every publish */
    else if (res->pubacks / 2 - 1 > res->max_acked)
        res->max_acked = res->pubacks / 2 - 1; /* PUBACKs come in order: patch, GET, ... */
    raw_close(&r, false);
    return NULL;
}

/*
 * it-dev1/it-mod1 asks FLOOD_N twin GETs of its 24 KB twin at QoS 0 and
 * never reads a byte, then resets the connection while the broker's queue
 * for it is full.
 */
static void *get_flood_main(void *arg)
{
    int *sent = arg;
    struct raw r;
    if (!raw_device(&r, hub.mqtt_port, &cred_mod1, 2048, true) || !raw_subscribe(&r, "$iothub/twin/res/#")) {
        fail_note("get flood: it-mod1 could not connect and subscribe");
        return NULL;
    }
    struct buf b = {0};
    for (int i = 0; i < FLOOD_N; i++) {
        char topic[64];
        int tl = snprintf(topic, sizeof topic, "$iothub/twin/GET/?$rid=%d", i);
        mk_publish(&b, topic, (size_t)tl, NULL, 0, 0, 0);
    }
    if (raw_send(&r, b.p, b.len, 30000))
        *sent = FLOOD_N;
    else
        fail_note("get flood: the broker stopped reading");
    b_free(&b);
    raw_close(&r, true);
    return NULL;
}

static void test_hostile_twin_flood_slow_reader_loses_nothing_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    assert_true(set_ballast(&cred_dev3));
    assert_true(set_ballast(&cred_mod1));
    struct flood_result res = {0};
    res.v0 = (long long)reported_version(svc, IT_DEV3, NULL);
    long long mod_v0 = (long long)reported_version(svc, IT_DEV1, IT_MOD1);
    int get_sent = 0;
    struct storm_arg garbage = {STORM_THREADS, 1};

    pthread_t tp, tg, ts;
    assert_int_equal(pthread_create(&tp, NULL, patch_flood_main, &res), 0);
    assert_int_equal(pthread_create(&tg, NULL, get_flood_main, &get_sent), 0);
    assert_int_equal(pthread_create(&ts, NULL, storm_main, &garbage), 0);
    pthread_join(tp, NULL);
    pthread_join(tg, NULL);
    pthread_join(ts, NULL);
    fprintf(stderr,
            "# flood: %d requests (%d patches), %d PUBACKs; answers that arrived: %d of "
            "%d 204s, %d of %d GETs; %s; %d bad\n",
            res.sent, res.patches, res.pubacks, res.ok204, res.patches, res.ok200,
            res.sent - res.patches,
            res.dropped ? "the broker dropped the client that did not read"
                        : "the client drained everything",
            res.bad);
    assert_no_worker_failures();
    assert_int_equal(get_sent, FLOOD_N);
    assert_int_equal(res.sent, FLOOD_N);
    assert_int_equal(res.bad, 0);
    assert_true(res.pubacks > 0);
    if (!res.dropped) {
        assert_int_equal(res.pubacks, FLOOD_N); /* the broker took every request */
        assert_true(res.final_seen);
    }

    /* The hub applied a prefix 0..L of the patches, in order, with L at least the last one it
     * acknowledged: $version counts exactly those, "last" is L and each slot holds the value
     * of the last applied patch that wrote it. */
    cJSON *twin =
        it_control(svc, IT_WAIT_MS, "{\"command\":\"getTwin\",\"deviceId\":\"" IT_DEV3 "\"}");
    assert_non_null(twin);
    int last = (int)it_json_num(twin, "data.properties.reported.last", -1);
    if (last < res.max_acked)
        fprintf(stderr, "# flood: patch %d was acknowledged but the twin ends at %d\n",
                res.max_acked, last);
    assert_true(last >= res.max_acked);
    assert_true(last < res.patches);
    if (!res.dropped)
        assert_int_equal(last, res.patches - 1);
    long long version = (long long)it_json_num(twin, "data.properties.reported.$version", -1);
    assert_int_equal(version, res.v0 + last + 1);
    for (int s = 0; s < FLOOD_SLOTS && s <= last; s++) {
        char path[64];
        snprintf(path, sizeof path, "data.properties.reported.flood.s%d", s);
        int want = last - ((last - s) % FLOOD_SLOTS + FLOOD_SLOTS) % FLOOD_SLOTS;
        assert_int_equal((int)it_json_num(twin, path, -1), want);
    }
    assert_non_null(it_json_str(twin, "data.properties.reported.b5"));
    cJSON_Delete(twin);

    /* The device comes back and reads the same twin. */
    struct it_client *dev = it_device_open(&hub, IT_DEV3, NULL, IT_DEV3_KEY);
    assert_int_equal(it_client_subscribe(dev, "$iothub/twin/res/#", 0, IT_WAIT_MS), 0);
    int status = 0;
    struct it_msg *m = it_twin_request(dev, "after-flood", NULL, &status);
    assert_non_null(m);
    assert_int_equal(status, 200);
    cJSON *view = it_msg_json(m);
    assert_int_equal((long long)it_json_num(view, "reported.$version", -1), version);
    assert_int_equal((int)it_json_num(view, "reported.last", -1), last);
    cJSON_Delete(view);
    it_msg_free(m);
    it_client_close(dev);
    /* GETs change nothing. */
    assert_int_equal((long long)reported_version(svc, IT_DEV1, IT_MOD1), mod_v0);
    it_client_close(svc);
    assert_hub_alive();
}

/* ---------------------------------------------------- abrupt disconnects */

static void *abrupt_main(void *arg)
{
    int t = *(int *)arg;
    const struct cred *c = t % 2 ? &cred_dev4 : &cred_mod1;
    for (int i = 0; i < ABRUPT_ROUNDS; i++) {
        struct raw r;
        struct buf b = {0};
        int variant = (i + t) % 5;
        if (variant == 4) {
            /* CONNECT and a request back to back, gone before the CONNACK is read. */
            if (!raw_open(&r, hub.mqtt_port, 0)) {
                fail_note("abrupt: cannot connect");
                return NULL;
            }
            connect_packet(&b, c, true);
            mk_publish(&b, "$iothub/twin/GET/?$rid=x", 24, NULL, 0, 0, 0);
            raw_send_buf(&r, &b);
            b_free(&b);
            raw_close(&r, true);
            continue;
        }
        if (!raw_device(&r, hub.mqtt_port, c, 0, true)) {
            /* Another thread's take-over can end the connection first; that is fine. */
            continue;
        }
        switch (variant) {
        case 0:
            raw_publish(&r, "$iothub/twin/GET/?$rid=1", NULL, 0);
            raw_close(&r, false);
            break;
        case 1:
            raw_publish(&r, "$iothub/twin/PATCH/properties/reported/?$rid=2", "{\"abrupt\":1}", 1);
            raw_close(&r, true);
            break;
        case 2:
            mk_publish(&b, "$iothub/twin/PATCH/properties/reported/?$rid=3", 46,
                       "{\"abrupt\":\"half a publish that never ends\"}", 43, 1, 3);
            b.len -= 10;
            raw_send_buf(&r, &b);
            b_free(&b);
            raw_close(&r, i % 2 == 0);
            break;
        case 3:
            raw_subscribe(&r, "$iothub/methods/POST/#");
            for (int k = 0; k < 20; k++) {
                char topic[96];
                int tl = snprintf(topic, sizeof topic,
                                  "$iothub/twin/PATCH/properties/reported/?$rid=b%d", k);
                mk_publish(&b, topic, (size_t)tl, "{\"burst\":true}", 14, 1, (unsigned)k + 1);
            }
            raw_send_buf(&r, &b);
            b_free(&b);
            raw_close(&r, true);
            break;
        }
    }
    return NULL;
}

static void test_hostile_abrupt_disconnects_mid_request_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);

    /* A method call in flight when its device vanishes is answered, not left hanging. */
    struct raw dev;
    assert_true(raw_device(&dev, hub.mqtt_port, &cred_dev2, 0, true));
    assert_true(raw_subscribe(&dev, "$iothub/methods/POST/#"));
    char corr[32];
    it_control_send(svc, corr,
                    "{\"command\":\"invokeMethod\",\"deviceId\":\"" IT_DEV2 "\","
                    "\"methodName\":\"reboot\",\"responseTimeoutInSeconds\":30}");
    assert_true(raw_expect(&dev, 0x30, NULL, RAW_WAIT_MS));
    raw_close(&dev, true);
    cJSON *r = it_control_wait(svc, corr, RAW_WAIT_MS);
    assert_non_null(r);
    assert_int_equal((int)it_json_num(r, "errorCode", 0), 404103);
    cJSON_Delete(r);

    pthread_t th[ABRUPT_THREADS];
    int ids[ABRUPT_THREADS];
    for (int i = 0; i < ABRUPT_THREADS; i++) {
        ids[i] = i;
        assert_int_equal(pthread_create(&th[i], NULL, abrupt_main, &ids[i]), 0);
    }
    for (int i = 0; i < ABRUPT_THREADS; i++)
        pthread_join(th[i], NULL);
    assert_no_worker_failures();

    /* Nobody is left online, and the twins still answer. */
    assert_true(wait_connection_state(svc, IT_DEV4, NULL, "Disconnected"));
    assert_true(wait_connection_state(svc, IT_DEV1, IT_MOD1, "Disconnected"));
    assert_true(wait_connection_state(svc, IT_DEV2, NULL, "Disconnected"));
    reported_version(svc, IT_DEV4, NULL);
    reported_version(svc, IT_DEV1, IT_MOD1);
    it_client_close(svc);
    assert_hub_alive();
}

/* ---------------------------------------------------------------- churn */

static void *churn_main(void *arg)
{
    int t = *(int *)arg;
    for (int i = 0; i < CHURN_ROUNDS; i++) {
        struct raw r;
        struct buf b = {0};
        int variant = (i * 3 + t) % 5;
        bool clean = (i + t) % 3 != 0; /* some persistent sessions too */
        if (!raw_open(&r, hub.mqtt_port, 0)) {
            fail_note("churn: cannot connect");
            return NULL;
        }
        connect_packet(&b, &cred_dev4, clean);
        if (variant == 0) {
            /* gone before the CONNACK */
            raw_send_buf(&r, &b);
            b_free(&b);
            raw_close(&r, i % 2 == 0);
            continue;
        }
        int code = -1;
        if (!raw_send_buf(&r, &b) || !raw_expect(&r, 0x20, &code, RAW_WAIT_MS) || code != 0) {
            /* taken over before the CONNACK arrived: the connection is closed, no answer */
            b_free(&b);
            raw_close(&r, false);
            continue;
        }
        b_free(&b);
        switch (variant) {
        case 1:
            raw_send(&r, "\xe0\x00", 2, RAW_WAIT_MS); /* DISCONNECT */
            raw_close(&r, false);
            break;
        case 2:
            raw_close(&r, true);
            break;
        case 3:
            raw_subscribe(&r, "devices/" IT_DEV4 "/messages/devicebound/#");
            raw_publish(&r, "$iothub/twin/GET/?$rid=churn", NULL, 0);
            raw_close(&r, false);
            break;
        default:
            raw_publish(&r, "devices/" IT_DEV4 "/messages/events/", "churn", 1);
            raw_send(&r, "\xc0\x00", 2, RAW_WAIT_MS); /* PINGREQ */
            raw_close(&r, i % 2 == 1);
            break;
        }
    }
    return NULL;
}

static int stat_count(struct it_client *svc, const char *field)
{
    cJSON *r = it_control(svc, IT_WAIT_MS, "{\"command\":\"getStatistics\"}");
    assert_non_null(r);
    char path[96];
    snprintf(path, sizeof path, "data.%s", field);
    int n = (int)it_json_num(r, path, -1);
    cJSON_Delete(r);
    return n;
}

/*
 * Poll getStatistics until connectedDeviceCount is `want` (bounded: closes of
 * other tests' clients may still be in flight); on failure name the devices
 * the hub believes connected.
 */
static bool wait_connected_count(struct it_client *svc, int want)
{
    int64_t deadline = raw_now_ms() + RAW_WAIT_MS;
    int n;
    do {
        n = stat_count(svc, "connectedDeviceCount");
        if (n == want)
            return true;
    } while (raw_now_ms() < deadline);
    cJSON *r = it_control(svc, IT_WAIT_MS, "{\"command\":\"listDevices\"}");
    const cJSON *list = r ? it_json_get(r, "data") : NULL, *d;
    cJSON_ArrayForEach(d, list)
    {
        fprintf(stderr, "# %s: %s\n", it_json_str(d, "deviceId"),
                it_json_str(d, "connectionState"));
    }
    cJSON_Delete(r);
    fprintf(stderr, "# connectedDeviceCount stayed %d, expected %d\n", n, want);
    return false;
}

static void test_hostile_connect_churn_same_client_id_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    pthread_t th[CHURN_THREADS];
    int ids[CHURN_THREADS];
    for (int i = 0; i < CHURN_THREADS; i++) {
        ids[i] = i;
        assert_int_equal(pthread_create(&th[i], NULL, churn_main, &ids[i]), 0);
    }
    for (int i = 0; i < CHURN_THREADS; i++)
        pthread_join(th[i], NULL);
    assert_no_worker_failures();

    /* All connections are gone: the hub must not believe the device is still online. */
    assert_true(wait_connection_state(svc, IT_DEV4, NULL, "Disconnected"));
    assert_true(wait_connected_count(svc, 0));

    /* A well-behaved connection with the same id works and is tracked exactly. */
    struct it_client *dev = it_device_open(&hub, IT_DEV4, NULL, IT_DEV4_KEY);
    assert_int_equal(it_client_subscribe(dev, "$iothub/twin/res/#", 0, IT_WAIT_MS), 0);
    assert_int_equal(it_client_subscribe(dev, "$iothub/methods/POST/#", 0, IT_WAIT_MS), 0);
    assert_true(wait_connection_state(svc, IT_DEV4, NULL, "Connected"));
    assert_true(wait_connected_count(svc, 1));
    int status = 0;
    struct it_msg *m = it_twin_request(dev, "after-churn", "{\"churned\":true}", &status);
    assert_non_null(m);
    assert_int_equal(status, 204);
    it_msg_free(m);
    char corr[32];
    it_control_send(svc, corr,
                    "{\"command\":\"invokeMethod\",\"deviceId\":\"" IT_DEV4 "\","
                    "\"methodName\":\"ping\",\"responseTimeoutInSeconds\":10}");
    m = it_client_wait_prefix(dev, "$iothub/methods/POST/ping/?$rid=", IT_WAIT_MS);
    assert_non_null(m);
    char *rid = it_topic_param(m->topic, "$rid");
    it_msg_free(m);
    char topic[128];
    snprintf(topic, sizeof topic, "$iothub/methods/res/200/?$rid=%s", rid);
    free(rid);
    assert_int_equal(it_client_publish_str(dev, topic, "{\"pong\":1}", 1), MOSQ_ERR_SUCCESS);
    cJSON *r = it_control_wait(svc, corr, IT_WAIT_MS);
    assert_non_null(r);
    assert_int_equal((int)it_json_num(r, "data.status", -1), 200);
    assert_int_equal((int)it_json_num(r, "data.payload.pong", -1), 1);
    cJSON_Delete(r);
    it_client_close(dev);
    assert_true(wait_connection_state(svc, IT_DEV4, NULL, "Disconnected"));
    it_client_close(svc);
    assert_hub_alive();
}

/* --------------------------------------------- oversized and deep bodies */

/* A malloc'd string of n copies of `unit` between `pre` and `post`. */
static char *repeat(const char *pre, const char *unit, size_t n, const char *post)
{
    size_t ul = strlen(unit), pl = strlen(pre), ql = strlen(post);
    char *s = malloc(pl + ul * n + ql + 1);
    if (!s)
        abort();
    memcpy(s, pre, pl);
    for (size_t i = 0; i < n; i++)
        memcpy(s + pl + i * ul, unit, ul);
    memcpy(s + pl + ul * n, post, ql + 1);
    return s;
}

/* A reported patch refused with `status`; the connection stays up. */
static void expect_patch_refused(struct it_client *dev, const char *rid, const char *patch,
                                 int status)
{
    int got = 0;
    struct it_msg *m = it_twin_request(dev, rid, patch, &got);
    if (!m)
        fprintf(stderr, "# patch %s (%zu bytes): no answer\n", rid, strlen(patch));
    assert_non_null(m);
    if (got != status)
        fprintf(stderr, "# patch %s: status %d, expected %d: %.*s\n", rid, got, status,
                m->len > 300 ? 300 : m->len, m->payload);
    assert_int_equal(got, status);
    it_msg_free(m);
    assert_true(it_client_is_connected(dev));
}

/* Legal but huge: each request gets its acknowledgement and the connection stays up. */
static void huge_but_legal_requests(void)
{
    struct raw r;
    struct buf topic = {0}, b = {0};
    int code = -1;
    assert_true(raw_device(&r, hub.mqtt_port, &cred_dev4, 0, true));

    /* telemetry with a 60 KB property bag of 6000 properties */
    b_put(&topic, "devices/" IT_DEV4 "/messages/events/",
          strlen("devices/" IT_DEV4 "/messages/events/"));
    for (int i = 0; topic.len < 60000; i++) {
        char kv[32];
        b_put(&topic, kv, (size_t)snprintf(kv, sizeof kv, "%sk%d=%%24v", i ? "&" : "", i));
    }
    mk_publish(&b, (const char *)topic.p, topic.len, "{}", 2, 1, 11);
    b_free(&topic);
    /* a twin GET and a reported patch whose $rid is 60 KB: both are answered on a topic
     * that echoes the whole $rid */
    b_put(&topic, "$iothub/twin/GET/?$rid=", 23);
    while (topic.len < 60000)
        b_u8(&topic, '7');
    mk_publish(&b, (const char *)topic.p, topic.len, NULL, 0, 1, 12);
    b_free(&topic);
    b_put(&topic, "$iothub/twin/PATCH/properties/reported/?$rid=", 45);
    while (topic.len < 60000)
        b_u8(&topic, 'r');
    mk_publish(&b, (const char *)topic.p, topic.len, "{\"hugeRid\":1}", 13, 1, 13);
    b_free(&topic);
    assert_true(raw_send_buf(&r, &b));
    b_free(&b);
    /* Three PUBACKs and the two replies, in whatever interleaving the broker picks. */
    int pubacks = 0, got_get = 0, got_patch = 0;
    for (int i = 0; i < 5; i++) {
        struct pkt rp = {0};
        assert_int_equal(raw_recv(&r, &rp, RAW_WAIT_MS), 1);
        if ((rp.header & 0xF0) == 0x40) {
            pubacks++;
        } else {
            assert_int_equal(rp.header & 0xF0, 0x30);
            assert_true(rp.len > 2);
            size_t tl = ((size_t)rp.body[0] << 8) | rp.body[1];
            const char *get = "$iothub/twin/res/200/?$rid=7777", *patch = "$iothub/twin/res/204/?$rid=rrrr";
            assert_true(tl > 59000 && tl + 2 <= rp.len);
            if (!memcmp(rp.body + 2, get, strlen(get)))
                got_get++;
            else if (!memcmp(rp.body + 2, patch, strlen(patch)))
                got_patch++;
            else
                fail_msg("unexpected reply topic %.60s", (const char *)rp.body + 2);
        }
        free(rp.body);
    }
    assert_int_equal(pubacks, 3);
    assert_int_equal(got_get, 1);
    assert_int_equal(got_patch, 1);

    /* 500 filters in one SUBSCRIBE, allowed and refused ones mixed */
    struct buf body = {0};
    b_u16(&body, 14);
    for (int i = 0; i < 500; i++) {
        char f[96];
        switch (i % 4) {
        case 0:
            snprintf(f, sizeof f, "$iothub/methods/POST/m%d/#", i);
            break;
        case 1:
            snprintf(f, sizeof f, "devices/other-%d/messages/devicebound/#", i);
            break;
        case 2:
            snprintf(f, sizeof f, "#");
            break;
        default:
            snprintf(f, sizeof f, "$iothub/twin/res/#");
            break;
        }
        b_str(&body, f);
        b_u8(&body, (uint8_t)(i % 2));
    }
    b_packet(&b, 0x82, &body);
    b_free(&body);
    assert_true(raw_send_buf(&r, &b));
    b_free(&b);
    struct pkt p = {0};
    assert_int_equal(raw_recv(&r, &p, RAW_WAIT_MS), 1);
    assert_int_equal(p.header & 0xF0, 0x90);
    assert_int_equal((int)p.len, 2 + 500);
    assert_int_equal(p.body[2 + 2], 0x80); /* "#" is refused */
    assert_true(p.body[2 + 3] != 0x80);    /* the twin response filter is granted */
    free(p.body);

    /* still connected: PINGREQ gets its PINGRESP */
    assert_true(raw_send(&r, "\xc0\x00", 2, RAW_WAIT_MS));
    assert_true(raw_expect(&r, 0xD0, &code, RAW_WAIT_MS));
    raw_close(&r, false);
}

static void test_hostile_oversized_and_deep_json_succeeds(void **state)
{
    (void)state;
    huge_but_legal_requests();
    struct it_client *svc = it_service_open(&hub, false);
    double v0 = reported_version(svc, IT_DEV2, NULL);
    struct it_client *dev = it_device_open(&hub, IT_DEV2, NULL, IT_DEV2_KEY);
    assert_int_equal(it_client_subscribe(dev, "$iothub/twin/res/#", 0, IT_WAIT_MS), 0);

    /* ten legal 4000-byte strings: about 40 KB, over the 32 KB reported section */
    struct buf big = {0};
    b_put(&big, "{", 1);
    for (int i = 0; i < 10; i++) {
        char key[16];
        b_put(&big, key, (size_t)snprintf(key, sizeof key, "%s\"k%d\":\"", i ? "," : "", i));
        for (int k = 0; k < 4000; k++)
            b_u8(&big, (uint8_t)('a' + i));
        b_u8(&big, '"');
    }
    b_put(&big, "}", 2);
    expect_patch_refused(dev, "big", (const char *)big.p, 403);
    b_free(&big);
    char *s;
    char *arrays = repeat("", "[", 100000, "");
    expect_patch_refused(dev, "arrays", arrays, 400);
    free(arrays);
    s = repeat("", "{\"a\":", 40000, "1"); /* 240 KB: under the size limit, far too deep */
    char *objects = repeat(s, "}", 40000, "");
    free(s);
    expect_patch_refused(dev, "objects", objects, 400);
    free(objects);
    char *huge = repeat("{\"s\":\"", "y", 900 * 1024, "\"}"); /* over the 256 KB JSON limit */
    int got = 0;
    struct it_msg *m = it_twin_request(dev, "huge", huge, &got);
    assert_non_null(m);
    if (got != 413 && got != 400)
        fprintf(stderr, "# 900 KB patch: status %d\n", got);
    assert_true(got == 413 || got == 400);
    it_msg_free(m);
    char *strings = repeat("[", "\"\\ud800\",", 20000, "1]");
    expect_patch_refused(dev, "strings", strings, 400);
    free(strings);
    expect_patch_refused(dev, "not-json", "{\"a\":1} trailing", 400);

    /* Over the broker's 1 MB packet limit: the broker drops the connection, the hub lives. */
    free(huge);
    huge = repeat("{\"s\":\"", "z", 1100 * 1024, "\"}");
    assert_int_equal(it_client_publish(dev, "$iothub/twin/PATCH/properties/reported/?$rid=max",
                                       huge, (int)strlen(huge), 0, false),
                     MOSQ_ERR_SUCCESS);
    assert_true(it_client_wait_disconnect(dev, RAW_WAIT_MS));
    it_client_close(dev);
    free(huge);

    /* Telemetry over 256 KB is a protocol error: the hub closes the connection. */
    dev = it_device_open(&hub, IT_DEV2, NULL, IT_DEV2_KEY);
    char *tel = repeat("", "t", 300 * 1024, "");
    assert_int_equal(it_client_publish(dev, "devices/" IT_DEV2 "/messages/events/", tel,
                                       (int)strlen(tel), 1, false),
                     MOSQ_ERR_SUCCESS);
    free(tel);
    assert_true(it_client_wait_disconnect(dev, RAW_WAIT_MS));
    it_client_close(dev);

    /* Nothing was applied. */
    assert_true(reported_version(svc, IT_DEV2, NULL) == v0);

    /* The control API refuses garbage in-band and keeps serving. */
    const char *garbage[] = {"not json", "[]", "{\"commands\":{}}", "{\"commands\":[1,null,\"x\"]}",
                             "{\"commands\":[{\"command\":\"nope\"}]}"};
    for (size_t i = 0; i < sizeof garbage / sizeof garbage[0]; i++) {
        assert_int_equal(it_client_publish_str(svc, TH_CONTROL_TOPIC, garbage[i], 1),
                         MOSQ_ERR_SUCCESS);
        m = it_client_wait_topic(svc, TH_CONTROL_RESPONSE_TOPIC, IT_WAIT_MS);
        if (!m)
            fprintf(stderr, "# control request '%s': no response\n", garbage[i]);
        assert_non_null(m);
        assert_non_null(strstr(m->payload, "\"error\""));
        it_msg_free(m);
    }
    char *deep = repeat("{\"commands\":", "[", 50000, "");
    assert_int_equal(it_client_publish_str(svc, TH_CONTROL_TOPIC, deep, 1), MOSQ_ERR_SUCCESS);
    free(deep);
    m = it_client_wait_topic(svc, TH_CONTROL_RESPONSE_TOPIC, IT_WAIT_MS);
    assert_non_null(m);
    assert_non_null(strstr(m->payload, "\"error\""));
    it_msg_free(m);
    /* 20 levels: within the control API's parse limit, over the twin's depth limit */
    char *patch = repeat("", "{\"a\":", 20, "1");
    char *patch2 = repeat(patch, "}", 20, "");
    free(patch);
    cJSON *r = it_control(svc, IT_WAIT_MS,
                          "{\"command\":\"updateTwin\",\"deviceId\":\"" IT_DEV2 "\","
                          "\"patch\":{\"properties\":{\"desired\":%s}}}",
                          patch2);
    free(patch2);
    assert_non_null(r);
    assert_non_null(it_json_str(r, "error"));
    cJSON_Delete(r);
    reported_version(svc, IT_DEV2, NULL);
    it_client_close(svc);
    assert_hub_alive();
}

/* -------------------------------------------- answers nobody asked for */

static void test_hostile_unsolicited_method_responses_ignored_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    struct it_client *rogue = it_device_open(&hub, IT_DEV2, NULL, IT_DEV2_KEY);
    struct it_client *dev = it_device_open(&hub, IT_DEV1, NULL, IT_DEV1_KEY);
    assert_int_equal(it_client_subscribe(dev, "$iothub/methods/POST/#", 0, IT_WAIT_MS), 0);

    /* A call to it-dev1 is pending; learn its $rid the way a snooping device might guess it. */
    char corr[32];
    it_control_send(svc, corr,
                    "{\"command\":\"invokeMethod\",\"deviceId\":\"" IT_DEV1 "\","
                    "\"methodName\":\"slow\",\"responseTimeoutInSeconds\":20}");
    struct it_msg *req = it_client_wait_prefix(dev, "$iothub/methods/POST/slow/?$rid=", IT_WAIT_MS);
    assert_non_null(req);
    char *rid = it_topic_param(req->topic, "$rid");
    assert_non_null(rid);
    it_msg_free(req);

    /* Method answers for calls never made, from both devices, and one for it-dev1's call from
     * it-dev2: none may complete anything. */
    char *long_rid = repeat("", "9", 5000, "");
    const char *rids[] = {
        "0",      "1", "18446744073709551615", "99999999999999999999999", "abc", "-1", "%00",
        long_rid, rid};
    for (size_t i = 0; i < sizeof rids / sizeof rids[0]; i++) {
        char *topic = it_strdupf("$iothub/methods/res/200/?$rid=%s", rids[i]);
        assert_true(it_client_publish_acked(rogue, topic, "{\"stolen\":true}", IT_WAIT_MS));
        if (strcmp(rids[i], rid) != 0)
            assert_true(it_client_publish_acked(dev, topic, "not json at all", IT_WAIT_MS));
        free(topic);
    }
    free(long_rid);
    char *big = repeat("[", "1,", 100000, "1]");
    assert_true(it_client_publish_acked(rogue, "$iothub/methods/res/500/?$rid=2", big, IT_WAIT_MS));
    free(big);
    assert_true(
        it_client_publish_acked(rogue, "$iothub/methods/res/999999999/?$rid=3", "", IT_WAIT_MS));
    assert_int_equal(it_client_count_prefix(svc, TH_CONTROL_RESPONSE_TOPIC), 0);
    assert_true(it_client_is_connected(rogue));

    /* The real answer still completes the call, with the real device's status. */
    char *topic = it_strdupf("$iothub/methods/res/201/?$rid=%s", rid);
    assert_true(it_client_publish_acked(dev, topic, "{\"real\":true}", IT_WAIT_MS));
    free(topic);
    free(rid);
    cJSON *r = it_control_wait(svc, corr, IT_WAIT_MS);
    assert_non_null(r);
    assert_int_equal((int)it_json_num(r, "data.status", -1), 201);
    assert_true(cJSON_IsTrue(it_json_get(r, "data.payload.real")));
    assert_null(it_json_get(r, "data.payload.stolen"));
    cJSON_Delete(r);
    it_client_close(rogue);
    it_client_close(dev);
    it_client_close(svc);
    assert_hub_alive();
}

/* ----------------------------------------- ids no topic name can carry */

/*
 * Found by fuzz_control: `mark` takes any deviceId/moduleId and the event went
 * out on $twinhub/events/mark/{d}/{m} with them as they were. A control
 * character or invalid UTF-8 there makes every event subscriber's libmosquitto
 * drop its connection (MOSQ_ERR_MALFORMED_UTF8), '/' added topic levels. Now
 * such bytes are percent-encoded in the topic; the record keeps the ids.
 */
static void test_hostile_mark_ids_outside_topic_names_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, true);
    cJSON *r = it_control(svc, IT_WAIT_MS,
                          "{\"command\":\"mark\",\"deviceId\":\"a\\nb/c+d#\\u00e9\\u0085x\xffy\","
                          "\"moduleId\":\"\\u0001m\",\"data\":{\"k\":1}}");
    assert_non_null(r);
    assert_null(it_json_get(r, "error"));
    cJSON_Delete(r);
    struct it_msg *m = it_client_wait_prefix(svc, "$twinhub/events/mark/", IT_WAIT_MS);
    assert_non_null(m);
    assert_string_equal(m->topic,
                        "$twinhub/events/mark/a%0Ab%2Fc%2Bd%23%C3%A9%C2%85x%FFy/%01m");
    cJSON *rec = it_msg_json(m);
    assert_non_null(rec);
    assert_string_equal(it_json_str(rec, "deviceId"), "a\nb/c+d#\xc3\xa9\xc2\x85x\xffy");
    assert_string_equal(it_json_str(rec, "moduleId"), "\x01m");
    cJSON_Delete(rec);
    it_msg_free(m);
    /* The subscriber is still connected and served. */
    assert_true(it_client_is_connected(svc));
    r = it_control(svc, IT_WAIT_MS, "{\"command\":\"getStatistics\"}");
    assert_non_null(r);
    assert_null(it_json_get(r, "error"));
    cJSON_Delete(r);
    it_client_close(svc);
    assert_hub_alive();
}

/* ------------------------------------------------ a well-behaved device */

static void test_hostile_hub_still_serves_well_behaved_device_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    struct it_client *dev = it_device_open(&hub, IT_DEV1, NULL, IT_DEV1_KEY);
    assert_int_equal(it_client_subscribe(dev, "$iothub/twin/res/#", 0, IT_WAIT_MS), 0);
    assert_int_equal(
        it_client_subscribe(dev, "$iothub/twin/PATCH/properties/desired/#", 1, IT_WAIT_MS), 1);
    assert_int_equal(it_client_subscribe(dev, "$iothub/methods/POST/#", 0, IT_WAIT_MS), 0);
    assert_int_equal(
        it_client_subscribe(dev, "devices/" IT_DEV1 "/messages/devicebound/#", 1, IT_WAIT_MS), 1);

    /* twin GET, reported PATCH, GET again */
    int status = 0;
    struct it_msg *m = it_twin_request(dev, "g1", NULL, &status);
    assert_non_null(m);
    assert_int_equal(status, 200);
    cJSON *doc = it_msg_json(m);
    long long rv = (long long)it_json_num(doc, "reported.$version", -1);
    cJSON_Delete(doc);
    it_msg_free(m);
    m = it_twin_request(dev, "p1", "{\"survivor\":{\"ok\":true,\"n\":42}}", &status);
    assert_non_null(m);
    assert_int_equal(status, 204);
    char *v = it_topic_param(m->topic, "$version");
    assert_non_null(v);
    assert_int_equal(atoll(v), rv + 1);
    free(v);
    it_msg_free(m);
    m = it_twin_request(dev, "g2", NULL, &status);
    assert_non_null(m);
    doc = it_msg_json(m);
    assert_int_equal((int)it_json_num(doc, "reported.survivor.n", -1), 42);
    assert_int_equal((long long)it_json_num(doc, "reported.$version", -1), rv + 1);
    cJSON_Delete(doc);
    it_msg_free(m);

    /* desired patch from the service reaches the device */
    cJSON *r = it_control(svc, IT_WAIT_MS,
                          "{\"command\":\"updateTwin\",\"deviceId\":\"" IT_DEV1 "\","
                          "\"patch\":{\"properties\":{\"desired\":{\"mode\":\"calm\"}}}}");
    assert_non_null(r);
    assert_null(it_json_get(r, "error"));
    cJSON_Delete(r);
    m = it_client_wait_prefix(dev, "$iothub/twin/PATCH/properties/desired/", IT_WAIT_MS);
    assert_non_null(m);
    doc = it_msg_json(m);
    assert_string_equal(it_json_str(doc, "mode"), "calm");
    cJSON_Delete(doc);
    it_msg_free(m);

    /* direct method round trip */
    char corr[32];
    it_control_send(svc, corr,
                    "{\"command\":\"invokeMethod\",\"deviceId\":\"" IT_DEV1 "\","
                    "\"methodName\":\"check\",\"payload\":{\"x\":1}}");
    m = it_client_wait_prefix(dev, "$iothub/methods/POST/check/?$rid=", IT_WAIT_MS);
    assert_non_null(m);
    char *rid = it_topic_param(m->topic, "$rid");
    it_msg_free(m);
    char *topic = it_strdupf("$iothub/methods/res/200/?$rid=%s", rid);
    free(rid);
    assert_int_equal(it_client_publish_str(dev, topic, "{\"fine\":true}", 1), MOSQ_ERR_SUCCESS);
    free(topic);
    r = it_control_wait(svc, corr, IT_WAIT_MS);
    assert_non_null(r);
    assert_int_equal((int)it_json_num(r, "data.status", -1), 200);
    assert_true(cJSON_IsTrue(it_json_get(r, "data.payload.fine")));
    cJSON_Delete(r);

    /* cloud-to-device message */
    r = it_control(svc, IT_WAIT_MS,
                   "{\"command\":\"sendC2D\",\"deviceId\":\"" IT_DEV1 "\",\"body\":\"still here\","
                   "\"messageId\":\"survivor-1\"}");
    assert_non_null(r);
    assert_true(cJSON_IsTrue(it_json_get(r, "data.delivered")));
    cJSON_Delete(r);
    m = it_client_wait_prefix(dev, "devices/" IT_DEV1 "/messages/devicebound/", IT_WAIT_MS);
    assert_non_null(m);
    assert_int_equal(m->len, 10);
    assert_memory_equal(m->payload, "still here", 10);
    it_msg_free(m);

    it_client_close(dev);
    it_client_close(svc);
    assert_int_equal(it_hub_broker_pid(&hub), broker_pid);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hostile_malformed_packets_closed_succeeds),
        cmocka_unit_test(test_hostile_twin_flood_slow_reader_loses_nothing_succeeds),
        cmocka_unit_test(test_hostile_abrupt_disconnects_mid_request_succeeds),
        cmocka_unit_test(test_hostile_connect_churn_same_client_id_succeeds),
        cmocka_unit_test(test_hostile_oversized_and_deep_json_succeeds),
        cmocka_unit_test(test_hostile_unsolicited_method_responses_ignored_succeeds),
        cmocka_unit_test(test_hostile_mark_ids_outside_topic_names_succeeds),
        cmocka_unit_test(test_hostile_hub_still_serves_well_behaved_device_succeeds),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
