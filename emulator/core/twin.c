/*
 * twin.c - the device/module twin document (iothub-protocol.md sections 6
 * and 7): the content rules and size limits (7.5) with the hub's error codes
 * (section 9.3: 400004 ArgumentInvalid, 403100 for an oversized section),
 * the writes with merge-patch semantics (7.4) and per-section $version, the
 * service-side write as one operation (If-Match, one etag step, the desired
 * notification), the device and service views, and the twin etag and
 * version (7.3). The $metadata tree and the merge live in twin_meta.c, the
 * persistence state in twin_state.c (twin_private.h is what they share).
 *
 * A replace and a reported patch work on copies of the affected section and
 * its metadata; a service patch writes them in place through an undo that
 * copies only the members it names (twin_write.c). Either is kept only when
 * validation, merge and the size check all passed, so a refused or failed
 * write leaves the twin exactly as it was.
 */
#include "twin.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "th_limits.h"
#include "twin_private.h"
#include "util.h"

/* ---- where in the document: a bounded dotted path for error messages ---- */

void twin_path_init(struct twin_path *p, const char *root)
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

/* Append ".key" or "[i]"; returns the length to hand back to twin_path_pop. */
size_t twin_path_push(struct twin_path *p, const char *key, int index)
{
    size_t saved = p->want;
    size_t at = path_shown_len(p->want);
    int n;
    if (key != NULL) {
        /* What snprintf(".%s") wrote, without its cost: this runs for every member checked. */
        size_t len = strlen(key), room = sizeof p->buf - at; /* room >= 1 */
        size_t put = len + 1 < room ? len + 1 : room - 1;
        char *d = p->buf + at;
        if (put > 0) {
            d[0] = '.';
            memcpy(d + 1, key, put - 1);
        }
        d[put] = '\0';
        p->want += len + 1;
        return saved;
    }
    n = snprintf(p->buf + at, sizeof p->buf - at, "[%d]", index);
    p->want += n > 0 ? (size_t)n : 0;
    return saved;
}

void twin_path_pop(struct twin_path *p, size_t saved)
{
    p->want = saved;
    p->buf[path_shown_len(saved)] = '\0';
}

/* The path as shown: "reported.a.b", or "reported.a.b..." when cut. */
const char *twin_path_text(const struct twin_path *p, char *out, size_t size)
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

const char *twin_section_name(enum th_twin_section section)
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
    bool replace;       /* a whole new section: null has nothing to delete, so none is allowed */
    struct twin_path path;
    struct th_error *err;
};

#define KEY_RULE                                                                                   \
    "twin property names may not contain '.', '$', '#', white space or control characters"

/*
 * The code point of the Unicode white space (other than SP and the control
 * characters, refused on their own) that starts at `s`, or 0: what .NET's
 * char.IsWhiteSpace adds, which IoT Edge's validator refuses in names.
 */
static unsigned unicode_space_at(const unsigned char *s)
{
    if (s[0] == 0xC2 && s[1] == 0xA0)
        return 0x00A0;
    if (s[0] == 0xE1 && s[1] == 0x9A && s[2] == 0x80)
        return 0x1680;
    if (s[0] == 0xE2 && s[1] == 0x80 &&
        ((s[2] >= 0x80 && s[2] <= 0x8A) || s[2] == 0xA8 || s[2] == 0xA9 || s[2] == 0xAF))
        return 0x2000u + (s[2] - 0x80u);
    if (s[0] == 0xE2 && s[1] == 0x81 && s[2] == 0x9F)
        return 0x205F;
    if (s[0] == 0xE3 && s[1] == 0x80 && s[2] == 0x80)
        return 0x3000;
    return 0;
}

/*
 * Checks the name of `member`; the validator's path names the object holding
 * it. `key_nul`: the name held "\u0000", where cJSON cut it.
 */
static th_result check_key(struct validator *v, const char *key, bool key_nul)
{
    char where[PATH_SHOWN + 8], shown[40];
    size_t len = strlen(key);

    if (key_nul)
        return th_error_set(v->err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "property name '%s\\u0000...' at %s contains control character "
                            "0x00; " KEY_RULE,
                            key_text(key, shown), twin_path_text(&v->path, where, sizeof where));
    if (len == 0)
        return th_error_set(v->err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "empty property name at %s; twin property names need 1 to %d bytes",
                            twin_path_text(&v->path, where, sizeof where), TH_TWIN_MAX_KEY_BYTES);
    if (len > TH_TWIN_MAX_KEY_BYTES)
        return th_error_set(v->err, TH_ERR_TOO_LARGE, TH_EC_ARGUMENT_INVALID,
                            "property name '%s' at %s is %zu bytes; twin property names may be "
                            "at most %d bytes",
                            key_text(key, shown), twin_path_text(&v->path, where, sizeof where),
                            len, TH_TWIN_MAX_KEY_BYTES);
    if (v->section == TH_SECTION_REPORTED && is_readonly_name(key))
        return th_error_set(v->err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "'%s' at %s is read-only; a device may not write $version or "
                            "$metadata, remove it from the reported patch",
                            key, twin_path_text(&v->path, where, sizeof where));
    for (size_t i = 0; i < len; i++) {
        const unsigned char *at = (const unsigned char *)key + i;
        unsigned char c = at[0], next = at[1];
        if (c == '.' || c == '$' || c == ' ' || c == '#')
            return th_error_set(v->err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                                "property name '%s' at %s contains '%c'; " KEY_RULE,
                                key_text(key, shown), twin_path_text(&v->path, where, sizeof where),
                                c);
        /* C0, DEL, and C1 (U+0080..U+009F, UTF-8 C2 80..C2 9F). */
        if (c < 0x20 || c == 0x7F || (c == 0xC2 && next >= 0x80 && next <= 0x9F))
            return th_error_set(
                v->err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                "property name '%s' at %s contains control character 0x%02x; " KEY_RULE,
                key_text(key, shown), twin_path_text(&v->path, where, sizeof where),
                c == 0xC2 ? next : c);
        unsigned space = unicode_space_at(at);
        if (space != 0)
            return th_error_set(v->err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                                "property name '%s' at %s contains white space U+%04X; " KEY_RULE,
                                key_text(key, shown), twin_path_text(&v->path, where, sizeof where),
                                space);
    }
    return TH_OK;
}

static th_result check_object(struct validator *v, const cJSON *obj, int member_level,
                              bool in_array);

/*
 * Checks one value at `level` (the members of a section root are level 1,
 * the elements of an array one level below it). `in_array`: the value is in
 * an array, or below one; there null has no meaning, as in a replace.
 *
 * Depth is counted on containers, as IoT Edge's ReportedPropertiesValidator
 * does: an object or array at level 11 is refused, a scalar there is fine
 * (the device-twins article's valid example nests ten objects and puts a
 * string in the tenth).
 */
static th_result check_value(struct validator *v, const cJSON *item, int level, bool in_array)
{
    char where[PATH_SHOWN + 8];

    if (cJSON_IsNull(item)) {
        if (!in_array && !v->replace)
            return TH_OK; /* a patch's "delete this property" */
        return th_error_set(v->err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "value of property or tag cannot be null: null at %s %s; null only "
                            "deletes a property as a member of a patch",
                            twin_path_text(&v->path, where, sizeof where),
                            in_array ? "is inside an array" : "is in a replacement document");
    }
    if ((cJSON_IsObject(item) || cJSON_IsArray(item)) && level > TH_TWIN_MAX_DEPTH)
        return th_error_set(v->err, TH_ERR_TOO_DEEP, TH_EC_ARGUMENT_INVALID,
                            "nesting depth exceeds %d at %s; twin objects and arrays may nest at "
                            "most %d levels below the section",
                            TH_TWIN_MAX_DEPTH, twin_path_text(&v->path, where, sizeof where),
                            TH_TWIN_MAX_DEPTH);
    if (cJSON_IsBool(item))
        return TH_OK;
    if (cJSON_IsNumber(item)) {
        /* The ±2^52 range is for integers; a number written with a fraction or an
         * exponent is a decimal (json.h, TH_JSON_DECIMAL), limited only to finite values.
         * A number built in code is held to the integer range. */
        double d = item->valuedouble;
        if (!isfinite(d))
            return th_error_set(v->err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                                "number at %s is not finite; send a finite number",
                                twin_path_text(&v->path, where, sizeof where));
        if (!(item->type & TH_JSON_DECIMAL) && (d > TH_TWIN_MAX_INT || d < TH_TWIN_MIN_INT))
            return th_error_set(v->err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                                "integer %.17g at %s is out of range; twin integers must be "
                                "between -4503599627370496 and 4503599627370495 (+-2^52)",
                                d, twin_path_text(&v->path, where, sizeof where));
        return TH_OK;
    }
    if (cJSON_IsString(item)) {
        size_t len = item->valuestring != NULL ? strlen(item->valuestring) : 0;
        if (item->type & TH_JSON_STRING_NUL)
            return th_error_set(v->err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                                "string value at %s holds \\u0000, which twinhub cannot store; "
                                "remove the NUL character",
                                twin_path_text(&v->path, where, sizeof where));
        if (len > TH_TWIN_MAX_STRING_BYTES)
            return th_error_set(v->err, TH_ERR_TOO_LARGE, TH_EC_ARGUMENT_INVALID,
                                "string value at %s is %zu bytes; twin string values may be at "
                                "most %d bytes",
                                twin_path_text(&v->path, where, sizeof where), len,
                                TH_TWIN_MAX_STRING_BYTES);
        return TH_OK;
    }
    if (cJSON_IsObject(item))
        return check_object(v, item, level + 1, in_array);
    if (cJSON_IsArray(item)) {
        int i = 0;
        for (const cJSON *el = item->child; el != NULL; el = el->next, i++) {
            size_t saved = twin_path_push(&v->path, NULL, i);
            th_result rc = check_value(v, el, level + 1, true);
            twin_path_pop(&v->path, saved);
            if (rc != TH_OK)
                return rc;
        }
        return TH_OK;
    }
    return th_error_set(v->err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                        "value at %s has an unsupported type; use a boolean, number, string, "
                        "object or array",
                        twin_path_text(&v->path, where, sizeof where));
}

/* Checks the members of `obj`, whose values sit at `member_level`. */
static th_result check_object(struct validator *v, const cJSON *obj, int member_level,
                              bool in_array)
{
    for (const cJSON *m = obj->child; m != NULL; m = m->next) {
        const char *key = m->string != NULL ? m->string : "";
        if (v->skip_readonly && is_readonly_name(key) && !(m->type & TH_JSON_KEY_NUL))
            continue;
        th_result rc = check_key(v, key, (m->type & TH_JSON_KEY_NUL) != 0);
        if (rc != TH_OK)
            return rc;
        size_t saved = twin_path_push(&v->path, key, 0);
        rc = check_value(v, m, member_level, in_array);
        twin_path_pop(&v->path, saved);
        if (rc != TH_OK)
            return rc;
    }
    return TH_OK;
}

th_result twin_validate(enum th_twin_section section, const cJSON *patch, bool skip_readonly,
                        bool replace, struct th_error *err)
{
    struct validator v = {
        .section = section, .skip_readonly = skip_readonly, .replace = replace, .err = err};
    twin_path_init(&v.path, twin_section_name(section));

    if (!cJSON_IsObject(patch))
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "%s must be a JSON object; send {\"name\": value, ...}",
                            twin_section_name(section));
    return check_object(&v, patch, 1, false);
}

th_result th_twin_validate_patch(enum th_twin_section section, const cJSON *patch,
                                 struct th_error *err)
{
    return twin_validate(section, patch, section != TH_SECTION_REPORTED, false, err);
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

th_result twin_check_size(enum th_twin_section section, const cJSON *merged, struct th_error *err)
{
    size_t limit = section == TH_SECTION_TAGS      ? TH_TWIN_MAX_TAGS_BYTES
                   : section == TH_SECTION_DESIRED ? TH_TWIN_MAX_DESIRED_BYTES
                                                   : TH_TWIN_MAX_REPORTED_BYTES;
    size_t size = th_twin_section_size(merged);
    if (size > limit)
        return th_error_set(err, TH_ERR_TOO_LARGE, TH_EC_DEVICE_MODEL_MAX_PROPERTIES_EXCEEDED,
                            "%s would be %zu bytes after this update; it may be at most %zu bytes "
                            "(keys plus values, without $metadata and $version), remove or "
                            "shorten properties",
                            twin_section_name(section), size, limit);
    return TH_OK;
}

th_result twin_nomem(struct th_error *err)
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
static th_result prepare(enum th_twin_section kind, const cJSON *section,
                         const struct th_twin_meta *meta, const cJSON *patch, bool replace,
                         const struct twin_stamp *st, cJSON **out_section,
                         struct th_twin_meta **out_meta, struct th_error *err)
{
    cJSON *new_section = replace ? cJSON_CreateObject() : cJSON_Duplicate(section, 1);
    struct th_twin_meta *new_meta = NULL;
    th_result rc = TH_OK;

    if (meta != NULL)
        new_meta = replace ? twin_meta_stamped("", st) : twin_meta_clone(meta);
    if (new_section == NULL || (meta != NULL && new_meta == NULL))
        rc = twin_nomem(err);
    if (rc == TH_OK && twin_merge_object(new_section, new_meta, patch, st) != TH_OK)
        rc = twin_nomem(err);
    if (rc == TH_OK)
        rc = twin_check_size(kind, new_section, err);
    if (rc != TH_OK) {
        cJSON_Delete(new_section);
        twin_meta_free(new_meta);
        return rc;
    }
    twin_intern_names(new_section);
    *out_section = new_section;
    if (out_meta != NULL)
        *out_meta = new_meta;
    return TH_OK;
}

/*
 * prepare for a patch (not a replace), written into the live `section` and
 * its live metadata `meta` themselves through an undo (twin_private.h,
 * twin_undo_*) instead of into copies: only the members the patch names (and
 * their metadata) are copied. On TH_OK *out_undo holds the changes, which the
 * caller commits (twin_undo_commit) or rolls back (twin_undo_rollback); on
 * failure the section and metadata are as they were and nothing is allocated.
 */
static th_result prepare_in_place(enum th_twin_section kind, cJSON *section,
                                  struct th_twin_meta *meta, const cJSON *patch,
                                  const struct twin_stamp *st, struct twin_undo **out_undo,
                                  struct th_error *err)
{
    struct twin_undo *undo = twin_undo_new(section);
    if (undo == NULL)
        return twin_nomem(err);
    th_result rc = twin_merge_in_place(undo, meta, patch, st);
    if (rc != TH_OK)
        rc = twin_nomem(err);
    if (rc == TH_OK)
        rc = twin_check_size(kind, section, err);
    if (rc != TH_OK) {
        twin_undo_rollback(undo);
        return rc;
    }
    *out_undo = undo;
    return TH_OK;
}

/* Swap a prepared tree in; takes ownership of `fresh`. */
static void commit(cJSON **slot, cJSON *fresh)
{
    cJSON_Delete(*slot);
    *slot = fresh;
}

static void commit_meta(struct th_twin_meta **slot, struct th_twin_meta *fresh)
{
    twin_meta_free(*slot);
    *slot = fresh;
}

/* ---- lifecycle ---- */

struct th_twin *th_twin_new(int64_t now_us)
{
    struct th_twin *twin = calloc(1, sizeof *twin);

    if (twin == NULL)
        return NULL;
    twin->desired_version = 1;
    twin->reported_version = 1;
    twin->etag_counter = 1;
    twin->tags = cJSON_CreateObject();
    twin->desired = cJSON_CreateObject();
    twin->reported = cJSON_CreateObject();
    twin->desired_meta = twin_meta_new("", now_us, 1, NULL, true);
    twin->reported_meta = twin_meta_new("", now_us, 0, NULL, true);
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
    twin_meta_free(twin->desired_meta);
    twin_meta_free(twin->reported_meta);
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
    copy->desired_meta = twin_meta_clone(twin->desired_meta);
    copy->reported_meta = twin_meta_clone(twin->reported_meta);
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
    return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID, "no twin or no patch given");
}

th_result th_twin_patch_reported_if(struct th_twin *twin, const cJSON *patch,
                                    const int64_t *if_version, int64_t now_us, struct th_error *err)
{
    if (twin == NULL || patch == NULL)
        return bad_twin(err);
    th_result rc = twin_validate(TH_SECTION_REPORTED, patch, false, false, err);
    if (rc != TH_OK)
        return rc;

    struct twin_stamp st = {.us = now_us, .with_version = false};
    cJSON *section = NULL;
    struct th_twin_meta *meta = NULL;
    rc = prepare(TH_SECTION_REPORTED, twin->reported, twin->reported_meta, patch, false, &st,
                 &section, &meta, err);
    if (rc != TH_OK)
        return rc;
    /* Checked last: a request that would fail anyway gets that failure (RFC 7232, 5). */
    if (if_version != NULL && *if_version != twin->reported_version) {
        cJSON_Delete(section);
        twin_meta_free(meta);
        return th_error_set(err, TH_ERR_PRECONDITION, TH_EC_PRECONDITION_FAILED,
                            "the request's $version %lld is not the reported properties' "
                            "$version %lld; read the twin (or take the $version of the last "
                            "204 answer) and send the patch with that version, or without one",
                            (long long)*if_version, (long long)twin->reported_version);
    }
    commit(&twin->reported, section);
    commit_meta(&twin->reported_meta, meta);
    twin->reported_version++;
    return TH_OK;
}

th_result th_twin_patch_reported(struct th_twin *twin, const cJSON *patch, int64_t now_us,
                                 struct th_error *err)
{
    return th_twin_patch_reported_if(twin, patch, NULL, now_us, err);
}

/*
 * A service-written section (tags or desired) prepared but not committed:
 * the request's part as written (`src`: the request's own tree when it holds
 * no read-only member, else `doc`, a copy stripped of them), and the
 * section (and for desired its metadata) as they will be after the write.
 */
struct part {
    cJSON *doc;
    const cJSON *src;
    cJSON *section;
    struct th_twin_meta *meta;
    /* Non-NULL when the section was written in place (prepare_in_place): `section` is then the
     * twin's own, and freeing the part undoes the write. */
    struct twin_undo *undo;
};

static void part_free(struct part *p)
{
    cJSON_Delete(p->doc);
    if (p->undo != NULL)
        twin_undo_rollback(p->undo);
    else
        cJSON_Delete(p->section);
    twin_meta_free(p->meta);
    memset(p, 0, sizeof *p);
}

/*
 * Drops the read-only members of `doc` (on a copy, made only when it holds
 * any), checks it against the content rules (a replace refuses null) and
 * merges it into the twin's `kind` section, stamped `st`: for a patch in
 * place through an undo (prepare_in_place), for a replace into a new
 * section. Nothing is kept until commit_part; part_free undoes it. On
 * failure *out is empty and err says why; on success out->src borrows `doc`
 * when no copy was needed.
 */
static th_result prepare_part(const struct th_twin *twin, enum th_twin_section kind,
                              const cJSON *doc, bool replace, const struct twin_stamp *st,
                              struct part *out, struct th_error *err)
{
    bool desired = kind == TH_SECTION_DESIRED;
    memset(out, 0, sizeof *out);
    out->src = doc;
    if (!twin_fast_paths || twin_holds_readonly(doc)) {
        out->doc = cJSON_Duplicate(doc, 1);
        if (out->doc == NULL)
            return twin_nomem(err);
        th_twin_strip_readonly(out->doc);
        out->src = out->doc;
    }
    th_result rc = twin_validate(kind, out->src, false, replace, err);
    cJSON *section = desired ? twin->desired : twin->tags;
    if (rc == TH_OK && !replace && twin_fast_paths) {
        rc = prepare_in_place(kind, section, desired ? twin->desired_meta : NULL, out->src, st,
                              &out->undo, err);
        if (rc == TH_OK)
            out->section = section;
    } else if (rc == TH_OK) {
        rc = prepare(kind, section, desired ? twin->desired_meta : NULL, out->src, replace, st,
                     &out->section, desired ? &out->meta : NULL, err);
    }
    if (rc != TH_OK)
        part_free(out);
    return rc;
}

/* The desired notification: the patch, or for a replace the new desired, plus "$version". */
static cJSON *notification_of(const struct part *desired, bool replace, int64_t version)
{
    cJSON *note = cJSON_Duplicate(replace ? desired->section : desired->src, 1);
    if (note != NULL && cJSON_AddNumberToObject(note, KEY_VERSION, (double)version) == NULL) {
        cJSON_Delete(note);
        note = NULL;
    }
    return note;
}

/* Swaps a prepared part in (tags when `meta` is NULL); the part is empty afterwards. */
static void commit_part(cJSON **section, struct th_twin_meta **meta, struct part *p)
{
    if (p->undo != NULL) {
        twin_undo_commit(p->undo); /* the section and its metadata were written in place */
        p->undo = NULL;
        p->section = NULL;
        return;
    }
    commit(section, p->section);
    p->section = NULL;
    if (meta != NULL) {
        commit_meta(meta, p->meta);
        p->meta = NULL;
    }
}

static th_result write_desired(struct th_twin *twin, const cJSON *doc, bool replace, int64_t now_us,
                               cJSON **out_notification, struct th_error *err)
{
    if (out_notification != NULL)
        *out_notification = NULL;
    if (twin == NULL || doc == NULL)
        return bad_twin(err);

    struct twin_stamp st = {
        .us = now_us, .version = twin->desired_version + 1, .with_version = true};
    struct part part;
    th_result rc = prepare_part(twin, TH_SECTION_DESIRED, doc, replace, &st, &part, err);
    if (rc != TH_OK)
        return rc;
    /* The notification is built before committing so that OOM changes nothing. */
    cJSON *note = NULL;
    if (out_notification != NULL && (note = notification_of(&part, replace, st.version)) == NULL) {
        part_free(&part);
        return twin_nomem(err);
    }
    commit_part(&twin->desired, &twin->desired_meta, &part);
    part_free(&part);
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
    struct twin_stamp st = {.with_version = false};
    struct part part;
    th_result rc = prepare_part(twin, TH_SECTION_TAGS, doc, replace, &st, &part, err);
    if (rc != TH_OK)
        return rc;
    commit_part(&twin->tags, NULL, &part);
    part_free(&part);
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

/* ---- the service-side write ---- */

/*
 * True when `reported` (properties.reported of a service write) holds
 * something the service would write: anything but absent, null, or an object
 * whose members are only the read-only $metadata / $version of a twin as read.
 * The hub documents the service writes as tags and desired only (REST Update
 * Twin / Replace Twin; device-twins article, "Back-end operations"); the
 * Azure SDKs send a read twin back whole (C# UpdateTwinAsync with a twin from
 * GetTwinAsync, the CLI's generic update), so its read-only remains pass.
 */
static bool reported_written(const cJSON *reported)
{
    if (reported == NULL || cJSON_IsNull(reported))
        return false;
    if (!cJSON_IsObject(reported))
        return true;
    for (const cJSON *m = reported->child; m != NULL; m = m->next)
        if (m->string == NULL || (m->type & TH_JSON_KEY_NUL) || !is_readonly_name(m->string))
            return true;
    return false;
}

/* A `tags` / `properties.desired` member a write cannot take (null is a whole-section removal in
 * a patch and "leave it" in a replace). */
static bool bad_part(const cJSON *part)
{
    return part != NULL && !cJSON_IsObject(part) && !cJSON_IsNull(part);
}

/*
 * The patch a whole-section null in a PATCH stands for: every member of
 * `section` set to null, so that the section is emptied and the device's
 * notification names each removed property with a null, as any patch does
 * (docs/protocol.md, "Whole-section nulls"). NULL on out-of-memory.
 */
static cJSON *section_removal(const cJSON *section)
{
    cJSON *patch = cJSON_CreateObject();
    for (const cJSON *m = section != NULL ? section->child : NULL; patch != NULL && m != NULL;
         m = m->next)
        if (cJSON_AddNullToObject(patch, m->string) == NULL) {
            cJSON_Delete(patch);
            patch = NULL;
        }
    return patch;
}

th_result th_twin_service_write(struct th_twin *twin, const struct th_twin_write *req,
                                int64_t now_us, struct th_twin_write_result *out,
                                struct th_error *err)
{
    if (out != NULL)
        memset(out, 0, sizeof *out);
    if (twin == NULL || req == NULL || out == NULL)
        return bad_twin(err);
    bool replace = req->mode == TH_TWIN_WRITE_REPLACE;
    const cJSON *doc = req->doc;
    if (!cJSON_IsObject(doc))
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "a twin write must be a JSON object like "
                            "{\"tags\":{...},\"properties\":{\"desired\":{...}}}");
    const cJSON *tags = cJSON_GetObjectItemCaseSensitive(doc, "tags");
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(doc, "properties");
    const cJSON *desired =
        cJSON_IsObject(props) ? cJSON_GetObjectItemCaseSensitive(props, "desired") : NULL;
    const cJSON *reported =
        cJSON_IsObject(props) ? cJSON_GetObjectItemCaseSensitive(props, "reported") : NULL;

    if (reported_written(reported))
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "reported properties are written by the device only; "
                            "properties.reported may carry only the $metadata and $version of "
                            "a twin as read, remove its other members from the request");
    if (bad_part(tags) || bad_part(desired))
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "'tags' and 'properties.desired' must be objects (or null)");
    /* A patch's whole-section null removes every member: the same as a patch naming each. */
    cJSON *tags_removal = NULL, *desired_removal = NULL;
    if (!replace && cJSON_IsNull(tags) &&
        (tags = tags_removal = section_removal(twin->tags)) == NULL)
        return twin_nomem(err);
    if (!replace && cJSON_IsNull(desired) &&
        (desired = desired_removal = section_removal(twin->desired)) == NULL) {
        cJSON_Delete(tags_removal);
        return twin_nomem(err);
    }

    struct twin_stamp tags_st = {.with_version = false};
    struct twin_stamp desired_st = {
        .us = now_us, .version = twin->desired_version + 1, .with_version = true};
    struct part tp = {0}, dp = {0};
    th_result rc = TH_OK;
    if (cJSON_IsObject(tags))
        rc = prepare_part(twin, TH_SECTION_TAGS, tags, replace, &tags_st, &tp, err);
    if (rc == TH_OK && cJSON_IsObject(desired))
        rc = prepare_part(twin, TH_SECTION_DESIRED, desired, replace, &desired_st, &dp, err);
    /* Checked last: a request that would fail anyway gets that failure (RFC 7232, 5). */
    char etag[16];
    th_twin_etag(twin, etag);
    if (rc == TH_OK && !th_etag_matches(req->if_match, etag))
        rc = th_error_set(err, TH_ERR_PRECONDITION, TH_EC_PRECONDITION_FAILED,
                          "etag %s does not match the twin's current etag \"%s\"; read the twin "
                          "again, or send If-Match * to write unconditionally",
                          req->if_match, etag);
    /* Everything that can fail happens before the commit, so OOM changes nothing. */
    if (rc == TH_OK && dp.section != NULL) {
        if (req->notification_as_text)
            out->notification_text = twin_notification_text(
                replace ? dp.section : dp.src, desired_st.version, &out->notification_len);
        else
            out->notification = notification_of(&dp, replace, desired_st.version);
        if (out->notification == NULL && out->notification_text == NULL)
            rc = twin_nomem(err);
        /* The written document for the result: the stripped copy, or a copy of the request's. */
        if (rc == TH_OK && !req->no_desired_doc && dp.doc == NULL &&
            (dp.doc = cJSON_Duplicate(dp.src, 1)) == NULL)
            rc = twin_nomem(err);
    }
    /* The parts' src may be these; nothing reads src after this point. */
    cJSON_Delete(tags_removal);
    cJSON_Delete(desired_removal);
    if (rc != TH_OK) {
        part_free(&tp);
        part_free(&dp);
        th_twin_write_result_free(out);
        return rc;
    }

    out->tags_written = tp.section != NULL;
    out->desired_written = dp.section != NULL;
    if (out->tags_written)
        commit_part(&twin->tags, NULL, &tp);
    if (out->desired_written) {
        commit_part(&twin->desired, &twin->desired_meta, &dp);
        twin->desired_version = desired_st.version;
        if (!req->no_desired_doc) {
            out->desired = dp.doc;
            dp.doc = NULL;
        }
    }
    if (out->tags_written || out->desired_written)
        twin->etag_counter++; /* one step per request, however many parts it wrote */
    out->desired_version = twin->desired_version;
    part_free(&tp);
    part_free(&dp);
    return TH_OK;
}

void th_twin_write_result_free(struct th_twin_write_result *out)
{
    if (out == NULL)
        return;
    cJSON_Delete(out->desired);
    cJSON_Delete(out->notification);
    free(out->notification_text);
    memset(out, 0, sizeof *out);
}

/* ---- views ---- */

/* {...section, ["$metadata": meta,] "$version": version}; NULL on OOM. */
static cJSON *section_view(const cJSON *section, const struct th_twin_meta *meta, bool with_version,
                           int64_t version)
{
    cJSON *view = cJSON_Duplicate(section, 1);
    if (view == NULL)
        return NULL;
    if (meta != NULL) {
        cJSON *m = twin_meta_json(meta, section, with_version);
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
    cJSON *desired = section_view(twin->desired, with_meta ? twin->desired_meta : NULL, true,
                                  twin->desired_version);
    cJSON *reported = section_view(twin->reported, with_meta ? twin->reported_meta : NULL, false,
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
