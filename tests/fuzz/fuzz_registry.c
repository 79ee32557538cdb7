/*
 * fuzz_registry.c - libFuzzer target for registry documents
 * (docs/registry.md): the input is a registry file or an importRegistry
 * body. It is parsed with the plugin's limits and given to
 * th_registry_load on an empty registry and to th_registry_import (skip and
 * overwrite) on a registry that already has identities. Contracts checked:
 * a refused document changes nothing; an accepted one exports to a document
 * that loads again into the same export; re-importing creates nothing.
 */
#include <stdbool.h>

#include "fuzz_common.h"
#include "json.h"
#include "registry.h"

static cJSON *export_of(const struct th_registry *reg)
{
    cJSON *doc = th_registry_export(reg, true);
    FUZZ_CHECK(doc != NULL);
    return doc;
}

/* Export, load the export into an empty registry, export again: both exports are equal. */
static void check_export_roundtrip(const struct th_registry *reg)
{
    struct th_error err = {0};
    cJSON *a = export_of(reg);
    struct th_registry *copy = th_registry_new();
    FUZZ_CHECK(copy != NULL);
    if (th_registry_load(copy, a, FUZZ_NOW_US, &err) != TH_OK) {
        char *text = cJSON_PrintUnformatted(a);
        fprintf(stderr, "export does not load: %s\n%s\n", err.message, text ? text : "");
        abort();
    }
    cJSON *b = export_of(copy);
    FUZZ_CHECK(cJSON_Compare(a, b, true));
    FUZZ_CHECK(th_registry_device_count(copy) == th_registry_device_count(reg));
    FUZZ_CHECK(th_registry_module_total(copy) == th_registry_module_total(reg));
    /* Every identity's service views build. */
    for (struct th_identity *d = th_registry_next_device(copy, NULL); d;
         d = th_registry_next_device(copy, d)) {
        cJSON *j = th_identity_to_json(d), *t = th_identity_twin_json(d);
        FUZZ_CHECK(j && t);
        cJSON_Delete(j);
        cJSON_Delete(t);
    }
    cJSON_Delete(a);
    cJSON_Delete(b);
    th_registry_free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = fuzz_bytes(data, size);
    struct th_error err = {0};
    cJSON *doc = NULL;
    if (th_json_parse(buf, size, 64 * 1024 * 1024, 64, &doc, &err) != TH_OK) {
        free(buf);
        return 0;
    }

    /* th_registry_load on an empty registry (the --registry file). */
    struct th_registry *reg = th_registry_new();
    FUZZ_CHECK(reg != NULL);
    if (th_registry_load(reg, doc, FUZZ_NOW_US, &err) == TH_OK) {
        check_export_roundtrip(reg);
    } else {
        FUZZ_CHECK(err.message[0] != '\0');
        FUZZ_CHECK(th_registry_device_count(reg) == 0);
        FUZZ_CHECK(th_registry_next_device(reg, NULL) == NULL);
    }
    th_registry_free(reg);

    /* th_registry_import over existing identities (importRegistry, a restart with --state-dir). */
    for (int overwrite = 0; overwrite < 2; overwrite++) {
        reg = th_registry_new();
        FUZZ_CHECK(reg != NULL);
        FUZZ_CHECK(th_registry_add_dev_identities(reg, FUZZ_NOW_US) == TH_OK);
        cJSON *before = export_of(reg);
        size_t created = 99, updated = 99, skipped = 99;
        if (th_registry_import(reg, doc, overwrite, FUZZ_NOW_US, &created, &updated, &skipped,
                               &err) == TH_OK) {
            check_export_roundtrip(reg);
            size_t c2 = 99, u2 = 99, s2 = 99;
            FUZZ_CHECK(th_registry_import(reg, doc, false, FUZZ_NOW_US, &c2, &u2, &s2, &err) ==
                       TH_OK);
            FUZZ_CHECK(c2 == 0 && u2 == 0);
        } else {
            cJSON *after = export_of(reg);
            FUZZ_CHECK(cJSON_Compare(before, after, true));
            cJSON_Delete(after);
            FUZZ_CHECK(created == 99 && updated == 99 && skipped == 99);
        }
        cJSON_Delete(before);
        th_registry_free(reg);
    }

    /* The "policies" member alone, as the policy snapshot restores it. */
    const cJSON *pol = cJSON_GetObjectItemCaseSensitive(doc, "policies");
    if (cJSON_IsArray(pol)) {
        reg = th_registry_new();
        FUZZ_CHECK(reg != NULL);
        if (th_registry_restore_policies(reg, pol, &err) == TH_OK) {
            cJSON *p = th_registry_policies_json(reg);
            FUZZ_CHECK(p != NULL);
            struct th_registry *r2 = th_registry_new();
            FUZZ_CHECK(r2 && th_registry_restore_policies(r2, p, &err) == TH_OK);
            cJSON *p2 = th_registry_policies_json(r2);
            FUZZ_CHECK(p2 && cJSON_Compare(p, p2, true));
            cJSON_Delete(p);
            cJSON_Delete(p2);
            th_registry_free(r2);
        }
        th_registry_free(reg);
    }

    cJSON_Delete(doc);
    free(buf);
    return 0;
}
