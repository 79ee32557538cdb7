/*
 * twin_meta.c - the twin's $metadata (iothub-protocol.md 7.2), held as a
 * compact tree of stamps, the process-wide pool of shared property names,
 * and the merge (7.4) that updates a section and its metadata in one pass.
 * Used by twin.c and twin_state.c through twin_private.h.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "patch.h"
#include "twin_private.h"
#include "util.h"

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

/* Gives `c`'s own name its shared copy (kept as it is when interning fails). */
static void intern_own_name(cJSON *c)
{
    if (c->string != NULL && !(c->type & cJSON_StringIsConst)) {
        const char *shared = intern(c->string);
        if (shared != NULL) {
            cJSON_free(c->string);
            c->string = (char *)shared;
            c->type |= cJSON_StringIsConst;
        }
    }
}

/* Gives the members of `node` and of everything below it the shared copies of their names. */
void twin_intern_names(cJSON *node)
{
    for (cJSON *c = node->child; c != NULL; c = c->next) {
        intern_own_name(c);
        if (c->child != NULL)
            twin_intern_names(c);
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

/* A childless node; `time_text` non-NULL keeps that text as its time. NULL on OOM. */
struct th_twin_meta *twin_meta_new(const char *key, int64_t us, int64_t version,
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
void twin_meta_free(struct th_twin_meta *m)
{
    if (m == NULL)
        return;
    struct th_twin_meta *c = m->child;
    while (c != NULL) {
        struct th_twin_meta *next = c->next;
        twin_meta_free(c);
        c = next;
    }
    free(m);
}

/* Deep copy of `m` and its children (not its siblings); NULL on OOM. */
struct th_twin_meta *twin_meta_clone(const struct th_twin_meta *m)
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
        if ((*tail = twin_meta_clone(c)) == NULL) {
            twin_meta_free(copy);
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
        twin_meta_free(old);
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
        twin_meta_free(old);
    }
}

/* The us a stamp stores: INT64_MIN marks a time text; INT64_MIN + 1 is shown the same. */
static int64_t stamp_us(const struct twin_stamp *st)
{
    return st->us != META_TIME_TEXT ? st->us : META_TIME_TEXT + 1;
}

static void stamp_node(struct th_twin_meta *m, const struct twin_stamp *st)
{
    m->us = stamp_us(st);
    m->version = st->with_version ? (uint64_t)st->version : 0;
}

static bool stamp_is(const struct th_twin_meta *m, const struct twin_stamp *st)
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
        *tail = twin_meta_new(c->string != NULL ? c->string : "", m->us, (int64_t)m->version, text,
                              true);
        if (*tail == NULL) {
            while (kids != NULL) {
                struct th_twin_meta *next = kids->next;
                twin_meta_free(kids);
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
 * Whether an explicit node can be made shared again without changing anything:
 * its children are shared, carry its stamp and name the members of `value` in
 * order. meta_try_share does it; mu_try_share does it under an undo.
 */
static bool meta_can_share(const struct th_twin_meta *m, const cJSON *value)
{
    if (m->shared || m->us == META_TIME_TEXT)
        return false;
    const cJSON *v = cJSON_IsObject(value) ? value->child : NULL;
    for (const struct th_twin_meta *c = m->child; c != NULL; c = c->next, v = v->next)
        if (v == NULL || !c->shared || !same_stamp(c, m) || v->string == NULL ||
            strcmp(c->key, v->string) != 0 || cJSON_GetObjectItemCaseSensitive(value, c->key) != v)
            return false;
    return v == NULL;
}

static void meta_try_share(struct th_twin_meta *m, const cJSON *value)
{
    if (!meta_can_share(m, value))
        return;
    struct th_twin_meta *c = m->child;
    while (c != NULL) {
        struct th_twin_meta *next = c->next;
        twin_meta_free(c);
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
cJSON *twin_meta_json(const struct th_twin_meta *m, const cJSON *value, bool with_version)
{
    if (m->shared)
        return shared_json(m, value, with_version);
    cJSON *obj = stamp_json(m, with_version);
    for (const struct th_twin_meta *c = m->child; c != NULL && obj != NULL; c = c->next) {
        const cJSON *sub =
            cJSON_IsObject(value) ? cJSON_GetObjectItemCaseSensitive(value, c->key) : NULL;
        obj = add_or_drop(obj, c->key, twin_meta_json(c, sub, with_version));
    }
    return obj;
}

/* The last "$lastUpdated" text read and what th_time_parse made of it: a twin's nodes
 * mostly share one time (all written by one patch), so most need no parse. */
struct time_memo {
    const char *text; /* borrowed from the JSON being read; NULL before the first */
    int64_t us;
    bool parsed;
};
/*
 * twin_meta_json printed instead of built: the same members in the same
 * order, written to `b` (what th_json_print of twin_meta_json gives).
 */

/* The $lastUpdated text of `m`, formatted into `buf` unless it is a restored text; `raw`: a
 * th_time_format text, which holds nothing th_json_print would escape. */
static const char *stamp_text(const struct th_twin_meta *m, char buf[TH_TIME_BUF], bool *raw)
{
    *raw = m->us != META_TIME_TEXT;
    if (!*raw)
        return meta_time_text(m);
    th_time_format(m->us, buf);
    return buf;
}

/* {"$lastUpdated":"<text>"[,"$lastUpdatedVersion":v] (left open for the members). */
static void stamp_print(struct th_jsonw *b, const struct th_twin_meta *m, const char *text,
                        bool raw, bool with_version)
{
    th_jsonw_raw(b, "{\"" KEY_LAST_UPDATED "\":", sizeof KEY_LAST_UPDATED + 3);
    if (raw) {
        th_jsonw_raw(b, "\"", 1);
        th_jsonw_raw(b, text, strlen(text));
        th_jsonw_raw(b, "\"", 1);
    } else {
        th_jbuf_string(b, text);
    }
    if (with_version) {
        th_jsonw_raw(b, ",\"" KEY_LAST_UPDATED_VERSION "\":", sizeof KEY_LAST_UPDATED_VERSION + 3);
        th_jbuf_number(b, (double)m->version);
    }
}

/* A shared node's $metadata: one stamp (its text formatted once) for the value and all below. */
static void shared_print(struct th_jsonw *b, const struct th_twin_meta *m, const cJSON *value,
                         const char *text, bool raw, bool with_version)
{
    stamp_print(b, m, text, raw, with_version);
    for (const cJSON *c = cJSON_IsObject(value) ? value->child : NULL; c != NULL && !b->failed;
         c = c->next) {
        th_jsonw_raw(b, ",", 1);
        th_jbuf_key(b, c->string != NULL ? c->string : "");
        shared_print(b, m, c, text, raw, with_version);
    }
    th_jsonw_raw(b, "}", 1);
}

void twin_meta_print(struct th_jsonw *b, const struct th_twin_meta *m, const cJSON *value,
                     bool with_version)
{
    char buf[TH_TIME_BUF];
    bool raw;
    const char *text = stamp_text(m, buf, &raw);
    if (m->shared) {
        shared_print(b, m, value, text, raw, with_version);
        return;
    }
    stamp_print(b, m, text, raw, with_version);
    for (const struct th_twin_meta *c = m->child; c != NULL && !b->failed; c = c->next) {
        const cJSON *sub =
            cJSON_IsObject(value) ? cJSON_GetObjectItemCaseSensitive(value, c->key) : NULL;
        th_jsonw_raw(b, ",", 1);
        th_jbuf_key(b, c->key);
        twin_meta_print(b, c, sub, with_version);
    }
    th_jsonw_raw(b, "}", 1);
}

static struct th_twin_meta *meta_from_json(const cJSON *json, const char *key, bool desired,
                                           struct time_memo *memo)
{
    const cJSON *lu = cJSON_GetObjectItemCaseSensitive(json, KEY_LAST_UPDATED);
    int64_t us = 0, version = 0;
    const char *text = NULL;
    if (!memo->text || strcmp(memo->text, lu->valuestring) != 0) {
        memo->text = lu->valuestring;
        memo->parsed = th_time_parse(lu->valuestring, &memo->us);
    }
    if (memo->parsed)
        us = memo->us;
    else
        text = lu->valuestring;
    if (desired)
        version =
            (int64_t)cJSON_GetObjectItemCaseSensitive(json, KEY_LAST_UPDATED_VERSION)->valuedouble;
    struct th_twin_meta *m = twin_meta_new(key, us, version, text, false);
    if (m == NULL)
        return NULL;
    struct th_twin_meta **tail = &m->child;
    for (const cJSON *c = json->child; c != NULL; c = c->next) {
        const char *ck = c->string != NULL ? c->string : "";
        if (strcmp(ck, KEY_LAST_UPDATED) == 0 ||
            (desired && strcmp(ck, KEY_LAST_UPDATED_VERSION) == 0))
            continue;
        if ((*tail = meta_from_json(c, ck, desired, memo)) == NULL) {
            twin_meta_free(m);
            return NULL;
        }
        tail = &(*tail)->next;
    }
    return m;
}

/*
 * The compact form of a $metadata object that passed check_meta (so every
 * node is an object with a "$lastUpdated" string, and desired nodes have an
 * integral "$lastUpdatedVersion"); NULL on OOM. `key` names the node.
 */
struct th_twin_meta *twin_meta_from_json(const cJSON *json, const char *key, bool desired)
{
    struct time_memo memo = {0};
    return meta_from_json(json, key, desired, &memo);
}

/* Makes every node of `m` (describing `value`) shared where that changes nothing. */
void twin_meta_share_all(struct th_twin_meta *m, const cJSON *value)
{
    for (struct th_twin_meta *c = m->child; c != NULL; c = c->next)
        twin_meta_share_all(
            c, cJSON_IsObject(value) ? cJSON_GetObjectItemCaseSensitive(value, c->key) : NULL);
    meta_try_share(m, value);
}

/* ---- merge with $metadata (7.2, 7.4) ---- */

/* A new stamped metadata node for `key`; NULL on OOM. */
struct th_twin_meta *twin_meta_stamped(const char *key, const struct twin_stamp *st)
{
    return twin_meta_new(key, st->us, st->with_version ? st->version : 0, NULL, true);
}

/*
 * Merge `patch` into `target` (IoT Hub semantics: null deletes, object onto
 * object recurses, anything else replaces; arrays are values). `meta` is the
 * metadata node mirroring `target`, or NULL for tags. Every node the patch
 * names is stamped; deleted members lose their metadata. The patch must have
 * passed validation. On failure target/meta are partly merged: callers pass
 * copies.
 */
th_result twin_merge_object(cJSON *target, struct th_twin_meta *meta, const cJSON *patch,
                            const struct twin_stamp *st)
{
    th_result rc = TH_OK;
    if (meta != NULL) {
        if (meta->shared && stamp_is(meta, st)) {
            /* Everything below already carries this stamp, and what the patch writes gets
             * it too: only the values change. */
            meta = NULL;
        } else if (meta->shared && twin_fast_paths && twin_patch_rewrites_all(target, patch)) {
            /* Everything below will carry the new stamp: splitting the node into one per
             * member and joining them again (below) would end with this very node. */
            stamp_node(meta, st);
            meta = NULL;
        } else {
            if (meta_unshare(meta, target) != TH_OK)
                return TH_ERR_NOMEM;
            stamp_node(meta, st);
        }
    }
    if (meta == NULL) /* no metadata to keep (tags, or a shared stamp): the plain merge patch */
        return th_json_merge_patch(target, patch);

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
                rc = th_json_set_member(target, key, existing);
                if (rc == TH_OK && meta != NULL)
                    rc = meta_put(meta, twin_meta_stamped(key, st));
                if (rc != TH_OK)
                    break;
            }
            struct th_twin_meta *child_meta = NULL;
            if (meta != NULL) {
                struct th_twin_meta **l = meta_link(meta, key);
                if (l != NULL) {
                    child_meta = *l;
                } else {
                    child_meta = twin_meta_stamped(key, st);
                    rc = meta_put(meta, child_meta);
                    if (rc != TH_OK)
                        break;
                }
            }
            rc = twin_merge_object(existing, child_meta, m, st);
        } else {
            rc = th_json_set_member(target, key, cJSON_Duplicate(m, 1));
            if (rc == TH_OK && meta != NULL)
                rc = meta_put(meta, twin_meta_stamped(key, st));
        }
    }
    if (rc == TH_OK && meta != NULL)
        meta_try_share(meta, target);
    return rc;
}

/* Gives `item`'s name and the names below it their shared copies. */
void twin_intern_item(cJSON *item)
{
    intern_own_name(item);
    if (item->child != NULL)
        twin_intern_names(item);
}

/*
 * cJSON_Duplicate(m, 1) for a value replacing `existing`: a scalar takes the
 * existing member's shared name instead of a copy of its own (which
 * twin_undo_commit would otherwise intern and free); the same value, type
 * and flags. NULL on OOM.
 */
static cJSON *dup_named(const cJSON *m, const cJSON *existing)
{
    if (m->child != NULL || existing == NULL || !(existing->type & cJSON_StringIsConst) ||
        cJSON_IsRaw(m))
        return cJSON_Duplicate(m, 1);
    cJSON *item = cJSON_CreateNull();
    if (item == NULL)
        return NULL;
    item->type = m->type & ~(cJSON_IsReference | cJSON_StringIsConst);
    item->valueint = m->valueint;
    item->valuedouble = m->valuedouble;
    if (m->valuestring != NULL) {
        size_t n = strlen(m->valuestring) + 1;
        if ((item->valuestring = cJSON_malloc(n)) == NULL) {
            cJSON_Delete(item);
            return NULL;
        }
        memcpy(item->valuestring, m->valuestring, n);
    }
    item->string = existing->string;
    item->type |= cJSON_StringIsConst;
    return item;
}

/* ---- the metadata side of an in-place write (struct twin_meta_undo, twin_private.h) ---- */

static bool mu_room(struct twin_meta_undo *mu)
{
    if (mu->n < mu->cap)
        return true;
    size_t cap = mu->cap ? mu->cap * 2 : 8;
    struct twin_meta_op *ops = realloc(mu->ops, cap * sizeof *ops);
    if (ops == NULL)
        return false;
    mu->ops = ops;
    mu->cap = cap;
    return true;
}

static void free_chain(struct th_twin_meta *c)
{
    while (c != NULL) {
        struct th_twin_meta *next = c->next;
        twin_meta_free(c);
        c = next;
    }
}

/* meta_put on the live root, recorded; takes `node` (NULL is OOM). */
static th_result mu_put(struct twin_meta_undo *mu, struct th_twin_meta *node)
{
    if (node == NULL)
        return TH_ERR_NOMEM;
    if (!mu_room(mu)) {
        twin_meta_free(node);
        return TH_ERR_NOMEM;
    }
    struct th_twin_meta **l = meta_link(mu->root, node->key);
    if (l == NULL)
        for (l = &mu->root->child; *l != NULL; l = &(*l)->next)
            ;
    struct th_twin_meta *old = *l;
    node->next = old != NULL ? old->next : NULL;
    *l = node;
    mu->ops[mu->n++] = (struct twin_meta_op){.link = l, .old = old, .fresh = node};
    return TH_OK;
}

/* meta_delete on the live root, recorded. */
static th_result mu_delete(struct twin_meta_undo *mu, const char *key)
{
    struct th_twin_meta **l = meta_link(mu->root, key);
    if (l == NULL)
        return TH_OK;
    if (!mu_room(mu))
        return TH_ERR_NOMEM;
    struct th_twin_meta *old = *l;
    *l = old->next;
    mu->ops[mu->n++] = (struct twin_meta_op){.link = l, .old = old};
    return TH_OK;
}

/* meta_try_share on the live root, keeping the children it lets go until the commit. */
static void mu_try_share(struct twin_meta_undo *mu, const cJSON *value)
{
    struct th_twin_meta *m = mu->root;
    if (!meta_can_share(m, value))
        return;
    mu->dropped = m->child;
    mu->reshared = true;
    m->child = NULL;
    m->shared = true;
}

void twin_meta_undo_commit(struct twin_meta_undo *mu)
{
    if (mu == NULL || mu->root == NULL)
        return;
    for (size_t i = 0; i < mu->n; i++)
        twin_meta_free(mu->ops[i].old);
    if (mu->reshared)
        free_chain(mu->dropped);
    free(mu->ops);
    memset(mu, 0, sizeof *mu);
}

void twin_meta_undo_rollback(struct twin_meta_undo *mu)
{
    if (mu == NULL || mu->root == NULL)
        return;
    struct th_twin_meta *root = mu->root;
    if (mu->reshared) {
        root->child = mu->dropped;
        root->shared = false;
    }
    for (size_t i = mu->n; i-- > 0;) {
        *mu->ops[i].link = mu->ops[i].old;
        twin_meta_free(mu->ops[i].fresh);
    }
    if (mu->unshared)
        free_chain(root->child);
    root->child = mu->saved_child;
    root->us = mu->saved_us;
    root->version = mu->saved_version;
    root->shared = mu->saved_shared;
    free(mu->ops);
    memset(mu, 0, sizeof *mu);
}

/*
 * twin_merge_object's first level on the section itself, through the undo
 * `u` (twin_private.h): every member the patch names is replaced (by a copy
 * merged with the patch, for an object onto an object), appended or taken
 * out there, and the live metadata root `meta` changes exactly as
 * twin_merge_object changes it, recorded in twin_undo_meta(u) (a touched child's
 * metadata is copied before it is merged into). Below the first level
 * twin_merge_object runs on the copies. So the cost follows the patch, not
 * the section. The caller commits or rolls back `u`, which holds both.
 */
th_result twin_merge_in_place(struct twin_undo *u, struct th_twin_meta *meta, const cJSON *patch,
                              const struct twin_stamp *st)
{
    cJSON *target = twin_undo_section(u);
    struct twin_meta_undo *mu = NULL;
    th_result rc = TH_OK;
    if (meta != NULL) {
        mu = twin_undo_meta(u);
        mu->root = meta;
        mu->saved_child = meta->child;
        mu->saved_us = meta->us;
        mu->saved_version = meta->version;
        mu->saved_shared = meta->shared;
        if (meta->shared && stamp_is(meta, st)) {
            mu = NULL;
        } else if (meta->shared && twin_fast_paths && twin_patch_rewrites_all(target, patch)) {
            stamp_node(meta, st);
            mu = NULL;
        } else {
            if (meta_unshare(meta, target) != TH_OK)
                return TH_ERR_NOMEM;
            mu->unshared = mu->saved_shared;
            stamp_node(meta, st);
        }
    }
    for (const cJSON *m = patch->child; m != NULL && rc == TH_OK; m = m->next) {
        const char *key = m->string;
        cJSON *existing = cJSON_GetObjectItemCaseSensitive(target, key);

        if (cJSON_IsNull(m)) {
            if (existing != NULL)
                rc = twin_undo_remove(u, existing);
            if (rc == TH_OK && mu != NULL)
                rc = mu_delete(mu, key);
        } else if (cJSON_IsObject(m)) {
            bool was_object = cJSON_IsObject(existing);
            cJSON *fresh = was_object ? cJSON_Duplicate(existing, 1) : cJSON_CreateObject();
            rc = twin_undo_put(u, key, existing, fresh);
            if (rc != TH_OK)
                break;
            struct th_twin_meta *child_meta = NULL;
            if (mu != NULL) {
                struct th_twin_meta **l = was_object ? meta_link(meta, key) : NULL;
                /* The child's metadata is merged into a copy put in its place (a new
                 * stamped node when the member was not an object). */
                child_meta = l != NULL ? twin_meta_clone(*l) : twin_meta_stamped(key, st);
                rc = mu_put(mu, child_meta);
                if (rc != TH_OK)
                    break;
            }
            rc = twin_merge_object(fresh, child_meta, m, st);
        } else {
            rc = twin_undo_put(u, key, existing, dup_named(m, existing));
            if (rc == TH_OK && mu != NULL)
                rc = mu_put(mu, twin_meta_stamped(key, st));
        }
    }
    if (rc == TH_OK && mu != NULL)
        mu_try_share(mu, target);
    return rc;
}
