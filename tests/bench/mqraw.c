/*
 * mqraw.c - a minimal MQTT 3.1.1 client engine for the benchmarks: many
 * connections on nonblocking sockets driven by one epoll loop, with output
 * buffered per connection so that a burst of packets costs one send().
 * Only what the benchmarks use: CONNECT (keep-alive 0, clean session),
 * SUBSCRIBE, PUBLISH QoS 0/1, PUBACK, PINGREQ, DISCONNECT; incoming QoS 1
 * PUBLISHes are acknowledged automatically.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <unistd.h>

#define READ_CHUNK 65536

void thb_buf_reserve(struct thb_buf *b, size_t n)
{
    if (b->off > 0 && (b->off == b->len || b->len + n > b->cap)) {
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
    }
    if (b->len + n <= b->cap) {
        return;
    }
    size_t ncap = b->cap ? b->cap : 256;
    while (ncap < b->len + n) {
        ncap *= 2;
    }
    uint8_t *nd = realloc(b->data, ncap);
    if (!nd) {
        thb_die("out of memory (buffer of %zu bytes)", ncap);
    }
    b->data = nd;
    b->cap = ncap;
}

void thb_buf_free(struct thb_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

static void put_u8(struct thb_buf *b, uint8_t v)
{
    b->data[b->len++] = v;
}

static void put_u16(struct thb_buf *b, uint16_t v)
{
    b->data[b->len++] = (uint8_t)(v >> 8);
    b->data[b->len++] = (uint8_t)v;
}

static void put_bytes(struct thb_buf *b, const void *p, size_t n)
{
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void put_str(struct thb_buf *b, const char *s, size_t n)
{
    put_u16(b, (uint16_t)n);
    put_bytes(b, s, n);
}

/* Fixed header: type/flags byte and the remaining length (reserve first). */
static void put_header(struct thb_buf *b, uint8_t hdr, size_t remaining)
{
    put_u8(b, hdr);
    do {
        uint8_t byte = remaining % 128;
        remaining /= 128;
        if (remaining) {
            byte |= 0x80;
        }
        put_u8(b, byte);
    } while (remaining);
}

static void arm(struct thb_conn *c, bool want_out)
{
    if (c->out_armed == want_out || c->fd < 0) {
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(c->loop->ep, EPOLL_CTL_MOD, c->fd, &ev) == 0) {
        c->out_armed = want_out;
    }
}

static void set_state(struct thb_conn *c, enum thb_conn_state s)
{
    c->state = s;
    if (c->loop->on_state) {
        c->loop->on_state(c, c->loop->arg);
    }
}

static void lost(struct thb_conn *c)
{
    if (c->state == THB_CONN_CLOSED) {
        return;
    }
    c->loop->closed_unexpectedly++;
    thb_conn_close(c);
    set_state(c, THB_CONN_CLOSED);
}

void thb_loop_init(struct thb_loop *l, thb_packet_fn on_packet, thb_state_fn on_state, void *arg)
{
    memset(l, 0, sizeof *l);
    l->ep = epoll_create1(EPOLL_CLOEXEC);
    if (l->ep < 0) {
        thb_die("epoll_create1: %s", strerror(errno));
    }
    l->on_packet = on_packet;
    l->on_state = on_state;
    l->arg = arg;
}

void thb_loop_free(struct thb_loop *l)
{
    if (l->ep >= 0) {
        close(l->ep);
    }
    l->ep = -1;
}

int thb_conn_open(struct thb_loop *l, struct thb_conn *c, int index, int port,
                  const char *client_id, const char *username, const char *password)
{
    memset(c, 0, sizeof *c);
    c->fd = -1;
    c->index = index;
    c->loop = l;
    c->next_mid = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 && errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    c->fd = fd;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(l->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        int e = errno;
        close(fd);
        c->fd = -1;
        errno = e;
        return -1;
    }
    c->out_armed = true;
    c->state = THB_CONN_TCP;
    l->open_conns++;

    size_t idl = strlen(client_id), ul = username ? strlen(username) : 0,
           pl = password ? strlen(password) : 0;
    size_t rem = 10 + 2 + idl + (username ? 2 + ul : 0) + (password ? 2 + pl : 0);
    thb_buf_reserve(&c->out, rem + 5);
    put_header(&c->out, 0x10, rem);
    put_str(&c->out, "MQTT", 4);
    put_u8(&c->out, 4); /* protocol level 3.1.1 */
    put_u8(&c->out, (uint8_t)(0x02 | (username ? 0x80 : 0) | (password ? 0x40 : 0)));
    put_u16(&c->out, 0); /* keep-alive off: runs are short and bounded */
    put_str(&c->out, client_id, idl);
    if (username) {
        put_str(&c->out, username, ul);
    }
    if (password) {
        put_str(&c->out, password, pl);
    }
    return 0;
}

void thb_conn_close(struct thb_conn *c)
{
    if (c->state == THB_CONN_IDLE) {
        return; /* never opened (zeroed memory: fd 0 is not ours) */
    }
    if (c->fd >= 0) {
        epoll_ctl(c->loop->ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
        c->loop->open_conns--;
    }
    thb_buf_free(&c->in);
    thb_buf_free(&c->out);
    c->state = THB_CONN_CLOSED;
}

void thb_send_subscribe(struct thb_conn *c, uint16_t mid, const char *const *filters, int n,
                        int qos)
{
    size_t rem = 2;
    for (int i = 0; i < n; i++) {
        rem += 2 + strlen(filters[i]) + 1;
    }
    thb_buf_reserve(&c->out, rem + 5);
    put_header(&c->out, 0x82, rem);
    put_u16(&c->out, mid);
    for (int i = 0; i < n; i++) {
        put_str(&c->out, filters[i], strlen(filters[i]));
        put_u8(&c->out, (uint8_t)qos);
    }
}

void thb_send_publish(struct thb_conn *c, const char *topic, const void *payload, size_t len,
                      int qos, uint16_t mid)
{
    size_t tl = strlen(topic);
    size_t rem = 2 + tl + (qos ? 2 : 0) + len;
    thb_buf_reserve(&c->out, rem + 5);
    put_header(&c->out, (uint8_t)(0x30 | (qos << 1)), rem);
    put_str(&c->out, topic, tl);
    if (qos) {
        put_u16(&c->out, mid);
    }
    if (len) {
        put_bytes(&c->out, payload, len);
    }
}

void thb_send_puback(struct thb_conn *c, uint16_t mid)
{
    thb_buf_reserve(&c->out, 4);
    put_u8(&c->out, 0x40);
    put_u8(&c->out, 2);
    put_u16(&c->out, mid);
}

void thb_send_pingreq(struct thb_conn *c)
{
    thb_buf_reserve(&c->out, 2);
    put_u8(&c->out, 0xC0);
    put_u8(&c->out, 0);
}

void thb_send_disconnect(struct thb_conn *c)
{
    thb_buf_reserve(&c->out, 2);
    put_u8(&c->out, 0xE0);
    put_u8(&c->out, 0);
}

void thb_conn_flush(struct thb_conn *c)
{
    if (c->fd < 0 || c->state == THB_CONN_TCP) {
        return; /* the connect completion flushes */
    }
    while (c->out.off < c->out.len) {
        ssize_t n = send(c->fd, c->out.data + c->out.off, c->out.len - c->out.off, MSG_NOSIGNAL);
        if (n > 0) {
            c->out.off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            arm(c, true);
            return;
        }
        lost(c);
        return;
    }
    c->out.off = c->out.len = 0;
    arm(c, false);
}

bool thb_parse_publish(uint8_t hdr, const uint8_t *body, size_t len, struct thb_publish *out)
{
    if (len < 2) {
        return false;
    }
    size_t tl = ((size_t)body[0] << 8) | body[1];
    int qos = (hdr >> 1) & 3;
    size_t pos = 2 + tl;
    if (pos + (qos ? 2 : 0) > len) {
        return false;
    }
    out->topic = (const char *)body + 2;
    out->topic_len = tl;
    out->qos = qos;
    out->mid = 0;
    if (qos) {
        out->mid = (uint16_t)((body[pos] << 8) | body[pos + 1]);
        pos += 2;
    }
    out->payload = body + pos;
    out->payload_len = len - pos;
    return true;
}

uint16_t thb_packet_mid(const uint8_t *body, size_t len)
{
    return len >= 2 ? (uint16_t)((body[0] << 8) | body[1]) : 0;
}

/*
 * Dispatch every complete packet in data[0..len); returns the bytes consumed
 * (the rest is an incomplete packet), or (size_t)-1 when the connection was
 * closed meanwhile.
 */
static size_t dispatch(struct thb_conn *c, const uint8_t *data, size_t len)
{
    size_t off = 0;
    while (c->state != THB_CONN_CLOSED) {
        size_t avail = len - off;
        const uint8_t *p = data + off;
        if (avail < 2) {
            break;
        }
        size_t rem = 0, mult = 1, i = 1;
        bool complete = false;
        while (i < avail && i <= 4) {
            rem += (size_t)(p[i] & 0x7F) * mult;
            mult *= 128;
            if (!(p[i++] & 0x80)) {
                complete = true;
                break;
            }
        }
        if (!complete) {
            if (i > 4) {
                lost(c);
            }
            break;
        }
        if (avail < i + rem) {
            break;
        }
        uint8_t hdr = p[0];
        const uint8_t *body = p + i;
        off += i + rem;
        int type = hdr >> 4;
        if (type == 2) { /* CONNACK */
            c->connack_rc = rem >= 2 ? body[1] : 255;
            if (c->connack_rc == 0) {
                set_state(c, THB_CONN_READY);
            } else {
                thb_conn_close(c);
                set_state(c, THB_CONN_CLOSED);
            }
            continue;
        }
        if (type == THB_PUBLISH && ((hdr >> 1) & 3) == 1 && rem >= 2) {
            size_t tl = ((size_t)body[0] << 8) | body[1];
            if (2 + tl + 2 <= rem) {
                thb_send_puback(c, (uint16_t)((body[2 + tl] << 8) | body[3 + tl]));
            }
        }
        if (c->loop->on_packet) {
            c->loop->on_packet(c, hdr, body, rem, c->loop->arg);
        }
    }
    return c->state == THB_CONN_CLOSED ? (size_t)-1 : off;
}

/*
 * Read into one buffer shared by all connections; only an incomplete packet
 * at the end is copied into the connection's own buffer (10,000 idle
 * connections must not each hold a 64 KB read buffer).
 */
static void on_readable(struct thb_conn *c)
{
    static uint8_t scratch[READ_CHUNK];
    for (int rounds = 0; rounds < 8 && c->state != THB_CONN_CLOSED; rounds++) {
        ssize_t n = recv(c->fd, scratch, sizeof scratch, 0);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            break;
        }
        if (n <= 0) {
            lost(c); /* EOF or error */
            break;
        }
        size_t used;
        if (c->in.len == c->in.off) {
            used = dispatch(c, scratch, (size_t)n);
            if (used == (size_t)-1) {
                break;
            }
            if (used < (size_t)n) {
                c->in.off = c->in.len = 0;
                thb_buf_reserve(&c->in, (size_t)n - used);
                memcpy(c->in.data, scratch + used, (size_t)n - used);
                c->in.len = (size_t)n - used;
            }
        } else {
            thb_buf_reserve(&c->in, (size_t)n);
            memcpy(c->in.data + c->in.len, scratch, (size_t)n);
            c->in.len += (size_t)n;
            /* dispatch() may run callbacks that close c (freeing the buffer): work on it
             * only while the connection lives. */
            used = dispatch(c, c->in.data + c->in.off, c->in.len - c->in.off);
            if (used == (size_t)-1) {
                break;
            }
            c->in.off += used;
            if (c->in.off == c->in.len) {
                c->in.off = c->in.len = 0;
            }
        }
        if ((size_t)n < sizeof scratch) {
            break;
        }
    }
    if (c->state != THB_CONN_CLOSED && c->out.len > c->out.off) {
        thb_conn_flush(c); /* PUBACKs and replies queued by the callbacks */
    }
}

int thb_loop_step(struct thb_loop *l, int timeout_ms)
{
    struct epoll_event evs[512];
    int n = epoll_wait(l->ep, evs, 512, timeout_ms);
    if (n < 0) {
        return 0;
    }
    for (int i = 0; i < n; i++) {
        struct thb_conn *c = evs[i].data.ptr;
        if (c->fd < 0) {
            continue;
        }
        if (c->state == THB_CONN_TCP) {
            int err = 0;
            socklen_t sl = sizeof err;
            if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &sl) != 0 || err != 0) {
                lost(c);
                continue;
            }
            if (!(evs[i].events & (EPOLLOUT | EPOLLIN))) {
                continue;
            }
            c->state = THB_CONN_CONNACK;
            thb_conn_flush(c);
        }
        if (c->fd >= 0 && (evs[i].events & EPOLLOUT)) {
            thb_conn_flush(c);
        }
        if (c->fd >= 0 && (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
            on_readable(c);
        }
    }
    return n;
}
