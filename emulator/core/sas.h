/*
 * sas.h - Shared Access Signature tokens: parse, sign and verify
 * (iothub-protocol.md section 2, real-clients.md section 0).
 *
 * The HMAC is computed over `sr` exactly as it appears in the token (still
 * percent-encoded, or raw as the full C SDK sends it), "\n", and the `se`
 * text. `sig` is percent-decoded (hex case-insensitive) and compared in
 * constant time. The key is base64-decoded before use.
 */
#ifndef TH_SAS_H
#define TH_SAS_H

#include <stdint.h>
#include "slice.h"
#include "th_result.h"

#define TH_SAS_PREFIX "SharedAccessSignature "

struct th_sas_token {
    struct th_slice sr;  /* as sent (maybe percent-encoded) */
    struct th_slice sig; /* as sent (percent-encoded base64) */
    struct th_slice se;  /* decimal seconds text */
    struct th_slice skn; /* policy name; ptr NULL when absent */
    int64_t expiry;      /* se parsed */
};

/*
 * Parse "SharedAccessSignature k=v&k=v..." (fields in any order). Fails with
 * TH_ERR_FORMAT when the prefix, sr, sig or se is missing, a field repeats,
 * or se is not a non-negative integer. Slices point into `token`.
 */
TH_NODISCARD th_result th_sas_parse(const char *token, size_t len, struct th_sas_token *out,
                                    struct th_error *err);

/*
 * Verify a parsed token against a base64 key: signature first (TH_ERR_AUTH),
 * then expiry (TH_ERR_EXPIRED when expiry < now_s - skew_s).
 */
TH_NODISCARD th_result th_sas_verify(const struct th_sas_token *tok, const char *key_b64,
                                     int64_t now_s, int64_t skew_s, struct th_error *err);

/*
 * The resource URI of a token, percent-decoded, split into host and path
 * ids. `sr` "host/devices/d1/modules/m1" gives host "host", device "d1",
 * module "m1"; "host" alone gives empty device and module; "host/devices"
 * gives device "" and sets *all_devices. Buffers are NUL-terminated.
 */
struct th_sas_resource {
    char host[256];
    char device_id[129];
    char module_id[129];
    bool all_devices; /* sr was host/devices */
};
TH_NODISCARD th_result th_sas_resource(const struct th_sas_token *tok, struct th_sas_resource *out,
                                       struct th_error *err);

/*
 * Build a token: sr = percent-encode(resource_uri) (upper-case hex, as the Node
 * and .NET SDKs do), signed with key_b64, expiring at `expiry`, with `skn`
 * when non-NULL. Writes a NUL-terminated token into buf; TH_ERR_BUFFER when
 * too small, TH_ERR_INVAL for a bad key.
 */
TH_NODISCARD th_result th_sas_sign(const char *resource_uri, const char *key_b64, int64_t expiry,
                                   const char *skn, char *buf, size_t size);

#endif
