/*
 * dps.c - the Device Provisioning Service's device side over MQTT
 * (docs/dps.md): the CONNECT of a registering device (username
 * "{idScope}/registrations/{registrationId}/api-version=..."), its topic
 * access ($dps/registrations/res/# only), the register and operation-status
 * requests and their answers (202 with operationId and retry-after, then 200
 * with the registrationState; errors in-band as {status} with the service's
 * error body), answered to the requesting client only. Also the one place a
 * registration is carried out (brk_dps_register, used by the HTTPS side
 * through control_dps.c too), and the DPS state file in --state-dir.
 *
 * Glue only: who the token proves to be, what the registration does to the
 * registry and the documents are core/dps.c.
 *
 * The client id (docs/dps.md): the SDKs use the registration id, which for a
 * group member is the device id too; the TLS shim in mosquitto and the
 * gateway's WebSocket bridge rewrite it to "~dps/{registrationId}" (core/dps_front.h) so that a
 * registration does not take over the device's hub session. Either form is
 * accepted here, for the username's registration id only.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dps.h"
#include "dps_front.h"
#include "dps_x509.h"
#include "x509.h"
#include "json.h"
#include "plugin.h"
#include "th_file.h"
#include "util.h"

struct brk_dps_conn {
    char registration_id[TH_MAX_ID_LEN + 1];
    char id_scope[TH_DPS_ID_SCOPE_MAX + 1];
    char *token; /* the CONNECT password (the SAS token), malloc'd; NULL when none */
    struct th_x509_chain *chain; /* the client certificate from the front credential, or NULL */
};

void brk_dps_conn_free(struct brk_dps_conn *d)
{
    if (d) {
        free(d->token);
        th_x509_chain_free(d->chain);
        free(d);
    }
}

th_result brk_dps_open_cred(struct brk_plugin *p, const char *client_id, const char *username,
                            const char *cred, struct th_x509_chain **out, char *why,
                            size_t why_size)
{
    return th_x509_cred_open(p->has_front_secret ? p->front_secret : NULL,
                             p->has_front_secret ? sizeof p->front_secret : 0, client_id, username,
                             cred, out, why, why_size);
}

bool brk_dps_is_username(const char *username)
{
    char scope[TH_DPS_ID_SCOPE_MAX + 1], rid[TH_MAX_ID_LEN + 1];
    return th_dps_username_parse(username, scope, rid);
}

/* ---- persistence ---- */

#define DPS_STATE_FILE "dps.json"

void brk_dps_persist(struct brk_plugin *p)
{
    char path[4096];
    if (!p->state_dir) {
        return;
    }
    cJSON *state = th_dps_state_json(p->dps);
    char *text = state ? th_json_print(state) : NULL;
    cJSON_Delete(state);
    snprintf(path, sizeof path, "%s/" DPS_STATE_FILE, p->state_dir);
    if (!text || th_file_replace_bytes(path, 0600, text, strlen(text)) != TH_FILE_DONE) {
        brk_log(p, MOSQ_LOG_ERR, "dps | not saved | cannot write %s: %s", path,
                text ? strerror(errno) : "out of memory");
    }
    free(text);
}

int brk_dps_load_state(struct brk_plugin *p, bool *found)
{
    char path[4096];
    size_t len = 0;
    struct th_error err = {0};
    cJSON *doc = NULL;
    *found = false;
    if (!p->state_dir) {
        return MOSQ_ERR_SUCCESS;
    }
    snprintf(path, sizeof path, "%s/" DPS_STATE_FILE, p->state_dir);
    char *text = th_file_read(path, TH_JSON_MAX_INPUT_BYTES * 16, &len);
    if (!text) {
        return errno == ENOENT ? MOSQ_ERR_SUCCESS : MOSQ_ERR_INVAL;
    }
    *found = true;
    th_result r = th_json_parse(text, len, TH_JSON_MAX_INPUT_BYTES * 16, 64, &doc, &err);
    free(text);
    if (r == TH_OK) {
        r = th_dps_restore(p->dps, doc, &err);
    }
    cJSON_Delete(doc);
    if (r != TH_OK) {
        mosquitto_log_printf(MOSQ_LOG_ERR, "twinhub: %s cannot be loaded: %s; move it away", path,
                             err.message);
        return MOSQ_ERR_INVAL;
    }
    return MOSQ_ERR_SUCCESS;
}

/* ---- a registration ---- */

int brk_dps_register(struct brk_plugin *p, const char *id_scope, const char *registration_id,
                     const char *token, const struct th_x509_chain *chain, const cJSON *payload,
                     const char *transport, cJSON **out_body, struct th_error *err)
{
    struct th_dps_attest a;
    struct th_dps_plan plan;
    struct th_identity *id = NULL;
    struct th_dps_registration *rs = NULL;
    bool keys_changed = false;
    int64_t now_us = th_now_us();
    *out_body = NULL;
    struct th_journal_registration ev = {
        .registration_id = registration_id, .transport = transport, .payload = payload};

    th_result r = chain ? th_dps_attest_x509(p->dps, id_scope, registration_id, chain, p->cas,
                                             now_us / 1000000, &a, err)
                        : th_dps_attest(p->dps, id_scope, registration_id, token, now_us / 1000000,
                                        p->token_skew_s, &a, err);
    if (r == TH_OK) {
        th_dps_plan(p->dps, p->reg, registration_id, &a, &plan);
        if (plan.action == TH_DPS_RECREATE) {
            struct th_identity *old = th_registry_find(p->reg, plan.device_id, NULL);
            if (old) {
                for (size_t i = 0; i < old->module_count; i++) {
                    brk_conn_forget_identity(p, old->modules[i]);
                }
                brk_conn_forget_identity(p, old);
                if (th_registry_remove(p->reg, plan.device_id, NULL) == TH_OK) {
                    brk_persist_forget(p, plan.device_id);
                    brk_event_emit(p, TH_JOURNAL_DEVICE_DELETED, plan.device_id, NULL, NULL);
                }
            }
        }
        r = th_dps_assign(p->dps, p->reg, registration_id, &a, &plan, payload, now_us, &id,
                          &keys_changed, &rs, err);
    }
    if (r != TH_OK) {
        ev.status = err->status ? err->status : 500;
        ev.error = err->message;
        brk_log(p, MOSQ_LOG_WARNING, "%s | dps registration refused | status=%d %s",
                registration_id ? registration_id : "-", ev.status, err->message);
        brk_event_emit(p, TH_JOURNAL_REGISTRATION, NULL, NULL, th_journal_data_registration(&ev));
        return ev.status;
    }
    bool created = plan.action != TH_DPS_KEEP;
    if (created) {
        brk_event_emit(p, TH_JOURNAL_DEVICE_CREATED, id->device_id, NULL, NULL);
    }
    if (keys_changed) {
        brk_conn_kick_identity(p, id); /* its token was signed with the old key */
    }
    brk_persist_device(p, id);
    brk_dps_persist(p);
    ev.status = 202;
    ev.device_id = id->device_id;
    ev.enrollment_group_id = rs->group_id;
    ev.substatus = rs->substatus;
    ev.created = created;
    brk_log(p, MOSQ_LOG_NOTICE, "%s | dps registration | device=%s %s%s transport=%s",
            registration_id, id->device_id, rs->group_id ? "group=" : "individual",
            rs->group_id ? rs->group_id : "", transport);
    brk_event_emit(p, TH_JOURNAL_REGISTRATION, id->device_id, NULL,
                   th_journal_data_registration(&ev));
    *out_body = th_dps_operation_started(rs);
    if (!*out_body) {
        th_error_set(err, TH_ERR_NOMEM, TH_DPS_EC_SERVER_ERROR, "out of memory");
        err->status = 500;
        return 500;
    }
    return 202;
}

int brk_dps_operation_status(struct brk_plugin *p, const char *id_scope,
                             const char *registration_id, const char *token,
                             const struct th_x509_chain *chain, const char *operation_id,
                             cJSON **out_body, struct th_error *err)
{
    struct th_dps_attest a;
    int64_t now_s = th_now_us() / 1000000;
    *out_body = NULL;
    if ((chain ? th_dps_attest_x509(p->dps, id_scope, registration_id, chain, p->cas, now_s, &a,
                                    err)
               : th_dps_attest(p->dps, id_scope, registration_id, token, now_s, p->token_skew_s,
                               &a, err)) != TH_OK ||
        th_dps_operation_status(p->dps, registration_id, operation_id, p->hub_host, out_body,
                                err) != TH_OK) {
        return err->status ? err->status : 500;
    }
    return 200;
}

/* ---- MQTT ---- */

int brk_dps_on_connect(struct brk_plugin *p, struct mosquitto *client, const char *client_id,
                       const char *username, const char *password)
{
    struct brk_dps_conn *d = calloc(1, sizeof *d);
    struct brk_conn *c;
    if (!d) {
        return MOSQ_ERR_NOMEM;
    }
    (void)th_dps_username_parse(username, d->id_scope, d->registration_id);
    /* The token is decided on each request, so that a wrong key or a disabled enrollment gets
     * the service's 401 with a reason in-band (docs/dps.md); the CONNECT is refused only for
     * another ID scope or a client id other than the registration id (plain or as the front
     * rewrites it, core/dps_front.h). */
    if (strcmp(d->id_scope, p->dps->id_scope) ||
        !th_dps_client_id_valid(client_id, d->registration_id)) {
        const char *why = th_dps_client_id_valid(client_id, d->registration_id)
                              ? "unknown ID scope"
                              : "the client id must be the registration id (DPS docs: "
                                "\"For the ClientId field, use registrationId\")";
        brk_log(p, MOSQ_LOG_WARNING, "%s | dps connect refused | scope=%s: %s", d->registration_id,
                d->id_scope, why);
        brk_event_emit(p, TH_JOURNAL_REFUSED, NULL, NULL,
                       th_journal_data_refused(client_id, why, username));
        brk_dps_conn_free(d);
        return MOSQ_ERR_AUTH;
    }
    if (th_x509_is_cred(password)) {
        /* The front's credential: the client's certificate, bound to this client id and
         * username (core/x509.h); decided per request like a token. */
        char why[TH_X509_REASON_BUF];
        th_result r = brk_dps_open_cred(p, client_id, username, password, &d->chain, why,
                                        sizeof why);
        if (r != TH_OK) {
            brk_log(p, MOSQ_LOG_WARNING, "%s | dps connect refused | %s", d->registration_id,
                    why);
            brk_event_emit(p, TH_JOURNAL_REFUSED, NULL, NULL,
                           th_journal_data_refused(client_id, why, username));
            brk_dps_conn_free(d);
            return r == TH_ERR_NOMEM ? MOSQ_ERR_NOMEM : MOSQ_ERR_AUTH;
        }
        password = NULL;
    }
    if ((password && !(d->token = strdup(password))) ||
        !(c = brk_conn_add(p, client, client_id, BRK_CONN_DPS))) {
        brk_dps_conn_free(d);
        return MOSQ_ERR_NOMEM;
    }
    c->dps = d;
    c->token_expiry_s = INT64_MAX / 2; /* decided per request, not by the expiry scan */
    brk_log(p, MOSQ_LOG_INFO, "%s | dps connected | client=%s", d->registration_id, client_id);
    return MOSQ_ERR_SUCCESS;
}

int brk_dps_acl(struct brk_plugin *p, struct brk_conn *c, const struct mosquitto_evt_acl_check *ed)
{
    (void)p;
    (void)c;
    switch (ed->access) {
    case MOSQ_ACL_SUBSCRIBE:
        return strncmp(ed->topic, TH_DPS_TOPIC_RES_PREFIX, strlen(TH_DPS_TOPIC_RES_PREFIX)) == 0
                   ? MOSQ_ERR_SUCCESS
                   : MOSQ_ERR_ACL_DENIED;
    case MOSQ_ACL_WRITE:
        /* Classified in brk_dps_on_message, which closes the connection for any topic but the
         * two requests, as for devices (a denied write would be dropped without a word). */
        return strncmp(ed->topic, "$CONTROL/", 9) == 0 ? MOSQ_ERR_ACL_DENIED : MOSQ_ERR_SUCCESS;
    case MOSQ_ACL_UNSUBSCRIBE:
        return MOSQ_ERR_SUCCESS;
    default:
        return MOSQ_ERR_ACL_DENIED; /* answers go to the client directly */
    }
}

static void reply(struct brk_plugin *p, struct brk_conn *c, int status, struct th_slice rid,
                  int retry_after_s, const char *body)
{
    size_t size = rid.len + 96;
    char *topic = malloc(size);
    if (!topic || th_dps_topic_response(status, rid, retry_after_s, topic, size) != TH_OK) {
        brk_log(p, MOSQ_LOG_WARNING, "%s | dps reply dropped | out of memory", c->client_id);
        free(topic);
        return;
    }
    brk_publish_to(c->client_id, topic, body, body ? strlen(body) : 0, 0);
    free(topic);
}

static void reply_json(struct brk_plugin *p, struct brk_conn *c, int status, struct th_slice rid,
                       int retry_after_s, const cJSON *body)
{
    char *text = body ? th_json_print(body) : NULL;
    reply(p, c, status, rid, retry_after_s, text);
    free(text);
}

static void reply_error(struct brk_plugin *p, struct brk_conn *c, struct th_slice rid,
                        const struct th_error *err)
{
    char *body = brk_error_body(p, err);
    reply(p, c, err->status ? err->status : 500, rid, -1, body);
    free(body);
}

static void on_register(struct brk_plugin *p, struct brk_conn *c, const struct th_dps_topic *t,
                        const void *payload, size_t len)
{
    struct th_error err = {0};
    cJSON *doc = NULL, *body = NULL;
    const struct brk_dps_conn *d = c->dps;
    if (len && th_json_parse(payload, len, TH_JSON_MAX_INPUT_BYTES, 64, &doc, &err) != TH_OK) {
        err.status = 400;
        err.code = TH_DPS_EC_BAD_REQUEST;
        reply_error(p, c, t->rid, &err);
        return;
    }
    const char *bid = th_json_string(doc, "registrationId", NULL);
    if ((doc && !cJSON_IsObject(doc)) || (bid && strcasecmp(bid, d->registration_id))) {
        th_error_set(&err, TH_ERR_INVAL, TH_DPS_EC_BAD_REQUEST,
                     "the body must be {\"registrationId\": \"%s\", \"payload\": ...}",
                     d->registration_id);
        err.status = 400;
        reply_error(p, c, t->rid, &err);
        cJSON_Delete(doc);
        return;
    }
    int status =
        brk_dps_register(p, d->id_scope, d->registration_id, d->token, d->chain,
                         cJSON_GetObjectItemCaseSensitive(doc, "payload"), "mqtt", &body, &err);
    cJSON_Delete(doc);
    if (status == 202) {
        reply_json(p, c, 202, t->rid, TH_DPS_RETRY_AFTER_S, body);
    } else {
        reply_error(p, c, t->rid, &err);
    }
    cJSON_Delete(body);
}

static void on_status(struct brk_plugin *p, struct brk_conn *c, const struct th_dps_topic *t)
{
    struct th_error err = {0};
    cJSON *body = NULL;
    char op[96];
    const struct brk_dps_conn *d = c->dps;
    snprintf(op, sizeof op, "%.*s", (int)(t->operation_id.len < 95 ? t->operation_id.len : 95),
             t->operation_id.ptr);
    int status =
        brk_dps_operation_status(p, d->id_scope, d->registration_id, d->token, d->chain, op,
                                 &body, &err);
    if (status == 200) {
        reply_json(p, c, 200, t->rid, -1, body);
    } else {
        reply_error(p, c, t->rid, &err);
    }
    cJSON_Delete(body);
}

int brk_dps_on_message(struct brk_plugin *p, struct brk_conn *c,
                       const struct mosquitto_evt_message *ed)
{
    struct th_dps_topic t;
    if (ed->qos > 1 || th_dps_topic_parse(ed->topic, strlen(ed->topic), &t) != TH_OK) {
        brk_log(p, MOSQ_LOG_WARNING, "%s | dps connection closed | not a DPS request topic: '%s'",
                c->client_id, ed->topic);
        brk_event_emit(p, TH_JOURNAL_PROTOCOL_ERROR, NULL, NULL,
                       th_journal_data_protocol_error(ed->topic, "not a DPS request topic"));
        return MOSQ_ERR_PROTOCOL;
    }
    if (t.kind == TH_DPS_TOPIC_REGISTER_REQ) {
        on_register(p, c, &t, ed->payload, ed->payloadlen);
    } else {
        on_status(p, c, &t);
    }
    return MOSQ_ERR_ACL_DENIED; /* consumed, never routed */
}
