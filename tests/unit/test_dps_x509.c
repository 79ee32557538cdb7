/*
 * test_dps_x509.c - the provisioning service's client id rewrite
 * (dps_front.h): the client id the TLS front gives a registering device,
 * and which client ids the plugin accepts for a registration id.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "dps_front.h"
#include "topic.h"

#define SDK_USER "0ne00000001/registrations/dev-1/api-version=2019-03-31&ClientVersion=x"

static void test_th_dps_front_client_id_sdk_username_succeeds(void **state)
{
    char out[64];
    size_t n = 0;
    (void)state;
    assert_int_equal(th_dps_front_client_id(SDK_USER, strlen(SDK_USER), out, sizeof out, &n),
                     TH_OK);
    assert_string_equal(out, "~dps/dev-1");
    assert_int_equal(n, strlen("~dps/dev-1"));
    /* Not NUL-terminated input: only `len` bytes are read. */
    char buf[] = SDK_USER "XXXXXXX";
    assert_int_equal(th_dps_front_client_id(buf, strlen(SDK_USER), out, sizeof out, &n), TH_OK);
    assert_string_equal(out, "~dps/dev-1");
}

static void test_th_dps_front_client_id_hub_username_fails(void **state)
{
    char out[64];
    size_t n = 0;
    (void)state;
    const char *hub = "127.0.0.1/dev-1/?api-version=2021-04-12";
    assert_int_equal(th_dps_front_client_id(hub, strlen(hub), out, sizeof out, &n), TH_ERR_INVAL);
    const char *nul = "0ne00000001/registrations/dev-1\0/api-version=1";
    assert_int_equal(th_dps_front_client_id(nul, 46, out, sizeof out, &n), TH_ERR_INVAL);
    assert_int_equal(th_dps_front_client_id(SDK_USER, strlen(SDK_USER), out, 8, &n),
                     TH_ERR_BUFFER);
}

static void test_th_dps_client_id_valid_succeeds(void **state)
{
    (void)state;
    assert_true(th_dps_client_id_valid("dev-1", "dev-1"));
    assert_true(th_dps_client_id_valid("~dps/dev-1", "dev-1"));
}

static void test_th_dps_client_id_valid_other_fails(void **state)
{
    (void)state;
    assert_false(th_dps_client_id_valid("dev-2", "dev-1"));
    assert_false(th_dps_client_id_valid("~dps/dev-2", "dev-1"));
    assert_false(th_dps_client_id_valid("~dps/", "dev-1"));
    assert_false(th_dps_client_id_valid("", "dev-1"));
    assert_false(th_dps_client_id_valid(NULL, "dev-1"));
    assert_false(th_dps_client_id_valid("~dps/", ""));
    /* No device (or module: "{deviceId}/{moduleId}") can hold the prefixed form. */
    assert_false(th_id_valid("~dps", 4));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_th_dps_front_client_id_sdk_username_succeeds),
        cmocka_unit_test(test_th_dps_front_client_id_hub_username_fails),
        cmocka_unit_test(test_th_dps_client_id_valid_succeeds),
        cmocka_unit_test(test_th_dps_client_id_valid_other_fails),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
