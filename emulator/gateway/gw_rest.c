/*
 * gw_rest.c - the IoT Hub service REST API subset (docs/rest-api.md;
 * iothub-protocol.md section 10): routes, and the translation of each
 * request into one control API command and of its answer into the hub's
 * HTTP response (status, ETag, x-ms-* paging headers, the hub's error
 * envelope with iothub-errorcode). Also /health and the twinhub-specific C2D
 * endpoint.
 *
 * Authentication is the broker's: every command carries the request's
 * Authorization header, the rights its route needs and, on a device's module
 * registry, that device's id ("authorization", docs/control-api.md); the
 * broker decides with th_auth_service (core/auth.h) and refuses with the
 * hub's 401, which is answered like any other error. The gateway verifies
 * no token and holds no key or policy.
 *
 * Everything runs on the gateway's service thread. A request waits in
 * GW_C_WAIT for its control answer (gw_control.c).
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/rand.h>

#include "gw_private.h"
#include "json.h"
#include "method.h"
#include "util.h"

#define JSON_TYPE "application/json; charset=utf-8"
#define METHOD_SLACK_S 15 /* beyond the method's own timeouts, before the gateway gives up */

#define SV false /* policy tokens only */
#define DM true  /* a device's module registry: also that device's own key */

struct gw_route {
    enum gw_method method;
    const char *pattern;   /* "/"-separated segments; "{}" is one percent-encoded id */
    const char *rights[2]; /* any one of these rights, the first named in refusals; none: open */
    bool azure;            /* an IoT Hub path: api-version is required */
    void (*handler)(struct gw_conn *c);
    bool device_key; /* also open to the key of the path's device (rest-api.md) */
};

/* An error the gateway found before the hub decided the request's token. */
struct gw_held_error {
    int status, code;
    char msg[600];
};

static const char *method_name(enum gw_method m);
static bool hold_error(struct gw_conn *c, int status, int code, const char *msg);

/* ---- errors ------------------------------------------------------------------------------ */

/* The hub's name for an errorCode, plus the two twinhub uses for paths the hub lacks. */
static const char *code_name(int code)
{
    if (code == TH_EC_NOT_FOUND)
        return "NotFound";
    if (code == TH_EC_METHOD_NOT_ALLOWED)
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
    if (c->auth_pending && hold_error(c, status, code, msg))
        return;
    error_reply(c, status, code, NULL, msg);
}

/* Answer a control error entry {"error","status","errorCode"} as the hub would. */
static void error_from_entry(struct gw_conn *c, const cJSON *entry)
{
    int status = (int)th_json_number(entry, "status", 500);
    int code = (int)th_json_number(entry, "errorCode", TH_EC_SERVER_ERROR);
    if (status < 400 || status > 599)
        status = 500;
    gw_rest_error(c, status, code, "%s",
                  th_json_string(entry, "error", "the hub refused the request"));
}

static void respond_json(struct gw_conn *c, int status, const cJSON *item, const char *extra)
{
    char *text = item ? th_json_print(item) : NULL;
    if (item && !text) {
        gw_rest_error(c, 500, TH_EC_SERVER_ERROR, "out of memory");
        return;
    }
    gw_http_respond(c, status, extra, JSON_TYPE, text ? text : "", text ? strlen(text) : 0);
    free(text);
}

static void unreachable(struct gw_conn *c)
{
    c->auth_pending = false; /* nobody can decide the token: this is the answer */
    gw_rest_error(c, 503, TH_EC_SERVICE_UNAVAILABLE,
                  "the hub cannot be reached right now (the gateway's control connection is "
                  "down); try again");
}

/* ---- request helpers --------------------------------------------------------------------- */

/* The JSON body, an array (`array`) or an object; NULL after answering 400 (or when absent
 * and !required: *answered false). */
static cJSON *body_json(struct gw_conn *c, bool array, bool required, bool *answered)
{
    struct gw_buf *b = &c->req.body;
    const char *want = array ? "a JSON array" : "a JSON object";
    *answered = false;
    if (gw_buf_size(b) == 0) {
        if (required) {
            gw_rest_error(c, 400, TH_EC_ARGUMENT_NULL, "this request needs %s body", want);
            *answered = true;
        }
        return NULL;
    }
    cJSON *doc = NULL;
    struct th_error err = {0};
    if (th_json_parse((const char *)gw_buf_head(b), gw_buf_size(b), GW_MAX_BODY, 64, &doc, &err) !=
        TH_OK) {
        gw_rest_error(c, 400, TH_EC_IOTHUB_FORMAT_ERROR, "%s", err.message);
        *answered = true;
        return NULL;
    }
    if (array ? !cJSON_IsArray(doc) : !cJSON_IsObject(doc)) {
        cJSON_Delete(doc);
        gw_rest_error(c, 400, TH_EC_ARGUMENT_INVALID, "the request body must be %s", want);
        *answered = true;
        return NULL;
    }
    /* The control API's text would carry the string cut at the NUL: refused, as the hub's
     * core refuses it on every other path (json.h). */
    if (th_json_refuse_nul(doc, "the request body", &err) != TH_OK) {
        cJSON_Delete(doc);
        gw_rest_error(c, 400, TH_EC_ARGUMENT_INVALID, "%s", err.message);
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

/*
 * The request's credentials for the hub to decide (docs/control-api.md
 * "authorization"): the Authorization header as received, the rights the
 * route needs, the route as the operation refusals name, and on a device's
 * module registry that device. Nothing for open routes. False on
 * out-of-memory.
 */
static bool add_authorization(struct gw_conn *c, cJSON *cmd)
{
    const struct gw_route *rt = c->route;
    if (!rt || !rt->rights[0])
        return true;
    const struct gw_slice *h = gw_req_header(&c->req, "Authorization");
    char op[96];
    snprintf(op, sizeof op, "%s %s", method_name(rt->method), rt->pattern);
    cJSON *a = cJSON_AddObjectToObject(cmd, "authorization");
    cJSON *rights = a ? cJSON_AddArrayToObject(a, "rights") : NULL;
    bool ok = rights && cJSON_AddStringToObject(a, "operation", op) &&
              (!rt->device_key || cJSON_AddStringToObject(a, "moduleRegistryOf", c->ids[0]));
    for (int i = 0; ok && i < 2 && rt->rights[i]; i++) {
        cJSON *r = cJSON_CreateString(rt->rights[i]);
        ok = r && cJSON_AddItemToArray(rights, r);
    }
    if (ok && h && h->n) {
        char *token = strndup(h->p, h->n);
        ok = token && cJSON_AddStringToObject(a, "token", token);
        free(token);
    }
    return ok;
}

static void call(struct gw_conn *c, cJSON *cmd, double timeout_s, gw_done_fn done)
{
    if (cmd && !add_authorization(c, cmd)) {
        cJSON_Delete(cmd);
        gw_rest_error(c, 500, TH_EC_SERVER_ERROR, "out of memory");
        return;
    }
    if (!gw_ctl_call(c->gw, c, cmd, timeout_s, done))
        unreachable(c);
}

/* Send `cmd` when building it went well (`ok`); else free it and answer 500 (out of memory). */
static void call_built(struct gw_conn *c, bool ok, cJSON *cmd, double timeout_s, gw_done_fn done)
{
    if (!ok) {
        cJSON_Delete(cmd);
        gw_rest_error(c, 500, TH_EC_SERVER_ERROR, "out of memory");
        return;
    }
    call(c, cmd, timeout_s, done);
}

/* Common start of every answer handler: false when there is nobody to answer or it was an error. */
static bool answer_ok(struct gw_conn *c, const cJSON *entry)
{
    if (!c)
        return false;
    c->auth_pending = false; /* the hub decided the token with this command, or said why not */
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
void gw_rest_done_entity(struct th_gateway *gw, struct gw_conn *c, const cJSON *entry)
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
void gw_rest_done_data(struct th_gateway *gw, struct gw_conn *c, const cJSON *entry)
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
        gw_rest_error(c, 500, TH_EC_SERVER_ERROR, "the hub's method result could not be written");
    free(body);
    gw_http_resume(c);
}

void gw_rest_done_no_content(struct th_gateway *gw, struct gw_conn *c, const cJSON *entry)
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

void gw_rest_respond_page(struct gw_conn *c, const cJSON *data, const char *item_type)
{
    const char *cont = th_json_string(data, "continuation", NULL);
    char extra[512];
    int n = snprintf(extra, sizeof extra, "x-ms-item-type: %s\r\n", item_type);
    /* The SDKs take an absent header as "no more pages". */
    if (cont && strlen(cont) < 200)
        snprintf(extra + n, sizeof extra - (size_t)n, "x-ms-continuation: %s\r\n", cont);
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(data, "items");
    cJSON *empty = items ? NULL : cJSON_CreateArray();
    respond_json(c, 200, items ? items : empty, extra);
    cJSON_Delete(empty);
}

static void done_query(struct th_gateway *gw, struct gw_conn *c, const cJSON *entry)
{
    (void)gw;
    if (!answer_ok(c, entry))
        return;
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(entry, "data");
    gw_rest_respond_page(c, data, th_json_string(data, "itemType", "raw"));
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
        gw_rest_error(c, 500, TH_EC_SERVER_ERROR, "out of memory");
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
            gw_rest_error(c, 400, TH_EC_ARGUMENT_INVALID,
                          "top must be a whole number from 1 to 1000");
            return;
        }
        c->arg = v > 1000 ? 1000 : v;
    }
    cJSON *cmd = command(c, "listDevices", false);
    if (cmd && !cJSON_AddNumberToObject(cmd, "top", (double)c->arg)) {
        cJSON_Delete(cmd);
        cmd = NULL;
    }
    call(c, cmd, GW_CALL_TIMEOUT_S, done_list);
}

static void h_get_device(struct gw_conn *c)
{
    call(c, command(c, "getDevice", false), GW_CALL_TIMEOUT_S, gw_rest_done_entity);
}

static void h_get_module(struct gw_conn *c)
{
    call(c, command(c, "getDevice", true), GW_CALL_TIMEOUT_S, gw_rest_done_entity);
}

static void h_list_modules(struct gw_conn *c)
{
    call(c, command(c, "listModules", false), GW_CALL_TIMEOUT_S, gw_rest_done_data);
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
    call(c, cmd, GW_CALL_TIMEOUT_S, gw_rest_done_no_content);
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
    call(c, cmd, GW_CALL_TIMEOUT_S, gw_rest_done_no_content);
}

/* PUT /devices/{id} and /devices/{id}/modules/{mid}: create, or update with If-Match. */
static void put_identity(struct gw_conn *c, bool is_module)
{
    bool answered;
    cJSON *body = body_json(c, false, true, &answered);
    if (!body)
        return;
    const char *bd = th_json_string(body, "deviceId", NULL);
    const char *bm = th_json_string(body, "moduleId", NULL);
    if ((bd && strcmp(bd, c->ids[0])) || (is_module && bm && strcmp(bm, c->ids[1]))) {
        gw_rest_error(c, 400, TH_EC_ARGUMENT_INVALID,
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
    call_built(c, ok, cmd, GW_CALL_TIMEOUT_S, gw_rest_done_entity);
}

static void h_put_device(struct gw_conn *c)
{
    put_identity(c, false);
}

static void h_put_module(struct gw_conn *c)
{
    put_identity(c, true);
}

/* ---- handlers: CA certificates (the ARM resource's shapes, docs/rest-api.md) -------------- */

/* {"command": name, "name": the path's certificate name[, "ifMatch": If-Match]}. */
static cJSON *cert_command(struct gw_conn *c, const char *name)
{
    char buf[256];
    const char *etag = if_match(c, buf, sizeof buf);
    cJSON *cmd = cJSON_CreateObject();
    if (!cmd || !cJSON_AddStringToObject(cmd, "command", name) ||
        (c->ids[0][0] && !cJSON_AddStringToObject(cmd, "name", c->ids[0])) ||
        (etag && !cJSON_AddStringToObject(cmd, "ifMatch", etag))) {
        cJSON_Delete(cmd);
        return NULL;
    }
    return cmd;
}

static void h_list_certs(struct gw_conn *c)
{
    call(c, cert_command(c, "listCertificates"), GW_CALL_TIMEOUT_S, gw_rest_done_data);
}

static void h_get_cert(struct gw_conn *c)
{
    call(c, cert_command(c, "getCertificate"), GW_CALL_TIMEOUT_S, gw_rest_done_entity);
}

static void h_delete_cert(struct gw_conn *c)
{
    call(c, cert_command(c, "deleteCertificate"), GW_CALL_TIMEOUT_S, gw_rest_done_no_content);
}

static void h_code_cert(struct gw_conn *c)
{
    call(c, cert_command(c, "generateVerificationCode"), GW_CALL_TIMEOUT_S, gw_rest_done_entity);
}

/* PUT {"properties":{"certificate","isVerified"}}; POST .../verify {"certificate"}. */
static void cert_with_pem(struct gw_conn *c, const char *name, bool put)
{
    bool answered;
    cJSON *body = body_json(c, false, true, &answered);
    if (!body)
        return;
    const cJSON *props = put ? cJSON_GetObjectItemCaseSensitive(body, "properties") : body;
    const char *pem = th_json_string(props, "certificate", NULL);
    if (!pem) {
        gw_rest_error(c, 400, TH_EC_ARGUMENT_INVALID, "%s needs a PEM certificate",
                      put ? "properties.certificate" : "certificate");
        cJSON_Delete(body);
        return;
    }
    cJSON *cmd = cert_command(c, name);
    bool ok = cmd && cJSON_AddStringToObject(cmd, "certificate", pem) &&
              (!put || cJSON_AddBoolToObject(
                           cmd, "isVerified",
                           cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(props, "isVerified"))));
    cJSON_Delete(body);
    call_built(c, ok, cmd, GW_CALL_TIMEOUT_S, gw_rest_done_entity);
}

static void h_put_cert(struct gw_conn *c)
{
    cert_with_pem(c, "putCertificate", true);
}

static void h_verify_cert(struct gw_conn *c)
{
    cert_with_pem(c, "verifyCertificate", false);
}

/* ---- handlers: twins, methods, query, statistics, C2D ------------------------------------ */

static void h_get_twin(struct gw_conn *c)
{
    call(c, command(c, "getTwin", c->ids[1][0] != '\0'), GW_CALL_TIMEOUT_S, gw_rest_done_entity);
}

/*
 * PATCH (merge) or PUT (replace) /twins/{id}[/modules/{mid}]: tags and desired properties.
 * properties.reported goes along: the broker's core (th_twin_service_write) decides on it.
 */
static void write_twin(struct gw_conn *c, bool replace)
{
    bool answered;
    cJSON *body = body_json(c, false, true, &answered);
    if (!body)
        return;
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(body, "properties");
    char buf[256];
    const char *etag = if_match(c, buf, sizeof buf);
    cJSON *cmd = command(c, replace ? "replaceTwin" : "updateTwin", c->ids[1][0] != '\0');
    cJSON *patch = cmd ? cJSON_AddObjectToObject(cmd, "patch") : NULL;
    bool ok = patch && copy_member(patch, body, "tags") &&
              (!etag || cJSON_AddStringToObject(cmd, "etag", etag));
    if (ok && props) {
        cJSON *p = cJSON_AddObjectToObject(patch, "properties");
        ok = p && copy_member(p, props, "desired") && copy_member(p, props, "reported");
    }
    cJSON_Delete(body);
    call_built(c, ok, cmd, GW_CALL_TIMEOUT_S, gw_rest_done_entity);
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
    cJSON *body = body_json(c, false, true, &answered);
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
    cJSON *body = body_json(c, false, true, &answered);
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
            gw_rest_error(c, 400, TH_EC_ARGUMENT_INVALID,
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
        gw_rest_error(c, 413, TH_EC_MESSAGE_TOO_LARGE,
                      "message of %zu bytes exceeds the %d byte limit", n, TH_C2D_MAX_BYTES);
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
    call_built(c, ok, cmd, GW_CALL_TIMEOUT_S, gw_rest_done_data);
}

static void h_health(struct gw_conn *c)
{
    bool up = c->gw->ctl_up;
    const char *body = up ? "{\"status\":\"healthy\",\"broker\":\"up\",\"gateway\":\"up\"}"
                          : "{\"status\":\"unhealthy\",\"broker\":\"down\",\"gateway\":\"up\"}";
    gw_http_respond(c, up ? 200 : 503, "Cache-Control: no-store\r\n", JSON_TYPE, body,
                    strlen(body));
}

/* ---- for the other route files ------------------------------------------------------------ */

void gw_rest_call(struct gw_conn *c, cJSON *cmd, double timeout_s, gw_done_fn done)
{
    call_built(c, cmd != NULL, cmd, timeout_s, done);
}

cJSON *gw_rest_body(struct gw_conn *c, bool array)
{
    bool answered;
    return body_json(c, array, true, &answered);
}

bool gw_rest_answer_ok(struct gw_conn *c, const cJSON *entry)
{
    return answer_ok(c, entry);
}

void gw_rest_respond_json(struct gw_conn *c, int status, const cJSON *item, const char *extra)
{
    respond_json(c, status, item, extra);
}

const char *gw_rest_if_match(struct gw_conn *c, char *buf, size_t size)
{
    return if_match(c, buf, size);
}

/* ---- routes ------------------------------------------------------------------------------ */

#define RR "RegistryRead"
#define RW "RegistryWrite"
#define SC "ServiceConnect"

static const struct gw_route routes[] = {
    {GW_GET, "/health", {NULL}, false, h_health, SV},
    {GW_POST, "/devices/query", {SC, RR}, true, h_query, SV},
    {GW_GET, "/devices", {RR}, true, h_list_devices, SV},
    {GW_GET, "/devices/{}", {RR}, true, h_get_device, SV},
    {GW_PUT, "/devices/{}", {RW}, true, h_put_device, SV},
    {GW_DELETE, "/devices/{}", {RW}, true, h_delete_device, SV},
    {GW_GET, "/devices/{}/modules", {RR}, true, h_list_modules, DM},
    {GW_GET, "/devices/{}/modules/{}", {RR}, true, h_get_module, DM},
    {GW_PUT, "/devices/{}/modules/{}", {RW}, true, h_put_module, DM},
    {GW_DELETE, "/devices/{}/modules/{}", {RW}, true, h_delete_module, DM},
    {GW_GET, "/twins/{}", {SC, RR}, true, h_get_twin, SV},
    {GW_PATCH, "/twins/{}", {SC}, true, h_patch_twin, SV},
    {GW_PUT, "/twins/{}", {SC}, true, h_put_twin, SV},
    {GW_POST, "/twins/{}/methods", {SC}, true, h_invoke, SV},
    {GW_GET, "/twins/{}/modules/{}", {SC, RR}, true, h_get_twin, SV},
    {GW_PATCH, "/twins/{}/modules/{}", {SC}, true, h_patch_twin, SV},
    {GW_PUT, "/twins/{}/modules/{}", {SC}, true, h_put_twin, SV},
    {GW_POST, "/twins/{}/modules/{}/methods", {SC}, true, h_invoke, SV},
    {GW_GET, "/statistics/devices", {RR}, true, h_stats_devices, SV},
    {GW_GET, "/statistics/service", {SC}, true, h_stats_service, SV},
    {GW_POST, "/twinhub/devices/{}/messages", {SC}, false, h_c2d, SV},
    /* gw_fleet.c */
    {GW_POST, "/devices", {RW}, true, gw_fleet_bulk, SV},
    {GW_POST, "/configurations/testQueries", {RR}, true, gw_fleet_test_queries, SV},
    {GW_GET, "/configurations", {RR}, true, gw_fleet_list_configs, SV},
    {GW_GET, "/configurations/{}", {RR}, true, gw_fleet_get_config, SV},
    {GW_PUT, "/configurations/{}", {RW}, true, gw_fleet_put_config, SV},
    {GW_DELETE, "/configurations/{}", {RW}, true, gw_fleet_delete_config, SV},
    {GW_GET, "/certificates", {RR}, true, h_list_certs, SV},
    {GW_GET, "/certificates/{}", {RR}, true, h_get_cert, SV},
    {GW_PUT, "/certificates/{}", {RW}, true, h_put_cert, SV},
    {GW_DELETE, "/certificates/{}", {RW}, true, h_delete_cert, SV},
    {GW_POST, "/certificates/{}/generateVerificationCode", {RW}, true, h_code_cert, SV},
    {GW_POST, "/certificates/{}/verify", {RW}, true, h_verify_cert, SV},
    /* gw_jobs.c; the query route before /jobs/v2/{} */
    {GW_GET, "/jobs/v2/query", {RR, RW}, true, gw_jobs_query, SV},
    {GW_PUT, "/jobs/v2/{}", {RW}, true, gw_jobs_put, SV},
    {GW_GET, "/jobs/v2/{}", {RR, RW}, true, gw_jobs_get, SV},
    {GW_POST, "/jobs/v2/{}/cancel", {RW}, true, gw_jobs_cancel, SV},
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

/* ---- authentication: decided by the hub ---------------------------------------------------- */

/* The hub decided the token of a request with a held error: its refusal, or that error. */
static void done_held(struct th_gateway *gw, struct gw_conn *c, const cJSON *entry)
{
    (void)gw;
    if (!c)
        return; /* the connection closed: gw_rest_request_done freed the held error */
    struct gw_held_error *h = c->held;
    c->held = NULL;
    if (cJSON_GetObjectItemCaseSensitive(entry, "error") || !h)
        error_from_entry(c, entry);
    else
        error_reply(c, h->status, h->code, NULL, h->msg);
    free(h);
    gw_http_resume(c);
}

/*
 * An error the gateway finds itself (a bad body, a bad header) while the hub
 * has not yet decided the request's token is not answered yet: IoT Hub
 * authenticates first, so a caller without valid credentials gets 401, not
 * a hint about the request. The error waits while an `authorize` command
 * decides the token (done_held). True when it waits or was answered (503
 * when the hub cannot be asked); false on out-of-memory, when the caller
 * answers the error itself.
 */
static bool hold_error(struct gw_conn *c, int status, int code, const char *msg)
{
    c->auth_pending = false;
    struct gw_held_error *h = malloc(sizeof *h);
    cJSON *cmd = cJSON_CreateObject();
    if (!h || !cmd || !cJSON_AddStringToObject(cmd, "command", "authorize") ||
        !add_authorization(c, cmd)) {
        free(h);
        cJSON_Delete(cmd);
        return false; /* out of memory: answer the error itself */
    }
    h->status = status;
    h->code = code;
    snprintf(h->msg, sizeof h->msg, "%s", msg);
    free(c->held);
    c->held = h;
    if (!gw_ctl_call(c->gw, c, cmd, GW_CALL_TIMEOUT_S, done_held)) {
        gw_rest_request_done(c);
        unreachable(c);
    }
    return true;
}

void gw_rest_request_done(struct gw_conn *c)
{
    free(c->held);
    c->held = NULL;
}

static void run(struct gw_conn *c)
{
    /* The control API's JSON strings cannot carry a NUL byte, so such a header cannot reach the
     * hub as sent; it is no SAS token either. */
    const struct gw_slice *h = gw_req_header(&c->req, "Authorization");
    if (c->route->rights[0] && h && memchr(h->p, '\0', h->n)) {
        gw_rest_error(c, 401, TH_EC_IOTHUB_UNAUTHORIZED_ACCESS,
                      "the Authorization header is not a valid SAS token: it holds a NUL byte");
        return;
    }
    c->auth_pending = c->route->rights[0] != NULL;
    c->route->handler(c);
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
    c->auth_pending = false;
    if (gw_dps_dispatch(c)) /* the provisioning service's paths (gw_dps.c) */
        return;
    if (is_websocket_path(r->path)) {
        gw_ws_upgrade(c);
        return;
    }
    if (gw_dash_dispatch(c))
        return;
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
        error_reply(c, 405, TH_EC_METHOD_NOT_ALLOWED, extra, msg);
        return;
    }
    if (!rt) {
        gw_rest_error(c, 404, TH_EC_NOT_FOUND,
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
            gw_rest_error(c, 400, TH_EC_ARGUMENT_INVALID,
                          "the %s id in the path is not valid (percent-encoded, at most %d "
                          "characters)",
                          k ? "module" : "device", TH_MAX_ID_LEN);
            return;
        }
    }
    if (rt->azure) {
        char v[64];
        if (!gw_req_query(r, "api-version", v, sizeof v) || !v[0]) {
            gw_rest_error(c, 400, TH_EC_INVALID_PROTOCOL_VERSION,
                          "the api-version query parameter is required, e.g. "
                          "?api-version=2021-04-12");
            return;
        }
    }
    c->route = rt;
    run(c);
}
