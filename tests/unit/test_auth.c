/*
 * test_auth.c - unit tests for emulator/core/auth.c: the scope of CONNECT
 * tokens (ids in `sr` matched ignoring case, as IoT Edge and the SAS article
 * lower-case them), verification against two keys, the device-key rule of
 * the service REST API (a device's key manages that device's modules only),
 * and the two decisions built on them against a registry: th_auth_connect
 * (an MQTT CONNECT) and th_auth_service (a service caller's token).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "auth.h"
#include "registry.h"

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

/* An identity of authentication type 'none' has "" keys: an HMAC with the empty key (which
 * anybody can compute) must not verify, and the reason says so. */
static void test_th_auth_verify_keys_empty_keys_fails(void **state)
{
    (void)state;
    char buf[512];
    struct th_sas_token tok;
    struct th_sas_resource res;
    struct th_error err = {0};
    if (th_sas_sign(HOST "/devices/d1", "", SE, NULL, buf, sizeof buf) == TH_OK) {
        assert_int_equal(th_sas_parse(buf, strlen(buf), &tok, &err), TH_OK);
        assert_int_equal(th_auth_verify_keys(&tok, "", "", NOW, 0, &err), TH_ERR_AUTH);
        assert_non_null(strstr(err.message, "no keys"));
    }
    token(HOST "/devices/d1", KEY, NULL, buf, sizeof buf, &tok, &res);
    assert_int_equal(th_auth_verify_keys(&tok, "", NULL, NOW, 0, &err), TH_ERR_AUTH);
    assert_non_null(strstr(err.message, "no keys"));
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

/* ---- the decisions: a registry to decide against ---- */

#define DEV_KEY "dHdpbmh1Yi11bml0LWF1dGgtZGV2aWNlLWtleS0wMDE="
#define DEV_KEY2 "dHdpbmh1Yi11bml0LWF1dGgtZGV2aWNlLWtleS0wMDI="
#define MOD_KEY "dHdpbmh1Yi11bml0LWF1dGgtbW9kdWxlLWtleS0wMDE="
#define API "/?api-version=2021-04-12"

/*
 * Policies iothubowner (KEY, OTHER_KEY: every service right), registryRead
 * (KEY: RegistryRead), device (KEY: DeviceConnect only); device d1 (DEV_KEY,
 * DEV_KEY2) with module m1 (MOD_KEY); disabled device off (DEV_KEY) with
 * module m2 (MOD_KEY).
 */
static int registry_setup(void **state)
{
    struct th_registry *reg = th_registry_new();
    struct th_error err = {0};
    if (!reg)
        return -1;
    if (th_registry_set_policy(reg, "iothubowner", KEY, OTHER_KEY,
                               TH_PERM_REGISTRY_READ | TH_PERM_REGISTRY_WRITE |
                                   TH_PERM_SERVICE_CONNECT | TH_PERM_DEVICE_CONNECT) != TH_OK ||
        th_registry_set_policy(reg, "registryRead", KEY, KEY, TH_PERM_REGISTRY_READ) != TH_OK ||
        th_registry_set_policy(reg, "device", KEY, KEY, TH_PERM_DEVICE_CONNECT) != TH_OK ||
        th_registry_add_device(reg, "d1", DEV_KEY, DEV_KEY2, true, 0, NULL, &err) != TH_OK ||
        th_registry_add_module(reg, "d1", "m1", MOD_KEY, MOD_KEY, 0, NULL, &err) != TH_OK ||
        th_registry_add_device(reg, "off", DEV_KEY, DEV_KEY, false, 0, NULL, &err) != TH_OK ||
        th_registry_add_module(reg, "off", "m2", MOD_KEY, MOD_KEY, 0, NULL, &err) != TH_OK) {
        th_registry_free(reg);
        return -1;
    }
    *state = reg;
    return 0;
}

static int registry_teardown(void **state)
{
    th_registry_free(*state);
    return 0;
}

/* A CONNECT with protocol level 4 at NOW, no skew; `password` signed by the caller. */
static struct th_auth_connect_facts facts(const char *client_id, const char *username,
                                          const char *password)
{
    return (struct th_auth_connect_facts){4, client_id, username, password, NOW, 0, NULL, NULL};
}

/* Sign `resource` with `key` (skn when non-NULL) expiring at SE. */
static void sign(const char *resource, const char *key, const char *skn, char *buf, size_t size)
{
    assert_int_equal(th_sas_sign(resource, key, SE, skn, buf, size), TH_OK);
}

/* ---- th_auth_connect ---- */

static void test_th_auth_connect_device_key_succeeds(void **state)
{
    char pw[512];
    struct th_auth_connect_decision d;
    sign(HOST "/devices/d1", DEV_KEY2, NULL, pw, sizeof pw);
    struct th_auth_connect_facts f =
        facts("d1", HOST "/d1/?api-version=2021-04-12&DeviceClientType=c%2F1", pw);
    assert_int_equal(th_auth_connect(*state, &f, &d), TH_OK);
    assert_int_equal(d.kind, TH_AUTH_IDENTITY);
    assert_non_null(d.identity);
    assert_string_equal(d.identity->device_id, "d1");
    assert_null(d.identity->module_id);
    assert_null(d.policy);
    assert_int_equal(d.token_expiry_s, SE);
    assert_string_equal(d.device_id, "d1");
    assert_false(d.has_module);
    assert_int_equal(d.username.api_version.len, strlen("2021-04-12"));
    assert_memory_equal(d.username.client_type.ptr, "c%2F1", 5);
}

static void test_th_auth_connect_module_key_succeeds(void **state)
{
    char pw[512];
    struct th_auth_connect_decision d;
    sign(HOST "/devices/d1/modules/m1", MOD_KEY, NULL, pw, sizeof pw);
    struct th_auth_connect_facts f = facts("d1/m1", HOST "/d1/m1" API, pw);
    assert_int_equal(th_auth_connect(*state, &f, &d), TH_OK);
    assert_int_equal(d.kind, TH_AUTH_IDENTITY);
    assert_string_equal(d.identity->module_id, "m1");
    assert_true(d.has_module);
    assert_string_equal(d.module_id, "m1");
}

static void test_th_auth_connect_device_connect_policy_succeeds(void **state)
{
    char pw[512];
    struct th_auth_connect_decision d;
    sign(HOST "/devices", KEY, "device", pw, sizeof pw);
    struct th_auth_connect_facts f = facts("d1/m1", HOST "/d1/m1" API, pw);
    assert_int_equal(th_auth_connect(*state, &f, &d), TH_OK);
    assert_int_equal(d.kind, TH_AUTH_IDENTITY);
    assert_string_equal(d.identity->module_id, "m1");
    assert_non_null(d.policy);
    assert_string_equal(d.policy->name, "device");
}

static void test_th_auth_connect_service_principal_succeeds(void **state)
{
    char pw[512];
    struct th_auth_connect_decision d;
    sign(HOST, OTHER_KEY, "iothubowner", pw, sizeof pw);
    struct th_auth_connect_facts f = facts("svc-1", HOST, pw);
    assert_int_equal(th_auth_connect(*state, &f, &d), TH_OK);
    assert_int_equal(d.kind, TH_AUTH_SERVICE);
    assert_string_equal(d.policy->name, "iothubowner");
    assert_null(d.identity);
    assert_int_equal(d.token_expiry_s, SE);
}

static void test_th_auth_connect_expired_within_skew_succeeds(void **state)
{
    char pw[512];
    struct th_auth_connect_decision d;
    sign(HOST "/devices/d1", DEV_KEY, NULL, pw, sizeof pw);
    struct th_auth_connect_facts f = facts("d1", HOST "/d1" API, pw);
    f.now_s = SE + 30;
    f.skew_s = 30;
    assert_int_equal(th_auth_connect(*state, &f, &d), TH_OK);
    f.now_s = SE + 31;
    assert_int_equal(th_auth_connect(*state, &f, &d), TH_ERR_AUTH);
    assert_int_equal(d.kind, TH_AUTH_REFUSED);
    assert_non_null(strstr(d.reason, "expired"));
}

/* Each CONNECT missing a piece is refused with a reason that says which, before any lookup. */
static void test_th_auth_connect_missing_pieces_fails(void **state)
{
    char pw[512];
    struct th_auth_connect_decision d;
    sign(HOST "/devices/d1", DEV_KEY, NULL, pw, sizeof pw);
    struct th_auth_connect_facts mqtt31 = facts("d1", HOST "/d1" API, pw);
    mqtt31.protocol_version = 3;
    const struct {
        struct th_auth_connect_facts f;
        const char *reason;
    } cases[] = {
        {mqtt31, "MQTT 3.1.1 only"},
        {facts(NULL, HOST "/d1" API, pw), "empty client id"},
        {facts("", HOST "/d1" API, pw), "empty client id"},
        {facts("d1", NULL, pw), "no username"},
        {facts("d1", HOST "/d1" API, ""), "no password"},
        {facts("d1", HOST "/d1" API, "SharedAccessSignature sr=x"), "sig"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(th_auth_connect(*state, &cases[i].f, &d), TH_ERR_AUTH);
        assert_int_equal(d.kind, TH_AUTH_REFUSED);
        assert_null(d.identity);
        assert_string_equal(d.device_id, "");
        if (!strstr(d.reason, cases[i].reason))
            fail_msg("case %zu: reason '%s' lacks '%s'", i, d.reason, cases[i].reason);
    }
}

static void test_th_auth_connect_client_id_mismatch_fails(void **state)
{
    char pw[512];
    struct th_auth_connect_decision d;
    sign(HOST "/devices/d1", DEV_KEY, NULL, pw, sizeof pw);
    struct th_auth_connect_facts f = facts("D1", HOST "/d1" API, pw);
    assert_int_equal(th_auth_connect(*state, &f, &d), TH_ERR_AUTH);
    assert_string_equal(d.reason,
                        "client id 'D1' does not match the identity 'd1' named in the username");
    /* The identity the username names is reported for the refused event. */
    assert_string_equal(d.device_id, "d1");
    assert_false(d.has_module);
}

static void test_th_auth_connect_host_mismatch_fails(void **state)
{
    char pw[512];
    struct th_auth_connect_decision d;
    sign("other.azure-devices.net/devices/d1", DEV_KEY, NULL, pw, sizeof pw);
    struct th_auth_connect_facts f = facts("d1", HOST "/d1" API, pw);
    assert_int_equal(th_auth_connect(*state, &f, &d), TH_ERR_AUTH);
    assert_non_null(strstr(d.reason, "does not match the username's host"));
}

static void test_th_auth_connect_unregistered_and_disabled_fails(void **state)
{
    char pw[512];
    struct th_auth_connect_decision d;
    sign(HOST "/devices/ghost", DEV_KEY, NULL, pw, sizeof pw);
    struct th_auth_connect_facts f = facts("ghost", HOST "/ghost" API, pw);
    assert_int_equal(th_auth_connect(*state, &f, &d), TH_ERR_AUTH);
    assert_string_equal(d.reason, "device 'ghost' is not registered");
    sign(HOST "/devices/d1/modules/m9", DEV_KEY, NULL, pw, sizeof pw);
    f = facts("d1/m9", HOST "/d1/m9" API, pw);
    assert_int_equal(th_auth_connect(*state, &f, &d), TH_ERR_AUTH);
    assert_string_equal(d.reason, "module 'd1/m9' is not registered");
    /* A disabled device's modules are refused with it, whatever key signs. */
    sign(HOST "/devices/off/modules/m2", MOD_KEY, NULL, pw, sizeof pw);
    f = facts("off/m2", HOST "/off/m2" API, pw);
    assert_int_equal(th_auth_connect(*state, &f, &d), TH_ERR_AUTH);
    assert_string_equal(d.reason, "device 'off' is disabled");
    assert_string_equal(d.module_id, "m2");
    assert_true(d.has_module);
}

static void test_th_auth_connect_wrong_key_or_scope_fails(void **state)
{
    char pw[512];
    struct th_auth_connect_decision d;
    /* The module's key presented by the device, and the device's key by its module. */
    sign(HOST "/devices/d1", MOD_KEY, NULL, pw, sizeof pw);
    struct th_auth_connect_facts f = facts("d1", HOST "/d1" API, pw);
    assert_int_equal(th_auth_connect(*state, &f, &d), TH_ERR_AUTH);
    sign(HOST "/devices/d1", DEV_KEY, NULL, pw, sizeof pw);
    f = facts("d1/m1", HOST "/d1/m1" API, pw);
    assert_int_equal(th_auth_connect(*state, &f, &d), TH_ERR_AUTH);
    assert_non_null(strstr(d.reason, "not for 'd1/m1'"));
    /* A policy without DeviceConnect cannot sign for a device. */
    sign(HOST, KEY, "registryRead", pw, sizeof pw);
    f = facts("d1", HOST "/d1" API, pw);
    assert_int_equal(th_auth_connect(*state, &f, &d), TH_ERR_AUTH);
    assert_string_equal(d.reason, "policy 'registryRead' is unknown or lacks DeviceConnect");
    assert_null(d.policy);
}

static void test_th_auth_connect_service_refusals_fails(void **state)
{
    char pw[512], nokey[512], devsr[512], dc[512];
    struct th_auth_connect_decision d;
    sign(HOST, KEY, "iothubowner", pw, sizeof pw);
    sign(HOST, KEY, NULL, nokey, sizeof nokey);
    sign(HOST "/devices/d1", KEY, "iothubowner", devsr, sizeof devsr);
    sign(HOST, KEY, "device", dc, sizeof dc);
    const struct {
        struct th_auth_connect_facts f;
        const char *reason;
    } cases[] = {
        {facts("svc", HOST, nokey), "needs a shared access policy token with skn"},
        {facts("svc", HOST, devsr), "sr must be the hub host name"},
        {facts("svc", HOST, dc), "policy 'device' has no service rights"},
        {facts("d1", HOST, pw), "client id must not be a registered identity"},
        {facts("d1/m1", HOST, pw), "client id must not be a registered identity"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(th_auth_connect(*state, &cases[i].f, &d), TH_ERR_AUTH);
        assert_int_equal(d.kind, TH_AUTH_REFUSED);
        assert_null(d.policy);
        assert_string_equal(d.device_id, "");
        if (!strstr(d.reason, cases[i].reason))
            fail_msg("case %zu: reason '%s' lacks '%s'", i, d.reason, cases[i].reason);
    }
    sign(HOST, KEY, "nosuch", pw, sizeof pw);
    struct th_auth_connect_facts f = facts("svc", HOST, pw);
    assert_int_equal(th_auth_connect(*state, &f, &d), TH_ERR_AUTH);
    assert_string_equal(d.reason, "unknown shared access policy 'nosuch'");
}

static void test_th_auth_connect_no_registry_fails(void **state)
{
    (void)state;
    struct th_auth_connect_decision d;
    struct th_auth_connect_facts f = facts("d1", HOST "/d1" API, "x");
    assert_int_equal(th_auth_connect(NULL, &f, &d), TH_ERR_INVAL);
    assert_int_equal(d.kind, TH_AUTH_REFUSED);
    assert_int_equal(th_auth_connect(*state, NULL, &d), TH_ERR_INVAL);
    assert_int_equal(th_auth_connect(*state, &f, NULL), TH_ERR_INVAL);
}

/* ---- th_auth_service ---- */

/* A request for `rights` (any one), the first named, as "GET /devices/{}", at NOW, no skew. */
static struct th_auth_service_request service(const char *token, unsigned rights, const char *right)
{
    return (struct th_auth_service_request){token, rights, right, "GET /devices/{}", NULL, NOW, 0};
}

/* Decide and expect a refusal of 401 / 401002 with exactly `message` (or containing `part`). */
static void expect_refused(void **state, const struct th_auth_service_request *rq, th_result want,
                           const char *message, const char *part)
{
    struct th_auth_service_decision who;
    struct th_error err = {0};
    assert_int_equal(th_auth_service(*state, rq, &who, &err), want);
    assert_null(who.policy);
    assert_null(who.device);
    assert_int_equal(err.status, 401);
    assert_int_equal(err.code, 401002);
    if (message)
        assert_string_equal(err.message, message);
    if (part && !strstr(err.message, part))
        fail_msg("message '%s' lacks '%s'", err.message, part);
}

static void test_th_auth_service_policy_with_right_succeeds(void **state)
{
    char tok[512];
    struct th_auth_service_decision who;
    struct th_error err = {0};
    sign(HOST, OTHER_KEY, "iothubowner", tok, sizeof tok); /* the secondary key */
    struct th_auth_service_request rq = service(tok, TH_PERM_REGISTRY_WRITE, "RegistryWrite");
    assert_int_equal(th_auth_service(*state, &rq, &who, &err), TH_OK);
    assert_non_null(who.policy);
    assert_string_equal(who.policy->name, "iothubowner");
    assert_null(who.device);
    /* Any one of the rights asked for is enough; {host}/devices is a hub scope too. */
    sign(HOST "/devices", KEY, "registryRead", tok, sizeof tok);
    rq = service(tok, TH_PERM_SERVICE_CONNECT | TH_PERM_REGISTRY_READ, "ServiceConnect");
    assert_int_equal(th_auth_service(*state, &rq, &who, &err), TH_OK);
    assert_string_equal(who.policy->name, "registryRead");
    /* No right asked for: a valid token of any policy. */
    sign(HOST, KEY, "device", tok, sizeof tok);
    rq = service(tok, 0, NULL);
    assert_int_equal(th_auth_service(*state, &rq, &who, &err), TH_OK);
}

static void test_th_auth_service_missing_right_fails(void **state)
{
    char tok[512];
    sign(HOST, KEY, "registryRead", tok, sizeof tok);
    struct th_auth_service_request rq = service(tok, TH_PERM_REGISTRY_WRITE, "RegistryWrite");
    rq.operation = "PUT /devices/{}";
    expect_refused(
        state, &rq, TH_ERR_AUTH,
        "policy 'registryRead' does not grant RegistryWrite, which PUT /devices/{} needs", NULL);
}

static void test_th_auth_service_no_or_bad_token_fails(void **state)
{
    char long_token[TH_AUTH_MAX_TOKEN + 1];
    memset(long_token, 'a', sizeof long_token - 1);
    long_token[sizeof long_token - 1] = '\0';
    struct th_auth_service_request rq = service(NULL, TH_PERM_REGISTRY_READ, "RegistryRead");
    expect_refused(state, &rq, TH_ERR_AUTH, NULL, "no Authorization header");
    rq.token = "";
    expect_refused(state, &rq, TH_ERR_AUTH, NULL, "no Authorization header");
    rq.token = long_token;
    expect_refused(state, &rq, TH_ERR_AUTH, "the Authorization header is too long", NULL);
    rq.token = "Bearer abc";
    expect_refused(state, &rq, TH_ERR_AUTH, NULL,
                   "the Authorization header is not a valid SAS token: ");
}

static void test_th_auth_service_policy_token_refusals_fails(void **state)
{
    char tok[512];
    struct th_auth_service_request rq = service(tok, TH_PERM_REGISTRY_READ, "RegistryRead");
    sign(HOST "/devices/d1", KEY, "iothubowner", tok, sizeof tok);
    expect_refused(state, &rq, TH_ERR_AUTH, NULL, "is scoped to the hub");
    sign(HOST, KEY, "nosuch", tok, sizeof tok);
    expect_refused(state, &rq, TH_ERR_AUTH, "unknown shared access policy 'nosuch'", NULL);
    sign(HOST, DEV_KEY, "iothubowner", tok, sizeof tok);
    expect_refused(state, &rq, TH_ERR_AUTH,
                   "the SAS token's signature does not match the keys of policy 'iothubowner'",
                   NULL);
    sign(HOST, KEY, "iothubowner", tok, sizeof tok);
    rq.now_s = SE + 1;
    expect_refused(state, &rq, TH_ERR_EXPIRED,
                   "the SAS token has expired (se=1700000000); sign a new one", NULL);
}

/* The same skew as CONNECT: a token expired within it still counts. */
static void test_th_auth_service_expired_within_skew_succeeds(void **state)
{
    char tok[512];
    struct th_auth_service_decision who;
    struct th_error err = {0};
    sign(HOST, KEY, "iothubowner", tok, sizeof tok);
    struct th_auth_service_request rq = service(tok, TH_PERM_REGISTRY_READ, "RegistryRead");
    rq.now_s = SE + 10;
    rq.skew_s = 10;
    assert_int_equal(th_auth_service(*state, &rq, &who, &err), TH_OK);
    rq.now_s = SE + 11;
    expect_refused(state, &rq, TH_ERR_EXPIRED, NULL, "has expired");
}

static void test_th_auth_service_device_key_on_its_modules_succeeds(void **state)
{
    char tok[512];
    struct th_auth_service_decision who;
    struct th_error err = {0};
    /* The security agent's form (sr=<host>) and IoT Edge's (lower-cased device sr). */
    const char *resources[] = {HOST, HOST "/devices", HOST "/devices/D1"};
    for (size_t i = 0; i < 3; i++) {
        sign(resources[i], i == 1 ? DEV_KEY2 : DEV_KEY, NULL, tok, sizeof tok);
        struct th_auth_service_request rq = service(tok, TH_PERM_REGISTRY_READ, "RegistryRead");
        rq.module_registry_of = "d1";
        assert_int_equal(th_auth_service(*state, &rq, &who, &err), TH_OK);
        assert_null(who.policy);
        assert_non_null(who.device);
        assert_string_equal(who.device->device_id, "d1");
    }
}

static void test_th_auth_service_device_key_refusals_fails(void **state)
{
    char tok[512];
    sign(HOST, DEV_KEY, NULL, tok, sizeof tok);
    struct th_auth_service_request rq = service(tok, TH_PERM_REGISTRY_READ, "RegistryRead");
    /* Outside a module registry. */
    expect_refused(state, &rq, TH_ERR_AUTH, NULL, "grants DeviceConnect only");
    /* Another device's modules, that device's key not matching. */
    rq.module_registry_of = "off";
    sign(HOST, DEV_KEY2, NULL, tok, sizeof tok);
    expect_refused(state, &rq, TH_ERR_AUTH, NULL, "disabled");
    rq.module_registry_of = "ghost";
    expect_refused(state, &rq, TH_ERR_AUTH, NULL, "not registered");
    /* sr names another device. */
    sign(HOST "/devices/d1", DEV_KEY, NULL, tok, sizeof tok);
    rq.module_registry_of = "off";
    expect_refused(state, &rq, TH_ERR_AUTH, NULL, "'d1' cannot manage the modules of device 'off'");
    /* A module's own key. */
    sign(HOST "/devices/d1/modules/m1", MOD_KEY, NULL, tok, sizeof tok);
    rq.module_registry_of = "d1";
    expect_refused(state, &rq, TH_ERR_AUTH, NULL, "module token cannot manage");
    /* The wrong key, and an expired token. */
    sign(HOST, MOD_KEY, NULL, tok, sizeof tok);
    expect_refused(state, &rq, TH_ERR_AUTH, NULL, "keys of device 'd1'");
    sign(HOST, DEV_KEY, NULL, tok, sizeof tok);
    rq.now_s = SE + 1;
    expect_refused(state, &rq, TH_ERR_EXPIRED, NULL, "expired");
}

static void test_th_auth_service_no_registry_fails(void **state)
{
    struct th_auth_service_decision who;
    struct th_error err = {0};
    struct th_auth_service_request rq = service("x", 0, NULL);
    assert_int_equal(th_auth_service(NULL, &rq, &who, &err), TH_ERR_INVAL);
    assert_int_equal(th_auth_service(*state, NULL, &who, &err), TH_ERR_INVAL);
    assert_int_equal(th_auth_service(*state, &rq, NULL, &err), TH_ERR_INVAL);
}

/* ---- th_auth_right ---- */

static void test_th_auth_right_names_succeeds(void **state)
{
    (void)state;
    assert_int_equal(th_auth_right("RegistryRead"), TH_PERM_REGISTRY_READ);
    assert_int_equal(th_auth_right("registrywrite"), TH_PERM_REGISTRY_WRITE);
    assert_int_equal(th_auth_right("ServiceConnect"), TH_PERM_SERVICE_CONNECT);
    assert_int_equal(th_auth_right("DeviceConnect"), TH_PERM_DEVICE_CONNECT);
}

static void test_th_auth_right_unknown_fails(void **state)
{
    (void)state;
    assert_int_equal(th_auth_right("Registry"), 0);
    assert_int_equal(th_auth_right(""), 0);
    assert_int_equal(th_auth_right(NULL), 0);
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
        cmocka_unit_test(test_th_auth_verify_keys_empty_keys_fails),
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
        cmocka_unit_test_setup_teardown(test_th_auth_connect_device_key_succeeds, registry_setup,
                                        registry_teardown),
        cmocka_unit_test_setup_teardown(test_th_auth_connect_module_key_succeeds, registry_setup,
                                        registry_teardown),
        cmocka_unit_test_setup_teardown(test_th_auth_connect_device_connect_policy_succeeds,
                                        registry_setup, registry_teardown),
        cmocka_unit_test_setup_teardown(test_th_auth_connect_service_principal_succeeds,
                                        registry_setup, registry_teardown),
        cmocka_unit_test_setup_teardown(test_th_auth_connect_expired_within_skew_succeeds,
                                        registry_setup, registry_teardown),
        cmocka_unit_test_setup_teardown(test_th_auth_connect_missing_pieces_fails, registry_setup,
                                        registry_teardown),
        cmocka_unit_test_setup_teardown(test_th_auth_connect_client_id_mismatch_fails,
                                        registry_setup, registry_teardown),
        cmocka_unit_test_setup_teardown(test_th_auth_connect_host_mismatch_fails, registry_setup,
                                        registry_teardown),
        cmocka_unit_test_setup_teardown(test_th_auth_connect_unregistered_and_disabled_fails,
                                        registry_setup, registry_teardown),
        cmocka_unit_test_setup_teardown(test_th_auth_connect_wrong_key_or_scope_fails,
                                        registry_setup, registry_teardown),
        cmocka_unit_test_setup_teardown(test_th_auth_connect_service_refusals_fails, registry_setup,
                                        registry_teardown),
        cmocka_unit_test_setup_teardown(test_th_auth_connect_no_registry_fails, registry_setup,
                                        registry_teardown),
        cmocka_unit_test_setup_teardown(test_th_auth_service_policy_with_right_succeeds,
                                        registry_setup, registry_teardown),
        cmocka_unit_test_setup_teardown(test_th_auth_service_missing_right_fails, registry_setup,
                                        registry_teardown),
        cmocka_unit_test_setup_teardown(test_th_auth_service_no_or_bad_token_fails, registry_setup,
                                        registry_teardown),
        cmocka_unit_test_setup_teardown(test_th_auth_service_policy_token_refusals_fails,
                                        registry_setup, registry_teardown),
        cmocka_unit_test_setup_teardown(test_th_auth_service_expired_within_skew_succeeds,
                                        registry_setup, registry_teardown),
        cmocka_unit_test_setup_teardown(test_th_auth_service_device_key_on_its_modules_succeeds,
                                        registry_setup, registry_teardown),
        cmocka_unit_test_setup_teardown(test_th_auth_service_device_key_refusals_fails,
                                        registry_setup, registry_teardown),
        cmocka_unit_test_setup_teardown(test_th_auth_service_no_registry_fails, registry_setup,
                                        registry_teardown),
        cmocka_unit_test(test_th_auth_right_names_succeeds),
        cmocka_unit_test(test_th_auth_right_unknown_fails),
    };
    return cmocka_run_group_tests_name("auth", tests, NULL, NULL);
}
