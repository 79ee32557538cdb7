/*
 * tlsshim.h - what the TLS shim (twinhub_tlsshim.so, preloaded into
 * mosquitto by `twinhub serve` when the MQTT/TLS port is on) offers the
 * plugin, looked up with dlsym(RTLD_DEFAULT, ...) so that the plugin loads
 * with or without it (docs/protocol.md, "X.509 client certificates").
 *
 * The shim interposes four OpenSSL functions in mosquitto:
 * - SSL_CTX_set_verify: where mosquitto asks for a required client
 *   certificate (require_certificate true), an optional one is asked for and
 *   any is accepted at the TLS layer (the hub decides in the CONNACK);
 * - SSL_accept: a connection on such a listener starts in the first-packet
 *   state (per SSL, in its ex_data);
 * - SSL_read: in that state the whole first packet is read from the real
 *   SSL_read, rewritten (tls_rewrite.h: the front credential for a client
 *   with a certificate and no password, the DPS client id), and mosquitto's
 *   reads are served from the result; afterwards each call passes straight
 *   through: with one ex_data lookup while any connection of the process is
 *   still in its first packet, with none (a counter) otherwise;
 * - SSL_pending: counts what is left of the rewritten packet.
 */
#ifndef TH_TLSSHIM_H
#define TH_TLSSHIM_H

#include <stddef.h>
#include <stdint.h>

/* Bumped when the functions below change. */
#define TH_TLSSHIM_VERSION 1

/* A client has this long after its TCP accept to complete its first packet. */
#define TH_TLSSHIM_FIRST_PACKET_TIMEOUT_S 10

/*
 * "th_tlsshim_arm": give the shim the front secret (TH_X509_SECRET_LEN bytes,
 * copied). Returns TH_TLSSHIM_VERSION; -1 when `len` is wrong.
 */
typedef int (*th_tlsshim_arm_fn)(const uint8_t *secret, size_t len);
#define TH_TLSSHIM_ARM_SYMBOL "th_tlsshim_arm"

/*
 * "th_tlsshim_sweep": shut down (shutdown(2), the broker still closes) the
 * socket of every connection that has not completed its first packet within
 * TH_TLSSHIM_FIRST_PACKET_TIMEOUT_S; the number shut down. Cheap when nothing
 * waits: the plugin calls it on every tick.
 */
typedef int (*th_tlsshim_sweep_fn)(void);
#define TH_TLSSHIM_SWEEP_SYMBOL "th_tlsshim_sweep"

#endif
