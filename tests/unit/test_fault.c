/*
 * test_fault.c - unit tests for emulator/core/fault.c: the names of the
 * operations an injected fault (control API and scenario `injectError`) can
 * hit, and the hub's error for each injected status (docs/control-api.md).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "fault.h"

static void test_th_fault_op_parse_known_names_succeeds(void **state)
{
    (void)state;
    enum th_fault_op op = TH_FAULT_TWIN_PATCH;
    struct th_error err = {0};
    assert_int_equal(th_fault_op_parse("twinGet", &op, &err), TH_OK);
    assert_int_equal(op, TH_FAULT_TWIN_GET);
    assert_int_equal(th_fault_op_parse("twinPatch", &op, &err), TH_OK);
    assert_int_equal(op, TH_FAULT_TWIN_PATCH);
    assert_string_equal(th_fault_op_text(TH_FAULT_TWIN_GET), "twin get");
    assert_string_equal(th_fault_op_text(TH_FAULT_TWIN_PATCH), "reported patch");
}

static void test_th_fault_op_parse_other_names_fails(void **state)
{
    (void)state;
    static const char *const names[] = {"twinget", "TwinPatch", "twinPatch ", "", "methods"};
    enum th_fault_op op = TH_FAULT_TWIN_GET;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        struct th_error err = {0};
        assert_int_equal(th_fault_op_parse(names[i], &op, &err), TH_ERR_INVAL);
        assert_int_equal(err.status, 400);
        assert_int_equal(err.code, 400004);
        assert_string_equal(err.message, "'operation' must be \"twinGet\" or \"twinPatch\"");
    }
    struct th_error err = {0};
    assert_int_equal(th_fault_op_parse(NULL, &op, &err), TH_ERR_INVAL);
    assert_int_equal(err.code, 400004);
    assert_int_equal(op, TH_FAULT_TWIN_GET);
}

static void test_th_fault_error_hub_codes_succeeds(void **state)
{
    (void)state;
    static const struct {
        int status, code;
    } cases[] = {
        {429, 429001}, {503, 503001}, {400, 400001}, {404, 404001},
        {412, 412001}, {500, 500001}, {599, 599001},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct th_error err = {0};
        assert_int_equal(th_fault_error(TH_FAULT_TWIN_GET, cases[i].status, &err),
                         TH_ERR_THROTTLED);
        assert_int_equal(err.result, TH_ERR_THROTTLED);
        assert_int_equal(err.status, cases[i].status);
        assert_int_equal(err.code, cases[i].code);
    }
    assert_int_equal(TH_FAULT_STATUS_DEFAULT, 429);
    assert_int_equal(TH_FAULT_STATUS_MIN, 400);
    assert_int_equal(TH_FAULT_STATUS_MAX, 599);
}

static void test_th_fault_error_message_names_fault_succeeds(void **state)
{
    (void)state;
    struct th_error err = {0};
    (void)th_fault_error(TH_FAULT_TWIN_PATCH, 503, &err);
    assert_string_equal(err.message, "injected fault: reported patch answered with 503 (scenario)");
    assert_int_equal(th_fault_error(TH_FAULT_TWIN_GET, 429, NULL), TH_ERR_THROTTLED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_th_fault_op_parse_known_names_succeeds),
        cmocka_unit_test(test_th_fault_op_parse_other_names_fails),
        cmocka_unit_test(test_th_fault_error_hub_codes_succeeds),
        cmocka_unit_test(test_th_fault_error_message_names_fault_succeeds),
    };
    return cmocka_run_group_tests_name("fault", tests, NULL, NULL);
}
