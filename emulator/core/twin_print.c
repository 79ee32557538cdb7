/*
 * twin_print.c - the full twin JSON (iothub-protocol.md 7.1) printed straight
 * from the identity and its twin, without building the cJSON tree of
 * th_identity_twin_json and copying every section into it: the same members
 * in the same order, the same bytes th_json_print gives for that tree
 * (tests/unit/test_twin_print.c compares the two on many twins). The control
 * API answers getTwin, updateTwin and replaceTwin with it; building and
 * freeing the tree was a third of the broker's instructions per desired
 * update (docs/performance.md, "Fan-out").
 */
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "registry.h"
#include "twin_private.h"
#include "util.h"

static void put_lit(struct th_jsonw *b, const char *s)
{
    th_jsonw_raw(b, s, strlen(s));
}

/* `"key":` for a key written in this file: plain ASCII that th_json_print would not escape, so
 * it is copied as it is. */
static void lit_key(struct th_jsonw *b, const char *key)
{
    th_jsonw_raw(b, "\"", 1);
    th_jsonw_raw(b, key, strlen(key));
    th_jsonw_raw(b, "\":", 2);
}

/* `,"key":"value"` (or without the comma when first); `key` as lit_key takes it. */
static void member_str(struct th_jsonw *b, const char *key, const char *value, bool first)
{
    if (!first)
        th_jsonw_raw(b, ",", 1);
    lit_key(b, key);
    th_jbuf_string(b, value);
}

static void member_time(struct th_jsonw *b, const char *key, int64_t us)
{
    char buf[TH_TIME_BUF];
    if (us == 0) {
        member_str(b, key, TH_TIME_NEVER, false);
        return;
    }
    th_time_format(us, buf);
    member_str(b, key, buf, false);
}

static void member_str_or_null(struct th_jsonw *b, const char *key, const char *value, bool first)
{
    if (value != NULL) {
        member_str(b, key, value, first);
        return;
    }
    if (!first)
        th_jsonw_raw(b, ",", 1);
    lit_key(b, key);
    put_lit(b, "null");
}

/* The members of an object, as th_json_print writes them inside its braces. */
static bool members(struct th_jsonw *b, const cJSON *obj)
{
    bool any = false;
    for (const cJSON *c = obj != NULL ? obj->child : NULL; c != NULL && !b->failed; c = c->next) {
        if (any)
            th_jsonw_raw(b, ",", 1);
        th_jbuf_key(b, c->string != NULL ? c->string : "");
        th_jbuf_value(b, c);
        any = true;
    }
    return any;
}

/* section_view (twin.c): {...section,"$metadata":{...},"$version":n}. */
static void section(struct th_jsonw *b, const cJSON *sec, const struct th_twin_meta *meta,
                    bool with_version, int64_t version)
{
    th_jsonw_raw(b, "{", 1);
    bool any = members(b, sec);
    if (meta != NULL) {
        if (any)
            th_jsonw_raw(b, ",", 1);
        lit_key(b, KEY_METADATA);
        twin_meta_print(b, meta, sec, with_version);
        any = true;
    }
    if (any)
        th_jsonw_raw(b, ",", 1);
    lit_key(b, KEY_VERSION);
    th_jbuf_number(b, (double)version);
    th_jsonw_raw(b, "}", 1);
}

/* twin_json_head (registry_json.c): ids, etags, status, connection. */
static void head(struct th_jsonw *b, const struct th_identity *id)
{
    char etag[16], device_etag[32];
    th_twin_etag(id->twin, etag);
    th_identity_etag(id, device_etag);
    th_jsonw_raw(b, "{", 1);
    member_str(b, "deviceId", id->device_id, true);
    if (id->module_id != NULL)
        member_str(b, "moduleId", id->module_id, false);
    member_str(b, "etag", etag, false);
    member_str(b, "deviceEtag", device_etag, false);
    member_str(b, "status", id->enabled ? "enabled" : "disabled", false);
    if (id->status_reason)
        member_str(b, "statusReason", id->status_reason, false);
    member_time(b, "statusUpdateTime", id->status_updated_us);
    member_str(b, "connectionState", id->connected ? "Connected" : "Disconnected", false);
    member_time(b, "lastActivityTime", id->last_activity_us);
    put_lit(b, ",\"cloudToDeviceMessageCount\":");
    th_jbuf_number(b, (double)id->c2d_count);
    member_str(b, "authenticationType", th_auth_type_name(id->auth_type), false);
    put_lit(b, ",\"x509Thumbprint\":{");
    member_str_or_null(b, "primaryThumbprint", id->x509_primary[0] ? id->x509_primary : NULL, true);
    member_str_or_null(b, "secondaryThumbprint", id->x509_secondary[0] ? id->x509_secondary : NULL,
                       false);
    th_jsonw_raw(b, "}", 1);
    member_str(b, "modelId", id->model_id ? id->model_id : "", false);
}

char *th_identity_twin_text(const struct th_identity *id)
{
    if (id == NULL || id->twin == NULL)
        return NULL;
    const struct th_twin *t = id->twin;
    struct th_jsonw b = {0};
    /* A small twin's text fits (the bench's is ~860 B): one allocation instead of a doubling
     * series of reallocs. */
    th_jsonw_reserve(&b, 1024);
    head(&b, id);
    put_lit(&b, ",\"version\":");
    th_jbuf_number(&b, (double)th_twin_version(t));
    put_lit(&b, ",\"tags\":");
    th_jbuf_value(&b, t->tags);
    put_lit(&b, ",\"properties\":{\"desired\":");
    section(&b, t->desired, t->desired_meta, true, t->desired_version);
    put_lit(&b, ",\"reported\":");
    section(&b, t->reported, t->reported_meta, false, t->reported_version);
    th_jsonw_raw(&b, "}", 1);
    /* As the hub's device twins: deviceScope and parentScopes only when set. */
    if (id->module_id == NULL) {
        const char *parent = id->iot_edge ? id->parent_scope : id->device_scope;
        put_lit(&b, id->iot_edge ? ",\"capabilities\":{\"iotEdge\":true}"
                                 : ",\"capabilities\":{\"iotEdge\":false}");
        if (id->device_scope)
            member_str(&b, "deviceScope", id->device_scope, false);
        if (parent) {
            put_lit(&b, ",\"parentScopes\":[");
            th_jbuf_string(&b, parent);
            th_jsonw_raw(&b, "]", 1);
        }
    }
    if (id->configurations) {
        put_lit(&b, ",\"configurations\":");
        th_jbuf_value(&b, id->configurations);
    }
    th_jsonw_raw(&b, "}", 1);
    return th_jsonw_finish(&b, NULL);
}

char *th_twin_short_answer_text(const struct th_twin *twin)
{
    if (twin == NULL)
        return NULL;
    char etag[16];
    th_twin_etag(twin, etag);
    struct th_jsonw b = {0};
    th_jsonw_reserve(&b, 64); /* the whole answer: one allocation */
    put_lit(&b, "{\"status\":200,\"etag\":");
    th_jbuf_string(&b, etag);
    put_lit(&b, ",\"$version\":");
    th_jbuf_number(&b, (double)twin->desired_version);
    th_jsonw_raw(&b, "}", 1);
    return th_jsonw_finish(&b, NULL);
}
