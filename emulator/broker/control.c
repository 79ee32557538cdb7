/*
 * control.c - the service control API on $CONTROL/twinhub/v1
 * (docs/control-api.md): twin reads and writes, direct-method invocation
 * with timeouts, cloud-to-device sends, identity reads and disconnects.
 * Modelled on mosquitto's dynamic-security plugin: a JSON list of commands
 * in, one JSON answer per command, delivered only to the caller, and a
 * specific error for every refusal.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "th_limits.h"
#include "control.h"
#include "topic.h"
#include "util.h"

/* ---- response building ---- */

cJSON *th_ctl_response_entry(const char *command, const cJSON *correlation)
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

void th_ctl_add_error_fields(cJSON *r, const struct th_error *err)
{
    cJSON_AddStringToObject(r, "error", err->message[0] ? err->message : th_result_str(err->result));
    cJSON_AddNumberToObject(r, "status", err->status ? err->status : 500);
    cJSON_AddNumberToObject(r, "errorCode", err->code ? err->code : 500001);
}

void th_ctl_send_responses(const char *client_id, cJSON *responses)
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
        th_publish_to(client_id, TH_CONTROL_RESPONSE_TOPIC, text, strlen(text), 1);
        free(text);
    }
}

void th_ctl_reply_ok(struct cmd_ctx *x, cJSON *data)
{
    cJSON *r = th_ctl_response_entry(x->name, cJSON_GetObjectItemCaseSensitive(x->cmd, "correlationData"));
    if (!r) {
        cJSON_Delete(data);
        return;
    }
    cJSON_AddItemToObject(r, "data", data ? data : cJSON_CreateObject());
    cJSON_AddItemToArray(x->responses, r);
}

void th_ctl_reply_err(struct cmd_ctx *x, const struct th_error *err)
{
    cJSON *r = th_ctl_response_entry(x->name, cJSON_GetObjectItemCaseSensitive(x->cmd, "correlationData"));
    if (!r) {
        return;
    }
    th_ctl_add_error_fields(r, err);
    cJSON_AddItemToArray(x->responses, r);
}

/* ---- argument helpers ---- */

bool th_ctl_need_perm(struct cmd_ctx *x, unsigned perm, const char *perm_name)
{
    struct th_error err = {0};
    if (x->caller->perms & perm) {
        return true;
    }
    th_error_set(&err, TH_ERR_AUTH, 401002, "policy '%s' does not grant %s, which '%s' needs",
                 x->caller->policy ? x->caller->policy : "", perm_name, x->name);
    th_ctl_reply_err(x, &err);
    return false;
}

/*
 * Resolve deviceId/moduleId of the command, or reply with the error.
 * want_module: 0 = device only, 1 = module allowed.
 */
struct th_identity *th_ctl_identity_or_reply(struct cmd_ctx *x, bool module_allowed)
{
    struct th_error err = {0};
    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(x->cmd, "deviceId");
    const cJSON *jm = cJSON_GetObjectItemCaseSensitive(x->cmd, "moduleId");
    struct th_identity *id;
    if (!cJSON_IsString(jd) || !jd->valuestring[0]) {
        th_error_set(&err, TH_ERR_INVAL, 400004, "'%s' needs a string field 'deviceId'", x->name);
        th_ctl_reply_err(x, &err);
        return NULL;
    }
    if (jm && !cJSON_IsNull(jm) && !cJSON_IsString(jm)) {
        th_error_set(&err, TH_ERR_INVAL, 400004, "'moduleId' must be a string or null");
        th_ctl_reply_err(x, &err);
        return NULL;
    }
    const char *mod = cJSON_IsString(jm) ? jm->valuestring : NULL;
    if (mod && !module_allowed) {
        th_error_set(&err, TH_ERR_INVAL, 400004, "'%s' applies to devices only, not modules",
                     x->name);
        th_ctl_reply_err(x, &err);
        return NULL;
    }
    if (!th_registry_find(x->p->reg, jd->valuestring, NULL)) {
        th_error_set(&err, TH_ERR_NOT_FOUND, 404001, "device '%s' is not registered",
                     jd->valuestring);
        th_ctl_reply_err(x, &err);
        return NULL;
    }
    id = th_registry_find(x->p->reg, jd->valuestring, mod);
    if (!id) {
        th_error_set(&err, TH_ERR_NOT_FOUND, 404010, "module '%s' is not registered on device '%s'",
                     mod, jd->valuestring);
        th_ctl_reply_err(x, &err);
        return NULL;
    }
    return id;
}

bool th_ctl_string_or_reply(struct cmd_ctx *x, const char *field, const char **out)
{
    struct th_error err = {0};
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(x->cmd, field);
    *out = NULL;
    if (!j || cJSON_IsNull(j)) {
        return true;
    }
    if (!cJSON_IsString(j)) {
        th_error_set(&err, TH_ERR_INVAL, 400004, "'%s' must be a string", field);
        th_ctl_reply_err(x, &err);
        return false;
    }
    *out = j->valuestring;
    return true;
}

bool th_ctl_int_or_reply(struct cmd_ctx *x, const char *field, int def, int lo, int hi,
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
        th_ctl_reply_err(x, &err);
        return false;
    }
    *out = (int)j->valuedouble;
    return true;
}

/* ---- twin commands ---- */

static void cmd_get_twin(struct cmd_ctx *x)
{
    struct th_identity *id;
    if (!th_ctl_need_perm(x, TH_PERM_SERVICE_CONNECT | TH_PERM_REGISTRY_READ, "ServiceConnect")) {
        return;
    }
    if (!(id = th_ctl_identity_or_reply(x, true))) {
        return;
    }
    th_ctl_reply_ok(x, th_identity_twin_json(id));
}

static bool etag_matches(const char *want, const char *have)
{
    size_t n;
    if (!want || !strcmp(want, "*") || !strcmp(want, "\"*\"")) {
        return true;
    }
    n = strlen(want);
    if (n >= 2 && want[0] == '"' && want[n - 1] == '"') {
        return strlen(have) == n - 2 && !strncmp(want + 1, have, n - 2);
    }
    return !strcmp(want, have);
}

static void cmd_write_twin(struct cmd_ctx *x, bool replace)
{
    struct th_error err = {0};
    struct th_identity *id;
    const char *etag;
    const cJSON *patch;
    cJSON *tags = NULL, *desired = NULL, *notification = NULL;
    struct th_twin *work = NULL;
    th_result r = TH_OK;
    char have[16];

    if (!th_ctl_need_perm(x, TH_PERM_SERVICE_CONNECT, "ServiceConnect")) {
        return;
    }
    if (!(id = th_ctl_identity_or_reply(x, true)) || !th_ctl_string_or_reply(x, "etag", &etag)) {
        return;
    }
    patch = cJSON_GetObjectItemCaseSensitive(x->cmd, "patch");
    if (!cJSON_IsObject(patch)) {
        th_error_set(&err, TH_ERR_INVAL, 400004,
                     "'%s' needs an object 'patch' like {\"properties\":{\"desired\":{...}}}",
                     x->name);
        th_ctl_reply_err(x, &err);
        return;
    }
    th_twin_etag(id->twin, have);
    if (!etag_matches(etag, have)) {
        th_error_set(&err, TH_ERR_PRECONDITION, 412001,
                     "etag %s does not match the twin's current etag \"%s\"", etag, have);
        th_ctl_reply_err(x, &err);
        return;
    }
    const cJSON *jt = cJSON_GetObjectItemCaseSensitive(patch, "tags");
    const cJSON *jp = cJSON_GetObjectItemCaseSensitive(patch, "properties");
    const cJSON *jd = jp ? cJSON_GetObjectItemCaseSensitive(jp, "desired") : NULL;
    if (jp && cJSON_GetObjectItemCaseSensitive(jp, "reported")) {
        r = th_error_set(&err, TH_ERR_INVAL, 400004,
                         "reported properties are written by the device only; remove "
                         "properties.reported from the patch");
    } else if ((jt && !cJSON_IsObject(jt) && !(replace && cJSON_IsNull(jt))) ||
               (jd && !cJSON_IsObject(jd) && !(replace && cJSON_IsNull(jd)))) {
        r = th_error_set(&err, TH_ERR_INVAL, 400004, "'tags' and 'properties.desired' must be objects");
    }
    if (r == TH_OK && !(work = th_twin_clone(id->twin))) {
        r = th_error_set(&err, TH_ERR_NOMEM, 500001, "out of memory");
    }
    if (r == TH_OK && jt && cJSON_IsObject(jt)) {
        tags = cJSON_Duplicate(jt, 1);
        th_twin_strip_readonly(tags);
        r = replace ? th_twin_replace_tags(work, tags, &err) : th_twin_patch_tags(work, tags, &err);
    }
    if (r == TH_OK && jd && cJSON_IsObject(jd)) {
        desired = cJSON_Duplicate(jd, 1);
        th_twin_strip_readonly(desired);
        r = replace ? th_twin_replace_desired(work, desired, th_now_us(), &notification, &err)
                    : th_twin_patch_desired(work, desired, th_now_us(), &notification, &err);
    }
    cJSON_Delete(tags);
    if (r != TH_OK) {
        cJSON_Delete(desired);
        th_twin_free(work);
        th_ctl_reply_err(x, &err);
        return;
    }
    if (jt && jd && cJSON_IsObject(jt) && cJSON_IsObject(jd)) {
        /* Tags and desired in one request are one service write: one etag step. */
        work->etag_counter = id->twin->etag_counter + 1;
    }
    th_twin_free(id->twin);
    id->twin = work;
    th_persist_device(x->p, id);
    if (notification) {
        bool delivered = th_desired_notify(x->p, id, notification, id->twin->desired_version);
        th_event_emit(x->p, TH_JOURNAL_DESIRED, id->device_id, id->module_id,
                      th_journal_data_desired(desired, id->twin->desired_version, delivered));
        desired = NULL;
        th_log(x->p, MOSQ_LOG_INFO, "%s%s%s | desired %s | version=%lld delivered=%d",
               id->device_id, id->module_id ? "/" : "", id->module_id ? id->module_id : "",
               replace ? "replace" : "patch", (long long)id->twin->desired_version, delivered);
        cJSON_Delete(notification);
    }
    cJSON_Delete(desired);
    th_ctl_reply_ok(x, th_identity_twin_json(id));
}

static void cmd_update_twin(struct cmd_ctx *x)
{
    cmd_write_twin(x, false);
}

static void cmd_replace_twin(struct cmd_ctx *x)
{
    cmd_write_twin(x, true);
}

/* ---- identities ---- */

static void cmd_get_device(struct cmd_ctx *x)
{
    struct th_identity *id;
    if (!th_ctl_need_perm(x, TH_PERM_REGISTRY_READ, "RegistryRead") ||
        !(id = th_ctl_identity_or_reply(x, true))) {
        return;
    }
    th_ctl_reply_ok(x, th_identity_to_json(id));
}

static void cmd_list_devices(struct cmd_ctx *x)
{
    cJSON *arr;
    if (!th_ctl_need_perm(x, TH_PERM_REGISTRY_READ, "RegistryRead")) {
        return;
    }
    arr = cJSON_CreateArray();
    for (struct th_identity *d = th_registry_next_device(x->p->reg, NULL); arr && d;
         d = th_registry_next_device(x->p->reg, d)) {
        cJSON_AddItemToArray(arr, th_identity_to_json(d));
    }
    th_ctl_reply_ok(x, arr);
}

static void cmd_list_modules(struct cmd_ctx *x)
{
    struct th_identity *d;
    cJSON *arr;
    if (!th_ctl_need_perm(x, TH_PERM_REGISTRY_READ, "RegistryRead") ||
        !(d = th_ctl_identity_or_reply(x, false))) {
        return;
    }
    arr = cJSON_CreateArray();
    for (size_t i = 0; arr && i < d->module_count; i++) {
        cJSON_AddItemToArray(arr, th_identity_to_json(d->modules[i]));
    }
    th_ctl_reply_ok(x, arr);
}

static void cmd_disconnect(struct cmd_ctx *x)
{
    struct th_identity *id;
    struct th_idglue *g;
    cJSON *data;
    bool was = false;
    if (!th_ctl_need_perm(x, TH_PERM_SERVICE_CONNECT, "ServiceConnect") ||
        !(id = th_ctl_identity_or_reply(x, true))) {
        return;
    }
    g = id->glue;
    if (g && g->conn) {
        was = true;
        g->conn->kicked = true;
        mosquitto_kick_client_by_clientid(g->conn->client_id, false);
    }
    data = cJSON_CreateObject();
    if (data) {
        cJSON_AddBoolToObject(data, "disconnected", was);
    }
    th_ctl_reply_ok(x, data);
}

/* ---- faults and marks (scenario support) ---- */

static void cmd_expire_token(struct cmd_ctx *x)
{
    struct th_identity *id;
    struct th_idglue *g;
    cJSON *data;
    bool was = false;
    if (!th_ctl_need_perm(x, TH_PERM_SERVICE_CONNECT, "ServiceConnect") ||
        !(id = th_ctl_identity_or_reply(x, true)) || !(g = th_idglue_of(id))) {
        return;
    }
    if (g->conn) {
        /* The current token (and any older one) is refused from now on. */
        g->revoked_se = g->conn->token_expiry_s;
        g->conn->kicked = true;
        was = true;
        th_log(x->p, MOSQ_LOG_NOTICE, "%s | token expired (fault) | closing the connection",
               g->conn->client_id);
        mosquitto_kick_client_by_clientid(g->conn->client_id, false);
    }
    data = cJSON_CreateObject();
    if (data) {
        cJSON_AddBoolToObject(data, "disconnected", was);
    }
    th_ctl_reply_ok(x, data);
}

static void cmd_inject_error(struct cmd_ctx *x)
{
    struct th_error err = {0};
    struct th_identity *id;
    struct th_idglue *g;
    const char *op;
    int status, count;
    if (!th_ctl_need_perm(x, TH_PERM_SERVICE_CONNECT, "ServiceConnect") ||
        !(id = th_ctl_identity_or_reply(x, true)) || !th_ctl_string_or_reply(x, "operation", &op) ||
        !th_ctl_int_or_reply(x, "status", 429, 400, 599, &status) ||
        !th_ctl_int_or_reply(x, "count", 1, 0, 1000000, &count) || !(g = th_idglue_of(id))) {
        return;
    }
    if (op && !strcmp(op, "twinGet")) {
        g->fault_get_status = status;
        g->fault_get_count = count;
    } else if (op && !strcmp(op, "twinPatch")) {
        g->fault_patch_status = status;
        g->fault_patch_count = count;
    } else {
        th_error_set(&err, TH_ERR_INVAL, 400004, "'operation' must be \"twinGet\" or \"twinPatch\"");
        th_ctl_reply_err(x, &err);
        return;
    }
    th_ctl_reply_ok(x, NULL);
}

static void cmd_mark(struct cmd_ctx *x)
{
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(x->cmd, "data");
    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(x->cmd, "deviceId");
    const cJSON *jm = cJSON_GetObjectItemCaseSensitive(x->cmd, "moduleId");
    cJSON *out;
    if (!th_ctl_need_perm(x, TH_PERM_SERVICE_CONNECT, "ServiceConnect")) {
        return;
    }
    th_event_emit(x->p, TH_JOURNAL_MARK, cJSON_IsString(jd) ? jd->valuestring : NULL,
                  cJSON_IsString(jm) ? jm->valuestring : NULL, th_journal_data_mark(data));
    out = cJSON_CreateObject();
    if (out) {
        cJSON_AddNumberToObject(out, "seq", (double)x->p->event_seq);
    }
    th_ctl_reply_ok(x, out);
}

/* ---- dispatch ---- */

static const struct {
    const char *name;
    void (*fn)(struct cmd_ctx *x);
} commands[] = {
    {"getTwin", cmd_get_twin},
    {"updateTwin", cmd_update_twin},
    {"replaceTwin", cmd_replace_twin},
    {"invokeMethod", th_cmd_invoke_method},
    {"sendC2D", th_cmd_send_c2d},
    {"getDevice", cmd_get_device},
    {"listDevices", cmd_list_devices},
    {"listModules", cmd_list_modules},
    {"disconnect", cmd_disconnect},
    {"expireToken", cmd_expire_token},
    {"injectError", cmd_inject_error},
    {"mark", cmd_mark},
};

static void dispatch(struct cmd_ctx *x)
{
    struct th_error err = {0};
    bool handled = false;
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (!strcmp(commands[i].name, x->name)) {
            commands[i].fn(x);
            return;
        }
    }
    th_cmd_registry_dispatch(x, &handled);
    if (handled) {
        return;
    }
    th_error_set(&err, TH_ERR_INVAL, 400004, "unknown command '%s'", x->name);
    th_ctl_reply_err(x, &err);
}

int th_on_control(int event, void *event_data, void *userdata)
{
    struct mosquitto_evt_control *ed = event_data;
    struct th_plugin *p = userdata;
    struct th_conn *c = th_conn_find(p, ed->client);
    struct th_error err = {0};
    cJSON *root = NULL, *responses;
    const cJSON *cmds, *cmd;
    (void)event;

    if (!c || c->kind != TH_CONN_SERVICE) {
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
        cJSON *r = th_ctl_response_entry(NULL, NULL);
        if (r) {
            th_ctl_add_error_fields(r, &err);
            cJSON_AddItemToArray(responses, r);
        }
        th_ctl_send_responses(c->client_id, responses);
        cJSON_Delete(root);
        return MOSQ_ERR_SUCCESS;
    }
    cJSON_ArrayForEach(cmd, cmds)
    {
        struct cmd_ctx x = {p, c, cmd, NULL, responses};
        const cJSON *jn = cJSON_GetObjectItemCaseSensitive(cmd, "command");
        if (!cJSON_IsObject(cmd) || !cJSON_IsString(jn)) {
            cJSON *r = th_ctl_response_entry(NULL, cJSON_GetObjectItemCaseSensitive(cmd, "correlationData"));
            th_error_set(&err, TH_ERR_INVAL, 400004, "each command needs a string field 'command'");
            if (r) {
                th_ctl_add_error_fields(r, &err);
                cJSON_AddItemToArray(responses, r);
            }
            continue;
        }
        x.name = jn->valuestring;
        dispatch(&x);
    }
    cJSON_Delete(root);
    if (cJSON_GetArraySize(responses) > 0) {
        th_ctl_send_responses(c->client_id, responses);
    } else {
        cJSON_Delete(responses); /* only invokeMethod commands: each answers on its own */
    }
    return MOSQ_ERR_SUCCESS;
}
