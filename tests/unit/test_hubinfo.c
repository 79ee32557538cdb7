/*
 * test_hubinfo.c - unit tests for emulator/core/hubinfo.c: the hub info
 * file's document as `twinhub serve` writes it and as the CLI, `twinhub run
 * --hub` and the integration tests read it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "hubinfo.h"

static struct th_hubinfo sample(void)
{
    struct th_hubinfo i = {0};
    snprintf(i.hub_name, sizeof i.hub_name, "twinhub.localhost");
    snprintf(i.bind, sizeof i.bind, "127.0.0.1");
    i.mqtt_port = 1883;
    i.mqtts_port = 8883;
    i.https_port = 443;
    snprintf(i.ca_file, sizeof i.ca_file, "/home/u/.local/share/twinhub/ca.pem");
    snprintf(i.device_id, sizeof i.device_id, "dev-device");
    snprintf(i.module_id, sizeof i.module_id, "dev-module");
    snprintf(i.device_cs, sizeof i.device_cs,
             "HostName=twinhub.localhost;DeviceId=dev-device;"
             "SharedAccessKey=a2V5;GatewayHostName=127.0.0.1");
    snprintf(i.service_cs, sizeof i.service_cs,
             "HostName=twinhub.localhost;SharedAccessKeyName=iothubowner;SharedAccessKey=b3du");
    snprintf(i.dashboard_url, sizeof i.dashboard_url, "https://127.0.0.1/?token=00ff");
    i.pid = 4242;
    return i;
}

/* ---- th_hubinfo_to_json ---- */

static void test_th_hubinfo_to_json_serve_layout_succeeds(void **state)
{
    (void)state;
    struct th_hubinfo i = sample();
    cJSON *doc = th_hubinfo_to_json(&i);
    assert_non_null(doc);
    char *text = cJSON_PrintUnformatted(doc);
    /* The members in serve's order; "" strings as null. */
    assert_string_equal(
        text, "{\"hubName\":\"twinhub.localhost\",\"bind\":\"127.0.0.1\",\"mqttPort\":1883,"
              "\"mqttsPort\":8883,\"httpsPort\":443,\"restConnectionString\":null,"
              "\"caFile\":\"/home/u/.local/share/twinhub/ca.pem\",\"deviceId\":\"dev-device\","
              "\"moduleId\":\"dev-module\",\"deviceConnectionString\":\"HostName=twinhub."
              "localhost;DeviceId=dev-device;SharedAccessKey=a2V5;GatewayHostName=127.0.0.1\","
              "\"moduleConnectionString\":null,\"serviceConnectionString\":\"HostName=twinhub."
              "localhost;SharedAccessKeyName=iothubowner;SharedAccessKey=b3du\","
              "\"dashboardUrl\":\"https://127.0.0.1/?token=00ff\",\"pid\":4242,"
              "\"idScope\":null,\"provisioningHost\":"
              "null,\"provisioningServiceConnectionString\":null}");
    free(text);
    cJSON_Delete(doc);
}

/* ---- th_hubinfo_from_json ---- */

static void test_th_hubinfo_from_json_round_trip_succeeds(void **state)
{
    (void)state;
    struct th_hubinfo i = sample(), back;
    cJSON *doc = th_hubinfo_to_json(&i);
    struct th_error err = {0};
    assert_int_equal(th_hubinfo_from_json(doc, &back, &err), TH_OK);
    cJSON *again = th_hubinfo_to_json(&back);
    char *a = cJSON_PrintUnformatted(doc), *b = cJSON_PrintUnformatted(again);
    assert_string_equal(a, b);
    assert_int_equal(back.mqtts_port, 8883);
    assert_int_equal(back.pid, 4242);
    free(a);
    free(b);
    cJSON_Delete(again);
    cJSON_Delete(doc);
}

static void test_th_hubinfo_from_json_tls_only_and_nulls_succeeds(void **state)
{
    (void)state;
    cJSON *doc =
        cJSON_Parse("{\"hubName\":\"h\",\"bind\":null,\"mqttPort\":0,\"mqttsPort\":18883,"
                    "\"caFile\":\"/ca.pem\",\"serviceConnectionString\":null,\"pid\":\"x\"}");
    struct th_hubinfo i;
    struct th_error err = {0};
    assert_int_equal(th_hubinfo_from_json(doc, &i, &err), TH_OK);
    assert_string_equal(i.hub_name, "h");
    assert_string_equal(i.bind, "");
    assert_int_equal(i.mqtt_port, 0);
    assert_int_equal(i.mqtts_port, 18883);
    assert_string_equal(i.ca_file, "/ca.pem");
    assert_string_equal(i.service_cs, "");
    assert_int_equal(i.pid, 0);
    cJSON_Delete(doc);
}

static void test_th_hubinfo_from_json_no_hub_name_fails(void **state)
{
    (void)state;
    cJSON *doc = cJSON_Parse("{\"hubName\":7,\"mqttPort\":1883}");
    struct th_hubinfo i;
    struct th_error err = {0};
    assert_int_equal(th_hubinfo_from_json(doc, &i, &err), TH_ERR_INVAL);
    assert_string_equal(err.message, "no hubName or ports");
    cJSON_Delete(doc);
}

static void test_th_hubinfo_from_json_no_ports_fails(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "{\"hubName\":\"h\"}",
        "{\"hubName\":\"h\",\"mqttPort\":0,\"mqttsPort\":0,\"httpsPort\":443}",
        "{\"hubName\":\"h\",\"mqttPort\":70000}",
        "{\"hubName\":\"h\",\"mqttPort\":\"1883\"}",
        "[]",
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        cJSON *doc = cJSON_Parse(bad[k]);
        struct th_hubinfo i;
        struct th_error err = {0};
        assert_int_equal(th_hubinfo_from_json(doc, &i, &err), TH_ERR_INVAL);
        cJSON_Delete(doc);
    }
}

static void test_th_hubinfo_from_json_string_too_long_fails(void **state)
{
    (void)state;
    char big[300];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "hubName", big);
    cJSON_AddNumberToObject(doc, "mqttPort", 1883);
    struct th_hubinfo i;
    struct th_error err = {0};
    assert_int_equal(th_hubinfo_from_json(doc, &i, &err), TH_ERR_TOO_LARGE);
    assert_string_equal(err.message, "its hubName is too long");
    cJSON_Delete(doc);
}

/* ---- th_hubinfo_host ---- */

static void test_th_hubinfo_host_wildcards_are_loopback_succeeds(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"", "127.0.0.1"}, {"0.0.0.0", "127.0.0.1"}, {"::", "::1"},
        {"[::]", "::1"},   {"10.1.2.3", "10.1.2.3"}, {"fe80::1", "fe80::1"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        struct th_hubinfo i = {0};
        snprintf(i.bind, sizeof i.bind, "%s", cases[k][0]);
        char host[64];
        assert_int_equal(th_hubinfo_host(&i, host, sizeof host), TH_OK);
        assert_string_equal(host, cases[k][1]);
    }
}

static void test_th_hubinfo_host_small_buffer_fails(void **state)
{
    (void)state;
    struct th_hubinfo i = {0};
    char host[4];
    assert_int_equal(th_hubinfo_host(&i, host, sizeof host), TH_ERR_BUFFER);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_th_hubinfo_to_json_serve_layout_succeeds),
        cmocka_unit_test(test_th_hubinfo_from_json_round_trip_succeeds),
        cmocka_unit_test(test_th_hubinfo_from_json_tls_only_and_nulls_succeeds),
        cmocka_unit_test(test_th_hubinfo_from_json_no_hub_name_fails),
        cmocka_unit_test(test_th_hubinfo_from_json_no_ports_fails),
        cmocka_unit_test(test_th_hubinfo_from_json_string_too_long_fails),
        cmocka_unit_test(test_th_hubinfo_host_wildcards_are_loopback_succeeds),
        cmocka_unit_test(test_th_hubinfo_host_small_buffer_fails),
    };
    return cmocka_run_group_tests_name("hubinfo", tests, NULL, NULL);
}
