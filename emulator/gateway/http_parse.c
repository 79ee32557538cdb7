/*
 * http_parse.c - the gateway's HTTP/1.1 request parser (http_parse.h):
 * request heads, body framing, query parameters and the chunked decoder.
 * Pure: bytes in, slices out, no allocation.
 */
#define _GNU_SOURCE /* memmem */
#include "http_parse.h"

#include <ctype.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "util.h"

enum {
    CH_SIZE,         /* hex digits of the chunk size */
    CH_EXT,          /* after the size: extensions, up to CR */
    CH_SIZE_LF,      /* the LF that ends the size line */
    CH_DATA,         /* chunk data */
    CH_DATA_CR,      /* the CR after the data */
    CH_DATA_LF,      /* and its LF */
    CH_TRAILER,      /* at the start of a trailer line (or the final blank line) */
    CH_TRAILER_LF,   /* the LF of the final blank line */
    CH_TRAILER_LINE, /* inside a trailer line: skipped up to its LF */
    CH_DONE,
    CH_BAD /* after an error: every later call fails too */
};

static bool slice_ieq(struct th_slice s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len == n && strncasecmp(s.ptr, lit, n) == 0;
}

static struct th_slice slice(const char *p, size_t n)
{
    struct th_slice s = {p, n};
    return s;
}

/* RFC 9110 section 5.6.2: tchar. */
static bool is_tchar(char ch)
{
    return isalnum((unsigned char)ch) || (ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch));
}

static th_result malformed(struct th_error *err, const char *why)
{
    return th_error_set(err, TH_ERR_FORMAT, TH_EC_ARGUMENT_INVALID, "%s", why);
}

/* ---- heads ------------------------------------------------------------------------------- */

th_result th_http_head_find(const char *in, size_t len, size_t *skip, size_t *head_len,
                            struct th_error *err)
{
    size_t s = 0;
    while (len - s >= 2 && in[s] == '\r' && in[s + 1] == '\n')
        s += 2;
    *skip = s;
    *head_len = 0;
    size_t have = len - s;
    if (have == 0)
        return TH_OK;
    const char *e =
        memmem(in + s, have < TH_HTTP_MAX_HEAD ? have : TH_HTTP_MAX_HEAD, "\r\n\r\n", 4);
    if (e) {
        *head_len = (size_t)(e - (in + s)) + 4;
        return TH_OK;
    }
    if (have >= TH_HTTP_MAX_HEAD)
        return th_error_set(err, TH_ERR_TOO_LARGE, TH_EC_ARGUMENT_INVALID,
                            "request head larger than 16 KB");
    return TH_OK;
}

static th_result parse_request_line(const char *p, const char *eol, struct th_http_head *out,
                                    struct th_error *err)
{
    const char *sp1 = memchr(p, ' ', (size_t)(eol - p));
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
    if (eol[1] != '\n' || !sp1 || !sp2 || sp1 == p || sp2 == sp1 + 1)
        return malformed(err, "malformed HTTP request line");
    out->method_text = slice(p, (size_t)(sp1 - p));
    out->target = slice(sp1 + 1, (size_t)(sp2 - sp1 - 1));
    struct th_slice version = slice(sp2 + 1, (size_t)(eol - sp2 - 1));
    static const struct {
        const char *name;
        enum th_http_method m;
    } methods[] = {{"GET", TH_HTTP_GET},     {"PUT", TH_HTTP_PUT},       {"POST", TH_HTTP_POST},
                   {"PATCH", TH_HTTP_PATCH}, {"DELETE", TH_HTTP_DELETE}, {"HEAD", TH_HTTP_HEAD}};
    out->method = TH_HTTP_OTHER;
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if (th_slice_eq_str(out->method_text, methods[i].name))
            out->method = methods[i].m;
    if (th_slice_eq_str(version, "HTTP/1.1"))
        out->http11 = true;
    else if (!th_slice_eq_str(version, "HTTP/1.0"))
        return malformed(err, "only HTTP/1.1 and HTTP/1.0 are served here");
    if (out->target.ptr[0] != '/')
        return malformed(err, "the request target must be a path such as /devices/d1");
    const char *t = out->target.ptr, *q = memchr(t, '?', out->target.len);
    const char *hash = memchr(t, '#', out->target.len);
    const char *tend = hash ? hash : t + out->target.len;
    if (q && q < tend) {
        out->path = slice(t, (size_t)(q - t));
        out->query = slice(q + 1, (size_t)(tend - q - 1));
    } else {
        out->path = slice(t, (size_t)(tend - t));
    }
    return TH_OK;
}

/* Content-Length and Transfer-Encoding: how the body is delimited. */
static th_result parse_framing(struct th_http_head *out, size_t max_body, struct th_error *err)
{
    for (size_t i = 0; i < out->nheaders; i++) {
        if (!slice_ieq(out->headers[i].name, "Content-Length"))
            continue;
        struct th_slice v = out->headers[i].value;
        long long cl = 0;
        if (v.len == 0 || v.len > 12)
            return malformed(err, "bad Content-Length");
        for (size_t k = 0; k < v.len; k++) {
            if (!isdigit((unsigned char)v.ptr[k]))
                return malformed(err, "bad Content-Length");
            cl = cl * 10 + (v.ptr[k] - '0');
        }
        if (out->content_length >= 0 && out->content_length != cl)
            return malformed(err, "conflicting Content-Length headers");
        out->content_length = cl;
    }
    const struct th_slice *te = th_http_header(out, "Transfer-Encoding");
    if (te) {
        if (!th_http_has_token(te, "chunked") || out->content_length >= 0)
            return malformed(
                err, "only the chunked transfer coding is accepted, without Content-Length");
        out->chunked = true;
    }
    if (out->content_length >= 0 && (unsigned long long)out->content_length > max_body)
        return th_error_set(err, TH_ERR_TOO_LARGE, TH_EC_MESSAGE_TOO_LARGE,
                            "request body too large");
    const struct th_slice *conn = th_http_header(out, "Connection");
    out->keep_alive =
        out->http11 ? !th_http_has_token(conn, "close") : th_http_has_token(conn, "keep-alive");
    const struct th_slice *expect = th_http_header(out, "Expect");
    out->expect_continue = expect && slice_ieq(*expect, "100-continue");
    return TH_OK;
}

th_result th_http_head_parse(const char *head, size_t len, size_t max_body,
                             struct th_http_head *out, struct th_error *err)
{
    memset(out, 0, sizeof *out);
    out->content_length = -1;
    if (len < 4 || memcmp(head + len - 4, "\r\n\r\n", 4) != 0)
        return malformed(err, "malformed HTTP request head");
    const char *p = head, *end = head + len;

    /* request line: METHOD SP target SP HTTP/1.x CRLF (a CR exists: the head ends in one) */
    const char *eol = memchr(p, '\r', (size_t)(end - p));
    th_result r = parse_request_line(p, eol, out, err);
    if (r != TH_OK)
        return r;

    /* header lines, up to the blank line that ends the head */
    for (p = eol + 2;; p = eol + 2) {
        eol = memchr(p, '\r', (size_t)(end - p));
        if (!eol || eol + 1 >= end || eol[1] != '\n')
            return malformed(err, "malformed HTTP header line");
        if (eol == p) {
            if (eol + 2 != end)
                return malformed(err, "malformed HTTP request head");
            break;
        }
        if (*p == ' ' || *p == '\t')
            return malformed(err, "folded HTTP header lines are not accepted");
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        if (!colon || colon == p)
            return malformed(err, "malformed HTTP header line");
        for (const char *k = p; k < colon; k++)
            if (!is_tchar(*k))
                return malformed(err, "malformed HTTP header name");
        if (out->nheaders == TH_HTTP_MAX_HEADERS)
            return malformed(err, "more than 64 HTTP header lines");
        const char *v = colon + 1, *ve = eol;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        struct th_http_header *h = &out->headers[out->nheaders++];
        h->name = slice(p, (size_t)(colon - p));
        h->value = slice(v, (size_t)(ve - v));
    }
    return parse_framing(out, max_body, err);
}

const struct th_slice *th_http_header(const struct th_http_head *h, const char *name)
{
    for (size_t i = 0; i < h->nheaders; i++)
        if (slice_ieq(h->headers[i].name, name))
            return &h->headers[i].value;
    return NULL;
}

bool th_http_has_token(const struct th_slice *value, const char *token)
{
    if (!value || !value->ptr)
        return false;
    const char *p = value->ptr, *end = value->ptr + value->len;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
            p++;
        const char *q = p;
        while (q < end && *q != ',')
            q++;
        const char *e = q;
        while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if (slice_ieq(slice(p, (size_t)(e - p)), token))
            return true;
        p = q;
    }
    return false;
}

th_result th_http_query_param(struct th_slice query, const char *name, char *buf, size_t size)
{
    if (!query.ptr)
        return TH_ERR_NOT_FOUND; /* no '?' (and NULL + 0 is undefined) */
    const char *p = query.ptr, *end = query.ptr + query.len;
    size_t nlen = strlen(name);
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *e = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(e - p));
        const char *k_end = eq ? eq : e;
        char key[64];
        size_t klen;
        /* A key that does not decode (or is longer than any we look for) is skipped. */
        if (th_pct_decode(p, (size_t)(k_end - p), true, key, sizeof key, &klen) == TH_OK &&
            klen == nlen && !memcmp(key, name, nlen)) {
            const char *v = eq ? eq + 1 : e;
            size_t vlen;
            return th_pct_decode(v, (size_t)(e - v), true, buf, size, &vlen);
        }
        p = amp ? amp + 1 : end;
    }
    return TH_ERR_NOT_FOUND;
}

/* ---- chunked bodies ---------------------------------------------------------------------- */

void th_http_chunked_init(struct th_http_chunked *d, size_t max_body)
{
    memset(d, 0, sizeof *d);
    d->state = CH_SIZE;
    d->max_body = max_body;
}

bool th_http_chunked_done(const struct th_http_chunked *d)
{
    return d->state == CH_DONE;
}

static th_result too_large(struct th_error *err)
{
    return th_error_set(err, TH_ERR_TOO_LARGE, TH_EC_MESSAGE_TOO_LARGE, "request body too large");
}

th_result th_http_chunked_decode(struct th_http_chunked *d, const char *in, size_t len,
                                 size_t *used, struct th_slice *data, struct th_error *err)
{
    *data = slice(NULL, 0);
    *used = 0;
    if (d->state == CH_BAD)
        return malformed(err, "malformed chunked body");
    size_t i;
    for (i = 0; i < len && d->state != CH_DONE; i++) {
        char ch = in[i];
        bool bad = false;
        switch (d->state) {
        case CH_SIZE: {
            int h = th_hex_value(ch);
            if (h >= 0) {
                /* Checked before it grows, so it never overflows. */
                if (d->left > d->max_body || d->left > (SIZE_MAX - 15) / 16) {
                    d->state = CH_BAD;
                    *used = i;
                    return too_large(err);
                }
                d->left = d->left * 16 + (size_t)h;
                d->digits = true;
            } else if (!d->digits) {
                bad = true; /* an empty size is not the last chunk */
            } else if (ch == ';' || ch == ' ' || ch == '\t') {
                d->state = CH_EXT;
            } else if (ch == '\r') {
                d->state = CH_SIZE_LF;
            } else {
                bad = true;
            }
            break;
        }
        case CH_EXT:
            if (ch == '\r')
                d->state = CH_SIZE_LF;
            break;
        case CH_SIZE_LF:
            bad = ch != '\n';
            d->state = d->left ? CH_DATA : CH_TRAILER;
            break;
        case CH_DATA: {
            size_t take = len - i < d->left ? len - i : d->left;
            if (d->total + take > d->max_body) {
                d->state = CH_BAD;
                *used = i;
                return too_large(err);
            }
            *data = slice(in + i, take);
            d->total += take;
            d->left -= take;
            if (!d->left)
                d->state = CH_DATA_CR;
            *used = i + take;
            return TH_OK; /* one run of data per call */
        }
        case CH_DATA_CR:
            bad = ch != '\r';
            d->state = CH_DATA_LF;
            break;
        case CH_DATA_LF:
            bad = ch != '\n';
            d->state = CH_SIZE;
            d->digits = false;
            break;
        case CH_TRAILER:
            d->state = ch == '\r' ? CH_TRAILER_LF : CH_TRAILER_LINE;
            break;
        case CH_TRAILER_LF:
            bad = ch != '\n';
            d->state = CH_DONE;
            break;
        default: /* CH_TRAILER_LINE */
            if (ch == '\n')
                d->state = CH_TRAILER;
            break;
        }
        if (bad) {
            d->state = CH_BAD;
            *used = i;
            return malformed(err, "malformed chunked body");
        }
    }
    *used = i;
    return TH_OK;
}
