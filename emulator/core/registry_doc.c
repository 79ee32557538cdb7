/*
 * registry_doc.c - registry documents (docs/registry.md): validation of a
 * whole document with the faulty field named, building its identities
 * detached, resolving the IoT Edge parents it names against the registry
 * and the document itself, th_registry_load, th_registry_export, and the
 * shared access policies as a registry-document array. Import, which
 * shares the validation and the building, is in registry_import.c.
 *
 * Load validates everything first, builds detached identities, and inserts
 * them last (rolling back on allocation failure), so a refused document
 * leaves the registry unchanged.
 */
#include "registry_private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "topic.h"
#include "util.h"

/* ------------------------------------------------------------------ */
/* registry document loader                                            */
/* ------------------------------------------------------------------ */

/* Hub-maintained fields of identity and twin JSON: ignored so exports can be pasted. */
static const char *const readonly_fields[] = {
    "generationId",
    "etag",
    "deviceEtag",
    "connectionState",
    "connectionStateUpdatedTime",
    "statusUpdatedTime",
    "statusUpdateTime",
    "lastActivityTime",
    "cloudToDeviceMessageCount",
    "capabilities",
    "deviceScope",
    "parentScopes",
    "version",
    "authenticationType",
    "x509Thumbprint",
    "modelId",
};

static bool in_list(const char *name, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(name, list[i]) == 0)
            return true;
    }
    return false;
}

/* Refuses members of `obj` that are neither in `allowed` nor hub read-only fields. */
static th_result check_members(const cJSON *obj, const char *path, const char *const *allowed,
                               size_t n, bool allow_readonly, struct th_error *err)
{
    const cJSON *item;
    cJSON_ArrayForEach(item, obj)
    {
        const char *k = item->string ? item->string : "";
        if (in_list(k, allowed, n))
            continue;
        if (allow_readonly &&
            in_list(k, readonly_fields, sizeof readonly_fields / sizeof readonly_fields[0]))
            continue;
        return th_error_set(err, TH_ERR_INVAL, 0, "%s%s%s: unknown field", path, path[0] ? "." : "",
                            k);
    }
    return TH_OK;
}

/*
 * Optional string member: absent and null give *out NULL; anything but a
 * string is refused, naming path.key.
 */
th_result reg_opt_string(const cJSON *obj, const char *key, const char *path, const char **out,
                         struct th_error *err)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    *out = NULL;
    if (!item || cJSON_IsNull(item))
        return TH_OK;
    if (!cJSON_IsString(item) || !item->valuestring)
        return th_error_set(err, TH_ERR_INVAL, 0, "%s.%s: must be a string", path, key);
    *out = item->valuestring;
    return TH_OK;
}

/* Optional object member (absent or null -> *out NULL). */
static th_result opt_object(const cJSON *obj, const char *key, const char *path, const cJSON **out,
                            struct th_error *err)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    *out = NULL;
    if (!item || cJSON_IsNull(item))
        return TH_OK;
    if (!cJSON_IsObject(item))
        return th_error_set(err, TH_ERR_INVAL, 0, "%s.%s: must be an object", path, key);
    *out = item;
    return TH_OK;
}

th_result reg_opt_array(const cJSON *obj, const char *key, const char *path, const cJSON **out,
                        struct th_error *err)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    *out = NULL;
    if (!item || cJSON_IsNull(item))
        return TH_OK;
    if (!cJSON_IsArray(item))
        return th_error_set(err, TH_ERR_INVAL, 0, "%s%s%s: must be an array", path,
                            path[0] ? "." : "", key);
    *out = item;
    return TH_OK;
}

/* The policy rights' names (iothub-protocol.md 2.5), both ways. */
static const struct {
    unsigned perm;
    const char *name;
} perm_names[] = {
    {TH_PERM_REGISTRY_READ, "RegistryRead"},
    {TH_PERM_REGISTRY_WRITE, "RegistryWrite"},
    {TH_PERM_SERVICE_CONNECT, "ServiceConnect"},
    {TH_PERM_DEVICE_CONNECT, "DeviceConnect"},
};

unsigned th_perm_from_name(const char *name, size_t len)
{
    for (size_t i = 0; name && i < sizeof perm_names / sizeof perm_names[0]; i++)
        if (th_slice_ieq(name, len, perm_names[i].name, strlen(perm_names[i].name)))
            return perm_names[i].perm;
    return 0;
}

/* Parses "RegistryRead, ServiceConnect" (comma and/or space separated). 0 when invalid. */
static unsigned parse_rights(const char *s, const char **bad, size_t *bad_len)
{
    unsigned perms = 0;
    *bad = NULL;
    *bad_len = 0;
    while (*s) {
        while (*s == ',' || *s == ' ' || *s == '\t')
            s++;
        if (!*s)
            break;
        const char *start = s;
        while (*s && *s != ',' && *s != ' ' && *s != '\t')
            s++;
        size_t len = (size_t)(s - start);
        unsigned perm = th_perm_from_name(start, len);
        if (!perm) {
            *bad = start;
            *bad_len = len;
            return 0;
        }
        perms |= perm;
    }
    return perms;
}

/* Validated keys of an identity's "authentication" member (NULL = generate). */
struct auth_keys {
    const char *primary;
    const char *secondary;
    enum th_auth_type type; /* TH_AUTH_SAS when no type is given */
    const char *x509_primary; /* selfSigned: the thumbprints (NULL when absent) */
    const char *x509_secondary;
};

static enum th_auth_type auth_type_of(const char *type)
{
    if (type && strcmp(type, "none") == 0)
        return TH_AUTH_NONE;
    if (type && strcmp(type, "selfSigned") == 0)
        return TH_AUTH_SELF_SIGNED;
    if (type && strcmp(type, "certificateAuthority") == 0)
        return TH_AUTH_CA;
    return TH_AUTH_SAS;
}

static th_result check_key(const char *key, const char *path, const char *field,
                           struct th_error *err)
{
    if (reg_key_given(key) && !reg_key_valid(key))
        return th_error_set(err, TH_ERR_INVAL, 0,
                            "%s.%s: must be base64 of 16 to 64 bytes (or omit it to have "
                            "one generated)",
                            path, field);
    return TH_OK;
}

static th_result check_auth(const cJSON *ident, const char *path, struct auth_keys *keys,
                            struct th_error *err)
{
    static const char *const auth_fields[] = {"symmetricKey", "type", "x509Thumbprint"};
    static const char *const sym_fields[] = {"primaryKey", "secondaryKey"};
    const cJSON *auth, *sym;
    const char *type;
    char sub[160];
    th_result r;

    keys->primary = keys->secondary = keys->x509_primary = keys->x509_secondary = NULL;
    keys->type = TH_AUTH_SAS;
    if ((r = opt_object(ident, "authentication", path, &auth, err)) != TH_OK || !auth)
        return r;
    snprintf(sub, sizeof sub, "%s.authentication", path);
    if ((r = check_members(auth, sub, auth_fields, 3, false, err)) != TH_OK)
        return r;
    if ((r = reg_opt_string(auth, "type", sub, &type, err)) != TH_OK)
        return r;
    keys->type = auth_type_of(type);
    if (type && keys->type == TH_AUTH_SAS && strcmp(type, "sas") != 0)
        return th_error_set(err, TH_ERR_INVAL, 0,
                            "%s.type: \"sas\", \"none\", \"selfSigned\" or "
                            "\"certificateAuthority\", not '%s'",
                            sub, type);
    const cJSON *tp;
    if ((r = opt_object(auth, "x509Thumbprint", sub, &tp, err)) != TH_OK)
        return r;
    char tsub[200];
    snprintf(tsub, sizeof tsub, "%s.x509Thumbprint", sub);
    if (tp &&
        ((r = reg_opt_string(tp, "primaryThumbprint", tsub, &keys->x509_primary, err)) != TH_OK ||
         (r = reg_opt_string(tp, "secondaryThumbprint", tsub, &keys->x509_secondary, err)) !=
             TH_OK))
        return r;
    struct ident_change xc;
    memset(&xc, 0, sizeof xc);
    xc.auth_type = keys->type;
    struct th_error xe = {0};
    if (reg_plan_x509(NULL, keys->x509_primary, keys->x509_secondary, &xc, &xe) != TH_OK)
        return th_error_set(err, TH_ERR_INVAL, 0, "%s: %s", sub, xe.message);
    if ((r = opt_object(auth, "symmetricKey", sub, &sym, err)) != TH_OK || !sym)
        return r;
    snprintf(sub, sizeof sub, "%s.authentication.symmetricKey", path);
    if ((r = check_members(sym, sub, sym_fields, 2, false, err)) != TH_OK)
        return r;
    if ((r = reg_opt_string(sym, "primaryKey", sub, &keys->primary, err)) != TH_OK ||
        (r = reg_opt_string(sym, "secondaryKey", sub, &keys->secondary, err)) != TH_OK)
        return r;
    if ((r = check_key(keys->primary, sub, "primaryKey", err)) != TH_OK ||
        (r = check_key(keys->secondary, sub, "secondaryKey", err)) != TH_OK)
        return r;
    if (keys->type != TH_AUTH_SAS &&
        (reg_key_given(keys->primary) || reg_key_given(keys->secondary)))
        return th_error_set(err, TH_ERR_INVAL, 0,
                            "%s: type \"%s\" has no keys; remove them or use type \"sas\"", sub,
                            th_auth_type_name(keys->type));
    return TH_OK;
}

/*
 * capabilities {iotEdge}, deviceScope and parentScopes (at most one entry)
 * of a device entry. Scopes must have the hub's form (reg_parse_scope); they are
 * resolved against the registry and the document when the devices are built.
 */
static th_result check_edge_fields(const cJSON *dev, const char *path, struct th_error *err)
{
    static const char *const cap_fields[] = {"iotEdge"};
    const cJSON *caps, *parents, *item;
    const char *scope;
    char sub[160];
    th_result r;
    if ((r = opt_object(dev, "capabilities", path, &caps, err)) != TH_OK)
        return r;
    snprintf(sub, sizeof sub, "%s.capabilities", path);
    if (caps && (r = check_members(caps, sub, cap_fields, 1, false, err)) != TH_OK)
        return r;
    item = cJSON_GetObjectItemCaseSensitive(caps, "iotEdge");
    if (item && !cJSON_IsNull(item) && !cJSON_IsBool(item))
        return th_error_set(err, TH_ERR_INVAL, 0, "%s.iotEdge: must be true or false", sub);
    if ((r = reg_opt_string(dev, "deviceScope", path, &scope, err)) != TH_OK)
        return r;
    if (scope && scope[0] && !reg_parse_scope(scope, NULL, 0))
        return th_error_set(err, TH_ERR_INVAL, 0,
                            "%s.deviceScope: '%s' is not a scope such as "
                            "\"" TH_EDGE_SCOPE_PREFIX "{deviceId}-{digits}\"",
                            path, scope);
    if ((r = reg_opt_array(dev, "parentScopes", path, &parents, err)) != TH_OK || !parents)
        return r;
    if (cJSON_GetArraySize(parents) > 1)
        return th_error_set(err, TH_ERR_INVAL, 0,
                            "%s.parentScopes: an IoT Edge device has at most one parent", path);
    cJSON_ArrayForEach(item, parents)
    {
        if (!cJSON_IsString(item) || !reg_parse_scope(item->valuestring, NULL, 0))
            return th_error_set(err, TH_ERR_INVAL, 0,
                                "%s.parentScopes[0]: must be a scope such as "
                                "\"" TH_EDGE_SCOPE_PREFIX "{deviceId}-{digits}\"",
                                path);
    }
    return TH_OK;
}

/* tags must be an object; properties may hold only desired and reported objects. */
static th_result check_twin_fields(const cJSON *ident, const char *path, struct th_error *err)
{
    static const char *const prop_fields[] = {"desired", "reported"};
    const cJSON *obj;
    char sub[160];
    th_result r;
    if ((r = opt_object(ident, "tags", path, &obj, err)) != TH_OK)
        return r;
    if ((r = opt_object(ident, "properties", path, &obj, err)) != TH_OK || !obj)
        return r;
    snprintf(sub, sizeof sub, "%s.properties", path);
    if ((r = check_members(obj, sub, prop_fields, 2, false, err)) != TH_OK)
        return r;
    const cJSON *section;
    if ((r = opt_object(obj, "desired", sub, &section, err)) != TH_OK ||
        (r = opt_object(obj, "reported", sub, &section, err)) != TH_OK)
        return r;
    return TH_OK;
}

th_result reg_check_id_field(const cJSON *ident, const char *key, const char *path,
                             const char **out, struct th_error *err)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(ident, key);
    if (!cJSON_IsString(item) || !item->valuestring)
        return th_error_set(err, TH_ERR_INVAL, 0, "%s.%s: required string missing", path, key);
    if (!th_id_valid(item->valuestring, strlen(item->valuestring)))
        return th_error_set(err, TH_ERR_INVAL, 0,
                            "%s.%s: '%s' is not a valid id (at most 128 letters, digits or "
                            "- . + %% _ # * ? ! ( ) , = @ $ ' : ;)",
                            path, key, item->valuestring);
    *out = item->valuestring;
    return TH_OK;
}

static th_result check_module(const cJSON *mod, const char *path, const char *device_id,
                              struct th_error *err)
{
    static const char *const fields[] = {"moduleId",       "deviceId", "managedBy",
                                         "authentication", "tags",     "properties"};
    const char *id, *s;
    struct auth_keys keys;
    th_result r;
    if (!cJSON_IsObject(mod))
        return th_error_set(err, TH_ERR_INVAL, 0, "%s: must be an object", path);
    if ((r = check_members(mod, path, fields, sizeof fields / sizeof fields[0], true, err)) !=
        TH_OK)
        return r;
    if ((r = reg_check_id_field(mod, "moduleId", path, &id, err)) != TH_OK)
        return r;
    if ((r = reg_opt_string(mod, "deviceId", path, &s, err)) != TH_OK)
        return r;
    if (s && strcmp(s, device_id) != 0)
        return th_error_set(err, TH_ERR_INVAL, 0,
                            "%s.deviceId: '%s' differs from the enclosing device '%s'", path, s,
                            device_id);
    if ((r = reg_opt_string(mod, "managedBy", path, &s, err)) != TH_OK)
        return r;
    if ((r = check_auth(mod, path, &keys, err)) != TH_OK)
        return r;
    return check_twin_fields(mod, path, err);
}

/* `allow_existing`: a device already in the registry is fine (import), not 409001 (load). */
static th_result check_device(const struct th_registry *reg, const cJSON *dev, const char *path,
                              bool allow_existing, struct th_error *err)
{
    static const char *const fields[] = {
        "deviceId",   "status",  "statusReason", "authentication", "tags",
        "properties", "modules", "capabilities", "deviceScope",    "parentScopes"};
    const char *id, *s;
    const cJSON *mods;
    struct auth_keys keys;
    char sub[160];
    th_result r;
    if (!cJSON_IsObject(dev))
        return th_error_set(err, TH_ERR_INVAL, 0, "%s: must be an object", path);
    if ((r = check_members(dev, path, fields, sizeof fields / sizeof fields[0], true, err)) !=
        TH_OK)
        return r;
    if ((r = reg_check_id_field(dev, "deviceId", path, &id, err)) != TH_OK)
        return r;
    if (!allow_existing && th_registry_find(reg, id, NULL))
        return th_error_set(err, TH_ERR_EXISTS, TH_EC_DEVICE_ALREADY_EXISTS,
                            "%s.deviceId: device '%s' already exists in the registry", path, id);
    if ((r = reg_opt_string(dev, "status", path, &s, err)) != TH_OK)
        return r;
    if (s && strcmp(s, "enabled") != 0 && strcmp(s, "disabled") != 0)
        return th_error_set(err, TH_ERR_INVAL, 0,
                            "%s.status: must be \"enabled\" or \"disabled\", not '%s'", path, s);
    if ((r = reg_opt_string(dev, "statusReason", path, &s, err)) != TH_OK)
        return r;
    if ((r = check_auth(dev, path, &keys, err)) != TH_OK)
        return r;
    if ((r = check_edge_fields(dev, path, err)) != TH_OK)
        return r;
    if ((r = check_twin_fields(dev, path, err)) != TH_OK)
        return r;
    if ((r = reg_opt_array(dev, "modules", path, &mods, err)) != TH_OK || !mods)
        return r;
    int n = cJSON_GetArraySize(mods);
    if (n > TH_MAX_MODULES_PER_DEVICE)
        return th_error_set(err, TH_ERR_TOO_LARGE, TH_EC_TOO_MANY_MODULES_ON_DEVICE,
                            "%s.modules: %d modules, at most %d are allowed per device", path, n,
                            TH_MAX_MODULES_PER_DEVICE);
    const cJSON *mod;
    size_t i = 0;
    cJSON_ArrayForEach(mod, mods)
    {
        snprintf(sub, sizeof sub, "%s.modules[%zu]", path, i);
        if ((r = check_module(mod, sub, id, err)) != TH_OK)
            return r;
        /* Up to 50 modules: a quadratic duplicate check is fine. */
        const char *mid = cJSON_GetObjectItemCaseSensitive(mod, "moduleId")->valuestring;
        const cJSON *prev;
        size_t j = 0;
        cJSON_ArrayForEach(prev, mods)
        {
            if (j == i)
                break;
            if (strcmp(cJSON_GetObjectItemCaseSensitive(prev, "moduleId")->valuestring, mid) == 0)
                return th_error_set(err, TH_ERR_INVAL, TH_EC_DEVICE_DEFINED_MULTIPLE_TIMES,
                                    "%s.moduleId: '%s' is already defined by %s.modules[%zu]", sub,
                                    mid, path, j);
            j++;
        }
        i++;
    }
    return TH_OK;
}

/* Temporary set of device ids seen in one document (ids borrowed from the doc). */
struct seen_id {
    const char *id;
    size_t index;
    UT_hash_handle hh;
};

static void seen_free(struct seen_id **set)
{
    struct seen_id *s, *tmp;
    HASH_ITER(hh, *set, s, tmp)
    {
        HASH_DEL(*set, s);
        free(s);
    }
}

static th_result check_devices(const struct th_registry *reg, const cJSON *devices,
                               bool allow_existing, struct th_error *err)
{
    struct seen_id *seen = NULL;
    const cJSON *dev;
    size_t i = 0;
    char path[64];
    th_result r = TH_OK;
    cJSON_ArrayForEach(dev, devices)
    {
        snprintf(path, sizeof path, "devices[%zu]", i);
        if ((r = check_device(reg, dev, path, allow_existing, err)) != TH_OK)
            break;
        const char *id = cJSON_GetObjectItemCaseSensitive(dev, "deviceId")->valuestring;
        struct seen_id *s = NULL;
        HASH_FIND(hh, seen, id, strlen(id), s);
        if (s) {
            r = th_error_set(err, TH_ERR_INVAL, TH_EC_DEVICE_DEFINED_MULTIPLE_TIMES,
                             "%s.deviceId: '%s' is already defined by devices[%zu]", path, id,
                             s->index);
            break;
        }
        s = calloc(1, sizeof *s);
        if (!s) {
            r = th_error_set(err, TH_ERR_NOMEM, 0, "out of memory");
            break;
        }
        s->id = id;
        s->index = i;
        HASH_ADD_KEYPTR(hh, seen, s->id, strlen(s->id), s);
        if (s->hh.tbl == NULL) {
            free(s);
            r = th_error_set(err, TH_ERR_NOMEM, 0, "out of memory");
            break;
        }
        i++;
    }
    seen_free(&seen);
    return r;
}

/*
 * Validates "policies" and stages them in out[] (keys generated where absent).
 * `reg` NULL: the staged set will replace all policies, so none count as existing.
 */
static th_result stage_policies(const struct th_registry *reg, const cJSON *policies,
                                struct th_policy *out, size_t *count, struct th_error *err)
{
    static const char *const fields[] = {"keyName", "primaryKey", "secondaryKey", "rights"};
    const cJSON *pol;
    size_t i = 0, added = 0;
    char path[64];
    th_result r;
    *count = 0;
    cJSON_ArrayForEach(pol, policies)
    {
        snprintf(path, sizeof path, "policies[%zu]", i);
        if (!cJSON_IsObject(pol))
            return th_error_set(err, TH_ERR_INVAL, 0, "%s: must be an object", path);
        if ((r = check_members(pol, path, fields, 4, false, err)) != TH_OK)
            return r;
        const char *name, *pk, *sk, *rights;
        if ((r = reg_opt_string(pol, "keyName", path, &name, err)) != TH_OK ||
            (r = reg_opt_string(pol, "primaryKey", path, &pk, err)) != TH_OK ||
            (r = reg_opt_string(pol, "secondaryKey", path, &sk, err)) != TH_OK ||
            (r = reg_opt_string(pol, "rights", path, &rights, err)) != TH_OK)
            return r;
        if (!name || !reg_policy_name_valid(name, strlen(name)))
            return th_error_set(err, TH_ERR_INVAL, 0,
                                "%s.keyName: required, 1 to %d letters, digits, '.', '_' or '-'",
                                path, TH_POLICY_NAME_MAX);
        if ((r = check_key(pk, path, "primaryKey", err)) != TH_OK ||
            (r = check_key(sk, path, "secondaryKey", err)) != TH_OK)
            return r;
        if (!rights)
            return th_error_set(err, TH_ERR_INVAL, 0,
                                "%s.rights: required, e.g. \"RegistryRead, ServiceConnect\"", path);
        const char *bad;
        size_t bad_len;
        unsigned perms = parse_rights(rights, &bad, &bad_len);
        if (!perms) {
            if (bad)
                return th_error_set(err, TH_ERR_INVAL, 0,
                                    "%s.rights: unknown right '%.*s' (use RegistryRead, "
                                    "RegistryWrite, ServiceConnect, DeviceConnect)",
                                    path, (int)bad_len, bad);
            return th_error_set(err, TH_ERR_INVAL, 0, "%s.rights: grants nothing", path);
        }
        for (size_t j = 0; j < *count; j++) {
            if (strcmp(out[j].name, name) == 0)
                return th_error_set(err, TH_ERR_INVAL, 0,
                                    "%s.keyName: '%s' is already defined by policies[%zu]", path,
                                    name, j);
        }
        if (!reg || !reg_policy_slot(reg, name, strlen(name)))
            added++;
        if ((reg ? reg->policy_count : 0) + added > TH_MAX_POLICIES)
            return th_error_set(err, TH_ERR_INVAL, 0,
                                "%s: a hub has at most %d shared access policies", path,
                                TH_MAX_POLICIES);
        r = reg_policy_fill(&out[*count], name, pk, sk, perms);
        if (r != TH_OK)
            return th_error_set(err, r, 0, "%s: %s", path, th_result_str(r));
        (*count)++;
        i++;
    }
    return TH_OK;
}

th_result reg_apply_twin(struct th_identity *id, const cJSON *src, int64_t now_us, const char *path,
                         struct th_error *err)
{
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(src, "properties");
    char sub[192];
    th_result r;
    snprintf(sub, sizeof sub, "%s.tags", path);
    r = reg_apply_section(id->twin, TH_SECTION_TAGS, cJSON_GetObjectItemCaseSensitive(src, "tags"),
                          now_us, sub, err);
    if (r != TH_OK)
        return r;
    snprintf(sub, sizeof sub, "%s.properties.desired", path);
    r = reg_apply_section(id->twin, TH_SECTION_DESIRED,
                          cJSON_GetObjectItemCaseSensitive(props, "desired"), now_us, sub, err);
    if (r != TH_OK)
        return r;
    snprintf(sub, sizeof sub, "%s.properties.reported", path);
    return reg_apply_section(id->twin, TH_SECTION_REPORTED,
                             cJSON_GetObjectItemCaseSensitive(props, "reported"), now_us, sub, err);
}

static void get_keys(const cJSON *ident, struct auth_keys *keys)
{
    const cJSON *auth = cJSON_GetObjectItemCaseSensitive(ident, "authentication");
    const cJSON *sym = cJSON_GetObjectItemCaseSensitive(auth, "symmetricKey");
    const cJSON *pk = cJSON_GetObjectItemCaseSensitive(sym, "primaryKey");
    const cJSON *sk = cJSON_GetObjectItemCaseSensitive(sym, "secondaryKey");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(auth, "type");
    keys->primary = cJSON_IsString(pk) ? pk->valuestring : NULL;
    keys->secondary = cJSON_IsString(sk) ? sk->valuestring : NULL;
    keys->type = auth_type_of(cJSON_IsString(type) ? type->valuestring : NULL);
    const cJSON *tp = cJSON_GetObjectItemCaseSensitive(auth, "x509Thumbprint");
    keys->x509_primary = reg_get_str(tp, "primaryThumbprint");
    keys->x509_secondary = reg_get_str(tp, "secondaryThumbprint");
}

/* A built identity's thumbprints from its validated entry. */
static void set_thumbprints(struct th_identity *id, const struct auth_keys *keys)
{
    if (id && keys->type == TH_AUTH_SELF_SIGNED) {
        snprintf(id->x509_primary, sizeof id->x509_primary, "%s",
                 keys->x509_primary ? keys->x509_primary : "");
        snprintf(id->x509_secondary, sizeof id->x509_secondary, "%s",
                 keys->x509_secondary ? keys->x509_secondary : "");
    }
}

const char *reg_get_str(const cJSON *obj, const char *key)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(item) ? item->valuestring : NULL;
}

/*
 * Builds a detached module of `device_id` from a validated entry (keys,
 * managedBy, twin). Caller frees *out with reg_identity_free.
 */
th_result reg_build_module(struct th_registry *reg, const char *device_id, const cJSON *msrc,
                           const char *path, int64_t now_us, struct th_identity **out,
                           struct th_error *err)
{
    struct auth_keys keys;
    th_result r;
    *out = NULL;
    get_keys(msrc, &keys);
    struct th_identity *mod =
        reg_identity_create(reg, device_id, reg_get_str(msrc, "moduleId"), keys.type, keys.primary,
                            keys.secondary, true, now_us, &r);
    if (!mod)
        return th_error_set(err, r, 0, "%s: %s", path, th_result_str(r));
    set_thumbprints(mod, &keys);
    const char *managed = reg_get_str(msrc, "managedBy");
    if (managed && !(mod->managed_by = reg_dup_str(managed)))
        r = th_error_set(err, TH_ERR_NOMEM, 0, "%s: out of memory", path);
    else
        r = reg_apply_twin(mod, msrc, now_us, path, err);
    if (r != TH_OK) {
        reg_identity_free(mod);
        return r;
    }
    *out = mod;
    return TH_OK;
}

/* Builds a detached device (with modules and twins) from a validated entry. */
th_result reg_build_device(struct th_registry *reg, const cJSON *src, const char *path,
                           int64_t now_us, struct th_identity **out, struct th_error *err)
{
    struct auth_keys keys;
    const char *status = reg_get_str(src, "status");
    const char *reason = reg_get_str(src, "statusReason");
    th_result r;
    char sub[160];

    *out = NULL;
    get_keys(src, &keys);
    struct th_identity *dev =
        reg_identity_create(reg, reg_get_str(src, "deviceId"), NULL, keys.type, keys.primary,
                            keys.secondary, !status || strcmp(status, "enabled") == 0, now_us, &r);
    if (!dev)
        return th_error_set(err, r, 0, "%s: %s", path, th_result_str(r));
    set_thumbprints(dev, &keys);
    if (reason && !(dev->status_reason = reg_dup_str(reason))) {
        reg_identity_free(dev);
        return th_error_set(err, TH_ERR_NOMEM, 0, "%s: out of memory", path);
    }
    /* A parent named by the document is resolved by reg_doc_resolve when all are built. */
    struct th_ident_req req;
    struct scope_plan sp;
    if ((r = th_ident_req_from_json(src, false, &req, err)) != TH_OK ||
        (r = reg_plan_scopes(reg, NULL, dev->device_id, dev->generation_id, &req, now_us, true,
                             NULL, &sp, err)) != TH_OK) {
        reg_identity_free(dev);
        return r;
    }
    dev->iot_edge = sp.edge;
    dev->device_scope = sp.device_scope;
    dev->parent_scope = sp.parent_scope;
    if ((r = reg_apply_twin(dev, src, now_us, path, err)) != TH_OK) {
        reg_identity_free(dev);
        return r;
    }
    const cJSON *mods = cJSON_GetObjectItemCaseSensitive(src, "modules");
    const cJSON *msrc;
    size_t i = 0;
    if (!cJSON_IsArray(mods))
        mods = NULL;
    cJSON_ArrayForEach(msrc, mods)
    {
        snprintf(sub, sizeof sub, "%s.modules[%zu]", path, i++);
        struct th_identity *mod;
        if ((r = reg_build_module(reg, dev->device_id, msrc, sub, now_us, &mod, err)) != TH_OK) {
            reg_identity_free(dev);
            return r;
        }
        if ((r = reg_attach_module(dev, mod)) != TH_OK) {
            th_error_set(err, r, 0, "%s: %s", sub, th_result_str(r));
            reg_identity_free(mod);
            reg_identity_free(dev);
            return r;
        }
    }
    *out = dev;
    return TH_OK;
}

/*
 * The checks th_registry_load and th_registry_import share: the document's
 * shape, its "policies" and "devices" arrays (*out_policies and *out_devices, NULL
 * when absent), every device entry (check_devices with `import`), and the
 * policies staged into `staged`. Changes nothing in `reg`.
 */
th_result reg_check_document(const struct th_registry *reg, const cJSON *doc, bool import,
                             const cJSON **out_policies, const cJSON **out_devices,
                             struct th_policy *staged, size_t *staged_count, struct th_error *err)
{
    /* "dps": the provisioning service's enrollments, read by th_dps_load (dps.h). */
    static const char *const top_fields[] = {"$schema", "policies", "devices", "dps"};
    const cJSON *policies, *devices;
    th_result r;

    if (!reg)
        return th_error_set(err, TH_ERR_INVAL, 0, "no registry");
    if (!cJSON_IsObject(doc))
        return th_error_set(err, TH_ERR_INVAL, 0, "the registry document must be an object");
    if ((r = th_json_refuse_nul(doc, "the registry document", err)) != TH_OK)
        return r;
    if ((r = check_members(doc, "", top_fields, 4, false, err)) != TH_OK ||
        (r = reg_opt_array(doc, "policies", "", &policies, err)) != TH_OK ||
        (r = reg_opt_array(doc, "devices", "", &devices, err)) != TH_OK)
        return r;
    if (policies && cJSON_GetArraySize(policies) > TH_MAX_POLICIES)
        return th_error_set(err, TH_ERR_INVAL, 0, "policies: at most %d are allowed",
                            TH_MAX_POLICIES);
    if (devices && (r = check_devices(reg, devices, import, err)) != TH_OK)
        return r;
    if (policies && (r = stage_policies(reg, policies, staged, staged_count, err)) != TH_OK)
        return r;
    *out_policies = policies;
    *out_devices = devices;
    return TH_OK;
}

th_result th_registry_load(struct th_registry *reg, const cJSON *doc, int64_t now_us,
                           struct th_error *err)
{
    const cJSON *policies, *devices;
    struct th_policy staged[TH_MAX_POLICIES];
    size_t staged_count = 0;

    /* Phase 1: validate everything that does not need a twin. */
    th_result r =
        reg_check_document(reg, doc, false, &policies, &devices, staged, &staged_count, err);
    if (r != TH_OK)
        return r;

    /* Phase 2: build detached identities; twin content is validated as it is applied. */
    size_t n = devices ? (size_t)cJSON_GetArraySize(devices) : 0;
    struct th_identity **built = n ? calloc(n, sizeof *built) : NULL;
    if (n && !built)
        return th_error_set(err, TH_ERR_NOMEM, 0, "out of memory");
    const cJSON *dsrc;
    size_t i = 0;
    char path[64];
    r = TH_OK;
    cJSON_ArrayForEach(dsrc, devices)
    {
        snprintf(path, sizeof path, "devices[%zu]", i);
        if ((r = reg_build_device(reg, dsrc, path, now_us, &built[i], err)) != TH_OK)
            break;
        i++;
    }
    if (r == TH_OK) {
        struct doc_view v = {reg, built, n, NULL, 0};
        r = reg_doc_resolve_built(&v, err);
    }

    /* Phase 3: insert; only allocation can fail here, and it is rolled back. */
    size_t inserted = 0;
    if (r == TH_OK) {
        for (; inserted < n; inserted++) {
            if ((r = reg_insert_device(reg, built[inserted])) != TH_OK) {
                th_error_set(err, r, 0, "devices[%zu]: out of memory", inserted);
                break;
            }
        }
    }
    if (r != TH_OK) {
        for (size_t j = 0; j < inserted; j++) {
            struct dev_node *node =
                reg_find_node(reg, built[j]->device_id, strlen(built[j]->device_id));
            HASH_DEL(reg->devices, node);
            free(node);
        }
        for (size_t j = 0; j < n; j++)
            reg_identity_free(built[j]);
        free(built);
        return r;
    }
    free(built);

    /* Policies last: they go into the fixed array and cannot fail. */
    for (size_t j = 0; j < staged_count; j++) {
        struct th_policy *slot = reg_policy_slot(reg, staged[j].name, strlen(staged[j].name));
        if (!slot)
            slot = &reg->policies[reg->policy_count++];
        *slot = staged[j];
    }
    return TH_OK;
}

/* ------------------------------------------------------------------ */
/* export and policies as JSON                                         */
/* ------------------------------------------------------------------ */

/* "RegistryRead, ServiceConnect" for a permission set. */
static void rights_text(unsigned perms, char buf[80])
{
    size_t at = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof perm_names / sizeof perm_names[0]; i++) {
        if (!(perms & perm_names[i].perm))
            continue;
        int n = snprintf(buf + at, 80 - at, "%s%s", at ? ", " : "", perm_names[i].name);
        if (n > 0)
            at += (size_t)n;
    }
}

cJSON *th_registry_policies_json(const struct th_registry *reg)
{
    if (!reg)
        return NULL;
    cJSON *arr = cJSON_CreateArray();
    if (!arr)
        return NULL;
    for (size_t i = 0; i < reg->policy_count; i++) {
        const struct th_policy *p = &reg->policies[i];
        char rights[80];
        rights_text(p->perms, rights);
        cJSON *o = cJSON_CreateObject();
        bool ok = o && reg_add_str(o, "keyName", p->name) &&
                  reg_add_str(o, "primaryKey", p->primary_key) &&
                  reg_add_str(o, "secondaryKey", p->secondary_key) &&
                  reg_add_str(o, "rights", rights);
        if (!ok || !cJSON_AddItemToArray(arr, o)) {
            cJSON_Delete(o);
            cJSON_Delete(arr);
            return NULL;
        }
    }
    return arr;
}

th_result th_registry_restore_policies(struct th_registry *reg, const cJSON *arr,
                                       struct th_error *err)
{
    struct th_policy staged[TH_MAX_POLICIES];
    size_t count = 0;
    th_result r;
    if (!reg)
        return th_error_set(err, TH_ERR_INVAL, 0, "no registry");
    if (!cJSON_IsArray(arr))
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "policies: must be an array of {\"keyName\",\"primaryKey\","
                            "\"secondaryKey\",\"rights\"}");
    if (cJSON_GetArraySize(arr) > TH_MAX_POLICIES)
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "policies: at most %d are allowed", TH_MAX_POLICIES);
    if ((r = stage_policies(NULL, arr, staged, &count, err)) != TH_OK)
        return r;
    memcpy(reg->policies, staged, count * sizeof staged[0]);
    reg->policy_count = count;
    return TH_OK;
}

/*
 * {"type":"sas","symmetricKey":{"primaryKey","secondaryKey"}} as the loader
 * reads it; {"type":"none"} for an identity without keys.
 */
static cJSON *auth_doc_json(const struct th_identity *id)
{
    if (id->auth_type != TH_AUTH_SAS) {
        cJSON *none = cJSON_CreateObject(), *tp = NULL;
        bool ok = none && reg_add_str(none, "type", th_auth_type_name(id->auth_type));
        if (ok && id->auth_type == TH_AUTH_SELF_SIGNED) {
            tp = cJSON_CreateObject();
            ok = tp && reg_add_str(tp, "primaryThumbprint", id->x509_primary) &&
                 reg_add_str_or_null(tp, "secondaryThumbprint",
                                     id->x509_secondary[0] ? id->x509_secondary : NULL);
            ok = reg_add_item(none, "x509Thumbprint", ok ? tp : (cJSON_Delete(tp), NULL)) && ok;
        }
        if (!ok) {
            cJSON_Delete(none);
            return NULL;
        }
        return none;
    }
    cJSON *auth = cJSON_CreateObject();
    cJSON *sym = cJSON_CreateObject();
    bool ok = auth && sym && reg_add_str(auth, "type", "sas") &&
              reg_add_str(sym, "primaryKey", id->primary_key) &&
              reg_add_str(sym, "secondaryKey", id->secondary_key);
    if (ok) {
        ok = reg_add_item(auth, "symmetricKey", sym);
        sym = NULL;
    }
    cJSON_Delete(sym);
    if (!ok) {
        cJSON_Delete(auth);
        return NULL;
    }
    return auth;
}

static cJSON *twin_props_doc_json(const struct th_twin *twin)
{
    cJSON *props = cJSON_CreateObject();
    if (!props || !reg_add_item(props, "desired", cJSON_Duplicate(twin->desired, 1)) ||
        !reg_add_item(props, "reported", cJSON_Duplicate(twin->reported, 1))) {
        cJSON_Delete(props);
        return NULL;
    }
    return props;
}

/* One device or module entry of a registry document. */
static cJSON *identity_doc_json(const struct th_identity *id, bool include_twins)
{
    bool is_device = id->module_id == NULL;
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    bool ok;
    if (is_device) {
        ok = reg_add_str(o, "deviceId", id->device_id) &&
             reg_add_str(o, "status", id->enabled ? "enabled" : "disabled") &&
             (!id->status_reason || reg_add_str(o, "statusReason", id->status_reason));
        /* Edge capability and parents only where set; an edge device's own scope is regenerated
         * on load, but written so that the document reads like the hub's identity. */
        if (id->iot_edge)
            ok = ok && reg_add_item(o, "capabilities", reg_capabilities_json(id));
        if (id->device_scope)
            ok = ok && reg_add_str(o, "deviceScope", id->device_scope);
        if (id->iot_edge && id->parent_scope)
            ok = ok && reg_add_item(o, "parentScopes", reg_parent_scopes_json(id));
    } else {
        ok = reg_add_str(o, "moduleId", id->module_id) &&
             (!id->managed_by || reg_add_str(o, "managedBy", id->managed_by));
    }
    ok = ok && reg_add_item(o, "authentication", auth_doc_json(id));
    if (include_twins)
        ok = ok && reg_add_item(o, "tags", cJSON_Duplicate(id->twin->tags, 1)) &&
             reg_add_item(o, "properties", twin_props_doc_json(id->twin));
    if (ok && is_device) {
        cJSON *mods = cJSON_AddArrayToObject(o, "modules");
        ok = mods != NULL;
        for (size_t i = 0; ok && i < id->module_count; i++) {
            cJSON *m = identity_doc_json(id->modules[i], include_twins);
            if (!m || !cJSON_AddItemToArray(mods, m)) {
                cJSON_Delete(m);
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

cJSON *th_registry_export(const struct th_registry *reg, bool include_twins)
{
    if (!reg)
        return NULL;
    cJSON *doc = cJSON_CreateObject();
    cJSON *devices = NULL;
    bool ok = doc && reg_add_item(doc, "policies", th_registry_policies_json(reg)) &&
              (devices = cJSON_AddArrayToObject(doc, "devices")) != NULL;
    for (const struct dev_node *n = reg->devices; ok && n; n = n->hh.next) {
        cJSON *d = identity_doc_json(n->id, include_twins);
        if (!d || !cJSON_AddItemToArray(devices, d)) {
            cJSON_Delete(d);
            ok = false;
        }
    }
    if (!ok) {
        cJSON_Delete(doc);
        return NULL;
    }
    return doc;
}

/* ------------------------------------------------------------------ */
/* parents a document names                                            */
/* ------------------------------------------------------------------ */

/*
 * The deviceScope device `device_id` has after the operation if it is then
 * an IoT Edge device, else NULL: a device the document creates, one it
 * overwrites, or one of the registry.
 */
static const char *doc_edge_scope(const struct doc_view *v, const char *device_id)
{
    for (size_t i = 0; i < v->nbuilt; i++) {
        if (strcmp(v->built[i]->device_id, device_id) == 0)
            return v->built[i]->iot_edge ? v->built[i]->device_scope : NULL;
    }
    for (size_t i = 0; i < v->nupdates; i++) {
        const struct pending_update *u = &v->updates[i];
        if (!u->id->module_id && u->change.scopes_set && strcmp(u->id->device_id, device_id) == 0)
            return u->change.scopes.edge ? u->change.scopes.device_scope : NULL;
    }
    const struct th_identity *dev = th_registry_find(v->reg, device_id, NULL);
    return dev && dev->iot_edge ? dev->device_scope : NULL;
}

/*
 * Replaces the parent scope *slot (malloc'd, as the document wrote it) of
 * device `self` with the scope of the device it names. The document names a
 * parent by the device id in "ms-azure-iot-edge://{id}-{ticks}": a registry
 * document does not keep generation ids, so the ticks may differ.
 */
th_result reg_doc_resolve(const struct doc_view *v, const char *self, bool edge, char **slot,
                          struct th_error *err)
{
    const char *field = edge ? "parentScopes" : "deviceScope";
    char pid[TH_MAX_ID_LEN + 1];
    if (!*slot)
        return TH_OK;
    if (!reg_parse_scope(*slot, pid, sizeof pid))
        return th_error_set(err, TH_ERR_INVAL, 0, "%s of device '%s': '%s' is not a scope", field,
                            self, *slot);
    if (strcmp(pid, self) == 0)
        return th_error_set(err, TH_ERR_INVAL, 0,
                            "%s of device '%s': a device cannot be its own parent", field, self);
    const char *scope = doc_edge_scope(v, pid);
    if (!scope)
        return th_error_set(err, TH_ERR_INVAL, 0,
                            "%s of device '%s': '%s' names device '%s', which is not an IoT "
                            "Edge device (capabilities.iotEdge true) in the registry or in this "
                            "document",
                            field, self, *slot, pid);
    char *copy = reg_dup_str(scope);
    if (!copy)
        return th_error_set(err, TH_ERR_NOMEM, 0, "out of memory");
    free(*slot);
    *slot = copy;
    return TH_OK;
}

/* Resolves the parents of the devices a document creates (v->built). */
th_result reg_doc_resolve_built(const struct doc_view *v, struct th_error *err)
{
    for (size_t i = 0; i < v->nbuilt; i++) {
        struct th_identity *d = v->built[i];
        bool edge = d->iot_edge;
        th_result r =
            reg_doc_resolve(v, d->device_id, edge, edge ? &d->parent_scope : &d->device_scope, err);
        if (r != TH_OK)
            return r;
    }
    return TH_OK;
}
