/*
 * auth.c - CONNECT authentication (MOSQ_EVT_BASIC_AUTH) for the IoT Hub
 * device protocol (iothub-protocol.md sections 2 and 3.2-3.5); what happens
 * when the connection ends is conn.c.
 *
 * Glue only: the decision (device, module or service principal, or refused
 * with a reason) is th_auth_connect (core/auth.h). This file reads the
 * CONNECT, applies the decision (a connection record and the identity
 * online, conn.c; the model id; the expireToken fault) and reports it:
 * every refusal is CONNACK 5 (not authorised), logged with the reason and
 * published as a `refused` event; every device connection a `connected`
 * event.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "th_limits.h"
#include "auth.h"
#include "plugin.h"
#include "topic.h"
#include "util.h"

struct auth_req {
    const char *client_id;
    const char *username;
    const char *password;
};

static int refuse(struct brk_plugin *p, const struct auth_req *rq, const char *device_id,
                  const char *module_id, const char *reason)
{
    brk_log(p, MOSQ_LOG_WARNING, "%s%s%s | connect refused | client=%s reason=%s",
            device_id ? device_id : "-", module_id ? "/" : "", module_id ? module_id : "",
            rq->client_id ? rq->client_id : "(none)", reason);
    brk_event_emit(p, TH_JOURNAL_REFUSED, device_id, module_id,
                   th_journal_data_refused(rq->client_id, reason, rq->username));
    return MOSQ_ERR_AUTH;
}

static int accept_service(struct brk_plugin *p, struct mosquitto *client, const struct auth_req *rq,
                          const struct th_auth_connect_decision *d)
{
    const struct th_policy *pol = d->policy;
    char *policy = strdup(pol->name);
    if (!policy) {
        return MOSQ_ERR_NOMEM;
    }
    struct brk_conn *c = brk_conn_add(p, client, rq->client_id, BRK_CONN_SERVICE);
    if (!c) {
        free(policy);
        return MOSQ_ERR_NOMEM;
    }
    c->perms = pol->perms;
    c->policy = policy;
    if (!mosquitto_client_clean_session(client)) {
        /* A kept session may hold an events subscription the hub never saw (acl.c). */
        c->events_sub = true;
        p->event_subs++;
    }
    brk_conn_set_token_expiry(p, c, d->token_expiry_s);
    brk_log(p, MOSQ_LOG_INFO, "service | connected | client=%s policy=%s", rq->client_id,
            pol->name);
    return MOSQ_ERR_SUCCESS;
}

static int accept_identity(struct brk_plugin *p, struct mosquitto *client,
                           const struct auth_req *rq, const struct th_auth_connect_decision *d)
{
    const struct th_username *un = &d->username;
    struct th_identity *id = d->identity;
    const char *modp = d->has_module ? d->module_id : NULL;
    struct brk_idglue *g = brk_idglue_of(id);
    struct brk_conn *c;

    if (g && g->revoked_se && !d->x509 && d->token_expiry_s <= g->revoked_se) {
        return refuse(p, rq, d->device_id, modp,
                      "SAS token expired (revoked by an expireToken fault); "
                      "connect with a new token");
    }
    if (!g || !(c = brk_conn_add(p, client, rq->client_id, BRK_CONN_DEVICE))) {
        return MOSQ_ERR_NOMEM;
    }
    c->x509 = d->x509;
    brk_conn_set_token_expiry(p, c, d->token_expiry_s);
    brk_conn_device_online(p, c, id, g, mosquitto_client_clean_session(client));
    free(id->model_id);
    id->model_id = NULL;
    if (un->model_id.ptr) {
        char decoded[512];
        size_t n;
        if (th_pct_decode(un->model_id.ptr, un->model_id.len, false, decoded, sizeof decoded, &n) ==
            TH_OK) {
            id->model_id = strdup(decoded);
        }
    }

    cJSON *data = NULL;
    if (brk_events_wanted(p)) {
        char api[512], ctype[512];
        size_t n;
        snprintf(api, sizeof api, "%.*s", (int)un->api_version.len,
                 un->api_version.ptr ? un->api_version.ptr : "");
        struct th_journal_connected ev = {
            .client_id = rq->client_id,
            .api_version = un->api_version.ptr ? api : NULL,
            .client_type =
                un->client_type.ptr && th_pct_decode(un->client_type.ptr, un->client_type.len,
                                                     false, ctype, sizeof ctype, &n) == TH_OK
                    ? ctype
                    : NULL,
            .model_id = id->model_id,
            .auth = d->x509     ? TH_JOURNAL_AUTH_X509
                    : d->policy ? TH_JOURNAL_AUTH_SAS_POLICY
                                : TH_JOURNAL_AUTH_SAS,
            .clean_session = mosquitto_client_clean_session(client),
        };
        data = th_journal_data_connected(&ev);
    }
    /* Counted in the event sequence either way; built only when someone can get it. */
    brk_event_emit(p, TH_JOURNAL_CONNECTED, id->device_id, id->module_id, data);
    brk_log(p, MOSQ_LOG_NOTICE, "%s | connected | api-version=%.*s auth=%s", rq->client_id,
            (int)un->api_version.len, un->api_version.ptr ? un->api_version.ptr : "",
            d->x509 ? "x509" : "sas");
    if (!modp && g->sub_c2d) {
        /* Persistent session: the C2D subscription survives, so deliver what queued up. */
        brk_deliver_c2d(p, id);
    }
    return MOSQ_ERR_SUCCESS;
}

int brk_on_basic_auth(int event, void *event_data, void *userdata)
{
    struct mosquitto_evt_basic_auth *ed = event_data;
    struct brk_plugin *p = userdata;
    struct auth_req rq = {mosquitto_client_id(ed->client), ed->username, ed->password};
    struct th_auth_connect_facts facts = {
        .protocol_version = mosquitto_client_protocol_version(ed->client),
        .client_id = rq.client_id,
        .username = rq.username,
        .password = rq.password,
        .now_s = th_now_us() / 1000000,
        .skew_s = p->token_skew_s,
    };
    struct th_auth_connect_decision d;
    struct th_x509_chain *chain = NULL;
    (void)event;

    if (brk_dps_is_username(rq.username)) {
        return brk_dps_on_connect(p, ed->client, rq.client_id, rq.username, rq.password);
    }
    /* A password made by our TLS front carries the client's certificate (core/x509.h). */
    if (th_x509_is_cred(rq.password)) {
        char why[TH_X509_REASON_BUF];
        th_result r =
            th_x509_cred_open(p->has_front_secret ? p->front_secret : NULL,
                              p->has_front_secret ? sizeof p->front_secret : 0, rq.client_id,
                              rq.username, rq.password, &chain, why, sizeof why);
        if (r == TH_ERR_NOMEM) {
            return MOSQ_ERR_NOMEM;
        }
        if (r != TH_OK) {
            return refuse(p, &rq, NULL, NULL, why);
        }
        facts.x509 = chain;
        facts.cas = p->cas;
    }
    th_result r = th_auth_connect(p->reg, &facts, &d);
    th_x509_chain_free(chain);
    if (r != TH_OK) {
        return refuse(p, &rq, d.device_id[0] ? d.device_id : NULL,
                      d.has_module ? d.module_id : NULL, d.reason);
    }
    if (d.kind == TH_AUTH_SERVICE) {
        return accept_service(p, ed->client, &rq, &d);
    }
    return accept_identity(p, ed->client, &rq, &d);
}
