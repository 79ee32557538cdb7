/*
 * gw_http.c - HTTP/1.1 over the gateway's TLS connections (RFC 9112 subset):
 * request heads, Content-Length and chunked bodies, Expect: 100-continue,
 * keep-alive with one request at a time (pipelined input waits), responses
 * that may be queued long after the request (a direct method waits for its
 * device), and the one place that frees per-connection state (RAW_CLOSE).
 *
 * Parsing is http_parse.c's (pure, unit-tested and fuzzed); this file is
 * the glue that feeds it a connection's input, keeps the request and answers
 * its errors. Limits: a head of TH_HTTP_MAX_HEAD bytes and
 * TH_HTTP_MAX_HEADERS lines (400 above), a body of GW_MAX_BODY bytes (413
 * above); a connection gets GW_HEAD_TIMEOUT_S to send a request and is
 * closed after GW_IDLE_TIMEOUT_S without one.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gw_private.h"
#include "util.h"

static void process(struct gw_conn *c);

/* ---- small parsing helpers --------------------------------------------------------------- */

static bool slice_ieq(struct gw_slice s, const char *lit)
{
    size_t n = strlen(lit);
    return s.n == n && strncasecmp(s.p, lit, n) == 0;
}

const struct gw_slice *gw_req_header(const struct gw_req *r, const char *name)
{
    for (int i = 0; i < r->nheaders; i++)
        if (slice_ieq(r->headers[i].name, name))
            return &r->headers[i].value;
    return NULL;
}

bool gw_req_query(const struct gw_req *r, const char *name, char *buf, size_t size)
{
    return th_http_query_param(gw_slice_to_th(&r->query), name, buf, size) == TH_OK;
}

static void req_reset(struct gw_req *r)
{
    free(r->head);
    gw_buf_free(&r->body);
    memset(r, 0, sizeof *r);
    r->content_length = -1;
}

/* ---- responses --------------------------------------------------------------------------- */

static const char *reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 303:
        return "See Other";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 411:
        return "Length Required";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Payload Too Large";
    case 426:
        return "Upgrade Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

void gw_conn_want_write(struct gw_conn *c)
{
    if (c->wsi)
        lws_callback_on_writable(c->wsi);
}

void gw_http_respond(struct gw_conn *c, int status, const char *extra, const char *ctype,
                     const void *body, size_t len)
{
    struct gw_req *r = &c->req;
    bool keep = r->keep_alive && c->state != GW_C_CLOSING;
    bool ok = gw_buf_putf(&c->out, "HTTP/1.1 %d %s\r\n", status, reason(status));
    if (ok && status != 204 && status != 304)
        ok = gw_buf_putf(&c->out, "Content-Length: %zu\r\n", len);
    if (ok && ctype)
        ok = gw_buf_putf(&c->out, "Content-Type: %s\r\n", ctype);
    if (ok && extra)
        ok = gw_buf_put(&c->out, extra, strlen(extra));
    if (ok && !keep)
        ok = gw_buf_putf(&c->out, "Connection: close\r\n");
    ok = ok && gw_buf_put(&c->out, "\r\n", 2);
    if (ok && status != 204 && status != 304 && len)
        ok = gw_buf_put(&c->out, body, len);
    if (!ok) {
        keep = false; /* out of memory: the client sees the connection close */
        gw_buf_free(&c->out);
    }
    if (c->gw->verbose) {
        int64_t us = th_now_us() - r->start_us;
        gw_log(c->gw, false, "rest | %.*s %.*s | status=%d ms=%.1f peer=%s", (int)r->method_text.n,
               r->method_text.p ? r->method_text.p : "", (int)r->target.n,
               r->target.p ? r->target.p : "", status, (double)us / 1000.0, c->peer);
    }
    req_reset(r);
    c->route = NULL;
    if (keep) {
        c->state = GW_C_HEAD;
        if (c->wsi)
            lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, GW_IDLE_TIMEOUT_S);
    } else {
        c->state = GW_C_CLOSING;
        c->close_after = true;
    }
    gw_conn_want_write(c);
    if (c->rx_paused && c->wsi) {
        c->rx_paused = false;
        lws_rx_flow_control(c->wsi, 1);
    }
}

/* Answer a malformed request and close (the stream can no longer be trusted). */
static void reject(struct gw_conn *c, int status, int code, const char *why)
{
    c->req.keep_alive = false;
    gw_rest_error(c, status, code, "%s", why);
}

/* ---- request heads ----------------------------------------------------------------------- */

/* Answer a parser's error and close. */
static void reject_err(struct gw_conn *c, const struct th_error *e)
{
    reject(c, e->status, e->code, e->message);
}

/*
 * Take the head [src, src+n) (as th_http_head_find delimited it) into c->req:
 * a copy the slices point into, parsed by th_http_head_parse. Returns false
 * after answering the client.
 */
static bool parse_head(struct gw_conn *c, const char *src, size_t n)
{
    struct gw_req *r = &c->req;
    req_reset(r);
    r->start_us = th_now_us();
    r->head = malloc(n + 1);
    if (!r->head) {
        reject(c, 503, TH_EC_SERVICE_UNAVAILABLE, "out of memory");
        return false;
    }
    memcpy(r->head, src, n);
    r->head[n] = '\0';
    struct th_http_head h;
    struct th_error e = {0};
    if (th_http_head_parse(r->head, n, GW_MAX_BODY, &h, &e) != TH_OK) {
        /* For the log line: what the request line gave, when it was read. */
        r->method_text = gw_slice_from_th(h.method_text);
        r->target = gw_slice_from_th(h.target);
        reject_err(c, &e);
        return false;
    }
    r->method = (enum gw_method)h.method;
    r->method_text = gw_slice_from_th(h.method_text);
    r->target = gw_slice_from_th(h.target);
    r->path = gw_slice_from_th(h.path);
    r->query = gw_slice_from_th(h.query);
    r->http11 = h.http11;
    for (size_t i = 0; i < h.nheaders; i++)
        r->headers[i] = (struct gw_header){gw_slice_from_th(h.headers[i].name),
                                           gw_slice_from_th(h.headers[i].value)};
    r->nheaders = (int)h.nheaders;
    r->keep_alive = h.keep_alive;
    r->chunked = h.chunked;
    r->expect_continue = h.expect_continue;
    r->content_length = h.content_length;
    if (r->chunked)
        th_http_chunked_init(&r->chunk, GW_MAX_BODY);
    return true;
}

/* ---- bodies ------------------------------------------------------------------------------ */

/*
 * Move body bytes from c->in into the request. Returns 1 when the body is
 * complete, 0 when more input is needed, -1 after answering an error.
 */
static int take_body(struct gw_conn *c)
{
    struct gw_req *r = &c->req;
    if (!r->chunked) {
        size_t want = (size_t)r->content_length - gw_buf_size(&r->body);
        size_t have = gw_buf_size(&c->in);
        size_t n = have < want ? have : want;
        if (n && !gw_buf_put(&r->body, gw_buf_head(&c->in), n)) {
            reject(c, 503, TH_EC_SERVICE_UNAVAILABLE, "out of memory");
            return -1;
        }
        gw_buf_consume(&c->in, n);
        return gw_buf_size(&r->body) == (size_t)r->content_length;
    }
    while (gw_buf_size(&c->in) > 0 && !th_http_chunked_done(&r->chunk)) {
        size_t used;
        struct th_slice data;
        struct th_error e = {0};
        if (th_http_chunked_decode(&r->chunk, (const char *)gw_buf_head(&c->in),
                                   gw_buf_size(&c->in), &used, &data, &e) != TH_OK) {
            reject_err(c, &e);
            return -1;
        }
        if (data.len && !gw_buf_put(&r->body, data.ptr, data.len)) {
            reject(c, 503, TH_EC_SERVICE_UNAVAILABLE, "out of memory");
            return -1;
        }
        gw_buf_consume(&c->in, used);
    }
    return th_http_chunked_done(&r->chunk);
}

/* ---- the request loop -------------------------------------------------------------------- */

static void dispatch(struct gw_conn *c)
{
    c->state = GW_C_WAIT;
    if (c->wsi)
        lws_set_timeout(c->wsi, NO_PENDING_TIMEOUT, 0);
    gw_rest_dispatch(c);
}

/* Handle as much buffered input as the connection state allows. */
static void process(struct gw_conn *c)
{
    for (;;) {
        if (c->state == GW_C_HEAD) {
            size_t skip, n;
            struct th_error e = {0};
            th_result rc = th_http_head_find((const char *)gw_buf_head(&c->in), gw_buf_size(&c->in),
                                             &skip, &n, &e);
            gw_buf_consume(&c->in, skip); /* blank lines between requests */
            if (gw_buf_size(&c->in) == 0)
                return;
            if (c->wsi)
                lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, GW_HEAD_TIMEOUT_S);
            if (rc != TH_OK)
                reject_err(c, &e);
            if (rc != TH_OK || n == 0)
                return;
            bool ok = parse_head(c, (const char *)gw_buf_head(&c->in), n);
            gw_buf_consume(&c->in, n);
            if (!ok)
                return;
            struct gw_req *r = &c->req;
            if (r->chunked || r->content_length > 0) {
                if (r->expect_continue && gw_buf_size(&c->in) == 0) {
                    gw_buf_putf(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
                    gw_conn_want_write(c);
                }
                c->state = GW_C_BODY;
            } else {
                dispatch(c);
                continue;
            }
        }
        if (c->state == GW_C_BODY) {
            int done = take_body(c);
            if (done < 0)
                return;
            if (done == 0)
                return;
            dispatch(c);
            continue;
        }
        return; /* waiting for the hub, closing, or a WebSocket now */
    }
}

/* ---- the lws callback -------------------------------------------------------------------- */

static void on_rx(struct gw_conn *c, const uint8_t *p, size_t n)
{
    if (c->state == GW_C_WS) {
        gw_ws_rx(c, p, n);
        return;
    }
    if (c->state == GW_C_CLOSING || c->state == GW_C_STREAM)
        return;
    if (!gw_buf_put(&c->in, p, n)) {
        c->state = GW_C_CLOSING;
        c->close_after = true;
        gw_conn_want_write(c);
        return;
    }
    if (c->state == GW_C_WAIT) {
        /* A pipelined request waits for the current answer; do not read without bound. */
        if (gw_buf_size(&c->in) > GW_MAX_PIPELINED && !c->rx_paused) {
            c->rx_paused = true;
            lws_rx_flow_control(c->wsi, 0);
        }
        return;
    }
    process(c);
}

/* Hand up to GW_IO_CHUNK queued bytes to lws; -1 when the connection failed. */
static int write_some(struct gw_conn *c)
{
    size_t n = gw_buf_size(&c->out);
    if (n > GW_IO_CHUNK)
        n = GW_IO_CHUNK;
    if (lws_write(c->wsi, gw_buf_head(&c->out), n, LWS_WRITE_RAW) < 0)
        return -1;
    gw_buf_consume(&c->out, n);
    if (c->state == GW_C_WS)
        gw_ws_drained(c);
    if (gw_buf_size(&c->out) || c->close_after)
        lws_callback_on_writable(c->wsi);
    return 0;
}

static int on_writable(struct gw_conn *c)
{
    if (gw_buf_size(&c->out))
        return write_some(c);
    /* lws calls us only once its own partial writes are flushed: now it is safe to close. */
    return c->close_after ? -1 : 0;
}

void gw_conn_write_now(struct gw_conn *c)
{
    if (c->wsi && gw_buf_size(&c->out) && write_some(c) < 0)
        lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

static void on_close(struct gw_conn *c)
{
    struct th_gateway *gw = c->gw;
    if (!gw)
        return; /* closed before adoption completed */
    gw_ctl_forget(gw, c);
    gw_dash_closed(c);
    gw_rest_request_done(c);
    if (c->bridge)
        gw_ws_closed(c);
    req_reset(&c->req);
    gw_buf_free(&c->in);
    gw_buf_free(&c->out);
    c->wsi = NULL;
    c->gw = NULL;
}

int gw_http_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                     size_t len)
{
    struct gw_conn *c = user;
    switch (reason) {
    case LWS_CALLBACK_RAW_ADOPT:
        if (!c)
            return -1;
        memset(c, 0, sizeof *c);
        c->wsi = wsi;
        c->gw = lws_context_user(lws_get_context(wsi));
        c->state = GW_C_HEAD;
        c->req.content_length = -1;
        lws_get_peer_simple(wsi, c->peer, sizeof c->peer);
        return 0;
    case LWS_CALLBACK_RAW_RX:
        if (!c || !c->gw)
            return -1;
        on_rx(c, in, len);
        return 0;
    case LWS_CALLBACK_RAW_WRITEABLE:
        if (!c || !c->gw)
            return -1;
        return on_writable(c);
    case LWS_CALLBACK_RAW_CLOSE:
        if (c)
            on_close(c);
        return 0;
    default:
        return 0;
    }
}

void gw_http_resume(struct gw_conn *c)
{
    if (c->state == GW_C_HEAD && gw_buf_size(&c->in))
        process(c);
}
