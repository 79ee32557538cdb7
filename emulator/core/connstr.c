/*
 * connstr.c - IoT Hub connection strings (connstr.h; real-clients.md 2.1).
 */
#include "connstr.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* Copy `len` bytes of `src` into `dst`; false when they do not fit with the NUL. */
static bool copy_n(char *dst, size_t size, const char *src, size_t len)
{
    if (len >= size)
        return false;
    memcpy(dst, src, len);
    dst[len] = '\0';
    return true;
}

th_result th_connstr_parse(const char *text, struct th_connstr *out, struct th_error *err)
{
    static const struct {
        const char *key;
        size_t offset, size;
    } fields[] = {
        {"HostName", offsetof(struct th_connstr, host_name), sizeof out->host_name},
        {"DeviceId", offsetof(struct th_connstr, device_id), sizeof out->device_id},
        {"ModuleId", offsetof(struct th_connstr, module_id), sizeof out->module_id},
        {"SharedAccessKeyName", offsetof(struct th_connstr, key_name), sizeof out->key_name},
        {"SharedAccessKey", offsetof(struct th_connstr, key), sizeof out->key},
        {"GatewayHostName", offsetof(struct th_connstr, gateway), sizeof out->gateway},
    };
    memset(out, 0, sizeof *out);
    for (const char *p = text ? text : ""; *p;) {
        size_t len = strcspn(p, ";");
        const char *eq = memchr(p, '=', len);
        if (eq) {
            size_t klen = (size_t)(eq - p);
            for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
                if (strlen(fields[i].key) != klen || strncasecmp(p, fields[i].key, klen) != 0)
                    continue;
                if (!copy_n((char *)out + fields[i].offset, fields[i].size, eq + 1, len - klen - 1))
                    return th_error_set(err, TH_ERR_TOO_LARGE, 0, "the value of %.*s is too long",
                                        (int)klen, p);
                break;
            }
        }
        p += len;
        if (*p == ';')
            p++;
    }
    return TH_OK;
}

/* snprintf's verdict as a result: TH_ERR_BUFFER when `n` did not fit in `size`. */
static th_result fits(int n, size_t size)
{
    return n >= 0 && (size_t)n < size ? TH_OK : TH_ERR_BUFFER;
}

th_result th_connstr_gateway(const char *host, int tls_port, char *out, size_t size)
{
    bool brackets = strchr(host, ':') && host[0] != '[';
    int n;
    if (tls_port && tls_port != TH_MQTTS_DEFAULT_PORT)
        n = snprintf(out, size, brackets ? "[%s]:%d" : "%s:%d", host, tls_port);
    else
        n = snprintf(out, size, brackets ? "[%s]" : "%s", host);
    return fits(n, size);
}

th_result th_connstr_identity(const char *hub, const char *device, const char *module,
                              const char *key, const char *gateway, char *out, size_t size)
{
    /* A GatewayHostName that only repeats HostName says nothing: the SDKs dial HostName then. */
    bool gw = gateway && gateway[0] && strcasecmp(gateway, hub) != 0;
    int n = snprintf(out, size, "HostName=%s;DeviceId=%s%s%s;SharedAccessKey=%s%s%s", hub, device,
                     module ? ";ModuleId=" : "", module ? module : "", key,
                     gw ? ";GatewayHostName=" : "", gw ? gateway : "");
    return fits(n, size);
}

th_result th_connstr_service(const char *hub, const char *policy, const char *key, char *out,
                             size_t size)
{
    return fits(snprintf(out, size, "HostName=%s;SharedAccessKeyName=%s;SharedAccessKey=%s", hub,
                         policy, key),
                size);
}
