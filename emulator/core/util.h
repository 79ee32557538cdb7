/*
 * util.h - small pure helpers shared by the core: time formatting, base64,
 * percent encoding and random keys. No I/O besides the OpenSSL RNG.
 */
#ifndef TH_UTIL_H
#define TH_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "th_result.h"

#define TH_TIME_BUF 40

/* Current wall time in microseconds since the epoch (CLOCK_REALTIME). */
int64_t th_now_us(void);
/* Monotonic time in milliseconds (CLOCK_MONOTONIC), for timers. */
int64_t th_mono_ms(void);

/* Format as the hub does: "2020-07-09T13:55:50.7976985Z" (7 fractional digits). */
void th_time_format(int64_t us, char buf[TH_TIME_BUF]);
/*
 * The microseconds th_time_format turns into exactly `text` (28 bytes,
 * "2020-07-09T13:55:50.7976980Z"); false, *out untouched, for any other text.
 */
bool th_time_parse(const char *text, int64_t *out);
/* The hub's never-set time "0001-01-01T00:00:00Z". */
#define TH_TIME_NEVER "0001-01-01T00:00:00Z"

/*
 * Base64 (standard alphabet, padded). Encode writes a NUL-terminated string;
 * both return TH_ERR_BUFFER when `size` is too small (nothing useful written).
 * Decode returns TH_ERR_FORMAT for invalid input and the exact byte count.
 */
TH_NODISCARD th_result th_b64_encode(const uint8_t *in, size_t len, char *out, size_t size);
TH_NODISCARD th_result th_b64_decode(const char *in, size_t len, uint8_t *out, size_t size,
                                     size_t *out_len);

/* The value of hex digit `c` (either case), or -1 when it is not one. */
int th_hex_value(char c);

/*
 * Percent-decode `len` bytes of `in` into `out` (NUL-terminated). `%xx` hex is
 * case-insensitive; with `plus_is_space`, '+' becomes ' '. TH_ERR_FORMAT on a
 * broken escape, TH_ERR_BUFFER when out is too small.
 */
TH_NODISCARD th_result th_pct_decode(const char *in, size_t len, bool plus_is_space, char *out,
                                     size_t size, size_t *out_len);
/*
 * Percent-encode like encodeURIComponent (unreserved: A-Z a-z 0-9 - _ . ! ~ * ' ( ))
 * with upper-case hex. NUL-terminated; TH_ERR_BUFFER when out is too small.
 */
TH_NODISCARD th_result th_pct_encode(const char *in, size_t len, char *out, size_t size,
                                     size_t *out_len);

/* Fill `out` with a base64 key of `nbytes` random bytes (OpenSSL RAND_bytes). */
TH_NODISCARD th_result th_random_key(size_t nbytes, char *out, size_t size);

/* Constant-time comparison of two byte strings; false when lengths differ. */
bool th_consttime_eq(const void *a, size_t alen, const void *b, size_t blen);

/* Case-insensitive ASCII comparison of two slices. */
bool th_slice_ieq(const char *a, size_t alen, const char *b, size_t blen);

/*
 * The If-Match rule (RFC 7232 3.1, as the hub applies it to twin and identity
 * etags): does a request's If-Match value `if_match` allow a write to an
 * entity whose current etag is `etag` (the unquoted text, e.g. "AAAAAAAAAAE=")?
 * NULL (no If-Match), "*" and "\"*\"" match anything; a quoted value matches
 * when its inside is the etag; an unquoted value when it is the etag. A weak
 * "W/" prefix is an HTTP detail the gateway removes before this.
 */
bool th_etag_matches(const char *if_match, const char *etag);

/*
 * True when `len` bytes are UTF-8 (by lead and continuation bytes; overlong
 * forms are not refused) without a NUL byte: text a JSON string can show.
 */
bool th_utf8_is_text(const void *s, size_t len);

#endif
