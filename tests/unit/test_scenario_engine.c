/*
 * test_scenario_engine.c - unit tests for the expectation engine of
 * emulator/scenario/scn_engine.c, fed with hand-made event records the way
 * `twinhub run` (live) and `twinhub verify` (offline) feed it: marks anchor
 * steps, reported patches rebuild the reported document, time bounds are
 * measured on the records' timestamps.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "scenario.h"
#include "util.h"

#define T0 INT64_C(1798761600000000) /* 2027-01-01T00:00:00Z */

static struct th_scenario *load(const char *text)
{
    struct th_scn_diag d = {0};
    struct th_scenario *s = th_scenario_parse(text, strlen(text), "engine.json", &d);
    if (!s)
        fail_msg("scenario refused: %s", d.text ? d.text : "?");
    th_scn_diag_free(&d);
    return s;
}

static long seq_counter;

/* Feed one record at T0 + ms. `data` is JSON text (NULL for {}); dev/mod may be NULL. */
static void feed(struct th_scn_session *ss, long ms, const char *kind, const char *dev,
                 const char *mod, const char *data)
{
    char when[TH_TIME_BUF];
    th_time_format(T0 + (int64_t)ms * 1000, when);
    cJSON *r = cJSON_CreateObject();
    cJSON_AddNumberToObject(r, "seq", (double)++seq_counter);
    cJSON_AddStringToObject(r, "time", when);
    cJSON_AddStringToObject(r, "kind", kind);
    if (dev)
        cJSON_AddStringToObject(r, "deviceId", dev);
    else
        cJSON_AddNullToObject(r, "deviceId");
    if (mod)
        cJSON_AddStringToObject(r, "moduleId", mod);
    else
        cJSON_AddNullToObject(r, "moduleId");
    cJSON *d = data ? cJSON_Parse(data) : cJSON_CreateObject();
    assert_non_null(d);
    cJSON_AddItemToObject(r, "data", d);
    struct th_error e = {0};
    assert_int_equal(th_scn_session_feed(ss, r, &e), TH_OK);
}

/* The mark `twinhub run` emits before step `index` (1-based). */
static void mark(struct th_scn_session *ss, const struct th_scenario *s, long ms, int index)
{
    char data[512];
    snprintf(data, sizeof data,
             "{\"scenario\":\"%s\",\"step\":\"%s\",\"index\":%d,\"action\":\"%s\"}", s->name,
             s->steps[index - 1].name, index, th_step_kind_name(s->steps[index - 1].kind));
    feed(ss, ms, "mark", NULL, NULL, data);
}

static enum th_verdict V(const struct th_scn_session *ss, size_t i)
{
    return th_scn_session_result(ss, i)->verdict;
}

static const char *MSG(const struct th_scn_session *ss, size_t i)
{
    const char *m = th_scn_session_result(ss, i)->message;
    return m ? m : "";
}

static struct th_scn_session *offline(const struct th_scenario *s)
{
    seq_counter = 0;
    struct th_scn_session *ss = th_scn_session_new(s, true);
    struct th_error e = {0};
    assert_non_null(ss);
    assert_int_equal(th_scn_session_seed_registry(ss, s->registry, &e), TH_OK);
    return ss;
}

/* ---- connection ---- */

static void test_wait_connected_by_event_succeeds(void **state)
{
    (void)state;
    struct th_scenario *s =
        load("{\"name\":\"c\",\"registry\":{\"devices\":[{\"deviceId\":\"d\"}]},"
             "\"steps\":[{\"waitConnected\":{\"deviceId\":\"d\",\"within\":\"PT2S\"}}]}");
    struct th_scn_session *ss = offline(s);
    mark(ss, s, 0, 1);
    assert_int_equal(V(ss, 0), TH_VERDICT_PENDING);
    feed(ss, 1500, "connected", "d", NULL, NULL);
    assert_int_equal(V(ss, 0), TH_VERDICT_PASS);
    assert_int_equal(th_scn_session_result(ss, 0)->end_us - th_scn_session_result(ss, 0)->start_us,
                     1500000);
    th_scn_session_free(ss);
    th_scenario_free(s);
}

static void test_wait_connected_late_or_refused_fails(void **state)
{
    (void)state;
    struct th_scenario *s =
        load("{\"name\":\"c\",\"registry\":{\"devices\":[{\"deviceId\":\"d\"}]},"
             "\"steps\":[{\"waitConnected\":{\"deviceId\":\"d\",\"within\":\"PT2S\"}}]}");
    struct th_scn_session *ss = offline(s);
    mark(ss, s, 0, 1);
    feed(ss, 100, "refused", "d", NULL, "{\"reason\":\"token expired\"}");
    feed(ss, 2500, "connected", "d", NULL, NULL); /* after the bound */
    assert_int_equal(V(ss, 0), TH_VERDICT_FAIL);
    assert_string_equal(MSG(ss, 0), "d did not connect within 2.0 s; 1 connection attempt was "
                                    "refused (last: token expired)");
    th_scn_session_free(ss);
    th_scenario_free(s);
}

static void test_wait_disconnected_since_previous_step_succeeds(void **state)
{
    (void)state;
    struct th_scenario *s = load("{\"name\":\"c\",\"steps\":["
                                 "{\"disconnect\":{\"deviceId\":\"dev-device\"}},"
                                 "{\"waitDisconnected\":{\"deviceId\":\"dev-device\"}}]}");
    struct th_scn_session *ss = offline(s);
    feed(ss, 0, "connected", "dev-device", NULL, NULL);
    mark(ss, s, 10, 1);
    assert_int_equal(V(ss, 0), TH_VERDICT_PASS);
    /* dropped and already back before the next step began */
    feed(ss, 11, "disconnected", "dev-device", NULL, NULL);
    feed(ss, 12, "connected", "dev-device", NULL, NULL);
    mark(ss, s, 13, 2);
    assert_int_equal(V(ss, 1), TH_VERDICT_PASS);
    th_scn_session_free(ss);
    th_scenario_free(s);
}

/* ---- reported properties ---- */

static void test_expect_reported_now_and_rebuilt_from_patches_succeeds(void **state)
{
    (void)state;
    struct th_scenario *s =
        load("{\"name\":\"r\",\"registry\":{\"devices\":[{\"deviceId\":\"d\",\"properties\":"
             "{\"reported\":{\"fw\":\"1.0\",\"cfg\":{\"a\":1,\"b\":2}}}}]},\"steps\":["
             "{\"expectReported\":{\"deviceId\":\"d\",\"match\":{\"fw\":\"1.0\",\"$version\":2}}},"
             "{\"expectReported\":{\"deviceId\":\"d\",\"match\":{\"$exact\":{\"fw\":\"2.0\","
             "\"cfg\":{\"b\":3,\"c\":[1]},\"$version\":4}}}}]}");
    struct th_scn_session *ss = offline(s);
    mark(ss, s, 0, 1);
    assert_int_equal(V(ss, 0), TH_VERDICT_PASS); /* the registry's state, "now" */
    mark(ss, s, 10, 2);
    feed(ss, 20, "reported", "d", NULL,
         "{\"patch\":{\"fw\":\"2.0\",\"cfg\":{\"a\":null,\"b\":3}},\"version\":3}");
    assert_int_equal(V(ss, 1), TH_VERDICT_PENDING);
    /* a refused patch changes nothing */
    feed(ss, 25, "reported", "d", NULL,
         "{\"patch\":{\"fw\":\"9\"},\"error\":\"x\",\"status\":400}");
    feed(ss, 30, "reported", "d", NULL, "{\"patch\":{\"cfg\":{\"c\":[1]}},\"version\":4}");
    assert_int_equal(V(ss, 1), TH_VERDICT_PASS);
    th_scn_session_free(ss);
    th_scenario_free(s);
}

static void test_expect_reported_timeout_shows_difference_fails(void **state)
{
    (void)state;
    struct th_scenario *s =
        load("{\"name\":\"r\",\"registry\":{\"devices\":[{\"deviceId\":\"d\"}]},\"steps\":["
             "{\"expectReported\":{\"deviceId\":\"d\",\"match\":{\"interval\":30},\"within\":"
             "\"PT1S\"}}]}");
    struct th_scn_session *ss = offline(s);
    mark(ss, s, 0, 1);
    feed(ss, 200, "reported", "d", NULL, "{\"patch\":{\"interval\":31},\"version\":2}");
    th_scn_session_finish(ss);
    assert_int_equal(V(ss, 0), TH_VERDICT_FAIL);
    assert_string_equal(MSG(ss, 0), "reported properties of d did not match within 1.0 s: "
                                    "reported.interval: expected 30, got 31 (1 reported patch "
                                    "during the wait)");
    assert_non_null(strstr(th_scn_session_result(ss, 0)->detail, "\"interval\": 31"));
    th_scn_session_free(ss);
    th_scenario_free(s);
}

static void test_expect_no_reported_window_fails(void **state)
{
    (void)state;
    struct th_scenario *s =
        load("{\"name\":\"r\",\"steps\":["
             "{\"expectNoReported\":{\"deviceId\":\"dev-device\",\"match\":{\"x\":{\"$present\":"
             "true}},\"during\":\"PT1S\"}},"
             "{\"expectNoReported\":{\"deviceId\":\"dev-device\",\"during\":\"PT1S\"}}]}");
    struct th_scn_session *ss = offline(s);
    mark(ss, s, 0, 1);
    feed(ss, 100, "reported", "dev-device", NULL, "{\"patch\":{\"y\":1},\"version\":2}");
    feed(ss, 1001, "telemetry", "dev-device", NULL, "{}"); /* after the window: decided */
    assert_int_equal(V(ss, 0), TH_VERDICT_PASS);
    mark(ss, s, 1100, 2);
    feed(ss, 1500, "reported", "dev-device", NULL, "{\"patch\":{\"y\":2},\"version\":3}");
    assert_int_equal(V(ss, 1), TH_VERDICT_FAIL);
    assert_string_equal(MSG(ss, 1), "expected no reported patch from dev-device, but one came "
                                    "after 400 ms: {\"y\":2}");
    th_scn_session_free(ss);
    th_scenario_free(s);
}

/* Right after a patchDesired step, a matching patch that reached the hub before the
 * expectNoReported step's mark still fails it (a fast agent answers before the mark arrives);
 * after a sleep or an expectation, one from before the mark does not count. */
static void test_expect_no_reported_after_action_looks_back_fails(void **state)
{
    (void)state;
    struct th_scenario *s = load(
        "{\"name\":\"r\",\"steps\":["
        "{\"patchDesired\":{\"deviceId\":\"dev-device\",\"patch\":{\"x\":42}}},"
        "{\"expectNoReported\":{\"deviceId\":\"dev-device\",\"match\":{\"x\":42},"
        "\"during\":\"PT1S\"}}]}");
    struct th_scn_session *ss = offline(s);
    mark(ss, s, 0, 1);
    feed(ss, 50, "reported", "dev-device", NULL, "{\"patch\":{\"x\":42},\"version\":2}");
    mark(ss, s, 80, 2);
    assert_int_equal(V(ss, 1), TH_VERDICT_FAIL);
    assert_string_equal(MSG(ss, 1), "expected no reported patch matching {\"x\":42} from "
                                    "dev-device, but one came 30 ms before this step began: "
                                    "{\"x\":42}");
    th_scn_session_free(ss);
    th_scenario_free(s);

    /* After a sleep, a patch during it is not the next step's business. */
    s = load("{\"name\":\"r\",\"steps\":["
             "{\"sleep\":{\"for\":\"PT0.1S\"}},"
             "{\"expectNoReported\":{\"deviceId\":\"dev-device\",\"match\":{\"x\":42},"
             "\"during\":\"PT1S\"}}]}");
    ss = offline(s);
    mark(ss, s, 2000, 1);
    feed(ss, 2050, "reported", "dev-device", NULL, "{\"patch\":{\"x\":42},\"version\":3}");
    mark(ss, s, 2200, 2);
    feed(ss, 3300, "telemetry", "dev-device", NULL, "{}"); /* after the window: decided */
    assert_int_equal(V(ss, 1), TH_VERDICT_PASS);
    th_scn_session_free(ss);
    th_scenario_free(s);
}

/* ---- telemetry ---- */

static void test_expect_telemetry_counts_matching_succeeds(void **state)
{
    (void)state;
    struct th_scenario *s = load(
        "{\"name\":\"t\",\"steps\":[{\"name\":\"start\",\"sleep\":{\"for\":\"PT0.1S\"}},"
        "{\"expectTelemetry\":{\"deviceId\":\"dev-device\",\"match\":{\"body\":{\"t\":{\"$range\":{"
        "\"min\":20}}},"
        "\"properties\":{\"k\":\"v\"}},\"count\":{\"min\":2},\"within\":\"PT5S\"}},"
        "{\"expectTelemetry\":{\"deviceId\":\"dev-device\",\"since\":\"start\",\"count\":3}}]}");
    struct th_scn_session *ss = offline(s);
    mark(ss, s, 0, 1);
    feed(ss, 50, "telemetry", "dev-device", NULL,
         "{\"body\":\"{\\\"t\\\":25}\",\"properties\":{\"k\":\"v\"}}");
    feed(ss, 150, "telemetry", "dev-device", NULL,
         "{\"body\":\"not json\",\"properties\":{\"k\":\"v\"}}");
    assert_int_equal(V(ss, 0), TH_VERDICT_PASS); /* sleep decided by a later record */
    mark(ss, s, 160, 2);
    feed(ss, 200, "telemetry", "dev-device", "other",
         "{\"body\":\"{\\\"t\\\":25}\",\"properties\":{\"k\":\"v\"}}");
    feed(ss, 300, "telemetry", "dev-device", NULL,
         "{\"body\":\"{\\\"t\\\":21}\",\"properties\":{\"k\":\"v\"}}");
    assert_int_equal(V(ss, 1), TH_VERDICT_PENDING);
    feed(ss, 400, "telemetry", "dev-device", NULL,
         "{\"body\":\"{\\\"t\\\":22}\",\"properties\":{\"k\":\"v\"}}");
    assert_int_equal(V(ss, 1), TH_VERDICT_PASS);
    /* since "start": 4 device messages so far, exactly 3 expected */
    mark(ss, s, 500, 3);
    assert_int_equal(V(ss, 2), TH_VERDICT_FAIL);
    assert_string_equal(MSG(ss, 2), "expected exactly 3 matching telemetry messages from "
                                    "dev-device, got 4");
    th_scn_session_free(ss);
    th_scenario_free(s);
}

static void test_expect_telemetry_none_shows_last_mismatch_fails(void **state)
{
    (void)state;
    struct th_scenario *s =
        load("{\"name\":\"t\",\"steps\":[{\"expectTelemetry\":{\"deviceId\":\"dev-device\","
             "\"match\":{\"body\":{\"type\":\"reading\"}},\"within\":\"PT1S\"}}]}");
    struct th_scn_session *ss = offline(s);
    mark(ss, s, 0, 1);
    feed(ss, 10, "telemetry", "dev-device", NULL, "{\"body\":\"{\\\"type\\\":\\\"status\\\"}\"}");
    th_scn_session_finish(ss);
    assert_int_equal(V(ss, 0), TH_VERDICT_FAIL);
    assert_string_equal(MSG(ss, 0),
                        "expected at least 1 telemetry message from dev-device matching "
                        "{\"body\":{\"type\":\"reading\"}} within 1.0 s, got 0; 1 other "
                        "message did not match, the last: telemetry.body.type: "
                        "expected \"reading\", got \"status\"");
    th_scn_session_free(ss);
    th_scenario_free(s);
}

static void test_expect_no_telemetry_match_fails(void **state)
{
    (void)state;
    struct th_scenario *s =
        load("{\"name\":\"t\",\"steps\":[{\"expectNoTelemetry\":{\"deviceId\":\"dev-device\","
             "\"match\":{\"properties\":{\"alarm\":\"1\"}},\"during\":\"PT2S\"}}]}");
    struct th_scn_session *ss = offline(s);
    mark(ss, s, 0, 1);
    feed(ss, 10, "telemetry", "dev-device", NULL,
         "{\"body\":\"x\",\"properties\":{\"alarm\":\"0\"}}");
    assert_int_equal(V(ss, 0), TH_VERDICT_PENDING);
    feed(ss, 20, "telemetry", "dev-device", NULL,
         "{\"body\":\"x\",\"properties\":{\"alarm\":\"1\"}}");
    assert_int_equal(V(ss, 0), TH_VERDICT_FAIL);
    assert_non_null(strstr(MSG(ss, 0), "but a message came after 20 ms"));
    th_scn_session_free(ss);
    th_scenario_free(s);
}

/* ---- twin GET, C2D, methods ---- */

static void test_expect_twin_get_since_previous_step_succeeds(void **state)
{
    (void)state;
    struct th_scenario *s =
        load("{\"name\":\"g\",\"steps\":["
             "{\"disconnect\":{\"deviceId\":\"dev-device\"}},"
             "{\"expectTwinGet\":{\"deviceId\":\"dev-device\"}},"
             "{\"expectTwinGet\":{\"deviceId\":\"dev-device\",\"within\":\"PT1S\"}}]}");
    struct th_scn_session *ss = offline(s);
    feed(ss, 0, "twinGet", "dev-device", NULL, "{\"status\":200}"); /* before: does not count */
    mark(ss, s, 10, 1);
    feed(ss, 20, "twinGet", "dev-device", NULL, "{\"status\":200}");
    mark(ss, s, 30, 2);
    assert_int_equal(V(ss, 1), TH_VERDICT_PASS);
    mark(ss, s, 40, 3);
    th_scn_session_finish(ss);
    assert_int_equal(V(ss, 2), TH_VERDICT_FAIL);
    assert_string_equal(MSG(ss, 2), "dev-device did not fetch its twin within 1.0 s");
    th_scn_session_free(ss);
    th_scenario_free(s);
}

static void test_expect_registration_matching_record_succeeds(void **state)
{
    (void)state;
    struct th_scenario *s =
        load("{\"name\":\"r\",\"steps\":["
             "{\"createEnrollment\":{\"registrationId\":\"reg-1\"}},"
             "{\"expectRegistration\":{\"registrationId\":\"REG-1\",\"match\":{\"status\":202},"
             "\"within\":\"PT1S\"}}]}");
    struct th_scn_session *ss = offline(s);
    mark(ss, s, 0, 1);
    feed(ss, 5, "registration", NULL, NULL,
         "{\"registrationId\":\"reg-1\",\"transport\":\"mqtt\",\"status\":401}");
    feed(ss, 8, "registration", "reg-1", NULL,
         "{\"registrationId\":\"reg-1\",\"transport\":\"mqtt\",\"status\":202,"
         "\"deviceId\":\"reg-1\"}");
    mark(ss, s, 10, 2); /* since the previous step began: the 202 counts */
    assert_int_equal(V(ss, 1), TH_VERDICT_PASS);
    th_scn_session_free(ss);
    th_scenario_free(s);
}

static void test_expect_registration_refused_shows_mismatch_fails(void **state)
{
    (void)state;
    struct th_scenario *s =
        load("{\"name\":\"r\",\"steps\":[{\"expectRegistration\":{\"registrationId\":"
             "\"reg-2\",\"match\":{\"status\":202},\"within\":\"PT1S\"}}]}");
    struct th_scn_session *ss = offline(s);
    mark(ss, s, 0, 1);
    feed(ss, 5, "registration", "other", NULL, "{\"registrationId\":\"other\",\"status\":202}");
    feed(ss, 6, "registration", NULL, NULL, "{\"registrationId\":\"reg-2\",\"status\":401}");
    assert_int_equal(V(ss, 0), TH_VERDICT_PENDING);
    th_scn_session_finish(ss);
    assert_int_equal(V(ss, 0), TH_VERDICT_FAIL);
    assert_string_equal(MSG(ss, 0), "no registration of reg-2 matching the step within 1.0 s; the "
                                    "last one did not match: registration.status: expected 202, "
                                    "got 401");
    th_scn_session_free(ss);
    th_scenario_free(s);
}

static void test_expect_c2d_delivered_during_send_succeeds(void **state)
{
    (void)state;
    struct th_scenario *s =
        load("{\"name\":\"c2d\",\"steps\":["
             "{\"sendC2D\":{\"deviceId\":\"dev-device\",\"messageId\":\"m1\",\"body\":\"x\"}},"
             "{\"expectC2DDelivered\":{\"deviceId\":\"dev-device\",\"messageId\":\"m1\"}},"
             "{\"expectC2DDelivered\":{\"deviceId\":\"dev-device\",\"messageId\":\"m2\",\"within\":"
             "\"PT1S\"}}]}");
    struct th_scn_session *ss = offline(s);
    mark(ss, s, 0, 1);
    feed(ss, 1, "c2d", "dev-device", NULL,
         "{\"messageId\":\"m1\",\"delivered\":true,\"queued\":0}");
    feed(ss, 1, "c2d", "dev-device", NULL,
         "{\"messageId\":\"m2\",\"delivered\":false,\"queued\":1}");
    mark(ss, s, 5, 2);
    assert_int_equal(V(ss, 1), TH_VERDICT_PASS);
    mark(ss, s, 6, 3);
    th_scn_session_finish(ss);
    assert_int_equal(V(ss, 2), TH_VERDICT_FAIL);
    assert_non_null(strstr(MSG(ss, 2), "message m2 was not delivered to dev-device within 1.0 s "
                                       "(it was queued"));
    th_scn_session_free(ss);
    th_scenario_free(s);
}

static void test_invoke_method_offline_from_method_record_succeeds(void **state)
{
    (void)state;
    struct th_scenario *s = load(
        "{\"name\":\"m\",\"steps\":["
        "{\"invokeMethod\":{\"deviceId\":\"dev-device\",\"methodName\":\"reboot\","
        "\"expect\":{\"status\":200,\"payload\":{\"id\":{\"$capture\":\"rid\"}}}}},"
        "{\"invokeMethod\":{\"deviceId\":\"dev-device\",\"methodName\":\"x\",\"expect\":{"
        "\"errorCode\":404103}}},"
        "{\"expectReported\":{\"deviceId\":\"dev-device\",\"match\":{\"last\":\"${rid}\"}}}]}");
    struct th_scn_session *ss = offline(s);
    mark(ss, s, 0, 1);
    feed(ss, 5, "method", "dev-device", NULL,
         "{\"methodName\":\"reboot\",\"requestId\":\"1\",\"status\":200,\"payload\":{\"id\":\"r-"
         "7\"}}");
    assert_int_equal(V(ss, 0), TH_VERDICT_PASS);
    mark(ss, s, 10, 2);
    feed(
        ss, 11, "method", "dev-device", NULL,
        "{\"methodName\":\"x\",\"requestId\":\"2\",\"error\":\"not online\",\"errorCode\":404103}");
    assert_int_equal(V(ss, 1), TH_VERDICT_PASS);
    mark(ss, s, 20, 3);
    feed(ss, 21, "reported", "dev-device", NULL, "{\"patch\":{\"last\":\"r-7\"},\"version\":2}");
    assert_int_equal(V(ss, 2), TH_VERDICT_PASS); /* the capture of step 1 */
    th_scn_session_free(ss);
    th_scenario_free(s);
}

/* IoT Hub copies a body that is not JSON into its answer verbatim: no SDK caller can read it. */
static void test_invoke_method_answer_not_json_fails(void **state)
{
    (void)state;
    struct th_scenario *s = load("{\"name\":\"m\",\"steps\":["
                                 "{\"invokeMethod\":{\"deviceId\":\"dev-device\",\"methodName\":"
                                 "\"reboot\"}}]}");
    struct th_scn_session *ss = offline(s);
    mark(ss, s, 0, 1);
    feed(ss, 5, "method", "dev-device", NULL,
         "{\"methodName\":\"reboot\",\"requestId\":\"1\",\"status\":200,\"rawPayload\":\"ok!\","
         "\"rawPayloadBase64\":\"b2sh\",\"payloadError\":\"JSON body is not valid JSON\"}");
    assert_int_equal(V(ss, 0), TH_VERDICT_FAIL);
    assert_non_null(strstr(MSG(ss, 0), "method reboot on dev-device: the device answered status "
                                       "200 with a body that is not JSON (JSON body is not valid "
                                       "JSON)"));
    th_scn_session_free(ss);
    th_scenario_free(s);
}

/* ---- live use: the runner's calls ---- */

static void test_live_outcomes_and_settle_succeeds(void **state)
{
    (void)state;
    struct th_scenario *s =
        load("{\"name\":\"live\",\"steps\":["
             "{\"invokeMethod\":{\"deviceId\":\"dev-device\",\"methodName\":\"m\",\"expect\":{"
             "\"status\":200}}},"
             "{\"invokeMethod\":{\"deviceId\":\"dev-device\",\"methodName\":\"m\",\"expect\":{"
             "\"error\":{\"$regex\":\"timed out\"}}}},"
             "{\"query\":{\"query\":\"SELECT * FROM "
             "devices\",\"expect\":{\"count\":{\"$capture\":\"n\"}}}},"
             "{\"waitConnected\":{\"deviceId\":\"dev-device\",\"within\":\"PT1S\"}},"
             "{\"patchDesired\":{\"deviceId\":\"d${n}\",\"patch\":{}}}]}");
    seq_counter = 0;
    struct th_scn_session *ss = th_scn_session_new(s, false);
    struct th_error e = {0};
    assert_int_equal(th_scn_session_seed_registry(ss, NULL, &e), TH_OK);
    cJSON *o;
    th_scn_session_begin_step(ss, 0);
    mark(ss, s, 0, 1);
    assert_true(th_scn_session_anchored(ss));
    o = cJSON_Parse("{\"status\":500,\"payload\":null}");
    th_scn_session_check_outcome(ss, o, T0 + 5000);
    cJSON_Delete(o);
    assert_int_equal(V(ss, 0), TH_VERDICT_FAIL);
    assert_string_equal(MSG(ss, 0), "answer.status: expected 200, got 500");
    th_scn_session_begin_step(ss, 1);
    mark(ss, s, 10, 2);
    o = cJSON_Parse("{\"error\":\"the device timed out\",\"status\":504,\"errorCode\":504101}");
    th_scn_session_check_outcome(ss, o, T0 + 20000);
    cJSON_Delete(o);
    assert_int_equal(V(ss, 1), TH_VERDICT_PASS);
    th_scn_session_begin_step(ss, 2);
    mark(ss, s, 30, 3);
    o = cJSON_Parse("{\"items\":[],\"count\":2}");
    th_scn_session_check_outcome(ss, o, T0 + 31000);
    cJSON_Delete(o);
    assert_int_equal(V(ss, 2), TH_VERDICT_PASS);
    th_scn_session_begin_step(ss, 3);
    mark(ss, s, 40, 4);
    assert_int_equal(th_scn_session_deadline(ss), T0 + 40000 + 1000000);
    th_scn_session_settle(ss, T0 + 500000);
    assert_int_equal(V(ss, 3), TH_VERDICT_PENDING);
    th_scn_session_settle(ss, T0 + 40000 + 1000000);
    assert_int_equal(V(ss, 3), TH_VERDICT_FAIL);
    th_scn_session_begin_step(ss, 4);
    assert_string_equal(cJSON_GetObjectItem(th_scn_session_resolved(ss), "deviceId")->valuestring,
                        "d2");
    th_scn_session_free(ss);
    th_scenario_free(s);
}

static void test_live_seed_twin_keeps_newer_records_succeeds(void **state)
{
    (void)state;
    struct th_scenario *s = load("{\"name\":\"seed\",\"steps\":["
                                 "{\"expectReported\":{\"deviceId\":\"x\",\"match\":{\"a\":2}}}]}");
    seq_counter = 0;
    struct th_scn_session *ss = th_scn_session_new(s, false);
    feed(ss, 0, "reported", "x", NULL, "{\"patch\":{\"a\":2},\"version\":5}");
    cJSON *twin = cJSON_Parse("{\"connectionState\":\"Connected\",\"properties\":{\"reported\":"
                              "{\"a\":1,\"$version\":4,\"$metadata\":{}}}}");
    assert_int_equal(th_scn_session_seed_twin(ss, "x", NULL, twin), TH_OK);
    cJSON_Delete(twin);
    th_scn_session_begin_step(ss, 0);
    mark(ss, s, 10, 1);
    assert_int_equal(V(ss, 0), TH_VERDICT_PASS);
    th_scn_session_free(ss);
    th_scenario_free(s);
}

/* ---- offline bookkeeping ---- */

static void test_offline_restart_and_missing_mark_fails(void **state)
{
    (void)state;
    struct th_scenario *s =
        load("{\"name\":\"o\",\"steps\":["
             "{\"restartHub\":{}},"
             "{\"waitConnected\":{\"deviceId\":\"dev-device\",\"within\":\"PT0S\"}},"
             "{\"sleep\":{\"for\":\"PT1S\"}}]}");
    struct th_scn_session *ss = offline(s);
    feed(ss, 0, "connected", "dev-device", NULL, NULL);
    mark(ss, s, 10, 1);
    assert_int_equal(V(ss, 0), TH_VERDICT_PASS);
    /* the new hub counts from 1 again: everybody was dropped */
    seq_counter = 0;
    mark(ss, s, 300, 2);
    th_scn_session_finish(ss);
    assert_int_equal(V(ss, 1), TH_VERDICT_FAIL);
    assert_int_equal(V(ss, 2), TH_VERDICT_SKIP);
    th_scn_session_free(ss);
    th_scenario_free(s);

    s = load("{\"name\":\"o\",\"steps\":[{\"sleep\":{\"for\":\"PT1S\"}},{\"restartHub\":{}}]}");
    ss = offline(s);
    mark(ss, s, 0, 1);
    th_scn_session_finish(ss);
    assert_int_equal(V(ss, 0), TH_VERDICT_PASS);
    assert_int_equal(V(ss, 1), TH_VERDICT_FAIL);
    assert_string_equal(MSG(ss, 1), "the recording has no mark for this step: the run ended "
                                    "before it");
    th_scn_session_free(ss);
    th_scenario_free(s);
}

static void test_offline_other_scenario_version_fails(void **state)
{
    (void)state;
    struct th_scenario *s = load("{\"name\":\"v\",\"steps\":[{\"sleep\":{\"for\":\"PT1S\"}}]}");
    struct th_scn_session *ss = offline(s);
    feed(ss, 0, "mark", NULL, NULL,
         "{\"scenario\":\"v\",\"step\":\"x\",\"index\":1,\"action\":\"restartHub\"}");
    assert_int_equal(V(ss, 0), TH_VERDICT_FAIL);
    assert_non_null(strstr(MSG(ss, 0), "the recording's step 1 is a restartHub step"));
    th_scn_session_free(ss);
    th_scenario_free(s);
}

static void test_feed_bad_record_fails(void **state)
{
    (void)state;
    struct th_scenario *s = load("{\"name\":\"v\",\"steps\":[{\"sleep\":{\"for\":\"PT1S\"}}]}");
    struct th_scn_session *ss = offline(s);
    struct th_error e = {0};
    assert_int_equal(th_scn_session_feed(ss, cJSON_Parse("{\"seq\":1,\"kind\":\"x\"}"), &e),
                     TH_ERR_FORMAT);
    assert_int_equal(th_scn_session_feed(ss, cJSON_Parse("[1]"), &e), TH_ERR_FORMAT);
    th_scn_session_free(ss);
    th_scenario_free(s);
}

/* Found by fuzzing: numbers of a recording (seq, version, index) were converted to integers
 * unchecked, undefined behaviour past int64's range; they are clamped to +-2^53 now. */
static void test_feed_huge_numbers_clamped_succeeds(void **state)
{
    (void)state;
    struct th_scenario *s =
        load("{\"name\":\"h\",\"registry\":{\"devices\":[{\"deviceId\":\"d\"}]},"
             "\"steps\":[{\"expectReported\":{\"deviceId\":\"d\",\"match\":{\"x\":1}}},"
             "{\"sleep\":{\"for\":\"PT1S\"}}]}");
    struct th_scn_session *ss = offline(s);
    struct th_error e = {0};
    const char *records[] = {
        "{\"seq\":-1e300,\"time\":\"2027-01-01T00:00:00Z\",\"kind\":\"connected\","
        "\"deviceId\":\"d\",\"moduleId\":null,\"data\":{}}",
        "{\"seq\":1,\"time\":\"2027-01-01T00:00:01Z\",\"kind\":\"mark\",\"deviceId\":null,"
        "\"moduleId\":null,\"data\":{\"scenario\":\"h\",\"index\":1,\"action\":\"expectReported\"}}",
        /* a version past 2^63 counts as 2^53: newer than 1, so it applies */
        "{\"seq\":1e300,\"time\":\"2027-01-01T00:00:02Z\",\"kind\":\"reported\","
        "\"deviceId\":\"d\",\"moduleId\":null,\"data\":{\"patch\":{\"x\":1},\"version\":1e300}}",
        /* a mark index past 2^63 is a later step's: it ends nothing already decided */
        "{\"seq\":1e301,\"time\":\"2027-01-01T00:00:03Z\",\"kind\":\"mark\",\"deviceId\":null,"
        "\"moduleId\":null,\"data\":{\"scenario\":\"h\",\"index\":-1e300}}",
    };
    for (size_t i = 0; i < sizeof records / sizeof records[0]; i++) {
        cJSON *r = cJSON_Parse(records[i]);
        assert_non_null(r);
        assert_int_equal(th_scn_session_feed(ss, r, &e), TH_OK);
    }
    assert_int_equal(V(ss, 0), TH_VERDICT_PASS);
    th_scn_session_free(ss);
    th_scenario_free(s);
}

/* ---- allocation failures ---- */

static long allocs_left = -1; /* < 0: no limit */

static void *limited_malloc(size_t n)
{
    if (allocs_left == 0)
        return NULL;
    if (allocs_left > 0)
        allocs_left--;
    return malloc(n);
}

static cJSON *reported_record(long ms, const char *patch, int version)
{
    char when[TH_TIME_BUF], text[512];
    th_time_format(T0 + (int64_t)ms * 1000, when);
    snprintf(text, sizeof text,
             "{\"seq\":%ld,\"time\":\"%s\",\"kind\":\"reported\",\"deviceId\":\"d\","
             "\"moduleId\":null,\"data\":{\"patch\":%s,\"version\":%d}}",
             ++seq_counter, when, patch, version);
    cJSON *r = cJSON_Parse(text);
    assert_non_null(r);
    return r;
}

/*
 * A reported patch that cannot be applied for lack of memory fails the feed (it used to be
 * merged in part and its version taken, so that the identity's reported properties missed
 * members for the rest of the run): fed again, it applies whole and the step passes.
 */
static void test_feed_reported_out_of_memory_fails(void **state)
{
    (void)state;
    struct th_scenario *s =
        load("{\"name\":\"m\",\"registry\":{\"devices\":[{\"deviceId\":\"d\"}]},"
             "\"steps\":[{\"expectReported\":{\"deviceId\":\"d\",\"within\":\"PT5S\","
             "\"match\":{\"a\":{\"b\":1,\"c\":[2,3]},\"z\":0}}}]}");
    static const char patch[] = "{\"a\":{\"b\":1,\"c\":[2,3],\"d\":{\"e\":\"f\"}}}";
    cJSON_Hooks hooks = {limited_malloc, free};
    bool saw_nomem = false, saw_ok = false;
    for (long n = 0; n < 400 && !saw_ok; n++) {
        struct th_scn_session *ss = offline(s);
        struct th_error e = {0};
        feed(ss, 0, "connected", "d", NULL, NULL);
        mark(ss, s, 10, 1);
        cJSON *rec = reported_record(20, patch, 2);
        allocs_left = n;
        cJSON_InitHooks(&hooks);
        th_result r = th_scn_session_feed(ss, rec, &e);
        cJSON_InitHooks(NULL);
        bool limited = allocs_left == 0;
        allocs_left = -1;
        if (r == TH_OK) {
            saw_ok = !limited; /* the feed needed fewer allocations: every point was tried */
        } else {
            assert_int_equal(r, TH_ERR_NOMEM);
            saw_nomem = true;
            assert_int_equal(th_scn_session_feed(ss, reported_record(30, patch, 2), &e), TH_OK);
        }
        /* A later patch makes the step look at the whole document again. */
        assert_int_equal(th_scn_session_feed(ss, reported_record(40, "{\"z\":0}", 3), &e), TH_OK);
        assert_int_equal(V(ss, 0), TH_VERDICT_PASS);
        th_scn_session_free(ss);
    }
    assert_true(saw_nomem);
    assert_true(saw_ok);
    th_scenario_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wait_connected_by_event_succeeds),
        cmocka_unit_test(test_wait_connected_late_or_refused_fails),
        cmocka_unit_test(test_wait_disconnected_since_previous_step_succeeds),
        cmocka_unit_test(test_expect_reported_now_and_rebuilt_from_patches_succeeds),
        cmocka_unit_test(test_expect_reported_timeout_shows_difference_fails),
        cmocka_unit_test(test_expect_no_reported_window_fails),
        cmocka_unit_test(test_expect_no_reported_after_action_looks_back_fails),
        cmocka_unit_test(test_expect_telemetry_counts_matching_succeeds),
        cmocka_unit_test(test_expect_telemetry_none_shows_last_mismatch_fails),
        cmocka_unit_test(test_expect_no_telemetry_match_fails),
        cmocka_unit_test(test_expect_twin_get_since_previous_step_succeeds),
        cmocka_unit_test(test_expect_registration_matching_record_succeeds),
        cmocka_unit_test(test_expect_registration_refused_shows_mismatch_fails),
        cmocka_unit_test(test_expect_c2d_delivered_during_send_succeeds),
        cmocka_unit_test(test_invoke_method_offline_from_method_record_succeeds),
        cmocka_unit_test(test_invoke_method_answer_not_json_fails),
        cmocka_unit_test(test_live_outcomes_and_settle_succeeds),
        cmocka_unit_test(test_live_seed_twin_keeps_newer_records_succeeds),
        cmocka_unit_test(test_offline_restart_and_missing_mark_fails),
        cmocka_unit_test(test_offline_other_scenario_version_fails),
        cmocka_unit_test(test_feed_bad_record_fails),
        cmocka_unit_test(test_feed_huge_numbers_clamped_succeeds),
        cmocka_unit_test(test_feed_reported_out_of_memory_fails),
    };
    return cmocka_run_group_tests_name("scenario_engine", tests, NULL, NULL);
}
