/*
 * gw_http.c - HTTP/1.1 over the gateway's TLS connections (RFC 9112 subset):
 * request heads, Content-Length and chunked bodies, Expect: 100-continue,
 * keep-alive with one request at a time (pipelined input waits), responses
 * that may be queued long after the request (a direct method waits for its
 * device), and the one place that frees per-connection state (RAW_CLOSE).
 *
 * Limits: a head of GW_MAX_HEAD bytes and GW_MAX_HEADERS lines (400 above),
 * a body of GW_MAX_BODY bytes (413 above); a connection gets
 * GW_HEAD_TIMEOUT_S to send a request and is closed after
 * GW_IDLE_TIMEOUT_S without one.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gw_private.h"
#include "util.h"

enum {
    CH_SIZE,
    CH_EXT,
    CH_SIZE_LF,
    CH_DATA,
    CH_DATA_CR,
    CH_DATA_LF,
    CH_TRAILER,
    CH_TRAILER_LF,
    CH_DONE
};

static void process(struct gw_conn *c);

/* ---- small parsing helpers --------------------------------------------------------------- */

static bool slice_ieq(struct gw_slice s, const char *lit)
{
    size_t n = strlen(lit);
    return s.n == n && strncasecmp(s.p, lit, n) == 0;
}

/* Whether a comma-separated header value holds `token` (case-insensitive). */
static bool has_token(const struct gw_slice *v, const char *token)
{
    if (!v)
        return false;
    const char *p = v->p, *end = v->p + v->n;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
            p++;
        const char *q = p;
        while (q < end && *q != ',')
            q++;
        const char *e = q;
        while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        struct gw_slice t = {p, (size_t)(e - p)};
        if (slice_ieq(t, token))
            return true;
        p = q;
    }
    return false;
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
    const char *p = r->query.p, *end = r->query.p + r->query.n;
    size_t nlen = strlen(name);
    while (p && p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *e = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(e - p));
        const char *k_end = eq ? eq : e;
        char key[64];
        size_t klen;
        if (th_pct_decode(p, (size_t)(k_end - p), true, key, sizeof key, &klen) == TH_OK &&
            klen == nlen && !memcmp(key, name, nlen)) {
            const char *v = eq ? eq + 1 : e;
            size_t vlen;
            return th_pct_decode(v, (size_t)(e - v), true, buf, size, &vlen) == TH_OK;
        }
        p = amp ? amp + 1 : end;
    }
    return false;
}

static bool is_tchar(char ch)
{
    return isalnum((unsigned char)ch) || strchr("!#$%&'*+-.^_`|~", ch);
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
    case 204:
        return "No Content";
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

/*
 * Parse the head in [p, p+n) (ending with CRLFCRLF). Fills c->req. Returns
 * false after answering the client.
 */
static bool parse_head(struct gw_conn *c, const char *src, size_t n)
{
    struct gw_req *r = &c->req;
    req_reset(r);
    r->start_us = th_now_us();
    r->head = malloc(n + 1);
    if (!r->head) {
        reject(c, 503, 503001, "out of memory");
        return false;
    }
    memcpy(r->head, src, n);
    r->head[n] = '\0';
    char *p = r->head, *end = r->head + n;

    /* request line: METHOD SP target SP HTTP/1.x CRLF */
    char *eol = memchr(p, '\r', (size_t)(end - p));
    char *sp1 = memchr(p, ' ', (size_t)(eol - p));
    char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
    if (!eol || eol[1] != '\n' || !sp1 || !sp2 || sp1 == p || sp2 == sp1 + 1) {
        reject(c, 400, 400004, "malformed HTTP request line");
        return false;
    }
    r->method_text = (struct gw_slice){p, (size_t)(sp1 - p)};
    r->target = (struct gw_slice){sp1 + 1, (size_t)(sp2 - sp1 - 1)};
    struct gw_slice version = {sp2 + 1, (size_t)(eol - sp2 - 1)};
    static const struct {
        const char *name;
        enum gw_method m;
    } methods[] = {{"GET", GW_GET},     {"PUT", GW_PUT},       {"POST", GW_POST},
                   {"PATCH", GW_PATCH}, {"DELETE", GW_DELETE}, {"HEAD", GW_HEAD_M}};
    r->method = GW_OTHER;
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if (r->method_text.n == strlen(methods[i].name) &&
            !memcmp(r->method_text.p, methods[i].name, r->method_text.n))
            r->method = methods[i].m;
    if (version.n == 8 && !memcmp(version.p, "HTTP/1.1", 8)) {
        r->http11 = true;
    } else if (!(version.n == 8 && !memcmp(version.p, "HTTP/1.0", 8))) {
        reject(c, 400, 400004, "only HTTP/1.1 and HTTP/1.0 are served here");
        return false;
    }
    if (r->target.p[0] != '/') {
        reject(c, 400, 400004, "the request target must be a path such as /devices/d1");
        return false;
    }
    const char *q = memchr(r->target.p, '?', r->target.n);
    const char *hash = memchr(r->target.p, '#', r->target.n);
    const char *tend = hash ? hash : r->target.p + r->target.n;
    if (q && q < tend) {
        r->path = (struct gw_slice){r->target.p, (size_t)(q - r->target.p)};
        r->query = (struct gw_slice){q + 1, (size_t)(tend - q - 1)};
    } else {
        r->path = (struct gw_slice){r->target.p, (size_t)(tend - r->target.p)};
    }

    /* header lines */
    p = eol + 2;
    while (p < end) {
        eol = memchr(p, '\r', (size_t)(end - p));
        if (!eol || eol + 1 >= end || eol[1] != '\n') {
            reject(c, 400, 400004, "malformed HTTP header line");
            return false;
        }
        if (eol == p)
            break; /* the empty line */
        if (*p == ' ' || *p == '\t') {
            reject(c, 400, 400004, "folded HTTP header lines are not accepted");
            return false;
        }
        char *colon = memchr(p, ':', (size_t)(eol - p));
        if (!colon || colon == p) {
            reject(c, 400, 400004, "malformed HTTP header line");
            return false;
        }
        for (char *k = p; k < colon; k++) {
            if (!is_tchar(*k)) {
                reject(c, 400, 400004, "malformed HTTP header name");
                return false;
            }
        }
        if (r->nheaders == GW_MAX_HEADERS) {
            reject(c, 400, 400004, "more than 64 HTTP header lines");
            return false;
        }
        char *v = colon + 1, *ve = eol;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        r->headers[r->nheaders++] =
            (struct gw_header){{p, (size_t)(colon - p)}, {v, (size_t)(ve - v)}};
        p = eol + 2;
    }

    /* framing */
    const struct gw_slice *te = gw_req_header(r, "Transfer-Encoding");
    for (int i = 0; i < r->nheaders; i++) {
        if (!slice_ieq(r->headers[i].name, "Content-Length"))
            continue;
        const struct gw_slice *v = &r->headers[i].value;
        long long cl = 0;
        if (v->n == 0 || v->n > 12) {
            reject(c, 400, 400004, "bad Content-Length");
            return false;
        }
        for (size_t k = 0; k < v->n; k++) {
            if (!isdigit((unsigned char)v->p[k])) {
                reject(c, 400, 400004, "bad Content-Length");
                return false;
            }
            cl = cl * 10 + (v->p[k] - '0');
        }
        if (r->content_length >= 0 && r->content_length != cl) {
            reject(c, 400, 400004, "conflicting Content-Length headers");
            return false;
        }
        r->content_length = cl;
    }
    if (te) {
        if (!has_token(te, "chunked") || r->content_length >= 0) {
            reject(c, 400, 400004,
                   "only the chunked transfer coding is accepted, without Content-Length");
            return false;
        }
        r->chunked = true;
    }
    if (r->content_length > GW_MAX_BODY) {
        reject(c, 413, 413001, "request body too large");
        return false;
    }
    const struct gw_slice *conn_hdr = gw_req_header(r, "Connection");
    r->keep_alive = r->http11 ? !has_token(conn_hdr, "close") : has_token(conn_hdr, "keep-alive");
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
            reject(c, 503, 503001, "out of memory");
            return -1;
        }
        gw_buf_consume(&c->in, n);
        return gw_buf_size(&r->body) == (size_t)r->content_length;
    }
    while (gw_buf_size(&c->in) > 0 && r->chunk_state != CH_DONE) {
        const char *p = (const char *)gw_buf_head(&c->in);
        size_t avail = gw_buf_size(&c->in), used = 1;
        char ch = p[0];
        switch (r->chunk_state) {
        case CH_SIZE: {
            int h = th_hex_value(ch);
            if (h >= 0) {
                if (r->chunk_left > GW_MAX_BODY) {
                    reject(c, 413, 413001, "request body too large");
                    return -1;
                }
                r->chunk_left = r->chunk_left * 16 + (size_t)h;
            } else if (ch == ';' || ch == ' ' || ch == '\t') {
                r->chunk_state = CH_EXT;
            } else if (ch == '\r') {
                r->chunk_state = CH_SIZE_LF;
            } else {
                reject(c, 400, 400004, "malformed chunked body");
                return -1;
            }
            break;
        }
        case CH_EXT:
            if (ch == '\r')
                r->chunk_state = CH_SIZE_LF;
            break;
        case CH_SIZE_LF:
            if (ch != '\n') {
                reject(c, 400, 400004, "malformed chunked body");
                return -1;
            }
            r->chunk_state = r->chunk_left ? CH_DATA : CH_TRAILER;
            break;
        case CH_DATA:
            used = avail < r->chunk_left ? avail : r->chunk_left;
            if (gw_buf_size(&r->body) + used > GW_MAX_BODY) {
                reject(c, 413, 413001, "request body too large");
                return -1;
            }
            if (!gw_buf_put(&r->body, p, used)) {
                reject(c, 503, 503001, "out of memory");
                return -1;
            }
            r->chunk_left -= used;
            if (!r->chunk_left)
                r->chunk_state = CH_DATA_CR;
            break;
        case CH_DATA_CR:
            if (ch != '\r') {
                reject(c, 400, 400004, "malformed chunked body");
                return -1;
            }
            r->chunk_state = CH_DATA_LF;
            break;
        case CH_DATA_LF:
            if (ch != '\n') {
                reject(c, 400, 400004, "malformed chunked body");
                return -1;
            }
            r->chunk_state = CH_SIZE;
            break;
        case CH_TRAILER: /* trailer lines are skipped; an empty line ends the body */
            r->chunk_state = ch == '\r' ? CH_TRAILER_LF : CH_TRAILER + 100;
            break;
        case CH_TRAILER_LF:
            if (ch != '\n') {
                reject(c, 400, 400004, "malformed chunked body");
                return -1;
            }
            r->chunk_state = CH_DONE;
            break;
        default: /* inside a trailer line: skip to its end */
            if (ch == '\n')
                r->chunk_state = CH_TRAILER;
            break;
        }
        gw_buf_consume(&c->in, used);
    }
    return r->chunk_state == CH_DONE;
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
            /* Tolerate blank lines between requests (RFC 9112 section 2.2). */
            while (gw_buf_size(&c->in) >= 2 && !memcmp(gw_buf_head(&c->in), "\r\n", 2))
                gw_buf_consume(&c->in, 2);
            size_t have = gw_buf_size(&c->in);
            if (have == 0)
                return;
            const char *p = (const char *)gw_buf_head(&c->in);
            const char *e = memmem(p, have < GW_MAX_HEAD ? have : GW_MAX_HEAD, "\r\n\r\n", 4);
            if (c->wsi)
                lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, GW_HEAD_TIMEOUT_S);
            if (!e) {
                if (have >= GW_MAX_HEAD)
                    reject(c, 400, 400004, "request head larger than 16 KB");
                return;
            }
            size_t n = (size_t)(e - p) + 4;
            bool ok = parse_head(c, p, n);
            gw_buf_consume(&c->in, n);
            if (!ok)
                return;
            struct gw_req *r = &c->req;
            if (r->chunked || r->content_length > 0) {
                const struct gw_slice *expect = gw_req_header(r, "Expect");
                if (expect && slice_ieq(*expect, "100-continue") && gw_buf_size(&c->in) == 0) {
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
    if (c->state == GW_C_CLOSING)
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
