/*
 * test_ctl_proto.c - unit tests for emulator/core/ctl_proto.c: the control
 * API's request envelope, the splitting of an answer into its entries,
 * correlation matching (request errors included) and error extraction.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "ctl_proto.h"

/* ---- the topics ---- */

static void test_th_control_topics_match_the_documented_ones_succeeds(void **state)
{
    (void)state;
    assert_string_equal(TH_CONTROL_TOPIC, "$CONTROL/twinhub/v1");
    assert_string_equal(TH_CONTROL_RESPONSE_TOPIC, "$CONTROL/twinhub/v1/response");
    assert_string_equal(TH_EVENTS_TOPIC, "$twinhub/events/#");
}

/* ---- th_ctl_command ---- */

static void test_th_ctl_command_with_and_without_ids_succeeds(void **state)
{
    (void)state;
    cJSON *c = th_ctl_command("getTwin", "d", "m");
    char *text = cJSON_PrintUnformatted(c);
    assert_string_equal(text, "{\"command\":\"getTwin\",\"deviceId\":\"d\",\"moduleId\":\"m\"}");
    free(text);
    cJSON_Delete(c);
    c = th_ctl_command("getStatistics", NULL, NULL);
    text = cJSON_PrintUnformatted(c);
    assert_string_equal(text, "{\"command\":\"getStatistics\"}");
    free(text);
    cJSON_Delete(c);
}

/* ---- th_ctl_request_print ---- */

static void test_th_ctl_request_print_two_commands_succeeds(void **state)
{
    (void)state;
    cJSON *a = cJSON_Parse("{\"command\":\"getTwin\",\"deviceId\":\"d1\"}");
    cJSON *b = cJSON_Parse("{\"command\":\"listDevices\"}");
    cJSON *cmds[2] = {a, b};
    const char *corrs[2] = {"c-1", "c-2"};
    char *text = th_ctl_request_print(cmds, 2, corrs);
    assert_non_null(text);
    assert_string_equal(text, "{\"commands\":[{\"command\":\"getTwin\",\"deviceId\":\"d1\","
                              "\"correlationData\":\"c-1\"},{\"command\":\"listDevices\","
                              "\"correlationData\":\"c-2\"}]}");
    free(text);
    /* The commands stay the caller's, with their correlationData. */
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(a, "correlationData")->valuestring, "c-1");
    cJSON_Delete(a);
    cJSON_Delete(b);
}

static void test_th_ctl_request_print_replaces_correlation_data_succeeds(void **state)
{
    (void)state;
    cJSON *a = cJSON_Parse("{\"correlationData\":\"old\",\"command\":\"mark\"}");
    const char *corrs[1] = {"new"};
    char *text = th_ctl_request_print(&a, 1, corrs);
    assert_string_equal(text,
                        "{\"commands\":[{\"command\":\"mark\",\"correlationData\":\"new\"}]}");
    free(text);
    cJSON_Delete(a);
}

static void test_th_ctl_request_print_without_corrs_keeps_commands_succeeds(void **state)
{
    (void)state;
    cJSON *a = cJSON_Parse("{\"command\":\"mark\",\"correlationData\":7}");
    char *text = th_ctl_request_print(&a, 1, NULL);
    assert_string_equal(text, "{\"commands\":[{\"command\":\"mark\",\"correlationData\":7}]}");
    free(text);
    cJSON_Delete(a);
}

static void test_th_ctl_request_print_not_an_object_fails(void **state)
{
    (void)state;
    cJSON *cmds[2] = {cJSON_Parse("{\"command\":\"mark\"}"), NULL};
    assert_null(th_ctl_request_print(cmds, 2, NULL));
    cJSON *arr = cJSON_CreateArray();
    assert_null(th_ctl_request_print(&arr, 1, NULL));
    assert_null(th_ctl_request_print(cmds, 0, NULL));
    cJSON_Delete(cmds[0]);
    cJSON_Delete(arr);
}

/* ---- th_ctl_responses_parse ---- */

static const char answer[] =
    "{\"responses\":["
    "{\"command\":\"getTwin\",\"correlationData\":\"c-1\",\"data\":{\"etag\":\"AAAA\"}},"
    "{\"command\":\"getDevice\",\"correlationData\":\"c-2\",\"error\":\"device 'x' is not "
    "registered\",\"status\":404,\"errorCode\":404001},"
    "{\"command\":null,\"error\":\"the request needs a 'commands' array\",\"status\":400,"
    "\"errorCode\":400004}]}";

static void test_th_ctl_responses_parse_three_entries_succeeds(void **state)
{
    (void)state;
    cJSON *r = NULL;
    struct th_error err = {0};
    assert_int_equal(th_ctl_responses_parse(answer, strlen(answer), 1 << 20, &r, &err), TH_OK);
    assert_true(cJSON_IsArray(r));
    assert_int_equal(cJSON_GetArraySize(r), 3);
    cJSON_Delete(r);
}

static void test_th_ctl_responses_parse_no_responses_array_fails(void **state)
{
    (void)state;
    static const char *const bad[] = {"{\"responses\":{}}", "{\"commands\":[]}", "[]", "7"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cJSON *r = (cJSON *)1;
        struct th_error err = {0};
        assert_int_equal(th_ctl_responses_parse(bad[i], strlen(bad[i]), 1 << 20, &r, &err),
                         TH_ERR_INVAL);
        assert_null(r);
        assert_non_null(strstr(err.message, "responses"));
    }
}

static void test_th_ctl_responses_parse_not_json_fails(void **state)
{
    (void)state;
    cJSON *r = NULL;
    struct th_error err = {0};
    assert_int_equal(th_ctl_responses_parse("{\"responses\":[", 14, 1 << 20, &r, &err),
                     TH_ERR_FORMAT);
    assert_null(r);
}

static void test_th_ctl_responses_parse_over_the_byte_limit_fails(void **state)
{
    (void)state;
    cJSON *r = NULL;
    struct th_error err = {0};
    assert_int_equal(th_ctl_responses_parse(answer, strlen(answer), 16, &r, &err),
                     TH_ERR_TOO_LARGE);
    assert_null(r);
}

static void test_th_ctl_responses_parse_too_deep_fails(void **state)
{
    (void)state;
    char text[400];
    size_t n = (size_t)snprintf(text, sizeof text, "{\"responses\":[");
    for (int i = 0; i < TH_CTL_MAX_DEPTH; i++)
        text[n++] = '[';
    for (int i = 0; i < TH_CTL_MAX_DEPTH; i++)
        text[n++] = ']';
    n += (size_t)snprintf(text + n, sizeof text - n, "]}");
    cJSON *r = NULL;
    struct th_error err = {0};
    assert_int_equal(th_ctl_responses_parse(text, n, 1 << 20, &r, &err), TH_ERR_TOO_DEEP);
    assert_null(r);
}

/* ---- correlation ---- */

static cJSON *parsed_answer(void)
{
    cJSON *r = NULL;
    struct th_error err = {0};
    assert_int_equal(th_ctl_responses_parse(answer, strlen(answer), 1 << 20, &r, &err), TH_OK);
    return r;
}

static void test_th_ctl_find_by_correlation_data_succeeds(void **state)
{
    (void)state;
    cJSON *r = parsed_answer();
    cJSON *e = th_ctl_find(r, "c-2", false);
    assert_non_null(e);
    assert_string_equal(th_ctl_entry_corr(e), "c-2");
    assert_ptr_equal(th_ctl_find(r, "c-1", true), cJSON_GetArrayItem(r, 0));
    cJSON_Delete(r);
}

static void test_th_ctl_find_unknown_correlation_data_fails(void **state)
{
    (void)state;
    cJSON *r = parsed_answer();
    assert_null(th_ctl_find(r, "c-3", false));
    assert_null(th_ctl_find(r, NULL, false));
    assert_null(th_ctl_find(NULL, "c-1", true));
    cJSON_Delete(r);
}

static void test_th_ctl_find_request_error_answers_any_succeeds(void **state)
{
    (void)state;
    cJSON *r = parsed_answer();
    cJSON *e = th_ctl_find(r, "c-3", true);
    assert_ptr_equal(e, cJSON_GetArrayItem(r, 2));
    assert_true(th_ctl_entry_is_request_error(e));
    assert_null(th_ctl_entry_corr(e));
    cJSON_Delete(r);
}

static void test_th_ctl_entry_is_request_error_command_entry_fails(void **state)
{
    (void)state;
    cJSON *r = parsed_answer();
    assert_false(th_ctl_entry_is_request_error(cJSON_GetArrayItem(r, 0)));
    assert_false(th_ctl_entry_is_request_error(cJSON_GetArrayItem(r, 1)));
    /* A command that lacked "command" is answered with null but keeps its correlationData. */
    cJSON *e = cJSON_Parse("{\"command\":null,\"correlationData\":\"c-9\",\"error\":\"x\"}");
    assert_false(th_ctl_entry_is_request_error(e));
    cJSON_Delete(e);
    cJSON_Delete(r);
}

static void test_th_ctl_entry_corr_not_a_string_fails(void **state)
{
    (void)state;
    cJSON *e = cJSON_Parse("{\"command\":\"mark\",\"correlationData\":12}");
    assert_null(th_ctl_entry_corr(e));
    cJSON_Delete(e);
}

/* ---- errors ---- */

static void test_th_ctl_entry_error_refusal_succeeds(void **state)
{
    (void)state;
    cJSON *r = parsed_answer();
    int status = 0, code = 0;
    const char *why = th_ctl_entry_error(cJSON_GetArrayItem(r, 1), &status, &code);
    assert_string_equal(why, "device 'x' is not registered");
    assert_int_equal(status, 404);
    assert_int_equal(code, 404001);
    cJSON_Delete(r);
}

static void test_th_ctl_entry_error_success_entry_fails(void **state)
{
    (void)state;
    cJSON *r = parsed_answer();
    int status = -1;
    assert_null(th_ctl_entry_error(cJSON_GetArrayItem(r, 0), &status, NULL));
    assert_int_equal(status, -1);
    cJSON *e = cJSON_Parse("{\"command\":\"x\",\"error\":null,\"data\":1}");
    assert_null(th_ctl_entry_error(e, NULL, NULL));
    cJSON_Delete(e);
    cJSON_Delete(r);
}

static void test_th_ctl_entry_error_unsaid_and_numberless_succeeds(void **state)
{
    (void)state;
    cJSON *e = cJSON_Parse("{\"command\":\"x\",\"error\":{\"why\":1}}");
    int status = -1, code = -1;
    assert_string_equal(th_ctl_entry_error(e, &status, &code), TH_CTL_ERROR_UNSAID);
    assert_int_equal(status, 0);
    assert_int_equal(code, 0);
    cJSON_Delete(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_th_control_topics_match_the_documented_ones_succeeds),
        cmocka_unit_test(test_th_ctl_command_with_and_without_ids_succeeds),
        cmocka_unit_test(test_th_ctl_request_print_two_commands_succeeds),
        cmocka_unit_test(test_th_ctl_request_print_replaces_correlation_data_succeeds),
        cmocka_unit_test(test_th_ctl_request_print_without_corrs_keeps_commands_succeeds),
        cmocka_unit_test(test_th_ctl_request_print_not_an_object_fails),
        cmocka_unit_test(test_th_ctl_responses_parse_three_entries_succeeds),
        cmocka_unit_test(test_th_ctl_responses_parse_no_responses_array_fails),
        cmocka_unit_test(test_th_ctl_responses_parse_not_json_fails),
        cmocka_unit_test(test_th_ctl_responses_parse_over_the_byte_limit_fails),
        cmocka_unit_test(test_th_ctl_responses_parse_too_deep_fails),
        cmocka_unit_test(test_th_ctl_find_by_correlation_data_succeeds),
        cmocka_unit_test(test_th_ctl_find_unknown_correlation_data_fails),
        cmocka_unit_test(test_th_ctl_find_request_error_answers_any_succeeds),
        cmocka_unit_test(test_th_ctl_entry_is_request_error_command_entry_fails),
        cmocka_unit_test(test_th_ctl_entry_corr_not_a_string_fails),
        cmocka_unit_test(test_th_ctl_entry_error_refusal_succeeds),
        cmocka_unit_test(test_th_ctl_entry_error_success_entry_fails),
        cmocka_unit_test(test_th_ctl_entry_error_unsaid_and_numberless_succeeds),
    };
    return cmocka_run_group_tests_name("ctl_proto", tests, NULL, NULL);
}
