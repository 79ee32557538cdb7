/*
 * rawmqtt.h - raw MQTT 3.1.1 clients for integration tests that must control
 * the bytes on the wire (it_hostile: malformed and hostile clients; it_iolayer:
 * how packets are split and batched into TCP writes). Just enough MQTT to
 * misbehave on purpose: packet builders on a growing buffer, a non-blocking
 * socket with bounded sends and receives, and device credentials.
 * Nothing here calls cmocka asserts except cred_make (worker threads may use
 * the rest).
 */
#ifndef TH_IT_RAWMQTT_H
#define TH_IT_RAWMQTT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "harness.h"

#define RAW_WAIT_MS 5000 /* a close or an answer the broker owes us */

struct buf {
    uint8_t *p;
    size_t len, cap;
};

struct raw {
    int fd;
    uint8_t *in;
    size_t in_len, in_cap;
};

struct pkt {
    uint8_t header;
    uint8_t *body; /* malloc'd, NUL-terminated copy */
    size_t len;
};

/* CONNECT credentials, made on the test thread (the token helper asserts). */
struct cred {
    char cid[300];
    char *user;
    char *pass;
};

/* Monotonic milliseconds. */
int64_t raw_now_ms(void);

/* Append bytes, a byte, a big-endian u16, an MQTT string (length-prefixed); free the buffer. */
void b_put(struct buf *b, const void *d, size_t n);
void b_u8(struct buf *b, uint8_t v);
void b_u16(struct buf *b, unsigned v);
void b_strn(struct buf *b, const char *s, size_t n);
void b_str(struct buf *b, const char *s);
void b_free(struct buf *b);

/* Append a whole packet: fixed header byte, remaining length, body. */
void b_packet(struct buf *out, uint8_t header, const struct buf *body);

/* CONNECT (3.1.1 unless level says otherwise); user/pass NULL for none. */
void mk_connect(struct buf *out, const char *proto, int level, const char *cid, size_t cid_len,
                const char *user, size_t user_len, const char *pass, bool clean);

/* PUBLISH (mid used when qos > 0); SUBSCRIBE of one filter (NULL: none, a malformed one). */
void mk_publish(struct buf *out, const char *topic, size_t topic_len, const void *payload,
                size_t len, int qos, unsigned mid);
void mk_subscribe(struct buf *out, unsigned mid, const char *filter, size_t flen, int qos);

/* Connect to the hub's plain port; rcvbuf > 0 shrinks the receive buffer (a slow reader). */
bool raw_open(struct raw *r, int port, int rcvbuf);

/* Close; rst sends a TCP reset instead of a FIN (an abrupt loss of the connection). */
void raw_close(struct raw *r, bool rst);

/* Send everything within timeout_ms; false on error (the peer closed) or timeout. */
bool raw_send(struct raw *r, const void *data, size_t len, int timeout_ms);

/* raw_send of a whole buffer within RAW_WAIT_MS. */
bool raw_send_buf(struct raw *r, const struct buf *b);

/*
 * Next packet within timeout_ms: 1 with *out filled (free out->body), 0 on
 * timeout, -1 when the connection ended or the bytes are not MQTT.
 */
int raw_recv(struct raw *r, struct pkt *out, int timeout_ms);

/* True when the broker closes the connection within timeout_ms (whatever it sends first). */
bool raw_wait_closed(struct raw *r, int timeout_ms);

/* Wait for a packet of type `type` (upper nibble), skipping others; CONNACK/SUBACK code in *code.
 */
bool raw_expect(struct raw *r, uint8_t type, int *code, int timeout_ms);

/* Client id, user name and SAS token of a device or module (cred_make asserts); free them. */
void cred_make(struct cred *c, const struct it_hub *hub, const char *device_id,
               const char *module_id, const char *key);
void cred_free(struct cred *c);

/* A 3.1.1 CONNECT with these credentials. */
void connect_packet(struct buf *b, const struct cred *c, bool clean);

/* Raw device connection with CONNACK 0; false (connection closed) otherwise. */
bool raw_device(struct raw *r, int port, const struct cred *c, int rcvbuf, bool clean);

/* SUBSCRIBE one filter at QoS 0 (mid 1); true on SUBACK granting 0. */
bool raw_subscribe(struct raw *r, const char *filter);

/* Send one publish (QoS 0 or 1, mid 1) of a string payload. */
bool raw_publish(struct raw *r, const char *topic, const char *payload, int qos);

#endif
