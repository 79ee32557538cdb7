/*
 * query.h - the IoT Hub twin query language (iothub-protocol.md section 11):
 * parse a query once, then run it over full twin documents (shape of 7.1).
 *
 *   SELECT [TOP n] (* | expr [AS alias], ... | aggregates) FROM devices | devices.modules
 *   [WHERE cond] [GROUP BY path, ...]
 *   SELECT [TOP n] * FROM devices.jobs [WHERE cond on job properties]
 *
 * Decisions where the hub is silent (to be listed in the docs with the query endpoint):
 * - Error positions are "column N" = 1-based byte offset into the query text.
 * - Attribute names match case-insensitively; an exact-case member wins when both
 *   exist. Result keys use the stored casing ("SELECT DeviceId" -> "deviceId").
 * - Keywords after a '.' are accepted as attribute names ("tags.group.x" works
 *   as well as the documented "tags.[[group]].x"). "[[" starts an escaped name
 *   only when "]]" follows with no '[', ']', ',' or quote in between; write
 *   "[ [1] ]" for an array holding an array.
 * - Unnamed select items that are not attribute paths (aggregates, functions,
 *   constants) are keyed "$1", "$2", ... in order of appearance, as Cosmos DB
 *   does: "SELECT COUNT() FROM devices" -> [{"$1": n}].
 * - A projection yields one object per matching document, {} when every
 *   selected attribute is absent.
 * - Aggregates: COUNT() counts matches; SUM and AVG use numeric values only
 *   (SUM of none is 0, AVG of none is omitted); MIN and MAX order primitives
 *   null < false < true < numbers < strings and ignore objects and arrays
 *   (none -> omitted). Without GROUP BY the result is always one object.
 * - GROUP BY: groups appear in order of their first document; an absent group
 *   attribute forms its own group and is omitted from that group's object. The
 *   object holds the select list (group attributes and aggregates) only; other
 *   non-aggregate items are refused.
 * - Strings accept \' \" \\ \uXXXX and also the JSON escapes \/ \b \f \n \r \t;
 *   \u0000 is refused. LOWER/UPPER change ASCII letters only; LENGTH,
 *   SUBSTRING and INDEX_OF count Unicode code points.
 * - Comparisons need two primitives of the same type (strings compare by
 *   UTF-8 bytes, false < true, null = null); anything else is undefined.
 *   Arithmetic is numeric only; division or modulo by zero is undefined.
 * - "NOT IN [..]" is accepted as NIN. IN/NIN lists hold constants only.
 * - TOP n counts result items (groups, for grouped queries).
 * - Length is counted in UTF-8 characters; nesting is capped at 64 levels of
 *   parentheses/NOT/sign/arrays and 1000 levels of operators (400004).
 */
#ifndef TH_QUERY_H
#define TH_QUERY_H

#include <stdbool.h>
#include <stddef.h>
#include <cjson/cJSON.h>
#include "th_result.h"

#define TH_QUERY_MAX_CHARS 8192 /* longest query text, in characters (10.6) */

enum th_query_source {
    TH_QUERY_DEVICES, /* FROM devices */
    TH_QUERY_MODULES, /* FROM devices.modules */
    TH_QUERY_JOBS,    /* FROM devices.jobs: per-device job records (SELECT * only) */
};

/* A parsed query; opaque, immutable after th_query_parse, safe to run many times. */
struct th_query;

/*
 * Parse `len` bytes of `text` (need not be NUL-terminated). On success *out
 * owns a query the caller frees with th_query_free. On failure *out is NULL and
 * err holds 400/400004 with a message naming the problem and its column
 * ("query: expected FROM at column 10 near 'FORM devices'"): TH_ERR_INVAL for
 * syntax and semantic errors, TH_ERR_TOO_LARGE for text over
 * TH_QUERY_MAX_CHARS characters, TH_ERR_NOMEM (500001) when allocation fails.
 */
TH_NODISCARD th_result th_query_parse(const char *text, size_t len, struct th_query **out,
                                      struct th_error *err);

/* Accepts NULL. */
void th_query_free(struct th_query *q);

/* Which collection the query reads. */
enum th_query_source th_query_source(const struct th_query *q);

/*
 * The x-ms-item-type of the query's results: "deviceJob" FROM devices.jobs
 * (the .NET SDK's GetNextAsDeviceJobAsync refuses any other type), else
 * "twin" when th_query_run said is_twin, "raw" otherwise.
 */
const char *th_query_item_type(const struct th_query *q, bool is_twin);

/*
 * Run `q` over `n` twin documents `docs` (read, never changed; entries may not
 * be NULL) in the given order, which is also the order of the results. On
 * success *out_items is a new cJSON array the caller frees with cJSON_Delete,
 * and *out_is_twin says whether its items are whole twins (SELECT *: the
 * caller answers x-ms-item-type twin) or raw objects (projections and
 * aggregates: raw). Filtering by source is the caller's job: pass device twins
 * for TH_QUERY_DEVICES, module twins for TH_QUERY_MODULES and job records
 * for TH_QUERY_JOBS (twinhub has no jobs: none). Fails with
 * TH_ERR_INVAL on bad arguments and TH_ERR_NOMEM; *out_items is NULL then.
 */
TH_NODISCARD th_result th_query_run(const struct th_query *q, cJSON *const *docs, size_t n,
                                    cJSON **out_items, bool *out_is_twin, struct th_error *err);

/*
 * Does `doc` satisfy q's WHERE clause (true without one)? For running a
 * condition over one document at a time (jobs: core/job.h) without building
 * result arrays. TH_ERR_INVAL on NULL arguments, TH_ERR_NOMEM; *out_match is
 * false then.
 */
TH_NODISCARD th_result th_query_matches(const struct th_query *q, const cJSON *doc,
                                        bool *out_match);

/* Does the query aggregate or group (its results come from groups, not documents)? */
bool th_query_grouped(const struct th_query *q);
/* Does it have a GROUP BY clause? */
bool th_query_has_group_by(const struct th_query *q);

/* Is it SELECT * (results are whole documents)? */
bool th_query_star(const struct th_query *q);
/* TOP n's n; SIZE_MAX without TOP. */
size_t th_query_top(const struct th_query *q);

/*
 * Running a query one document at a time, for callers that build each
 * document just before it is examined and free it after (registry_query.h).
 * The results are those of th_query_run over the same documents in the same
 * order.
 *
 * Plain queries (not th_query_grouped): for each document that
 * th_query_matches, append its result item to `items` (a copy of doc for
 * SELECT *, its projection otherwise); th_query_run stops after
 * th_query_top items. TH_ERR_INVAL for a grouped query or bad arguments, TH_ERR_NOMEM.
 */
TH_NODISCARD th_result th_query_project(const struct th_query *q, const cJSON *doc, cJSON *items);

/*
 * Grouped queries: th_query_groups_new (TH_ERR_INVAL for a plain query), then
 * th_query_groups_add for each document that th_query_matches (it copies what
 * it keeps: the document may change or go after the call), then
 * th_query_groups_emit appends the result objects to `items` (TOP applied).
 * Free with th_query_groups_free (accepts NULL); after a failed add the
 * groups may only be freed.
 */
struct th_query_groups;
TH_NODISCARD th_result th_query_groups_new(const struct th_query *q, struct th_query_groups **out);
TH_NODISCARD th_result th_query_groups_add(struct th_query_groups *gs, const cJSON *doc);
TH_NODISCARD th_result th_query_groups_emit(const struct th_query_groups *gs, cJSON *items);
void th_query_groups_free(struct th_query_groups *gs);

/*
 * What the query reads, for running it on query documents (registry.h's
 * th_identity_query_doc, query_doc.h), which hold the twin's sections without
 * "$metadata" and "$version":
 * - th_query_needs_meta: some path (WHERE, select list or GROUP BY) has a
 *   segment with a '$' (such documents cannot decide it); true FROM
 *   devices.jobs and for NULL.
 * - th_query_reads_sections: the select list or GROUP BY names properties,
 *   properties.desired or properties.reported itself, whose value (copied
 *   into results, compared between groups) would lack them. A WHERE clause
 *   only tests such objects' types, which the documents share.
 * - th_query_names_member: some path starts with twin member `name` (after
 *   any devices./devices.modules. qualifier; names compared as the engine
 *   matches them, ASCII case-insensitively).
 */
bool th_query_needs_meta(const struct th_query *q);
bool th_query_reads_sections(const struct th_query *q);
bool th_query_names_member(const struct th_query *q, const char *name);

#endif
