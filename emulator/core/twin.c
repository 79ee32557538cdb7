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
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "th_limits.h"
#include "util.h"

#define CODE_ARGUMENT_INVALID 400004
#define CODE_MAX_PROPERTIES_EXCEEDED 403100
#define CODE_PRECONDITION_FAILED 412001

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
    bool replace;       /* a whole new section: null has nothing to delete, so none is allowed */
    struct path path;
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
        return th_error_set(v->err, TH_ERR_INVAL, CODE_ARGUMENT_INVALID,
                            "property name '%s\\u0000...' at %s contains control character "
                            "0x00; " KEY_RULE,
                            key_text(key, shown), path_text(&v->path, where, sizeof where));
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
        const unsigned char *at = (const unsigned char *)key + i;
        unsigned char c = at[0], next = at[1];
        if (c == '.' || c == '$' || c == ' ' || c == '#')
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
        unsigned space = unicode_space_at(at);
        if (space != 0)
            return th_error_set(v->err, TH_ERR_INVAL, CODE_ARGUMENT_INVALID,
                                "property name '%s' at %s contains white space U+%04X; " KEY_RULE,
                                key_text(key, shown), path_text(&v->path, where, sizeof where),
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
        return th_error_set(v->err, TH_ERR_INVAL, CODE_ARGUMENT_INVALID,
                            "value of property or tag cannot be null: null at %s %s; null only "
                            "deletes a property as a member of a patch",
                            path_text(&v->path, where, sizeof where),
                            in_array ? "is inside an array" : "is in a replacement document");
    }
    if ((cJSON_IsObject(item) || cJSON_IsArray(item)) && level > TH_TWIN_MAX_DEPTH)
        return th_error_set(v->err, TH_ERR_TOO_DEEP, CODE_ARGUMENT_INVALID,
                            "nesting depth exceeds %d at %s; twin objects and arrays may nest at "
                            "most %d levels below the section",
                            TH_TWIN_MAX_DEPTH, path_text(&v->path, where, sizeof where),
                            TH_TWIN_MAX_DEPTH);
    if (cJSON_IsBool(item))
        return TH_OK;
    if (cJSON_IsNumber(item)) {
        /* The ±2^52 range is for integers; a number written with a fraction or an
         * exponent is a decimal (json.h, TH_JSON_DECIMAL), limited only to finite values.
         * A number built in code is held to the integer range. */
        double d = item->valuedouble;
        if (!isfinite(d))
            return th_error_set(v->err, TH_ERR_INVAL, CODE_ARGUMENT_INVALID,
                                "number at %s is not finite; send a finite number",
                                path_text(&v->path, where, sizeof where));
        if (!(item->type & TH_JSON_DECIMAL) && (d > TH_TWIN_MAX_INT || d < TH_TWIN_MIN_INT))
            return th_error_set(v->err, TH_ERR_INVAL, CODE_ARGUMENT_INVALID,
                                "integer %.17g at %s is out of range; twin integers must be "
                                "between -4503599627370496 and 4503599627370495 (+-2^52)",
                                d, path_text(&v->path, where, sizeof where));
        return TH_OK;
    }
    if (cJSON_IsString(item)) {
        size_t len = item->valuestring != NULL ? strlen(item->valuestring) : 0;
        if (item->type & TH_JSON_STRING_NUL)
            return th_error_set(v->err, TH_ERR_INVAL, CODE_ARGUMENT_INVALID,
                                "string value at %s holds \\u0000, which twinhub cannot store; "
                                "remove the NUL character",
                                path_text(&v->path, where, sizeof where));
        if (len > TH_TWIN_MAX_STRING_BYTES)
            return th_error_set(v->err, TH_ERR_TOO_LARGE, CODE_ARGUMENT_INVALID,
                                "string value at %s is %zu bytes; twin string values may be at "
                                "most %d bytes",
                                path_text(&v->path, where, sizeof where), len,
                                TH_TWIN_MAX_STRING_BYTES);
        return TH_OK;
    }
    if (cJSON_IsObject(item))
        return check_object(v, item, level + 1, in_array);
    if (cJSON_IsArray(item)) {
        int i = 0;
        for (const cJSON *el = item->child; el != NULL; el = el->next, i++) {
            size_t saved = path_push(&v->path, NULL, i);
            th_result rc = check_value(v, el, level + 1, true);
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
        size_t saved = path_push(&v->path, key, 0);
        rc = check_value(v, m, member_level, in_array);
        path_pop(&v->path, saved);
        if (rc != TH_OK)
            return rc;
    }
    return TH_OK;
}

static th_result validate(enum th_twin_section section, const cJSON *patch, bool skip_readonly,
                          bool replace, struct th_error *err)
{
    struct validator v = {
        .section = section, .skip_readonly = skip_readonly, .replace = replace, .err = err};
    path_init(&v.path, section_name(section));

    if (!cJSON_IsObject(patch))
        return th_error_set(err, TH_ERR_INVAL, CODE_ARGUMENT_INVALID,
                            "%s must be a JSON object; send {\"name\": value, ...}",
                            section_name(section));
    return check_object(&v, patch, 1, false);
}

th_result th_twin_validate_patch(enum th_twin_section section, const cJSON *patch,
                                 struct th_error *err)
{
    return validate(section, patch, section != TH_SECTION_REPORTED, false, err);
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

/* ---- shared property names ---- */

/*
 * Property names repeat from twin to twin (every device of a fleet reports
 * the same names), so the sections and their metadata keep one shared copy
 * of each short name: stored twin trees hold it as a cJSON constant string
 * (cJSON_StringIsConst: cJSON_Delete leaves it alone, cJSON_Duplicate shares
 * it). The copies live as long as the process, packed in 16 KB blocks; past
 * INTERN_MAX_NAMES distinct names, names are simply not shared any more, so
 * the pool stays bounded (at most about 6 MB) whatever the input.
 */
#define INTERN_MAX_LEN 64
#define INTERN_MAX_NAMES 65536
#define INTERN_BLOCK 16384

static struct {
    atomic_flag busy; /* the twin API may be used from several threads */
    const char **slots;
    size_t cap, count;
    char *block; /* current block: [0..7] links the previous one */
    size_t used;
} names = {.busy = ATOMIC_FLAG_INIT};

static size_t name_hash(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return (size_t)h;
}

/* The slot of `s`, or the empty slot where it goes. Needs cap > count. */
static const char **name_slot(const char **slots, size_t cap, const char *s, size_t len)
{
    size_t i = name_hash(s, len) & (cap - 1);
    while (slots[i] != NULL && strcmp(slots[i], s) != 0)
        i = (i + 1) & (cap - 1);
    return &slots[i];
}

static const char *intern_locked(const char *s, size_t len)
{
    if (names.cap == 0 || (names.count + 1) * 2 > names.cap) {
        if (names.count >= INTERN_MAX_NAMES)
            return NULL;
        size_t cap = names.cap ? names.cap * 2 : 256;
        const char **slots = calloc(cap, sizeof *slots);
        if (slots == NULL)
            return NULL;
        for (size_t i = 0; i < names.cap; i++)
            if (names.slots[i] != NULL)
                *name_slot(slots, cap, names.slots[i], strlen(names.slots[i])) = names.slots[i];
        free(names.slots);
        names.slots = slots;
        names.cap = cap;
    }
    const char **slot = name_slot(names.slots, names.cap, s, len);
    if (*slot != NULL)
        return *slot;
    if (names.block == NULL || names.used + len + 1 > INTERN_BLOCK) {
        char *block = malloc(INTERN_BLOCK);
        if (block == NULL)
            return NULL;
        memcpy(block, &names.block, sizeof names.block);
        names.block = block;
        names.used = sizeof names.block;
    }
    char *copy = names.block + names.used;
    memcpy(copy, s, len + 1);
    names.used += len + 1;
    names.count++;
    *slot = copy;
    return copy;
}

/*
 * Frees the pool when the code goes away: at exit, or when the broker unloads
 * the plugin (after it freed its registry; no stored twin may outlive this).
 * Without it a leak checker would report the pool as lost once the library's
 * static data is unmapped.
 */
__attribute__((destructor)) static void names_release(void)
{
    free(names.slots);
    names.slots = NULL;
    names.cap = names.count = 0;
    while (names.block != NULL) {
        char *prev;
        memcpy(&prev, names.block, sizeof prev);
        free(names.block);
        names.block = prev;
    }
    names.used = 0;
}

/* The shared copy of `s`; NULL when it is not shared (too long, pool full, OOM). */
static const char *intern(const char *s)
{
    size_t len = strlen(s);
    if (len > INTERN_MAX_LEN)
        return NULL;
    while (atomic_flag_test_and_set_explicit(&names.busy, memory_order_acquire))
        ;
    const char *p = intern_locked(s, len);
    atomic_flag_clear_explicit(&names.busy, memory_order_release);
    return p;
}

/* Gives the members of `node` and of everything below it the shared copies of their names. */
static void intern_names(cJSON *node)
{
    for (cJSON *c = node->child; c != NULL; c = c->next) {
        if (c->string != NULL && !(c->type & cJSON_StringIsConst)) {
            const char *shared = intern(c->string);
            if (shared != NULL) {
                cJSON_free(c->string);
                c->string = (char *)shared;
                c->type |= cJSON_StringIsConst;
            }
        }
        if (c->child != NULL)
            intern_names(c);
    }
}

/* ---- $metadata, held compactly (7.2) ---- */

/*
 * The metadata of a section root or property. Rendered (with the value it
 * describes) as {"$lastUpdated":"<time>"[,"$lastUpdatedVersion":n],
 * "<key>":{...},...}; the version is rendered for desired only.
 *
 * A node is either
 * - shared (`shared` set, no children): the property and everything below
 *   it carry this node's stamp; its $metadata lists the members of the value
 *   in the value's order. One patch stamps everything it writes alike, so a
 *   property written by one patch, however large, costs one node; or
 * - explicit: one child node per member of the value, in the order of the
 *   $metadata object it stands for.
 * A shared node becomes explicit (its members get shared nodes with its old
 * stamp) before it takes a different stamp, and an explicit node whose
 * children are all shared, with its stamp, in the value's order becomes
 * shared again; the $metadata JSON is the same either way. Twins written
 * through this API keep $metadata members in the value's order; a restored
 * state may list them otherwise, and then those nodes stay explicit.
 *
 * A node is one 48 B heap block whose key is the shared copy of the name. A
 * name that is not shared, and a time text that th_time_format would not
 * produce (only possible in a restored state), follow the header in the same
 * block.
 */
struct th_twin_meta {
    struct th_twin_meta *next;  /* next sibling */
    struct th_twin_meta *child; /* first child property (explicit nodes) */
    const char *key;            /* "" for the root; shared, or inline (after the header) */
    int64_t us;                 /* $lastUpdated, or META_TIME_TEXT */
    uint64_t version : 63;      /* $lastUpdatedVersion (desired only) */
    uint64_t shared : 1;        /* the stamp covers the whole value below */
};

#define META_TIME_TEXT INT64_MIN /* $lastUpdated is the text after the header (and inline key) */

static char *meta_tail(const struct th_twin_meta *m)
{
    return (char *)(m + 1);
}

static bool meta_key_inline(const struct th_twin_meta *m)
{
    return m->key == meta_tail(m);
}

/* Bytes after the header: the inline key and the time text. */
static size_t meta_tail_size(const struct th_twin_meta *m)
{
    size_t n = meta_key_inline(m) ? strlen(m->key) + 1 : 0;
    if (m->us == META_TIME_TEXT)
        n += strlen(meta_tail(m) + n) + 1;
    return n;
}

static const char *meta_time_text(const struct th_twin_meta *m)
{
    return meta_tail(m) + (meta_key_inline(m) ? strlen(m->key) + 1 : 0);
}

struct stamp {
    int64_t us;
    int64_t version;   /* desired $version of this update */
    bool with_version; /* desired metadata carries $lastUpdatedVersion */
};

/* A childless node; `time_text` non-NULL keeps that text as its time. NULL on OOM. */
static struct th_twin_meta *meta_new(const char *key, int64_t us, int64_t version,
                                     const char *time_text, bool shared_stamp)
{
    const char *shared = intern(key);
    size_t klen = shared == NULL ? strlen(key) + 1 : 0;
    size_t tlen = time_text != NULL ? strlen(time_text) + 1 : 0;
    struct th_twin_meta *m = malloc(sizeof *m + klen + tlen);
    if (m == NULL)
        return NULL;
    m->next = NULL;
    m->child = NULL;
    m->key = shared;
    if (shared == NULL) {
        memcpy(meta_tail(m), key, klen);
        m->key = meta_tail(m);
    }
    m->us = time_text != NULL ? META_TIME_TEXT : us != META_TIME_TEXT ? us : META_TIME_TEXT + 1;
    m->version = (uint64_t)version;
    m->shared = shared_stamp;
    if (time_text != NULL)
        memcpy(meta_tail(m) + klen, time_text, tlen);
    return m;
}

/* Frees `m` and its children (not its siblings). Accepts NULL. */
static void meta_free(struct th_twin_meta *m)
{
    if (m == NULL)
        return;
    struct th_twin_meta *c = m->child;
    while (c != NULL) {
        struct th_twin_meta *next = c->next;
        meta_free(c);
        c = next;
    }
    free(m);
}

/* Deep copy of `m` and its children (not its siblings); NULL on OOM. */
static struct th_twin_meta *meta_clone(const struct th_twin_meta *m)
{
    size_t extra = meta_tail_size(m);
    struct th_twin_meta *copy = malloc(sizeof *copy + extra);
    if (copy == NULL)
        return NULL;
    memcpy(copy, m, sizeof *copy + extra);
    copy->next = NULL;
    copy->child = NULL;
    if (meta_key_inline(m))
        copy->key = meta_tail(copy);
    struct th_twin_meta **tail = &copy->child;
    for (const struct th_twin_meta *c = m->child; c != NULL; c = c->next) {
        if ((*tail = meta_clone(c)) == NULL) {
            meta_free(copy);
            return NULL;
        }
        tail = &(*tail)->next;
    }
    return copy;
}

/* The link that points at the first child named `key`, or NULL. */
static struct th_twin_meta **meta_link(struct th_twin_meta *parent, const char *key)
{
    for (struct th_twin_meta **l = &parent->child; *l != NULL; l = &(*l)->next)
        if (strcmp((*l)->key, key) == 0)
            return l;
    return NULL;
}

/* parent[node->key] = node, in the old member's place when there is one; takes `node`. */
static th_result meta_put(struct th_twin_meta *parent, struct th_twin_meta *node)
{
    if (node == NULL)
        return TH_ERR_NOMEM;
    struct th_twin_meta **l = meta_link(parent, node->key);
    if (l != NULL) {
        struct th_twin_meta *old = *l;
        node->next = old->next;
        *l = node;
        meta_free(old);
        return TH_OK;
    }
    for (l = &parent->child; *l != NULL; l = &(*l)->next)
        ;
    *l = node;
    return TH_OK;
}

static void meta_delete(struct th_twin_meta *parent, const char *key)
{
    struct th_twin_meta **l = meta_link(parent, key);
    if (l != NULL) {
        struct th_twin_meta *old = *l;
        *l = old->next;
        meta_free(old);
    }
}

/* The us a stamp stores: INT64_MIN marks a time text; INT64_MIN + 1 is shown the same. */
static int64_t stamp_us(const struct stamp *st)
{
    return st->us != META_TIME_TEXT ? st->us : META_TIME_TEXT + 1;
}

static void stamp_node(struct th_twin_meta *m, const struct stamp *st)
{
    m->us = stamp_us(st);
    m->version = st->with_version ? (uint64_t)st->version : 0;
}

static bool stamp_is(const struct th_twin_meta *m, const struct stamp *st)
{
    return m->us == stamp_us(st) && m->version == (st->with_version ? (uint64_t)st->version : 0);
}

static bool same_stamp(const struct th_twin_meta *a, const struct th_twin_meta *b)
{
    return a->us != META_TIME_TEXT && a->us == b->us && a->version == b->version;
}

static bool is_object_with_members(const cJSON *value)
{
    return cJSON_IsObject(value) && value->child != NULL;
}

/*
 * Makes a shared node explicit: each member of `value` gets a shared node
 * with the node's stamp. On OOM the node is unchanged.
 */
static th_result meta_unshare(struct th_twin_meta *m, const cJSON *value)
{
    if (!m->shared)
        return TH_OK;
    const char *text = m->us == META_TIME_TEXT ? meta_time_text(m) : NULL;
    struct th_twin_meta *kids = NULL, **tail = &kids;
    for (const cJSON *c = is_object_with_members(value) ? value->child : NULL; c != NULL;
         c = c->next) {
        *tail =
            meta_new(c->string != NULL ? c->string : "", m->us, (int64_t)m->version, text, true);
        if (*tail == NULL) {
            while (kids != NULL) {
                struct th_twin_meta *next = kids->next;
                meta_free(kids);
                kids = next;
            }
            return TH_ERR_NOMEM;
        }
        tail = &(*tail)->next;
    }
    m->child = kids;
    m->shared = false;
    return TH_OK;
}

/*
 * Makes an explicit node shared again when that changes nothing: its children
 * are shared, carry its stamp and name the members of `value` in order.
 */
static void meta_try_share(struct th_twin_meta *m, const cJSON *value)
{
    if (m->shared || m->us == META_TIME_TEXT)
        return;
    const cJSON *v = cJSON_IsObject(value) ? value->child : NULL;
    for (const struct th_twin_meta *c = m->child; c != NULL; c = c->next, v = v->next)
        if (v == NULL || !c->shared || !same_stamp(c, m) || v->string == NULL ||
            strcmp(c->key, v->string) != 0 || cJSON_GetObjectItemCaseSensitive(value, c->key) != v)
            return;
    if (v != NULL)
        return;
    struct th_twin_meta *c = m->child;
    while (c != NULL) {
        struct th_twin_meta *next = c->next;
        meta_free(c);
        c = next;
    }
    m->child = NULL;
    m->shared = true;
}

/* {"$lastUpdated":..[,"$lastUpdatedVersion":..]} with the stamp of `m`; NULL on OOM. */
static cJSON *stamp_json(const struct th_twin_meta *m, bool with_version)
{
    char time[TH_TIME_BUF];
    const char *text = time;
    cJSON *obj = cJSON_CreateObject();
    if (obj == NULL)
        return NULL;
    if (m->us == META_TIME_TEXT)
        text = meta_time_text(m);
    else
        th_time_format(m->us, time);
    if (cJSON_AddStringToObject(obj, KEY_LAST_UPDATED, text) == NULL ||
        (with_version &&
         cJSON_AddNumberToObject(obj, KEY_LAST_UPDATED_VERSION, (double)m->version) == NULL)) {
        cJSON_Delete(obj);
        return NULL;
    }
    return obj;
}

/* Adds sub as obj[key]; deletes both on failure. */
static cJSON *add_or_drop(cJSON *obj, const char *key, cJSON *sub)
{
    if (sub == NULL || !cJSON_AddItemToObject(obj, key, sub)) {
        cJSON_Delete(sub);
        cJSON_Delete(obj);
        return NULL;
    }
    return obj;
}

/* The $metadata JSON of `value` when all of it carries the stamp of `m`; NULL on OOM. */
static cJSON *shared_json(const struct th_twin_meta *m, const cJSON *value, bool with_version)
{
    cJSON *obj = stamp_json(m, with_version);
    for (const cJSON *c = cJSON_IsObject(value) ? value->child : NULL; c != NULL && obj != NULL;
         c = c->next)
        obj = add_or_drop(obj, c->string != NULL ? c->string : "", shared_json(m, c, with_version));
    return obj;
}

/* The $metadata JSON of `m`, which describes `value`; NULL on OOM. */
static cJSON *meta_json(const struct th_twin_meta *m, const cJSON *value, bool with_version)
{
    if (m->shared)
        return shared_json(m, value, with_version);
    cJSON *obj = stamp_json(m, with_version);
    for (const struct th_twin_meta *c = m->child; c != NULL && obj != NULL; c = c->next) {
        const cJSON *sub =
            cJSON_IsObject(value) ? cJSON_GetObjectItemCaseSensitive(value, c->key) : NULL;
        obj = add_or_drop(obj, c->key, meta_json(c, sub, with_version));
    }
    return obj;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, int64_t m, int64_t d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/*
 * The microseconds th_time_format turns into exactly `text`; false when it
 * makes no such text (then the node keeps the text itself).
 */
static bool time_of_text(const char *text, int64_t *out)
{
    int y, mo, d, h, mi, s;
    long long frac;
    int n = 0;
    if (strlen(text) != 28 ||
        sscanf(text, "%4d-%2d-%2dT%2d:%2d:%2d.%7lldZ%n", &y, &mo, &d, &h, &mi, &s, &frac, &n) !=
            7 ||
        n != 28 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 59 ||
        frac < 0 || frac % 10 != 0)
        return false;
    int64_t us = ((days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s) * 1000000) +
                 (int64_t)(frac / 10);
    char back[TH_TIME_BUF];
    th_time_format(us, back);
    if (strcmp(back, text) != 0)
        return false;
    *out = us;
    return true;
}

/*
 * The compact form of a $metadata object that passed check_meta (so every
 * node is an object with a "$lastUpdated" string, and desired nodes have an
 * integral "$lastUpdatedVersion"); NULL on OOM. `key` names the node.
 */
static struct th_twin_meta *meta_from_json(const cJSON *json, const char *key, bool desired)
{
    const cJSON *lu = cJSON_GetObjectItemCaseSensitive(json, KEY_LAST_UPDATED);
    int64_t us = 0, version = 0;
    const char *text = NULL;
    if (!time_of_text(lu->valuestring, &us))
        text = lu->valuestring;
    if (desired)
        version =
            (int64_t)cJSON_GetObjectItemCaseSensitive(json, KEY_LAST_UPDATED_VERSION)->valuedouble;
    struct th_twin_meta *m = meta_new(key, us, version, text, false);
    if (m == NULL)
        return NULL;
    struct th_twin_meta **tail = &m->child;
    for (const cJSON *c = json->child; c != NULL; c = c->next) {
        const char *ck = c->string != NULL ? c->string : "";
        if (strcmp(ck, KEY_LAST_UPDATED) == 0 ||
            (desired && strcmp(ck, KEY_LAST_UPDATED_VERSION) == 0))
            continue;
        if ((*tail = meta_from_json(c, ck, desired)) == NULL) {
            meta_free(m);
            return NULL;
        }
        tail = &(*tail)->next;
    }
    return m;
}

/* Makes every node of `m` (describing `value`) shared where that changes nothing. */
static void meta_share_all(struct th_twin_meta *m, const cJSON *value)
{
    for (struct th_twin_meta *c = m->child; c != NULL; c = c->next)
        meta_share_all(c, cJSON_IsObject(value) ? cJSON_GetObjectItemCaseSensitive(value, c->key)
                                                : NULL);
    meta_try_share(m, value);
}

/* ---- merge with $metadata (7.2, 7.4) ---- */

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

/* A new stamped metadata node for `key`; NULL on OOM. */
static struct th_twin_meta *meta_stamped(const char *key, const struct stamp *st)
{
    return meta_new(key, st->us, st->with_version ? st->version : 0, NULL, true);
}

/*
 * Merge `patch` into `target` (IoT Hub semantics: null deletes, object onto
 * object recurses, anything else replaces; arrays are values). `meta` is the
 * metadata node mirroring `target`, or NULL for tags. Every node the patch
 * names is stamped; deleted members lose their metadata. The patch must have
 * passed validation. On failure target/meta are partly merged: callers pass
 * copies.
 */
static th_result merge_object(cJSON *target, struct th_twin_meta *meta, const cJSON *patch,
                              const struct stamp *st)
{
    th_result rc = TH_OK;
    if (meta != NULL) {
        if (meta->shared && stamp_is(meta, st)) {
            /* Everything below already carries this stamp, and what the patch writes gets
             * it too: only the values change. */
            meta = NULL;
        } else {
            if (meta_unshare(meta, target) != TH_OK)
                return TH_ERR_NOMEM;
            stamp_node(meta, st);
        }
    }

    for (const cJSON *m = patch->child; m != NULL && rc == TH_OK; m = m->next) {
        const char *key = m->string;
        cJSON *existing = cJSON_GetObjectItemCaseSensitive(target, key);

        if (cJSON_IsNull(m)) {
            cJSON_DeleteItemFromObjectCaseSensitive(target, key);
            if (meta != NULL)
                meta_delete(meta, key);
        } else if (cJSON_IsObject(m)) {
            /* Onto a missing or non-object member: start from {} so nested nulls vanish
             * and {"a":{"b":null}} leaves "a":{}. */
            if (!cJSON_IsObject(existing)) {
                existing = cJSON_CreateObject();
                rc = put_member(target, key, existing);
                if (rc == TH_OK && meta != NULL)
                    rc = meta_put(meta, meta_stamped(key, st));
                if (rc != TH_OK)
                    break;
            }
            struct th_twin_meta *child_meta = NULL;
            if (meta != NULL) {
                struct th_twin_meta **l = meta_link(meta, key);
                if (l != NULL) {
                    child_meta = *l;
                } else {
                    child_meta = meta_stamped(key, st);
                    rc = meta_put(meta, child_meta);
                    if (rc != TH_OK)
                        break;
                }
            }
            rc = merge_object(existing, child_meta, m, st);
        } else {
            rc = put_member(target, key, cJSON_Duplicate(m, 1));
            if (rc == TH_OK && meta != NULL)
                rc = meta_put(meta, meta_stamped(key, st));
        }
    }
    if (rc == TH_OK && meta != NULL)
        meta_try_share(meta, target);
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
static th_result prepare(enum th_twin_section kind, const cJSON *section,
                         const struct th_twin_meta *meta, const cJSON *patch, bool replace,
                         const struct stamp *st, cJSON **out_section,
                         struct th_twin_meta **out_meta, struct th_error *err)
{
    cJSON *new_section = replace ? cJSON_CreateObject() : cJSON_Duplicate(section, 1);
    struct th_twin_meta *new_meta = NULL;
    th_result rc = TH_OK;

    if (meta != NULL)
        new_meta = replace ? meta_stamped("", st) : meta_clone(meta);
    if (new_section == NULL || (meta != NULL && new_meta == NULL))
        rc = nomem(err);
    if (rc == TH_OK && merge_object(new_section, new_meta, patch, st) != TH_OK)
        rc = nomem(err);
    if (rc == TH_OK)
        rc = check_size(kind, new_section, err);
    if (rc != TH_OK) {
        cJSON_Delete(new_section);
        meta_free(new_meta);
        return rc;
    }
    intern_names(new_section);
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

static void commit_meta(struct th_twin_meta **slot, struct th_twin_meta *fresh)
{
    meta_free(*slot);
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
    twin->desired_meta = meta_new("", now_us, 1, NULL, true);
    twin->reported_meta = meta_new("", now_us, 0, NULL, true);
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
    meta_free(twin->desired_meta);
    meta_free(twin->reported_meta);
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
    copy->desired_meta = meta_clone(twin->desired_meta);
    copy->reported_meta = meta_clone(twin->reported_meta);
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

th_result th_twin_patch_reported_if(struct th_twin *twin, const cJSON *patch,
                                    const int64_t *if_version, int64_t now_us, struct th_error *err)
{
    if (twin == NULL || patch == NULL)
        return bad_twin(err);
    th_result rc = validate(TH_SECTION_REPORTED, patch, false, false, err);
    if (rc != TH_OK)
        return rc;

    struct stamp st = {.us = now_us, .with_version = false};
    cJSON *section = NULL;
    struct th_twin_meta *meta = NULL;
    rc = prepare(TH_SECTION_REPORTED, twin->reported, twin->reported_meta, patch, false, &st,
                 &section, &meta, err);
    if (rc != TH_OK)
        return rc;
    /* Checked last: a request that would fail anyway gets that failure (RFC 7232, 5). */
    if (if_version != NULL && *if_version != twin->reported_version) {
        cJSON_Delete(section);
        meta_free(meta);
        return th_error_set(err, TH_ERR_PRECONDITION, CODE_PRECONDITION_FAILED,
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
    th_result rc = validate(TH_SECTION_DESIRED, patch, false, replace, err);
    if (rc != TH_OK) {
        cJSON_Delete(patch);
        return rc;
    }

    struct stamp st = {.us = now_us, .version = twin->desired_version + 1, .with_version = true};
    cJSON *section = NULL;
    struct th_twin_meta *meta = NULL;
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
        meta_free(meta);
        return rc;
    }
    commit(&twin->desired, section);
    commit_meta(&twin->desired_meta, meta);
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
    th_result rc = validate(TH_SECTION_TAGS, patch, false, replace, err);
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
static cJSON *section_view(const cJSON *section, const struct th_twin_meta *meta, bool with_version,
                           int64_t version)
{
    cJSON *view = cJSON_Duplicate(section, 1);
    if (view == NULL)
        return NULL;
    if (meta != NULL) {
        cJSON *m = meta_json(meta, section, with_version);
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
    cJSON *json = meta_json(meta, section, with_version);
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
    th_result rc = validate(kind, section, false, false, err);
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
    twin->desired_meta = meta_from_json(dmeta, "", true);
    twin->reported_meta = meta_from_json(rmeta, "", false);
    if (twin->desired_meta != NULL)
        meta_share_all(twin->desired_meta, desired);
    if (twin->reported_meta != NULL)
        meta_share_all(twin->reported_meta, reported);
    if (twin->tags == NULL || twin->desired == NULL || twin->reported == NULL ||
        twin->desired_meta == NULL || twin->reported_meta == NULL) {
        th_twin_free(twin);
        nomem(err);
        return NULL;
    }
    intern_names(twin->tags);
    intern_names(twin->desired);
    intern_names(twin->reported);
    return twin;
}
