/*
 * dps_x509.h - X.509 attestation in the provisioning service (docs/dps.md,
 * "X.509 attestation"):
 * - the enrollment side: an individual enrollment's
 *   attestation.x509.clientCertificates.{primary,secondary} and a group's
 *   attestation.x509.signingCertificates.{primary,secondary} (each an
 *   X509CertificateWithInfo: "certificate" PEM or base64 DER, and "info",
 *   which the service fills) or caReferences.{primary,secondary} (names of
 *   CA certificates, here the hub's: /certificates, `twinhub cert`), as the
 *   service SDK's X509Attestation, X509Certificates, X509CertificateWithInfo
 *   and X509CAReferences (azure-iot-provisioning-service
 *   dist/interfaces.d.ts) shape them;
 * - the registration side: a device that presented a certificate chain
 *   (carried by the gateway's front credential, x509.h) registers as the
 *   leaf's subject CN (DPS docs: "the registration ID is provided by the
 *   subject common name (CN) of your device leaf certificate"); an
 *   individual enrollment matches by the leaf's thumbprint, a group when the
 *   chain leads to its signing certificate or to its referenced, verified CA.
 *
 * Pure: OpenSSL's in-memory X509 API.
 */
#ifndef TH_DPS_X509_H
#define TH_DPS_X509_H

#include <stdbool.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "dps.h"
#include "th_result.h"

struct th_x509_chain;
struct th_cacerts;

/*
 * Check attestation.x509 of an enrollment put: individual (group false):
 * clientCertificates.primary required (a readable "certificate", or "info"
 * with a valid sha1Thumbprint or sha256Thumbprint), secondary optional, no
 * signingCertificates or caReferences; group: signingCertificates.primary
 * (a readable certificate) or caReferences.primary (a non-empty name), not
 * both, no clientCertificates. TH_OK; TH_ERR_INVAL (400 /
 * TH_DPS_EC_BAD_REQUEST) naming the member.
 */
TH_NODISCARD th_result th_dps_x509_check(const cJSON *x509, bool group, struct th_error *err);

/* Fill "info" (X509CertificateInfo: subjectName, sha1Thumbprint, sha256Thumbprint, issuerName,
 * notBeforeUtc, notAfterUtc, serialNumber, version) of every certificate in a checked
 * attestation.x509 of a stored document. False on out of memory. */
bool th_dps_x509_fill_info(cJSON *x509);

/*
 * Decide a registration of `registration_id` by a client that presented
 * `chain` (leaf first) in scope `id_scope`, at `now_s`, with the hub's CA
 * certificates `cas` (for caReferences; may be NULL). Rules, in order: the
 * scope (404), the registration id (400), the leaf's subject CN equals the
 * registration id, the leaf is within its validity period; then the
 * individual enrollment of that id, which must use X.509 and whose primary
 * or secondary client certificate's SHA-1 or SHA-256 thumbprint must be the
 * leaf's; else the first enabled X.509 group whose signing certificate or
 * verified referenced CA the chain leads to (a disabled one that matches is
 * named when no enabled one does). TH_OK with *out (x509 true, thumbprint
 * the leaf's SHA-256); 401 / TH_DPS_EC_UNAUTHORIZED with a message naming
 * the cause.
 */
TH_NODISCARD th_result th_dps_attest_x509(struct th_dps *dps, const char *id_scope,
                                          const char *registration_id,
                                          const struct th_x509_chain *chain,
                                          const struct th_cacerts *cas, int64_t now_s,
                                          struct th_dps_attest *out, struct th_error *err);

#endif
