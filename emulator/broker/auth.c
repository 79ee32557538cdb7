/*
 * auth.c - CONNECT authentication (MOSQ_EVT_BASIC_AUTH) and connection
 * bookkeeping (MOSQ_EVT_DISCONNECT) for the IoT Hub device protocol
 * (iothub-protocol.md sections 2 and 3.2-3.5).
 *
 * A device or module connects with client id "{d}" or "{d}/{m}", username
 * "{host}/{d}[/{m}]/?api-version=..." and a SAS token signed with its own
 * key (or with a DeviceConnect policy key, skn set). A service principal
 * connects with a username without '/', any client id that is not an
 * identity, and a token signed with a policy key (skn set). Which identities
 * a token's resource URI covers (ids matched ignoring case) and the check
 * against two keys are core rules (core/auth.h). Every refusal is CONNACK 5
 * (not authorised), logged with the reason and published as a `refused`
 * event.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "th_limits.h"
#include "auth.h"
#include "plugin.h"
#include "sas.h"
#include "topic.h"
#include "util.h"

struct auth_req {
    const char *client_id;
    const char *username;
    const char *password;
};

static int refuse(struct th_plugin *p, const struct auth_req *rq, const char *device_id,
                  const char *module_id, const char *reason)
{
    th_log(p, MOSQ_LOG_WARNING, "%s%s%s | connect refused | client=%s reason=%s",
           device_id ? device_id : "-", module_id ? "/" : "", module_id ? module_id : "",
           rq->client_id ? rq->client_id : "(none)", reason);
    th_event_emit(p, TH_JOURNAL_REFUSED, device_id, module_id,
                  th_journal_data_refused(rq->client_id, reason, rq->username));
    return MOSQ_ERR_AUTH;
}

/* Register (or replace) the connection record for this client pointer. */
static struct th_conn *conn_add(struct th_plugin *p, struct mosquitto *client,
                                const char *client_id, enum th_conn_kind kind)
{
    struct th_conn *c = th_conn_find(p, client);
    if (c) {
        HASH_DEL(p->conns, c);
        if (c->kind == TH_CONN_SERVICE) {
            p->service_conns--;
        }
        free(c->client_id);
        free(c->policy);
        free(c);
    }
    c = calloc(1, sizeof *c);
    if (!c) {
        return NULL;
    }
    c->client_id = strdup(client_id);
    if (!c->client_id) {
        free(c);
        return NULL;
    }
    c->client = client;
    c->kind = kind;
    HASH_ADD_PTR(p->conns, client, c);
    return c;
}

static bool verify_with_keys(const struct th_sas_token *tok, const char *k1, const char *k2,
                             int64_t now_s, int64_t skew, struct th_error *err)
{
    return th_auth_verify_keys(tok, k1, k2, now_s, skew, err) == TH_OK;
}

static int auth_service(struct th_plugin *p, struct mosquitto *client, const struct auth_req *rq,
                        const struct th_sas_token *tok, const struct th_sas_resource *res,
                        int64_t now_s)
{
    struct th_error err = {0};
    char reason[320];
    const struct th_policy *pol;
    struct th_conn *c;

    if (!tok->skn.ptr) {
        return refuse(p, rq, NULL, NULL,
                      "a service connection (username without '/') needs a shared access policy "
                      "token with skn");
    }
    pol = th_registry_policy(p->reg, tok->skn.ptr, tok->skn.len);
    if (!pol) {
        snprintf(reason, sizeof reason, "unknown shared access policy '%.*s'", (int)tok->skn.len,
                 tok->skn.ptr);
        return refuse(p, rq, NULL, NULL, reason);
    }
    if (res->device_id[0]) {
        return refuse(p, rq, NULL, NULL,
                      "a service token's sr must be the hub host name, not a device resource");
    }
    if (!verify_with_keys(tok, pol->primary_key, pol->secondary_key, now_s, p->token_skew_s,
                          &err)) {
        return refuse(p, rq, NULL, NULL, err.message);
    }
    if (!(pol->perms & (TH_PERM_SERVICE_CONNECT | TH_PERM_REGISTRY_READ | TH_PERM_REGISTRY_WRITE))) {
        snprintf(reason, sizeof reason, "policy '%s' has no service rights", pol->name);
        return refuse(p, rq, NULL, NULL, reason);
    }
    /* A service client must not take over a device's session. */
    const char *slash = strchr(rq->client_id, '/');
    struct th_identity *clash =
        slash ? th_registry_find_n(p->reg, rq->client_id, (size_t)(slash - rq->client_id),
                                   slash + 1, strlen(slash + 1))
              : th_registry_find(p->reg, rq->client_id, NULL);
    if (clash) {
        return refuse(p, rq, NULL, NULL,
                      "a service connection's client id must not be a registered identity");
    }
    char *policy = strdup(pol->name);
    if (!policy) {
        return MOSQ_ERR_NOMEM;
    }
    c = conn_add(p, client, rq->client_id, TH_CONN_SERVICE);
    if (!c) {
        free(policy);
        return MOSQ_ERR_NOMEM;
    }
    c->perms = pol->perms;
    p->service_conns++;
    c->policy = policy;
    c->token_expiry_s = tok->expiry;
    th_log(p, MOSQ_LOG_INFO, "service | connected | client=%s policy=%s", rq->client_id,
           pol->name);
    return MOSQ_ERR_SUCCESS;
}

static int auth_device(struct th_plugin *p, struct mosquitto *client, const struct auth_req *rq,
                       const struct th_sas_token *tok, const struct th_sas_resource *res,
                       int64_t now_s)
{
    struct th_username un;
    struct th_error err = {0};
    char dev[TH_MAX_ID_LEN + 1], mod[TH_MAX_ID_LEN + 1], expect_cid[2 * TH_MAX_ID_LEN + 2];
    char reason[800];
    struct th_identity *id;
    struct th_conn *c;
    struct th_idglue *g;

    if (th_username_parse(rq->username, strlen(rq->username), &un, &err) != TH_OK) {
        return refuse(p, rq, NULL, NULL, err.message);
    }
    if (un.device_id.len > TH_MAX_ID_LEN || un.module_id.len > TH_MAX_ID_LEN) {
        return refuse(p, rq, NULL, NULL, "device or module id longer than 128 characters");
    }
    snprintf(dev, sizeof dev, "%.*s", (int)un.device_id.len, un.device_id.ptr);
    snprintf(mod, sizeof mod, "%.*s", (int)un.module_id.len, un.module_id.ptr ? un.module_id.ptr : "");
    const char *modp = un.module_id.ptr ? mod : NULL;

    if (modp) {
        snprintf(expect_cid, sizeof expect_cid, "%s/%s", dev, mod);
    } else {
        snprintf(expect_cid, sizeof expect_cid, "%s", dev);
    }
    if (strcmp(rq->client_id, expect_cid) != 0) {
        snprintf(reason, sizeof reason,
                 "client id '%s' does not match the identity '%s' named in the username",
                 rq->client_id, expect_cid);
        return refuse(p, rq, dev, modp, reason);
    }
    if (!th_slice_ieq(un.host.ptr, un.host.len, res->host, strlen(res->host))) {
        snprintf(reason, sizeof reason,
                 "SAS token host '%s' does not match the username's host '%.*s'", res->host,
                 (int)un.host.len, un.host.ptr);
        return refuse(p, rq, dev, modp, reason);
    }
    id = th_registry_find(p->reg, dev, modp);
    if (!id) {
        snprintf(reason, sizeof reason, "%s '%s' is not registered", modp ? "module" : "device",
                 expect_cid);
        return refuse(p, rq, dev, modp, reason);
    }
    struct th_identity *device = id->parent ? id->parent : id;
    if (!device->enabled) {
        snprintf(reason, sizeof reason, "device '%s' is disabled", dev);
        return refuse(p, rq, dev, modp, reason);
    }

    if (tok->skn.ptr) {
        /* Token service / gateway: a DeviceConnect policy signs for the device. */
        const struct th_policy *pol = th_registry_policy(p->reg, tok->skn.ptr, tok->skn.len);
        if (!pol || !(pol->perms & TH_PERM_DEVICE_CONNECT)) {
            snprintf(reason, sizeof reason, "policy '%.*s' is unknown or lacks DeviceConnect",
                     (int)tok->skn.len, tok->skn.ptr);
            return refuse(p, rq, dev, modp, reason);
        }
        if (th_auth_connect_scope(res, true, dev, modp, &err) != TH_OK) {
            return refuse(p, rq, dev, modp, err.message);
        }
        if (!verify_with_keys(tok, pol->primary_key, pol->secondary_key, now_s, p->token_skew_s,
                              &err)) {
            return refuse(p, rq, dev, modp, err.message);
        }
    } else {
        if (th_auth_connect_scope(res, false, dev, modp, &err) != TH_OK) {
            return refuse(p, rq, dev, modp, err.message);
        }
        if (!verify_with_keys(tok, id->primary_key, id->secondary_key, now_s, p->token_skew_s,
                              &err)) {
            return refuse(p, rq, dev, modp, err.message);
        }
    }

    g = th_idglue_of(id);
    if (g && g->revoked_se && tok->expiry <= g->revoked_se) {
        return refuse(p, rq, dev, modp, "SAS token expired (revoked by an expireToken fault); "
                                        "connect with a new token");
    }
    c = conn_add(p, client, rq->client_id, TH_CONN_DEVICE);
    if (!c || !g) {
        return MOSQ_ERR_NOMEM;
    }
    c->identity = id;
    c->token_expiry_s = tok->expiry;
    if (g->conn && g->conn != c) {
        /* Take-over: the old connection's DISCONNECT follows; it no longer owns the identity. */
        g->conn->identity = NULL;
        th_log(p, MOSQ_LOG_NOTICE, "%s | takeover | a new connection replaces the old one",
               expect_cid);
    }
    g->conn = c;
    if (mosquitto_client_clean_session(client)) {
        g->sub_twin_res = g->sub_desired = g->sub_methods = g->sub_c2d = false;
    }
    free(id->model_id);
    id->model_id = NULL;
    if (un.model_id.ptr) {
        char decoded[512];
        size_t n;
        if (th_pct_decode(un.model_id.ptr, un.model_id.len, false, decoded, sizeof decoded, &n) ==
            TH_OK) {
            id->model_id = strdup(decoded);
        }
    }
    int64_t now_us = th_now_us();
    th_identity_set_connected(id, true, now_us);

    char api[512], ctype[512];
    size_t n;
    snprintf(api, sizeof api, "%.*s", (int)un.api_version.len,
             un.api_version.ptr ? un.api_version.ptr : "");
    struct th_journal_connected ev = {
        .client_id = rq->client_id,
        .api_version = un.api_version.ptr ? api : NULL,
        .client_type = un.client_type.ptr && th_pct_decode(un.client_type.ptr, un.client_type.len,
                                                           false, ctype, sizeof ctype, &n) == TH_OK
                           ? ctype
                           : NULL,
        .model_id = id->model_id,
        .auth = tok->skn.ptr ? TH_JOURNAL_AUTH_SAS_POLICY : TH_JOURNAL_AUTH_SAS,
        .clean_session = mosquitto_client_clean_session(client),
    };
    th_event_emit(p, TH_JOURNAL_CONNECTED, id->device_id, id->module_id,
                  th_journal_data_connected(&ev));
    th_log(p, MOSQ_LOG_NOTICE, "%s | connected | api-version=%.*s", expect_cid,
           (int)un.api_version.len, un.api_version.ptr ? un.api_version.ptr : "");
    if (!modp && g->sub_c2d) {
        /* Persistent session: the C2D subscription survives, so deliver what queued up. */
        th_c2d_flush(p, id);
    }
    return MOSQ_ERR_SUCCESS;
}

int th_on_basic_auth(int event, void *event_data, void *userdata)
{
    struct mosquitto_evt_basic_auth *ed = event_data;
    struct th_plugin *p = userdata;
    struct auth_req rq = {mosquitto_client_id(ed->client), ed->username, ed->password};
    struct th_sas_token tok;
    struct th_sas_resource res;
    struct th_error err = {0};
    int64_t now_s = th_now_us() / 1000000;
    (void)event;

    if (mosquitto_client_protocol_version(ed->client) != 4) {
        return refuse(p, &rq, NULL, NULL,
                      "IoT Hub accepts MQTT 3.1.1 only (protocol level 4); this client used another "
                      "version");
    }
    if (!rq.client_id || !rq.client_id[0]) {
        return refuse(p, &rq, NULL, NULL, "an empty client id is not accepted");
    }
    if (!rq.username || !rq.username[0]) {
        return refuse(p, &rq, NULL, NULL, "no username; IoT Hub needs {host}/{deviceId}/?api-version=...");
    }
    if (!rq.password || !rq.password[0]) {
        return refuse(p, &rq, NULL, NULL,
                      "no password; send a SAS token (X.509 authentication is not supported)");
    }
    if (th_sas_parse(rq.password, strlen(rq.password), &tok, &err) != TH_OK ||
        th_sas_resource(&tok, &res, &err) != TH_OK) {
        return refuse(p, &rq, NULL, NULL, err.message);
    }
    if (!strchr(rq.username, '/')) {
        return auth_service(p, ed->client, &rq, &tok, &res, now_s);
    }
    return auth_device(p, ed->client, &rq, &tok, &res, now_s);
}

int th_on_disconnect(int event, void *event_data, void *userdata)
{
    struct mosquitto_evt_disconnect *ed = event_data;
    struct th_plugin *p = userdata;
    struct th_conn *c = th_conn_find(p, ed->client);
    (void)event;
    if (!c) {
        return MOSQ_ERR_SUCCESS; /* refused or never authenticated */
    }
    HASH_DEL(p->conns, c);
    if (c->kind == TH_CONN_DEVICE && c->identity) {
        struct th_identity *id = c->identity;
        struct th_idglue *g = id->glue;
        if (g && g->conn == c) {
            g->conn = NULL;
            th_identity_set_connected(id, false, th_now_us());
            th_log(p, MOSQ_LOG_NOTICE, "%s%s%s | disconnected", id->device_id,
                   id->module_id ? "/" : "", id->module_id ? id->module_id : "");
            th_event_emit(p, TH_JOURNAL_DISCONNECTED, id->device_id, id->module_id, NULL);
            th_methods_identity_offline(p, id);
        }
    } else if (c->kind == TH_CONN_SERVICE) {
        p->service_conns--;
        th_log(p, MOSQ_LOG_INFO, "service | disconnected | client=%s", c->client_id);
    }
    free(c->client_id);
    free(c->policy);
    free(c);
    return MOSQ_ERR_SUCCESS;
}

void th_scan_expired_tokens(struct th_plugin *p, int64_t now_s)
{
    struct th_conn *c, *tmp;
    HASH_ITER(hh, p->conns, c, tmp)
    {
        if (!c->kicked && c->token_expiry_s + p->token_skew_s < now_s) {
            c->kicked = true;
            th_log(p, MOSQ_LOG_NOTICE, "%s | token expired | closing the connection", c->client_id);
            mosquitto_kick_client_by_clientid(c->client_id, false);
        }
    }
}
