/*
 * it_jobs.c - jobs through the control API on the real broker (docs/jobs.md,
 * broker/control_jobs.c): a twin-update job over many devices is one command,
 * run from TICK; the selected twins are written (and only those), a connected
 * device gets its desired notification; the job's statistics; a method job on
 * an offline device; cancel; FROM devices.jobs; and jobs kept across a
 * restart with --state-dir (a running job is not resumed: it is failed).
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <mosquitto.h>

#include "harness.h"

#define FLEET 200 /* devices in the twin job: several slices' worth would need far more */

static struct it_hub hub;
static char *scratch;

static int jobs_teardown(void **state)
{
    (void)state;
    int rc = 0;
    if (hub.pid > 0 && it_hub_stop(&hub) != 0)
        rc = -1;
    if (scratch && !getenv("IT_KEEP"))
        it_rmtree(scratch);
    free(scratch);
    scratch = NULL;
    return rc;
}

/* getJob until its status is `status` (bounded: IT_WAIT_MS x 3); returns the job. */
static cJSON *job_until(struct it_client *svc, const char *id, const char *status)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        cJSON *job = it_control_ok(svc, "{\"command\":\"getJob\",\"jobId\":\"%s\"}", id);
        const char *s = it_json_str(job, "status");
        if (s && !strcmp(s, status))
            return job;
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((t.tv_sec - t0.tv_sec) * 1000 > 3 * IT_WAIT_MS) {
            char *text = cJSON_PrintUnformatted(job);
            fail_msg("job %s is not %s: %s", id, status, text);
        }
        cJSON_Delete(job);
        /* The control round trip itself paces the polling. */
    }
}

static char *create_device(struct it_client *svc, const char *id, const char *group)
{
    cJSON *d = it_control_ok(svc, "{\"command\":\"createDevice\",\"deviceId\":\"%s\"}", id);
    char *key = strdup(it_json_str(d, "authentication.symmetricKey.primaryKey"));
    cJSON_Delete(d);
    cJSON_Delete(it_control_ok(svc,
                               "{\"command\":\"updateTwin\",\"deviceId\":\"%s\",\"patch\":"
                               "{\"tags\":{\"group\":\"%s\"}}}",
                               id, group));
    return key;
}

static void test_twin_job_over_fleet_succeeds(void **state)
{
    (void)state;
    assert_int_equal(it_hub_start(&hub), 0);
    struct it_client *svc = it_service_open(&hub, false);
    char id[64];
    char *key0 = NULL;
    for (int i = 0; i < FLEET; i++) {
        snprintf(id, sizeof id, "jf-%03d", i);
        char *k = create_device(svc, id, i % 2 ? "odd" : "even");
        if (i == 0)
            key0 = k;
        else
            free(k);
    }
    struct it_client *dev = it_device_open(&hub, "jf-000", NULL, key0);
    free(key0);
    assert_int_equal(
        it_client_subscribe(dev, "$iothub/twin/PATCH/properties/desired/#", 1, IT_WAIT_MS), 1);
    cJSON *job = it_control_ok(
        svc, "{\"command\":\"createJob\",\"jobId\":\"roll-1\",\"job\":{\"type\":"
             "\"scheduleUpdateTwin\",\"queryCondition\":\"tags.group = 'even'\",\"updateTwin\":"
             "{\"tags\":{\"rolled\":1},\"properties\":{\"desired\":{\"fw\":\"9.1\"}}}}}");
    assert_string_equal(it_json_str(job, "type"), "scheduleUpdateTwin");
    cJSON_Delete(job);
    struct it_msg *m =
        it_client_wait_prefix(dev, "$iothub/twin/PATCH/properties/desired/", IT_WAIT_MS);
    assert_non_null(m);
    cJSON *body = it_msg_json(m);
    assert_string_equal(it_json_str(body, "fw"), "9.1");
    cJSON_Delete(body);
    it_msg_free(m);

    job = job_until(svc, "roll-1", "completed");
    assert_int_equal(it_json_num(job, "deviceJobStatistics.deviceCount", -1), FLEET / 2);
    assert_int_equal(it_json_num(job, "deviceJobStatistics.succeededCount", -1), FLEET / 2);
    assert_int_equal(it_json_num(job, "deviceJobStatistics.failedCount", -1), 0);
    assert_non_null(it_json_str(job, "endTime"));
    cJSON_Delete(job);
    /* Selected twins written, the others not. */
    cJSON *t = it_control_ok(svc, "{\"command\":\"getTwin\",\"deviceId\":\"jf-198\"}");
    assert_string_equal(it_json_str(t, "properties.desired.fw"), "9.1");
    assert_int_equal(it_json_num(t, "tags.rolled", -1), 1);
    cJSON_Delete(t);
    t = it_control_ok(svc, "{\"command\":\"getTwin\",\"deviceId\":\"jf-199\"}");
    assert_null(it_json_get(t, "properties.desired.fw"));
    cJSON_Delete(t);
    /* FROM devices.jobs: one row per selected device. */
    cJSON *q = it_control_ok(svc, "{\"command\":\"query\",\"pageSize\":1000,\"query\":"
                                  "\"SELECT * FROM devices.jobs WHERE jobId = 'roll-1'\"}");
    assert_int_equal(cJSON_GetArraySize(it_json_get(q, "items")), FLEET / 2);
    assert_string_equal(it_json_str(q, "itemType"), "deviceJob");
    cJSON_Delete(q);
    /* A condition on "$version" is decided on the whole twin (a query document has no "$"
     * members): the odd twins' desired properties were never written, the even ones' once. */
    cJSON_Delete(it_control_ok(
        svc, "{\"command\":\"createJob\",\"jobId\":\"roll-2\",\"job\":{\"type\":"
             "\"scheduleUpdateTwin\",\"queryCondition\":\"properties.desired.$version = 1 AND "
             "STARTSWITH(deviceId, 'jf-')\","
             "\"updateTwin\":{\"tags\":{\"rolled\":2}}}}"));
    job = job_until(svc, "roll-2", "completed");
    assert_int_equal(it_json_num(job, "deviceJobStatistics.deviceCount", -1), FLEET / 2);
    cJSON_Delete(job);
    t = it_control_ok(svc, "{\"command\":\"getTwin\",\"deviceId\":\"jf-199\"}");
    assert_int_equal(it_json_num(t, "tags.rolled", -1), 2);
    cJSON_Delete(t);
    it_client_close(dev);
    it_client_close(svc);
    assert_int_equal(it_hub_stop(&hub), 0);
}

static void test_method_job_offline_and_cancel_succeeds(void **state)
{
    (void)state;
    assert_int_equal(it_hub_start(&hub), 0);
    struct it_client *svc = it_service_open(&hub, false);
    free(create_device(svc, "jm-1", "m"));
    cJSON_Delete(it_control_ok(svc,
                               "{\"command\":\"createJob\",\"jobId\":\"m-1\",\"job\":{\"type\":"
                               "\"scheduleDeviceMethod\",\"queryCondition\":\"deviceId = 'jm-1'\","
                               "\"cloudToDeviceMethod\":{\"methodName\":\"reboot\"}}}"));
    cJSON *job = job_until(svc, "m-1", "completed");
    assert_int_equal(it_json_num(job, "deviceJobStatistics.failedCount", -1), 1);
    cJSON_Delete(job);
    /* Scheduled for later: cancel, and it never runs. */
    cJSON_Delete(it_control_ok(
        svc, "{\"command\":\"createJob\",\"jobId\":\"later\",\"job\":{\"type\":"
             "\"scheduleUpdateTwin\",\"queryCondition\":\"deviceId = 'jm-1'\",\"startTime\":"
             "\"2999-01-01T00:00:00Z\",\"updateTwin\":{\"tags\":{\"x\":1}}}}"));
    job = it_control_ok(svc, "{\"command\":\"cancelJob\",\"jobId\":\"later\"}");
    assert_string_equal(it_json_str(job, "status"), "cancelled");
    cJSON_Delete(job);
    cJSON_Delete(it_control_err(svc, 404, 404000, "{\"command\":\"getJob\",\"jobId\":\"nope\"}"));
    cJSON_Delete(it_control_err(svc, 400, 400004,
                                "{\"command\":\"createJob\",\"jobId\":\"m-1\",\"job\":{}}"));
    cJSON *list = it_control_ok(svc, "{\"command\":\"listJobs\",\"jobStatus\":\"cancelled\"}");
    assert_int_equal(cJSON_GetArraySize(it_json_get(list, "items")), 1);
    cJSON_Delete(list);
    it_client_close(svc);
    assert_int_equal(it_hub_stop(&hub), 0);
}

static void test_jobs_survive_restart_with_state_dir_succeeds(void **state)
{
    (void)state;
    const char *tmp = getenv("TMPDIR");
    scratch = it_strdupf("%s/twinhub-jobs-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    assert_non_null(mkdtemp(scratch));
    const char *extra[] = {"--state-dir", scratch, NULL};
    assert_int_equal(it_hub_start_with(&hub, NULL, extra), 0);
    struct it_client *svc = it_service_open(&hub, false);
    free(create_device(svc, "js-1", "s"));
    cJSON_Delete(it_control_ok(svc,
                               "{\"command\":\"createJob\",\"jobId\":\"done\",\"job\":{\"type\":"
                               "\"scheduleUpdateTwin\",\"queryCondition\":\"deviceId = 'js-1'\","
                               "\"updateTwin\":{\"tags\":{\"x\":1}}}}"));
    cJSON_Delete(job_until(svc, "done", "completed"));
    cJSON_Delete(it_control_ok(
        svc, "{\"command\":\"createJob\",\"jobId\":\"future\",\"job\":{\"type\":"
             "\"scheduleUpdateTwin\",\"queryCondition\":\"deviceId = 'js-1'\",\"startTime\":"
             "\"2999-01-01T00:00:00Z\",\"updateTwin\":{\"tags\":{\"y\":1}}}}"));
    it_client_close(svc);
    int st;
    assert_int_equal(it_hub_kill_broker(&hub, &st), 0);

    assert_int_equal(it_hub_start_with(&hub, NULL, extra), 0);
    svc = it_service_open(&hub, false);
    cJSON *job = it_control_ok(svc, "{\"command\":\"getJob\",\"jobId\":\"done\"}");
    assert_string_equal(it_json_str(job, "status"), "completed");
    assert_int_equal(it_json_num(job, "deviceJobStatistics.succeededCount", -1), 1);
    cJSON_Delete(job);
    job = it_control_ok(svc, "{\"command\":\"getJob\",\"jobId\":\"future\"}");
    assert_string_equal(it_json_str(job, "status"), "scheduled");
    cJSON_Delete(job);
    cJSON *q = it_control_ok(svc, "{\"command\":\"query\",\"query\":"
                                  "\"SELECT * FROM devices.jobs WHERE deviceId = 'js-1'\"}");
    assert_int_equal(cJSON_GetArraySize(it_json_get(q, "items")), 1);
    cJSON_Delete(q);
    it_client_close(svc);
    assert_int_equal(it_hub_stop(&hub), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_twin_job_over_fleet_succeeds, jobs_teardown),
        cmocka_unit_test_teardown(test_method_job_offline_and_cancel_succeeds, jobs_teardown),
        cmocka_unit_test_teardown(test_jobs_survive_restart_with_state_dir_succeeds, jobs_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
