/*
 * json.h - the single entry point for parsing untrusted JSON, and small
 * typed getters over cJSON (house style: one parse helper with limits).
 */
#ifndef TH_JSON_H
#define TH_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <cjson/cJSON.h>
#include "th_result.h"

/*
 * Parse `len` bytes of `buf` (need not be NUL-terminated) as one JSON document.
 * Fails with TH_ERR_TOO_LARGE when len > max_bytes, TH_ERR_FORMAT when the
 * text is not JSON or anything but whitespace follows the document, and
 * TH_ERR_TOO_DEEP when objects/arrays nest deeper than max_depth (the
 * outermost value is depth 1). On success *out owns a tree the caller frees
 * with cJSON_Delete; on failure *out is NULL and err says why.
 */
TH_NODISCARD th_result th_json_parse(const char *buf, size_t len, size_t max_bytes, int max_depth,
                                     cJSON **out, struct th_error *err);

/*
 * A th_json_parse failure about `what` (a file name, "standard input")
 * rather than a request body: "FILE is not valid JSON (error near byte 2)",
 * "FILE: JSON nests objects/arrays more than 64 levels deep", without the
 * advice meant for API callers. Writes at most `size` bytes to `out`.
 */
void th_json_error_about(const struct th_error *err, const char *what, char *out, size_t size);

/* Depth of a tree: a scalar is 0, `{}` or `[]` is 1, `{"a":{}}` is 2. */
int th_json_depth(const cJSON *item);

/* Case-sensitive member lookups; return the fallback when absent or of another type. */
const char *th_json_string(const cJSON *obj, const char *key, const char *fallback);
double th_json_number(const cJSON *obj, const char *key, double fallback);
bool th_json_bool(const cJSON *obj, const char *key, bool fallback);
/* The member if it is an object, else NULL. */
cJSON *th_json_object(const cJSON *obj, const char *key);

/* Serialise compactly; the caller frees the result with free(). NULL on failure. */
char *th_json_print(const cJSON *item);

#endif
