/*
 * it_tlsshim.c - the TLS shim in mosquitto (tlsshim/tlsshim.h,
 * docs/protocol.md "X.509 client certificates") against the real broker,
 * with raw TLS clients that control how the first packet arrives: a CONNECT
 * in one-byte TLS records, a CONNECT larger than one TLS record, a CONNECT
 * followed by more packets in the same record, a CONNECT too large to be
 * rewritten (passed on unchanged), a first packet that is not a CONNECT, a client that completes
 * its handshake and says nothing, clients without a certificate, and a
 * broker started without the shim.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <mosquitto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "harness.h"
#include "mqtt_connect.h"
#include "x509.h"
#include "x509_fixture.h"

#define DAY 86400L
#define DEV "shim-self"

static struct it_hub hub;
static struct it_client *svc;
static struct fx_cert self;

static int group_setup(void **state)
{
    (void)state;
    if (it_hub_start(&hub) != 0)
        return -1;
    self = fx_make(DEV, NULL, false, -60, DAY);
    svc = it_service_open(&hub, true);
    char tp[65];
    fx_thumb(&self, true, tp);
    cJSON_Delete(it_control_ok(svc,
                               "{\"command\":\"createDevice\",\"deviceId\":\"" DEV "\","
                               "\"authentication\":{\"type\":\"selfSigned\",\"x509Thumbprint\":"
                               "{\"primaryThumbprint\":\"%s\"}}}",
                               tp));
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    it_client_close(svc);
    fx_free(&self);
    return it_hub_stop(&hub);
}

/* ---- a raw TLS client (blocking socket) ---------------------------------------------------- */

struct tc {
    int fd;
    SSL_CTX *ctx;
    SSL *ssl;
    uint8_t in[4096];
    size_t inlen;
};

/* Connect to the MQTT/TLS port with `cert` (NULL: none) and finish the handshake. */
static void tc_open(struct tc *t, const struct fx_cert *cert)
{
    memset(t, 0, sizeof *t);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)hub.mqtts_port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    t->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(t->fd >= 0);
    int one = 1;
    setsockopt(t->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    assert_int_equal(connect(t->fd, (struct sockaddr *)&a, sizeof a), 0);
    t->ctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(t->ctx);
    assert_int_equal(SSL_CTX_load_verify_file(t->ctx, hub.ca_file), 1);
    SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER, NULL);
    if (cert) {
        assert_int_equal(SSL_CTX_use_certificate(t->ctx, cert->x509), 1);
        assert_int_equal(SSL_CTX_use_PrivateKey(t->ctx, cert->key), 1);
    }
    t->ssl = SSL_new(t->ctx);
    SSL_set_fd(t->ssl, t->fd);
    assert_int_equal(SSL_connect(t->ssl), 1);
}

/* A DISCONNECT first (ignored when the broker already closed), so that no will is published. */
static void tc_close(struct tc *t)
{
    static const uint8_t disconnect[2] = {0xe0, 0x00};
    if (SSL_write(t->ssl, disconnect, sizeof disconnect) <= 0)
        ERR_clear_error();
    SSL_free(t->ssl);
    SSL_CTX_free(t->ctx);
    close(t->fd);
}

/* Write `len` bytes in TLS records of at most `chunk` bytes each (one SSL_write per record). */
static void tc_write(struct tc *t, const uint8_t *buf, size_t len, size_t chunk)
{
    for (size_t off = 0; off < len;) {
        size_t n = len - off < chunk ? len - off : chunk;
        int w = SSL_write(t->ssl, buf + off, (int)n);
        assert_true(w > 0);
        off += (size_t)w;
    }
}

/* The next whole packet into pkt (its first 8 bytes at most); its length, 0 at the end of the
 * stream (or a failure), -1 after `timeout_ms` without one. */
static int tc_read_packet(struct tc *t, uint8_t pkt[8], int timeout_ms)
{
    for (;;) {
        size_t plen;
        if (t->inlen && th_mqtt_packet_length(t->in, t->inlen, &plen) == TH_OK &&
            plen <= t->inlen) {
            memcpy(pkt, t->in, plen < 8 ? plen : 8);
            memmove(t->in, t->in + plen, t->inlen - plen);
            t->inlen -= plen;
            return (int)plen;
        }
        if (!SSL_has_pending(t->ssl)) {
            struct pollfd p = {t->fd, POLLIN, 0};
            if (poll(&p, 1, timeout_ms) != 1)
                return -1;
        }
        int r = SSL_read(t->ssl, t->in + t->inlen, (int)(sizeof t->in - t->inlen));
        if (r <= 0) {
            ERR_clear_error();
            return 0;
        }
        t->inlen += (size_t)r;
    }
}

/* Expect a CONNACK with return code `rc`. */
static void expect_connack(struct tc *t, int rc)
{
    uint8_t p[8];
    assert_int_equal(tc_read_packet(t, p, IT_WAIT_MS), 4);
    assert_int_equal(p[0], 0x20);
    assert_int_equal(p[3], rc);
}

/* Expect the broker to end the connection without sending anything (within `timeout_ms`). */
static void expect_closed(struct tc *t, int timeout_ms)
{
    uint8_t p[8];
    assert_int_equal(tc_read_packet(t, p, timeout_ms), 0);
}

static const uint8_t pingreq[2] = {0xc0, 0x00};

/* A PINGREQ answered: the connection passes straight through after its first packet. */
static void expect_ping(struct tc *t)
{
    uint8_t p[8];
    tc_write(t, pingreq, sizeof pingreq, sizeof pingreq);
    assert_int_equal(tc_read_packet(t, p, IT_WAIT_MS), 2);
    assert_int_equal(p[0], 0xd0);
}

/* A CONNECT (MQTT 3.1.1, clean session) as `DEV`'s X.509 connection would send it; with
 * `will_len` > 0 a QoS 0 will of that many bytes to the device's telemetry topic. malloc'd. */
static uint8_t *make_connect(const char *cid, const char *password, size_t will_len, size_t *len)
{
    char *user = it_device_username(hub.hub_name, cid, NULL);
    char topic[128];
    snprintf(topic, sizeof topic, "devices/%s/messages/events/", cid);
    uint8_t *will = will_len ? calloc(1, will_len) : NULL;
    struct th_mqtt_connect c = {
        .protocol_name = {(const uint8_t *)"MQTT", 4},
        .level = 4,
        .flags = TH_MQTT_CF_CLEAN | (will_len ? TH_MQTT_CF_WILL : 0),
        .keep_alive = 60,
        .client_id = {(const uint8_t *)cid, strlen(cid)},
        .has_username = true,
        .username = {(const uint8_t *)user, strlen(user)},
        .has_password = password != NULL,
        .password = {(const uint8_t *)password, password ? strlen(password) : 0},
    };
    if (will_len) {
        memset(will, 'w', will_len);
        c.will_topic = (struct th_bytes){(const uint8_t *)topic, strlen(topic)};
        c.will_payload = (struct th_bytes){will, will_len};
    }
    size_t cap = th_mqtt_connect_size(&c);
    assert_true(cap > 0);
    uint8_t *out = malloc(cap);
    assert_int_equal(th_mqtt_connect_write(&c, out, cap, len), TH_OK);
    free(will);
    free(user);
    return out;
}

/* ---- the tests ------------------------------------------------------------------------------ */

/* Every byte of the CONNECT in its own TLS record: the shim collects them all, then rewrites. */
static void test_tlsshim_connect_in_one_byte_records_succeeds(void **state)
{
    (void)state;
    struct tc t;
    size_t len;
    uint8_t *pk = make_connect(DEV, NULL, 0, &len);
    tc_open(&t, &self);
    tc_write(&t, pk, len, 1);
    expect_connack(&t, 0);
    expect_ping(&t);
    tc_close(&t);
    free(pk);
}

/* A CONNECT of about 40 KB (a will): more than one TLS record, more than one read. */
static void test_tlsshim_connect_larger_than_one_read_succeeds(void **state)
{
    (void)state;
    struct tc t;
    size_t len;
    uint8_t *pk = make_connect(DEV, NULL, 40000, &len);
    tc_open(&t, &self);
    tc_write(&t, pk, len, len);
    expect_connack(&t, 0);
    expect_ping(&t);
    tc_close(&t);
    free(pk);
}

/* The CONNECT, a SUBSCRIBE and a PINGREQ in one record: what follows the CONNECT stays in
 * OpenSSL's buffer and mosquitto reads it (SSL_pending). */
static void test_tlsshim_packets_after_connect_same_record_succeeds(void **state)
{
    (void)state;
    struct tc t;
    size_t len;
    uint8_t *pk = make_connect(DEV, NULL, 0, &len);
    const char *filter = "devices/" DEV "/messages/devicebound/#";
    uint8_t buf[512];
    memcpy(buf, pk, len);
    size_t n = len, flen = strlen(filter);
    buf[n++] = 0x82; /* SUBSCRIBE */
    buf[n++] = (uint8_t)(2 + 2 + flen + 1);
    buf[n++] = 0;
    buf[n++] = 7; /* packet id */
    buf[n++] = 0;
    buf[n++] = (uint8_t)flen;
    memcpy(buf + n, filter, flen);
    n += flen;
    buf[n++] = 1; /* QoS 1 */
    memcpy(buf + n, pingreq, sizeof pingreq);
    n += sizeof pingreq;
    tc_open(&t, &self);
    tc_write(&t, buf, n, n);
    expect_connack(&t, 0);
    uint8_t p[8];
    assert_int_equal(tc_read_packet(&t, p, IT_WAIT_MS), 5);
    assert_int_equal(p[0], 0x90); /* SUBACK */
    assert_int_equal(p[3], 7);
    assert_int_equal(p[4], 1);
    assert_int_equal(tc_read_packet(&t, p, IT_WAIT_MS), 2);
    assert_int_equal(p[0], 0xd0);
    tc_close(&t);
    free(pk);
}

/* Over the shim's 64 KB first-packet bound: passed on unchanged, byte for byte. A SAS device
 * (its token decides) connects; the X.509 device, whose certificate is then not vouched for, is
 * refused (no password) - without a will there: mosquitto 2.0.11 leaks the will of a refused
 * CONNECT (handle__connect sets context->will, then its error path drops it). */
static void test_tlsshim_connect_too_large_to_rewrite_succeeds(void **state)
{
    (void)state;
    struct tc t;
    size_t len;
    char *tok = it_device_token(hub.hub_name, IT_DEV1, NULL, IT_DEV1_KEY, it_expiry());
    uint8_t *pk = make_connect(IT_DEV1, tok, 65535, &len);
    assert_true(len > 64 * 1024);
    tc_open(&t, &self);
    tc_write(&t, pk, len, len);
    expect_connack(&t, 0);
    expect_ping(&t);
    tc_close(&t);
    free(pk);
    free(tok);
    uint8_t *ok = make_connect(DEV, NULL, 0, &len);
    tc_open(&t, &self);
    tc_write(&t, ok, len, len);
    expect_connack(&t, 0);
    tc_close(&t);
    free(ok);
}

/* A first packet that is not a CONNECT passes unchanged and the broker closes the connection. */
static void test_tlsshim_first_packet_not_connect_fails(void **state)
{
    (void)state;
    struct tc t;
    tc_open(&t, &self);
    tc_write(&t, pingreq, sizeof pingreq, sizeof pingreq);
    expect_closed(&t, IT_WAIT_MS);
    tc_close(&t);
}

/* Without a certificate: a SAS device connects; a client without a password is refused in the
 * CONNACK (not at the TLS layer). */
static void test_tlsshim_no_certificate_succeeds(void **state)
{
    (void)state;
    struct tc t;
    size_t len;
    char *tok = it_device_token(hub.hub_name, IT_DEV1, NULL, IT_DEV1_KEY, it_expiry());
    uint8_t *pk = make_connect(IT_DEV1, tok, 0, &len);
    tc_open(&t, NULL);
    tc_write(&t, pk, len, 3);
    expect_connack(&t, 0);
    expect_ping(&t);
    tc_close(&t);
    free(pk);
    free(tok);
    pk = make_connect(DEV, NULL, 0, &len);
    tc_open(&t, NULL);
    tc_write(&t, pk, len, len);
    expect_connack(&t, 5);
    tc_close(&t);
    free(pk);
}

/* A client that finishes its TLS handshake and sends nothing is closed after 10 s (the plugin's
 * tick has the shim shut its socket down; mosquitto alone would wait 90 s). */
static void test_tlsshim_silent_after_handshake_closed_succeeds(void **state)
{
    (void)state;
    struct tc t;
    tc_open(&t, &self);
    expect_closed(&t, 20000);
    tc_close(&t);
}

/* A broker started without the shim (something else preloaded): the plugin refuses to start
 * and says why, rather than a TLS listener that refuses every SAS device. */
static void test_tlsshim_broker_without_shim_fails(void **state)
{
    (void)state;
    Dl_info info;
    assert_true(dladdr((void *)EVP_sha256, &info) != 0 && info.dli_fname);
    setenv("TWINHUB_TLSSHIM", info.dli_fname, 1); /* libcrypto: already in mosquitto */
    /* Under the asan setup: mosquitto 2.0.11 leaks its configuration when a plugin fails to
     * initialise (its own, not ours), so leak checking is off for this start only. */
    const char *asan = getenv("ASAN_OPTIONS");
    char *saved = asan ? strdup(asan) : NULL;
    char *opts = it_strdupf("%s%sdetect_leaks=0", asan ? asan : "", asan && *asan ? ":" : "");
    setenv("ASAN_OPTIONS", opts, 1);
    struct it_hub other;
    int started = it_hub_start(&other);
    if (saved)
        setenv("ASAN_OPTIONS", saved, 1);
    else
        unsetenv("ASAN_OPTIONS");
    free(saved);
    free(opts);
    unsetenv("TWINHUB_TLSSHIM");
    assert_int_not_equal(started, 0);
    char *err = it_read_file(other.stderr_path);
    assert_non_null(err);
    if (!strstr(err, "TLS shim"))
        fail_msg("no word of the TLS shim in serve's stderr: %s", err);
    free(err);
    it_rmtree(other.dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tlsshim_connect_in_one_byte_records_succeeds),
        cmocka_unit_test(test_tlsshim_connect_larger_than_one_read_succeeds),
        cmocka_unit_test(test_tlsshim_packets_after_connect_same_record_succeeds),
        cmocka_unit_test(test_tlsshim_connect_too_large_to_rewrite_succeeds),
        cmocka_unit_test(test_tlsshim_first_packet_not_connect_fails),
        cmocka_unit_test(test_tlsshim_no_certificate_succeeds),
        cmocka_unit_test(test_tlsshim_silent_after_handshake_closed_succeeds),
        cmocka_unit_test(test_tlsshim_broker_without_shim_fails),
    };
    return cmocka_run_group_tests_name("it_tlsshim", tests, group_setup, group_teardown);
}
