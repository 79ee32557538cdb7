/*
 * fuzz_ws.c - libFuzzer target for the gateway's WebSocket code
 * (emulator/gateway/ws_frame.c). The input is what a client sends after the
 * handshake: th_ws_read reads it whole, one byte at a time and in 3-byte
 * pieces, and the three transcripts (data unmasked, frame boundaries,
 * control frames, the error and the input used) must be the same; data is
 * a slice of the input, control payloads fit in 125 bytes, nothing is read
 * after a close frame. Then the input is used as a payload: framed the way
 * a client frames it (with th_ws_frame_header and a mask), it must read
 * back unchanged. The close-code, accept-key and subprotocol helpers run on
 * it too.
 */
#include <stdbool.h>

#include "fuzz_common.h"
#include "ws_frame.h"

/* Everything a read produced, serialised so that two reads can be compared. */
struct transcript {
    uint8_t *buf;
    size_t len, cap;
    th_result r;
    size_t used;
};

static void put(struct transcript *t, const void *p, size_t n)
{
    if (t->len + n > t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 1024;
        while (cap < t->len + n)
            cap *= 2;
        t->buf = realloc(t->buf, cap);
        FUZZ_CHECK(t->buf != NULL);
        t->cap = cap;
    }
    memcpy(t->buf + t->len, p, n);
    t->len += n;
}

static void read_all(const uint8_t *in, size_t len, size_t piece, struct transcript *t)
{
    struct th_ws_reader r;
    th_ws_reader_init(&r);
    size_t off = 0, avail = 0;
    t->r = TH_OK;
    while (off < len) {
        if (avail == 0)
            avail = piece && len - off > piece ? piece : len - off;
        size_t used;
        struct th_ws_event ev;
        struct th_error e = {0};
        t->r = th_ws_read(&r, in + off, avail, &used, &ev, &e);
        FUZZ_CHECK(used <= avail);
        if (t->r != TH_OK) {
            FUZZ_CHECK(t->r == TH_ERR_FORMAT && e.message[0] != '\0');
            put(t, "E", 1);
            put(t, e.message, strlen(e.message));
            off += used;
            break;
        }
        if (ev.kind == TH_WS_EV_DATA) {
            FUZZ_CHECK(ev.len > 0 && ev.data >= in + off && ev.data + ev.len <= in + off + used);
            FUZZ_CHECK(ev.opcode == TH_WS_OP_CONT || ev.opcode == TH_WS_OP_TEXT ||
                       ev.opcode == TH_WS_OP_BINARY);
            uint8_t *plain = malloc(ev.len);
            FUZZ_CHECK(plain != NULL);
            th_ws_unmask(&ev, plain);
            put(t, plain, ev.len);
            free(plain);
            if (ev.end) {
                uint8_t mark[3] = {'|', (uint8_t)ev.opcode, ev.fin};
                put(t, mark, sizeof mark);
            }
        } else if (ev.kind == TH_WS_EV_CONTROL) {
            FUZZ_CHECK(ev.opcode == TH_WS_OP_CLOSE || ev.opcode == TH_WS_OP_PING ||
                       ev.opcode == TH_WS_OP_PONG);
            FUZZ_CHECK(ev.len <= TH_WS_MAX_CONTROL && ev.fin);
            uint8_t mark[3] = {'C', (uint8_t)ev.opcode, (uint8_t)ev.len};
            put(t, mark, sizeof mark);
            put(t, ev.data, ev.len);
            unsigned code = th_ws_close_reply_code(ev.data, ev.len);
            FUZZ_CHECK(code >= 1000 && code < 5000 && code != 1005 && code != 1006);
            FUZZ_CHECK(r.closed == (ev.opcode == TH_WS_OP_CLOSE));
        } else {
            /* No event: the input given was used up, or a close frame came before it. */
            FUZZ_CHECK(used == avail || (r.closed && used == 0));
            if (used == 0) {
                off += used;
                break;
            }
        }
        off += used;
        avail -= used;
    }
    t->used = off;
}

static bool same(const struct transcript *a, const struct transcript *b)
{
    return a->r == b->r && a->used == b->used && a->len == b->len &&
           (a->len == 0 || memcmp(a->buf, b->buf, a->len) == 0);
}

/* The input as the payload of a masked client frame: it must read back unchanged. */
static void roundtrip(const uint8_t *payload, size_t n, int opcode)
{
    static const uint8_t mask[4] = {0xa5, 0x01, 0xff, 0x5a};
    uint8_t *frame = malloc(n + 14);
    FUZZ_CHECK(frame != NULL);
    size_t h = th_ws_frame_header(opcode, n, frame);
    FUZZ_CHECK(h == 2 || h == 4 || h == 10);
    FUZZ_CHECK(h == (n < 126 ? 2u : n <= 0xffff ? 4u : 10u));
    frame[1] |= 0x80;
    memcpy(frame + h, mask, 4);
    for (size_t i = 0; i < n; i++)
        frame[h + 4 + i] = payload[i] ^ mask[i & 3];
    struct transcript t = {0};
    read_all(frame, h + 4 + n, 0, &t);
    FUZZ_CHECK(t.r == TH_OK && t.used == h + 4 + n);
    if (opcode == TH_WS_OP_BINARY) {
        FUZZ_CHECK(t.len == n + (n ? 3 : 0));
        FUZZ_CHECK(n == 0 || memcmp(t.buf, payload, n) == 0);
    } else {
        FUZZ_CHECK(t.len == 3 + n && t.buf[0] == 'C' && t.buf[2] == n);
        FUZZ_CHECK(n == 0 || memcmp(t.buf + 3, payload, n) == 0);
    }
    free(t.buf);
    free(frame);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *in = (uint8_t *)fuzz_bytes(data, size);
    struct transcript a = {0}, b = {0}, c = {0};
    read_all(in, size, 0, &a);
    read_all(in, size, 1, &b);
    read_all(in, size, 3, &c);
    FUZZ_CHECK(same(&a, &b) && same(&a, &c));
    free(a.buf);
    free(b.buf);
    free(c.buf);

    roundtrip(in, size, TH_WS_OP_BINARY);
    if (size <= TH_WS_MAX_CONTROL)
        roundtrip(in, size, TH_WS_OP_PING);

    uint8_t close[TH_WS_MAX_CONTROL];
    char *why = fuzz_cstr(data, size);
    size_t n = th_ws_close_payload(th_ws_close_reply_code(in, size), why, close);
    FUZZ_CHECK(n >= 2 && n <= 122);
    free(why);

    struct th_slice s = {(const char *)in, size};
    char accept[TH_WS_ACCEPT_BUF];
    th_result r = th_ws_accept_key(s, accept, sizeof accept);
    FUZZ_CHECK(r == (size <= 64 ? TH_OK : TH_ERR_INVAL));
    if (r == TH_OK)
        FUZZ_CHECK(strlen(accept) == 28);
    const char *proto = th_ws_pick_subprotocol(&s);
    FUZZ_CHECK(proto == NULL || !strcmp(proto, "mqtt") || !strcmp(proto, "mqttv3.1"));
    free(in);
    return 0;
}
