/*
 * it_tls.c - the TLS listener of `twinhub serve` against the real broker +
 * plugin (iothub-protocol.md section 3.1, architecture "serve" certificates):
 * a device verifies the server with the generated CA (by IP and by the
 * name localhost) and does a twin GET; an unrelated CA and plain MQTT on the
 * TLS port get no session.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <mosquitto.h>

#include "harness.h"

static struct it_hub hub;

/* A self-signed CA that signed nothing of the hub's (P-256, valid until 2126). */
static const char unrelated_ca_pem[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBrjCCAVOgAwIBAgIUbxb1f55gHFkJxl/r3I9QQUg3q8swCgYIKoZIzj0EAwIw\n"
    "KzEpMCcGA1UEAwwgdHdpbmh1YiBpbnRlZ3JhdGlvbiB1bnJlbGF0ZWQgQ0EwIBcN\n"
    "MjYxMTIzMTQxMTI2WhgPMjEyNjEwMzAxNDExMjZaMCsxKTAnBgNVBAMMIHR3aW5o\n"
    "dWIgaW50ZWdyYXRpb24gdW5yZWxhdGVkIENBMFkwEwYHKoZIzj0CAQYIKoZIzj0D\n"
    "AQcDQgAEU6B2wrMO7iX3Jcpy0yIJmptDvYq//gXGD4h5PYzrzUzExsowMyHYWSXQ\n"
    "qUxHK1vDRXw5nLerVW7IJx0IbBuBE6NTMFEwHQYDVR0OBBYEFDeqsUusJZjzuNWD\n"
    "dO0qaWZFrdP3MB8GA1UdIwQYMBaAFDeqsUusJZjzuNWDdO0qaWZFrdP3MA8GA1Ud\n"
    "EwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSQAwRgIhAO8igpvV8rnCcBvAv9kPVSI2\n"
    "yYx6PSo6Qqx/L6Xkq0wrAiEAjGpTsPWEo4FoO9C/dogfnu6iRTz6ycYxOIQjGng8\n"
    "prI=\n"
    "-----END CERTIFICATE-----\n";

static int group_setup(void **state)
{
    (void)state;
    return it_hub_start(&hub);
}

static int group_teardown(void **state)
{
    (void)state;
    return it_hub_stop(&hub);
}

/* Device it-dev1 over TLS to `host`, verifying with ca_file; returns the CONNACK (-1: none). */
static struct it_client *tls_device(const char *host, const char *ca_file, int *connack)
{
    char *user = it_device_username(hub.hub_name, IT_DEV1, NULL);
    char *pass = it_device_token(hub.hub_name, IT_DEV1, NULL, IT_DEV1_KEY, it_expiry());
    struct it_connect_opts o = {.client_id = IT_DEV1,
                                .username = user,
                                .password = pass,
                                .tls = true,
                                .ca_file = ca_file,
                                .host = host};
    struct it_client *c = it_client_connect(&hub, &o, connack);
    free(user);
    free(pass);
    return c;
}

static void twin_get_ok(struct it_client *c)
{
    assert_int_equal(it_client_subscribe(c, "$iothub/twin/res/#", 1, IT_WAIT_MS), 1);
    int status;
    struct it_msg *m = it_twin_request(c, "tls-get", NULL, &status);
    assert_non_null(m);
    assert_int_equal(status, 200);
    cJSON *doc = it_msg_json(m);
    assert_non_null(doc);
    assert_true(cJSON_IsNumber(it_json_get(doc, "desired.$version")));
    cJSON_Delete(doc);
    it_msg_free(m);
}

static void test_tls_twin_get_by_ip_succeeds(void **state)
{
    (void)state;
    int connack;
    struct it_client *c = tls_device("127.0.0.1", NULL, &connack);
    assert_int_equal(connack, 0);
    twin_get_ok(c);
    it_client_close(c);
}

static void test_tls_twin_get_by_localhost_succeeds(void **state)
{
    (void)state;
    int connack;
    struct it_client *c = tls_device("localhost", NULL, &connack);
    assert_int_equal(connack, 0);
    twin_get_ok(c);
    it_client_close(c);
}

static void test_tls_unrelated_ca_fails(void **state)
{
    (void)state;
    char *path = it_strdupf("%s/unrelated-ca.pem", hub.dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(unrelated_ca_pem, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
    int connack;
    struct it_client *c = tls_device("127.0.0.1", path, &connack);
    /* the server certificate does not verify: no CONNACK, the connection ends */
    assert_int_equal(connack, -1);
    assert_true(it_client_wait_disconnect(c, IT_WAIT_MS));
    it_client_close(c);
    free(path);
}

static void test_tls_plain_mqtt_on_tls_port_fails(void **state)
{
    (void)state;
    char *user = it_device_username(hub.hub_name, IT_DEV1, NULL);
    char *pass = it_device_token(hub.hub_name, IT_DEV1, NULL, IT_DEV1_KEY, it_expiry());
    struct it_connect_opts o = {
        .client_id = IT_DEV1, .username = user, .password = pass, .port = hub.mqtts_port};
    int connack;
    struct it_client *c = it_client_connect(&hub, &o, &connack);
    assert_int_equal(connack, -1);
    assert_true(it_client_wait_disconnect(c, IT_WAIT_MS));
    it_client_close(c);
    free(user);
    free(pass);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tls_twin_get_by_ip_succeeds),
        cmocka_unit_test(test_tls_twin_get_by_localhost_succeeds),
        cmocka_unit_test(test_tls_unrelated_ca_fails),
        cmocka_unit_test(test_tls_plain_mqtt_on_tls_port_fails),
    };
    return cmocka_run_group_tests_name("it_tls", tests, group_setup, group_teardown);
}
