/*
 * ctl_answer.h - the control API's answer text (docs/control-api.md),
 * printed without building its tree: {"responses":[...]} and a success
 * entry {"command":..,["correlationData":..,]"data":..}. The bytes are those
 * th_json_print gives for the tree broker/control.c built before
 * (tests/unit/test_ctl_answer.c compares them on random entries); the
 * broker answers every control request through these.
 *
 * Ownership: returned text is freed with free(); arguments are borrowed.
 */
#ifndef TH_CTL_ANSWER_H
#define TH_CTL_ANSWER_H

#include <stddef.h>

#include <cjson/cJSON.h>

/*
 * {"command":<command or null>[,"correlationData":<correlation>],"data":<data or {}>}
 * as th_json_print prints that object. NULL on OOM or when a value cannot be printed.
 */
char *th_ctl_ok_entry_text(const char *command, const cJSON *correlation, const cJSON *data);

/* {"responses":<responses>} as th_json_print prints it; *len (may be NULL) its length. NULL on
 * OOM, a NULL `responses`, or a value that cannot be printed. */
char *th_ctl_responses_text(const cJSON *responses, size_t *len);

/*
 * A cJSON raw item holding `text` (malloc'd, taken on every path: cJSON_Delete
 * frees it), without cJSON_CreateRaw's copy: the answer's data printed
 * elsewhere (a twin of ~1 KB) goes in as it is. NULL (text freed) on OOM or
 * NULL text.
 */
cJSON *th_ctl_raw_taking(char *text);

#endif
