/*
 * test_method.c - unit tests for emulator/core/method.c: the caller's result
 * for a device's method answer (empty, JSON, not JSON, too large) and the
 * HTTP body the hub answers with, byte for byte for a body that is not JSON.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "json.h"
#include "method.h"
#include "th_limits.h"

static cJSON *result_of(int32_t status, const char *body, size_t len)
{
    cJSON *data = NULL;
    struct th_error err = {0};
    assert_int_equal(th_method_result(status, body, len, &data, &err), TH_OK);
    assert_non_null(data);
    return data;
}

/* The REST body for `data` as a NUL-terminated string (caller frees). */
static char *rest_body(const cJSON *data, size_t *len)
{
    char *body = th_method_rest_body(data, len);
    assert_non_null(body);
    assert_int_equal(strlen(body), *len);
    return body;
}

static void test_th_method_result_json_body_succeeds(void **state)
{
    (void)state;
    cJSON *data = result_of(201, "{\"result\":\"ok\"}", 15);
    assert_int_equal((int)th_json_number(data, "status", 0), 201);
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(data, "payload");
    assert_true(cJSON_IsObject(p));
    assert_string_equal(th_json_string(p, "result", ""), "ok");
    assert_false(th_method_result_is_raw(data));
    size_t len;
    char *body = rest_body(data, &len);
    assert_string_equal(body, "{\"status\":201,\"payload\":{\"result\":\"ok\"}}");
    free(body);
    cJSON_Delete(data);
}

static void test_th_method_result_empty_body_is_null_succeeds(void **state)
{
    (void)state;
    cJSON *data = result_of(-1, NULL, 0);
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(data, "payload")));
    assert_false(th_method_result_is_raw(data));
    size_t len;
    char *body = rest_body(data, &len);
    assert_string_equal(body, "{\"status\":-1,\"payload\":null}");
    free(body);
    cJSON_Delete(data);
}

static void test_th_method_result_int32_extremes_succeeds(void **state)
{
    (void)state;
    cJSON *data = result_of(INT32_MIN, "1", 1);
    size_t len;
    char *body = rest_body(data, &len);
    assert_string_equal(body, "{\"status\":-2147483648,\"payload\":1}");
    free(body);
    cJSON_Delete(data);
    data = result_of(INT32_MAX, "{ }", 3);
    body = rest_body(data, &len);
    assert_string_equal(body, "{\"status\":2147483647,\"payload\":{}}");
    free(body);
    cJSON_Delete(data);
}

/* JSON holding \u0000 would be cut in a tree: passed on verbatim, whole. */
static void test_th_method_result_json_with_nul_is_raw_succeeds(void **state)
{
    (void)state;
    static const char text[] = "{\"s\":\"a\\u0000b\"}";
    cJSON *data = result_of(200, text, sizeof text - 1);
    assert_true(th_method_result_is_raw(data));
    assert_string_equal(th_json_string(data, "rawPayload", ""), text);
    assert_non_null(strstr(th_json_string(data, "payloadError", ""), "\\u0000"));
    size_t len;
    char *body = rest_body(data, &len);
    assert_string_equal(body, "{\"status\":200,\"payload\":{\"s\":\"a\\u0000b\"}}");
    free(body);
    cJSON_Delete(data);
}

/* The hub copies a body that is not JSON verbatim (Azure/azure-iot-sdk-node#736, PR #448). */
static void test_th_method_result_text_not_json_is_raw_succeeds(void **state)
{
    (void)state;
    static const char text[] = "{'filename': 'logs.zip'}";
    cJSON *data = result_of(200, text, sizeof text - 1);
    assert_true(th_method_result_is_raw(data));
    assert_null(cJSON_GetObjectItemCaseSensitive(data, "payload"));
    assert_string_equal(th_json_string(data, "rawPayload", ""), text);
    assert_non_null(th_json_string(data, "rawPayloadBase64", NULL));
    assert_non_null(strstr(th_json_string(data, "payloadError", ""), "not valid JSON"));
    size_t len;
    char *body = rest_body(data, &len);
    assert_string_equal(body, "{\"status\":200,\"payload\":{'filename': 'logs.zip'}}");
    cJSON *parsed = cJSON_Parse(body);
    assert_null(parsed); /* as on the hub: the answer is no JSON */
    free(body);
    cJSON_Delete(data);
}

static void test_th_method_result_binary_body_is_raw_succeeds(void **state)
{
    (void)state;
    static const char bin[] = {'\xff', '\0', 'a', '\x80'};
    cJSON *data = result_of(500, bin, sizeof bin);
    assert_true(th_method_result_is_raw(data));
    assert_null(cJSON_GetObjectItemCaseSensitive(data, "rawPayload")); /* not text */
    assert_string_equal(th_json_string(data, "rawPayloadBase64", ""), "/wBhgA==");
    size_t len;
    char *body = th_method_rest_body(data, &len);
    assert_non_null(body);
    static const char want[] = "{\"status\":500,\"payload\":\xff\0a\x80}";
    assert_int_equal(len, sizeof want - 1);
    assert_memory_equal(body, want, len);
    free(body);
    cJSON_Delete(data);
}

static void test_th_method_result_whitespace_only_is_raw_succeeds(void **state)
{
    (void)state;
    cJSON *data = result_of(200, "  ", 2);
    assert_true(th_method_result_is_raw(data));
    assert_string_equal(th_json_string(data, "rawPayload", "x"), "  ");
    cJSON_Delete(data);
}

static void test_th_method_result_too_large_fails(void **state)
{
    (void)state;
    size_t n = TH_METHOD_MAX_PAYLOAD_BYTES + 1;
    char *big = malloc(n);
    assert_non_null(big);
    memset(big, ' ', n);
    big[0] = '1';
    cJSON *data = (cJSON *)1;
    struct th_error err = {0};
    assert_int_equal(th_method_result(200, big, n, &data, &err), TH_ERR_TOO_LARGE);
    assert_null(data);
    assert_int_equal(err.code, 413001);
    assert_int_equal(err.status, 413);
    free(big);
}

static void test_th_method_rest_body_without_status_fails(void **state)
{
    (void)state;
    size_t len = 9;
    cJSON *o = cJSON_Parse("{\"payload\":1}");
    assert_null(th_method_rest_body(o, &len));
    assert_int_equal(len, 0);
    cJSON_Delete(o);
    o = cJSON_Parse("{\"status\":1.5,\"payload\":1}");
    assert_null(th_method_rest_body(o, &len));
    cJSON_Delete(o);
    o = cJSON_Parse("{\"status\":1,\"rawPayloadBase64\":\"@@@@\"}");
    assert_null(th_method_rest_body(o, &len));
    cJSON_Delete(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_th_method_result_json_body_succeeds),
        cmocka_unit_test(test_th_method_result_json_with_nul_is_raw_succeeds),
        cmocka_unit_test(test_th_method_result_empty_body_is_null_succeeds),
        cmocka_unit_test(test_th_method_result_int32_extremes_succeeds),
        cmocka_unit_test(test_th_method_result_text_not_json_is_raw_succeeds),
        cmocka_unit_test(test_th_method_result_binary_body_is_raw_succeeds),
        cmocka_unit_test(test_th_method_result_whitespace_only_is_raw_succeeds),
        cmocka_unit_test(test_th_method_result_too_large_fails),
        cmocka_unit_test(test_th_method_rest_body_without_status_fails),
    };
    return cmocka_run_group_tests_name("test_method", tests, NULL, NULL);
}
