/*
 * deliver.c - what the hub sends a device on its own (outbound, not an
 * answer to a device request): desired-property notifications, queued
 * cloud-to-device messages and direct-method requests
 * (iothub-protocol.md sections 5, 6 and 8), each only while the identity is
 * connected and subscribed; and the one publish helper everything the plugin
 * sends goes through. Answers to device requests (twin responses) are
 * device_msgs.c; answers to service callers are control.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "plugin.h"
#include "topic.h"

int brk_publish_to(const char *client_id, const char *topic, const void *payload, size_t len,
                   int qos)
{
    int rc = mosquitto_broker_publish_copy(client_id, topic, (int)len, payload, qos, false, NULL);
    if (rc != MOSQ_ERR_SUCCESS) {
        mosquitto_log_printf(MOSQ_LOG_WARNING, "twinhub: could not publish to %s on %s: %s",
                             client_id ? client_id : "(subscribers)", topic,
                             mosquitto_strerror(rc));
    }
    return rc;
}

void brk_deliver_c2d(struct brk_plugin *p, struct th_identity *dev)
{
    struct brk_idglue *g = dev->glue;
    struct th_c2d_msg *m;
    char topic[4096];
    size_t delivered = 0;
    if (!g || !g->conn || !g->sub_c2d || dev->module_id) {
        return;
    }
    while ((m = th_identity_c2d_pop(dev)) != NULL) {
        if (th_topic_c2d(dev->device_id, m->bag ? m->bag : "", topic, sizeof topic) == TH_OK) {
            brk_publish_to(g->conn->client_id, topic, m->body, m->len, g->c2d_qos);
            brk_event_emit(p, TH_JOURNAL_C2D, dev->device_id, NULL,
                           th_journal_data_c2d(m->message_id, true, dev->c2d_count));
            brk_log(p, MOSQ_LOG_INFO, "%s | c2d delivered | mid=%s", dev->device_id,
                    m->message_id ? m->message_id : "");
        }
        th_c2d_msg_free(m);
        delivered++;
    }
    if (delivered) {
        brk_persist_device(p, dev);
    }
}

bool brk_deliver_desired_text(struct brk_plugin *p, struct th_identity *id, const char *body,
                              size_t len, int64_t version)
{
    struct brk_idglue *g = id->glue;
    char topic[128];
    (void)p;
    if (!g || !g->conn || !g->sub_desired || !body) {
        return false;
    }
    if (th_topic_desired((long long)version, topic, sizeof topic) != TH_OK) {
        return false;
    }
    brk_publish_to(g->conn->client_id, topic, body, len, g->desired_qos);
    return true;
}

bool brk_deliver_desired(struct brk_plugin *p, struct th_identity *id, const cJSON *notification,
                         int64_t version)
{
    struct brk_idglue *g = id->glue;
    char *body;
    bool sent;
    if (!g || !g->conn || !g->sub_desired) {
        return false;
    }
    body = th_json_print(notification);
    sent = body && brk_deliver_desired_text(p, id, body, strlen(body), version);
    free(body);
    return sent;
}

bool brk_deliver_method_request(struct brk_plugin *p, struct brk_method_call *m, int64_t now_ms)
{
    struct th_identity *id = th_registry_find(p->reg, m->device_id, m->module_id);
    struct brk_idglue *g = id ? id->glue : NULL;
    char topic[512], rid[32];
    if (!g || !g->conn || !g->sub_methods) {
        return false;
    }
    snprintf(rid, sizeof rid, "%llu", (unsigned long long)m->id);
    if (th_topic_method_request(m->method_name, rid, topic, sizeof topic) != TH_OK) {
        return false;
    }
    brk_publish_to(g->conn->client_id, topic, m->payload, strlen(m->payload), 0);
    m->response_deadline_ms = now_ms + (int64_t)m->response_timeout_s * 1000;
    brk_log(p, MOSQ_LOG_INFO, "%s | method %s sent | rid=%s", g->conn->client_id, m->method_name,
            rid);
    return true;
}
