/*
 * control_dashboard.c - the control API command behind the dashboard's
 * device list (docs/dashboard.md, docs/control-api.md
 * `listDeviceSummaries`): one page of devices that pass a filter, each as a
 * summary row (core/devlist.h), with the number of devices in the registry
 * and the number that matched, so that a 10,000-device registry is answered
 * a page at a time instead of as every identity and twin.
 */
#include "control.h"
#include "devlist.h"

void brk_cmd_list_device_summaries(struct brk_cmd_ctx *x)
{
    struct th_error err = {0};
    struct th_devlist_filter f;
    if (!brk_ctl_need_perm(x, TH_PERM_REGISTRY_READ, "RegistryRead")) {
        return;
    }
    if (th_devlist_filter_from_json(x->cmd, &f, &err) != TH_OK) {
        brk_ctl_reply_err(x, &err);
        return;
    }
    cJSON *data = cJSON_CreateObject();
    cJSON *items = data ? cJSON_AddArrayToObject(data, "items") : NULL;
    bool ok = items != NULL;
    long matched = 0;
    for (struct th_identity *d = th_registry_next_device(x->p->reg, NULL); ok && d;
         d = th_registry_next_device(x->p->reg, d)) {
        if (!th_devlist_match(d, &f)) {
            continue;
        }
        if (matched >= f.skip && matched - f.skip < f.top) {
            ok = brk_ctl_push(items, th_devlist_row(d, f.security));
        }
        matched++;
    }
    ok = ok &&
         cJSON_AddNumberToObject(data, "total",
                                 (double)th_registry_device_count(x->p->reg)) &&
         cJSON_AddNumberToObject(data, "matched", (double)matched) &&
         cJSON_AddNumberToObject(data, "skip", (double)f.skip) &&
         cJSON_AddNumberToObject(data, "top", (double)f.top);
    if (!ok) {
        cJSON_Delete(data);
        data = NULL;
    }
    brk_ctl_reply_data(x, data);
}
