/*
 * ctl_client.h - the control-API client (docs/control-api.md): one
 * libmosquitto connection as a service principal (user name = hub name,
 * password = a SAS token of a shared access policy) subscribed to its
 * response topic, that sends commands with correlationData of its own and
 * hands back each command's response entry. The wire format is
 * core/ctl_proto.h; this file adds the connection and the waiting.
 *
 * Used by the admin commands (cli/client.c), `twinhub run` (cli/run.c) and
 * the integration tests (tests/integration/it_ctl_client.c). The gateway has
 * an event loop of its own (gateway/gw_control.c) and uses ctl_proto alone.
 *
 * Synchronous and single-threaded: every wait is bounded by a deadline and
 * drives the connection itself (mosquitto_loop), or, for a caller with its
 * own poll() loop, through that caller's `pump` (th_ctl_client_socket,
 * th_ctl_client_io). Nothing sleeps and nothing here prints, except the
 * optional traces of what is sent and received.
 *
 * Ownership: the client is freed with th_ctl_client_free (accepts NULL);
 * commands passed in stay the caller's; entries handed out are the caller's
 * (cJSON_Delete).
 */
#ifndef TH_CTL_CLIENT_H
#define TH_CTL_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "ctl_proto.h"
#include "hubinfo.h"

/* Where and as whom to connect. */
struct th_ctl_target {
    char hub_name[256]; /* the user name and the token's sr */
    char policy[64];    /* shared access policy (SharedAccessKeyName) */
    char key[128];      /* its key (base64) */
    char host[300];
    int port;
    bool tls; /* then ca_file is the CA to trust */
    char ca_file[TH_HUBINFO_PATH_MAX];
};

/*
 * Where and as whom to reach the hub an info file describes: the address
 * clients dial for its bind, the plain MQTT port or else the TLS port with
 * its caFile, and the policy and key of its serviceConnectionString signed
 * for its hubName (what serve runs with). Without a service connection
 * string (serve --no-dev-identities) policy and key stay "". TH_ERR_TOO_LARGE
 * (err says which value) when a value does not fit.
 */
TH_NODISCARD th_result th_ctl_target_from_hubinfo(const struct th_hubinfo *info,
                                                  struct th_ctl_target *t, struct th_error *err);

struct th_ctl_opts {
    const char *client_id;   /* the MQTT client id */
    const char *corr_prefix; /* correlationData is "<prefix>-<n>" */
    long token_lifetime_s;   /* the SAS token's validity */
    /* Topics subscribed besides the response topic (for example TH_EVENTS_TOPIC); may be NULL. */
    const char *const *topics;
    size_t ntopics;
    /* A message on one of those topics; payload borrowed for the call. May be NULL. */
    void (*on_message)(void *arg, const char *topic, const void *payload, int len);
    /*
     * The caller's event loop: waits call pump(arg, timeout_ms), which must poll
     * th_ctl_client_socket for th_ctl_client_events and pass what it saw to
     * th_ctl_client_io. NULL: the client waits with mosquitto_loop itself.
     */
    void (*pump)(void *arg, int timeout_ms);
    /* A wait ends early (as a timeout) when this says so, e.g. on SIGINT. May be NULL. */
    bool (*stop)(void *arg);
    void *arg;
    /* When set, each request sent and each answer received goes to stderr after this prefix. */
    const char *trace_send, *trace_recv;
};

/* Why th_ctl_client_connect failed. */
enum th_ctl_fail {
    TH_CTL_FAIL_NONE = 0,
    TH_CTL_FAIL_KEY,        /* the key is not valid base64 */
    TH_CTL_FAIL_CA,         /* mosquitto_tls_set refused the CA file (rc) */
    TH_CTL_FAIL_CONNECT,    /* mosquitto_connect failed (rc; errno in err for MOSQ_ERR_ERRNO) */
    TH_CTL_FAIL_NO_CONNACK, /* no CONNACK before the deadline or the connection ended (rc) */
    TH_CTL_FAIL_REFUSED,    /* CONNACK refused the sign-in (rc = its return code) */
    TH_CTL_FAIL_SUBSCRIBE,  /* a subscription was refused (subacked) or not confirmed (rc) */
};
struct th_ctl_failure {
    enum th_ctl_fail what;
    int rc;
    int err;
    bool subacked;
};

struct th_ctl_client;

/*
 * A client that is not connected yet (th_ctl_client_connect). `opts` is
 * copied (its strings and topics must outlive the client). NULL when out of
 * memory.
 */
struct th_ctl_client *th_ctl_client_new(const struct th_ctl_opts *opts);

/*
 * Sign in to `t` and subscribe, within timeout_ms. True when ready; else
 * false with *why filled (the caller says what to do about it), and the
 * client should be freed. Call once per client.
 */
bool th_ctl_client_connect(struct th_ctl_client *c, const struct th_ctl_target *t, int timeout_ms,
                           struct th_ctl_failure *why);

/* Disconnect (letting the DISCONNECT leave) and free; accepts NULL. */
void th_ctl_client_free(struct th_ctl_client *c);

/*
 * Send `n` commands in one request, each with a fresh correlationData, which
 * is written to corrs[i]. Returns MOSQ_ERR_SUCCESS, MOSQ_ERR_NOMEM, or why the
 * publish failed (MOSQ_ERR_NO_CONN once the connection is lost).
 */
int th_ctl_client_send(struct th_ctl_client *c, cJSON *const *cmds, size_t n,
                       char (*corrs)[TH_CTL_CORR_MAX]);

/* The entry answering `corr` (or a request error) if it has arrived, else NULL. */
cJSON *th_ctl_client_take(struct th_ctl_client *c, const char *corr);

/*
 * Wait up to timeout_ms for the entry answering `corr` (or a request error).
 * Returns MOSQ_ERR_SUCCESS with *entry set, or with *entry NULL on a timeout
 * or when `stop` said so; or the reason the connection was lost (*entry NULL).
 */
int th_ctl_client_wait(struct th_ctl_client *c, const char *corr, int timeout_ms, cJSON **entry);

/* th_ctl_client_send of one command, then th_ctl_client_wait. */
int th_ctl_client_call(struct th_ctl_client *c, cJSON *cmd, int timeout_ms, cJSON **entry);

/* Whether the connection has ended (DISCONNECT, socket or protocol error). */
bool th_ctl_client_lost(const struct th_ctl_client *c);

/* ---- for a caller's own poll() loop (opts.pump) ---- */

/* The socket to poll, or -1 when there is none (not connected, or lost). */
int th_ctl_client_socket(const struct th_ctl_client *c);
/* What to poll it for: POLLIN, plus POLLOUT when libmosquitto has data to write. */
short th_ctl_client_events(const struct th_ctl_client *c);
/* Handle what poll() reported for the socket (reads, writes, keep-alive). */
void th_ctl_client_io(struct th_ctl_client *c, short revents);
/* Write what is queued, if anything (after other work queued messages). */
void th_ctl_client_flush(struct th_ctl_client *c);

#endif
