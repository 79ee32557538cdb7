/*
 * it_ctl_client.c - the control-API client library (emulator/ctl/ctl_client.h)
 * against the real broker + plugin: finding the hub from its info file,
 * signing in, one call and a batch (answers kept by correlationData), the
 * hub's refusals as response entries, events delivered to the caller, and
 * each way a connection can fail, ending with the hub going away mid-call.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <mosquitto.h>

#include "ctl_client.h"
#include "harness.h"
#include "hubinfo_file.h"

static struct it_hub hub;

static int group_setup(void **state)
{
    (void)state;
    return it_hub_start(&hub);
}

static int group_teardown(void **state)
{
    (void)state;
    /* The last test kills the broker; stop what is left. */
    if (hub.pid > 0)
        return it_hub_stop(&hub);
    return 0;
}

/* Where the hub's info file says it is, as whom its development policy signs in. */
static struct th_ctl_target target(void)
{
    char path[IT_PATH_MAX + 16], err[IT_PATH_MAX + 200];
    snprintf(path, sizeof path, "%s/info.json", hub.dir);
    struct th_hubinfo info;
    if (th_hubinfo_load(path, &info, err, sizeof err) != TH_OK)
        fail_msg("%s", err);
    struct th_ctl_target t;
    struct th_error e = {0};
    assert_int_equal(th_ctl_target_from_hubinfo(&info, &t, &e), TH_OK);
    return t;
}

struct seen {
    int events;
    char last_topic[256];
};

static void on_event(void *arg, const char *topic, const void *payload, int len)
{
    struct seen *s = arg;
    (void)payload;
    (void)len;
    s->events++;
    snprintf(s->last_topic, sizeof s->last_topic, "%s", topic);
}

static struct th_ctl_client *open_client(const struct th_ctl_target *t, struct seen *seen,
                                         const char *const *topics, size_t ntopics,
                                         struct th_ctl_failure *why)
{
    static int seq;
    static char ids[16][64];
    char *id = ids[seq++ % 16];
    snprintf(id, 64, "it-ctl-%d-%d", (int)getpid(), seq);
    struct th_ctl_opts o = {
        .client_id = id,
        .corr_prefix = id,
        .token_lifetime_s = 3600,
        .topics = topics,
        .ntopics = ntopics,
        .on_message = on_event,
        .arg = seen,
    };
    struct th_ctl_client *c = th_ctl_client_new(&o);
    assert_non_null(c);
    if (!th_ctl_client_connect(c, t, IT_WAIT_MS, why)) {
        th_ctl_client_free(c);
        return NULL;
    }
    return c;
}

static void test_th_ctl_target_from_hubinfo_serve_file_succeeds(void **state)
{
    (void)state;
    struct th_ctl_target t = target();
    assert_string_equal(t.hub_name, hub.hub_name);
    assert_string_equal(t.host, "127.0.0.1");
    assert_int_equal(t.port, hub.mqtt_port);
    assert_false(t.tls);
    assert_string_equal(t.policy, "iothubowner");
    assert_true(t.key[0] != '\0');
}

static void test_th_ctl_client_call_succeeds(void **state)
{
    (void)state;
    struct th_ctl_target t = target();
    struct th_ctl_failure why;
    struct th_ctl_client *c = open_client(&t, NULL, NULL, 0, &why);
    assert_non_null(c);
    cJSON *cmd = cJSON_Parse("{\"command\":\"getDevice\",\"deviceId\":\"" IT_DEV1 "\"}");
    cJSON *entry = NULL;
    assert_int_equal(th_ctl_client_call(c, cmd, IT_WAIT_MS, &entry), MOSQ_ERR_SUCCESS);
    assert_non_null(entry);
    assert_null(th_ctl_entry_error(entry, NULL, NULL));
    assert_string_equal(it_json_str(entry, "data.deviceId"), IT_DEV1);
    /* The command stays ours, carrying the correlationData it was sent with. */
    assert_string_equal(th_ctl_entry_corr(entry), th_ctl_entry_corr(cmd));
    cJSON_Delete(entry);
    cJSON_Delete(cmd);
    th_ctl_client_free(c);
}

static void test_th_ctl_client_call_refused_command_succeeds(void **state)
{
    (void)state;
    struct th_ctl_target t = target();
    struct th_ctl_failure why;
    struct th_ctl_client *c = open_client(&t, NULL, NULL, 0, &why);
    assert_non_null(c);
    cJSON *cmd = cJSON_Parse("{\"command\":\"getDevice\",\"deviceId\":\"no-such-device\"}");
    cJSON *entry = NULL;
    assert_int_equal(th_ctl_client_call(c, cmd, IT_WAIT_MS, &entry), MOSQ_ERR_SUCCESS);
    int status = 0, code = 0;
    const char *error = th_ctl_entry_error(entry, &status, &code);
    assert_non_null(error);
    assert_int_equal(status, 404);
    assert_int_equal(code, 404001);
    cJSON_Delete(entry);
    cJSON_Delete(cmd);
    th_ctl_client_free(c);
}

static void test_th_ctl_client_send_batch_answers_kept_succeeds(void **state)
{
    (void)state;
    struct th_ctl_target t = target();
    struct th_ctl_failure why;
    struct th_ctl_client *c = open_client(&t, NULL, NULL, 0, &why);
    assert_non_null(c);
    cJSON *cmds[2] = {cJSON_Parse("{\"command\":\"getTwin\",\"deviceId\":\"" IT_DEV1 "\"}"),
                      cJSON_Parse("{\"command\":\"getTwin\",\"deviceId\":\"" IT_DEV2 "\"}")};
    char corrs[2][TH_CTL_CORR_MAX];
    assert_int_equal(th_ctl_client_send(c, cmds, 2, corrs), MOSQ_ERR_SUCCESS);
    assert_string_not_equal(corrs[0], corrs[1]);
    /* Waiting for the second keeps the first, which came in the same answer. */
    cJSON *second = NULL, *first = NULL;
    assert_int_equal(th_ctl_client_wait(c, corrs[1], IT_WAIT_MS, &second), MOSQ_ERR_SUCCESS);
    assert_non_null(second);
    assert_string_equal(it_json_str(second, "data.deviceId"), IT_DEV2);
    first = th_ctl_client_take(c, corrs[0]);
    assert_non_null(first);
    assert_string_equal(it_json_str(first, "data.deviceId"), IT_DEV1);
    /* Taken once. */
    assert_null(th_ctl_client_take(c, corrs[0]));
    cJSON_Delete(first);
    cJSON_Delete(second);
    cJSON_Delete(cmds[0]);
    cJSON_Delete(cmds[1]);
    th_ctl_client_free(c);
}

static void test_th_ctl_client_wait_unknown_corr_times_out_fails(void **state)
{
    (void)state;
    struct th_ctl_target t = target();
    struct th_ctl_failure why;
    struct th_ctl_client *c = open_client(&t, NULL, NULL, 0, &why);
    assert_non_null(c);
    cJSON *entry = (cJSON *)1;
    assert_int_equal(th_ctl_client_wait(c, "never-sent", 50, &entry), MOSQ_ERR_SUCCESS);
    assert_null(entry);
    assert_false(th_ctl_client_lost(c));
    th_ctl_client_free(c);
}

static void test_th_ctl_client_events_reach_on_message_succeeds(void **state)
{
    (void)state;
    struct th_ctl_target t = target();
    struct th_ctl_failure why;
    struct seen seen = {0};
    static const char *const events[] = {TH_EVENTS_TOPIC};
    struct th_ctl_client *c = open_client(&t, &seen, events, 1, &why);
    assert_non_null(c);
    cJSON *mark = cJSON_Parse("{\"command\":\"mark\",\"data\":{\"step\":\"it\"}}");
    cJSON *entry = NULL;
    assert_int_equal(th_ctl_client_call(c, mark, IT_WAIT_MS, &entry), MOSQ_ERR_SUCCESS);
    cJSON_Delete(entry);
    /* A barrier: the mark's event went out before the answer to a later command. */
    cJSON *stats = cJSON_Parse("{\"command\":\"getStatistics\"}");
    assert_int_equal(th_ctl_client_call(c, stats, IT_WAIT_MS, &entry), MOSQ_ERR_SUCCESS);
    assert_non_null(entry);
    assert_true(seen.events >= 1);
    assert_true(strncmp(seen.last_topic, TH_EVENTS_PREFIX "mark", strlen(TH_EVENTS_PREFIX) + 4) ==
                0);
    cJSON_Delete(entry);
    cJSON_Delete(stats);
    cJSON_Delete(mark);
    th_ctl_client_free(c);
}

static void test_th_ctl_client_connect_wrong_key_fails(void **state)
{
    (void)state;
    struct th_ctl_target t = target();
    snprintf(t.key, sizeof t.key, "%s", IT_DEV1_KEY); /* valid base64, not the policy's */
    struct th_ctl_failure why;
    assert_null(open_client(&t, NULL, NULL, 0, &why));
    assert_int_equal(why.what, TH_CTL_FAIL_REFUSED);
    assert_true(why.rc == 4 || why.rc == 5);
}

static void test_th_ctl_client_connect_key_not_base64_fails(void **state)
{
    (void)state;
    struct th_ctl_target t = target();
    snprintf(t.key, sizeof t.key, "not base64!");
    struct th_ctl_failure why;
    assert_null(open_client(&t, NULL, NULL, 0, &why));
    assert_int_equal(why.what, TH_CTL_FAIL_KEY);
}

static void test_th_ctl_client_connect_nothing_listening_fails(void **state)
{
    (void)state;
    struct th_ctl_target t = target();
    t.port = it_free_port();
    struct th_ctl_failure why;
    assert_null(open_client(&t, NULL, NULL, 0, &why));
    assert_int_equal(why.what, TH_CTL_FAIL_CONNECT);
    assert_int_equal(why.rc, MOSQ_ERR_ERRNO);
    assert_int_equal(why.err, ECONNREFUSED);
}

static void test_th_ctl_client_connect_topic_refused_fails(void **state)
{
    (void)state;
    struct th_ctl_target t = target();
    static const char *const topics[] = {"devices/#"};
    struct th_ctl_failure why;
    assert_null(open_client(&t, NULL, topics, 1, &why));
    assert_int_equal(why.what, TH_CTL_FAIL_SUBSCRIBE);
    assert_true(why.subacked);
}

/* Last: the broker goes away under a connected client. */
static void test_th_ctl_client_call_hub_gone_fails(void **state)
{
    (void)state;
    struct th_ctl_target t = target();
    struct th_ctl_failure why;
    struct th_ctl_client *c = open_client(&t, NULL, NULL, 0, &why);
    assert_non_null(c);
    int status;
    assert_int_equal(it_hub_kill_broker(&hub, &status), 0);
    cJSON *cmd = cJSON_Parse("{\"command\":\"getStatistics\"}");
    cJSON *entry = NULL;
    int rc = th_ctl_client_call(c, cmd, IT_WAIT_MS, &entry);
    assert_null(entry);
    assert_int_not_equal(rc, MOSQ_ERR_SUCCESS);
    assert_true(th_ctl_client_lost(c));
    /* Nothing more goes out on a lost connection. */
    char corr[1][TH_CTL_CORR_MAX];
    assert_int_equal(th_ctl_client_send(c, &cmd, 1, corr), MOSQ_ERR_NO_CONN);
    cJSON_Delete(cmd);
    th_ctl_client_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_th_ctl_target_from_hubinfo_serve_file_succeeds),
        cmocka_unit_test(test_th_ctl_client_call_succeeds),
        cmocka_unit_test(test_th_ctl_client_call_refused_command_succeeds),
        cmocka_unit_test(test_th_ctl_client_send_batch_answers_kept_succeeds),
        cmocka_unit_test(test_th_ctl_client_wait_unknown_corr_times_out_fails),
        cmocka_unit_test(test_th_ctl_client_events_reach_on_message_succeeds),
        cmocka_unit_test(test_th_ctl_client_connect_wrong_key_fails),
        cmocka_unit_test(test_th_ctl_client_connect_key_not_base64_fails),
        cmocka_unit_test(test_th_ctl_client_connect_nothing_listening_fails),
        cmocka_unit_test(test_th_ctl_client_connect_topic_refused_fails),
        cmocka_unit_test(test_th_ctl_client_call_hub_gone_fails),
    };
    return cmocka_run_group_tests_name("ctl_client", tests, group_setup, group_teardown);
}
