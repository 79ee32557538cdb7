/*
 * test_twin_write_fast.c - the shortcuts of the service-side twin write
 * (core/twin_write.c: the request used without a copy when it holds no
 * read-only member, the notification printed straight from the patch, a
 * shared metadata node restamped when the patch rewrites all below it) give
 * what the general way gives: random sequences of writes run on two twins,
 * one with the shortcuts and one without (twin_fast_paths), and everything
 * is compared byte for byte after each write: the result and error, the
 * notification's text, the written document, the saved state (sections,
 * $metadata, versions, etag) and the service view.
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
#include "th_limits.h"
#include "twin.h"
#include "twin_private.h"

#define NOW 1700000000000000LL

static unsigned lcg_next(unsigned *seed)
{
    *seed = *seed * 1103515245u + 12345u;
    return (*seed >> 1) & 0x7fffffffu;
}

/* Appends printf-style text to out (bounded). */
static void put(char *out, size_t size, const char *fmt, ...)
{
    size_t len = strlen(out);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out + len, size - len, fmt, ap);
    va_end(ap);
}

/* Keys from a small alphabet (so patches name existing members, and now and then twice),
 * the read-only names, and now and then one the content rules refuse. */
static const char *some_key(unsigned *seed)
{
    static const char *const keys[] = {"a",   "b", "mode",     "temp",      "cfg",
                                       "n",   "a", "b",        "mode",      "temp",
                                       "cfg", "n", "$version", "$metadata", "bad.key"};
    unsigned r = lcg_next(seed) % 100;
    if (r < 94)
        return keys[r % 12];
    return keys[12 + r % 3];
}

static void some_value(unsigned *seed, int depth, char *out, size_t size);

static void some_object(unsigned *seed, int depth, char *out, size_t size)
{
    int n = (int)(lcg_next(seed) % 5);
    put(out, size, "{");
    if (depth == 1 && lcg_next(seed) % 2 == 0) {
        /* A big member of a section root: sections grow over their size limit now and then
         * (tags 8 KB, desired 32 KB) and are refused after the merge, which must be undone. */
        put(out, size, "\"big%u\":\"%3500d\"", lcg_next(seed) % 12, 7);
        if (n > 0)
            put(out, size, ",");
    }
    for (int i = 0; i < n; i++) {
        put(out, size, "%s\"%s\":", i ? "," : "", some_key(seed));
        some_value(seed, depth + 1, out, size);
    }
    put(out, size, "}");
}

static void some_value(unsigned *seed, int depth, char *out, size_t size)
{
    switch (lcg_next(seed) % (depth < 4 ? 9 : 6)) {
    case 0:
        put(out, size, "null");
        break;
    case 1:
        put(out, size, lcg_next(seed) & 1 ? "true" : "false");
        break;
    case 2:
        if (lcg_next(seed) % 6 == 0) {
            /* Big strings: a section over its size limit now and then (tags 8 KB, desired
             * 32 KB), refused after the merge, so the write must be undone. */
            size_t len = strlen(out), big = 2000 + lcg_next(seed) % 2000;
            if (len + big + 3 < size) {
                out[len] = '"';
                memset(out + len + 1, 'x', big);
                out[len + 1 + big] = '"';
                out[len + 2 + big] = '\0';
            }
            break;
        }
        put(out, size, "\"v%u\\n\\\"q\"", lcg_next(seed) % 50);
        break;
    case 3:
        put(out, size, "%u", lcg_next(seed) % 1000);
        break;
    case 4:
        put(out, size, "%u.%u", lcg_next(seed) % 100, 1 + lcg_next(seed) % 9);
        break;
    case 5:
        put(out, size, "[1,\"x\",%s]", lcg_next(seed) % 4 == 0 ? "{\"$version\":3,\"k\":1}" : "2");
        break;
    default:
        some_object(seed, depth, out, size);
    }
}

/* A service write: tags and/or desired, each an object, null, or absent; now and then a
 * reported part of read-only members, or a part of the wrong type. */
static void some_request(unsigned *seed, char *out, size_t size)
{
    out[0] = '\0';
    put(out, size, "{\"deviceId\":\"d\"");
    unsigned t = lcg_next(seed) % 10;
    if (t < 4) {
        put(out, size, ",\"tags\":");
        some_object(seed, 1, out, size);
    } else if (t == 4) {
        put(out, size, ",\"tags\":null");
    }
    unsigned d = lcg_next(seed) % 20;
    if (d < 17) {
        put(out, size, ",\"properties\":{\"desired\":");
        if (d < 15)
            some_object(seed, 1, out, size);
        else if (d == 15)
            put(out, size, "null");
        else
            put(out, size, "7");
        if (lcg_next(seed) % 8 == 0)
            put(out, size, ",\"reported\":{\"$version\":4}");
        put(out, size, "}");
    }
    put(out, size, "}");
}

static cJSON *parse(const char *text)
{
    cJSON *doc = NULL;
    struct th_error err = {0};
    if (th_json_parse(text, strlen(text), TH_JSON_MAX_INPUT_BYTES, 64, &doc, &err) != TH_OK)
        fail_msg("generated JSON does not parse: %s: %s", text, err.message);
    return doc;
}

static char *printed(const cJSON *item)
{
    char *text = th_json_print(item);
    assert_non_null(text);
    return text;
}

static void assert_same(const char *fast, const char *slow, int round, const char *what,
                        const char *request)
{
    if (strcmp(fast, slow) != 0)
        fail_msg("round %d, %s differs for %s:\n fast %s\n slow %s", round, what, request, fast,
                 slow);
}

/* Everything the twin holds and shows, as one text; free(). */
static char *twin_text(const struct th_twin *twin)
{
    cJSON *state = th_twin_state_json(twin), *view = th_twin_properties_view(twin);
    assert_non_null(state);
    assert_non_null(view);
    char *a = printed(state), *b = printed(view);
    char etag[16];
    th_twin_etag(twin, etag);
    size_t n = strlen(a) + strlen(b) + 64;
    char *all = malloc(n);
    assert_non_null(all);
    snprintf(all, n, "%s|%s|%s", a, b, etag);
    free(a);
    free(b);
    cJSON_Delete(state);
    cJSON_Delete(view);
    return all;
}

/* Refusals seen after the merge, which the in-place write must undo. */
static int over_limit, etag_refused;

/* One write on both twins, the fast one with the flags `as_text` / `no_doc`. */
static void write_both(struct th_twin *fast, struct th_twin *slow, const char *request,
                       bool replace, const char *if_match, int64_t t, bool as_text, bool no_doc,
                       int round)
{
    cJSON *doc_fast = parse(request), *doc_slow = parse(request);
    struct th_twin_write rf = {.mode = replace ? TH_TWIN_WRITE_REPLACE : TH_TWIN_WRITE_PATCH,
                               .doc = doc_fast,
                               .if_match = if_match,
                               .no_desired_doc = no_doc,
                               .notification_as_text = as_text};
    struct th_twin_write rs = {.mode = rf.mode, .doc = doc_slow, .if_match = if_match};
    struct th_twin_write_result of, os;
    struct th_error ef = {0}, es = {0};

    twin_fast_paths = true;
    th_result rcf = th_twin_service_write(fast, &rf, t, &of, &ef);
    twin_fast_paths = false;
    th_result rcs = th_twin_service_write(slow, &rs, t, &os, &es);
    twin_fast_paths = true;

    assert_int_equal(rcf, rcs);
    if (rcs == TH_ERR_TOO_LARGE && es.code == TH_EC_DEVICE_MODEL_MAX_PROPERTIES_EXCEEDED)
        over_limit++;
    if (rcs == TH_ERR_PRECONDITION)
        etag_refused++;
    assert_int_equal(ef.status, es.status);
    assert_int_equal(ef.code, es.code);
    assert_same(ef.message, es.message, round, "the error", request);
    assert_int_equal(of.tags_written, os.tags_written);
    assert_int_equal(of.desired_written, os.desired_written);
    assert_int_equal(of.desired_version, os.desired_version);
    if (os.notification != NULL) {
        char *slow_note = printed(os.notification);
        if (as_text) {
            assert_null(of.notification);
            assert_non_null(of.notification_text);
            assert_int_equal(of.notification_len, strlen(of.notification_text));
            assert_same(of.notification_text, slow_note, round, "the notification", request);
        } else {
            char *fast_note = printed(of.notification);
            assert_same(fast_note, slow_note, round, "the notification", request);
            free(fast_note);
        }
        free(slow_note);
    } else {
        assert_null(of.notification);
        assert_null(of.notification_text);
    }
    if (os.desired != NULL && !no_doc) {
        char *a = printed(of.desired), *b = printed(os.desired);
        assert_same(a, b, round, "the written document", request);
        free(a);
        free(b);
    } else {
        assert_null(of.desired);
    }
    char *a = twin_text(fast), *b = twin_text(slow);
    assert_same(a, b, round, "the twin", request);
    free(a);
    free(b);
    th_twin_write_result_free(&of);
    th_twin_write_result_free(&os);
    cJSON_Delete(doc_fast);
    cJSON_Delete(doc_slow);
}

static int rounds_written;

static void test_th_twin_service_write_fast_same_as_general_succeeds(void **state)
{
    (void)state;
    unsigned seed = 1515;
    static char request[1 << 17];
    for (int twin_no = 0; twin_no < 300; twin_no++) {
        struct th_twin *fast = th_twin_new(NOW), *slow = th_twin_new(NOW);
        assert_non_null(fast);
        assert_non_null(slow);
        int64_t t = NOW;
        int writes = 1 + (int)(lcg_next(&seed) % 20);
        for (int w = 0; w < writes; w++) {
            /* Often the same time again: stamps that match the shared node's. */
            t += (int64_t)(lcg_next(&seed) % 3) * 1000001;
            some_request(&seed, request, sizeof request);
            bool replace = lcg_next(&seed) % 5 == 0;
            const char *if_match = lcg_next(&seed) % 10 == 0 ? "\"AAAAAAAAAAE=\"" : NULL;
            write_both(fast, slow, request, replace, if_match, t, lcg_next(&seed) & 1,
                       lcg_next(&seed) % 3 == 0, twin_no);
            rounds_written++;
        }
        th_twin_free(fast);
        th_twin_free(slow);
    }
    assert_true(rounds_written > 1000);
    assert_true(over_limit > 20);
    assert_true(etag_refused > 20);
}

/* The patch desired path (th_twin_patch_desired) shares the copy shortcut. */
static void test_th_twin_patch_desired_fast_same_as_general_succeeds(void **state)
{
    (void)state;
    unsigned seed = 77;
    static char text[1 << 17];
    for (int twin_no = 0; twin_no < 200; twin_no++) {
        struct th_twin *fast = th_twin_new(NOW), *slow = th_twin_new(NOW);
        int64_t t = NOW;
        for (int w = 0; w < 8; w++) {
            t += (int64_t)(lcg_next(&seed) % 2) * 1000001;
            text[0] = '\0';
            some_object(&seed, 1, text, sizeof text);
            cJSON *pf = parse(text), *ps = parse(text), *nf = NULL, *ns = NULL;
            struct th_error ef = {0}, es = {0};
            twin_fast_paths = true;
            th_result rf = th_twin_patch_desired(fast, pf, t, &nf, &ef);
            twin_fast_paths = false;
            th_result rs = th_twin_patch_desired(slow, ps, t, &ns, &es);
            twin_fast_paths = true;
            assert_int_equal(rf, rs);
            assert_same(ef.message, es.message, twin_no, "the error", text);
            if (ns != NULL) {
                char *a = printed(nf), *b = printed(ns);
                assert_same(a, b, twin_no, "the notification", text);
                free(a);
                free(b);
            }
            char *a = twin_text(fast), *b = twin_text(slow);
            assert_same(a, b, twin_no, "the twin", text);
            free(a);
            free(b);
            cJSON_Delete(nf);
            cJSON_Delete(ns);
            cJSON_Delete(pf);
            cJSON_Delete(ps);
        }
        th_twin_free(fast);
        th_twin_free(slow);
    }
}

/* cJSON allocations left before one fails (-1: none fails). */
static long allocs_left = -1;

static void *failing_malloc(size_t n)
{
    if (allocs_left == 0)
        return NULL;
    if (allocs_left > 0)
        allocs_left--;
    return malloc(n);
}

/* A write that runs out of memory half way (the n-th cJSON allocation fails, for every n until
 * none does) leaves the twin exactly as it was: the in-place write is undone. */
static void test_th_twin_service_write_out_of_memory_changes_nothing_fails(void **state)
{
    (void)state;
    static const char *const requests[] = {
        "{\"tags\":{\"t\":{\"u\":1},\"s\":null,\"new\":[1,2]},\"properties\":{\"desired\":"
        "{\"a\":{\"x\":{\"y\":2}},\"b\":null,\"c\":\"new\",\"d\":{\"e\":null},\"a2\":5}}}",
        "{\"properties\":{\"desired\":{\"a\":7,\"b\":8,\"c\":{\"k\":1},\"a2\":null}}}",
    };
    cJSON_Hooks hooks = {failing_malloc, free};
    for (size_t r = 0; r < sizeof requests / sizeof requests[0]; r++) {
        bool saw_nomem = false, saw_ok = false;
        for (long n = 0; n < 400 && !saw_ok; n++) {
            struct th_twin *twin = th_twin_new(NOW);
            cJSON *seed = parse("{\"tags\":{\"s\":1,\"t\":{\"v\":2}},\"properties\":{\"desired\":"
                                "{\"a\":{\"x\":1,\"z\":3},\"b\":2,\"a2\":{\"q\":1}}}}");
            struct th_twin_write w = {.mode = TH_TWIN_WRITE_PATCH, .doc = seed};
            struct th_twin_write_result res;
            struct th_error err = {0};
            assert_int_equal(th_twin_service_write(twin, &w, NOW, &res, &err), TH_OK);
            th_twin_write_result_free(&res);
            cJSON_Delete(seed);
            char *before = twin_text(twin);
            cJSON *doc = parse(requests[r]);
            w.doc = doc;
            w.notification_as_text = n & 1;
            allocs_left = n;
            cJSON_InitHooks(&hooks);
            th_result rc = th_twin_service_write(twin, &w, NOW + 1000000, &res, &err);
            cJSON_InitHooks(NULL);
            allocs_left = -1;
            char *after = twin_text(twin);
            if (rc == TH_OK) {
                saw_ok = true;
                assert_string_not_equal(before, after);
            } else {
                assert_int_equal(rc, TH_ERR_NOMEM);
                assert_string_equal(before, after);
                saw_nomem = true;
            }
            th_twin_write_result_free(&res);
            free(before);
            free(after);
            cJSON_Delete(doc);
            th_twin_free(twin);
        }
        assert_true(saw_nomem);
        assert_true(saw_ok);
    }
}

/* twin_patch_rewrites_all: only when every member is rewritten, never merged into. */
static void test_twin_patch_rewrites_all_cases_succeeds(void **state)
{
    (void)state;
    static const struct {
        const char *target, *patch;
        bool want;
    } cases[] = {
        {"{}", "{}", true},
        {"{\"a\":1,\"b\":2}", "{\"b\":3,\"a\":null}", true},
        {"{\"a\":1,\"b\":2}", "{\"a\":3}", false},
        {"{\"a\":{\"x\":1}}", "{\"a\":{\"y\":1}}", false},
        {"{\"a\":1}", "{\"a\":{\"y\":1}}", true},
        {"{\"a\":{\"x\":1}}", "{\"a\":5,\"a\":{\"y\":1}}", false},
        {"{\"a\":1,\"a\":2}", "{\"a\":3,\"b\":1}", false},
        {"{\"a\":1}", "{\"b\":1,\"c\":1}", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cJSON *t = parse(cases[i].target), *p = parse(cases[i].patch);
        if (twin_patch_rewrites_all(t, p) != cases[i].want)
            fail_msg("case %zu: %s onto %s", i, cases[i].patch, cases[i].target);
        cJSON_Delete(t);
        cJSON_Delete(p);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_th_twin_service_write_fast_same_as_general_succeeds),
        cmocka_unit_test(test_th_twin_patch_desired_fast_same_as_general_succeeds),
        cmocka_unit_test(test_th_twin_service_write_out_of_memory_changes_nothing_fails),
        cmocka_unit_test(test_twin_patch_rewrites_all_cases_succeeds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
