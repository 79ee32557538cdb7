/*
 * gw_ws.c - MQTT over WebSockets at /$iothub/websocket (real-clients.md
 * sections 2.1 and 7; mosquitto-plugin-facts.md section 3.4): the RFC 6455
 * handshake (subprotocol mqtt or mqttv3.1), and a bridge that carries the
 * payload of the client's binary frames to a new raw connection to the
 * broker's MQTT listener and the broker's bytes back as binary frames.
 *
 * Frames are read and written with ws_frame.c (pure, unit-tested and
 * fuzzed); this file is the glue around it. The bridge does not parse MQTT:
 * the broker and the plugin authenticate the CONNECT as for any TCP
 * client. Both directions are written as soon as the other side is
 * writable (no timers, so no added latency). Each direction's queue is
 * bounded: above GW_BRIDGE_HIGH bytes the reading side is paused with
 * lws_rx_flow_control until the queue drains below GW_BRIDGE_LOW.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gw_private.h"
#include "mqtt_connect.h"
#include "tls_rewrite.h"
#include "util.h"

/* A first packet longer than this is passed on unread (a CONNECT is far shorter). */
#define GW_FIRST_PACKET_MAX (64 * 1024)

/* ---- frames to the client ---------------------------------------------------------------- */

/* Append one unmasked frame to the client's output; false on out-of-memory. */
static bool put_frame(struct gw_conn *c, int opcode, const void *p, size_t n)
{
    uint8_t hdr[TH_WS_MAX_SERVER_HEADER];
    size_t h = th_ws_frame_header(opcode, n, hdr);
    return gw_buf_put(&c->out, hdr, h) && gw_buf_put(&c->out, p, n);
}

/* Queue a close frame with `code` (once) and close the connection after it. */
static void send_close(struct gw_conn *c, unsigned code, const char *why)
{
    if (!c->ws_close_sent) {
        uint8_t body[TH_WS_MAX_CONTROL];
        put_frame(c, TH_WS_OP_CLOSE, body, th_ws_close_payload(code, why, body));
        c->ws_close_sent = true;
    }
    c->close_after = true;
    gw_conn_want_write(c);
}

/* ---- the bridge -------------------------------------------------------------------------- */

static void bridge_free_if_done(struct gw_bridge *b)
{
    if (b->ws || b->broker)
        return;
    gw_buf_free(&b->to_broker);
    free(b);
}

/* Close the broker side from outside its own callbacks. */
static void kill_broker(struct gw_bridge *b)
{
    if (b->broker)
        lws_set_timeout(b->broker, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

/* The broker side is gone (closed, refused or never connected). */
static void broker_gone(struct gw_bridge *b, unsigned code, const char *why)
{
    b->broker = NULL;
    b->broker_up = false;
    if (b->ws)
        send_close(b->ws, code, why);
    bridge_free_if_done(b);
}

void gw_ws_closed(struct gw_conn *c)
{
    struct gw_bridge *b = c->bridge;
    c->bridge = NULL;
    b->ws = NULL;
    if (b->gw->verbose)
        gw_log(b->gw, false, "websocket | closed | peer=%s", c->peer);
    /* What the client sent last (often its DISCONNECT) still goes to the broker; a client
     * that left before its first packet was whole leaves nothing to pass on. */
    if (!b->first_done) {
        kill_broker(b);
    } else if (b->broker && b->broker_up && gw_buf_size(&b->to_broker)) {
        b->close_broker_when_flushed = true;
        lws_callback_on_writable(b->broker);
    } else if (b->broker && !b->broker_up && gw_buf_size(&b->to_broker)) {
        b->close_broker_when_flushed = true; /* flushed once connected */
    } else {
        kill_broker(b);
    }
    bridge_free_if_done(b);
}

static bool connect_broker(struct gw_bridge *b)
{
    struct th_gateway *gw = b->gw;
    char unix_addr[256];
    struct lws_client_connect_info i;
    memset(&i, 0, sizeof i);
    i.context = gw->ctx;
    i.vhost = gw->vhost;
    if (gw->broker_port) {
        i.address = gw->broker_host;
        i.port = gw->broker_port;
    } else {
        snprintf(unix_addr, sizeof unix_addr, "+%s", gw->broker_host);
        i.address = unix_addr;
    }
    i.host = i.address;
    i.origin = i.address;
    i.method = "RAW";
    i.local_protocol_name = "twinhub-broker";
    i.opaque_user_data = b;
    b->connecting = true;
    struct lws *wsi = lws_client_connect_via_info(&i);
    b->connecting = false;
    if (b->connect_failed || !wsi) {
        if (wsi && !b->connect_failed)
            lws_set_opaque_user_data(wsi, NULL);
        b->broker = NULL;
        return false;
    }
    if (!b->broker_up)
        b->broker = wsi;
    return true;
}

/* ---- the handshake ----------------------------------------------------------------------- */

static bool header_has(const struct gw_req *r, const char *name, const char *token)
{
    const struct gw_slice *h = gw_req_header(r, name);
    if (!h)
        return false;
    size_t n = strlen(token);
    for (size_t i = 0; i + n <= h->n; i++)
        if (!strncasecmp(h->p + i, token, n))
            return true;
    return false;
}

void gw_ws_upgrade(struct gw_conn *c)
{
    struct gw_req *r = &c->req;
    const struct gw_slice *key = gw_req_header(r, "Sec-WebSocket-Key");
    const struct gw_slice *ver = gw_req_header(r, "Sec-WebSocket-Version");
    if (r->method != GW_GET || !header_has(r, "Upgrade", "websocket") ||
        !header_has(r, "Connection", "upgrade") || !key || !key->n || key->n > 64 || !r->http11) {
        gw_rest_error(c, 400, TH_EC_ARGUMENT_INVALID,
                      "/$iothub/websocket takes WebSocket upgrades only (GET, Upgrade: websocket, "
                      "Sec-WebSocket-Protocol: mqtt)");
        return;
    }
    if (!ver || ver->n != 2 || memcmp(ver->p, "13", 2)) {
        r->keep_alive = false;
        gw_http_respond(c, 426, "Sec-WebSocket-Version: 13\r\n", NULL, NULL, 0);
        return;
    }
    const struct gw_slice *offered = gw_req_header(r, "Sec-WebSocket-Protocol");
    struct th_slice offered_th = gw_slice_to_th(offered);
    const char *proto = th_ws_pick_subprotocol(offered ? &offered_th : NULL);
    if (!proto) {
        gw_rest_error(c, 400, TH_EC_ARGUMENT_INVALID,
                      "the WebSocket subprotocol must be mqtt (or mqttv3.1); twinhub does not "
                      "emulate AMQP over WebSockets");
        return;
    }

    struct gw_bridge *b = calloc(1, sizeof *b);
    if (!b) {
        gw_rest_error(c, 503, TH_EC_SERVICE_UNAVAILABLE, "out of memory");
        return;
    }
    b->gw = c->gw;
    b->ws = c;
    b->first_done = false; /* a DPS client id is rewritten with or without the front secret */
    c->bridge = b;
    if (!connect_broker(b)) {
        c->bridge = NULL;
        free(b);
        gw_rest_error(c, 503, TH_EC_SERVICE_UNAVAILABLE,
                      "the broker's MQTT listener cannot be reached");
        return;
    }

    char accept[TH_WS_ACCEPT_BUF];
    if (th_ws_accept_key(gw_slice_to_th(key), accept, sizeof accept) != TH_OK)
        accept[0] = '\0';
    if (c->gw->verbose)
        gw_log(c->gw, false, "websocket | open | peer=%s subprotocol=%s", c->peer, proto);
    gw_buf_putf(&c->out,
                "HTTP/1.1 101 Switching Protocols\r\n"
                "Upgrade: websocket\r\n"
                "Connection: Upgrade\r\n"
                "Sec-WebSocket-Accept: %s\r\n"
                "Sec-WebSocket-Protocol: %s\r\n"
                "\r\n",
                accept, proto);
    free(r->head);
    gw_buf_free(&r->body);
    memset(r, 0, sizeof *r);
    c->state = GW_C_WS;
    th_ws_reader_init(&c->ws);
    lws_set_timeout(c->wsi, NO_PENDING_TIMEOUT, 0);
    gw_conn_want_write(c);
    /* Anything the client sent after its handshake is WebSocket data already. */
    if (gw_buf_size(&c->in)) {
        struct gw_buf early = c->in;
        memset(&c->in, 0, sizeof c->in);
        gw_ws_rx(c, gw_buf_head(&early), gw_buf_size(&early));
        gw_buf_free(&early);
    }
}

/* ---- frames from the client -------------------------------------------------------------- */

static void pause_ws_if_full(struct gw_conn *c, struct gw_bridge *b)
{
    if (gw_buf_size(&b->to_broker) > GW_BRIDGE_HARD) {
        send_close(c, 1009, "too much unsent data");
        return;
    }
    if (gw_buf_size(&b->to_broker) > GW_BRIDGE_HIGH && !c->rx_paused) {
        c->rx_paused = true;
        lws_rx_flow_control(c->wsi, 0);
    }
}

/* A complete control frame (close, ping, pong) from the client. */
static void control_frame(struct gw_conn *c, int opcode, const uint8_t *p, size_t n)
{
    if (opcode == TH_WS_OP_PING) {
        if (!c->ws_close_sent && put_frame(c, TH_WS_OP_PONG, p, n))
            gw_conn_want_write(c);
    } else if (opcode == TH_WS_OP_CLOSE) {
        send_close(c, th_ws_close_reply_code(p, n), "");
    }
}

static int broker_write(struct gw_bridge *b, bool writable);

/*
 * Hold the client's bytes until its first MQTT packet is whole, then rewrite
 * it when the client presented a certificate and no password, or registers
 * with DPS (tlsshim/tls_rewrite.h).
 * False while waiting; also false after closing the WebSocket on failure.
 */
static bool first_packet(struct gw_conn *c, struct gw_bridge *b)
{
    size_t avail = gw_buf_size(&b->to_broker), plen;
    const uint8_t *head = gw_buf_head(&b->to_broker);
    th_result r = th_mqtt_packet_length(head, avail, &plen);
    if (r == TH_ERR_BUFFER || (r == TH_OK && plen > avail && plen <= GW_FIRST_PACKET_MAX))
        return false;
    b->first_done = true;
    if (r != TH_OK || plen > avail)
        return true; /* not ours to read: the broker refuses it */
    uint8_t *pk = NULL;
    size_t pk_len = 0;
    int rw = th_tlsfront_rewrite_connect(lws_get_ssl(c->wsi),
                                         c->gw->has_front_secret ? c->gw->front_secret : NULL, head,
                                         plen, &pk, &pk_len);
    if (rw < 0) {
        send_close(c, 1011, "out of memory");
        return false;
    }
    if (rw > 0) {
        struct gw_buf nb = {0};
        if (!gw_buf_reserve(&nb, pk_len + avail - plen)) {
            free(pk);
            send_close(c, 1011, "out of memory");
            return false;
        }
        memcpy(nb.data, pk, pk_len);
        memcpy(nb.data + pk_len, head + plen, avail - plen);
        nb.len = pk_len + avail - plen;
        free(pk);
        gw_buf_free(&b->to_broker);
        b->to_broker = nb;
        if (c->gw->verbose)
            gw_log(c->gw, false, "websocket | first packet rewritten | peer=%s", c->peer);
    }
    return true;
}

void gw_ws_rx(struct gw_conn *c, const uint8_t *p, size_t n)
{
    struct gw_bridge *b = c->bridge;
    bool idle = b && gw_buf_size(&b->to_broker) == 0;
    while (n > 0 && !c->ws.closed && !c->close_after) {
        size_t used;
        struct th_ws_event ev;
        struct th_error e = {0};
        if (th_ws_read(&c->ws, p, n, &used, &ev, &e) != TH_OK) {
            send_close(c, 1002, e.message);
            return;
        }
        p += used;
        n -= used;
        if (ev.kind == TH_WS_EV_CONTROL) {
            control_frame(c, ev.opcode, ev.data, ev.len);
        } else if (ev.kind == TH_WS_EV_DATA && b) {
            if (!gw_buf_reserve(&b->to_broker, ev.len)) {
                send_close(c, 1011, "out of memory");
                return;
            }
            th_ws_unmask(&ev, b->to_broker.data + b->to_broker.len);
            b->to_broker.len += ev.len;
        }
    }
    if (b && !b->first_done && !first_packet(c, b))
        return;
    if (b && gw_buf_size(&b->to_broker)) {
        if (b->broker && b->broker_up) {
            if (idle && broker_write(b, false) < 0)
                kill_broker(b);
            else if (!idle)
                lws_callback_on_writable(b->broker);
        }
        pause_ws_if_full(c, b);
    }
}

void gw_ws_drained(struct gw_conn *c)
{
    struct gw_bridge *b = c->bridge;
    if (b && b->broker && b->broker_paused && gw_buf_size(&c->out) < GW_BRIDGE_LOW) {
        b->broker_paused = false;
        lws_rx_flow_control(b->broker, 1);
    }
}

/* ---- the broker side --------------------------------------------------------------------- */

/*
 * Hand up to GW_IO_CHUNK bytes of the client's MQTT stream to the broker
 * connection. From its writable callback (`writable`) a -1 return closes it;
 * called directly, a failure is left to lws to report.
 */
static int broker_write(struct gw_bridge *b, bool writable)
{
    struct lws *wsi = b->broker;
    if (!b->first_done)
        return 0; /* gw_ws_rx asks for a write once the first packet is through */
    size_t n = gw_buf_size(&b->to_broker);
    if (n) {
        if (n > GW_IO_CHUNK)
            n = GW_IO_CHUNK;
        if (lws_write(wsi, gw_buf_head(&b->to_broker), n, LWS_WRITE_RAW) < 0)
            return -1;
        gw_buf_consume(&b->to_broker, n);
    }
    if (gw_buf_size(&b->to_broker) || (b->close_broker_when_flushed && n))
        lws_callback_on_writable(wsi);
    else if (writable && (b->close_broker_when_flushed || !b->ws))
        return -1;
    if (b->ws && b->ws->rx_paused && gw_buf_size(&b->to_broker) < GW_BRIDGE_LOW) {
        b->ws->rx_paused = false;
        lws_rx_flow_control(b->ws->wsi, 1);
    }
    return 0;
}

int gw_broker_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                       size_t len)
{
    struct gw_bridge *b = lws_get_opaque_user_data(wsi);
    (void)user;
    switch (reason) {
    case LWS_CALLBACK_RAW_CONNECTED:
        if (!b)
            return -1;
        b->broker = wsi;
        b->broker_up = true;
        if (gw_buf_size(&b->to_broker))
            lws_callback_on_writable(wsi);
        else if (!b->ws)
            return -1; /* the client left before we got here, with nothing to say */
        return 0;

    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        if (b) {
            gw_log(b->gw, true, "websocket | broker unreachable | %s",
                   in ? (const char *)in : "connection failed");
            lws_set_opaque_user_data(wsi, NULL);
            if (b->connecting)
                b->connect_failed = true; /* gw_ws_upgrade answers the HTTP request */
            else
                broker_gone(b, 1011, "the broker cannot be reached");
        }
        return 0;

    case LWS_CALLBACK_RAW_RX: {
        if (!b)
            return -1;
        if (!b->ws || b->ws->ws_close_sent)
            return 0; /* the client is gone or closing: drop what the broker still sends */
        bool idle = gw_buf_size(&b->ws->out) == 0;
        if (!put_frame(b->ws, TH_WS_OP_BINARY, in, len)) {
            send_close(b->ws, 1011, "out of memory");
            return 0;
        }
        if (idle)
            gw_conn_write_now(b->ws);
        else
            gw_conn_want_write(b->ws);
        if (gw_buf_size(&b->ws->out) > GW_BRIDGE_HARD) {
            send_close(b->ws, 1008, "the client does not read");
        } else if (gw_buf_size(&b->ws->out) > GW_BRIDGE_HIGH && !b->broker_paused) {
            b->broker_paused = true;
            lws_rx_flow_control(wsi, 0);
        }
        return 0;
    }

    case LWS_CALLBACK_RAW_WRITEABLE:
        if (!b)
            return -1;
        return broker_write(b, true);

    case LWS_CALLBACK_RAW_CLOSE:
        if (b) {
            lws_set_opaque_user_data(wsi, NULL);
            broker_gone(b, 1000, "");
        }
        return 0;

    default:
        return 0;
    }
}
