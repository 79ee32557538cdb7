/*
 * fuzz_state.c - libFuzzer target for saved device state (--state-dir
 * snapshots, th_device_state_json's format): the input is a state document
 * given to th_registry_restore_device. Contracts checked: a refused state
 * adds nothing; an accepted one saves to the same state and restores again
 * into an identical device (keys, twin versions, metadata, C2D queue,
 * modules). The two steps a state dir is loaded with (th_device_from_state,
 * th_registry_add_restored) decide as th_registry_restore_device does and
 * build the same device; th_time_parse (the $metadata times) decides as the
 * sscanf reading it replaced, on the input's first bytes as a time text.
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "fuzz_common.h"
#include "json.h"
#include "registry.h"
#include "util.h"

/* The sscanf reading th_time_parse replaced (twin_meta.c before), the reference. */
static bool ref_time_parse(const char *text, int64_t *out)
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
    int64_t yy = y - (mo <= 2);
    int64_t era = (yy >= 0 ? yy : yy - 399) / 400;
    int64_t yoe = yy - era * 400;
    int64_t doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t days = era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
    int64_t us = (days * 86400 + h * 3600 + mi * 60 + s) * 1000000 + (int64_t)(frac / 10);
    char back[TH_TIME_BUF];
    th_time_format(us, back);
    if (strcmp(back, text) != 0)
        return false;
    *out = us;
    return true;
}

static void check_time_parse(const char *buf, size_t size)
{
    char text[40];
    size_t n = size < sizeof text - 1 ? size : sizeof text - 1;
    memcpy(text, buf, n);
    text[n] = '\0';
    int64_t a = -7, b = -7;
    FUZZ_CHECK(th_time_parse(text, &a) == ref_time_parse(text, &b) && a == b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = fuzz_bytes(data, size);
    struct th_error err = {0};
    cJSON *doc = NULL;
    check_time_parse(buf, size);
    if (th_json_parse(buf, size, 64 * 1024 * 1024, 64, &doc, &err) != TH_OK) {
        free(buf);
        return 0;
    }
    struct th_registry *reg = th_registry_new();
    FUZZ_CHECK(reg != NULL);
    /* The two steps of a state dir's load, into a registry of their own. */
    struct th_identity *built = NULL;
    uint64_t max_gen = 0;
    cJSON *copy = cJSON_Duplicate(doc, true); /* th_device_from_state takes the twins out */
    FUZZ_CHECK(copy != NULL);
    th_result two = th_device_from_state(copy, &built, &max_gen, &err);
    cJSON_Delete(copy);
    struct th_registry *r4 = th_registry_new();
    FUZZ_CHECK(r4 != NULL);
    if (two == TH_OK) {
        FUZZ_CHECK(built != NULL);
        FUZZ_CHECK(th_registry_add_restored(r4, built, max_gen, &err) == TH_OK);
    }
    if (th_registry_restore_device(reg, doc, &err) == TH_OK) {
        FUZZ_CHECK(two == TH_OK);
        cJSON *a = th_device_state_json(th_registry_next_device(reg, NULL));
        cJSON *b = th_device_state_json(th_registry_next_device(r4, NULL));
        FUZZ_CHECK(a && b && cJSON_Compare(a, b, true));
        cJSON_Delete(a);
        cJSON_Delete(b);
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
        FUZZ_CHECK(two != TH_OK && th_registry_device_count(r4) == 0);
    }
    th_registry_free(r4);
    th_registry_free(reg);
    cJSON_Delete(doc);
    free(buf);
    return 0;
}
