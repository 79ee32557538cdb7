/*
 * gw_tlsfront.c - the MQTT/TLS front (tlsfront.h): TLS with an optional
 * client certificate on the MQTT/TLS port, the first packet rewritten for
 * clients that authenticate with their certificate (core/mqtt_connect.h,
 * core/x509.h), then a byte relay to the broker's plain listener.
 *
 * One thread, level-triggered epoll, non-blocking sockets. Each connection
 * has a buffer per direction; after any event on either side pump() moves
 * what it can until nothing moves, then sets what each socket waits for.
 * A side that closes or fails closes the whole connection once what it
 * sent has been handed on, as an MQTT client or broker closing does.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "dps_front.h"
#include "gateway.h" /* th_gateway_addr_text */
#include "mqtt_connect.h"
#include "th_limits.h"
#include "tlsfront.h"
#include "x509.h"

/* Per direction and connection: one TLS record's worth (16 KB) keeps a connection at about
 * 40 KB with OpenSSL's own buffers; a first packet may grow its buffer to FIRST_MAX. */
#define BUF_SIZE (16 * 1024)
#define FIRST_MAX (64 * 1024)
/* A client has this long to finish its TLS handshake and send its CONNECT (as the gateway's
 * HTTPS port allows for its handshake). */
#define FIRST_PACKET_TIMEOUT_S 10
/* A credential must fit the password field (two length bytes). */
#define MAX_CRED 65535

struct fconn;

/* What an epoll event points at: one side of a connection, or a listener (c NULL). */
struct fend {
    int fd;
    bool client;
    struct fconn *c;
};

struct fconn {
    struct th_tlsfront *f;
    struct fend cl, be; /* client (TLS) and backend (plain) */
    SSL *ssl;
    enum { HANDSHAKE, FIRST, RELAY } st;
    uint8_t *c2b; /* client -> backend: [c2b_off, c2b_len) pending */
    size_t c2b_off, c2b_len, c2b_cap;
    uint8_t b2c[BUF_SIZE]; /* backend -> client */
    size_t b2c_off, b2c_len;
    bool cl_eof, be_eof, dead;
    bool ssl_wants_write; /* the last SSL call asked for the socket to be writable */
    /* What epoll last said each socket is ready for (cleared when a read finds nothing):
     * pump() reads only a side that has something, which halves the system calls. */
    bool cl_ready, be_ready;
    bool in_round; /* already collected in this round of events */
    time_t born;   /* accepted at (CLOCK_MONOTONIC seconds) */
    uint32_t cl_mask, be_mask;
    struct fconn *next, *prev;
};

struct th_tlsfront {
    SSL_CTX *ctx;
    int ep, wake;
    struct fend listeners[TH_TLSFRONT_MAX_LISTEN];
    int nlisten;
    char *backend;
    int backend_port;
    uint8_t secret[TH_X509_SECRET_LEN];
    bool verbose;
    pthread_t thread;
    bool started;
    atomic_bool stopping;
    struct fconn *conns;
};

/* ---- listening ---------------------------------------------------------------------------- */

bool th_tlsfront_listen(const struct addrinfo *bind_ai, int port, int *fds, int *n, int *bound_port,
                        int *err_no, char *where, size_t where_size)
{
    *n = 0;
    *err_no = 0;
    where[0] = '\0';
    for (const struct addrinfo *ai = bind_ai; ai && *n < TH_TLSFRONT_MAX_LISTEN; ai = ai->ai_next) {
        if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
            continue;
        /* getaddrinfo may list one address twice (once per socket type asked for). */
        bool dup = false;
        for (const struct addrinfo *q = bind_ai; q != ai; q = q->ai_next)
            if (q->ai_addrlen == ai->ai_addrlen && !memcmp(q->ai_addr, ai->ai_addr, ai->ai_addrlen))
                dup = true;
        if (dup)
            continue;
        struct sockaddr_storage ss;
        memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
        int p = *n > 0 && bound_port ? *bound_port : port;
        if (ss.ss_family == AF_INET6)
            ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)p);
        else
            ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)p);
        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), one = 1;
        if (fd >= 0) {
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
            if (ai->ai_family == AF_INET6)
                setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        }
        if (fd < 0 || bind(fd, (struct sockaddr *)&ss, ai->ai_addrlen) != 0 ||
            listen(fd, 128) != 0) {
            *err_no = errno;
            th_gateway_addr_text(ai->ai_addr, where, where_size);
            if (fd >= 0)
                close(fd);
            for (int i = 0; i < *n; i++)
                close(fds[i]);
            *n = 0;
            return false;
        }
        if (bound_port && *n == 0) {
            socklen_t sl = sizeof ss;
            getsockname(fd, (struct sockaddr *)&ss, &sl);
            *bound_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                         : ((struct sockaddr_in *)&ss)->sin_port);
        }
        fds[(*n)++] = fd;
    }
    return true;
}

/* ---- the first packet --------------------------------------------------------------------- */

/*
 * The front credential (core/x509.h) for the client certificate on `ssl`, bound to `cid` and
 * `user`, into `cred` (MAX_CRED bytes): the whole chain, else the leaf alone (a CA-signed
 * device then needs its CA's intermediates registered). TH_OK with *clen; TH_ERR_INVAL without
 * a certificate; TH_ERR_BUFFER when even the leaf does not fit; TH_ERR_NOMEM.
 */
static th_result build_cred(SSL *ssl, const uint8_t *secret, const uint8_t *cid, size_t cid_len,
                            const uint8_t *user, size_t user_len, char *cred, size_t *clen)
{
    X509 *leaf = ssl ? SSL_get0_peer_certificate(ssl) : NULL;
    if (!secret || !leaf)
        return TH_ERR_INVAL;
    /* The leaf, then what else the client sent (the server side's chain leaves the leaf out). */
    STACK_OF(X509) *rest = SSL_get_peer_cert_chain(ssl);
    struct th_x509_der der[TH_X509_MAX_CHAIN];
    unsigned char *bufs[TH_X509_MAX_CHAIN] = {0};
    X509 *certs[TH_X509_MAX_CHAIN];
    size_t n = 0;
    th_result r = TH_ERR_NOMEM;
    certs[n++] = leaf;
    for (int i = 0; rest && i < sk_X509_num(rest) && n < TH_X509_MAX_CHAIN; i++) {
        X509 *x = sk_X509_value(rest, i);
        if (X509_cmp(x, leaf) != 0)
            certs[n++] = x;
    }
    for (size_t i = 0; i < n; i++) {
        int k = i2d_X509(certs[i], &bufs[i]);
        if (k <= 0)
            goto done;
        der[i] = (struct th_x509_der){bufs[i], (size_t)k};
    }
    r = th_x509_cred_build(secret, TH_X509_SECRET_LEN, cid, cid_len, user, user_len, der, n, cred,
                           MAX_CRED, clen);
    if (r == TH_ERR_BUFFER)
        r = th_x509_cred_build(secret, TH_X509_SECRET_LEN, cid, cid_len, user, user_len, der, 1,
                               cred, MAX_CRED, clen);
done:
    for (size_t i = 0; i < n; i++)
        OPENSSL_free(bufs[i]);
    return r;
}

char *th_tlsfront_cred(SSL *ssl, const uint8_t *secret, const char *client_id,
                       const char *username)
{
    char *cred = malloc(MAX_CRED + 1);
    size_t clen = 0;
    if (cred && build_cred(ssl, secret, (const uint8_t *)client_id, strlen(client_id),
                           (const uint8_t *)username, strlen(username), cred, &clen) == TH_OK) {
        cred[clen] = '\0';
        return cred;
    }
    free(cred);
    return NULL;
}

int th_tlsfront_rewrite_connect(SSL *ssl, const uint8_t *secret, const uint8_t *pkt, size_t len,
                                uint8_t **out, size_t *out_len)
{
    struct th_mqtt_connect c;
    X509 *leaf = ssl ? SSL_get0_peer_certificate(ssl) : NULL;
    char dps_cid[sizeof TH_DPS_CLIENT_ID_PREFIX + TH_MAX_ID_LEN];
    size_t dps_cid_len = 0;
    if (th_mqtt_connect_parse(pkt, len, &c) != TH_OK || !c.has_username)
        return 0;
    /* A registering device gets a client id no hub device can hold (core/dps_front.h). */
    bool dps = th_dps_front_client_id((const char *)c.username.ptr, c.username.len, dps_cid,
                                      sizeof dps_cid, &dps_cid_len) == TH_OK;
    if (dps) {
        c.client_id.ptr = (const uint8_t *)dps_cid;
        c.client_id.len = dps_cid_len;
    }
    bool cert = secret && leaf && !c.has_password;
    if (!dps && !cert)
        return 0;
    char *cred = NULL;
    if (cert) {
        size_t clen = 0;
        cred = malloc(MAX_CRED);
        if (!cred)
            return -1;
        /* The HMAC covers the client id as the broker will see it. Without a credential that
         * fits, the CONNECT passes on without one (the hub refuses it for having no password);
         * a DPS client still gets its client id rewritten. */
        th_result r = build_cred(ssl, secret, c.client_id.ptr, c.client_id.len, c.username.ptr,
                                 c.username.len, cred, &clen);
        if (r == TH_OK) {
            c.has_password = true;
            c.password.ptr = (const uint8_t *)cred;
            c.password.len = clen;
        } else if (r != TH_ERR_BUFFER || !dps) {
            free(cred);
            return r == TH_ERR_BUFFER ? 0 : -1;
        }
    }
    int rc;
    size_t size = th_mqtt_connect_size(&c);
    uint8_t *pk = size ? malloc(size) : NULL;
    if (pk && th_mqtt_connect_write(&c, pk, size, out_len) == TH_OK) {
        *out = pk;
        rc = 1;
    } else {
        free(pk);
        rc = size ? -1 : 0;
    }
    free(cred);
    return rc;
}

/* ---- connections -------------------------------------------------------------------------- */

static time_t mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec;
}

/* Close both sides; `notify` sends the client a close_notify first (the front's thread only,
 * where SIGPIPE is blocked), never waiting for an answer. */
static void conn_close(struct fconn *c, bool notify)
{
    struct th_tlsfront *f = c->f;
    if (notify && c->st != HANDSHAKE)
        SSL_shutdown(c->ssl);
    if (c->cl.fd >= 0) {
        epoll_ctl(f->ep, EPOLL_CTL_DEL, c->cl.fd, NULL);
        close(c->cl.fd);
    }
    if (c->be.fd >= 0) {
        epoll_ctl(f->ep, EPOLL_CTL_DEL, c->be.fd, NULL);
        close(c->be.fd);
    }
    SSL_free(c->ssl);
    free(c->c2b);
    if (c->prev)
        c->prev->next = c->next;
    else
        f->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c);
}

static void set_mask(struct th_tlsfront *f, struct fend *e, uint32_t *cur, uint32_t want)
{
    if (e->fd < 0 || *cur == want)
        return;
    struct epoll_event ev = {.events = want, .data.ptr = e};
    epoll_ctl(f->ep, EPOLL_CTL_MOD, e->fd, &ev);
    *cur = want;
}

static bool connect_backend(struct fconn *c)
{
    struct th_tlsfront *f = c->f;
    int fd;
    if (f->backend_port) {
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
        char port[16];
        snprintf(port, sizeof port, "%d", f->backend_port);
        if (getaddrinfo(f->backend, port, &hints, &ai) != 0 || !ai)
            return false;
        fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        int one = 1;
        if (fd >= 0)
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
            close(fd);
            fd = -1;
        }
        freeaddrinfo(ai);
    } else {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s", f->backend);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 &&
            errno != EINPROGRESS) {
            close(fd);
            fd = -1;
        }
    }
    if (fd < 0)
        return false;
    c->be.fd = fd;
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = &c->be};
    c->be_mask = EPOLLOUT;
    return epoll_ctl(f->ep, EPOLL_CTL_ADD, fd, &ev) == 0;
}

/* An SSL call's outcome: 1 progress, 0 would block, -1 the connection is over. */
static int ssl_outcome(struct fconn *c, int ret)
{
    switch (SSL_get_error(c->ssl, ret)) {
    case SSL_ERROR_WANT_READ:
        c->ssl_wants_write = false;
        return 0;
    case SSL_ERROR_WANT_WRITE:
        c->ssl_wants_write = true;
        return 0;
    default:
        ERR_clear_error();
        return -1;
    }
}

/* The first packet is complete in c2b: rewrite it if it asks for X.509, then relay. */
static bool first_packet(struct fconn *c)
{
    size_t avail = c->c2b_len - c->c2b_off, plen;
    th_result r = th_mqtt_packet_length(c->c2b + c->c2b_off, avail, &plen);
    if (r == TH_OK && plen > c->c2b_cap - c->c2b_off && plen <= FIRST_MAX) {
        /* A CONNECT with a large will: room for all of it (c2b_off is 0 before the first). */
        uint8_t *nb = realloc(c->c2b, plen);
        if (!nb) {
            c->dead = true;
            return false;
        }
        c->c2b = nb;
        c->c2b_cap = plen;
    }
    if (r == TH_ERR_BUFFER || (r == TH_OK && plen > avail && plen <= c->c2b_cap - c->c2b_off))
        return false; /* wait for more */
    if (r == TH_OK && plen <= avail) {
        uint8_t *pk = NULL;
        size_t pk_len = 0;
        int rw = th_tlsfront_rewrite_connect(c->ssl, c->f->secret, c->c2b + c->c2b_off, plen, &pk,
                                             &pk_len);
        if (rw < 0) {
            c->dead = true;
            return false;
        }
        if (rw > 0) {
            size_t rest = avail - plen, cap = pk_len + rest > BUF_SIZE ? pk_len + rest : BUF_SIZE;
            uint8_t *nb = malloc(cap);
            if (!nb) {
                free(pk);
                c->dead = true;
                return false;
            }
            memcpy(nb, pk, pk_len);
            memcpy(nb + pk_len, c->c2b + c->c2b_off + plen, rest);
            free(pk);
            free(c->c2b);
            c->c2b = nb;
            c->c2b_cap = cap;
            c->c2b_off = 0;
            c->c2b_len = pk_len + rest;
            if (c->f->verbose)
                fprintf(stderr, "twinhub front: fd %d | client certificate | credential added\n",
                        c->cl.fd);
        }
    }
    /* Malformed or too long for the buffer: passed on as it is, for the broker to refuse. */
    c->st = RELAY;
    if (!connect_backend(c)) {
        fprintf(stderr, "twinhub front: cannot reach the broker at %s: %s\n", c->f->backend,
                strerror(errno));
        c->dead = true;
        return false;
    }
    return true;
}

/* Move what can move; true when anything did. */
static bool pump_once(struct fconn *c)
{
    bool moved = false;
    if (c->st == HANDSHAKE) {
        int ret = SSL_accept(c->ssl);
        if (ret == 1) {
            c->st = FIRST;
            moved = true;
        } else if (ssl_outcome(c, ret) < 0) {
            c->dead = true;
        }
        return moved;
    }
    /* client -> c2b */
    if (!c->cl_eof && c->c2b_len < c->c2b_cap && (c->cl_ready || SSL_has_pending(c->ssl))) {
        int ret = SSL_read(c->ssl, c->c2b + c->c2b_len, (int)(c->c2b_cap - c->c2b_len));
        if (ret > 0) {
            c->c2b_len += (size_t)ret;
            moved = true;
            /* With read-ahead OpenSSL took what the socket held; anything it did not take
             * makes epoll (level-triggered) report the socket again. Saves a read that
             * would only say EAGAIN. */
            if (!SSL_has_pending(c->ssl))
                c->cl_ready = false;
        } else if (ssl_outcome(c, ret) < 0) {
            c->cl_eof = true;
            moved = true;
        } else {
            c->cl_ready = false;
        }
    }
    if (c->st == FIRST) {
        if (c->cl_eof) {
            c->dead = true;
            return false;
        }
        return first_packet(c) || moved;
    }
    /* c2b -> backend */
    if (c->be.fd >= 0 && c->c2b_off < c->c2b_len) {
        ssize_t w = send(c->be.fd, c->c2b + c->c2b_off, c->c2b_len - c->c2b_off, MSG_NOSIGNAL);
        if (w > 0) {
            c->c2b_off += (size_t)w;
            if (c->c2b_off == c->c2b_len)
                c->c2b_off = c->c2b_len = 0;
            moved = true;
        } else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOTCONN) {
            c->dead = true;
        }
    }
    /* backend -> b2c */
    if (c->be.fd >= 0 && !c->be_eof && c->b2c_len < sizeof c->b2c && c->be_ready) {
        size_t room = sizeof c->b2c - c->b2c_len;
        ssize_t r = recv(c->be.fd, c->b2c + c->b2c_len, room, 0);
        if (r > 0) {
            c->b2c_len += (size_t)r;
            moved = true;
            if ((size_t)r < room)
                c->be_ready = false; /* a short read emptied the socket (epoll says if not) */
        } else if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOTCONN)) {
            c->be_eof = true;
            moved = true;
        } else {
            c->be_ready = false;
        }
    }
    /* b2c -> client */
    if (c->b2c_off < c->b2c_len) {
        int ret = SSL_write(c->ssl, c->b2c + c->b2c_off, (int)(c->b2c_len - c->b2c_off));
        if (ret > 0) {
            c->b2c_off += (size_t)ret;
            if (c->b2c_off == c->b2c_len)
                c->b2c_off = c->b2c_len = 0;
            moved = true;
        } else if (ssl_outcome(c, ret) < 0) {
            c->dead = true;
        }
    }
    /* A side that ended: close once what it said has been handed on. */
    if ((c->cl_eof && c->c2b_off == c->c2b_len) || (c->be_eof && c->b2c_off == c->b2c_len))
        c->dead = true;
    return moved;
}

static void pump(struct fconn *c)
{
    while (!c->dead && pump_once(c))
        ;
    if (c->dead) {
        conn_close(c, true);
        return;
    }
    uint32_t cl = 0, be = 0;
    if (c->st == HANDSHAKE) {
        cl = c->ssl_wants_write ? EPOLLOUT : EPOLLIN;
    } else {
        if ((!c->cl_eof && c->c2b_len < c->c2b_cap) || (c->ssl_wants_write == false && c->b2c_len))
            cl |= EPOLLIN;
        if (c->b2c_off < c->b2c_len || c->ssl_wants_write)
            cl |= EPOLLOUT;
        if (c->be.fd >= 0) {
            if (!c->be_eof && c->b2c_len < sizeof c->b2c)
                be |= EPOLLIN;
            if (c->c2b_off < c->c2b_len)
                be |= EPOLLOUT;
        }
    }
    set_mask(c->f, &c->cl, &c->cl_mask, cl);
    set_mask(c->f, &c->be, &c->be_mask, be);
}

static void accept_all(struct th_tlsfront *f, int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct fconn *c = calloc(1, sizeof *c);
        SSL *ssl = SSL_new(f->ctx);
        uint8_t *buf = malloc(BUF_SIZE);
        if (!c || !ssl || !buf || SSL_set_fd(ssl, fd) != 1) {
            free(c);
            free(buf);
            SSL_free(ssl);
            close(fd);
            continue;
        }
        c->f = f;
        c->ssl = ssl;
        c->c2b = buf;
        c->c2b_cap = BUF_SIZE;
        c->cl = (struct fend){fd, true, c};
        c->be = (struct fend){-1, false, c};
        c->cl_mask = EPOLLIN;
        c->born = mono_s();
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &c->cl};
        if (epoll_ctl(f->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
            SSL_free(ssl);
            free(buf);
            free(c);
            close(fd);
            continue;
        }
        c->next = f->conns;
        if (f->conns)
            f->conns->prev = c;
        f->conns = c;
    }
}

static void *front_thread(void *arg)
{
    struct th_tlsfront *f = arg;
    struct epoll_event evs[64];
    /* A write to a client that went away must fail with EPIPE, not stop the process. */
    sigset_t pipe;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe, NULL);
    time_t swept = mono_s();
    while (!atomic_load(&f->stopping)) {
        int n = epoll_wait(f->ep, evs, 64, 1000);
        if (n < 0 && errno != EINTR)
            break;
        /* Note what each side is ready for, then pump each connection once per round, even
         * when both of its sides fired. */
        struct fconn *round[64];
        int nround = 0;
        for (int i = 0; i < n; i++) {
            struct fend *e = evs[i].data.ptr;
            if (!e)
                continue; /* the wake-up eventfd */
            if (!e->c) {
                accept_all(f, e->fd);
                continue;
            }
            struct fconn *c = e->c;
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP)) {
                if (e->client)
                    c->cl_ready = true;
                else
                    c->be_ready = true;
            }
            if (!c->in_round) {
                c->in_round = true;
                round[nround++] = c;
            }
        }
        for (int i = 0; i < nround; i++) {
            round[i]->in_round = false;
            pump(round[i]); /* may free it: nothing below touches it again */
        }
        /* Once a second (after the events: they may point at what this closes): clients that
         * never finished their handshake or first packet. */
        time_t now = mono_s();
        if (now != swept) {
            swept = now;
            for (struct fconn *c = f->conns, *next; c; c = next) {
                next = c->next;
                if (c->st != RELAY && now - c->born > FIRST_PACKET_TIMEOUT_S) {
                    if (f->verbose)
                        fprintf(stderr, "twinhub front: fd %d | no CONNECT within %d s | closed\n",
                                c->cl.fd, FIRST_PACKET_TIMEOUT_S);
                    conn_close(c, true);
                }
            }
        }
    }
    return NULL;
}

static int accept_any(int preverify_ok, X509_STORE_CTX *ctx)
{
    (void)preverify_ok;
    (void)ctx;
    return 1; /* every certificate: the hub decides in the CONNACK */
}

struct th_tlsfront *th_tlsfront_start(const struct th_tlsfront_config *cfg, const int *fds,
                                      int nfds, char *err, size_t errsize)
{
    struct th_tlsfront *f = calloc(1, sizeof *f);
    if (!f) {
        for (int i = 0; i < nfds; i++)
            close(fds[i]);
        snprintf(err, errsize, "out of memory");
        return NULL;
    }
    f->ep = epoll_create1(EPOLL_CLOEXEC);
    f->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    f->backend = strdup(cfg->backend);
    f->backend_port = cfg->backend_port;
    f->verbose = cfg->verbose;
    memcpy(f->secret, cfg->secret, TH_X509_SECRET_LEN);
    for (int i = 0; i < nfds && i < TH_TLSFRONT_MAX_LISTEN; i++)
        f->listeners[f->nlisten++] = (struct fend){fds[i], false, NULL};
    for (int i = TH_TLSFRONT_MAX_LISTEN; i < nfds; i++)
        close(fds[i]);
    f->ctx = SSL_CTX_new(TLS_server_method());
    if (f->ep < 0 || f->wake < 0 || !f->backend || !f->ctx) {
        snprintf(err, errsize, "cannot set up the MQTT/TLS front: out of resources");
        th_tlsfront_stop(f);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(f->ctx, TLS1_2_VERSION);
    SSL_CTX_set_read_ahead(f->ctx, 1); /* one read() per burst instead of two per record */
    SSL_CTX_set_mode(f->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* No resumption: a resumed session would not show the client's certificate chain again. */
    SSL_CTX_set_session_cache_mode(f->ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(f->ctx, SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_num_tickets(f->ctx, 0);
    SSL_CTX_set_verify(f->ctx, SSL_VERIFY_PEER, accept_any);
    if (SSL_CTX_use_certificate_chain_file(f->ctx, cfg->cert_file) != 1 ||
        SSL_CTX_use_PrivateKey_file(f->ctx, cfg->key_file, SSL_FILETYPE_PEM) != 1) {
        snprintf(err, errsize,
                 "cannot load %s and %s for the MQTT/TLS port; delete them so that serve issues "
                 "new ones",
                 cfg->cert_file, cfg->key_file);
        ERR_clear_error();
        th_tlsfront_stop(f);
        return NULL;
    }
    struct epoll_event wev = {.events = EPOLLIN, .data.ptr = NULL};
    bool ok = epoll_ctl(f->ep, EPOLL_CTL_ADD, f->wake, &wev) == 0;
    for (int i = 0; ok && i < f->nlisten; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &f->listeners[i]};
        ok = epoll_ctl(f->ep, EPOLL_CTL_ADD, f->listeners[i].fd, &ev) == 0;
    }
    if (!ok || pthread_create(&f->thread, NULL, front_thread, f) != 0) {
        snprintf(err, errsize, "cannot start the MQTT/TLS front: %s", strerror(errno));
        th_tlsfront_stop(f);
        return NULL;
    }
    f->started = true;
    return f;
}

void th_tlsfront_stop(struct th_tlsfront *f)
{
    if (!f)
        return;
    atomic_store(&f->stopping, true);
    if (f->started) {
        uint64_t one = 1;
        if (write(f->wake, &one, sizeof one) < 0) {
            /* the eventfd cannot be full after one write; nothing else to do */
        }
        pthread_join(f->thread, NULL);
    }
    while (f->conns)
        conn_close(f->conns, false);
    for (int i = 0; i < f->nlisten; i++)
        close(f->listeners[i].fd);
    if (f->wake >= 0)
        close(f->wake);
    if (f->ep >= 0)
        close(f->ep);
    SSL_CTX_free(f->ctx);
    OPENSSL_cleanse(f->secret, sizeof f->secret);
    free(f->backend);
    free(f);
}
