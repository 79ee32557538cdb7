/*
 * test_twin_write.c - unit tests for th_twin_service_write (emulator/core/twin.c),
 * the service-side twin write as one operation: PATCH and PUT of tags and
 * desired properties, If-Match, one etag step per request, the desired
 * notification, the properties.reported rule, and refusals that leave the
 * twin unchanged (iothub-protocol.md 7.3, 7.4, 10.5; docs/rest-api.md, Twins).
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

/* 2020-07-09T13:55:50.7976980Z and a second later. */
#define T0 1594302950797698LL
#define T1 (T0 + 1000000LL)

/* ---- helpers ---- */

/* Parsed the way the hub parses input (flags such as TH_JSON_KEY_NUL set); cJSON_Delete. */
static cJSON *parse(const char *text)
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
    cJSON *want = cJSON_Parse(expected);
    assert_non_null(want);
    bool same = cJSON_Compare(actual, want, 1);
    if (!same) {
        char *got = cJSON_PrintUnformatted(actual);
        print_error("expected %s\n     got %s\n", expected, got != NULL ? got : "(null)");
        free(got);
    }
    cJSON_Delete(want);
    assert_true(same);
}

/* Everything a twin holds (sections, metadata, versions, etag counter); free(). */
static char *state_text(const struct th_twin *twin)
{
    cJSON *state = th_twin_state_json(twin);
    assert_non_null(state);
    char *text = cJSON_PrintUnformatted(state);
    assert_non_null(text);
    cJSON_Delete(state);
    return text;
}

/* A twin with tags {"site":"a"}, desired {"a":1,"b":2} (desired $version 2, etag counter 3). */
static struct th_twin *seeded_twin(void)
{
    struct th_twin *twin = th_twin_new(T0);
    assert_non_null(twin);
    cJSON *tags = parse("{\"site\":\"a\"}"), *desired = parse("{\"a\":1,\"b\":2}");
    struct th_error err = {0};
    assert_int_equal(th_twin_patch_tags(twin, tags, &err), TH_OK);
    assert_int_equal(th_twin_patch_desired(twin, desired, T0, NULL, &err), TH_OK);
    cJSON_Delete(tags);
    cJSON_Delete(desired);
    return twin;
}

/* th_twin_service_write of the JSON text `doc`. */
static th_result write(struct th_twin *twin, enum th_twin_write_mode mode, const char *doc,
                       const char *if_match, struct th_twin_write_result *out, struct th_error *err)
{
    cJSON *body = parse(doc);
    struct th_twin_write req = {.mode = mode, .doc = body, .if_match = if_match};
    th_result rc = th_twin_service_write(twin, &req, T1, out, err);
    cJSON_Delete(body);
    return rc;
}

/* A write that must succeed; *out holds its result. */
static void write_ok(struct th_twin *twin, enum th_twin_write_mode mode, const char *doc,
                     const char *if_match, struct th_twin_write_result *out)
{
    struct th_error err = {0};
    if (write(twin, mode, doc, if_match, out, &err) != TH_OK)
        fail_msg("write %s refused: %d %s", doc, err.code, err.message);
}

/* A write that must be refused with `status` / `code` and leave the twin exactly as it was. */
static void write_refused(struct th_twin *twin, enum th_twin_write_mode mode, const char *doc,
                          const char *if_match, int status, int code)
{
    struct th_twin_write_result out;
    struct th_error err = {0};
    char *before = state_text(twin);
    th_result rc = write(twin, mode, doc, if_match, &out, &err);
    if (rc == TH_OK)
        fail_msg("write %s was accepted", doc);
    assert_int_equal(err.status, status);
    assert_int_equal(err.code, code);
    assert_true(err.message[0] != '\0');
    assert_false(out.tags_written);
    assert_false(out.desired_written);
    assert_null(out.desired);
    assert_null(out.notification);
    char *after = state_text(twin);
    assert_string_equal(before, after);
    free(before);
    free(after);
}

static const char *etag_of(const struct th_twin *twin, char buf[16])
{
    th_twin_etag(twin, buf);
    return buf;
}

/* ---- PATCH and PUT ---- */

static void test_th_twin_service_write_patch_merges_tags_and_desired_succeeds(void **state)
{
    (void)state;
    struct th_twin *twin = seeded_twin();
    uint64_t etag0 = twin->etag_counter;
    struct th_twin_write_result out;
    write_ok(twin, TH_TWIN_WRITE_PATCH,
             "{\"deviceId\":\"ignored\",\"etag\":\"ignored\",\"tags\":{\"floor\":3},"
             "\"properties\":{\"desired\":{\"a\":null,\"c\":{\"d\":true}}}}",
             NULL, &out);
    assert_true(out.tags_written);
    assert_true(out.desired_written);
    assert_int_equal(out.desired_version, 3);
    assert_json_eq(out.desired, "{\"a\":null,\"c\":{\"d\":true}}");
    assert_json_eq(out.notification, "{\"a\":null,\"c\":{\"d\":true},\"$version\":3}");
    assert_json_eq(twin->tags, "{\"site\":\"a\",\"floor\":3}");
    assert_json_eq(twin->desired, "{\"b\":2,\"c\":{\"d\":true}}");
    assert_int_equal(twin->desired_version, 3);
    /* tags and desired in one request: one etag step */
    assert_int_equal(twin->etag_counter, etag0 + 1);
    assert_int_equal(th_twin_version(twin), (int64_t)etag0 + 1 + twin->reported_version);
    th_twin_write_result_free(&out);
    th_twin_free(twin);
}

static void test_th_twin_service_write_patch_stamps_metadata_succeeds(void **state)
{
    (void)state;
    struct th_twin *twin = seeded_twin();
    struct th_twin_write_result out;
    write_ok(twin, TH_TWIN_WRITE_PATCH, "{\"properties\":{\"desired\":{\"c\":1}}}", NULL, &out);
    cJSON *props = th_twin_properties_view(twin);
    assert_non_null(props);
    char t0[TH_TIME_BUF], t1[TH_TIME_BUF], want[512];
    th_time_format(T0, t0);
    th_time_format(T1, t1);
    snprintf(want, sizeof want,
             "{\"$lastUpdated\":\"%s\",\"$lastUpdatedVersion\":3,"
             "\"a\":{\"$lastUpdated\":\"%s\",\"$lastUpdatedVersion\":2},"
             "\"b\":{\"$lastUpdated\":\"%s\",\"$lastUpdatedVersion\":2},"
             "\"c\":{\"$lastUpdated\":\"%s\",\"$lastUpdatedVersion\":3}}",
             t1, t0, t0, t1);
    const cJSON *desired = cJSON_GetObjectItemCaseSensitive(props, "desired");
    assert_json_eq(cJSON_GetObjectItemCaseSensitive(desired, "$metadata"), want);
    cJSON_Delete(props);
    th_twin_write_result_free(&out);
    th_twin_free(twin);
}

static void test_th_twin_service_write_replace_replaces_both_succeeds(void **state)
{
    (void)state;
    struct th_twin *twin = seeded_twin();
    uint64_t etag0 = twin->etag_counter;
    struct th_twin_write_result out;
    write_ok(twin, TH_TWIN_WRITE_REPLACE,
             "{\"tags\":{\"owner\":\"x\"},\"properties\":{\"desired\":{\"c\":3}}}", NULL, &out);
    assert_json_eq(twin->tags, "{\"owner\":\"x\"}");
    assert_json_eq(twin->desired, "{\"c\":3}");
    /* the notification of a replace is the whole new desired */
    assert_json_eq(out.notification, "{\"c\":3,\"$version\":3}");
    assert_json_eq(out.desired, "{\"c\":3}");
    assert_int_equal(out.desired_version, 3);
    assert_int_equal(twin->etag_counter, etag0 + 1);
    th_twin_write_result_free(&out);
    th_twin_free(twin);
}

static void test_th_twin_service_write_replace_null_part_leaves_it_succeeds(void **state)
{
    (void)state;
    struct th_twin *twin = seeded_twin();
    struct th_twin_write_result out;
    write_ok(twin, TH_TWIN_WRITE_REPLACE, "{\"tags\":null,\"properties\":{\"desired\":{\"z\":0}}}",
             NULL, &out);
    assert_false(out.tags_written);
    assert_true(out.desired_written);
    assert_json_eq(twin->tags, "{\"site\":\"a\"}");
    assert_json_eq(twin->desired, "{\"z\":0}");
    th_twin_write_result_free(&out);
    th_twin_free(twin);
}

static void test_th_twin_service_write_patch_null_sections_remove_all_succeeds(void **state)
{
    (void)state;
    struct th_twin *twin = seeded_twin();
    uint64_t etag0 = twin->etag_counter;
    struct th_twin_write_result out;
    write_ok(twin, TH_TWIN_WRITE_PATCH, "{\"tags\":null,\"properties\":{\"desired\":null}}", "*",
             &out);
    assert_true(out.tags_written);
    assert_true(out.desired_written);
    assert_json_eq(twin->tags, "{}");
    assert_json_eq(twin->desired, "{}");
    /* the device hears of each removed property, as for any patch that nulls them */
    assert_json_eq(out.notification, "{\"a\":null,\"b\":null,\"$version\":3}");
    assert_int_equal(twin->desired_version, 3);
    assert_int_equal(twin->etag_counter, etag0 + 1);
    th_twin_write_result_free(&out);
    /* an empty section: still a write, $version moves on, the notification names nothing */
    write_ok(twin, TH_TWIN_WRITE_PATCH, "{\"properties\":{\"desired\":null}}", NULL, &out);
    assert_json_eq(out.notification, "{\"$version\":4}");
    assert_json_eq(twin->desired, "{}");
    th_twin_write_result_free(&out);
    th_twin_free(twin);
}

static void test_th_twin_service_write_patch_null_section_stale_etag_fails(void **state)
{
    (void)state;
    struct th_twin *twin = seeded_twin();
    write_refused(twin, TH_TWIN_WRITE_PATCH, "{\"properties\":{\"desired\":null}}",
                  "\"AAAAAAAAAAE=\"", 412, 412001);
    th_twin_free(twin);
}

static void test_th_twin_service_write_tags_only_sends_nothing_succeeds(void **state)
{
    (void)state;
    struct th_twin *twin = seeded_twin();
    uint64_t etag0 = twin->etag_counter;
    struct th_twin_write_result out;
    write_ok(twin, TH_TWIN_WRITE_PATCH, "{\"tags\":{\"site\":\"b\"}}", NULL, &out);
    assert_true(out.tags_written);
    assert_false(out.desired_written);
    assert_null(out.notification);
    assert_null(out.desired);
    assert_int_equal(out.desired_version, 2);
    assert_int_equal(twin->desired_version, 2);
    assert_int_equal(twin->etag_counter, etag0 + 1);
    th_twin_write_result_free(&out);
    th_twin_free(twin);
}

static void test_th_twin_service_write_empty_request_changes_nothing_succeeds(void **state)
{
    (void)state;
    struct th_twin *twin = seeded_twin();
    char *before = state_text(twin);
    struct th_twin_write_result out;
    write_ok(twin, TH_TWIN_WRITE_PATCH, "{\"properties\":{}}", NULL, &out);
    assert_false(out.tags_written);
    assert_false(out.desired_written);
    assert_null(out.notification);
    char *after = state_text(twin);
    assert_string_equal(before, after);
    free(before);
    free(after);
    th_twin_write_result_free(&out);
    th_twin_free(twin);
}

static void test_th_twin_service_write_read_only_members_ignored_succeeds(void **state)
{
    (void)state;
    struct th_twin *twin = seeded_twin();
    struct th_twin_write_result out;
    write_ok(twin, TH_TWIN_WRITE_PATCH,
             "{\"tags\":{\"$version\":9,\"t\":1},\"properties\":{\"desired\":{\"$version\":7,"
             "\"$metadata\":{\"$lastUpdated\":\"x\"},\"a\":{\"$metadata\":{},\"n\":1}}}}",
             NULL, &out);
    assert_json_eq(out.notification, "{\"a\":{\"n\":1},\"$version\":3}");
    assert_json_eq(twin->tags, "{\"site\":\"a\",\"t\":1}");
    assert_json_eq(twin->desired, "{\"a\":{\"n\":1},\"b\":2}");
    th_twin_write_result_free(&out);
    th_twin_free(twin);
}

/* ---- If-Match ---- */

static void test_th_twin_service_write_if_match_current_etag_succeeds(void **state)
{
    (void)state;
    struct th_twin *twin = seeded_twin();
    char etag[16], quoted[20];
    struct th_twin_write_result out;
    write_ok(twin, TH_TWIN_WRITE_PATCH, "{\"tags\":{\"n\":1}}", etag_of(twin, etag), &out);
    th_twin_write_result_free(&out);
    snprintf(quoted, sizeof quoted, "\"%s\"", etag_of(twin, etag));
    write_ok(twin, TH_TWIN_WRITE_REPLACE, "{\"tags\":{\"n\":2}}", quoted, &out);
    th_twin_write_result_free(&out);
    assert_json_eq(twin->tags, "{\"n\":2}");
    th_twin_free(twin);
}

static void test_th_twin_service_write_if_match_star_succeeds(void **state)
{
    (void)state;
    struct th_twin *twin = seeded_twin();
    struct th_twin_write_result out;
    write_ok(twin, TH_TWIN_WRITE_PATCH, "{\"tags\":{\"n\":1}}", "*", &out);
    th_twin_write_result_free(&out);
    write_ok(twin, TH_TWIN_WRITE_PATCH, "{\"tags\":{\"n\":2}}", "\"*\"", &out);
    th_twin_write_result_free(&out);
    assert_json_eq(twin->tags, "{\"site\":\"a\",\"n\":2}");
    th_twin_free(twin);
}

static void test_th_twin_service_write_if_match_stale_etag_fails(void **state)
{
    (void)state;
    struct th_twin *twin = seeded_twin();
    char stale[16];
    etag_of(twin, stale);
    struct th_twin_write_result out;
    write_ok(twin, TH_TWIN_WRITE_PATCH, "{\"properties\":{\"desired\":{\"v\":1}}}", stale, &out);
    th_twin_write_result_free(&out);
    /* the etag moved on: the old one no longer matches, quoted or not */
    write_refused(twin, TH_TWIN_WRITE_PATCH, "{\"properties\":{\"desired\":{\"v\":2}}}", stale, 412,
                  412001);
    char quoted[20];
    snprintf(quoted, sizeof quoted, "\"%s\"", stale);
    write_refused(twin, TH_TWIN_WRITE_REPLACE, "{\"tags\":{}}", quoted, 412, 412001);
    th_twin_free(twin);
}

static void test_th_twin_service_write_invalid_and_stale_reports_invalid_fails(void **state)
{
    (void)state;
    struct th_twin *twin = seeded_twin();
    /* RFC 7232, 5: the request would fail anyway, so that failure is the answer */
    write_refused(twin, TH_TWIN_WRITE_PATCH, "{\"tags\":{\"a.b\":1}}", "\"AAAAAAAAAAA=\"", 400,
                  400004);
    write_refused(twin, TH_TWIN_WRITE_PATCH, "{\"properties\":{\"reported\":{\"r\":1}}}",
                  "\"AAAAAAAAAAA=\"", 400, 400004);
    th_twin_free(twin);
}

/* ---- properties.reported: written by the device only ---- */

static void test_th_twin_service_write_reported_as_read_succeeds(void **state)
{
    (void)state;
    static const char *const bodies[] = {
        "{\"properties\":{\"reported\":{},\"desired\":{\"x\":1}}}",
        "{\"properties\":{\"reported\":null,\"desired\":{\"x\":2}}}",
        /* what GetTwinAsync / `az iot hub device-twin show` return for a fresh twin */
        "{\"properties\":{\"desired\":{\"x\":3},\"reported\":{\"$metadata\":"
        "{\"$lastUpdated\":\"2020-07-09T13:55:50.7976980Z\"},\"$version\":1}}}",
    };
    struct th_twin *twin = seeded_twin();
    int64_t reported_version = twin->reported_version;
    char *reported_before = cJSON_PrintUnformatted(twin->reported);
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        struct th_twin_write_result out;
        write_ok(twin, TH_TWIN_WRITE_PATCH, bodies[i], NULL, &out);
        assert_true(out.desired_written);
        th_twin_write_result_free(&out);
        write_ok(twin, TH_TWIN_WRITE_REPLACE, bodies[i], NULL, &out);
        th_twin_write_result_free(&out);
    }
    assert_int_equal(twin->reported_version, reported_version);
    char *reported_after = cJSON_PrintUnformatted(twin->reported);
    assert_string_equal(reported_before, reported_after);
    assert_json_eq(twin->desired, "{\"x\":3}");
    free(reported_before);
    free(reported_after);
    th_twin_free(twin);
}

static void test_th_twin_service_write_reported_member_fails(void **state)
{
    (void)state;
    static const char *const bodies[] = {
        "{\"properties\":{\"reported\":{\"r\":1}}}",
        "{\"properties\":{\"desired\":{\"ok\":1},\"reported\":{\"$version\":2,\"r\":null}}}",
        "{\"properties\":{\"reported\":5}}",
        "{\"properties\":{\"reported\":[]}}",
        /* "$version" followed by \u0000 is another name, cut where cJSON cuts it */
        "{\"properties\":{\"reported\":{\"$version\\u0000x\":1}}}",
    };
    struct th_twin *twin = seeded_twin();
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        write_refused(twin, TH_TWIN_WRITE_PATCH, bodies[i], NULL, 400, 400004);
        write_refused(twin, TH_TWIN_WRITE_REPLACE, bodies[i], NULL, 400, 400004);
    }
    th_twin_free(twin);
}

/* ---- refusals ---- */

static void test_th_twin_service_write_invalid_part_changes_nothing_fails(void **state)
{
    (void)state;
    struct th_twin *twin = seeded_twin();
    /* a valid tag with an invalid desired property: all or nothing */
    write_refused(twin, TH_TWIN_WRITE_PATCH,
                  "{\"tags\":{\"fresh\":1},\"properties\":{\"desired\":{\"bad.key\":1}}}", NULL,
                  400, 400004);
    write_refused(twin, TH_TWIN_WRITE_PATCH, "{\"tags\":5}", NULL, 400, 400004);
    write_refused(twin, TH_TWIN_WRITE_PATCH, "{\"properties\":{\"desired\":[1,2]}}", NULL, 400,
                  400004);
    write_refused(twin, TH_TWIN_WRITE_REPLACE, "{\"properties\":{\"desired\":\"x\"}}", NULL, 400,
                  400004);
    /* a replace has nothing to delete */
    write_refused(twin, TH_TWIN_WRITE_REPLACE, "{\"tags\":{\"my-tag\":null}}", NULL, 400, 400004);
    write_refused(twin, TH_TWIN_WRITE_REPLACE,
                  "{\"properties\":{\"desired\":{\"c\":{\"d\":null}}}}", NULL, 400, 400004);
    write_refused(twin, TH_TWIN_WRITE_PATCH, "[]", NULL, 400, 400004);
    th_twin_free(twin);
}

static void test_th_twin_service_write_over_size_limit_fails(void **state)
{
    (void)state;
    struct th_twin *twin = seeded_twin();
    /* 3 tags of 3,000 bytes each: over the 8 KB tags limit */
    size_t n = 3000;
    char *big = malloc(n + 1);
    assert_non_null(big);
    memset(big, 'x', n);
    big[n] = '\0';
    size_t len = 3 * n + 64;
    char *doc = malloc(len);
    assert_non_null(doc);
    snprintf(doc, len, "{\"tags\":{\"t1\":\"%s\",\"t2\":\"%s\",\"t3\":\"%s\"}}", big, big, big);
    write_refused(twin, TH_TWIN_WRITE_PATCH, doc, NULL, 403, 403100);
    free(doc);
    free(big);
    th_twin_free(twin);
}

static void test_th_twin_service_write_missing_arguments_fails(void **state)
{
    (void)state;
    struct th_twin *twin = seeded_twin();
    struct th_twin_write_result out;
    struct th_error err = {0};
    cJSON *doc = parse("{\"tags\":{}}");
    struct th_twin_write req = {.mode = TH_TWIN_WRITE_PATCH, .doc = doc};
    assert_int_equal(th_twin_service_write(NULL, &req, T1, &out, &err), TH_ERR_INVAL);
    assert_null(out.notification);
    assert_int_equal(th_twin_service_write(twin, NULL, T1, &out, &err), TH_ERR_INVAL);
    assert_int_equal(th_twin_service_write(twin, &req, T1, NULL, &err), TH_ERR_INVAL);
    req.doc = NULL;
    assert_int_equal(th_twin_service_write(twin, &req, T1, &out, &err), TH_ERR_INVAL);
    assert_int_equal(err.code, 400004);
    cJSON_Delete(doc);
    th_twin_write_result_free(NULL);
    th_twin_write_result_free(&out);
    th_twin_free(twin);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_th_twin_service_write_patch_merges_tags_and_desired_succeeds),
        cmocka_unit_test(test_th_twin_service_write_patch_stamps_metadata_succeeds),
        cmocka_unit_test(test_th_twin_service_write_replace_replaces_both_succeeds),
        cmocka_unit_test(test_th_twin_service_write_replace_null_part_leaves_it_succeeds),
        cmocka_unit_test(test_th_twin_service_write_patch_null_sections_remove_all_succeeds),
        cmocka_unit_test(test_th_twin_service_write_patch_null_section_stale_etag_fails),
        cmocka_unit_test(test_th_twin_service_write_tags_only_sends_nothing_succeeds),
        cmocka_unit_test(test_th_twin_service_write_empty_request_changes_nothing_succeeds),
        cmocka_unit_test(test_th_twin_service_write_read_only_members_ignored_succeeds),
        cmocka_unit_test(test_th_twin_service_write_if_match_current_etag_succeeds),
        cmocka_unit_test(test_th_twin_service_write_if_match_star_succeeds),
        cmocka_unit_test(test_th_twin_service_write_if_match_stale_etag_fails),
        cmocka_unit_test(test_th_twin_service_write_invalid_and_stale_reports_invalid_fails),
        cmocka_unit_test(test_th_twin_service_write_reported_as_read_succeeds),
        cmocka_unit_test(test_th_twin_service_write_reported_member_fails),
        cmocka_unit_test(test_th_twin_service_write_invalid_part_changes_nothing_fails),
        cmocka_unit_test(test_th_twin_service_write_over_size_limit_fails),
        cmocka_unit_test(test_th_twin_service_write_missing_arguments_fails),
    };
    return cmocka_run_group_tests_name("twin_write", tests, NULL, NULL);
}
