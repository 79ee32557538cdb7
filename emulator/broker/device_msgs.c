/*
 * device_msgs.c - what a device publishes (MOSQ_EVT_MESSAGE): telemetry,
 * twin GET, reported-property PATCH and direct-method responses, and the
 * hub's answers to the twin requests (iothub-protocol.md sections 4, 6, 8,
 * 9.1). What the hub sends a device on its own is deliver.c.
 *
 * Every device publish is consumed here: the handler returns
 * MOSQ_ERR_ACL_DENIED, which acknowledges QoS 1 with a plain PUBACK (MQTT
 * 3.1.1 has no reason code) and keeps the broker from routing or retaining
 * the message. A publish the hub would not accept (QoS 2, an unknown topic,
 * another identity's topic, oversized telemetry) closes the connection, as
 * IoT Hub does.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fault.h"
#include "json.h"
#include "th_limits.h"
#include "plugin.h"
#include "topic.h"
#include "twin.h"
#include "util.h"

/* Close the publisher's connection for a protocol violation. */
static int protocol_error(struct brk_plugin *p, struct brk_conn *c, const char *topic,
                          const char *reason)
{
    struct th_identity *id = c->identity;
    brk_log(p, MOSQ_LOG_WARNING, "%s | connection closed | %s (topic '%s')", c->client_id, reason,
            topic);
    brk_event_emit(p, TH_JOURNAL_PROTOCOL_ERROR, id ? id->device_id : NULL,
                   id ? id->module_id : NULL, th_journal_data_protocol_error(topic, reason));
    return MOSQ_ERR_PROTOCOL; /* any error but ACL_DENIED makes the broker drop the client */
}

static void twin_reply(struct brk_plugin *p, struct brk_conn *c, int status, struct th_slice rid,
                       long long version, const char *body)
{
    /* The topic echoes the $rid, which may be long: size the buffer from it. */
    size_t size = rid.len + 96;
    char *topic = malloc(size);
    if (!topic || th_topic_twin_response(status, rid, version, topic, size) != TH_OK) {
        brk_log(p, MOSQ_LOG_WARNING, "%s | twin reply dropped | out of memory", c->client_id);
        free(topic);
        return;
    }
    brk_publish_to(c->client_id, topic, body, body ? strlen(body) : 0, 0);
    free(topic);
}

static void twin_error_reply(struct brk_plugin *p, struct brk_conn *c, struct th_slice rid,
                             const struct th_error *err)
{
    char *body = brk_error_body(p, err);
    twin_reply(p, c, err->status ? err->status : 500, rid, -1, body);
    free(body);
}

/* An injected fault (scenario `injectError`) answers instead of the twin; true when it did. */
static bool injected_fault(struct brk_plugin *p, struct brk_conn *c, const struct th_topic *t,
                           int *status, int *count, enum th_fault_op op)
{
    struct th_error err = {0};
    if (*count <= 0) {
        return false;
    }
    (*count)--;
    (void)th_fault_error(op, *status, &err);
    twin_error_reply(p, c, t->rid, &err);
    brk_log(p, MOSQ_LOG_NOTICE, "%s | %s | injected status %d", c->client_id, th_fault_op_text(op),
            *status);
    return true;
}

static void on_twin_get(struct brk_plugin *p, struct brk_conn *c, const struct th_topic *t)
{
    struct th_identity *id = c->identity;
    struct brk_idglue *g = id->glue;
    if (g &&
        injected_fault(p, c, t, &g->fault_get_status, &g->fault_get_count, TH_FAULT_TWIN_GET)) {
        return;
    }
    cJSON *view = th_twin_device_view(id->twin);
    char *body = view ? th_json_print(view) : NULL;
    cJSON_Delete(view);
    if (!body) {
        struct th_error err = {0};
        th_error_set(&err, TH_ERR_NOMEM, TH_EC_SERVER_ERROR, "out of memory building the twin");
        twin_error_reply(p, c, t->rid, &err);
        return;
    }
    twin_reply(p, c, 200, t->rid, -1, body);
    free(body);
    brk_log(p, MOSQ_LOG_INFO, "%s | twin get | status=200", c->client_id);
    brk_event_emit(p, TH_JOURNAL_TWIN_GET, id->device_id, id->module_id,
                   brk_events_wanted(p) ? th_journal_data_twin_get(200) : NULL);
}

static void on_twin_patch(struct brk_plugin *p, struct brk_conn *c, const struct th_topic *t,
                          const void *payload, size_t len)
{
    struct th_identity *id = c->identity;
    struct brk_idglue *g = id->glue;
    struct th_error err = {0};
    cJSON *patch = NULL;
    th_result r;

    if (g && injected_fault(p, c, t, &g->fault_patch_status, &g->fault_patch_count,
                            TH_FAULT_TWIN_PATCH)) {
        return;
    }
    if (len == 0 || !payload) {
        r = th_error_set(&err, TH_ERR_FORMAT, TH_EC_IOTHUB_FORMAT_ERROR,
                         "the reported-properties patch is empty; send a JSON object");
    } else {
        r = th_json_parse(payload, len, TH_JSON_MAX_INPUT_BYTES, 64, &patch, &err);
    }
    /* `$version` on the topic is a precondition on the reported $version (the Java SDK's
     * DeviceTwinWithVersionTests); without it nothing is compared. */
    long long want = 0;
    int64_t if_version = 0;
    if (r == TH_OK && t->version.ptr && th_topic_version_value(t->version, &want) != TH_OK) {
        r = th_error_set(&err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                         "$version '%.*s' in the topic is not an integer; send the reported "
                         "$version to update at, or leave $version out",
                         (int)(t->version.len > 64 ? 64 : t->version.len), t->version.ptr);
    }
    if_version = (int64_t)want;
    if (r == TH_OK) {
        r = th_twin_patch_reported_if(id->twin, patch, t->version.ptr ? &if_version : NULL,
                                      th_now_us(), &err);
    }
    if (r == TH_OK) {
        brk_persist_device(p, id);
        twin_reply(p, c, 204, t->rid, (long long)id->twin->reported_version, NULL);
        brk_log(p, MOSQ_LOG_INFO, "%s | reported patch | version=%lld", c->client_id,
                (long long)id->twin->reported_version);
    } else {
        twin_error_reply(p, c, t->rid, &err);
        brk_log(p, MOSQ_LOG_WARNING, "%s | reported patch refused | status=%d code=%d %s",
                c->client_id, err.status, err.code, err.message);
    }
    /* The twin keeps copies of what it merged, so the event takes the patch itself. */
    cJSON *data = NULL;
    if (brk_events_wanted(p)) {
        data = r == TH_OK ? th_journal_data_reported(patch, id->twin->reported_version)
                          : th_journal_data_reported_refused(patch, &err);
    } else {
        cJSON_Delete(patch);
    }
    brk_event_emit(p, TH_JOURNAL_REPORTED, id->device_id, id->module_id, data);
}

static int on_telemetry(struct brk_plugin *p, struct brk_conn *c, struct mosquitto_evt_message *ed,
                        const struct th_topic *t)
{
    struct th_identity *id = c->identity;
    struct th_props props = {0};
    bool own = t->device_id.len == strlen(id->device_id) &&
               !memcmp(t->device_id.ptr, id->device_id, t->device_id.len) &&
               ((id->module_id == NULL && t->module_id.ptr == NULL) ||
                (id->module_id && t->module_id.ptr && t->module_id.len == strlen(id->module_id) &&
                 !memcmp(t->module_id.ptr, id->module_id, t->module_id.len)));
    if (!own) {
        return protocol_error(p, c, ed->topic, "telemetry topic names another identity");
    }
    if (ed->payloadlen > TH_D2C_MAX_BYTES) {
        return protocol_error(p, c, ed->topic, "telemetry message larger than 256 KB");
    }
    if (t->props.len && th_props_parse(t->props.ptr, t->props.len, &props) != TH_OK) {
        return protocol_error(p, c, ed->topic, "malformed property bag in the telemetry topic");
    }
    brk_log(p, MOSQ_LOG_INFO, "%s | telemetry | bytes=%u qos=%d", c->client_id, ed->payloadlen,
            ed->qos);
    if (!brk_events_wanted(p)) {
        /* Nobody to tell: skip building the record, most of the plugin's work per message;
         * brk_event_emit still counts it in the sequence. */
        th_props_free(&props);
        brk_event_emit(p, TH_JOURNAL_TELEMETRY, id->device_id, id->module_id, NULL);
        return MOSQ_ERR_ACL_DENIED;
    }
    struct th_journal_telemetry ev = {
        .topic = ed->topic,
        .qos = ed->qos,
        .retain = ed->retain,
        .props = &props,
        .device_id = id->device_id,
        .module_id = id->module_id,
        .generation_id = id->generation_id,
        .model_id = id->model_id,
        .x509 = c->x509,
        .enqueued_us = th_now_us(),
        .body = ed->payload,
        .len = ed->payloadlen,
    };
    brk_event_emit_telemetry(p, &ev);
    th_props_free(&props);
    return MOSQ_ERR_ACL_DENIED;
}

int brk_on_message(int event, void *event_data, void *userdata)
{
    struct mosquitto_evt_message *ed = event_data;
    struct brk_plugin *p = userdata;
    struct brk_conn *c = brk_conn_find(p, ed->client);
    struct th_topic t;
    (void)event;

    if (c && !c->kicked && c->kind == BRK_CONN_DPS) {
        return brk_dps_on_message(p, c, ed);
    }
    if (!c || c->kicked || c->kind != BRK_CONN_DEVICE || !c->identity) {
        return MOSQ_ERR_ACL_DENIED; /* kicked: refused until the tick closes it (acl.c) */
    }
    th_identity_touch(c->identity, th_now_us());
    if (ed->qos > 1) {
        return protocol_error(p, c, ed->topic, "IoT Hub does not accept QoS 2 publishes");
    }
    if (th_topic_parse(ed->topic, strlen(ed->topic), &t) != TH_OK) {
        return protocol_error(p, c, ed->topic, "not an IoT Hub device topic");
    }
    switch (t.kind) {
    case TH_TOPIC_TELEMETRY:
        return on_telemetry(p, c, ed, &t);
    case TH_TOPIC_TWIN_GET:
        on_twin_get(p, c, &t);
        return MOSQ_ERR_ACL_DENIED;
    case TH_TOPIC_TWIN_PATCH_REPORTED:
        on_twin_patch(p, c, &t, ed->payload, ed->payloadlen);
        return MOSQ_ERR_ACL_DENIED;
    case TH_TOPIC_METHOD_RESPONSE:
        brk_methods_on_response(p, c->identity, &t, ed->payload, ed->payloadlen);
        return MOSQ_ERR_ACL_DENIED;
    default:
        return protocol_error(p, c, ed->topic, "not an IoT Hub device topic");
    }
}
