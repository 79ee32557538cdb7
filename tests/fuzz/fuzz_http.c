/*
 * fuzz_http.c - libFuzzer target for the gateway's HTTP/1.1 request parser
 * (emulator/gateway/http_parse.c): the input is what a client sends on one
 * connection, read as gw_http.c reads it: th_http_head_find, then
 * th_http_head_parse on an exact-size copy of the head, then the body
 * (Content-Length, or th_http_chunked_decode), then the next pipelined
 * request. It checks that every slice lies inside the head, that a parsed
 * head keeps the parser's promises (limits, framing, trimmed header values,
 * lookups), that errors carry the status the gateway answers, and that a
 * chunked body decodes the same whole and one byte at a time.
 */
#define _GNU_SOURCE /* memmem */
#include <ctype.h>
#include <stdbool.h>

#include "fuzz_common.h"
#include "http_parse.h"

#define FUZZ_MAX_BODY 4096
#define FUZZ_MAX_REQUESTS 32

static bool inside(struct th_slice s, const char *buf, size_t size)
{
    return s.ptr == NULL || (s.ptr >= buf && s.ptr + s.len <= buf + size);
}

static bool has_byte(struct th_slice s, char c)
{
    return s.len && memchr(s.ptr, c, s.len) != NULL;
}

static void check_head(const struct th_http_head *h, const char *head, size_t n)
{
    FUZZ_CHECK(inside(h->method_text, head, n) && h->method_text.len > 0);
    FUZZ_CHECK(inside(h->target, head, n) && h->target.len > 0 && h->target.ptr[0] == '/');
    FUZZ_CHECK(inside(h->path, head, n) && h->path.ptr == h->target.ptr);
    FUZZ_CHECK(h->path.len <= h->target.len && !has_byte(h->path, '?'));
    FUZZ_CHECK(inside(h->query, h->target.ptr, h->target.len));
    FUZZ_CHECK(!has_byte(h->method_text, ' ') && !has_byte(h->target, ' '));
    FUZZ_CHECK(h->method == TH_HTTP_OTHER || h->method_text.len <= 6);
    FUZZ_CHECK(h->nheaders <= TH_HTTP_MAX_HEADERS);
    for (size_t i = 0; i < h->nheaders; i++) {
        struct th_slice name = h->headers[i].name, value = h->headers[i].value;
        FUZZ_CHECK(inside(name, head, n) && inside(value, head, n));
        FUZZ_CHECK(name.len > 0);
        for (size_t k = 0; k < name.len; k++) /* RFC 9110 tchar */
            FUZZ_CHECK(isalnum((unsigned char)name.ptr[k]) ||
                       (name.ptr[k] && strchr("!#$%&'*+-.^_`|~", name.ptr[k])));
        FUZZ_CHECK(!has_byte(name, '\r') && !has_byte(value, '\r'));
        if (value.len) {
            FUZZ_CHECK(value.ptr[0] != ' ' && value.ptr[0] != '\t');
            FUZZ_CHECK(value.ptr[value.len - 1] != ' ' && value.ptr[value.len - 1] != '\t');
        }
        /* The lookup finds a header of that name, at or before this one. */
        char *cname = fuzz_cstr((const uint8_t *)name.ptr, name.len);
        if (strlen(cname) == name.len) {
            const struct th_slice *found = th_http_header(h, cname);
            FUZZ_CHECK(found != NULL && found <= &h->headers[i].value);
        }
        free(cname);
        (void)th_http_has_token(&value, "chunked");
    }
    FUZZ_CHECK(h->content_length >= -1 && h->content_length <= FUZZ_MAX_BODY);
    FUZZ_CHECK(!(h->chunked && h->content_length >= 0));
    FUZZ_CHECK(!h->chunked || th_http_header(h, "Transfer-Encoding") != NULL);
    if (!h->http11 && !th_http_header(h, "Connection"))
        FUZZ_CHECK(!h->keep_alive);

    /* Query parameters: a value always fits and is terminated. */
    static const char *const names[] = {"api-version", "top", "", "a"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char buf[32];
        memset(buf, 'x', sizeof buf);
        if (th_http_query_param(h->query, names[i], buf, sizeof buf) == TH_OK)
            FUZZ_CHECK(memchr(buf, '\0', sizeof buf) != NULL);
    }
}

struct decoded {
    th_result r;
    bool done;
    size_t used;
    size_t len;
    char *body; /* FUZZ_MAX_BODY bytes */
};

/* Decode a chunked body from [in, in+len) in pieces of at most `piece` bytes (0: whole). */
static void decode(const char *in, size_t len, size_t piece, struct decoded *out)
{
    struct th_http_chunked d;
    th_http_chunked_init(&d, FUZZ_MAX_BODY);
    size_t off = 0, avail = 0;
    out->r = TH_OK;
    out->len = 0;
    while (off < len && !th_http_chunked_done(&d)) {
        if (avail == 0)
            avail = piece && len - off > piece ? piece : len - off;
        size_t used;
        struct th_slice data;
        struct th_error e = {0};
        out->r = th_http_chunked_decode(&d, in + off, avail, &used, &data, &e);
        if (out->r != TH_OK) {
            FUZZ_CHECK(e.status == 400 || e.status == 413);
            FUZZ_CHECK(!th_http_chunked_done(&d));
            break;
        }
        FUZZ_CHECK(used <= avail && (used > 0 || th_http_chunked_done(&d)));
        FUZZ_CHECK(inside(data, in + off, used));
        FUZZ_CHECK(out->len + data.len <= FUZZ_MAX_BODY);
        if (data.len)
            memcpy(out->body + out->len, data.ptr, data.len);
        out->len += data.len;
        off += used;
        avail -= used;
    }
    out->used = off;
    out->done = th_http_chunked_done(&d);
}

/* The chunked body at the front of [in, in+len); returns the bytes it took, or 0 to stop. */
static size_t chunked_body(const char *in, size_t len)
{
    struct decoded whole = {.body = malloc(FUZZ_MAX_BODY)};
    struct decoded bytes = {.body = malloc(FUZZ_MAX_BODY)};
    FUZZ_CHECK(whole.body && bytes.body);
    decode(in, len, 0, &whole);
    decode(in, len, 1, &bytes);
    FUZZ_CHECK(whole.r == bytes.r && whole.done == bytes.done);
    if (whole.r == TH_OK) {
        FUZZ_CHECK(whole.used == bytes.used && whole.len == bytes.len);
        FUZZ_CHECK(memcmp(whole.body, bytes.body, whole.len) == 0);
    }
    size_t took = whole.r == TH_OK && whole.done ? whole.used : 0;
    free(whole.body);
    free(bytes.body);
    return took;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *in = fuzz_bytes(data, size);
    size_t off = 0;
    for (int k = 0; k < FUZZ_MAX_REQUESTS && off < size; k++) {
        size_t skip, n;
        struct th_error e = {0};
        th_result r = th_http_head_find(in + off, size - off, &skip, &n, &e);
        FUZZ_CHECK(skip % 2 == 0 && skip <= size - off);
        for (size_t i = 0; i < skip; i += 2)
            FUZZ_CHECK(in[off + i] == '\r' && in[off + i + 1] == '\n');
        off += skip;
        if (r != TH_OK) {
            FUZZ_CHECK(r == TH_ERR_TOO_LARGE && e.status == 400 && e.code == 400004);
            FUZZ_CHECK(size - off >= TH_HTTP_MAX_HEAD);
            break;
        }
        if (n == 0) {
            size_t have = size - off;
            FUZZ_CHECK(have < TH_HTTP_MAX_HEAD);
            FUZZ_CHECK(!memmem(in + off, have, "\r\n\r\n", 4));
            break;
        }
        FUZZ_CHECK(n >= 4 && n <= TH_HTTP_MAX_HEAD && n <= size - off);
        FUZZ_CHECK(memcmp(in + off + n - 4, "\r\n\r\n", 4) == 0);
        FUZZ_CHECK(!memmem(in + off, n - 1, "\r\n\r\n", 4)); /* the first blank line ends it */

        char *head = fuzz_bytes((const uint8_t *)in + off, n);
        struct th_http_head *h = malloc(sizeof *h);
        FUZZ_CHECK(h != NULL);
        r = th_http_head_parse(head, n, FUZZ_MAX_BODY, h, &e);
        if (r == TH_OK) {
            check_head(h, head, n);
        } else {
            FUZZ_CHECK(r == TH_ERR_FORMAT || r == TH_ERR_TOO_LARGE);
            FUZZ_CHECK((e.status == 400 && e.code == 400004) ||
                       (r == TH_ERR_TOO_LARGE && e.status == 413 && e.code == 413001));
            FUZZ_CHECK(e.message[0] != '\0');
            FUZZ_CHECK(inside(h->method_text, head, n) && inside(h->target, head, n));
        }
        bool chunked = r == TH_OK && h->chunked;
        long long cl = r == TH_OK ? h->content_length : -1;
        free(h);
        free(head);
        if (r != TH_OK)
            break;
        off += n;
        if (chunked) {
            size_t took = chunked_body(in + off, size - off);
            if (!took)
                break;
            off += took;
        } else if (cl > 0) {
            if ((size_t)cl > size - off)
                break;
            off += (size_t)cl;
        }
    }
    free(in);
    return 0;
}
