/*
 * fuzz_chunked.c - libFuzzer target for the gateway's chunked body decoder
 * (th_http_chunked_decode, emulator/gateway/http_parse.c): the input is the
 * bytes after a request head that said "Transfer-Encoding: chunked". It is
 * decoded whole, one byte at a time and in 7-byte pieces (the same result,
 * body and input used every time), under a large and a small body limit
 * (the small one refuses exactly the bodies that exceed it), and a decoded
 * body is encoded again and must decode to itself.
 */
#include <stdbool.h>
#include <stdio.h>

#include "fuzz_common.h"
#include "http_parse.h"

#define BIG_LIMIT 65536
#define SMALL_LIMIT 16

struct decoded {
    th_result r;
    int status;
    bool done;
    size_t used;
    size_t len;
    char *body; /* BIG_LIMIT bytes */
};

static void decode(const char *in, size_t len, size_t piece, size_t limit, struct decoded *out)
{
    struct th_http_chunked d;
    th_http_chunked_init(&d, limit);
    size_t off = 0, avail = 0;
    out->r = TH_OK;
    out->status = 0;
    out->len = 0;
    while (off < len && !th_http_chunked_done(&d)) {
        if (avail == 0)
            avail = piece && len - off > piece ? piece : len - off;
        size_t used;
        struct th_slice data;
        struct th_error e = {0};
        out->r = th_http_chunked_decode(&d, in + off, avail, &used, &data, &e);
        if (out->r != TH_OK) {
            out->status = e.status;
            FUZZ_CHECK((out->r == TH_ERR_FORMAT && e.status == 400 && e.code == 400004) ||
                       (out->r == TH_ERR_TOO_LARGE && e.status == 413 && e.code == 413001));
            FUZZ_CHECK(!th_http_chunked_done(&d));
            /* A failed decoder stays failed. */
            FUZZ_CHECK(th_http_chunked_decode(&d, in + off, avail, &used, &data, NULL) != TH_OK);
            break;
        }
        FUZZ_CHECK(used <= avail && (used > 0 || th_http_chunked_done(&d)));
        FUZZ_CHECK(data.len == 0 ||
                   (data.ptr >= in + off && data.ptr + data.len <= in + off + used));
        FUZZ_CHECK(out->len + data.len <= limit);
        if (data.len)
            memcpy(out->body + out->len, data.ptr, data.len);
        out->len += data.len;
        off += used;
        avail -= used;
    }
    out->used = off;
    out->done = th_http_chunked_done(&d);
    if (out->done) {
        /* Once done, nothing more is taken. */
        size_t used = 1;
        struct th_slice data;
        FUZZ_CHECK(th_http_chunked_decode(&d, "0\r\n\r\n", 5, &used, &data, NULL) == TH_OK);
        FUZZ_CHECK(used == 0 && data.len == 0);
    }
}

static bool same(const struct decoded *a, const struct decoded *b)
{
    if (a->r != b->r || a->done != b->done)
        return false;
    if (a->r != TH_OK)
        return a->status == b->status;
    return a->used == b->used && a->len == b->len && memcmp(a->body, b->body, a->len) == 0;
}

/* body as chunks of up to 5 bytes (lower-case hex, an extension, a trailer). */
static char *encode(const char *body, size_t len, size_t *out_len)
{
    size_t cap = len * 2 + 64 + (len / 5 + 1) * 16;
    char *p = malloc(cap);
    FUZZ_CHECK(p != NULL);
    size_t n = 0;
    for (size_t i = 0; i < len; i += 5) {
        size_t k = len - i < 5 ? len - i : 5;
        n += (size_t)snprintf(p + n, cap - n, "%zx;i=%zu\r\n", k, i);
        memcpy(p + n, body + i, k);
        n += k;
        memcpy(p + n, "\r\n", 2);
        n += 2;
    }
    n += (size_t)snprintf(p + n, cap - n, "0\r\nX-Trailer: 1\r\n\r\n");
    FUZZ_CHECK(n < cap);
    *out_len = n;
    return p;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *in = fuzz_bytes(data, size);
    struct decoded r[4];
    for (int i = 0; i < 4; i++) {
        r[i].body = malloc(BIG_LIMIT);
        FUZZ_CHECK(r[i].body != NULL);
    }
    decode(in, size, 0, BIG_LIMIT, &r[0]);
    decode(in, size, 1, BIG_LIMIT, &r[1]);
    decode(in, size, 7, BIG_LIMIT, &r[2]);
    FUZZ_CHECK(same(&r[0], &r[1]) && same(&r[0], &r[2]));

    /* The small limit refuses a body exactly when it would exceed it. */
    decode(in, size, 0, SMALL_LIMIT, &r[3]);
    if (r[0].r == TH_OK && r[0].done) {
        if (r[0].len <= SMALL_LIMIT)
            FUZZ_CHECK(same(&r[0], &r[3]));
        else
            FUZZ_CHECK(r[3].r == TH_ERR_TOO_LARGE);
    }
    if (r[3].r == TH_OK && r[3].done)
        FUZZ_CHECK(same(&r[0], &r[3]));

    /* What was decoded, encoded again, decodes to itself. */
    if (r[0].r == TH_OK && r[0].done) {
        size_t n;
        char *enc = encode(r[0].body, r[0].len, &n);
        struct decoded again = {.body = r[3].body};
        decode(enc, n, 0, BIG_LIMIT, &again);
        FUZZ_CHECK(again.r == TH_OK && again.done && again.used == n);
        FUZZ_CHECK(again.len == r[0].len && memcmp(again.body, r[0].body, r[0].len) == 0);
        free(enc);
    }
    for (int i = 0; i < 4; i++)
        free(r[i].body);
    free(in);
    return 0;
}
