/*
 * dps.h - the Device Provisioning Service model (docs/dps.md): individual
 * enrollments and enrollment groups, symmetric-key attestation (a group
 * member's key is derived from the group key), the device registration
 * (who a registration token proves to be, what the registration does to the
 * hub's registry, the registration state and its operation id), the DPS
 * service API's documents (api-version 2021-10-01) and the DPS state file.
 *
 * Pure: no I/O besides th_random_key for generated keys. The broker owns one
 * th_dps beside its registry, on its thread; broker/dps.c (MQTT registration),
 * broker/control_dps.c (the control API, which the gateway's HTTPS
 * registration and service API use) are the callers.
 *
 * Decisions where DPS is silent or where twinhub differs (docs/dps.md):
 * - One hub: every registration is assigned to this hub; allocation policies,
 *   iotHubs and custom allocation are kept in the documents but not applied.
 * - An enrollment document is kept as sent (unknown members included) with
 *   the members the service sets (etag, times, generated keys, X.509
 *   certificate info) replaced, so attestation data twinhub does not use
 *   (TPM) round-trips; a registration against a TPM enrollment is refused
 *   (TH_ERR_AUTH) saying it is not supported. X.509 attestation: dps_x509.h.
 * - A refused registration (unknown registration, wrong key, disabled
 *   enrollment, expired token) is 401 / 401002 with a message naming which,
 *   on both transports: the Node SDK retries >= 429 over MQTT until its
 *   timeout, and any 4xx is final.
 * - PUT of an existing enrollment without If-Match replaces it (create or
 *   update, as the SDKs' createOrUpdate says); with If-Match it must match.
 */
#ifndef TH_DPS_H
#define TH_DPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "registry.h"
#include "sas.h"
#include "th_limits.h"
#include "th_result.h"

/* The ID scope a hub gets unless configured ("0ne" and 8 more characters, as DPS prints them). */
#define TH_DPS_DEFAULT_ID_SCOPE "0ne00000001"
#define TH_DPS_ID_SCOPE_MAX 64
/* The service API's policy and its development keys (base64 of "twinhub-development-dps-key-0001"
 * and "...-0002"). */
#define TH_DPS_POLICY_NAME "provisioningserviceowner"
#define TH_DEV_DPS_KEY "dHdpbmh1Yi1kZXZlbG9wbWVudC1kcHMta2V5LTAwMDE="
#define TH_DEV_DPS_SECONDARY_KEY "dHdpbmh1Yi1kZXZlbG9wbWVudC1kcHMta2V5LTAwMDI="
/* Seconds a device is told to wait before polling (the 202's retry-after). */
#define TH_DPS_RETRY_AFTER_S 1
/* The service API version of the documents (the provisioning service SDK's). */
#define TH_DPS_SERVICE_API_VERSION "2021-10-01"
#define TH_DPS_MAX_ENROLLMENTS 10000
#define TH_DPS_PAYLOAD_MAX 4096 /* bytes of a registration's custom payload, as printed */

/* DPS errorCodes (the service's own; the hub's list is th_errcodes.h). */
#define TH_DPS_EC_BAD_REQUEST 400004
#define TH_DPS_EC_UNAUTHORIZED 401002
#define TH_DPS_EC_NOT_FOUND 404201
#define TH_DPS_EC_CONFLICT 409201
#define TH_DPS_EC_PRECONDITION 412201
#define TH_DPS_EC_SERVER_ERROR 500000

enum th_dps_attestation {
    TH_DPS_ATT_SYMMETRIC_KEY = 0,
    TH_DPS_ATT_X509, /* dps_x509.h */
    TH_DPS_ATT_TPM,  /* kept, not usable for registration */
};

/* An individual enrollment (group false) or an enrollment group. */
struct th_dps_enrollment {
    char *id;   /* registrationId or enrollmentGroupId; malloc'd */
    bool group; /* an enrollment group */
    cJSON *doc; /* the document as the service API returns it, without registrationState */
    enum th_dps_attestation attestation;
    char primary_key[TH_KEY_BUF]; /* symmetric key attestation; "" otherwise */
    char secondary_key[TH_KEY_BUF];
    uint64_t etag_counter;
    struct th_dps_enrollment *next;
};

/* The state of one registration (DeviceRegistrationState). */
struct th_dps_registration {
    char *registration_id; /* malloc'd */
    char *device_id;       /* malloc'd */
    char *group_id;        /* the enrollment group, or NULL for an individual enrollment */
    char *substatus;       /* malloc'd: initialAssignment, deviceDataMigrated, deviceDataReset */
    char operation_id[80];
    cJSON *payload; /* the device's custom payload, or NULL */
    bool x509;      /* registered with X.509 attestation (x509.enrollmentGroupId for a group) */
    int64_t created_us, updated_us;
    uint64_t etag_counter;
    struct th_dps_registration *next;
};

struct th_dps {
    char id_scope[TH_DPS_ID_SCOPE_MAX + 1];
    char policy_primary[TH_KEY_BUF], policy_secondary[TH_KEY_BUF];
    struct th_dps_enrollment *enrollments; /* individual and groups, newest last */
    struct th_dps_registration *registrations;
    uint64_t next_operation; /* counter in operation ids */
    size_t count;            /* enrollments and groups */
};

/* A new DPS with `id_scope` (NULL: TH_DPS_DEFAULT_ID_SCOPE) and the development policy keys.
 * Free with th_dps_free; NULL on OOM or an invalid scope. */
struct th_dps *th_dps_new(const char *id_scope);
void th_dps_free(struct th_dps *dps);

/* Whether `s` is a valid ID scope (1-64 of A-Z a-z 0-9). */
bool th_dps_id_scope_valid(const char *s);
/* Whether `id` (len bytes) is a valid registration id: 1-128 of alphanumerics and "-._:",
 * ending in an alphanumeric or '-' (DPS docs, "Registration ID"). */
bool th_dps_registration_id_valid(const char *id, size_t len);

/*
 * A group member's device key: base64(HMAC-SHA256(base64decode(group_key), registration_id)),
 * as the SDKs and the DPS docs derive it. TH_ERR_INVAL for a key that is not base64,
 * TH_ERR_BUFFER when out (>= 45 bytes) is too small.
 */
TH_NODISCARD th_result th_dps_derive_key(const char *group_key_b64, const char *registration_id,
                                         char *out, size_t size);

/* ---- enrollments (the service API's /enrollments and /enrollmentGroups) ---- */

struct th_dps_enrollment *th_dps_find(const struct th_dps *dps, bool group, const char *id);

/*
 * Create or replace an enrollment from the service API's document `body`
 * (IndividualEnrollment or EnrollmentGroup). `id` is the path's; the body's
 * registrationId / enrollmentGroupId, when present, must equal it. Rules:
 * attestation.type symmetricKey (keys base64 of 16-64 bytes; missing or ""
 * keys generated), x509 or tpm (kept as sent); provisioningStatus
 * enabled|disabled (default enabled); reprovisionPolicy booleans; initialTwin
 * {tags, properties.desired} objects under the twin limits; deviceId (individual
 * only) a valid device id; capabilities.iotEdge a boolean. With `if_match`
 * (not NULL or "*") the current etag must match (412). TH_OK with *out (optional)
 * borrowing the enrollment; errors 400 / TH_DPS_EC_BAD_REQUEST naming the member,
 * 412 / TH_DPS_EC_PRECONDITION, 404 for If-Match on a missing enrollment.
 * Unchanged on failure. Does not take `body`.
 */
TH_NODISCARD th_result th_dps_enrollment_put(struct th_dps *dps, bool group, const char *id,
                                             const cJSON *body, const char *if_match,
                                             int64_t now_us, struct th_dps_enrollment **out,
                                             struct th_error *err);

/* Delete an enrollment (If-Match as above). 404 / TH_DPS_EC_NOT_FOUND when absent. */
TH_NODISCARD th_result th_dps_enrollment_delete(struct th_dps *dps, bool group, const char *id,
                                                const char *if_match, struct th_error *err);

/* The service API's document of an enrollment (an individual one with its registrationState when
 * registered). Caller frees with cJSON_Delete; NULL on OOM. */
cJSON *th_dps_enrollment_json(const struct th_dps *dps, const struct th_dps_enrollment *e);

/* Enrollment etag text into buf (>= 32). */
void th_dps_enrollment_etag(const struct th_dps_enrollment *e, char buf[32]);

/*
 * A query page over enrollments (group false/true) or over the registrations
 * of group `group_id` (registrations true). The query specification's "query"
 * must be "*" (what the SDKs' samples send) or "SELECT *..."; others are 400.
 * `continuation` NULL or "" starts; *out_next (caller frees) is NULL on the
 * last page. *out is a JSON array (caller frees). TH_ERR_INVAL for a bad query
 * or continuation.
 */
TH_NODISCARD th_result th_dps_query(const struct th_dps *dps, bool registrations, bool group,
                                    const char *group_id, const cJSON *spec, int page_size,
                                    const char *continuation, cJSON **out, char **out_next,
                                    struct th_error *err);

/* ---- registrations ---- */

struct th_dps_registration *th_dps_registration_find(const struct th_dps *dps, const char *id);
/* The service view (DeviceRegistrationState); `assigned_hub` goes in assignedHub. Caller frees. */
cJSON *th_dps_registration_json(const struct th_dps_registration *r, const char *assigned_hub);
/* Delete a registration state (If-Match as above); the device stays in the hub. */
TH_NODISCARD th_result th_dps_registration_delete(struct th_dps *dps, const char *id,
                                                  const char *if_match, struct th_error *err);

/* What a registration token proved. */
struct th_dps_attest {
    struct th_dps_enrollment *enrollment; /* borrowed: the individual enrollment or the group */
    char device_key[TH_KEY_BUF];          /* the device's primary key (derived for a group) */
    char device_secondary_key[TH_KEY_BUF];
    /* X.509 attestation (dps_x509.h): the device is created or updated as selfSigned with the
     * leaf's SHA-256 thumbprint, and has no keys. */
    bool x509;
    char thumbprint[TH_THUMBPRINT_BUF];
};

/*
 * Decide a registration request: `token` (the SAS token as sent: the MQTT
 * password or the Authorization header) for `registration_id` in scope
 * `id_scope`. The token's sr, percent-decoded once, must be
 * "{idScope}/registrations/{registrationId}" (the id ignoring ASCII case),
 * skn absent or "registration", and it must verify with the individual
 * enrollment's keys, else with a group's derived keys, within skew_s.
 * TH_OK with *out; TH_ERR_AUTH / TH_ERR_EXPIRED / TH_ERR_DISABLED, all 401 /
 * TH_DPS_EC_UNAUTHORIZED, with a message that names the cause (unknown
 * registration, wrong key, disabled enrollment, an X.509 or TPM enrollment);
 * TH_ERR_NOT_FOUND (404) for another ID scope; TH_ERR_INVAL (400) for an
 * invalid registration id.
 */
TH_NODISCARD th_result th_dps_attest(struct th_dps *dps, const char *id_scope,
                                     const char *registration_id, const char *token, int64_t now_s,
                                     int64_t skew_s, struct th_dps_attest *out,
                                     struct th_error *err);

/* What a registration does to the hub's registry (decided by th_dps_plan). */
enum th_dps_action {
    TH_DPS_CREATE,   /* a new device with the enrollment's keys and initial twin */
    TH_DPS_KEEP,     /* the device exists: keys, edge capability updated; twin kept */
    TH_DPS_RECREATE, /* the device exists: replaced by a new one with the initial twin */
};

struct th_dps_plan {
    enum th_dps_action action;
    char device_id[TH_MAX_ID_LEN + 1];
    const char *substatus; /* static */
};

/*
 * Decide the device of a registration: the individual enrollment's deviceId
 * or the registration id; TH_DPS_CREATE when the registry lacks it; else, by
 * the enrollment's reprovisionPolicy: migrateDeviceData (default true) or
 * updateHubAssignment false keep the device and its twin (one hub: migrating
 * to itself), migrateDeviceData false with updateHubAssignment true resets it
 * to the initial twin (TH_DPS_RECREATE).
 */
void th_dps_plan(const struct th_dps *dps, const struct th_registry *reg,
                 const char *registration_id, const struct th_dps_attest *a,
                 struct th_dps_plan *out);

/*
 * Carry out a plan in the registry (TH_DPS_RECREATE expects the caller to
 * have removed the device first: it then creates like TH_DPS_CREATE), and
 * record the registration state with a new operation id and `payload` (may be
 * NULL; copied). *out_id borrows the device; *keys_changed says an existing
 * device's keys changed (its connection must close). Errors from the
 * registry (a bad initial twin) as 400 / TH_DPS_EC_BAD_REQUEST.
 */
TH_NODISCARD th_result th_dps_assign(struct th_dps *dps, struct th_registry *reg,
                                     const char *registration_id, const struct th_dps_attest *a,
                                     const struct th_dps_plan *plan, const cJSON *payload,
                                     int64_t now_us, struct th_identity **out_id,
                                     bool *keys_changed, struct th_dps_registration **out_reg,
                                     struct th_error *err);

/* The 202 body {"operationId","status":"assigning"}. Caller frees. */
cJSON *th_dps_operation_started(const struct th_dps_registration *r);
/*
 * The operation status body {"operationId","status":"assigned","registrationState"{...}} for
 * `operation_id` of `registration_id`; 404 / TH_DPS_EC_NOT_FOUND when that is not the
 * registration's current operation. Caller frees *out.
 */
TH_NODISCARD th_result th_dps_operation_status(const struct th_dps *dps,
                                               const char *registration_id,
                                               const char *operation_id, const char *assigned_hub,
                                               cJSON **out, struct th_error *err);

/*
 * The service API's token: a policy token (skn provisioningserviceowner) verifying with the
 * policy's keys. TH_OK; TH_ERR_AUTH / TH_ERR_EXPIRED 401 / TH_DPS_EC_UNAUTHORIZED.
 */
TH_NODISCARD th_result th_dps_auth_service(const struct th_dps *dps, const char *token,
                                           int64_t now_s, int64_t skew_s, struct th_error *err);

/* ---- documents: registry file section and state file ---- */

/*
 * Load the registry file's "dps" section {"idScope", "enrollments":[...],
 * "enrollmentGroups":[...]} (each entry as th_dps_enrollment_put takes it);
 * "idScope", when given, must be the DPS's own. Replaces the enrollments.
 * All or nothing; err names the entry.
 */
TH_NODISCARD th_result th_dps_load(struct th_dps *dps, const cJSON *section, int64_t now_us,
                                   struct th_error *err);

/* The whole DPS as a state document (enrollments with etags, registrations with payloads and
 * operation ids). Caller frees; NULL on OOM. */
cJSON *th_dps_state_json(const struct th_dps *dps);
/* Replace the DPS's contents with a state document; unchanged on failure. */
TH_NODISCARD th_result th_dps_restore(struct th_dps *dps, const cJSON *state, struct th_error *err);

/* ---- the MQTT wire (broker/dps.c) ---- */

#define TH_DPS_TOPIC_RES_PREFIX "$dps/registrations/res/"
#define TH_DPS_TOPIC_REGISTER "$dps/registrations/PUT/iotdps-register/"
#define TH_DPS_TOPIC_STATUS "$dps/registrations/GET/iotdps-get-operationstatus/"

/*
 * Whether `username` is a DPS username "{idScope}/registrations/{registrationId}/api-version=..."
 * (the api-version part is required, so that a hub device named "registrations" stays one). Copies
 * the scope and the id (both NUL-terminated) when it is; false for anything else (a hub username,
 * for instance), and for ids too long.
 */
bool th_dps_username_parse(const char *username, char scope[TH_DPS_ID_SCOPE_MAX + 1],
                           char registration_id[TH_MAX_ID_LEN + 1]);

enum th_dps_topic_kind {
    TH_DPS_TOPIC_OTHER = 0,
    TH_DPS_TOPIC_REGISTER_REQ, /* PUT iotdps-register */
    TH_DPS_TOPIC_STATUS_REQ,   /* GET iotdps-get-operationstatus */
};

struct th_dps_topic {
    enum th_dps_topic_kind kind;
    struct th_slice rid;          /* $rid, as sent (required) */
    struct th_slice operation_id; /* operationId (status requests; required there) */
};

/*
 * Parse a topic a registering device publishes to. TH_OK with out->kind;
 * TH_ERR_FORMAT for another topic, a missing $rid, or a status request without
 * operationId. Slices point into `topic`.
 */
TH_NODISCARD th_result th_dps_topic_parse(const char *topic, size_t len, struct th_dps_topic *out);

/*
 * The answer topic "$dps/registrations/res/{status}/?$rid={rid}[&retry-after={s}]" into buf
 * (retry_after_s < 0: none). TH_ERR_BUFFER when it does not fit.
 */
TH_NODISCARD th_result th_dps_topic_response(int status, struct th_slice rid, int retry_after_s,
                                             char *buf, size_t size);

/* The service's error body {"errorCode","trackingId","message","timestampUtc"}. Caller frees. */
cJSON *th_dps_error_json(const struct th_error *err, const char *tracking_id, int64_t now_us);

#endif
