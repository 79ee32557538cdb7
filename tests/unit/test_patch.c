/*
 * test_patch.c - unit tests for emulator/core/patch.c: IoT Hub's merge patch
 * on plain JSON (nested merge, null deletes, arrays replaced whole, positions
 * kept), allocation failures reported and never leaving broken JSON, and the
 * same result as the twins' tags merge (core/twin.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "json.h"
#include "patch.h"
#include "twin.h"

static cJSON *parse(const char *text)
{
    cJSON *j = cJSON_Parse(text);
    assert_non_null(j);
    return j;
}

/* Merge `patch` into `target` (both JSON text) and compare the printed result with `want`. */
static void check_merge(const char *target, const char *patch, const char *want)
{
    cJSON *t = parse(target), *p = parse(patch);
    assert_int_equal(th_json_merge_patch(t, p), TH_OK);
    char *got = th_json_print(t);
    assert_string_equal(got, want);
    free(got);
    cJSON_Delete(t);
    cJSON_Delete(p);
}

static void test_th_json_merge_patch_nested_objects_merge_succeeds(void **state)
{
    (void)state;
    check_merge("{\"a\":{\"x\":1,\"y\":2},\"b\":3}", "{\"a\":{\"y\":20,\"z\":30}}",
                "{\"a\":{\"x\":1,\"y\":20,\"z\":30},\"b\":3}");
}

static void test_th_json_merge_patch_null_deletes_succeeds(void **state)
{
    (void)state;
    check_merge("{\"a\":1,\"b\":{\"c\":2,\"d\":3}}", "{\"a\":null,\"b\":{\"c\":null}}",
                "{\"b\":{\"d\":3}}");
    /* A null for a member that is not there changes nothing. */
    check_merge("{\"a\":1}", "{\"gone\":null}", "{\"a\":1}");
}

static void test_th_json_merge_patch_object_onto_scalar_starts_empty_succeeds(void **state)
{
    (void)state;
    /* Onto a scalar or a missing member the object starts from {}: its nulls vanish. */
    check_merge("{\"a\":5}", "{\"a\":{\"b\":null,\"c\":{\"d\":null,\"e\":1}}}",
                "{\"a\":{\"c\":{\"e\":1}}}");
    check_merge("{}", "{\"a\":{\"b\":null}}", "{\"a\":{}}");
}

static void test_th_json_merge_patch_arrays_replaced_whole_succeeds(void **state)
{
    (void)state;
    check_merge("{\"a\":[1,2,3],\"b\":{\"c\":1}}", "{\"a\":[{\"x\":null}],\"b\":[4]}",
                "{\"a\":[{\"x\":null}],\"b\":[4]}");
}

static void test_th_json_merge_patch_positions_kept_succeeds(void **state)
{
    (void)state;
    /* Replaced members stay where they were; new ones come last. */
    check_merge("{\"a\":1,\"b\":{\"x\":1},\"c\":3}", "{\"new\":0,\"b\":\"s\",\"a\":true}",
                "{\"a\":true,\"b\":\"s\",\"c\":3,\"new\":0}");
}

static void test_th_json_merge_patch_not_objects_fails(void **state)
{
    (void)state;
    cJSON *t = parse("{\"a\":1}"), *arr = parse("[1]"), *num = parse("2");
    assert_int_equal(th_json_merge_patch(t, arr), TH_ERR_INVAL);
    assert_int_equal(th_json_merge_patch(arr, t), TH_ERR_INVAL);
    assert_int_equal(th_json_merge_patch(t, num), TH_ERR_INVAL);
    assert_int_equal(th_json_merge_patch(t, NULL), TH_ERR_INVAL);
    assert_int_equal(th_json_merge_patch(NULL, t), TH_ERR_INVAL);
    char *text = th_json_print(t);
    assert_string_equal(text, "{\"a\":1}");
    free(text);
    cJSON_Delete(t);
    cJSON_Delete(arr);
    cJSON_Delete(num);
}

/* ---- allocation failures ---- */

static long allocs_left; /* < 0: no limit */

static void *limited_malloc(size_t n)
{
    if (allocs_left == 0)
        return NULL;
    if (allocs_left > 0)
        allocs_left--;
    return malloc(n);
}

static void test_th_json_merge_patch_out_of_memory_fails(void **state)
{
    (void)state;
    static const char target_text[] = "{\"a\":{\"x\":1,\"keep\":[1,2]},\"b\":\"old\",\"c\":3}";
    static const char patch_text[] =
        "{\"a\":{\"x\":{\"deep\":{\"er\":[1,{\"k\":\"v\"}]}},\"keep\":null},\"b\":\"new\","
        "\"d\":{\"e\":null,\"f\":\"g\"},\"c\":null}";
    static const char want[] =
        "{\"a\":{\"x\":{\"deep\":{\"er\":[1,{\"k\":\"v\"}]}}},\"b\":\"new\",\"d\":{\"f\":\"g\"}}";
    cJSON_Hooks hooks = {limited_malloc, free};
    bool saw_nomem = false, saw_ok = false;
    /* Fail the n-th allocation inside the merge, for every n until it no longer fails. */
    for (long n = 0; n < 200 && !saw_ok; n++) {
        cJSON *t = parse(target_text), *p = parse(patch_text);
        allocs_left = n;
        cJSON_InitHooks(&hooks);
        th_result r = th_json_merge_patch(t, p);
        cJSON_InitHooks(NULL);
        allocs_left = -1;
        char *text = th_json_print(t);
        assert_non_null(text);
        /* Whatever was merged is valid JSON: it parses back. */
        cJSON *back = cJSON_Parse(text);
        assert_non_null(back);
        cJSON_Delete(back);
        if (r == TH_OK) {
            assert_string_equal(text, want);
            saw_ok = true;
        } else {
            assert_int_equal(r, TH_ERR_NOMEM);
            saw_nomem = true;
        }
        free(text);
        cJSON_Delete(t);
        cJSON_Delete(p);
    }
    assert_true(saw_nomem);
    assert_true(saw_ok);
}

/* ---- th_json_set_member ---- */

static void test_th_json_set_member_replaces_in_place_succeeds(void **state)
{
    (void)state;
    cJSON *o = parse("{\"a\":1,\"b\":2}");
    assert_int_equal(th_json_set_member(o, "a", cJSON_CreateString("x")), TH_OK);
    assert_int_equal(th_json_set_member(o, "z", cJSON_CreateTrue()), TH_OK);
    char *text = th_json_print(o);
    assert_string_equal(text, "{\"a\":\"x\",\"b\":2,\"z\":true}");
    free(text);
    cJSON_Delete(o);
}

static void test_th_json_set_member_null_item_fails(void **state)
{
    (void)state;
    cJSON *o = parse("{\"a\":1}");
    assert_int_equal(th_json_set_member(o, "a", NULL), TH_ERR_NOMEM);
    assert_int_equal((int)th_json_number(o, "a", 0), 1);
    cJSON_Delete(o);
}

/* ---- the twins' merge ---- */

static void test_th_json_merge_patch_same_as_twin_tags_succeeds(void **state)
{
    (void)state;
    /* Tags are merged without metadata in twin.c: the same rules give the same document. */
    static const char *const patches[] = {
        "{\"a\":{\"x\":1,\"y\":{\"z\":[1,2]}},\"b\":\"s\"}",
        "{\"a\":{\"y\":null,\"w\":{\"v\":null,\"u\":2}},\"c\":{\"d\":null}}",
        "{\"b\":{\"now\":\"object\"},\"a\":5}",
        /* (a null inside an array is refused by the twin rules, so the array holds none) */
        "{\"a\":{\"again\":true},\"c\":null,\"e\":[{\"f\":1}]}",
    };
    struct th_twin *twin = th_twin_new(0);
    cJSON *plain = cJSON_CreateObject();
    assert_non_null(twin);
    assert_non_null(plain);
    for (size_t i = 0; i < sizeof patches / sizeof patches[0]; i++) {
        cJSON *p = parse(patches[i]);
        struct th_error err = {0};
        assert_int_equal(th_twin_patch_tags(twin, p, &err), TH_OK);
        assert_int_equal(th_json_merge_patch(plain, p), TH_OK);
        char *a = th_json_print(twin->tags), *b = th_json_print(plain);
        assert_string_equal(a, b);
        free(a);
        free(b);
        cJSON_Delete(p);
    }
    cJSON_Delete(plain);
    th_twin_free(twin);
}

int main(void)
{
    allocs_left = -1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_th_json_merge_patch_nested_objects_merge_succeeds),
        cmocka_unit_test(test_th_json_merge_patch_null_deletes_succeeds),
        cmocka_unit_test(test_th_json_merge_patch_object_onto_scalar_starts_empty_succeeds),
        cmocka_unit_test(test_th_json_merge_patch_arrays_replaced_whole_succeeds),
        cmocka_unit_test(test_th_json_merge_patch_positions_kept_succeeds),
        cmocka_unit_test(test_th_json_merge_patch_not_objects_fails),
        cmocka_unit_test(test_th_json_merge_patch_out_of_memory_fails),
        cmocka_unit_test(test_th_json_set_member_replaces_in_place_succeeds),
        cmocka_unit_test(test_th_json_set_member_null_item_fails),
        cmocka_unit_test(test_th_json_merge_patch_same_as_twin_tags_succeeds),
    };
    return cmocka_run_group_tests_name("test_patch", tests, NULL, NULL);
}
