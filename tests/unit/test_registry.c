/*
 * test_registry.c - unit tests for registry.c: devices and modules, keys,
 * generation ids, policies and dev identities, the registry file loader,
 * C2D queues and the identity/twin JSON views (iothub-protocol.md 1, 2.5,
 * 5.2, 7.1, 10.3).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "th_limits.h"
#include "registry.h"
#include "util.h"

#define NOW 1700000000000000LL /* 2023-11-14T22:13:20Z in microseconds */

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

/* A valid 16-byte key and a 32-byte one. */
#define KEY16 "MDEyMzQ1Njc4OWFiY2RlZg=="
#define KEY32 "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="

static cJSON *parse(const char *text)
{
    cJSON *doc = cJSON_Parse(text);
    assert_non_null(doc);
    return doc;
}

static size_t decoded_len(const char *key)
{
    uint8_t raw[128];
    size_t n = 0;
    assert_int_equal(th_b64_decode(key, strlen(key), raw, sizeof raw, &n), TH_OK);
    return n;
}

static const char *jstr(const cJSON *obj, const char *key)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    assert_true(cJSON_IsString(item));
    return item->valuestring;
}

static double jnum(const cJSON *obj, const char *key)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    assert_true(cJSON_IsNumber(item));
    return item->valuedouble;
}

static const cJSON *jobj(const cJSON *obj, const char *key)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    assert_true(cJSON_IsObject(item));
    return item;
}

static bool has(const cJSON *obj, const char *key)
{
    return cJSON_GetObjectItemCaseSensitive(obj, key) != NULL;
}

/* ---- devices and modules ---- */

static void test_th_registry_add_device_new_id_succeeds(void **state)
{
    struct th_registry *reg = *state;
    struct th_identity *dev = NULL;
    struct th_error err;
    assert_int_equal(th_registry_add_device(reg, "d1", KEY32, KEY16, true, NOW, &dev, &err), TH_OK);
    assert_non_null(dev);
    assert_ptr_equal(th_registry_find(reg, "d1", NULL), dev);
    assert_string_equal(dev->device_id, "d1");
    assert_null(dev->module_id);
    assert_string_equal(dev->primary_key, KEY32);
    assert_string_equal(dev->secondary_key, KEY16);
    assert_true(dev->enabled);
    assert_false(dev->connected);
    assert_int_equal(dev->etag_counter, 1);
    assert_non_null(dev->twin);
    assert_int_equal(th_registry_device_count(reg), 1);
}

static void test_th_registry_add_device_duplicate_fails(void **state)
{
    struct th_registry *reg = *state;
    struct th_error err;
    assert_int_equal(th_registry_add_device(reg, "d1", NULL, NULL, true, NOW, NULL, NULL), TH_OK);
    assert_int_equal(th_registry_add_device(reg, "d1", NULL, NULL, true, NOW, NULL, &err),
                     TH_ERR_EXISTS);
    assert_int_equal(err.code, 409001);
    assert_int_equal(err.status, 409);
    assert_int_equal(th_registry_device_count(reg), 1);
}

static void test_th_registry_add_device_invalid_id_fails(void **state)
{
    struct th_registry *reg = *state;
    struct th_error err;
    assert_int_equal(th_registry_add_device(reg, "bad/id", NULL, NULL, true, NOW, NULL, &err),
                     TH_ERR_INVAL);
    assert_int_equal(err.code, 400004);
    assert_int_equal(th_registry_add_device(reg, "", NULL, NULL, true, NOW, NULL, NULL),
                     TH_ERR_INVAL);
    assert_int_equal(th_registry_add_device(reg, NULL, NULL, NULL, true, NOW, NULL, NULL),
                     TH_ERR_INVAL);
    assert_int_equal(th_registry_device_count(reg), 0);
}

static void test_th_registry_add_device_invalid_key_fails(void **state)
{
    struct th_registry *reg = *state;
    /* not base64 */
    assert_int_equal(th_registry_add_device(reg, "d1", "not base64!", NULL, true, NOW, NULL, NULL),
                     TH_ERR_INVAL);
    /* base64 of 15 bytes: too short */
    assert_int_equal(
        th_registry_add_device(reg, "d1", NULL, "MDEyMzQ1Njc4OWFiY2Rl", true, NOW, NULL, NULL),
        TH_ERR_INVAL);
    assert_null(th_registry_find(reg, "d1", NULL));
}

static void test_th_registry_add_device_generated_keys_succeeds(void **state)
{
    struct th_registry *reg = *state;
    struct th_identity *a = NULL, *b = NULL;
    assert_int_equal(th_registry_add_device(reg, "a", NULL, "", true, NOW, &a, NULL), TH_OK);
    assert_int_equal(th_registry_add_device(reg, "b", NULL, NULL, true, NOW, &b, NULL), TH_OK);
    assert_int_equal(decoded_len(a->primary_key), 32);
    assert_int_equal(decoded_len(a->secondary_key), 32);
    assert_int_equal(decoded_len(b->primary_key), 32);
    assert_string_not_equal(a->primary_key, a->secondary_key);
    assert_string_not_equal(a->primary_key, b->primary_key);
    assert_string_not_equal(a->secondary_key, b->secondary_key);
}

static void test_th_registry_add_device_generation_id_after_recreate_succeeds(void **state)
{
    struct th_registry *reg = *state;
    struct th_identity *dev = NULL;
    char first[24];
    assert_int_equal(th_registry_add_device(reg, "d1", NULL, NULL, true, NOW, &dev, NULL), TH_OK);
    strcpy(first, dev->generation_id);
    assert_int_equal(strlen(first), 18);
    assert_string_equal(first, "638355968000000000"); /* .NET ticks of NOW */
    assert_int_equal(th_registry_remove(reg, "d1", NULL), TH_OK);
    /* Same clock reading: the id must still change. */
    assert_int_equal(th_registry_add_device(reg, "d1", NULL, NULL, true, NOW, &dev, NULL), TH_OK);
    assert_string_not_equal(dev->generation_id, first);
    assert_int_equal(strlen(dev->generation_id), 18);
}

static void test_th_registry_add_module_existing_device_succeeds(void **state)
{
    struct th_registry *reg = *state;
    struct th_identity *dev = NULL, *mod = NULL;
    assert_int_equal(th_registry_add_device(reg, "d1", NULL, NULL, true, NOW, &dev, NULL), TH_OK);
    assert_int_equal(th_registry_add_module(reg, "d1", "m1", KEY32, NULL, NOW, &mod, NULL), TH_OK);
    assert_non_null(mod);
    assert_ptr_equal(mod->parent, dev);
    assert_string_equal(mod->module_id, "m1");
    assert_string_equal(mod->device_id, "d1");
    assert_string_equal(mod->primary_key, KEY32);
    assert_int_equal(decoded_len(mod->secondary_key), 32);
    assert_non_null(mod->twin);
    assert_int_equal(dev->module_count, 1);
    assert_ptr_equal(th_registry_find(reg, "d1", "m1"), mod);
    assert_ptr_equal(th_registry_find_n(reg, "d1xyz", 2, "m1abc", 2), mod);
    assert_ptr_equal(th_registry_find_n(reg, "d1xyz", 2, NULL, 0), dev);
    assert_null(th_registry_find(reg, "d1", "m2"));
    assert_null(th_registry_find_n(reg, "d1xyz", 3, NULL, 0));
}

static void test_th_registry_add_module_missing_device_fails(void **state)
{
    struct th_registry *reg = *state;
    struct th_error err;
    assert_int_equal(th_registry_add_module(reg, "nope", "m1", NULL, NULL, NOW, NULL, &err),
                     TH_ERR_NOT_FOUND);
    assert_int_equal(err.code, 404001);
}

static void test_th_registry_add_module_duplicate_fails(void **state)
{
    struct th_registry *reg = *state;
    struct th_error err;
    assert_int_equal(th_registry_add_device(reg, "d1", NULL, NULL, true, NOW, NULL, NULL), TH_OK);
    assert_int_equal(th_registry_add_module(reg, "d1", "m1", NULL, NULL, NOW, NULL, NULL), TH_OK);
    assert_int_equal(th_registry_add_module(reg, "d1", "m1", NULL, NULL, NOW, NULL, &err),
                     TH_ERR_EXISTS);
    assert_int_equal(err.code, 409301);
    assert_int_equal(th_registry_find(reg, "d1", NULL)->module_count, 1);
}

static void test_th_registry_add_module_51st_fails(void **state)
{
    struct th_registry *reg = *state;
    struct th_error err;
    char name[16];
    assert_int_equal(th_registry_add_device(reg, "d1", NULL, NULL, true, NOW, NULL, NULL), TH_OK);
    for (int i = 0; i < TH_MAX_MODULES_PER_DEVICE; i++) {
        snprintf(name, sizeof name, "m%d", i);
        assert_int_equal(th_registry_add_module(reg, "d1", name, NULL, NULL, NOW, NULL, NULL),
                         TH_OK);
    }
    assert_int_equal(th_registry_add_module(reg, "d1", "one-too-many", NULL, NULL, NOW, NULL, &err),
                     TH_ERR_TOO_LARGE);
    assert_int_equal(err.code, 413003);
    assert_int_equal(th_registry_find(reg, "d1", NULL)->module_count, TH_MAX_MODULES_PER_DEVICE);
    assert_null(th_registry_find(reg, "d1", "one-too-many"));
}

static void test_th_registry_remove_module_succeeds(void **state)
{
    struct th_registry *reg = *state;
    assert_int_equal(th_registry_add_device(reg, "d1", NULL, NULL, true, NOW, NULL, NULL), TH_OK);
    assert_int_equal(th_registry_add_module(reg, "d1", "m1", NULL, NULL, NOW, NULL, NULL), TH_OK);
    assert_int_equal(th_registry_add_module(reg, "d1", "m2", NULL, NULL, NOW, NULL, NULL), TH_OK);
    assert_int_equal(th_registry_add_module(reg, "d1", "m3", NULL, NULL, NOW, NULL, NULL), TH_OK);
    assert_int_equal(th_registry_remove(reg, "d1", "m2"), TH_OK);
    struct th_identity *dev = th_registry_find(reg, "d1", NULL);
    assert_int_equal(dev->module_count, 2);
    assert_string_equal(dev->modules[0]->module_id, "m1");
    assert_string_equal(dev->modules[1]->module_id, "m3");
    assert_null(th_registry_find(reg, "d1", "m2"));
    assert_non_null(th_registry_find(reg, "d1", "m3"));
}

static void test_th_registry_remove_device_with_modules_succeeds(void **state)
{
    struct th_registry *reg = *state;
    assert_int_equal(th_registry_add_device(reg, "d1", NULL, NULL, true, NOW, NULL, NULL), TH_OK);
    assert_int_equal(th_registry_add_module(reg, "d1", "m1", NULL, NULL, NOW, NULL, NULL), TH_OK);
    struct th_identity *dev = th_registry_find(reg, "d1", NULL);
    assert_int_equal(th_identity_c2d_push(dev, "id", "", "x", 1, NOW, NULL), TH_OK);
    assert_int_equal(th_registry_remove(reg, "d1", NULL), TH_OK);
    assert_null(th_registry_find(reg, "d1", NULL));
    assert_null(th_registry_find(reg, "d1", "m1"));
    assert_int_equal(th_registry_device_count(reg), 0);
}

static void test_th_registry_remove_missing_fails(void **state)
{
    struct th_registry *reg = *state;
    assert_int_equal(th_registry_remove(reg, "nope", NULL), TH_ERR_NOT_FOUND);
    assert_int_equal(th_registry_add_device(reg, "d1", NULL, NULL, true, NOW, NULL, NULL), TH_OK);
    assert_int_equal(th_registry_remove(reg, "d1", "nope"), TH_ERR_NOT_FOUND);
    assert_non_null(th_registry_find(reg, "d1", NULL));
}

static void test_th_registry_next_device_insertion_order_succeeds(void **state)
{
    struct th_registry *reg = *state;
    const char *ids[] = {"zeta", "alpha", "mid", "beta"};
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(th_registry_add_device(reg, ids[i], NULL, NULL, true, NOW, NULL, NULL),
                         TH_OK);
    assert_int_equal(th_registry_remove(reg, "alpha", NULL), TH_OK);
    const char *want[] = {"zeta", "mid", "beta"};
    size_t n = 0;
    for (struct th_identity *d = th_registry_next_device(reg, NULL); d;
         d = th_registry_next_device(reg, d)) {
        assert_true(n < 3);
        assert_string_equal(d->device_id, want[n]);
        n++;
    }
    assert_int_equal(n, 3);
    assert_int_equal(th_registry_device_count(reg), 3);
}

static void test_th_registry_next_device_empty_succeeds(void **state)
{
    struct th_registry *reg = *state;
    assert_null(th_registry_next_device(reg, NULL));
    assert_int_equal(th_registry_device_count(reg), 0);
}

/* ---- policies and dev identities ---- */

static void test_th_registry_set_policy_add_and_replace_succeeds(void **state)
{
    struct th_registry *reg = *state;
    assert_int_equal(th_registry_set_policy(reg, "mine", KEY32, NULL, TH_PERM_SERVICE_CONNECT),
                     TH_OK);
    const struct th_policy *p = th_registry_policy(reg, "mine", 4);
    assert_non_null(p);
    assert_string_equal(p->primary_key, KEY32);
    assert_int_equal(decoded_len(p->secondary_key), 32);
    assert_int_equal(p->perms, TH_PERM_SERVICE_CONNECT);
    assert_int_equal(th_registry_set_policy(reg, "mine", KEY16, KEY16, TH_PERM_REGISTRY_READ),
                     TH_OK);
    p = th_registry_policy(reg, "mineXYZ", 4);
    assert_non_null(p);
    assert_string_equal(p->primary_key, KEY16);
    assert_int_equal(p->perms, TH_PERM_REGISTRY_READ);
    assert_null(th_registry_policy(reg, "min", 3));
}

static void test_th_registry_set_policy_invalid_fails(void **state)
{
    struct th_registry *reg = *state;
    assert_int_equal(th_registry_set_policy(reg, "", NULL, NULL, TH_PERM_SERVICE_CONNECT),
                     TH_ERR_INVAL);
    assert_int_equal(th_registry_set_policy(reg, "bad name", NULL, NULL, TH_PERM_SERVICE_CONNECT),
                     TH_ERR_INVAL);
    assert_int_equal(th_registry_set_policy(reg, "p", "short", NULL, TH_PERM_SERVICE_CONNECT),
                     TH_ERR_INVAL);
    assert_int_equal(th_registry_set_policy(reg, "p", NULL, NULL, 0), TH_ERR_INVAL);
    assert_null(th_registry_policy(reg, "p", 1));
}

static void test_th_registry_set_policy_17th_fails(void **state)
{
    struct th_registry *reg = *state;
    char name[16];
    for (int i = 0; i < TH_MAX_POLICIES; i++) {
        snprintf(name, sizeof name, "p%d", i);
        assert_int_equal(th_registry_set_policy(reg, name, NULL, NULL, TH_PERM_REGISTRY_READ),
                         TH_OK);
    }
    assert_int_equal(th_registry_set_policy(reg, "extra", NULL, NULL, TH_PERM_REGISTRY_READ),
                     TH_ERR_TOO_LARGE);
    /* Replacing an existing one still works when full. */
    assert_int_equal(th_registry_set_policy(reg, "p0", NULL, NULL, TH_PERM_REGISTRY_WRITE), TH_OK);
}

static void test_th_registry_add_dev_identities_documented_keys_succeeds(void **state)
{
    struct th_registry *reg = *state;
    static const struct {
        const char *name;
        unsigned perms;
    } want[] = {
        {"iothubowner", TH_PERM_REGISTRY_READ | TH_PERM_REGISTRY_WRITE | TH_PERM_SERVICE_CONNECT |
                            TH_PERM_DEVICE_CONNECT},
        {"service", TH_PERM_SERVICE_CONNECT},
        {"device", TH_PERM_DEVICE_CONNECT},
        {"registryRead", TH_PERM_REGISTRY_READ},
        {"registryReadWrite", TH_PERM_REGISTRY_READ | TH_PERM_REGISTRY_WRITE},
    };
    assert_int_equal(th_registry_add_dev_identities(reg, NOW), TH_OK);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const struct th_policy *p = th_registry_policy(reg, want[i].name, strlen(want[i].name));
        assert_non_null(p);
        assert_string_equal(p->primary_key, TH_DEV_OWNER_KEY);
        assert_string_equal(p->secondary_key, TH_DEV_OWNER_SECONDARY_KEY);
        assert_int_equal(p->perms, want[i].perms);
    }
    struct th_identity *dev = th_registry_find(reg, TH_DEV_DEVICE_ID, NULL);
    assert_non_null(dev);
    assert_string_equal(dev->primary_key, TH_DEV_DEVICE_KEY);
    assert_string_equal(dev->secondary_key, TH_DEV_DEVICE_SECONDARY_KEY);
    assert_true(dev->enabled);
    struct th_identity *mod = th_registry_find(reg, TH_DEV_DEVICE_ID, TH_DEV_MODULE_ID);
    assert_non_null(mod);
    assert_string_equal(mod->primary_key, TH_DEV_MODULE_KEY);
    assert_string_equal(mod->secondary_key, TH_DEV_MODULE_SECONDARY_KEY);
    /* All documented keys are valid 32-byte keys. */
    assert_int_equal(decoded_len(TH_DEV_OWNER_KEY), 32);
    assert_int_equal(decoded_len(TH_DEV_OWNER_SECONDARY_KEY), 32);
    assert_int_equal(decoded_len(TH_DEV_DEVICE_KEY), 32);
    assert_int_equal(decoded_len(TH_DEV_MODULE_KEY), 32);
}

static void test_th_registry_add_dev_identities_existing_kept_succeeds(void **state)
{
    struct th_registry *reg = *state;
    assert_int_equal(th_registry_set_policy(reg, "service", KEY16, KEY16, TH_PERM_SERVICE_CONNECT),
                     TH_OK);
    assert_int_equal(
        th_registry_add_device(reg, TH_DEV_DEVICE_ID, KEY32, KEY32, false, NOW, NULL, NULL), TH_OK);
    assert_int_equal(th_registry_add_dev_identities(reg, NOW), TH_OK);
    assert_int_equal(th_registry_add_dev_identities(reg, NOW), TH_OK);
    assert_string_equal(th_registry_policy(reg, "service", 7)->primary_key, KEY16);
    struct th_identity *dev = th_registry_find(reg, TH_DEV_DEVICE_ID, NULL);
    assert_string_equal(dev->primary_key, KEY32);
    assert_false(dev->enabled);
    assert_int_equal(dev->module_count, 1);
    assert_int_equal(th_registry_device_count(reg), 1);
}

/* ---- connection state, etag ---- */

static void test_th_identity_set_connected_state_change_succeeds(void **state)
{
    struct th_registry *reg = *state;
    struct th_identity *dev = NULL;
    assert_int_equal(th_registry_add_device(reg, "d1", NULL, NULL, true, NOW, &dev, NULL), TH_OK);
    assert_int_equal(dev->connection_state_updated_us, 0);
    th_identity_set_connected(dev, true, NOW + 5);
    assert_true(dev->connected);
    assert_int_equal(dev->connection_state_updated_us, NOW + 5);
    assert_int_equal(dev->last_activity_us, NOW + 5);
    th_identity_set_connected(dev, true, NOW + 9); /* no change of state */
    assert_int_equal(dev->connection_state_updated_us, NOW + 5);
    th_identity_touch(dev, NOW + 20);
    assert_int_equal(dev->last_activity_us, NOW + 20);
    th_identity_set_connected(dev, false, NOW + 30);
    assert_false(dev->connected);
    assert_int_equal(dev->connection_state_updated_us, NOW + 30);
    assert_int_equal(dev->last_activity_us, NOW + 20);
}

static void test_th_identity_etag_counter_succeeds(void **state)
{
    struct th_registry *reg = *state;
    struct th_identity *dev = NULL;
    char buf[32];
    assert_int_equal(th_registry_add_device(reg, "d1", NULL, NULL, true, NOW, &dev, NULL), TH_OK);
    th_identity_etag(dev, buf);
    assert_string_equal(buf, "MQ==");
    dev->etag_counter = 594852881;
    th_identity_etag(dev, buf);
    assert_string_equal(buf, "NTk0ODUyODgx");
}

/* ---- C2D queue ---- */

static void test_th_identity_c2d_push_fifo_succeeds(void **state)
{
    struct th_registry *reg = *state;
    struct th_identity *dev = NULL;
    assert_int_equal(th_registry_add_device(reg, "d1", NULL, NULL, true, NOW, &dev, NULL), TH_OK);
    assert_int_equal(th_identity_c2d_push(dev, "m1", "a=1", "one", 3, NOW, NULL), TH_OK);
    assert_int_equal(th_identity_c2d_push(dev, "m2", NULL, NULL, 0, NOW + 1, NULL), TH_OK);
    assert_int_equal(th_identity_c2d_push(dev, "m3", "", "three", 5, NOW + 2, NULL), TH_OK);
    assert_int_equal(dev->c2d_count, 3);

    struct th_c2d_msg *m = th_identity_c2d_pop(dev);
    assert_non_null(m);
    assert_string_equal(m->message_id, "m1");
    assert_string_equal(m->bag, "a=1");
    assert_int_equal(m->len, 3);
    assert_memory_equal(m->body, "one", 3);
    assert_int_equal(m->enqueued_us, NOW);
    th_c2d_msg_free(m);

    m = th_identity_c2d_pop(dev);
    assert_non_null(m);
    assert_string_equal(m->message_id, "m2");
    assert_string_equal(m->bag, "");
    assert_int_equal(m->len, 0);
    th_c2d_msg_free(m);

    /* Push after partial drain keeps the order. */
    assert_int_equal(th_identity_c2d_push(dev, "m4", "", "four", 4, NOW + 3, NULL), TH_OK);
    m = th_identity_c2d_pop(dev);
    assert_string_equal(m->message_id, "m3");
    th_c2d_msg_free(m);
    m = th_identity_c2d_pop(dev);
    assert_string_equal(m->message_id, "m4");
    th_c2d_msg_free(m);
    assert_null(th_identity_c2d_pop(dev));
    assert_int_equal(dev->c2d_count, 0);
    th_c2d_msg_free(NULL);
}

static void test_th_identity_c2d_push_51st_fails(void **state)
{
    struct th_registry *reg = *state;
    struct th_identity *dev = NULL;
    struct th_error err;
    assert_int_equal(th_registry_add_device(reg, "d1", NULL, NULL, true, NOW, &dev, NULL), TH_OK);
    for (int i = 0; i < TH_C2D_MAX_QUEUE; i++)
        assert_int_equal(th_identity_c2d_push(dev, "m", "", "x", 1, NOW, NULL), TH_OK);
    assert_int_equal(th_identity_c2d_push(dev, "m", "", "x", 1, NOW, &err), TH_ERR_QUEUE_FULL);
    assert_int_equal(err.code, 403004);
    assert_int_equal(dev->c2d_count, TH_C2D_MAX_QUEUE);
    th_c2d_msg_free(th_identity_c2d_pop(dev));
    assert_int_equal(th_identity_c2d_push(dev, "m", "", "x", 1, NOW, NULL), TH_OK);
}

static void test_th_identity_c2d_push_over_64k_fails(void **state)
{
    struct th_registry *reg = *state;
    struct th_identity *dev = NULL;
    struct th_error err;
    char *body = calloc(1, TH_C2D_MAX_BYTES + 1);
    assert_non_null(body);
    assert_int_equal(th_registry_add_device(reg, "d1", NULL, NULL, true, NOW, &dev, NULL), TH_OK);
    assert_int_equal(th_identity_c2d_push(dev, "big", "", body, TH_C2D_MAX_BYTES + 1, NOW, &err),
                     TH_ERR_TOO_LARGE);
    assert_int_equal(err.code, 413001);
    assert_int_equal(dev->c2d_count, 0);
    assert_int_equal(th_identity_c2d_push(dev, "max", "", body, TH_C2D_MAX_BYTES, NOW, NULL),
                     TH_OK);
    assert_int_equal(dev->c2d_count, 1);
    free(body);
}

static void test_th_identity_c2d_push_module_fails(void **state)
{
    struct th_registry *reg = *state;
    struct th_identity *mod = NULL;
    assert_int_equal(th_registry_add_device(reg, "d1", NULL, NULL, true, NOW, NULL, NULL), TH_OK);
    assert_int_equal(th_registry_add_module(reg, "d1", "m1", NULL, NULL, NOW, &mod, NULL), TH_OK);
    assert_int_equal(th_identity_c2d_push(mod, "m", "", "x", 1, NOW, NULL), TH_ERR_INVAL);
    assert_int_equal(mod->c2d_count, 0);
}

/* ---- JSON views ---- */

static void test_th_identity_to_json_device_shape_succeeds(void **state)
{
    struct th_registry *reg = *state;
    struct th_identity *dev = NULL;
    assert_int_equal(th_registry_add_device(reg, "d1", KEY32, KEY16, false, NOW, &dev, NULL),
                     TH_OK);
    assert_int_equal(th_identity_c2d_push(dev, "m", "", "x", 1, NOW, NULL), TH_OK);
    cJSON *j = th_identity_to_json(dev);
    assert_non_null(j);
    assert_string_equal(j->child->string, "deviceId");
    assert_string_equal(jstr(j, "deviceId"), "d1");
    assert_false(has(j, "moduleId"));
    assert_string_equal(jstr(j, "generationId"), dev->generation_id);
    assert_string_equal(jstr(j, "etag"), "MQ==");
    assert_string_equal(jstr(j, "connectionState"), "Disconnected");
    assert_string_equal(jstr(j, "status"), "disabled");
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "statusReason")));
    assert_string_equal(jstr(j, "connectionStateUpdatedTime"), TH_TIME_NEVER);
    assert_string_equal(jstr(j, "statusUpdatedTime"), TH_TIME_NEVER);
    assert_string_equal(jstr(j, "lastActivityTime"), TH_TIME_NEVER);
    assert_true(jnum(j, "cloudToDeviceMessageCount") == 1.0);
    const cJSON *auth = jobj(j, "authentication");
    const cJSON *sym = jobj(auth, "symmetricKey");
    assert_string_equal(jstr(sym, "primaryKey"), KEY32);
    assert_string_equal(jstr(sym, "secondaryKey"), KEY16);
    const cJSON *x509 = jobj(auth, "x509Thumbprint");
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(x509, "primaryThumbprint")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(x509, "secondaryThumbprint")));
    assert_string_equal(jstr(auth, "type"), "sas");
    assert_true(
        cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(jobj(j, "capabilities"), "iotEdge")));
    cJSON_Delete(j);
}

static void test_th_identity_to_json_connected_times_succeeds(void **state)
{
    struct th_registry *reg = *state;
    struct th_identity *dev = NULL;
    char want[TH_TIME_BUF];
    assert_int_equal(th_registry_add_device(reg, "d1", NULL, NULL, true, NOW, &dev, NULL), TH_OK);
    th_identity_set_connected(dev, true, NOW + 1000);
    cJSON *j = th_identity_to_json(dev);
    assert_non_null(j);
    th_time_format(NOW + 1000, want);
    assert_string_equal(jstr(j, "connectionState"), "Connected");
    assert_string_equal(jstr(j, "status"), "enabled");
    assert_string_equal(jstr(j, "connectionStateUpdatedTime"), want);
    assert_string_equal(jstr(j, "lastActivityTime"), want);
    cJSON_Delete(j);
}

static void test_th_identity_to_json_module_shape_succeeds(void **state)
{
    struct th_registry *reg = *state;
    struct th_identity *mod = NULL;
    assert_int_equal(th_registry_add_device(reg, "d1", NULL, NULL, true, NOW, NULL, NULL), TH_OK);
    assert_int_equal(th_registry_add_module(reg, "d1", "m1", NULL, NULL, NOW, &mod, NULL), TH_OK);
    cJSON *j = th_identity_to_json(mod);
    assert_non_null(j);
    assert_string_equal(jstr(j, "deviceId"), "d1");
    assert_string_equal(jstr(j, "moduleId"), "m1");
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "managedBy")));
    assert_string_equal(jstr(j, "generationId"), mod->generation_id);
    assert_string_equal(jstr(j, "etag"), "MQ==");
    assert_string_equal(jstr(j, "connectionState"), "Disconnected");
    assert_string_equal(jstr(j, "connectionStateUpdatedTime"), TH_TIME_NEVER);
    assert_string_equal(jstr(j, "lastActivityTime"), TH_TIME_NEVER);
    assert_true(jnum(j, "cloudToDeviceMessageCount") == 0.0);
    assert_string_equal(jstr(jobj(jobj(j, "authentication"), "symmetricKey"), "primaryKey"),
                        mod->primary_key);
    assert_false(has(j, "status"));
    assert_false(has(j, "capabilities"));
    cJSON_Delete(j);
}

static void test_th_identity_twin_json_device_shape_succeeds(void **state)
{
    struct th_registry *reg = *state;
    struct th_identity *dev = NULL;
    assert_int_equal(th_registry_add_device(reg, "d1", NULL, NULL, true, NOW, &dev, NULL), TH_OK);
    cJSON *j = th_identity_twin_json(dev);
    assert_non_null(j);
    assert_string_equal(j->child->string, "deviceId");
    assert_string_equal(jstr(j, "deviceId"), "d1");
    assert_false(has(j, "moduleId"));
    assert_string_equal(jstr(j, "etag"), "AAAAAAAAAAE=");
    assert_string_equal(jstr(j, "deviceEtag"), "MQ==");
    assert_string_equal(jstr(j, "status"), "enabled");
    assert_false(has(j, "statusReason"));
    assert_string_equal(jstr(j, "statusUpdateTime"), TH_TIME_NEVER);
    assert_string_equal(jstr(j, "connectionState"), "Disconnected");
    assert_string_equal(jstr(j, "lastActivityTime"), TH_TIME_NEVER);
    assert_true(jnum(j, "cloudToDeviceMessageCount") == 0.0);
    assert_string_equal(jstr(j, "authenticationType"), "sas");
    jobj(j, "x509Thumbprint");
    assert_string_equal(jstr(j, "modelId"), "");
    assert_true(jnum(j, "version") == 2.0); /* etag 1 + reported $version 1 */
    assert_non_null(jobj(j, "tags"));
    const cJSON *props = jobj(j, "properties");
    assert_true(jnum(jobj(props, "desired"), "$version") == 1.0);
    assert_true(jnum(jobj(props, "reported"), "$version") == 1.0);
    assert_true(
        cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(jobj(j, "capabilities"), "iotEdge")));
    assert_false(has(j, "generationId"));
    assert_false(has(j, "connectionStateUpdatedTime"));
    cJSON_Delete(j);
}

static void test_th_identity_twin_json_module_shape_succeeds(void **state)
{
    struct th_registry *reg = *state;
    struct th_identity *mod = NULL;
    assert_int_equal(th_registry_add_device(reg, "d1", NULL, NULL, true, NOW, NULL, NULL), TH_OK);
    assert_int_equal(th_registry_add_module(reg, "d1", "m1", NULL, NULL, NOW, &mod, NULL), TH_OK);
    mod->model_id = strdup("dtmi:com:example:Thermostat;1");
    assert_non_null(mod->model_id);
    cJSON *j = th_identity_twin_json(mod);
    assert_non_null(j);
    assert_string_equal(j->child->string, "deviceId");
    assert_string_equal(j->child->next->string, "moduleId");
    assert_string_equal(jstr(j, "moduleId"), "m1");
    assert_string_equal(jstr(j, "modelId"), "dtmi:com:example:Thermostat;1");
    assert_false(has(j, "capabilities"));
    jobj(j, "properties");
    cJSON_Delete(j);
}

/* ---- registry file loader ---- */

static const char *const good_doc =
    "{\"policies\":[{\"keyName\":\"ops\",\"primaryKey\":\"" KEY32 "\","
    "\"rights\":\"RegistryRead, ServiceConnect\"}],"
    "\"devices\":["
    "{\"deviceId\":\"sensor-1\",\"tags\":{\"site\":\"lab\"},"
    " \"authentication\":{\"symmetricKey\":{\"primaryKey\":\"" KEY32 "\",\"secondaryKey\":null}},"
    " \"properties\":{\"desired\":{\"interval\":10},\"reported\":{\"fw\":\"1.0\"}}},"
    "{\"deviceId\":\"sensor-2\",\"status\":\"disabled\",\"statusReason\":\"retired\"},"
    "{\"deviceId\":\"gw\",\"modules\":[{\"moduleId\":\"azureiotsecurity\",\"managedBy\":\"me\","
    "  \"properties\":{\"desired\":{\"cfg\":{\"on\":true}}}},{\"moduleId\":\"m2\"}]}]}";

static void test_th_registry_load_valid_document_succeeds(void **state)
{
    struct th_registry *reg = *state;
    struct th_error err;
    cJSON *doc = parse(good_doc);
    th_result r = th_registry_load(reg, doc, NOW, &err);
    cJSON_Delete(doc);
    if (r != TH_OK)
        fail_msg("load failed: %s", err.message);
    assert_int_equal(th_registry_device_count(reg), 3);

    const struct th_policy *p = th_registry_policy(reg, "ops", 3);
    assert_non_null(p);
    assert_int_equal(p->perms, TH_PERM_REGISTRY_READ | TH_PERM_SERVICE_CONNECT);
    assert_string_equal(p->primary_key, KEY32);
    assert_int_equal(decoded_len(p->secondary_key), 32);

    /* Devices keep document order. */
    struct th_identity *d = th_registry_next_device(reg, NULL);
    assert_string_equal(d->device_id, "sensor-1");
    d = th_registry_next_device(reg, d);
    assert_string_equal(d->device_id, "sensor-2");
    d = th_registry_next_device(reg, d);
    assert_string_equal(d->device_id, "gw");

    struct th_identity *s1 = th_registry_find(reg, "sensor-1", NULL);
    assert_non_null(s1);
    assert_true(s1->enabled);
    assert_string_equal(s1->primary_key, KEY32);
    assert_int_equal(decoded_len(s1->secondary_key), 32);
    assert_string_equal(jstr(s1->twin->tags, "site"), "lab");
    assert_true(jnum(s1->twin->desired, "interval") == 10.0);
    assert_string_equal(jstr(s1->twin->reported, "fw"), "1.0");
    /* One desired patch and one reported patch, one tags patch. */
    assert_int_equal(s1->twin->desired_version, 2);
    assert_int_equal(s1->twin->reported_version, 2);
    assert_int_equal(s1->twin->etag_counter, 3);

    struct th_identity *s2 = th_registry_find(reg, "sensor-2", NULL);
    assert_non_null(s2);
    assert_false(s2->enabled);
    assert_string_equal(s2->status_reason, "retired");
    assert_int_equal(s2->twin->desired_version, 1);
    assert_int_equal(s2->twin->etag_counter, 1);

    struct th_identity *gw = th_registry_find(reg, "gw", NULL);
    assert_non_null(gw);
    assert_int_equal(gw->module_count, 2);
    struct th_identity *sec = th_registry_find(reg, "gw", "azureiotsecurity");
    assert_non_null(sec);
    assert_ptr_equal(sec->parent, gw);
    assert_string_equal(sec->managed_by, "me");
    assert_true(
        cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(jobj(sec->twin->desired, "cfg"), "on")));
    assert_int_equal(sec->twin->desired_version, 2);
    assert_non_null(th_registry_find(reg, "gw", "m2"));
    assert_string_not_equal(s1->generation_id, s2->generation_id);
}

static void test_th_registry_load_empty_document_succeeds(void **state)
{
    struct th_registry *reg = *state;
    cJSON *doc = parse("{\"$schema\":\"x\",\"devices\":[],\"policies\":[]}");
    assert_int_equal(th_registry_load(reg, doc, NOW, NULL), TH_OK);
    cJSON_Delete(doc);
    assert_int_equal(th_registry_device_count(reg), 0);
}

static void test_th_registry_load_pasted_identity_json_succeeds(void **state)
{
    /* Hub-maintained fields of exported identities and twins are ignored. */
    struct th_registry *reg = *state;
    struct th_error err;
    cJSON *doc =
        parse("{\"devices\":[{\"deviceId\":\"d1\",\"generationId\":\"1\",\"etag\":\"MQ==\","
              "\"connectionState\":\"Connected\",\"cloudToDeviceMessageCount\":3,"
              "\"capabilities\":{\"iotEdge\":false},\"authentication\":{\"type\":\"sas\","
              "\"symmetricKey\":{\"primaryKey\":null,\"secondaryKey\":null},"
              "\"x509Thumbprint\":{\"primaryThumbprint\":null,\"secondaryThumbprint\":null}},"
              "\"properties\":{\"desired\":{\"a\":1,\"$version\":7,\"$metadata\":{}}}}]}");
    th_result r = th_registry_load(reg, doc, NOW, &err);
    cJSON_Delete(doc);
    if (r != TH_OK)
        fail_msg("load failed: %s", err.message);
    struct th_identity *d = th_registry_find(reg, "d1", NULL);
    assert_non_null(d);
    assert_false(d->connected);
    assert_int_equal(d->c2d_count, 0);
    assert_int_equal(d->twin->desired_version, 2);
}

/*
 * Loads `text` into a registry that already holds device "pre" and checks it
 * is refused with `want` and a message containing `path`, and that nothing
 * (no device, no policy) was added.
 */
static void expect_load_refused(struct th_registry *reg, const char *text, th_result want,
                                const char *path)
{
    struct th_error err;
    memset(&err, 0, sizeof err);
    if (!th_registry_find(reg, "pre", NULL))
        assert_int_equal(th_registry_add_device(reg, "pre", NULL, NULL, true, NOW, NULL, NULL),
                         TH_OK);
    cJSON *doc = parse(text);
    th_result r = th_registry_load(reg, doc, NOW, &err);
    cJSON_Delete(doc);
    assert_int_equal(r, want);
    assert_int_equal(err.result, want);
    if (!strstr(err.message, path))
        fail_msg("message '%s' does not name '%s'", err.message, path);
    assert_int_equal(th_registry_device_count(reg), 1);
    assert_null(th_registry_find(reg, "ok", NULL));
    assert_null(th_registry_policy(reg, "newpolicy", 9));
}

/* A valid first device and policy, so refusals prove nothing partial is added. */
#define OK_POLICY "{\"keyName\":\"newpolicy\",\"rights\":\"DeviceConnect\"}"
#define OK_DEV "{\"deviceId\":\"ok\",\"modules\":[{\"moduleId\":\"okm\"}]}"

static void test_th_registry_load_invalid_device_id_fails(void **state)
{
    expect_load_refused(
        *state, "{\"policies\":[" OK_POLICY "],\"devices\":[" OK_DEV ",{\"deviceId\":\"bad/id\"}]}",
        TH_ERR_INVAL, "devices[1].deviceId");
}

static void test_th_registry_load_missing_device_id_fails(void **state)
{
    expect_load_refused(*state, "{\"devices\":[" OK_DEV ",{\"status\":\"enabled\"}]}", TH_ERR_INVAL,
                        "devices[1].deviceId");
}

static void test_th_registry_load_duplicate_device_id_fails(void **state)
{
    struct th_error err;
    struct th_registry *reg = *state;
    expect_load_refused(reg, "{\"devices\":[" OK_DEV ",{\"deviceId\":\"x\"},{\"deviceId\":\"x\"}]}",
                        TH_ERR_INVAL, "devices[2].deviceId");
    cJSON *doc = parse("{\"devices\":[{\"deviceId\":\"x\"},{\"deviceId\":\"x\"}]}");
    assert_int_equal(th_registry_load(reg, doc, NOW, &err), TH_ERR_INVAL);
    assert_int_equal(err.code, 400011);
    cJSON_Delete(doc);
}

static void test_th_registry_load_existing_device_fails(void **state)
{
    expect_load_refused(*state, "{\"devices\":[" OK_DEV ",{\"deviceId\":\"pre\"}]}", TH_ERR_EXISTS,
                        "devices[1].deviceId");
}

static void test_th_registry_load_duplicate_module_id_fails(void **state)
{
    expect_load_refused(*state,
                        "{\"devices\":[" OK_DEV ",{\"deviceId\":\"d\",\"modules\":["
                        "{\"moduleId\":\"a\"},{\"moduleId\":\"b\"},{\"moduleId\":\"a\"}]}]}",
                        TH_ERR_INVAL, "devices[1].modules[2].moduleId");
}

static void test_th_registry_load_invalid_module_id_fails(void **state)
{
    expect_load_refused(*state,
                        "{\"devices\":[" OK_DEV ",{\"deviceId\":\"d\",\"modules\":["
                        "{\"moduleId\":\"a b\"}]}]}",
                        TH_ERR_INVAL, "devices[1].modules[0].moduleId");
}

static void test_th_registry_load_module_device_id_mismatch_fails(void **state)
{
    expect_load_refused(*state,
                        "{\"devices\":[" OK_DEV ",{\"deviceId\":\"d\",\"modules\":["
                        "{\"moduleId\":\"a\",\"deviceId\":\"other\"}]}]}",
                        TH_ERR_INVAL, "devices[1].modules[0].deviceId");
}

static void test_th_registry_load_51_modules_fails(void **state)
{
    char text[4096];
    size_t n = (size_t)snprintf(text, sizeof text,
                                "{\"devices\":[" OK_DEV ",{\"deviceId\":\"d\",\"modules\":[");
    for (int i = 0; i <= TH_MAX_MODULES_PER_DEVICE; i++)
        n += (size_t)snprintf(text + n, sizeof text - n, "%s{\"moduleId\":\"m%d\"}", i ? "," : "",
                              i);
    snprintf(text + n, sizeof text - n, "]}]}");
    expect_load_refused(*state, text, TH_ERR_TOO_LARGE, "devices[1].modules");
}

static void test_th_registry_load_invalid_key_fails(void **state)
{
    expect_load_refused(*state,
                        "{\"devices\":[" OK_DEV ",{\"deviceId\":\"d\",\"modules\":[{\"moduleId\":"
                        "\"m\",\"authentication\":{\"symmetricKey\":{\"secondaryKey\":\"abc\"}}}"
                        "]}]}",
                        TH_ERR_INVAL,
                        "devices[1].modules[0].authentication.symmetricKey.secondaryKey");
}

static void test_th_registry_load_non_sas_auth_fails(void **state)
{
    expect_load_refused(*state,
                        "{\"devices\":[" OK_DEV ",{\"deviceId\":\"d\",\"authentication\":"
                        "{\"type\":\"selfSigned\"}}]}",
                        TH_ERR_INVAL, "devices[1].authentication.type");
}

static void test_th_registry_load_invalid_status_fails(void **state)
{
    expect_load_refused(*state, "{\"devices\":[" OK_DEV ",{\"deviceId\":\"d\",\"status\":\"on\"}]}",
                        TH_ERR_INVAL, "devices[1].status");
}

static void test_th_registry_load_unknown_field_fails(void **state)
{
    expect_load_refused(*state, "{\"devices\":[" OK_DEV ",{\"deviceId\":\"d\",\"tag\":{}}]}",
                        TH_ERR_INVAL, "devices[1].tag");
    expect_load_refused(*state, "{\"device\":[]}", TH_ERR_INVAL, "device");
}

static void test_th_registry_load_tags_not_object_fails(void **state)
{
    expect_load_refused(*state, "{\"devices\":[" OK_DEV ",{\"deviceId\":\"d\",\"tags\":[1]}]}",
                        TH_ERR_INVAL, "devices[1].tags");
}

static void test_th_registry_load_invalid_desired_fails(void **state)
{
    /* Refused while the twin is built: the first device is already built then. */
    expect_load_refused(*state,
                        "{\"policies\":[" OK_POLICY "],\"devices\":[" OK_DEV
                        ",{\"deviceId\":\"d\",\"modules\":[{\"moduleId\":\"m\",\"properties\":"
                        "{\"desired\":{\"bad key\":1}}}]}]}",
                        TH_ERR_INVAL, "devices[1].modules[0].properties.desired");
}

static void test_th_registry_load_invalid_reported_fails(void **state)
{
    expect_load_refused(*state,
                        "{\"devices\":[" OK_DEV ",{\"deviceId\":\"d\",\"properties\":"
                        "{\"reported\":{\"a.b\":1}}}]}",
                        TH_ERR_INVAL, "devices[1].properties.reported");
}

static void test_th_registry_load_unknown_right_fails(void **state)
{
    expect_load_refused(*state,
                        "{\"devices\":[" OK_DEV "],\"policies\":[" OK_POLICY
                        ",{\"keyName\":\"p\",\"rights\":\"RegistryRead, Admin\"}]}",
                        TH_ERR_INVAL, "policies[1].rights");
}

static void test_th_registry_load_duplicate_policy_fails(void **state)
{
    expect_load_refused(*state,
                        "{\"devices\":[" OK_DEV "],\"policies\":[" OK_POLICY "," OK_POLICY "]}",
                        TH_ERR_INVAL, "policies[1].keyName");
}

static void test_th_registry_load_not_object_fails(void **state)
{
    expect_load_refused(*state, "[]", TH_ERR_INVAL, "object");
    expect_load_refused(*state, "{\"devices\":{}}", TH_ERR_INVAL, "devices");
    expect_load_refused(*state, "{\"devices\":[" OK_DEV ",3]}", TH_ERR_INVAL, "devices[1]");
}

/* The shipped example must stay loadable (fixtures/registry-example.json). */
static void test_th_registry_load_example_fixture_succeeds(void **state)
{
    struct th_registry *reg = *state;
    struct th_error err;
    char path[1024];
    const char *dir = getenv("TH_FIXTURES_DIR");
    if (dir) {
        snprintf(path, sizeof path, "%s/registry-example.json", dir);
    } else {
        /* __FILE__ is .../tests/unit/test_registry.c relative to the build root. */
        const char *file = __FILE__;
        const char *cut = strstr(file, "tests/unit/test_registry.c");
        assert_non_null(cut);
        snprintf(path, sizeof path, "%.*sfixtures/registry-example.json", (int)(cut - file), file);
    }
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s (run from the build root or set TH_FIXTURES_DIR)", path);
    static char text[65536];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    cJSON *doc = parse(text);
    th_result r = th_registry_load(reg, doc, NOW, &err);
    cJSON_Delete(doc);
    if (r != TH_OK)
        fail_msg("%s: %s", path, err.message);
    assert_int_equal(th_registry_device_count(reg), 3);
    size_t disabled = 0, security = 0;
    for (struct th_identity *d = th_registry_next_device(reg, NULL); d;
         d = th_registry_next_device(reg, d)) {
        disabled += !d->enabled;
        if (th_registry_find(reg, d->device_id, "azureiotsecurity"))
            security++;
    }
    assert_int_equal(disabled, 1);
    assert_int_equal(security, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TEST(test_th_registry_add_device_new_id_succeeds),
        TEST(test_th_registry_add_device_duplicate_fails),
        TEST(test_th_registry_add_device_invalid_id_fails),
        TEST(test_th_registry_add_device_invalid_key_fails),
        TEST(test_th_registry_add_device_generated_keys_succeeds),
        TEST(test_th_registry_add_device_generation_id_after_recreate_succeeds),
        TEST(test_th_registry_add_module_existing_device_succeeds),
        TEST(test_th_registry_add_module_missing_device_fails),
        TEST(test_th_registry_add_module_duplicate_fails),
        TEST(test_th_registry_add_module_51st_fails),
        TEST(test_th_registry_remove_module_succeeds),
        TEST(test_th_registry_remove_device_with_modules_succeeds),
        TEST(test_th_registry_remove_missing_fails),
        TEST(test_th_registry_next_device_insertion_order_succeeds),
        TEST(test_th_registry_next_device_empty_succeeds),
        TEST(test_th_registry_set_policy_add_and_replace_succeeds),
        TEST(test_th_registry_set_policy_invalid_fails),
        TEST(test_th_registry_set_policy_17th_fails),
        TEST(test_th_registry_add_dev_identities_documented_keys_succeeds),
        TEST(test_th_registry_add_dev_identities_existing_kept_succeeds),
        TEST(test_th_identity_set_connected_state_change_succeeds),
        TEST(test_th_identity_etag_counter_succeeds),
        TEST(test_th_identity_c2d_push_fifo_succeeds),
        TEST(test_th_identity_c2d_push_51st_fails),
        TEST(test_th_identity_c2d_push_over_64k_fails),
        TEST(test_th_identity_c2d_push_module_fails),
        TEST(test_th_identity_to_json_device_shape_succeeds),
        TEST(test_th_identity_to_json_connected_times_succeeds),
        TEST(test_th_identity_to_json_module_shape_succeeds),
        TEST(test_th_identity_twin_json_device_shape_succeeds),
        TEST(test_th_identity_twin_json_module_shape_succeeds),
        TEST(test_th_registry_load_valid_document_succeeds),
        TEST(test_th_registry_load_empty_document_succeeds),
        TEST(test_th_registry_load_pasted_identity_json_succeeds),
        TEST(test_th_registry_load_invalid_device_id_fails),
        TEST(test_th_registry_load_missing_device_id_fails),
        TEST(test_th_registry_load_duplicate_device_id_fails),
        TEST(test_th_registry_load_existing_device_fails),
        TEST(test_th_registry_load_duplicate_module_id_fails),
        TEST(test_th_registry_load_invalid_module_id_fails),
        TEST(test_th_registry_load_module_device_id_mismatch_fails),
        TEST(test_th_registry_load_51_modules_fails),
        TEST(test_th_registry_load_invalid_key_fails),
        TEST(test_th_registry_load_non_sas_auth_fails),
        TEST(test_th_registry_load_invalid_status_fails),
        TEST(test_th_registry_load_unknown_field_fails),
        TEST(test_th_registry_load_tags_not_object_fails),
        TEST(test_th_registry_load_invalid_desired_fails),
        TEST(test_th_registry_load_invalid_reported_fails),
        TEST(test_th_registry_load_unknown_right_fails),
        TEST(test_th_registry_load_duplicate_policy_fails),
        TEST(test_th_registry_load_not_object_fails),
        TEST(test_th_registry_load_example_fixture_succeeds),
    };
    return cmocka_run_group_tests_name("registry", tests, NULL, NULL);
}
