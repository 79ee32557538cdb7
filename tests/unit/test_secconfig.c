/*
 * test_secconfig.c - unit tests for emulator/core/secconfig.c: the security
 * module's key table and defaults (against fixtures/azureiotsecurity-default.json),
 * the check of a configuration object (the {"value"} wrapper, every key's
 * type, ISO 8601 durations, priorities, sizes, the agents' Conflict and
 * NotOptimal checks, unknown keys), and the desired/reported comparison.
 *
 * Environment: TH_FIXTURES_DIR (the repository's fixtures/), set by meson.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "secconfig.h"

/* ---- helpers -------------------------------------------------------------------------------- */

static cJSON *parse(const char *text)
{
    cJSON *j = cJSON_Parse(text);
    if (!j)
        fail_msg("test JSON does not parse: %s", text);
    return j;
}

/* Check the configuration object in `text` (NULL: no object). */
static struct th_secconfig_report check_text(const char *text)
{
    cJSON *config = text ? parse(text) : NULL;
    struct th_secconfig_report r;
    assert_int_equal(th_secconfig_check(config, &r), TH_OK);
    cJSON_Delete(config);
    return r;
}

static void print_report(const struct th_secconfig_report *r)
{
    for (size_t i = 0; i < r->count; i++)
        print_message("#   %s %s: %s\n", th_secconfig_kind_name(r->items[i].kind), r->items[i].key,
                      r->items[i].message);
}

/* The report holds exactly one finding, of `kind`, on `key`, whose message contains `text`. */
static void expect_one(const char *config, enum th_secconfig_kind kind, const char *key,
                       const char *text)
{
    struct th_secconfig_report r = check_text(config);
    if (r.count != 1 || r.items[0].kind != kind || strcmp(r.items[0].key, key) ||
        (text && !strstr(r.items[0].message, text))) {
        print_message("# config %s: expected one %s on %s containing \"%s\", got:\n", config,
                      th_secconfig_kind_name(kind), key, text ? text : "");
        print_report(&r);
    }
    assert_int_equal(r.count, 1);
    assert_int_equal(r.items[0].kind, kind);
    assert_string_equal(r.items[0].key, key);
    if (text)
        assert_non_null(strstr(r.items[0].message, text));
    assert_int_equal(r.problems, kind == TH_SECCONFIG_UNKNOWN_KEY ? 0 : 1);
    th_secconfig_report_free(&r);
}

static void expect_clean(const char *config)
{
    struct th_secconfig_report r = check_text(config);
    if (r.count != 0) {
        print_message("# config %s: expected no finding, got:\n", config);
        print_report(&r);
    }
    assert_int_equal(r.count, 0);
    assert_int_equal(r.problems, 0);
    th_secconfig_report_free(&r);
}

/* {"<key>": {"value": <value_json>}} */
static char *one_key(const char *key, const char *value_json)
{
    static char buf[512];
    snprintf(buf, sizeof buf, "{\"%s\": {\"value\": %s}}", key, value_json);
    return buf;
}

static void expect_duration_refused(const char *text, const char *why)
{
    char json[128], reason[320] = "";
    uint64_t ms = 12345;
    snprintf(json, sizeof json, "\"%s\"", text);
    assert_int_equal(th_secconfig_parse_duration(text, &ms, reason, sizeof reason), TH_ERR_INVAL);
    assert_int_equal(ms, 12345); /* untouched */
    if (!strstr(reason, why))
        print_message("# %s: reason \"%s\" lacks \"%s\"\n", text, reason, why);
    assert_non_null(strstr(reason, why));
    expect_one(one_key("snapshotFrequency", json), TH_SECCONFIG_TYPE_MISMATCH, "snapshotFrequency",
               why);
}

static void expect_duration_ms(const char *text, uint64_t want)
{
    uint64_t ms = 0;
    char reason[320] = "";
    if (th_secconfig_parse_duration(text, &ms, reason, sizeof reason) != TH_OK)
        print_message("# %s refused: %s\n", text, reason);
    assert_int_equal(th_secconfig_parse_duration(text, &ms, NULL, 0), TH_OK);
    assert_int_equal(ms, want);
}

/* ---- the key table and the defaults --------------------------------------------------------- */

static void test_th_secconfig_keys_table_lists_every_key_succeeds(void **state)
{
    (void)state;
    size_t n = 0;
    const struct th_secconfig_key *keys = th_secconfig_keys(&n);
    assert_int_equal(n, 30);
    size_t with_default = 0;
    for (size_t i = 0; i < n; i++) {
        assert_ptr_equal(th_secconfig_key_find(keys[i].name), &keys[i]);
        assert_true(keys[i].agents != 0);
        if (keys[i].schema_default)
            with_default++;
    }
    assert_int_equal(with_default, 25);
    /* Reader sets from the agents' sources. */
    assert_int_equal(th_secconfig_key_find("eventPriorityOperational")->agents,
                     TH_SECCONFIG_AGENT_C);
    assert_int_equal(th_secconfig_key_find("hubResourceId")->agents, TH_SECCONFIG_AGENT_CS);
    assert_int_equal(th_secconfig_key_find("eventPriorityConnectedHardware")->agents,
                     TH_SECCONFIG_AGENT_CS);
    assert_int_equal(th_secconfig_key_find("snapshotFrequency")->agents,
                     TH_SECCONFIG_AGENT_C | TH_SECCONFIG_AGENT_CS);
}

static void test_th_secconfig_key_find_other_case_fails(void **state)
{
    (void)state;
    assert_null(th_secconfig_key_find("HighPriorityMessageFrequency"));
    assert_null(th_secconfig_key_find("nope"));
    assert_null(th_secconfig_key_find(""));
    assert_null(th_secconfig_key_find(NULL));
}

static void test_th_secconfig_defaults_equal_fixture_succeeds(void **state)
{
    (void)state;
    const char *dir = getenv("TH_FIXTURES_DIR");
    assert_non_null(dir);
    char path[4096];
    snprintf(path, sizeof path, "%s/azureiotsecurity-default.json", dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    static char text[65536];
    size_t len = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[len] = '\0';
    cJSON *fixture = parse(text);
    cJSON *defaults = th_secconfig_defaults();
    assert_non_null(defaults);
    const cJSON *want = cJSON_GetObjectItemCaseSensitive(fixture, TH_SECCONFIG_OBJECT);
    assert_non_null(want);
    assert_true(cJSON_Compare(defaults, want, true));
    /* Same order too: the fixture is the batch script's document. */
    const cJSON *a = defaults->child, *b = want->child;
    for (; a && b; a = a->next, b = b->next)
        assert_string_equal(a->string, b->string);
    assert_null(a);
    assert_null(b);
    cJSON_Delete(defaults);
    cJSON_Delete(fixture);
}

static void test_th_secconfig_check_defaults_succeeds(void **state)
{
    (void)state;
    cJSON *defaults = th_secconfig_defaults();
    struct th_secconfig_report r;
    assert_int_equal(th_secconfig_check(defaults, &r), TH_OK);
    assert_int_equal(r.count, 0);
    cJSON_Delete(defaults);
    th_secconfig_report_free(&r);
}

/* ---- the object and the wrapper ------------------------------------------------------------- */

static void test_th_secconfig_check_absent_object_succeeds(void **state)
{
    (void)state;
    expect_clean(NULL);
    expect_clean("null");
    expect_clean("{}");
}

static void test_th_secconfig_check_object_not_object_fails(void **state)
{
    (void)state;
    expect_one("\"PT7M\"", TH_SECCONFIG_TYPE_MISMATCH, TH_SECCONFIG_OBJECT, "a string");
    expect_one("[]", TH_SECCONFIG_TYPE_MISMATCH, TH_SECCONFIG_OBJECT, "an array");
    expect_one("42", TH_SECCONFIG_TYPE_MISMATCH, TH_SECCONFIG_OBJECT, "a number");
}

static void test_th_secconfig_check_bare_value_fails(void **state)
{
    (void)state;
    expect_one("{\"snapshotFrequency\": \"PT1M\"}", TH_SECCONFIG_TYPE_MISMATCH, "snapshotFrequency",
               "{\"value\": ...}");
    expect_one("{\"maxMessageSizeInBytes\": 204800}", TH_SECCONFIG_TYPE_MISMATCH,
               "maxMessageSizeInBytes", "bare value");
    expect_one("{\"eventPriorityLogin\": [\"Low\"]}", TH_SECCONFIG_TYPE_MISMATCH,
               "eventPriorityLogin", "an array instead");
}

static void test_th_secconfig_check_missing_value_member_fails(void **state)
{
    (void)state;
    expect_one("{\"snapshotFrequency\": {}}", TH_SECCONFIG_TYPE_MISMATCH, "snapshotFrequency",
               "no \"value\" member");
    expect_one("{\"snapshotFrequency\": {\"Value\": \"PT1M\"}}", TH_SECCONFIG_TYPE_MISMATCH,
               "snapshotFrequency", "no \"value\" member");
}

static void test_th_secconfig_check_null_value_fails(void **state)
{
    (void)state;
    expect_one("{\"baselineCustomChecksFilePath\": {\"value\": null}}", TH_SECCONFIG_TYPE_MISMATCH,
               "baselineCustomChecksFilePath", "null");
}

static void test_th_secconfig_check_repeated_key_fails(void **state)
{
    (void)state;
    expect_one("{\"snapshotFrequency\": {\"value\": \"PT1M\"}, \"snapshotFrequency\": null}",
               TH_SECCONFIG_TYPE_MISMATCH, "snapshotFrequency", "appears more than once");
}

static void test_th_secconfig_check_removed_key_succeeds(void **state)
{
    (void)state;
    expect_clean("{\"highPriorityMessageFrequency\": null, \"maxLocalCacheSizeInBytes\": null}");
}

/* ---- every key's type ----------------------------------------------------------------------- */

/* A value of the key's type and one of another type, as JSON text. */
static void values_for(enum th_secconfig_type type, const char **good, const char **bad)
{
    switch (type) {
    case TH_SECCONFIG_DURATION:
        *good = "\"PT10M\""; /* between the default high (PT7M) and low (PT5H) */
        *bad = "42";
        return;
    case TH_SECCONFIG_SIZE:
        *good = "8192";
        *bad = "\"8192\"";
        return;
    case TH_SECCONFIG_PRIORITY:
        *good = "\"off\"";
        *bad = "true";
        return;
    case TH_SECCONFIG_BOOL:
        *good = "false";
        *bad = "\"false\"";
        return;
    case TH_SECCONFIG_STRING:
        *good = "\"/etc/baseline.xml\"";
        *bad = "1";
        return;
    }
    fail();
}

static void test_th_secconfig_check_every_key_right_type_succeeds(void **state)
{
    (void)state;
    size_t n;
    const struct th_secconfig_key *keys = th_secconfig_keys(&n);
    for (size_t i = 0; i < n; i++) {
        const char *good, *bad;
        values_for(keys[i].type, &good, &bad);
        if (!strcmp(keys[i].name, "maxLocalCacheSizeInBytes"))
            good = "4096000"; /* not below the default message size */
        expect_clean(one_key(keys[i].name, good));
    }
}

static void test_th_secconfig_check_every_key_wrong_type_fails(void **state)
{
    (void)state;
    size_t n;
    const struct th_secconfig_key *keys = th_secconfig_keys(&n);
    for (size_t i = 0; i < n; i++) {
        const char *good, *bad;
        values_for(keys[i].type, &good, &bad);
        expect_one(one_key(keys[i].name, bad), TH_SECCONFIG_TYPE_MISMATCH, keys[i].name, "got");
    }
}

static void test_th_secconfig_check_whole_defaults_with_one_bad_key_fails(void **state)
{
    (void)state;
    cJSON *config = th_secconfig_defaults();
    cJSON *entry = cJSON_GetObjectItemCaseSensitive(config, "eventPriorityLogin");
    cJSON_ReplaceItemInObjectCaseSensitive(entry, "value", cJSON_CreateString("Medium"));
    struct th_secconfig_report r;
    assert_int_equal(th_secconfig_check(config, &r), TH_OK);
    assert_int_equal(r.count, 1);
    assert_int_equal(r.problems, 1);
    assert_string_equal(r.items[0].key, "eventPriorityLogin");
    assert_non_null(strstr(r.items[0].message, "\"Medium\" is not a priority"));
    th_secconfig_report_free(&r);
    cJSON_Delete(config);
}

/* ---- durations ------------------------------------------------------------------------------ */

static void test_th_secconfig_parse_duration_valid_succeeds(void **state)
{
    (void)state;
    expect_duration_ms("PT7M", 7 * 60000);
    expect_duration_ms("PT5H", 5 * 3600000);
    expect_duration_ms("PT13H", 13 * 3600000ull);
    expect_duration_ms("PT1S", 1000);
    expect_duration_ms("PT90M", 90 * 60000);
    expect_duration_ms("P1D", 86400000);
    expect_duration_ms("P1M", 30 * 86400000ull);
    expect_duration_ms("P1DT2H3M4S", 86400000 + 2 * 3600000 + 3 * 60000 + 4000);
    expect_duration_ms("P0DT1S", 1000);
    /* The C agent's limit, exactly. */
    expect_duration_ms("PT4294967S", 4294967000ull);
    expect_duration_ms("P49DT17H2M47S", 4294967000ull);
}

static void test_th_secconfig_parse_duration_not_iso_fails(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",      "P",     "PT",    "P1DT",  "7M",   "pt7m", "PT7",   "PT1M1H",   "PT1M2M",  "P1D1M",
        "-PT1M", "PT-1M", "PT 7M", "PT7M ", "PT7X", "P1H",  "PT1.S", "00:07:00", "PT7MT1S",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_duration_refused(bad[i], "is not an ISO 8601 duration");
}

static void test_th_secconfig_parse_duration_fraction_fails(void **state)
{
    (void)state;
    expect_duration_refused("PT1.5S", "the C agent reads whole numbers only");
    expect_duration_refused("PT0,5H", "the C agent reads whole numbers only");
}

static void test_th_secconfig_parse_duration_weeks_fails(void **state)
{
    (void)state;
    expect_duration_refused("P1W", "the C# agent (xs:duration) has no W");
}

static void test_th_secconfig_parse_duration_years_fails(void **state)
{
    (void)state;
    expect_duration_refused("P1Y", "the C agent ignores the Y part");
    expect_duration_refused("P0YT5M", "the C agent ignores the Y part");
}

static void test_th_secconfig_parse_duration_zero_fails(void **state)
{
    (void)state;
    expect_duration_refused("PT0S", "the C agent refuses a zero duration");
    expect_duration_refused("P0D", "the C agent refuses a zero duration");
}

static void test_th_secconfig_parse_duration_too_long_fails(void **state)
{
    (void)state;
    expect_duration_refused("PT4294968S", "longer than the C agent's limit");
    expect_duration_refused("P50D", "longer than the C agent's limit");
    expect_duration_refused("P2M", "longer than the C agent's limit");
    expect_duration_refused("PT99999999999999999999999S", "longer than the C agent's limit");
}

/* ---- sizes, priorities, booleans, strings --------------------------------------------------- */

static void test_th_secconfig_check_sizes_valid_succeeds(void **state)
{
    (void)state;
    expect_clean("{\"maxLocalCacheSizeInBytes\": {\"value\": 2147483647}}");
    expect_clean("{\"maxLocalCacheSizeInBytes\": {\"value\": 2560000.0}}");
    expect_clean("{\"maxMessageSizeInBytes\": {\"value\": 0}}");
    expect_clean("{\"maxMessageSizeInBytes\": {\"value\": 8192}}");
}

static void test_th_secconfig_check_size_fraction_fails(void **state)
{
    (void)state;
    expect_one(one_key("maxLocalCacheSizeInBytes", "8192.5"), TH_SECCONFIG_TYPE_MISMATCH,
               "maxLocalCacheSizeInBytes", "8192.5 is not a whole number");
}

static void test_th_secconfig_check_size_negative_fails(void **state)
{
    (void)state;
    expect_one(one_key("maxLocalCacheSizeInBytes", "-1"), TH_SECCONFIG_TYPE_MISMATCH,
               "maxLocalCacheSizeInBytes", "the C# agent reads sizes as unsigned");
}

static void test_th_secconfig_check_size_over_int32_fails(void **state)
{
    (void)state;
    expect_one(one_key("maxLocalCacheSizeInBytes", "2147483648"), TH_SECCONFIG_TYPE_MISMATCH,
               "maxLocalCacheSizeInBytes", "the C agent reads sizes as 32-bit");
}

static void test_th_secconfig_check_priorities_any_case_succeeds(void **state)
{
    (void)state;
    expect_clean("{\"eventPriorityLogin\": {\"value\": \"off\"},"
                 " \"eventPriorityListeningPorts\": {\"value\": \"LOW\"},"
                 " \"eventPriorityLocalUsers\": {\"value\": \"hIgH\"},"
                 " \"eventPriorityOperational\": {\"value\": \"Off\"}}");
}

static void test_th_secconfig_check_priority_medium_fails(void **state)
{
    (void)state;
    expect_one(one_key("eventPriorityLogin", "\"Medium\""), TH_SECCONFIG_TYPE_MISMATCH,
               "eventPriorityLogin", "both agents refuse it");
    expect_one(one_key("eventPriorityLogin", "\"\""), TH_SECCONFIG_TYPE_MISMATCH,
               "eventPriorityLogin", "is not a priority");
    expect_one(one_key("eventPriorityLogin", "\"high \""), TH_SECCONFIG_TYPE_MISMATCH,
               "eventPriorityLogin", "is not a priority");
}

static void test_th_secconfig_check_priority_operational_fails(void **state)
{
    (void)state;
    expect_one(one_key("eventPriorityDiagnostic", "\"Operational\""), TH_SECCONFIG_TYPE_MISMATCH,
               "eventPriorityDiagnostic", "not a priority for the C agent");
}

static void test_th_secconfig_check_priority_number_fails(void **state)
{
    (void)state;
    expect_one(one_key("eventPriorityLogin", "2"), TH_SECCONFIG_TYPE_MISMATCH, "eventPriorityLogin",
               "the C agent reads priorities as strings only");
}

static void test_th_secconfig_check_bool_number_fails(void **state)
{
    (void)state;
    expect_one(one_key("aggregationEnabledProcessCreate", "1"), TH_SECCONFIG_TYPE_MISMATCH,
               "aggregationEnabledProcessCreate", "expected true or false");
}

static void test_th_secconfig_check_string_keys_succeeds(void **state)
{
    (void)state;
    expect_clean("{\"hubResourceId\": {\"value\": \"\"},"
                 " \"baselineCustomChecksEnabled\": {\"value\": true},"
                 " \"baselineCustomChecksFilePath\": {\"value\": \"/etc/b.xml\"},"
                 " \"baselineCustomChecksFileHash\": {\"value\": \"ab12\"}}");
}

/* ---- the agents' conflicts ------------------------------------------------------------------ */

static void test_th_secconfig_check_high_longer_than_default_low_fails(void **state)
{
    (void)state;
    expect_one(one_key("highPriorityMessageFrequency", "\"PT6H\""), TH_SECCONFIG_CONFLICT,
               "highPriorityMessageFrequency",
               "PT6H is longer than lowPriorityMessageFrequency PT5H (the default)");
}

static void test_th_secconfig_check_high_longer_than_low_fails(void **state)
{
    (void)state;
    expect_one("{\"highPriorityMessageFrequency\": {\"value\": \"PT1H\"},"
               " \"lowPriorityMessageFrequency\": {\"value\": \"PT30M\"}}",
               TH_SECCONFIG_CONFLICT, "highPriorityMessageFrequency",
               "PT1H is longer than lowPriorityMessageFrequency PT30M: both agents");
}

static void test_th_secconfig_check_high_equal_to_low_succeeds(void **state)
{
    (void)state;
    expect_clean("{\"highPriorityMessageFrequency\": {\"value\": \"PT60M\"},"
                 " \"lowPriorityMessageFrequency\": {\"value\": \"PT1H\"}}");
}

static void test_th_secconfig_check_invalid_frequency_no_conflict_succeeds(void **state)
{
    (void)state;
    /* A refused low frequency is no basis for a conflict: one finding only. */
    expect_one("{\"highPriorityMessageFrequency\": {\"value\": \"PT6H\"},"
               " \"lowPriorityMessageFrequency\": {\"value\": \"PT1.5H\"}}",
               TH_SECCONFIG_TYPE_MISMATCH, "lowPriorityMessageFrequency", "fraction");
}

static void test_th_secconfig_check_cache_smaller_than_message_fails(void **state)
{
    (void)state;
    expect_one(one_key("maxLocalCacheSizeInBytes", "8192"), TH_SECCONFIG_CONFLICT,
               "maxLocalCacheSizeInBytes",
               "8192 is smaller than maxMessageSizeInBytes 204800 (the default)");
    /* The default cache is the schema's (and C# agent's) 2560000. */
    expect_one(one_key("maxMessageSizeInBytes", "4096000"), TH_SECCONFIG_CONFLICT,
               "maxLocalCacheSizeInBytes", "2560000 (the default) is smaller than");
    expect_clean("{\"maxLocalCacheSizeInBytes\": {\"value\": 8192},"
                 " \"maxMessageSizeInBytes\": {\"value\": 8192}}");
}

static void test_th_secconfig_check_message_size_not_multiple_fails(void **state)
{
    (void)state;
    expect_one(one_key("maxMessageSizeInBytes", "10000"), TH_SECCONFIG_NOT_OPTIMAL,
               "maxMessageSizeInBytes", "10000 is not a multiple of 4096");
}

static void test_th_secconfig_check_several_problems_fails(void **state)
{
    (void)state;
    struct th_secconfig_report r = check_text("{\"snapshotFrequency\": {\"value\": 42},"
                                              " \"eventPriorityLogin\": {\"value\": \"Medium\"},"
                                              " \"typo\": {\"value\": 1},"
                                              " \"maxLocalCacheSizeInBytes\": {\"value\": 100},"
                                              " \"maxMessageSizeInBytes\": {\"value\": 1150}}");
    print_report(&r);
    assert_int_equal(r.count, 5);
    assert_int_equal(r.problems, 4);
    assert_string_equal(r.items[0].key, "snapshotFrequency");
    assert_string_equal(r.items[1].key, "eventPriorityLogin");
    assert_int_equal(r.items[2].kind, TH_SECCONFIG_UNKNOWN_KEY);
    assert_string_equal(r.items[2].key, "typo");
    assert_int_equal(r.items[3].kind, TH_SECCONFIG_CONFLICT);
    assert_string_equal(r.items[3].key, "maxLocalCacheSizeInBytes");
    assert_int_equal(r.items[4].kind, TH_SECCONFIG_NOT_OPTIMAL);
    assert_string_equal(r.items[4].key, "maxMessageSizeInBytes");
    th_secconfig_report_free(&r);
}

/* ---- unknown keys --------------------------------------------------------------------------- */

static void test_th_secconfig_check_unknown_key_warns_succeeds(void **state)
{
    (void)state;
    expect_one("{\"highPriorityMessageFrequncy\": {\"value\": \"PT1M\"}}", TH_SECCONFIG_UNKNOWN_KEY,
               "highPriorityMessageFrequncy", "both ignore it");
    expect_one("{\"HighPriorityMessageFrequency\": {\"value\": \"PT1M\"}}",
               TH_SECCONFIG_UNKNOWN_KEY, "HighPriorityMessageFrequency",
               "reads it as highPriorityMessageFrequency");
}

static void test_th_secconfig_kind_name_every_kind_succeeds(void **state)
{
    (void)state;
    assert_string_equal(th_secconfig_kind_name(TH_SECCONFIG_TYPE_MISMATCH), "TypeMismatch");
    assert_string_equal(th_secconfig_kind_name(TH_SECCONFIG_CONFLICT), "Conflict");
    assert_string_equal(th_secconfig_kind_name(TH_SECCONFIG_NOT_OPTIMAL), "NotOptimal");
    assert_string_equal(th_secconfig_kind_name(TH_SECCONFIG_UNKNOWN_KEY), "UnknownKey");
    th_secconfig_report_free(NULL);
}

/* ---- desired against reported --------------------------------------------------------------- */

static bool equal(const char *key, const char *desired, const char *reported)
{
    cJSON *d = desired ? parse(desired) : NULL, *r = reported ? parse(reported) : NULL;
    bool eq = th_secconfig_values_equal(th_secconfig_key_find(key), d, r);
    cJSON_Delete(d);
    cJSON_Delete(r);
    return eq;
}

static void test_th_secconfig_values_equal_same_meaning_succeeds(void **state)
{
    (void)state;
    assert_true(equal("highPriorityMessageFrequency", "\"PT90M\"", "\"PT1H30M\""));
    assert_true(equal("snapshotFrequency", "\"PT24H\"", "\"P1D\""));
    assert_true(equal("eventPriorityLogin", "\"Low\"", "\"low\""));
    assert_true(equal("maxLocalCacheSizeInBytes", "2560000", "2560000.0"));
    assert_true(equal("aggregationEnabledProcessCreate", "true", "true"));
    assert_true(equal("hubResourceId", "\"x\"", "\"x\""));
    assert_true(equal("hubResourceId", NULL, NULL));
}

static void test_th_secconfig_values_equal_different_fails(void **state)
{
    (void)state;
    assert_false(equal("highPriorityMessageFrequency", "\"PT7M\"", "\"PT8M\""));
    assert_false(equal("eventPriorityLogin", "\"Low\"", "\"High\""));
    assert_false(equal("maxLocalCacheSizeInBytes", "2560000", "10485760"));
    assert_false(equal("aggregationEnabledProcessCreate", "true", "false"));
    assert_false(equal("hubResourceId", "\"x\"", "\"X\""));
    assert_false(equal("snapshotFrequency", "\"PT7M\"", NULL));
    assert_false(equal("snapshotFrequency", "42", "\"PT7M\""));
}

static void test_th_secconfig_diff_matching_succeeds(void **state)
{
    (void)state;
    cJSON *d = parse("{\"highPriorityMessageFrequency\": {\"value\": \"PT90M\"},"
                     " \"eventPriorityLogin\": {\"value\": \"Low\"},"
                     " \"typo\": {\"value\": 1}, \"snapshotFrequency\": null}");
    cJSON *r = parse("{\"highPriorityMessageFrequency\": {\"value\": \"PT1H30M\"},"
                     " \"eventPriorityLogin\": {\"value\": \"low\"},"
                     " \"maxLocalCacheSizeInBytes\": {\"value\": 10485760}}");
    cJSON *out = NULL;
    assert_int_equal(th_secconfig_diff(d, r, &out), TH_OK);
    assert_true(cJSON_IsArray(out));
    assert_int_equal(cJSON_GetArraySize(out), 0);
    cJSON_Delete(out);
    cJSON_Delete(d);
    cJSON_Delete(r);
}

static void test_th_secconfig_verdict_each_case_succeeds(void **state)
{
    (void)state;
    cJSON *empty = parse("[]"), *one = parse("[{\"key\": \"k\"}]"), *obj = parse("{}");
    cJSON *null = parse("null");
    assert_string_equal(th_secconfig_verdict(NULL, empty), "not reported");
    assert_string_equal(th_secconfig_verdict(null, one), "not reported");
    assert_string_equal(th_secconfig_verdict(obj, empty), "matches");
    assert_string_equal(th_secconfig_verdict(obj, one), "differs");
    cJSON_Delete(empty);
    cJSON_Delete(one);
    cJSON_Delete(obj);
    cJSON_Delete(null);
}

static void test_th_secconfig_diff_different_fails(void **state)
{
    (void)state;
    cJSON *d = parse("{\"highPriorityMessageFrequency\": {\"value\": \"PT15S\"},"
                     " \"eventPriorityLogin\": {\"value\": \"Low\"},"
                     " \"snapshotFrequency\": \"PT1M\","
                     " \"eventPriorityProcessTerminate\": {\"value\": \"Low\"}}");
    cJSON *r = parse("{\"highPriorityMessageFrequency\": {\"value\": \"PT7M\"},"
                     " \"eventPriorityLogin\": {\"value\": \"low\"},"
                     " \"snapshotFrequency\": {\"value\": \"PT1M\"}}");
    cJSON *out = NULL;
    assert_int_equal(th_secconfig_diff(d, r, &out), TH_OK);
    char *text = cJSON_PrintUnformatted(out);
    print_message("# diff: %s\n", text);
    assert_string_equal(
        text,
        "[{\"key\":\"highPriorityMessageFrequency\",\"desired\":\"PT15S\",\"reported\":"
        "\"PT7M\"},{\"key\":\"snapshotFrequency\",\"desired\":\"PT1M\",\"reported\":"
        "\"PT1M\",\"bare\":true},{\"key\":\"eventPriorityProcessTerminate\",\"desired\":\"Low\"}]");
    free(text);
    cJSON_Delete(out);
    /* A desired "object" that is not one differs as a whole. */
    cJSON *str = parse("\"PT7M\"");
    assert_int_equal(th_secconfig_diff(str, r, &out), TH_OK);
    assert_int_equal(cJSON_GetArraySize(out), 1);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(out->child, "key")),
                        TH_SECCONFIG_OBJECT);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(out->child, "bare")));
    cJSON_Delete(out);
    cJSON_Delete(str);
    /* No reported object: every key differs. */
    assert_int_equal(th_secconfig_diff(d, NULL, &out), TH_OK);
    assert_int_equal(cJSON_GetArraySize(out), 4);
    cJSON_Delete(out);
    cJSON_Delete(d);
    cJSON_Delete(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_th_secconfig_keys_table_lists_every_key_succeeds),
        cmocka_unit_test(test_th_secconfig_key_find_other_case_fails),
        cmocka_unit_test(test_th_secconfig_defaults_equal_fixture_succeeds),
        cmocka_unit_test(test_th_secconfig_check_defaults_succeeds),
        cmocka_unit_test(test_th_secconfig_check_absent_object_succeeds),
        cmocka_unit_test(test_th_secconfig_check_object_not_object_fails),
        cmocka_unit_test(test_th_secconfig_check_bare_value_fails),
        cmocka_unit_test(test_th_secconfig_check_missing_value_member_fails),
        cmocka_unit_test(test_th_secconfig_check_null_value_fails),
        cmocka_unit_test(test_th_secconfig_check_repeated_key_fails),
        cmocka_unit_test(test_th_secconfig_check_removed_key_succeeds),
        cmocka_unit_test(test_th_secconfig_check_every_key_right_type_succeeds),
        cmocka_unit_test(test_th_secconfig_check_every_key_wrong_type_fails),
        cmocka_unit_test(test_th_secconfig_check_whole_defaults_with_one_bad_key_fails),
        cmocka_unit_test(test_th_secconfig_parse_duration_valid_succeeds),
        cmocka_unit_test(test_th_secconfig_parse_duration_not_iso_fails),
        cmocka_unit_test(test_th_secconfig_parse_duration_fraction_fails),
        cmocka_unit_test(test_th_secconfig_parse_duration_weeks_fails),
        cmocka_unit_test(test_th_secconfig_parse_duration_years_fails),
        cmocka_unit_test(test_th_secconfig_parse_duration_zero_fails),
        cmocka_unit_test(test_th_secconfig_parse_duration_too_long_fails),
        cmocka_unit_test(test_th_secconfig_check_sizes_valid_succeeds),
        cmocka_unit_test(test_th_secconfig_check_size_fraction_fails),
        cmocka_unit_test(test_th_secconfig_check_size_negative_fails),
        cmocka_unit_test(test_th_secconfig_check_size_over_int32_fails),
        cmocka_unit_test(test_th_secconfig_check_priorities_any_case_succeeds),
        cmocka_unit_test(test_th_secconfig_check_priority_medium_fails),
        cmocka_unit_test(test_th_secconfig_check_priority_operational_fails),
        cmocka_unit_test(test_th_secconfig_check_priority_number_fails),
        cmocka_unit_test(test_th_secconfig_check_bool_number_fails),
        cmocka_unit_test(test_th_secconfig_check_string_keys_succeeds),
        cmocka_unit_test(test_th_secconfig_check_high_longer_than_default_low_fails),
        cmocka_unit_test(test_th_secconfig_check_high_longer_than_low_fails),
        cmocka_unit_test(test_th_secconfig_check_high_equal_to_low_succeeds),
        cmocka_unit_test(test_th_secconfig_check_invalid_frequency_no_conflict_succeeds),
        cmocka_unit_test(test_th_secconfig_check_cache_smaller_than_message_fails),
        cmocka_unit_test(test_th_secconfig_check_message_size_not_multiple_fails),
        cmocka_unit_test(test_th_secconfig_check_several_problems_fails),
        cmocka_unit_test(test_th_secconfig_check_unknown_key_warns_succeeds),
        cmocka_unit_test(test_th_secconfig_kind_name_every_kind_succeeds),
        cmocka_unit_test(test_th_secconfig_values_equal_same_meaning_succeeds),
        cmocka_unit_test(test_th_secconfig_values_equal_different_fails),
        cmocka_unit_test(test_th_secconfig_diff_matching_succeeds),
        cmocka_unit_test(test_th_secconfig_verdict_each_case_succeeds),
        cmocka_unit_test(test_th_secconfig_diff_different_fails),
    };
    return cmocka_run_group_tests_name("secconfig", tests, NULL, NULL);
}
