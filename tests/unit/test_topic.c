/*
 * test_topic.c - unit tests for emulator/core/topic.c: CONNECT usernames
 * (captures from real-clients.md section 0 and the legacy forms of
 * iothub-protocol.md 3.2), published topics, subscription filters, property
 * bags and the topics the hub publishes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "th_limits.h"
#include "topic.h"

static th_result parse_user(const char *u, struct th_username *out)
{
    return th_username_parse(u, strlen(u), out, NULL);
}

static th_result parse_topic(const char *t, struct th_topic *out)
{
    return th_topic_parse(t, strlen(t), out);
}

static th_result parse_bag(const char *b, struct th_props *out)
{
    return th_props_parse(b, strlen(b), out);
}

/* ---- usernames ---- */

static void test_th_username_parse_node_device_succeeds(void **state)
{
    (void)state;
    struct th_username u;
    assert_int_equal(parse_user("localhost/dev1/?api-version=2021-04-12&DeviceClientType=azure-iot-"
                                "device%2F1.18.4%20(node%20v20.20.2%3B%20Debian%2012%3B%20x64)",
                                &u),
                     TH_OK);
    assert_true(th_slice_eq_str(u.host, "localhost"));
    assert_true(th_slice_eq_str(u.device_id, "dev1"));
    assert_null(u.module_id.ptr);
    assert_true(th_slice_eq_str(u.api_version, "2021-04-12"));
    assert_true(th_slice_eq_str(
        u.client_type, "azure-iot-device%2F1.18.4%20(node%20v20.20.2%3B%20Debian%2012%3B%20x64)"));
    assert_null(u.model_id.ptr);
}

static void test_th_username_parse_embedded_c_succeeds(void **state)
{
    (void)state;
    struct th_username u;
    assert_int_equal(
        parse_user(
            "localhost/cdev1/?api-version=2020-09-30&DeviceClientType=azsdk-c%2F1.6.0-beta.1", &u),
        TH_OK);
    assert_true(th_slice_eq_str(u.device_id, "cdev1"));
    assert_true(th_slice_eq_str(u.api_version, "2020-09-30"));
    assert_true(th_slice_eq_str(u.client_type, "azsdk-c%2F1.6.0-beta.1"));
}

static void test_th_username_parse_full_c_model_id_succeeds(void **state)
{
    (void)state;
    struct th_username u;
    assert_int_equal(
        parse_user("127.0.0.1/pnp2/?api-version=2020-09-30&DeviceClientType=iothubclient"
                   "%2f1.13.0%20(native%3b%20Linux%3b%20x86_64)&model-id=dtmi%3acom%3a"
                   "example%3aThermostat%3b1",
                   &u),
        TH_OK);
    assert_true(th_slice_eq_str(u.host, "127.0.0.1"));
    assert_true(th_slice_eq_str(u.device_id, "pnp2"));
    assert_true(th_slice_eq_str(u.model_id, "dtmi%3acom%3aexample%3aThermostat%3b1"));
    assert_true(
        th_slice_eq_str(u.client_type, "iothubclient%2f1.13.0%20(native%3b%20Linux%3b%20x86_64)"));
}

static void test_th_username_parse_node_module_succeeds(void **state)
{
    (void)state;
    struct th_username u;
    assert_int_equal(parse_user("localhost/dev1/mod1/?api-version=2021-04-12", &u), TH_OK);
    assert_true(th_slice_eq_str(u.device_id, "dev1"));
    assert_true(th_slice_eq_str(u.module_id, "mod1"));
}

static void test_th_username_parse_host_with_port_succeeds(void **state)
{
    (void)state;
    struct th_username u;
    assert_int_equal(parse_user("localhost:18883/dev2/?api-version=2021-04-12", &u), TH_OK);
    assert_true(th_slice_eq_str(u.host, "localhost:18883"));
    assert_true(th_slice_eq_str(u.device_id, "dev2"));
}

static void test_th_username_parse_legacy_api_version_succeeds(void **state)
{
    (void)state;
    struct th_username u;
    assert_int_equal(parse_user("contoso.azure-devices.net/MyDevice01/api-version=2016-11-14", &u),
                     TH_OK);
    assert_true(th_slice_eq_str(u.host, "contoso.azure-devices.net"));
    assert_true(th_slice_eq_str(u.device_id, "MyDevice01"));
    assert_null(u.module_id.ptr);
    assert_true(th_slice_eq_str(u.api_version, "2016-11-14"));
}

static void test_th_username_parse_legacy_bare_device_succeeds(void **state)
{
    (void)state;
    struct th_username u;
    assert_int_equal(parse_user("contoso.azure-devices.net/MyDevice01", &u), TH_OK);
    assert_true(th_slice_eq_str(u.device_id, "MyDevice01"));
    assert_null(u.module_id.ptr);
    assert_null(u.api_version.ptr);
}

static void test_th_username_parse_legacy_bare_module_succeeds(void **state)
{
    (void)state;
    struct th_username u;
    assert_int_equal(parse_user("h/d1/$edgeHub", &u), TH_OK);
    assert_true(th_slice_eq_str(u.device_id, "d1"));
    assert_true(th_slice_eq_str(u.module_id, "$edgeHub"));
}

static void test_th_username_parse_unknown_keys_ignored_succeeds(void **state)
{
    (void)state;
    struct th_username u;
    assert_int_equal(parse_user("h/d/?product-info=x&api-version=2021-04-12&&foo", &u), TH_OK);
    assert_true(th_slice_eq_str(u.api_version, "2021-04-12"));
}

static void test_th_username_parse_missing_device_fails(void **state)
{
    (void)state;
    struct th_username u;
    struct th_error err = {0};
    assert_int_equal(th_username_parse("h/?api-version=1", 16, &u, &err), TH_ERR_FORMAT);
    assert_int_equal(err.result, TH_ERR_FORMAT);
    assert_non_null(strstr(err.message, "{host}/{deviceId}"));
    assert_int_equal(parse_user("hostonly", &u), TH_ERR_FORMAT);
    assert_int_equal(parse_user("", &u), TH_ERR_FORMAT);
}

static void test_th_username_parse_too_many_segments_fails(void **state)
{
    (void)state;
    struct th_username u;
    assert_int_equal(parse_user("h/d/m/x/?api-version=1", &u), TH_ERR_FORMAT);
}

static void test_th_username_parse_invalid_id_fails(void **state)
{
    (void)state;
    struct th_username u;
    assert_int_equal(parse_user("h/d%20 x/?api-version=1", &u), TH_ERR_FORMAT);
    assert_int_equal(parse_user("h//m/?api-version=1", &u), TH_ERR_FORMAT);
}

/* ---- ids ---- */

static void test_th_id_valid_allowed_chars_succeeds(void **state)
{
    (void)state;
    const char *id = "aZ09-.+%_#*?!(),=@$':;";
    assert_true(th_id_valid(id, strlen(id)));
    char longest[128];
    memset(longest, 'x', sizeof(longest));
    assert_true(th_id_valid(longest, sizeof(longest)));
}

static void test_th_id_valid_bad_chars_fails(void **state)
{
    (void)state;
    assert_false(th_id_valid("a/b", 3));
    assert_false(th_id_valid("a b", 3));
    assert_false(th_id_valid("a&b", 3));
    assert_false(th_id_valid("a\0b", 3));
    assert_false(th_id_valid("\xc3\xa9", 2));
    assert_false(th_id_valid("", 0));
    char toolong[129];
    memset(toolong, 'x', sizeof(toolong));
    assert_false(th_id_valid(toolong, sizeof(toolong)));
}

/* ---- published topics ---- */

static void test_th_topic_parse_telemetry_no_props_succeeds(void **state)
{
    (void)state;
    struct th_topic t;
    assert_int_equal(parse_topic("devices/cdev1/messages/events/", &t), TH_OK);
    assert_int_equal(t.kind, TH_TOPIC_TELEMETRY);
    assert_true(th_slice_eq_str(t.device_id, "cdev1"));
    assert_null(t.module_id.ptr);
    assert_int_equal(t.props.len, 0);
}

static void test_th_topic_parse_telemetry_no_trailing_slash_succeeds(void **state)
{
    (void)state;
    struct th_topic t;
    assert_int_equal(parse_topic("devices/dev1/messages/events", &t), TH_OK);
    assert_int_equal(t.kind, TH_TOPIC_TELEMETRY);
    assert_true(th_slice_eq_str(t.device_id, "dev1"));
    assert_int_equal(t.props.len, 0);
}

static void test_th_topic_parse_telemetry_node_props_succeeds(void **state)
{
    (void)state;
    struct th_topic t;
    assert_int_equal(parse_topic("devices/dev1/messages/events/%24.mid=mid-1&%24.ct=application"
                                 "%2Fjson&%24.ce=utf-8&alert=high%20temp",
                                 &t),
                     TH_OK);
    assert_int_equal(t.kind, TH_TOPIC_TELEMETRY);
    assert_true(th_slice_eq_str(
        t.props, "%24.mid=mid-1&%24.ct=application%2Fjson&%24.ce=utf-8&alert=high%20temp"));
}

static void test_th_topic_parse_telemetry_leading_question_mark_succeeds(void **state)
{
    (void)state;
    struct th_topic t;
    assert_int_equal(parse_topic("devices/dev1/messages/events/?a=1", &t), TH_OK);
    assert_true(th_slice_eq_str(t.props, "a=1"));
}

static void test_th_topic_parse_telemetry_module_trailing_slash_succeeds(void **state)
{
    (void)state;
    struct th_topic t;
    assert_int_equal(parse_topic("devices/dev1/modules/mod1/messages/events/%24.on=out1&x=y/", &t),
                     TH_OK);
    assert_int_equal(t.kind, TH_TOPIC_TELEMETRY);
    assert_true(th_slice_eq_str(t.device_id, "dev1"));
    assert_true(th_slice_eq_str(t.module_id, "mod1"));
    assert_true(th_slice_eq_str(t.props, "%24.on=out1&x=y"));
}

static void test_th_topic_parse_telemetry_module_no_props_succeeds(void **state)
{
    (void)state;
    struct th_topic t;
    assert_int_equal(parse_topic("devices/dev1/modules/mod1/messages/events", &t), TH_OK);
    assert_true(th_slice_eq_str(t.module_id, "mod1"));
}

static void test_th_topic_parse_telemetry_wrong_suffix_fails(void **state)
{
    (void)state;
    struct th_topic t;
    assert_int_equal(parse_topic("devices/dev1/messages/eventsX", &t), TH_ERR_INVAL);
    assert_int_equal(t.kind, TH_TOPIC_UNKNOWN);
    assert_int_equal(parse_topic("devices/dev1/messages/devicebound/", &t), TH_ERR_INVAL);
    assert_int_equal(parse_topic("devices//messages/events/", &t), TH_ERR_INVAL);
    assert_int_equal(parse_topic("devices/dev1/modules//messages/events/", &t), TH_ERR_INVAL);
    assert_int_equal(parse_topic("devices/dev1", &t), TH_ERR_INVAL);
}

static void test_th_topic_parse_twin_get_succeeds(void **state)
{
    (void)state;
    struct th_topic t;
    assert_int_equal(parse_topic("$iothub/twin/GET/?$rid=get_twin", &t), TH_OK);
    assert_int_equal(t.kind, TH_TOPIC_TWIN_GET);
    assert_true(th_slice_eq_str(t.rid, "get_twin"));
}

static void test_th_topic_parse_twin_get_encoded_rid_key_succeeds(void **state)
{
    (void)state;
    struct th_topic t;
    assert_int_equal(parse_topic("$iothub/twin/GET/?%24rid=3", &t), TH_OK);
    assert_int_equal(t.kind, TH_TOPIC_TWIN_GET);
    assert_true(th_slice_eq_str(t.rid, "3"));
}

static void test_th_topic_parse_twin_patch_reported_succeeds(void **state)
{
    (void)state;
    struct th_topic t;
    assert_int_equal(parse_topic("$iothub/twin/PATCH/properties/reported/?$rid=4&$version=9", &t),
                     TH_OK);
    assert_int_equal(t.kind, TH_TOPIC_TWIN_PATCH_REPORTED);
    assert_true(th_slice_eq_str(t.rid, "4"));
    assert_true(th_slice_eq_str(t.version, "9"));
    long long v = 0;
    assert_int_equal(th_topic_version_value(t.version, &v), TH_OK);
    assert_int_equal(v, 9);
    /* Without $version nothing is set; "%24version" is the encoded key. */
    assert_int_equal(parse_topic("$iothub/twin/PATCH/properties/reported/?$rid=5", &t), TH_OK);
    assert_null(t.version.ptr);
    assert_int_equal(
        parse_topic("$iothub/twin/PATCH/properties/reported/?%24version=12&%24rid=5", &t), TH_OK);
    assert_true(th_slice_eq_str(t.version, "12"));
    /* GET topics carry no version. */
    assert_int_equal(parse_topic("$iothub/twin/GET/?$rid=1&$version=3", &t), TH_OK);
    assert_null(t.version.ptr);
}

static void test_th_topic_version_value_integers_succeeds(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        long long want;
    } ok[] = {
        {"0", 0}, {"2", 2}, {"007", 7}, {"-3", -3}, {"999999999999999999", 999999999999999999LL}};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        struct th_slice s = {ok[i].text, strlen(ok[i].text)};
        long long v = -99;
        assert_int_equal(th_topic_version_value(s, &v), TH_OK);
        assert_true(v == ok[i].want);
    }
}

static void test_th_topic_version_value_not_integer_fails(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "", "-", "abc", "1.5", "1e3", "+1", " 1", "null", "1234567890123456789", "2%20"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct th_slice s = {bad[i], strlen(bad[i])};
        long long v = 0;
        assert_int_equal(th_topic_version_value(s, &v), TH_ERR_INVAL);
    }
    struct th_slice none = {NULL, 0};
    long long v = 0;
    assert_int_equal(th_topic_version_value(none, &v), TH_ERR_INVAL);
}

static void test_th_topic_parse_twin_get_without_rid_fails(void **state)
{
    (void)state;
    struct th_topic t;
    assert_int_equal(parse_topic("$iothub/twin/GET/", &t), TH_ERR_INVAL);
    assert_int_equal(t.kind, TH_TOPIC_TWIN_GET);
    assert_int_equal(parse_topic("$iothub/twin/GET/?$rid=", &t), TH_ERR_INVAL);
    assert_int_equal(parse_topic("$iothub/twin/GET/?foo=1", &t), TH_ERR_INVAL);
    assert_int_equal(t.kind, TH_TOPIC_TWIN_GET);
}

static void test_th_topic_parse_method_response_succeeds(void **state)
{
    (void)state;
    struct th_topic t;
    assert_int_equal(parse_topic("$iothub/methods/res/404/?$rid=42", &t), TH_OK);
    assert_int_equal(t.kind, TH_TOPIC_METHOD_RESPONSE);
    assert_true(t.status_ok);
    assert_int_equal(t.status, 404);
    assert_true(th_slice_eq_str(t.status_text, "404"));
    assert_true(th_slice_eq_str(t.rid, "42"));
}

/* The full C SDK answers an unknown method with -1 (%d); the service carries an int32. */
static void test_th_topic_parse_method_response_int32_range_succeeds(void **state)
{
    (void)state;
    struct th_topic t;
    assert_int_equal(parse_topic("$iothub/methods/res/-1/?$rid=2", &t), TH_OK);
    assert_true(t.status_ok);
    assert_int_equal(t.status, -1);
    assert_int_equal(parse_topic("$iothub/methods/res/2147483647/?$rid=2", &t), TH_OK);
    assert_true(t.status_ok);
    assert_int_equal(t.status, INT32_MAX);
    assert_int_equal(parse_topic("$iothub/methods/res/-2147483648/?$rid=2", &t), TH_OK);
    assert_true(t.status_ok);
    assert_int_equal(t.status, INT32_MIN);
    assert_int_equal(parse_topic("$iothub/methods/res/0/?$rid=2", &t), TH_OK);
    assert_true(t.status_ok);
    assert_int_equal(t.status, 0);
}

/* A status that is no int32 still names a method response: the caller fails that call only. */
static void test_th_topic_parse_method_response_bad_status_succeeds(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "abc", "",  "2147483648", "-2147483649", "99999999999999999999",
        "+1",  "-", "1.5",        "1e3",         " 1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char topic[96];
        snprintf(topic, sizeof topic, "$iothub/methods/res/%s/?$rid=42", bad[i]);
        struct th_topic t;
        assert_int_equal(parse_topic(topic, &t), TH_OK);
        assert_int_equal(t.kind, TH_TOPIC_METHOD_RESPONSE);
        assert_false(t.status_ok);
        assert_true(th_slice_eq_str(t.status_text, bad[i]));
        assert_true(th_slice_eq_str(t.rid, "42"));
    }
}

static void test_th_topic_parse_method_response_without_rid_fails(void **state)
{
    (void)state;
    struct th_topic t;
    assert_int_equal(parse_topic("$iothub/methods/res/200/?x=1", &t), TH_ERR_INVAL);
    assert_int_equal(t.kind, TH_TOPIC_METHOD_RESPONSE);
    assert_int_equal(parse_topic("$iothub/methods/res/abc", &t), TH_ERR_INVAL);
    assert_int_equal(t.kind, TH_TOPIC_METHOD_RESPONSE);
}

static void test_th_method_status_parse_bounds_succeeds(void **state)
{
    (void)state;
    int32_t v = 7;
    assert_true(th_method_status_parse("-0", 2, &v));
    assert_int_equal(v, 0);
    assert_true(th_method_status_parse("00200", 5, &v));
    assert_int_equal(v, 200);
    assert_true(th_method_status_parse("-2147483648", 11, &v));
    assert_int_equal(v, INT32_MIN);
}

static void test_th_method_status_parse_out_of_range_fails(void **state)
{
    (void)state;
    int32_t v = 7;
    assert_false(th_method_status_parse("2147483648", 10, &v));
    assert_false(th_method_status_parse("-2147483649", 11, &v));
    assert_false(th_method_status_parse("-", 1, &v));
    assert_false(th_method_status_parse(NULL, 0, &v));
    assert_false(th_method_status_parse("12", 0, &v));
    assert_int_equal(v, 7); /* untouched on failure */
}

static void test_th_topic_parse_unknown_fails(void **state)
{
    (void)state;
    struct th_topic t;
    assert_int_equal(parse_topic("foo/bar", &t), TH_ERR_INVAL);
    assert_int_equal(t.kind, TH_TOPIC_UNKNOWN);
    assert_int_equal(parse_topic("$iothub/twin/GETX/?$rid=1", &t), TH_ERR_INVAL);
    assert_int_equal(t.kind, TH_TOPIC_UNKNOWN);
    assert_int_equal(parse_topic("$iothub/credentials/POST/issueCertificate/?$rid=1", &t),
                     TH_ERR_INVAL);
    assert_int_equal(parse_topic("", &t), TH_ERR_INVAL);
}

/* ---- subscription filters ---- */

static void test_th_sub_classify_device_filters_succeeds(void **state)
{
    (void)state;
    assert_int_equal(th_sub_classify("$iothub/twin/res/#", "dev1", NULL), TH_SUB_TWIN_RES);
    assert_int_equal(th_sub_classify("$iothub/twin/PATCH/properties/desired/#", "dev1", NULL),
                     TH_SUB_DESIRED);
    assert_int_equal(th_sub_classify("$iothub/methods/POST/#", "dev1", NULL), TH_SUB_METHODS);
    assert_int_equal(th_sub_classify("$iothub/methods/POST/reboot/#", "dev1", NULL),
                     TH_SUB_METHODS);
    assert_int_equal(th_sub_classify("devices/dev1/messages/devicebound/#", "dev1", NULL),
                     TH_SUB_C2D);
}

static void test_th_sub_classify_c2d_plus_wildcard_succeeds(void **state)
{
    (void)state;
    /* azure-sdk-for-c's AZ_IOT_HUB_CLIENT_C2D_SUBSCRIBE_TOPIC */
    assert_int_equal(th_sub_classify("devices/+/messages/devicebound/#", "cdev1", NULL),
                     TH_SUB_C2D);
}

static void test_th_sub_classify_module_filters_succeeds(void **state)
{
    (void)state;
    assert_int_equal(th_sub_classify("devices/dev1/modules/mod1/#", "dev1", "mod1"),
                     TH_SUB_MODULE_INPUTS);
    assert_int_equal(th_sub_classify("devices/dev1/modules/mod1/inputs/#", "dev1", "mod1"),
                     TH_SUB_MODULE_INPUTS);
    assert_int_equal(th_sub_classify("$iothub/twin/res/#", "dev1", "mod1"), TH_SUB_TWIN_RES);
    assert_int_equal(th_sub_classify("$iothub/methods/POST/#", "dev1", "mod1"), TH_SUB_METHODS);
}

static void test_th_sub_classify_other_device_fails(void **state)
{
    (void)state;
    assert_int_equal(th_sub_classify("devices/other/messages/devicebound/#", "dev1", NULL),
                     TH_SUB_DENIED);
    assert_int_equal(th_sub_classify("devices/dev10/messages/devicebound/#", "dev1", NULL),
                     TH_SUB_DENIED);
    assert_int_equal(th_sub_classify("devices/dev/messages/devicebound/#", "dev1", NULL),
                     TH_SUB_DENIED);
}

static void test_th_sub_classify_wildcards_fails(void **state)
{
    (void)state;
    assert_int_equal(th_sub_classify("#", "dev1", NULL), TH_SUB_DENIED);
    assert_int_equal(th_sub_classify("+", "dev1", NULL), TH_SUB_DENIED);
    assert_int_equal(th_sub_classify("$iothub/#", "dev1", NULL), TH_SUB_DENIED);
    assert_int_equal(th_sub_classify("$iothub/twin/#", "dev1", NULL), TH_SUB_DENIED);
    assert_int_equal(th_sub_classify("devices/+/messages/events/#", "dev1", NULL), TH_SUB_DENIED);
    assert_int_equal(th_sub_classify("devices/dev1/messages/events/#", "dev1", NULL),
                     TH_SUB_DENIED);
    assert_int_equal(th_sub_classify("devices/#", "dev1", NULL), TH_SUB_DENIED);
    assert_int_equal(th_sub_classify("devices/dev1/#", "dev1", NULL), TH_SUB_DENIED);
    assert_int_equal(th_sub_classify("$iothub/methods/POST/+/#", "dev1", NULL), TH_SUB_DENIED);
    assert_int_equal(th_sub_classify("$iothub/methods/POST/a/b/#", "dev1", NULL), TH_SUB_DENIED);
}

static void test_th_sub_classify_module_c2d_fails(void **state)
{
    (void)state;
    /* Modules do not receive C2D (iothub-protocol.md 5.5). */
    assert_int_equal(th_sub_classify("devices/dev1/messages/devicebound/#", "dev1", "mod1"),
                     TH_SUB_DENIED);
    assert_int_equal(th_sub_classify("devices/+/messages/devicebound/#", "dev1", "mod1"),
                     TH_SUB_DENIED);
}

static void test_th_sub_classify_other_module_fails(void **state)
{
    (void)state;
    assert_int_equal(th_sub_classify("devices/dev1/modules/mod2/#", "dev1", "mod1"), TH_SUB_DENIED);
    assert_int_equal(th_sub_classify("devices/dev2/modules/mod1/#", "dev1", "mod1"), TH_SUB_DENIED);
    assert_int_equal(th_sub_classify("devices/dev1/modules/+/#", "dev1", "mod1"), TH_SUB_DENIED);
    /* a device may not subscribe to its modules' inputs */
    assert_int_equal(th_sub_classify("devices/dev1/modules/mod1/#", "dev1", NULL), TH_SUB_DENIED);
}

/* ---- property bags ---- */

static void test_th_props_parse_node_bag_succeeds(void **state)
{
    (void)state;
    struct th_props p;
    assert_int_equal(parse_bag("%24.mid=mid-1&%24.ct=application%2Fjson&%24.ce=utf-8&alert=high"
                               "%20temp",
                               &p),
                     TH_OK);
    assert_int_equal(p.count, 4);
    assert_string_equal(p.items[0].name, "$.mid");
    assert_string_equal(th_props_get(&p, "$.mid"), "mid-1");
    assert_string_equal(th_props_get(&p, "$.ct"), "application/json");
    assert_string_equal(th_props_get(&p, "$.ce"), "utf-8");
    assert_string_equal(th_props_get(&p, "alert"), "high temp");
    assert_null(th_props_get(&p, "missing"));
    th_props_free(&p);
    assert_null(p.items);
    assert_int_equal(p.count, 0);
}

static void test_th_props_parse_lower_case_escapes_succeeds(void **state)
{
    (void)state;
    struct th_props p;
    assert_int_equal(parse_bag("%24.ct=application%2fjson&%24.ce=utf8", &p), TH_OK);
    assert_string_equal(th_props_get(&p, "$.ct"), "application/json");
    assert_string_equal(th_props_get(&p, "$.ce"), "utf8");
    th_props_free(&p);
}

static void test_th_props_parse_literal_dollar_and_question_succeeds(void **state)
{
    (void)state;
    struct th_props p;
    assert_int_equal(parse_bag("?$.ct=application%2Fjson%3Bcharset%3Dutf-8", &p), TH_OK);
    assert_int_equal(p.count, 1);
    assert_string_equal(th_props_get(&p, "$.ct"), "application/json;charset=utf-8");
    th_props_free(&p);
}

static void test_th_props_parse_valueless_keys_succeeds(void **state)
{
    (void)state;
    struct th_props p;
    assert_int_equal(parse_bag("prop1&prop2=&prop3=a%20string", &p), TH_OK);
    assert_int_equal(p.count, 3);
    assert_string_equal(p.items[0].name, "prop1");
    assert_null(p.items[0].value);
    assert_null(th_props_get(&p, "prop1"));
    assert_string_equal(p.items[1].value, "");
    assert_string_equal(th_props_get(&p, "prop3"), "a string");
    th_props_free(&p);
}

static void test_th_props_parse_plus_kept_succeeds(void **state)
{
    (void)state;
    struct th_props p;
    assert_int_equal(parse_bag("k=a+b%2Bc", &p), TH_OK);
    assert_string_equal(th_props_get(&p, "k"), "a+b+c");
    th_props_free(&p);
}

static void test_th_props_parse_empty_items_skipped_succeeds(void **state)
{
    (void)state;
    struct th_props p;
    assert_int_equal(parse_bag("a=1&&b=2&", &p), TH_OK);
    assert_int_equal(p.count, 2);
    assert_string_equal(th_props_get(&p, "b"), "2");
    th_props_free(&p);
    assert_int_equal(parse_bag("", &p), TH_OK);
    assert_int_equal(p.count, 0);
    th_props_free(&p);
}

static void test_th_props_parse_value_with_equals_succeeds(void **state)
{
    (void)state;
    struct th_props p;
    assert_int_equal(parse_bag("k=a=b", &p), TH_OK);
    assert_string_equal(th_props_get(&p, "k"), "a=b");
    th_props_free(&p);
}

static void test_th_props_parse_broken_escape_fails(void **state)
{
    (void)state;
    struct th_props p = {NULL, 0};
    assert_int_equal(parse_bag("a=1&b=%2", &p), TH_ERR_FORMAT);
    assert_null(p.items);
    assert_int_equal(p.count, 0);
    assert_int_equal(parse_bag("a=%zz", &p), TH_ERR_FORMAT);
    assert_int_equal(parse_bag("a%G=1", &p), TH_ERR_FORMAT);
}

static void test_th_props_parse_empty_name_fails(void **state)
{
    (void)state;
    struct th_props p = {NULL, 0};
    assert_int_equal(parse_bag("a=1&=2", &p), TH_ERR_FORMAT);
    assert_int_equal(p.count, 0);
}

static void test_th_props_parse_encoded_nul_fails(void **state)
{
    (void)state;
    struct th_props p = {NULL, 0};
    assert_int_equal(parse_bag("a=x%00y", &p), TH_ERR_FORMAT);
    assert_int_equal(parse_bag("%00=1", &p), TH_ERR_FORMAT);
}

static void test_th_props_add_and_encode_succeeds(void **state)
{
    (void)state;
    struct th_props p = {NULL, 0};
    assert_int_equal(th_props_add(&p, "$.mid", "84c08717"), TH_OK);
    assert_int_equal(th_props_add(&p, "$.to", "/devices/my-device-1/messages/devicebound"), TH_OK);
    assert_int_equal(th_props_add(&p, "iothub-ack", "full"), TH_OK);
    assert_int_equal(th_props_add(&p, "prop1", NULL), TH_OK);
    assert_int_equal(th_props_add(&p, "prop2", ""), TH_OK);
    assert_int_equal(th_props_add(&p, "prop3", "a string"), TH_OK);
    char out[256];
    size_t n = 0;
    assert_int_equal(th_props_encode(&p, out, sizeof(out), &n), TH_OK);
    const char *want = "%24.mid=84c08717&%24.to=%2Fdevices%2Fmy-device-1%2Fmessages%2Fdevicebound"
                       "&iothub-ack=full&prop1&prop2=&prop3=a%20string";
    assert_string_equal(out, want);
    assert_int_equal(n, strlen(want));

    struct th_props back;
    assert_int_equal(th_props_parse(out, n, &back), TH_OK);
    assert_int_equal(back.count, 6);
    assert_string_equal(th_props_get(&back, "$.to"), "/devices/my-device-1/messages/devicebound");
    assert_null(back.items[3].value);
    th_props_free(&back);
    th_props_free(&p);
}

static void test_th_props_add_empty_name_fails(void **state)
{
    (void)state;
    struct th_props p = {NULL, 0};
    assert_int_equal(th_props_add(&p, "", "x"), TH_ERR_INVAL);
    assert_int_equal(th_props_add(&p, NULL, "x"), TH_ERR_INVAL);
    assert_int_equal(p.count, 0);
}

static void test_th_props_encode_empty_succeeds(void **state)
{
    (void)state;
    struct th_props p = {NULL, 0};
    char out[4] = "xyz";
    size_t n = 9;
    assert_int_equal(th_props_encode(&p, out, sizeof(out), &n), TH_OK);
    assert_string_equal(out, "");
    assert_int_equal(n, 0);
}

static void test_th_props_encode_buffer_too_small_fails(void **state)
{
    (void)state;
    struct th_props p = {NULL, 0};
    assert_int_equal(th_props_add(&p, "$.mid", "1"), TH_OK);
    assert_int_equal(th_props_add(&p, "k", "v"), TH_OK);
    /* "%24.mid=1&k=v" is 13 bytes, 14 with the NUL */
    char out[14];
    size_t n = 0;
    for (size_t size = 1; size < sizeof(out); size++) {
        memset(out, 'x', sizeof(out));
        assert_int_equal(th_props_encode(&p, out, size, &n), TH_ERR_BUFFER);
        assert_int_equal(out[0], '\0');
    }
    assert_int_equal(th_props_encode(&p, out, sizeof(out), &n), TH_OK);
    assert_string_equal(out, "%24.mid=1&k=v");
    th_props_free(&p);
}

static void test_th_props_free_null_succeeds(void **state)
{
    (void)state;
    th_props_free(NULL);
    struct th_props p = {NULL, 0};
    th_props_free(&p);
    assert_null(p.items);
}

/* ---- hub topics ---- */

static void test_th_topic_twin_response_with_version_succeeds(void **state)
{
    (void)state;
    char out[128];
    assert_int_equal(th_topic_twin_response(204, th_slice_of("reported_prop"), 2, out, sizeof(out)),
                     TH_OK);
    assert_string_equal(out, "$iothub/twin/res/204/?$rid=reported_prop&$version=2");
}

static void test_th_topic_twin_response_without_version_succeeds(void **state)
{
    (void)state;
    char out[128];
    struct th_slice rid = {"get_twinXXX", 8};
    assert_int_equal(th_topic_twin_response(200, rid, -1, out, sizeof(out)), TH_OK);
    assert_string_equal(out, "$iothub/twin/res/200/?$rid=get_twin");
}

static void test_th_topic_twin_response_buffer_too_small_fails(void **state)
{
    (void)state;
    const char *want = "$iothub/twin/res/200/?$rid=1";
    char out[64];
    memset(out, 'x', sizeof(out));
    assert_int_equal(th_topic_twin_response(200, th_slice_of("1"), -1, out, strlen(want)),
                     TH_ERR_BUFFER);
    assert_int_equal(out[0], '\0');
    assert_int_equal(out[1], 'x');
    assert_int_equal(th_topic_twin_response(200, th_slice_of("1"), -1, out, strlen(want) + 1),
                     TH_OK);
    assert_string_equal(out, want);
}

static void test_th_topic_desired_succeeds(void **state)
{
    (void)state;
    char out[128];
    assert_int_equal(th_topic_desired(8, out, sizeof(out)), TH_OK);
    assert_string_equal(out, "$iothub/twin/PATCH/properties/desired/?$version=8");
}

static void test_th_topic_desired_buffer_too_small_fails(void **state)
{
    (void)state;
    char out[10];
    assert_int_equal(th_topic_desired(8, out, sizeof(out)), TH_ERR_BUFFER);
    assert_string_equal(out, "");
}

static void test_th_topic_method_request_succeeds(void **state)
{
    (void)state;
    char out[128];
    assert_int_equal(th_topic_method_request("reboot", "42", out, sizeof(out)), TH_OK);
    assert_string_equal(out, "$iothub/methods/POST/reboot/?$rid=42");
}

static void test_th_topic_method_request_buffer_too_small_fails(void **state)
{
    (void)state;
    char out[20];
    assert_int_equal(th_topic_method_request("reboot", "42", out, sizeof(out)), TH_ERR_BUFFER);
    assert_string_equal(out, "");
}

static void test_th_topic_c2d_with_bag_succeeds(void **state)
{
    (void)state;
    char out[256];
    assert_int_equal(th_topic_c2d("my-device-1", "%24.mid=1&iothub-ack=none", out, sizeof(out)),
                     TH_OK);
    assert_string_equal(out, "devices/my-device-1/messages/devicebound/%24.mid=1&iothub-ack=none");
}

static void test_th_topic_c2d_empty_bag_succeeds(void **state)
{
    (void)state;
    char out[64];
    assert_int_equal(th_topic_c2d("d1", "", out, sizeof(out)), TH_OK);
    assert_string_equal(out, "devices/d1/messages/devicebound/");
    assert_int_equal(th_topic_c2d("d1", NULL, out, sizeof(out)), TH_OK);
    assert_string_equal(out, "devices/d1/messages/devicebound/");
}

/* Found by fuzz_control: '+' and '#' of a device id went out raw, an invalid MQTT topic name. */
static void test_th_topic_c2d_wildcards_in_id_encoded_succeeds(void **state)
{
    (void)state;
    char out[128];
    assert_int_equal(th_topic_c2d("a#b+c", "%24.mid=1", out, sizeof(out)), TH_OK);
    assert_string_equal(out, "devices/a%23b%2Bc/messages/devicebound/%24.mid=1");
    assert_null(strpbrk(out, "+#"));
    /* the longest id, all wildcards, still fits its own buffer */
    char id[TH_MAX_ID_LEN + 1], big[512];
    memset(id, '#', TH_MAX_ID_LEN);
    id[TH_MAX_ID_LEN] = '\0';
    assert_int_equal(th_topic_c2d(id, "", big, sizeof(big)), TH_OK);
    assert_int_equal(strlen(big), strlen("devices//messages/devicebound/") + 3 * TH_MAX_ID_LEN);
    assert_int_equal(th_topic_c2d(id, "", out, sizeof(out)), TH_ERR_BUFFER);
    assert_string_equal(out, "");
}

static void test_th_topic_c2d_buffer_too_small_fails(void **state)
{
    (void)state;
    char out[32];
    assert_int_equal(th_topic_c2d("d1", "", out, sizeof(out)), TH_ERR_BUFFER);
    assert_string_equal(out, "");
}

/* ---- method names ---- */

static void test_th_method_name_valid_names_succeeds(void **state)
{
    (void)state;
    assert_true(th_method_name_valid("reboot"));
    assert_true(th_method_name_valid("get-Max_Min.Report"));
    assert_true(th_method_name_valid("thermostat*getMaxMinReport"));
}

static void test_th_method_name_valid_reserved_fails(void **state)
{
    (void)state;
    assert_false(th_method_name_valid(""));
    assert_false(th_method_name_valid(NULL));
    assert_false(th_method_name_valid("a b"));
    assert_false(th_method_name_valid("a\tb"));
    assert_false(th_method_name_valid("a/b"));
    assert_false(th_method_name_valid("$edge"));
    assert_false(th_method_name_valid("a?b"));
    assert_false(th_method_name_valid("a=b"));
    assert_false(th_method_name_valid("a:b"));
    assert_false(th_method_name_valid("a{b}"));
    assert_false(th_method_name_valid("a#b"));
    assert_false(th_method_name_valid("a+b"));
    assert_false(th_method_name_valid("caf\xc3\xa9"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_th_username_parse_node_device_succeeds),
        cmocka_unit_test(test_th_username_parse_embedded_c_succeeds),
        cmocka_unit_test(test_th_username_parse_full_c_model_id_succeeds),
        cmocka_unit_test(test_th_username_parse_node_module_succeeds),
        cmocka_unit_test(test_th_username_parse_host_with_port_succeeds),
        cmocka_unit_test(test_th_username_parse_legacy_api_version_succeeds),
        cmocka_unit_test(test_th_username_parse_legacy_bare_device_succeeds),
        cmocka_unit_test(test_th_username_parse_legacy_bare_module_succeeds),
        cmocka_unit_test(test_th_username_parse_unknown_keys_ignored_succeeds),
        cmocka_unit_test(test_th_username_parse_missing_device_fails),
        cmocka_unit_test(test_th_username_parse_too_many_segments_fails),
        cmocka_unit_test(test_th_username_parse_invalid_id_fails),
        cmocka_unit_test(test_th_id_valid_allowed_chars_succeeds),
        cmocka_unit_test(test_th_id_valid_bad_chars_fails),
        cmocka_unit_test(test_th_topic_parse_telemetry_no_props_succeeds),
        cmocka_unit_test(test_th_topic_parse_telemetry_no_trailing_slash_succeeds),
        cmocka_unit_test(test_th_topic_parse_telemetry_node_props_succeeds),
        cmocka_unit_test(test_th_topic_parse_telemetry_leading_question_mark_succeeds),
        cmocka_unit_test(test_th_topic_parse_telemetry_module_trailing_slash_succeeds),
        cmocka_unit_test(test_th_topic_parse_telemetry_module_no_props_succeeds),
        cmocka_unit_test(test_th_topic_parse_telemetry_wrong_suffix_fails),
        cmocka_unit_test(test_th_topic_parse_twin_get_succeeds),
        cmocka_unit_test(test_th_topic_parse_twin_get_encoded_rid_key_succeeds),
        cmocka_unit_test(test_th_topic_parse_twin_patch_reported_succeeds),
        cmocka_unit_test(test_th_topic_version_value_integers_succeeds),
        cmocka_unit_test(test_th_topic_version_value_not_integer_fails),
        cmocka_unit_test(test_th_topic_parse_twin_get_without_rid_fails),
        cmocka_unit_test(test_th_topic_parse_method_response_succeeds),
        cmocka_unit_test(test_th_topic_parse_method_response_int32_range_succeeds),
        cmocka_unit_test(test_th_topic_parse_method_response_bad_status_succeeds),
        cmocka_unit_test(test_th_topic_parse_method_response_without_rid_fails),
        cmocka_unit_test(test_th_method_status_parse_bounds_succeeds),
        cmocka_unit_test(test_th_method_status_parse_out_of_range_fails),
        cmocka_unit_test(test_th_topic_parse_unknown_fails),
        cmocka_unit_test(test_th_sub_classify_device_filters_succeeds),
        cmocka_unit_test(test_th_sub_classify_c2d_plus_wildcard_succeeds),
        cmocka_unit_test(test_th_sub_classify_module_filters_succeeds),
        cmocka_unit_test(test_th_sub_classify_other_device_fails),
        cmocka_unit_test(test_th_sub_classify_wildcards_fails),
        cmocka_unit_test(test_th_sub_classify_module_c2d_fails),
        cmocka_unit_test(test_th_sub_classify_other_module_fails),
        cmocka_unit_test(test_th_props_parse_node_bag_succeeds),
        cmocka_unit_test(test_th_props_parse_lower_case_escapes_succeeds),
        cmocka_unit_test(test_th_props_parse_literal_dollar_and_question_succeeds),
        cmocka_unit_test(test_th_props_parse_valueless_keys_succeeds),
        cmocka_unit_test(test_th_props_parse_plus_kept_succeeds),
        cmocka_unit_test(test_th_props_parse_empty_items_skipped_succeeds),
        cmocka_unit_test(test_th_props_parse_value_with_equals_succeeds),
        cmocka_unit_test(test_th_props_parse_broken_escape_fails),
        cmocka_unit_test(test_th_props_parse_empty_name_fails),
        cmocka_unit_test(test_th_props_parse_encoded_nul_fails),
        cmocka_unit_test(test_th_props_add_and_encode_succeeds),
        cmocka_unit_test(test_th_props_add_empty_name_fails),
        cmocka_unit_test(test_th_props_encode_empty_succeeds),
        cmocka_unit_test(test_th_props_encode_buffer_too_small_fails),
        cmocka_unit_test(test_th_props_free_null_succeeds),
        cmocka_unit_test(test_th_topic_twin_response_with_version_succeeds),
        cmocka_unit_test(test_th_topic_twin_response_without_version_succeeds),
        cmocka_unit_test(test_th_topic_twin_response_buffer_too_small_fails),
        cmocka_unit_test(test_th_topic_desired_succeeds),
        cmocka_unit_test(test_th_topic_desired_buffer_too_small_fails),
        cmocka_unit_test(test_th_topic_method_request_succeeds),
        cmocka_unit_test(test_th_topic_method_request_buffer_too_small_fails),
        cmocka_unit_test(test_th_topic_c2d_with_bag_succeeds),
        cmocka_unit_test(test_th_topic_c2d_empty_bag_succeeds),
        cmocka_unit_test(test_th_topic_c2d_wildcards_in_id_encoded_succeeds),
        cmocka_unit_test(test_th_topic_c2d_buffer_too_small_fails),
        cmocka_unit_test(test_th_method_name_valid_names_succeeds),
        cmocka_unit_test(test_th_method_name_valid_reserved_fails),
    };
    return cmocka_run_group_tests_name("topic", tests, NULL, NULL);
}
