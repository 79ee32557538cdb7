/*
 * cacert.h - the hub's CA certificates (docs/rest-api.md, "CA
 * certificates"): the Azure Resource Manager resource
 * .../IotHubs/{hub}/certificates/{name}, served by the gateway at
 * /certificates/{name}. A certificate is created from PEM (verified or
 * not), read, listed, deleted, and verified by proof of possession: the hub
 * hands out a verification code, and the owner sends a certificate whose
 * subject CN is that code, signed with the CA's key.
 * Devices of type certificateAuthority authenticate against the verified
 * ones (x509.h).
 *
 * Pure data: the broker owns one store; the times come in.
 */
#ifndef TH_CACERT_H
#define TH_CACERT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "th_result.h"

/* The hub's limit on certificates per hub (IoT Hub quotas: 25). */
#define TH_CACERT_MAX 25
/* Longest PEM accepted. */
#define TH_CACERT_MAX_PEM (64u * 1024)
/* Longest name: the ARM resource name (letters, digits, '-', '_', '.'; 1 to 64). */
#define TH_CACERT_MAX_NAME 64

struct th_cacerts;

struct th_cacerts *th_cacerts_new(void);
void th_cacerts_free(struct th_cacerts *cas);
size_t th_cacerts_count(const struct th_cacerts *cas);

/*
 * Create or replace certificate `name` from PEM (the first certificate in
 * it). `if_match` NULL or "*" replaces any; otherwise it must be the current
 * etag (412 / 412001 when it differs, or when it names one that does not
 * exist). A replaced certificate is unverified unless `verified`. 400 /
 * 400004 for a bad name or a PEM holding no certificate, 403 / 403002 over
 * TH_CACERT_MAX. *out (optional) is the certificate's JSON (caller frees).
 */
TH_NODISCARD th_result th_cacerts_put(struct th_cacerts *cas, const char *name, const char *pem,
                                      bool verified, const char *if_match, int64_t now_us,
                                      cJSON **out, struct th_error *err);

/* The certificate's JSON, or NULL with 404 / 404001... ("CertificateNotFound"). */
cJSON *th_cacerts_get_json(const struct th_cacerts *cas, const char *name, struct th_error *err);

/* {"value": [...]}. NULL on OOM. */
cJSON *th_cacerts_list_json(const struct th_cacerts *cas);

/* Delete (etag rule as put, but "*" or the etag is required: NULL is 400 / 400004). */
TH_NODISCARD th_result th_cacerts_delete(struct th_cacerts *cas, const char *name,
                                         const char *if_match, struct th_error *err);

/*
 * A new verification code for `name` (etag required as delete). *out is
 * the certificate's JSON with properties.verificationCode. The etag
 * advances.
 */
TH_NODISCARD th_result th_cacerts_verification_code(struct th_cacerts *cas, const char *name,
                                                    const char *if_match, int64_t now_us,
                                                    cJSON **out, struct th_error *err);

/*
 * Proof of possession: `pem` must hold a certificate whose subject CN is the
 * verification code last generated for `name` and whose signature verifies
 * with the CA's public key. Then the CA is verified, the code spent, the
 * etag advanced, *out its JSON. 400 / 400004 with the reason otherwise.
 */
TH_NODISCARD th_result th_cacerts_verify(struct th_cacerts *cas, const char *name,
                                         const char *if_match, const char *pem, int64_t now_us,
                                         cJSON **out, struct th_error *err);

/* ---- for x509.c ---- */

/* Iterate: the i-th certificate's X509 (as void * to keep OpenSSL out of this header). */
const void *th_cacerts_x509_at(const struct th_cacerts *cas, size_t i, const char **name,
                               bool *verified);

/* ---- persistence ---- */

/* [{"name","certificate","isVerified","created","updated","etag","verificationCode"}]. */
cJSON *th_cacerts_state_json(const struct th_cacerts *cas);

/* Replace everything from th_cacerts_state_json output; unchanged on failure. */
TH_NODISCARD th_result th_cacerts_restore(struct th_cacerts *cas, const cJSON *arr,
                                          struct th_error *err);

#endif
