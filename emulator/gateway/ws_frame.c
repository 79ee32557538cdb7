/*
 * ws_frame.c - RFC 6455 framing and handshake helpers of the gateway's MQTT
 * over WebSockets endpoint (ws_frame.h). Pure: bytes in, slices out.
 */
#include "ws_frame.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/sha.h>

#include "util.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

void th_ws_reader_init(struct th_ws_reader *r)
{
    memset(r, 0, sizeof *r);
}

static th_result protocol_error(struct th_error *err, const char *why)
{
    return th_error_set(err, TH_ERR_FORMAT, 0, "%s", why);
}

/* The frame header in r->hdr is complete: take its fields, refuse what we do not accept. */
static th_result start_frame(struct th_ws_reader *r, struct th_error *err)
{
    unsigned len7 = r->hdr[1] & 0x7f;
    uint64_t len = len7;
    size_t at = 2;
    if (len7 == 126) {
        len = (uint64_t)r->hdr[2] << 8 | r->hdr[3];
        at = 4;
    } else if (len7 == 127) {
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | r->hdr[2 + i];
        at = 10;
    }
    memcpy(r->mask, r->hdr + at, 4);
    r->fin = r->hdr[0] & 0x80;
    r->opcode = r->hdr[0] & 0x0f;
    r->left = len;
    r->mask_pos = 0;
    r->ctl_len = 0;
    r->hdr_len = 0;
    bool control = r->opcode >= 8;
    if ((control && (!r->fin || len > TH_WS_MAX_CONTROL)) ||
        (!control && r->opcode != TH_WS_OP_CONT && r->opcode != TH_WS_OP_TEXT &&
         r->opcode != TH_WS_OP_BINARY) ||
        r->opcode >= 11 || (len >> 63))
        return protocol_error(err, "malformed frame");
    return TH_OK;
}

/* A control frame's payload is complete: report it. */
static void control_event(struct th_ws_reader *r, struct th_ws_event *ev)
{
    ev->kind = TH_WS_EV_CONTROL;
    ev->opcode = r->opcode;
    ev->fin = true;
    ev->end = true;
    ev->data = r->ctl;
    ev->len = r->ctl_len;
    if (r->opcode == TH_WS_OP_CLOSE)
        r->closed = true;
}

th_result th_ws_read(struct th_ws_reader *r, const uint8_t *in, size_t len, size_t *used,
                     struct th_ws_event *ev, struct th_error *err)
{
    memset(ev, 0, sizeof *ev);
    size_t i = 0;
    while (i < len && !r->closed) {
        if (!r->in_payload) {
            r->hdr[r->hdr_len++] = in[i++];
            if (r->hdr_len == 2) {
                unsigned len7 = r->hdr[1] & 0x7f;
                r->hdr_need = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + 4;
                if ((r->hdr[0] & 0x70) || !(r->hdr[1] & 0x80)) {
                    *used = i;
                    return protocol_error(err, "frames must be masked and use no extensions");
                }
            }
            if (r->hdr_len < 2 || r->hdr_len < r->hdr_need)
                continue;
            th_result rc = start_frame(r, err);
            if (rc != TH_OK) {
                *used = i;
                return rc;
            }
            r->in_payload = r->left > 0;
            if (!r->in_payload && r->opcode >= 8) {
                control_event(r, ev);
                break;
            }
            continue;
        }
        size_t take = len - i < r->left ? len - i : (size_t)r->left;
        bool control = r->opcode >= 8;
        if (control) {
            for (size_t k = 0; k < take; k++)
                r->ctl[r->ctl_len++] = in[i + k] ^ r->mask[r->mask_pos++ & 3];
        } else {
            ev->kind = TH_WS_EV_DATA;
            ev->opcode = r->opcode;
            ev->fin = r->fin;
            ev->data = in + i;
            ev->len = take;
            memcpy(ev->mask, r->mask, 4);
            ev->mask_pos = r->mask_pos;
            r->mask_pos += (unsigned)take;
        }
        i += take;
        r->left -= take;
        if (r->left == 0) {
            r->in_payload = false;
            ev->end = true;
            if (control)
                control_event(r, ev);
        }
        if (ev->kind != TH_WS_EV_NONE)
            break;
    }
    *used = i;
    return TH_OK;
}

void th_ws_unmask(const struct th_ws_event *ev, uint8_t *dst)
{
    for (size_t k = 0; k < ev->len; k++)
        dst[k] = ev->data[k] ^ ev->mask[(ev->mask_pos + k) & 3];
}

size_t th_ws_frame_header(int opcode, uint64_t len, uint8_t hdr[TH_WS_MAX_SERVER_HEADER])
{
    size_t h = 0;
    hdr[h++] = (uint8_t)(0x80 | (opcode & 0x0f));
    if (len < 126) {
        hdr[h++] = (uint8_t)len;
    } else if (len <= 0xffff) {
        hdr[h++] = 126;
        hdr[h++] = (uint8_t)(len >> 8);
        hdr[h++] = (uint8_t)len;
    } else {
        hdr[h++] = 127;
        for (int i = 7; i >= 0; i--)
            hdr[h++] = (uint8_t)(len >> (8 * i));
    }
    return h;
}

size_t th_ws_close_payload(unsigned code, const char *why, uint8_t out[TH_WS_MAX_CONTROL])
{
    size_t n = strlen(why) > 120 ? 120 : strlen(why);
    out[0] = (uint8_t)(code >> 8);
    out[1] = (uint8_t)code;
    memcpy(out + 2, why, n);
    return n + 2;
}

unsigned th_ws_close_reply_code(const uint8_t *payload, size_t len)
{
    unsigned code = len >= 2 ? (unsigned)(payload[0] << 8 | payload[1]) : 1000;
    if (code < 1000 || code >= 5000 || code == 1005 || code == 1006)
        code = 1000;
    return code;
}

th_result th_ws_accept_key(struct th_slice key, char *out, size_t size)
{
    if (key.len > 64)
        return TH_ERR_INVAL;
    if (size < TH_WS_ACCEPT_BUF)
        return TH_ERR_BUFFER;
    char src[64 + sizeof WS_GUID];
    unsigned char digest[SHA_DIGEST_LENGTH];
    if (key.len)
        memcpy(src, key.ptr, key.len);
    memcpy(src + key.len, WS_GUID, sizeof WS_GUID - 1);
    SHA1((const unsigned char *)src, key.len + sizeof WS_GUID - 1, digest);
    return th_b64_encode(digest, sizeof digest, out, size);
}

const char *th_ws_pick_subprotocol(const struct th_slice *offered)
{
    const char *found = NULL;
    const char *p = offered ? offered->ptr : NULL, *end = p ? p + offered->len : NULL;
    while (p && p < end) {
        while (p < end && (*p == ' ' || *p == ','))
            p++;
        const char *q = p;
        while (q < end && *q != ',' && *q != ' ')
            q++;
        size_t n = (size_t)(q - p);
        if (n == 4 && !strncasecmp(p, "mqtt", 4))
            return "mqtt";
        if (n == 8 && !strncasecmp(p, "mqttv3.1", 8))
            found = "mqttv3.1";
        p = q;
    }
    return found;
}
