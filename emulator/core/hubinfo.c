/*
 * hubinfo.c - the hub info file's document (hubinfo.h, docs/cli.md).
 */
#include "hubinfo.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

/* The string members; every other member is a number. */
#define STRING(key, field)                                                                         \
    {                                                                                              \
        key, offsetof(struct th_hubinfo, field), sizeof(((struct th_hubinfo *)0)->field)           \
    }
static const struct {
    const char *key;
    size_t offset, size;
} strings[] = {
    STRING("hubName", hub_name),
    STRING("bind", bind),
    STRING("restConnectionString", rest_cs),
    STRING("caFile", ca_file),
    STRING("deviceId", device_id),
    STRING("moduleId", module_id),
    STRING("deviceConnectionString", device_cs),
    STRING("moduleConnectionString", module_cs),
    STRING("serviceConnectionString", service_cs),
    STRING("dashboardUrl", dashboard_url),
    STRING("idScope", id_scope),
    STRING("provisioningHost", provisioning_host),
    STRING("provisioningServiceConnectionString", dps_cs),
};
#undef STRING

static const struct {
    const char *key;
    size_t offset;
} ports[] = {
    {"mqttPort", offsetof(struct th_hubinfo, mqtt_port)},
    {"mqttsPort", offsetof(struct th_hubinfo, mqtts_port)},
    {"httpsPort", offsetof(struct th_hubinfo, https_port)},
};

/* A string member, or null for "". */
static bool add_string(cJSON *o, const char *key, const char *value)
{
    return value[0] ? cJSON_AddStringToObject(o, key, value) != NULL
                    : cJSON_AddNullToObject(o, key) != NULL;
}

cJSON *th_hubinfo_to_json(const struct th_hubinfo *info)
{
    cJSON *o = cJSON_CreateObject();
    bool ok = o && add_string(o, "hubName", info->hub_name) && add_string(o, "bind", info->bind) &&
              cJSON_AddNumberToObject(o, "mqttPort", info->mqtt_port) &&
              cJSON_AddNumberToObject(o, "mqttsPort", info->mqtts_port) &&
              cJSON_AddNumberToObject(o, "httpsPort", info->https_port) &&
              add_string(o, "restConnectionString", info->rest_cs) &&
              add_string(o, "caFile", info->ca_file) &&
              add_string(o, "deviceId", info->device_id) &&
              add_string(o, "moduleId", info->module_id) &&
              add_string(o, "deviceConnectionString", info->device_cs) &&
              add_string(o, "moduleConnectionString", info->module_cs) &&
              add_string(o, "serviceConnectionString", info->service_cs) &&
              add_string(o, "dashboardUrl", info->dashboard_url) &&
              cJSON_AddNumberToObject(o, "pid", (double)info->pid) &&
              add_string(o, "idScope", info->id_scope) &&
              add_string(o, "provisioningHost", info->provisioning_host) &&
              add_string(o, "provisioningServiceConnectionString", info->dps_cs);
    if (ok && info->state_set_aside) {
        cJSON *copy = cJSON_Duplicate(info->state_set_aside, true);
        ok = copy && cJSON_AddItemToObject(o, "stateSetAside", copy);
        if (!ok)
            cJSON_Delete(copy);
    }
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

th_result th_hubinfo_from_json(const cJSON *doc, struct th_hubinfo *out, struct th_error *err)
{
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, strings[i].key);
        if (!cJSON_IsString(v))
            continue;
        if (strlen(v->valuestring) >= strings[i].size)
            return th_error_set(err, TH_ERR_TOO_LARGE, 0, "its %s is too long", strings[i].key);
        memcpy((char *)out + strings[i].offset, v->valuestring, strlen(v->valuestring) + 1);
    }
    for (size_t k = 0; k < sizeof ports / sizeof ports[0]; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, ports[k].key);
        if (cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble <= 65535)
            *(int *)((char *)out + ports[k].offset) = (int)v->valuedouble;
    }
    const cJSON *pid = cJSON_GetObjectItemCaseSensitive(doc, "pid");
    if (cJSON_IsNumber(pid) && pid->valuedouble > 0 && pid->valuedouble < 4194305.0)
        out->pid = (long)pid->valuedouble;
    if (!out->hub_name[0] || (out->mqtt_port <= 0 && out->mqtts_port <= 0))
        return th_error_set(err, TH_ERR_INVAL, 0, "no hubName or ports");
    return TH_OK;
}

th_result th_hubinfo_host(const struct th_hubinfo *info, char *out, size_t size)
{
    const char *bind = info->bind;
    const char *host = bind;
    if (!bind[0] || !strcmp(bind, "0.0.0.0"))
        host = "127.0.0.1";
    else if (!strcmp(bind, "::") || !strcmp(bind, "[::]"))
        host = "::1";
    int n = snprintf(out, size, "%s", host);
    return n >= 0 && (size_t)n < size ? TH_OK : TH_ERR_BUFFER;
}
