/*
 * plugin.h - private header of the twinhub mosquitto plugin: the plugin state
 * (one struct passed to every callback as userdata), per-connection and
 * per-identity glue, and the functions each file provides, a section per
 * file. The control API's own interface is control.h.
 *
 * The broker thread owns everything here; no other thread touches it.
 */
#ifndef BRK_PLUGIN_H
#define BRK_PLUGIN_H

#include <stdbool.h>
#include <stdint.h>
#include <cjson/cJSON.h>
#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
#include <uthash.h>

#include "ctl_proto.h" /* TH_CONTROL_TOPIC, TH_CONTROL_RESPONSE_TOPIC, TH_EVENTS_PREFIX */
#include "journal.h"
#include "registry.h"
#include "th_result.h"
#include "x509.h"

enum brk_conn_kind {
    BRK_CONN_DEVICE,  /* a device or module identity */
    BRK_CONN_SERVICE, /* a shared access policy (service principal) */
    BRK_CONN_DPS,     /* a device registering with the provisioning service (dps.c) */
};

struct brk_dps_conn;

/*
 * One authenticated MQTT connection, keyed by the broker's client pointer.
 * Members ordered by size: 120 B, one per connected device (the scale
 * benchmark counts them, docs/performance.md).
 */
struct brk_conn {
    const struct mosquitto *client; /* hash key; never dereferenced after DISCONNECT */
    char *client_id;                /* malloc'd copy */
    struct th_identity *identity;   /* devices: borrowed; NULL once superseded or deleted */
    char *policy;                   /* service principals: malloc'd policy name; else NULL */
    struct brk_dps_conn *dps;       /* BRK_CONN_DPS: what it registers (dps.c); else NULL */
    int64_t token_expiry_s;
    UT_hash_handle hh;
    enum brk_conn_kind kind;
    unsigned perms;   /* service principals: TH_PERM_* */
    bool x509;        /* devices: authenticated by a client certificate */
    bool kicked;      /* a kick was requested (token expiry, disconnect command, ...) */
    bool kick_queued; /* ... and waits for the next tick (conn.c) */
    bool events_sub;  /* service: may receive events (acl.c); counted in event_subs */
};

/* Per-identity glue hung on th_identity.glue (owned by the plugin). */
struct brk_idglue {
    struct brk_conn *conn; /* the current connection, or NULL */
    bool sub_twin_res, sub_desired, sub_methods, sub_c2d;
    uint8_t desired_qos, c2d_qos; /* QoS to publish at: min(granted, 1) */
    int64_t revoked_se;           /* tokens with se <= this are refused (expireToken fault) */
    /* injectError fault: the next N twin GETs / PATCHes get this status. */
    int fault_get_status, fault_get_count;
    int fault_patch_status, fault_patch_count;
};

/* A direct method call waiting for its device. */
struct brk_method_call {
    uint64_t id;        /* also the $rid sent to the device */
    char *caller_id;    /* service client id to answer */
    cJSON *correlation; /* echoed; owned */
    char *device_id;
    char *module_id; /* NULL for a device */
    char *method_name;
    char *payload; /* serialized JSON request payload */
    int response_timeout_s;
    int64_t connect_deadline_ms;  /* waiting for the device to connect */
    int64_t response_deadline_ms; /* 0 until sent */
    struct brk_method_call *next;
    struct brk_job *job; /* a method job's call (control_jobs.c): answered there; else NULL */
    size_t job_index;    /* ... the device's index in the job */
};

struct brk_plugin {
    mosquitto_plugin_id_t *pid;
    struct th_registry *reg;
    struct brk_conn *conns; /* uthash by client pointer */
    /* The record brk_conn_find returned last (borrowed; cleared when it is freed): one packet
     * asks for it several times (a SUBSCRIBE's ACL check per filter, a PUBLISH's ACL check
     * and message), and each hash lookup in a large fleet's table is a few cache misses. */
    struct brk_conn *conn_last;
    struct brk_method_call *calls;
    uint64_t next_call_id;
    uint64_t event_seq;
    unsigned service_conns; /* connected service principals */
    unsigned event_subs;    /* ... of which may receive events (events_sub) */
    unsigned kicks_queued;  /* records with kick_queued set */
    uint64_t tracking_seq;
    int64_t next_scan_ms;
    /* No token of a live, not yet kicked SAS connection expires before this second (before
     * the skew): the expiry scan waits for it (conn.c). Early is harmless (one scan that
     * finds nothing), late never happens: brk_conn_set_token_expiry lowers it. 0 at start. */
    int64_t next_expiry_s;
    int64_t token_skew_s;
    bool verbose;
    char *state_dir; /* --state-dir, or NULL for in-memory */
    struct th_config_store *configs; /* automatic configurations (control_config.c) */
    bool configs_dirty;              /* a twin or the registry changed since they were applied */
    /* The last pass ran with no configuration: no twin holds a configuration status any more,
     * and none can gain one until a configuration is created, so passes can be skipped. */
    bool configs_none_applied;
    int record_fd;   /* --record, or -1 */
    struct th_dps *dps; /* the provisioning service (dps.c, control_dps.c) */
    char *hub_host;     /* hub_name option: the assignedHub devices are given */
    struct th_cacerts *cas; /* the hub's CA certificates (control_certs.c) */
    /* The front secret (plugin_opt_front_secret, hex; shared with the TLS shim and the
     * WebSocket bridge): credentials made with it carry a client's certificate (core/x509.h).
     * has_front_secret false: none accepted. */
    uint8_t front_secret[TH_X509_SECRET_LEN];
    bool has_front_secret;
    /* The TLS shim's sweep (tlsshim_link.c, tlsshim/tlsshim.h) when plugin_opt_tls_shim found
     * it; NULL otherwise. */
    int (*tlsshim_sweep)(void);
    struct brk_job *jobs; /* control_jobs.c, oldest first */
};

/*
 * What each file provides. Callbacks the broker calls are brk_on_*; the rest
 * are called between the plugin's files only (brk_: the plugin's private
 * prefix; th_ is the core's).
 */

/* ==== plugin.c: entry points, options, callback registration, cleanup; logging ==== */

/* mosquitto_log_printf with a "twinhub: " prefix; INFO and DEBUG only with verbose. */
void brk_log(struct brk_plugin *p, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ==== conn.c: connection records, online/offline, per-identity glue, kicks, TICK ==== */

struct brk_conn *brk_conn_find(struct brk_plugin *p, const struct mosquitto *client);
/* Register (or replace) the record of this client pointer; NULL on OOM. */
struct brk_conn *brk_conn_add(struct brk_plugin *p, struct mosquitto *client, const char *client_id,
                              enum brk_conn_kind kind);
void brk_conn_free_all(struct brk_plugin *p);
/* Record the connection's token expiry (seconds) for the expiry scan; set c->x509 first
 * (a certificate has no token to run out). */
void brk_conn_set_token_expiry(struct brk_plugin *p, struct brk_conn *c, int64_t expiry_s);
struct brk_idglue *brk_idglue_of(struct th_identity *id); /* creates on first use; NULL on OOM */
void brk_idglue_free_all(struct brk_plugin *p);
/* The device connection c now owns identity id (g: its glue); a take-over detaches the old one. */
void brk_conn_device_online(struct brk_plugin *p, struct brk_conn *c, struct th_identity *id,
                            struct brk_idglue *g, bool clean_session);
/* MOSQ_EVT_DISCONNECT: the identity goes offline (its pending method calls fail); record freed. */
int brk_on_disconnect(int event, void *event_data, void *userdata);
/* MOSQ_EVT_TICK: queued kicks; every 200 ms method timeouts and token expiry. */
int brk_on_tick(int event, void *event_data, void *userdata);
/* Queue a kick of this connection; done on the next tick (brk_conn_do_kicks). */
void brk_conn_kick(struct brk_plugin *p, struct brk_conn *c);
/* Queue a kick of the identity's connection, if any. */
void brk_conn_kick_identity(struct brk_plugin *p, struct th_identity *id);
/* Before an identity is freed: detach its connection (kicked) and free its glue. */
void brk_conn_forget_identity(struct brk_plugin *p, struct th_identity *id);
/* Queue kicks of connections whose token expired (beyond the skew). */
void brk_conn_scan_expired(struct brk_plugin *p, int64_t now_s);
/* Perform the queued kicks. */
void brk_conn_do_kicks(struct brk_plugin *p);

/* ==== auth.c: CONNECT (MOSQ_EVT_BASIC_AUTH) ==== */

int brk_on_basic_auth(int event, void *event_data, void *userdata);

/* ==== acl.c: topic access and subscriptions (MOSQ_EVT_ACL_CHECK) ==== */

int brk_on_acl_check(int event, void *event_data, void *userdata);

/* ==== device_msgs.c: what devices publish (MOSQ_EVT_MESSAGE) and the twin answers ==== */

int brk_on_message(int event, void *event_data, void *userdata);

/* ==== deliver.c: outbound to devices (desired, C2D, method requests); the publish helper ==== */

/* Publish a copy of payload to one client (NULL: to subscribers; no subscription needed). */
int brk_publish_to(const char *client_id, const char *topic, const void *payload, size_t len,
                   int qos);
/* Deliver queued C2D messages to a connected, subscribed device. */
void brk_deliver_c2d(struct brk_plugin *p, struct th_identity *dev);
/* Send a desired notification if the identity is connected and subscribed. Returns delivered. */
bool brk_deliver_desired(struct brk_plugin *p, struct th_identity *id, const cJSON *notification,
                         int64_t version);
/* The same with the notification already printed (`len` bytes of `body`, which stays the
 * caller's; th_twin_write's notification_as_text). */
bool brk_deliver_desired_text(struct brk_plugin *p, struct th_identity *id, const char *body,
                              size_t len, int64_t version);
/* Send the method request if its identity is connected and subscribed; starts the response
 * timeout. Returns sent. */
bool brk_deliver_method_request(struct brk_plugin *p, struct brk_method_call *m, int64_t now_ms);

/* ==== control.c: the control API (MOSQ_EVT_CONTROL); the rest of it is control.h ==== */

int brk_on_control(int event, void *event_data, void *userdata);

/* ==== control_methods.c: pending direct-method calls ==== */

/* Send what can be sent, fail what waited too long. */
void brk_methods_tick(struct brk_plugin *p, int64_t now_ms);
/* The identity went offline: fail its sent calls. */
void brk_methods_identity_offline(struct brk_plugin *p, struct th_identity *id);
/* Device answered $iothub/methods/res/{status}/?$rid= (t: the parsed topic). */
struct th_topic;
void brk_methods_on_response(struct brk_plugin *p, struct th_identity *id, const struct th_topic *t,
                             const void *payload, size_t len);
void brk_methods_free_all(struct brk_plugin *p);
/* A method job's call on device `id` (index i in job j): sent now, or waiting for the device
 * for the job's connect timeout, or failed at once (DeviceNotOnline). */
struct brk_job;
void brk_methods_start_for_job(struct brk_plugin *p, struct th_identity *id, struct brk_job *j,
                               size_t i);
/* The job ended (cancelled, expired): its pending calls are dropped unanswered. */
void brk_methods_forget_job(struct brk_plugin *p, struct brk_job *j);

/* ==== control_jobs.c: jobs (the commands are in control.h) ==== */

/* Run due jobs a slice at a time (from TICK). */
void brk_jobs_tick(struct brk_plugin *p);
/* A method job's request went out to device i: it is running. */
void brk_jobs_device_sent(struct brk_plugin *p, struct brk_job *j, size_t i);
/* A method job's call ended: the answer (data, owned) or err. */
void brk_jobs_method_done(struct brk_plugin *p, struct brk_job *j, size_t i, cJSON *data,
                          const struct th_error *err);
const struct th_job *brk_job_of(const struct brk_job *j);
/* The rows of FROM devices.jobs (each caller-owned, and the array); NULL on out-of-memory. */
cJSON **brk_jobs_device_docs(struct brk_plugin *p, size_t *out_n);
/* --state-dir: load DIR/jobs/ (a file that cannot be read is skipped with a warning). */
int brk_jobs_load(struct brk_plugin *p);
void brk_jobs_free_all(struct brk_plugin *p);

/* ==== control_certs.c: the CA certificates' store, loaded from --state-dir ==== */

/* Create p->cas and load certificates.json from the state directory (a file that cannot be
 * read is logged and left alone). MOSQ_ERR_NOMEM only. */
int brk_certs_load(struct brk_plugin *p);

/* ==== persist.c: the state directory and the recording ==== */

/* Save one device (modules included) after a change; no-op without a state dir. */
void brk_persist_device(struct brk_plugin *p, struct th_identity *dev);
void brk_persist_forget(struct brk_plugin *p, const char *device_id);
void brk_persist_all(struct brk_plugin *p);
/* Only the policies file (after a restore, whose device files are current). */
void brk_persist_policies(struct brk_plugin *p);
/*
 * Restore policies and devices from the state dir; *out_found when any state
 * existed. A file that cannot be loaded is set aside (persist.c) and the
 * rest is loaded; with `report_path`, what was restored and set aside is
 * written there as JSON for `serve`. Fails only when the directory cannot be
 * read or memory runs out.
 */
int brk_persist_load(struct brk_plugin *p, const char *report_path, bool *out_found);
int brk_record_open(struct brk_plugin *p, const char *path);
void brk_record_write(struct brk_plugin *p, const char *line, size_t len);

/* ==== dps.c: the provisioning service over MQTT; registrations; the DPS state file ==== */

struct th_error;
void brk_dps_conn_free(struct brk_dps_conn *d);
/* Whether a CONNECT username is a DPS one ({idScope}/registrations/{id}/...). */
bool brk_dps_is_username(const char *username);
/* CONNECT of a registering device: MOSQ_ERR_SUCCESS with a BRK_CONN_DPS record, or refused. */
int brk_dps_on_connect(struct brk_plugin *p, struct mosquitto *client, const char *client_id,
                       const char *username, const char *password);
int brk_dps_acl(struct brk_plugin *p, struct brk_conn *c, const struct mosquitto_evt_acl_check *ed);
int brk_dps_on_message(struct brk_plugin *p, struct brk_conn *c,
                       const struct mosquitto_evt_message *ed);
/*
 * Carry out a registration request (MQTT and HTTPS alike): 202 with *out_body
 * {"operationId","status":"assigning"} (caller frees), or the error status with err.
 * `chain` (the client certificate the front credential carried, already checked) decides
 * by X.509 attestation; NULL: `token` by symmetric key. Records a `registration` event
 * either way.
 */
struct th_x509_chain;
int brk_dps_register(struct brk_plugin *p, const char *id_scope, const char *registration_id,
                     const char *token, const struct th_x509_chain *chain, const cJSON *payload,
                     const char *transport, cJSON **out_body, struct th_error *err);
/* An operation status request: 200 with *out_body (caller frees), or the error status. */
int brk_dps_operation_status(struct brk_plugin *p, const char *id_scope,
                             const char *registration_id, const char *token,
                             const struct th_x509_chain *chain, const char *operation_id,
                             cJSON **out_body, struct th_error *err);
/*
 * Open a front credential (x509.h) given to a DPS request: bound to `client_id` and
 * `username` as the front made it. TH_OK with *out (caller frees); else a reason in `why`.
 */
th_result brk_dps_open_cred(struct brk_plugin *p, const char *client_id, const char *username,
                            const char *cred, struct th_x509_chain **out, char *why,
                            size_t why_size);
/* Save the DPS to --state-dir/dps.json (no-op without a state dir). */
void brk_dps_persist(struct brk_plugin *p);
/* Restore it at start; *found when the file existed. */
int brk_dps_load_state(struct brk_plugin *p, bool *found);

/* ==== control_config.c: automatic configurations ==== */

/* The store, restored from the state dir's configurations.json when there is one. */
int brk_config_load(struct brk_plugin *p);
void brk_config_free(struct brk_plugin *p);
/* When something changed since the last time (configs_dirty): bring every twin in line. */
void brk_config_apply(struct brk_plugin *p);

/* ==== events.c: the event stream; the hub's error body ==== */

/*
 * Emit one event record {seq,time,kind,deviceId,moduleId,data} (core/journal.h,
 * which also builds each kind's `data`): appended to the recording and
 * published on $twinhub/events/{kind}/{d}[/{m}]. Takes ownership of `data`
 * (NULL is {}). device_id may be NULL (refusals of unknown clients).
 */
void brk_event_emit(struct brk_plugin *p, enum th_journal_kind kind, const char *device_id,
                    const char *module_id, cJSON *data);
/*
 * brk_event_emit for a telemetry message, its record written straight as
 * text (th_journal_telemetry_record_text: the same bytes, no cJSON tree).
 * Counts the event in the sequence even when nobody listens.
 */
void brk_event_emit_telemetry(struct brk_plugin *p, const struct th_journal_telemetry *t);
/* True when an event record would reach anyone (an events subscriber or a recording): callers
 * on hot paths build a record's data only then. */
bool brk_events_wanted(const struct brk_plugin *p);
/* Build the hub's error body {"errorCode","trackingId","message","timestampUtc"}; caller frees. */
char *brk_error_body(struct brk_plugin *p, const struct th_error *err);

/* tlsshim_link.c: find the TLS shim preloaded into mosquitto (tlsshim/tlsshim.h) and give it
 * the front secret; MOSQ_ERR_SUCCESS, else an error logged (the broker does not start). */
int brk_tlsshim_link(struct brk_plugin *p);
/* On the scan tick: have the shim shut down connections without a first packet in time. */
void brk_tlsshim_sweep(struct brk_plugin *p);

#endif
