/*
 * harness.h - the integration-test harness: starts a real `twinhub serve`
 * (mosquitto 2.0.11 with the built plugin) on free loopback ports, makes SAS
 * tokens, and wraps libmosquitto clients (devices, modules, service
 * principals) with a received-message queue that tests wait on with bounded
 * timeouts. Nothing here sleeps: every wait is a condition wait on an event.
 *
 * Environment: TWINHUB_BIN (the twinhub executable) and IT_REGISTRY (the
 * registry file of the test identities), both set by meson.
 */
#ifndef IT_HARNESS_H
#define IT_HARNESS_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <cjson/cJSON.h>

#include "ctl_proto.h" /* TH_CONTROL_TOPIC, TH_CONTROL_RESPONSE_TOPIC, TH_EVENTS_TOPIC */

/* Not PATH_MAX: emulator/core/limits.h shadows <limits.h> on the include path. */
#define IT_PATH_MAX 4096

/* Identities of tests/integration/registry.json. */
#define IT_DEV1 "it-dev1"
#define IT_DEV1_KEY "dHdpbmh1Yi1pbnRlZ3JhdGlvbi1kZXYxLWtleS0wMDE="
#define IT_DEV1_KEY2 "dHdpbmh1Yi1pbnRlZ3JhdGlvbi1kZXYxLWtleS0wMDI="
#define IT_MOD1 "it-mod1" /* module of it-dev1 */
#define IT_MOD1_KEY "dHdpbmh1Yi1pbnRlZ3JhdGlvbi1tb2QxLWtleS0wMDE="
#define IT_DEV2 "it-dev2"
#define IT_DEV2_KEY "dHdpbmh1Yi1pbnRlZ3JhdGlvbi1kZXYyLWtleS0wMDE="
#define IT_DEV3 "it-dev3"
#define IT_DEV3_KEY "dHdpbmh1Yi1pbnRlZ3JhdGlvbi1kZXYzLWtleS0wMDE="
#define IT_DEV4 "it-dev4"
#define IT_DEV4_KEY "dHdpbmh1Yi1pbnRlZ3JhdGlvbi1kZXY0LWtleS0wMDE="
#define IT_DISABLED "it-disabled"
#define IT_DISABLED_KEY "dHdpbmh1Yi1pbnRlZ3JhdGlvbi1kaXMxLWtleS0wMDE="

#define IT_API_VERSION "2021-04-12"

/* Default bound for a message or event that must arrive. */
#define IT_WAIT_MS 5000

/* ---- the hub ---- */

struct it_hub {
    pid_t pid; /* `twinhub serve`, leader of its own process group */
    int mqtt_port;
    int mqtts_port;
    char hub_name[256];
    char ca_file[IT_PATH_MAX];
    char dir[IT_PATH_MAX]; /* private temp dir: certs, info file, serve's stderr */
    char stderr_path[IT_PATH_MAX + 16];
    /* stdout reader thread: copies serve's stdout to dir/stdout.log and notices "ready". */
    pthread_t reader;
    bool reader_started;
    int stdout_fd;
    int stop_pipe[2];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool ready;
    bool eof;
};

/*
 * Start `twinhub serve` on two free loopback ports with its own cert dir and
 * the test registry; wait (bounded) for its "twinhub: ready" line and read the
 * info file. Retries once with new ports when serve reports a port in use.
 * Returns 0 on success; on failure prints serve's output and returns -1.
 */
int it_hub_start(struct it_hub *hub);

/*
 * SIGTERM serve and wait (bounded) for it to exit. Returns 0 when it exited
 * with status 0 and left no process of its group behind; otherwise kills
 * the group, prints why and returns -1. Removes the temp dir on success.
 */
int it_hub_stop(struct it_hub *hub);

/* At most this many extra serve arguments. */
#define IT_MAX_EXTRA_ARGS 16

/*
 * it_hub_start with another registry file (NULL: IT_REGISTRY) and extra serve
 * arguments (NULL-terminated list, NULL for none), e.g. {"--state-dir", dir, NULL}.
 */
int it_hub_start_with(struct it_hub *hub, const char *registry, const char *const *extra_args);

/* Pid of the mosquitto broker serve runs (a child of serve), or -1. */
pid_t it_hub_broker_pid(const struct it_hub *hub);

/*
 * Crash the hub: SIGKILL its mosquitto broker, wait (bounded) until it is
 * gone and serve has exited (SIGTERM if serve keeps running), reap. *serve_status
 * gets serve's wait status (-1 unknown). Returns 0 when both are gone; the hub's
 * temp dir is removed then (not any state dir or recording outside it).
 */
int it_hub_kill_broker(struct it_hub *hub, int *serve_status);

/* Remove a directory tree (nftw); 0 on success. */
int it_rmtree(const char *path);
/* A whole file as a malloc'd NUL-terminated string, or NULL. */
char *it_read_file(const char *path);

/* A free TCP port on 127.0.0.1 (bound to port 0, read, closed); -1 on error. */
int it_free_port(void);

/* ---- tokens ---- */

/* Expiry one hour from now (seconds since the epoch). */
long long it_expiry(void);

/*
 * SAS token for "{host}/devices/{d}[/modules/{m}]" signed with key (module_id
 * may be NULL). Returns a malloc'd string; the caller frees it. Aborts the
 * test on failure.
 */
char *it_device_token(const char *host, const char *device_id, const char *module_id,
                      const char *key, long long expiry);
/* "{host}/{d}[/{m}]/?api-version=2021-04-12", malloc'd. */
char *it_device_username(const char *host, const char *device_id, const char *module_id);

/* ---- clients ---- */

struct it_msg {
    char *topic;
    char *payload; /* NUL-terminated copy (payload may contain NULs; use len) */
    int len;
    int qos;
    bool retain;
    struct it_msg *next;
};
void it_msg_free(struct it_msg *m);

struct it_client {
    struct mosquitto *mosq;
    char client_id[256];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct it_msg *head, *tail;
    int connack; /* -1 until CONNACK */
    bool connected;
    bool disconnected; /* the connection ended (after or instead of CONNACK) */
    int disconnect_rc; /* libmosquitto rc given to on_disconnect */
    pthread_t thread;  /* runs mosquitto_loop_forever */
    bool loop_started;
    /* SUBACK bookkeeping: last SUBACK seen */
    int suback_mid;
    int suback_granted;
    /* PUBACK bookkeeping (QoS 0 publishes count too): the last completed mid */
    int last_puback_mid;
};

struct it_connect_opts {
    const char *client_id;
    const char *username; /* NULL: none */
    const char *password; /* NULL: none */
    int protocol;         /* 0: MQTT_PROTOCOL_V311 */
    bool tls;             /* connect to the TLS port with ca_file */
    const char *ca_file;  /* default hub->ca_file */
    const char *host;     /* default "127.0.0.1" */
    int port;             /* 0: the hub's mqtt (or mqtts with tls) port */
    bool persistent;      /* CleanSession 0 (default: clean session) */
    const char *cert_file; /* with tls: a client certificate (PEM) and its key; NULL: none */
    const char *key_file;
};

/*
 * Connect and wait (bounded) for the CONNACK or the end of the connection.
 * Never returns NULL (aborts the test when the client cannot be created).
 * *connack gets the CONNACK return code, or -1 when the connection ended or
 * timed out without one. The client never reconnects on its own.
 */
struct it_client *it_client_connect(const struct it_hub *hub, const struct it_connect_opts *opts,
                                    int *connack);
/* Disconnect (if connected), stop the network thread and free; NULL is fine. */
void it_client_close(struct it_client *c);

/* Device / module with a valid token; the test fails unless CONNACK is 0. */
struct it_client *it_device_open(const struct it_hub *hub, const char *device_id,
                                 const char *module_id, const char *key);
/*
 * Service principal (iothubowner) subscribed to the control response topic
 * and, when events is true, to $twinhub/events/#. Fails the test otherwise.
 */
struct it_client *it_service_open(const struct it_hub *hub, bool events);

/*
 * Service principal authenticated with shared access policy `policy` and `key`.
 * *connack gets the CONNACK code; when 0 the client is subscribed to the control
 * response topic. Never NULL; close it with it_client_close.
 */
struct it_client *it_service_open_policy(const struct it_hub *hub, const char *policy,
                                         const char *key, int *connack);

/* Subscribe and wait for the SUBACK: the granted QoS (0x80 refused), -1 on timeout. */
int it_client_subscribe(struct it_client *c, const char *topic, int qos, int timeout_ms);
/* Publish; returns the libmosquitto rc. */
int it_client_publish(struct it_client *c, const char *topic, const void *payload, int len, int qos,
                      bool retain);
/*
 * Publish a string at QoS 1 and wait for its PUBACK: true once the broker has handled it
 * (ordering point for later publishes of other clients), false on timeout or disconnect.
 */
bool it_client_publish_acked(struct it_client *c, const char *topic, const char *payload,
                             int timeout_ms);
/* Publish a NUL-terminated string. */
int it_client_publish_str(struct it_client *c, const char *topic, const char *payload, int qos);

typedef bool (*it_msg_pred)(const struct it_msg *m, void *arg);

/*
 * Remove and return the first queued message matching pred, waiting up to timeout_ms; NULL on
 * timeout, or at once when the connection has ended and nothing queued matches.
 */
struct it_msg *it_client_wait_match(struct it_client *c, it_msg_pred pred, void *arg,
                                    int timeout_ms);
/* Same with "topic starts with prefix". */
struct it_msg *it_client_wait_prefix(struct it_client *c, const char *prefix, int timeout_ms);
/* Same with "topic equals". */
struct it_msg *it_client_wait_topic(struct it_client *c, const char *topic, int timeout_ms);
/* Number of queued messages whose topic starts with prefix (no waiting, nothing removed). */
int it_client_count_prefix(struct it_client *c, const char *prefix);
/* Wait until the connection has ended; true if it did within timeout_ms. */
bool it_client_wait_disconnect(struct it_client *c, int timeout_ms);
bool it_client_is_connected(struct it_client *c);

/* ---- device protocol helpers ---- */

/*
 * Publish a twin request (GET when patch is NULL, reported PATCH otherwise)
 * with $rid=rid and wait for the `$iothub/twin/res/` answer carrying that
 * rid. The client must be subscribed to $iothub/twin/res/#. Returns the
 * answer (caller frees) or NULL on timeout; *status gets the topic status.
 */
struct it_msg *it_twin_request(struct it_client *c, const char *rid, const char *patch,
                               int *status);
/* it_twin_request with `more` appended to the topic after the rid (e.g. "&$version=3"). */
struct it_msg *it_twin_request_query(struct it_client *c, const char *rid, const char *more,
                                     const char *patch, int *status);
/* Value of a query parameter ("$rid", "$version") in a topic's "?..." part, malloc'd or NULL. */
char *it_topic_param(const char *topic, const char *name);

/* ---- control API ---- */

/*
 * Send one control command (a JSON object text built from fmt) with a fresh
 * correlationData, and wait for its response entry. Returns the entry
 * (caller cJSON_Deletes it) or NULL on timeout.
 */
cJSON *it_control(struct it_client *svc, int timeout_ms, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Send only; writes the correlationData used into corr (>= 32 bytes). */
void it_control_send(struct it_client *svc, char *corr, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Wait for the response entry with correlationData corr. */
cJSON *it_control_wait(struct it_client *svc, const char *corr, int timeout_ms);

/*
 * it_control that must succeed: fails the test (printing the entry) when the
 * entry carries an error; returns its `data` (caller cJSON_Deletes).
 */
cJSON *it_control_ok(struct it_client *svc, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/*
 * it_control that must fail with status and errorCode (and carry an `error`
 * sentence and no `data`); returns the entry (caller cJSON_Deletes).
 */
cJSON *it_control_err(struct it_client *svc, int status, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Parse a JSON file; NULL (with a diagnostic) when unreadable or not JSON. */
cJSON *it_read_json(const char *path);

/*
 * Wait for an event record on $twinhub/events/{kind}/{device}[/{module}]
 * (module NULL: device-level topic) for which pred(record) holds (pred NULL:
 * any). Returns the parsed record (caller cJSON_Deletes) or NULL.
 */
typedef bool (*it_event_pred)(const cJSON *record, void *arg);
cJSON *it_event_wait(struct it_client *svc, const char *kind, const char *device_id,
                     const char *module_id, it_event_pred pred, void *arg, int timeout_ms);

/* ---- JSON and strings ---- */

/* Typed getters by dotted path ("data.systemProperties.messageId"); NULL when absent. */
const cJSON *it_json_get(const cJSON *obj, const char *path);
const char *it_json_str(const cJSON *obj, const char *path);
/* Number at path, or fallback when absent / not a number. */
double it_json_num(const cJSON *obj, const char *path, double fallback);
/* Parse a message payload as JSON (NULL when not JSON). */
cJSON *it_msg_json(const struct it_msg *m);

/* Percent-decode a URL component; malloc'd. */
char *it_url_decode(const char *s, size_t len);
/*
 * Look up key in an encoded property bag "k=v&k2=v2" (keys compared after
 * decoding). Returns the decoded value malloc'd ("" for a key without a
 * value), or NULL when the key is absent.
 */
char *it_bag_get(const char *bag, const char *key);

/* printf into a malloc'd string; aborts on OOM. */
char *it_strdupf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
