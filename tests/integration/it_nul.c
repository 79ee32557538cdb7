/*
 * it_nul.c - "\u0000" in JSON strings on every path into the hub (docs/protocol.md,
 * "U+0000 in strings"): cJSON keeps strings NUL-terminated, so such a string would be
 * stored cut at that character. Every path that stores or forwards the value as JSON
 * refuses it with 400 / 400004 and changes nothing (control API commands, MQTT reported
 * properties, the registry document, a state file at startup); paths that carry the bytes
 * as they are keep it whole (a device's method answer, telemetry bodies, and so the
 * recording and the event stream). The REST API's refusal is in conformance/fleet.test.mjs.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <mosquitto.h>

#include "harness.h"

static struct it_hub hub;
static char record_path[IT_PATH_MAX];
static char state_dir[IT_PATH_MAX];
static char scratch[IT_PATH_MAX];

static int group_setup(void **state)
{
    (void)state;
    snprintf(scratch, sizeof scratch, "/tmp/it_nul.XXXXXX");
    if (!mkdtemp(scratch))
        return -1;
    snprintf(record_path, sizeof record_path, "%.4000s/record.jsonl", scratch);
    snprintf(state_dir, sizeof state_dir, "%.4000s/state", scratch);
    const char *extra[] = {"--record", record_path, "--state-dir", state_dir, NULL};
    return it_hub_start_with(&hub, NULL, extra);
}

static int group_teardown(void **state)
{
    (void)state;
    int rc = it_hub_stop(&hub);
    it_rmtree(scratch);
    return rc;
}

/*
 * Sends one command as raw text (the harness's it_control re-prints commands through cJSON,
 * which would cut the string itself) and checks it is refused with 400 / 400004 naming the
 * NUL. `command_json` is the command's members after "correlationData".
 */
static void refused(struct it_client *svc, const char *command_json)
{
    static int seq;
    char corr[32];
    snprintf(corr, sizeof corr, "nul-%d", ++seq);
    char *text =
        it_strdupf("{\"commands\":[{\"correlationData\":\"%s\",%s]}", corr, command_json + 1);
    assert_int_equal(it_client_publish_str(svc, TH_CONTROL_TOPIC, text, 1), MOSQ_ERR_SUCCESS);
    free(text);
    cJSON *r = it_control_wait(svc, corr, IT_WAIT_MS);
    assert_non_null(r);
    if (it_json_str(r, "error") == NULL) {
        char *got = cJSON_PrintUnformatted(r);
        fail_msg("accepted: %s", got);
    }
    assert_int_equal((int)it_json_num(r, "status", 0), 400);
    assert_int_equal((int)it_json_num(r, "errorCode", 0), 400004);
    assert_non_null(strstr(it_json_str(r, "error"), "\\u0000"));
    cJSON_Delete(r);
}

static void test_nul_control_commands_refused_fails(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    refused(svc, "{\"command\":\"createDevice\",\"deviceId\":\"nul-dev\","
                 "\"statusReason\":\"a\\u0000b\"}");
    cJSON *e =
        it_control_err(svc, 404, 404001, "{\"command\":\"getDevice\",\"deviceId\":\"nul-dev\"}");
    cJSON_Delete(e);
    refused(svc, "{\"command\":\"updateTwin\",\"deviceId\":\"" IT_DEV2 "\","
                 "\"patch\":{\"tags\":{\"t\":\"x\\u0000y\"}}}");
    refused(svc, "{\"command\":\"updateTwin\",\"deviceId\":\"" IT_DEV2 "\","
                 "\"patch\":{\"properties\":{\"desired\":{\"a\\u0000\":1}}}}");
    refused(svc, "{\"command\":\"invokeMethod\",\"deviceId\":\"" IT_DEV2 "\","
                 "\"methodName\":\"m\",\"payload\":{\"p\":[\"\\u0000\"]}}");
    refused(svc, "{\"command\":\"importRegistry\",\"registry\":{\"devices\":[{\"deviceId\":"
                 "\"nul-imp\",\"statusReason\":\"\\u0000\"}]}}");
    e = it_control_err(svc, 404, 404001, "{\"command\":\"getDevice\",\"deviceId\":\"nul-imp\"}");
    cJSON_Delete(e);
    cJSON *twin = it_control_ok(svc, "{\"command\":\"getTwin\",\"deviceId\":\"" IT_DEV2 "\"}");
    assert_null(it_json_get(twin, "tags.t"));
    assert_null(it_json_get(twin, "properties.desired.a"));
    cJSON_Delete(twin);
    it_client_close(svc);
}

static void test_nul_reported_patch_refused_fails(void **state)
{
    (void)state;
    struct it_client *dev = it_device_open(&hub, IT_DEV3, NULL, IT_DEV3_KEY);
    assert_int_equal(it_client_subscribe(dev, "$iothub/twin/res/#", 0, IT_WAIT_MS), 0);
    int status = 0;
    struct it_msg *m = it_twin_request(dev, "nul-1", "{\"s\":\"a\\u0000b\"}", &status);
    assert_non_null(m);
    assert_int_equal(status, 400);
    it_msg_free(m);
    it_client_close(dev);
}

/* A device's answer holding \u0000 reaches the caller byte for byte (the verbatim copy). */
static void test_nul_method_answer_kept_whole_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    struct it_client *dev = it_device_open(&hub, IT_DEV1, NULL, IT_DEV1_KEY);
    assert_int_equal(it_client_subscribe(dev, "$iothub/methods/POST/#", 0, IT_WAIT_MS), 0);
    char corr[32];
    it_control_send(svc, corr,
                    "{\"command\":\"invokeMethod\",\"deviceId\":\"" IT_DEV1 "\","
                    "\"methodName\":\"nul\",\"responseTimeoutInSeconds\":10}");
    struct it_msg *req = it_client_wait_prefix(dev, "$iothub/methods/POST/nul/", IT_WAIT_MS);
    assert_non_null(req);
    char *rid = it_topic_param(req->topic, "$rid");
    it_msg_free(req);
    char topic[128];
    snprintf(topic, sizeof topic, "$iothub/methods/res/200/?$rid=%s", rid);
    free(rid);
    static const char body[] = "{\"s\":\"a\\u0000b\"}";
    assert_int_equal(it_client_publish_str(dev, topic, body, 1), MOSQ_ERR_SUCCESS);
    cJSON *r = it_control_wait(svc, corr, IT_WAIT_MS);
    assert_non_null(r);
    assert_null(it_json_get(r, "error"));
    assert_string_equal(it_json_str(r, "data.rawPayload"), body);
    cJSON_Delete(r);
    it_client_close(dev);
    it_client_close(svc);
}

/* Telemetry is bytes: the escape stays in the event's body text and in the recording. */
static void test_nul_telemetry_recorded_whole_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, true);
    struct it_client *dev = it_device_open(&hub, IT_DEV4, NULL, IT_DEV4_KEY);
    static const char body[] = "{\"nul-telemetry\":\"a\\u0000b\"}";
    assert_int_equal(it_client_publish_str(dev, "devices/" IT_DEV4 "/messages/events/", body, 1),
                     MOSQ_ERR_SUCCESS);
    cJSON *ev = it_event_wait(svc, "telemetry", IT_DEV4, NULL, NULL, NULL, IT_WAIT_MS);
    assert_non_null(ev);
    assert_string_equal(it_json_str(ev, "data.body"), body);
    cJSON_Delete(ev);
    /* The recording is written before the event is published. */
    char *text = it_read_file(record_path);
    assert_non_null(text);
    assert_non_null(strstr(text, "{\\\"nul-telemetry\\\":\\\"a\\\\u0000b\\\"}"));
    assert_null(strstr(text, "nul-dev"));
    assert_null(strstr(text, "nul-imp"));
    free(text);
    it_client_close(dev);
    it_client_close(svc);
}

/* A state file holding \u0000 (written from outside) is set aside, not loaded cut. */
static void test_nul_state_file_set_aside_fails(void **state)
{
    (void)state;
    assert_int_equal(it_hub_stop(&hub), 0);
    char *file = it_strdupf("%s/devices/%s.json", state_dir, IT_DEV2);
    cJSON *doc = it_read_json(file);
    assert_non_null(doc);
    assert_true(cJSON_IsObject(doc));
    char *text = cJSON_PrintUnformatted(doc);
    cJSON_Delete(doc);
    /* put "statusReason":"a\u0000b" right after the opening brace */
    char *bad = it_strdupf("{\"statusReason\":\"a\\u0000b\",%s", text + 1);
    free(text);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    assert_int_equal(fputs(bad, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
    free(bad);
    const char *extra[] = {"--record", record_path, "--state-dir", state_dir, NULL};
    assert_int_equal(it_hub_start_with(&hub, NULL, extra), 0);
    char *err_path = it_strdupf("%s", hub.stderr_path);
    char *log = it_read_file(err_path);
    assert_non_null(log);
    assert_non_null(strstr(log, "device 'it-dev2' not loaded"));
    assert_non_null(strstr(log, "\\u0000"));
    free(log);
    free(err_path);
    assert_int_equal(access(file, F_OK), -1);
    free(file);
    struct it_client *svc = it_service_open(&hub, false);
    cJSON *e = it_control_err(svc, 404, 404001,
                              "{\"command\":\"getDevice\",\"deviceId\":\"" IT_DEV2 "\"}");
    cJSON_Delete(e);
    it_client_close(svc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nul_control_commands_refused_fails),
        cmocka_unit_test(test_nul_reported_patch_refused_fails),
        cmocka_unit_test(test_nul_method_answer_kept_whole_succeeds),
        cmocka_unit_test(test_nul_telemetry_recorded_whole_succeeds),
        cmocka_unit_test(test_nul_state_file_set_aside_fails),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
