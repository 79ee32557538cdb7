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
