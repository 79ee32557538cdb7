/*
 * config.c - automatic device and module configurations (config.h): the
 * store, validation, targeting through the query language (query.h),
 * priority resolution per twin, the content written into desired
 * properties, the per-twin statuses and the metrics.
 */
#include "config.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "json.h"
#include "patch.h"
#include "query.h"
#include "util.h"

#define STATUS_APPLIED "Applied"
#define STATUS_TARGETED "Targeted"
#define MODULE_PREFIX "from devices.modules where"

struct th_config {
    char *id;
    char *schema_version;
    char *target;   /* targetCondition as given */
    cJSON *labels;  /* object, or NULL (JSON null) */
    cJSON *content; /* as given */
    cJSON *queries; /* metrics.queries: object of strings, maybe empty */
    int64_t priority;
    int64_t created_us, updated_us;
    uint64_t etag_counter;
    uint64_t seq;           /* creation order: breaks ties of created_us */
    bool module;            /* moduleContent: targets module twins */
    bool all;               /* targetCondition "*" */
    bool deleting;          /* th_config_delete: targets nothing, content still known */
    struct th_query *query; /* parsed target; NULL: targets nothing (or all) */
    cJSON *patch;           /* the desired patch the content stands for */
    cJSON *removal;         /* the same paths, each null */
};

struct th_config_store {
    struct th_config **items; /* creation order */
    size_t n, cap;
    uint64_t next_seq;
};

static void config_free(struct th_config *c)
{
    if (!c)
        return;
    free(c->id);
    free(c->schema_version);
    free(c->target);
    cJSON_Delete(c->labels);
    cJSON_Delete(c->content);
    cJSON_Delete(c->queries);
    th_query_free(c->query);
    cJSON_Delete(c->patch);
    cJSON_Delete(c->removal);
    free(c);
}

struct th_config_store *th_config_store_new(void)
{
    return calloc(1, sizeof(struct th_config_store));
}

void th_config_store_free(struct th_config_store *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++)
        config_free(s->items[i]);
    free(s->items);
    free(s);
}

size_t th_config_count(const struct th_config_store *s)
{
    return s ? s->n : 0;
}

static struct th_config *find(const struct th_config_store *s, const char *id)
{
    for (size_t i = 0; s && id && i < s->n; i++)
        if (!strcmp(s->items[i]->id, id))
            return s->items[i];
    return NULL;
}

static th_result nomem(struct th_error *err)
{
    return th_error_set(err, TH_ERR_NOMEM, TH_EC_SERVER_ERROR, "out of memory");
}

static th_result invalid(struct th_error *err, const char *what, const char *why)
{
    return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID, "%s: %s", what, why);
}

/* ---- validation -------------------------------------------------------------------------- */

static bool id_valid(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > TH_CONFIG_MAX_ID_LEN)
        return false;
    for (const char *p = id; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || strchr("-+%_*!'", *p)))
            return false;
    return true;
}

static th_result check_labels(const cJSON *labels, struct th_error *err)
{
    if (!labels || cJSON_IsNull(labels))
        return TH_OK;
    if (!cJSON_IsObject(labels))
        return invalid(err, "labels", "must be an object of strings, {\"name\": \"value\"}");
    for (const cJSON *l = labels->child; l; l = l->next)
        if (!cJSON_IsString(l) || !l->string[0] || strlen(l->string) > TH_CONFIG_MAX_LABEL_LEN ||
            strlen(l->valuestring) > TH_CONFIG_MAX_LABEL_LEN)
            return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                                "labels: '%.64s' must have a string value; names and values are "
                                "1 to %d characters",
                                l->string, TH_CONFIG_MAX_LABEL_LEN);
    return TH_OK;
}

static th_result check_metrics(const cJSON *metrics, struct th_error *err)
{
    const cJSON *q =
        cJSON_IsObject(metrics) ? cJSON_GetObjectItemCaseSensitive(metrics, "queries") : NULL;
    if (metrics && !cJSON_IsNull(metrics) && !cJSON_IsObject(metrics))
        return invalid(err, "metrics",
                       "must be an object {\"queries\": {\"name\": \"SELECT ...\"}}");
    if (q && !cJSON_IsNull(q) && !cJSON_IsObject(q))
        return invalid(err, "metrics.queries", "must be an object of query strings");
    int n = 0;
    for (const cJSON *m = cJSON_IsObject(q) ? q->child : NULL; m; m = m->next, n++)
        if (!cJSON_IsString(m) || !m->string[0])
            return invalid(err, "metrics.queries", "every metric needs a name and a query string");
    if (n > TH_CONFIG_MAX_METRICS)
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "metrics.queries: %d custom metrics; a configuration may have at "
                            "most %d",
                            n, TH_CONFIG_MAX_METRICS);
    return TH_OK;
}

/* Skips ASCII white space. */
static const char *skip_ws(const char *p)
{
    while (*p && isspace((unsigned char)*p))
        p++;
    return p;
}

/* Whether `cond` starts with "from devices.modules where" (any case, any spacing). */
static bool module_target(const char *cond)
{
    const char *p = skip_ws(cond);
    static const char *const words[] = {"from", "devices.modules", "where"};
    for (size_t i = 0; i < 3; i++) {
        size_t n = strlen(words[i]);
        if (strncasecmp(p, words[i], n) || (p[n] && !isspace((unsigned char)p[n])))
            return false;
        p = skip_ws(p + n);
    }
    return true;
}

/*
 * Parses a target condition for a device or module configuration; *out NULL
 * for an empty condition or "*" (*all then). err names targetCondition.
 */
static th_result parse_target(const char *cond, bool module, struct th_query **out, bool *all,
                              struct th_error *err)
{
    *out = NULL;
    *all = false;
    const char *p = skip_ws(cond);
    if (!*p)
        return TH_OK;
    if (!strcmp(p, "*")) {
        if (module)
            return invalid(err, "targetCondition",
                           "a module configuration cannot target every module with '*'; write "
                           "\"from devices.modules where ...\"");
        *all = true;
        return TH_OK;
    }
    bool is_module = module_target(p);
    if (module && !is_module)
        return invalid(err, "targetCondition",
                       "a module configuration's target starts with \"from devices.modules "
                       "where\"");
    if (!module && (is_module || !strncasecmp(p, "from ", 5)))
        return invalid(err, "targetCondition",
                       "a device configuration's target is a condition on device twins, such as "
                       "tags.environment='test', without FROM");
    size_t len = strlen(p) + 40;
    char *text = malloc(len);
    if (!text)
        return nomem(err);
    snprintf(text, len, module ? "SELECT * %s" : "SELECT * FROM devices WHERE %s", p);
    struct th_error qe = {0};
    th_result r = th_query_parse(text, strlen(text), out, &qe);
    free(text);
    if (r == TH_ERR_NOMEM)
        return nomem(err);
    if (r != TH_OK)
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID, "targetCondition: %s",
                            qe.message);
    return TH_OK;
}

/* Sets `value` (copied) at the path of `segs` (n of them) in `patch`; refuses overlaps. */
static th_result put_path(cJSON *patch, char **segs, size_t n, const cJSON *value, const char *key,
                          struct th_error *err)
{
    cJSON *at = patch;
    for (size_t i = 0; i + 1 < n; i++) {
        cJSON *next = cJSON_GetObjectItemCaseSensitive(at, segs[i]);
        if (!next) {
            next = cJSON_AddObjectToObject(at, segs[i]);
            if (!next)
                return nomem(err);
        } else if (!cJSON_IsObject(next)) {
            return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                                "content: '%s' overlaps another setting of the same path", key);
        }
        at = next;
    }
    if (cJSON_GetObjectItemCaseSensitive(at, segs[n - 1]))
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "content: '%s' overlaps another setting of the same path", key);
    cJSON *dup = value ? cJSON_Duplicate(value, 1) : cJSON_CreateNull();
    if (!dup || !cJSON_AddItemToObject(at, segs[n - 1], dup)) {
        cJSON_Delete(dup);
        return nomem(err);
    }
    return TH_OK;
}

/* Splits `path` on '.' into at most 16 segments (written into buf); -1 for an empty segment. */
static int split_path(const char *path, char *buf, size_t size, char **segs)
{
    snprintf(buf, size, "%s", path);
    int n = 0;
    for (char *p = buf;;) {
        char *dot = strchr(p, '.');
        if (dot)
            *dot = '\0';
        if (!*p || n == 16)
            return -1;
        segs[n++] = p;
        if (!dot)
            return n;
        p = dot + 1;
    }
}

/*
 * The desired patch and its removal for one content section (deviceContent
 * or moduleContent): keys "properties.desired" (object value, its members
 * set) or "properties.desired.<a.b.c>".
 */
static th_result build_patches(const cJSON *section, const char *name, cJSON **patch,
                               cJSON **removal, struct th_error *err)
{
    static const char root[] = "properties.desired";
    *patch = cJSON_CreateObject();
    *removal = cJSON_CreateObject();
    if (!*patch || !*removal)
        return nomem(err);
    for (const cJSON *k = section->child; k; k = k->next) {
        const char *key = k->string;
        char buf[1200];
        char *segs[16];
        if (!strcmp(key, root)) {
            if (!cJSON_IsObject(k))
                return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                                    "content.%s: '%s' sets the whole desired section and takes an "
                                    "object",
                                    name, root);
            for (const cJSON *m = k->child; m; m = m->next) {
                char *one[1] = {m->string};
                th_result r = put_path(*patch, one, 1, m, key, err);
                if (r == TH_OK)
                    r = put_path(*removal, one, 1, NULL, key, err);
                if (r != TH_OK)
                    return r;
            }
            continue;
        }
        int n = -1;
        if (!strncmp(key, root, sizeof root - 1) && key[sizeof root - 1] == '.' &&
            strlen(key) < sizeof buf)
            n = split_path(key + sizeof root, buf, sizeof buf, segs);
        if (n < 1)
            return th_error_set(
                err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                "content.%s: '%.200s' is not a twin path; write "
                "\"properties.desired\" or \"properties.desired.<name>[.<name>...]\"",
                name, key);
        th_result r = put_path(*patch, segs, (size_t)n, k, key, err);
        if (r == TH_OK)
            r = put_path(*removal, segs, (size_t)n, NULL, key, err);
        if (r != TH_OK)
            return r;
    }
    struct th_error te = {0};
    if (th_twin_validate_patch(TH_SECTION_DESIRED, *patch, &te) != TH_OK)
        return th_error_set(err, te.result, te.code ? te.code : TH_EC_ARGUMENT_INVALID,
                            "content.%s: %s", name, te.message);
    return TH_OK;
}

/* content: which section, and its patches. */
static th_result check_content(const cJSON *content, struct th_config *c, struct th_error *err)
{
    if (!cJSON_IsObject(content))
        return invalid(err, "content",
                       "needs an object {\"deviceContent\": {...}} or {\"moduleContent\": {...}}");
    const cJSON *dc = cJSON_GetObjectItemCaseSensitive(content, "deviceContent");
    const cJSON *mc = cJSON_GetObjectItemCaseSensitive(content, "moduleContent");
    const cJSON *edge = cJSON_GetObjectItemCaseSensitive(content, "modulesContent");
    for (const cJSON *m = content->child; m; m = m->next) {
        if (strcmp(m->string, "deviceContent") && strcmp(m->string, "moduleContent") &&
            strcmp(m->string, "modulesContent"))
            return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                                "content: unknown member '%.64s'; a configuration's content is "
                                "deviceContent or moduleContent",
                                m->string);
        if (!cJSON_IsNull(m) && !cJSON_IsObject(m))
            return invalid(err, "content", "deviceContent and moduleContent must be objects");
    }
    if (cJSON_IsObject(edge) && edge->child)
        return invalid(err, "content.modulesContent",
                       "IoT Edge deployments are not emulated by twinhub; use deviceContent or "
                       "moduleContent");
    bool has_dc = cJSON_IsObject(dc) && dc->child, has_mc = cJSON_IsObject(mc) && mc->child;
    if (has_dc && has_mc)
        return invalid(err, "content",
                       "a configuration is either for devices (deviceContent) or for modules "
                       "(moduleContent), not both");
    c->module = has_mc || (!has_dc && cJSON_IsObject(mc));
    const cJSON *section = c->module ? mc : dc;
    cJSON empty = {0};
    empty.type = cJSON_Object;
    return build_patches(cJSON_IsObject(section) ? section : &empty,
                         c->module ? "moduleContent" : "deviceContent", &c->patch, &c->removal,
                         err);
}

/* A string copy, or NULL for a NULL source; sets *ok false on out-of-memory. */
static char *dup_or(const char *s, bool *ok)
{
    if (!s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        *ok = false;
    return d;
}

/*
 * A configuration from a REST body (not yet in a store). `content_from`
 * (update) supplies the content when the body has none.
 */
static th_result config_from_json(const char *id, const cJSON *doc, const cJSON *content_from,
                                  struct th_config **out, struct th_error *err)
{
    *out = NULL;
    if (!cJSON_IsObject(doc))
        return invalid(err, "configuration", "the body must be a JSON object");
    if (!id || !id_valid(id))
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "id '%.130s' is not valid: 1 to %d characters, lower-case letters, "
                            "digits and - + %% _ * ! '",
                            id ? id : "", TH_CONFIG_MAX_ID_LEN);
    const cJSON *jid = cJSON_GetObjectItemCaseSensitive(doc, "id");
    if (jid && !cJSON_IsNull(jid) && (!cJSON_IsString(jid) || strcmp(jid->valuestring, id)))
        return invalid(err, "id", "the body's id differs from the configuration's");
    const cJSON *sv = cJSON_GetObjectItemCaseSensitive(doc, "schemaVersion");
    const cJSON *tc = cJSON_GetObjectItemCaseSensitive(doc, "targetCondition");
    const cJSON *pr = cJSON_GetObjectItemCaseSensitive(doc, "priority");
    const cJSON *labels = cJSON_GetObjectItemCaseSensitive(doc, "labels");
    const cJSON *metrics = cJSON_GetObjectItemCaseSensitive(doc, "metrics");
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(doc, "content");
    if (sv && !cJSON_IsNull(sv) && !cJSON_IsString(sv))
        return invalid(err, "schemaVersion", "must be a string such as \"1.0\"");
    if (tc && !cJSON_IsNull(tc) && !cJSON_IsString(tc))
        return invalid(err, "targetCondition", "must be a string");
    if (pr && !cJSON_IsNull(pr) &&
        (!cJSON_IsNumber(pr) || pr->valuedouble < 0 || pr->valuedouble > 2147483647.0 ||
         pr->valuedouble != (double)(int64_t)pr->valuedouble))
        return invalid(err, "priority", "must be a whole number from 0 to 2147483647");
    th_result r;
    if ((r = check_labels(labels, err)) != TH_OK || (r = check_metrics(metrics, err)) != TH_OK)
        return r;
    if ((!content || cJSON_IsNull(content)) && content_from)
        content = content_from;
    if (!content || cJSON_IsNull(content))
        return invalid(err, "content",
                       "is required: {\"deviceContent\": {\"properties.desired.name\": value}} or "
                       "moduleContent");
    struct th_config *c = calloc(1, sizeof *c);
    if (!c)
        return nomem(err);
    if ((r = check_content(content, c, err)) != TH_OK ||
        (r = parse_target(cJSON_IsString(tc) ? tc->valuestring : "", c->module, &c->query, &c->all,
                          err)) != TH_OK) {
        config_free(c);
        return r;
    }
    bool ok = true;
    const cJSON *q =
        cJSON_IsObject(metrics) ? cJSON_GetObjectItemCaseSensitive(metrics, "queries") : NULL;
    c->id = dup_or(id, &ok);
    c->schema_version = dup_or(cJSON_IsString(sv) ? sv->valuestring : "1.0", &ok);
    c->target = dup_or(cJSON_IsString(tc) ? tc->valuestring : "", &ok);
    c->labels = cJSON_IsObject(labels) ? cJSON_Duplicate(labels, 1) : NULL;
    c->content = cJSON_Duplicate(content, 1);
    c->queries = cJSON_IsObject(q) ? cJSON_Duplicate(q, 1) : cJSON_CreateObject();
    c->priority = cJSON_IsNumber(pr) ? (int64_t)pr->valuedouble : 0;
    if (!ok || (cJSON_IsObject(labels) && !c->labels) || !c->content || !c->queries) {
        config_free(c);
        return nomem(err);
    }
    *out = c;
    return TH_OK;
}

static th_result etag_check(const struct th_config *c, const char *if_match, struct th_error *err)
{
    char etag[32];
    char dec[24];
    snprintf(dec, sizeof dec, "%llu", (unsigned long long)c->etag_counter);
    if (th_b64_encode((const uint8_t *)dec, strlen(dec), etag, sizeof etag) != TH_OK)
        etag[0] = '\0';
    if (th_etag_matches(if_match, etag))
        return TH_OK;
    return th_error_set(err, TH_ERR_PRECONDITION, TH_EC_PRECONDITION_FAILED,
                        "etag %s does not match configuration '%s''s current etag \"%s\"; read it "
                        "again, or send If-Match *",
                        if_match, c->id, etag);
}

static th_result not_found(const char *id, struct th_error *err)
{
    return th_error_set(err, TH_ERR_NOT_FOUND, TH_EC_NOT_FOUND,
                        "configuration '%.130s' does not exist", id ? id : "");
}

/* ---- the store --------------------------------------------------------------------------- */

static th_result store_add(struct th_config_store *s, struct th_config *c, struct th_error *err)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 8;
        struct th_config **items = realloc(s->items, cap * sizeof *items);
        if (!items)
            return nomem(err);
        s->items = items;
        s->cap = cap;
    }
    s->items[s->n++] = c;
    return TH_OK;
}

th_result th_config_create(struct th_config_store *s, const char *id, const cJSON *doc,
                           int64_t now_us, struct th_error *err)
{
    if (!s)
        return th_error_set(err, TH_ERR_INVAL, 0, "no configuration store");
    struct th_config *c;
    th_result r = config_from_json(id, doc, NULL, &c, err);
    if (r != TH_OK)
        return r;
    if (find(s, id)) {
        config_free(c);
        return th_error_set(err, TH_ERR_EXISTS, TH_EC_GENERIC_CONFLICT,
                            "configuration '%s' already exists; update it with If-Match, or "
                            "delete it first",
                            id);
    }
    if (s->n >= TH_CONFIG_MAX) {
        config_free(c);
        return th_error_set(err, TH_ERR_TOO_LARGE, TH_EC_IOTHUB_QUOTA_EXCEEDED,
                            "the hub has %d configurations, the most it may have; delete one "
                            "first",
                            TH_CONFIG_MAX);
    }
    c->created_us = c->updated_us = now_us;
    c->etag_counter = 1;
    c->seq = ++s->next_seq;
    if ((r = store_add(s, c, err)) != TH_OK)
        config_free(c);
    return r;
}

/* Adds a copy of `item` as o[key]; false on out-of-memory. */
static bool add_copy(cJSON *o, const char *key, const cJSON *item)
{
    cJSON *dup = cJSON_Duplicate(item, 1);
    if (dup && cJSON_AddItemToObject(o, key, dup))
        return true;
    cJSON_Delete(dup);
    return false;
}

th_result th_config_update(struct th_config_store *s, const char *id, const cJSON *doc,
                           const char *if_match, int64_t now_us, struct th_error *err)
{
    struct th_config *old = find(s, id);
    if (!old)
        return not_found(id, err);
    if (!cJSON_IsObject(doc))
        return invalid(err, "configuration", "the body must be a JSON object");
    /* The stored members, replaced by those the body gives: an absent member keeps its value. */
    cJSON *merged = cJSON_CreateObject();
    cJSON *metrics = merged ? cJSON_AddObjectToObject(merged, "metrics") : NULL;
    bool ok = metrics && cJSON_AddStringToObject(merged, "schemaVersion", old->schema_version) &&
              cJSON_AddStringToObject(merged, "targetCondition", old->target) &&
              cJSON_AddNumberToObject(merged, "priority", (double)old->priority) &&
              (!old->labels || add_copy(merged, "labels", old->labels)) &&
              add_copy(merged, "content", old->content) &&
              add_copy(metrics, "queries", old->queries);
    static const char *const members[] = {"schemaVersion", "targetCondition", "priority",
                                          "labels",        "content",         "metrics"};
    for (size_t i = 0; ok && i < sizeof members / sizeof members[0]; i++) {
        const cJSON *given = cJSON_GetObjectItemCaseSensitive(doc, members[i]);
        if (given && th_json_set_member(merged, members[i], cJSON_Duplicate(given, 1)) != TH_OK)
            ok = false;
    }
    if (!ok) {
        cJSON_Delete(merged);
        return nomem(err);
    }
    const cJSON *jid = cJSON_GetObjectItemCaseSensitive(doc, "id");
    struct th_config *c;
    th_result r =
        jid && !cJSON_IsNull(jid) && (!cJSON_IsString(jid) || strcmp(jid->valuestring, id))
            ? invalid(err, "id", "the body's id differs from the configuration's")
            : config_from_json(id, merged, old->content, &c, err);
    cJSON_Delete(merged);
    if (r != TH_OK)
        return r;
    if (!cJSON_Compare(c->content, old->content, 1)) {
        config_free(c);
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "the content of configuration '%s' cannot be changed after it was "
                            "created; create a new configuration",
                            id);
    }
    if ((r = etag_check(old, if_match, err)) != TH_OK) {
        config_free(c);
        return r;
    }
    c->created_us = old->created_us;
    c->seq = old->seq;
    c->etag_counter = old->etag_counter + 1;
    c->updated_us = now_us;
    for (size_t i = 0; i < s->n; i++)
        if (s->items[i] == old)
            s->items[i] = c;
    config_free(old);
    return TH_OK;
}

/* ---- evaluation -------------------------------------------------------------------------- */

/* Whether configuration c targets the twin `doc`. */
static th_result targets(const struct th_config *c, cJSON *doc, bool *out, struct th_error *err)
{
    *out = false;
    if (c->deleting)
        return TH_OK;
    if (c->all) {
        *out = true;
        return TH_OK;
    }
    if (!c->query)
        return TH_OK;
    cJSON *items = NULL;
    bool is_twin;
    th_result r = th_query_run(c->query, &doc, 1, &items, &is_twin, err);
    if (r != TH_OK)
        return r;
    *out = cJSON_GetArraySize(items) > 0;
    cJSON_Delete(items);
    return TH_OK;
}

/* Whether a outranks b: higher priority, then created later. */
static bool outranks(const struct th_config *a, const struct th_config *b)
{
    if (!b)
        return true;
    if (a->priority != b->priority)
        return a->priority > b->priority;
    if (a->created_us != b->created_us)
        return a->created_us > b->created_us;
    return a->seq > b->seq;
}

/* Adds a null for every member of `current` that `obj` lacks, recursively where both nest. */
static bool null_the_rest(cJSON *obj, const cJSON *current)
{
    for (const cJSON *m = current->child; m; m = m->next) {
        cJSON *have = cJSON_GetObjectItemCaseSensitive(obj, m->string);
        if (!have) {
            if (!cJSON_AddNullToObject(obj, m->string))
                return false;
        } else if (cJSON_IsObject(have) && cJSON_IsObject(m) && !null_the_rest(have, m)) {
            return false;
        }
    }
    return true;
}

/*
 * Merges the next configuration's patch `src` into `dst`, which holds the
 * removal of the previous one (nulls; NULL `current` members are ignored).
 * src's members replace; objects onto objects merge; an object onto a removed
 * (null) path replaces what the twin holds there (`current`, its desired
 * section at this level) whole: the previous settings go, the new ones stay.
 */
static bool merge_next(cJSON *dst, const cJSON *src, const cJSON *current)
{
    for (const cJSON *m = src->child; m; m = m->next) {
        cJSON *have = cJSON_GetObjectItemCaseSensitive(dst, m->string);
        const cJSON *cur =
            cJSON_IsObject(current) ? cJSON_GetObjectItemCaseSensitive(current, m->string) : NULL;
        if (cJSON_IsObject(m) && cJSON_IsObject(have)) {
            if (!merge_next(have, m, cur))
                return false;
            continue;
        }
        cJSON *dup = cJSON_Duplicate(m, 1);
        if (dup && cJSON_IsNull(have) && cJSON_IsObject(dup) && cJSON_IsObject(cur) &&
            !null_the_rest(dup, cur)) {
            cJSON_Delete(dup);
            return false;
        }
        if (th_json_set_member(dst, m->string, dup) != TH_OK)
            return false;
    }
    return true;
}

/* The identity's applied configuration id in its statuses, or NULL. */
static const char *applied_in(const cJSON *statuses)
{
    for (const cJSON *m = statuses ? statuses->child : NULL; m; m = m->next)
        if (!strcmp(th_json_string(m, "status", ""), STATUS_APPLIED))
            return m->string;
    return NULL;
}

static cJSON *status_entry(const char *status)
{
    cJSON *o = cJSON_CreateObject();
    if (o && !cJSON_AddStringToObject(o, "status", status)) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* Writes the change of applied configuration from `from` (may be NULL) to `to` (may be NULL). */
static th_result write_content(struct th_identity *id, const struct th_config *from,
                               const struct th_config *to, int64_t now_us,
                               const struct th_config_hooks *hooks, bool *written,
                               struct th_error *err)
{
    *written = false;
    cJSON *doc = cJSON_CreateObject();
    cJSON *props = doc ? cJSON_AddObjectToObject(doc, "properties") : NULL;
    cJSON *desired = props ? cJSON_AddObjectToObject(props, "desired") : NULL;
    if (!desired || (from && !merge_next(desired, from->removal, NULL)) ||
        (to && !merge_next(desired, to->patch, id->twin->desired))) {
        cJSON_Delete(doc);
        return nomem(err);
    }
    if (!desired->child) {
        cJSON_Delete(doc);
        *written = true; /* nothing to write: as good as written */
        return TH_OK;
    }
    struct th_twin_write w = {.mode = TH_TWIN_WRITE_PATCH, .doc = doc};
    struct th_twin_write_result res;
    struct th_error we = {0};
    th_result r = th_twin_service_write(id->twin, &w, now_us, &res, &we);
    cJSON_Delete(doc);
    if (r == TH_ERR_NOMEM)
        return nomem(err);
    if (r != TH_OK)
        return TH_OK; /* refused (a size limit): not applied, tried again next time */
    *written = true;
    if (hooks && hooks->twin_written)
        hooks->twin_written(hooks->arg, id, &res);
    th_twin_write_result_free(&res);
    return TH_OK;
}

static th_result eval_identity(struct th_config_store *s, struct th_identity *id, int64_t now_us,
                               const struct th_config_hooks *hooks, struct th_error *err)
{
    bool is_module = id->module_id != NULL;
    if (s->n == 0 && !id->configurations)
        return TH_OK;
    cJSON *doc = th_identity_twin_json(id);
    cJSON *statuses = cJSON_CreateObject();
    if (!doc || !statuses) {
        cJSON_Delete(doc);
        cJSON_Delete(statuses);
        return nomem(err);
    }
    struct th_config *best = NULL;
    th_result r = TH_OK;
    for (size_t i = 0; r == TH_OK && i < s->n; i++) {
        struct th_config *c = s->items[i];
        bool hit = false;
        if (c->module != is_module || (r = targets(c, doc, &hit, err)) != TH_OK || !hit)
            continue;
        if (!cJSON_AddItemToObject(statuses, c->id, status_entry(STATUS_TARGETED)))
            r = nomem(err);
        if (outranks(c, best))
            best = c;
    }
    cJSON_Delete(doc);
    const char *was = applied_in(id->configurations);
    struct th_config *from = was ? find(s, was) : NULL;
    if (r == TH_OK && best && (!was || strcmp(was, best->id))) {
        bool written = false;
        r = write_content(id, from, best, now_us, hooks, &written, err);
        if (r == TH_OK && written) {
            cJSON *st = cJSON_GetObjectItemCaseSensitive(statuses, best->id);
            if (!st || !cJSON_ReplaceItemInObjectCaseSensitive(st, "status",
                                                               cJSON_CreateString(STATUS_APPLIED)))
                r = nomem(err);
        }
    } else if (r == TH_OK && best) {
        cJSON *st = cJSON_GetObjectItemCaseSensitive(statuses, best->id);
        if (!st || !cJSON_ReplaceItemInObjectCaseSensitive(st, "status",
                                                           cJSON_CreateString(STATUS_APPLIED)))
            r = nomem(err);
    } else if (r == TH_OK && !best && from) {
        bool written = false;
        r = write_content(id, from, NULL, now_us, hooks, &written, err);
    }
    if (r != TH_OK) {
        cJSON_Delete(statuses);
        return r;
    }
    bool had = id->configurations != NULL;
    if (!statuses->child) {
        cJSON_Delete(statuses);
        statuses = NULL;
    }
    bool same =
        (!statuses && !had) || (statuses && had && cJSON_Compare(statuses, id->configurations, 1));
    if (same) {
        cJSON_Delete(statuses);
        return TH_OK;
    }
    cJSON_Delete(id->configurations);
    id->configurations = statuses;
    if (hooks && hooks->statuses_changed)
        hooks->statuses_changed(hooks->arg, id);
    return TH_OK;
}

th_result th_config_apply(struct th_config_store *s, struct th_registry *reg, int64_t now_us,
                          const struct th_config_hooks *hooks, struct th_error *err)
{
    if (!s || !reg)
        return th_error_set(err, TH_ERR_INVAL, 0, "no configuration store or registry");
    for (struct th_identity *d = th_registry_next_device(reg, NULL); d;
         d = th_registry_next_device(reg, d)) {
        th_result r = eval_identity(s, d, now_us, hooks, err);
        for (size_t i = 0; r == TH_OK && i < d->module_count; i++)
            r = eval_identity(s, d->modules[i], now_us, hooks, err);
        if (r != TH_OK)
            return r;
    }
    return TH_OK;
}

th_result th_config_delete(struct th_config_store *s, struct th_registry *reg, const char *id,
                           const char *if_match, int64_t now_us,
                           const struct th_config_hooks *hooks, struct th_error *err)
{
    struct th_config *c = find(s, id);
    if (!c)
        return not_found(id, err);
    th_result r = etag_check(c, if_match, err);
    if (r != TH_OK)
        return r;
    c->deleting = true;
    r = th_config_apply(s, reg, now_us, hooks, err);
    if (r != TH_OK) {
        c->deleting = false;
        return r;
    }
    for (size_t i = 0; i < s->n; i++)
        if (s->items[i] == c) {
            memmove(&s->items[i], &s->items[i + 1], (s->n - i - 1) * sizeof *s->items);
            s->n--;
            break;
        }
    config_free(c);
    return TH_OK;
}

/* ---- views and metrics ------------------------------------------------------------------- */

/* Twin documents of every device (module false) or module; *n set. NULL on OOM (or none). */
static cJSON **twin_docs(const struct th_registry *reg, bool module, size_t *n, bool *ok)
{
    size_t cap = 16, k = 0;
    cJSON **docs = malloc(cap * sizeof *docs);
    *ok = docs != NULL;
    for (struct th_identity *d = th_registry_next_device(reg, NULL); *ok && d;
         d = th_registry_next_device(reg, d)) {
        size_t count = module ? d->module_count : 1;
        for (size_t i = 0; *ok && i < count; i++) {
            if (k == cap) {
                cap *= 2;
                cJSON **more = realloc(docs, cap * sizeof *docs);
                if (!more) {
                    *ok = false;
                    break;
                }
                docs = more;
            }
            docs[k] = th_identity_twin_json(module ? d->modules[i] : d);
            if (!docs[k])
                *ok = false;
            else
                k++;
        }
    }
    *n = k;
    return docs;
}

static void docs_free(cJSON **docs, size_t n)
{
    for (size_t i = 0; docs && i < n; i++)
        cJSON_Delete(docs[i]);
    free(docs);
}

struct metric_docs {
    cJSON **dev, **mod;
    size_t ndev, nmod;
    bool have_dev, have_mod, ok;
    const struct th_registry *reg;
};

/* Rows of `query` over the twins it reads; -1 when it does not parse or reads jobs. */
static double metric_rows(struct metric_docs *md, const char *query)
{
    struct th_query *q = NULL;
    struct th_error e = {0};
    if (th_query_parse(query, strlen(query), &q, &e) != TH_OK)
        return -1;
    enum th_query_source src = th_query_source(q);
    if (src == TH_QUERY_JOBS) {
        th_query_free(q);
        return 0;
    }
    bool module = src == TH_QUERY_MODULES;
    bool ok = true;
    if (module && !md->have_mod) {
        md->mod = twin_docs(md->reg, true, &md->nmod, &ok);
        md->have_mod = true;
    } else if (!module && !md->have_dev) {
        md->dev = twin_docs(md->reg, false, &md->ndev, &ok);
        md->have_dev = true;
    }
    if (!ok)
        md->ok = false;
    cJSON *items = NULL;
    bool is_twin;
    double rows = -1;
    if (ok && th_query_run(q, module ? md->mod : md->dev, module ? md->nmod : md->ndev, &items,
                           &is_twin, &e) == TH_OK)
        rows = cJSON_GetArraySize(items);
    else if (e.result == TH_ERR_NOMEM)
        md->ok = false;
    cJSON_Delete(items);
    th_query_free(q);
    return rows;
}

static bool add_time(cJSON *o, const char *key, int64_t us)
{
    char buf[TH_TIME_BUF];
    th_time_format(us, buf);
    return cJSON_AddStringToObject(o, key, buf) != NULL;
}

/* The system metric queries, as the hub shows them. */
static bool system_queries(cJSON *q, const struct th_config *c)
{
    char text[512];
    const char *select = c->module ? "SELECT deviceId, moduleId FROM devices.modules"
                                   : "SELECT deviceId FROM devices";
    snprintf(text, sizeof text,
             "%s WHERE configurations.[[%s]].status = '" STATUS_TARGETED
             "' OR configurations.[[%s]].status = '" STATUS_APPLIED "'",
             select, c->id, c->id);
    if (!cJSON_AddStringToObject(q, "targetedCount", text))
        return false;
    snprintf(text, sizeof text, "%s WHERE configurations.[[%s]].status = '" STATUS_APPLIED "'",
             select, c->id);
    return cJSON_AddStringToObject(q, "appliedCount", text) != NULL;
}

static cJSON *config_view(const struct th_config *c, struct metric_docs *md)
{
    size_t targeted = 0, applied = 0;
    for (struct th_identity *d = th_registry_next_device(md->reg, NULL); d;
         d = th_registry_next_device(md->reg, d)) {
        for (size_t i = 0; i <= d->module_count; i++) {
            const struct th_identity *id = i == 0 ? d : d->modules[i - 1];
            const cJSON *st = cJSON_GetObjectItemCaseSensitive(id->configurations, c->id);
            if (!st)
                continue;
            targeted++;
            if (!strcmp(th_json_string(st, "status", ""), STATUS_APPLIED))
                applied++;
        }
    }
    char dec[24], etag[32];
    snprintf(dec, sizeof dec, "%llu", (unsigned long long)c->etag_counter);
    if (th_b64_encode((const uint8_t *)dec, strlen(dec), etag, sizeof etag) != TH_OK)
        etag[0] = '\0';
    cJSON *o = cJSON_CreateObject();
    bool ok = o && cJSON_AddStringToObject(o, "id", c->id) &&
              cJSON_AddStringToObject(o, "schemaVersion", c->schema_version) &&
              (c->labels ? add_copy(o, "labels", c->labels)
                         : cJSON_AddNullToObject(o, "labels") != NULL) &&
              add_copy(o, "content", c->content) &&
              cJSON_AddStringToObject(o, "targetCondition", c->target) &&
              add_time(o, "createdTimeUtc", c->created_us) &&
              add_time(o, "lastUpdatedTimeUtc", c->updated_us) &&
              cJSON_AddNumberToObject(o, "priority", (double)c->priority);
    cJSON *sys = ok ? cJSON_AddObjectToObject(o, "systemMetrics") : NULL;
    cJSON *sys_results = sys ? cJSON_AddObjectToObject(sys, "results") : NULL;
    cJSON *sys_queries = sys_results ? cJSON_AddObjectToObject(sys, "queries") : NULL;
    ok = sys_queries && cJSON_AddNumberToObject(sys_results, "targetedCount", (double)targeted) &&
         cJSON_AddNumberToObject(sys_results, "appliedCount", (double)applied) &&
         system_queries(sys_queries, c);
    cJSON *metrics = ok ? cJSON_AddObjectToObject(o, "metrics") : NULL;
    cJSON *results = metrics ? cJSON_AddObjectToObject(metrics, "results") : NULL;
    ok = results && add_copy(metrics, "queries", c->queries);
    for (const cJSON *m = c->queries->child; ok && m; m = m->next) {
        double rows = metric_rows(md, m->valuestring);
        ok = md->ok && (rows < 0 || cJSON_AddNumberToObject(results, m->string, rows));
    }
    ok = ok && cJSON_AddStringToObject(o, "etag", etag);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

th_result th_config_get_json(const struct th_config_store *s, const struct th_registry *reg,
                             const char *id, cJSON **out, struct th_error *err)
{
    *out = NULL;
    const struct th_config *c = find(s, id);
    if (!c)
        return not_found(id, err);
    struct metric_docs md = {.reg = reg, .ok = true};
    *out = config_view(c, &md);
    docs_free(md.dev, md.ndev);
    docs_free(md.mod, md.nmod);
    return *out ? TH_OK : nomem(err);
}

cJSON *th_config_list_json(const struct th_config_store *s, const struct th_registry *reg,
                           size_t top)
{
    cJSON *arr = cJSON_CreateArray();
    struct metric_docs md = {.reg = reg, .ok = true};
    for (size_t i = 0; arr && s && i < s->n && (!top || i < top); i++) {
        cJSON *v = config_view(s->items[i], &md);
        if (!v || !cJSON_AddItemToArray(arr, v)) {
            cJSON_Delete(v);
            cJSON_Delete(arr);
            arr = NULL;
        }
    }
    docs_free(md.dev, md.ndev);
    docs_free(md.mod, md.nmod);
    return arr;
}

th_result th_config_test_queries(const cJSON *input, cJSON **out, struct th_error *err)
{
    *out = NULL;
    const cJSON *tc = cJSON_GetObjectItemCaseSensitive(input, "targetCondition");
    const cJSON *mq = cJSON_GetObjectItemCaseSensitive(input, "customMetricQueries");
    if (!cJSON_IsObject(input) || (tc && !cJSON_IsNull(tc) && !cJSON_IsString(tc)) ||
        (mq && !cJSON_IsNull(mq) && !cJSON_IsObject(mq)))
        return invalid(err, "testQueries",
                       "the body is {\"targetCondition\": \"...\", \"customMetricQueries\": "
                       "{\"name\": \"SELECT ...\"}}");
    cJSON *o = cJSON_CreateObject();
    cJSON *errors = o ? cJSON_CreateObject() : NULL;
    bool ok = errors != NULL;
    const char *cond = cJSON_IsString(tc) ? tc->valuestring : "";
    struct th_query *q = NULL;
    bool all;
    struct th_error te = {0};
    th_result r = parse_target(cond, module_target(cond), &q, &all, &te);
    th_query_free(q);
    q = NULL;
    if (r == TH_ERR_NOMEM)
        ok = false;
    ok = ok && cJSON_AddStringToObject(o, "targetConditionError", r == TH_OK ? "" : te.message);
    for (const cJSON *m = cJSON_IsObject(mq) ? mq->child : NULL; ok && m; m = m->next) {
        struct th_error me = {0};
        const char *why = "";
        if (!cJSON_IsString(m)) {
            why = "the query must be a string";
        } else if ((r = th_query_parse(m->valuestring, strlen(m->valuestring), &q, &me)) != TH_OK) {
            if (r == TH_ERR_NOMEM)
                ok = false;
            why = me.message;
        }
        th_query_free(q);
        q = NULL;
        ok = ok && cJSON_AddStringToObject(errors, m->string, why);
    }
    if (!ok || !cJSON_AddItemToObject(o, "customMetricQueryErrors", errors)) {
        if (!cJSON_GetObjectItemCaseSensitive(o, "customMetricQueryErrors"))
            cJSON_Delete(errors);
        cJSON_Delete(o);
        return nomem(err);
    }
    *out = o;
    return TH_OK;
}

/* ---- state ------------------------------------------------------------------------------- */

cJSON *th_config_store_json(const struct th_config_store *s)
{
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; arr && s && i < s->n; i++) {
        const struct th_config *c = s->items[i];
        cJSON *o = cJSON_CreateObject();
        cJSON *metrics = o ? cJSON_AddObjectToObject(o, "metrics") : NULL;
        bool ok = metrics && cJSON_AddItemToArray(arr, o);
        if (!ok)
            cJSON_Delete(o);
        ok = ok && cJSON_AddStringToObject(o, "id", c->id) &&
             cJSON_AddStringToObject(o, "schemaVersion", c->schema_version) &&
             (c->labels ? cJSON_AddItemToObject(o, "labels", cJSON_Duplicate(c->labels, 1))
                        : cJSON_AddNullToObject(o, "labels") != NULL) &&
             cJSON_AddItemToObject(o, "content", cJSON_Duplicate(c->content, 1)) &&
             cJSON_AddStringToObject(o, "targetCondition", c->target) &&
             cJSON_AddNumberToObject(o, "priority", (double)c->priority) &&
             cJSON_AddItemToObject(metrics, "queries", cJSON_Duplicate(c->queries, 1)) &&
             cJSON_AddNumberToObject(o, "createdUs", (double)c->created_us) &&
             cJSON_AddNumberToObject(o, "updatedUs", (double)c->updated_us) &&
             cJSON_AddNumberToObject(o, "etagCounter", (double)c->etag_counter);
        if (!ok) {
            cJSON_Delete(arr);
            arr = NULL;
        }
    }
    return arr;
}

/* An integer member from 0 (or 1) to 2^53. */
static bool state_number(const cJSON *o, const char *key, double min, int64_t *out)
{
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(n) || n->valuedouble < min || n->valuedouble > 9007199254740992.0 ||
        n->valuedouble != (double)(int64_t)n->valuedouble)
        return false;
    *out = (int64_t)n->valuedouble;
    return true;
}

th_result th_config_store_restore(struct th_config_store *s, const cJSON *state,
                                  struct th_error *err)
{
    if (!s || s->n)
        return th_error_set(err, TH_ERR_INVAL, 0, "restore needs an empty store");
    if (!cJSON_IsArray(state) || cJSON_GetArraySize(state) > TH_CONFIG_MAX)
        return invalid(err, "configurations state", "must be an array of at most 100 entries");
    th_result r = TH_OK;
    int i = 0;
    for (const cJSON *e = state->child; r == TH_OK && e; e = e->next, i++) {
        struct th_config *c = NULL;
        int64_t created = 0, updated = 0, etag = 0;
        const char *id = th_json_string(e, "id", NULL);
        struct th_error ce = {0};
        r = config_from_json(id, e, NULL, &c, &ce);
        if (r == TH_OK && find(s, id))
            r = th_error_set(&ce, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID, "id '%s' twice", id);
        if (r == TH_OK && (!state_number(e, "createdUs", 0, &created) ||
                           !state_number(e, "updatedUs", 0, &updated) ||
                           !state_number(e, "etagCounter", 1, &etag)))
            r = th_error_set(&ce, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                             "createdUs, updatedUs and etagCounter must be whole numbers");
        if (r == TH_OK) {
            c->created_us = created;
            c->updated_us = updated;
            c->etag_counter = (uint64_t)etag;
            c->seq = ++s->next_seq;
            r = store_add(s, c, &ce);
        }
        if (r != TH_OK) {
            config_free(c);
            th_error_set(err, r, ce.code, "configuration %d ('%.130s'): %s", i, id ? id : "",
                         ce.message);
        }
    }
    if (r != TH_OK) {
        for (size_t k = 0; k < s->n; k++)
            config_free(s->items[k]);
        s->n = 0;
    }
    return r;
}
