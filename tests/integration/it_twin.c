/*
 * it_twin.c - device and module twins over MQTT against the real broker +
 * plugin (iothub-protocol.md section 6, errors section 9.1): GET, reported
 * PATCH with versions, the `$version` precondition of a reported PATCH, the
 * validation limits and their error bodies (over MQTT for reported
 * properties, through the control API for desired properties and tags), and
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

/* The device-twins article's valid example: ten nested objects, a string in the tenth. */
static void test_twin_reported_article_depth_example_succeeds(void **state)
{
    (void)state;
    struct it_client *c = twin_client(IT_DEV1, NULL, IT_DEV1_KEY);
    patch_succeeds(c, "depth-article",
                   "{\"one\":{\"two\":{\"three\":{\"four\":{\"five\":{\"six\":{\"seven\":"
                   "{\"eight\":{\"nine\":{\"ten\":{\"property\":\"value\"}}}}}}}}}}}");
    char *p = nested(11); /* the same shape: l1..l10 objects, a number at level 11 */
    patch_succeeds(c, "depth-11-scalar", p);
    free(p);
    cJSON *doc = twin_get(c, "depth-article-get");
    assert_string_equal(
        it_json_str(doc, "reported.one.two.three.four.five.six.seven.eight.nine.ten.property"),
        "value");
    assert_true(it_json_num(doc, "reported.l1.l2.l3.l4.l5.l6.l7.l8.l9.l10.l11", 0) == 1);
    cJSON_Delete(doc);
    it_client_close(c);
}

static void test_twin_reported_11_objects_fails(void **state)
{
    (void)state;
    struct it_client *c = twin_client(IT_DEV1, NULL, IT_DEV1_KEY);
    char *p = nested(12); /* object l11 at level 11 */
    patch_fails(c, "depth-12", p, 400, 400004);
    free(p);
    patch_fails(c, "depth-arr",
                "{\"l1\":{\"l2\":{\"l3\":{\"l4\":{\"l5\":{\"l6\":{\"l7\":"
                "{\"l8\":{\"l9\":{\"l10\":[[1]]}}}}}}}}}}",
                400, 400004);
    it_client_close(c);
}

/* ---- rules the hub enforces that twinhub once let through (issue 9) ---- */

static void test_twin_reported_null_in_array_object_fails(void **state)
{
    (void)state;
    struct it_client *c = twin_client(IT_DEV3, NULL, IT_DEV3_KEY);
    patch_fails(c, "arr-null-1", "{\"a\":[{\"b\":null}]}", 400, 400004);
    patch_fails(c, "arr-null-2", "{\"x\":{\"y\":[1,{\"z\":[{\"w\":null}]}]}}", 400, 400004);
    cJSON *doc = twin_get(c, "arr-null-get");
    assert_null(it_json_get(doc, "reported.a"));
    assert_null(it_json_get(doc, "reported.x"));
    cJSON_Delete(doc);
    it_client_close(c);
}

static void test_twin_reported_key_characters_fail(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "{\"o#k\":1}",              /* '#': IoT Edge's validator, reserved by the hub */
        "{\"a\\u0000b\":1}",        /* NUL: cJSON would have cut the name to "a" */
        "{\"a\\u0001b\":1}",        /* C0 */
        "{\"x\":{\"a\\u0085\":1}}", /* C1 */
        "{\"a\\u00a0b\":1}",        /* no-break space */
        "{\"s\":\"a\\u0000b\"}",    /* a string holding NUL: twinhub cannot store it */
    };
    struct it_client *c = twin_client(IT_DEV3, NULL, IT_DEV3_KEY);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char rid[32];
        snprintf(rid, sizeof rid, "key-%zu", i);
        patch_fails(c, rid, bad[i], 400, 400004);
    }
    cJSON *doc = twin_get(c, "key-get");
    assert_null(it_json_get(doc, "reported.a"));
    assert_null(it_json_get(doc, "reported.s"));
    cJSON_Delete(doc);
    it_client_close(c);
}

static void test_twin_reported_decimals_beyond_2_52_succeeds(void **state)
{
    (void)state;
    struct it_client *c = twin_client(IT_DEV3, NULL, IT_DEV3_KEY);
    patch_succeeds(c, "dec-1", "{\"huge\":1.5e300,\"edge\":4503599627370497.0,\"small\":-1e20}");
    cJSON *doc = twin_get(c, "dec-get");
    assert_true(it_json_num(doc, "reported.huge", 0) == 1.5e300);
    assert_true(it_json_num(doc, "reported.edge", 0) == 4503599627370497.0);
    assert_true(it_json_num(doc, "reported.small", 0) == -1e20);
    cJSON_Delete(doc);
    /* An integer literal beyond 2^52 stays refused. */
    patch_fails(c, "dec-int", "{\"big\":100000000000000000000}", 400, 400004);
    it_client_close(c);
}

/* A control command that must fail with 400 / 400004. */
static void control_refused(struct it_client *svc, const char *command, const char *patch)
{
    cJSON *r = it_control(svc, IT_WAIT_MS,
                          "{\"command\":\"%s\",\"deviceId\":\"" IT_DEV3 "\",\"patch\":%s}", command,
                          patch);
    assert_non_null(r);
    if (it_json_str(r, "error") == NULL) {
        char *text = cJSON_PrintUnformatted(r);
        fprintf(stderr, "# %s %s was accepted: %s\n", command, patch, text);
        free(text);
    }
    assert_non_null(it_json_str(r, "error"));
    assert_int_equal((int)it_json_num(r, "status", 0), 400);
    assert_int_equal((int)it_json_num(r, "errorCode", 0), 400004);
    cJSON_Delete(r);
}

static void test_twin_desired_and_tags_rules_fail(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    control_refused(svc, "updateTwin", "{\"properties\":{\"desired\":{\"a\":[{\"b\":null}]}}}");
    control_refused(svc, "updateTwin", "{\"tags\":{\"a\":[{\"b\":null}]}}");
    control_refused(svc, "updateTwin", "{\"tags\":{\"o#k\":1}}");
    control_refused(svc, "updateTwin", "{\"properties\":{\"desired\":{\"x\":{\"o#k\":1}}}}");
    /* A replace has nothing to delete: null anywhere is refused (az iot CLI issue 693). */
    control_refused(svc, "replaceTwin", "{\"tags\":{\"my-tag\":null}}");
    control_refused(svc, "replaceTwin", "{\"properties\":{\"desired\":{\"c\":{\"d\":null}}}}");
    /* The article's depth example is fine for desired properties and tags. */
    cJSON *data = it_control_ok(
        svc, "{\"command\":\"updateTwin\",\"deviceId\":\"" IT_DEV3 "\",\"patch\":{"
             "\"tags\":{\"one\":{\"two\":{\"three\":{\"four\":{\"five\":{\"six\":{\"seven\":"
             "{\"eight\":{\"nine\":{\"ten\":{\"property\":\"value\"}}}}}}}}}}},"
             "\"properties\":{\"desired\":{\"huge\":1.5e300,\"one\":{\"two\":{\"three\":"
             "{\"four\":{\"five\":{\"six\":{\"seven\":{\"eight\":{\"nine\":{\"ten\":"
             "{\"property\":\"value\"}}}}}}}}}}}}}}");
    assert_string_equal(
        it_json_str(data, "tags.one.two.three.four.five.six.seven.eight.nine.ten.property"),
        "value");
    assert_true(it_json_num(data, "properties.desired.huge", 0) == 1.5e300);
    assert_null(it_json_get(data, "tags.a"));
    assert_null(it_json_get(data, "tags.my-tag"));
    cJSON_Delete(data);
    it_client_close(svc);
}

/* ---- $version on a reported PATCH: a precondition on the reported $version ---- */

/* The reported $version as the device reads it. */
static int reported_version(struct it_client *c, const char *rid)
{
    cJSON *doc = twin_get(c, rid);
    int v = (int)it_json_num(doc, "reported.$version", -1);
    cJSON_Delete(doc);
    return v;
}

/* Reported PATCH with `more` after the rid; returns the answer's status, checks the error body. */
static int patch_at(struct it_client *c, const char *rid, const char *more, const char *patch,
                    int want_code)
{
    int status;
    struct it_msg *m = it_twin_request_query(c, rid, more, patch, &status);
    assert_non_null(m);
    if (want_code) {
        cJSON *body = it_msg_json(m);
        assert_non_null(body);
        assert_int_equal((int)it_json_num(body, "errorCode", 0), want_code);
        assert_non_null(it_json_str(body, "message"));
        cJSON_Delete(body);
        char *v = it_topic_param(m->topic, "$version");
        assert_null(v);
    }
    it_msg_free(m);
    return status;
}

static void test_twin_reported_version_match_succeeds(void **state)
{
    (void)state;
    struct it_client *c = twin_client(IT_DEV4, NULL, IT_DEV4_KEY);
    int v0 = reported_version(c, "ver-0");
    char more[64];
    snprintf(more, sizeof more, "&$version=%d", v0);
    int status;
    struct it_msg *m = it_twin_request_query(c, "ver-1", more, "{\"Key1\":\"Value1\"}", &status);
    assert_non_null(m);
    assert_int_equal(status, 204);
    char *v = it_topic_param(m->topic, "$version");
    assert_non_null(v);
    assert_int_equal(atoi(v), v0 + 1);
    free(v);
    it_msg_free(m);
    /* The version of that answer is the one to send next; without $version nothing is
     * compared. */
    snprintf(more, sizeof more, "&$version=%d", v0 + 1);
    assert_int_equal(patch_at(c, "ver-2", more, "{\"Key1\":\"newValue1\"}", 0), 204);
    assert_int_equal(patch_at(c, "ver-3", "", "{\"Key2\":\"Value2\"}", 0), 204);
    cJSON *doc = twin_get(c, "ver-4");
    assert_int_equal((int)it_json_num(doc, "reported.$version", -1), v0 + 3);
    assert_string_equal(it_json_str(doc, "reported.Key1"), "newValue1");
    cJSON_Delete(doc);
    it_client_close(c);
}

static void test_twin_reported_version_mismatch_fails(void **state)
{
    (void)state;
    struct it_client *c = twin_client(IT_DEV4, NULL, IT_DEV4_KEY);
    assert_int_equal(patch_at(c, "mis-0", "", "{\"Key1\":\"kept\"}", 0), 204);
    int v0 = reported_version(c, "mis-1");
    /* lower, higher, and the 0 the Java SDK 2.x sent by default (azure-iot-sdk-java#1776) */
    const int wrong[] = {v0 - 1, v0 + 1, 0};
    for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
        char more[64], rid[32];
        snprintf(more, sizeof more, "&$version=%d", wrong[i]);
        snprintf(rid, sizeof rid, "mis-w%zu", i);
        assert_int_equal(patch_at(c, rid, more, "{\"Key1\":\"lost\"}", 412001), 412);
    }
    cJSON *doc = twin_get(c, "mis-2");
    assert_int_equal((int)it_json_num(doc, "reported.$version", -1), v0);
    assert_string_equal(it_json_str(doc, "reported.Key1"), "kept");
    cJSON_Delete(doc);
    it_client_close(c);
}

static void test_twin_reported_version_malformed_fails(void **state)
{
    (void)state;
    struct it_client *c = twin_client(IT_DEV4, NULL, IT_DEV4_KEY);
    int v0 = reported_version(c, "mal-0");
    static const char *const bad[] = {"&$version=abc", "&$version=", "&$version=1.0",
                                      "&$version=null"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char rid[32];
        snprintf(rid, sizeof rid, "mal-%zu", i + 1);
        assert_int_equal(patch_at(c, rid, bad[i], "{\"Key3\":1}", 400004), 400);
    }
    /* A patch that is invalid itself is answered for the patch, whatever the version. */
    assert_int_equal(patch_at(c, "mal-9", "&$version=1", "{\"a.b\":1}", 400004), 400);
    assert_int_equal(reported_version(c, "mal-10"), v0);
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

/*
 * properties.reported in a service write: the read-only $metadata/$version of
 * a twin as read pass (the C# SDK and the az CLI send a read twin back whole),
 * the device gets the desired patch, and the write is one etag step; a
 * reported value is refused (400004) and changes nothing.
 */
static void test_twin_update_reported_as_read_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    struct it_client *c = twin_client(IT_DEV2, NULL, IT_DEV2_KEY);
    assert_int_equal(
        it_client_subscribe(c, "$iothub/twin/PATCH/properties/desired/#", 1, IT_WAIT_MS), 1);
    cJSON *read = it_control_ok(svc, "{\"command\":\"getTwin\",\"deviceId\":\"" IT_DEV2 "\"}");
    char *meta = cJSON_PrintUnformatted(it_json_get(read, "properties.reported.$metadata"));
    assert_non_null(meta);
    int reported_v = (int)it_json_num(read, "properties.reported.$version", -1);
    int desired_v = (int)it_json_num(read, "properties.desired.$version", -1);
    int version = (int)it_json_num(read, "version", -1);

    cJSON *written = it_control_ok(
        svc,
        "{\"command\":\"updateTwin\",\"deviceId\":\"" IT_DEV2 "\",\"etag\":\"%s\",\"patch\":{"
        "\"tags\":{\"whole\":true},\"properties\":{\"desired\":{\"whole\":1},"
        "\"reported\":{\"$metadata\":%s,\"$version\":%d}}}}",
        it_json_str(read, "etag"), meta, reported_v);
    assert_int_equal((int)it_json_num(written, "properties.desired.$version", -1), desired_v + 1);
    assert_int_equal((int)it_json_num(written, "properties.reported.$version", -1), reported_v);
    assert_int_equal((int)it_json_num(written, "version", -1), version + 1);
    struct it_msg *m =
        it_client_wait_prefix(c, "$iothub/twin/PATCH/properties/desired/", IT_WAIT_MS);
    assert_non_null(m);
    cJSON *body = it_msg_json(m);
    it_msg_free(m);
    assert_non_null(body);
    assert_int_equal((int)it_json_num(body, "whole", -1), 1);
    assert_int_equal((int)it_json_num(body, "$version", -1), desired_v + 1);
    assert_null(it_json_get(body, "$metadata"));
    cJSON_Delete(body);

    cJSON *e = it_control_err(svc, 400, 400004,
                              "{\"command\":\"updateTwin\",\"deviceId\":\"" IT_DEV2 "\","
                              "\"patch\":{\"properties\":{\"reported\":{\"$version\":%d,"
                              "\"fw\":\"9.9\"}}}}",
                              reported_v);
    cJSON_Delete(e);
    cJSON *after = it_control_ok(svc, "{\"command\":\"getTwin\",\"deviceId\":\"" IT_DEV2 "\"}");
    assert_true(cJSON_Compare(written, after, 1));
    cJSON_Delete(after);
    cJSON_Delete(written);
    cJSON_Delete(read);
    free(meta);
    it_client_close(c);
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
        cmocka_unit_test(test_twin_reported_article_depth_example_succeeds),
        cmocka_unit_test(test_twin_reported_11_objects_fails),
        cmocka_unit_test(test_twin_reported_null_in_array_object_fails),
        cmocka_unit_test(test_twin_reported_key_characters_fail),
        cmocka_unit_test(test_twin_reported_decimals_beyond_2_52_succeeds),
        cmocka_unit_test(test_twin_desired_and_tags_rules_fail),
        cmocka_unit_test(test_twin_reported_version_match_succeeds),
        cmocka_unit_test(test_twin_reported_version_mismatch_fails),
        cmocka_unit_test(test_twin_reported_version_malformed_fails),
        cmocka_unit_test(test_twin_reported_string_4096_bytes_succeeds),
        cmocka_unit_test(test_twin_reported_string_over_4k_fails),
        cmocka_unit_test(test_twin_reported_over_32k_fails),
        cmocka_unit_test(test_twin_desired_patch_notifies_device_succeeds),
        cmocka_unit_test(test_twin_update_etag_mismatch_fails),
        cmocka_unit_test(test_twin_update_reported_as_read_succeeds),
        cmocka_unit_test(test_twin_module_twin_is_separate_succeeds),
    };
    return cmocka_run_group_tests_name("it_twin", tests, group_setup, group_teardown);
}
