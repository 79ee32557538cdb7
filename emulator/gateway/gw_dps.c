/*
 * gw_dps.c - the provisioning service over HTTPS, on the gateway's port
 * (docs/dps.md): the device registration API
 *   PUT /{idScope}/registrations/{registrationId}/register
 *   GET /{idScope}/registrations/{registrationId}/operations/{operationId}
 * and the service API (api-version 2021-10-01, the azure-iot-provisioning-service SDK's)
 *   GET|PUT|DELETE /enrollments/{id}, /enrollmentGroups/{id}; GET|DELETE /registrations/{id};
 *   POST /enrollments/query, /enrollmentGroups/query, /registrations/{groupId}/query.
 * Each request becomes one control command (control_dps.c); the broker
 * decides the tokens (the device's SAS for registrations, the service policy's
 * for the service API, as "dpsToken"). Errors are the service's JSON body
 * {"errorCode","trackingId","message","timestampUtc"} with Content-Type
 * application/json: the device SDK parses an error body only with that type
 * (sdk-facts-x509-dps-fleet.md, "DPS").
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dps_front.h"
#include "tls_rewrite.h"
#include "dps.h"
#include "gw_private.h"
#include "json.h"
#include "util.h"

#define JSON_TYPE "application/json; charset=utf-8"
#define MAX_SEG 6

static void dps_error(struct gw_conn *c, int status, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void dps_error(struct gw_conn *c, int status, int code, const char *fmt, ...)
{
    struct th_error err = {.code = code, .status = status};
    char track[48];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err.message, sizeof err.message, fmt, ap);
    va_end(ap);
    snprintf(track, sizeof track, "twinhub-gw-%llx", (unsigned long long)th_now_us());
    cJSON *o = th_dps_error_json(&err, track, th_now_us());
    char *text = o ? th_json_print(o) : NULL;
    gw_http_respond(c, status, NULL, JSON_TYPE, text ? text : "{}", text ? strlen(text) : 2);
    gw_log(c->gw, status >= 500 && status != 503, "dps | refused | status=%d %s", status,
           err.message);
    free(text);
    cJSON_Delete(o);
}

static void respond(struct gw_conn *c, int status, const cJSON *body, const char *extra)
{
    char *text = body ? th_json_print(body) : NULL;
    if (body && !text) {
        dps_error(c, 500, TH_DPS_EC_SERVER_ERROR, "out of memory");
        return;
    }
    gw_http_respond(c, status, extra, body ? JSON_TYPE : NULL, text, text ? strlen(text) : 0);
    free(text);
}

/* Common start of the answer handlers: false when nobody waits or the hub said no. */
static bool answered_ok(struct gw_conn *c, const cJSON *entry)
{
    if (!c) {
        return false;
    }
    if (cJSON_GetObjectItemCaseSensitive(entry, "error")) {
        int status = (int)th_json_number(entry, "status", 500);
        if (status < 400 || status > 599) {
            status = 500;
        }
        dps_error(c, status, (int)th_json_number(entry, "errorCode", TH_DPS_EC_SERVER_ERROR), "%s",
                  th_json_string(entry, "error", "the hub refused the request"));
        gw_http_resume(c);
        return false;
    }
    return true;
}

/* {"status": n, "body": {...}}: the registration answers. */
static void done_status_body(struct th_gateway *gw, struct gw_conn *c, const cJSON *entry)
{
    (void)gw;
    if (!answered_ok(c, entry)) {
        return;
    }
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(entry, "data");
    int status = (int)th_json_number(data, "status", 200);
    char extra[64] = "";
    if (status == 202) {
        snprintf(extra, sizeof extra, "Retry-After: %d\r\n", TH_DPS_RETRY_AFTER_S);
    }
    respond(c, status, cJSON_GetObjectItemCaseSensitive(data, "body"), extra);
    gw_http_resume(c);
}

static void done_doc(struct th_gateway *gw, struct gw_conn *c, const cJSON *entry)
{
    (void)gw;
    if (!answered_ok(c, entry)) {
        return;
    }
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(entry, "data");
    const char *etag = th_json_string(data, "etag", NULL);
    char extra[96] = "";
    if (etag && strlen(etag) < 64) {
        snprintf(extra, sizeof extra, "ETag: \"%s\"\r\n", etag);
    }
    respond(c, 200, data, extra);
    gw_http_resume(c);
}

static void done_deleted(struct th_gateway *gw, struct gw_conn *c, const cJSON *entry)
{
    (void)gw;
    if (!answered_ok(c, entry)) {
        return;
    }
    gw_http_respond(c, 204, NULL, NULL, NULL, 0);
    gw_http_resume(c);
}

static void done_query(struct th_gateway *gw, struct gw_conn *c, const cJSON *entry)
{
    (void)gw;
    if (!answered_ok(c, entry)) {
        return;
    }
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(entry, "data");
    const char *cont = th_json_string(data, "continuation", NULL);
    char extra[128] = "";
    if (cont && strlen(cont) < 64) {
        snprintf(extra, sizeof extra, "x-ms-continuation: %s\r\n", cont);
    }
    respond(c, 200, cJSON_GetObjectItemCaseSensitive(data, "items"), extra);
    gw_http_resume(c);
}

/* ---- requests ---- */

static char *header_dup(struct gw_conn *c, const char *name)
{
    const struct gw_slice *h = gw_req_header(&c->req, name);
    return h && h->n && !memchr(h->p, '\0', h->n) ? strndup(h->p, h->n) : NULL;
}

/* The body as JSON (NULL when empty); false after answering 400. */
static bool body_json(struct gw_conn *c, cJSON **out)
{
    struct gw_buf *b = &c->req.body;
    struct th_error err = {0};
    *out = NULL;
    if (gw_buf_size(b) == 0) {
        return true;
    }
    if (th_json_parse((const char *)gw_buf_head(b), gw_buf_size(b), GW_MAX_BODY, 64, out, &err) !=
        TH_OK) {
        dps_error(c, 400, TH_DPS_EC_BAD_REQUEST, "the body is not valid JSON: %s", err.message);
        return false;
    }
    return true;
}

static void send_cmd(struct gw_conn *c, cJSON *cmd, bool ok, gw_done_fn done)
{
    if (!ok) {
        cJSON_Delete(cmd);
        dps_error(c, 500, TH_DPS_EC_SERVER_ERROR, "out of memory");
        return;
    }
    if (!gw_ctl_call(c->gw, c, cmd, GW_CALL_TIMEOUT_S, done)) {
        dps_error(c, 503, TH_DPS_EC_SERVER_ERROR,
                  "the hub cannot be reached right now (the gateway's control connection is "
                  "down); try again");
    }
}

/* A command with the caller's Authorization as `token_key` ("token" or "dpsToken"). */
static cJSON *command(struct gw_conn *c, const char *name, const char *token_key)
{
    cJSON *cmd = cJSON_CreateObject();
    char *auth = header_dup(c, "Authorization");
    bool ok = cmd && cJSON_AddStringToObject(cmd, "command", name) &&
              (auth ? cJSON_AddStringToObject(cmd, token_key, auth) != NULL
                    : !strcmp(token_key, "token") || cJSON_AddNullToObject(cmd, token_key));
    free(auth);
    if (!ok) {
        cJSON_Delete(cmd);
        return NULL;
    }
    return cmd;
}

static void registration(struct gw_conn *c, const char ids[3][GW_ID_BUF], bool reg)
{
    cJSON *body = NULL;
    if (reg && !body_json(c, &body)) {
        return;
    }
    cJSON *cmd = command(c, reg ? "dpsRegister" : "dpsOperationStatus", "token");
    bool ok = cmd && cJSON_AddStringToObject(cmd, "idScope", ids[0]) &&
              cJSON_AddStringToObject(cmd, "registrationId", ids[1]);
    const char *bid = th_json_string(body, "registrationId", NULL);
    if (ok && bid && strcasecmp(bid, ids[1])) {
        cJSON_Delete(cmd);
        cJSON_Delete(body);
        dps_error(c, 400, TH_DPS_EC_BAD_REQUEST,
                  "the registrationId in the body ('%s') is not the one in the path ('%s')", bid,
                  ids[1]);
        return;
    }
    if (ok && reg) {
        const cJSON *pl = cJSON_GetObjectItemCaseSensitive(body, "payload");
        cJSON *dup = pl ? cJSON_Duplicate(pl, true) : NULL;
        ok = !pl || (dup && cJSON_AddItemToObject(cmd, "payload", dup));
        if (!ok) {
            cJSON_Delete(dup);
        }
    }
    if (ok && !reg) {
        ok = cJSON_AddStringToObject(cmd, "operationId", ids[2]) != NULL;
    }
    if (ok && !cJSON_GetObjectItemCaseSensitive(cmd, "token") && c->gw->has_front_secret) {
        /* No SAS token: the client certificate of this TLS connection, if any, goes to the
         * plugin in the front's credential, bound to this registration (core/dps_front.h). */
        char user[TH_DPS_ID_SCOPE_MAX + TH_MAX_ID_LEN + 32];
        char *cred = th_dps_https_cred_username(ids[0], ids[1], user, sizeof user) == TH_OK
                         ? th_tlsfront_cred(lws_get_ssl(c->wsi), c->gw->front_secret,
                                            TH_DPS_HTTPS_CRED_CLIENT_ID, user)
                         : NULL;
        ok = !cred || cJSON_AddStringToObject(cmd, "x509", cred) != NULL;
        free(cred);
    }
    cJSON_Delete(body);
    send_cmd(c, cmd, ok, done_status_body);
}

static void service(struct gw_conn *c, const char *collection, const char *id, const char *name,
                    gw_done_fn done)
{
    cJSON *body = NULL;
    if (c->req.method == GW_PUT || c->req.method == GW_POST) {
        if (!body_json(c, &body)) {
            return;
        }
        if (c->req.method == GW_PUT && !cJSON_IsObject(body)) {
            cJSON_Delete(body);
            dps_error(c, 400, TH_DPS_EC_BAD_REQUEST, "this request needs a JSON object body");
            return;
        }
    }
    cJSON *cmd = command(c, name, "dpsToken");
    char *etag = header_dup(c, "If-Match");
    bool ok = cmd && cJSON_AddStringToObject(cmd, "collection", collection);
    if (ok && id) {
        ok = cJSON_AddStringToObject(cmd, !strcmp(name, "dpsQuery") ? "groupId" : "id", id);
    }
    if (ok && etag) {
        /* "W/" and quotes are the caller's business: th_etag_matches compares without them. */
        ok = cJSON_AddStringToObject(cmd, "etag", etag) != NULL;
    }
    if (ok && body && c->req.method == GW_PUT) {
        ok = cJSON_AddItemToObject(cmd, "body", body);
        if (ok) {
            body = NULL;
        }
    } else if (ok && body) {
        ok = cJSON_AddItemToObject(cmd, "query", body);
        if (ok) {
            body = NULL;
        }
    }
    char buf[64];
    if (ok && gw_req_header(&c->req, "x-ms-max-item-count")) {
        const struct gw_slice *h = gw_req_header(&c->req, "x-ms-max-item-count");
        snprintf(buf, sizeof buf, "%.*s", (int)(h->n < 63 ? h->n : 63), h->p);
        long v = strtol(buf, NULL, 10);
        ok = cJSON_AddNumberToObject(cmd, "pageSize", v < 1 ? 1 : v > 1000 ? 1000 : v) != NULL;
    }
    char *cont = ok ? header_dup(c, "x-ms-continuation") : NULL;
    if (ok && cont) {
        ok = cJSON_AddStringToObject(cmd, "continuation", cont) != NULL;
    }
    free(cont);
    free(etag);
    cJSON_Delete(body);
    send_cmd(c, cmd, ok, done);
}

/* Split the path into at most MAX_SEG segments; -1 when more or empty ones. */
static int split(struct gw_slice path, struct gw_slice *seg)
{
    int n = 0;
    const char *p = path.p + 1, *end = path.p + path.n;
    if (path.n < 2)
        return 0;
    if (end[-1] == '/')
        end--;
    while (p < end) {
        const char *slash = memchr(p, '/', (size_t)(end - p));
        const char *e = slash ? slash : end;
        if (e == p || n == MAX_SEG)
            return -1;
        seg[n++] = (struct gw_slice){p, (size_t)(e - p)};
        p = e + 1;
    }
    return n;
}

static bool is(struct gw_slice s, const char *lit)
{
    return s.n == strlen(lit) && !memcmp(s.p, lit, s.n);
}

/* Percent-decode a path segment into buf; false (after answering 400) when invalid. */
static bool decode(struct gw_conn *c, struct gw_slice s, char *buf)
{
    size_t n;
    if (th_pct_decode(s.p, s.n, false, buf, GW_ID_BUF, &n) != TH_OK || n == 0 || strlen(buf) != n) {
        dps_error(c, 400, TH_DPS_EC_BAD_REQUEST,
                  "an id in the path is not valid (percent-encoded, at most %d characters)",
                  TH_MAX_ID_LEN);
        return false;
    }
    return true;
}

static void wrong_method(struct gw_conn *c, const char *allow)
{
    char extra[96];
    snprintf(extra, sizeof extra, "Allow: %s\r\n", allow);
    struct th_error err = {.code = 405000, .status = 405};
    snprintf(err.message, sizeof err.message, "use %s on this path", allow);
    cJSON *o = th_dps_error_json(&err, "twinhub-gw", th_now_us());
    char *text = o ? th_json_print(o) : NULL;
    gw_http_respond(c, 405, extra, JSON_TYPE, text ? text : "{}", text ? strlen(text) : 2);
    free(text);
    cJSON_Delete(o);
}

bool gw_dps_dispatch(struct gw_conn *c)
{
    struct gw_slice seg[MAX_SEG];
    struct gw_req *r = &c->req;
    char ids[3][GW_ID_BUF] = {"", "", ""};
    int n = split(r->path, seg);
    enum gw_method m = r->method;
    if (n < 2) {
        return false;
    }
    bool reg_put = n == 4 && is(seg[1], "registrations") && is(seg[3], "register");
    bool reg_get = n == 5 && is(seg[1], "registrations") && is(seg[3], "operations");
    bool enr = is(seg[0], "enrollments"), grp = is(seg[0], "enrollmentGroups");
    bool regs = is(seg[0], "registrations");
    if (!reg_put && !reg_get && !((enr || grp || regs) && n <= 3)) {
        return false;
    }
    c->auth_pending = false;
    char v[64];
    if (!gw_req_query(r, "api-version", v, sizeof v) || !v[0]) {
        dps_error(c, 400, TH_DPS_EC_BAD_REQUEST,
                  "the api-version query parameter is required, e.g. ?api-version=%s",
                  reg_put || reg_get ? "2019-03-31" : TH_DPS_SERVICE_API_VERSION);
        return true;
    }
    if (reg_put || reg_get) {
        if (!decode(c, seg[0], ids[0]) || !decode(c, seg[2], ids[1]) ||
            (reg_get && !decode(c, seg[4], ids[2]))) {
            return true;
        }
        if (reg_put && m != GW_PUT) {
            wrong_method(c, "PUT");
        } else if (reg_get && m != GW_GET) {
            wrong_method(c, "GET");
        } else {
            registration(c, (const char(*)[GW_ID_BUF])ids, reg_put);
        }
        return true;
    }
    const char *coll = enr ? "enrollments" : grp ? "enrollmentGroups" : "registrations";
    if (n == 2 && is(seg[1], "query") && !regs) {
        if (m != GW_POST) {
            wrong_method(c, "POST");
        } else {
            service(c, coll, NULL, "dpsQuery", done_query);
        }
        return true;
    }
    if (n == 3) {
        if (!regs || !is(seg[2], "query")) {
            return false;
        }
        if (!decode(c, seg[1], ids[0])) {
            return true;
        }
        if (m != GW_POST) {
            wrong_method(c, "POST");
        } else {
            service(c, coll, ids[0], "dpsQuery", done_query);
        }
        return true;
    }
    if (!decode(c, seg[1], ids[0])) {
        return true;
    }
    if (m == GW_GET) {
        service(c, coll, ids[0], "dpsGet", done_doc);
    } else if (m == GW_DELETE) {
        service(c, coll, ids[0], "dpsDelete", done_deleted);
    } else if (m == GW_PUT && !regs) {
        service(c, coll, ids[0], "dpsPut", done_doc);
    } else {
        wrong_method(c, regs ? "GET, DELETE" : "GET, PUT, DELETE");
    }
    return true;
}
