/*
 * gw_control.c - the gateway's only way into the hub: one libmosquitto
 * connection as a service principal (client id twinhub-gateway-<pid>,
 * username = hub name, a SAS token of a full-rights policy) that sends
 * control API commands (TH_CONTROL_TOPIC, docs/control-api.md) and
 * matches each answer to its request by correlationData.
 *
 * libmosquitto runs its own network thread (mosquitto_loop_start, which also
 * reconnects). Its callbacks only copy what arrived into the inbox and wake
 * the lws service thread with lws_cancel_service; everything else (pending
 * calls) lives on the service thread. The gateway keeps no policies and
 * checks no token: each REST command carries its caller's token and the
 * broker decides it (gw_rest.c, core/auth.h th_auth_service).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mosquitto.h>

#include "ctl_proto.h"
#include "journal.h" /* TH_JOURNAL_TOPIC_PREFIX */
#include "gw_private.h"
#include "json.h"
#include "sas.h"
#include "util.h"

#define TOKEN_LIFETIME_S (10LL * 365 * 86400) /* the gateway's token outlives any run */
#define KEEPALIVE_S 30
#define MAX_ANSWER_BYTES (256u * 1024 * 1024) /* exportRegistry of a large registry */

/* ---- libmosquitto's thread: copy and wake ------------------------------------------------ */

static void push(struct th_gateway *gw, struct gw_inbox_item *it)
{
    pthread_mutex_lock(&gw->lock);
    if (gw->inbox_tail)
        gw->inbox_tail->next = it;
    else
        gw->inbox_head = it;
    gw->inbox_tail = it;
    pthread_mutex_unlock(&gw->lock);
    lws_cancel_service(gw->ctx);
}

static void push_kind(struct th_gateway *gw, int kind, int rc)
{
    struct gw_inbox_item *it = calloc(1, sizeof *it);
    if (!it)
        return; /* a lost notice is recovered by the next one; nothing better to do */
    it->kind = kind;
    it->rc = rc;
    push(gw, it);
}

static void set_state(struct th_gateway *gw, enum th_gateway_state st, const char *why)
{
    pthread_mutex_lock(&gw->lock);
    snprintf(gw->why, sizeof gw->why, "%s", why ? why : "");
    pthread_mutex_unlock(&gw->lock);
    atomic_store(&gw->state, (int)st);
}

static void on_connect(struct mosquitto *mosq, void *obj, int rc)
{
    struct th_gateway *gw = obj;
    if (rc == 0) {
        /* The hub answers the caller even without this subscription; subscribing is
         * what the control API documents, and costs nothing. */
        mosquitto_subscribe(mosq, NULL, TH_CONTROL_RESPONSE_TOPIC, 1);
        push_kind(gw, GW_IN_CONNECTED, 0);
    } else {
        char why[256];
        snprintf(why, sizeof why, "the broker refused the gateway's sign-in as policy '%s' (%s)",
                 gw->policy_name, mosquitto_connack_string(rc));
        set_state(gw, TH_GATEWAY_REFUSED, why);
        push_kind(gw, GW_IN_REFUSED, rc);
    }
}

static void on_disconnect(struct mosquitto *mosq, void *obj, int rc)
{
    (void)mosq;
    push_kind(obj, GW_IN_DISCONNECTED, rc);
}

static void on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *msg)
{
    (void)mosq;
    bool event = !strncmp(msg->topic, TH_JOURNAL_TOPIC_PREFIX, strlen(TH_JOURNAL_TOPIC_PREFIX));
    if ((!event && strcmp(msg->topic, TH_CONTROL_RESPONSE_TOPIC) != 0) || msg->payloadlen <= 0)
        return;
    struct gw_inbox_item *it = calloc(1, sizeof *it);
    char *copy = malloc((size_t)msg->payloadlen + 1);
    if (!it || !copy) {
        free(it);
        free(copy);
        return; /* the waiting request times out with 503 */
    }
    memcpy(copy, msg->payload, (size_t)msg->payloadlen);
    copy[msg->payloadlen] = '\0';
    it->kind = event ? GW_IN_EVENT : GW_IN_MESSAGE; /* events: the dashboard's (gw_dash.c) */
    it->payload = copy;
    it->len = (size_t)msg->payloadlen;
    push(obj, it);
}

bool gw_ctl_init(struct th_gateway *gw, char *err, size_t errsize)
{
    char token[1024];
    int64_t se = th_now_us() / 1000000 + TOKEN_LIFETIME_S;
    if (th_sas_sign(gw->hub_name, gw->policy_key, se, gw->policy_name, token, sizeof token) !=
        TH_OK) {
        snprintf(err, errsize, "the key of policy '%s' is not valid base64", gw->policy_name);
        return false;
    }
    mosquitto_lib_init();
    snprintf(gw->client_id, sizeof gw->client_id, "twinhub-gateway-%ld", (long)getpid());
    gw->mosq = mosquitto_new(gw->client_id, true, gw);
    if (!gw->mosq) {
        snprintf(err, errsize, "out of memory creating the gateway's control connection");
        return false;
    }
    mosquitto_int_option(gw->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
    /* Each command is one small publish answered by one small publish: without this, Nagle
     * holds the next one back for the broker's delayed ACK (40 ms a round trip). */
    mosquitto_int_option(gw->mosq, MOSQ_OPT_TCP_NODELAY, 1);
    mosquitto_username_pw_set(gw->mosq, gw->hub_name, token);
    mosquitto_reconnect_delay_set(gw->mosq, 1, 2, false);
    mosquitto_connect_callback_set(gw->mosq, on_connect);
    mosquitto_disconnect_callback_set(gw->mosq, on_disconnect);
    mosquitto_message_callback_set(gw->mosq, on_message);
    /* A failure here is retried by the network thread; serve reports a hub that never comes up. */
    int rc = mosquitto_connect_async(gw->mosq, gw->broker_host, gw->broker_port, KEEPALIVE_S);
    if (rc != MOSQ_ERR_SUCCESS)
        gw_log(gw, false, "control connection to %s:%d not up yet (%s); retrying", gw->broker_host,
               gw->broker_port, mosquitto_strerror(rc));
    rc = mosquitto_loop_start(gw->mosq);
    if (rc != MOSQ_ERR_SUCCESS) {
        snprintf(err, errsize, "cannot start the gateway's control connection: %s",
                 mosquitto_strerror(rc));
        return false;
    }
    gw->mosq_loop_started = true;
    return true;
}

void gw_ctl_shutdown(struct th_gateway *gw)
{
    if (!gw->mosq)
        return;
    if (gw->mosq_loop_started) {
        mosquitto_disconnect(gw->mosq);
        mosquitto_loop_stop(gw->mosq, false);
        gw->mosq_loop_started = false;
    }
    mosquitto_destroy(gw->mosq);
    gw->mosq = NULL;
}

/* ---- service thread: calls --------------------------------------------------------------- */

/* {"error": why, "status": 503, "errorCode": 503001}; NULL on out-of-memory. */
static cJSON *unavailable_entry(const char *why)
{
    cJSON *e = cJSON_CreateObject();
    if (!e || !cJSON_AddStringToObject(e, "error", why) ||
        !cJSON_AddNumberToObject(e, "status", 503) ||
        !cJSON_AddNumberToObject(e, "errorCode", TH_EC_SERVICE_UNAVAILABLE)) {
        cJSON_Delete(e);
        return NULL;
    }
    return e;
}

static void unlink_call(struct th_gateway *gw, struct gw_call *call)
{
    for (struct gw_call **pp = &gw->calls; *pp; pp = &(*pp)->next) {
        if (*pp == call) {
            *pp = call->next;
            return;
        }
    }
}

/* Answer one call (unlinked by the caller) and free it. */
static void finish(struct th_gateway *gw, struct gw_call *call, const cJSON *entry)
{
    struct gw_conn *conn = call->conn;
    if (conn)
        conn->call = NULL;
    gw_done_fn done = call->done;
    free(call);
    done(gw, conn, entry);
}

/* Fail every call in flight (the connection to the hub is gone). */
static void fail_all(struct th_gateway *gw, const char *why)
{
    cJSON *e = unavailable_entry(why);
    while (gw->calls) {
        struct gw_call *call = gw->calls;
        gw->calls = call->next;
        finish(gw, call, e);
    }
    cJSON_Delete(e);
}

bool gw_ctl_call(struct th_gateway *gw, struct gw_conn *conn, cJSON *cmd, double timeout_s,
                 gw_done_fn done)
{
    struct gw_call *call = NULL;
    char corr[40], *text = NULL;
    const char *corrs[1] = {corr};
    bool ok = false;
    if (!cmd || !gw->ctl_up || !gw->mosq)
        goto out;
    call = calloc(1, sizeof *call);
    snprintf(corr, sizeof corr, "gw-%llu", (unsigned long long)gw->next_call_id);
    if (!call)
        goto out;
    text = th_ctl_request_print(&cmd, 1, corrs);
    if (!text || mosquitto_publish(gw->mosq, NULL, TH_CONTROL_TOPIC, (int)strlen(text), text, 1,
                                   false) != MOSQ_ERR_SUCCESS)
        goto out;
    call->id = gw->next_call_id++;
    call->conn = conn;
    call->done = done;
    call->deadline_ms = th_mono_ms() + (int64_t)(timeout_s * 1000);
    call->next = gw->calls;
    gw->calls = call;
    if (conn)
        conn->call = call;
    call = NULL;
    ok = true;
out:
    free(text);
    free(call);
    cJSON_Delete(cmd);
    return ok;
}

void gw_ctl_forget(struct th_gateway *gw, struct gw_conn *conn)
{
    (void)gw;
    if (conn->call) {
        conn->call->conn = NULL;
        conn->call = NULL;
    }
}

void gw_ctl_tick(struct th_gateway *gw, int64_t now_ms)
{
    struct gw_call **pp = &gw->calls;
    while (*pp) {
        struct gw_call *call = *pp;
        if (call->deadline_ms > now_ms) {
            pp = &call->next;
            continue;
        }
        *pp = call->next;
        cJSON *e = unavailable_entry("the hub did not answer in time; is the broker overloaded?");
        finish(gw, call, e);
        cJSON_Delete(e);
        pp = &gw->calls; /* `finish` may have added or removed calls */
    }
}

/* One {"responses":[...]} message: answer the calls it names. */
static void handle_answer(struct th_gateway *gw, const char *text, size_t len)
{
    cJSON *responses = NULL;
    struct th_error err = {0};
    if (th_ctl_responses_parse(text, len, MAX_ANSWER_BYTES, &responses, &err) != TH_OK) {
        gw_log(gw, true, "unreadable control answer ignored: %s", err.message);
        return;
    }
    const cJSON *entry;
    cJSON_ArrayForEach(entry, responses)
    {
        const char *corr = th_ctl_entry_corr(entry);
        char *end;
        if (!corr || strncmp(corr, "gw-", 3) != 0)
            continue;
        unsigned long long id = strtoull(corr + 3, &end, 10);
        if (*end)
            continue;
        for (struct gw_call *call = gw->calls; call; call = call->next) {
            if (call->id == id) {
                unlink_call(gw, call);
                finish(gw, call, entry);
                break;
            }
        }
    }
    cJSON_Delete(responses);
}

/* ---- service thread: the inbox ----------------------------------------------------------- */

void gw_ctl_drain(struct th_gateway *gw)
{
    pthread_mutex_lock(&gw->lock);
    struct gw_inbox_item *it = gw->inbox_head;
    gw->inbox_head = gw->inbox_tail = NULL;
    pthread_mutex_unlock(&gw->lock);
    bool stopping = atomic_load(&gw->stopping);
    while (it) {
        struct gw_inbox_item *next = it->next;
        switch (it->kind) {
        case GW_IN_CONNECTED:
            gw->ctl_up = true;
            gw_log(gw, false, "control | connected | client=%s policy=%s", gw->client_id,
                   gw->policy_name);
            if (atomic_load(&gw->state) != TH_GATEWAY_UP) {
                set_state(gw, TH_GATEWAY_UP, NULL);
                if (gw->ctl_was_up)
                    gw_log(gw, true, "control connection to the hub is back");
            }
            gw->ctl_was_up = true;
            gw_dash_connected(gw);
            break;
        case GW_IN_REFUSED:
            gw->ctl_up = false;
            fail_all(gw, "the broker refused the gateway's control connection");
            break;
        case GW_IN_DISCONNECTED:
            if (gw->ctl_up && !stopping) {
                gw_log(gw, true,
                       "lost the control connection to the hub; REST requests get 503 until "
                       "it is back");
                set_state(gw, TH_GATEWAY_DOWN, "the control connection to the hub was lost");
            }
            gw->ctl_up = false;
            fail_all(gw, "the connection to the hub was lost");
            break;
        case GW_IN_MESSAGE:
            if (!stopping)
                handle_answer(gw, it->payload, it->len);
            break;
        case GW_IN_EVENT:
            if (!stopping)
                gw_dash_event(gw, it->payload, it->len);
            break;
        }
        free(it->payload);
        free(it);
        it = next;
    }
}
