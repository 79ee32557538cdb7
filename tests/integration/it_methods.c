/*
 * it_methods.c - direct methods through the control API against the real
 * broker + plugin (iothub-protocol.md section 8): request topic, rid echo,
 * the device's status and payload in the answer, and the failures 404103
 * (offline or not subscribed), 504101 (no answer in time), 400004, 404001.
 * The device's status is any int32 (the full C SDK answers -1); a status that
 * is no int32 fails that call only and the device stays connected; a body
 * that is not JSON reaches the caller as the device sent it (rawPayload).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
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

static struct it_client *method_client(const char *device, const char *module, const char *key)
{
    struct it_client *c = it_device_open(&hub, device, module, key);
    assert_int_equal(it_client_subscribe(c, "$iothub/methods/POST/#", 0, IT_WAIT_MS), 0);
    return c;
}

static void assert_error(const cJSON *r, int status, int code)
{
    assert_non_null(r);
    assert_non_null(it_json_str(r, "error"));
    assert_int_equal((int)it_json_num(r, "status", 0), status);
    assert_int_equal((int)it_json_num(r, "errorCode", 0), code);
}

/*
 * Receives the request for method `name`, checks the topic shape and answers it with
 * status and body. Returns the request payload parsed (caller frees).
 */
static cJSON *answer_request_as(struct it_client *dev, const char *name, const char *status,
                                const void *body, int len)
{
    char prefix[128];
    snprintf(prefix, sizeof prefix, "$iothub/methods/POST/%s/?$rid=", name);
    struct it_msg *req = it_client_wait_prefix(dev, prefix, IT_WAIT_MS);
    assert_non_null(req);
    char *rid = it_topic_param(req->topic, "$rid");
    assert_non_null(rid);
    assert_true(rid[0] != '\0');
    cJSON *payload = it_msg_json(req);
    it_msg_free(req);
    char topic[256];
    snprintf(topic, sizeof topic, "$iothub/methods/res/%s/?$rid=%s", status, rid);
    free(rid);
    assert_int_equal(it_client_publish(dev, topic, body, len, 1, false), MOSQ_ERR_SUCCESS);
    return payload;
}

static cJSON *answer_request(struct it_client *dev, const char *name, int status, const char *body)
{
    char text[16];
    snprintf(text, sizeof text, "%d", status);
    return answer_request_as(dev, name, text, body, (int)strlen(body));
}

/* Invoke `name` on IT_DEV1, answer it with status text and body, return the caller's entry. */
static cJSON *call_answered(struct it_client *svc, struct it_client *dev, const char *name,
                            const char *status, const void *body, int len)
{
    char corr[32];
    it_control_send(svc, corr,
                    "{\"command\":\"invokeMethod\",\"deviceId\":\"" IT_DEV1 "\","
                    "\"methodName\":\"%s\",\"responseTimeoutInSeconds\":10}",
                    name);
    cJSON_Delete(answer_request_as(dev, name, status, body, len));
    return it_control_wait(svc, corr, IT_WAIT_MS);
}

/* The full C SDK answers an unknown method with -1 ("%d"); the service carries an int32. */
static void test_method_status_int32_range_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, true);
    struct it_client *dev = method_client(IT_DEV1, NULL, IT_DEV1_KEY);
    static const struct {
        const char *text;
        double value;
    } cases[] = {{"-1", -1}, {"2147483647", 2147483647.0}, {"-2147483648", -2147483648.0}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cJSON *r = call_answered(svc, dev, "unknown", cases[i].text, "{ }", 3);
        assert_non_null(r);
        assert_null(cJSON_GetObjectItemCaseSensitive(r, "error"));
        assert_true(it_json_num(r, "data.status", 0) == cases[i].value);
        assert_true(cJSON_IsObject(it_json_get(r, "data.payload")));
        cJSON_Delete(r);
    }
    /* The method event records the status too. */
    cJSON *ev = it_event_wait(svc, "method", IT_DEV1, NULL, NULL, NULL, IT_WAIT_MS);
    assert_non_null(ev);
    assert_true(it_json_num(ev, "data.status", 0) == -1);
    cJSON_Delete(ev);
    assert_false(dev->disconnected);
    it_client_close(dev);
    it_client_close(svc);
}

/* No int32: that call fails, naming the status; the device keeps its connection. */
static void test_method_status_not_int32_fails(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, true);
    struct it_client *dev = method_client(IT_DEV1, NULL, IT_DEV1_KEY);
    static const char *const bad[] = {"abc", "2147483648", "-2147483649", "1.5"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cJSON *r = call_answered(svc, dev, "odd", bad[i], "{}", 2);
        assert_error(r, 400, 400006);
        char *want = it_strdupf("status '%s'", bad[i]);
        assert_non_null(strstr(it_json_str(r, "error"), want));
        assert_non_null(strstr(it_json_str(r, "error"), "-2147483648 to 2147483647"));
        free(want);
        assert_null(cJSON_GetObjectItemCaseSensitive(r, "data"));
        cJSON_Delete(r);
    }
    cJSON *ev = it_event_wait(svc, "method", IT_DEV1, NULL, NULL, NULL, IT_WAIT_MS);
    assert_non_null(ev);
    assert_int_equal((int)it_json_num(ev, "data.errorCode", 0), 400006);
    cJSON_Delete(ev);

    /* Still connected: a later round trip on the same connection works. */
    cJSON *r = call_answered(svc, dev, "after", "200", "{\"ok\":true}", 11);
    assert_non_null(r);
    assert_null(cJSON_GetObjectItemCaseSensitive(r, "error"));
    assert_int_equal((int)it_json_num(r, "data.status", 0), 200);
    assert_true(cJSON_IsTrue(it_json_get(r, "data.payload.ok")));
    cJSON_Delete(r);
    assert_false(dev->disconnected);
    assert_true(it_client_is_connected(dev));
    it_client_close(dev);
    it_client_close(svc);
}

/*
 * A body that is not JSON: IoT Hub passes the bytes on as they are
 * (docs/protocol.md); the caller gets them as rawPayload / rawPayloadBase64.
 */
static void test_method_answer_not_json_is_passed_on_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, true);
    struct it_client *dev = method_client(IT_DEV1, NULL, IT_DEV1_KEY);
    cJSON *r = call_answered(svc, dev, "text", "200", "{'filename': 'logs.zip'}", 24);
    assert_non_null(r);
    assert_null(cJSON_GetObjectItemCaseSensitive(r, "error"));
    assert_int_equal((int)it_json_num(r, "data.status", 0), 200);
    assert_null(it_json_get(r, "data.payload"));
    assert_string_equal(it_json_str(r, "data.rawPayload"), "{'filename': 'logs.zip'}");
    assert_string_equal(it_json_str(r, "data.rawPayloadBase64"),
                        "eydmaWxlbmFtZSc6ICdsb2dzLnppcCd9");
    assert_non_null(it_json_str(r, "data.payloadError"));
    cJSON_Delete(r);
    cJSON *ev = it_event_wait(svc, "method", IT_DEV1, NULL, NULL, NULL, IT_WAIT_MS);
    assert_non_null(ev);
    assert_string_equal(it_json_str(ev, "data.rawPayload"), "{'filename': 'logs.zip'}");
    cJSON_Delete(ev);

    /* Bytes that are not text come as base64 only. */
    static const char bin[] = {'\xff', '\0', 'a'};
    r = call_answered(svc, dev, "bin", "-1", bin, 3);
    assert_non_null(r);
    assert_int_equal((int)it_json_num(r, "data.status", 0), -1);
    assert_null(it_json_get(r, "data.rawPayload"));
    assert_string_equal(it_json_str(r, "data.rawPayloadBase64"), "/wBh");
    cJSON_Delete(r);
    assert_false(dev->disconnected);
    it_client_close(dev);
    it_client_close(svc);
}

static void test_method_device_answers_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    struct it_client *dev = method_client(IT_DEV1, NULL, IT_DEV1_KEY);
    char corr[32];
    it_control_send(svc, corr,
                    "{\"command\":\"invokeMethod\",\"deviceId\":\"" IT_DEV1 "\","
                    "\"methodName\":\"reboot\",\"payload\":{\"delay\":3},"
                    "\"responseTimeoutInSeconds\":10}");
    cJSON *payload = answer_request(dev, "reboot", 201, "{\"result\":\"ok\"}");
    assert_non_null(payload);
    assert_int_equal((int)it_json_num(payload, "delay", -1), 3);
    cJSON_Delete(payload);

    cJSON *r = it_control_wait(svc, corr, IT_WAIT_MS);
    assert_non_null(r);
    assert_null(cJSON_GetObjectItemCaseSensitive(r, "error"));
    assert_string_equal(it_json_str(r, "command"), "invokeMethod");
    assert_int_equal((int)it_json_num(r, "data.status", -1), 201);
    assert_string_equal(it_json_str(r, "data.payload.result"), "ok");
    cJSON_Delete(r);
    it_client_close(dev);
    it_client_close(svc);
}

static void test_method_module_answers_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    struct it_client *mod = method_client(IT_DEV1, IT_MOD1, IT_MOD1_KEY);
    char corr[32];
    it_control_send(svc, corr,
                    "{\"command\":\"invokeMethod\",\"deviceId\":\"" IT_DEV1 "\","
                    "\"moduleId\":\"" IT_MOD1 "\",\"methodName\":\"ping\",\"payload\":\"hi\"}");
    cJSON *payload = answer_request(mod, "ping", 200, "[1,2]");
    assert_true(cJSON_IsString(payload));
    assert_string_equal(payload->valuestring, "hi");
    cJSON_Delete(payload);
    cJSON *r = it_control_wait(svc, corr, IT_WAIT_MS);
    assert_non_null(r);
    assert_int_equal((int)it_json_num(r, "data.status", -1), 200);
    const cJSON *arr = it_json_get(r, "data.payload");
    assert_true(cJSON_IsArray(arr));
    assert_int_equal(cJSON_GetArraySize(arr), 2);
    cJSON_Delete(r);
    it_client_close(mod);
    it_client_close(svc);
}

static void test_method_device_offline_fails(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    cJSON *r = it_control(svc, IT_WAIT_MS,
                          "{\"command\":\"invokeMethod\",\"deviceId\":\"" IT_DEV2 "\","
                          "\"methodName\":\"reboot\"}");
    assert_error(r, 404, 404103);
    cJSON_Delete(r);
    it_client_close(svc);
}

static void test_method_device_not_subscribed_fails(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    struct it_client *dev = it_device_open(&hub, IT_DEV2, NULL, IT_DEV2_KEY);
    cJSON *r = it_control(svc, IT_WAIT_MS,
                          "{\"command\":\"invokeMethod\",\"deviceId\":\"" IT_DEV2 "\","
                          "\"methodName\":\"reboot\"}");
    assert_error(r, 404, 404103);
    cJSON_Delete(r);
    /* And the device was not sent the request anyway. Marker: a request the hub sent it
     * before answering 404103 would reach the device before the answer to this later GET. */
    assert_int_equal(it_client_subscribe(dev, "$iothub/twin/res/#", 1, IT_WAIT_MS), 1);
    int status;
    struct it_msg *marker = it_twin_request(dev, "marker", NULL, &status);
    assert_non_null(marker);
    it_msg_free(marker);
    assert_int_equal(it_client_count_prefix(dev, "$iothub/methods/"), 0);
    it_client_close(dev);
    it_client_close(svc);
}

static void test_method_no_answer_times_out_fails(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    struct it_client *dev = method_client(IT_DEV3, NULL, IT_DEV3_KEY);
    char corr[32];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    it_control_send(svc, corr,
                    "{\"command\":\"invokeMethod\",\"deviceId\":\"" IT_DEV3 "\","
                    "\"methodName\":\"slow\",\"responseTimeoutInSeconds\":5}");
    struct it_msg *req = it_client_wait_prefix(dev, "$iothub/methods/POST/slow/", IT_WAIT_MS);
    assert_non_null(req); /* delivered, and deliberately never answered */
    it_msg_free(req);
    /* 5 s timeout plus the hub's timer resolution: give it 10 s */
    cJSON *r = it_control_wait(svc, corr, 10000);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_error(r, 504, 504101);
    cJSON_Delete(r);
    double elapsed = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    /* not answered early: the hub waited for the timeout the caller gave */
    assert_true(elapsed >= 4.9);
    it_client_close(dev);
    it_client_close(svc);
}

static void test_method_device_disconnects_before_answer_fails(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    struct it_client *dev = method_client(IT_DEV4, NULL, IT_DEV4_KEY);
    char corr[32];
    it_control_send(svc, corr,
                    "{\"command\":\"invokeMethod\",\"deviceId\":\"" IT_DEV4 "\","
                    "\"methodName\":\"bye\",\"responseTimeoutInSeconds\":60}");
    struct it_msg *req = it_client_wait_prefix(dev, "$iothub/methods/POST/bye/", IT_WAIT_MS);
    assert_non_null(req);
    it_msg_free(req);
    it_client_close(dev);
    /* answered when the device goes, long before the 60 s response timeout */
    cJSON *r = it_control_wait(svc, corr, IT_WAIT_MS);
    assert_error(r, 404, 404103);
    cJSON_Delete(r);
    it_client_close(svc);
}

static void test_method_timeout_below_minimum_fails(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    struct it_client *dev = method_client(IT_DEV1, NULL, IT_DEV1_KEY);
    cJSON *r = it_control(svc, IT_WAIT_MS,
                          "{\"command\":\"invokeMethod\",\"deviceId\":\"" IT_DEV1 "\","
                          "\"methodName\":\"reboot\",\"responseTimeoutInSeconds\":4}");
    assert_error(r, 400, 400004);
    cJSON_Delete(r);
    it_client_close(dev);
    it_client_close(svc);
}

static void test_method_unknown_device_fails(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    cJSON *r = it_control(svc, IT_WAIT_MS,
                          "{\"command\":\"invokeMethod\",\"deviceId\":\"it-nobody\","
                          "\"methodName\":\"reboot\"}");
    assert_error(r, 404, 404001);
    cJSON_Delete(r);
    it_client_close(svc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_method_device_answers_succeeds),
        cmocka_unit_test(test_method_module_answers_succeeds),
        cmocka_unit_test(test_method_status_int32_range_succeeds),
        cmocka_unit_test(test_method_status_not_int32_fails),
        cmocka_unit_test(test_method_answer_not_json_is_passed_on_succeeds),
        cmocka_unit_test(test_method_device_offline_fails),
        cmocka_unit_test(test_method_device_not_subscribed_fails),
        cmocka_unit_test(test_method_no_answer_times_out_fails),
        cmocka_unit_test(test_method_device_disconnects_before_answer_fails),
        cmocka_unit_test(test_method_timeout_below_minimum_fails),
        cmocka_unit_test(test_method_unknown_device_fails),
    };
    return cmocka_run_group_tests_name("it_methods", tests, group_setup, group_teardown);
}
