/*
 * registry.c - the identity registry (iothub-protocol.md sections 1, 2.5,
 * 5.2, 7.1, 10.3): devices in a uthash table keyed by device id (insertion
 * order kept for iteration), modules as a per-device array, shared access
 * policies in a fixed array, per-device C2D queues, the registry file loader
 * (docs/registry.md) and the service JSON views of identities and twins;
 * identity updates (10.4), service create/update requests with the hub's
 * identity fields (authentication type sas or none, managedBy, IoT Edge
 * capability, deviceScope and parentScopes), registry export and import
 * (10.7-style bulk: skip or overwrite existing identities) and the
 * full-fidelity device state used for snapshots.
 *
 * Every multi-step change (load, import, restore, update) builds detached
 * objects or prepared values first and commits with steps that cannot fail,
 * so a refused or failed call leaves the registry unchanged.
 *
 * Pure data: no I/O besides th_random_key for generated keys.
 */
#include "registry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "th_limits.h"
#include "topic.h"
#include "util.h"

/* uthash must never call exit(): a failed add leaves hh.tbl NULL instead. */
#define HASH_NONFATAL_OOM 1
#include <uthash.h>

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

/* ------------------------------------------------------------------ */
/* small helpers                                                       */
/* ------------------------------------------------------------------ */

/* True when `key` is base64 of TH_KEY_MIN_BYTES..TH_KEY_MAX_BYTES bytes. */
static bool reg_key_valid(const char *key)
{
    size_t len = strlen(key);
    if (len == 0 || len >= TH_KEY_BUF)
        return false;
    uint8_t raw[TH_KEY_BUF];
    size_t n = 0;
    if (th_b64_decode(key, len, raw, sizeof raw, &n) != TH_OK)
        return false;
    return n >= TH_KEY_MIN_BYTES && n <= TH_KEY_MAX_BYTES;
}

static bool reg_key_given(const char *key)
{
    return key && key[0] != '\0';
}

/* Copy a (validated) key into dst, or generate one when none is given. */
static th_result reg_fill_key(char dst[TH_KEY_BUF], const char *key)
{
    if (!reg_key_given(key))
        return th_random_key(TH_GENERATED_KEY_BYTES, dst, TH_KEY_BUF);
    size_t len = strlen(key);
    if (len >= TH_KEY_BUF)
        return TH_ERR_INVAL;
    memcpy(dst, key, len + 1);
    return TH_OK;
}

static bool reg_policy_name_valid(const char *name, size_t len)
{
    if (len == 0 || len > TH_POLICY_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

static bool id_valid(const char *id)
{
    return id && th_id_valid(id, strlen(id));
}

static char *reg_dup_str(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

/*
 * Next generation id: .NET ticks of now_us, bumped past the last one issued
 * so that a device deleted and re-created within one tick still changes it.
 */
static void next_generation(struct th_registry *reg, int64_t now_us, char out[24])
{
    uint64_t us = now_us > 0 ? (uint64_t)now_us : 0;
    uint64_t gen = us * 10u + TH_TICKS_UNIX_EPOCH;
    if (gen <= reg->last_generation)
        gen = reg->last_generation + 1;
    reg->last_generation = gen;
    snprintf(out, 24, "%llu", (unsigned long long)gen);
}

/* ------------------------------------------------------------------ */
/* identities                                                          */
/* ------------------------------------------------------------------ */

void th_c2d_msg_free(struct th_c2d_msg *msg)
{
    if (!msg)
        return;
    free(msg->message_id);
    free(msg->bag);
    free(msg->body);
    free(msg);
}

/* Frees an identity with its modules, twin and queue; accepts NULL and half-built. */
static void reg_identity_free(struct th_identity *id)
{
    if (!id)
        return;
    if (id->modules) {
        for (size_t i = 0; i < id->module_count; i++)
            reg_identity_free(id->modules[i]);
        free(id->modules);
    }
    struct th_c2d_msg *m = id->c2d_head;
    while (m) {
        struct th_c2d_msg *next = m->next;
        th_c2d_msg_free(m);
        m = next;
    }
    th_twin_free(id->twin);
    free(id->device_id);
    free(id->module_id);
    free(id->status_reason);
    free(id->managed_by);
    free(id->model_id);
    free(id->device_scope);
    free(id->parent_scope);
    free(id);
}

/*
 * A detached identity with keys (given or generated; none for TH_AUTH_NONE),
 * a fresh generation id, etag counter 1 and a new twin. Ids and keys must
 * already be valid. Caller frees with reg_identity_free; NULL on failure with *r set.
 */
static struct th_identity *reg_identity_create(struct th_registry *reg, const char *device_id,
                                               const char *module_id, enum th_auth_type auth,
                                               const char *primary_key, const char *secondary_key,
                                               bool enabled, int64_t now_us, th_result *r)
{
    struct th_identity *id = calloc(1, sizeof *id);
    if (!id) {
        *r = TH_ERR_NOMEM;
        return NULL;
    }
    id->device_id = reg_dup_str(device_id);
    id->module_id = module_id ? reg_dup_str(module_id) : NULL;
    id->twin = th_twin_new(now_us);
    if (!id->device_id || (module_id && !id->module_id) || !id->twin) {
        reg_identity_free(id);
        *r = TH_ERR_NOMEM;
        return NULL;
    }
    id->auth_type = auth;
    *r = TH_OK;
    if (auth == TH_AUTH_SAS) {
        *r = reg_fill_key(id->primary_key, primary_key);
        if (*r == TH_OK)
            *r = reg_fill_key(id->secondary_key, secondary_key);
    }
    if (*r != TH_OK) {
        reg_identity_free(id);
        return NULL;
    }
    id->enabled = module_id ? true : enabled;
    id->etag_counter = 1;
    next_generation(reg, now_us, id->generation_id);
    return id;
}

/* Inserts a built device into the table. Takes ownership on success only. */
static th_result reg_insert_device(struct th_registry *reg, struct th_identity *dev)
{
    struct dev_node *node = calloc(1, sizeof *node);
    if (!node)
        return TH_ERR_NOMEM;
    node->id = dev;
    HASH_ADD_KEYPTR(hh, reg->devices, dev->device_id, strlen(dev->device_id), node);
    if (node->hh.tbl == NULL) {
        free(node);
        return TH_ERR_NOMEM;
    }
    return TH_OK;
}

static struct dev_node *reg_find_node(const struct th_registry *reg, const char *device_id,
                                      size_t dlen)
{
    struct dev_node *node = NULL;
    if (!reg || !device_id)
        return NULL;
    HASH_FIND(hh, reg->devices, device_id, dlen, node);
    return node;
}

static struct th_identity *reg_find_module(const struct th_identity *dev, const char *module_id,
                                           size_t mlen, size_t *index)
{
    for (size_t i = 0; i < dev->module_count; i++) {
        const char *m = dev->modules[i]->module_id;
        if (strlen(m) == mlen && memcmp(m, module_id, mlen) == 0) {
            if (index)
                *index = i;
            return dev->modules[i];
        }
    }
    return NULL;
}

/* Appends a built module to a device. Takes ownership on success only. */
static th_result reg_attach_module(struct th_identity *dev, struct th_identity *mod)
{
    struct th_identity **grown =
        realloc(dev->modules, (dev->module_count + 1) * sizeof *dev->modules);
    if (!grown)
        return TH_ERR_NOMEM;
    dev->modules = grown;
    dev->modules[dev->module_count++] = mod;
    mod->parent = dev;
    return TH_OK;
}

/* ------------------------------------------------------------------ */
/* IoT Edge scopes                                                     */
/* ------------------------------------------------------------------ */

/* .NET ticks of a time in microseconds since the epoch. */
static uint64_t ticks_of(int64_t now_us)
{
    return (now_us > 0 ? (uint64_t)now_us : 0) * 10u + TH_TICKS_UNIX_EPOCH;
}

/*
 * The deviceScope the hub gives an IoT Edge device, "ms-azure-iot-edge://
 * {deviceId}-{ticks}" (the ticks are its generation id when it is created
 * as an edge device). Caller frees with free(); NULL on OOM.
 */
static char *edge_scope_new(const char *device_id, const char *ticks)
{
    size_t n = strlen(TH_EDGE_SCOPE_PREFIX) + strlen(device_id) + strlen(ticks) + 2;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%s%s-%s", TH_EDGE_SCOPE_PREFIX, device_id, ticks);
    return s;
}

/*
 * True when `scope` is TH_EDGE_SCOPE_PREFIX "{deviceId}-{1 to 20 digits}"
 * with a valid device id; the id goes into id_buf when it is not NULL.
 */
static bool reg_parse_scope(const char *scope, char *id_buf, size_t size)
{
    size_t plen = strlen(TH_EDGE_SCOPE_PREFIX);
    if (!scope || strncmp(scope, TH_EDGE_SCOPE_PREFIX, plen) != 0)
        return false;
    const char *rest = scope + plen;
    const char *dash = strrchr(rest, '-');
    if (!dash || dash == rest)
        return false;
    size_t digits = strlen(dash + 1), idlen = (size_t)(dash - rest);
    if (digits == 0 || digits > 20 || !th_id_valid(rest, idlen))
        return false;
    for (size_t i = 1; i <= digits; i++) {
        if (dash[i] < '0' || dash[i] > '9')
            return false;
    }
    if (id_buf) {
        if (idlen >= size)
            return false;
        memcpy(id_buf, rest, idlen);
        id_buf[idlen] = '\0';
    }
    return true;
}

/* The scopes of a device after a change (see th_registry_create); strings owned. */
struct scope_plan {
    bool edge;
    char *device_scope; /* edge: its own scope; leaf: its parent's; NULL none */
    char *parent_scope; /* edge: its parent's scope; NULL none (always NULL for a leaf) */
};

static void scope_plan_free(struct scope_plan *s)
{
    free(s->device_scope);
    free(s->parent_scope);
    s->device_scope = s->parent_scope = NULL;
}

static th_result reg_plan_scopes(const struct th_registry *reg, const struct th_identity *id,
                                 const char *device_id, const char *gen,
                                 const struct th_ident_req *req, int64_t now_us, bool doc,
                                 bool *raw, struct scope_plan *out, struct th_error *err);

/* The IoT Edge device whose deviceScope is `scope`; NULL when none (linear: scopes are rare). */
static const struct th_identity *edge_by_scope(const struct th_registry *reg, const char *scope)
{
    if (!reg || !scope)
        return NULL;
    for (const struct dev_node *n = reg->devices; n; n = n->hh.next) {
        if (n->id->iot_edge && n->id->device_scope && strcmp(n->id->device_scope, scope) == 0)
            return n->id;
    }
    return NULL;
}

/* ------------------------------------------------------------------ */
/* registry                                                            */
/* ------------------------------------------------------------------ */

struct th_registry *th_registry_new(void)
{
    return calloc(1, sizeof(struct th_registry));
}

void th_registry_free(struct th_registry *reg)
{
    if (!reg)
        return;
    struct dev_node *node, *tmp;
    HASH_ITER(hh, reg->devices, node, tmp)
    {
        HASH_DEL(reg->devices, node);
        reg_identity_free(node->id);
        free(node);
    }
    free(reg);
}

/*
 * Validates a device creation and builds the detached device. Caller
 * inserts *out or frees it with reg_identity_free.
 */
static th_result reg_device_prepare(struct th_registry *reg, const char *device_id,
                                    enum th_auth_type auth, const char *primary_key,
                                    const char *secondary_key, bool enabled, int64_t now_us,
                                    struct th_identity **out, struct th_error *err)
{
    if (!reg)
        return th_error_set(err, TH_ERR_INVAL, 0, "no registry");
    if (!id_valid(device_id))
        return th_error_set(err, TH_ERR_INVAL, 0,
                            "deviceId '%s' is invalid: use at most 128 letters, digits or "
                            "- . + %% _ # * ? ! ( ) , = @ $ ' : ;",
                            device_id ? device_id : "");
    if (reg_key_given(primary_key) && !reg_key_valid(primary_key))
        return th_error_set(err, TH_ERR_INVAL, 0, "primaryKey must be base64 of 16 to 64 bytes");
    if (reg_key_given(secondary_key) && !reg_key_valid(secondary_key))
        return th_error_set(err, TH_ERR_INVAL, 0, "secondaryKey must be base64 of 16 to 64 bytes");
    if (reg_find_node(reg, device_id, strlen(device_id)))
        return th_error_set(err, TH_ERR_EXISTS, 409001, "device '%s' already exists", device_id);
    th_result r;
    struct th_identity *dev = reg_identity_create(reg, device_id, NULL, auth, primary_key,
                                                  secondary_key, enabled, now_us, &r);
    if (!dev)
        return th_error_set(err, r, 0, "cannot create device '%s': %s", device_id,
                            th_result_str(r));
    *out = dev;
    return TH_OK;
}

th_result th_registry_add_device(struct th_registry *reg, const char *device_id,
                                 const char *primary_key, const char *secondary_key, bool enabled,
                                 int64_t now_us, struct th_identity **out, struct th_error *err)
{
    struct th_identity *dev = NULL;
    th_result r = reg_device_prepare(reg, device_id, TH_AUTH_SAS, primary_key, secondary_key,
                                     enabled, now_us, &dev, err);
    if (r != TH_OK)
        return r;
    r = reg_insert_device(reg, dev);
    if (r != TH_OK) {
        reg_identity_free(dev);
        return th_error_set(err, r, 0, "cannot add device '%s': %s", device_id, th_result_str(r));
    }
    if (out)
        *out = dev;
    return TH_OK;
}

/*
 * Validates a module creation and builds the detached module; *out_dev
 * borrows its device. Caller attaches *out_mod or frees it with reg_identity_free.
 */
static th_result reg_module_prepare(struct th_registry *reg, const char *device_id,
                                    const char *module_id, enum th_auth_type auth,
                                    const char *primary_key, const char *secondary_key,
                                    int64_t now_us, struct th_identity **out_dev,
                                    struct th_identity **out_mod, struct th_error *err)
{
    if (!reg || !device_id)
        return th_error_set(err, TH_ERR_INVAL, 0, "no registry or device id");
    if (!id_valid(module_id))
        return th_error_set(err, TH_ERR_INVAL, 0,
                            "moduleId '%s' is invalid: use at most 128 letters, digits or "
                            "- . + %% _ # * ? ! ( ) , = @ $ ' : ;",
                            module_id ? module_id : "");
    if (reg_key_given(primary_key) && !reg_key_valid(primary_key))
        return th_error_set(err, TH_ERR_INVAL, 0, "primaryKey must be base64 of 16 to 64 bytes");
    if (reg_key_given(secondary_key) && !reg_key_valid(secondary_key))
        return th_error_set(err, TH_ERR_INVAL, 0, "secondaryKey must be base64 of 16 to 64 bytes");
    struct dev_node *node = reg_find_node(reg, device_id, strlen(device_id));
    if (!node)
        return th_error_set(err, TH_ERR_NOT_FOUND, 404001, "device '%s' does not exist", device_id);
    struct th_identity *dev = node->id;
    if (reg_find_module(dev, module_id, strlen(module_id), NULL))
        return th_error_set(err, TH_ERR_EXISTS, 409301, "module '%s' already exists on device '%s'",
                            module_id, device_id);
    if (dev->module_count >= TH_MAX_MODULES_PER_DEVICE)
        return th_error_set(err, TH_ERR_TOO_LARGE, 413003,
                            "device '%s' already has %d modules, the maximum", device_id,
                            TH_MAX_MODULES_PER_DEVICE);
    th_result r;
    struct th_identity *mod = reg_identity_create(reg, device_id, module_id, auth, primary_key,
                                                  secondary_key, true, now_us, &r);
    if (!mod)
        return th_error_set(err, r, 0, "cannot create module '%s': %s", module_id,
                            th_result_str(r));
    *out_dev = dev;
    *out_mod = mod;
    return TH_OK;
}

th_result th_registry_add_module(struct th_registry *reg, const char *device_id,
                                 const char *module_id, const char *primary_key,
                                 const char *secondary_key, int64_t now_us,
                                 struct th_identity **out, struct th_error *err)
{
    struct th_identity *dev = NULL, *mod = NULL;
    th_result r = reg_module_prepare(reg, device_id, module_id, TH_AUTH_SAS, primary_key,
                                     secondary_key, now_us, &dev, &mod, err);
    if (r != TH_OK)
        return r;
    r = reg_attach_module(dev, mod);
    if (r != TH_OK) {
        reg_identity_free(mod);
        return th_error_set(err, r, 0, "cannot add module '%s': %s", module_id, th_result_str(r));
    }
    if (out)
        *out = mod;
    return TH_OK;
}

th_result th_registry_remove(struct th_registry *reg, const char *device_id, const char *module_id)
{
    if (!reg || !device_id)
        return TH_ERR_INVAL;
    struct dev_node *node = reg_find_node(reg, device_id, strlen(device_id));
    if (!node)
        return TH_ERR_NOT_FOUND;
    if (!module_id) {
        HASH_DEL(reg->devices, node);
        reg_identity_free(node->id);
        free(node);
        return TH_OK;
    }
    struct th_identity *dev = node->id;
    size_t i;
    struct th_identity *mod = reg_find_module(dev, module_id, strlen(module_id), &i);
    if (!mod)
        return TH_ERR_NOT_FOUND;
    memmove(&dev->modules[i], &dev->modules[i + 1],
            (dev->module_count - i - 1) * sizeof *dev->modules);
    dev->module_count--;
    reg_identity_free(mod);
    return TH_OK;
}

struct th_identity *th_registry_find_n(const struct th_registry *reg, const char *device_id,
                                       size_t dlen, const char *module_id, size_t mlen)
{
    struct dev_node *node = reg_find_node(reg, device_id, dlen);
    if (!node)
        return NULL;
    if (!module_id)
        return node->id;
    return reg_find_module(node->id, module_id, mlen, NULL);
}

struct th_identity *th_registry_find(const struct th_registry *reg, const char *device_id,
                                     const char *module_id)
{
    if (!device_id)
        return NULL;
    return th_registry_find_n(reg, device_id, strlen(device_id), module_id,
                              module_id ? strlen(module_id) : 0);
}

struct th_identity *th_registry_next_device(const struct th_registry *reg,
                                            const struct th_identity *prev)
{
    if (!reg || !reg->devices)
        return NULL;
    if (!prev)
        return reg->devices->id;
    struct dev_node *node = reg_find_node(reg, prev->device_id, strlen(prev->device_id));
    if (!node || !node->hh.next)
        return NULL;
    return ((struct dev_node *)node->hh.next)->id;
}

size_t th_registry_device_count(const struct th_registry *reg)
{
    return reg ? HASH_COUNT(reg->devices) : 0;
}

/* ------------------------------------------------------------------ */
/* policies                                                            */
/* ------------------------------------------------------------------ */

static struct th_policy *reg_policy_slot(const struct th_registry *reg, const char *name,
                                         size_t len)
{
    for (size_t i = 0; i < reg->policy_count; i++) {
        const struct th_policy *p = &reg->policies[i];
        if (strlen(p->name) == len && memcmp(p->name, name, len) == 0)
            return (struct th_policy *)p;
    }
    return NULL;
}

const struct th_policy *th_registry_policy(const struct th_registry *reg, const char *name,
                                           size_t len)
{
    if (!reg || !name)
        return NULL;
    return reg_policy_slot(reg, name, len);
}

/* Fills a policy value; keys must be valid or absent. */
static th_result reg_policy_fill(struct th_policy *p, const char *name, const char *primary_key,
                                 const char *secondary_key, unsigned perms)
{
    struct th_policy tmp;
    memset(&tmp, 0, sizeof tmp);
    size_t len = strlen(name);
    memcpy(tmp.name, name, len + 1);
    th_result r = reg_fill_key(tmp.primary_key, primary_key);
    if (r == TH_OK)
        r = reg_fill_key(tmp.secondary_key, secondary_key);
    if (r != TH_OK)
        return r;
    tmp.perms = perms;
    *p = tmp;
    return TH_OK;
}

#define TH_PERM_ALL                                                                                \
    (TH_PERM_REGISTRY_READ | TH_PERM_REGISTRY_WRITE | TH_PERM_SERVICE_CONNECT |                    \
     TH_PERM_DEVICE_CONNECT)

th_result th_registry_set_policy(struct th_registry *reg, const char *name, const char *primary_key,
                                 const char *secondary_key, unsigned perms)
{
    if (!reg || !name || !reg_policy_name_valid(name, strlen(name)))
        return TH_ERR_INVAL;
    if (perms == 0 || (perms & ~(unsigned)TH_PERM_ALL))
        return TH_ERR_INVAL;
    if ((reg_key_given(primary_key) && !reg_key_valid(primary_key)) ||
        (reg_key_given(secondary_key) && !reg_key_valid(secondary_key)))
        return TH_ERR_INVAL;
    struct th_policy *slot = reg_policy_slot(reg, name, strlen(name));
    if (!slot) {
        if (reg->policy_count >= TH_MAX_POLICIES)
            return TH_ERR_TOO_LARGE;
        slot = &reg->policies[reg->policy_count];
        th_result r = reg_policy_fill(slot, name, primary_key, secondary_key, perms);
        if (r == TH_OK)
            reg->policy_count++;
        return r;
    }
    return reg_policy_fill(slot, name, primary_key, secondary_key, perms);
}

th_result th_registry_add_default_policies(struct th_registry *reg)
{
    static const struct {
        const char *name;
        unsigned perms;
    } dev_policies[] = {
        {"iothubowner", TH_PERM_ALL},
        {"service", TH_PERM_SERVICE_CONNECT},
        {"device", TH_PERM_DEVICE_CONNECT},
        {"registryRead", TH_PERM_REGISTRY_READ},
        {"registryReadWrite", TH_PERM_REGISTRY_READ | TH_PERM_REGISTRY_WRITE},
    };
    if (!reg)
        return TH_ERR_INVAL;
    th_result r;
    for (size_t i = 0; i < sizeof dev_policies / sizeof dev_policies[0]; i++) {
        const char *name = dev_policies[i].name;
        if (reg_policy_slot(reg, name, strlen(name)))
            continue;
        r = th_registry_set_policy(reg, name, TH_DEV_OWNER_KEY, TH_DEV_OWNER_SECONDARY_KEY,
                                   dev_policies[i].perms);
        if (r != TH_OK)
            return r;
    }
    return TH_OK;
}

th_result th_registry_add_dev_identities(struct th_registry *reg, int64_t now_us)
{
    th_result r = th_registry_add_default_policies(reg);
    if (r != TH_OK)
        return r;
    if (!th_registry_find(reg, TH_DEV_DEVICE_ID, NULL)) {
        r = th_registry_add_device(reg, TH_DEV_DEVICE_ID, TH_DEV_DEVICE_KEY,
                                   TH_DEV_DEVICE_SECONDARY_KEY, true, now_us, NULL, NULL);
        if (r != TH_OK)
            return r;
    }
    if (!th_registry_find(reg, TH_DEV_DEVICE_ID, TH_DEV_MODULE_ID)) {
        r = th_registry_add_module(reg, TH_DEV_DEVICE_ID, TH_DEV_MODULE_ID, TH_DEV_MODULE_KEY,
                                   TH_DEV_MODULE_SECONDARY_KEY, now_us, NULL, NULL);
        if (r != TH_OK)
            return r;
    }
    return TH_OK;
}

/* ------------------------------------------------------------------ */
/* connection state and C2D queue                                      */
/* ------------------------------------------------------------------ */

void th_identity_set_connected(struct th_identity *id, bool connected, int64_t now_us)
{
    if (!id)
        return;
    if (id->connected != connected) {
        id->connected = connected;
        id->connection_state_updated_us = now_us;
    }
    /* Connecting is activity; disconnecting is not. */
    if (connected)
        id->last_activity_us = now_us;
}

void th_identity_touch(struct th_identity *id, int64_t now_us)
{
    if (id)
        id->last_activity_us = now_us;
}

th_result th_identity_c2d_push(struct th_identity *dev, const char *message_id, const char *bag,
                               const void *body, size_t len, int64_t now_us, struct th_error *err)
{
    if (!dev || dev->module_id)
        return th_error_set(err, TH_ERR_INVAL, 0,
                            "cloud-to-device messages can only be sent to devices");
    if (len > 0 && !body)
        return th_error_set(err, TH_ERR_INVAL, 0, "message body missing");
    if (len > TH_C2D_MAX_BYTES)
        return th_error_set(err, TH_ERR_TOO_LARGE, 413001,
                            "message of %zu bytes exceeds the %d byte limit", len,
                            TH_C2D_MAX_BYTES);
    if (dev->c2d_count >= TH_C2D_MAX_QUEUE)
        return th_error_set(err, TH_ERR_QUEUE_FULL, 403004,
                            "device '%s' already has %d queued messages; let it receive "
                            "some first",
                            dev->device_id, TH_C2D_MAX_QUEUE);
    struct th_c2d_msg *msg = calloc(1, sizeof *msg);
    if (!msg)
        return th_error_set(err, TH_ERR_NOMEM, 0, "out of memory");
    msg->message_id = reg_dup_str(message_id ? message_id : "");
    msg->bag = reg_dup_str(bag ? bag : "");
    if (len > 0) {
        msg->body = malloc(len);
        if (msg->body)
            memcpy(msg->body, body, len);
    }
    if (!msg->message_id || !msg->bag || (len > 0 && !msg->body)) {
        th_c2d_msg_free(msg);
        return th_error_set(err, TH_ERR_NOMEM, 0, "out of memory");
    }
    msg->len = len;
    msg->enqueued_us = now_us;
    if (dev->c2d_tail)
        dev->c2d_tail->next = msg;
    else
        dev->c2d_head = msg;
    dev->c2d_tail = msg;
    dev->c2d_count++;
    return TH_OK;
}

struct th_c2d_msg *th_identity_c2d_pop(struct th_identity *dev)
{
    if (!dev || !dev->c2d_head)
        return NULL;
    struct th_c2d_msg *msg = dev->c2d_head;
    dev->c2d_head = msg->next;
    if (!dev->c2d_head)
        dev->c2d_tail = NULL;
    dev->c2d_count--;
    msg->next = NULL;
    return msg;
}

void th_identity_etag(const struct th_identity *id, char buf[32])
{
    char dec[24];
    int n = snprintf(dec, sizeof dec, "%llu", (unsigned long long)id->etag_counter);
    if (th_b64_encode((const uint8_t *)dec, (size_t)n, buf, 32) != TH_OK)
        buf[0] = '\0'; /* cannot happen: 20 digits encode to 28 characters */
}

/* ------------------------------------------------------------------ */
/* registry document loader                                            */
/* ------------------------------------------------------------------ */

/* Hub-maintained fields of identity and twin JSON: ignored so exports can be pasted. */
static const char *const readonly_fields[] = {
    "generationId",
    "etag",
    "deviceEtag",
    "connectionState",
    "connectionStateUpdatedTime",
    "statusUpdatedTime",
    "statusUpdateTime",
    "lastActivityTime",
    "cloudToDeviceMessageCount",
    "capabilities",
    "deviceScope",
    "parentScopes",
    "version",
    "authenticationType",
    "x509Thumbprint",
    "modelId",
};

static bool in_list(const char *name, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(name, list[i]) == 0)
            return true;
    }
    return false;
}

/* Refuses members of `obj` that are neither in `allowed` nor hub read-only fields. */
static th_result check_members(const cJSON *obj, const char *path, const char *const *allowed,
                               size_t n, bool allow_readonly, struct th_error *err)
{
    const cJSON *item;
    cJSON_ArrayForEach(item, obj)
    {
        const char *k = item->string ? item->string : "";
        if (in_list(k, allowed, n))
            continue;
        if (allow_readonly &&
            in_list(k, readonly_fields, sizeof readonly_fields / sizeof readonly_fields[0]))
            continue;
        return th_error_set(err, TH_ERR_INVAL, 0, "%s%s%s: unknown field", path, path[0] ? "." : "",
                            k);
    }
    return TH_OK;
}

/*
 * Optional string member: absent and null give *out NULL; anything but a
 * string is refused, naming path.key.
 */
static th_result reg_opt_string(const cJSON *obj, const char *key, const char *path,
                                const char **out, struct th_error *err)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    *out = NULL;
    if (!item || cJSON_IsNull(item))
        return TH_OK;
    if (!cJSON_IsString(item) || !item->valuestring)
        return th_error_set(err, TH_ERR_INVAL, 0, "%s.%s: must be a string", path, key);
    *out = item->valuestring;
    return TH_OK;
}

/* Optional object member (absent or null -> *out NULL). */
static th_result opt_object(const cJSON *obj, const char *key, const char *path, const cJSON **out,
                            struct th_error *err)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    *out = NULL;
    if (!item || cJSON_IsNull(item))
        return TH_OK;
    if (!cJSON_IsObject(item))
        return th_error_set(err, TH_ERR_INVAL, 0, "%s.%s: must be an object", path, key);
    *out = item;
    return TH_OK;
}

static th_result reg_opt_array(const cJSON *obj, const char *key, const char *path,
                               const cJSON **out, struct th_error *err)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    *out = NULL;
    if (!item || cJSON_IsNull(item))
        return TH_OK;
    if (!cJSON_IsArray(item))
        return th_error_set(err, TH_ERR_INVAL, 0, "%s%s%s: must be an array", path,
                            path[0] ? "." : "", key);
    *out = item;
    return TH_OK;
}

/* Parses "RegistryRead, ServiceConnect" (comma and/or space separated). 0 when invalid. */
static unsigned parse_rights(const char *s, const char **bad, size_t *bad_len)
{
    static const struct {
        const char *name;
        unsigned perm;
    } names[] = {
        {"RegistryRead", TH_PERM_REGISTRY_READ},
        {"RegistryWrite", TH_PERM_REGISTRY_WRITE},
        {"ServiceConnect", TH_PERM_SERVICE_CONNECT},
        {"DeviceConnect", TH_PERM_DEVICE_CONNECT},
    };
    unsigned perms = 0;
    *bad = NULL;
    *bad_len = 0;
    while (*s) {
        while (*s == ',' || *s == ' ' || *s == '\t')
            s++;
        if (!*s)
            break;
        const char *start = s;
        while (*s && *s != ',' && *s != ' ' && *s != '\t')
            s++;
        size_t len = (size_t)(s - start);
        unsigned perm = 0;
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            if (th_slice_ieq(start, len, names[i].name, strlen(names[i].name)))
                perm = names[i].perm;
        }
        if (!perm) {
            *bad = start;
            *bad_len = len;
            return 0;
        }
        perms |= perm;
    }
    return perms;
}

/* Validated keys of an identity's "authentication" member (NULL = generate). */
struct auth_keys {
    const char *primary;
    const char *secondary;
    enum th_auth_type type; /* TH_AUTH_SAS when no type is given */
};

static th_result check_key(const char *key, const char *path, const char *field,
                           struct th_error *err)
{
    if (reg_key_given(key) && !reg_key_valid(key))
        return th_error_set(err, TH_ERR_INVAL, 0,
                            "%s.%s: must be base64 of 16 to 64 bytes (or omit it to have "
                            "one generated)",
                            path, field);
    return TH_OK;
}

static th_result check_auth(const cJSON *ident, const char *path, struct auth_keys *keys,
                            struct th_error *err)
{
    static const char *const auth_fields[] = {"symmetricKey", "type", "x509Thumbprint"};
    static const char *const sym_fields[] = {"primaryKey", "secondaryKey"};
    const cJSON *auth, *sym;
    const char *type;
    char sub[160];
    th_result r;

    keys->primary = keys->secondary = NULL;
    keys->type = TH_AUTH_SAS;
    if ((r = opt_object(ident, "authentication", path, &auth, err)) != TH_OK || !auth)
        return r;
    snprintf(sub, sizeof sub, "%s.authentication", path);
    if ((r = check_members(auth, sub, auth_fields, 3, false, err)) != TH_OK)
        return r;
    if ((r = reg_opt_string(auth, "type", sub, &type, err)) != TH_OK)
        return r;
    if (type && strcmp(type, "none") == 0)
        keys->type = TH_AUTH_NONE;
    else if (type && strcmp(type, "sas") != 0)
        return th_error_set(err, TH_ERR_INVAL, 0,
                            "%s.type: \"sas\" or \"none\" (X.509 types are not emulated), "
                            "not '%s'",
                            sub, type);
    if ((r = opt_object(auth, "symmetricKey", sub, &sym, err)) != TH_OK || !sym)
        return r;
    snprintf(sub, sizeof sub, "%s.authentication.symmetricKey", path);
    if ((r = check_members(sym, sub, sym_fields, 2, false, err)) != TH_OK)
        return r;
    if ((r = reg_opt_string(sym, "primaryKey", sub, &keys->primary, err)) != TH_OK ||
        (r = reg_opt_string(sym, "secondaryKey", sub, &keys->secondary, err)) != TH_OK)
        return r;
    if ((r = check_key(keys->primary, sub, "primaryKey", err)) != TH_OK ||
        (r = check_key(keys->secondary, sub, "secondaryKey", err)) != TH_OK)
        return r;
    if (keys->type == TH_AUTH_NONE &&
        (reg_key_given(keys->primary) || reg_key_given(keys->secondary)))
        return th_error_set(err, TH_ERR_INVAL, 0,
                            "%s: type \"none\" has no keys; remove them or use type \"sas\"", sub);
    return TH_OK;
}

/*
 * capabilities {iotEdge}, deviceScope and parentScopes (at most one entry)
 * of a device entry. Scopes must have the hub's form (reg_parse_scope); they are
 * resolved against the registry and the document when the devices are built.
 */
static th_result check_edge_fields(const cJSON *dev, const char *path, struct th_error *err)
{
    static const char *const cap_fields[] = {"iotEdge"};
    const cJSON *caps, *parents, *item;
    const char *scope;
    char sub[160];
    th_result r;
    if ((r = opt_object(dev, "capabilities", path, &caps, err)) != TH_OK)
        return r;
    snprintf(sub, sizeof sub, "%s.capabilities", path);
    if (caps && (r = check_members(caps, sub, cap_fields, 1, false, err)) != TH_OK)
        return r;
    item = cJSON_GetObjectItemCaseSensitive(caps, "iotEdge");
    if (item && !cJSON_IsNull(item) && !cJSON_IsBool(item))
        return th_error_set(err, TH_ERR_INVAL, 0, "%s.iotEdge: must be true or false", sub);
    if ((r = reg_opt_string(dev, "deviceScope", path, &scope, err)) != TH_OK)
        return r;
    if (scope && scope[0] && !reg_parse_scope(scope, NULL, 0))
        return th_error_set(err, TH_ERR_INVAL, 0,
                            "%s.deviceScope: '%s' is not a scope such as "
                            "\"" TH_EDGE_SCOPE_PREFIX "{deviceId}-{digits}\"",
                            path, scope);
    if ((r = reg_opt_array(dev, "parentScopes", path, &parents, err)) != TH_OK || !parents)
        return r;
    if (cJSON_GetArraySize(parents) > 1)
        return th_error_set(err, TH_ERR_INVAL, 0,
                            "%s.parentScopes: an IoT Edge device has at most one parent", path);
    cJSON_ArrayForEach(item, parents)
    {
        if (!cJSON_IsString(item) || !reg_parse_scope(item->valuestring, NULL, 0))
            return th_error_set(err, TH_ERR_INVAL, 0,
                                "%s.parentScopes[0]: must be a scope such as "
                                "\"" TH_EDGE_SCOPE_PREFIX "{deviceId}-{digits}\"",
                                path);
    }
    return TH_OK;
}

/* tags must be an object; properties may hold only desired and reported objects. */
static th_result check_twin_fields(const cJSON *ident, const char *path, struct th_error *err)
{
    static const char *const prop_fields[] = {"desired", "reported"};
    const cJSON *obj;
    char sub[160];
    th_result r;
    if ((r = opt_object(ident, "tags", path, &obj, err)) != TH_OK)
        return r;
    if ((r = opt_object(ident, "properties", path, &obj, err)) != TH_OK || !obj)
        return r;
    snprintf(sub, sizeof sub, "%s.properties", path);
    if ((r = check_members(obj, sub, prop_fields, 2, false, err)) != TH_OK)
        return r;
    const cJSON *section;
    if ((r = opt_object(obj, "desired", sub, &section, err)) != TH_OK ||
        (r = opt_object(obj, "reported", sub, &section, err)) != TH_OK)
        return r;
    return TH_OK;
}

static th_result reg_check_id_field(const cJSON *ident, const char *key, const char *path,
                                    const char **out, struct th_error *err)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(ident, key);
    if (!cJSON_IsString(item) || !item->valuestring)
        return th_error_set(err, TH_ERR_INVAL, 0, "%s.%s: required string missing", path, key);
    if (!th_id_valid(item->valuestring, strlen(item->valuestring)))
        return th_error_set(err, TH_ERR_INVAL, 0,
                            "%s.%s: '%s' is not a valid id (at most 128 letters, digits or "
                            "- . + %% _ # * ? ! ( ) , = @ $ ' : ;)",
                            path, key, item->valuestring);
    *out = item->valuestring;
    return TH_OK;
}

static th_result check_module(const cJSON *mod, const char *path, const char *device_id,
                              struct th_error *err)
{
    static const char *const fields[] = {"moduleId",       "deviceId", "managedBy",
                                         "authentication", "tags",     "properties"};
    const char *id, *s;
    struct auth_keys keys;
    th_result r;
    if (!cJSON_IsObject(mod))
        return th_error_set(err, TH_ERR_INVAL, 0, "%s: must be an object", path);
    if ((r = check_members(mod, path, fields, sizeof fields / sizeof fields[0], true, err)) !=
        TH_OK)
        return r;
    if ((r = reg_check_id_field(mod, "moduleId", path, &id, err)) != TH_OK)
        return r;
    if ((r = reg_opt_string(mod, "deviceId", path, &s, err)) != TH_OK)
        return r;
    if (s && strcmp(s, device_id) != 0)
        return th_error_set(err, TH_ERR_INVAL, 0,
                            "%s.deviceId: '%s' differs from the enclosing device '%s'", path, s,
                            device_id);
    if ((r = reg_opt_string(mod, "managedBy", path, &s, err)) != TH_OK)
        return r;
    if ((r = check_auth(mod, path, &keys, err)) != TH_OK)
        return r;
    return check_twin_fields(mod, path, err);
}

/* `allow_existing`: a device already in the registry is fine (import), not 409001 (load). */
static th_result check_device(const struct th_registry *reg, const cJSON *dev, const char *path,
                              bool allow_existing, struct th_error *err)
{
    static const char *const fields[] = {
        "deviceId",   "status",  "statusReason", "authentication", "tags",
        "properties", "modules", "capabilities", "deviceScope",    "parentScopes"};
    const char *id, *s;
    const cJSON *mods;
    struct auth_keys keys;
    char sub[160];
    th_result r;
    if (!cJSON_IsObject(dev))
        return th_error_set(err, TH_ERR_INVAL, 0, "%s: must be an object", path);
    if ((r = check_members(dev, path, fields, sizeof fields / sizeof fields[0], true, err)) !=
        TH_OK)
        return r;
    if ((r = reg_check_id_field(dev, "deviceId", path, &id, err)) != TH_OK)
        return r;
    if (!allow_existing && th_registry_find(reg, id, NULL))
        return th_error_set(err, TH_ERR_EXISTS, 409001,
                            "%s.deviceId: device '%s' already exists in the registry", path, id);
    if ((r = reg_opt_string(dev, "status", path, &s, err)) != TH_OK)
        return r;
    if (s && strcmp(s, "enabled") != 0 && strcmp(s, "disabled") != 0)
        return th_error_set(err, TH_ERR_INVAL, 0,
                            "%s.status: must be \"enabled\" or \"disabled\", not '%s'", path, s);
    if ((r = reg_opt_string(dev, "statusReason", path, &s, err)) != TH_OK)
        return r;
    if ((r = check_auth(dev, path, &keys, err)) != TH_OK)
        return r;
    if ((r = check_edge_fields(dev, path, err)) != TH_OK)
        return r;
    if ((r = check_twin_fields(dev, path, err)) != TH_OK)
        return r;
    if ((r = reg_opt_array(dev, "modules", path, &mods, err)) != TH_OK || !mods)
        return r;
    int n = cJSON_GetArraySize(mods);
    if (n > TH_MAX_MODULES_PER_DEVICE)
        return th_error_set(err, TH_ERR_TOO_LARGE, 413003,
                            "%s.modules: %d modules, at most %d are allowed per device", path, n,
                            TH_MAX_MODULES_PER_DEVICE);
    const cJSON *mod;
    size_t i = 0;
    cJSON_ArrayForEach(mod, mods)
    {
        snprintf(sub, sizeof sub, "%s.modules[%zu]", path, i);
        if ((r = check_module(mod, sub, id, err)) != TH_OK)
            return r;
        /* Up to 50 modules: a quadratic duplicate check is fine. */
        const char *mid = cJSON_GetObjectItemCaseSensitive(mod, "moduleId")->valuestring;
        const cJSON *prev;
        size_t j = 0;
        cJSON_ArrayForEach(prev, mods)
        {
            if (j == i)
                break;
            if (strcmp(cJSON_GetObjectItemCaseSensitive(prev, "moduleId")->valuestring, mid) == 0)
                return th_error_set(err, TH_ERR_INVAL, 400011,
                                    "%s.moduleId: '%s' is already defined by %s.modules[%zu]", sub,
                                    mid, path, j);
            j++;
        }
        i++;
    }
    return TH_OK;
}

/* Temporary set of device ids seen in one document (ids borrowed from the doc). */
struct seen_id {
    const char *id;
    size_t index;
    UT_hash_handle hh;
};

static void seen_free(struct seen_id **set)
{
    struct seen_id *s, *tmp;
    HASH_ITER(hh, *set, s, tmp)
    {
        HASH_DEL(*set, s);
        free(s);
    }
}

static th_result check_devices(const struct th_registry *reg, const cJSON *devices,
                               bool allow_existing, struct th_error *err)
{
    struct seen_id *seen = NULL;
    const cJSON *dev;
    size_t i = 0;
    char path[64];
    th_result r = TH_OK;
    cJSON_ArrayForEach(dev, devices)
    {
        snprintf(path, sizeof path, "devices[%zu]", i);
        if ((r = check_device(reg, dev, path, allow_existing, err)) != TH_OK)
            break;
        const char *id = cJSON_GetObjectItemCaseSensitive(dev, "deviceId")->valuestring;
        struct seen_id *s = NULL;
        HASH_FIND(hh, seen, id, strlen(id), s);
        if (s) {
            r = th_error_set(err, TH_ERR_INVAL, 400011,
                             "%s.deviceId: '%s' is already defined by devices[%zu]", path, id,
                             s->index);
            break;
        }
        s = calloc(1, sizeof *s);
        if (!s) {
            r = th_error_set(err, TH_ERR_NOMEM, 0, "out of memory");
            break;
        }
        s->id = id;
        s->index = i;
        HASH_ADD_KEYPTR(hh, seen, s->id, strlen(s->id), s);
        if (s->hh.tbl == NULL) {
            free(s);
            r = th_error_set(err, TH_ERR_NOMEM, 0, "out of memory");
            break;
        }
        i++;
    }
    seen_free(&seen);
    return r;
}

/*
 * Validates "policies" and stages them in out[] (keys generated where absent).
 * `reg` NULL: the staged set will replace all policies, so none count as existing.
 */
static th_result stage_policies(const struct th_registry *reg, const cJSON *policies,
                                struct th_policy *out, size_t *count, struct th_error *err)
{
    static const char *const fields[] = {"keyName", "primaryKey", "secondaryKey", "rights"};
    const cJSON *pol;
    size_t i = 0, added = 0;
    char path[64];
    th_result r;
    *count = 0;
    cJSON_ArrayForEach(pol, policies)
    {
        snprintf(path, sizeof path, "policies[%zu]", i);
        if (!cJSON_IsObject(pol))
            return th_error_set(err, TH_ERR_INVAL, 0, "%s: must be an object", path);
        if ((r = check_members(pol, path, fields, 4, false, err)) != TH_OK)
            return r;
        const char *name, *pk, *sk, *rights;
        if ((r = reg_opt_string(pol, "keyName", path, &name, err)) != TH_OK ||
            (r = reg_opt_string(pol, "primaryKey", path, &pk, err)) != TH_OK ||
            (r = reg_opt_string(pol, "secondaryKey", path, &sk, err)) != TH_OK ||
            (r = reg_opt_string(pol, "rights", path, &rights, err)) != TH_OK)
            return r;
        if (!name || !reg_policy_name_valid(name, strlen(name)))
            return th_error_set(err, TH_ERR_INVAL, 0,
                                "%s.keyName: required, 1 to %d letters, digits, '.', '_' or '-'",
                                path, TH_POLICY_NAME_MAX);
        if ((r = check_key(pk, path, "primaryKey", err)) != TH_OK ||
            (r = check_key(sk, path, "secondaryKey", err)) != TH_OK)
            return r;
        if (!rights)
            return th_error_set(err, TH_ERR_INVAL, 0,
                                "%s.rights: required, e.g. \"RegistryRead, ServiceConnect\"", path);
        const char *bad;
        size_t bad_len;
        unsigned perms = parse_rights(rights, &bad, &bad_len);
        if (!perms) {
            if (bad)
                return th_error_set(err, TH_ERR_INVAL, 0,
                                    "%s.rights: unknown right '%.*s' (use RegistryRead, "
                                    "RegistryWrite, ServiceConnect, DeviceConnect)",
                                    path, (int)bad_len, bad);
            return th_error_set(err, TH_ERR_INVAL, 0, "%s.rights: grants nothing", path);
        }
        for (size_t j = 0; j < *count; j++) {
            if (strcmp(out[j].name, name) == 0)
                return th_error_set(err, TH_ERR_INVAL, 0,
                                    "%s.keyName: '%s' is already defined by policies[%zu]", path,
                                    name, j);
        }
        if (!reg || !reg_policy_slot(reg, name, strlen(name)))
            added++;
        if ((reg ? reg->policy_count : 0) + added > TH_MAX_POLICIES)
            return th_error_set(err, TH_ERR_INVAL, 0,
                                "%s: a hub has at most %d shared access policies", path,
                                TH_MAX_POLICIES);
        r = reg_policy_fill(&out[*count], name, pk, sk, perms);
        if (r != TH_OK)
            return th_error_set(err, r, 0, "%s: %s", path, th_result_str(r));
        (*count)++;
        i++;
    }
    return TH_OK;
}

/* Applies one initial twin section from the document; path names the member in errors. */
static th_result reg_apply_section(struct th_twin *twin, enum th_twin_section section,
                                   const cJSON *src, int64_t now_us, const char *path,
                                   struct th_error *err)
{
    if (!src || !src->child)
        return TH_OK; /* nothing to apply: keep the creation versions */
    cJSON *patch = cJSON_Duplicate(src, 1);
    if (!patch)
        return th_error_set(err, TH_ERR_NOMEM, 0, "%s: out of memory", path);
    /* Pasted twins carry $metadata/$version: they are the hub's, not the user's. */
    th_twin_strip_readonly(patch);
    struct th_error e;
    memset(&e, 0, sizeof e);
    th_result r;
    switch (section) {
    case TH_SECTION_TAGS:
        r = th_twin_patch_tags(twin, patch, &e);
        break;
    case TH_SECTION_DESIRED:
        r = th_twin_patch_desired(twin, patch, now_us, NULL, &e);
        break;
    default:
        r = th_twin_patch_reported(twin, patch, now_us, &e);
        break;
    }
    cJSON_Delete(patch);
    if (r != TH_OK)
        return th_error_set(err, r, e.code, "%s: %s", path, e.message);
    return TH_OK;
}

static th_result reg_apply_twin(struct th_identity *id, const cJSON *src, int64_t now_us,
                                const char *path, struct th_error *err)
{
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(src, "properties");
    char sub[192];
    th_result r;
    snprintf(sub, sizeof sub, "%s.tags", path);
    r = reg_apply_section(id->twin, TH_SECTION_TAGS, cJSON_GetObjectItemCaseSensitive(src, "tags"),
                          now_us, sub, err);
    if (r != TH_OK)
        return r;
    snprintf(sub, sizeof sub, "%s.properties.desired", path);
    r = reg_apply_section(id->twin, TH_SECTION_DESIRED,
                          cJSON_GetObjectItemCaseSensitive(props, "desired"), now_us, sub, err);
    if (r != TH_OK)
        return r;
    snprintf(sub, sizeof sub, "%s.properties.reported", path);
    return reg_apply_section(id->twin, TH_SECTION_REPORTED,
                             cJSON_GetObjectItemCaseSensitive(props, "reported"), now_us, sub, err);
}

static void get_keys(const cJSON *ident, struct auth_keys *keys)
{
    const cJSON *auth = cJSON_GetObjectItemCaseSensitive(ident, "authentication");
    const cJSON *sym = cJSON_GetObjectItemCaseSensitive(auth, "symmetricKey");
    const cJSON *pk = cJSON_GetObjectItemCaseSensitive(sym, "primaryKey");
    const cJSON *sk = cJSON_GetObjectItemCaseSensitive(sym, "secondaryKey");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(auth, "type");
    keys->primary = cJSON_IsString(pk) ? pk->valuestring : NULL;
    keys->secondary = cJSON_IsString(sk) ? sk->valuestring : NULL;
    keys->type =
        cJSON_IsString(type) && strcmp(type->valuestring, "none") == 0 ? TH_AUTH_NONE : TH_AUTH_SAS;
}

static const char *reg_get_str(const cJSON *obj, const char *key)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(item) ? item->valuestring : NULL;
}

/*
 * Builds a detached module of `device_id` from a validated entry (keys,
 * managedBy, twin). Caller frees *out with reg_identity_free.
 */
static th_result reg_build_module(struct th_registry *reg, const char *device_id, const cJSON *msrc,
                                  const char *path, int64_t now_us, struct th_identity **out,
                                  struct th_error *err)
{
    struct auth_keys keys;
    th_result r;
    *out = NULL;
    get_keys(msrc, &keys);
    struct th_identity *mod =
        reg_identity_create(reg, device_id, reg_get_str(msrc, "moduleId"), keys.type, keys.primary,
                            keys.secondary, true, now_us, &r);
    if (!mod)
        return th_error_set(err, r, 0, "%s: %s", path, th_result_str(r));
    const char *managed = reg_get_str(msrc, "managedBy");
    if (managed && !(mod->managed_by = reg_dup_str(managed)))
        r = th_error_set(err, TH_ERR_NOMEM, 0, "%s: out of memory", path);
    else
        r = reg_apply_twin(mod, msrc, now_us, path, err);
    if (r != TH_OK) {
        reg_identity_free(mod);
        return r;
    }
    *out = mod;
    return TH_OK;
}

/* Builds a detached device (with modules and twins) from a validated entry. */
static th_result reg_build_device(struct th_registry *reg, const cJSON *src, const char *path,
                                  int64_t now_us, struct th_identity **out, struct th_error *err)
{
    struct auth_keys keys;
    const char *status = reg_get_str(src, "status");
    const char *reason = reg_get_str(src, "statusReason");
    th_result r;
    char sub[160];

    *out = NULL;
    get_keys(src, &keys);
    struct th_identity *dev =
        reg_identity_create(reg, reg_get_str(src, "deviceId"), NULL, keys.type, keys.primary,
                            keys.secondary, !status || strcmp(status, "enabled") == 0, now_us, &r);
    if (!dev)
        return th_error_set(err, r, 0, "%s: %s", path, th_result_str(r));
    if (reason && !(dev->status_reason = reg_dup_str(reason))) {
        reg_identity_free(dev);
        return th_error_set(err, TH_ERR_NOMEM, 0, "%s: out of memory", path);
    }
    /* A parent named by the document is resolved by reg_doc_resolve when all are built. */
    struct th_ident_req req;
    struct scope_plan sp;
    if ((r = th_ident_req_from_json(src, false, &req, err)) != TH_OK ||
        (r = reg_plan_scopes(reg, NULL, dev->device_id, dev->generation_id, &req, now_us, true,
                             NULL, &sp, err)) != TH_OK) {
        reg_identity_free(dev);
        return r;
    }
    dev->iot_edge = sp.edge;
    dev->device_scope = sp.device_scope;
    dev->parent_scope = sp.parent_scope;
    if ((r = reg_apply_twin(dev, src, now_us, path, err)) != TH_OK) {
        reg_identity_free(dev);
        return r;
    }
    const cJSON *mods = cJSON_GetObjectItemCaseSensitive(src, "modules");
    const cJSON *msrc;
    size_t i = 0;
    if (!cJSON_IsArray(mods))
        mods = NULL;
    cJSON_ArrayForEach(msrc, mods)
    {
        snprintf(sub, sizeof sub, "%s.modules[%zu]", path, i++);
        struct th_identity *mod;
        if ((r = reg_build_module(reg, dev->device_id, msrc, sub, now_us, &mod, err)) != TH_OK) {
            reg_identity_free(dev);
            return r;
        }
        if ((r = reg_attach_module(dev, mod)) != TH_OK) {
            th_error_set(err, r, 0, "%s: %s", sub, th_result_str(r));
            reg_identity_free(mod);
            reg_identity_free(dev);
            return r;
        }
    }
    *out = dev;
    return TH_OK;
}

/*
 * The checks th_registry_load and th_registry_import share: the document's
 * shape, its "policies" and "devices" arrays (*out_policies and *out_devices, NULL
 * when absent), every device entry (check_devices with `import`), and the
 * policies staged into `staged`. Changes nothing in `reg`.
 */
static th_result reg_check_document(const struct th_registry *reg, const cJSON *doc, bool import,
                                    const cJSON **out_policies, const cJSON **out_devices,
                                    struct th_policy *staged, size_t *staged_count,
                                    struct th_error *err)
{
    static const char *const top_fields[] = {"$schema", "policies", "devices"};
    const cJSON *policies, *devices;
    th_result r;

    if (!reg)
        return th_error_set(err, TH_ERR_INVAL, 0, "no registry");
    if (!cJSON_IsObject(doc))
        return th_error_set(err, TH_ERR_INVAL, 0, "the registry document must be an object");
    if ((r = check_members(doc, "", top_fields, 3, false, err)) != TH_OK ||
        (r = reg_opt_array(doc, "policies", "", &policies, err)) != TH_OK ||
        (r = reg_opt_array(doc, "devices", "", &devices, err)) != TH_OK)
        return r;
    if (policies && cJSON_GetArraySize(policies) > TH_MAX_POLICIES)
        return th_error_set(err, TH_ERR_INVAL, 0, "policies: at most %d are allowed",
                            TH_MAX_POLICIES);
    if (devices && (r = check_devices(reg, devices, import, err)) != TH_OK)
        return r;
    if (policies && (r = stage_policies(reg, policies, staged, staged_count, err)) != TH_OK)
        return r;
    *out_policies = policies;
    *out_devices = devices;
    return TH_OK;
}

struct pending_update;

/* What the parent scopes a registry document names resolve against. */
struct doc_view {
    const struct th_registry *reg;
    struct th_identity *const *built; /* devices the document creates */
    size_t nbuilt;
    const struct pending_update *updates; /* overwrites of existing identities (import) */
    size_t nupdates;
};

static th_result reg_doc_resolve_built(const struct doc_view *v, struct th_error *err);

th_result th_registry_load(struct th_registry *reg, const cJSON *doc, int64_t now_us,
                           struct th_error *err)
{
    const cJSON *policies, *devices;
    struct th_policy staged[TH_MAX_POLICIES];
    size_t staged_count = 0;

    /* Phase 1: validate everything that does not need a twin. */
    th_result r =
        reg_check_document(reg, doc, false, &policies, &devices, staged, &staged_count, err);
    if (r != TH_OK)
        return r;

    /* Phase 2: build detached identities; twin content is validated as it is applied. */
    size_t n = devices ? (size_t)cJSON_GetArraySize(devices) : 0;
    struct th_identity **built = n ? calloc(n, sizeof *built) : NULL;
    if (n && !built)
        return th_error_set(err, TH_ERR_NOMEM, 0, "out of memory");
    const cJSON *dsrc;
    size_t i = 0;
    char path[64];
    r = TH_OK;
    cJSON_ArrayForEach(dsrc, devices)
    {
        snprintf(path, sizeof path, "devices[%zu]", i);
        if ((r = reg_build_device(reg, dsrc, path, now_us, &built[i], err)) != TH_OK)
            break;
        i++;
    }
    if (r == TH_OK) {
        struct doc_view v = {reg, built, n, NULL, 0};
        r = reg_doc_resolve_built(&v, err);
    }

    /* Phase 3: insert; only allocation can fail here, and it is rolled back. */
    size_t inserted = 0;
    if (r == TH_OK) {
        for (; inserted < n; inserted++) {
            if ((r = reg_insert_device(reg, built[inserted])) != TH_OK) {
                th_error_set(err, r, 0, "devices[%zu]: out of memory", inserted);
                break;
            }
        }
    }
    if (r != TH_OK) {
        for (size_t j = 0; j < inserted; j++) {
            struct dev_node *node =
                reg_find_node(reg, built[j]->device_id, strlen(built[j]->device_id));
            HASH_DEL(reg->devices, node);
            free(node);
        }
        for (size_t j = 0; j < n; j++)
            reg_identity_free(built[j]);
        free(built);
        return r;
    }
    free(built);

    /* Policies last: they go into the fixed array and cannot fail. */
    for (size_t j = 0; j < staged_count; j++) {
        struct th_policy *slot = reg_policy_slot(reg, staged[j].name, strlen(staged[j].name));
        if (!slot)
            slot = &reg->policies[reg->policy_count++];
        *slot = staged[j];
    }
    return TH_OK;
}

/* ------------------------------------------------------------------ */
/* JSON views                                                          */
/* ------------------------------------------------------------------ */

static bool reg_add_str(cJSON *obj, const char *key, const char *value)
{
    return cJSON_AddStringToObject(obj, key, value) != NULL;
}

static bool reg_add_str_or_null(cJSON *obj, const char *key, const char *value)
{
    return value ? reg_add_str(obj, key, value) : cJSON_AddNullToObject(obj, key) != NULL;
}

static bool add_time(cJSON *obj, const char *key, int64_t us)
{
    char buf[TH_TIME_BUF];
    if (us == 0)
        return reg_add_str(obj, key, TH_TIME_NEVER);
    th_time_format(us, buf);
    return reg_add_str(obj, key, buf);
}

static bool reg_add_num(cJSON *obj, const char *key, double value)
{
    return cJSON_AddNumberToObject(obj, key, value) != NULL;
}

/* Takes ownership of `item` on every path. */
static bool reg_add_item(cJSON *obj, const char *key, cJSON *item)
{
    if (!item)
        return false;
    if (!cJSON_AddItemToObject(obj, key, item)) {
        cJSON_Delete(item);
        return false;
    }
    return true;
}

static cJSON *thumbprint_json(void)
{
    cJSON *t = cJSON_CreateObject();
    if (t && (!cJSON_AddNullToObject(t, "primaryThumbprint") ||
              !cJSON_AddNullToObject(t, "secondaryThumbprint"))) {
        cJSON_Delete(t);
        return NULL;
    }
    return t;
}

static cJSON *reg_capabilities_json(const struct th_identity *id)
{
    cJSON *c = cJSON_CreateObject();
    if (c && !cJSON_AddBoolToObject(c, "iotEdge", id->iot_edge)) {
        cJSON_Delete(c);
        return NULL;
    }
    return c;
}

/* parentScopes: an edge device's parent, or a leaf's deviceScope (the hub copies it). */
static cJSON *reg_parent_scopes_json(const struct th_identity *id)
{
    const char *parent = id->iot_edge ? id->parent_scope : id->device_scope;
    cJSON *arr = cJSON_CreateArray();
    cJSON *s = arr && parent ? cJSON_CreateString(parent) : NULL;
    if (!arr || (parent && (!s || !cJSON_AddItemToArray(arr, s)))) {
        cJSON_Delete(s);
        cJSON_Delete(arr);
        return NULL;
    }
    return arr;
}

/* A key, or null for an identity without keys (type none). */
static bool reg_add_key(cJSON *obj, const char *name, const char *key)
{
    return reg_add_str_or_null(obj, name, key[0] ? key : NULL);
}

static cJSON *authentication_json(const struct th_identity *id)
{
    cJSON *auth = cJSON_CreateObject();
    cJSON *sym = cJSON_CreateObject();
    bool ok = auth && sym && reg_add_key(sym, "primaryKey", id->primary_key) &&
              reg_add_key(sym, "secondaryKey", id->secondary_key);
    if (ok) {
        ok = reg_add_item(auth, "symmetricKey", sym);
        sym = NULL;
    }
    ok = ok && reg_add_item(auth, "x509Thumbprint", thumbprint_json()) &&
         reg_add_str(auth, "type", th_auth_type_name(id->auth_type));
    cJSON_Delete(sym);
    if (!ok) {
        cJSON_Delete(auth);
        return NULL;
    }
    return auth;
}

cJSON *th_identity_to_json(const struct th_identity *id)
{
    if (!id)
        return NULL;
    bool is_device = id->module_id == NULL;
    char etag[32];
    th_identity_etag(id, etag);
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    bool ok = reg_add_str(o, "deviceId", id->device_id);
    if (!is_device)
        ok = ok && reg_add_str(o, "moduleId", id->module_id) &&
             reg_add_str_or_null(o, "managedBy", id->managed_by);
    ok = ok && reg_add_str(o, "generationId", id->generation_id) && reg_add_str(o, "etag", etag) &&
         reg_add_str(o, "connectionState", id->connected ? "Connected" : "Disconnected");
    if (is_device)
        ok = ok && reg_add_str(o, "status", id->enabled ? "enabled" : "disabled") &&
             reg_add_str_or_null(o, "statusReason", id->status_reason);
    ok = ok && add_time(o, "connectionStateUpdatedTime", id->connection_state_updated_us);
    if (is_device)
        ok = ok && add_time(o, "statusUpdatedTime", id->status_updated_us);
    ok = ok && add_time(o, "lastActivityTime", id->last_activity_us) &&
         reg_add_num(o, "cloudToDeviceMessageCount", (double)id->c2d_count) &&
         reg_add_item(o, "authentication", authentication_json(id));
    if (is_device)
        ok = ok && reg_add_item(o, "capabilities", reg_capabilities_json(id)) &&
             reg_add_str_or_null(o, "deviceScope", id->device_scope) &&
             reg_add_item(o, "parentScopes", reg_parent_scopes_json(id));
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

cJSON *th_identity_twin_json(const struct th_identity *id)
{
    if (!id || !id->twin)
        return NULL;
    bool is_device = id->module_id == NULL;
    char etag[16], device_etag[32];
    th_twin_etag(id->twin, etag);
    th_identity_etag(id, device_etag);
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    bool ok = reg_add_str(o, "deviceId", id->device_id);
    if (!is_device)
        ok = ok && reg_add_str(o, "moduleId", id->module_id);
    ok = ok && reg_add_str(o, "etag", etag) && reg_add_str(o, "deviceEtag", device_etag) &&
         reg_add_str(o, "status", id->enabled ? "enabled" : "disabled");
    /* The hub omits statusReason from twins when it is not set. */
    if (id->status_reason)
        ok = ok && reg_add_str(o, "statusReason", id->status_reason);
    ok = ok && add_time(o, "statusUpdateTime", id->status_updated_us) &&
         reg_add_str(o, "connectionState", id->connected ? "Connected" : "Disconnected") &&
         add_time(o, "lastActivityTime", id->last_activity_us) &&
         reg_add_num(o, "cloudToDeviceMessageCount", (double)id->c2d_count) &&
         reg_add_str(o, "authenticationType", th_auth_type_name(id->auth_type)) &&
         reg_add_item(o, "x509Thumbprint", thumbprint_json()) &&
         reg_add_str(o, "modelId", id->model_id ? id->model_id : "") &&
         reg_add_num(o, "version", (double)th_twin_version(id->twin)) &&
         reg_add_item(o, "tags", cJSON_Duplicate(id->twin->tags, 1)) &&
         reg_add_item(o, "properties", th_twin_properties_view(id->twin));
    /* As the hub's device twins: deviceScope and parentScopes only when set. */
    if (is_device) {
        const char *parent = id->iot_edge ? id->parent_scope : id->device_scope;
        ok = ok && reg_add_item(o, "capabilities", reg_capabilities_json(id)) &&
             (!id->device_scope || reg_add_str(o, "deviceScope", id->device_scope)) &&
             (!parent || reg_add_item(o, "parentScopes", reg_parent_scopes_json(id)));
    }
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* ------------------------------------------------------------------ */
/* counts, module creation with a twin, identity updates               */
/* ------------------------------------------------------------------ */

size_t th_registry_module_total(const struct th_registry *reg)
{
    size_t total = 0;
    if (!reg)
        return 0;
    for (const struct dev_node *n = reg->devices; n; n = n->hh.next)
        total += n->id->module_count;
    return total;
}

/* NULL and JSON null mean "no section"; anything else must be an object. */
static th_result initial_section(const cJSON *src, const char *name, const cJSON **out,
                                 struct th_error *err)
{
    *out = NULL;
    if (!src || cJSON_IsNull(src))
        return TH_OK;
    if (!cJSON_IsObject(src))
        return th_error_set(err, TH_ERR_INVAL, 400004,
                            "%s must be a JSON object such as {\"name\": value}, or omitted", name);
    *out = src;
    return TH_OK;
}

th_result th_registry_add_module_with(struct th_registry *reg, const char *device_id,
                                      const char *module_id, const char *primary_key,
                                      const char *secondary_key, const cJSON *tags,
                                      const cJSON *desired, int64_t now_us,
                                      struct th_identity **out, struct th_error *err)
{
    const cJSON *t, *d;
    struct th_identity *dev = NULL, *mod = NULL;
    th_result r;
    if ((r = initial_section(tags, "tags", &t, err)) != TH_OK ||
        (r = initial_section(desired, "properties.desired", &d, err)) != TH_OK)
        return r;
    r = reg_module_prepare(reg, device_id, module_id, TH_AUTH_SAS, primary_key, secondary_key,
                           now_us, &dev, &mod, err);
    if (r != TH_OK)
        return r;
    r = reg_apply_section(mod->twin, TH_SECTION_TAGS, t, now_us, "tags", err);
    if (r == TH_OK)
        r = reg_apply_section(mod->twin, TH_SECTION_DESIRED, d, now_us, "properties.desired", err);
    if (r == TH_OK && (r = reg_attach_module(dev, mod)) != TH_OK)
        th_error_set(err, r, 0, "cannot add module '%s': %s", module_id, th_result_str(r));
    if (r != TH_OK) {
        reg_identity_free(mod);
        return r;
    }
    if (out)
        *out = mod;
    return TH_OK;
}

/* Copies a key already checked to fit (reg_key_valid or a stored key). */
static void reg_copy_key(char dst[TH_KEY_BUF], const char *src)
{
    size_t n = strlen(src);
    memcpy(dst, src, n + 1);
}

/* Identity fields prepared by an update; committing them cannot fail. */
struct ident_change {
    char primary_key[TH_KEY_BUF];
    char secondary_key[TH_KEY_BUF];
    enum th_auth_type auth_type; /* matches the keys above */
    int enabled;                 /* -1 keeps */
    bool reason_set;             /* replace status_reason with `reason` (NULL clears) */
    char *reason;                /* owned until committed */
    bool scopes_set;             /* replace iot_edge and both scopes with `scopes` */
    bool scope_raw;              /* the parent in `scopes` is a registry-document reference */
    struct scope_plan scopes;    /* owned until committed */
    bool managed_set;            /* replace managed_by with `managed_by` (NULL clears) */
    char *managed_by;            /* owned until committed */
};

/* A change that keeps everything of `id`. */
static void reg_ident_change_init(struct ident_change *c, const struct th_identity *id)
{
    memset(c, 0, sizeof *c);
    c->enabled = -1;
    c->auth_type = id->auth_type;
    reg_copy_key(c->primary_key, id->primary_key);
    reg_copy_key(c->secondary_key, id->secondary_key);
}

/* Frees what the change still owns; accepts a committed or half-prepared change. */
static void reg_ident_change_free(struct ident_change *c)
{
    free(c->reason);
    free(c->managed_by);
    c->reason = c->managed_by = NULL;
    scope_plan_free(&c->scopes);
}

/* Applies a prepared change, bumps the etag; takes the strings from c. */
static void reg_ident_change_commit(struct th_identity *id, struct ident_change *c, int64_t now_us)
{
    reg_copy_key(id->primary_key, c->primary_key);
    reg_copy_key(id->secondary_key, c->secondary_key);
    id->auth_type = c->auth_type;
    if (c->reason_set) {
        free(id->status_reason);
        id->status_reason = c->reason;
        c->reason = NULL;
        c->reason_set = false;
    }
    if (c->enabled != -1 && (c->enabled == 1) != id->enabled) {
        id->enabled = c->enabled == 1;
        id->status_updated_us = now_us;
    }
    if (c->scopes_set) {
        id->iot_edge = c->scopes.edge;
        free(id->device_scope);
        free(id->parent_scope);
        id->device_scope = c->scopes.device_scope;
        id->parent_scope = c->scopes.parent_scope;
        c->scopes.device_scope = c->scopes.parent_scope = NULL;
        c->scopes_set = false;
    }
    if (c->managed_set) {
        free(id->managed_by);
        id->managed_by = c->managed_by;
        c->managed_by = NULL;
        c->managed_set = false;
    }
    id->etag_counter++;
}

/*
 * Plans keys and authentication type (`type` -1 when not given; keys NULL
 * keep, "" generate). Keys without a type mean "sas". An identity that had
 * no keys and becomes "sas" gets the given keys, generated where missing.
 */
static th_result reg_plan_keys(const struct th_identity *id, int type, const char *primary_key,
                               const char *secondary_key, struct ident_change *c,
                               struct th_error *err)
{
    th_result r;
    bool keys = primary_key || secondary_key;
    enum th_auth_type t =
        type >= 0 ? (enum th_auth_type)type : (keys ? TH_AUTH_SAS : id->auth_type);
    if (t == TH_AUTH_NONE) {
        if (reg_key_given(primary_key) || reg_key_given(secondary_key))
            return th_error_set(err, TH_ERR_INVAL, 400004,
                                "authentication type \"none\" has no keys: remove "
                                "symmetricKey or use type \"sas\"");
        c->primary_key[0] = c->secondary_key[0] = '\0';
        c->auth_type = t;
        return TH_OK;
    }
    if (reg_key_given(primary_key) && !reg_key_valid(primary_key))
        return th_error_set(err, TH_ERR_INVAL, 400004,
                            "primaryKey must be base64 of 16 to 64 bytes (or empty to have one "
                            "generated)");
    if (reg_key_given(secondary_key) && !reg_key_valid(secondary_key))
        return th_error_set(err, TH_ERR_INVAL, 400004,
                            "secondaryKey must be base64 of 16 to 64 bytes (or empty to have one "
                            "generated)");
    bool had_none = id->auth_type == TH_AUTH_NONE;
    if ((primary_key || had_none) && (r = reg_fill_key(c->primary_key, primary_key)) != TH_OK)
        return th_error_set(err, r, 0, "cannot generate a primary key: %s", th_result_str(r));
    if ((secondary_key || had_none) && (r = reg_fill_key(c->secondary_key, secondary_key)) != TH_OK)
        return th_error_set(err, r, 0, "cannot generate a secondary key: %s", th_result_str(r));
    c->auth_type = t;
    return TH_OK;
}

/* NULL and "" are both "no scope". */
static bool reg_scope_equal(const char *a, const char *b)
{
    if (!a || !a[0])
        return !b || !b[0];
    return b && strcmp(a, b) == 0;
}

/*
 * Checks a parent scope a service request sets on device `self_id`: the
 * deviceScope of an IoT Edge device of the registry other than the device.
 */
static th_result check_parent(const struct th_registry *reg, const char *self_id, const char *field,
                              const char *scope, struct th_error *err)
{
    const struct th_identity *parent = edge_by_scope(reg, scope);
    if (!parent)
        return th_error_set(err, TH_ERR_INVAL, 400004,
                            "%s '%s' is not the deviceScope of an IoT Edge device in this hub; "
                            "copy it from the parent's identity (GET /devices/{parentId})",
                            field, scope);
    if (strcmp(parent->device_id, self_id) == 0)
        return th_error_set(err, TH_ERR_INVAL, 400004, "%s: device '%s' cannot be its own parent",
                            field, self_id);
    return TH_OK;
}

/*
 * The scopes of device `id` after a request (`id` NULL: a new device
 * `device_id` whose generation id `gen` gives its scope). Rules in
 * th_registry_create and th_identity_apply. A service request's new parent
 * must be a scope of the registry now; a registry document's (`doc`) is
 * kept as written and *raw set, for reg_doc_resolve once every device of the
 * document is built.
 */
static th_result reg_plan_scopes(const struct th_registry *reg, const struct th_identity *id,
                                 const char *device_id, const char *gen,
                                 const struct th_ident_req *req, int64_t now_us, bool doc,
                                 bool *raw, struct scope_plan *out, struct th_error *err)
{
    bool was_edge = id && id->iot_edge;
    bool edge = req->iot_edge >= 0 ? req->iot_edge == 1 : was_edge;
    const char *own = was_edge ? id->device_scope : NULL;
    /* The current parent, whichever member holds it. */
    const char *parent = id ? (was_edge ? id->parent_scope : id->device_scope) : NULL;
    const char *field = NULL, *want = NULL;
    th_result r;

    memset(out, 0, sizeof *out);
    if (edge && req->parents_given && !reg_scope_equal(req->parent_scope, parent)) {
        field = "parentScopes[0]";
        want = req->parent_scope;
    } else if (!edge && req->scope_given && !reg_scope_equal(req->device_scope, parent) &&
               !(own && reg_scope_equal(req->device_scope, own))) {
        field = "deviceScope";
        want = req->device_scope;
    }
    if (raw)
        *raw = false;
    if (field) {
        if (want && want[0] && doc) {
            if (raw)
                *raw = true;
        } else if (want && want[0] && (r = check_parent(reg, device_id, field, want, err)) != TH_OK)
            return r;
        parent = want;
    }
    char ticks[24];
    if (!gen) {
        snprintf(ticks, sizeof ticks, "%llu", (unsigned long long)ticks_of(now_us));
        gen = ticks;
    }
    out->edge = edge;
    bool ok = true;
    if (edge) {
        out->device_scope = own ? reg_dup_str(own) : edge_scope_new(device_id, gen);
        ok = out->device_scope != NULL;
        if (ok && parent && parent[0])
            ok = (out->parent_scope = reg_dup_str(parent)) != NULL;
    } else if (parent && parent[0]) {
        ok = (out->device_scope = reg_dup_str(parent)) != NULL;
    }
    if (!ok) {
        scope_plan_free(out);
        return th_error_set(err, TH_ERR_NOMEM, 0, "out of memory while updating '%s'", device_id);
    }
    return TH_OK;
}

/* Refuses what a module cannot have: status disabled or a status reason. */
static th_result check_module_status(const char *device_id, const char *module_id,
                                     const struct th_ident_req *req, struct th_error *err)
{
    if (req->enabled < -1 || req->enabled > 1)
        return th_error_set(err, TH_ERR_INVAL, 400004,
                            "enabled must be -1 (keep), 0 (disabled) or 1 (enabled), not %d",
                            req->enabled);
    if (module_id && (req->enabled == 0 || req->status_reason))
        return th_error_set(err, TH_ERR_INVAL, 400004,
                            "module '%s/%s' has no status: modules are always enabled; send no "
                            "status or statusReason for a module (disable its device instead)",
                            device_id, module_id);
    return TH_OK;
}

th_result th_identity_apply(struct th_registry *reg, struct th_identity *id,
                            const struct th_ident_req *req, int64_t now_us, struct th_error *err)
{
    struct ident_change c;
    th_result r;

    if (!id || !req)
        return th_error_set(err, TH_ERR_INVAL, 400004, "no identity to update");
    if ((r = check_module_status(id->device_id, id->module_id, req, err)) != TH_OK)
        return r;
    reg_ident_change_init(&c, id);
    c.enabled = req->enabled;
    r = reg_plan_keys(id, req->auth_type, req->primary_key, req->secondary_key, &c, err);
    if (r == TH_OK && req->status_reason) {
        c.reason_set = true;
        if (req->status_reason[0] && !(c.reason = reg_dup_str(req->status_reason)))
            r = th_error_set(err, TH_ERR_NOMEM, 0, "out of memory while updating '%s'",
                             id->device_id);
    }
    if (r == TH_OK && !id->module_id) {
        r = reg_plan_scopes(reg, id, id->device_id, NULL, req, now_us, false, NULL, &c.scopes, err);
        c.scopes_set = r == TH_OK;
    } else if (r == TH_OK && req->managed_given) {
        c.managed_set = true;
        if (req->managed_by && req->managed_by[0] && !(c.managed_by = reg_dup_str(req->managed_by)))
            r = th_error_set(err, TH_ERR_NOMEM, 0, "out of memory while updating '%s'",
                             id->device_id);
    }
    if (r == TH_OK)
        reg_ident_change_commit(id, &c, now_us);
    reg_ident_change_free(&c);
    return r;
}

th_result th_identity_update(struct th_identity *id, const char *primary_key,
                             const char *secondary_key, int enabled, const char *status_reason,
                             int64_t now_us, struct th_error *err)
{
    struct th_ident_req req;
    th_ident_req_init(&req);
    req.primary_key = primary_key;
    req.secondary_key = secondary_key;
    req.enabled = enabled;
    req.status_reason = status_reason;
    /* No scope is given, so reg_plan_scopes never needs the registry. */
    return th_identity_apply(NULL, id, &req, now_us, err);
}

/* ------------------------------------------------------------------ */
/* service requests: reading them and creating identities             */
/* ------------------------------------------------------------------ */

const char *th_auth_type_name(enum th_auth_type type)
{
    return type == TH_AUTH_NONE ? "none" : "sas";
}

void th_ident_req_init(struct th_ident_req *req)
{
    memset(req, 0, sizeof *req);
    req->auth_type = -1;
    req->enabled = -1;
    req->iot_edge = -1;
}

/*
 * Member `key` of obj: a string, or absent or null (*out NULL); anything else
 * is 400004. *given (optional) says whether the member is present, null included.
 */
static th_result req_string(const cJSON *obj, const char *key, const char *path, bool *given,
                            const char **out, struct th_error *err)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    *out = NULL;
    if (given)
        *given = item != NULL;
    if (!item || cJSON_IsNull(item))
        return TH_OK;
    if (!cJSON_IsString(item) || !item->valuestring)
        return th_error_set(err, TH_ERR_INVAL, 400004, "%s%s must be a string or null", path, key);
    *out = item->valuestring;
    return TH_OK;
}

/* Member `key` of obj: absent or null give NULL; else an object or 400004. */
static th_result req_object(const cJSON *obj, const char *key, const char *path, const cJSON **out,
                            struct th_error *err)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    *out = NULL;
    if (!item || cJSON_IsNull(item))
        return TH_OK;
    if (!cJSON_IsObject(item))
        return th_error_set(err, TH_ERR_INVAL, 400004, "%s%s must be an object or null", path, key);
    *out = item;
    return TH_OK;
}

static th_result req_auth(const cJSON *body, struct th_ident_req *out, struct th_error *err)
{
    const cJSON *auth, *sym;
    const char *type;
    th_result r;
    if ((r = req_object(body, "authentication", "", &auth, err)) != TH_OK || !auth)
        return r;
    if ((r = req_string(auth, "type", "authentication.", NULL, &type, err)) != TH_OK)
        return r;
    if (type && strcmp(type, "sas") == 0)
        out->auth_type = TH_AUTH_SAS;
    else if (type && strcmp(type, "none") == 0)
        out->auth_type = TH_AUTH_NONE;
    else if (type && (strcmp(type, "selfSigned") == 0 || strcmp(type, "certificateAuthority") == 0))
        return th_error_set(err, TH_ERR_INVAL, 400004,
                            "authentication type '%s' is not supported: twinhub emulates SAS "
                            "keys (\"sas\") and identities without credentials (\"none\") only",
                            type);
    else if (type)
        return th_error_set(err, TH_ERR_INVAL, 400004,
                            "authentication.type '%s' is unknown: use \"sas\", \"none\", "
                            "\"selfSigned\" or \"certificateAuthority\"",
                            type);
    if ((r = req_object(auth, "symmetricKey", "authentication.", &sym, err)) != TH_OK || !sym)
        return r;
    if ((r = req_string(sym, "primaryKey", "authentication.symmetricKey.", NULL, &out->primary_key,
                        err)) != TH_OK ||
        (r = req_string(sym, "secondaryKey", "authentication.symmetricKey.", NULL,
                        &out->secondary_key, err)) != TH_OK)
        return r;
    return TH_OK;
}

static th_result req_device_fields(const cJSON *body, struct th_ident_req *out,
                                   struct th_error *err)
{
    const cJSON *caps, *edge, *parents;
    th_result r;
    if ((r = req_object(body, "capabilities", "", &caps, err)) != TH_OK)
        return r;
    edge = cJSON_GetObjectItemCaseSensitive(caps, "iotEdge");
    if (cJSON_IsBool(edge))
        out->iot_edge = cJSON_IsTrue(edge);
    else if (edge && !cJSON_IsNull(edge))
        return th_error_set(err, TH_ERR_INVAL, 400004,
                            "capabilities.iotEdge must be true or false");
    if ((r = req_string(body, "deviceScope", "", &out->scope_given, &out->device_scope, err)) !=
        TH_OK)
        return r;
    parents = cJSON_GetObjectItemCaseSensitive(body, "parentScopes");
    out->parents_given = parents != NULL;
    if (!parents || cJSON_IsNull(parents))
        return TH_OK;
    if (!cJSON_IsArray(parents))
        return th_error_set(err, TH_ERR_INVAL, 400004,
                            "parentScopes must be an array of at most one scope");
    if (cJSON_GetArraySize(parents) > 1)
        return th_error_set(err, TH_ERR_INVAL, 400004,
                            "parentScopes holds %d scopes: an IoT Edge device has at most one "
                            "parent",
                            cJSON_GetArraySize(parents));
    if (parents->child && !cJSON_IsString(parents->child))
        return th_error_set(err, TH_ERR_INVAL, 400004, "parentScopes[0] must be a string");
    out->parent_scope = parents->child ? parents->child->valuestring : NULL;
    return TH_OK;
}

th_result th_ident_req_from_json(const cJSON *body, bool is_module, struct th_ident_req *out,
                                 struct th_error *err)
{
    const char *status;
    th_result r;
    th_ident_req_init(out);
    if (!cJSON_IsObject(body))
        return th_error_set(err, TH_ERR_INVAL, 400004, "the identity must be a JSON object");
    if ((r = req_auth(body, out, err)) != TH_OK ||
        (r = req_string(body, "status", "", NULL, &status, err)) != TH_OK ||
        (r = req_string(body, "statusReason", "", NULL, &out->status_reason, err)) != TH_OK)
        return r;
    if (status && strcmp(status, "enabled") == 0)
        out->enabled = 1;
    else if (status && strcmp(status, "disabled") == 0)
        out->enabled = 0;
    else if (status)
        return th_error_set(err, TH_ERR_INVAL, 400004,
                            "'status' must be \"enabled\" or \"disabled\"");
    if (is_module)
        return req_string(body, "managedBy", "", &out->managed_given, &out->managed_by, err);
    return req_device_fields(body, out, err);
}

th_result th_registry_create(struct th_registry *reg, const char *device_id, const char *module_id,
                             const struct th_ident_req *req, const cJSON *tags,
                             const cJSON *desired, int64_t now_us, struct th_identity **out,
                             struct th_error *err)
{
    const cJSON *t, *d;
    struct th_identity *dev = NULL, *id = NULL;
    th_result r;

    if (!reg || !req)
        return th_error_set(err, TH_ERR_INVAL, 0, "no registry or request");
    enum th_auth_type type = req->auth_type >= 0 ? (enum th_auth_type)req->auth_type : TH_AUTH_SAS;
    if (type == TH_AUTH_NONE &&
        (reg_key_given(req->primary_key) || reg_key_given(req->secondary_key)))
        return th_error_set(err, TH_ERR_INVAL, 400004,
                            "authentication type \"none\" has no keys: remove symmetricKey or "
                            "use type \"sas\"");
    if ((r = check_module_status(device_id ? device_id : "", module_id, req, err)) != TH_OK ||
        (r = initial_section(tags, "tags", &t, err)) != TH_OK ||
        (r = initial_section(desired, "properties.desired", &d, err)) != TH_OK)
        return r;
    if (module_id) {
        r = reg_module_prepare(reg, device_id, module_id, type, req->primary_key,
                               req->secondary_key, now_us, &dev, &id, err);
        if (r == TH_OK && req->managed_given && req->managed_by && req->managed_by[0] &&
            !(id->managed_by = reg_dup_str(req->managed_by)))
            r = th_error_set(err, TH_ERR_NOMEM, 0, "out of memory");
    } else {
        r = reg_device_prepare(reg, device_id, type, req->primary_key, req->secondary_key,
                               req->enabled != 0, now_us, &id, err);
        if (r == TH_OK && req->status_reason && req->status_reason[0] &&
            !(id->status_reason = reg_dup_str(req->status_reason)))
            r = th_error_set(err, TH_ERR_NOMEM, 0, "out of memory");
        struct scope_plan sp;
        if (r == TH_OK && (r = reg_plan_scopes(reg, NULL, device_id, id->generation_id, req, now_us,
                                               false, NULL, &sp, err)) == TH_OK) {
            id->iot_edge = sp.edge;
            id->device_scope = sp.device_scope;
            id->parent_scope = sp.parent_scope;
        }
    }
    if (r == TH_OK)
        r = reg_apply_section(id->twin, TH_SECTION_TAGS, t, now_us, "tags", err);
    if (r == TH_OK)
        r = reg_apply_section(id->twin, TH_SECTION_DESIRED, d, now_us, "properties.desired", err);
    if (r == TH_OK) {
        r = module_id ? reg_attach_module(dev, id) : reg_insert_device(reg, id);
        if (r != TH_OK)
            th_error_set(err, r, 0, "cannot add '%s%s%s': %s", device_id, module_id ? "/" : "",
                         module_id ? module_id : "", th_result_str(r));
    }
    if (r != TH_OK) {
        reg_identity_free(id);
        return r;
    }
    if (out)
        *out = id;
    return TH_OK;
}

/* ------------------------------------------------------------------ */
/* export and policies as JSON                                         */
/* ------------------------------------------------------------------ */

/* "RegistryRead, ServiceConnect" for a permission set. */
static void rights_text(unsigned perms, char buf[80])
{
    static const struct {
        unsigned perm;
        const char *name;
    } names[] = {
        {TH_PERM_REGISTRY_READ, "RegistryRead"},
        {TH_PERM_REGISTRY_WRITE, "RegistryWrite"},
        {TH_PERM_SERVICE_CONNECT, "ServiceConnect"},
        {TH_PERM_DEVICE_CONNECT, "DeviceConnect"},
    };
    size_t at = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (!(perms & names[i].perm))
            continue;
        int n = snprintf(buf + at, 80 - at, "%s%s", at ? ", " : "", names[i].name);
        if (n > 0)
            at += (size_t)n;
    }
}

cJSON *th_registry_policies_json(const struct th_registry *reg)
{
    if (!reg)
        return NULL;
    cJSON *arr = cJSON_CreateArray();
    if (!arr)
        return NULL;
    for (size_t i = 0; i < reg->policy_count; i++) {
        const struct th_policy *p = &reg->policies[i];
        char rights[80];
        rights_text(p->perms, rights);
        cJSON *o = cJSON_CreateObject();
        bool ok = o && reg_add_str(o, "keyName", p->name) &&
                  reg_add_str(o, "primaryKey", p->primary_key) &&
                  reg_add_str(o, "secondaryKey", p->secondary_key) &&
                  reg_add_str(o, "rights", rights);
        if (!ok || !cJSON_AddItemToArray(arr, o)) {
            cJSON_Delete(o);
            cJSON_Delete(arr);
            return NULL;
        }
    }
    return arr;
}

th_result th_registry_restore_policies(struct th_registry *reg, const cJSON *arr,
                                       struct th_error *err)
{
    struct th_policy staged[TH_MAX_POLICIES];
    size_t count = 0;
    th_result r;
    if (!reg)
        return th_error_set(err, TH_ERR_INVAL, 0, "no registry");
    if (!cJSON_IsArray(arr))
        return th_error_set(err, TH_ERR_INVAL, 400004,
                            "policies: must be an array of {\"keyName\",\"primaryKey\","
                            "\"secondaryKey\",\"rights\"}");
    if (cJSON_GetArraySize(arr) > TH_MAX_POLICIES)
        return th_error_set(err, TH_ERR_INVAL, 400004, "policies: at most %d are allowed",
                            TH_MAX_POLICIES);
    if ((r = stage_policies(NULL, arr, staged, &count, err)) != TH_OK)
        return r;
    memcpy(reg->policies, staged, count * sizeof staged[0]);
    reg->policy_count = count;
    return TH_OK;
}

/*
 * {"type":"sas","symmetricKey":{"primaryKey","secondaryKey"}} as the loader
 * reads it; {"type":"none"} for an identity without keys.
 */
static cJSON *auth_doc_json(const struct th_identity *id)
{
    if (id->auth_type == TH_AUTH_NONE) {
        cJSON *none = cJSON_CreateObject();
        if (none && !reg_add_str(none, "type", "none")) {
            cJSON_Delete(none);
            return NULL;
        }
        return none;
    }
    cJSON *auth = cJSON_CreateObject();
    cJSON *sym = cJSON_CreateObject();
    bool ok = auth && sym && reg_add_str(auth, "type", "sas") &&
              reg_add_str(sym, "primaryKey", id->primary_key) &&
              reg_add_str(sym, "secondaryKey", id->secondary_key);
    if (ok) {
        ok = reg_add_item(auth, "symmetricKey", sym);
        sym = NULL;
    }
    cJSON_Delete(sym);
    if (!ok) {
        cJSON_Delete(auth);
        return NULL;
    }
    return auth;
}

static cJSON *twin_props_doc_json(const struct th_twin *twin)
{
    cJSON *props = cJSON_CreateObject();
    if (!props || !reg_add_item(props, "desired", cJSON_Duplicate(twin->desired, 1)) ||
        !reg_add_item(props, "reported", cJSON_Duplicate(twin->reported, 1))) {
        cJSON_Delete(props);
        return NULL;
    }
    return props;
}

/* One device or module entry of a registry document. */
static cJSON *identity_doc_json(const struct th_identity *id, bool include_twins)
{
    bool is_device = id->module_id == NULL;
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    bool ok;
    if (is_device) {
        ok = reg_add_str(o, "deviceId", id->device_id) &&
             reg_add_str(o, "status", id->enabled ? "enabled" : "disabled") &&
             (!id->status_reason || reg_add_str(o, "statusReason", id->status_reason));
        /* Edge capability and parents only where set; an edge device's own scope is regenerated
         * on load, but written so that the document reads like the hub's identity. */
        if (id->iot_edge)
            ok = ok && reg_add_item(o, "capabilities", reg_capabilities_json(id));
        if (id->device_scope)
            ok = ok && reg_add_str(o, "deviceScope", id->device_scope);
        if (id->iot_edge && id->parent_scope)
            ok = ok && reg_add_item(o, "parentScopes", reg_parent_scopes_json(id));
    } else {
        ok = reg_add_str(o, "moduleId", id->module_id) &&
             (!id->managed_by || reg_add_str(o, "managedBy", id->managed_by));
    }
    ok = ok && reg_add_item(o, "authentication", auth_doc_json(id));
    if (include_twins)
        ok = ok && reg_add_item(o, "tags", cJSON_Duplicate(id->twin->tags, 1)) &&
             reg_add_item(o, "properties", twin_props_doc_json(id->twin));
    if (ok && is_device) {
        cJSON *mods = cJSON_AddArrayToObject(o, "modules");
        ok = mods != NULL;
        for (size_t i = 0; ok && i < id->module_count; i++) {
            cJSON *m = identity_doc_json(id->modules[i], include_twins);
            if (!m || !cJSON_AddItemToArray(mods, m)) {
                cJSON_Delete(m);
                ok = false;
            }
        }
    }
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

cJSON *th_registry_export(const struct th_registry *reg, bool include_twins)
{
    if (!reg)
        return NULL;
    cJSON *doc = cJSON_CreateObject();
    cJSON *devices = NULL;
    bool ok = doc && reg_add_item(doc, "policies", th_registry_policies_json(reg)) &&
              (devices = cJSON_AddArrayToObject(doc, "devices")) != NULL;
    for (const struct dev_node *n = reg->devices; ok && n; n = n->hh.next) {
        cJSON *d = identity_doc_json(n->id, include_twins);
        if (!d || !cJSON_AddItemToArray(devices, d)) {
            cJSON_Delete(d);
            ok = false;
        }
    }
    if (!ok) {
        cJSON_Delete(doc);
        return NULL;
    }
    return doc;
}

/* ------------------------------------------------------------------ */
/* import                                                              */
/* ------------------------------------------------------------------ */

/* An overwrite of an existing identity, prepared in full before anything changes. */
struct pending_update {
    struct th_identity *id; /* borrowed */
    struct ident_change change;
    bool ident_changed;
    struct th_twin *twin; /* owned replacement twin, or NULL to keep */
};

/* A new module for a device that already exists. */
struct pending_module {
    struct th_identity *dev; /* borrowed */
    struct th_identity *mod; /* owned until attached */
};

struct import_plan {
    struct th_identity **new_devs; /* owned until inserted */
    size_t new_dev_count;
    struct pending_update *updates;
    size_t update_count;
    struct pending_module *mods;
    size_t mod_count;
    size_t created, updated, skipped;
};

/* Frees whatever the plan still owns; accepts a half-built plan. */
static void plan_free(struct import_plan *p)
{
    for (size_t i = 0; i < p->new_dev_count; i++)
        reg_identity_free(p->new_devs[i]);
    for (size_t i = 0; i < p->update_count; i++) {
        reg_ident_change_free(&p->updates[i].change);
        th_twin_free(p->updates[i].twin);
    }
    for (size_t i = 0; i < p->mod_count; i++)
        reg_identity_free(p->mods[i].mod);
    free(p->new_devs);
    free(p->updates);
    free(p->mods);
}

/*
 * Validates an entry's twin contents exactly as the loader would apply them
 * (rules and size limits), on a scratch twin: skipped and overwritten
 * entries must be as valid as created ones.
 */
static th_result check_twin_content(const cJSON *src, int64_t now_us, const char *path,
                                    struct th_error *err)
{
    struct th_identity scratch;
    memset(&scratch, 0, sizeof scratch);
    scratch.twin = th_twin_new(now_us);
    if (!scratch.twin)
        return th_error_set(err, TH_ERR_NOMEM, 0, "%s: out of memory", path);
    th_result r = reg_apply_twin(&scratch, src, now_us, path, err);
    th_twin_free(scratch.twin);
    return r;
}

/* 1 when `doc` (without $metadata/$version) differs from `current`, 0 when equal, -1 on OOM. */
static int section_differs(const cJSON *current, const cJSON *doc)
{
    cJSON *copy = cJSON_Duplicate(doc, 1);
    if (!copy)
        return -1;
    th_twin_strip_readonly(copy);
    int differs = !cJSON_Compare(current, copy, 1);
    cJSON_Delete(copy);
    return differs;
}

/* A clone of `twin` with tags / desired replaced where they differ; *out NULL when none do. */
static th_result plan_twin(const struct th_twin *twin, const cJSON *tags, const cJSON *desired,
                           int64_t now_us, const char *path, struct th_twin **out,
                           struct th_error *err)
{
    struct th_error e;
    th_result r = TH_OK;
    int tags_differ = tags ? section_differs(twin->tags, tags) : 0;
    int desired_differ = desired ? section_differs(twin->desired, desired) : 0;
    *out = NULL;
    if (tags_differ < 0 || desired_differ < 0)
        return th_error_set(err, TH_ERR_NOMEM, 0, "%s: out of memory", path);
    if (!tags_differ && !desired_differ)
        return TH_OK;
    struct th_twin *copy = th_twin_clone(twin);
    if (!copy)
        return th_error_set(err, TH_ERR_NOMEM, 0, "%s: out of memory", path);
    memset(&e, 0, sizeof e);
    if (tags_differ && (r = th_twin_replace_tags(copy, tags, &e)) != TH_OK)
        th_error_set(err, r, e.code, "%s.tags: %s", path, e.message);
    else if (desired_differ &&
             (r = th_twin_replace_desired(copy, desired, now_us, NULL, &e)) != TH_OK)
        th_error_set(err, r, e.code, "%s.properties.desired: %s", path, e.message);
    if (r != TH_OK) {
        th_twin_free(copy);
        return r;
    }
    *out = copy;
    return TH_OK;
}

/* Prepares the overwrite of existing identity `id` from a validated entry. */
static th_result plan_update(struct th_identity *id, const cJSON *src, int64_t now_us,
                             const char *path, struct pending_update *u, struct th_error *err)
{
    struct th_ident_req req;
    th_result r;
    memset(u, 0, sizeof *u);
    u->id = id;
    reg_ident_change_init(&u->change, id);
    if ((r = th_ident_req_from_json(src, id->module_id != NULL, &req, err)) != TH_OK)
        return r;
    /* In a document an omitted or empty key keeps the current one. */
    r = reg_plan_keys(id, req.auth_type, reg_key_given(req.primary_key) ? req.primary_key : NULL,
                      reg_key_given(req.secondary_key) ? req.secondary_key : NULL, &u->change, err);
    if (r != TH_OK) {
        struct th_error e = err ? *err : (struct th_error){0};
        return th_error_set(err, r, e.code, "%s.authentication: %s", path, e.message);
    }
    u->ident_changed = u->change.auth_type != id->auth_type ||
                       strcmp(u->change.primary_key, id->primary_key) != 0 ||
                       strcmp(u->change.secondary_key, id->secondary_key) != 0;
    if (id->module_id && req.managed_given && !reg_scope_equal(req.managed_by, id->managed_by)) {
        u->change.managed_set = true;
        u->ident_changed = true;
        if (req.managed_by && req.managed_by[0] &&
            !(u->change.managed_by = reg_dup_str(req.managed_by)))
            return th_error_set(err, TH_ERR_NOMEM, 0, "%s: out of memory", path);
    }
    /* Scopes are compared once doc_resolve_updates has resolved the parents. */
    if (!id->module_id && (req.iot_edge >= 0 || req.scope_given || req.parents_given)) {
        r = reg_plan_scopes(NULL, id, id->device_id, NULL, &req, now_us, true, &u->change.scope_raw,
                            &u->change.scopes, err);
        if (r != TH_OK)
            return r;
        u->change.scopes_set = true;
    }
    if (!id->module_id) {
        const char *status = reg_get_str(src, "status");
        const char *reason = reg_get_str(src, "statusReason");
        if (status) {
            u->change.enabled = strcmp(status, "enabled") == 0;
            u->ident_changed = u->ident_changed || (u->change.enabled == 1) != id->enabled;
        }
        if (reason && (!id->status_reason || strcmp(reason, id->status_reason) != 0)) {
            u->change.reason_set = true;
            u->ident_changed = true;
            if (!(u->change.reason = reg_dup_str(reason)))
                return th_error_set(err, TH_ERR_NOMEM, 0, "%s: out of memory", path);
        }
    }
    const cJSON *tags = th_json_object(src, "tags");
    const cJSON *desired = th_json_object(th_json_object(src, "properties"), "desired");
    return plan_twin(id->twin, tags, desired, now_us, path, &u->twin, err);
}

/*
 * The deviceScope device `device_id` has after the operation if it is then
 * an IoT Edge device, else NULL: a device the document creates, one it
 * overwrites, or one of the registry.
 */
static const char *doc_edge_scope(const struct doc_view *v, const char *device_id)
{
    for (size_t i = 0; i < v->nbuilt; i++) {
        if (strcmp(v->built[i]->device_id, device_id) == 0)
            return v->built[i]->iot_edge ? v->built[i]->device_scope : NULL;
    }
    for (size_t i = 0; i < v->nupdates; i++) {
        const struct pending_update *u = &v->updates[i];
        if (!u->id->module_id && u->change.scopes_set && strcmp(u->id->device_id, device_id) == 0)
            return u->change.scopes.edge ? u->change.scopes.device_scope : NULL;
    }
    const struct th_identity *dev = th_registry_find(v->reg, device_id, NULL);
    return dev && dev->iot_edge ? dev->device_scope : NULL;
}

/*
 * Replaces the parent scope *slot (malloc'd, as the document wrote it) of
 * device `self` with the scope of the device it names. The document names a
 * parent by the device id in "ms-azure-iot-edge://{id}-{ticks}": a registry
 * document does not keep generation ids, so the ticks may differ.
 */
static th_result reg_doc_resolve(const struct doc_view *v, const char *self, bool edge, char **slot,
                                 struct th_error *err)
{
    const char *field = edge ? "parentScopes" : "deviceScope";
    char pid[TH_MAX_ID_LEN + 1];
    if (!*slot)
        return TH_OK;
    if (!reg_parse_scope(*slot, pid, sizeof pid))
        return th_error_set(err, TH_ERR_INVAL, 0, "%s of device '%s': '%s' is not a scope", field,
                            self, *slot);
    if (strcmp(pid, self) == 0)
        return th_error_set(err, TH_ERR_INVAL, 0,
                            "%s of device '%s': a device cannot be its own parent", field, self);
    const char *scope = doc_edge_scope(v, pid);
    if (!scope)
        return th_error_set(err, TH_ERR_INVAL, 0,
                            "%s of device '%s': '%s' names device '%s', which is not an IoT "
                            "Edge device (capabilities.iotEdge true) in the registry or in this "
                            "document",
                            field, self, *slot, pid);
    char *copy = reg_dup_str(scope);
    if (!copy)
        return th_error_set(err, TH_ERR_NOMEM, 0, "out of memory");
    free(*slot);
    *slot = copy;
    return TH_OK;
}

/* Resolves the parents of the devices a document creates (v->built). */
static th_result reg_doc_resolve_built(const struct doc_view *v, struct th_error *err)
{
    for (size_t i = 0; i < v->nbuilt; i++) {
        struct th_identity *d = v->built[i];
        bool edge = d->iot_edge;
        th_result r =
            reg_doc_resolve(v, d->device_id, edge, edge ? &d->parent_scope : &d->device_scope, err);
        if (r != TH_OK)
            return r;
    }
    return TH_OK;
}

/*
 * Resolves the parents the document gives existing devices, and marks an
 * update changed when edge capability or a scope differs from the current.
 */
static th_result doc_resolve_updates(const struct doc_view *v, struct pending_update *updates,
                                     size_t n, struct th_error *err)
{
    for (size_t i = 0; i < n; i++) {
        struct ident_change *c = &updates[i].change;
        const struct th_identity *id = updates[i].id;
        th_result r;
        if (!c->scopes_set)
            continue;
        if (c->scope_raw &&
            (r = reg_doc_resolve(v, id->device_id, c->scopes.edge,
                                 c->scopes.edge ? &c->scopes.parent_scope : &c->scopes.device_scope,
                                 err)) != TH_OK)
            return r;
        if (c->scopes.edge != id->iot_edge ||
            !reg_scope_equal(c->scopes.device_scope, id->device_scope) ||
            !reg_scope_equal(c->scopes.parent_scope, id->parent_scope))
            updates[i].ident_changed = true;
    }
    return TH_OK;
}

/* Plans one existing identity named by the document: skip, or prepare its overwrite. */
static th_result plan_existing(struct import_plan *plan, struct th_identity *id, const cJSON *src,
                               bool overwrite, int64_t now_us, const char *path,
                               struct th_error *err)
{
    th_result r = check_twin_content(src, now_us, path, err);
    if (r != TH_OK)
        return r;
    if (!overwrite) {
        plan->skipped++;
        return TH_OK;
    }
    /* Counted before planning so that plan_free releases a half-prepared entry. */
    struct pending_update *u = &plan->updates[plan->update_count++];
    r = plan_update(id, src, now_us, path, u, err);
    if (r == TH_OK)
        plan->updated++;
    return r;
}

/* Plans the modules of an existing device: existing ones as plan_existing, new ones built. */
static th_result plan_modules(struct th_registry *reg, struct import_plan *plan,
                              struct th_identity *dev, const cJSON *dsrc, bool overwrite,
                              int64_t now_us, const char *path, struct th_error *err)
{
    const cJSON *mods = cJSON_GetObjectItemCaseSensitive(dsrc, "modules");
    const cJSON *msrc;
    size_t i = 0, added = 0;
    char sub[160];
    th_result r;
    if (!cJSON_IsArray(mods))
        return TH_OK;
    cJSON_ArrayForEach(msrc, mods)
    {
        snprintf(sub, sizeof sub, "%s.modules[%zu]", path, i++);
        const char *mid = reg_get_str(msrc, "moduleId");
        struct th_identity *existing = reg_find_module(dev, mid, strlen(mid), NULL);
        if (existing) {
            if ((r = plan_existing(plan, existing, msrc, overwrite, now_us, sub, err)) != TH_OK)
                return r;
            continue;
        }
        if (dev->module_count + added + 1 > TH_MAX_MODULES_PER_DEVICE)
            return th_error_set(err, TH_ERR_TOO_LARGE, 413003,
                                "%s: device '%s' would have more than %d modules; remove some "
                                "from the device or the document",
                                sub, dev->device_id, TH_MAX_MODULES_PER_DEVICE);
        struct pending_module *pm = &plan->mods[plan->mod_count];
        if ((r = reg_build_module(reg, dev->device_id, msrc, sub, now_us, &pm->mod, err)) != TH_OK)
            return r;
        pm->dev = dev;
        plan->mod_count++;
        plan->created++;
        added++;
    }
    return TH_OK;
}

/*
 * Grows the module arrays of existing devices that get new modules, so that
 * attaching them at commit cannot fail. The plan lists a device's new
 * modules consecutively. A larger array with an unchanged count is harmless
 * if a later step fails.
 */
static th_result reserve_modules(const struct import_plan *plan)
{
    size_t i = 0;
    while (i < plan->mod_count) {
        struct th_identity *dev = plan->mods[i].dev;
        size_t run = 0;
        while (i + run < plan->mod_count && plan->mods[i + run].dev == dev)
            run++;
        struct th_identity **grown =
            realloc(dev->modules, (dev->module_count + run) * sizeof *dev->modules);
        if (!grown)
            return TH_ERR_NOMEM;
        dev->modules = grown;
        i += run;
    }
    return TH_OK;
}

/* Inserts the plan's new devices; on failure removes those inserted and leaves them owned by the
 * plan. */
static th_result insert_new_devices(struct th_registry *reg, struct import_plan *plan,
                                    struct th_error *err)
{
    size_t inserted = 0;
    th_result r = TH_OK;
    for (; inserted < plan->new_dev_count; inserted++) {
        if ((r = reg_insert_device(reg, plan->new_devs[inserted])) != TH_OK)
            break;
    }
    if (r == TH_OK)
        return TH_OK;
    for (size_t j = 0; j < inserted; j++) {
        const char *id = plan->new_devs[j]->device_id;
        struct dev_node *node = reg_find_node(reg, id, strlen(id));
        HASH_DEL(reg->devices, node);
        free(node);
    }
    return th_error_set(err, r, 0, "out of memory while adding devices");
}

th_result th_registry_import(struct th_registry *reg, const cJSON *doc, bool overwrite,
                             int64_t now_us, size_t *out_created, size_t *out_updated,
                             size_t *out_skipped, struct th_error *err)
{
    const cJSON *policies, *devices, *dsrc;
    struct th_policy staged[TH_MAX_POLICIES];
    size_t staged_count = 0;
    struct import_plan plan;
    char path[64];
    th_result r;

    memset(&plan, 0, sizeof plan);
    r = reg_check_document(reg, doc, true, &policies, &devices, staged, &staged_count, err);
    if (r != TH_OK)
        return r;

    /* Plan: build new identities and prepared overwrites, all detached. */
    size_t n = 0, total_mods = 0;
    cJSON_ArrayForEach(dsrc, devices)
    {
        n++;
        total_mods += (size_t)cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(dsrc, "modules"));
    }
    if (n) {
        plan.new_devs = calloc(n, sizeof *plan.new_devs);
        plan.updates = calloc(n + total_mods, sizeof *plan.updates);
        plan.mods = total_mods ? calloc(total_mods, sizeof *plan.mods) : NULL;
        if (!plan.new_devs || !plan.updates || (total_mods && !plan.mods)) {
            plan_free(&plan);
            return th_error_set(err, TH_ERR_NOMEM, 0, "out of memory");
        }
    }
    size_t i = 0;
    cJSON_ArrayForEach(dsrc, devices)
    {
        snprintf(path, sizeof path, "devices[%zu]", i++);
        const char *did = reg_get_str(dsrc, "deviceId");
        struct th_identity *dev = th_registry_find(reg, did, NULL);
        if (!dev) {
            struct th_identity **slot = &plan.new_devs[plan.new_dev_count];
            if ((r = reg_build_device(reg, dsrc, path, now_us, slot, err)) != TH_OK)
                break;
            plan.created += 1 + (*slot)->module_count;
            plan.new_dev_count++;
            continue;
        }
        if ((r = plan_existing(&plan, dev, dsrc, overwrite, now_us, path, err)) != TH_OK ||
            (r = plan_modules(reg, &plan, dev, dsrc, overwrite, now_us, path, err)) != TH_OK)
            break;
    }
    if (r == TH_OK) {
        struct doc_view v = {reg, plan.new_devs, plan.new_dev_count, plan.updates,
                             plan.update_count};
        r = reg_doc_resolve_built(&v, err);
        if (r == TH_OK)
            r = doc_resolve_updates(&v, plan.updates, plan.update_count, err);
    }
    if (r == TH_OK && reserve_modules(&plan) != TH_OK)
        r = th_error_set(err, TH_ERR_NOMEM, 0, "out of memory");
    if (r == TH_OK)
        r = insert_new_devices(reg, &plan, err);
    if (r != TH_OK) {
        plan_free(&plan);
        return r;
    }

    /* Commit: nothing below can fail. */
    plan.new_dev_count = 0; /* owned by the registry now */
    for (size_t j = 0; j < plan.update_count; j++) {
        struct pending_update *u = &plan.updates[j];
        if (u->ident_changed)
            reg_ident_change_commit(u->id, &u->change, now_us);
        if (u->twin) {
            th_twin_free(u->id->twin);
            u->id->twin = u->twin;
            u->twin = NULL;
        }
    }
    for (size_t j = 0; j < plan.mod_count; j++) {
        struct th_identity *dev = plan.mods[j].dev;
        dev->modules[dev->module_count++] = plan.mods[j].mod;
        plan.mods[j].mod->parent = dev;
        plan.mods[j].mod = NULL;
    }
    for (size_t j = 0; j < staged_count; j++) {
        struct th_policy *slot = reg_policy_slot(reg, staged[j].name, strlen(staged[j].name));
        if (slot && !overwrite)
            continue;
        if (!slot)
            slot = &reg->policies[reg->policy_count++];
        *slot = staged[j];
    }
    if (out_created)
        *out_created = plan.created;
    if (out_updated)
        *out_updated = plan.updated;
    if (out_skipped)
        *out_skipped = plan.skipped;
    plan_free(&plan);
    return TH_OK;
}

/* ------------------------------------------------------------------ */
/* persistence state                                                   */
/* ------------------------------------------------------------------ */

/* 2^53: the largest integer a JSON number (a double) holds exactly. */
#define STATE_MAX_INT 9007199254740992.0

static cJSON *c2d_state_json(const struct th_c2d_msg *m)
{
    cJSON *o = cJSON_CreateObject();
    char *body = NULL;
    bool ok = o != NULL;
    if (ok) {
        size_t size = (m->len + 2) / 3 * 4 + 1;
        body = malloc(size);
        ok = body && th_b64_encode(m->body, m->len, body, size) == TH_OK;
    }
    ok = ok && reg_add_str(o, "messageId", m->message_id) && reg_add_str(o, "bag", m->bag) &&
         reg_add_str(o, "body", body) && reg_add_num(o, "enqueued", (double)m->enqueued_us);
    free(body);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static cJSON *identity_state_json(const struct th_identity *id)
{
    bool is_device = id->module_id == NULL;
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    bool ok = reg_add_str(o, "deviceId", id->device_id) &&
              (is_device || reg_add_str(o, "moduleId", id->module_id)) &&
              reg_add_str(o, "authType", th_auth_type_name(id->auth_type)) &&
              reg_add_key(o, "primaryKey", id->primary_key) &&
              reg_add_key(o, "secondaryKey", id->secondary_key) &&
              cJSON_AddBoolToObject(o, "enabled", id->enabled) != NULL &&
              reg_add_str_or_null(o, "statusReason", id->status_reason) &&
              reg_add_str(o, "generationId", id->generation_id) &&
              reg_add_num(o, "etagCounter", (double)id->etag_counter) &&
              reg_add_str_or_null(o, "managedBy", id->managed_by) &&
              reg_add_str_or_null(o, "modelId", id->model_id) &&
              reg_add_num(o, "statusUpdated", (double)id->status_updated_us) &&
              reg_add_num(o, "lastActivity", (double)id->last_activity_us) &&
              reg_add_item(o, "twin", th_twin_state_json(id->twin));
    if (is_device)
        ok = ok && cJSON_AddBoolToObject(o, "iotEdge", id->iot_edge) != NULL &&
             reg_add_str_or_null(o, "deviceScope", id->device_scope) &&
             reg_add_str_or_null(o, "parentScope", id->parent_scope);
    if (ok && is_device) {
        cJSON *q = cJSON_AddArrayToObject(o, "c2d");
        ok = q != NULL;
        for (const struct th_c2d_msg *m = id->c2d_head; ok && m; m = m->next) {
            cJSON *item = c2d_state_json(m);
            if (!item || !cJSON_AddItemToArray(q, item)) {
                cJSON_Delete(item);
                ok = false;
            }
        }
        cJSON *mods = ok ? cJSON_AddArrayToObject(o, "modules") : NULL;
        ok = ok && mods != NULL;
        for (size_t i = 0; ok && i < id->module_count; i++) {
            cJSON *item = identity_state_json(id->modules[i]);
            if (!item || !cJSON_AddItemToArray(mods, item)) {
                cJSON_Delete(item);
                ok = false;
            }
        }
    }
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

cJSON *th_device_state_json(const struct th_identity *dev)
{
    if (!dev || dev->module_id || !dev->twin)
        return NULL;
    return identity_state_json(dev);
}

/*
 * Integer member in min..STATE_MAX_INT. Absent (or null) gives `fallback`
 * when `required` is false.
 */
static th_result state_int(const cJSON *obj, const char *key, const char *path, double min,
                           bool required, int64_t fallback, int64_t *out, struct th_error *err)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    if ((!item || cJSON_IsNull(item)) && !required) {
        *out = fallback;
        return TH_OK;
    }
    double d = cJSON_IsNumber(item) ? item->valuedouble : -1.0;
    if (!cJSON_IsNumber(item) || d != d || d < min || d > STATE_MAX_INT || d != (double)(int64_t)d)
        return th_error_set(err, TH_ERR_INVAL, 400004, "%s.%s: %s an integer from %.0f to 2^53",
                            path, key, item ? "must be" : "missing; it must be", min);
    *out = (int64_t)d;
    return TH_OK;
}

static th_result state_str(const cJSON *obj, const char *key, const char *path, bool required,
                           const char **out, struct th_error *err)
{
    th_result r = reg_opt_string(obj, key, path, out, err);
    if (r == TH_OK && required && !*out)
        return th_error_set(err, TH_ERR_INVAL, 400004, "%s.%s: required string missing", path, key);
    return r;
}

/* A generation id: 1 to 20 decimal digits that fit in 64 bits. */
static bool generation_parse(const char *s, uint64_t *out)
{
    size_t len = strlen(s);
    uint64_t v = 0;
    if (len == 0 || len > 20)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        unsigned digit = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - digit) / 10)
            return false;
        v = v * 10 + digit;
    }
    *out = v;
    return true;
}

static th_result restore_c2d(struct th_identity *dev, const cJSON *st, const char *path,
                             struct th_error *err)
{
    const cJSON *queue, *item;
    th_result r;
    size_t i = 0;
    char sub[96];
    if ((r = reg_opt_array(st, "c2d", path, &queue, err)) != TH_OK || !queue)
        return r;
    if (cJSON_GetArraySize(queue) > TH_C2D_MAX_QUEUE)
        return th_error_set(err, TH_ERR_TOO_LARGE, 403004,
                            "%s.c2d: %d messages, a device queue holds at most %d", path,
                            cJSON_GetArraySize(queue), TH_C2D_MAX_QUEUE);
    cJSON_ArrayForEach(item, queue)
    {
        const char *mid, *bag, *body;
        int64_t enqueued;
        snprintf(sub, sizeof sub, "%s.c2d[%zu]", path, i++);
        if (!cJSON_IsObject(item))
            return th_error_set(err, TH_ERR_INVAL, 400004, "%s: must be an object", sub);
        if ((r = state_str(item, "messageId", sub, true, &mid, err)) != TH_OK ||
            (r = state_str(item, "bag", sub, true, &bag, err)) != TH_OK ||
            (r = state_str(item, "body", sub, true, &body, err)) != TH_OK ||
            (r = state_int(item, "enqueued", sub, 0, true, 0, &enqueued, err)) != TH_OK)
            return r;
        size_t blen = strlen(body);
        if (blen / 4 * 3 > (size_t)TH_C2D_MAX_BYTES + 2)
            return th_error_set(err, TH_ERR_TOO_LARGE, 413001,
                                "%s.body: over the %d byte message limit", sub, TH_C2D_MAX_BYTES);
        uint8_t *raw = blen ? malloc(blen / 4 * 3 + 3) : NULL;
        size_t len = 0;
        if (blen && !raw)
            return th_error_set(err, TH_ERR_NOMEM, 0, "%s: out of memory", sub);
        if (th_b64_decode(body, blen, raw, blen / 4 * 3 + 3, &len) != TH_OK) {
            free(raw);
            return th_error_set(err, TH_ERR_INVAL, 400004, "%s.body: must be base64", sub);
        }
        /* th_identity_c2d_push copies and enforces the size limit and queue depth. */
        r = th_identity_c2d_push(dev, mid, bag, raw, len, enqueued, err);
        free(raw);
        if (r != TH_OK) {
            struct th_error e = err ? *err : (struct th_error){0};
            return th_error_set(err, r, e.code, "%s: %s", sub, e.message);
        }
    }
    return TH_OK;
}

/*
 * A detached identity from its state. `module_id` NULL for a device. Updates
 * *max_gen with the generation id. Caller frees *out with reg_identity_free.
 */
static th_result restore_identity(const cJSON *st, const char *device_id, const char *module_id,
                                  const char *path, uint64_t *max_gen, struct th_identity **out,
                                  struct th_error *err)
{
    const char *pk, *sk, *gen, *reason, *managed, *model, *type, *scope = NULL, *parent = NULL;
    int64_t etag, status_us, activity_us;
    uint64_t gen_value;
    th_result r;
    char sub[160];

    *out = NULL;
    /* States written before authType existed are "sas". */
    if ((r = state_str(st, "authType", path, false, &type, err)) != TH_OK)
        return r;
    if (type && strcmp(type, "sas") != 0 && strcmp(type, "none") != 0)
        return th_error_set(err, TH_ERR_INVAL, 400004, "%s.authType: \"sas\" or \"none\", not '%s'",
                            path, type);
    bool none = type && strcmp(type, "none") == 0;
    if ((r = state_str(st, "primaryKey", path, !none, &pk, err)) != TH_OK ||
        (r = state_str(st, "secondaryKey", path, !none, &sk, err)) != TH_OK ||
        (r = state_str(st, "generationId", path, true, &gen, err)) != TH_OK ||
        (r = state_str(st, "statusReason", path, false, &reason, err)) != TH_OK ||
        (r = state_str(st, "managedBy", path, false, &managed, err)) != TH_OK ||
        (r = state_str(st, "modelId", path, false, &model, err)) != TH_OK ||
        (r = state_int(st, "etagCounter", path, 1, true, 0, &etag, err)) != TH_OK ||
        (r = state_int(st, "statusUpdated", path, 0, false, 0, &status_us, err)) != TH_OK ||
        (r = state_int(st, "lastActivity", path, 0, false, 0, &activity_us, err)) != TH_OK)
        return r;
    if (none && (reg_key_given(pk) || reg_key_given(sk)))
        return th_error_set(err, TH_ERR_INVAL, 400004,
                            "%s: authType \"none\" has no keys; primaryKey and secondaryKey "
                            "must be null",
                            path);
    if (!none && !reg_key_valid(pk))
        return th_error_set(err, TH_ERR_INVAL, 400004,
                            "%s.primaryKey: must be base64 of 16 to 64 bytes", path);
    if (!none && !reg_key_valid(sk))
        return th_error_set(err, TH_ERR_INVAL, 400004,
                            "%s.secondaryKey: must be base64 of 16 to 64 bytes", path);
    const cJSON *edge = cJSON_GetObjectItemCaseSensitive(st, "iotEdge");
    if (!module_id) {
        if (edge && !cJSON_IsBool(edge) && !cJSON_IsNull(edge))
            return th_error_set(err, TH_ERR_INVAL, 400004, "%s.iotEdge: must be true or false",
                                path);
        if ((r = state_str(st, "deviceScope", path, false, &scope, err)) != TH_OK ||
            (r = state_str(st, "parentScope", path, false, &parent, err)) != TH_OK)
            return r;
        if ((scope && !reg_parse_scope(scope, NULL, 0)) ||
            (parent && !reg_parse_scope(parent, NULL, 0)))
            return th_error_set(
                err, TH_ERR_INVAL, 400004,
                "%s.%s: '%s' is not a scope \"" TH_EDGE_SCOPE_PREFIX "{deviceId}-{digits}\"", path,
                scope && !reg_parse_scope(scope, NULL, 0) ? "deviceScope" : "parentScope",
                scope && !reg_parse_scope(scope, NULL, 0) ? scope : parent);
        if (parent && !cJSON_IsTrue(edge))
            return th_error_set(err, TH_ERR_INVAL, 400004,
                                "%s.parentScope: only an IoT Edge device (iotEdge true) has one",
                                path);
    }
    if (!generation_parse(gen, &gen_value))
        return th_error_set(err, TH_ERR_INVAL, 400004,
                            "%s.generationId: '%s' must be 1 to 20 decimal digits", path, gen);
    const cJSON *enabled = cJSON_GetObjectItemCaseSensitive(st, "enabled");
    if (!cJSON_IsBool(enabled))
        return th_error_set(err, TH_ERR_INVAL, 400004, "%s.enabled: must be true or false", path);
    if (module_id && !cJSON_IsTrue(enabled))
        return th_error_set(err, TH_ERR_INVAL, 400004,
                            "%s.enabled: modules are always enabled, use true", path);

    struct th_error e;
    memset(&e, 0, sizeof e);
    struct th_twin *twin = th_twin_from_state(cJSON_GetObjectItemCaseSensitive(st, "twin"), &e);
    if (!twin) {
        snprintf(sub, sizeof sub, "%s.twin", path);
        return th_error_set(err, e.result ? e.result : TH_ERR_INVAL, e.code, "%s: %s", sub,
                            e.message);
    }
    struct th_identity *id = calloc(1, sizeof *id);
    if (!id) {
        th_twin_free(twin);
        return th_error_set(err, TH_ERR_NOMEM, 0, "%s: out of memory", path);
    }
    id->twin = twin;
    id->device_id = reg_dup_str(device_id);
    id->module_id = reg_dup_str(module_id);
    id->status_reason = reg_dup_str(reason);
    id->managed_by = reg_dup_str(managed);
    id->model_id = reg_dup_str(model);
    id->device_scope = reg_dup_str(scope);
    id->parent_scope = reg_dup_str(parent);
    if (!id->device_id || (module_id && !id->module_id) || (reason && !id->status_reason) ||
        (managed && !id->managed_by) || (model && !id->model_id) || (scope && !id->device_scope) ||
        (parent && !id->parent_scope)) {
        reg_identity_free(id);
        return th_error_set(err, TH_ERR_NOMEM, 0, "%s: out of memory", path);
    }
    id->auth_type = none ? TH_AUTH_NONE : TH_AUTH_SAS;
    id->iot_edge = !module_id && cJSON_IsTrue(edge);
    if (!none) {
        reg_copy_key(id->primary_key, pk);
        reg_copy_key(id->secondary_key, sk);
    }
    snprintf(id->generation_id, sizeof id->generation_id, "%s", gen);
    id->enabled = cJSON_IsTrue(enabled);
    id->etag_counter = (uint64_t)etag;
    id->status_updated_us = status_us;
    id->last_activity_us = activity_us;
    if (gen_value > *max_gen)
        *max_gen = gen_value;
    *out = id;
    return TH_OK;
}

th_result th_registry_restore_device(struct th_registry *reg, const cJSON *state,
                                     struct th_error *err)
{
    const char *did;
    const cJSON *mods, *msrc;
    struct th_identity *dev = NULL;
    uint64_t max_gen = 0;
    char sub[192];
    th_result r;

    if (!reg)
        return th_error_set(err, TH_ERR_INVAL, 0, "no registry");
    if (!cJSON_IsObject(state))
        return th_error_set(err, TH_ERR_INVAL, 400004,
                            "device: the state must be an object as th_device_state_json writes");
    if ((r = reg_check_id_field(state, "deviceId", "device", &did, err)) != TH_OK)
        return r;
    if (th_registry_find(reg, did, NULL))
        return th_error_set(err, TH_ERR_EXISTS, 409001,
                            "device '%s' already exists; delete it before restoring it", did);
    if ((r = reg_opt_array(state, "modules", "device", &mods, err)) != TH_OK)
        return r;
    if (mods && cJSON_GetArraySize(mods) > TH_MAX_MODULES_PER_DEVICE)
        return th_error_set(err, TH_ERR_TOO_LARGE, 413003,
                            "device.modules: %d modules, at most %d are allowed per device",
                            cJSON_GetArraySize(mods), TH_MAX_MODULES_PER_DEVICE);
    if ((r = restore_identity(state, did, NULL, "device", &max_gen, &dev, err)) != TH_OK)
        return r;
    r = restore_c2d(dev, state, "device", err);

    size_t i = 0;
    cJSON_ArrayForEach(msrc, mods)
    {
        const char *mid, *mdev;
        struct th_identity *mod = NULL;
        if (r != TH_OK)
            break;
        snprintf(sub, sizeof sub, "device.modules[%zu]", i++);
        if (!cJSON_IsObject(msrc)) {
            r = th_error_set(err, TH_ERR_INVAL, 400004, "%s: must be an object", sub);
            break;
        }
        if ((r = reg_check_id_field(msrc, "moduleId", sub, &mid, err)) != TH_OK ||
            (r = state_str(msrc, "deviceId", sub, false, &mdev, err)) != TH_OK)
            break;
        if (mdev && strcmp(mdev, did) != 0) {
            r = th_error_set(err, TH_ERR_INVAL, 400004,
                             "%s.deviceId: '%s' differs from the device '%s'", sub, mdev, did);
            break;
        }
        if (reg_find_module(dev, mid, strlen(mid), NULL)) {
            r = th_error_set(err, TH_ERR_INVAL, 400011, "%s.moduleId: '%s' appears twice", sub,
                             mid);
            break;
        }
        if ((r = restore_identity(msrc, did, mid, sub, &max_gen, &mod, err)) != TH_OK)
            break;
        if ((r = reg_attach_module(dev, mod)) != TH_OK) {
            reg_identity_free(mod);
            th_error_set(err, r, 0, "%s: out of memory", sub);
        }
    }
    if (r == TH_OK && (r = reg_insert_device(reg, dev)) != TH_OK)
        th_error_set(err, r, 0, "device '%s': out of memory", did);
    if (r != TH_OK) {
        reg_identity_free(dev);
        return r;
    }
    /* Generation ids issued later must still differ from every restored one. */
    if (max_gen > reg->last_generation)
        reg->last_generation = max_gen;
    return TH_OK;
}
