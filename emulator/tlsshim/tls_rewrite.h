/*
 * tls_rewrite.h - the first MQTT packet of a TLS connection with the
 * certificates its client presented (core/front_rewrite.h): shared by the TLS
 * shim in mosquitto (tlsshim.c) and the MQTT over WebSockets bridge and DPS
 * over HTTPS of the gateway (gw_ws.c, gw_dps.c). OpenSSL's side only: the
 * peer's chain as DER, then the pure rewrite.
 */
#ifndef TH_TLS_REWRITE_H
#define TH_TLS_REWRITE_H

#include <stddef.h>
#include <stdint.h>

typedef struct ssl_st SSL;

/*
 * The front credential (core/x509.h) for the client certificate on `ssl`, bound to `client_id`
 * and `username`: malloc'd, NUL-terminated (caller frees); NULL without a certificate or
 * secret, or on out of memory. The HTTPS registration of DPS carries it to the plugin
 * (core/dps_front.h).
 */
char *th_tlsfront_cred(SSL *ssl, const uint8_t *secret, const char *client_id,
                       const char *username);

/*
 * The first MQTT packet of a client on `ssl` (exactly one packet), rewritten as
 * th_front_rewrite_connect does with the certificates the client presented on
 * `ssl` (none: only the DPS rewrite applies): 1 with *out (malloc'd, caller
 * frees) / *out_len; 0 when it passes unchanged; -1 on out of memory.
 * `secret` NULL: no credential is added.
 */
int th_tlsfront_rewrite_connect(SSL *ssl, const uint8_t *secret, const uint8_t *pkt, size_t len,
                                uint8_t **out, size_t *out_len);

#endif
