/*
 * x509.h - X.509 device authentication (docs/protocol.md, "X.509 client
 * certificates"):
 * - the front credential: what the TLS shim in mosquitto and the gateway's
 *   WebSocket bridge (front_rewrite.h) put in the password of a CONNECT whose client presented a certificate and no
 *   password, and what the plugin checks: the client's certificate chain
 *   (DER, base64) and an HMAC-SHA256 over it, the client id and the
 *   username, keyed with a secret `twinhub serve` draws at each start and
 *   hands to both (a client cannot forge it, not even on the broker's plain
 *   port);
 * - thumbprints (SHA-1 and SHA-256, upper-case hex) and their form as the
 *   hub stores them;
 * - the decision on a device or module of type selfSigned (a thumbprint
 *   matches) or certificateAuthority (the chain leads to a verified CA of
 *   the hub, the leaf's CN names the identity: the device id, or
 *   "{deviceId}/{moduleId}"), both within the validity period.
 *
 * Pure: OpenSSL's in-memory X509 API, no files, no sockets, no logging.
 */
#ifndef TH_X509_H
#define TH_X509_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "th_result.h"

/* Every front credential starts so (a SAS token starts "SharedAccessSignature "). */
#define TH_X509_CRED_PREFIX "twinhub-x509-front v1 "
/* The secret's length in bytes (hex twice as long in mosquitto.conf). */
#define TH_X509_SECRET_LEN 32
/* At most this many certificates of a client's chain are carried (leaf first). */
#define TH_X509_MAX_CHAIN 8
/* A thumbprint as text: SHA-256 is 64 hex digits, SHA-1 40; + NUL. */
#define TH_X509_THUMB_BUF 65
/* Room for a refusal's reason. */
#define TH_X509_REASON_BUF 400

/* One certificate as DER bytes (borrowed). */
struct th_x509_der {
    const uint8_t *ptr;
    size_t len;
};

/*
 * The credential for a client that presented `chain` (leaf first, n >= 1,
 * at most TH_X509_MAX_CHAIN are used) and connects with `client_id` and
 * `username` (as sent, not NUL-terminated): TH_X509_CRED_PREFIX, the HMAC in
 * hex, a space, the certificates in base64 joined by '.'. TH_OK with
 * *out_len (no NUL written); TH_ERR_BUFFER when `cap` is too small;
 * TH_ERR_INVAL without a certificate or secret.
 */
TH_NODISCARD th_result th_x509_cred_build(const uint8_t *secret, size_t secret_len,
                                          const uint8_t *client_id, size_t client_id_len,
                                          const uint8_t *username, size_t username_len,
                                          const struct th_x509_der *chain, size_t n, char *out,
                                          size_t cap, size_t *out_len);

/* Whether a CONNECT password is a front credential (by its prefix only). */
bool th_x509_is_cred(const char *password);

/* A client's certificate chain, leaf first. Opaque; free with th_x509_chain_free. */
struct th_x509_chain;
void th_x509_chain_free(struct th_x509_chain *chain);

/*
 * Check a front credential against the secret, the client id and the
 * username of the CONNECT that carried it, and read its certificates.
 * TH_OK with *out (caller frees with th_x509_chain_free); TH_ERR_AUTH with
 * `reason` when the HMAC does not match (not made by our front for this
 * client id and username); TH_ERR_FORMAT when it is malformed;
 * TH_ERR_NOMEM.
 */
TH_NODISCARD th_result th_x509_cred_open(const uint8_t *secret, size_t secret_len,
                                         const char *client_id, const char *username,
                                         const char *password, struct th_x509_chain **out,
                                         char *reason, size_t reason_size);

/*
 * A chain from PEM text (one or more certificates, leaf first), for tests
 * and the CLI. NULL when none could be read.
 */
struct th_x509_chain *th_x509_chain_from_pem(const char *pem, size_t len);

/* How many certificates a chain holds, and the i-th (an X509 *, as void * to keep OpenSSL out of
 * this header; NULL past the end). Borrowed. */
size_t th_x509_chain_count(const struct th_x509_chain *chain);
const void *th_x509_chain_at(const struct th_x509_chain *chain, size_t i);

/* The leaf's thumbprints, upper-case hex: SHA-1 (41 bytes) and SHA-256 (65). */
void th_x509_chain_thumbprints(const struct th_x509_chain *chain, char sha1[41],
                               char sha256[TH_X509_THUMB_BUF]);

/*
 * Thumbprints of the first certificate of PEM text (`len` bytes).
 * TH_OK; TH_ERR_FORMAT when it holds no certificate.
 */
TH_NODISCARD th_result th_x509_pem_thumbprints(const char *pem, size_t len, char sha1[41],
                                               char sha256[TH_X509_THUMB_BUF]);

/*
 * Whether `tp` is a thumbprint as the hub stores it: 40 (SHA-1) or 64
 * (SHA-256) hex digits, either case. NULL and "" are not.
 */
bool th_x509_thumbprint_valid(const char *tp);

/* `tp` (either case) equals the SHA-1 or the SHA-256 thumbprint given. */
bool th_x509_thumbprint_matches(const char *tp, const char *sha1, const char *sha256);

struct th_cacerts;

/* What the registry holds about the identity a certificate is presented for. */
struct th_x509_identity {
    const char *device_id;
    const char *module_id;            /* NULL for a device */
    bool ca;                          /* certificateAuthority; else selfSigned */
    const char *primary_thumbprint;   /* selfSigned: NULL or "" for none */
    const char *secondary_thumbprint; /* selfSigned: NULL or "" for none */
};

/*
 * Decide a certificate for an identity at `now_s` (seconds since the
 * epoch). Checks, in this order: the leaf's validity period; selfSigned:
 * its SHA-1 or SHA-256 thumbprint is the primary or secondary one;
 * certificateAuthority: the leaf's subject CN is the device id, or for a
 * module "{deviceId}/{moduleId}" (docs/protocol.md), and the chain (the intermediates the client
 * sent) leads to a certificate of `cas` that is verified (a registered CA that is not verified, or
 * one that expired, is named in the reason). TH_OK; TH_ERR_AUTH with `reason` (one sentence saying
 * what to fix).
 */
TH_NODISCARD th_result th_x509_authenticate(const struct th_x509_chain *chain,
                                            const struct th_x509_identity *id,
                                            const struct th_cacerts *cas, int64_t now_s,
                                            char *reason, size_t reason_size);

#endif
