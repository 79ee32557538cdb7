/*
 * it_x509.c - X.509 client certificates through `twinhub serve`'s MQTT/TLS
 * port (mosquitto's TLS listener with the TLS shim) against the real broker and plugin (docs/protocol.md, "X.509
 * client certificates"): a selfSigned device by thumbprint and a
 * certificateAuthority device after its CA is verified by proof of
 * possession (control API), each doing a twin GET and a telemetry message
 * whose auth method names the certificate; every refusal gets CONNACK 5
 * and a `refused` event with its reason; a SAS device on the same port
 * still connects; a forged front credential sent to the plain port is
 * refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <mosquitto.h>

#include "harness.h"
#include "x509.h"
#include "x509_fixture.h"

#define DAY 86400L

static struct it_hub hub;
static struct it_client *svc;
static struct fx_cert ca, self, expired, leaf, wrong_cn, foreign_ca, foreign;
static char *self_cert, *self_key, *expired_cert, *expired_key, *leaf_cert, *leaf_key,
    *wrong_cn_cert, *wrong_cn_key, *foreign_cert, *foreign_key;

/* Write c's certificate and key into the hub's dir as NAME.pem / NAME.key. */
static void write_pair(const struct fx_cert *c, const char *name, char **cert, char **key)
{
    char *pem = fx_pem(c, false), *kp = fx_key_pem(c);
    *cert = it_strdupf("%s/%s.pem", hub.dir, name);
    *key = it_strdupf("%s/%s.key", hub.dir, name);
    assert_true(fx_write(*cert, pem));
    assert_true(fx_write(*key, kp));
    free(pem);
    free(kp);
}

static int group_setup(void **state)
{
    (void)state;
    if (it_hub_start(&hub) != 0)
        return -1;
    ca = fx_make("it-root", NULL, true, -60, DAY);
    self = fx_make("x509-self", NULL, false, -60, DAY);
    expired = fx_make("x509-self", NULL, false, -2 * DAY, -DAY);
    leaf = fx_make("x509-ca", &ca, false, -60, DAY);
    wrong_cn = fx_make("someone-else", &ca, false, -60, DAY);
    foreign_ca = fx_make("it-foreign-root", NULL, true, -60, DAY);
    foreign = fx_make("x509-ca", &foreign_ca, false, -60, DAY);
    write_pair(&self, "self", &self_cert, &self_key);
    write_pair(&expired, "expired", &expired_cert, &expired_key);
    write_pair(&leaf, "leaf", &leaf_cert, &leaf_key);
    write_pair(&wrong_cn, "wrongcn", &wrong_cn_cert, &wrong_cn_key);
    write_pair(&foreign, "foreign", &foreign_cert, &foreign_key);
    svc = it_service_open(&hub, true);
    char tp[65];
    fx_thumb(&self, true, tp);
    cJSON *d = it_control_ok(svc,
                             "{\"command\":\"createDevice\",\"deviceId\":\"x509-self\","
                             "\"authentication\":{\"type\":\"selfSigned\",\"x509Thumbprint\":"
                             "{\"primaryThumbprint\":\"%s\"}}}",
                             tp);
    cJSON_Delete(d);
    d = it_control_ok(svc, "{\"command\":\"createDevice\",\"deviceId\":\"x509-ca\","
                           "\"authentication\":{\"type\":\"certificateAuthority\"}}");
    cJSON_Delete(d);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    it_client_close(svc);
    struct fx_cert *all[] = {&ca, &self, &expired, &leaf, &wrong_cn, &foreign_ca, &foreign};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        fx_free(all[i]);
    char *files[] = {self_cert, self_key,      expired_cert, expired_key,  leaf_cert,
                     leaf_key,  wrong_cn_cert, wrong_cn_key, foreign_cert, foreign_key};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        free(files[i]);
    return it_hub_stop(&hub);
}

/* An X.509 device (module_id NULL) or module over TLS: no password. */
static struct it_client *x509_identity(const char *id, const char *module_id, const char *cert,
                                       const char *key, int *connack)
{
    char *user = it_device_username(hub.hub_name, id, module_id);
    char *cid = module_id ? it_strdupf("%s/%s", id, module_id) : it_strdupf("%s", id);
    struct it_connect_opts o = {
        .client_id = cid, .username = user, .tls = true, .cert_file = cert, .key_file = key};
    struct it_client *c = it_client_connect(&hub, &o, connack);
    free(user);
    free(cid);
    return c;
}

static struct it_client *x509_device(const char *id, const char *cert, const char *key,
                                     int *connack)
{
    return x509_identity(id, NULL, cert, key, connack);
}

/* The `refused` event for `id`, whose reason must hold `why`. */
static void expect_refused(const char *id, const char *why)
{
    char *topic = it_strdupf("$twinhub/events/refused/%s", id);
    struct it_msg *m = it_client_wait_prefix(svc, "$twinhub/events/", IT_WAIT_MS);
    while (m && strcmp(m->topic, topic) != 0) {
        it_msg_free(m);
        m = it_client_wait_prefix(svc, "$twinhub/events/", IT_WAIT_MS);
    }
    assert_non_null(m);
    cJSON *ev = it_msg_json(m);
    const cJSON *reason = it_json_get(ev, "data.reason");
    assert_true(cJSON_IsString(reason));
    if (!strstr(reason->valuestring, why))
        fail_msg("reason '%s' does not say '%s'", reason->valuestring, why);
    cJSON_Delete(ev);
    it_msg_free(m);
    free(topic);
}

/* Twin GET and one telemetry message, whose auth method must say x509Certificate. */
static void works(struct it_client *c, const char *id)
{
    assert_int_equal(it_client_subscribe(c, "$iothub/twin/res/#", 1, IT_WAIT_MS), 1);
    int status;
    struct it_msg *m = it_twin_request(c, "x1", NULL, &status);
    assert_non_null(m);
    assert_int_equal(status, 200);
    it_msg_free(m);
    char *topic = it_strdupf("devices/%s/messages/events/", id);
    assert_true(it_client_publish_acked(c, topic, "{\"t\":1}", IT_WAIT_MS));
    char *ev_topic = it_strdupf("$twinhub/events/telemetry/%s", id);
    m = it_client_wait_topic(svc, ev_topic, IT_WAIT_MS);
    assert_non_null(m);
    cJSON *ev = it_msg_json(m);
    const cJSON *method = cJSON_GetObjectItemCaseSensitive(it_json_get(ev, "data.systemProperties"),
                                                           "iothub-connection-auth-method");
    assert_true(cJSON_IsString(method));
    assert_string_equal(
        method->valuestring,
        "{\"scope\":\"device\",\"type\":\"x509Certificate\",\"issuer\":\"external\","
        "\"acceptingIpFilterRule\":null}");
    cJSON_Delete(ev);
    it_msg_free(m);
    free(topic);
    free(ev_topic);
}

static void test_x509_self_signed_succeeds(void **state)
{
    (void)state;
    int connack;
    struct it_client *c = x509_device("x509-self", self_cert, self_key, &connack);
    assert_int_equal(connack, 0);
    works(c, "x509-self");
    /* A certificate has no token to run out: the hub's expiry scan (every 200 ms) must leave
     * the connection alone (it closed X.509 connections as expired tokens once). */
    assert_false(it_client_wait_disconnect(c, 1000));
    assert_true(it_client_is_connected(c));
    it_client_close(c);
}

static void test_x509_wrong_thumbprint_fails(void **state)
{
    (void)state;
    int connack;
    /* The CA-signed leaf is a valid certificate, but not the registered one. */
    struct it_client *c = x509_device("x509-self", leaf_cert, leaf_key, &connack);
    assert_int_equal(connack, 5);
    it_client_close(c);
    expect_refused("x509-self", "thumbprint");
}

static void test_x509_expired_fails(void **state)
{
    (void)state;
    int connack;
    struct it_client *c = x509_device("x509-self", expired_cert, expired_key, &connack);
    assert_int_equal(connack, 5);
    it_client_close(c);
    expect_refused("x509-self", "expired");
}

static void test_x509_ca_signed_after_verify_succeeds(void **state)
{
    (void)state;
    char *pem = fx_pem(&ca, false), *esc = it_strdupf("%s", pem);
    /* JSON-escape the newlines */
    size_t n = 0;
    char *json = malloc(2 * strlen(pem) + 1);
    for (const char *p = pem; *p; p++) {
        if (*p == '\n') {
            json[n++] = '\\';
            json[n++] = 'n';
        } else {
            json[n++] = *p;
        }
    }
    json[n] = '\0';
    cJSON *d = it_control_ok(svc,
                             "{\"command\":\"putCertificate\",\"name\":\"it-root\","
                             "\"certificate\":\"%s\"}",
                             json);
    cJSON_Delete(d);

    /* Unverified: refused, naming the CA. */
    int connack;
    struct it_client *c = x509_device("x509-ca", leaf_cert, leaf_key, &connack);
    assert_int_equal(connack, 5);
    it_client_close(c);
    expect_refused("x509-ca", "not verified");

    /* Proof of possession. */
    d = it_control_ok(svc, "{\"command\":\"generateVerificationCode\",\"name\":\"it-root\","
                           "\"ifMatch\":\"*\"}");
    const cJSON *code = it_json_get(d, "properties.verificationCode");
    assert_true(cJSON_IsString(code));
    struct fx_cert proof = fx_make(code->valuestring, &ca, false, -60, DAY);
    cJSON_Delete(d);
    char *ppem = fx_pem(&proof, false);
    n = 0;
    char *pjson = malloc(2 * strlen(ppem) + 1);
    for (const char *p = ppem; *p; p++) {
        if (*p == '\n') {
            pjson[n++] = '\\';
            pjson[n++] = 'n';
        } else {
            pjson[n++] = *p;
        }
    }
    pjson[n] = '\0';
    d = it_control_ok(svc,
                      "{\"command\":\"verifyCertificate\",\"name\":\"it-root\",\"ifMatch\":\"*\","
                      "\"certificate\":\"%s\"}",
                      pjson);
    assert_true(cJSON_IsTrue(it_json_get(d, "properties.isVerified")));
    cJSON_Delete(d);

    c = x509_device("x509-ca", leaf_cert, leaf_key, &connack);
    assert_int_equal(connack, 0);
    works(c, "x509-ca");
    it_client_close(c);

    /* Verified CA, but the certificate's CN is not the device id. */
    c = x509_device("x509-ca", wrong_cn_cert, wrong_cn_key, &connack);
    assert_int_equal(connack, 5);
    it_client_close(c);
    expect_refused("x509-ca", "CN 'someone-else'");

    /* Signed by a CA the hub does not know. */
    c = x509_device("x509-ca", foreign_cert, foreign_key, &connack);
    assert_int_equal(connack, 5);
    it_client_close(c);
    expect_refused("x509-ca", "does not chain");

    fx_free(&proof);
    free(ppem);
    free(pjson);
    free(json);
    free(esc);
    free(pem);
}

/* Modules: selfSigned by thumbprint; certificateAuthority with CN "{deviceId}/{moduleId}". */
static void test_x509_modules_succeeds(void **state)
{
    (void)state;
    char tp[41];
    fx_thumb(&self, false, tp);
    cJSON *d = it_control_ok(svc,
                             "{\"command\":\"createModule\",\"deviceId\":\"x509-self\","
                             "\"moduleId\":\"m-self\",\"authentication\":{\"type\":\"selfSigned\","
                             "\"x509Thumbprint\":{\"primaryThumbprint\":\"%s\"}}}",
                             tp);
    cJSON_Delete(d);
    d = it_control_ok(svc, "{\"command\":\"createModule\",\"deviceId\":\"x509-ca\","
                           "\"moduleId\":\"m-ca\",\"authentication\":{\"type\":"
                           "\"certificateAuthority\"}}");
    cJSON_Delete(d);
    int connack;
    struct it_client *c = x509_identity("x509-self", "m-self", self_cert, self_key, &connack);
    assert_int_equal(connack, 0);
    assert_int_equal(it_client_subscribe(c, "$iothub/twin/res/#", 1, IT_WAIT_MS), 1);
    int status;
    struct it_msg *m = it_twin_request(c, "m1", NULL, &status);
    assert_non_null(m);
    assert_int_equal(status, 200);
    it_msg_free(m);
    it_client_close(c);

    /* The CA (verified by the test before) signs "x509-ca/m-ca"; the device's own CN is not
     * the module's. */
    struct fx_cert mod = fx_make("x509-ca/m-ca", &ca, false, -60, DAY);
    char *mcert, *mkey;
    write_pair(&mod, "module-ca", &mcert, &mkey);
    c = x509_identity("x509-ca", "m-ca", mcert, mkey, &connack);
    assert_int_equal(connack, 0);
    assert_true(it_client_publish_acked(c, "devices/x509-ca/modules/m-ca/messages/events/",
                                        "{}", IT_WAIT_MS));
    m = it_client_wait_topic(svc, "$twinhub/events/telemetry/x509-ca/m-ca", IT_WAIT_MS);
    assert_non_null(m);
    cJSON *ev = it_msg_json(m);
    const cJSON *method = cJSON_GetObjectItemCaseSensitive(
        it_json_get(ev, "data.systemProperties"), "iothub-connection-auth-method");
    assert_true(cJSON_IsString(method));
    assert_non_null(strstr(method->valuestring, "\"scope\":\"module\",\"type\":\"x509Certificate\""));
    cJSON_Delete(ev);
    it_msg_free(m);
    it_client_close(c);
    c = x509_identity("x509-ca", "m-ca", leaf_cert, leaf_key, &connack);
    assert_int_equal(connack, 5);
    it_client_close(c);
    expect_refused("x509-ca/m-ca", "'x509-ca/m-ca'");
    fx_free(&mod);
    free(mcert);
    free(mkey);
}

static void test_x509_sas_device_same_port_succeeds(void **state)
{
    (void)state;
    char *user = it_device_username(hub.hub_name, IT_DEV1, NULL);
    char *pass = it_device_token(hub.hub_name, IT_DEV1, NULL, IT_DEV1_KEY, it_expiry());
    struct it_connect_opts o = {
        .client_id = IT_DEV1, .username = user, .password = pass, .tls = true};
    int connack;
    struct it_client *c = it_client_connect(&hub, &o, &connack);
    assert_int_equal(connack, 0);
    it_client_close(c);
    /* A SAS device that presents a certificate with its token: the token decides. */
    o.cert_file = self_cert;
    o.key_file = self_key;
    c = it_client_connect(&hub, &o, &connack);
    assert_int_equal(connack, 0);
    it_client_close(c);
    free(user);
    free(pass);
}

static void test_x509_sas_device_with_certificate_only_fails(void **state)
{
    (void)state;
    int connack;
    struct it_client *c = x509_device(IT_DEV1, self_cert, self_key, &connack);
    assert_int_equal(connack, 5);
    it_client_close(c);
    expect_refused(IT_DEV1, "'sas'");
}

static void test_x509_forged_credential_on_plain_port_fails(void **state)
{
    (void)state;
    /* A client that writes the front's credential itself, with a secret it guessed. */
    size_t len, clen;
    unsigned char *der = fx_der(&self, &len);
    struct th_x509_der d = {der, len};
    static const uint8_t guess[TH_X509_SECRET_LEN] = {0};
    char *user = it_device_username(hub.hub_name, "x509-self", NULL);
    char cred[8192];
    assert_int_equal(th_x509_cred_build(guess, sizeof guess, (const uint8_t *)"x509-self", 9,
                                        (const uint8_t *)user, strlen(user), &d, 1, cred,
                                        sizeof cred - 1, &clen),
                     TH_OK);
    cred[clen] = '\0';
    struct it_connect_opts o = {.client_id = "x509-self", .username = user, .password = cred};
    int connack;
    struct it_client *c = it_client_connect(&hub, &o, &connack);
    assert_int_equal(connack, 5);
    it_client_close(c);
    expect_refused("-", "not made by this hub's TLS front");
    OPENSSL_free(der);
    free(user);
}

/* A client that opens the MQTT/TLS port and says nothing is closed after 10 s (not kept). */
static void test_x509_front_silent_client_closed_succeeds(void **state)
{
    (void)state;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)hub.mqtts_port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    struct pollfd p = {fd, POLLIN, 0};
    /* The plugin has the TLS shim sweep every 200 ms; mosquitto sees the shut-down socket:
     * closed between 10 and about 11.5 s after the accept (mosquitto alone: 90 s). */
    assert_int_equal(poll(&p, 1, 20000), 1);
    char b;
    assert_int_equal(recv(fd, &b, 1, 0), 0);
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_x509_self_signed_succeeds),
        cmocka_unit_test(test_x509_wrong_thumbprint_fails),
        cmocka_unit_test(test_x509_expired_fails),
        cmocka_unit_test(test_x509_ca_signed_after_verify_succeeds),
        cmocka_unit_test(test_x509_modules_succeeds),
        cmocka_unit_test(test_x509_sas_device_same_port_succeeds),
        cmocka_unit_test(test_x509_sas_device_with_certificate_only_fails),
        cmocka_unit_test(test_x509_forged_credential_on_plain_port_fails),
        cmocka_unit_test(test_x509_front_silent_client_closed_succeeds),
    };
    return cmocka_run_group_tests_name("it_x509", tests, group_setup, group_teardown);
}
