/*
 * it_persist.c - crash tests for `twinhub serve --state-dir DIR` and
 * `--record FILE` (docs/control-api.md "Recording and persistence",
 * docs/recording.md "Durability", persist.c).
 *
 * Each test starts its own hub, makes changes from real clients and waits for
 * each one to be acknowledged (204 for a reported patch, PUBACK for telemetry,
 * the control API's answer for service-side changes), then SIGKILLs the
 * mosquitto broker (a child of serve) so nothing can be flushed at exit, lets
 * serve end, and starts a new serve on the same state dir or recording. The
 * new hub must hold every acknowledged change: twin values, versions, etags
 * and metadata, identities and keys, statuses, queued C2D messages (delivered
 * after reconnecting) and deletions; the recording must hold every
 * acknowledged telemetry message and reported patch, as valid JSON lines with
 * seq increasing by 1.
 *
 * A state dir holding files that cannot be loaded (cut short, not JSON, or a
 * twin with a null in an array as an older twinhub stored) still starts: the
 * files are moved to DIR/quarantine/, the banner, stderr and the info file
 * name the identity and the reason, and every other identity is there.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <mosquitto.h>

#include "harness.h"

#define SEC_MODULE "azureiotsecurity"
#define KEY_A "aXQtcmVnaXN0cnktZXhwbGljaXQtcHJpbWFyeS0wMSE="
#define KEY_B "aXQtcmVnaXN0cnktZXhwbGljaXQtc2Vjb25kLTAyISE="
#define KEY_ROT_1 "aXQtcmVnaXN0cnktcm90YXRlZC1wcmltYXJ5LTAwMyE="
#define KEY_ROT_2 "aXQtcmVnaXN0cnktcm90YXRlZC1zZWNvbmQtMDA0ISE="

/* The hubs and scratch dir of the running test; the teardown stops and removes what is left. */
static struct it_hub hub_a, hub_b;
static char *scratch;

/* ---- helpers ---- */

/* The test's private scratch directory (removed by the teardown). */
static char *scratch_dir(void)
{
    const char *tmp = getenv("TMPDIR");
    scratch = it_strdupf("%s/twinhub-persist-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    assert_non_null(mkdtemp(scratch));
    return scratch;
}

/*
 * After every test, passed or failed: a hub still running (the test failed
 * before stopping it) is stopped, so no serve outlives the test process, and
 * the scratch dir goes unless IT_KEEP is set.
 */
static int persist_teardown(void **state)
{
    (void)state;
    int rc = 0;
    if (hub_a.pid > 0 && it_hub_stop(&hub_a) != 0)
        rc = -1;
    if (hub_b.pid > 0 && it_hub_stop(&hub_b) != 0)
        rc = -1;
    if (scratch && !getenv("IT_KEEP"))
        it_rmtree(scratch);
    free(scratch);
    scratch = NULL;
    return rc;
}

static void start_hub(struct it_hub *hub, const char *opt, const char *path)
{
    const char *extra[] = {opt, path, NULL};
    assert_int_equal(it_hub_start_with(hub, NULL, extra), 0);
}

/* SIGKILL the broker, let serve end; the test fails unless both are gone. */
static void crash_hub(struct it_hub *hub)
{
    int st;
    int rc = it_hub_kill_broker(hub, &st);
    if (st >= 0)
        fprintf(stderr, "# serve after its broker was killed: %s %d\n",
                WIFEXITED(st) ? "exit status" : "signal",
                WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    assert_int_equal(rc, 0);
}

static struct it_client *twin_client(const struct it_hub *hub, const char *d, const char *m,
                                     const char *key)
{
    struct it_client *c = it_device_open(hub, d, m, key);
    assert_int_equal(it_client_subscribe(c, "$iothub/twin/res/#", 1, IT_WAIT_MS), 1);
    return c;
}

/* Reported patch that must be acknowledged with 204; returns the new reported $version. */
static int report(struct it_client *c, const char *rid, const char *patch)
{
    int status;
    struct it_msg *m = it_twin_request(c, rid, patch, &status);
    assert_non_null(m);
    assert_int_equal(status, 204);
    char *v = it_topic_param(m->topic, "$version");
    it_msg_free(m);
    assert_non_null(v);
    int version = atoi(v);
    free(v);
    return version;
}

/* A copy of obj holding only the members named in fields (absent ones stay absent). */
static cJSON *pick(const cJSON *obj, const char *const *fields)
{
    cJSON *out = cJSON_CreateObject();
    for (size_t i = 0; fields[i]; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, fields[i]);
        if (v)
            cJSON_AddItemToObject(out, fields[i], cJSON_Duplicate(v, 1));
    }
    return out;
}

/* What a restart must keep: everything but connection state and activity times. */
static const char *const twin_fields[] = {
    "deviceId",     "moduleId", "etag",       "version", "status",
    "statusReason", "tags",     "properties", "modelId", NULL};
static const char *const identity_fields[] = {"deviceId",
                                              "moduleId",
                                              "generationId",
                                              "etag",
                                              "status",
                                              "statusReason",
                                              "authentication",
                                              "managedBy",
                                              "cloudToDeviceMessageCount",
                                              NULL};

/* {"twin": picked getTwin, "identity": picked getDevice} of one identity. */
static cJSON *durable_state(struct it_client *svc, const char *d, const char *m)
{
    char mod[300] = "";
    if (m)
        snprintf(mod, sizeof mod, ",\"moduleId\":\"%s\"", m);
    cJSON *twin = it_control_ok(svc, "{\"command\":\"getTwin\",\"deviceId\":\"%s\"%s}", d, mod);
    cJSON *ident = it_control_ok(svc, "{\"command\":\"getDevice\",\"deviceId\":\"%s\"%s}", d, mod);
    cJSON *out = cJSON_CreateObject();
    cJSON_AddItemToObject(out, "twin", pick(twin, twin_fields));
    cJSON_AddItemToObject(out, "identity", pick(ident, identity_fields));
    cJSON_Delete(twin);
    cJSON_Delete(ident);
    return out;
}

static void assert_json_equal(const cJSON *got, const cJSON *want, const char *what)
{
    if (!cJSON_Compare(got, want, 1)) {
        char *g = cJSON_PrintUnformatted(got), *w = cJSON_PrintUnformatted(want);
        fprintf(stderr, "# %s differs after the restart\n# before: %s\n# after:  %s\n", what, w, g);
        free(g);
        free(w);
    }
    assert_true(cJSON_Compare(got, want, 1));
}

/* CONNACK code of a device/module CONNECT signed with key; the client is closed. */
static int try_identity(const struct it_hub *hub, const char *d, const char *m, const char *key)
{
    char *user = it_device_username(hub->hub_name, d, m);
    char *pass = it_device_token(hub->hub_name, d, m, key, it_expiry());
    char *cid = m ? it_strdupf("%s/%s", d, m) : strdup(d);
    struct it_connect_opts o = {.client_id = cid, .username = user, .password = pass};
    int connack;
    struct it_client *c = it_client_connect(hub, &o, &connack);
    it_client_close(c);
    free(user);
    free(pass);
    free(cid);
    return connack;
}

static cJSON *fixture_desired(void)
{
    const char *fx = getenv("IT_FIXTURES_DIR");
    assert_non_null(fx);
    char *path = it_strdupf("%s/azureiotsecurity-default.json", fx);
    cJSON *doc = it_read_json(path);
    free(path);
    assert_non_null(doc);
    return doc;
}

/* ---- state dir ---- */

/* The identities whose durable state is compared across the crash. */
static const char *const tracked[][2] = {
    {IT_DEV1, NULL},       {IT_DEV1, IT_MOD1}, {IT_DEV2, NULL},
    {IT_DEV2, SEC_MODULE}, {"p-new", NULL},    {"p-new", SEC_MODULE},
    {"p-explicit", NULL},  {IT_DEV3, NULL},    {IT_DEV4, NULL},
};
#define NTRACKED (sizeof tracked / sizeof tracked[0])

static void test_persist_acknowledged_changes_survive_broker_kill_succeeds(void **state)
{
    (void)state;
    char *dir = scratch_dir();
    char *state_dir = it_strdupf("%s/state", dir);
    start_hub(&hub_a, "--state-dir", state_dir);
    struct it_client *svc = it_service_open(&hub_a, false);
    cJSON *fixture = fixture_desired();
    char *fixture_text = cJSON_PrintUnformatted(fixture);

    /* reported properties from a device and a module, each acknowledged with 204 */
    struct it_client *dev1 = twin_client(&hub_a, IT_DEV1, NULL, IT_DEV1_KEY);
    int v1 = report(dev1, "p1", "{\"temp\":21.5,\"fw\":{\"version\":\"2.0\"}}");
    int v2 = report(dev1, "p2", "{\"temp\":22.5,\"extra\":\"x\"}");
    assert_int_equal(v2, v1 + 1);
    struct it_client *mod1 = twin_client(&hub_a, IT_DEV1, IT_MOD1, IT_MOD1_KEY);
    report(mod1, "m1", "{\"moduleState\":\"running\"}");

    /* desired properties and tags, in two writes */
    cJSON *r =
        it_control_ok(svc, "{\"command\":\"updateTwin\",\"deviceId\":\"" IT_DEV2 "\","
                           "\"patch\":{\"tags\":{\"site\":\"lab\",\"floor\":3},"
                           "\"properties\":{\"desired\":{\"target\":22,\"nested\":{\"a\":1}}}}}");
    cJSON_Delete(r);
    r = it_control_ok(svc, "{\"command\":\"updateTwin\",\"deviceId\":\"" IT_DEV2 "\","
                           "\"patch\":{\"properties\":{\"desired\":{\"nested\":{\"b\":2}}}}}");
    int desired_version = (int)it_json_num(r, "properties.desired.$version", -1);
    cJSON_Delete(r);

    /* identities: generated keys, explicit keys, a status change, rotated keys */
    r = it_control_ok(svc, "{\"command\":\"createDevice\",\"deviceId\":\"p-new\"}");
    char *pnew_key = strdup(it_json_str(r, "authentication.symmetricKey.primaryKey"));
    cJSON_Delete(r);
    r = it_control_ok(svc, "{\"command\":\"createDevice\",\"deviceId\":\"p-explicit\","
                           "\"authentication\":{\"symmetricKey\":{\"primaryKey\":\"" KEY_A "\","
                           "\"secondaryKey\":\"" KEY_B "\"}}}");
    cJSON_Delete(r);
    r = it_control_ok(svc, "{\"command\":\"updateDevice\",\"deviceId\":\"p-explicit\","
                           "\"status\":\"disabled\",\"statusReason\":\"parked\"}");
    cJSON_Delete(r);
    r = it_control_ok(svc, "{\"command\":\"updateDevice\",\"deviceId\":\"" IT_DEV4 "\","
                           "\"authentication\":{\"symmetricKey\":{\"primaryKey\":\"" KEY_ROT_1 "\","
                           "\"secondaryKey\":\"" KEY_ROT_2 "\"}}}");
    cJSON_Delete(r);

    /* the security module on two devices */
    r = it_control_ok(svc,
                      "{\"command\":\"ensureModule\",\"moduleId\":\"" SEC_MODULE "\","
                      "\"desired\":%s,\"deviceIds\":[\"p-new\",\"" IT_DEV2 "\"]}",
                      fixture_text);
    assert_int_equal((int)it_json_num(r, "created", -1), 2);
    cJSON_Delete(r);
    r = it_control_ok(svc, "{\"command\":\"getDevice\",\"deviceId\":\"p-new\","
                           "\"moduleId\":\"" SEC_MODULE "\"}");
    char *sec_key = strdup(it_json_str(r, "authentication.symmetricKey.primaryKey"));
    cJSON_Delete(r);

    /* C2D for a device that is offline: queued */
    r = it_control_ok(svc, "{\"command\":\"sendC2D\",\"deviceId\":\"" IT_DEV3 "\","
                           "\"body\":\"persist-me\",\"messageId\":\"m-persist-1\","
                           "\"properties\":{\"k\":\"v\"}}");
    assert_false(cJSON_IsTrue(it_json_get(r, "delivered")));
    assert_int_equal((int)it_json_num(r, "queued", -1), 1);
    cJSON_Delete(r);
    r = it_control_ok(svc, "{\"command\":\"sendC2D\",\"deviceId\":\"" IT_DEV3 "\","
                           "\"body\":\"persist-2\",\"messageId\":\"m-persist-2\"}");
    assert_int_equal((int)it_json_num(r, "queued", -1), 2);
    cJSON_Delete(r);

    /* a device created and deleted again (with a module) */
    r = it_control_ok(svc, "{\"command\":\"createDevice\",\"deviceId\":\"p-gone\"}");
    cJSON_Delete(r);
    r = it_control_ok(svc,
                      "{\"command\":\"createModule\",\"deviceId\":\"p-gone\",\"moduleId\":\"m\"}");
    cJSON_Delete(r);
    r = it_control_ok(svc, "{\"command\":\"deleteDevice\",\"deviceId\":\"p-gone\"}");
    cJSON_Delete(r);

    /* what must survive, as the first hub reports it */
    cJSON *before[NTRACKED];
    for (size_t i = 0; i < NTRACKED; i++)
        before[i] = durable_state(svc, tracked[i][0], tracked[i][1]);
    cJSON *stats_before = it_control_ok(svc, "{\"command\":\"getStatistics\"}");

    crash_hub(&hub_a);
    it_client_close(dev1);
    it_client_close(mod1);
    it_client_close(svc);

    start_hub(&hub_b, "--state-dir", state_dir);
    svc = it_service_open(&hub_b, false);
    for (size_t i = 0; i < NTRACKED; i++) {
        cJSON *after = durable_state(svc, tracked[i][0], tracked[i][1]);
        char what[300];
        snprintf(what, sizeof what, "%s%s%s", tracked[i][0], tracked[i][1] ? "/" : "",
                 tracked[i][1] ? tracked[i][1] : "");
        assert_json_equal(after, before[i], what);
        cJSON_Delete(after);
        cJSON_Delete(before[i]);
    }
    cJSON *stats_after = it_control_ok(svc, "{\"command\":\"getStatistics\"}");
    assert_int_equal((int)it_json_num(stats_after, "totalDeviceCount", -1),
                     (int)it_json_num(stats_before, "totalDeviceCount", -2));
    assert_int_equal((int)it_json_num(stats_after, "totalModuleCount", -1),
                     (int)it_json_num(stats_before, "totalModuleCount", -2));
    assert_int_equal((int)it_json_num(stats_after, "disabledDeviceCount", -1),
                     (int)it_json_num(stats_before, "disabledDeviceCount", -2));
    cJSON_Delete(stats_before);
    cJSON_Delete(stats_after);

    /* values, independently of the snapshot */
    r = it_control_ok(svc, "{\"command\":\"getTwin\",\"deviceId\":\"" IT_DEV2 "\"}");
    assert_string_equal(it_json_str(r, "tags.site"), "lab");
    assert_true(it_json_num(r, "properties.desired.nested.a", 0) == 1);
    assert_true(it_json_num(r, "properties.desired.nested.b", 0) == 2);
    assert_int_equal((int)it_json_num(r, "properties.desired.$version", -1), desired_version);
    cJSON_Delete(r);

    /* the deleted device is gone, with its module */
    cJSON *e =
        it_control_err(svc, 404, 404001, "{\"command\":\"getDevice\",\"deviceId\":\"p-gone\"}");
    cJSON_Delete(e);
    assert_int_equal(try_identity(&hub_b, "p-gone", "m", KEY_A), 5);

    /* reported: values and version kept, and the next patch continues the count */
    dev1 = twin_client(&hub_b, IT_DEV1, NULL, IT_DEV1_KEY);
    int status;
    struct it_msg *m = it_twin_request(dev1, "after-get", NULL, &status);
    assert_non_null(m);
    assert_int_equal(status, 200);
    cJSON *doc = it_msg_json(m);
    it_msg_free(m);
    assert_int_equal((int)it_json_num(doc, "reported.$version", -1), v2);
    assert_true(it_json_num(doc, "reported.temp", 0) == 22.5);
    assert_string_equal(it_json_str(doc, "reported.fw.version"), "2.0");
    assert_string_equal(it_json_str(doc, "reported.extra"), "x");
    cJSON_Delete(doc);
    assert_int_equal(report(dev1, "after-patch", "{\"temp\":23}"), v2 + 1);
    it_client_close(dev1);

    /* keys: generated ones still open the device and its module; rotated ones replaced the old */
    assert_int_equal(try_identity(&hub_b, "p-new", NULL, pnew_key), 0);
    struct it_client *sec = twin_client(&hub_b, "p-new", SEC_MODULE, sec_key);
    m = it_twin_request(sec, "sec-get", NULL, &status);
    assert_non_null(m);
    assert_int_equal(status, 200);
    doc = it_msg_json(m);
    it_msg_free(m);
    cJSON *desired = cJSON_Duplicate(it_json_get(doc, "desired"), 1);
    cJSON_DeleteItemFromObjectCaseSensitive(desired, "$version");
    assert_json_equal(desired, fixture, "p-new/" SEC_MODULE " desired");
    cJSON_Delete(desired);
    cJSON_Delete(doc);
    it_client_close(sec);
    assert_int_equal(try_identity(&hub_b, IT_DEV4, NULL, IT_DEV4_KEY), 5);
    assert_int_equal(try_identity(&hub_b, IT_DEV4, NULL, KEY_ROT_1), 0);
    assert_int_equal(try_identity(&hub_b, "p-explicit", NULL, KEY_A), 5); /* still disabled */

    /* the queued C2D messages arrive once the device subscribes, in order */
    struct it_client *dev3 = it_device_open(&hub_b, IT_DEV3, NULL, IT_DEV3_KEY);
    assert_int_equal(
        it_client_subscribe(dev3, "devices/" IT_DEV3 "/messages/devicebound/#", 1, IT_WAIT_MS), 1);
    const char *prefix = "devices/" IT_DEV3 "/messages/devicebound/";
    static const struct {
        const char *mid, *body;
    } want[] = {{"m-persist-1", "persist-me"}, {"m-persist-2", "persist-2"}};
    for (size_t i = 0; i < 2; i++) {
        m = it_client_wait_prefix(dev3, prefix, IT_WAIT_MS);
        if (!m)
            fprintf(stderr, "# queued C2D message %s was not delivered after the restart\n",
                    want[i].mid);
        assert_non_null(m);
        assert_int_equal(m->len, (int)strlen(want[i].body));
        assert_memory_equal(m->payload, want[i].body, strlen(want[i].body));
        char *mid = it_bag_get(m->topic + strlen(prefix), "$.mid");
        assert_non_null(mid);
        assert_string_equal(mid, want[i].mid);
        free(mid);
        if (i == 0) {
            char *k = it_bag_get(m->topic + strlen(prefix), "k");
            assert_non_null(k);
            assert_string_equal(k, "v");
            free(k);
        }
        it_msg_free(m);
    }
    it_client_close(dev3);
    r = it_control_ok(svc, "{\"command\":\"getDevice\",\"deviceId\":\"" IT_DEV3 "\"}");
    assert_int_equal((int)it_json_num(r, "cloudToDeviceMessageCount", -1), 0);
    cJSON_Delete(r);

    it_client_close(svc);
    assert_int_equal(it_hub_stop(&hub_b), 0);
    cJSON_Delete(fixture);
    free(fixture_text);
    free(pnew_key);
    free(sec_key);
    free(state_dir);
}

/*
 * A deletion is an acknowledged change too, also for identities that came from
 * the --registry file the restarted serve is given again.
 * (A restarted hub once re-imported the --registry file "adding what is
 * missing", so such a deletion came back; a used state dir is now
 * authoritative, docs/registry.md.)
 */
static void test_persist_deleted_registry_identities_stay_deleted_succeeds(void **state)
{
    (void)state;
    char *dir = scratch_dir();
    char *state_dir = it_strdupf("%s/state", dir);
    start_hub(&hub_a, "--state-dir", state_dir);
    struct it_client *svc = it_service_open(&hub_a, false);
    cJSON *r = it_control_ok(svc, "{\"command\":\"deleteDevice\",\"deviceId\":\"" IT_DEV4 "\"}");
    cJSON_Delete(r);
    r = it_control_ok(svc, "{\"command\":\"deleteModule\",\"deviceId\":\"" IT_DEV1 "\","
                           "\"moduleId\":\"" IT_MOD1 "\"}");
    cJSON_Delete(r);
    crash_hub(&hub_a);
    it_client_close(svc);

    start_hub(&hub_b, "--state-dir", state_dir);
    svc = it_service_open(&hub_b, false);
    cJSON *e =
        it_control(svc, IT_WAIT_MS, "{\"command\":\"getDevice\",\"deviceId\":\"" IT_DEV4 "\"}");
    assert_non_null(e);
    bool dev_back = cJSON_GetObjectItemCaseSensitive(e, "data") != NULL;
    cJSON_Delete(e);
    e = it_control(svc, IT_WAIT_MS,
                   "{\"command\":\"getDevice\",\"deviceId\":\"" IT_DEV1 "\",\"moduleId\":\"" IT_MOD1
                   "\"}");
    assert_non_null(e);
    bool mod_back = cJSON_GetObjectItemCaseSensitive(e, "data") != NULL;
    cJSON_Delete(e);
    if (dev_back)
        fprintf(stderr,
                "# device %s, deleted before the crash, is registered again after the "
                "restart (the --registry file re-added it)\n",
                IT_DEV4);
    if (mod_back)
        fprintf(stderr,
                "# module %s/%s, deleted before the crash, is registered again after the "
                "restart\n",
                IT_DEV1, IT_MOD1);
    it_client_close(svc);
    int stop = it_hub_stop(&hub_b);
    free(state_dir);
    assert_false(dev_back);
    assert_false(mod_back);
    assert_int_equal(stop, 0);
}

/*
 * IoT Edge identities from a --registry file and from the control API keep
 * their capability, scopes, authentication type and managedBy across a
 * crash and restart with --state-dir.
 */
static void test_persist_edge_identities_survive_restart_succeeds(void **state)
{
    (void)state;
    char *dir = scratch_dir();
    char *state_dir = it_strdupf("%s/state", dir);
    char *reg_path = it_strdupf("%s/edge-registry.json", dir);
    /* the leaf names its parent by id: the ticks in a registry file are not kept */
    FILE *f = fopen(reg_path, "w");
    assert_non_null(f);
    fputs(
        "{\"devices\":["
        "{\"deviceId\":\"p-leaf\",\"deviceScope\":\"ms-azure-iot-edge://p-gw-1\"},"
        "{\"deviceId\":\"p-gw\",\"capabilities\":{\"iotEdge\":true},\"modules\":["
        "{\"moduleId\":\"p-mod\",\"managedBy\":\"IotEdge\",\"authentication\":{\"type\":\"none\"}}"
        "]}]}",
        f);
    assert_int_equal(fclose(f), 0);
    const char *extra[] = {"--state-dir", state_dir, NULL};
    assert_int_equal(it_hub_start_with(&hub_a, reg_path, extra), 0);
    struct it_client *svc = it_service_open(&hub_a, false);
    cJSON *gw = it_control_ok(svc, "{\"command\":\"getDevice\",\"deviceId\":\"p-gw\"}");
    char *scope = strdup(it_json_str(gw, "deviceScope"));
    char *want = it_strdupf("ms-azure-iot-edge://p-gw-%s", it_json_str(gw, "generationId"));
    assert_string_equal(scope, want);
    cJSON_Delete(gw);
    cJSON *leaf = it_control_ok(svc, "{\"command\":\"getDevice\",\"deviceId\":\"p-leaf\"}");
    assert_string_equal(it_json_str(leaf, "deviceScope"), scope);
    cJSON_Delete(leaf);
    /* more from the control API: an edge child and a second keyless module */
    cJSON *r = it_control_ok(svc,
                             "{\"command\":\"createDevice\",\"deviceId\":\"p-child\","
                             "\"capabilities\":{\"iotEdge\":true},\"parentScopes\":[\"%s\"]}",
                             scope);
    cJSON_Delete(r);
    r = it_control_ok(svc, "{\"command\":\"createModule\",\"deviceId\":\"p-child\","
                           "\"moduleId\":\"p-mod2\",\"managedBy\":\"IotEdge\","
                           "\"authentication\":{\"type\":\"none\"}}");
    cJSON_Delete(r);

    static const char *const ids[][2] = {{"p-gw", NULL},
                                         {"p-leaf", NULL},
                                         {"p-child", NULL},
                                         {"p-gw", "p-mod"},
                                         {"p-child", "p-mod2"}};
    static const char *const fields[] = {
        "generationId", "etag",      "capabilities",   "deviceScope",
        "parentScopes", "managedBy", "authentication", NULL};
    cJSON *before[5];
    for (int i = 0; i < 5; i++) {
        cJSON *id = it_control_ok(svc,
                                  ids[i][1] ? "{\"command\":\"getDevice\",\"deviceId\":\"%s\","
                                              "\"moduleId\":\"%s\"}"
                                            : "{\"command\":\"getDevice\",\"deviceId\":\"%s\"}",
                                  ids[i][0], ids[i][1]);
        before[i] = pick(id, fields);
        cJSON_Delete(id);
    }
    crash_hub(&hub_a);
    it_client_close(svc);

    assert_int_equal(it_hub_start_with(&hub_b, reg_path, extra), 0);
    svc = it_service_open(&hub_b, false);
    for (int i = 0; i < 5; i++) {
        cJSON *id = it_control_ok(svc,
                                  ids[i][1] ? "{\"command\":\"getDevice\",\"deviceId\":\"%s\","
                                              "\"moduleId\":\"%s\"}"
                                            : "{\"command\":\"getDevice\",\"deviceId\":\"%s\"}",
                                  ids[i][0], ids[i][1]);
        cJSON *after = pick(id, fields);
        if (!cJSON_Compare(after, before[i], true)) {
            char *a = cJSON_PrintUnformatted(after), *b = cJSON_PrintUnformatted(before[i]);
            fail_msg("%s%s%s after the restart: %s, before: %s", ids[i][0], ids[i][1] ? "/" : "",
                     ids[i][1] ? ids[i][1] : "", a, b);
        }
        cJSON_Delete(after);
        cJSON_Delete(before[i]);
        cJSON_Delete(id);
    }
    /* the restored scopes still count as parents, and the query still finds the edge devices */
    r = it_control_ok(
        svc, "{\"command\":\"createDevice\",\"deviceId\":\"p-leaf2\",\"deviceScope\":\"%s\"}",
        scope);
    cJSON_Delete(r);
    cJSON *q = it_control_ok(svc, "{\"command\":\"query\",\"query\":\"SELECT deviceId FROM devices "
                                  "WHERE capabilities.iotEdge = true\"}");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(q, "items")), 2);
    cJSON_Delete(q);
    /* the keyless module still cannot connect */
    char *user = it_device_username(hub_b.hub_name, "p-gw", "p-mod");
    char *pass = it_device_token(hub_b.hub_name, "p-gw", "p-mod", KEY_A, it_expiry());
    struct it_connect_opts o = {.client_id = "p-gw/p-mod", .username = user, .password = pass};
    int connack;
    struct it_client *c = it_client_connect(&hub_b, &o, &connack);
    assert_int_equal(connack, 5);
    it_client_close(c);
    free(user);
    free(pass);
    it_client_close(svc);
    assert_int_equal(it_hub_stop(&hub_b), 0);
    free(want);
    free(scope);
    free(reg_path);
    free(state_dir);
}

/* ---- recording ---- */

/* The lines of a recording; each must be a JSON object. *n gets the count. */
static cJSON **read_records(const char *path, size_t *n, size_t *bytes)
{
    char *text = it_read_file(path);
    assert_non_null(text);
    size_t len = strlen(text);
    *bytes = len;
    /* a record is only whole with its newline */
    assert_true(len == 0 || text[len - 1] == '\n');
    size_t cap = 64, count = 0;
    cJSON **recs = malloc(cap * sizeof *recs);
    assert_non_null(recs);
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        cJSON *rec = cJSON_Parse(line);
        if (!rec || !cJSON_IsObject(rec))
            fprintf(stderr, "# recording line %zu is not a JSON object: %.200s\n", count + 1, line);
        assert_true(cJSON_IsObject(rec));
        if (count == cap) {
            cap *= 2;
            recs = realloc(recs, cap * sizeof *recs);
            assert_non_null(recs);
        }
        recs[count++] = rec;
    }
    free(text);
    *n = count;
    return recs;
}

static void free_records(cJSON **recs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        cJSON_Delete(recs[i]);
    free(recs);
}

/* seq of recs[from..n) is 1, 2, 3, ...; every record has time, kind and data. */
static void assert_sequence(cJSON **recs, size_t from, size_t n)
{
    for (size_t i = from; i < n; i++) {
        double seq = it_json_num(recs[i], "seq", -1);
        if (seq != (double)(i - from + 1))
            fprintf(stderr, "# record %zu has seq %g, expected %zu\n", i + 1, seq, i - from + 1);
        assert_true(seq == (double)(i - from + 1));
        assert_non_null(it_json_str(recs[i], "time"));
        assert_non_null(it_json_str(recs[i], "kind"));
        assert_true(cJSON_IsObject(it_json_get(recs[i], "data")));
    }
}

/* Records of kind with deviceId device (module NULL: device level) for which field equals value. */
static int count_records(cJSON **recs, size_t n, const char *kind, const char *device,
                         const char *module, const char *field, const char *value)
{
    int c = 0;
    for (size_t i = 0; i < n; i++) {
        const char *k = it_json_str(recs[i], "kind"), *d = it_json_str(recs[i], "deviceId");
        const char *m = it_json_str(recs[i], "moduleId");
        const char *v = it_json_str(recs[i], field);
        if (k && d && v && !strcmp(k, kind) && !strcmp(d, device) &&
            (module ? m && !strcmp(m, module) : !m) && !strcmp(v, value))
            c++;
    }
    return c;
}

#define NTELEMETRY 25
#define NREPORTED 6

static void test_persist_recording_holds_every_acknowledged_event_succeeds(void **state)
{
    (void)state;
    char *dir = scratch_dir();
    char *rec = it_strdupf("%s/hub.jsonl", dir);
    start_hub(&hub_a, "--record", rec);

    struct it_client *dev = twin_client(&hub_a, IT_DEV1, NULL, IT_DEV1_KEY);
    struct it_client *mod = it_device_open(&hub_a, IT_DEV1, IT_MOD1, IT_MOD1_KEY);
    int versions[NREPORTED];
    char patches[NREPORTED][64];
    /* interleave telemetry from a device and a module with reported patches */
    for (int i = 0; i < NTELEMETRY; i++) {
        char topic[160], body[64];
        snprintf(topic, sizeof topic, "devices/" IT_DEV1 "/messages/events/%%24.mid=tm-%d&n=%d", i,
                 i);
        snprintf(body, sizeof body, "{\"n\":%d}", i);
        assert_true(it_client_publish_acked(dev, topic, body, IT_WAIT_MS));
        if (i % 5 == 0) {
            snprintf(topic, sizeof topic,
                     "devices/" IT_DEV1 "/modules/" IT_MOD1 "/messages/events/%%24.mid=mm-%d", i);
            assert_true(it_client_publish_acked(mod, topic, body, IT_WAIT_MS));
        }
        if (i % 4 == 0 && i / 4 < NREPORTED) {
            int k = i / 4;
            char rid[16];
            snprintf(rid, sizeof rid, "rp-%d", k);
            snprintf(patches[k], sizeof patches[k], "{\"step\":%d,\"s\":\"v%d\"}", k, k);
            versions[k] = report(dev, rid, patches[k]);
        }
    }
    /* killed right after the last acknowledgement */
    crash_hub(&hub_a);
    it_client_close(dev);
    it_client_close(mod);

    size_t n, bytes;
    cJSON **recs = read_records(rec, &n, &bytes);
    assert_true(n > 0);
    assert_sequence(recs, 0, n);
    for (int i = 0; i < NTELEMETRY; i++) {
        char mid[32];
        snprintf(mid, sizeof mid, "tm-%d", i);
        int c = count_records(recs, n, "telemetry", IT_DEV1, NULL,
                              "data.systemProperties.messageId", mid);
        if (c != 1)
            fprintf(stderr, "# acknowledged telemetry %s: %d records\n", mid, c);
        assert_int_equal(c, 1);
        if (i % 5 == 0) {
            snprintf(mid, sizeof mid, "mm-%d", i);
            assert_int_equal(count_records(recs, n, "telemetry", IT_DEV1, IT_MOD1,
                                           "data.systemProperties.messageId", mid),
                             1);
        }
    }
    for (int k = 0; k < NREPORTED; k++) {
        cJSON *want = cJSON_Parse(patches[k]);
        int found = 0;
        for (size_t i = 0; i < n; i++) {
            const char *kind = it_json_str(recs[i], "kind");
            const char *d = it_json_str(recs[i], "deviceId");
            if (!kind || strcmp(kind, "reported") || !d || strcmp(d, IT_DEV1))
                continue;
            if (cJSON_Compare(it_json_get(recs[i], "data.patch"), want, 1) &&
                it_json_num(recs[i], "data.version", -1) == versions[k])
                found++;
        }
        if (found != 1)
            fprintf(stderr, "# acknowledged reported patch %s (version %d): %d records\n",
                    patches[k], versions[k], found);
        assert_int_equal(found, 1);
        cJSON_Delete(want);
    }
    char *old = it_read_file(rec);
    assert_non_null(old);

    /* a new run appends: the old lines stay byte for byte, the new ones count from 1 again */
    start_hub(&hub_b, "--record", rec);
    dev = it_device_open(&hub_b, IT_DEV1, NULL, IT_DEV1_KEY);
    assert_true(it_client_publish_acked(dev, "devices/" IT_DEV1 "/messages/events/%24.mid=tm-run2",
                                        "{}", IT_WAIT_MS));
    it_client_close(dev);
    assert_int_equal(it_hub_stop(&hub_b), 0);
    char *all = it_read_file(rec);
    assert_non_null(all);
    assert_true(strlen(all) > bytes);
    assert_memory_equal(all, old, bytes);
    free(all);
    free(old);
    size_t n2, bytes2;
    cJSON **recs2 = read_records(rec, &n2, &bytes2);
    assert_true(n2 > n);
    assert_sequence(recs2, n, n2);
    assert_int_equal(count_records(recs2, n2, "telemetry", IT_DEV1, NULL,
                                   "data.systemProperties.messageId", "tm-run2"),
                     1);
    free_records(recs2, n2);
    free_records(recs, n);
    free(rec);
}

/* ---- state files that cannot be loaded ---- */

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
}

/* The test fails unless `text` (what the hub printed) holds `part`. */
static void assert_has(const char *text, const char *part, const char *where)
{
    if (!text || !strstr(text, part))
        fprintf(stderr, "# %s lacks \"%s\":\n%s\n", where, part, text ? text : "(nothing)");
    assert_non_null(text);
    assert_non_null(strstr(text, part));
}

/* serve's stdout (the banner) or stderr so far, malloc'd. */
static char *hub_output(const struct it_hub *hub, const char *which)
{
    char *path = it_strdupf("%s/%s.log", hub->dir, which);
    char *text = it_read_file(path);
    free(path);
    return text;
}

/* The stateSetAside entry of the info file whose identity is `identity`, or NULL. */
static const cJSON *aside_entry(const cJSON *info, const char *identity)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(info, "stateSetAside"))
    {
        const char *id = it_json_str(e, "identity");
        if (id && !strcmp(id, identity))
            return e;
    }
    return NULL;
}

static void test_persist_unloadable_state_files_set_aside_succeeds(void **state)
{
    (void)state;
    char *dir = scratch_dir();
    char *state_dir = it_strdupf("%s/state", dir);
    start_hub(&hub_a, "--state-dir", state_dir);
    struct it_client *dev1 = twin_client(&hub_a, IT_DEV1, NULL, IT_DEV1_KEY);
    int v1 = report(dev1, "q1", "{\"kept\":\"yes\"}");
    struct it_client *dev3 = twin_client(&hub_a, IT_DEV3, NULL, IT_DEV3_KEY);
    report(dev3, "q3", "{\"x\":1}");
    it_client_close(dev1);
    it_client_close(dev3);
    assert_int_equal(it_hub_stop(&hub_a), 0);

    /* it-dev2 cut short (a full disk); it-dev3's twin holding a null in an array, which an
     * earlier twinhub accepted and stored; policies.json not JSON at all. */
    char *f2 = it_strdupf("%s/devices/%s.json", state_dir, IT_DEV2);
    char *f3 = it_strdupf("%s/devices/%s.json", state_dir, IT_DEV3);
    char *fp = it_strdupf("%s/policies.json", state_dir);
    write_text(f2, "{\"deviceId\":\"it-dev2\",\"sta");
    cJSON *d3 = it_read_json(f3);
    assert_non_null(d3);
    cJSON *reported = (cJSON *)it_json_get(d3, "twin.reported");
    assert_non_null(reported);
    cJSON *bad = cJSON_Parse("[{\"b\":null}]");
    assert_true(cJSON_ReplaceItemInObjectCaseSensitive(reported, "x", bad));
    char *t3 = cJSON_PrintUnformatted(d3);
    write_text(f3, t3);
    free(t3);
    cJSON_Delete(d3);
    write_text(fp, "policies? no");

    /* The hub starts (it_hub_start_with waits for "twinhub: ready"), its HTTPS gateway too:
     * it signs in with the default policies that replace the unloadable policies.json. */
    char https_port[16];
    snprintf(https_port, sizeof https_port, "%d", it_free_port());
    const char *extra[] = {"--state-dir", state_dir, "--https-port", https_port, NULL};
    assert_int_equal(it_hub_start_with(&hub_b, NULL, extra), 0);
    char *out = hub_output(&hub_b, "stdout"), *err = hub_output(&hub_b, "stderr");
    assert_has(out, "NOT LOADED: 3 state files set aside", "the banner");
    assert_has(out, "device 'it-dev2': not a state file", "the banner");
    assert_has(out, "device 'it-dev3': ", "the banner");
    assert_has(out, "the shared access policies: not a state file", "the banner");
    /* it-dev1, it-dev4, it-disabled and the development device */
    assert_has(out, "(4 devices restored)", "the banner");
    assert_has(err, "device 'it-dev2' not loaded: not a state file", "stderr");
    assert_has(err, "device 'it-dev3' not loaded", "stderr");
    assert_has(err, "cannot be null", "stderr");
    assert_has(err, "the shared access policies not loaded", "stderr");
    free(out);
    free(err);

    /* Moved aside where the info file says, with the reason beside each. */
    char *info_path = it_strdupf("%s/info.json", hub_b.dir);
    cJSON *info = it_read_json(info_path);
    free(info_path);
    assert_non_null(info);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(info, "stateSetAside")),
                     3);
    const char *const ids[] = {"device 'it-dev2'", "device 'it-dev3'",
                               "the shared access policies"};
    const char *const files[] = {f2, f3, fp};
    char *qdir = it_strdupf("%s/quarantine/", state_dir);
    for (size_t i = 0; i < 3; i++) {
        const cJSON *e = aside_entry(info, ids[i]);
        assert_non_null(e);
        assert_string_equal(it_json_str(e, "file"), files[i]);
        const char *to = it_json_str(e, "movedTo");
        assert_non_null(to);
        assert_int_equal(strncmp(to, qdir, strlen(qdir)), 0);
        if (i < 2) {
            assert_int_equal(access(files[i], F_OK), -1);
        } else { /* written again, with the default policies the hub runs with now */
            cJSON *policies = it_read_json(files[i]);
            assert_true(cJSON_IsArray(policies));
            cJSON_Delete(policies);
        }
        assert_int_equal(access(to, F_OK), 0);
        char *why_path = it_strdupf("%s.reason", to);
        char *why = it_read_file(why_path);
        assert_has(why, ids[i], why_path);
        free(why);
        free(why_path);
    }
    cJSON_Delete(info);

    /* Every other identity is there, with its twin; the policies are the defaults. */
    struct it_client *svc = it_service_open(&hub_b, false);
    cJSON *r = it_control_ok(svc, "{\"command\":\"getTwin\",\"deviceId\":\"" IT_DEV1 "\"}");
    assert_string_equal(it_json_str(r, "properties.reported.kept"), "yes");
    assert_int_equal((int)it_json_num(r, "properties.reported.$version", -1), v1);
    cJSON_Delete(r);
    r = it_control_ok(svc, "{\"command\":\"getDevice\",\"deviceId\":\"" IT_DEV1 "\","
                           "\"moduleId\":\"" IT_MOD1 "\"}");
    cJSON_Delete(r);
    r = it_control_ok(svc, "{\"command\":\"getDevice\",\"deviceId\":\"" IT_DEV4 "\"}");
    cJSON_Delete(r);
    cJSON *e = it_control_err(svc, 404, 404001,
                              "{\"command\":\"getDevice\",\"deviceId\":\"" IT_DEV2 "\"}");
    cJSON_Delete(e);
    e = it_control_err(svc, 404, 404001,
                       "{\"command\":\"getDevice\",\"deviceId\":\"" IT_DEV3 "\"}");
    cJSON_Delete(e);
    dev1 = twin_client(&hub_b, IT_DEV1, NULL, IT_DEV1_KEY);
    assert_int_equal(report(dev1, "q4", "{\"after\":1}"), v1 + 1);
    it_client_close(dev1);
    it_client_close(svc);
    assert_int_equal(it_hub_stop(&hub_b), 0);

    /* The next start finds nothing to set aside; the quarantine stays as it was. */
    start_hub(&hub_a, "--state-dir", state_dir);
    out = hub_output(&hub_a, "stdout");
    assert_has(out, "  State     ", "the banner");
    assert_null(strstr(out, "NOT LOADED"));
    free(out);
    assert_int_equal(it_hub_stop(&hub_a), 0);
    free(qdir);
    free(f2);
    free(f3);
    free(fp);
    free(state_dir);
}

/*
 * A state dir of many devices loads on several threads (persist.c): every
 * device comes back with its own twin and identity, none lost, none mixed
 * up with another, the damaged files set aside by name, and generation ids
 * issued after the restart differ from every restored one.
 */
#define MANY 300
static void test_persist_many_devices_restart_keeps_every_twin_succeeds(void **state)
{
    (void)state;
    char *dir = scratch_dir();
    char *state_dir = it_strdupf("%s/state", dir);
    char *registry = it_strdupf("%s/registry.json", dir);
    FILE *f = fopen(registry, "w");
    assert_non_null(f);
    fputs("{\"devices\":[", f);
    for (int i = 0; i < MANY; i++)
        fprintf(f,
                "%s{\"deviceId\":\"m-%03d\",\"authentication\":{\"type\":\"sas\","
                "\"symmetricKey\":{\"primaryKey\":\"%s\",\"secondaryKey\":\"%s\"}},"
                "\"tags\":{\"n\":%d},\"properties\":{\"desired\":{\"i\":%d,\"name\":\"dev-%d\","
                "\"cfg\":{\"a\":%d,\"b\":[%d,\"x\"]}}}}",
                i ? "," : "", i, i % 2 ? KEY_A : KEY_B, i % 2 ? KEY_B : KEY_A, i, i, i, i * 3, i);
    fputs("]}", f);
    assert_int_equal(fclose(f), 0);
    const char *extra[] = {"--state-dir", state_dir, NULL};
    assert_int_equal(it_hub_start_with(&hub_a, registry, extra), 0);

    /* Later writes to some of them: versions and metadata times differ from device to device. */
    struct it_client *svc = it_service_open(&hub_a, false);
    for (int i = 0; i < MANY; i += 7) {
        cJSON *r =
            it_control_ok(svc,
                          "{\"command\":\"updateTwin\",\"deviceId\":\"m-%03d\",\"patch\":"
                          "{\"properties\":{\"desired\":{\"later\":%d,\"cfg\":{\"a\":null}}}}}",
                          i, i);
        cJSON_Delete(r);
    }
    cJSON *before[MANY];
    char id[16];
    for (int i = 0; i < MANY; i++) {
        snprintf(id, sizeof id, "m-%03d", i);
        before[i] = durable_state(svc, id, NULL);
    }
    it_client_close(svc);
    crash_hub(&hub_a);

    /* Three files damaged from outside, anywhere in the directory's order. */
    static const int damaged[] = {5, 150, 298};
    char *f5 = it_strdupf("%s/devices/m-005.json", state_dir);
    char *f150 = it_strdupf("%s/devices/m-150.json", state_dir);
    char *f298 = it_strdupf("%s/devices/m-298.json", state_dir);
    write_text(f5, "{\"deviceId\":\"m-005\",\"twin\":{\"desi");
    write_text(f150, "[]");
    cJSON *d298 = it_read_json(f298);
    assert_non_null(d298);
    cJSON_ReplaceItemInObjectCaseSensitive(d298, "generationId", cJSON_CreateString("x1"));
    char *t298 = cJSON_PrintUnformatted(d298);
    write_text(f298, t298);
    free(t298);
    cJSON_Delete(d298);

    start_hub(&hub_b, "--state-dir", state_dir);
    char *out = hub_output(&hub_b, "stdout");
    assert_has(out, "NOT LOADED: 3 state files set aside", "the banner");
    assert_has(out, "device 'm-005': not a state file", "the banner");
    assert_has(out, "device 'm-150': device: the state must be an object", "the banner");
    assert_has(out, "device 'm-298': device.generationId: 'x1'", "the banner");
    free(out);
    svc = it_service_open(&hub_b, false);
    for (int i = 0, d = 0; i < MANY; i++) {
        snprintf(id, sizeof id, "m-%03d", i);
        if (d < 3 && i == damaged[d]) {
            cJSON *e = it_control_err(svc, 404, 404001,
                                      "{\"command\":\"getDevice\",\"deviceId\":\"%s\"}", id);
            cJSON_Delete(e);
            d++;
        } else {
            cJSON *after = durable_state(svc, id, NULL);
            assert_json_equal(after, before[i], id);
            cJSON_Delete(after);
        }
        cJSON_Delete(before[i]);
    }
    /* A device created now gets a generation id no restored device has. */
    cJSON *created = it_control_ok(svc, "{\"command\":\"createDevice\",\"deviceId\":\"m-new\"}");
    const char *gen = it_json_str(created, "generationId");
    assert_non_null(gen);
    for (int i = 0; i < MANY; i += 1) {
        if (i == 5 || i == 150 || i == 298)
            continue;
        snprintf(id, sizeof id, "m-%03d", i);
        cJSON *ident = it_control_ok(svc, "{\"command\":\"getDevice\",\"deviceId\":\"%s\"}", id);
        assert_string_not_equal(it_json_str(ident, "generationId"), gen);
        cJSON_Delete(ident);
    }
    cJSON_Delete(created);
    it_client_close(svc);
    assert_int_equal(it_hub_stop(&hub_b), 0);
    free(f5);
    free(f150);
    free(f298);
    free(registry);
    free(state_dir);
}

/*
 * More device files than the loader reads ahead (persist.c: LOAD_WINDOW files, taken in
 * chunks of LOAD_CHUNK by its workers): every device comes back, the two damaged files are set
 * aside and nothing else; a file larger than the first read buffer (a queued 60 KB C2D
 * message) loads whole; twin numbers that the state files hold as 16-digit integers or with
 * an exponent (cJSON prints 1796617375310120 as 1.79661737531012e+15) come back the same.
 */
#define WIDE 1300
static void test_persist_more_files_than_the_load_window_restart_succeeds(void **state)
{
    (void)state;
    char *dir = scratch_dir();
    char *state_dir = it_strdupf("%s/state", dir);
    char *registry = it_strdupf("%s/registry.json", dir);
    FILE *f = fopen(registry, "w");
    assert_non_null(f);
    fputs("{\"devices\":[{\"deviceId\":\"w-big\"}", f);
    for (int i = 0; i < WIDE; i++)
        fprintf(f,
                ",{\"deviceId\":\"w-%04d\",\"properties\":{\"desired\":{\"i\":%d,"
                "\"t\":%lld,\"x\":%d.25}}}",
                i, i, 1796617375310120LL + i, i);
    fputs("]}", f);
    assert_int_equal(fclose(f), 0);
    const char *extra[] = {"--state-dir", state_dir, NULL};
    assert_int_equal(it_hub_start_with(&hub_a, registry, extra), 0);

    struct it_client *svc = it_service_open(&hub_a, false);
    static char body[60 * 1024];
    memset(body, 'b', sizeof body - 1);
    body[sizeof body - 1] = '\0';
    cJSON *r = it_control_ok(svc, "{\"command\":\"sendC2D\",\"deviceId\":\"w-big\",\"body\":\"%s\"}",
                             body);
    assert_int_equal((int)it_json_num(r, "queued", -1), 1);
    cJSON_Delete(r);
    enum { SAMPLED = WIDE / 97 + 1 };
    cJSON *before[SAMPLED];
    char id[16];
    for (int i = 0, k = 0; i < WIDE; i += 97, k++) {
        snprintf(id, sizeof id, "w-%04d", i);
        before[k] = durable_state(svc, id, NULL);
    }
    cJSON *big_before = durable_state(svc, "w-big", NULL);
    it_client_close(svc);
    crash_hub(&hub_a);
    char *big_file = it_strdupf("%s/devices/w-big.json", state_dir);
    char *big_text = it_read_file(big_file);
    assert_non_null(big_text);
    assert_true(strlen(big_text) > 64 * 1024); /* more than the loader's first buffer */
    free(big_text);
    char *f10 = it_strdupf("%s/devices/w-0010.json", state_dir);
    char *t10 = it_read_file(f10);
    assert_non_null(t10);
    if (!strstr(t10, "\"t\":1.79661737531013e+15"))
        fprintf(stderr, "# %s: %.400s\n", f10, t10);
    assert_non_null(strstr(t10, "\"t\":1.79661737531013e+15")); /* held with an exponent */
    free(t10);
    free(f10);

    char *f0 = it_strdupf("%s/devices/w-0000.json", state_dir);
    char *flast = it_strdupf("%s/devices/w-%04d.json", state_dir, WIDE - 1);
    write_text(f0, "{\"deviceId\":\"w-0000\",\"twin\":");
    write_text(flast, "{}");

    start_hub(&hub_b, "--state-dir", state_dir);
    char *out = hub_output(&hub_b, "stdout");
    assert_has(out, "NOT LOADED: 2 state files set aside", "the banner");
    assert_has(out, "device 'w-0000': not a state file", "the banner");
    char *last_line = it_strdupf("device 'w-%04d': ", WIDE - 1);
    assert_has(out, last_line, "the banner");
    free(last_line);
    /* WIDE + w-big + the development device, less the two set aside */
    char *restored = it_strdupf("(%d devices restored)", WIDE);
    assert_has(out, restored, "the banner");
    free(restored);
    free(out);
    svc = it_service_open(&hub_b, false);
    for (int i = 0, k = 0; i < WIDE; i += 97, k++) {
        snprintf(id, sizeof id, "w-%04d", i);
        if (i == 0) {
            cJSON *e = it_control_err(svc, 404, 404001,
                                      "{\"command\":\"getDevice\",\"deviceId\":\"%s\"}", id);
            cJSON_Delete(e);
        } else {
            cJSON *after = durable_state(svc, id, NULL);
            assert_json_equal(after, before[k], id);
            cJSON_Delete(after);
        }
        cJSON_Delete(before[k]);
    }
    cJSON *big_after = durable_state(svc, "w-big", NULL);
    assert_json_equal(big_after, big_before, "w-big");
    assert_int_equal((int)it_json_num(big_after, "identity.cloudToDeviceMessageCount", -1), 1);
    cJSON_Delete(big_after);
    cJSON_Delete(big_before);
    r = it_control_ok(svc, "{\"command\":\"getTwin\",\"deviceId\":\"w-0010\"}");
    assert_true(it_json_num(r, "properties.desired.t", 0) == 1796617375310130.0);
    assert_true(it_json_num(r, "properties.desired.x", 0) == 10.25);
    cJSON_Delete(r);
    it_client_close(svc);
    assert_int_equal(it_hub_stop(&hub_b), 0);
    free(f0);
    free(flast);
    free(big_file);
    free(registry);
    free(state_dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_persist_acknowledged_changes_survive_broker_kill_succeeds,
                                  persist_teardown),
        cmocka_unit_test_teardown(test_persist_deleted_registry_identities_stay_deleted_succeeds,
                                  persist_teardown),
        cmocka_unit_test_teardown(test_persist_edge_identities_survive_restart_succeeds,
                                  persist_teardown),
        cmocka_unit_test_teardown(test_persist_recording_holds_every_acknowledged_event_succeeds,
                                  persist_teardown),
        cmocka_unit_test_teardown(test_persist_unloadable_state_files_set_aside_succeeds,
                                  persist_teardown),
        cmocka_unit_test_teardown(test_persist_many_devices_restart_keeps_every_twin_succeeds,
                                  persist_teardown),
        cmocka_unit_test_teardown(test_persist_more_files_than_the_load_window_restart_succeeds,
                                  persist_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
