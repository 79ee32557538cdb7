/*
 * ctl_client.c - the control-API client on libmosquitto (ctl_client.h).
 *
 * Answers are kept by correlationData in one JSON object until someone takes
 * them, so that several commands can be in flight (`twinhub run` sends a
 * step's mark and its action in one request) and an answer that arrives
 * while another is awaited is not lost.
 */
#define _GNU_SOURCE
#include "ctl_client.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mosquitto.h>

#include "connstr.h"
#include "sas.h"
#include "util.h"

#define KEEPALIVE_S 60
#define LOOP_SLICE_MS 100
/* Exports of large registries come back in one answer; the hub caps what it accepts. */
#define MAX_ANSWER_BYTES (64u * 1024 * 1024)
/* The key under which a request error waits: no correlationData of ours is empty. */
#define REQUEST_ERROR_KEY ""

struct th_ctl_client {
    struct th_ctl_opts o;
    struct mosquitto *mosq;
    bool lib_init;
    /* what the callbacks saw */
    bool connack;
    int connack_rc;
    bool lost;
    int lost_rc; /* the loop's error that ended the connection, 0 for a DISCONNECT */
    int sub_mid;
    bool subacked;
    bool sub_ok;
    cJSON *entries; /* correlationData -> response entry, until taken */
    unsigned seq;
};

th_result th_ctl_target_from_hubinfo(const struct th_hubinfo *info, struct th_ctl_target *t,
                                     struct th_error *err)
{
    memset(t, 0, sizeof *t);
    if (snprintf(t->hub_name, sizeof t->hub_name, "%s", info->hub_name) >=
            (int)sizeof t->hub_name ||
        th_hubinfo_host(info, t->host, sizeof t->host) != TH_OK ||
        snprintf(t->ca_file, sizeof t->ca_file, "%s", info->ca_file) >= (int)sizeof t->ca_file)
        return th_error_set(err, TH_ERR_TOO_LARGE, 0, "the hub name, bind or caFile is too long");
    t->port = info->mqtt_port > 0 ? info->mqtt_port : info->mqtts_port;
    t->tls = info->mqtt_port <= 0;
    if (!info->service_cs[0])
        return TH_OK;
    struct th_connstr cs;
    th_result r = th_connstr_parse(info->service_cs, &cs, err);
    if (r != TH_OK)
        return r;
    /* The token's sr is the hub name serve runs with, whatever HostName says. */
    if (snprintf(t->policy, sizeof t->policy, "%s", cs.key_name) >= (int)sizeof t->policy ||
        snprintf(t->key, sizeof t->key, "%s", cs.key) >= (int)sizeof t->key)
        return th_error_set(err, TH_ERR_TOO_LARGE, 0,
                            "the service policy's name or key is too long");
    return TH_OK;
}

/* ---- callbacks (on the caller's thread: libmosquitto runs no thread of its own here) ---- */

static void on_connect(struct mosquitto *mosq, void *obj, int rc)
{
    struct th_ctl_client *c = obj;
    (void)mosq;
    c->connack = true;
    c->connack_rc = rc;
}

static void on_disconnect(struct mosquitto *mosq, void *obj, int rc)
{
    struct th_ctl_client *c = obj;
    (void)mosq;
    (void)rc;
    c->lost = true;
}

static void on_subscribe(struct mosquitto *mosq, void *obj, int mid, int qos_count,
                         const int *granted)
{
    struct th_ctl_client *c = obj;
    (void)mosq;
    if (mid != c->sub_mid)
        return;
    bool ok = qos_count == (int)c->o.ntopics + 1;
    for (int i = 0; i < qos_count; i++)
        ok = ok && granted[i] <= 2;
    c->subacked = true;
    c->sub_ok = ok;
}

/* Keep every entry of an answer under its correlationData (request errors under ""). */
static void keep_entries(struct th_ctl_client *c, const struct mosquitto_message *msg)
{
    if (c->o.trace_recv)
        fprintf(stderr, "%s%.*s\n", c->o.trace_recv, msg->payloadlen, (const char *)msg->payload);
    cJSON *responses = NULL;
    struct th_error err = {0};
    if (th_ctl_responses_parse(msg->payload, (size_t)msg->payloadlen, MAX_ANSWER_BYTES, &responses,
                               &err) != TH_OK)
        return;
    while (cJSON_GetArraySize(responses) > 0) {
        cJSON *entry = cJSON_DetachItemFromArray(responses, 0);
        const char *corr = th_ctl_entry_corr(entry);
        const char *key = corr                                   ? corr
                          : th_ctl_entry_is_request_error(entry) ? REQUEST_ERROR_KEY
                                                                 : NULL;
        if (!key) {
            cJSON_Delete(entry); /* not an answer to anything we sent */
            continue;
        }
        cJSON_DeleteItemFromObjectCaseSensitive(c->entries, key);
        /* `key` points into `entry`: the object copies it before owning the entry. */
        if (!cJSON_AddItemToObject(c->entries, key, entry))
            cJSON_Delete(entry);
    }
    cJSON_Delete(responses);
}

static void on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *msg)
{
    struct th_ctl_client *c = obj;
    (void)mosq;
    if (!strcmp(msg->topic, TH_CONTROL_RESPONSE_TOPIC))
        keep_entries(c, msg);
    else if (c->o.on_message)
        c->o.on_message(c->o.arg, msg->topic, msg->payload, msg->payloadlen);
}

/* ---- waiting ---- */

static void mark_lost(struct th_ctl_client *c, int rc)
{
    if (!c->lost)
        c->lost_rc = rc;
    c->lost = true;
}

static int lost_reason(const struct th_ctl_client *c)
{
    return c->lost_rc ? c->lost_rc : MOSQ_ERR_CONN_LOST;
}

/*
 * Run the connection for up to `left` ms: the caller's pump, or mosquitto_loop.
 * Returns the loop's error, MOSQ_ERR_SUCCESS otherwise.
 */
static int run_once(struct th_ctl_client *c, int64_t left)
{
    if (c->o.pump) {
        c->o.pump(c->o.arg, (int)left);
        return c->lost ? lost_reason(c) : MOSQ_ERR_SUCCESS;
    }
    int rc = mosquitto_loop(c->mosq, (int)(left < LOOP_SLICE_MS ? left : LOOP_SLICE_MS), 1);
    if (rc != MOSQ_ERR_SUCCESS)
        mark_lost(c, rc);
    return rc;
}

/*
 * Run the connection until done(c, arg), the deadline, stop(), or the end of
 * the connection. MOSQ_ERR_SUCCESS when done or out of time (done() tells
 * which), else why the connection ended.
 */
static int wait_until(struct th_ctl_client *c, bool (*done)(struct th_ctl_client *c, void *arg),
                      void *arg, int64_t deadline)
{
    for (;;) {
        if (done(c, arg))
            return MOSQ_ERR_SUCCESS;
        if (c->lost)
            return lost_reason(c);
        int64_t left = deadline - th_mono_ms();
        if (left <= 0 || (c->o.stop && c->o.stop(c->o.arg)))
            return MOSQ_ERR_SUCCESS;
        int rc = run_once(c, left);
        if (rc != MOSQ_ERR_SUCCESS)
            return done(c, arg) ? MOSQ_ERR_SUCCESS : rc;
    }
}

static bool flag_set(struct th_ctl_client *c, void *flag)
{
    (void)c;
    return *(const bool *)flag;
}

static int wait_flag(struct th_ctl_client *c, bool *flag, int64_t deadline)
{
    return wait_until(c, flag_set, flag, deadline);
}

/* An answer being waited for: arrived once `entry` is set. */
struct awaited {
    const char *corr;
    cJSON *entry;
};

static bool entry_arrived(struct th_ctl_client *c, void *arg)
{
    struct awaited *w = arg;
    if (!w->entry)
        w->entry = th_ctl_client_take(c, w->corr);
    return w->entry != NULL;
}

/* ---- the connection ---- */

struct th_ctl_client *th_ctl_client_new(const struct th_ctl_opts *opts)
{
    struct th_ctl_client *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->o = *opts;
    mosquitto_lib_init();
    c->lib_init = true;
    c->entries = cJSON_CreateObject();
    c->mosq = mosquitto_new(opts->client_id, true, c);
    if (!c->entries || !c->mosq) {
        th_ctl_client_free(c);
        return NULL;
    }
    mosquitto_connect_callback_set(c->mosq, on_connect);
    mosquitto_disconnect_callback_set(c->mosq, on_disconnect);
    mosquitto_subscribe_callback_set(c->mosq, on_subscribe);
    mosquitto_message_callback_set(c->mosq, on_message);
    /* Without it each QoS 1 round trip waits for Nagle (architecture.md, "broker/"). */
    mosquitto_int_option(c->mosq, MOSQ_OPT_TCP_NODELAY, 1);
    return c;
}

bool th_ctl_client_connect(struct th_ctl_client *c, const struct th_ctl_target *t, int timeout_ms,
                           struct th_ctl_failure *why)
{
    memset(why, 0, sizeof *why);
    char token[1024];
    if (th_sas_sign(t->hub_name, t->key, time(NULL) + c->o.token_lifetime_s, t->policy, token,
                    sizeof token) != TH_OK) {
        why->what = TH_CTL_FAIL_KEY;
        return false;
    }
    mosquitto_username_pw_set(c->mosq, t->hub_name, token);
    if (t->tls) {
        int r = mosquitto_tls_set(c->mosq, t->ca_file, NULL, NULL, NULL, NULL);
        if (r != MOSQ_ERR_SUCCESS) {
            why->what = TH_CTL_FAIL_CA;
            why->rc = r;
            return false;
        }
    }
    int64_t deadline = th_mono_ms() + timeout_ms;
    int rc = mosquitto_connect(c->mosq, t->host, t->port, KEEPALIVE_S);
    if (rc != MOSQ_ERR_SUCCESS) {
        why->what = TH_CTL_FAIL_CONNECT;
        why->rc = rc;
        why->err = errno;
        return false;
    }
    rc = wait_flag(c, &c->connack, deadline);
    if (!c->connack || c->connack_rc != 0) {
        why->what = c->connack ? TH_CTL_FAIL_REFUSED : TH_CTL_FAIL_NO_CONNACK;
        why->rc = c->connack ? c->connack_rc : rc;
        return false;
    }
    size_t n = c->o.ntopics + 1;
    char **topics = calloc(n, sizeof *topics);
    if (!topics) {
        why->what = TH_CTL_FAIL_SUBSCRIBE;
        why->rc = MOSQ_ERR_NOMEM;
        return false;
    }
    topics[0] = TH_CONTROL_RESPONSE_TOPIC;
    for (size_t i = 1; i < n; i++)
        topics[i] = (char *)c->o.topics[i - 1];
    rc = mosquitto_subscribe_multiple(c->mosq, &c->sub_mid, (int)n, topics, 1, 0, NULL);
    free(topics);
    if (rc == MOSQ_ERR_SUCCESS)
        rc = wait_flag(c, &c->subacked, deadline);
    if (!c->subacked || !c->sub_ok) {
        why->what = TH_CTL_FAIL_SUBSCRIBE;
        why->rc = rc;
        why->subacked = c->subacked;
        return false;
    }
    return true;
}

void th_ctl_client_free(struct th_ctl_client *c)
{
    if (!c)
        return;
    if (c->mosq) {
        if (c->connack && !c->lost) {
            mosquitto_disconnect(c->mosq);
            /* Let the DISCONNECT leave before the socket closes. */
            for (int i = 0; i < 5 && !c->lost; i++)
                if (mosquitto_loop(c->mosq, 10, 1) != MOSQ_ERR_SUCCESS)
                    break;
        }
        mosquitto_destroy(c->mosq);
    }
    cJSON_Delete(c->entries);
    if (c->lib_init)
        mosquitto_lib_cleanup();
    free(c);
}

bool th_ctl_client_lost(const struct th_ctl_client *c)
{
    return c->lost;
}

/* ---- commands ---- */

int th_ctl_client_send(struct th_ctl_client *c, cJSON *const *cmds, size_t n,
                       char (*corrs)[TH_CTL_CORR_MAX])
{
    if (c->lost || !c->connack)
        return MOSQ_ERR_NO_CONN;
    const char **names = calloc(n ? n : 1, sizeof *names);
    if (!names)
        return MOSQ_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        snprintf(corrs[i], TH_CTL_CORR_MAX, "%s-%u", c->o.corr_prefix, ++c->seq);
        names[i] = corrs[i];
    }
    char *text = th_ctl_request_print(cmds, n, names);
    free(names);
    if (!text)
        return MOSQ_ERR_NOMEM;
    if (c->o.trace_send)
        fprintf(stderr, "%s%s\n", c->o.trace_send, text);
    int rc = mosquitto_publish(c->mosq, NULL, TH_CONTROL_TOPIC, (int)strlen(text), text, 1, false);
    free(text);
    if (rc == MOSQ_ERR_SUCCESS)
        mosquitto_loop_write(c->mosq, 1); /* now, not at the next wait */
    return rc;
}

cJSON *th_ctl_client_take(struct th_ctl_client *c, const char *corr)
{
    cJSON *e = cJSON_DetachItemFromObjectCaseSensitive(c->entries, corr);
    return e ? e : cJSON_DetachItemFromObjectCaseSensitive(c->entries, REQUEST_ERROR_KEY);
}

int th_ctl_client_wait(struct th_ctl_client *c, const char *corr, int timeout_ms, cJSON **entry)
{
    struct awaited w = {corr, NULL};
    int rc = wait_until(c, entry_arrived, &w, th_mono_ms() + timeout_ms);
    *entry = w.entry;
    return rc;
}

int th_ctl_client_call(struct th_ctl_client *c, cJSON *cmd, int timeout_ms, cJSON **entry)
{
    char corr[1][TH_CTL_CORR_MAX];
    *entry = NULL;
    int rc = th_ctl_client_send(c, &cmd, 1, corr);
    return rc != MOSQ_ERR_SUCCESS ? rc : th_ctl_client_wait(c, corr[0], timeout_ms, entry);
}

/* ---- a caller's poll() loop ---- */

int th_ctl_client_socket(const struct th_ctl_client *c)
{
    return c && c->mosq && !c->lost ? mosquitto_socket(c->mosq) : -1;
}

short th_ctl_client_events(const struct th_ctl_client *c)
{
    return (short)(POLLIN | (mosquitto_want_write(c->mosq) ? POLLOUT : 0));
}

void th_ctl_client_io(struct th_ctl_client *c, short revents)
{
    int e = MOSQ_ERR_SUCCESS;
    if (revents & (POLLIN | POLLHUP | POLLERR))
        e = mosquitto_loop_read(c->mosq, 1);
    if (e == MOSQ_ERR_SUCCESS && (revents & POLLOUT))
        e = mosquitto_loop_write(c->mosq, 1);
    if (e == MOSQ_ERR_SUCCESS)
        e = mosquitto_loop_misc(c->mosq);
    if (e != MOSQ_ERR_SUCCESS && e != MOSQ_ERR_NO_CONN)
        mark_lost(c, e);
}

void th_ctl_client_flush(struct th_ctl_client *c)
{
    if (c && c->mosq && !c->lost && mosquitto_want_write(c->mosq))
        mosquitto_loop_write(c->mosq, 1);
}
