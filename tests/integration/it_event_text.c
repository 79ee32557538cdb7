/*
 * it_event_text.c - the telemetry event record the broker writes straight as
 * text (core/journal_text.c) is, byte for byte, the record the cJSON tree
 * path (th_journal_data_telemetry + th_journal_record_text) builds for the
 * same message: on the event stream and in the recording, for property bags
 * with every kind of escape, binary, empty, text and large bodies, QoS 0 and
 * 1, RETAIN, devices and modules (docs/performance.md, "The event stream
 * with a subscriber").
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <mosquitto.h>

#include "harness.h"
#include "journal.h"
#include "json.h"
#include "topic.h"
#include "util.h"

static struct it_hub hub;
static char dir[] = "/tmp/it-event-text-XXXXXX";
static char *rec_path;

static int group_setup(void **state)
{
    (void)state;
    if (!mkdtemp(dir))
        return -1;
    rec_path = it_strdupf("%s/events.jsonl", dir);
    const char *extra[] = {"--record", rec_path, NULL};
    return it_hub_start_with(&hub, NULL, extra);
}

static int group_teardown(void **state)
{
    (void)state;
    int rc = it_hub_stop(&hub);
    unlink(rec_path);
    rmdir(dir);
    free(rec_path);
    return rc;
}

/* The record the tree path builds for the message `text` describes (as test_journal.c). */
static char *tree_record(const char *text, size_t len)
{
    cJSON *json = NULL;
    struct th_journal_record r;
    struct th_error err = {0};
    assert_int_equal(th_journal_parse_text(text, len, 16u << 20, 64, &json, &r, &err), TH_OK);
    assert_int_equal(r.kind, TH_JOURNAL_TELEMETRY);
    const cJSON *data = r.data, *sys = r.as.telemetry.system_properties;
    const char *topic = r.as.telemetry.topic;
    struct th_topic t;
    struct th_props props = {0};
    assert_int_equal(th_topic_parse(topic, strlen(topic), &t), TH_OK);
    if (t.props.len)
        assert_int_equal(th_props_parse(t.props.ptr, t.props.len, &props), TH_OK);
    const char *b64 = th_json_string(data, "bodyBase64", "");
    size_t cap = strlen(b64) + 1, blen = 0;
    uint8_t *body = malloc(cap);
    assert_non_null(body);
    assert_int_equal(th_b64_decode(b64, strlen(b64), body, cap, &blen), TH_OK);
    const char *method = th_json_string(sys, "iothub-connection-auth-method", "");
    int64_t enq = 0;
    assert_int_equal(th_journal_time_parse(th_json_string(sys, "iothub-enqueuedtime", ""), &enq),
                     TH_OK);
    struct th_journal_telemetry tm = {
        .topic = topic,
        .qos = (int)th_json_number(data, "qos", -1),
        .retain = th_json_bool(data, "retain", false),
        .props = &props,
        .device_id = r.device_id,
        .module_id = r.module_id,
        .generation_id = th_json_string(sys, "iothub-connection-auth-generation-id", NULL),
        .model_id = th_json_string(sys, "dt-dataschema", NULL),
        .x509 = strstr(method, "x509Certificate") != NULL,
        .enqueued_us = enq,
        .body = body,
        .len = blen,
    };
    char *out = th_journal_record_text((uint64_t)r.seq, r.time_us, TH_JOURNAL_TELEMETRY,
                                       r.device_id, r.module_id, th_journal_data_telemetry(&tm));
    assert_non_null(out);
    th_props_free(&props);
    free(body);
    cJSON_Delete(json);
    return out;
}

struct case_msg {
    const char *bag; /* after .../messages/events/ */
    const char *body;
    int len; /* -1: strlen(body) */
    int qos;
    bool retain;
};

static void test_event_text_telemetry_same_as_tree_succeeds(void **state)
{
    (void)state;
    static const char binary[] = {'\0', '\xff', '"', '\\', '\n', 'A', '\x01', '\x80'};
    char *large = malloc(100001);
    assert_non_null(large);
    for (int i = 0; i < 100000; i++)
        large[i] = "ab\"\\\n\t{}\xc3\xa9"[i % 11];
    large[100000] = '\0';
    const struct case_msg cases[] = {
        {"%24.mid=a%22b%5Cc&%24.ct=application%2Fjson&%24.ce=utf-8&alert=high", "{\"t\":21.5}", -1,
         1, false},
        {"k%0Aey=v%01al%09ue&%24.x=y&flag&empty=&%24.sub=th%C3%A9rmo&bad=%FF%FE", "plain text", -1,
         0, false},
        {"%24.mid=bin&%24.cid=c1&%24.uid=u&%24.ctime=2026&%24.exp=x&%24.on=o&%24.schema=s", binary,
         (int)sizeof binary, 1, true},
        {"%24.mid=empty", "", 0, 0, false},
        {"", "{\"quote\":\"\\\"\",\"ctl\":\"\\u0001\"}", -1, 1, false},
        {"%24.mid=large", large, 100000, 1, false},
    };
    struct it_client *svc = it_service_open(&hub, true);
    struct it_client *dev = it_device_open(&hub, IT_DEV1, NULL, IT_DEV1_KEY);
    struct it_client *mod = it_device_open(&hub, IT_DEV1, IT_MOD1, IT_MOD1_KEY);
    size_t n = sizeof cases / sizeof cases[0];
    for (size_t i = 0; i < 2 * n; i++) {
        const struct case_msg *c = &cases[i % n];
        bool module = i >= n;
        char *topic =
            module
                ? it_strdupf("devices/" IT_DEV1 "/modules/" IT_MOD1 "/messages/events/%s", c->bag)
                : it_strdupf("devices/" IT_DEV1 "/messages/events/%s", c->bag);
        int len = c->len < 0 ? (int)strlen(c->body) : c->len;
        assert_int_equal(
            it_client_publish(module ? mod : dev, topic, c->body, len, c->qos, c->retain),
            MOSQ_ERR_SUCCESS);
        struct it_msg *m = it_client_wait_prefix(svc, "$twinhub/events/telemetry/", IT_WAIT_MS);
        if (m == NULL)
            fail_msg("message %zu (%s): no event", i, topic);
        char *want = tree_record(m->payload, (size_t)m->len);
        if ((size_t)m->len != strlen(want) || memcmp(m->payload, want, (size_t)m->len) != 0)
            fail_msg("message %zu: the event differs from the tree path's record:\n got  %.300s\n "
                     "want %.300s",
                     i, m->payload, want);
        free(want);
        it_msg_free(m);
        free(topic);
    }
    it_client_close(mod);
    it_client_close(dev);
    it_client_close(svc);
    free(large);

    /* The recording holds the very same lines (written before each event is published). */
    char *text = it_read_file(rec_path);
    assert_non_null(text);
    size_t telemetry = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (!strstr(line, "\"kind\":\"telemetry\""))
            continue;
        char *want = tree_record(line, strlen(line));
        assert_string_equal(line, want);
        free(want);
        telemetry++;
    }
    assert_int_equal(telemetry, 2 * n);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_event_text_telemetry_same_as_tree_succeeds),
    };
    return cmocka_run_group_tests_name("it_event_text", tests, group_setup, group_teardown);
}
