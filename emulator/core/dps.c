/*
 * dps.c - the Device Provisioning Service model (dps.h, docs/dps.md):
 * enrollments and groups, symmetric-key attestation and key derivation,
 * the registration's effect on the registry, registration states,
 * operation ids, the service API's documents and the DPS state file.
 */
#include "dps.h"
#include "dps_x509.h"

#include <ctype.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "json.h"
#include "topic.h" /* th_id_valid */
#include "twin.h"
#include "util.h"

#define KEY_MIN_BYTES 16
#define KEY_MAX_BYTES 64

/* ---- small helpers ---- */

static th_result bad(struct th_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static th_result dps_err(struct th_error *err, th_result r, int status, int code, const char *fmt,
                         ...) __attribute__((format(printf, 5, 6)));
static th_result unauthorized(struct th_error *err, th_result r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static th_result verr(struct th_error *err, th_result r, int status, int code, const char *fmt,
                      va_list ap) __attribute__((format(printf, 5, 0)));
static th_result verr(struct th_error *err, th_result r, int status, int code, const char *fmt,
                      va_list ap)
{
    char msg[sizeof err->message];
    vsnprintf(msg, sizeof msg, fmt, ap);
    th_error_set(err, r, code, "%s", msg);
    if (err) {
        err->status = status;
    }
    return r;
}

/* 400 / TH_DPS_EC_BAD_REQUEST. */
static th_result bad(struct th_error *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    th_result r = verr(err, TH_ERR_INVAL, 400, TH_DPS_EC_BAD_REQUEST, fmt, ap);
    va_end(ap);
    return r;
}

static th_result dps_err(struct th_error *err, th_result r, int status, int code, const char *fmt,
                         ...)
{
    va_list ap;
    va_start(ap, fmt);
    verr(err, r, status, code, fmt, ap);
    va_end(ap);
    return r;
}

/* 401 / TH_DPS_EC_UNAUTHORIZED. */
static th_result unauthorized(struct th_error *err, th_result r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    verr(err, r, 401, TH_DPS_EC_UNAUTHORIZED, fmt, ap);
    va_end(ap);
    return r;
}

static bool key_valid(const char *k)
{
    uint8_t raw[KEY_MAX_BYTES + 4];
    size_t n;
    return th_b64_decode(k, strlen(k), raw, sizeof raw, &n) == TH_OK && n >= KEY_MIN_BYTES &&
           n <= KEY_MAX_BYTES;
}

static void etag_text(uint64_t counter, char buf[32])
{
    char dec[24];
    int n = snprintf(dec, sizeof dec, "%llu", (unsigned long long)counter);
    if (th_b64_encode((const uint8_t *)dec, (size_t)n, buf, 32) != TH_OK) {
        buf[0] = '\0';
    }
}

/* If-Match: NULL, "" and "*" match anything; else the etag, with or without quotes. */
static bool if_match_ok(const char *if_match, uint64_t counter)
{
    char etag[32];
    if (!if_match || !if_match[0] || !strcmp(if_match, "*")) {
        return true;
    }
    etag_text(counter, etag);
    return th_etag_matches(if_match, etag);
}

bool th_dps_id_scope_valid(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > TH_DPS_ID_SCOPE_MAX) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (!isalnum((unsigned char)s[i])) {
            return false;
        }
    }
    return true;
}

bool th_dps_registration_id_valid(const char *id, size_t len)
{
    if (!id || len == 0 || len > TH_MAX_ID_LEN) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)id[i];
        if (!isalnum(c) && !strchr("-._:", c)) {
            return false;
        }
    }
    unsigned char last = (unsigned char)id[len - 1];
    return isalnum(last) || last == '-';
}

th_result th_dps_derive_key(const char *group_key_b64, const char *registration_id, char *out,
                            size_t size)
{
    uint8_t key[KEY_MAX_BYTES + 4], mac[EVP_MAX_MD_SIZE];
    size_t klen;
    unsigned mlen = 0;
    if (!group_key_b64 || !registration_id ||
        th_b64_decode(group_key_b64, strlen(group_key_b64), key, sizeof key, &klen) != TH_OK ||
        klen == 0) {
        return TH_ERR_INVAL;
    }
    if (!HMAC(EVP_sha256(), key, (int)klen, (const uint8_t *)registration_id,
              strlen(registration_id), mac, &mlen)) {
        return TH_ERR_INVAL;
    }
    return th_b64_encode(mac, mlen, out, size);
}

/* ---- the store ---- */

struct th_dps *th_dps_new(const char *id_scope)
{
    if (!id_scope) {
        id_scope = TH_DPS_DEFAULT_ID_SCOPE;
    }
    if (!th_dps_id_scope_valid(id_scope)) {
        return NULL;
    }
    struct th_dps *dps = calloc(1, sizeof *dps);
    if (!dps) {
        return NULL;
    }
    snprintf(dps->id_scope, sizeof dps->id_scope, "%s", id_scope);
    snprintf(dps->policy_primary, sizeof dps->policy_primary, "%s", TH_DEV_DPS_KEY);
    snprintf(dps->policy_secondary, sizeof dps->policy_secondary, "%s", TH_DEV_DPS_SECONDARY_KEY);
    dps->next_operation = 1;
    return dps;
}

static void enrollment_free(struct th_dps_enrollment *e)
{
    if (e) {
        free(e->id);
        cJSON_Delete(e->doc);
        free(e);
    }
}

static void registration_free(struct th_dps_registration *r)
{
    if (r) {
        free(r->registration_id);
        free(r->device_id);
        free(r->group_id);
        free(r->substatus);
        cJSON_Delete(r->payload);
        free(r);
    }
}

static void clear(struct th_dps *dps)
{
    while (dps->enrollments) {
        struct th_dps_enrollment *e = dps->enrollments;
        dps->enrollments = e->next;
        enrollment_free(e);
    }
    while (dps->registrations) {
        struct th_dps_registration *r = dps->registrations;
        dps->registrations = r->next;
        registration_free(r);
    }
    dps->count = 0;
}

void th_dps_free(struct th_dps *dps)
{
    if (dps) {
        clear(dps);
        free(dps);
    }
}

struct th_dps_enrollment *th_dps_find(const struct th_dps *dps, bool group, const char *id)
{
    for (struct th_dps_enrollment *e = dps ? dps->enrollments : NULL; e && id; e = e->next) {
        /* Registration ids are case-insensitive (DPS docs); group ids are compared the same. */
        if (e->group == group && !strcasecmp(e->id, id)) {
            return e;
        }
    }
    return NULL;
}

struct th_dps_registration *th_dps_registration_find(const struct th_dps *dps, const char *id)
{
    for (struct th_dps_registration *r = dps ? dps->registrations : NULL; r && id; r = r->next) {
        if (!strcasecmp(r->registration_id, id)) {
            return r;
        }
    }
    return NULL;
}

void th_dps_enrollment_etag(const struct th_dps_enrollment *e, char buf[32])
{
    etag_text(e->etag_counter, buf);
}

/* ---- enrollment documents ---- */

static const char *id_member(bool group)
{
    return group ? "enrollmentGroupId" : "registrationId";
}

/* Validate the initialTwin member: {tags, properties: {desired}}. */
static th_result check_initial_twin(const cJSON *t, struct th_error *err)
{
    struct th_error e2 = {0};
    if (!t || cJSON_IsNull(t)) {
        return TH_OK;
    }
    if (!cJSON_IsObject(t)) {
        return bad(err, "initialTwin must be an object {\"tags\", \"properties\": {\"desired\"}}");
    }
    const cJSON *tags = cJSON_GetObjectItemCaseSensitive(t, "tags");
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(t, "properties");
    const cJSON *desired = cJSON_GetObjectItemCaseSensitive(props, "desired");
    if (tags && !cJSON_IsNull(tags) &&
        th_twin_validate_patch(TH_SECTION_TAGS, tags, &e2) != TH_OK) {
        return bad(err, "initialTwin.tags: %s", e2.message);
    }
    if (props && !cJSON_IsNull(props) && !cJSON_IsObject(props)) {
        return bad(err, "initialTwin.properties must be an object");
    }
    if (desired && !cJSON_IsNull(desired) &&
        th_twin_validate_patch(TH_SECTION_DESIRED, desired, &e2) != TH_OK) {
        return bad(err, "initialTwin.properties.desired: %s", e2.message);
    }
    return TH_OK;
}

static bool bool_or_absent(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return !v || cJSON_IsNull(v) || cJSON_IsBool(v);
}

/* Replace (or add) member `key` of `obj` with `item` (taken); false on OOM. */
static bool set_member(cJSON *obj, const char *key, cJSON *item)
{
    if (!item) {
        return false;
    }
    if (cJSON_GetObjectItemCaseSensitive(obj, key)) {
        return cJSON_ReplaceItemInObjectCaseSensitive(obj, key, item);
    }
    if (!cJSON_AddItemToObject(obj, key, item)) {
        cJSON_Delete(item);
        return false;
    }
    return true;
}

/*
 * Validate `body` and build the stored document and the attestation facts into `e` (doc,
 * attestation, keys). `old` (may be NULL) gives the creation time. Does not touch the store.
 */
static th_result build_enrollment(bool group, const char *id, const cJSON *body,
                                  const struct th_dps_enrollment *old, int64_t now_us,
                                  struct th_dps_enrollment *e, struct th_error *err)
{
    char when[TH_TIME_BUF];
    if (!cJSON_IsObject(body)) {
        return bad(err, "the enrollment must be a JSON object");
    }
    if (group
            ? !id[0] || strlen(id) > TH_MAX_ID_LEN || !th_dps_registration_id_valid(id, strlen(id))
            : !th_dps_registration_id_valid(id, strlen(id))) {
        return bad(err,
                   "'%s' is not a valid %s: 1-128 characters of letters, digits and -._: ending "
                   "in a letter, digit or '-'",
                   id, group ? "enrollment group id" : "registration id");
    }
    const cJSON *bid = cJSON_GetObjectItemCaseSensitive(body, id_member(group));
    if (bid && !(cJSON_IsString(bid) && !strcasecmp(bid->valuestring, id))) {
        return bad(err, "the %s in the body does not match the one in the path ('%s')",
                   id_member(group), id);
    }
    const cJSON *att = cJSON_GetObjectItemCaseSensitive(body, "attestation");
    const char *type = th_json_string(att, "type", NULL);
    if (!cJSON_IsObject(att) || !type) {
        return bad(err, "attestation is required: {\"type\": \"symmetricKey\", \"symmetricKey\": "
                        "{\"primaryKey\", \"secondaryKey\"}}");
    }
    const char *pk = NULL, *sk = NULL;
    if (!strcmp(type, "symmetricKey")) {
        const cJSON *sym = cJSON_GetObjectItemCaseSensitive(att, "symmetricKey");
        if (sym && !cJSON_IsNull(sym) && !cJSON_IsObject(sym)) {
            return bad(err, "attestation.symmetricKey must be an object");
        }
        pk = th_json_string(sym, "primaryKey", NULL);
        sk = th_json_string(sym, "secondaryKey", NULL);
        if ((pk && pk[0] && !key_valid(pk)) || (sk && sk[0] && !key_valid(sk))) {
            return bad(err, "attestation.symmetricKey: a key must be base64 of 16 to 64 bytes");
        }
        e->attestation = TH_DPS_ATT_SYMMETRIC_KEY;
    } else if (!strcmp(type, "x509")) {
        th_result xr =
            th_dps_x509_check(cJSON_GetObjectItemCaseSensitive(att, "x509"), group, err);
        if (xr != TH_OK) {
            return xr;
        }
        e->attestation = TH_DPS_ATT_X509;
    } else if (!strcmp(type, "tpm") && !group) {
        e->attestation = TH_DPS_ATT_TPM;
    } else {
        return bad(err, "attestation.type '%s' is not valid here; use symmetricKey or x509%s", type,
                   group ? "" : " (or tpm)");
    }
    const char *status = th_json_string(body, "provisioningStatus", "enabled");
    const cJSON *jst = cJSON_GetObjectItemCaseSensitive(body, "provisioningStatus");
    if ((jst && !cJSON_IsNull(jst) && !cJSON_IsString(jst)) ||
        (strcmp(status, "enabled") && strcmp(status, "disabled"))) {
        return bad(err, "provisioningStatus must be \"enabled\" or \"disabled\"");
    }
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(body, "reprovisionPolicy");
    if (rp && !cJSON_IsNull(rp) &&
        (!cJSON_IsObject(rp) || !bool_or_absent(rp, "updateHubAssignment") ||
         !bool_or_absent(rp, "migrateDeviceData"))) {
        return bad(err, "reprovisionPolicy must be {\"updateHubAssignment\": bool, "
                        "\"migrateDeviceData\": bool}");
    }
    const cJSON *caps = cJSON_GetObjectItemCaseSensitive(body, "capabilities");
    if (caps && !cJSON_IsNull(caps) &&
        (!cJSON_IsObject(caps) || !bool_or_absent(caps, "iotEdge"))) {
        return bad(err, "capabilities must be {\"iotEdge\": bool}");
    }
    const cJSON *did = cJSON_GetObjectItemCaseSensitive(body, "deviceId");
    if (!group && did && !cJSON_IsNull(did) &&
        !(cJSON_IsString(did) && th_id_valid(did->valuestring, strlen(did->valuestring)))) {
        return bad(err, "deviceId is not a valid device id");
    }
    th_result r = check_initial_twin(cJSON_GetObjectItemCaseSensitive(body, "initialTwin"), err);
    if (r != TH_OK) {
        return r;
    }

    /* Keys: kept as given, generated where missing or "" (as DPS does). */
    e->primary_key[0] = e->secondary_key[0] = '\0';
    if (e->attestation == TH_DPS_ATT_SYMMETRIC_KEY) {
        if (pk && pk[0]) {
            snprintf(e->primary_key, sizeof e->primary_key, "%s", pk);
        } else if (th_random_key(32, e->primary_key, sizeof e->primary_key) != TH_OK) {
            return th_error_set(err, TH_ERR_NOMEM, TH_DPS_EC_SERVER_ERROR, "no random key");
        }
        if (sk && sk[0]) {
            snprintf(e->secondary_key, sizeof e->secondary_key, "%s", sk);
        } else if (th_random_key(32, e->secondary_key, sizeof e->secondary_key) != TH_OK) {
            return th_error_set(err, TH_ERR_NOMEM, TH_DPS_EC_SERVER_ERROR, "no random key");
        }
    }

    cJSON *doc = cJSON_Duplicate(body, true);
    char etag[32];
    th_time_format(now_us, when);
    etag_text(e->etag_counter, etag);
    char created[TH_TIME_BUF];
    snprintf(created, sizeof created, "%s",
             old ? th_json_string(old->doc, "createdDateTimeUtc", when) : when);
    bool ok = doc != NULL;
    cJSON_DeleteItemFromObjectCaseSensitive(doc, "registrationState");
    ok = ok && set_member(doc, id_member(group), cJSON_CreateString(id)) &&
         set_member(doc, "provisioningStatus", cJSON_CreateString(status)) &&
         set_member(doc, "etag", cJSON_CreateString(etag)) &&
         set_member(doc, "createdDateTimeUtc", cJSON_CreateString(created)) &&
         set_member(doc, "lastUpdatedDateTimeUtc", cJSON_CreateString(when));
    if (ok && !cJSON_GetObjectItemCaseSensitive(doc, "allocationPolicy")) {
        ok = cJSON_AddStringToObject(doc, "allocationPolicy", "hashed") != NULL;
    }
    if (ok && (!rp || cJSON_IsNull(rp))) {
        cJSON *p = cJSON_CreateObject();
        ok = p && cJSON_AddBoolToObject(p, "updateHubAssignment", true) &&
             cJSON_AddBoolToObject(p, "migrateDeviceData", true) &&
             set_member(doc, "reprovisionPolicy", p);
        if (!ok && p && !cJSON_GetObjectItemCaseSensitive(doc, "reprovisionPolicy")) {
            cJSON_Delete(p);
        }
    }
    if (ok && (!caps || cJSON_IsNull(caps))) {
        cJSON *c = cJSON_CreateObject();
        ok = c && cJSON_AddBoolToObject(c, "iotEdge", false) && set_member(doc, "capabilities", c);
        if (!ok && c && !cJSON_GetObjectItemCaseSensitive(doc, "capabilities")) {
            cJSON_Delete(c);
        }
    }
    if (ok && e->attestation == TH_DPS_ATT_SYMMETRIC_KEY) {
        cJSON *a = cJSON_GetObjectItemCaseSensitive(doc, "attestation");
        cJSON *sym = cJSON_CreateObject();
        ok = sym && cJSON_AddStringToObject(sym, "primaryKey", e->primary_key) &&
             cJSON_AddStringToObject(sym, "secondaryKey", e->secondary_key) &&
             set_member(a, "symmetricKey", sym);
    }
    if (ok && e->attestation == TH_DPS_ATT_X509) {
        ok = th_dps_x509_fill_info(cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(doc, "attestation"), "x509"));
    }
    if (!ok) {
        cJSON_Delete(doc);
        return th_error_set(err, TH_ERR_NOMEM, TH_DPS_EC_SERVER_ERROR, "out of memory");
    }
    e->doc = doc;
    return TH_OK;
}

th_result th_dps_enrollment_put(struct th_dps *dps, bool group, const char *id, const cJSON *body,
                                const char *if_match, int64_t now_us,
                                struct th_dps_enrollment **out, struct th_error *err)
{
    if (!dps || !id) {
        return th_error_set(err, TH_ERR_INVAL, TH_DPS_EC_BAD_REQUEST, "no enrollment id");
    }
    struct th_dps_enrollment *old = th_dps_find(dps, group, id);
    bool conditional = if_match && if_match[0] && strcmp(if_match, "*");
    if (!old && conditional) {
        return dps_err(err, TH_ERR_NOT_FOUND, 404, TH_DPS_EC_NOT_FOUND,
                       "no enrollment '%s' to update (If-Match was given)", id);
    }
    if (old && !if_match_ok(if_match, old->etag_counter)) {
        return dps_err(err, TH_ERR_PRECONDITION, 412, TH_DPS_EC_PRECONDITION,
                       "the etag in If-Match does not match enrollment '%s'; read it again", id);
    }
    if (!old && dps->count >= TH_DPS_MAX_ENROLLMENTS) {
        return th_error_set(err, TH_ERR_TOO_LARGE, TH_DPS_EC_BAD_REQUEST, "at most %d enrollments",
                            TH_DPS_MAX_ENROLLMENTS);
    }
    struct th_dps_enrollment tmp = {.etag_counter = old ? old->etag_counter + 1 : 1};
    th_result r = build_enrollment(group, id, body, old, now_us, &tmp, err);
    if (r != TH_OK) {
        if (err && !err->status) {
            err->status = 400;
        }
        return r;
    }
    if (old) {
        cJSON_Delete(old->doc);
        old->doc = tmp.doc;
        old->attestation = tmp.attestation;
        memcpy(old->primary_key, tmp.primary_key, sizeof old->primary_key);
        memcpy(old->secondary_key, tmp.secondary_key, sizeof old->secondary_key);
        old->etag_counter = tmp.etag_counter;
        if (out) {
            *out = old;
        }
        return TH_OK;
    }
    struct th_dps_enrollment *e = malloc(sizeof *e);
    char *copy = strdup(id);
    if (!e || !copy) {
        free(e);
        free(copy);
        cJSON_Delete(tmp.doc);
        return th_error_set(err, TH_ERR_NOMEM, TH_DPS_EC_SERVER_ERROR, "out of memory");
    }
    *e = tmp;
    e->id = copy;
    e->group = group;
    e->next = NULL;
    struct th_dps_enrollment **tail = &dps->enrollments;
    while (*tail) {
        tail = &(*tail)->next;
    }
    *tail = e;
    dps->count++;
    if (out) {
        *out = e;
    }
    return TH_OK;
}

th_result th_dps_enrollment_delete(struct th_dps *dps, bool group, const char *id,
                                   const char *if_match, struct th_error *err)
{
    for (struct th_dps_enrollment **pp = &dps->enrollments; *pp; pp = &(*pp)->next) {
        struct th_dps_enrollment *e = *pp;
        if (e->group != group || strcasecmp(e->id, id)) {
            continue;
        }
        if (!if_match_ok(if_match, e->etag_counter)) {
            return dps_err(err, TH_ERR_PRECONDITION, 412, TH_DPS_EC_PRECONDITION,
                           "the etag in If-Match does not match enrollment '%s'", id);
        }
        *pp = e->next;
        enrollment_free(e);
        dps->count--;
        return TH_OK;
    }
    return dps_err(err, TH_ERR_NOT_FOUND, 404, TH_DPS_EC_NOT_FOUND,
                   group ? "no enrollment group '%s'" : "no individual enrollment '%s'", id);
}

cJSON *th_dps_enrollment_json(const struct th_dps *dps, const struct th_dps_enrollment *e)
{
    cJSON *doc = cJSON_Duplicate(e->doc, true);
    if (doc && !e->group) {
        const struct th_dps_registration *r = th_dps_registration_find(dps, e->id);
        if (r && !r->group_id) {
            if (!set_member(doc, "registrationState", th_dps_registration_json(r, NULL))) {
                cJSON_Delete(doc);
                return NULL;
            }
        }
    }
    return doc;
}

/* ---- registrations ---- */

cJSON *th_dps_registration_json(const struct th_dps_registration *r, const char *assigned_hub)
{
    char created[TH_TIME_BUF], updated[TH_TIME_BUF], etag[32];
    cJSON *o = cJSON_CreateObject();
    th_time_format(r->created_us, created);
    th_time_format(r->updated_us, updated);
    etag_text(r->etag_counter, etag);
    bool ok = o && cJSON_AddStringToObject(o, "registrationId", r->registration_id) &&
              cJSON_AddStringToObject(o, "createdDateTimeUtc", created) &&
              (!assigned_hub || cJSON_AddStringToObject(o, "assignedHub", assigned_hub)) &&
              cJSON_AddStringToObject(o, "deviceId", r->device_id) &&
              cJSON_AddStringToObject(o, "status", "assigned") &&
              cJSON_AddStringToObject(o, "substatus", r->substatus) &&
              cJSON_AddStringToObject(o, "lastUpdatedDateTimeUtc", updated) &&
              cJSON_AddStringToObject(o, "etag", etag);
    if (ok && r->group_id) {
        cJSON *sym = cJSON_AddObjectToObject(o, r->x509 ? "x509" : "symmetricKey");
        ok = sym && cJSON_AddStringToObject(sym, "registrationId", r->registration_id) &&
             cJSON_AddStringToObject(sym, "enrollmentGroupId", r->group_id);
    }
    if (ok && r->payload) {
        cJSON *p = cJSON_Duplicate(r->payload, true);
        ok = p && cJSON_AddItemToObject(o, "payload", p);
        if (!ok) {
            cJSON_Delete(p);
        }
    }
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

th_result th_dps_registration_delete(struct th_dps *dps, const char *id, const char *if_match,
                                     struct th_error *err)
{
    for (struct th_dps_registration **pp = &dps->registrations; *pp; pp = &(*pp)->next) {
        struct th_dps_registration *r = *pp;
        if (strcasecmp(r->registration_id, id)) {
            continue;
        }
        if (!if_match_ok(if_match, r->etag_counter)) {
            return dps_err(err, TH_ERR_PRECONDITION, 412, TH_DPS_EC_PRECONDITION,
                           "the etag in If-Match does not match registration '%s'", id);
        }
        *pp = r->next;
        registration_free(r);
        return TH_OK;
    }
    return dps_err(err, TH_ERR_NOT_FOUND, 404, TH_DPS_EC_NOT_FOUND, "no registration '%s'", id);
}

/* ---- attestation ---- */

static bool enabled(const struct th_dps_enrollment *e)
{
    return !strcmp(th_json_string(e->doc, "provisioningStatus", "enabled"), "enabled");
}

/* Verify tok with the two keys; TH_OK, TH_ERR_AUTH or TH_ERR_EXPIRED. */
static th_result verify2(const struct th_sas_token *tok, const char *k1, const char *k2,
                         int64_t now_s, int64_t skew_s)
{
    th_result r = th_sas_verify(tok, k1, now_s, skew_s, NULL);
    if (r == TH_ERR_AUTH && k2 && k2[0]) {
        r = th_sas_verify(tok, k2, now_s, skew_s, NULL);
    }
    return r == TH_ERR_INVAL ? TH_ERR_AUTH : r;
}

th_result th_dps_attest(struct th_dps *dps, const char *id_scope, const char *registration_id,
                        const char *token, int64_t now_s, int64_t skew_s, struct th_dps_attest *out,
                        struct th_error *err)
{
    struct th_sas_token tok;
    char sr[512], expect[TH_DPS_ID_SCOPE_MAX + TH_MAX_ID_LEN + 32];
    size_t n;
    memset(out, 0, sizeof *out);
    if (!dps || !id_scope || strcmp(id_scope, dps->id_scope)) {
        return dps_err(err, TH_ERR_NOT_FOUND, 404, TH_DPS_EC_NOT_FOUND,
                       "no provisioning service with ID scope '%s' here", id_scope ? id_scope : "");
    }
    if (!registration_id ||
        !th_dps_registration_id_valid(registration_id, strlen(registration_id))) {
        return dps_err(err, TH_ERR_INVAL, 400, TH_DPS_EC_BAD_REQUEST,
                       "'%s' is not a valid registration id",
                       registration_id ? registration_id : "");
    }
    struct th_dps_enrollment *ind = th_dps_find(dps, false, registration_id);
    if (!token || !token[0]) {
        if (ind && ind->attestation == TH_DPS_ATT_X509) {
            return unauthorized(err, TH_ERR_AUTH,
                                "registration '%s' uses X.509 attestation: connect over TLS with "
                                "its client certificate",
                                registration_id);
        }
        return unauthorized(err, TH_ERR_AUTH,
                            "registration '%s' sent no SAS token and no client certificate",
                            registration_id);
    }
    if (th_sas_parse(token, strlen(token), &tok, NULL) != TH_OK ||
        th_pct_decode(tok.sr.ptr, tok.sr.len, false, sr, sizeof sr, &n) != TH_OK) {
        return unauthorized(err, TH_ERR_AUTH, "the SAS token of registration '%s' is malformed",
                            registration_id);
    }
    snprintf(expect, sizeof expect, "%s/registrations/%s", dps->id_scope, registration_id);
    if (strlen(sr) != strlen(expect) || strncmp(sr, expect, strlen(dps->id_scope) + 15) ||
        strcasecmp(sr + strlen(dps->id_scope) + 15, registration_id)) {
        return unauthorized(err, TH_ERR_AUTH,
                            "the token's sr '%s' is not '%s' ({idScope}/registrations/"
                            "{registrationId})",
                            sr, expect);
    }
    if (tok.skn.ptr && !(tok.skn.len == 12 && !memcmp(tok.skn.ptr, "registration", 12))) {
        return unauthorized(err, TH_ERR_AUTH,
                            "the token of registration '%s' names skn other than "
                            "'registration'",
                            registration_id);
    }
    if (ind) {
        if (ind->attestation == TH_DPS_ATT_X509) {
            return unauthorized(err, TH_ERR_AUTH,
                                "the enrollment of '%s' uses X.509 attestation: register with its "
                                "client certificate over TLS, not a SAS token",
                                registration_id);
        }
        if (ind->attestation != TH_DPS_ATT_SYMMETRIC_KEY) {
            return unauthorized(err, TH_ERR_AUTH,
                                "the enrollment of '%s' uses TPM attestation, which twinhub does "
                                "not support; use symmetric-key or X.509 attestation",
                                registration_id);
        }
        th_result r = verify2(&tok, ind->primary_key, ind->secondary_key, now_s, skew_s);
        if (r == TH_ERR_EXPIRED) {
            return unauthorized(err, r, "the SAS token of registration '%s' expired",
                                registration_id);
        }
        if (r != TH_OK) {
            return unauthorized(err, TH_ERR_AUTH,
                                "the SAS token of registration '%s' is not signed with a key of "
                                "its individual enrollment",
                                registration_id);
        }
        if (!enabled(ind)) {
            return unauthorized(err, TH_ERR_DISABLED, "the individual enrollment '%s' is disabled",
                                registration_id);
        }
        out->enrollment = ind;
        memcpy(out->device_key, ind->primary_key, sizeof out->device_key);
        memcpy(out->device_secondary_key, ind->secondary_key, sizeof out->device_secondary_key);
        return TH_OK;
    }
    bool expired = false;
    for (struct th_dps_enrollment *g = dps->enrollments; g; g = g->next) {
        char k1[64], k2[64];
        if (!g->group || g->attestation != TH_DPS_ATT_SYMMETRIC_KEY ||
            th_dps_derive_key(g->primary_key, registration_id, k1, sizeof k1) != TH_OK ||
            th_dps_derive_key(g->secondary_key, registration_id, k2, sizeof k2) != TH_OK) {
            continue;
        }
        th_result r = verify2(&tok, k1, k2, now_s, skew_s);
        if (r == TH_ERR_EXPIRED) {
            expired = true;
        }
        if (r != TH_OK) {
            continue;
        }
        if (!enabled(g)) {
            return unauthorized(err, TH_ERR_DISABLED,
                                "registration '%s' belongs to enrollment group '%s', which is "
                                "disabled",
                                registration_id, g->id);
        }
        out->enrollment = g;
        snprintf(out->device_key, sizeof out->device_key, "%s", k1);
        snprintf(out->device_secondary_key, sizeof out->device_secondary_key, "%s", k2);
        return TH_OK;
    }
    if (expired) {
        return unauthorized(err, TH_ERR_EXPIRED, "the SAS token of registration '%s' expired",
                            registration_id);
    }
    return unauthorized(err, TH_ERR_AUTH,
                        "registration '%s' has no individual enrollment and its token verifies "
                        "with no enrollment group's derived key",
                        registration_id);
}

/* ---- assignment ---- */

static bool policy_flag(const struct th_dps_enrollment *e, const char *key)
{
    return th_json_bool(th_json_object(e->doc, "reprovisionPolicy"), key, true);
}

void th_dps_plan(const struct th_dps *dps, const struct th_registry *reg,
                 const char *registration_id, const struct th_dps_attest *a,
                 struct th_dps_plan *out)
{
    const struct th_dps_enrollment *e = a->enrollment;
    const char *did = e->group ? NULL : th_json_string(e->doc, "deviceId", NULL);
    (void)dps;
    memset(out, 0, sizeof *out);
    snprintf(out->device_id, sizeof out->device_id, "%s", did && did[0] ? did : registration_id);
    if (!th_registry_find(reg, out->device_id, NULL)) {
        out->action = TH_DPS_CREATE;
        out->substatus = "initialAssignment";
    } else if (policy_flag(e, "updateHubAssignment") && !policy_flag(e, "migrateDeviceData")) {
        out->action = TH_DPS_RECREATE;
        out->substatus = "deviceDataReset";
    } else {
        out->action = TH_DPS_KEEP;
        out->substatus =
            policy_flag(e, "updateHubAssignment") ? "deviceDataMigrated" : "initialAssignment";
    }
}

th_result th_dps_assign(struct th_dps *dps, struct th_registry *reg, const char *registration_id,
                        const struct th_dps_attest *a, const struct th_dps_plan *plan,
                        const cJSON *payload, int64_t now_us, struct th_identity **out_id,
                        bool *keys_changed, struct th_dps_registration **out_reg,
                        struct th_error *err)
{
    const struct th_dps_enrollment *e = a->enrollment;
    struct th_identity *id = th_registry_find(reg, plan->device_id, NULL);
    struct th_ident_req req;
    th_result r;
    bool changed = false;
    th_ident_req_init(&req);
    if (a->x509) {
        /* Decision (docs/dps.md): the device gets the leaf's thumbprint, so the same certificate
         * connects to the hub without a CA registered there. */
        req.auth_type = TH_AUTH_SELF_SIGNED;
        req.x509_primary = a->thumbprint;
        req.x509_secondary = "";
    } else {
        req.primary_key = a->device_key;
        req.secondary_key = a->device_secondary_key;
    }
    req.iot_edge = th_json_bool(th_json_object(e->doc, "capabilities"), "iotEdge", false) ? 1 : 0;
    if (keys_changed) {
        *keys_changed = false;
    }
    if (!id) {
        const cJSON *twin = th_json_object(e->doc, "initialTwin");
        const cJSON *tags = th_json_object(twin, "tags");
        const cJSON *desired = th_json_object(th_json_object(twin, "properties"), "desired");
        cJSON *dtags = tags ? cJSON_Duplicate(tags, true) : NULL;
        cJSON *ddes = desired ? cJSON_Duplicate(desired, true) : NULL;
        if (dtags) {
            th_twin_strip_readonly(dtags);
        }
        if (ddes) {
            th_twin_strip_readonly(ddes);
        }
        r = th_registry_create(reg, plan->device_id, NULL, &req, dtags, ddes, now_us, &id, err);
        cJSON_Delete(dtags);
        cJSON_Delete(ddes);
    } else {
        r = th_identity_apply(reg, id, &req, now_us, &changed, err);
    }
    if (r != TH_OK) {
        if (err) {
            err->status = err->status >= 400 && err->status < 500 ? err->status : 400;
            err->code = TH_DPS_EC_BAD_REQUEST;
        }
        return r;
    }
    if (keys_changed) {
        *keys_changed = changed;
    }
    if (out_id) {
        *out_id = id;
    }

    struct th_dps_registration *rs = th_dps_registration_find(dps, registration_id);
    cJSON *pl = payload && !cJSON_IsNull(payload) ? cJSON_Duplicate(payload, true) : NULL;
    char *did = strdup(plan->device_id), *sub = strdup(plan->substatus);
    char *gid = e->group ? strdup(e->id) : NULL;
    char *rid = rs ? NULL : strdup(registration_id);
    if (!did || !sub || (e->group && !gid) || (!rs && !rid) ||
        (payload && !cJSON_IsNull(payload) && !pl) || (!rs && !(rs = calloc(1, sizeof *rs)))) {
        free(did);
        free(sub);
        free(gid);
        free(rid);
        cJSON_Delete(pl);
        return th_error_set(err, TH_ERR_NOMEM, TH_DPS_EC_SERVER_ERROR, "out of memory");
    }
    if (rid) {
        rs->registration_id = rid;
        rs->created_us = now_us;
        rs->next = dps->registrations;
        dps->registrations = rs;
    }
    free(rs->device_id);
    free(rs->substatus);
    free(rs->group_id);
    cJSON_Delete(rs->payload);
    rs->device_id = did;
    rs->substatus = sub;
    rs->group_id = gid;
    rs->payload = pl;
    rs->x509 = a->x509;
    rs->updated_us = now_us;
    rs->etag_counter++;
    snprintf(rs->operation_id, sizeof rs->operation_id, "4.%016llx.%08llx",
             (unsigned long long)dps->next_operation++,
             (unsigned long long)(now_us & 0xffffffffLL));
    if (out_reg) {
        *out_reg = rs;
    }
    return TH_OK;
}

cJSON *th_dps_operation_started(const struct th_dps_registration *r)
{
    cJSON *o = cJSON_CreateObject();
    if (o && (!cJSON_AddStringToObject(o, "operationId", r->operation_id) ||
              !cJSON_AddStringToObject(o, "status", "assigning"))) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

th_result th_dps_operation_status(const struct th_dps *dps, const char *registration_id,
                                  const char *operation_id, const char *assigned_hub, cJSON **out,
                                  struct th_error *err)
{
    const struct th_dps_registration *r = th_dps_registration_find(dps, registration_id);
    *out = NULL;
    if (!r || !operation_id || strcmp(r->operation_id, operation_id)) {
        return dps_err(err, TH_ERR_NOT_FOUND, 404, TH_DPS_EC_NOT_FOUND,
                       "no operation '%s' for this registration", operation_id ? operation_id : "");
    }
    cJSON *o = cJSON_CreateObject();
    cJSON *state = th_dps_registration_json(r, assigned_hub);
    if (!o || !state || !cJSON_AddStringToObject(o, "operationId", r->operation_id) ||
        !cJSON_AddStringToObject(o, "status", "assigned") ||
        !cJSON_AddItemToObject(o, "registrationState", state)) {
        cJSON_Delete(o);
        cJSON_Delete(state);
        return th_error_set(err, TH_ERR_NOMEM, TH_DPS_EC_SERVER_ERROR, "out of memory");
    }
    *out = o;
    return TH_OK;
}

/* ---- service API ---- */

th_result th_dps_auth_service(const struct th_dps *dps, const char *token, int64_t now_s,
                              int64_t skew_s, struct th_error *err)
{
    struct th_sas_token tok;
    if (!token || !token[0]) {
        return unauthorized(err, TH_ERR_AUTH,
                            "this request needs an Authorization header with a SAS token of "
                            "the policy '%s'",
                            TH_DPS_POLICY_NAME);
    }
    if (th_sas_parse(token, strlen(token), &tok, NULL) != TH_OK || !tok.skn.ptr) {
        return unauthorized(err, TH_ERR_AUTH,
                            "the Authorization header is not a SAS token of a policy (skn)");
    }
    if (!(tok.skn.len == strlen(TH_DPS_POLICY_NAME) &&
          !memcmp(tok.skn.ptr, TH_DPS_POLICY_NAME, tok.skn.len))) {
        return unauthorized(err, TH_ERR_AUTH,
                            "the token's policy is not '%s', the provisioning service's",
                            TH_DPS_POLICY_NAME);
    }
    th_result r = verify2(&tok, dps->policy_primary, dps->policy_secondary, now_s, skew_s);
    if (r == TH_ERR_EXPIRED) {
        return unauthorized(err, r, "the provisioning service token expired");
    }
    if (r != TH_OK) {
        return unauthorized(err, TH_ERR_AUTH,
                            "the token is not signed with a key of the policy '%s'",
                            TH_DPS_POLICY_NAME);
    }
    return TH_OK;
}

th_result th_dps_query(const struct th_dps *dps, bool registrations, bool group,
                       const char *group_id, const cJSON *spec, int page_size,
                       const char *continuation, cJSON **out, char **out_next, struct th_error *err)
{
    const char *q = th_json_string(spec, "query", NULL);
    long skip = 0;
    *out = NULL;
    *out_next = NULL;
    /* "*" is what the SDK samples and e2e tests send; "SELECT *" the docs' form. */
    if (!q || (strcmp(q, "*") && strncasecmp(q, "select *", 8))) {
        return dps_err(err, TH_ERR_INVAL, 400, TH_DPS_EC_BAD_REQUEST,
                       "the query specification needs {\"query\": \"*\"} (all entries; no "
                       "other query is supported)");
    }
    if (continuation && continuation[0]) {
        char *end;
        skip = strtol(continuation, &end, 10);
        if (*end || skip < 0) {
            return dps_err(err, TH_ERR_INVAL, 400, TH_DPS_EC_BAD_REQUEST,
                           "x-ms-continuation '%s' was not given by this service", continuation);
        }
    }
    if (page_size < 1) {
        page_size = 100;
    }
    cJSON *arr = cJSON_CreateArray();
    long i = 0;
    bool more = false;
    if (!arr) {
        return th_error_set(err, TH_ERR_NOMEM, TH_DPS_EC_SERVER_ERROR, "out of memory");
    }
    if (registrations) {
        for (const struct th_dps_registration *r = dps->registrations; r; r = r->next) {
            if (!r->group_id || !group_id || strcasecmp(r->group_id, group_id) || i++ < skip) {
                continue;
            }
            if (cJSON_GetArraySize(arr) >= page_size) {
                more = true;
                break;
            }
            cJSON *o = th_dps_registration_json(r, NULL);
            if (!o || !cJSON_AddItemToArray(arr, o)) {
                cJSON_Delete(o);
                cJSON_Delete(arr);
                return th_error_set(err, TH_ERR_NOMEM, TH_DPS_EC_SERVER_ERROR, "out of memory");
            }
        }
    } else {
        for (const struct th_dps_enrollment *e = dps->enrollments; e; e = e->next) {
            if (e->group != group || i++ < skip) {
                continue;
            }
            if (cJSON_GetArraySize(arr) >= page_size) {
                more = true;
                break;
            }
            cJSON *o = th_dps_enrollment_json(dps, e);
            if (!o || !cJSON_AddItemToArray(arr, o)) {
                cJSON_Delete(o);
                cJSON_Delete(arr);
                return th_error_set(err, TH_ERR_NOMEM, TH_DPS_EC_SERVER_ERROR, "out of memory");
            }
        }
    }
    if (more) {
        char buf[32];
        snprintf(buf, sizeof buf, "%ld", skip + cJSON_GetArraySize(arr));
        *out_next = strdup(buf);
        if (!*out_next) {
            cJSON_Delete(arr);
            return th_error_set(err, TH_ERR_NOMEM, TH_DPS_EC_SERVER_ERROR, "out of memory");
        }
    }
    *out = arr;
    return TH_OK;
}

/* ---- documents ---- */

static th_result load_list(struct th_dps *dps, const cJSON *arr, bool group, int64_t now_us,
                           struct th_error *err)
{
    const char *what = group ? "enrollmentGroups" : "enrollments";
    const cJSON *e;
    int i = 0;
    if (arr && !cJSON_IsArray(arr)) {
        return th_error_set(err, TH_ERR_INVAL, TH_DPS_EC_BAD_REQUEST, "dps.%s must be an array",
                            what);
    }
    cJSON_ArrayForEach(e, arr)
    {
        struct th_error e2 = {0};
        const char *id = th_json_string(e, id_member(group), NULL);
        if (!id) {
            return th_error_set(err, TH_ERR_INVAL, TH_DPS_EC_BAD_REQUEST,
                                "dps.%s[%d]: %s is required", what, i, id_member(group));
        }
        if (th_dps_find(dps, group, id)) {
            return th_error_set(err, TH_ERR_EXISTS, TH_DPS_EC_CONFLICT,
                                "dps.%s[%d]: '%s' is defined twice", what, i, id);
        }
        if (th_dps_enrollment_put(dps, group, id, e, NULL, now_us, NULL, &e2) != TH_OK) {
            return th_error_set(err, e2.result, TH_DPS_EC_BAD_REQUEST, "dps.%s[%d]: %s", what, i,
                                e2.message);
        }
        i++;
    }
    return TH_OK;
}

th_result th_dps_load(struct th_dps *dps, const cJSON *section, int64_t now_us,
                      struct th_error *err)
{
    if (!section || cJSON_IsNull(section)) {
        return TH_OK;
    }
    if (!cJSON_IsObject(section)) {
        return th_error_set(err, TH_ERR_INVAL, TH_DPS_EC_BAD_REQUEST,
                            "dps must be an object {\"idScope\", \"enrollments\", "
                            "\"enrollmentGroups\"}");
    }
    const char *scope = th_json_string(section, "idScope", NULL);
    /* The scope is the hub's (banner, info file): a document may only repeat it. */
    if (scope && strcmp(scope, dps->id_scope)) {
        return th_error_set(err, TH_ERR_INVAL, TH_DPS_EC_BAD_REQUEST,
                            "dps.idScope '%s' is not the hub's ID scope '%s'; leave it out", scope,
                            dps->id_scope);
    }
    /* All or nothing: load into a scratch DPS first. */
    struct th_dps *tmp = th_dps_new(scope ? scope : dps->id_scope);
    if (!tmp) {
        return th_error_set(err, TH_ERR_NOMEM, TH_DPS_EC_SERVER_ERROR, "out of memory");
    }
    th_result r = load_list(tmp, cJSON_GetObjectItemCaseSensitive(section, "enrollments"), false,
                            now_us, err);
    if (r == TH_OK) {
        r = load_list(tmp, cJSON_GetObjectItemCaseSensitive(section, "enrollmentGroups"), true,
                      now_us, err);
    }
    if (r != TH_OK) {
        th_dps_free(tmp);
        return r;
    }
    clear(dps);
    memcpy(dps->id_scope, tmp->id_scope, sizeof dps->id_scope);
    dps->enrollments = tmp->enrollments;
    dps->count = tmp->count;
    tmp->enrollments = NULL;
    th_dps_free(tmp);
    return TH_OK;
}

cJSON *th_dps_state_json(const struct th_dps *dps)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *ens = o ? cJSON_AddArrayToObject(o, "enrollments") : NULL;
    cJSON *regs = o ? cJSON_AddArrayToObject(o, "registrations") : NULL;
    bool ok = ens && regs && cJSON_AddStringToObject(o, "idScope", dps->id_scope) &&
              cJSON_AddNumberToObject(o, "nextOperation", (double)dps->next_operation);
    for (const struct th_dps_enrollment *e = dps->enrollments; ok && e; e = e->next) {
        cJSON *x = cJSON_CreateObject();
        cJSON *doc = cJSON_Duplicate(e->doc, true);
        ok = x && doc && cJSON_AddBoolToObject(x, "group", e->group) &&
             cJSON_AddNumberToObject(x, "etagCounter", (double)e->etag_counter) &&
             cJSON_AddItemToObject(x, "doc", doc);
        if (!ok) {
            if (!x || !cJSON_GetObjectItemCaseSensitive(x, "doc")) {
                cJSON_Delete(doc);
            }
            cJSON_Delete(x);
        } else if (!cJSON_AddItemToArray(ens, x)) {
            cJSON_Delete(x);
            ok = false;
        }
    }
    for (const struct th_dps_registration *r = dps->registrations; ok && r; r = r->next) {
        cJSON *x = cJSON_CreateObject();
        ok = x && cJSON_AddItemToArray(regs, x) &&
             cJSON_AddStringToObject(x, "registrationId", r->registration_id) &&
             cJSON_AddStringToObject(x, "deviceId", r->device_id) &&
             (r->group_id ? cJSON_AddStringToObject(x, "enrollmentGroupId", r->group_id)
                          : cJSON_AddNullToObject(x, "enrollmentGroupId")) &&
             cJSON_AddStringToObject(x, "substatus", r->substatus) &&
             (!r->x509 || cJSON_AddBoolToObject(x, "x509", true)) &&
             cJSON_AddStringToObject(x, "operationId", r->operation_id) &&
             cJSON_AddNumberToObject(x, "created", (double)r->created_us) &&
             cJSON_AddNumberToObject(x, "updated", (double)r->updated_us) &&
             cJSON_AddNumberToObject(x, "etagCounter", (double)r->etag_counter) &&
             (!r->payload || cJSON_AddItemToObject(x, "payload", cJSON_Duplicate(r->payload, 1)));
        if (!x) {
            ok = false;
        }
    }
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

th_result th_dps_restore(struct th_dps *dps, const cJSON *state, struct th_error *err)
{
    const char *scope = th_json_string(state, "idScope", NULL);
    struct th_dps *tmp = scope ? th_dps_new(scope) : NULL;
    const cJSON *x;
    int i = 0;
    if (!tmp) {
        return th_error_set(err, TH_ERR_INVAL, TH_DPS_EC_BAD_REQUEST,
                            "the DPS state needs a valid idScope");
    }
    tmp->next_operation = (uint64_t)th_json_number(state, "nextOperation", 1);
    cJSON_ArrayForEach(x, cJSON_GetObjectItemCaseSensitive(state, "enrollments"))
    {
        struct th_dps_enrollment *e = NULL;
        bool group = th_json_bool(x, "group", false);
        const cJSON *doc = th_json_object(x, "doc");
        const char *id = th_json_string(doc, id_member(group), NULL);
        struct th_error e2 = {0};
        if (!id || th_dps_enrollment_put(tmp, group, id, doc, NULL, 0, &e, &e2) != TH_OK) {
            th_dps_free(tmp);
            return th_error_set(err, TH_ERR_INVAL, TH_DPS_EC_BAD_REQUEST,
                                "DPS state enrollments[%d]: %s", i, id ? e2.message : "no id");
        }
        /* Keep the saved document exactly (times and etag included). */
        cJSON_Delete(e->doc);
        e->doc = cJSON_Duplicate(doc, true);
        e->etag_counter = (uint64_t)th_json_number(x, "etagCounter", 1);
        if (!e->doc) {
            th_dps_free(tmp);
            return th_error_set(err, TH_ERR_NOMEM, TH_DPS_EC_SERVER_ERROR, "out of memory");
        }
        i++;
    }
    i = 0;
    struct th_dps_registration **tail = &tmp->registrations;
    cJSON_ArrayForEach(x, cJSON_GetObjectItemCaseSensitive(state, "registrations"))
    {
        const char *rid = th_json_string(x, "registrationId", NULL);
        const char *did = th_json_string(x, "deviceId", NULL);
        const char *gid = th_json_string(x, "enrollmentGroupId", NULL);
        const char *op = th_json_string(x, "operationId", "");
        struct th_dps_registration *r = calloc(1, sizeof *r);
        if (r) {
            *tail = r;
            tail = &r->next;
        }
        if (!r || !rid || !did || strlen(op) >= sizeof r->operation_id ||
            !(r->registration_id = strdup(rid)) || !(r->device_id = strdup(did)) ||
            !(r->substatus = strdup(th_json_string(x, "substatus", "initialAssignment"))) ||
            (gid && !(r->group_id = strdup(gid)))) {
            th_dps_free(tmp);
            return th_error_set(err, TH_ERR_INVAL, TH_DPS_EC_BAD_REQUEST,
                                "DPS state registrations[%d] is incomplete", i);
        }
        r->x509 = th_json_bool(x, "x509", false);
        const cJSON *pl = cJSON_GetObjectItemCaseSensitive(x, "payload");
        if (pl && !cJSON_IsNull(pl) && !(r->payload = cJSON_Duplicate(pl, true))) {
            th_dps_free(tmp);
            return th_error_set(err, TH_ERR_NOMEM, TH_DPS_EC_SERVER_ERROR, "out of memory");
        }
        snprintf(r->operation_id, sizeof r->operation_id, "%s", op);
        r->created_us = (int64_t)th_json_number(x, "created", 0);
        r->updated_us = (int64_t)th_json_number(x, "updated", 0);
        r->etag_counter = (uint64_t)th_json_number(x, "etagCounter", 1);
        i++;
    }
    clear(dps);
    memcpy(dps->id_scope, tmp->id_scope, sizeof dps->id_scope);
    dps->enrollments = tmp->enrollments;
    dps->registrations = tmp->registrations;
    dps->count = tmp->count;
    dps->next_operation = tmp->next_operation;
    tmp->enrollments = NULL;
    tmp->registrations = NULL;
    th_dps_free(tmp);
    return TH_OK;
}

/* ---- the MQTT wire ---- */

bool th_dps_username_parse(const char *username, char scope[TH_DPS_ID_SCOPE_MAX + 1],
                           char registration_id[TH_MAX_ID_LEN + 1])
{
    static const char mid[] = "/registrations/";
    const char *s = username ? strstr(username, mid) : NULL;
    if (!s || s == username || (size_t)(s - username) > TH_DPS_ID_SCOPE_MAX) {
        return false;
    }
    const char *id = s + sizeof mid - 1;
    const char *end = strchr(id, '/');
    size_t n = end ? (size_t)(end - id) : strlen(id);
    if (n == 0 || n > TH_MAX_ID_LEN || memchr(username, '/', (size_t)(s - username))) {
        return false;
    }
    /* The api-version part is required: "{host}/registrations/?api-version=..." is a hub
     * device named "registrations", ".../registrations/{m}/?api-version=..." its module. */
    if (!end || strncmp(end + 1, "api-version=", 12) != 0) {
        return false;
    }
    memcpy(scope, username, (size_t)(s - username));
    scope[s - username] = '\0';
    memcpy(registration_id, id, n);
    registration_id[n] = '\0';
    return true;
}

/* The value of `key` in a query "k=v&k=v"; ptr NULL when absent. */
static struct th_slice query_value(const char *q, size_t len, const char *key)
{
    size_t klen = strlen(key);
    const char *p = q, *end = q + len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *e = amp ? amp : end;
        if ((size_t)(e - p) > klen && !memcmp(p, key, klen) && p[klen] == '=') {
            return (struct th_slice){p + klen + 1, (size_t)(e - p - (ptrdiff_t)klen - 1)};
        }
        p = e + 1;
    }
    return (struct th_slice){NULL, 0};
}

th_result th_dps_topic_parse(const char *topic, size_t len, struct th_dps_topic *out)
{
    memset(out, 0, sizeof *out);
    size_t rl = strlen(TH_DPS_TOPIC_REGISTER), sl = strlen(TH_DPS_TOPIC_STATUS);
    const char *q;
    if (len > rl && !memcmp(topic, TH_DPS_TOPIC_REGISTER, rl) && topic[rl] == '?') {
        out->kind = TH_DPS_TOPIC_REGISTER_REQ;
        q = topic + rl + 1;
    } else if (len > sl && !memcmp(topic, TH_DPS_TOPIC_STATUS, sl) && topic[sl] == '?') {
        out->kind = TH_DPS_TOPIC_STATUS_REQ;
        q = topic + sl + 1;
    } else {
        return TH_ERR_FORMAT;
    }
    size_t qlen = len - (size_t)(q - topic);
    out->rid = query_value(q, qlen, "$rid");
    if (!out->rid.ptr || !out->rid.len) {
        out->kind = TH_DPS_TOPIC_OTHER;
        return TH_ERR_FORMAT;
    }
    if (out->kind == TH_DPS_TOPIC_STATUS_REQ) {
        out->operation_id = query_value(q, qlen, "operationId");
        if (!out->operation_id.ptr || !out->operation_id.len) {
            out->kind = TH_DPS_TOPIC_OTHER;
            return TH_ERR_FORMAT;
        }
    }
    return TH_OK;
}

th_result th_dps_topic_response(int status, struct th_slice rid, int retry_after_s, char *buf,
                                size_t size)
{
    int n = retry_after_s >= 0
                ? snprintf(buf, size, TH_DPS_TOPIC_RES_PREFIX "%d/?$rid=%.*s&retry-after=%d",
                           status, (int)rid.len, rid.ptr, retry_after_s)
                : snprintf(buf, size, TH_DPS_TOPIC_RES_PREFIX "%d/?$rid=%.*s", status, (int)rid.len,
                           rid.ptr);
    return n < 0 || (size_t)n >= size ? TH_ERR_BUFFER : TH_OK;
}

cJSON *th_dps_error_json(const struct th_error *err, const char *tracking_id, int64_t now_us)
{
    char ts[TH_TIME_BUF];
    cJSON *o = cJSON_CreateObject();
    th_time_format(now_us, ts);
    if (o &&
        (!cJSON_AddNumberToObject(o, "errorCode", err->code ? err->code : TH_DPS_EC_SERVER_ERROR) ||
         !cJSON_AddStringToObject(o, "trackingId", tracking_id ? tracking_id : "") ||
         !cJSON_AddStringToObject(o, "message",
                                  err->message[0] ? err->message : th_result_str(err->result)) ||
         !cJSON_AddStringToObject(o, "timestampUtc", ts))) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}
