/*
 * rawmqtt.c - raw MQTT 3.1.1 clients for integration tests (rawmqtt.h).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "rawmqtt.h"

int64_t raw_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void b_put(struct buf *b, const void *d, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n)
            cap *= 2;
        uint8_t *np = realloc(b->p, cap);
        if (!np)
            abort();
        b->p = np;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, d, n);
    b->len += n;
}

void b_u8(struct buf *b, uint8_t v)
{
    b_put(b, &v, 1);
}

void b_u16(struct buf *b, unsigned v)
{
    b_u8(b, (uint8_t)(v >> 8));
    b_u8(b, (uint8_t)v);
}

void b_strn(struct buf *b, const char *s, size_t n)
{
    b_u16(b, (unsigned)n);
    b_put(b, s, n);
}

void b_str(struct buf *b, const char *s)
{
    b_strn(b, s, strlen(s));
}

void b_free(struct buf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* Append a whole packet: fixed header byte, remaining length, body. */
void b_packet(struct buf *out, uint8_t header, const struct buf *body)
{
    size_t rl = body->len;
    b_u8(out, header);
    do {
        uint8_t d = rl % 128;
        rl /= 128;
        b_u8(out, (uint8_t)(d | (rl ? 0x80 : 0)));
    } while (rl);
    b_put(out, body->p, body->len);
}

/* CONNECT (3.1.1 unless level says otherwise); user/pass NULL for none. */
void mk_connect(struct buf *out, const char *proto, int level, const char *cid, size_t cid_len,
                const char *user, size_t user_len, const char *pass, bool clean)
{
    struct buf body = {0};
    b_str(&body, proto);
    b_u8(&body, (uint8_t)level);
    b_u8(&body, (uint8_t)((clean ? 0x02 : 0) | (user ? 0x80 : 0) | (pass ? 0x40 : 0)));
    b_u16(&body, 60);
    if (level == 5)
        b_u8(&body, 0); /* no properties */
    b_strn(&body, cid, cid_len);
    if (user)
        b_strn(&body, user, user_len);
    if (pass)
        b_str(&body, pass);
    b_packet(out, 0x10, &body);
    b_free(&body);
}

void mk_publish(struct buf *out, const char *topic, size_t topic_len, const void *payload,
                size_t len, int qos, unsigned mid)
{
    struct buf body = {0};
    b_strn(&body, topic, topic_len);
    if (qos > 0)
        b_u16(&body, mid);
    b_put(&body, payload, len);
    b_packet(out, (uint8_t)(0x30 | (qos << 1)), &body);
    b_free(&body);
}

void mk_subscribe(struct buf *out, unsigned mid, const char *filter, size_t flen, int qos)
{
    struct buf body = {0};
    b_u16(&body, mid);
    if (filter) {
        b_strn(&body, filter, flen);
        b_u8(&body, (uint8_t)qos);
    }
    b_packet(out, 0x82, &body);
    b_free(&body);
}

/* ---------------------------------------------------------- raw sockets */

/* Connect to the hub's plain port; rcvbuf > 0 shrinks the receive buffer (a slow reader). */
bool raw_open(struct raw *r, int port, int rcvbuf)
{
    memset(r, 0, sizeof *r);
    r->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (r->fd < 0)
        return false;
    if (rcvbuf > 0)
        setsockopt(r->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    int one = 1;
    setsockopt(r->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(r->fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(r->fd);
        r->fd = -1;
        return false;
    }
    fcntl(r->fd, F_SETFL, fcntl(r->fd, F_GETFL) | O_NONBLOCK);
    return true;
}

/* Close; rst sends a TCP reset instead of a FIN (an abrupt loss of the connection). */
void raw_close(struct raw *r, bool rst)
{
    if (r->fd >= 0) {
        if (rst) {
            struct linger l = {.l_onoff = 1, .l_linger = 0};
            setsockopt(r->fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
        }
        close(r->fd);
    }
    free(r->in);
    memset(r, 0, sizeof *r);
    r->fd = -1;
}

/* Send everything within timeout_ms; false on error (the peer closed) or timeout. */
bool raw_send(struct raw *r, const void *data, size_t len, int timeout_ms)
{
    const uint8_t *p = data;
    int64_t deadline = raw_now_ms() + timeout_ms;
    while (len > 0) {
        ssize_t n = send(r->fd, p, len, MSG_NOSIGNAL);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EINTR)
            return false;
        int left = (int)(deadline - raw_now_ms());
        if (left <= 0)
            return false;
        struct pollfd pfd = {.fd = r->fd, .events = POLLOUT};
        poll(&pfd, 1, left);
    }
    return true;
}

bool raw_send_buf(struct raw *r, const struct buf *b)
{
    return raw_send(r, b->p, b->len, RAW_WAIT_MS);
}

/*
 * Next packet within timeout_ms: 1 with *out filled (free out->body), 0 on
 * timeout, -1 when the connection ended or the bytes are not MQTT.
 */
int raw_recv(struct raw *r, struct pkt *out, int timeout_ms)
{
    int64_t deadline = raw_now_ms() + timeout_ms;
    for (;;) {
        if (r->in_len >= 2) {
            size_t rl = 0, mult = 1, i = 1;
            bool complete = false;
            for (; i < r->in_len && i <= 4; i++) {
                rl += (size_t)(r->in[i] & 0x7F) * mult;
                mult *= 128;
                if (!(r->in[i] & 0x80)) {
                    complete = true;
                    i++;
                    break;
                }
            }
            if (!complete && i > 4)
                return -1;
            if (complete && r->in_len >= i + rl) {
                out->header = r->in[0];
                out->len = rl;
                out->body = malloc(rl + 1);
                if (!out->body)
                    abort();
                memcpy(out->body, r->in + i, rl);
                out->body[rl] = '\0';
                memmove(r->in, r->in + i + rl, r->in_len - i - rl);
                r->in_len -= i + rl;
                return 1;
            }
        }
        if (r->in_cap - r->in_len < 4096) {
            size_t cap = r->in_cap ? r->in_cap * 2 : 16384;
            uint8_t *np = realloc(r->in, cap);
            if (!np)
                abort();
            r->in = np;
            r->in_cap = cap;
        }
        ssize_t n = recv(r->fd, r->in + r->in_len, r->in_cap - r->in_len, 0);
        if (n > 0) {
            r->in_len += (size_t)n;
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EINTR))
            return -1;
        int left = (int)(deadline - raw_now_ms());
        if (left <= 0)
            return 0;
        struct pollfd pfd = {.fd = r->fd, .events = POLLIN};
        poll(&pfd, 1, left);
    }
}

/* True when the broker closes the connection within timeout_ms (whatever it sends first). */
bool raw_wait_closed(struct raw *r, int timeout_ms)
{
    int64_t deadline = raw_now_ms() + timeout_ms;
    for (;;) {
        struct pkt p;
        int left = (int)(deadline - raw_now_ms());
        if (left <= 0)
            return false;
        int rc = raw_recv(r, &p, left);
        if (rc < 0)
            return true;
        if (rc == 0)
            return false;
        free(p.body);
    }
}

/* Wait for a packet of type `type` (upper nibble), skipping others; CONNACK/SUBACK code in *code.
 */
bool raw_expect(struct raw *r, uint8_t type, int *code, int timeout_ms)
{
    int64_t deadline = raw_now_ms() + timeout_ms;
    for (;;) {
        struct pkt p;
        int left = (int)(deadline - raw_now_ms());
        if (left <= 0 || raw_recv(r, &p, left) != 1)
            return false;
        bool match = (p.header & 0xF0) == type;
        if (match && code) {
            if (type == 0x20 && p.len >= 2)
                *code = p.body[1];
            else if (type == 0x90 && p.len >= 3)
                *code = p.body[2];
        }
        free(p.body);
        if (match)
            return true;
    }
}

/* ------------------------------------------------------------ identities */

void cred_make(struct cred *c, const struct it_hub *hub, const char *device_id,
               const char *module_id, const char *key)
{
    if (module_id)
        snprintf(c->cid, sizeof c->cid, "%s/%s", device_id, module_id);
    else
        snprintf(c->cid, sizeof c->cid, "%s", device_id);
    c->user = it_device_username(hub->hub_name, device_id, module_id);
    c->pass = it_device_token(hub->hub_name, device_id, module_id, key, it_expiry());
}

void cred_free(struct cred *c)
{
    free(c->user);
    free(c->pass);
}

void connect_packet(struct buf *b, const struct cred *c, bool clean)
{
    mk_connect(b, "MQTT", 4, c->cid, strlen(c->cid), c->user, strlen(c->user), c->pass, clean);
}

/* Raw device connection with CONNACK 0; false (connection closed) otherwise. */
bool raw_device(struct raw *r, int port, const struct cred *c, int rcvbuf, bool clean)
{
    struct buf b = {0};
    int code = -1;
    if (!raw_open(r, port, rcvbuf))
        return false;
    connect_packet(&b, c, clean);
    bool ok = raw_send_buf(r, &b) && raw_expect(r, 0x20, &code, RAW_WAIT_MS) && code == 0;
    b_free(&b);
    if (!ok)
        raw_close(r, false);
    return ok;
}

bool raw_subscribe(struct raw *r, const char *filter)
{
    struct buf b = {0};
    int granted = -1;
    mk_subscribe(&b, 1, filter, strlen(filter), 0);
    bool ok = raw_send_buf(r, &b) && raw_expect(r, 0x90, &granted, RAW_WAIT_MS) && granted == 0;
    b_free(&b);
    return ok;
}

/* Send one publish (QoS 0 or 1, mid 1) of a string payload. */
bool raw_publish(struct raw *r, const char *topic, const char *payload, int qos)
{
    struct buf b = {0};
    mk_publish(&b, topic, strlen(topic), payload, payload ? strlen(payload) : 0, qos, 1);
    bool ok = raw_send_buf(r, &b);
    b_free(&b);
    return ok;
}
