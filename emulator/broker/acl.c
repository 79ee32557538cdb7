/*
 * acl.c - per-identity topic access (MOSQ_EVT_ACL_CHECK), the IoT Hub rule
 * that a device reads and writes only its own topics whatever wildcard it
 * uses (iothub-protocol.md section 3.6, 3.10).
 *
 * Everything the hub sends a device goes straight to that client with
 * mosquitto_broker_publish (no subscription routing), so devices are never
 * granted READ through subscriptions. Their SUBSCRIBE filters are checked
 * and remembered (a method call needs the methods subscription, C2D needs
 * the devicebound one). Device PUBLISHes are classified in device_msgs.c.
 */
#include <string.h>

#include "plugin.h"
#include "topic.h"

static bool starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/*
 * Can subscription filter `f` match an event topic ($twinhub/events/{kind}/...)?
 * Wildcards at the first level do not match topics starting with '$' (MQTT
 * 3.1.1 4.7.2), so the first level is "$twinhub"; the second "events", "+" or
 * "#". An over-approximation is harmless: it only keeps events being built.
 */
static bool filter_may_match_events(const char *f)
{
    static const char first[] = "$twinhub/";
    if (strncmp(f, first, sizeof first - 1) != 0) {
        return false;
    }
    const char *l2 = f + sizeof first - 1;
    return starts_with(l2, "events/") || !strcmp(l2, "events") || starts_with(l2, "+") ||
           starts_with(l2, "#");
}

static int acl_service(struct brk_plugin *p, struct brk_conn *c,
                       const struct mosquitto_evt_acl_check *ed)
{
    switch (ed->access) {
    case MOSQ_ACL_WRITE:
        return !strcmp(ed->topic, TH_CONTROL_TOPIC) ? MOSQ_ERR_SUCCESS : MOSQ_ERR_ACL_DENIED;
    case MOSQ_ACL_SUBSCRIBE:
        /* Events are built only while someone may receive them (events.c); unsubscribing is
         * not tracked: the connection counts until it ends. */
        if (!c->events_sub && filter_may_match_events(ed->topic)) {
            c->events_sub = true;
            p->event_subs++;
        }
        /* fall through */
    case MOSQ_ACL_READ:
        if (!strcmp(ed->topic, TH_CONTROL_RESPONSE_TOPIC) || starts_with(ed->topic, "$twinhub/")) {
            return MOSQ_ERR_SUCCESS;
        }
        return MOSQ_ERR_ACL_DENIED;
    case MOSQ_ACL_UNSUBSCRIBE:
        return MOSQ_ERR_SUCCESS;
    default:
        return MOSQ_ERR_ACL_DENIED;
    }
}

static void set_sub(struct brk_idglue *g, enum th_sub_kind kind, bool on, int qos)
{
    uint8_t q = qos > 0 ? 1 : 0; /* the hub delivers at min(granted QoS, 1) */
    switch (kind) {
    case TH_SUB_TWIN_RES:
        g->sub_twin_res = on;
        break;
    case TH_SUB_DESIRED:
        g->sub_desired = on;
        g->desired_qos = q;
        break;
    case TH_SUB_METHODS:
        g->sub_methods = on;
        break;
    case TH_SUB_C2D:
        g->sub_c2d = on;
        g->c2d_qos = q;
        break;
    default:
        break;
    }
}

static int acl_device(struct brk_plugin *p, struct brk_conn *c,
                      const struct mosquitto_evt_acl_check *ed)
{
    struct th_identity *id = c->identity;
    struct brk_idglue *g;
    enum th_sub_kind kind;

    if (!id) {
        return MOSQ_ERR_ACL_DENIED; /* superseded by a newer connection */
    }
    switch (ed->access) {
    case MOSQ_ACL_WRITE:
        if (starts_with(ed->topic, "$CONTROL/")) {
            brk_log(p, MOSQ_LOG_WARNING, "%s | publish refused | devices may not use %s",
                    c->client_id, ed->topic);
            return MOSQ_ERR_ACL_DENIED;
        }
        return MOSQ_ERR_SUCCESS; /* classified (and refused if foreign) in brk_on_message */
    case MOSQ_ACL_SUBSCRIBE:
        kind = th_sub_classify(ed->topic, id->device_id, id->module_id);
        if (kind == TH_SUB_DENIED) {
            brk_log(p, MOSQ_LOG_WARNING,
                    "%s | subscribe refused | filter '%s' is not an IoT Hub topic of this identity",
                    c->client_id, ed->topic);
            brk_event_emit(p, TH_JOURNAL_PROTOCOL_ERROR, id->device_id, id->module_id,
                           th_journal_data_protocol_error(ed->topic, "subscription refused"));
            return MOSQ_ERR_ACL_DENIED;
        }
        g = brk_idglue_of(id);
        if (!g) {
            return MOSQ_ERR_NOMEM;
        }
        set_sub(g, kind, true, ed->qos);
        if (kind == TH_SUB_C2D) {
            brk_deliver_c2d(p, id);
        }
        return MOSQ_ERR_SUCCESS;
    case MOSQ_ACL_UNSUBSCRIBE:
        kind = th_sub_classify(ed->topic, id->device_id, id->module_id);
        g = brk_idglue_of(id);
        if (g && kind != TH_SUB_DENIED) {
            set_sub(g, kind, false, 0);
        }
        return MOSQ_ERR_SUCCESS;
    case MOSQ_ACL_READ:
    default:
        return MOSQ_ERR_ACL_DENIED;
    }
}

int brk_on_acl_check(int event, void *event_data, void *userdata)
{
    struct mosquitto_evt_acl_check *ed = event_data;
    struct brk_plugin *p = userdata;
    struct brk_conn *c = brk_conn_find(p, ed->client);
    (void)event;
    /* A connection whose kick waits for the tick (conn.c) may do nothing more: a disabled,
     * re-keyed or expired identity is refused from the moment the hub decided so. */
    if (!c || c->kicked) {
        return MOSQ_ERR_ACL_DENIED;
    }
    if (c->kind == BRK_CONN_SERVICE) {
        return acl_service(p, c, ed);
    }
    if (c->kind == BRK_CONN_DPS) {
        return brk_dps_acl(p, c, ed);
    }
    return acl_device(p, c, ed);
}
