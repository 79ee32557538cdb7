/*
 * it_c2d.c - cloud-to-device messages through the control API against the
 * real broker + plugin (iothub-protocol.md section 5): delivery topic and
 * property bag, both subscription forms, the offline queue and its limits.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
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

static void assert_bag(const char *bag, const char *key, const char *value)
{
    char *v = it_bag_get(bag, key);
    if (!v)
        fprintf(stderr, "# property bag '%s' lacks '%s'\n", bag, key);
    assert_non_null(v);
    assert_string_equal(v, value);
    free(v);
}

/* The bag part of a delivery topic of device d (test fails on another prefix). */
static const char *bag_of(const struct it_msg *m, const char *device_id)
{
    char prefix[128];
    int n = snprintf(prefix, sizeof prefix, "devices/%s/messages/devicebound/", device_id);
    assert_memory_equal(m->topic, prefix, (size_t)n);
    return m->topic + n;
}

static void test_c2d_online_device_receives_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    struct it_client *dev = it_device_open(&hub, IT_DEV1, NULL, IT_DEV1_KEY);
    assert_int_equal(
        it_client_subscribe(dev, "devices/" IT_DEV1 "/messages/devicebound/#", 1, IT_WAIT_MS), 1);

    cJSON *r = it_control(svc, IT_WAIT_MS,
                          "{\"command\":\"sendC2D\",\"deviceId\":\"" IT_DEV1 "\","
                          "\"body\":\"hello device\",\"messageId\":\"m-1\","
                          "\"correlationId\":\"c-1\",\"ack\":\"full\","
                          "\"properties\":{\"color\":\"red blue\",\"flag\":null}}");
    assert_non_null(r);
    assert_null(cJSON_GetObjectItemCaseSensitive(r, "error"));
    assert_string_equal(it_json_str(r, "data.messageId"), "m-1");
    assert_true(cJSON_IsTrue(it_json_get(r, "data.delivered")));
    cJSON_Delete(r);

    struct it_msg *m =
        it_client_wait_prefix(dev, "devices/" IT_DEV1 "/messages/devicebound/", IT_WAIT_MS);
    assert_non_null(m);
    assert_int_equal(m->len, 12);
    assert_memory_equal(m->payload, "hello device", 12);
    const char *bag = bag_of(m, IT_DEV1);
    /* system keys travel URL-encoded, as the SDKs expect them */
    assert_non_null(strstr(bag, "%24.mid="));
    assert_non_null(strstr(bag, "%24.to="));
    assert_bag(bag, "$.mid", "m-1");
    assert_bag(bag, "$.cid", "c-1");
    assert_bag(bag, "iothub-ack", "full");
    assert_bag(bag, "color", "red blue");
    assert_bag(bag, "flag", "");
    char *to = it_bag_get(bag, "$.to");
    assert_non_null(to);
    assert_int_equal(strcasecmp(to, "/devices/" IT_DEV1 "/messages/devicebound"), 0);
    free(to);
    it_msg_free(m);
    it_client_close(dev);
    it_client_close(svc);
}

static void test_c2d_wildcard_subscription_receives_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    struct it_client *dev = it_device_open(&hub, IT_DEV1, NULL, IT_DEV1_KEY);
    assert_int_equal(it_client_subscribe(dev, "devices/+/messages/devicebound/#", 1, IT_WAIT_MS),
                     1);
    cJSON *r = it_control(svc, IT_WAIT_MS,
                          "{\"command\":\"sendC2D\",\"deviceId\":\"" IT_DEV1 "\","
                          "\"body\":\"plus\",\"messageId\":\"m-plus\"}");
    assert_non_null(r);
    assert_null(cJSON_GetObjectItemCaseSensitive(r, "error"));
    cJSON_Delete(r);
    struct it_msg *m =
        it_client_wait_prefix(dev, "devices/" IT_DEV1 "/messages/devicebound/", IT_WAIT_MS);
    assert_non_null(m);
    assert_bag(bag_of(m, IT_DEV1), "$.mid", "m-plus");
    /* the default ack is none, and it is always present */
    assert_bag(bag_of(m, IT_DEV1), "iothub-ack", "none");
    assert_string_equal(m->payload, "plus");
    it_msg_free(m);
    it_client_close(dev);
    it_client_close(svc);
}

static void test_c2d_offline_device_receives_after_subscribe_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    for (int i = 1; i <= 2; i++) {
        cJSON *r = it_control(svc, IT_WAIT_MS,
                              "{\"command\":\"sendC2D\",\"deviceId\":\"" IT_DEV3 "\","
                              "\"body\":\"queued %d\",\"messageId\":\"q-%d\"}",
                              i, i);
        assert_non_null(r);
        assert_null(cJSON_GetObjectItemCaseSensitive(r, "error"));
        assert_false(cJSON_IsTrue(it_json_get(r, "data.delivered")));
        assert_int_equal((int)it_json_num(r, "data.queued", -1), i);
        cJSON_Delete(r);
    }
    struct it_client *dev = it_device_open(&hub, IT_DEV3, NULL, IT_DEV3_KEY);
    assert_int_equal(
        it_client_subscribe(dev, "devices/" IT_DEV3 "/messages/devicebound/#", 1, IT_WAIT_MS), 1);
    /* delivered in the order sent */
    for (int i = 1; i <= 2; i++) {
        struct it_msg *m =
            it_client_wait_prefix(dev, "devices/" IT_DEV3 "/messages/devicebound/", IT_WAIT_MS);
        assert_non_null(m);
        char mid[16], body[16];
        snprintf(mid, sizeof mid, "q-%d", i);
        snprintf(body, sizeof body, "queued %d", i);
        assert_bag(bag_of(m, IT_DEV3), "$.mid", mid);
        assert_string_equal(m->payload, body);
        it_msg_free(m);
    }
    it_client_close(dev);
    it_client_close(svc);
}

static void test_c2d_persistent_session_receives_without_resubscribe_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    char *user = it_device_username(hub.hub_name, IT_DEV2, NULL);
    char *pass = it_device_token(hub.hub_name, IT_DEV2, NULL, IT_DEV2_KEY, it_expiry());
    struct it_connect_opts o = {
        .client_id = IT_DEV2, .username = user, .password = pass, .persistent = true};
    int connack;
    struct it_client *dev = it_client_connect(&hub, &o, &connack);
    assert_int_equal(connack, 0);
    assert_int_equal(
        it_client_subscribe(dev, "devices/" IT_DEV2 "/messages/devicebound/#", 1, IT_WAIT_MS), 1);
    it_client_close(dev);
    /* the disconnect event orders the close before the send */
    struct it_client *watch = it_service_open(&hub, true);
    cJSON *r =
        it_control(watch, IT_WAIT_MS, "{\"command\":\"getDevice\",\"deviceId\":\"" IT_DEV2 "\"}");
    assert_non_null(r);
    if (strcmp(it_json_str(r, "data.connectionState") ? it_json_str(r, "data.connectionState") : "",
               "Disconnected") != 0) {
        cJSON *ev = it_event_wait(watch, "disconnected", IT_DEV2, NULL, NULL, NULL, IT_WAIT_MS);
        assert_non_null(ev);
        cJSON_Delete(ev);
    }
    cJSON_Delete(r);
    it_client_close(watch);

    r = it_control(svc, IT_WAIT_MS,
                   "{\"command\":\"sendC2D\",\"deviceId\":\"" IT_DEV2 "\","
                   "\"body\":\"while away\",\"messageId\":\"p-1\"}");
    assert_non_null(r);
    assert_null(cJSON_GetObjectItemCaseSensitive(r, "error"));
    assert_false(cJSON_IsTrue(it_json_get(r, "data.delivered")));
    cJSON_Delete(r);

    /* CleanSession 0: the C2D subscription persists, the queued message comes without a new
     * SUBSCRIBE (iothub-protocol.md 3.5) */
    dev = it_client_connect(&hub, &o, &connack);
    assert_int_equal(connack, 0);
    struct it_msg *m =
        it_client_wait_prefix(dev, "devices/" IT_DEV2 "/messages/devicebound/", IT_WAIT_MS);
    assert_non_null(m);
    assert_bag(bag_of(m, IT_DEV2), "$.mid", "p-1");
    assert_string_equal(m->payload, "while away");
    /* exactly once: a twin round trip later, no second copy */
    assert_int_equal(it_client_subscribe(dev, "$iothub/twin/res/#", 1, IT_WAIT_MS), 1);
    int status;
    struct it_msg *marker = it_twin_request(dev, "p-marker", NULL, &status);
    assert_non_null(marker);
    it_msg_free(marker);
    assert_int_equal(it_client_count_prefix(dev, "devices/"), 0);
    it_msg_free(m);
    it_client_close(dev);
    free(user);
    free(pass);
    it_client_close(svc);
}

static void test_c2d_unknown_device_fails(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    cJSON *r = it_control(svc, IT_WAIT_MS,
                          "{\"command\":\"sendC2D\",\"deviceId\":\"it-nobody\",\"body\":\"x\"}");
    assert_non_null(r);
    assert_non_null(it_json_str(r, "error"));
    assert_int_equal((int)it_json_num(r, "status", 0), 404);
    assert_int_equal((int)it_json_num(r, "errorCode", 0), 404001);
    cJSON_Delete(r);
    it_client_close(svc);
}

static void test_c2d_module_target_fails(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    cJSON *r = it_control(svc, IT_WAIT_MS,
                          "{\"command\":\"sendC2D\",\"deviceId\":\"" IT_DEV1 "\","
                          "\"moduleId\":\"" IT_MOD1 "\",\"body\":\"x\"}");
    assert_non_null(r);
    assert_non_null(it_json_str(r, "error"));
    assert_int_equal((int)it_json_num(r, "errorCode", 0), 400004);
    cJSON_Delete(r);
    it_client_close(svc);
}

static void test_c2d_queue_over_50_fails(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    for (int i = 1; i <= 50; i++) {
        cJSON *r = it_control(svc, IT_WAIT_MS,
                              "{\"command\":\"sendC2D\",\"deviceId\":\"" IT_DEV4 "\","
                              "\"body\":\"n%d\"}",
                              i);
        assert_non_null(r);
        assert_null(cJSON_GetObjectItemCaseSensitive(r, "error"));
        cJSON_Delete(r);
    }
    cJSON *r = it_control(svc, IT_WAIT_MS,
                          "{\"command\":\"sendC2D\",\"deviceId\":\"" IT_DEV4 "\","
                          "\"body\":\"one too many\"}");
    assert_non_null(r);
    assert_non_null(it_json_str(r, "error"));
    assert_int_equal((int)it_json_num(r, "status", 0), 403);
    assert_int_equal((int)it_json_num(r, "errorCode", 0), 403004);
    cJSON_Delete(r);
    it_client_close(svc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_c2d_online_device_receives_succeeds),
        cmocka_unit_test(test_c2d_wildcard_subscription_receives_succeeds),
        cmocka_unit_test(test_c2d_offline_device_receives_after_subscribe_succeeds),
        cmocka_unit_test(test_c2d_persistent_session_receives_without_resubscribe_succeeds),
        cmocka_unit_test(test_c2d_unknown_device_fails),
        cmocka_unit_test(test_c2d_module_target_fails),
        cmocka_unit_test(test_c2d_queue_over_50_fails),
    };
    return cmocka_run_group_tests_name("it_c2d", tests, group_setup, group_teardown);
}
