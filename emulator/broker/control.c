/*
 * control.c - the service control API on TH_CONTROL_TOPIC
 * (docs/control-api.md): twin reads and writes, direct-method invocation
 * with timeouts, cloud-to-device sends, identity reads and disconnects.
 * Modelled on mosquitto's dynamic-security plugin: a JSON list of commands
 * in, one JSON answer per command, delivered only to the caller, and a
 * specific error for every refusal. A command may carry the token of the
 * caller a front end acts for ("authorization"); th_auth_service
 * (core/auth.h) decides it before the command runs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "fault.h"
#include "json.h"
#include "th_limits.h"
#include "control.h"
#include "topic.h"
#include "util.h"

/* ---- response building ---- */

cJSON *brk_ctl_response_entry(const char *command, const cJSON *correlation)
{
    cJSON *r = cJSON_CreateObject();
    if (!r) {
        return NULL;
    }
    if (command) {
        cJSON_AddStringToObject(r, "command", command);
    } else {
        cJSON_AddNullToObject(r, "command");
    }
    if (correlation) {
        cJSON_AddItemToObject(r, "correlationData", cJSON_Duplicate(correlation, 1));
    }
    return r;
}

void brk_ctl_add_error_fields(cJSON *r, const struct th_error *err)
{
    cJSON_AddStringToObject(r, "error", err->message[0] ? err->message : th_result_str(err->result));
    cJSON_AddNumberToObject(r, "status", err->status ? err->status : 500);
    cJSON_AddNumberToObject(r, "errorCode", err->code ? err->code : 500001);
}

void brk_ctl_send_responses(const char *client_id, cJSON *responses)
{
    cJSON *root = cJSON_CreateObject();
    char *text;
    if (!root) {
        cJSON_Delete(responses);
        return;
    }
    cJSON_AddItemToObject(root, "responses", responses);
    text = th_json_print(root);
    cJSON_Delete(root);
    if (text) {
        brk_publish_to(client_id, TH_CONTROL_RESPONSE_TOPIC, text, strlen(text), 1);
        free(text);
    }
}

void brk_ctl_reply_ok(struct brk_cmd_ctx *x, cJSON *data)
{
    cJSON *r = brk_ctl_response_entry(x->name, cJSON_GetObjectItemCaseSensitive(x->cmd, "correlationData"));
    if (!r) {
        cJSON_Delete(data);
        return;
    }
    cJSON_AddItemToObject(r, "data", data ? data : cJSON_CreateObject());
    cJSON_AddItemToArray(x->responses, r);
}

void brk_ctl_reply_err(struct brk_cmd_ctx *x, const struct th_error *err)
{
    cJSON *r = brk_ctl_response_entry(x->name, cJSON_GetObjectItemCaseSensitive(x->cmd, "correlationData"));
    if (!r) {
        return;
    }
    brk_ctl_add_error_fields(r, err);
    cJSON_AddItemToArray(x->responses, r);
}

/* ---- argument helpers ---- */

bool brk_ctl_need_perm(struct brk_cmd_ctx *x, unsigned perm, const char *perm_name)
{
    struct th_error err = {0};
    if (x->caller->perms & perm) {
        return true;
    }
    th_error_set(&err, TH_ERR_AUTH, 401002, "policy '%s' does not grant %s, which '%s' needs",
                 x->caller->policy ? x->caller->policy : "", perm_name, x->name);
    brk_ctl_reply_err(x, &err);
    return false;
}

/*
 * Resolve deviceId/moduleId of the command, or reply with the error.
 * want_module: 0 = device only, 1 = module allowed.
 */
struct th_identity *brk_ctl_identity_or_reply(struct brk_cmd_ctx *x, bool module_allowed)
{
    struct th_error err = {0};
    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(x->cmd, "deviceId");
    const cJSON *jm = cJSON_GetObjectItemCaseSensitive(x->cmd, "moduleId");
    struct th_identity *id;
    if (!cJSON_IsString(jd) || !jd->valuestring[0]) {
        th_error_set(&err, TH_ERR_INVAL, 400004, "'%s' needs a string field 'deviceId'", x->name);
        brk_ctl_reply_err(x, &err);
        return NULL;
    }
    if (jm && !cJSON_IsNull(jm) && !cJSON_IsString(jm)) {
        th_error_set(&err, TH_ERR_INVAL, 400004, "'moduleId' must be a string or null");
        brk_ctl_reply_err(x, &err);
        return NULL;
    }
    const char *mod = cJSON_IsString(jm) ? jm->valuestring : NULL;
    if (mod && !module_allowed) {
        th_error_set(&err, TH_ERR_INVAL, 400004, "'%s' applies to devices only, not modules",
                     x->name);
        brk_ctl_reply_err(x, &err);
        return NULL;
    }
    if (!th_registry_find(x->p->reg, jd->valuestring, NULL)) {
        th_error_set(&err, TH_ERR_NOT_FOUND, 404001, "device '%s' is not registered",
                     jd->valuestring);
        brk_ctl_reply_err(x, &err);
        return NULL;
    }
    id = th_registry_find(x->p->reg, jd->valuestring, mod);
    if (!id) {
        th_error_set(&err, TH_ERR_NOT_FOUND, 404010, "module '%s' is not registered on device '%s'",
                     mod, jd->valuestring);
        brk_ctl_reply_err(x, &err);
        return NULL;
    }
    return id;
}

bool brk_ctl_string_or_reply(struct brk_cmd_ctx *x, const char *field, const char **out)
{
    struct th_error err = {0};
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(x->cmd, field);
    *out = NULL;
    if (!j || cJSON_IsNull(j)) {
        return true;
    }
    if (!cJSON_IsString(j)) {
        th_error_set(&err, TH_ERR_INVAL, 400004, "'%s' must be a string", field);
        brk_ctl_reply_err(x, &err);
        return false;
    }
    *out = j->valuestring;
    return true;
}

bool brk_ctl_int_or_reply(struct brk_cmd_ctx *x, const char *field, int def, int lo, int hi,
                               int *out)
{
    struct th_error err = {0};
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(x->cmd, field);
    if (!j || cJSON_IsNull(j)) {
        *out = def;
        return true;
    }
    /* The range first: converting a double outside long long's range is undefined
     * (found by fuzz_control with "pageSize": 1.2e26). */
    if (!cJSON_IsNumber(j) || j->valuedouble < lo || j->valuedouble > hi ||
        j->valuedouble != (double)(long long)j->valuedouble) {
        th_error_set(&err, TH_ERR_INVAL, 400004, "%s must be within [%d; %d].", field, lo, hi);
        brk_ctl_reply_err(x, &err);
        return false;
    }
    *out = (int)j->valuedouble;
    return true;
}

/* ---- twin commands ---- */

static void cmd_get_twin(struct brk_cmd_ctx *x)
{
    struct th_identity *id;
    if (!brk_ctl_need_perm(x, TH_PERM_SERVICE_CONNECT | TH_PERM_REGISTRY_READ, "ServiceConnect")) {
        return;
    }
    if (!(id = brk_ctl_identity_or_reply(x, true))) {
        return;
    }
    brk_ctl_reply_ok(x, th_identity_twin_json(id));
}

/*
 * updateTwin / replaceTwin: the write itself (If-Match, rules, etag step,
 * notification body) is core's th_twin_service_write; here it is persisted,
 * the notification sent to the device, the event emitted and the twin
 * returned.
 */
static void cmd_write_twin(struct brk_cmd_ctx *x, bool replace)
{
    struct th_error err = {0};
    struct th_identity *id;
    struct th_twin_write_result res;
    const char *etag;
    const cJSON *patch;

    if (!brk_ctl_need_perm(x, TH_PERM_SERVICE_CONNECT, "ServiceConnect")) {
        return;
    }
    if (!(id = brk_ctl_identity_or_reply(x, true)) || !brk_ctl_string_or_reply(x, "etag", &etag)) {
        return;
    }
    patch = cJSON_GetObjectItemCaseSensitive(x->cmd, "patch");
    if (!cJSON_IsObject(patch)) {
        th_error_set(&err, TH_ERR_INVAL, 400004,
                     "'%s' needs an object 'patch' like {\"properties\":{\"desired\":{...}}}",
                     x->name);
        brk_ctl_reply_err(x, &err);
        return;
    }
    struct th_twin_write req = {replace ? TH_TWIN_WRITE_REPLACE : TH_TWIN_WRITE_PATCH, patch, etag};
    if (th_twin_service_write(id->twin, &req, th_now_us(), &res, &err) != TH_OK) {
        brk_ctl_reply_err(x, &err);
        return;
    }
    brk_persist_device(x->p, id);
    if (res.notification) {
        bool delivered = brk_deliver_desired(x->p, id, res.notification, res.desired_version);
        brk_event_emit(x->p, TH_JOURNAL_DESIRED, id->device_id, id->module_id,
                      th_journal_data_desired(res.desired, res.desired_version, delivered));
        res.desired = NULL;
        brk_log(x->p, MOSQ_LOG_INFO, "%s%s%s | desired %s | version=%lld delivered=%d",
               id->device_id, id->module_id ? "/" : "", id->module_id ? id->module_id : "",
               replace ? "replace" : "patch", (long long)res.desired_version, delivered);
    }
    th_twin_write_result_free(&res);
    brk_ctl_reply_ok(x, th_identity_twin_json(id));
}

static void cmd_update_twin(struct brk_cmd_ctx *x)
{
    cmd_write_twin(x, false);
}

static void cmd_replace_twin(struct brk_cmd_ctx *x)
{
    cmd_write_twin(x, true);
}

/* ---- identities ---- */

static void cmd_get_device(struct brk_cmd_ctx *x)
{
    struct th_identity *id;
    if (!brk_ctl_need_perm(x, TH_PERM_REGISTRY_READ, "RegistryRead") ||
        !(id = brk_ctl_identity_or_reply(x, true))) {
        return;
    }
    brk_ctl_reply_ok(x, th_identity_to_json(id));
}

static void cmd_list_devices(struct brk_cmd_ctx *x)
{
    cJSON *arr;
    if (!brk_ctl_need_perm(x, TH_PERM_REGISTRY_READ, "RegistryRead")) {
        return;
    }
    arr = cJSON_CreateArray();
    for (struct th_identity *d = th_registry_next_device(x->p->reg, NULL); arr && d;
         d = th_registry_next_device(x->p->reg, d)) {
        cJSON_AddItemToArray(arr, th_identity_to_json(d));
    }
    brk_ctl_reply_ok(x, arr);
}

static void cmd_list_modules(struct brk_cmd_ctx *x)
{
    struct th_identity *d;
    cJSON *arr;
    if (!brk_ctl_need_perm(x, TH_PERM_REGISTRY_READ, "RegistryRead") ||
        !(d = brk_ctl_identity_or_reply(x, false))) {
        return;
    }
    arr = cJSON_CreateArray();
    for (size_t i = 0; arr && i < d->module_count; i++) {
        cJSON_AddItemToArray(arr, th_identity_to_json(d->modules[i]));
    }
    brk_ctl_reply_ok(x, arr);
}

static void cmd_disconnect(struct brk_cmd_ctx *x)
{
    struct th_identity *id;
    struct brk_idglue *g;
    cJSON *data;
    bool was = false;
    if (!brk_ctl_need_perm(x, TH_PERM_SERVICE_CONNECT, "ServiceConnect") ||
        !(id = brk_ctl_identity_or_reply(x, true))) {
        return;
    }
    g = id->glue;
    if (g && g->conn) {
        was = true;
        brk_conn_kick(x->p, g->conn);
    }
    data = cJSON_CreateObject();
    if (data) {
        cJSON_AddBoolToObject(data, "disconnected", was);
    }
    brk_ctl_reply_ok(x, data);
}

/* ---- acting for a caller: "authorization" ---- */

/* 400004 for a malformed "authorization" member; always false. */
static bool bad_authorization(struct brk_cmd_ctx *x, const char *what)
{
    struct th_error err = {0};
    th_error_set(&err, TH_ERR_INVAL, 400004,
                 "'authorization' %s: {\"token\": \"SharedAccessSignature ...\", \"rights\": "
                 "[\"RegistryRead\"|\"RegistryWrite\"|\"ServiceConnect\"|\"DeviceConnect\", ...], "
                 "\"operation\": text, \"moduleRegistryOf\": deviceId}",
                 what);
    brk_ctl_reply_err(x, &err);
    return false;
}

/*
 * When the command carries "authorization", decide its token with
 * th_auth_service and keep who it proved to be in *who (x->auth). False after
 * replying: 400004 for a malformed member, 401 / 401002 when the token does
 * not grant what the member asks for. The command still needs the
 * connection's own rights afterwards: a token narrows what a trusted caller
 * may do, it never widens it.
 */
static bool authorization_or_reply(struct brk_cmd_ctx *x, struct th_auth_service_decision *who)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(x->cmd, "authorization");
    if (!a) {
        return true;
    }
    if (!cJSON_IsObject(a)) {
        return bad_authorization(x, "must be an object");
    }
    const cJSON *jt = cJSON_GetObjectItemCaseSensitive(a, "token");
    const cJSON *jr = cJSON_GetObjectItemCaseSensitive(a, "rights");
    const cJSON *jo = cJSON_GetObjectItemCaseSensitive(a, "operation");
    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(a, "moduleRegistryOf");
    if ((jt && !cJSON_IsNull(jt) && !cJSON_IsString(jt)) || (jo && !cJSON_IsString(jo)) ||
        (jd && !cJSON_IsString(jd))) {
        return bad_authorization(x, "has a member of the wrong type");
    }
    if (jr && !cJSON_IsArray(jr)) {
        return bad_authorization(x, "needs 'rights' as an array");
    }
    char operation[128];
    struct th_auth_service_request rq = {
        .token = cJSON_IsString(jt) ? jt->valuestring : NULL,
        .operation = operation,
        .module_registry_of = jd ? jd->valuestring : NULL,
        .now_s = th_now_us() / 1000000,
        .skew_s = x->p->token_skew_s,
    };
    const cJSON *r;
    cJSON_ArrayForEach(r, jr)
    {
        unsigned bit = cJSON_IsString(r) ? th_auth_right(r->valuestring) : 0;
        if (!bit) {
            return bad_authorization(x, "names an unknown right");
        }
        if (!rq.right) {
            rq.right = r->valuestring;
        }
        rq.rights |= bit;
    }
    if (jo) {
        snprintf(operation, sizeof operation, "%s", jo->valuestring);
    } else {
        snprintf(operation, sizeof operation, "'%s'", x->name);
    }
    struct th_error err = {0};
    if (th_auth_service(x->p->reg, &rq, who, &err) != TH_OK) {
        brk_log(x->p, MOSQ_LOG_INFO, "service | caller refused | client=%s command=%s reason=%s",
               x->caller->client_id, x->name, err.message);
        brk_ctl_reply_err(x, &err);
        return false;
    }
    x->auth = who;
    return true;
}

/* Only the "authorization" decision: {"policy": name} or {"deviceId": id}. */
static void cmd_authorize(struct brk_cmd_ctx *x)
{
    struct th_error err = {0};
    cJSON *data;
    if (!x->auth) {
        th_error_set(&err, TH_ERR_INVAL, 400004,
                     "'authorize' decides the command's 'authorization' member; add one");
        brk_ctl_reply_err(x, &err);
        return;
    }
    data = cJSON_CreateObject();
    if (data && !(x->auth->policy
                      ? cJSON_AddStringToObject(data, "policy", x->auth->policy->name)
                      : cJSON_AddStringToObject(data, "deviceId", x->auth->device->device_id))) {
        cJSON_Delete(data);
        data = NULL;
    }
    if (!data) {
        th_error_set(&err, TH_ERR_NOMEM, 500001, "out of memory");
        brk_ctl_reply_err(x, &err);
        return;
    }
    brk_ctl_reply_ok(x, data);
}

/* ---- faults and marks (scenario support) ---- */

static void cmd_expire_token(struct brk_cmd_ctx *x)
{
    struct th_identity *id;
    struct brk_idglue *g;
    cJSON *data;
    bool was = false;
    if (!brk_ctl_need_perm(x, TH_PERM_SERVICE_CONNECT, "ServiceConnect") ||
        !(id = brk_ctl_identity_or_reply(x, true)) || !(g = brk_idglue_of(id))) {
        return;
    }
    if (g->conn) {
        /* The current token (and any older one) is refused from now on. */
        g->revoked_se = g->conn->token_expiry_s;
        was = true;
        brk_log(x->p, MOSQ_LOG_NOTICE, "%s | token expired (fault) | closing the connection",
               g->conn->client_id);
        brk_conn_kick(x->p, g->conn);
    }
    data = cJSON_CreateObject();
    if (data) {
        cJSON_AddBoolToObject(data, "disconnected", was);
    }
    brk_ctl_reply_ok(x, data);
}

static void cmd_inject_error(struct brk_cmd_ctx *x)
{
    struct th_error err = {0};
    struct th_identity *id;
    struct brk_idglue *g;
    const char *name;
    enum th_fault_op op;
    int status, count;
    if (!brk_ctl_need_perm(x, TH_PERM_SERVICE_CONNECT, "ServiceConnect") ||
        !(id = brk_ctl_identity_or_reply(x, true)) ||
        !brk_ctl_string_or_reply(x, "operation", &name) ||
        !brk_ctl_int_or_reply(x, "status", TH_FAULT_STATUS_DEFAULT, TH_FAULT_STATUS_MIN,
                             TH_FAULT_STATUS_MAX, &status) ||
        !brk_ctl_int_or_reply(x, "count", 1, 0, 1000000, &count) || !(g = brk_idglue_of(id))) {
        return;
    }
    if (th_fault_op_parse(name, &op, &err) != TH_OK) {
        brk_ctl_reply_err(x, &err);
        return;
    }
    if (op == TH_FAULT_TWIN_GET) {
        g->fault_get_status = status;
        g->fault_get_count = count;
    } else {
        g->fault_patch_status = status;
        g->fault_patch_count = count;
    }
    brk_ctl_reply_ok(x, NULL);
}

static void cmd_mark(struct brk_cmd_ctx *x)
{
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(x->cmd, "data");
    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(x->cmd, "deviceId");
    const cJSON *jm = cJSON_GetObjectItemCaseSensitive(x->cmd, "moduleId");
    cJSON *out;
    if (!brk_ctl_need_perm(x, TH_PERM_SERVICE_CONNECT, "ServiceConnect")) {
        return;
    }
    brk_event_emit(x->p, TH_JOURNAL_MARK, cJSON_IsString(jd) ? jd->valuestring : NULL,
                  cJSON_IsString(jm) ? jm->valuestring : NULL, th_journal_data_mark(data));
    out = cJSON_CreateObject();
    if (out) {
        cJSON_AddNumberToObject(out, "seq", (double)x->p->event_seq);
    }
    brk_ctl_reply_ok(x, out);
}

/* ---- dispatch ---- */

static const struct {
    const char *name;
    void (*fn)(struct brk_cmd_ctx *x);
} commands[] = {
    {"getTwin", cmd_get_twin},
    {"updateTwin", cmd_update_twin},
    {"replaceTwin", cmd_replace_twin},
    {"invokeMethod", brk_cmd_invoke_method},
    {"sendC2D", brk_cmd_send_c2d},
    {"getDevice", cmd_get_device},
    {"listDevices", cmd_list_devices},
    {"listModules", cmd_list_modules},
    {"disconnect", cmd_disconnect},
    {"expireToken", cmd_expire_token},
    {"injectError", cmd_inject_error},
    {"mark", cmd_mark},
    {"authorize", cmd_authorize},
};

static void dispatch(struct brk_cmd_ctx *x)
{
    struct th_error err = {0};
    bool handled = false;
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (!strcmp(commands[i].name, x->name)) {
            commands[i].fn(x);
            return;
        }
    }
    brk_cmd_registry_dispatch(x, &handled);
    if (handled) {
        return;
    }
    th_error_set(&err, TH_ERR_INVAL, 400004, "unknown command '%s'", x->name);
    brk_ctl_reply_err(x, &err);
}

int brk_on_control(int event, void *event_data, void *userdata)
{
    struct mosquitto_evt_control *ed = event_data;
    struct brk_plugin *p = userdata;
    struct brk_conn *c = brk_conn_find(p, ed->client);
    struct th_error err = {0};
    cJSON *root = NULL, *responses;
    const cJSON *cmds, *cmd;
    (void)event;

    if (!c || c->kind != BRK_CONN_SERVICE) {
        return MOSQ_ERR_ACL_DENIED;
    }
    responses = cJSON_CreateArray();
    if (!responses) {
        return MOSQ_ERR_NOMEM;
    }
    if (th_json_parse(ed->payload, ed->payloadlen, TH_JSON_MAX_INPUT_BYTES + 65536, 64, &root, &err) !=
            TH_OK ||
        !cJSON_IsArray(cmds = cJSON_GetObjectItemCaseSensitive(root, "commands"))) {
        if (root) {
            th_error_set(&err, TH_ERR_INVAL, 400004,
                         "the request needs a 'commands' array: {\"commands\":[{\"command\":...}]}");
        }
        cJSON *r = brk_ctl_response_entry(NULL, NULL);
        if (r) {
            brk_ctl_add_error_fields(r, &err);
            cJSON_AddItemToArray(responses, r);
        }
        brk_ctl_send_responses(c->client_id, responses);
        cJSON_Delete(root);
        return MOSQ_ERR_SUCCESS;
    }
    cJSON_ArrayForEach(cmd, cmds)
    {
        struct brk_cmd_ctx x = {p, c, cmd, NULL, responses, NULL};
        struct th_auth_service_decision who;
        const cJSON *jn = cJSON_GetObjectItemCaseSensitive(cmd, "command");
        if (!cJSON_IsObject(cmd) || !cJSON_IsString(jn)) {
            cJSON *r = brk_ctl_response_entry(NULL, cJSON_GetObjectItemCaseSensitive(cmd, "correlationData"));
            th_error_set(&err, TH_ERR_INVAL, 400004, "each command needs a string field 'command'");
            if (r) {
                brk_ctl_add_error_fields(r, &err);
                cJSON_AddItemToArray(responses, r);
            }
            continue;
        }
        x.name = jn->valuestring;
        if (authorization_or_reply(&x, &who)) {
            dispatch(&x);
        }
    }
    cJSON_Delete(root);
    if (cJSON_GetArraySize(responses) > 0) {
        brk_ctl_send_responses(c->client_id, responses);
    } else {
        cJSON_Delete(responses); /* only invokeMethod commands: each answers on its own */
    }
    return MOSQ_ERR_SUCCESS;
}
