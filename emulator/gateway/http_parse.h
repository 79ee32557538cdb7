/*
 * http_parse.h - the HTTP/1.1 request parser of the gateway (RFC 9112
 * subset): finding a request head in a connection's input, parsing its
 * request line and header fields, the framing of its body (Content-Length or
 * chunked), and decoding a chunked body. Pure code: no libwebsockets, no
 * logging, no allocation; every result is a slice of the caller's bytes. The
 * glue (gw_http.c) owns the buffers and answers the errors.
 *
 * Errors come back as TH_ERR_FORMAT (400, errorCode 400004) or
 * TH_ERR_TOO_LARGE (a head over TH_HTTP_MAX_HEAD: 400 400004; a body over
 * the caller's limit: 413 413001) in the th_error record, with a message the
 * gateway sends as is; after one, the connection cannot be trusted to be in
 * step and is closed.
 *
 * Decisions where the RFC lets a server choose:
 * - Blank lines (CRLF) before a request are skipped (RFC 9112 section 2.2).
 * - Only HTTP/1.1 and HTTP/1.0 are accepted; the target must be an origin
 *   form ("/..."); "#..." at its end is dropped from the path and query.
 * - Folded (obs-fold) header lines are refused, header names must be tokens,
 *   at most TH_HTTP_MAX_HEADERS lines. Names compare case-insensitively; a
 *   repeated header is kept twice and th_http_header finds the first.
 * - Content-Length: 1 to 12 digits; repeated with the same value is accepted,
 *   with different values refused. Transfer-Encoding must list "chunked" and
 *   comes without Content-Length (no other coding is decoded).
 * - A chunk size is 1*HEXDIG (RFC 9112 section 7.1); chunk extensions and
 *   trailer fields are read and ignored.
 */
#ifndef TH_HTTP_PARSE_H
#define TH_HTTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>

#include "slice.h"
#include "th_result.h"

#define TH_HTTP_MAX_HEAD 16384 /* request line + header lines + the blank line */
#define TH_HTTP_MAX_HEADERS 64

enum th_http_method {
    TH_HTTP_GET,
    TH_HTTP_PUT,
    TH_HTTP_POST,
    TH_HTTP_PATCH,
    TH_HTTP_DELETE,
    TH_HTTP_HEAD,
    TH_HTTP_OTHER, /* any other token: method_text has it */
};

struct th_http_header {
    struct th_slice name;  /* as sent */
    struct th_slice value; /* without leading and trailing blanks */
};

/* A parsed request head; every slice points into the bytes given to th_http_head_parse. */
struct th_http_head {
    enum th_http_method method;
    struct th_slice method_text;
    struct th_slice target; /* as sent: path, '?' query, '#' fragment */
    struct th_slice path;   /* target up to '?' or '#' */
    struct th_slice query;  /* after '?', up to '#'; ptr NULL when there is no '?' */
    bool http11;            /* HTTP/1.1 (else HTTP/1.0) */
    struct th_http_header headers[TH_HTTP_MAX_HEADERS];
    size_t nheaders;
    bool keep_alive;          /* HTTP/1.1 without "Connection: close", or 1.0 with keep-alive */
    bool chunked;             /* Transfer-Encoding: chunked */
    long long content_length; /* -1 when absent */
    bool expect_continue;     /* "Expect: 100-continue" */
};

/*
 * Find the next request head at the start of a connection's input
 * [in, in+len). *skip is set to the number of blank lines' bytes (CRLF pairs)
 * before it, which the caller drops in any case. Then:
 * - TH_OK with *head_len > 0: the head is [in+*skip, in+*skip+*head_len),
 *   up to and including its blank line;
 * - TH_OK with *head_len 0: more input is needed;
 * - TH_ERR_TOO_LARGE: TH_HTTP_MAX_HEAD bytes arrived without the blank line.
 */
TH_NODISCARD th_result th_http_head_find(const char *in, size_t len, size_t *skip, size_t *head_len,
                                         struct th_error *err);

/*
 * Parse a request head as th_http_head_find delimits it: [head, head+len)
 * ends with its first blank line. Fills *out (slices into head) and decides
 * the body's framing; a Content-Length above max_body is TH_ERR_TOO_LARGE
 * (413). After an error, out->method_text and out->target are set when the
 * request line was read (ptr NULL otherwise), the rest is unspecified.
 */
TH_NODISCARD th_result th_http_head_parse(const char *head, size_t len, size_t max_body,
                                          struct th_http_head *out, struct th_error *err);

/* The value of the first header named `name` (case-insensitive), or NULL. */
const struct th_slice *th_http_header(const struct th_http_head *h, const char *name);

/* Whether a comma-separated header value lists `token` (case-insensitive); false for NULL. */
bool th_http_has_token(const struct th_slice *value, const char *token);

/*
 * A query parameter: the first `name` (compared after percent-decoding,
 * case-sensitive) in `query` ("a=1&b=2"; ptr may be NULL), its value
 * percent-decoded ('+' is a space) into buf (NUL-terminated). A name without
 * '=' has the empty value. TH_ERR_NOT_FOUND when absent, TH_ERR_FORMAT when
 * the value's escapes are broken, TH_ERR_BUFFER when buf is too small.
 */
TH_NODISCARD th_result th_http_query_param(struct th_slice query, const char *name, char *buf,
                                           size_t size);

/* ---- chunked bodies (RFC 9112 section 7.1) ---- */

/* Decoder state; set up with th_http_chunked_init, nothing to free. */
struct th_http_chunked {
    int state;
    size_t left;     /* the chunk size being read, then its data bytes still to come */
    bool digits;     /* the size being read has a hex digit */
    size_t total;    /* body bytes so far */
    size_t max_body; /* more is TH_ERR_TOO_LARGE */
};

void th_http_chunked_init(struct th_http_chunked *d, size_t max_body);

/*
 * Decode the next part of a chunked body from [in, in+len). Reads framing
 * (sizes, extensions, CRLFs, trailers) until it reaches chunk data, the end
 * of the body or the end of the input, and returns at most one run of data
 * bytes in *data, a slice of `in` (len 0 when none). *used is how many input
 * bytes were consumed, data included; the caller calls again with the rest.
 * Once th_http_chunked_done, nothing more is consumed: what follows is the
 * next request. TH_ERR_FORMAT on a malformed body, TH_ERR_TOO_LARGE (413)
 * when the body would exceed max_body; the decoder then refuses every later
 * call and is never done.
 */
TH_NODISCARD th_result th_http_chunked_decode(struct th_http_chunked *d, const char *in, size_t len,
                                              size_t *used, struct th_slice *data,
                                              struct th_error *err);

/* Whether the last chunk and the trailer section have been read. */
bool th_http_chunked_done(const struct th_http_chunked *d);

#endif
