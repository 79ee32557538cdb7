/*
 * gw_rest.c - the IoT Hub service REST API subset (docs/rest-api.md;
 * iothub-protocol.md section 10): routes, authorisation (shared access
 * policies, and a device's own key on its module registry: core/auth.h), and
 * the translation of each request into one control API
 * command and of its answer into the hub's HTTP response (status, ETag,
 * x-ms-* paging headers, the hub's error envelope with iothub-errorcode).
 * Also /health and the twinhub-specific C2D endpoint.
 *
 * Everything runs on the gateway's service thread. A request waits in
 * GW_C_WAIT for its control answer (gw_control.c), or for the keys of the
 * device whose key signed it (getDevice), and in GW_C_AUTH while the policy
 * list is refreshed after a token did not verify.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/rand.h>

#include "auth.h"
#include "gw_private.h"
#include "json.h"
#include "method.h"
#include "sas.h"
#include "util.h"

#define JSON_TYPE "application/json; charset=utf-8"
#define MAX_TOKEN 4096
#define METHOD_SLACK_S 15 /* beyond the method's own timeouts, before the gateway gives up */

enum { RR = TH_PERM_REGISTRY_READ, RW = TH_PERM_REGISTRY_WRITE, SC = TH_PERM_SERVICE_CONNECT };
#define SV TH_AUTH_REST_SERVICE        /* policy tokens only */
#define DM TH_AUTH_REST_DEVICE_MODULES /* also the path device's own key */

struct gw_route {
    enum gw_method method;
    const char *pattern; /* "/"-separated segments; "{}" is one percent-encoded id */
    unsigned perms;      /* any one of these rights; 0: no authorisation */
    const char *needs;   /* the right, for refusals */
    bool azure;          /* an IoT Hub path: api-version is required */
    void (*handler)(struct gw_conn *c);
    enum th_auth_rest_target target; /* also open to the path device's own key (auth.h) */
};

/* ---- errors ------------------------------------------------------------------------------ */

/* The hub's name for an errorCode, plus the two twinhub uses for paths the hub lacks. */
static const char *code_name(int code)
{
    if (code == 404000)
        return "NotFound";
    if (code == 405000)
        return "MethodNotAllowed";
    return th_error_code_name(code);
}

static void tracking_id(char *buf, size_t size)
{
    unsigned char rnd[16];
    char hex[33];
    if (RAND_bytes(rnd, sizeof rnd) != 1)
        memset(rnd, 0, sizeof rnd);
    for (int i = 0; i < 16; i++)
        snprintf(hex + 2 * i, 3, "%02x", rnd[i]);
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    char when[32];
    strftime(when, sizeof when, "%m/%d/%Y %H:%M:%S", &tm);
    snprintf(buf, size, "%s-G:0-TimeStamp:%s", hex, when);
}

/*
 * The body is the hub's current error format: an outer object whose
 * "Message" is a string holding JSON {errorCode, trackingId, message,
 * timestampUtc}. That inner object starts with one more member, named
 * "ErrorCode:<Name>;<message>;": the Node service SDK (azure-iot-http-base
 * Http.parseErrorBody) still reads the legacy "ErrorCode:<Name>;<text>"
 * form by splitting Message on ';' and ':', so this makes it see
 * DeviceNotFound and the message while JSON readers see the current format.
 */
static void error_reply(struct gw_conn *c, int status, int code, const char *more_headers,
                        const char *msg)
{
    char legacy[700], track[96], ts[TH_TIME_BUF];
    const char *name = code_name(code);
    snprintf(legacy, sizeof legacy, "ErrorCode:%s;%s;", name, msg);
    /* Node splits on ';' and shows the text raw: no inner ';' and no quotes (escaped in JSON). */
    for (char *p = legacy + strlen("ErrorCode:") + strlen(name) + 1; *p; p++) {
        if (*p == ';' && p[1] != '\0')
            *p = ',';
        else if (*p == '"' || *p == '\\')
            *p = '\'';
    }
    tracking_id(track, sizeof track);
    th_time_format(th_now_us(), ts);

    char *inner_text = NULL, *body = NULL;
    cJSON *inner = cJSON_CreateObject(), *outer = cJSON_CreateObject();
    bool ok =
        inner && outer && cJSON_AddStringToObject(inner, legacy, "") &&
        cJSON_AddNumberToObject(inner, "errorCode", code) &&
        cJSON_AddStringToObject(inner, "trackingId", track) &&
        cJSON_AddStringToObject(inner, "message", msg) &&
        cJSON_AddStringToObject(inner, "timestampUtc", ts) && (inner_text = th_json_print(inner)) &&
        cJSON_AddStringToObject(outer, "Message", inner_text) &&
        cJSON_AddStringToObject(outer, "ExceptionMessage", "") && (body = th_json_print(outer));
    char extra[320];
    snprintf(extra, sizeof extra, "iothub-errorcode: %s\r\n%s", name,
             more_headers ? more_headers : "");
    if (ok)
        gw_http_respond(c, status, extra, JSON_TYPE, body, strlen(body));
    else
        gw_http_respond(c, status, extra, NULL, NULL, 0);
    gw_log(c->gw, status >= 500 && status != 503 && status != 504,
           "rest | refused | status=%d code=%d %s", status, code, msg);
    free(inner_text);
    free(body);
    cJSON_Delete(inner);
    cJSON_Delete(outer);
}

void gw_rest_error(struct gw_conn *c, int status, int code, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    error_reply(c, status, code, NULL, msg);
}

/* Answer a control error entry {"error","status","errorCode"} as the hub would. */
static void error_from_entry(struct gw_conn *c, const cJSON *entry)
{
    int status = (int)th_json_number(entry, "status", 500);
    int code = (int)th_json_number(entry, "errorCode", 500001);
    if (status < 400 || status > 599)
        status = 500;
    gw_rest_error(c, status, code, "%s",
                  th_json_string(entry, "error", "the hub refused the request"));
}

static void respond_json(struct gw_conn *c, int status, const cJSON *item, const char *extra)
{
    char *text = item ? th_json_print(item) : NULL;
    if (item && !text) {
        gw_rest_error(c, 500, 500001, "out of memory");
        return;
    }
    gw_http_respond(c, status, extra, JSON_TYPE, text ? text : "", text ? strlen(text) : 0);
    free(text);
}

static void unreachable(struct gw_conn *c)
{
    gw_rest_error(c, 503, 503001,
                  "the hub cannot be reached right now (the gateway's control connection is "
                  "down); try again");
}

/* ---- request helpers --------------------------------------------------------------------- */

/* The JSON object body; NULL after answering 400 (or when absent and !required). */
static cJSON *body_object(struct gw_conn *c, bool required, bool *answered)
{
    struct gw_buf *b = &c->req.body;
    *answered = false;
    if (gw_buf_size(b) == 0) {
        if (required) {
            gw_rest_error(c, 400, 400005, "this request needs a JSON object body");
            *answered = true;
        }
        return NULL;
    }
    cJSON *doc = NULL;
    struct th_error err = {0};
    if (th_json_parse((const char *)gw_buf_head(b), gw_buf_size(b), GW_MAX_BODY, 64, &doc, &err) !=
        TH_OK) {
        gw_rest_error(c, 400, 400006, "%s", err.message);
        *answered = true;
        return NULL;
    }
    if (!cJSON_IsObject(doc)) {
        cJSON_Delete(doc);
        gw_rest_error(c, 400, 400004, "the request body must be a JSON object");
        *answered = true;
        return NULL;
    }
    return doc;
}

/* If-Match as a NUL-terminated string in buf, or NULL when absent. */
static const char *if_match(struct gw_conn *c, char *buf, size_t size)
{
    const struct gw_slice *h = gw_req_header(&c->req, "If-Match");
    if (!h)
        return NULL;
    struct gw_slice v = *h;
    if (v.n >= 2 && !strncmp(v.p, "W/", 2)) { /* a weak tag compares like a strong one here */
        v.p += 2;
        v.n -= 2;
    }
    snprintf(buf, size, "%.*s", (int)v.n, v.p);
    return buf;
}

/* {"command": name, "deviceId": ids[0][, "moduleId": ids[1]]}; NULL on out-of-memory. */
static cJSON *command(struct gw_conn *c, const char *name, bool with_module)
{
    cJSON *cmd = cJSON_CreateObject();
    if (!cmd || !cJSON_AddStringToObject(cmd, "command", name) ||
        (c->ids[0][0] && !cJSON_AddStringToObject(cmd, "deviceId", c->ids[0])) ||
        (with_module && !cJSON_AddStringToObject(cmd, "moduleId", c->ids[1]))) {
        cJSON_Delete(cmd);
        return NULL;
    }
    return cmd;
}

/* Copy member `key` of `from` into `to` when present; false on out-of-memory. */
static bool copy_member(cJSON *to, const cJSON *from, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(from, key);
    if (!v)
        return true;
    cJSON *dup = cJSON_Duplicate(v, 1);
    return dup && cJSON_AddItemToObject(to, key, dup);
}

/*
 * The identity members a create or update passes on besides authentication:
 * the hub's Device (status, statusReason, capabilities, deviceScope,
 * parentScopes) or Module (managedBy) fields; the rest are read-only.
 */
static bool copy_identity_fields(cJSON *to, const cJSON *body, bool is_module)
{
    if (is_module)
        return copy_member(to, body, "managedBy");
    return copy_member(to, body, "status") && copy_member(to, body, "statusReason") &&
           copy_member(to, body, "capabilities") && copy_member(to, body, "deviceScope") &&
           copy_member(to, body, "parentScopes");
}

static void call(struct gw_conn *c, cJSON *cmd, double timeout_s, gw_done_fn done)
{
    if (!gw_ctl_call(c->gw, c, cmd, timeout_s, done))
        unreachable(c);
}

/* Send `cmd` when building it went well (`ok`); else free it and answer 500 (out of memory). */
static void call_built(struct gw_conn *c, bool ok, cJSON *cmd, double timeout_s, gw_done_fn done)
{
    if (!ok) {
        cJSON_Delete(cmd);
        gw_rest_error(c, 500, 500001, "out of memory");
        return;
    }
    call(c, cmd, timeout_s, done);
}

/* Common start of every answer handler: false when there is nobody to answer or it was an error. */
static bool answer_ok(struct gw_conn *c, const cJSON *entry)
{
    if (!c)
        return false;
    if (cJSON_GetObjectItemCaseSensitive(entry, "error")) {
        error_from_entry(c, entry);
        gw_http_resume(c);
        return false;
    }
    return true;
}

static void etag_header(const cJSON *data, char *buf, size_t size)
{
    const char *etag = th_json_string(data, "etag", NULL);
    if (etag)
        snprintf(buf, size, "ETag: \"%s\"\r\n", etag);
    else
        buf[0] = '\0';
}

/* ---- answers ----------------------------------------------------------------------------- */

/* 200 with `data` and its etag as ETag (identities and twins). */
static void done_entity(struct th_gateway *gw, struct gw_conn *c, const cJSON *entry)
{
    (void)gw;
    if (!answer_ok(c, entry))
        return;
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(entry, "data");
    char extra[160];
    etag_header(data, extra, sizeof extra);
    respond_json(c, 200, data, extra);
    gw_http_resume(c);
}

/* 200 with `data` as it is. */
static void done_data(struct th_gateway *gw, struct gw_conn *c, const cJSON *entry)
{
    (void)gw;
    if (!answer_ok(c, entry))
        return;
    respond_json(c, 200, cJSON_GetObjectItemCaseSensitive(entry, "data"), NULL);
    gw_http_resume(c);
}

/*
 * 200 with the method's result as the hub writes it: {"status","payload"}, or, when the
 * device's body was not JSON, that body copied verbatim after "payload": (core/method.h).
 */
static void done_method(struct th_gateway *gw, struct gw_conn *c, const cJSON *entry)
{
    (void)gw;
    if (!answer_ok(c, entry))
        return;
    size_t len = 0;
    char *body = th_method_rest_body(cJSON_GetObjectItemCaseSensitive(entry, "data"), &len);
    if (body)
        gw_http_respond(c, 200, NULL, JSON_TYPE, body, len);
    else
        gw_rest_error(c, 500, 500001, "the hub's method result could not be written");
    free(body);
    gw_http_resume(c);
}

static void done_no_content(struct th_gateway *gw, struct gw_conn *c, const cJSON *entry)
{
    (void)gw;
    if (!answer_ok(c, entry))
        return;
    gw_http_respond(c, 204, NULL, NULL, NULL, 0);
    gw_http_resume(c);
}

/* GET /devices: the first `top` (c->arg) identities. */
static void done_list(struct th_gateway *gw, struct gw_conn *c, const cJSON *entry)
{
    (void)gw;
    if (!answer_ok(c, entry))
        return;
    cJSON *data = cJSON_GetObjectItemCaseSensitive(entry, "data");
    while (cJSON_IsArray(data) && cJSON_GetArraySize(data) > c->arg)
        cJSON_DeleteItemFromArray(data, cJSON_GetArraySize(data) - 1);
    respond_json(c, 200, data, NULL);
    gw_http_resume(c);
}

static void done_query(struct th_gateway *gw, struct gw_conn *c, const cJSON *entry)
{
    (void)gw;
    if (!answer_ok(c, entry))
        return;
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(entry, "data");
    const char *cont = th_json_string(data, "continuation", NULL);
    char extra[512];
    int n = snprintf(extra, sizeof extra, "x-ms-item-type: %s\r\n",
                     th_json_string(data, "itemType", "raw"));
    /* The SDKs take an absent header as "no more pages". */
    if (cont && strlen(cont) < 200)
        snprintf(extra + n, sizeof extra - (size_t)n, "x-ms-continuation: %s\r\n", cont);
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(data, "items");
    cJSON *empty = items ? NULL : cJSON_CreateArray();
    respond_json(c, 200, items ? items : empty, extra);
    cJSON_Delete(empty);
    gw_http_resume(c);
}

static void stats(struct gw_conn *c, const cJSON *entry, const char *const *keys, size_t nkeys)
{
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(entry, "data");
    cJSON *out = cJSON_CreateObject();
    for (size_t i = 0; out && i < nkeys; i++)
        if (!cJSON_AddNumberToObject(out, keys[i], th_json_number(data, keys[i], 0))) {
            cJSON_Delete(out);
            out = NULL;
        }
    if (out)
        respond_json(c, 200, out, NULL);
    else
        gw_rest_error(c, 500, 500001, "out of memory");
    cJSON_Delete(out);
    gw_http_resume(c);
}

static void done_stats_devices(struct th_gateway *gw, struct gw_conn *c, const cJSON *entry)
{
    static const char *const keys[] = {"totalDeviceCount", "enabledDeviceCount",
                                       "disabledDeviceCount"};
    (void)gw;
    if (answer_ok(c, entry))
        stats(c, entry, keys, 3);
}

static void done_stats_service(struct th_gateway *gw, struct gw_conn *c, const cJSON *entry)
{
    static const char *const keys[] = {"connectedDeviceCount"};
    (void)gw;
    if (answer_ok(c, entry))
        stats(c, entry, keys, 1);
}

/* ---- handlers: identities ---------------------------------------------------------------- */

static void h_list_devices(struct gw_conn *c)
{
    char top[32];
    c->arg = 1000;
    if (gw_req_query(&c->req, "top", top, sizeof top)) {
        char *end;
        long v = strtol(top, &end, 10);
        if (!top[0] || *end || v < 1) {
            gw_rest_error(c, 400, 400004, "top must be a whole number from 1 to 1000");
            return;
        }
        c->arg = v > 1000 ? 1000 : v;
    }
    call(c, command(c, "listDevices", false), GW_CALL_TIMEOUT_S, done_list);
}

static void h_get_device(struct gw_conn *c)
{
    call(c, command(c, "getDevice", false), GW_CALL_TIMEOUT_S, done_entity);
}

static void h_get_module(struct gw_conn *c)
{
    call(c, command(c, "getDevice", true), GW_CALL_TIMEOUT_S, done_entity);
}

static void h_list_modules(struct gw_conn *c)
{
    call(c, command(c, "listModules", false), GW_CALL_TIMEOUT_S, done_data);
}

static void h_delete_device(struct gw_conn *c)
{
    char buf[256];
    const char *etag = if_match(c, buf, sizeof buf);
    cJSON *cmd = command(c, "deleteDevice", false);
    if (cmd && etag && !cJSON_AddStringToObject(cmd, "etag", etag)) {
        cJSON_Delete(cmd);
        cmd = NULL;
    }
    call(c, cmd, GW_CALL_TIMEOUT_S, done_no_content);
}

static void h_delete_module(struct gw_conn *c)
{
    char buf[256];
    const char *etag = if_match(c, buf, sizeof buf);
    cJSON *cmd = command(c, "deleteModule", true);
    if (cmd && etag && !cJSON_AddStringToObject(cmd, "etag", etag)) {
        cJSON_Delete(cmd);
        cmd = NULL;
    }
    call(c, cmd, GW_CALL_TIMEOUT_S, done_no_content);
}

/* PUT /devices/{id} and /devices/{id}/modules/{mid}: create, or update with If-Match. */
static void put_identity(struct gw_conn *c, bool is_module)
{
    bool answered;
    cJSON *body = body_object(c, true, &answered);
    if (!body)
        return;
    const char *bd = th_json_string(body, "deviceId", NULL);
    const char *bm = th_json_string(body, "moduleId", NULL);
    if ((bd && strcmp(bd, c->ids[0])) || (is_module && bm && strcmp(bm, c->ids[1]))) {
        gw_rest_error(c, 400, 400004,
                      "the %s in the body ('%s') does not match the one in the path ('%s')",
                      bd && strcmp(bd, c->ids[0]) ? "deviceId" : "moduleId",
                      bd && strcmp(bd, c->ids[0]) ? bd : bm,
                      bd && strcmp(bd, c->ids[0]) ? c->ids[0] : c->ids[1]);
        cJSON_Delete(body);
        return;
    }
    /*
     * With If-Match an update, in one command: core leaves keys equal to the
     * current ones alone, so an identity sent back as read (what the SDKs'
     * update does) keeps its connection.
     */
    char buf[256];
    const char *etag = if_match(c, buf, sizeof buf);
    cJSON *cmd = etag ? command(c, is_module ? "updateModule" : "updateDevice", is_module)
                      : command(c, is_module ? "createModule" : "createDevice", is_module);
    bool ok = cmd && (!etag || cJSON_AddStringToObject(cmd, "etag", etag)) &&
              copy_member(cmd, body, "authentication") &&
              copy_identity_fields(cmd, body, is_module);
    cJSON_Delete(body);
    call_built(c, ok, cmd, GW_CALL_TIMEOUT_S, done_entity);
}

static void h_put_device(struct gw_conn *c)
{
    put_identity(c, false);
}

static void h_put_module(struct gw_conn *c)
{
    put_identity(c, true);
}

/* ---- handlers: twins, methods, query, statistics, C2D ------------------------------------ */

static void h_get_twin(struct gw_conn *c)
{
    call(c, command(c, "getTwin", c->ids[1][0] != '\0'), GW_CALL_TIMEOUT_S, done_entity);
}

/* PATCH (merge) or PUT (replace) /twins/{id}[/modules/{mid}]: tags and desired properties. */
static void write_twin(struct gw_conn *c, bool replace)
{
    bool answered;
    cJSON *body = body_object(c, true, &answered);
    if (!body)
        return;
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(body, "properties");
    const cJSON *reported = cJSON_GetObjectItemCaseSensitive(props, "reported");
    if (reported && !(cJSON_IsObject(reported) && !reported->child) && !cJSON_IsNull(reported)) {
        cJSON_Delete(body);
        gw_rest_error(c, 400, 400004,
                      "reported properties are written by the device only; remove "
                      "properties.reported from the request");
        return;
    }
    char buf[256];
    const char *etag = if_match(c, buf, sizeof buf);
    cJSON *cmd = command(c, replace ? "replaceTwin" : "updateTwin", c->ids[1][0] != '\0');
    cJSON *patch = cmd ? cJSON_AddObjectToObject(cmd, "patch") : NULL;
    bool ok = patch && copy_member(patch, body, "tags") &&
              (!etag || cJSON_AddStringToObject(cmd, "etag", etag));
    if (ok && props) {
        cJSON *p = cJSON_AddObjectToObject(patch, "properties");
        ok = p && copy_member(p, props, "desired");
    }
    cJSON_Delete(body);
    call_built(c, ok, cmd, GW_CALL_TIMEOUT_S, done_entity);
}

static void h_patch_twin(struct gw_conn *c)
{
    write_twin(c, false);
}

static void h_put_twin(struct gw_conn *c)
{
    write_twin(c, true);
}

static void h_invoke(struct gw_conn *c)
{
    bool answered;
    cJSON *body = body_object(c, true, &answered);
    if (!body)
        return;
    cJSON *cmd = command(c, "invokeMethod", c->ids[1][0] != '\0');
    bool ok = cmd && copy_member(cmd, body, "methodName") && copy_member(cmd, body, "payload") &&
              copy_member(cmd, body, "responseTimeoutInSeconds") &&
              copy_member(cmd, body, "connectTimeoutInSeconds");
    double wait = th_json_number(body, "responseTimeoutInSeconds", TH_METHOD_DEFAULT_TIMEOUT_S) +
                  th_json_number(body, "connectTimeoutInSeconds", 0);
    if (!(wait >= 0 && wait <= 2 * TH_METHOD_MAX_TIMEOUT_S))
        wait = 2 * TH_METHOD_MAX_TIMEOUT_S; /* out of range: the hub refuses it at once */
    cJSON_Delete(body);
    call_built(c, ok, cmd, wait + METHOD_SLACK_S, done_method);
}

static void h_query(struct gw_conn *c)
{
    bool answered;
    cJSON *body = body_object(c, true, &answered);
    if (!body)
        return;
    long page = 100;
    const struct gw_slice *h = gw_req_header(&c->req, "x-ms-max-item-count");
    if (h) {
        char tmp[32];
        char *end;
        snprintf(tmp, sizeof tmp, "%.*s", (int)(h->n < 31 ? h->n : 31), h->p);
        page = strtol(tmp, &end, 10);
        if (!tmp[0] || *end || page < 1) {
            cJSON_Delete(body);
            gw_rest_error(c, 400, 400004,
                          "x-ms-max-item-count must be a whole number from 1 to 1000");
            return;
        }
        if (page > 1000)
            page = 1000;
    }
    const struct gw_slice *cont = gw_req_header(&c->req, "x-ms-continuation");
    cJSON *cmd = command(c, "query", false);
    bool ok = cmd && copy_member(cmd, body, "query") &&
              cJSON_AddNumberToObject(cmd, "pageSize", (double)page);
    if (ok && cont && cont->n) {
        char tmp[256];
        snprintf(tmp, sizeof tmp, "%.*s", (int)(cont->n < 255 ? cont->n : 255), cont->p);
        ok = cJSON_AddStringToObject(cmd, "continuation", tmp) != NULL;
    }
    cJSON_Delete(body);
    call_built(c, ok, cmd, GW_CALL_TIMEOUT_S, done_query);
}

static void h_stats_devices(struct gw_conn *c)
{
    call(c, command(c, "getStatistics", false), GW_CALL_TIMEOUT_S, done_stats_devices);
}

static void h_stats_service(struct gw_conn *c)
{
    call(c, command(c, "getStatistics", false), GW_CALL_TIMEOUT_S, done_stats_service);
}

/* A header value as a new JSON string member; false on out-of-memory. */
static bool header_member(struct gw_conn *c, cJSON *cmd, const char *header, const char *key)
{
    const struct gw_slice *v = gw_req_header(&c->req, header);
    if (!v || cJSON_GetObjectItemCaseSensitive(cmd, key))
        return true;
    char *s = strndup(v->p, v->n);
    bool ok = s && cJSON_AddStringToObject(cmd, key, s);
    free(s);
    return ok;
}

/* POST /twinhub/devices/{id}/messages: the body becomes a C2D message (AMQP is not emulated). */
static void h_c2d(struct gw_conn *c)
{
    struct gw_buf *b = &c->req.body;
    size_t n = gw_buf_size(b);
    if (n > TH_C2D_MAX_BYTES) {
        gw_rest_error(c, 413, 413001, "message of %zu bytes exceeds the %d byte limit", n,
                      TH_C2D_MAX_BYTES);
        return;
    }
    char *b64 = malloc(4 * ((n + 2) / 3) + 1);
    cJSON *cmd = command(c, "sendC2D", false);
    cJSON *props = cmd ? cJSON_AddObjectToObject(cmd, "properties") : NULL;
    bool ok = b64 && props &&
              th_b64_encode(gw_buf_head(b), n, b64, 4 * ((n + 2) / 3) + 1) == TH_OK &&
              cJSON_AddStringToObject(cmd, "bodyBase64", b64);
    static const char prefix[] = "iothub-app-";
    for (int i = 0; ok && i < c->req.nheaders; i++) {
        const struct gw_header *h = &c->req.headers[i];
        if (h->name.n <= sizeof prefix - 1 || strncasecmp(h->name.p, prefix, sizeof prefix - 1))
            continue;
        char *name = strndup(h->name.p + sizeof prefix - 1, h->name.n - (sizeof prefix - 1));
        char *value = strndup(h->value.p, h->value.n);
        ok = name && value && cJSON_AddStringToObject(props, name, value);
        free(name);
        free(value);
    }
    ok = ok && header_member(c, cmd, "iothub-messageid", "messageId") &&
         header_member(c, cmd, "iothub-correlationid", "correlationId") &&
         header_member(c, cmd, "iothub-userid", "userId") &&
         header_member(c, cmd, "iothub-expiry", "expiryTimeUtc") &&
         header_member(c, cmd, "iothub-ack", "ack") &&
         header_member(c, cmd, "iothub-contenttype", "contentType") &&
         header_member(c, cmd, "Content-Type", "contentType") &&
         header_member(c, cmd, "iothub-contentencoding", "contentEncoding") &&
         header_member(c, cmd, "Content-Encoding", "contentEncoding");
    free(b64);
    call_built(c, ok, cmd, GW_CALL_TIMEOUT_S, done_data);
}

static void h_health(struct gw_conn *c)
{
    bool up = c->gw->ctl_up && c->gw->policies_loaded;
    const char *body = up ? "{\"status\":\"healthy\",\"broker\":\"up\",\"gateway\":\"up\"}"
                          : "{\"status\":\"unhealthy\",\"broker\":\"down\",\"gateway\":\"up\"}";
    gw_http_respond(c, up ? 200 : 503, "Cache-Control: no-store\r\n", JSON_TYPE, body,
                    strlen(body));
}

/* ---- routes ------------------------------------------------------------------------------ */

static const struct gw_route routes[] = {
    {GW_GET, "/health", 0, NULL, false, h_health, SV},
    {GW_POST, "/devices/query", SC | RR, "ServiceConnect", true, h_query, SV},
    {GW_GET, "/devices", RR, "RegistryRead", true, h_list_devices, SV},
    {GW_GET, "/devices/{}", RR, "RegistryRead", true, h_get_device, SV},
    {GW_PUT, "/devices/{}", RW, "RegistryWrite", true, h_put_device, SV},
    {GW_DELETE, "/devices/{}", RW, "RegistryWrite", true, h_delete_device, SV},
    {GW_GET, "/devices/{}/modules", RR, "RegistryRead", true, h_list_modules, DM},
    {GW_GET, "/devices/{}/modules/{}", RR, "RegistryRead", true, h_get_module, DM},
    {GW_PUT, "/devices/{}/modules/{}", RW, "RegistryWrite", true, h_put_module, DM},
    {GW_DELETE, "/devices/{}/modules/{}", RW, "RegistryWrite", true, h_delete_module, DM},
    {GW_GET, "/twins/{}", SC | RR, "ServiceConnect", true, h_get_twin, SV},
    {GW_PATCH, "/twins/{}", SC, "ServiceConnect", true, h_patch_twin, SV},
    {GW_PUT, "/twins/{}", SC, "ServiceConnect", true, h_put_twin, SV},
    {GW_POST, "/twins/{}/methods", SC, "ServiceConnect", true, h_invoke, SV},
    {GW_GET, "/twins/{}/modules/{}", SC | RR, "ServiceConnect", true, h_get_twin, SV},
    {GW_PATCH, "/twins/{}/modules/{}", SC, "ServiceConnect", true, h_patch_twin, SV},
    {GW_PUT, "/twins/{}/modules/{}", SC, "ServiceConnect", true, h_put_twin, SV},
    {GW_POST, "/twins/{}/modules/{}/methods", SC, "ServiceConnect", true, h_invoke, SV},
    {GW_GET, "/statistics/devices", RR, "RegistryRead", true, h_stats_devices, SV},
    {GW_GET, "/statistics/service", SC, "ServiceConnect", true, h_stats_service, SV},
    {GW_POST, "/twinhub/devices/{}/messages", SC, "ServiceConnect", false, h_c2d, SV},
};
#define NROUTES (sizeof routes / sizeof routes[0])
#define MAX_SEGMENTS 8

/* Split "/a/b/c/" into segments; a trailing '/' is ignored. -1 when empty segments or too many. */
static int split(struct gw_slice path, struct gw_slice *seg)
{
    int n = 0;
    const char *p = path.p + 1, *end = path.p + path.n;
    if (path.n > 1 && end[-1] == '/')
        end--;
    if (p >= end)
        return 0;
    while (p <= end) {
        const char *slash = memchr(p, '/', (size_t)(end - p));
        const char *e = slash ? slash : end;
        if (e == p || n == MAX_SEGMENTS)
            return -1;
        seg[n++] = (struct gw_slice){p, (size_t)(e - p)};
        if (!slash)
            break;
        p = slash + 1;
    }
    return n;
}

/* Whether `pattern` matches the segments; `idseg` gets the positions of its "{}" segments. */
static bool match(const char *pattern, const struct gw_slice *seg, int nseg, int idseg[2])
{
    int k = 0, nid = 0;
    const char *p = pattern + 1;
    while (*p) {
        size_t len = strcspn(p, "/");
        if (k == nseg)
            return false;
        if (len == 2 && !strncmp(p, "{}", 2)) {
            if (nid == 2)
                return false;
            idseg[nid++] = k;
        } else if (seg[k].n != len || strncmp(seg[k].p, p, len)) {
            return false;
        }
        k++;
        p += len;
        if (*p == '/')
            p++;
    }
    return k == nseg;
}

static const char *method_name(enum gw_method m)
{
    static const char *const names[] = {"GET", "PUT", "POST", "PATCH", "DELETE", "HEAD"};
    return m < GW_OTHER ? names[m] : "?";
}

/* ---- authorisation ----------------------------------------------------------------------- */

enum { AUTH_OK, AUTH_ANSWERED, AUTH_WAIT };

/*
 * Park the request until a policy list fetched after this moment arrives
 * (the token may name a policy or key imported since the last list). Only
 * once per request; false when it already waited.
 */
static bool wait_for_policies(struct gw_conn *c, bool retry)
{
    struct th_gateway *gw = c->gw;
    if (retry && c->policy_retry)
        return false;
    c->policy_retry = c->policy_retry || retry;
    c->auth_missed_ms = retry ? th_mono_ms() : 0;
    c->state = GW_C_AUTH;
    c->auth_next = gw->auth_waiters;
    gw->auth_waiters = c;
    /* Parked first: a refresh that cannot be sent answers the waiters at once. Before the
     * first list only a missing refresh is asked for (one is normally on its way). */
    if (retry || !gw->policy_refresh_in_flight)
        gw_ctl_want_policies(gw);
    return true;
}

/* The Authorization header parsed into `buf` (`tok` and `res` point there); false after a 401. */
static bool parse_token(struct gw_conn *c, char *buf, size_t size, struct th_sas_token *tok,
                        struct th_sas_resource *res)
{
    const struct gw_slice *h = gw_req_header(&c->req, "Authorization");
    struct th_error err = {0};
    if (!h || !h->n) {
        gw_rest_error(c, 401, 401002,
                      "no Authorization header; send a SharedAccessSignature token signed with a "
                      "shared access policy key (sr=<hub>&sig=...&se=...&skn=<policy>)");
        return false;
    }
    if (h->n >= size) {
        gw_rest_error(c, 401, 401002, "the Authorization header is too long");
        return false;
    }
    memcpy(buf, h->p, h->n);
    buf[h->n] = '\0';
    if (th_sas_parse(buf, h->n, tok, &err) != TH_OK || th_sas_resource(tok, res, &err) != TH_OK) {
        gw_rest_error(c, 401, 401002, "the Authorization header is not a valid SAS token: %s",
                      err.message);
        return false;
    }
    return true;
}

/*
 * The keys of the device in the path arrived (getDevice): check the device-key
 * token against them (auth.h), then run the route. A device the hub does not
 * know is a 401 like a wrong key, not a 404: nothing authenticated the caller.
 */
static void done_device_key(struct th_gateway *gw, struct gw_conn *c, const cJSON *entry)
{
    (void)gw;
    if (!c)
        return;
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(entry, "data");
    if (!data && th_json_number(entry, "status", 500) != 404) {
        error_from_entry(c, entry);
        gw_http_resume(c);
        return;
    }
    char token[MAX_TOKEN];
    struct th_sas_token tok;
    struct th_sas_resource res;
    if (!parse_token(c, token, sizeof token, &tok, &res)) {
        gw_http_resume(c);
        return;
    }
    const cJSON *sym = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(data, "authentication"), "symmetricKey");
    struct th_auth_device dev = {
        .device_id = c->ids[0],
        .primary_key = th_json_string(sym, "primaryKey", ""),
        .secondary_key = th_json_string(sym, "secondaryKey", ""),
        .enabled = strcmp(th_json_string(data, "status", "enabled"), "disabled") != 0,
    };
    struct th_error err = {0};
    if (th_auth_rest_device_key(&tok, data ? &dev : NULL, th_now_us() / 1000000, 0, &err) !=
        TH_OK) {
        gw_rest_error(c, 401, 401002, "%s", err.message);
        gw_http_resume(c);
        return;
    }
    c->state = GW_C_WAIT;
    c->route->handler(c);
    if (c->state == GW_C_HEAD)
        gw_http_resume(c);
}

static int authorize(struct gw_conn *c)
{
    struct th_gateway *gw = c->gw;
    const struct gw_route *rt = c->route;
    char token[MAX_TOKEN];
    struct th_sas_token tok;
    struct th_sas_resource res;
    struct th_error err = {0};
    if (!parse_token(c, token, sizeof token, &tok, &res))
        return AUTH_ANSWERED;
    if (th_auth_is_device_key(&tok)) {
        /* Signed with a device's own key: its module registry only, checked against its keys. */
        if (th_auth_rest_device_scope(&res, rt->target, c->ids[0], &err) != TH_OK) {
            gw_rest_error(c, 401, 401002, "%s", err.message);
            return AUTH_ANSWERED;
        }
        call(c, command(c, "getDevice", false), GW_CALL_TIMEOUT_S, done_device_key);
        return AUTH_WAIT;
    }
    if (res.device_id[0]) {
        gw_rest_error(c, 401, 401002,
                      "a shared access policy token for the service API is scoped to the hub: "
                      "sr=<hub name> (or <hub name>/devices), not a device or module");
        return AUTH_ANSWERED;
    }
    if (!gw->policies_loaded) {
        if (gw->ctl_up && wait_for_policies(c, false))
            return AUTH_WAIT;
        unreachable(c);
        return AUTH_ANSWERED;
    }
    const struct gw_policy *pol = gw_ctl_policy(gw, tok.skn.ptr, tok.skn.len);
    if (!pol) {
        if (wait_for_policies(c, true))
            return AUTH_WAIT;
        gw_rest_error(c, 401, 401002, "unknown shared access policy '%.*s'", (int)tok.skn.len,
                      tok.skn.ptr);
        return AUTH_ANSWERED;
    }
    int64_t now_s = th_now_us() / 1000000;
    th_result r = th_auth_verify_keys(&tok, pol->primary_key, pol->secondary_key, now_s, 0, &err);
    if (r == TH_ERR_EXPIRED) {
        gw_rest_error(c, 401, 401002, "the SAS token has expired (se=%.*s); sign a new one",
                      (int)tok.se.len, tok.se.ptr);
        return AUTH_ANSWERED;
    }
    if (r != TH_OK) {
        if (wait_for_policies(c, true))
            return AUTH_WAIT;
        gw_rest_error(c, 401, 401002,
                      "the SAS token's signature does not match the keys of policy '%s'",
                      pol->name);
        return AUTH_ANSWERED;
    }
    if (!(pol->perms & rt->perms)) {
        gw_rest_error(c, 401, 401002, "policy '%s' does not grant %s, which %s %s needs", pol->name,
                      rt->needs, method_name(rt->method), rt->pattern);
        return AUTH_ANSWERED;
    }
    return AUTH_OK;
}

static void run(struct gw_conn *c)
{
    if (c->route->perms && authorize(c) != AUTH_OK)
        return;
    c->route->handler(c);
}

void gw_rest_policies_ready(struct th_gateway *gw, bool ok, int64_t sent_ms)
{
    struct gw_conn *list = gw->auth_waiters;
    bool later = false;
    gw->auth_waiters = NULL;
    while (list) {
        struct gw_conn *c = list;
        list = c->auth_next;
        c->auth_next = NULL;
        if (c->state != GW_C_AUTH)
            continue;
        if (ok && c->auth_missed_ms > sent_ms) {
            /* This list may predate what the token needs: wait for the next one. */
            c->auth_next = gw->auth_waiters;
            gw->auth_waiters = c;
            later = true;
            continue;
        }
        c->state = GW_C_WAIT;
        if (ok)
            run(c);
        else
            unreachable(c);
        if (c->state == GW_C_HEAD)
            gw_http_resume(c);
    }
    if (later)
        gw_ctl_want_policies(gw);
}

/* ---- dispatch ---------------------------------------------------------------------------- */

static bool is_websocket_path(struct gw_slice path)
{
    return (path.n == 18 && !memcmp(path.p, "/$iothub/websocket", 18)) ||
           (path.n == 20 && !strncasecmp(path.p, "/%24iothub/websocket", 20));
}

void gw_rest_dispatch(struct gw_conn *c)
{
    struct gw_req *r = &c->req;
    if (is_websocket_path(r->path)) {
        gw_ws_upgrade(c);
        return;
    }
    struct gw_slice seg[MAX_SEGMENTS];
    int nseg = split(r->path, seg);
    const struct gw_route *rt = NULL;
    int idseg[2] = {-1, -1};
    char allow[128] = "";
    for (size_t i = 0; nseg >= 0 && i < NROUTES; i++) {
        int ids[2] = {-1, -1};
        if (!match(routes[i].pattern, seg, nseg, ids))
            continue;
        if (routes[i].method == r->method) {
            rt = &routes[i];
            memcpy(idseg, ids, sizeof ids);
            break;
        }
        size_t n = strlen(allow);
        snprintf(allow + n, sizeof allow - n, "%s%s", n ? ", " : "", method_name(routes[i].method));
    }
    if (!rt && allow[0]) {
        char extra[160], msg[600];
        snprintf(extra, sizeof extra, "Allow: %s\r\n", allow);
        snprintf(msg, sizeof msg, "%.*s is not allowed on %.*s; use %s", (int)r->method_text.n,
                 r->method_text.p, (int)r->path.n, r->path.p, allow);
        error_reply(c, 405, 405000, extra, msg);
        return;
    }
    if (!rt) {
        gw_rest_error(c, 404, 404000,
                      "no such endpoint: %.*s %.*s (twinhub serves the IoT Hub service API subset "
                      "in docs/rest-api.md)",
                      (int)r->method_text.n, r->method_text.p, (int)r->path.n, r->path.p);
        return;
    }
    c->ids[0][0] = c->ids[1][0] = '\0';
    for (int k = 0; k < 2 && idseg[k] >= 0; k++) {
        size_t n;
        struct gw_slice s = seg[idseg[k]];
        if (th_pct_decode(s.p, s.n, false, c->ids[k], GW_ID_BUF, &n) != TH_OK || n == 0 ||
            strlen(c->ids[k]) != n) {
            gw_rest_error(c, 400, 400004,
                          "the %s id in the path is not valid (percent-encoded, at most %d "
                          "characters)",
                          k ? "module" : "device", TH_MAX_ID_LEN);
            return;
        }
    }
    if (rt->azure) {
        char v[64];
        if (!gw_req_query(r, "api-version", v, sizeof v) || !v[0]) {
            gw_rest_error(c, 400, 400001,
                          "the api-version query parameter is required, e.g. "
                          "?api-version=2021-04-12");
            return;
        }
    }
    c->route = rt;
    run(c);
}
