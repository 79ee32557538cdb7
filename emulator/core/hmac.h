/*
 * hmac.h - HMAC-SHA256 (RFC 2104) for the per-CONNECT SAS check.
 *
 * OpenSSL 3's one-shot HMAC() looks up the HMAC and SHA-256 implementations
 * in its provider tables on every call: about 22,000 instructions for a SAS
 * token's 60 bytes, half of the plugin's work per CONNECT
 * (docs/performance.md, "Connect rate"). This computes the same MAC from a
 * SHA-256 implementation fetched once per process, with OpenSSL's digest.
 */
#ifndef TH_HMAC_H
#define TH_HMAC_H

#include <stddef.h>
#include <stdint.h>

#include "th_result.h"

#define TH_HMAC_SHA256_LEN 32

/*
 * HMAC-SHA256(key, msg) into out. Any key length (longer than the 64-byte
 * block: hashed first, as RFC 2104 says); key and msg may be NULL when their
 * length is 0. TH_ERR_NOMEM (out untouched) when OpenSSL cannot allocate
 * (TH_ERR_INVAL for a key over 2 GB if SHA-256 could not be fetched).
 * Thread-safe.
 */
TH_NODISCARD th_result th_hmac_sha256(const void *key, size_t key_len, const void *msg,
                                      size_t msg_len, uint8_t out[TH_HMAC_SHA256_LEN]);

/*
 * Release the fetched SHA-256 (later calls use the one-shot HMAC()). For code
 * that is unloaded before the process exits (the broker plugin's cleanup), so
 * that a leak checker does not report the fetch. Not a destructor: at exit
 * OpenSSL's own atexit cleanup has already freed what the fetch points at.
 */
void th_hmac_release(void);

#endif
