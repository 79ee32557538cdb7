/*
 * control_config.c - automatic device and module configurations in the
 * broker (core/config.h): the control API's configuration commands, the
 * re-evaluation of every twin when twins, tags or configurations change
 * (at once after each control request; within the 200 ms scan interval of
 * the tick when a device's reported properties changed), the desired notifications of the content
 * written, and configurations.json in the state directory.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "control.h"
#include "json.h"
#include "th_file.h"
#include "util.h"

#define CONFIG_FILE "configurations.json"
#define CONFIG_FILE_MAX (8 * 1024 * 1024)

/* ---- the state directory ---- */

static void config_path(const struct brk_plugin *p, char *buf, size_t size)
{
    snprintf(buf, size, "%s/" CONFIG_FILE, p->state_dir);
}

static void save_configs(struct brk_plugin *p)
{
    char path[4096];
    if (!p->state_dir) {
        return;
    }
    cJSON *state = th_config_store_json(p->configs);
    char *text = state ? th_json_print(state) : NULL;
    cJSON_Delete(state);
    config_path(p, path, sizeof path);
    if (!text || th_file_replace_bytes(path, 0600, text, strlen(text)) != TH_FILE_DONE) {
        brk_log(p, MOSQ_LOG_ERR, "configurations not saved | %s: %s", path,
                text ? strerror(errno) : "out of memory");
    }
    free(text);
}

int brk_config_load(struct brk_plugin *p)
{
    char path[4096];
    p->configs = th_config_store_new();
    if (!p->configs) {
        return MOSQ_ERR_NOMEM;
    }
    if (!p->state_dir) {
        return MOSQ_ERR_SUCCESS;
    }
    config_path(p, path, sizeof path);
    size_t len = 0;
    char *text = th_file_read(path, CONFIG_FILE_MAX, &len);
    if (!text) {
        return MOSQ_ERR_SUCCESS; /* none saved yet */
    }
    cJSON *doc = NULL;
    struct th_error err = {0};
    th_result r = th_json_parse(text, len, CONFIG_FILE_MAX, 64, &doc, &err);
    free(text);
    if (r == TH_OK) {
        r = th_config_store_restore(p->configs, doc, &err);
    }
    cJSON_Delete(doc);
    if (r == TH_ERR_NOMEM) {
        return MOSQ_ERR_NOMEM;
    }
    if (r != TH_OK) {
        char aside[4200];
        snprintf(aside, sizeof aside, "%s.unloadable", path);
        bool moved = rename(path, aside) == 0;
        mosquitto_log_printf(MOSQ_LOG_ERR, "twinhub: configurations not loaded: %s: %s; %s%s", path,
                             err.message, moved ? "moved to " : "left in place",
                             moved ? aside : "");
        return MOSQ_ERR_SUCCESS;
    }
    mosquitto_log_printf(MOSQ_LOG_NOTICE, "twinhub: %zu configurations restored",
                         th_config_count(p->configs));
    return MOSQ_ERR_SUCCESS;
}

void brk_config_free(struct brk_plugin *p)
{
    th_config_store_free(p->configs);
    p->configs = NULL;
}

/* ---- applying ---- */

static void hook_twin_written(void *arg, struct th_identity *id,
                              const struct th_twin_write_result *res)
{
    struct brk_plugin *p = arg;
    if (!res->notification) {
        return;
    }
    bool delivered = brk_deliver_desired(p, id, res->notification, res->desired_version);
    brk_event_emit(
        p, TH_JOURNAL_DESIRED, id->device_id, id->module_id,
        th_journal_data_desired(cJSON_Duplicate(res->desired, 1), res->desired_version, delivered));
    brk_log(p, MOSQ_LOG_INFO, "%s%s%s | configuration content | version=%lld delivered=%d",
            id->device_id, id->module_id ? "/" : "", id->module_id ? id->module_id : "",
            (long long)res->desired_version, delivered);
}

static void hook_statuses_changed(void *arg, struct th_identity *id)
{
    brk_persist_device(arg, id);
}

static const struct th_config_hooks *hooks_of(struct brk_plugin *p)
{
    static struct th_config_hooks hooks = {NULL, hook_twin_written, hook_statuses_changed};
    hooks.arg = p;
    return &hooks;
}

void brk_config_apply(struct brk_plugin *p)
{
    struct th_error err = {0};
    if (!p->configs_dirty || !p->configs) {
        return;
    }
    p->configs_dirty = false;
    size_t n = th_config_count(p->configs);
    /* Also without configurations, once: statuses restored from device files whose
     * configurations are gone (configurations.json set aside) are cleared. After that pass
     * nothing can change until a configuration exists; skipping keeps a twin write from
     * walking the whole registry (the desired fan-out bench, performance.md). */
    if (n == 0 && p->configs_none_applied) {
        return;
    }
    if (th_config_apply(p->configs, p->reg, th_now_us(), hooks_of(p), &err) != TH_OK) {
        brk_log(p, MOSQ_LOG_ERR, "configurations not applied | %s", err.message);
        p->configs_dirty = true;
        return;
    }
    p->configs_none_applied = n == 0;
}

/* ---- commands ---- */

static bool id_or_reply(struct brk_cmd_ctx *x, const char **id)
{
    struct th_error err = {0};
    *id = th_json_string(x->cmd, "id", NULL);
    if (*id) {
        return true;
    }
    th_error_set(&err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID, "'%s' needs a string 'id'", x->name);
    brk_ctl_reply_err(x, &err);
    return false;
}

static void reply_view(struct brk_cmd_ctx *x, const char *id)
{
    struct th_error err = {0};
    cJSON *view = NULL;
    if (th_config_get_json(x->p->configs, x->p->reg, id, &view, &err) != TH_OK) {
        brk_ctl_reply_err(x, &err);
        return;
    }
    brk_ctl_reply_data(x, view);
}

/* createConfiguration / updateConfiguration {id, configuration, etag}: then applied at once. */
static void write_config(struct brk_cmd_ctx *x, bool update)
{
    struct th_error err = {0};
    const char *id, *etag;
    if (!brk_ctl_need_perm(x, TH_PERM_REGISTRY_WRITE, "RegistryWrite") || !id_or_reply(x, &id) ||
        !brk_ctl_string_or_reply(x, "etag", &etag)) {
        return;
    }
    const cJSON *doc = cJSON_GetObjectItemCaseSensitive(x->cmd, "configuration");
    th_result r = update ? th_config_update(x->p->configs, id, doc, etag, th_now_us(), &err)
                         : th_config_create(x->p->configs, id, doc, th_now_us(), &err);
    if (r != TH_OK) {
        brk_ctl_reply_err(x, &err);
        return;
    }
    save_configs(x->p);
    brk_log(x->p, MOSQ_LOG_INFO, "service | configuration %s | id=%s",
            update ? "updated" : "created", id);
    x->p->configs_dirty = true;
    brk_config_apply(x->p);
    reply_view(x, id);
}

void brk_cmd_create_configuration(struct brk_cmd_ctx *x)
{
    write_config(x, false);
}

void brk_cmd_update_configuration(struct brk_cmd_ctx *x)
{
    write_config(x, true);
}

void brk_cmd_get_configuration(struct brk_cmd_ctx *x)
{
    const char *id;
    if (brk_ctl_need_perm(x, TH_PERM_REGISTRY_READ, "RegistryRead") && id_or_reply(x, &id)) {
        brk_config_apply(x->p); /* metrics as of now */
        reply_view(x, id);
    }
}

void brk_cmd_list_configurations(struct brk_cmd_ctx *x)
{
    int top;
    if (!brk_ctl_need_perm(x, TH_PERM_REGISTRY_READ, "RegistryRead") ||
        !brk_ctl_int_or_reply(x, "top", 0, 0, 1000, &top)) {
        return;
    }
    brk_config_apply(x->p);
    brk_ctl_reply_data(x, th_config_list_json(x->p->configs, x->p->reg, (size_t)top));
}

void brk_cmd_delete_configuration(struct brk_cmd_ctx *x)
{
    struct th_error err = {0};
    const char *id, *etag;
    if (!brk_ctl_need_perm(x, TH_PERM_REGISTRY_WRITE, "RegistryWrite") || !id_or_reply(x, &id) ||
        !brk_ctl_string_or_reply(x, "etag", &etag)) {
        return;
    }
    brk_config_apply(x->p); /* twins first as they stand, so that removal starts from there */
    if (th_config_delete(x->p->configs, x->p->reg, id, etag, th_now_us(), hooks_of(x->p), &err) !=
        TH_OK) {
        brk_ctl_reply_err(x, &err);
        return;
    }
    save_configs(x->p);
    brk_log(x->p, MOSQ_LOG_INFO, "service | configuration deleted | id=%s", id);
    brk_ctl_reply_ok(x, NULL);
}

void brk_cmd_test_configuration_queries(struct brk_cmd_ctx *x)
{
    struct th_error err = {0};
    cJSON *out = NULL;
    if (!brk_ctl_need_perm(x, TH_PERM_REGISTRY_READ, "RegistryRead")) {
        return;
    }
    if (th_config_test_queries(cJSON_GetObjectItemCaseSensitive(x->cmd, "input"), &out, &err) !=
        TH_OK) {
        brk_ctl_reply_err(x, &err);
        return;
    }
    brk_ctl_reply_data(x, out);
}
