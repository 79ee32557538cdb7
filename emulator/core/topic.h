/*
 * topic.h - device-facing MQTT names: CONNECT username, published topics,
 * subscription filters, the telemetry/C2D property bag, and the topics the
 * hub publishes (iothub-protocol.md sections 3, 4, 5, 6, 8).
 */
#ifndef TH_TOPIC_H
#define TH_TOPIC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "slice.h"
#include "th_result.h"

/* ---- CONNECT username ---- */

/*
 * Accepted forms: "{host}/{d}/?{query}", "{host}/{d}/{m}/?{query}",
 * legacy "{host}/{d}/api-version=..." and bare "{host}/{d}" or
 * "{host}/{d}/{m}". Query keys api-version, DeviceClientType and model-id
 * are extracted (still percent-encoded); unknown keys are ignored.
 */
struct th_username {
    struct th_slice host;
    struct th_slice device_id;
    struct th_slice module_id;   /* ptr NULL for a device */
    struct th_slice api_version; /* ptr NULL when absent */
    struct th_slice client_type; /* DeviceClientType, encoded */
    struct th_slice model_id;    /* model-id, encoded */
};
TH_NODISCARD th_result th_username_parse(const char *username, size_t len, struct th_username *out,
                                         struct th_error *err);

/* True when `id` is a valid device or module id (<= 128 chars of the allowed set). */
bool th_id_valid(const char *id, size_t len);

/* ---- topics a device publishes ---- */

enum th_topic_kind {
    TH_TOPIC_UNKNOWN = 0,
    TH_TOPIC_TELEMETRY,          /* devices/{d}[/modules/{m}]/messages/events/[bag] */
    TH_TOPIC_TWIN_GET,           /* $iothub/twin/GET/?$rid= */
    TH_TOPIC_TWIN_PATCH_REPORTED,/* $iothub/twin/PATCH/properties/reported/?$rid= */
    TH_TOPIC_METHOD_RESPONSE,    /* $iothub/methods/res/{status}/?$rid= */
};

struct th_topic {
    enum th_topic_kind kind;
    struct th_slice device_id;   /* telemetry only */
    struct th_slice module_id;   /* telemetry from a module only */
    struct th_slice props;       /* telemetry property bag (encoded, leading '?' removed) */
    struct th_slice rid;         /* $rid value, as sent (encoded) */
    struct th_slice version;     /* reported PATCH: $version value as sent; ptr NULL when absent */
    struct th_slice status_text; /* method response: the {status} level as sent */
    bool status_ok;              /* method response: status_text is a decimal int32 */
    int32_t status;              /* method response status, when status_ok */
};

/*
 * The $version of a reported PATCH topic as a number: TH_OK with *out set for
 * an optional '-' and 1 to 18 decimal digits, TH_ERR_INVAL for anything else
 * (empty, other characters, longer; the hub's answer to those is not
 * documented, docs/protocol.md decides 400 / 400004).
 */
TH_NODISCARD th_result th_topic_version_value(struct th_slice version, long long *out);

/*
 * Classify a published topic. Unknown topics return TH_ERR_INVAL with kind
 * TH_TOPIC_UNKNOWN. A twin or method-response topic without $rid is
 * TH_ERR_INVAL. The caller checks that telemetry ids match the publisher.
 *
 * A method response with a $rid is TH_OK whatever its {status} level holds:
 * status_ok says whether that is a decimal int32 (optional '-', digits, the
 * whole range -2147483648..2147483647, as the device SDKs print an int), so
 * that the caller can fail the one pending call instead of the connection.
 */
TH_NODISCARD th_result th_topic_parse(const char *topic, size_t len, struct th_topic *out);

/* ---- subscription filters ---- */

enum th_sub_kind {
    TH_SUB_DENIED = 0,
    TH_SUB_TWIN_RES,     /* $iothub/twin/res/# */
    TH_SUB_DESIRED,      /* $iothub/twin/PATCH/properties/desired/# */
    TH_SUB_METHODS,      /* $iothub/methods/POST/# (or a per-method filter) */
    TH_SUB_C2D,          /* devices/{d|+}/messages/devicebound/# (devices only) */
    TH_SUB_MODULE_INPUTS /* devices/{d}/modules/{m}/# or .../inputs/# (modules only) */
};
/*
 * What a subscription filter from identity (device_id, module_id or NULL)
 * means, or TH_SUB_DENIED when it names another identity or an unsupported
 * topic.
 */
enum th_sub_kind th_sub_classify(const char *filter, const char *device_id, const char *module_id);

/* ---- property bags ---- */

struct th_prop {
    char *name;  /* decoded, malloc'd */
    char *value; /* decoded, malloc'd; NULL for a key with no '=' */
};
struct th_props {
    struct th_prop *items;
    size_t count;
};
/*
 * Parse "k1=v1&k2&k3=" (URL-encoded; optional leading '?'; '+' is kept as
 * '+'). Fills `out` (free with th_props_free). TH_ERR_FORMAT on a broken
 * escape or an empty name.
 */
TH_NODISCARD th_result th_props_parse(const char *bag, size_t len, struct th_props *out);
void th_props_free(struct th_props *props);
/* Value of a property by decoded name, NULL when absent or valueless. */
const char *th_props_get(const struct th_props *props, const char *name);
/* Append a property (copies name and value; value may be NULL). */
TH_NODISCARD th_result th_props_add(struct th_props *props, const char *name, const char *value);
/*
 * Encode as a bag "k=v&k2" with both parts percent-encoded (so '$' becomes
 * %24, as the SDKs send it). NUL-terminated; TH_ERR_BUFFER when too small.
 */
TH_NODISCARD th_result th_props_encode(const struct th_props *props, char *out, size_t size,
                                       size_t *out_len);

/* ---- topics the hub publishes (NUL-terminated; TH_ERR_BUFFER when too small) ---- */

/* $iothub/twin/res/{status}/?$rid={rid}[&$version={v}] (version < 0 omits it). */
TH_NODISCARD th_result th_topic_twin_response(int status, struct th_slice rid, long long version,
                                              char *out, size_t size);
/* $iothub/twin/PATCH/properties/desired/?$version={v} */
TH_NODISCARD th_result th_topic_desired(long long version, char *out, size_t size);
/* $iothub/methods/POST/{name}/?$rid={rid} */
TH_NODISCARD th_result th_topic_method_request(const char *name, const char *rid, char *out,
                                               size_t size);
/* devices/{d}/messages/devicebound/{bag} (bag may be empty). */
TH_NODISCARD th_result th_topic_c2d(const char *device_id, const char *bag, char *out, size_t size);

/*
 * Parse a method response status: an optional '-' then decimal digits, within
 * int32. False (and *out untouched) for anything else, "" and "+1" included.
 */
bool th_method_status_parse(const char *s, size_t len, int32_t *out);

/* True when `name` is a valid direct method name (printable ASCII without the reserved set). */
bool th_method_name_valid(const char *name);

#endif
