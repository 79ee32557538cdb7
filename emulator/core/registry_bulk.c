/*
 * registry_bulk.c - th_registry_bulk (bulk.h): the hub's bulk registry
 * operation over export-import identities, each entry carried out on its
 * own with the same core rules as the single-identity REST calls
 * (th_registry_create, th_identity_apply, th_twin_service_write), and the
 * hub's per-device results.
 */
#include "bulk.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "json.h"
#include "th_limits.h"
#include "topic.h"
#include "twin.h"
#include "util.h"

enum mode {
    M_CREATE,
    M_CREATE_OR_UPDATE,
    M_CREATE_OR_UPDATE_IF_MATCH,
    M_UPDATE,
    M_UPDATE_IF_MATCH,
    M_DELETE,
    M_DELETE_IF_MATCH,
    M_UPDATE_TWIN,
    M_UPDATE_TWIN_IF_MATCH,
};

static const struct {
    const char *name;
    enum mode mode;
} modes[] = {
    {"create", M_CREATE},
    {"createOrUpdate", M_CREATE_OR_UPDATE},
    {"createOrUpdateIfMatchETag", M_CREATE_OR_UPDATE_IF_MATCH},
    {"update", M_UPDATE},
    {"updateIfMatchETag", M_UPDATE_IF_MATCH},
    {"delete", M_DELETE},
    {"deleteIfMatchETag", M_DELETE_IF_MATCH},
    {"updateTwin", M_UPDATE_TWIN},
    {"updateTwinIfMatchETag", M_UPDATE_TWIN_IF_MATCH},
};

/* One entry read from the request; strings borrow from it. */
struct entry {
    const char *device_id;
    const char *module_id;
    enum mode mode;
    const char *etag;      /* eTag or etag; NULL when absent */
    const char *twin_etag; /* twinETag */
    const cJSON *tags;     /* object or NULL */
    const cJSON *desired;  /* properties.desired: object or NULL */
    struct th_ident_req req;
};

/* Reads the members of one entry; the ids are already checked. */
static th_result read_entry(const cJSON *e, struct entry *out, struct th_error *err)
{
    const cJSON *jmode = cJSON_GetObjectItemCaseSensitive(e, "importMode");
    out->mode = M_CREATE_OR_UPDATE; /* ImportMode's default (0) */
    if (jmode && !cJSON_IsNull(jmode)) {
        bool found = false;
        for (size_t i = 0; cJSON_IsString(jmode) && i < sizeof modes / sizeof modes[0]; i++)
            if (!strcasecmp(jmode->valuestring, modes[i].name)) {
                out->mode = modes[i].mode;
                found = true;
            }
        if (!found)
            return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                                "importMode '%s' is not one of create, createOrUpdate, "
                                "createOrUpdateIfMatchETag, update, updateIfMatchETag, delete, "
                                "deleteIfMatchETag, updateTwin, updateTwinIfMatchETag",
                                cJSON_IsString(jmode) ? jmode->valuestring : "(not a string)");
    }
    const cJSON *je = cJSON_GetObjectItemCaseSensitive(e, "eTag");
    if (!je || cJSON_IsNull(je))
        je = cJSON_GetObjectItemCaseSensitive(e, "etag");
    const cJSON *jt = cJSON_GetObjectItemCaseSensitive(e, "twinETag");
    if ((je && !cJSON_IsNull(je) && !cJSON_IsString(je)) ||
        (jt && !cJSON_IsNull(jt) && !cJSON_IsString(jt)))
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "eTag and twinETag must be strings");
    out->etag = cJSON_IsString(je) ? je->valuestring : NULL;
    out->twin_etag = cJSON_IsString(jt) ? jt->valuestring : NULL;
    const cJSON *tags = cJSON_GetObjectItemCaseSensitive(e, "tags");
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(e, "properties");
    const cJSON *desired =
        cJSON_IsObject(props) ? cJSON_GetObjectItemCaseSensitive(props, "desired") : NULL;
    if ((tags && !cJSON_IsNull(tags) && !cJSON_IsObject(tags)) ||
        (props && !cJSON_IsNull(props) && !cJSON_IsObject(props)) ||
        (desired && !cJSON_IsNull(desired) && !cJSON_IsObject(desired)))
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "tags, properties and properties.desired must be objects");
    out->tags = cJSON_IsObject(tags) ? tags : NULL;
    out->desired = cJSON_IsObject(desired) ? desired : NULL;
    return th_ident_req_from_json(e, out->module_id != NULL, &out->req, err);
}

/* {"tags": .., "properties": {"desired": ..}} referring to the entry's parts; NULL on OOM. */
static cJSON *twin_doc(const struct entry *en)
{
    cJSON *doc = cJSON_CreateObject();
    cJSON *props = doc ? cJSON_AddObjectToObject(doc, "properties") : NULL;
    if (!props || (en->tags && !cJSON_AddItemReferenceToObject(doc, "tags", (cJSON *)en->tags)) ||
        (en->desired && !cJSON_AddItemReferenceToObject(props, "desired", (cJSON *)en->desired))) {
        cJSON_Delete(doc);
        return NULL;
    }
    return doc;
}

static bool if_match_mode(enum mode m)
{
    return m == M_CREATE_OR_UPDATE_IF_MATCH || m == M_UPDATE_IF_MATCH || m == M_DELETE_IF_MATCH ||
           m == M_UPDATE_TWIN_IF_MATCH;
}

/* The identity etag check of an IfMatch mode; TH_OK otherwise. */
static th_result etag_check(const struct entry *en, const struct th_identity *id,
                            struct th_error *err)
{
    if (!if_match_mode(en->mode) || en->mode == M_UPDATE_TWIN_IF_MATCH)
        return TH_OK;
    char have[32];
    th_identity_etag(id, have);
    if (en->etag && en->etag[0] && th_etag_matches(en->etag, have))
        return TH_OK;
    return th_error_set(err, TH_ERR_PRECONDITION, TH_EC_PRECONDITION_FAILED,
                        "%s: eTag %s does not match the identity's current etag \"%s\"",
                        en->device_id, en->etag ? en->etag : "(none given)", have);
}

static void changed(const struct th_bulk_hooks *hooks, const struct th_bulk_change *ch)
{
    if (hooks && hooks->changed)
        hooks->changed(hooks->arg, ch);
}

/*
 * Overwrite an existing identity: the twin parts the entry carries on a
 * copy of the twin, then the identity update, then the copy swapped in, so
 * that a refusal of either changes nothing.
 */
static th_result update_entry(struct th_registry *reg, struct th_identity *id,
                              const struct entry *en, bool twin_only, int64_t now_us,
                              const struct th_bulk_hooks *hooks, struct th_error *err)
{
    struct th_twin *copy = NULL;
    struct th_twin_write_result res = {0};
    th_result r = TH_OK;
    if (en->tags || en->desired || twin_only) {
        cJSON *doc = twin_doc(en);
        copy = doc ? th_twin_clone(id->twin) : NULL;
        if (!copy) {
            cJSON_Delete(doc);
            return th_error_set(err, TH_ERR_NOMEM, TH_EC_SERVER_ERROR, "out of memory");
        }
        const char *if_match = NULL;
        if (en->mode == M_UPDATE_TWIN_IF_MATCH)
            if_match = en->twin_etag && en->twin_etag[0] ? en->twin_etag : "\"(none given)\"";
        struct th_twin_write w = {.mode = TH_TWIN_WRITE_REPLACE, .doc = doc, .if_match = if_match};
        r = th_twin_service_write(copy, &w, now_us, &res, err);
        cJSON_Delete(doc);
    }
    bool keys_changed = false;
    if (r == TH_OK && !twin_only)
        r = th_identity_apply(reg, id, &en->req, now_us, &keys_changed, err);
    if (r != TH_OK) {
        th_twin_free(copy);
        th_twin_write_result_free(&res);
        return r;
    }
    if (copy) {
        th_twin_free(id->twin);
        id->twin = copy;
    }
    struct th_bulk_change ch = {
        .kind = TH_BULK_UPDATED,
        .id = id,
        .device_id = id->device_id,
        .module_id = id->module_id,
        .disabled = !twin_only && en->req.enabled == 0,
        .keys_changed = keys_changed,
        .notification = res.notification,
        .desired = res.desired,
        .desired_version = res.desired_version,
    };
    changed(hooks, &ch);
    th_twin_write_result_free(&res);
    return TH_OK;
}

static th_result run_entry(struct th_registry *reg, const struct entry *en, int64_t now_us,
                           const struct th_bulk_hooks *hooks, struct th_error *err)
{
    struct th_identity *dev = th_registry_find(reg, en->device_id, NULL);
    struct th_identity *id = th_registry_find(reg, en->device_id, en->module_id);
    bool creates = en->mode == M_CREATE || en->mode == M_CREATE_OR_UPDATE ||
                   en->mode == M_CREATE_OR_UPDATE_IF_MATCH;
    if (!id && creates) {
        struct th_identity *made = NULL;
        th_result r = th_registry_create(reg, en->device_id, en->module_id, &en->req, en->tags,
                                         en->desired, now_us, &made, err);
        if (r == TH_OK) {
            struct th_bulk_change ch = {.kind = TH_BULK_CREATED,
                                        .id = made,
                                        .device_id = made->device_id,
                                        .module_id = made->module_id};
            changed(hooks, &ch);
        }
        return r;
    }
    if (id && en->mode == M_CREATE)
        return en->module_id
                   ? th_error_set(err, TH_ERR_EXISTS, TH_EC_MODULE_ALREADY_EXISTS_ON_DEVICE,
                                  "module '%s' already exists on device '%s'", en->module_id,
                                  en->device_id)
                   : th_error_set(err, TH_ERR_EXISTS, TH_EC_DEVICE_ALREADY_EXISTS,
                                  "a device with id '%s' is already registered", en->device_id);
    if (!id)
        return !dev || !en->module_id ? th_error_set(err, TH_ERR_NOT_FOUND, TH_EC_DEVICE_NOT_FOUND,
                                                     "device '%s' is not registered", en->device_id)
                                      : th_error_set(err, TH_ERR_NOT_FOUND, TH_EC_MODULE_NOT_FOUND,
                                                     "module '%s' is not registered on device '%s'",
                                                     en->module_id, en->device_id);
    th_result r = etag_check(en, id, err);
    if (r != TH_OK)
        return r;
    if (en->mode == M_DELETE || en->mode == M_DELETE_IF_MATCH) {
        if (hooks && hooks->before_delete)
            hooks->before_delete(hooks->arg, id);
        if (th_registry_remove(reg, en->device_id, en->module_id) != TH_OK)
            return th_error_set(err, TH_ERR_NOT_FOUND, TH_EC_DEVICE_NOT_FOUND,
                                "device '%s' vanished while deleting", en->device_id);
        struct th_bulk_change ch = {
            .kind = TH_BULK_DELETED, .device_id = en->device_id, .module_id = en->module_id};
        changed(hooks, &ch);
        return TH_OK;
    }
    return update_entry(reg, id, en,
                        en->mode == M_UPDATE_TWIN || en->mode == M_UPDATE_TWIN_IF_MATCH, now_us,
                        hooks, err);
}

/* Appends {"deviceId","moduleId"?,"errorCode","errorStatus"}; false on OOM. */
static bool add_error(cJSON *errors, const char *device_id, const char *module_id,
                      const struct th_error *e)
{
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddItemToArray(errors, o)) {
        cJSON_Delete(o);
        return false;
    }
    const char *name = th_error_code_name(e->code ? e->code : TH_EC_SERVER_ERROR);
    return cJSON_AddStringToObject(o, "deviceId", device_id ? device_id : "") &&
           (!module_id || cJSON_AddStringToObject(o, "moduleId", module_id)) &&
           cJSON_AddStringToObject(o, "errorCode", name ? name : "ServerError") &&
           cJSON_AddStringToObject(o, "errorStatus", e->message);
}

/* Whether an earlier entry named the same identity. */
static bool seen_before(const cJSON *devices, const cJSON *upto, const char *d, const char *m)
{
    for (const cJSON *e = devices->child; e && e != upto; e = e->next) {
        const char *ed = th_json_string(e, "id", NULL), *em = th_json_string(e, "moduleId", NULL);
        if (ed && !strcmp(ed, d) && ((!em && !m) || (em && m && !strcmp(em, m))))
            return true;
    }
    return false;
}

th_result th_registry_bulk(struct th_registry *reg, const cJSON *devices, int64_t now_us,
                           const struct th_bulk_hooks *hooks, cJSON **out_result,
                           struct th_error *err)
{
    *out_result = NULL;
    if (!reg || !cJSON_IsArray(devices))
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "the bulk registry operation takes a JSON array of export-import "
                            "identities [{\"id\": ..., \"importMode\": ...}, ...]");
    int n = cJSON_GetArraySize(devices);
    if (n == 0)
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "the array of identities is empty; send 1 to %d", TH_BULK_MAX_DEVICES);
    if (n > TH_BULK_MAX_DEVICES)
        return th_error_set(err, TH_ERR_TOO_LARGE, TH_EC_TOO_MANY_DEVICES,
                            "%d identities in one bulk operation; at most %d are allowed, send "
                            "them in several requests",
                            n, TH_BULK_MAX_DEVICES);
    for (const cJSON *e = devices->child; e; e = e->next)
        if (!cJSON_IsObject(e))
            return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                                "every entry of the array must be an export-import identity "
                                "object");
    cJSON *result = cJSON_CreateObject();
    cJSON *errors = result ? cJSON_AddArrayToObject(result, "errors") : NULL;
    bool ok = errors && cJSON_AddArrayToObject(result, "warnings");
    size_t failed = 0;
    for (const cJSON *e = devices->child; ok && e; e = e->next) {
        struct th_error ee = {0};
        struct entry en;
        memset(&en, 0, sizeof en);
        en.device_id = th_json_string(e, "id", NULL);
        en.module_id = th_json_string(e, "moduleId", NULL);
        th_result r;
        if (!en.device_id || !th_id_valid(en.device_id, strlen(en.device_id)))
            r = th_error_set(&ee, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                             "'id' must be a valid device id (at most %d characters: letters, "
                             "digits and -.+%%_#*?!(),=@$':)",
                             TH_MAX_ID_LEN);
        else if (en.module_id && !th_id_valid(en.module_id, strlen(en.module_id)))
            r = th_error_set(&ee, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                             "'moduleId' of '%s' is not a valid module id", en.device_id);
        else if (seen_before(devices, e, en.device_id, en.module_id))
            r = th_error_set(&ee, TH_ERR_INVAL, TH_EC_DEVICE_DEFINED_MULTIPLE_TIMES,
                             "'%s' appears more than once in this request; only its first entry "
                             "was carried out",
                             en.device_id);
        else if ((r = read_entry(e, &en, &ee)) == TH_OK)
            r = run_entry(reg, &en, now_us, hooks, &ee);
        if (r == TH_ERR_NOMEM) {
            ok = false;
            break;
        }
        if (r != TH_OK) {
            failed++;
            ok = add_error(errors, en.device_id, en.module_id, &ee);
        }
    }
    if (!ok || !cJSON_AddBoolToObject(result, "isSuccessful", failed == 0)) {
        cJSON_Delete(result);
        return th_error_set(err, TH_ERR_NOMEM, TH_EC_SERVER_ERROR,
                            "out of memory during the bulk operation; some entries may have been "
                            "carried out, read the registry");
    }
    *out_result = result;
    return TH_OK;
}
