/*
 * it_dps_x509.c - X.509 attestation in the provisioning service over MQTT
 * through `twinhub serve`'s MQTT/TLS port (the TLS shim), against the real broker and plugin
 * (docs/dps.md, "X.509 attestation"): a device presents its certificate and
 * no password with the DPS username; an individual enrollment matches by
 * the certificate, a group by its signing certificate; the device made is
 * selfSigned with the leaf's thumbprint and then connects to the hub with
 * the same certificate; refusals come in-band as 401.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <mosquitto.h>

#include "dps.h"
#include "harness.h"
#include "x509_fixture.h"

#define DAY 86400L
#define RES "$dps/registrations/res/"

static struct it_hub hub;
static struct it_client *svc;
static struct fx_cert root, ind, member, stranger, wrong_cn;
static char *files[10];

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

/* {"certificate": PEM} as JSON text (malloc'd). */
static char *cert_member(const struct fx_cert *c)
{
    char *pem = fx_pem(c, false);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "certificate", pem);
    char *out = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    free(pem);
    return out;
}

static int group_setup(void **state)
{
    (void)state;
    if (it_hub_start(&hub) != 0)
        return -1;
    root = fx_make("it-dps-root", NULL, true, -60, DAY);
    ind = fx_make("it-x509-ind", NULL, false, -60, DAY);
    member = fx_make("it-x509-member", &root, false, -60, DAY);
    stranger = fx_make("it-x509-member", NULL, false, -60, DAY);
    wrong_cn = fx_make("someone-else", &root, false, -60, DAY);
    write_pair(&ind, "ind", &files[0], &files[1]);
    write_pair(&member, "member", &files[2], &files[3]);
    write_pair(&stranger, "stranger", &files[4], &files[5]);
    write_pair(&wrong_cn, "wrongcn", &files[6], &files[7]);
    svc = it_service_open(&hub, true);
    char *ci = cert_member(&ind), *cr = cert_member(&root);
    cJSON *d = it_control_ok(svc,
                             "{\"command\":\"dpsPut\",\"collection\":\"enrollments\",\"id\":"
                             "\"it-x509-ind\",\"body\":{\"attestation\":{\"type\":\"x509\","
                             "\"x509\":{\"clientCertificates\":{\"primary\":%s}}},"
                             "\"initialTwin\":{\"tags\":{\"kind\":\"x509\"}}}}",
                             ci);
    cJSON_Delete(d);
    d = it_control_ok(svc,
                      "{\"command\":\"dpsPut\",\"collection\":\"enrollmentGroups\",\"id\":"
                      "\"it-x509-fleet\",\"body\":{\"attestation\":{\"type\":\"x509\","
                      "\"x509\":{\"signingCertificates\":{\"primary\":%s}}}}}",
                      cr);
    cJSON_Delete(d);
    free(ci);
    free(cr);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    it_client_close(svc);
    struct fx_cert *all[] = {&root, &ind, &member, &stranger, &wrong_cn};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        fx_free(all[i]);
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        free(files[i]);
    return it_hub_stop(&hub);
}

static const char *scope(void)
{
    static char s[TH_DPS_ID_SCOPE_MAX + 1];
    if (!s[0]) {
        cJSON *d = it_control_ok(svc, "{\"command\":\"dpsInfo\"}");
        snprintf(s, sizeof s, "%s", it_json_str(d, "idScope"));
        cJSON_Delete(d);
    }
    return s;
}

/* A registering client over the TLS front with a certificate and no password, subscribed. */
static struct it_client *dps_x509_open(const char *rid, const char *cert, const char *key)
{
    int connack;
    char user[512];
    snprintf(user, sizeof user, "%s/registrations/%s/api-version=2019-03-31&ClientVersion=it",
             scope(), rid);
    struct it_connect_opts o = {
        .client_id = rid, .username = user, .tls = true, .cert_file = cert, .key_file = key};
    struct it_client *c = it_client_connect(&hub, &o, &connack);
    assert_int_equal(connack, 0);
    assert_int_equal(it_client_subscribe(c, RES "#", 1, IT_WAIT_MS), 1);
    return c;
}

static struct it_msg *request(struct it_client *c, const char *rid, const char *op,
                              const char *body, int *status)
{
    char topic[512];
    if (op)
        snprintf(topic, sizeof topic, TH_DPS_TOPIC_STATUS "?$rid=%s&operationId=%s", rid, op);
    else
        snprintf(topic, sizeof topic, TH_DPS_TOPIC_REGISTER "?$rid=%s", rid);
    assert_int_equal(it_client_publish_str(c, topic, body, 1), MOSQ_ERR_SUCCESS);
    struct it_msg *m = it_client_wait_prefix(c, RES, IT_WAIT_MS);
    assert_non_null(m);
    *status = atoi(m->topic + strlen(RES));
    return m;
}

/* Register and poll; the final answer's JSON (caller frees). */
static cJSON *register_and_poll(struct it_client *c, const char *rid)
{
    int status;
    char body[256];
    snprintf(body, sizeof body, "{\"registrationId\":\"%s\"}", rid);
    struct it_msg *m = request(c, "1", NULL, body, &status);
    assert_int_equal(status, 202);
    cJSON *j = it_msg_json(m);
    char op[96];
    snprintf(op, sizeof op, "%s", it_json_str(j, "operationId"));
    cJSON_Delete(j);
    it_msg_free(m);
    m = request(c, "2", op, " ", &status);
    assert_int_equal(status, 200);
    j = it_msg_json(m);
    it_msg_free(m);
    assert_string_equal(it_json_str(j, "status"), "assigned");
    return j;
}

/* The device connects to the hub through the front with the same certificate. */
static void hub_connects(const char *id, const char *cert, const char *key)
{
    int connack;
    char *user = it_device_username(hub.hub_name, id, NULL);
    struct it_connect_opts o = {
        .client_id = id, .username = user, .tls = true, .cert_file = cert, .key_file = key};
    struct it_client *c = it_client_connect(&hub, &o, &connack);
    assert_int_equal(connack, 0);
    it_client_close(c);
    free(user);
}

static void test_dps_x509_individual_succeeds(void **state)
{
    (void)state;
    struct it_client *c = dps_x509_open("it-x509-ind", files[0], files[1]);
    cJSON *j = register_and_poll(c, "it-x509-ind");
    assert_string_equal(it_json_str(j, "registrationState.deviceId"), "it-x509-ind");
    assert_string_equal(it_json_str(j, "registrationState.assignedHub"), hub.hub_name);
    cJSON_Delete(j);
    it_client_close(c);
    cJSON *d = it_control_ok(svc, "{\"command\":\"getDevice\",\"deviceId\":\"it-x509-ind\"}");
    assert_string_equal(it_json_str(d, "authentication.type"), "selfSigned");
    char tp[65];
    fx_thumb(&ind, true, tp);
    assert_string_equal(it_json_str(d, "authentication.x509Thumbprint.primaryThumbprint"), tp);
    cJSON_Delete(d);
    hub_connects("it-x509-ind", files[0], files[1]);
}

static void test_dps_x509_group_succeeds(void **state)
{
    (void)state;
    struct it_client *c = dps_x509_open("it-x509-member", files[2], files[3]);
    cJSON *j = register_and_poll(c, "it-x509-member");
    assert_string_equal(it_json_str(j, "registrationState.deviceId"), "it-x509-member");
    assert_string_equal(it_json_str(j, "registrationState.x509.enrollmentGroupId"),
                        "it-x509-fleet");
    cJSON_Delete(j);
    it_client_close(c);
    hub_connects("it-x509-member", files[2], files[3]);
}

/* Refused in-band with 401 and a reason naming the cause. */
static void refused(const char *rid, const char *cert, const char *key, const char *why)
{
    int status;
    char body[256];
    struct it_client *c = dps_x509_open(rid, cert, key);
    snprintf(body, sizeof body, "{\"registrationId\":\"%s\"}", rid);
    struct it_msg *m = request(c, "1", NULL, body, &status);
    assert_int_equal(status, 401);
    cJSON *j = it_msg_json(m);
    assert_int_equal((int)it_json_num(j, "errorCode", 0), TH_DPS_EC_UNAUTHORIZED);
    if (!strstr(it_json_str(j, "message"), why))
        fail_msg("message '%s' does not say '%s'", it_json_str(j, "message"), why);
    cJSON_Delete(j);
    it_msg_free(m);
    it_client_close(c);
}

static void test_dps_x509_refusals_fails(void **state)
{
    (void)state;
    /* Not signed by the group's CA. */
    refused("it-x509-member", files[4], files[5], "does not chain");
    /* The CN is not the registration id. */
    refused("it-x509-member", files[6], files[7], "subject CN 'someone-else'");
    /* An individual enrollment's registration id with another certificate. */
    refused("it-x509-member", files[0], files[1], "subject CN 'it-x509-ind'");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dps_x509_individual_succeeds),
        cmocka_unit_test(test_dps_x509_group_succeeds),
        cmocka_unit_test(test_dps_x509_refusals_fails),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
