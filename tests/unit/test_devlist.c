/*
 * test_devlist.c - unit tests for devlist.c: the dashboard's device list
 * filter (read from a control command, matched against devices) and its
 * summary rows, with the security module's state.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "devlist.h"
#include "json.h"
#include "registry.h"
#include "secconfig.h"
#include "util.h"

#define NOW 1700000000000000LL

static struct th_registry *reg;

static int setup(void **state)
{
    (void)state;
    struct th_error err = {0};
    reg = th_registry_new();
    if (!reg)
        return -1;
    struct th_identity *d;
    if (th_registry_add_device(reg, "thermostat-1", NULL, NULL, true, NOW, &d, &err) != TH_OK ||
        th_registry_add_device(reg, "pump-2", NULL, NULL, false, NOW, NULL, &err) != TH_OK ||
        th_registry_add_module(reg, "pump-2", "EdgeAgent", NULL, NULL, NOW, NULL, &err) != TH_OK)
        return -1;
    th_identity_set_connected(d, true, NOW + 1000000);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    th_registry_free(reg);
    return 0;
}

static cJSON *parse(const char *text)
{
    cJSON *j = cJSON_Parse(text);
    assert_non_null(j);
    return j;
}

static void test_th_devlist_filter_from_json_defaults_succeeds(void **state)
{
    (void)state;
    struct th_devlist_filter f;
    struct th_error err = {0};
    cJSON *cmd = parse("{\"command\":\"listDeviceSummaries\"}");
    assert_int_equal(th_devlist_filter_from_json(cmd, &f, &err), TH_OK);
    assert_null(f.search);
    assert_int_equal(f.enabled, -1);
    assert_int_equal(f.connected, -1);
    assert_int_equal(f.skip, 0);
    assert_int_equal(f.top, TH_DEVLIST_DEFAULT_TOP);
    assert_false(f.security);
    cJSON_Delete(cmd);
}

static void test_th_devlist_filter_from_json_bad_values_fails(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "{\"top\":0}",          "{\"top\":1001}",         "{\"skip\":-1}",
        "{\"skip\":1.5}",       "{\"status\":\"on\"}",    "{\"connectionState\":\"connected\"}",
        "{\"search\":7}",       "{\"security\":\"yes\"}", "{\"moduleId\":[]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct th_devlist_filter f;
        struct th_error err = {0};
        cJSON *cmd = parse(bad[i]);
        assert_int_equal(th_devlist_filter_from_json(cmd, &f, &err), TH_ERR_INVAL);
        assert_int_equal(err.code, TH_EC_ARGUMENT_INVALID);
        cJSON_Delete(cmd);
    }
}

static void test_th_devlist_match_search_and_states_succeeds(void **state)
{
    (void)state;
    struct th_identity *t = th_registry_find(reg, "thermostat-1", NULL);
    struct th_identity *p = th_registry_find(reg, "pump-2", NULL);
    struct th_devlist_filter f = {.enabled = -1, .connected = -1};
    assert_true(th_devlist_match(t, &f));
    f.search = "THERMO"; /* case ignored, anywhere in the id */
    assert_true(th_devlist_match(t, &f));
    assert_false(th_devlist_match(p, &f));
    f.search = "agent"; /* a module id matches its device */
    assert_true(th_devlist_match(p, &f));
    f.search = NULL;
    f.connected = 1;
    assert_true(th_devlist_match(t, &f));
    assert_false(th_devlist_match(p, &f));
    f.connected = -1;
    f.enabled = 0;
    assert_false(th_devlist_match(t, &f));
    assert_true(th_devlist_match(p, &f));
    f.enabled = -1;
    f.module_id = "EdgeAgent";
    assert_false(th_devlist_match(t, &f));
    assert_true(th_devlist_match(p, &f));
    f.module_id = "edgeagent"; /* module ids are case-sensitive */
    assert_false(th_devlist_match(p, &f));
}

static void test_th_devlist_row_fields_succeeds(void **state)
{
    (void)state;
    cJSON *row = th_devlist_row(th_registry_find(reg, "pump-2", NULL), false);
    assert_non_null(row);
    char *text = cJSON_PrintUnformatted(row);
    assert_string_equal(text, "{\"deviceId\":\"pump-2\",\"status\":\"disabled\","
                              "\"connectionState\":\"Disconnected\",\"lastActivityTime\":"
                              "\"0001-01-01T00:00:00Z\",\"connectionStateUpdatedTime\":"
                              "\"0001-01-01T00:00:00Z\",\"cloudToDeviceMessageCount\":0,"
                              "\"iotEdge\":false,\"modules\":[{\"moduleId\":\"EdgeAgent\","
                              "\"connectionState\":\"Disconnected\",\"lastActivityTime\":"
                              "\"0001-01-01T00:00:00Z\"}]}");
    free(text);
    cJSON_Delete(row);
}

static void test_th_devlist_row_security_succeeds(void **state)
{
    (void)state;
    struct th_error err = {0};
    cJSON *row = th_devlist_row(th_registry_find(reg, "thermostat-1", NULL), true);
    assert_false(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetObjectItem(row, "security"), "module")));
    cJSON_Delete(row);
    /* The module with desired configuration and nothing reported yet. */
    cJSON *desired = cJSON_CreateObject();
    assert_true(cJSON_AddItemToObject(desired, TH_SECCONFIG_OBJECT, th_secconfig_defaults()));
    assert_int_equal(th_registry_add_module_with(reg, "thermostat-1", TH_SECCONFIG_MODULE_ID, NULL,
                                                 NULL, NULL, desired, NOW, NULL, &err),
                     TH_OK);
    cJSON_Delete(desired);
    row = th_devlist_row(th_registry_find(reg, "thermostat-1", NULL), true);
    const cJSON *sec = cJSON_GetObjectItem(row, "security");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(sec, "module")));
    assert_string_equal(th_json_string(sec, "connectionState", ""), "Disconnected");
    assert_string_equal(th_json_string(sec, "configuration", ""), "not reported");
    assert_true(cJSON_GetArraySize(cJSON_GetObjectItem(sec, "differences")) > 0);
    cJSON_Delete(row);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_th_devlist_filter_from_json_defaults_succeeds),
        cmocka_unit_test(test_th_devlist_filter_from_json_bad_values_fails),
        cmocka_unit_test(test_th_devlist_match_search_and_states_succeeds),
        cmocka_unit_test(test_th_devlist_row_fields_succeeds),
        cmocka_unit_test(test_th_devlist_row_security_succeeds),
    };
    return cmocka_run_group_tests_name("devlist", tests, setup, teardown);
}
