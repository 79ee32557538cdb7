/*
 * auth.c - the hub's authentication decisions on a parsed SAS token: scope of
 * a CONNECT token, verification against an identity's two keys, and the
 * device-key rule of the service REST API (auth.h; iothub-protocol.md 2.3).
 */
#include "auth.h"

#include <stdio.h>
#include <string.h>

#include "util.h"

bool th_auth_id_eq(const char *sr_id, const char *identity_id)
{
    return th_slice_ieq(sr_id, strlen(sr_id), identity_id, strlen(identity_id));
}

/* "d" or "d/m" for messages; "" for a bare host or {host}/devices. */
static const char *resource_name(const struct th_sas_resource *res, char *buf, size_t size)
{
    snprintf(buf, size, "%s%s%s", res->device_id, res->module_id[0] ? "/" : "", res->module_id);
    return buf;
}

th_result th_auth_connect_scope(const struct th_sas_resource *res, bool policy,
                                const char *device_id, const char *module_id, struct th_error *err)
{
    if (res == NULL || device_id == NULL)
        return th_error_set(err, TH_ERR_INVAL, TH_AUTH_ERR_CODE, "no identity to check against");

    bool covered;
    if (policy) {
        /* A policy signs for whatever its resource URI is a segment prefix of. */
        covered = res->device_id[0] == '\0' ||
                  (th_auth_id_eq(res->device_id, device_id) &&
                   (res->module_id[0] == '\0' ||
                    (module_id != NULL && th_auth_id_eq(res->module_id, module_id))));
    } else {
        /* An identity's own key signs for that identity only. */
        covered = th_auth_id_eq(res->device_id, device_id) &&
                  (module_id != NULL ? th_auth_id_eq(res->module_id, module_id)
                                     : res->module_id[0] == '\0');
    }
    if (covered)
        return TH_OK;

    char have[sizeof res->device_id + sizeof res->module_id + 1];
    resource_name(res, have, sizeof have);
    return th_error_set(err, TH_ERR_AUTH, TH_AUTH_ERR_CODE,
                        "SAS token resource is for '%s', not for '%s%s%s'",
                        have[0]            ? have
                        : res->all_devices ? "all devices"
                                           : "the hub",
                        device_id, module_id ? "/" : "", module_id ? module_id : "");
}

th_result th_auth_verify_keys(const struct th_sas_token *tok, const char *primary_key,
                              const char *secondary_key, int64_t now_s, int64_t skew_s,
                              struct th_error *err)
{
    th_result r = th_sas_verify(tok, primary_key, now_s, skew_s, err);
    if (r == TH_ERR_AUTH && secondary_key != NULL && secondary_key[0] != '\0')
        r = th_sas_verify(tok, secondary_key, now_s, skew_s, err);
    return r;
}

th_result th_auth_rest_device_scope(const struct th_sas_resource *res,
                                    enum th_auth_rest_target target, const char *path_device_id,
                                    struct th_error *err)
{
    if (res == NULL)
        return th_error_set(err, TH_ERR_INVAL, TH_AUTH_ERR_CODE, "no token resource to check");
    if (target != TH_AUTH_REST_DEVICE_MODULES || path_device_id == NULL)
        return th_error_set(err, TH_ERR_AUTH, TH_AUTH_ERR_CODE,
                            "a device's own key grants DeviceConnect only; this endpoint needs a "
                            "shared access policy token (skn=<policy>, sr=<hub name>)");
    if (res->module_id[0] != '\0')
        return th_error_set(err, TH_ERR_AUTH, TH_AUTH_ERR_CODE,
                            "a module token cannot manage module identities; sign with the "
                            "device's key (sr=<hub name> or <hub name>/devices/%s)",
                            path_device_id);
    if (res->device_id[0] != '\0' && !th_auth_id_eq(res->device_id, path_device_id))
        return th_error_set(err, TH_ERR_AUTH, TH_AUTH_ERR_CODE,
                            "a token of device '%s' cannot manage the modules of device '%s'",
                            res->device_id, path_device_id);
    return TH_OK;
}

th_result th_auth_rest_device_key(const struct th_sas_token *tok, const struct th_auth_device *dev,
                                  int64_t now_s, int64_t skew_s, struct th_error *err)
{
    if (tok == NULL)
        return th_error_set(err, TH_ERR_INVAL, TH_AUTH_ERR_CODE, "SAS token was not parsed");
    if (dev == NULL || dev->device_id == NULL)
        return th_error_set(err, TH_ERR_AUTH, TH_AUTH_ERR_CODE,
                            "the token has no skn, so it must be signed with the key of the "
                            "device in the path, and that device is not registered");
    if (!dev->enabled)
        return th_error_set(err, TH_ERR_AUTH, TH_AUTH_ERR_CODE,
                            "device '%s' is disabled; its keys authenticate nothing",
                            dev->device_id);
    th_result r =
        th_auth_verify_keys(tok, dev->primary_key, dev->secondary_key, now_s, skew_s, err);
    if (r == TH_ERR_AUTH)
        return th_error_set(err, TH_ERR_AUTH, TH_AUTH_ERR_CODE,
                            "the token has no skn, and its signature does not match the keys of "
                            "device '%s'",
                            dev->device_id);
    return r;
}
