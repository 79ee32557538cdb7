/*
 * it_registry.c - the control API's registry commands against the real broker +
 * plugin (docs/control-api.md): createDevice, getDevice, listDevices,
 * updateDevice, deleteDevice, createModule, updateModule, deleteModule,
 * getStatistics and every refusal they document, the rights a shared access
 * policy must hold, devices kept away from $CONTROL, and the refusals of the
 * twin write commands (nothing changes when a write is refused).
 *
 * Every identity change is checked where it matters: generated keys by a real
 * device CONNECT, a disable or key change by the connection being closed and
 * the old credentials refused (CONNACK 5), a delete by the identity and its
 * modules being gone.
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

static struct it_hub hub;

/* 32-byte keys, base64 (see the test that uses each). */
#define KEY_EXPLICIT_1 "aXQtcmVnaXN0cnktZXhwbGljaXQtcHJpbWFyeS0wMSE="
#define KEY_EXPLICIT_2 "aXQtcmVnaXN0cnktZXhwbGljaXQtc2Vjb25kLTAyISE="
#define KEY_ROTATED_1 "aXQtcmVnaXN0cnktcm90YXRlZC1wcmltYXJ5LTAwMyE="
#define KEY_ROTATED_2 "aXQtcmVnaXN0cnktcm90YXRlZC1zZWNvbmQtMDA0ISE="

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

/* ---- helpers ---- */

/* Decoded length of standard base64 text, or -1 when it is not valid base64. */
static int b64_decoded_len(const char *s)
{
    size_t n = strlen(s), pad = 0;
    if (n == 0 || n % 4 != 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        bool alpha = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                     (ch >= '0' && ch <= '9') || ch == '+' || ch == '/';
        if (ch == '=') {
            if (i < n - 2)
                return -1;
            pad++;
        } else if (!alpha || pad) {
            return -1;
        }
    }
    return (int)(n / 4 * 3 - pad);
}

/* CONNACK code of a device (or module) CONNECT with a token signed by key; the client is closed. */
static int try_identity(const char *device, const char *module, const char *key)
{
    char *user = it_device_username(hub.hub_name, device, module);
    char *pass = it_device_token(hub.hub_name, device, module, key, it_expiry());
    char *cid = module ? it_strdupf("%s/%s", device, module) : strdup(device);
    struct it_connect_opts o = {.client_id = cid, .username = user, .password = pass};
    int connack;
    struct it_client *c = it_client_connect(&hub, &o, &connack);
    if (connack != 0)
        assert_true(it_client_wait_disconnect(c, IT_WAIT_MS));
    it_client_close(c);
    free(user);
    free(pass);
    free(cid);
    return connack;
}

/* A key of an identity JSON ("primaryKey" / "secondaryKey"), copied; fails the test if absent. */
static char *identity_key(const cJSON *identity, const char *which)
{
    char path[64];
    snprintf(path, sizeof path, "authentication.symmetricKey.%s", which);
    const char *k = it_json_str(identity, path);
    assert_non_null(k);
    return strdup(k);
}

/*
 * Send several commands in one request (commands_json: the text of the array)
 * and return the "responses" array of the answer (caller cJSON_Deletes). The
 * hub handles one request in one callback, so the answers describe one moment.
 */
static cJSON *control_batch(struct it_client *svc, const char *commands_json)
{
    char *req = it_strdupf("{\"commands\":%s}", commands_json);
    assert_int_equal(it_client_publish_str(svc, TH_CONTROL_TOPIC, req, 1), MOSQ_ERR_SUCCESS);
    free(req);
    struct it_msg *m = it_client_wait_topic(svc, TH_CONTROL_RESPONSE_TOPIC, IT_WAIT_MS);
    assert_non_null(m);
    cJSON *doc = it_msg_json(m);
    it_msg_free(m);
    assert_non_null(doc);
    cJSON *arr = cJSON_DetachItemFromObjectCaseSensitive(doc, "responses");
    cJSON_Delete(doc);
    assert_true(cJSON_IsArray(arr));
    return arr;
}

static bool pred_any(const cJSON *record, void *arg)
{
    (void)record;
    (void)arg;
    return true;
}

/* Number of entries of a JSON array whose string member `field` equals value. */
static int count_with(const cJSON *arr, const char *field, const char *value)
{
    int n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr)
    {
        const char *v = it_json_str(e, field);
        if (v && strcmp(v, value) == 0)
            n++;
    }
    return n;
}

/* ---- createDevice ---- */

static void test_registry_create_device_generated_keys_connect_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, true);
    cJSON *d = it_control_ok(svc, "{\"command\":\"createDevice\",\"deviceId\":\"reg-gen\"}");
    assert_string_equal(it_json_str(d, "deviceId"), "reg-gen");
    assert_string_equal(it_json_str(d, "status"), "enabled");
    assert_string_equal(it_json_str(d, "connectionState"), "Disconnected");
    assert_non_null(it_json_str(d, "etag"));
    assert_non_null(it_json_str(d, "generationId"));
    char *pk = identity_key(d, "primaryKey"), *sk = identity_key(d, "secondaryKey");
    cJSON_Delete(d);
    /* generated keys: 32 random bytes each, and not the same */
    assert_int_equal(b64_decoded_len(pk), 32);
    assert_int_equal(b64_decoded_len(sk), 32);
    assert_string_not_equal(pk, sk);

    cJSON *ev = it_event_wait(svc, "deviceCreated", "reg-gen", NULL, pred_any, NULL, IT_WAIT_MS);
    assert_non_null(ev);
    cJSON_Delete(ev);

    /* getDevice returns the same keys */
    d = it_control_ok(svc, "{\"command\":\"getDevice\",\"deviceId\":\"reg-gen\"}");
    assert_string_equal(it_json_str(d, "authentication.symmetricKey.primaryKey"), pk);
    assert_string_equal(it_json_str(d, "authentication.symmetricKey.secondaryKey"), sk);
    cJSON_Delete(d);

    /* both keys work for a real device CONNECT; a twin GET works on the new identity */
    struct it_client *dev = it_device_open(&hub, "reg-gen", NULL, pk);
    assert_int_equal(it_client_subscribe(dev, "$iothub/twin/res/#", 1, IT_WAIT_MS), 1);
    int status;
    struct it_msg *m = it_twin_request(dev, "gen-get", NULL, &status);
    assert_non_null(m);
    assert_int_equal(status, 200);
    it_msg_free(m);
    it_client_close(dev);
    assert_int_equal(try_identity("reg-gen", NULL, sk), 0);
    /* a key of another device does not */
    assert_int_equal(try_identity("reg-gen", NULL, IT_DEV1_KEY), 5);
    free(pk);
    free(sk);
    it_client_close(svc);
}

static void test_registry_create_device_explicit_keys_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    cJSON *d = it_control_ok(svc,
                             "{\"command\":\"createDevice\",\"deviceId\":\"reg-explicit\","
                             "\"statusReason\":\"made by it_registry\","
                             "\"authentication\":{\"symmetricKey\":{\"primaryKey\":\"%s\","
                             "\"secondaryKey\":\"%s\"}}}",
                             KEY_EXPLICIT_1, KEY_EXPLICIT_2);
    assert_string_equal(it_json_str(d, "authentication.symmetricKey.primaryKey"), KEY_EXPLICIT_1);
    assert_string_equal(it_json_str(d, "authentication.symmetricKey.secondaryKey"), KEY_EXPLICIT_2);
    assert_string_equal(it_json_str(d, "statusReason"), "made by it_registry");
    cJSON_Delete(d);
    assert_int_equal(try_identity("reg-explicit", NULL, KEY_EXPLICIT_1), 0);
    assert_int_equal(try_identity("reg-explicit", NULL, KEY_EXPLICIT_2), 0);
    assert_int_equal(try_identity("reg-explicit", NULL, KEY_ROTATED_1), 5);

    /* created disabled: registered, but it cannot connect */
    d = it_control_ok(svc,
                      "{\"command\":\"createDevice\",\"deviceId\":\"reg-born-disabled\","
                      "\"status\":\"disabled\",\"authentication\":{\"symmetricKey\":"
                      "{\"primaryKey\":\"%s\",\"secondaryKey\":\"\"}}}",
                      KEY_EXPLICIT_1);
    assert_string_equal(it_json_str(d, "status"), "disabled");
    /* an empty key is generated */
    char *sk = identity_key(d, "secondaryKey");
    assert_int_equal(b64_decoded_len(sk), 32);
    free(sk);
    cJSON_Delete(d);
    assert_int_equal(try_identity("reg-born-disabled", NULL, KEY_EXPLICIT_1), 5);
    it_client_close(svc);
}

static void test_registry_create_device_duplicate_fails(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    cJSON *before = it_control_ok(svc, "{\"command\":\"getDevice\",\"deviceId\":\"" IT_DEV1 "\"}");
    cJSON *e = it_control_err(svc, 409, 409001,
                              "{\"command\":\"createDevice\",\"deviceId\":\"" IT_DEV1 "\","
                              "\"authentication\":{\"symmetricKey\":{\"primaryKey\":\"%s\"}}}",
                              KEY_EXPLICIT_1);
    cJSON_Delete(e);
    /* the existing device is untouched: same keys, etag, generation */
    cJSON *after = it_control_ok(svc, "{\"command\":\"getDevice\",\"deviceId\":\"" IT_DEV1 "\"}");
    assert_string_equal(it_json_str(after, "authentication.symmetricKey.primaryKey"), IT_DEV1_KEY);
    assert_string_equal(it_json_str(after, "etag"), it_json_str(before, "etag"));
    assert_string_equal(it_json_str(after, "generationId"), it_json_str(before, "generationId"));
    cJSON_Delete(before);
    cJSON_Delete(after);
    /* ids are case-sensitive: another case is another device */
    cJSON *d = it_control_ok(svc, "{\"command\":\"createDevice\",\"deviceId\":\"IT-DEV1\"}");
    cJSON_Delete(d);
    it_client_close(svc);
}

static void test_registry_create_device_bad_id_or_key_fails(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    char long_id[130];
    memset(long_id, 'x', 129);
    long_id[129] = '\0';
    const char *bad_ids[] = {"bad id", "slash/inside", "", long_id, "tab\\there", "caf\\u00e9"};
    for (size_t i = 0; i < sizeof bad_ids / sizeof bad_ids[0]; i++) {
        cJSON *e = it_control_err(svc, 400, 400004,
                                  "{\"command\":\"createDevice\",\"deviceId\":\"%s\"}", bad_ids[i]);
        cJSON_Delete(e);
    }
    /* 128 characters is the limit, and is accepted */
    long_id[128] = '\0';
    cJSON *d = it_control_ok(svc, "{\"command\":\"createDevice\",\"deviceId\":\"%s\"}", long_id);
    cJSON_Delete(d);
    /* a missing id */
    cJSON *e = it_control_err(svc, 400, 400004, "{\"command\":\"createDevice\"}");
    cJSON_Delete(e);
    /* bad keys: not base64, too short (8 bytes); nothing is created */
    e = it_control_err(svc, 400, 400004,
                       "{\"command\":\"createDevice\",\"deviceId\":\"reg-badkey\","
                       "\"authentication\":{\"symmetricKey\":{\"primaryKey\":\"not base64!\"}}}");
    cJSON_Delete(e);
    e = it_control_err(svc, 400, 400004,
                       "{\"command\":\"createDevice\",\"deviceId\":\"reg-badkey\","
                       "\"authentication\":{\"symmetricKey\":{\"primaryKey\":\"c2hvcnRrZXk=\"}}}");
    cJSON_Delete(e);
    e = it_control_err(svc, 400, 400004,
                       "{\"command\":\"createDevice\",\"deviceId\":\"reg-badkey\","
                       "\"status\":\"Enabled\"}");
    cJSON_Delete(e);
    e = it_control_err(svc, 404, 404001, "{\"command\":\"getDevice\",\"deviceId\":\"reg-badkey\"}");
    cJSON_Delete(e);
    it_client_close(svc);
}

/* ---- getDevice / listDevices ---- */

static void test_registry_get_device_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    cJSON *d = it_control_ok(svc, "{\"command\":\"getDevice\",\"deviceId\":\"" IT_DEV2 "\"}");
    assert_string_equal(it_json_str(d, "deviceId"), IT_DEV2);
    assert_string_equal(it_json_str(d, "authentication.symmetricKey.primaryKey"), IT_DEV2_KEY);
    assert_string_equal(it_json_str(d, "status"), "enabled");
    assert_null(it_json_get(d, "moduleId"));
    cJSON_Delete(d);
    d = it_control_ok(svc, "{\"command\":\"getDevice\",\"deviceId\":\"" IT_DEV1
                           "\",\"moduleId\":\"" IT_MOD1 "\"}");
    assert_string_equal(it_json_str(d, "deviceId"), IT_DEV1);
    assert_string_equal(it_json_str(d, "moduleId"), IT_MOD1);
    assert_string_equal(it_json_str(d, "authentication.symmetricKey.primaryKey"), IT_MOD1_KEY);
    cJSON_Delete(d);
    cJSON *e =
        it_control_err(svc, 404, 404001, "{\"command\":\"getDevice\",\"deviceId\":\"nope\"}");
    cJSON_Delete(e);
    /* case-sensitive */
    e = it_control_err(svc, 404, 404001, "{\"command\":\"getDevice\",\"deviceId\":\"IT-DEV2\"}");
    cJSON_Delete(e);
    e = it_control_err(svc, 404, 404010,
                       "{\"command\":\"getDevice\",\"deviceId\":\"" IT_DEV1
                       "\",\"moduleId\":\"nope\"}");
    cJSON_Delete(e);
    it_client_close(svc);
}

static void test_registry_list_devices_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    cJSON *resp = control_batch(svc, "[{\"command\":\"listDevices\",\"correlationData\":1},"
                                     "{\"command\":\"getStatistics\",\"correlationData\":2}]");
    assert_int_equal(cJSON_GetArraySize(resp), 2);
    const cJSON *list = it_json_get(cJSON_GetArrayItem(resp, 0), "data");
    const cJSON *stats = it_json_get(cJSON_GetArrayItem(resp, 1), "data");
    assert_true(cJSON_IsArray(list));
    assert_non_null(stats);
    /* every registered device once, with its status; nothing else counted */
    const char *expect[] = {IT_DEV1, IT_DEV2, IT_DEV3, IT_DEV4, IT_DISABLED, TH_DEV_DEVICE_ID};
    for (size_t i = 0; i < sizeof expect / sizeof expect[0]; i++)
        assert_int_equal(count_with(list, "deviceId", expect[i]), 1);
    assert_int_equal(cJSON_GetArraySize(list), (int)it_json_num(stats, "totalDeviceCount", -1));
    int disabled = count_with(list, "status", "disabled");
    assert_int_equal(disabled, (int)it_json_num(stats, "disabledDeviceCount", -1));
    const cJSON *e;
    cJSON_ArrayForEach(e, list)
    {
        assert_null(it_json_get(e, "moduleId"));
        assert_non_null(it_json_str(e, "authentication.symmetricKey.primaryKey"));
        if (strcmp(it_json_str(e, "deviceId"), IT_DISABLED) == 0)
            assert_string_equal(it_json_str(e, "status"), "disabled");
        if (strcmp(it_json_str(e, "deviceId"), IT_DEV1) == 0)
            assert_string_equal(it_json_str(e, "status"), "enabled");
    }
    cJSON_Delete(resp);
    /* "top" stops the list early; a negative top is refused */
    cJSON *two = it_control_ok(svc, "{\"command\":\"listDevices\",\"top\":2}");
    assert_int_equal(cJSON_GetArraySize(two), 2);
    cJSON_Delete(two);
    cJSON *e2 = it_control_err(svc, 400, 400004, "{\"command\":\"listDevices\",\"top\":-1}");
    cJSON_Delete(e2);
    it_client_close(svc);
}

/* ---- updateDevice ---- */

static void test_registry_update_device_disable_closes_connection_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, true);
    cJSON *d = it_control_ok(svc,
                             "{\"command\":\"createDevice\",\"deviceId\":\"reg-dis\","
                             "\"authentication\":{\"symmetricKey\":{\"primaryKey\":\"%s\"}}}",
                             KEY_EXPLICIT_1);
    cJSON_Delete(d);
    d = it_control_ok(svc,
                      "{\"command\":\"createModule\",\"deviceId\":\"reg-dis\",\"moduleId\":\"m\","
                      "\"authentication\":{\"symmetricKey\":{\"primaryKey\":\"%s\"}}}",
                      KEY_EXPLICIT_2);
    cJSON_Delete(d);
    struct it_client *dev = it_device_open(&hub, "reg-dis", NULL, KEY_EXPLICIT_1);
    struct it_client *mod = it_device_open(&hub, "reg-dis", "m", KEY_EXPLICIT_2);

    d = it_control_ok(svc, "{\"command\":\"updateDevice\",\"deviceId\":\"reg-dis\","
                           "\"status\":\"disabled\",\"statusReason\":\"maintenance\"}");
    assert_string_equal(it_json_str(d, "status"), "disabled");
    assert_string_equal(it_json_str(d, "statusReason"), "maintenance");
    cJSON_Delete(d);
    /* the device and its module lose their connections at once */
    assert_true(it_client_wait_disconnect(dev, IT_WAIT_MS));
    assert_true(it_client_wait_disconnect(mod, IT_WAIT_MS));
    cJSON *ev = it_event_wait(svc, "identityUpdated", "reg-dis", NULL, pred_any, NULL, IT_WAIT_MS);
    assert_non_null(ev);
    cJSON_Delete(ev);
    ev = it_event_wait(svc, "disconnected", "reg-dis", NULL, pred_any, NULL, IT_WAIT_MS);
    assert_non_null(ev);
    cJSON_Delete(ev);
    it_client_close(dev);
    it_client_close(mod);
    /* and reconnecting is refused: not authorized */
    assert_int_equal(try_identity("reg-dis", NULL, KEY_EXPLICIT_1), 5);
    assert_int_equal(try_identity("reg-dis", "m", KEY_EXPLICIT_2), 5);
    d = it_control_ok(svc, "{\"command\":\"getDevice\",\"deviceId\":\"reg-dis\"}");
    assert_string_equal(it_json_str(d, "status"), "disabled");
    assert_string_equal(it_json_str(d, "connectionState"), "Disconnected");
    cJSON_Delete(d);

    /* enabled again: both connect */
    d = it_control_ok(
        svc, "{\"command\":\"updateDevice\",\"deviceId\":\"reg-dis\",\"status\":\"enabled\"}");
    cJSON_Delete(d);
    assert_int_equal(try_identity("reg-dis", NULL, KEY_EXPLICIT_1), 0);
    assert_int_equal(try_identity("reg-dis", "m", KEY_EXPLICIT_2), 0);
    it_client_close(svc);
}

static void test_registry_update_device_etag_mismatch_fails(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    cJSON *d = it_control_ok(svc, "{\"command\":\"createDevice\",\"deviceId\":\"reg-etag\"}");
    char *etag0 = strdup(it_json_str(d, "etag"));
    cJSON_Delete(d);

    cJSON *e = it_control_err(svc, 412, 412001,
                              "{\"command\":\"updateDevice\",\"deviceId\":\"reg-etag\","
                              "\"status\":\"disabled\",\"etag\":\"\\\"bm9wZQ==\\\"\"}");
    cJSON_Delete(e);
    d = it_control_ok(svc, "{\"command\":\"getDevice\",\"deviceId\":\"reg-etag\"}");
    assert_string_equal(it_json_str(d, "status"), "enabled");
    assert_string_equal(it_json_str(d, "etag"), etag0);
    cJSON_Delete(d);

    /* the current etag (quoted, as If-Match sends it) works and moves the etag on */
    d = it_control_ok(svc,
                      "{\"command\":\"updateDevice\",\"deviceId\":\"reg-etag\","
                      "\"status\":\"disabled\",\"etag\":\"\\\"%s\\\"\"}",
                      etag0);
    assert_string_equal(it_json_str(d, "status"), "disabled");
    assert_string_not_equal(it_json_str(d, "etag"), etag0);
    char *etag1 = strdup(it_json_str(d, "etag"));
    cJSON_Delete(d);

    /* the old etag is now stale; nothing changes */
    e = it_control_err(svc, 412, 412001,
                       "{\"command\":\"updateDevice\",\"deviceId\":\"reg-etag\","
                       "\"status\":\"enabled\",\"etag\":\"%s\"}",
                       etag0);
    cJSON_Delete(e);
    e = it_control_err(svc, 412, 412001,
                       "{\"command\":\"deleteDevice\",\"deviceId\":\"reg-etag\",\"etag\":\"%s\"}",
                       etag0);
    cJSON_Delete(e);
    d = it_control_ok(svc, "{\"command\":\"getDevice\",\"deviceId\":\"reg-etag\"}");
    assert_string_equal(it_json_str(d, "status"), "disabled");
    assert_string_equal(it_json_str(d, "etag"), etag1);
    cJSON_Delete(d);
    /* '*' matches anything */
    d = it_control_ok(svc, "{\"command\":\"updateDevice\",\"deviceId\":\"reg-etag\","
                           "\"status\":\"enabled\",\"etag\":\"*\"}");
    assert_string_equal(it_json_str(d, "status"), "enabled");
    cJSON_Delete(d);
    e = it_control_err(
        svc, 404, 404001,
        "{\"command\":\"updateDevice\",\"deviceId\":\"reg-nope\",\"status\":\"enabled\"}");
    cJSON_Delete(e);
    e = it_control_err(
        svc, 400, 400004,
        "{\"command\":\"updateDevice\",\"deviceId\":\"reg-etag\",\"status\":\"off\"}");
    cJSON_Delete(e);
    free(etag0);
    free(etag1);
    it_client_close(svc);
}

static void test_registry_update_device_new_keys_refuse_old_token_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    cJSON *d = it_control_ok(svc,
                             "{\"command\":\"createDevice\",\"deviceId\":\"reg-rotate\","
                             "\"authentication\":{\"symmetricKey\":{\"primaryKey\":\"%s\","
                             "\"secondaryKey\":\"%s\"}}}",
                             KEY_EXPLICIT_1, KEY_EXPLICIT_2);
    char *etag0 = strdup(it_json_str(d, "etag"));
    cJSON_Delete(d);
    /* a token made with the old key before the rotation */
    char *user = it_device_username(hub.hub_name, "reg-rotate", NULL);
    char *old_token =
        it_device_token(hub.hub_name, "reg-rotate", NULL, KEY_EXPLICIT_1, it_expiry());
    struct it_client *dev = it_device_open(&hub, "reg-rotate", NULL, KEY_EXPLICIT_1);

    d = it_control_ok(svc,
                      "{\"command\":\"updateDevice\",\"deviceId\":\"reg-rotate\","
                      "\"authentication\":{\"symmetricKey\":{\"primaryKey\":\"%s\","
                      "\"secondaryKey\":\"%s\"}}}",
                      KEY_ROTATED_1, KEY_ROTATED_2);
    assert_string_equal(it_json_str(d, "authentication.symmetricKey.primaryKey"), KEY_ROTATED_1);
    assert_string_equal(it_json_str(d, "authentication.symmetricKey.secondaryKey"), KEY_ROTATED_2);
    assert_string_not_equal(it_json_str(d, "etag"), etag0);
    cJSON_Delete(d);
    /* the connection made with the old key is closed */
    assert_true(it_client_wait_disconnect(dev, IT_WAIT_MS));
    it_client_close(dev);

    /* the old token and both old keys are refused; the new keys work */
    struct it_connect_opts o = {.client_id = "reg-rotate", .username = user, .password = old_token};
    int connack;
    struct it_client *c = it_client_connect(&hub, &o, &connack);
    assert_int_equal(connack, 5);
    it_client_close(c);
    assert_int_equal(try_identity("reg-rotate", NULL, KEY_EXPLICIT_1), 5);
    assert_int_equal(try_identity("reg-rotate", NULL, KEY_EXPLICIT_2), 5);
    assert_int_equal(try_identity("reg-rotate", NULL, KEY_ROTATED_1), 0);
    assert_int_equal(try_identity("reg-rotate", NULL, KEY_ROTATED_2), 0);

    /* a bad key is refused and the keys stay */
    cJSON *e = it_control_err(svc, 400, 400004,
                              "{\"command\":\"updateDevice\",\"deviceId\":\"reg-rotate\","
                              "\"authentication\":{\"symmetricKey\":{\"primaryKey\":\"***\"}}}");
    cJSON_Delete(e);
    assert_int_equal(try_identity("reg-rotate", NULL, KEY_ROTATED_1), 0);
    free(user);
    free(old_token);
    free(etag0);
    it_client_close(svc);
}

/*
 * The identity sent back with its current keys (what the SDKs' update does) is
 * no key change: the device stays connected. Type "none" with those keys drops
 * them (identical keys are not refused as keys given with "none") and closes it.
 */
static void test_registry_update_device_same_keys_keep_connection_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    cJSON *d = it_control_ok(svc,
                             "{\"command\":\"createDevice\",\"deviceId\":\"reg-same\","
                             "\"authentication\":{\"symmetricKey\":{\"primaryKey\":\"%s\","
                             "\"secondaryKey\":\"%s\"}}}",
                             KEY_EXPLICIT_1, KEY_EXPLICIT_2);
    char *etag0 = strdup(it_json_str(d, "etag"));
    cJSON_Delete(d);
    struct it_client *dev = it_device_open(&hub, "reg-same", NULL, KEY_EXPLICIT_1);
    assert_int_equal(it_client_subscribe(dev, "$iothub/twin/res/#", 1, IT_WAIT_MS), 1);

    d = it_control_ok(svc,
                      "{\"command\":\"updateDevice\",\"deviceId\":\"reg-same\",\"etag\":\"*\","
                      "\"statusReason\":\"same keys\",\"authentication\":{\"type\":\"sas\","
                      "\"symmetricKey\":{\"primaryKey\":\"%s\",\"secondaryKey\":\"%s\"}}}",
                      KEY_EXPLICIT_1, KEY_EXPLICIT_2);
    assert_string_equal(it_json_str(d, "authentication.symmetricKey.primaryKey"), KEY_EXPLICIT_1);
    assert_string_equal(it_json_str(d, "authentication.symmetricKey.secondaryKey"), KEY_EXPLICIT_2);
    assert_string_equal(it_json_str(d, "statusReason"), "same keys");
    assert_string_not_equal(it_json_str(d, "etag"), etag0);
    cJSON_Delete(d);
    /* barrier: a twin round trip sent after the answer; a kicked device would get none */
    int status;
    struct it_msg *m = it_twin_request(dev, "same-get", NULL, &status);
    assert_non_null(m);
    assert_int_equal(status, 200);
    it_msg_free(m);
    assert_true(it_client_is_connected(dev));
    d = it_control_ok(svc, "{\"command\":\"getDevice\",\"deviceId\":\"reg-same\"}");
    assert_string_equal(it_json_str(d, "connectionState"), "Connected");
    cJSON_Delete(d);

    d = it_control_ok(svc,
                      "{\"command\":\"updateDevice\",\"deviceId\":\"reg-same\","
                      "\"authentication\":{\"type\":\"none\",\"symmetricKey\":"
                      "{\"primaryKey\":\"%s\",\"secondaryKey\":\"%s\"}}}",
                      KEY_EXPLICIT_1, KEY_EXPLICIT_2);
    assert_string_equal(it_json_str(d, "authentication.type"), "none");
    assert_true(cJSON_IsNull(it_json_get(d, "authentication.symmetricKey.primaryKey")));
    cJSON_Delete(d);
    assert_true(it_client_wait_disconnect(dev, IT_WAIT_MS));
    it_client_close(dev);
    assert_int_equal(try_identity("reg-same", NULL, KEY_EXPLICIT_1), 5);
    free(etag0);
    it_client_close(svc);
}

/* ---- deleteDevice ---- */

static void test_registry_delete_device_kicks_and_removes_modules_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, true);
    cJSON *d = it_control_ok(svc,
                             "{\"command\":\"createDevice\",\"deviceId\":\"reg-del\","
                             "\"authentication\":{\"symmetricKey\":{\"primaryKey\":\"%s\"}}}",
                             KEY_EXPLICIT_1);
    cJSON_Delete(d);
    d = it_control_ok(svc,
                      "{\"command\":\"createModule\",\"deviceId\":\"reg-del\",\"moduleId\":\"m1\","
                      "\"authentication\":{\"symmetricKey\":{\"primaryKey\":\"%s\"}},"
                      "\"tags\":{\"t\":1},\"desired\":{\"d\":1}}",
                      KEY_EXPLICIT_2);
    cJSON_Delete(d);
    d = it_control_ok(
        svc, "{\"command\":\"createModule\",\"deviceId\":\"reg-del\",\"moduleId\":\"m2\"}");
    cJSON_Delete(d);
    d = it_control_ok(svc, "{\"command\":\"updateTwin\",\"deviceId\":\"reg-del\","
                           "\"patch\":{\"tags\":{\"doomed\":true}}}");
    cJSON_Delete(d);
    cJSON *stats0 = it_control_ok(svc, "{\"command\":\"getStatistics\"}");

    struct it_client *dev = it_device_open(&hub, "reg-del", NULL, KEY_EXPLICIT_1);
    struct it_client *mod = it_device_open(&hub, "reg-del", "m1", KEY_EXPLICIT_2);
    /* a C2D message waits in the queue (the device has not subscribed) */
    d = it_control_ok(svc, "{\"command\":\"sendC2D\",\"deviceId\":\"reg-del\",\"body\":\"x\"}");
    cJSON_Delete(d);

    d = it_control_ok(svc, "{\"command\":\"deleteDevice\",\"deviceId\":\"reg-del\"}");
    assert_int_equal(cJSON_GetArraySize(d), 0);
    cJSON_Delete(d);
    assert_true(it_client_wait_disconnect(dev, IT_WAIT_MS));
    assert_true(it_client_wait_disconnect(mod, IT_WAIT_MS));
    it_client_close(dev);
    it_client_close(mod);
    cJSON *ev = it_event_wait(svc, "deviceDeleted", "reg-del", NULL, pred_any, NULL, IT_WAIT_MS);
    assert_non_null(ev);
    cJSON_Delete(ev);

    /* gone: the identity, its twin and its modules */
    const char *gone[] = {
        "{\"command\":\"getDevice\",\"deviceId\":\"reg-del\"}",
        "{\"command\":\"getTwin\",\"deviceId\":\"reg-del\"}",
        "{\"command\":\"getDevice\",\"deviceId\":\"reg-del\",\"moduleId\":\"m1\"}",
        "{\"command\":\"getTwin\",\"deviceId\":\"reg-del\",\"moduleId\":\"m2\"}",
        "{\"command\":\"listModules\",\"deviceId\":\"reg-del\"}",
        "{\"command\":\"deleteDevice\",\"deviceId\":\"reg-del\"}",
        "{\"command\":\"deleteModule\",\"deviceId\":\"reg-del\",\"moduleId\":\"m1\"}",
        "{\"command\":\"updateDevice\",\"deviceId\":\"reg-del\",\"status\":\"enabled\"}",
        "{\"command\":\"sendC2D\",\"deviceId\":\"reg-del\",\"body\":\"y\"}",
    };
    for (size_t i = 0; i < sizeof gone / sizeof gone[0]; i++) {
        cJSON *e = it_control_err(svc, 404, 404001, "%s", gone[i]);
        cJSON_Delete(e);
    }
    cJSON *stats1 = it_control_ok(svc, "{\"command\":\"getStatistics\"}");
    assert_int_equal((int)it_json_num(stats1, "totalDeviceCount", -1),
                     (int)it_json_num(stats0, "totalDeviceCount", -1) - 1);
    assert_int_equal((int)it_json_num(stats1, "totalModuleCount", -1),
                     (int)it_json_num(stats0, "totalModuleCount", -1) - 2);
    cJSON_Delete(stats0);
    cJSON_Delete(stats1);
    assert_int_equal(try_identity("reg-del", NULL, KEY_EXPLICIT_1), 5);
    assert_int_equal(try_identity("reg-del", "m1", KEY_EXPLICIT_2), 5);

    /* re-created under the same id it starts empty: no modules, tags or queued messages */
    d = it_control_ok(svc, "{\"command\":\"createDevice\",\"deviceId\":\"reg-del\"}");
    assert_int_equal((int)it_json_num(d, "cloudToDeviceMessageCount", -1), 0);
    cJSON_Delete(d);
    d = it_control_ok(svc, "{\"command\":\"listModules\",\"deviceId\":\"reg-del\"}");
    assert_int_equal(cJSON_GetArraySize(d), 0);
    cJSON_Delete(d);
    d = it_control_ok(svc, "{\"command\":\"getTwin\",\"deviceId\":\"reg-del\"}");
    assert_int_equal(cJSON_GetArraySize(it_json_get(d, "tags")), 0);
    cJSON_Delete(d);
    cJSON *e =
        it_control_err(svc, 404, 404010,
                       "{\"command\":\"getDevice\",\"deviceId\":\"reg-del\",\"moduleId\":\"m1\"}");
    cJSON_Delete(e);
    assert_int_equal(try_identity("reg-del", "m1", KEY_EXPLICIT_2), 5);
    it_client_close(svc);
}

/* ---- modules ---- */

static void test_registry_module_commands_succeed(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, true);
    cJSON *m = it_control_ok(svc, "{\"command\":\"createModule\",\"deviceId\":\"" IT_DEV2 "\","
                                  "\"moduleId\":\"reg-mod\",\"tags\":{\"role\":\"edge\"},"
                                  "\"desired\":{\"rate\":5,\"cfg\":{\"on\":true}}}");
    assert_string_equal(it_json_str(m, "deviceId"), IT_DEV2);
    assert_string_equal(it_json_str(m, "moduleId"), "reg-mod");
    char *pk = identity_key(m, "primaryKey"), *sk = identity_key(m, "secondaryKey");
    char *etag0 = strdup(it_json_str(m, "etag"));
    cJSON_Delete(m);
    assert_int_equal(b64_decoded_len(pk), 32);
    assert_int_equal(b64_decoded_len(sk), 32);
    cJSON *ev = it_event_wait(svc, "moduleCreated", IT_DEV2, "reg-mod", pred_any, NULL, IT_WAIT_MS);
    assert_non_null(ev);
    cJSON_Delete(ev);

    /* the initial twin */
    cJSON *t = it_control_ok(svc, "{\"command\":\"getTwin\",\"deviceId\":\"" IT_DEV2
                                  "\",\"moduleId\":\"reg-mod\"}");
    assert_string_equal(it_json_str(t, "moduleId"), "reg-mod");
    assert_string_equal(it_json_str(t, "tags.role"), "edge");
    assert_true(it_json_num(t, "properties.desired.rate", 0) == 5);
    assert_true(cJSON_IsTrue(it_json_get(t, "properties.desired.cfg.on")));
    cJSON_Delete(t);
    t = it_control_ok(svc, "{\"command\":\"listModules\",\"deviceId\":\"" IT_DEV2 "\"}");
    assert_int_equal(count_with(t, "moduleId", "reg-mod"), 1);
    cJSON_Delete(t);

    /* refusals */
    cJSON *e = it_control_err(svc, 409, 409301,
                              "{\"command\":\"createModule\",\"deviceId\":\"" IT_DEV2 "\","
                              "\"moduleId\":\"reg-mod\"}");
    cJSON_Delete(e);
    e = it_control_err(
        svc, 404, 404001,
        "{\"command\":\"createModule\",\"deviceId\":\"reg-nope\",\"moduleId\":\"x\"}");
    cJSON_Delete(e);
    e = it_control_err(svc, 400, 400004,
                       "{\"command\":\"createModule\",\"deviceId\":\"" IT_DEV2 "\","
                       "\"moduleId\":\"bad id\"}");
    cJSON_Delete(e);
    e = it_control_err(svc, 400, 400004,
                       "{\"command\":\"createModule\",\"deviceId\":\"" IT_DEV2 "\","
                       "\"moduleId\":\"reg-mod-2\",\"desired\":{\"a.b\":1}}");
    cJSON_Delete(e);
    e = it_control_err(svc, 404, 404010,
                       "{\"command\":\"getDevice\",\"deviceId\":\"" IT_DEV2
                       "\",\"moduleId\":\"reg-mod-2\"}");
    cJSON_Delete(e);
    e = it_control_err(svc, 404, 404010,
                       "{\"command\":\"updateModule\",\"deviceId\":\"" IT_DEV2 "\","
                       "\"moduleId\":\"reg-none\",\"authentication\":{\"symmetricKey\":"
                       "{\"primaryKey\":\"%s\"}}}",
                       KEY_ROTATED_1);
    cJSON_Delete(e);
    e = it_control_err(svc, 404, 404010,
                       "{\"command\":\"deleteModule\",\"deviceId\":\"" IT_DEV2 "\","
                       "\"moduleId\":\"reg-none\"}");
    cJSON_Delete(e);
    e = it_control_err(svc, 412, 412001,
                       "{\"command\":\"updateModule\",\"deviceId\":\"" IT_DEV2 "\","
                       "\"moduleId\":\"reg-mod\",\"etag\":\"\\\"bm9wZQ==\\\"\","
                       "\"authentication\":{\"symmetricKey\":{\"primaryKey\":\"%s\"}}}",
                       KEY_ROTATED_1);
    cJSON_Delete(e);

    /* the module connects with its generated key; new keys close that connection */
    struct it_client *mod = it_device_open(&hub, IT_DEV2, "reg-mod", pk);
    m = it_control_ok(svc,
                      "{\"command\":\"updateModule\",\"deviceId\":\"" IT_DEV2 "\","
                      "\"moduleId\":\"reg-mod\",\"etag\":\"%s\","
                      "\"authentication\":{\"symmetricKey\":{\"primaryKey\":\"%s\","
                      "\"secondaryKey\":\"%s\"}}}",
                      etag0, KEY_ROTATED_1, KEY_ROTATED_2);
    assert_string_equal(it_json_str(m, "authentication.symmetricKey.primaryKey"), KEY_ROTATED_1);
    assert_string_not_equal(it_json_str(m, "etag"), etag0);
    char *etag1 = strdup(it_json_str(m, "etag"));
    cJSON_Delete(m);
    assert_true(it_client_wait_disconnect(mod, IT_WAIT_MS));
    it_client_close(mod);
    assert_int_equal(try_identity(IT_DEV2, "reg-mod", pk), 5);
    assert_int_equal(try_identity(IT_DEV2, "reg-mod", sk), 5);
    /* the device itself was not affected */
    assert_int_equal(try_identity(IT_DEV2, NULL, IT_DEV2_KEY), 0);

    /* deleteModule closes the module's connection; the module is gone, the device stays */
    mod = it_device_open(&hub, IT_DEV2, "reg-mod", KEY_ROTATED_2);
    e = it_control_err(svc, 412, 412001,
                       "{\"command\":\"deleteModule\",\"deviceId\":\"" IT_DEV2 "\","
                       "\"moduleId\":\"reg-mod\",\"etag\":\"%s\"}",
                       etag0);
    cJSON_Delete(e);
    assert_true(it_client_is_connected(mod));
    m = it_control_ok(svc,
                      "{\"command\":\"deleteModule\",\"deviceId\":\"" IT_DEV2 "\","
                      "\"moduleId\":\"reg-mod\",\"etag\":\"%s\"}",
                      etag1);
    cJSON_Delete(m);
    assert_true(it_client_wait_disconnect(mod, IT_WAIT_MS));
    it_client_close(mod);
    ev = it_event_wait(svc, "moduleDeleted", IT_DEV2, "reg-mod", pred_any, NULL, IT_WAIT_MS);
    assert_non_null(ev);
    cJSON_Delete(ev);
    e = it_control_err(svc, 404, 404010,
                       "{\"command\":\"getTwin\",\"deviceId\":\"" IT_DEV2
                       "\",\"moduleId\":\"reg-mod\"}");
    cJSON_Delete(e);
    e = it_control_err(svc, 404, 404010,
                       "{\"command\":\"deleteModule\",\"deviceId\":\"" IT_DEV2 "\","
                       "\"moduleId\":\"reg-mod\"}");
    cJSON_Delete(e);
    t = it_control_ok(svc, "{\"command\":\"listModules\",\"deviceId\":\"" IT_DEV2 "\"}");
    assert_int_equal(count_with(t, "moduleId", "reg-mod"), 0);
    cJSON_Delete(t);
    assert_int_equal(try_identity(IT_DEV2, "reg-mod", KEY_ROTATED_2), 5);
    assert_int_equal(try_identity(IT_DEV2, NULL, IT_DEV2_KEY), 0);
    free(pk);
    free(sk);
    free(etag0);
    free(etag1);
    it_client_close(svc);
}

/* ---- getStatistics ---- */

struct stats {
    int total, enabled, disabled, connected, modules, modules_connected;
};

/* Statistics and the same numbers counted from listDevices / listModules, at one moment. */
static void stats_now(struct it_client *svc, struct stats *reported, struct stats *counted)
{
    cJSON *resp = control_batch(svc, "[{\"command\":\"getStatistics\"},"
                                     "{\"command\":\"listDevices\"}]");
    const cJSON *st = it_json_get(cJSON_GetArrayItem(resp, 0), "data");
    const cJSON *list = it_json_get(cJSON_GetArrayItem(resp, 1), "data");
    assert_non_null(st);
    assert_true(cJSON_IsArray(list));
    *reported = (struct stats){
        .total = (int)it_json_num(st, "totalDeviceCount", -1),
        .enabled = (int)it_json_num(st, "enabledDeviceCount", -1),
        .disabled = (int)it_json_num(st, "disabledDeviceCount", -1),
        .connected = (int)it_json_num(st, "connectedDeviceCount", -1),
        .modules = (int)it_json_num(st, "totalModuleCount", -1),
        .modules_connected = (int)it_json_num(st, "connectedModuleCount", -1),
    };
    memset(counted, 0, sizeof *counted);
    /* one request holding listModules for every device, to count modules at one moment too */
    size_t cap = 64, len = 0;
    char *cmds = malloc(cap);
    assert_non_null(cmds);
    len += (size_t)snprintf(cmds, cap, "[");
    const cJSON *d;
    cJSON_ArrayForEach(d, list)
    {
        const char *id = it_json_str(d, "deviceId");
        counted->total++;
        if (strcmp(it_json_str(d, "status"), "enabled") == 0)
            counted->enabled++;
        else
            counted->disabled++;
        if (strcmp(it_json_str(d, "connectionState"), "Connected") == 0)
            counted->connected++;
        char *one = it_strdupf("%s{\"command\":\"listModules\",\"deviceId\":\"%s\"}",
                               len > 1 ? "," : "", id);
        size_t ol = strlen(one);
        if (len + ol + 2 > cap) {
            cap = (len + ol + 2) * 2;
            cmds = realloc(cmds, cap);
            assert_non_null(cmds);
        }
        memcpy(cmds + len, one, ol + 1);
        len += ol;
        free(one);
    }
    memcpy(cmds + len, "]", 2);
    cJSON_Delete(resp);
    resp = control_batch(svc, cmds);
    free(cmds);
    const cJSON *r;
    cJSON_ArrayForEach(r, resp)
    {
        const cJSON *mods = it_json_get(r, "data");
        assert_true(cJSON_IsArray(mods));
        const cJSON *m;
        cJSON_ArrayForEach(m, mods)
        {
            counted->modules++;
            if (strcmp(it_json_str(m, "connectionState"), "Connected") == 0)
                counted->modules_connected++;
        }
    }
    cJSON_Delete(resp);
}

static void assert_stats_consistent(const struct stats *a, const struct stats *b)
{
    assert_int_equal(a->total, b->total);
    assert_int_equal(a->enabled, b->enabled);
    assert_int_equal(a->disabled, b->disabled);
    assert_int_equal(a->connected, b->connected);
    assert_int_equal(a->modules, b->modules);
    assert_int_equal(a->modules_connected, b->modules_connected);
    assert_int_equal(a->total, a->enabled + a->disabled);
}

static bool pred_disconnected_any(const cJSON *record, void *arg)
{
    (void)record;
    (void)arg;
    return true;
}

static void test_registry_statistics_numbers_succeed(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, true);
    struct stats s0, c0, s1, c1, s2, c2;
    stats_now(svc, &s0, &c0);
    assert_stats_consistent(&s0, &c0);

    /* one more enabled device, one more disabled, one module; a device and a module online */
    cJSON *d = it_control_ok(svc,
                             "{\"command\":\"createDevice\",\"deviceId\":\"reg-stat-on\","
                             "\"authentication\":{\"symmetricKey\":{\"primaryKey\":\"%s\"}}}",
                             KEY_EXPLICIT_1);
    cJSON_Delete(d);
    d = it_control_ok(svc, "{\"command\":\"createDevice\",\"deviceId\":\"reg-stat-off\","
                           "\"status\":\"disabled\"}");
    cJSON_Delete(d);
    d = it_control_ok(
        svc,
        "{\"command\":\"createModule\",\"deviceId\":\"reg-stat-on\",\"moduleId\":\"m\","
        "\"authentication\":{\"symmetricKey\":{\"primaryKey\":\"%s\"}}}",
        KEY_EXPLICIT_2);
    cJSON_Delete(d);
    struct it_client *dev = it_device_open(&hub, "reg-stat-on", NULL, KEY_EXPLICIT_1);
    struct it_client *mod = it_device_open(&hub, "reg-stat-on", "m", KEY_EXPLICIT_2);
    stats_now(svc, &s1, &c1);
    assert_stats_consistent(&s1, &c1);
    assert_int_equal(s1.total, s0.total + 2);
    assert_int_equal(s1.enabled, s0.enabled + 1);
    assert_int_equal(s1.disabled, s0.disabled + 1);
    assert_int_equal(s1.connected, s0.connected + 1);
    assert_int_equal(s1.modules, s0.modules + 1);
    assert_int_equal(s1.modules_connected, s0.modules_connected + 1);

    /* offline again once the hub has seen both disconnects */
    it_client_close(dev);
    it_client_close(mod);
    cJSON *ev = it_event_wait(svc, "disconnected", "reg-stat-on", NULL, pred_disconnected_any, NULL,
                              IT_WAIT_MS);
    assert_non_null(ev);
    cJSON_Delete(ev);
    ev = it_event_wait(svc, "disconnected", "reg-stat-on", "m", pred_disconnected_any, NULL,
                       IT_WAIT_MS);
    assert_non_null(ev);
    cJSON_Delete(ev);
    stats_now(svc, &s2, &c2);
    assert_stats_consistent(&s2, &c2);
    assert_int_equal(s2.connected, s0.connected);
    assert_int_equal(s2.modules_connected, s0.modules_connected);
    it_client_close(svc);
}

/* ---- rights ---- */

static void test_registry_policy_without_right_fails(void **state)
{
    (void)state;
    int connack;
    /* registryRead: RegistryRead only */
    struct it_client *ro = it_service_open_policy(&hub, "registryRead", TH_DEV_OWNER_KEY, &connack);
    assert_int_equal(connack, 0);
    cJSON *d = it_control_ok(ro, "{\"command\":\"getDevice\",\"deviceId\":\"" IT_DEV3 "\"}");
    cJSON_Delete(d);
    d = it_control_ok(ro, "{\"command\":\"listDevices\"}");
    cJSON_Delete(d);
    const char *writes[] = {
        "{\"command\":\"createDevice\",\"deviceId\":\"reg-ro\"}",
        "{\"command\":\"updateDevice\",\"deviceId\":\"" IT_DEV3 "\",\"status\":\"disabled\"}",
        "{\"command\":\"deleteDevice\",\"deviceId\":\"" IT_DEV3 "\"}",
        "{\"command\":\"createModule\",\"deviceId\":\"" IT_DEV3 "\",\"moduleId\":\"ro\"}",
        "{\"command\":\"deleteModule\",\"deviceId\":\"" IT_DEV1 "\",\"moduleId\":\"" IT_MOD1 "\"}",
        "{\"command\":\"ensureModule\",\"moduleId\":\"ro\"}",
        "{\"command\":\"updateTwin\",\"deviceId\":\"" IT_DEV3 "\","
        "\"patch\":{\"tags\":{\"ro\":1}}}",
        "{\"command\":\"sendC2D\",\"deviceId\":\"" IT_DEV3 "\",\"body\":\"ro\"}",
    };
    for (size_t i = 0; i < sizeof writes / sizeof writes[0]; i++) {
        cJSON *e = it_control_err(ro, 401, 401002, "%s", writes[i]);
        cJSON_Delete(e);
    }
    it_client_close(ro);

    /* service: ServiceConnect only, so no registry reads */
    struct it_client *sv = it_service_open_policy(&hub, "service", TH_DEV_OWNER_KEY, &connack);
    assert_int_equal(connack, 0);
    cJSON *e =
        it_control_err(sv, 401, 401002, "{\"command\":\"getDevice\",\"deviceId\":\"" IT_DEV3 "\"}");
    cJSON_Delete(e);
    e = it_control_err(sv, 401, 401002, "{\"command\":\"createDevice\",\"deviceId\":\"reg-sv\"}");
    cJSON_Delete(e);
    d = it_control_ok(sv, "{\"command\":\"getTwin\",\"deviceId\":\"" IT_DEV3 "\"}");
    cJSON_Delete(d);
    it_client_close(sv);

    /* nothing happened */
    struct it_client *svc = it_service_open(&hub, false);
    d = it_control_ok(svc, "{\"command\":\"getDevice\",\"deviceId\":\"" IT_DEV3 "\"}");
    assert_string_equal(it_json_str(d, "status"), "enabled");
    cJSON_Delete(d);
    d = it_control_ok(svc, "{\"command\":\"getTwin\",\"deviceId\":\"" IT_DEV3 "\"}");
    assert_null(it_json_get(d, "tags.ro"));
    cJSON_Delete(d);
    d = it_control_ok(svc, "{\"command\":\"getDevice\",\"deviceId\":\"" IT_DEV1
                           "\",\"moduleId\":\"" IT_MOD1 "\"}");
    cJSON_Delete(d);
    e = it_control_err(svc, 404, 404001, "{\"command\":\"getDevice\",\"deviceId\":\"reg-ro\"}");
    cJSON_Delete(e);
    e = it_control_err(svc, 404, 404001, "{\"command\":\"getDevice\",\"deviceId\":\"reg-sv\"}");
    cJSON_Delete(e);
    d = it_control_ok(svc, "{\"command\":\"devicesWithoutModule\",\"moduleId\":\"ro\"}");
    cJSON *stats = it_control_ok(svc, "{\"command\":\"getStatistics\"}");
    assert_int_equal((int)it_json_num(d, "count", -1),
                     (int)it_json_num(stats, "totalDeviceCount", -2));
    cJSON_Delete(d);
    cJSON_Delete(stats);
    it_client_close(svc);
}

static void test_registry_device_publish_to_control_gets_nothing_succeeds(void **state)
{
    (void)state;
    struct it_client *dev = it_device_open(&hub, IT_DEV4, NULL, IT_DEV4_KEY);
    assert_int_equal(it_client_subscribe(dev, "$iothub/twin/res/#", 1, IT_WAIT_MS), 1);
    assert_int_equal(it_client_subscribe(dev, TH_CONTROL_RESPONSE_TOPIC, 1, IT_WAIT_MS), 0x80);
    assert_int_equal(it_client_subscribe(dev, "$CONTROL/#", 1, IT_WAIT_MS), 0x80);
    const char *req = "{\"commands\":[{\"command\":\"createDevice\",\"deviceId\":\"reg-evil\"},"
                      "{\"command\":\"getDevice\",\"deviceId\":\"" IT_DEV2 "\"},"
                      "{\"command\":\"deleteDevice\",\"deviceId\":\"" IT_DEV3 "\"}]}";
    bool still = it_client_publish_str(dev, TH_CONTROL_TOPIC, req, 1) == MOSQ_ERR_SUCCESS;
    /* marker: a twin GET answered after the control request was handled (unless the hub hung up) */
    if (still && it_client_publish(dev, "$iothub/twin/GET/?$rid=after-ctl", NULL, 0, 1, false) ==
                     MOSQ_ERR_SUCCESS) {
        struct it_msg *m =
            it_client_wait_topic(dev, "$iothub/twin/res/200/?$rid=after-ctl", IT_WAIT_MS);
        if (!m)
            assert_true(it_client_wait_disconnect(dev, IT_WAIT_MS));
        it_msg_free(m);
    }
    assert_int_equal(it_client_count_prefix(dev, "$CONTROL"), 0);
    it_client_close(dev);

    /* and nothing was done */
    struct it_client *svc = it_service_open(&hub, false);
    cJSON *e =
        it_control_err(svc, 404, 404001, "{\"command\":\"getDevice\",\"deviceId\":\"reg-evil\"}");
    cJSON_Delete(e);
    cJSON *d = it_control_ok(svc, "{\"command\":\"getDevice\",\"deviceId\":\"" IT_DEV3 "\"}");
    cJSON_Delete(d);
    it_client_close(svc);
}

/* ---- twin command refusals ---- */

static void test_registry_update_twin_invalid_patch_changes_nothing_fails(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    cJSON *d = it_control_ok(svc, "{\"command\":\"updateTwin\",\"deviceId\":\"" IT_DEV3 "\","
                                  "\"patch\":{\"tags\":{\"keep\":\"me\"},"
                                  "\"properties\":{\"desired\":{\"keep\":1}}}}");
    cJSON_Delete(d);
    cJSON *before = it_control_ok(svc, "{\"command\":\"getTwin\",\"deviceId\":\"" IT_DEV3 "\"}");
    const char *bad[] = {
        /* property names with '.', '$', ' ' */
        "{\"properties\":{\"desired\":{\"a.b\":1}}}",
        "{\"properties\":{\"desired\":{\"$x\":1}}}",
        "{\"properties\":{\"desired\":{\"n\":{\"a b\":1}}}}",
        "{\"tags\":{\"t.x\":1}}",
        /* a valid tag with an invalid desired property: all or nothing */
        "{\"tags\":{\"fresh\":1},\"properties\":{\"desired\":{\"bad.key\":1}}}",
        /* reported belongs to the device */
        "{\"properties\":{\"reported\":{\"r\":1}}}",
        /* wrong types */
        "{\"tags\":5}",
        "{\"properties\":{\"desired\":[1,2]}}",
        /* an 11th nested object */
        "{\"properties\":{\"desired\":{\"l1\":{\"l2\":{\"l3\":{\"l4\":{\"l5\":{\"l6\":{\"l7\":"
        "{\"l8\":{\"l9\":{\"l10\":{\"l11\":{}}}}}}}}}}}}}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cJSON *e = it_control_err(svc, 400, 400004,
                                  "{\"command\":\"updateTwin\",\"deviceId\":\"" IT_DEV3 "\","
                                  "\"patch\":%s}",
                                  bad[i]);
        cJSON_Delete(e);
    }
    cJSON *e = it_control_err(svc, 400, 400004,
                              "{\"command\":\"updateTwin\",\"deviceId\":\"" IT_DEV3 "\"}");
    cJSON_Delete(e);
    e = it_control_err(svc, 400, 400004,
                       "{\"command\":\"replaceTwin\",\"deviceId\":\"" IT_DEV3 "\","
                       "\"patch\":{\"properties\":{\"desired\":{\"a.b\":1}}}}");
    cJSON_Delete(e);
    /* the twin is exactly as before: values, versions, etag, metadata */
    cJSON *after = it_control_ok(svc, "{\"command\":\"getTwin\",\"deviceId\":\"" IT_DEV3 "\"}");
    if (!cJSON_Compare(before, after, 1)) {
        char *b = cJSON_PrintUnformatted(before), *a = cJSON_PrintUnformatted(after);
        fprintf(stderr, "# twin changed by refused writes:\n# before %s\n# after  %s\n", b, a);
        free(b);
        free(a);
    }
    assert_true(cJSON_Compare(before, after, 1));
    cJSON_Delete(before);
    cJSON_Delete(after);
    it_client_close(svc);
}

static void test_registry_update_twin_etag_mismatch_fails(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    cJSON *t0 = it_control_ok(svc, "{\"command\":\"getTwin\",\"deviceId\":\"" IT_DEV4 "\"}");
    char *etag0 = strdup(it_json_str(t0, "etag"));
    cJSON_Delete(t0);
    cJSON *t1 = it_control_ok(svc,
                              "{\"command\":\"updateTwin\",\"deviceId\":\"" IT_DEV4 "\","
                              "\"etag\":\"%s\",\"patch\":{\"properties\":{\"desired\":{\"v\":1}}}}",
                              etag0);
    assert_string_not_equal(it_json_str(t1, "etag"), etag0);
    cJSON *e = it_control_err(svc, 412, 412001,
                              "{\"command\":\"updateTwin\",\"deviceId\":\"" IT_DEV4 "\","
                              "\"etag\":\"%s\",\"patch\":{\"properties\":{\"desired\":{\"v\":2}}}}",
                              etag0);
    cJSON_Delete(e);
    e = it_control_err(svc, 412, 412001,
                       "{\"command\":\"replaceTwin\",\"deviceId\":\"" IT_DEV4 "\","
                       "\"etag\":\"\\\"%s\\\"\",\"patch\":{\"tags\":{}}}",
                       etag0);
    cJSON_Delete(e);
    cJSON *t2 = it_control_ok(svc, "{\"command\":\"getTwin\",\"deviceId\":\"" IT_DEV4 "\"}");
    assert_true(cJSON_Compare(t1, t2, 1));
    assert_true(it_json_num(t2, "properties.desired.v", 0) == 1);
    cJSON_Delete(t1);
    cJSON_Delete(t2);
    free(etag0);
    it_client_close(svc);
}

static void test_registry_twin_unknown_identity_fails(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    const char *dev_cmds[] = {
        "{\"command\":\"getTwin\",\"deviceId\":\"reg-ghost\"}",
        "{\"command\":\"updateTwin\",\"deviceId\":\"reg-ghost\","
        "\"patch\":{\"properties\":{\"desired\":{\"a\":1}}}}",
        "{\"command\":\"replaceTwin\",\"deviceId\":\"reg-ghost\",\"patch\":{\"tags\":{}}}",
    };
    for (size_t i = 0; i < sizeof dev_cmds / sizeof dev_cmds[0]; i++) {
        cJSON *e = it_control_err(svc, 404, 404001, "%s", dev_cmds[i]);
        cJSON_Delete(e);
    }
    cJSON *e = it_control_err(svc, 404, 404010,
                              "{\"command\":\"updateTwin\",\"deviceId\":\"" IT_DEV1 "\","
                              "\"moduleId\":\"reg-ghost\",\"patch\":{\"tags\":{\"a\":1}}}");
    cJSON_Delete(e);
    /* the patch did not create anything */
    e = it_control_err(svc, 404, 404001, "{\"command\":\"getDevice\",\"deviceId\":\"reg-ghost\"}");
    cJSON_Delete(e);
    it_client_close(svc);
}

/* ---- IoT Edge identities: capabilities, scopes, modules without keys ---- */

/* The one parentScopes entry of an identity or twin, or NULL for []; fails on more. */
static const char *parent_scope(const cJSON *view)
{
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(view, "parentScopes");
    assert_true(cJSON_IsArray(arr));
    assert_true(cJSON_GetArraySize(arr) <= 1);
    return arr->child && cJSON_IsString(arr->child) ? arr->child->valuestring : NULL;
}

static bool pred_reason_none(const cJSON *record, void *arg)
{
    (void)arg;
    const char *reason = it_json_str(record, "data.reason");
    return reason && strstr(reason, "authentication type 'none'");
}

static void test_registry_edge_device_scopes_and_query_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    cJSON *gw = it_control_ok(svc, "{\"command\":\"createDevice\",\"deviceId\":\"reg-gw\","
                                   "\"capabilities\":{\"iotEdge\":true}}");
    const char *scope = it_json_str(gw, "deviceScope");
    char *want = it_strdupf("ms-azure-iot-edge://reg-gw-%s", it_json_str(gw, "generationId"));
    assert_non_null(scope);
    assert_string_equal(scope, want);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(gw, "capabilities"), "iotEdge")));
    assert_null(parent_scope(gw));

    /* a leaf child: its deviceScope is the parent's, copied into parentScopes */
    cJSON *leaf = it_control_ok(svc,
                                "{\"command\":\"createDevice\",\"deviceId\":\"reg-leaf\","
                                "\"deviceScope\":\"%s\"}",
                                want);
    assert_string_equal(it_json_str(leaf, "deviceScope"), want);
    assert_string_equal(parent_scope(leaf), want);
    cJSON_Delete(leaf);
    /* an edge child names its parent in parentScopes */
    cJSON *child = it_control_ok(svc,
                                 "{\"command\":\"createDevice\",\"deviceId\":\"reg-gw-child\","
                                 "\"capabilities\":{\"iotEdge\":true},\"parentScopes\":[\"%s\"]}",
                                 want);
    assert_string_equal(parent_scope(child), want);
    assert_non_null(strstr(it_json_str(child, "deviceScope"), "ms-azure-iot-edge://reg-gw-child-"));
    cJSON_Delete(child);
    /* a scope that is no edge device's is refused, and nothing is created */
    cJSON *e = it_control_err(svc, 400, 400004,
                              "{\"command\":\"createDevice\",\"deviceId\":\"reg-orphan\","
                              "\"deviceScope\":\"ms-azure-iot-edge://nobody-1\"}");
    cJSON_Delete(e);
    e = it_control(svc, IT_WAIT_MS, "{\"command\":\"getDevice\",\"deviceId\":\"reg-orphan\"}");
    assert_null(cJSON_GetObjectItemCaseSensitive(e, "data"));
    cJSON_Delete(e);

    /* the twin carries the capability and scopes; the documented query finds edge devices */
    cJSON *twin = it_control_ok(svc, "{\"command\":\"getTwin\",\"deviceId\":\"reg-leaf\"}");
    assert_string_equal(it_json_str(twin, "deviceScope"), want);
    assert_string_equal(parent_scope(twin), want);
    assert_true(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(twin, "capabilities"), "iotEdge")));
    cJSON_Delete(twin);
    cJSON *q = it_control_ok(svc, "{\"command\":\"query\",\"query\":"
                                  "\"SELECT * FROM devices WHERE capabilities.iotEdge = true\"}");
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(q, "items");
    assert_int_equal(count_with(items, "deviceId", "reg-gw"), 1);
    assert_int_equal(count_with(items, "deviceId", "reg-gw-child"), 1);
    assert_int_equal(count_with(items, "deviceId", "reg-leaf"), 0);
    assert_int_equal(count_with(items, "deviceId", IT_DEV1), 0);
    assert_int_equal(cJSON_GetArraySize(items), 2);
    assert_string_equal(it_json_str(q, "itemType"), "twin");
    cJSON_Delete(q);

    /* updating the gateway with its identity as read keeps its scope */
    cJSON *upd = it_control_ok(svc,
                               "{\"command\":\"updateDevice\",\"deviceId\":\"reg-gw\","
                               "\"capabilities\":{\"iotEdge\":true},\"deviceScope\":\"%s\","
                               "\"parentScopes\":[],\"statusReason\":\"as read\"}",
                               want);
    assert_string_equal(it_json_str(upd, "deviceScope"), want);
    cJSON_Delete(upd);
    free(want);
    cJSON_Delete(gw);
    it_client_close(svc);
}

static void test_registry_module_without_keys_cannot_connect_succeeds(void **state)
{
    /* IoT Edge's flow (edgelet-iothub create): a module with type none and managedBy, then keys. */
    (void)state;
    struct it_client *svc = it_service_open(&hub, true);
    cJSON *m = it_control_ok(svc, "{\"command\":\"createModule\",\"deviceId\":\"" IT_DEV2 "\","
                                  "\"moduleId\":\"reg-edge-mod\",\"managedBy\":\"IotEdge\","
                                  "\"authentication\":{\"type\":\"none\"}}");
    assert_string_equal(it_json_str(m, "managedBy"), "IotEdge");
    assert_string_equal(it_json_str(m, "authentication.type"), "none");
    const cJSON *sym = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(m, "authentication"), "symmetricKey");
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(sym, "primaryKey")));
    cJSON_Delete(m);
    m = it_control_ok(svc, "{\"command\":\"getDevice\",\"deviceId\":\"" IT_DEV2 "\","
                           "\"moduleId\":\"reg-edge-mod\"}");
    assert_string_equal(it_json_str(m, "managedBy"), "IotEdge");
    cJSON_Delete(m);
    cJSON *twin = it_control_ok(svc, "{\"command\":\"getTwin\",\"deviceId\":\"" IT_DEV2 "\","
                                     "\"moduleId\":\"reg-edge-mod\"}");
    assert_string_equal(it_json_str(twin, "authenticationType"), "none");
    cJSON_Delete(twin);

    /* no key can sign for it; the refusal says why */
    assert_int_equal(try_identity(IT_DEV2, "reg-edge-mod", KEY_EXPLICIT_1), 5);
    cJSON *ev =
        it_event_wait(svc, "refused", IT_DEV2, "reg-edge-mod", pred_reason_none, NULL, IT_WAIT_MS);
    assert_non_null(ev);
    cJSON_Delete(ev);

    /* type sas without keys: the hub generates them (what edgeAgent sends); they connect */
    m = it_control_ok(svc, "{\"command\":\"updateModule\",\"deviceId\":\"" IT_DEV2 "\","
                           "\"moduleId\":\"reg-edge-mod\",\"etag\":\"*\","
                           "\"authentication\":{\"type\":\"sas\",\"symmetricKey\":"
                           "{\"primaryKey\":null,\"secondaryKey\":null}}}");
    char *pk = identity_key(m, "primaryKey");
    assert_int_equal(b64_decoded_len(pk), 32);
    assert_string_equal(it_json_str(m, "managedBy"), "IotEdge");
    cJSON_Delete(m);
    struct it_client *dev = it_device_open(&hub, IT_DEV2, "reg-edge-mod", pk);

    /* back to none: the connection is closed and the old key refused */
    m = it_control_ok(svc, "{\"command\":\"updateModule\",\"deviceId\":\"" IT_DEV2 "\","
                           "\"moduleId\":\"reg-edge-mod\",\"authentication\":{\"type\":\"none\"}}");
    cJSON_Delete(m);
    assert_true(it_client_wait_disconnect(dev, IT_WAIT_MS));
    it_client_close(dev);
    assert_int_equal(try_identity(IT_DEV2, "reg-edge-mod", pk), 5);

    /* keys with type none are refused */
    cJSON *e = it_control_err(svc, 400, 400004,
                              "{\"command\":\"createModule\",\"deviceId\":\"" IT_DEV2 "\","
                              "\"moduleId\":\"reg-bad\",\"authentication\":{\"type\":\"none\","
                              "\"symmetricKey\":{\"primaryKey\":\"%s\"}}}",
                              KEY_EXPLICIT_1);
    cJSON_Delete(e);
    free(pk);
    it_client_close(svc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registry_create_device_generated_keys_connect_succeeds),
        cmocka_unit_test(test_registry_create_device_explicit_keys_succeeds),
        cmocka_unit_test(test_registry_create_device_duplicate_fails),
        cmocka_unit_test(test_registry_create_device_bad_id_or_key_fails),
        cmocka_unit_test(test_registry_get_device_succeeds),
        cmocka_unit_test(test_registry_list_devices_succeeds),
        cmocka_unit_test(test_registry_update_device_disable_closes_connection_succeeds),
        cmocka_unit_test(test_registry_update_device_etag_mismatch_fails),
        cmocka_unit_test(test_registry_update_device_new_keys_refuse_old_token_succeeds),
        cmocka_unit_test(test_registry_update_device_same_keys_keep_connection_succeeds),
        cmocka_unit_test(test_registry_delete_device_kicks_and_removes_modules_succeeds),
        cmocka_unit_test(test_registry_module_commands_succeed),
        cmocka_unit_test(test_registry_statistics_numbers_succeed),
        cmocka_unit_test(test_registry_policy_without_right_fails),
        cmocka_unit_test(test_registry_device_publish_to_control_gets_nothing_succeeds),
        cmocka_unit_test(test_registry_update_twin_invalid_patch_changes_nothing_fails),
        cmocka_unit_test(test_registry_update_twin_etag_mismatch_fails),
        cmocka_unit_test(test_registry_twin_unknown_identity_fails),
        cmocka_unit_test(test_registry_edge_device_scopes_and_query_succeeds),
        cmocka_unit_test(test_registry_module_without_keys_cannot_connect_succeeds),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
