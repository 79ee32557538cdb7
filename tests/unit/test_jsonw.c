/*
 * test_jsonw.c - unit tests for emulator/core/jsonw.c: strings escaped as
 * cJSON 1.7.15 prints them (every byte value, random strings, embedded NUL),
 * integers, the size function, growth and sticky failure.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "jsonw.h"

static unsigned lcg_next(unsigned *seed)
{
    *seed = *seed * 1103515245u + 12345u;
    return (*seed >> 1) & 0x7fffffffu;
}

/* th_jsonw_string of `s` and cJSON's printing of the same string item are the same bytes. */
static void same_as_cjson(const char *s)
{
    struct th_jsonw w = {0};
    th_jsonw_string(&w, s, strlen(s));
    size_t len = 0;
    char *mine = th_jsonw_finish(&w, &len);
    cJSON *item = cJSON_CreateString(s);
    char *theirs = cJSON_PrintUnformatted(item);
    assert_non_null(mine);
    assert_string_equal(mine, theirs);
    assert_int_equal(len, strlen(theirs));
    assert_int_equal(th_jsonw_string_size(s, strlen(s)), len);
    free(mine);
    free(theirs);
    cJSON_Delete(item);
}

static void test_th_jsonw_string_every_byte_same_as_cjson_succeeds(void **state)
{
    (void)state;
    for (int c = 1; c < 256; c++) {
        char s[4] = {'a', (char)c, 'b', 0};
        same_as_cjson(s);
    }
    unsigned seed = 7;
    for (int round = 0; round < 2000; round++) {
        char s[64];
        size_t n = lcg_next(&seed) % sizeof s;
        for (size_t i = 0; i < n; i++)
            s[i] = (char)(1 + lcg_next(&seed) % 255);
        s[n] = '\0';
        same_as_cjson(s);
    }
    same_as_cjson("");
    /* Every byte at every place of a run that is otherwise copied eight bytes at a time. */
    for (int c = 1; c < 256; c++) {
        for (int at = 0; at < 20; at++) {
            char s[21];
            memset(s, 'a' + at % 26, 20);
            s[20] = '\0';
            s[at] = (char)c;
            same_as_cjson(s);
        }
    }
}

static void test_th_jsonw_string_embedded_nul_succeeds(void **state)
{
    (void)state;
    struct th_jsonw w = {0};
    th_jsonw_string(&w, "a\0b", 3);
    char *text = th_jsonw_finish(&w, NULL);
    assert_string_equal(text, "\"a\\u0000b\"");
    free(text);
}

static void test_th_jsonw_integers_succeeds(void **state)
{
    (void)state;
    struct th_jsonw w = {0};
    th_jsonw_u64(&w, 0);
    th_jsonw_raw(&w, ",", 1);
    th_jsonw_u64(&w, UINT64_MAX);
    th_jsonw_raw(&w, ",", 1);
    th_jsonw_i64(&w, INT64_MIN);
    th_jsonw_raw(&w, ",", 1);
    th_jsonw_i64(&w, -1);
    th_jsonw_raw(&w, ",", 1);
    th_jsonw_i64(&w, INT64_MAX);
    size_t len = 0;
    char *text = th_jsonw_finish(&w, &len);
    assert_string_equal(text, "0,18446744073709551615,-9223372036854775808,-1,"
                              "9223372036854775807");
    assert_int_equal(len, strlen(text));
    free(text);
}

/* Many small writes from an empty writer and from a reserved one give the same text. */
static void test_th_jsonw_growth_succeeds(void **state)
{
    (void)state;
    struct th_jsonw a = {0}, b = {0};
    assert_true(th_jsonw_reserve(&b, 100000));
    size_t cap = b.cap;
    for (int i = 0; i < 5000; i++) {
        th_jsonw_string(&a, "x\n", 2);
        th_jsonw_string(&b, "x\n", 2);
    }
    assert_int_equal(b.cap, cap); /* reserved once: no reallocation */
    char *ta = th_jsonw_finish(&a, NULL), *tb = th_jsonw_finish(&b, NULL);
    assert_non_null(ta);
    assert_string_equal(ta, tb);
    assert_int_equal(strlen(ta), 5000 * 5);
    free(ta);
    free(tb);
}

/* After a failure nothing more is written and finish gives NULL (and frees what was kept). */
static void test_th_jsonw_finish_after_failure_fails(void **state)
{
    (void)state;
    struct th_jsonw w = {0};
    th_jsonw_raw(&w, "{", 1);
    assert_false(th_jsonw_reserve(&w, SIZE_MAX - 4)); /* cannot be allocated */
    assert_true(w.failed);
    th_jsonw_raw(&w, "}", 1);
    assert_null(th_jsonw_finish(&w, NULL));
    assert_null(w.p);
    assert_false(w.failed); /* empty again, usable */
    th_jsonw_raw(&w, "{}", 2);
    char *text = th_jsonw_finish(&w, NULL);
    assert_string_equal(text, "{}");
    free(text);
    th_jsonw_raw(&w, "x", 1);
    th_jsonw_discard(&w);
    assert_null(w.p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_th_jsonw_string_every_byte_same_as_cjson_succeeds),
        cmocka_unit_test(test_th_jsonw_string_embedded_nul_succeeds),
        cmocka_unit_test(test_th_jsonw_integers_succeeds),
        cmocka_unit_test(test_th_jsonw_growth_succeeds),
        cmocka_unit_test(test_th_jsonw_finish_after_failure_fails),
    };
    return cmocka_run_group_tests_name("jsonw", tests, NULL, NULL);
}
