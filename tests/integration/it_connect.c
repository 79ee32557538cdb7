/*
 * it_connect.c - CONNECT authentication against the real broker + plugin
 * (iothub-protocol.md sections 2 and 3): SAS tokens of devices, modules and
 * service principals, lower-cased resource URIs (IoT Edge, the SAS article),
 * the CONNACK refusal code, takeover and connection state.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <mosquitto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "harness.h"
#include "registry.h"
#include "sas.h"
#include "util.h"

/* Mixed-case identities for the lower-cased resource URI tests (created on first use). */
#define CASE_DEV "CaseDev"
#define CASE_DEV_KEY "dHdpbmh1Yi1pbnRlZ3JhdGlvbi1jYXNlLWtleS0wMDE="
#define CASE_MOD "CaseMod"
#define CASE_MOD_KEY "dHdpbmh1Yi1pbnRlZ3JhdGlvbi1jYXNlLW1vZC0wMDE="
#define OTHER_DEV "OtherDev"
#define OTHER_DEV_KEY "dHdpbmh1Yi1pbnRlZ3JhdGlvbi1vdGhlci1rZXktMDE="

static struct it_hub hub;

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

/* Connects with explicit fields; returns the CONNACK code (-1: none) and closes the client. */
static int try_connect(const char *client_id, const char *username, const char *password,
                       int protocol)
{
    struct it_connect_opts o = {
        .client_id = client_id, .username = username, .password = password, .protocol = protocol};
    int connack;
    struct it_client *c = it_client_connect(&hub, &o, &connack);
    if (connack != 0) {
        /* a refused connection must also be closed by the hub (MQTT 3.1.1, 3.2.2.5) */
        assert_true(it_client_wait_disconnect(c, IT_WAIT_MS));
    }
    it_client_close(c);
    return connack;
}

/* Device connect with username and client id of `device`, password given. */
static int try_device(const char *device, const char *password)
{
    char *user = it_device_username(hub.hub_name, device, NULL);
    int rc = try_connect(device, user, password, 0);
    free(user);
    return rc;
}

static char *connection_state(struct it_client *svc, const char *device_id)
{
    cJSON *r =
        it_control(svc, IT_WAIT_MS, "{\"command\":\"getDevice\",\"deviceId\":\"%s\"}", device_id);
    assert_non_null(r);
    assert_null(cJSON_GetObjectItemCaseSensitive(r, "error"));
    const char *s = it_json_str(r, "data.connectionState");
    assert_non_null(s);
    char *out = strdup(s);
    cJSON_Delete(r);
    return out;
}

static void test_connect_device_valid_token_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, true);
    struct it_client *dev = it_device_open(&hub, IT_DEV1, NULL, IT_DEV1_KEY);

    cJSON *ev = it_event_wait(svc, "connected", IT_DEV1, NULL, NULL, NULL, IT_WAIT_MS);
    assert_non_null(ev);
    assert_string_equal(it_json_str(ev, "kind"), "connected");
    assert_string_equal(it_json_str(ev, "deviceId"), IT_DEV1);
    assert_string_equal(it_json_str(ev, "data.clientId"), IT_DEV1);
    assert_string_equal(it_json_str(ev, "data.apiVersion"), IT_API_VERSION);
    assert_string_equal(it_json_str(ev, "data.auth"), "sas");
    cJSON_Delete(ev);

    char *st = connection_state(svc, IT_DEV1);
    assert_string_equal(st, "Connected");
    free(st);
    it_client_close(dev);
    it_client_close(svc);
}

static void test_connect_module_valid_token_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, true);
    struct it_client *mod = it_device_open(&hub, IT_DEV1, IT_MOD1, IT_MOD1_KEY);
    cJSON *ev = it_event_wait(svc, "connected", IT_DEV1, IT_MOD1, NULL, NULL, IT_WAIT_MS);
    assert_non_null(ev);
    assert_string_equal(it_json_str(ev, "moduleId"), IT_MOD1);
    assert_string_equal(it_json_str(ev, "data.clientId"), IT_DEV1 "/" IT_MOD1);
    cJSON_Delete(ev);
    it_client_close(mod);
    it_client_close(svc);
}

static void test_connect_secondary_key_succeeds(void **state)
{
    (void)state;
    char *tok = it_device_token(hub.hub_name, IT_DEV1, NULL, IT_DEV1_KEY2, it_expiry());
    assert_int_equal(try_device(IT_DEV1, tok), 0);
    free(tok);
}

static void test_connect_wrong_key_fails(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, true);
    char *tok = it_device_token(hub.hub_name, IT_DEV1, NULL, IT_DEV2_KEY, it_expiry());
    assert_int_equal(try_device(IT_DEV1, tok), 5);
    free(tok);
    cJSON *ev = it_event_wait(svc, "refused", IT_DEV1, NULL, NULL, NULL, IT_WAIT_MS);
    assert_non_null(ev);
    assert_string_equal(it_json_str(ev, "data.clientId"), IT_DEV1);
    assert_non_null(it_json_str(ev, "data.reason"));
    cJSON_Delete(ev);
    it_client_close(svc);
}

static void test_connect_expired_token_fails(void **state)
{
    (void)state;
    char *tok = it_device_token(hub.hub_name, IT_DEV1, NULL, IT_DEV1_KEY, it_expiry() - 7200);
    assert_int_equal(try_device(IT_DEV1, tok), 5);
    free(tok);
}

static void test_connect_tampered_signature_fails(void **state)
{
    (void)state;
    char *tok = it_device_token(hub.hub_name, IT_DEV1, NULL, IT_DEV1_KEY, it_expiry());
    char *sig = strstr(tok, "sig=");
    assert_non_null(sig);
    sig += 4;
    *sig = *sig == 'A' ? 'B' : 'A';
    assert_int_equal(try_device(IT_DEV1, tok), 5);
    free(tok);
}

static void test_connect_unknown_device_fails(void **state)
{
    (void)state;
    char *tok = it_device_token(hub.hub_name, "it-nobody", NULL, IT_DEV1_KEY, it_expiry());
    assert_int_equal(try_device("it-nobody", tok), 5);
    free(tok);
}

static void test_connect_disabled_device_fails(void **state)
{
    (void)state;
    char *tok = it_device_token(hub.hub_name, IT_DISABLED, NULL, IT_DISABLED_KEY, it_expiry());
    assert_int_equal(try_device(IT_DISABLED, tok), 5);
    free(tok);
}

static void test_connect_missing_password_fails(void **state)
{
    (void)state;
    assert_int_equal(try_device(IT_DEV1, NULL), 5);
}

static void test_connect_username_other_device_fails(void **state)
{
    (void)state;
    /* client id and token name it-dev1, the username names it-dev2 */
    char *user = it_device_username(hub.hub_name, IT_DEV2, NULL);
    char *tok = it_device_token(hub.hub_name, IT_DEV1, NULL, IT_DEV1_KEY, it_expiry());
    assert_int_equal(try_connect(IT_DEV1, user, tok, 0), 5);
    free(user);
    free(tok);
}

static void test_connect_client_id_other_device_fails(void **state)
{
    (void)state;
    /* username and token name it-dev1, the client id is it-dev2 */
    char *user = it_device_username(hub.hub_name, IT_DEV1, NULL);
    char *tok = it_device_token(hub.hub_name, IT_DEV1, NULL, IT_DEV1_KEY, it_expiry());
    assert_int_equal(try_connect(IT_DEV2, user, tok, 0), 5);
    free(user);
    free(tok);
}

static void test_connect_token_of_other_device_fails(void **state)
{
    (void)state;
    /* a valid token of it-dev2 presented by it-dev1 */
    char *tok = it_device_token(hub.hub_name, IT_DEV2, NULL, IT_DEV2_KEY, it_expiry());
    assert_int_equal(try_device(IT_DEV1, tok), 5);
    free(tok);
}

/* Register CaseDev (with module CaseMod) and OtherDev once per hub. */
static void case_identities(void)
{
    static bool done;
    if (done)
        return;
    struct it_client *svc = it_service_open(&hub, false);
    cJSON *r =
        it_control_ok(svc, "{\"command\":\"createDevice\",\"deviceId\":\"" CASE_DEV "\","
                           "\"authentication\":{\"symmetricKey\":{\"primaryKey\":\"" CASE_DEV_KEY
                           "\",\"secondaryKey\":\"" CASE_DEV_KEY "\"}}}");
    cJSON_Delete(r);
    r = it_control_ok(svc, "{\"command\":\"createModule\",\"deviceId\":\"" CASE_DEV
                           "\",\"moduleId\":\"" CASE_MOD "\",\"authentication\":{\"symmetricKey\":"
                           "{\"primaryKey\":\"" CASE_MOD_KEY "\",\"secondaryKey\":\"" CASE_MOD_KEY
                           "\"}}}");
    cJSON_Delete(r);
    r = it_control_ok(svc, "{\"command\":\"createDevice\",\"deviceId\":\"" OTHER_DEV "\","
                           "\"authentication\":{\"symmetricKey\":{\"primaryKey\":\"" OTHER_DEV_KEY
                           "\",\"secondaryKey\":\"" OTHER_DEV_KEY "\"}}}");
    cJSON_Delete(r);
    it_client_close(svc);
    done = true;
}

/* The hub name in lower case, as IoT Edge writes the whole audience. */
static char *lower_host(void)
{
    char *h = strdup(hub.hub_name);
    for (char *c = h; *c; c++)
        *c = (char)tolower((unsigned char)*c);
    return h;
}

/* A token whose `sr` is `sr` exactly as given (no encoding added), signed over that text. */
static char *token_for_sr(const char *sr, const char *key_b64, long long se)
{
    uint8_t key[64], mac[32];
    size_t key_len = 0, sig_len = 0;
    unsigned int mac_len = 0;
    char b64[64], sig[192];
    assert_int_equal(th_b64_decode(key_b64, strlen(key_b64), key, sizeof key, &key_len), TH_OK);
    char *msg = it_strdupf("%s\n%lld", sr, se);
    assert_non_null(HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)msg, strlen(msg),
                         mac, &mac_len));
    free(msg);
    assert_int_equal(th_b64_encode(mac, mac_len, b64, sizeof b64), TH_OK);
    assert_int_equal(th_pct_encode(b64, strlen(b64), sig, sizeof sig, &sig_len), TH_OK);
    return it_strdupf("SharedAccessSignature sr=%s&sig=%s&se=%lld", sr, sig, se);
}

/* A token for `resource` with upper-case escapes (th_sas_sign, as IoT Edge's percent_encode). */
static char *token_for_resource(const char *resource, const char *key_b64)
{
    char buf[1024];
    assert_int_equal(th_sas_sign(resource, key_b64, it_expiry(), NULL, buf, sizeof buf), TH_OK);
    return strdup(buf);
}

static void test_connect_lower_cased_resource_succeeds(void **state)
{
    (void)state;
    case_identities();
    char *host = lower_host();
    /* The three spellings of the lower-cased URI that clients send: raw (full C SDK style),
     * lower-case escapes (the SAS article), upper-case escapes (IoT Edge). */
    char *raw = it_strdupf("%s/devices/casedev", host);
    char *lower_escapes = it_strdupf("%s%%2fdevices%%2fcasedev", host);
    char *toks[] = {token_for_sr(raw, CASE_DEV_KEY, it_expiry()),
                    token_for_sr(lower_escapes, CASE_DEV_KEY, it_expiry()),
                    token_for_resource(raw, CASE_DEV_KEY)};
    for (size_t i = 0; i < sizeof toks / sizeof toks[0]; i++) {
        assert_int_equal(try_device(CASE_DEV, toks[i]), 0);
        free(toks[i]);
    }

    /* A module: {host}/devices/{d}/modules/{m}, all lower case. */
    char *mod_uri = it_strdupf("%s/devices/casedev/modules/casemod", host);
    char *mod_tok = token_for_resource(mod_uri, CASE_MOD_KEY);
    char *mod_user = it_device_username(hub.hub_name, CASE_DEV, CASE_MOD);
    assert_int_equal(try_connect(CASE_DEV "/" CASE_MOD, mod_user, mod_tok, 0), 0);

    free(mod_user);
    free(mod_tok);
    free(mod_uri);
    free(lower_escapes);
    free(raw);
    free(host);
}

static void test_connect_lower_cased_resource_of_other_device_fails(void **state)
{
    (void)state;
    case_identities();
    struct it_client *svc = it_service_open(&hub, true);
    char *host = lower_host();

    /* CaseDev's own key, but sr names another device (registered, or only similar). */
    char *other = it_strdupf("%s/devices/otherdev", host);
    char *tok = token_for_resource(other, CASE_DEV_KEY);
    assert_int_equal(try_device(CASE_DEV, tok), 5);
    cJSON *ev = it_event_wait(svc, "refused", CASE_DEV, NULL, NULL, NULL, IT_WAIT_MS);
    assert_non_null(ev);
    assert_non_null(strstr(it_json_str(ev, "data.reason"), "'otherdev', not for 'CaseDev'"));
    cJSON_Delete(ev);
    free(tok);

    char *similar = it_strdupf("%s/devices/casedev2", host);
    tok = token_for_resource(similar, CASE_DEV_KEY);
    assert_int_equal(try_device(CASE_DEV, tok), 5);
    free(tok);

    /* OtherDev's valid lower-cased token presented as CaseDev. */
    tok = token_for_resource(other, OTHER_DEV_KEY);
    assert_int_equal(try_device(CASE_DEV, tok), 5);
    free(tok);

    /* A module token of CaseDev/CaseMod does not connect the device. */
    char *mod_uri = it_strdupf("%s/devices/casedev/modules/casemod", host);
    tok = token_for_resource(mod_uri, CASE_MOD_KEY);
    assert_int_equal(try_device(CASE_DEV, tok), 5);
    free(tok);

    free(mod_uri);
    free(similar);
    free(other);
    free(host);
    it_client_close(svc);
}

static void test_connect_mqtt31_fails(void **state)
{
    (void)state;
    char *user = it_device_username(hub.hub_name, IT_DEV1, NULL);
    char *tok = it_device_token(hub.hub_name, IT_DEV1, NULL, IT_DEV1_KEY, it_expiry());
    assert_int_equal(try_connect(IT_DEV1, user, tok, MQTT_PROTOCOL_V31), 5);
    free(user);
    free(tok);
}

static void test_connect_service_wrong_key_fails(void **state)
{
    (void)state;
    char pass[1024];
    assert_int_equal(
        th_sas_sign(hub.hub_name, IT_DEV1_KEY, it_expiry(), "iothubowner", pass, sizeof pass),
        TH_OK);
    assert_int_equal(try_connect("svc-wrong-key", hub.hub_name, pass, 0), 5);
}

static void test_connect_takeover_keeps_connected_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    struct it_client *first = it_device_open(&hub, IT_DEV2, NULL, IT_DEV2_KEY);
    struct it_client *second = it_device_open(&hub, IT_DEV2, NULL, IT_DEV2_KEY);

    /* the hub drops the older connection */
    assert_true(it_client_wait_disconnect(first, IT_WAIT_MS));
    /* the newer one works: a twin round trip also orders everything the broker did before */
    assert_int_equal(it_client_subscribe(second, "$iothub/twin/res/#", 1, IT_WAIT_MS), 1);
    int status;
    struct it_msg *res = it_twin_request(second, "takeover", NULL, &status);
    assert_non_null(res);
    assert_int_equal(status, 200);
    it_msg_free(res);
    assert_true(it_client_is_connected(second));

    char *st = connection_state(svc, IT_DEV2);
    assert_string_equal(st, "Connected");
    free(st);
    it_client_close(first);
    it_client_close(second);
    it_client_close(svc);
}

static void test_connect_clean_disconnect_sets_disconnected_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, true);
    struct it_client *dev = it_device_open(&hub, IT_DEV3, NULL, IT_DEV3_KEY);
    cJSON *ev = it_event_wait(svc, "connected", IT_DEV3, NULL, NULL, NULL, IT_WAIT_MS);
    assert_non_null(ev);
    cJSON_Delete(ev);
    it_client_close(dev);
    ev = it_event_wait(svc, "disconnected", IT_DEV3, NULL, NULL, NULL, IT_WAIT_MS);
    assert_non_null(ev);
    assert_string_equal(it_json_str(ev, "kind"), "disconnected");
    cJSON_Delete(ev);

    char *st = connection_state(svc, IT_DEV3);
    assert_string_equal(st, "Disconnected");
    free(st);
    it_client_close(svc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect_device_valid_token_succeeds),
        cmocka_unit_test(test_connect_module_valid_token_succeeds),
        cmocka_unit_test(test_connect_secondary_key_succeeds),
        cmocka_unit_test(test_connect_wrong_key_fails),
        cmocka_unit_test(test_connect_expired_token_fails),
        cmocka_unit_test(test_connect_tampered_signature_fails),
        cmocka_unit_test(test_connect_unknown_device_fails),
        cmocka_unit_test(test_connect_disabled_device_fails),
        cmocka_unit_test(test_connect_missing_password_fails),
        cmocka_unit_test(test_connect_username_other_device_fails),
        cmocka_unit_test(test_connect_client_id_other_device_fails),
        cmocka_unit_test(test_connect_token_of_other_device_fails),
        cmocka_unit_test(test_connect_lower_cased_resource_succeeds),
        cmocka_unit_test(test_connect_lower_cased_resource_of_other_device_fails),
        cmocka_unit_test(test_connect_mqtt31_fails),
        cmocka_unit_test(test_connect_service_wrong_key_fails),
        cmocka_unit_test(test_connect_takeover_keeps_connected_succeeds),
        cmocka_unit_test(test_connect_clean_disconnect_sets_disconnected_succeeds),
    };
    return cmocka_run_group_tests_name("it_connect", tests, group_setup, group_teardown);
}
