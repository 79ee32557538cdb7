/*
 * test_connstr.c - unit tests for emulator/core/connstr.c: reading a
 * connection string (any order, case-insensitive keys, base64 '='), and
 * building identity and policy strings and GatewayHostName.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "connstr.h"

/* ---- th_connstr_parse ---- */

static void test_th_connstr_parse_service_string_succeeds(void **state)
{
    (void)state;
    struct th_connstr cs;
    struct th_error err = {0};
    assert_int_equal(th_connstr_parse("HostName=twinhub.localhost;SharedAccessKeyName=iothubowner;"
                                      "SharedAccessKey=a2V5LTE=",
                                      &cs, &err),
                     TH_OK);
    assert_string_equal(cs.host_name, "twinhub.localhost");
    assert_string_equal(cs.key_name, "iothubowner");
    assert_string_equal(cs.key, "a2V5LTE=");
    assert_string_equal(cs.device_id, "");
    assert_string_equal(cs.gateway, "");
}

static void test_th_connstr_parse_any_order_and_case_succeeds(void **state)
{
    (void)state;
    struct th_connstr cs;
    struct th_error err = {0};
    assert_int_equal(th_connstr_parse("gatewayhostname=[::1]:8884;SHAREDACCESSKEY=k==;moduleid=m;"
                                      "DeviceId=d;;junk;Other=1;hostname=h",
                                      &cs, &err),
                     TH_OK);
    assert_string_equal(cs.host_name, "h");
    assert_string_equal(cs.device_id, "d");
    assert_string_equal(cs.module_id, "m");
    assert_string_equal(cs.key, "k==");
    assert_string_equal(cs.gateway, "[::1]:8884");
    assert_string_equal(cs.key_name, "");
}

static void test_th_connstr_parse_empty_succeeds(void **state)
{
    (void)state;
    struct th_connstr cs;
    struct th_error err = {0};
    assert_int_equal(th_connstr_parse("", &cs, &err), TH_OK);
    assert_string_equal(cs.host_name, "");
    assert_int_equal(th_connstr_parse(NULL, &cs, &err), TH_OK);
}

static void test_th_connstr_parse_value_too_long_fails(void **state)
{
    (void)state;
    char text[400];
    snprintf(text, sizeof text, "HostName=h;SharedAccessKeyName=%0100d", 0);
    struct th_connstr cs;
    struct th_error err = {0};
    assert_int_equal(th_connstr_parse(text, &cs, &err), TH_ERR_TOO_LARGE);
    assert_string_equal(err.message, "the value of SharedAccessKeyName is too long");
}

/* ---- builders ---- */

static void test_th_connstr_gateway_default_port_succeeds(void **state)
{
    (void)state;
    char gw[64];
    assert_int_equal(th_connstr_gateway("127.0.0.1", 8883, gw, sizeof gw), TH_OK);
    assert_string_equal(gw, "127.0.0.1");
    assert_int_equal(th_connstr_gateway("localhost", 0, gw, sizeof gw), TH_OK);
    assert_string_equal(gw, "localhost");
}

static void test_th_connstr_gateway_other_port_succeeds(void **state)
{
    (void)state;
    char gw[64];
    assert_int_equal(th_connstr_gateway("127.0.0.1", 18883, gw, sizeof gw), TH_OK);
    assert_string_equal(gw, "127.0.0.1:18883");
}

static void test_th_connstr_gateway_ipv6_brackets_succeeds(void **state)
{
    (void)state;
    char gw[64];
    assert_int_equal(th_connstr_gateway("::1", 18883, gw, sizeof gw), TH_OK);
    assert_string_equal(gw, "[::1]:18883");
    assert_int_equal(th_connstr_gateway("::1", 8883, gw, sizeof gw), TH_OK);
    assert_string_equal(gw, "[::1]");
    /* Already bracketed (serve's GatewayHostName host): left as it is. */
    assert_int_equal(th_connstr_gateway("[fe80::1]", 9000, gw, sizeof gw), TH_OK);
    assert_string_equal(gw, "[fe80::1]:9000");
}

static void test_th_connstr_gateway_small_buffer_fails(void **state)
{
    (void)state;
    char gw[8];
    assert_int_equal(th_connstr_gateway("127.0.0.1", 8883, gw, sizeof gw), TH_ERR_BUFFER);
}

static void test_th_connstr_identity_device_succeeds(void **state)
{
    (void)state;
    char cs[256];
    assert_int_equal(th_connstr_identity("twinhub.localhost", "dev-1", NULL, "a2V5",
                                         "127.0.0.1:18883", cs, sizeof cs),
                     TH_OK);
    assert_string_equal(cs, "HostName=twinhub.localhost;DeviceId=dev-1;SharedAccessKey=a2V5;"
                            "GatewayHostName=127.0.0.1:18883");
}

static void test_th_connstr_identity_module_without_gateway_succeeds(void **state)
{
    (void)state;
    char cs[256];
    assert_int_equal(th_connstr_identity("h", "d", "m", "k=", "", cs, sizeof cs), TH_OK);
    assert_string_equal(cs, "HostName=h;DeviceId=d;ModuleId=m;SharedAccessKey=k=");
    assert_int_equal(th_connstr_identity("h", "d", "m", "k=", NULL, cs, sizeof cs), TH_OK);
    assert_string_equal(cs, "HostName=h;DeviceId=d;ModuleId=m;SharedAccessKey=k=");
}

/* A hub dialled at its HostName (serve's default): no GatewayHostName, as agents that read
 * HostName alone need; a port or another address keeps it. */
static void test_th_connstr_identity_gateway_same_as_host_succeeds(void **state)
{
    (void)state;
    char cs[256];
    assert_int_equal(
        th_connstr_identity("127.0.0.1", "d", NULL, "k=", "127.0.0.1", cs, sizeof cs), TH_OK);
    assert_string_equal(cs, "HostName=127.0.0.1;DeviceId=d;SharedAccessKey=k=");
    assert_int_equal(th_connstr_identity("Hub.Example", "d", NULL, "k=", "hub.example", cs,
                                         sizeof cs),
                     TH_OK);
    assert_string_equal(cs, "HostName=Hub.Example;DeviceId=d;SharedAccessKey=k=");
    assert_int_equal(
        th_connstr_identity("127.0.0.1", "d", NULL, "k=", "127.0.0.1:18883", cs, sizeof cs),
        TH_OK);
    assert_string_equal(cs, "HostName=127.0.0.1;DeviceId=d;SharedAccessKey=k=;"
                            "GatewayHostName=127.0.0.1:18883");
}

static void test_th_connstr_identity_round_trip_succeeds(void **state)
{
    (void)state;
    char text[256];
    assert_int_equal(
        th_connstr_identity("h.example", "d", "m", "a2V5LTE=", "[::1]:9", text, sizeof text),
        TH_OK);
    struct th_connstr cs;
    struct th_error err = {0};
    assert_int_equal(th_connstr_parse(text, &cs, &err), TH_OK);
    assert_string_equal(cs.host_name, "h.example");
    assert_string_equal(cs.device_id, "d");
    assert_string_equal(cs.module_id, "m");
    assert_string_equal(cs.key, "a2V5LTE=");
    assert_string_equal(cs.gateway, "[::1]:9");
}

static void test_th_connstr_identity_small_buffer_fails(void **state)
{
    (void)state;
    char cs[32];
    assert_int_equal(
        th_connstr_identity("twinhub.localhost", "dev-1", NULL, "a2V5", NULL, cs, sizeof cs),
        TH_ERR_BUFFER);
}

static void test_th_connstr_service_succeeds(void **state)
{
    (void)state;
    char cs[128];
    assert_int_equal(th_connstr_service("h", "iothubowner", "k=", cs, sizeof cs), TH_OK);
    assert_string_equal(cs, "HostName=h;SharedAccessKeyName=iothubowner;SharedAccessKey=k=");
}

static void test_th_connstr_service_small_buffer_fails(void **state)
{
    (void)state;
    char cs[16];
    assert_int_equal(th_connstr_service("h", "iothubowner", "k=", cs, sizeof cs), TH_ERR_BUFFER);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_th_connstr_parse_service_string_succeeds),
        cmocka_unit_test(test_th_connstr_parse_any_order_and_case_succeeds),
        cmocka_unit_test(test_th_connstr_parse_empty_succeeds),
        cmocka_unit_test(test_th_connstr_parse_value_too_long_fails),
        cmocka_unit_test(test_th_connstr_gateway_default_port_succeeds),
        cmocka_unit_test(test_th_connstr_gateway_other_port_succeeds),
        cmocka_unit_test(test_th_connstr_gateway_ipv6_brackets_succeeds),
        cmocka_unit_test(test_th_connstr_gateway_small_buffer_fails),
        cmocka_unit_test(test_th_connstr_identity_device_succeeds),
        cmocka_unit_test(test_th_connstr_identity_gateway_same_as_host_succeeds),
        cmocka_unit_test(test_th_connstr_identity_module_without_gateway_succeeds),
        cmocka_unit_test(test_th_connstr_identity_round_trip_succeeds),
        cmocka_unit_test(test_th_connstr_identity_small_buffer_fails),
        cmocka_unit_test(test_th_connstr_service_succeeds),
        cmocka_unit_test(test_th_connstr_service_small_buffer_fails),
    };
    return cmocka_run_group_tests_name("connstr", tests, NULL, NULL);
}
