/*
 * registry_query.h - running the twin query language (query.h) over the
 * registry's twins without building every twin document: a reusable query
 * document per query, and a paged run over the registry that builds full twin
 * documents (registry.h's th_identity_twin_json) only for the results on the
 * page, or for queries that need them (a path through "$metadata" or
 * "$version", GROUP BY or projections of whole property sections).
 *
 * The answers are those of th_query_run over every twin's full document,
 * byte for byte (test_registry_query.c compares both on random registries
 * and queries).
 */
#ifndef TH_REGISTRY_QUERY_H
#define TH_REGISTRY_QUERY_H

#include <stdbool.h>
#include <stddef.h>
#include <cjson/cJSON.h>

#include "query.h"
#include "registry.h"

/*
 * A query document: the members of th_identity_twin_json that the query
 * names (th_query_names_member), with tags, properties.desired,
 * properties.reported and configurations referencing the twin's own trees
 * (no "$metadata" or "$version" in them), filled in place for one identity
 * at a time, so that examining a twin allocates nothing. Only for queries
 * that do not th_query_needs_meta (TH_ERR_INVAL otherwise); with q NULL it
 * holds every member (for tests). *out is freed with th_query_doc_free
 * (accepts NULL); the query must outlive nothing: names are copied.
 */
struct th_query_doc;
TH_NODISCARD th_result th_query_doc_new(const struct th_query *q, struct th_query_doc **out);
void th_query_doc_free(struct th_query_doc *d);

/*
 * Point d at id's twin and return the document: owned by d, read only, valid
 * until the next fill, th_query_doc_free, or a change to id. NULL when id
 * has no twin.
 */
const cJSON *th_query_doc_fill(struct th_query_doc *d, const struct th_identity *id);

/* One page of a query's results. */
struct th_query_page {
    cJSON *items; /* array, owned: free with th_query_page_free */
    bool is_twin; /* items are whole twins (SELECT *): x-ms-item-type twin */
    bool more;    /* results follow the page: continue at skip + page_size */
};

/*
 * Run q (FROM devices or FROM devices.modules) over reg's device or module
 * twins in registry order and return the results [skip, skip + page_size)
 * of th_query_run's answer over all their full twin documents (TOP applied
 * first), and whether more follow. page_size >= 1; skip + page_size must not
 * overflow. TH_ERR_INVAL (400004) for bad arguments or a FROM devices.jobs
 * query, TH_ERR_NOMEM (500001); out is empty then.
 */
TH_NODISCARD th_result th_registry_query(const struct th_registry *reg, const struct th_query *q,
                                         size_t skip, size_t page_size, struct th_query_page *out,
                                         struct th_error *err);

/* Accepts NULL and an empty page; leaves it empty. */
void th_query_page_free(struct th_query_page *page);

#endif
