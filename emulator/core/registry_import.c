/*
 * registry_import.c - th_registry_import (10.7-style bulk): a registry
 * document whose identities may already exist, skipped or overwritten.
 * Everything is planned first (new identities built detached, overwrites
 * prepared as struct pending_update, twins replaced only where the document
 * differs) and committed with steps that cannot fail: all-or-nothing.
 */
#include "registry_private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

/* ------------------------------------------------------------------ */
/* import                                                              */
/* ------------------------------------------------------------------ */

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
    if (r == TH_OK)
        r = reg_plan_x509(id, req.x509_primary, req.x509_secondary, &u->change, err);
    if (r != TH_OK) {
        struct th_error e = err ? *err : (struct th_error){0};
        return th_error_set(err, r, e.code, "%s.authentication: %s", path, e.message);
    }
    u->ident_changed = u->change.auth_type != id->auth_type ||
                       strcmp(u->change.x509_primary, id->x509_primary) != 0 ||
                       strcmp(u->change.x509_secondary, id->x509_secondary) != 0 ||
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
            return th_error_set(err, TH_ERR_TOO_LARGE, TH_EC_TOO_MANY_MODULES_ON_DEVICE,
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
