/*
 * broker_stub.h - the fuzz targets' stand-in for the mosquitto broker
 * (tests/fuzz/broker_stub.c): what a target uses to drive the plugin and to
 * see what the plugin did. See broker_stub.c for why it exists.
 */
#ifndef TH_FUZZ_BROKER_STUB_H
#define TH_FUZZ_BROKER_STUB_H

#include <stdbool.h>
#include <stddef.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>

/*
 * A client connection. The broker's struct is opaque to plugins, so the
 * stand-in completes the type with what mosquitto_client_* return.
 */
struct mosquitto {
    char *id;             /* client id (CONNECT) */
    char *username;       /* username (CONNECT), may be NULL */
    char *password;       /* password (CONNECT), may be NULL */
    int protocol_version; /* 3, 4 or 5, as mosquitto_client_protocol_version reports */
    bool clean_session;
    bool connected;                   /* authenticated and not disconnected since */
    struct mosquitto *next_connected; /* the stand-in's list of connected clients */
};

/* One message the plugin published with mosquitto_broker_publish_copy. */
struct stub_publish {
    char *client_id; /* NULL: to every subscriber */
    char *topic;
    char *payload; /* len bytes plus a NUL, as the broker stores them */
    size_t len;
    int qos;
    bool retain;
    struct stub_publish *next;
};

/* Forget callbacks, clients and publishes (start of an input). */
void stub_reset(void);
/* The callback the plugin registered for `event` (MOSQ_EVT_*), or NULL. */
MOSQ_FUNC_generic_callback stub_callback(int event);
/* Call it with the userdata given at registration; MOSQ_ERR_NOT_SUPPORTED when none. */
int stub_call(int event, void *event_data);
/* Number of callbacks registered now (0 after mosquitto_plugin_cleanup). */
int stub_callback_count(void);

/*
 * Emulate CONNECT: BASIC_AUTH with the client's username and password; on
 * success the client counts as connected and, as mosquitto does, an older
 * connected client with the same id is disconnected (session takeover).
 * Returns the callback's result.
 */
int stub_connect(struct mosquitto *client);
/* The client goes away: DISCONNECT callback (no-op when not connected). */
void stub_disconnect(struct mosquitto *client);
/* The connected client with this id, or NULL. */
struct mosquitto *stub_find_client(const char *client_id);

/* Messages published so far, oldest first; stub_take_publishes hands them over. */
struct stub_publish *stub_take_publishes(void);
void stub_publishes_free(struct stub_publish *list);
/* Kicks requested by the plugin since the last reset. */
extern unsigned stub_kicks;

#endif
