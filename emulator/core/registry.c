/*
 * registry.c - the identity registry's store (iothub-protocol.md sections 1,
 * 2.5, 5.2): devices in a uthash table keyed by device id (insertion order
 * kept for iteration), modules as a per-device array, shared access policies
 * in a fixed array, connection bookkeeping, per-device C2D queues and
 * identity etags; the development identities; and the helpers the other
 * registry files build on (keys, detached identities that are inserted only
 * once complete).
 *
 * The rest of the registry: registry_ident.c (service create and update),
 * registry_json.c (JSON views, requests), registry_doc.c and
 * registry_import.c (registry documents), registry_state.c (snapshots);
 * registry_private.h lists what they share.
 *
 * Pure data: no I/O besides th_random_key for generated keys.
 */
#include "registry_private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "topic.h"
#include "util.h"

/* ------------------------------------------------------------------ */
/* small helpers                                                       */
/* ------------------------------------------------------------------ */

/* True when `key` is base64 of TH_KEY_MIN_BYTES..TH_KEY_MAX_BYTES bytes. */
bool reg_key_valid(const char *key)
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

bool reg_key_given(const char *key)
{
    return key && key[0] != '\0';
}

/* Copy a (validated) key into dst, or generate one when none is given. */
th_result reg_fill_key(char dst[TH_KEY_BUF], const char *key)
{
    if (!reg_key_given(key))
        return th_random_key(TH_GENERATED_KEY_BYTES, dst, TH_KEY_BUF);
    size_t len = strlen(key);
    if (len >= TH_KEY_BUF)
        return TH_ERR_INVAL;
    memcpy(dst, key, len + 1);
    return TH_OK;
}

bool reg_policy_name_valid(const char *name, size_t len)
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

char *reg_dup_str(const char *s)
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
void reg_identity_free(struct th_identity *id)
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
    cJSON_Delete(id->configurations);
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
struct th_identity *reg_identity_create(struct th_registry *reg, const char *device_id,
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
th_result reg_insert_device(struct th_registry *reg, struct th_identity *dev)
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

struct dev_node *reg_find_node(const struct th_registry *reg, const char *device_id, size_t dlen)
{
    struct dev_node *node = NULL;
    if (!reg || !device_id)
        return NULL;
    HASH_FIND(hh, reg->devices, device_id, dlen, node);
    return node;
}

struct th_identity *reg_find_module(const struct th_identity *dev, const char *module_id,
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
th_result reg_attach_module(struct th_identity *dev, struct th_identity *mod)
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
th_result reg_device_prepare(struct th_registry *reg, const char *device_id, enum th_auth_type auth,
                             const char *primary_key, const char *secondary_key, bool enabled,
                             int64_t now_us, struct th_identity **out, struct th_error *err)
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
        return th_error_set(err, TH_ERR_EXISTS, TH_EC_DEVICE_ALREADY_EXISTS,
                            "device '%s' already exists", device_id);
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
th_result reg_module_prepare(struct th_registry *reg, const char *device_id, const char *module_id,
                             enum th_auth_type auth, const char *primary_key,
                             const char *secondary_key, int64_t now_us,
                             struct th_identity **out_dev, struct th_identity **out_mod,
                             struct th_error *err)
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
        return th_error_set(err, TH_ERR_NOT_FOUND, TH_EC_DEVICE_NOT_FOUND,
                            "device '%s' does not exist", device_id);
    struct th_identity *dev = node->id;
    if (reg_find_module(dev, module_id, strlen(module_id), NULL))
        return th_error_set(err, TH_ERR_EXISTS, TH_EC_MODULE_ALREADY_EXISTS_ON_DEVICE,
                            "module '%s' already exists on device '%s'", module_id, device_id);
    if (dev->module_count >= TH_MAX_MODULES_PER_DEVICE)
        return th_error_set(err, TH_ERR_TOO_LARGE, TH_EC_TOO_MANY_MODULES_ON_DEVICE,
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

struct th_policy *reg_policy_slot(const struct th_registry *reg, const char *name, size_t len)
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
th_result reg_policy_fill(struct th_policy *p, const char *name, const char *primary_key,
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
        return th_error_set(err, TH_ERR_TOO_LARGE, TH_EC_MESSAGE_TOO_LARGE,
                            "message of %zu bytes exceeds the %d byte limit", len,
                            TH_C2D_MAX_BYTES);
    if (dev->c2d_count >= TH_C2D_MAX_QUEUE)
        return th_error_set(err, TH_ERR_QUEUE_FULL, TH_EC_DEVICE_MAXIMUM_QUEUE_DEPTH_EXCEEDED,
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
    char dec[24], *d = dec + sizeof dec; /* the decimal text, without snprintf (per twin answer) */
    unsigned long long v = (unsigned long long)id->etag_counter;
    do {
        *--d = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    if (th_b64_encode((const uint8_t *)d, (size_t)(dec + sizeof dec - d), buf, 32) != TH_OK)
        buf[0] = '\0'; /* cannot happen: 20 digits encode to 28 characters */
}

/* ------------------------------------------------------------------ */
/* counts                                                              */
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

/* Copies a key already checked to fit (reg_key_valid or a stored key). */
void reg_copy_key(char dst[TH_KEY_BUF], const char *src)
{
    size_t n = strlen(src);
    memcpy(dst, src, n + 1);
}
