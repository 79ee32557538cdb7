/*
 * auth.c - the hub's authentication decisions (auth.h; iothub-protocol.md
 * 2.3): a CONNECT against the registry, a service caller's token against the
 * policies (or a device's key on its module registry), and the rules both
 * are made of: scope of a token, verification against two keys, the
 * device-key rule of the service REST API.
 */
#include "auth.h"

#include <stdarg.h>
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
    /* No key (an identity of authentication type 'none'): anybody can compute an HMAC with an
     * empty key, so it must never pass as a signature. */
    if ((primary_key == NULL || primary_key[0] == '\0') &&
        (secondary_key == NULL || secondary_key[0] == '\0'))
        return th_error_set(
            err, TH_ERR_AUTH, TH_AUTH_ERR_CODE,
            "the identity has no keys (authentication type 'none'), so no SAS "
            "token can sign for it; give it keys (authentication type 'sas') first");
    th_result r = th_sas_verify(tok, primary_key != NULL ? primary_key : "", now_s, skew_s, err);
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

/* ---- CONNECT ------------------------------------------------------------------------------ */

static th_result refuse(struct th_auth_connect_decision *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static th_result refuse(struct th_auth_connect_decision *d, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->reason, sizeof d->reason, fmt, ap);
    va_end(ap);
    d->kind = TH_AUTH_REFUSED;
    d->identity = NULL;
    d->policy = NULL;
    return TH_ERR_AUTH;
}

static th_result connect_service(const struct th_registry *reg,
                                 const struct th_auth_connect_facts *f,
                                 const struct th_sas_token *tok, const struct th_sas_resource *res,
                                 struct th_auth_connect_decision *d)
{
    struct th_error err = {0};
    if (!tok->skn.ptr)
        return refuse(d, "a service connection (username without '/') needs a shared access "
                         "policy token with skn");
    const struct th_policy *pol = th_registry_policy(reg, tok->skn.ptr, tok->skn.len);
    if (!pol)
        return refuse(d, "unknown shared access policy '%.*s'", (int)tok->skn.len, tok->skn.ptr);
    if (res->device_id[0])
        return refuse(d, "a service token's sr must be the hub host name, not a device resource");
    if (th_auth_verify_keys(tok, pol->primary_key, pol->secondary_key, f->now_s, f->skew_s, &err) !=
        TH_OK)
        return refuse(d, "%s", err.message);
    if (!(pol->perms & (TH_PERM_SERVICE_CONNECT | TH_PERM_REGISTRY_READ | TH_PERM_REGISTRY_WRITE)))
        return refuse(d, "policy '%s' has no service rights", pol->name);
    /* A service client must not take over a device's session. */
    const char *slash = strchr(f->client_id, '/');
    const struct th_identity *clash =
        slash ? th_registry_find_n(reg, f->client_id, (size_t)(slash - f->client_id), slash + 1,
                                   strlen(slash + 1))
              : th_registry_find(reg, f->client_id, NULL);
    if (clash)
        return refuse(d, "a service connection's client id must not be a registered identity");
    d->kind = TH_AUTH_SERVICE;
    d->policy = pol;
    return TH_OK;
}

/*
 * The identity a CONNECT's username and client id name, registered and
 * enabled; `res` (NULL for X.509) is the token's resource, whose host must
 * agree with the username's. TH_OK with *out, or a refusal in d.
 */
static th_result connect_named_identity(const struct th_registry *reg,
                                        const struct th_auth_connect_facts *f,
                                        const struct th_sas_resource *res,
                                        struct th_auth_connect_decision *d,
                                        struct th_identity **out)
{
    struct th_username *un = &d->username;
    struct th_error err = {0};
    char expect_cid[2 * TH_MAX_ID_LEN + 2];

    if (th_username_parse(f->username, strlen(f->username), un, &err) != TH_OK)
        return refuse(d, "%s", err.message);
    if (un->device_id.len > TH_MAX_ID_LEN || un->module_id.len > TH_MAX_ID_LEN)
        return refuse(d, "device or module id longer than 128 characters");
    snprintf(d->device_id, sizeof d->device_id, "%.*s", (int)un->device_id.len, un->device_id.ptr);
    d->has_module = un->module_id.ptr != NULL;
    snprintf(d->module_id, sizeof d->module_id, "%.*s", (int)un->module_id.len,
             d->has_module ? un->module_id.ptr : "");
    const char *dev = d->device_id, *mod = d->has_module ? d->module_id : NULL;

    snprintf(expect_cid, sizeof expect_cid, "%s%s%s", dev, mod ? "/" : "", mod ? mod : "");
    if (strcmp(f->client_id, expect_cid) != 0)
        return refuse(d, "client id '%s' does not match the identity '%s' named in the username",
                      f->client_id, expect_cid);
    if (res && !th_slice_ieq(un->host.ptr, un->host.len, res->host, strlen(res->host)))
        return refuse(d, "SAS token host '%s' does not match the username's host '%.*s'", res->host,
                      (int)un->host.len, un->host.ptr);
    struct th_identity *id = th_registry_find(reg, dev, mod);
    if (!id)
        return refuse(d, "%s '%s' is not registered", mod ? "module" : "device", expect_cid);
    const struct th_identity *device = id->parent ? id->parent : id;
    if (!device->enabled)
        return refuse(d, "device '%s' is disabled", dev);
    *out = id;
    return TH_OK;
}

static th_result connect_identity(const struct th_registry *reg,
                                  const struct th_auth_connect_facts *f,
                                  const struct th_sas_token *tok, const struct th_sas_resource *res,
                                  struct th_auth_connect_decision *d)
{
    struct th_error err = {0};
    struct th_identity *id = NULL;
    th_result r = connect_named_identity(reg, f, res, d, &id);
    if (r != TH_OK)
        return r;
    const char *dev = d->device_id, *mod = d->has_module ? d->module_id : NULL;
    char expect_cid[2 * TH_MAX_ID_LEN + 2];
    snprintf(expect_cid, sizeof expect_cid, "%s%s%s", dev, mod ? "/" : "", mod ? mod : "");

    const struct th_policy *pol = NULL;
    const char *k1 = id->primary_key, *k2 = id->secondary_key;
    if (tok->skn.ptr) {
        /* Token service / gateway: a DeviceConnect policy signs for the device. */
        pol = th_registry_policy(reg, tok->skn.ptr, tok->skn.len);
        if (!pol || !(pol->perms & TH_PERM_DEVICE_CONNECT))
            return refuse(d, "policy '%.*s' is unknown or lacks DeviceConnect", (int)tok->skn.len,
                          tok->skn.ptr);
        k1 = pol->primary_key;
        k2 = pol->secondary_key;
    } else if (th_auth_type_is_x509(id->auth_type)) {
        return refuse(d,
                      "%s '%s' has authentication type '%s': it connects with its X.509 "
                      "certificate (TLS client certificate, no password), not a SAS token",
                      mod ? "module" : "device", expect_cid, th_auth_type_name(id->auth_type));
    } else if (id->auth_type == TH_AUTH_NONE) {
        return refuse(d,
                      "%s '%s' has authentication type 'none' (no keys), so no SAS token can sign "
                      "for it; give it keys (authentication type 'sas') first",
                      mod ? "module" : "device", expect_cid);
    }
    if (th_auth_connect_scope(res, pol != NULL, dev, mod, &err) != TH_OK ||
        th_auth_verify_keys(tok, k1, k2, f->now_s, f->skew_s, &err) != TH_OK)
        return refuse(d, "%s", err.message);
    d->kind = TH_AUTH_IDENTITY;
    d->identity = id;
    d->policy = pol;
    return TH_OK;
}

/* A CONNECT whose client presented a certificate (vouched for by the TLS front). */
static th_result connect_x509(const struct th_registry *reg, const struct th_auth_connect_facts *f,
                              struct th_auth_connect_decision *d)
{
    struct th_identity *id = NULL;
    if (!strchr(f->username, '/'))
        return refuse(d, "a service principal signs in with a SAS token, not a certificate");
    th_result r = connect_named_identity(reg, f, NULL, d, &id);
    if (r != TH_OK)
        return r;
    const char *mod = d->has_module ? d->module_id : NULL;
    if (!th_auth_type_is_x509(id->auth_type))
        return refuse(d,
                      "%s '%s%s%s' has authentication type '%s', but the client presented a "
                      "certificate and no password; send a SAS token, or register the identity "
                      "as selfSigned or certificateAuthority",
                      mod ? "module" : "device", d->device_id, mod ? "/" : "", mod ? mod : "",
                      th_auth_type_name(id->auth_type));
    struct th_x509_identity xi = {
        .device_id = id->device_id,
        .module_id = id->module_id,
        .ca = id->auth_type == TH_AUTH_CA,
        .primary_thumbprint = id->x509_primary,
        .secondary_thumbprint = id->x509_secondary,
    };
    char why[TH_X509_REASON_BUF];
    if (th_x509_authenticate(f->x509, &xi, f->cas, f->now_s, why, sizeof why) != TH_OK)
        return refuse(d, "%s", why);
    d->kind = TH_AUTH_IDENTITY;
    d->identity = id;
    d->x509 = true;
    return TH_OK;
}

th_result th_auth_connect(const struct th_registry *reg, const struct th_auth_connect_facts *facts,
                          struct th_auth_connect_decision *out)
{
    struct th_sas_token tok;
    struct th_sas_resource res;
    struct th_error err = {0};
    if (out == NULL)
        return TH_ERR_INVAL;
    memset(out, 0, sizeof *out);
    if (reg == NULL || facts == NULL) {
        refuse(out, "no registry or CONNECT to decide on");
        return TH_ERR_INVAL;
    }
    if (facts->protocol_version != 4)
        return refuse(out, "IoT Hub accepts MQTT 3.1.1 only (protocol level 4); this client used "
                           "another version");
    if (!facts->client_id || !facts->client_id[0])
        return refuse(out, "an empty client id is not accepted");
    if (!facts->username || !facts->username[0])
        return refuse(out, "no username; IoT Hub needs {host}/{deviceId}/?api-version=...");
    if (facts->x509)
        return connect_x509(reg, facts, out);
    if (!facts->password || !facts->password[0])
        return refuse(out, "no password and no client certificate; send a SAS token, or connect "
                           "with the identity's X.509 certificate over TLS");
    if (th_sas_parse(facts->password, strlen(facts->password), &tok, &err) != TH_OK ||
        th_sas_resource(&tok, &res, &err) != TH_OK)
        return refuse(out, "%s", err.message);
    out->token_expiry_s = tok.expiry;
    if (!strchr(facts->username, '/'))
        return connect_service(reg, facts, &tok, &res, out);
    return connect_identity(reg, facts, &tok, &res, out);
}

/* ---- service callers ---------------------------------------------------------------------- */

unsigned th_auth_right(const char *name)
{
    return name ? th_perm_from_name(name, strlen(name)) : 0;
}

/* Every refusal of a service caller is 401 / 401002, whatever rule said no. */
static th_result unauthorized(struct th_error *err, th_result r)
{
    if (err) {
        err->result = r;
        err->status = 401;
        err->code = TH_AUTH_ERR_CODE;
    }
    return r;
}

/* A token without skn: a device's own key, on that device's module registry only. */
static th_result service_device_key(const struct th_registry *reg,
                                    const struct th_auth_service_request *rq,
                                    const struct th_sas_token *tok,
                                    const struct th_sas_resource *res,
                                    struct th_auth_service_decision *out, struct th_error *err)
{
    enum th_auth_rest_target target =
        rq->module_registry_of ? TH_AUTH_REST_DEVICE_MODULES : TH_AUTH_REST_SERVICE;
    th_result r = th_auth_rest_device_scope(res, target, rq->module_registry_of, err);
    if (r != TH_OK)
        return unauthorized(err, r);
    const struct th_identity *id = th_registry_find(reg, rq->module_registry_of, NULL);
    struct th_auth_device dev = {0};
    if (id) {
        dev =
            (struct th_auth_device){id->device_id, id->primary_key, id->secondary_key, id->enabled};
    }
    r = th_auth_rest_device_key(tok, id ? &dev : NULL, rq->now_s, rq->skew_s, err);
    if (r != TH_OK) /* a stored key that is not base64 matches nothing: a refusal too */
        return unauthorized(err, r == TH_ERR_EXPIRED ? r : TH_ERR_AUTH);
    out->device = id;
    return TH_OK;
}

th_result th_auth_service(const struct th_registry *reg, const struct th_auth_service_request *rq,
                          struct th_auth_service_decision *out, struct th_error *err)
{
    struct th_sas_token tok;
    struct th_sas_resource res;
    struct th_error perr = {0};
    if (out)
        memset(out, 0, sizeof *out);
    if (reg == NULL || rq == NULL || out == NULL)
        return th_error_set(err, TH_ERR_INVAL, TH_EC_SERVER_ERROR,
                            "no registry or request to decide on");
    const char *what = rq->operation ? rq->operation : "this request";
    size_t len = rq->token ? strlen(rq->token) : 0;
    if (len == 0)
        return th_error_set(
            err, TH_ERR_AUTH, TH_AUTH_ERR_CODE,
            "no Authorization header; send a SharedAccessSignature token signed "
            "with a shared access policy key (sr=<hub>&sig=...&se=...&skn=<policy>)");
    if (len >= TH_AUTH_MAX_TOKEN)
        return th_error_set(err, TH_ERR_AUTH, TH_AUTH_ERR_CODE,
                            "the Authorization header is too long");
    if (th_sas_parse(rq->token, len, &tok, &perr) != TH_OK ||
        th_sas_resource(&tok, &res, &perr) != TH_OK)
        return th_error_set(err, TH_ERR_AUTH, TH_AUTH_ERR_CODE,
                            "the Authorization header is not a valid SAS token: %s", perr.message);
    if (th_auth_is_device_key(&tok))
        return service_device_key(reg, rq, &tok, &res, out, err);
    if (res.device_id[0])
        return th_error_set(err, TH_ERR_AUTH, TH_AUTH_ERR_CODE,
                            "a shared access policy token for the service API is scoped to the "
                            "hub: sr=<hub name> (or <hub name>/devices), not a device or module");
    const struct th_policy *pol = th_registry_policy(reg, tok.skn.ptr, tok.skn.len);
    if (!pol)
        return th_error_set(err, TH_ERR_AUTH, TH_AUTH_ERR_CODE,
                            "unknown shared access policy '%.*s'", (int)tok.skn.len, tok.skn.ptr);
    th_result r = th_auth_verify_keys(&tok, pol->primary_key, pol->secondary_key, rq->now_s,
                                      rq->skew_s, &perr);
    if (r == TH_ERR_EXPIRED)
        return th_error_set(err, TH_ERR_EXPIRED, TH_AUTH_ERR_CODE,
                            "the SAS token has expired (se=%.*s); sign a new one", (int)tok.se.len,
                            tok.se.ptr);
    if (r != TH_OK)
        return th_error_set(err, TH_ERR_AUTH, TH_AUTH_ERR_CODE,
                            "the SAS token's signature does not match the keys of policy '%s'",
                            pol->name);
    if (rq->rights && !(pol->perms & rq->rights))
        return th_error_set(err, TH_ERR_AUTH, TH_AUTH_ERR_CODE,
                            "policy '%s' does not grant %s, which %s needs", pol->name,
                            rq->right ? rq->right : "the right", what);
    out->policy = pol;
    return TH_OK;
}
