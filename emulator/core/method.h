/*
 * method.h - the caller's side of a direct method answer (iothub-protocol.md
 * section 8): what the device's response body becomes in the result the
 * caller gets, and the HTTP body IoT Hub answers the service with.
 *
 * Decisions where the hub is silent or has been seen doing something odd
 * (docs/protocol.md "Direct methods" has the sources):
 * - An empty body is a `null` payload.
 * - A body that is not JSON is passed on as it is: the hub writes the
 *   device's bytes verbatim after "payload": in its HTTP response, which is
 *   then no JSON either and fails in the service SDKs' parsers. The result
 *   keeps those bytes (`rawPayloadBase64`, and `rawPayload` as text when they
 *   are UTF-8) so that the REST gateway can answer byte for byte the same.
 * - A body over 128 KB (the documented response limit) fails the call.
 */
#ifndef TH_METHOD_H
#define TH_METHOD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cjson/cJSON.h>
#include "th_result.h"

/* JSON nesting twinhub reads in a method answer; deeper JSON is passed on raw. */
#define TH_METHOD_MAX_DEPTH 64

/*
 * The result of a call the device answered with `status` and `len` bytes of
 * `body` (body may be NULL when len is 0):
 *   {"status": n, "payload": <JSON or null>}                   body empty or JSON
 *   {"status": n, "rawPayload"?: "<text>", "rawPayloadBase64": "...",
 *    "payloadError": "<why it is not read as JSON>"}            any other body
 * On success *out owns the object (free with cJSON_Delete). TH_ERR_TOO_LARGE
 * (413001) when the body is over TH_METHOD_MAX_PAYLOAD_BYTES, TH_ERR_NOMEM;
 * *out is NULL then and err says why.
 */
TH_NODISCARD th_result th_method_result(int32_t status, const void *body, size_t len, cJSON **out,
                                        struct th_error *err);

/* True when a result from th_method_result carries a body that is not JSON. */
bool th_method_result_is_raw(const cJSON *result);

/*
 * The HTTP body of POST /twins/{id}/methods for `result`:
 * {"status":n,"payload":<JSON>} printed, or for a raw result
 * {"status":n,"payload":<the device's bytes>} with the bytes as they came.
 * Returns a malloc'd buffer (caller frees with free()) of *out_len bytes,
 * NUL-terminated; NULL on out-of-memory or when `result` has no integer
 * status or a broken rawPayloadBase64.
 */
char *th_method_rest_body(const cJSON *result, size_t *out_len);

#endif
