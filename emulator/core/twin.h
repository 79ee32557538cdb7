/*
 * twin.h - the device/module twin document: IoT Hub merge-patch semantics,
 * per-section $version, $metadata, etag and twin version, validation and
 * limits (iothub-protocol.md sections 6, 7).
 *
 * Decisions (documented in docs/protocol.md):
 * - Depth: the members of a section root are level 1; an object or array at
 *   level TH_TWIN_MAX_DEPTH + 1 is refused with 400/400004, a scalar there
 *   is allowed (IoT Edge's ReportedPropertiesValidator, the article's example).
 * - Section size: sum of key bytes + value size (string bytes, number 8,
 *   bool 4, object/array the sum of contents); over the limit is
 *   403/403100 like the real hub's "size should be less than" error.
 * - etag = base64 of an 8-byte big-endian counter bumped on service writes
 *   (tags/desired); twin version = that counter + reported $version.
 */
#ifndef TH_TWIN_H
#define TH_TWIN_H

#include <stdbool.h>
#include <stdint.h>
#include <cjson/cJSON.h>
#include "th_result.h"

enum th_twin_section {
    TH_SECTION_TAGS,
    TH_SECTION_DESIRED,
    TH_SECTION_REPORTED,
};

/*
 * The $metadata of a section, held compactly (twin_meta.c): one small node per
 * property with its time as microseconds and its $lastUpdatedVersion; the
 * JSON ({"$lastUpdated":..,"$lastUpdatedVersion":..,"key":{...}}) is built
 * only by th_twin_properties_view and th_twin_state_json.
 */
struct th_twin_meta;

struct th_twin {
    cJSON *tags;                        /* object, never NULL after th_twin_new */
    cJSON *desired;                     /* object without $version/$metadata */
    cJSON *reported;                    /* object without $version/$metadata */
    struct th_twin_meta *desired_meta;  /* mirrors desired, with versions */
    struct th_twin_meta *reported_meta; /* mirrors reported */
    int64_t desired_version;            /* starts at 1 */
    int64_t reported_version;           /* starts at 1 */
    uint64_t etag_counter;              /* starts at 1; +1 per service-side write */
};

/* A new empty twin created at `now_us`. Free with th_twin_free. NULL on OOM. */
struct th_twin *th_twin_new(int64_t now_us);
/* Accepts NULL and half-built twins. */
void th_twin_free(struct th_twin *twin);
/* Deep copy (NULL on OOM); free with th_twin_free. */
struct th_twin *th_twin_clone(const struct th_twin *twin);

/*
 * Validate a patch for a section without changing anything: must be an
 * object; keys non-empty, <= 1 KB, no '.', '$', '#', white space (SP and
 * the other Unicode spaces) or control characters (also no "\u0000", seen
 * through json.h's TH_JSON_KEY_NUL); values bool/number/string/object/array;
 * null allowed only as an object member outside any array (delete); integer
 * literals within +-2^52, decimals (TH_JSON_DECIMAL) any finite value;
 * strings <= 4 KB without "\u0000"; objects and arrays at most 10 levels
 * deep (a scalar may sit at level 11). Read-only members ($version,
 * $metadata) are refused for reported patches and ignored for service
 * patches (see th_twin_strip_readonly). The replace functions below also
 * refuse null anywhere.
 */
TH_NODISCARD th_result th_twin_validate_patch(enum th_twin_section section, const cJSON *patch,
                                              struct th_error *err);

/* Remove "$metadata" and "$version" members (recursively) from a service-written document. */
void th_twin_strip_readonly(cJSON *doc);

/*
 * Apply a device's reported-properties patch: validate, merge (null deletes,
 * objects merge, everything else replaces), check the section size limit
 * against the merged result, update $metadata, bump reported $version.
 * On any failure the twin is unchanged. Does not touch etag_counter.
 */
TH_NODISCARD th_result th_twin_patch_reported(struct th_twin *twin, const cJSON *patch,
                                              int64_t now_us, struct th_error *err);

/*
 * th_twin_patch_reported with the precondition of `$version` on the MQTT
 * topic: when `if_version` is non-NULL and differs from the reported
 * $version, nothing changes and the result is TH_ERR_PRECONDITION (412 /
 * 412001). Checked after validation and the size limit, so a patch that
 * would be refused anyway gets that answer.
 */
TH_NODISCARD th_result th_twin_patch_reported_if(struct th_twin *twin, const cJSON *patch,
                                                 const int64_t *if_version, int64_t now_us,
                                                 struct th_error *err);

/*
 * Apply a service patch to desired properties. On success, if `out_notification`
 * is non-NULL, *out_notification receives the notification body for the device
 * (the patch as applied, nulls kept, plus "$version"); caller frees with cJSON_Delete.
 * Bumps desired $version and etag_counter. On failure the twin is unchanged.
 */
TH_NODISCARD th_result th_twin_patch_desired(struct th_twin *twin, const cJSON *patch,
                                             int64_t now_us, cJSON **out_notification,
                                             struct th_error *err);

/*
 * Replace desired wholesale (PUT). Notification = whole new desired + $version.
 * A null anywhere in `desired` is refused (400 / 400004): the hub answers a
 * replace holding null with "Value of Property or Tag cannot be null".
 */
TH_NODISCARD th_result th_twin_replace_desired(struct th_twin *twin, const cJSON *desired,
                                               int64_t now_us, cJSON **out_notification,
                                               struct th_error *err);

/* Merge-patch / replace tags (a replace refuses null, as above). Bumps etag_counter; never
 * notifies the device. */
TH_NODISCARD th_result th_twin_patch_tags(struct th_twin *twin, const cJSON *patch,
                                          struct th_error *err);
TH_NODISCARD th_result th_twin_replace_tags(struct th_twin *twin, const cJSON *tags,
                                            struct th_error *err);

/* ---- the service-side write: one request, one operation ---- */

enum th_twin_write_mode {
    TH_TWIN_WRITE_PATCH,   /* merge tags and desired (REST PATCH, control updateTwin) */
    TH_TWIN_WRITE_REPLACE, /* replace them (REST PUT, control replaceTwin) */
};

/* One service write request. Nothing in it is taken or kept. */
struct th_twin_write {
    enum th_twin_write_mode mode;
    /*
     * The request body, a twin document:
     * {"tags":{..},"properties":{"desired":{..},"reported":{..}}}. Both parts
     * are optional; members other than these (deviceId, etag, version, ...)
     * are ignored, and so are $metadata/$version inside tags and desired.
     */
    const cJSON *doc;
    /* If-Match: NULL (unconditional), "*", or an etag, quoted or not (th_etag_matches). */
    const char *if_match;
    /* The caller has no use for the result's `desired` (left NULL, nothing copied for it). */
    bool no_desired_doc;
    /* The notification as text (the result's notification_text, the bytes th_json_print gives
     * for `notification`) instead of a tree (`notification` left NULL). */
    bool notification_as_text;
};

/* What a successful service write did; free the members with th_twin_write_result_free. */
struct th_twin_write_result {
    bool tags_written;
    bool desired_written;
    /* desired_written: the desired document the request wrote (read-only members removed, a
     * patch's nulls kept), as events and logs show it; otherwise NULL. */
    cJSON *desired;
    /* desired_written: the desired notification for the device (the patch, or for a replace
     * the whole new desired, plus "$version"); otherwise NULL. */
    cJSON *notification;
    /* desired_written and notification_as_text: the notification printed (free()); its length. */
    char *notification_text;
    size_t notification_len;
    int64_t desired_version; /* desired $version after the write */
};

/*
 * The service-side twin write (REST PATCH/PUT /twins/{id}[/modules/{mid}],
 * control API updateTwin/replaceTwin) as one operation on `twin`:
 * 1. the shape: `doc` an object; `tags` and `properties.desired` objects, null
 *    or absent, else 400/400004. In a patch a null section removes every
 *    member of that section (the same as a patch naming each with null, so
 *    the desired notification names each removed key with null); in a
 *    replace null means "leave it";
 *    `properties.reported` holds nothing the service would write: absent,
 *    null, or an object whose only members are the read-only $metadata and
 *    $version of a twin as read (the Azure SDKs send those back), else
 *    400/400004, because reported properties are the device's;
 * 2. the content rules of th_twin_validate_patch for tags, then desired (a
 *    replace refuses null anywhere), and the section size limits (403100);
 * 3. If-Match against the current etag (th_etag_matches), 412/412001 on a
 *    mismatch. Checked after 1 and 2: a request that would fail anyway gets
 *    that failure (RFC 7232 section 5), as th_twin_patch_reported_if does;
 * 4. commit: tags and desired change together, desired $version +1 when
 *    desired was written, and the etag advances by exactly one step when
 *    anything was written (a request with neither part changes nothing).
 * On success *out says what was written and holds the notification to send;
 * on any failure the twin is unchanged, *out is empty and err says why.
 */
TH_NODISCARD th_result th_twin_service_write(struct th_twin *twin, const struct th_twin_write *req,
                                             int64_t now_us, struct th_twin_write_result *out,
                                             struct th_error *err);

/* Frees the members of `out` and empties it; accepts NULL and an empty result. */
void th_twin_write_result_free(struct th_twin_write_result *out);

/*
 * The body of an MQTT twin GET response:
 * {"desired":{...,"$version":n},"reported":{...,"$version":m}} (no $metadata).
 * Caller frees with cJSON_Delete; NULL on OOM.
 */
cJSON *th_twin_device_view(const struct th_twin *twin);

/*
 * The "properties" object of the service view:
 * {"desired":{...,"$metadata":{...},"$version":n},"reported":{...}}.
 * Caller frees with cJSON_Delete; NULL on OOM.
 */
cJSON *th_twin_properties_view(const struct th_twin *twin);

/*
 * The control API's short answer to a twin write (docs/control-api.md,
 * updateTwin "answer": "short"): {"status":200,"etag":"<twin etag>",
 * "$version":<desired $version>} (twin_print.c). Caller frees with free();
 * NULL on OOM or without a twin.
 */
char *th_twin_short_answer_text(const struct th_twin *twin);

/* Twin etag text ("AAAAAAAAAAE=" for counter 1) into buf (>= 16 bytes). */
void th_twin_etag(const struct th_twin *twin, char buf[16]);
/* etag_counter + reported $version. */
int64_t th_twin_version(const struct th_twin *twin);

/* Section size as the hub counts it (7.5), for limits and tests. */
size_t th_twin_section_size(const cJSON *section);

/*
 * Full-fidelity persistence state of a twin (for snapshots, not a hub shape):
 * {"tags":{..},"desired":{..},"reported":{..},"desiredMeta":{..},
 *  "reportedMeta":{..},"desiredVersion":n,"reportedVersion":n,"etagCounter":n}.
 * The sections carry no $metadata/$version; the metas are the stored
 * $metadata trees. Caller frees with cJSON_Delete; NULL on OOM or NULL twin.
 */
cJSON *th_twin_state_json(const struct th_twin *twin);

/*
 * The inverse of th_twin_state_json: a new twin identical to the saved one
 * (device view, properties view, etag and version). Does not take or keep
 * `state`. Validates everything: all eight members present with their
 * types; sections pass the twin content rules and size limits and hold no
 * null; versions and etagCounter are integers in 1..2^53; each meta mirrors
 * its section exactly (one node per property, "$lastUpdated" strings, and for
 * desired "$lastUpdatedVersion" integers no greater than desiredVersion).
 * Unknown members are ignored. On bad input returns NULL with err set
 * (TH_ERR_INVAL / 400004, or the content rule's result); on OOM NULL with
 * TH_ERR_NOMEM. Caller frees the twin with th_twin_free.
 */
struct th_twin *th_twin_from_state(const cJSON *state, struct th_error *err);
/*
 * th_twin_from_state that moves the sections ("tags", "desired",
 * "reported") out of `state` instead of copying them, once every check
 * passed: for a loader that deletes `state` next. On failure `state` may
 * have lost them too.
 */
struct th_twin *th_twin_from_state_take(cJSON *state, struct th_error *err);

#endif
