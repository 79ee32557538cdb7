/*
 * test_dps.c - unit tests for emulator/core/dps.c: key derivation, ids,
 * the MQTT username and topics, enrollments (validation, generated keys,
 * If-Match), attestation (individual, group, wrong key, disabled, X.509),
 * what a registration does to the registry, operation status, queries and
 * the state document.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dps.h"
#include "json.h"
#include "registry.h"
#include "util.h"

#define KEY1 "dHdpbmh1Yi1kZXZlbG9wbWVudC1kcHMta2V5LTAwMDE="
#define KEY2 "dHdpbmh1Yi1kZXZlbG9wbWVudC1kcHMta2V5LTAwMDI="
#define NOW_US INT64_C(1800000000000000)
#define NOW_S (NOW_US / 1000000)

static cJSON *parse(const char *text)
{
    cJSON *doc = NULL;
    assert_int_equal(th_json_parse(text, strlen(text), 65536, 64, &doc, NULL), TH_OK);
    return doc;
}

/* A device's token as the SDKs make it: sr {scope}/registrations/{id}, skn registration. */
static void token(const char *scope, const char *rid, const char *key, char *buf, size_t size)
{
    char res[300];
    snprintf(res, sizeof res, "%s/registrations/%s", scope, rid);
    assert_int_equal(th_sas_sign(res, key, NOW_S + 3600, "registration", buf, size), TH_OK);
}

static void put(struct th_dps *dps, bool group, const char *id, const char *json)
{
    cJSON *body = parse(json);
    struct th_error err = {0};
    th_result r = th_dps_enrollment_put(dps, group, id, body, NULL, NOW_US, NULL, &err);
    if (r != TH_OK) {
        fail_msg("put %s: %s", id, err.message);
    }
    cJSON_Delete(body);
}

/* ---- keys, ids, wire ---- */

static void test_th_dps_derive_key_known_vector_succeeds(void **state)
{
    char out[64];
    (void)state;
    /* base64(HMAC-SHA256(base64decode(KEY1), "dev-1")), computed independently. */
    assert_int_equal(th_dps_derive_key(KEY1, "dev-1", out, sizeof out), TH_OK);
    assert_string_equal(out, "CEuTF5VOUtHl/72kJ7Y0x4RYU6adySgNtUlzApA6ZGw=");
}

static void test_th_dps_derive_key_not_base64_fails(void **state)
{
    char out[64];
    (void)state;
    assert_int_equal(th_dps_derive_key("not base64!", "dev-1", out, sizeof out), TH_ERR_INVAL);
}

static void test_th_dps_registration_id_valid_rules_succeeds(void **state)
{
    (void)state;
    assert_true(th_dps_registration_id_valid("dev-1", 5));
    assert_true(th_dps_registration_id_valid("a.b_c:d-", 8));
    assert_false(th_dps_registration_id_valid("dev.", 4));
    assert_false(th_dps_registration_id_valid("dev/1", 5));
    assert_false(th_dps_registration_id_valid("", 0));
}

static void test_th_dps_username_parse_sdk_username_succeeds(void **state)
{
    char scope[TH_DPS_ID_SCOPE_MAX + 1], rid[TH_MAX_ID_LEN + 1];
    (void)state;
    assert_true(th_dps_username_parse("0ne00000001/registrations/dev-1/api-version=2019-03-31&"
                                      "ClientVersion=azure-iot-provisioning-device%2F1.9.1",
                                      scope, rid));
    assert_string_equal(scope, "0ne00000001");
    assert_string_equal(rid, "dev-1");
}

static void test_th_dps_username_parse_hub_username_fails(void **state)
{
    char scope[TH_DPS_ID_SCOPE_MAX + 1], rid[TH_MAX_ID_LEN + 1];
    (void)state;
    assert_false(th_dps_username_parse("127.0.0.1/dev-1/?api-version=2021-04-12", scope, rid));
    assert_false(th_dps_username_parse("hub", scope, rid));
    assert_false(th_dps_username_parse("a/b/registrations/x/api-version=1", scope, rid));
    /* a device named "registrations" and its module, on host "h" */
    assert_false(th_dps_username_parse("h/registrations/?api-version=2021-04-12", scope, rid));
    assert_false(th_dps_username_parse("h/registrations/m/?api-version=2021-04-12", scope, rid));
    assert_false(th_dps_username_parse("0ne00000001/registrations/dev-1", scope, rid));
}

static void test_th_dps_topic_parse_requests_succeeds(void **state)
{
    struct th_dps_topic t;
    const char *reg = "$dps/registrations/PUT/iotdps-register/?$rid=42";
    const char *st = "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=7&operationId=4.ab";
    (void)state;
    assert_int_equal(th_dps_topic_parse(reg, strlen(reg), &t), TH_OK);
    assert_int_equal(t.kind, TH_DPS_TOPIC_REGISTER_REQ);
    assert_int_equal(t.rid.len, 2);
    assert_memory_equal(t.rid.ptr, "42", 2);
    assert_int_equal(th_dps_topic_parse(st, strlen(st), &t), TH_OK);
    assert_int_equal(t.kind, TH_DPS_TOPIC_STATUS_REQ);
    assert_int_equal(t.operation_id.len, 4);
    assert_memory_equal(t.operation_id.ptr, "4.ab", 4);
}

static void test_th_dps_topic_parse_missing_parts_fails(void **state)
{
    struct th_dps_topic t;
    const char *a = "$dps/registrations/PUT/iotdps-register/?x=1";
    const char *b = "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=7";
    const char *c = "$iothub/twin/GET/?$rid=1";
    (void)state;
    assert_int_equal(th_dps_topic_parse(a, strlen(a), &t), TH_ERR_FORMAT);
    assert_int_equal(th_dps_topic_parse(b, strlen(b), &t), TH_ERR_FORMAT);
    assert_int_equal(th_dps_topic_parse(c, strlen(c), &t), TH_ERR_FORMAT);
}

static void test_th_dps_topic_response_retry_after_succeeds(void **state)
{
    char buf[128];
    (void)state;
    assert_int_equal(th_dps_topic_response(202, (struct th_slice){"r1", 2}, 1, buf, sizeof buf),
                     TH_OK);
    assert_string_equal(buf, "$dps/registrations/res/202/?$rid=r1&retry-after=1");
    assert_int_equal(th_dps_topic_response(401, (struct th_slice){"r1", 2}, -1, buf, sizeof buf),
                     TH_OK);
    assert_string_equal(buf, "$dps/registrations/res/401/?$rid=r1");
}

/* ---- enrollments ---- */

static void test_th_dps_enrollment_put_generates_keys_succeeds(void **state)
{
    struct th_dps *dps = th_dps_new(NULL);
    struct th_dps_enrollment *e = NULL;
    cJSON *body =
        parse("{\"registrationId\":\"dev-1\",\"attestation\":{\"type\":\"symmetricKey\"}}");
    (void)state;
    assert_int_equal(th_dps_enrollment_put(dps, false, "dev-1", body, NULL, NOW_US, &e, NULL),
                     TH_OK);
    assert_true(strlen(e->primary_key) > 40);
    cJSON *doc = th_dps_enrollment_json(dps, e);
    assert_string_equal(th_json_string(doc, "provisioningStatus", ""), "enabled");
    assert_string_equal(th_json_string(doc, "etag", ""), "MQ==");
    assert_string_equal(
        th_json_string(th_json_object(th_json_object(doc, "attestation"), "symmetricKey"),
                       "primaryKey", ""),
        e->primary_key);
    cJSON_Delete(doc);
    cJSON_Delete(body);
    th_dps_free(dps);
}

static void test_th_dps_enrollment_put_keeps_x509_fields_succeeds(void **state)
{
    struct th_dps *dps = th_dps_new(NULL);
    struct th_dps_enrollment *e = NULL;
    cJSON *body = parse("{\"attestation\":{\"type\":\"x509\",\"x509\":{\"clientCertificates\":"
                        "{\"primary\":{\"info\":{\"sha1Thumbprint\":\"0123456789ABCDEF0123456789ABCDEF01234567\"}}}}}}");
    (void)state;
    assert_int_equal(th_dps_enrollment_put(dps, false, "x-1", body, NULL, NOW_US, &e, NULL), TH_OK);
    assert_int_equal(e->attestation, TH_DPS_ATT_X509);
    cJSON *doc = th_dps_enrollment_json(dps, e);
    assert_non_null(cJSON_GetObjectItemCaseSensitive(th_json_object(doc, "attestation"), "x509"));
    cJSON_Delete(doc);
    cJSON_Delete(body);
    th_dps_free(dps);
}

static void test_th_dps_enrollment_put_bad_documents_fails(void **state)
{
    static const char *const bodies[] = {
        "{}",
        "{\"attestation\":{\"type\":\"password\"}}",
        "{\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":\"xx\"}}}",
        "{\"attestation\":{\"type\":\"symmetricKey\"},\"provisioningStatus\":\"off\"}",
        "{\"attestation\":{\"type\":\"symmetricKey\"},\"registrationId\":\"other\"}",
        "{\"attestation\":{\"type\":\"symmetricKey\"},\"initialTwin\":{\"tags\":{\"a.b\":1}}}",
        "{\"attestation\":{\"type\":\"symmetricKey\"},\"reprovisionPolicy\":{\"migrateDeviceData\":"
        "\"yes\"}}",
    };
    struct th_dps *dps = th_dps_new(NULL);
    (void)state;
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        struct th_error err = {0};
        cJSON *body = parse(bodies[i]);
        assert_int_equal(th_dps_enrollment_put(dps, false, "dev-1", body, NULL, NOW_US, NULL, &err),
                         TH_ERR_INVAL);
        assert_int_equal(err.status, 400);
        assert_int_equal(err.code, TH_DPS_EC_BAD_REQUEST);
        cJSON_Delete(body);
    }
    assert_null(th_dps_find(dps, false, "dev-1"));
    th_dps_free(dps);
}

static void test_th_dps_enrollment_put_stale_etag_fails(void **state)
{
    struct th_dps *dps = th_dps_new(NULL);
    struct th_error err = {0};
    cJSON *body = parse("{\"attestation\":{\"type\":\"symmetricKey\"}}");
    (void)state;
    assert_int_equal(th_dps_enrollment_put(dps, true, "g1", body, NULL, NOW_US, NULL, NULL), TH_OK);
    assert_int_equal(th_dps_enrollment_put(dps, true, "g1", body, "\"MQ==\"", NOW_US, NULL, NULL),
                     TH_OK);
    assert_int_equal(th_dps_enrollment_put(dps, true, "g1", body, "MQ==", NOW_US, NULL, &err),
                     TH_ERR_PRECONDITION);
    assert_int_equal(err.status, 412);
    assert_int_equal(th_dps_enrollment_delete(dps, true, "g1", "MQ==", &err), TH_ERR_PRECONDITION);
    assert_int_equal(th_dps_enrollment_delete(dps, true, "g1", "Mg==", &err), TH_OK);
    assert_int_equal(th_dps_enrollment_delete(dps, true, "g1", NULL, &err), TH_ERR_NOT_FOUND);
    assert_int_equal(err.status, 404);
    cJSON_Delete(body);
    th_dps_free(dps);
}

/* ---- attestation and assignment ---- */

static void test_th_dps_attest_individual_and_group_succeeds(void **state)
{
    struct th_dps *dps = th_dps_new(NULL);
    struct th_dps_attest a;
    char tok[512], derived[64];
    (void)state;
    put(dps, false, "dev-1",
        "{\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":\"" KEY1
        "\",\"secondaryKey\":\"" KEY2 "\"}}}");
    put(dps, true, "fleet",
        "{\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":\"" KEY2
        "\",\"secondaryKey\":\"" KEY1 "\"}}}");
    token(dps->id_scope, "dev-1", KEY2, tok, sizeof tok); /* the secondary key works too */
    assert_int_equal(th_dps_attest(dps, dps->id_scope, "dev-1", tok, NOW_S, 0, &a, NULL), TH_OK);
    assert_false(a.enrollment->group);
    assert_string_equal(a.device_key, KEY1);

    assert_int_equal(th_dps_derive_key(KEY2, "member-7", derived, sizeof derived), TH_OK);
    token(dps->id_scope, "member-7", derived, tok, sizeof tok);
    assert_int_equal(th_dps_attest(dps, dps->id_scope, "member-7", tok, NOW_S, 0, &a, NULL), TH_OK);
    assert_true(a.enrollment->group);
    assert_string_equal(a.device_key, derived);
    th_dps_free(dps);
}

static void test_th_dps_attest_refusals_fails(void **state)
{
    struct th_dps *dps = th_dps_new(NULL);
    struct th_dps_attest a;
    struct th_error err = {0};
    char tok[512], derived[64];
    (void)state;
    put(dps, false, "dev-1",
        "{\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":\"" KEY1
        "\"}}}");
    put(dps, false, "off-1",
        "{\"provisioningStatus\":\"disabled\",\"attestation\":{\"type\":\"symmetricKey\","
        "\"symmetricKey\":{\"primaryKey\":\"" KEY1 "\"}}}");
    put(dps, false, "x-1",
        "{\"attestation\":{\"type\":\"x509\",\"x509\":{\"clientCertificates\":{\"primary\":"
        "{\"info\":{\"sha1Thumbprint\":\"0123456789ABCDEF0123456789ABCDEF01234567\"}}}}}}");
    put(dps, true, "offgroup",
        "{\"provisioningStatus\":\"disabled\",\"attestation\":{\"type\":\"symmetricKey\","
        "\"symmetricKey\":{\"primaryKey\":\"" KEY2 "\"}}}");

    token(dps->id_scope, "dev-1", KEY2, tok, sizeof tok); /* wrong key */
    assert_int_equal(th_dps_attest(dps, dps->id_scope, "dev-1", tok, NOW_S, 0, &a, &err),
                     TH_ERR_AUTH);
    assert_int_equal(err.status, 401);
    assert_int_equal(err.code, TH_DPS_EC_UNAUTHORIZED);

    token(dps->id_scope, "off-1", KEY1, tok, sizeof tok);
    assert_int_equal(th_dps_attest(dps, dps->id_scope, "off-1", tok, NOW_S, 0, &a, &err),
                     TH_ERR_DISABLED);
    assert_non_null(strstr(err.message, "disabled"));

    token(dps->id_scope, "x-1", KEY1, tok, sizeof tok);
    assert_int_equal(th_dps_attest(dps, dps->id_scope, "x-1", tok, NOW_S, 0, &a, &err),
                     TH_ERR_AUTH);
    assert_non_null(strstr(err.message, "X.509"));

    assert_int_equal(th_dps_derive_key(KEY2, "m-1", derived, sizeof derived), TH_OK);
    token(dps->id_scope, "m-1", derived, tok, sizeof tok);
    assert_int_equal(th_dps_attest(dps, dps->id_scope, "m-1", tok, NOW_S, 0, &a, &err),
                     TH_ERR_DISABLED);

    token(dps->id_scope, "nobody", KEY1, tok, sizeof tok);
    assert_int_equal(th_dps_attest(dps, dps->id_scope, "nobody", tok, NOW_S, 0, &a, &err),
                     TH_ERR_AUTH);

    token(dps->id_scope, "dev-1", KEY1, tok, sizeof tok); /* a token for another registration */
    assert_int_equal(th_dps_attest(dps, dps->id_scope, "dev-2", tok, NOW_S, 0, &a, &err),
                     TH_ERR_AUTH);
    assert_int_equal(th_dps_attest(dps, "0neOTHER", "dev-1", tok, NOW_S, 0, &a, &err),
                     TH_ERR_NOT_FOUND);
    assert_int_equal(th_dps_attest(dps, dps->id_scope, "dev-1", tok, NOW_S + 7200, 0, &a, &err),
                     TH_ERR_EXPIRED);
    th_dps_free(dps);
}

static void test_th_dps_assign_creates_device_with_initial_twin_succeeds(void **state)
{
    struct th_dps *dps = th_dps_new(NULL);
    struct th_registry *reg = th_registry_new();
    struct th_dps_attest a;
    struct th_dps_plan plan;
    struct th_identity *id = NULL;
    struct th_dps_registration *rs = NULL;
    bool changed = true;
    char tok[512];
    cJSON *payload = parse("{\"model\":\"x\"}");
    (void)state;
    put(dps, false, "dev-1",
        "{\"deviceId\":\"device-one\",\"capabilities\":{\"iotEdge\":true},\"attestation\":{"
        "\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":\"" KEY1 "\"}},"
        "\"initialTwin\":{\"tags\":{\"site\":\"a\"},\"properties\":{\"desired\":{\"rate\":5}}}}");
    token(dps->id_scope, "dev-1", KEY1, tok, sizeof tok);
    assert_int_equal(th_dps_attest(dps, dps->id_scope, "dev-1", tok, NOW_S, 0, &a, NULL), TH_OK);
    th_dps_plan(dps, reg, "dev-1", &a, &plan);
    assert_int_equal(plan.action, TH_DPS_CREATE);
    assert_string_equal(plan.device_id, "device-one");
    assert_int_equal(
        th_dps_assign(dps, reg, "dev-1", &a, &plan, payload, NOW_US, &id, &changed, &rs, NULL),
        TH_OK);
    assert_false(changed);
    assert_string_equal(id->primary_key, KEY1);
    assert_true(id->iot_edge);
    cJSON *twin = th_identity_twin_json(id);
    assert_string_equal(th_json_string(th_json_object(twin, "tags"), "site", ""), "a");
    assert_int_equal(
        th_json_number(th_json_object(th_json_object(twin, "properties"), "desired"), "rate", 0),
        5);
    cJSON_Delete(twin);

    cJSON *status = NULL;
    assert_int_equal(
        th_dps_operation_status(dps, "dev-1", rs->operation_id, "hub.example", &status, NULL),
        TH_OK);
    assert_string_equal(th_json_string(status, "status", ""), "assigned");
    const cJSON *st = th_json_object(status, "registrationState");
    assert_string_equal(th_json_string(st, "assignedHub", ""), "hub.example");
    assert_string_equal(th_json_string(st, "deviceId", ""), "device-one");
    assert_string_equal(th_json_string(st, "substatus", ""), "initialAssignment");
    assert_string_equal(th_json_string(th_json_object(st, "payload"), "model", ""), "x");
    cJSON_Delete(status);
    assert_int_equal(th_dps_operation_status(dps, "dev-1", "4.nope", "h", &status, NULL),
                     TH_ERR_NOT_FOUND);

    /* Again: the device exists; the default policy migrates (keeps) it. */
    th_dps_plan(dps, reg, "dev-1", &a, &plan);
    assert_int_equal(plan.action, TH_DPS_KEEP);
    assert_string_equal(plan.substatus, "deviceDataMigrated");
    cJSON_Delete(payload);
    th_registry_free(reg);
    th_dps_free(dps);
}

static void test_th_dps_plan_reset_policy_recreates_succeeds(void **state)
{
    struct th_dps *dps = th_dps_new(NULL);
    struct th_registry *reg = th_registry_new();
    struct th_dps_attest a;
    struct th_dps_plan plan;
    char tok[512], derived[64];
    (void)state;
    put(dps, true, "g",
        "{\"reprovisionPolicy\":{\"updateHubAssignment\":true,\"migrateDeviceData\":false},"
        "\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":\"" KEY1
        "\"}}}");
    assert_int_equal(th_registry_add_device(reg, "m-1", NULL, NULL, true, NOW_US, NULL, NULL),
                     TH_OK);
    assert_int_equal(th_dps_derive_key(KEY1, "m-1", derived, sizeof derived), TH_OK);
    token(dps->id_scope, "m-1", derived, tok, sizeof tok);
    assert_int_equal(th_dps_attest(dps, dps->id_scope, "m-1", tok, NOW_S, 0, &a, NULL), TH_OK);
    th_dps_plan(dps, reg, "m-1", &a, &plan);
    assert_int_equal(plan.action, TH_DPS_RECREATE);
    assert_string_equal(plan.substatus, "deviceDataReset");
    th_registry_free(reg);
    th_dps_free(dps);
}

/* ---- service API, query, state ---- */

static void test_th_dps_auth_service_policy_token_succeeds(void **state)
{
    struct th_dps *dps = th_dps_new(NULL);
    char tok[512];
    struct th_error err = {0};
    (void)state;
    assert_int_equal(
        th_sas_sign("localhost", TH_DEV_DPS_KEY, NOW_S + 60, TH_DPS_POLICY_NAME, tok, sizeof tok),
        TH_OK);
    assert_int_equal(th_dps_auth_service(dps, tok, NOW_S, 0, &err), TH_OK);
    assert_int_equal(
        th_sas_sign("localhost", TH_DEV_DPS_KEY, NOW_S + 60, "iothubowner", tok, sizeof tok),
        TH_OK);
    assert_int_equal(th_dps_auth_service(dps, tok, NOW_S, 0, &err), TH_ERR_AUTH);
    assert_int_equal(err.status, 401);
    assert_int_equal(th_dps_auth_service(dps, NULL, NOW_S, 0, &err), TH_ERR_AUTH);
    th_dps_free(dps);
}

static void test_th_dps_query_pages_succeeds(void **state)
{
    struct th_dps *dps = th_dps_new(NULL);
    cJSON *spec = parse("{\"query\":\"*\"}");
    cJSON *items = NULL;
    char *next = NULL;
    (void)state;
    put(dps, false, "a", "{\"attestation\":{\"type\":\"symmetricKey\"}}");
    put(dps, false, "b", "{\"attestation\":{\"type\":\"symmetricKey\"}}");
    put(dps, true, "g", "{\"attestation\":{\"type\":\"symmetricKey\"}}");
    assert_int_equal(th_dps_query(dps, false, false, NULL, spec, 1, NULL, &items, &next, NULL),
                     TH_OK);
    assert_int_equal(cJSON_GetArraySize(items), 1);
    assert_non_null(next);
    cJSON_Delete(items);
    char *cont = next;
    assert_int_equal(th_dps_query(dps, false, false, NULL, spec, 1, cont, &items, &next, NULL),
                     TH_OK);
    assert_string_equal(th_json_string(cJSON_GetArrayItem(items, 0), "registrationId", ""), "b");
    assert_null(next);
    free(cont);
    cJSON_Delete(items);
    cJSON *bad = parse("{\"query\":\"SELECT deviceId\"}");
    assert_int_equal(th_dps_query(dps, false, true, NULL, bad, 10, NULL, &items, &next, NULL),
                     TH_ERR_INVAL);
    cJSON_Delete(bad);
    cJSON_Delete(spec);
    th_dps_free(dps);
}

static void test_th_dps_state_json_round_trip_succeeds(void **state)
{
    struct th_dps *dps = th_dps_new("0neTEST1");
    struct th_registry *reg = th_registry_new();
    struct th_dps_attest a;
    struct th_dps_plan plan;
    struct th_dps_registration *rs = NULL;
    char tok[512];
    (void)state;
    put(dps, false, "dev-1",
        "{\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":\"" KEY1
        "\"}}}");
    token(dps->id_scope, "dev-1", KEY1, tok, sizeof tok);
    assert_int_equal(th_dps_attest(dps, dps->id_scope, "dev-1", tok, NOW_S, 0, &a, NULL), TH_OK);
    th_dps_plan(dps, reg, "dev-1", &a, &plan);
    assert_int_equal(
        th_dps_assign(dps, reg, "dev-1", &a, &plan, NULL, NOW_US, NULL, NULL, &rs, NULL), TH_OK);
    cJSON *st = th_dps_state_json(dps);
    struct th_dps *back = th_dps_new(NULL);
    assert_int_equal(th_dps_restore(back, st, NULL), TH_OK);
    assert_string_equal(back->id_scope, "0neTEST1");
    struct th_dps_enrollment *e = th_dps_find(back, false, "dev-1");
    assert_non_null(e);
    assert_string_equal(e->primary_key, KEY1);
    struct th_dps_registration *r2 = th_dps_registration_find(back, "dev-1");
    assert_non_null(r2);
    assert_string_equal(r2->operation_id, rs->operation_id);
    cJSON *st2 = th_dps_state_json(back);
    char *t1 = cJSON_PrintUnformatted(st), *t2 = cJSON_PrintUnformatted(st2);
    assert_string_equal(t1, t2);
    free(t1);
    free(t2);
    cJSON_Delete(st);
    cJSON_Delete(st2);
    th_dps_free(back);
    th_registry_free(reg);
    th_dps_free(dps);
}

static void test_th_dps_load_duplicate_fails(void **state)
{
    struct th_dps *dps = th_dps_new(NULL);
    struct th_error err = {0};
    cJSON *sec = parse("{\"enrollments\":[{\"registrationId\":\"a\",\"attestation\":{\"type\":"
                       "\"symmetricKey\"}},{\"registrationId\":\"A\",\"attestation\":{\"type\":"
                       "\"symmetricKey\"}}]}");
    (void)state;
    assert_int_equal(th_dps_load(dps, sec, NOW_US, &err), TH_ERR_EXISTS);
    assert_non_null(strstr(err.message, "dps.enrollments[1]"));
    assert_int_equal(dps->count, 0);
    cJSON_Delete(sec);
    th_dps_free(dps);
}

static void test_th_dps_load_section_succeeds(void **state)
{
    struct th_dps *dps = th_dps_new(NULL);
    cJSON *sec =
        parse("{\"idScope\":\"0ne00000001\",\"enrollments\":[{\"registrationId\":\"a\","
              "\"attestation\":{\"type\":\"symmetricKey\"}}],\"enrollmentGroups\":[{"
              "\"enrollmentGroupId\":\"g\",\"attestation\":{\"type\":\"symmetricKey\"}}]}");
    cJSON *other = parse("{\"idScope\":\"0neOTHER\"}");
    struct th_error err = {0};
    (void)state;
    assert_int_equal(th_dps_load(dps, sec, NOW_US, NULL), TH_OK);
    assert_non_null(th_dps_find(dps, false, "a"));
    assert_non_null(th_dps_find(dps, true, "g"));
    assert_int_equal(th_dps_load(dps, other, NOW_US, &err), TH_ERR_INVAL);
    assert_non_null(strstr(err.message, "not the hub's ID scope"));
    assert_int_equal(dps->count, 2);
    cJSON_Delete(sec);
    cJSON_Delete(other);
    th_dps_free(dps);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_th_dps_derive_key_known_vector_succeeds),
        cmocka_unit_test(test_th_dps_derive_key_not_base64_fails),
        cmocka_unit_test(test_th_dps_registration_id_valid_rules_succeeds),
        cmocka_unit_test(test_th_dps_username_parse_sdk_username_succeeds),
        cmocka_unit_test(test_th_dps_username_parse_hub_username_fails),
        cmocka_unit_test(test_th_dps_topic_parse_requests_succeeds),
        cmocka_unit_test(test_th_dps_topic_parse_missing_parts_fails),
        cmocka_unit_test(test_th_dps_topic_response_retry_after_succeeds),
        cmocka_unit_test(test_th_dps_enrollment_put_generates_keys_succeeds),
        cmocka_unit_test(test_th_dps_enrollment_put_keeps_x509_fields_succeeds),
        cmocka_unit_test(test_th_dps_enrollment_put_bad_documents_fails),
        cmocka_unit_test(test_th_dps_enrollment_put_stale_etag_fails),
        cmocka_unit_test(test_th_dps_attest_individual_and_group_succeeds),
        cmocka_unit_test(test_th_dps_attest_refusals_fails),
        cmocka_unit_test(test_th_dps_assign_creates_device_with_initial_twin_succeeds),
        cmocka_unit_test(test_th_dps_plan_reset_policy_recreates_succeeds),
        cmocka_unit_test(test_th_dps_auth_service_policy_token_succeeds),
        cmocka_unit_test(test_th_dps_query_pages_succeeds),
        cmocka_unit_test(test_th_dps_state_json_round_trip_succeeds),
        cmocka_unit_test(test_th_dps_load_duplicate_fails),
        cmocka_unit_test(test_th_dps_load_section_succeeds),
    };
    return cmocka_run_group_tests_name("dps", tests, NULL, NULL);
}
