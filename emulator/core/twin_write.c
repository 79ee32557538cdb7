/*
 * twin_write.c - the shortcuts of the service-side twin write
 * (th_twin_service_write, twin.c; docs/performance.md, fan-out "Third
 * pass"): each decides, from the request and the twin, that a cheaper way
 * gives exactly what the general one gives, and otherwise leaves the general
 * way to run:
 * - a request holding no $version/$metadata member anywhere is used as it is
 *   instead of being copied and stripped of them (twin_holds_readonly);
 * - the desired notification is printed straight from the patch (or the new
 *   section) plus "$version", instead of built as a tree, printed and freed
 *   (twin_notification_text);
 * - a patch that rewrites every member of a shared metadata node stamps that
 *   node instead of splitting it into one node per member and joining them
 *   again (twin_patch_rewrites_all, used by twin_merge_object).
 * tests/unit/test_twin_write.c runs random writes with and without them
 * (twin_fast_paths) and compares everything the twin shows and sends.
 */
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "jsonw.h"
#include "twin_private.h"

bool twin_fast_paths = true;

static bool is_readonly_key(const char *key)
{
    return key[0] == '$' && (strcmp(key, KEY_VERSION) == 0 || strcmp(key, KEY_METADATA) == 0);
}

/*
 * Whether th_twin_strip_readonly would remove anything from `doc`: an object
 * member named $version or $metadata at any depth, inside arrays too (the
 * strip looks at the name only, whatever json.h's flags say).
 */
bool twin_holds_readonly(const cJSON *doc)
{
    bool obj = cJSON_IsObject(doc);
    if (!obj && !cJSON_IsArray(doc))
        return false;
    for (const cJSON *c = doc->child; c != NULL; c = c->next) {
        if (obj && c->string != NULL && is_readonly_key(c->string))
            return true;
        if (c->child != NULL && twin_holds_readonly(c))
            return true;
    }
    return false;
}

/*
 * The text th_json_print gives for a copy of the object `members` with
 * "$version": version appended (what notification_of in twin.c builds):
 * the members printed as th_json_print prints them, then the version.
 * Caller frees with free(); NULL on OOM. *len (may be NULL) gets its length.
 */
char *twin_notification_text(const cJSON *members, int64_t version, size_t *len)
{
    struct th_jsonw b = {0};
    if (!th_jsonw_reserve(&b, 255))
        return NULL;
    th_jsonw_raw(&b, "{", 1);
    for (const cJSON *c = cJSON_IsObject(members) ? members->child : NULL; c != NULL && !b.failed;
         c = c->next) {
        th_jbuf_key(&b, c->string);
        th_jbuf_value(&b, c);
        th_jsonw_raw(&b, ",", 1);
    }
    th_jsonw_raw(&b, "\"" KEY_VERSION "\":", sizeof KEY_VERSION + 2);
    th_jbuf_number(&b, (double)version);
    th_jsonw_raw(&b, "}", 1);
    return th_jsonw_finish(&b, len);
}

/* More patch members than this and the metadata merge takes the general way (the check is
 * quadratic). */
#define REWRITE_CHECK_MAX 64

/*
 * True when merging `patch` into `target` leaves no member of `target` that
 * the patch did not write, so that every member afterwards carries the
 * patch's stamp: each member of `target` is named by the patch, never by an
 * object that would merge into it (an object onto an object keeps the
 * members it does not name), and `target` names no member twice (the
 * metadata of a duplicate is not rejoined). Conservative: false whenever in
 * doubt, and then twin_merge_object splits and rejoins the node as before.
 */
bool twin_patch_rewrites_all(const cJSON *target, const cJSON *patch)
{
    size_t n = 0, m = 0;
    for (const cJSON *q = patch->child; q != NULL; q = q->next, m++)
        if (q->string == NULL || m >= REWRITE_CHECK_MAX)
            return false;
    for (const cJSON *c = target->child; c != NULL; c = c->next, n++)
        if (n >= m || c->string == NULL)
            return false;
    for (const cJSON *c = target->child; c != NULL; c = c->next) {
        if (cJSON_GetObjectItemCaseSensitive(target, c->string) != c)
            return false;
        bool named = false;
        for (const cJSON *q = patch->child; q != NULL; q = q->next) {
            if (strcmp(q->string, c->string) != 0)
                continue;
            if (cJSON_IsObject(q) && cJSON_IsObject(c))
                return false;
            named = true;
        }
        if (!named)
            return false;
    }
    return true;
}

/* ---- writing a section in place, with an undo (twin_undo_*) ---- */

/*
 * One change to the members of a section, as it can be undone: `inserted`
 * took the place of `removed` (a replacement), or was appended (`removed`
 * NULL), or `removed` was taken out (`inserted` NULL), `next` then being the
 * member that followed it. Undone in reverse order, each finds the list as
 * it left it, so a removal goes back before its `next`, in its old place.
 */
struct undo_op {
    cJSON *inserted;
    cJSON *removed;
    cJSON *next;
};

struct twin_undo {
    cJSON *section;
    struct twin_meta_undo meta; /* the metadata's changes, committed and undone with these */
    struct undo_op *ops;
    size_t n, cap;
    struct undo_op first[8]; /* most patches name a few members */
};

struct twin_undo *twin_undo_new(cJSON *section)
{
    struct twin_undo *u = calloc(1, sizeof *u);
    if (u == NULL)
        return NULL;
    u->section = section;
    u->ops = u->first;
    u->cap = sizeof u->first / sizeof u->first[0];
    return u;
}

cJSON *twin_undo_section(const struct twin_undo *u)
{
    return u->section;
}

struct twin_meta_undo *twin_undo_meta(struct twin_undo *u)
{
    return &u->meta;
}

static bool undo_room(struct twin_undo *u)
{
    if (u->n < u->cap)
        return true;
    size_t cap = u->cap * 2;
    struct undo_op *ops = malloc(cap * sizeof *ops);
    if (ops == NULL)
        return false;
    memcpy(ops, u->ops, u->n * sizeof *ops);
    if (u->ops != u->first)
        free(u->ops);
    u->ops = ops;
    u->cap = cap;
    return true;
}

/* `fresh` takes `old`'s place in `parent` (old is unlinked, not freed). */
static void swap_member(cJSON *parent, cJSON *old, cJSON *fresh)
{
    fresh->next = old->next;
    fresh->prev = old->prev;
    if (parent->child == old) {
        parent->child = fresh;
        if (old->prev == old) /* the only member: the first's prev is the last, itself */
            fresh->prev = fresh;
    } else {
        old->prev->next = fresh;
    }
    if (old->next != NULL)
        old->next->prev = fresh;
    else if (parent->child != fresh)
        parent->child->prev = fresh; /* the first's prev names the last */
    old->next = old->prev = NULL;
}

/* Links `item` into `parent` before `next` (at the end when NULL). */
static void insert_before(cJSON *parent, cJSON *item, cJSON *next)
{
    if (next == NULL) {
        cJSON *first = parent->child;
        item->next = NULL;
        if (first == NULL) {
            parent->child = item;
            item->prev = item;
        } else {
            item->prev = first->prev;
            first->prev->next = item;
            first->prev = item;
        }
        return;
    }
    item->next = next;
    item->prev = next->prev;
    if (parent->child == next)
        parent->child = item;
    else
        next->prev->next = item;
    next->prev = item;
}

/* Unlinks `item` from `parent`. */
static void unlink_member(cJSON *parent, cJSON *item)
{
    (void)cJSON_DetachItemViaPointer(parent, item);
}

th_result twin_undo_put(struct twin_undo *u, const char *key, cJSON *existing, cJSON *fresh)
{
    if (fresh == NULL)
        return TH_ERR_NOMEM;
    if (!undo_room(u)) {
        cJSON_Delete(fresh);
        return TH_ERR_NOMEM;
    }
    if (fresh->string == NULL || strcmp(fresh->string, key) != 0) {
        size_t n = strlen(key) + 1;
        char *name = cJSON_malloc(n);
        if (name == NULL) {
            cJSON_Delete(fresh);
            return TH_ERR_NOMEM;
        }
        memcpy(name, key, n);
        if (fresh->string != NULL && !(fresh->type & cJSON_StringIsConst))
            cJSON_free(fresh->string);
        fresh->string = name;
        fresh->type &= ~cJSON_StringIsConst;
    }
    if (existing != NULL)
        swap_member(u->section, existing, fresh);
    else
        insert_before(u->section, fresh, NULL);
    u->ops[u->n++] = (struct undo_op){.inserted = fresh, .removed = existing};
    return TH_OK;
}

th_result twin_undo_remove(struct twin_undo *u, cJSON *existing)
{
    if (!undo_room(u))
        return TH_ERR_NOMEM;
    cJSON *next = existing->next;
    unlink_member(u->section, existing);
    u->ops[u->n++] = (struct undo_op){.removed = existing, .next = next};
    return TH_OK;
}

static void undo_free(struct twin_undo *u)
{
    if (u->ops != u->first)
        free(u->ops);
    free(u);
}

void twin_undo_commit(struct twin_undo *u)
{
    if (u == NULL)
        return;
    for (size_t i = 0; i < u->n; i++)
        if (u->ops[i].inserted != NULL)
            twin_intern_item(u->ops[i].inserted);
    for (size_t i = 0; i < u->n; i++)
        cJSON_Delete(u->ops[i].removed);
    twin_meta_undo_commit(&u->meta);
    undo_free(u);
}

void twin_undo_rollback(struct twin_undo *u)
{
    if (u == NULL)
        return;
    for (size_t i = u->n; i-- > 0;) {
        struct undo_op *op = &u->ops[i];
        if (op->inserted != NULL && op->removed != NULL)
            swap_member(u->section, op->inserted, op->removed);
        else if (op->inserted != NULL)
            unlink_member(u->section, op->inserted);
        else
            insert_before(u->section, op->removed, op->next);
        cJSON_Delete(op->inserted);
    }
    twin_meta_undo_rollback(&u->meta);
    undo_free(u);
}
