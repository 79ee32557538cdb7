/*
 * test_scenario_options.c - unit tests for emulator/scenario/scn_options.c:
 * what `twinhub run --time-scale F` and `--var NAME=VALUE` change in a
 * loaded scenario, and how their arguments are parsed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "scenario.h"

static struct th_scenario *parse(const char *text)
{
    struct th_scn_diag d = {0};
    struct th_scenario *s = th_scenario_parse(text, strlen(text), "t.json", &d);
    if (!s)
        fail_msg("refused: %s", d.text ? d.text : "?");
    th_scn_diag_free(&d);
    return s;
}

static const char *const BOUNDS =
    "{\"name\":\"n\",\"defaults\":{\"within\":\"PT10S\"},\"steps\":["
    "{\"waitConnected\":{\"deviceId\":\"d\",\"within\":\"PT20S\"}},"
    "{\"expectReported\":{\"deviceId\":\"d\",\"match\":{}}},"
    "{\"expectNoReported\":{\"deviceId\":\"d\",\"match\":{},\"during\":\"PT3S\"}},"
    "{\"sleep\":{\"for\":\"PT1S\"}},"
    "{\"patchDesired\":{\"deviceId\":\"d\",\"patch\":{\"a\":1}}}]}";

/* ---- --time-scale ---- */

static void test_th_scn_parse_time_scale_numbers_succeeds(void **state)
{
    (void)state;
    double f = 0;
    assert_true(th_scn_parse_time_scale("0.1", &f));
    assert_true(f > 0.0999 && f < 0.1001);
    assert_true(th_scn_parse_time_scale("3", &f));
    assert_true(f == 3.0);
    assert_true(th_scn_parse_time_scale("1e1", &f));
    assert_true(f == 10.0);
    assert_true(th_scn_parse_time_scale("0.001", &f));
    assert_true(th_scn_parse_time_scale("1000", &f));
}

static void test_th_scn_parse_time_scale_bad_values_fails(void **state)
{
    (void)state;
    double f = 7;
    const char *bad[] = {"",    "0",   "-1",  "+1",     " 1",  "1x",   "0.0001", "1001",
                         "nan", "inf", "0x2", "1e400", "abc", "1 ",   "1,5"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (th_scn_parse_time_scale(bad[i], &f))
            fail_msg("'%s' was accepted", bad[i]);
    assert_true(f == 7); /* untouched */
    assert_false(th_scn_parse_time_scale(NULL, &f));
}

static void test_th_scenario_scale_time_every_bound_succeeds(void **state)
{
    (void)state;
    struct th_scenario *s = parse(BOUNDS);
    th_scenario_scale_time(s, 0.1);
    assert_int_equal(s->default_within_us, 1000000);
    assert_int_equal(s->steps[0].bound_us, 2000000);  /* within */
    assert_int_equal(s->steps[1].bound_us, 1000000);  /* the default within */
    assert_int_equal(s->steps[2].bound_us, 300000);   /* during */
    assert_int_equal(s->steps[3].bound_us, 100000);   /* sleep for */
    assert_int_equal(s->steps[4].bound_us, 0);        /* an action has none */
    th_scenario_scale_time(s, 25);
    assert_int_equal(s->steps[0].bound_us, 50000000);
    assert_int_equal(s->steps[2].bound_us, 7500000);
    th_scenario_free(s);
}

static void test_th_scenario_scale_time_one_succeeds(void **state)
{
    (void)state;
    struct th_scenario *s = parse(BOUNDS);
    th_scenario_scale_time(s, 1.0);
    assert_int_equal(s->steps[0].bound_us, 20000000);
    assert_int_equal(s->steps[2].bound_us, 3000000);
    th_scenario_free(s);
}

/* ---- --var ---- */

static void test_th_scn_parse_var_arg_name_value_succeeds(void **state)
{
    (void)state;
    char name[16];
    const char *value = NULL;
    assert_true(th_scn_parse_var_arg("firmware=2.4.1", name, sizeof name, &value));
    assert_string_equal(name, "firmware");
    assert_string_equal(value, "2.4.1");
    assert_true(th_scn_parse_var_arg("a_b-c=x=y", name, sizeof name, &value));
    assert_string_equal(name, "a_b-c");
    assert_string_equal(value, "x=y");
    assert_true(th_scn_parse_var_arg("empty=", name, sizeof name, &value));
    assert_string_equal(value, "");
}

static void test_th_scn_parse_var_arg_bad_forms_fails(void **state)
{
    (void)state;
    char name[8];
    const char *value = NULL;
    const char *bad[] = {"novalue", "=x", "1st=x", "a.b=x", "hub.name=x", "toolongname=x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (th_scn_parse_var_arg(bad[i], name, sizeof name, &value))
            fail_msg("'%s' was accepted", bad[i]);
}

static const char *const VARS =
    "{\"name\":\"n\",\"variables\":{\"fw\":\"1.0.0\",\"label\":\"fw ${fw}\"},"
    "\"agent\":{\"command\":\"a\",\"env\":{\"FW\":\"${fw}\"}},"
    "\"steps\":[{\"expectReported\":{\"deviceId\":\"d\",\"match\":{\"fw\":\"${fw}\"}}}]}";

static void test_th_scenario_set_variable_declared_succeeds(void **state)
{
    (void)state;
    struct th_scenario *s = parse(VARS);
    assert_int_equal(th_scenario_set_variable(s, "fw", "2.4.1"), TH_OK);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(s->variables, "fw");
    assert_string_equal(cJSON_GetStringValue(v), "2.4.1");
    /* A session sees the new value, and variables built from it follow. */
    struct th_scn_session *ss = th_scn_session_new(s, true);
    assert_non_null(ss);
    th_scn_session_begin_step(ss, 0);
    const cJSON *vars = th_scn_session_vars(ss);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(vars, "fw")),
                        "2.4.1");
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(vars, "label")),
                        "fw 2.4.1");
    th_scn_session_free(ss);
    th_scenario_free(s);
}

static void test_th_scenario_set_variable_literal_succeeds(void **state)
{
    (void)state;
    struct th_scenario *s = parse(VARS);
    assert_int_equal(th_scenario_set_variable(s, "fw", "${label}$x"), TH_OK);
    struct th_scn_session *ss = th_scn_session_new(s, true);
    th_scn_session_begin_step(ss, 0);
    const cJSON *vars = th_scn_session_vars(ss);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(vars, "fw")),
                        "${label}$x");
    th_scn_session_free(ss);
    th_scenario_free(s);
}

static void test_th_scenario_set_variable_undeclared_fails(void **state)
{
    (void)state;
    struct th_scenario *s = parse(VARS);
    assert_int_equal(th_scenario_set_variable(s, "other", "x"), TH_ERR_NOT_FOUND);
    struct th_scenario *bare = parse(BOUNDS);
    assert_int_equal(th_scenario_set_variable(bare, "fw", "x"), TH_ERR_NOT_FOUND);
    th_scenario_free(bare);
    th_scenario_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_th_scn_parse_time_scale_numbers_succeeds),
        cmocka_unit_test(test_th_scn_parse_time_scale_bad_values_fails),
        cmocka_unit_test(test_th_scenario_scale_time_every_bound_succeeds),
        cmocka_unit_test(test_th_scenario_scale_time_one_succeeds),
        cmocka_unit_test(test_th_scn_parse_var_arg_name_value_succeeds),
        cmocka_unit_test(test_th_scn_parse_var_arg_bad_forms_fails),
        cmocka_unit_test(test_th_scenario_set_variable_declared_succeeds),
        cmocka_unit_test(test_th_scenario_set_variable_literal_succeeds),
        cmocka_unit_test(test_th_scenario_set_variable_undeclared_fails),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
