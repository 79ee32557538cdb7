/*
 * control_dps.c - the provisioning service's control-API commands
 * (docs/control-api.md "Provisioning service"): enrollments and enrollment
 * groups (dpsPut, dpsGet, dpsDelete, dpsQuery), registration states, the
 * service's facts (dpsInfo), and the HTTPS device registration the gateway
 * forwards (dpsRegister, dpsOperationStatus). The gateway's DPS service API
 * passes its caller's token as "dpsToken", decided by th_dps_auth_service
 * against the provisioning service's own policy; the command still needs the
 * connection's rights, as every command does.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dps_front.h"
#include "x509.h"
#include "control.h"
#include "dps.h"
#include "json.h"
#include "util.h"

enum coll { COLL_NONE, COLL_ENROLLMENTS, COLL_GROUPS, COLL_REGISTRATIONS };

static void reply_dps_err(struct brk_cmd_ctx *x, th_result r, int status, int code, const char *msg)
{
    struct th_error err = {0};
    th_error_set(&err, r, code, "%s", msg);
    err.status = status;
    brk_ctl_reply_err(x, &err);
}

/* "collection" or reply 400; `regs_ok` allows "registrations". */
static enum coll collection_or_reply(struct brk_cmd_ctx *x, bool regs_ok)
{
    const char *c = th_json_string(x->cmd, "collection", NULL);
    if (c && !strcmp(c, "enrollments")) {
        return COLL_ENROLLMENTS;
    }
    if (c && !strcmp(c, "enrollmentGroups")) {
        return COLL_GROUPS;
    }
    if (c && regs_ok && !strcmp(c, "registrations")) {
        return COLL_REGISTRATIONS;
    }
    reply_dps_err(x, TH_ERR_INVAL, 400, TH_DPS_EC_BAD_REQUEST,
                  regs_ok ? "'collection' must be \"enrollments\", \"enrollmentGroups\" or "
                            "\"registrations\""
                          : "'collection' must be \"enrollments\" or \"enrollmentGroups\"");
    return COLL_NONE;
}

/* The rights of the connection, then the caller's "dpsToken" when given. */
static bool allowed_or_reply(struct brk_cmd_ctx *x, unsigned perm, const char *perm_name)
{
    struct th_error err = {0};
    if (!brk_ctl_need_perm(x, perm, perm_name)) {
        return false;
    }
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(x->cmd, "dpsToken");
    if (!t) {
        return true;
    }
    if (th_dps_auth_service(x->p->dps, cJSON_IsString(t) ? t->valuestring : NULL,
                            th_now_us() / 1000000, x->p->token_skew_s, &err) != TH_OK) {
        brk_ctl_reply_err(x, &err);
        return false;
    }
    return true;
}

static bool id_or_reply(struct brk_cmd_ctx *x, const char *field, const char **out)
{
    if (!brk_ctl_string_or_reply(x, field, out)) {
        return false;
    }
    if (!*out || !(*out)[0]) {
        char msg[96];
        snprintf(msg, sizeof msg, "'%s' is required", field);
        reply_dps_err(x, TH_ERR_INVAL, 400, TH_DPS_EC_BAD_REQUEST, msg);
        return false;
    }
    return true;
}

void brk_cmd_dps_info(struct brk_cmd_ctx *x)
{
    if (!brk_ctl_need_perm(x, TH_PERM_REGISTRY_READ, "RegistryRead")) {
        return;
    }
    cJSON *o = cJSON_CreateObject();
    if (o && (!cJSON_AddStringToObject(o, "idScope", x->p->dps->id_scope) ||
              !cJSON_AddStringToObject(o, "assignedHub", x->p->hub_host) ||
              !cJSON_AddStringToObject(o, "policy", TH_DPS_POLICY_NAME) ||
              !cJSON_AddNumberToObject(o, "enrollments", (double)x->p->dps->count))) {
        cJSON_Delete(o);
        o = NULL;
    }
    brk_ctl_reply_data(x, o);
}

void brk_cmd_dps_put(struct brk_cmd_ctx *x)
{
    struct th_error err = {0};
    struct th_dps_enrollment *e = NULL;
    const char *id, *etag;
    enum coll c = collection_or_reply(x, false);
    if (c == COLL_NONE || !allowed_or_reply(x, TH_PERM_REGISTRY_WRITE, "RegistryWrite") ||
        !id_or_reply(x, "id", &id) || !brk_ctl_string_or_reply(x, "etag", &etag)) {
        return;
    }
    if (th_dps_enrollment_put(x->p->dps, c == COLL_GROUPS, id,
                              cJSON_GetObjectItemCaseSensitive(x->cmd, "body"), etag, th_now_us(),
                              &e, &err) != TH_OK) {
        brk_ctl_reply_err(x, &err);
        return;
    }
    brk_dps_persist(x->p);
    brk_log(x->p, MOSQ_LOG_NOTICE, "dps | %s saved | id=%s",
            c == COLL_GROUPS ? "enrollment group" : "enrollment", e->id);
    brk_ctl_reply_data(x, th_dps_enrollment_json(x->p->dps, e));
}

void brk_cmd_dps_get(struct brk_cmd_ctx *x)
{
    const char *id;
    char msg[TH_MAX_ID_LEN + 64];
    enum coll c = collection_or_reply(x, true);
    if (c == COLL_NONE || !allowed_or_reply(x, TH_PERM_REGISTRY_READ, "RegistryRead") ||
        !id_or_reply(x, "id", &id)) {
        return;
    }
    if (c == COLL_REGISTRATIONS) {
        const struct th_dps_registration *r = th_dps_registration_find(x->p->dps, id);
        if (r) {
            brk_ctl_reply_data(x, th_dps_registration_json(r, x->p->hub_host));
            return;
        }
        snprintf(msg, sizeof msg, "no registration '%s'", id);
    } else {
        const struct th_dps_enrollment *e = th_dps_find(x->p->dps, c == COLL_GROUPS, id);
        if (e) {
            brk_ctl_reply_data(x, th_dps_enrollment_json(x->p->dps, e));
            return;
        }
        snprintf(msg, sizeof msg, "no %s '%s'",
                 c == COLL_GROUPS ? "enrollment group" : "individual enrollment", id);
    }
    reply_dps_err(x, TH_ERR_NOT_FOUND, 404, TH_DPS_EC_NOT_FOUND, msg);
}

void brk_cmd_dps_delete(struct brk_cmd_ctx *x)
{
    struct th_error err = {0};
    const char *id, *etag;
    enum coll c = collection_or_reply(x, true);
    if (c == COLL_NONE || !allowed_or_reply(x, TH_PERM_REGISTRY_WRITE, "RegistryWrite") ||
        !id_or_reply(x, "id", &id) || !brk_ctl_string_or_reply(x, "etag", &etag)) {
        return;
    }
    th_result r = c == COLL_REGISTRATIONS
                      ? th_dps_registration_delete(x->p->dps, id, etag, &err)
                      : th_dps_enrollment_delete(x->p->dps, c == COLL_GROUPS, id, etag, &err);
    if (r != TH_OK) {
        brk_ctl_reply_err(x, &err);
        return;
    }
    brk_dps_persist(x->p);
    brk_ctl_reply_ok(x, NULL);
}

void brk_cmd_dps_query(struct brk_cmd_ctx *x)
{
    struct th_error err = {0};
    const char *group_id = NULL, *cont = NULL;
    int page;
    cJSON *items = NULL;
    char *next = NULL;
    enum coll c = collection_or_reply(x, true);
    if (c == COLL_NONE || !allowed_or_reply(x, TH_PERM_REGISTRY_READ, "RegistryRead") ||
        !brk_ctl_string_or_reply(x, "groupId", &group_id) ||
        !brk_ctl_string_or_reply(x, "continuation", &cont) ||
        !brk_ctl_int_or_reply(x, "pageSize", 100, 1, 1000, &page)) {
        return;
    }
    const cJSON *spec = cJSON_GetObjectItemCaseSensitive(x->cmd, "query");
    cJSON *dflt = spec ? NULL : cJSON_CreateObject();
    if (dflt && !cJSON_AddStringToObject(dflt, "query", "SELECT *")) {
        cJSON_Delete(dflt);
        dflt = NULL;
    }
    if (c == COLL_REGISTRATIONS && !group_id) {
        cJSON_Delete(dflt);
        reply_dps_err(x, TH_ERR_INVAL, 400, TH_DPS_EC_BAD_REQUEST,
                      "a registrations query needs 'groupId' (the enrollment group)");
        return;
    }
    th_result r = th_dps_query(x->p->dps, c == COLL_REGISTRATIONS, c == COLL_GROUPS, group_id,
                               spec ? spec : dflt, page, cont, &items, &next, &err);
    cJSON_Delete(dflt);
    if (r != TH_OK) {
        brk_ctl_reply_err(x, &err);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddItemToObject(o, "items", items) ||
        !(next ? cJSON_AddStringToObject(o, "continuation", next)
               : cJSON_AddNullToObject(o, "continuation"))) {
        if (!o || !cJSON_GetObjectItemCaseSensitive(o, "items")) {
            cJSON_Delete(items);
        }
        cJSON_Delete(o);
        o = NULL;
    }
    free(next);
    brk_ctl_reply_data(x, o);
}

/* {"status": n, "body": body} (body taken). */
static cJSON *answer(int status, cJSON *body)
{
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddNumberToObject(o, "status", status) ||
        !cJSON_AddItemToObject(o, "body", body)) {
        cJSON_Delete(o);
        if (!o || !cJSON_GetObjectItemCaseSensitive(o, "body")) {
            cJSON_Delete(body);
        }
        return NULL;
    }
    return o;
}

/*
 * The request's "x509" member, when present: the gateway's front credential carrying the client
 * certificate of an HTTPS registration (core/dps_front.h). *chain NULL without one; false after
 * replying 401 when it was not made by the front for this registration.
 */
static bool x509_or_reply(struct brk_cmd_ctx *x, const char *scope, const char *rid,
                          struct th_x509_chain **chain)
{
    const char *cred = th_json_string(x->cmd, "x509", NULL);
    char user[TH_DPS_ID_SCOPE_MAX + TH_MAX_ID_LEN + 32], why[TH_X509_REASON_BUF];
    *chain = NULL;
    if (!cred) {
        return true;
    }
    th_result r = th_dps_https_cred_username(scope, rid, user, sizeof user);
    if (r == TH_OK) {
        r = brk_dps_open_cred(x->p, TH_DPS_HTTPS_CRED_CLIENT_ID, user, cred, chain, why,
                              sizeof why);
    } else {
        snprintf(why, sizeof why, "registration id too long");
    }
    if (r != TH_OK) {
        struct th_error err = {0};
        th_error_set(&err, TH_ERR_AUTH, TH_DPS_EC_UNAUTHORIZED, "%s", why);
        err.status = 401;
        brk_ctl_reply_err(x, &err);
        return false;
    }
    return true;
}

/* The token, required unless a certificate came (then NULL). */
static bool token_or_reply(struct brk_cmd_ctx *x, const struct th_x509_chain *chain,
                           const char **token)
{
    *token = NULL;
    return chain ? true : brk_ctl_string_or_reply(x, "token", token);
}

void brk_cmd_dps_register(struct brk_cmd_ctx *x)
{
    struct th_error err = {0};
    const char *scope, *rid, *token;
    struct th_x509_chain *chain = NULL;
    cJSON *body = NULL;
    if (!brk_ctl_need_perm(x, TH_PERM_REGISTRY_WRITE, "RegistryWrite") ||
        !id_or_reply(x, "idScope", &scope) || !id_or_reply(x, "registrationId", &rid) ||
        !x509_or_reply(x, scope, rid, &chain) || !token_or_reply(x, chain, &token)) {
        th_x509_chain_free(chain);
        return;
    }
    int status = brk_dps_register(x->p, scope, rid, token, chain,
                                  cJSON_GetObjectItemCaseSensitive(x->cmd, "payload"), "https",
                                  &body, &err);
    th_x509_chain_free(chain);
    if (status != 202) {
        brk_ctl_reply_err(x, &err);
        return;
    }
    brk_ctl_reply_data(x, answer(202, body));
}

void brk_cmd_dps_operation_status(struct brk_cmd_ctx *x)
{
    struct th_error err = {0};
    const char *scope, *rid, *token, *op;
    struct th_x509_chain *chain = NULL;
    cJSON *body = NULL;
    if (!brk_ctl_need_perm(x, TH_PERM_REGISTRY_READ, "RegistryRead") ||
        !id_or_reply(x, "idScope", &scope) || !id_or_reply(x, "registrationId", &rid) ||
        !id_or_reply(x, "operationId", &op) || !x509_or_reply(x, scope, rid, &chain) ||
        !token_or_reply(x, chain, &token)) {
        th_x509_chain_free(chain);
        return;
    }
    int status = brk_dps_operation_status(x->p, scope, rid, token, chain, op, &body, &err);
    th_x509_chain_free(chain);
    if (status != 200) {
        brk_ctl_reply_err(x, &err);
        return;
    }
    brk_ctl_reply_data(x, answer(200, body));
}
