/*
 * it_control_auth.c - a control command that carries its caller's token
 * ("authorization", docs/control-api.md), against the real broker + plugin:
 * the broker decides the token with th_auth_service (core/auth.h) before the
 * command runs, and refuses a bad, expired, unknown or under-privileged token
 * with 401 / 401002 and the message the REST API answers; a device's own key
 * opens that device's module registry only; the token narrows what the
 * connection may do and never widens it; and a policy imported or re-keyed a
 * moment ago counts at once, because the broker is the one place that holds
 * the policies. This is what the HTTPS gateway relies on for every REST
 * request (docs/rest-api.md "Authentication").
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
#include "registry.h"
#include "sas.h"

static struct it_hub hub;

/* Keys of the policy this file imports and re-keys (32 bytes, base64). */
#define ROT_KEY_1 "aXQtY29udHJvbC1hdXRoLXJvdGF0ZWQta2V5LTAwMSE="
#define ROT_KEY_2 "aXQtY29udHJvbC1hdXRoLXJvdGF0ZWQta2V5LTAwMiE="

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

/* A token for sr=<hub name> signed with `key` (skn `policy`, or none for a device key). */
static char *token(const char *policy, const char *key, long long expiry)
{
    char buf[1024];
    assert_int_equal(th_sas_sign(hub.hub_name, key, expiry, policy, buf, sizeof buf), TH_OK);
    return strdup(buf);
}

/* The "authorization" member text: token (NULL: none), rights, operation, device (NULL: none). */
static char *authz(const char *tok, const char *rights, const char *operation,
                   const char *module_registry_of)
{
    char *tok_part = tok ? it_strdupf("\"token\":\"%s\",", tok) : strdup("");
    char *dev_part = module_registry_of
                         ? it_strdupf(",\"moduleRegistryOf\":\"%s\"", module_registry_of)
                         : strdup("");
    char *s = it_strdupf("\"authorization\":{%s\"rights\":[%s],\"operation\":\"%s\"%s}", tok_part,
                         rights, operation, dev_part);
    free(tok_part);
    free(dev_part);
    return s;
}

/* The entry's error sentence equals `want`. */
static void assert_error(const cJSON *entry, const char *want)
{
    const char *got = it_json_str(entry, "error");
    assert_non_null(got);
    if (strcmp(got, want) != 0)
        fail_msg("error '%s', expected '%s'", got, want);
}

static void assert_error_has(const cJSON *entry, const char *part)
{
    const char *got = it_json_str(entry, "error");
    assert_non_null(got);
    if (!strstr(got, part))
        fail_msg("error '%s' lacks '%s'", got, part);
}

/* getDevice as the REST API's GET /devices/{id} sends it, for `tok`. */
static cJSON *get_device_as(struct it_client *svc, const char *tok, int status, int code)
{
    char *a = authz(tok, "\"RegistryRead\"", "GET /devices/{}", NULL);
    cJSON *e =
        status
            ? it_control_err(svc, status, code,
                             "{\"command\":\"getDevice\",\"deviceId\":\"" IT_DEV1 "\",%s}", a)
            : it_control_ok(svc, "{\"command\":\"getDevice\",\"deviceId\":\"" IT_DEV1 "\",%s}", a);
    free(a);
    return e;
}

/* ---- policy tokens ---- */

static void test_control_auth_policy_token_with_right_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    char *ro = token("registryRead", TH_DEV_OWNER_KEY, it_expiry());
    cJSON *d = get_device_as(svc, ro, 0, 0);
    assert_string_equal(it_json_str(d, "deviceId"), IT_DEV1);
    cJSON_Delete(d);
    /* Any one of the rights is enough (GET /twins/{id}: ServiceConnect or RegistryRead). */
    char *a = authz(ro, "\"ServiceConnect\",\"RegistryRead\"", "GET /twins/{}", NULL);
    d = it_control_ok(svc, "{\"command\":\"getTwin\",\"deviceId\":\"" IT_DEV1 "\",%s}", a);
    assert_string_equal(it_json_str(d, "deviceId"), IT_DEV1);
    cJSON_Delete(d);
    free(a);
    /* `authorize` runs the decision alone and says who the token is. */
    a = authz(ro, "\"RegistryRead\"", "GET /devices/{}", NULL);
    d = it_control_ok(svc, "{\"command\":\"authorize\",%s}", a);
    assert_string_equal(it_json_str(d, "policy"), "registryRead");
    cJSON_Delete(d);
    free(a);
    free(ro);
    it_client_close(svc);
}

static void test_control_auth_bad_or_expired_token_fails(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    char *wrong = token("iothubowner", IT_DEV1_KEY, it_expiry());
    char *expired = token("iothubowner", TH_DEV_OWNER_KEY, it_expiry() - 2 * 3600);
    char *unknown = token("nosuchpolicy", TH_DEV_OWNER_KEY, it_expiry());
    cJSON *e = get_device_as(svc, wrong, 401, 401002);
    assert_error(e, "the SAS token's signature does not match the keys of policy 'iothubowner'");
    cJSON_Delete(e);
    e = get_device_as(svc, expired, 401, 401002);
    assert_error_has(e, "the SAS token has expired (se=");
    cJSON_Delete(e);
    e = get_device_as(svc, unknown, 401, 401002);
    assert_error(e, "unknown shared access policy 'nosuchpolicy'");
    cJSON_Delete(e);
    e = get_device_as(svc, NULL, 401, 401002);
    assert_error_has(e, "no Authorization header");
    cJSON_Delete(e);
    e = get_device_as(svc, "Bearer abc", 401, 401002);
    assert_error_has(e, "the Authorization header is not a valid SAS token");
    cJSON_Delete(e);
    free(wrong);
    free(expired);
    free(unknown);
    it_client_close(svc);
}

static void test_control_auth_under_privileged_token_fails(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    char *ro = token("registryRead", TH_DEV_OWNER_KEY, it_expiry());
    char *a = authz(ro, "\"RegistryWrite\"", "PUT /devices/{}", NULL);
    cJSON *e = it_control_err(svc, 401, 401002,
                              "{\"command\":\"createDevice\",\"deviceId\":\"ca-ro\",%s}", a);
    assert_error(e, "policy 'registryRead' does not grant RegistryWrite, which PUT /devices/{} "
                    "needs");
    cJSON_Delete(e);
    free(a);
    /* A refused invokeMethod is answered at once, in the batch, not after a method timeout. */
    a = authz(ro, "\"ServiceConnect\"", "POST /twins/{}/methods", NULL);
    e = it_control_err(svc, 401, 401002,
                       "{\"command\":\"invokeMethod\",\"deviceId\":\"" IT_DEV1
                       "\",\"methodName\":\"m\",\"responseTimeoutInSeconds\":300,%s}",
                       a);
    assert_error_has(e, "does not grant ServiceConnect, which POST /twins/{}/methods needs");
    cJSON_Delete(e);
    free(a);
    /* Nothing was created. */
    e = it_control_err(svc, 404, 404001, "{\"command\":\"getDevice\",\"deviceId\":\"ca-ro\"}");
    cJSON_Delete(e);
    free(ro);
    it_client_close(svc);
}

/* A token narrows what the connection may do; the connection's own rights still bind. */
static void test_control_auth_token_never_widens_connection_fails(void **state)
{
    (void)state;
    int connack;
    struct it_client *ro = it_service_open_policy(&hub, "registryRead", TH_DEV_OWNER_KEY, &connack);
    assert_int_equal(connack, 0);
    char *owner = token("iothubowner", TH_DEV_OWNER_KEY, it_expiry());
    char *a = authz(owner, "\"RegistryWrite\"", "PUT /devices/{}", NULL);
    cJSON *e = it_control_err(ro, 401, 401002,
                              "{\"command\":\"createDevice\",\"deviceId\":\"ca-wide\",%s}", a);
    assert_error(e, "policy 'registryRead' does not grant RegistryWrite, which 'createDevice' "
                    "needs");
    cJSON_Delete(e);
    free(a);
    free(owner);
    it_client_close(ro);
    struct it_client *svc = it_service_open(&hub, false);
    e = it_control_err(svc, 404, 404001, "{\"command\":\"getDevice\",\"deviceId\":\"ca-wide\"}");
    cJSON_Delete(e);
    it_client_close(svc);
}

/* Keys imported or replaced a moment ago count at once: the broker holds the only copy. */
static void test_control_auth_rekeyed_policy_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    char *t1 = token("ca-rot", ROT_KEY_1, it_expiry());
    char *t2 = token("ca-rot", ROT_KEY_2, it_expiry());
    cJSON *e = get_device_as(svc, t1, 401, 401002);
    assert_error(e, "unknown shared access policy 'ca-rot'");
    cJSON_Delete(e);
    cJSON *d =
        it_control_ok(svc, "{\"command\":\"importRegistry\",\"registry\":{\"policies\":["
                           "{\"keyName\":\"ca-rot\",\"primaryKey\":\"" ROT_KEY_1 "\","
                           "\"secondaryKey\":\"" ROT_KEY_1 "\",\"rights\":\"RegistryRead\"}]}}");
    cJSON_Delete(d);
    d = get_device_as(svc, t1, 0, 0);
    cJSON_Delete(d);
    d = it_control_ok(svc, "{\"command\":\"importRegistry\",\"overwrite\":true,\"registry\":{"
                           "\"policies\":[{\"keyName\":\"ca-rot\",\"primaryKey\":\"" ROT_KEY_2
                           "\",\"secondaryKey\":\"" ROT_KEY_2 "\",\"rights\":\"RegistryRead\"}]}}");
    cJSON_Delete(d);
    e = get_device_as(svc, t1, 401, 401002);
    assert_error(e, "the SAS token's signature does not match the keys of policy 'ca-rot'");
    cJSON_Delete(e);
    d = get_device_as(svc, t2, 0, 0);
    cJSON_Delete(d);
    free(t1);
    free(t2);
    it_client_close(svc);
}

/* ---- a device's own key ---- */

static void test_control_auth_device_key_on_its_modules_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    char *dev = token(NULL, IT_DEV1_KEY, it_expiry());
    char *a = authz(dev, "\"RegistryRead\"", "GET /devices/{}/modules", IT_DEV1);
    cJSON *d =
        it_control_ok(svc, "{\"command\":\"listModules\",\"deviceId\":\"" IT_DEV1 "\",%s}", a);
    assert_int_equal(cJSON_GetArraySize(d), 1);
    assert_string_equal(it_json_str(cJSON_GetArrayItem(d, 0), "moduleId"), IT_MOD1);
    cJSON_Delete(d);
    d = it_control_ok(svc, "{\"command\":\"authorize\",%s}", a);
    assert_string_equal(it_json_str(d, "deviceId"), IT_DEV1);
    cJSON_Delete(d);
    free(a);
    free(dev);
    it_client_close(svc);
}

static void test_control_auth_device_key_elsewhere_fails(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    char *dev = token(NULL, IT_DEV1_KEY, it_expiry());
    /* Not a module registry: policies only. */
    cJSON *e = get_device_as(svc, dev, 401, 401002);
    assert_error_has(e, "a device's own key grants DeviceConnect only");
    cJSON_Delete(e);
    /* Another device's module registry: that device's keys decide. */
    char *a = authz(dev, "\"RegistryRead\"", "GET /devices/{}/modules", IT_DEV2);
    e = it_control_err(svc, 401, 401002,
                       "{\"command\":\"listModules\",\"deviceId\":\"" IT_DEV2 "\",%s}", a);
    assert_error(e, "the token has no skn, and its signature does not match the keys of device "
                    "'" IT_DEV2 "'");
    cJSON_Delete(e);
    free(a);
    /* A disabled device's key opens nothing. */
    char *off = token(NULL, IT_DISABLED_KEY, it_expiry());
    a = authz(off, "\"RegistryRead\"", "GET /devices/{}/modules", IT_DISABLED);
    e = it_control_err(svc, 401, 401002,
                       "{\"command\":\"listModules\",\"deviceId\":\"" IT_DISABLED "\",%s}", a);
    assert_error_has(e, "disabled");
    cJSON_Delete(e);
    free(a);
    free(off);
    free(dev);
    it_client_close(svc);
}

/* ---- the member itself ---- */

static void test_control_auth_malformed_member_fails(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    cJSON *e = it_control_err(svc, 400, 400004,
                              "{\"command\":\"getDevice\",\"deviceId\":\"" IT_DEV1
                              "\",\"authorization\":\"SharedAccessSignature sr=x\"}");
    assert_error_has(e, "'authorization' must be an object");
    cJSON_Delete(e);
    e = it_control_err(svc, 400, 400004,
                       "{\"command\":\"getDevice\",\"deviceId\":\"" IT_DEV1
                       "\",\"authorization\":{\"token\":\"x\",\"rights\":[\"Everything\"]}}");
    assert_error_has(e, "names an unknown right");
    cJSON_Delete(e);
    e = it_control_err(svc, 400, 400004,
                       "{\"command\":\"getDevice\",\"deviceId\":\"" IT_DEV1
                       "\",\"authorization\":{\"token\":7}}");
    assert_error_has(e, "wrong type");
    cJSON_Delete(e);
    e = it_control_err(svc, 400, 400004, "{\"command\":\"authorize\"}");
    assert_error_has(e, "'authorization'");
    cJSON_Delete(e);
    it_client_close(svc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_control_auth_policy_token_with_right_succeeds),
        cmocka_unit_test(test_control_auth_bad_or_expired_token_fails),
        cmocka_unit_test(test_control_auth_under_privileged_token_fails),
        cmocka_unit_test(test_control_auth_token_never_widens_connection_fails),
        cmocka_unit_test(test_control_auth_rekeyed_policy_succeeds),
        cmocka_unit_test(test_control_auth_device_key_on_its_modules_succeeds),
        cmocka_unit_test(test_control_auth_device_key_elsewhere_fails),
        cmocka_unit_test(test_control_auth_malformed_member_fails),
    };
    return cmocka_run_group_tests_name("it_control_auth", tests, group_setup, group_teardown);
}
