/*
 * test_job.c - unit tests for emulator/core/job.c: job requests as azure-iothub's
 * JobClient sends them (accepted and refused), the status and counts as devices
 * report back, cancel, the maxExecutionTimeInSeconds rule, the documents
 * (JobResponse, DeviceJob) and the state round trip.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "job.h"
#include "json.h"
#include "query.h"

#define NOW 1800000000000000LL /* 2027-01-15T08:00:00Z */

static cJSON *parse(const char *text)
{
    cJSON *j = cJSON_Parse(text);
    assert_non_null(j);
    return j;
}

static struct th_job *create(const char *body, const char *id, int64_t now)
{
    cJSON *b = parse(body);
    struct th_job *job = NULL;
    struct th_error err = {0};
    th_result r = th_job_create(b, id, now, &job, &err);
    cJSON_Delete(b);
    if (r != TH_OK)
        fail_msg("th_job_create: %s", err.message);
    return job;
}

static th_result create_fails(const char *body, const char *id, const char *needle)
{
    cJSON *b = parse(body);
    struct th_job *job = NULL;
    struct th_error err = {0};
    th_result r = th_job_create(b, id, NOW, &job, &err);
    cJSON_Delete(b);
    assert_null(job);
    assert_int_not_equal(r, TH_OK);
    if (!strstr(err.message, needle))
        fail_msg("message '%s' does not name '%s'", err.message, needle);
    return r;
}

/* The body of azure-iothub's JobClient.scheduleTwinUpdate (dist/job_client.js). */
static const char *twin_body =
    "{\"jobId\":\"j1\",\"type\":\"scheduleUpdateTwin\",\"updateTwin\":{\"etag\":\"*\","
    "\"tags\":{\"a\":1},\"properties\":{\"desired\":{\"fw\":\"2.0\"}}},"
    "\"startTime\":\"2027-01-15T08:00:00.000Z\",\"maxExecutionTimeInSeconds\":3600,"
    "\"queryCondition\":\"tags.group = 'x'\"}";

static void test_th_job_create_node_sdk_twin_body_succeeds(void **state)
{
    (void)state;
    struct th_job *job = create(twin_body, "j1", NOW);
    assert_int_equal(job->type, TH_JOB_UPDATE_TWIN);
    assert_int_equal(job->status, TH_JOB_QUEUED);
    assert_int_equal(job->start_us, NOW);
    assert_int_equal(job->max_execution_s, 3600);
    assert_non_null(job->query);
    cJSON *doc = parse("{\"deviceId\":\"d\",\"tags\":{\"group\":\"x\"}}");
    bool m = false;
    assert_int_equal(th_query_matches(job->query, doc, &m), TH_OK);
    assert_true(m);
    cJSON_Delete(doc);
    th_job_free(job);
}

static void test_th_job_create_method_defaults_succeeds(void **state)
{
    (void)state;
    struct th_job *job = create("{\"type\":\"scheduleDeviceMethod\",\"queryCondition\":"
                                "\"deviceId IN ['a','b']\",\"cloudToDeviceMethod\":"
                                "{\"methodName\":\"reboot\"},\"startTime\":null}",
                                "m1", NOW);
    assert_int_equal(job->type, TH_JOB_DEVICE_METHOD);
    assert_string_equal(job->method_name, "reboot");
    assert_int_equal(job->response_timeout_s, 30);
    assert_int_equal(job->connect_timeout_s, 0);
    assert_int_equal(job->max_execution_s, TH_JOB_DEFAULT_MAX_EXECUTION_S);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(job->method, "payload")));
    th_job_free(job);
}

static void test_th_job_create_future_start_is_scheduled_succeeds(void **state)
{
    (void)state;
    struct th_job *job = create(twin_body, "j1", NOW - 1000000);
    assert_int_equal(job->status, TH_JOB_SCHEDULED);
    assert_false(th_job_due(job, NOW - 1));
    assert_true(th_job_due(job, NOW));
    th_job_begin(job, NOW);
    assert_int_equal(job->status, TH_JOB_RUNNING);
    th_job_free(job);
}

static void test_th_job_create_bad_requests_fails(void **state)
{
    (void)state;
    create_fails("{\"type\":\"export\",\"queryCondition\":\"deviceId='a'\"}", "j", "type");
    create_fails("{\"type\":\"scheduleUpdateTwin\",\"updateTwin\":{\"tags\":{}}}", "j",
                 "queryCondition");
    create_fails("{\"type\":\"scheduleUpdateTwin\",\"queryCondition\":\"tags.x = = 1\","
                 "\"updateTwin\":{\"tags\":{\"a\":1}}}",
                 "j", "queryCondition is not a valid condition");
    create_fails("{\"type\":\"scheduleUpdateTwin\",\"queryCondition\":\"deviceId='a'\"}", "j",
                 "updateTwin");
    create_fails("{\"type\":\"scheduleUpdateTwin\",\"queryCondition\":\"deviceId='a'\","
                 "\"updateTwin\":{\"properties\":{\"reported\":{\"x\":1}}}}",
                 "j", "reported");
    create_fails("{\"type\":\"scheduleDeviceMethod\",\"queryCondition\":\"deviceId='a'\","
                 "\"cloudToDeviceMethod\":{\"methodName\":\"a b\"}}",
                 "j", "methodName");
    create_fails("{\"type\":\"scheduleDeviceMethod\",\"queryCondition\":\"deviceId='a'\","
                 "\"cloudToDeviceMethod\":{\"methodName\":\"a\",\"responseTimeoutInSeconds\":1}}",
                 "j", "responseTimeoutInSeconds");
    create_fails(twin_body, "other", "jobId");
    create_fails(twin_body, "a/b", "job id");
    create_fails("{\"type\":\"scheduleUpdateTwin\",\"queryCondition\":\"deviceId='a'\","
                 "\"updateTwin\":{\"tags\":{\"a\":1}},\"startTime\":\"tomorrow\"}",
                 "j", "startTime");
    create_fails("{\"type\":\"scheduleUpdateTwin\",\"queryCondition\":\"deviceId='a'\","
                 "\"updateTwin\":{\"tags\":{\"a\":1}},\"maxExecutionTimeInSeconds\":-1}",
                 "j", "maxExecutionTimeInSeconds");
}

/* Three devices: one succeeds, one fails, one is still running. */
static struct th_job *running_job(void)
{
    struct th_job *job = create("{\"type\":\"scheduleDeviceMethod\",\"queryCondition\":"
                                "\"deviceId IN ['a','b','c']\",\"cloudToDeviceMethod\":"
                                "{\"methodName\":\"m\"},\"maxExecutionTimeInSeconds\":10}",
                                "r1", NOW);
    size_t i;
    th_job_begin(job, NOW);
    for (const char *const *d = (const char *const[]){"a", "b", "c", NULL}; *d; d++)
        assert_int_equal(th_job_add_device(job, *d, NOW, &i), TH_OK);
    th_job_device_running(job, 0, NOW + 1);
    th_job_device_running(job, 2, NOW + 1);
    th_job_device_done(job, 0, parse("{\"status\":200,\"payload\":{\"ok\":true}}"), NULL, NULL,
                       NOW + 2);
    th_job_device_done(job, 1, NULL, "DeviceNotOnline", "offline", NOW + 2);
    return job;
}

static void test_th_job_json_statistics_succeeds(void **state)
{
    (void)state;
    struct th_job *job = running_job();
    assert_false(th_job_try_complete(job, NOW + 3));
    cJSON *j = th_job_json(job);
    char *text = cJSON_PrintUnformatted(cJSON_GetObjectItem(j, "deviceJobStatistics"));
    assert_string_equal(text, "{\"deviceCount\":3,\"failedCount\":1,\"succeededCount\":1,"
                              "\"runningCount\":1,\"pendingCount\":0}");
    free(text);
    assert_string_equal(cJSON_GetObjectItem(j, "status")->valuestring, "running");
    assert_null(cJSON_GetObjectItem(j, "endTime"));
    cJSON_Delete(j);
    th_job_device_done(job, 2, parse("{\"status\":500,\"payload\":null}"), NULL, NULL, NOW + 4);
    assert_true(th_job_try_complete(job, NOW + 5));
    assert_int_equal(job->status, TH_JOB_COMPLETED);
    j = th_job_json(job);
    assert_non_null(cJSON_GetObjectItem(j, "endTime"));
    cJSON_Delete(j);
    th_job_free(job);
}

static void test_th_job_device_json_outcome_and_error_succeeds(void **state)
{
    (void)state;
    struct th_job *job = running_job();
    cJSON *a = th_job_device_json(job, 0);
    cJSON *b = th_job_device_json(job, 1);
    assert_string_equal(cJSON_GetObjectItem(a, "status")->valuestring, "completed");
    assert_string_equal(cJSON_GetObjectItem(a, "jobType")->valuestring, "scheduleDeviceMethod");
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(a, "outcome"),
                                                             "deviceMethodResponse"),
                                         "status")
                         ->valueint,
                     200);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(b, "error"), "code")->valuestring,
                        "DeviceNotOnline");
    assert_null(th_job_device_json(job, 3));
    cJSON_Delete(a);
    cJSON_Delete(b);
    th_job_free(job);
}

static void test_th_job_cancel_ends_pending_and_running_succeeds(void **state)
{
    (void)state;
    struct th_job *job = running_job();
    assert_true(th_job_cancel(job, NOW + 3));
    assert_false(th_job_cancel(job, NOW + 4)); /* once */
    assert_int_equal(job->status, TH_JOB_CANCELLED);
    assert_int_equal(job->devices[2].status, TH_DJ_CANCELLED);
    /* A late answer does not change a cancelled device. */
    th_job_device_done(job, 2, parse("{\"status\":200}"), NULL, NULL, NOW + 5);
    assert_int_equal(job->devices[2].status, TH_DJ_CANCELLED);
    cJSON *j = th_job_json(job);
    assert_int_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(j, "deviceJobStatistics"), "pendingCount")
            ->valueint,
        0);
    cJSON_Delete(j);
    th_job_free(job);
}

static void test_th_job_check_expired_fails_the_rest_succeeds(void **state)
{
    (void)state;
    struct th_job *job = running_job();
    assert_false(th_job_check_expired(job, NOW + 9999999));
    assert_true(th_job_check_expired(job, NOW + 10000000));
    assert_int_equal(job->status, TH_JOB_FAILED);
    assert_int_equal(job->failed, 2);
    assert_string_equal(job->devices[2].error_code, "JobExpired");
    assert_non_null(job->failure_reason);
    th_job_free(job);
}

static void test_th_job_state_round_trip_succeeds(void **state)
{
    (void)state;
    struct th_job *job = running_job();
    cJSON *st = th_job_state_json(job);
    struct th_job *back = NULL;
    struct th_error err = {0};
    assert_int_equal(th_job_from_state(st, &back, &err), TH_OK);
    cJSON *a = th_job_json(job), *b = th_job_json(back);
    assert_true(cJSON_Compare(a, b, true));
    for (size_t i = 0; i < 3; i++) {
        cJSON *da = th_job_device_json(job, i), *db = th_job_device_json(back, i);
        assert_true(cJSON_Compare(da, db, true));
        cJSON_Delete(da);
        cJSON_Delete(db);
    }
    cJSON_Delete(a);
    cJSON_Delete(b);
    cJSON_Delete(st);
    th_job_free(back);
    th_job_free(job);
}

static void test_th_job_from_state_damaged_fails(void **state)
{
    (void)state;
    struct th_job *job = NULL;
    struct th_error err = {0};
    cJSON *st = parse("{\"jobId\":\"x\",\"type\":\"scheduleUpdateTwin\"}");
    assert_int_equal(th_job_from_state(st, &job, &err), TH_ERR_FORMAT);
    assert_null(job);
    cJSON_Delete(st);
}

static void test_th_job_names_round_trip_succeeds(void **state)
{
    (void)state;
    enum th_job_status s;
    enum th_job_type t;
    assert_true(th_job_status_from_name("cancelled", &s));
    assert_int_equal(s, TH_JOB_CANCELLED);
    assert_false(th_job_status_from_name("Cancelled", &s));
    assert_true(th_job_type_from_name("scheduleDeviceMethod", &t));
    assert_string_equal(th_job_type_name(t), "scheduleDeviceMethod");
    assert_false(th_job_id_valid(""));
    assert_true(th_job_id_valid("job-1:abc"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_th_job_create_node_sdk_twin_body_succeeds),
        cmocka_unit_test(test_th_job_create_method_defaults_succeeds),
        cmocka_unit_test(test_th_job_create_future_start_is_scheduled_succeeds),
        cmocka_unit_test(test_th_job_create_bad_requests_fails),
        cmocka_unit_test(test_th_job_json_statistics_succeeds),
        cmocka_unit_test(test_th_job_device_json_outcome_and_error_succeeds),
        cmocka_unit_test(test_th_job_cancel_ends_pending_and_running_succeeds),
        cmocka_unit_test(test_th_job_check_expired_fails_the_rest_succeeds),
        cmocka_unit_test(test_th_job_state_round_trip_succeeds),
        cmocka_unit_test(test_th_job_from_state_damaged_fails),
        cmocka_unit_test(test_th_job_names_round_trip_succeeds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
