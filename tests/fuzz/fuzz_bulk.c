/*
 * fuzz_bulk.c - libFuzzer target for the bulk registry operation
 * (core/bulk.h, POST /devices): the input is the request body, an array of
 * export-import identities, carried out on a registry that already holds
 * two devices (one with a module). Contracts checked: a whole-request
 * refusal changes nothing; otherwise the result is the hub's shape
 * (isSuccessful exactly when errors is empty, every error names a device,
 * a code and a text); the hooks hear of every change; the registry exports
 * to a document that loads again and every twin saves and loads again.
 */
#include <stdbool.h>

#include "bulk.h"
#include "fuzz_common.h"
#include "json.h"
#include "registry.h"

static int changes, deletes;

static void on_before_delete(void *arg, struct th_identity *id)
{
    (void)arg;
    FUZZ_CHECK(id != NULL);
    deletes++;
}

static void on_changed(void *arg, const struct th_bulk_change *ch)
{
    (void)arg;
    FUZZ_CHECK(ch->device_id != NULL);
    FUZZ_CHECK(ch->kind == TH_BULK_DELETED ? ch->id == NULL : ch->id != NULL);
    changes++;
}

static cJSON *export_text(const struct th_registry *reg)
{
    cJSON *doc = th_registry_export(reg, true);
    FUZZ_CHECK(doc != NULL);
    return doc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = fuzz_bytes(data, size);
    struct th_error err = {0};
    cJSON *doc = NULL;
    if (th_json_parse(buf, size, 256 * 1024, 64, &doc, &err) != TH_OK) {
        free(buf);
        return 0;
    }
    free(buf);
    struct th_registry *reg = th_registry_new();
    FUZZ_CHECK(reg != NULL);
    FUZZ_CHECK(th_registry_add_device(reg, "d1", NULL, NULL, true, FUZZ_NOW_US, NULL, &err) ==
               TH_OK);
    FUZZ_CHECK(th_registry_add_device(reg, "d2", NULL, NULL, true, FUZZ_NOW_US, NULL, &err) ==
               TH_OK);
    FUZZ_CHECK(th_registry_add_module(reg, "d1", "m", NULL, NULL, FUZZ_NOW_US, NULL, &err) ==
               TH_OK);
    cJSON *before = export_text(reg);
    struct th_bulk_hooks hooks = {NULL, on_before_delete, on_changed};
    cJSON *result = NULL;
    changes = deletes = 0;
    if (th_registry_bulk(reg, doc, FUZZ_NOW_US, &hooks, &result, &err) != TH_OK) {
        FUZZ_CHECK(result == NULL && err.status >= 400);
        cJSON *after = export_text(reg);
        FUZZ_CHECK(cJSON_Compare(before, after, true));
        FUZZ_CHECK(changes == 0);
        cJSON_Delete(after);
    } else {
        const cJSON *errors = cJSON_GetObjectItemCaseSensitive(result, "errors");
        FUZZ_CHECK(cJSON_IsArray(errors));
        FUZZ_CHECK(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(result, "warnings")));
        FUZZ_CHECK(th_json_bool(result, "isSuccessful", false) ==
                   (cJSON_GetArraySize(errors) == 0));
        FUZZ_CHECK(changes + cJSON_GetArraySize(errors) == cJSON_GetArraySize(doc));
        const cJSON *e;
        cJSON_ArrayForEach(e, errors)
        {
            FUZZ_CHECK(th_json_string(e, "deviceId", NULL) != NULL);
            FUZZ_CHECK(th_json_string(e, "errorCode", NULL) != NULL);
            FUZZ_CHECK(th_json_string(e, "errorStatus", NULL) != NULL);
        }
        char *text = th_json_print(result);
        FUZZ_CHECK(text != NULL);
        free(text);
        /* What the registry holds now exports and loads again. */
        cJSON *exp = export_text(reg);
        struct th_registry *copy = th_registry_new();
        FUZZ_CHECK(copy != NULL);
        if (th_registry_load(copy, exp, FUZZ_NOW_US, &err) != TH_OK) {
            fprintf(stderr, "export does not load: %s\n", err.message);
            abort();
        }
        th_registry_free(copy);
        cJSON_Delete(exp);
        for (struct th_identity *d = th_registry_next_device(reg, NULL); d;
             d = th_registry_next_device(reg, d)) {
            cJSON *st = th_device_state_json(d);
            FUZZ_CHECK(st != NULL);
            struct th_registry *r2 = th_registry_new();
            FUZZ_CHECK(r2 && th_registry_restore_device(r2, st, &err) == TH_OK);
            th_registry_free(r2);
            cJSON_Delete(st);
        }
    }
    cJSON_Delete(result);
    cJSON_Delete(before);
    th_registry_free(reg);
    cJSON_Delete(doc);
    return 0;
}
