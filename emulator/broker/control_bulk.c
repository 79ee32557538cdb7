/*
 * control_bulk.c - the control API's bulkRegistry command: the hub's bulk
 * registry operation (POST /devices, core/bulk.h) with the broker's side of
 * each identity carried out: connections closed when a device is disabled
 * or its keys change, glue detached before a delete, the state dir, the
 * desired notification and the event stream.
 */
#include <stdio.h>
#include <string.h>

#include "bulk.h"
#include "control.h"
#include "json.h"
#include "util.h"

static void bulk_before_delete(void *arg, struct th_identity *id)
{
    struct brk_plugin *p = arg;
    for (size_t i = 0; !id->module_id && i < id->module_count; i++) {
        brk_conn_forget_identity(p, id->modules[i]);
    }
    brk_conn_forget_identity(p, id);
}

static void bulk_changed(void *arg, const struct th_bulk_change *ch)
{
    struct brk_plugin *p = arg;
    struct th_identity *id = ch->id;
    switch (ch->kind) {
    case TH_BULK_CREATED:
        brk_persist_device(p, id->parent ? id->parent : id);
        brk_event_emit(p, id->module_id ? TH_JOURNAL_MODULE_CREATED : TH_JOURNAL_DEVICE_CREATED,
                       id->device_id, id->module_id, NULL);
        break;
    case TH_BULK_UPDATED:
        if (ch->disabled) {
            brk_conn_kick_identity(p, id);
            for (size_t i = 0; i < id->module_count; i++) {
                brk_conn_kick_identity(p, id->modules[i]);
            }
        } else if (ch->keys_changed) {
            brk_conn_kick_identity(p, id);
        }
        brk_persist_device(p, id->parent ? id->parent : id);
        brk_event_emit(p, TH_JOURNAL_IDENTITY_UPDATED, id->device_id, id->module_id, NULL);
        if (ch->notification) {
            bool delivered = brk_deliver_desired(p, id, ch->notification, ch->desired_version);
            brk_event_emit(p, TH_JOURNAL_DESIRED, id->device_id, id->module_id,
                           th_journal_data_desired(cJSON_Duplicate(ch->desired, 1),
                                                   ch->desired_version, delivered));
        }
        break;
    case TH_BULK_DELETED:
        if (ch->module_id) {
            brk_persist_device(p, th_registry_find(p->reg, ch->device_id, NULL));
        } else {
            brk_persist_forget(p, ch->device_id);
        }
        brk_event_emit(p, ch->module_id ? TH_JOURNAL_MODULE_DELETED : TH_JOURNAL_DEVICE_DELETED,
                       ch->device_id, ch->module_id, NULL);
        break;
    }
}

/* bulkRegistry {"devices": [export-import identities]} -> BulkRegistryOperationResult. */
void brk_cmd_bulk_registry(struct brk_cmd_ctx *x)
{
    struct th_error err = {0};
    cJSON *result = NULL;
    if (!brk_ctl_need_perm(x, TH_PERM_REGISTRY_WRITE, "RegistryWrite")) {
        return;
    }
    struct th_bulk_hooks hooks = {x->p, bulk_before_delete, bulk_changed};
    if (th_registry_bulk(x->p->reg, cJSON_GetObjectItemCaseSensitive(x->cmd, "devices"),
                         th_now_us(), &hooks, &result, &err) != TH_OK) {
        brk_ctl_reply_err(x, &err);
        return;
    }
    brk_log(x->p, MOSQ_LOG_INFO, "service | bulk registry | entries=%d successful=%d",
            cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(x->cmd, "devices")),
            th_json_bool(result, "isSuccessful", false));
    brk_ctl_reply_data(x, result);
}
