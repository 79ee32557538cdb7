/*
 * patch.h - IoT Hub's merge patch on plain JSON (iothub-protocol.md section
 * 7.4), the one implementation for everything that merges a twin section
 * without metadata: the scenario engine's view of reported properties
 * (emulator/scenario/scn_engine.c) and, once switched, the twins' tags.
 *
 * The rules, as the hub applies a twin patch:
 * - a member whose value is null deletes the member (absent: nothing happens);
 * - an object onto an object merges recursively;
 * - an object onto a missing or non-object member starts from {} and merges
 *   into it, so nulls nested in it delete nothing and vanish
 *   ({"a":{"b":null}} onto {} gives {"a":{}});
 * - anything else (string, number, bool, array) replaces the member whole:
 *   arrays are values, never merged element by element.
 * A replaced member keeps its position among its siblings; a new one is added
 * last. Validation (key names, depth, sizes) is not done here: twin.c
 * validates before it merges.
 */
#ifndef TH_PATCH_H
#define TH_PATCH_H

#include <cjson/cJSON.h>
#include "th_result.h"

/*
 * Merge `patch` into `target` with the rules above. Both must be objects
 * (TH_ERR_INVAL otherwise, nothing changed). `patch` is only read: what goes
 * into `target` is copied. TH_ERR_NOMEM when an allocation fails; `target` is
 * then partly merged (every member it holds is whole and valid JSON, but some
 * of the patch may be missing), so a caller that needs all or nothing merges
 * into a copy and swaps it in on TH_OK.
 */
TH_NODISCARD th_result th_json_merge_patch(cJSON *target, const cJSON *patch);

/*
 * Set obj[key] = item: replaces the first member named `key` in place (its
 * position kept) or appends one. Takes ownership of `item` on every path; a
 * NULL item (an allocation that failed before the call) gives TH_ERR_NOMEM.
 * Unlike cJSON_ReplaceItemInObject it checks the copy of the member's name.
 */
TH_NODISCARD th_result th_json_set_member(cJSON *obj, const char *key, cJSON *item);

#endif
