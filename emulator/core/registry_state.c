/*
 * registry_state.c - the full-fidelity state of a device and its modules
 * for snapshots (th_device_state_json, th_registry_restore_device): keys,
 * authentication type, status, generation ids, etags, twin versions and
 * metadata, IoT Edge scopes and the C2D queue, restored exactly and
 * validated member by member.
 */
#include "registry_private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "util.h"
#include "x509.h"

/* ------------------------------------------------------------------ */
/* persistence state                                                   */
/* ------------------------------------------------------------------ */

/* 2^53: the largest integer a JSON number (a double) holds exactly. */
#define STATE_MAX_INT 9007199254740992.0

static cJSON *c2d_state_json(const struct th_c2d_msg *m)
{
    cJSON *o = cJSON_CreateObject();
    char *body = NULL;
    bool ok = o != NULL;
    if (ok) {
        size_t size = (m->len + 2) / 3 * 4 + 1;
        body = malloc(size);
        ok = body && th_b64_encode(m->body, m->len, body, size) == TH_OK;
    }
    ok = ok && reg_add_str(o, "messageId", m->message_id) && reg_add_str(o, "bag", m->bag) &&
         reg_add_str(o, "body", body) && reg_add_num(o, "enqueued", (double)m->enqueued_us);
    free(body);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static cJSON *identity_state_json(const struct th_identity *id)
{
    bool is_device = id->module_id == NULL;
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    bool ok = reg_add_str(o, "deviceId", id->device_id) &&
              (is_device || reg_add_str(o, "moduleId", id->module_id)) &&
              reg_add_str(o, "authType", th_auth_type_name(id->auth_type)) &&
              reg_add_key(o, "primaryKey", id->primary_key) &&
              reg_add_key(o, "secondaryKey", id->secondary_key) &&
              cJSON_AddBoolToObject(o, "enabled", id->enabled) != NULL &&
              reg_add_str_or_null(o, "statusReason", id->status_reason) &&
              reg_add_str(o, "generationId", id->generation_id) &&
              reg_add_num(o, "etagCounter", (double)id->etag_counter) &&
              reg_add_str_or_null(o, "managedBy", id->managed_by) &&
              reg_add_str_or_null(o, "modelId", id->model_id) &&
              reg_add_num(o, "statusUpdated", (double)id->status_updated_us) &&
              reg_add_num(o, "lastActivity", (double)id->last_activity_us) &&
              reg_add_item(o, "twin", th_twin_state_json(id->twin)) &&
              (!id->configurations ||
               reg_add_item(o, "configurations", cJSON_Duplicate(id->configurations, 1)));
    if (ok && id->auth_type == TH_AUTH_SELF_SIGNED)
        ok = reg_add_str(o, "x509Primary", id->x509_primary) &&
             reg_add_str(o, "x509Secondary", id->x509_secondary);
    if (is_device)
        ok = ok && cJSON_AddBoolToObject(o, "iotEdge", id->iot_edge) != NULL &&
             reg_add_str_or_null(o, "deviceScope", id->device_scope) &&
             reg_add_str_or_null(o, "parentScope", id->parent_scope);
    if (ok && is_device) {
        cJSON *q = cJSON_AddArrayToObject(o, "c2d");
        ok = q != NULL;
        for (const struct th_c2d_msg *m = id->c2d_head; ok && m; m = m->next) {
            cJSON *item = c2d_state_json(m);
            if (!item || !cJSON_AddItemToArray(q, item)) {
                cJSON_Delete(item);
                ok = false;
            }
        }
        cJSON *mods = ok ? cJSON_AddArrayToObject(o, "modules") : NULL;
        ok = ok && mods != NULL;
        for (size_t i = 0; ok && i < id->module_count; i++) {
            cJSON *item = identity_state_json(id->modules[i]);
            if (!item || !cJSON_AddItemToArray(mods, item)) {
                cJSON_Delete(item);
                ok = false;
            }
        }
    }
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

cJSON *th_device_state_json(const struct th_identity *dev)
{
    if (!dev || dev->module_id || !dev->twin)
        return NULL;
    return identity_state_json(dev);
}

/*
 * Integer member in min..STATE_MAX_INT. Absent (or null) gives `fallback`
 * when `required` is false.
 */
static th_result state_int(const cJSON *obj, const char *key, const char *path, double min,
                           bool required, int64_t fallback, int64_t *out, struct th_error *err)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    if ((!item || cJSON_IsNull(item)) && !required) {
        *out = fallback;
        return TH_OK;
    }
    double d = cJSON_IsNumber(item) ? item->valuedouble : -1.0;
    if (!cJSON_IsNumber(item) || d != d || d < min || d > STATE_MAX_INT || d != (double)(int64_t)d)
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "%s.%s: %s an integer from %.0f to 2^53", path, key,
                            item ? "must be" : "missing; it must be", min);
    *out = (int64_t)d;
    return TH_OK;
}

static th_result state_str(const cJSON *obj, const char *key, const char *path, bool required,
                           const char **out, struct th_error *err)
{
    th_result r = reg_opt_string(obj, key, path, out, err);
    if (r == TH_OK && required && !*out)
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "%s.%s: required string missing", path, key);
    return r;
}

/* A generation id: 1 to 20 decimal digits that fit in 64 bits. */
static bool generation_parse(const char *s, uint64_t *out)
{
    size_t len = strlen(s);
    uint64_t v = 0;
    if (len == 0 || len > 20)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        unsigned digit = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - digit) / 10)
            return false;
        v = v * 10 + digit;
    }
    *out = v;
    return true;
}

static th_result restore_c2d(struct th_identity *dev, const cJSON *st, const char *path,
                             struct th_error *err)
{
    const cJSON *queue, *item;
    th_result r;
    size_t i = 0;
    char sub[96];
    if ((r = reg_opt_array(st, "c2d", path, &queue, err)) != TH_OK || !queue)
        return r;
    if (cJSON_GetArraySize(queue) > TH_C2D_MAX_QUEUE)
        return th_error_set(err, TH_ERR_TOO_LARGE, TH_EC_DEVICE_MAXIMUM_QUEUE_DEPTH_EXCEEDED,
                            "%s.c2d: %d messages, a device queue holds at most %d", path,
                            cJSON_GetArraySize(queue), TH_C2D_MAX_QUEUE);
    cJSON_ArrayForEach(item, queue)
    {
        const char *mid, *bag, *body;
        int64_t enqueued;
        snprintf(sub, sizeof sub, "%s.c2d[%zu]", path, i++);
        if (!cJSON_IsObject(item))
            return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID, "%s: must be an object",
                                sub);
        if ((r = state_str(item, "messageId", sub, true, &mid, err)) != TH_OK ||
            (r = state_str(item, "bag", sub, true, &bag, err)) != TH_OK ||
            (r = state_str(item, "body", sub, true, &body, err)) != TH_OK ||
            (r = state_int(item, "enqueued", sub, 0, true, 0, &enqueued, err)) != TH_OK)
            return r;
        size_t blen = strlen(body);
        if (blen / 4 * 3 > (size_t)TH_C2D_MAX_BYTES + 2)
            return th_error_set(err, TH_ERR_TOO_LARGE, TH_EC_MESSAGE_TOO_LARGE,
                                "%s.body: over the %d byte message limit", sub, TH_C2D_MAX_BYTES);
        uint8_t *raw = blen ? malloc(blen / 4 * 3 + 3) : NULL;
        size_t len = 0;
        if (blen && !raw)
            return th_error_set(err, TH_ERR_NOMEM, 0, "%s: out of memory", sub);
        if (th_b64_decode(body, blen, raw, blen / 4 * 3 + 3, &len) != TH_OK) {
            free(raw);
            return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                                "%s.body: must be base64", sub);
        }
        /* th_identity_c2d_push copies and enforces the size limit and queue depth. */
        r = th_identity_c2d_push(dev, mid, bag, raw, len, enqueued, err);
        free(raw);
        if (r != TH_OK) {
            struct th_error e = err ? *err : (struct th_error){0};
            return th_error_set(err, r, e.code, "%s: %s", sub, e.message);
        }
    }
    return TH_OK;
}

/*
 * A detached identity from its state. `module_id` NULL for a device. Updates
 * *max_gen with the generation id. Caller frees *out with reg_identity_free.
 */
static th_result restore_identity(const cJSON *st, const char *device_id, const char *module_id,
                                  const char *path, bool take, uint64_t *max_gen,
                                  struct th_identity **out, struct th_error *err)
{
    const char *pk, *sk, *gen, *reason, *managed, *model, *type, *scope = NULL, *parent = NULL;
    int64_t etag, status_us, activity_us;
    uint64_t gen_value;
    th_result r;
    char sub[160];

    *out = NULL;
    /* States written before authType existed are "sas". */
    if ((r = state_str(st, "authType", path, false, &type, err)) != TH_OK)
        return r;
    enum th_auth_type atype = TH_AUTH_SAS;
    if (type && strcmp(type, "none") == 0)
        atype = TH_AUTH_NONE;
    else if (type && strcmp(type, "selfSigned") == 0)
        atype = TH_AUTH_SELF_SIGNED;
    else if (type && strcmp(type, "certificateAuthority") == 0)
        atype = TH_AUTH_CA;
    else if (type && strcmp(type, "sas") != 0)
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "%s.authType: \"sas\", \"none\", \"selfSigned\" or "
                            "\"certificateAuthority\", not '%s'",
                            path, type);
    bool none = atype != TH_AUTH_SAS; /* no keys */
    const char *tp1 = NULL, *tp2 = NULL;
    if (atype == TH_AUTH_SELF_SIGNED &&
        ((r = state_str(st, "x509Primary", path, true, &tp1, err)) != TH_OK ||
         (r = state_str(st, "x509Secondary", path, false, &tp2, err)) != TH_OK))
        return r;
    if (tp1 &&
        (!th_x509_thumbprint_valid(tp1) || (tp2 && tp2[0] && !th_x509_thumbprint_valid(tp2))))
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "%s: x509Primary and x509Secondary must be 40 or 64 hex digits", path);
    if ((r = state_str(st, "primaryKey", path, !none, &pk, err)) != TH_OK ||
        (r = state_str(st, "secondaryKey", path, !none, &sk, err)) != TH_OK ||
        (r = state_str(st, "generationId", path, true, &gen, err)) != TH_OK ||
        (r = state_str(st, "statusReason", path, false, &reason, err)) != TH_OK ||
        (r = state_str(st, "managedBy", path, false, &managed, err)) != TH_OK ||
        (r = state_str(st, "modelId", path, false, &model, err)) != TH_OK ||
        (r = state_int(st, "etagCounter", path, 1, true, 0, &etag, err)) != TH_OK ||
        (r = state_int(st, "statusUpdated", path, 0, false, 0, &status_us, err)) != TH_OK ||
        (r = state_int(st, "lastActivity", path, 0, false, 0, &activity_us, err)) != TH_OK)
        return r;
    if (none && (reg_key_given(pk) || reg_key_given(sk)))
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "%s: authType \"%s\" has no keys; primaryKey and secondaryKey "
                            "must be null",
                            path, type);
    if (!none && !reg_key_valid(pk))
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "%s.primaryKey: must be base64 of 16 to 64 bytes", path);
    if (!none && !reg_key_valid(sk))
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "%s.secondaryKey: must be base64 of 16 to 64 bytes", path);
    const cJSON *edge = cJSON_GetObjectItemCaseSensitive(st, "iotEdge");
    if (!module_id) {
        if (edge && !cJSON_IsBool(edge) && !cJSON_IsNull(edge))
            return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                                "%s.iotEdge: must be true or false", path);
        if ((r = state_str(st, "deviceScope", path, false, &scope, err)) != TH_OK ||
            (r = state_str(st, "parentScope", path, false, &parent, err)) != TH_OK)
            return r;
        if ((scope && !reg_parse_scope(scope, NULL, 0)) ||
            (parent && !reg_parse_scope(parent, NULL, 0)))
            return th_error_set(
                err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                "%s.%s: '%s' is not a scope \"" TH_EDGE_SCOPE_PREFIX "{deviceId}-{digits}\"", path,
                scope && !reg_parse_scope(scope, NULL, 0) ? "deviceScope" : "parentScope",
                scope && !reg_parse_scope(scope, NULL, 0) ? scope : parent);
        if (parent && !cJSON_IsTrue(edge))
            return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                                "%s.parentScope: only an IoT Edge device (iotEdge true) has one",
                                path);
    }
    if (!generation_parse(gen, &gen_value))
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "%s.generationId: '%s' must be 1 to 20 decimal digits", path, gen);
    const cJSON *enabled = cJSON_GetObjectItemCaseSensitive(st, "enabled");
    if (!cJSON_IsBool(enabled))
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "%s.enabled: must be true or false", path);
    if (module_id && !cJSON_IsTrue(enabled))
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "%s.enabled: modules are always enabled, use true", path);

    struct th_error e;
    memset(&e, 0, sizeof e);
    /* With `take`, `st` belongs to a caller that gave it up (th_device_from_state). */
    cJSON *twin_state = cJSON_GetObjectItemCaseSensitive(st, "twin");
    struct th_twin *twin =
        take ? th_twin_from_state_take(twin_state, &e) : th_twin_from_state(twin_state, &e);
    if (!twin) {
        snprintf(sub, sizeof sub, "%s.twin", path);
        return th_error_set(err, e.result ? e.result : TH_ERR_INVAL, e.code, "%s: %s", sub,
                            e.message);
    }
    struct th_identity *id = calloc(1, sizeof *id);
    if (!id) {
        th_twin_free(twin);
        return th_error_set(err, TH_ERR_NOMEM, 0, "%s: out of memory", path);
    }
    id->twin = twin;
    id->device_id = reg_dup_str(device_id);
    id->module_id = reg_dup_str(module_id);
    id->status_reason = reg_dup_str(reason);
    id->managed_by = reg_dup_str(managed);
    id->model_id = reg_dup_str(model);
    id->device_scope = reg_dup_str(scope);
    id->parent_scope = reg_dup_str(parent);
    if (!id->device_id || (module_id && !id->module_id) || (reason && !id->status_reason) ||
        (managed && !id->managed_by) || (model && !id->model_id) || (scope && !id->device_scope) ||
        (parent && !id->parent_scope)) {
        reg_identity_free(id);
        return th_error_set(err, TH_ERR_NOMEM, 0, "%s: out of memory", path);
    }
    id->auth_type = atype;
    snprintf(id->x509_primary, sizeof id->x509_primary, "%s", tp1 ? tp1 : "");
    snprintf(id->x509_secondary, sizeof id->x509_secondary, "%s", tp2 ? tp2 : "");
    id->iot_edge = !module_id && cJSON_IsTrue(edge);
    if (!none) {
        reg_copy_key(id->primary_key, pk);
        reg_copy_key(id->secondary_key, sk);
    }
    snprintf(id->generation_id, sizeof id->generation_id, "%s", gen);
    id->enabled = cJSON_IsTrue(enabled);
    id->etag_counter = (uint64_t)etag;
    id->status_updated_us = status_us;
    id->last_activity_us = activity_us;
    /* Automatic configuration statuses (config.h): an object of {"status": text}, or absent. */
    const cJSON *cfgs = cJSON_GetObjectItemCaseSensitive(st, "configurations");
    if (cJSON_IsObject(cfgs) && cfgs->child) {
        for (const cJSON *c = cfgs->child; c; c = c->next)
            if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(c, "status"))) {
                reg_identity_free(id);
                return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                                    "%s.configurations: each entry is {\"status\": text}", path);
            }
        if (!(id->configurations = cJSON_Duplicate(cfgs, 1))) {
            reg_identity_free(id);
            return th_error_set(err, TH_ERR_NOMEM, 0, "%s: out of memory", path);
        }
    } else if (cfgs && !cJSON_IsNull(cfgs) && !cJSON_IsObject(cfgs)) {
        reg_identity_free(id);
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "%s.configurations: must be an object", path);
    }
    if (gen_value > *max_gen)
        *max_gen = gen_value;
    *out = id;
    return TH_OK;
}

/*
 * The detached device of `state` with its modules, C2D queue and twins, every
 * member checked; nothing of a registry is read or written, so loaders may
 * run it on several threads at once. `reg` NULL skips the existence check.
 */
static th_result device_from_state(const struct th_registry *reg, const cJSON *state, bool take,
                                   struct th_identity **out, uint64_t *out_max_gen,
                                   struct th_error *err)
{
    const char *did;
    const cJSON *mods, *msrc;
    struct th_identity *dev = NULL;
    uint64_t max_gen = 0;
    char sub[192];
    th_result r;

    *out = NULL;
    if (!cJSON_IsObject(state))
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "device: the state must be an object as th_device_state_json writes");
    if ((r = th_json_refuse_nul(state, "the device state", err)) != TH_OK)
        return r;
    if ((r = reg_check_id_field(state, "deviceId", "device", &did, err)) != TH_OK)
        return r;
    if (reg && th_registry_find(reg, did, NULL))
        return th_error_set(err, TH_ERR_EXISTS, TH_EC_DEVICE_ALREADY_EXISTS,
                            "device '%s' already exists; delete it before restoring it", did);
    if ((r = reg_opt_array(state, "modules", "device", &mods, err)) != TH_OK)
        return r;
    if (mods && cJSON_GetArraySize(mods) > TH_MAX_MODULES_PER_DEVICE)
        return th_error_set(err, TH_ERR_TOO_LARGE, TH_EC_TOO_MANY_MODULES_ON_DEVICE,
                            "device.modules: %d modules, at most %d are allowed per device",
                            cJSON_GetArraySize(mods), TH_MAX_MODULES_PER_DEVICE);
    if ((r = restore_identity(state, did, NULL, "device", take, &max_gen, &dev, err)) != TH_OK)
        return r;
    r = restore_c2d(dev, state, "device", err);

    size_t i = 0;
    cJSON_ArrayForEach(msrc, mods)
    {
        const char *mid, *mdev;
        struct th_identity *mod = NULL;
        if (r != TH_OK)
            break;
        snprintf(sub, sizeof sub, "device.modules[%zu]", i++);
        if (!cJSON_IsObject(msrc)) {
            r = th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID, "%s: must be an object",
                             sub);
            break;
        }
        if ((r = reg_check_id_field(msrc, "moduleId", sub, &mid, err)) != TH_OK ||
            (r = state_str(msrc, "deviceId", sub, false, &mdev, err)) != TH_OK)
            break;
        if (mdev && strcmp(mdev, did) != 0) {
            r = th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                             "%s.deviceId: '%s' differs from the device '%s'", sub, mdev, did);
            break;
        }
        if (reg_find_module(dev, mid, strlen(mid), NULL)) {
            r = th_error_set(err, TH_ERR_INVAL, TH_EC_DEVICE_DEFINED_MULTIPLE_TIMES,
                             "%s.moduleId: '%s' appears twice", sub, mid);
            break;
        }
        if ((r = restore_identity(msrc, did, mid, sub, take, &max_gen, &mod, err)) != TH_OK)
            break;
        if ((r = reg_attach_module(dev, mod)) != TH_OK) {
            reg_identity_free(mod);
            th_error_set(err, r, 0, "%s: out of memory", sub);
        }
    }
    if (r != TH_OK) {
        reg_identity_free(dev);
        return r;
    }
    *out = dev;
    *out_max_gen = max_gen;
    return TH_OK;
}

th_result th_device_from_state(cJSON *state, struct th_identity **out, uint64_t *max_gen,
                               struct th_error *err)
{
    if (!out || !max_gen)
        return th_error_set(err, TH_ERR_INVAL, 0, "th_device_from_state: no output given");
    return device_from_state(NULL, state, true, out, max_gen, err);
}

void th_device_from_state_free(struct th_identity *dev)
{
    if (dev)
        reg_identity_free(dev);
}

th_result th_registry_add_restored(struct th_registry *reg, struct th_identity *dev,
                                   uint64_t max_gen, struct th_error *err)
{
    th_result r;
    if (!reg || !dev || dev->module_id)
        return th_error_set(err, TH_ERR_INVAL, 0, "no registry or no device");
    if (th_registry_find(reg, dev->device_id, NULL))
        return th_error_set(err, TH_ERR_EXISTS, TH_EC_DEVICE_ALREADY_EXISTS,
                            "device '%s' already exists; delete it before restoring it",
                            dev->device_id);
    if ((r = reg_insert_device(reg, dev)) != TH_OK)
        return th_error_set(err, r, 0, "device '%s': out of memory", dev->device_id);
    /* Generation ids issued later must still differ from every restored one. */
    if (max_gen > reg->last_generation)
        reg->last_generation = max_gen;
    return TH_OK;
}

th_result th_registry_restore_device(struct th_registry *reg, const cJSON *state,
                                     struct th_error *err)
{
    struct th_identity *dev = NULL;
    uint64_t max_gen = 0;
    th_result r;
    if (!reg)
        return th_error_set(err, TH_ERR_INVAL, 0, "no registry");
    if ((r = device_from_state(reg, state, false, &dev, &max_gen, err)) != TH_OK)
        return r;
    if ((r = th_registry_add_restored(reg, dev, max_gen, err)) != TH_OK)
        reg_identity_free(dev);
    return r;
}
