/*
 * test_registry.c - unit tests for registry.c: devices and modules, keys,
 * generation ids, policies and dev identities, the registry file loader,
 * C2D queues, the identity/twin JSON views, identity requests (authentication
 * type none, managedBy, IoT Edge capability and scopes) (iothub-protocol.md 1, 2.5,
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
#include "query.h"
#include "registry.h"
#include "twin.h"
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
                        "{\"type\":\"x509\"}}]}",
                        TH_ERR_INVAL, "devices[1].authentication.type");
    /* selfSigned without its thumbprint */
    expect_load_refused(*state,
                        "{\"devices\":[" OK_DEV ",{\"deviceId\":\"d\",\"authentication\":"
                        "{\"type\":\"selfSigned\"}}]}",
                        TH_ERR_INVAL, "primaryThumbprint");
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

/* ---- identity requests: auth type none, managedBy, IoT Edge capability and scopes ---- */

/* th_ident_req_from_json of `text`, which must succeed; the body stays alive in *body. */
static struct th_ident_req req_of(const char *text, bool is_module, cJSON **body)
{
    struct th_ident_req req;
    struct th_error err = {0};
    *body = parse(text);
    if (th_ident_req_from_json(*body, is_module, &req, &err) != TH_OK)
        fail_msg("request %s refused: %s", text, err.message);
    return req;
}

/* Creates device `id` from a request body; fails the test when refused. */
static struct th_identity *create_from(struct th_registry *reg, const char *id, const char *module,
                                       const char *text)
{
    cJSON *body;
    struct th_ident_req req = req_of(text, module != NULL, &body);
    struct th_identity *out = NULL;
    struct th_error err = {0};
    if (th_registry_create(reg, id, module, &req, NULL, NULL, NOW, &out, &err) != TH_OK)
        fail_msg("create %s%s%s from %s refused: %s", id, module ? "/" : "", module ? module : "",
                 text, err.message);
    cJSON_Delete(body);
    return out;
}

/* The expected deviceScope of an edge device created as such. */
static char *scope_of(const struct th_identity *dev)
{
    size_t n = strlen(TH_EDGE_SCOPE_PREFIX) + strlen(dev->device_id) + 32;
    char *s = malloc(n);
    assert_non_null(s);
    snprintf(s, n, TH_EDGE_SCOPE_PREFIX "%s-%s", dev->device_id, dev->generation_id);
    return s;
}

/* The single parentScopes entry of a JSON view, or NULL when the array is empty. */
static const char *first_parent(const cJSON *view)
{
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(view, "parentScopes");
    assert_true(cJSON_IsArray(arr));
    assert_true(cJSON_GetArraySize(arr) <= 1);
    return arr->child ? arr->child->valuestring : NULL;
}

static void test_th_ident_req_from_json_device_fields_succeeds(void **state)
{
    (void)state;
    cJSON *body;
    struct th_ident_req r = req_of(
        "{\"deviceId\":\"d\",\"status\":\"disabled\",\"statusReason\":\"r\","
        "\"authentication\":{\"type\":\"none\",\"symmetricKey\":{\"primaryKey\":null},"
        "\"x509Thumbprint\":{\"primaryThumbprint\":null}},\"capabilities\":{\"iotEdge\":true},"
        "\"deviceScope\":\"s1\",\"parentScopes\":[\"s2\"],\"managedBy\":\"ignored\"}",
        false, &body);
    assert_int_equal(r.auth_type, TH_AUTH_NONE);
    assert_null(r.primary_key);
    assert_int_equal(r.enabled, 0);
    assert_string_equal(r.status_reason, "r");
    assert_int_equal(r.iot_edge, 1);
    assert_true(r.scope_given);
    assert_string_equal(r.device_scope, "s1");
    assert_true(r.parents_given);
    assert_string_equal(r.parent_scope, "s2");
    assert_false(r.managed_given); /* not a module member */
    cJSON_Delete(body);

    /* nothing given; null scopes and managedBy mean "none", not "keep" */
    r = req_of("{\"deviceId\":\"d\",\"capabilities\":{},\"deviceScope\":null,\"parentScopes\":[]}",
               false, &body);
    assert_int_equal(r.auth_type, -1);
    assert_int_equal(r.enabled, -1);
    assert_int_equal(r.iot_edge, -1);
    assert_true(r.scope_given);
    assert_null(r.device_scope);
    assert_true(r.parents_given);
    assert_null(r.parent_scope);
    cJSON_Delete(body);
    r = req_of("{\"moduleId\":\"m\",\"managedBy\":null,\"authentication\":{\"type\":\"sas\"}}",
               true, &body);
    assert_true(r.managed_given);
    assert_null(r.managed_by);
    assert_int_equal(r.auth_type, TH_AUTH_SAS);
    assert_false(r.scope_given);
    cJSON_Delete(body);
}

static void test_th_ident_req_from_json_bad_members_fails(void **state)
{
    (void)state;
    static const struct {
        const char *text, *what;
        bool module;
    } cases[] = {
        {"[]", "must be a JSON object", false},
        {"{\"capabilities\":{\"iotEdge\":\"yes\"}}", "capabilities.iotEdge", false},
        {"{\"capabilities\":true}", "capabilities", false},
        {"{\"deviceScope\":5}", "deviceScope", false},
        {"{\"parentScopes\":\"a\"}", "parentScopes", false},
        {"{\"parentScopes\":[\"a\",\"b\"]}", "at most one parent", false},
        {"{\"parentScopes\":[1]}", "parentScopes[0]", false},
        {"{\"authentication\":{\"x509Thumbprint\":{\"primaryThumbprint\":5}}}", "primaryThumbprint",
         false},
        {"{\"authentication\":{\"x509Thumbprint\":[]}}", "x509Thumbprint", true},
        {"{\"authentication\":{\"type\":\"token\"}}", "unknown", false},
        {"{\"authentication\":{\"symmetricKey\":{\"primaryKey\":7}}}", "primaryKey", false},
        {"{\"status\":\"on\"}", "'status'", false},
        {"{\"managedBy\":3}", "managedBy", true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct th_ident_req r;
        struct th_error err = {0};
        cJSON *body = parse(cases[i].text);
        assert_int_equal(th_ident_req_from_json(body, cases[i].module, &r, &err), TH_ERR_INVAL);
        assert_int_equal(err.code, 400004);
        if (!strstr(err.message, cases[i].what))
            fail_msg("%s: message '%s' does not name '%s'", cases[i].text, err.message,
                     cases[i].what);
        cJSON_Delete(body);
    }
}

static void test_th_registry_create_edge_device_scope_succeeds(void **state)
{
    struct th_registry *reg = *state;
    /* a deviceScope given to an edge device is ignored: the hub generates it */
    struct th_identity *gw = create_from(
        reg, "gw-1", NULL,
        "{\"capabilities\":{\"iotEdge\":true},\"deviceScope\":\"ms-azure-iot-edge://x-1\"}");
    char *scope = scope_of(gw);
    assert_true(gw->iot_edge);
    assert_string_equal(gw->device_scope, scope);
    assert_null(gw->parent_scope);
    assert_int_equal(gw->etag_counter, 1);

    cJSON *ident = th_identity_to_json(gw);
    assert_true(
        cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(jobj(ident, "capabilities"), "iotEdge")));
    assert_string_equal(jstr(ident, "deviceScope"), scope);
    assert_null(first_parent(ident));
    cJSON_Delete(ident);
    cJSON *twin = th_identity_twin_json(gw);
    assert_true(
        cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(jobj(twin, "capabilities"), "iotEdge")));
    assert_string_equal(jstr(twin, "deviceScope"), scope);
    assert_false(has(twin, "parentScopes")); /* the hub's twins carry it only when set */
    cJSON_Delete(twin);

    /* a plain device: iotEdge false, no scope; twin without deviceScope */
    struct th_identity *d = create_from(reg, "plain", NULL, "{}");
    assert_false(d->iot_edge);
    ident = th_identity_to_json(d);
    assert_true(
        cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(jobj(ident, "capabilities"), "iotEdge")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(ident, "deviceScope")));
    assert_null(first_parent(ident));
    cJSON_Delete(ident);
    twin = th_identity_twin_json(d);
    assert_false(has(twin, "deviceScope"));
    assert_false(has(twin, "parentScopes"));
    cJSON_Delete(twin);
    free(scope);
}

static void test_th_registry_create_children_of_edge_device_succeeds(void **state)
{
    struct th_registry *reg = *state;
    struct th_identity *gw = create_from(reg, "gw", NULL, "{\"capabilities\":{\"iotEdge\":true}}");
    char *scope = scope_of(gw);
    char body[512];

    /* a leaf child: deviceScope is the parent's; the hub copies it into parentScopes */
    snprintf(body, sizeof body, "{\"deviceScope\":\"%s\",\"parentScopes\":[\"ignored\"]}", scope);
    struct th_identity *leaf = create_from(reg, "leaf", NULL, body);
    assert_false(leaf->iot_edge);
    assert_string_equal(leaf->device_scope, scope);
    assert_null(leaf->parent_scope);
    cJSON *ident = th_identity_to_json(leaf);
    assert_string_equal(jstr(ident, "deviceScope"), scope);
    assert_string_equal(first_parent(ident), scope);
    cJSON_Delete(ident);
    cJSON *twin = th_identity_twin_json(leaf);
    assert_string_equal(jstr(twin, "deviceScope"), scope);
    assert_string_equal(first_parent(twin), scope);
    cJSON_Delete(twin);

    /* an edge child: its own scope, the parent in parentScopes */
    snprintf(body, sizeof body, "{\"capabilities\":{\"iotEdge\":true},\"parentScopes\":[\"%s\"]}",
             scope);
    struct th_identity *child = create_from(reg, "gw-child", NULL, body);
    char *own = scope_of(child);
    assert_string_equal(child->device_scope, own);
    assert_string_equal(child->parent_scope, scope);
    ident = th_identity_to_json(child);
    assert_string_equal(jstr(ident, "deviceScope"), own);
    assert_string_equal(first_parent(ident), scope);
    cJSON_Delete(ident);
    free(own);
    free(scope);
}

/* th_registry_create must refuse `text` for device `id` with 400004 naming `what`. */
static void expect_create_refused(struct th_registry *reg, const char *id, const char *module,
                                  const char *text, const char *what)
{
    cJSON *body;
    struct th_ident_req req = req_of(text, module != NULL, &body);
    struct th_error err = {0};
    size_t devices = th_registry_device_count(reg), modules = th_registry_module_total(reg);
    assert_int_equal(th_registry_create(reg, id, module, &req, NULL, NULL, NOW, NULL, &err),
                     TH_ERR_INVAL);
    assert_int_equal(err.code, 400004);
    if (!strstr(err.message, what))
        fail_msg("%s: message '%s' does not name '%s'", text, err.message, what);
    assert_int_equal(th_registry_device_count(reg), devices);
    assert_int_equal(th_registry_module_total(reg), modules);
    cJSON_Delete(body);
}

static void test_th_registry_create_unknown_parent_fails(void **state)
{
    struct th_registry *reg = *state;
    struct th_identity *gw = create_from(reg, "gw", NULL, "{\"capabilities\":{\"iotEdge\":true}}");
    struct th_identity *leaf = create_from(reg, "leaf", NULL, "{}");
    char body[512];
    /* no such scope */
    expect_create_refused(reg, "d", NULL, "{\"deviceScope\":\"ms-azure-iot-edge://gw-1\"}",
                          "not the deviceScope of an IoT Edge device");
    /* the right shape, another generation of the parent */
    snprintf(body, sizeof body, "{\"deviceScope\":\"%s0\"}", gw->device_scope);
    expect_create_refused(reg, "d", NULL, body, "not the deviceScope of an IoT Edge device");
    snprintf(body, sizeof body, "{\"capabilities\":{\"iotEdge\":true},\"parentScopes\":[\"x\"]}");
    expect_create_refused(reg, "d", NULL, body, "parentScopes[0]");
    /* a device that stopped being an edge device is no parent any more */
    cJSON *b;
    struct th_ident_req off = req_of("{\"capabilities\":{\"iotEdge\":false}}", false, &b);
    char *old_scope = strdup(gw->device_scope);
    assert_int_equal(th_identity_apply(reg, gw, &off, NOW, NULL, NULL), TH_OK);
    cJSON_Delete(b);
    snprintf(body, sizeof body, "{\"deviceScope\":\"%s\"}", old_scope);
    expect_create_refused(reg, "d", NULL, body, "not the deviceScope of an IoT Edge device");
    free(old_scope);
    (void)leaf;
    /* keys with type none */
    expect_create_refused(reg, "d", NULL,
                          "{\"authentication\":{\"type\":\"none\",\"symmetricKey\":"
                          "{\"primaryKey\":\"" KEY32 "\"}}}",
                          "has no keys");
    expect_create_refused(reg, "gw", "m",
                          "{\"authentication\":{\"type\":\"none\",\"symmetricKey\":"
                          "{\"secondaryKey\":\"" KEY16 "\"}}}",
                          "has no keys");
    /* a module has no status */
    expect_create_refused(reg, "gw", "m", "{\"status\":\"disabled\"}", "has no status");
}

static void test_th_registry_create_module_without_keys_succeeds(void **state)
{
    /* How IoT Edge creates its modules: type none, managedBy, no keys (edgelet-iothub). */
    struct th_registry *reg = *state;
    assert_int_equal(th_registry_add_device(reg, "edge", NULL, NULL, true, NOW, NULL, NULL), TH_OK);
    struct th_identity *m =
        create_from(reg, "edge", "SimulatedTemperatureSensor",
                    "{\"moduleId\":\"SimulatedTemperatureSensor\",\"deviceId\":\"edge\","
                    "\"managedBy\":\"IotEdge\",\"authentication\":{\"type\":\"none\"}}");
    assert_int_equal(m->auth_type, TH_AUTH_NONE);
    assert_string_equal(m->primary_key, "");
    assert_string_equal(m->secondary_key, "");
    assert_string_equal(m->managed_by, "IotEdge");

    cJSON *ident = th_identity_to_json(m);
    assert_string_equal(jstr(ident, "managedBy"), "IotEdge");
    const cJSON *auth = jobj(ident, "authentication");
    assert_string_equal(jstr(auth, "type"), "none");
    const cJSON *sym = jobj(auth, "symmetricKey");
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(sym, "primaryKey")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(sym, "secondaryKey")));
    assert_false(has(ident, "capabilities")); /* modules have none */
    cJSON_Delete(ident);
    cJSON *twin = th_identity_twin_json(m);
    assert_string_equal(jstr(twin, "authenticationType"), "none");
    assert_false(has(twin, "managedBy")); /* the hub's module twin has no managedBy */
    cJSON_Delete(twin);

    /* a device can be created without keys too */
    struct th_identity *d =
        create_from(reg, "nokeys", NULL, "{\"authentication\":{\"type\":\"none\"}}");
    assert_int_equal(d->auth_type, TH_AUTH_NONE);
    assert_string_equal(d->primary_key, "");
}

static void test_th_identity_apply_none_to_sas_succeeds(void **state)
{
    /* IoT Edge's agent completes a keyless module: type sas, with or without keys. */
    struct th_registry *reg = *state;
    assert_int_equal(th_registry_add_device(reg, "edge", NULL, NULL, true, NOW, NULL, NULL), TH_OK);
    struct th_identity *m1 = create_from(reg, "edge", "m1",
                                         "{\"managedBy\":\"IotEdge\",\"authentication\":"
                                         "{\"type\":\"none\"}}");
    struct th_identity *m2 =
        create_from(reg, "edge", "m2", "{\"authentication\":{\"type\":\"none\"}}");
    cJSON *body;
    struct th_error err = {0};
    struct th_ident_req req = req_of("{\"authentication\":{\"type\":\"sas\",\"symmetricKey\":"
                                     "{\"primaryKey\":null,\"secondaryKey\":null}}}",
                                     true, &body);
    assert_int_equal(th_identity_apply(reg, m1, &req, NOW, NULL, &err), TH_OK);
    cJSON_Delete(body);
    assert_int_equal(m1->auth_type, TH_AUTH_SAS);
    assert_int_equal(decoded_len(m1->primary_key), 32);
    assert_int_equal(decoded_len(m1->secondary_key), 32);
    assert_string_equal(m1->managed_by, "IotEdge"); /* not given: kept */
    assert_int_equal(m1->etag_counter, 2);

    /* edgelet sends its own derived keys with the update */
    req = req_of("{\"managedBy\":\"iotedge\",\"authentication\":{\"type\":\"sas\",\"symmetricKey\":"
                 "{\"primaryKey\":\"" KEY32 "\",\"secondaryKey\":\"" KEY16 "\"}}}",
                 true, &body);
    assert_int_equal(th_identity_apply(reg, m2, &req, NOW, NULL, &err), TH_OK);
    cJSON_Delete(body);
    assert_string_equal(m2->primary_key, KEY32);
    assert_string_equal(m2->secondary_key, KEY16);
    assert_string_equal(m2->managed_by, "iotedge");

    /* back to none drops both keys; managedBy null clears it */
    req = req_of("{\"managedBy\":null,\"authentication\":{\"type\":\"none\"}}", true, &body);
    assert_int_equal(th_identity_apply(reg, m2, &req, NOW, NULL, &err), TH_OK);
    cJSON_Delete(body);
    assert_int_equal(m2->auth_type, TH_AUTH_NONE);
    assert_string_equal(m2->primary_key, "");
    assert_null(m2->managed_by);

    /* keys with type none are refused and nothing changes */
    req = req_of("{\"authentication\":{\"type\":\"none\",\"symmetricKey\":{\"primaryKey\":\"" KEY32
                 "\"}}}",
                 true, &body);
    uint64_t etag = m1->etag_counter;
    assert_int_equal(th_identity_apply(reg, m1, &req, NOW, NULL, &err), TH_ERR_INVAL);
    cJSON_Delete(body);
    assert_int_equal(err.code, 400004);
    assert_int_equal(m1->auth_type, TH_AUTH_SAS);
    assert_int_equal(m1->etag_counter, etag);
}

static void test_th_identity_apply_edge_transitions_keep_parent_succeeds(void **state)
{
    struct th_registry *reg = *state;
    struct th_identity *gw = create_from(reg, "gw", NULL, "{\"capabilities\":{\"iotEdge\":true}}");
    char *parent = strdup(gw->device_scope);
    char body[512];
    snprintf(body, sizeof body, "{\"deviceScope\":\"%s\"}", parent);
    struct th_identity *d = create_from(reg, "d", NULL, body);
    cJSON *b;
    struct th_error err = {0};

    /* becoming an edge device: an own scope (ticks of the update), the parent kept */
    int64_t later = NOW + 7000000;
    struct th_ident_req req = req_of("{\"capabilities\":{\"iotEdge\":true}}", false, &b);
    assert_int_equal(th_identity_apply(reg, d, &req, later, NULL, &err), TH_OK);
    cJSON_Delete(b);
    char want[256];
    snprintf(want, sizeof want, TH_EDGE_SCOPE_PREFIX "d-%llu",
             (unsigned long long)((uint64_t)later * 10u + 621355968000000000ULL));
    assert_true(d->iot_edge);
    assert_string_equal(d->device_scope, want);
    assert_string_equal(d->parent_scope, parent);

    /* the identity sent back as read (own deviceScope, iotEdge false): the parent stays */
    cJSON *read = th_identity_to_json(d);
    cJSON_ReplaceItemInObjectCaseSensitive(read, "capabilities", parse("{\"iotEdge\":false}"));
    assert_int_equal(th_ident_req_from_json(read, false, &req, &err), TH_OK);
    assert_int_equal(th_identity_apply(reg, d, &req, later, NULL, &err), TH_OK);
    cJSON_Delete(read);
    assert_false(d->iot_edge);
    assert_string_equal(d->device_scope, parent);
    assert_null(d->parent_scope);

    /* a stale scope sent back unchanged is accepted after its parent is gone */
    assert_int_equal(th_registry_remove(reg, "gw", NULL), TH_OK);
    snprintf(body, sizeof body, "{\"deviceScope\":\"%s\",\"statusReason\":\"x\"}", parent);
    req = req_of(body, false, &b);
    assert_int_equal(th_identity_apply(reg, d, &req, later, NULL, &err), TH_OK);
    cJSON_Delete(b);
    assert_string_equal(d->device_scope, parent);
    /* "" removes the parent */
    req = req_of("{\"deviceScope\":\"\"}", false, &b);
    assert_int_equal(th_identity_apply(reg, d, &req, later, NULL, &err), TH_OK);
    cJSON_Delete(b);
    assert_null(d->device_scope);
    free(parent);
}

static void test_th_identity_apply_own_parent_fails(void **state)
{
    struct th_registry *reg = *state;
    struct th_identity *gw = create_from(reg, "gw", NULL, "{\"capabilities\":{\"iotEdge\":true}}");
    char body[512];
    snprintf(body, sizeof body, "{\"parentScopes\":[\"%s\"]}", gw->device_scope);
    cJSON *b;
    struct th_ident_req req = req_of(body, false, &b);
    struct th_error err = {0};
    assert_int_equal(th_identity_apply(reg, gw, &req, NOW, NULL, &err), TH_ERR_INVAL);
    cJSON_Delete(b);
    assert_int_equal(err.code, 400004);
    assert_non_null(strstr(err.message, "its own parent"));
    assert_null(gw->parent_scope);
    assert_int_equal(gw->etag_counter, 1);
}

/* Applies `text` to `id`; fails the test when refused. Returns keys_changed. */
static bool apply_text(struct th_registry *reg, struct th_identity *id, const char *text)
{
    cJSON *body;
    struct th_ident_req req = req_of(text, id->module_id != NULL, &body);
    struct th_error err = {0};
    bool changed = true;
    if (th_identity_apply(reg, id, &req, NOW, &changed, &err) != TH_OK)
        fail_msg("update from %s refused: %s", text, err.message);
    cJSON_Delete(body);
    return changed;
}

static void test_th_identity_apply_identity_as_read_keeps_keys_succeeds(void **state)
{
    /* What the SDKs' update sends: the identity as read, keys included. */
    struct th_registry *reg = *state;
    struct th_identity *d =
        create_from(reg, "d", NULL,
                    "{\"authentication\":{\"symmetricKey\":{\"primaryKey\":\"" KEY32
                    "\",\"secondaryKey\":\"" KEY16 "\"}}}");
    cJSON *read = th_identity_to_json(d);
    assert_true(cJSON_ReplaceItemInObjectCaseSensitive(read, "statusReason",
                                                       cJSON_CreateString("as read")));
    struct th_ident_req req;
    struct th_error err = {0};
    bool changed = true;
    assert_int_equal(th_ident_req_from_json(read, false, &req, &err), TH_OK);
    assert_int_equal(th_identity_apply(reg, d, &req, NOW, &changed, &err), TH_OK);
    cJSON_Delete(read);
    assert_false(changed);
    assert_string_equal(d->primary_key, KEY32);
    assert_string_equal(d->secondary_key, KEY16);
    assert_string_equal(d->status_reason, "as read");
    assert_int_equal(d->etag_counter, 2); /* the update itself still advances the etag */

    /* the same keys with type "sas" given, or one of them alone: still no change */
    assert_false(apply_text(reg, d,
                            "{\"authentication\":{\"type\":\"sas\",\"symmetricKey\":"
                            "{\"primaryKey\":\"" KEY32 "\",\"secondaryKey\":\"" KEY16 "\"}}}"));
    assert_false(apply_text(
        reg, d, "{\"authentication\":{\"symmetricKey\":{\"secondaryKey\":\"" KEY16 "\"}}}"));
    /* no keys at all, and a status change, are no key change either */
    assert_false(apply_text(reg, d, "{\"status\":\"disabled\"}"));
    assert_string_equal(d->primary_key, KEY32);

    /* a keyless identity sent back as read (keys null) stays keyless and unchanged */
    struct th_identity *n = create_from(reg, "n", NULL, "{\"authentication\":{\"type\":\"none\"}}");
    read = th_identity_to_json(n);
    assert_int_equal(th_ident_req_from_json(read, false, &req, &err), TH_OK);
    assert_int_equal(th_identity_apply(reg, n, &req, NOW, &changed, &err), TH_OK);
    cJSON_Delete(read);
    assert_false(changed);
    assert_int_equal(n->auth_type, TH_AUTH_NONE);
    assert_string_equal(n->primary_key, "");
}

static void test_th_identity_apply_different_keys_changed_succeeds(void **state)
{
    struct th_registry *reg = *state;
    const char *keys = "{\"authentication\":{\"symmetricKey\":{\"primaryKey\":\"" KEY32
                       "\",\"secondaryKey\":\"" KEY16 "\"}}}";
    struct th_identity *d = create_from(reg, "d", NULL, keys);

    /* one key new, the other the same */
    assert_true(apply_text(reg, d,
                           "{\"authentication\":{\"symmetricKey\":{\"primaryKey\":\"" KEY16
                           "\",\"secondaryKey\":\"" KEY16 "\"}}}"));
    assert_string_equal(d->primary_key, KEY16);
    /* swapped back and forth: each slot is compared with its own current key */
    assert_true(apply_text(reg, d, keys));
    assert_true(apply_text(reg, d,
                           "{\"authentication\":{\"symmetricKey\":{\"primaryKey\":\"" KEY16
                           "\",\"secondaryKey\":\"" KEY32 "\"}}}"));
    /* "" regenerates, even where the key is the current one's slot */
    assert_true(
        apply_text(reg, d, "{\"authentication\":{\"symmetricKey\":{\"primaryKey\":\"\"}}}"));
    assert_int_equal(decoded_len(d->primary_key), 32);
    assert_string_equal(d->secondary_key, KEY32);

    /* a keyless identity that gets keys (type sas, generated) */
    struct th_identity *n = create_from(reg, "n", NULL, "{\"authentication\":{\"type\":\"none\"}}");
    assert_true(apply_text(reg, n, "{\"authentication\":{\"type\":\"sas\"}}"));
    assert_int_equal(decoded_len(n->primary_key), 32);
}

static void test_th_identity_apply_none_with_current_keys_succeeds(void **state)
{
    /* Type "none" on the identity as read: the current keys are no change, so they are dropped
     * with the others instead of refused as keys given with "none". */
    struct th_registry *reg = *state;
    struct th_identity *d =
        create_from(reg, "d", NULL,
                    "{\"authentication\":{\"symmetricKey\":{\"primaryKey\":\"" KEY32
                    "\",\"secondaryKey\":\"" KEY16 "\"}}}");
    assert_true(apply_text(reg, d,
                           "{\"authentication\":{\"type\":\"none\",\"symmetricKey\":"
                           "{\"primaryKey\":\"" KEY32 "\",\"secondaryKey\":\"" KEY16 "\"}}}"));
    assert_int_equal(d->auth_type, TH_AUTH_NONE);
    assert_string_equal(d->primary_key, "");
    assert_string_equal(d->secondary_key, "");
}

static void test_th_identity_apply_refused_keys_unchanged_fails(void **state)
{
    /* A refused update reports no key change, and changes nothing. */
    struct th_registry *reg = *state;
    struct th_identity *d =
        create_from(reg, "d", NULL,
                    "{\"authentication\":{\"symmetricKey\":{\"primaryKey\":\"" KEY32
                    "\",\"secondaryKey\":\"" KEY16 "\"}}}");
    const char *bad[] = {
        /* a new key with type none */
        "{\"authentication\":{\"type\":\"none\",\"symmetricKey\":{\"primaryKey\":\"" KEY16 "\"}}}",
        /* a new primary key and a malformed secondary */
        "{\"authentication\":{\"symmetricKey\":{\"primaryKey\":\"" KEY16
        "\",\"secondaryKey\":\"***\"}}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cJSON *body;
        struct th_ident_req req = req_of(bad[i], false, &body);
        struct th_error err = {0};
        bool changed = true;
        assert_int_equal(th_identity_apply(reg, d, &req, NOW, &changed, &err), TH_ERR_INVAL);
        cJSON_Delete(body);
        assert_int_equal(err.code, 400004);
        assert_false(changed);
        assert_string_equal(d->primary_key, KEY32);
        assert_string_equal(d->secondary_key, KEY16);
        assert_int_equal(d->auth_type, TH_AUTH_SAS);
        assert_int_equal(d->etag_counter, 1);
    }
}

static void test_th_identity_twin_json_query_iot_edge_succeeds(void **state)
{
    /* The documented query finds edge devices (iot-hub-devguide-query-language). */
    struct th_registry *reg = *state;
    create_from(reg, "gw", NULL, "{\"capabilities\":{\"iotEdge\":true}}");
    create_from(reg, "plain", NULL, "{}");
    cJSON *docs[2] = {th_identity_twin_json(th_registry_find(reg, "gw", NULL)),
                      th_identity_twin_json(th_registry_find(reg, "plain", NULL))};
    const char *text = "SELECT * FROM devices WHERE capabilities.iotEdge = true";
    struct th_query *q = NULL;
    assert_int_equal(th_query_parse(text, strlen(text), &q, NULL), TH_OK);
    cJSON *items = NULL;
    bool twin = false;
    assert_int_equal(th_query_run(q, docs, 2, &items, &twin, NULL), TH_OK);
    assert_int_equal(cJSON_GetArraySize(items), 1);
    assert_string_equal(jstr(items->child, "deviceId"), "gw");
    cJSON_Delete(items);
    th_query_free(q);
    cJSON_Delete(docs[0]);
    cJSON_Delete(docs[1]);
}

static void test_th_registry_load_edge_hierarchy_succeeds(void **state)
{
    /* Parents are named by the id in their scope; the ticks are the load's, not the file's. */
    struct th_registry *reg = *state;
    struct th_error err = {0};
    cJSON *doc = parse(
        "{\"devices\":["
        "{\"deviceId\":\"leaf\",\"deviceScope\":\"ms-azure-iot-edge://gw-top-637121074930370650\","
        "\"parentScopes\":[\"ms-azure-iot-edge://gw-top-637121074930370650\"]},"
        "{\"deviceId\":\"gw-low\",\"capabilities\":{\"iotEdge\":true},"
        "\"deviceScope\":\"ms-azure-iot-edge://gw-low-1\","
        "\"parentScopes\":[\"ms-azure-iot-edge://gw-top-1\"],"
        "\"modules\":[{\"moduleId\":\"m\",\"managedBy\":\"IotEdge\","
        "\"authentication\":{\"type\":\"none\"}}]},"
        "{\"deviceId\":\"gw-top\",\"capabilities\":{\"iotEdge\":true}}]}");
    th_result r = th_registry_load(reg, doc, NOW, &err);
    cJSON_Delete(doc);
    if (r != TH_OK)
        fail_msg("load failed: %s", err.message);
    struct th_identity *top = th_registry_find(reg, "gw-top", NULL);
    struct th_identity *low = th_registry_find(reg, "gw-low", NULL);
    struct th_identity *leaf = th_registry_find(reg, "leaf", NULL);
    char *top_scope = scope_of(top), *low_scope = scope_of(low);
    assert_string_equal(top->device_scope, top_scope);
    assert_null(top->parent_scope);
    assert_string_equal(low->device_scope, low_scope);
    assert_string_equal(low->parent_scope, top_scope);
    assert_false(leaf->iot_edge);
    assert_string_equal(leaf->device_scope, top_scope);
    struct th_identity *m = th_registry_find(reg, "gw-low", "m");
    assert_int_equal(m->auth_type, TH_AUTH_NONE);
    assert_string_equal(m->managed_by, "IotEdge");
    free(top_scope);
    free(low_scope);
}

static void test_th_registry_load_bad_edge_fields_fails(void **state)
{
    struct th_registry *reg = *state;
    expect_load_refused(reg,
                        "{\"devices\":[" OK_DEV ",{\"deviceId\":\"x\",\"deviceScope\":"
                        "\"ms-azure-iot-edge://nobody-1\"}]}",
                        TH_ERR_INVAL, "names device 'nobody'");
    /* "pre" exists but is not an edge device */
    expect_load_refused(reg,
                        "{\"devices\":[" OK_DEV ",{\"deviceId\":\"x\",\"deviceScope\":"
                        "\"ms-azure-iot-edge://pre-1\"}]}",
                        TH_ERR_INVAL, "not an IoT Edge device");
    expect_load_refused(reg,
                        "{\"devices\":[" OK_DEV ",{\"deviceId\":\"x\",\"capabilities\":"
                        "{\"iotEdge\":true},\"parentScopes\":[\"ms-azure-iot-edge://x-1\"]}]}",
                        TH_ERR_INVAL, "its own parent");
    expect_load_refused(reg,
                        "{\"devices\":[" OK_DEV ",{\"deviceId\":\"x\",\"deviceScope\":\"gw\"}]}",
                        TH_ERR_INVAL, "devices[1].deviceScope");
    expect_load_refused(reg,
                        "{\"devices\":[" OK_DEV ",{\"deviceId\":\"x\",\"capabilities\":"
                        "{\"iotedge\":true}}]}",
                        TH_ERR_INVAL, "devices[1].capabilities.iotedge");
    expect_load_refused(reg,
                        "{\"devices\":[" OK_DEV ",{\"deviceId\":\"x\",\"capabilities\":"
                        "{\"iotEdge\":1}}]}",
                        TH_ERR_INVAL, "devices[1].capabilities.iotEdge");
    expect_load_refused(reg,
                        "{\"devices\":[" OK_DEV ",{\"deviceId\":\"x\",\"parentScopes\":"
                        "[\"ms-azure-iot-edge://a-1\",\"ms-azure-iot-edge://b-1\"]}]}",
                        TH_ERR_INVAL, "devices[1].parentScopes");
    expect_load_refused(reg,
                        "{\"devices\":[" OK_DEV ",{\"deviceId\":\"x\",\"modules\":[{\"moduleId\":"
                        "\"m\",\"authentication\":{\"type\":\"none\",\"symmetricKey\":"
                        "{\"primaryKey\":\"" KEY32 "\"}}}]}]}",
                        TH_ERR_INVAL, "devices[1].modules[0].authentication");
}

/* th_identity_query_doc decides every "$"-free condition as the full twin does, and frees
 * nothing of the twin. */
static void test_th_identity_query_doc_same_matches_succeeds(void **state)
{
    struct th_registry *reg = *state;
    struct th_identity *dev = NULL;
    struct th_error err = {0};
    assert_int_equal(th_registry_add_device(reg, "qd1", NULL, NULL, true, NOW, &dev, &err), TH_OK);
    cJSON *w = cJSON_Parse("{\"tags\":{\"site\":\"lab\",\"n\":3},\"properties\":{\"desired\":"
                           "{\"fw\":\"2.0\",\"cfg\":{\"a\":1}}}}");
    struct th_twin_write req = {.mode = TH_TWIN_WRITE_PATCH, .doc = w};
    struct th_twin_write_result res;
    assert_int_equal(th_twin_service_write(dev->twin, &req, NOW, &res, &err), TH_OK);
    th_twin_write_result_free(&res);
    cJSON_Delete(w);
    cJSON *rp = cJSON_Parse("{\"temp\":21.5,\"ok\":true}");
    assert_int_equal(th_twin_patch_reported(dev->twin, rp, NOW, &err), TH_OK);
    cJSON_Delete(rp);
    dev->configurations = cJSON_Parse("{\"c1\":{\"status\":\"Applied\"}}");
    assert_non_null(dev->configurations);
    static const char *const conds[] = {
        "configurations.[[c1]].status = 'Applied'",
        "configurations.[[c1]].status = 'Targeted'",
        "IS_DEFINED(configurations.[[c2]])",
        "tags.site = 'lab'",
        "tags.n > 2",
        "tags.n < 2",
        "properties.desired.fw = '2.0'",
        "properties.desired.cfg.a = 1",
        "properties.reported.temp > 20",
        "status = 'enabled'",
        "deviceId = 'qd1'",
        "IS_OBJECT(properties.desired.cfg)",
        "IS_DEFINED(tags.nope)",
        "connectionState = 'Disconnected' AND version >= 1",
        "NOT (tags.site = 'lab')",
    };
    cJSON *full = th_identity_twin_json(dev);
    for (size_t i = 0; i < sizeof conds / sizeof conds[0]; i++) {
        char text[256];
        snprintf(text, sizeof text, "SELECT * FROM devices WHERE %s", conds[i]);
        struct th_query *q = NULL;
        assert_int_equal(th_query_parse(text, strlen(text), &q, &err), TH_OK);
        cJSON *qd = th_identity_query_doc(dev);
        bool a = false, b = false;
        assert_int_equal(th_query_matches(q, full, &a), TH_OK);
        assert_int_equal(th_query_matches(q, qd, &b), TH_OK);
        if (a != b)
            fail_msg("%s: full twin %d, query doc %d", conds[i], a, b);
        cJSON_Delete(qd); /* must leave the twin's own sections alone */
        th_query_free(q);
    }
    cJSON *again = th_identity_twin_json(dev);
    assert_true(cJSON_Compare(full, again, true));
    cJSON_Delete(again);
    cJSON_Delete(full);
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
        TEST(test_th_ident_req_from_json_device_fields_succeeds),
        TEST(test_th_ident_req_from_json_bad_members_fails),
        TEST(test_th_registry_create_edge_device_scope_succeeds),
        TEST(test_th_registry_create_children_of_edge_device_succeeds),
        TEST(test_th_registry_create_unknown_parent_fails),
        TEST(test_th_registry_create_module_without_keys_succeeds),
        TEST(test_th_identity_apply_none_to_sas_succeeds),
        TEST(test_th_identity_apply_edge_transitions_keep_parent_succeeds),
        TEST(test_th_identity_apply_own_parent_fails),
        TEST(test_th_identity_apply_identity_as_read_keeps_keys_succeeds),
        TEST(test_th_identity_apply_different_keys_changed_succeeds),
        TEST(test_th_identity_apply_none_with_current_keys_succeeds),
        TEST(test_th_identity_apply_refused_keys_unchanged_fails),
        TEST(test_th_identity_twin_json_query_iot_edge_succeeds),
        TEST(test_th_registry_load_edge_hierarchy_succeeds),
        TEST(test_th_registry_load_bad_edge_fields_fails),
        TEST(test_th_identity_query_doc_same_matches_succeeds),
    };
    return cmocka_run_group_tests_name("registry", tests, NULL, NULL);
}
