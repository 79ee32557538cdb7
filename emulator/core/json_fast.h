/*
 * json_fast.h - th_json_parse's one-pass path for plain JSON (json_fast.c),
 * private to the core and its tests.
 */
#ifndef TH_JSON_FAST_H
#define TH_JSON_FAST_H

#include <stdbool.h>
#include <stddef.h>
#include <cjson/cJSON.h>

/*
 * The tree cJSON's parser and th_json_parse's flag walk build for `len`
 * bytes of `text` (the document and trailing JSON whitespace only, nesting
 * at most max_depth), or NULL when the text is not one it takes (see
 * json_fast.c) or on OOM: then th_json_parse's cJSON path decides. The
 * caller frees the tree with cJSON_Delete.
 */
cJSON *th_json_parse_fast(const char *text, size_t len, int max_depth);

/* Tests turn the fast path off to compare it with the cJSON path. */
extern bool th_json_fast_enabled;

#endif
