/*
 * test_bulk.c - unit tests for th_registry_bulk (emulator/core/registry_bulk.c):
 * the hub's bulk registry operation over export-import identities, each
 * entry on its own, the per-device results, the import modes, etags and the
 * whole-request refusals (docs/rest-api.md, "Bulk registry").
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bulk.h"
#include "json.h"
#include "registry.h"
#include "th_limits.h"

#define T0 1594302950797698LL

struct seen {
    int created, updated, deleted, before_delete, notified;
};

static void on_before_delete(void *arg, struct th_identity *id)
{
    (void)id;
    ((struct seen *)arg)->before_delete++;
}

static void on_changed(void *arg, const struct th_bulk_change *ch)
{
    struct seen *s = arg;
    if (ch->kind == TH_BULK_CREATED)
        s->created++;
    else if (ch->kind == TH_BULK_UPDATED)
        s->updated++;
    else
        s->deleted++;
    if (ch->notification)
        s->notified++;
}

static cJSON *parse(const char *text)
{
    cJSON *doc = NULL;
    struct th_error err = {0};
    if (th_json_parse(text, strlen(text), TH_JSON_MAX_INPUT_BYTES, 64, &doc, &err) != TH_OK)
        fail_msg("test JSON does not parse: %s", text);
    return doc;
}

static struct th_registry *registry_with(const char *const *ids)
{
    struct th_registry *reg = th_registry_new();
    assert_non_null(reg);
    struct th_error err = {0};
    for (; ids && *ids; ids++)
        assert_int_equal(th_registry_add_device(reg, *ids, NULL, NULL, true, T0, NULL, &err),
                         TH_OK);
    return reg;
}

/* Runs the bulk text; returns the result (caller frees) and fills *seen. */
static cJSON *bulk_ok(struct th_registry *reg, const char *text, struct seen *seen)
{
    cJSON *doc = parse(text);
    struct th_bulk_hooks hooks = {seen, on_before_delete, on_changed};
    cJSON *result = NULL;
    struct th_error err = {0};
    if (th_registry_bulk(reg, doc, T0, &hooks, &result, &err) != TH_OK)
        fail_msg("bulk refused: %s", err.message);
    cJSON_Delete(doc);
    assert_non_null(result);
    return result;
}

static const char *error_code(const cJSON *result, int i)
{
    return th_json_string(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(result, "errors"), i),
                          "errorCode", NULL);
}

static void test_th_registry_bulk_create_mixed_results_succeeds(void **state)
{
    (void)state;
    static const char *const ids[] = {"old", NULL};
    struct th_registry *reg = registry_with(ids);
    struct seen seen = {0};
    cJSON *r = bulk_ok(reg,
                       "[{\"id\":\"new\",\"importMode\":\"create\",\"tags\":{\"t\":1},"
                       "\"properties\":{\"desired\":{\"d\":2}}},"
                       "{\"id\":\"old\",\"importMode\":\"Create\"},"
                       "{\"id\":\"new\",\"moduleId\":\"m\",\"importMode\":\"create\"}]",
                       &seen);
    assert_false(th_json_bool(r, "isSuccessful", true));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r, "errors")), 1);
    assert_string_equal(error_code(r, 0), "DeviceAlreadyExists");
    assert_non_null(cJSON_GetObjectItemCaseSensitive(r, "warnings"));
    struct th_identity *dev = th_registry_find(reg, "new", NULL);
    assert_non_null(dev);
    assert_int_equal((int)th_json_number(dev->twin->tags, "t", 0), 1);
    assert_int_equal((int)th_json_number(dev->twin->desired, "d", 0), 2);
    assert_non_null(th_registry_find(reg, "new", "m"));
    assert_int_equal(seen.created, 2);
    cJSON_Delete(r);
    th_registry_free(reg);
}

static void test_th_registry_bulk_update_if_match_stale_fails(void **state)
{
    (void)state;
    static const char *const ids[] = {"a", "b", NULL};
    struct th_registry *reg = registry_with(ids);
    char etag[32], text[512];
    th_identity_etag(th_registry_find(reg, "b", NULL), etag);
    snprintf(text, sizeof text,
             "[{\"id\":\"a\",\"importMode\":\"UpdateIfMatchETag\",\"eTag\":\"bm9wZQ==\","
             "\"status\":\"disabled\"},"
             "{\"id\":\"b\",\"importMode\":\"UpdateIfMatchETag\",\"etag\":\"%s\","
             "\"status\":\"disabled\",\"properties\":{\"desired\":{\"x\":1}}},"
             "{\"id\":\"c\",\"importMode\":\"update\"}]",
             etag);
    struct seen seen = {0};
    cJSON *r = bulk_ok(reg, text, &seen);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r, "errors")), 2);
    assert_string_equal(error_code(r, 0), "PreconditionFailed");
    assert_string_equal(error_code(r, 1), "DeviceNotFound");
    assert_true(th_registry_find(reg, "a", NULL)->enabled);
    assert_false(th_registry_find(reg, "b", NULL)->enabled);
    assert_int_equal(seen.updated, 1);
    assert_int_equal(seen.notified, 1);
    cJSON_Delete(r);
    th_registry_free(reg);
}

static void test_th_registry_bulk_update_bad_twin_changes_nothing_fails(void **state)
{
    (void)state;
    static const char *const ids[] = {"a", NULL};
    struct th_registry *reg = registry_with(ids);
    struct seen seen = {0};
    cJSON *r = bulk_ok(reg,
                       "[{\"id\":\"a\",\"importMode\":\"update\",\"status\":\"disabled\","
                       "\"tags\":{\"bad.key\":1}}]",
                       &seen);
    assert_string_equal(error_code(r, 0), "ArgumentInvalid");
    assert_true(th_registry_find(reg, "a", NULL)->enabled);
    assert_int_equal(seen.updated, 0);
    cJSON_Delete(r);
    th_registry_free(reg);
}

static void test_th_registry_bulk_delete_and_duplicates_succeeds(void **state)
{
    (void)state;
    static const char *const ids[] = {"a", "b", NULL};
    struct th_registry *reg = registry_with(ids);
    struct seen seen = {0};
    cJSON *r = bulk_ok(reg,
                       "[{\"id\":\"a\",\"importMode\":\"delete\"},"
                       "{\"id\":\"a\",\"importMode\":\"delete\"},"
                       "{\"id\":\"b\",\"importMode\":\"deleteIfMatchETag\"}]",
                       &seen);
    assert_string_equal(error_code(r, 0), "DeviceDefinedMultipleTimes");
    assert_string_equal(error_code(r, 1), "PreconditionFailed");
    assert_null(th_registry_find(reg, "a", NULL));
    assert_non_null(th_registry_find(reg, "b", NULL));
    assert_int_equal(seen.before_delete, 1);
    assert_int_equal(seen.deleted, 1);
    cJSON_Delete(r);
    th_registry_free(reg);
}

static void test_th_registry_bulk_update_twin_with_twin_etag_succeeds(void **state)
{
    (void)state;
    static const char *const ids[] = {"a", NULL};
    struct th_registry *reg = registry_with(ids);
    struct seen seen = {0};
    cJSON *r = bulk_ok(reg,
                       "[{\"id\":\"a\",\"importMode\":\"updateTwinIfMatchETag\","
                       "\"twinETag\":\"AAAAAAAAAAE=\",\"tags\":{\"k\":\"v\"}}]",
                       &seen);
    assert_true(th_json_bool(r, "isSuccessful", false));
    assert_string_equal(th_json_string(th_registry_find(reg, "a", NULL)->twin->tags, "k", ""), "v");
    cJSON_Delete(r);
    r = bulk_ok(reg,
                "[{\"id\":\"a\",\"importMode\":\"updateTwinIfMatchETag\","
                "\"twinETag\":\"AAAAAAAAAAE=\",\"tags\":{\"k\":\"w\"}}]",
                &seen);
    assert_string_equal(error_code(r, 0), "PreconditionFailed");
    cJSON_Delete(r);
    th_registry_free(reg);
}

static void test_th_registry_bulk_whole_request_refusals_fails(void **state)
{
    (void)state;
    struct th_registry *reg = registry_with(NULL);
    cJSON *result = NULL;
    struct th_error err = {0};
    cJSON *doc = parse("[]");
    assert_int_equal(th_registry_bulk(reg, doc, T0, NULL, &result, &err), TH_ERR_INVAL);
    assert_int_equal(err.code, 400004);
    cJSON_Delete(doc);
    doc = parse("{\"id\":\"x\"}");
    assert_int_equal(th_registry_bulk(reg, doc, T0, NULL, &result, &err), TH_ERR_INVAL);
    cJSON_Delete(doc);
    doc = cJSON_CreateArray();
    for (int i = 0; i <= TH_BULK_MAX_DEVICES; i++) {
        char id[16];
        snprintf(id, sizeof id, "d%d", i);
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "id", id);
        cJSON_AddItemToArray(doc, e);
    }
    assert_int_equal(th_registry_bulk(reg, doc, T0, NULL, &result, &err), TH_ERR_TOO_LARGE);
    assert_int_equal(err.status, 413);
    assert_int_equal(err.code, 413002);
    assert_null(result);
    assert_null(th_registry_find(reg, "d0", NULL));
    cJSON_Delete(doc);
    th_registry_free(reg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_th_registry_bulk_create_mixed_results_succeeds),
        cmocka_unit_test(test_th_registry_bulk_update_if_match_stale_fails),
        cmocka_unit_test(test_th_registry_bulk_update_bad_twin_changes_nothing_fails),
        cmocka_unit_test(test_th_registry_bulk_delete_and_duplicates_succeeds),
        cmocka_unit_test(test_th_registry_bulk_update_twin_with_twin_etag_succeeds),
        cmocka_unit_test(test_th_registry_bulk_whole_request_refusals_fails),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
