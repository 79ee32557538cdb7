/*
 * twin_state.c - the twin's full-fidelity persistence state: saved with
 * every section, metadata tree and counter (th_twin_state_json), and restored
 * only after every part was checked against the twin's rules
 * (th_twin_from_state), so a broken state file is refused, never half-loaded.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "twin_private.h"

/* ---- persistence state ---- */

/* 2^53: larger integers do not survive the double a JSON number becomes. */
#define STATE_MAX_INT 9007199254740992.0

/* Adds a deep copy of `src` as obj[key]; false on OOM (nothing leaks). */
static bool add_copy(cJSON *obj, const char *key, const cJSON *src)
{
    cJSON *copy = cJSON_Duplicate(src, 1);
    if (copy == NULL)
        return false;
    if (!cJSON_AddItemToObject(obj, key, copy)) {
        cJSON_Delete(copy);
        return false;
    }
    return true;
}

/* Adds the $metadata JSON of `meta` as obj[key]; false on OOM (nothing leaks). */
static bool add_meta(cJSON *obj, const char *key, const struct th_twin_meta *meta,
                     const cJSON *section, bool with_version)
{
    cJSON *json = twin_meta_json(meta, section, with_version);
    if (json == NULL)
        return false;
    if (!cJSON_AddItemToObject(obj, key, json)) {
        cJSON_Delete(json);
        return false;
    }
    return true;
}

cJSON *th_twin_state_json(const struct th_twin *twin)
{
    if (twin == NULL)
        return NULL;
    cJSON *o = cJSON_CreateObject();
    if (o == NULL)
        return NULL;
    bool ok = add_copy(o, "tags", twin->tags) && add_copy(o, "desired", twin->desired) &&
              add_copy(o, "reported", twin->reported) &&
              add_meta(o, "desiredMeta", twin->desired_meta, twin->desired, true) &&
              add_meta(o, "reportedMeta", twin->reported_meta, twin->reported, false) &&
              cJSON_AddNumberToObject(o, "desiredVersion", (double)twin->desired_version) &&
              cJSON_AddNumberToObject(o, "reportedVersion", (double)twin->reported_version) &&
              cJSON_AddNumberToObject(o, "etagCounter", (double)twin->etag_counter);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* True when `item` is an integral number in min..2^53; *out receives it. */
static bool state_int(const cJSON *item, double min, double max, int64_t *out)
{
    if (!cJSON_IsNumber(item))
        return false;
    double d = item->valuedouble;
    /* No floor(): the core does not link libm (clang calls it, gcc inlines it); in
     * min..max the cast is exact for integers and truncates anything else. */
    if (!isfinite(d) || d < min || d > max || d != (double)(int64_t)d)
        return false;
    *out = (int64_t)d;
    return true;
}

static th_result bad_state(struct th_error *err, const char *what, const char *fix)
{
    return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID, "twin state: %s %s", what, fix);
}

/* A stored section never holds null (null only means "delete" in a patch). */
static th_result check_no_null(const cJSON *item, struct twin_path *p, struct th_error *err)
{
    char where[PATH_SHOWN + 8];
    if (cJSON_IsNull(item))
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "twin state: %s is null; a stored twin holds no nulls, remove it",
                            twin_path_text(p, where, sizeof where));
    int i = 0;
    for (const cJSON *c = item->child; c != NULL; c = c->next, i++) {
        size_t saved = cJSON_IsObject(item) ? twin_path_push(p, c->string ? c->string : "", 0)
                                            : twin_path_push(p, NULL, i);
        th_result rc = check_no_null(c, p, err);
        twin_path_pop(p, saved);
        if (rc != TH_OK)
            return rc;
    }
    return TH_OK;
}

/*
 * Checks that the metadata node `meta` mirrors `node` (an object, or NULL for
 * a leaf value): "$lastUpdated" string, "$lastUpdatedVersion" integer in
 * 1..max_version when `desired`, and one metadata node per property.
 */
static th_result check_meta(const cJSON *meta, const cJSON *node, bool desired, int64_t max_version,
                            struct twin_path *p, struct th_error *err)
{
    char where[PATH_SHOWN + 8];
    int64_t v;

    if (!cJSON_IsObject(meta))
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "twin state: %s must be a metadata object with \"" KEY_LAST_UPDATED
                            "\"",
                            twin_path_text(p, where, sizeof where));
    if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(meta, KEY_LAST_UPDATED)))
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "twin state: %s." KEY_LAST_UPDATED " must be a time string",
                            twin_path_text(p, where, sizeof where));
    if (desired && !state_int(cJSON_GetObjectItemCaseSensitive(meta, KEY_LAST_UPDATED_VERSION), 1,
                              (double)max_version, &v))
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "twin state: %s." KEY_LAST_UPDATED_VERSION
                            " must be an integer from 1 to desiredVersion (%lld)",
                            twin_path_text(p, where, sizeof where), (long long)max_version);

    for (const cJSON *m = meta->child; m != NULL; m = m->next) {
        const char *key = m->string != NULL ? m->string : "";
        if (strcmp(key, KEY_LAST_UPDATED) == 0 ||
            (desired && strcmp(key, KEY_LAST_UPDATED_VERSION) == 0))
            continue;
        const cJSON *child = cJSON_GetObjectItemCaseSensitive(node, key);
        size_t saved = twin_path_push(p, key, 0);
        th_result rc;
        if (child == NULL)
            rc = th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                              "twin state: %s has no matching property; remove that metadata",
                              twin_path_text(p, where, sizeof where));
        else
            rc = check_meta(m, cJSON_IsObject(child) ? child : NULL, desired, max_version, p, err);
        twin_path_pop(p, saved);
        if (rc != TH_OK)
            return rc;
    }
    /* Metadata is written in the order of the properties: the member after the one found for
     * the previous property is tried first (only whether there is one matters here). */
    const cJSON *hint = meta->child;
    for (const cJSON *c = node != NULL ? node->child : NULL; c != NULL; c = c->next) {
        const cJSON *found = hint != NULL && hint->string != NULL && c->string != NULL &&
                                     strcmp(hint->string, c->string) == 0
                                 ? hint
                                 : cJSON_GetObjectItemCaseSensitive(meta, c->string);
        hint = found != NULL ? found->next : NULL;
        if (found == NULL) {
            size_t saved = twin_path_push(p, c->string, 0);
            th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                         "twin state: %s has no metadata; every property needs a metadata node",
                         twin_path_text(p, where, sizeof where));
            twin_path_pop(p, saved);
            return TH_ERR_INVAL;
        }
    }
    return TH_OK;
}

static th_result check_state_section(enum th_twin_section kind, const cJSON *section,
                                     struct th_error *err)
{
    struct twin_path p;
    if (!cJSON_IsObject(section)) {
        char what[32];
        snprintf(what, sizeof what, "'%s'", twin_section_name(kind));
        return bad_state(err, what, "must be an object");
    }
    th_result rc = twin_validate(kind, section, false, false, err);
    if (rc == TH_OK) {
        twin_path_init(&p, twin_section_name(kind));
        rc = check_no_null(section, &p, err);
    }
    if (rc == TH_OK)
        rc = twin_check_size(kind, section, err);
    return rc;
}

/*
 * th_twin_from_state; with `take` (the same object as `state`) the twin's
 * sections are moved out of it instead of copied, once every check passed.
 */
static struct th_twin *from_state(const cJSON *state, cJSON *take, struct th_error *err)
{
    static const char *const version_names[] = {"desiredVersion", "reportedVersion", "etagCounter"};
    const cJSON *tags = cJSON_GetObjectItemCaseSensitive(state, "tags");
    const cJSON *desired = cJSON_GetObjectItemCaseSensitive(state, "desired");
    const cJSON *reported = cJSON_GetObjectItemCaseSensitive(state, "reported");
    const cJSON *dmeta = cJSON_GetObjectItemCaseSensitive(state, "desiredMeta");
    const cJSON *rmeta = cJSON_GetObjectItemCaseSensitive(state, "reportedMeta");
    int64_t versions[3];
    struct twin_path p;

    if (!cJSON_IsObject(state)) {
        bad_state(err, "must be an object", "as written by th_twin_state_json");
        return NULL;
    }
    for (int i = 0; i < 3; i++) {
        if (!state_int(cJSON_GetObjectItemCaseSensitive(state, version_names[i]), 1, STATE_MAX_INT,
                       &versions[i])) {
            char what[40];
            snprintf(what, sizeof what, "'%s'", version_names[i]);
            bad_state(err, what, "must be an integer from 1 to 2^53");
            return NULL;
        }
    }
    if (check_state_section(TH_SECTION_TAGS, tags, err) != TH_OK ||
        check_state_section(TH_SECTION_DESIRED, desired, err) != TH_OK ||
        check_state_section(TH_SECTION_REPORTED, reported, err) != TH_OK)
        return NULL;
    twin_path_init(&p, "desiredMeta");
    if (check_meta(dmeta, desired, true, versions[0], &p, err) != TH_OK)
        return NULL;
    twin_path_init(&p, "reportedMeta");
    if (check_meta(rmeta, reported, false, 0, &p, err) != TH_OK)
        return NULL;

    struct th_twin *twin = calloc(1, sizeof *twin);
    if (twin == NULL) {
        twin_nomem(err);
        return NULL;
    }
    twin->desired_version = versions[0];
    twin->reported_version = versions[1];
    twin->etag_counter = (uint64_t)versions[2];
    if (take != NULL) {
        /* cJSON_DetachItemViaPointer cannot fail for a member of `take`. */
        twin->tags = cJSON_DetachItemViaPointer(take, (cJSON *)tags);
        twin->desired = cJSON_DetachItemViaPointer(take, (cJSON *)desired);
        twin->reported = cJSON_DetachItemViaPointer(take, (cJSON *)reported);
    } else {
        twin->tags = cJSON_Duplicate(tags, 1);
        twin->desired = cJSON_Duplicate(desired, 1);
        twin->reported = cJSON_Duplicate(reported, 1);
    }
    twin->desired_meta = twin_meta_from_json(dmeta, "", true);
    twin->reported_meta = twin_meta_from_json(rmeta, "", false);
    if (twin->desired_meta != NULL)
        twin_meta_share_all(twin->desired_meta, desired);
    if (twin->reported_meta != NULL)
        twin_meta_share_all(twin->reported_meta, reported);
    if (twin->tags == NULL || twin->desired == NULL || twin->reported == NULL ||
        twin->desired_meta == NULL || twin->reported_meta == NULL) {
        th_twin_free(twin);
        twin_nomem(err);
        return NULL;
    }
    twin_intern_names(twin->tags);
    twin_intern_names(twin->desired);
    twin_intern_names(twin->reported);
    return twin;
}

struct th_twin *th_twin_from_state(const cJSON *state, struct th_error *err)
{
    return from_state(state, NULL, err);
}

struct th_twin *th_twin_from_state_take(cJSON *state, struct th_error *err)
{
    return from_state(state, state, err);
}
