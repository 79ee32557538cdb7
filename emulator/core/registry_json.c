/*
 * registry_json.c - identities as the service API shows them: device and
 * module identity JSON (iothub-protocol.md 10.3) and the full twin JSON
 * (7.1), with the cJSON builders the other registry files share; and the
 * other direction, a create or update request (struct th_ident_req) read
 * from the hub's Device or Module JSON.
 */
#include "registry_private.h"

#include <string.h>

#include "util.h"

/* ------------------------------------------------------------------ */
/* JSON views                                                          */
/* ------------------------------------------------------------------ */

bool reg_add_str(cJSON *obj, const char *key, const char *value)
{
    return cJSON_AddStringToObject(obj, key, value) != NULL;
}

bool reg_add_str_or_null(cJSON *obj, const char *key, const char *value)
{
    return value ? reg_add_str(obj, key, value) : cJSON_AddNullToObject(obj, key) != NULL;
}

static bool add_time(cJSON *obj, const char *key, int64_t us)
{
    char buf[TH_TIME_BUF];
    if (us == 0)
        return reg_add_str(obj, key, TH_TIME_NEVER);
    th_time_format(us, buf);
    return reg_add_str(obj, key, buf);
}

bool reg_add_num(cJSON *obj, const char *key, double value)
{
    return cJSON_AddNumberToObject(obj, key, value) != NULL;
}

/* Takes ownership of `item` on every path. */
bool reg_add_item(cJSON *obj, const char *key, cJSON *item)
{
    if (!item)
        return false;
    if (!cJSON_AddItemToObject(obj, key, item)) {
        cJSON_Delete(item);
        return false;
    }
    return true;
}

static cJSON *thumbprint_json(const struct th_identity *id)
{
    cJSON *t = cJSON_CreateObject();
    if (t && (!reg_add_str_or_null(t, "primaryThumbprint",
                                   id->x509_primary[0] ? id->x509_primary : NULL) ||
              !reg_add_str_or_null(t, "secondaryThumbprint",
                                   id->x509_secondary[0] ? id->x509_secondary : NULL))) {
        cJSON_Delete(t);
        return NULL;
    }
    return t;
}

cJSON *reg_capabilities_json(const struct th_identity *id)
{
    cJSON *c = cJSON_CreateObject();
    if (c && !cJSON_AddBoolToObject(c, "iotEdge", id->iot_edge)) {
        cJSON_Delete(c);
        return NULL;
    }
    return c;
}

/* parentScopes: an edge device's parent, or a leaf's deviceScope (the hub copies it). */
cJSON *reg_parent_scopes_json(const struct th_identity *id)
{
    const char *parent = id->iot_edge ? id->parent_scope : id->device_scope;
    cJSON *arr = cJSON_CreateArray();
    cJSON *s = arr && parent ? cJSON_CreateString(parent) : NULL;
    if (!arr || (parent && (!s || !cJSON_AddItemToArray(arr, s)))) {
        cJSON_Delete(s);
        cJSON_Delete(arr);
        return NULL;
    }
    return arr;
}

/* A key, or null for an identity without keys (type none). */
bool reg_add_key(cJSON *obj, const char *name, const char *key)
{
    return reg_add_str_or_null(obj, name, key[0] ? key : NULL);
}

static cJSON *authentication_json(const struct th_identity *id)
{
    cJSON *auth = cJSON_CreateObject();
    cJSON *sym = cJSON_CreateObject();
    bool ok = auth && sym && reg_add_key(sym, "primaryKey", id->primary_key) &&
              reg_add_key(sym, "secondaryKey", id->secondary_key);
    if (ok) {
        ok = reg_add_item(auth, "symmetricKey", sym);
        sym = NULL;
    }
    ok = ok && reg_add_item(auth, "x509Thumbprint", thumbprint_json(id)) &&
         reg_add_str(auth, "type", th_auth_type_name(id->auth_type));
    cJSON_Delete(sym);
    if (!ok) {
        cJSON_Delete(auth);
        return NULL;
    }
    return auth;
}

cJSON *th_identity_to_json(const struct th_identity *id)
{
    if (!id)
        return NULL;
    bool is_device = id->module_id == NULL;
    char etag[32];
    th_identity_etag(id, etag);
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    bool ok = reg_add_str(o, "deviceId", id->device_id);
    if (!is_device)
        ok = ok && reg_add_str(o, "moduleId", id->module_id) &&
             reg_add_str_or_null(o, "managedBy", id->managed_by);
    ok = ok && reg_add_str(o, "generationId", id->generation_id) && reg_add_str(o, "etag", etag) &&
         reg_add_str(o, "connectionState", id->connected ? "Connected" : "Disconnected");
    if (is_device)
        ok = ok && reg_add_str(o, "status", id->enabled ? "enabled" : "disabled") &&
             reg_add_str_or_null(o, "statusReason", id->status_reason);
    ok = ok && add_time(o, "connectionStateUpdatedTime", id->connection_state_updated_us);
    if (is_device)
        ok = ok && add_time(o, "statusUpdatedTime", id->status_updated_us);
    ok = ok && add_time(o, "lastActivityTime", id->last_activity_us) &&
         reg_add_num(o, "cloudToDeviceMessageCount", (double)id->c2d_count) &&
         reg_add_item(o, "authentication", authentication_json(id));
    if (is_device)
        ok = ok && reg_add_item(o, "capabilities", reg_capabilities_json(id)) &&
             reg_add_str_or_null(o, "deviceScope", id->device_scope) &&
             reg_add_item(o, "parentScopes", reg_parent_scopes_json(id));
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* The members of a twin document before "version": ids, etags, status, connection. */
static cJSON *twin_json_head(const struct th_identity *id)
{
    bool is_device = id->module_id == NULL;
    char etag[16], device_etag[32];
    th_twin_etag(id->twin, etag);
    th_identity_etag(id, device_etag);
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    bool ok = reg_add_str(o, "deviceId", id->device_id);
    if (!is_device)
        ok = ok && reg_add_str(o, "moduleId", id->module_id);
    ok = ok && reg_add_str(o, "etag", etag) && reg_add_str(o, "deviceEtag", device_etag) &&
         reg_add_str(o, "status", id->enabled ? "enabled" : "disabled");
    /* The hub omits statusReason from twins when it is not set. */
    if (id->status_reason)
        ok = ok && reg_add_str(o, "statusReason", id->status_reason);
    ok = ok && add_time(o, "statusUpdateTime", id->status_updated_us) &&
         reg_add_str(o, "connectionState", id->connected ? "Connected" : "Disconnected") &&
         add_time(o, "lastActivityTime", id->last_activity_us) &&
         reg_add_num(o, "cloudToDeviceMessageCount", (double)id->c2d_count) &&
         reg_add_str(o, "authenticationType", th_auth_type_name(id->auth_type)) &&
         reg_add_item(o, "x509Thumbprint", thumbprint_json(id)) &&
         reg_add_str(o, "modelId", id->model_id ? id->model_id : "");
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

cJSON *th_identity_twin_json(const struct th_identity *id)
{
    if (!id || !id->twin)
        return NULL;
    bool is_device = id->module_id == NULL;
    cJSON *o = twin_json_head(id);
    if (!o)
        return NULL;
    bool ok = reg_add_num(o, "version", (double)th_twin_version(id->twin)) &&
              reg_add_item(o, "tags", cJSON_Duplicate(id->twin->tags, 1)) &&
              reg_add_item(o, "properties", th_twin_properties_view(id->twin));
    /* As the hub's device twins: deviceScope and parentScopes only when set. */
    if (is_device) {
        const char *parent = id->iot_edge ? id->parent_scope : id->device_scope;
        ok = ok && reg_add_item(o, "capabilities", reg_capabilities_json(id)) &&
             (!id->device_scope || reg_add_str(o, "deviceScope", id->device_scope)) &&
             (!parent || reg_add_item(o, "parentScopes", reg_parent_scopes_json(id)));
    }
    /* The statuses of the automatic configurations that target the twin (config.h). */
    if (id->configurations)
        ok = ok && reg_add_item(o, "configurations", cJSON_Duplicate(id->configurations, 1));
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

cJSON *th_identity_query_doc(const struct th_identity *id)
{
    if (!id || !id->twin)
        return NULL;
    /* The members of th_identity_twin_json (properties before version: order does not matter
     * to a condition), the sections by reference. */
    cJSON *o = twin_json_head(id);
    cJSON *props = o ? cJSON_AddObjectToObject(o, "properties") : NULL;
    bool ok =
        props && reg_add_num(o, "version", (double)th_twin_version(id->twin)) &&
        reg_add_item(o, "tags", cJSON_CreateObjectReference(id->twin->tags->child)) &&
        reg_add_item(props, "desired", cJSON_CreateObjectReference(id->twin->desired->child)) &&
        reg_add_item(props, "reported", cJSON_CreateObjectReference(id->twin->reported->child));
    if (ok && id->module_id == NULL) {
        const char *parent = id->iot_edge ? id->parent_scope : id->device_scope;
        ok = reg_add_item(o, "capabilities", reg_capabilities_json(id)) &&
             (!id->device_scope || reg_add_str(o, "deviceScope", id->device_scope)) &&
             (!parent || reg_add_item(o, "parentScopes", reg_parent_scopes_json(id)));
    }
    /* The automatic configurations' statuses, which their metric queries select on. */
    if (ok && id->configurations)
        ok = reg_add_item(o, "configurations",
                          cJSON_CreateObjectReference(id->configurations->child));
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* ------------------------------------------------------------------ */
/* service requests: reading them                                      */
/* ------------------------------------------------------------------ */

const char *th_auth_type_name(enum th_auth_type type)
{
    switch (type) {
    case TH_AUTH_NONE:
        return "none";
    case TH_AUTH_SELF_SIGNED:
        return "selfSigned";
    case TH_AUTH_CA:
        return "certificateAuthority";
    default:
        return "sas";
    }
}

void th_ident_req_init(struct th_ident_req *req)
{
    memset(req, 0, sizeof *req);
    req->auth_type = -1;
    req->enabled = -1;
    req->iot_edge = -1;
}

/*
 * Member `key` of obj: a string, or absent or null (*out NULL); anything else
 * is 400004. *given (optional) says whether the member is present, null included.
 */
static th_result req_string(const cJSON *obj, const char *key, const char *path, bool *given,
                            const char **out, struct th_error *err)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    *out = NULL;
    if (given)
        *given = item != NULL;
    if (!item || cJSON_IsNull(item))
        return TH_OK;
    if (!cJSON_IsString(item) || !item->valuestring)
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "%s%s must be a string or null", path, key);
    *out = item->valuestring;
    return TH_OK;
}

/* Member `key` of obj: absent or null give NULL; else an object or 400004. */
static th_result req_object(const cJSON *obj, const char *key, const char *path, const cJSON **out,
                            struct th_error *err)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    *out = NULL;
    if (!item || cJSON_IsNull(item))
        return TH_OK;
    if (!cJSON_IsObject(item))
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "%s%s must be an object or null", path, key);
    *out = item;
    return TH_OK;
}

static th_result req_auth(const cJSON *body, struct th_ident_req *out, struct th_error *err)
{
    const cJSON *auth, *sym;
    const char *type;
    th_result r;
    if ((r = req_object(body, "authentication", "", &auth, err)) != TH_OK || !auth)
        return r;
    if ((r = req_string(auth, "type", "authentication.", NULL, &type, err)) != TH_OK)
        return r;
    if (type && strcmp(type, "sas") == 0)
        out->auth_type = TH_AUTH_SAS;
    else if (type && strcmp(type, "none") == 0)
        out->auth_type = TH_AUTH_NONE;
    else if (type && strcmp(type, "selfSigned") == 0)
        out->auth_type = TH_AUTH_SELF_SIGNED;
    else if (type && strcmp(type, "certificateAuthority") == 0)
        out->auth_type = TH_AUTH_CA;
    else if (type)
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "authentication.type '%s' is unknown: use \"sas\", \"none\", "
                            "\"selfSigned\" or \"certificateAuthority\"",
                            type);
    const cJSON *tp;
    if ((r = req_object(auth, "x509Thumbprint", "authentication.", &tp, err)) != TH_OK)
        return r;
    /* A null thumbprint is "not given", so an identity sent back as read keeps its own. */
    if (tp && ((r = req_string(tp, "primaryThumbprint", "authentication.x509Thumbprint.", NULL,
                               &out->x509_primary, err)) != TH_OK ||
               (r = req_string(tp, "secondaryThumbprint", "authentication.x509Thumbprint.", NULL,
                               &out->x509_secondary, err)) != TH_OK))
        return r;
    if ((r = req_object(auth, "symmetricKey", "authentication.", &sym, err)) != TH_OK || !sym)
        return r;
    if ((r = req_string(sym, "primaryKey", "authentication.symmetricKey.", NULL, &out->primary_key,
                        err)) != TH_OK ||
        (r = req_string(sym, "secondaryKey", "authentication.symmetricKey.", NULL,
                        &out->secondary_key, err)) != TH_OK)
        return r;
    return TH_OK;
}

static th_result req_device_fields(const cJSON *body, struct th_ident_req *out,
                                   struct th_error *err)
{
    const cJSON *caps, *edge, *parents;
    th_result r;
    if ((r = req_object(body, "capabilities", "", &caps, err)) != TH_OK)
        return r;
    edge = cJSON_GetObjectItemCaseSensitive(caps, "iotEdge");
    if (cJSON_IsBool(edge))
        out->iot_edge = cJSON_IsTrue(edge);
    else if (edge && !cJSON_IsNull(edge))
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "capabilities.iotEdge must be true or false");
    if ((r = req_string(body, "deviceScope", "", &out->scope_given, &out->device_scope, err)) !=
        TH_OK)
        return r;
    parents = cJSON_GetObjectItemCaseSensitive(body, "parentScopes");
    out->parents_given = parents != NULL;
    if (!parents || cJSON_IsNull(parents))
        return TH_OK;
    if (!cJSON_IsArray(parents))
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "parentScopes must be an array of at most one scope");
    if (cJSON_GetArraySize(parents) > 1)
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "parentScopes holds %d scopes: an IoT Edge device has at most one "
                            "parent",
                            cJSON_GetArraySize(parents));
    if (parents->child && !cJSON_IsString(parents->child))
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "parentScopes[0] must be a string");
    out->parent_scope = parents->child ? parents->child->valuestring : NULL;
    return TH_OK;
}

th_result th_ident_req_from_json(const cJSON *body, bool is_module, struct th_ident_req *out,
                                 struct th_error *err)
{
    const char *status;
    th_result r;
    th_ident_req_init(out);
    if (!cJSON_IsObject(body))
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "the identity must be a JSON object");
    if ((r = req_auth(body, out, err)) != TH_OK ||
        (r = req_string(body, "status", "", NULL, &status, err)) != TH_OK ||
        (r = req_string(body, "statusReason", "", NULL, &out->status_reason, err)) != TH_OK)
        return r;
    if (status && strcmp(status, "enabled") == 0)
        out->enabled = 1;
    else if (status && strcmp(status, "disabled") == 0)
        out->enabled = 0;
    else if (status)
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "'status' must be \"enabled\" or \"disabled\"");
    if (is_module)
        return req_string(body, "managedBy", "", &out->managed_given, &out->managed_by, err);
    return req_device_fields(body, out, err);
}
