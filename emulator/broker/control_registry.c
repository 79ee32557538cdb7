/*
 * control_registry.c - the control API's registry side: identity reads
 * (getDevice, listDevices, listModules), device and module
 * create/update/delete (IoT Hub registry semantics, iothub-protocol.md 10.3,
 * 10.4), twin queries with paging (10.6, 11), statistics, the bulk
 * "give every device this module" command used for the `azureiotsecurity`
 * security module, and registry import/export.
 */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control.h"
#include "json.h"
#include "query.h"
#include "registry_query.h"
#include "th_limits.h"
#include "topic.h"
#include "twin.h"
#include "util.h"

/* ---- helpers ---- */

static bool etag_or_reply(struct brk_cmd_ctx *x, const struct th_identity *id)
{
    struct th_error err = {0};
    const char *want;
    char have[32];
    if (!brk_ctl_string_or_reply(x, "etag", &want)) {
        return false;
    }
    th_identity_etag(id, have);
    if (th_etag_matches(want, have)) {
        return true;
    }
    th_error_set(&err, TH_ERR_PRECONDITION, TH_EC_PRECONDITION_FAILED,
                 "etag %s does not match the identity's current etag \"%s\"", want, have);
    brk_ctl_reply_err(x, &err);
    return false;
}

/* The identity fields of the command (th_ident_req_from_json); false after replying. */
static bool req_or_reply(struct brk_cmd_ctx *x, bool is_module, struct th_ident_req *req)
{
    struct th_error err = {0};
    if (th_ident_req_from_json(x->cmd, is_module, req, &err) != TH_OK) {
        brk_ctl_reply_err(x, &err);
        return false;
    }
    return true;
}

/* ---- reading identities ---- */

void brk_cmd_get_device(struct brk_cmd_ctx *x)
{
    struct th_identity *id;
    if (!brk_ctl_need_perm(x, TH_PERM_REGISTRY_READ, "RegistryRead") ||
        !(id = brk_ctl_identity_or_reply(x, true))) {
        return;
    }
    brk_ctl_reply_data(x, th_identity_to_json(id));
}

void brk_cmd_list_devices(struct brk_cmd_ctx *x)
{
    cJSON *arr;
    int top = 0, n = 0;
    /* "top" (optional) stops the walk early: the REST API's GET /devices?top=N
     * asks for at most 1000 of a registry that may hold 100,000. */
    if (!brk_ctl_need_perm(x, TH_PERM_REGISTRY_READ, "RegistryRead") ||
        !brk_ctl_int_or_reply(x, "top", 0, 0, INT_MAX, &top)) {
        return;
    }
    arr = cJSON_CreateArray();
    for (struct th_identity *d = th_registry_next_device(x->p->reg, NULL);
         arr && d && (top == 0 || n < top); d = th_registry_next_device(x->p->reg, d), n++) {
        if (!brk_ctl_push(arr, th_identity_to_json(d))) {
            cJSON_Delete(arr);
            arr = NULL;
        }
    }
    brk_ctl_reply_data(x, arr);
}

void brk_cmd_list_modules(struct brk_cmd_ctx *x)
{
    struct th_identity *d;
    cJSON *arr;
    if (!brk_ctl_need_perm(x, TH_PERM_REGISTRY_READ, "RegistryRead") ||
        !(d = brk_ctl_identity_or_reply(x, false))) {
        return;
    }
    arr = cJSON_CreateArray();
    for (size_t i = 0; arr && i < d->module_count; i++) {
        if (!brk_ctl_push(arr, th_identity_to_json(d->modules[i]))) {
            cJSON_Delete(arr);
            arr = NULL;
        }
    }
    brk_ctl_reply_data(x, arr);
}

/* ---- devices and modules ---- */

void brk_cmd_create_device(struct brk_cmd_ctx *x)
{
    struct th_error err = {0};
    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(x->cmd, "deviceId");
    struct th_ident_req req;
    struct th_identity *dev;
    if (!brk_ctl_need_perm(x, TH_PERM_REGISTRY_WRITE, "RegistryWrite") ||
        !req_or_reply(x, false, &req)) {
        return;
    }
    if (!cJSON_IsString(jd)) {
        th_error_set(&err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                     "'createDevice' needs a string field 'deviceId'");
        brk_ctl_reply_err(x, &err);
        return;
    }
    if (th_registry_create(x->p->reg, jd->valuestring, NULL, &req, NULL, NULL, th_now_us(), &dev,
                           &err) != TH_OK) {
        brk_ctl_reply_err(x, &err);
        return;
    }
    brk_persist_device(x->p, dev);
    brk_event_emit(x->p, TH_JOURNAL_DEVICE_CREATED, dev->device_id, NULL, NULL);
    brk_ctl_reply_data(x, th_identity_to_json(dev));
}

void brk_cmd_update_identity(struct brk_cmd_ctx *x)
{
    struct th_error err = {0};
    struct th_identity *id;
    struct th_ident_req req;
    if (!brk_ctl_need_perm(x, TH_PERM_REGISTRY_WRITE, "RegistryWrite") ||
        !(id = brk_ctl_identity_or_reply(x, true)) || !etag_or_reply(x, id) ||
        !req_or_reply(x, id->module_id != NULL, &req)) {
        return;
    }
    /* Core says whether the keys changed (new, regenerated or dropped; identical is no change). */
    bool keys_changed;
    if (th_identity_apply(x->p->reg, id, &req, th_now_us(), &keys_changed, &err) != TH_OK) {
        brk_ctl_reply_err(x, &err);
        return;
    }
    if (req.enabled == 0) {
        /* A device disabled while connected loses its connection (and its modules theirs). */
        brk_conn_kick_identity(x->p, id);
        for (size_t i = 0; i < id->module_count; i++) {
            brk_conn_kick_identity(x->p, id->modules[i]);
        }
    } else if (keys_changed) {
        brk_conn_kick_identity(x->p, id); /* tokens signed with the old keys no longer hold */
    }
    brk_persist_device(x->p, id->parent ? id->parent : id);
    brk_event_emit(x->p, TH_JOURNAL_IDENTITY_UPDATED, id->device_id, id->module_id, NULL);
    brk_ctl_reply_data(x, th_identity_to_json(id));
}

void brk_cmd_delete_identity(struct brk_cmd_ctx *x)
{
    struct th_error err = {0};
    struct th_identity *id;
    char dev[TH_MAX_ID_LEN + 1], mod[TH_MAX_ID_LEN + 1];
    bool is_module;
    if (!brk_ctl_need_perm(x, TH_PERM_REGISTRY_WRITE, "RegistryWrite") ||
        !(id = brk_ctl_identity_or_reply(x, true)) || !etag_or_reply(x, id)) {
        return;
    }
    is_module = id->module_id != NULL;
    snprintf(dev, sizeof dev, "%s", id->device_id);
    snprintf(mod, sizeof mod, "%s", is_module ? id->module_id : "");
    if (!is_module) {
        for (size_t i = 0; i < id->module_count; i++) {
            brk_conn_forget_identity(x->p, id->modules[i]);
        }
    }
    brk_conn_forget_identity(x->p, id);
    if (th_registry_remove(x->p->reg, dev, is_module ? mod : NULL) != TH_OK) {
        th_error_set(&err, TH_ERR_NOT_FOUND, TH_EC_DEVICE_NOT_FOUND,
                     "identity vanished while deleting");
        brk_ctl_reply_err(x, &err);
        return;
    }
    if (is_module) {
        brk_persist_device(x->p, th_registry_find(x->p->reg, dev, NULL));
    } else {
        brk_persist_forget(x->p, dev);
    }
    brk_event_emit(x->p, is_module ? TH_JOURNAL_MODULE_DELETED : TH_JOURNAL_DEVICE_DELETED, dev,
                   is_module ? mod : NULL, NULL);
    brk_ctl_reply_ok(x, NULL);
}

void brk_cmd_create_module(struct brk_cmd_ctx *x)
{
    struct th_error err = {0};
    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(x->cmd, "deviceId");
    const cJSON *jm = cJSON_GetObjectItemCaseSensitive(x->cmd, "moduleId");
    const cJSON *tags = cJSON_GetObjectItemCaseSensitive(x->cmd, "tags");
    const cJSON *desired = cJSON_GetObjectItemCaseSensitive(x->cmd, "desired");
    struct th_ident_req req;
    struct th_identity *mod;
    if (!brk_ctl_need_perm(x, TH_PERM_REGISTRY_WRITE, "RegistryWrite") ||
        !req_or_reply(x, true, &req)) {
        return;
    }
    if (!cJSON_IsString(jd) || !cJSON_IsString(jm)) {
        th_error_set(&err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                     "'createModule' needs string fields 'deviceId' and 'moduleId'");
        brk_ctl_reply_err(x, &err);
        return;
    }
    if (th_registry_create(
            x->p->reg, jd->valuestring, jm->valuestring, &req, cJSON_IsObject(tags) ? tags : NULL,
            cJSON_IsObject(desired) ? desired : NULL, th_now_us(), &mod, &err) != TH_OK) {
        brk_ctl_reply_err(x, &err);
        return;
    }
    brk_persist_device(x->p, mod->parent);
    brk_event_emit(x->p, TH_JOURNAL_MODULE_CREATED, mod->device_id, mod->module_id, NULL);
    brk_ctl_reply_data(x, th_identity_to_json(mod));
}

/* ---- bulk module creation (the azureiotsecurity use case) ---- */

void brk_cmd_ensure_module(struct brk_cmd_ctx *x)
{
    struct th_error err = {0};
    const cJSON *jm = cJSON_GetObjectItemCaseSensitive(x->cmd, "moduleId");
    const cJSON *tags = cJSON_GetObjectItemCaseSensitive(x->cmd, "tags");
    const cJSON *desired = cJSON_GetObjectItemCaseSensitive(x->cmd, "desired");
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(x->cmd, "deviceIds");
    cJSON *created, *skipped, *data;
    const cJSON *it;
    size_t ncreated = 0, nskipped = 0;
    bool ok = true; /* every cJSON_Add* so far succeeded */

    if (!brk_ctl_need_perm(x, TH_PERM_REGISTRY_WRITE, "RegistryWrite")) {
        return;
    }
    if (!cJSON_IsString(jm) || !th_id_valid(jm->valuestring, strlen(jm->valuestring))) {
        th_error_set(&err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                     "'ensureModule' needs a valid string 'moduleId'");
        brk_ctl_reply_err(x, &err);
        return;
    }
    if ((tags && !cJSON_IsNull(tags) && !cJSON_IsObject(tags)) ||
        (desired && !cJSON_IsNull(desired) && !cJSON_IsObject(desired)) ||
        (ids && !cJSON_IsNull(ids) && !cJSON_IsArray(ids))) {
        th_error_set(&err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                     "'tags' and 'desired' must be objects and 'deviceIds' an array of strings");
        brk_ctl_reply_err(x, &err);
        return;
    }
    /* Validate everything before creating anything. */
    if ((cJSON_IsObject(tags) && th_twin_validate_patch(TH_SECTION_TAGS, tags, &err) != TH_OK) ||
        (cJSON_IsObject(desired) &&
         th_twin_validate_patch(TH_SECTION_DESIRED, desired, &err) != TH_OK)) {
        brk_ctl_reply_err(x, &err);
        return;
    }
    const cJSON *id_list = cJSON_IsArray(ids) ? ids : NULL;
    cJSON_ArrayForEach(it, id_list)
    {
        if (!cJSON_IsString(it) || !th_registry_find(x->p->reg, it->valuestring, NULL)) {
            th_error_set(&err, TH_ERR_NOT_FOUND, TH_EC_DEVICE_NOT_FOUND,
                         "deviceIds: '%s' is not a registered device; nothing was created",
                         cJSON_IsString(it) ? it->valuestring : "(not a string)");
            brk_ctl_reply_err(x, &err);
            return;
        }
    }
    created = cJSON_CreateArray();
    skipped = cJSON_CreateArray();
    data = cJSON_CreateObject();
    if (!created || !skipped || !data) {
        cJSON_Delete(created);
        cJSON_Delete(skipped);
        cJSON_Delete(data);
        th_error_set(&err, TH_ERR_NOMEM, TH_EC_SERVER_ERROR, "out of memory");
        brk_ctl_reply_err(x, &err);
        return;
    }
    const cJSON *next_id = cJSON_IsArray(ids) ? ids->child : NULL;
    struct th_identity *dev = cJSON_IsArray(ids) ? NULL : th_registry_next_device(x->p->reg, NULL);
    for (;;) {
        if (cJSON_IsArray(ids)) {
            if (!next_id) {
                break;
            }
            dev = th_registry_find(x->p->reg, next_id->valuestring, NULL);
            next_id = next_id->next;
        } else if (!dev) {
            break;
        }
        struct th_identity *cur = dev;
        if (!cJSON_IsArray(ids)) {
            dev = th_registry_next_device(x->p->reg, dev);
        }
        if (th_registry_find(x->p->reg, cur->device_id, jm->valuestring)) {
            ok = brk_ctl_push(skipped, cJSON_CreateString(cur->device_id)) && ok;
            nskipped++;
            continue;
        }
        struct th_identity *mod = NULL;
        if (th_registry_add_module_with(x->p->reg, cur->device_id, jm->valuestring, NULL, NULL,
                                        cJSON_IsObject(tags) ? tags : NULL,
                                        cJSON_IsObject(desired) ? desired : NULL, th_now_us(), &mod,
                                        &err) != TH_OK) {
            /* e.g. the device already has 50 modules: report it as skipped with the reason */
            cJSON *s = cJSON_CreateObject();
            if (s && !(cJSON_AddStringToObject(s, "deviceId", cur->device_id) &&
                       cJSON_AddStringToObject(s, "error", err.message))) {
                cJSON_Delete(s);
                s = NULL;
            }
            ok = brk_ctl_push(skipped, s) && ok;
            nskipped++;
            continue;
        }
        brk_persist_device(x->p, cur);
        brk_event_emit(x->p, TH_JOURNAL_MODULE_CREATED, mod->device_id, mod->module_id, NULL);
        ok = brk_ctl_push(created, cJSON_CreateString(cur->device_id)) && ok;
        ncreated++;
    }
    /* The modules exist now whatever happens below: on OOM the answer is a 500, and the
     * event stream still has every module_created. */
    ok = cJSON_AddStringToObject(data, "moduleId", jm->valuestring) &&
         cJSON_AddNumberToObject(data, "created", (double)ncreated) &&
         cJSON_AddNumberToObject(data, "skipped", (double)nskipped) && ok;
    ok = brk_ctl_put(data, "createdDevices", created) && ok;
    ok = brk_ctl_put(data, "skippedDevices", skipped) && ok;
    if (!ok) {
        cJSON_Delete(data);
        data = NULL;
    }
    brk_log(x->p, MOSQ_LOG_NOTICE, "ensureModule %s | created=%zu skipped=%zu", jm->valuestring,
            ncreated, nskipped);
    brk_ctl_reply_data(x, data);
}

void brk_cmd_devices_without_module(struct brk_cmd_ctx *x)
{
    struct th_error err = {0};
    const cJSON *jm = cJSON_GetObjectItemCaseSensitive(x->cmd, "moduleId");
    cJSON *arr, *data;
    if (!brk_ctl_need_perm(x, TH_PERM_REGISTRY_READ, "RegistryRead")) {
        return;
    }
    if (!cJSON_IsString(jm)) {
        th_error_set(&err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                     "'devicesWithoutModule' needs a string 'moduleId'");
        brk_ctl_reply_err(x, &err);
        return;
    }
    arr = cJSON_CreateArray();
    data = cJSON_CreateObject();
    for (struct th_identity *d = th_registry_next_device(x->p->reg, NULL); arr && d;
         d = th_registry_next_device(x->p->reg, d)) {
        if (!th_registry_find(x->p->reg, d->device_id, jm->valuestring) &&
            !brk_ctl_push(arr, cJSON_CreateString(d->device_id))) {
            cJSON_Delete(arr);
            arr = NULL;
        }
    }
    if (data && !(arr && cJSON_AddNumberToObject(data, "count", cJSON_GetArraySize(arr)) &&
                  brk_ctl_put(data, "deviceIds", arr))) {
        cJSON_Delete(data);
        data = NULL;
    } else if (!data) {
        cJSON_Delete(arr);
    }
    brk_ctl_reply_data(x, data);
}

/* ---- query and statistics ---- */

/* Answer a page of query results: takes `items` (NULL: out of memory). */
static void reply_page(struct brk_cmd_ctx *x, cJSON *items, const char *item_type, bool more,
                       size_t next_pos)
{
    cJSON *data = cJSON_CreateObject();
    char next[32];
    snprintf(next, sizeof next, "%zu", next_pos);
    if (data && !(brk_ctl_put(data, "items", items) &&
                  cJSON_AddStringToObject(data, "itemType", item_type) &&
                  (more ? cJSON_AddStringToObject(data, "continuation", next)
                        : cJSON_AddNullToObject(data, "continuation")))) {
        cJSON_Delete(data);
        data = NULL;
    } else if (!data) {
        cJSON_Delete(items);
    }
    brk_ctl_reply_data(x, data);
}

void brk_cmd_query(struct brk_cmd_ctx *x)
{
    struct th_error err = {0};
    const char *text, *cont;
    int page;
    struct th_query *q = NULL;
    cJSON **docs = NULL, *items = NULL, *pageitems;
    size_t n = 0, skip = 0;
    bool is_twin = false;

    if (!brk_ctl_need_perm(x, TH_PERM_SERVICE_CONNECT | TH_PERM_REGISTRY_READ, "ServiceConnect") ||
        !brk_ctl_string_or_reply(x, "query", &text) ||
        !brk_ctl_string_or_reply(x, "continuation", &cont) ||
        !brk_ctl_int_or_reply(x, "pageSize", 100, 1, 1000, &page)) {
        return;
    }
    if (!text) {
        th_error_set(&err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                     "'query' needs a string field 'query'");
        brk_ctl_reply_err(x, &err);
        return;
    }
    if (cont) {
        /* Only the decimal positions this command hands out: strtoull alone would also take
         * " 1", "+1" and "-1" (as 2^64 - 1) and wrap skip + page around. */
        char *end;
        errno = 0;
        unsigned long long v = strtoull(cont, &end, 10);
        if (*cont < '0' || *cont > '9' || *end != '\0' || errno == ERANGE ||
            v > (unsigned long long)(SIZE_MAX - 1000)) {
            th_error_set(&err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                         "'continuation' must be the token returned by the previous page");
            brk_ctl_reply_err(x, &err);
            return;
        }
        skip = (size_t)v;
    }
    if (th_query_parse(text, strlen(text), &q, &err) != TH_OK) {
        brk_ctl_reply_err(x, &err);
        return;
    }
    if (th_query_source(q) != TH_QUERY_JOBS) {
        /* Twins: the core pages the run itself and builds full twin documents only for the
         * results on the page (registry_query.h). */
        struct th_query_page pg;
        th_result r = th_registry_query(x->p->reg, q, skip, (size_t)page, &pg, &err);
        const char *item_type = th_query_item_type(q, pg.is_twin); /* a static string */
        th_query_free(q);
        if (r != TH_OK) {
            brk_ctl_reply_err(x, &err);
            return;
        }
        reply_page(x, pg.items, item_type, pg.more, skip + (size_t)page);
        return;
    }
    /* FROM devices.jobs reads the jobs' per-device records (control_jobs.c). */
    docs = brk_jobs_device_docs(x->p, &n);
    th_result r = docs ? th_query_run(q, docs, n, &items, &is_twin, &err)
                       : th_error_set(&err, TH_ERR_NOMEM, TH_EC_SERVER_ERROR, "out of memory");
    const char *item_type = th_query_item_type(q, is_twin); /* a static string */
    for (size_t i = 0; i < n; i++) {
        cJSON_Delete(docs[i]);
    }
    free(docs);
    th_query_free(q);
    if (r != TH_OK) {
        brk_ctl_reply_err(x, &err);
        return;
    }
    /* Page: detach items [skip, skip+page) into a new array. */
    pageitems = cJSON_CreateArray();
    size_t total = (size_t)cJSON_GetArraySize(items), i = 0;
    cJSON *it = items->child, *nx;
    for (; it; it = nx, i++) {
        nx = it->next;
        if (i >= skip && i < skip + (size_t)page && pageitems) {
            (void)brk_ctl_push(pageitems, cJSON_DetachItemViaPointer(items, it)); /* cannot fail */
        }
    }
    cJSON_Delete(items);
    reply_page(x, pageitems, item_type, skip + (size_t)page < total, skip + (size_t)page);
}

void brk_cmd_statistics(struct brk_cmd_ctx *x)
{
    size_t total = 0, enabled = 0, connected = 0, modules = 0, mconnected = 0;
    cJSON *data;
    if (!brk_ctl_need_perm(x, TH_PERM_REGISTRY_READ | TH_PERM_SERVICE_CONNECT, "RegistryRead")) {
        return;
    }
    for (struct th_identity *d = th_registry_next_device(x->p->reg, NULL); d;
         d = th_registry_next_device(x->p->reg, d)) {
        total++;
        enabled += d->enabled;
        connected += d->connected;
        modules += d->module_count;
        for (size_t i = 0; i < d->module_count; i++) {
            mconnected += d->modules[i]->connected;
        }
    }
    data = cJSON_CreateObject();
    if (data && !(cJSON_AddNumberToObject(data, "totalDeviceCount", (double)total) &&
                  cJSON_AddNumberToObject(data, "enabledDeviceCount", (double)enabled) &&
                  cJSON_AddNumberToObject(data, "disabledDeviceCount", (double)(total - enabled)) &&
                  cJSON_AddNumberToObject(data, "connectedDeviceCount", (double)connected) &&
                  cJSON_AddNumberToObject(data, "totalModuleCount", (double)modules) &&
                  cJSON_AddNumberToObject(data, "connectedModuleCount", (double)mconnected))) {
        cJSON_Delete(data);
        data = NULL;
    }
    brk_ctl_reply_data(x, data);
}

/* ---- import / export ---- */

void brk_cmd_export(struct brk_cmd_ctx *x)
{
    const cJSON *twins = cJSON_GetObjectItemCaseSensitive(x->cmd, "includeTwins");
    if (!brk_ctl_need_perm(x, TH_PERM_REGISTRY_READ, "RegistryRead")) {
        return;
    }
    brk_ctl_reply_data(x, th_registry_export(x->p->reg, !cJSON_IsFalse(twins)));
}

void brk_cmd_import(struct brk_cmd_ctx *x)
{
    struct th_error err = {0};
    const cJSON *doc = cJSON_GetObjectItemCaseSensitive(x->cmd, "registry");
    const cJSON *ow = cJSON_GetObjectItemCaseSensitive(x->cmd, "overwrite");
    size_t created = 0, updated = 0, skipped = 0;
    cJSON *data;
    if (!brk_ctl_need_perm(x, TH_PERM_REGISTRY_WRITE, "RegistryWrite")) {
        return;
    }
    if (!cJSON_IsObject(doc)) {
        th_error_set(&err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                     "'importRegistry' needs an object 'registry' in the registry file format");
        brk_ctl_reply_err(x, &err);
        return;
    }
    /* Remember desired versions so connected identities hear about imported changes. */
    size_t nids = th_registry_device_count(x->p->reg) + th_registry_module_total(x->p->reg), k = 0;
    struct seen {
        struct th_identity *id;
        int64_t desired_version;
    } *before = calloc(nids ? nids : 1, sizeof *before);
    if (!before) {
        th_error_set(&err, TH_ERR_NOMEM, TH_EC_SERVER_ERROR, "out of memory");
        brk_ctl_reply_err(x, &err);
        return;
    }
    for (struct th_identity *d = th_registry_next_device(x->p->reg, NULL); d && k < nids;
         d = th_registry_next_device(x->p->reg, d)) {
        before[k++] = (struct seen){d, d->twin->desired_version};
        for (size_t i = 0; i < d->module_count && k < nids; i++) {
            before[k++] = (struct seen){d->modules[i], d->modules[i]->twin->desired_version};
        }
    }
    if (th_registry_import(x->p->reg, doc, cJSON_IsTrue(ow), th_now_us(), &created, &updated,
                           &skipped, &err) != TH_OK) {
        free(before);
        brk_ctl_reply_err(x, &err);
        return;
    }
    for (size_t i = 0; i < k; i++) {
        struct th_twin *t = before[i].id->twin;
        if (t->desired_version != before[i].desired_version) {
            cJSON *view = th_twin_device_view(t);
            cJSON *desired = view ? cJSON_GetObjectItemCaseSensitive(view, "desired") : NULL;
            if (desired) {
                brk_deliver_desired(x->p, before[i].id, desired, t->desired_version);
            }
            cJSON_Delete(view);
        }
    }
    free(before);
    brk_persist_all(x->p);
    data = cJSON_CreateObject();
    if (data && !(cJSON_AddNumberToObject(data, "created", (double)created) &&
                  cJSON_AddNumberToObject(data, "updated", (double)updated) &&
                  cJSON_AddNumberToObject(data, "skipped", (double)skipped))) {
        cJSON_Delete(data);
        data = NULL;
    }
    brk_ctl_reply_data(x, data);
}
