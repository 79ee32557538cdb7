/*
 * test_twin.c - unit tests for emulator/core/twin.c: merge-patch semantics,
 * section versions, etag and twin version, $metadata, validation rules and
 * size limits, notification bodies and the device/service views
 * (iothub-protocol.md sections 6 and 7).
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
#include "util.h"

/* 2020-07-09T13:55:50.7976980Z and two later instants. */
#define T0 1594302950797698LL
#define T1 (T0 + 1000000LL)
#define T2 (T0 + 2000000LL)

/* ---- helpers ---- */

static cJSON *parse(const char *text)
{
    cJSON *doc = cJSON_Parse(text);
    if (doc == NULL)
        fail_msg("test JSON does not parse: %s", text);
    return doc;
}

/* Parsed the way the hub parses input (flags such as TH_JSON_DECIMAL set); cJSON_Delete. */
static cJSON *parse_wire(const char *text)
{
    cJSON *doc = NULL;
    struct th_error err = {0};
    if (th_json_parse(text, strlen(text), TH_JSON_MAX_INPUT_BYTES, 64, &doc, &err) != TH_OK)
        fail_msg("test JSON does not parse: %s: %s", text, err.message);
    return doc;
}

/* Fails the test unless `actual` equals the JSON text `expected` (member order ignored). */
static void assert_json_eq(const cJSON *actual, const char *expected)
{
    cJSON *want = parse(expected);
    bool same = cJSON_Compare(actual, want, 1);
    if (!same) {
        char *got = cJSON_PrintUnformatted(actual);
        print_error("expected %s\n     got %s\n", expected, got != NULL ? got : "(null)");
        free(got);
    }
    cJSON_Delete(want);
    assert_true(same);
}

/*
 * The twin's stored $metadata ("desiredMeta" or "reportedMeta" of its state),
 * or its member `key` when non-NULL, compared with `expected` (NULL: absent).
 */
static void assert_meta_eq(const struct th_twin *twin, const char *which, const char *key,
                           const char *expected)
{
    cJSON *state = th_twin_state_json(twin);
    assert_non_null(state);
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(state, which);
    assert_non_null(meta);
    if (key != NULL)
        meta = cJSON_GetObjectItemCaseSensitive(meta, key);
    if (expected == NULL)
        assert_null(meta);
    else
        assert_json_eq(meta, expected);
    cJSON_Delete(state);
}

static struct th_twin *new_twin(void)
{
    struct th_twin *twin = th_twin_new(T0);
    assert_non_null(twin);
    return twin;
}

static void patch_reported_ok(struct th_twin *twin, const char *patch_text, int64_t now)
{
    cJSON *patch = parse(patch_text);
    struct th_error err = {0};
    th_result rc = th_twin_patch_reported(twin, patch, now, &err);
    if (rc != TH_OK)
        fail_msg("reported patch %s refused: %s", patch_text, err.message);
    cJSON_Delete(patch);
}

static void patch_desired_ok(struct th_twin *twin, const char *patch_text, int64_t now)
{
    cJSON *patch = parse(patch_text);
    struct th_error err = {0};
    th_result rc = th_twin_patch_desired(twin, patch, now, NULL, &err);
    if (rc != TH_OK)
        fail_msg("desired patch %s refused: %s", patch_text, err.message);
    cJSON_Delete(patch);
}

static th_result patch_reported(struct th_twin *twin, const char *patch_text, struct th_error *err)
{
    cJSON *patch = parse(patch_text);
    th_result rc = th_twin_patch_reported(twin, patch, T1, err);
    cJSON_Delete(patch);
    return rc;
}

/* Everything observable about a twin, as one string; caller frees with free(). */
static char *snapshot(const struct th_twin *twin)
{
    cJSON *props = th_twin_properties_view(twin);
    assert_non_null(props);
    char *p = cJSON_PrintUnformatted(props);
    char *t = cJSON_PrintUnformatted(twin->tags);
    assert_non_null(p);
    assert_non_null(t);
    size_t n = strlen(p) + strlen(t) + 64;
    char *out = malloc(n);
    assert_non_null(out);
    snprintf(out, n, "%s|%s|%llu", p, t, (unsigned long long)twin->etag_counter);
    free(p);
    free(t);
    cJSON_Delete(props);
    return out;
}

/* A string of `n` 'x' characters; caller frees with free(). */
static char *filler(size_t n)
{
    char *s = malloc(n + 1);
    assert_non_null(s);
    memset(s, 'x', n);
    s[n] = '\0';
    return s;
}

/* {"k": "<n x's>"} built with cJSON; caller frees with cJSON_Delete. */
static cJSON *string_patch(const char *key, size_t n)
{
    char *s = filler(n);
    cJSON *patch = cJSON_CreateObject();
    assert_non_null(patch);
    assert_non_null(cJSON_AddStringToObject(patch, key, s));
    free(s);
    return patch;
}

/* {"l1":{"l2":...{"l<levels>":1}}}: the innermost value sits at level `levels`. */
static cJSON *nested_patch(int levels)
{
    cJSON *value = cJSON_CreateNumber(1);
    assert_non_null(value);
    for (int i = levels; i >= 1; i--) {
        char key[16];
        snprintf(key, sizeof key, "l%d", i);
        cJSON *obj = cJSON_CreateObject();
        assert_non_null(obj);
        cJSON_AddItemToObject(obj, key, value);
        value = obj;
    }
    return value;
}

/* Expects a refused reported patch and checks result, code, status and message. */
static void expect_reported_refused(const char *patch_text, th_result result, int code,
                                    const char *message_part)
{
    struct th_twin *twin = new_twin();
    patch_reported_ok(twin, "{\"keep\":1}", T0);
    char *before = snapshot(twin);
    struct th_error err = {0};

    assert_int_equal(patch_reported(twin, patch_text, &err), result);
    assert_int_equal(err.result, result);
    assert_int_equal(err.code, code);
    assert_int_equal(err.status, code / 1000);
    if (strstr(err.message, message_part) == NULL)
        fail_msg("message \"%s\" lacks \"%s\"", err.message, message_part);
    char *after = snapshot(twin);
    assert_string_equal(after, before);
    assert_int_equal(twin->reported_version, 2);
    free(before);
    free(after);
    th_twin_free(twin);
}

/* ---- lifecycle and views ---- */

static void test_th_twin_new_fresh_twin_succeeds(void **state)
{
    struct th_twin *twin = new_twin();
    assert_int_equal(twin->desired_version, 1);
    assert_int_equal(twin->reported_version, 1);
    assert_int_equal(twin->etag_counter, 1);
    assert_json_eq(twin->tags, "{}");

    cJSON *view = th_twin_device_view(twin);
    assert_json_eq(view, "{\"desired\":{\"$version\":1},\"reported\":{\"$version\":1}}");
    cJSON_Delete(view);

    char t0[TH_TIME_BUF], expected[256];
    th_time_format(T0, t0);
    snprintf(expected, sizeof expected,
             "{\"desired\":{\"$metadata\":{\"$lastUpdated\":\"%s\",\"$lastUpdatedVersion\":1},"
             "\"$version\":1},"
             "\"reported\":{\"$metadata\":{\"$lastUpdated\":\"%s\"},\"$version\":1}}",
             t0, t0);
    view = th_twin_properties_view(twin);
    assert_json_eq(view, expected);
    cJSON_Delete(view);
    th_twin_free(twin);
}

static void test_th_twin_free_null_and_half_built_succeeds(void **state)
{
    th_twin_free(NULL);
    struct th_twin *half = calloc(1, sizeof *half);
    assert_non_null(half);
    half->tags = cJSON_CreateObject();
    assert_non_null(half->tags);
    th_twin_free(half); /* leak checkers catch a missed member */
}

static void test_th_twin_clone_independent_copy_succeeds(void **state)
{
    struct th_twin *twin = new_twin();
    patch_reported_ok(twin, "{\"a\":{\"b\":1}}", T1);
    struct th_twin *copy = th_twin_clone(twin);
    assert_non_null(copy);
    char *before = snapshot(twin);
    char *copied = snapshot(copy);
    assert_string_equal(copied, before);

    patch_reported_ok(copy, "{\"a\":null}", T2);
    char *after = snapshot(twin);
    assert_string_equal(after, before);
    assert_int_equal(copy->reported_version, 3);
    assert_int_equal(twin->reported_version, 2);
    free(before);
    free(copied);
    free(after);
    th_twin_free(copy);
    th_twin_free(twin);
}

static void test_th_twin_device_view_shape_succeeds(void **state)
{
    struct th_twin *twin = new_twin();
    patch_desired_ok(twin, "{\"x\":1}", T1);
    patch_reported_ok(twin, "{\"r\":true}", T1);
    cJSON *tags = parse("{\"hidden\":1}");
    assert_int_equal(th_twin_patch_tags(twin, tags, NULL), TH_OK);
    cJSON_Delete(tags);

    cJSON *view = th_twin_device_view(twin);
    assert_json_eq(view, "{\"desired\":{\"x\":1,\"$version\":2},"
                         "\"reported\":{\"r\":true,\"$version\":2}}");
    /* $version is the last member, as the hub sends it. */
    cJSON *desired = cJSON_GetObjectItemCaseSensitive(view, "desired");
    assert_string_equal(desired->child->next->string, "$version");
    cJSON_Delete(view);
    th_twin_free(twin);
}

static void test_th_twin_properties_view_with_metadata_succeeds(void **state)
{
    struct th_twin *twin = new_twin();
    patch_desired_ok(twin, "{\"x\":1}", T1);
    patch_reported_ok(twin, "{\"r\":\"s\"}", T2);

    char t1[TH_TIME_BUF], t2[TH_TIME_BUF], expected[1024];
    th_time_format(T1, t1);
    th_time_format(T2, t2);
    snprintf(expected, sizeof expected,
             "{\"desired\":{\"x\":1,\"$metadata\":{\"$lastUpdated\":\"%s\","
             "\"$lastUpdatedVersion\":2,\"x\":{\"$lastUpdated\":\"%s\",\"$lastUpdatedVersion\":2}},"
             "\"$version\":2},"
             "\"reported\":{\"r\":\"s\",\"$metadata\":{\"$lastUpdated\":\"%s\","
             "\"r\":{\"$lastUpdated\":\"%s\"}},\"$version\":2}}",
             t1, t1, t2, t2);
    cJSON *view = th_twin_properties_view(twin);
    assert_json_eq(view, expected);
    cJSON_Delete(view);
    th_twin_free(twin);
}

/* ---- merge semantics (7.4) ---- */

static void test_th_twin_patch_reported_merge_succeeds(void **state)
{
    struct th_twin *twin = new_twin();
    patch_reported_ok(twin, "{\"a\":1,\"b\":{\"c\":1,\"d\":2}}", T1);
    patch_reported_ok(twin, "{\"b\":{\"c\":null,\"e\":3},\"f\":\"x\"}", T2);
    assert_json_eq(twin->reported, "{\"a\":1,\"b\":{\"d\":2,\"e\":3},\"f\":\"x\"}");
    assert_int_equal(twin->reported_version, 3);
    th_twin_free(twin);
}

static void test_th_twin_patch_reported_nested_null_on_absent_parent_succeeds(void **state)
{
    struct th_twin *twin = new_twin();
    patch_reported_ok(twin, "{\"a\":{\"b\":null}}", T1);
    assert_json_eq(twin->reported, "{\"a\":{}}");
    patch_reported_ok(twin, "{\"a\":{\"b\":null}}", T2);
    assert_json_eq(twin->reported, "{\"a\":{}}");
    /* Nulls deeper inside a new object vanish too. */
    patch_reported_ok(twin, "{\"n\":{\"o\":{\"p\":null},\"q\":1}}", T2);
    assert_json_eq(twin->reported, "{\"a\":{},\"n\":{\"o\":{},\"q\":1}}");
    th_twin_free(twin);
}

static void test_th_twin_patch_reported_delete_absent_key_succeeds(void **state)
{
    struct th_twin *twin = new_twin();
    patch_reported_ok(twin, "{\"a\":1}", T1);
    patch_reported_ok(twin, "{\"zz\":null}", T2);
    assert_json_eq(twin->reported, "{\"a\":1}");
    assert_meta_eq(twin, "reportedMeta", "zz", NULL);
    assert_int_equal(twin->reported_version, 3); /* accepted, so counted */
    th_twin_free(twin);
}

static void test_th_twin_patch_reported_arrays_replaced_succeeds(void **state)
{
    struct th_twin *twin = new_twin();
    patch_reported_ok(twin, "{\"arr\":[1,2,3],\"o\":{\"k\":1}}", T1);
    patch_reported_ok(twin, "{\"arr\":[4]}", T1);
    assert_json_eq(twin->reported, "{\"arr\":[4],\"o\":{\"k\":1}}");
    patch_reported_ok(twin, "{\"arr\":{\"x\":[{\"y\":1}]},\"o\":[\"k\"]}", T1);
    assert_json_eq(twin->reported, "{\"arr\":{\"x\":[{\"y\":1}]},\"o\":[\"k\"]}");
    patch_reported_ok(twin, "{\"arr\":{\"x\":[]}}", T1);
    assert_json_eq(twin->reported, "{\"arr\":{\"x\":[]},\"o\":[\"k\"]}");
    th_twin_free(twin);
}

static void test_th_twin_patch_reported_object_replaced_by_scalar_succeeds(void **state)
{
    struct th_twin *twin = new_twin();
    patch_reported_ok(twin, "{\"a\":{\"b\":1}}", T1);
    patch_reported_ok(twin, "{\"a\":5}", T2);
    assert_json_eq(twin->reported, "{\"a\":5}");

    char t2[TH_TIME_BUF], expected[256];
    th_time_format(T2, t2);
    snprintf(expected, sizeof expected, "{\"$lastUpdated\":\"%s\"}", t2);
    assert_meta_eq(twin, "reportedMeta", "a", expected);

    patch_reported_ok(twin, "{\"a\":{\"c\":2}}", T2);
    assert_json_eq(twin->reported, "{\"a\":{\"c\":2}}");
    th_twin_free(twin);
}

static void test_th_twin_patch_tags_merge_succeeds(void **state)
{
    struct th_twin *twin = new_twin();
    cJSON *p1 = parse("{\"loc\":{\"region\":\"US\",\"bldg\":4},\"env\":\"test\"}");
    cJSON *p2 = parse("{\"loc\":{\"bldg\":null},\"env\":null,\"$version\":3}");
    assert_int_equal(th_twin_patch_tags(twin, p1, NULL), TH_OK);
    assert_int_equal(th_twin_patch_tags(twin, p2, NULL), TH_OK);
    assert_json_eq(twin->tags, "{\"loc\":{\"region\":\"US\"}}");
    cJSON_Delete(p1);
    cJSON_Delete(p2);
    th_twin_free(twin);
}

static void test_th_twin_replace_tags_drops_old_succeeds(void **state)
{
    struct th_twin *twin = new_twin();
    cJSON *p1 = parse("{\"a\":1,\"b\":2}");
    cJSON *p2 = parse("{\"c\":{\"d\":1}}");
    assert_int_equal(th_twin_patch_tags(twin, p1, NULL), TH_OK);
    assert_int_equal(th_twin_replace_tags(twin, p2, NULL), TH_OK);
    assert_json_eq(twin->tags, "{\"c\":{\"d\":1}}");
    cJSON_Delete(p1);
    cJSON_Delete(p2);
    th_twin_free(twin);
}

/* ---- versions, etag, twin version (7.3) ---- */

static void test_th_twin_patch_reported_version_bumps_only_when_accepted_succeeds(void **state)
{
    struct th_twin *twin = new_twin();
    struct th_error err = {0};
    patch_reported_ok(twin, "{\"a\":1}", T1);
    assert_int_equal(twin->reported_version, 2);
    assert_int_equal(patch_reported(twin, "{\"b.c\":1}", &err), TH_ERR_INVAL);
    assert_int_equal(twin->reported_version, 2);
    patch_reported_ok(twin, "{\"a\":2}", T1);
    assert_int_equal(twin->reported_version, 3);
    assert_int_equal(twin->desired_version, 1);
    th_twin_free(twin);
}

static void test_th_twin_etag_counter_service_writes_only_succeeds(void **state)
{
    struct th_twin *twin = new_twin();
    cJSON *doc = parse("{\"a\":1}");
    cJSON *bad = parse("{\"a b\":1}");
    struct th_error err = {0};

    patch_reported_ok(twin, "{\"r\":1}", T1);
    assert_int_equal(twin->etag_counter, 1);
    assert_int_equal(th_twin_patch_desired(twin, doc, T1, NULL, &err), TH_OK);
    assert_int_equal(twin->etag_counter, 2);
    assert_int_equal(th_twin_patch_tags(twin, doc, &err), TH_OK);
    assert_int_equal(twin->etag_counter, 3);
    assert_int_equal(th_twin_replace_desired(twin, doc, T1, NULL, &err), TH_OK);
    assert_int_equal(twin->etag_counter, 4);
    assert_int_equal(th_twin_replace_tags(twin, doc, &err), TH_OK);
    assert_int_equal(twin->etag_counter, 5);
    assert_int_equal(th_twin_patch_desired(twin, bad, T1, NULL, &err), TH_ERR_INVAL);
    assert_int_equal(th_twin_patch_tags(twin, bad, &err), TH_ERR_INVAL);
    assert_int_equal(twin->etag_counter, 5);
    assert_int_equal(twin->desired_version, 3);
    assert_int_equal(twin->reported_version, 2);
    cJSON_Delete(doc);
    cJSON_Delete(bad);
    th_twin_free(twin);
}

static void test_th_twin_etag_big_endian_base64_succeeds(void **state)
{
    struct th_twin twin = {.etag_counter = 1};
    char buf[16];
    th_twin_etag(&twin, buf);
    assert_string_equal(buf, "AAAAAAAAAAE=");
    twin.etag_counter = 11;
    th_twin_etag(&twin, buf);
    assert_string_equal(buf, "AAAAAAAAAAs=");
    twin.etag_counter = 256;
    th_twin_etag(&twin, buf);
    assert_string_equal(buf, "AAAAAAAAAQA=");
}

static void test_th_twin_version_etag_plus_reported_succeeds(void **state)
{
    struct th_twin *twin = new_twin();
    assert_int_equal(th_twin_version(twin), 2); /* real hub: etag 1, reported 1 -> 2 */
    patch_reported_ok(twin, "{\"a\":1}", T1);
    patch_reported_ok(twin, "{\"a\":2}", T1);
    patch_desired_ok(twin, "{\"d\":1}", T1);
    assert_int_equal(th_twin_version(twin), 2 + 3);
    struct th_twin sample = {.etag_counter = 11, .reported_version = 313};
    assert_int_equal(th_twin_version(&sample), 324);
    th_twin_free(twin);
}

/* ---- $metadata (7.2) ---- */

static void test_th_twin_patch_desired_metadata_versions_succeeds(void **state)
{
    struct th_twin *twin = new_twin();
    patch_desired_ok(twin, "{\"x\":1,\"o\":{\"p\":2}}", T1);
    patch_desired_ok(twin, "{\"o\":{\"q\":3}}", T2);

    char expected[1024];
    char t1[TH_TIME_BUF], t2[TH_TIME_BUF];
    th_time_format(T1, t1);
    th_time_format(T2, t2);
    snprintf(expected, sizeof expected,
             "{\"$lastUpdated\":\"%s\",\"$lastUpdatedVersion\":3,"
             "\"x\":{\"$lastUpdated\":\"%s\",\"$lastUpdatedVersion\":2},"
             "\"o\":{\"$lastUpdated\":\"%s\",\"$lastUpdatedVersion\":3,"
             "\"p\":{\"$lastUpdated\":\"%s\",\"$lastUpdatedVersion\":2},"
             "\"q\":{\"$lastUpdated\":\"%s\",\"$lastUpdatedVersion\":3}}}",
             t2, t1, t2, t1, t2);
    assert_meta_eq(twin, "desiredMeta", NULL, expected);
    assert_string_not_equal(t1, t2);
    th_twin_free(twin);
}

static void test_th_twin_patch_reported_metadata_without_version_succeeds(void **state)
{
    struct th_twin *twin = new_twin();
    patch_reported_ok(twin, "{\"o\":{\"p\":1,\"q\":2}}", T1);
    patch_reported_ok(twin, "{\"o\":{\"p\":null}}", T2);

    char t1[TH_TIME_BUF], t2[TH_TIME_BUF], expected[512];
    th_time_format(T1, t1);
    th_time_format(T2, t2);
    /* The deleted key's entry is gone and its parent is refreshed; no versions. */
    snprintf(expected, sizeof expected,
             "{\"$lastUpdated\":\"%s\",\"o\":{\"$lastUpdated\":\"%s\","
             "\"q\":{\"$lastUpdated\":\"%s\"}}}",
             t2, t2, t1);
    assert_meta_eq(twin, "reportedMeta", NULL, expected);
    th_twin_free(twin);
}

static void test_th_twin_patch_desired_delete_refreshes_parent_succeeds(void **state)
{
    struct th_twin *twin = new_twin();
    patch_desired_ok(twin, "{\"a\":1,\"b\":2}", T1);
    patch_desired_ok(twin, "{\"a\":null}", T2);

    char t1[TH_TIME_BUF], t2[TH_TIME_BUF], expected[512];
    th_time_format(T1, t1);
    th_time_format(T2, t2);
    snprintf(expected, sizeof expected,
             "{\"$lastUpdated\":\"%s\",\"$lastUpdatedVersion\":3,"
             "\"b\":{\"$lastUpdated\":\"%s\",\"$lastUpdatedVersion\":2}}",
             t2, t1);
    assert_meta_eq(twin, "desiredMeta", NULL, expected);
    assert_json_eq(twin->desired, "{\"b\":2}");
    th_twin_free(twin);
}

/* ---- notifications (6.3) ---- */

static void test_th_twin_patch_desired_notification_keeps_nulls_succeeds(void **state)
{
    struct th_twin *twin = new_twin();
    cJSON *patch = parse("{\"a\":1,\"b\":null,\"c\":{\"d\":null},\"$version\":99,"
                         "\"$metadata\":{}}");
    cJSON *note = NULL;
    struct th_error err = {0};
    assert_int_equal(th_twin_patch_desired(twin, patch, T1, &note, &err), TH_OK);
    assert_non_null(note);
    assert_json_eq(note, "{\"a\":1,\"b\":null,\"c\":{\"d\":null},\"$version\":2}");
    assert_json_eq(twin->desired, "{\"a\":1,\"c\":{}}");
    /* The caller's patch is not modified. */
    assert_non_null(cJSON_GetObjectItemCaseSensitive(patch, "$metadata"));
    cJSON_Delete(note);
    cJSON_Delete(patch);
    th_twin_free(twin);
}

static void test_th_twin_replace_desired_notification_whole_document_succeeds(void **state)
{
    struct th_twin *twin = new_twin();
    patch_desired_ok(twin, "{\"a\":1,\"b\":{\"c\":2}}", T1);
    cJSON *doc = parse("{\"c\":3}");
    cJSON *note = NULL;
    assert_int_equal(th_twin_replace_desired(twin, doc, T2, &note, NULL), TH_OK);
    assert_json_eq(note, "{\"c\":3,\"$version\":3}");
    assert_json_eq(twin->desired, "{\"c\":3}");

    char t2[TH_TIME_BUF], expected[256];
    th_time_format(T2, t2);
    snprintf(expected, sizeof expected,
             "{\"$lastUpdated\":\"%s\",\"$lastUpdatedVersion\":3,"
             "\"c\":{\"$lastUpdated\":\"%s\",\"$lastUpdatedVersion\":3}}",
             t2, t2);
    assert_meta_eq(twin, "desiredMeta", NULL, expected);
    cJSON_Delete(note);
    cJSON_Delete(doc);
    th_twin_free(twin);
}

static void test_th_twin_patch_desired_refused_no_notification_fails(void **state)
{
    struct th_twin *twin = new_twin();
    cJSON *patch = parse("{\"$foo\":1}");
    cJSON *note = (cJSON *)&note;
    struct th_error err = {0};
    char *before = snapshot(twin);
    assert_int_equal(th_twin_patch_desired(twin, patch, T1, &note, &err), TH_ERR_INVAL);
    assert_null(note);
    assert_int_equal(err.code, 400004);
    char *after = snapshot(twin);
    assert_string_equal(after, before);
    free(before);
    free(after);
    cJSON_Delete(patch);
    th_twin_free(twin);
}

/* ---- read-only members ---- */

static void test_th_twin_patch_reported_version_member_fails(void **state)
{
    expect_reported_refused("{\"$version\":4}", TH_ERR_INVAL, 400004, "'$version' at reported");
}

static void test_th_twin_patch_reported_metadata_member_fails(void **state)
{
    expect_reported_refused("{\"a\":{\"$metadata\":{}}}", TH_ERR_INVAL, 400004,
                            "'$metadata' at reported.a");
}

static void test_th_twin_patch_reported_dollar_key_fails(void **state)
{
    expect_reported_refused("{\"$foo\":1}", TH_ERR_INVAL, 400004, "contains '$'");
}

static void test_th_twin_validate_patch_service_readonly_ignored_succeeds(void **state)
{
    cJSON *patch = parse("{\"a\":{\"$metadata\":{\"x.y\":1}},\"$version\":4}");
    assert_int_equal(th_twin_validate_patch(TH_SECTION_DESIRED, patch, NULL), TH_OK);
    assert_int_equal(th_twin_validate_patch(TH_SECTION_TAGS, patch, NULL), TH_OK);
    assert_int_equal(th_twin_validate_patch(TH_SECTION_REPORTED, patch, NULL), TH_ERR_INVAL);
    cJSON_Delete(patch);
}

static void test_th_twin_strip_readonly_recursive_succeeds(void **state)
{
    cJSON *doc = parse("{\"a\":{\"$metadata\":{},\"b\":1},\"$version\":3,"
                       "\"arr\":[{\"$version\":1,\"k\":2}],\"$other\":1}");
    th_twin_strip_readonly(doc);
    assert_json_eq(doc, "{\"a\":{\"b\":1},\"arr\":[{\"k\":2}],\"$other\":1}");
    th_twin_strip_readonly(NULL);
    cJSON_Delete(doc);
}

/* ---- validation rules (7.5) ---- */

static void test_th_twin_patch_reported_key_with_dot_fails(void **state)
{
    expect_reported_refused("{\"x\":{\"a.b\":1}}", TH_ERR_INVAL, 400004,
                            "property name 'a.b' at reported.x contains '.'");
}

static void test_th_twin_patch_reported_key_with_dollar_inside_fails(void **state)
{
    expect_reported_refused("{\"a$b\":1}", TH_ERR_INVAL, 400004, "contains '$'");
}

static void test_th_twin_patch_reported_key_with_space_fails(void **state)
{
    expect_reported_refused("{\"a b\":1}", TH_ERR_INVAL, 400004, "contains ' '");
}

static void test_th_twin_patch_reported_key_with_control_char_fails(void **state)
{
    expect_reported_refused("{\"a\\u0001b\":1}", TH_ERR_INVAL, 400004,
                            "'a?b' at reported contains control character 0x01");
}

static void test_th_twin_patch_reported_key_with_c1_control_fails(void **state)
{
    expect_reported_refused("{\"a\\u0085\":1}", TH_ERR_INVAL, 400004,
                            "'a?' at reported contains control character 0x85");
}

static void test_th_twin_patch_reported_empty_key_fails(void **state)
{
    expect_reported_refused("{\"\":1}", TH_ERR_INVAL, 400004, "empty property name");
}

static void test_th_twin_patch_reported_non_ascii_key_succeeds(void **state)
{
    struct th_twin *twin = new_twin();
    patch_reported_ok(twin, "{\"temp\\u00e9rature\":1}", T1);
    assert_non_null(cJSON_GetObjectItemCaseSensitive(twin->reported, "temp\xc3\xa9rature"));
    th_twin_free(twin);
}

static void test_th_twin_patch_reported_key_at_limit_succeeds(void **state)
{
    struct th_twin *twin = new_twin();
    char *key = filler(TH_TWIN_MAX_KEY_BYTES);
    cJSON *patch = cJSON_CreateObject();
    assert_non_null(patch);
    assert_non_null(cJSON_AddNumberToObject(patch, key, 1));
    assert_int_equal(th_twin_patch_reported(twin, patch, T1, NULL), TH_OK);
    cJSON_Delete(patch);
    free(key);
    th_twin_free(twin);
}

static void test_th_twin_patch_reported_key_over_limit_fails(void **state)
{
    struct th_twin *twin = new_twin();
    char *key = filler(TH_TWIN_MAX_KEY_BYTES + 1);
    cJSON *patch = cJSON_CreateObject();
    struct th_error err = {0};
    assert_non_null(patch);
    assert_non_null(cJSON_AddNumberToObject(patch, key, 1));
    assert_int_equal(th_twin_patch_reported(twin, patch, T1, &err), TH_ERR_TOO_LARGE);
    assert_int_equal(err.code, 400004);
    assert_non_null(strstr(err.message, "1025 bytes"));
    assert_non_null(strstr(err.message, "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...' at reported"));
    assert_int_equal(twin->reported_version, 1);
    assert_null(twin->reported->child);
    cJSON_Delete(patch);
    free(key);
    th_twin_free(twin);
}

static void test_th_twin_patch_reported_string_at_limit_succeeds(void **state)
{
    struct th_twin *twin = new_twin();
    cJSON *patch = string_patch("s", TH_TWIN_MAX_STRING_BYTES);
    assert_int_equal(th_twin_patch_reported(twin, patch, T1, NULL), TH_OK);
    assert_int_equal(twin->reported_version, 2);
    cJSON_Delete(patch);
    th_twin_free(twin);
}

static void test_th_twin_patch_reported_string_over_limit_fails(void **state)
{
    struct th_twin *twin = new_twin();
    cJSON *patch = cJSON_CreateObject();
    cJSON *inner = string_patch("s", TH_TWIN_MAX_STRING_BYTES + 1);
    struct th_error err = {0};
    assert_non_null(patch);
    cJSON_AddItemToObject(patch, "o", inner);
    assert_int_equal(th_twin_patch_reported(twin, patch, T1, &err), TH_ERR_TOO_LARGE);
    assert_int_equal(err.code, 400004);
    assert_int_equal(err.status, 400);
    assert_non_null(strstr(err.message, "reported.o.s"));
    assert_non_null(strstr(err.message, "4097 bytes"));
    assert_int_equal(twin->reported_version, 1);
    cJSON_Delete(patch);
    th_twin_free(twin);
}

static void test_th_twin_patch_reported_integer_range_limits_succeeds(void **state)
{
    struct th_twin *twin = new_twin();
    patch_reported_ok(twin, "{\"max\":4503599627370495,\"min\":-4503599627370496,\"f\":1.5}", T1);
    assert_true(cJSON_GetObjectItemCaseSensitive(twin->reported, "max")->valuedouble ==
                4503599627370495.0);
    th_twin_free(twin);
}

static void test_th_twin_patch_reported_integer_above_range_fails(void **state)
{
    expect_reported_refused("{\"n\":4503599627370496}", TH_ERR_INVAL, 400004, "at reported.n");
}

static void test_th_twin_patch_reported_integer_below_range_fails(void **state)
{
    expect_reported_refused("{\"a\":[1,-4503599627370497]}", TH_ERR_INVAL, 400004,
                            "at reported.a[1]");
}

static void test_th_twin_patch_reported_null_in_array_fails(void **state)
{
    expect_reported_refused("{\"a\":[1,null]}", TH_ERR_INVAL, 400004, "reported.a[1]");
}

static void test_th_twin_patch_reported_not_object_fails(void **state)
{
    expect_reported_refused("[1]", TH_ERR_INVAL, 400004, "must be a JSON object");
}

static void test_th_twin_patch_reported_depth_at_limit_succeeds(void **state)
{
    struct th_twin *twin = new_twin();
    cJSON *patch = nested_patch(TH_TWIN_MAX_DEPTH);
    struct th_error err = {0};
    assert_int_equal(th_twin_patch_reported(twin, patch, T1, &err), TH_OK);
    assert_int_equal(twin->reported_version, 2);
    cJSON_Delete(patch);
    /* An empty object at level 10 is the deepest object. */
    patch = parse("{\"l1\":{\"l2\":{\"l3\":{\"l4\":{\"l5\":{\"l6\":{\"l7\":{\"l8\":{\"l9\":"
                  "{\"l10\":{}}}}}}}}}}}");
    assert_int_equal(th_twin_patch_reported(twin, patch, T1, &err), TH_OK);
    cJSON_Delete(patch);
    th_twin_free(twin);
}

/* The device-twins article's own valid example: ten nested objects, a string in the tenth. */
static void test_th_twin_patch_tags_article_depth_example_succeeds(void **state)
{
    struct th_twin *twin = new_twin();
    cJSON *patch = parse("{\"one\":{\"two\":{\"three\":{\"four\":{\"five\":{\"six\":{\"seven\":"
                         "{\"eight\":{\"nine\":{\"ten\":{\"property\":\"value\"}}}}}}}}}}}");
    struct th_error err = {0};
    assert_int_equal(th_twin_patch_tags(twin, patch, &err), TH_OK);
    assert_int_equal(th_twin_patch_desired(twin, patch, T1, NULL, &err), TH_OK);
    assert_int_equal(th_twin_patch_reported(twin, patch, T1, &err), TH_OK);
    cJSON_Delete(patch);
    /* A scalar one level below the tenth object (level 11). */
    patch = nested_patch(TH_TWIN_MAX_DEPTH + 1);
    assert_int_equal(th_twin_patch_reported(twin, patch, T1, &err), TH_OK);
    cJSON_Delete(patch);
    th_twin_free(twin);
}

static void test_th_twin_patch_reported_depth_over_limit_fails(void **state)
{
    struct th_twin *twin = new_twin();
    cJSON *patch = nested_patch(TH_TWIN_MAX_DEPTH + 2); /* an 11th object */
    struct th_error err = {0};
    assert_int_equal(th_twin_patch_reported(twin, patch, T1, &err), TH_ERR_TOO_DEEP);
    assert_int_equal(err.result, TH_ERR_TOO_DEEP);
    assert_int_equal(err.code, 400004);
    assert_non_null(strstr(err.message, "nesting depth exceeds 10 at reported.l1.l2.l3"));
    assert_non_null(strstr(err.message, "l10.l11"));
    assert_int_equal(twin->reported_version, 1);
    assert_null(twin->reported->child);
    cJSON_Delete(patch);
    th_twin_free(twin);
}

/* A path longer than a message shows is cut after 96 bytes with "..." (twin_path_push). */
static void test_th_twin_patch_reported_long_path_cut_fails(void **state)
{
    (void)state;
    struct th_twin *twin = new_twin();
    char a[61], b[61], c[61], text[512], want[160];
    memset(a, 'a', 60);
    memset(b, 'b', 60);
    memset(c, 'c', 60);
    a[60] = b[60] = c[60] = '\0';
    snprintf(text, sizeof text, "{\"%s\":{\"%s\":{\"%s\":{\"\":1}}}}", a, b, c);
    cJSON *patch = cJSON_Parse(text);
    assert_non_null(patch);
    struct th_error err = {0};
    assert_int_equal(th_twin_patch_reported(twin, patch, T1, &err), TH_ERR_INVAL);
    /* "reported.aaa...a.bbb...b" cut to its first 96 bytes, then "..." */
    snprintf(want, sizeof want, "reported.%s.%s", a, b);
    want[96] = '\0';
    strcat(want, "...");
    if (strstr(err.message, want) == NULL)
        fprintf(stderr, "# message: %s\n# wanted:  %s\n", err.message, want);
    assert_non_null(strstr(err.message, want));
    assert_null(strstr(err.message, "ccc"));
    cJSON_Delete(patch);
    th_twin_free(twin);
}

static void test_th_twin_patch_reported_array_depth_over_limit_fails(void **state)
{
    /* Array elements are one level deeper than the array: an array at level 10 may hold
     * scalars, not arrays or objects. */
    struct th_twin *twin = new_twin();
    patch_reported_ok(twin,
                      "{\"l1\":{\"l2\":{\"l3\":{\"l4\":{\"l5\":{\"l6\":{\"l7\":{\"l8\":"
                      "{\"l9\":{\"l10\":[1,\"x\"]}}}}}}}}}}",
                      T1);
    th_twin_free(twin);
    expect_reported_refused("{\"l1\":{\"l2\":{\"l3\":{\"l4\":{\"l5\":{\"l6\":{\"l7\":{\"l8\":"
                            "{\"l9\":{\"l10\":[[1]]}}}}}}}}}}",
                            TH_ERR_TOO_DEEP, 400004, "l10[0]");
    expect_reported_refused("{\"l1\":{\"l2\":{\"l3\":{\"l4\":{\"l5\":{\"l6\":{\"l7\":{\"l8\":"
                            "{\"l9\":{\"l10\":[{}]}}}}}}}}}}",
                            TH_ERR_TOO_DEEP, 400004, "l10[0]");
}

/* ---- rules found against IoT Hub and IoT Edge (issue 9) ---- */

/* Refused with 400004 for reported, desired and tags alike; the twin stays as it was. */
static void expect_all_sections_refused(const char *patch_text, const char *message_part)
{
    struct th_twin *twin = new_twin();
    cJSON *patch = parse_wire(patch_text);
    char *before = snapshot(twin);
    struct th_error err = {0};
    assert_int_equal(th_twin_patch_reported(twin, patch, T1, &err), TH_ERR_INVAL);
    assert_int_equal(err.code, 400004);
    if (strstr(err.message, message_part) == NULL)
        fail_msg("message \"%s\" lacks \"%s\"", err.message, message_part);
    memset(&err, 0, sizeof err);
    assert_int_equal(th_twin_patch_desired(twin, patch, T1, NULL, &err), TH_ERR_INVAL);
    assert_int_equal(err.code, 400004);
    memset(&err, 0, sizeof err);
    assert_int_equal(th_twin_patch_tags(twin, patch, &err), TH_ERR_INVAL);
    assert_int_equal(err.code, 400004);
    assert_int_equal(th_twin_replace_desired(twin, patch, T1, NULL, &err), TH_ERR_INVAL);
    assert_int_equal(th_twin_replace_tags(twin, patch, &err), TH_ERR_INVAL);
    assert_int_equal(th_twin_validate_patch(TH_SECTION_TAGS, patch, &err), TH_ERR_INVAL);
    char *after = snapshot(twin);
    assert_string_equal(after, before);
    free(before);
    free(after);
    cJSON_Delete(patch);
    th_twin_free(twin);
}

static void test_th_twin_patch_null_in_object_in_array_fails(void **state)
{
    /* azure-iot-sdk-csharp#1741: the hub answers 400004 "Value of Property or Tag cannot
     * be null" to exactly this patch. */
    expect_all_sections_refused("{\"a\":[{\"b\":null}]}", "reported.a[0].b");
    expect_all_sections_refused("{\"a\":{\"x\":[1,[{\"c\":{\"d\":null}}]]}}", "inside an array");
}

static void test_th_twin_patch_key_with_hash_fails(void **state)
{
    expect_all_sections_refused("{\"o#k\":1}", "contains '#'");
    expect_all_sections_refused("{\"a\":{\"b#\":true}}", "at reported.a contains '#'");
}

static void test_th_twin_patch_key_with_nul_fails(void **state)
{
    /* cJSON cuts the name at \u0000: without json.h's flag this stored "a". */
    expect_all_sections_refused("{\"a\\u0000b\":1}", "control character 0x00");
    expect_all_sections_refused("{\"x\":{\"\\u0000\":1}}", "control character 0x00");
}

static void test_th_twin_patch_key_with_unicode_space_fails(void **state)
{
    expect_all_sections_refused("{\"a\\u00a0b\":1}", "white space U+00A0");
    expect_all_sections_refused("{\"a\\u2003b\":1}", "white space U+2003");
    expect_all_sections_refused("{\"a\\u3000\":1}", "white space U+3000");
    expect_all_sections_refused("{\"a\\tb\":1}", "control character 0x09");
}

static void test_th_twin_patch_string_with_nul_fails(void **state)
{
    expect_all_sections_refused("{\"s\":\"a\\u0000b\"}", "holds \\u0000");
}

static void test_th_twin_patch_reported_decimals_beyond_integer_range_succeeds(void **state)
{
    /* Only integers are limited to +-2^52 (article; IoT Edge checks JTokenType.Integer). */
    struct th_twin *twin = new_twin();
    cJSON *patch = parse_wire("{\"big\":1.5e300,\"neg\":-1e20,\"edge\":4503599627370497.0,"
                              "\"tiny\":5e-324}");
    struct th_error err = {0};
    assert_int_equal(th_twin_patch_reported(twin, patch, T1, &err), TH_OK);
    assert_int_equal(th_twin_patch_desired(twin, patch, T1, NULL, &err), TH_OK);
    assert_int_equal(th_twin_patch_tags(twin, patch, &err), TH_OK);
    assert_true(cJSON_GetObjectItemCaseSensitive(twin->reported, "big")->valuedouble == 1.5e300);
    cJSON_Delete(patch);
    th_twin_free(twin);
}

static void test_th_twin_patch_reported_integer_literal_beyond_range_fails(void **state)
{
    expect_all_sections_refused("{\"n\":100000000000000000000}", "integer");
    expect_all_sections_refused("{\"n\":-4503599627370497}", "out of range");
}

static void test_th_twin_replace_null_fails(void **state)
{
    /* Azure/azure-iot-cli-extension#693: a twin replace holding null is refused with
     * "Value of Property or Tag cannot be null". */
    struct th_twin *twin = new_twin();
    patch_desired_ok(twin, "{\"a\":1}", T1);
    char *before = snapshot(twin);
    cJSON *top = parse("{\"my-tag\":null}"), *deep = parse("{\"c\":{\"d\":null},\"e\":2}");
    cJSON *note = (cJSON *)&note;
    struct th_error err = {0};
    assert_int_equal(th_twin_replace_tags(twin, top, &err), TH_ERR_INVAL);
    assert_int_equal(err.code, 400004);
    assert_non_null(strstr(err.message, "tags.my-tag"));
    assert_int_equal(th_twin_replace_desired(twin, deep, T2, &note, &err), TH_ERR_INVAL);
    assert_null(note);
    assert_non_null(strstr(err.message, "desired.c.d"));
    char *after = snapshot(twin);
    assert_string_equal(after, before);
    /* The same documents are fine as patches: null deletes there. */
    assert_int_equal(th_twin_patch_tags(twin, top, &err), TH_OK);
    assert_int_equal(th_twin_patch_desired(twin, deep, T2, NULL, &err), TH_OK);
    free(before);
    free(after);
    cJSON_Delete(top);
    cJSON_Delete(deep);
    th_twin_free(twin);
}

/* ---- reported $version precondition ---- */

static void test_th_twin_patch_reported_if_matching_version_succeeds(void **state)
{
    /* DeviceTwinWithVersionTests: after the first report ($version 2) version 2 succeeds. */
    struct th_twin *twin = new_twin();
    patch_reported_ok(twin, "{\"Key1\":\"Value1\"}", T1);
    cJSON *patch = parse("{\"Key1\":\"newValue1\"}");
    int64_t v = 2;
    struct th_error err = {0};
    assert_int_equal(th_twin_patch_reported_if(twin, patch, &v, T2, &err), TH_OK);
    assert_int_equal(twin->reported_version, 3);
    assert_json_eq(twin->reported, "{\"Key1\":\"newValue1\"}");
    /* No version: nothing is compared. */
    assert_int_equal(th_twin_patch_reported_if(twin, patch, NULL, T2, &err), TH_OK);
    assert_int_equal(twin->reported_version, 4);
    cJSON_Delete(patch);
    th_twin_free(twin);
}

static void test_th_twin_patch_reported_if_other_version_fails(void **state)
{
    /* Lower (1) and higher (3) than the current 2 both fail with 412; so does 0, what the
     * Java SDK 2.x sent when no version was given (azure-iot-sdk-java#1776). */
    const int64_t wrong[] = {1, 3, 0, -2};
    struct th_twin *twin = new_twin();
    patch_reported_ok(twin, "{\"Key1\":\"Value1\"}", T1);
    cJSON *patch = parse("{\"Key1\":\"newValue1\"}");
    for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
        char *before = snapshot(twin);
        struct th_error err = {0};
        assert_int_equal(th_twin_patch_reported_if(twin, patch, &wrong[i], T2, &err),
                         TH_ERR_PRECONDITION);
        assert_int_equal(err.status, 412);
        assert_int_equal(err.code, 412001);
        assert_non_null(strstr(err.message, "$version 2"));
        char *after = snapshot(twin);
        assert_string_equal(after, before);
        free(before);
        free(after);
    }
    assert_int_equal(twin->reported_version, 2);
    cJSON_Delete(patch);
    th_twin_free(twin);
}

static void test_th_twin_patch_reported_if_invalid_patch_wins_fails(void **state)
{
    struct th_twin *twin = new_twin();
    cJSON *patch = parse("{\"a.b\":1}");
    int64_t v = 7;
    struct th_error err = {0};
    assert_int_equal(th_twin_patch_reported_if(twin, patch, &v, T1, &err), TH_ERR_INVAL);
    assert_int_equal(err.code, 400004);
    cJSON_Delete(patch);
    th_twin_free(twin);
}

/* ---- everything accepted can be saved and loaded again ---- */

/* state -> text -> th_json_parse -> th_twin_from_state, as persist.c does; same twin back. */
static void assert_restores_through_text(const struct th_twin *twin)
{
    cJSON *state = th_twin_state_json(twin);
    assert_non_null(state);
    char *text = th_json_print(state);
    assert_non_null(text);
    cJSON *back = parse_wire(text);
    struct th_error err = {0};
    struct th_twin *restored = th_twin_from_state(back, &err);
    if (restored == NULL)
        fail_msg("saved twin does not load: %s\n%s", err.message, text);
    char *a = snapshot(twin), *b = snapshot(restored);
    assert_string_equal(a, b);
    free(a);
    free(b);
    th_twin_free(restored);
    cJSON_Delete(back);
    cJSON_Delete(state);
    free(text);
}

static void test_th_twin_from_state_accepted_content_restores_succeeds(void **state)
{
    static const char *const patches[] = {
        "{\"a\":[{\"b\":1},[2,\"x\"],true]}",
        "{\"edge\":4503599627370497.0,\"neg\":-9007199254740993.0,\"big\":1.5e300}",
        "{\"one\":{\"two\":{\"three\":{\"four\":{\"five\":{\"six\":{\"seven\":{\"eight\":"
        "{\"nine\":{\"ten\":{\"property\":\"value\"},\"list\":[1,2]}}}}}}}}}}",
        "{\"k\":{\"gone\":null,\"kept\":\"v\\u0001\"}}",
    };
    struct th_twin *twin = new_twin();
    for (size_t i = 0; i < sizeof patches / sizeof patches[0]; i++) {
        cJSON *patch = parse_wire(patches[i]);
        struct th_error err = {0};
        assert_int_equal(th_twin_patch_reported(twin, patch, T1, &err), TH_OK);
        assert_int_equal(th_twin_patch_desired(twin, patch, T1, NULL, &err), TH_OK);
        assert_int_equal(th_twin_patch_tags(twin, patch, &err), TH_OK);
        cJSON_Delete(patch);
        assert_restores_through_text(twin);
    }
    th_twin_free(twin);
}

static void test_th_twin_validate_patch_tags_key_rule_fails(void **state)
{
    cJSON *patch = parse("{\"loc\":{\"a.b\":1}}");
    struct th_error err = {0};
    assert_int_equal(th_twin_validate_patch(TH_SECTION_TAGS, patch, &err), TH_ERR_INVAL);
    assert_non_null(strstr(err.message, "at tags.loc"));
    cJSON_Delete(patch);
}

/* ---- size limits (7.5) ---- */

static void test_th_twin_section_size_counts_keys_and_values_succeeds(void **state)
{
    cJSON *doc = parse("{\"a\":\"xyz\",\"n\":1,\"b\":true,\"o\":{\"p\":[1,\"ab\"]},"
                       "\"$metadata\":{\"big\":\"zzzzzzzz\"},\"$version\":3}");
    /* a:1+3  n:1+8  b:1+4  o:1+(p:1+8+2) */
    assert_int_equal(th_twin_section_size(doc), 30);
    cJSON_Delete(doc);
}

/* Fill reported to exactly `total` bytes: k0..k7 with 4000-byte strings, then k8. */
static void fill_reported(struct th_twin *twin, size_t total)
{
    for (int i = 0; i < 8; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", i);
        cJSON *p = string_patch(key, 4000);
        assert_int_equal(th_twin_patch_reported(twin, p, T1, NULL), TH_OK);
        cJSON_Delete(p);
    }
    size_t used = th_twin_section_size(twin->reported);
    assert_int_equal(used, 8 * 4002);
    cJSON *p = string_patch("k8", total - used - 2);
    assert_int_equal(th_twin_patch_reported(twin, p, T1, NULL), TH_OK);
    cJSON_Delete(p);
    assert_int_equal(th_twin_section_size(twin->reported), total);
}

static void test_th_twin_patch_reported_section_at_limit_succeeds(void **state)
{
    struct th_twin *twin = new_twin();
    fill_reported(twin, TH_TWIN_MAX_REPORTED_BYTES);
    assert_int_equal(twin->reported_version, 10);
    /* Replacing a value with one of the same size keeps the section at the limit. */
    patch_reported_ok(twin, "{\"k0\":null}", T2);
    cJSON *p = string_patch("k0", 4000);
    assert_int_equal(th_twin_patch_reported(twin, p, T2, NULL), TH_OK);
    cJSON_Delete(p);
    th_twin_free(twin);
}

static void test_th_twin_patch_reported_section_over_limit_fails(void **state)
{
    struct th_twin *twin = new_twin();
    fill_reported(twin, TH_TWIN_MAX_REPORTED_BYTES);
    char *before = snapshot(twin);
    struct th_error err = {0};

    assert_int_equal(patch_reported(twin, "{\"z\":true}", &err), TH_ERR_TOO_LARGE);
    assert_int_equal(err.result, TH_ERR_TOO_LARGE);
    assert_int_equal(err.code, 403100);
    assert_int_equal(err.status, 403);
    assert_non_null(strstr(err.message, "reported"));
    assert_non_null(strstr(err.message, "32773"));
    assert_non_null(strstr(err.message, "32768"));
    char *after = snapshot(twin);
    assert_string_equal(after, before);
    assert_int_equal(twin->reported_version, 10);
    free(before);
    free(after);
    th_twin_free(twin);
}

static void test_th_twin_patch_tags_section_over_limit_fails(void **state)
{
    struct th_twin *twin = new_twin();
    struct th_error err = {0};
    cJSON *t0 = string_patch("t0", 4000);
    cJSON *t1 = string_patch("t1", 4000);
    cJSON *t2 = string_patch("t2", TH_TWIN_MAX_TAGS_BYTES - 8004 - 2);
    cJSON *t3 = parse("{\"t3\":1}");
    assert_int_equal(th_twin_patch_tags(twin, t0, &err), TH_OK);
    assert_int_equal(th_twin_patch_tags(twin, t1, &err), TH_OK);
    assert_int_equal(th_twin_patch_tags(twin, t2, &err), TH_OK);
    assert_int_equal(th_twin_section_size(twin->tags), TH_TWIN_MAX_TAGS_BYTES);
    assert_int_equal(twin->etag_counter, 4);

    char *before = snapshot(twin);
    assert_int_equal(th_twin_patch_tags(twin, t3, &err), TH_ERR_TOO_LARGE);
    assert_int_equal(err.code, 403100);
    assert_int_equal(err.status, 403);
    assert_non_null(strstr(err.message, "tags"));
    char *after = snapshot(twin);
    assert_string_equal(after, before);
    assert_int_equal(twin->etag_counter, 4);
    free(before);
    free(after);
    cJSON_Delete(t0);
    cJSON_Delete(t1);
    cJSON_Delete(t2);
    cJSON_Delete(t3);
    th_twin_free(twin);
}

static void test_th_twin_replace_desired_section_over_limit_fails(void **state)
{
    struct th_twin *twin = new_twin();
    patch_desired_ok(twin, "{\"keep\":1}", T1);
    cJSON *doc = cJSON_CreateObject();
    assert_non_null(doc);
    char *s = filler(4000);
    for (int i = 0; i < 9; i++) {
        char key[16];
        snprintf(key, sizeof key, "d%d", i);
        assert_non_null(cJSON_AddStringToObject(doc, key, s));
    }
    free(s);
    char *before = snapshot(twin);
    cJSON *note = NULL;
    struct th_error err = {0};
    assert_int_equal(th_twin_replace_desired(twin, doc, T2, &note, &err), TH_ERR_TOO_LARGE);
    assert_int_equal(err.code, 403100);
    assert_null(note);
    char *after = snapshot(twin);
    assert_string_equal(after, before);
    assert_int_equal(twin->desired_version, 2);
    free(before);
    free(after);
    cJSON_Delete(doc);
    th_twin_free(twin);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_th_twin_new_fresh_twin_succeeds),
        cmocka_unit_test(test_th_twin_free_null_and_half_built_succeeds),
        cmocka_unit_test(test_th_twin_clone_independent_copy_succeeds),
        cmocka_unit_test(test_th_twin_device_view_shape_succeeds),
        cmocka_unit_test(test_th_twin_properties_view_with_metadata_succeeds),
        cmocka_unit_test(test_th_twin_patch_reported_merge_succeeds),
        cmocka_unit_test(test_th_twin_patch_reported_nested_null_on_absent_parent_succeeds),
        cmocka_unit_test(test_th_twin_patch_reported_delete_absent_key_succeeds),
        cmocka_unit_test(test_th_twin_patch_reported_arrays_replaced_succeeds),
        cmocka_unit_test(test_th_twin_patch_reported_object_replaced_by_scalar_succeeds),
        cmocka_unit_test(test_th_twin_patch_tags_merge_succeeds),
        cmocka_unit_test(test_th_twin_replace_tags_drops_old_succeeds),
        cmocka_unit_test(test_th_twin_patch_reported_version_bumps_only_when_accepted_succeeds),
        cmocka_unit_test(test_th_twin_etag_counter_service_writes_only_succeeds),
        cmocka_unit_test(test_th_twin_etag_big_endian_base64_succeeds),
        cmocka_unit_test(test_th_twin_version_etag_plus_reported_succeeds),
        cmocka_unit_test(test_th_twin_patch_desired_metadata_versions_succeeds),
        cmocka_unit_test(test_th_twin_patch_reported_metadata_without_version_succeeds),
        cmocka_unit_test(test_th_twin_patch_desired_delete_refreshes_parent_succeeds),
        cmocka_unit_test(test_th_twin_patch_desired_notification_keeps_nulls_succeeds),
        cmocka_unit_test(test_th_twin_replace_desired_notification_whole_document_succeeds),
        cmocka_unit_test(test_th_twin_patch_desired_refused_no_notification_fails),
        cmocka_unit_test(test_th_twin_patch_reported_version_member_fails),
        cmocka_unit_test(test_th_twin_patch_reported_metadata_member_fails),
        cmocka_unit_test(test_th_twin_patch_reported_dollar_key_fails),
        cmocka_unit_test(test_th_twin_validate_patch_service_readonly_ignored_succeeds),
        cmocka_unit_test(test_th_twin_strip_readonly_recursive_succeeds),
        cmocka_unit_test(test_th_twin_patch_reported_key_with_dot_fails),
        cmocka_unit_test(test_th_twin_patch_reported_key_with_dollar_inside_fails),
        cmocka_unit_test(test_th_twin_patch_reported_key_with_space_fails),
        cmocka_unit_test(test_th_twin_patch_reported_key_with_control_char_fails),
        cmocka_unit_test(test_th_twin_patch_reported_key_with_c1_control_fails),
        cmocka_unit_test(test_th_twin_patch_reported_empty_key_fails),
        cmocka_unit_test(test_th_twin_patch_reported_non_ascii_key_succeeds),
        cmocka_unit_test(test_th_twin_patch_reported_key_at_limit_succeeds),
        cmocka_unit_test(test_th_twin_patch_reported_key_over_limit_fails),
        cmocka_unit_test(test_th_twin_patch_reported_string_at_limit_succeeds),
        cmocka_unit_test(test_th_twin_patch_reported_string_over_limit_fails),
        cmocka_unit_test(test_th_twin_patch_reported_integer_range_limits_succeeds),
        cmocka_unit_test(test_th_twin_patch_reported_integer_above_range_fails),
        cmocka_unit_test(test_th_twin_patch_reported_integer_below_range_fails),
        cmocka_unit_test(test_th_twin_patch_reported_null_in_array_fails),
        cmocka_unit_test(test_th_twin_patch_reported_not_object_fails),
        cmocka_unit_test(test_th_twin_patch_reported_depth_at_limit_succeeds),
        cmocka_unit_test(test_th_twin_patch_reported_depth_over_limit_fails),
        cmocka_unit_test(test_th_twin_patch_reported_array_depth_over_limit_fails),
        cmocka_unit_test(test_th_twin_patch_reported_long_path_cut_fails),
        cmocka_unit_test(test_th_twin_patch_tags_article_depth_example_succeeds),
        cmocka_unit_test(test_th_twin_patch_null_in_object_in_array_fails),
        cmocka_unit_test(test_th_twin_patch_key_with_hash_fails),
        cmocka_unit_test(test_th_twin_patch_key_with_nul_fails),
        cmocka_unit_test(test_th_twin_patch_key_with_unicode_space_fails),
        cmocka_unit_test(test_th_twin_patch_string_with_nul_fails),
        cmocka_unit_test(test_th_twin_patch_reported_decimals_beyond_integer_range_succeeds),
        cmocka_unit_test(test_th_twin_patch_reported_integer_literal_beyond_range_fails),
        cmocka_unit_test(test_th_twin_replace_null_fails),
        cmocka_unit_test(test_th_twin_patch_reported_if_matching_version_succeeds),
        cmocka_unit_test(test_th_twin_patch_reported_if_other_version_fails),
        cmocka_unit_test(test_th_twin_patch_reported_if_invalid_patch_wins_fails),
        cmocka_unit_test(test_th_twin_from_state_accepted_content_restores_succeeds),
        cmocka_unit_test(test_th_twin_validate_patch_tags_key_rule_fails),
        cmocka_unit_test(test_th_twin_section_size_counts_keys_and_values_succeeds),
        cmocka_unit_test(test_th_twin_patch_reported_section_at_limit_succeeds),
        cmocka_unit_test(test_th_twin_patch_reported_section_over_limit_fails),
        cmocka_unit_test(test_th_twin_patch_tags_section_over_limit_fails),
        cmocka_unit_test(test_th_twin_replace_desired_section_over_limit_fails),
    };
    return cmocka_run_group_tests_name("twin", tests, NULL, NULL);
}
