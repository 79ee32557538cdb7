/*
 * test_result.c - unit tests for th_result.c: result names, default hub error
 * codes, the errorCode -> name table (iothub-protocol.md 9.3) and th_error_set.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "th_result.h"

static void test_th_result_str_every_value_succeeds(void **state)
{
    (void)state;
    for (int r = TH_OK; r <= TH_ERR_THROTTLED; r++) {
        const char *s = th_result_str((th_result)r);
        assert_non_null(s);
        assert_true(strlen(s) > 0);
        assert_string_not_equal(s, "unknown error");
    }
    assert_string_equal(th_result_str(TH_ERR_INVAL), "invalid argument");
}

static void test_th_result_str_out_of_range_succeeds(void **state)
{
    (void)state;
    assert_string_equal(th_result_str((th_result)999), "unknown error");
}

static void test_th_result_default_code_documented_values_succeeds(void **state)
{
    (void)state;
    assert_int_equal(th_result_default_code(TH_ERR_INVAL), 400004);
    assert_int_equal(th_result_default_code(TH_ERR_FORMAT), 400006);
    assert_int_equal(th_result_default_code(TH_ERR_NOMEM), 500001);
    assert_int_equal(th_result_default_code(TH_ERR_NOT_FOUND), 404001);
    assert_int_equal(th_result_default_code(TH_ERR_EXISTS), 409001);
    assert_int_equal(th_result_default_code(TH_ERR_TOO_LARGE), 413001);
    assert_int_equal(th_result_default_code(TH_ERR_TOO_DEEP), 400004);
    assert_int_equal(th_result_default_code(TH_ERR_PRECONDITION), 412001);
    assert_int_equal(th_result_default_code(TH_ERR_AUTH), 401002);
    assert_int_equal(th_result_default_code(TH_ERR_EXPIRED), 401002);
    assert_int_equal(th_result_default_code(TH_ERR_DISABLED), 403012);
    assert_int_equal(th_result_default_code(TH_ERR_BUFFER), 500001);
    assert_int_equal(th_result_default_code(TH_ERR_QUEUE_FULL), 403004);
    assert_int_equal(th_result_default_code(TH_ERR_NOT_ONLINE), 404103);
    assert_int_equal(th_result_default_code(TH_ERR_TIMEOUT), 504101);
    assert_int_equal(th_result_default_code(TH_ERR_THROTTLED), 429001);
}

static void test_th_result_default_code_unknown_result_fails(void **state)
{
    (void)state;
    assert_int_equal(th_result_default_code((th_result)999), 500001);
}

static void test_th_error_code_name_table_succeeds(void **state)
{
    (void)state;
    static const struct {
        int code;
        const char *name;
    } cases[] = {
        {400001, "InvalidProtocolVersion"},
        {400003, "InvalidOperation"},
        {400004, "ArgumentInvalid"},
        {400005, "ArgumentNull"},
        {400006, "IotHubFormatError"},
        {400011, "DeviceDefinedMultipleTimes"},
        {400013, "BulkRegistryOperationFailure"},
        {400027, "ConnectionForcefullyClosedOnNewConnection"},
        {401002, "IotHubUnauthorizedAccess"},
        {401003, "IotHubUnauthorized"},
        {403002, "IotHubQuotaExceeded"},
        {403004, "DeviceMaximumQueueDepthExceeded"},
        {403006, "DeviceMaximumActiveFileUploadLimitExceeded"},
        {403012, "DeviceDisabled"},
        {403100, "DeviceModelMaxPropertiesExceeded"},
        {404001, "DeviceNotFound"},
        {404010, "ModuleNotFound"},
        {404103, "DeviceNotOnline"},
        {404104, "DeviceConnectionClosedRemotely"},
        {409001, "DeviceAlreadyExists"},
        {409301, "ModuleAlreadyExistsOnDevice"},
        {412001, "PreconditionFailed"},
        {412002, "DeviceMessageLockLost"},
        {413001, "MessageTooLarge"},
        {413002, "TooManyDevices"},
        {413003, "TooManyModulesOnDevice"},
        {429001, "ThrottlingException"},
        {429002, "ThrottleBacklogLimitExceeded"},
        {500001, "ServerError"},
        {503001, "ServiceUnavailable"},
        {504101, "GatewayTimeout"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_string_equal(th_error_code_name(cases[i].code), cases[i].name);
}

static void test_th_error_code_name_every_default_code_named_succeeds(void **state)
{
    (void)state;
    /* Every default code must have its own name (ServerError only for 500001). */
    for (int r = TH_ERR_INVAL; r <= TH_ERR_THROTTLED; r++) {
        int code = th_result_default_code((th_result)r);
        if (code != 500001)
            assert_string_not_equal(th_error_code_name(code), "ServerError");
    }
}

static void test_th_error_code_name_unknown_fails(void **state)
{
    (void)state;
    assert_string_equal(th_error_code_name(123456), "ServerError");
    assert_string_equal(th_error_code_name(0), "ServerError");
}

static void test_th_error_set_default_code_succeeds(void **state)
{
    (void)state;
    struct th_error err;
    memset(&err, 0xAA, sizeof err);
    th_result r = th_error_set(&err, TH_ERR_NOT_FOUND, 0, "device '%s' not found", "d1");
    assert_int_equal(r, TH_ERR_NOT_FOUND);
    assert_int_equal(err.result, TH_ERR_NOT_FOUND);
    assert_int_equal(err.code, 404001);
    assert_int_equal(err.status, 404);
    assert_string_equal(err.message, "device 'd1' not found");
}

static void test_th_error_set_explicit_code_succeeds(void **state)
{
    (void)state;
    struct th_error err;
    th_result r = th_error_set(&err, TH_ERR_EXISTS, 409301, "module %d", 7);
    assert_int_equal(r, TH_ERR_EXISTS);
    assert_int_equal(err.code, 409301);
    assert_int_equal(err.status, 409);
    assert_string_equal(err.message, "module 7");
}

static void test_th_error_set_null_err_succeeds(void **state)
{
    (void)state;
    assert_int_equal(th_error_set(NULL, TH_ERR_TIMEOUT, 0, "x %s", "y"), TH_ERR_TIMEOUT);
}

static void test_th_error_set_long_message_truncated_succeeds(void **state)
{
    (void)state;
    struct th_error err;
    char big[600];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(th_error_set(&err, TH_ERR_INVAL, 0, "%s", big), TH_ERR_INVAL);
    assert_int_equal(strlen(err.message), sizeof err.message - 1);
    assert_int_equal(err.status, 400);
}

static void test_th_error_set_at_records_position_succeeds(void **state)
{
    (void)state;
    struct th_error err;
    memset(&err, 0xAA, sizeof err);
    th_result r = th_error_set_at(&err, TH_ERR_FORMAT, 0, 7, "bad at %d", 6);
    assert_int_equal(r, TH_ERR_FORMAT);
    assert_int_equal(err.position, 7);
    assert_int_equal(err.code, TH_EC_IOTHUB_FORMAT_ERROR);
    assert_string_equal(err.message, "bad at 6");
    assert_int_equal(th_error_set_at(NULL, TH_ERR_INVAL, 0, 3, "x"), TH_ERR_INVAL);
}

static void test_th_error_set_clears_position_succeeds(void **state)
{
    (void)state;
    struct th_error err;
    memset(&err, 0xAA, sizeof err);
    th_error_set(&err, TH_ERR_INVAL, 0, "no position");
    assert_int_equal(err.position, 0);
    th_error_set_at(&err, TH_ERR_INVAL, 0, 5, "at 5");
    th_error_set(&err, TH_ERR_INVAL, 0, "again none");
    assert_int_equal(err.position, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_th_result_str_every_value_succeeds),
        cmocka_unit_test(test_th_result_str_out_of_range_succeeds),
        cmocka_unit_test(test_th_result_default_code_documented_values_succeeds),
        cmocka_unit_test(test_th_result_default_code_unknown_result_fails),
        cmocka_unit_test(test_th_error_code_name_table_succeeds),
        cmocka_unit_test(test_th_error_code_name_every_default_code_named_succeeds),
        cmocka_unit_test(test_th_error_code_name_unknown_fails),
        cmocka_unit_test(test_th_error_set_default_code_succeeds),
        cmocka_unit_test(test_th_error_set_explicit_code_succeeds),
        cmocka_unit_test(test_th_error_set_null_err_succeeds),
        cmocka_unit_test(test_th_error_set_at_records_position_succeeds),
        cmocka_unit_test(test_th_error_set_clears_position_succeeds),
        cmocka_unit_test(test_th_error_set_long_message_truncated_succeeds),
    };
    return cmocka_run_group_tests_name("th_result", tests, NULL, NULL);
}
