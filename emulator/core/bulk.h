/*
 * bulk.h - IoT Hub's bulk registry operation (service REST API "Bulk
 * Registry - Update Registry", POST /devices; azure-iothub's
 * Registry.addDevices / updateDevices / removeDevices): up to 100
 * export-import identities, each created, updated or deleted on its own,
 * answered with the hub's per-device results.
 *
 * An entry is the hub's ExportImportDevice (azure-iot-sdk-csharp
 * ExportImportDevice.cs; azure-iothub's models): "id", "moduleId",
 * "importMode", "eTag" (the SDKs' Registry.get spells it "etag": both are
 * read), "status", "statusReason", "authentication", "capabilities",
 * "deviceScope", "parentScopes", "managedBy", "twinETag", "tags",
 * "properties": {"desired"}; other members are ignored. importMode
 * (case-insensitive: the Node SDK sends "Update", the C# SDK "update")
 * follows ImportMode.cs:
 *   create                     new only; an existing identity is an error
 *   createOrUpdate (default)   create, or overwrite the given members
 *   createOrUpdateIfMatchETag  the same, an existing one only on an etag match
 *   update                     existing only, overwrite the given members
 *   updateIfMatchETag          the same, only on an etag match
 *   delete / deleteIfMatchETag existing only (with its modules when a device)
 *   updateTwin[IfMatchETag]    replace the given twin parts (twinETag)
 * "Overwrite" is the identity update of the REST PUT (th_identity_apply) plus
 * a replace of the twin parts the entry carries (tags, properties.desired);
 * a create gives the new twin those parts. Each entry is all-or-nothing.
 *
 * Decisions where the hub is silent (docs/rest-api.md, "Bulk registry"):
 * - a repeated identity in one request fails as DeviceDefinedMultipleTimes
 *   (400011) and the first one is carried out;
 * - an IfMatch mode without an etag fails as PreconditionFailed.
 */
#ifndef TH_BULK_H
#define TH_BULK_H

#include <stdbool.h>
#include <stdint.h>
#include <cjson/cJSON.h>

#include "registry.h"
#include "th_result.h"

#define TH_BULK_MAX_DEVICES 100 /* ExportImportDevice entries per request */

enum th_bulk_change_kind {
    TH_BULK_CREATED,
    TH_BULK_UPDATED,
    TH_BULK_DELETED,
};

/* One entry carried out; everything is borrowed for the duration of the hook call. */
struct th_bulk_change {
    enum th_bulk_change_kind kind;
    struct th_identity *id; /* created / updated: the identity; deleted: NULL */
    const char *device_id;
    const char *module_id;     /* NULL for a device */
    bool disabled;             /* updated: the device is disabled now (close it and its modules) */
    bool keys_changed;         /* updated: tokens signed with the old keys no longer hold */
    const cJSON *notification; /* updated: the desired notification when desired was written */
    const cJSON *desired;      /* ... and the desired document written (for events) */
    int64_t desired_version;
};

/* What the caller does around the registry changes (the broker: connections, persistence). */
struct th_bulk_hooks {
    void *arg;
    /* Before an identity (a device: with its modules) is removed from the registry. */
    void (*before_delete)(void *arg, struct th_identity *id);
    /* After each entry carried out. */
    void (*changed)(void *arg, const struct th_bulk_change *change);
};

/*
 * Carry out the entries of `devices` (a JSON array) in order, each on its
 * own. Whole-request refusals, nothing done: `devices` not an array or an
 * entry not an object (400 / 400004), an empty array (400 / 400004), more
 * than TH_BULK_MAX_DEVICES entries (413 / 413002 TooManyDevices, as the
 * hub: azure-iot-sdk-csharp HttpRegistryManager maps 413 to
 * TooManyDevicesException), out of memory. Otherwise TH_OK and *out_result
 * (the caller frees it with cJSON_Delete) is the hub's
 * BulkRegistryOperationResult: {"isSuccessful": bool, "errors": [{"deviceId",
 * "moduleId"?, "errorCode": name, "errorStatus": text}], "warnings": []},
 * isSuccessful false when any entry failed. Does not take `devices`.
 */
TH_NODISCARD th_result th_registry_bulk(struct th_registry *reg, const cJSON *devices,
                                        int64_t now_us, const struct th_bulk_hooks *hooks,
                                        cJSON **out_result, struct th_error *err);

#endif
