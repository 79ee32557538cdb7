/*
 * query_core.c - the twin query over a large registry, core only (no broker):
 * builds N devices with ~1 KB twins as thbench's fleet case writes them
 * (tags {"site":"bench"}, desired.config.setting00..20), then runs queries
 * through the run the control API used before issue 15's query work (the
 * "prefilter" path: a th_identity_query_doc per twin, full twin documents for
 * the matches, th_query_run, then the page) and through th_registry_query,
 * checks that both give the same bytes, and prints the CPU time of each.
 * For callgrind, run one path only ("old" or "new") and compare instruction
 * counts per twin (docs/performance.md, "Fleet: 100,000 devices").
 *
 *   query_core [devices (100000)] [both|old|new] [rounds (3)] [query index (all)]
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "query.h"
#include "registry.h"
#include "registry_query.h"

#define PAGE 100

static const char *const queries[] = {
    "SELECT COUNT() FROM devices WHERE properties.desired.config.setting00 != 'x'",
    "SELECT * FROM devices WHERE tags.site = 'bench'",
    "SELECT deviceId FROM devices WHERE properties.desired.config.setting03 != 'x'",
    "SELECT TOP 10 * FROM devices WHERE status = 'enabled'",
    "SELECT * FROM devices WHERE deviceId = 'fleet-99999'",
    "SELECT * FROM devices WHERE properties.desired.config.setting05 = "
    "'value-00042-05-abcdefghijklmnopqrstuvwxyz'",
    "SELECT status, COUNT() AS n FROM devices WHERE tags.site = 'bench' GROUP BY status",
};
#define NQUERIES (sizeof queries / sizeof queries[0])

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct th_registry *fleet(int n)
{
    cJSON *doc = cJSON_CreateObject();
    cJSON *devs = cJSON_AddArrayToObject(doc, "devices");
    for (int i = 0; i < n; i++) {
        char id[32], name[16], value[64];
        snprintf(id, sizeof id, "fleet-%05d", i);
        cJSON *d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "deviceId", id);
        cJSON *tags = cJSON_AddObjectToObject(d, "tags");
        cJSON_AddStringToObject(tags, "site", "bench");
        cJSON *props = cJSON_AddObjectToObject(d, "properties");
        cJSON *config =
            cJSON_AddObjectToObject(cJSON_AddObjectToObject(props, "desired"), "config");
        for (int k = 0, used = 0; used < 1024; k++, used += 49) {
            snprintf(name, sizeof name, "setting%02d", k);
            snprintf(value, sizeof value, "value-%05d-%02d-abcdefghijklmnopqrstuvwxyz", i, k);
            cJSON_AddStringToObject(config, name, value);
        }
        cJSON_AddItemToArray(devs, d);
    }
    struct th_registry *reg = th_registry_new();
    struct th_error err = {0};
    if (!reg || th_registry_load(reg, doc, 1700000000000000LL, &err) != TH_OK) {
        fprintf(stderr, "query_core: cannot load: %s\n", err.message);
        exit(2);
    }
    cJSON_Delete(doc);
    return reg;
}

/* The control API's query before this work (broker/control_registry.c at 20354aa). */
/* noinline: callgrind --toggle-collect=old_run / new_run counts one path alone. */
__attribute__((noinline)) static char *old_run(const struct th_registry *reg, const char *text, const struct th_query *q)
{
    size_t cap = th_registry_device_count(reg), n = 0;
    cJSON **docs = calloc(cap ? cap : 1, sizeof *docs);
    bool light = !strchr(text, '$') && th_query_grouped(q) && !th_query_has_group_by(q);
    bool prefilter = !strchr(text, '$') && !th_query_grouped(q);
    for (struct th_identity *d = th_registry_next_device(reg, NULL); d;
         d = th_registry_next_device(reg, d)) {
        if (prefilter) {
            cJSON *qd = th_identity_query_doc(d);
            bool match = false;
            if (qd && th_query_matches(q, qd, &match) == TH_OK && !match) {
                cJSON_Delete(qd);
                continue;
            }
            cJSON_Delete(qd);
        }
        docs[n++] = light ? th_identity_query_doc(d) : th_identity_twin_json(d);
    }
    cJSON *items = NULL;
    bool is_twin;
    struct th_error err = {0};
    if (th_query_run(q, docs, n, &items, &is_twin, &err) != TH_OK)
        exit(2);
    for (size_t i = 0; i < n; i++)
        cJSON_Delete(docs[i]);
    free(docs);
    cJSON *page = cJSON_CreateArray();
    size_t total = (size_t)cJSON_GetArraySize(items), i = 0;
    cJSON *it = items->child, *nx;
    for (; it; it = nx, i++) {
        nx = it->next;
        if (i < PAGE)
            cJSON_AddItemToArray(page, cJSON_DetachItemViaPointer(items, it));
    }
    cJSON_Delete(items);
    char *out = cJSON_PrintUnformatted(page);
    cJSON_Delete(page);
    size_t len = strlen(out);
    out = realloc(out, len + 8);
    strcpy(out + len, PAGE < total ? " more" : "");
    return out;
}

__attribute__((noinline)) static char *new_run(const struct th_registry *reg, const struct th_query *q)
{
    struct th_query_page pg;
    struct th_error err = {0};
    if (th_registry_query(reg, q, 0, PAGE, &pg, &err) != TH_OK)
        exit(2);
    char *out = cJSON_PrintUnformatted(pg.items);
    size_t len = strlen(out);
    out = realloc(out, len + 8);
    strcpy(out + len, pg.more ? " more" : "");
    th_query_page_free(&pg);
    return out;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 100000;
    const char *mode = argc > 2 ? argv[2] : "both";
    int rounds = argc > 3 ? atoi(argv[3]) : 3;
    int only = argc > 4 ? atoi(argv[4]) : -1;
    bool old = strcmp(mode, "new") != 0, new = strcmp(mode, "old") != 0;
    double t0 = cpu_s();
    struct th_registry *reg = fleet(n);
    printf("%d devices loaded in %.2f s CPU; %d rounds, CPU time of the median round\n\n", n,
           cpu_s() - t0, rounds);
    printf("| query | before | after | same bytes |\n|---|---|---|---|\n");
    int bad = 0;
    for (size_t k = 0; k < NQUERIES; k++) {
        if (only >= 0 && (size_t)only != k)
            continue;
        struct th_query *q;
        if (th_query_parse(queries[k], strlen(queries[k]), &q, NULL) != TH_OK)
            return 2;
        double to[16] = {0}, tn[16] = {0};
        char *a = NULL, *b = NULL;
        for (int r = 0; r < rounds && r < 16; r++) {
            if (old) {
                free(a);
                double s = cpu_s();
                a = old_run(reg, queries[k], q);
                to[r] = cpu_s() - s;
            }
            if (new) {
                free(b);
                double s = cpu_s();
                b = new_run(reg, q);
                tn[r] = cpu_s() - s;
            }
        }
        /* Median by a small sort. */
        for (int i = 0; i < rounds; i++)
            for (int j = i + 1; j < rounds; j++) {
                if (to[j] < to[i]) {
                    double t = to[i];
                    to[i] = to[j];
                    to[j] = t;
                }
                if (tn[j] < tn[i]) {
                    double t = tn[i];
                    tn[i] = tn[j];
                    tn[j] = t;
                }
            }
        bool same = !(old && new) || strcmp(a, b) == 0;
        bad += !same;
        printf("| `%s` | %.1f ms | %.1f ms | %s |\n", queries[k], to[rounds / 2] * 1e3,
               tn[rounds / 2] * 1e3, old && new ? (same ? "yes" : "NO") : "-");
        free(a);
        free(b);
        th_query_free(q);
    }
    th_registry_free(reg);
    return bad ? 1 : 0;
}
