/*
 * hubinfo.h - the hub info file (docs/cli.md, "Finding the hub"): the JSON
 * document `twinhub serve` writes when it is ready (--info-file, and
 * <cert-dir>/hubs/<pid>.json for the admin commands) and that the CLI, `twinhub run
 * --hub` and the integration tests read to find the hub. This is its one
 * definition, both ways; reading and writing the file itself is
 * emulator/ctl/ctl_client.h (th_hubinfo_load, th_hubinfo_save). Pure.
 */
#ifndef TH_HUBINFO_H
#define TH_HUBINFO_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "th_limits.h"
#include "th_result.h"

#define TH_HUBINFO_PATH_MAX 4096
#define TH_HUBINFO_CS_MAX 1024

/*
 * What the file says. Strings are "" where the file has null: the
 * development identities and their connection strings when serve runs with
 * --no-dev-identities, the REST connection string also without the gateway.
 */
struct th_hubinfo {
    char hub_name[256];
    char bind[256];                        /* serve's --bind */
    int mqtt_port, mqtts_port, https_port; /* 0: that listener is off */
    char ca_file[TH_HUBINFO_PATH_MAX];
    char device_id[TH_MAX_ID_LEN + 1];
    char module_id[TH_MAX_ID_LEN + 1];
    char device_cs[TH_HUBINFO_CS_MAX];
    char module_cs[TH_HUBINFO_CS_MAX];
    char service_cs[TH_HUBINFO_CS_MAX]; /* the development owner policy (iothubowner) */
    char rest_cs[TH_HUBINFO_CS_MAX];    /* the same, HostName the gateway's address (alias) */
    char dashboard_url[TH_HUBINFO_CS_MAX]; /* the web dashboard with its token; "" without gateway */
    long pid;                           /* serve's */
    /* The provisioning service (docs/dps.md): its ID scope, the host devices register at
     * (bare: the HTTPS transport dials it on 443, MQTT on 8883 unless given host:port) and the
     * service API's connection string (the gateway's; "" without it). */
    char id_scope[72];
    char provisioning_host[TH_HUBINFO_CS_MAX];
    char dps_cs[TH_HUBINFO_CS_MAX];
    /* serve --state-dir: what loading it could not load, [{identity, file, movedTo, reason}]
     * ([] when all did); NULL without a state dir. Borrowed: to_json copies it; from_json
     * leaves it NULL. */
    const cJSON *state_set_aside;
};

/*
 * The document: {"hubName", "bind", "mqttPort", "mqttsPort", "httpsPort",
 * "restConnectionString", "caFile", "deviceId", "moduleId",
 * "deviceConnectionString", "moduleConnectionString",
 * "serviceConnectionString", "dashboardUrl", "pid", "idScope", "provisioningHost",
 * "provisioningServiceConnectionString", "stateSetAside" (only with a state dir)} in that order,
 * "" strings as null.
 * NULL when out of memory; the caller frees with cJSON_Delete.
 */
cJSON *th_hubinfo_to_json(const struct th_hubinfo *info);

/*
 * Read the document into *out (zeroed first). Members of the wrong type
 * count as absent. TH_ERR_INVAL ("no hubName or ports") unless it has a
 * hubName and a plain or TLS MQTT port; TH_ERR_TOO_LARGE when a string does
 * not fit its field.
 */
TH_NODISCARD th_result th_hubinfo_from_json(const cJSON *doc, struct th_hubinfo *out,
                                            struct th_error *err);

/*
 * The address clients dial for the hub's `bind`: loopback for a wildcard
 * ("", "0.0.0.0" -> 127.0.0.1; "::", "[::]" -> ::1), else the address
 * itself. TH_ERR_BUFFER when `size` is too small.
 */
TH_NODISCARD th_result th_hubinfo_host(const struct th_hubinfo *info, char *out, size_t size);

#endif
