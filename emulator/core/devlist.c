/*
 * devlist.c - the dashboard's device list: filter and summary rows
 * (devlist.h; the broker's `listDeviceSummaries` pages over them).
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "devlist.h"
#include "json.h"
#include "secconfig.h"
#include "util.h"

/* A string member, absent or null: *out NULL; else TH_ERR_INVAL. */
static th_result opt_string(const cJSON *cmd, const char *key, const char **out,
                            struct th_error *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cmd, key);
    *out = NULL;
    if (!v || cJSON_IsNull(v))
        return TH_OK;
    if (!cJSON_IsString(v))
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID, "'%s' must be a string",
                            key);
    *out = v->valuestring;
    return TH_OK;
}

/* A whole number member in [lo, hi]; absent or null: def. */
static th_result opt_long(const cJSON *cmd, const char *key, long def, long lo, long hi, long *out,
                          struct th_error *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cmd, key);
    *out = def;
    if (!v || cJSON_IsNull(v))
        return TH_OK;
    if (!cJSON_IsNumber(v) || v->valuedouble != (double)(long)v->valuedouble ||
        v->valuedouble < (double)lo || v->valuedouble > (double)hi)
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "'%s' must be a whole number from %ld to %ld", key, lo, hi);
    *out = (long)v->valuedouble;
    return TH_OK;
}

/* "yes"/"no" words of a two-valued member (absent or null: -1). */
static th_result opt_choice(const cJSON *cmd, const char *key, const char *yes, const char *no,
                            int *out, struct th_error *err)
{
    const char *s;
    th_result r = opt_string(cmd, key, &s, err);
    *out = -1;
    if (r != TH_OK || !s)
        return r;
    if (!strcmp(s, yes) || !strcmp(s, no)) {
        *out = !strcmp(s, yes);
        return TH_OK;
    }
    return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID, "'%s' must be '%s' or '%s'",
                        key, yes, no);
}

th_result th_devlist_filter_from_json(const cJSON *cmd, struct th_devlist_filter *out,
                                      struct th_error *err)
{
    memset(out, 0, sizeof *out);
    th_result r;
    const cJSON *sec = cJSON_GetObjectItemCaseSensitive(cmd, "security");
    if ((r = opt_string(cmd, "search", &out->search, err)) != TH_OK ||
        (r = opt_string(cmd, "moduleId", &out->module_id, err)) != TH_OK ||
        (r = opt_choice(cmd, "status", "enabled", "disabled", &out->enabled, err)) != TH_OK ||
        (r = opt_choice(cmd, "connectionState", "Connected", "Disconnected", &out->connected,
                        err)) != TH_OK ||
        (r = opt_long(cmd, "skip", 0, 0, 1L << 30, &out->skip, err)) != TH_OK ||
        (r = opt_long(cmd, "top", TH_DEVLIST_DEFAULT_TOP, 1, TH_DEVLIST_MAX_TOP, &out->top, err)) !=
            TH_OK)
        return r;
    if (sec && !cJSON_IsNull(sec) && !cJSON_IsBool(sec))
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "'security' must be true or false");
    out->security = cJSON_IsTrue(sec);
    return TH_OK;
}

/* `needle` anywhere in `hay`, ASCII case ignored. */
static bool contains_nocase(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (; *hay; hay++)
        if (!strncasecmp(hay, needle, n))
            return true;
    return n == 0;
}

bool th_devlist_match(const struct th_identity *dev, const struct th_devlist_filter *f)
{
    if (f->enabled >= 0 && dev->enabled != (f->enabled == 1))
        return false;
    if (f->connected >= 0 && dev->connected != (f->connected == 1))
        return false;
    bool has_module = !f->module_id;
    bool found = !f->search || !f->search[0] || contains_nocase(dev->device_id, f->search);
    for (size_t i = 0; i < dev->module_count && (!has_module || !found); i++) {
        const char *mid = dev->modules[i]->module_id;
        if (f->module_id && !strcmp(mid, f->module_id))
            has_module = true;
        if (!found && contains_nocase(mid, f->search))
            found = true;
    }
    return has_module && found;
}

static bool add_time(cJSON *o, const char *key, int64_t us)
{
    char buf[TH_TIME_BUF];
    if (us == 0)
        return cJSON_AddStringToObject(o, key, TH_TIME_NEVER) != NULL;
    th_time_format(us, buf);
    return cJSON_AddStringToObject(o, key, buf) != NULL;
}

static const char *conn_state(const struct th_identity *id)
{
    return id->connected ? "Connected" : "Disconnected";
}

/* The "security" member: the azureiotsecurity module's state, as `twinhub security status`. */
static cJSON *security_json(const struct th_identity *dev)
{
    const struct th_identity *m = NULL;
    for (size_t i = 0; i < dev->module_count && !m; i++)
        if (!strcmp(dev->modules[i]->module_id, TH_SECCONFIG_MODULE_ID))
            m = dev->modules[i];
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddBoolToObject(o, "module", m != NULL))
        goto fail;
    if (!m)
        return o;
    const cJSON *desired = m->twin ? cJSON_GetObjectItemCaseSensitive(m->twin->desired,
                                                                      TH_SECCONFIG_OBJECT)
                                   : NULL;
    const cJSON *reported = m->twin ? cJSON_GetObjectItemCaseSensitive(m->twin->reported,
                                                                       TH_SECCONFIG_OBJECT)
                                    : NULL;
    cJSON *diff = NULL;
    if (!cJSON_AddStringToObject(o, "connectionState", conn_state(m)) ||
        th_secconfig_diff(desired, reported, &diff) != TH_OK)
        goto fail;
    const char *verdict = th_secconfig_verdict(reported, diff);
    if (!cJSON_AddStringToObject(o, "configuration", verdict) ||
        !cJSON_AddItemToObject(o, "differences", diff)) {
        cJSON_Delete(diff);
        goto fail;
    }
    return o;
fail:
    cJSON_Delete(o);
    return NULL;
}

cJSON *th_devlist_row(const struct th_identity *dev, bool security)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *mods = o ? cJSON_CreateArray() : NULL;
    bool ok = mods && cJSON_AddStringToObject(o, "deviceId", dev->device_id) &&
              cJSON_AddStringToObject(o, "status", dev->enabled ? "enabled" : "disabled") &&
              cJSON_AddStringToObject(o, "connectionState", conn_state(dev)) &&
              add_time(o, "lastActivityTime", dev->last_activity_us) &&
              add_time(o, "connectionStateUpdatedTime", dev->connection_state_updated_us) &&
              cJSON_AddNumberToObject(o, "cloudToDeviceMessageCount", (double)dev->c2d_count) &&
              cJSON_AddBoolToObject(o, "iotEdge", dev->iot_edge);
    if (ok) {
        ok = cJSON_AddItemToObject(o, "modules", mods);
        if (!ok)
            cJSON_Delete(mods);
    } else {
        cJSON_Delete(mods);
    }
    for (size_t i = 0; ok && i < dev->module_count; i++) {
        const struct th_identity *m = dev->modules[i];
        cJSON *mo = cJSON_CreateObject();
        if (!mo || !cJSON_AddItemToArray(mods, mo)) { /* mods owns mo from here */
            cJSON_Delete(mo);
            ok = false;
            break;
        }
        ok = cJSON_AddStringToObject(mo, "moduleId", m->module_id) &&
             cJSON_AddStringToObject(mo, "connectionState", conn_state(m)) &&
             add_time(mo, "lastActivityTime", m->last_activity_us);
    }
    if (ok && security) {
        cJSON *s = security_json(dev);
        ok = s && cJSON_AddItemToObject(o, "security", s);
        if (!ok)
            cJSON_Delete(s);
    }
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}
