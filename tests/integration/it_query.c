/*
 * it_query.c - the control API's `query` command (docs/query.md) against the
 * real broker + plugin, checked against answers this test computes itself.
 *
 * The hub starts empty (registry-query.json holds only a policy, and the
 * development identities are off). The group setup seeds 20 devices through
 * the control API (createDevice, updateTwin for tags and desired properties,
 * createModule for module twins) and real device connections (reported
 * patches acknowledged with 204), recording every value in a model. Each test
 * runs queries (WHERE with comparisons, arithmetic, AND/OR/NOT, IN/NIN,
 * IS_DEFINED, projections, COUNT/MIN/MAX/SUM/AVG with GROUP BY,
 * devices.modules, TOP, paging) and compares the hub's items with what a C
 * predicate over the model selects. Result order is not defined, so sets are
 * compared. Malformed queries must fail with 400004 and name a column.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <mosquitto.h>

#include "harness.h"

#define NDEV 20

static struct it_hub hub;
static struct it_client *svc;

/* The model: what the setup stored, per device. NULL strings are absent members. */
struct qdev {
    char id[16];
    /* tags */
    const char *site;
    int floor;
    const char *owner;
    const char *rack; /* tags.loc.rack */
    /* desired */
    int interval;
    const char *mode;
    /* reported (sent by the device itself) */
    bool has_reported;
    double temp;
    const char *fw;
    bool ok;
    /* modules */
    bool sensor; /* module "sensor": tags {"slot": i}, desired {"rate": i % 3} */
    int slot, rate;
    bool gateway; /* module "gateway": desired {"rate": 7} */
};
static struct qdev model[NDEV];

static void model_init(void)
{
    static const char *const sites[] = {"lab", "plant", "office"};
    static const char *const fws[] = {"1.0", "1.1", "1.2"};
    for (int i = 0; i < NDEV; i++) {
        struct qdev *d = &model[i];
        snprintf(d->id, sizeof d->id, "q-%02d", i);
        d->site = sites[i % 3];
        d->floor = i % 5;
        d->owner = i % 4 == 0 ? NULL : i % 2 ? "team-a" : "team-b";
        d->rack = i % 2 ? "r1" : "r0";
        d->interval = 10 * (i % 4 + 1);
        d->mode = i % 3 == 1 ? "eco" : "boost";
        d->has_reported = i % 7 != 0;
        d->temp = 15.5 + i;
        d->fw = fws[i % 3];
        d->ok = i % 2 == 0;
        d->sensor = i % 4 == 1;
        d->slot = i;
        d->rate = i % 3;
        d->gateway = i % 5 == 0;
    }
}

static void seed(void)
{
    for (int i = 0; i < NDEV; i++) {
        struct qdev *d = &model[i];
        cJSON *ident =
            it_control_ok(svc, "{\"command\":\"createDevice\",\"deviceId\":\"%s\"}", d->id);
        char *key = strdup(it_json_str(ident, "authentication.symmetricKey.primaryKey"));
        cJSON_Delete(ident);

        char owner[64] = "";
        if (d->owner)
            snprintf(owner, sizeof owner, ",\"owner\":\"%s\"", d->owner);
        cJSON *t =
            it_control_ok(svc,
                          "{\"command\":\"updateTwin\",\"deviceId\":\"%s\",\"patch\":{"
                          "\"tags\":{\"site\":\"%s\",\"floor\":%d%s,\"loc\":{\"rack\":\"%s\"}},"
                          "\"properties\":{\"desired\":{\"interval\":%d,\"mode\":\"%s\"}}}}",
                          d->id, d->site, d->floor, owner, d->rack, d->interval, d->mode);
        cJSON_Delete(t);

        if (d->has_reported) {
            struct it_client *dev = it_device_open(&hub, d->id, NULL, key);
            assert_int_equal(it_client_subscribe(dev, "$iothub/twin/res/#", 1, IT_WAIT_MS), 1);
            char patch[160];
            snprintf(patch, sizeof patch, "{\"temp\":%.1f,\"fw\":\"%s\",\"ok\":%s}", d->temp, d->fw,
                     d->ok ? "true" : "false");
            int status;
            struct it_msg *m = it_twin_request(dev, "seed", patch, &status);
            assert_non_null(m);
            assert_int_equal(status, 204);
            it_msg_free(m);
            it_client_close(dev);
        }
        if (d->sensor) {
            cJSON *m = it_control_ok(svc,
                                     "{\"command\":\"createModule\",\"deviceId\":\"%s\","
                                     "\"moduleId\":\"sensor\",\"tags\":{\"slot\":%d},"
                                     "\"desired\":{\"rate\":%d}}",
                                     d->id, d->slot, d->rate);
            cJSON_Delete(m);
        }
        if (d->gateway) {
            cJSON *m = it_control_ok(svc,
                                     "{\"command\":\"createModule\",\"deviceId\":\"%s\","
                                     "\"moduleId\":\"gateway\",\"desired\":{\"rate\":7}}",
                                     d->id);
            cJSON_Delete(m);
        }
        free(key);
    }
}

static int group_setup(void **state)
{
    (void)state;
    const char *src = getenv("IT_SOURCE_DIR");
    if (!src) {
        fprintf(stderr, "# IT_SOURCE_DIR must be set (meson sets it)\n");
        return -1;
    }
    char reg[IT_PATH_MAX];
    snprintf(reg, sizeof reg, "%s/registry-query.json", src);
    const char *extra[] = {"--no-dev-identities", NULL};
    if (it_hub_start_with(&hub, reg, extra) != 0)
        return -1;
    model_init();
    return 0;
}

/*
 * Seeds the hub on the first call (inside a test, so a failure is reported as
 * that test's); every test starts with it and fails if the seeding failed.
 */
static void seed_once(void)
{
    static bool attempted, done;
    if (!attempted) {
        attempted = true;
        svc = it_service_open(&hub, false);
        seed();
        done = true;
    }
    assert_true(done);
}

static int group_teardown(void **state)
{
    (void)state;
    it_client_close(svc);
    return it_hub_stop(&hub);
}

/* ---- running queries ---- */

/* One page: the command's data (caller frees). cont may be NULL. */
static cJSON *query_page(const char *query, int page_size, const char *cont)
{
    cJSON *q = cJSON_CreateObject();
    cJSON_AddStringToObject(q, "command", "query");
    cJSON_AddStringToObject(q, "query", query);
    if (page_size > 0)
        cJSON_AddNumberToObject(q, "pageSize", page_size);
    if (cont)
        cJSON_AddStringToObject(q, "continuation", cont);
    char *text = cJSON_PrintUnformatted(q);
    cJSON_Delete(q);
    cJSON *data = it_control_ok(svc, "%s", text);
    free(text);
    assert_true(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(data, "items")));
    return data;
}

/*
 * All items of a query, following continuations; *item_type gets the item type
 * (static storage: "twin", "raw" or "?"). Caller frees the array.
 */
static cJSON *query_all(const char *query, int page_size, const char **item_type)
{
    cJSON *all = cJSON_CreateArray();
    char *cont = NULL;
    *item_type = "?";
    for (int pages = 0; pages < 1000; pages++) {
        cJSON *data = query_page(query, page_size, cont);
        const char *type = it_json_str(data, "itemType");
        assert_non_null(type);
        *item_type = strcmp(type, "twin") == 0        ? "twin"
                     : strcmp(type, "raw") == 0       ? "raw"
                     : strcmp(type, "deviceJob") == 0 ? "deviceJob"
                                                      : "?";
        cJSON *items = cJSON_GetObjectItemCaseSensitive(data, "items");
        cJSON *it;
        while ((it = cJSON_DetachItemFromArray(items, 0)) != NULL)
            cJSON_AddItemToArray(all, it);
        free(cont);
        cont = it_json_str(data, "continuation") ? strdup(it_json_str(data, "continuation")) : NULL;
        cJSON_Delete(data);
        if (!cont)
            return all;
    }
    fail_msg("query '%s' did not end within 1000 pages", query);
    return NULL;
}

static const struct qdev *find_dev(const char *id)
{
    for (int i = 0; i < NDEV; i++)
        if (strcmp(model[i].id, id) == 0)
            return &model[i];
    return NULL;
}

typedef bool (*dev_pred)(const struct qdev *d);

static void print_items(const char *query, const cJSON *items)
{
    char *t = cJSON_PrintUnformatted(items);
    fprintf(stderr, "# query: %s\n# items: %s\n", query, t ? t : "?");
    free(t);
}

/*
 * The hub's items are exactly the devices the predicate selects, each once.
 * Items are whole twins (checked against the model's tags) when twin is true.
 */
static void expect_devices(const char *query, dev_pred pred, int page_size)
{
    const char *type;
    cJSON *items = query_all(query, page_size, &type);
    bool seen[NDEV] = {false};
    int want = 0;
    for (int i = 0; i < NDEV; i++)
        want += pred(&model[i]);
    bool ok = cJSON_GetArraySize(items) == want;
    const cJSON *it;
    cJSON_ArrayForEach(it, items)
    {
        const char *id = it_json_str(it, "deviceId");
        const struct qdev *d = id ? find_dev(id) : NULL;
        if (!d || seen[d - model] || !pred(d)) {
            ok = false;
            continue;
        }
        seen[d - model] = true;
        if (strcmp(type, "twin") == 0) {
            /* a whole twin, with what the seed stored */
            if (!it_json_str(it, "tags.site") || strcmp(it_json_str(it, "tags.site"), d->site) ||
                it_json_num(it, "tags.floor", -1) != d->floor ||
                it_json_num(it, "properties.desired.interval", -1) != d->interval ||
                (d->has_reported && it_json_num(it, "properties.reported.temp", -1) != d->temp) ||
                !cJSON_IsNumber(it_json_get(it, "properties.desired.$version")))
                ok = false;
        }
    }
    if (!ok) {
        fprintf(stderr, "# expected %d devices:", want);
        for (int i = 0; i < NDEV; i++)
            if (pred(&model[i]))
                fprintf(stderr, " %s", model[i].id);
        fprintf(stderr, "\n");
        print_items(query, items);
    }
    assert_true(ok);
    cJSON_Delete(items);
}

/* ---- predicates: the WHERE clauses, written in C over the model ---- */

static bool p_lab(const struct qdev *d)
{
    return strcmp(d->site, "lab") == 0;
}
static bool p_floor_2_to_3(const struct qdev *d)
{
    return d->floor >= 2 && d->floor < 4;
}
static bool p_warm_not_plant(const struct qdev *d)
{
    return d->has_reported && d->temp > 25 && strcmp(d->site, "plant") != 0;
}
static bool p_plant_or_eco(const struct qdev *d)
{
    return strcmp(d->site, "plant") == 0 || strcmp(d->mode, "eco") == 0;
}
static bool p_not_office_or_ground(const struct qdev *d)
{
    return !(strcmp(d->site, "office") == 0 || d->floor == 0);
}
static bool p_floor_in_0_3(const struct qdev *d)
{
    return d->floor == 0 || d->floor == 3;
}
static bool p_site_nin_lab_office(const struct qdev *d)
{
    return strcmp(d->site, "lab") != 0 && strcmp(d->site, "office") != 0;
}
static bool p_site_not_lab(const struct qdev *d)
{
    return strcmp(d->site, "lab") != 0;
}
static bool p_has_owner(const struct qdev *d)
{
    return d->owner != NULL;
}
static bool p_no_reported_temp(const struct qdev *d)
{
    return !d->has_reported;
}
static bool p_team_a_and_ok_or_short(const struct qdev *d)
{
    return d->owner && strcmp(d->owner, "team-a") == 0 &&
           ((d->has_reported && d->ok) || d->interval <= 20);
}
static bool p_rack1_not_fw10(const struct qdev *d)
{
    return strcmp(d->rack, "r1") == 0 && d->has_reported && strcmp(d->fw, "1.0") != 0;
}
static bool p_arith(const struct qdev *d)
{
    return d->interval * 2 + d->floor > 50;
}
static bool p_odd_floor(const struct qdev *d)
{
    return d->floor % 2 == 1;
}
static bool p_id_q1(const struct qdev *d)
{
    return strncmp(d->id, "q-1", 3) == 0;
}
static bool p_temp_range(const struct qdev *d)
{
    return d->has_reported && d->temp >= 20.5 && d->temp <= 28.5;
}
/* NOT of an undefined comparison stays undefined: devices without reported temp never match */
static bool p_not_warm(const struct qdev *d)
{
    return d->has_reported && !(d->temp > 20);
}
/* != with an absent owner is undefined too */
static bool p_owner_not_a(const struct qdev *d)
{
    return d->owner && strcmp(d->owner, "team-a") != 0;
}
static bool p_ids_listed(const struct qdev *d)
{
    return strcmp(d->id, "q-03") == 0 || strcmp(d->id, "q-07") == 0;
}
static bool p_ok_true(const struct qdev *d)
{
    return d->has_reported && d->ok;
}
static bool p_all(const struct qdev *d)
{
    (void)d;
    return true;
}

/* ---- tests ---- */

static void test_query_where_comparisons_and_logic_succeeds(void **state)
{
    (void)state;
    seed_once();
    static const struct {
        const char *where;
        dev_pred pred;
    } cases[] = {
        {"tags.site = 'lab'", p_lab},
        {"Tags.Site = 'lab'", p_lab}, /* attribute names match case-insensitively */
        {"tags.floor >= 2 AND tags.floor < 4", p_floor_2_to_3},
        {"properties.reported.temp > 25 AND tags.site != 'plant'", p_warm_not_plant},
        {"tags.site = 'plant' OR properties.desired.mode = 'eco'", p_plant_or_eco},
        {"NOT (tags.site = 'office' OR tags.floor = 0)", p_not_office_or_ground},
        {"tags.owner = 'team-a' AND (properties.reported.ok = true OR "
         "properties.desired.interval <= 20)",
         p_team_a_and_ok_or_short},
        {"tags.loc.rack = 'r1' AND properties.reported.fw <> '1.0'", p_rack1_not_fw10},
        {"properties.desired.interval * 2 + tags.floor > 50", p_arith},
        {"tags.floor % 2 = 1", p_odd_floor},
        {"properties.reported.temp >= 20.5 AND properties.reported.temp <= 28.5", p_temp_range},
        {"NOT (properties.reported.temp > 20)", p_not_warm},
        {"tags.owner != 'team-a'", p_owner_not_a},
        {"properties.reported.ok = true", p_ok_true},
        {"STARTSWITH(deviceId, 'q-1')", p_id_q1},
        {"tags.site = 'nowhere' OR deviceId = deviceId", p_all},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *q = it_strdupf("SELECT * FROM devices WHERE %s", cases[i].where);
        expect_devices(q, cases[i].pred, 100);
        free(q);
    }
}

static void test_query_in_nin_is_defined_succeeds(void **state)
{
    (void)state;
    seed_once();
    static const struct {
        const char *where;
        dev_pred pred;
    } cases[] = {
        {"tags.floor IN [0, 3]", p_floor_in_0_3},
        {"tags.site NIN ['lab', 'office']", p_site_nin_lab_office},
        {"tags.site NOT IN ['lab']", p_site_not_lab},
        {"deviceId IN ['q-03', 'q-07', 'q-99']", p_ids_listed},
        {"IS_DEFINED(tags.owner)", p_has_owner},
        {"NOT IS_DEFINED(properties.reported.temp)", p_no_reported_temp},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *q = it_strdupf("SELECT * FROM devices WHERE %s", cases[i].where);
        expect_devices(q, cases[i].pred, 100);
        free(q);
    }
}

static void test_query_projection_succeeds(void **state)
{
    (void)state;
    seed_once();
    const char *q = "SELECT deviceId, tags.site, properties.reported.temp AS t, tags.loc "
                    "FROM devices WHERE tags.floor = 1";
    const char *type;
    cJSON *items = query_all(q, 100, &type);
    assert_string_equal(type, "raw");
    /* what each item must be, built from the model */
    cJSON *want = cJSON_CreateArray();
    for (int i = 0; i < NDEV; i++) {
        const struct qdev *d = &model[i];
        if (d->floor != 1)
            continue;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "deviceId", d->id);
        cJSON_AddStringToObject(o, "site", d->site);
        if (d->has_reported)
            cJSON_AddNumberToObject(o, "t", d->temp);
        cJSON *loc = cJSON_AddObjectToObject(o, "loc");
        cJSON_AddStringToObject(loc, "rack", d->rack);
        cJSON_AddItemToArray(want, o);
    }
    bool ok = cJSON_GetArraySize(items) == cJSON_GetArraySize(want);
    const cJSON *w;
    cJSON_ArrayForEach(w, want)
    {
        int matches = 0;
        const cJSON *it;
        cJSON_ArrayForEach(it, items)
        {
            matches += cJSON_Compare(it, w, 1);
        }
        if (matches != 1)
            ok = false;
    }
    if (!ok) {
        print_items(q, items);
        print_items("(expected)", want);
    }
    assert_true(ok);
    cJSON_Delete(items);
    cJSON_Delete(want);

    /* an absent attribute is left out of the item; all absent gives {} */
    items = query_all("SELECT tags.owner FROM devices WHERE tags.floor = 0", 100, &type);
    int n = 0, empty = 0;
    cJSON_ArrayForEach(w, items)
    {
        if (cJSON_GetArraySize(w) == 0)
            empty++;
        n++;
    }
    int want_n = 0, want_empty = 0;
    for (int i = 0; i < NDEV; i++) {
        if (model[i].floor == 0) {
            want_n++;
            want_empty += model[i].owner == NULL;
        }
    }
    assert_int_equal(n, want_n);
    assert_int_equal(empty, want_empty);
    cJSON_Delete(items);
}

static void test_query_count_and_group_by_succeeds(void **state)
{
    (void)state;
    seed_once();
    const char *type;
    cJSON *items = query_all("SELECT COUNT() AS n FROM devices", 100, &type);
    assert_int_equal(cJSON_GetArraySize(items), 1);
    assert_int_equal((int)it_json_num(cJSON_GetArrayItem(items, 0), "n", -1), NDEV);
    cJSON_Delete(items);

    int labs = 0;
    for (int i = 0; i < NDEV; i++)
        labs += p_lab(&model[i]);
    items = query_all("SELECT COUNT() FROM devices WHERE tags.site = 'lab'", 100, &type);
    assert_int_equal(cJSON_GetArraySize(items), 1);
    assert_int_equal((int)it_json_num(cJSON_GetArrayItem(items, 0), "$1", -1), labs);
    cJSON_Delete(items);

    /* per site: count, floors, sum and average of reported temperatures */
    items =
        query_all("SELECT tags.site, COUNT() AS n, MIN(tags.floor) AS lo, MAX(tags.floor) AS hi, "
                  "SUM(properties.reported.temp) AS total, AVG(properties.reported.temp) AS mean "
                  "FROM devices GROUP BY tags.site",
                  100, &type);
    static const char *const sites[] = {"lab", "plant", "office"};
    assert_int_equal(cJSON_GetArraySize(items), 3);
    for (int s = 0; s < 3; s++) {
        int n = 0, lo = 1000, hi = -1, nrep = 0;
        double total = 0;
        for (int i = 0; i < NDEV; i++) {
            const struct qdev *d = &model[i];
            if (strcmp(d->site, sites[s]) != 0)
                continue;
            n++;
            lo = d->floor < lo ? d->floor : lo;
            hi = d->floor > hi ? d->floor : hi;
            if (d->has_reported) {
                total += d->temp;
                nrep++;
            }
        }
        const cJSON *g = NULL, *it;
        cJSON_ArrayForEach(it, items)
        {
            const char *site = it_json_str(it, "site");
            if (site && strcmp(site, sites[s]) == 0) {
                assert_null(g);
                g = it;
            }
        }
        if (!g)
            print_items("GROUP BY tags.site", items);
        assert_non_null(g);
        assert_int_equal((int)it_json_num(g, "n", -1), n);
        assert_int_equal((int)it_json_num(g, "lo", -1), lo);
        assert_int_equal((int)it_json_num(g, "hi", -1), hi);
        assert_true(fabs(it_json_num(g, "total", -1) - total) < 1e-9);
        assert_true(fabs(it_json_num(g, "mean", -1) - total / nrep) < 1e-9);
    }
    cJSON_Delete(items);

    /* devices without an owner form their own group, without the owner key */
    items =
        query_all("SELECT tags.owner, COUNT() AS n FROM devices GROUP BY tags.owner", 100, &type);
    int a = 0, b = 0, none = 0;
    for (int i = 0; i < NDEV; i++) {
        if (!model[i].owner)
            none++;
        else if (strcmp(model[i].owner, "team-a") == 0)
            a++;
        else
            b++;
    }
    assert_int_equal(cJSON_GetArraySize(items), 3);
    const cJSON *it;
    int seen = 0;
    cJSON_ArrayForEach(it, items)
    {
        const char *owner = it_json_str(it, "owner");
        int n = (int)it_json_num(it, "n", -1);
        if (!owner) {
            assert_null(it_json_get(it, "owner"));
            assert_int_equal(n, none);
            seen |= 1;
        } else if (strcmp(owner, "team-a") == 0) {
            assert_int_equal(n, a);
            seen |= 2;
        } else {
            assert_string_equal(owner, "team-b");
            assert_int_equal(n, b);
            seen |= 4;
        }
    }
    assert_int_equal(seen, 7);
    cJSON_Delete(items);
}

static void test_query_modules_succeeds(void **state)
{
    (void)state;
    seed_once();
    int sensors = 0, gateways = 0, rate_ge1 = 0, slot_gt8 = 0;
    for (int i = 0; i < NDEV; i++) {
        sensors += model[i].sensor;
        gateways += model[i].gateway;
        rate_ge1 += model[i].sensor && model[i].rate >= 1;
        rate_ge1 += model[i].gateway; /* gateway rate is 7 */
        slot_gt8 += model[i].sensor && model[i].slot > 8;
    }
    assert_true(sensors > 0 && gateways > 0);
    const char *type;
    cJSON *items = query_all("SELECT * FROM devices.modules WHERE moduleId = 'sensor'", 2, &type);
    assert_string_equal(type, "twin");
    assert_int_equal(cJSON_GetArraySize(items), sensors);
    const cJSON *it;
    cJSON_ArrayForEach(it, items)
    {
        const struct qdev *d = find_dev(it_json_str(it, "deviceId"));
        assert_non_null(d);
        assert_true(d->sensor);
        assert_string_equal(it_json_str(it, "moduleId"), "sensor");
        assert_int_equal((int)it_json_num(it, "tags.slot", -1), d->slot);
        assert_int_equal((int)it_json_num(it, "properties.desired.rate", -1), d->rate);
    }
    cJSON_Delete(items);

    items = query_all(
        "SELECT deviceId, moduleId FROM devices.modules WHERE properties.desired.rate >= 1", 100,
        &type);
    assert_string_equal(type, "raw");
    assert_int_equal(cJSON_GetArraySize(items), rate_ge1);
    cJSON_ArrayForEach(it, items)
    {
        const struct qdev *d = find_dev(it_json_str(it, "deviceId"));
        assert_non_null(d);
        const char *m = it_json_str(it, "moduleId");
        assert_non_null(m);
        assert_true(strcmp(m, "gateway") == 0 ? d->gateway : d->sensor && d->rate >= 1);
        assert_int_equal(cJSON_GetArraySize(it), 2);
    }
    cJSON_Delete(items);

    items = query_all("SELECT * FROM devices.modules WHERE devices.modules.moduleId = 'gateway'",
                      100, &type);
    assert_int_equal(cJSON_GetArraySize(items), gateways);
    cJSON_Delete(items);
    items = query_all("SELECT * FROM devices.modules WHERE tags.slot > 8 AND moduleId = 'sensor'",
                      100, &type);
    assert_int_equal(cJSON_GetArraySize(items), slot_gt8);
    cJSON_Delete(items);
    items = query_all("SELECT COUNT() AS n FROM devices.modules", 100, &type);
    assert_int_equal((int)it_json_num(cJSON_GetArrayItem(items, 0), "n", -1), sensors + gateways);
    cJSON_Delete(items);
}

static void test_query_top_succeeds(void **state)
{
    (void)state;
    seed_once();
    int not_lab = 0, lab = 0;
    for (int i = 0; i < NDEV; i++) {
        not_lab += p_site_not_lab(&model[i]);
        lab += p_lab(&model[i]);
    }
    assert_true(not_lab > 5);
    const char *type;
    cJSON *items =
        query_all("SELECT TOP 5 deviceId FROM devices WHERE tags.site != 'lab'", 100, &type);
    assert_int_equal(cJSON_GetArraySize(items), 5);
    bool seen[NDEV] = {false};
    const cJSON *it;
    cJSON_ArrayForEach(it, items)
    {
        const struct qdev *d = find_dev(it_json_str(it, "deviceId"));
        assert_non_null(d);
        assert_false(seen[d - model]);
        seen[d - model] = true;
        assert_true(p_site_not_lab(d));
    }
    cJSON_Delete(items);
    /* TOP larger than the result: everything */
    expect_devices("SELECT TOP 100 * FROM devices WHERE tags.site = 'lab'", p_lab, 100);
    /* TOP across pages: 3 + 3 + 1 */
    cJSON *p1 = query_page("SELECT TOP 7 deviceId FROM devices", 3, NULL);
    assert_int_equal(cJSON_GetArraySize(it_json_get(p1, "items")), 3);
    assert_non_null(it_json_str(p1, "continuation"));
    cJSON *p2 =
        query_page("SELECT TOP 7 deviceId FROM devices", 3, it_json_str(p1, "continuation"));
    assert_int_equal(cJSON_GetArraySize(it_json_get(p2, "items")), 3);
    assert_non_null(it_json_str(p2, "continuation"));
    cJSON *p3 =
        query_page("SELECT TOP 7 deviceId FROM devices", 3, it_json_str(p2, "continuation"));
    assert_int_equal(cJSON_GetArraySize(it_json_get(p3, "items")), 1);
    assert_true(cJSON_IsNull(it_json_get(p3, "continuation")));
    cJSON_Delete(p1);
    cJSON_Delete(p2);
    cJSON_Delete(p3);
    /* TOP of groups counts groups */
    items = query_all("SELECT TOP 2 tags.site, COUNT() AS n FROM devices GROUP BY tags.site", 100,
                      &type);
    assert_int_equal(cJSON_GetArraySize(items), 2);
    cJSON_Delete(items);
}

static void test_query_paging_succeeds(void **state)
{
    (void)state;
    seed_once();
    /* 20 devices in pages of 6: 6, 6, 6, 2, every device exactly once */
    const int sizes[] = {6, 6, 6, 2};
    bool seen[NDEV] = {false};
    char *cont = NULL;
    for (size_t p = 0; p < sizeof sizes / sizeof sizes[0]; p++) {
        cJSON *data = query_page("SELECT deviceId FROM devices", 6, cont);
        free(cont);
        cont = NULL;
        const cJSON *items = it_json_get(data, "items");
        assert_int_equal(cJSON_GetArraySize(items), sizes[p]);
        const cJSON *it;
        cJSON_ArrayForEach(it, items)
        {
            const struct qdev *d = find_dev(it_json_str(it, "deviceId"));
            assert_non_null(d);
            assert_false(seen[d - model]);
            seen[d - model] = true;
        }
        if (p + 1 < sizeof sizes / sizeof sizes[0]) {
            assert_non_null(it_json_str(data, "continuation"));
            cont = strdup(it_json_str(data, "continuation"));
        } else {
            assert_true(cJSON_IsNull(it_json_get(data, "continuation")));
        }
        cJSON_Delete(data);
    }
    for (int i = 0; i < NDEV; i++)
        assert_true(seen[i]);
    /* default page size (100) holds everything, no continuation */
    cJSON *data = query_page("SELECT deviceId FROM devices", 0, NULL);
    assert_int_equal(cJSON_GetArraySize(it_json_get(data, "items")), NDEV);
    assert_true(cJSON_IsNull(it_json_get(data, "continuation")));
    cJSON_Delete(data);
    /* whole twins, filtered, one per page */
    expect_devices("SELECT * FROM devices WHERE tags.site = 'plant'", p_site_nin_lab_office, 1);
    /* bad page sizes and continuation tokens */
    const char *bad[] = {
        "{\"command\":\"query\",\"query\":\"SELECT * FROM devices\",\"pageSize\":0}",
        "{\"command\":\"query\",\"query\":\"SELECT * FROM devices\",\"pageSize\":1001}",
        "{\"command\":\"query\",\"query\":\"SELECT * FROM devices\",\"pageSize\":2.5}",
        "{\"command\":\"query\",\"query\":\"SELECT * FROM devices\",\"continuation\":\"abc\"}",
        /* found by fuzz_control: strtoull took signs and spaces ("-1" is 2^64 - 1) and
         * skip + pageSize wrapped around to a continuation back at the start */
        "{\"command\":\"query\",\"query\":\"SELECT * FROM devices\",\"continuation\":\"-1\"}",
        "{\"command\":\"query\",\"query\":\"SELECT * FROM devices\",\"continuation\":\"+6\"}",
        "{\"command\":\"query\",\"query\":\"SELECT * FROM devices\",\"continuation\":\" 6\"}",
        "{\"command\":\"query\",\"query\":\"SELECT * FROM devices\",\"pageSize\":6,"
        "\"continuation\":\"18446744073709551615\"}",
        "{\"command\":\"query\",\"query\":\"SELECT * FROM devices\","
        "\"continuation\":\"99999999999999999999999\"}",
        "{\"command\":\"query\"}",
        /* found by fuzz_control: checked as an integer before the range, undefined behaviour */
        "{\"command\":\"query\",\"query\":\"SELECT * FROM devices\",\"pageSize\":1.2e26}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cJSON *e = it_control_err(svc, 400, 400004, "%s", bad[i]);
        cJSON_Delete(e);
    }
}

/*
 * The query run pages itself and reads twins through query documents that hold their sections
 * without "$metadata" and "$version" (core/registry_query.h). Pages of 3 joined must be the
 * whole answer byte for byte, whatever the query's shape; whole sections and "$" paths must
 * still see the metadata.
 */
static void test_query_pages_join_to_whole_answer_succeeds(void **state)
{
    (void)state;
    seed_once();
    static const char *const queries[] = {
        "SELECT * FROM devices WHERE tags.site != 'lab'",
        "SELECT deviceId, properties.desired AS d, tags.floor FROM devices",
        "SELECT properties FROM devices WHERE properties.desired.interval > 10",
        "SELECT deviceId FROM devices WHERE properties.desired.$version >= 1",
        "SELECT tags.site, COUNT() AS n, MAX(tags.floor) AS hi FROM devices GROUP BY tags.site",
        "SELECT properties.desired, COUNT() AS n FROM devices GROUP BY properties.desired",
        "SELECT COUNT() AS n, MIN(properties.reported.temp) AS lo FROM devices",
        "SELECT TOP 5 * FROM devices.modules",
        "SELECT * FROM devices WHERE IS_DEFINED(properties.reported.$metadata.temp)",
    };
    for (size_t i = 0; i < sizeof queries / sizeof queries[0]; i++) {
        cJSON *whole = query_page(queries[i], 1000, NULL);
        assert_true(cJSON_IsNull(it_json_get(whole, "continuation")));
        const char *type;
        cJSON *joined = query_all(queries[i], 3, &type);
        char *a = cJSON_PrintUnformatted(it_json_get(whole, "items"));
        char *b = cJSON_PrintUnformatted(joined);
        if (strcmp(a, b) != 0 || strcmp(type, it_json_str(whole, "itemType")) != 0)
            fail_msg("%s: one page %s, pages of 3 %s", queries[i], a, b);
        free(a);
        free(b);
        cJSON_Delete(joined);
        cJSON_Delete(whole);
    }
    /* A whole section in the results carries its metadata; a "$" condition sees it. */
    cJSON *data = query_page("SELECT properties.desired AS d FROM devices", 1000, NULL);
    const cJSON *it;
    int n = 0;
    cJSON_ArrayForEach(it, it_json_get(data, "items"))
    {
        assert_true(cJSON_IsNumber(it_json_get(it, "d.$version")));
        assert_true(cJSON_IsObject(it_json_get(it, "d.$metadata")));
        n++;
    }
    assert_int_equal(n, NDEV);
    cJSON_Delete(data);
    data = query_page("SELECT deviceId FROM devices WHERE properties.desired.$version >= 1", 1000,
                      NULL);
    assert_int_equal(cJSON_GetArraySize(it_json_get(data, "items")), NDEV);
    cJSON_Delete(data);
}

/* The column the hub names in "... column N ...", or -1. */
static int error_column(const char *msg)
{
    const char *c = strstr(msg, "column ");
    return c ? atoi(c + 7) : -1;
}

struct bad_query {
    const char *query;
    const char *at; /* where the problem starts; NULL: only "some column inside the text" */
};

/* Each query must fail with 400004 and a message naming its column; reports all before failing. */
static void expect_column_errors(const struct bad_query *cases, size_t ncases)
{
    int failures = 0;
    for (size_t i = 0; i < ncases; i++) {
        cJSON *q = cJSON_CreateObject();
        cJSON_AddStringToObject(q, "command", "query");
        cJSON_AddStringToObject(q, "query", cases[i].query);
        char *text = cJSON_PrintUnformatted(q);
        cJSON_Delete(q);
        cJSON *e = it_control_err(svc, 400, 400004, "%s", text);
        free(text);
        const char *msg = it_json_str(e, "error");
        int col = error_column(msg);
        int len = (int)strlen(cases[i].query);
        if (col < 1 || col > len + 1) {
            fprintf(stderr, "# query '%s': error '%s' names no column in 1..%d\n", cases[i].query,
                    msg, len + 1);
            failures++;
        } else if (cases[i].at) {
            int want = (int)(strstr(cases[i].query, cases[i].at) - cases[i].query) + 1;
            if (col != want) {
                fprintf(stderr, "# query '%s': error '%s', expected column %d\n", cases[i].query,
                        msg, want);
                failures++;
            }
        }
        cJSON_Delete(e);
    }
    assert_int_equal(failures, 0);
}

static void test_query_malformed_fails(void **state)
{
    (void)state;
    seed_once();
    static const struct bad_query cases[] = {
        {"SELECT * FORM devices", "FORM"},
        {"SELECT * FROM devices WHERE tags.floor = 1 tags.site = 'lab'", "tags.site"},
        {"SELECT * FROM devices WHERE tags.site = 'unterminated", NULL},
        {"SELECT * FROM devices WHERE tags.floor IN [1, tags.site]", NULL},
        {"SELECT * FROM devices.things", "things"},
        {"SELECT * FROM jobs", "jobs"},
        {"SELECT deviceId FROM devices.jobs", "deviceId"},
        {"SELECT * FROM devices.jobs WHERE tags.site = 'lab'", "tags.site"},
        {"SELECT FROM devices", NULL},
        {"DELETE FROM devices", "DELETE"},
    };
    expect_column_errors(cases, sizeof cases / sizeof cases[0]);
}

/*
 * A query that ends too early names a column too: docs/query.md promises "the
 * 1-based column of the problem" for every error (it once said only "expected
 * ')' at end of query").
 */
static void test_query_malformed_at_end_names_column_fails(void **state)
{
    (void)state;
    seed_once();
    static const struct bad_query cases[] = {
        {"SELECT * FROM devices WHERE (tags.floor = 1", NULL},
        {"SELECT * FROM devices WHERE tags.floor =", NULL},
        {"", NULL},
    };
    expect_column_errors(cases, sizeof cases / sizeof cases[0]);
}

/*
 * IoT Hub answers an empty result for jobs queries when there are no jobs, and twinhub has none
 * (iot-hub-devguide-query-language.md, "Get started with jobs queries").
 */
static void test_query_jobs_empty_succeeds(void **state)
{
    (void)state;
    seed_once();
    static const char *const queries[] = {
        "SELECT * FROM devices.jobs",
        "SELECT * FROM devices.jobs WHERE devices.jobs.deviceId = 'q01'",
        "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'myJobId' AND "
        "devices.jobs.status = 'completed'",
    };
    for (size_t i = 0; i < sizeof queries / sizeof queries[0]; i++) {
        const char *type;
        cJSON *items = query_all(queries[i], 0, &type);
        assert_int_equal(cJSON_GetArraySize(items), 0);
        assert_string_equal(type, "deviceJob");
        cJSON_Delete(items);
    }
    /* the page has the usual shape: no continuation */
    cJSON *data = query_page("SELECT * FROM devices.jobs", 10, NULL);
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(data, "continuation")));
    cJSON_Delete(data);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_query_where_comparisons_and_logic_succeeds),
        cmocka_unit_test(test_query_in_nin_is_defined_succeeds),
        cmocka_unit_test(test_query_projection_succeeds),
        cmocka_unit_test(test_query_count_and_group_by_succeeds),
        cmocka_unit_test(test_query_modules_succeeds),
        cmocka_unit_test(test_query_top_succeeds),
        cmocka_unit_test(test_query_paging_succeeds),
        cmocka_unit_test(test_query_pages_join_to_whole_answer_succeeds),
        cmocka_unit_test(test_query_jobs_empty_succeeds),
        cmocka_unit_test(test_query_malformed_fails),
        cmocka_unit_test(test_query_malformed_at_end_names_column_fails),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
