/*
 * it_dps.c - the provisioning service over MQTT against the real broker +
 * plugin (docs/dps.md): enrollments made with the control API, the DPS
 * username, the register request and its 202 with operationId and
 * retry-after, the operation status with the registrationState, the device
 * the registration made (keys, initial twin), the registration event, and the
 * refusals in-band (wrong key, disabled enrollment, unknown registration,
 * unknown operation) and on the connection (another ID scope, a foreign topic,
 * a foreign subscription).
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

#include "dps.h"
#include "harness.h"
#include "sas.h"

#define IND "it-dps-ind"
#define IND_DEVICE "it-dps-device"
#define IND_KEY "dHdpbmh1Yi1pbnRlZ3JhdGlvbi1kcHMxLWtleS0wMDE="
#define GROUP "it-dps-fleet"
#define GROUP_KEY "dHdpbmh1Yi1pbnRlZ3JhdGlvbi1ncnAxLWtleS0wMDE="
#define OFF "it-dps-off"
#define RES "$dps/registrations/res/"

static struct it_hub hub;
static struct it_client *svc;

static int group_setup(void **state)
{
    (void)state;
    if (it_hub_start(&hub) != 0) {
        return -1;
    }
    svc = it_service_open(&hub, true);
    cJSON *d = it_control_ok(
        svc, "{\"command\":\"dpsPut\",\"collection\":\"enrollments\",\"id\":\"" IND "\",\"body\":{"
             "\"deviceId\":\"" IND_DEVICE "\",\"attestation\":{\"type\":\"symmetricKey\","
             "\"symmetricKey\":{\"primaryKey\":\"" IND_KEY "\"}},\"initialTwin\":{\"tags\":{"
             "\"site\":\"lab\"},\"properties\":{\"desired\":{\"rate\":5}}}}}");
    cJSON_Delete(d);
    d = it_control_ok(svc, "{\"command\":\"dpsPut\",\"collection\":\"enrollmentGroups\",\"id\":"
                           "\"" GROUP "\",\"body\":{\"attestation\":{\"type\":\"symmetricKey\","
                           "\"symmetricKey\":{\"primaryKey\":\"" GROUP_KEY "\"}}}}");
    cJSON_Delete(d);
    d = it_control_ok(svc, "{\"command\":\"dpsPut\",\"collection\":\"enrollments\",\"id\":\"" OFF
                           "\",\"body\":{\"provisioningStatus\":\"disabled\",\"attestation\":{"
                           "\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":\"" IND_KEY
                           "\"}}}}");
    cJSON_Delete(d);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    it_client_close(svc);
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

/* A registering client with `client_id` (NULL: the registration id, as the SDKs connect), over
 * the TLS front (`tls`) or the broker's plain port; subscribed when accepted. */
static struct it_client *dps_connect(const struct it_hub *h, const char *id_scope, const char *rid,
                                     const char *client_id, const char *key, bool tls,
                                     int *connack)
{
    char user[512], res[400], tok[1024];
    snprintf(user, sizeof user, "%s/registrations/%s/api-version=2019-03-31&ClientVersion=it_dps",
             id_scope, rid);
    snprintf(res, sizeof res, "%s/registrations/%s", id_scope, rid);
    assert_int_equal(th_sas_sign(res, key, it_expiry(), "registration", tok, sizeof tok), TH_OK);
    struct it_connect_opts o = {
        .client_id = client_id ? client_id : rid, .username = user, .password = tok, .tls = tls};
    struct it_client *c = it_client_connect(h, &o, connack);
    if (*connack == 0) {
        assert_int_equal(it_client_subscribe(c, RES "#", 1, IT_WAIT_MS), 1);
    }
    return c;
}

/* A registering client as the SDKs connect, to hub `h`: client id = registration id; subscribed. */
static struct it_client *dps_open_on(const struct it_hub *h, const char *id_scope, const char *rid,
                                     const char *key, int *connack)
{
    char user[512], res[400], tok[1024];
    snprintf(user, sizeof user, "%s/registrations/%s/api-version=2019-03-31&ClientVersion=it_dps",
             id_scope, rid);
    snprintf(res, sizeof res, "%s/registrations/%s", id_scope, rid);
    assert_int_equal(th_sas_sign(res, key, it_expiry(), "registration", tok, sizeof tok), TH_OK);
    struct it_connect_opts o = {.client_id = rid, .username = user, .password = tok};
    struct it_client *c = it_client_connect(h, &o, connack);
    if (*connack == 0) {
        assert_int_equal(it_client_subscribe(c, RES "#", 1, IT_WAIT_MS), 1);
    }
    return c;
}

static struct it_client *dps_open(const char *id_scope, const char *rid, const char *key,
                                  int *connack)
{
    return dps_open_on(&hub, id_scope, rid, key, connack);
}

/* Publish a request with $rid and wait for the answer with that rid; *status from the topic. */
static struct it_msg *request(struct it_client *c, const char *rid, const char *op,
                              const char *body, int *status)
{
    char topic[512];
    if (op) {
        snprintf(topic, sizeof topic, TH_DPS_TOPIC_STATUS "?$rid=%s&operationId=%s", rid, op);
    } else {
        snprintf(topic, sizeof topic, TH_DPS_TOPIC_REGISTER "?$rid=%s", rid);
    }
    assert_int_equal(it_client_publish_str(c, topic, body, 1), MOSQ_ERR_SUCCESS);
    struct it_msg *m = it_client_wait_prefix(c, RES, IT_WAIT_MS);
    assert_non_null(m);
    char *got = it_topic_param(m->topic, "$rid");
    assert_non_null(got);
    assert_string_equal(got, rid);
    free(got);
    *status = atoi(m->topic + strlen(RES));
    return m;
}

/* Register and poll as the SDK does; returns the final answer's JSON (caller frees). */
static cJSON *register_and_poll(struct it_client *c, const char *rid, const char *payload)
{
    int status;
    char body[256];
    snprintf(body, sizeof body, "{\"registrationId\":\"%s\",\"payload\":%s}", rid, payload);
    struct it_msg *m = request(c, "1", NULL, body, &status);
    assert_int_equal(status, 202);
    char *retry = it_topic_param(m->topic, "retry-after");
    assert_non_null(retry);
    assert_string_equal(retry, "1");
    free(retry);
    cJSON *j = it_msg_json(m);
    assert_string_equal(it_json_str(j, "status"), "assigning");
    char op[96];
    snprintf(op, sizeof op, "%s", it_json_str(j, "operationId"));
    cJSON_Delete(j);
    it_msg_free(m);
    m = request(c, "2", op, " ", &status);
    assert_int_equal(status, 200);
    j = it_msg_json(m);
    it_msg_free(m);
    assert_string_equal(it_json_str(j, "operationId"), op);
    assert_string_equal(it_json_str(j, "status"), "assigned");
    return j;
}

static void test_dps_register_individual_succeeds(void **state)
{
    int connack;
    (void)state;
    struct it_client *c = dps_open(scope(), IND, IND_KEY, &connack);
    assert_int_equal(connack, 0);
    cJSON *j = register_and_poll(c, IND, "{\"fw\":\"1.2\"}");
    assert_string_equal(it_json_str(j, "registrationState.deviceId"), IND_DEVICE);
    assert_string_equal(it_json_str(j, "registrationState.assignedHub"), hub.hub_name);
    assert_string_equal(it_json_str(j, "registrationState.status"), "assigned");
    assert_string_equal(it_json_str(j, "registrationState.substatus"), "initialAssignment");
    assert_string_equal(it_json_str(j, "registrationState.payload.fw"), "1.2");
    cJSON_Delete(j);
    it_client_close(c);

    /* The device exists with the enrollment's key and its initial twin. */
    struct it_client *dev = it_device_open(&hub, IND_DEVICE, NULL, IND_KEY);
    it_client_close(dev);
    cJSON *t = it_control_ok(svc, "{\"command\":\"getTwin\",\"deviceId\":\"" IND_DEVICE "\"}");
    assert_string_equal(it_json_str(t, "tags.site"), "lab");
    assert_int_equal(it_json_num(t, "properties.desired.rate", 0), 5);
    cJSON_Delete(t);
    cJSON *ev = it_event_wait(svc, "registration", IND_DEVICE, NULL, NULL, NULL, IT_WAIT_MS);
    assert_non_null(ev);
    assert_string_equal(it_json_str(ev, "data.registrationId"), IND);
    assert_string_equal(it_json_str(ev, "data.transport"), "mqtt");
    assert_string_equal(it_json_str(ev, "data.payload.fw"), "1.2");
    cJSON_Delete(ev);
    /* The service API's view of the registration. */
    cJSON *r = it_control_ok(svc, "{\"command\":\"dpsGet\",\"collection\":\"registrations\","
                                  "\"id\":\"" IND "\"}");
    assert_string_equal(it_json_str(r, "deviceId"), IND_DEVICE);
    cJSON_Delete(r);
}

static void test_dps_register_group_member_derived_key_succeeds(void **state)
{
    int connack;
    char derived[64];
    (void)state;
    assert_int_equal(th_dps_derive_key(GROUP_KEY, "it-member-1", derived, sizeof derived), TH_OK);
    struct it_client *c = dps_open(scope(), "it-member-1", derived, &connack);
    assert_int_equal(connack, 0);
    cJSON *j = register_and_poll(c, "it-member-1", "null");
    assert_string_equal(it_json_str(j, "registrationState.deviceId"), "it-member-1");
    assert_string_equal(it_json_str(j, "registrationState.symmetricKey.enrollmentGroupId"), GROUP);
    cJSON_Delete(j);
    it_client_close(c);
    struct it_client *dev = it_device_open(&hub, "it-member-1", NULL, derived);
    it_client_close(dev);
}

/* A refusal in-band: the status, errorCode 401002 and a message holding `word`. */
static void expect_refused(const char *rid, const char *key, int want, const char *word)
{
    int connack, status;
    struct it_client *c = dps_open(scope(), rid, key, &connack);
    assert_int_equal(connack, 0);
    struct it_msg *m = request(c, "9", NULL, "{}", &status);
    assert_int_equal(status, want);
    cJSON *j = it_msg_json(m);
    assert_int_equal(it_json_num(j, "errorCode", 0), want == 401 ? TH_DPS_EC_UNAUTHORIZED : 0);
    assert_non_null(strstr(it_json_str(j, "message"), word));
    assert_non_null(it_json_str(j, "trackingId"));
    cJSON_Delete(j);
    it_msg_free(m);
    it_client_close(c);
}

/*
 * A group member registers again through the TLS front while its device is connected to the hub
 * with client id = device id = registration id: the front gives the registration the client id
 * "~dps/{registrationId}", so the device's session is not taken over (docs/dps.md).
 */
static void test_dps_register_while_device_connected_keeps_session_succeeds(void **state)
{
    int connack;
    char derived[64];
    (void)state;
    assert_int_equal(th_dps_derive_key(GROUP_KEY, "it-member-tls", derived, sizeof derived), TH_OK);
    struct it_client *c = dps_connect(&hub, scope(), "it-member-tls", NULL, derived, true, &connack);
    assert_int_equal(connack, 0);
    cJSON *j = register_and_poll(c, "it-member-tls", "null");
    cJSON_Delete(j);
    it_client_close(c);

    struct it_client *dev = it_device_open(&hub, "it-member-tls", NULL, derived);
    assert_int_equal(it_client_subscribe(dev, "$iothub/twin/res/#", 1, IT_WAIT_MS), 1);
    c = dps_connect(&hub, scope(), "it-member-tls", NULL, derived, true, &connack);
    assert_int_equal(connack, 0);
    j = register_and_poll(c, "it-member-tls", "{\"again\":true}");
    assert_string_equal(it_json_str(j, "registrationState.deviceId"), "it-member-tls");
    assert_string_equal(it_json_str(j, "registrationState.substatus"), "deviceDataMigrated");
    cJSON_Delete(j);
    it_client_close(c);

    /* The device's session lived through it: still connected, and its twin GET is answered. */
    assert_true(it_client_is_connected(dev));
    int status;
    struct it_msg *m = it_twin_request(dev, "t1", NULL, &status);
    assert_non_null(m);
    assert_int_equal(status, 200);
    it_msg_free(m);
    assert_true(it_client_is_connected(dev));
    it_client_close(dev);
}

/* On the plain port a registering client's id must be its registration id or "~dps/" + it. */
static void test_dps_connect_client_id_fails(void **state)
{
    int connack;
    char derived[64];
    (void)state;
    assert_int_equal(th_dps_derive_key(GROUP_KEY, "it-member-cid", derived, sizeof derived), TH_OK);
    struct it_client *c =
        dps_connect(&hub, scope(), "it-member-cid", "~dps/it-member-cid", derived, false, &connack);
    assert_int_equal(connack, 0);
    it_client_close(c);
    c = dps_connect(&hub, scope(), "it-member-cid", "~dps/it-member-1", derived, false, &connack);
    assert_int_equal(connack, 5);
    it_client_close(c);
    c = dps_connect(&hub, scope(), "it-member-cid", "it-member-1", derived, false, &connack);
    assert_int_equal(connack, 5);
    it_client_close(c);
}

static void test_dps_register_wrong_key_fails(void **state)
{
    (void)state;
    expect_refused(IND, GROUP_KEY, 401, "not signed with a key");
}

static void test_dps_register_disabled_enrollment_fails(void **state)
{
    (void)state;
    expect_refused(OFF, IND_KEY, 401, "disabled");
}

static void test_dps_register_unknown_registration_fails(void **state)
{
    (void)state;
    expect_refused("it-nobody", IND_KEY, 401, "no individual enrollment");
}

static void test_dps_operation_status_unknown_operation_fails(void **state)
{
    int connack, status;
    (void)state;
    struct it_client *c = dps_open(scope(), IND, IND_KEY, &connack);
    assert_int_equal(connack, 0);
    struct it_msg *m = request(c, "5", "4.0000000000000099.0", " ", &status);
    assert_int_equal(status, 404);
    it_msg_free(m);
    it_client_close(c);
}

static void test_dps_connect_other_scope_fails(void **state)
{
    int connack;
    (void)state;
    struct it_client *c = dps_open("0neNOTOURS", IND, IND_KEY, &connack);
    assert_int_equal(connack, 5); /* not authorised */
    it_client_close(c);
}

static void test_dps_foreign_subscription_and_topic_fails(void **state)
{
    int connack;
    (void)state;
    struct it_client *c = dps_open(scope(), IND, IND_KEY, &connack);
    assert_int_equal(connack, 0);
    assert_int_equal(it_client_subscribe(c, "$iothub/twin/res/#", 0, IT_WAIT_MS), 0x80);
    assert_int_equal(it_client_publish_str(c, "$iothub/twin/GET/?$rid=1", "", 0), MOSQ_ERR_SUCCESS);
    assert_true(it_client_wait_disconnect(c, IT_WAIT_MS));
    it_client_close(c);
}

/* Enrollments from the registry file's dps section; registrations kept in --state-dir. */
static void test_dps_registry_file_and_state_dir_succeeds(void **state)
{
    struct it_hub h2;
    char dir[] = "/tmp/it-dps-state-XXXXXX", reg[IT_PATH_MAX];
    int connack;
    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(reg, sizeof reg, "%s/registry-dps.json", getenv("IT_SOURCE_DIR"));
    const char *extra[] = {"--state-dir", dir, NULL};
    assert_int_equal(it_hub_start_with(&h2, reg, extra), 0);
    struct it_client *s2 = it_service_open(&h2, false);
    cJSON *g = it_control_ok(s2, "{\"command\":\"dpsGet\",\"collection\":\"enrollmentGroups\","
                                 "\"id\":\"it-file-group\"}");
    assert_string_equal(it_json_str(g, "attestation.x509.caReferences.primary"), "my-ca");
    cJSON_Delete(g);
    struct it_client *c = dps_open_on(&h2, scope(), "it-file-ind",
                                      "dHdpbmh1Yi1pbnRlZ3JhdGlvbi1maWxlLWtleS0wMDE=", &connack);
    assert_int_equal(connack, 0);
    cJSON *j = register_and_poll(c, "it-file-ind", "{\"n\":1}");
    cJSON_Delete(j);
    it_client_close(c);
    it_client_close(s2);
    assert_int_equal(it_hub_stop(&h2), 0);

    /* Again on the same state dir: the enrollment, the registration and the device are back. */
    assert_int_equal(it_hub_start_with(&h2, reg, extra), 0);
    s2 = it_service_open(&h2, false);
    cJSON *r = it_control_ok(s2, "{\"command\":\"dpsGet\",\"collection\":\"registrations\","
                                 "\"id\":\"it-file-ind\"}");
    assert_string_equal(it_json_str(r, "deviceId"), "it-file-ind");
    assert_int_equal(it_json_num(r, "payload.n", 0), 1);
    cJSON_Delete(r);
    cJSON *t = it_control_ok(s2, "{\"command\":\"getTwin\",\"deviceId\":\"it-file-ind\"}");
    assert_string_equal(it_json_str(t, "properties.desired.from"), "file");
    cJSON_Delete(t);
    it_client_close(s2);
    assert_int_equal(it_hub_stop(&h2), 0);
    assert_int_equal(it_rmtree(dir), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dps_register_individual_succeeds),
        cmocka_unit_test(test_dps_register_group_member_derived_key_succeeds),
        cmocka_unit_test(test_dps_register_while_device_connected_keeps_session_succeeds),
        cmocka_unit_test(test_dps_connect_client_id_fails),
        cmocka_unit_test(test_dps_register_wrong_key_fails),
        cmocka_unit_test(test_dps_register_disabled_enrollment_fails),
        cmocka_unit_test(test_dps_register_unknown_registration_fails),
        cmocka_unit_test(test_dps_operation_status_unknown_operation_fails),
        cmocka_unit_test(test_dps_connect_other_scope_fails),
        cmocka_unit_test(test_dps_foreign_subscription_and_topic_fails),
        cmocka_unit_test(test_dps_registry_file_and_state_dir_succeeds),
    };
    return cmocka_run_group_tests_name("it_dps", tests, group_setup, group_teardown);
}
