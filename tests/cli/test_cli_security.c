/*
 * test_cli_security.c - end-to-end tests of `twinhub security ensure|check|
 * status` (docs/cli.md "twinhub security"): the real `twinhub serve` with the
 * built plugin, the real `twinhub` commands, and a module connected over MQTT
 * with its own key that reports a configuration as a security agent does.
 * The tests share one hub and run in order: later ones use the identities
 * earlier ones created.
 *
 * Environment: TWINHUB_BIN (the twinhub executable) and TH_FIXTURES_DIR (the
 * repository's fixtures/), set by meson.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cli_harness.h"

#define OBJ "ms_iotn:urn_azureiot_Security_SecurityAgentConfiguration"
#define MOD "azureiotsecurity"
#define DESIRED_CONFIG "properties.desired." OBJ

static struct cli_hub hub;
#define H hub.flag

static int group_setup(void **state)
{
    (void)state;
    cli_hub_start(&hub);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    int rc = cli_hub_stop(&hub);
    cli_hub_remove_dir(&hub);
    return rc == 0 ? 0 : -1;
}

/* A file in the hub's temporary directory holding `text`; returns its path (static buffer). */
static const char *temp_file(const char *name, const char *text)
{
    static char path[CLI_PATH_LEN + 64];
    snprintf(path, sizeof path, "%s/%s", hub.dir, name);
    cli_write_file(path, text);
    return path;
}

static const char *fixture(void)
{
    static char path[CLI_PATH_LEN];
    const char *dir = getenv("TH_FIXTURES_DIR");
    assert_non_null(dir);
    snprintf(path, sizeof path, "%s/azureiotsecurity-default.json", dir);
    return path;
}

/* The module twin of `device` as JSON (the caller frees). */
static cJSON *module_twin(const char *device)
{
    struct cli_result r = CLI_RUN("twin", "show", device, MOD, "--json", H);
    cli_expect_code(&r, 0);
    cJSON *twin = cli_json_of(&r);
    cli_result_free(&r);
    return twin;
}

static void create_device(const char *id)
{
    struct cli_result r = CLI_RUN("device", "create", id, H);
    cli_expect_code(&r, 0);
    cli_result_free(&r);
}

/* ---- check: files --------------------------------------------------------------------------- */

static void test_security_check_default_fixture_succeeds(void **state)
{
    (void)state;
    struct cli_result r = CLI_RUN("security", "check", fixture());
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "azureiotsecurity-default.json: valid\n", &r);
    cli_result_free(&r);
}

/* A configuration with one problem of each kind the agents raise, and a typo. */
#define REFUSED_CONFIG                                                                             \
    "{\"" OBJ "\": {"                                                                              \
    "\"highPriorityMessageFrequency\": {\"value\": \"PT6H\"},"                                     \
    "\"snapshotFrequency\": {\"value\": 42},"                                                      \
    "\"lowPriorityMessageFrequency\": {\"value\": \"PT1H\"},"                                      \
    "\"eventPriorityOSBaseline\": \"Low\","                                                        \
    "\"eventPriorityLogin\": {\"value\": \"Medium\"},"                                             \
    "\"eventPriorityListeningPorts\": {\"value\": \"hIGh\"},"                                      \
    "\"aggregationIntervalProcessCreate\": {\"value\": \"PT1.5H\"},"                               \
    "\"maxLocalCacheSizeInBytes\": {\"value\": 8192},"                                             \
    "\"maxMessageSizeInBytes\": {\"value\": 10000},"                                               \
    "\"eventPriorityLogn\": {\"value\": \"Low\"}}}"

static void test_security_check_refused_file_fails(void **state)
{
    (void)state;
    const char *file = temp_file("refused.json", REFUSED_CONFIG);
    struct cli_result r = CLI_RUN("security", "check", file);
    cli_expect_code(&r, 1);
    cli_expect_in(r.out, "refused.json: 7 problems, 1 warning\n", &r);
    cli_expect_in(r.out, "  snapshotFrequency: TypeMismatch: expected an ISO 8601 duration", &r);
    cli_expect_in(r.out, "  eventPriorityOSBaseline: TypeMismatch: a string instead of {", &r);
    cli_expect_in(r.out, "  eventPriorityLogin: TypeMismatch: \"Medium\" is not a priority", &r);
    cli_expect_in(r.out,
                  "  aggregationIntervalProcessCreate: TypeMismatch: \"PT1.5H\" has a "
                  "fraction: the C agent reads whole numbers only",
                  &r);
    cli_expect_in(r.out, "  eventPriorityLogn: warning, UnknownKey:", &r);
    cli_expect_in(r.out,
                  "  highPriorityMessageFrequency: Conflict: PT6H is longer than "
                  "lowPriorityMessageFrequency PT1H: both agents raise a Conflict",
                  &r);
    cli_expect_in(r.out,
                  "  maxLocalCacheSizeInBytes: Conflict: 8192 is smaller than "
                  "maxMessageSizeInBytes 10000",
                  &r);
    cli_expect_in(r.out, "  maxMessageSizeInBytes: NotOptimal: 10000 is not a multiple of 4096",
                  &r);
    cli_expect_not_in(r.out, "eventPriorityListeningPorts", &r);
    cli_result_free(&r);

    r = CLI_RUN("security", "check", file, "--json");
    cli_expect_code(&r, 1);
    cJSON *j = cli_json_of(&r);
    assert_true(cJSON_IsFalse(cli_path(j, "valid")));
    assert_true(cJSON_IsFalse(cli_path(j, "defaults")));
    const cJSON *problems = cli_path(j, "problems");
    assert_int_equal(cJSON_GetArraySize(problems), 7);
    assert_string_equal(cJSON_GetStringValue(cli_path(problems->child, "key")),
                        "snapshotFrequency");
    assert_string_equal(cJSON_GetStringValue(cli_path(problems->child, "errorType")),
                        "TypeMismatch");
    assert_int_equal(cJSON_GetArraySize(cli_path(j, "warnings")), 1);
    assert_string_equal(cJSON_GetStringValue(cli_path(cli_path(j, "warnings")->child, "key")),
                        "eventPriorityLogn");
    cJSON_Delete(j);
    cli_result_free(&r);
}

static void test_security_check_inline_object_fails(void **state)
{
    (void)state;
    /* The configuration object itself, without the desired document around it. */
    struct cli_result r = CLI_RUN("security", "check", "{\"eventPriorityLogin\": {\"value\": 2}}");
    cli_expect_code(&r, 1);
    cli_expect_in(r.out, "the configuration: 1 problem, 0 warnings\n", &r);
    cli_expect_in(r.out, "the C agent reads priorities as strings only", &r);
    cli_result_free(&r);
    r = CLI_RUN("security", "check",
                "{\"" OBJ "\": {\"eventPriorityLogin\": {\"value\": "
                "\"off\"}}}");
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "the configuration: valid\n", &r);
    cli_result_free(&r);
}

static void test_security_check_unknown_key_only_warns_succeeds(void **state)
{
    (void)state;
    struct cli_result r = CLI_RUN("security", "check",
                                  "{\"" OBJ "\": {\"HighPriorityMessageFrequency\": {\"value\": "
                                  "\"PT1M\"}}}");
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "0 problems, 1 warning", &r);
    cli_expect_in(r.out, "reads it as highPriorityMessageFrequency", &r);
    cli_result_free(&r);
}

static void test_security_check_bad_arguments_fail(void **state)
{
    (void)state;
    struct cli_result r = CLI_RUN("security", "check");
    cli_expect_code(&r, 2);
    cli_expect_in(r.err, "missing argument", &r);
    cli_result_free(&r);
    r = CLI_RUN("security", "check", fixture(), "--reported");
    cli_expect_code(&r, 2);
    cli_expect_in(r.err, "--reported needs a device or a twin", &r);
    cli_result_free(&r);
    r = CLI_RUN("security", "check", "./no-such-file.json");
    cli_expect_code(&r, 1);
    cli_expect_in(r.err, "no-such-file.json", &r);
    cli_result_free(&r);
    r = CLI_RUN("security", "check", temp_file("broken.json", "{\"a\": "));
    cli_expect_code(&r, 1);
    cli_expect_in(r.err, "not valid JSON", &r);
    cli_result_free(&r);
    r = CLI_RUN("security", "ensure", "--reported", H);
    cli_expect_code(&r, 2);
    cli_result_free(&r);
}

/* ---- ensure --------------------------------------------------------------------------------- */

static void test_security_ensure_creates_defaults_skips_existing_succeeds(void **state)
{
    (void)state;
    create_device("sa-1");
    create_device("sa-2");
    create_device("sa-3");
    /* sa-2's module has its own configuration, sa-3's none at all. */
    struct cli_result r =
        CLI_RUN("module", "create", "sa-2", MOD, "--desired",
                "{\"" OBJ "\": {\"highPriorityMessageFrequency\": {\"value\": \"PT1M\"}}}",
                "--tags", "{\"securityGroup\":\"custom\"}", H);
    cli_expect_code(&r, 0);
    cli_result_free(&r);
    r = CLI_RUN("module", "create", "sa-3", MOD, "--desired", "{\"other\": 1}", H);
    cli_expect_code(&r, 0);
    cli_result_free(&r);
    cJSON *before2 = module_twin("sa-2"), *before3 = module_twin("sa-3");

    r = CLI_RUN("security", "ensure", "--device", "sa-1", "--device", "sa-2", "--device", "sa-3",
                H);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "azureiotsecurity: created 1, skipped 2", &r);
    cli_expect_in(r.out, "  created  sa-1\n", &r);
    cli_expect_in(r.out, "  skipped  sa-2\n", &r);
    cli_expect_in(r.out, "  skipped  sa-3\n", &r);
    cli_result_free(&r);

    /* The new module holds exactly the batch script's default document and tag. */
    cJSON *twin = module_twin("sa-1");
    char *text = cli_slurp(fixture());
    cJSON *want = cJSON_Parse(text);
    free(text);
    assert_non_null(want);
    const cJSON *got = cli_path(twin, DESIRED_CONFIG);
    assert_true(cJSON_Compare(got, cli_path(want, OBJ), true));
    assert_string_equal(cJSON_GetStringValue(cli_path(twin, "tags.securityGroup")), "default");
    cJSON_Delete(want);
    cJSON_Delete(twin);

    /* The existing modules are untouched: same desired ($version, $metadata), tags, etag. */
    cJSON *before[] = {before2, before3};
    const char *devs[] = {"sa-2", "sa-3"};
    for (int i = 0; i < 2; i++) {
        twin = module_twin(devs[i]);
        assert_true(cJSON_Compare(cli_path(twin, "properties.desired"),
                                  cli_path(before[i], "properties.desired"), true));
        assert_true(cJSON_Compare(cli_path(twin, "tags"), cli_path(before[i], "tags"), true));
        assert_string_equal(cJSON_GetStringValue(cli_path(twin, "etag")),
                            cJSON_GetStringValue(cli_path(before[i], "etag")));
        cJSON_Delete(twin);
        cJSON_Delete(before[i]);
    }
}

static void test_security_ensure_twice_creates_nothing_succeeds(void **state)
{
    (void)state;
    /* Every device now: the development device gets its module too. */
    struct cli_result r = CLI_RUN("security", "ensure", "--json", H);
    cli_expect_code(&r, 0);
    cJSON *j = cli_json_of(&r);
    assert_string_equal(cJSON_GetStringValue(cli_path(j, "moduleId")), MOD);
    int skipped = (int)cJSON_GetNumberValue(cli_path(j, "skipped"));
    assert_int_equal(skipped, 3);
    cJSON_Delete(j);
    cli_result_free(&r);
    r = CLI_RUN("security", "ensure", H);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "azureiotsecurity: created 0, skipped ", &r);
    cli_expect_not_in(r.out, "  created ", &r);
    cli_result_free(&r);
}

static void test_security_ensure_desired_overrides_defaults_succeeds(void **state)
{
    (void)state;
    create_device("sa-4");
    const char *file =
        temp_file("override.json", "{\"" OBJ "\": {\"highPriorityMessageFrequency\": {\"value\": "
                                   "\"PT1M\"}, \"eventPriorityDiagnostic\": null, "
                                   "\"hubResourceId\": {\"value\": \"/subscriptions/x\"}},"
                                   " \"fleet\": \"blue\"}");
    struct cli_result r = CLI_RUN("security", "ensure", "--device", "sa-4", "--desired", file,
                                  "--tags", "{\"securityGroup\":\"lab\"}", H);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "created 1, skipped 0", &r);
    cli_result_free(&r);
    cJSON *twin = module_twin("sa-4");
    const cJSON *config = cli_path(twin, DESIRED_CONFIG);
    assert_string_equal(
        cJSON_GetStringValue(cli_path(config, "highPriorityMessageFrequency.value")), "PT1M");
    assert_string_equal(cJSON_GetStringValue(cli_path(config, "hubResourceId.value")),
                        "/subscriptions/x");
    assert_null(cli_path(config, "eventPriorityDiagnostic"));
    /* The other defaults are there. */
    assert_string_equal(cJSON_GetStringValue(cli_path(config, "lowPriorityMessageFrequency.value")),
                        "PT5H");
    assert_int_equal((int)cJSON_GetNumberValue(cli_path(config, "maxLocalCacheSizeInBytes.value")),
                     2560000);
    assert_string_equal(cJSON_GetStringValue(cli_path(twin, "properties.desired.fleet")), "blue");
    assert_string_equal(cJSON_GetStringValue(cli_path(twin, "tags.securityGroup")), "lab");
    cJSON_Delete(twin);
}

static void test_security_ensure_refused_configuration_fails(void **state)
{
    (void)state;
    create_device("sa-5");
    struct cli_result r =
        CLI_RUN("security", "ensure", "--device", "sa-5", "--desired",
                "{\"" OBJ "\": {\"snapshotFrequency\": {\"value\": \"P1W\"}}}", H);
    cli_expect_code(&r, 1);
    cli_expect_in(r.err, "the configuration is refused, nothing was created", &r);
    cli_expect_in(r.err, "snapshotFrequency: TypeMismatch: \"P1W\" counts weeks: the C# agent", &r);
    cli_expect_not_in(r.out, "created", &r);
    cli_result_free(&r);
    r = CLI_RUN("module", "show", "sa-5", MOD, H);
    cli_expect_code(&r, 1);
    cli_expect_in(r.err, "404010", &r);
    cli_result_free(&r);
}

/* ---- check: devices ------------------------------------------------------------------------- */

static void test_security_check_device_desired_succeeds(void **state)
{
    (void)state;
    struct cli_result r = CLI_RUN("security", "check", "sa-1", H);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "sa-1/azureiotsecurity desired: valid\n", &r);
    cli_result_free(&r);
    r = CLI_RUN("security", "check", "sa-3", H);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out,
                  "sa-3/azureiotsecurity desired: no configuration object: the agents "
                  "use the defaults\n",
                  &r);
    cli_result_free(&r);
    /* No agent has reported yet. */
    r = CLI_RUN("security", "check", "sa-1", "--reported", H);
    cli_expect_code(&r, 1);
    cli_expect_in(r.err, "sa-1/azureiotsecurity reported: no configuration object", &r);
    cli_result_free(&r);
    r = CLI_RUN("security", "check", "sa-5", H);
    cli_expect_code(&r, 1);
    cli_expect_in(r.err, "404010", &r);
    cli_result_free(&r);
}

static void test_security_check_device_invalid_desired_fails(void **state)
{
    (void)state;
    struct cli_result r =
        CLI_RUN("twin", "patch", "sa-2", MOD, "--desired",
                "{\"" OBJ "\": {\"eventPriorityLogin\": {\"value\": \"Medium\"}}}", H);
    cli_expect_code(&r, 0);
    cli_result_free(&r);
    r = CLI_RUN("security", "check", "sa-2", H);
    cli_expect_code(&r, 1);
    cli_expect_in(r.out, "sa-2/azureiotsecurity desired: 1 problem, 0 warnings\n", &r);
    cli_expect_in(r.out, "  eventPriorityLogin: TypeMismatch: \"Medium\" is not a priority", &r);
    cli_result_free(&r);
    /* A twin document read from a file gives the same answer. */
    r = CLI_RUN("twin", "show", "sa-2", MOD, "--json", H);
    cli_expect_code(&r, 0);
    const char *file = temp_file("twin.json", r.out);
    cli_result_free(&r);
    r = CLI_RUN("security", "check", file);
    cli_expect_code(&r, 1);
    cli_expect_in(r.out, "twin.json (desired): 1 problem", &r);
    cli_result_free(&r);
}

/* ---- status --------------------------------------------------------------------------------- */

/* The entry of `device` in `status --json` output. */
static const cJSON *status_of(const cJSON *status, const char *device)
{
    const cJSON *d;
    cJSON_ArrayForEach(d, cli_path(status, "devices"))
    {
        if (!strcmp(cJSON_GetStringValue(cli_path(d, "deviceId")), device))
            return d;
    }
    fail_msg("no status for %s", device);
    return NULL;
}

static void test_security_status_before_agent_succeeds(void **state)
{
    (void)state;
    struct cli_result r = CLI_RUN("security", "status", "--json", H);
    cli_expect_code(&r, 0);
    cJSON *j = cli_json_of(&r);
    const cJSON *s1 = status_of(j, "sa-1"), *s5 = status_of(j, "sa-5");
    assert_true(cJSON_IsTrue(cli_path(s1, "module")));
    assert_string_equal(cJSON_GetStringValue(cli_path(s1, "connectionState")), "Disconnected");
    assert_string_equal(cJSON_GetStringValue(cli_path(s1, "configuration")), "not reported");
    assert_false(cJSON_IsTrue(cli_path(s5, "module")));
    assert_null(cli_path(s5, "connectionState"));
    cJSON_Delete(j);
    cli_result_free(&r);

    r = CLI_RUN("security", "status", "--device", "sa-5", "--device", "sa-1", H);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "DEVICE  MODULE  CONNECTION    CONFIGURATION\n", &r);
    cli_expect_in(r.out, "sa-5    no      -             -\n", &r);
    cli_expect_in(r.out, "sa-1    yes     Disconnected  not reported\n", &r);
    cli_expect_in(r.out, "2 devices: 1 with module azureiotsecurity, 0 connected, 0 reporting", &r);
    cli_expect_not_in(r.out, "sa-2", &r);
    cli_result_free(&r);
}

/*
 * What the C agent reports for the defaults it reads, plus the keys only the
 * C# agent reads: lower-case priorities, PT60M for one PT1H (same length).
 */
#define REPORTED_DEFAULTS                                                                          \
    "{\"" OBJ "\": {"                                                                              \
    "\"highPriorityMessageFrequency\":{\"value\":\"PT7M\"},"                                       \
    "\"lowPriorityMessageFrequency\":{\"value\":\"PT5H\"},"                                        \
    "\"snapshotFrequency\":{\"value\":\"PT13H\"},"                                                 \
    "\"maxLocalCacheSizeInBytes\":{\"value\":2560000},"                                            \
    "\"maxMessageSizeInBytes\":{\"value\":204800},"                                                \
    "\"eventPriorityConnectedHardware\":{\"value\":\"low\"},"                                      \
    "\"eventPriorityListeningPorts\":{\"value\":\"high\"},"                                        \
    "\"eventPriorityProcessCreate\":{\"value\":\"low\"},"                                          \
    "\"eventPriorityProcessTerminate\":{\"value\":\"low\"},"                                       \
    "\"eventPrioritySystemInformation\":{\"value\":\"low\"},"                                      \
    "\"eventPriorityLocalUsers\":{\"value\":\"high\"},"                                            \
    "\"eventPriorityLogin\":{\"value\":\"high\"},"                                                 \
    "\"eventPriorityConnectionCreate\":{\"value\":\"low\"},"                                       \
    "\"eventPriorityFirewallConfiguration\":{\"value\":\"low\"},"                                  \
    "\"eventPriorityOSBaseline\":{\"value\":\"low\"},"                                             \
    "\"eventPriorityDiagnostic\":{\"value\":\"low\"},"                                             \
    "\"eventPriorityConfigurationError\":{\"value\":\"low\"},"                                     \
    "\"eventPriorityDroppedEventsStatistics\":{\"value\":\"low\"},"                                \
    "\"eventPriorityMessageStatistics\":{\"value\":\"low\"},"                                      \
    "\"eventPriorityOperational\":{\"value\":\"high\"},"                                           \
    "\"aggregationEnabledProcessCreate\":{\"value\":true},"                                        \
    "\"aggregationIntervalProcessCreate\":{\"value\":\"PT60M\"},"                                  \
    "\"aggregationEnabledConnectionCreate\":{\"value\":true},"                                     \
    "\"aggregationIntervalConnectionCreate\":{\"value\":\"PT1H\"},"                                \
    "\"aggregationEnabledProcessTerminate\":{\"value\":true},"                                     \
    "\"aggregationIntervalProcessTerminate\":{\"value\":\"PT1H\"}}}"

static void test_security_status_agent_reports_desired_succeeds(void **state)
{
    (void)state;
    struct cli_identity *agent = cli_identity_connect(&hub, "sa-1", MOD);
    assert_int_equal(cli_identity_report(agent, REPORTED_DEFAULTS), 204);

    struct cli_result r = CLI_RUN("security", "status", "--device", "sa-1", "--json", H);
    cli_expect_code(&r, 0);
    cJSON *j = cli_json_of(&r);
    const cJSON *s1 = status_of(j, "sa-1");
    assert_string_equal(cJSON_GetStringValue(cli_path(s1, "connectionState")), "Connected");
    assert_string_equal(cJSON_GetStringValue(cli_path(s1, "configuration")), "matches");
    assert_int_equal(cJSON_GetArraySize(cli_path(s1, "differences")), 0);
    cJSON_Delete(j);
    cli_result_free(&r);
    r = CLI_RUN("security", "status", "--device", "sa-1", H);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "sa-1    yes     Connected   reported matches desired\n", &r);
    cli_expect_in(r.out, "1 device: 1 with module azureiotsecurity, 1 connected, 1 reporting", &r);
    cli_result_free(&r);
    /* The reported configuration passes the check too. */
    r = CLI_RUN("security", "check", "sa-1", "--reported", H);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "sa-1/azureiotsecurity reported: valid\n", &r);
    cli_result_free(&r);
    cli_identity_close(agent);
}

static void test_security_status_reported_differs_fails(void **state)
{
    (void)state;
    struct cli_identity *agent = cli_identity_connect(&hub, "sa-1", MOD);
    /* An agent that kept its own high frequency, left out a key and broke another. */
    assert_int_equal(
        cli_identity_report(agent, "{\"" OBJ "\": {\"highPriorityMessageFrequency\": {\"value\": "
                                   "\"PT15S\"}, \"eventPriorityMessageStatistics\": null, "
                                   "\"snapshotFrequency\": {\"value\": 42}}}"),
        204);
    struct cli_result r = CLI_RUN("security", "status", "--device", "sa-1", "--json", H);
    cli_expect_code(&r, 0);
    cJSON *j = cli_json_of(&r);
    const cJSON *s1 = status_of(j, "sa-1");
    assert_string_equal(cJSON_GetStringValue(cli_path(s1, "configuration")), "differs");
    const cJSON *diff = cli_path(s1, "differences");
    assert_int_equal(cJSON_GetArraySize(diff), 3);
    const cJSON *first = cJSON_GetArrayItem(diff, 0);
    assert_string_equal(cJSON_GetStringValue(cli_path(first, "key")),
                        "highPriorityMessageFrequency");
    assert_string_equal(cJSON_GetStringValue(cli_path(first, "desired")), "PT7M");
    assert_string_equal(cJSON_GetStringValue(cli_path(first, "reported")), "PT15S");
    cJSON_Delete(j);
    cli_result_free(&r);

    r = CLI_RUN("security", "status", "--device", "sa-1", H);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "sa-1    yes     Connected   differs (3 keys)\n", &r);
    cli_expect_in(r.out,
                  "  sa-1: highPriorityMessageFrequency: desired \"PT7M\", reported "
                  "\"PT15S\"\n",
                  &r);
    cli_expect_in(r.out, "  sa-1: snapshotFrequency: desired \"PT13H\", reported 42\n", &r);
    cli_expect_in(r.out,
                  "  sa-1: eventPriorityMessageStatistics: desired \"Low\", not "
                  "reported\n",
                  &r);
    cli_result_free(&r);

    /* The broken reported value is what check --reported refuses. */
    r = CLI_RUN("security", "check", "sa-1", "--reported", H);
    cli_expect_code(&r, 1);
    cli_expect_in(r.out, "  snapshotFrequency: TypeMismatch:", &r);
    cli_result_free(&r);
    cli_identity_close(agent);
}

static void test_security_status_unknown_device_fails(void **state)
{
    (void)state;
    struct cli_result r = CLI_RUN("security", "status", "--device", "no-such-device", H);
    cli_expect_code(&r, 1);
    cli_expect_in(r.err, "device 'no-such-device' is not registered", &r);
    cli_expect_not_in(r.out, "DEVICE", &r);
    cli_result_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_security_check_default_fixture_succeeds),
        cmocka_unit_test(test_security_check_refused_file_fails),
        cmocka_unit_test(test_security_check_inline_object_fails),
        cmocka_unit_test(test_security_check_unknown_key_only_warns_succeeds),
        cmocka_unit_test(test_security_check_bad_arguments_fail),
        cmocka_unit_test(test_security_ensure_creates_defaults_skips_existing_succeeds),
        cmocka_unit_test(test_security_ensure_twice_creates_nothing_succeeds),
        cmocka_unit_test(test_security_ensure_desired_overrides_defaults_succeeds),
        cmocka_unit_test(test_security_ensure_refused_configuration_fails),
        cmocka_unit_test(test_security_check_device_desired_succeeds),
        cmocka_unit_test(test_security_check_device_invalid_desired_fails),
        cmocka_unit_test(test_security_status_before_agent_succeeds),
        cmocka_unit_test(test_security_status_agent_reports_desired_succeeds),
        cmocka_unit_test(test_security_status_reported_differs_fails),
        cmocka_unit_test(test_security_status_unknown_device_fails),
    };
    return cmocka_run_group_tests_name("cli_security", tests, group_setup, group_teardown);
}
