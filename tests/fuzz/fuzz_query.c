/*
 * fuzz_query.c - libFuzzer target for the twin query language: the input is
 * the query text (as the control API's `query` command receives it), parsed
 * with th_query_parse and, when valid, run with th_query_run over the device
 * or module twins of a small registry; and run again with th_registry_query
 * (query documents, paged), which must give the same bytes as th_query_run
 * over the full twin documents, page by page.
 */
#include <stdbool.h>
#include <string.h>

#include "fuzz_common.h"
#include "query.h"
#include "registry.h"
#include "registry_query.h"

static const char registry_doc[] =
    "{\"devices\":["
    "{\"deviceId\":\"d1\",\"tags\":{\"location\":{\"region\":\"US\",\"plant\":\"Redmond43\"},"
    "\"group\":{\"name\":\"g1\"},\"Mode\":\"Auto\",\"mode\":\"manual\",\"list\":[1,\"a\",true,[2]]}"
    ","
    "\"properties\":{\"desired\":{\"telemetryConfig\":{\"sendFrequency\":\"5m\"}},"
    "\"reported\":{\"telemetryConfig\":{\"sendFrequencyInSecs\":60,\"status\":\"Success\"},"
    "\"connectivity\":\"wired\",\"temperature\":20.5,\"firmware\":\"1.2.3\",\"sensors\":[\"t\","
    "\"h\"]}},"
    "\"modules\":[{\"moduleId\":\"$edgeHub\"},{\"moduleId\":\"sensor\",\"tags\":{\"kind\":"
    "\"thermo\"}}]},"
    "{\"deviceId\":\"d2\",\"status\":\"disabled\",\"tags\":{\"location\":{\"region\":\"EU\"}},"
    "\"properties\":{\"reported\":{\"connectivity\":null,\"temperature\":-3.5,\"big\":"
    "4503599627370495}}},"
    "{\"deviceId\":\"d3\",\"tags\":{},\"properties\":{\"reported\":{\"temperature\":\"hot\","
    "\"s\":\"\\u00e9t\\u00e9 \\ud83d\\ude00\"}},\"modules\":[{\"moduleId\":\"$edgeHub\"}]}"
    "]}";

static cJSON *devs[8], *mods[8];
static size_t ndev, nmod;
static struct th_registry *reg; /* kept: th_registry_query runs over it */

static void setup_docs(void)
{
    reg = th_registry_new();
    cJSON *doc = cJSON_Parse(registry_doc);
    FUZZ_CHECK(reg && doc);
    struct th_error err = {0};
    if (th_registry_load(reg, doc, FUZZ_NOW_US, &err) != TH_OK) {
        fprintf(stderr, "fixture registry refused: %s\n", err.message);
        abort();
    }
    for (struct th_identity *d = th_registry_next_device(reg, NULL); d;
         d = th_registry_next_device(reg, d)) {
        devs[ndev] = th_identity_twin_json(d);
        FUZZ_CHECK(devs[ndev] != NULL);
        ndev++;
        for (size_t i = 0; i < d->module_count; i++) {
            mods[nmod] = th_identity_twin_json(d->modules[i]);
            FUZZ_CHECK(mods[nmod] != NULL);
            nmod++;
        }
    }
    cJSON_Delete(doc);
}

/* th_registry_query's pages equal th_query_run's answer `all` cut into the same pages. */
static void check_pages(const struct th_query *q, const cJSON *all, bool twin)
{
    static const size_t pages[][2] = {{0, 1000}, {0, 1}, {1, 2}, {3, 1}};
    size_t total = (size_t)cJSON_GetArraySize(all);
    for (size_t k = 0; k < sizeof pages / sizeof pages[0]; k++) {
        size_t skip = pages[k][0], size = pages[k][1];
        struct th_query_page pg;
        struct th_error err = {0};
        FUZZ_CHECK(th_registry_query(reg, q, skip, size, &pg, &err) == TH_OK);
        cJSON *want = cJSON_CreateArray();
        FUZZ_CHECK(want != NULL);
        size_t i = 0;
        const cJSON *it;
        cJSON_ArrayForEach(it, all)
        {
            if (i >= skip && i < skip + size)
                FUZZ_CHECK(cJSON_AddItemToArray(want, cJSON_Duplicate(it, true)));
            i++;
        }
        char *a = cJSON_PrintUnformatted(want), *b = cJSON_PrintUnformatted(pg.items);
        FUZZ_CHECK(a && b);
        if (strcmp(a, b) != 0 || pg.more != (skip + size < total) || pg.is_twin != twin) {
            fprintf(stderr, "th_query_run: %s\nth_registry_query (skip %zu, page %zu): %s\n", a,
                    skip, size, b);
            abort();
        }
        free(a);
        free(b);
        cJSON_Delete(want);
        th_query_page_free(&pg);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (ndev == 0)
        setup_docs();
    char *buf = fuzz_bytes(data, size);
    struct th_query *q = NULL;
    struct th_error err = {0};
    if (th_query_parse(buf, size, &q, &err) != TH_OK) {
        FUZZ_CHECK(q == NULL);
        FUZZ_CHECK(err.message[0] != '\0');
        free(buf);
        return 0;
    }
    FUZZ_CHECK(q != NULL);
    bool modules = th_query_source(q) == TH_QUERY_MODULES;
    cJSON *const *docs = modules ? mods : devs;
    size_t n = modules ? nmod : ndev;
    /* All documents, none, and one: results must be well-formed arrays each time. */
    size_t counts[] = {n, 0, 1};
    for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++) {
        cJSON *items = NULL;
        bool twin = false;
        th_result r = th_query_run(q, docs, counts[k], &items, &twin, &err);
        if (r == TH_OK) {
            FUZZ_CHECK(cJSON_IsArray(items));
            char *text = cJSON_PrintUnformatted(items);
            FUZZ_CHECK(text != NULL);
            free(text);
            if (k == 0 && th_query_source(q) != TH_QUERY_JOBS)
                check_pages(q, items, twin);
        } else {
            FUZZ_CHECK(items == NULL);
        }
        cJSON_Delete(items);
    }
    /* Parsing is deterministic and a parsed query can run twice. */
    struct th_query *q2 = NULL;
    FUZZ_CHECK(th_query_parse(buf, size, &q2, &err) == TH_OK);
    th_query_free(q2);
    th_query_free(q);
    free(buf);
    return 0;
}
