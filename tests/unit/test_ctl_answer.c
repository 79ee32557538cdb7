/*
 * test_ctl_answer.c - th_ctl_ok_entry_text and th_ctl_responses_text
 * (core/ctl_answer.c) give the very bytes th_json_print gives for the trees
 * broker/control.c built for them before, on random command names,
 * correlation data, data items (raw ones included) and response arrays.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ctl_answer.h"
#include "json.h"

static unsigned lcg_next(unsigned *seed)
{
    *seed = *seed * 1103515245u + 12345u;
    return (*seed >> 1) & 0x7fffffffu;
}

static void some_text(unsigned *seed, char out[16])
{
    int n = (int)(lcg_next(seed) % 15);
    for (int i = 0; i < n; i++)
        out[i] = (char)(1 + lcg_next(seed) % 200); /* control bytes, quotes, UTF-8 bytes */
    out[n] = '\0';
}

static cJSON *some_value(unsigned *seed, int depth)
{
    char text[16];
    switch (lcg_next(seed) % (depth < 3 ? 9 : 6)) {
    case 0:
        return cJSON_CreateNull();
    case 1:
        return cJSON_CreateBool(lcg_next(seed) & 1);
    case 2:
        some_text(seed, text);
        return cJSON_CreateString(text);
    case 3:
        return cJSON_CreateNumber((double)lcg_next(seed) / 7.0);
    case 4:
        return cJSON_CreateNumber((double)(lcg_next(seed) % 100000));
    case 5:
        return cJSON_CreateRaw("{\"status\":200,\"etag\":\"AAAAAAAAAAI=\",\"$version\":2}");
    case 6: {
        cJSON *arr = cJSON_CreateArray();
        for (int i = (int)(lcg_next(seed) % 4); i > 0; i--)
            cJSON_AddItemToArray(arr, some_value(seed, depth + 1));
        return arr;
    }
    default: {
        cJSON *obj = cJSON_CreateObject();
        for (int i = (int)(lcg_next(seed) % 4); i > 0; i--) {
            some_text(seed, text);
            cJSON_AddItemToObject(obj, text, some_value(seed, depth + 1));
        }
        return obj;
    }
    }
}

/* The entry as broker/control.c built it (brk_ctl_response_entry plus "data"). */
static cJSON *built_entry(const char *command, const cJSON *corr, const cJSON *data)
{
    cJSON *r = cJSON_CreateObject();
    if (command)
        cJSON_AddStringToObject(r, "command", command);
    else
        cJSON_AddNullToObject(r, "command");
    if (corr)
        cJSON_AddItemToObject(r, "correlationData", cJSON_Duplicate(corr, 1));
    cJSON_AddItemToObject(r, "data", data ? cJSON_Duplicate(data, 1) : cJSON_CreateObject());
    return r;
}

static void test_th_ctl_ok_entry_text_same_bytes_as_built_entry_succeeds(void **state)
{
    (void)state;
    unsigned seed = 99;
    cJSON *responses = cJSON_CreateArray(), *built = cJSON_CreateArray();
    for (int round = 0; round < 3000; round++) {
        char name[16];
        some_text(&seed, name);
        const char *command = lcg_next(&seed) % 10 == 0 ? NULL : name;
        cJSON *corr = lcg_next(&seed) % 3 == 0 ? NULL : some_value(&seed, 1);
        cJSON *data = lcg_next(&seed) % 5 == 0 ? NULL : some_value(&seed, 0);
        char *mine = th_ctl_ok_entry_text(command, corr, data);
        cJSON *entry = built_entry(command, corr, data);
        char *theirs = th_json_print(entry);
        assert_non_null(mine);
        assert_non_null(theirs);
        if (strcmp(mine, theirs) != 0)
            fail_msg("round %d:\n printed %s\n built   %s", round, mine, theirs);
        /* Every 50 entries, the whole answer: raw entries against the built ones. */
        cJSON_AddItemToArray(responses, th_ctl_raw_taking(strdup(mine)));
        cJSON_AddItemToArray(built, entry);
        if (round % 50 == 49) {
            size_t len = 0;
            char *text = th_ctl_responses_text(responses, &len);
            cJSON *root = cJSON_CreateObject();
            cJSON_AddItemToObject(root, "responses", built);
            char *want = th_json_print(root);
            assert_non_null(text);
            assert_non_null(want);
            assert_int_equal(len, strlen(text));
            assert_string_equal(text, want);
            free(text);
            free(want);
            cJSON_Delete(root);
            cJSON_Delete(responses);
            responses = cJSON_CreateArray();
            built = cJSON_CreateArray();
        }
        free(mine);
        free(theirs);
        cJSON_Delete(corr);
        cJSON_Delete(data);
    }
    cJSON_Delete(responses);
    cJSON_Delete(built);
}

static void test_th_ctl_responses_text_without_responses_fails(void **state)
{
    (void)state;
    assert_null(th_ctl_responses_text(NULL, NULL));
}

static void test_th_ctl_raw_taking_prints_the_text_succeeds(void **state)
{
    (void)state;
    cJSON *raw = th_ctl_raw_taking(strdup("{\"a\":[1,2]}"));
    assert_non_null(raw);
    assert_true(cJSON_IsRaw(raw));
    char *text = th_json_print(raw);
    assert_string_equal(text, "{\"a\":[1,2]}");
    free(text);
    cJSON_Delete(raw);
}

static void test_th_ctl_raw_taking_without_text_fails(void **state)
{
    (void)state;
    assert_null(th_ctl_raw_taking(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_th_ctl_ok_entry_text_same_bytes_as_built_entry_succeeds),
        cmocka_unit_test(test_th_ctl_responses_text_without_responses_fails),
        cmocka_unit_test(test_th_ctl_raw_taking_prints_the_text_succeeds),
        cmocka_unit_test(test_th_ctl_raw_taking_without_text_fails),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
