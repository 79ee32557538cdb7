/*
 * it_event_subs.c - the event stream is built only while someone may receive
 * it (broker/acl.c, events.c; docs/performance.md "Fan-out"): a service
 * principal counts once it subscribes to a filter that can match
 * $twinhub/events/..., or connects with a kept session (CleanSession 0), whose
 * subscriptions the broker restores without asking the hub. These tests prove
 * that skipping the work never loses an event for such a subscriber.
 */
#define _GNU_SOURCE
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

#include "ctl_proto.h"
#include "harness.h"
#include "registry.h" /* TH_DEV_OWNER_KEY */
#include "sas.h"

static struct it_hub hub;

static int teardown(void **state)
{
    (void)state;
    return hub.pid > 0 ? it_hub_stop(&hub) : 0;
}

/* iothubowner with this client id and session kind; CONNACK 0 or the test fails. */
static struct it_client *owner(const char *cid, bool persistent)
{
    char pass[1024];
    assert_int_equal(
        th_sas_sign(hub.hub_name, TH_DEV_OWNER_KEY, it_expiry(), "iothubowner", pass, sizeof pass),
        TH_OK);
    struct it_connect_opts o = {
        .client_id = cid, .username = hub.hub_name, .password = pass, .persistent = persistent};
    int connack;
    struct it_client *c = it_client_connect(&hub, &o, &connack);
    assert_int_equal(connack, 0);
    return c;
}

/* updateTwin of IT_DEV1's desired property "n" to `n` through `ctl`. */
static void write_desired(struct it_client *ctl, int n)
{
    cJSON_Delete(it_control_ok(ctl,
                               "{\"command\":\"updateTwin\",\"deviceId\":\"" IT_DEV1
                               "\",\"patch\":{\"properties\":{\"desired\":{\"n\":%d}}}}",
                               n));
}

static bool desired_n(const cJSON *record, void *arg)
{
    return it_json_num(record, "data.patch.n", -1) == *(int *)arg;
}

/* A subscription made after other service principals connected still gets every event. */
static void test_events_after_late_subscription_succeeds(void **state)
{
    (void)state;
    assert_int_equal(it_hub_start(&hub), 0);
    struct it_client *ctl = it_service_open(&hub, false); /* no events: nobody listens yet */
    write_desired(ctl, 1);
    struct it_client *late = owner("late-listener", false);
    assert_int_equal(it_client_subscribe(late, TH_EVENTS_PREFIX "desired/#", 1, IT_WAIT_MS), 1);
    int n = 2;
    write_desired(ctl, n);
    cJSON *ev = it_event_wait(late, "desired", IT_DEV1, NULL, desired_n, &n, IT_WAIT_MS);
    assert_non_null(ev);
    cJSON_Delete(ev);
    it_client_close(late);
    it_client_close(ctl);
    assert_int_equal(it_hub_stop(&hub), 0);
}

/* A kept session's subscription, restored by the broker without a SUBSCRIBE, gets events. */
static void test_events_to_kept_session_succeeds(void **state)
{
    (void)state;
    assert_int_equal(it_hub_start(&hub), 0);
    struct it_client *ctl = it_service_open(&hub, false);
    struct it_client *l = owner("kept-listener", true);
    assert_int_equal(it_client_subscribe(l, TH_EVENTS_TOPIC, 1, IT_WAIT_MS), 1);
    it_client_close(l);
    write_desired(ctl, 3);            /* nobody connected listens: this one is not built */
    l = owner("kept-listener", true); /* no SUBSCRIBE: the session has it */
    int n = 4;
    write_desired(ctl, n);
    cJSON *ev = it_event_wait(l, "desired", IT_DEV1, NULL, desired_n, &n, IT_WAIT_MS);
    assert_non_null(ev);
    cJSON_Delete(ev);
    it_client_close(l);
    it_client_close(ctl);
    assert_int_equal(it_hub_stop(&hub), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_events_after_late_subscription_succeeds, teardown),
        cmocka_unit_test_teardown(test_events_to_kept_session_succeeds, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
