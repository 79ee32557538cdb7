/*
 * fleet.h - connect many benchmark devices (and the service principal) on
 * one thb_loop. See fleet.c.
 */
#ifndef THB_FLEET_H
#define THB_FLEET_H

#include "bench.h"

struct thb_fleet_timing {
    int64_t connack_us; /* first connect() to the last CONNACK */
    int64_t suback_us;  /* first connect() to the last SUBACK */
};

/*
 * Connect devices 0..n-1 to 127.0.0.1:port, at most `window` waiting for
 * their CONNACK at a time; each subscribes to `filters` (printf formats with
 * one "%s" that becomes the device id; nfilters <= 8) in one SUBSCRIBE right after its
 * CONNACK. Returns 0 when all connected and subscribed, -1 otherwise (after
 * printing why). conns must hold n entries; the loop's callbacks are
 * restored on return.
 */
int thb_fleet_connect(struct thb_loop *l, struct thb_conn *conns, int n, int port,
                      const char *const *filters, int nfilters, int sub_qos, int window,
                      struct thb_fleet_timing *out);

/*
 * Connect one client (index is stored in the conn; use negative values for
 * non-devices) and subscribe to filter (NULL: none) at qos. username and
 * password may be NULL. Returns 0 or -1.
 */
int thb_client_connect(struct thb_loop *l, struct thb_conn *c, int index, int port,
                       const char *client_id, const char *username, const char *password,
                       const char *filter, int qos);

/*
 * Connect the development iothubowner service principal ("svc-bench-N") and
 * subscribe to filter (NULL: none). Returns 0 or -1.
 */
int thb_service_connect(struct thb_loop *l, struct thb_conn *c, int index, int port,
                        const char *filter, int qos);

/* Send DISCONNECT where possible and close every connection. */
void thb_fleet_close(struct thb_conn *conns, int n);

#endif
