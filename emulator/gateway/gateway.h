/*
 * gateway.h - the HTTPS gateway of `twinhub serve` (docs/rest-api.md): one
 * TLS port (443 by default, because the Azure SDKs hard-code it) that serves
 * the IoT Hub service REST API subset, MQTT over WebSockets at
 * /$iothub/websocket (bridged to the broker's MQTT listener) and /health.
 *
 * The gateway holds no hub state. It reaches the hub only through the
 * control API (TH_CONTROL_TOPIC, docs/control-api.md) over one
 * libmosquitto connection as a service principal, so the broker thread stays
 * the single owner of the registry and the twins. It runs in its own thread
 * (the libwebsockets service loop) plus libmosquitto's network thread.
 *
 * Life cycle, as serve uses it:
 *   th_gateway_listen()   bind the HTTPS sockets (before the broker starts,
 *                         so a busy or privileged port is reported first);
 *   th_gateway_start()    once the broker accepts connections: TLS context,
 *                         service thread, control connection;
 *   th_gateway_state()    poll until TH_GATEWAY_UP (or REFUSED);
 *   th_gateway_stop()     before the broker is stopped; frees everything.
 */
#ifndef TH_GATEWAY_H
#define TH_GATEWAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct addrinfo;
struct th_gateway;

#define TH_GATEWAY_DEFAULT_HTTPS_PORT 443

struct th_gateway_config {
    const char *hub_name;           /* the hub's host name: the sr of the gateway's own token */
    const struct addrinfo *bind_ai; /* every address to listen on (serve's resolved --bind) */
    int https_port;
    const char *cert_file; /* PEM server certificate the clients verify */
    const char *key_file;  /* its private key */
    /* The shared access policy the gateway signs in with (all service rights). */
    const char *policy_name;
    const char *policy_key;
    bool verbose; /* one stderr line per request and per WebSocket */
    /* GatewayHostName of device connection strings (the dashboard shows them); may be NULL. */
    const char *device_gateway;
    /* The front secret (TH_X509_SECRET_LEN bytes, copied): with it, the HTTPS port
     * asks for an optional client certificate, and an MQTT over WebSockets client that
     * presented one gets its CONNECT rewritten as the TLS shim does (tls_rewrite.h). NULL: none. */
    const uint8_t *front_secret;
};

/*
 * Bind and listen on cfg->https_port at every address of cfg->bind_ai
 * (SO_REUSEADDR; IPv6 sockets IPv6-only, as mosquitto binds). Copies the
 * configuration strings. On success returns a gateway that is not yet
 * serving (free with th_gateway_stop). On failure returns NULL with *err_no
 * set to the errno of the failing bind (EADDRINUSE, EACCES, ...) and
 * `where` (>= 64 bytes) holding the failing address as text.
 */
struct th_gateway *th_gateway_listen(const struct th_gateway_config *cfg, int *err_no, char *where,
                                     size_t where_size);

/*
 * Load the certificate, start the service thread and the control
 * connection to the broker's MQTT listener at broker_host: a TCP address
 * ("127.0.0.1", "::1") with broker_port, or a unix socket path with port 0.
 * Returns false with a sentence in err (the gateway stays stoppable) when
 * the TLS context or a thread cannot be created.
 */
bool th_gateway_start(struct th_gateway *gw, const char *broker_host, int broker_port, char *err,
                      size_t errsize);

enum th_gateway_state {
    TH_GATEWAY_STARTING, /* control connection not yet established */
    TH_GATEWAY_UP,       /* control connection up */
    TH_GATEWAY_DOWN,     /* control connection lost; it reconnects by itself */
    TH_GATEWAY_REFUSED,  /* the broker refused the gateway's credentials */
};

/* Current state (any thread). For REFUSED or DOWN, `why` gets a reason when non-NULL. */
enum th_gateway_state th_gateway_state(struct th_gateway *gw, char *why, size_t why_size);

/*
 * The dashboard's one-time token (docs/dashboard.md): 32 hex digits, fresh
 * for each gateway; the dashboard's URL is https://<host>:<port>/?token=<it>.
 * Borrowed from the gateway; NULL without one.
 */
const char *th_gateway_dashboard_token(const struct th_gateway *gw);

/* Stop serving, close every connection and free; accepts NULL and a gateway never started. */
void th_gateway_stop(struct th_gateway *gw);

/*
 * Pick the policy the gateway signs in with, the way the plugin builds its
 * policy list: from the state directory when it holds state (its
 * policies.json), else from the registry file (when non-NULL) plus the hub's
 * default policies (kept when the file redefines them). The first policy with
 * RegistryRead, RegistryWrite and ServiceConnect is taken, preferring
 * `iothubowner`. Fills name (>= 64 bytes) and key (>= 128 bytes); returns
 * false with a sentence in err when none qualifies or a file is unreadable or
 * invalid.
 */
bool th_gateway_pick_policy(const char *state_dir, const char *registry_file, char *name,
                            size_t name_size, char *key, size_t key_size, char *err,
                            size_t errsize);

/* The address of `sa` (IPv4 or IPv6) as text, without the port; "?" when it cannot be shown. */
struct sockaddr;
void th_gateway_addr_text(const struct sockaddr *sa, char *buf, size_t size);

#endif
