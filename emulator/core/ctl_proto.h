/*
 * ctl_proto.h - the control API's wire format as its clients see it
 * (docs/control-api.md): the topics, the request envelope
 * {"commands":[{..., "correlationData": C}]}, and the reading of the answer
 * {"responses":[{"command", "correlationData", "data" | "error", "status",
 * "errorCode"}]}. Pure: the broker plugin (which serves the API), the
 * gateway, the CLI, `twinhub run` and the tests all take the protocol from
 * here; the libmosquitto client on top of it is emulator/ctl/ctl_client.h.
 *
 * Ownership: returned text is freed with free(); returned cJSON trees with
 * cJSON_Delete; entries found in a response array are borrowed from it.
 */
#ifndef TH_CTL_PROTO_H
#define TH_CTL_PROTO_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "th_result.h"

/* Where service principals send commands, and where each gets its answers. */
#define TH_CONTROL_TOPIC "$CONTROL/twinhub/v1"
#define TH_CONTROL_RESPONSE_TOPIC TH_CONTROL_TOPIC "/response"
/* The event stream: $twinhub/events/{kind}/{deviceId}[/{moduleId}] (docs/recording.md). */
#define TH_EVENTS_PREFIX "$twinhub/events/"
#define TH_EVENTS_TOPIC TH_EVENTS_PREFIX "#"

/* Nesting limit for answers; the hub's own documents stay far below it. */
#define TH_CTL_MAX_DEPTH 64
/* A correlationData a client makes up ("<prefix>-<n>") fits in this many bytes with its NUL. */
#define TH_CTL_CORR_MAX 64

/*
 * A command {"command": name, "deviceId": device_id, "moduleId": module_id};
 * NULL ids are left out. NULL when out of memory; the caller frees it.
 */
cJSON *th_ctl_command(const char *name, const char *device_id, const char *module_id);

/*
 * The request envelope for `n` commands (n >= 1): each cmds[i] gets
 * correlationData corrs[i] (a string; one it had is replaced; NULL leaves
 * the command as it is), then {"commands":[...]} is printed compactly.
 * The commands stay the caller's: they are changed in place and referenced,
 * not copied. Returns the text (free()), or NULL when out of memory or a
 * command is NULL.
 */
char *th_ctl_request_print(cJSON *const *cmds, size_t n, const char *const *corrs);

/*
 * Parse one message of the response topic and detach its "responses" array.
 * On TH_OK *out is that array (cJSON_Delete). TH_ERR_FORMAT / TH_ERR_TOO_LARGE
 * / TH_ERR_TOO_DEEP as th_json_parse (with TH_CTL_MAX_DEPTH and `max_bytes`);
 * TH_ERR_INVAL when the document has no "responses" array.
 */
TH_NODISCARD th_result th_ctl_responses_parse(const char *text, size_t len, size_t max_bytes,
                                              cJSON **out, struct th_error *err);

/* An entry's correlationData when it is a string, else NULL. */
const char *th_ctl_entry_corr(const cJSON *entry);

/*
 * Whether an entry answers the whole request rather than one command: the
 * hub sends {"command": null, "error": ...} without correlationData when
 * the request was not JSON or had no "commands" array.
 */
bool th_ctl_entry_is_request_error(const cJSON *entry);

/*
 * The entry of `responses` (an array) that answers correlationData `corr`;
 * with `request_errors`, a request error (above) answers any `corr` when no
 * entry names it. NULL when none does. Borrowed from `responses`; detach it
 * with cJSON_DetachItemViaPointer to keep it.
 */
cJSON *th_ctl_find(const cJSON *responses, const char *corr, bool request_errors);

/*
 * Whether an entry reports an error (an "error" member that is not null).
 * Then *status and *code (each may be NULL) get its "status" and
 * "errorCode" (0 when absent) and the result is the error sentence, or
 * TH_CTL_ERROR_UNSAID when the entry's error is not a string. NULL when
 * the command succeeded (its result is the entry's "data").
 */
#define TH_CTL_ERROR_UNSAID "the hub refused the command"
const char *th_ctl_entry_error(const cJSON *entry, int *status, int *code);

#endif
