/*
 * test_cli.c - end-to-end tests of the `twinhub` admin commands
 * (docs/cli.md): starts the real `twinhub serve` (mosquitto with the built
 * plugin) on free loopback ports with a temporary cert dir, state dir and
 * recording, runs the real `twinhub device|module|twin|method|c2d|query|
 * export|import|stats` processes against it, and checks their output and
 * exit codes.
 *
 * Every test makes the state it needs itself and passes alone, in any order
 * and beside any other test. Tests that only touch identities of their own
 * share one hub (hub_a, ids prefixed with a short tag of the test); tests
 * whose assertions depend on the whole hub (counts over every device, module
 * ensure over every device, query results, export of the registry, restarts)
 * get a fresh hub from a setup/teardown fixture. To prove it:
 * TH_CLI_TEST_ORDER=reverse (or shuffle:SEED) reorders the run and
 * TH_CLI_TEST_ONLY=name[,name...] runs only the named tests, in that order.
 *
 * Running twinhub and serve is cli_harness's (cli_harness.h; nothing sleeps
 * there); the fake device that answers direct methods is this file's.
 *
 * Environment: TWINHUB_BIN (the twinhub executable), set by meson;
 * TH_CLI_TEST_ORDER and TH_CLI_TEST_ONLY as above (both optional).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <cjson/cJSON.h>
#include <mosquitto.h>

#include "cli_harness.h"

/* ---- fixtures ----------------------------------------------------------------------------- */

/*
 * The shared hub: started once for the group, handed to the tests that only
 * touch identities of their own (cmocka_unit_test_prestate). Each of those
 * tests prefixes its ids with a tag of its own, so none sees another's state.
 */
static struct cli_hub hub_a;

static int group_setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    cli_hub_start(&hub_a);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    int rc = cli_hub_stop(&hub_a); /* shows serve's stderr when not 0 */
    cli_hub_remove_dir(&hub_a);
    return rc == 0 ? 0 : -1;
}

/* A hub of the test's own, for assertions about the whole hub; *state owns it. */
static int fresh_hub_setup(void **state)
{
    struct cli_hub *h = calloc(1, sizeof *h);
    assert_non_null(h);
    *state = h;
    cli_hub_start(h);
    return 0;
}

/* Stops the test's hub (unless the test already did) and removes its directory. */
static int fresh_hub_teardown(void **state)
{
    struct cli_hub *h = *state;
    int rc = 0;
    if (!h)
        return 0;
    if (h->pid > 0)
        rc = cli_hub_stop(h); /* shows serve's stderr when not 0 */
    cli_hub_remove_dir(h);
    free(h);
    *state = NULL;
    return rc == 0 ? 0 : -1;
}

#define SHARED_HUB_TEST(f) cmocka_unit_test_prestate(f, &hub_a)
#define FRESH_HUB_TEST(f) cmocka_unit_test_setup_teardown(f, fresh_hub_setup, fresh_hub_teardown)

/* `twinhub device create ID` on hub h; fails the test unless it succeeds. */
static void create_device(const struct cli_hub *h, const char *id)
{
    struct cli_result r = CLI_RUN("device", "create", id, h->flag);
    cli_expect_code(&r, 0);
    cli_result_free(&r);
}

/* ---- serve -------------------------------------------------------------------------------- */

static void test_serve_hub_file_written_when_ready_succeeds(void **state)
{
    const struct cli_hub *h = *state;
    struct stat st;
    assert_int_equal(stat(h->hub_file, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(stat(h->state_dir, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0700);
}

/* ---- device ------------------------------------------------------------------------------- */

static void test_device_create_new_id_succeeds(void **state)
{
    const struct cli_hub *h = *state;
    struct cli_result r = CLI_RUN("device", "create", "dcn-a", h->flag);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "created device dcn-a", &r);
    cli_expect_in(r.out, "primary key", &r);
    cli_expect_in(r.out, "HostName=127.0.0.1;DeviceId=dcn-a;SharedAccessKey=", &r);
    cli_result_free(&r);
}

static void test_device_create_given_keys_succeeds(void **state)
{
    const struct cli_hub *h = *state;
    struct cli_result r =
        CLI_RUN("device", "create", "dck-keys", "--primary-key",
                "dHdpbmh1Yi1jbGktdGVzdC1wcmltYXJ5LWtleS0wMQ==", "--secondary-key",
                "dHdpbmh1Yi1jbGktdGVzdC1zZWNvbmRhcnkta2V5LTE=", "--json", h->flag);
    cli_expect_code(&r, 0);
    cJSON *j = cli_json_of(&r);
    assert_string_equal(cJSON_GetStringValue(cli_path(j, "authentication.symmetricKey.primaryKey")),
                        "dHdpbmh1Yi1jbGktdGVzdC1wcmltYXJ5LWtleS0wMQ==");
    cJSON_Delete(j);
    cli_result_free(&r);
}

static void test_device_create_existing_id_fails(void **state)
{
    const struct cli_hub *h = *state;
    create_device(h, "dce-a");
    struct cli_result r = CLI_RUN("device", "create", "dce-a", h->flag);
    cli_expect_code(&r, 1);
    cli_expect_in(r.err, "errorCode 409001", &r);
    cli_result_free(&r);
}

static void test_device_show_created_device_succeeds(void **state)
{
    const struct cli_hub *h = *state;
    create_device(h, "dsc-a");
    struct cli_result r = CLI_RUN("device", "show", "dsc-a", h->flag);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "dsc-a", &r);
    cli_expect_in(r.out, "enabled", &r);
    cli_result_free(&r);
    r = CLI_RUN("--json", "device", "show", "dsc-a", h->flag);
    cli_expect_code(&r, 0);
    cJSON *j = cli_json_of(&r);
    assert_string_equal(cJSON_GetStringValue(cli_path(j, "deviceId")), "dsc-a");
    assert_string_equal(cJSON_GetStringValue(cli_path(j, "status")), "enabled");
    cJSON_Delete(j);
    cli_result_free(&r);
}

static void test_device_create_edge_shows_scope_succeeds(void **state)
{
    const struct cli_hub *h = *state;
    create_device(h, "dce-leaf");
    struct cli_result r = CLI_RUN("device", "create", "dce-edge", "--edge", h->flag);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "IoT Edge           yes", &r);
    cli_expect_in(r.out, "device scope       ms-azure-iot-edge://dce-edge-", &r);
    cli_result_free(&r);
    r = CLI_RUN("--json", "device", "show", "dce-edge", h->flag);
    cli_expect_code(&r, 0);
    cJSON *j = cli_json_of(&r);
    assert_true(cJSON_IsTrue(cli_path(j, "capabilities.iotEdge")));
    assert_non_null(strstr(cJSON_GetStringValue(cli_path(j, "deviceScope")), "dce-edge-"));
    cJSON_Delete(j);
    cli_result_free(&r);
    r = CLI_RUN("device", "show", "dce-leaf", h->flag);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "IoT Edge           no", &r);
    cli_result_free(&r);
}

static void test_device_list_includes_created_device_succeeds(void **state)
{
    const struct cli_hub *h = *state;
    create_device(h, "dli-a");
    struct cli_result r = CLI_RUN("device", "list", h->flag);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "DEVICE", &r);
    cli_expect_in(r.out, "dli-a ", &r);
    cli_expect_in(r.out, "dev-device ", &r);
    cli_result_free(&r);
    r = CLI_RUN("device", "list", "--json", h->flag);
    cli_expect_code(&r, 0);
    cJSON *j = cli_json_of(&r);
    assert_true(cJSON_IsArray(j));
    bool found = false;
    const cJSON *d;
    cJSON_ArrayForEach(d, j)
    {
        found = found || !strcmp(cJSON_GetStringValue(cli_path(d, "deviceId")), "dli-a");
    }
    assert_true(found);
    cJSON_Delete(j);
    cli_result_free(&r);
}

static void test_device_update_disable_succeeds(void **state)
{
    const struct cli_hub *h = *state;
    create_device(h, "dud-a");
    struct cli_result r = CLI_RUN("device", "update", "dud-a", "--disable", "--status-reason",
                                  "maintenance", h->flag);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "updated device dud-a", &r);
    cli_expect_in(r.out, "disabled (maintenance)", &r);
    cli_result_free(&r);
    r = CLI_RUN("device", "show", "dud-a", "--json", h->flag);
    cli_expect_code(&r, 0);
    cJSON *j = cli_json_of(&r);
    assert_string_equal(cJSON_GetStringValue(cli_path(j, "status")), "disabled");
    assert_string_equal(cJSON_GetStringValue(cli_path(j, "statusReason")), "maintenance");
    cJSON_Delete(j);
    cli_result_free(&r);
}

static void test_device_update_wrong_etag_fails(void **state)
{
    const struct cli_hub *h = *state;
    create_device(h, "due-a");
    struct cli_result r =
        CLI_RUN("device", "update", "due-a", "--enable", "--etag", "bm9wZQ==", h->flag);
    cli_expect_code(&r, 1);
    cli_expect_in(r.err, "errorCode 412001", &r);
    cli_result_free(&r);
}

static void test_device_delete_existing_succeeds(void **state)
{
    const struct cli_hub *h = *state;
    create_device(h, "ddl-del");
    struct cli_result r = CLI_RUN("device", "delete", "ddl-del", h->flag);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "deleted device ddl-del", &r);
    cli_result_free(&r);
    r = CLI_RUN("device", "show", "ddl-del", h->flag);
    cli_expect_code(&r, 1);
    cli_expect_in(r.err, "404001", &r);
    cli_result_free(&r);
}

static void test_device_show_unknown_id_fails(void **state)
{
    const struct cli_hub *h = *state;
    struct cli_result r = CLI_RUN("device", "show", "no-such-device", h->flag);
    cli_expect_code(&r, 1);
    cli_expect_in(r.err, "twinhub: ", &r);
    cli_expect_in(r.err, "no-such-device", &r);
    cli_expect_in(r.err, "(status 404, errorCode 404001)", &r);
    assert_string_equal(r.out, "");
    cli_result_free(&r);
}

/* ---- module ------------------------------------------------------------------------------- */

#define SEC_MODULE "cli-sec"
#define CUSTOM_DESIRED "{\"custom\":{\"level\":7},\"mode\":\"strict\"}"

/*
 * The module fleet: devices <prefix>-1 .. <prefix>-4, of which -1 and -2
 * already have SEC_MODULE with desired properties and tags of their own.
 */
static void create_module_fleet(const struct cli_hub *h, const char *prefix)
{
    char dev[64];
    for (int i = 1; i <= 4; i++) {
        snprintf(dev, sizeof dev, "%s-%d", prefix, i);
        create_device(h, dev);
    }
    for (int i = 1; i <= 2; i++) {
        snprintf(dev, sizeof dev, "%s-%d", prefix, i);
        struct cli_result r = CLI_RUN("module", "create", dev, SEC_MODULE, "--desired",
                                      CUSTOM_DESIRED, "--tags", "{\"owner\":\"me\"}", h->flag);
        cli_expect_code(&r, 0);
        cli_expect_in(r.out, "created module", &r);
        cli_expect_in(r.out, ";ModuleId=" SEC_MODULE ";", &r);
        cli_result_free(&r);
    }
}

static void test_module_create_with_desired_succeeds(void **state)
{
    const struct cli_hub *h = *state;
    create_module_fleet(h, "mcd");
    struct cli_result r = CLI_RUN("module", "list", "mcd-1", h->flag);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, SEC_MODULE, &r);
    cli_result_free(&r);
    r = CLI_RUN("module", "show", "mcd-1", SEC_MODULE, h->flag);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, SEC_MODULE, &r);
    cli_result_free(&r);
}

/* Every device id of hub h, as a cJSON array of strings; the caller frees it with cJSON_Delete. */
static cJSON *all_device_ids(const struct cli_hub *h)
{
    struct cli_result r = CLI_RUN("device", "list", "--json", h->flag);
    cli_expect_code(&r, 0);
    cJSON *list = cli_json_of(&r), *ids = cJSON_CreateArray();
    const cJSON *d;
    cJSON_ArrayForEach(d, list) cJSON_AddItemToArray(
        ids, cJSON_CreateString(cJSON_GetStringValue(cli_path(d, "deviceId"))));
    cJSON_Delete(list);
    cli_result_free(&r);
    return ids;
}

static bool has_string(const cJSON *array, const char *s)
{
    const cJSON *v;
    cJSON_ArrayForEach(v, array)
    {
        if (cJSON_IsString(v) && !strcmp(v->valuestring, s))
            return true;
    }
    return false;
}

static void test_module_create_managed_by_succeeds(void **state)
{
    const struct cli_hub *h = *state;
    struct cli_result r = CLI_RUN("device", "create", "mmb-edge", "--edge", h->flag);
    cli_expect_code(&r, 0);
    cli_result_free(&r);
    r = CLI_RUN("module", "create", "mmb-edge", "edgeMod", "--managed-by", "IotEdge", h->flag);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "managed by         IotEdge", &r);
    cli_result_free(&r);
    r = CLI_RUN("module", "list", "mmb-edge", h->flag);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "IotEdge", &r);
    cli_result_free(&r);
}

/* Fresh hub: `module missing` counts over every device. */
static void test_module_missing_before_ensure_succeeds(void **state)
{
    const struct cli_hub *h = *state;
    create_module_fleet(h, "ens");
    cJSON *ids = all_device_ids(h);
    int ndev = cJSON_GetArraySize(ids);
    struct cli_result r = CLI_RUN("module", "missing", SEC_MODULE, "--json", h->flag);
    cli_expect_code(&r, 0);
    cJSON *j = cli_json_of(&r);
    assert_int_equal((int)cJSON_GetNumberValue(cli_path(j, "count")), ndev - 2);
    const cJSON *missing = cli_path(j, "deviceIds");
    assert_int_equal(cJSON_GetArraySize(missing), ndev - 2);
    assert_true(has_string(missing, "ens-3"));
    assert_false(has_string(missing, "ens-1"));
    assert_false(has_string(missing, "ens-2"));
    cJSON_Delete(j);
    cli_result_free(&r);
    r = CLI_RUN("module", "missing", SEC_MODULE, h->flag);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "without module " SEC_MODULE, &r);
    cli_expect_in(r.out, "  ens-3\n", &r);
    cli_result_free(&r);
    cJSON_Delete(ids);
}

/* Fresh hub: `module ensure` without --device acts on every device. */
static void test_module_ensure_skips_devices_with_module_succeeds(void **state)
{
    const struct cli_hub *h = *state;
    create_module_fleet(h, "ens");
    cJSON *ids = all_device_ids(h);
    int ndev = cJSON_GetArraySize(ids);
    char expect[128];
    snprintf(expect, sizeof expect, "module %s: created %d, skipped 2\n", SEC_MODULE, ndev - 2);
    /* The twins of the modules that exist, to compare after the ensure. */
    cJSON *before[3] = {NULL};
    for (int i = 1; i <= 2; i++) {
        char dev[16];
        snprintf(dev, sizeof dev, "ens-%d", i);
        struct cli_result t = CLI_RUN("twin", "show", dev, SEC_MODULE, "--json", h->flag);
        cli_expect_code(&t, 0);
        before[i] = cli_json_of(&t);
        cli_result_free(&t);
    }
    struct cli_result r = CLI_RUN("module", "ensure", SEC_MODULE, "--desired",
                                  "{\"mode\":\"default\",\"interval\":60}", h->flag);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, expect, &r);
    cli_expect_in(r.out, "  created  ens-3\n", &r);
    cli_expect_in(r.out, "  skipped  ens-1\n", &r);
    cli_expect_in(r.out, "  skipped  ens-2\n", &r);
    cli_result_free(&r);

    /* The modules that existed keep their own desired properties and tags. */
    for (int i = 1; i <= 2; i++) {
        char dev[16];
        snprintf(dev, sizeof dev, "ens-%d", i);
        r = CLI_RUN("twin", "show", dev, SEC_MODULE, "--json", h->flag);
        cli_expect_code(&r, 0);
        cJSON *twin = cli_json_of(&r);
        const cJSON *desired = cli_path(twin, "properties.desired");
        assert_int_equal((int)cJSON_GetNumberValue(cli_path(desired, "custom.level")), 7);
        assert_string_equal(cJSON_GetStringValue(cli_path(desired, "mode")), "strict");
        assert_null(cli_path(desired, "interval"));
        assert_string_equal(cJSON_GetStringValue(cli_path(twin, "tags.owner")), "me");
        /* Untouched: the same desired section ($version and $metadata included), tags, etag. */
        assert_true(cJSON_Compare(desired, cli_path(before[i], "properties.desired"), true));
        assert_true(cJSON_Compare(cli_path(twin, "tags"), cli_path(before[i], "tags"), true));
        assert_string_equal(cJSON_GetStringValue(cli_path(twin, "etag")),
                            cJSON_GetStringValue(cli_path(before[i], "etag")));
        cJSON_Delete(before[i]);
        cJSON_Delete(twin);
        cli_result_free(&r);
    }
    /* The new ones got the given desired properties. */
    r = CLI_RUN("twin", "show", "ens-3", SEC_MODULE, "--json", h->flag);
    cli_expect_code(&r, 0);
    cJSON *twin = cli_json_of(&r);
    assert_string_equal(cJSON_GetStringValue(cli_path(twin, "properties.desired.mode")), "default");
    assert_int_equal((int)cJSON_GetNumberValue(cli_path(twin, "properties.desired.interval")), 60);
    assert_null(cli_path(twin, "properties.desired.custom"));
    cJSON_Delete(twin);
    cli_result_free(&r);

    /* A second run finds nothing to do. */
    r = CLI_RUN("module", "ensure", SEC_MODULE, "--json", h->flag);
    cli_expect_code(&r, 0);
    cJSON *j = cli_json_of(&r);
    assert_int_equal((int)cJSON_GetNumberValue(cli_path(j, "created")), 0);
    assert_int_equal((int)cJSON_GetNumberValue(cli_path(j, "skipped")), ndev);
    cJSON_Delete(j);
    cli_result_free(&r);
    cJSON_Delete(ids);
}

/* Shared hub: with --device, ensure touches only the listed devices (its own). */
static void test_module_ensure_listed_devices_succeeds(void **state)
{
    const struct cli_hub *h = *state;
    create_device(h, "mel-1");
    create_device(h, "mel-5");
    struct cli_result r = CLI_RUN("module", "ensure", "cli-other", "--device", "mel-5", "--device",
                                  "mel-1", "--json", h->flag);
    cli_expect_code(&r, 0);
    cJSON *j = cli_json_of(&r);
    assert_int_equal((int)cJSON_GetNumberValue(cli_path(j, "created")), 2);
    assert_int_equal((int)cJSON_GetNumberValue(cli_path(j, "skipped")), 0);
    assert_true(has_string(cli_path(j, "createdDevices"), "mel-5"));
    assert_true(has_string(cli_path(j, "createdDevices"), "mel-1"));
    cJSON_Delete(j);
    cli_result_free(&r);
    r = CLI_RUN("module", "ensure", "cli-other", "--device", "no-such-device", h->flag);
    cli_expect_code(&r, 1);
    cli_expect_in(r.err, "404001", &r);
    cli_result_free(&r);
}

/* Fresh hub: after an ensure over every device, a device created later is the one missing. */
static void test_module_missing_after_ensure_succeeds(void **state)
{
    const struct cli_hub *h = *state;
    create_module_fleet(h, "ens");
    struct cli_result r = CLI_RUN("module", "ensure", SEC_MODULE, h->flag);
    cli_expect_code(&r, 0);
    cli_result_free(&r);
    create_device(h, "ens-5");
    r = CLI_RUN("module", "missing", SEC_MODULE, h->flag);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "1 device without module " SEC_MODULE ":\n  ens-5\n", &r);
    cli_result_free(&r);
    r = CLI_RUN("module", "ensure", SEC_MODULE, h->flag);
    cli_expect_code(&r, 0);
    cli_result_free(&r);
    r = CLI_RUN("module", "missing", SEC_MODULE, h->flag);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "every device has module " SEC_MODULE, &r);
    cli_result_free(&r);
}

static void test_module_delete_existing_succeeds(void **state)
{
    const struct cli_hub *h = *state;
    create_device(h, "mdl-5");
    struct cli_result r = CLI_RUN("module", "create", "mdl-5", "cli-other", h->flag);
    cli_expect_code(&r, 0);
    cli_result_free(&r);
    r = CLI_RUN("module", "delete", "mdl-5", "cli-other", h->flag);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "deleted module mdl-5/cli-other", &r);
    cli_result_free(&r);
    r = CLI_RUN("module", "show", "mdl-5", "cli-other", h->flag);
    cli_expect_code(&r, 1);
    cli_expect_in(r.err, "404010", &r);
    cli_result_free(&r);
}

/* ---- twin --------------------------------------------------------------------------------- */

/* Two desired patches and a tags patch on `device`'s twin: fw 1.2, cfg {a:1,b:2}, site lab. */
static void patch_lab_twin(const struct cli_hub *h, const char *device)
{
    char expect[128];
    snprintf(expect, sizeof expect, "twin of %s", device);
    struct cli_result r =
        CLI_RUN("twin", "patch", device, "--desired", "{\"fw\":\"1.2\",\"cfg\":{\"a\":1}}",
                "--tags", "{\"site\":\"lab\"}", h->flag);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, expect, &r);
    cli_result_free(&r);
    r = CLI_RUN("twin", "patch", device, "--desired", "{\"cfg\":{\"b\":2}}", h->flag);
    cli_expect_code(&r, 0);
    cli_result_free(&r);
}

static void test_twin_patch_then_show_succeeds(void **state)
{
    const struct cli_hub *h = *state;
    create_device(h, "tps-3");
    patch_lab_twin(h, "tps-3");
    struct cli_result r = CLI_RUN("twin", "show", "tps-3", h->flag);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "\"fw\": \"1.2\"", &r);
    cli_expect_in(r.out, "\"site\": \"lab\"", &r);
    assert_null(strstr(r.out, "$metadata"));
    cli_result_free(&r);
    r = CLI_RUN("twin", "show", "tps-3", "--json", h->flag);
    cli_expect_code(&r, 0);
    cJSON *twin = cli_json_of(&r);
    assert_int_equal((int)cJSON_GetNumberValue(cli_path(twin, "properties.desired.cfg.a")), 1);
    assert_int_equal((int)cJSON_GetNumberValue(cli_path(twin, "properties.desired.cfg.b")), 2);
    assert_int_equal((int)cJSON_GetNumberValue(cli_path(twin, "properties.desired.$version")), 3);
    assert_string_equal(cJSON_GetStringValue(cli_path(twin, "tags.site")), "lab");
    cJSON_Delete(twin);
    cli_result_free(&r);
}

static void test_twin_patch_from_file_succeeds(void **state)
{
    const struct cli_hub *h = *state;
    create_device(h, "tpf-3");
    struct cli_result r = CLI_RUN("module", "create", "tpf-3", SEC_MODULE, h->flag);
    cli_expect_code(&r, 0);
    cli_result_free(&r);
    char file[CLI_PATH_LEN + 32];
    snprintf(file, sizeof file, "%s/tpf-desired.json", h->dir);
    cli_write_file(file, "{\"fromFile\": true}\n");
    r = CLI_RUN("twin", "patch", "tpf-3", SEC_MODULE, "--desired", file, "--json", h->flag);
    cli_expect_code(&r, 0);
    cJSON *twin = cli_json_of(&r);
    assert_true(cJSON_IsTrue(cli_path(twin, "properties.desired.fromFile")));
    assert_string_equal(cJSON_GetStringValue(cli_path(twin, "moduleId")), SEC_MODULE);
    cJSON_Delete(twin);
    cli_result_free(&r);
}

/* ---- method and c2d ----------------------------------------------------------------------- */

/*
 * A minimal device on the plain listener that answers every direct method:
 * "fail" with status 500, "minus" with -1 and {} (the full C SDK's answer to an
 * unknown method), "text" with 200 and a body that is not JSON, anything else
 * with 200 and {"ok":true,"got":<payload>}.
 */
struct fake_device {
    struct mosquitto *mosq;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool subscribed;
};

static void dev_on_connect(struct mosquitto *mosq, void *obj, int rc)
{
    if (rc == 0)
        mosquitto_subscribe(mosq, NULL, "$iothub/methods/POST/#", 0);
}

static void dev_on_subscribe(struct mosquitto *mosq, void *obj, int mid, int n, const int *q)
{
    struct fake_device *d = obj;
    pthread_mutex_lock(&d->mu);
    d->subscribed = true;
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
}

static void dev_on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *m)
{
    /* $iothub/methods/POST/{name}/?$rid={rid} */
    const char *name = m->topic + strlen("$iothub/methods/POST/");
    const char *rid = strstr(m->topic, "$rid=");
    if (!rid)
        return;
    rid += 5;
    bool fail = !strncmp(name, "fail/", 5);
    bool minus = !strncmp(name, "minus/", 6);
    bool text = !strncmp(name, "text/", 5);
    char topic[256], body[1024];
    snprintf(topic, sizeof topic, "$iothub/methods/res/%d/?$rid=%.*s",
             fail    ? 500
             : minus ? -1
                     : 200,
             (int)strcspn(rid, "&"), rid);
    if (minus || text)
        snprintf(body, sizeof body, "%s", minus ? "{}" : "not json!");
    else
        snprintf(body, sizeof body, "{\"ok\":%s,\"got\":%.*s}", fail ? "false" : "true",
                 m->payloadlen > 0 ? m->payloadlen : 4,
                 m->payloadlen > 0 ? (char *)m->payload : "null");
    mosquitto_publish(mosq, NULL, topic, (int)strlen(body), body, 0, false);
}

/* Connect `device_id` of hub h (key from `device show`); wait until it listens for methods. */
static void fake_device_start(struct fake_device *d, const struct cli_hub *h, const char *device_id)
{
    struct cli_login l;
    cli_login_of(h, device_id, NULL, &l);
    memset(d, 0, sizeof *d);
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->cv, NULL);
    mosquitto_lib_init();
    d->mosq = mosquitto_new(l.client_id, true, d);
    assert_non_null(d->mosq);
    mosquitto_connect_callback_set(d->mosq, dev_on_connect);
    mosquitto_subscribe_callback_set(d->mosq, dev_on_subscribe);
    mosquitto_message_callback_set(d->mosq, dev_on_message);
    mosquitto_username_pw_set(d->mosq, l.user, l.token);
    assert_int_equal(mosquitto_connect(d->mosq, "127.0.0.1", l.port, 60), MOSQ_ERR_SUCCESS);
    assert_int_equal(mosquitto_loop_start(d->mosq), MOSQ_ERR_SUCCESS);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&d->mu);
    while (!d->subscribed && pthread_cond_timedwait(&d->cv, &d->mu, &until) == 0)
        ;
    bool ok = d->subscribed;
    pthread_mutex_unlock(&d->mu);
    assert_true(ok);
}

static void fake_device_stop(struct fake_device *d)
{
    mosquitto_disconnect(d->mosq);
    mosquitto_loop_stop(d->mosq, false);
    mosquitto_destroy(d->mosq);
    mosquitto_lib_cleanup();
}

static void test_method_invoke_connected_device_succeeds(void **state)
{
    const struct cli_hub *h = *state;
    create_device(h, "mic-4");
    struct fake_device d;
    fake_device_start(&d, h, "mic-4");
    struct cli_result r =
        CLI_RUN("method", "invoke", "mic-4", "reboot", "--payload", "{\"delay\":1}", h->flag);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "status 200\n", &r);
    cli_expect_in(r.out, "\"ok\": true", &r);
    cli_expect_in(r.out, "\"delay\": 1", &r);
    cli_result_free(&r);
    /* Any status the device answers with is a call that returned: exit 0. */
    r = CLI_RUN("method", "invoke", "mic-4", "fail", "--json", h->flag);
    cli_expect_code(&r, 0);
    cJSON *j = cli_json_of(&r);
    assert_int_equal((int)cJSON_GetNumberValue(cli_path(j, "status")), 500);
    assert_true(cJSON_IsFalse(cli_path(j, "payload.ok")));
    cJSON_Delete(j);
    cli_result_free(&r);
    /* A negative status is a status like any other. */
    r = CLI_RUN("method", "invoke", "mic-4", "minus", h->flag);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "status -1\n{}\n", &r);
    cli_result_free(&r);
    /* A body that is not JSON: shown as sent, and exit 1 as a service SDK would fail on it. */
    r = CLI_RUN("method", "invoke", "mic-4", "text", h->flag);
    cli_expect_code(&r, 1);
    cli_expect_in(r.out, "status 200\nnot json!\n", &r);
    cli_expect_in(r.err, "not JSON", &r);
    cli_expect_in(r.err, "service SDKs fail to parse", &r);
    cli_result_free(&r);
    r = CLI_RUN("device", "disconnect", "mic-4", h->flag);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "disconnected mic-4", &r);
    cli_result_free(&r);
    fake_device_stop(&d);
}

static void test_method_invoke_offline_device_fails(void **state)
{
    const struct cli_hub *h = *state;
    create_device(h, "mio-3");
    struct cli_result r = CLI_RUN("method", "invoke", "mio-3", "reboot", "--payload",
                                  "{\"delay\":1}", "--timeout", "5", h->flag);
    cli_expect_code(&r, 1);
    cli_expect_in(r.err, "404103", &r);
    cli_result_free(&r);
}

static void test_c2d_send_offline_device_queues_succeeds(void **state)
{
    const struct cli_hub *h = *state;
    create_device(h, "c2d-3");
    struct cli_result r = CLI_RUN("c2d", "send", "c2d-3", "hello", "--property", "k=v",
                                  "--message-id", "m-1", "--content-type", "text/plain", h->flag);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "sent message m-1 to c2d-3: queued", &r);
    cli_result_free(&r);
}

/* ---- query -------------------------------------------------------------------------------- */

/* Fresh hub: the query runs over every device, and exactly one has the tag. */
static void test_query_tag_filter_succeeds(void **state)
{
    const struct cli_hub *h = *state;
    create_device(h, "ens-3");
    create_device(h, "ens-4");
    patch_lab_twin(h, "ens-3");
    struct cli_result r =
        CLI_RUN("query", "SELECT deviceId FROM devices WHERE tags.site = 'lab'", h->flag);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "deviceId", &r);
    cli_expect_in(r.out, "ens-3", &r);
    cli_expect_in(r.out, "1 item\n", &r);
    cli_result_free(&r);
}

/* Shared hub: the expected items are the devices listed just before, whoever made them. */
static void test_query_follows_continuations_succeeds(void **state)
{
    const struct cli_hub *h = *state;
    /* At least five devices, so that pages of two need continuations. */
    static const char *const own[] = {"qfc-1", "qfc-2", "qfc-3", "qfc-4", "qfc-5"};
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
        create_device(h, own[i]);
    cJSON *ids = all_device_ids(h);
    assert_true(cJSON_GetArraySize(ids) >= 5);
    struct cli_result r =
        CLI_RUN("query", "SELECT * FROM devices", "--page-size", "2", "--json", h->flag);
    cli_expect_code(&r, 0);
    cJSON *j = cli_json_of(&r);
    const cJSON *items = cli_path(j, "items");
    assert_int_equal(cJSON_GetArraySize(items), cJSON_GetArraySize(ids));
    assert_true(cJSON_IsNull(cli_path(j, "continuation")));
    const cJSON *it;
    int found = 0;
    cJSON_ArrayForEach(it, items)
    {
        found += has_string(ids, cJSON_GetStringValue(cli_path(it, "deviceId")));
    }
    assert_int_equal(found, cJSON_GetArraySize(ids));
    cJSON_Delete(j);
    cli_result_free(&r);
    cJSON_Delete(ids);
}

static void test_query_jobs_empty_succeeds(void **state)
{
    /* IoT Hub answers an empty result when there are no jobs (none on this shared hub). */
    const struct cli_hub *h = *state;
    struct cli_result r = CLI_RUN("query", "SELECT * FROM devices.jobs", h->flag);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "0 items\n", &r);
    cli_result_free(&r);
    r = CLI_RUN("query", "SELECT * FROM devices.jobs WHERE devices.jobs.deviceId = 'cli-a'",
                "--json", h->flag);
    cli_expect_code(&r, 0);
    cJSON *j = cli_json_of(&r);
    assert_int_equal(cJSON_GetArraySize(cli_path(j, "items")), 0);
    assert_string_equal(cJSON_GetStringValue(cli_path(j, "itemType")), "deviceJob");
    cJSON_Delete(j);
    cli_result_free(&r);
    /* an unknown collection is still an error */
    r = CLI_RUN("query", "SELECT * FROM devices.things", h->flag);
    cli_expect_code(&r, 1);
    cli_expect_in(r.err, "errorCode 400004", &r);
    cli_result_free(&r);
}

/* twinhub job: a twin update over a condition, waited for; list; an unknown job. */
static void test_job_create_wait_list_succeeds(void **state)
{
    const struct cli_hub *h = *state;
    create_device(h, "job-1");
    create_device(h, "job-2");
    struct cli_result r = CLI_RUN("job", "create", "j-fw", "deviceId IN ['job-1','job-2']",
                                  "--desired", "{\"fw\":\"2.0\"}", "--wait", h->flag);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "job j-fw: scheduleUpdateTwin completed", &r);
    cli_expect_in(r.out, "2: 2 succeeded, 0 failed", &r);
    cli_result_free(&r);
    r = CLI_RUN("twin", "show", "job-2", "--json", h->flag);
    cli_expect_code(&r, 0);
    cJSON *j = cli_json_of(&r);
    assert_string_equal(cJSON_GetStringValue(cli_path(j, "properties.desired.fw")), "2.0");
    cJSON_Delete(j);
    cli_result_free(&r);
    r = CLI_RUN("job", "list", "--status", "completed", h->flag);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "j-fw", &r);
    cli_result_free(&r);
    r = CLI_RUN("query", "SELECT * FROM devices.jobs WHERE jobId = 'j-fw'", h->flag);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "2 items\n", &r);
    cli_result_free(&r);
    r = CLI_RUN("job", "show", "no-such-job", h->flag);
    cli_expect_code(&r, 1);
    cli_expect_in(r.err, "404000", &r);
    cli_result_free(&r);
    r = CLI_RUN("job", "create", "j-x", "deviceId = 'job-1'", h->flag);
    cli_expect_code(&r, 2);
    cli_result_free(&r);
}

static void test_query_syntax_error_fails(void **state)
{
    const struct cli_hub *h = *state;
    struct cli_result r = CLI_RUN("query", "SELEKT * FROM devices", h->flag);
    cli_expect_code(&r, 1);
    cli_expect_in(r.err, "errorCode 400004", &r);
    cli_result_free(&r);
}

/* ---- stats -------------------------------------------------------------------------------- */

/* Fresh hub: the counts cover every device. */
static void test_stats_counts_devices_succeeds(void **state)
{
    const struct cli_hub *h = *state;
    create_device(h, "sts-a");
    create_device(h, "sts-b");
    struct cli_result r = CLI_RUN("device", "update", "sts-a", "--disable", h->flag);
    cli_expect_code(&r, 0);
    cli_result_free(&r);
    cJSON *ids = all_device_ids(h);
    r = CLI_RUN("stats", "--json", h->flag);
    cli_expect_code(&r, 0);
    cJSON *j = cli_json_of(&r);
    assert_int_equal((int)cJSON_GetNumberValue(cli_path(j, "totalDeviceCount")),
                     cJSON_GetArraySize(ids));
    assert_int_equal((int)cJSON_GetNumberValue(cli_path(j, "disabledDeviceCount")), 1); /* sts-a */
    cJSON_Delete(j);
    cli_result_free(&r);
    r = CLI_RUN("stats", h->flag);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "devices", &r);
    cli_expect_in(r.out, "modules", &r);
    cli_result_free(&r);
    cJSON_Delete(ids);
}

/* ---- export and import -------------------------------------------------------------------- */

/* Fresh hub: the export carries the whole registry, and both hubs' counts must match. */
static void test_export_then_import_into_fresh_hub_succeeds(void **state)
{
    const struct cli_hub *h = *state;
    struct cli_result r = CLI_RUN("device", "create", "cli-keys", "--primary-key",
                                  "dHdpbmh1Yi1jbGktdGVzdC1wcmltYXJ5LWtleS0wMQ==", "--secondary-key",
                                  "dHdpbmh1Yi1jbGktdGVzdC1zZWNvbmRhcnkta2V5LTE=", h->flag);
    cli_expect_code(&r, 0);
    cli_result_free(&r);
    create_module_fleet(h, "ens");
    patch_lab_twin(h, "ens-3");

    char file[CLI_PATH_LEN + 32];
    snprintf(file, sizeof file, "%s/export.json", h->dir);
    r = CLI_RUN("export", "-o", file, h->flag);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "exported ", &r);
    cli_result_free(&r);

    struct cli_hub b;
    cli_hub_start(&b);
    char b_flag[CLI_PATH_LEN + 16];
    snprintf(b_flag, sizeof b_flag, "--hub=%s", b.info);
    r = CLI_RUN("device", "show", "ens-1", b_flag);
    cli_expect_code(&r, 1);
    cli_result_free(&r);

    r = CLI_RUN("import", file, b_flag);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "imported ", &r);
    cli_expect_in(r.out, "created ", &r);
    cli_result_free(&r);

    /* Identities, keys and twins came across. */
    r = CLI_RUN("device", "show", "cli-keys", "--json", b_flag);
    cli_expect_code(&r, 0);
    cJSON *j = cli_json_of(&r);
    assert_string_equal(cJSON_GetStringValue(cli_path(j, "authentication.symmetricKey.primaryKey")),
                        "dHdpbmh1Yi1jbGktdGVzdC1wcmltYXJ5LWtleS0wMQ==");
    cJSON_Delete(j);
    cli_result_free(&r);
    r = CLI_RUN("twin", "show", "ens-1", SEC_MODULE, "--json", b_flag);
    cli_expect_code(&r, 0);
    j = cli_json_of(&r);
    assert_int_equal((int)cJSON_GetNumberValue(cli_path(j, "properties.desired.custom.level")), 7);
    assert_string_equal(cJSON_GetStringValue(cli_path(j, "tags.owner")), "me");
    cJSON_Delete(j);
    cli_result_free(&r);
    r = CLI_RUN("twin", "show", "ens-3", "--json", b_flag);
    cli_expect_code(&r, 0);
    j = cli_json_of(&r);
    assert_string_equal(cJSON_GetStringValue(cli_path(j, "tags.site")), "lab");
    assert_string_equal(cJSON_GetStringValue(cli_path(j, "properties.desired.fw")), "1.2");
    cJSON_Delete(j);
    cli_result_free(&r);

    /* The same counts on both hubs. */
    struct cli_result sa = CLI_RUN("stats", "--json", h->flag),
                      sb = CLI_RUN("stats", "--json", b_flag);
    cli_expect_code(&sa, 0);
    cli_expect_code(&sb, 0);
    cJSON *ja = cli_json_of(&sa), *jb = cli_json_of(&sb);
    assert_int_equal((int)cJSON_GetNumberValue(cli_path(ja, "totalDeviceCount")),
                     (int)cJSON_GetNumberValue(cli_path(jb, "totalDeviceCount")));
    assert_int_equal((int)cJSON_GetNumberValue(cli_path(ja, "totalModuleCount")),
                     (int)cJSON_GetNumberValue(cli_path(jb, "totalModuleCount")));
    cJSON_Delete(ja);
    cJSON_Delete(jb);
    cli_result_free(&sa);
    cli_result_free(&sb);

    /* Importing again skips what exists. */
    r = CLI_RUN("import", file, "--json", b_flag);
    cli_expect_code(&r, 0);
    j = cli_json_of(&r);
    assert_int_equal((int)cJSON_GetNumberValue(cli_path(j, "created")), 0);
    assert_true(cJSON_GetNumberValue(cli_path(j, "skipped")) > 0);
    cJSON_Delete(j);
    cli_result_free(&r);

    /* A clean stop removes the hub file; the --info-file stays, naming a dead hub. */
    assert_int_equal(cli_hub_stop(&b), 0);
    assert_int_equal(access(b.hub_file, F_OK), -1);
    r = CLI_RUN("stats", b_flag);
    cli_expect_code(&r, 3);
    cli_expect_in(r.err, "twinhub serve", &r);
    cli_result_free(&r);
    cli_hub_remove_dir(&b);
}

/* ---- serve: --record and --state-dir ---------------------------------------------------- */

static void test_serve_record_file_has_events_succeeds(void **state)
{
    const struct cli_hub *h = *state;
    create_device(h, "rec-a");
    create_device(h, "rec-3");
    struct cli_result r =
        CLI_RUN("twin", "patch", "rec-3", "--desired", "{\"fw\":\"1.2\"}", h->flag);
    cli_expect_code(&r, 0);
    cli_result_free(&r);
    char *rec = cli_slurp(h->record);
    assert_non_null(strstr(rec, "\"kind\":\"deviceCreated\",\"deviceId\":\"rec-a\""));
    assert_non_null(strstr(rec, "\"kind\":\"desired\",\"deviceId\":\"rec-3\""));
    free(rec);
}

/* Fresh hub: the test stops and restarts it. */
static void test_serve_state_dir_survives_restart_succeeds(void **state)
{
    struct cli_hub *c = *state;
    create_device(c, "kept");
    struct cli_result r = CLI_RUN("twin", "patch", "kept", "--desired", "{\"kept\":true}", c->flag);
    cli_expect_code(&r, 0);
    cli_result_free(&r);
    assert_int_equal(cli_hub_stop(c), 0);
    cli_hub_restart(c);
    r = CLI_RUN("twin", "show", "kept", "--json", c->flag);
    cli_expect_code(&r, 0);
    cJSON *j = cli_json_of(&r);
    assert_true(cJSON_IsTrue(cli_path(j, "properties.desired.kept")));
    cJSON_Delete(j);
    cli_result_free(&r);
    assert_int_equal(cli_hub_stop(c), 0);
}

/* ---- refusals ----------------------------------------------------------------------------- */

/* The arguments are refused before anything reaches the hub: the ids need not exist. */
static void test_cli_bad_json_argument_fails(void **state)
{
    const struct cli_hub *h = *state;
    struct cli_result r = CLI_RUN("twin", "patch", "ens-3", "--desired", "{\"a\":", h->flag);
    cli_expect_code(&r, 2);
    cli_expect_in(r.err, "--desired is not valid JSON", &r);
    cli_result_free(&r);
    r = CLI_RUN("module", "ensure", SEC_MODULE, "--desired", "[1,2]", h->flag);
    cli_expect_code(&r, 2);
    cli_expect_in(r.err, "must be a JSON object", &r);
    cli_result_free(&r);
    r = CLI_RUN("method", "invoke", "ens-3", "m", "--payload", "not json", h->flag);
    cli_expect_code(&r, 2);
    cli_result_free(&r);
}

static void test_cli_usage_errors_fail(void **state)
{
    const struct cli_hub *h = *state;
    struct cli_result r = CLI_RUN("device", "show", h->flag);
    cli_expect_code(&r, 2);
    cli_expect_in(r.err, "twinhub device show ID", &r);
    cli_result_free(&r);
    r = CLI_RUN("device", "frobnicate", h->flag);
    cli_expect_code(&r, 2);
    cli_expect_in(r.err, "unknown action 'frobnicate'", &r);
    cli_result_free(&r);
    r = CLI_RUN("device", "list", "--bogus", h->flag);
    cli_expect_code(&r, 2);
    cli_expect_in(r.err, "unknown option --bogus", &r);
    cli_result_free(&r);
    r = CLI_RUN("twin", "patch", "ens-3", h->flag);
    cli_expect_code(&r, 2);
    cli_expect_in(r.err, "--desired", &r);
    cli_result_free(&r);
    r = CLI_RUN("help", "module");
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "twinhub module ensure MODULE", &r);
    cli_result_free(&r);
}

static void test_cli_no_hub_fails(void **state)
{
    const struct cli_hub *h = *state;
    char empty[CLI_PATH_LEN + 32];
    snprintf(empty, sizeof empty, "--cert-dir=%s/no-hub-here", h->dir);
    struct cli_result r = CLI_RUN("device", "list", empty);
    cli_expect_code(&r, 3);
    cli_expect_in(r.err, "twinhub serve", &r);
    cli_expect_in(r.err, "--hub", &r);
    assert_string_equal(r.out, "");
    cli_result_free(&r);
}

static void test_cli_wrong_key_fails(void **state)
{
    const struct cli_hub *h = *state;
    char hub_flag[CLI_PATH_LEN + 16];
    snprintf(hub_flag, sizeof hub_flag, "--hub=%s", h->info);
    struct cli_result r = CLI_RUN("stats", hub_flag, "--connection-string",
                                  "HostName=twinhub.localhost;SharedAccessKeyName=iothubowner;"
                                  "SharedAccessKey=d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktMDE=");
    cli_expect_code(&r, 3);
    cli_expect_in(r.err, "refused the service connection", &r);
    cli_result_free(&r);
}

/* ---- selection and order ------------------------------------------------------------------ */

static const struct CMUnitTest all_tests[] = {
    SHARED_HUB_TEST(test_serve_hub_file_written_when_ready_succeeds),
    SHARED_HUB_TEST(test_device_create_new_id_succeeds),
    SHARED_HUB_TEST(test_device_create_given_keys_succeeds),
    SHARED_HUB_TEST(test_device_create_existing_id_fails),
    SHARED_HUB_TEST(test_device_show_created_device_succeeds),
    SHARED_HUB_TEST(test_device_create_edge_shows_scope_succeeds),
    SHARED_HUB_TEST(test_device_list_includes_created_device_succeeds),
    SHARED_HUB_TEST(test_device_update_disable_succeeds),
    SHARED_HUB_TEST(test_device_update_wrong_etag_fails),
    SHARED_HUB_TEST(test_device_delete_existing_succeeds),
    SHARED_HUB_TEST(test_device_show_unknown_id_fails),
    SHARED_HUB_TEST(test_module_create_with_desired_succeeds),
    SHARED_HUB_TEST(test_module_create_managed_by_succeeds),
    FRESH_HUB_TEST(test_module_missing_before_ensure_succeeds),
    FRESH_HUB_TEST(test_module_ensure_skips_devices_with_module_succeeds),
    SHARED_HUB_TEST(test_module_ensure_listed_devices_succeeds),
    FRESH_HUB_TEST(test_module_missing_after_ensure_succeeds),
    SHARED_HUB_TEST(test_module_delete_existing_succeeds),
    SHARED_HUB_TEST(test_twin_patch_then_show_succeeds),
    SHARED_HUB_TEST(test_twin_patch_from_file_succeeds),
    SHARED_HUB_TEST(test_method_invoke_connected_device_succeeds),
    SHARED_HUB_TEST(test_method_invoke_offline_device_fails),
    SHARED_HUB_TEST(test_c2d_send_offline_device_queues_succeeds),
    FRESH_HUB_TEST(test_query_tag_filter_succeeds),
    SHARED_HUB_TEST(test_query_follows_continuations_succeeds),
    SHARED_HUB_TEST(test_query_jobs_empty_succeeds),
    FRESH_HUB_TEST(test_job_create_wait_list_succeeds),
    SHARED_HUB_TEST(test_query_syntax_error_fails),
    FRESH_HUB_TEST(test_stats_counts_devices_succeeds),
    FRESH_HUB_TEST(test_export_then_import_into_fresh_hub_succeeds),
    SHARED_HUB_TEST(test_serve_record_file_has_events_succeeds),
    FRESH_HUB_TEST(test_serve_state_dir_survives_restart_succeeds),
    SHARED_HUB_TEST(test_cli_bad_json_argument_fails),
    SHARED_HUB_TEST(test_cli_usage_errors_fail),
    SHARED_HUB_TEST(test_cli_no_hub_fails),
    SHARED_HUB_TEST(test_cli_wrong_key_fails),
};

#define N_TESTS (sizeof all_tests / sizeof all_tests[0])

/*
 * TH_CLI_TEST_ONLY=a,b,...: exactly the named tests, in the order named;
 * false (saying which) when a name is not a test, so a typo cannot pass.
 * Unset or empty: every test, in table order.
 */
static bool select_tests(struct CMUnitTest *out, size_t *n)
{
    const char *only = getenv("TH_CLI_TEST_ONLY");
    *n = 0;
    if (!only || !*only) {
        memcpy(out, all_tests, sizeof all_tests);
        *n = N_TESTS;
        return true;
    }
    for (const char *p = only; *p;) {
        size_t len = strcspn(p, ",");
        size_t i = 0;
        while (i < N_TESTS &&
               (strlen(all_tests[i].name) != len || strncmp(all_tests[i].name, p, len) != 0))
            i++;
        if (i == N_TESTS || *n == N_TESTS) {
            fprintf(stderr, "TH_CLI_TEST_ONLY: no test named '%.*s' (or too many names)\n",
                    (int)len, p);
            return false;
        }
        out[(*n)++] = all_tests[i];
        p += len;
        if (*p == ',')
            p++;
    }
    return *n > 0;
}

/*
 * TH_CLI_TEST_ORDER: unset or "as-listed" keeps the order, "reverse" runs
 * it backwards, "shuffle:SEED" permutes it with a fixed-seed generator (the
 * same seed gives the same order). False, saying why, on anything else.
 */
static bool order_tests(struct CMUnitTest *t, size_t n)
{
    const char *order = getenv("TH_CLI_TEST_ORDER");
    if (!order || !*order || !strcmp(order, "as-listed"))
        return true;
    if (!strcmp(order, "reverse")) {
        for (size_t i = 0; i < n / 2; i++) {
            struct CMUnitTest tmp = t[i];
            t[i] = t[n - 1 - i];
            t[n - 1 - i] = tmp;
        }
        return true;
    }
    char *end;
    if (!strncmp(order, "shuffle:", 8) && order[8]) {
        uint64_t x = strtoull(order + 8, &end, 10);
        if (*end == '\0') {
            for (size_t i = n; i > 1; i--) { /* Fisher-Yates over a 64-bit LCG (Knuth's MMIX) */
                x = x * 6364136223846793005ULL + 1442695040888963407ULL;
                size_t j = (size_t)((x >> 33) % i);
                struct CMUnitTest tmp = t[i - 1];
                t[i - 1] = t[j];
                t[j] = tmp;
            }
            return true;
        }
    }
    fprintf(stderr, "TH_CLI_TEST_ORDER: '%s' is not as-listed, reverse or shuffle:SEED\n", order);
    return false;
}

int main(void)
{
    struct CMUnitTest tests[N_TESTS];
    size_t n;
    if (!select_tests(tests, &n) || !order_tests(tests, n))
        return 2;
    return _cmocka_run_group_tests("cli", tests, n, group_setup, group_teardown);
}
