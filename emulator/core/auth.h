/*
 * auth.h - every authentication decision of the hub, in one place
 * (iothub-protocol.md 2.3, docs/protocol.md "Connection", docs/rest-api.md
 * "Authentication"):
 * - th_auth_connect: an MQTT CONNECT (username, client id, SAS token) against
 *   the registry: a device or module, a service principal, or refused with
 *   the reason the broker logs and publishes in its `refused` event;
 * - th_auth_service: a service caller's token (the Authorization header of a
 *   REST request, carried in a control command) against the registry's
 *   policies, or a device's own key on its module registry: allowed, or
 *   refused with 401 / 401002 and the message the REST answer carries;
 * - the building blocks both use: whether a token's resource URI covers an
 *   identity, verification against two keys, the device-key rule of the
 *   service REST API.
 * broker/auth.c (CONNECT) and broker/control.c (the control API's
 * "authorization" member, which the gateway fills from each REST request)
 * are the only callers of the two decisions; the gateway verifies nothing.
 *
 * Pure: the registry, the request's facts and the time come in; a th_result
 * and a reason go out. Nothing here logs or changes the registry.
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

#include "registry.h"
#include "sas.h"
#include "th_limits.h"
#include "th_result.h"
#include "topic.h"
#include "x509.h"

/* errorCode of every refusal here (IotHubUnauthorizedAccess). */
#define TH_AUTH_ERR_CODE TH_EC_IOTHUB_UNAUTHORIZED_ACCESS

/*
 * Seconds a token may be past its `se` and still be accepted, for CONNECT,
 * for connections whose token runs out, and for service calls alike. The
 * plugin option token_skew_seconds replaces it for all three.
 */
#define TH_AUTH_TOKEN_SKEW_S 0

/* Longest token a service caller may send (the gateway's Authorization header). */
#define TH_AUTH_MAX_TOKEN 4096

/* Room for a refusal's reason: two ids of TH_MAX_ID_LEN and some words. */
#define TH_AUTH_REASON_BUF 800

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

/* ---- the decisions ------------------------------------------------------------------------ */

/* What a CONNECT carries, as the broker read it. */
struct th_auth_connect_facts {
    int protocol_version;  /* MQTT protocol level: IoT Hub accepts 4 (3.1.1) only */
    const char *client_id; /* NULL or "" when absent */
    const char *username;  /* NULL when absent */
    const char *password;  /* NULL when absent */
    int64_t now_s;
    int64_t skew_s; /* TH_AUTH_TOKEN_SKEW_S unless configured */
    /* The client's certificate chain when the TLS front vouched for it (th_x509_cred_open);
     * then `password` is ignored. NULL otherwise. */
    const struct th_x509_chain *x509;
    const struct th_cacerts *cas; /* the hub's CA certificates (for certificateAuthority) */
};

enum th_auth_principal {
    TH_AUTH_REFUSED = 0,
    TH_AUTH_IDENTITY, /* a device or module */
    TH_AUTH_SERVICE,  /* a service principal: a shared access policy */
};

struct th_auth_connect_decision {
    enum th_auth_principal kind;
    /* TH_AUTH_IDENTITY: the device or module, borrowed from the registry. */
    struct th_identity *identity;
    /* TH_AUTH_SERVICE: the policy; TH_AUTH_IDENTITY: the DeviceConnect policy that signed the
     * token, or NULL when the identity's own key did. Borrowed from the registry. */
    const struct th_policy *policy;
    int64_t token_expiry_s; /* the token's `se`; 0 for an X.509 certificate */
    bool x509;              /* TH_AUTH_IDENTITY: authenticated by its certificate */
    /* TH_AUTH_IDENTITY: the parsed username (slices into facts->username): api-version,
     * DeviceClientType and model-id for the connected event. */
    struct th_username username;
    /* The identity the username names, for the log and the refused event: device_id ""
     * when none was read; module_id only with has_module. */
    char device_id[TH_MAX_ID_LEN + 1];
    char module_id[TH_MAX_ID_LEN + 1];
    bool has_module;
    char reason[TH_AUTH_REASON_BUF]; /* TH_AUTH_REFUSED: why, one sentence */
};

/*
 * Decide a CONNECT. A username without '/' asks for a service principal: a
 * token signed with a policy key (skn) whose `sr` is the hub, a policy with a
 * service right, and a client id that is no registered identity. Any other
 * username is "{host}/{d}[/{m}]/?api-version=..." for the identity the client
 * id names exactly, registered and enabled, with a token whose host agrees
 * with the username's and that is signed with the identity's own key or a
 * DeviceConnect policy whose `sr` covers it (th_auth_connect_scope), and not
 * expired beyond skew_s. Checks run in that order and the first failure is
 * the reason. With facts->x509 (a certificate the TLS front vouched for)
 * the identity must be of type selfSigned or certificateAuthority and the
 * certificate is decided by th_x509_authenticate; the username's host is
 * not checked (there is no token to agree with). An X.509 identity that
 * connects without a certificate, and a SAS identity that presents one
 * without a password, are refused naming the mismatch.
 *
 * TH_OK with out->kind IDENTITY or SERVICE; TH_ERR_AUTH with out->kind
 * REFUSED and out->reason; TH_ERR_INVAL (and a reason) without a registry or
 * facts. `out` is always filled. A fault the broker injects (expireToken) is
 * not decided here: the caller refuses such a token after an allow.
 */
TH_NODISCARD th_result th_auth_connect(const struct th_registry *reg,
                                       const struct th_auth_connect_facts *facts,
                                       struct th_auth_connect_decision *out);

/* What a service caller asks for (one REST request, or one control command). */
struct th_auth_service_request {
    const char *token;     /* as sent: "SharedAccessSignature sr=...", NULL or "" for none */
    unsigned rights;       /* TH_PERM_*: any one of them is enough; 0 asks for none */
    const char *right;     /* the right refusals name, e.g. "RegistryWrite" */
    const char *operation; /* what is asked, named in refusals: "PUT /devices/{}" */
    /* The request is in this device's module registry, so that device's own key may sign it
     * (th_auth_rest_device_scope); NULL: shared access policies only. */
    const char *module_registry_of;
    int64_t now_s;
    int64_t skew_s; /* TH_AUTH_TOKEN_SKEW_S unless configured */
};

/* Who the token proved to be: exactly one member is set. Borrowed from the registry. */
struct th_auth_service_decision {
    const struct th_policy *policy;   /* a shared access policy */
    const struct th_identity *device; /* a device's own key (module registry only) */
};

/*
 * Decide a service caller's token. A token without `skn` is a device's own
 * key: allowed on the module registry of `module_registry_of` only, scoped
 * and verified by th_auth_rest_device_scope and th_auth_rest_device_key
 * against that device's keys in the registry. A token with `skn` must have
 * the hub as `sr` (or {host}/devices), name a policy of the registry, verify
 * against its primary or secondary key within skew_s, and the policy must
 * grant one of `rights`.
 *
 * TH_OK with out filled; TH_ERR_AUTH, or TH_ERR_EXPIRED for an expired
 * token, with err 401 / 401002 and the message the service REST API answers
 * (docs/rest-api.md "Authentication"); TH_ERR_INVAL without a registry or
 * request. `out` is zeroed first.
 */
TH_NODISCARD th_result th_auth_service(const struct th_registry *reg,
                                       const struct th_auth_service_request *rq,
                                       struct th_auth_service_decision *out, struct th_error *err);

/* The TH_PERM_* bit of a right's name ("RegistryRead", ...; case-insensitive); 0 if none. */
unsigned th_auth_right(const char *name);

#endif
