/*
 * fuzz_state.c - libFuzzer target for saved device state (--state-dir
 * snapshots, th_device_state_json's format): the input is a state document
 * given to th_registry_restore_device. Contracts checked: a refused state
 * adds nothing; an accepted one saves to the same state and restores again
 * into an identical device (keys, twin versions, metadata, C2D queue,
 * modules).
 */
#include <stdbool.h>

#include "fuzz_common.h"
#include "json.h"
#include "registry.h"

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
    struct th_registry *reg = th_registry_new();
    FUZZ_CHECK(reg != NULL);
    if (th_registry_restore_device(reg, doc, &err) == TH_OK) {
        FUZZ_CHECK(th_registry_device_count(reg) == 1);
        struct th_identity *dev = th_registry_next_device(reg, NULL);
        FUZZ_CHECK(dev != NULL && !dev->connected);
        cJSON *s1 = th_device_state_json(dev);
        FUZZ_CHECK(s1 != NULL);
        /* Restoring the same device twice is refused; the first copy is kept. */
        FUZZ_CHECK(th_registry_restore_device(reg, s1, &err) == TH_ERR_EXISTS);

        struct th_registry *r2 = th_registry_new();
        FUZZ_CHECK(r2 != NULL);
        if (th_registry_restore_device(r2, s1, &err) != TH_OK) {
            char *text = cJSON_PrintUnformatted(s1);
            fprintf(stderr, "saved state does not restore: %s\n%s\n", err.message,
                    text ? text : "");
            abort();
        }
        cJSON *s2 = th_device_state_json(th_registry_next_device(r2, NULL));
        FUZZ_CHECK(s2 && cJSON_Compare(s1, s2, true));

        /* Views, export and new identities work on restored devices. */
        cJSON *ident = th_identity_to_json(dev), *twin = th_identity_twin_json(dev);
        FUZZ_CHECK(ident && twin);
        for (size_t i = 0; i < dev->module_count; i++) {
            cJSON *m = th_identity_twin_json(dev->modules[i]);
            FUZZ_CHECK(m != NULL);
            cJSON_Delete(m);
        }
        cJSON *exp = th_registry_export(reg, true);
        FUZZ_CHECK(exp != NULL);
        struct th_registry *r3 = th_registry_new();
        FUZZ_CHECK(r3 != NULL);
        if (th_registry_load(r3, exp, FUZZ_NOW_US, &err) != TH_OK) {
            fprintf(stderr, "export of a restored device does not load: %s\n", err.message);
            abort();
        }
        /* Drain the C2D queue. */
        struct th_c2d_msg *m;
        size_t n = 0;
        while ((m = th_identity_c2d_pop(dev)) != NULL) {
            th_c2d_msg_free(m);
            n++;
        }
        FUZZ_CHECK(dev->c2d_count == 0 && n <= 50);
        FUZZ_CHECK(th_registry_add_device(reg, "fuzz-new", NULL, NULL, true, FUZZ_NOW_US, NULL,
                                          &err) == TH_OK ||
                   strcmp(dev->device_id, "fuzz-new") == 0);
        cJSON_Delete(exp);
        cJSON_Delete(ident);
        cJSON_Delete(twin);
        cJSON_Delete(s1);
        cJSON_Delete(s2);
        th_registry_free(r2);
        th_registry_free(r3);
    } else {
        FUZZ_CHECK(th_registry_device_count(reg) == 0);
    }
    th_registry_free(reg);
    cJSON_Delete(doc);
    free(buf);
    return 0;
}
