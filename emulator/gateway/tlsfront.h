/*
 * tlsfront.h - the MQTT/TLS front of `twinhub serve` (docs/protocol.md,
 * "X.509 client certificates"): it terminates TLS on the MQTT/TLS port
 * (8883 by default), asks every client for an optional certificate and
 * accepts any at the TLS layer (expired, unknown, self-signed: the hub
 * refuses in the CONNACK, with the reason in its log), and relays bytes to
 * the broker's plain listener. When the client presented a certificate and
 * its CONNECT carries no password, the front writes the CONNECT again with
 * a credential the plugin trusts (core/x509.h): the certificate chain and
 * an HMAC keyed with the per-start secret. Every other client passes
 * through unchanged.
 *
 * One thread (epoll) relays every connection; the MQTT over WebSockets
 * bridge (gw_ws.c) rewrites its first packet with the same function.
 */
#ifndef TH_TLSFRONT_H
#define TH_TLSFRONT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct addrinfo;
struct th_tlsfront;
typedef struct ssl_st SSL;

#define TH_TLSFRONT_MAX_LISTEN 8

struct th_tlsfront_config {
    const char *cert_file; /* the server certificate (PEM chain) */
    const char *key_file;
    /* The broker's plain listener: a TCP host with backend_port, or a unix socket path
     * with backend_port 0. */
    const char *backend;
    int backend_port;
    const uint8_t *secret; /* TH_X509_SECRET_LEN bytes; copied */
    bool verbose;          /* a stderr line per connection */
};

/*
 * Bind and listen on `port` at every address of `bind_ai` (SO_REUSEADDR, IPv6
 * sockets IPv6-only). Fills fds (at most TH_TLSFRONT_MAX_LISTEN) and *n;
 * false with *err_no and `where` (the failing address) otherwise, with
 * nothing left open. port 0 binds a free port; *bound_port gets it.
 */
bool th_tlsfront_listen(const struct addrinfo *bind_ai, int port, int *fds, int *n, int *bound_port,
                        int *err_no, char *where, size_t where_size);

/*
 * Start relaying connections accepted on `fds` (taken over: closed by
 * th_tlsfront_stop, also on failure). NULL with a sentence in err when the
 * certificate cannot be loaded or the thread not started.
 */
struct th_tlsfront *th_tlsfront_start(const struct th_tlsfront_config *cfg, const int *fds,
                                      int nfds, char *err, size_t errsize);

/* Stop, close every connection and free; accepts NULL. */
void th_tlsfront_stop(struct th_tlsfront *f);

/*
 * The front credential (core/x509.h) for the client certificate on `ssl`, bound to `client_id`
 * and `username`: malloc'd, NUL-terminated (caller frees); NULL without a certificate or
 * secret, or on out of memory. The HTTPS registration of DPS carries it to the plugin
 * (core/dps_front.h).
 */
char *th_tlsfront_cred(SSL *ssl, const uint8_t *secret, const char *client_id,
                       const char *username);

/*
 * The first MQTT packet of a client on `ssl`, rewritten when it is a CONNECT
 * without a password from a client that presented a certificate (the front
 * credential goes in the password), and when its username is a DPS one (the
 * client id becomes TH_DPS_CLIENT_ID_PREFIX + the registration id,
 * core/dps_front.h): then 1 and *out (malloc'd, caller frees) / *out_len; 0
 * when it passes unchanged (neither case, no username, not a CONNECT); -1 on
 * out of memory. `secret` NULL: no credential is added.
 */
int th_tlsfront_rewrite_connect(SSL *ssl, const uint8_t *secret, const uint8_t *pkt, size_t len,
                                uint8_t **out, size_t *out_len);

#endif
