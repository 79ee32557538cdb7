/*
 * test_json.c - unit tests for emulator/core/json.c: the limited parse helper
 * (byte limit, depth limit, strict end of document, input without a NUL), the
 * flags it sets for what cJSON does not keep, the printer and the typed getters.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <stdio.h>

#include "json.h"

/* Parse a NUL-terminated literal (length excludes the NUL). */
static th_result parse_str(const char *text, size_t max_bytes, int max_depth, cJSON **out,
                           struct th_error *err)
{
    return th_json_parse(text, strlen(text), max_bytes, max_depth, out, err);
}

/* "[[[...]]]" nested `depth` times; caller frees with free(). */
static char *nested_arrays(int depth)
{
    char *s = malloc((size_t)depth * 2 + 1);
    assert_non_null(s);
    memset(s, '[', (size_t)depth);
    memset(s + depth, ']', (size_t)depth);
    s[depth * 2] = '\0';
    return s;
}

static void test_th_json_parse_object_succeeds(void **state)
{
    cJSON *doc = NULL;
    struct th_error err = {0};
    assert_int_equal(parse_str("{\"a\":1,\"b\":\"x\"}", 1024, 10, &doc, &err), TH_OK);
    assert_non_null(doc);
    assert_true(cJSON_IsObject(doc));
    assert_string_equal(th_json_string(doc, "b", NULL), "x");
    cJSON_Delete(doc);
}

static void test_th_json_parse_not_nul_terminated_succeeds(void **state)
{
    /* Exact-size heap copy: any read past `len` is out of bounds (visible under ASan). */
    static const char text[] = "{\"a\":[1,2],\"n\":12345}";
    size_t len = sizeof text - 1;
    char *buf = malloc(len);
    assert_non_null(buf);
    memcpy(buf, text, len);

    cJSON *doc = NULL;
    assert_int_equal(th_json_parse(buf, len, 1024, 10, &doc, NULL), TH_OK);
    assert_int_equal((int)th_json_number(doc, "n", -1), 12345);
    cJSON_Delete(doc);
    free(buf);
}

static void test_th_json_parse_number_cut_by_length_succeeds(void **state)
{
    /* The bytes after len must be ignored even though they continue the number. */
    cJSON *doc = NULL;
    assert_int_equal(th_json_parse("12345", 3, 1024, 10, &doc, NULL), TH_OK);
    assert_true(cJSON_IsNumber(doc));
    assert_true(doc->valuedouble == 123.0);
    cJSON_Delete(doc);
}

static void test_th_json_parse_surrounding_whitespace_succeeds(void **state)
{
    cJSON *doc = NULL;
    assert_int_equal(parse_str(" \r\n\t{\"a\":true} \n\t\r ", 1024, 10, &doc, NULL), TH_OK);
    assert_true(th_json_bool(doc, "a", false));
    cJSON_Delete(doc);
}

static void test_th_json_parse_trailing_garbage_fails(void **state)
{
    cJSON *doc = (cJSON *)&doc; /* must be reset to NULL */
    struct th_error err = {0};
    assert_int_equal(parse_str("{\"a\":1} x", 1024, 10, &doc, &err), TH_ERR_FORMAT);
    assert_null(doc);
    assert_int_equal(err.result, TH_ERR_FORMAT);
    assert_non_null(strstr(err.message, "byte 8"));
}

static void test_th_json_parse_two_documents_fails(void **state)
{
    cJSON *doc = NULL;
    assert_int_equal(parse_str("{} {}", 1024, 10, &doc, NULL), TH_ERR_FORMAT);
    assert_null(doc);
}

static void test_th_json_parse_nul_after_document_fails(void **state)
{
    cJSON *doc = NULL;
    assert_int_equal(th_json_parse("{}\0", 3, 1024, 10, &doc, NULL), TH_ERR_FORMAT);
    assert_null(doc);
}

static void test_th_json_parse_control_byte_before_document_fails(void **state)
{
    /* cJSON alone would skip 0x01 as whitespace. */
    cJSON *doc = NULL;
    assert_int_equal(parse_str("\x01{}", 1024, 10, &doc, NULL), TH_ERR_FORMAT);
    assert_null(doc);
}

static void test_th_json_parse_invalid_json_fails(void **state)
{
    cJSON *doc = NULL;
    struct th_error err = {0};
    assert_int_equal(parse_str("{\"a\":}", 1024, 10, &doc, &err), TH_ERR_FORMAT);
    assert_null(doc);
    assert_int_equal(err.result, TH_ERR_FORMAT);
    assert_int_equal(err.code, th_result_default_code(TH_ERR_FORMAT));
}

static void test_th_json_parse_error_position_fails(void **state)
{
    /* err.position is the 1-based byte of the problem, for callers that point at it. */
    cJSON *doc = NULL;
    struct th_error err = {0};
    assert_int_equal(parse_str("{\"a\":1} x", 1024, 10, &doc, &err), TH_ERR_FORMAT);
    assert_int_equal(err.position, 9); /* extra data at byte 8 */
    assert_int_equal(parse_str(" \x01{}", 1024, 10, &doc, &err), TH_ERR_FORMAT);
    assert_int_equal(err.position, 2); /* control character at byte 1 */
    assert_int_equal(parse_str("{\"a\":", 1024, 10, &doc, &err), TH_ERR_FORMAT);
    assert_int_equal(err.position, 5); /* syntax error near byte 4 */
    assert_int_equal(parse_str("[[1]]", 1024, 1, &doc, &err), TH_ERR_TOO_DEEP);
    assert_int_equal(err.position, 0); /* no single byte to blame */
    assert_int_equal(parse_str("   ", 1024, 10, &doc, &err), TH_ERR_FORMAT);
    assert_int_equal(err.position, 0);
    assert_null(doc);
}

static void test_th_json_parse_empty_input_fails(void **state)
{
    cJSON *doc = NULL;
    assert_int_equal(th_json_parse("", 0, 1024, 10, &doc, NULL), TH_ERR_FORMAT);
    assert_int_equal(parse_str("   ", 1024, 10, &doc, NULL), TH_ERR_FORMAT);
    assert_null(doc);
}

static void test_th_json_parse_over_byte_limit_fails(void **state)
{
    cJSON *doc = NULL;
    struct th_error err = {0};
    assert_int_equal(parse_str("{\"a\":1}", 6, 10, &doc, &err), TH_ERR_TOO_LARGE);
    assert_null(doc);
    assert_int_equal(err.result, TH_ERR_TOO_LARGE);
}

static void test_th_json_parse_at_byte_limit_succeeds(void **state)
{
    cJSON *doc = NULL;
    assert_int_equal(parse_str("{\"a\":1}", 7, 10, &doc, NULL), TH_OK);
    assert_non_null(doc);
    cJSON_Delete(doc);
}

static void test_th_json_parse_depth_at_limit_succeeds(void **state)
{
    char *text = nested_arrays(10);
    cJSON *doc = NULL;
    assert_int_equal(parse_str(text, 1024, 10, &doc, NULL), TH_OK);
    assert_int_equal(th_json_depth(doc), 10);
    cJSON_Delete(doc);
    free(text);
}

static void test_th_json_parse_depth_over_limit_fails(void **state)
{
    char *text = nested_arrays(11);
    cJSON *doc = NULL;
    struct th_error err = {0};
    assert_int_equal(parse_str(text, 1024, 10, &doc, &err), TH_ERR_TOO_DEEP);
    assert_null(doc);
    assert_int_equal(err.result, TH_ERR_TOO_DEEP);
    free(text);
}

static void test_th_json_parse_beyond_cjson_nesting_limit_fails(void **state)
{
    /* cJSON itself gives up at 1000 as a syntax error; we must still say "too deep". */
    char *text = nested_arrays(5000);
    cJSON *doc = NULL;
    assert_int_equal(parse_str(text, 1 << 20, 10, &doc, NULL), TH_ERR_TOO_DEEP);
    assert_null(doc);
    free(text);
}

static void test_th_json_parse_brackets_inside_strings_succeeds(void **state)
{
    cJSON *doc = NULL;
    assert_int_equal(parse_str("{\"a\":\"[[[{{{\\\"[[[\"}", 1024, 1, &doc, NULL), TH_OK);
    assert_string_equal(th_json_string(doc, "a", NULL), "[[[{{{\"[[[");
    cJSON_Delete(doc);
}

/* A random document of strings full of brackets, quotes and backslashes, nested up to 6 deep. */
static void random_doc(unsigned *seed, int level, char *out, size_t size, size_t *n)
{
    static const char *const strings[] = {"\"a\"",    "\"[{\"",          "\"\\\"]\"",
                                          "\"\\\\\"", "\"x\\\\\\\"{[\"", "\"}]\\u005b\""};
    *seed = *seed * 1103515245u + 12345u;
    unsigned r = (*seed >> 8) % 10;
    if (level >= 6 || r < 3) {
        const char *sc = r == 0 ? "12" : strings[(*seed >> 4) % 6];
        *n += (size_t)snprintf(out + *n, size - *n, "%s", sc);
        return;
    }
    bool obj = r % 2;
    *n += (size_t)snprintf(out + *n, size - *n, "%c", obj ? '{' : '[');
    int members = (int)((*seed >> 12) % 4);
    for (int i = 0; i < members && *n + 200 < size; i++) {
        if (i)
            *n += (size_t)snprintf(out + *n, size - *n, ",");
        if (obj)
            *n += (size_t)snprintf(out + *n, size - *n, "%s:", strings[(*seed >> (i + 3)) % 6]);
        random_doc(seed, level + 1, out, size, n);
    }
    *n += (size_t)snprintf(out + *n, size - *n, "%c", obj ? '}' : ']');
}

/* The depth limit counts the tree's depth, never brackets or quotes inside strings. */
static void test_th_json_parse_depth_limit_same_as_tree_depth_succeeds(void **state)
{
    (void)state;
    unsigned seed = 3;
    for (int i = 0; i < 3000; i++) {
        char text[8192];
        size_t n = 0;
        random_doc(&seed, 0, text, sizeof text, &n);
        cJSON *doc = NULL;
        assert_int_equal(parse_str(text, sizeof text, 64, &doc, NULL), TH_OK);
        int depth = th_json_depth(doc);
        cJSON_Delete(doc);
        for (int limit = depth - 1; limit <= depth; limit++) {
            th_result r = parse_str(text, sizeof text, limit, &doc, NULL);
            if ((r == TH_ERR_TOO_DEEP) != (limit < depth))
                fprintf(stderr, "# depth %d, limit %d: %s\n", depth, limit, text);
            assert_int_equal(r, limit < depth ? TH_ERR_TOO_DEEP : TH_OK);
            cJSON_Delete(doc);
            doc = NULL;
        }
    }
}

static void test_th_json_parse_scalar_with_zero_depth_succeeds(void **state)
{
    cJSON *doc = NULL;
    assert_int_equal(parse_str("\"x\"", 1024, 0, &doc, NULL), TH_OK);
    assert_true(cJSON_IsString(doc));
    cJSON_Delete(doc);
    assert_int_equal(parse_str("{}", 1024, 0, &doc, NULL), TH_ERR_TOO_DEEP);
}

static void test_th_json_depth_shapes_succeeds(void **state)
{
    cJSON *scalar = cJSON_CreateNumber(1);
    cJSON *empty = cJSON_CreateObject();
    cJSON *nested = cJSON_Parse("{\"a\":{},\"b\":[1,[2,{\"c\":3}]]}");
    assert_non_null(scalar);
    assert_non_null(empty);
    assert_non_null(nested);
    assert_int_equal(th_json_depth(scalar), 0);
    assert_int_equal(th_json_depth(empty), 1);
    assert_int_equal(th_json_depth(nested), 4);
    assert_int_equal(th_json_depth(NULL), 0);
    cJSON_Delete(scalar);
    cJSON_Delete(empty);
    cJSON_Delete(nested);
}

static const char GETTER_DOC[] =
    "{\"s\":\"v\",\"n\":4503599627370495,\"b\":false,\"o\":{},\"a\":[],\"Key\":\"x\"}";

static void test_th_json_string_present_succeeds(void **state)
{
    cJSON *doc = cJSON_Parse(GETTER_DOC);
    assert_non_null(doc);
    assert_string_equal(th_json_string(doc, "s", NULL), "v");
    assert_string_equal(th_json_string(doc, "Key", NULL), "x");
    cJSON_Delete(doc);
}

static void test_th_json_string_wrong_type_or_case_fails(void **state)
{
    cJSON *doc = cJSON_Parse(GETTER_DOC);
    assert_non_null(doc);
    assert_string_equal(th_json_string(doc, "n", "fb"), "fb");
    assert_string_equal(th_json_string(doc, "key", "fb"), "fb");
    assert_string_equal(th_json_string(doc, "absent", "fb"), "fb");
    assert_string_equal(th_json_string(NULL, "s", "fb"), "fb");
    cJSON_Delete(doc);
}

static void test_th_json_number_beyond_int_max_succeeds(void **state)
{
    /* Must come from valuedouble, not the saturated valueint. */
    cJSON *doc = cJSON_Parse(GETTER_DOC);
    assert_non_null(doc);
    assert_true(th_json_number(doc, "n", 0) == 4503599627370495.0);
    cJSON_Delete(doc);
}

static void test_th_json_number_wrong_type_fails(void **state)
{
    cJSON *doc = cJSON_Parse(GETTER_DOC);
    assert_non_null(doc);
    assert_true(th_json_number(doc, "s", -7) == -7);
    assert_true(th_json_number(doc, "b", -7) == -7);
    cJSON_Delete(doc);
}

static void test_th_json_bool_present_succeeds(void **state)
{
    cJSON *doc = cJSON_Parse(GETTER_DOC);
    assert_non_null(doc);
    assert_false(th_json_bool(doc, "b", true));
    cJSON_Delete(doc);
}

static void test_th_json_bool_number_member_fails(void **state)
{
    cJSON *doc = cJSON_Parse(GETTER_DOC);
    assert_non_null(doc);
    assert_true(th_json_bool(doc, "n", true));
    assert_false(th_json_bool(doc, "n", false));
    cJSON_Delete(doc);
}

static void test_th_json_object_present_succeeds(void **state)
{
    cJSON *doc = cJSON_Parse(GETTER_DOC);
    assert_non_null(doc);
    assert_ptr_equal(th_json_object(doc, "o"), cJSON_GetObjectItemCaseSensitive(doc, "o"));
    assert_non_null(th_json_object(doc, "o"));
    cJSON_Delete(doc);
}

static void test_th_json_object_array_member_fails(void **state)
{
    cJSON *doc = cJSON_Parse(GETTER_DOC);
    assert_non_null(doc);
    assert_null(th_json_object(doc, "a"));
    assert_null(th_json_object(doc, "s"));
    cJSON_Delete(doc);
}

static void test_th_json_print_compact_succeeds(void **state)
{
    cJSON *doc = cJSON_Parse("{ \"a\" : [ 1 , 2 ] }");
    assert_non_null(doc);
    char *text = th_json_print(doc);
    assert_non_null(text);
    assert_string_equal(text, "{\"a\":[1,2]}");
    free(text);
    cJSON_Delete(doc);
    assert_null(th_json_print(NULL));
}

/* ---- what the tree alone does not keep (TH_JSON_* flags) ---- */

static void test_th_json_parse_marks_decimal_numbers_succeeds(void **state)
{
    cJSON *doc = NULL;
    assert_int_equal(parse_str(" { \"i\" : 100 , \"f\":1.0,\"e\":1e20,\"E\":-2E-3,"
                               "\"a\":[ 3 , 4.5 , {\"n\":-7}],\"s\":\"1.5\",\"t\":true,\"z\":null}",
                               1024, 10, &doc, NULL),
                     TH_OK);
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(doc, "a");
    assert_false(cJSON_GetObjectItemCaseSensitive(doc, "i")->type & TH_JSON_DECIMAL);
    assert_true(cJSON_GetObjectItemCaseSensitive(doc, "f")->type & TH_JSON_DECIMAL);
    assert_true(cJSON_GetObjectItemCaseSensitive(doc, "e")->type & TH_JSON_DECIMAL);
    assert_true(cJSON_GetObjectItemCaseSensitive(doc, "E")->type & TH_JSON_DECIMAL);
    assert_false(cJSON_GetArrayItem(a, 0)->type & TH_JSON_DECIMAL);
    assert_true(cJSON_GetArrayItem(a, 1)->type & TH_JSON_DECIMAL);
    assert_false(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(a, 2), "n")->type &
                 TH_JSON_DECIMAL);
    assert_true(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(doc, "f")));
    /* A copy keeps the marks. */
    cJSON *copy = cJSON_Duplicate(doc, true);
    assert_true(cJSON_GetObjectItemCaseSensitive(copy, "e")->type & TH_JSON_DECIMAL);
    cJSON_Delete(copy);
    cJSON_Delete(doc);
}

static void test_th_json_parse_marks_nul_escapes_succeeds(void **state)
{
    cJSON *doc = NULL;
    /* "\\u0000" (an escaped backslash, then "u0000") is not a NUL. */
    assert_int_equal(parse_str("{\"k\\u0000x\":1,\"s\":\"a\\u0000\",\"ok\":\"\\\\u0000\","
                               "\"\\\"q\":\"\\\"\",\"n\":{\"\\u0000\":[\"\\u0000\"]}}",
                               1024, 10, &doc, NULL),
                     TH_OK);
    const cJSON *k = cJSON_GetObjectItemCaseSensitive(doc, "k");
    assert_non_null(k);
    assert_true(k->type & TH_JSON_KEY_NUL);
    assert_true(cJSON_GetObjectItemCaseSensitive(doc, "s")->type & TH_JSON_STRING_NUL);
    assert_false(cJSON_GetObjectItemCaseSensitive(doc, "s")->type & TH_JSON_KEY_NUL);
    assert_false(cJSON_GetObjectItemCaseSensitive(doc, "ok")->type & TH_JSON_STRING_NUL);
    assert_false(cJSON_GetObjectItemCaseSensitive(doc, "\"q")->type &
                 (TH_JSON_STRING_NUL | TH_JSON_KEY_NUL));
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(doc, "n");
    assert_true(n->child->type & TH_JSON_KEY_NUL);
    assert_true(n->child->child->type & TH_JSON_STRING_NUL);
    cJSON_Delete(doc);
}

static void test_th_json_refuse_nul_names_the_path_fails(void **state)
{
    (void)state;
    cJSON *doc = NULL;
    struct th_error err = {0};
    assert_int_equal(parse_str("{\"a\":{\"b\":[1,\"x\\u0000\"]}}", 1024, 10, &doc, NULL), TH_OK);
    assert_int_equal(th_json_refuse_nul(doc, "the body", &err), TH_ERR_INVAL);
    assert_int_equal(err.status, 400);
    assert_int_equal(err.code, 400004);
    assert_non_null(strstr(err.message, "string value at 'a.b[1]'"));
    cJSON_Delete(doc);
    assert_int_equal(parse_str("{\"k\\u0000\":1}", 1024, 10, &doc, NULL), TH_OK);
    assert_int_equal(th_json_refuse_nul(doc, "the body", &err), TH_ERR_INVAL);
    assert_non_null(strstr(err.message, "member name"));
    cJSON_Delete(doc);
}

/* Deep in a large document, after clean members: still found, with its path. */
static void test_th_json_refuse_nul_deep_after_clean_members_fails(void **state)
{
    (void)state;
    cJSON *doc = NULL;
    struct th_error err = {0};
    assert_int_equal(
        parse_str("{\"a\":[1,2,{\"b\":\"x\"}],\"c\":{\"d\":{\"e\":[true,{\"f\\u0000g\":0}]}}}",
                  1024, 10, &doc, NULL),
        TH_OK);
    assert_int_equal(th_json_refuse_nul(doc, "the body", &err), TH_ERR_INVAL);
    assert_non_null(strstr(err.message, "member name at 'c.d.e[1].f'"));
    cJSON_Delete(doc);
    /* Only `doc` and what is below it count, not its siblings. */
    assert_int_equal(parse_str("{\"p\":{\"ok\":1},\"q\":\"\\u0000\"}", 1024, 10, &doc, NULL),
                     TH_OK);
    assert_int_equal(th_json_refuse_nul(doc->child, "the member", &err), TH_OK);
    assert_int_equal(th_json_refuse_nul(doc, "the body", &err), TH_ERR_INVAL);
    cJSON_Delete(doc);
}

static void test_th_json_refuse_nul_clean_document_succeeds(void **state)
{
    (void)state;
    cJSON *doc = NULL;
    struct th_error err = {0};
    assert_int_equal(parse_str("{\"ok\":\"\\\\u0000\",\"n\":[{\"m\":null}]}", 1024, 10, &doc, NULL),
                     TH_OK);
    assert_int_equal(th_json_refuse_nul(doc, "the body", &err), TH_OK);
    cJSON_Delete(doc);
    assert_int_equal(th_json_refuse_nul(NULL, "nothing", &err), TH_OK);
}

static void test_th_json_print_keeps_decimal_beyond_2_52_succeeds(void **state)
{
    cJSON *doc = NULL;
    assert_int_equal(parse_str("[4503599627370497.0,4503599627370496,1.5e300,0.5,2.0,"
                               "-4503599627370499.0]",
                               1024, 10, &doc, NULL),
                     TH_OK);
    char *text = th_json_print(doc);
    assert_non_null(text);
    /* Integers stay integers, decimals beyond 2^52 keep a decimal form. */
    assert_string_equal(text, "[4503599627370497.0,4503599627370496,1.5e+300,0.5,2,"
                              "-4503599627370499.0]");
    cJSON *back = NULL;
    assert_int_equal(parse_str(text, 1024, 10, &back, NULL), TH_OK);
    assert_true(cJSON_GetArrayItem(back, 0)->type & TH_JSON_DECIMAL);
    assert_false(cJSON_GetArrayItem(back, 1)->type & TH_JSON_DECIMAL);
    assert_true(cJSON_GetArrayItem(back, 0)->valuedouble == 4503599627370497.0);
    free(text);
    cJSON_Delete(back);
    cJSON_Delete(doc);
    /* A bare number too. */
    assert_int_equal(parse_str("9007199254740993.5", 1024, 10, &doc, NULL), TH_OK);
    text = th_json_print(doc);
    assert_string_equal(text, "9007199254740994.0");
    free(text);
    cJSON_Delete(doc);
}

/* ---- th_json_error_about ---- */

static void error_about(const char *text, char *out, size_t size)
{
    cJSON *doc = NULL;
    struct th_error err = {0};
    assert_int_not_equal(th_json_parse(text, strlen(text), 64, 2, &doc, &err), TH_OK);
    assert_null(doc);
    th_json_error_about(&err, "/x/hub.json", out, size);
}

static void test_th_json_error_about_syntax_names_the_file_succeeds(void **state)
{
    (void)state;
    char out[256];
    error_about("{\"a\":", out, sizeof out);
    assert_string_equal(out, "/x/hub.json is not valid JSON (error near byte 4)");
    error_about("", out, sizeof out);
    assert_string_equal(out, "/x/hub.json is empty");
}

static void test_th_json_error_about_limits_drop_the_advice_succeeds(void **state)
{
    (void)state;
    char out[256];
    error_about("[[[1]]]", out, sizeof out);
    assert_string_equal(out, "/x/hub.json: JSON nests objects/arrays more than 2 levels deep");
    char big[100];
    memset(big, ' ', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    big[0] = '1';
    error_about(big, out, sizeof out);
    assert_string_equal(out, "/x/hub.json is 99 bytes");
}

/* A small deterministic generator (31 bits), so the test needs nothing from the libc's. */
static unsigned lcg_next(unsigned *seed)
{
    *seed = *seed * 1103515245u + 12345u;
    return (*seed >> 1) & 0x7fffffffu;
}

/* A pseudo-random number of many kinds: ints, halves, decimals, tiny, huge, negative. */
static double some_number(unsigned *seed)
{
    static const double fixed[] = {0.0,
                                   -0.0,
                                   1e-5,
                                   1e-4,
                                   0.1,
                                   0.3,
                                   22.5,
                                   -7.25,
                                   1e15,
                                   1e15 - 1,
                                   123456789012345.0,
                                   1234567890123456.0,
                                   2147483647.0,
                                   -2147483648.0,
                                   2147483648.0,
                                   4503599627370496.5,
                                   1e300,
                                   -1e-300,
                                   3.141592653589793,
                                   0.1 + 0.2,
                                   99.99,
                                   1.0 / 3};
    unsigned r = lcg_next(seed);
    switch (r % 6) {
    case 0:
        return fixed[lcg_next(seed) % (sizeof fixed / sizeof fixed[0])];
    case 1:
        return (double)((int)lcg_next(seed) - 0x7fffffffu / 2);
    case 2:
        return (double)(lcg_next(seed) % 100000) / 100.0;
    case 3:
        return ((double)lcg_next(seed) / 0x7fffffffu - 0.5) * 1e6;
    case 4:
        return (double)(lcg_next(seed) % 1000) / 1e4;
    default:
        return ((double)lcg_next(seed) / 0x7fffffffu) * 1e17;
    }
}

/* th_json_print writes the bytes cJSON_PrintUnformatted writes (numbers, escapes, nesting). */
static void test_th_json_print_same_bytes_as_cjson_succeeds(void **state)
{
    (void)state;
    unsigned seed = 12345;
    for (int round = 0; round < 300; round++) {
        cJSON *root = cJSON_CreateObject();
        cJSON *arr = cJSON_AddArrayToObject(root, "a");
        for (int i = 0; i < 40; i++) {
            char key[16], str[8];
            snprintf(key, sizeof key, "k%d", i);
            for (int c = 0; c < 7; c++)
                str[c] = (char)(1 + lcg_next(&seed) % 126); /* control bytes, quotes, backslash */
            str[7] = '\0';
            cJSON_AddNumberToObject(root, key, some_number(&seed));
            cJSON_AddItemToArray(arr, cJSON_CreateNumber(some_number(&seed)));
            cJSON_AddItemToArray(arr, cJSON_CreateString(str));
        }
        cJSON_AddItemToObject(root, "\t\"key\"\x01\xc3\xa9",
                              cJSON_CreateString("\xe2\x82\xac\x7f"));
        cJSON_AddItemToObject(root, "nested", cJSON_Duplicate(arr, true));
        cJSON_AddItemToObject(root, "e", cJSON_CreateObject());
        cJSON_AddItemToObject(root, "ea", cJSON_CreateArray());
        cJSON_AddItemToObject(root, "raw", cJSON_CreateRaw("{\"x\":1}"));
        cJSON_AddItemToObject(root, "t", cJSON_CreateTrue());
        cJSON_AddItemToObject(root, "f", cJSON_CreateFalse());
        cJSON_AddItemToObject(root, "n", cJSON_CreateNull());
        char *mine = th_json_print(root), *theirs = cJSON_PrintUnformatted(root);
        assert_non_null(mine);
        size_t at = 0;
        while (mine[at] && mine[at] == theirs[at])
            at++;
        if (mine[at] != theirs[at])
            fail_msg("round %d, byte %zu: th_json_print '%.40s' cJSON '%.40s'", round, at,
                     mine + (at > 20 ? at - 20 : 0), theirs + (at > 20 ? at - 20 : 0));
        free(mine);
        free(theirs);
        cJSON_Delete(root);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_th_json_parse_object_succeeds),
        cmocka_unit_test(test_th_json_parse_not_nul_terminated_succeeds),
        cmocka_unit_test(test_th_json_parse_number_cut_by_length_succeeds),
        cmocka_unit_test(test_th_json_parse_surrounding_whitespace_succeeds),
        cmocka_unit_test(test_th_json_parse_trailing_garbage_fails),
        cmocka_unit_test(test_th_json_parse_two_documents_fails),
        cmocka_unit_test(test_th_json_parse_nul_after_document_fails),
        cmocka_unit_test(test_th_json_parse_control_byte_before_document_fails),
        cmocka_unit_test(test_th_json_parse_invalid_json_fails),
        cmocka_unit_test(test_th_json_parse_error_position_fails),
        cmocka_unit_test(test_th_json_parse_empty_input_fails),
        cmocka_unit_test(test_th_json_parse_over_byte_limit_fails),
        cmocka_unit_test(test_th_json_parse_at_byte_limit_succeeds),
        cmocka_unit_test(test_th_json_parse_depth_at_limit_succeeds),
        cmocka_unit_test(test_th_json_parse_depth_over_limit_fails),
        cmocka_unit_test(test_th_json_parse_beyond_cjson_nesting_limit_fails),
        cmocka_unit_test(test_th_json_parse_brackets_inside_strings_succeeds),
        cmocka_unit_test(test_th_json_parse_scalar_with_zero_depth_succeeds),
        cmocka_unit_test(test_th_json_depth_shapes_succeeds),
        cmocka_unit_test(test_th_json_string_present_succeeds),
        cmocka_unit_test(test_th_json_string_wrong_type_or_case_fails),
        cmocka_unit_test(test_th_json_number_beyond_int_max_succeeds),
        cmocka_unit_test(test_th_json_number_wrong_type_fails),
        cmocka_unit_test(test_th_json_bool_present_succeeds),
        cmocka_unit_test(test_th_json_bool_number_member_fails),
        cmocka_unit_test(test_th_json_object_present_succeeds),
        cmocka_unit_test(test_th_json_object_array_member_fails),
        cmocka_unit_test(test_th_json_print_compact_succeeds),
        cmocka_unit_test(test_th_json_parse_marks_decimal_numbers_succeeds),
        cmocka_unit_test(test_th_json_parse_marks_nul_escapes_succeeds),
        cmocka_unit_test(test_th_json_refuse_nul_names_the_path_fails),
        cmocka_unit_test(test_th_json_refuse_nul_clean_document_succeeds),
        cmocka_unit_test(test_th_json_refuse_nul_deep_after_clean_members_fails),
        cmocka_unit_test(test_th_json_parse_depth_limit_same_as_tree_depth_succeeds),
        cmocka_unit_test(test_th_json_print_keeps_decimal_beyond_2_52_succeeds),
        cmocka_unit_test(test_th_json_print_same_bytes_as_cjson_succeeds),
        cmocka_unit_test(test_th_json_error_about_syntax_names_the_file_succeeds),
        cmocka_unit_test(test_th_json_error_about_limits_drop_the_advice_succeeds),
    };
    return cmocka_run_group_tests_name("json", tests, NULL, NULL);
}
