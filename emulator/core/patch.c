/*
 * patch.c - IoT Hub's merge patch on plain JSON (patch.h has the rules).
 */
#include <string.h>

#include "patch.h"

th_result th_json_set_member(cJSON *obj, const char *key, cJSON *item)
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
    if (!cJSON_ReplaceItemViaPointer(obj, old, item)) {
        cJSON_Delete(item);
        return TH_ERR_INVAL; /* only for NULL arguments, which callers never pass */
    }
    return TH_OK;
}

/* The recursion of th_json_merge_patch; both are objects. Depth is the patch's. */
static th_result merge(cJSON *target, const cJSON *patch)
{
    th_result rc = TH_OK;
    for (const cJSON *m = patch->child; m != NULL && rc == TH_OK; m = m->next) {
        const char *key = m->string;
        cJSON *existing = cJSON_GetObjectItemCaseSensitive(target, key);
        if (cJSON_IsNull(m)) {
            cJSON_DeleteItemFromObjectCaseSensitive(target, key);
        } else if (cJSON_IsObject(m)) {
            if (!cJSON_IsObject(existing)) {
                existing = cJSON_CreateObject();
                rc = th_json_set_member(target, key, existing);
            }
            if (rc == TH_OK)
                rc = merge(existing, m);
        } else {
            rc = th_json_set_member(target, key, cJSON_Duplicate(m, 1));
        }
    }
    return rc;
}

th_result th_json_merge_patch(cJSON *target, const cJSON *patch)
{
    if (!cJSON_IsObject(target) || !cJSON_IsObject(patch))
        return TH_ERR_INVAL;
    return merge(target, patch);
}
