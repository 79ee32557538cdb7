/*
 * auth.h - the hub's authentication decisions on a parsed SAS token (sas.h):
 * whether a token's resource URI covers an identity, whether it verifies
 * against an identity's keys, and which service REST calls a device's own key
 * may make. The broker's CONNECT check (broker/auth.c) and the gateway's REST
 * check (gateway/gw_rest.c) call these, so both apply one rule
 * (iothub-protocol.md 2.3, docs/protocol.md "Connection", docs/rest-api.md
 * "Authentication").
 *
 * Pure: ids, keys and the time come in; a th_result and a reason (th_error,
 * 401 / 401002 IotHubUnauthorizedAccess) go out. No function here looks
 * anything up: the caller finds the identity and passes what it holds.
 *
 * Decisions where the hub is silent (docs/protocol.md, docs/rest-api.md):
 * - An id in `sr` is matched to the identity's id ignoring ASCII case. The
 *   SAS article says the signed URI is the lower-case encoding of the
 *   lower-cased resource URI and IoT Edge lower-cases its audience, while its
 *   MQTT example keeps the case: the hub must accept both. The signature is
 *   still computed over `sr` exactly as sent, so a case-insensitive scope
 *   widens nothing: the key checked is the identity's own.
 * - `sr` is percent-decoded once (sas.h); an escape left after that is part of
 *   the id, not decoded again.
 */
#ifndef TH_AUTH_H
#define TH_AUTH_H

#include <stdbool.h>
#include <stdint.h>

#include "sas.h"
#include "th_result.h"

/* errorCode of every refusal here (IotHubUnauthorizedAccess). */
#define TH_AUTH_ERR_CODE 401002

/* An id taken from `sr` against an identity's id: equal ignoring ASCII case. */
bool th_auth_id_eq(const char *sr_id, const char *identity_id);

/*
 * Whether the resource of a CONNECT token covers the identity `device_id`
 * (with `module_id`, or NULL for the device itself).
 * - Signed with the identity's own key (`policy` false): `sr` must name that
 *   identity exactly: {host}/devices/{d} for a device, .../modules/{m} for a
 *   module.
 * - Signed with a DeviceConnect policy (`policy` true): {host},
 *   {host}/devices, {host}/devices/{d} (the device and its modules) or
 *   {host}/devices/{d}/modules/{m} (that module only).
 * TH_OK, or TH_ERR_AUTH with a reason naming both sides.
 */
TH_NODISCARD th_result th_auth_connect_scope(const struct th_sas_resource *res, bool policy,
                                             const char *device_id, const char *module_id,
                                             struct th_error *err);

/*
 * Verify `tok` with the primary key, then with the secondary one when the
 * signature did not match and a secondary key is set (NULL or "" for none).
 * Results as th_sas_verify: TH_OK, TH_ERR_AUTH (no key matches), TH_ERR_EXPIRED
 * (a key matched, the token expired), TH_ERR_INVAL (a key is not base64).
 */
TH_NODISCARD th_result th_auth_verify_keys(const struct th_sas_token *tok, const char *primary_key,
                                           const char *secondary_key, int64_t now_s, int64_t skew_s,
                                           struct th_error *err);

/* What a service REST endpoint is, for the device-key rule below. */
enum th_auth_rest_target {
    TH_AUTH_REST_SERVICE = 0,    /* only shared access policies may call it */
    TH_AUTH_REST_DEVICE_MODULES, /* /devices/{d}/modules and /devices/{d}/modules/{m} */
};

/* Whether a token is signed with an identity's own key (no `skn`) rather than a policy key. */
static inline bool th_auth_is_device_key(const struct th_sas_token *tok)
{
    return tok->skn.ptr == NULL;
}

/*
 * First half of the decision on a service REST request that carries a token
 * signed with a device's own key (no `skn`): whether that may be allowed at
 * all, before any key is fetched. TH_OK when `target` is the module registry
 * of `path_device_id` (the device named in the request path) and `sr` is
 * {host}, {host}/devices or {host}/devices/{path_device_id}: the endpoints
 * IoT Edge's identity service and the security agents call with a device
 * key. Every other endpoint, another device's modules and a module-scoped
 * `sr` are TH_ERR_AUTH with a reason. The caller then checks the signature
 * with th_auth_rest_device_key against `path_device_id`'s keys.
 */
TH_NODISCARD th_result th_auth_rest_device_scope(const struct th_sas_resource *res,
                                                 enum th_auth_rest_target target,
                                                 const char *path_device_id, struct th_error *err);

/* What the registry holds about the device a device-key token must verify against. */
struct th_auth_device {
    const char *device_id;
    const char *primary_key;
    const char *secondary_key; /* NULL or "" for none */
    bool enabled;
};

/*
 * Second half: `tok` against the device's keys. `dev` NULL means the device
 * is not registered. TH_OK; TH_ERR_AUTH (not registered, disabled, or no key
 * matches), TH_ERR_EXPIRED or TH_ERR_INVAL (a stored key is not base64), each
 * with a reason.
 */
TH_NODISCARD th_result th_auth_rest_device_key(const struct th_sas_token *tok,
                                               const struct th_auth_device *dev, int64_t now_s,
                                               int64_t skew_s, struct th_error *err);

#endif
