/*
 * it_config.c - automatic configurations against the real broker (docs/rest-api.md,
 * "Configurations"; control API createConfiguration ...): a device subscribed to desired
 * properties gets the content at once, a target on reported properties follows the
 * device's own reports (re-evaluated on the broker's tick), and configurations with the
 * twins' statuses survive a restart with --state-dir without being written again.
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
static char scratch[IT_PATH_MAX];
static char state_dir[IT_PATH_MAX];

static int start(void)
{
    const char *extra[] = {"--state-dir", state_dir, NULL};
    return it_hub_start_with(&hub, NULL, extra);
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(scratch, sizeof scratch, "/tmp/it_config.XXXXXX");
    if (!mkdtemp(scratch))
        return -1;
    snprintf(state_dir, sizeof state_dir, "%.4000s/state", scratch);
    return start();
}

static int group_teardown(void **state)
{
    (void)state;
    int rc = it_hub_stop(&hub);
    it_rmtree(scratch);
    return rc;
}

/* A device subscribed to its desired-property notifications and twin answers. */
static struct it_client *desired_client(const char *d, const char *key)
{
    struct it_client *c = it_device_open(&hub, d, NULL, key);
    assert_int_equal(
        it_client_subscribe(c, "$iothub/twin/PATCH/properties/desired/#", 1, IT_WAIT_MS), 1);
    assert_int_equal(it_client_subscribe(c, "$iothub/twin/res/#", 1, IT_WAIT_MS), 1);
    return c;
}

static cJSON *twin_of(struct it_client *svc, const char *d)
{
    return it_control_ok(svc, "{\"command\":\"getTwin\",\"deviceId\":\"%s\"}", d);
}

static void test_config_content_reaches_device_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    struct it_client *dev = desired_client(IT_DEV1, IT_DEV1_KEY);
    cJSON *r = it_control_ok(svc, "{\"command\":\"updateTwin\",\"deviceId\":\"" IT_DEV1 "\","
                                  "\"patch\":{\"tags\":{\"ring\":\"canary\"}}}");
    cJSON_Delete(r);
    r = it_control_ok(svc, "{\"command\":\"createConfiguration\",\"id\":\"canary\","
                           "\"configuration\":{\"content\":{\"deviceContent\":{"
                           "\"properties.desired.fw\":{\"version\":\"2.0\"}}},"
                           "\"targetCondition\":\"tags.ring = 'canary'\",\"priority\":2}}");
    assert_int_equal((int)it_json_num(r, "systemMetrics.results.appliedCount", -1), 1);
    cJSON_Delete(r);
    struct it_msg *m =
        it_client_wait_prefix(dev, "$iothub/twin/PATCH/properties/desired/", IT_WAIT_MS);
    assert_non_null(m);
    cJSON *note = it_msg_json(m);
    assert_string_equal(it_json_str(note, "fw.version"), "2.0");
    cJSON_Delete(note);
    it_msg_free(m);
    cJSON *twin = twin_of(svc, IT_DEV1);
    assert_string_equal(it_json_str(twin, "configurations.canary.status"), "Applied");
    cJSON_Delete(twin);
    it_client_close(dev);
    it_client_close(svc);
}

/* A target on reported properties: the device's own report brings it into scope. */
static void test_config_reported_target_follows_device_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    struct it_client *dev = desired_client(IT_DEV2, IT_DEV2_KEY);
    cJSON *r = it_control_ok(svc, "{\"command\":\"createConfiguration\",\"id\":\"by-model\","
                                  "\"configuration\":{\"content\":{\"deviceContent\":{"
                                  "\"properties.desired.sampling\":10}},"
                                  "\"targetCondition\":\"properties.reported.model = 'x1'\"}}");
    assert_int_equal((int)it_json_num(r, "systemMetrics.results.targetedCount", -1), 0);
    cJSON_Delete(r);
    int status = 0;
    struct it_msg *m = it_twin_request(dev, "rep-1", "{\"model\":\"x1\"}", &status);
    assert_int_equal(status, 204);
    it_msg_free(m);
    m = it_client_wait_prefix(dev, "$iothub/twin/PATCH/properties/desired/", IT_WAIT_MS);
    assert_non_null(m);
    cJSON *note = it_msg_json(m);
    assert_int_equal((int)it_json_num(note, "sampling", 0), 10);
    cJSON_Delete(note);
    it_msg_free(m);
    it_client_close(dev);
    it_client_close(svc);
}

/* Restarted on the same state dir: the configurations and statuses are back, nothing rewritten. */
static void test_config_restart_keeps_configurations_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    cJSON *before = twin_of(svc, IT_DEV1);
    int version = (int)it_json_num(before, "properties.desired.$version", -1);
    cJSON_Delete(before);
    it_client_close(svc);
    assert_int_equal(it_hub_stop(&hub), 0);
    assert_int_equal(start(), 0);
    svc = it_service_open(&hub, false);
    cJSON *r = it_control_ok(svc, "{\"command\":\"getConfiguration\",\"id\":\"canary\"}");
    assert_string_equal(it_json_str(r, "targetCondition"), "tags.ring = 'canary'");
    assert_int_equal((int)it_json_num(r, "systemMetrics.results.appliedCount", -1), 1);
    cJSON_Delete(r);
    cJSON *after = twin_of(svc, IT_DEV1);
    assert_int_equal((int)it_json_num(after, "properties.desired.$version", -1), version);
    assert_string_equal(it_json_str(after, "configurations.canary.status"), "Applied");
    cJSON_Delete(after);
    r = it_control_ok(svc, "{\"command\":\"listConfigurations\"}");
    assert_int_equal(cJSON_GetArraySize(r), 2);
    cJSON_Delete(r);
    r = it_control_ok(svc, "{\"command\":\"deleteConfiguration\",\"id\":\"canary\"}");
    cJSON_Delete(r);
    cJSON *e =
        it_control_err(svc, 404, 404000, "{\"command\":\"getConfiguration\",\"id\":\"canary\"}");
    cJSON_Delete(e);
    after = twin_of(svc, IT_DEV1);
    assert_null(it_json_get(after, "properties.desired.fw"));
    assert_null(it_json_get(after, "configurations"));
    cJSON_Delete(after);
    it_client_close(svc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_content_reaches_device_succeeds),
        cmocka_unit_test(test_config_reported_target_follows_device_succeeds),
        cmocka_unit_test(test_config_restart_keeps_configurations_succeeds),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
