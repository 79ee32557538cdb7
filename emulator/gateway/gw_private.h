/*
 * gw_private.h - private header of the gateway (gateway.h): the gateway
 * state, one struct per TLS connection (an HTTP/1.1 exchange that may turn
 * into a WebSocket), the WebSocket-to-broker bridge, the control API calls
 * in flight, and the functions each file provides.
 *
 * Threads: everything here belongs to the libwebsockets service thread,
 * except what is marked "any thread" (the inbox, filled by libmosquitto's
 * network thread, and the published state read by serve).
 */
#ifndef TH_GW_PRIVATE_H
#define TH_GW_PRIVATE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>
#include <libwebsockets.h>

#include "gateway.h"
#include "gw_buf.h"
#include "http_parse.h" /* TH_HTTP_MAX_HEAD, TH_HTTP_MAX_HEADERS */
#include "registry.h"   /* TH_PERM_* */
#include "th_limits.h"
#include "ws_frame.h"

#define GW_MAX_BODY                                                                                \
    TH_JSON_MAX_INPUT_BYTES    /* larger request bodies get 413; keeps commands under the control  \
                                  API's limit */
#define GW_MAX_PIPELINED 65536 /* input held while a request waits for the hub */
#define GW_IO_CHUNK 65536      /* bytes handed to lws_write per writable callback */
#define GW_BRIDGE_HIGH (256 * 1024)      /* pause the source side above this many queued bytes */
#define GW_BRIDGE_LOW (64 * 1024)        /* and resume it below this */
#define GW_BRIDGE_HARD (8 * 1024 * 1024) /* a peer that overruns this is dropped */
#define GW_HEAD_TIMEOUT_S 30             /* to send a request's head and body */
#define GW_IDLE_TIMEOUT_S 120            /* keep-alive connection with no request */
#define GW_CALL_TIMEOUT_S 30             /* control answer, for commands other than methods */
#define GW_ID_BUF (TH_MAX_ID_LEN + 1)

/* ---- the HTTP request being handled ---- */

/* A view into the request head: the parsers' struct th_slice, under the names gw_rest.c uses. */
struct gw_slice {
    const char *p;
    size_t n;
};
static inline struct gw_slice gw_slice_from_th(struct th_slice s)
{
    return (struct gw_slice){s.ptr, s.len};
}
static inline struct th_slice gw_slice_to_th(const struct gw_slice *s)
{
    return (struct th_slice){s ? s->p : NULL, s ? s->n : 0};
}

struct gw_header {
    struct gw_slice name, value;
};

/* The parser's methods under the names of the route table (gw_rest.c). */
enum gw_method {
    GW_GET = TH_HTTP_GET,
    GW_PUT = TH_HTTP_PUT,
    GW_POST = TH_HTTP_POST,
    GW_PATCH = TH_HTTP_PATCH,
    GW_DELETE = TH_HTTP_DELETE,
    GW_HEAD_M = TH_HTTP_HEAD,
    GW_OTHER = TH_HTTP_OTHER,
};

/* A request as th_http_head_parse read it (http_parse.h), with its body. */
struct gw_req {
    char *head; /* copy of the request head, NUL-terminated; slices point into it */
    enum gw_method method;
    struct gw_slice method_text, target, path, query;
    bool http11;
    struct gw_header headers[TH_HTTP_MAX_HEADERS];
    int nheaders;
    bool keep_alive;
    bool chunked;
    bool expect_continue;
    long long content_length; /* -1 when absent */
    struct gw_buf body;
    int64_t start_us;
    struct th_http_chunked chunk; /* when chunked */
};

enum gw_conn_state {
    GW_C_HEAD,    /* reading a request head */
    GW_C_BODY,    /* reading its body */
    GW_C_WAIT,    /* dispatched; waiting for the hub's answer */
    GW_C_WS,      /* upgraded to a WebSocket bridged to the broker */
    GW_C_CLOSING, /* answer queued; close once it is written */
    GW_C_STREAM,  /* the dashboard's event feed: output only, until it closes (gw_dash.c) */
};

struct gw_bridge;
struct gw_call;
struct gw_route;
struct gw_held_error;

/* One accepted TLS connection (the lws per-session data; zeroed by lws). */
struct gw_conn {
    struct lws *wsi;
    struct th_gateway *gw;
    enum gw_conn_state state;
    struct gw_buf in;  /* received, not yet consumed */
    struct gw_buf out; /* to send */
    struct gw_req req;
    bool close_after; /* close once `out` is written */
    bool rx_paused;
    char peer[64];
    /* REST */
    struct gw_call *call; /* the control call this request waits for, or NULL */
    const struct gw_route *route;
    char ids[2][GW_ID_BUF]; /* decoded path ids: device, module */
    long arg;               /* per-request scratch of the route's handler */
    bool auth_pending;      /* the hub has not yet decided this request's token */
    /* An error found before that decision, waiting for it (gw_rest.c); owned. */
    struct gw_held_error *held;
    /* WebSocket */
    struct th_ws_reader ws;
    struct gw_bridge *bridge;
    bool ws_close_sent;
};

/* A WebSocket client and its raw connection to the broker's MQTT listener. */
struct gw_bridge {
    struct th_gateway *gw;
    struct gw_conn *ws;      /* NULL once the WebSocket side closed */
    struct lws *broker;      /* NULL once the broker side closed */
    bool broker_up;          /* connected */
    struct gw_buf to_broker; /* client MQTT bytes not yet written to the broker */
    bool close_broker_when_flushed;
    bool broker_paused;  /* broker RX paused because the WebSocket side is behind */
    bool connecting;     /* inside lws_client_connect_via_info */
    bool connect_failed; /* it failed before returning */
    bool first_done;     /* the first MQTT packet went through the X.509 rewrite (tls_rewrite.h) */
};

/* ---- control API calls (gw_control.c) ---- */

/* Called with the response entry ({"data"} or {"error","status","errorCode"}); conn may be NULL. */
typedef void (*gw_done_fn)(struct th_gateway *gw, struct gw_conn *conn, const cJSON *entry);

struct gw_call {
    uint64_t id;
    struct gw_conn *conn; /* NULL for internal calls, or once the connection closed */
    gw_done_fn done;
    int64_t deadline_ms;
    struct gw_call *next;
};

struct gw_inbox_item {
    enum { GW_IN_CONNECTED, GW_IN_REFUSED, GW_IN_DISCONNECTED, GW_IN_MESSAGE, GW_IN_EVENT } kind;
    int rc;
    char *payload; /* GW_IN_MESSAGE, GW_IN_EVENT: malloc'd, NUL-terminated */
    size_t len;
    struct gw_inbox_item *next;
};

#define GW_MAX_LISTEN 8

struct th_gateway {
    /* configuration (owned copies) */
    char *hub_name, *cert_file, *key_file, *broker_host, *policy_name, *policy_key;
    int https_port, broker_port;
    bool verbose;
    int listen_fds[GW_MAX_LISTEN];
    int nlisten;
    uint8_t front_secret[32]; /* TH_X509_SECRET_LEN; valid with has_front_secret */
    bool has_front_secret;

    /* lws */
    struct lws_context *ctx;
    struct lws_vhost *vhost;
    pthread_t thread;
    bool thread_started;
    atomic_bool stopping;
    lws_sorted_usec_list_t sul_tick;

    /* libmosquitto (its own network thread) */
    struct mosquitto *mosq;
    bool mosq_loop_started;
    char client_id[64];

    /* any thread: filled by libmosquitto callbacks, drained by the service thread */
    pthread_mutex_t lock;
    struct gw_inbox_item *inbox_head, *inbox_tail;
    atomic_int state; /* enum th_gateway_state */
    char why[256];    /* under lock */

    /* service thread only */
    bool ctl_up;
    bool ctl_was_up; /* connected at least once: a later connect is "back" */
    uint64_t next_call_id;
    struct gw_call *calls;

    /* the dashboard (gw_dash.c); NULL when out of memory at start */
    struct gw_dash *dash;
    char *device_gateway; /* GatewayHostName for device connection strings; owned, may be NULL */
};

/* gw_log.c */
/* Log a line to stderr as "twinhub gateway: ..." (errors always, the rest with -v). */
void gw_log(struct th_gateway *gw, bool always, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* lws's log emitter (lws_set_log_level): its errors and warnings in our form. */
void gw_log_lws(int level, const char *line);

/* gw_control.c */
bool gw_ctl_init(struct th_gateway *gw, char *err, size_t errsize);
void gw_ctl_shutdown(struct th_gateway *gw);
/* Service thread: handle what libmosquitto's thread queued (wake-up from lws_cancel_service). */
void gw_ctl_drain(struct th_gateway *gw);
/* Service thread, once a second: fail calls past their deadline. */
void gw_ctl_tick(struct th_gateway *gw, int64_t now_ms);
/*
 * Send one command (takes `cmd` on every path). `done` gets the answer entry,
 * or a synthesised 503 entry when the hub is unreachable or does not answer
 * within timeout_s. Returns false (after calling nothing) only when the
 * command cannot be sent at all; the caller then answers itself.
 */
bool gw_ctl_call(struct th_gateway *gw, struct gw_conn *conn, cJSON *cmd, double timeout_s,
                 gw_done_fn done);
/* The connection goes away: its call (if any) answers nobody. */
void gw_ctl_forget(struct th_gateway *gw, struct gw_conn *conn);

/* gw_http.c */
/* lws callback of the TLS protocol (HTTP and WebSocket connections). */
int gw_http_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                     size_t len);
/* Header value by case-insensitive name; NULL when absent. */
const struct gw_slice *gw_req_header(const struct gw_req *r, const char *name);
/* A query parameter, percent-decoded into buf; false when absent or undecodable. */
bool gw_req_query(const struct gw_req *r, const char *name, char *buf, size_t size);
/*
 * Queue a complete response on `c`. `extra` holds more header lines, each
 * ending in "\r\n" (may be NULL). `ctype` NULL means no Content-Type. Then go
 * on with the next pipelined request, or close when the request asked for it.
 */
void gw_http_respond(struct gw_conn *c, int status, const char *extra, const char *ctype,
                     const void *body, size_t len);
/* After an answer that came later than its request: go on with pipelined input. */
void gw_http_resume(struct gw_conn *c);
/* Request a writable callback for `c` (after appending to c->out). */
void gw_conn_want_write(struct gw_conn *c);
/*
 * Write queued output at once instead of waiting for the next writable
 * callback (the bridge's hot path: saves one trip round the event loop).
 * Only when nothing was queued before, so that the byte order holds; lws
 * buffers what the socket does not take.
 */
void gw_conn_write_now(struct gw_conn *c);

/* gw_rest.c */
/* A complete request (head and body) on `c`: route, answer or call the hub with its token. */
void gw_rest_dispatch(struct gw_conn *c);
/* The request on `c` is over (answered, or the connection closes): free what it held. */
void gw_rest_request_done(struct gw_conn *c);
/* An error answer in the hub's format (iothub-errorcode header, JSON envelope). */
void gw_rest_error(struct gw_conn *c, int status, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* For route files besides gw_rest.c (gw_jobs.c, gw_fleet.c): send `cmd` (NULL: out of memory, answered
 * 500) with the request's credentials; `done` gets the answer. */
void gw_rest_call(struct gw_conn *c, cJSON *cmd, double timeout_s, gw_done_fn done);
/* The request's JSON body, an array (`array`) or an object; NULL after answering 400. */
cJSON *gw_rest_body(struct gw_conn *c, bool array);
/* Start of an answer handler: false when there is nobody to answer or the answer (an error)
 * was sent. */
bool gw_rest_answer_ok(struct gw_conn *c, const cJSON *entry);
/* Answer `status` with `item` as JSON and the `extra` header lines (may be NULL). */
void gw_rest_respond_json(struct gw_conn *c, int status, const cJSON *item, const char *extra);
/* 200 with a page of results: data's "items" ([] when absent), x-ms-item-type `item_type` and,
 * while there are more, x-ms-continuation from data's "continuation". */
void gw_rest_respond_page(struct gw_conn *c, const cJSON *data, const char *item_type);
/* If-Match as a NUL-terminated string in buf (W/ dropped), or NULL when absent. */
const char *gw_rest_if_match(struct gw_conn *c, char *buf, size_t size);
/* Answer handlers (gw_done_fn) for any route: 200 with the answer's data and its etag as ETag;
 * 200 with the data as it is; 204 with no body. */
void gw_rest_done_entity(struct th_gateway *gw, struct gw_conn *c, const cJSON *entry);
void gw_rest_done_data(struct th_gateway *gw, struct gw_conn *c, const cJSON *entry);
void gw_rest_done_no_content(struct th_gateway *gw, struct gw_conn *c, const cJSON *entry);

/* gw_jobs.c: /jobs/v2 (docs/rest-api.md "Jobs") */
void gw_jobs_put(struct gw_conn *c);
void gw_jobs_get(struct gw_conn *c);
void gw_jobs_cancel(struct gw_conn *c);
void gw_jobs_query(struct gw_conn *c);

/* gw_dash.c: the web dashboard (docs/dashboard.md) */
/* A dashboard with a fresh token for the gateway on `port`; NULL on failure. */
struct gw_dash *gw_dash_new(struct th_gateway *gw, int port);
/* Cancel its timer (before the lws context goes); gw_dash_free frees; both accept NULL. */
void gw_dash_stop(struct th_gateway *gw);
void gw_dash_free(struct gw_dash *d);
/* A request for / or /dashboard...: answered (true), or not the dashboard's (false). */
bool gw_dash_dispatch(struct gw_conn *c);
/* One event record from $twinhub/events/... (the inbox). */
void gw_dash_event(struct th_gateway *gw, const char *text, size_t len);
/* The control connection is (back) up: subscribe to what the dashboard follows. */
void gw_dash_connected(struct th_gateway *gw);
/* A connection closes: if it was a feed, forget it. */
void gw_dash_closed(struct gw_conn *c);
/* gw_dps.c */
/* A request for the provisioning service (device registration or its service API): answered
 * or sent to the hub, true; false for any other path. */
bool gw_dps_dispatch(struct gw_conn *c);

/* gw_fleet.c: bulk registry and automatic configurations (rest-api.md) */
void gw_fleet_bulk(struct gw_conn *c);
void gw_fleet_put_config(struct gw_conn *c);
void gw_fleet_get_config(struct gw_conn *c);
void gw_fleet_list_configs(struct gw_conn *c);
void gw_fleet_delete_config(struct gw_conn *c);
void gw_fleet_test_queries(struct gw_conn *c);

/* gw_ws.c */
/* GET /$iothub/websocket with Upgrade: answer 101 and connect the bridge, or answer an error. */
void gw_ws_upgrade(struct gw_conn *c);
/* WebSocket bytes from the client (after the handshake). */
void gw_ws_rx(struct gw_conn *c, const uint8_t *p, size_t n);
/* The WebSocket side's connection closed. */
void gw_ws_closed(struct gw_conn *c);
/* The WebSocket side wrote some of its output: maybe resume the broker side. */
void gw_ws_drained(struct gw_conn *c);
/* lws callback of the raw broker connections. */
int gw_broker_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                       size_t len);

#endif
