/*
 * test_ws_frame.c - unit tests for emulator/gateway/ws_frame.c, the
 * gateway's WebSocket (RFC 6455) code: reading client frames (masking,
 * 7/16/64-bit lengths, control frames, fragmentation, refusals, input in
 * pieces), server frame headers, close payloads and codes, the handshake's
 * accept key and the subprotocol choice.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ws_frame.h"

static const uint8_t MASK[4] = {0x37, 0xfa, 0x21, 0x3d};

enum { LEN7, LEN16, LEN64 };

/*
 * A client frame: first byte b0 (FIN, RSV, opcode), the payload length in
 * the given form, the mask bit and MASK (when `masked`), the masked payload.
 * Returns its size; out holds at least n + 14 bytes.
 */
static size_t client_frame(uint8_t *out, uint8_t b0, const void *payload, size_t n, int form,
                           bool masked)
{
    size_t h = 0;
    out[h++] = b0;
    uint8_t mbit = masked ? 0x80 : 0;
    if (form == LEN7) {
        out[h++] = (uint8_t)(mbit | n);
    } else if (form == LEN16) {
        out[h++] = mbit | 126;
        out[h++] = (uint8_t)(n >> 8);
        out[h++] = (uint8_t)n;
    } else {
        out[h++] = mbit | 127;
        for (int i = 7; i >= 0; i--)
            out[h++] = (uint8_t)((uint64_t)n >> (8 * i));
    }
    if (masked) {
        memcpy(out + h, MASK, 4);
        h += 4;
    }
    for (size_t i = 0; i < n; i++)
        out[h + i] = ((const uint8_t *)payload)[i] ^ (masked ? MASK[i & 3] : 0);
    return h + n;
}

/*
 * What a reader makes of `in` fed in pieces of at most `piece` bytes (0:
 * whole): data payloads unmasked into `data`, one letter per event into
 * `events` ('D' data run, 'C' close, 'P' ping, 'O' pong), control payloads
 * appended to `ctl`. Returns the first error (its message in *e).
 */
struct transcript {
    uint8_t data[80000];
    size_t data_len;
    char events[64];
    size_t nevents;
    uint8_t ctl[512];
    size_t ctl_len;
    size_t used;
};

/* Count an event; the first ones are kept as letters. */
static void note(struct transcript *t, char kind)
{
    if (t->nevents < sizeof t->events - 1)
        t->events[t->nevents] = kind;
    t->nevents++;
}

static th_result read_all(const uint8_t *in, size_t len, size_t piece, struct transcript *t,
                          struct th_error *e)
{
    memset(t, 0, sizeof *t);
    struct th_ws_reader r;
    th_ws_reader_init(&r);
    size_t off = 0, avail = 0;
    while (off < len) {
        if (avail == 0)
            avail = piece && len - off > piece ? piece : len - off;
        size_t used;
        struct th_ws_event ev;
        th_result rc = th_ws_read(&r, in + off, avail, &used, &ev, e);
        if (rc != TH_OK)
            return rc;
        assert_true(used <= avail);
        off += used;
        avail -= used;
        t->used = off;
        if (ev.kind == TH_WS_EV_DATA) {
            assert_true(ev.data >= in && ev.data + ev.len <= in + off);
            th_ws_unmask(&ev, t->data + t->data_len);
            t->data_len += ev.len;
            note(t, 'D');
        } else if (ev.kind == TH_WS_EV_CONTROL) {
            assert_true(ev.len <= TH_WS_MAX_CONTROL);
            memcpy(t->ctl + t->ctl_len, ev.data, ev.len);
            t->ctl_len += ev.len;
            note(t, ev.opcode == TH_WS_OP_CLOSE ? 'C' : ev.opcode == TH_WS_OP_PING ? 'P' : 'O');
        } else if (used == 0) {
            assert_true(r.closed); /* nothing more is read after a close frame */
            break;
        } else {
            assert_int_equal(avail, 0);
        }
    }
    return TH_OK;
}

/* ---- th_ws_read: lengths and masking ---- */

static void assert_one_binary(size_t n, int form)
{
    uint8_t *payload = malloc(n ? n : 1);
    uint8_t *frame = malloc(n + 14);
    struct transcript *t = malloc(sizeof *t);
    assert_non_null(payload);
    assert_non_null(frame);
    assert_non_null(t);
    for (size_t i = 0; i < n; i++)
        payload[i] = (uint8_t)(i * 7 + 3);
    size_t len = client_frame(frame, 0x82, payload, n, form, true);
    for (size_t piece = 0; piece <= 5; piece += 5) {
        assert_int_equal(read_all(frame, len, piece, t, NULL), TH_OK);
        assert_int_equal(t->used, len);
        assert_int_equal(t->data_len, n);
        assert_memory_equal(t->data, payload, n);
        assert_int_equal(t->ctl_len, 0);
    }
    free(payload);
    free(frame);
    free(t);
}

static void test_th_ws_read_length_7bit_succeeds(void **state)
{
    (void)state;
    assert_one_binary(1, LEN7);
    assert_one_binary(125, LEN7);
}

static void test_th_ws_read_length_16bit_succeeds(void **state)
{
    (void)state;
    assert_one_binary(126, LEN16);
    assert_one_binary(65535, LEN16);
}

static void test_th_ws_read_length_64bit_succeeds(void **state)
{
    (void)state;
    assert_one_binary(65536, LEN64);
    assert_one_binary(70000, LEN64);
}

static void test_th_ws_read_non_minimal_length_succeeds(void **state)
{
    (void)state;
    /* A small payload in a 16-bit or 64-bit length is accepted. */
    assert_one_binary(5, LEN16);
    assert_one_binary(5, LEN64);
}

static void test_th_ws_read_one_event_succeeds(void **state)
{
    (void)state;
    uint8_t frame[32];
    size_t len = client_frame(frame, 0x82, "abc", 3, LEN7, true);
    struct th_ws_reader r;
    th_ws_reader_init(&r);
    size_t used;
    struct th_ws_event ev;
    assert_int_equal(th_ws_read(&r, frame, len, &used, &ev, NULL), TH_OK);
    assert_int_equal(used, len);
    assert_int_equal(ev.kind, TH_WS_EV_DATA);
    assert_int_equal(ev.opcode, TH_WS_OP_BINARY);
    assert_true(ev.fin);
    assert_true(ev.end);
    assert_ptr_equal(ev.data, frame + 6); /* a slice of the input, still masked */
    assert_int_equal(ev.len, 3);
    uint8_t out[3];
    th_ws_unmask(&ev, out);
    assert_memory_equal(out, "abc", 3);
    /* Unmasking in place works too. */
    th_ws_unmask(&ev, frame + 6);
    assert_memory_equal(frame + 6, "abc", 3);
    assert_int_equal(th_ws_read(&r, frame + len, 0, &used, &ev, NULL), TH_OK);
    assert_int_equal(ev.kind, TH_WS_EV_NONE);
    assert_int_equal(used, 0);
}

static void test_th_ws_read_byte_at_a_time_succeeds(void **state)
{
    (void)state;
    /* The header is gathered across calls; each payload byte unmasks at its offset. */
    uint8_t frame[64];
    const char *msg = "0123456789abcdef";
    size_t len = client_frame(frame, 0x82, msg, 16, LEN16, true);
    struct transcript *t = malloc(sizeof *t);
    assert_non_null(t);
    assert_int_equal(read_all(frame, len, 1, t, NULL), TH_OK);
    assert_int_equal(t->data_len, 16);
    assert_memory_equal(t->data, msg, 16);
    assert_int_equal(t->nevents, 16);
    free(t);
}

static void test_th_ws_read_empty_data_frame_succeeds(void **state)
{
    (void)state;
    uint8_t frame[16];
    size_t len = client_frame(frame, 0x82, "", 0, LEN7, true);
    struct transcript *t = malloc(sizeof *t);
    assert_non_null(t);
    assert_int_equal(read_all(frame, len, 0, t, NULL), TH_OK);
    assert_int_equal(t->used, len);
    assert_int_equal(t->nevents, 0); /* no event for an empty data frame */
    free(t);
}

static void test_th_ws_read_text_frame_is_data_succeeds(void **state)
{
    (void)state;
    uint8_t frame[16];
    size_t len = client_frame(frame, 0x81, "hi", 2, LEN7, true);
    struct transcript *t = malloc(sizeof *t);
    assert_non_null(t);
    assert_int_equal(read_all(frame, len, 0, t, NULL), TH_OK);
    assert_string_equal(t->events, "D");
    assert_memory_equal(t->data, "hi", 2);
    free(t);
}

/* ---- th_ws_read: control frames and fragmentation ---- */

static void test_th_ws_read_ping_pong_succeeds(void **state)
{
    (void)state;
    uint8_t in[64];
    size_t len = client_frame(in, 0x89, "hi", 2, LEN7, true);
    len += client_frame(in + len, 0x8a, "", 0, LEN7, true);
    len += client_frame(in + len, 0x89, "", 0, LEN7, true);
    struct transcript *t = malloc(sizeof *t);
    assert_non_null(t);
    for (size_t piece = 0; piece <= 1; piece++) {
        assert_int_equal(read_all(in, len, piece, t, NULL), TH_OK);
        assert_string_equal(t->events, "POP");
        assert_int_equal(t->ctl_len, 2);
        assert_memory_equal(t->ctl, "hi", 2);
        assert_int_equal(t->used, len);
    }
    free(t);
}

static void test_th_ws_read_control_max_payload_succeeds(void **state)
{
    (void)state;
    uint8_t payload[TH_WS_MAX_CONTROL], in[TH_WS_MAX_CONTROL + 14];
    memset(payload, 'p', sizeof payload);
    size_t len = client_frame(in, 0x89, payload, sizeof payload, LEN7, true);
    struct transcript *t = malloc(sizeof *t);
    assert_non_null(t);
    assert_int_equal(read_all(in, len, 7, t, NULL), TH_OK);
    assert_string_equal(t->events, "P");
    assert_int_equal(t->ctl_len, TH_WS_MAX_CONTROL);
    assert_memory_equal(t->ctl, payload, sizeof payload);
    free(t);
}

static void test_th_ws_read_close_stops_reading_succeeds(void **state)
{
    (void)state;
    uint8_t in[64];
    size_t close_len = client_frame(in, 0x88, "\x03\xe8", 2, LEN7, true);
    size_t len = close_len + client_frame(in + close_len, 0x82, "late", 4, LEN7, true);
    struct th_ws_reader r;
    th_ws_reader_init(&r);
    size_t used;
    struct th_ws_event ev;
    assert_int_equal(th_ws_read(&r, in, len, &used, &ev, NULL), TH_OK);
    assert_int_equal(ev.kind, TH_WS_EV_CONTROL);
    assert_int_equal(ev.opcode, TH_WS_OP_CLOSE);
    assert_int_equal(ev.len, 2);
    assert_memory_equal(ev.data, "\x03\xe8", 2);
    assert_int_equal(used, close_len);
    assert_true(r.closed);
    assert_int_equal(th_ws_read(&r, in + used, len - used, &used, &ev, NULL), TH_OK);
    assert_int_equal(ev.kind, TH_WS_EV_NONE);
    assert_int_equal(used, 0);
}

static void test_th_ws_read_fragmented_message_succeeds(void **state)
{
    (void)state;
    /* binary (FIN 0) "ab", a ping between the fragments, continuation (FIN 1) "cd" */
    uint8_t in[64];
    size_t len = client_frame(in, 0x02, "ab", 2, LEN7, true);
    len += client_frame(in + len, 0x89, "x", 1, LEN7, true);
    len += client_frame(in + len, 0x80, "cd", 2, LEN7, true);
    struct th_ws_reader r;
    th_ws_reader_init(&r);
    size_t used, off = 0;
    struct th_ws_event ev;
    assert_int_equal(th_ws_read(&r, in, len, &used, &ev, NULL), TH_OK);
    assert_int_equal(ev.kind, TH_WS_EV_DATA);
    assert_int_equal(ev.opcode, TH_WS_OP_BINARY);
    assert_false(ev.fin);
    assert_true(ev.end);
    off += used;
    assert_int_equal(th_ws_read(&r, in + off, len - off, &used, &ev, NULL), TH_OK);
    assert_int_equal(ev.kind, TH_WS_EV_CONTROL);
    assert_int_equal(ev.opcode, TH_WS_OP_PING);
    off += used;
    assert_int_equal(th_ws_read(&r, in + off, len - off, &used, &ev, NULL), TH_OK);
    assert_int_equal(ev.kind, TH_WS_EV_DATA);
    assert_int_equal(ev.opcode, TH_WS_OP_CONT);
    assert_true(ev.fin);
    off += used;
    assert_int_equal(off, len);

    struct transcript *t = malloc(sizeof *t);
    assert_non_null(t);
    assert_int_equal(read_all(in, len, 0, t, NULL), TH_OK);
    assert_string_equal(t->events, "DPD");
    assert_int_equal(t->data_len, 4);
    assert_memory_equal(t->data, "abcd", 4);
    /* The sequence is not checked: a continuation with nothing to continue is data too. */
    len = client_frame(in, 0x80, "zz", 2, LEN7, true);
    assert_int_equal(read_all(in, len, 0, t, NULL), TH_OK);
    assert_string_equal(t->events, "D");
    free(t);
}

/* ---- th_ws_read: refusals ---- */

static void assert_ws_refused(const uint8_t *in, size_t len, const char *why)
{
    struct transcript *t = malloc(sizeof *t);
    assert_non_null(t);
    for (size_t piece = 0; piece <= 1; piece++) {
        struct th_error e = {0};
        assert_int_equal(read_all(in, len, piece, t, &e), TH_ERR_FORMAT);
        assert_non_null(strstr(e.message, why));
    }
    free(t);
}

static void test_th_ws_read_unmasked_fails(void **state)
{
    (void)state;
    uint8_t in[16];
    size_t len = client_frame(in, 0x82, "abc", 3, LEN7, false);
    assert_ws_refused(in, len, "frames must be masked");
}

static void test_th_ws_read_reserved_bits_fails(void **state)
{
    (void)state;
    static const uint8_t rsv[] = {0x40, 0x20, 0x10};
    for (size_t i = 0; i < sizeof rsv; i++) {
        uint8_t in[16];
        size_t len = client_frame(in, (uint8_t)(0x82 | rsv[i]), "abc", 3, LEN7, true);
        assert_ws_refused(in, len, "use no extensions");
    }
}

static void test_th_ws_read_reserved_opcodes_fails(void **state)
{
    (void)state;
    static const uint8_t ops[] = {3, 4, 5, 6, 7, 11, 12, 13, 14, 15};
    for (size_t i = 0; i < sizeof ops; i++) {
        uint8_t in[16];
        size_t len = client_frame(in, (uint8_t)(0x80 | ops[i]), "", 0, LEN7, true);
        assert_ws_refused(in, len, "malformed frame");
    }
}

static void test_th_ws_read_fragmented_control_fails(void **state)
{
    (void)state;
    uint8_t in[16];
    size_t len = client_frame(in, 0x09, "x", 1, LEN7, true); /* ping without FIN */
    assert_ws_refused(in, len, "malformed frame");
}

static void test_th_ws_read_control_too_long_fails(void **state)
{
    (void)state;
    uint8_t payload[126] = {0}, in[126 + 14];
    size_t len = client_frame(in, 0x89, payload, sizeof payload, LEN16, true);
    assert_ws_refused(in, len, "malformed frame");
}

static void test_th_ws_read_length_top_bit_fails(void **state)
{
    (void)state;
    /* A 64-bit length with its most significant bit set: refused on the header alone. */
    uint8_t in[14] = {0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1};
    memcpy(in + 10, MASK, 4);
    assert_ws_refused(in, sizeof in, "malformed frame");
}

/* ---- frames to a client ---- */

static void test_th_ws_frame_header_lengths_succeeds(void **state)
{
    (void)state;
    uint8_t h[TH_WS_MAX_SERVER_HEADER];
    assert_int_equal(th_ws_frame_header(TH_WS_OP_BINARY, 0, h), 2);
    assert_memory_equal(h, "\x82\x00", 2);
    assert_int_equal(th_ws_frame_header(TH_WS_OP_BINARY, 125, h), 2);
    assert_memory_equal(h, "\x82\x7d", 2);
    assert_int_equal(th_ws_frame_header(TH_WS_OP_CLOSE, 126, h), 4);
    assert_memory_equal(h, "\x88\x7e\x00\x7e", 4);
    assert_int_equal(th_ws_frame_header(TH_WS_OP_BINARY, 65535, h), 4);
    assert_memory_equal(h, "\x82\x7e\xff\xff", 4);
    assert_int_equal(th_ws_frame_header(TH_WS_OP_BINARY, 65536, h), 10);
    assert_memory_equal(h, "\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00", 10);
    assert_int_equal(th_ws_frame_header(TH_WS_OP_PONG, 0x0102030405060708ULL, h), 10);
    assert_memory_equal(h, "\x8a\x7f\x01\x02\x03\x04\x05\x06\x07\x08", 10);
}

static void test_th_ws_close_payload_succeeds(void **state)
{
    (void)state;
    uint8_t out[TH_WS_MAX_CONTROL];
    assert_int_equal(th_ws_close_payload(1002, "malformed frame", out), 17);
    assert_memory_equal(out,
                        "\x03\xea"
                        "malformed frame",
                        17);
    assert_int_equal(th_ws_close_payload(1000, "", out), 2);
    char long_why[200];
    memset(long_why, 'w', sizeof long_why - 1);
    long_why[sizeof long_why - 1] = '\0';
    assert_int_equal(th_ws_close_payload(1009, long_why, out), 122); /* the reason is cut to 120 */
}

static void test_th_ws_close_reply_code_valid_succeeds(void **state)
{
    (void)state;
    assert_int_equal(th_ws_close_reply_code(NULL, 0), 1000);
    assert_int_equal(th_ws_close_reply_code((const uint8_t *)"\x03\xe9", 2), 1001);
    assert_int_equal(th_ws_close_reply_code((const uint8_t *)"\x0f\xa0"
                                                             "bye",
                                            5),
                     4000);
    assert_int_equal(th_ws_close_reply_code((const uint8_t *)"\x13\x87", 2), 4999);
}

static void test_th_ws_close_reply_code_invalid_fails(void **state)
{
    (void)state;
    /* Codes that may not appear on the wire are answered with 1000. */
    assert_int_equal(th_ws_close_reply_code((const uint8_t *)"\x03\xe7", 2), 1000); /* 999 */
    assert_int_equal(th_ws_close_reply_code((const uint8_t *)"\x03\xed", 2), 1000); /* 1005 */
    assert_int_equal(th_ws_close_reply_code((const uint8_t *)"\x03\xee", 2), 1000); /* 1006 */
    assert_int_equal(th_ws_close_reply_code((const uint8_t *)"\x13\x88", 2), 1000); /* 5000 */
    assert_int_equal(th_ws_close_reply_code((const uint8_t *)"\x03", 1), 1000);
}

/* ---- the handshake ---- */

static void test_th_ws_accept_key_rfc_example_succeeds(void **state)
{
    (void)state;
    /* RFC 6455 section 1.3. */
    char out[TH_WS_ACCEPT_BUF];
    assert_int_equal(th_ws_accept_key(th_slice_of("dGhlIHNhbXBsZSBub25jZQ=="), out, sizeof out),
                     TH_OK);
    assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

static void test_th_ws_accept_key_limits_fails(void **state)
{
    (void)state;
    char out[TH_WS_ACCEPT_BUF];
    char key[66];
    memset(key, 'k', 65);
    key[65] = '\0';
    assert_int_equal(th_ws_accept_key(th_slice_of(key), out, sizeof out), TH_ERR_INVAL);
    key[64] = '\0';
    assert_int_equal(th_ws_accept_key(th_slice_of(key), out, sizeof out), TH_OK);
    assert_int_equal(th_ws_accept_key(th_slice_of("abc"), out, sizeof out - 1), TH_ERR_BUFFER);
}

static void test_th_ws_pick_subprotocol_succeeds(void **state)
{
    (void)state;
    struct th_slice s = th_slice_of("mqtt");
    assert_string_equal(th_ws_pick_subprotocol(&s), "mqtt");
    s = th_slice_of("mqttv3.1");
    assert_string_equal(th_ws_pick_subprotocol(&s), "mqttv3.1");
    s = th_slice_of("mqttv3.1, MQTT");
    assert_string_equal(th_ws_pick_subprotocol(&s), "mqtt");
    s = th_slice_of("wamp,MQTTv3.1");
    assert_string_equal(th_ws_pick_subprotocol(&s), "mqttv3.1");
}

static void test_th_ws_pick_subprotocol_none_fails(void **state)
{
    (void)state;
    assert_null(th_ws_pick_subprotocol(NULL));
    struct th_slice s = th_slice_of("");
    assert_null(th_ws_pick_subprotocol(&s));
    s = th_slice_of("AMQPWSB10, mqtt5");
    assert_null(th_ws_pick_subprotocol(&s));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_th_ws_read_length_7bit_succeeds),
        cmocka_unit_test(test_th_ws_read_length_16bit_succeeds),
        cmocka_unit_test(test_th_ws_read_length_64bit_succeeds),
        cmocka_unit_test(test_th_ws_read_non_minimal_length_succeeds),
        cmocka_unit_test(test_th_ws_read_one_event_succeeds),
        cmocka_unit_test(test_th_ws_read_byte_at_a_time_succeeds),
        cmocka_unit_test(test_th_ws_read_empty_data_frame_succeeds),
        cmocka_unit_test(test_th_ws_read_text_frame_is_data_succeeds),
        cmocka_unit_test(test_th_ws_read_ping_pong_succeeds),
        cmocka_unit_test(test_th_ws_read_control_max_payload_succeeds),
        cmocka_unit_test(test_th_ws_read_close_stops_reading_succeeds),
        cmocka_unit_test(test_th_ws_read_fragmented_message_succeeds),
        cmocka_unit_test(test_th_ws_read_unmasked_fails),
        cmocka_unit_test(test_th_ws_read_reserved_bits_fails),
        cmocka_unit_test(test_th_ws_read_reserved_opcodes_fails),
        cmocka_unit_test(test_th_ws_read_fragmented_control_fails),
        cmocka_unit_test(test_th_ws_read_control_too_long_fails),
        cmocka_unit_test(test_th_ws_read_length_top_bit_fails),
        cmocka_unit_test(test_th_ws_frame_header_lengths_succeeds),
        cmocka_unit_test(test_th_ws_close_payload_succeeds),
        cmocka_unit_test(test_th_ws_close_reply_code_valid_succeeds),
        cmocka_unit_test(test_th_ws_close_reply_code_invalid_fails),
        cmocka_unit_test(test_th_ws_accept_key_rfc_example_succeeds),
        cmocka_unit_test(test_th_ws_accept_key_limits_fails),
        cmocka_unit_test(test_th_ws_pick_subprotocol_succeeds),
        cmocka_unit_test(test_th_ws_pick_subprotocol_none_fails),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
