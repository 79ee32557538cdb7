/*
 * registry_ident.c - service create and update of identities (IoT Hub
 * registry semantics, iothub-protocol.md 10.3, 10.4; docs/registry.md
 * "Identity fields"): keys and authentication type (sas or none), status,
 * managedBy, the IoT Edge capability with deviceScope and parentScopes, and
 * the initial twin sections a module can be created with.
 *
 * An update is prepared in a struct ident_change and committed with steps
 * that cannot fail, so a refused update leaves the identity unchanged;
 * registry_import.c prepares its overwrites with the same functions.
 */
#include "registry_private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "topic.h"
#include "x509.h"
#include <strings.h>

/* ------------------------------------------------------------------ */
/* IoT Edge scopes                                                     */
/* ------------------------------------------------------------------ */

/* .NET ticks of a time in microseconds since the epoch. */
static uint64_t ticks_of(int64_t now_us)
{
    return (now_us > 0 ? (uint64_t)now_us : 0) * 10u + TH_TICKS_UNIX_EPOCH;
}

/*
 * The deviceScope the hub gives an IoT Edge device, "ms-azure-iot-edge://
 * {deviceId}-{ticks}" (the ticks are its generation id when it is created
 * as an edge device). Caller frees with free(); NULL on OOM.
 */
static char *edge_scope_new(const char *device_id, const char *ticks)
{
    size_t n = strlen(TH_EDGE_SCOPE_PREFIX) + strlen(device_id) + strlen(ticks) + 2;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%s%s-%s", TH_EDGE_SCOPE_PREFIX, device_id, ticks);
    return s;
}

/*
 * True when `scope` is TH_EDGE_SCOPE_PREFIX "{deviceId}-{1 to 20 digits}"
 * with a valid device id; the id goes into id_buf when it is not NULL.
 */
bool reg_parse_scope(const char *scope, char *id_buf, size_t size)
{
    size_t plen = strlen(TH_EDGE_SCOPE_PREFIX);
    if (!scope || strncmp(scope, TH_EDGE_SCOPE_PREFIX, plen) != 0)
        return false;
    const char *rest = scope + plen;
    const char *dash = strrchr(rest, '-');
    if (!dash || dash == rest)
        return false;
    size_t digits = strlen(dash + 1), idlen = (size_t)(dash - rest);
    if (digits == 0 || digits > 20 || !th_id_valid(rest, idlen))
        return false;
    for (size_t i = 1; i <= digits; i++) {
        if (dash[i] < '0' || dash[i] > '9')
            return false;
    }
    if (id_buf) {
        if (idlen >= size)
            return false;
        memcpy(id_buf, rest, idlen);
        id_buf[idlen] = '\0';
    }
    return true;
}

static void scope_plan_free(struct scope_plan *s)
{
    free(s->device_scope);
    free(s->parent_scope);
    s->device_scope = s->parent_scope = NULL;
}

/* The IoT Edge device whose deviceScope is `scope`; NULL when none (linear: scopes are rare). */
static const struct th_identity *edge_by_scope(const struct th_registry *reg, const char *scope)
{
    if (!reg || !scope)
        return NULL;
    for (const struct dev_node *n = reg->devices; n; n = n->hh.next) {
        if (n->id->iot_edge && n->id->device_scope && strcmp(n->id->device_scope, scope) == 0)
            return n->id;
    }
    return NULL;
}

/* ------------------------------------------------------------------ */
/* initial twin sections and modules created with them                 */
/* ------------------------------------------------------------------ */

/* Applies one initial twin section from the document; path names the member in errors. */
th_result reg_apply_section(struct th_twin *twin, enum th_twin_section section, const cJSON *src,
                            int64_t now_us, const char *path, struct th_error *err)
{
    if (!src || !src->child)
        return TH_OK; /* nothing to apply: keep the creation versions */
    cJSON *patch = cJSON_Duplicate(src, 1);
    if (!patch)
        return th_error_set(err, TH_ERR_NOMEM, 0, "%s: out of memory", path);
    /* Pasted twins carry $metadata/$version: they are the hub's, not the user's. */
    th_twin_strip_readonly(patch);
    struct th_error e;
    memset(&e, 0, sizeof e);
    th_result r;
    switch (section) {
    case TH_SECTION_TAGS:
        r = th_twin_patch_tags(twin, patch, &e);
        break;
    case TH_SECTION_DESIRED:
        r = th_twin_patch_desired(twin, patch, now_us, NULL, &e);
        break;
    default:
        r = th_twin_patch_reported(twin, patch, now_us, &e);
        break;
    }
    cJSON_Delete(patch);
    if (r != TH_OK)
        return th_error_set(err, r, e.code, "%s: %s", path, e.message);
    return TH_OK;
}

/* NULL and JSON null mean "no section"; anything else must be an object. */
static th_result initial_section(const cJSON *src, const char *name, const cJSON **out,
                                 struct th_error *err)
{
    *out = NULL;
    if (!src || cJSON_IsNull(src))
        return TH_OK;
    if (!cJSON_IsObject(src))
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "%s must be a JSON object such as {\"name\": value}, or omitted", name);
    *out = src;
    return TH_OK;
}

th_result th_registry_add_module_with(struct th_registry *reg, const char *device_id,
                                      const char *module_id, const char *primary_key,
                                      const char *secondary_key, const cJSON *tags,
                                      const cJSON *desired, int64_t now_us,
                                      struct th_identity **out, struct th_error *err)
{
    const cJSON *t, *d;
    struct th_identity *dev = NULL, *mod = NULL;
    th_result r;
    if ((r = initial_section(tags, "tags", &t, err)) != TH_OK ||
        (r = initial_section(desired, "properties.desired", &d, err)) != TH_OK)
        return r;
    r = reg_module_prepare(reg, device_id, module_id, TH_AUTH_SAS, primary_key, secondary_key,
                           now_us, &dev, &mod, err);
    if (r != TH_OK)
        return r;
    r = reg_apply_section(mod->twin, TH_SECTION_TAGS, t, now_us, "tags", err);
    if (r == TH_OK)
        r = reg_apply_section(mod->twin, TH_SECTION_DESIRED, d, now_us, "properties.desired", err);
    if (r == TH_OK && (r = reg_attach_module(dev, mod)) != TH_OK)
        th_error_set(err, r, 0, "cannot add module '%s': %s", module_id, th_result_str(r));
    if (r != TH_OK) {
        reg_identity_free(mod);
        return r;
    }
    if (out)
        *out = mod;
    return TH_OK;
}

/* ------------------------------------------------------------------ */
/* identity updates                                                    */
/* ------------------------------------------------------------------ */

/* A change that keeps everything of `id`. */
void reg_ident_change_init(struct ident_change *c, const struct th_identity *id)
{
    memset(c, 0, sizeof *c);
    c->enabled = -1;
    c->auth_type = id->auth_type;
    reg_copy_key(c->primary_key, id->primary_key);
    reg_copy_key(c->secondary_key, id->secondary_key);
    snprintf(c->x509_primary, sizeof c->x509_primary, "%s", id->x509_primary);
    snprintf(c->x509_secondary, sizeof c->x509_secondary, "%s", id->x509_secondary);
}

/* Frees what the change still owns; accepts a committed or half-prepared change. */
void reg_ident_change_free(struct ident_change *c)
{
    free(c->reason);
    free(c->managed_by);
    c->reason = c->managed_by = NULL;
    scope_plan_free(&c->scopes);
}

/* Applies a prepared change, bumps the etag; takes the strings from c. */
void reg_ident_change_commit(struct th_identity *id, struct ident_change *c, int64_t now_us)
{
    reg_copy_key(id->primary_key, c->primary_key);
    reg_copy_key(id->secondary_key, c->secondary_key);
    id->auth_type = c->auth_type;
    snprintf(id->x509_primary, sizeof id->x509_primary, "%s", c->x509_primary);
    snprintf(id->x509_secondary, sizeof id->x509_secondary, "%s", c->x509_secondary);
    if (c->reason_set) {
        free(id->status_reason);
        id->status_reason = c->reason;
        c->reason = NULL;
        c->reason_set = false;
    }
    if (c->enabled != -1 && (c->enabled == 1) != id->enabled) {
        id->enabled = c->enabled == 1;
        id->status_updated_us = now_us;
    }
    if (c->scopes_set) {
        id->iot_edge = c->scopes.edge;
        free(id->device_scope);
        free(id->parent_scope);
        id->device_scope = c->scopes.device_scope;
        id->parent_scope = c->scopes.parent_scope;
        c->scopes.device_scope = c->scopes.parent_scope = NULL;
        c->scopes_set = false;
    }
    if (c->managed_set) {
        free(id->managed_by);
        id->managed_by = c->managed_by;
        c->managed_by = NULL;
        c->managed_set = false;
    }
    id->etag_counter++;
}

/*
 * Plans keys and authentication type (`type` -1 when not given; keys NULL
 * keep, "" generate). Keys without a type mean "sas". An identity that had
 * no keys and becomes "sas" gets the given keys, generated where missing.
 * A key equal to the identity's current one counts as not given, so an
 * identity sent back as read (keys included) changes no key, and with
 * type "none" its keys are dropped rather than refused.
 */
th_result reg_plan_keys(const struct th_identity *id, int type, const char *primary_key,
                        const char *secondary_key, struct ident_change *c, struct th_error *err)
{
    th_result r;
    /* Identical keys are not a change: an identity sent back as read keeps its keys. */
    if (reg_key_given(primary_key) && strcmp(primary_key, id->primary_key) == 0)
        primary_key = NULL;
    if (reg_key_given(secondary_key) && strcmp(secondary_key, id->secondary_key) == 0)
        secondary_key = NULL;
    bool keys = primary_key || secondary_key;
    enum th_auth_type t =
        type >= 0 ? (enum th_auth_type)type : (keys ? TH_AUTH_SAS : id->auth_type);
    if (t != TH_AUTH_SAS) {
        if (reg_key_given(primary_key) || reg_key_given(secondary_key))
            return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                                "authentication type \"%s\" has no keys: remove "
                                "symmetricKey or use type \"sas\"",
                                th_auth_type_name(t));
        c->primary_key[0] = c->secondary_key[0] = '\0';
        c->auth_type = t;
        return TH_OK;
    }
    if (reg_key_given(primary_key) && !reg_key_valid(primary_key))
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "primaryKey must be base64 of 16 to 64 bytes (or empty to have one "
                            "generated)");
    if (reg_key_given(secondary_key) && !reg_key_valid(secondary_key))
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "secondaryKey must be base64 of 16 to 64 bytes (or empty to have one "
                            "generated)");
    bool had_none = id->auth_type != TH_AUTH_SAS;
    if ((primary_key || had_none) && (r = reg_fill_key(c->primary_key, primary_key)) != TH_OK)
        return th_error_set(err, r, 0, "cannot generate a primary key: %s", th_result_str(r));
    if ((secondary_key || had_none) && (r = reg_fill_key(c->secondary_key, secondary_key)) != TH_OK)
        return th_error_set(err, r, 0, "cannot generate a secondary key: %s", th_result_str(r));
    c->auth_type = t;
    return TH_OK;
}

th_result reg_plan_x509(const struct th_identity *id, const char *primary, const char *secondary,
                        struct ident_change *c, struct th_error *err)
{
    if (c->auth_type != TH_AUTH_SELF_SIGNED) {
        if ((primary && primary[0]) || (secondary && secondary[0]))
            return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                                "x509Thumbprint is only for authentication type \"selfSigned\", "
                                "not \"%s\"",
                                th_auth_type_name(c->auth_type));
        c->x509_primary[0] = c->x509_secondary[0] = '\0';
        return TH_OK;
    }
    if (id && id->auth_type != TH_AUTH_SELF_SIGNED)
        c->x509_primary[0] = c->x509_secondary[0] = '\0';
    if (primary)
        snprintf(c->x509_primary, sizeof c->x509_primary, "%.64s", primary);
    if (secondary)
        snprintf(c->x509_secondary, sizeof c->x509_secondary, "%.64s", secondary);
    if ((primary && strlen(primary) > 64) || !th_x509_thumbprint_valid(c->x509_primary))
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "authentication type \"selfSigned\" needs "
                            "x509Thumbprint.primaryThumbprint: the certificate's SHA-1 (40 hex "
                            "digits) or SHA-256 (64 hex digits) thumbprint");
    if ((secondary && strlen(secondary) > 64) ||
        (c->x509_secondary[0] && !th_x509_thumbprint_valid(c->x509_secondary)))
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "x509Thumbprint.secondaryThumbprint must be 40 or 64 hex digits, or "
                            "null");
    return TH_OK;
}

/* NULL and "" are both "no scope". */
bool reg_scope_equal(const char *a, const char *b)
{
    if (!a || !a[0])
        return !b || !b[0];
    return b && strcmp(a, b) == 0;
}

/*
 * Checks a parent scope a service request sets on device `self_id`: the
 * deviceScope of an IoT Edge device of the registry other than the device.
 */
static th_result check_parent(const struct th_registry *reg, const char *self_id, const char *field,
                              const char *scope, struct th_error *err)
{
    const struct th_identity *parent = edge_by_scope(reg, scope);
    if (!parent)
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "%s '%s' is not the deviceScope of an IoT Edge device in this hub; "
                            "copy it from the parent's identity (GET /devices/{parentId})",
                            field, scope);
    if (strcmp(parent->device_id, self_id) == 0)
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "%s: device '%s' cannot be its own parent", field, self_id);
    return TH_OK;
}

/*
 * The scopes of device `id` after a request (`id` NULL: a new device
 * `device_id` whose generation id `gen` gives its scope). Rules in
 * th_registry_create and th_identity_apply. A service request's new parent
 * must be a scope of the registry now; a registry document's (`doc`) is
 * kept as written and *raw set, for reg_doc_resolve once every device of the
 * document is built.
 */
th_result reg_plan_scopes(const struct th_registry *reg, const struct th_identity *id,
                          const char *device_id, const char *gen, const struct th_ident_req *req,
                          int64_t now_us, bool doc, bool *raw, struct scope_plan *out,
                          struct th_error *err)
{
    bool was_edge = id && id->iot_edge;
    bool edge = req->iot_edge >= 0 ? req->iot_edge == 1 : was_edge;
    const char *own = was_edge ? id->device_scope : NULL;
    /* The current parent, whichever member holds it. */
    const char *parent = id ? (was_edge ? id->parent_scope : id->device_scope) : NULL;
    const char *field = NULL, *want = NULL;
    th_result r;

    memset(out, 0, sizeof *out);
    if (edge && req->parents_given && !reg_scope_equal(req->parent_scope, parent)) {
        field = "parentScopes[0]";
        want = req->parent_scope;
    } else if (!edge && req->scope_given && !reg_scope_equal(req->device_scope, parent) &&
               !(own && reg_scope_equal(req->device_scope, own))) {
        field = "deviceScope";
        want = req->device_scope;
    }
    if (raw)
        *raw = false;
    if (field) {
        if (want && want[0] && doc) {
            if (raw)
                *raw = true;
        } else if (want && want[0] && (r = check_parent(reg, device_id, field, want, err)) != TH_OK)
            return r;
        parent = want;
    }
    char ticks[24];
    if (!gen) {
        snprintf(ticks, sizeof ticks, "%llu", (unsigned long long)ticks_of(now_us));
        gen = ticks;
    }
    out->edge = edge;
    bool ok = true;
    if (edge) {
        out->device_scope = own ? reg_dup_str(own) : edge_scope_new(device_id, gen);
        ok = out->device_scope != NULL;
        if (ok && parent && parent[0])
            ok = (out->parent_scope = reg_dup_str(parent)) != NULL;
    } else if (parent && parent[0]) {
        ok = (out->device_scope = reg_dup_str(parent)) != NULL;
    }
    if (!ok) {
        scope_plan_free(out);
        return th_error_set(err, TH_ERR_NOMEM, 0, "out of memory while updating '%s'", device_id);
    }
    return TH_OK;
}

/* Refuses what a module cannot have: status disabled or a status reason. */
static th_result check_module_status(const char *device_id, const char *module_id,
                                     const struct th_ident_req *req, struct th_error *err)
{
    if (req->enabled < -1 || req->enabled > 1)
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "enabled must be -1 (keep), 0 (disabled) or 1 (enabled), not %d",
                            req->enabled);
    if (module_id && (req->enabled == 0 || req->status_reason))
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "module '%s/%s' has no status: modules are always enabled; send no "
                            "status or statusReason for a module (disable its device instead)",
                            device_id, module_id);
    return TH_OK;
}

th_result th_identity_apply(struct th_registry *reg, struct th_identity *id,
                            const struct th_ident_req *req, int64_t now_us, bool *keys_changed,
                            struct th_error *err)
{
    struct ident_change c;
    th_result r;

    if (keys_changed)
        *keys_changed = false;
    if (!id || !req)
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID, "no identity to update");
    if ((r = check_module_status(id->device_id, id->module_id, req, err)) != TH_OK)
        return r;
    reg_ident_change_init(&c, id);
    c.enabled = req->enabled;
    r = reg_plan_keys(id, req->auth_type, req->primary_key, req->secondary_key, &c, err);
    if (r == TH_OK)
        r = reg_plan_x509(id, req->x509_primary, req->x509_secondary, &c, err);
    if (r == TH_OK && req->status_reason) {
        c.reason_set = true;
        if (req->status_reason[0] && !(c.reason = reg_dup_str(req->status_reason)))
            r = th_error_set(err, TH_ERR_NOMEM, 0, "out of memory while updating '%s'",
                             id->device_id);
    }
    if (r == TH_OK && !id->module_id) {
        r = reg_plan_scopes(reg, id, id->device_id, NULL, req, now_us, false, NULL, &c.scopes, err);
        c.scopes_set = r == TH_OK;
    } else if (r == TH_OK && req->managed_given) {
        c.managed_set = true;
        if (req->managed_by && req->managed_by[0] && !(c.managed_by = reg_dup_str(req->managed_by)))
            r = th_error_set(err, TH_ERR_NOMEM, 0, "out of memory while updating '%s'",
                             id->device_id);
    }
    if (r == TH_OK && keys_changed)
        *keys_changed = strcmp(c.primary_key, id->primary_key) != 0 ||
                        strcmp(c.secondary_key, id->secondary_key) != 0 ||
                        c.auth_type != id->auth_type ||
                        strcasecmp(c.x509_primary, id->x509_primary) != 0 ||
                        strcasecmp(c.x509_secondary, id->x509_secondary) != 0;
    if (r == TH_OK)
        reg_ident_change_commit(id, &c, now_us);
    reg_ident_change_free(&c);
    return r;
}

th_result th_identity_update(struct th_identity *id, const char *primary_key,
                             const char *secondary_key, int enabled, const char *status_reason,
                             int64_t now_us, struct th_error *err)
{
    struct th_ident_req req;
    th_ident_req_init(&req);
    req.primary_key = primary_key;
    req.secondary_key = secondary_key;
    req.enabled = enabled;
    req.status_reason = status_reason;
    /* No scope is given, so reg_plan_scopes never needs the registry. */
    return th_identity_apply(NULL, id, &req, now_us, NULL, err);
}

/* ------------------------------------------------------------------ */
/* service create                                                      */
/* ------------------------------------------------------------------ */

th_result th_registry_create(struct th_registry *reg, const char *device_id, const char *module_id,
                             const struct th_ident_req *req, const cJSON *tags,
                             const cJSON *desired, int64_t now_us, struct th_identity **out,
                             struct th_error *err)
{
    const cJSON *t, *d;
    struct th_identity *dev = NULL, *id = NULL;
    th_result r;

    if (!reg || !req)
        return th_error_set(err, TH_ERR_INVAL, 0, "no registry or request");
    enum th_auth_type type = req->auth_type >= 0 ? (enum th_auth_type)req->auth_type : TH_AUTH_SAS;
    if (type != TH_AUTH_SAS &&
        (reg_key_given(req->primary_key) || reg_key_given(req->secondary_key)))
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "authentication type \"%s\" has no keys: remove symmetricKey or "
                            "use type \"sas\"",
                            th_auth_type_name(type));
    struct ident_change xc;
    memset(&xc, 0, sizeof xc);
    xc.auth_type = type;
    if ((r = reg_plan_x509(NULL, req->x509_primary, req->x509_secondary, &xc, err)) != TH_OK)
        return r;
    if ((r = check_module_status(device_id ? device_id : "", module_id, req, err)) != TH_OK ||
        (r = initial_section(tags, "tags", &t, err)) != TH_OK ||
        (r = initial_section(desired, "properties.desired", &d, err)) != TH_OK)
        return r;
    if (module_id) {
        r = reg_module_prepare(reg, device_id, module_id, type, req->primary_key,
                               req->secondary_key, now_us, &dev, &id, err);
        if (r == TH_OK && req->managed_given && req->managed_by && req->managed_by[0] &&
            !(id->managed_by = reg_dup_str(req->managed_by)))
            r = th_error_set(err, TH_ERR_NOMEM, 0, "out of memory");
    } else {
        r = reg_device_prepare(reg, device_id, type, req->primary_key, req->secondary_key,
                               req->enabled != 0, now_us, &id, err);
        if (r == TH_OK && req->status_reason && req->status_reason[0] &&
            !(id->status_reason = reg_dup_str(req->status_reason)))
            r = th_error_set(err, TH_ERR_NOMEM, 0, "out of memory");
        struct scope_plan sp;
        if (r == TH_OK && (r = reg_plan_scopes(reg, NULL, device_id, id->generation_id, req, now_us,
                                               false, NULL, &sp, err)) == TH_OK) {
            id->iot_edge = sp.edge;
            id->device_scope = sp.device_scope;
            id->parent_scope = sp.parent_scope;
        }
    }
    if (r == TH_OK) {
        memcpy(id->x509_primary, xc.x509_primary, sizeof id->x509_primary);
        memcpy(id->x509_secondary, xc.x509_secondary, sizeof id->x509_secondary);
    }
    if (r == TH_OK)
        r = reg_apply_section(id->twin, TH_SECTION_TAGS, t, now_us, "tags", err);
    if (r == TH_OK)
        r = reg_apply_section(id->twin, TH_SECTION_DESIRED, d, now_us, "properties.desired", err);
    if (r == TH_OK) {
        r = module_id ? reg_attach_module(dev, id) : reg_insert_device(reg, id);
        if (r != TH_OK)
            th_error_set(err, r, 0, "cannot add '%s%s%s': %s", device_id, module_id ? "/" : "",
                         module_id ? module_id : "", th_result_str(r));
    }
    if (r != TH_OK) {
        reg_identity_free(id);
        return r;
    }
    if (out)
        *out = id;
    return TH_OK;
}
