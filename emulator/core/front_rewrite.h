/*
 * front_rewrite.h - the first packet of an MQTT connection that came in over
 * TLS, as the hub hands it to the broker (docs/protocol.md, "X.509 client
 * certificates"): a CONNECT without a password from a client that presented
 * a certificate gets the front credential (x509.h) as its password, and a
 * DPS registration's client id becomes TH_DPS_CLIENT_ID_PREFIX + its
 * registration id (dps_front.h). Used by the TLS shim in mosquitto
 * (tlsshim/) and the MQTT over WebSockets bridge (gateway/gw_ws.c) through
 * tlsshim/tls_rewrite.h, which turns the TLS connection's certificates into
 * DER.
 *
 * Pure: bytes in, bytes out.
 */
#ifndef TH_FRONT_REWRITE_H
#define TH_FRONT_REWRITE_H

#include <stddef.h>
#include <stdint.h>

#include "th_result.h"
#include "x509.h"

/* A credential must fit the CONNECT's password field (two length bytes). */
#define TH_FRONT_MAX_CRED 65535

/*
 * The front credential for the certificates `chain` (leaf first, `n` of them)
 * bound to `cid` and `user` (as sent), into `cred` (TH_FRONT_MAX_CRED bytes):
 * the whole chain, else the leaf alone (a CA-signed device then needs its
 * CA's intermediates registered). TH_OK with *clen; TH_ERR_INVAL without a
 * secret or certificate; TH_ERR_BUFFER when even the leaf does not fit.
 */
TH_NODISCARD th_result th_front_cred(const uint8_t *secret, const uint8_t *cid, size_t cid_len,
                                     const uint8_t *user, size_t user_len,
                                     const struct th_x509_der *chain, size_t n, char *cred,
                                     size_t *clen);

/*
 * The first packet `pkt` (`len` bytes, exactly one packet), rewritten when it
 * is a CONNECT without a password from a client that presented certificates
 * (`n` > 0 and `secret` not NULL: the credential goes in the password), and
 * when its username is a DPS one (the client id is replaced): then 1 and
 * *out (malloc'd, the caller frees) / *out_len; 0 when it passes unchanged
 * (neither case, no username, not a CONNECT, a credential that does not fit
 * without the DPS case); -1 on out of memory.
 */
int th_front_rewrite_connect(const uint8_t *secret, const struct th_x509_der *chain, size_t n,
                             const uint8_t *pkt, size_t len, uint8_t **out, size_t *out_len);

#endif
