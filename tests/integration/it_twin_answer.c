/*
 * it_twin_answer.c - the control API's updateTwin / replaceTwin "answer"
 * member (docs/control-api.md): the whole twin by default and with "twin",
 * the short answer {"status":200,"etag","$version"} with "short", a 400004
 * for anything else with nothing written; the device's notification is the
 * same whichever answer the caller asked for.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define DESIRED_TOPIC "$iothub/twin/PATCH/properties/desired/"

static struct it_hub hub;

static int teardown(void **state)
{
    (void)state;
    return hub.pid > 0 ? it_hub_stop(&hub) : 0;
}

static struct it_client *desired_listener(void)
{
    struct it_client *d = it_device_open(&hub, IT_DEV1, NULL, IT_DEV1_KEY);
    assert_int_equal(it_client_subscribe(d, DESIRED_TOPIC "#", 1, IT_WAIT_MS), 1);
    return d;
}

/* The device's next desired notification: its payload text (caller frees). */
static char *next_notification(struct it_client *d)
{
    struct it_msg *m = it_client_wait_prefix(d, DESIRED_TOPIC, IT_WAIT_MS);
    assert_non_null(m);
    char *text = strdup(m->payload);
    it_msg_free(m);
    return text;
}

static cJSON *get_twin(struct it_client *svc)
{
    return it_control_ok(svc, "{\"command\":\"getTwin\",\"deviceId\":\"" IT_DEV1 "\"}");
}

/* "short": status, etag and desired $version, the same as the twin read after it. */
static void test_update_twin_short_answer_succeeds(void **state)
{
    (void)state;
    assert_int_equal(it_hub_start(&hub), 0);
    struct it_client *svc = it_service_open(&hub, false);
    struct it_client *d = desired_listener();
    cJSON *data = it_control_ok(svc, "{\"command\":\"updateTwin\",\"deviceId\":\"" IT_DEV1
                                     "\",\"answer\":\"short\",\"patch\":{\"properties\":"
                                     "{\"desired\":{\"mode\":\"eco\",\"t\":22.5}}}}");
    cJSON *twin = get_twin(svc);
    assert_int_equal(cJSON_GetArraySize(data), 3);
    assert_int_equal((int)it_json_num(data, "status", 0), 200);
    assert_string_equal(it_json_str(data, "etag"), it_json_str(twin, "etag"));
    double version = it_json_num(twin, "properties.desired.$version", -1);
    assert_true(version >= 2);
    assert_true(it_json_num(data, "$version", -1) == version);
    char *note = next_notification(d);
    char expected[128];
    snprintf(expected, sizeof expected, "{\"mode\":\"eco\",\"t\":22.5,\"$version\":%.0f}", version);
    assert_string_equal(note, expected);
    free(note);

    /* replaceTwin takes it too */
    cJSON_Delete(data);
    data = it_control_ok(svc, "{\"command\":\"replaceTwin\",\"deviceId\":\"" IT_DEV1
                              "\",\"answer\":\"short\",\"patch\":{\"properties\":"
                              "{\"desired\":{\"mode\":\"off\"}}}}");
    assert_true(it_json_num(data, "$version", -1) == version + 1);
    assert_null(it_json_get(data, "properties"));
    note = next_notification(d);
    snprintf(expected, sizeof expected, "{\"mode\":\"off\",\"$version\":%.0f}", version + 1);
    assert_string_equal(note, expected);
    free(note);
    cJSON_Delete(data);
    cJSON_Delete(twin);
    it_client_close(d);
    it_client_close(svc);
    assert_int_equal(it_hub_stop(&hub), 0);
}

/* No "answer", or "twin": the whole twin, as getTwin reads it right after. */
static void test_update_twin_whole_twin_answer_succeeds(void **state)
{
    (void)state;
    assert_int_equal(it_hub_start(&hub), 0);
    struct it_client *svc = it_service_open(&hub, false);
    static const char *const answers[] = {"", ",\"answer\":\"twin\"", ",\"answer\":null"};
    for (size_t i = 0; i < sizeof answers / sizeof answers[0]; i++) {
        cJSON *data = it_control_ok(svc,
                                    "{\"command\":\"updateTwin\",\"deviceId\":\"" IT_DEV1
                                    "\"%s,\"patch\":{\"tags\":{\"i\":%zu},\"properties\":"
                                    "{\"desired\":{\"i\":%zu}}}}",
                                    answers[i], i, i);
        cJSON *twin = get_twin(svc);
        char *a = cJSON_PrintUnformatted(data), *b = cJSON_PrintUnformatted(twin);
        assert_string_equal(a, b);
        assert_true(it_json_num(data, "properties.desired.i", -1) == (double)i);
        assert_non_null(it_json_get(data, "properties.desired.$metadata.i.$lastUpdated"));
        free(a);
        free(b);
        cJSON_Delete(data);
        cJSON_Delete(twin);
    }
    it_client_close(svc);
    assert_int_equal(it_hub_stop(&hub), 0);
}

/* Any other "answer" is refused before the write: nothing changes, no notification. */
static void test_update_twin_bad_answer_fails(void **state)
{
    (void)state;
    assert_int_equal(it_hub_start(&hub), 0);
    struct it_client *svc = it_service_open(&hub, false);
    struct it_client *d = desired_listener();
    cJSON *before = get_twin(svc);
    static const char *const bad[] = {"\"full\"", "\"SHORT\"", "1", "true", "{}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cJSON *e = it_control_err(svc, 400, 400004,
                                  "{\"command\":\"updateTwin\",\"deviceId\":\"" IT_DEV1
                                  "\",\"answer\":%s,\"patch\":{\"properties\":{\"desired\":"
                                  "{\"x\":%zu}}}}",
                                  bad[i], i);
        cJSON_Delete(e);
    }
    cJSON *after = get_twin(svc);
    assert_string_equal(it_json_str(after, "etag"), it_json_str(before, "etag"));
    /* A good write afterwards is the first notification the device gets. */
    cJSON_Delete(it_control_ok(svc, "{\"command\":\"updateTwin\",\"deviceId\":\"" IT_DEV1
                                    "\",\"answer\":\"short\",\"patch\":{\"properties\":"
                                    "{\"desired\":{\"ok\":1}}}}"));
    char *note = next_notification(d);
    assert_non_null(strstr(note, "\"ok\":1"));
    assert_null(strstr(note, "\"x\""));
    free(note);
    cJSON_Delete(before);
    cJSON_Delete(after);
    it_client_close(d);
    it_client_close(svc);
    assert_int_equal(it_hub_stop(&hub), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_update_twin_short_answer_succeeds, teardown),
        cmocka_unit_test_teardown(test_update_twin_whole_twin_answer_succeeds, teardown),
        cmocka_unit_test_teardown(test_update_twin_bad_answer_fails, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
