/*
 * twin.c - the device/module twin document (iothub-protocol.md sections 6
 * and 7): merge-patch semantics (7.4), per-section $version, $metadata with
 * $lastUpdated / $lastUpdatedVersion (7.2), the twin etag and version (7.3),
 * and the content rules and size limits (7.5) with the hub's error codes
 * (section 9.3: 400004 ArgumentInvalid, 403100 for an oversized section);
 * and the twin's full-fidelity persistence state (save and validated restore).
 *
 * Every write works on copies of the affected section and its metadata and
 * swaps them in only when validation, merge and the size check all passed,
 * so a refused or failed write leaves the twin exactly as it was.
 */
#include "twin.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "th_limits.h"
#include "util.h"

#define CODE_ARGUMENT_INVALID 400004
#define CODE_MAX_PROPERTIES_EXCEEDED 403100

#define KEY_LAST_UPDATED "$lastUpdated"
#define KEY_LAST_UPDATED_VERSION "$lastUpdatedVersion"
#define KEY_METADATA "$metadata"
#define KEY_VERSION "$version"

/* ---- where in the document: a bounded dotted path for error messages ---- */

#define PATH_SHOWN 96 /* bytes of path shown in a message (th_error.message is 256) */

struct path {
    char buf[PATH_SHOWN + 1];
    size_t want; /* logical length; > PATH_SHOWN means the shown text is cut */
};

static void path_init(struct path *p, const char *root)
{
    p->want = 0;
    p->buf[0] = '\0';
    int n = snprintf(p->buf, sizeof p->buf, "%s", root);
    p->want = n > 0 ? (size_t)n : 0;
}

static size_t path_shown_len(size_t want)
{
    return want < PATH_SHOWN ? want : PATH_SHOWN;
}

/* Append ".key" or "[i]"; returns the length to hand back to path_pop. */
static size_t path_push(struct path *p, const char *key, int index)
{
    size_t saved = p->want;
    size_t at = path_shown_len(p->want);
    int n;
    if (key != NULL)
        n = snprintf(p->buf + at, sizeof p->buf - at, ".%s", key);
    else
        n = snprintf(p->buf + at, sizeof p->buf - at, "[%d]", index);
    p->want += n > 0 ? (size_t)n : 0;
    return saved;
}

static void path_pop(struct path *p, size_t saved)
{
    p->want = saved;
    p->buf[path_shown_len(saved)] = '\0';
}

/* The path as shown: "reported.a.b", or "reported.a.b..." when cut. */
static const char *path_text(const struct path *p, char *out, size_t size)
{
    snprintf(out, size, "%s%s", p->buf, p->want > PATH_SHOWN ? "..." : "");
    return out;
}

/*
 * A key as shown in a message: at most 32 bytes, cut on a UTF-8 character
 * boundary, with C0/DEL/C1 control characters shown as '?'.
 */
static const char *key_text(const char *key, char out[40])
{
    size_t n = strlen(key), cut = n, o = 0;
    if (n > 32) {
        cut = 32;
        while (cut > 0 && ((unsigned char)key[cut] & 0xC0) == 0x80)
            cut--;
    }
    for (size_t i = 0; i < cut; i++) {
        unsigned char c = (unsigned char)key[i];
        if (c == 0xC2 && i + 1 < cut && (unsigned char)key[i + 1] >= 0x80 &&
            (unsigned char)key[i + 1] <= 0x9F) {
            out[o++] = '?';
            i++;
        } else {
            out[o++] = (c < 0x20 || c == 0x7F) ? '?' : (char)c;
        }
    }
    strcpy(out + o, cut < n ? "..." : "");
    return out;
}

static const char *section_name(enum th_twin_section section)
{
    switch (section) {
    case TH_SECTION_TAGS:
        return "tags";
    case TH_SECTION_DESIRED:
        return "desired";
    case TH_SECTION_REPORTED:
        return "reported";
    }
    return "twin";
}

static bool is_readonly_name(const char *key)
{
    return strcmp(key, KEY_VERSION) == 0 || strcmp(key, KEY_METADATA) == 0;
}

/* ---- validation (7.5) ---- */

struct validator {
    enum th_twin_section section;
    bool skip_readonly; /* service patches: $version/$metadata are ignored, not refused */
    struct path path;
    struct th_error *err;
};

#define KEY_RULE "twin property names may not contain '.', '$', ' ' or control characters"

/* Checks one member name; the validator's path names the object holding it. */
static th_result check_key(struct validator *v, const char *key)
{
    char where[PATH_SHOWN + 8], shown[40];
    size_t len = strlen(key);

    if (len == 0)
        return th_error_set(v->err, TH_ERR_INVAL, CODE_ARGUMENT_INVALID,
                            "empty property name at %s; twin property names need 1 to %d bytes",
                            path_text(&v->path, where, sizeof where), TH_TWIN_MAX_KEY_BYTES);
    if (len > TH_TWIN_MAX_KEY_BYTES)
        return th_error_set(v->err, TH_ERR_TOO_LARGE, CODE_ARGUMENT_INVALID,
                            "property name '%s' at %s is %zu bytes; twin property names may be "
                            "at most %d bytes",
                            key_text(key, shown), path_text(&v->path, where, sizeof where), len,
                            TH_TWIN_MAX_KEY_BYTES);
    if (v->section == TH_SECTION_REPORTED && is_readonly_name(key))
        return th_error_set(v->err, TH_ERR_INVAL, CODE_ARGUMENT_INVALID,
                            "'%s' at %s is read-only; a device may not write $version or "
                            "$metadata, remove it from the reported patch",
                            key, path_text(&v->path, where, sizeof where));
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)key[i];
        unsigned char next = (unsigned char)key[i + 1];
        if (c == '.' || c == '$' || c == ' ')
            return th_error_set(v->err, TH_ERR_INVAL, CODE_ARGUMENT_INVALID,
                                "property name '%s' at %s contains '%c'; " KEY_RULE,
                                key_text(key, shown), path_text(&v->path, where, sizeof where), c);
        /* C0, DEL, and C1 (U+0080..U+009F, UTF-8 C2 80..C2 9F). */
        if (c < 0x20 || c == 0x7F || (c == 0xC2 && next >= 0x80 && next <= 0x9F))
            return th_error_set(
                v->err, TH_ERR_INVAL, CODE_ARGUMENT_INVALID,
                "property name '%s' at %s contains control character 0x%02x; " KEY_RULE,
                key_text(key, shown), path_text(&v->path, where, sizeof where),
                c == 0xC2 ? next : c);
    }
    return TH_OK;
}

static th_result check_object(struct validator *v, const cJSON *obj, int member_level);

/*
 * Checks one value at `level` (the members of a section root are level 1).
 * `is_member`: the value belongs to an object member, where null means delete.
 */
static th_result check_value(struct validator *v, const cJSON *item, int level, bool is_member)
{
    char where[PATH_SHOWN + 8];

    if (level > TH_TWIN_MAX_DEPTH)
        return th_error_set(v->err, TH_ERR_TOO_DEEP, CODE_ARGUMENT_INVALID,
                            "nesting depth exceeds %d at %s; twin objects and arrays may nest at "
                            "most %d levels below the section",
                            TH_TWIN_MAX_DEPTH, path_text(&v->path, where, sizeof where),
                            TH_TWIN_MAX_DEPTH);

    if (cJSON_IsNull(item)) {
        if (is_member)
            return TH_OK;
        return th_error_set(v->err, TH_ERR_INVAL, CODE_ARGUMENT_INVALID,
                            "null at %s is inside an array; null is only allowed as a property "
                            "value, to delete that property",
                            path_text(&v->path, where, sizeof where));
    }
    if (cJSON_IsBool(item))
        return TH_OK;
    if (cJSON_IsNumber(item)) {
        /* After parsing, 1e20 and 100000000000000000000 are the same double, so the
         * integer range applies to every number. */
        double d = item->valuedouble;
        if (!isfinite(d) || d > TH_TWIN_MAX_INT || d < TH_TWIN_MIN_INT)
            return th_error_set(v->err, TH_ERR_INVAL, CODE_ARGUMENT_INVALID,
                                "number %g at %s is out of range; twin numbers must be between "
                                "-4503599627370496 and 4503599627370495 (+-2^52)",
                                d, path_text(&v->path, where, sizeof where));
        return TH_OK;
    }
    if (cJSON_IsString(item)) {
        size_t len = item->valuestring != NULL ? strlen(item->valuestring) : 0;
        if (len > TH_TWIN_MAX_STRING_BYTES)
            return th_error_set(v->err, TH_ERR_TOO_LARGE, CODE_ARGUMENT_INVALID,
                                "string value at %s is %zu bytes; twin string values may be at "
                                "most %d bytes",
                                path_text(&v->path, where, sizeof where), len,
                                TH_TWIN_MAX_STRING_BYTES);
        return TH_OK;
    }
    if (cJSON_IsObject(item))
        return check_object(v, item, level + 1);
    if (cJSON_IsArray(item)) {
        int i = 0;
        for (const cJSON *el = item->child; el != NULL; el = el->next, i++) {
            size_t saved = path_push(&v->path, NULL, i);
            th_result rc = check_value(v, el, level + 1, false);
            path_pop(&v->path, saved);
            if (rc != TH_OK)
                return rc;
        }
        return TH_OK;
    }
    return th_error_set(v->err, TH_ERR_INVAL, CODE_ARGUMENT_INVALID,
                        "value at %s has an unsupported type; use a boolean, number, string, "
                        "object or array",
                        path_text(&v->path, where, sizeof where));
}

/* Checks the members of `obj`, whose values sit at `member_level`. */
static th_result check_object(struct validator *v, const cJSON *obj, int member_level)
{
    for (const cJSON *m = obj->child; m != NULL; m = m->next) {
        const char *key = m->string != NULL ? m->string : "";
        if (v->skip_readonly && is_readonly_name(key))
            continue;
        th_result rc = check_key(v, key);
        if (rc != TH_OK)
            return rc;
        size_t saved = path_push(&v->path, key, 0);
        rc = check_value(v, m, member_level, true);
        path_pop(&v->path, saved);
        if (rc != TH_OK)
            return rc;
    }
    return TH_OK;
}

static th_result validate(enum th_twin_section section, const cJSON *patch, bool skip_readonly,
                          struct th_error *err)
{
    struct validator v = {.section = section, .skip_readonly = skip_readonly, .err = err};
    path_init(&v.path, section_name(section));

    if (!cJSON_IsObject(patch))
        return th_error_set(err, TH_ERR_INVAL, CODE_ARGUMENT_INVALID,
                            "%s must be a JSON object; send {\"name\": value, ...}",
                            section_name(section));
    return check_object(&v, patch, 1);
}

th_result th_twin_validate_patch(enum th_twin_section section, const cJSON *patch,
                                 struct th_error *err)
{
    return validate(section, patch, section != TH_SECTION_REPORTED, err);
}

void th_twin_strip_readonly(cJSON *doc)
{
    if (!cJSON_IsObject(doc) && !cJSON_IsArray(doc))
        return;
    cJSON *child = doc->child;
    while (child != NULL) {
        cJSON *next = child->next;
        if (cJSON_IsObject(doc) && child->string != NULL && is_readonly_name(child->string))
            cJSON_Delete(cJSON_DetachItemViaPointer(doc, child));
        else
            th_twin_strip_readonly(child);
        child = next;
    }
}

/* ---- size (7.5) ---- */

static size_t value_size(const cJSON *item)
{
    if (cJSON_IsString(item))
        return item->valuestring != NULL ? strlen(item->valuestring) : 0;
    if (cJSON_IsNumber(item))
        return 8;
    if (cJSON_IsBool(item))
        return 4;
    if (cJSON_IsArray(item)) {
        size_t sum = 0;
        for (const cJSON *el = item->child; el != NULL; el = el->next)
            sum += value_size(el);
        return sum;
    }
    if (cJSON_IsObject(item))
        return th_twin_section_size(item);
    return 0;
}

/* Keys plus values; $metadata and $version do not count (7.2). */
size_t th_twin_section_size(const cJSON *section)
{
    size_t sum = 0;
    if (!cJSON_IsObject(section))
        return 0;
    for (const cJSON *m = section->child; m != NULL; m = m->next) {
        if (m->string != NULL && is_readonly_name(m->string))
            continue;
        sum += (m->string != NULL ? strlen(m->string) : 0) + value_size(m);
    }
    return sum;
}

static th_result check_size(enum th_twin_section section, const cJSON *merged, struct th_error *err)
{
    size_t limit = section == TH_SECTION_TAGS      ? TH_TWIN_MAX_TAGS_BYTES
                   : section == TH_SECTION_DESIRED ? TH_TWIN_MAX_DESIRED_BYTES
                                                   : TH_TWIN_MAX_REPORTED_BYTES;
    size_t size = th_twin_section_size(merged);
    if (size > limit)
        return th_error_set(err, TH_ERR_TOO_LARGE, CODE_MAX_PROPERTIES_EXCEEDED,
                            "%s would be %zu bytes after this update; it may be at most %zu bytes "
                            "(keys plus values, without $metadata and $version), remove or "
                            "shorten properties",
                            section_name(section), size, limit);
    return TH_OK;
}

/* ---- merge with $metadata (7.2, 7.4) ---- */

struct stamp {
    char time[TH_TIME_BUF];
    int64_t version;   /* desired $version of this update */
    bool with_version; /* desired metadata carries $lastUpdatedVersion */
};

/*
 * Set obj[key] = item, keeping the member's position when it exists.
 * Takes ownership of `item` on every path (NULL item means an earlier
 * allocation failed).
 */
static th_result put_member(cJSON *obj, const char *key, cJSON *item)
{
    if (item == NULL)
        return TH_ERR_NOMEM;
    cJSON *old = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (old == NULL) {
        if (!cJSON_AddItemToObject(obj, key, item)) {
            cJSON_Delete(item);
            return TH_ERR_NOMEM;
        }
        return TH_OK;
    }
    /* cJSON_ReplaceItemInObject does not check its strdup, so name the item ourselves. */
    if (item->string == NULL || strcmp(item->string, key) != 0) {
        size_t n = strlen(key) + 1;
        char *name = cJSON_malloc(n);
        if (name == NULL) {
            cJSON_Delete(item);
            return TH_ERR_NOMEM;
        }
        memcpy(name, key, n);
        if (item->string != NULL && !(item->type & cJSON_StringIsConst))
            cJSON_free(item->string);
        item->string = name;
        item->type &= ~cJSON_StringIsConst;
    }
    cJSON_ReplaceItemViaPointer(obj, old, item);
    return TH_OK;
}

static th_result stamp_node(cJSON *meta, const struct stamp *st)
{
    th_result rc = put_member(meta, KEY_LAST_UPDATED, cJSON_CreateString(st->time));
    if (rc == TH_OK && st->with_version)
        rc = put_member(meta, KEY_LAST_UPDATED_VERSION, cJSON_CreateNumber((double)st->version));
    return rc;
}

/*
 * Merge `patch` into `target` (IoT Hub semantics: null deletes, object onto
 * object recurses, anything else replaces; arrays are values). `meta` is the
 * metadata node mirroring `target`, or NULL for tags. Every node the patch
 * names is stamped; deleted members lose their metadata. The patch must have
 * passed validation. On failure target/meta are partly merged: callers pass
 * copies.
 */
static th_result merge_object(cJSON *target, cJSON *meta, const cJSON *patch,
                              const struct stamp *st)
{
    th_result rc = meta != NULL ? stamp_node(meta, st) : TH_OK;

    for (const cJSON *m = patch->child; m != NULL && rc == TH_OK; m = m->next) {
        const char *key = m->string;
        cJSON *existing = cJSON_GetObjectItemCaseSensitive(target, key);

        if (cJSON_IsNull(m)) {
            cJSON_DeleteItemFromObjectCaseSensitive(target, key);
            if (meta != NULL)
                cJSON_DeleteItemFromObjectCaseSensitive(meta, key);
        } else if (cJSON_IsObject(m)) {
            /* Onto a missing or non-object member: start from {} so nested nulls vanish
             * and {"a":{"b":null}} leaves "a":{}. */
            if (!cJSON_IsObject(existing)) {
                existing = cJSON_CreateObject();
                rc = put_member(target, key, existing);
                if (rc == TH_OK && meta != NULL)
                    rc = put_member(meta, key, cJSON_CreateObject());
                if (rc != TH_OK)
                    break;
            }
            cJSON *child_meta = NULL;
            if (meta != NULL) {
                child_meta = cJSON_GetObjectItemCaseSensitive(meta, key);
                if (!cJSON_IsObject(child_meta)) {
                    child_meta = cJSON_CreateObject();
                    rc = put_member(meta, key, child_meta);
                    if (rc != TH_OK)
                        break;
                }
            }
            rc = merge_object(existing, child_meta, m, st);
        } else {
            rc = put_member(target, key, cJSON_Duplicate(m, 1));
            if (rc == TH_OK && meta != NULL) {
                cJSON *leaf = cJSON_CreateObject();
                if (leaf == NULL)
                    rc = TH_ERR_NOMEM;
                else if ((rc = stamp_node(leaf, st)) != TH_OK)
                    cJSON_Delete(leaf);
                else
                    rc = put_member(meta, key, leaf);
            }
        }
    }
    return rc;
}

static th_result nomem(struct th_error *err)
{
    return th_error_set(err, TH_ERR_NOMEM, 0, "out of memory while updating the twin");
}

/*
 * Shared body of every write. Merges `patch` (already validated and free of
 * read-only members) into copies of `section` / `meta`, or into empty ones
 * when `replace`, and checks the size. On TH_OK *out_section (and *out_meta
 * when `meta` is non-NULL) are new trees the caller commits or deletes; on
 * failure nothing is allocated. The twin itself is never touched here.
 */
static th_result prepare(enum th_twin_section kind, const cJSON *section, const cJSON *meta,
                         const cJSON *patch, bool replace, const struct stamp *st,
                         cJSON **out_section, cJSON **out_meta, struct th_error *err)
{
    cJSON *new_section = replace ? cJSON_CreateObject() : cJSON_Duplicate(section, 1);
    cJSON *new_meta = NULL;
    th_result rc = TH_OK;

    if (meta != NULL)
        new_meta = replace ? cJSON_CreateObject() : cJSON_Duplicate(meta, 1);
    if (new_section == NULL || (meta != NULL && new_meta == NULL))
        rc = nomem(err);
    if (rc == TH_OK && merge_object(new_section, new_meta, patch, st) != TH_OK)
        rc = nomem(err);
    if (rc == TH_OK)
        rc = check_size(kind, new_section, err);
    if (rc != TH_OK) {
        cJSON_Delete(new_section);
        cJSON_Delete(new_meta);
        return rc;
    }
    *out_section = new_section;
    if (out_meta != NULL)
        *out_meta = new_meta;
    return TH_OK;
}

/* Swap a prepared tree in; takes ownership of `fresh`. */
static void commit(cJSON **slot, cJSON *fresh)
{
    cJSON_Delete(*slot);
    *slot = fresh;
}

/* ---- lifecycle ---- */

static cJSON *new_root_meta(const char *time, const int64_t *version)
{
    cJSON *meta = cJSON_CreateObject();
    struct stamp st = {.version = version != NULL ? *version : 0, .with_version = version != NULL};
    snprintf(st.time, sizeof st.time, "%s", time);
    if (meta != NULL && stamp_node(meta, &st) != TH_OK) {
        cJSON_Delete(meta);
        return NULL;
    }
    return meta;
}

struct th_twin *th_twin_new(int64_t now_us)
{
    struct th_twin *twin = calloc(1, sizeof *twin);
    char time[TH_TIME_BUF];
    int64_t one = 1;

    if (twin == NULL)
        return NULL;
    th_time_format(now_us, time);
    twin->desired_version = 1;
    twin->reported_version = 1;
    twin->etag_counter = 1;
    twin->tags = cJSON_CreateObject();
    twin->desired = cJSON_CreateObject();
    twin->reported = cJSON_CreateObject();
    twin->desired_meta = new_root_meta(time, &one);
    twin->reported_meta = new_root_meta(time, NULL);
    if (twin->tags == NULL || twin->desired == NULL || twin->reported == NULL ||
        twin->desired_meta == NULL || twin->reported_meta == NULL) {
        th_twin_free(twin);
        return NULL;
    }
    return twin;
}

void th_twin_free(struct th_twin *twin)
{
    if (twin == NULL)
        return;
    cJSON_Delete(twin->tags);
    cJSON_Delete(twin->desired);
    cJSON_Delete(twin->reported);
    cJSON_Delete(twin->desired_meta);
    cJSON_Delete(twin->reported_meta);
    free(twin);
}

struct th_twin *th_twin_clone(const struct th_twin *twin)
{
    if (twin == NULL)
        return NULL;
    struct th_twin *copy = calloc(1, sizeof *copy);
    if (copy == NULL)
        return NULL;
    copy->desired_version = twin->desired_version;
    copy->reported_version = twin->reported_version;
    copy->etag_counter = twin->etag_counter;
    copy->tags = cJSON_Duplicate(twin->tags, 1);
    copy->desired = cJSON_Duplicate(twin->desired, 1);
    copy->reported = cJSON_Duplicate(twin->reported, 1);
    copy->desired_meta = cJSON_Duplicate(twin->desired_meta, 1);
    copy->reported_meta = cJSON_Duplicate(twin->reported_meta, 1);
    if (copy->tags == NULL || copy->desired == NULL || copy->reported == NULL ||
        copy->desired_meta == NULL || copy->reported_meta == NULL) {
        th_twin_free(copy);
        return NULL;
    }
    return copy;
}

/* ---- writes ---- */

static th_result bad_twin(struct th_error *err)
{
    return th_error_set(err, TH_ERR_INVAL, CODE_ARGUMENT_INVALID, "no twin or no patch given");
}

th_result th_twin_patch_reported(struct th_twin *twin, const cJSON *patch, int64_t now_us,
                                 struct th_error *err)
{
    if (twin == NULL || patch == NULL)
        return bad_twin(err);
    th_result rc = validate(TH_SECTION_REPORTED, patch, false, err);
    if (rc != TH_OK)
        return rc;

    struct stamp st = {.with_version = false};
    th_time_format(now_us, st.time);
    cJSON *section = NULL, *meta = NULL;
    rc = prepare(TH_SECTION_REPORTED, twin->reported, twin->reported_meta, patch, false, &st,
                 &section, &meta, err);
    if (rc != TH_OK)
        return rc;
    commit(&twin->reported, section);
    commit(&twin->reported_meta, meta);
    twin->reported_version++;
    return TH_OK;
}

/*
 * Desired PATCH and PUT. `doc` is copied and stripped of read-only members;
 * the notification is that copy (PATCH) or the new desired (PUT), plus
 * "$version", built before anything is committed.
 */
static th_result write_desired(struct th_twin *twin, const cJSON *doc, bool replace, int64_t now_us,
                               cJSON **out_notification, struct th_error *err)
{
    if (out_notification != NULL)
        *out_notification = NULL;
    if (twin == NULL || doc == NULL)
        return bad_twin(err);

    cJSON *patch = cJSON_Duplicate(doc, 1);
    if (patch == NULL)
        return nomem(err);
    th_twin_strip_readonly(patch);
    th_result rc = validate(TH_SECTION_DESIRED, patch, false, err);
    if (rc != TH_OK) {
        cJSON_Delete(patch);
        return rc;
    }

    struct stamp st = {.version = twin->desired_version + 1, .with_version = true};
    th_time_format(now_us, st.time);
    cJSON *section = NULL, *meta = NULL;
    rc = prepare(TH_SECTION_DESIRED, twin->desired, twin->desired_meta, patch, replace, &st,
                 &section, &meta, err);
    if (rc != TH_OK) {
        cJSON_Delete(patch);
        return rc;
    }

    /* The notification is built before committing so that OOM changes nothing. */
    cJSON *note = NULL;
    if (out_notification != NULL) {
        note = replace ? cJSON_Duplicate(section, 1) : patch;
        if (note == NULL || cJSON_AddNumberToObject(note, KEY_VERSION, (double)st.version) == NULL)
            rc = nomem(err);
    }
    if (note != patch)
        cJSON_Delete(patch);
    if (rc != TH_OK) {
        cJSON_Delete(note);
        cJSON_Delete(section);
        cJSON_Delete(meta);
        return rc;
    }
    commit(&twin->desired, section);
    commit(&twin->desired_meta, meta);
    twin->desired_version = st.version;
    twin->etag_counter++;
    if (out_notification != NULL)
        *out_notification = note;
    return TH_OK;
}

th_result th_twin_patch_desired(struct th_twin *twin, const cJSON *patch, int64_t now_us,
                                cJSON **out_notification, struct th_error *err)
{
    return write_desired(twin, patch, false, now_us, out_notification, err);
}

th_result th_twin_replace_desired(struct th_twin *twin, const cJSON *desired, int64_t now_us,
                                  cJSON **out_notification, struct th_error *err)
{
    return write_desired(twin, desired, true, now_us, out_notification, err);
}

static th_result write_tags(struct th_twin *twin, const cJSON *doc, bool replace,
                            struct th_error *err)
{
    if (twin == NULL || doc == NULL)
        return bad_twin(err);
    cJSON *patch = cJSON_Duplicate(doc, 1);
    if (patch == NULL)
        return nomem(err);
    th_twin_strip_readonly(patch);
    th_result rc = validate(TH_SECTION_TAGS, patch, false, err);
    cJSON *section = NULL;
    if (rc == TH_OK) {
        struct stamp st = {.with_version = false};
        rc = prepare(TH_SECTION_TAGS, twin->tags, NULL, patch, replace, &st, &section, NULL, err);
    }
    cJSON_Delete(patch);
    if (rc != TH_OK)
        return rc;
    commit(&twin->tags, section);
    twin->etag_counter++;
    return TH_OK;
}

th_result th_twin_patch_tags(struct th_twin *twin, const cJSON *patch, struct th_error *err)
{
    return write_tags(twin, patch, false, err);
}

th_result th_twin_replace_tags(struct th_twin *twin, const cJSON *tags, struct th_error *err)
{
    return write_tags(twin, tags, true, err);
}

/* ---- views ---- */

/* {...section, ["$metadata": meta,] "$version": version}; NULL on OOM. */
static cJSON *section_view(const cJSON *section, const cJSON *meta, int64_t version)
{
    cJSON *view = cJSON_Duplicate(section, 1);
    if (view == NULL)
        return NULL;
    if (meta != NULL) {
        cJSON *m = cJSON_Duplicate(meta, 1);
        if (m == NULL || !cJSON_AddItemToObject(view, KEY_METADATA, m)) {
            cJSON_Delete(m);
            cJSON_Delete(view);
            return NULL;
        }
    }
    if (cJSON_AddNumberToObject(view, KEY_VERSION, (double)version) == NULL) {
        cJSON_Delete(view);
        return NULL;
    }
    return view;
}

static cJSON *properties(const struct th_twin *twin, bool with_meta)
{
    if (twin == NULL)
        return NULL;
    cJSON *root = cJSON_CreateObject();
    cJSON *desired =
        section_view(twin->desired, with_meta ? twin->desired_meta : NULL, twin->desired_version);
    cJSON *reported = section_view(twin->reported, with_meta ? twin->reported_meta : NULL,
                                   twin->reported_version);
    if (root == NULL || desired == NULL || reported == NULL)
        goto fail;
    if (!cJSON_AddItemToObject(root, "desired", desired))
        goto fail;
    desired = NULL; /* owned by root now */
    if (!cJSON_AddItemToObject(root, "reported", reported))
        goto fail;
    return root;
fail:
    cJSON_Delete(root);
    cJSON_Delete(desired);
    cJSON_Delete(reported);
    return NULL;
}

cJSON *th_twin_device_view(const struct th_twin *twin)
{
    return properties(twin, false);
}

cJSON *th_twin_properties_view(const struct th_twin *twin)
{
    return properties(twin, true);
}

void th_twin_etag(const struct th_twin *twin, char buf[16])
{
    uint8_t be[8];
    uint64_t counter = twin != NULL ? twin->etag_counter : 0;
    for (int i = 7; i >= 0; i--) {
        be[i] = (uint8_t)(counter & 0xFF);
        counter >>= 8;
    }
    if (th_b64_encode(be, sizeof be, buf, 16) != TH_OK)
        buf[0] = '\0';
}

int64_t th_twin_version(const struct th_twin *twin)
{
    if (twin == NULL)
        return 0;
    return (int64_t)twin->etag_counter + twin->reported_version;
}

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

cJSON *th_twin_state_json(const struct th_twin *twin)
{
    if (twin == NULL)
        return NULL;
    cJSON *o = cJSON_CreateObject();
    if (o == NULL)
        return NULL;
    bool ok = add_copy(o, "tags", twin->tags) && add_copy(o, "desired", twin->desired) &&
              add_copy(o, "reported", twin->reported) &&
              add_copy(o, "desiredMeta", twin->desired_meta) &&
              add_copy(o, "reportedMeta", twin->reported_meta) &&
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
    return th_error_set(err, TH_ERR_INVAL, CODE_ARGUMENT_INVALID, "twin state: %s %s", what, fix);
}

/* A stored section never holds null (null only means "delete" in a patch). */
static th_result check_no_null(const cJSON *item, struct path *p, struct th_error *err)
{
    char where[PATH_SHOWN + 8];
    if (cJSON_IsNull(item))
        return th_error_set(err, TH_ERR_INVAL, CODE_ARGUMENT_INVALID,
                            "twin state: %s is null; a stored twin holds no nulls, remove it",
                            path_text(p, where, sizeof where));
    int i = 0;
    for (const cJSON *c = item->child; c != NULL; c = c->next, i++) {
        size_t saved = cJSON_IsObject(item) ? path_push(p, c->string ? c->string : "", 0)
                                            : path_push(p, NULL, i);
        th_result rc = check_no_null(c, p, err);
        path_pop(p, saved);
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
                            struct path *p, struct th_error *err)
{
    char where[PATH_SHOWN + 8];
    int64_t v;

    if (!cJSON_IsObject(meta))
        return th_error_set(err, TH_ERR_INVAL, CODE_ARGUMENT_INVALID,
                            "twin state: %s must be a metadata object with \"" KEY_LAST_UPDATED
                            "\"",
                            path_text(p, where, sizeof where));
    if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(meta, KEY_LAST_UPDATED)))
        return th_error_set(err, TH_ERR_INVAL, CODE_ARGUMENT_INVALID,
                            "twin state: %s." KEY_LAST_UPDATED " must be a time string",
                            path_text(p, where, sizeof where));
    if (desired && !state_int(cJSON_GetObjectItemCaseSensitive(meta, KEY_LAST_UPDATED_VERSION), 1,
                              (double)max_version, &v))
        return th_error_set(err, TH_ERR_INVAL, CODE_ARGUMENT_INVALID,
                            "twin state: %s." KEY_LAST_UPDATED_VERSION
                            " must be an integer from 1 to desiredVersion (%lld)",
                            path_text(p, where, sizeof where), (long long)max_version);

    for (const cJSON *m = meta->child; m != NULL; m = m->next) {
        const char *key = m->string != NULL ? m->string : "";
        if (strcmp(key, KEY_LAST_UPDATED) == 0 ||
            (desired && strcmp(key, KEY_LAST_UPDATED_VERSION) == 0))
            continue;
        const cJSON *child = cJSON_GetObjectItemCaseSensitive(node, key);
        size_t saved = path_push(p, key, 0);
        th_result rc;
        if (child == NULL)
            rc = th_error_set(err, TH_ERR_INVAL, CODE_ARGUMENT_INVALID,
                              "twin state: %s has no matching property; remove that metadata",
                              path_text(p, where, sizeof where));
        else
            rc = check_meta(m, cJSON_IsObject(child) ? child : NULL, desired, max_version, p, err);
        path_pop(p, saved);
        if (rc != TH_OK)
            return rc;
    }
    for (const cJSON *c = node != NULL ? node->child : NULL; c != NULL; c = c->next) {
        if (cJSON_GetObjectItemCaseSensitive(meta, c->string) == NULL) {
            size_t saved = path_push(p, c->string, 0);
            th_error_set(err, TH_ERR_INVAL, CODE_ARGUMENT_INVALID,
                         "twin state: %s has no metadata; every property needs a metadata node",
                         path_text(p, where, sizeof where));
            path_pop(p, saved);
            return TH_ERR_INVAL;
        }
    }
    return TH_OK;
}

static th_result check_state_section(enum th_twin_section kind, const cJSON *section,
                                     struct th_error *err)
{
    struct path p;
    if (!cJSON_IsObject(section)) {
        char what[32];
        snprintf(what, sizeof what, "'%s'", section_name(kind));
        return bad_state(err, what, "must be an object");
    }
    th_result rc = validate(kind, section, false, err);
    if (rc == TH_OK) {
        path_init(&p, section_name(kind));
        rc = check_no_null(section, &p, err);
    }
    if (rc == TH_OK)
        rc = check_size(kind, section, err);
    return rc;
}

struct th_twin *th_twin_from_state(const cJSON *state, struct th_error *err)
{
    static const char *const version_names[] = {"desiredVersion", "reportedVersion", "etagCounter"};
    const cJSON *tags = cJSON_GetObjectItemCaseSensitive(state, "tags");
    const cJSON *desired = cJSON_GetObjectItemCaseSensitive(state, "desired");
    const cJSON *reported = cJSON_GetObjectItemCaseSensitive(state, "reported");
    const cJSON *dmeta = cJSON_GetObjectItemCaseSensitive(state, "desiredMeta");
    const cJSON *rmeta = cJSON_GetObjectItemCaseSensitive(state, "reportedMeta");
    int64_t versions[3];
    struct path p;

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
    path_init(&p, "desiredMeta");
    if (check_meta(dmeta, desired, true, versions[0], &p, err) != TH_OK)
        return NULL;
    path_init(&p, "reportedMeta");
    if (check_meta(rmeta, reported, false, 0, &p, err) != TH_OK)
        return NULL;

    struct th_twin *twin = calloc(1, sizeof *twin);
    if (twin == NULL) {
        nomem(err);
        return NULL;
    }
    twin->desired_version = versions[0];
    twin->reported_version = versions[1];
    twin->etag_counter = (uint64_t)versions[2];
    twin->tags = cJSON_Duplicate(tags, 1);
    twin->desired = cJSON_Duplicate(desired, 1);
    twin->reported = cJSON_Duplicate(reported, 1);
    twin->desired_meta = cJSON_Duplicate(dmeta, 1);
    twin->reported_meta = cJSON_Duplicate(rmeta, 1);
    if (twin->tags == NULL || twin->desired == NULL || twin->reported == NULL ||
        twin->desired_meta == NULL || twin->reported_meta == NULL) {
        th_twin_free(twin);
        nomem(err);
        return NULL;
    }
    return twin;
}
