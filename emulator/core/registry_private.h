/*
 * registry_private.h - what the files of the identity registry share and
 * nothing else includes: the registry struct itself, the detached-identity
 * helpers and the prepared changes that let every multi-step operation
 * commit with steps that cannot fail. The public interface is registry.h.
 *
 *   registry.c        the store: devices, modules, lookup, policies,
 *                     connection state, C2D queues, etags
 *   registry_ident.c  service create and update of identities: keys,
 *                     status, managedBy, IoT Edge scopes, initial twins
 *   registry_json.c   identity and twin JSON views, and reading a create
 *                     or update request from the hub's identity JSON
 *   registry_doc.c    registry documents: validation, building their
 *                     identities, parent resolution, load, export, the
 *                     policies array
 *   registry_import.c import of a registry document (skip or overwrite)
 *   registry_state.c  the full-fidelity device state of snapshots
 *
 * Helpers are named reg_* and documented where they are defined; the
 * one-line comments here say what each is for and who owns what.
 */
#ifndef TH_REGISTRY_PRIVATE_H
#define TH_REGISTRY_PRIVATE_H

#include "registry.h"

/* uthash must never call exit(): a failed add leaves hh.tbl NULL instead. */
#define HASH_NONFATAL_OOM 1
#include <uthash.h>

#include "th_limits.h"

/* .NET ticks of the Unix epoch: generation ids look like the hub's (section 1). */
#define TH_TICKS_UNIX_EPOCH 621355968000000000ULL
#define TH_KEY_MIN_BYTES 16
#define TH_KEY_MAX_BYTES 64
#define TH_GENERATED_KEY_BYTES 32
#define TH_POLICY_NAME_MAX 63

struct dev_node {
    struct th_identity *id; /* owned */
    UT_hash_handle hh;      /* keyed by id->device_id */
};

struct th_registry {
    struct dev_node *devices; /* uthash head; list order = insertion order */
    struct th_policy policies[TH_MAX_POLICIES];
    size_t policy_count;
    uint64_t last_generation; /* last generation id issued, for uniqueness */
};

/* ---- registry.c: keys, strings, detached identities, the table ---- */

/* True when `key` is base64 of TH_KEY_MIN_BYTES..TH_KEY_MAX_BYTES bytes. */
bool reg_key_valid(const char *key);
/* True for a non-NULL, non-empty key. */
bool reg_key_given(const char *key);
/* Copies a (validated) key into dst, or generates one when none is given. */
th_result reg_fill_key(char dst[TH_KEY_BUF], const char *key);
/* Copies a key already checked to fit (reg_key_valid or a stored key). */
void reg_copy_key(char dst[TH_KEY_BUF], const char *src);
bool reg_policy_name_valid(const char *name, size_t len);
/* malloc'd copy, caller frees; NULL for NULL or on OOM. */
char *reg_dup_str(const char *s);

/* Frees an identity with its modules, twin and queue; accepts NULL and half-built. */
void reg_identity_free(struct th_identity *id);
/* A detached identity (keys given or generated); caller frees with reg_identity_free. */
struct th_identity *reg_identity_create(struct th_registry *reg, const char *device_id,
                                        const char *module_id, enum th_auth_type auth,
                                        const char *primary_key, const char *secondary_key,
                                        bool enabled, int64_t now_us, th_result *r);
/* Inserts a built device into the table. Takes ownership on success only. */
th_result reg_insert_device(struct th_registry *reg, struct th_identity *dev);
struct dev_node *reg_find_node(const struct th_registry *reg, const char *device_id, size_t dlen);
struct th_identity *reg_find_module(const struct th_identity *dev, const char *module_id,
                                    size_t mlen, size_t *index);
/* Appends a built module to a device. Takes ownership on success only. */
th_result reg_attach_module(struct th_identity *dev, struct th_identity *mod);
/* Validate a creation and build the detached identity; the caller inserts or frees it. */
th_result reg_device_prepare(struct th_registry *reg, const char *device_id, enum th_auth_type auth,
                             const char *primary_key, const char *secondary_key, bool enabled,
                             int64_t now_us, struct th_identity **out, struct th_error *err);
th_result reg_module_prepare(struct th_registry *reg, const char *device_id, const char *module_id,
                             enum th_auth_type auth, const char *primary_key,
                             const char *secondary_key, int64_t now_us,
                             struct th_identity **out_dev, struct th_identity **out_mod,
                             struct th_error *err);

struct th_policy *reg_policy_slot(const struct th_registry *reg, const char *name, size_t len);
/* Fills a policy value; keys must be valid or absent (then generated). */
th_result reg_policy_fill(struct th_policy *p, const char *name, const char *primary_key,
                          const char *secondary_key, unsigned perms);

/* ---- registry_ident.c: scopes, prepared identity changes, initial twins ---- */

/* The scopes of a device after a change (see th_registry_create); strings owned. */
struct scope_plan {
    bool edge;
    char *device_scope; /* edge: its own scope; leaf: its parent's; NULL none */
    char *parent_scope; /* edge: its parent's scope; NULL none (always NULL for a leaf) */
};

/* Identity fields prepared by an update; committing them cannot fail. */
struct ident_change {
    char primary_key[TH_KEY_BUF];
    char secondary_key[TH_KEY_BUF];
    enum th_auth_type auth_type; /* matches the keys above */
    char x509_primary[TH_THUMBPRINT_BUF]; /* TH_AUTH_SELF_SIGNED only, else "" */
    char x509_secondary[TH_THUMBPRINT_BUF];
    int enabled;                 /* -1 keeps */
    bool reason_set;             /* replace status_reason with `reason` (NULL clears) */
    char *reason;                /* owned until committed */
    bool scopes_set;             /* replace iot_edge and both scopes with `scopes` */
    bool scope_raw;              /* the parent in `scopes` is a registry-document reference */
    struct scope_plan scopes;    /* owned until committed */
    bool managed_set;            /* replace managed_by with `managed_by` (NULL clears) */
    char *managed_by;            /* owned until committed */
};

/* True when `scope` is TH_EDGE_SCOPE_PREFIX "{deviceId}-{digits}"; the id into id_buf. */
bool reg_parse_scope(const char *scope, char *id_buf, size_t size);
/* NULL and "" are both "no scope". */
bool reg_scope_equal(const char *a, const char *b);
/* The scopes of a device after a request; *out is freed by its owner (ident_change). */
th_result reg_plan_scopes(const struct th_registry *reg, const struct th_identity *id,
                          const char *device_id, const char *gen, const struct th_ident_req *req,
                          int64_t now_us, bool doc, bool *raw, struct scope_plan *out,
                          struct th_error *err);
void reg_ident_change_init(struct ident_change *c, const struct th_identity *id);
void reg_ident_change_free(struct ident_change *c);
void reg_ident_change_commit(struct th_identity *id, struct ident_change *c, int64_t now_us);
th_result reg_plan_keys(const struct th_identity *id, int type, const char *primary_key,
                        const char *secondary_key, struct ident_change *c, struct th_error *err);
/* The thumbprints after a request, for the type reg_plan_keys chose (c->auth_type). */
th_result reg_plan_x509(const struct th_identity *id, const char *primary, const char *secondary,
                        struct ident_change *c, struct th_error *err);
/* Applies one initial twin section (tags, desired or reported); path names it in errors. */
th_result reg_apply_section(struct th_twin *twin, enum th_twin_section section, const cJSON *src,
                            int64_t now_us, const char *path, struct th_error *err);

/* ---- registry_json.c: cJSON builders (false or NULL on OOM) ---- */

bool reg_add_str(cJSON *obj, const char *key, const char *value);
bool reg_add_str_or_null(cJSON *obj, const char *key, const char *value);
bool reg_add_num(cJSON *obj, const char *key, double value);
/* Takes ownership of `item` on every path. */
bool reg_add_item(cJSON *obj, const char *key, cJSON *item);
/* A key, or null for an identity without keys (type none). */
bool reg_add_key(cJSON *obj, const char *name, const char *key);
cJSON *reg_capabilities_json(const struct th_identity *id);
cJSON *reg_parent_scopes_json(const struct th_identity *id);

/* ---- registry_doc.c: registry documents ---- */

/* An overwrite of an existing identity, prepared in full before anything changes. */
struct pending_update {
    struct th_identity *id; /* borrowed */
    struct ident_change change;
    bool ident_changed;
    struct th_twin *twin; /* owned replacement twin, or NULL to keep */
};

/* What the parent scopes a registry document names resolve against. */
struct doc_view {
    const struct th_registry *reg;
    struct th_identity *const *built; /* devices the document creates */
    size_t nbuilt;
    const struct pending_update *updates; /* overwrites of existing identities (import) */
    size_t nupdates;
};

/* Optional members: absent and null give *out NULL; a wrong type is refused naming path.key. */
th_result reg_opt_string(const cJSON *obj, const char *key, const char *path, const char **out,
                         struct th_error *err);
th_result reg_opt_array(const cJSON *obj, const char *key, const char *path, const cJSON **out,
                        struct th_error *err);
/* A required, valid id member. */
th_result reg_check_id_field(const cJSON *ident, const char *key, const char *path,
                             const char **out, struct th_error *err);
/* The string member `key`, or NULL. */
const char *reg_get_str(const cJSON *obj, const char *key);
/* Validates a whole document (load, or import with `import`) and stages its policies. */
th_result reg_check_document(const struct th_registry *reg, const cJSON *doc, bool import,
                             const cJSON **out_policies, const cJSON **out_devices,
                             struct th_policy *staged, size_t *staged_count, struct th_error *err);
/* Applies tags, desired and reported of a validated entry to `id`'s twin. */
th_result reg_apply_twin(struct th_identity *id, const cJSON *src, int64_t now_us, const char *path,
                         struct th_error *err);
/* Detached identities from validated entries; caller frees *out with reg_identity_free. */
th_result reg_build_module(struct th_registry *reg, const char *device_id, const cJSON *msrc,
                           const char *path, int64_t now_us, struct th_identity **out,
                           struct th_error *err);
th_result reg_build_device(struct th_registry *reg, const cJSON *src, const char *path,
                           int64_t now_us, struct th_identity **out, struct th_error *err);
/* Resolves a parent scope the document names (*slot, malloc'd) to the named device's scope. */
th_result reg_doc_resolve(const struct doc_view *v, const char *self, bool edge, char **slot,
                          struct th_error *err);
/* Resolves the parents of the devices a document creates (v->built). */
th_result reg_doc_resolve_built(const struct doc_view *v, struct th_error *err);

#endif
