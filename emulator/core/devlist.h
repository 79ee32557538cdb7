/*
 * devlist.h - the dashboard's device list (docs/dashboard.md, control API
 * `listDeviceSummaries`): which devices a filter selects, and one summary
 * row per device (status, connection state, last activity, modules, pending
 * C2D, and on request the `azureiotsecurity` module's state), so that the
 * broker can answer one page of a 10,000-device registry without sending
 * every identity and twin. Pure: the broker walks its registry and calls
 * these.
 *
 * Decisions (IoT Hub has no such list; the portal's device page is the
 * model):
 * - `search` matches a device id or any of its module ids, ASCII case
 *   ignored, anywhere in the id (the portal's filter box matches prefixes
 *   of the device id only; a substring is what people type when looking).
 * - Pages are by position in the registry's order (creation order), with
 *   `skip` and `top` (1-1000, default 100, the limit of GET /devices).
 */
#ifndef TH_DEVLIST_H
#define TH_DEVLIST_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "registry.h"
#include "th_result.h"

#define TH_DEVLIST_DEFAULT_TOP 100
#define TH_DEVLIST_MAX_TOP 1000

struct th_devlist_filter {
    const char *search;    /* NULL or "": any; borrowed from the command */
    int enabled;           /* -1 any, 0 disabled, 1 enabled */
    int connected;         /* -1 any, 0 disconnected, 1 connected */
    const char *module_id; /* NULL: any; else only devices that have this module */
    bool security;         /* add the "security" member to each row */
    long skip, top;
};

/*
 * Read a filter from a control command: "search" (string), "status"
 * ("enabled"/"disabled"), "connectionState" ("Connected"/"Disconnected"),
 * "moduleId" (string), "security" (bool), "skip" (>= 0), "top" (1-1000).
 * Absent or null members take the defaults. Strings borrow from `cmd`.
 * TH_ERR_INVAL (400004, naming the member) for a wrong type or value.
 */
TH_NODISCARD th_result th_devlist_filter_from_json(const cJSON *cmd,
                                                   struct th_devlist_filter *out,
                                                   struct th_error *err);

/* Whether device `dev` passes the filter (skip and top aside). */
bool th_devlist_match(const struct th_identity *dev, const struct th_devlist_filter *f);

/*
 * One row: {"deviceId", "status", "connectionState", "lastActivityTime",
 * "connectionStateUpdatedTime", "cloudToDeviceMessageCount", "iotEdge",
 * "modules": [{"moduleId", "connectionState", "lastActivityTime"}],
 * "security"?: {"module": bool, "connectionState"?, "configuration"?:
 * "matches"|"differs"|"not reported", "differences"?: [..]}} (times as
 * th_time_format, TH_TIME_NEVER when never, as the identity JSON; security as
 * `twinhub security status`,
 * th_secconfig_diff). NULL when out of memory; the caller frees.
 */
cJSON *th_devlist_row(const struct th_identity *dev, bool security);

#endif
