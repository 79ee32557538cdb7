/*
 * control.c - the service control API on $CONTROL/twinhub/v1
 * (docs/control-api.md): twin reads and writes, direct-method invocation
 * with timeouts, cloud-to-device sends, identity reads and disconnects.
 * Modelled on mosquitto's dynamic-security plugin: a JSON list of commands
 * in, one JSON answer per command, delivered only to the caller, and a
 * specific error for every refusal.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "limits.h"
#include "plugin.h"
#include "topic.h"
#include "util.h"

struct cmd_ctx {
    struct th_plugin *p;
    struct th_conn *caller;
    const cJSON *cmd;
    const char *name;
    cJSON *responses; /* array being built */
};

/* ---- response building ---- */

static cJSON *response_entry(const char *command, const cJSON *correlation)
{
    cJSON *r = cJSON_CreateObject();
    if (!r) {
        return NULL;
    }
    if (command) {
        cJSON_AddStringToObject(r, "command", command);
    } else {
        cJSON_AddNullToObject(r, "command");
    }
    if (correlation) {
        cJSON_AddItemToObject(r, "correlationData", cJSON_Duplicate(correlation, 1));
    }
    return r;
}

static void add_error_fields(cJSON *r, const struct th_error *err)
{
    cJSON_AddStringToObject(r, "error", err->message[0] ? err->message : th_result_str(err->result));
    cJSON_AddNumberToObject(r, "status", err->status ? err->status : 500);
    cJSON_AddNumberToObject(r, "errorCode", err->code ? err->code : 500001);
}

static void send_responses(const char *client_id, cJSON *responses)
{
    cJSON *root = cJSON_CreateObject();
    char *text;
    if (!root) {
        cJSON_Delete(responses);
        return;
    }
    cJSON_AddItemToObject(root, "responses", responses);
    text = th_json_print(root);
    cJSON_Delete(root);
    if (text) {
        th_publish_to(client_id, TH_CONTROL_RESPONSE_TOPIC, text, strlen(text), 1);
        free(text);
    }
}

static void reply_ok(struct cmd_ctx *x, cJSON *data)
{
    cJSON *r = response_entry(x->name, cJSON_GetObjectItemCaseSensitive(x->cmd, "correlationData"));
    if (!r) {
        cJSON_Delete(data);
        return;
    }
    cJSON_AddItemToObject(r, "data", data ? data : cJSON_CreateObject());
    cJSON_AddItemToArray(x->responses, r);
}

static void reply_err(struct cmd_ctx *x, const struct th_error *err)
{
    cJSON *r = response_entry(x->name, cJSON_GetObjectItemCaseSensitive(x->cmd, "correlationData"));
    if (!r) {
        return;
    }
    add_error_fields(r, err);
    cJSON_AddItemToArray(x->responses, r);
}

/* ---- argument helpers ---- */

static bool need_perm(struct cmd_ctx *x, unsigned perm, const char *perm_name)
{
    struct th_error err = {0};
    if (x->caller->perms & perm) {
        return true;
    }
    th_error_set(&err, TH_ERR_AUTH, 401002, "policy '%s' does not grant %s, which '%s' needs",
                 x->caller->policy, perm_name, x->name);
    reply_err(x, &err);
    return false;
}

/*
 * Resolve deviceId/moduleId of the command, or reply with the error.
 * want_module: 0 = device only, 1 = module allowed.
 */
static struct th_identity *identity_or_reply(struct cmd_ctx *x, bool module_allowed)
{
    struct th_error err = {0};
    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(x->cmd, "deviceId");
    const cJSON *jm = cJSON_GetObjectItemCaseSensitive(x->cmd, "moduleId");
    struct th_identity *id;
    if (!cJSON_IsString(jd) || !jd->valuestring[0]) {
        th_error_set(&err, TH_ERR_INVAL, 400004, "'%s' needs a string field 'deviceId'", x->name);
        reply_err(x, &err);
        return NULL;
    }
    if (jm && !cJSON_IsNull(jm) && !cJSON_IsString(jm)) {
        th_error_set(&err, TH_ERR_INVAL, 400004, "'moduleId' must be a string or null");
        reply_err(x, &err);
        return NULL;
    }
    const char *mod = cJSON_IsString(jm) ? jm->valuestring : NULL;
    if (mod && !module_allowed) {
        th_error_set(&err, TH_ERR_INVAL, 400004, "'%s' applies to devices only, not modules",
                     x->name);
        reply_err(x, &err);
        return NULL;
    }
    if (!th_registry_find(x->p->reg, jd->valuestring, NULL)) {
        th_error_set(&err, TH_ERR_NOT_FOUND, 404001, "device '%s' is not registered",
                     jd->valuestring);
        reply_err(x, &err);
        return NULL;
    }
    id = th_registry_find(x->p->reg, jd->valuestring, mod);
    if (!id) {
        th_error_set(&err, TH_ERR_NOT_FOUND, 404010, "module '%s' is not registered on device '%s'",
                     mod, jd->valuestring);
        reply_err(x, &err);
        return NULL;
    }
    return id;
}

static bool optional_string_or_reply(struct cmd_ctx *x, const char *field, const char **out)
{
    struct th_error err = {0};
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(x->cmd, field);
    *out = NULL;
    if (!j || cJSON_IsNull(j)) {
        return true;
    }
    if (!cJSON_IsString(j)) {
        th_error_set(&err, TH_ERR_INVAL, 400004, "'%s' must be a string", field);
        reply_err(x, &err);
        return false;
    }
    *out = j->valuestring;
    return true;
}

/* ---- twin commands ---- */

static void cmd_get_twin(struct cmd_ctx *x)
{
    struct th_identity *id;
    if (!need_perm(x, TH_PERM_SERVICE_CONNECT | TH_PERM_REGISTRY_READ, "ServiceConnect")) {
        return;
    }
    if (!(id = identity_or_reply(x, true))) {
        return;
    }
    reply_ok(x, th_identity_twin_json(id));
}

static bool etag_matches(const char *want, const char *have)
{
    size_t n;
    if (!want || !strcmp(want, "*") || !strcmp(want, "\"*\"")) {
        return true;
    }
    n = strlen(want);
    if (n >= 2 && want[0] == '"' && want[n - 1] == '"') {
        return strlen(have) == n - 2 && !strncmp(want + 1, have, n - 2);
    }
    return !strcmp(want, have);
}

static void cmd_write_twin(struct cmd_ctx *x, bool replace)
{
    struct th_error err = {0};
    struct th_identity *id;
    const char *etag;
    const cJSON *patch;
    cJSON *tags = NULL, *desired = NULL, *notification = NULL;
    struct th_twin *work = NULL;
    th_result r = TH_OK;
    char have[16];

    if (!need_perm(x, TH_PERM_SERVICE_CONNECT, "ServiceConnect")) {
        return;
    }
    if (!(id = identity_or_reply(x, true)) || !optional_string_or_reply(x, "etag", &etag)) {
        return;
    }
    patch = cJSON_GetObjectItemCaseSensitive(x->cmd, "patch");
    if (!cJSON_IsObject(patch)) {
        th_error_set(&err, TH_ERR_INVAL, 400004,
                     "'%s' needs an object 'patch' like {\"properties\":{\"desired\":{...}}}",
                     x->name);
        reply_err(x, &err);
        return;
    }
    th_twin_etag(id->twin, have);
    if (!etag_matches(etag, have)) {
        th_error_set(&err, TH_ERR_PRECONDITION, 412001,
                     "etag %s does not match the twin's current etag \"%s\"", etag, have);
        reply_err(x, &err);
        return;
    }
    const cJSON *jt = cJSON_GetObjectItemCaseSensitive(patch, "tags");
    const cJSON *jp = cJSON_GetObjectItemCaseSensitive(patch, "properties");
    const cJSON *jd = jp ? cJSON_GetObjectItemCaseSensitive(jp, "desired") : NULL;
    if (jp && cJSON_GetObjectItemCaseSensitive(jp, "reported")) {
        r = th_error_set(&err, TH_ERR_INVAL, 400004,
                         "reported properties are written by the device only; remove "
                         "properties.reported from the patch");
    } else if ((jt && !cJSON_IsObject(jt) && !(replace && cJSON_IsNull(jt))) ||
               (jd && !cJSON_IsObject(jd) && !(replace && cJSON_IsNull(jd)))) {
        r = th_error_set(&err, TH_ERR_INVAL, 400004, "'tags' and 'properties.desired' must be objects");
    }
    if (r == TH_OK && !(work = th_twin_clone(id->twin))) {
        r = th_error_set(&err, TH_ERR_NOMEM, 500001, "out of memory");
    }
    if (r == TH_OK && jt && cJSON_IsObject(jt)) {
        tags = cJSON_Duplicate(jt, 1);
        th_twin_strip_readonly(tags);
        r = replace ? th_twin_replace_tags(work, tags, &err) : th_twin_patch_tags(work, tags, &err);
    }
    if (r == TH_OK && jd && cJSON_IsObject(jd)) {
        desired = cJSON_Duplicate(jd, 1);
        th_twin_strip_readonly(desired);
        r = replace ? th_twin_replace_desired(work, desired, th_now_us(), &notification, &err)
                    : th_twin_patch_desired(work, desired, th_now_us(), &notification, &err);
    }
    cJSON_Delete(tags);
    if (r != TH_OK) {
        cJSON_Delete(desired);
        th_twin_free(work);
        reply_err(x, &err);
        return;
    }
    th_twin_free(id->twin);
    id->twin = work;
    if (notification) {
        bool delivered = th_desired_notify(x->p, id, notification, id->twin->desired_version);
        cJSON *data = cJSON_CreateObject();
        if (data) {
            cJSON_AddItemToObject(data, "patch", desired);
            desired = NULL;
            cJSON_AddNumberToObject(data, "version", (double)id->twin->desired_version);
            cJSON_AddBoolToObject(data, "delivered", delivered);
        }
        th_event_emit(x->p, "desired", id->device_id, id->module_id, data);
        th_log(x->p, MOSQ_LOG_INFO, "%s%s%s | desired %s | version=%lld delivered=%d",
               id->device_id, id->module_id ? "/" : "", id->module_id ? id->module_id : "",
               replace ? "replace" : "patch", (long long)id->twin->desired_version, delivered);
        cJSON_Delete(notification);
    }
    cJSON_Delete(desired);
    reply_ok(x, th_identity_twin_json(id));
}

static void cmd_update_twin(struct cmd_ctx *x)
{
    cmd_write_twin(x, false);
}

static void cmd_replace_twin(struct cmd_ctx *x)
{
    cmd_write_twin(x, true);
}

/* ---- identities ---- */

static void cmd_get_device(struct cmd_ctx *x)
{
    struct th_identity *id;
    if (!need_perm(x, TH_PERM_REGISTRY_READ, "RegistryRead") ||
        !(id = identity_or_reply(x, true))) {
        return;
    }
    reply_ok(x, th_identity_to_json(id));
}

static void cmd_list_devices(struct cmd_ctx *x)
{
    cJSON *arr;
    if (!need_perm(x, TH_PERM_REGISTRY_READ, "RegistryRead")) {
        return;
    }
    arr = cJSON_CreateArray();
    for (struct th_identity *d = th_registry_next_device(x->p->reg, NULL); arr && d;
         d = th_registry_next_device(x->p->reg, d)) {
        cJSON_AddItemToArray(arr, th_identity_to_json(d));
    }
    reply_ok(x, arr);
}

static void cmd_list_modules(struct cmd_ctx *x)
{
    struct th_identity *d;
    cJSON *arr;
    if (!need_perm(x, TH_PERM_REGISTRY_READ, "RegistryRead") ||
        !(d = identity_or_reply(x, false))) {
        return;
    }
    arr = cJSON_CreateArray();
    for (size_t i = 0; arr && i < d->module_count; i++) {
        cJSON_AddItemToArray(arr, th_identity_to_json(d->modules[i]));
    }
    reply_ok(x, arr);
}

static void cmd_disconnect(struct cmd_ctx *x)
{
    struct th_identity *id;
    struct th_idglue *g;
    cJSON *data;
    bool was = false;
    if (!need_perm(x, TH_PERM_SERVICE_CONNECT, "ServiceConnect") ||
        !(id = identity_or_reply(x, true))) {
        return;
    }
    g = id->glue;
    if (g && g->conn) {
        was = true;
        g->conn->kicked = true;
        mosquitto_kick_client_by_clientid(g->conn->client_id, false);
    }
    data = cJSON_CreateObject();
    if (data) {
        cJSON_AddBoolToObject(data, "disconnected", was);
    }
    reply_ok(x, data);
}

/* ---- cloud-to-device ---- */

static void cmd_send_c2d(struct cmd_ctx *x)
{
    struct th_error err = {0};
    struct th_identity *dev;
    struct th_props props = {0};
    const char *body = NULL, *body64 = NULL, *mid = NULL, *ack = NULL;
    const char *sysf[][2] = {{"correlationId", "$.cid"}, {"userId", "$.uid"},
                             {"contentType", "$.ct"},    {"contentEncoding", "$.ce"},
                             {"expiryTimeUtc", "$.exp"}};
    char midbuf[48], to[300];
    uint8_t *raw = NULL;
    size_t rawlen = 0;
    char *bag = NULL;
    th_result r = TH_OK;

    if (!need_perm(x, TH_PERM_SERVICE_CONNECT, "ServiceConnect")) {
        return;
    }
    if (!(dev = identity_or_reply(x, false)) || !optional_string_or_reply(x, "body", &body) ||
        !optional_string_or_reply(x, "bodyBase64", &body64) ||
        !optional_string_or_reply(x, "messageId", &mid) ||
        !optional_string_or_reply(x, "ack", &ack)) {
        return;
    }
    if (ack && strcmp(ack, "none") && strcmp(ack, "positive") && strcmp(ack, "negative") &&
        strcmp(ack, "full")) {
        r = th_error_set(&err, TH_ERR_INVAL, 400004,
                         "'ack' must be one of none, positive, negative, full (got '%s')", ack);
    }
    if (r == TH_OK && body && body64) {
        r = th_error_set(&err, TH_ERR_INVAL, 400004, "give either 'body' or 'bodyBase64', not both");
    }
    if (r == TH_OK && body64) {
        size_t cap = strlen(body64);
        raw = malloc(cap + 1);
        if (!raw) {
            r = th_error_set(&err, TH_ERR_NOMEM, 500001, "out of memory");
        } else if (th_b64_decode(body64, strlen(body64), raw, cap + 1, &rawlen) != TH_OK) {
            r = th_error_set(&err, TH_ERR_INVAL, 400004, "'bodyBase64' is not valid base64");
        }
    }
    if (r == TH_OK && !mid) {
        snprintf(midbuf, sizeof midbuf, "twinhub-c2d-%llu", (unsigned long long)++x->p->tracking_seq);
        mid = midbuf;
    }
    /* Property bag in the order the hub uses: $.mid, $.to, system, iothub-ack, application. */
    snprintf(to, sizeof to, "/devices/%s/messages/devicebound", dev->device_id);
    if (r == TH_OK && (th_props_add(&props, "$.mid", mid) != TH_OK ||
                       th_props_add(&props, "$.to", to) != TH_OK)) {
        r = th_error_set(&err, TH_ERR_NOMEM, 500001, "out of memory");
    }
    for (size_t i = 0; r == TH_OK && i < sizeof sysf / sizeof sysf[0]; i++) {
        const char *v;
        if (!optional_string_or_reply(x, sysf[i][0], &v)) {
            th_props_free(&props);
            free(raw);
            return;
        }
        if (v && th_props_add(&props, sysf[i][1], v) != TH_OK) {
            r = th_error_set(&err, TH_ERR_NOMEM, 500001, "out of memory");
        }
    }
    if (r == TH_OK && th_props_add(&props, "iothub-ack", ack ? ack : "none") != TH_OK) {
        r = th_error_set(&err, TH_ERR_NOMEM, 500001, "out of memory");
    }
    const cJSON *jprops = cJSON_GetObjectItemCaseSensitive(x->cmd, "properties");
    if (r == TH_OK && jprops && !cJSON_IsNull(jprops) && !cJSON_IsObject(jprops)) {
        r = th_error_set(&err, TH_ERR_INVAL, 400004, "'properties' must be an object of strings");
    }
    const cJSON *it;
    const cJSON *app_props = (r == TH_OK && cJSON_IsObject(jprops)) ? jprops : NULL;
    cJSON_ArrayForEach(it, app_props)
    {
        if (!cJSON_IsString(it) && !cJSON_IsNull(it)) {
            r = th_error_set(&err, TH_ERR_INVAL, 400004,
                             "property '%s' must be a string or null", it->string);
            break;
        }
        if (th_props_add(&props, it->string, cJSON_IsString(it) ? it->valuestring : NULL) !=
            TH_OK) {
            r = th_error_set(&err, TH_ERR_NOMEM, 500001, "out of memory");
            break;
        }
    }
    if (r == TH_OK) {
        size_t cap = 8192, n;
        bag = malloc(cap);
        if (!bag || th_props_encode(&props, bag, cap, &n) != TH_OK) {
            r = th_error_set(&err, TH_ERR_TOO_LARGE, 413001,
                             "C2D message properties are too large");
        }
    }
    th_props_free(&props);
    if (r == TH_OK) {
        const void *b = raw ? (const void *)raw : (const void *)body;
        size_t blen = raw ? rawlen : body ? strlen(body) : 0;
        r = th_identity_c2d_push(dev, mid, bag, b, blen, th_now_us(), &err);
    }
    free(raw);
    free(bag);
    if (r != TH_OK) {
        reply_err(x, &err);
        return;
    }
    char midcopy[256];
    snprintf(midcopy, sizeof midcopy, "%s", mid);
    size_t before = dev->c2d_count;
    th_c2d_flush(x->p, dev);
    bool delivered = dev->c2d_count < before;
    if (!delivered) {
        cJSON *ev = cJSON_CreateObject();
        if (ev) {
            cJSON_AddStringToObject(ev, "messageId", midcopy);
            cJSON_AddBoolToObject(ev, "delivered", false);
            cJSON_AddNumberToObject(ev, "queued", (double)dev->c2d_count);
        }
        th_event_emit(x->p, "c2d", dev->device_id, NULL, ev);
    }
    cJSON *data = cJSON_CreateObject();
    if (data) {
        cJSON_AddStringToObject(data, "messageId", midcopy);
        cJSON_AddNumberToObject(data, "queued", (double)dev->c2d_count);
        cJSON_AddBoolToObject(data, "delivered", delivered);
    }
    reply_ok(x, data);
}

/* ---- direct methods ---- */

static void call_free(struct th_method_call *m)
{
    if (!m) {
        return;
    }
    free(m->caller_id);
    cJSON_Delete(m->correlation);
    free(m->device_id);
    free(m->module_id);
    free(m->method_name);
    free(m->payload);
    free(m);
}

/* Answer the caller of a method call (takes ownership of data); unlinks nothing. */
static void call_answer(struct th_plugin *p, struct th_method_call *m, cJSON *data,
                        const struct th_error *err)
{
    cJSON *arr = cJSON_CreateArray();
    cJSON *r = response_entry("invokeMethod", m->correlation);
    cJSON *ev = cJSON_CreateObject();
    char rid[32];
    snprintf(rid, sizeof rid, "%llu", (unsigned long long)m->id);
    if (ev) {
        cJSON_AddStringToObject(ev, "methodName", m->method_name);
        cJSON_AddStringToObject(ev, "requestId", rid);
    }
    if (!arr || !r) {
        cJSON_Delete(arr);
        cJSON_Delete(r);
        cJSON_Delete(data);
        cJSON_Delete(ev);
        return;
    }
    if (err) {
        add_error_fields(r, err);
        if (ev) {
            cJSON_AddStringToObject(ev, "error", err->message);
            cJSON_AddNumberToObject(ev, "errorCode", err->code);
        }
        cJSON_Delete(data);
    } else {
        if (ev && data) {
            cJSON_AddItemToObject(ev, "status",
                                  cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(data, "status"), 1));
            cJSON_AddItemToObject(ev, "payload",
                                  cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(data, "payload"), 1));
        }
        cJSON_AddItemToObject(r, "data", data);
    }
    cJSON_AddItemToArray(arr, r);
    send_responses(m->caller_id, arr);
    th_event_emit(p, "method", m->device_id, m->module_id, ev);
}

static void call_unlink(struct th_plugin *p, struct th_method_call *m)
{
    for (struct th_method_call **pp = &p->calls; *pp; pp = &(*pp)->next) {
        if (*pp == m) {
            *pp = m->next;
            return;
        }
    }
}

/* Publish the request to the device if it is online and subscribed. */
static bool call_try_send(struct th_plugin *p, struct th_method_call *m, int64_t now_ms)
{
    struct th_identity *id = th_registry_find(p->reg, m->device_id, m->module_id);
    struct th_idglue *g = id ? id->glue : NULL;
    char topic[512], rid[32];
    if (!g || !g->conn || !g->sub_methods) {
        return false;
    }
    snprintf(rid, sizeof rid, "%llu", (unsigned long long)m->id);
    if (th_topic_method_request(m->method_name, rid, topic, sizeof topic) != TH_OK) {
        return false;
    }
    th_publish_to(g->conn->client_id, topic, m->payload, strlen(m->payload), 0);
    m->response_deadline_ms = now_ms + (int64_t)m->response_timeout_s * 1000;
    th_log(p, MOSQ_LOG_INFO, "%s | method %s sent | rid=%s", g->conn->client_id, m->method_name,
           rid);
    return true;
}

static bool int_field_or_reply(struct cmd_ctx *x, const char *field, int def, int lo, int hi,
                               int *out)
{
    struct th_error err = {0};
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(x->cmd, field);
    if (!j || cJSON_IsNull(j)) {
        *out = def;
        return true;
    }
    if (!cJSON_IsNumber(j) || j->valuedouble != (double)(long long)j->valuedouble ||
        j->valuedouble < lo || j->valuedouble > hi) {
        th_error_set(&err, TH_ERR_INVAL, 400004, "%s must be within [%d; %d].", field, lo, hi);
        reply_err(x, &err);
        return false;
    }
    *out = (int)j->valuedouble;
    return true;
}

static void cmd_invoke_method(struct cmd_ctx *x)
{
    struct th_error err = {0};
    struct th_identity *id;
    const char *name;
    int rto, cto;
    struct th_method_call *m;
    int64_t now_ms = th_mono_ms();

    if (!need_perm(x, TH_PERM_SERVICE_CONNECT, "ServiceConnect") ||
        !(id = identity_or_reply(x, true)) || !optional_string_or_reply(x, "methodName", &name) ||
        !int_field_or_reply(x, "responseTimeoutInSeconds", TH_METHOD_DEFAULT_TIMEOUT_S,
                            TH_METHOD_MIN_TIMEOUT_S, TH_METHOD_MAX_TIMEOUT_S, &rto) ||
        !int_field_or_reply(x, "connectTimeoutInSeconds", 0, 0, TH_METHOD_MAX_TIMEOUT_S, &cto)) {
        return;
    }
    if (!name || !th_method_name_valid(name)) {
        th_error_set(&err, TH_ERR_INVAL, 400004,
                     "'methodName' must be a non-empty printable ASCII name without $()<>@,;:\\\"/[]?={} "
                     "or spaces");
        reply_err(x, &err);
        return;
    }
    const cJSON *payload = cJSON_GetObjectItemCaseSensitive(x->cmd, "payload");
    m = calloc(1, sizeof *m);
    if (m) {
        m->id = x->p->next_call_id++;
        m->caller_id = strdup(x->caller->client_id);
        const cJSON *corr = cJSON_GetObjectItemCaseSensitive(x->cmd, "correlationData");
        m->correlation = corr ? cJSON_Duplicate(corr, 1) : NULL;
        m->device_id = strdup(id->device_id);
        m->module_id = id->module_id ? strdup(id->module_id) : NULL;
        m->method_name = strdup(name);
        m->payload = payload ? th_json_print(payload) : strdup("null");
        m->response_timeout_s = rto;
        m->connect_deadline_ms = now_ms + (int64_t)cto * 1000;
    }
    if (!m || !m->caller_id || !m->device_id || (id->module_id && !m->module_id) ||
        !m->method_name || !m->payload) {
        call_free(m);
        th_error_set(&err, TH_ERR_NOMEM, 500001, "out of memory");
        reply_err(x, &err);
        return;
    }
    if (m->payload && strlen(m->payload) > TH_METHOD_MAX_PAYLOAD_BYTES) {
        call_free(m);
        th_error_set(&err, TH_ERR_TOO_LARGE, 413001, "method payload is larger than 128 KB");
        reply_err(x, &err);
        return;
    }
    if (!call_try_send(x->p, m, now_ms) && cto == 0) {
        th_error_set(&err, TH_ERR_NOT_ONLINE, 404103,
                     "The operation failed because the requested device isn't online or hasn't "
                     "registered the direct method callback.");
        call_answer(x->p, m, NULL, &err);
        call_free(m);
        return;
    }
    m->next = x->p->calls;
    x->p->calls = m;
    /* The answer comes later, in its own response message. */
}

void th_methods_tick(struct th_plugin *p, int64_t now_ms)
{
    struct th_method_call *m = p->calls, *next;
    struct th_error err = {0};
    for (; m; m = next) {
        next = m->next;
        if (m->response_deadline_ms == 0) {
            if (call_try_send(p, m, now_ms)) {
                continue;
            }
            if (now_ms >= m->connect_deadline_ms) {
                th_error_set(&err, TH_ERR_NOT_ONLINE, 404103,
                             "The operation failed because the requested device isn't online or "
                             "hasn't registered the direct method callback.");
                call_unlink(p, m);
                call_answer(p, m, NULL, &err);
                call_free(m);
            }
        } else if (now_ms >= m->response_deadline_ms) {
            th_error_set(&err, TH_ERR_TIMEOUT, 504101,
                         "Timed out waiting for the response from device.");
            call_unlink(p, m);
            call_answer(p, m, NULL, &err);
            call_free(m);
        }
    }
}

void th_methods_identity_offline(struct th_plugin *p, struct th_identity *id)
{
    struct th_method_call *m = p->calls, *next;
    struct th_error err = {0};
    for (; m; m = next) {
        next = m->next;
        if (m->response_deadline_ms == 0 || strcmp(m->device_id, id->device_id) != 0 ||
            (m->module_id == NULL) != (id->module_id == NULL) ||
            (m->module_id && strcmp(m->module_id, id->module_id) != 0)) {
            continue;
        }
        th_error_set(&err, TH_ERR_NOT_ONLINE, 404103,
                     "the device disconnected before answering the method call");
        call_unlink(p, m);
        call_answer(p, m, NULL, &err);
        call_free(m);
    }
}

void th_methods_on_response(struct th_plugin *p, struct th_identity *id, const char *rid,
                            size_t rid_len, int status, const void *payload, size_t len)
{
    char ridbuf[32];
    struct th_method_call *m;
    struct th_error err = {0};
    cJSON *body = NULL;
    snprintf(ridbuf, sizeof ridbuf, "%.*s", (int)(rid_len < 31 ? rid_len : 31), rid ? rid : "");
    for (m = p->calls; m; m = m->next) {
        char mine[32];
        snprintf(mine, sizeof mine, "%llu", (unsigned long long)m->id);
        if (m->response_deadline_ms && !strcmp(mine, ridbuf) && !strcmp(m->device_id, id->device_id) &&
            ((!m->module_id && !id->module_id) ||
             (m->module_id && id->module_id && !strcmp(m->module_id, id->module_id)))) {
            break;
        }
    }
    if (!m) {
        th_log(p, MOSQ_LOG_WARNING,
               "%s | method response ignored | no pending call with $rid=%s (late or unknown)",
               id->device_id, ridbuf);
        return;
    }
    call_unlink(p, m);
    if (len > 0 && th_json_parse(payload, len, TH_METHOD_MAX_PAYLOAD_BYTES, 64, &body, &err) != TH_OK) {
        th_error_set(&err, TH_ERR_FORMAT, 400006,
                     "the device answered method '%s' with a body that is not JSON: %s",
                     m->method_name, err.message);
        call_answer(p, m, NULL, &err);
        call_free(m);
        return;
    }
    cJSON *data = cJSON_CreateObject();
    if (data) {
        cJSON_AddNumberToObject(data, "status", status);
        cJSON_AddItemToObject(data, "payload", body ? body : cJSON_CreateNull());
    } else {
        cJSON_Delete(body);
    }
    call_answer(p, m, data, NULL);
    call_free(m);
}

void th_methods_free_all(struct th_plugin *p)
{
    struct th_method_call *m = p->calls, *next;
    for (; m; m = next) {
        next = m->next;
        call_free(m);
    }
    p->calls = NULL;
}

/* ---- dispatch ---- */

static const struct {
    const char *name;
    void (*fn)(struct cmd_ctx *x);
} commands[] = {
    {"getTwin", cmd_get_twin},
    {"updateTwin", cmd_update_twin},
    {"replaceTwin", cmd_replace_twin},
    {"invokeMethod", cmd_invoke_method},
    {"sendC2D", cmd_send_c2d},
    {"getDevice", cmd_get_device},
    {"listDevices", cmd_list_devices},
    {"listModules", cmd_list_modules},
    {"disconnect", cmd_disconnect},
};

static void dispatch(struct cmd_ctx *x)
{
    struct th_error err = {0};
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (!strcmp(commands[i].name, x->name)) {
            commands[i].fn(x);
            return;
        }
    }
    th_error_set(&err, TH_ERR_INVAL, 400004, "unknown command '%s'", x->name);
    reply_err(x, &err);
}

int th_on_control(int event, void *event_data, void *userdata)
{
    struct mosquitto_evt_control *ed = event_data;
    struct th_plugin *p = userdata;
    struct th_conn *c = th_conn_find(p, ed->client);
    struct th_error err = {0};
    cJSON *root = NULL, *responses;
    const cJSON *cmds, *cmd;
    (void)event;

    if (!c || c->kind != TH_CONN_SERVICE) {
        return MOSQ_ERR_ACL_DENIED;
    }
    responses = cJSON_CreateArray();
    if (!responses) {
        return MOSQ_ERR_NOMEM;
    }
    if (th_json_parse(ed->payload, ed->payloadlen, TH_JSON_MAX_INPUT_BYTES + 65536, 64, &root, &err) !=
            TH_OK ||
        !cJSON_IsArray(cmds = cJSON_GetObjectItemCaseSensitive(root, "commands"))) {
        if (root) {
            th_error_set(&err, TH_ERR_INVAL, 400004,
                         "the request needs a 'commands' array: {\"commands\":[{\"command\":...}]}");
        }
        cJSON *r = response_entry(NULL, NULL);
        if (r) {
            add_error_fields(r, &err);
            cJSON_AddItemToArray(responses, r);
        }
        send_responses(c->client_id, responses);
        cJSON_Delete(root);
        return MOSQ_ERR_SUCCESS;
    }
    cJSON_ArrayForEach(cmd, cmds)
    {
        struct cmd_ctx x = {p, c, cmd, NULL, responses};
        const cJSON *jn = cJSON_GetObjectItemCaseSensitive(cmd, "command");
        if (!cJSON_IsObject(cmd) || !cJSON_IsString(jn)) {
            cJSON *r = response_entry(NULL, cJSON_GetObjectItemCaseSensitive(cmd, "correlationData"));
            th_error_set(&err, TH_ERR_INVAL, 400004, "each command needs a string field 'command'");
            if (r) {
                add_error_fields(r, &err);
                cJSON_AddItemToArray(responses, r);
            }
            continue;
        }
        x.name = jn->valuestring;
        dispatch(&x);
    }
    cJSON_Delete(root);
    if (cJSON_GetArraySize(responses) > 0) {
        send_responses(c->client_id, responses);
    } else {
        cJSON_Delete(responses); /* only invokeMethod commands: each answers on its own */
    }
    return MOSQ_ERR_SUCCESS;
}
