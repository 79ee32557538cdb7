/*
 * test_scenario_actions.c - unit tests for emulator/scenario/scn_actions.c:
 * the control commands `twinhub run` sends for each action and fault step,
 * the marks, query pages, the outcome the engine checks, and the run
 * variables of an identity. No hub: the commands are compared as JSON.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "scenario.h"

static const char scenario[] =
    "{\"name\": \"actions\", \"steps\": ["
    "{\"name\": \"p\", \"patchDesired\": {\"deviceId\": \"d1\", \"patch\": {\"a\": 1}}},"
    "{\"name\": \"r\", \"replaceDesired\": {\"deviceId\": \"d1\", \"moduleId\": \"m1\","
    " \"desired\": {\"b\": null}}},"
    "{\"name\": \"t\", \"updateTags\": {\"deviceId\": \"d1\", \"tags\": {\"site\": \"x\"}}},"
    "{\"name\": \"i\", \"invokeMethod\": {\"deviceId\": \"d1\", \"methodName\": \"reboot\","
    " \"responseTimeoutInSeconds\": 7}},"
    "{\"name\": \"c\", \"sendC2D\": {\"deviceId\": \"d1\", \"bodyJson\": {\"k\": [1, 2]},"
    " \"messageId\": \"m-1\", \"properties\": {\"p\": \"v\"}}},"
    "{\"name\": \"q\", \"query\": {\"query\": \"SELECT * FROM devices\"}},"
    "{\"name\": \"cm\", \"createModules\": {\"moduleId\": \"agent\", \"desiredFile\": "
    "\"desired.json\", \"deviceIds\": [\"d1\"]}},"
    "{\"name\": \"x\", \"disconnect\": {\"deviceId\": \"d1\"}},"
    "{\"name\": \"e\", \"expireToken\": {\"deviceId\": \"d1\", \"moduleId\": \"m1\"}},"
    "{\"name\": \"j\", \"injectError\": {\"deviceId\": \"d1\", \"operation\": \"twinGet\","
    " \"status\": 503}},"
    "{\"name\": \"s\", \"sleep\": {\"for\": \"PT0.1S\"}},"
    "{\"name\": \"w\", \"waitConnected\": {\"deviceId\": \"d1\"}},"
    "{\"name\": \"en\", \"createEnrollment\": {\"registrationId\": \"r1\", \"deviceId\": \"d9\","
    " \"primaryKey\": \"k1\", \"initialTwin\": {\"tags\": {\"a\": 1}}}},"
    "{\"name\": \"eg\", \"createEnrollmentGroup\": {\"enrollmentGroupId\": \"g1\","
    " \"provisioningStatus\": \"disabled\"}},"
    "{\"name\": \"cc\", \"createConfiguration\": {\"id\": \"c1\", \"configuration\":"
    " {\"content\": {\"deviceContent\": {\"properties.desired.x\": 1}}, \"priority\": 2}}},"
    "{\"name\": \"uc\", \"updateConfiguration\": {\"id\": \"c1\", \"configuration\":"
    " {\"priority\": 3}, \"expect\": {\"priority\": 3}}},"
    "{\"name\": \"dc\", \"deleteConfiguration\": {\"id\": \"c1\"}}"
    "]}";

/* Serves desired.json from memory, refuses any other file; counts the reads. */
static int reads;
static const char *desired_text = "{\"interval\": 5}";

static char *serve_file(const char *path, size_t max, size_t *len, void *arg)
{
    (void)max;
    (void)arg;
    reads++;
    const char *base = strrchr(path, '/');
    if (!base || strcmp(base, "/desired.json") != 0 || !desired_text) {
        errno = ENOENT;
        return NULL;
    }
    *len = strlen(desired_text);
    return strdup(desired_text);
}

static const struct th_scn_parse_opts opts = {serve_file, NULL};

static struct th_scenario *load(void)
{
    struct th_scn_diag d = {0};
    struct th_scenario *s =
        th_scenario_parse_ex(scenario, strlen(scenario), "/scn/actions.json", &opts, &d);
    if (!s)
        fail_msg("scenario refused: %s", d.text ? d.text : "?");
    th_scn_diag_free(&d);
    return s;
}

/* The command for step i as compact JSON (the caller frees), or NULL with err. */
static char *command_text(const struct th_scenario *s, size_t i, char *err, size_t errsize)
{
    cJSON *cmd = th_scn_action_command(s, &s->steps[i], s->steps[i].body, &opts, err, errsize);
    char *text = cmd ? cJSON_PrintUnformatted(cmd) : NULL;
    cJSON_Delete(cmd);
    return text;
}

static void expect_command(size_t i, const char *json)
{
    struct th_scenario *s = load();
    char err[256] = "";
    char *text = command_text(s, i, err, sizeof err);
    if (!text)
        fail_msg("step %zu: %s", i, err);
    assert_string_equal(text, json);
    assert_string_equal(err, "");
    free(text);
    th_scenario_free(s);
}

/* ---- th_scn_action_command ---- */

static void test_th_scn_action_command_patch_desired_succeeds(void **state)
{
    (void)state;
    expect_command(0, "{\"command\":\"updateTwin\",\"deviceId\":\"d1\",\"answer\":\"short\","
                      "\"patch\":{\"properties\":"
                      "{\"desired\":{\"a\":1}}}}");
}

static void test_th_scn_action_command_replace_desired_succeeds(void **state)
{
    (void)state;
    expect_command(1,
                   "{\"command\":\"replaceTwin\",\"deviceId\":\"d1\",\"moduleId\":\"m1\","
                   "\"answer\":\"short\",\"patch\":{\"properties\":{\"desired\":{\"b\":null}}}}");
}

static void test_th_scn_action_command_update_tags_succeeds(void **state)
{
    (void)state;
    expect_command(2, "{\"command\":\"updateTwin\",\"deviceId\":\"d1\",\"answer\":\"short\","
                      "\"patch\":{\"tags\":"
                      "{\"site\":\"x\"}}}");
}

static void test_th_scn_action_command_invoke_method_succeeds(void **state)
{
    (void)state;
    expect_command(3, "{\"command\":\"invokeMethod\",\"deviceId\":\"d1\",\"methodName\":\"reboot\","
                      "\"payload\":null,\"responseTimeoutInSeconds\":7}");
}

static void test_th_scn_action_command_send_c2d_body_json_succeeds(void **state)
{
    (void)state;
    expect_command(4, "{\"command\":\"sendC2D\",\"deviceId\":\"d1\",\"body\":\"{\\\"k\\\":[1,2]}\","
                      "\"messageId\":\"m-1\",\"properties\":{\"p\":\"v\"}}");
}

static void test_th_scn_action_command_query_succeeds(void **state)
{
    (void)state;
    expect_command(5,
                   "{\"command\":\"query\",\"query\":\"SELECT * FROM devices\",\"pageSize\":1000}");
}

static void test_th_scn_action_command_configurations_succeeds(void **state)
{
    (void)state;
    expect_command(14, "{\"command\":\"createConfiguration\",\"id\":\"c1\",\"configuration\":"
                       "{\"content\":{\"deviceContent\":{\"properties.desired.x\":1}},"
                       "\"priority\":2}}");
    expect_command(15, "{\"command\":\"updateConfiguration\",\"id\":\"c1\",\"configuration\":"
                       "{\"priority\":3}}");
    expect_command(16, "{\"command\":\"deleteConfiguration\",\"id\":\"c1\"}");
}

static void test_th_scn_action_command_create_modules_reads_desired_file_succeeds(void **state)
{
    (void)state;
    reads = 0;
    expect_command(6, "{\"command\":\"ensureModule\",\"moduleId\":\"agent\",\"desired\":"
                      "{\"interval\":5},\"deviceIds\":[\"d1\"]}");
    assert_true(reads >= 1);
}

static void test_th_scn_action_command_faults_succeeds(void **state)
{
    (void)state;
    expect_command(7, "{\"command\":\"disconnect\",\"deviceId\":\"d1\"}");
    expect_command(8, "{\"command\":\"expireToken\",\"deviceId\":\"d1\",\"moduleId\":\"m1\"}");
    expect_command(9, "{\"command\":\"injectError\",\"deviceId\":\"d1\",\"operation\":\"twinGet\","
                      "\"status\":503,\"count\":1}");
}

static void test_th_scn_action_command_create_enrollment_succeeds(void **state)
{
    (void)state;
    expect_command(12, "{\"command\":\"dpsPut\",\"body\":{\"attestation\":{\"symmetricKey\":"
                       "{\"primaryKey\":\"k1\"},\"type\":\"symmetricKey\"},\"deviceId\":\"d9\","
                       "\"initialTwin\":{\"tags\":{\"a\":1}},\"registrationId\":\"r1\"},"
                       "\"collection\":\"enrollments\",\"id\":\"r1\"}");
}

static void test_th_scn_action_command_create_enrollment_group_succeeds(void **state)
{
    (void)state;
    expect_command(13, "{\"command\":\"dpsPut\",\"body\":{\"attestation\":{\"symmetricKey\":"
                       "{},\"type\":\"symmetricKey\"},\"provisioningStatus\":\"disabled\","
                       "\"enrollmentGroupId\":\"g1\"},\"collection\":\"enrollmentGroups\","
                       "\"id\":\"g1\"}");
}

static void test_th_scn_action_command_desired_file_gone_fails(void **state)
{
    (void)state;
    struct th_scenario *s = load();
    desired_text = NULL; /* removed between validation and the run */
    char err[256];
    assert_null(command_text(s, 6, err, sizeof err));
    assert_string_equal(err,
                        "cannot read desiredFile /scn/desired.json: No such file or directory");
    desired_text = "{\"interval\": 5}";
    th_scenario_free(s);
}

static void test_th_scn_action_command_desired_file_not_json_fails(void **state)
{
    (void)state;
    struct th_scenario *s = load();
    desired_text = "{\"interval\": ";
    char err[256];
    assert_null(command_text(s, 6, err, sizeof err));
    assert_non_null(strstr(err, "cannot read desiredFile /scn/desired.json: "));
    desired_text = "{\"interval\": 5}";
    th_scenario_free(s);
}

static void test_th_scn_action_command_sleep_and_expectation_fails(void **state)
{
    (void)state;
    struct th_scenario *s = load();
    char err[256];
    assert_null(command_text(s, 10, err, sizeof err));
    assert_non_null(strstr(err, "sleep"));
    assert_null(command_text(s, 11, err, sizeof err));
    th_scenario_free(s);
}

/* ---- marks, commands and query pages ---- */

static void test_th_scn_step_mark_succeeds(void **state)
{
    (void)state;
    struct th_scenario *s = load();
    cJSON *m = th_scn_step_mark(s, 3);
    char *text = cJSON_PrintUnformatted(m);
    assert_string_equal(text, "{\"command\":\"mark\",\"data\":{\"scenario\":\"actions\",\"step\":"
                              "\"i\",\"index\":4,\"action\":\"invokeMethod\"}}");
    free(text);
    cJSON_Delete(m);
    th_scenario_free(s);
}

static void test_th_scn_scenario_mark_succeeds(void **state)
{
    (void)state;
    struct th_scenario *s = load();
    cJSON *m = th_scn_scenario_mark(s, "scenarioEnd");
    char *text = cJSON_PrintUnformatted(m);
    assert_string_equal(text, "{\"command\":\"mark\",\"data\":{\"scenario\":\"actions\",\"file\":"
                              "\"/scn/actions.json\",\"index\":0,\"action\":\"scenarioEnd\"}}");
    free(text);
    cJSON_Delete(m);
    th_scenario_free(s);
}

static void test_th_scn_query_command_continuation_succeeds(void **state)
{
    (void)state;
    cJSON *c = th_scn_query_command("SELECT * FROM devices", "tok==");
    char *text = cJSON_PrintUnformatted(c);
    assert_string_equal(text, "{\"command\":\"query\",\"query\":\"SELECT * FROM devices\","
                              "\"pageSize\":1000,\"continuation\":\"tok==\"}");
    free(text);
    cJSON_Delete(c);
}

/* ---- outcomes ---- */

static char *outcome_text(const char *entry_json)
{
    cJSON *e = cJSON_Parse(entry_json);
    cJSON *o = th_scn_outcome(e);
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    cJSON_Delete(e);
    return text;
}

static void test_th_scn_outcome_data_succeeds(void **state)
{
    (void)state;
    char *t = outcome_text("{\"command\":\"invokeMethod\",\"correlationData\":\"run-3\","
                           "\"data\":{\"status\":200,\"payload\":{\"ok\":true}}}");
    assert_string_equal(t, "{\"status\":200,\"payload\":{\"ok\":true}}");
    free(t);
    t = outcome_text("{\"command\":\"updateTwin\",\"correlationData\":\"run-4\"}");
    assert_string_equal(t, "{}");
    free(t);
}

static void test_th_scn_outcome_refusal_succeeds(void **state)
{
    (void)state;
    char *t = outcome_text("{\"command\":\"invokeMethod\",\"correlationData\":\"run-3\","
                           "\"error\":\"device 'd1' is not online\",\"status\":404,"
                           "\"errorCode\":404103}");
    assert_string_equal(t, "{\"error\":\"device 'd1' is not online\",\"status\":404,"
                           "\"errorCode\":404103}");
    free(t);
}

/* ---- run variables ---- */

static void test_th_scn_session_identity_vars_device_succeeds(void **state)
{
    (void)state;
    struct th_scenario *s = load();
    struct th_scn_session *ss = th_scn_session_new(s, false);
    cJSON *ident =
        cJSON_Parse("{\"deviceId\":\"d1\",\"authentication\":{\"symmetricKey\":{\"primaryKey\":"
                    "\"a2V5\",\"secondaryKey\":\"b3Ro\"}}}");
    assert_true(
        th_scn_session_identity_vars(ss, "d1", NULL, ident, "hub.local", "127.0.0.1:18883"));
    const cJSON *vars = th_scn_session_vars(ss);
    assert_string_equal(
        cJSON_GetObjectItemCaseSensitive(vars, "device.d1.connectionString")->valuestring,
        "HostName=hub.local;DeviceId=d1;SharedAccessKey=a2V5;GatewayHostName=127.0.0.1:18883");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(vars, "device.d1.primaryKey")->valuestring,
                        "a2V5");
    assert_true(th_scn_session_identity_vars(ss, "d1", "m1", ident, "hub.local", "[::1]"));
    assert_string_equal(
        cJSON_GetObjectItemCaseSensitive(vars, "module.d1.m1.connectionString")->valuestring,
        "HostName=hub.local;DeviceId=d1;ModuleId=m1;SharedAccessKey=a2V5;GatewayHostName=[::1]");
    cJSON_Delete(ident);
    th_scn_session_free(ss);
    th_scenario_free(s);
}

static void test_th_scn_session_identity_vars_no_key_fails(void **state)
{
    (void)state;
    struct th_scenario *s = load();
    struct th_scn_session *ss = th_scn_session_new(s, false);
    cJSON *ident =
        cJSON_Parse("{\"deviceId\":\"x1\",\"authentication\":{\"type\":\"selfSigned\"}}");
    assert_false(th_scn_session_identity_vars(ss, "x1", NULL, ident, "hub.local", "127.0.0.1"));
    assert_null(cJSON_GetObjectItemCaseSensitive(th_scn_session_vars(ss), "device.x1.primaryKey"));
    cJSON_Delete(ident);
    th_scn_session_free(ss);
    th_scenario_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_th_scn_action_command_patch_desired_succeeds),
        cmocka_unit_test(test_th_scn_action_command_replace_desired_succeeds),
        cmocka_unit_test(test_th_scn_action_command_update_tags_succeeds),
        cmocka_unit_test(test_th_scn_action_command_invoke_method_succeeds),
        cmocka_unit_test(test_th_scn_action_command_send_c2d_body_json_succeeds),
        cmocka_unit_test(test_th_scn_action_command_query_succeeds),
        cmocka_unit_test(test_th_scn_action_command_configurations_succeeds),
        cmocka_unit_test(test_th_scn_action_command_create_modules_reads_desired_file_succeeds),
        cmocka_unit_test(test_th_scn_action_command_faults_succeeds),
        cmocka_unit_test(test_th_scn_action_command_create_enrollment_succeeds),
        cmocka_unit_test(test_th_scn_action_command_create_enrollment_group_succeeds),
        cmocka_unit_test(test_th_scn_action_command_desired_file_gone_fails),
        cmocka_unit_test(test_th_scn_action_command_desired_file_not_json_fails),
        cmocka_unit_test(test_th_scn_action_command_sleep_and_expectation_fails),
        cmocka_unit_test(test_th_scn_step_mark_succeeds),
        cmocka_unit_test(test_th_scn_scenario_mark_succeeds),
        cmocka_unit_test(test_th_scn_query_command_continuation_succeeds),
        cmocka_unit_test(test_th_scn_outcome_data_succeeds),
        cmocka_unit_test(test_th_scn_outcome_refusal_succeeds),
        cmocka_unit_test(test_th_scn_session_identity_vars_device_succeeds),
        cmocka_unit_test(test_th_scn_session_identity_vars_no_key_fails),
    };
    return cmocka_run_group_tests_name("scenario_actions", tests, NULL, NULL);
}
