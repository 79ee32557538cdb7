/*
 * journal.h - the hub's event records (docs/recording.md): one record per
 * thing that happens on the hub, built here for the broker's event stream
 * ($twinhub/events/..., docs/control-api.md) and its recording (`--record`),
 * and read here by the scenario engine and `twinhub verify`.
 *
 * A record is one JSON object, printed compactly on one line:
 *   {"seq":n,"time":"2026-11-23T14:08:56.3472420Z","kind":"...",
 *    "deviceId":"..."|null,"moduleId":"..."|null,"data":{...}}
 * in that member order. `seq` is 1 for the first event of a hub run and +1
 * per event (the broker counts, also the events nobody receives); `time` is
 * th_time_format's (UTC, 7 fractional digits).
 *
 * The kinds and their `data` (members in this order; `?` marks a member that
 * may be absent):
 *   connected        {"clientId", "apiVersion": s|null, "clientType": s|null,
 *                     "modelId": s|null, "auth": "sas"|"sas-policy",
 *                     "cleanSession": bool}
 *   disconnected     {}
 *   refused          {"clientId", "reason", "username": s|null}; deviceId and
 *                    moduleId are null when the username named none
 *   telemetry        {"topic", "qos", "retain", "systemProperties": {..},
 *                     "properties": {..}, "body"?: text, "bodyBase64", "size"}
 *                    (th_journal_telemetry below has the property names)
 *   reported         {"patch", "version": the new reported $version}, or when
 *                    the hub refused the patch {"patch"?, "error", "status",
 *                    "errorCode"} ("patch" absent when it was not JSON)
 *   desired          {"patch", "version": the new desired $version,
 *                     "delivered": bool (sent to a connected device)}
 *   twinGet          {"status": 200}
 *   method           {"methodName", "requestId"} and the caller's answer:
 *                    "status", "payload" (or "rawPayload"?,
 *                    "rawPayloadBase64", "payloadError" for a body that is
 *                    not JSON: core/method.h), or "error", "errorCode"
 *   c2d              {"messageId", "delivered": bool, "queued": n}
 *   protocolError    {"topic", "reason"} (the connection was closed for it,
 *                    or a subscription refused)
 *   mark             the `data` of the control API's `mark` command (any
 *                    JSON; the scenario runner's marks are {"scenario",
 *                    "file"?, "step"?, "index", "action"})
 *   deviceCreated, moduleCreated, identityUpdated, deviceDeleted,
 *   moduleDeleted    {}
 *
 * Decisions where the format leaves room (kept from the first recordings,
 * fixtures/recordings, which must keep verifying):
 * - Reading is lenient where the hub never varies: deviceId, moduleId and
 *   data may be absent, and a kind this version does not know is kept by
 *   name (TH_JOURNAL_OTHER), so newer recordings still verify.
 * - Numbers read from a record (seq, version, a mark's index) are clamped to
 *   +-2^53 before they become integers: a recording is a file anyone can
 *   edit, and the conversion is undefined outside int64's range.
 */
#ifndef TH_JOURNAL_H
#define TH_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cjson/cJSON.h>
#include "th_result.h"

/* Topic prefix of the event stream: $twinhub/events/{kind}/{deviceId}[/{moduleId}]. */
#define TH_JOURNAL_TOPIC_PREFIX "$twinhub/events/"

/* X(enum suffix, kind name): every kind the hub writes, in the order of the table above. */
#define TH_JOURNAL_KINDS(X)                                                                        \
    X(CONNECTED, "connected")                                                                      \
    X(DISCONNECTED, "disconnected")                                                                \
    X(REFUSED, "refused")                                                                          \
    X(TELEMETRY, "telemetry")                                                                      \
    X(REPORTED, "reported")                                                                        \
    X(DESIRED, "desired")                                                                          \
    X(TWIN_GET, "twinGet")                                                                         \
    X(METHOD, "method")                                                                            \
    X(C2D, "c2d")                                                                                  \
    X(PROTOCOL_ERROR, "protocolError")                                                             \
    X(MARK, "mark")                                                                                \
    X(DEVICE_CREATED, "deviceCreated")                                                             \
    X(MODULE_CREATED, "moduleCreated")                                                             \
    X(IDENTITY_UPDATED, "identityUpdated")                                                         \
    X(DEVICE_DELETED, "deviceDeleted")                                                             \
    X(MODULE_DELETED, "moduleDeleted")                                                             \
    X(REGISTRATION, "registration")

/* clang-format off */
enum th_journal_kind {
    TH_JOURNAL_OTHER = 0, /* read from a record: a kind this version does not know */
#define TH_JOURNAL_KIND_ENUM(id, name) TH_JOURNAL_##id,
    TH_JOURNAL_KINDS(TH_JOURNAL_KIND_ENUM)
#undef TH_JOURNAL_KIND_ENUM
    TH_JOURNAL_KIND_COUNT
};
/* clang-format on */

/* The record's name of a kind ("twinGet"); NULL for TH_JOURNAL_OTHER or out of range. */
const char *th_journal_kind_name(enum th_journal_kind kind);
/* The kind of a name (case-sensitive); TH_JOURNAL_OTHER when unknown or NULL. */
enum th_journal_kind th_journal_kind_of(const char *name);

/* ---- building records (the broker) ---- */

/*
 * The record as one line of compact JSON without the newline. Takes
 * ownership of `data` on every path; NULL data is written as {}. device_id
 * and module_id may be NULL (written as null). Returns a string the caller
 * frees with free(); NULL on out-of-memory or a kind without a name.
 */
char *th_journal_record_text(uint64_t seq, int64_t time_us, enum th_journal_kind kind,
                             const char *device_id, const char *module_id, cJSON *data);

/*
 * The event-stream topic of a record: TH_JOURNAL_TOPIC_PREFIX, the kind,
 * then the device id ("-" when NULL) and the module id when there is one, as
 * topic levels. In the ids, what a topic name cannot carry or that would add
 * a level goes out percent-encoded: '+', '#', '/', control characters and
 * every byte >= 0x7F (libmosquitto drops a connection that receives a topic
 * with a control character or invalid UTF-8); '%' itself is kept. Works like
 * snprintf: writes at most size - 1 characters and a NUL (when size > 0) and
 * returns the length of the whole topic, so a return >= size means `out` was
 * too small.
 */
size_t th_journal_topic(enum th_journal_kind kind, const char *device_id, const char *module_id,
                        char *out, size_t size);

/*
 * The `data` of each kind. Every builder returns a new object the caller
 * owns (cJSON_Delete, or hand it to th_journal_record_text), or NULL on
 * out-of-memory; a builder that takes a cJSON argument's ownership says so,
 * and takes it on every path. String arguments are copied.
 */

enum th_journal_auth {
    TH_JOURNAL_AUTH_SAS,        /* "sas": a token signed with the identity's own key */
    TH_JOURNAL_AUTH_SAS_POLICY, /* "sas-policy": a token signed with a policy key (skn) */
    TH_JOURNAL_AUTH_X509,       /* "x509": a client certificate (selfSigned or CA) */
};

struct th_journal_connected {
    const char *client_id;
    const char *api_version; /* from the username; NULL when it has none */
    const char *client_type; /* DeviceClientType, decoded; NULL when absent */
    const char *model_id;    /* NULL when the device announced none */
    enum th_journal_auth auth;
    bool clean_session;
};
cJSON *th_journal_data_connected(const struct th_journal_connected *c);

/* `client_id` NULL is written as ""; `username` NULL as null. */
cJSON *th_journal_data_refused(const char *client_id, const char *reason, const char *username);

struct th_props;
/*
 * A telemetry message as the hub saw it. `props` (may be NULL) is the
 * topic's property bag, decoded (core/topic.h): a `$.x` wire name goes to
 * systemProperties under the hub's name (`$.mid` messageId, `$.cid`
 * correlationId, `$.uid` userId, `$.ct` contentType, `$.ce` contentEncoding,
 * `$.ctime` creationTimeUtc, `$.sub` dt-subject, `$.ifid` interfaceId,
 * `$.on` outputName, `$.schema` messageSchema, `$.exp` expiryTimeUtc; any
 * other `$.x` keeps its wire name), everything else to properties, then
 * `mqtt-retain: "true"` when the device set RETAIN. The hub stamps, after
 * what the device sent: iothub-connection-device-id, -module-id (modules),
 * -auth-generation-id, -auth-method, iothub-enqueuedtime and dt-dataschema
 * (the model id, when there is one). `body` is written as text when it is
 * UTF-8 without a NUL, and always as base64.
 */
struct th_journal_telemetry {
    const char *topic;
    int qos;
    bool retain;
    const struct th_props *props;
    const char *device_id;
    const char *module_id; /* NULL for a device */
    const char *generation_id;
    const char *model_id; /* NULL when none */
    bool x509;            /* the connection authenticated with a certificate */
    int64_t enqueued_us;
    const void *body; /* may be NULL when len is 0; need not be NUL-terminated */
    size_t len;
};
cJSON *th_journal_data_telemetry(const struct th_journal_telemetry *t);
/*
 * The whole telemetry record, th_journal_record_text(seq, time_us,
 * TH_JOURNAL_TELEMETRY, t->device_id, t->module_id, th_journal_data_telemetry(t))
 * byte for byte, written straight into one buffer (journal_text.c: the
 * per-message path of the event stream). Returns a string the caller frees
 * with free(), its length in *len (may be NULL); NULL on out-of-memory or
 * where the tree path gives NULL (t->device_id NULL).
 */
char *th_journal_telemetry_record_text(uint64_t seq, int64_t time_us,
                                       const struct th_journal_telemetry *t, size_t *len);
/* A `$.x` wire name's name in systemProperties; NULL for an application property. */
const char *th_journal_system_name(const char *wire);

/* An accepted reported patch; takes ownership of `patch`. */
cJSON *th_journal_data_reported(cJSON *patch, int64_t version);
/* A refused reported patch (`patch` NULL when it was not JSON); takes ownership of `patch`. */
cJSON *th_journal_data_reported_refused(cJSON *patch, const struct th_error *err);
/* A desired patch written by the service; takes ownership of `patch`. */
cJSON *th_journal_data_desired(cJSON *patch, int64_t version, bool delivered);
cJSON *th_journal_data_twin_get(int status);
/*
 * A direct method call's end: the caller got `result` (th_method_result's
 * object, whose members are copied) or, when `err` is non-NULL, that error.
 */
cJSON *th_journal_data_method(const char *method_name, uint64_t request_id, const cJSON *result,
                              const struct th_error *err);
/* `message_id` NULL is written as "". */
cJSON *th_journal_data_c2d(const char *message_id, bool delivered, size_t queued);
cJSON *th_journal_data_protocol_error(const char *topic, const char *reason);
/* A copy of the mark command's `data` (any JSON); NULL data gives {}. */
cJSON *th_journal_data_mark(const cJSON *data);

/* A DPS registration request, answered (status 202) or refused (docs/dps.md). */
struct th_journal_registration {
    const char *registration_id;
    const char *transport;           /* "mqtt" or "https" */
    int status;                      /* 202, or the refusal's status */
    const char *device_id;           /* assigned: the device; NULL when refused */
    const char *enrollment_group_id; /* NULL: an individual enrollment (or refused) */
    const char *substatus;           /* initialAssignment, deviceDataMigrated, deviceDataReset */
    bool created;                    /* the registration created the device */
    const cJSON *payload;            /* the device's payload, or NULL */
    const char *error;               /* refused: why */
};
/* {"registrationId","transport","status",["deviceId","enrollmentGroupId","substatus","created",
 * "payload"] | ["error"]}; NULL on OOM. */
cJSON *th_journal_data_registration(const struct th_journal_registration *r);

/* ---- reading records (the scenario engine, `twinhub verify`) ---- */

/*
 * One record, read. Strings and JSON point into the parsed record, which must
 * outlive this struct. The member of `as` that matches `kind` is filled from
 * `data` (when data is an object) for the kinds readers decide on; a member
 * absent or of another type reads as NULL / false / 0.
 */
struct th_journal_record {
    int64_t seq;
    int64_t time_us;
    enum th_journal_kind kind;
    const char *kind_name; /* as written, also for TH_JOURNAL_OTHER */
    const char *device_id; /* NULL when null or absent */
    const char *module_id; /* NULL when null or absent */
    const cJSON *data;     /* the data member as written; NULL when absent */
    union {
        struct {
            const char *reason;
        } refused;
        struct {
            const cJSON *patch; /* an object, or NULL */
            bool accepted;      /* the record has a numeric version: the hub applied it */
            int64_t version;
        } reported;
        struct {
            const char *topic;
            const char *body;               /* the text body; NULL when it was not text */
            const cJSON *properties;        /* as written (an object) or NULL */
            const cJSON *system_properties; /* as written (an object) or NULL */
        } telemetry;
        struct {
            const char *method_name;
        } method;
        struct {
            const char *message_id;
            bool delivered;
        } c2d;
        struct {
            const char *scenario, *file, *step, *action;
            bool has_index;
            int64_t index;
        } mark;
    } as;
};

/*
 * Read a parsed record. It must be an object with a numeric seq, a string
 * kind, a time th_journal_time_parse accepts, and deviceId / moduleId each a
 * string, null or absent; otherwise TH_ERR_FORMAT with err saying what is
 * wrong. `out` points into `record` (not copied, not owned).
 */
TH_NODISCARD th_result th_journal_parse(const cJSON *record, struct th_journal_record *out,
                                        struct th_error *err);

/*
 * Parse `len` bytes of text as one record (th_json_parse with these limits,
 * then th_journal_parse). On TH_OK *json owns the tree `out` points into
 * (free with cJSON_Delete); on failure *json is NULL and err's message starts
 * "not an event record".
 */
TH_NODISCARD th_result th_journal_parse_text(const char *text, size_t len, size_t max_bytes,
                                             int max_depth, cJSON **json,
                                             struct th_journal_record *out, struct th_error *err);

/*
 * A record's time ("2020-07-09T13:55:50.7976985Z"; fractional digits
 * optional, any number of them, microseconds kept) as microseconds since
 * the epoch. TH_ERR_FORMAT (and *out_us untouched) for anything else,
 * including offsets other than Z.
 */
TH_NODISCARD th_result th_journal_time_parse(const char *text, int64_t *out_us);

/*
 * The answer a method record's caller got, rebuilt: {"error", "errorCode"?}
 * for a failed call, else {"status", "payload"} (null when absent) plus
 * "rawPayload", "rawPayloadBase64" and "payloadError" when present. A new
 * object (cJSON_Delete); NULL on out-of-memory or for a record of another
 * kind.
 */
cJSON *th_journal_method_answer(const struct th_journal_record *rec);

#endif
