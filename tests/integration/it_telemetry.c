/*
 * it_telemetry.c - device-to-cloud telemetry against the real broker +
 * plugin (iothub-protocol.md sections 3.7, 3.8 and 4): the telemetry event
 * record with decoded system and application properties, hub-stamped
 * connection properties, RETAIN, QoS 2 and module telemetry; a Plug and Play
 * component ($.sub) shows as dt-subject next to dt-dataschema, live and in a
 * recording (--record).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <mosquitto.h>

#include "harness.h"

static struct it_hub hub;

static int group_setup(void **state)
{
    (void)state;
    return it_hub_start(&hub);
}

static int group_teardown(void **state)
{
    (void)state;
    return it_hub_stop(&hub);
}

/* Event predicate: data.systemProperties.messageId equals arg. */
static bool has_message_id(const cJSON *rec, void *arg)
{
    const char *mid = it_json_str(rec, "data.systemProperties.messageId");
    return mid && strcmp(mid, arg) == 0;
}

static void test_telemetry_qos1_with_properties_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, true);
    struct it_client *dev = it_device_open(&hub, IT_DEV1, NULL, IT_DEV1_KEY);
    const char *topic = "devices/" IT_DEV1 "/messages/events/"
                        "%24.mid=t-1&%24.ct=application%2Fjson&%24.ce=utf-8&color=red%20blue";
    assert_int_equal(it_client_publish_str(dev, topic, "{\"t\":21}", 1), MOSQ_ERR_SUCCESS);

    cJSON *ev = it_event_wait(svc, "telemetry", IT_DEV1, NULL, has_message_id, "t-1", IT_WAIT_MS);
    assert_non_null(ev);
    assert_string_equal(it_json_str(ev, "kind"), "telemetry");
    assert_string_equal(it_json_str(ev, "deviceId"), IT_DEV1);
    assert_true(cJSON_IsNull(it_json_get(ev, "moduleId")));
    assert_true(cJSON_IsNumber(it_json_get(ev, "seq")));
    assert_non_null(it_json_str(ev, "time"));
    assert_string_equal(it_json_str(ev, "data.topic"), topic);
    assert_int_equal((int)it_json_num(ev, "data.qos", -1), 1);
    assert_true(cJSON_IsFalse(it_json_get(ev, "data.retain")));
    assert_string_equal(it_json_str(ev, "data.systemProperties.contentType"), "application/json");
    assert_string_equal(it_json_str(ev, "data.systemProperties.contentEncoding"), "utf-8");
    assert_string_equal(it_json_str(ev, "data.systemProperties.iothub-connection-device-id"),
                        IT_DEV1);
    assert_non_null(it_json_str(ev, "data.systemProperties.iothub-enqueuedtime"));
    assert_non_null(it_json_get(ev, "data.systemProperties.iothub-connection-auth-method"));
    assert_string_equal(it_json_str(ev, "data.properties.color"), "red blue");
    /* system keys are not application properties */
    const cJSON *props = it_json_get(ev, "data.properties");
    assert_null(cJSON_GetObjectItemCaseSensitive(props, "$.mid"));
    assert_null(cJSON_GetObjectItemCaseSensitive(props, "%24.mid"));
    assert_string_equal(it_json_str(ev, "data.body"), "{\"t\":21}");
    assert_true(it_json_num(ev, "data.size", -1) >= 8); /* at least the body */
    cJSON_Delete(ev);
    it_client_close(dev);
    it_client_close(svc);
}

static void test_telemetry_qos0_without_properties_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, true);
    struct it_client *dev = it_device_open(&hub, IT_DEV2, NULL, IT_DEV2_KEY);
    assert_int_equal(
        it_client_publish_str(dev, "devices/" IT_DEV2 "/messages/events/", "plain text", 0),
        MOSQ_ERR_SUCCESS);
    cJSON *ev = it_event_wait(svc, "telemetry", IT_DEV2, NULL, NULL, NULL, IT_WAIT_MS);
    assert_non_null(ev);
    assert_int_equal((int)it_json_num(ev, "data.qos", -1), 0);
    assert_string_equal(it_json_str(ev, "data.body"), "plain text");
    assert_string_equal(it_json_str(ev, "data.systemProperties.iothub-connection-device-id"),
                        IT_DEV2);
    cJSON_Delete(ev);
    it_client_close(dev);
    it_client_close(svc);
}

static void test_telemetry_module_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, true);
    struct it_client *mod = it_device_open(&hub, IT_DEV1, IT_MOD1, IT_MOD1_KEY);
    assert_int_equal(
        it_client_publish_str(
            mod, "devices/" IT_DEV1 "/modules/" IT_MOD1 "/messages/events/%24.mid=t-mod", "{}", 1),
        MOSQ_ERR_SUCCESS);
    cJSON *ev =
        it_event_wait(svc, "telemetry", IT_DEV1, IT_MOD1, has_message_id, "t-mod", IT_WAIT_MS);
    assert_non_null(ev);
    assert_string_equal(it_json_str(ev, "moduleId"), IT_MOD1);
    assert_string_equal(it_json_str(ev, "data.systemProperties.iothub-connection-device-id"),
                        IT_DEV1);
    assert_string_equal(it_json_str(ev, "data.systemProperties.iothub-connection-module-id"),
                        IT_MOD1);
    cJSON_Delete(ev);
    it_client_close(mod);
    it_client_close(svc);
}

static void test_telemetry_spoofed_connection_id_ignored_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, true);
    struct it_client *dev = it_device_open(&hub, IT_DEV1, NULL, IT_DEV1_KEY);
    assert_int_equal(it_client_publish_str(dev,
                                           "devices/" IT_DEV1 "/messages/events/"
                                           "iothub-connection-device-id=" IT_DEV2
                                           "&%24.mid=t-spoof",
                                           "x", 1),
                     MOSQ_ERR_SUCCESS);
    cJSON *ev =
        it_event_wait(svc, "telemetry", IT_DEV1, NULL, has_message_id, "t-spoof", IT_WAIT_MS);
    assert_non_null(ev);
    /* the hub stamps the authenticated id; a device-supplied value never overrides it */
    assert_string_equal(it_json_str(ev, "data.systemProperties.iothub-connection-device-id"),
                        IT_DEV1);
    cJSON_Delete(ev);
    it_client_close(dev);
    it_client_close(svc);
}

static void test_telemetry_retain_recorded_not_stored_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, true);
    struct it_client *dev = it_device_open(&hub, IT_DEV1, NULL, IT_DEV1_KEY);
    const char *topic = "devices/" IT_DEV1 "/messages/events/%24.mid=t-retain";
    assert_int_equal(it_client_publish(dev, topic, "kept?", 5, 1, true), MOSQ_ERR_SUCCESS);
    cJSON *ev =
        it_event_wait(svc, "telemetry", IT_DEV1, NULL, has_message_id, "t-retain", IT_WAIT_MS);
    assert_non_null(ev);
    assert_true(cJSON_IsTrue(it_json_get(ev, "data.retain")));
    assert_string_equal(it_json_str(ev, "data.properties.mqtt-retain"), "true");
    cJSON_Delete(ev);

    /*
     * Nothing was retained: a later subscriber to the topic (a service principal; devices may
     * not subscribe to events topics) gets no retained copy. The broker sends retained messages
     * while handling the SUBSCRIBE, so they would arrive before the answer to a control
     * request made after the SUBACK: that answer is the marker that bounds the wait.
     */
    struct it_client *late = it_service_open(&hub, false);
    int granted = it_client_subscribe(late, "devices/" IT_DEV1 "/messages/events/#", 1, IT_WAIT_MS);
    assert_true(granted >= 0); /* a SUBACK came (granted or refused) */
    granted = it_client_subscribe(late, "#", 1, IT_WAIT_MS);
    assert_true(granted >= 0);
    cJSON *r =
        it_control(late, IT_WAIT_MS, "{\"command\":\"getDevice\",\"deviceId\":\"" IT_DEV1 "\"}");
    assert_non_null(r);
    cJSON_Delete(r);
    assert_int_equal(it_client_count_prefix(late, "devices/"), 0);
    it_client_close(late);
    it_client_close(dev);
    it_client_close(svc);
}

static void test_telemetry_qos2_closes_connection_fails(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, true);
    struct it_client *dev = it_device_open(&hub, IT_DEV3, NULL, IT_DEV3_KEY);
    assert_int_equal(
        it_client_publish_str(dev, "devices/" IT_DEV3 "/messages/events/%24.mid=t-qos2", "two", 2),
        MOSQ_ERR_SUCCESS);
    assert_true(it_client_wait_disconnect(dev, IT_WAIT_MS));

    /*
     * Not recorded either. Marker: the hub handles it-dev3's publish before closing its
     * connection, so a telemetry event for it would reach us before the event of this later
     * publish of it-dev2.
     */
    struct it_client *other = it_device_open(&hub, IT_DEV2, NULL, IT_DEV2_KEY);
    assert_int_equal(it_client_publish_str(
                         other, "devices/" IT_DEV2 "/messages/events/%24.mid=t-marker", "m", 1),
                     MOSQ_ERR_SUCCESS);
    cJSON *ev =
        it_event_wait(svc, "telemetry", IT_DEV2, NULL, has_message_id, "t-marker", IT_WAIT_MS);
    assert_non_null(ev);
    cJSON_Delete(ev);
    assert_int_equal(it_client_count_prefix(svc, "$twinhub/events/telemetry/" IT_DEV3), 0);
    it_client_close(other);
    it_client_close(dev);
    it_client_close(svc);
}

#define PNP_MODEL "dtmi:com:example:TemperatureController;1"
#define PNP_MODEL_ENCODED "dtmi%3Acom%3Aexample%3ATemperatureController%3B1"

/* IT_DEV2 connected with a model-id in its username, as Plug and Play devices do. */
static struct it_client *pnp_device(const struct it_hub *h)
{
    char *token = it_device_token(h->hub_name, IT_DEV2, NULL, IT_DEV2_KEY, it_expiry());
    char *username =
        it_strdupf("%s/%s", h->hub_name,
                   IT_DEV2 "/?api-version=" IT_API_VERSION "&model-id=" PNP_MODEL_ENCODED);
    struct it_connect_opts o = {.client_id = IT_DEV2, .username = username, .password = token};
    int connack = -2;
    struct it_client *c = it_client_connect(h, &o, &connack);
    assert_int_equal(connack, 0);
    free(token);
    free(username);
    return c;
}

/*
 * IoT Plug and Play conventions: "add the $.sub property with the component name to the
 * telemetry topic, the system adds the dt-subject property" (next to dt-dataschema).
 */
static void test_telemetry_component_is_dt_subject_succeeds(void **state)
{
    (void)state;
    struct it_client *svc = it_service_open(&hub, true);
    struct it_client *dev = pnp_device(&hub);
    assert_int_equal(it_client_publish_str(dev,
                                           "devices/" IT_DEV2 "/messages/events/"
                                           "%24.mid=t-pnp&%24.sub=thermostat1&%24.ct=application%"
                                           "2Fjson&%24.ce=utf-8",
                                           "{\"temperature\":21.5}", 1),
                     MOSQ_ERR_SUCCESS);
    cJSON *ev = it_event_wait(svc, "telemetry", IT_DEV2, NULL, has_message_id, "t-pnp", IT_WAIT_MS);
    assert_non_null(ev);
    assert_string_equal(it_json_str(ev, "data.systemProperties.dt-subject"), "thermostat1");
    assert_string_equal(it_json_str(ev, "data.systemProperties.dt-dataschema"), PNP_MODEL);
    assert_null(it_json_get(ev, "data.systemProperties.componentName"));
    assert_null(it_json_get(ev, "data.properties.dt-subject"));
    cJSON_Delete(ev);

    /* Without $.sub (the default component) there is no dt-subject. */
    assert_int_equal(
        it_client_publish_str(dev, "devices/" IT_DEV2 "/messages/events/%24.mid=t-nosub", "{}", 1),
        MOSQ_ERR_SUCCESS);
    ev = it_event_wait(svc, "telemetry", IT_DEV2, NULL, has_message_id, "t-nosub", IT_WAIT_MS);
    assert_non_null(ev);
    assert_null(it_json_get(ev, "data.systemProperties.dt-subject"));
    assert_string_equal(it_json_str(ev, "data.systemProperties.dt-dataschema"), PNP_MODEL);
    cJSON_Delete(ev);
    it_client_close(dev);
    it_client_close(svc);
}

/* The recording holds the same record: dt-subject and dt-dataschema in systemProperties. */
static void test_telemetry_component_recorded_succeeds(void **state)
{
    (void)state;
    char dir[] = "/tmp/it-telemetry-rec-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char *rec = it_strdupf("%s/events.jsonl", dir);
    struct it_hub h;
    const char *extra[] = {"--record", rec, NULL};
    assert_int_equal(it_hub_start_with(&h, NULL, extra), 0);
    struct it_client *dev = pnp_device(&h);
    /* PUBACK: the record is in the file before the hub acknowledges (recording.md). */
    assert_true(it_client_publish_acked(
        dev, "devices/" IT_DEV2 "/messages/events/%24.mid=t-rec&%24.sub=thermostat2", "{}",
        IT_WAIT_MS));
    it_client_close(dev);
    assert_int_equal(it_hub_stop(&h), 0);

    char *text = it_read_file(rec);
    assert_non_null(text);
    int found = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *r = cJSON_Parse(line);
        assert_non_null(r);
        const char *mid = it_json_str(r, "data.systemProperties.messageId");
        if (mid && !strcmp(mid, "t-rec")) {
            found++;
            assert_string_equal(it_json_str(r, "kind"), "telemetry");
            assert_string_equal(it_json_str(r, "data.systemProperties.dt-subject"), "thermostat2");
            assert_string_equal(it_json_str(r, "data.systemProperties.dt-dataschema"), PNP_MODEL);
        }
        cJSON_Delete(r);
    }
    assert_int_equal(found, 1);
    free(text);
    assert_int_equal(unlink(rec), 0);
    assert_int_equal(rmdir(dir), 0);
    free(rec);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_telemetry_qos1_with_properties_succeeds),
        cmocka_unit_test(test_telemetry_qos0_without_properties_succeeds),
        cmocka_unit_test(test_telemetry_module_succeeds),
        cmocka_unit_test(test_telemetry_spoofed_connection_id_ignored_succeeds),
        cmocka_unit_test(test_telemetry_retain_recorded_not_stored_succeeds),
        cmocka_unit_test(test_telemetry_qos2_closes_connection_fails),
        cmocka_unit_test(test_telemetry_component_is_dt_subject_succeeds),
        cmocka_unit_test(test_telemetry_component_recorded_succeeds),
    };
    return cmocka_run_group_tests_name("it_telemetry", tests, group_setup, group_teardown);
}
