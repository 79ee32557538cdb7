/*
 * ctl_proto.c - the control API's envelope and answers for its clients
 * (ctl_proto.h, docs/control-api.md "Requests and responses").
 */
#include "ctl_proto.h"

#include <string.h>

#include "json.h"

cJSON *th_ctl_command(const char *name, const char *device_id, const char *module_id)
{
    cJSON *c = cJSON_CreateObject();
    if (!c || !cJSON_AddStringToObject(c, "command", name) ||
        (device_id && !cJSON_AddStringToObject(c, "deviceId", device_id)) ||
        (module_id && !cJSON_AddStringToObject(c, "moduleId", module_id))) {
        cJSON_Delete(c);
        return NULL;
    }
    return c;
}

char *th_ctl_request_print(cJSON *const *cmds, size_t n, const char *const *corrs)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *arr = root ? cJSON_AddArrayToObject(root, "commands") : NULL;
    bool ok = arr != NULL && n > 0;
    for (size_t i = 0; ok && i < n; i++) {
        ok = cJSON_IsObject(cmds[i]);
        if (ok && corrs && corrs[i]) {
            cJSON_DeleteItemFromObjectCaseSensitive(cmds[i], "correlationData");
            ok = cJSON_AddStringToObject(cmds[i], "correlationData", corrs[i]) != NULL;
        }
        /* A reference: deleting `root` leaves the caller's command alone. */
        ok = ok && cJSON_AddItemReferenceToArray(arr, cmds[i]);
    }
    char *text = ok ? th_json_print(root) : NULL;
    cJSON_Delete(root);
    return text;
}

th_result th_ctl_responses_parse(const char *text, size_t len, size_t max_bytes, cJSON **out,
                                 struct th_error *err)
{
    *out = NULL;
    cJSON *root = NULL;
    th_result r = th_json_parse(text, len, max_bytes, TH_CTL_MAX_DEPTH, &root, err);
    if (r != TH_OK)
        return r;
    cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "responses");
    if (!cJSON_IsArray(arr)) {
        cJSON_Delete(root);
        return th_error_set(
            err, TH_ERR_INVAL, 0,
            "a control answer is {\"responses\":[...]}; this one has no such array");
    }
    *out = cJSON_DetachItemViaPointer(root, arr);
    cJSON_Delete(root);
    return TH_OK;
}

const char *th_ctl_entry_corr(const cJSON *entry)
{
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(entry, "correlationData");
    return cJSON_IsString(c) ? c->valuestring : NULL;
}

bool th_ctl_entry_is_request_error(const cJSON *entry)
{
    return cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(entry, "command")) &&
           !cJSON_GetObjectItemCaseSensitive(entry, "correlationData");
}

cJSON *th_ctl_find(const cJSON *responses, const char *corr, bool request_errors)
{
    cJSON *e, *request_error = NULL;
    cJSON_ArrayForEach(e, responses)
    {
        const char *c = th_ctl_entry_corr(e);
        if (c && corr && !strcmp(c, corr))
            return e;
        if (request_errors && !request_error && th_ctl_entry_is_request_error(e))
            request_error = e;
    }
    return request_error;
}

const char *th_ctl_entry_error(const cJSON *entry, int *status, int *code)
{
    const cJSON *error = cJSON_GetObjectItemCaseSensitive(entry, "error");
    if (!error || cJSON_IsNull(error))
        return NULL;
    if (status)
        *status = (int)th_json_number(entry, "status", 0);
    if (code)
        *code = (int)th_json_number(entry, "errorCode", 0);
    return cJSON_IsString(error) ? error->valuestring : TH_CTL_ERROR_UNSAID;
}
