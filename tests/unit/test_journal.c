/*
 * test_journal.c - unit tests for emulator/core/journal.c: the kinds, the
 * records the broker writes (every record of the committed recordings in
 * fixtures/recordings rebuilt byte for byte from its typed parts), the
 * event-stream topic, reading records back (errors, lenient fields, typed
 * data), record times, and allocation failures in the builders.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "journal.h"
#include "json.h"
#include "topic.h"
#include "util.h"

#define MAX_BYTES (16u * 1024 * 1024)
#define MAX_DEPTH 64

static int64_t time_of(const char *text)
{
    int64_t us = 0;
    assert_int_equal(th_journal_time_parse(text, &us), TH_OK);
    return us;
}

/* Print a record and compare it with `want` (takes ownership of data). */
static void check_record(uint64_t seq, const char *time, enum th_journal_kind kind, const char *d,
                         const char *m, cJSON *data, const char *want)
{
    char *text = th_journal_record_text(seq, time_of(time), kind, d, m, data);
    assert_non_null(text);
    assert_string_equal(text, want);
    free(text);
}

/* ---- kinds ---- */

static void test_th_journal_kind_of_every_name_succeeds(void **state)
{
    (void)state;
    /* The names of docs/recording.md, in its order. */
    static const char *const names[] = {
        "connected",     "disconnected",    "refused",       "telemetry",
        "reported",      "desired",         "twinGet",       "method",
        "c2d",           "protocolError",   "mark",          "deviceCreated",
        "moduleCreated", "identityUpdated", "deviceDeleted", "moduleDeleted",
        "registration",
    };
    assert_int_equal(sizeof names / sizeof names[0], TH_JOURNAL_KIND_COUNT - 1);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        enum th_journal_kind k = th_journal_kind_of(names[i]);
        assert_int_equal(k, (int)i + 1);
        assert_string_equal(th_journal_kind_name(k), names[i]);
    }
    assert_int_equal(th_journal_kind_of("Connected"), TH_JOURNAL_OTHER);
    assert_int_equal(th_journal_kind_of("future"), TH_JOURNAL_OTHER);
    assert_int_equal(th_journal_kind_of(NULL), TH_JOURNAL_OTHER);
    assert_null(th_journal_kind_name(TH_JOURNAL_OTHER));
    assert_null(th_journal_kind_name(TH_JOURNAL_KIND_COUNT));
}

/* ---- the committed recordings, rebuilt ---- */

static cJSON *dup_member(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return v ? cJSON_Duplicate(v, 1) : NULL;
}

/* The telemetry data the broker builds for the message this record describes. */
static cJSON *rebuild_telemetry(const struct th_journal_record *r)
{
    const cJSON *data = r->data;
    const cJSON *sys = r->as.telemetry.system_properties;
    const char *topic = r->as.telemetry.topic;
    struct th_topic t;
    struct th_props props = {0};
    assert_int_equal(th_topic_parse(topic, strlen(topic), &t), TH_OK);
    assert_int_equal(t.kind, TH_TOPIC_TELEMETRY);
    if (t.props.len)
        assert_int_equal(th_props_parse(t.props.ptr, t.props.len, &props), TH_OK);
    const char *b64 = th_json_string(data, "bodyBase64", "");
    size_t cap = strlen(b64) + 1, len = 0;
    uint8_t *body = malloc(cap);
    assert_non_null(body);
    assert_int_equal(th_b64_decode(b64, strlen(b64), body, cap, &len), TH_OK);
    struct th_journal_telemetry tm = {
        .topic = topic,
        .qos = (int)th_json_number(data, "qos", -1),
        .retain = th_json_bool(data, "retain", false),
        .props = &props,
        .device_id = r->device_id,
        .module_id = r->module_id,
        .generation_id = th_json_string(sys, "iothub-connection-auth-generation-id", NULL),
        .model_id = th_json_string(sys, "dt-dataschema", NULL),
        .enqueued_us = time_of(th_json_string(sys, "iothub-enqueuedtime", "")),
        .body = body,
        .len = len,
    };
    cJSON *out = th_journal_data_telemetry(&tm);
    /* The broker's per-message path writes the same record without the tree. */
    size_t direct_len = 0;
    char *direct = th_journal_telemetry_record_text((uint64_t)r->seq, r->time_us, &tm, &direct_len);
    assert_non_null(direct);
    char *printed = th_journal_record_text((uint64_t)r->seq, r->time_us, TH_JOURNAL_TELEMETRY,
                                           r->device_id, r->module_id, cJSON_Duplicate(out, 1));
    assert_non_null(printed);
    assert_string_equal(direct, printed);
    assert_int_equal(direct_len, strlen(printed));
    free(direct);
    free(printed);
    th_props_free(&props);
    free(body);
    return out;
}

static cJSON *rebuild_method(const struct th_journal_record *r)
{
    const cJSON *data = r->data;
    const char *rid = th_json_string(data, "requestId", "");
    uint64_t id = strtoull(rid, NULL, 10);
    if (cJSON_GetObjectItemCaseSensitive(data, "error")) {
        struct th_error err = {0};
        err.code = (int)th_json_number(data, "errorCode", 0);
        snprintf(err.message, sizeof err.message, "%s", th_json_string(data, "error", ""));
        return th_journal_data_method(r->as.method.method_name, id, NULL, &err);
    }
    cJSON *result = cJSON_Duplicate(data, 1);
    cJSON_DeleteItemFromObjectCaseSensitive(result, "methodName");
    cJSON_DeleteItemFromObjectCaseSensitive(result, "requestId");
    cJSON *out = th_journal_data_method(r->as.method.method_name, id, result, NULL);
    cJSON_Delete(result);
    return out;
}

/* The data the broker builds for an event with these typed parts. */
static cJSON *rebuild_data(const struct th_journal_record *r)
{
    const cJSON *data = r->data;
    switch (r->kind) {
    case TH_JOURNAL_CONNECTED: {
        const char *auth = th_json_string(data, "auth", "");
        struct th_journal_connected c = {
            .client_id = th_json_string(data, "clientId", NULL),
            .api_version = th_json_string(data, "apiVersion", NULL),
            .client_type = th_json_string(data, "clientType", NULL),
            .model_id = th_json_string(data, "modelId", NULL),
            .auth = !strcmp(auth, "sas-policy") ? TH_JOURNAL_AUTH_SAS_POLICY : TH_JOURNAL_AUTH_SAS,
            .clean_session = th_json_bool(data, "cleanSession", false),
        };
        return th_journal_data_connected(&c);
    }
    case TH_JOURNAL_TWIN_GET:
        return th_journal_data_twin_get((int)th_json_number(data, "status", 0));
    case TH_JOURNAL_REPORTED:
        assert_true(r->as.reported.accepted);
        return th_journal_data_reported(dup_member(data, "patch"), r->as.reported.version);
    case TH_JOURNAL_DESIRED:
        return th_journal_data_desired(dup_member(data, "patch"),
                                       (int64_t)th_json_number(data, "version", 0),
                                       th_json_bool(data, "delivered", false));
    case TH_JOURNAL_TELEMETRY:
        return rebuild_telemetry(r);
    case TH_JOURNAL_METHOD:
        return rebuild_method(r);
    case TH_JOURNAL_C2D:
        return th_journal_data_c2d(r->as.c2d.message_id, r->as.c2d.delivered,
                                   (size_t)th_json_number(data, "queued", 0));
    case TH_JOURNAL_MARK:
        return th_journal_data_mark(data);
    case TH_JOURNAL_DISCONNECTED:
        return NULL;
    default:
        fail_msg("a kind this test does not rebuild: %s", r->kind_name);
        return NULL;
    }
}

static void rebuild_file(const char *name, size_t *records)
{
    const char *dir = getenv("TH_FIXTURES_DIR");
    char path[1024];
    assert_non_null(dir);
    snprintf(path, sizeof path, "%s/recordings/%s", dir, name);
    FILE *f = fopen(path, "re");
    assert_non_null(f);
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    while ((got = getline(&line, &cap, f)) > 0) {
        size_t len = (size_t)got;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        cJSON *json = NULL;
        struct th_journal_record r;
        struct th_error err = {0};
        assert_int_equal(th_journal_parse_text(line, len, MAX_BYTES, MAX_DEPTH, &json, &r, &err),
                         TH_OK);
        assert_int_not_equal(r.kind, TH_JOURNAL_OTHER);
        char *text = th_journal_record_text((uint64_t)r.seq, r.time_us, r.kind, r.device_id,
                                            r.module_id, rebuild_data(&r));
        assert_non_null(text);
        if (strcmp(text, line) != 0)
            fail_msg("%s: record %lld differs:\n want %s\n  got %s", name, (long long)r.seq, line,
                     text);
        free(text);
        cJSON_Delete(json);
        (*records)++;
    }
    free(line);
    fclose(f);
}

static void test_th_journal_record_text_fixture_recordings_byte_for_byte_succeeds(void **state)
{
    (void)state;
    size_t records = 0;
    rebuild_file("pass.jsonl", &records);
    rebuild_file("wrong.jsonl", &records);
    rebuild_file("faults.jsonl", &records);
    rebuild_file("restart.jsonl", &records);
    assert_true(records > 100);
}

/* ---- kinds the recordings do not hold ---- */

static void test_th_journal_record_text_other_kinds_succeeds(void **state)
{
    (void)state;
    static const char T[] = "2026-11-23T14:00:00.1234560Z";
    check_record(1, T, TH_JOURNAL_REFUSED, NULL, NULL,
                 th_journal_data_refused("c1", "no password", NULL),
                 "{\"seq\":1,\"time\":\"2026-11-23T14:00:00.1234560Z\",\"kind\":\"refused\","
                 "\"deviceId\":null,\"moduleId\":null,\"data\":{\"clientId\":\"c1\",\"reason\":"
                 "\"no password\",\"username\":null}}");
    check_record(2, T, TH_JOURNAL_PROTOCOL_ERROR, "d", "m",
                 th_journal_data_protocol_error("a/b", "subscription refused"),
                 "{\"seq\":2,\"time\":\"2026-11-23T14:00:00.1234560Z\",\"kind\":\"protocolError\","
                 "\"deviceId\":\"d\",\"moduleId\":\"m\",\"data\":{\"topic\":\"a/b\",\"reason\":"
                 "\"subscription refused\"}}");
    struct th_error err = {0};
    th_error_set(&err, TH_ERR_TOO_DEEP, 400004, "too deep");
    check_record(3, T, TH_JOURNAL_REPORTED, "d", NULL,
                 th_journal_data_reported_refused(cJSON_Parse("{\"a\":1}"), &err),
                 "{\"seq\":3,\"time\":\"2026-11-23T14:00:00.1234560Z\",\"kind\":\"reported\","
                 "\"deviceId\":\"d\",\"moduleId\":null,\"data\":{\"patch\":{\"a\":1},\"error\":"
                 "\"too deep\",\"status\":400,\"errorCode\":400004}}");
    check_record(4, T, TH_JOURNAL_REPORTED, "d", NULL, th_journal_data_reported_refused(NULL, &err),
                 "{\"seq\":4,\"time\":\"2026-11-23T14:00:00.1234560Z\",\"kind\":\"reported\","
                 "\"deviceId\":\"d\",\"moduleId\":null,\"data\":{\"error\":\"too deep\","
                 "\"status\":400,\"errorCode\":400004}}");
    th_error_set(&err, TH_ERR_TIMEOUT, 504101, "timed out");
    check_record(5, T, TH_JOURNAL_METHOD, "d", NULL,
                 th_journal_data_method("reboot", 7, NULL, &err),
                 "{\"seq\":5,\"time\":\"2026-11-23T14:00:00.1234560Z\",\"kind\":\"method\","
                 "\"deviceId\":\"d\",\"moduleId\":null,\"data\":{\"methodName\":\"reboot\","
                 "\"requestId\":\"7\",\"error\":\"timed out\",\"errorCode\":504101}}");
    static const enum th_journal_kind empty[] = {
        TH_JOURNAL_DEVICE_CREATED, TH_JOURNAL_MODULE_CREATED, TH_JOURNAL_IDENTITY_UPDATED,
        TH_JOURNAL_DEVICE_DELETED, TH_JOURNAL_MODULE_DELETED};
    for (size_t i = 0; i < sizeof empty / sizeof empty[0]; i++) {
        char want[300];
        snprintf(want, sizeof want,
                 "{\"seq\":18446744073709551615,\"time\":\"2026-11-23T14:00:00.1234560Z\","
                 "\"kind\":\"%s\",\"deviceId\":\"d\",\"moduleId\":null,\"data\":{}}",
                 th_journal_kind_name(empty[i]));
        check_record(UINT64_MAX, T, empty[i], "d", NULL, NULL, want);
    }
    /* A mark's data is any JSON, copied. */
    cJSON *given = cJSON_Parse("[1,\"x\"]");
    check_record(6, T, TH_JOURNAL_MARK, NULL, NULL, th_journal_data_mark(given),
                 "{\"seq\":6,\"time\":\"2026-11-23T14:00:00.1234560Z\",\"kind\":\"mark\","
                 "\"deviceId\":null,\"moduleId\":null,\"data\":[1,\"x\"]}");
    cJSON_Delete(given);
    /* No name, no record (and the data is freed: valgrind). */
    assert_null(th_journal_record_text(1, 0, TH_JOURNAL_OTHER, NULL, NULL, cJSON_CreateObject()));
}

static void test_th_journal_data_telemetry_properties_succeeds(void **state)
{
    (void)state;
    static const char bag[] = "%24.mid=m1&%24.sub=thermostat1&%24.x=y&app=1&flag&%24.ct=a%2Fb";
    struct th_props props = {0};
    assert_int_equal(th_props_parse(bag, strlen(bag), &props), TH_OK);
    static const uint8_t body[] = {0xff, 0x00, 0x41};
    struct th_journal_telemetry tm = {
        .topic = "devices/d/modules/m/messages/events/x",
        .qos = 0,
        .retain = true,
        .props = &props,
        .device_id = "d",
        .module_id = "m",
        .generation_id = "g1",
        .model_id = "dtmi:x;1",
        .enqueued_us = time_of("2026-11-23T14:00:00Z"),
        .body = body,
        .len = sizeof body,
    };
    cJSON *data = th_journal_data_telemetry(&tm);
    th_props_free(&props);
    assert_non_null(data);
    char *text = th_json_print(data);
    /* Not text: no "body"; system names mapped, other $.x kept; the hub's stamps last. */
    assert_string_equal(
        text, "{\"topic\":\"devices/d/modules/m/messages/events/x\",\"qos\":0,\"retain\":true,"
              "\"systemProperties\":{\"messageId\":\"m1\",\"dt-subject\":\"thermostat1\","
              "\"$.x\":\"y\",\"contentType\":\"a/b\",\"iothub-connection-device-id\":\"d\","
              "\"iothub-connection-module-id\":\"m\",\"iothub-connection-auth-generation-id\":"
              "\"g1\",\"iothub-connection-auth-method\":\"{\\\"scope\\\":\\\"module\\\","
              "\\\"type\\\":\\\"sas\\\",\\\"issuer\\\":\\\"iothub\\\","
              "\\\"acceptingIpFilterRule\\\":null}\",\"iothub-enqueuedtime\":"
              "\"2026-11-23T14:00:00.0000000Z\",\"dt-dataschema\":\"dtmi:x;1\"},\"properties\":"
              "{\"app\":\"1\",\"flag\":null,\"mqtt-retain\":\"true\"},\"bodyBase64\":\"/wBB\","
              "\"size\":3}");
    free(text);
    cJSON_Delete(data);

    /* An empty body (NULL) and no properties. */
    struct th_journal_telemetry empty = {
        .topic = "devices/d/messages/events/", .device_id = "d", .generation_id = "g"};
    data = th_journal_data_telemetry(&empty);
    assert_non_null(data);
    text = th_json_print(data);
    assert_string_equal(text, "{\"topic\":\"devices/d/messages/events/\",\"qos\":0,\"retain\":"
                              "false,\"systemProperties\":{\"iothub-connection-device-id\":\"d\","
                              "\"iothub-connection-auth-generation-id\":\"g\","
                              "\"iothub-connection-auth-method\":\"{\\\"scope\\\":\\\"device\\\","
                              "\\\"type\\\":\\\"sas\\\",\\\"issuer\\\":\\\"iothub\\\","
                              "\\\"acceptingIpFilterRule\\\":null}\","
                              "\"iothub-enqueuedtime\":\"1970-01-01T00:00:00.0000000Z\"},"
                              "\"properties\":{},\"bodyBase64\":\"\",\"size\":0}");
    free(text);
    cJSON_Delete(data);
}

/* ---- the telemetry record written directly, against the tree ---- */

static unsigned lcg_next(unsigned *seed)
{
    *seed = *seed * 1103515245u + 12345u;
    return (*seed >> 1) & 0x7fffffffu;
}

/* A random string of up to `max` bytes from 1..255: every escape, quotes, UTF-8 and not. */
static char *random_text(unsigned *seed, size_t max)
{
    size_t n = lcg_next(seed) % (max + 1);
    char *s = malloc(n + 1);
    assert_non_null(s);
    for (size_t i = 0; i < n; i++) {
        unsigned r = lcg_next(seed) % 8;
        s[i] = r == 0   ? (char)(1 + lcg_next(seed) % 31)       /* control bytes */
               : r == 1 ? "\"\\/\b\f\n\r\t"[lcg_next(seed) % 8] /* the two-byte escapes */
               : r == 2 ? (char)(0x80 + lcg_next(seed) % 128)   /* high bytes */
                        : (char)(32 + lcg_next(seed) % 95);     /* printable */
    }
    s[n] = '\0';
    return s;
}

/* A body: empty (NULL or not), text, binary with NULs, ASCII but for one NUL, or large (up to
 * 256 KB). */
static uint8_t *random_body(unsigned *seed, size_t *len)
{
    unsigned kind = lcg_next(seed) % 7;
    size_t n = kind == 0 ? 0 : kind == 5 ? lcg_next(seed) % (256 * 1024 + 1) : lcg_next(seed) % 300;
    if (kind == 0 && lcg_next(seed) % 2) {
        *len = 0;
        return NULL;
    }
    uint8_t *b = malloc(n + 1);
    assert_non_null(b);
    for (size_t i = 0; i < n; i++) {
        if (kind == 1 || kind == 5)
            b[i] = (uint8_t)(32 + lcg_next(seed) % 95); /* text */
        else if (kind == 2)
            b[i] = (uint8_t)(lcg_next(seed) % 256); /* binary, NULs included */
        else if (kind == 3)
            b[i] = (uint8_t)(1 + lcg_next(seed) % 127); /* ASCII with control bytes */
        else
            b[i] = (uint8_t) "\xc3\xa9\xe2\x82\xac\"\\\n\x01"
                             "ab"[lcg_next(seed) % 11]; /* UTF-8 or cut */
    }
    if (kind == 6) { /* ASCII text but for one NUL: not text */
        for (size_t i = 0; i < n; i++)
            b[i] = (uint8_t)(32 + lcg_next(seed) % 95);
        if (n)
            b[lcg_next(seed) % n] = 0;
    }
    *len = n;
    return b;
}

static void test_th_journal_telemetry_record_text_same_bytes_as_tree_succeeds(void **state)
{
    (void)state;
    static const char *const wire_names[] = {"$.mid",   "$.cid", "$.uid",  "$.ct", "$.ce",
                                             "$.ctime", "$.sub", "$.ifid", "$.on", "$.schema",
                                             "$.exp",   "$.x",   "$.",     "$",    "app"};
    unsigned seed = 2026;
    int bodies_text = 0, bodies_binary = 0, bodies_empty = 0, bodies_large = 0;
    for (int round = 0; round < 2000; round++) {
        struct th_props props = {0};
        size_t nprops = lcg_next(&seed) % 8;
        for (size_t i = 0; i < nprops; i++) {
            char *name = lcg_next(&seed) % 2 ? strdup(wire_names[lcg_next(&seed) % 15])
                                             : random_text(&seed, 12);
            char *value = lcg_next(&seed) % 5 ? random_text(&seed, 40) : NULL;
            if (name[0] == '\0') { /* a bag never holds an empty name */
                free(name);
                name = strdup("e");
            }
            assert_int_equal(th_props_add(&props, name, value), TH_OK);
            free(name);
            free(value);
        }
        size_t len = 0;
        uint8_t *body = random_body(&seed, &len);
        char *topic = random_text(&seed, 80), *dev = random_text(&seed, 20);
        char *mod = lcg_next(&seed) % 3 ? NULL : random_text(&seed, 20);
        char *gen = lcg_next(&seed) % 4 ? random_text(&seed, 20) : NULL;
        char *model = lcg_next(&seed) % 2 ? random_text(&seed, 30) : NULL;
        struct th_journal_telemetry tm = {
            .topic = lcg_next(&seed) % 10 ? topic : NULL,
            .qos = (int)(lcg_next(&seed) % 2),
            .retain = lcg_next(&seed) % 2,
            .props = lcg_next(&seed) % 10 ? &props : NULL,
            .device_id = dev,
            .module_id = mod,
            .generation_id = gen,
            .model_id = model,
            .x509 = lcg_next(&seed) % 2,
            .enqueued_us = (int64_t)lcg_next(&seed) * 1000003 % INT64_C(253402300799000000),
            .body = body,
            .len = len,
        };
        uint64_t seq = round % 7 == 0 ? UINT64_MAX - (uint64_t)round : (uint64_t)lcg_next(&seed);
        int64_t time_us = (int64_t)lcg_next(&seed) * 4099 * 1000;
        char *tree = th_journal_record_text(seq, time_us, TH_JOURNAL_TELEMETRY, dev, mod,
                                            th_journal_data_telemetry(&tm));
        size_t direct_len = 0;
        char *direct = th_journal_telemetry_record_text(seq, time_us, &tm, &direct_len);
        assert_non_null(tree);
        assert_non_null(direct);
        size_t at = 0;
        while (tree[at] && tree[at] == direct[at])
            at++;
        if (tree[at] != direct[at])
            fail_msg("round %d, byte %zu: tree '%.60s' direct '%.60s'", round, at,
                     tree + (at > 30 ? at - 30 : 0), direct + (at > 30 ? at - 30 : 0));
        assert_int_equal(direct_len, strlen(tree));
        if (len == 0)
            bodies_empty++;
        else if (len > 64 * 1024)
            bodies_large++;
        else if (th_utf8_is_text(body, len))
            bodies_text++;
        else
            bodies_binary++;
        free(tree);
        free(direct);
        free(body);
        free(topic);
        free(dev);
        free(mod);
        free(gen);
        free(model);
        th_props_free(&props);
    }
    /* Every kind of body was compared. */
    assert_true(bodies_text > 100 && bodies_binary > 100 && bodies_empty > 100 &&
                bodies_large > 50);
}

/* No device id: no record, as the tree path gives none. */
static void test_th_journal_telemetry_record_text_no_device_fails(void **state)
{
    (void)state;
    struct th_journal_telemetry tm = {.topic = "t", .body = "x", .len = 1};
    assert_null(th_journal_data_telemetry(&tm));
    assert_null(th_journal_telemetry_record_text(1, 0, &tm, NULL));
}

/* ---- topics ---- */

static void test_th_journal_topic_encodes_ids_succeeds(void **state)
{
    (void)state;
    char buf[256];
    size_t n = th_journal_topic(TH_JOURNAL_TELEMETRY, "d", NULL, buf, sizeof buf);
    assert_string_equal(buf, "$twinhub/events/telemetry/d");
    assert_int_equal(n, strlen(buf));
    th_journal_topic(TH_JOURNAL_CONNECTED, "d", "m", buf, sizeof buf);
    assert_string_equal(buf, "$twinhub/events/connected/d/m");
    th_journal_topic(TH_JOURNAL_REFUSED, NULL, NULL, buf, sizeof buf);
    assert_string_equal(buf, "$twinhub/events/refused/-");
    th_journal_topic(TH_JOURNAL_MARK, "a+b#c/d%e\x01\xc3\xa9", "x/y", buf, sizeof buf);
    assert_string_equal(buf, "$twinhub/events/mark/a%2Bb%23c%2Fd%e%01%C3%A9/x%2Fy");
}

static void test_th_journal_topic_small_buffer_fails(void **state)
{
    (void)state;
    char buf[24];
    const char *want = "$twinhub/events/twinGet/dev%2B1/mod";
    memset(buf, 'X', sizeof buf);
    size_t n = th_journal_topic(TH_JOURNAL_TWIN_GET, "dev+1", "mod", buf, sizeof buf);
    assert_int_equal(n, strlen(want));
    assert_int_equal(strlen(buf), sizeof buf - 1);
    assert_memory_equal(buf, want, sizeof buf - 1);
    /* Size 0 writes nothing and still measures. */
    assert_int_equal(th_journal_topic(TH_JOURNAL_TWIN_GET, "dev+1", "mod", NULL, 0), strlen(want));
}

/* ---- reading ---- */

static th_result parse_text(const char *text, cJSON **json, struct th_journal_record *r,
                            struct th_error *err)
{
    return th_journal_parse_text(text, strlen(text), MAX_BYTES, MAX_DEPTH, json, r, err);
}

static void check_refused(const char *text, const char *why)
{
    cJSON *json = (cJSON *)1;
    struct th_journal_record r;
    struct th_error err = {0};
    assert_int_equal(parse_text(text, &json, &r, &err), TH_ERR_FORMAT);
    assert_null(json);
    if (strncmp(err.message, "not an event record", 19) != 0 || !strstr(err.message, why))
        fail_msg("%s: message '%s' does not say '%s'", text, err.message, why);
}

static void test_th_journal_parse_not_a_record_fails(void **state)
{
    (void)state;
    check_refused("not json", "not valid JSON");
    check_refused("{} x", "extra data");
    check_refused("[1]", "not a JSON object");
    check_refused("{\"time\":\"2026-11-23T14:00:00Z\",\"kind\":\"mark\"}", "seq is not a number");
    check_refused("{\"seq\":\"1\",\"time\":\"2026-11-23T14:00:00Z\",\"kind\":\"mark\"}",
                  "seq is not a number");
    check_refused("{\"seq\":1,\"time\":\"2026-11-23T14:00:00Z\",\"kind\":3}",
                  "kind is not a string");
    check_refused("{\"seq\":1,\"time\":\"2026-11-23 14:00:00Z\",\"kind\":\"mark\"}",
                  "time is not an ISO 8601 UTC time");
    check_refused("{\"seq\":1,\"kind\":\"mark\"}", "time is not");
    check_refused("{\"seq\":1,\"time\":\"2026-11-23T14:00:00Z\",\"kind\":\"mark\","
                  "\"deviceId\":5}",
                  "deviceId is neither a string nor null");
    check_refused("{\"seq\":1,\"time\":\"2026-11-23T14:00:00Z\",\"kind\":\"mark\","
                  "\"moduleId\":{}}",
                  "moduleId is neither a string nor null");
    struct th_journal_record r;
    struct th_error err = {0};
    assert_int_equal(th_journal_parse(NULL, &r, &err), TH_ERR_FORMAT);
}

static void test_th_journal_parse_lenient_fields_succeeds(void **state)
{
    (void)state;
    cJSON *json = NULL;
    struct th_journal_record r;
    struct th_error err = {0};
    /* No deviceId, moduleId or data; a kind this version does not know. */
    assert_int_equal(
        parse_text("{\"seq\":1e300,\"time\":\"2026-11-23T14:00:00.5Z\",\"kind\":\"future\"}", &json,
                   &r, &err),
        TH_OK);
    assert_int_equal(r.seq, INT64_C(9007199254740992));
    assert_int_equal(r.time_us, time_of("2026-11-23T14:00:00Z") + 500000);
    assert_int_equal(r.kind, TH_JOURNAL_OTHER);
    assert_string_equal(r.kind_name, "future");
    assert_null(r.device_id);
    assert_null(r.module_id);
    assert_null(r.data);
    cJSON_Delete(json);
    /* data of another type: the typed fields stay empty. */
    assert_int_equal(parse_text("{\"seq\":-1e300,\"time\":\"2026-11-23T14:00:00Z\",\"kind\":"
                                "\"mark\",\"deviceId\":null,\"moduleId\":\"m\",\"data\":[1]}",
                                &json, &r, &err),
                     TH_OK);
    assert_int_equal(r.seq, -INT64_C(9007199254740992));
    assert_int_equal(r.kind, TH_JOURNAL_MARK);
    assert_string_equal(r.module_id, "m");
    assert_true(cJSON_IsArray(r.data));
    assert_null(r.as.mark.scenario);
    assert_false(r.as.mark.has_index);
    cJSON_Delete(json);
}

static void test_th_journal_parse_typed_data_succeeds(void **state)
{
    (void)state;
    cJSON *json = NULL;
    struct th_journal_record r;
    struct th_error err = {0};
#define REC(kind, data)                                                                            \
    "{\"seq\":1,\"time\":\"2026-11-23T14:00:00Z\",\"kind\":\"" kind "\",\"deviceId\":\"d\","       \
    "\"moduleId\":null,\"data\":" data "}"
    assert_int_equal(
        parse_text(REC("reported", "{\"patch\":{\"a\":1},\"version\":1e300}"), &json, &r, &err),
        TH_OK);
    assert_true(r.as.reported.accepted);
    assert_int_equal(r.as.reported.version, INT64_C(9007199254740992));
    assert_int_equal((int)th_json_number(r.as.reported.patch, "a", 0), 1);
    cJSON_Delete(json);
    /* A refused patch has no version. */
    assert_int_equal(
        parse_text(REC("reported", "{\"patch\":{\"a\":1},\"error\":\"x\"}"), &json, &r, &err),
        TH_OK);
    assert_false(r.as.reported.accepted);
    cJSON_Delete(json);
    assert_int_equal(parse_text(REC("refused", "{\"reason\":\"bad token\"}"), &json, &r, &err),
                     TH_OK);
    assert_string_equal(r.as.refused.reason, "bad token");
    cJSON_Delete(json);
    assert_int_equal(
        parse_text(REC("c2d", "{\"messageId\":\"m\",\"delivered\":true}"), &json, &r, &err), TH_OK);
    assert_string_equal(r.as.c2d.message_id, "m");
    assert_true(r.as.c2d.delivered);
    cJSON_Delete(json);
    assert_int_equal(parse_text(REC("mark", "{\"scenario\":\"s\",\"file\":\"f\",\"step\":\"t\","
                                            "\"index\":-1e300,\"action\":\"a\"}"),
                                &json, &r, &err),
                     TH_OK);
    assert_string_equal(r.as.mark.scenario, "s");
    assert_string_equal(r.as.mark.file, "f");
    assert_string_equal(r.as.mark.step, "t");
    assert_string_equal(r.as.mark.action, "a");
    assert_true(r.as.mark.has_index);
    assert_int_equal(r.as.mark.index, -INT64_C(9007199254740992));
    cJSON_Delete(json);
    assert_int_equal(parse_text(REC("telemetry", "{\"topic\":\"t\",\"body\":\"{}\",\"properties\":"
                                                 "{},\"systemProperties\":{\"a\":\"b\"}}"),
                                &json, &r, &err),
                     TH_OK);
    assert_string_equal(r.as.telemetry.topic, "t");
    assert_string_equal(r.as.telemetry.body, "{}");
    assert_true(cJSON_IsObject(r.as.telemetry.properties));
    assert_string_equal(th_json_string(r.as.telemetry.system_properties, "a", ""), "b");
    cJSON_Delete(json);
#undef REC
}

/* ---- method answers ---- */

static char *answer_text(const char *data)
{
    char text[512];
    snprintf(text, sizeof text,
             "{\"seq\":1,\"time\":\"2026-11-23T14:00:00Z\",\"kind\":\"method\",\"deviceId\":"
             "\"d\",\"moduleId\":null,\"data\":%s}",
             data);
    cJSON *json = NULL;
    struct th_journal_record r;
    struct th_error err = {0};
    assert_int_equal(parse_text(text, &json, &r, &err), TH_OK);
    cJSON *answer = th_journal_method_answer(&r);
    assert_non_null(answer);
    char *out = th_json_print(answer);
    cJSON_Delete(answer);
    cJSON_Delete(json);
    return out;
}

static void test_th_journal_method_answer_succeeds(void **state)
{
    (void)state;
    char *a = answer_text("{\"methodName\":\"m\",\"requestId\":\"1\",\"status\":200,"
                          "\"payload\":{\"ok\":true}}");
    assert_string_equal(a, "{\"status\":200,\"payload\":{\"ok\":true}}");
    free(a);
    a = answer_text("{\"methodName\":\"m\",\"requestId\":\"1\",\"status\":200,\"rawPayload\":"
                    "\"x\",\"rawPayloadBase64\":\"eA==\",\"payloadError\":\"not JSON\"}");
    assert_string_equal(a, "{\"status\":200,\"payload\":null,\"rawPayload\":\"x\","
                           "\"rawPayloadBase64\":\"eA==\",\"payloadError\":\"not JSON\"}");
    free(a);
    a = answer_text("{\"methodName\":\"m\",\"requestId\":\"1\",\"error\":\"timed out\","
                    "\"errorCode\":504101}");
    assert_string_equal(a, "{\"error\":\"timed out\",\"errorCode\":504101}");
    free(a);
}

static void test_th_journal_method_answer_other_kind_fails(void **state)
{
    (void)state;
    struct th_journal_record r = {.kind = TH_JOURNAL_C2D};
    assert_null(th_journal_method_answer(&r));
}

/* ---- times ---- */

static void test_th_journal_time_parse_seven_digits_succeeds(void **state)
{
    (void)state;
    int64_t us;
    assert_int_equal(th_journal_time_parse("2020-07-09T13:55:50.7976985Z", &us), TH_OK);
    assert_int_equal(us, INT64_C(1594302950) * 1000000 + 797698);
    assert_int_equal(th_journal_time_parse("2020-07-09T13:55:50Z", &us), TH_OK);
    assert_int_equal(us, INT64_C(1594302950) * 1000000);
    /* What th_time_format writes reads back to the same microsecond. */
    char text[TH_TIME_BUF];
    th_time_format(INT64_C(1594302950797698), text);
    assert_int_equal(th_journal_time_parse(text, &us), TH_OK);
    assert_int_equal(us, INT64_C(1594302950797698));
}

static void test_th_journal_time_parse_other_forms_fails(void **state)
{
    (void)state;
    int64_t us;
    assert_int_equal(th_journal_time_parse("2020-07-09 13:55:50Z", &us), TH_ERR_FORMAT);
    assert_int_equal(th_journal_time_parse("2020-07-09T13:55:50.1+01:00", &us), TH_ERR_FORMAT);
    assert_int_equal(th_journal_time_parse("2020-07-09T13:55:50.Z", &us), TH_ERR_FORMAT);
    assert_int_equal(th_journal_time_parse("2020-13-09T13:55:50Z", &us), TH_ERR_FORMAT);
    assert_int_equal(th_journal_time_parse("2020-07-09T24:55:50Z", &us), TH_ERR_FORMAT);
    assert_int_equal(th_journal_time_parse("", &us), TH_ERR_FORMAT);
    assert_int_equal(th_journal_time_parse(NULL, &us), TH_ERR_FORMAT);
    /* Year 0000: th_time_format cannot write it back (fuzz_journal found the round trip broken). */
    assert_int_equal(th_journal_time_parse("0000-11-23T14:47:41.1518720Z", &us), TH_ERR_FORMAT);
    assert_int_equal(th_journal_time_parse("0001-01-01T00:00:00Z", &us), TH_OK);
}

/* ---- allocation failures ---- */

static long allocs_left = -1; /* < 0: no limit */

static void *limited_malloc(size_t n)
{
    if (allocs_left == 0)
        return NULL;
    if (allocs_left > 0)
        allocs_left--;
    return malloc(n);
}

/* Build one record of every kind, cJSON allocations limited to n; true when all were built. */
static bool build_all(long n)
{
    static const char bag[] = "%24.mid=m1&app=1";
    struct th_props props = {0};
    assert_int_equal(th_props_parse(bag, strlen(bag), &props), TH_OK);
    cJSON *patch1 = cJSON_Parse("{\"a\":{\"b\":[1,2]}}");
    cJSON *patch2 = cJSON_Parse("{\"a\":null}");
    cJSON *patch3 = cJSON_Parse("{\"c\":\"d\"}");
    cJSON *result = cJSON_Parse("{\"status\":200,\"payload\":{\"x\":1}}");
    cJSON *mark = cJSON_Parse("{\"scenario\":\"s\",\"index\":1}");
    struct th_error err = {0};
    th_error_set(&err, TH_ERR_INVAL, 400004, "bad");
    struct th_journal_connected c = {.client_id = "c", .api_version = "v"};
    struct th_journal_telemetry tm = {.topic = "t",
                                      .props = &props,
                                      .device_id = "d",
                                      .generation_id = "g",
                                      .body = "{}",
                                      .len = 2};
    cJSON_Hooks hooks = {limited_malloc, free};
    allocs_left = n;
    cJSON_InitHooks(&hooks);
    cJSON *data[] = {
        th_journal_data_connected(&c),
        th_journal_data_refused("c", "r", "u"),
        th_journal_data_telemetry(&tm),
        th_journal_data_reported(patch1, 2),
        th_journal_data_reported_refused(patch2, &err),
        th_journal_data_desired(patch3, 3, true),
        th_journal_data_twin_get(200),
        th_journal_data_method("m", 1, result, NULL),
        th_journal_data_c2d("id", false, 1),
        th_journal_data_protocol_error("t", "r"),
        th_journal_data_mark(mark),
    };
    bool all = true;
    char *texts[sizeof data / sizeof data[0]];
    for (size_t i = 0; i < sizeof data / sizeof data[0]; i++) {
        /* Hand every result (NULL too) to the record builder: it owns it on every path. */
        texts[i] = th_journal_record_text(i + 1, 0, TH_JOURNAL_MARK, "d", NULL, data[i]);
        all = all && data[i] && texts[i];
    }
    cJSON_InitHooks(NULL);
    allocs_left = -1;
    for (size_t i = 0; i < sizeof data / sizeof data[0]; i++) {
        if (texts[i]) {
            cJSON *back = cJSON_Parse(texts[i]);
            assert_non_null(back);
            cJSON_Delete(back);
        }
        free(texts[i]);
    }
    th_props_free(&props);
    cJSON_Delete(result);
    cJSON_Delete(mark);
    return all;
}

static void test_th_journal_data_out_of_memory_fails(void **state)
{
    (void)state;
    /* Every n fails some allocation until the builders need fewer than n: no leak (valgrind),
     * no crash, no broken record; the patches handed over are freed on every path. */
    long n = 0;
    while (!build_all(n) && n < 2000)
        n++;
    assert_true(n > 0);
    assert_true(n < 2000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_th_journal_kind_of_every_name_succeeds),
        cmocka_unit_test(test_th_journal_record_text_fixture_recordings_byte_for_byte_succeeds),
        cmocka_unit_test(test_th_journal_record_text_other_kinds_succeeds),
        cmocka_unit_test(test_th_journal_data_telemetry_properties_succeeds),
        cmocka_unit_test(test_th_journal_telemetry_record_text_same_bytes_as_tree_succeeds),
        cmocka_unit_test(test_th_journal_telemetry_record_text_no_device_fails),
        cmocka_unit_test(test_th_journal_topic_encodes_ids_succeeds),
        cmocka_unit_test(test_th_journal_topic_small_buffer_fails),
        cmocka_unit_test(test_th_journal_parse_not_a_record_fails),
        cmocka_unit_test(test_th_journal_parse_lenient_fields_succeeds),
        cmocka_unit_test(test_th_journal_parse_typed_data_succeeds),
        cmocka_unit_test(test_th_journal_method_answer_succeeds),
        cmocka_unit_test(test_th_journal_method_answer_other_kind_fails),
        cmocka_unit_test(test_th_journal_time_parse_seven_digits_succeeds),
        cmocka_unit_test(test_th_journal_time_parse_other_forms_fails),
        cmocka_unit_test(test_th_journal_data_out_of_memory_fails),
    };
    return cmocka_run_group_tests_name("test_journal", tests, NULL, NULL);
}
