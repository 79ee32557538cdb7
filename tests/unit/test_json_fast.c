/*
 * test_json_fast.c - th_json_parse's one-pass path (core/json_fast.c) gives
 * exactly what its cJSON path gives: the same result and error text, and the
 * same tree (types with th_json_parse's flags, valueint, valuedouble to the
 * bit, names, strings, and the links cJSON makes: first child's prev is the
 * last), on many random texts, valid and broken: escapes, \u sequences,
 * control bytes, numbers of every shape, odd whitespace, cut and spliced text.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "json.h"
#include "json_fast.h"

static unsigned lcg_next(unsigned *seed)
{
    *seed = *seed * 1103515245u + 12345u;
    return (*seed >> 1) & 0x7fffffffu;
}

struct text {
    char buf[8192];
    size_t len;
};

static void put(struct text *t, const char *s)
{
    size_t n = strlen(s);
    if (t->len + n < sizeof t->buf) {
        memcpy(t->buf + t->len, s, n);
        t->len += n;
    }
}

static void ws(struct text *t, unsigned *seed)
{
    static const char *const w[] = {"", "", "", " ", "\n", "\t", "\r\n  ", "\x01", "\x1f"};
    put(t, w[lcg_next(seed) % (lcg_next(seed) % 20 == 0 ? 9 : 7)]);
}

static void number(struct text *t, unsigned *seed)
{
    static const char *const shapes[] = {
        "0",
        "-0",
        "7",
        "22.5",
        "22.50",
        "-13",
        "007",
        "0.1",
        "0.000001",
        "1e5",
        "1E-3",
        "2.5e+3",
        "1.",
        "-",
        "123456789012345",
        "1234567890123456",
        "99999999999999999999",
        "123456789012345.6",
        "12345678901234.5",
        "-0.0",
        "4503599627370496",
        "2147483647",
        "2147483648",
        "-2147483649",
        "1-2",
        "3.14159",
        "0.30000000000000004",
    };
    if (lcg_next(seed) % 3 == 0) {
        char b[32];
        snprintf(b, sizeof b, "%s%u.%u", lcg_next(seed) & 1 ? "-" : "", lcg_next(seed) % 100000,
                 lcg_next(seed) % 1000);
        put(t, b);
        return;
    }
    put(t, shapes[lcg_next(seed) % (sizeof shapes / sizeof shapes[0])]);
}

static void string(struct text *t, unsigned *seed)
{
    static const char *const parts[] = {
        "a",   "mode", "\\\"", "\\\\",     "\\/",  "\\b",     "\\f",     "\\n",
        "\\r", "\\t",  " ",    "\xc3\xa9", "\x01", "\\u00e9", "\\u0000", "\\ud83d\\ude00",
        "\\x", "\t",   "$v",   "k.1",
    };
    put(t, "\"");
    int n = (int)(lcg_next(seed) % 6);
    for (int i = 0; i < n; i++)
        put(t, parts[lcg_next(seed) % (lcg_next(seed) % 8 == 0 ? 20 : 13)]);
    put(t, "\"");
}

static void value(struct text *t, unsigned *seed, int depth)
{
    switch (lcg_next(seed) % (depth < 4 ? 8 : 5)) {
    case 0:
        put(t, lcg_next(seed) % 2 ? "true" : lcg_next(seed) % 2 ? "false" : "null");
        break;
    case 1:
    case 2:
        number(t, seed);
        break;
    case 3:
    case 4:
        string(t, seed);
        break;
    case 5: {
        put(t, "[");
        int n = (int)(lcg_next(seed) % 4);
        for (int i = 0; i < n; i++) {
            if (i)
                put(t, ",");
            ws(t, seed);
            value(t, seed, depth + 1);
            ws(t, seed);
        }
        put(t, "]");
        break;
    }
    default: {
        put(t, "{");
        ws(t, seed);
        int n = (int)(lcg_next(seed) % 5);
        for (int i = 0; i < n; i++) {
            if (i)
                put(t, ",");
            ws(t, seed);
            string(t, seed);
            ws(t, seed);
            put(t, ":");
            ws(t, seed);
            value(t, seed, depth + 1);
            ws(t, seed);
        }
        put(t, "}");
    }
    }
}

static void same_tree(const cJSON *a, const cJSON *b, int round)
{
    if (a == NULL || b == NULL) {
        if (a != b)
            fail_msg("round %d: one tree ends before the other", round);
        return;
    }
    if (a->type != b->type || a->valueint != b->valueint ||
        memcmp(&a->valuedouble, &b->valuedouble, sizeof a->valuedouble) != 0)
        fail_msg("round %d: item differs: type %d/%d valueint %d/%d value %.17g/%.17g", round,
                 a->type, b->type, a->valueint, b->valueint, a->valuedouble, b->valuedouble);
    if ((a->string == NULL) != (b->string == NULL) ||
        (a->string && strcmp(a->string, b->string) != 0))
        fail_msg("round %d: member name differs", round);
    if ((a->valuestring == NULL) != (b->valuestring == NULL) ||
        (a->valuestring && strcmp(a->valuestring, b->valuestring) != 0))
        fail_msg("round %d: string differs: '%s' / '%s'", round,
                 a->valuestring ? a->valuestring : "(null)",
                 b->valuestring ? b->valuestring : "(null)");
    const cJSON *ca = a->child, *cb = b->child;
    if ((ca == NULL) != (cb == NULL))
        fail_msg("round %d: children differ", round);
    for (const cJSON *x = ca, *y = cb; x != NULL || y != NULL; x = x->next, y = y->next) {
        if (x == NULL || y == NULL)
            fail_msg("round %d: child counts differ", round);
        if (x != ca && (x->prev == NULL || x->prev->next != x))
            fail_msg("round %d: prev link broken", round);
        if (x->next == NULL && ca->prev != x)
            fail_msg("round %d: first child's prev is not the last child", round);
        same_tree(x, y, round);
    }
}

static void test_th_json_parse_fast_same_as_cjson_path_succeeds(void **state)
{
    (void)state;
    unsigned seed = 2026;
    int fast_ok = 0, slow_ok = 0;
    for (int round = 0; round < 30000; round++) {
        struct text t = {.len = 0};
        if (lcg_next(&seed) % 10 == 0)
            put(&t, lcg_next(&seed) % 2 ? "\xEF\xBB\xBF" : " \n");
        value(&t, &seed, lcg_next(&seed) % 3 == 0 ? 0 : 2);
        ws(&t, &seed);
        switch (lcg_next(&seed) % 12) { /* break some */
        case 0:
            t.len = lcg_next(&seed) % (t.len + 1);
            break;
        case 1:
            if (t.len > 0)
                t.buf[lcg_next(&seed) % t.len] = "{}[],:\"\\0x- "[lcg_next(&seed) % 12];
            break;
        case 2:
            put(&t, lcg_next(&seed) % 2 ? "x" : " {}");
            break;
        default:
            break;
        }
        int max_depth = lcg_next(&seed) % 5 == 0 ? 2 : 64;
        struct th_error e1 = {0}, e2 = {0};
        cJSON *fast = th_json_parse_fast(t.buf, t.len, max_depth);
        fast_ok += fast != NULL;
        cJSON_Delete(fast);
        cJSON *a = NULL, *b = NULL;
        th_json_fast_enabled = true;
        th_result r1 = th_json_parse(t.buf, t.len, sizeof t.buf, max_depth, &a, &e1);
        th_json_fast_enabled = false;
        th_result r2 = th_json_parse(t.buf, t.len, sizeof t.buf, max_depth, &b, &e2);
        th_json_fast_enabled = true;
        slow_ok += r2 == TH_OK;
        if (r1 != r2 || strcmp(e1.message, e2.message) != 0)
            fail_msg("round %d: '%.*s': %d '%s' against %d '%s'", round, (int)t.len, t.buf, r1,
                     e1.message, r2, e2.message);
        same_tree(a, b, round);
        cJSON_Delete(a);
        cJSON_Delete(b);
    }
    /* Both paths were exercised: many texts taken by the fast path, many left to cJSON. */
    assert_true(fast_ok > 5000);
    assert_true(slow_ok - fast_ok > 1000);
}

/* A random number text for the long-integer and exponent test: see below. */
static void long_number(char *num, size_t size, unsigned *seed)
{
    size_t k = 0;
    unsigned shape = lcg_next(seed) % 4;
    if (lcg_next(seed) % 4 == 0)
        num[k++] = '-';
    if (shape == 0) { /* near a power of two, where the rounding is decided */
        unsigned long long v = (1ull << (53 + lcg_next(seed) % 10)) + (lcg_next(seed) % 2048) - 1024;
        snprintf(num + k, size - k, "%llu", v);
        return;
    }
    if (shape == 1) { /* a time in microseconds as cJSON prints it: %1.15g, else %1.17g */
        double t = 1.7e15 + (double)(lcg_next(seed) % 100000000) * 1000.0 +
                   (double)(lcg_next(seed) % 1000) * (lcg_next(seed) % 2 ? 10.0 : 1.0);
        snprintf(num + k, size - k, "%1.15g", t);
        if (strtod(num + k, NULL) != t)
            snprintf(num + k, size - k, "%1.17g", t);
        return;
    }
    /* 1 to 20 digits, maybe a fraction, maybe an exponent of 1 to 4 digits */
    int n = 1 + (int)(lcg_next(seed) % 20), point = shape == 3 ? (int)(lcg_next(seed) % n) : 0;
    if (shape == 2 && n < 16)
        n += 16;
    for (int i = 0; i < n; i++) {
        if (point > 0 && i == point)
            num[k++] = '.';
        num[k++] = (char)('0' + (i == 0 ? 1 + lcg_next(seed) % 9 : lcg_next(seed) % 10));
    }
    if (shape == 3 || lcg_next(seed) % 3 == 0) {
        int e = (int)(lcg_next(seed) % 61) - 30;
        if (lcg_next(seed) % 10 == 0)
            e *= 37;
        k += (size_t)snprintf(num + k, size - k, "%s%s%d", lcg_next(seed) % 2 ? "e" : "E",
                              e >= 0 && lcg_next(seed) % 2 ? "+" : "", e);
    }
    num[k] = '\0';
}

/*
 * Integers of 16 to 20 digits and numbers with exponents (the state files' times in
 * microseconds: 16 digits, or 1.79661737531012e+15 as cJSON prints one ending in 0): what the
 * fast path takes (up to 18 digits of integer; 15 digits with a fraction or exponent, within
 * 10^+-22) is the value strtod gives, to the bit, in every place a number may stand, and the
 * same tree as the cJSON path; the rest is left to cJSON.
 */
static void test_th_json_parse_fast_long_numbers_same_as_cjson_path_succeeds(void **state)
{
    (void)state;
    static const char *const edges[] = {
        "9007199254740992",     "9007199254740993",     "9007199254740995",
        "18014398509481983",    "36028797018963969",    "999999999999999999",
        "100000000000000000",   "576460752303423489",   "922337203685477580",
        "9223372036854775807",  "9223372036854775808",  "99999999999999999999",
        "1796617375310166",     "0000000000000001",     "-9007199254740993",
        "1.79661737531012e+15", "1.79661737531012E15",  "9.99999999999999e22",
        "123456789012345e-22",  "1e23",                 "1e-23",
        "1e0005",               "-0e5",                 "5e-324",
        "1.7976931348623157e308", "2.2250738585072014e-308", "0.1e1",
    };
    unsigned seed = 15;
    int fast_ok = 0, slow_only = 0;
    for (int round = 0; round < 30000; round++) {
        char num[80], text[200];
        if (round < (int)(sizeof edges / sizeof edges[0]))
            snprintf(num, sizeof num, "%s", edges[round]);
        else
            long_number(num, sizeof num, &seed);
        switch (round % 3) {
        case 0:
            snprintf(text, sizeof text, "%s", num);
            break;
        case 1:
            snprintf(text, sizeof text, "{\"lastActivity\":%s,\"n\":[%s, 1]}", num, num);
            break;
        default:
            snprintf(text, sizeof text, "[%s ,\"x\"]", num);
            break;
        }
        size_t len = strlen(text);
        struct th_error e1 = {0}, e2 = {0};
        cJSON *fast = th_json_parse_fast(text, len, 64);
        fast_ok += fast != NULL;
        cJSON_Delete(fast);
        cJSON *a = NULL, *b = NULL;
        th_json_fast_enabled = true;
        th_result r1 = th_json_parse(text, len, sizeof text, 64, &a, &e1);
        th_json_fast_enabled = false;
        th_result r2 = th_json_parse(text, len, sizeof text, 64, &b, &e2);
        th_json_fast_enabled = true;
        if (r1 != TH_OK || r2 != TH_OK)
            fail_msg("round %d: '%s': %s / %s", round, text, e1.message, e2.message);
        slow_only += fast == NULL;
        same_tree(a, b, round);
        const cJSON *x = cJSON_IsObject(a) || cJSON_IsArray(a) ? a->child : a;
        double want = strtod(num, NULL);
        if (memcmp(&x->valuedouble, &want, sizeof want) != 0)
            fail_msg("round %d: %s read as %.17g", round, num, x->valuedouble);
        cJSON_Delete(a);
        cJSON_Delete(b);
    }
    /* Both paths were exercised. */
    assert_true(fast_ok > 10000);
    assert_true(slow_only > 3000);
    static const char *const taken[] = {"1796617375310166", "1.79661737531012e+15", "-0e5",
                                        "999999999999999999", "1e22", "1.5E-7"};
    for (size_t i = 0; i < sizeof taken / sizeof taken[0]; i++) {
        cJSON *t = th_json_parse_fast(taken[i], strlen(taken[i]), 64);
        assert_non_null(t);
        assert_true(t->valuedouble == strtod(taken[i], NULL));
        assert_true(!(t->type & TH_JSON_DECIMAL) == !strpbrk(taken[i], ".eE"));
        cJSON_Delete(t);
    }
    static const char *const left[] = {"9223372036854775807", "1234567890123456.5", "1e23",
                                        "1e", "1e+", "1.5e0005", "1234567890123456e1"};
    for (size_t i = 0; i < sizeof left / sizeof left[0]; i++)
        assert_null(th_json_parse_fast(left[i], strlen(left[i]), 64));
}

/*
 * th_json_parse_as_cjson gives what cJSON_ParseWithLength gives, node for node and without
 * th_json_parse's flags, on random texts (valid and broken, numbers of every shape, trailing
 * bytes, a leading BOM or whitespace) and on job-state-like records with 16-digit times.
 */
static void test_th_json_parse_as_cjson_same_as_cjson_succeeds(void **state)
{
    (void)state;
    unsigned seed = 77;
    int fast_ok = 0, parsed = 0;
    for (int round = 0; round < 30000; round++) {
        struct text t = {.len = 0};
        if (round % 4 == 0) {
            char num[80];
            long_number(num, sizeof num, &seed);
            snprintf(t.buf, sizeof t.buf,
                     "{\"jobId\":\"j\",\"$devices\":[{\"d\":\"bd-%05u\",\"s\":2,\"t0\":%s,"
                     "\"t1\":1796617389265879,\"o\":{\"status\":200,\"payload\":{\"v\":%s}}}]}",
                     lcg_next(&seed) % 100000, num, num);
            t.len = strlen(t.buf);
        } else {
            if (lcg_next(&seed) % 10 == 0)
                put(&t, lcg_next(&seed) % 2 ? "\xEF\xBB\xBF" : " \n");
            value(&t, &seed, lcg_next(&seed) % 3 == 0 ? 0 : 2);
            ws(&t, &seed);
            if (lcg_next(&seed) % 8 == 0)
                put(&t, lcg_next(&seed) % 2 ? "x" : " {}");
            if (lcg_next(&seed) % 8 == 0)
                t.len = lcg_next(&seed) % (t.len + 1);
        }
        cJSON *fast = th_json_parse_fast(t.buf, t.len, CJSON_NESTING_LIMIT);
        fast_ok += fast != NULL;
        cJSON_Delete(fast);
        cJSON *a = th_json_parse_as_cjson(t.buf, t.len);
        cJSON *b = cJSON_ParseWithLength(t.buf, t.len);
        parsed += b != NULL;
        same_tree(a, b, round);
        cJSON_Delete(a);
        cJSON_Delete(b);
    }
    /* Both ways were exercised: many texts taken by the fast path, many left to cJSON. */
    assert_true(fast_ok > 10000);
    assert_true(parsed - fast_ok > 1000);
    cJSON *d = th_json_parse_as_cjson("[1.5,1e3,7]", 11);
    assert_non_null(d);
    for (const cJSON *c = d->child; c != NULL; c = c->next)
        assert_false(c->type & TH_JSON_DECIMAL);
    cJSON_Delete(d);
}

static void test_th_json_parse_fast_request_succeeds(void **state)
{
    (void)state;
    static const char req[] =
        "{\"commands\":[{\"command\":\"updateTwin\",\"deviceId\":\"bd-00001\",\"patch\":"
        "{\"properties\":{\"desired\":{\"targetTemperature\":22.5,\"mode\":\"eco\","
        "\"round\":3}}},\"correlationData\":\"3-1\"}]}";
    cJSON *doc = th_json_parse_fast(req, sizeof req - 1, 64);
    assert_non_null(doc);
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(
                cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(doc, "commands"), 0), "patch"),
            "properties"),
        "desired");
    assert_true(cJSON_GetObjectItemCaseSensitive(d, "targetTemperature")->type & TH_JSON_DECIMAL);
    assert_false(cJSON_GetObjectItemCaseSensitive(d, "round")->type & TH_JSON_DECIMAL);
    cJSON_Delete(doc);
    /* too deep, and a \u escape: left to cJSON */
    assert_null(th_json_parse_fast("[[1]]", 5, 1));
    assert_null(th_json_parse_fast("\"\\u0041\"", 8, 64));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_th_json_parse_fast_same_as_cjson_path_succeeds),
        cmocka_unit_test(test_th_json_parse_fast_request_succeeds),
        cmocka_unit_test(test_th_json_parse_as_cjson_same_as_cjson_succeeds),
        cmocka_unit_test(test_th_json_parse_fast_long_numbers_same_as_cjson_path_succeeds),
    };
    return cmocka_run_group_tests_name("json_fast", tests, NULL, NULL);
}
