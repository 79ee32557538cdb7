/*
 * it_twin.c - device and module twins over MQTT against the real broker +
 * plugin (iothub-protocol.md section 6, errors section 9.1): GET, reported
 * PATCH with versions, the validation limits and their error bodies, and
 * desired-property notifications driven through the control API.
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

static struct it_client *twin_client(const char *device, const char *module, const char *key)
{
    struct it_client *c = it_device_open(&hub, device, module, key);
    assert_int_equal(it_client_subscribe(c, "$iothub/twin/res/#", 1, IT_WAIT_MS), 1);
    return c;
}

/* GET the twin and return its body (the test fails unless the status is 200). */
static cJSON *twin_get(struct it_client *c, const char *rid)
{
    int status;
    struct it_msg *m = it_twin_request(c, rid, NULL, &status);
    assert_non_null(m);
    assert_int_equal(status, 200);
    cJSON *doc = it_msg_json(m);
    it_msg_free(m);
    assert_non_null(doc);
    return doc;
}

/* Reported patch expected to fail with status and errorCode; checks the error body. */
static void patch_fails(struct it_client *c, const char *rid, const char *patch, int status,
                        int code)
{
    int got;
    struct it_msg *m = it_twin_request(c, rid, patch, &got);
    assert_non_null(m);
    assert_int_equal(got, status);
    /* an error answer carries no $version */
    char *v = it_topic_param(m->topic, "$version");
    assert_null(v);
    cJSON *body = it_msg_json(m);
    it_msg_free(m);
    assert_non_null(body);
    assert_int_equal((int)it_json_num(body, "errorCode", 0), code);
    assert_non_null(it_json_str(body, "trackingId"));
    assert_non_null(it_json_str(body, "message"));
    assert_non_null(it_json_str(body, "timestampUtc"));
    cJSON_Delete(body);
}

/* Reported patch expected to succeed: returns the new reported $version from the topic. */
static int patch_succeeds(struct it_client *c, const char *rid, const char *patch)
{
    int status;
    struct it_msg *m = it_twin_request(c, rid, patch, &status);
    assert_non_null(m);
    assert_int_equal(status, 204);
    char *v = it_topic_param(m->topic, "$version");
    it_msg_free(m);
    assert_non_null(v);
    int version = atoi(v);
    free(v);
    return version;
}

/* {"l1":{"l2":...{"ln":1}...}}: n levels of members below the root. */
static char *nested(int n)
{
    size_t cap = (size_t)n * 16 + 16, len = 0;
    char *s = malloc(cap);
    assert_non_null(s);
    s[len++] = '{';
    for (int i = 1; i <= n; i++)
        len += (size_t)snprintf(s + len, cap - len, "\"l%d\":%s", i, i == n ? "1" : "{");
    for (int i = 1; i <= n; i++)
        s[len++] = '}';
    s[len] = '\0';
    return s;
}

/* {"s":"xxxx...x"} with a string of n bytes. */
static char *long_string_patch(size_t n)
{
    char *s = malloc(n + 16);
    assert_non_null(s);
    memcpy(s, "{\"s\":\"", 6);
    memset(s + 6, 'x', n);
    memcpy(s + 6 + n, "\"}", 3);
    return s;
}

static void test_twin_get_returns_sections_succeeds(void **state)
{
    (void)state;
    struct it_client *c = twin_client(IT_DEV1, NULL, IT_DEV1_KEY);
    int status;
    struct it_msg *m = it_twin_request(c, "get-1", NULL, &status);
    assert_non_null(m);
    assert_int_equal(status, 200);
    /* the response topic echoes the rid exactly */
    assert_string_equal(m->topic, "$iothub/twin/res/200/?$rid=get-1");
    cJSON *doc = it_msg_json(m);
    it_msg_free(m);
    assert_non_null(doc);
    assert_true(cJSON_IsNumber(it_json_get(doc, "desired.$version")));
    assert_true(cJSON_IsNumber(it_json_get(doc, "reported.$version")));
    /* the device view has no wrapper, no tags, no metadata */
    assert_null(it_json_get(doc, "properties"));
    assert_null(it_json_get(doc, "tags"));
    assert_null(it_json_get(doc, "desired.$metadata"));
    cJSON_Delete(doc);
    it_client_close(c);
}

static void test_twin_reported_patch_increments_version_succeeds(void **state)
{
    (void)state;
    struct it_client *c = twin_client(IT_DEV1, NULL, IT_DEV1_KEY);
    cJSON *before = twin_get(c, "rp-1");
    int v0 = (int)it_json_num(before, "reported.$version", -1);
    cJSON_Delete(before);

    int v1 = patch_succeeds(c, "rp-2", "{\"temperature\":21.5,\"fw\":{\"version\":\"1.2\"}}");
    assert_int_equal(v1, v0 + 1);

    cJSON *after = twin_get(c, "rp-3");
    assert_int_equal((int)it_json_num(after, "reported.$version", -1), v1);
    assert_true(it_json_num(after, "reported.temperature", 0) == 21.5);
    assert_string_equal(it_json_str(after, "reported.fw.version"), "1.2");
    cJSON_Delete(after);

    /* null deletes a member (merge-patch) */
    int v2 = patch_succeeds(c, "rp-4", "{\"temperature\":null}");
    assert_int_equal(v2, v1 + 1);
    after = twin_get(c, "rp-5");
    assert_null(it_json_get(after, "reported.temperature"));
    assert_string_equal(it_json_str(after, "reported.fw.version"), "1.2");
    cJSON_Delete(after);
    it_client_close(c);
}

static void test_twin_reported_malformed_json_fails(void **state)
{
    (void)state;
    struct it_client *c = twin_client(IT_DEV1, NULL, IT_DEV1_KEY);
    patch_fails(c, "bad-json", "{\"a\":", 400, 400006);
    it_client_close(c);
}

static void test_twin_reported_key_with_dollar_fails(void **state)
{
    (void)state;
    struct it_client *c = twin_client(IT_DEV1, NULL, IT_DEV1_KEY);
    patch_fails(c, "key-dollar", "{\"$bad\":1}", 400, 400004);
    it_client_close(c);
}

static void test_twin_reported_key_with_dot_fails(void **state)
{
    (void)state;
    struct it_client *c = twin_client(IT_DEV1, NULL, IT_DEV1_KEY);
    patch_fails(c, "key-dot", "{\"a\":{\"b.c\":1}}", 400, 400004);
    it_client_close(c);
}

static void test_twin_reported_depth_10_succeeds(void **state)
{
    (void)state;
    struct it_client *c = twin_client(IT_DEV1, NULL, IT_DEV1_KEY);
    char *p = nested(10);
    patch_succeeds(c, "depth-10", p);
    free(p);
    cJSON *doc = twin_get(c, "depth-10-get");
    assert_true(it_json_num(doc, "reported.l1.l2.l3.l4.l5.l6.l7.l8.l9.l10", 0) == 1);
    cJSON_Delete(doc);
    it_client_close(c);
}

static void test_twin_reported_depth_11_fails(void **state)
{
    (void)state;
    struct it_client *c = twin_client(IT_DEV1, NULL, IT_DEV1_KEY);
    char *p = nested(11);
    patch_fails(c, "depth-11", p, 400, 400004);
    free(p);
    it_client_close(c);
}

static void test_twin_reported_string_4096_bytes_succeeds(void **state)
{
    (void)state;
    struct it_client *c = twin_client(IT_DEV2, NULL, IT_DEV2_KEY);
    char *p = long_string_patch(4096);
    patch_succeeds(c, "str-4096", p);
    free(p);
    it_client_close(c);
}

static void test_twin_reported_string_over_4k_fails(void **state)
{
    (void)state;
    struct it_client *c = twin_client(IT_DEV1, NULL, IT_DEV1_KEY);
    char *p = long_string_patch(4097);
    patch_fails(c, "str-4097", p, 400, 400004);
    free(p);
    it_client_close(c);
}

static void test_twin_reported_over_32k_fails(void **state)
{
    (void)state;
    struct it_client *c = twin_client(IT_DEV1, NULL, IT_DEV1_KEY);
    cJSON *before = twin_get(c, "big-0");
    int v0 = (int)it_json_num(before, "reported.$version", -1);
    cJSON_Delete(before);

    /* nine 4000-byte strings: each value is legal, the section is about 36 KB */
    size_t cap = 9 * 4020 + 16, len = 0;
    char *p = malloc(cap);
    assert_non_null(p);
    p[len++] = '{';
    for (int i = 0; i < 9; i++) {
        len += (size_t)snprintf(p + len, cap - len, "%s\"k%d\":\"", i ? "," : "", i);
        memset(p + len, 'a' + i, 4000);
        len += 4000;
        p[len++] = '"';
    }
    p[len++] = '}';
    p[len] = '\0';
    patch_fails(c, "big-1", p, 403, 403100);
    free(p);

    /* nothing of the refused patch was applied */
    cJSON *after = twin_get(c, "big-2");
    assert_int_equal((int)it_json_num(after, "reported.$version", -1), v0);
    assert_null(it_json_get(after, "reported.k0"));
    cJSON_Delete(after);
    it_client_close(c);
}

static void test_twin_desired_patch_notifies_device_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    struct it_client *c = twin_client(IT_DEV1, NULL, IT_DEV1_KEY);
    assert_int_equal(
        it_client_subscribe(c, "$iothub/twin/PATCH/properties/desired/#", 1, IT_WAIT_MS), 1);

    cJSON *r = it_control(svc, IT_WAIT_MS,
                          "{\"command\":\"updateTwin\",\"deviceId\":\"" IT_DEV1 "\","
                          "\"patch\":{\"properties\":{\"desired\":{\"interval\":30,"
                          "\"mode\":{\"eco\":true}}}}}");
    assert_non_null(r);
    assert_null(cJSON_GetObjectItemCaseSensitive(r, "error"));
    int version = (int)it_json_num(r, "data.properties.desired.$version", -1);
    assert_true(version > 0);
    cJSON_Delete(r);

    struct it_msg *m =
        it_client_wait_prefix(c, "$iothub/twin/PATCH/properties/desired/", IT_WAIT_MS);
    assert_non_null(m);
    char expected[128];
    snprintf(expected, sizeof expected, "$iothub/twin/PATCH/properties/desired/?$version=%d",
             version);
    assert_string_equal(m->topic, expected);
    cJSON *body = it_msg_json(m);
    it_msg_free(m);
    assert_non_null(body);
    assert_int_equal((int)it_json_num(body, "interval", -1), 30);
    assert_true(cJSON_IsTrue(it_json_get(body, "mode.eco")));
    assert_int_equal((int)it_json_num(body, "$version", -1), version);
    cJSON_Delete(body);

    /* the device's GET agrees */
    cJSON *doc = twin_get(c, "after-desired");
    assert_int_equal((int)it_json_num(doc, "desired.$version", -1), version);
    assert_int_equal((int)it_json_num(doc, "desired.interval", -1), 30);
    cJSON_Delete(doc);
    it_client_close(c);
    it_client_close(svc);
}

static void test_twin_update_etag_mismatch_fails(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    cJSON *r =
        it_control(svc, IT_WAIT_MS, "{\"command\":\"getTwin\",\"deviceId\":\"" IT_DEV2 "\"}");
    assert_non_null(r);
    const char *etag = it_json_str(r, "data.etag");
    assert_non_null(etag);
    char *stale = it_strdupf("%s", etag);
    cJSON_Delete(r);

    /* the current etag matches; afterwards it is stale */
    r = it_control(svc, IT_WAIT_MS,
                   "{\"command\":\"updateTwin\",\"deviceId\":\"" IT_DEV2 "\",\"etag\":\"%s\","
                   "\"patch\":{\"tags\":{\"site\":\"a\"}}}",
                   stale);
    assert_non_null(r);
    assert_null(cJSON_GetObjectItemCaseSensitive(r, "error"));
    assert_string_equal(it_json_str(r, "data.tags.site"), "a");
    cJSON_Delete(r);
    r = it_control(svc, IT_WAIT_MS,
                   "{\"command\":\"updateTwin\",\"deviceId\":\"" IT_DEV2 "\",\"etag\":\"%s\","
                   "\"patch\":{\"tags\":{\"site\":\"b\"}}}",
                   stale);
    assert_non_null(r);
    assert_non_null(it_json_str(r, "error"));
    assert_int_equal((int)it_json_num(r, "status", 0), 412);
    assert_int_equal((int)it_json_num(r, "errorCode", 0), 412001);
    cJSON_Delete(r);
    free(stale);
    it_client_close(svc);
}

static void test_twin_module_twin_is_separate_succeeds(void **state)
{
    (void)state;
    struct it_client *mod = twin_client(IT_DEV1, IT_MOD1, IT_MOD1_KEY);
    struct it_client *dev = twin_client(IT_DEV1, NULL, IT_DEV1_KEY);
    patch_succeeds(mod, "mod-1", "{\"moduleOnly\":\"yes\"}");
    cJSON *mdoc = twin_get(mod, "mod-2");
    assert_string_equal(it_json_str(mdoc, "reported.moduleOnly"), "yes");
    cJSON_Delete(mdoc);
    cJSON *ddoc = twin_get(dev, "mod-3");
    assert_null(it_json_get(ddoc, "reported.moduleOnly"));
    cJSON_Delete(ddoc);
    it_client_close(dev);
    it_client_close(mod);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_twin_get_returns_sections_succeeds),
        cmocka_unit_test(test_twin_reported_patch_increments_version_succeeds),
        cmocka_unit_test(test_twin_reported_malformed_json_fails),
        cmocka_unit_test(test_twin_reported_key_with_dollar_fails),
        cmocka_unit_test(test_twin_reported_key_with_dot_fails),
        cmocka_unit_test(test_twin_reported_depth_10_succeeds),
        cmocka_unit_test(test_twin_reported_depth_11_fails),
        cmocka_unit_test(test_twin_reported_string_4096_bytes_succeeds),
        cmocka_unit_test(test_twin_reported_string_over_4k_fails),
        cmocka_unit_test(test_twin_reported_over_32k_fails),
        cmocka_unit_test(test_twin_desired_patch_notifies_device_succeeds),
        cmocka_unit_test(test_twin_update_etag_mismatch_fails),
        cmocka_unit_test(test_twin_module_twin_is_separate_succeeds),
    };
    return cmocka_run_group_tests_name("it_twin", tests, group_setup, group_teardown);
}
