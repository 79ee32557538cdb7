/*
 * registry_query.c - the twin query language over the registry
 * (iothub-protocol.md section 11, query.h): reusable query documents filled
 * in place per twin, and the paged run over the registry that builds full
 * twin documents only for the results it returns. See registry_query.h.
 */
#include "registry_query.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "registry_private.h"
#include "util.h"

/* ------------------------------------------------------------------ */
/* query documents                                                     */
/* ------------------------------------------------------------------ */

/* The members of a twin document (th_identity_twin_json), in its order. */
enum qd_member {
    QD_DEVICE_ID,
    QD_MODULE_ID,
    QD_ETAG,
    QD_DEVICE_ETAG,
    QD_STATUS,
    QD_STATUS_REASON,
    QD_STATUS_UPDATE_TIME,
    QD_CONNECTION_STATE,
    QD_LAST_ACTIVITY_TIME,
    QD_C2D_COUNT,
    QD_AUTH_TYPE,
    QD_X509,
    QD_MODEL_ID,
    QD_VERSION,
    QD_TAGS,
    QD_PROPERTIES,
    QD_CAPABILITIES,
    QD_DEVICE_SCOPE,
    QD_PARENT_SCOPES,
    QD_CONFIGURATIONS,
    QD_COUNT
};

static const char *const qd_names[QD_COUNT] = {
    "deviceId",
    "moduleId",
    "etag",
    "deviceEtag",
    "status",
    "statusReason",
    "statusUpdateTime",
    "connectionState",
    "lastActivityTime",
    "cloudToDeviceMessageCount",
    "authenticationType",
    "x509Thumbprint",
    "modelId",
    "version",
    "tags",
    "properties",
    "capabilities",
    "deviceScope",
    "parentScopes",
    "configurations",
};

struct th_query_doc {
    cJSON *root;           /* holds the attached members */
    cJSON *node[QD_COUNT]; /* NULL: not named by the query; owned (by root while attached) */
    bool attached[QD_COUNT];
    enum qd_member named[QD_COUNT]; /* the members with a node */
    size_t nnamed;
    /* Children the fill changes. */
    cJSON *x509_primary, *x509_secondary, *desired, *reported, *iot_edge, *parent_scope;
    char etag[16], device_etag[32], status_time[TH_TIME_BUF], activity_time[TH_TIME_BUF];
};

void th_query_doc_free(struct th_query_doc *d)
{
    if (!d)
        return;
    for (int m = 0; m < QD_COUNT; m++) {
        if (d->node[m] && !d->attached[m])
            cJSON_Delete(d->node[m]);
    }
    cJSON_Delete(d->root);
    free(d);
}

/* A string node whose text the fill points at the twin's own (never freed by cJSON). */
static cJSON *ref_string(void)
{
    return cJSON_CreateStringReference("");
}

/* An object named `name` with the given children; takes them on every path. */
static cJSON *object_of(const char *n1, cJSON *c1, const char *n2, cJSON *c2)
{
    cJSON *o = cJSON_CreateObject();
    bool ok = o && c1 && cJSON_AddItemToObjectCS(o, n1, c1);
    if (ok)
        c1 = NULL;
    ok = ok && (!n2 || (c2 && cJSON_AddItemToObjectCS(o, n2, c2)));
    if (ok && n2)
        c2 = NULL;
    cJSON_Delete(c1);
    cJSON_Delete(c2);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* The node of member m, with the children the fill changes recorded in d. */
static cJSON *member_node(struct th_query_doc *d, enum qd_member m)
{
    switch (m) {
    case QD_C2D_COUNT:
    case QD_VERSION:
        return cJSON_CreateNumber(0);
    case QD_X509:
        d->x509_primary = ref_string();
        d->x509_secondary = ref_string();
        return object_of("primaryThumbprint", d->x509_primary, "secondaryThumbprint",
                         d->x509_secondary);
    case QD_TAGS:
    case QD_CONFIGURATIONS:
        return cJSON_CreateObjectReference(NULL);
    case QD_PROPERTIES:
        d->desired = cJSON_CreateObjectReference(NULL);
        d->reported = cJSON_CreateObjectReference(NULL);
        return object_of("desired", d->desired, "reported", d->reported);
    case QD_CAPABILITIES:
        d->iot_edge = cJSON_CreateFalse();
        return object_of("iotEdge", d->iot_edge, NULL, NULL);
    case QD_PARENT_SCOPES: {
        cJSON *arr = cJSON_CreateArray();
        d->parent_scope = ref_string();
        if (!arr || !d->parent_scope || !cJSON_AddItemToArray(arr, d->parent_scope)) {
            cJSON_Delete(arr);
            cJSON_Delete(d->parent_scope);
            return NULL;
        }
        return arr;
    }
    default:
        return ref_string();
    }
}

th_result th_query_doc_new(const struct th_query *q, struct th_query_doc **out)
{
    if (!out)
        return TH_ERR_INVAL;
    *out = NULL;
    if (q && th_query_needs_meta(q))
        return TH_ERR_INVAL;
    struct th_query_doc *d = calloc(1, sizeof *d);
    if (!d)
        return TH_ERR_NOMEM;
    d->root = cJSON_CreateObject();
    bool ok = d->root != NULL;
    for (int m = 0; ok && m < QD_COUNT; m++) {
        if (q && !th_query_names_member(q, qd_names[m]))
            continue;
        d->node[m] = member_node(d, (enum qd_member)m);
        d->named[d->nnamed++] = (enum qd_member)m;
        ok = d->node[m] != NULL;
    }
    if (!ok) {
        th_query_doc_free(d);
        return TH_ERR_NOMEM;
    }
    *out = d;
    return TH_OK;
}

/* Show or hide member m (named by the query) in the document; allocates nothing. */
static void show(struct th_query_doc *d, enum qd_member m, bool present)
{
    if (!d->node[m] || d->attached[m] == present)
        return;
    if (present)
        (void)cJSON_AddItemToObjectCS(d->root, qd_names[m], d->node[m]); /* cannot fail */
    else
        (void)cJSON_DetachItemViaPointer(d->root, d->node[m]);
    d->attached[m] = present;
}

/* Change a node's type, keeping its name's flag (its name is a constant: see show). */
static void set_type(cJSON *node, int type)
{
    node->type = (node->type & cJSON_StringIsConst) | type;
}

static void set_str(cJSON *node, const char *s)
{
    if (s) {
        set_type(node, cJSON_String | cJSON_IsReference);
        node->valuestring = (char *)(uintptr_t)s; /* read only: the reference flag keeps it */
    } else {
        set_type(node, cJSON_NULL);
        node->valuestring = NULL;
    }
}

static void set_time(char buf[TH_TIME_BUF], int64_t us)
{
    if (us == 0)
        memcpy(buf, TH_TIME_NEVER, sizeof TH_TIME_NEVER);
    else
        th_time_format(us, buf);
}

/* Give member m id's value; false when id's twin document has no such member. */
static bool fill_member(struct th_query_doc *d, enum qd_member m, const struct th_identity *id)
{
    bool is_device = id->module_id == NULL;
    const char *parent = id->iot_edge ? id->parent_scope : id->device_scope;
    cJSON *n = d->node[m];
    /* As th_identity_twin_json: each member that the twin has, with its value. */
    switch (m) {
    case QD_DEVICE_ID:
        set_str(n, id->device_id);
        return true;
    case QD_MODULE_ID:
        set_str(n, id->module_id);
        return !is_device;
    case QD_ETAG:
        th_twin_etag(id->twin, d->etag);
        set_str(n, d->etag);
        return true;
    case QD_DEVICE_ETAG:
        th_identity_etag(id, d->device_etag);
        set_str(n, d->device_etag);
        return true;
    case QD_STATUS:
        set_str(n, id->enabled ? "enabled" : "disabled");
        return true;
    case QD_STATUS_REASON:
        set_str(n, id->status_reason);
        return id->status_reason != NULL;
    case QD_STATUS_UPDATE_TIME:
        set_time(d->status_time, id->status_updated_us);
        set_str(n, d->status_time);
        return true;
    case QD_CONNECTION_STATE:
        set_str(n, id->connected ? "Connected" : "Disconnected");
        return true;
    case QD_LAST_ACTIVITY_TIME:
        set_time(d->activity_time, id->last_activity_us);
        set_str(n, d->activity_time);
        return true;
    case QD_C2D_COUNT:
        cJSON_SetNumberValue(n, (double)id->c2d_count);
        return true;
    case QD_AUTH_TYPE:
        set_str(n, th_auth_type_name(id->auth_type));
        return true;
    case QD_X509:
        set_str(d->x509_primary, id->x509_primary[0] ? id->x509_primary : NULL);
        set_str(d->x509_secondary, id->x509_secondary[0] ? id->x509_secondary : NULL);
        return true;
    case QD_MODEL_ID:
        set_str(n, id->model_id ? id->model_id : "");
        return true;
    case QD_VERSION:
        cJSON_SetNumberValue(n, (double)th_twin_version(id->twin));
        return true;
    case QD_TAGS:
        n->child = id->twin->tags->child;
        return true;
    case QD_PROPERTIES:
        d->desired->child = id->twin->desired->child;
        d->reported->child = id->twin->reported->child;
        return true;
    case QD_CAPABILITIES:
        set_type(d->iot_edge, id->iot_edge ? cJSON_True : cJSON_False);
        return is_device;
    case QD_DEVICE_SCOPE:
        set_str(n, id->device_scope);
        return is_device && id->device_scope;
    case QD_PARENT_SCOPES:
        set_str(d->parent_scope, parent);
        return is_device && parent;
    case QD_CONFIGURATIONS:
        n->child = id->configurations ? id->configurations->child : NULL;
        return id->configurations != NULL;
    default:
        return false;
    }
}

const cJSON *th_query_doc_fill(struct th_query_doc *d, const struct th_identity *id)
{
    if (!d || !id || !id->twin)
        return NULL;
    for (size_t k = 0; k < d->nnamed; k++)
        show(d, d->named[k], fill_member(d, d->named[k], id));
    return d->root;
}

/* ------------------------------------------------------------------ */
/* the paged run                                                       */
/* ------------------------------------------------------------------ */

struct run {
    const struct th_query *q;
    struct th_query_doc *qd;        /* NULL: the condition needs full twins */
    bool light_out;                 /* projections and GROUP BY keys read the query doc too */
    struct th_query_groups *groups; /* grouped queries */
    cJSON *items;                   /* plain queries: the page */
    size_t skip, end, top, count;   /* plain: results [skip, end) go on the page; count so far */
    bool more, stop;
};

/* Examine one twin. */
static th_result examine(struct run *run, const struct th_identity *id)
{
    const struct th_query *q = run->q;
    const cJSON *light = run->qd ? th_query_doc_fill(run->qd, id) : NULL;
    cJSON *full = NULL;
    bool match = false;
    if (!light && !(full = th_identity_twin_json(id)))
        return TH_ERR_NOMEM;
    th_result r = th_query_matches(q, light ? light : full, &match);
    if (r != TH_OK || !match) {
        cJSON_Delete(full);
        return r;
    }
    if (run->groups) {
        if (!run->light_out && !full && !(full = th_identity_twin_json(id)))
            return TH_ERR_NOMEM;
        r = th_query_groups_add(run->groups, run->light_out ? light : full);
        cJSON_Delete(full);
        return r;
    }
    if (run->count >= run->end) {
        run->more = run->stop = true;
    } else if (run->count >= run->skip) {
        bool need_full = th_query_star(q) || !run->light_out;
        if (need_full && !full && !(full = th_identity_twin_json(id)))
            return TH_ERR_NOMEM;
        if (th_query_star(q)) {
            /* The item is the twin itself (th_query_project would append a copy). */
            if (!cJSON_AddItemToArray(run->items, full))
                r = TH_ERR_NOMEM;
            else
                full = NULL;
        } else {
            r = th_query_project(q, need_full ? full : light, run->items);
        }
    }
    run->count++;
    if (run->count >= run->top)
        run->stop = true;
    cJSON_Delete(full);
    return r;
}

/* Move items [skip, skip + page_size) of all into a new array *out; *more if any follow. */
static th_result slice(cJSON *all, size_t skip, size_t page_size, cJSON **out, bool *more)
{
    cJSON *page = cJSON_CreateArray();
    if (!page)
        return TH_ERR_NOMEM;
    size_t i = 0;
    cJSON *it = all->child, *next;
    for (; it; it = next, i++) {
        next = it->next;
        if (i >= skip && i - skip < page_size)
            (void)cJSON_AddItemToArray(page, cJSON_DetachItemViaPointer(all, it)); /* cannot fail */
    }
    *more = i > skip && i - skip > page_size;
    *out = page;
    return TH_OK;
}

th_result th_registry_query(const struct th_registry *reg, const struct th_query *q, size_t skip,
                            size_t page_size, struct th_query_page *out, struct th_error *err)
{
    if (out)
        memset(out, 0, sizeof *out);
    if (!reg || !q || !out || page_size == 0 || skip > SIZE_MAX - page_size ||
        th_query_source(q) == TH_QUERY_JOBS)
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID, "query: nothing to run");
    bool modules = th_query_source(q) == TH_QUERY_MODULES;
    struct run run = {.q = q, .skip = skip, .end = skip + page_size, .top = th_query_top(q)};
    th_result r = TH_OK;
    if (!th_query_needs_meta(q)) {
        r = th_query_doc_new(q, &run.qd);
        run.light_out = !th_query_reads_sections(q);
    }
    if (r == TH_OK && th_query_grouped(q))
        r = th_query_groups_new(q, &run.groups);
    if (r == TH_OK && !(run.items = cJSON_CreateArray()))
        r = TH_ERR_NOMEM;
    run.stop = run.top == 0;
    for (const struct dev_node *node = reg->devices; r == TH_OK && node && !run.stop;
         node = node->hh.next) {
        const struct th_identity *d = node->id;
        if (!modules) {
            r = examine(&run, d);
            continue;
        }
        for (size_t i = 0; r == TH_OK && i < d->module_count && !run.stop; i++)
            r = examine(&run, d->modules[i]);
    }
    if (r == TH_OK && run.groups) {
        cJSON *all = run.items;
        run.items = NULL;
        r = th_query_groups_emit(run.groups, all);
        if (r == TH_OK)
            r = slice(all, skip, page_size, &run.items, &run.more);
        cJSON_Delete(all);
    }
    th_query_doc_free(run.qd);
    th_query_groups_free(run.groups);
    if (r != TH_OK) {
        cJSON_Delete(run.items);
        /* Nothing else can fail once the arguments are checked; as th_query_run answers. */
        return th_error_set(err, TH_ERR_NOMEM, 0, "query: out of memory");
    }
    out->items = run.items;
    out->is_twin = th_query_star(q);
    out->more = run.more;
    return TH_OK;
}

void th_query_page_free(struct th_query_page *page)
{
    if (!page)
        return;
    cJSON_Delete(page->items);
    memset(page, 0, sizeof *page);
}
