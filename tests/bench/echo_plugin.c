/*
 * echo_plugin.c - the twin round-trip baseline: the least a mosquitto 2.0
 * plugin can do to answer the IoT Hub twin requests. A publish to
 * `$iothub/twin/GET/?$rid=R` gets `$iothub/twin/res/200/?$rid=R` with a
 * canned twin, a publish to `$iothub/twin/PATCH/properties/reported/?$rid=R`
 * gets `$iothub/twin/res/204/?$rid=R&$version=V`, both published to the
 * sender only, like twinhub does. No authentication, no state, no JSON.
 * Built only for the benchmarks (tests/bench/meson.build).
 */
#include <stdio.h>
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

/* Built with -fvisibility=hidden: only the three entry points are exported. */
#define ECHO_API __attribute__((visibility("default")))

#define GET_PREFIX "$iothub/twin/GET/"
#define PATCH_PREFIX "$iothub/twin/PATCH/properties/reported/"

/* About the size of a small twin as twinhub returns it. */
static const char canned_twin[] =
    "{\"desired\":{\"$version\":1},\"reported\":{\"temperature\":21.5,\"seq\":1,"
    "\"status\":\"ok\",\"$version\":2}}";

static mosquitto_plugin_id_t *plugin_id;
static long long patch_version = 1;

/* The $rid value of a request topic ("...?$rid=R[&...]"), or NULL. */
static const char *find_rid(const char *topic, size_t *len)
{
    const char *q = strstr(topic, "$rid=");
    if (!q) {
        return NULL;
    }
    q += 5;
    *len = strcspn(q, "&");
    return q;
}

static int on_message(int event, void *event_data, void *userdata)
{
    struct mosquitto_evt_message *ed = event_data;
    const char *topic = ed->topic;
    char reply[256];
    size_t rid_len = 0;
    const char *rid;
    (void)event;
    (void)userdata;

    if (strncmp(topic, "$iothub/twin/", 13) != 0) {
        return MOSQ_ERR_SUCCESS; /* ordinary routing */
    }
    rid = find_rid(topic, &rid_len);
    if (!rid || rid_len > 64) {
        return MOSQ_ERR_ACL_DENIED;
    }
    const char *client_id = mosquitto_client_id(ed->client);
    if (!strncmp(topic, GET_PREFIX, sizeof GET_PREFIX - 1)) {
        snprintf(reply, sizeof reply, "$iothub/twin/res/200/?$rid=%.*s", (int)rid_len, rid);
        mosquitto_broker_publish_copy(client_id, reply, (int)(sizeof canned_twin - 1), canned_twin,
                                      0, false, NULL);
    } else if (!strncmp(topic, PATCH_PREFIX, sizeof PATCH_PREFIX - 1)) {
        snprintf(reply, sizeof reply, "$iothub/twin/res/204/?$rid=%.*s&$version=%lld", (int)rid_len,
                 rid, ++patch_version);
        mosquitto_broker_publish_copy(client_id, reply, 0, NULL, 0, false, NULL);
    }
    return MOSQ_ERR_ACL_DENIED; /* consumed, acknowledged, not routed */
}

ECHO_API int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
    for (int i = 0; i < supported_version_count; i++) {
        if (supported_versions[i] == 5) {
            return 5;
        }
    }
    return -1;
}

ECHO_API int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
                                   struct mosquitto_opt *opts, int opt_count)
{
    (void)opts;
    (void)opt_count;
    plugin_id = identifier;
    *userdata = NULL;
    return mosquitto_callback_register(identifier, MOSQ_EVT_MESSAGE, on_message, NULL, NULL);
}

ECHO_API int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *opts, int opt_count)
{
    (void)userdata;
    (void)opts;
    (void)opt_count;
    return mosquitto_callback_unregister(plugin_id, MOSQ_EVT_MESSAGE, on_message, NULL);
}
