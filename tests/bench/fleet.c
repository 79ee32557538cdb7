/*
 * fleet.c - connecting many devices at once for the benchmarks: a bounded
 * number of connection attempts in flight, a SUBSCRIBE sent as soon as each
 * CONNACK arrives, and timings for both phases. Device i connects as
 * "bd-%05d" with a SAS token signed with its key; the same CONNECT bytes go
 * to twinhub and to the baselines (which accept anyone).
 */
#define _GNU_SOURCE
#include "fleet.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Tokens are precomputed once so that signing is not timed as connecting. */
static char **cred_user, **cred_pass;
static int cred_count;

static void ensure_credentials(int n)
{
    if (n <= cred_count) {
        return;
    }
    cred_user = realloc(cred_user, (size_t)n * sizeof *cred_user);
    cred_pass = realloc(cred_pass, (size_t)n * sizeof *cred_pass);
    if (!cred_user || !cred_pass) {
        thb_die("out of memory for credentials");
    }
    for (int i = cred_count; i < n; i++) {
        char u[512], p[512];
        thb_device_credentials(i, u, sizeof u, p, sizeof p);
        cred_user[i] = strdup(u);
        cred_pass[i] = strdup(p);
        if (!cred_user[i] || !cred_pass[i]) {
            thb_die("out of memory for credentials");
        }
    }
    cred_count = n;
}

struct fleet_progress {
    int ready, refused, subacked, closed, sub_refused;
    const char *const *filters;
    int nfilters, sub_qos;
};

/* fmt with its "%s" replaced by id (filters are data, not printf formats). */
static void expand(char *out, size_t size, const char *fmt, const char *id)
{
    const char *at = strstr(fmt, "%s");
    if (!at) {
        snprintf(out, size, "%s", fmt);
    } else {
        snprintf(out, size, "%.*s%s%s", (int)(at - fmt), fmt, id, at + 2);
    }
}

static void fleet_state(struct thb_conn *c, void *arg)
{
    struct fleet_progress *fp = arg;
    if (c->state == THB_CONN_READY) {
        fp->ready++;
        if (fp->nfilters > 0) {
            char id[32], topics[8][256];
            const char *ptrs[8];
            thb_device_id(c->index, id, sizeof id);
            for (int i = 0; i < fp->nfilters && i < 8; i++) {
                expand(topics[i], sizeof topics[i], fp->filters[i], id);
                ptrs[i] = topics[i];
            }
            thb_send_subscribe(c, 1, ptrs, fp->nfilters < 8 ? fp->nfilters : 8, fp->sub_qos);
            thb_conn_flush(c);
        }
    } else if (c->state == THB_CONN_CLOSED) {
        if (c->connack_rc != 0) {
            fp->refused++;
        } else {
            fp->closed++;
        }
    }
}

static void fleet_packet(struct thb_conn *c, uint8_t hdr, const uint8_t *body, size_t len,
                         void *arg)
{
    struct fleet_progress *fp = arg;
    if ((hdr >> 4) == THB_SUBACK) {
        for (size_t i = 2; i < len; i++) {
            if (body[i] & 0x80) {
                fp->sub_refused++;
                fprintf(stderr, "thbench: a subscription of connection %d was refused\n", c->index);
            }
        }
        fp->subacked++;
    }
}

int thb_fleet_connect(struct thb_loop *l, struct thb_conn *conns, int n, int port,
                      const char *const *filters, int nfilters, int sub_qos, int window,
                      struct thb_fleet_timing *out)
{
    struct fleet_progress fp = {.filters = filters, .nfilters = nfilters, .sub_qos = sub_qos};
    thb_packet_fn saved_packet = l->on_packet;
    thb_state_fn saved_state = l->on_state;
    void *saved_arg = l->arg;
    int started = 0, rc = 0;
    ensure_credentials(n);
    l->on_packet = fleet_packet;
    l->on_state = fleet_state;
    l->arg = &fp;
    memset(out, 0, sizeof *out);

    int64_t t0 = thb_now_us(), deadline = t0 + 120 * 1000000LL;
    while ((fp.ready + fp.refused + fp.closed < n || (nfilters && fp.subacked < fp.ready)) &&
           thb_now_us() < deadline) {
        while (started < n && started - (fp.ready + fp.refused + fp.closed) < window) {
            char id[32];
            thb_device_id(started, id, sizeof id);
            if (thb_conn_open(l, &conns[started], started, port, id, cred_user[started],
                              cred_pass[started]) != 0) {
                fprintf(stderr, "thbench: cannot open connection %d: %s\n", started + 1,
                        strerror(errno));
                rc = -1;
                goto out;
            }
            started++;
        }
        thb_loop_step(l, 10);
        if (!out->connack_us && fp.ready + fp.refused + fp.closed == n) {
            out->connack_us = thb_now_us() - t0;
        }
    }
    out->suback_us = thb_now_us() - t0;
    if (!out->connack_us) {
        out->connack_us = out->suback_us;
    }
    if (fp.ready != n || (nfilters && fp.subacked != n) || fp.sub_refused) {
        fprintf(stderr,
                "thbench: %d of %d devices connected (%d refused, %d closed), %d subscribed\n",
                fp.ready, n, fp.refused, fp.closed, fp.subacked);
        rc = -1;
    }
out:
    l->on_packet = saved_packet;
    l->on_state = saved_state;
    l->arg = saved_arg;
    return rc;
}

int thb_client_connect(struct thb_loop *l, struct thb_conn *c, int index, int port,
                       const char *client_id, const char *username, const char *password,
                       const char *filter, int qos)
{
    struct fleet_progress fp = {.filters = NULL, .nfilters = 0};
    thb_packet_fn saved_packet = l->on_packet;
    thb_state_fn saved_state = l->on_state;
    void *saved_arg = l->arg;
    l->on_packet = fleet_packet;
    l->on_state = fleet_state;
    l->arg = &fp;
    int rc = thb_conn_open(l, c, index, port, client_id, username, password);
    int64_t deadline = thb_now_us() + 10 * 1000000LL;
    while (rc == 0 && fp.ready == 0 && c->state != THB_CONN_CLOSED && thb_now_us() < deadline) {
        thb_loop_step(l, 10);
    }
    if (rc == 0 && fp.ready == 1 && filter) {
        thb_send_subscribe(c, 1, &filter, 1, qos);
        thb_conn_flush(c);
        while (fp.subacked == 0 && c->state != THB_CONN_CLOSED && thb_now_us() < deadline) {
            thb_loop_step(l, 10);
        }
    }
    if (rc != 0 || fp.ready != 1 || (filter && fp.subacked != 1) || fp.sub_refused) {
        fprintf(stderr, "thbench: client %s could not connect%s (CONNACK %d)\n", client_id,
                filter ? " and subscribe" : "", c->connack_rc);
        rc = -1;
    }
    l->on_packet = saved_packet;
    l->on_state = saved_state;
    l->arg = saved_arg;
    return rc;
}

int thb_service_connect(struct thb_loop *l, struct thb_conn *c, int index, int port,
                        const char *filter, int qos)
{
    static int seq;
    char pass[512], id[32];
    thb_service_password(pass, sizeof pass);
    /* A fresh id each time: a reconnect must not take over a session still closing. */
    snprintf(id, sizeof id, "svc-bench-%d", ++seq);
    return thb_client_connect(l, c, index, port, id, THB_HUB_NAME, pass, filter, qos);
}

void thb_fleet_close(struct thb_conn *conns, int n)
{
    for (int i = 0; i < n; i++) {
        if (conns[i].state == THB_CONN_READY) {
            thb_send_disconnect(&conns[i]);
            thb_conn_flush(&conns[i]);
        }
        thb_conn_close(&conns[i]);
    }
}
