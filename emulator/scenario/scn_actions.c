/*
 * scn_actions.c - what a live run sends through the control API for a
 * scenario (docs/scenarios.md "Actions" and "Faults", docs/control-api.md)
 * and how it reads the answers back: the marks that anchor steps, one
 * command per action or fault step, query pages, the outcome the engine
 * checks, and the run variables of an identity. Pure: `twinhub run`
 * (cli/run.c) sends and waits; tests/unit/test_scenario_actions.c checks
 * every step kind without a hub.
 */
#include <errno.h>
#include <linux/limits.h> /* PATH_MAX */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "connstr.h"
#include "ctl_proto.h"
#include "json.h"
#include "scenario.h"
#include "th_file.h"

/* {"command":"mark","data":{"scenario": s->name}} with `data` handed back for the rest. */
static cJSON *mark(const struct th_scenario *s, cJSON **data)
{
    cJSON *cmd = th_ctl_command("mark", NULL, NULL);
    *data = cmd ? cJSON_AddObjectToObject(cmd, "data") : NULL;
    if (!*data || !cJSON_AddStringToObject(*data, "scenario", s->name)) {
        cJSON_Delete(cmd);
        return NULL;
    }
    return cmd;
}

cJSON *th_scn_step_mark(const struct th_scenario *s, size_t i)
{
    const struct th_step *st = &s->steps[i];
    cJSON *data, *cmd = mark(s, &data);
    if (cmd && (!cJSON_AddStringToObject(data, "step", st->name) ||
                !cJSON_AddNumberToObject(data, "index", st->index) ||
                !cJSON_AddStringToObject(data, "action", th_step_kind_name(st->kind)))) {
        cJSON_Delete(cmd);
        return NULL;
    }
    return cmd;
}

cJSON *th_scn_scenario_mark(const struct th_scenario *s, const char *action)
{
    cJSON *data, *cmd = mark(s, &data);
    if (cmd && (!cJSON_AddStringToObject(data, "file", s->file) ||
                !cJSON_AddNumberToObject(data, "index", 0) ||
                !cJSON_AddStringToObject(data, "action", action))) {
        cJSON_Delete(cmd);
        return NULL;
    }
    return cmd;
}

/* Add a copy of b[key] to cmd under the same key when b has it; false when out of memory. */
static bool copy_member(cJSON *cmd, const cJSON *b, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(b, key);
    if (!v)
        return true;
    cJSON *dup = cJSON_Duplicate(v, 1);
    if (!dup || !cJSON_AddItemToObject(cmd, key, dup)) {
        cJSON_Delete(dup);
        return false;
    }
    return true;
}

/* Add `item` (taken, may be NULL meaning out of memory) to obj; false when that failed. */
static bool add_taken(cJSON *obj, const char *key, cJSON *item)
{
    if (!obj || !item || !cJSON_AddItemToObject(obj, key, item)) {
        cJSON_Delete(item);
        return false;
    }
    return true;
}

/*
 * updateTwin / replaceTwin with {"properties":{"desired": b[key]}}, or the tags of updateTags.
 * The step reads only whether the write failed (th_scn_outcome's error), so it asks for the
 * short answer rather than the whole twin (docs/control-api.md, "answer").
 */
static bool twin_patch(cJSON *cmd, const struct th_step *st, const cJSON *b)
{
    if (!cJSON_AddStringToObject(cmd, "answer", "short"))
        return false;
    cJSON *patch = cJSON_AddObjectToObject(cmd, "patch");
    if (st->kind == TH_STEP_UPDATE_TAGS)
        return patch && copy_member(patch, b, "tags");
    cJSON *props = patch ? cJSON_AddObjectToObject(patch, "properties") : NULL;
    const char *key = st->kind == TH_STEP_PATCH_DESIRED ? "patch" : "desired";
    return add_taken(props, "desired",
                     cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(b, key), 1));
}

static bool method_args(cJSON *cmd, const cJSON *b)
{
    static const char *const timeouts[] = {"responseTimeoutInSeconds", "connectTimeoutInSeconds"};
    const cJSON *payload = cJSON_GetObjectItemCaseSensitive(b, "payload");
    bool ok = cJSON_AddStringToObject(cmd, "methodName", th_json_string(b, "methodName", "")) &&
              add_taken(cmd, "payload", payload ? cJSON_Duplicate(payload, 1) : cJSON_CreateNull());
    for (size_t i = 0; ok && i < 2; i++)
        if (cJSON_GetObjectItemCaseSensitive(b, timeouts[i]))
            ok = cJSON_AddNumberToObject(cmd, timeouts[i], th_json_number(b, timeouts[i], 0));
    return ok;
}

static bool c2d_args(cJSON *cmd, const cJSON *b)
{
    static const char *const keys[] = {"messageId", "correlationId", "contentType",
                                       "contentEncoding"};
    /* bodyJson goes as its compact text; body as given. */
    const cJSON *bj = cJSON_GetObjectItemCaseSensitive(b, "bodyJson");
    char *text = bj ? cJSON_PrintUnformatted(bj) : NULL;
    bool ok = (!bj || text) &&
              cJSON_AddStringToObject(cmd, "body", bj ? text : th_json_string(b, "body", ""));
    free(text);
    for (size_t i = 0; ok && i < sizeof keys / sizeof keys[0]; i++)
        if (th_json_string(b, keys[i], NULL))
            ok = cJSON_AddStringToObject(cmd, keys[i], th_json_string(b, keys[i], ""));
    return ok && copy_member(cmd, b, "properties");
}

/* ensureModule's arguments; desiredFile is read here. False with `err` on failure. */
static bool module_args(cJSON *cmd, const struct th_scenario *s, const cJSON *b,
                        const struct th_scn_parse_opts *opts, char *err, size_t errsize)
{
    if (!cJSON_AddStringToObject(cmd, "moduleId", th_json_string(b, "moduleId", "")))
        return false;
    const char *file = th_json_string(b, "desiredFile", NULL);
    if (file) {
        char path[PATH_MAX * 2];
        snprintf(path, sizeof path, "%s%s%s", file[0] == '/' ? "" : s->dir,
                 file[0] == '/' ? "" : "/", file);
        size_t len = 0;
        char *text = opts && opts->read_file
                         ? opts->read_file(path, TH_SCN_MAX_FILE_BYTES, &len, opts->arg)
                         : th_file_read(path, TH_SCN_MAX_FILE_BYTES, &len);
        int e = errno;
        cJSON *doc = NULL;
        struct th_error je = {0};
        if (!text ||
            th_json_parse(text, len, TH_SCN_MAX_FILE_BYTES, TH_SCN_MAX_DEPTH, &doc, &je) != TH_OK) {
            if (snprintf(err, errsize, "cannot read desiredFile %s: %s", path,
                         text ? je.message : strerror(e)) >= (int)errsize)
                err[errsize - 1] = '\0';
            free(text);
            return false;
        }
        free(text);
        if (!add_taken(cmd, "desired", doc))
            return false;
    } else if (!copy_member(cmd, b, "desired")) {
        return false;
    }
    return copy_member(cmd, b, "tags") && copy_member(cmd, b, "deviceIds");
}

/*
 * dpsPut {"collection", "id", "body"}: the step's fields as the provisioning service's
 * enrollment document (symmetric-key attestation; keys not given are generated).
 */
static bool enrollment_args(cJSON *cmd, bool group, const cJSON *b)
{
    const char *idkey = group ? "enrollmentGroupId" : "registrationId";
    cJSON *body = cJSON_AddObjectToObject(cmd, "body");
    cJSON *att = body ? cJSON_AddObjectToObject(body, "attestation") : NULL;
    cJSON *sym = att ? cJSON_AddObjectToObject(att, "symmetricKey") : NULL;
    static const char *const copied[] = {
        "deviceId",     "provisioningStatus", "initialTwin",      "reprovisionPolicy",
        "capabilities", "registrationId",     "enrollmentGroupId"};
    bool ok =
        sym &&
        cJSON_AddStringToObject(cmd, "collection", group ? "enrollmentGroups" : "enrollments") &&
        cJSON_AddStringToObject(cmd, "id", th_json_string(b, idkey, "")) &&
        cJSON_AddStringToObject(att, "type", "symmetricKey") && copy_member(sym, b, "primaryKey") &&
        copy_member(sym, b, "secondaryKey");
    for (size_t i = 0; ok && i < sizeof copied / sizeof copied[0]; i++)
        ok = copy_member(body, b, copied[i]);
    return ok;
}

cJSON *th_scn_action_command(const struct th_scenario *s, const struct th_step *st, const cJSON *b,
                             const struct th_scn_parse_opts *opts, char *err, size_t errsize)
{
    const char *d = th_json_string(b, "deviceId", NULL);
    const char *m = th_json_string(b, "moduleId", NULL);
    snprintf(err, errsize, "out of memory");
    cJSON *cmd = NULL;
    bool ok = false;
    switch (st->kind) {
    case TH_STEP_PATCH_DESIRED:
    case TH_STEP_REPLACE_DESIRED:
    case TH_STEP_UPDATE_TAGS:
        cmd = th_ctl_command(st->kind == TH_STEP_REPLACE_DESIRED ? "replaceTwin" : "updateTwin", d,
                             m);
        ok = cmd && twin_patch(cmd, st, b);
        break;
    case TH_STEP_INVOKE_METHOD:
        cmd = th_ctl_command("invokeMethod", d, m);
        ok = cmd && method_args(cmd, b);
        break;
    case TH_STEP_SEND_C2D:
        cmd = th_ctl_command("sendC2D", d, NULL);
        ok = cmd && c2d_args(cmd, b);
        break;
    case TH_STEP_CREATE_MODULES:
        cmd = th_ctl_command("ensureModule", NULL, NULL);
        ok = cmd && module_args(cmd, s, b, opts, err, errsize);
        break;
    case TH_STEP_CREATE_ENROLLMENT:
    case TH_STEP_CREATE_ENROLLMENT_GROUP:
        cmd = th_ctl_command("dpsPut", NULL, NULL);
        ok = cmd && enrollment_args(cmd, st->kind == TH_STEP_CREATE_ENROLLMENT_GROUP, b);
        break;
    case TH_STEP_CREATE_CONFIGURATION:
    case TH_STEP_UPDATE_CONFIGURATION:
    case TH_STEP_DELETE_CONFIGURATION:
        cmd = th_ctl_command(st->kind == TH_STEP_CREATE_CONFIGURATION   ? "createConfiguration"
                             : st->kind == TH_STEP_UPDATE_CONFIGURATION ? "updateConfiguration"
                                                                        : "deleteConfiguration",
                             NULL, NULL);
        ok = cmd && cJSON_AddStringToObject(cmd, "id", th_json_string(b, "id", "")) &&
             copy_member(cmd, b, "configuration");
        break;
    case TH_STEP_QUERY:
        cmd = th_scn_query_command(th_json_string(b, "query", ""), NULL);
        ok = cmd != NULL;
        break;
    case TH_STEP_DISCONNECT:
    case TH_STEP_EXPIRE_TOKEN:
        cmd = th_ctl_command(st->kind == TH_STEP_DISCONNECT ? "disconnect" : "expireToken", d, m);
        ok = cmd != NULL;
        break;
    case TH_STEP_INJECT_ERROR:
        cmd = th_ctl_command("injectError", d, m);
        ok = cmd && cJSON_AddStringToObject(cmd, "operation", th_json_string(b, "operation", "")) &&
             cJSON_AddNumberToObject(cmd, "status", th_json_number(b, "status", 429)) &&
             cJSON_AddNumberToObject(cmd, "count", th_json_number(b, "count", 1));
        break;
    default:
        snprintf(err, errsize, "%s is not done through a control command",
                 th_step_kind_name(st->kind));
        break;
    }
    if (!ok) {
        cJSON_Delete(cmd);
        return NULL;
    }
    err[0] = '\0';
    return cmd;
}

cJSON *th_scn_query_command(const char *query, const char *continuation)
{
    cJSON *cmd = th_ctl_command("query", NULL, NULL);
    if (cmd && (!cJSON_AddStringToObject(cmd, "query", query) ||
                !cJSON_AddNumberToObject(cmd, "pageSize", TH_SCN_QUERY_PAGE) ||
                (continuation && !cJSON_AddStringToObject(cmd, "continuation", continuation)))) {
        cJSON_Delete(cmd);
        return NULL;
    }
    return cmd;
}

cJSON *th_scn_outcome(const cJSON *entry)
{
    int status = 0, code = 0;
    if (th_ctl_entry_error(entry, &status, &code)) {
        cJSON *o = cJSON_CreateObject();
        if (!o ||
            !add_taken(o, "error",
                       cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(entry, "error"), 1)) ||
            !cJSON_AddNumberToObject(o, "status", status) ||
            !cJSON_AddNumberToObject(o, "errorCode", code)) {
            cJSON_Delete(o);
            return NULL;
        }
        return o;
    }
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(entry, "data");
    return data ? cJSON_Duplicate(data, 1) : cJSON_CreateObject();
}

bool th_scn_session_identity_vars(struct th_scn_session *ss, const char *d, const char *m,
                                  const cJSON *identity, const char *hub_name, const char *gateway)
{
    const cJSON *auth = cJSON_GetObjectItemCaseSensitive(identity, "authentication");
    const cJSON *sym = cJSON_GetObjectItemCaseSensitive(auth, "symmetricKey");
    const char *key = th_json_string(sym, "primaryKey", NULL);
    if (!key)
        return false;
    char cs[1200], name[800];
    if (th_connstr_identity(hub_name, d, m, key, gateway, cs, sizeof cs) != TH_OK)
        return false;
    if (m) {
        snprintf(name, sizeof name, "module.%s.%s.connectionString", d, m);
        return th_scn_session_set_var(ss, name, cs);
    }
    snprintf(name, sizeof name, "device.%s.connectionString", d);
    bool ok = th_scn_session_set_var(ss, name, cs);
    snprintf(name, sizeof name, "device.%s.primaryKey", d);
    return th_scn_session_set_var(ss, name, key) && ok;
}
