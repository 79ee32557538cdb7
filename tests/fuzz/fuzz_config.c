/*
 * fuzz_config.c - libFuzzer target for automatic configurations
 * (core/config.h): the input is a configuration document (the REST body of
 * PUT /configurations/{id}), also given to testQueries. On a small fleet
 * (two devices with tags, a module, desired properties of their own) it is
 * created, applied, updated with itself and deleted. Contracts checked: a
 * refused document leaves the store empty; applying twice writes nothing
 * the second time; every twin stays a valid, saveable twin; the view
 * builds; the state round trip gives the same view; after the delete no twin
 * holds a status.
 */
#include <stdbool.h>

#include "config.h"
#include "fuzz_common.h"
#include "json.h"
#include "registry.h"

static int writes;

static void on_written(void *arg, struct th_identity *id, const struct th_twin_write_result *res)
{
    (void)arg;
    (void)id;
    FUZZ_CHECK(res->desired_written && res->notification);
    writes++;
}

static const struct th_config_hooks hooks = {NULL, on_written, NULL};

static cJSON *doc_of(const char *text)
{
    cJSON *doc = NULL;
    struct th_error err = {0};
    FUZZ_CHECK(th_json_parse(text, strlen(text), 4096, 16, &doc, &err) == TH_OK);
    return doc;
}

static struct th_registry *fleet(void)
{
    struct th_registry *reg = th_registry_new();
    struct th_identity *d1 = NULL, *d2 = NULL;
    struct th_error err = {0};
    FUZZ_CHECK(reg != NULL);
    FUZZ_CHECK(th_registry_add_device(reg, "d1", NULL, NULL, true, FUZZ_NOW_US, &d1, &err) ==
               TH_OK);
    FUZZ_CHECK(th_registry_add_device(reg, "d2", NULL, NULL, true, FUZZ_NOW_US, &d2, &err) ==
               TH_OK);
    FUZZ_CHECK(th_registry_add_module(reg, "d1", "m", NULL, NULL, FUZZ_NOW_US, NULL, &err) ==
               TH_OK);
    cJSON *t = doc_of("{\"env\":\"prod\",\"n\":1}"), *d = doc_of("{\"a\":{\"b\":1},\"c\":\"x\"}");
    FUZZ_CHECK(th_twin_patch_tags(d1->twin, t, &err) == TH_OK);
    FUZZ_CHECK(th_twin_patch_desired(d1->twin, d, FUZZ_NOW_US, NULL, &err) == TH_OK);
    FUZZ_CHECK(th_twin_patch_desired(d2->twin, d, FUZZ_NOW_US, NULL, &err) == TH_OK);
    cJSON_Delete(t);
    cJSON_Delete(d);
    return reg;
}

/* Every twin saves and loads again (the content written obeys the twin rules and limits). */
static void check_twins(const struct th_registry *reg)
{
    for (struct th_identity *d = th_registry_next_device(reg, NULL); d;
         d = th_registry_next_device(reg, d)) {
        for (size_t i = 0; i <= d->module_count; i++) {
            const struct th_identity *id = i == 0 ? d : d->modules[i - 1];
            cJSON *st = th_twin_state_json(id->twin);
            struct th_error err = {0};
            struct th_twin *back = st ? th_twin_from_state(st, &err) : NULL;
            if (!back)
                fprintf(stderr, "twin does not load again: %s\n", err.message);
            FUZZ_CHECK(back != NULL);
            th_twin_free(back);
            cJSON_Delete(st);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = fuzz_bytes(data, size);
    struct th_error err = {0};
    cJSON *doc = NULL;
    if (th_json_parse(buf, size, 64 * 1024, 32, &doc, &err) != TH_OK) {
        free(buf);
        return 0;
    }
    free(buf);
    cJSON *tq = NULL;
    if (th_config_test_queries(doc, &tq, &err) == TH_OK)
        FUZZ_CHECK(cJSON_IsObject(tq));
    cJSON_Delete(tq);

    struct th_registry *reg = fleet();
    struct th_config_store *s = th_config_store_new();
    FUZZ_CHECK(s != NULL);
    const char *id = th_json_string(doc, "id", "f");
    if (th_config_create(s, id, doc, FUZZ_NOW_US, &err) != TH_OK) {
        FUZZ_CHECK(th_config_count(s) == 0);
    } else {
        writes = 0;
        FUZZ_CHECK(th_config_apply(s, reg, FUZZ_NOW_US, &hooks, &err) == TH_OK);
        int first = writes;
        FUZZ_CHECK(th_config_apply(s, reg, FUZZ_NOW_US, &hooks, &err) == TH_OK);
        FUZZ_CHECK(writes == first);
        check_twins(reg);
        cJSON *view = NULL;
        FUZZ_CHECK(th_config_get_json(s, reg, id, &view, &err) == TH_OK);
        cJSON *state = th_config_store_json(s);
        FUZZ_CHECK(state != NULL);
        struct th_config_store *t = th_config_store_new();
        FUZZ_CHECK(t && th_config_store_restore(t, state, &err) == TH_OK);
        cJSON *again = NULL;
        FUZZ_CHECK(th_config_get_json(t, reg, id, &again, &err) == TH_OK);
        FUZZ_CHECK(cJSON_Compare(view, again, true));
        cJSON_Delete(again);
        cJSON_Delete(state);
        th_config_store_free(t);
        /* The update with the view as read (what the SDKs send back) is accepted. */
        FUZZ_CHECK(th_config_update(s, id, view, "*", FUZZ_NOW_US + 1, &err) == TH_OK);
        cJSON_Delete(view);
        FUZZ_CHECK(th_config_apply(s, reg, FUZZ_NOW_US, &hooks, &err) == TH_OK);
        FUZZ_CHECK(th_config_delete(s, reg, id, NULL, FUZZ_NOW_US, &hooks, &err) == TH_OK);
        for (struct th_identity *d = th_registry_next_device(reg, NULL); d;
             d = th_registry_next_device(reg, d)) {
            FUZZ_CHECK(d->configurations == NULL);
            for (size_t i = 0; i < d->module_count; i++)
                FUZZ_CHECK(d->modules[i]->configurations == NULL);
        }
        check_twins(reg);
    }
    th_config_store_free(s);
    th_registry_free(reg);
    cJSON_Delete(doc);
    return 0;
}
