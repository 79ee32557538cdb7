/*
 * it_iolayer.c - the broker I/O layer (tlsshim/iolayer.c, docs/architecture.md
 * "The broker's I/O layer") against the real broker, with raw TCP clients that
 * control how packets reach it: a burst of packets in one write (the layer
 * keeps what one read brings beyond the packet mosquitto reads, and must hand
 * every packet on, in order, one loop pass at a time, and holds the answers
 * back to hand them to the kernel together), packets a byte at a
 * time, a burst ended by the end of the stream (nothing accepted is lost), a
 * connection the broker ends while the layer holds its bytes (they must never
 * reach the connection that gets the same descriptor next), and the same
 * on a second broker with the layer turned off (TWINHUB_BROKER_IO=plain),
 * whose answers must be the same.
 *
 * The brokerIo control command reports the layer's counters; the tests check
 * with them that the layer is on and actually kept bytes, so that a broker that
 * quietly ran without it would fail here.
 *
 * It also reports which library's malloc the broker calls: serve preloads
 * jemalloc when it is installed (serve.c find_broker_malloc), glibc's otherwise,
 * and glibc's when TWINHUB_BROKER_MALLOC=glibc asks for it; a bad
 * TWINHUB_BROKER_MALLOC stops serve with a message that names it.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dlfcn.h>
#include <glob.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "harness.h"
#include "rawmqtt.h"

#define BURST 300 /* QoS 1 publishes in one write */

/* A running hub, its service client and two devices' credentials. */
struct hubctx {
    struct it_hub hub;
    struct it_client *svc;
    bool layer_on; /* not TWINHUB_BROKER_IO=plain */
    struct cred dev1, dev2;
};

static struct hubctx on; /* the group's hub, with the layer */

/* `extra`: more `serve` arguments (NULL-terminated), or NULL. */
static int hub_open(struct hubctx *h, bool plain, const char *const *extra)
{
    memset(h, 0, sizeof *h);
    h->layer_on = !plain;
    if (plain)
        setenv("TWINHUB_BROKER_IO", "plain", 1);
    int rc = it_hub_start_with(&h->hub, NULL, extra);
    unsetenv("TWINHUB_BROKER_IO");
    if (rc != 0)
        return -1;
    h->svc = it_service_open(&h->hub, false);
    cred_make(&h->dev1, &h->hub, IT_DEV1, NULL, IT_DEV1_KEY);
    cred_make(&h->dev2, &h->hub, IT_DEV2, NULL, IT_DEV2_KEY);
    return h->svc ? 0 : -1;
}

static int hub_close(struct hubctx *h)
{
    cred_free(&h->dev1);
    cred_free(&h->dev2);
    it_client_close(h->svc);
    return it_hub_stop(&h->hub);
}

static int group_setup(void **state)
{
    (void)state;
    return hub_open(&on, false, NULL);
}

static int group_teardown(void **state)
{
    (void)state;
    return hub_close(&on);
}

/* The layer's counters (brokerIo); the caller frees. */
static cJSON *io_stats(struct hubctx *h)
{
    return it_control_ok(h->svc, "{\"command\":\"brokerIo\"}");
}

static double stat_num(const cJSON *st, const char *name)
{
    return it_json_num(st, name, -1);
}

static void telemetry_topic(char *out, size_t size, const char *device_id)
{
    snprintf(out, size, "devices/%s/messages/events/", device_id);
}

/* Read `n` PUBACKs and check their packet ids are first..first+n-1, in order. */
static void expect_pubacks(struct raw *r, unsigned first, int n)
{
    for (int i = 0; i < n; i++) {
        struct pkt p;
        int rc = raw_recv(r, &p, RAW_WAIT_MS);
        if (rc != 1)
            fprintf(stderr, "# PUBACK %d of %d: %s\n", i + 1, n,
                    rc ? "connection ended" : "timeout");
        assert_int_equal(rc, 1);
        assert_int_equal(p.header, 0x40);
        assert_int_equal(p.len, 2);
        unsigned mid = (unsigned)p.body[0] << 8 | p.body[1];
        free(p.body);
        assert_int_equal(mid, first + (unsigned)i);
    }
}

/* CONNECT and BURST QoS 1 telemetry messages written at once: CONNACK, then every PUBACK in
 * order. With the layer on, most of mosquitto's reads came from kept bytes. */
static void burst_in_one_write(struct hubctx *h)
{
    cJSON *before = io_stats(h);
    struct raw r;
    struct buf b = {0};
    char topic[128];
    telemetry_topic(topic, sizeof topic, IT_DEV1);
    connect_packet(&b, &h->dev1, true);
    for (unsigned i = 1; i <= BURST; i++) {
        char payload[64];
        int n = snprintf(payload, sizeof payload, "{\"n\":%u}", i);
        mk_publish(&b, topic, strlen(topic), payload, (size_t)n, 1, i);
    }
    assert_true(raw_open(&r, h->hub.mqtt_port, 0));
    assert_true(raw_send_buf(&r, &b));
    int code = -1;
    assert_true(raw_expect(&r, 0x20, &code, RAW_WAIT_MS));
    assert_int_equal(code, 0);
    expect_pubacks(&r, 1, BURST);
    raw_close(&r, false);
    b_free(&b);

    cJSON *after = io_stats(h);
    assert_true(it_json_get(after, "loaded") && cJSON_IsTrue(it_json_get(after, "loaded")));
    assert_int_equal(cJSON_IsTrue(it_json_get(after, "active")), h->layer_on);
    double reads = stat_num(after, "reads") - stat_num(before, "reads");
    double kernel = stat_num(after, "kernelReads") - stat_num(before, "kernelReads");
    double kept = stat_num(after, "readyFromKept") - stat_num(before, "readyFromKept");
    double writes = stat_num(after, "writes") - stat_num(before, "writes");
    double kwrites = stat_num(after, "kernelWrites") - stat_num(before, "kernelWrites");
    fprintf(stderr,
            "# %d packets: %.0f reads, %.0f from the kernel, %.0f ready from kept bytes; %.0f "
            "writes, %.0f to the kernel\n",
            BURST + 1, reads, kernel, kept, writes, kwrites);
    if (h->layer_on) {
        /* mosquitto reads each packet in 3 or more reads; the burst is about 14 KB, so a
         * handful of kernel reads bring it all. */
        assert_true(reads >= 3.0 * BURST);
        assert_true(kernel < 0.1 * reads);
        assert_true(kept >= BURST / 2);
        /* The CONNACK and the PUBACKs (and the service's control answers) were written by
         * mosquitto one by one; the layer handed them to the kernel in far fewer writes. */
        assert_true(writes >= BURST);
        assert_true(kwrites < writes / 4);
    } else {
        assert_true(reads == 0 && kernel == 0 && kept == 0 && writes == 0 && kwrites == 0);
    }
    cJSON_Delete(before);
    cJSON_Delete(after);
}

/* CONNECT and three publishes sent one byte per write: all answered. */
static void test_iolayer_one_byte_per_write_succeeds(void **state)
{
    (void)state;
    struct hubctx *h = &on;
    struct raw r;
    struct buf b = {0};
    char topic[128];
    telemetry_topic(topic, sizeof topic, IT_DEV1);
    connect_packet(&b, &h->dev1, true);
    for (unsigned i = 1; i <= 3; i++)
        mk_publish(&b, topic, strlen(topic), "{\"byte\":1}", 10, 1, i);
    assert_true(raw_open(&r, h->hub.mqtt_port, 0));
    for (size_t i = 0; i < b.len; i++)
        assert_true(raw_send(&r, b.p + i, 1, RAW_WAIT_MS));
    int code = -1;
    assert_true(raw_expect(&r, 0x20, &code, RAW_WAIT_MS));
    assert_int_equal(code, 0);
    expect_pubacks(&r, 1, 3);
    raw_close(&r, false);
    b_free(&b);
}

/* CONNECT, BURST publishes and DISCONNECT, then the end of the stream, all in one go: every
 * publish is acknowledged before the broker closes (nothing kept is dropped at the end). */
static void burst_then_end_of_stream(struct hubctx *h)
{
    struct raw r;
    struct buf b = {0};
    char topic[128];
    telemetry_topic(topic, sizeof topic, IT_DEV2);
    connect_packet(&b, &h->dev2, true);
    for (unsigned i = 1; i <= BURST; i++)
        mk_publish(&b, topic, strlen(topic), "{\"last\":false}", 14, 1, i);
    b_u8(&b, 0xE0); /* DISCONNECT */
    b_u8(&b, 0x00);
    assert_true(raw_open(&r, h->hub.mqtt_port, 0));
    assert_true(raw_send_buf(&r, &b));
    shutdown(r.fd, SHUT_WR);
    int code = -1;
    assert_true(raw_expect(&r, 0x20, &code, RAW_WAIT_MS));
    assert_int_equal(code, 0);
    expect_pubacks(&r, 1, BURST);
    assert_true(raw_wait_closed(&r, RAW_WAIT_MS));
    raw_close(&r, false);
    b_free(&b);
}

/*
 * A connection the broker ends while the layer still holds bytes of it: a device sends its
 * CONNECT, a second CONNECT (a protocol error: mosquitto closes the connection at once) and
 * then a burst of publishes, all in one write, so the layer holds the publishes when the
 * socket is closed. Another device connects right after, many times over, so that it gets
 * the descriptor number the first had: its own CONNECT must be the first thing the broker
 * reads from it (a leftover publish would end it with a protocol error, or be taken as its
 * telemetry), and its own publish must be acknowledged with its own packet id.
 */
static void closed_with_kept_bytes(struct hubctx *h)
{
    char topic1[128], topic2[128];
    telemetry_topic(topic1, sizeof topic1, IT_DEV1);
    telemetry_topic(topic2, sizeof topic2, IT_DEV2);
    for (int round = 0; round < 20; round++) {
        struct raw bad, good;
        struct buf b = {0}, g = {0};
        connect_packet(&b, &h->dev1, true);
        connect_packet(&b, &h->dev1, true);
        for (unsigned i = 1; i <= 100; i++)
            mk_publish(&b, topic1, strlen(topic1), "{\"stray\":true}", 14, 1, i);
        assert_true(raw_open(&bad, h->hub.mqtt_port, 0));
        assert_true(raw_send_buf(&bad, &b));
        /* CONNACK for the first CONNECT, then the close for the second; no PUBACK. */
        int code = -1;
        assert_true(raw_expect(&bad, 0x20, &code, RAW_WAIT_MS));
        assert_int_equal(code, 0);
        struct pkt p;
        int rc = raw_recv(&bad, &p, RAW_WAIT_MS);
        if (rc == 1) {
            fprintf(stderr, "# round %d: after the second CONNECT got packet 0x%02x\n", round,
                    p.header);
            free(p.body);
        }
        assert_int_equal(rc, -1);
        raw_close(&bad, false);

        connect_packet(&g, &h->dev2, true);
        mk_publish(&g, topic2, strlen(topic2), "{\"mine\":true}", 13, 1, 7);
        assert_true(raw_open(&good, h->hub.mqtt_port, 0));
        assert_true(raw_send_buf(&good, &g));
        code = -1;
        assert_true(raw_expect(&good, 0x20, &code, RAW_WAIT_MS));
        assert_int_equal(code, 0);
        expect_pubacks(&good, 7, 1);
        raw_close(&good, false);
        b_free(&b);
        b_free(&g);
    }
}

static void test_iolayer_burst_in_one_write_all_acked_in_order_succeeds(void **state)
{
    (void)state;
    burst_in_one_write(&on);
}

static void test_iolayer_burst_then_end_of_stream_loses_nothing_succeeds(void **state)
{
    (void)state;
    burst_then_end_of_stream(&on);
}

static void test_iolayer_closed_with_kept_bytes_not_seen_by_next_connection_succeeds(void **state)
{
    (void)state;
    closed_with_kept_bytes(&on);
}

/* The same on a broker with the layer off: the same answers, and brokerIo says it is off. */
static void test_iolayer_off_same_answers_succeeds(void **state)
{
    (void)state;
    struct hubctx *off = calloc(1, sizeof *off);
    assert_non_null(off);
    assert_int_equal(hub_open(off, true, NULL), 0);
    burst_in_one_write(off);
    burst_then_end_of_stream(off);
    closed_with_kept_bytes(off);
    assert_int_equal(hub_close(off), 0);
    free(off);
}

/* What serve preloads unless told otherwise: jemalloc when the machine has it in a library
 * directory (scripts/setup.sh installs it), else glibc's malloc. Looked for here in the usual
 * directories, not the way serve finds it (beside the C library), so that a serve that fails
 * to find an installed jemalloc fails this test. */
static const char *expected_malloc(void)
{
    static const char *const patterns[] = {"/usr/lib/*/libjemalloc.so.2", "/lib/*/libjemalloc.so.2",
                                           "/usr/lib64/libjemalloc.so.2",
                                           "/usr/lib/libjemalloc.so.2"};
    for (size_t i = 0; i < sizeof patterns / sizeof *patterns; i++) {
        glob_t g;
        bool found = glob(patterns[i], 0, NULL, &g) == 0 && g.gl_pathc > 0;
        globfree(&g);
        if (found)
            return "libjemalloc.so.2";
    }
    fprintf(stderr, "# jemalloc is not installed here: the broker is expected on glibc's malloc\n");
    return "libc.so.6";
}

/* A wrapper that preloads its own runtime (the asan setup) gets no allocator from serve. */
static bool own_runtime(void)
{
    const char *w = getenv("TWINHUB_MOSQUITTO_PRELOADS");
    return w && *w;
}

/* For a test that needs serve's own LD_PRELOAD, which a wrapper with its own runtime (the asan
 * setup) builds itself: true, with a note, under such a wrapper (the main suite runs the test;
 * cmocka's skip() reads as a failure in meson's TAP). */
static bool under_wrapper(void)
{
    if (!own_runtime())
        return false;
    fprintf(stderr, "# not run under a wrapper that preloads its own runtime\n");
    return true;
}

static void test_broker_malloc_default_succeeds(void **state)
{
    (void)state;
    cJSON *st = io_stats(&on);
    assert_non_null(st);
    const char *got = it_json_str(st, "malloc");
    assert_non_null(got);
    if (own_runtime()) {
        assert_string_not_equal(got, "libjemalloc.so.2");
    } else {
        assert_string_equal(got, expected_malloc());
    }
    cJSON_Delete(st);
}

static void test_broker_malloc_glibc_when_asked_succeeds(void **state)
{
    (void)state;
    struct hubctx *h = calloc(1, sizeof *h);
    assert_non_null(h);
    setenv("TWINHUB_BROKER_MALLOC", "glibc", 1);
    int rc = hub_open(h, false, NULL);
    unsetenv("TWINHUB_BROKER_MALLOC");
    assert_int_equal(rc, 0);
    cJSON *st = io_stats(h);
    assert_non_null(st);
    const char *got = it_json_str(st, "malloc");
    assert_non_null(got);
    assert_string_not_equal(got, "libjemalloc.so.2");
    if (!own_runtime()) {
        assert_string_equal(got, "libc.so.6");
    }
    cJSON_Delete(st);
    burst_in_one_write(h); /* and the broker works on it */
    assert_int_equal(hub_close(h), 0);
    free(h);
}

static void test_broker_malloc_not_a_file_fails(void **state)
{
    (void)state;
    setenv("TWINHUB_BROKER_MALLOC", "/nonexistent/libnomalloc.so", 1);
    struct it_hub other;
    int started = it_hub_start(&other);
    unsetenv("TWINHUB_BROKER_MALLOC");
    char *err = it_read_file(other.stderr_path);
    assert_non_null(err);
    /* Under a wrapper that preloads its own runtime (the asan setup) the setting is ignored,
     * with a note, and the hub starts. */
    const char *want =
        own_runtime() ? "TWINHUB_BROKER_MALLOC is ignored"
                      : "TWINHUB_BROKER_MALLOC=/nonexistent/libnomalloc.so is not a readable file";
    bool said = strstr(err, want) != NULL;
    if (!said)
        fprintf(stderr, "# serve's stderr: %s\n", err);
    free(err);
    if (own_runtime()) {
        assert_int_equal(started, 0);
        assert_int_equal(it_hub_stop(&other), 0);
    } else {
        assert_int_not_equal(started, 0);
        it_rmtree(other.dir);
    }
    assert_true(said);
}

/* A preload of the user's own (here libcrypto, which mosquitto loads anyway) is kept after the
 * shim and the allocator: the layer still runs, on the same allocator. */
static void test_broker_malloc_user_preload_kept_succeeds(void **state)
{
    (void)state;
    if (under_wrapper())
        return;
    Dl_info info;
    assert_true(dladdr((void *)EVP_sha256, &info) != 0 && info.dli_fname);
    const char *old = getenv("LD_PRELOAD");
    char *saved = old ? strdup(old) : NULL;
    setenv("LD_PRELOAD", info.dli_fname, 1);
    struct hubctx *h = calloc(1, sizeof *h);
    assert_non_null(h);
    int rc = hub_open(h, false, NULL);
    if (saved)
        setenv("LD_PRELOAD", saved, 1);
    else
        unsetenv("LD_PRELOAD");
    free(saved);
    assert_int_equal(rc, 0);
    cJSON *st = io_stats(h);
    assert_non_null(st);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(st, "loaded")));
    const char *got = it_json_str(st, "malloc");
    assert_non_null(got);
    assert_string_equal(got, expected_malloc());
    cJSON_Delete(st);
    assert_int_equal(hub_close(h), 0);
    free(h);
}

/* A library preloaded after the shim whose constructor reads a file before the shim's own has
 * run (early_io_probe.c; mosquitto died of it with mimalloc as the allocator): the broker
 * starts, the probe's reads reached the kernel, and the layer then works. */
static void test_broker_malloc_early_io_in_constructor_succeeds(void **state)
{
    (void)state;
    if (under_wrapper())
        return;
    const char *probe = getenv("IT_EARLY_IO_PROBE");
    assert_non_null(probe);
    setenv("TWINHUB_BROKER_MALLOC", probe, 1);
    struct hubctx *h = calloc(1, sizeof *h);
    assert_non_null(h);
    static const char *const verbose[] = {"-v", NULL}; /* the broker's lines on serve's stderr */
    int rc = hub_open(h, false, verbose);
    unsetenv("TWINHUB_BROKER_MALLOC");
    assert_int_equal(rc, 0);
    burst_in_one_write(h);
    char *err = it_read_file(h->hub.stderr_path); /* serve copies the broker's lines here (-v) */
    assert_non_null(err);
    const char *line = strstr(err, "early-io-probe: read ");
    bool read_ok = line && atoi(line + strlen("early-io-probe: read ")) > 0;
    if (!read_ok)
        fprintf(stderr, "# serve's stderr: %s\n", err);
    free(err);
    assert_int_equal(hub_close(h), 0);
    free(h);
    assert_true(read_ok); /* the probe's constructor read /proc/self/stat in the broker */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_iolayer_burst_in_one_write_all_acked_in_order_succeeds),
        cmocka_unit_test(test_iolayer_one_byte_per_write_succeeds),
        cmocka_unit_test(test_iolayer_burst_then_end_of_stream_loses_nothing_succeeds),
        cmocka_unit_test(test_iolayer_closed_with_kept_bytes_not_seen_by_next_connection_succeeds),
        cmocka_unit_test(test_iolayer_off_same_answers_succeeds),
        cmocka_unit_test(test_broker_malloc_default_succeeds),
        cmocka_unit_test(test_broker_malloc_glibc_when_asked_succeeds),
        cmocka_unit_test(test_broker_malloc_not_a_file_fails),
        cmocka_unit_test(test_broker_malloc_user_preload_kept_succeeds),
        cmocka_unit_test(test_broker_malloc_early_io_in_constructor_succeeds),
    };
    return cmocka_run_group_tests_name("it_iolayer", tests, group_setup, group_teardown);
}
