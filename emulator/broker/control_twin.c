/*
 * control_twin.c - the control API's twin commands: getTwin, updateTwin,
 * replaceTwin (iothub-protocol.md section 10.2). The write itself is core's
 * th_twin_service_write; here the result is persisted, the desired
 * notification delivered (deliver.c) and the event emitted.
 */
#include <stdlib.h>
#include <string.h>

#include "control.h"
#include "ctl_answer.h"
#include "json.h"
#include "twin.h"
#include "util.h"

/*
 * The twin as the answer's "data": printed straight from the twin
 * (th_identity_twin_text, the bytes th_identity_twin_json would print as) and
 * carried as raw JSON, so no tree of the whole twin is built and freed per
 * answer. NULL on OOM.
 */
static cJSON *twin_data(const struct th_identity *id)
{
    return th_ctl_raw_taking(th_identity_twin_text(id));
}

void brk_cmd_get_twin(struct brk_cmd_ctx *x)
{
    struct th_identity *id;
    if (!brk_ctl_need_perm(x, TH_PERM_SERVICE_CONNECT | TH_PERM_REGISTRY_READ, "ServiceConnect")) {
        return;
    }
    if (!(id = brk_ctl_identity_or_reply(x, true))) {
        return;
    }
    brk_ctl_reply_data(x, twin_data(id));
}

/*
 * The command's "answer": "twin" (the default: the whole twin) or "short"
 * ({"status":200,"etag":..,"$version":..}, th_twin_short_answer_text), for
 * callers that read nothing else (docs/control-api.md). False after replying
 * 400004 to any other value.
 */
static bool short_answer_or_reply(struct brk_cmd_ctx *x, bool *is_short)
{
    struct th_error err = {0};
    const char *answer;
    *is_short = false;
    if (!brk_ctl_string_or_reply(x, "answer", &answer)) {
        return false;
    }
    if (!answer || !strcmp(answer, "twin")) {
        return true;
    }
    if (!strcmp(answer, "short")) {
        *is_short = true;
        return true;
    }
    th_error_set(&err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                 "'answer' must be \"twin\" (the whole twin, the default) or \"short\" (status, "
                 "etag and desired $version)");
    brk_ctl_reply_err(x, &err);
    return false;
}

/*
 * updateTwin / replaceTwin: the write itself (If-Match, rules, etag step,
 * notification body) is core's th_twin_service_write; here it is persisted,
 * the notification sent to the device, the event emitted and the twin (or
 * the short answer) returned.
 */
static void write_twin(struct brk_cmd_ctx *x, bool replace)
{
    struct th_error err = {0};
    struct th_identity *id;
    struct th_twin_write_result res;
    const char *etag;
    const cJSON *patch;
    bool is_short;

    if (!brk_ctl_need_perm(x, TH_PERM_SERVICE_CONNECT, "ServiceConnect")) {
        return;
    }
    if (!(id = brk_ctl_identity_or_reply(x, true)) || !brk_ctl_string_or_reply(x, "etag", &etag) ||
        !short_answer_or_reply(x, &is_short)) {
        return;
    }
    patch = cJSON_GetObjectItemCaseSensitive(x->cmd, "patch");
    if (!cJSON_IsObject(patch)) {
        th_error_set(&err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                     "'%s' needs an object 'patch' like {\"properties\":{\"desired\":{...}}}",
                     x->name);
        brk_ctl_reply_err(x, &err);
        return;
    }
    /* The event's data (the written document) only when someone may receive it
     * (brk_events_wanted); the notification printed by the write itself. */
    bool events = brk_events_wanted(x->p);
    struct th_twin_write req = {.mode = replace ? TH_TWIN_WRITE_REPLACE : TH_TWIN_WRITE_PATCH,
                                .doc = patch,
                                .if_match = etag,
                                .no_desired_doc = !events,
                                .notification_as_text = true};
    if (th_twin_service_write(id->twin, &req, th_now_us(), &res, &err) != TH_OK) {
        brk_ctl_reply_err(x, &err);
        return;
    }
    brk_persist_device(x->p, id);
    if (res.desired_written) {
        bool delivered = brk_deliver_desired_text(x->p, id, res.notification_text,
                                                  res.notification_len, res.desired_version);
        cJSON *data = NULL;
        if (events) {
            data = th_journal_data_desired(res.desired, res.desired_version, delivered);
            res.desired = NULL; /* taken by data */
        }
        brk_event_emit(x->p, TH_JOURNAL_DESIRED, id->device_id, id->module_id, data);
        brk_log(x->p, MOSQ_LOG_INFO, "%s%s%s | desired %s | version=%lld delivered=%d",
                id->device_id, id->module_id ? "/" : "", id->module_id ? id->module_id : "",
                replace ? "replace" : "patch", (long long)res.desired_version, delivered);
    }
    th_twin_write_result_free(&res);
    if (is_short) {
        brk_ctl_reply_data(x, th_ctl_raw_taking(th_twin_short_answer_text(id->twin)));
        return;
    }
    brk_ctl_reply_data(x, twin_data(id));
}

void brk_cmd_update_twin(struct brk_cmd_ctx *x)
{
    write_twin(x, false);
}

void brk_cmd_replace_twin(struct brk_cmd_ctx *x)
{
    write_twin(x, true);
}
