/*
 * registry.h - the identity registry: devices and their modules with
 * symmetric keys, status, connection state, generation ids, twins and C2D
 * queues; shared access policies (iothub-protocol.md sections 1, 2.5, 5.2, 10.3);
 * identity updates, registry export/import (10.4, 10.7) and snapshot state.
 * The declarations are grouped by the file that implements them (registry.c,
 * registry_json.c, registry_ident.c, registry_doc.c, registry_import.c,
 * registry_state.c; what those share is in registry_private.h).
 *
 * Pure data: the broker plugin owns one registry on its thread and tells it
 * about connections; nothing here does I/O.
 */
#ifndef TH_REGISTRY_H
#define TH_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cjson/cJSON.h>
#include "th_result.h"
#include "twin.h"

#define TH_KEY_BUF 96 /* base64 of up to 64 bytes + NUL */

/* Policy permissions (bit set). */
enum {
    TH_PERM_REGISTRY_READ = 1 << 0,
    TH_PERM_REGISTRY_WRITE = 1 << 1,
    TH_PERM_SERVICE_CONNECT = 1 << 2,
    TH_PERM_DEVICE_CONNECT = 1 << 3,
};

/* The TH_PERM_* bit of a right's name ("RegistryRead", ...; ASCII case ignored; `len` bytes of
 * `name`); 0 if none (registry_doc.c, which also writes the names back). */
unsigned th_perm_from_name(const char *name, size_t len);

struct th_policy {
    char name[64];
    char primary_key[TH_KEY_BUF];
    char secondary_key[TH_KEY_BUF];
    unsigned perms;
};

/* How an identity authenticates: AuthenticationMechanism.type (10.3). */
enum th_auth_type {
    TH_AUTH_SAS = 0,         /* symmetric keys */
    TH_AUTH_NONE = 1,        /* no credentials (IoT Edge creates its modules so, then adds keys) */
    TH_AUTH_SELF_SIGNED = 2, /* "selfSigned": an X.509 certificate known by its thumbprint */
    TH_AUTH_CA = 3,          /* "certificateAuthority": signed by a verified CA of the hub */
};

/* Room for an X.509 thumbprint as the hub stores it: SHA-256 hex (64) + NUL. */
#define TH_THUMBPRINT_BUF 65

/* Whether an authentication type is one of the X.509 ones. */
static inline bool th_auth_type_is_x509(enum th_auth_type t)
{
    return t == TH_AUTH_SELF_SIGNED || t == TH_AUTH_CA;
}

/* deviceScope of an IoT Edge device: TH_EDGE_SCOPE_PREFIX "{deviceId}-{ticks}". */
#define TH_EDGE_SCOPE_PREFIX "ms-azure-iot-edge://"

struct th_c2d_msg {
    char *message_id;  /* malloc'd */
    char *bag;         /* encoded property bag for the delivery topic, malloc'd */
    void *body;        /* malloc'd, may be NULL when len 0 */
    size_t len;
    int64_t enqueued_us;
    struct th_c2d_msg *next;
};

/* A device or a module: both have keys, a twin and a connection. */
struct th_identity {
    char *device_id;       /* malloc'd */
    char *module_id;       /* malloc'd; NULL for a device */
    char primary_key[TH_KEY_BUF];
    char secondary_key[TH_KEY_BUF];
    bool enabled;          /* devices only; modules are always enabled */
    char *status_reason;   /* malloc'd or NULL */
    char generation_id[24];
    uint64_t etag_counter; /* identity etag: base64 of the decimal text */
    enum th_auth_type auth_type; /* TH_AUTH_NONE and the X.509 types: both keys are "" */
    /* TH_AUTH_SELF_SIGNED: the thumbprints (hex as given, either case; secondary "" for none);
     * "" for every other type. */
    char x509_primary[TH_THUMBPRINT_BUF];
    char x509_secondary[TH_THUMBPRINT_BUF];
    char *managed_by;      /* modules: malloc'd or NULL */
    bool iot_edge;         /* devices: capabilities.iotEdge */
    /* Devices: an edge device's own scope, or a leaf's parent scope; malloc'd or NULL. */
    char *device_scope;
    char *parent_scope; /* edge devices: the parent's scope (parentScopes[0]); malloc'd or NULL */
    char *model_id;        /* from the last CONNECT username, malloc'd or NULL */
    bool connected;
    int64_t connection_state_updated_us; /* 0 = never */
    int64_t last_activity_us;            /* 0 = never */
    int64_t status_updated_us;           /* 0 = never */
    struct th_twin *twin;
    /* C2D queue (devices only). */
    struct th_c2d_msg *c2d_head, *c2d_tail;
    size_t c2d_count;
    /* Modules of a device (NULL-terminated array is not used: count + array). */
    struct th_identity **modules;
    size_t module_count;
    struct th_identity *parent; /* module -> its device */
    /* Automatic configurations targeting this twin (config.h): {"<id>": {"status": "Applied" or
     * "Targeted"}}, shown as the twin's "configurations"; owned; NULL when none. */
    cJSON *configurations;
    void *glue;                 /* owned by the plugin (per-connection state); never freed here */
};

struct th_registry;

/* ---- registry.c: the store (identities, lookup, policies, connections, C2D) ---- */

/* An empty registry (no policies). Free with th_registry_free. NULL on OOM. */
struct th_registry *th_registry_new(void);
void th_registry_free(struct th_registry *reg);

/*
 * Add the hub's default shared access policies (iothubowner, service, device,
 * registryRead, registryReadWrite) with the TH_DEV_OWNER_* keys; policies that
 * already exist are kept. TH_ERR_INVAL without a registry.
 */
TH_NODISCARD th_result th_registry_add_default_policies(struct th_registry *reg);

/*
 * Add the documented development identities: policies iothubowner, service,
 * registryRead, registryReadWrite, device with TH_DEV_* keys, device
 * TH_DEV_DEVICE_ID and its module TH_DEV_MODULE_ID. Existing ones are kept.
 */
TH_NODISCARD th_result th_registry_add_dev_identities(struct th_registry *reg, int64_t now_us);

/*
 * Create a device. NULL or empty keys are generated (32 random bytes).
 * TH_ERR_EXISTS if present, TH_ERR_INVAL for a bad id or key.
 * *out (optional) borrows the new identity.
 */
TH_NODISCARD th_result th_registry_add_device(struct th_registry *reg, const char *device_id,
                                              const char *primary_key, const char *secondary_key,
                                              bool enabled, int64_t now_us,
                                              struct th_identity **out, struct th_error *err);
/* Create a module on an existing device (TH_ERR_NOT_FOUND without it; at most 50). */
TH_NODISCARD th_result th_registry_add_module(struct th_registry *reg, const char *device_id,
                                              const char *module_id, const char *primary_key,
                                              const char *secondary_key, int64_t now_us,
                                              struct th_identity **out, struct th_error *err);
/* Delete a device (with its modules, twin and queue) or one module. */
TH_NODISCARD th_result th_registry_remove(struct th_registry *reg, const char *device_id,
                                          const char *module_id);

/* Lookups; module_id NULL means the device itself. Borrowed; NULL when absent. */
struct th_identity *th_registry_find(const struct th_registry *reg, const char *device_id,
                                     const char *module_id);
/* Same, with ids given as slices (not NUL-terminated). */
struct th_identity *th_registry_find_n(const struct th_registry *reg, const char *device_id,
                                       size_t dlen, const char *module_id, size_t mlen);
const struct th_policy *th_registry_policy(const struct th_registry *reg, const char *name,
                                           size_t len);
/* Add or replace a policy (keys NULL -> generated). */
TH_NODISCARD th_result th_registry_set_policy(struct th_registry *reg, const char *name,
                                              const char *primary_key, const char *secondary_key,
                                              unsigned perms);

/* Iterate devices in insertion order: pass NULL to start; returns NULL at the end. */
struct th_identity *th_registry_next_device(const struct th_registry *reg,
                                            const struct th_identity *prev);
size_t th_registry_device_count(const struct th_registry *reg);
/* Number of modules over all devices. */
size_t th_registry_module_total(const struct th_registry *reg);

/* Connection bookkeeping. */
void th_identity_set_connected(struct th_identity *id, bool connected, int64_t now_us);
void th_identity_touch(struct th_identity *id, int64_t now_us);

/*
 * Queue a C2D message (devices only). Takes no ownership: copies bag and body.
 * TH_ERR_QUEUE_FULL at TH_C2D_MAX_QUEUE, TH_ERR_TOO_LARGE over TH_C2D_MAX_BYTES.
 */
TH_NODISCARD th_result th_identity_c2d_push(struct th_identity *dev, const char *message_id,
                                            const char *bag, const void *body, size_t len,
                                            int64_t now_us, struct th_error *err);
/* Pop the oldest message; caller frees with th_c2d_msg_free. NULL when empty. */
struct th_c2d_msg *th_identity_c2d_pop(struct th_identity *dev);
void th_c2d_msg_free(struct th_c2d_msg *msg);

/* Identity etag text (base64 of the decimal counter, e.g. "MQ==") into buf (>= 32). */
void th_identity_etag(const struct th_identity *id, char buf[32]);

/* ---- registry_json.c: identity JSON views, and requests read from identity JSON ---- */

/*
 * Service views as IoT Hub shapes them. Caller frees with cJSON_Delete.
 * Device/module identity JSON (10.3) and full twin JSON (7.1).
 */
cJSON *th_identity_to_json(const struct th_identity *id);
cJSON *th_identity_twin_json(const struct th_identity *id);
/*
 * th_json_print(th_identity_twin_json(id)) without building the tree: the
 * same bytes, printed from the twin (twin_print.c). Caller frees with free();
 * NULL on OOM or without a twin.
 */
char *th_identity_twin_text(const struct th_identity *id);

/*
 * A cheaper stand-in for th_identity_twin_json for evaluating query
 * conditions (registry_query.h's query documents, filled in place, are
 * cheaper still and are what the query command and jobs use): the same members,
 * except that tags, properties.desired and properties.reported reference the
 * twin's own trees (cJSON references: cJSON_Delete of the doc leaves them) and
 * hold no "$version" or "$metadata". Valid until the twin changes; read only.
 * Use it only for queries whose text names no "$" member (the caller checks).
 * Caller frees with cJSON_Delete; NULL on OOM.
 */
cJSON *th_identity_query_doc(const struct th_identity *id);

/* "sas", "none", "selfSigned" or "certificateAuthority". */
const char *th_auth_type_name(enum th_auth_type type);

/*
 * A service create or update of a device or module, read from the hub's
 * identity JSON (PUT /devices/{id}[/modules/{mid}], the control API's
 * create and update commands). Every member has a "not given" value, and
 * strings borrow from the JSON they were read from.
 */
struct th_ident_req {
    const char *primary_key;   /* NULL: not given; "" generates one */
    const char *secondary_key; /* the same */
    int auth_type;             /* -1: not given; else enum th_auth_type */
    int enabled;               /* -1: not given; 0 or 1 (devices) */
    const char *status_reason; /* NULL: not given; "" clears (devices) */
    int iot_edge;              /* -1: not given; 0 or 1 (devices: capabilities.iotEdge) */
    bool scope_given;          /* deviceScope present (devices) */
    const char *device_scope;  /* with scope_given: NULL or "" for none */
    bool parents_given;        /* parentScopes present (devices) */
    const char *parent_scope;  /* with parents_given: its one entry, NULL for [] */
    bool managed_given;        /* managedBy present (modules) */
    const char *managed_by;    /* with managed_given: NULL or "" for none */
    /* x509Thumbprint.primaryThumbprint / secondaryThumbprint: NULL not given, "" none. */
    const char *x509_primary;
    const char *x509_secondary;
};

/* Everything "not given". */
void th_ident_req_init(struct th_ident_req *req);

/*
 * Read a request from a Device (is_module false) or Module JSON object:
 * authentication {type, symmetricKey {primaryKey, secondaryKey}}, status,
 * statusReason, and capabilities.iotEdge, deviceScope, parentScopes
 * (devices) or managedBy (modules). Absent and null members are "not
 * given", except deviceScope, parentScopes and managedBy, where null means
 * "none". Other members are ignored, as the hub ignores read-only ones.
 * TH_ERR_INVAL (400004) naming the member for a wrong type, an unknown
 * authentication type, or more than one parent scope. Thumbprints are read
 * from authentication.x509Thumbprint. *out borrows strings from `body`.
 */
TH_NODISCARD th_result th_ident_req_from_json(const cJSON *body, bool is_module,
                                              struct th_ident_req *out, struct th_error *err);

/* ---- registry_ident.c: service create and update of identities ---- */

/*
 * Create a module like th_registry_add_module and give its twin initial
 * `tags` and `desired` (each NULL, JSON null or an object; $metadata and
 * $version members are ignored), validated by the twin rules (400004,
 * 403100 over a size limit; err names "tags..." or "properties.desired...").
 * Each non-empty section is applied as one update, as th_registry_load does.
 * Nothing is created on failure. Does not take `tags` or `desired`.
 * *out (optional) borrows the new module.
 */
TH_NODISCARD th_result th_registry_add_module_with(struct th_registry *reg, const char *device_id,
                                                   const char *module_id, const char *primary_key,
                                                   const char *secondary_key, const cJSON *tags,
                                                   const cJSON *desired, int64_t now_us,
                                                   struct th_identity **out, struct th_error *err);

/*
 * Create a device (module_id NULL) or a module from a request, with
 * initial twin `tags` and `desired` as th_registry_add_module_with (each
 * may be NULL). Rules (docs/registry.md, "Identity fields"):
 * - type "none" has no keys (giving one is 400004); "sas" or no type gets
 *   the given keys, generated where missing or empty;
 * - an IoT Edge device gets deviceScope "ms-azure-iot-edge://{id}-{gen}"
 *   (its generation id); a deviceScope it is given is ignored; its
 *   parentScopes entry, if any, must be the deviceScope of another IoT Edge
 *   device in the registry;
 * - a leaf device's deviceScope, if given, must be such a scope (its parent),
 *   and its parentScopes is derived from it (a given one is ignored);
 * - a module keeps managedBy; status disabled or a statusReason is 400004.
 * Errors as th_registry_add_device / th_registry_add_module_with, plus
 * 400004 for the rules above. Nothing is created on failure. *out
 * (optional) borrows the new identity.
 */
TH_NODISCARD th_result th_registry_create(struct th_registry *reg, const char *device_id,
                                          const char *module_id, const struct th_ident_req *req,
                                          const cJSON *tags, const cJSON *desired, int64_t now_us,
                                          struct th_identity **out, struct th_error *err);

/*
 * Update an identity from a request (service PUT with If-Match). Given
 * members replace, absent ones keep; keys as th_identity_update. Type
 * "none" drops both keys; "sas" (or keys) on an identity without keys
 * gives it the keys, generated where not given (how IoT Edge's agent
 * completes the modules it created without keys). Scopes follow the rules
 * of th_registry_create, validated only when they change (a scope sent back
 * as read is always accepted): a device that becomes an IoT Edge device
 * gets its own scope (ticks of now_us) and keeps its parent as
 * parentScopes; one that stops being one keeps its parent as deviceScope.
 * On success the identity etag advances, and *keys_changed (optional; false
 * on failure) says whether a key now differs from before: new, regenerated
 * or dropped, so that tokens signed with the old keys no longer verify and
 * the caller closes the identity's connection. A key sent equal to the
 * current one is no change (th_identity_update), so an identity sent back
 * as read keeps its connection. All-or-nothing. Does not take `req`.
 */
TH_NODISCARD th_result th_identity_apply(struct th_registry *reg, struct th_identity *id,
                                         const struct th_ident_req *req, int64_t now_us,
                                         bool *keys_changed, struct th_error *err);

/*
 * Update an identity's keys and status (th_identity_apply with only those
 * members given; a key given to an identity without keys makes it "sas").
 * Keys: NULL keeps, "" generates a new 32-byte key, one equal to the
 * current key keeps it (identical keys are not a change; with type "none"
 * in th_identity_apply they are dropped with the others, not refused),
 * anything else must be base64 of 16 to 64 bytes.
 * enabled: -1 keeps, 0/1 sets (devices only).
 * status_reason: NULL keeps, "" clears, else replaces (devices only).
 * A module refuses enabled 0 or a status_reason with 400004 (modules are
 * always enabled). On success the identity etag advances, and
 * status_updated_us becomes now_us when enabled changed. All-or-nothing:
 * on failure the identity is unchanged. Does not take any argument.
 */
TH_NODISCARD th_result th_identity_update(struct th_identity *id, const char *primary_key,
                                          const char *secondary_key, int enabled,
                                          const char *status_reason, int64_t now_us,
                                          struct th_error *err);

/* ---- registry_doc.c: registry documents ---- */

/*
 * Seed from a registry document (docs/registry.md):
 * {"policies":[{"keyName","primaryKey","secondaryKey","rights":"RegistryRead, ServiceConnect"}],
 *  "devices":[{"deviceId","status","authentication":{"type":"sas"|"none","symmetricKey":{...}},
 *              "capabilities":{"iotEdge"},"deviceScope","parentScopes":[...],
 *              "tags":{},"properties":{"desired":{},"reported":{}},
 *              "modules":[{"moduleId","managedBy",...same...}]}]}
 * A parent scope names its IoT Edge device by the id in it (the ticks may
 * differ: generation ids are not kept); that device must be an edge device
 * of the registry or of the document. Validates everything before adding
 * anything; err names the faulty field ("devices[2].modules[0].moduleId:
 * ...") or device ("deviceScope of device 'x': ...").
 */
TH_NODISCARD th_result th_registry_load(struct th_registry *reg, const cJSON *doc, int64_t now_us,
                                        struct th_error *err);

/*
 * A registry document in the format th_registry_load reads:
 * {"policies":[{"keyName","primaryKey","secondaryKey","rights"}],
 *  "devices":[{"deviceId","status",["statusReason",]"authentication":{"type":"sas",
 *   "symmetricKey":{...}} or {"type":"none"},["capabilities":{"iotEdge":true},]
 *   ["deviceScope",]["parentScopes":[..],]["tags","properties":{"desired","reported"},]
 *   "modules":[{"moduleId",["managedBy",]"authentication",...}]}]}
 * With include_twins, tags and property values (no $metadata/$version).
 * Loading it into an empty registry reproduces identities, keys,
 * authentication types, managedBy, edge capabilities and parents, status,
 * tags, desired and reported values (not generation ids, so not scopes,
 * etags, versions, times, model ids or C2D queues: see th_device_state_json).
 * Caller frees with cJSON_Delete; NULL on OOM.
 */
cJSON *th_registry_export(const struct th_registry *reg, bool include_twins);

/*
 * The shared access policies as a registry-document array
 * [{"keyName","primaryKey","secondaryKey","rights"}]. Caller frees with
 * cJSON_Delete; NULL on OOM.
 */
cJSON *th_registry_policies_json(const struct th_registry *reg);

/*
 * Replace all policies with `arr` (that array format; validated as
 * th_registry_load validates "policies"; an omitted key is generated).
 * Unchanged on failure. Does not take `arr`.
 */
TH_NODISCARD th_result th_registry_restore_policies(struct th_registry *reg, const cJSON *arr,
                                                    struct th_error *err);

/* ---- registry_import.c ---- */

/*
 * Like th_registry_load, but an identity the registry already has is not an
 * error: with overwrite false it is skipped; with overwrite true the fields
 * the entry gives replace its keys, status, statusReason, tags and desired
 * properties, and authentication type, managedBy, capabilities and scopes
 * as th_identity_apply does (omitted fields and reported properties are
 * kept; tags and desired are only rewritten when they differ, so
 * re-importing the same document changes no versions; the identity etag
 * advances only when one of those identity fields changed). New modules of
 * existing devices are created.
 * Policies with an existing name are skipped or replaced the same way.
 * Counts are per identity (a new device with two modules is 3 created):
 * *out_created / *out_updated / *out_skipped (each optional) are set on
 * success only. Validates the whole document first; all-or-nothing. Does
 * not take `doc`. Errors as th_registry_load, plus 413003 when existing
 * plus new modules exceed 50 on a device.
 *
 * Desired changes made here send no notification; a caller that must notify
 * connected devices compares desired_version before and after.
 */
TH_NODISCARD th_result th_registry_import(struct th_registry *reg, const cJSON *doc, bool overwrite,
                                          int64_t now_us, size_t *out_created, size_t *out_updated,
                                          size_t *out_skipped, struct th_error *err);

/* ---- registry_state.c: snapshot state ---- */

/*
 * Full-fidelity persistence state of one device and its modules:
 * {"deviceId","authType":"sas"|"none","primaryKey"|null,"secondaryKey"|null,
 *  "enabled","statusReason"|null,"generationId","etagCounter","managedBy"|null,
 *  "modelId"|null,"statusUpdated":us,"lastActivity":us,"twin":{th_twin_state_json},
 *  "iotEdge","deviceScope"|null,"parentScope"|null (devices),
 *  "c2d":[{"messageId","bag","body":base64,"enqueued":us}],
 *  "modules":[{"deviceId","moduleId",...the same without c2d and modules}]}.
 * Times are microseconds since the epoch (0 = never). Connection state is
 * not saved. Caller frees with cJSON_Delete; NULL on OOM or for a module.
 */
cJSON *th_device_state_json(const struct th_identity *dev);

/*
 * Add a device from th_device_state_json output, restoring it exactly
 * (keys, authentication type, status, edge capability and scopes as saved,
 * generation ids, etags, twin versions and metadata, C2D queue, modules);
 * it starts Disconnected. A state without authType is "sas"; scopes are
 * checked for their form only (devices come back in any order). Does not
 * take `state`.
 * TH_ERR_EXISTS (409001) if the device exists; TH_ERR_INVAL (400004) with
 * err naming the field ("device.modules[1].twin: ...") for a missing or
 * mistyped member, bad id, key, generation id, counter, time or queue entry;
 * TH_ERR_TOO_LARGE over 50 modules, 50 queued messages or 64 KB bodies.
 * Nothing is added on failure. Later generation ids stay unique.
 */
TH_NODISCARD th_result th_registry_restore_device(struct th_registry *reg, const cJSON *state,
                                                  struct th_error *err);

/*
 * th_registry_restore_device in two steps, for loaders that check many
 * states on several threads and add them on one:
 * th_device_from_state builds the detached device of `state` with every
 * check of th_registry_restore_device but the existence one, touching no
 * registry (safe to call from several threads at once); *max_gen receives
 * its highest generation id. The twins' sections are moved out of `state`
 * (th_twin_from_state_take), which the caller still deletes; even on
 * failure `state` may have lost some. On TH_OK the caller owns
 * *out: it passes it to th_registry_add_restored or frees it with
 * th_device_from_state_free.
 * th_registry_add_restored adds such a device: TH_ERR_EXISTS (409001) if
 * the registry has that device id (then the caller still owns `dev`);
 * takes `dev` on TH_OK only. Later generation ids stay unique.
 */
TH_NODISCARD th_result th_device_from_state(cJSON *state, struct th_identity **out,
                                            uint64_t *max_gen, struct th_error *err);
void th_device_from_state_free(struct th_identity *dev);
TH_NODISCARD th_result th_registry_add_restored(struct th_registry *reg, struct th_identity *dev,
                                                uint64_t max_gen, struct th_error *err);

/* ---- development identities (documented in README and docs/cli.md) ---- */
#define TH_DEV_DEVICE_ID "dev-device"
#define TH_DEV_MODULE_ID "dev-module"
/* base64 of "twinhub-development-device-key-1" etc. (32 bytes each) */
#define TH_DEV_DEVICE_KEY "dHdpbmh1Yi1kZXZlbG9wbWVudC1kZXZpY2Uta2V5LTE="
#define TH_DEV_MODULE_KEY "dHdpbmh1Yi1kZXZlbG9wbWVudC1tb2R1bGUta2V5LTE="
#define TH_DEV_OWNER_KEY "dHdpbmh1Yi1kZXZlbG9wbWVudC1vd25lci1rZXktMDE="
/* Fixed secondary keys: base64 of "twinhub-development-owner-key-02",
 * "twinhub-development-device-key-2", "twinhub-development-module-key-2". */
#define TH_DEV_OWNER_SECONDARY_KEY "dHdpbmh1Yi1kZXZlbG9wbWVudC1vd25lci1rZXktMDI="
#define TH_DEV_DEVICE_SECONDARY_KEY "dHdpbmh1Yi1kZXZlbG9wbWVudC1kZXZpY2Uta2V5LTI="
#define TH_DEV_MODULE_SECONDARY_KEY "dHdpbmh1Yi1kZXZlbG9wbWVudC1tb2R1bGUta2V5LTI="

#endif
