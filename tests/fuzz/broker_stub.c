/*
 * broker_stub.c - A STAND-IN FOR THE MOSQUITTO BROKER, for fuzzing only.
 *
 * The twinhub plugin (the .c files of emulator/broker) runs inside mosquitto and calls
 * functions only the broker defines (mosquitto_callback_register,
 * mosquitto_broker_publish_copy, mosquitto_kick_client_by_clientid,
 * mosquitto_log_printf, mosquitto_client_* ...). The real broker cannot run
 * inside a libFuzzer process (it owns the process: sockets, its own event
 * loop, global state, exit on errors), so tests/fuzz/fuzz_control.c links the
 * plugin's sources with this file instead. It is not used anywhere else and
 * is not a broker: it keeps the callbacks the plugin registers so the target
 * can call them, records published messages in memory (the target checks
 * and frees them), and emulates the few broker behaviours the plugin relies
 * on, modelled on mosquitto 2.0.11 (src/plugin_public.c, src/loop.c):
 *
 * - mosquitto_broker_publish_copy refuses what the broker refuses (NULL
 *   topic, negative length, NULL payload with a length, QoS outside 0-2)
 *   and stores a copy of the payload with a NUL after it;
 * - mosquitto_kick_client_by_clientid disconnects the client at once: the
 *   broker's do_disconnect runs the plugin's DISCONNECT callback before the
 *   kick returns, so the plugin sees that callback re-entrantly;
 * - a CONNECT whose client id is already connected takes the session over:
 *   after BASIC_AUTH succeeds the old connection gets its DISCONNECT;
 * - payloads handed to MESSAGE / CONTROL callbacks are NUL-terminated (the
 *   target does that), as the broker's are.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker_stub.h"
#include "fuzz_common.h"

#define MAX_EVENT 16

static struct {
    MOSQ_FUNC_generic_callback cb;
    void *userdata;
    char *event_data; /* CONTROL: the topic */
} callbacks[MAX_EVENT];

static struct mosquitto *connected;
static struct stub_publish *pubs, **pubs_tail = &pubs;
unsigned stub_kicks;

void stub_reset(void)
{
    for (int i = 0; i < MAX_EVENT; i++) {
        free(callbacks[i].event_data);
        memset(&callbacks[i], 0, sizeof callbacks[i]);
    }
    for (struct mosquitto *c = connected; c; c = c->next_connected)
        c->connected = false;
    connected = NULL;
    stub_publishes_free(stub_take_publishes());
    stub_kicks = 0;
}

MOSQ_FUNC_generic_callback stub_callback(int event)
{
    return event > 0 && event < MAX_EVENT ? callbacks[event].cb : NULL;
}

int stub_call(int event, void *event_data)
{
    MOSQ_FUNC_generic_callback cb = stub_callback(event);
    if (!cb)
        return MOSQ_ERR_NOT_SUPPORTED;
    return cb(event, event_data, callbacks[event].userdata);
}

int stub_callback_count(void)
{
    int n = 0;
    for (int i = 0; i < MAX_EVENT; i++)
        n += callbacks[i].cb != NULL;
    return n;
}

struct mosquitto *stub_find_client(const char *client_id)
{
    for (struct mosquitto *c = connected; c; c = c->next_connected)
        if (client_id && !strcmp(c->id, client_id))
            return c;
    return NULL;
}

static void unlink_client(struct mosquitto *client)
{
    for (struct mosquitto **pp = &connected; *pp; pp = &(*pp)->next_connected)
        if (*pp == client) {
            *pp = client->next_connected;
            break;
        }
    client->next_connected = NULL;
    client->connected = false;
}

void stub_disconnect(struct mosquitto *client)
{
    if (!client || !client->connected)
        return;
    unlink_client(client); /* the broker marks it disconnected before telling plugins */
    struct mosquitto_evt_disconnect ed = {.client = client, .reason = 0};
    stub_call(MOSQ_EVT_DISCONNECT, &ed);
}

int stub_connect(struct mosquitto *client)
{
    FUZZ_CHECK(!client->connected);
    struct mosquitto_evt_basic_auth ed = {
        .client = client, .username = client->username, .password = client->password};
    int rc = stub_call(MOSQ_EVT_BASIC_AUTH, &ed);
    if (rc != MOSQ_ERR_SUCCESS)
        return rc;
    struct mosquitto *old = stub_find_client(client->id);
    client->connected = true;
    client->next_connected = connected;
    connected = client;
    if (old)
        stub_disconnect(old); /* "Client ... already connected, closing old connection." */
    return rc;
}

struct stub_publish *stub_take_publishes(void)
{
    struct stub_publish *list = pubs;
    pubs = NULL;
    pubs_tail = &pubs;
    return list;
}

void stub_publishes_free(struct stub_publish *list)
{
    while (list) {
        struct stub_publish *next = list->next;
        free(list->client_id);
        free(list->topic);
        free(list->payload);
        free(list);
        list = next;
    }
}

/* ---- the broker functions the plugin calls ---- */

int mosquitto_callback_register(mosquitto_plugin_id_t *identifier, int event,
                                MOSQ_FUNC_generic_callback cb_func, const void *event_data,
                                void *userdata)
{
    FUZZ_CHECK(identifier != NULL && cb_func != NULL);
    if (event <= 0 || event >= MAX_EVENT)
        return MOSQ_ERR_INVAL;
    if (callbacks[event].cb)
        return MOSQ_ERR_ALREADY_EXISTS; /* one plugin: one callback per event */
    if (event == MOSQ_EVT_CONTROL) {
        /* The broker takes the control topic as event_data and requires $CONTROL/. */
        if (!event_data || strncmp(event_data, "$CONTROL/", 9) != 0)
            return MOSQ_ERR_INVAL;
        callbacks[event].event_data = strdup(event_data);
    }
    callbacks[event].cb = cb_func;
    callbacks[event].userdata = userdata;
    return MOSQ_ERR_SUCCESS;
}

int mosquitto_callback_unregister(mosquitto_plugin_id_t *identifier, int event,
                                  MOSQ_FUNC_generic_callback cb_func, const void *event_data)
{
    FUZZ_CHECK(identifier != NULL);
    if (event <= 0 || event >= MAX_EVENT || callbacks[event].cb != cb_func)
        return MOSQ_ERR_NOT_FOUND;
    if (event == MOSQ_EVT_CONTROL && (!event_data || !callbacks[event].event_data ||
                                      strcmp(event_data, callbacks[event].event_data) != 0))
        return MOSQ_ERR_NOT_FOUND;
    free(callbacks[event].event_data);
    memset(&callbacks[event], 0, sizeof callbacks[event]);
    return MOSQ_ERR_SUCCESS;
}

int mosquitto_broker_publish_copy(const char *clientid, const char *topic, int payloadlen,
                                  const void *payload, int qos, bool retain,
                                  mosquitto_property *properties)
{
    if (topic == NULL || payloadlen < 0 || (payloadlen > 0 && payload == NULL) || qos < 0 ||
        qos > 2)
        return MOSQ_ERR_INVAL;
    FUZZ_CHECK(properties == NULL); /* the plugin never sends MQTT 5 properties */
    struct stub_publish *m = calloc(1, sizeof *m);
    FUZZ_CHECK(m != NULL);
    m->client_id = clientid ? strdup(clientid) : NULL;
    m->topic = strdup(topic);
    m->payload = fuzz_cstr(payload, (size_t)payloadlen);
    m->len = (size_t)payloadlen;
    m->qos = qos;
    m->retain = retain;
    FUZZ_CHECK(m->topic && (!clientid || m->client_id));
    *pubs_tail = m;
    pubs_tail = &m->next;
    return MOSQ_ERR_SUCCESS;
}

int mosquitto_kick_client_by_clientid(const char *clientid, bool with_will)
{
    (void)with_will;
    stub_kicks++;
    FUZZ_CHECK(clientid != NULL); /* NULL would kick every client */
    struct mosquitto *c = stub_find_client(clientid);
    if (!c)
        return MOSQ_ERR_NOT_FOUND;
    stub_disconnect(c);
    return MOSQ_ERR_SUCCESS;
}

void mosquitto_log_printf(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void mosquitto_log_printf(int level, const char *fmt, ...)
{
    /* Format every message (a bad format or argument is a finding), print on request. */
    static int verbose = -1;
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (verbose < 0)
        verbose = getenv("FUZZ_VERBOSE") != NULL;
    if (verbose)
        fprintf(stderr, "[broker log %d] %s\n", level, buf);
}

const char *mosquitto_client_id(const struct mosquitto *client)
{
    return client ? client->id : NULL;
}

int mosquitto_client_protocol_version(const struct mosquitto *client)
{
    return client ? client->protocol_version : 0;
}

bool mosquitto_client_clean_session(const struct mosquitto *client)
{
    return client ? client->clean_session : true;
}

const char *mosquitto_strerror(int mosq_errno)
{
    switch (mosq_errno) {
    case MOSQ_ERR_SUCCESS:
        return "No error.";
    case MOSQ_ERR_NOMEM:
        return "Out of memory.";
    case MOSQ_ERR_INVAL:
        return "Invalid function arguments provided.";
    case MOSQ_ERR_NOT_FOUND:
        return "Not found.";
    default:
        return "Unknown error.";
    }
}
