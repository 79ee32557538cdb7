/*
 * test_query.c - unit tests for emulator/core/query.c, the IoT Hub twin query
 * language (iothub-protocol.md section 11) over twin documents shaped as in
 * section 7.1. Each query's expected result is computed here independently,
 * by walking the documents in C, and compared with what th_query_run returns.
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

/* ---- fixture: six device twins and four module twins ---- */

struct dev_spec {
    const char *id;
    const char *status;
    const char *conn;
    bool edge;
    const char *tags;     /* JSON object */
    const char *reported; /* JSON members, each followed by ',' */
};

static const struct dev_spec dev_specs[] = {
    {"d1", "enabled", "Connected", true,
     "{\"location\":{\"region\":\"US\",\"plant\":\"Redmond43\"},\"group\":{\"name\":\"g1\"},"
     "\"Mode\":\"Auto\",\"mode\":\"manual\"}",
     "\"telemetryConfig\":{\"sendFrequencyInSecs\":60,\"status\":\"Success\"},"
     "\"connectivity\":\"wired\",\"temperature\":20.5,\"firmware\":\"1.2.3\","
     "\"sensors\":[\"t\",\"h\"],"},
    {"d2", "enabled", "Disconnected", false,
     "{\"location\":{\"region\":\"US\"},\"group\":{\"name\":\"g2\"}}",
     "\"telemetryConfig\":{\"sendFrequencyInSecs\":30,\"status\":\"Pending\"},"
     "\"connectivity\":\"wifi\",\"temperature\":25,"},
    {"d3", "disabled", "Connected", false, "{\"location\":{\"region\":\"EU\"}}",
     "\"telemetryConfig\":{\"sendFrequencyInSecs\":120,\"status\":\"Success\"},"
     "\"connectivity\":null,\"temperature\":-3.5,"},
    {"d4", "enabled", "Disconnected", false, "{}", "\"temperature\":\"hot\","},
    {"d5", "enabled", "Connected", true,
     "{\"location\":{\"region\":\"EU\"},\"group\":{\"name\":\"g1\"}}",
     "\"telemetryConfig\":{\"sendFrequencyInSecs\":60,\"status\":\"Error\"},"
     "\"connectivity\":\"cellular\",\"temperature\":31,"},
    {"d6", "enabled", "Disconnected", false, "{\"location\":{\"region\":\"US\"}}",
     "\"telemetryConfig\":{\"sendFrequencyInSecs\":90,\"status\":\"Success\"},"
     "\"connectivity\":\"wifi\",\"firmware\":\"2.0.0\","},
};
#define NDEV (sizeof dev_specs / sizeof dev_specs[0])

struct mod_spec {
    const char *device;
    const char *module;
    const char *tags;
};

static const struct mod_spec mod_specs[] = {
    {"d1", "$edgeHub", "{}"},
    {"d1", "$edgeAgent", "{}"},
    {"d2", "$edgeHub", "{}"},
    {"d1", "sensor", "{\"kind\":\"thermo\"}"},
};
#define NMOD (sizeof mod_specs / sizeof mod_specs[0])

static cJSON *devs[NDEV];
static cJSON *mods[NMOD];

#define META "\"$lastUpdated\":\"2024-05-01T10:00:00.0000000Z\""

static cJSON *parse_doc(const char *text)
{
    cJSON *doc = cJSON_Parse(text);
    assert_non_null(doc);
    return doc;
}

static cJSON *make_device(const struct dev_spec *s, int n)
{
    char buf[4096];
    int len = snprintf(
        buf, sizeof buf,
        "{\"deviceId\":\"%s\",\"etag\":\"AAAAAAAAAAE=\",\"deviceEtag\":\"MQ==\",\"status\":\"%s\","
        "\"statusUpdateTime\":\"0001-01-01T00:00:00Z\",\"connectionState\":\"%s\","
        "\"lastActivityTime\":\"2024-05-0%dT10:00:00.0000000Z\",\"cloudToDeviceMessageCount\":0,"
        "\"authenticationType\":\"sas\",\"x509Thumbprint\":{\"primaryThumbprint\":null,"
        "\"secondaryThumbprint\":null},\"modelId\":\"\",\"version\":%d,\"tags\":%s,"
        "\"properties\":{\"desired\":{\"targetTemperature\":%d,\"$metadata\":{" META
        ",\"$lastUpdatedVersion\":2,\"targetTemperature\":{" META ",\"$lastUpdatedVersion\":2}},"
        "\"$version\":2},\"reported\":{%s\"$metadata\":{" META "},\"$version\":4}},"
        "\"capabilities\":{\"iotEdge\":%s}}",
        s->id, s->status, s->conn, n + 1, 5 + n, s->tags, 40 + n, s->reported,
        s->edge ? "true" : "false");
    assert_true(len > 0 && (size_t)len < sizeof buf);
    return parse_doc(buf);
}

static cJSON *make_module(const struct mod_spec *s)
{
    char buf[2048];
    int len =
        snprintf(buf, sizeof buf,
                 "{\"deviceId\":\"%s\",\"moduleId\":\"%s\",\"etag\":\"AAAAAAAAAAE=\","
                 "\"deviceEtag\":\"MQ==\",\"status\":\"enabled\",\"connectionState\":\"Connected\","
                 "\"version\":2,\"tags\":%s,"
                 "\"properties\":{\"desired\":{\"$metadata\":{" META ",\"$lastUpdatedVersion\":1},"
                 "\"$version\":1},\"reported\":{\"$metadata\":{" META "},\"$version\":1}}}",
                 s->device, s->module, s->tags);
    assert_true(len > 0 && (size_t)len < sizeof buf);
    return parse_doc(buf);
}

static int setup_docs(void **state)
{
    (void)state;
    for (size_t k = 0; k < NDEV; k++)
        devs[k] = make_device(&dev_specs[k], (int)k);
    for (size_t k = 0; k < NMOD; k++)
        mods[k] = make_module(&mod_specs[k]);
    return 0;
}

static int teardown_docs(void **state)
{
    (void)state;
    for (size_t k = 0; k < NDEV; k++)
        cJSON_Delete(devs[k]);
    for (size_t k = 0; k < NMOD; k++)
        cJSON_Delete(mods[k]);
    return 0;
}

/* ---- independent walkers over the documents ---- */

/* The member at a dotted path, exact case; NULL when absent. */
static const cJSON *at(const cJSON *doc, const char *dotted)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", dotted);
    const cJSON *node = doc;
    for (char *seg = strtok(buf, "."); seg && node; seg = strtok(NULL, "."))
        node = cJSON_IsObject(node) ? cJSON_GetObjectItemCaseSensitive(node, seg) : NULL;
    return node;
}

static const char *str_at(const cJSON *doc, const char *dotted)
{
    const cJSON *v = at(doc, dotted);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static bool num_at(const cJSON *doc, const char *dotted, double *out)
{
    const cJSON *v = at(doc, dotted);
    if (!cJSON_IsNumber(v))
        return false;
    *out = v->valuedouble;
    return true;
}

static bool str_is(const cJSON *doc, const char *dotted, const char *want)
{
    const char *s = str_at(doc, dotted);
    return s && strcmp(s, want) == 0;
}

/* ---- running queries ---- */

static struct th_query *parse_ok(const char *text)
{
    struct th_query *q = NULL;
    struct th_error err = {0};
    th_result r = th_query_parse(text, strlen(text), &q, &err);
    if (r != TH_OK)
        fail_msg("parse of \"%s\" failed: %s", text, err.message);
    assert_non_null(q);
    return q;
}

/* Parse and run text over docs; the caller deletes the returned array. */
static cJSON *run_on(const char *text, cJSON *const *docs, size_t n, bool *is_twin)
{
    struct th_query *q = parse_ok(text);
    cJSON *items = NULL;
    struct th_error err = {0};
    bool twin = false;
    assert_int_equal(th_query_run(q, docs, n, &items, &twin, &err), TH_OK);
    th_query_free(q);
    assert_true(cJSON_IsArray(items));
    *is_twin = twin;
    return items;
}

static cJSON *run_raw(const char *text)
{
    bool twin = true;
    cJSON *items = run_on(text, devs, NDEV, &twin);
    assert_false(twin);
    return items;
}

/*
 * Run a SELECT * query over docs and check it returns copies of exactly the
 * docs `pred` accepts, in order. Returns how many matched.
 */
static size_t check_filter_on(const char *text, cJSON *const *docs, size_t n,
                              bool (*pred)(const cJSON *doc))
{
    bool twin = false;
    cJSON *items = run_on(text, docs, n, &twin);
    assert_true(twin);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (!pred(docs[i]))
            continue;
        cJSON *item = cJSON_GetArrayItem(items, (int)k++);
        if (!item)
            fail_msg("\"%s\": missing result for %s", text, str_at(docs[i], "deviceId"));
        assert_true(cJSON_Compare(item, docs[i], true));
        assert_ptr_not_equal(item, docs[i]);
    }
    assert_int_equal(cJSON_GetArraySize(items), k);
    cJSON_Delete(items);
    return k;
}

/* check_filter_on the device twins, requiring the filter to pick some but not all. */
static void check_filter(const char *text, bool (*pred)(const cJSON *doc))
{
    size_t k = check_filter_on(text, devs, NDEV, pred);
    if (k == 0 || k == NDEV)
        fail_msg("\"%s\" is a weak test: %zu of %zu match", text, k, NDEV);
}

/* The parse must fail with `want`, 400/400004 and exactly `message`. */
static void check_parse_message(const char *text, th_result want, const char *message)
{
    struct th_query *q = (struct th_query *)&q; /* must be reset to NULL */
    struct th_error err = {0};
    assert_int_equal(th_query_parse(text, strlen(text), &q, &err), want);
    assert_null(q);
    assert_int_equal(err.status, 400);
    assert_int_equal(err.code, 400004);
    assert_string_equal(err.message, message);
}

/*
 * The parse must fail with 400004 and a message "query: <what> at column N
 * near '...'" where N is the position of `anchor` in text (its first
 * occurrence), or "... at column <len+1> (end of query)" when anchor is NULL.
 */
static void check_parse_fails_at_offset(const char *text, const char *what, const char *at_text)
{
    struct th_query *q = NULL;
    struct th_error err = {0};
    assert_int_equal(th_query_parse(text, strlen(text), &q, &err), TH_ERR_INVAL);
    assert_null(q);
    assert_int_equal(err.status, 400);
    assert_int_equal(err.code, 400004);
    char want[300];
    if (at_text) {
        snprintf(want, sizeof want, "query: %s at column %zu near '", what,
                 (size_t)(at_text - text) + 1);
        assert_int_equal(err.position, (size_t)(at_text - text) + 1);
        if (strncmp(err.message, want, strlen(want)) != 0)
            fail_msg("\"%s\": got \"%s\", want prefix \"%s\"", text, err.message, want);
        /* The quoted text starts with the offending token. */
        size_t n = strlen(at_text) < 8 ? strlen(at_text) : 8;
        assert_memory_equal(err.message + strlen(want), at_text, n);
    } else {
        snprintf(want, sizeof want, "query: %s at column %zu (end of query)", what,
                 strlen(text) + 1);
        assert_int_equal(err.position, strlen(text) + 1);
        assert_string_equal(err.message, want);
    }
}

static void check_parse_fails_at(const char *text, const char *what, const char *anchor)
{
    const char *p = anchor ? strstr(text, anchor) : NULL;
    if (anchor && !p)
        fail_msg("bad test: '%s' not in \"%s\"", anchor, text);
    check_parse_fails_at_offset(text, what, p);
}

/* ---- predicates computed independently of the query engine ---- */

static bool pred_all(const cJSON *d)
{
    (void)d;
    return true;
}

static bool pred_us_and_freq60(const cJSON *d)
{
    double f;
    return str_is(d, "tags.location.region", "US") &&
           num_at(d, "properties.reported.telemetryConfig.sendFrequencyInSecs", &f) && f >= 60;
}

static bool pred_wired_or_wifi(const cJSON *d)
{
    return str_is(d, "properties.reported.connectivity", "wired") ||
           str_is(d, "properties.reported.connectivity", "wifi");
}

/* NIN: defined primitive and not in the list (null is a primitive not in it). */
static bool pred_not_wired_or_wifi(const cJSON *d)
{
    const cJSON *c = at(d, "properties.reported.connectivity");
    return (cJSON_IsString(c) || cJSON_IsNull(c)) && !pred_wired_or_wifi(d);
}

static bool pred_connectivity_defined(const cJSON *d)
{
    return at(d, "properties.reported.connectivity") != NULL;
}

static bool pred_connectivity_null(const cJSON *d)
{
    return cJSON_IsNull(at(d, "properties.reported.connectivity"));
}

static bool pred_edge(const cJSON *d)
{
    return cJSON_IsTrue(at(d, "capabilities.iotEdge"));
}

static bool pred_us(const cJSON *d)
{
    return str_is(d, "tags.location.region", "US");
}

static bool pred_located(const cJSON *d)
{
    return cJSON_IsObject(at(d, "tags.location"));
}

static bool pred_group_g1(const cJSON *d)
{
    return str_is(d, "tags.group.name", "g1");
}

static bool pred_enabled(const cJSON *d)
{
    return str_is(d, "status", "enabled");
}

static bool pred_none(const cJSON *d)
{
    (void)d;
    return false;
}

static bool pred_temp_above_10(const cJSON *d)
{
    double t;
    return num_at(d, "properties.reported.temperature", &t) && t > 10;
}

static bool pred_temp_at_most_10(const cJSON *d)
{
    double t;
    return num_at(d, "properties.reported.temperature", &t) && !(t > 10);
}

static bool pred_temp_is_string(const cJSON *d)
{
    return cJSON_IsString(at(d, "properties.reported.temperature"));
}

static bool pred_temp_is_number(const cJSON *d)
{
    return cJSON_IsNumber(at(d, "properties.reported.temperature"));
}

static bool pred_has_sensors_array(const cJSON *d)
{
    return cJSON_IsArray(at(d, "properties.reported.sensors"));
}

static bool pred_freq(const cJSON *d, double *f)
{
    return num_at(d, "properties.reported.telemetryConfig.sendFrequencyInSecs", f);
}

static bool pred_freq_eq_60(const cJSON *d)
{
    double f;
    return pred_freq(d, &f) && f == 60;
}

static bool pred_freq_ne_60(const cJSON *d)
{
    double f;
    return pred_freq(d, &f) && f != 60;
}

static bool pred_freq_lt_90(const cJSON *d)
{
    double f;
    return pred_freq(d, &f) && f < 90;
}

static bool pred_freq_gt_60(const cJSON *d)
{
    double f;
    return pred_freq(d, &f) && f > 60;
}

static bool pred_freq_le_60(const cJSON *d)
{
    double f;
    return pred_freq(d, &f) && f <= 60;
}

static bool pred_freq_ge_90(const cJSON *d)
{
    double f;
    return pred_freq(d, &f) && f >= 90;
}

static bool pred_freq_60_or_120(const cJSON *d)
{
    double f;
    return pred_freq(d, &f) && (f == 60 || f == 120);
}

static bool pred_region_after_f(const cJSON *d)
{
    const char *r = str_at(d, "tags.location.region");
    return r && strcmp(r, "F") > 0;
}

static bool pred_not_enabled(const cJSON *d)
{
    const char *s = str_at(d, "status");
    return s && strcmp(s, "enabled") != 0;
}

static bool pred_connected_or_edge(const cJSON *d)
{
    return str_is(d, "connectionState", "Connected") || pred_edge(d);
}

static bool pred_firmware_starts_1(const cJSON *d)
{
    const char *s = str_at(d, "properties.reported.firmware");
    return s && s[0] == '1';
}

static bool pred_id_ends_3(const cJSON *d)
{
    const char *s = str_at(d, "deviceId");
    return s && s[strlen(s) - 1] == '3';
}

static bool pred_plant_contains_mond(const cJSON *d)
{
    const char *s = str_at(d, "tags.location.plant");
    return s && strstr(s, "mond");
}

/* ---- filters: the doc's typical queries (section 11.3) ---- */

static void test_th_query_run_select_star_all_devices_succeeds(void **state)
{
    (void)state;
    assert_int_equal(check_filter_on("SELECT * FROM devices", devs, NDEV, pred_all), NDEV);
}

static void test_th_query_run_where_region_and_frequency_succeeds(void **state)
{
    (void)state;
    check_filter("SELECT * FROM devices WHERE tags.location.region = 'US' AND "
                 "properties.reported.telemetryConfig.sendFrequencyInSecs >= 60",
                 pred_us_and_freq60);
}

static void test_th_query_run_where_in_list_succeeds(void **state)
{
    (void)state;
    check_filter("SELECT * FROM devices WHERE properties.reported.connectivity IN ['wired','wifi']",
                 pred_wired_or_wifi);
}

static void test_th_query_run_where_nin_list_succeeds(void **state)
{
    (void)state;
    check_filter(
        "SELECT * FROM devices WHERE properties.reported.connectivity NIN ['wired','wifi']",
        pred_not_wired_or_wifi);
    check_filter(
        "SELECT * FROM devices WHERE properties.reported.connectivity NOT IN ['wired', 'wifi']",
        pred_not_wired_or_wifi);
}

static void test_th_query_run_where_in_numbers_and_null_succeeds(void **state)
{
    (void)state;
    check_filter("SELECT * FROM devices WHERE "
                 "properties.reported.telemetryConfig.sendFrequencyInSecs IN [60, 0x78, -1]",
                 pred_freq_60_or_120);
    check_filter("SELECT * FROM devices WHERE properties.reported.connectivity IN [null]",
                 pred_connectivity_null);
}

static void test_th_query_run_is_defined_true_for_null_succeeds(void **state)
{
    (void)state;
    check_filter("SELECT * FROM devices WHERE is_defined(properties.reported.connectivity)",
                 pred_connectivity_defined);
    /* d3's connectivity is null and still counts as defined. */
    assert_true(cJSON_IsNull(at(devs[2], "properties.reported.connectivity")));
    assert_true(pred_connectivity_defined(devs[2]));
}

static void test_th_query_run_bool_attribute_succeeds(void **state)
{
    (void)state;
    check_filter("SELECT * FROM devices WHERE capabilities.iotEdge = true", pred_edge);
    /* A bare boolean attribute is a condition by itself. */
    check_filter("SELECT * FROM devices WHERE capabilities.iotEdge", pred_edge);
}

static bool pred_edgehub_on_d1(const cJSON *m)
{
    return str_is(m, "moduleId", "$edgeHub") && str_is(m, "deviceId", "d1");
}

static bool pred_module_d1(const cJSON *m)
{
    return str_is(m, "deviceId", "d1");
}

static bool pred_module_thermo(const cJSON *m)
{
    return str_is(m, "tags.kind", "thermo");
}

static void test_th_query_run_modules_source_succeeds(void **state)
{
    (void)state;
    const char *text = "SELECT * FROM devices.modules WHERE devices.modules.moduleId = '$edgeHub' "
                       "AND deviceId IN ['d1']";
    struct th_query *q = parse_ok(text);
    assert_int_equal(th_query_source(q), TH_QUERY_MODULES);
    th_query_free(q);
    assert_int_equal(check_filter_on(text, mods, NMOD, pred_edgehub_on_d1), 1);
    assert_int_equal(check_filter_on("SELECT * FROM devices.modules WHERE devices.deviceId = 'd1'",
                                     mods, NMOD, pred_module_d1),
                     3);
    assert_int_equal(check_filter_on("SELECT * FROM devices.modules WHERE tags.kind = 'thermo'",
                                     mods, NMOD, pred_module_thermo),
                     1);
}

static void test_th_query_source_devices_succeeds(void **state)
{
    (void)state;
    struct th_query *q = parse_ok("SELECT * FROM devices");
    assert_int_equal(th_query_source(q), TH_QUERY_DEVICES);
    th_query_free(q);
}

static void test_th_query_run_case_insensitive_attributes_succeeds(void **state)
{
    (void)state;
    check_filter("SELECT * FROM devices WHERE TAGS.Location.REGION = 'US'", pred_us);
    check_filter("SELECT * FROM devices WHERE devices.Tags.location.Region = 'US'", pred_us);
    /* Values still compare case-sensitively. */
    check_filter_on("SELECT * FROM devices WHERE tags.location.region = 'us'", devs, NDEV,
                    pred_none);
}

static void test_th_query_run_exact_case_member_preferred_succeeds(void **state)
{
    (void)state;
    /* d1 has both tags.Mode = "Auto" and tags.mode = "manual". */
    cJSON *items = run_raw("SELECT tags.mode, tags.Mode AS big FROM devices WHERE deviceId = 'd1'");
    cJSON *want = parse_doc("[{\"mode\":\"manual\",\"big\":\"Auto\"}]");
    assert_true(cJSON_Compare(items, want, true));
    cJSON_Delete(want);
    cJSON_Delete(items);
}

static void test_th_query_run_escaped_name_succeeds(void **state)
{
    (void)state;
    check_filter("SELECT * FROM devices WHERE tags.[[group]].name = 'g1'", pred_group_g1);
    check_filter("SELECT * FROM devices WHERE [[tags]].group.[[name]] = 'g1'", pred_group_g1);
}

static void test_th_query_parse_keywords_case_insensitive_succeeds(void **state)
{
    (void)state;
    check_filter("select * from DEVICES where Tags.location.region = 'US' and "
                 "IS_DEFINED(tags.location) Or FALSE",
                 pred_us);
    check_filter("SeLeCt * FrOm devices WhErE capabilities.iotEdge = TRUE", pred_edge);
}

static void test_th_query_run_comparison_operators_succeeds(void **state)
{
    (void)state;
    const char *base = "SELECT * FROM devices WHERE "
                       "properties.reported.telemetryConfig.sendFrequencyInSecs ";
    static const struct {
        const char *cond;
        bool (*pred)(const cJSON *);
    } cases[] = {
        {"= 60", pred_freq_eq_60},  {"!= 60", pred_freq_ne_60}, {"<> 60", pred_freq_ne_60},
        {"< 90", pred_freq_lt_90},  {"> 60", pred_freq_gt_60},  {"<= 60", pred_freq_le_60},
        {">= 90", pred_freq_ge_90},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char text[256];
        snprintf(text, sizeof text, "%s%s", base, cases[k].cond);
        check_filter(text, cases[k].pred);
    }
    check_filter("SELECT * FROM devices WHERE tags.location.region > 'F'", pred_region_after_f);
    check_filter("SELECT * FROM devices WHERE status <> 'enabled'", pred_not_enabled);
}

static void test_th_query_run_type_mismatch_is_undefined_succeeds(void **state)
{
    (void)state;
    /* d4's temperature is the string "hot": never > 10, and not NOT (> 10) either. */
    check_filter("SELECT * FROM devices WHERE properties.reported.temperature > 10",
                 pred_temp_above_10);
    check_filter("SELECT * FROM devices WHERE NOT (properties.reported.temperature > 10)",
                 pred_temp_at_most_10);
    check_filter_on("SELECT * FROM devices WHERE tags.location = 'US'", devs, NDEV, pred_none);
    check_filter_on("SELECT * FROM devices WHERE properties.reported.temperature = '25'", devs,
                    NDEV, pred_none);
    check_filter_on("SELECT * FROM devices WHERE tags.location IN ['US']", devs, NDEV, pred_none);
    check_filter_on("SELECT * FROM devices WHERE tags.nothing NIN ['US']", devs, NDEV, pred_none);
}

static void test_th_query_run_only_true_satisfies_where_succeeds(void **state)
{
    (void)state;
    static const char *const texts[] = {
        "SELECT * FROM devices WHERE tags.location",
        "SELECT * FROM devices WHERE 'true'",
        "SELECT * FROM devices WHERE null",
        "SELECT * FROM devices WHERE 1",
        "SELECT * FROM devices WHERE undefined",
        "SELECT * FROM devices WHERE false",
        "SELECT * FROM devices WHERE properties.reported.connectivity",
        "SELECT * FROM devices WHERE properties.reported.sensors",
    };
    for (size_t k = 0; k < sizeof texts / sizeof texts[0]; k++)
        assert_int_equal(check_filter_on(texts[k], devs, NDEV, pred_none), 0);
    assert_int_equal(check_filter_on("SELECT * FROM devices WHERE true", devs, NDEV, pred_all),
                     NDEV);
}

static void test_th_query_run_three_valued_logic_succeeds(void **state)
{
    (void)state;
    /* undefined OR true is true; undefined AND false is false; NOT undefined is undefined. */
    check_filter("SELECT * FROM devices WHERE tags.nothing = 1 OR status = 'enabled'",
                 pred_enabled);
    assert_int_equal(check_filter_on("SELECT * FROM devices WHERE NOT (tags.nothing = 1 AND false)",
                                     devs, NDEV, pred_all),
                     NDEV);
    check_filter_on("SELECT * FROM devices WHERE NOT (tags.nothing = 1)", devs, NDEV, pred_none);
    check_filter_on("SELECT * FROM devices WHERE tags.nothing = 1 AND true", devs, NDEV, pred_none);
    check_filter("SELECT * FROM devices WHERE connectionState = 'Connected' OR "
                 "capabilities.iotEdge = true AND NOT false",
                 pred_connected_or_edge);
    /* AND binds tighter than OR; NOT NOT cancels. */
    check_filter("SELECT * FROM devices WHERE false AND true OR NOT NOT capabilities.iotEdge",
                 pred_edge);
}

static void test_th_query_run_results_follow_doc_order_succeeds(void **state)
{
    (void)state;
    cJSON *reversed[NDEV];
    for (size_t k = 0; k < NDEV; k++)
        reversed[k] = devs[NDEV - 1 - k];
    check_filter_on("SELECT * FROM devices WHERE tags.location.region = 'US'", reversed, NDEV,
                    pred_us);
}

static void test_th_query_run_no_docs_succeeds(void **state)
{
    (void)state;
    bool twin = false;
    cJSON *items = run_on("SELECT * FROM devices", NULL, 0, &twin);
    assert_true(twin);
    assert_int_equal(cJSON_GetArraySize(items), 0);
    cJSON_Delete(items);
    twin = true;
    items = run_on("SELECT COUNT() AS n FROM devices", NULL, 0, &twin);
    assert_false(twin);
    cJSON *want = parse_doc("[{\"n\":0}]");
    assert_true(cJSON_Compare(items, want, true));
    cJSON_Delete(want);
    cJSON_Delete(items);
}

/* ---- TOP ---- */

static void test_th_query_run_top_limits_results_succeeds(void **state)
{
    (void)state;
    bool twin = false;
    cJSON *items =
        run_on("SELECT TOP 2 * FROM devices WHERE status = 'enabled'", devs, NDEV, &twin);
    assert_true(twin);
    size_t k = 0;
    for (size_t i = 0; i < NDEV && k < 2; i++) {
        if (pred_enabled(devs[i]))
            assert_true(cJSON_Compare(cJSON_GetArrayItem(items, (int)k++), devs[i], true));
    }
    assert_int_equal(cJSON_GetArraySize(items), 2);
    cJSON_Delete(items);

    items = run_on("SELECT TOP 0 * FROM devices", devs, NDEV, &twin);
    assert_int_equal(cJSON_GetArraySize(items), 0);
    cJSON_Delete(items);

    items = run_on("SELECT TOP 100 deviceId FROM devices", devs, NDEV, &twin);
    assert_false(twin);
    assert_int_equal(cJSON_GetArraySize(items), NDEV);
    cJSON_Delete(items);

    items = run_raw("SELECT TOP 0x2 connectionState, COUNT() AS n FROM devices "
                    "GROUP BY properties.reported.telemetryConfig.status, connectionState");
    assert_int_equal(cJSON_GetArraySize(items), 2);
    cJSON_Delete(items);
}

/* ---- projections ---- */

static void test_th_query_run_projection_stored_casing_succeeds(void **state)
{
    (void)state;
    cJSON *items = run_raw("SELECT DeviceId, LastActivityTime FROM devices "
                           "WHERE Tags.Location.Region = 'US'");
    size_t k = 0;
    for (size_t i = 0; i < NDEV; i++) {
        if (!pred_us(devs[i]))
            continue;
        cJSON *item = cJSON_GetArrayItem(items, (int)k++);
        assert_non_null(item);
        assert_int_equal(cJSON_GetArraySize(item), 2);
        assert_string_equal(cJSON_GetObjectItemCaseSensitive(item, "deviceId")->valuestring,
                            str_at(devs[i], "deviceId"));
        assert_string_equal(cJSON_GetObjectItemCaseSensitive(item, "lastActivityTime")->valuestring,
                            str_at(devs[i], "lastActivityTime"));
    }
    assert_int_equal(cJSON_GetArraySize(items), k);
    cJSON_Delete(items);
}

static void test_th_query_run_projection_alias_and_absent_omitted_succeeds(void **state)
{
    (void)state;
    cJSON *items = run_raw("SELECT deviceId AS id, properties.reported.connectivity, "
                           "properties.reported.telemetryConfig, tags.nothing AS gone "
                           "FROM devices");
    assert_int_equal(cJSON_GetArraySize(items), NDEV);
    for (size_t i = 0; i < NDEV; i++) {
        cJSON *want = cJSON_CreateObject();
        cJSON_AddStringToObject(want, "id", str_at(devs[i], "deviceId"));
        const cJSON *c = at(devs[i], "properties.reported.connectivity");
        if (c)
            cJSON_AddItemToObject(want, "connectivity", cJSON_Duplicate(c, true));
        const cJSON *t = at(devs[i], "properties.reported.telemetryConfig");
        if (t)
            cJSON_AddItemToObject(want, "telemetryConfig", cJSON_Duplicate(t, true));
        assert_true(cJSON_Compare(cJSON_GetArrayItem(items, (int)i), want, true));
        cJSON_Delete(want);
    }
    cJSON_Delete(items);
}

static void test_th_query_run_projection_all_absent_gives_empty_object_succeeds(void **state)
{
    (void)state;
    cJSON *items = run_raw("SELECT tags.nothing FROM devices WHERE deviceId = 'd4'");
    cJSON *want = parse_doc("[{}]");
    assert_true(cJSON_Compare(items, want, true));
    cJSON_Delete(want);
    cJSON_Delete(items);
}

static void test_th_query_run_projection_unnamed_expressions_succeeds(void **state)
{
    (void)state;
    cJSON *items = run_raw("SELECT deviceId, UPPER(deviceId), 1 + 2 * 3, 'x' AS k, (7 - 1) / 4 "
                           "FROM devices WHERE deviceId = 'd2'");
    cJSON *want =
        parse_doc("[{\"deviceId\":\"d2\",\"$1\":\"D2\",\"$2\":7,\"k\":\"x\",\"$3\":1.5}]");
    assert_true(cJSON_Compare(items, want, true));
    cJSON_Delete(want);
    cJSON_Delete(items);
}

static void test_th_query_run_projection_of_modules_succeeds(void **state)
{
    (void)state;
    bool twin = true;
    cJSON *items = run_on("SELECT devices.modules.moduleId, deviceId FROM devices.modules "
                          "WHERE deviceId = 'd1'",
                          mods, NMOD, &twin);
    assert_false(twin);
    size_t k = 0;
    for (size_t i = 0; i < NMOD; i++) {
        if (!pred_module_d1(mods[i]))
            continue;
        cJSON *item = cJSON_GetArrayItem(items, (int)k++);
        assert_string_equal(cJSON_GetObjectItemCaseSensitive(item, "moduleId")->valuestring,
                            str_at(mods[i], "moduleId"));
        assert_string_equal(cJSON_GetObjectItemCaseSensitive(item, "deviceId")->valuestring, "d1");
    }
    assert_int_equal(cJSON_GetArraySize(items), k);
    cJSON_Delete(items);
}

/* ---- constants and arithmetic ---- */

static void test_th_query_run_constants_succeeds(void **state)
{
    (void)state;
    cJSON *items = run_raw(
        "SELECT 0x3C AS hex, 0XfF AS hex2, 1.5e2 AS exp, -2.25 AS neg, 'it\\'s' AS sq, "
        "\"say \\\"hi\\\"\" AS dq, 'back\\\\slash' AS bs, 'caf\\u00e9 \\uD83D\\uDE00' AS uni, "
        "\"it's\" AS mixed, true AS t, false AS f, null AS n, undefined AS u, "
        "[1, 'a', [true, null], -3, []] AS arr FROM devices WHERE deviceId = 'd1'");
    cJSON *want = parse_doc("[{\"hex\":60,\"hex2\":255,\"exp\":150,\"neg\":-2.25,\"sq\":\"it's\","
                            "\"dq\":\"say \\\"hi\\\"\",\"bs\":\"back\\\\slash\","
                            "\"uni\":\"caf\xc3\xa9 \xf0\x9f\x98\x80\",\"mixed\":\"it's\","
                            "\"t\":true,\"f\":false,\"n\":null,"
                            "\"arr\":[1,\"a\",[true,null],-3,[]]}]");
    assert_true(cJSON_Compare(items, want, true));
    cJSON_Delete(want);
    cJSON_Delete(items);
}

static void test_th_query_run_arithmetic_succeeds(void **state)
{
    (void)state;
    cJSON *items =
        run_raw("SELECT properties.reported.telemetryConfig.sendFrequencyInSecs * 2 + 1 AS a, "
                "properties.reported.telemetryConfig.sendFrequencyInSecs % 7 AS m, "
                "-properties.reported.telemetryConfig.sendFrequencyInSecs AS n, "
                "(1 + 2) * 3 - 10 / 4 AS p, -7 % 2 AS negmod, 5.5 % 2 AS fmod, 1 / 0 AS inf, "
                "1 % 0 AS zmod, 'a' + 1 AS strplus, +tags.location AS objsign FROM devices");
    assert_int_equal(cJSON_GetArraySize(items), NDEV);
    for (size_t i = 0; i < NDEV; i++) {
        cJSON *want = cJSON_CreateObject();
        double f;
        if (pred_freq(devs[i], &f)) {
            cJSON_AddNumberToObject(want, "a", f * 2 + 1);
            cJSON_AddNumberToObject(want, "m", (double)((long long)f % 7));
            cJSON_AddNumberToObject(want, "n", -f);
        }
        cJSON_AddNumberToObject(want, "p", 6.5);
        cJSON_AddNumberToObject(want, "negmod", -1);
        cJSON_AddNumberToObject(want, "fmod", 1.5);
        cJSON *got = cJSON_GetArrayItem(items, (int)i);
        if (!cJSON_Compare(got, want, true)) {
            char *g = cJSON_PrintUnformatted(got), *w = cJSON_PrintUnformatted(want);
            fail_msg("got %s want %s", g, w);
        }
        cJSON_Delete(want);
    }
    cJSON_Delete(items);
}

static void test_th_query_run_math_functions_succeeds(void **state)
{
    (void)state;
    cJSON *items = run_raw("SELECT ABS(properties.reported.temperature) AS a, "
                           "FLOOR(properties.reported.temperature) AS f, "
                           "CEILING(properties.reported.temperature) AS c FROM devices");
    for (size_t i = 0; i < NDEV; i++) {
        cJSON *want = cJSON_CreateObject();
        double t;
        if (num_at(devs[i], "properties.reported.temperature", &t)) {
            double fl = (double)(long long)t, ce;
            if (fl > t)
                fl -= 1;
            ce = fl == t ? t : fl + 1;
            cJSON_AddNumberToObject(want, "a", t < 0 ? -t : t);
            cJSON_AddNumberToObject(want, "f", fl);
            cJSON_AddNumberToObject(want, "c", ce);
        }
        assert_true(cJSON_Compare(cJSON_GetArrayItem(items, (int)i), want, true));
        cJSON_Delete(want);
    }
    cJSON_Delete(items);
    /* -3.5: floor -4, ceiling -3, abs 3.5 (spelled out once). */
    items = run_raw("SELECT FLOOR(-3.5) AS f, CEILING(-3.5) AS c, ABS(-3.5) AS a, "
                    "FLOOR('x') AS s FROM devices WHERE deviceId = 'd1'");
    cJSON *want = parse_doc("[{\"f\":-4,\"c\":-3,\"a\":3.5}]");
    assert_true(cJSON_Compare(items, want, true));
    cJSON_Delete(want);
    cJSON_Delete(items);
}

/* ---- functions ---- */

static void test_th_query_run_type_functions_succeeds(void **state)
{
    (void)state;
    check_filter("SELECT * FROM devices WHERE IS_NULL(properties.reported.connectivity)",
                 pred_connectivity_null);
    check_filter("SELECT * FROM devices WHERE IS_STRING(properties.reported.temperature)",
                 pred_temp_is_string);
    check_filter("SELECT * FROM devices WHERE is_number(properties.reported.temperature)",
                 pred_temp_is_number);
    check_filter("SELECT * FROM devices WHERE IS_BOOL(capabilities.iotEdge) AND "
                 "IS_OBJECT(tags.location)",
                 pred_located);
    check_filter("SELECT * FROM devices WHERE IS_ARRAY(properties.reported.sensors)",
                 pred_has_sensors_array);
    check_filter("SELECT * FROM devices WHERE IS_PRIMITIVE(properties.reported.connectivity)",
                 pred_connectivity_defined);
    cJSON *items = run_raw("SELECT IS_DEFINED(undefined) AS a, IS_DEFINED(null) AS b, "
                           "IS_NULL(tags.nothing) AS c, IS_PRIMITIVE(tags) AS d, "
                           "IS_PRIMITIVE('s') AS e, IS_OBJECT([1]) AS f, IS_ARRAY([1]) AS g "
                           "FROM devices WHERE deviceId = 'd1'");
    cJSON *want = parse_doc("[{\"a\":false,\"b\":true,\"c\":false,\"d\":false,\"e\":true,"
                            "\"f\":false,\"g\":true}]");
    assert_true(cJSON_Compare(items, want, true));
    cJSON_Delete(want);
    cJSON_Delete(items);
}

static void test_th_query_run_string_functions_in_where_succeeds(void **state)
{
    (void)state;
    check_filter("SELECT * FROM devices WHERE STARTSWITH(properties.reported.firmware, '1')",
                 pred_firmware_starts_1);
    check_filter("SELECT * FROM devices WHERE starts_with(properties.reported.firmware, '1')",
                 pred_firmware_starts_1);
    check_filter("SELECT * FROM devices WHERE ENDSWITH(deviceId, '3')", pred_id_ends_3);
    check_filter("SELECT * FROM devices WHERE ends_with(deviceId, '3')", pred_id_ends_3);
    check_filter("SELECT * FROM devices WHERE CONTAINS(tags.location.plant, 'mond')",
                 pred_plant_contains_mond);
    check_filter("SELECT * FROM devices WHERE LOWER(tags.location.region) = 'us'", pred_us);
    check_filter("SELECT * FROM devices WHERE UPPER(LOWER(tags.location.region)) = 'US'", pred_us);
}

static void test_th_query_run_string_functions_values_succeeds(void **state)
{
    (void)state;
    cJSON *items = run_raw(
        "SELECT LENGTH(tags.location.plant) AS len, LOWER(tags.location.plant) AS lo, "
        "UPPER(tags.location.plant) AS up, CONCAT(deviceId, '-', tags.location.region) AS cat, "
        "SUBSTRING(tags.location.plant, 2, 4) AS sub, SUBSTRING('abc', 1, 99) AS tail, "
        "SUBSTRING('abc', -5, 2) AS head, INDEX_OF(tags.location.plant, 'mond') AS idx, "
        "INDEX_OF('abc', 'z') AS none, LENGTH('caf\\u00e9') AS ulen, "
        "INDEX_OF('\\u00e9t\\u00e9', 't') AS uidx, SUBSTRING('\\u00e9t\\u00e9', 1, 1) AS usub, "
        "STARTSWITH('abc', '') AS empty, CONTAINS(tags, 'x') AS notstr, "
        "CONCAT('a', tags.nothing) AS undef, LENGTH(42) AS numlen "
        "FROM devices WHERE deviceId = 'd1'");
    const char *plant = str_at(devs[0], "tags.location.plant");
    char lo[64], up[64], cat[64], sub[8];
    size_t n = strlen(plant);
    for (size_t k = 0; k <= n; k++) {
        lo[k] = (char)(plant[k] >= 'A' && plant[k] <= 'Z' ? plant[k] + 32 : plant[k]);
        up[k] = (char)(plant[k] >= 'a' && plant[k] <= 'z' ? plant[k] - 32 : plant[k]);
    }
    snprintf(cat, sizeof cat, "%s-%s", str_at(devs[0], "deviceId"),
             str_at(devs[0], "tags.location.region"));
    snprintf(sub, sizeof sub, "%.4s", plant + 2);
    cJSON *want = cJSON_CreateObject();
    cJSON_AddNumberToObject(want, "len", (double)n);
    cJSON_AddStringToObject(want, "lo", lo);
    cJSON_AddStringToObject(want, "up", up);
    cJSON_AddStringToObject(want, "cat", cat);
    cJSON_AddStringToObject(want, "sub", sub);
    cJSON_AddStringToObject(want, "tail", "bc");
    cJSON_AddStringToObject(want, "head", "ab");
    cJSON_AddNumberToObject(want, "idx", (double)(strstr(plant, "mond") - plant));
    cJSON_AddNumberToObject(want, "none", -1);
    cJSON_AddNumberToObject(want, "ulen", 4);
    cJSON_AddNumberToObject(want, "uidx", 1);
    cJSON_AddStringToObject(want, "usub", "t");
    cJSON_AddTrueToObject(want, "empty");
    cJSON *got = cJSON_GetArrayItem(items, 0);
    if (!cJSON_Compare(got, want, true)) {
        char *g = cJSON_PrintUnformatted(got), *w = cJSON_PrintUnformatted(want);
        fail_msg("got %s want %s", g, w);
    }
    assert_int_equal(cJSON_GetArraySize(items), 1);
    cJSON_Delete(want);
    cJSON_Delete(items);
}

/* ---- aggregates ---- */

static void check_single(cJSON *items, const char *json)
{
    cJSON *want = parse_doc(json);
    if (!cJSON_Compare(items, want, true)) {
        char *g = cJSON_PrintUnformatted(items);
        fail_msg("got %s want %s", g, json);
    }
    cJSON_Delete(want);
    cJSON_Delete(items);
}

static void test_th_query_run_count_with_alias_succeeds(void **state)
{
    (void)state;
    size_t n = 0;
    for (size_t i = 0; i < NDEV; i++)
        n += pred_enabled(devs[i]);
    char want[64];
    snprintf(want, sizeof want, "[{\"numberOfDevices\":%zu}]", n);
    check_single(run_raw("SELECT COUNT() AS numberOfDevices FROM devices WHERE status = 'enabled'"),
                 want);
}

static void test_th_query_run_count_without_alias_dollar_one_succeeds(void **state)
{
    (void)state;
    char want[64];
    snprintf(want, sizeof want, "[{\"$1\":%zu}]", NDEV);
    check_single(run_raw("SELECT count() FROM devices"), want);
    check_single(run_raw("SELECT COUNT() FROM devices WHERE tags.nothing = 1"), "[{\"$1\":0}]");
}

static void test_th_query_run_sum_avg_min_max_succeeds(void **state)
{
    (void)state;
    double sum = 0, min = 0;
    size_t nums = 0, strings = 0;
    const char *maxs = NULL;
    for (size_t i = 0; i < NDEV; i++) {
        double t;
        if (num_at(devs[i], "properties.reported.temperature", &t)) {
            sum += t;
            min = nums == 0 || t < min ? t : min;
            nums++;
        } else if (str_at(devs[i], "properties.reported.temperature")) {
            maxs = str_at(devs[i], "properties.reported.temperature");
            strings++;
        }
    }
    assert_true(nums > 1 && strings == 1);
    cJSON *want = cJSON_CreateArray();
    cJSON *obj = cJSON_CreateObject();
    cJSON_AddItemToArray(want, obj);
    cJSON_AddNumberToObject(obj, "s", sum);
    cJSON_AddNumberToObject(obj, "a", sum / (double)nums);
    cJSON_AddNumberToObject(obj, "lo", min);
    /* Strings sort after numbers (query.h), so MAX over a mix is the string. */
    cJSON_AddStringToObject(obj, "hi", maxs);
    cJSON_AddStringToObject(obj, "fw_lo", "1.2.3");
    cJSON_AddStringToObject(obj, "fw_hi", "2.0.0");
    cJSON_AddNumberToObject(obj, "none", 0);
    char *text = cJSON_PrintUnformatted(want);
    check_single(run_raw("SELECT SUM(properties.reported.temperature) AS s, "
                         "AVG(properties.reported.temperature) AS a, "
                         "MIN(properties.reported.temperature) AS lo, "
                         "MAX(properties.reported.temperature) AS hi, "
                         "Min(properties.reported.firmware) AS fw_lo, "
                         "max(properties.reported.firmware) AS fw_hi, "
                         "SUM(tags.nothing) AS none, AVG(tags.nothing) AS avgnone, "
                         "MIN(tags.nothing) AS minnone FROM devices"),
                 text);
    cJSON_free(text);
    cJSON_Delete(want);
}

/*
 * The independent GROUP BY: distinct values of `path` (NULL = absent) among
 * docs matching pred, first-seen order, with counts.
 */
struct group_exp {
    const cJSON *value;
    size_t count;
};

static size_t group_docs(const char *path, bool (*pred)(const cJSON *), struct group_exp *out)
{
    size_t n = 0;
    for (size_t i = 0; i < NDEV; i++) {
        if (!pred(devs[i]))
            continue;
        const cJSON *v = at(devs[i], path);
        size_t g = 0;
        for (; g < n; g++) {
            if ((!v && !out[g].value) ||
                (v && out[g].value && cJSON_Compare(v, out[g].value, true)))
                break;
        }
        if (g == n)
            out[n++] = (struct group_exp){v, 0};
        out[g].count++;
    }
    return n;
}

static void check_groups(cJSON *items, const char *key, const char *count_key,
                         const struct group_exp *groups, size_t n)
{
    assert_int_equal(cJSON_GetArraySize(items), n);
    for (size_t g = 0; g < n; g++) {
        cJSON *item = cJSON_GetArrayItem(items, (int)g);
        cJSON *want = cJSON_CreateObject();
        if (groups[g].value)
            cJSON_AddItemToObject(want, key, cJSON_Duplicate(groups[g].value, true));
        cJSON_AddNumberToObject(want, count_key, (double)groups[g].count);
        if (!cJSON_Compare(item, want, true)) {
            char *gs = cJSON_PrintUnformatted(item), *ws = cJSON_PrintUnformatted(want);
            fail_msg("group %zu: got %s want %s", g, gs, ws);
        }
        cJSON_Delete(want);
    }
    cJSON_Delete(items);
}

static void test_th_query_run_group_by_doc_example_succeeds(void **state)
{
    (void)state;
    struct group_exp groups[NDEV];
    size_t n = group_docs("properties.reported.telemetryConfig.status", pred_all, groups);
    assert_true(n >= 3);
    check_groups(run_raw("SELECT properties.reported.telemetryConfig.status AS status, "
                         "COUNT() AS numberOfDevices FROM devices "
                         "GROUP BY properties.reported.telemetryConfig.status"),
                 "status", "numberOfDevices", groups, n);
}

static void test_th_query_run_group_by_connection_state_succeeds(void **state)
{
    (void)state;
    struct group_exp groups[NDEV];
    size_t n = group_docs("connectionState", pred_all, groups);
    assert_int_equal(n, 2);
    /* Unaliased, the group attribute keeps its stored name. */
    check_groups(run_raw("SELECT COUNT() AS numberOfDevices, connectionState FROM devices "
                         "GROUP BY connectionState"),
                 "connectionState", "numberOfDevices", groups, n);
    n = group_docs("connectionState", pred_enabled, groups);
    check_groups(run_raw("SELECT ConnectionState, COUNT() AS c FROM devices "
                         "WHERE status = 'enabled' GROUP BY devices.connectionstate"),
                 "connectionState", "c", groups, n);
}

static void test_th_query_run_group_by_absent_attribute_succeeds(void **state)
{
    (void)state;
    struct group_exp groups[NDEV];
    size_t n = group_docs("tags.location.region", pred_all, groups);
    size_t absent = 0;
    for (size_t g = 0; g < n; g++)
        absent += groups[g].value == NULL;
    assert_int_equal(absent, 1);
    check_groups(run_raw("SELECT tags.location.region, COUNT() AS n FROM devices "
                         "GROUP BY tags.location.region"),
                 "region", "n", groups, n);
}

static void test_th_query_run_group_by_two_paths_with_aggregates_succeeds(void **state)
{
    (void)state;
    cJSON *items =
        run_raw("SELECT status, connectionState, COUNT() AS n, "
                "MAX(properties.reported.telemetryConfig.sendFrequencyInSecs) AS maxFreq "
                "FROM devices GROUP BY status, connectionState");
    /* Walk: distinct (status, connectionState) pairs in first-seen order. */
    const char *seen[NDEV][2];
    size_t counts[NDEV] = {0};
    double tops[NDEV];
    bool has_top[NDEV] = {false};
    size_t n = 0;
    for (size_t i = 0; i < NDEV; i++) {
        const char *s = str_at(devs[i], "status"), *c = str_at(devs[i], "connectionState");
        size_t g = 0;
        while (g < n && !(strcmp(seen[g][0], s) == 0 && strcmp(seen[g][1], c) == 0))
            g++;
        if (g == n) {
            seen[n][0] = s;
            seen[n][1] = c;
            n++;
        }
        counts[g]++;
        double f;
        if (pred_freq(devs[i], &f) && (!has_top[g] || f > tops[g])) {
            tops[g] = f;
            has_top[g] = true;
        }
    }
    assert_int_equal(cJSON_GetArraySize(items), n);
    for (size_t g = 0; g < n; g++) {
        cJSON *want = cJSON_CreateObject();
        cJSON_AddStringToObject(want, "status", seen[g][0]);
        cJSON_AddStringToObject(want, "connectionState", seen[g][1]);
        cJSON_AddNumberToObject(want, "n", (double)counts[g]);
        if (has_top[g])
            cJSON_AddNumberToObject(want, "maxFreq", tops[g]);
        assert_true(cJSON_Compare(cJSON_GetArrayItem(items, (int)g), want, true));
        cJSON_Delete(want);
    }
    cJSON_Delete(items);
}

static void test_th_query_run_group_by_no_match_empty_succeeds(void **state)
{
    (void)state;
    check_single(run_raw("SELECT status, COUNT() AS n FROM devices WHERE false GROUP BY status"),
                 "[]");
}

static void test_th_query_run_twin_flag_per_shape_succeeds(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        bool twin;
    } cases[] = {
        {"SELECT * FROM devices", true},
        {"SELECT TOP 1 * FROM devices", true},
        {"SELECT deviceId FROM devices", false},
        {"SELECT COUNT() FROM devices", false},
        {"SELECT status, COUNT() AS n FROM devices GROUP BY status", false},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        bool twin = !cases[k].twin;
        cJSON_Delete(run_on(cases[k].text, devs, NDEV, &twin));
        assert_int_equal(twin, cases[k].twin);
    }
}

/* ---- parsing details ---- */

static void test_th_query_parse_unterminated_input_slice_succeeds(void **state)
{
    (void)state;
    /* len bounds the text: the rest of the buffer is not part of the query. */
    const char buf[] = "SELECT * FROM devices WHERE deviceId = 'd1' garbage";
    struct th_query *q = NULL;
    assert_int_equal(th_query_parse(buf, strlen(buf) - strlen(" garbage"), &q, NULL), TH_OK);
    th_query_free(q);
}

static void test_th_query_parse_whitespace_and_newlines_succeeds(void **state)
{
    (void)state;
    check_filter("\n  SELECT\t*\r\n FROM   devices\n WHERE\ttags.location.region='US'  \n",
                 pred_us);
}

static void test_th_query_parse_at_length_limit_succeeds(void **state)
{
    (void)state;
    /* 8192 characters, most of them two-byte 'é' inside a string: counted as characters. */
    const char *head = "SELECT * FROM devices WHERE deviceId != '";
    size_t fill = TH_QUERY_MAX_CHARS - strlen(head) - 1;
    char *text = malloc(strlen(head) + fill * 2 + 2);
    assert_non_null(text);
    strcpy(text, head);
    char *p = text + strlen(head);
    for (size_t k = 0; k < fill; k++) {
        *p++ = '\xc3';
        *p++ = '\xa9';
    }
    *p++ = '\'';
    *p = '\0';
    struct th_query *q = NULL;
    assert_int_equal(th_query_parse(text, strlen(text), &q, NULL), TH_OK);
    th_query_free(q);
    free(text);
}

static void test_th_query_free_null_succeeds(void **state)
{
    (void)state;
    th_query_free(NULL);
}

/* ---- refusals ---- */

static void test_th_query_parse_error_position_field_fails(void **state)
{
    (void)state;
    /* The column is a field: callers never read it back out of the message. */
    struct th_query *q = NULL;
    struct th_error err = {0};
    const char *text = "SELECT * FORM devices";
    assert_int_equal(th_query_parse(text, strlen(text), &q, &err), TH_ERR_INVAL);
    assert_int_equal(err.position, 10);
    assert_int_equal(err.code, TH_EC_ARGUMENT_INVALID);
    text = "SELECT * FROM";
    assert_int_equal(th_query_parse(text, strlen(text), &q, &err), TH_ERR_INVAL);
    assert_int_equal(err.position, strlen(text) + 1);
    assert_null(q);
}

static void test_th_query_parse_misspelled_from_fails(void **state)
{
    (void)state;
    check_parse_message("SELECT * FORM devices", TH_ERR_INVAL,
                        "query: expected FROM at column 10 near 'FORM devices'");
}

static void test_th_query_parse_unknown_function_fails(void **state)
{
    (void)state;
    check_parse_message("SELECT * FROM devices WHERE FOO(deviceId)", TH_ERR_INVAL,
                        "query: unknown function 'FOO' at column 29 near 'FOO(deviceId)'");
    check_parse_fails_at("SELECT * FROM devices WHERE is_defined(a) AND sqrt(4) = 2",
                         "unknown function 'sqrt'", "sqrt");
}

static void test_th_query_parse_group_by_on_modules_fails(void **state)
{
    (void)state;
    check_parse_fails_at("SELECT moduleId, COUNT() AS n FROM devices.modules GROUP BY moduleId",
                         "GROUP BY is supported only FROM devices", "GROUP BY");
}

static void test_th_query_parse_too_long_fails(void **state)
{
    (void)state;
    size_t len = TH_QUERY_MAX_CHARS + 1;
    char *text = malloc(len + 1);
    assert_non_null(text);
    memset(text, ' ', len);
    memcpy(text, "SELECT * FROM devices", 21);
    text[len] = '\0';
    check_parse_message(text, TH_ERR_TOO_LARGE,
                        "query: text is 8193 characters long, the limit is 8192");
    /* One character fewer is fine. */
    struct th_query *q = NULL;
    assert_int_equal(th_query_parse(text, len - 1, &q, NULL), TH_OK);
    th_query_free(q);
    free(text);
}

static void test_th_query_parse_unterminated_string_fails(void **state)
{
    (void)state;
    check_parse_message("SELECT * FROM devices WHERE deviceId = 'd1", TH_ERR_INVAL,
                        "query: unterminated string at column 40 near ''d1'");
    check_parse_fails_at("SELECT * FROM devices WHERE deviceId = \"d1\\\"", "unterminated string",
                         "\"d1");
    check_parse_fails_at("SELECT * FROM devices WHERE deviceId = 'd1\\", "unterminated string",
                         "'d1");
}

static void test_th_query_parse_bad_string_escape_fails(void **state)
{
    (void)state;
    check_parse_fails_at("SELECT * FROM devices WHERE deviceId = 'a\\qb'",
                         "invalid escape in string", "\\qb");
    check_parse_fails_at("SELECT * FROM devices WHERE deviceId = 'a\\u12'",
                         "invalid \\u escape in string, expected four hex digits", "\\u12");
    check_parse_fails_at("SELECT * FROM devices WHERE deviceId = 'a\\uD83Dx'",
                         "invalid \\u escape in string, high surrogate without low", "\\uD83D");
    check_parse_fails_at("SELECT * FROM devices WHERE deviceId = 'a\\u0000'",
                         "\\u0000 is not allowed in a string", "\\u0000");
}

static void test_th_query_parse_syntax_errors_fails(void **state)
{
    (void)state;
    static const struct {
        const char *text, *what, *anchor;
    } cases[] = {
        {"", "expected SELECT", NULL},
        {"   ", "expected SELECT", NULL},
        {"DELETE FROM devices", "expected SELECT", "DELETE"},
        {"SELECT FROM devices", "expected an expression", "FROM"},
        {"SELECT *", "expected FROM", NULL},
        {"SELECT * FROM", "expected devices, devices.modules or devices.jobs after FROM", NULL},
        {"SELECT * FROM twins", "expected devices, devices.modules or devices.jobs after FROM",
         "twins"},
        {"SELECT * FROM jobs", "expected devices, devices.modules or devices.jobs after FROM",
         "jobs"},
        {"SELECT * FROM devices.things",
         "expected devices, devices.modules or devices.jobs after FROM", "things"},
        {"SELECT * FROM devices.jobs.x", "expected end of query", ".x"},
        {"SELECT * FROM devices WHERE", "expected an expression", NULL},
        {"SELECT * FROM devices WHERE deviceId =", "expected an expression", NULL},
        {"SELECT * FROM devices WHERE deviceId = 'a' ORDER BY deviceId", "expected end of query",
         "ORDER"},
        {"SELECT * FROM devices WHERE (deviceId = 'a'", "expected ')'", NULL},
        {"SELECT * FROM devices WHERE deviceId = 'a' = true", "expected end of query", "= true"},
        {"SELECT * FROM devices WHERE deviceId IN 'a'", "expected '[' after IN", "'a'"},
        {"SELECT * FROM devices WHERE deviceId NIN ('a')", "expected '[' after NIN", "('a')"},
        {"SELECT * FROM devices WHERE deviceId IN ['a' 'b']", "expected ',' or ']' in the array",
         "'b'"},
        {"SELECT * FROM devices WHERE deviceId IN ['a', deviceId]",
         "expected a constant in the array", "deviceId]"},
        {"SELECT * FROM devices WHERE deviceId IN [undefined]",
         "undefined is not allowed in an array", "undefined"},
        {"SELECT * FROM devices WHERE tags. = 1", "expected an attribute name after '.'", "= 1"},
        {"SELECT * FROM devices WHERE group = 1", "expected an expression", "group"},
        {"SELECT * FROM devices WHERE deviceId ! 'a'", "unexpected character, did you mean '!='",
         "! 'a'"},
        {"SELECT * FROM devices WHERE deviceId = #", "unexpected character", "#"},
        {"SELECT * FROM devices WHERE version = 12abc", "invalid number", "12abc"},
        {"SELECT * FROM devices WHERE version = 0x", "invalid hex number", "0x"},
        {"SELECT * FROM devices WHERE version = 1e", "invalid number", "1e"},
        {"SELECT * FROM devices WHERE version = 1e999", "number out of range", "1e999"},
        {"SELECT TOP * FROM devices", "expected a whole number after TOP", "*"},
        {"SELECT TOP 1.5 * FROM devices", "expected a whole number after TOP", "1.5"},
        {"SELECT TOP -1 * FROM devices", "expected a whole number after TOP", "-1"},
        {"SELECT deviceId AS FROM devices", "expected a name after AS", "FROM"},
        {"SELECT * FROM devices GROUP status", "expected BY", "status"},
        {"SELECT LOWER(deviceId, 'x') FROM devices", "LOWER takes 1 argument, not 2", "LOWER"},
        {"SELECT SUBSTRING('abc', 1) FROM devices", "SUBSTRING takes 3 arguments, not 2",
         "SUBSTRING"},
        {"SELECT CONCAT('a') FROM devices", "CONCAT takes at least 2 arguments, not 1", "CONCAT"},
        {"SELECT IS_DEFINED() FROM devices", "IS_DEFINED takes 1 argument, not 0", "IS_DEFINED"},
        {"SELECT LOWER(deviceId FROM devices", "expected ',' or ')' in the call to LOWER", "FROM"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
        check_parse_fails_at(cases[k].text, cases[k].what, cases[k].anchor);
}

static void test_th_query_parse_aggregate_misuse_fails(void **state)
{
    (void)state;
    check_parse_fails_at("SELECT * FROM devices WHERE COUNT() > 1",
                         "aggregate COUNT() is only allowed as a SELECT item", "COUNT");
    check_parse_fails_at("SELECT COUNT() + 1 FROM devices", "expected FROM", "+ 1");
    check_parse_fails_at("SELECT COUNT(deviceId) FROM devices", "COUNT() takes no argument",
                         "deviceId)");
    check_parse_fails_at("SELECT AVG() FROM devices", "AVG needs an attribute path", "AVG");
    check_parse_fails_at("SELECT SUM(1) FROM devices", "expected an attribute name", "1)");
    check_parse_fails_at("SELECT MAX(version FROM devices", "expected ')' after the attribute path",
                         "FROM");
    check_parse_fails_at("SELECT deviceId, COUNT() AS n FROM devices",
                         "select item must be an aggregate when aggregates are selected "
                         "without GROUP BY",
                         "deviceId");
    check_parse_fails_at("SELECT deviceId, COUNT() AS n FROM devices GROUP BY status",
                         "select item must be an aggregate or a GROUP BY attribute", "deviceId");
    check_parse_fails_at("SELECT LOWER(status), COUNT() AS n FROM devices GROUP BY status",
                         "select item must be an aggregate or a GROUP BY attribute", "LOWER");
    check_parse_fails_at("SELECT * FROM devices GROUP BY status",
                         "GROUP BY needs a select list, not *", "GROUP");
    check_parse_fails_at("SELECT status, COUNT() AS n FROM devices GROUP BY LOWER(status)",
                         "expected end of query", "(status)");
}

static void test_th_query_parse_duplicate_result_name_fails(void **state)
{
    (void)state;
    check_parse_fails_at("SELECT deviceId AS a, status AS a FROM devices",
                         "duplicate result name 'a'", "status");
    check_parse_fails_at("SELECT tags.x, properties.reported.x FROM devices",
                         "duplicate result name 'x'", "properties");
}

static void test_th_query_parse_nesting_too_deep_fails(void **state)
{
    (void)state;
    char text[512];
    int n = snprintf(text, sizeof text, "SELECT * FROM devices WHERE ");
    for (int k = 0; k < 100; k++)
        text[n++] = '(';
    text[n] = '\0';
    /* The 65th parenthesis is one too many. */
    check_parse_fails_at_offset(text, "expression nested too deeply", strchr(text, '(') + 64);
}

static void test_th_query_parse_bad_arguments_fails(void **state)
{
    (void)state;
    struct th_query *q = (struct th_query *)&q;
    struct th_error err = {0};
    assert_int_equal(th_query_parse(NULL, 5, &q, &err), TH_ERR_INVAL);
    assert_null(q);
    assert_int_equal(err.code, 400004);
    assert_int_equal(th_query_parse("SELECT * FROM devices", 21, NULL, &err), TH_ERR_INVAL);
    /* NULL with length 0 is the empty query. */
    assert_int_equal(th_query_parse(NULL, 0, &q, &err), TH_ERR_INVAL);
    assert_string_equal(err.message, "query: expected SELECT at column 1 (end of query)");
}

static void test_th_query_run_bad_arguments_fails(void **state)
{
    (void)state;
    struct th_query *q = parse_ok("SELECT * FROM devices");
    cJSON *items = (cJSON *)&items;
    bool twin;
    struct th_error err = {0};
    assert_int_equal(th_query_run(NULL, devs, NDEV, &items, &twin, &err), TH_ERR_INVAL);
    assert_null(items);
    assert_int_equal(err.code, 400004);
    assert_int_equal(th_query_run(q, NULL, 3, &items, &twin, &err), TH_ERR_INVAL);
    assert_int_equal(th_query_run(q, devs, NDEV, NULL, &twin, &err), TH_ERR_INVAL);
    cJSON *holes[2] = {devs[0], NULL};
    assert_int_equal(th_query_run(q, holes, 2, &items, &twin, &err), TH_ERR_INVAL);
    assert_null(items);
    th_query_free(q);
}

/* ---- FROM devices.jobs ---- */

static void test_th_query_parse_jobs_documented_shapes_succeeds(void **state)
{
    /* The shapes of "Get started with jobs queries" (iot-hub-devguide-query-language.md). */
    (void)state;
    static const char *const texts[] = {
        "SELECT * FROM devices.jobs",
        "SELECT * FROM devices.jobs WHERE devices.jobs.deviceId = 'myDeviceId'",
        "SELECT * FROM devices.jobs WHERE devices.jobs.deviceId = 'myDeviceId' AND "
        "devices.jobs.jobType = 'scheduleUpdateTwin' AND devices.jobs.status = 'completed' AND "
        "devices.jobs.createdTimeUtc > '2016-09-01'",
        "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'myJobId'",
        "select top 5 * from DEVICES.JOBS where jobId = 'j' or is_defined(outcome)",
    };
    for (size_t k = 0; k < sizeof texts / sizeof texts[0]; k++) {
        struct th_query *q = parse_ok(texts[k]);
        assert_int_equal(th_query_source(q), TH_QUERY_JOBS);
        /* twinhub has no jobs: nothing to run over, an empty result of job records */
        cJSON *items = NULL;
        bool twin = false;
        assert_int_equal(th_query_run(q, NULL, 0, &items, &twin, NULL), TH_OK);
        assert_int_equal(cJSON_GetArraySize(items), 0);
        assert_string_equal(th_query_item_type(q, twin), "deviceJob");
        cJSON_Delete(items);
        th_query_free(q);
    }
    /* the other collections keep their item types */
    struct th_query *q = parse_ok("SELECT * FROM devices");
    assert_string_equal(th_query_item_type(q, true), "twin");
    assert_string_equal(th_query_item_type(q, false), "raw");
    th_query_free(q);
}

static void test_th_query_run_jobs_filters_job_records_succeeds(void **state)
{
    /* Job records (should twinhub ever have them) are filtered on their own properties. */
    (void)state;
    cJSON *docs[2] = {parse_doc("{\"deviceId\":\"d1\",\"jobId\":\"j1\",\"status\":\"completed\"}"),
                      parse_doc("{\"deviceId\":\"d2\",\"jobId\":\"j1\",\"status\":\"running\"}")};
    bool twin = false;
    cJSON *items =
        run_on("SELECT * FROM devices.jobs WHERE devices.jobs.deviceId = 'd2'", docs, 2, &twin);
    assert_int_equal(cJSON_GetArraySize(items), 1);
    assert_true(str_is(items->child, "status", "running"));
    cJSON_Delete(items);
    cJSON_Delete(docs[0]);
    cJSON_Delete(docs[1]);
}

static void test_th_query_parse_jobs_unsupported_fails(void **state)
{
    /* What the article says jobs queries do not support. */
    (void)state;
    check_parse_fails_at("SELECT deviceId FROM devices.jobs",
                         "FROM devices.jobs takes SELECT * only, no projections or aggregates",
                         "deviceId");
    check_parse_fails_at("SELECT COUNT() AS n FROM devices.jobs",
                         "FROM devices.jobs takes SELECT * only, no projections or aggregates",
                         "COUNT");
    check_parse_fails_at("SELECT * FROM devices.jobs GROUP BY status",
                         "GROUP BY is supported only FROM devices", "GROUP");
    check_parse_fails_at(
        "SELECT * FROM devices.jobs WHERE tags.site = 'lab'",
        "a devices.jobs query can refer to job properties only, not to the device twin ('tags')",
        "tags");
    check_parse_fails_at("SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'j' AND "
                         "properties.reported.fw = '1'",
                         "a devices.jobs query can refer to job properties only, not to the device "
                         "twin ('properties')",
                         "properties");
    check_parse_fails_at("SELECT * FROM devices.jobs WHERE devices.deviceId = 'd1'",
                         "a devices.jobs query can refer to job properties only, not to the device "
                         "twin ('devices.deviceId')",
                         "devices.deviceId");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_th_query_run_select_star_all_devices_succeeds),
        cmocka_unit_test(test_th_query_run_where_region_and_frequency_succeeds),
        cmocka_unit_test(test_th_query_run_where_in_list_succeeds),
        cmocka_unit_test(test_th_query_run_where_nin_list_succeeds),
        cmocka_unit_test(test_th_query_run_where_in_numbers_and_null_succeeds),
        cmocka_unit_test(test_th_query_run_is_defined_true_for_null_succeeds),
        cmocka_unit_test(test_th_query_run_bool_attribute_succeeds),
        cmocka_unit_test(test_th_query_run_modules_source_succeeds),
        cmocka_unit_test(test_th_query_source_devices_succeeds),
        cmocka_unit_test(test_th_query_run_case_insensitive_attributes_succeeds),
        cmocka_unit_test(test_th_query_run_exact_case_member_preferred_succeeds),
        cmocka_unit_test(test_th_query_run_escaped_name_succeeds),
        cmocka_unit_test(test_th_query_parse_keywords_case_insensitive_succeeds),
        cmocka_unit_test(test_th_query_run_comparison_operators_succeeds),
        cmocka_unit_test(test_th_query_run_type_mismatch_is_undefined_succeeds),
        cmocka_unit_test(test_th_query_run_only_true_satisfies_where_succeeds),
        cmocka_unit_test(test_th_query_run_three_valued_logic_succeeds),
        cmocka_unit_test(test_th_query_run_results_follow_doc_order_succeeds),
        cmocka_unit_test(test_th_query_run_no_docs_succeeds),
        cmocka_unit_test(test_th_query_run_top_limits_results_succeeds),
        cmocka_unit_test(test_th_query_run_projection_stored_casing_succeeds),
        cmocka_unit_test(test_th_query_run_projection_alias_and_absent_omitted_succeeds),
        cmocka_unit_test(test_th_query_run_projection_all_absent_gives_empty_object_succeeds),
        cmocka_unit_test(test_th_query_run_projection_unnamed_expressions_succeeds),
        cmocka_unit_test(test_th_query_run_projection_of_modules_succeeds),
        cmocka_unit_test(test_th_query_run_constants_succeeds),
        cmocka_unit_test(test_th_query_run_arithmetic_succeeds),
        cmocka_unit_test(test_th_query_run_math_functions_succeeds),
        cmocka_unit_test(test_th_query_run_type_functions_succeeds),
        cmocka_unit_test(test_th_query_run_string_functions_in_where_succeeds),
        cmocka_unit_test(test_th_query_run_string_functions_values_succeeds),
        cmocka_unit_test(test_th_query_run_count_with_alias_succeeds),
        cmocka_unit_test(test_th_query_run_count_without_alias_dollar_one_succeeds),
        cmocka_unit_test(test_th_query_run_sum_avg_min_max_succeeds),
        cmocka_unit_test(test_th_query_run_group_by_doc_example_succeeds),
        cmocka_unit_test(test_th_query_run_group_by_connection_state_succeeds),
        cmocka_unit_test(test_th_query_run_group_by_absent_attribute_succeeds),
        cmocka_unit_test(test_th_query_run_group_by_two_paths_with_aggregates_succeeds),
        cmocka_unit_test(test_th_query_run_group_by_no_match_empty_succeeds),
        cmocka_unit_test(test_th_query_run_twin_flag_per_shape_succeeds),
        cmocka_unit_test(test_th_query_parse_unterminated_input_slice_succeeds),
        cmocka_unit_test(test_th_query_parse_whitespace_and_newlines_succeeds),
        cmocka_unit_test(test_th_query_parse_at_length_limit_succeeds),
        cmocka_unit_test(test_th_query_free_null_succeeds),
        cmocka_unit_test(test_th_query_parse_error_position_field_fails),
        cmocka_unit_test(test_th_query_parse_misspelled_from_fails),
        cmocka_unit_test(test_th_query_parse_unknown_function_fails),
        cmocka_unit_test(test_th_query_parse_group_by_on_modules_fails),
        cmocka_unit_test(test_th_query_parse_too_long_fails),
        cmocka_unit_test(test_th_query_parse_unterminated_string_fails),
        cmocka_unit_test(test_th_query_parse_bad_string_escape_fails),
        cmocka_unit_test(test_th_query_parse_syntax_errors_fails),
        cmocka_unit_test(test_th_query_parse_jobs_documented_shapes_succeeds),
        cmocka_unit_test(test_th_query_run_jobs_filters_job_records_succeeds),
        cmocka_unit_test(test_th_query_parse_jobs_unsupported_fails),
        cmocka_unit_test(test_th_query_parse_aggregate_misuse_fails),
        cmocka_unit_test(test_th_query_parse_duplicate_result_name_fails),
        cmocka_unit_test(test_th_query_parse_nesting_too_deep_fails),
        cmocka_unit_test(test_th_query_parse_bad_arguments_fails),
        cmocka_unit_test(test_th_query_run_bad_arguments_fails),
    };
    return cmocka_run_group_tests_name("query", tests, setup_docs, teardown_docs);
}
