/*
 * test_http_parse.c - unit tests for emulator/gateway/http_parse.c, the
 * gateway's HTTP/1.1 request parser: finding heads in a connection's input
 * (blank lines, pipelining, incomplete input, the 16 KB limit), request
 * lines, header fields (limits, folding, duplicates, case), body framing
 * (Content-Length, chunked, Expect), query parameters and the chunked
 * decoder (sizes, extensions, trailers, limits, input in pieces).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http_parse.h"

#define MAX_BODY 1000

static th_result parse(const char *head, struct th_http_head *h, struct th_error *e)
{
    return th_http_head_parse(head, strlen(head), MAX_BODY, h, e);
}

/* Parse `head` and expect a 400 (errorCode 400004) whose message contains `why`. */
static void assert_refused(const char *head, const char *why)
{
    struct th_http_head h;
    struct th_error e = {0};
    assert_int_equal(parse(head, &h, &e), TH_ERR_FORMAT);
    assert_int_equal(e.status, 400);
    assert_int_equal(e.code, 400004);
    assert_non_null(strstr(e.message, why));
}

static void assert_slice(struct th_slice s, const char *want)
{
    assert_non_null(s.ptr);
    assert_int_equal(s.len, strlen(want));
    assert_memory_equal(s.ptr, want, s.len);
}

/* ---- th_http_head_find ---- */

static void test_th_http_head_find_complete_head_succeeds(void **state)
{
    (void)state;
    const char *in = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n{}";
    size_t skip, n;
    assert_int_equal(th_http_head_find(in, strlen(in), &skip, &n, NULL), TH_OK);
    assert_int_equal(skip, 0);
    assert_int_equal(n, strlen(in) - 2);
}

static void test_th_http_head_find_blank_lines_before_succeeds(void **state)
{
    (void)state;
    const char *in = "\r\n\r\nGET / HTTP/1.1\r\n\r\n";
    size_t skip, n;
    assert_int_equal(th_http_head_find(in, strlen(in), &skip, &n, NULL), TH_OK);
    assert_int_equal(skip, 4);
    assert_int_equal(n, strlen(in) - 4);
}

static void test_th_http_head_find_only_blank_lines_succeeds(void **state)
{
    (void)state;
    /* The blank lines are dropped; a lone CR waits for its LF. */
    const char *in = "\r\n\r\n\r";
    size_t skip, n;
    assert_int_equal(th_http_head_find(in, strlen(in), &skip, &n, NULL), TH_OK);
    assert_int_equal(skip, 4);
    assert_int_equal(n, 0);
}

static void test_th_http_head_find_incomplete_succeeds(void **state)
{
    (void)state;
    const char *in = "GET / HTTP/1.1\r\nHost: x\r\n\r";
    size_t skip, n;
    assert_int_equal(th_http_head_find(in, strlen(in), &skip, &n, NULL), TH_OK);
    assert_int_equal(skip, 0);
    assert_int_equal(n, 0);
    assert_int_equal(th_http_head_find("", 0, &skip, &n, NULL), TH_OK);
    assert_int_equal(skip + n, 0);
}

static void test_th_http_head_find_pipelined_succeeds(void **state)
{
    (void)state;
    const char *in = "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\nConnection: close\r\n\r\n";
    size_t skip, n, len = strlen(in);
    assert_int_equal(th_http_head_find(in, len, &skip, &n, NULL), TH_OK);
    assert_int_equal(n, strlen("GET /a HTTP/1.1\r\n\r\n"));
    struct th_http_head h;
    assert_int_equal(th_http_head_parse(in, n, MAX_BODY, &h, NULL), TH_OK);
    assert_slice(h.path, "/a");
    assert_true(h.keep_alive);

    const char *second = in + n;
    assert_int_equal(th_http_head_find(second, len - n, &skip, &n, NULL), TH_OK);
    assert_int_equal(n, len - (size_t)(second - in));
    assert_int_equal(th_http_head_parse(second, n, MAX_BODY, &h, NULL), TH_OK);
    assert_slice(h.path, "/b");
    assert_false(h.keep_alive);
}

/* A head of exactly `size` bytes: "GET / HTTP/1.1\r\nX: aaa...\r\n\r\n". */
static char *head_of_size(size_t size)
{
    const char *start = "GET / HTTP/1.1\r\nX: ";
    char *p = malloc(size + 1);
    assert_non_null(p);
    memcpy(p, start, strlen(start));
    memset(p + strlen(start), 'a', size - strlen(start) - 4);
    memcpy(p + size - 4, "\r\n\r\n", 4);
    p[size] = '\0';
    return p;
}

static void test_th_http_head_find_max_head_succeeds(void **state)
{
    (void)state;
    char *in = head_of_size(TH_HTTP_MAX_HEAD);
    size_t skip, n;
    assert_int_equal(th_http_head_find(in, TH_HTTP_MAX_HEAD, &skip, &n, NULL), TH_OK);
    assert_int_equal(n, TH_HTTP_MAX_HEAD);
    struct th_http_head h;
    assert_int_equal(th_http_head_parse(in, n, MAX_BODY, &h, NULL), TH_OK);
    free(in);
}

static void test_th_http_head_find_oversize_fails(void **state)
{
    (void)state;
    char *in = head_of_size(TH_HTTP_MAX_HEAD + 1);
    size_t skip, n;
    struct th_error e = {0};
    assert_int_equal(th_http_head_find(in, TH_HTTP_MAX_HEAD + 1, &skip, &n, &e), TH_ERR_TOO_LARGE);
    assert_int_equal(e.status, 400);
    assert_int_equal(e.code, 400004);
    assert_non_null(strstr(e.message, "16 KB"));
    /* Below the limit, the same bytes only wait for more. */
    assert_int_equal(th_http_head_find(in, TH_HTTP_MAX_HEAD - 1, &skip, &n, NULL), TH_OK);
    assert_int_equal(n, 0);
    free(in);
}

static void test_th_http_head_find_blank_lines_do_not_count_succeeds(void **state)
{
    (void)state;
    /* Blank lines before a head are dropped, not counted against the limit. */
    size_t blank = 2 * TH_HTTP_MAX_HEAD;
    char *in = malloc(blank + 20);
    assert_non_null(in);
    for (size_t i = 0; i < blank; i += 2)
        memcpy(in + i, "\r\n", 2);
    memcpy(in + blank, "GET / HTTP/1.1\r\n\r\n", 18);
    size_t skip, n;
    assert_int_equal(th_http_head_find(in, blank + 18, &skip, &n, NULL), TH_OK);
    assert_int_equal(skip, blank);
    assert_int_equal(n, 18);
    free(in);
}

/* ---- th_http_head_parse: the request line ---- */

static void test_th_http_head_parse_methods_succeeds(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        enum th_http_method m;
    } cases[] = {
        {"GET", TH_HTTP_GET},       {"PUT", TH_HTTP_PUT},       {"POST", TH_HTTP_POST},
        {"PATCH", TH_HTTP_PATCH},   {"DELETE", TH_HTTP_DELETE}, {"HEAD", TH_HTTP_HEAD},
        {"OPTIONS", TH_HTTP_OTHER}, {"get", TH_HTTP_OTHER}, /* methods are case-sensitive */
        {"GETX", TH_HTTP_OTHER}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char head[64];
        snprintf(head, sizeof head, "%s / HTTP/1.1\r\n\r\n", cases[i].text);
        struct th_http_head h;
        assert_int_equal(parse(head, &h, NULL), TH_OK);
        assert_int_equal(h.method, cases[i].m);
        assert_slice(h.method_text, cases[i].text);
    }
}

static void test_th_http_head_parse_target_parts_succeeds(void **state)
{
    (void)state;
    struct th_http_head h;
    assert_int_equal(
        parse("GET /devices/d1?api-version=2021-04-12#frag HTTP/1.1\r\n\r\n", &h, NULL), TH_OK);
    assert_slice(h.target, "/devices/d1?api-version=2021-04-12#frag");
    assert_slice(h.path, "/devices/d1");
    assert_slice(h.query, "api-version=2021-04-12");

    assert_int_equal(parse("GET /devices HTTP/1.1\r\n\r\n", &h, NULL), TH_OK);
    assert_slice(h.path, "/devices");
    assert_null(h.query.ptr);

    /* A '?' after the fragment is part of the fragment. */
    assert_int_equal(parse("GET /a#x?y HTTP/1.1\r\n\r\n", &h, NULL), TH_OK);
    assert_slice(h.path, "/a");
    assert_null(h.query.ptr);

    /* An empty query is present, and empty. */
    assert_int_equal(parse("GET /a? HTTP/1.1\r\n\r\n", &h, NULL), TH_OK);
    assert_slice(h.path, "/a");
    assert_non_null(h.query.ptr);
    assert_int_equal(h.query.len, 0);
}

static void test_th_http_head_parse_versions_succeeds(void **state)
{
    (void)state;
    struct th_http_head h;
    assert_int_equal(parse("GET / HTTP/1.1\r\n\r\n", &h, NULL), TH_OK);
    assert_true(h.http11);
    assert_true(h.keep_alive);
    assert_int_equal(h.content_length, -1);
    assert_false(h.chunked);
    assert_int_equal(h.nheaders, 0);

    assert_int_equal(parse("GET / HTTP/1.0\r\n\r\n", &h, NULL), TH_OK);
    assert_false(h.http11);
    assert_false(h.keep_alive);
}

static void test_th_http_head_parse_versions_fails(void **state)
{
    (void)state;
    assert_refused("GET / HTTP/2.0\r\n\r\n", "only HTTP/1.1 and HTTP/1.0");
    assert_refused("GET / http/1.1\r\n\r\n", "only HTTP/1.1 and HTTP/1.0");
    assert_refused("GET / HTTP/1.1 \r\n\r\n", "only HTTP/1.1 and HTTP/1.0");
    /* A space in the target leaves the rest as the version. */
    assert_refused("GET /a b HTTP/1.1\r\n\r\n", "only HTTP/1.1 and HTTP/1.0");
}

static void test_th_http_head_parse_request_line_fails(void **state)
{
    (void)state;
    assert_refused("GET /\r\n\r\n", "malformed HTTP request line");
    assert_refused("GET  HTTP/1.1\r\n\r\n", "malformed HTTP request line");
    assert_refused(" GET / HTTP/1.1\r\n\r\n", "malformed HTTP request line");
    assert_refused("GET\r\n\r\n", "malformed HTTP request line");
    assert_refused("\r\n\r\n", "malformed HTTP request line");
    /* A bare CR ends the line early. */
    assert_refused("GET /\r HTTP/1.1\r\n\r\n", "malformed HTTP request line");
}

static void test_th_http_head_parse_target_not_a_path_fails(void **state)
{
    (void)state;
    assert_refused("OPTIONS * HTTP/1.1\r\n\r\n", "must be a path");
    assert_refused("GET http://hub/devices HTTP/1.1\r\n\r\n", "must be a path");
}

static void test_th_http_head_parse_not_a_whole_head_fails(void **state)
{
    (void)state;
    /* The head must end with its blank line, and nothing may follow it. */
    assert_refused("GET / HTTP/1.1\r\n", "malformed HTTP request head");
    assert_refused("GET / HTTP/1.1\r\n\r\nX: 1\r\n\r\n", "malformed HTTP request head");
    struct th_http_head h;
    assert_int_equal(th_http_head_parse("", 0, MAX_BODY, &h, NULL), TH_ERR_FORMAT);
}

static void test_th_http_head_parse_error_keeps_request_line_succeeds(void **state)
{
    (void)state;
    /* What the request line gave stays for the log line, even when a header is refused. */
    struct th_http_head h;
    assert_int_equal(parse("PUT /devices/d1 HTTP/1.1\r\nbad\r\n\r\n", &h, NULL), TH_ERR_FORMAT);
    assert_slice(h.method_text, "PUT");
    assert_slice(h.target, "/devices/d1");
    assert_int_equal(parse("\r\n\r\n", &h, NULL), TH_ERR_FORMAT);
    assert_null(h.method_text.ptr);
    assert_null(h.target.ptr);
}

/* ---- th_http_head_parse: header lines ---- */

static void test_th_http_head_parse_headers_succeeds(void **state)
{
    (void)state;
    struct th_http_head h;
    assert_int_equal(parse("GET / HTTP/1.1\r\n"
                           "Host: hub.example\r\n"
                           "X-Spaces: \t v 1 \t\r\n"
                           "X-Empty:\r\n"
                           "iothub-app-k: v:w\r\n"
                           "\r\n",
                           &h, NULL),
                     TH_OK);
    assert_int_equal(h.nheaders, 4);
    assert_slice(h.headers[0].name, "Host");
    assert_slice(h.headers[0].value, "hub.example");
    assert_slice(h.headers[1].value, "v 1");
    assert_non_null(h.headers[2].value.ptr);
    assert_int_equal(h.headers[2].value.len, 0);
    assert_slice(h.headers[3].value, "v:w");
}

static void test_th_http_header_case_insensitive_succeeds(void **state)
{
    (void)state;
    struct th_http_head h;
    assert_int_equal(parse("GET / HTTP/1.1\r\ncontent-TYPE: application/json\r\n\r\n", &h, NULL),
                     TH_OK);
    assert_slice(*th_http_header(&h, "Content-Type"), "application/json");
    assert_slice(h.headers[0].name, "content-TYPE"); /* kept as sent */
    assert_null(th_http_header(&h, "Content-Length"));
    assert_null(th_http_header(&h, "Content-Typ"));
}

static void test_th_http_header_duplicates_first_succeeds(void **state)
{
    (void)state;
    struct th_http_head h;
    assert_int_equal(parse("GET / HTTP/1.1\r\nX-D: one\r\nx-d: two\r\n\r\n", &h, NULL), TH_OK);
    assert_int_equal(h.nheaders, 2);
    assert_slice(*th_http_header(&h, "X-D"), "one");
    assert_slice(h.headers[1].value, "two");
}

static void test_th_http_head_parse_folded_header_fails(void **state)
{
    (void)state;
    assert_refused("GET / HTTP/1.1\r\nX-A: 1\r\n  continued\r\n\r\n", "folded");
    assert_refused("GET / HTTP/1.1\r\nX-A: 1\r\n\tcontinued\r\n\r\n", "folded");
}

static void test_th_http_head_parse_bad_header_lines_fails(void **state)
{
    (void)state;
    assert_refused("GET / HTTP/1.1\r\nno colon\r\n\r\n", "malformed HTTP header line");
    assert_refused("GET / HTTP/1.1\r\n: empty name\r\n\r\n", "malformed HTTP header line");
    assert_refused("GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n", "malformed HTTP header line");
    assert_refused("GET / HTTP/1.1\r\nX A: v\r\n\r\n", "malformed HTTP header name");
    assert_refused("GET / HTTP/1.1\r\nX-A : v\r\n\r\n", "malformed HTTP header name");
    assert_refused("GET / HTTP/1.1\r\nX(A): v\r\n\r\n", "malformed HTTP header name");
}

static void test_th_http_head_parse_nul_in_header_name_fails(void **state)
{
    (void)state;
    /* strchr finds the terminator: a NUL was once taken for a token character. */
    static const char head[] = "GET / HTTP/1.1\r\nX\0A: v\r\n\r\n";
    struct th_http_head h;
    struct th_error e = {0};
    assert_int_equal(th_http_head_parse(head, sizeof head - 1, MAX_BODY, &h, &e), TH_ERR_FORMAT);
    assert_non_null(strstr(e.message, "malformed HTTP header name"));
}

static void test_th_http_head_parse_token_characters_succeeds(void **state)
{
    (void)state;
    struct th_http_head h;
    assert_int_equal(parse("GET / HTTP/1.1\r\n!#$%&'*+-.^_`|~09azAZ: v\r\n\r\n", &h, NULL), TH_OK);
    assert_int_equal(h.nheaders, 1);
}

/* A head with `n` header lines "Xi: i". */
static char *head_with_headers(int n)
{
    size_t cap = 32 + (size_t)n * 16;
    char *p = malloc(cap);
    assert_non_null(p);
    size_t len = (size_t)snprintf(p, cap, "GET / HTTP/1.1\r\n");
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(p + len, cap - len, "X%d: %d\r\n", i, i);
    snprintf(p + len, cap - len, "\r\n");
    return p;
}

static void test_th_http_head_parse_max_headers_succeeds(void **state)
{
    (void)state;
    char *head = head_with_headers(TH_HTTP_MAX_HEADERS);
    struct th_http_head h;
    assert_int_equal(parse(head, &h, NULL), TH_OK);
    assert_int_equal(h.nheaders, TH_HTTP_MAX_HEADERS);
    assert_slice(*th_http_header(&h, "X63"), "63");
    free(head);
}

static void test_th_http_head_parse_too_many_headers_fails(void **state)
{
    (void)state;
    char *head = head_with_headers(TH_HTTP_MAX_HEADERS + 1);
    assert_refused(head, "more than 64 HTTP header lines");
    free(head);
}

/* ---- th_http_head_parse: framing ---- */

static void test_th_http_head_parse_content_length_succeeds(void **state)
{
    (void)state;
    struct th_http_head h;
    assert_int_equal(parse("PUT / HTTP/1.1\r\nContent-Length: 12\r\n\r\n", &h, NULL), TH_OK);
    assert_int_equal(h.content_length, 12);
    assert_false(h.chunked);
    assert_int_equal(parse("PUT / HTTP/1.1\r\ncontent-length: 0\r\n\r\n", &h, NULL), TH_OK);
    assert_int_equal(h.content_length, 0);
    assert_int_equal(parse("PUT / HTTP/1.1\r\nContent-Length: 0001000\r\n\r\n", &h, NULL), TH_OK);
    assert_int_equal(h.content_length, MAX_BODY);
    /* Repeated with the same value. */
    assert_int_equal(
        parse("PUT / HTTP/1.1\r\nContent-Length: 7\r\nContent-Length: 7\r\n\r\n", &h, NULL), TH_OK);
    assert_int_equal(h.content_length, 7);
}

static void test_th_http_head_parse_bad_content_length_fails(void **state)
{
    (void)state;
    assert_refused("PUT / HTTP/1.1\r\nContent-Length: abc\r\n\r\n", "bad Content-Length");
    assert_refused("PUT / HTTP/1.1\r\nContent-Length:\r\n\r\n", "bad Content-Length");
    assert_refused("PUT / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", "bad Content-Length");
    assert_refused("PUT / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", "bad Content-Length");
    assert_refused("PUT / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n", "bad Content-Length");
    assert_refused("PUT / HTTP/1.1\r\nContent-Length: 1234567890123\r\n\r\n", "bad Content-Length");
    assert_refused("PUT / HTTP/1.1\r\nContent-Length: 7\r\nContent-Length: 8\r\n\r\n",
                   "conflicting Content-Length");
}

static void test_th_http_head_parse_body_over_limit_fails(void **state)
{
    (void)state;
    struct th_http_head h;
    struct th_error e = {0};
    assert_int_equal(parse("PUT / HTTP/1.1\r\nContent-Length: 1001\r\n\r\n", &h, &e),
                     TH_ERR_TOO_LARGE);
    assert_int_equal(e.status, 413);
    assert_int_equal(e.code, 413001);
    /* Twelve digits are read, then refused by size. */
    assert_int_equal(parse("PUT / HTTP/1.1\r\nContent-Length: 999999999999\r\n\r\n", &h, &e),
                     TH_ERR_TOO_LARGE);
}

static void test_th_http_head_parse_chunked_succeeds(void **state)
{
    (void)state;
    struct th_http_head h;
    assert_int_equal(parse("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", &h, NULL),
                     TH_OK);
    assert_true(h.chunked);
    assert_int_equal(h.content_length, -1);
    assert_int_equal(parse("POST / HTTP/1.1\r\ntransfer-encoding: Chunked\r\n\r\n", &h, NULL),
                     TH_OK);
    assert_true(h.chunked);
    /* Listed with another coding, chunked is still how the body is delimited (no other is decoded).
     */
    assert_int_equal(parse("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", &h, NULL),
                     TH_OK);
    assert_true(h.chunked);
}

static void test_th_http_head_parse_chunked_with_length_fails(void **state)
{
    (void)state;
    const char *why = "only the chunked transfer coding is accepted, without Content-Length";
    assert_refused("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", why);
    assert_refused("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
                   why);
    assert_refused("POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                   why);
}

static void test_th_http_head_parse_connection_succeeds(void **state)
{
    (void)state;
    struct th_http_head h;
    assert_int_equal(parse("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", &h, NULL), TH_OK);
    assert_false(h.keep_alive);
    assert_int_equal(parse("GET / HTTP/1.1\r\nConnection: Keep-Alive , CLOSE\r\n\r\n", &h, NULL),
                     TH_OK);
    assert_false(h.keep_alive);
    assert_int_equal(parse("GET / HTTP/1.1\r\nConnection: closed\r\n\r\n", &h, NULL), TH_OK);
    assert_true(h.keep_alive);
    assert_int_equal(parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", &h, NULL), TH_OK);
    assert_true(h.keep_alive);
}

static void test_th_http_head_parse_expect_continue_succeeds(void **state)
{
    (void)state;
    struct th_http_head h;
    assert_int_equal(
        parse("PUT / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\n", &h, NULL),
        TH_OK);
    assert_true(h.expect_continue);
    assert_int_equal(parse("PUT / HTTP/1.1\r\nExpect: 100-continue, x\r\n\r\n", &h, NULL), TH_OK);
    assert_false(h.expect_continue);
    assert_int_equal(parse("PUT / HTTP/1.1\r\n\r\n", &h, NULL), TH_OK);
    assert_false(h.expect_continue);
}

/* ---- th_http_has_token ---- */

static void test_th_http_has_token_list_succeeds(void **state)
{
    (void)state;
    struct th_slice v = th_slice_of(" a ,\tB , c");
    assert_true(th_http_has_token(&v, "a"));
    assert_true(th_http_has_token(&v, "b"));
    assert_true(th_http_has_token(&v, "C"));
    assert_false(th_http_has_token(&v, "d"));
    struct th_slice ab = th_slice_of("ab");
    assert_false(th_http_has_token(&ab, "a"));
    assert_false(th_http_has_token(NULL, "a"));
}

/* ---- th_http_query_param ---- */

static void test_th_http_query_param_values_succeeds(void **state)
{
    (void)state;
    struct th_slice q = th_slice_of("api-version=2021-04-12&top=5&%74ag=x%2Fy&q=a+b&flag&top=6");
    char buf[64];
    assert_int_equal(th_http_query_param(q, "api-version", buf, sizeof buf), TH_OK);
    assert_string_equal(buf, "2021-04-12");
    assert_int_equal(th_http_query_param(q, "top", buf, sizeof buf), TH_OK);
    assert_string_equal(buf, "5"); /* the first */
    assert_int_equal(th_http_query_param(q, "tag", buf, sizeof buf), TH_OK);
    assert_string_equal(buf, "x/y");
    assert_int_equal(th_http_query_param(q, "q", buf, sizeof buf), TH_OK);
    assert_string_equal(buf, "a b");
    assert_int_equal(th_http_query_param(q, "flag", buf, sizeof buf), TH_OK);
    assert_string_equal(buf, "");
}

static void test_th_http_query_param_absent_fails(void **state)
{
    (void)state;
    char buf[16];
    assert_int_equal(th_http_query_param(th_slice_of("a=1"), "A", buf, sizeof buf),
                     TH_ERR_NOT_FOUND);
    assert_int_equal(th_http_query_param(th_slice_of(""), "a", buf, sizeof buf), TH_ERR_NOT_FOUND);
    struct th_slice none = {NULL, 0};
    assert_int_equal(th_http_query_param(none, "a", buf, sizeof buf), TH_ERR_NOT_FOUND);
}

static void test_th_http_query_param_bad_value_fails(void **state)
{
    (void)state;
    char buf[4];
    assert_int_equal(th_http_query_param(th_slice_of("a=%zz"), "a", buf, sizeof buf),
                     TH_ERR_FORMAT);
    assert_int_equal(th_http_query_param(th_slice_of("a=12345"), "a", buf, sizeof buf),
                     TH_ERR_BUFFER);
}

static void test_th_http_query_param_undecodable_key_skipped_succeeds(void **state)
{
    (void)state;
    char buf[8];
    /* A key that does not decode, or is longer than any we look for, is passed over. */
    char q[200];
    snprintf(q, sizeof q, "%%zz=1&%070d=2&a=3", 0);
    assert_int_equal(th_http_query_param(th_slice_of(q), "a", buf, sizeof buf), TH_OK);
    assert_string_equal(buf, "3");
}

/* ---- th_http_chunked_decode ---- */

/*
 * Decode `in` with pieces of at most `piece` bytes (0: all at once), calling
 * again as the contract says. The body goes to `body` (NUL-terminated);
 * *consumed is the input used. Returns the first error, or TH_OK.
 */
static th_result decode(const char *in, size_t piece, size_t max_body, char *body, size_t *consumed,
                        bool *done, struct th_error *e)
{
    struct th_http_chunked d;
    th_http_chunked_init(&d, max_body);
    size_t len = strlen(in), off = 0, blen = 0, avail = 0;
    th_result r = TH_OK;
    while (off < len && !th_http_chunked_done(&d)) {
        if (avail == 0)
            avail = piece && len - off > piece ? piece : len - off;
        size_t used;
        struct th_slice data;
        r = th_http_chunked_decode(&d, in + off, avail, &used, &data, e);
        if (r != TH_OK)
            break;
        assert_true(used <= avail);
        if (data.len) {
            assert_true(data.ptr >= in + off && data.ptr + data.len <= in + off + used);
            memcpy(body + blen, data.ptr, data.len);
            blen += data.len;
        }
        assert_true(used > 0 || th_http_chunked_done(&d));
        off += used;
        avail -= used;
    }
    body[blen] = '\0';
    *consumed = off;
    *done = th_http_chunked_done(&d);
    return r;
}

/* The same body and the same input used, whole and one byte at a time. */
static void assert_decodes(const char *in, const char *want_body, size_t want_used)
{
    for (size_t piece = 0; piece <= 3; piece++) {
        char body[256];
        size_t used;
        bool done;
        assert_int_equal(decode(in, piece, MAX_BODY, body, &used, &done, NULL), TH_OK);
        assert_true(done);
        assert_string_equal(body, want_body);
        assert_int_equal(used, want_used);
    }
}

static void assert_chunked_refused(const char *in, size_t max_body, th_result want, int status)
{
    for (size_t piece = 0; piece <= 1; piece++) {
        char body[256];
        size_t used;
        bool done;
        struct th_error e = {0};
        assert_int_equal(decode(in, piece, max_body, body, &used, &done, &e), want);
        assert_int_equal(e.status, status);
        assert_false(done);
    }
}

static void test_th_http_chunked_decode_chunks_succeeds(void **state)
{
    (void)state;
    const char *in = "5\r\nhello\r\n0\r\n\r\n";
    assert_decodes(in, "hello", strlen(in));
    in = "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
    assert_decodes(in, "abcde", strlen(in));
    in = "a\r\n0123456789\r\nA\r\n0123456789\r\n00\r\n\r\n";
    assert_decodes(in, "01234567890123456789", strlen(in));
    in = "0\r\n\r\n";
    assert_decodes(in, "", strlen(in));
}

static void test_th_http_chunked_decode_extensions_succeeds(void **state)
{
    (void)state;
    const char *in = "5;name=value;x\r\nhello\r\n5 ; q=\"a;b\"\r\nworld\r\n0\t;last\r\n\r\n";
    assert_decodes(in, "helloworld", strlen(in));
}

static void test_th_http_chunked_decode_trailers_succeeds(void **state)
{
    (void)state;
    const char *in = "2\r\nhi\r\n0\r\nX-Trailer: 1\r\nChecksum: abc\r\n\r\n";
    assert_decodes(in, "hi", strlen(in));
    /* Trailer lines may end with a bare LF. */
    in = "0\r\nX: 1\n\r\n";
    assert_decodes(in, "", strlen(in));
}

static void test_th_http_chunked_decode_pipelined_succeeds(void **state)
{
    (void)state;
    /* Decoding stops at the end of the body: the next request is left alone. */
    const char *in = "2\r\nhi\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n";
    assert_decodes(in, "hi", strlen("2\r\nhi\r\n0\r\n\r\n"));
}

static void test_th_http_chunked_decode_one_run_per_call_succeeds(void **state)
{
    (void)state;
    const char *in = "5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n";
    struct th_http_chunked d;
    th_http_chunked_init(&d, MAX_BODY);
    size_t used;
    struct th_slice data;
    assert_int_equal(th_http_chunked_decode(&d, in, strlen(in), &used, &data, NULL), TH_OK);
    assert_int_equal(used, 8);
    assert_slice(data, "hello");
    assert_ptr_equal(data.ptr, in + 3);
    in += used;
    assert_int_equal(th_http_chunked_decode(&d, in, strlen(in), &used, &data, NULL), TH_OK);
    assert_slice(data, "abc");
    in += used;
    assert_int_equal(th_http_chunked_decode(&d, in, strlen(in), &used, &data, NULL), TH_OK);
    assert_int_equal(data.len, 0);
    assert_true(th_http_chunked_done(&d));
    assert_int_equal(used, strlen(in));
    /* Once done, nothing more is taken. */
    assert_int_equal(th_http_chunked_decode(&d, "5\r\n", 3, &used, &data, NULL), TH_OK);
    assert_int_equal(used, 0);
}

static void test_th_http_chunked_decode_incomplete_succeeds(void **state)
{
    (void)state;
    struct th_http_chunked d;
    th_http_chunked_init(&d, MAX_BODY);
    size_t used;
    struct th_slice data;
    assert_int_equal(th_http_chunked_decode(&d, "5\r\nhel", 6, &used, &data, NULL), TH_OK);
    assert_int_equal(used, 6);
    assert_slice(data, "hel");
    assert_false(th_http_chunked_done(&d));
    const char *more = "lo\r\n0\r\n";
    assert_int_equal(th_http_chunked_decode(&d, more, 7, &used, &data, NULL), TH_OK);
    assert_int_equal(used, 2);
    assert_slice(data, "lo");
    assert_int_equal(th_http_chunked_decode(&d, more + 2, 5, &used, &data, NULL), TH_OK);
    assert_int_equal(used, 5);
    assert_int_equal(data.len, 0);
    assert_false(th_http_chunked_done(&d)); /* the final blank line is still to come */
    assert_int_equal(th_http_chunked_decode(&d, "\r\n", 2, &used, &data, NULL), TH_OK);
    assert_true(th_http_chunked_done(&d));
}

static void test_th_http_chunked_decode_malformed_fails(void **state)
{
    (void)state;
    assert_chunked_refused("x\r\n", MAX_BODY, TH_ERR_FORMAT, 400);
    assert_chunked_refused("5\rX", MAX_BODY, TH_ERR_FORMAT, 400);
    assert_chunked_refused("5\nhello", MAX_BODY, TH_ERR_FORMAT, 400);
    assert_chunked_refused("5\r\nhelloX\r\n", MAX_BODY, TH_ERR_FORMAT, 400);
    assert_chunked_refused("5\r\nhello\rX", MAX_BODY, TH_ERR_FORMAT, 400);
    assert_chunked_refused("0\r\n\rX", MAX_BODY, TH_ERR_FORMAT, 400);
    assert_chunked_refused("-1\r\n", MAX_BODY, TH_ERR_FORMAT, 400);
    /* A size needs a digit: an empty one was once read as the last chunk. */
    assert_chunked_refused("\r\n\r\n", MAX_BODY, TH_ERR_FORMAT, 400);
    assert_chunked_refused(";ext\r\n\r\n", MAX_BODY, TH_ERR_FORMAT, 400);
    assert_chunked_refused(" 5\r\nhello\r\n0\r\n\r\n", MAX_BODY, TH_ERR_FORMAT, 400);
    assert_chunked_refused("2\r\nhi\r\n\r\n\r\n", MAX_BODY, TH_ERR_FORMAT, 400);
    /* After an error the decoder stays failed. */
    struct th_http_chunked d;
    th_http_chunked_init(&d, MAX_BODY);
    size_t used;
    struct th_slice data;
    assert_int_equal(th_http_chunked_decode(&d, "x", 1, &used, &data, NULL), TH_ERR_FORMAT);
    assert_int_equal(th_http_chunked_decode(&d, "0\r\n\r\n", 5, &used, &data, NULL), TH_ERR_FORMAT);
    assert_int_equal(used, 0);
    assert_false(th_http_chunked_done(&d));
}

static void test_th_http_chunked_decode_over_limit_fails(void **state)
{
    (void)state;
    /* One chunk over the limit, the limit crossed by a later chunk, and a size that would overflow.
     */
    assert_chunked_refused("5\r\nhello\r\n0\r\n\r\n", 4, TH_ERR_TOO_LARGE, 413);
    assert_chunked_refused("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", 4, TH_ERR_TOO_LARGE, 413);
    assert_chunked_refused("FFFFFFFFFFFFFFFFFFFFFFFF\r\n", MAX_BODY, TH_ERR_TOO_LARGE, 413);
    char body[16];
    size_t used;
    bool done;
    struct th_error e = {0};
    assert_int_equal(decode("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", 0, 4, body, &used, &done, &e),
                     TH_ERR_TOO_LARGE);
    assert_int_equal(e.code, 413001);
    /* Exactly at the limit. */
    assert_int_equal(decode("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", 0, 5, body, &used, &done, NULL),
                     TH_OK);
    assert_string_equal(body, "abcde");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_th_http_head_find_complete_head_succeeds),
        cmocka_unit_test(test_th_http_head_find_blank_lines_before_succeeds),
        cmocka_unit_test(test_th_http_head_find_only_blank_lines_succeeds),
        cmocka_unit_test(test_th_http_head_find_incomplete_succeeds),
        cmocka_unit_test(test_th_http_head_find_pipelined_succeeds),
        cmocka_unit_test(test_th_http_head_find_max_head_succeeds),
        cmocka_unit_test(test_th_http_head_find_oversize_fails),
        cmocka_unit_test(test_th_http_head_find_blank_lines_do_not_count_succeeds),
        cmocka_unit_test(test_th_http_head_parse_methods_succeeds),
        cmocka_unit_test(test_th_http_head_parse_target_parts_succeeds),
        cmocka_unit_test(test_th_http_head_parse_versions_succeeds),
        cmocka_unit_test(test_th_http_head_parse_versions_fails),
        cmocka_unit_test(test_th_http_head_parse_request_line_fails),
        cmocka_unit_test(test_th_http_head_parse_target_not_a_path_fails),
        cmocka_unit_test(test_th_http_head_parse_not_a_whole_head_fails),
        cmocka_unit_test(test_th_http_head_parse_error_keeps_request_line_succeeds),
        cmocka_unit_test(test_th_http_head_parse_headers_succeeds),
        cmocka_unit_test(test_th_http_header_case_insensitive_succeeds),
        cmocka_unit_test(test_th_http_header_duplicates_first_succeeds),
        cmocka_unit_test(test_th_http_head_parse_folded_header_fails),
        cmocka_unit_test(test_th_http_head_parse_bad_header_lines_fails),
        cmocka_unit_test(test_th_http_head_parse_nul_in_header_name_fails),
        cmocka_unit_test(test_th_http_head_parse_token_characters_succeeds),
        cmocka_unit_test(test_th_http_head_parse_max_headers_succeeds),
        cmocka_unit_test(test_th_http_head_parse_too_many_headers_fails),
        cmocka_unit_test(test_th_http_head_parse_content_length_succeeds),
        cmocka_unit_test(test_th_http_head_parse_bad_content_length_fails),
        cmocka_unit_test(test_th_http_head_parse_body_over_limit_fails),
        cmocka_unit_test(test_th_http_head_parse_chunked_succeeds),
        cmocka_unit_test(test_th_http_head_parse_chunked_with_length_fails),
        cmocka_unit_test(test_th_http_head_parse_connection_succeeds),
        cmocka_unit_test(test_th_http_head_parse_expect_continue_succeeds),
        cmocka_unit_test(test_th_http_has_token_list_succeeds),
        cmocka_unit_test(test_th_http_query_param_values_succeeds),
        cmocka_unit_test(test_th_http_query_param_absent_fails),
        cmocka_unit_test(test_th_http_query_param_bad_value_fails),
        cmocka_unit_test(test_th_http_query_param_undecodable_key_skipped_succeeds),
        cmocka_unit_test(test_th_http_chunked_decode_chunks_succeeds),
        cmocka_unit_test(test_th_http_chunked_decode_extensions_succeeds),
        cmocka_unit_test(test_th_http_chunked_decode_trailers_succeeds),
        cmocka_unit_test(test_th_http_chunked_decode_pipelined_succeeds),
        cmocka_unit_test(test_th_http_chunked_decode_one_run_per_call_succeeds),
        cmocka_unit_test(test_th_http_chunked_decode_incomplete_succeeds),
        cmocka_unit_test(test_th_http_chunked_decode_malformed_fails),
        cmocka_unit_test(test_th_http_chunked_decode_over_limit_fails),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
