/*
 * conn.c - the life of a connection: its record (keyed by the broker's
 * client pointer), an identity going online and offline (MOSQ_EVT_DISCONNECT),
 * the per-identity glue, and kicks.
 *
 * Kicks are queued and done on the tick (MOSQ_EVT_TICK), from one place,
 * as mosquitto's dynamic-security plugin does: mosquitto_kick_client_by_clientid
 * disconnects the client at once (do_disconnect runs the DISCONNECT callbacks
 * and may free the client's context) and must not run inside a callback that
 * is still working on that client or on the plugin's own records. A queued
 * kick names its connection record, so a later connection with the same
 * client id (a take-over) is never kicked by mistake.
 *
 * TICK is also the plugin's timer: token expiry and method timeouts.
 */
#include <stdlib.h>
#include <string.h>

#include "plugin.h"
#include "util.h"

/* TICK runs once per broker loop iteration (thousands per second under load): the scans
 * below run at most this often. Kicks are done on every tick. */
#define BRK_SCAN_INTERVAL_MS 200
/* next_expiry_s when no live connection has a token that can run out (DPS connections use
 * the same value, dps.c); far from INT64_MAX so that adding the skew cannot overflow. */
#define BRK_NO_EXPIRY (INT64_MAX / 2)

/* ---- connection records ---- */

struct brk_conn *brk_conn_find(struct brk_plugin *p, const struct mosquitto *client)
{
    struct brk_conn *c = NULL;
    if (p->conn_last && p->conn_last->client == client) {
        return p->conn_last;
    }
    HASH_FIND_PTR(p->conns, &client, c);
    if (c) {
        p->conn_last = c;
    }
    return c;
}

/* Unlink and free one record, keeping the counters true. */
static void conn_remove(struct brk_plugin *p, struct brk_conn *c)
{
    HASH_DEL(p->conns, c);
    if (p->conn_last == c) {
        p->conn_last = NULL;
    }
    if (c->kind == BRK_CONN_SERVICE) {
        p->service_conns--;
    }
    if (c->events_sub) {
        p->event_subs--;
    }
    if (c->kick_queued) {
        p->kicks_queued--;
    }
    free(c->client_id);
    free(c->policy);
    brk_dps_conn_free(c->dps);
    free(c);
}

struct brk_conn *brk_conn_add(struct brk_plugin *p, struct mosquitto *client, const char *client_id,
                              enum brk_conn_kind kind)
{
    struct brk_conn *c = brk_conn_find(p, client);
    if (c) {
        conn_remove(p, c);
    }
    c = calloc(1, sizeof *c);
    if (!c) {
        return NULL;
    }
    c->client_id = strdup(client_id);
    if (!c->client_id) {
        free(c);
        return NULL;
    }
    c->client = client;
    c->kind = kind;
    HASH_ADD_PTR(p->conns, client, c);
    if (kind == BRK_CONN_SERVICE) {
        p->service_conns++;
    }
    return c;
}

void brk_conn_set_token_expiry(struct brk_plugin *p, struct brk_conn *c, int64_t expiry_s)
{
    c->token_expiry_s = expiry_s;
    if (!c->x509 && expiry_s < p->next_expiry_s) {
        p->next_expiry_s = expiry_s;
    }
}

void brk_conn_free_all(struct brk_plugin *p)
{
    struct brk_conn *c, *tmp;
    HASH_ITER(hh, p->conns, c, tmp)
    {
        conn_remove(p, c);
    }
}

/* ---- per-identity glue ---- */

struct brk_idglue *brk_idglue_of(struct th_identity *id)
{
    if (!id->glue) {
        id->glue = calloc(1, sizeof(struct brk_idglue));
    }
    return id->glue;
}

static void free_glue_of(struct th_identity *id)
{
    free(id->glue);
    id->glue = NULL;
}

void brk_idglue_free_all(struct brk_plugin *p)
{
    for (struct th_identity *d = th_registry_next_device(p->reg, NULL); d;
         d = th_registry_next_device(p->reg, d)) {
        for (size_t i = 0; i < d->module_count; i++) {
            free_glue_of(d->modules[i]);
        }
        free_glue_of(d);
    }
}

/* ---- online and offline ---- */

void brk_conn_device_online(struct brk_plugin *p, struct brk_conn *c, struct th_identity *id,
                            struct brk_idglue *g, bool clean_session)
{
    c->identity = id;
    if (g->conn && g->conn != c) {
        /* Take-over: the old connection's DISCONNECT follows; it no longer owns the identity. */
        g->conn->identity = NULL;
        brk_log(p, MOSQ_LOG_NOTICE, "%s | takeover | a new connection replaces the old one",
                c->client_id);
    }
    g->conn = c;
    if (clean_session) {
        g->sub_twin_res = g->sub_desired = g->sub_methods = g->sub_c2d = false;
    }
    th_identity_set_connected(id, true, th_now_us());
}

int brk_on_disconnect(int event, void *event_data, void *userdata)
{
    struct mosquitto_evt_disconnect *ed = event_data;
    struct brk_plugin *p = userdata;
    struct brk_conn *c = brk_conn_find(p, ed->client);
    (void)event;
    if (!c) {
        return MOSQ_ERR_SUCCESS; /* refused or never authenticated */
    }
    if (c->kind == BRK_CONN_DEVICE && c->identity) {
        struct th_identity *id = c->identity;
        struct brk_idglue *g = id->glue;
        if (g && g->conn == c) {
            g->conn = NULL;
            th_identity_set_connected(id, false, th_now_us());
            brk_log(p, MOSQ_LOG_NOTICE, "%s%s%s | disconnected", id->device_id,
                    id->module_id ? "/" : "", id->module_id ? id->module_id : "");
            brk_event_emit(p, TH_JOURNAL_DISCONNECTED, id->device_id, id->module_id, NULL);
            brk_methods_identity_offline(p, id);
        }
    } else if (c->kind == BRK_CONN_SERVICE) {
        brk_log(p, MOSQ_LOG_INFO, "service | disconnected | client=%s", c->client_id);
    }
    conn_remove(p, c);
    return MOSQ_ERR_SUCCESS;
}

/* ---- kicks ---- */

void brk_conn_kick(struct brk_plugin *p, struct brk_conn *c)
{
    c->kicked = true;
    if (!c->kick_queued) {
        c->kick_queued = true;
        p->kicks_queued++;
    }
}

void brk_conn_kick_identity(struct brk_plugin *p, struct th_identity *id)
{
    struct brk_idglue *g = id->glue;
    if (g && g->conn) {
        brk_conn_kick(p, g->conn);
    }
}

void brk_conn_forget_identity(struct brk_plugin *p, struct th_identity *id)
{
    struct brk_idglue *g = id->glue;
    if (g) {
        if (g->conn) {
            g->conn->identity = NULL;
            brk_conn_kick(p, g->conn);
        }
        free_glue_of(id);
    }
}

void brk_conn_scan_expired(struct brk_plugin *p, int64_t now_s)
{
    struct brk_conn *c, *tmp;
    int64_t next = BRK_NO_EXPIRY;
    /* The scan walks every connection: run every 200 ms while a large fleet connects, it cost
     * a share of each CONNECT that grew with the fleet (performance.md, "Connect rate").
     * Nothing can be due before the earliest token runs out. */
    if (p->next_expiry_s + p->token_skew_s >= now_s) {
        return;
    }
    HASH_ITER(hh, p->conns, c, tmp)
    {
        /* A certificate has no token to run out (its validity is checked at CONNECT). */
        if (c->kicked || c->x509) {
            continue;
        }
        if (c->token_expiry_s + p->token_skew_s < now_s) {
            brk_log(p, MOSQ_LOG_NOTICE, "%s | token expired | closing the connection",
                    c->client_id);
            brk_conn_kick(p, c);
        } else if (c->token_expiry_s < next) {
            next = c->token_expiry_s;
        }
    }
    p->next_expiry_s = next;
}

void brk_conn_do_kicks(struct brk_plugin *p)
{
    struct brk_conn *c, *tmp;
    char **ids;
    size_t n = 0, want = p->kicks_queued;
    if (want == 0) {
        return;
    }
    /* Each kick runs the DISCONNECT callback, which frees that record: take the client ids
     * first, then kick. On OOM the rest stay queued for the next tick. */
    ids = calloc(want, sizeof *ids);
    if (!ids) {
        return;
    }
    HASH_ITER(hh, p->conns, c, tmp)
    {
        if (n == want) {
            break;
        }
        if (c->kick_queued && (ids[n] = strdup(c->client_id)) != NULL) {
            c->kick_queued = false;
            p->kicks_queued--;
            n++;
        }
    }
    for (size_t i = 0; i < n; i++) {
        mosquitto_kick_client_by_clientid(ids[i], false);
        free(ids[i]);
    }
    free(ids);
}

int brk_on_tick(int event, void *event_data, void *userdata)
{
    struct brk_plugin *p = userdata;
    int64_t now_ms = th_mono_ms();
    (void)event;
    (void)event_data;
    if (now_ms >= p->next_scan_ms) {
        p->next_scan_ms = now_ms + BRK_SCAN_INTERVAL_MS;
        brk_methods_tick(p, now_ms);
        brk_conn_scan_expired(p, th_now_us() / 1000000);
        brk_tlsshim_sweep(p);
        /* What devices changed (reported properties) reaches the configurations; at most every
         * scan interval, so that a flood of reports does not re-evaluate every twin per loop. */
        brk_config_apply(p);
    }
    brk_conn_do_kicks(p);
    if (p->jobs) {
        brk_jobs_tick(p);
    }
    return MOSQ_ERR_SUCCESS;
}
