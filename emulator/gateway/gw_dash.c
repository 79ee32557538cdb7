/*
 * gw_dash.c - the web dashboard of `twinhub serve` (docs/dashboard.md), on
 * the gateway's HTTPS port: the page and its assets at / and /dashboard/
 * (built into the binary, dash_assets.c; Chart.js from Debian's
 * libjs-chart.js install path), a JSON API that forwards an allow-listed
 * control command (POST /dashboard/api/command), and the live event feed
 * (GET /dashboard/events, server-sent events) fed by the broker's event
 * stream ($twinhub/events/#, docs/control-api.md "Events").
 *
 * Access: a one-time random token per start (th_gateway_dashboard_token;
 * serve prints it on the `  Dashboard` line and writes dashboardUrl to the
 * info file). A request carries it as ?token= (then it gets a cookie and a
 * redirect to the same path without the token, as Jupyter does) or in the
 * cookie; anything else is refused with 403. The cookie is HttpOnly,
 * SameSite=Strict and named after the port (cookies do not tell ports
 * apart); state-changing requests must be application/json, which a
 * cross-site form cannot send. Commands run as the gateway's own policy,
 * so the token is as strong as the owner policy's key.
 *
 * The feed: the gateway subscribes to $twinhub/events/# only while a feed
 * is open, collects records for GW_DASH_FLUSH_MS and sends each feed one
 * message {"dropped": n, "events": [...]} per period, so that a browser
 * gets a handful of messages a second however fast devices send. A batch
 * holds at most GW_DASH_BATCH_MAX records and GW_DASH_BATCH_BYTES bytes,
 * and a feed that is GW_DASH_BACKLOG bytes behind gets none: what is left
 * out is counted in "dropped", never queued without bound. The security
 * module's telemetry ($twinhub/events/telemetry/+/azureiotsecurity) is
 * followed always, to keep each device's last security message's event
 * names for the security view.
 *
 * Everything runs on the gateway's service thread.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <mosquitto.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <uthash.h>

#include "gw_dash_assets.h"
#include "gw_private.h"
#include "journal.h"
#include "json.h"
#include "method.h"
#include "secconfig.h"
#include "th_file.h"
#include "util.h"

#define GW_DASH_FLUSH_MS 200
#define GW_DASH_MAX_FEEDS 32
#define GW_DASH_BATCH_MAX 2000              /* records per flush */
#define GW_DASH_BATCH_BYTES (4u << 20)      /* bytes of records per flush */
#define GW_DASH_BACKLOG (8u << 20)          /* a feed this far behind is skipped */
#define GW_DASH_KEEPALIVE_MS 15000          /* a comment line when nothing happens */
#define GW_DASH_MAX_SECURITY_DEVICES 100000 /* last security messages kept */
#define GW_DASH_CHARTJS_MAX (4u << 20)
#define EVENTS_ALL TH_JOURNAL_TOPIC_PREFIX "#"
#define EVENTS_SECURITY TH_JOURNAL_TOPIC_PREFIX "telemetry/+/" TH_SECCONFIG_MODULE_ID

#ifndef TH_DASH_CHARTJS
#define TH_DASH_CHARTJS "/usr/share/javascript/chart.js/chart.min.js"
#endif

#define JSON_TYPE "application/json; charset=utf-8"
/* Every dashboard answer: nothing cached, nothing loaded from anywhere but the hub. */
#define SECURITY_HEADERS                                                                           \
    "Cache-Control: no-store\r\n"                                                                  \
    "X-Content-Type-Options: nosniff\r\n"                                                          \
    "X-Frame-Options: DENY\r\n"                                                                    \
    "Referrer-Policy: no-referrer\r\n"                                                             \
    "Content-Security-Policy: default-src 'self'; img-src 'self' data:; "                          \
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'\r\n"

struct gw_dash_feed {
    struct gw_conn *conn;
    unsigned long dropped; /* records this feed missed since its last message */
};

/* A device's last security message: when, and how many events of each name. */
struct gw_dash_secmsg {
    char *device_id; /* malloc'd; the hash key */
    cJSON *summary;  /* {"time", "events": {name: count}, "eventCount"} */
    UT_hash_handle hh;
};

struct gw_dash {
    struct th_gateway *gw;
    char token[33];
    char cookie[48]; /* "twinhub-dashboard-<port>" */
    struct gw_dash_feed feeds[GW_DASH_MAX_FEEDS];
    int nfeeds;
    bool subscribed;
    struct gw_buf batch; /* records joined by ',' */
    size_t batch_count;
    unsigned long batch_dropped;
    uint64_t last_seq; /* of the last record taken, to drop the copy a second subscription brings */
    int64_t last_sent_ms;
    lws_sorted_usec_list_t sul;
    bool timer_on;
    struct gw_dash_secmsg *secmsgs;
    size_t nsecmsgs;
};

/* ---- life cycle -------------------------------------------------------------------------- */

struct gw_dash *gw_dash_new(struct th_gateway *gw, int port)
{
    struct gw_dash *d = calloc(1, sizeof *d);
    unsigned char rnd[16];
    if (!d || RAND_bytes(rnd, sizeof rnd) != 1) {
        free(d);
        return NULL;
    }
    for (int i = 0; i < 16; i++)
        snprintf(d->token + 2 * i, 3, "%02x", rnd[i]);
    snprintf(d->cookie, sizeof d->cookie, "twinhub-dashboard-%d", port);
    d->gw = gw;
    return d;
}

void gw_dash_stop(struct th_gateway *gw)
{
    if (gw->dash && gw->dash->timer_on) {
        lws_sul_cancel(&gw->dash->sul);
        gw->dash->timer_on = false;
    }
}

void gw_dash_free(struct gw_dash *d)
{
    if (!d)
        return;
    struct gw_dash_secmsg *m, *tmp;
    HASH_ITER(hh, d->secmsgs, m, tmp)
    {
        HASH_DEL(d->secmsgs, m);
        free(m->device_id);
        cJSON_Delete(m->summary);
        free(m);
    }
    gw_buf_free(&d->batch);
    OPENSSL_cleanse(d->token, sizeof d->token);
    free(d);
}

const char *th_gateway_dashboard_token(const struct th_gateway *gw)
{
    return gw && gw->dash ? gw->dash->token : NULL;
}

/* ---- subscriptions ----------------------------------------------------------------------- */

void gw_dash_connected(struct th_gateway *gw)
{
    struct gw_dash *d = gw->dash;
    if (!d || !gw->mosq)
        return;
    mosquitto_subscribe(gw->mosq, NULL, EVENTS_SECURITY, 0);
    d->subscribed = false;
    if (d->nfeeds > 0)
        d->subscribed = mosquitto_subscribe(gw->mosq, NULL, EVENTS_ALL, 0) == MOSQ_ERR_SUCCESS;
}

static void update_subscription(struct gw_dash *d)
{
    struct th_gateway *gw = d->gw;
    if (!gw->mosq || !gw->ctl_up)
        return; /* gw_dash_connected subscribes once the connection is (back) up */
    if (d->nfeeds > 0 && !d->subscribed)
        d->subscribed = mosquitto_subscribe(gw->mosq, NULL, EVENTS_ALL, 0) == MOSQ_ERR_SUCCESS;
    else if (d->nfeeds == 0 && d->subscribed) {
        mosquitto_unsubscribe(gw->mosq, NULL, EVENTS_ALL);
        d->subscribed = false;
        gw_buf_free(&d->batch);
        d->batch_count = 0;
        d->batch_dropped = 0;
    }
}

/* ---- the security module's last messages ------------------------------------------------- */

/*
 * {"time", "eventCount", "events": {name: count}} of a security message: the
 * agents send {"AgentVersion", "AgentId", "MessageSchemaVersion", "Events":
 * [{"EventType", "Category", "Name", ...}]} (Azure-IoT-Security-Agent-C
 * message_schema_consts.h; docs/dashboard.md). A body that is not such JSON
 * has eventCount 0. NULL when out of memory.
 */
static cJSON *security_summary(const struct th_journal_record *rec)
{
    const char *body = rec->as.telemetry.body;
    cJSON *doc = NULL, *o = cJSON_CreateObject();
    cJSON *names = o ? cJSON_AddObjectToObject(o, "events") : NULL;
    char when[TH_TIME_BUF];
    th_time_format(rec->time_us, when);
    bool ok = names && cJSON_AddStringToObject(o, "time", when);
    struct th_error err = {0};
    int count = 0;
    if (ok && body &&
        th_json_parse(body, strlen(body), TH_JSON_MAX_INPUT_BYTES, 32, &doc, &err) == TH_OK) {
        const cJSON *ev;
        cJSON_ArrayForEach(ev, cJSON_GetObjectItemCaseSensitive(doc, "Events"))
        {
            const char *name = th_json_string(ev, "Name", NULL);
            if (!name || !ok)
                continue;
            count++;
            cJSON *n = cJSON_GetObjectItemCaseSensitive(names, name);
            if (n)
                cJSON_SetNumberValue(n, n->valuedouble + 1);
            else
                ok = cJSON_AddNumberToObject(names, name, 1) != NULL;
        }
    }
    ok = ok && cJSON_AddNumberToObject(o, "eventCount", count);
    cJSON_Delete(doc);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static void keep_security_message(struct gw_dash *d, const char *text, size_t len)
{
    cJSON *json = NULL;
    struct th_journal_record rec;
    struct th_error err = {0};
    if (th_journal_parse_text(text, len, TH_JSON_MAX_INPUT_BYTES * 2, 64, &json, &rec, &err) !=
            TH_OK ||
        rec.kind != TH_JOURNAL_TELEMETRY || !rec.device_id || !rec.module_id ||
        strcmp(rec.module_id, TH_SECCONFIG_MODULE_ID)) {
        cJSON_Delete(json);
        return;
    }
    cJSON *summary = security_summary(&rec);
    struct gw_dash_secmsg *m = NULL;
    HASH_FIND_STR(d->secmsgs, rec.device_id, m);
    if (summary && !m && d->nsecmsgs < GW_DASH_MAX_SECURITY_DEVICES) {
        m = calloc(1, sizeof *m);
        if (m && !(m->device_id = strdup(rec.device_id))) {
            free(m);
            m = NULL;
        }
        if (m) {
            HASH_ADD_KEYPTR(hh, d->secmsgs, m->device_id, strlen(m->device_id), m);
            d->nsecmsgs++;
        }
    }
    if (m && summary) {
        cJSON_Delete(m->summary);
        m->summary = summary;
        summary = NULL;
    }
    cJSON_Delete(summary);
    cJSON_Delete(json);
}

/* ---- the feed ---------------------------------------------------------------------------- */

/* `seq` of a record as the journal prints it: {"seq":n,... ; 0 when it is not there. */
static uint64_t record_seq(const char *text, size_t len)
{
    static const char pre[] = "{\"seq\":";
    if (len < sizeof pre || memcmp(text, pre, sizeof pre - 1))
        return 0;
    return strtoull(text + sizeof pre - 1, NULL, 10);
}

void gw_dash_event(struct th_gateway *gw, const char *text, size_t len)
{
    struct gw_dash *d = gw->dash;
    if (!d)
        return;
    uint64_t seq = record_seq(text, len);
    /* Both subscriptions match the security module's telemetry: take one copy. */
    if (seq && seq <= d->last_seq && d->last_seq - seq < 1000000)
        return;
    if (seq)
        d->last_seq = seq;
    if (memmem(text, len, "\"moduleId\":\"" TH_SECCONFIG_MODULE_ID "\"",
               sizeof("\"moduleId\":\"" TH_SECCONFIG_MODULE_ID "\"") - 1) &&
        memmem(text, len, "\"kind\":\"telemetry\"", sizeof("\"kind\":\"telemetry\"") - 1))
        keep_security_message(d, text, len);
    if (d->nfeeds == 0)
        return;
    if (d->batch_count >= GW_DASH_BATCH_MAX ||
        gw_buf_size(&d->batch) + len + 1 > GW_DASH_BATCH_BYTES || memchr(text, '\n', len)) {
        d->batch_dropped++;
        return;
    }
    if ((d->batch_count && !gw_buf_put(&d->batch, ",", 1)) || !gw_buf_put(&d->batch, text, len)) {
        d->batch_dropped++;
        return;
    }
    d->batch_count++;
}

static void flush(lws_sorted_usec_list_t *sul)
{
    struct gw_dash *d = lws_container_of(sul, struct gw_dash, sul);
    d->timer_on = false;
    if (d->nfeeds == 0)
        return;
    int64_t now = th_mono_ms();
    bool events = d->batch_count > 0 || d->batch_dropped > 0;
    if (events || now - d->last_sent_ms >= GW_DASH_KEEPALIVE_MS) {
        for (int i = 0; i < d->nfeeds; i++) {
            struct gw_dash_feed *f = &d->feeds[i];
            struct gw_conn *c = f->conn;
            f->dropped += d->batch_dropped;
            if (gw_buf_size(&c->out) > GW_DASH_BACKLOG) {
                f->dropped += d->batch_count;
                continue;
            }
            bool ok = events ? gw_buf_putf(&c->out, "data: {\"dropped\":%lu,\"events\":[",
                                           f->dropped) &&
                                   gw_buf_put(&c->out, gw_buf_head(&d->batch),
                                              gw_buf_size(&d->batch)) &&
                                   gw_buf_put(&c->out, "]}\n\n", 4)
                             : gw_buf_put(&c->out, ": keep-alive\n\n", 14);
            if (ok && events)
                f->dropped = 0;
            gw_conn_want_write(c);
        }
        d->last_sent_ms = now;
        gw_buf_consume(&d->batch, gw_buf_size(&d->batch));
        d->batch_count = 0;
        d->batch_dropped = 0;
    }
    lws_sul_schedule(d->gw->ctx, 0, &d->sul, flush, GW_DASH_FLUSH_MS * LWS_US_PER_MS);
    d->timer_on = true;
}

static void open_feed(struct gw_conn *c)
{
    struct gw_dash *d = c->gw->dash;
    if (d->nfeeds == GW_DASH_MAX_FEEDS) {
        gw_http_respond(c, 503, SECURITY_HEADERS, "text/plain; charset=utf-8",
                        "too many open dashboards\n", 25);
        return;
    }
    if (!gw_buf_putf(&c->out,
                     "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n" SECURITY_HEADERS
                     "Connection: close\r\n\r\nretry: 2000\n\n")) {
        gw_http_respond(c, 503, SECURITY_HEADERS, NULL, NULL, 0);
        return;
    }
    d->feeds[d->nfeeds++] = (struct gw_dash_feed){c, 0};
    c->state = GW_C_STREAM;
    c->close_after = false;
    gw_log(c->gw, false, "dashboard | feed opened | peer=%s feeds=%d", c->peer, d->nfeeds);
    update_subscription(d);
    if (!d->timer_on) {
        d->last_sent_ms = th_mono_ms();
        lws_sul_schedule(c->gw->ctx, 0, &d->sul, flush, GW_DASH_FLUSH_MS * LWS_US_PER_MS);
        d->timer_on = true;
    }
    gw_conn_want_write(c);
}

void gw_dash_closed(struct gw_conn *c)
{
    struct gw_dash *d = c->gw ? c->gw->dash : NULL;
    if (!d || c->state != GW_C_STREAM)
        return;
    for (int i = 0; i < d->nfeeds; i++) {
        if (d->feeds[i].conn == c) {
            d->feeds[i] = d->feeds[--d->nfeeds];
            gw_log(c->gw, false, "dashboard | feed closed | peer=%s feeds=%d", c->peer, d->nfeeds);
            break;
        }
    }
    update_subscription(d);
}

/* ---- access ------------------------------------------------------------------------------ */

static bool token_equals(const struct gw_dash *d, const char *p, size_t n)
{
    return n == strlen(d->token) && CRYPTO_memcmp(p, d->token, n) == 0;
}

/* Whether the Cookie header holds <cookie>=<token>. */
static bool cookie_ok(const struct gw_dash *d, const struct gw_req *r)
{
    const struct gw_slice *h = gw_req_header(r, "Cookie");
    if (!h)
        return false;
    size_t cn = strlen(d->cookie);
    const char *p = h->p, *end = h->p + h->n;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == ';'))
            p++;
        const char *e = memchr(p, ';', (size_t)(end - p));
        if (!e)
            e = end;
        if ((size_t)(e - p) > cn && !memcmp(p, d->cookie, cn) && p[cn] == '=' &&
            token_equals(d, p + cn + 1, (size_t)(e - p) - cn - 1))
            return true;
        p = e;
    }
    return false;
}

static bool query_token_ok(const struct gw_dash *d, const struct gw_req *r)
{
    char v[64];
    return gw_req_query(r, "token", v, sizeof v) && token_equals(d, v, strlen(v));
}

static const char refused_text[] =
    "This is twinhub's dashboard. It needs the one-time token that `twinhub serve` prints on its\n"
    "`  Dashboard` line (and writes to the info file as dashboardUrl): open that URL.\n";

static void refuse(struct gw_conn *c)
{
    gw_log(c->gw, false, "dashboard | refused | %.*s without the token | peer=%s",
           (int)c->req.path.n, c->req.path.p, c->peer);
    gw_http_respond(c, 403, SECURITY_HEADERS, "text/plain; charset=utf-8", refused_text,
                    sizeof refused_text - 1);
}

/* ---- the API ----------------------------------------------------------------------------- */

/* The control commands the dashboard may send, as they are. */
static const char *const allowed[] = {
    "getTwin",      "updateTwin",   "replaceTwin",  "invokeMethod",
    "sendC2D",      "getDevice",    "listModules",  "createDevice",
    "updateDevice", "deleteDevice", "createModule", "deleteModule",
    "query",        "getStatistics", "listDeviceSummaries", "disconnect",
};

static void api_json(struct gw_conn *c, int status, const cJSON *body)
{
    char *text = body ? th_json_print(body) : NULL;
    if (!text) {
        static const char oom[] = "{\"error\":\"out of memory\",\"status\":500}";
        gw_http_respond(c, 500, SECURITY_HEADERS, JSON_TYPE, oom, sizeof oom - 1);
        return;
    }
    gw_http_respond(c, status, SECURITY_HEADERS, JSON_TYPE, text, strlen(text));
    free(text);
}

static void api_error(struct gw_conn *c, int status, const char *msg)
{
    cJSON *o = cJSON_CreateObject();
    if (o && (!cJSON_AddStringToObject(o, "error", msg) ||
              !cJSON_AddNumberToObject(o, "status", status))) {
        cJSON_Delete(o);
        o = NULL;
    }
    api_json(c, status, o);
    cJSON_Delete(o);
}

/* The hub's answer: {"data"} with 200, or {"error", "status", "errorCode"} with that status. */
static void done_command(struct th_gateway *gw, struct gw_conn *c, const cJSON *entry)
{
    (void)gw;
    if (!c)
        return;
    cJSON *out = cJSON_Duplicate(entry, true);
    int status = 200;
    if (out) {
        cJSON_DeleteItemFromObjectCaseSensitive(out, "correlationData");
        if (cJSON_GetObjectItemCaseSensitive(out, "error")) {
            status = (int)th_json_number(out, "status", 500);
            if (status < 400 || status > 599)
                status = 500;
        }
    }
    api_json(c, status, out);
    cJSON_Delete(out);
    gw_http_resume(c);
}

/* ensureSecurityModule: `twinhub security ensure` with its defaults (cli/security.c). */
static cJSON *ensure_security_command(void)
{
    cJSON *cmd = cJSON_CreateObject();
    cJSON *desired = cmd ? cJSON_AddObjectToObject(cmd, "desired") : NULL;
    cJSON *tags = cmd ? cJSON_AddObjectToObject(cmd, "tags") : NULL;
    cJSON *defaults = th_secconfig_defaults();
    bool ok = desired && tags && defaults && cJSON_AddStringToObject(cmd, "command", "ensureModule") &&
              cJSON_AddStringToObject(cmd, "moduleId", TH_SECCONFIG_MODULE_ID) &&
              cJSON_AddStringToObject(tags, "securityGroup", "default");
    if (ok) {
        ok = cJSON_AddItemToObject(desired, TH_SECCONFIG_OBJECT, defaults);
        defaults = ok ? NULL : defaults;
    }
    cJSON_Delete(defaults);
    if (!ok) {
        cJSON_Delete(cmd);
        return NULL;
    }
    return cmd;
}

static void api_command(struct gw_conn *c)
{
    const struct gw_slice *ct = gw_req_header(&c->req, "Content-Type");
    if (!ct || ct->n < 16 || strncasecmp(ct->p, "application/json", 16)) {
        api_error(c, 415, "send the command as Content-Type: application/json");
        return;
    }
    cJSON *cmd = NULL;
    struct th_error err = {0};
    struct gw_buf *b = &c->req.body;
    if (th_json_parse((const char *)gw_buf_head(b), gw_buf_size(b), GW_MAX_BODY, 64, &cmd, &err) !=
            TH_OK ||
        !cJSON_IsObject(cmd)) {
        cJSON_Delete(cmd);
        api_error(c, 400, err.message[0] ? err.message : "the body must be a JSON object");
        return;
    }
    const char *name = th_json_string(cmd, "command", "");
    double timeout = GW_CALL_TIMEOUT_S;
    if (!strcmp(name, "ensureSecurityModule")) {
        cJSON_Delete(cmd);
        cmd = ensure_security_command();
    } else {
        size_t i = 0;
        while (i < sizeof allowed / sizeof allowed[0] && strcmp(allowed[i], name))
            i++;
        if (i == sizeof allowed / sizeof allowed[0]) {
            char msg[200];
            snprintf(msg, sizeof msg, "the dashboard does not send '%.100s'", name);
            cJSON_Delete(cmd);
            api_error(c, 400, msg);
            return;
        }
        /* The gateway's own rights, never a caller's token; the answer matches by our id. */
        cJSON_DeleteItemFromObjectCaseSensitive(cmd, "authorization");
        cJSON_DeleteItemFromObjectCaseSensitive(cmd, "correlationData");
        if (!strcmp(name, "invokeMethod")) {
            double w = th_json_number(cmd, "responseTimeoutInSeconds",
                                      TH_METHOD_DEFAULT_TIMEOUT_S) +
                       th_json_number(cmd, "connectTimeoutInSeconds", 0);
            timeout = (w >= 0 && w <= 2 * TH_METHOD_MAX_TIMEOUT_S ? w
                                                                   : 2 * TH_METHOD_MAX_TIMEOUT_S) +
                      15;
        }
    }
    if (!cmd) {
        api_error(c, 500, "out of memory");
        return;
    }
    if (!gw_ctl_call(c->gw, c, cmd, timeout, done_command))
        api_error(c, 503, "the hub cannot be reached right now; try again");
}

/* {deviceId: {"time", "eventCount", "events"}} for ?deviceIds=a,b (percent-encoded), or all. */
static void api_security_messages(struct gw_conn *c)
{
    struct gw_dash *d = c->gw->dash;
    cJSON *out = cJSON_CreateObject();
    char *ids = malloc(GW_MAX_PIPELINED);
    bool ok = out && ids;
    if (ok && gw_req_query(&c->req, "deviceIds", ids, GW_MAX_PIPELINED)) {
        for (char *save = NULL, *id = strtok_r(ids, ",", &save); ok && id;
             id = strtok_r(NULL, ",", &save)) {
            struct gw_dash_secmsg *m = NULL;
            HASH_FIND_STR(d->secmsgs, id, m);
            if (m && m->summary && !cJSON_GetObjectItemCaseSensitive(out, id))
                ok = cJSON_AddItemToObject(out, id, cJSON_Duplicate(m->summary, true));
        }
    } else if (ok) {
        for (struct gw_dash_secmsg *m = d->secmsgs; ok && m; m = m->hh.next)
            if (m->summary)
                ok = cJSON_AddItemToObject(out, m->device_id, cJSON_Duplicate(m->summary, true));
    }
    free(ids);
    if (!ok) {
        cJSON_Delete(out);
        out = NULL;
    }
    api_json(c, 200, out);
    cJSON_Delete(out);
}

static void api_info(struct gw_conn *c)
{
    cJSON *o = cJSON_CreateObject();
    if (o && (!cJSON_AddStringToObject(o, "hubName", c->gw->hub_name) ||
              !cJSON_AddStringToObject(o, "gatewayHostName",
                                       c->gw->device_gateway ? c->gw->device_gateway : "") ||
              !cJSON_AddBoolToObject(o, "chartjs", access(TH_DASH_CHARTJS, R_OK) == 0))) {
        cJSON_Delete(o);
        o = NULL;
    }
    api_json(c, 200, o);
    cJSON_Delete(o);
}

/* ---- files ------------------------------------------------------------------------------- */

static void send_asset(struct gw_conn *c, const struct gw_dash_asset *a)
{
    gw_http_respond(c, 200, SECURITY_HEADERS, a->type, a->data, a->len);
}

static void send_chartjs(struct gw_conn *c)
{
    size_t len = 0;
    char *text = th_file_read(TH_DASH_CHARTJS, GW_DASH_CHARTJS_MAX, &len);
    if (!text) {
        static const char msg[] = "Chart.js is not installed: apt-get install libjs-chart.js\n";
        gw_http_respond(c, 404, SECURITY_HEADERS, "text/plain; charset=utf-8", msg,
                        sizeof msg - 1);
        return;
    }
    gw_http_respond(c, 200, SECURITY_HEADERS, "text/javascript; charset=utf-8", text, len);
    free(text);
}

static bool path_is(const struct gw_req *r, const char *lit)
{
    size_t n = strlen(lit);
    return r->path.n == n && !memcmp(r->path.p, lit, n);
}

/* ---- dispatch ---------------------------------------------------------------------------- */

bool gw_dash_dispatch(struct gw_conn *c)
{
    struct gw_dash *d = c->gw->dash;
    struct gw_req *r = &c->req;
    bool page = path_is(r, "/") || path_is(r, "/index.html");
    static const char pre[] = "/dashboard";
    bool under = r->path.n >= sizeof pre - 1 && !memcmp(r->path.p, pre, sizeof pre - 1) &&
                 (r->path.n == sizeof pre - 1 || r->path.p[sizeof pre - 1] == '/');
    if (!d || (!page && !under))
        return false;
    bool by_query = query_token_ok(d, r);
    if (!by_query && !cookie_ok(d, r)) {
        refuse(c);
        return true;
    }
    if (by_query) {
        /* As Jupyter does: the token becomes a cookie, and the address bar loses it. */
        char extra[512];
        snprintf(extra, sizeof extra,
                 "Set-Cookie: %s=%s; Path=/; HttpOnly; Secure; SameSite=Strict\r\n"
                 "Location: %.*s\r\n" SECURITY_HEADERS,
                 d->cookie, d->token, (int)r->path.n, r->path.p);
        gw_http_respond(c, 303, extra, NULL, NULL, 0);
        return true;
    }
    if (page || path_is(r, "/dashboard") || path_is(r, "/dashboard/")) {
        if (r->method != GW_GET && r->method != GW_HEAD_M) {
            api_error(c, 405, "use GET");
            return true;
        }
        const struct gw_dash_asset *a = gw_dash_asset_find("/index.html");
        if (a)
            send_asset(c, a);
        else
            api_error(c, 404, "no page");
        return true;
    }
    if (path_is(r, "/dashboard/api/command")) {
        if (r->method != GW_POST)
            api_error(c, 405, "use POST");
        else
            api_command(c);
        return true;
    }
    if (r->method != GW_GET) {
        api_error(c, 405, "use GET");
        return true;
    }
    if (path_is(r, "/dashboard/events"))
        open_feed(c);
    else if (path_is(r, "/dashboard/api/security-messages"))
        api_security_messages(c);
    else if (path_is(r, "/dashboard/api/info"))
        api_info(c);
    else if (path_is(r, "/dashboard/vendor/chart.min.js"))
        send_chartjs(c);
    else {
        char name[128];
        const struct gw_dash_asset *a = NULL;
        if (r->path.n - (sizeof pre - 1) < sizeof name) {
            snprintf(name, sizeof name, "%.*s", (int)(r->path.n - (sizeof pre - 1)),
                     r->path.p + sizeof pre - 1);
            a = gw_dash_asset_find(name);
        }
        if (a)
            send_asset(c, a);
        else
            api_error(c, 404, "no such dashboard file");
    }
    return true;
}
