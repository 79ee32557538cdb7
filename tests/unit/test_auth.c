/*
 * test_auth.c - unit tests for emulator/core/auth.c: the scope of CONNECT
 * tokens (ids in `sr` matched ignoring case, as IoT Edge and the SAS article
 * lower-case them), verification against two keys, and the device-key rule
 * of the service REST API (a device's key manages that device's modules only).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "auth.h"

/* Key = base64 of bytes 0x00..0x1F (iothub-protocol.md 2.2); another 32-byte key. */
#define KEY "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define OTHER_KEY "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
#define SE 1700000000
#define NOW (SE - 60)
#define HOST "contoso.azure-devices.net"

/* Sign `resource` with `key` (skn when non-NULL), then parse it into tok and res. */
static void token(const char *resource, const char *key, const char *skn, char *buf, size_t size,
                  struct th_sas_token *tok, struct th_sas_resource *res)
{
    struct th_error err = {0};
    assert_int_equal(th_sas_sign(resource, key, SE, skn, buf, size), TH_OK);
    assert_int_equal(th_sas_parse(buf, strlen(buf), tok, &err), TH_OK);
    assert_int_equal(th_sas_resource(tok, res, &err), TH_OK);
}

/* The resource of an unsigned `sr` (the signature plays no part in a scope decision). */
static struct th_sas_resource resource(const char *sr)
{
    char text[512];
    struct th_sas_token tok;
    struct th_sas_resource res;
    struct th_error err = {0};
    snprintf(text, sizeof text, "SharedAccessSignature sr=%s&sig=x&se=%d", sr, SE);
    assert_int_equal(th_sas_parse(text, strlen(text), &tok, &err), TH_OK);
    assert_int_equal(th_sas_resource(&tok, &res, &err), TH_OK);
    return res;
}

/* ---- th_auth_id_eq ---- */

static void test_th_auth_id_eq_other_case_succeeds(void **state)
{
    (void)state;
    assert_true(th_auth_id_eq("casedev", "CaseDev"));
    assert_true(th_auth_id_eq("CASE-dev.1", "case-DEV.1"));
}

static void test_th_auth_id_eq_other_id_fails(void **state)
{
    (void)state;
    assert_false(th_auth_id_eq("casedev", "CaseDev2"));
    assert_false(th_auth_id_eq("casede", "CaseDev"));
    assert_false(th_auth_id_eq("", "d"));
}

/* ---- th_auth_connect_scope: an identity's own key ---- */

static void test_th_auth_connect_scope_lower_cased_device_succeeds(void **state)
{
    (void)state;
    struct th_error err = {0};
    struct th_sas_resource raw = resource(HOST "/devices/casedev");
    struct th_sas_resource lower_escapes = resource(HOST "%2fdevices%2fcasedev");
    struct th_sas_resource upper = resource("CONTOSO.azure-devices.net%2FDEVICES%2FCASEDEV");
    assert_int_equal(th_auth_connect_scope(&raw, false, "CaseDev", NULL, &err), TH_OK);
    assert_int_equal(th_auth_connect_scope(&lower_escapes, false, "CaseDev", NULL, &err), TH_OK);
    assert_int_equal(th_auth_connect_scope(&upper, false, "CaseDev", NULL, &err), TH_OK);
}

static void test_th_auth_connect_scope_lower_cased_module_succeeds(void **state)
{
    (void)state;
    struct th_error err = {0};
    struct th_sas_resource res = resource(HOST "%2Fdevices%2Fcasedev%2Fmodules%2F%24edgehub");
    assert_int_equal(th_auth_connect_scope(&res, false, "CaseDev", "$edgeHub", &err), TH_OK);
}

static void test_th_auth_connect_scope_other_device_fails(void **state)
{
    (void)state;
    struct th_error err = {0};
    struct th_sas_resource res = resource(HOST "%2Fdevices%2Fcasedev2");
    assert_int_equal(th_auth_connect_scope(&res, false, "CaseDev", NULL, &err), TH_ERR_AUTH);
    assert_int_equal(err.code, TH_AUTH_ERR_CODE);
    assert_non_null(strstr(err.message, "'casedev2', not for 'CaseDev'"));
}

static void test_th_auth_connect_scope_device_token_for_module_fails(void **state)
{
    (void)state;
    struct th_error err = {0};
    struct th_sas_resource res = resource(HOST "%2Fdevices%2Fd1");
    assert_int_equal(th_auth_connect_scope(&res, false, "d1", "m1", &err), TH_ERR_AUTH);
}

static void test_th_auth_connect_scope_module_token_for_device_fails(void **state)
{
    (void)state;
    struct th_error err = {0};
    struct th_sas_resource res = resource(HOST "%2Fdevices%2Fd1%2Fmodules%2Fm1");
    assert_int_equal(th_auth_connect_scope(&res, false, "d1", NULL, &err), TH_ERR_AUTH);
    assert_int_equal(th_auth_connect_scope(&res, false, "d1", "m2", &err), TH_ERR_AUTH);
}

static void test_th_auth_connect_scope_own_key_hub_resource_fails(void **state)
{
    (void)state;
    struct th_error err = {0};
    struct th_sas_resource host = resource(HOST);
    struct th_sas_resource all = resource(HOST "%2Fdevices");
    assert_int_equal(th_auth_connect_scope(&host, false, "d1", NULL, &err), TH_ERR_AUTH);
    assert_non_null(strstr(err.message, "'the hub'"));
    assert_int_equal(th_auth_connect_scope(&all, false, "d1", NULL, &err), TH_ERR_AUTH);
    assert_non_null(strstr(err.message, "'all devices'"));
}

/* The id is decoded once: an escape that is left over is part of the id. */
static void test_th_auth_connect_scope_double_encoded_id_fails(void **state)
{
    (void)state;
    struct th_error err = {0};
    struct th_sas_resource res = resource(HOST "%2Fdevices%2Fa%252Bb");
    assert_string_equal(res.device_id, "a%2Bb");
    assert_int_equal(th_auth_connect_scope(&res, false, "a+b", NULL, &err), TH_ERR_AUTH);
}

/* ---- th_auth_connect_scope: a DeviceConnect policy ---- */

static void test_th_auth_connect_scope_policy_hub_and_all_devices_succeeds(void **state)
{
    (void)state;
    struct th_error err = {0};
    struct th_sas_resource host = resource(HOST);
    struct th_sas_resource all = resource(HOST "%2Fdevices");
    assert_int_equal(th_auth_connect_scope(&host, true, "d1", NULL, &err), TH_OK);
    assert_int_equal(th_auth_connect_scope(&all, true, "d1", "m1", &err), TH_OK);
}

static void test_th_auth_connect_scope_policy_device_covers_its_modules_succeeds(void **state)
{
    (void)state;
    struct th_error err = {0};
    struct th_sas_resource res = resource(HOST "%2fdevices%2fcasedev");
    assert_int_equal(th_auth_connect_scope(&res, true, "CaseDev", NULL, &err), TH_OK);
    assert_int_equal(th_auth_connect_scope(&res, true, "CaseDev", "Mod", &err), TH_OK);
}

static void test_th_auth_connect_scope_policy_other_identity_fails(void **state)
{
    (void)state;
    struct th_error err = {0};
    struct th_sas_resource dev = resource(HOST "%2Fdevices%2Fd2");
    struct th_sas_resource mod = resource(HOST "%2Fdevices%2Fd1%2Fmodules%2Fm1");
    assert_int_equal(th_auth_connect_scope(&dev, true, "d1", NULL, &err), TH_ERR_AUTH);
    assert_int_equal(th_auth_connect_scope(&mod, true, "d1", NULL, &err), TH_ERR_AUTH);
    assert_int_equal(th_auth_connect_scope(&mod, true, "d1", "m2", &err), TH_ERR_AUTH);
    assert_int_equal(th_auth_connect_scope(&mod, true, "d1", "M1", &err), TH_OK);
}

/* ---- th_auth_verify_keys ---- */

static void test_th_auth_verify_keys_lower_cased_sr_signed_succeeds(void **state)
{
    (void)state;
    char buf[512];
    struct th_sas_token tok;
    struct th_sas_resource res;
    struct th_error err = {0};
    /* IoT Edge signs the lower-cased audience: the HMAC covers sr as sent. */
    token(HOST "/devices/casedev", KEY, NULL, buf, sizeof buf, &tok, &res);
    assert_int_equal(th_auth_connect_scope(&res, false, "CaseDev", NULL, &err), TH_OK);
    assert_int_equal(th_auth_verify_keys(&tok, KEY, OTHER_KEY, NOW, 0, &err), TH_OK);
}

static void test_th_auth_verify_keys_secondary_succeeds(void **state)
{
    (void)state;
    char buf[512];
    struct th_sas_token tok;
    struct th_sas_resource res;
    struct th_error err = {0};
    token(HOST "/devices/d1", KEY, NULL, buf, sizeof buf, &tok, &res);
    assert_int_equal(th_auth_verify_keys(&tok, OTHER_KEY, KEY, NOW, 0, &err), TH_OK);
}

static void test_th_auth_verify_keys_no_key_matches_fails(void **state)
{
    (void)state;
    char buf[512];
    struct th_sas_token tok;
    struct th_sas_resource res;
    struct th_error err = {0};
    token(HOST "/devices/d1", KEY, NULL, buf, sizeof buf, &tok, &res);
    assert_int_equal(th_auth_verify_keys(&tok, OTHER_KEY, OTHER_KEY, NOW, 0, &err), TH_ERR_AUTH);
    assert_int_equal(th_auth_verify_keys(&tok, OTHER_KEY, "", NOW, 0, &err), TH_ERR_AUTH);
    assert_int_equal(th_auth_verify_keys(&tok, OTHER_KEY, NULL, NOW, 0, &err), TH_ERR_AUTH);
}

static void test_th_auth_verify_keys_expired_with_secondary_fails(void **state)
{
    (void)state;
    char buf[512];
    struct th_sas_token tok;
    struct th_sas_resource res;
    struct th_error err = {0};
    token(HOST "/devices/d1", KEY, NULL, buf, sizeof buf, &tok, &res);
    assert_int_equal(th_auth_verify_keys(&tok, OTHER_KEY, KEY, SE + 1, 0, &err), TH_ERR_EXPIRED);
}

/* ---- th_auth_rest_device_scope ---- */

static void test_th_auth_rest_device_scope_hub_sr_modules_succeeds(void **state)
{
    (void)state;
    struct th_error err = {0};
    /* The security agents sign sr=<host> with the device key (HTTPAPIEX_SAS, no key name). */
    struct th_sas_resource host = resource(HOST);
    struct th_sas_resource all = resource(HOST "%2Fdevices");
    assert_int_equal(th_auth_rest_device_scope(&host, TH_AUTH_REST_DEVICE_MODULES, "d1", &err),
                     TH_OK);
    assert_int_equal(th_auth_rest_device_scope(&all, TH_AUTH_REST_DEVICE_MODULES, "d1", &err),
                     TH_OK);
}

static void test_th_auth_rest_device_scope_lower_cased_device_sr_succeeds(void **state)
{
    (void)state;
    struct th_error err = {0};
    /* The IoT Edge identity service signs {host}/devices/{device}, lower-cased. */
    struct th_sas_resource res = resource(HOST "%2Fdevices%2Fedge-casedev");
    assert_int_equal(
        th_auth_rest_device_scope(&res, TH_AUTH_REST_DEVICE_MODULES, "Edge-CaseDev", &err), TH_OK);
}

static void test_th_auth_rest_device_scope_service_endpoint_fails(void **state)
{
    (void)state;
    struct th_error err = {0};
    struct th_sas_resource res = resource(HOST "%2Fdevices%2Fd1");
    assert_int_equal(th_auth_rest_device_scope(&res, TH_AUTH_REST_SERVICE, "d1", &err),
                     TH_ERR_AUTH);
    assert_int_equal(err.code, TH_AUTH_ERR_CODE);
    assert_non_null(strstr(err.message, "DeviceConnect only"));
    assert_int_equal(th_auth_rest_device_scope(&res, TH_AUTH_REST_SERVICE, NULL, &err),
                     TH_ERR_AUTH);
}

static void test_th_auth_rest_device_scope_other_device_fails(void **state)
{
    (void)state;
    struct th_error err = {0};
    struct th_sas_resource res = resource(HOST "%2Fdevices%2Fd1");
    assert_int_equal(th_auth_rest_device_scope(&res, TH_AUTH_REST_DEVICE_MODULES, "d2", &err),
                     TH_ERR_AUTH);
    assert_non_null(strstr(err.message, "'d1' cannot manage the modules of device 'd2'"));
}

static void test_th_auth_rest_device_scope_module_sr_fails(void **state)
{
    (void)state;
    struct th_error err = {0};
    struct th_sas_resource res = resource(HOST "%2Fdevices%2Fd1%2Fmodules%2Fm1");
    assert_int_equal(th_auth_rest_device_scope(&res, TH_AUTH_REST_DEVICE_MODULES, "d1", &err),
                     TH_ERR_AUTH);
}

/* ---- th_auth_rest_device_key ---- */

static void test_th_auth_rest_device_key_device_key_succeeds(void **state)
{
    (void)state;
    char buf[512];
    struct th_sas_token tok;
    struct th_sas_resource res;
    struct th_error err = {0};
    struct th_auth_device dev = {"d1", OTHER_KEY, KEY, true};
    token(HOST, KEY, NULL, buf, sizeof buf, &tok, &res);
    assert_int_equal(th_auth_rest_device_key(&tok, &dev, NOW, 0, &err), TH_OK);
}

static void test_th_auth_rest_device_key_unregistered_fails(void **state)
{
    (void)state;
    char buf[512];
    struct th_sas_token tok;
    struct th_sas_resource res;
    struct th_error err = {0};
    token(HOST, KEY, NULL, buf, sizeof buf, &tok, &res);
    assert_int_equal(th_auth_rest_device_key(&tok, NULL, NOW, 0, &err), TH_ERR_AUTH);
    assert_non_null(strstr(err.message, "not registered"));
}

static void test_th_auth_rest_device_key_disabled_fails(void **state)
{
    (void)state;
    char buf[512];
    struct th_sas_token tok;
    struct th_sas_resource res;
    struct th_error err = {0};
    struct th_auth_device dev = {"d1", KEY, NULL, false};
    token(HOST, KEY, NULL, buf, sizeof buf, &tok, &res);
    assert_int_equal(th_auth_rest_device_key(&tok, &dev, NOW, 0, &err), TH_ERR_AUTH);
    assert_non_null(strstr(err.message, "disabled"));
}

static void test_th_auth_rest_device_key_wrong_key_fails(void **state)
{
    (void)state;
    char buf[512];
    struct th_sas_token tok;
    struct th_sas_resource res;
    struct th_error err = {0};
    struct th_auth_device dev = {"d1", OTHER_KEY, "", true};
    token(HOST, KEY, NULL, buf, sizeof buf, &tok, &res);
    assert_int_equal(th_auth_rest_device_key(&tok, &dev, NOW, 0, &err), TH_ERR_AUTH);
    assert_int_equal(err.code, TH_AUTH_ERR_CODE);
    assert_non_null(strstr(err.message, "keys of device 'd1'"));
}

static void test_th_auth_rest_device_key_expired_fails(void **state)
{
    (void)state;
    char buf[512];
    struct th_sas_token tok;
    struct th_sas_resource res;
    struct th_error err = {0};
    struct th_auth_device dev = {"d1", KEY, NULL, true};
    token(HOST, KEY, NULL, buf, sizeof buf, &tok, &res);
    assert_int_equal(th_auth_rest_device_key(&tok, &dev, SE + 1, 0, &err), TH_ERR_EXPIRED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_th_auth_id_eq_other_case_succeeds),
        cmocka_unit_test(test_th_auth_id_eq_other_id_fails),
        cmocka_unit_test(test_th_auth_connect_scope_lower_cased_device_succeeds),
        cmocka_unit_test(test_th_auth_connect_scope_lower_cased_module_succeeds),
        cmocka_unit_test(test_th_auth_connect_scope_other_device_fails),
        cmocka_unit_test(test_th_auth_connect_scope_device_token_for_module_fails),
        cmocka_unit_test(test_th_auth_connect_scope_module_token_for_device_fails),
        cmocka_unit_test(test_th_auth_connect_scope_own_key_hub_resource_fails),
        cmocka_unit_test(test_th_auth_connect_scope_double_encoded_id_fails),
        cmocka_unit_test(test_th_auth_connect_scope_policy_hub_and_all_devices_succeeds),
        cmocka_unit_test(test_th_auth_connect_scope_policy_device_covers_its_modules_succeeds),
        cmocka_unit_test(test_th_auth_connect_scope_policy_other_identity_fails),
        cmocka_unit_test(test_th_auth_verify_keys_lower_cased_sr_signed_succeeds),
        cmocka_unit_test(test_th_auth_verify_keys_secondary_succeeds),
        cmocka_unit_test(test_th_auth_verify_keys_no_key_matches_fails),
        cmocka_unit_test(test_th_auth_verify_keys_expired_with_secondary_fails),
        cmocka_unit_test(test_th_auth_rest_device_scope_hub_sr_modules_succeeds),
        cmocka_unit_test(test_th_auth_rest_device_scope_lower_cased_device_sr_succeeds),
        cmocka_unit_test(test_th_auth_rest_device_scope_service_endpoint_fails),
        cmocka_unit_test(test_th_auth_rest_device_scope_other_device_fails),
        cmocka_unit_test(test_th_auth_rest_device_scope_module_sr_fails),
        cmocka_unit_test(test_th_auth_rest_device_key_device_key_succeeds),
        cmocka_unit_test(test_th_auth_rest_device_key_unregistered_fails),
        cmocka_unit_test(test_th_auth_rest_device_key_disabled_fails),
        cmocka_unit_test(test_th_auth_rest_device_key_wrong_key_fails),
        cmocka_unit_test(test_th_auth_rest_device_key_expired_fails),
    };
    return cmocka_run_group_tests_name("auth", tests, NULL, NULL);
}
