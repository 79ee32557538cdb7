/*
 * config.h - IoT Hub's automatic device and module configurations
 * ("automatic device management"; REST /configurations/{id}): the
 * configurations of a hub, their validation, which twins each targets, the
 * one applied to each twin (priority), the content written into that twin's
 * desired properties, the per-twin `configurations.[[id]].status` the
 * metric queries read, and the system and custom metrics.
 *
 * Sources (docs/rest-api.md, "Configurations", cites them in full):
 * - MicrosoftDocs iot-hub-automatic-device-management.md: content as twin
 *   paths below properties.desired, a whole section or one property, null
 *   removes a property; "If two configurations have the same priority number,
 *   the one that was created most recently wins"; a device target may be
 *   `*`, a module target starts with "from devices.modules where" and is no
 *   wildcard; a twin no longer targeted has the configuration's settings
 *   removed and takes the next configuration; metric queries such as
 *   `configurations.[[id]].status='Applied'`; at most five custom metrics;
 * - azure-iothub's Configuration model and e2e tests/configurations.js
 *   (targetCondition '' accepted for device and module configurations, the
 *   content returned as it was given);
 * - az CLI integration tests (defaults: priority 0, targetCondition "",
 *   labels null; metric queries are not checked at creation).
 *
 * Decisions where the hub is silent:
 * - one configuration is applied per twin: the highest priority, then the
 *   latest created; every other configuration that targets the twin is
 *   "Targeted" there. The twin's `configurations` member holds
 *   {"<id>": {"status": "Applied"|"Targeted"}} for each;
 * - the content is written when a twin starts being applied by a
 *   configuration, and its paths are removed (set to null) when it stops
 *   (no longer targeted, outranked, or the configuration deleted), in the
 *   same desired patch as the next configuration's content; a twin that
 *   stays applied is not written again (a later service write of the same
 *   properties stands);
 * - an empty targetCondition targets nothing;
 * - changes apply at once (th_config_apply), not within minutes;
 * - a custom metric whose query does not parse has no result.
 */
#ifndef TH_CONFIG_H
#define TH_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cjson/cJSON.h>

#include "registry.h"
#include "th_result.h"
#include "twin.h"

#define TH_CONFIG_MAX 100       /* configurations per hub (docs: 100) */
#define TH_CONFIG_MAX_METRICS 5 /* custom metrics per configuration */
#define TH_CONFIG_MAX_ID_LEN 128
#define TH_CONFIG_MAX_LABEL_LEN 128 /* label names and values */

/* The configurations of a hub; opaque. */
struct th_config_store;

/* An empty store; NULL on out-of-memory. Free with th_config_store_free (accepts NULL). */
struct th_config_store *th_config_store_new(void);
void th_config_store_free(struct th_config_store *s);
size_t th_config_count(const struct th_config_store *s);

/* What th_config_apply and th_config_delete tell the caller about each twin they changed. */
struct th_config_hooks {
    void *arg;
    /* Content written into id's desired properties; `res` holds the notification for the device. */
    void (*twin_written)(void *arg, struct th_identity *id, const struct th_twin_write_result *res);
    /* id->configurations (the twin's statuses) changed, or its twin was written. */
    void (*statuses_changed)(void *arg, struct th_identity *id);
};

/*
 * Create configuration `id` from `doc` (the REST body: id, schemaVersion,
 * labels, content, targetCondition, priority, metrics.queries; read-only
 * members such as etag, createdTimeUtc or systemMetrics are ignored; a body
 * "id" must equal `id`). 400 / 400004 for an invalid id (1-128 characters:
 * lower-case letters, digits and -+%_*!'), labels (an object of strings up
 * to 128 characters), content (exactly one of deviceContent or
 * moduleContent; keys "properties.desired" with an object value or
 * "properties.desired.<path>"; values by the twin rules; modulesContent,
 * IoT Edge deployments, is refused), targetCondition (the query language;
 * module configurations "from devices.modules where ..."), priority (an
 * integer from 0 to 2^31-1) or metrics (at most 5 named query strings);
 * 409 / 409000 when it exists; 403 / 403002 beyond TH_CONFIG_MAX. Does not
 * apply it: call th_config_apply. Does not take `doc`.
 */
TH_NODISCARD th_result th_config_create(struct th_config_store *s, const char *id, const cJSON *doc,
                                        int64_t now_us, struct th_error *err);

/*
 * Update configuration `id` from `doc` with If-Match `if_match` (NULL or
 * "*": unconditional): targetCondition, priority, labels and metrics
 * replace (an absent member keeps its value); `content` cannot change (a
 * different one is 400 / 400004; absent keeps it). 404 / 404000 when absent,
 * 412 / 412001 on an etag mismatch (checked after validation). The etag and
 * lastUpdatedTimeUtc advance. Call th_config_apply afterwards.
 */
TH_NODISCARD th_result th_config_update(struct th_config_store *s, const char *id, const cJSON *doc,
                                        const char *if_match, int64_t now_us, struct th_error *err);

/*
 * Delete configuration `id` (If-Match as above; 404 / 412), first removing
 * its content from the twins it is applied to, which take their next
 * configuration (as th_config_apply, with the same hooks).
 */
TH_NODISCARD th_result th_config_delete(struct th_config_store *s, struct th_registry *reg,
                                        const char *id, const char *if_match, int64_t now_us,
                                        const struct th_config_hooks *hooks, struct th_error *err);

/*
 * Bring every twin of `reg` in line with the configurations: its statuses,
 * and the content of the configuration applied to it (written with
 * th_twin_service_write, so the device is notified). A twin whose write is
 * refused (a size limit) keeps the configuration "Targeted" and is tried
 * again on the next call. TH_ERR_NOMEM only; the hooks hear of every change.
 */
TH_NODISCARD th_result th_config_apply(struct th_config_store *s, struct th_registry *reg,
                                       int64_t now_us, const struct th_config_hooks *hooks,
                                       struct th_error *err);

/*
 * The REST view of configuration `id` with its metrics computed over `reg`
 * now: {"id","schemaVersion","labels","content","targetCondition",
 * "createdTimeUtc","lastUpdatedTimeUtc","priority","systemMetrics":
 * {"results":{"targetedCount","appliedCount"},"queries":{..}},"metrics":
 * {"results":{..},"queries":{..}},"etag"}. *out is freed by the caller with
 * cJSON_Delete. 404 / 404000 when absent.
 */
TH_NODISCARD th_result th_config_get_json(const struct th_config_store *s,
                                          const struct th_registry *reg, const char *id,
                                          cJSON **out, struct th_error *err);

/* Every configuration's view (up to `top`, 0: all), oldest first; NULL on out-of-memory. */
cJSON *th_config_list_json(const struct th_config_store *s, const struct th_registry *reg,
                           size_t top);

/*
 * POST /configurations/testQueries: {"targetCondition", "customMetricQueries":
 * {name: query}} -> {"targetConditionError": "" or why, "customMetricQueryErrors":
 * {name: "" or why}}. A target condition starting with "from devices.modules"
 * is checked as a module target, any other as a device target. 400 / 400004
 * when `input` is not such an object. *out is freed by the caller.
 */
TH_NODISCARD th_result th_config_test_queries(const cJSON *input, cJSON **out,
                                              struct th_error *err);

/* Full state for the state directory: an array, oldest first; NULL on out-of-memory. */
cJSON *th_config_store_json(const struct th_config_store *s);

/*
 * Restore what th_config_store_json wrote into an empty store; every entry
 * is validated as th_config_create does. All or nothing: on failure the
 * store stays empty and err names the entry.
 */
TH_NODISCARD th_result th_config_store_restore(struct th_config_store *s, const cJSON *state,
                                               struct th_error *err);

#endif
