/*
 * it_bulk.c - the bulk security-module command against the real broker + plugin:
 * `ensureModule` with moduleId `azureiotsecurity` and the default security-agent
 * configuration of fixtures/azureiotsecurity-default.json (the job of the
 * Azure-IoT-Security batch script, security-module-twin.md section 9), plus
 * `devicesWithoutModule` and the module query the script runs.
 *
 * The registry (registry-bulk.json) has devices whose `azureiotsecurity`
 * module already exists with a custom configuration, one whose module has no
 * configuration at all, one with an unrelated module, a disabled device and
 * plain devices. The tests prove that existing modules are never touched
 * (twin, versions, etag, keys byte for byte), that the missing ones are
 * created with exactly the fixture's content, that the counts and lists are
 * right, that a second run changes nothing, and that a refused run creates
 * nothing. Expected sets are computed from the registry as the hub reports it
 * before the run, not from the answer being checked.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <mosquitto.h>

#include "harness.h"

#define SEC_MODULE "azureiotsecurity"
#define SEC_OBJECT "ms_iotn:urn_azureiot_Security_SecurityAgentConfiguration"
#define BULK02_SEC_KEY "aXQtYnVsay1idWxrMDItc2VjdXJpdHkta2V5LTAwMSE="

static struct it_hub hub;
static cJSON *fixture;     /* fixtures/azureiotsecurity-default.json */
static char *fixture_text; /* the same, unformatted, for command texts */

static int group_setup(void **state)
{
    (void)state;
    const char *fx = getenv("IT_FIXTURES_DIR"), *src = getenv("IT_SOURCE_DIR");
    if (!fx || !src) {
        fprintf(stderr, "# IT_FIXTURES_DIR and IT_SOURCE_DIR must be set (meson sets them)\n");
        return -1;
    }
    char path[IT_PATH_MAX];
    snprintf(path, sizeof path, "%s/azureiotsecurity-default.json", fx);
    fixture = it_read_json(path);
    if (!fixture)
        return -1;
    fixture_text = cJSON_PrintUnformatted(fixture);
    snprintf(path, sizeof path, "%s/registry-bulk.json", src);
    return it_hub_start_with(&hub, path, NULL);
}

static int group_teardown(void **state)
{
    (void)state;
    cJSON_Delete(fixture);
    free(fixture_text);
    return it_hub_stop(&hub);
}

/* ---- helpers ---- */

static bool pred_any(const cJSON *record, void *arg)
{
    (void)record;
    (void)arg;
    return true;
}

/* True when the JSON array holds the string s. */
static bool has_string(const cJSON *arr, const char *s)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, arr)
    {
        if (cJSON_IsString(e) && strcmp(e->valuestring, s) == 0)
            return true;
    }
    return false;
}

/* Two arrays of strings hold the same strings, each once. */
static bool same_string_set(const cJSON *a, const cJSON *b)
{
    if (!cJSON_IsArray(a) || !cJSON_IsArray(b) || cJSON_GetArraySize(a) != cJSON_GetArraySize(b))
        return false;
    const cJSON *e;
    cJSON_ArrayForEach(e, a)
    {
        if (!cJSON_IsString(e) || !has_string(b, e->valuestring))
            return false;
        int n = 0;
        const cJSON *f;
        cJSON_ArrayForEach(f, a)
        {
            if (cJSON_IsString(f) && strcmp(f->valuestring, e->valuestring) == 0)
                n++;
        }
        if (n != 1)
            return false;
    }
    return true;
}

static void print_json(const char *label, const cJSON *j)
{
    char *t = cJSON_PrintUnformatted(j);
    fprintf(stderr, "# %s: %s\n", label, t ? t : "?");
    free(t);
}

static void assert_same_set(const cJSON *got, const cJSON *want, const char *what)
{
    if (!same_string_set(got, want)) {
        fprintf(stderr, "# %s differs\n", what);
        print_json("got", got);
        print_json("expected", want);
    }
    assert_true(same_string_set(got, want));
}

static void assert_json_equal(const cJSON *got, const cJSON *want, const char *what)
{
    if (!cJSON_Compare(got, want, 1)) {
        fprintf(stderr, "# %s differs\n", what);
        print_json("got", got);
        print_json("expected", want);
    }
    assert_true(cJSON_Compare(got, want, 1));
}

/* A twin section without the hub's $metadata and $version (caller frees). */
static cJSON *section_values(const cJSON *twin, const char *path)
{
    const cJSON *s = it_json_get(twin, path);
    assert_true(cJSON_IsObject(s));
    cJSON *copy = cJSON_Duplicate(s, 1);
    cJSON_DeleteItemFromObjectCaseSensitive(copy, "$metadata");
    cJSON_DeleteItemFromObjectCaseSensitive(copy, "$version");
    return copy;
}

/* Every device id of the registry, as a JSON array of strings. */
static cJSON *all_device_ids(struct it_client *svc)
{
    cJSON *list = it_control_ok(svc, "{\"command\":\"listDevices\"}");
    cJSON *ids = cJSON_CreateArray();
    const cJSON *d;
    cJSON_ArrayForEach(d, list)
    {
        cJSON_AddItemToArray(ids, cJSON_CreateString(it_json_str(d, "deviceId")));
    }
    cJSON_Delete(list);
    return ids;
}

/* Does device have module m? Asked with getDevice (200 or 404010), not with the command under test.
 */
static bool has_module(struct it_client *svc, const char *device, const char *m)
{
    cJSON *e = it_control(svc, IT_WAIT_MS,
                          "{\"command\":\"getDevice\",\"deviceId\":\"%s\",\"moduleId\":\"%s\"}",
                          device, m);
    assert_non_null(e);
    bool found = cJSON_GetObjectItemCaseSensitive(e, "data") != NULL;
    if (!found)
        assert_int_equal((int)it_json_num(e, "errorCode", -1), 404010);
    cJSON_Delete(e);
    return found;
}

/* Splits ids into those with and without module m (two new arrays). */
static void split_by_module(struct it_client *svc, const cJSON *ids, const char *m, cJSON **with,
                            cJSON **without)
{
    *with = cJSON_CreateArray();
    *without = cJSON_CreateArray();
    const cJSON *id;
    cJSON_ArrayForEach(id, ids)
    {
        cJSON_AddItemToArray(has_module(svc, id->valuestring, m) ? *with : *without,
                             cJSON_CreateString(id->valuestring));
    }
}

/* Twin and identity of module m of each device in ids: {"<id>": {"twin":..,"identity":..}}. */
static cJSON *snapshot(struct it_client *svc, const cJSON *ids, const char *m)
{
    cJSON *snap = cJSON_CreateObject();
    const cJSON *id;
    cJSON_ArrayForEach(id, ids)
    {
        cJSON *one = cJSON_CreateObject();
        cJSON_AddItemToObject(
            one, "twin",
            it_control_ok(svc, "{\"command\":\"getTwin\",\"deviceId\":\"%s\",\"moduleId\":\"%s\"}",
                          id->valuestring, m));
        cJSON_AddItemToObject(
            one, "identity",
            it_control_ok(svc,
                          "{\"command\":\"getDevice\",\"deviceId\":\"%s\",\"moduleId\":\"%s\"}",
                          id->valuestring, m));
        cJSON_AddItemToObject(snap, id->valuestring, one);
    }
    return snap;
}

/* Runs a query and follows its continuation to the end; returns all items (caller frees). */
static cJSON *query_all(struct it_client *svc, const char *query, int page_size)
{
    cJSON *all = cJSON_CreateArray();
    char *cont = NULL;
    for (int pages = 0; pages < 1000; pages++) {
        cJSON *q = cJSON_CreateObject();
        cJSON_AddStringToObject(q, "command", "query");
        cJSON_AddStringToObject(q, "query", query);
        cJSON_AddNumberToObject(q, "pageSize", page_size);
        if (cont)
            cJSON_AddStringToObject(q, "continuation", cont);
        char *text = cJSON_PrintUnformatted(q);
        cJSON_Delete(q);
        cJSON *data = it_control_ok(svc, "%s", text);
        free(text);
        cJSON *items = cJSON_GetObjectItemCaseSensitive(data, "items");
        assert_true(cJSON_IsArray(items));
        assert_true(cJSON_GetArraySize(items) <= page_size);
        cJSON *it;
        while ((it = cJSON_DetachItemFromArray(items, 0)) != NULL)
            cJSON_AddItemToArray(all, it);
        free(cont);
        cont = NULL;
        const char *c = it_json_str(data, "continuation");
        if (c)
            cont = strdup(c);
        else
            assert_true(cJSON_IsNull(it_json_get(data, "continuation")));
        cJSON_Delete(data);
        if (!cont)
            return all;
    }
    fail_msg("query '%s' did not end within 1000 pages", query);
    return NULL;
}

/* The deviceId of each item of a query result. */
static cJSON *item_device_ids(const cJSON *items)
{
    cJSON *ids = cJSON_CreateArray();
    const cJSON *it;
    cJSON_ArrayForEach(it, items)
    {
        const char *d = it_json_str(it, "deviceId");
        assert_non_null(d);
        cJSON_AddItemToArray(ids, cJSON_CreateString(d));
    }
    return ids;
}

/* Depth of nesting below v (a scalar is 0, {"a":1} is 1). */
static int depth_of(const cJSON *v)
{
    int d = 0;
    const cJSON *c;
    if (!cJSON_IsObject(v) && !cJSON_IsArray(v))
        return 0;
    cJSON_ArrayForEach(c, v)
    {
        int cd = depth_of(c);
        if (cd > d)
            d = cd;
    }
    return d + 1;
}

static bool names_valid(const cJSON *v)
{
    const cJSON *c;
    if (!cJSON_IsObject(v))
        return true;
    cJSON_ArrayForEach(c, v)
    {
        if (strpbrk(c->string, ".$ ") || !names_valid(c))
            return false;
    }
    return true;
}

/* ---- tests ---- */

static void test_bulk_fixture_is_default_configuration_succeeds(void **state)
{
    (void)state;
    /* one member: the configuration object, each of its 25 settings {"value": ...} */
    assert_int_equal(cJSON_GetArraySize(fixture), 1);
    const cJSON *cfg = cJSON_GetObjectItemCaseSensitive(fixture, SEC_OBJECT);
    assert_true(cJSON_IsObject(cfg));
    assert_int_equal(cJSON_GetArraySize(cfg), 25);
    const cJSON *k;
    cJSON_ArrayForEach(k, cfg)
    {
        assert_true(cJSON_IsObject(k));
        assert_int_equal(cJSON_GetArraySize(k), 1);
        assert_non_null(cJSON_GetObjectItemCaseSensitive(k, "value"));
    }
    static const struct {
        const char *key, *text;
        double num;
    } defaults[] = {
        {"highPriorityMessageFrequency", "PT7M", 0},
        {"lowPriorityMessageFrequency", "PT5H", 0},
        {"snapshotFrequency", "PT13H", 0},
        {"maxLocalCacheSizeInBytes", NULL, 2560000},
        {"maxMessageSizeInBytes", NULL, 204800},
        {"eventPriorityListeningPorts", "High", 0},
        {"eventPriorityLocalUsers", "High", 0},
        {"eventPriorityLogin", "High", 0},
        {"eventPriorityProcessCreate", "Low", 0},
        {"eventPriorityDiagnostic", "Low", 0},
        {"aggregationIntervalConnectionCreate", "PT1H", 0},
    };
    for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++) {
        char path[160];
        snprintf(path, sizeof path, "%s.value", defaults[i].key);
        const cJSON *v = it_json_get(cfg, path);
        assert_non_null(v);
        if (defaults[i].text)
            assert_string_equal(cJSON_GetStringValue(v), defaults[i].text);
        else
            assert_true(cJSON_IsNumber(v) && v->valuedouble == defaults[i].num);
    }
    assert_true(cJSON_IsTrue(it_json_get(cfg, "aggregationEnabledProcessCreate.value")));
    /* the twin rules: no '.', '$' or ' ' in names, at most 10 levels */
    assert_true(names_valid(fixture));
    assert_true(depth_of(fixture) <= 10);
}

static void test_bulk_ensure_module_invalid_request_creates_nothing_fails(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    cJSON *ids = all_device_ids(svc);
    cJSON *with, *without;
    split_by_module(svc, ids, SEC_MODULE, &with, &without);
    cJSON *stats0 = it_control_ok(svc, "{\"command\":\"getStatistics\"}");

    const char *bad_desired[] = {
        "{\"a.b\":1}",
        "{\"" SEC_OBJECT "\":{\"$value\":1}}",
        /* an 11th nested object */
        "{\"l1\":{\"l2\":{\"l3\":{\"l4\":{\"l5\":{\"l6\":{\"l7\":{\"l8\":{\"l9\":{\"l10\":"
        "{\"l11\":{}}}}}}}}}}}}",
        "[1]",
        "\"PT7M\"",
    };
    for (size_t i = 0; i < sizeof bad_desired / sizeof bad_desired[0]; i++) {
        cJSON *e = it_control_err(svc, 400, 400004,
                                  "{\"command\":\"ensureModule\",\"moduleId\":\"" SEC_MODULE
                                  "\",\"desired\":%s}",
                                  bad_desired[i]);
        cJSON_Delete(e);
    }
    cJSON *e = it_control_err(svc, 400, 400004,
                              "{\"command\":\"ensureModule\",\"moduleId\":\"" SEC_MODULE
                              "\",\"desired\":%s,\"tags\":{\"bad key\":1}}",
                              fixture_text);
    cJSON_Delete(e);
    e = it_control_err(svc, 400, 400004,
                       "{\"command\":\"ensureModule\",\"moduleId\":\"bad id\",\"desired\":%s}",
                       fixture_text);
    cJSON_Delete(e);
    e = it_control_err(svc, 400, 400004, "{\"command\":\"ensureModule\",\"desired\":%s}",
                       fixture_text);
    cJSON_Delete(e);
    /* an unknown device in deviceIds: nothing created, not even for the known ones before it */
    e = it_control_err(svc, 404, 404001,
                       "{\"command\":\"ensureModule\",\"moduleId\":\"" SEC_MODULE
                       "\",\"desired\":%s,\"deviceIds\":[\"bulk-01\",\"bulk-nope\"]}",
                       fixture_text);
    cJSON_Delete(e);

    /* nothing was created anywhere */
    cJSON *stats1 = it_control_ok(svc, "{\"command\":\"getStatistics\"}");
    assert_int_equal((int)it_json_num(stats1, "totalModuleCount", -1),
                     (int)it_json_num(stats0, "totalModuleCount", -2));
    cJSON *with1, *without1;
    split_by_module(svc, ids, SEC_MODULE, &with1, &without1);
    assert_same_set(with1, with, "devices with the module");
    assert_false(has_module(svc, "bulk-01", SEC_MODULE));
    assert_false(has_module(svc, "bulk-01", "bad id"));
    cJSON *dw = it_control_ok(
        svc, "{\"command\":\"devicesWithoutModule\",\"moduleId\":\"" SEC_MODULE "\"}");
    assert_same_set(it_json_get(dw, "deviceIds"), without, "devicesWithoutModule");
    cJSON_Delete(dw);
    cJSON_Delete(stats0);
    cJSON_Delete(stats1);
    cJSON_Delete(with);
    cJSON_Delete(without);
    cJSON_Delete(with1);
    cJSON_Delete(without1);
    cJSON_Delete(ids);
    it_client_close(svc);
}

static void test_bulk_ensure_module_creates_only_missing_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, true);
    cJSON *ids = all_device_ids(svc);
    int n = cJSON_GetArraySize(ids);
    cJSON *with, *without;
    split_by_module(svc, ids, SEC_MODULE, &with, &without);
    /* the registry file gives these three the module; the rest (dev-device too) lack it */
    cJSON *expect_with = cJSON_Parse("[\"bulk-02\",\"bulk-04\",\"bulk-06\"]");
    assert_same_set(with, expect_with, "devices that have " SEC_MODULE " before the run");
    cJSON_Delete(expect_with);
    assert_true(has_string(without, "bulk-05")); /* disabled devices are devices too */
    assert_true(has_string(without, "bulk.08:dotted"));
    assert_true(has_string(without, "bulk-03")); /* another module is not this one */
    int nwith = cJSON_GetArraySize(with), nwithout = cJSON_GetArraySize(without);

    /* devicesWithoutModule and the module query agree with what getDevice said */
    cJSON *dw = it_control_ok(
        svc, "{\"command\":\"devicesWithoutModule\",\"moduleId\":\"" SEC_MODULE "\"}");
    assert_int_equal((int)it_json_num(dw, "count", -1), nwithout);
    assert_same_set(it_json_get(dw, "deviceIds"), without, "devicesWithoutModule before");
    cJSON_Delete(dw);
    cJSON *items =
        query_all(svc, "SELECT * FROM devices.modules WHERE moduleId = '" SEC_MODULE "'", 2);
    cJSON *qids = item_device_ids(items);
    assert_same_set(qids, with, "module query before");
    cJSON_Delete(qids);
    cJSON_Delete(items);

    cJSON *before = snapshot(svc, with, SEC_MODULE);
    cJSON *stats0 = it_control_ok(svc, "{\"command\":\"getStatistics\"}");

    cJSON *r = it_control_ok(svc,
                             "{\"command\":\"ensureModule\",\"moduleId\":\"" SEC_MODULE "\","
                             "\"desired\":%s,\"tags\":{\"securityGroup\":\"default\"}}",
                             fixture_text);
    assert_string_equal(it_json_str(r, "moduleId"), SEC_MODULE);
    assert_int_equal((int)it_json_num(r, "created", -1), nwithout);
    assert_int_equal((int)it_json_num(r, "skipped", -1), nwith);
    assert_same_set(it_json_get(r, "createdDevices"), without, "createdDevices");
    assert_same_set(it_json_get(r, "skippedDevices"), with, "skippedDevices");
    cJSON_Delete(r);

    /* one moduleCreated event per created module */
    const cJSON *id;
    cJSON_ArrayForEach(id, without)
    {
        cJSON *ev = it_event_wait(svc, "moduleCreated", id->valuestring, SEC_MODULE, pred_any, NULL,
                                  IT_WAIT_MS);
        assert_non_null(ev);
        cJSON_Delete(ev);
    }
    cJSON *stats1 = it_control_ok(svc, "{\"command\":\"getStatistics\"}");
    assert_int_equal((int)it_json_num(stats1, "totalModuleCount", -1),
                     (int)it_json_num(stats0, "totalModuleCount", -2) + nwithout);
    assert_int_equal((int)it_json_num(stats1, "totalDeviceCount", -1), n);

    /* existing modules untouched: twin (values, $version, $metadata, etag) and identity (keys,
     * etag) */
    cJSON *after = snapshot(svc, with, SEC_MODULE);
    cJSON_ArrayForEach(id, with)
    {
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(before, id->valuestring);
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(after, id->valuestring);
        assert_json_equal(it_json_get(a, "twin"), it_json_get(b, "twin"), id->valuestring);
        assert_json_equal(it_json_get(a, "identity"), it_json_get(b, "identity"), id->valuestring);
    }
    /* spot check against the registry file itself */
    const cJSON *b02 = it_json_get(cJSON_GetObjectItemCaseSensitive(after, "bulk-02"), "twin");
    assert_string_equal(
        it_json_str(b02, "properties.desired." SEC_OBJECT ".highPriorityMessageFrequency.value"),
        "PT1M");
    assert_null(it_json_get(b02, "properties.desired." SEC_OBJECT ".lowPriorityMessageFrequency"));
    assert_string_equal(it_json_str(b02, "tags.securityGroup"), "custom-lab");
    assert_true(it_json_num(b02, "properties.desired.$version", -1) == 2);
    const cJSON *b02id =
        it_json_get(cJSON_GetObjectItemCaseSensitive(after, "bulk-02"), "identity");
    assert_string_equal(it_json_str(b02id, "authentication.symmetricKey.primaryKey"),
                        BULK02_SEC_KEY);
    const cJSON *b06 = it_json_get(cJSON_GetObjectItemCaseSensitive(after, "bulk-06"), "twin");
    assert_null(it_json_get(b06, "properties.desired." SEC_OBJECT));
    assert_null(it_json_get(b06, "tags.securityGroup"));

    /* the created ones hold exactly the fixture, the tags given, nothing reported */
    cJSON *tags_want = cJSON_Parse("{\"securityGroup\":\"default\"}");
    cJSON *empty = cJSON_CreateObject();
    cJSON_ArrayForEach(id, without)
    {
        cJSON *t = it_control_ok(
            svc, "{\"command\":\"getTwin\",\"deviceId\":\"%s\",\"moduleId\":\"" SEC_MODULE "\"}",
            id->valuestring);
        assert_string_equal(it_json_str(t, "deviceId"), id->valuestring);
        assert_string_equal(it_json_str(t, "moduleId"), SEC_MODULE);
        cJSON *desired = section_values(t, "properties.desired");
        assert_json_equal(desired, fixture, id->valuestring);
        cJSON_Delete(desired);
        cJSON *reported = section_values(t, "properties.reported");
        assert_json_equal(reported, empty, id->valuestring);
        cJSON_Delete(reported);
        assert_json_equal(it_json_get(t, "tags"), tags_want, id->valuestring);
        cJSON_Delete(t);
        cJSON *ident = it_control_ok(
            svc, "{\"command\":\"getDevice\",\"deviceId\":\"%s\",\"moduleId\":\"" SEC_MODULE "\"}",
            id->valuestring);
        assert_non_null(it_json_str(ident, "authentication.symmetricKey.primaryKey"));
        assert_true(strlen(it_json_str(ident, "authentication.symmetricKey.primaryKey")) == 44);
        assert_true(strlen(it_json_str(ident, "authentication.symmetricKey.secondaryKey")) == 44);
        cJSON_Delete(ident);
    }
    cJSON_Delete(tags_want);
    cJSON_Delete(empty);

    /* nothing is left without the module */
    dw = it_control_ok(svc,
                       "{\"command\":\"devicesWithoutModule\",\"moduleId\":\"" SEC_MODULE "\"}");
    assert_int_equal((int)it_json_num(dw, "count", -1), 0);
    assert_int_equal(cJSON_GetArraySize(it_json_get(dw, "deviceIds")), 0);
    cJSON_Delete(dw);
    /* the module query now finds every device, over several pages */
    items = query_all(svc, "SELECT * FROM devices.modules WHERE moduleId = '" SEC_MODULE "'", 3);
    qids = item_device_ids(items);
    assert_same_set(qids, ids, "module query after");
    cJSON_Delete(qids);
    cJSON_Delete(items);
    /* the batch script's own query: modules that carry the configuration object (not bulk-06) */
    items = query_all(svc,
                      "SELECT deviceId FROM devices.modules WHERE moduleId = '" SEC_MODULE
                      "' and IS_DEFINED(properties.desired.[[" SEC_OBJECT "]])",
                      4);
    qids = item_device_ids(items);
    cJSON *want = cJSON_Duplicate(ids, 1);
    for (int i = cJSON_GetArraySize(want) - 1; i >= 0; i--) {
        if (strcmp(cJSON_GetArrayItem(want, i)->valuestring, "bulk-06") == 0)
            cJSON_DeleteItemFromArray(want, i);
    }
    assert_same_set(qids, want, "devices whose module has the configuration object");
    cJSON_Delete(want);
    cJSON_Delete(qids);
    cJSON_Delete(items);
    items = query_all(
        svc, "SELECT COUNT() AS n FROM devices.modules WHERE moduleId = '" SEC_MODULE "'", 10);
    assert_int_equal(cJSON_GetArraySize(items), 1);
    assert_int_equal((int)it_json_num(cJSON_GetArrayItem(items, 0), "n", -1), n);
    cJSON_Delete(items);

    cJSON_Delete(before);
    cJSON_Delete(after);
    cJSON_Delete(stats0);
    cJSON_Delete(stats1);
    cJSON_Delete(with);
    cJSON_Delete(without);
    cJSON_Delete(ids);
    it_client_close(svc);
}

static void test_bulk_ensure_module_second_run_creates_nothing_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    cJSON *ids = all_device_ids(svc);
    cJSON *before = snapshot(svc, ids, SEC_MODULE);
    cJSON *stats0 = it_control_ok(svc, "{\"command\":\"getStatistics\"}");
    cJSON *r = it_control_ok(svc,
                             "{\"command\":\"ensureModule\",\"moduleId\":\"" SEC_MODULE "\","
                             "\"desired\":%s,\"tags\":{\"securityGroup\":\"default\"}}",
                             fixture_text);
    assert_int_equal((int)it_json_num(r, "created", -1), 0);
    assert_int_equal((int)it_json_num(r, "skipped", -1), cJSON_GetArraySize(ids));
    assert_int_equal(cJSON_GetArraySize(it_json_get(r, "createdDevices")), 0);
    assert_same_set(it_json_get(r, "skippedDevices"), ids, "skippedDevices");
    cJSON_Delete(r);
    cJSON *after = snapshot(svc, ids, SEC_MODULE);
    assert_json_equal(after, before, "module twins and identities after the second run");
    cJSON *stats1 = it_control_ok(svc, "{\"command\":\"getStatistics\"}");
    assert_json_equal(stats1, stats0, "statistics");
    cJSON_Delete(stats0);
    cJSON_Delete(stats1);
    cJSON_Delete(before);
    cJSON_Delete(after);
    cJSON_Delete(ids);
    it_client_close(svc);
}

static void test_bulk_created_module_connects_and_gets_desired_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, true);
    cJSON *ident = it_control_ok(svc, "{\"command\":\"getDevice\",\"deviceId\":\"bulk-01\","
                                      "\"moduleId\":\"" SEC_MODULE "\"}");
    char *pk = strdup(it_json_str(ident, "authentication.symmetricKey.primaryKey"));
    char *sk = strdup(it_json_str(ident, "authentication.symmetricKey.secondaryKey"));
    cJSON_Delete(ident);

    struct it_client *m = it_device_open(&hub, "bulk-01", SEC_MODULE, pk);
    assert_int_equal(it_client_subscribe(m, "$iothub/twin/res/#", 1, IT_WAIT_MS), 1);
    assert_int_equal(
        it_client_subscribe(m, "$iothub/twin/PATCH/properties/desired/#", 1, IT_WAIT_MS), 1);
    int status;
    struct it_msg *res = it_twin_request(m, "sec-get", NULL, &status);
    assert_non_null(res);
    assert_int_equal(status, 200);
    cJSON *doc = it_msg_json(res);
    it_msg_free(res);
    assert_non_null(doc);
    cJSON *desired = section_values(doc, "desired");
    assert_json_equal(desired, fixture, "desired seen by the module");
    cJSON_Delete(desired);
    int v = (int)it_json_num(doc, "desired.$version", -1);
    assert_true(v >= 1);
    cJSON_Delete(doc);

    /* the agent's usual first steps work: report its configuration, then get a change */
    res = it_twin_request(
        m, "sec-rep",
        "{\"" SEC_OBJECT "\":{\"highPriorityMessageFrequency\":{\"value\":\"PT7M\"}}}", &status);
    assert_non_null(res);
    assert_int_equal(status, 204);
    it_msg_free(res);
    cJSON *t = it_control_ok(
        svc, "{\"command\":\"updateTwin\",\"deviceId\":\"bulk-01\",\"moduleId\":\"" SEC_MODULE
             "\",\"patch\":{\"properties\":{\"desired\":{\"" SEC_OBJECT
             "\":{\"snapshotFrequency\":{\"value\":\"PT1H\"}}}}}}");
    cJSON_Delete(t);
    struct it_msg *p =
        it_client_wait_prefix(m, "$iothub/twin/PATCH/properties/desired/", IT_WAIT_MS);
    assert_non_null(p);
    cJSON *patch = it_msg_json(p);
    it_msg_free(p);
    assert_string_equal(it_json_str(patch, SEC_OBJECT ".snapshotFrequency.value"), "PT1H");
    assert_true(it_json_num(patch, "$version", -1) == v + 1);
    cJSON_Delete(patch);
    it_client_close(m);

    /* the secondary key works too */
    m = it_device_open(&hub, "bulk-01", SEC_MODULE, sk);
    it_client_close(m);

    /* a skipped module still answers with its own custom configuration and its own key */
    m = it_device_open(&hub, "bulk-02", SEC_MODULE, BULK02_SEC_KEY);
    assert_int_equal(it_client_subscribe(m, "$iothub/twin/res/#", 1, IT_WAIT_MS), 1);
    res = it_twin_request(m, "sec-get-02", NULL, &status);
    assert_non_null(res);
    assert_int_equal(status, 200);
    doc = it_msg_json(res);
    it_msg_free(res);
    assert_string_equal(it_json_str(doc, "desired." SEC_OBJECT ".eventPriorityLogin.value"), "Off");
    assert_string_equal(it_json_str(doc, "desired.operatorNote"), "tuned by hand");
    assert_string_equal(it_json_str(doc, "reported.agentVersion"), "0.0.6");
    cJSON_Delete(doc);
    it_client_close(m);
    free(pk);
    free(sk);
    it_client_close(svc);
}

static void test_bulk_ensure_module_new_device_needs_rerun_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    cJSON *d = it_control_ok(svc, "{\"command\":\"createDevice\",\"deviceId\":\"bulk-late\"}");
    cJSON_Delete(d);
    cJSON *dw = it_control_ok(
        svc, "{\"command\":\"devicesWithoutModule\",\"moduleId\":\"" SEC_MODULE "\"}");
    assert_int_equal((int)it_json_num(dw, "count", -1), 1);
    assert_string_equal(cJSON_GetArrayItem(it_json_get(dw, "deviceIds"), 0)->valuestring,
                        "bulk-late");
    cJSON_Delete(dw);
    cJSON *r = it_control_ok(svc,
                             "{\"command\":\"ensureModule\",\"moduleId\":\"" SEC_MODULE "\","
                             "\"desired\":%s}",
                             fixture_text);
    assert_int_equal((int)it_json_num(r, "created", -1), 1);
    cJSON *want = cJSON_Parse("[\"bulk-late\"]");
    assert_same_set(it_json_get(r, "createdDevices"), want, "createdDevices");
    cJSON_Delete(want);
    cJSON_Delete(r);
    cJSON *t = it_control_ok(svc, "{\"command\":\"getTwin\",\"deviceId\":\"bulk-late\","
                                  "\"moduleId\":\"" SEC_MODULE "\"}");
    cJSON *desired = section_values(t, "properties.desired");
    assert_json_equal(desired, fixture, "bulk-late");
    cJSON_Delete(desired);
    /* no tags asked for this time: none given */
    assert_int_equal(cJSON_GetArraySize(it_json_get(t, "tags")), 0);
    cJSON_Delete(t);
    it_client_close(svc);
}

static void test_bulk_ensure_module_device_ids_subset_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, false);
    cJSON *ids = all_device_ids(svc);
    cJSON *r = it_control_ok(svc, "{\"command\":\"ensureModule\",\"moduleId\":\"bulk-subset\","
                                  "\"deviceIds\":[\"bulk-03\",\"bulk-05\"]}");
    cJSON *want = cJSON_Parse("[\"bulk-03\",\"bulk-05\"]");
    assert_int_equal((int)it_json_num(r, "created", -1), 2);
    assert_int_equal((int)it_json_num(r, "skipped", -1), 0);
    assert_same_set(it_json_get(r, "createdDevices"), want, "createdDevices");
    cJSON_Delete(r);
    cJSON *with, *without;
    split_by_module(svc, ids, "bulk-subset", &with, &without);
    assert_same_set(with, want, "devices with bulk-subset");
    cJSON *dw =
        it_control_ok(svc, "{\"command\":\"devicesWithoutModule\",\"moduleId\":\"bulk-subset\"}");
    assert_int_equal((int)it_json_num(dw, "count", -1), cJSON_GetArraySize(ids) - 2);
    assert_same_set(it_json_get(dw, "deviceIds"), without, "devicesWithoutModule bulk-subset");
    cJSON_Delete(dw);
    /* other modules of those devices are unaffected */
    assert_true(has_module(svc, "bulk-03", "other-module"));
    cJSON_Delete(want);
    cJSON_Delete(with);
    cJSON_Delete(without);
    cJSON_Delete(ids);
    it_client_close(svc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bulk_fixture_is_default_configuration_succeeds),
        cmocka_unit_test(test_bulk_ensure_module_invalid_request_creates_nothing_fails),
        cmocka_unit_test(test_bulk_ensure_module_creates_only_missing_succeeds),
        cmocka_unit_test(test_bulk_ensure_module_second_run_creates_nothing_succeeds),
        cmocka_unit_test(test_bulk_created_module_connects_and_gets_desired_succeeds),
        cmocka_unit_test(test_bulk_ensure_module_new_device_needs_rerun_succeeds),
        cmocka_unit_test(test_bulk_ensure_module_device_ids_subset_succeeds),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
