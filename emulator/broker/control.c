/*
 * control.c - the service control API on TH_CONTROL_TOPIC
 * (docs/control-api.md): the request, the one command table and dispatch,
 * the "authorization" member, and the reply and argument helpers every
 * handler uses (control.h); the handlers are control_*.c.
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
#include "ctl_answer.h"
#include "json.h"
#include "th_limits.h"
#include "control.h"
#include "util.h"

/* ---- response building ---- */

bool brk_ctl_push(cJSON *arr, cJSON *item)
{
    if (!item || !arr || !cJSON_AddItemToArray(arr, item)) {
        cJSON_Delete(item);
        return false;
    }
    return true;
}

bool brk_ctl_put(cJSON *obj, const char *key, cJSON *item)
{
    if (!item || !obj || !cJSON_AddItemToObject(obj, key, item)) {
        cJSON_Delete(item);
        return false;
    }
    return true;
}

cJSON *brk_ctl_response_entry(const char *command, const cJSON *correlation)
{
    cJSON *r = cJSON_CreateObject();
    if (!r) {
        return NULL;
    }
    if (!(command ? cJSON_AddStringToObject(r, "command", command)
                  : cJSON_AddNullToObject(r, "command")) ||
        (correlation && !brk_ctl_put(r, "correlationData", cJSON_Duplicate(correlation, 1)))) {
        cJSON_Delete(r);
        return NULL;
    }
    return r;
}

bool brk_ctl_add_error_fields(cJSON *r, const struct th_error *err)
{
    return cJSON_AddStringToObject(r, "error",
                                   err->message[0] ? err->message : th_result_str(err->result)) &&
           cJSON_AddNumberToObject(r, "status", err->status ? err->status : 500) &&
           cJSON_AddNumberToObject(r, "errorCode", err->code ? err->code : TH_EC_SERVER_ERROR);
}

cJSON *brk_ctl_error_entry(const char *command, const cJSON *correlation,
                           const struct th_error *err)
{
    cJSON *r = brk_ctl_response_entry(command, correlation);
    if (r && !brk_ctl_add_error_fields(r, err)) {
        cJSON_Delete(r);
        return NULL;
    }
    return r;
}

/* {"responses": responses}, printed without building that object (ctl_answer.h). */
void brk_ctl_send_responses(const char *client_id, cJSON *responses)
{
    size_t len;
    char *text = th_ctl_responses_text(responses, &len);
    cJSON_Delete(responses);
    if (text) {
        brk_publish_to(client_id, TH_CONTROL_RESPONSE_TOPIC, text, len, 1);
        free(text);
    }
}

/*
 * The entry {"command":..,["correlationData":..,]"data":..} (what
 * brk_ctl_response_entry plus "data" print as) is printed at once
 * (th_ctl_ok_entry_text) and kept as a raw item of the responses.
 */
void brk_ctl_reply_ok(struct brk_cmd_ctx *x, cJSON *data)
{
    char *text = th_ctl_ok_entry_text(
        x->name, cJSON_GetObjectItemCaseSensitive(x->cmd, "correlationData"), data);
    cJSON *r = th_ctl_raw_taking(text);
    cJSON_Delete(data);
    if (!r) {
        struct th_error err = {0};
        th_error_set(&err, TH_ERR_NOMEM, TH_EC_SERVER_ERROR, "out of memory building the answer");
        brk_ctl_reply_err(x, &err);
        return;
    }
    brk_ctl_push(x->responses, r);
}

void brk_ctl_reply_data(struct brk_cmd_ctx *x, cJSON *data)
{
    if (!data) {
        struct th_error err = {0};
        th_error_set(&err, TH_ERR_NOMEM, TH_EC_SERVER_ERROR, "out of memory building the answer");
        brk_ctl_reply_err(x, &err);
        return;
    }
    brk_ctl_reply_ok(x, data);
}

void brk_ctl_reply_err(struct brk_cmd_ctx *x, const struct th_error *err)
{
    brk_ctl_push(x->responses,
                 brk_ctl_error_entry(
                     x->name, cJSON_GetObjectItemCaseSensitive(x->cmd, "correlationData"), err));
}

/* ---- argument helpers ---- */

bool brk_ctl_need_perm(struct brk_cmd_ctx *x, unsigned perm, const char *perm_name)
{
    struct th_error err = {0};
    if (x->caller->perms & perm) {
        return true;
    }
    th_error_set(&err, TH_ERR_AUTH, TH_EC_IOTHUB_UNAUTHORIZED_ACCESS,
                 "policy '%s' does not grant %s, which '%s' needs",
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
        th_error_set(&err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                     "'%s' needs a string field 'deviceId'", x->name);
        brk_ctl_reply_err(x, &err);
        return NULL;
    }
    if (jm && !cJSON_IsNull(jm) && !cJSON_IsString(jm)) {
        th_error_set(&err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                     "'moduleId' must be a string or null");
        brk_ctl_reply_err(x, &err);
        return NULL;
    }
    const char *mod = cJSON_IsString(jm) ? jm->valuestring : NULL;
    if (mod && !module_allowed) {
        th_error_set(&err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                     "'%s' applies to devices only, not modules", x->name);
        brk_ctl_reply_err(x, &err);
        return NULL;
    }
    if (!(id = th_registry_find(x->p->reg, jd->valuestring, NULL))) {
        th_error_set(&err, TH_ERR_NOT_FOUND, TH_EC_DEVICE_NOT_FOUND,
                     "device '%s' is not registered", jd->valuestring);
        brk_ctl_reply_err(x, &err);
        return NULL;
    }
    if (mod) { /* the device itself was the lookup above */
        id = th_registry_find(x->p->reg, jd->valuestring, mod);
    }
    if (!id) {
        th_error_set(&err, TH_ERR_NOT_FOUND, TH_EC_MODULE_NOT_FOUND,
                     "module '%s' is not registered on device '%s'", mod, jd->valuestring);
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
        th_error_set(&err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID, "'%s' must be a string", field);
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
        th_error_set(&err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID, "%s must be within [%d; %d].",
                     field, lo, hi);
        brk_ctl_reply_err(x, &err);
        return false;
    }
    *out = (int)j->valuedouble;
    return true;
}

/* ---- acting for a caller: "authorization" ---- */

/* TH_EC_ARGUMENT_INVALID for a malformed "authorization" member; always false. */
static bool bad_authorization(struct brk_cmd_ctx *x, const char *what)
{
    struct th_error err = {0};
    th_error_set(&err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
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
 * replying: TH_EC_ARGUMENT_INVALID for a malformed member, 401 / TH_EC_IOTHUB_UNAUTHORIZED_ACCESS
 * when the token does not grant what the member asks for. The command still needs the connection's
 * own rights afterwards: a token narrows what a trusted caller may do, it never widens it.
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
        th_error_set(&err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
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
    brk_ctl_reply_data(x, data);
}

/* A command holding "\u0000" in a string is refused whole: cJSON already cut it (json.h). */
static bool nul_free_or_reply(struct brk_cmd_ctx *x)
{
    struct th_error err = {0};
    char what[96];
    snprintf(what, sizeof what, "command '%s'", x->name);
    if (th_json_refuse_nul(x->cmd, what, &err) == TH_OK) {
        return true;
    }
    brk_ctl_reply_err(x, &err);
    return false;
}

/*
 * Whether the request text holds the escape \u0000 anywhere. th_json_parse
 * flags a string only where its text has it, so without one no command can
 * hold the NUL and nul_free_or_reply's walk over each command is skipped (it
 * was 7 % of the instructions of an updateTwin). Conservative: an escaped
 * backslash before "u0000" counts too, and then the walk decides.
 */
static bool text_may_hold_nul(const void *buf, size_t len)
{
    const char *p = buf, *end = p + len;
    while (p != NULL && p < end && (p = memchr(p, '\\', (size_t)(end - p))) != NULL) {
        if (end - p >= 6 && memcmp(p + 1, "u0000", 5) == 0) {
            return true;
        }
        p++;
    }
    return false;
}

/* ---- dispatch ---- */

/* Every command of the control API (docs/control-api.md), and the file that handles it. */
static const struct {
    const char *name;
    void (*fn)(struct brk_cmd_ctx *x);
} commands[] = {
    /* control_twin.c */
    {"getTwin", brk_cmd_get_twin},
    {"updateTwin", brk_cmd_update_twin},
    {"replaceTwin", brk_cmd_replace_twin},
    /* control_methods.c, control_c2d.c */
    {"invokeMethod", brk_cmd_invoke_method},
    {"sendC2D", brk_cmd_send_c2d},
    /* control_registry.c */
    {"getDevice", brk_cmd_get_device},
    {"listDevices", brk_cmd_list_devices},
    {"listModules", brk_cmd_list_modules},
    {"createDevice", brk_cmd_create_device},
    {"updateDevice", brk_cmd_update_identity},
    {"deleteDevice", brk_cmd_delete_identity},
    {"createModule", brk_cmd_create_module},
    {"updateModule", brk_cmd_update_identity},
    {"deleteModule", brk_cmd_delete_identity},
    {"ensureModule", brk_cmd_ensure_module},
    {"devicesWithoutModule", brk_cmd_devices_without_module},
    {"query", brk_cmd_query},
    {"getStatistics", brk_cmd_statistics},
    {"exportRegistry", brk_cmd_export},
    {"importRegistry", brk_cmd_import},
    /* control_dps.c */
    {"dpsInfo", brk_cmd_dps_info},
    {"dpsPut", brk_cmd_dps_put},
    {"dpsGet", brk_cmd_dps_get},
    {"dpsDelete", brk_cmd_dps_delete},
    {"dpsQuery", brk_cmd_dps_query},
    {"dpsRegister", brk_cmd_dps_register},
    {"dpsOperationStatus", brk_cmd_dps_operation_status},
    /* control_bulk.c */
    {"bulkRegistry", brk_cmd_bulk_registry},
    /* control_config.c */
    {"createConfiguration", brk_cmd_create_configuration},
    {"updateConfiguration", brk_cmd_update_configuration},
    {"getConfiguration", brk_cmd_get_configuration},
    {"listConfigurations", brk_cmd_list_configurations},
    {"deleteConfiguration", brk_cmd_delete_configuration},
    {"testConfigurationQueries", brk_cmd_test_configuration_queries},
    /* control_certs.c */
    {"listCertificates", brk_cmd_list_certificates},
    {"getCertificate", brk_cmd_get_certificate},
    {"putCertificate", brk_cmd_put_certificate},
    {"deleteCertificate", brk_cmd_delete_certificate},
    {"generateVerificationCode", brk_cmd_verification_code},
    {"verifyCertificate", brk_cmd_verify_certificate},
    /* control_jobs.c */
    {"createJob", brk_cmd_create_job},
    {"getJob", brk_cmd_get_job},
    {"cancelJob", brk_cmd_cancel_job},
    {"listJobs", brk_cmd_list_jobs},
    /* control_faults.c */
    {"disconnect", brk_cmd_disconnect},
    {"expireToken", brk_cmd_expire_token},
    {"injectError", brk_cmd_inject_error},
    {"mark", brk_cmd_mark},
    {"brokerIo", brk_cmd_broker_io},
    /* control_dashboard.c */
    {"listDeviceSummaries", brk_cmd_list_device_summaries},
    /* this file */
    {"authorize", cmd_authorize},
};

static void dispatch(struct brk_cmd_ctx *x)
{
    struct th_error err = {0};
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (!strcmp(commands[i].name, x->name)) {
            commands[i].fn(x);
            return;
        }
    }
    th_error_set(&err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID, "unknown command '%s'", x->name);
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
    if (th_json_parse(ed->payload, ed->payloadlen, TH_JSON_MAX_INPUT_BYTES + 65536, 64, &root,
                      &err) != TH_OK ||
        !cJSON_IsArray(cmds = cJSON_GetObjectItemCaseSensitive(root, "commands"))) {
        if (root) {
            th_error_set(
                &err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                "the request needs a 'commands' array: {\"commands\":[{\"command\":...}]}");
        }
        brk_ctl_push(responses, brk_ctl_error_entry(NULL, NULL, &err));
        brk_ctl_send_responses(c->client_id, responses);
        cJSON_Delete(root);
        return MOSQ_ERR_SUCCESS;
    }
    bool may_hold_nul = text_may_hold_nul(ed->payload, ed->payloadlen);
    cJSON_ArrayForEach(cmd, cmds)
    {
        struct brk_cmd_ctx x = {p, c, cmd, NULL, responses, NULL};
        struct th_auth_service_decision who;
        const cJSON *jn = cJSON_GetObjectItemCaseSensitive(cmd, "command");
        if (!cJSON_IsObject(cmd) || !cJSON_IsString(jn)) {
            th_error_set(&err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                         "each command needs a string field 'command'");
            brk_ctl_push(responses,
                         brk_ctl_error_entry(
                             NULL, cJSON_GetObjectItemCaseSensitive(cmd, "correlationData"), &err));
            continue;
        }
        x.name = jn->valuestring;
        if (authorization_or_reply(&x, &who) && (!may_hold_nul || nul_free_or_reply(&x))) {
            dispatch(&x);
        }
    }
    cJSON_Delete(root);
    brk_config_apply(p); /* what the commands changed reaches the configurations at once */
    if (cJSON_GetArraySize(responses) > 0) {
        brk_ctl_send_responses(c->client_id, responses);
    } else {
        cJSON_Delete(responses); /* only invokeMethod commands: each answers on its own */
    }
    return MOSQ_ERR_SUCCESS;
}
