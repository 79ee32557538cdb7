/*
 * test_state.c - unit tests for saving and restoring hub state: twin state
 * (twin_state.c th_twin_state_json / th_twin_from_state), device state with
 * modules and C2D queue, policies, registry export/load and import, identity
 * updates and module creation with an initial twin (registry_state.c,
 * registry_doc.c, registry_import.c, registry_ident.c; iothub-protocol.md
 * sections 7, 10.3-10.7).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "registry.h"
#include "th_limits.h"
#include "twin.h"
#include "util.h"

#define NOW 1700000000000000LL /* 2023-11-14T22:13:20Z in microseconds */
#define LATER (NOW + 5000000LL)
#define MUCH_LATER (NOW + 90000000LL)

#define KEY16 "MDEyMzQ1Njc4OWFiY2RlZg=="
#define KEY32 "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
#define KEY32B "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY="

static int setup_registry(void **state)
{
    struct th_registry *reg = th_registry_new();
    if (!reg)
        return -1;
    *state = reg;
    return 0;
}

static int teardown_registry(void **state)
{
    th_registry_free(*state);
    return 0;
}

#define TEST(fn) cmocka_unit_test_setup_teardown(fn, setup_registry, teardown_registry)

/* ---- helpers ---- */

static cJSON *parse(const char *text)
{
    cJSON *doc = cJSON_Parse(text);
    if (!doc)
        fail_msg("test JSON does not parse: %s", text);
    return doc;
}

/* Fails the test unless the two trees are equal (member order ignored), showing both. */
static void assert_same_json(const cJSON *actual, const cJSON *expected)
{
    assert_non_null(actual);
    assert_non_null(expected);
    if (!cJSON_Compare(actual, expected, 1)) {
        char *a = cJSON_PrintUnformatted(actual);
        char *e = cJSON_PrintUnformatted(expected);
        print_error("expected %s\n     got %s\n", e ? e : "?", a ? a : "?");
        free(a);
        free(e);
        fail();
    }
}

static void assert_json_text(const cJSON *actual, const char *expected)
{
    cJSON *want = parse(expected);
    assert_same_json(actual, want);
    cJSON_Delete(want);
}

static void drop(cJSON *obj, const char *const *names)
{
    for (; *names; names++)
        cJSON_DeleteItemFromObjectCaseSensitive(obj, *names);
}

static void patch_desired(struct th_twin *twin, const char *text, int64_t now)
{
    cJSON *p = parse(text);
    struct th_error err = {0};
    if (th_twin_patch_desired(twin, p, now, NULL, &err) != TH_OK)
        fail_msg("desired patch %s refused: %s", text, err.message);
    cJSON_Delete(p);
}

static void patch_reported(struct th_twin *twin, const char *text, int64_t now)
{
    cJSON *p = parse(text);
    struct th_error err = {0};
    if (th_twin_patch_reported(twin, p, now, &err) != TH_OK)
        fail_msg("reported patch %s refused: %s", text, err.message);
    cJSON_Delete(p);
}

static void patch_tags(struct th_twin *twin, const char *text)
{
    cJSON *p = parse(text);
    struct th_error err = {0};
    if (th_twin_patch_tags(twin, p, &err) != TH_OK)
        fail_msg("tags patch %s refused: %s", text, err.message);
    cJSON_Delete(p);
}

/* A twin after several writes of every kind, including deletions and a replace. */
static struct th_twin *busy_twin(void)
{
    struct th_twin *twin = th_twin_new(NOW);
    assert_non_null(twin);
    patch_tags(twin, "{\"site\":\"lab\",\"rack\":{\"row\":3,\"slot\":\"b\"}}");
    patch_tags(twin, "{\"rack\":{\"slot\":null}}");
    patch_desired(twin, "{\"fan\":{\"speed\":3,\"mode\":\"auto\"},\"led\":true}", NOW + 1);
    patch_desired(twin, "{\"fan\":{\"mode\":null},\"list\":[1,\"a\",{\"x\":1}]}", NOW + 2);
    patch_desired(twin, "{\"led\":null}", NOW + 3);
    patch_reported(twin, "{\"fw\":\"1.0\",\"temp\":{\"now\":21.5,\"max\":30}}", NOW + 4);
    patch_reported(twin, "{\"temp\":{\"max\":null},\"fw\":\"1.1\"}", NOW + 5);
    patch_reported(twin, "{\"empty\":{}}", NOW + 6);
    return twin;
}

/* Replaces (or with value_text NULL deletes) the member at a '/'-separated path. */
static void set_at(cJSON *root, const char *path, const char *value_text)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    cJSON *node = root;
    char *save = NULL;
    char *seg = strtok_r(buf, "/", &save);
    while (seg) {
        char *next = strtok_r(NULL, "/", &save);
        bool index = cJSON_IsArray(node);
        if (!next) {
            cJSON *value = value_text ? parse(value_text) : NULL;
            if (index) {
                if (value)
                    assert_true(cJSON_ReplaceItemInArray(node, atoi(seg), value));
                else
                    cJSON_DeleteItemFromArray(node, atoi(seg));
            } else {
                cJSON_DeleteItemFromObjectCaseSensitive(node, seg);
                if (value)
                    assert_true(cJSON_AddItemToObject(node, seg, value));
            }
            return;
        }
        node = index ? cJSON_GetArrayItem(node, atoi(seg))
                     : cJSON_GetObjectItemCaseSensitive(node, seg);
        if (!node)
            fail_msg("no member at %s (segment %s)", path, seg);
        seg = next;
    }
}

/* ---- twin state ---- */

static void test_th_twin_from_state_after_patches_and_deletes_succeeds(void **state)
{
    (void)state;
    struct th_twin *twin = busy_twin();
    cJSON *saved = th_twin_state_json(twin);
    assert_non_null(saved);
    struct th_error err = {0};
    struct th_twin *back = th_twin_from_state(saved, &err);
    if (!back)
        fail_msg("restore refused: %s", err.message);

    cJSON *a = th_twin_device_view(twin), *b = th_twin_device_view(back);
    assert_same_json(b, a);
    cJSON_Delete(a);
    cJSON_Delete(b);
    a = th_twin_properties_view(twin);
    b = th_twin_properties_view(back);
    assert_same_json(b, a);
    cJSON_Delete(a);
    cJSON_Delete(b);
    assert_same_json(back->tags, twin->tags);
    char e1[16], e2[16];
    th_twin_etag(twin, e1);
    th_twin_etag(back, e2);
    assert_string_equal(e2, e1);
    assert_int_equal(th_twin_version(back), th_twin_version(twin));
    assert_int_equal(back->desired_version, 4);
    assert_int_equal(back->reported_version, 4);
    /* The state of the restored twin is the saved state itself. */
    cJSON *again = th_twin_state_json(back);
    assert_same_json(again, saved);
    cJSON_Delete(again);

    /* And the restored twin keeps working like the original. */
    patch_desired(back, "{\"fan\":{\"speed\":4}}", NOW + 9);
    patch_desired(twin, "{\"fan\":{\"speed\":4}}", NOW + 9);
    a = th_twin_properties_view(twin);
    b = th_twin_properties_view(back);
    assert_same_json(b, a);
    cJSON_Delete(a);
    cJSON_Delete(b);

    cJSON_Delete(saved);
    th_twin_free(back);
    th_twin_free(twin);
}

static void test_th_twin_state_json_fields_succeeds(void **state)
{
    (void)state;
    struct th_twin *twin = th_twin_new(NOW);
    assert_non_null(twin);
    patch_tags(twin, "{\"a\":1}");
    cJSON *s = th_twin_state_json(twin);
    assert_json_text(s, "{\"tags\":{\"a\":1},\"desired\":{},\"reported\":{},"
                        "\"desiredMeta\":{\"$lastUpdated\":\"2023-11-14T22:13:20.0000000Z\","
                        "\"$lastUpdatedVersion\":1},"
                        "\"reportedMeta\":{\"$lastUpdated\":\"2023-11-14T22:13:20.0000000Z\"},"
                        "\"desiredVersion\":1,\"reportedVersion\":1,\"etagCounter\":2}");
    cJSON_Delete(s);
    assert_null(th_twin_state_json(NULL));
    th_twin_free(twin);
}

static void test_th_twin_from_state_bad_input_fails(void **state)
{
    (void)state;
    static const struct {
        const char *path;
        const char *value; /* NULL deletes */
    } cases[] = {
        {"tags", "\"lab\""},
        {"desired", NULL},
        {"reported", "[1]"},
        {"desiredMeta", NULL},
        {"reportedMeta", "3"},
        {"desiredVersion", "\"4\""},
        {"desiredVersion", "0"},
        {"reportedVersion", "1.5"},
        {"etagCounter", "-2"},
        {"etagCounter", "1e300"},
        {"desired/led", "null"},
        {"desired/bad.key", "1"},
        {"desired/fan/$version", "1"},
        {"tags/nested", "[null]"},
        {"tags/site", "null"},           /* tags have no metadata to catch it */
        {"desiredMeta/fan/speed", NULL}, /* property without metadata */
        {"desiredMeta/ghost", "{\"$lastUpdated\":\"x\",\"$lastUpdatedVersion\":1}"},
        {"desiredMeta/fan/$lastUpdatedVersion", "99"}, /* above desiredVersion */
        {"desiredMeta/fan/$lastUpdated", "5"},
        {"desiredMeta/$lastUpdatedBy", "\"x\""},
        {"reportedMeta/fw/$lastUpdatedVersion", "1"}, /* reported metadata has none */
        {"reportedMeta/temp", "\"2023\""},
        {"reportedMeta/fw/x", "{\"$lastUpdated\":\"t\"}"}, /* a leaf has no children */
    };
    struct th_twin *twin = busy_twin();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cJSON *s = th_twin_state_json(twin);
        assert_non_null(s);
        set_at(s, cases[i].path, cases[i].value);
        struct th_error err = {0};
        struct th_twin *back = th_twin_from_state(s, &err);
        if (back)
            fail_msg("case %zu (%s) was accepted", i, cases[i].path);
        assert_int_equal(err.result, TH_ERR_INVAL);
        assert_int_equal(err.code, 400004);
        assert_true(strlen(err.message) > 10);
        cJSON_Delete(s);
    }
    struct th_error err = {0};
    cJSON *arr = parse("[]");
    assert_null(th_twin_from_state(arr, &err));
    assert_int_equal(err.code, 400004);
    assert_null(th_twin_from_state(NULL, &err));
    cJSON_Delete(arr);
    th_twin_free(twin);
}

static void test_th_twin_from_state_error_names_field_fails(void **state)
{
    (void)state;
    struct th_twin *twin = busy_twin();
    cJSON *s = th_twin_state_json(twin);
    set_at(s, "desiredMeta/fan/speed", NULL);
    struct th_error err = {0};
    assert_null(th_twin_from_state(s, &err));
    assert_non_null(strstr(err.message, "desiredMeta.fan.speed"));
    cJSON_Delete(s);
    th_twin_free(twin);
}

/*
 * Metadata members in the order of the properties (as written), reversed or rotated: each loads
 * the same, and a property whose metadata is missing is named whatever the order (check_meta
 * tries the member after the previous match first, then looks the name up).
 */
static void test_th_twin_from_state_metadata_in_any_order_succeeds(void **state)
{
    (void)state;
    enum { N = 30 };
    for (int order = 0; order < 3; order++) {
        for (int drop = -1; drop < N; drop += 13) {
            struct th_twin *twin = th_twin_new(NOW);
            cJSON *s = th_twin_state_json(twin);
            cJSON *reported = cJSON_GetObjectItemCaseSensitive(s, "reported");
            cJSON *meta = cJSON_GetObjectItemCaseSensitive(s, "reportedMeta");
            for (int i = 0; i < N; i++) {
                char key[8];
                snprintf(key, sizeof key, "k%d", i);
                assert_non_null(cJSON_AddNumberToObject(reported, key, i));
            }
            for (int j = 0; j < N; j++) {
                int i = order == 0 ? j : order == 1 ? N - 1 - j : (j + 7) % N;
                char key[8];
                snprintf(key, sizeof key, "k%d", i);
                if (i == drop)
                    continue;
                cJSON *leaf = cJSON_AddObjectToObject(meta, key);
                assert_non_null(
                    cJSON_AddStringToObject(leaf, "$lastUpdated", "2026-12-07T04:22:47.4312510Z"));
            }
            struct th_error err = {0};
            struct th_twin *back = th_twin_from_state(s, &err);
            if (drop < 0) {
                if (back == NULL)
                    fail_msg("order %d: %s", order, err.message);
                assert_int_equal(cJSON_GetArraySize(back->reported), N);
                th_twin_free(back);
            } else {
                char want[64];
                snprintf(want, sizeof want, "reportedMeta.k%d has no metadata", drop);
                assert_null(back);
                if (strstr(err.message, want) == NULL)
                    fail_msg("order %d, k%d dropped: %s", order, drop, err.message);
            }
            cJSON_Delete(s);
            th_twin_free(twin);
        }
    }
}

static void test_th_twin_from_state_oversized_section_fails(void **state)
{
    (void)state;
    struct th_twin *twin = th_twin_new(NOW);
    cJSON *s = th_twin_state_json(twin);
    /* 9 properties of 4000 bytes: 36 KB, over the 32 KB reported limit. */
    cJSON *reported = cJSON_GetObjectItemCaseSensitive(s, "reported");
    cJSON *meta = cJSON_GetObjectItemCaseSensitive(s, "reportedMeta");
    char *big = malloc(4001);
    assert_non_null(big);
    memset(big, 'x', 4000);
    big[4000] = '\0';
    for (int i = 0; i < 9; i++) {
        char key[8];
        snprintf(key, sizeof key, "k%d", i);
        assert_non_null(cJSON_AddStringToObject(reported, key, big));
        cJSON *leaf = cJSON_AddObjectToObject(meta, key);
        assert_non_null(cJSON_AddStringToObject(leaf, "$lastUpdated", "t"));
    }
    free(big);
    struct th_error err = {0};
    assert_null(th_twin_from_state(s, &err));
    assert_int_equal(err.result, TH_ERR_TOO_LARGE);
    assert_int_equal(err.code, 403100);
    cJSON_Delete(s);
    th_twin_free(twin);
}

/* ---- device state ---- */

static struct th_identity *add_device(struct th_registry *reg, const char *id)
{
    struct th_identity *dev = NULL;
    struct th_error err = {0};
    if (th_registry_add_device(reg, id, NULL, NULL, true, NOW, &dev, &err) != TH_OK)
        fail_msg("add_device %s: %s", id, err.message);
    return dev;
}

static struct th_identity *add_module(struct th_registry *reg, const char *did, const char *mid)
{
    struct th_identity *mod = NULL;
    struct th_error err = {0};
    if (th_registry_add_module(reg, did, mid, NULL, NULL, NOW, &mod, &err) != TH_OK)
        fail_msg("add_module %s/%s: %s", did, mid, err.message);
    return mod;
}

/* A device with everything that state must carry. */
static struct th_identity *rich_device(struct th_registry *reg, const char *id)
{
    struct th_identity *dev = add_device(reg, id);
    struct th_error err = {0};
    assert_int_equal(th_identity_update(dev, KEY32, KEY16, 0, "maintenance", LATER, &err), TH_OK);
    dev->model_id = strdup("dtmi:com:example:Thermostat;1");
    assert_non_null(dev->model_id);
    th_identity_set_connected(dev, true, LATER + 1);
    th_twin_free(dev->twin);
    dev->twin = busy_twin();
    static const uint8_t bin[] = {0, 1, 2, 0xff, 'z'};
    assert_int_equal(
        th_identity_c2d_push(dev, "m1", "a=1&%24.ct=text%2Fplain", "hello", 5, NOW + 7, &err),
        TH_OK);
    assert_int_equal(th_identity_c2d_push(dev, "m2", "", NULL, 0, NOW + 8, &err), TH_OK);
    assert_int_equal(th_identity_c2d_push(dev, "m3", "b=2", bin, sizeof bin, NOW + 9, &err), TH_OK);
    struct th_identity *m1 = add_module(reg, id, "edgeAgent");
    m1->managed_by = strdup("IotEdge");
    assert_non_null(m1->managed_by);
    patch_reported(m1->twin, "{\"schema\":\"1.1\"}", NOW + 10);
    assert_int_equal(th_identity_update(m1, "", NULL, -1, NULL, LATER, &err), TH_OK);
    th_identity_touch(m1, NOW + 11);
    struct th_identity *m2 = add_module(reg, id, "sensor");
    patch_desired(m2->twin, "{\"rate\":5}", NOW + 12);
    return dev;
}

static void assert_identity_same(const struct th_identity *a, const struct th_identity *b)
{
    static const char *const volatile_fields[] = {"connectionState", "connectionStateUpdatedTime",
                                                  NULL};
    cJSON *ja = th_identity_to_json(a), *jb = th_identity_to_json(b);
    drop(ja, volatile_fields);
    drop(jb, volatile_fields);
    assert_same_json(jb, ja);
    cJSON_Delete(ja);
    cJSON_Delete(jb);
    ja = th_identity_twin_json(a);
    jb = th_identity_twin_json(b);
    drop(ja, volatile_fields);
    drop(jb, volatile_fields);
    assert_same_json(jb, ja);
    cJSON_Delete(ja);
    cJSON_Delete(jb);
}

static void test_th_registry_restore_device_round_trip_with_modules_and_queue_succeeds(void **state)
{
    struct th_registry *reg = *state;
    struct th_identity *dev = rich_device(reg, "d1");
    cJSON *saved = th_device_state_json(dev);
    assert_non_null(saved);

    struct th_registry *other = th_registry_new();
    assert_non_null(other);
    struct th_error err = {0};
    if (th_registry_restore_device(other, saved, &err) != TH_OK)
        fail_msg("restore refused: %s", err.message);
    struct th_identity *back = th_registry_find(other, "d1", NULL);
    assert_non_null(back);

    /* Exactly the same state, and the same service views (connection state aside). */
    cJSON *again = th_device_state_json(back);
    assert_same_json(again, saved);
    cJSON_Delete(again);
    assert_identity_same(dev, back);
    assert_false(back->connected);
    assert_true(dev->connected);
    assert_false(back->enabled);
    assert_string_equal(back->status_reason, "maintenance");
    assert_string_equal(back->generation_id, dev->generation_id);
    assert_int_equal(back->etag_counter, 2);
    assert_int_equal(back->status_updated_us, LATER);
    assert_string_equal(back->model_id, "dtmi:com:example:Thermostat;1");
    assert_int_equal(back->module_count, 2);
    for (size_t i = 0; i < 2; i++) {
        assert_ptr_equal(back->modules[i]->parent, back);
        assert_string_equal(back->modules[i]->module_id, dev->modules[i]->module_id);
        assert_string_equal(back->modules[i]->generation_id, dev->modules[i]->generation_id);
        assert_identity_same(dev->modules[i], back->modules[i]);
    }
    assert_string_equal(back->modules[0]->managed_by, "IotEdge");
    assert_int_equal(back->modules[0]->last_activity_us, NOW + 11);
    assert_int_equal(th_registry_module_total(other), 2);

    /* The queue comes back in order with identical bytes. */
    assert_int_equal(back->c2d_count, 3);
    for (int i = 0; i < 3; i++) {
        struct th_c2d_msg *want = th_identity_c2d_pop(dev);
        struct th_c2d_msg *got = th_identity_c2d_pop(back);
        assert_non_null(want);
        assert_non_null(got);
        assert_string_equal(got->message_id, want->message_id);
        assert_string_equal(got->bag, want->bag);
        assert_int_equal(got->len, want->len);
        if (want->len)
            assert_memory_equal(got->body, want->body, want->len);
        assert_int_equal(got->enqueued_us, want->enqueued_us);
        th_c2d_msg_free(want);
        th_c2d_msg_free(got);
    }
    assert_null(th_identity_c2d_pop(back));

    cJSON_Delete(saved);
    th_registry_free(other);
}

static void test_th_registry_restore_device_later_generation_ids_stay_unique_succeeds(void **state)
{
    struct th_registry *reg = *state;
    struct th_identity *dev = add_device(reg, "d1");
    cJSON *saved = th_device_state_json(dev);
    /* A generation id from the future: newer ones must still be larger. */
    set_at(saved, "generationId", "\"900000000000000000\"");
    set_at(saved, "deviceId", "\"d2\"");
    struct th_error err = {0};
    assert_int_equal(th_registry_restore_device(reg, saved, &err), TH_OK);
    struct th_identity *d3 = add_device(reg, "d3");
    assert_string_equal(th_registry_find(reg, "d2", NULL)->generation_id, "900000000000000000");
    assert_string_equal(d3->generation_id, "900000000000000001");
    cJSON_Delete(saved);
}

static void test_th_registry_restore_device_existing_device_fails(void **state)
{
    struct th_registry *reg = *state;
    struct th_identity *dev = rich_device(reg, "d1");
    cJSON *saved = th_device_state_json(dev);
    struct th_error err = {0};
    assert_int_equal(th_registry_restore_device(reg, saved, &err), TH_ERR_EXISTS);
    assert_int_equal(err.code, 409001);
    assert_ptr_equal(th_registry_find(reg, "d1", NULL), dev);
    assert_int_equal(th_registry_device_count(reg), 1);
    cJSON *after = th_device_state_json(dev);
    assert_same_json(after, saved);
    cJSON_Delete(after);
    cJSON_Delete(saved);
}

/* The two steps give what th_registry_restore_device gives; a refused device stays the caller's. */
static void test_th_device_from_state_then_add_restored_succeeds(void **state)
{
    struct th_registry *reg = *state;
    struct th_identity *dev = rich_device(reg, "d1");
    cJSON *saved = th_device_state_json(dev);
    set_at(saved, "generationId", "\"900000000000000000\"");
    struct th_identity *built = NULL;
    uint64_t max_gen = 0;
    struct th_error err = {0};
    cJSON *copy = cJSON_Duplicate(saved, 1);
    assert_int_equal(th_device_from_state(copy, &built, &max_gen, &err), TH_OK);
    /* the twin's sections were moved out of the state, not copied */
    assert_null(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(copy, "twin"),
                                                 "desired"));
    cJSON_Delete(copy);
    assert_non_null(built);
    assert_true(max_gen >= 900000000000000000ULL);
    /* d1 is there: refused, the device stays the caller's */
    assert_int_equal(th_registry_add_restored(reg, built, max_gen, &err), TH_ERR_EXISTS);
    assert_int_equal(err.code, 409001);
    assert_ptr_equal(th_registry_find(reg, "d1", NULL), dev);
    th_device_from_state_free(built);

    /* Under another id (its modules name d1, so without them): added, exactly as saved, and
     * later generation ids stay larger. */
    set_at(saved, "deviceId", "\"d2\"");
    set_at(saved, "modules", "[]");
    copy = cJSON_Duplicate(saved, 1);
    assert_int_equal(th_device_from_state(copy, &built, &max_gen, &err), TH_OK);
    cJSON_Delete(copy);
    assert_int_equal(th_registry_add_restored(reg, built, max_gen, &err), TH_OK);
    assert_ptr_equal(th_registry_find(reg, "d2", NULL), built);
    cJSON *again = th_device_state_json(built);
    assert_same_json(again, saved);
    cJSON_Delete(again);
    struct th_identity *d3 = add_device(reg, "d3");
    assert_true(strcmp(d3->generation_id, "900000000000000000") > 0 &&
                strlen(d3->generation_id) == 18);
    cJSON_Delete(saved);
}

static void test_th_device_from_state_bad_state_fails(void **state)
{
    (void)state;
    struct th_identity *built = (struct th_identity *)1;
    uint64_t max_gen = 0;
    struct th_error err = {0};
    cJSON *doc = cJSON_Parse("[]");
    assert_int_equal(th_device_from_state(doc, &built, &max_gen, &err), TH_ERR_INVAL);
    assert_null(built);
    assert_non_null(strstr(err.message, "must be an object"));
    cJSON_Delete(doc);
    doc = cJSON_Parse("{\"deviceId\":\"d1\",\"authType\":\"sas\"}");
    assert_int_equal(th_device_from_state(doc, &built, &max_gen, &err), TH_ERR_INVAL);
    assert_null(built);
    cJSON_Delete(doc);
}

static void test_th_registry_restore_device_bad_types_fails(void **state)
{
    struct th_registry *reg = *state;
    static const struct {
        const char *path;
        const char *value;
        th_result result;
        int code;
    } cases[] = {
        {"deviceId", "7", TH_ERR_INVAL, 400004},
        {"deviceId", "\"a b\"", TH_ERR_INVAL, 400004},
        {"primaryKey", "\"c2hvcnQ=\"", TH_ERR_INVAL, 400004},
        {"secondaryKey", NULL, TH_ERR_INVAL, 400004},
        {"enabled", "\"yes\"", TH_ERR_INVAL, 400004},
        {"statusReason", "5", TH_ERR_INVAL, 400004},
        {"generationId", "\"12a\"", TH_ERR_INVAL, 400004},
        {"generationId", "\"123456789012345678901\"", TH_ERR_INVAL, 400004},
        {"etagCounter", "0", TH_ERR_INVAL, 400004},
        {"etagCounter", "\"1\"", TH_ERR_INVAL, 400004},
        {"statusUpdated", "-1", TH_ERR_INVAL, 400004},
        {"modelId", "{}", TH_ERR_INVAL, 400004},
        {"twin", NULL, TH_ERR_INVAL, 400004},
        {"twin/desiredVersion", "\"x\"", TH_ERR_INVAL, 400004},
        {"c2d", "{}", TH_ERR_INVAL, 400004},
        {"c2d/0/body", "\"not base64!\"", TH_ERR_INVAL, 400004},
        {"c2d/1/messageId", NULL, TH_ERR_INVAL, 400004},
        {"c2d/2/enqueued", "1.5", TH_ERR_INVAL, 400004},
        {"modules", "{}", TH_ERR_INVAL, 400004},
        {"modules/0/moduleId", "\"sensor\"", TH_ERR_INVAL, 400011},
        {"modules/1/enabled", "false", TH_ERR_INVAL, 400004},
        {"modules/1/deviceId", "\"other\"", TH_ERR_INVAL, 400004},
        {"modules/1/twin/reported", "[]", TH_ERR_INVAL, 400004},
        {"modules/1/primaryKey", "\"\"", TH_ERR_INVAL, 400004},
    };
    struct th_registry *src = th_registry_new();
    assert_non_null(src);
    struct th_identity *dev = rich_device(src, "d1");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cJSON *s = th_device_state_json(dev);
        assert_non_null(s);
        set_at(s, cases[i].path, cases[i].value);
        struct th_error err = {0};
        th_result r = th_registry_restore_device(reg, s, &err);
        if (r == TH_OK)
            fail_msg("case %zu (%s) was accepted", i, cases[i].path);
        assert_int_equal(r, cases[i].result);
        assert_int_equal(err.code, cases[i].code);
        assert_int_equal(th_registry_device_count(reg), 0);
        cJSON_Delete(s);
    }
    /* The field is named: a broken module twin says where. */
    cJSON *s = th_device_state_json(dev);
    set_at(s, "modules/1/twin/reported", "[]");
    struct th_error err = {0};
    assert_int_equal(th_registry_restore_device(reg, s, &err), TH_ERR_INVAL);
    assert_non_null(strstr(err.message, "device.modules[1].twin"));
    cJSON_Delete(s);
    th_registry_free(src);
}

static void test_th_registry_restore_device_queue_over_limit_fails(void **state)
{
    struct th_registry *reg = *state;
    struct th_identity *dev = add_device(reg, "d1");
    cJSON *s = th_device_state_json(dev);
    cJSON *q = cJSON_GetObjectItemCaseSensitive(s, "c2d");
    for (int i = 0; i <= TH_C2D_MAX_QUEUE; i++)
        assert_true(cJSON_AddItemToArray(
            q, parse("{\"messageId\":\"m\",\"bag\":\"\",\"body\":\"\",\"enqueued\":1}")));
    set_at(s, "deviceId", "\"d2\"");
    struct th_error err = {0};
    assert_int_equal(th_registry_restore_device(reg, s, &err), TH_ERR_TOO_LARGE);
    assert_int_equal(err.code, 403004);
    assert_null(th_registry_find(reg, "d2", NULL));
    cJSON_Delete(s);
}

static void test_th_device_state_json_module_fails(void **state)
{
    struct th_registry *reg = *state;
    add_device(reg, "d1");
    struct th_identity *mod = add_module(reg, "d1", "m1");
    assert_null(th_device_state_json(mod));
    assert_null(th_device_state_json(NULL));
}

/* ---- policies ---- */

static void test_th_registry_restore_policies_round_trip_succeeds(void **state)
{
    struct th_registry *reg = *state;
    assert_int_equal(th_registry_add_dev_identities(reg, NOW), TH_OK);
    assert_int_equal(th_registry_set_policy(reg, "dash", KEY32, KEY16,
                                            TH_PERM_REGISTRY_READ | TH_PERM_SERVICE_CONNECT),
                     TH_OK);
    cJSON *arr = th_registry_policies_json(reg);
    assert_non_null(arr);
    assert_int_equal(cJSON_GetArraySize(arr), 6);
    cJSON *dash = cJSON_GetArrayItem(arr, 5);
    assert_json_text(dash,
                     "{\"keyName\":\"dash\",\"primaryKey\":\"" KEY32 "\",\"secondaryKey\":\"" KEY16
                     "\",\"rights\":\"RegistryRead, ServiceConnect\"}");

    struct th_registry *other = th_registry_new();
    assert_int_equal(th_registry_set_policy(other, "old", NULL, NULL, TH_PERM_REGISTRY_READ),
                     TH_OK);
    struct th_error err = {0};
    assert_int_equal(th_registry_restore_policies(other, arr, &err), TH_OK);
    assert_null(th_registry_policy(other, "old", 3));
    const struct th_policy *p = th_registry_policy(other, "iothubowner", 11);
    assert_non_null(p);
    assert_string_equal(p->primary_key, TH_DEV_OWNER_KEY);
    assert_int_equal(p->perms, TH_PERM_REGISTRY_READ | TH_PERM_REGISTRY_WRITE |
                                   TH_PERM_SERVICE_CONNECT | TH_PERM_DEVICE_CONNECT);
    cJSON *back = th_registry_policies_json(other);
    assert_same_json(back, arr);
    cJSON_Delete(back);

    /* An empty array removes every policy. */
    cJSON *empty = parse("[]");
    assert_int_equal(th_registry_restore_policies(other, empty, &err), TH_OK);
    assert_null(th_registry_policy(other, "iothubowner", 11));
    cJSON_Delete(empty);
    cJSON_Delete(arr);
    th_registry_free(other);
}

static void test_th_registry_restore_policies_invalid_fails(void **state)
{
    struct th_registry *reg = *state;
    assert_int_equal(th_registry_add_dev_identities(reg, NOW), TH_OK);
    cJSON *before = th_registry_policies_json(reg);
    static const char *const bad[] = {
        "{}",
        "[{\"keyName\":\"a\",\"rights\":\"Everything\"}]",
        "[{\"keyName\":\"a\",\"rights\":\"RegistryRead\",\"primaryKey\":\"eA==\"}]",
        "[{\"keyName\":\"a\",\"rights\":\"RegistryRead\"},{\"keyName\":\"a\","
        "\"rights\":\"RegistryRead\"}]",
        "[{\"rights\":\"RegistryRead\"}]",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cJSON *doc = parse(bad[i]);
        struct th_error err = {0};
        assert_int_equal(th_registry_restore_policies(reg, doc, &err), TH_ERR_INVAL);
        assert_int_equal(err.code, 400004);
        cJSON *after = th_registry_policies_json(reg);
        assert_same_json(after, before);
        cJSON_Delete(after);
        cJSON_Delete(doc);
    }
    cJSON_Delete(before);
}

/* ---- export and load ---- */

/* Fills a registry with devices, modules, twins and a disabled device. */
static void populate(struct th_registry *reg)
{
    struct th_error err = {0};
    assert_int_equal(th_registry_add_dev_identities(reg, NOW), TH_OK);
    struct th_identity *d1 = add_device(reg, "d1");
    assert_int_equal(th_identity_update(d1, NULL, NULL, 0, "retired", LATER, &err), TH_OK);
    patch_tags(d1->twin, "{\"site\":\"lab\",\"floor\":{\"n\":2}}");
    patch_desired(d1->twin, "{\"rate\":{\"hz\":5},\"list\":[1,2]}", NOW + 1);
    patch_desired(d1->twin, "{\"rate\":{\"mode\":\"fast\"}}", NOW + 2);
    patch_reported(d1->twin, "{\"fw\":\"2.0\"}", NOW + 3);
    struct th_identity *m = add_module(reg, "d1", "edgeHub");
    m->managed_by = strdup("IotEdge");
    patch_reported(m->twin, "{\"up\":true}", NOW + 4);
    add_module(reg, "d1", "plain");
    add_device(reg, "d2");
}

static void assert_exported_identity_same(const struct th_identity *a, const struct th_identity *b)
{
    /* Hub-maintained values that a registry document does not carry. */
    static const char *const ident_skip[] = {"generationId", "etag", "statusUpdatedTime", NULL};
    static const char *const twin_skip[] = {"etag", "deviceEtag", "version", "statusUpdateTime",
                                            NULL};
    cJSON *ja = th_identity_to_json(a), *jb = th_identity_to_json(b);
    drop(ja, ident_skip);
    drop(jb, ident_skip);
    assert_same_json(jb, ja);
    cJSON_Delete(ja);
    cJSON_Delete(jb);
    ja = th_identity_twin_json(a);
    jb = th_identity_twin_json(b);
    drop(ja, twin_skip);
    drop(jb, twin_skip);
    th_twin_strip_readonly(ja);
    th_twin_strip_readonly(jb);
    assert_same_json(jb, ja);
    cJSON_Delete(ja);
    cJSON_Delete(jb);
}

static void test_th_registry_export_load_round_trip_succeeds(void **state)
{
    struct th_registry *reg = *state;
    populate(reg);
    cJSON *doc = th_registry_export(reg, true);
    assert_non_null(doc);

    struct th_registry *other = th_registry_new();
    struct th_error err = {0};
    if (th_registry_load(other, doc, MUCH_LATER, &err) != TH_OK)
        fail_msg("load refused the export: %s", err.message);
    assert_int_equal(th_registry_device_count(other), th_registry_device_count(reg));
    assert_int_equal(th_registry_module_total(other), th_registry_module_total(reg));
    for (struct th_identity *d = th_registry_next_device(reg, NULL); d;
         d = th_registry_next_device(reg, d)) {
        struct th_identity *o = th_registry_find(other, d->device_id, NULL);
        assert_non_null(o);
        assert_exported_identity_same(d, o);
        for (size_t i = 0; i < d->module_count; i++) {
            struct th_identity *om =
                th_registry_find(other, d->device_id, d->modules[i]->module_id);
            assert_non_null(om);
            assert_exported_identity_same(d->modules[i], om);
        }
    }
    cJSON *pa = th_registry_policies_json(reg), *pb = th_registry_policies_json(other);
    assert_same_json(pb, pa);
    cJSON_Delete(pa);
    cJSON_Delete(pb);
    /* Exporting the copy gives the same document. */
    cJSON *doc2 = th_registry_export(other, true);
    assert_same_json(doc2, doc);
    cJSON_Delete(doc2);
    cJSON_Delete(doc);
    th_registry_free(other);
}

static void test_th_registry_export_without_twins_succeeds(void **state)
{
    struct th_registry *reg = *state;
    populate(reg);
    cJSON *doc = th_registry_export(reg, false);
    assert_non_null(doc);
    const cJSON *devices = cJSON_GetObjectItemCaseSensitive(doc, "devices");
    const cJSON *d1 = cJSON_GetArrayItem(devices, 1);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(d1, "deviceId")->valuestring, "d1");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(d1, "status")->valuestring, "disabled");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(d1, "statusReason")->valuestring,
                        "retired");
    assert_null(cJSON_GetObjectItemCaseSensitive(d1, "tags"));
    assert_null(cJSON_GetObjectItemCaseSensitive(d1, "properties"));
    const cJSON *mods = cJSON_GetObjectItemCaseSensitive(d1, "modules");
    assert_int_equal(cJSON_GetArraySize(mods), 2);
    const struct th_identity *plain = th_registry_find(reg, "d1", "plain");
    char want[512];
    snprintf(want, sizeof want,
             "{\"moduleId\":\"plain\",\"authentication\":{\"type\":\"sas\","
             "\"symmetricKey\":{\"primaryKey\":\"%s\",\"secondaryKey\":\"%s\"}}}",
             plain->primary_key, plain->secondary_key);
    assert_json_text(cJSON_GetArrayItem(mods, 1), want);
    assert_string_equal(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(mods, 0), "managedBy")->valuestring,
        "IotEdge");
    cJSON_Delete(doc);
}

/* ---- import ---- */

/* d1 (with module m1) exists; the document names d1, m1, a new m2 and a new d2 with a module. */
#define IMPORT_DOC                                                                                 \
    "{\"devices\":["                                                                               \
    "{\"deviceId\":\"d1\",\"status\":\"disabled\",\"statusReason\":\"swap\","                      \
    "\"authentication\":{\"symmetricKey\":{\"primaryKey\":\"" KEY32B "\"}},"                       \
    "\"tags\":{\"site\":\"new\"},\"properties\":{\"desired\":{\"rate\":9},"                        \
    "\"reported\":{\"ignored\":1}},"                                                               \
    "\"modules\":[{\"moduleId\":\"m1\",\"tags\":{\"t\":1}},{\"moduleId\":\"m2\"}]},"               \
    "{\"deviceId\":\"d2\",\"modules\":[{\"moduleId\":\"x\"}]}],"                                   \
    "\"policies\":[{\"keyName\":\"iothubowner\",\"rights\":\"RegistryRead\"},"                     \
    "{\"keyName\":\"extra\",\"rights\":\"ServiceConnect\"}]}"

static void existing_for_import(struct th_registry *reg)
{
    assert_int_equal(th_registry_add_dev_identities(reg, NOW), TH_OK);
    struct th_identity *d1 = NULL;
    struct th_error err = {0};
    assert_int_equal(th_registry_add_device(reg, "d1", KEY32, KEY16, true, NOW, &d1, &err), TH_OK);
    patch_tags(d1->twin, "{\"site\":\"old\",\"keep\":false}");
    patch_desired(d1->twin, "{\"rate\":1}", NOW);
    patch_reported(d1->twin, "{\"fw\":\"1\"}", NOW);
    add_module(reg, "d1", "m1");
}

static void test_th_registry_import_skip_existing_succeeds(void **state)
{
    struct th_registry *reg = *state;
    existing_for_import(reg);
    struct th_identity *d1 = th_registry_find(reg, "d1", NULL);
    cJSON *before = th_device_state_json(d1);
    cJSON *doc = parse(IMPORT_DOC);
    size_t created = 99, updated = 99, skipped = 99;
    struct th_error err = {0};
    if (th_registry_import(reg, doc, false, LATER, &created, &updated, &skipped, &err) != TH_OK)
        fail_msg("import refused: %s", err.message);
    assert_int_equal(created, 3); /* d1/m2, d2, d2/x */
    assert_int_equal(updated, 0);
    assert_int_equal(skipped, 2); /* d1, d1/m1 */
    assert_non_null(th_registry_find(reg, "d1", "m2"));
    assert_ptr_equal(th_registry_find(reg, "d1", "m2")->parent, d1);
    assert_non_null(th_registry_find(reg, "d2", "x"));
    assert_int_equal(th_registry_module_total(reg), 4); /* dev-module, m1, m2, x */
    /* d1 and m1 untouched: strip the new module from d1's state before comparing. */
    cJSON *after = th_device_state_json(d1);
    cJSON_DeleteItemFromArray(cJSON_GetObjectItemCaseSensitive(after, "modules"), 1);
    assert_same_json(after, before);
    /* Existing policy kept, new one added. */
    assert_string_equal(th_registry_policy(reg, "iothubowner", 11)->primary_key, TH_DEV_OWNER_KEY);
    assert_non_null(th_registry_policy(reg, "extra", 5));
    cJSON_Delete(after);
    cJSON_Delete(before);
    cJSON_Delete(doc);
}

static void test_th_registry_import_overwrite_succeeds(void **state)
{
    struct th_registry *reg = *state;
    existing_for_import(reg);
    struct th_identity *d1 = th_registry_find(reg, "d1", NULL);
    struct th_identity *m1 = th_registry_find(reg, "d1", "m1");
    int64_t desired_version = d1->twin->desired_version;
    uint64_t twin_etag = d1->twin->etag_counter;
    cJSON *doc = parse(IMPORT_DOC);
    size_t created = 0, updated = 0, skipped = 0;
    struct th_error err = {0};
    if (th_registry_import(reg, doc, true, LATER, &created, &updated, &skipped, &err) != TH_OK)
        fail_msg("import refused: %s", err.message);
    assert_int_equal(created, 3);
    assert_int_equal(updated, 2);
    assert_int_equal(skipped, 0);
    /* Given fields replaced, omitted ones kept. */
    assert_string_equal(d1->primary_key, KEY32B);
    assert_string_equal(d1->secondary_key, KEY16);
    assert_false(d1->enabled);
    assert_string_equal(d1->status_reason, "swap");
    assert_int_equal(d1->status_updated_us, LATER);
    assert_int_equal(d1->etag_counter, 2);
    assert_json_text(d1->twin->tags, "{\"site\":\"new\"}");
    assert_json_text(d1->twin->desired, "{\"rate\":9}");
    assert_json_text(d1->twin->reported, "{\"fw\":\"1\"}");
    assert_int_equal(d1->twin->desired_version, desired_version + 1);
    assert_int_equal(d1->twin->etag_counter, twin_etag + 2);
    assert_json_text(m1->twin->tags, "{\"t\":1}");
    assert_int_equal(m1->etag_counter, 1); /* keys unchanged */
    assert_string_equal(th_registry_policy(reg, "iothubowner", 11)->name, "iothubowner");
    assert_int_equal(th_registry_policy(reg, "iothubowner", 11)->perms, TH_PERM_REGISTRY_READ);
    cJSON_Delete(doc);
}

static void test_th_registry_import_same_export_changes_nothing_succeeds(void **state)
{
    struct th_registry *reg = *state;
    populate(reg);
    cJSON *doc = th_registry_export(reg, true);
    struct th_identity *d1 = th_registry_find(reg, "d1", NULL);
    cJSON *before = th_device_state_json(d1);
    size_t created = 9, updated = 9, skipped = 9;
    struct th_error err = {0};
    if (th_registry_import(reg, doc, true, LATER, &created, &updated, &skipped, &err) != TH_OK)
        fail_msg("import refused: %s", err.message);
    assert_int_equal(created, 0);
    assert_int_equal(updated, th_registry_device_count(reg) + th_registry_module_total(reg));
    assert_int_equal(skipped, 0);
    cJSON *after = th_device_state_json(d1);
    assert_same_json(after, before);
    cJSON_Delete(after);
    cJSON_Delete(before);
    cJSON_Delete(doc);
}

static void test_th_registry_import_invalid_entry_changes_nothing_fails(void **state)
{
    struct th_registry *reg = *state;
    existing_for_import(reg);
    static const struct {
        const char *doc;
        th_result result;
        int code;
    } cases[] = {
        /* The bad entry comes after a new device and an overwrite: both must be undone. */
        {"{\"devices\":[{\"deviceId\":\"new\"},{\"deviceId\":\"d1\",\"tags\":{\"a\":1}},"
         "{\"deviceId\":\"d3\",\"properties\":{\"desired\":{\"bad.key\":1}}}]}",
         TH_ERR_INVAL, 400004},
        {"{\"devices\":[{\"deviceId\":\"d1\",\"tags\":{\"a\":1},\"modules\":[{\"moduleId\":"
         "\"m9\"},{\"moduleId\":\"m1\",\"properties\":{\"reported\":{\"$x\":1}}}]}]}",
         TH_ERR_INVAL, 400004},
        {"{\"devices\":[{\"deviceId\":\"d1\",\"status\":\"off\"}]}", TH_ERR_INVAL, 400004},
        {"{\"devices\":[{\"deviceId\":\"d1\"},{\"deviceId\":\"d1\"}]}", TH_ERR_INVAL, 400011},
        {"{\"devices\":[{\"deviceId\":\"n1\"}],\"policies\":[{\"keyName\":\"p\"}]}", TH_ERR_INVAL,
         400004},
        {"{\"device\":[]}", TH_ERR_INVAL, 400004},
    };
    cJSON *before = th_registry_export(reg, true);
    cJSON *state_before = th_device_state_json(th_registry_find(reg, "d1", NULL));
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (int overwrite = 0; overwrite < 2; overwrite++) {
            cJSON *doc = parse(cases[i].doc);
            size_t created = 77;
            struct th_error err = {0};
            th_result r =
                th_registry_import(reg, doc, overwrite, LATER, &created, NULL, NULL, &err);
            if (r == TH_OK)
                fail_msg("case %zu was accepted", i);
            assert_int_equal(r, cases[i].result);
            assert_int_equal(err.code, cases[i].code);
            assert_int_equal(created, 77);
            cJSON *after = th_registry_export(reg, true);
            assert_same_json(after, before);
            cJSON_Delete(after);
            after = th_device_state_json(th_registry_find(reg, "d1", NULL));
            assert_same_json(after, state_before);
            cJSON_Delete(after);
            cJSON_Delete(doc);
        }
    }
    cJSON_Delete(state_before);
    cJSON_Delete(before);
}

static void test_th_registry_import_too_many_modules_fails(void **state)
{
    struct th_registry *reg = *state;
    add_device(reg, "d1");
    for (int i = 0; i < TH_MAX_MODULES_PER_DEVICE - 1; i++) {
        char mid[16];
        snprintf(mid, sizeof mid, "m%d", i);
        add_module(reg, "d1", mid);
    }
    cJSON *doc = parse("{\"devices\":[{\"deviceId\":\"d1\",\"modules\":[{\"moduleId\":\"m0\"},"
                       "{\"moduleId\":\"a\"},{\"moduleId\":\"b\"}]}]}");
    struct th_error err = {0};
    assert_int_equal(th_registry_import(reg, doc, false, LATER, NULL, NULL, NULL, &err),
                     TH_ERR_TOO_LARGE);
    assert_int_equal(err.code, 413003);
    assert_int_equal(th_registry_module_total(reg), TH_MAX_MODULES_PER_DEVICE - 1);
    assert_null(th_registry_find(reg, "d1", "a"));
    /* One more fits exactly. */
    cJSON_DeleteItemFromArray(
        cJSON_GetObjectItemCaseSensitive(
            cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(doc, "devices"), 0), "modules"),
        2);
    size_t created = 0, skipped = 0;
    assert_int_equal(th_registry_import(reg, doc, false, LATER, &created, NULL, &skipped, &err),
                     TH_OK);
    assert_int_equal(created, 1);
    assert_int_equal(skipped, 2);
    assert_int_equal(th_registry_module_total(reg), TH_MAX_MODULES_PER_DEVICE);
    cJSON_Delete(doc);
}

/* ---- identity update ---- */

static void test_th_identity_update_keys_succeeds(void **state)
{
    struct th_registry *reg = *state;
    struct th_identity *dev = NULL;
    struct th_error err = {0};
    assert_int_equal(th_registry_add_device(reg, "d1", KEY32, KEY16, true, NOW, &dev, &err), TH_OK);
    char etag[32];
    th_identity_etag(dev, etag);
    assert_string_equal(etag, "MQ==");

    assert_int_equal(th_identity_update(dev, KEY32B, NULL, -1, NULL, LATER, &err), TH_OK);
    assert_string_equal(dev->primary_key, KEY32B);
    assert_string_equal(dev->secondary_key, KEY16); /* NULL keeps */
    assert_int_equal(dev->etag_counter, 2);
    th_identity_etag(dev, etag);
    assert_string_equal(etag, "Mg==");
    assert_int_equal(dev->status_updated_us, 0); /* status did not change */
    assert_true(dev->enabled);

    assert_int_equal(th_identity_update(dev, NULL, "", -1, NULL, LATER, &err), TH_OK);
    assert_string_not_equal(dev->secondary_key, KEY16); /* "" generates */
    uint8_t raw[96];
    size_t n = 0;
    assert_int_equal(
        th_b64_decode(dev->secondary_key, strlen(dev->secondary_key), raw, sizeof raw, &n), TH_OK);
    assert_int_equal(n, 32);
    assert_string_equal(dev->primary_key, KEY32B);
    assert_int_equal(dev->etag_counter, 3);
}

static void test_th_identity_update_status_succeeds(void **state)
{
    struct th_registry *reg = *state;
    struct th_identity *dev = add_device(reg, "d1");
    struct th_error err = {0};
    assert_int_equal(th_identity_update(dev, NULL, NULL, 0, "stolen", LATER, &err), TH_OK);
    assert_false(dev->enabled);
    assert_string_equal(dev->status_reason, "stolen");
    assert_int_equal(dev->status_updated_us, LATER);
    assert_int_equal(dev->etag_counter, 2);
    cJSON *j = th_identity_to_json(dev);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "status")->valuestring, "disabled");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "statusUpdatedTime")->valuestring,
                        "2023-11-14T22:13:25.0000000Z");
    cJSON_Delete(j);

    /* Same status again: the status time stays, the reason can be cleared. */
    assert_int_equal(th_identity_update(dev, NULL, NULL, 0, "", MUCH_LATER, &err), TH_OK);
    assert_int_equal(dev->status_updated_us, LATER);
    assert_null(dev->status_reason);
    assert_int_equal(dev->etag_counter, 3);

    assert_int_equal(th_identity_update(dev, NULL, NULL, 1, NULL, MUCH_LATER, &err), TH_OK);
    assert_true(dev->enabled);
    assert_int_equal(dev->status_updated_us, MUCH_LATER);
}

static void test_th_identity_update_invalid_key_fails(void **state)
{
    struct th_registry *reg = *state;
    struct th_identity *dev = NULL;
    struct th_error err = {0};
    assert_int_equal(th_registry_add_device(reg, "d1", KEY32, KEY16, true, NOW, &dev, &err), TH_OK);
    static const char *const bad[] = {"c2hvcnQ=", "not base64", "=", KEY32 KEY32 KEY32};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        /* A valid primary and a status change with a bad secondary: nothing may change. */
        assert_int_equal(th_identity_update(dev, KEY32B, bad[i], 0, "x", LATER, &err),
                         TH_ERR_INVAL);
        assert_int_equal(err.code, 400004);
        assert_non_null(strstr(err.message, "secondaryKey"));
        assert_int_equal(th_identity_update(dev, bad[i], NULL, -1, NULL, LATER, &err),
                         TH_ERR_INVAL);
        assert_non_null(strstr(err.message, "primaryKey"));
    }
    assert_string_equal(dev->primary_key, KEY32);
    assert_string_equal(dev->secondary_key, KEY16);
    assert_true(dev->enabled);
    assert_null(dev->status_reason);
    assert_int_equal(dev->etag_counter, 1);
    assert_int_equal(dev->status_updated_us, 0);
}

static void test_th_identity_update_module_status_fails(void **state)
{
    struct th_registry *reg = *state;
    add_device(reg, "d1");
    struct th_identity *mod = add_module(reg, "d1", "m1");
    char key[TH_KEY_BUF];
    strcpy(key, mod->primary_key);
    struct th_error err = {0};
    assert_int_equal(th_identity_update(mod, KEY32, NULL, 0, NULL, LATER, &err), TH_ERR_INVAL);
    assert_int_equal(err.code, 400004);
    assert_non_null(strstr(err.message, "always enabled"));
    assert_int_equal(th_identity_update(mod, KEY32, NULL, -1, "why", LATER, &err), TH_ERR_INVAL);
    assert_int_equal(err.code, 400004);
    assert_string_equal(mod->primary_key, key);
    assert_int_equal(mod->etag_counter, 1);
    assert_true(mod->enabled);
    assert_null(mod->status_reason);
}

static void test_th_identity_update_module_keys_succeeds(void **state)
{
    struct th_registry *reg = *state;
    add_device(reg, "d1");
    struct th_identity *mod = add_module(reg, "d1", "m1");
    struct th_error err = {0};
    /* enabled 1 is no status change for a module. */
    assert_int_equal(th_identity_update(mod, KEY32, KEY32B, 1, NULL, LATER, &err), TH_OK);
    assert_string_equal(mod->primary_key, KEY32);
    assert_string_equal(mod->secondary_key, KEY32B);
    assert_int_equal(mod->etag_counter, 2);
    assert_int_equal(mod->status_updated_us, 0);
}

static void test_th_identity_update_bad_enabled_fails(void **state)
{
    struct th_registry *reg = *state;
    struct th_identity *dev = add_device(reg, "d1");
    struct th_error err = {0};
    assert_int_equal(th_identity_update(dev, KEY32, NULL, 2, NULL, LATER, &err), TH_ERR_INVAL);
    assert_int_equal(err.code, 400004);
    assert_int_equal(th_identity_update(dev, NULL, NULL, -2, NULL, LATER, &err), TH_ERR_INVAL);
    assert_int_equal(th_identity_update(NULL, NULL, NULL, -1, NULL, LATER, &err), TH_ERR_INVAL);
    assert_string_not_equal(dev->primary_key, KEY32);
    assert_int_equal(dev->etag_counter, 1);
}

/* ---- add_module_with ---- */

static void test_th_registry_add_module_with_tags_and_desired_succeeds(void **state)
{
    struct th_registry *reg = *state;
    add_device(reg, "d1");
    cJSON *tags = parse("{\"role\":\"security\"}");
    cJSON *desired =
        parse("{\"interval\":{\"s\":30},\"$version\":7,\"$metadata\":{\"$lastUpdated\":\"x\"}}");
    struct th_identity *mod = NULL;
    struct th_error err = {0};
    assert_int_equal(th_registry_add_module_with(reg, "d1", "azureiotsecurity", KEY32, NULL, tags,
                                                 desired, LATER, &mod, &err),
                     TH_OK);
    assert_non_null(mod);
    assert_ptr_equal(th_registry_find(reg, "d1", "azureiotsecurity"), mod);
    assert_string_equal(mod->primary_key, KEY32);
    assert_json_text(mod->twin->tags, "{\"role\":\"security\"}");
    assert_json_text(mod->twin->desired, "{\"interval\":{\"s\":30}}");
    assert_int_equal(mod->twin->desired_version, 2);
    assert_int_equal(mod->twin->etag_counter, 3);
    assert_int_equal(th_registry_module_total(reg), 1);
    /* The caller's documents are not taken or changed. */
    assert_non_null(cJSON_GetObjectItemCaseSensitive(desired, "$version"));

    /* No sections: same as th_registry_add_module. */
    cJSON *null_json = parse("null");
    assert_int_equal(th_registry_add_module_with(reg, "d1", "bare", NULL, NULL, NULL, null_json,
                                                 LATER, &mod, &err),
                     TH_OK);
    assert_int_equal(mod->twin->desired_version, 1);
    assert_int_equal(mod->twin->etag_counter, 1);
    assert_int_equal(th_registry_module_total(reg), 2);
    cJSON_Delete(null_json);
    cJSON_Delete(tags);
    cJSON_Delete(desired);
}

static void test_th_registry_add_module_with_invalid_twin_fails(void **state)
{
    struct th_registry *reg = *state;
    add_device(reg, "d1");
    char *big = malloc(4001);
    assert_non_null(big);
    memset(big, 'x', 4000);
    big[4000] = '\0';
    cJSON *big_tags = cJSON_CreateObject();
    for (int i = 0; i < 3; i++) {
        char key[8];
        snprintf(key, sizeof key, "k%d", i);
        assert_non_null(cJSON_AddStringToObject(big_tags, key, big));
    }
    free(big);
    static const struct {
        const char *tags;
        const char *desired;
        const char *in_message;
    } cases[] = {
        {"{\"ok\":1}", "{\"bad.key\":1}", "properties.desired"},
        {"{\"a\":{\"$x\":1}}", NULL, "tags"},
        {"[1]", NULL, "tags must be a JSON object"},
        {NULL, "\"text\"", "properties.desired must be a JSON object"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cJSON *t = cases[i].tags ? parse(cases[i].tags) : NULL;
        cJSON *d = cases[i].desired ? parse(cases[i].desired) : NULL;
        struct th_identity *mod = (struct th_identity *)0x1;
        struct th_error err = {0};
        assert_int_equal(
            th_registry_add_module_with(reg, "d1", "m", NULL, NULL, t, d, LATER, &mod, &err),
            TH_ERR_INVAL);
        assert_int_equal(err.code, 400004);
        if (!strstr(err.message, cases[i].in_message))
            fail_msg("case %zu: message '%s' lacks '%s'", i, err.message, cases[i].in_message);
        assert_ptr_equal(mod, (struct th_identity *)0x1);
        assert_null(th_registry_find(reg, "d1", "m"));
        assert_int_equal(th_registry_module_total(reg), 0);
        cJSON_Delete(t);
        cJSON_Delete(d);
    }
    struct th_error err = {0};
    assert_int_equal(
        th_registry_add_module_with(reg, "d1", "m", NULL, NULL, big_tags, NULL, LATER, NULL, &err),
        TH_ERR_TOO_LARGE);
    assert_int_equal(err.code, 403100);
    assert_int_equal(th_registry_module_total(reg), 0);
    assert_int_equal(
        th_registry_add_module_with(reg, "nope", "m", NULL, NULL, NULL, NULL, LATER, NULL, &err),
        TH_ERR_NOT_FOUND);
    assert_int_equal(err.code, 404001);
    cJSON_Delete(big_tags);
}

static void test_th_registry_add_module_with_existing_module_fails(void **state)
{
    struct th_registry *reg = *state;
    add_device(reg, "d1");
    struct th_identity *m = add_module(reg, "d1", "m");
    cJSON *tags = parse("{\"a\":1}");
    struct th_error err = {0};
    assert_int_equal(
        th_registry_add_module_with(reg, "d1", "m", NULL, NULL, tags, NULL, LATER, NULL, &err),
        TH_ERR_EXISTS);
    assert_int_equal(err.code, 409301);
    assert_json_text(m->twin->tags, "{}");
    assert_int_equal(th_registry_module_total(reg), 1);
    cJSON_Delete(tags);
}

/* ---- counts ---- */

static void test_th_registry_module_total_counts_all_devices_succeeds(void **state)
{
    struct th_registry *reg = *state;
    assert_int_equal(th_registry_module_total(reg), 0);
    assert_int_equal(th_registry_module_total(NULL), 0);
    add_device(reg, "d1");
    add_device(reg, "d2");
    add_device(reg, "d3");
    add_module(reg, "d1", "a");
    add_module(reg, "d3", "a");
    add_module(reg, "d3", "b");
    assert_int_equal(th_registry_module_total(reg), 3);
    assert_int_equal(th_registry_device_count(reg), 3);
    assert_int_equal(th_registry_remove(reg, "d3", NULL), TH_OK);
    assert_int_equal(th_registry_module_total(reg), 1);
}

/* ---- IoT Edge capability, scopes, keyless identities ---- */

/* A service request from JSON text; `*body` keeps the strings alive. */
static struct th_ident_req edge_req(const char *text, bool is_module, cJSON **body)
{
    struct th_ident_req req;
    *body = parse(text);
    assert_int_equal(th_ident_req_from_json(*body, is_module, &req, NULL), TH_OK);
    return req;
}

static struct th_identity *create_req(struct th_registry *reg, const char *did, const char *mid,
                                      const char *text)
{
    cJSON *body;
    struct th_ident_req req = edge_req(text, mid != NULL, &body);
    struct th_identity *out = NULL;
    struct th_error err = {0};
    if (th_registry_create(reg, did, mid, &req, NULL, NULL, NOW, &out, &err) != TH_OK)
        fail_msg("create %s: %s", did, err.message);
    cJSON_Delete(body);
    return out;
}

/*
 * gw (edge) with module m (no keys, managedBy IotEdge) and an edge child gw2,
 * a leaf child leaf, and a plain device.
 */
static void edge_populate(struct th_registry *reg)
{
    char text[512];
    struct th_identity *gw = create_req(reg, "gw", NULL, "{\"capabilities\":{\"iotEdge\":true}}");
    create_req(reg, "gw", "m",
               "{\"managedBy\":\"IotEdge\",\"authentication\":{\"type\":\"none\"}}");
    snprintf(text, sizeof text, "{\"capabilities\":{\"iotEdge\":true},\"parentScopes\":[\"%s\"]}",
             gw->device_scope);
    create_req(reg, "gw2", NULL, text);
    snprintf(text, sizeof text, "{\"deviceScope\":\"%s\"}", gw->device_scope);
    create_req(reg, "leaf", NULL, text);
    create_req(reg, "plain", NULL, "{}");
}

static void test_th_registry_restore_device_edge_and_keyless_round_trip_succeeds(void **state)
{
    struct th_registry *reg = *state;
    edge_populate(reg);
    struct th_registry *other = th_registry_new();
    assert_non_null(other);
    struct th_error err = {0};
    for (struct th_identity *d = th_registry_next_device(reg, NULL); d;
         d = th_registry_next_device(reg, d)) {
        cJSON *saved = th_device_state_json(d);
        if (th_registry_restore_device(other, saved, &err) != TH_OK)
            fail_msg("restore of %s refused: %s", d->device_id, err.message);
        struct th_identity *back = th_registry_find(other, d->device_id, NULL);
        cJSON *again = th_device_state_json(back);
        assert_same_json(again, saved);
        cJSON_Delete(again);
        cJSON_Delete(saved);
        assert_identity_same(d, back);
        for (size_t i = 0; i < d->module_count; i++)
            assert_identity_same(d->modules[i], back->modules[i]);
    }
    const struct th_identity *gw = th_registry_find(other, "gw", NULL);
    assert_true(gw->iot_edge);
    assert_string_equal(th_registry_find(other, "gw2", NULL)->parent_scope, gw->device_scope);
    assert_string_equal(th_registry_find(other, "leaf", NULL)->device_scope, gw->device_scope);
    const struct th_identity *m = th_registry_find(other, "gw", "m");
    assert_int_equal(m->auth_type, TH_AUTH_NONE);
    assert_string_equal(m->primary_key, "");
    assert_string_equal(m->managed_by, "IotEdge");
    th_registry_free(other);
}

static void test_th_registry_restore_device_bad_edge_state_fails(void **state)
{
    struct th_registry *reg = *state;
    edge_populate(reg);
    static const struct {
        const char *device, *path, *value, *what;
    } cases[] = {
        {"plain", "authType", "\"x509\"", "device.authType"},
        {"plain", "authType", "\"none\"", "has no keys"},
        {"plain", "iotEdge", "\"yes\"", "device.iotEdge"},
        {"plain", "deviceScope", "\"gw\"", "device.deviceScope"},
        {"plain", "parentScope", "\"ms-azure-iot-edge://gw-1\"", "only an IoT Edge device"},
        {"gw", "parentScope", "5", "device.parentScope"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cJSON *st = th_device_state_json(th_registry_find(reg, cases[i].device, NULL));
        set_at(st, cases[i].path, cases[i].value);
        set_at(st, "deviceId", "\"restored\"");
        struct th_error err = {0};
        assert_int_equal(th_registry_restore_device(reg, st, &err), TH_ERR_INVAL);
        if (!strstr(err.message, cases[i].what))
            fail_msg("%s=%s: '%s' does not name '%s'", cases[i].path, cases[i].value, err.message,
                     cases[i].what);
        assert_null(th_registry_find(reg, "restored", NULL));
        cJSON_Delete(st);
    }
    /* a keyless module state with keys is refused too */
    cJSON *st = th_device_state_json(th_registry_find(reg, "gw", NULL));
    cJSON *mod = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(st, "modules"), 0);
    set_at(mod, "primaryKey", "\"" KEY32 "\"");
    set_at(st, "deviceId", "\"restored\"");
    set_at(mod, "deviceId", "\"restored\"");
    struct th_error err = {0};
    assert_int_equal(th_registry_restore_device(reg, st, &err), TH_ERR_INVAL);
    assert_non_null(strstr(err.message, "device.modules[0]"));
    cJSON_Delete(st);
}

static void test_th_registry_export_load_edge_round_trip_succeeds(void **state)
{
    struct th_registry *reg = *state;
    edge_populate(reg);
    cJSON *doc = th_registry_export(reg, false);
    struct th_registry *other = th_registry_new();
    struct th_error err = {0};
    if (th_registry_load(other, doc, MUCH_LATER, &err) != TH_OK)
        fail_msg("load refused the export: %s", err.message);
    /* New generation ids give new scopes; the relationships stay. */
    const struct th_identity *gw = th_registry_find(other, "gw", NULL);
    assert_true(gw->iot_edge);
    assert_string_not_equal(gw->device_scope, th_registry_find(reg, "gw", NULL)->device_scope);
    assert_non_null(strstr(gw->device_scope, gw->generation_id));
    const struct th_identity *gw2 = th_registry_find(other, "gw2", NULL);
    assert_true(gw2->iot_edge);
    assert_string_equal(gw2->parent_scope, gw->device_scope);
    const struct th_identity *leaf = th_registry_find(other, "leaf", NULL);
    assert_false(leaf->iot_edge);
    assert_string_equal(leaf->device_scope, gw->device_scope);
    assert_false(th_registry_find(other, "plain", NULL)->iot_edge);
    assert_null(th_registry_find(other, "plain", NULL)->device_scope);
    const struct th_identity *m = th_registry_find(other, "gw", "m");
    assert_int_equal(m->auth_type, TH_AUTH_NONE);
    assert_string_equal(m->managed_by, "IotEdge");
    /* the module entry as exported */
    const cJSON *mods = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(doc, "devices"), 0), "modules");
    assert_json_text(cJSON_GetArrayItem(mods, 0), "{\"moduleId\":\"m\",\"managedBy\":\"IotEdge\","
                                                  "\"authentication\":{\"type\":\"none\"}}");
    cJSON_Delete(doc);
    th_registry_free(other);
}

static void test_th_registry_import_edge_export_changes_nothing_succeeds(void **state)
{
    struct th_registry *reg = *state;
    edge_populate(reg);
    cJSON *doc = th_registry_export(reg, true);
    cJSON *before = cJSON_CreateArray();
    for (struct th_identity *d = th_registry_next_device(reg, NULL); d;
         d = th_registry_next_device(reg, d))
        cJSON_AddItemToArray(before, th_device_state_json(d));
    size_t created = 9, updated = 9, skipped = 9;
    struct th_error err = {0};
    if (th_registry_import(reg, doc, true, LATER, &created, &updated, &skipped, &err) != TH_OK)
        fail_msg("import refused: %s", err.message);
    assert_int_equal(created, 0);
    cJSON *after = cJSON_CreateArray();
    for (struct th_identity *d = th_registry_next_device(reg, NULL); d;
         d = th_registry_next_device(reg, d))
        cJSON_AddItemToArray(after, th_device_state_json(d));
    assert_same_json(after, before);
    cJSON_Delete(after);
    cJSON_Delete(before);
    cJSON_Delete(doc);
}

static void test_th_registry_import_overwrite_edge_fields_succeeds(void **state)
{
    struct th_registry *reg = *state;
    edge_populate(reg);
    struct th_identity *plain = th_registry_find(reg, "plain", NULL);
    struct th_identity *leaf = th_registry_find(reg, "leaf", NULL);
    struct th_identity *m = th_registry_find(reg, "gw", "m");
    struct th_identity *gw = th_registry_find(reg, "gw", NULL);
    /* plain becomes an edge device whose parent is new-gw, new in the same document (named
     * with made-up ticks); leaf moves to plain; m gets keys and a new owner. */
    cJSON *doc =
        parse("{\"devices\":["
              "{\"deviceId\":\"leaf\",\"deviceScope\":\"ms-azure-iot-edge://plain-42\"},"
              "{\"deviceId\":\"plain\",\"capabilities\":{\"iotEdge\":true},"
              "\"parentScopes\":[\"ms-azure-iot-edge://new-gw-7\"]},"
              "{\"deviceId\":\"new-gw\",\"capabilities\":{\"iotEdge\":true}},"
              "{\"deviceId\":\"gw\",\"modules\":[{\"moduleId\":\"m\",\"managedBy\":\"someone\","
              "\"authentication\":{\"type\":\"sas\"}}]}]}");
    size_t created = 0, updated = 0, skipped = 0;
    struct th_error err = {0};
    if (th_registry_import(reg, doc, true, LATER, &created, &updated, &skipped, &err) != TH_OK)
        fail_msg("import refused: %s", err.message);
    cJSON_Delete(doc);
    assert_int_equal(created, 1);
    const struct th_identity *ngw = th_registry_find(reg, "new-gw", NULL);
    assert_true(plain->iot_edge);
    assert_non_null(plain->device_scope);
    assert_string_equal(plain->parent_scope, ngw->device_scope);
    assert_string_equal(leaf->device_scope, plain->device_scope);
    assert_int_equal(plain->etag_counter, 2);
    assert_int_equal(leaf->etag_counter, 2);
    assert_int_equal(gw->etag_counter, 1); /* named without changes */
    assert_int_equal(m->auth_type, TH_AUTH_SAS);
    assert_int_equal(strlen(m->primary_key), 44); /* generated: 32 bytes */
    assert_string_equal(m->managed_by, "someone");
    assert_int_equal(m->etag_counter, 2);

    /* a parent that is not an edge device after the import: nothing changes */
    doc = parse("{\"devices\":[{\"deviceId\":\"leaf\","
                "\"deviceScope\":\"ms-azure-iot-edge://gw-1\"},"
                "{\"deviceId\":\"gw\",\"capabilities\":{\"iotEdge\":false}}]}");
    char *leaf_scope = strdup(leaf->device_scope);
    assert_int_equal(th_registry_import(reg, doc, true, LATER, NULL, NULL, NULL, &err),
                     TH_ERR_INVAL);
    assert_non_null(strstr(err.message, "names device 'gw'"));
    assert_true(gw->iot_edge);
    assert_string_equal(leaf->device_scope, leaf_scope);
    free(leaf_scope);
    cJSON_Delete(doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TEST(test_th_twin_from_state_after_patches_and_deletes_succeeds),
        TEST(test_th_twin_state_json_fields_succeeds),
        TEST(test_th_twin_from_state_bad_input_fails),
        TEST(test_th_twin_from_state_error_names_field_fails),
        TEST(test_th_twin_from_state_metadata_in_any_order_succeeds),
        TEST(test_th_twin_from_state_oversized_section_fails),
        TEST(test_th_registry_restore_device_round_trip_with_modules_and_queue_succeeds),
        TEST(test_th_registry_restore_device_later_generation_ids_stay_unique_succeeds),
        TEST(test_th_registry_restore_device_existing_device_fails),
        TEST(test_th_device_from_state_then_add_restored_succeeds),
        TEST(test_th_device_from_state_bad_state_fails),
        TEST(test_th_registry_restore_device_bad_types_fails),
        TEST(test_th_registry_restore_device_queue_over_limit_fails),
        TEST(test_th_device_state_json_module_fails),
        TEST(test_th_registry_restore_policies_round_trip_succeeds),
        TEST(test_th_registry_restore_policies_invalid_fails),
        TEST(test_th_registry_export_load_round_trip_succeeds),
        TEST(test_th_registry_export_without_twins_succeeds),
        TEST(test_th_registry_import_skip_existing_succeeds),
        TEST(test_th_registry_import_overwrite_succeeds),
        TEST(test_th_registry_import_same_export_changes_nothing_succeeds),
        TEST(test_th_registry_import_invalid_entry_changes_nothing_fails),
        TEST(test_th_registry_import_too_many_modules_fails),
        TEST(test_th_identity_update_keys_succeeds),
        TEST(test_th_identity_update_status_succeeds),
        TEST(test_th_identity_update_invalid_key_fails),
        TEST(test_th_identity_update_module_status_fails),
        TEST(test_th_identity_update_module_keys_succeeds),
        TEST(test_th_identity_update_bad_enabled_fails),
        TEST(test_th_registry_add_module_with_tags_and_desired_succeeds),
        TEST(test_th_registry_add_module_with_invalid_twin_fails),
        TEST(test_th_registry_add_module_with_existing_module_fails),
        TEST(test_th_registry_module_total_counts_all_devices_succeeds),
        TEST(test_th_registry_restore_device_edge_and_keyless_round_trip_succeeds),
        TEST(test_th_registry_restore_device_bad_edge_state_fails),
        TEST(test_th_registry_export_load_edge_round_trip_succeeds),
        TEST(test_th_registry_import_edge_export_changes_nothing_succeeds),
        TEST(test_th_registry_import_overwrite_edge_fields_succeeds),
    };
    return cmocka_run_group_tests_name("state", tests, NULL, NULL);
}
