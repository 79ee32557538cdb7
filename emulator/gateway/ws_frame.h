/*
 * ws_frame.h - the WebSocket protocol (RFC 6455) as the gateway's MQTT over
 * WebSockets endpoint speaks it: reading the frames a client sends, writing
 * frame headers and close payloads, the handshake's accept key and the
 * choice of subprotocol. Pure code: no libwebsockets, no logging, no
 * allocation; the reader returns slices of its input. The glue (gw_ws.c)
 * owns the buffers and the bridge to the broker.
 *
 * Decisions where the RFC lets a server choose, or where we are lenient:
 * - Client frames must be masked and set no RSV bit (no extension is
 *   negotiated); opcodes 3-7 and 11-15 are refused; control frames must be
 *   final and carry at most 125 bytes; a 64-bit length must not set its top
 *   bit. Each of these is a protocol error (the caller closes with 1002).
 * - Lengths need not be minimal (a 16-bit or 64-bit length may hold a small
 *   value), and data frames have no size limit here: the bridge bounds what
 *   it queues.
 * - Text, binary and continuation frames are all data: their payloads are
 *   handed on in order, without checking the fragmentation sequence or UTF-8
 *   (MQTT clients send binary frames; the broker parses the MQTT stream).
 * - After a close frame nothing more is read.
 */
#ifndef TH_WS_FRAME_H
#define TH_WS_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "slice.h"
#include "th_result.h"

#define TH_WS_MAX_CONTROL 125      /* payload of a control frame */
#define TH_WS_MAX_SERVER_HEADER 10 /* header of an unmasked frame with a 64-bit length */
#define TH_WS_ACCEPT_BUF 29        /* base64 of a SHA-1 digest, NUL included */

enum th_ws_opcode {
    TH_WS_OP_CONT = 0,
    TH_WS_OP_TEXT = 1,
    TH_WS_OP_BINARY = 2,
    TH_WS_OP_CLOSE = 8,
    TH_WS_OP_PING = 9,
    TH_WS_OP_PONG = 10,
};

/* ---- frames from a client ---- */

/* Reader state, one per connection; zeroed by th_ws_reader_init, nothing to free. */
struct th_ws_reader {
    bool in_payload; /* else reading a header */
    uint8_t hdr[14]; /* 2 bytes, 2 or 8 length bytes, 4 mask bytes */
    size_t hdr_len, hdr_need;
    uint64_t left; /* payload bytes left in this frame */
    uint8_t mask[4];
    unsigned mask_pos; /* payload bytes of this frame read so far (mod 4 is what counts) */
    int opcode;        /* of the current frame */
    bool fin;
    uint8_t ctl[TH_WS_MAX_CONTROL]; /* a control frame's payload, unmasked */
    size_t ctl_len;
    bool closed; /* a close frame was read */
};

void th_ws_reader_init(struct th_ws_reader *r);

enum th_ws_event_kind {
    TH_WS_EV_NONE,    /* the input is used up */
    TH_WS_EV_DATA,    /* payload bytes of a data frame (text, binary or continuation) */
    TH_WS_EV_CONTROL, /* a whole control frame (close, ping or pong) */
};

struct th_ws_event {
    enum th_ws_event_kind kind;
    int opcode; /* of the frame */
    bool fin;   /* the frame's FIN bit */
    bool end;   /* DATA: this run ends the frame's payload */
    /*
     * DATA: masked bytes, a slice of the input (unmask with th_ws_unmask);
     * CONTROL: the unmasked payload, in the reader (valid until its next call).
     */
    const uint8_t *data;
    size_t len;
    uint8_t mask[4];   /* DATA: the frame's key */
    unsigned mask_pos; /* DATA: offset of data in the frame's payload */
};

/*
 * Read client frames from [in, in+len) up to the next event, and set *used
 * to the input bytes consumed: call again with the rest until it reports
 * TH_WS_EV_NONE. A frame may arrive in pieces of any size; an empty data
 * frame gives no event. TH_ERR_FORMAT (with a message for the close frame)
 * on a protocol error; the state is unspecified afterwards.
 */
TH_NODISCARD th_result th_ws_read(struct th_ws_reader *r, const uint8_t *in, size_t len,
                                  size_t *used, struct th_ws_event *ev, struct th_error *err);

/* Unmask a DATA event's ev->len bytes into dst (which may be ev->data itself). */
void th_ws_unmask(const struct th_ws_event *ev, uint8_t *dst);

/* ---- frames to a client ---- */

/*
 * The header of an unmasked, final frame with `opcode` and a payload of `len`
 * bytes (7-bit, 16-bit or 64-bit length, whichever is shortest) into hdr;
 * returns its length (2, 4 or 10).
 */
size_t th_ws_frame_header(int opcode, uint64_t len, uint8_t hdr[TH_WS_MAX_SERVER_HEADER]);

/*
 * The payload of a close frame: `code` then `why`, cut to 120 bytes; returns
 * its length.
 */
size_t th_ws_close_payload(unsigned code, const char *why, uint8_t out[TH_WS_MAX_CONTROL]);

/*
 * The code to answer a client's close frame with: its own, when it sent one
 * that may appear on the wire (1000-4999 but not 1005 or 1006), else 1000.
 */
unsigned th_ws_close_reply_code(const uint8_t *payload, size_t len);

/* ---- the handshake ---- */

/*
 * Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 section 4.2.2):
 * base64(SHA-1(key + GUID)), NUL-terminated. TH_ERR_INVAL for a key longer
 * than 64 bytes, TH_ERR_BUFFER when size < TH_WS_ACCEPT_BUF.
 */
TH_NODISCARD th_result th_ws_accept_key(struct th_slice key, char *out, size_t size);

/*
 * The subprotocol to answer from a Sec-WebSocket-Protocol list (NULL when
 * the header is absent): "mqtt" when offered, else "mqttv3.1" when offered
 * (case-insensitive), else NULL.
 */
const char *th_ws_pick_subprotocol(const struct th_slice *offered);

#endif
