/*
 * fuzz_journal.c - libFuzzer target for event records (docs/recording.md,
 * core/journal.h) and the plain-JSON merge patch (core/patch.h).
 *
 * Input: one line of a recording, as `twinhub verify` reads it. Contracts
 * checked for an accepted record: its kind and name agree; a known kind
 * printed again with th_journal_record_text reads back to the same seq,
 * time (to the microsecond), kind, ids and data; the event-stream topic of
 * its ids is a valid MQTT topic name with exactly the levels it should
 * have; a method record gives an answer object; a telemetry record that
 * describes a message is written the same by the broker's direct path
 * (th_journal_telemetry_record_text) as by the tree.
 *
 * An input whose JSON is an array of objects [target, patch, ...] is also
 * merged (documents without two members of one name in any object): each
 * patch into a copy of the target, twice. Contracts: the merge
 * succeeds, a second merge of the same patch changes nothing (merge patch
 * is idempotent), every non-null non-object member of the patch is in the
 * result as it is, and a member the patch sets to null is gone.
 */
#include <stdbool.h>

#include "fuzz_common.h"
#include "journal.h"
#include "json.h"
#include "patch.h"
#include "topic.h"
#include "util.h"

#define MAX_BYTES (16u * 1024 * 1024)
#define MAX_DEPTH 64

/* Same JSON, compared as printed text: cJSON_Compare looks members up by name, which tells
 * {"a":1,"a":2} from itself apart. Numbers print the same after a round trip. */
static bool same_json(const cJSON *a, const cJSON *b)
{
    char *x = cJSON_PrintUnformatted(a), *y = cJSON_PrintUnformatted(b);
    FUZZ_CHECK(x && y);
    bool same = !strcmp(x, y);
    free(x);
    free(y);
    return same;
}

/* Whether an object anywhere in the tree holds two members of one name. */
static bool has_duplicate_names(const cJSON *j)
{
    for (const cJSON *c = j->child; c; c = c->next) {
        if (cJSON_IsObject(j))
            for (const cJSON *d = c->next; d; d = d->next)
                if (!strcmp(c->string, d->string))
                    return true;
        if (has_duplicate_names(c))
            return true;
    }
    return false;
}

/* A topic name: no wildcard, no NUL or control character, UTF-8 by construction (ASCII). */
static void check_topic(const struct th_journal_record *r)
{
    size_t need = th_journal_topic(r->kind, r->device_id, r->module_id, NULL, 0);
    char *topic = malloc(need + 1);
    FUZZ_CHECK(topic != NULL);
    FUZZ_CHECK(th_journal_topic(r->kind, r->device_id, r->module_id, topic, need + 1) == need);
    FUZZ_CHECK(strlen(topic) == need);
    size_t slashes = 0;
    for (const unsigned char *p = (const unsigned char *)topic; *p; p++) {
        FUZZ_CHECK(*p >= 0x20 && *p < 0x7F && *p != '+' && *p != '#');
        slashes += *p == '/';
    }
    /* $twinhub/events/{kind}/{device}[/{module}] */
    FUZZ_CHECK(slashes == (r->module_id ? 4u : 3u));
    FUZZ_CHECK(!strncmp(topic, TH_JOURNAL_TOPIC_PREFIX, strlen(TH_JOURNAL_TOPIC_PREFIX)));
    free(topic);
}

/*
 * A telemetry record whose parts describe a message (its topic's property bag parses, the body
 * is base64): the broker's direct text (journal_text.c) is the tree path's record byte for
 * byte.
 */
static void check_telemetry_text(const struct th_journal_record *r)
{
    const cJSON *data = r->data, *sys = r->as.telemetry.system_properties;
    const char *topic = r->as.telemetry.topic;
    const char *b64 = th_json_string(data, "bodyBase64", NULL);
    struct th_topic t;
    struct th_props props = {0};
    const cJSON *qos = cJSON_GetObjectItemCaseSensitive(data, "qos");
    int64_t enq = 0;
    if (!topic || !b64 || !r->device_id || r->seq < 0 ||
        th_topic_parse(topic, strlen(topic), &t) != TH_OK || t.kind != TH_TOPIC_TELEMETRY ||
        th_journal_time_parse(th_json_string(sys, "iothub-enqueuedtime", ""), &enq) != TH_OK)
        return;
    if (t.props.len && th_props_parse(t.props.ptr, t.props.len, &props) != TH_OK)
        return;
    size_t cap = strlen(b64) + 1, len = 0;
    uint8_t *body = malloc(cap);
    FUZZ_CHECK(body != NULL);
    if (th_b64_decode(b64, strlen(b64), body, cap, &len) == TH_OK) {
        struct th_journal_telemetry tm = {
            .topic = topic,
            .qos = cJSON_IsNumber(qos) ? qos->valueint : 0, /* cJSON's valueint is clamped */
            .retain = th_json_bool(data, "retain", false),
            .props = &props,
            .device_id = r->device_id,
            .module_id = r->module_id,
            .generation_id = th_json_string(sys, "iothub-connection-auth-generation-id", NULL),
            .model_id = th_json_string(sys, "dt-dataschema", NULL),
            .x509 = strstr(th_json_string(sys, "iothub-connection-auth-method", ""),
                           "x509Certificate") != NULL,
            .enqueued_us = enq,
            .body = body,
            .len = len,
        };
        size_t direct_len = 0;
        char *tree =
            th_journal_record_text((uint64_t)r->seq, r->time_us, TH_JOURNAL_TELEMETRY, r->device_id,
                                   r->module_id, th_journal_data_telemetry(&tm));
        char *direct =
            th_journal_telemetry_record_text((uint64_t)r->seq, r->time_us, &tm, &direct_len);
        FUZZ_CHECK(tree && direct);
        FUZZ_CHECK(!strcmp(tree, direct) && direct_len == strlen(tree));
        free(tree);
        free(direct);
    }
    free(body);
    th_props_free(&props);
}

static void check_record(const struct th_journal_record *r)
{
    FUZZ_CHECK(r->kind_name != NULL);
    if (r->kind == TH_JOURNAL_OTHER) {
        FUZZ_CHECK(th_journal_kind_of(r->kind_name) == TH_JOURNAL_OTHER);
        return;
    }
    FUZZ_CHECK(!strcmp(th_journal_kind_name(r->kind), r->kind_name));
    check_topic(r);
    if (r->kind == TH_JOURNAL_METHOD) {
        cJSON *answer = th_journal_method_answer(r);
        FUZZ_CHECK(cJSON_IsObject(answer));
        cJSON_Delete(answer);
    }
    if (r->kind == TH_JOURNAL_TELEMETRY)
        check_telemetry_text(r);
    if (r->seq < 0)
        return; /* the hub writes seq as an unsigned number */
    cJSON *data = r->data ? cJSON_Duplicate(r->data, 1) : NULL;
    FUZZ_CHECK(r->data == NULL || data != NULL);
    char *text = th_journal_record_text((uint64_t)r->seq, r->time_us, r->kind, r->device_id,
                                        r->module_id, data);
    FUZZ_CHECK(text != NULL);
    cJSON *back = NULL;
    struct th_journal_record r2;
    struct th_error err = {0};
    if (th_journal_parse_text(text, strlen(text), MAX_BYTES, MAX_DEPTH + 2, &back, &r2, &err) !=
        TH_OK) {
        /* A time outside what th_time_format prints (past 9999) is the one way out; the parser
         * already refuses year 0000. */
        FUZZ_CHECK(strstr(err.message, "time is not") != NULL);
        free(text);
        return;
    }
    FUZZ_CHECK(r2.seq == r->seq && r2.time_us == r->time_us && r2.kind == r->kind);
    FUZZ_CHECK((r2.device_id == NULL) == (r->device_id == NULL));
    FUZZ_CHECK(!r2.device_id || !strcmp(r2.device_id, r->device_id));
    FUZZ_CHECK((r2.module_id == NULL) == (r->module_id == NULL));
    FUZZ_CHECK(!r2.module_id || !strcmp(r2.module_id, r->module_id));
    if (r->data)
        FUZZ_CHECK(same_json(r2.data, r->data));
    else
        FUZZ_CHECK(cJSON_IsObject(r2.data) && r2.data->child == NULL);
    cJSON_Delete(back);
    free(text);
}

static void check_merge(const cJSON *target, const cJSON *patch)
{
    cJSON *once = cJSON_Duplicate(target, 1);
    FUZZ_CHECK(once != NULL);
    FUZZ_CHECK(th_json_merge_patch(once, patch) == TH_OK);
    cJSON *twice = cJSON_Duplicate(once, 1);
    FUZZ_CHECK(twice != NULL);
    FUZZ_CHECK(th_json_merge_patch(twice, patch) == TH_OK);
    FUZZ_CHECK(same_json(once, twice));
    for (const cJSON *m = patch->child; m; m = m->next) {
        const cJSON *got = cJSON_GetObjectItemCaseSensitive(once, m->string);
        if (cJSON_IsNull(m))
            FUZZ_CHECK(got == NULL);
        else if (cJSON_IsObject(m))
            FUZZ_CHECK(cJSON_IsObject(got));
        else
            FUZZ_CHECK(got && same_json(got, m));
    }
    cJSON_Delete(once);
    cJSON_Delete(twice);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = fuzz_bytes(data, size);
    cJSON *json = NULL;
    struct th_journal_record r;
    struct th_error err = {0};
    if (th_journal_parse_text(buf, size, MAX_BYTES, MAX_DEPTH, &json, &r, &err) == TH_OK) {
        check_record(&r);
        cJSON_Delete(json);
    } else {
        FUZZ_CHECK(json == NULL && !strncmp(err.message, "not an event record", 19));
        if (th_json_parse(buf, size, MAX_BYTES, MAX_DEPTH, &json, &err) == TH_OK &&
            cJSON_IsArray(json) && cJSON_IsObject(json->child) &&
            !has_duplicate_names(json->child)) {
            /* Two members of one name make the result depend on more than the JSON: a target's
             * second one survives a null, and a patch's null-then-value moves the member to the
             * end on a second merge. Such documents are left out. */
            for (const cJSON *p = json->child->next; p; p = p->next)
                if (cJSON_IsObject(p) && !has_duplicate_names(p))
                    check_merge(json->child, p);
        }
        cJSON_Delete(json);
    }
    free(buf);
    return 0;
}
