/*
 * json.h - the single entry point for parsing untrusted JSON, and small
 * typed getters over cJSON (house style: one parse helper with limits).
 */
#ifndef TH_JSON_H
#define TH_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <cjson/cJSON.h>
#include "jsonw.h"
#include "th_result.h"

/*
 * What th_json_parse saw in the text that the tree alone cannot tell, kept as
 * flag bits in cJSON's `type` (above cJSON's own bits; cJSON_Duplicate keeps
 * them, the cJSON_Is* tests ignore them):
 * - TH_JSON_DECIMAL: a number written with a fraction or an exponent ("1.5",
 *   "1e20"); without it the number was an integer literal ("100"). IoT Hub
 *   limits only integers to +-2^52 (docs/protocol.md, Twins).
 * - TH_JSON_KEY_NUL: this member's name held "\u0000" (cJSON cut it there).
 * - TH_JSON_STRING_NUL: this string value held "\u0000" (cut there too).
 * Items built with cJSON_Create* carry none of them.
 */
#define TH_JSON_DECIMAL (1 << 12)
#define TH_JSON_KEY_NUL (1 << 13)
#define TH_JSON_STRING_NUL (1 << 14)

/*
 * Parse `len` bytes of `buf` (need not be NUL-terminated) as one JSON document.
 * Fails with TH_ERR_TOO_LARGE when len > max_bytes, TH_ERR_FORMAT when the
 * text is not JSON or anything but whitespace follows the document, and
 * TH_ERR_TOO_DEEP when objects/arrays nest deeper than max_depth (the
 * outermost value is depth 1). On success *out owns a tree the caller frees
 * with cJSON_Delete, its items flagged as above; on failure *out is NULL and
 * err says why.
 */
TH_NODISCARD th_result th_json_parse(const char *buf, size_t len, size_t max_bytes, int max_depth,
                                     cJSON **out, struct th_error *err);

/*
 * What cJSON_ParseWithLength(text, len) returns, to the node: the same tree
 * without th_json_parse's flags or checks (trailing bytes allowed, cJSON's
 * own nesting limit), built by th_json_parse's one-pass path when it takes
 * the text (json_fast.c; much faster for numbers), else by cJSON. For files
 * the hub wrote itself and always read with cJSON (the jobs' state files).
 * The caller frees the tree with cJSON_Delete; NULL when cJSON fails.
 */
cJSON *th_json_parse_as_cjson(const char *text, size_t len);

/*
 * A th_json_parse failure about `what` (a file name, "standard input")
 * rather than a request body: "FILE is not valid JSON (error near byte 2)",
 * "FILE: JSON nests objects/arrays more than 64 levels deep", without the
 * advice meant for API callers. Writes at most `size` bytes to `out`.
 */
void th_json_error_about(const struct th_error *err, const char *what, char *out, size_t size);

/*
 * Whether a tree th_json_parse built held "\u0000" in a member name or a
 * string value (TH_JSON_KEY_NUL / TH_JSON_STRING_NUL anywhere in it). cJSON
 * keeps strings NUL-terminated, so such a text was already cut at that
 * character: twinhub refuses these documents on every path rather than keep
 * a changed copy (docs/protocol.md, "U+0000 in strings"). On a find, sets err
 * to 400 / 400004 naming `what` and the JSON path of the first one and
 * returns TH_ERR_INVAL; TH_OK otherwise.
 */
TH_NODISCARD th_result th_json_refuse_nul(const cJSON *doc, const char *what, struct th_error *err);

/* Depth of a tree: a scalar is 0, `{}` or `[]` is 1, `{"a":{}}` is 2. */
int th_json_depth(const cJSON *item);

/* Case-sensitive member lookups; return the fallback when absent or of another type. */
const char *th_json_string(const cJSON *obj, const char *key, const char *fallback);
double th_json_number(const cJSON *obj, const char *key, double fallback);
bool th_json_bool(const cJSON *obj, const char *key, bool fallback);
/* The member if it is an object, else NULL. */
cJSON *th_json_object(const cJSON *obj, const char *key);

/*
 * Serialise compactly; the caller frees the result with free(). NULL on
 * failure. A TH_JSON_DECIMAL number beyond +-2^52 that cJSON would print
 * without a fraction or exponent is printed with ".0", so that parsing the
 * text again gives the same flags (a saved twin must load again).
 */
char *th_json_print(const cJSON *item);

/*
 * Pieces of a document printed without building its cJSON tree first, giving
 * the very bytes th_json_print gives for that tree (twin answers,
 * twin_print.c), on a jsonw.h writer: start from {0}, add punctuation with
 * th_jsonw_raw and take the text with th_jsonw_finish. After a failure (out
 * of memory) every call does nothing and th_jsonw_finish returns NULL.
 */
/* Appends `s` as a JSON string, escaped as th_json_print escapes it. */
void th_jbuf_string(struct th_jsonw *b, const char *s);
/* Appends `"key":`, the key escaped as th_json_print escapes member names. */
void th_jbuf_key(struct th_jsonw *b, const char *key);
/* Appends the number th_json_print prints for cJSON_CreateNumber(d). */
void th_jbuf_number(struct th_jsonw *b, double d);
/* Appends what th_json_print(item) gives. */
void th_jbuf_value(struct th_jsonw *b, const cJSON *item);

#endif
