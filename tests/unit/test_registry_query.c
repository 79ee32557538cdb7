/*
 * test_registry_query.c - unit tests for emulator/core/registry_query.c: the
 * query documents filled in place per twin and the paged query run over the
 * registry. The run's answers are compared byte for byte with the full-document
 * path (th_identity_twin_json for every twin, th_query_run, then the page) on
 * random registries and random queries.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "query.h"
#include "registry.h"
#include "registry_query.h"
#include "twin.h"

#define NOW 1700000000000000LL

/* ---- a deterministic random source ---- */

static uint64_t rng_state;

static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return n ? (uint32_t)(rng_state % n) : 0;
}

static const char *pick(const char *const *list, size_t n)
{
    return list[rnd((uint32_t)n)];
}
#define PICK(list) pick(list, sizeof list / sizeof list[0])

/* ---- random registries ---- */

static const char *const keys[] = {"mode", "Mode", "level", "name", "temp", "cfg", "region", "on"};
static const char *const strs[] = {"a", "b", "US", "EU", "auto", "Auto", "x", "", "hot"};

static cJSON *rand_value(int depth)
{
    switch (rnd(depth > 1 ? 6 : 8)) {
    case 0:
        return cJSON_CreateNumber((double)((int)rnd(20) - 5));
    case 1:
        return cJSON_CreateNumber((double)rnd(1000) / 8.0);
    case 2:
    case 3:
        return cJSON_CreateString(PICK(strs));
    case 4:
        return cJSON_CreateBool(rnd(2));
    case 5: {
        cJSON *a = cJSON_CreateArray();
        for (uint32_t k = rnd(3); k > 0; k--)
            cJSON_AddItemToArray(a, cJSON_CreateNumber(rnd(4)));
        return a;
    }
    default: {
        cJSON *o = cJSON_CreateObject();
        for (uint32_t k = rnd(4); k > 0; k--) {
            const char *key = PICK(keys);
            if (!cJSON_GetObjectItemCaseSensitive(o, key))
                cJSON_AddItemToObject(o, key, rand_value(depth + 1));
        }
        return o;
    }
    }
}

static cJSON *rand_section(void)
{
    cJSON *o = cJSON_CreateObject();
    for (uint32_t k = rnd(5); k > 0; k--) {
        const char *key = PICK(keys);
        if (!cJSON_GetObjectItemCaseSensitive(o, key))
            cJSON_AddItemToObject(o, key, rand_value(0));
    }
    return o;
}

static cJSON *rand_twin_members(cJSON *ident)
{
    cJSON_AddItemToObject(ident, "tags", rand_section());
    cJSON *props = cJSON_AddObjectToObject(ident, "properties");
    cJSON_AddItemToObject(props, "desired", rand_section());
    cJSON_AddItemToObject(props, "reported", rand_section());
    return ident;
}

/* Fields a registry document does not carry, set on the identity as the hub's life would. */
static void rand_state(struct th_identity *id)
{
    id->connected = rnd(2);
    id->last_activity_us = rnd(3) ? NOW + (int64_t)rnd(100000) * 1000000 : 0;
    id->status_updated_us = rnd(2) ? NOW - (int64_t)rnd(1000) * 1000000 : 0;
    id->twin->etag_counter += rnd(4);
    id->twin->reported_version += rnd(4);
    id->etag_counter += rnd(3);
    if (rnd(3) == 0) {
        free(id->model_id);
        id->model_id = strdup(rnd(2) ? "dtmi:com:example;1" : "dtmi:x;2");
    }
    if (rnd(3) == 0) {
        id->auth_type = TH_AUTH_SELF_SIGNED;
        id->primary_key[0] = id->secondary_key[0] = '\0';
        snprintf(id->x509_primary, sizeof id->x509_primary, "%040X", rnd(4));
        if (rnd(2))
            snprintf(id->x509_secondary, sizeof id->x509_secondary, "%040X", rnd(4) + 7);
    }
    if (rnd(3) == 0) {
        id->configurations = cJSON_CreateObject();
        cJSON *c = cJSON_AddObjectToObject(id->configurations, rnd(2) ? "c1" : "c2");
        cJSON_AddStringToObject(c, "status", rnd(2) ? "Applied" : "Targeted");
    }
}

/* A registry of up to n devices (some edge with children, some with modules). */
static struct th_registry *rand_registry(int n)
{
    cJSON *doc = cJSON_CreateObject();
    cJSON *devs = cJSON_AddArrayToObject(doc, "devices");
    for (int i = 0; i < n; i++) {
        char id[16];
        snprintf(id, sizeof id, "%s%d", rnd(3) ? "dev" : "Sensor-", i);
        cJSON *d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "deviceId", id);
        cJSON_AddStringToObject(d, "status", rnd(4) ? "enabled" : "disabled");
        if (rnd(4) == 0)
            cJSON_AddStringToObject(d, "statusReason", PICK(strs));
        if (i < 2) {
            /* Two edge devices: later devices may sit below them. */
            cJSON_AddItemToObject(d, "capabilities", cJSON_Parse("{\"iotEdge\":true}"));
        } else if (rnd(3) == 0) {
            cJSON *ps = cJSON_AddArrayToObject(d, "parentScopes");
            cJSON_AddItemToArray(ps, cJSON_CreateString(rnd(2) ? "ms-azure-iot-edge://dev0-1"
                                                               : "ms-azure-iot-edge://Sensor-1-1"));
        }
        rand_twin_members(d);
        if (rnd(3) == 0) {
            cJSON *mods = cJSON_AddArrayToObject(d, "modules");
            for (uint32_t k = 1 + rnd(2); k > 0; k--) {
                char mid[8];
                snprintf(mid, sizeof mid, "m%u", k);
                cJSON *m = cJSON_CreateObject();
                cJSON_AddStringToObject(m, "moduleId", mid);
                if (rnd(2))
                    cJSON_AddStringToObject(m, "managedBy", "iotEdge");
                cJSON_AddItemToArray(mods, rand_twin_members(m));
            }
        }
        cJSON_AddItemToArray(devs, d);
    }
    struct th_registry *reg = th_registry_new();
    struct th_error err = {0};
    th_result r = th_registry_load(reg, doc, NOW, &err);
    if (r != TH_OK) {
        /* A parent scope that does not resolve: drop the scopes and load again. */
        cJSON *d;
        cJSON_ArrayForEach(d, devs)
        {
            cJSON_DeleteItemFromObject(d, "parentScopes");
        }
        r = th_registry_load(reg, doc, NOW, &err);
    }
    assert_int_equal(r, TH_OK);
    cJSON_Delete(doc);
    for (struct th_identity *d = th_registry_next_device(reg, NULL); d;
         d = th_registry_next_device(reg, d)) {
        rand_state(d);
        for (size_t k = 0; k < d->module_count; k++)
            rand_state(d->modules[k]);
    }
    return reg;
}

/* ---- random queries ---- */

static const char *const paths[] = {
    "deviceId",
    "DeviceId",
    "devices.deviceId",
    "moduleId",
    "devices.modules.moduleId",
    "status",
    "statusReason",
    "connectionState",
    "version",
    "etag",
    "deviceEtag",
    "lastActivityTime",
    "statusUpdateTime",
    "cloudToDeviceMessageCount",
    "authenticationType",
    "x509Thumbprint.primaryThumbprint",
    "x509Thumbprint.secondaryThumbprint",
    "x509Thumbprint",
    "modelId",
    "capabilities.iotEdge",
    "capabilities",
    "deviceScope",
    "parentScopes",
    "configurations.c1.status",
    "configurations",
    "tags",
    "tags.mode",
    "tags.MODE",
    "tags.cfg.on",
    "tags.region",
    "properties",
    "properties.desired",
    "properties.reported",
    "properties.desired.mode",
    "properties.desired.level",
    "properties.reported.temp",
    "properties.reported.cfg.name",
    "properties.desired.cfg",
    "properties.desired.$version",
    "properties.reported.$metadata.temp.$lastUpdated",
    "properties.desired.$metadata",
    "tags.[[mode]]",
    "nothing",
    "properties.reported.name",
};
static const char *const consts[] = {
    "'a'",   "'US'",         "'Auto'", "'enabled'", "'Connected'", "0",  "3",
    "2.5",   "true",         "false",  "null",      "'dev1'",      "''", "'0001-01-01T00:00:00Z'",
    "'sas'", "'selfSigned'", "1"};
static const char *const cmps[] = {"=", "!=", "<>", "<", ">", "<=", ">="};
static const char *const preds[] = {"IS_DEFINED", "IS_NULL",   "IS_STRING", "IS_NUMBER",
                                    "IS_BOOL",    "IS_OBJECT", "IS_ARRAY",  "IS_PRIMITIVE"};

static void append(char *buf, size_t cap, const char *fmt, ...)
{
    size_t len = strlen(buf);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + len, cap - len, fmt, ap);
    va_end(ap);
}

static void rand_cond(char *buf, size_t cap, int depth)
{
    switch (rnd(depth > 2 ? 6 : 9)) {
    case 0:
    case 1:
        append(buf, cap, "%s %s %s", PICK(paths), PICK(cmps), PICK(consts));
        break;
    case 2:
        append(buf, cap, "%s(%s)", PICK(preds), PICK(paths));
        break;
    case 3:
        append(buf, cap, "%s %s [%s, %s]", PICK(paths), rnd(2) ? "IN" : "NIN", PICK(consts),
               PICK(consts));
        break;
    case 4:
        append(buf, cap, "%s(%s, %s)", rnd(2) ? "STARTSWITH" : (rnd(2) ? "CONTAINS" : "ENDSWITH"),
               PICK(paths), PICK(consts));
        break;
    case 5:
        append(buf, cap, "%s %s %s %s", PICK(paths), rnd(2) ? "+" : "*", PICK(consts), PICK(cmps));
        append(buf, cap, " %s", PICK(consts));
        break;
    case 6:
        append(buf, cap, "NOT (");
        rand_cond(buf, cap, depth + 1);
        append(buf, cap, ")");
        break;
    default:
        append(buf, cap, "(");
        rand_cond(buf, cap, depth + 1);
        append(buf, cap, rnd(2) ? " AND " : " OR ");
        rand_cond(buf, cap, depth + 1);
        append(buf, cap, ")");
        break;
    }
}

static const char *const aggs[] = {"SUM", "AVG", "MIN", "MAX"};

static void rand_query(char *buf, size_t cap)
{
    bool modules = rnd(4) == 0;
    buf[0] = '\0';
    append(buf, cap, "SELECT ");
    if (rnd(4) == 0)
        append(buf, cap, "TOP %u ", rnd(6));
    const char *group = NULL;
    switch (rnd(4)) {
    case 0:
        append(buf, cap, "*");
        break;
    case 1: /* a projection */
        for (uint32_t k = 1 + rnd(3); k > 0; k--)
            append(buf, cap, "%s AS p%u%s", rnd(3) ? PICK(paths) : "LOWER(deviceId)", k,
                   k > 1 ? ", " : "");
        break;
    case 2: /* aggregates, perhaps grouped */
        if (!modules && rnd(2)) {
            group = PICK(paths);
            append(buf, cap, "%s, ", group);
        }
        append(buf, cap, "COUNT() AS n");
        for (uint32_t k = rnd(3); k > 0; k--)
            append(buf, cap, ", %s(%s) AS a%u", PICK(aggs), PICK(paths), k);
        break;
    default:
        append(buf, cap, "%s", PICK(paths));
        break;
    }
    append(buf, cap, " FROM %s", modules ? "devices.modules" : "devices");
    if (rnd(5)) {
        append(buf, cap, " WHERE ");
        rand_cond(buf, cap, 0);
    }
    if (group)
        append(buf, cap, " GROUP BY %s", group);
}

/* ---- the full-document path: every twin built, th_query_run, then the page ---- */

static char *full_path_page(const struct th_registry *reg, const struct th_query *q, size_t skip,
                            size_t page, bool *more, bool *is_twin)
{
    size_t cap = 16, n = 0;
    cJSON **docs = malloc(cap * sizeof *docs);
    bool modules = th_query_source(q) == TH_QUERY_MODULES;
    for (struct th_identity *d = th_registry_next_device(reg, NULL); d;
         d = th_registry_next_device(reg, d)) {
        for (size_t i = 0; modules ? i < d->module_count : i < 1; i++) {
            if (n == cap)
                docs = realloc(docs, (cap *= 2) * sizeof *docs);
            docs[n++] = th_identity_twin_json(modules ? d->modules[i] : d);
        }
    }
    cJSON *items = NULL;
    struct th_error err = {0};
    assert_int_equal(th_query_run(q, docs, n, &items, is_twin, &err), TH_OK);
    for (size_t k = 0; k < n; k++)
        cJSON_Delete(docs[k]);
    free(docs);
    cJSON *out = cJSON_CreateArray();
    size_t total = (size_t)cJSON_GetArraySize(items), i = 0;
    cJSON *it = items->child, *next;
    for (; it; it = next, i++) {
        next = it->next;
        if (i >= skip && i < skip + page)
            cJSON_AddItemToArray(out, cJSON_DetachItemViaPointer(items, it));
    }
    *more = skip + page < total;
    cJSON_Delete(items);
    char *text = cJSON_PrintUnformatted(out);
    cJSON_Delete(out);
    return text;
}

/* ---- tests ---- */

static void test_th_query_doc_fill_same_as_query_doc_succeeds(void **state)
{
    (void)state;
    rng_state = 0x9e3779b97f4a7c15ULL;
    for (int round = 0; round < 20; round++) {
        struct th_registry *reg = rand_registry(12);
        struct th_query_doc *qd;
        assert_int_equal(th_query_doc_new(NULL, &qd), TH_OK);
        /* Twice over the registry: members come and go between twins of either kind. */
        for (int pass = 0; pass < 2; pass++) {
            for (struct th_identity *d = th_registry_next_device(reg, NULL); d;
                 d = th_registry_next_device(reg, d)) {
                for (size_t i = 0; i <= d->module_count; i++) {
                    struct th_identity *id = i ? d->modules[i - 1] : d;
                    cJSON *want = th_identity_query_doc(id);
                    const cJSON *got = th_query_doc_fill(qd, id);
                    assert_non_null(want);
                    assert_non_null(got);
                    if (!cJSON_Compare(want, got, true)) {
                        char *a = cJSON_PrintUnformatted(want), *b = cJSON_PrintUnformatted(got);
                        fail_msg("query doc differs:\n%s\n%s", a, b);
                    }
                    cJSON_Delete(want);
                }
            }
        }
        th_query_doc_free(qd);
        th_registry_free(reg);
    }
}

static void test_th_query_doc_new_query_naming_metadata_fails(void **state)
{
    (void)state;
    struct th_query *q;
    struct th_query_doc *qd = (struct th_query_doc *)1;
    const char *text = "SELECT * FROM devices WHERE properties.desired.$version > 1";
    assert_int_equal(th_query_parse(text, strlen(text), &q, NULL), TH_OK);
    assert_int_equal(th_query_doc_new(q, &qd), TH_ERR_INVAL);
    assert_null(qd);
    th_query_free(q);
}

static void test_th_query_doc_new_holds_only_named_members_succeeds(void **state)
{
    (void)state;
    rng_state = 7;
    struct th_registry *reg = rand_registry(3);
    struct th_query *q;
    const char *text = "SELECT deviceId FROM devices WHERE TAGS.mode = 'a'";
    assert_int_equal(th_query_parse(text, strlen(text), &q, NULL), TH_OK);
    struct th_query_doc *qd;
    assert_int_equal(th_query_doc_new(q, &qd), TH_OK);
    const cJSON *doc = th_query_doc_fill(qd, th_registry_next_device(reg, NULL));
    assert_int_equal(cJSON_GetArraySize(doc), 2);
    assert_non_null(cJSON_GetObjectItemCaseSensitive(doc, "deviceId"));
    assert_non_null(cJSON_GetObjectItemCaseSensitive(doc, "tags"));
    th_query_doc_free(qd);
    th_query_free(q);
    th_registry_free(reg);
}

static void test_th_registry_query_same_as_full_documents_succeeds(void **state)
{
    (void)state;
    rng_state = 0x2545f4914f6cdd1dULL;
    int parsed = 0, nonempty = 0, paged = 0;
    for (int round = 0; round < 40; round++) {
        struct th_registry *reg = rand_registry(5 + (int)rnd(25));
        for (int k = 0; k < 60; k++) {
            char text[2048];
            rand_query(text, sizeof text);
            struct th_query *q;
            if (th_query_parse(text, strlen(text), &q, NULL) != TH_OK)
                continue;
            parsed++;
            size_t skip = rnd(3) ? 0 : rnd(8), page = 1 + rnd(rnd(2) ? 4 : 100);
            bool more_want, twin_want;
            char *want = full_path_page(reg, q, skip, page, &more_want, &twin_want);
            struct th_query_page pg;
            struct th_error err = {0};
            assert_int_equal(th_registry_query(reg, q, skip, page, &pg, &err), TH_OK);
            char *got = cJSON_PrintUnformatted(pg.items);
            if (strcmp(want, got) != 0 || more_want != pg.more || twin_want != pg.is_twin)
                fail_msg("%s (skip %zu, page %zu):\nfull docs: %s more=%d\nregistry:  %s more=%d",
                         text, skip, page, want, more_want, got, pg.more);
            nonempty += strcmp(want, "[]") != 0;
            paged += pg.more;
            free(want);
            free(got);
            th_query_page_free(&pg);
            th_query_free(q);
        }
        th_registry_free(reg);
    }
    /* The generator must reach the interesting cases. */
    assert_true(parsed > 1500);
    assert_true(nonempty > 600);
    assert_true(paged > 100);
}

static void test_th_registry_query_jobs_source_fails(void **state)
{
    (void)state;
    struct th_registry *reg = th_registry_new();
    struct th_query *q;
    const char *text = "SELECT * FROM devices.jobs";
    assert_int_equal(th_query_parse(text, strlen(text), &q, NULL), TH_OK);
    struct th_query_page pg;
    struct th_error err = {0};
    assert_int_equal(th_registry_query(reg, q, 0, 10, &pg, &err), TH_ERR_INVAL);
    assert_null(pg.items);
    th_query_free(q);
    th_registry_free(reg);
}

static void test_th_registry_query_page_size_zero_fails(void **state)
{
    (void)state;
    struct th_registry *reg = th_registry_new();
    struct th_query *q;
    const char *text = "SELECT * FROM devices";
    assert_int_equal(th_query_parse(text, strlen(text), &q, NULL), TH_OK);
    struct th_query_page pg;
    assert_int_equal(th_registry_query(reg, q, 0, 0, &pg, NULL), TH_ERR_INVAL);
    assert_int_equal(th_registry_query(reg, q, SIZE_MAX, 2, &pg, NULL), TH_ERR_INVAL);
    th_query_free(q);
    th_registry_free(reg);
}

static void test_th_registry_query_stops_after_page_succeeds(void **state)
{
    (void)state;
    /* 50 devices, a page of 3 from position 4: items 4-6, and more follow. */
    struct th_registry *reg = th_registry_new();
    for (int i = 0; i < 50; i++) {
        char id[16];
        snprintf(id, sizeof id, "d%02d", i);
        assert_int_equal(th_registry_add_device(reg, id, NULL, NULL, true, NOW, NULL, NULL), TH_OK);
    }
    struct th_query *q;
    const char *text = "SELECT deviceId FROM devices";
    assert_int_equal(th_query_parse(text, strlen(text), &q, NULL), TH_OK);
    struct th_query_page pg;
    assert_int_equal(th_registry_query(reg, q, 4, 3, &pg, NULL), TH_OK);
    char *got = cJSON_PrintUnformatted(pg.items);
    assert_string_equal(got,
                        "[{\"deviceId\":\"d04\"},{\"deviceId\":\"d05\"},{\"deviceId\":\"d06\"}]");
    assert_true(pg.more);
    assert_false(pg.is_twin);
    free(got);
    th_query_page_free(&pg);
    /* The last page: nothing follows. */
    assert_int_equal(th_registry_query(reg, q, 48, 3, &pg, NULL), TH_OK);
    assert_int_equal(cJSON_GetArraySize(pg.items), 2);
    assert_false(pg.more);
    th_query_page_free(&pg);
    th_query_free(q);
    th_registry_free(reg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_th_query_doc_fill_same_as_query_doc_succeeds),
        cmocka_unit_test(test_th_query_doc_new_query_naming_metadata_fails),
        cmocka_unit_test(test_th_query_doc_new_holds_only_named_members_succeeds),
        cmocka_unit_test(test_th_registry_query_same_as_full_documents_succeeds),
        cmocka_unit_test(test_th_registry_query_jobs_source_fails),
        cmocka_unit_test(test_th_registry_query_page_size_zero_fails),
        cmocka_unit_test(test_th_registry_query_stops_after_page_succeeds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
