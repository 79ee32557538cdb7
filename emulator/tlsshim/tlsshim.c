/*
 * tlsshim.c - the TLS shim preloaded into mosquitto (tlsshim.h,
 * docs/protocol.md "X.509 client certificates").
 *
 * mosquitto 2.0.11 (src/net.c, lib/net_mosq.c, src/mux_epoll.c) creates an
 * SSL per accepted connection with SSL_new on its listener's SSL_CTX, calls
 * SSL_accept once, then reads only through SSL_read (net__read; the fixed
 * header a byte at a time) and checks SSL_pending after each packet
 * (SSL_DATA_PENDING). Its calls go through the PLT, so these definitions win;
 * the real ones come from dlsym(RTLD_NEXT, ...).
 *
 * Threads: mosquitto accepts, reads and runs the plugin's tick on its main
 * thread; the list of connections still in their first packet has a mutex
 * anyway (it is touched once per connection, not per read).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/ssl.h>

#include "mqtt_connect.h"
#include "tls_rewrite.h"
#include "tlsshim.h"
#include "x509.h"

#define API __attribute__((visibility("default")))

/* What the plugin looks up (tlsshim.h). */
API int th_tlsshim_arm(const uint8_t *s, size_t len);
API int th_tlsshim_sweep(void);

/* A first packet up to this size is rewritten; a larger one (a CONNECT with a big will) passes
 * on as it is, as the relay front did. mosquitto's own max_packet_size still applies. */
#define FIRST_MAX (64 * 1024)

/* A connection in its first packet (the SSL's ex_data): collecting `buf` up to `need` bytes,
 * then serving `out`. */
struct first {
    uint8_t *buf;
    size_t have, need, cap;
    uint8_t *out;
    size_t out_len, out_off;
    bool serving;
    bool swept;
    int fd;
    time_t born; /* CLOCK_MONOTONIC seconds */
    struct first *next, *prev;
};

/* ex_data values besides a struct first: the connection passes straight through, or failed
 * to set up (its reads end it). */
static char done_mark, fail_mark, ctx_mark;
#define DONE ((void *)&done_mark)
#define FAIL ((void *)&fail_mark)

static int (*real_read)(SSL *, void *, int);
static int (*real_pending)(const SSL *);
static int (*real_accept)(SSL *);
static void (*real_set_verify)(SSL_CTX *, int, SSL_verify_cb);

static int ssl_idx = -1, ctx_idx = -1;
static pthread_once_t idx_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct first *waiting; /* connections not yet past their first packet */
/* How many SSLs have a first-packet record or FAIL in their ex_data: while none has, SSL_read
 * and SSL_pending pass straight through without the ex_data lookup (callgrind: the lookup was
 * about 300 of the broker's 19,800 instructions per QoS 1 message). */
static atomic_int unfinished;
static uint8_t secret[TH_X509_SECRET_LEN];
static bool armed;

__attribute__((constructor)) static void resolve(void)
{
    real_read = (int (*)(SSL *, void *, int))dlsym(RTLD_NEXT, "SSL_read");
    real_pending = (int (*)(const SSL *))dlsym(RTLD_NEXT, "SSL_pending");
    real_accept = (int (*)(SSL *))dlsym(RTLD_NEXT, "SSL_accept");
    real_set_verify =
        (void (*)(SSL_CTX *, int, SSL_verify_cb))dlsym(RTLD_NEXT, "SSL_CTX_set_verify");
}

static time_t mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return ts.tv_sec;
}

static void unlink_locked(struct first *f)
{
    if (f->prev)
        f->prev->next = f->next;
    else if (waiting == f)
        waiting = f->next;
    if (f->next)
        f->next->prev = f->prev;
    f->next = f->prev = NULL;
}

static void first_free(struct first *f)
{
    pthread_mutex_lock(&lock);
    unlink_locked(f);
    pthread_mutex_unlock(&lock);
    free(f->buf);
    free(f->out);
    free(f);
}

/* SSL_free's ex_data callback. */
static void on_ssl_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    if (ptr && ptr != DONE) {
        atomic_fetch_sub(&unfinished, 1);
        if (ptr != FAIL)
            first_free(ptr);
    }
}

static void make_indexes(void)
{
    ssl_idx = SSL_get_ex_new_index(0, "twinhub tlsshim", NULL, NULL, on_ssl_free);
    ctx_idx = SSL_CTX_get_ex_new_index(0, "twinhub tlsshim", NULL, NULL, NULL);
}

static int accept_any(int preverify_ok, X509_STORE_CTX *ctx)
{
    (void)preverify_ok, (void)ctx;
    return 1; /* every certificate: the hub decides in the CONNACK */
}

API void SSL_CTX_set_verify(SSL_CTX *ctx, int mode, SSL_verify_cb cb)
{
    pthread_once(&idx_once, make_indexes);
    if ((mode & SSL_VERIFY_PEER) && (mode & SSL_VERIFY_FAIL_IF_NO_PEER_CERT) && ctx_idx >= 0 &&
        ssl_idx >= 0 && SSL_CTX_set_ex_data(ctx, ctx_idx, &ctx_mark) == 1) {
        real_set_verify(ctx, SSL_VERIFY_PEER, accept_any);
        /* A resumed session would not show the client's certificate chain again. */
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
        SSL_CTX_set_num_tickets(ctx, 0);
        return;
    }
    real_set_verify(ctx, mode, cb);
}

API int SSL_accept(SSL *ssl)
{
    if (ssl_idx >= 0 && !SSL_get_ex_data(ssl, ssl_idx) &&
        SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ctx_idx) == &ctx_mark) {
        struct first *f = calloc(1, sizeof *f);
        if (f && !(f->buf = malloc(f->cap = 256))) {
            free(f);
            f = NULL;
        }
        /* Out of memory: FAIL, so that the connection ends at its first read rather than
         * pass unrewritten (a DPS client would then keep the device's client id). */
        if (SSL_set_ex_data(ssl, ssl_idx, f ? (void *)f : FAIL) != 1) {
            if (f)
                free(f->buf);
            free(f);
            return -1; /* not even that: SSL_ERROR_SYSCALL, mosquitto drops the connection */
        }
        atomic_fetch_add(&unfinished, 1);
        if (f) {
            f->need = 2;
            f->fd = SSL_get_fd(ssl);
            f->born = mono_s();
            pthread_mutex_lock(&lock);
            f->next = waiting;
            if (waiting)
                waiting->prev = f;
            waiting = f;
            pthread_mutex_unlock(&lock);
        }
    }
    return real_accept(ssl);
}

/* Collect the whole first packet, then rewrite it: 1 when f serves, else the real SSL_read's
 * outcome to hand to mosquitto (WANT_READ, end, error). */
static int collect(SSL *ssl, struct first *f)
{
    for (;;) {
        while (f->have < f->need) {
            int r = real_read(ssl, f->buf + f->have, (int)(f->need - f->have));
            if (r <= 0)
                return r;
            f->have += (size_t)r;
        }
        size_t plen = 0;
        th_result pr = th_mqtt_packet_length(f->buf, f->have, &plen);
        if (pr == TH_ERR_BUFFER) {
            f->need = f->have + 1; /* one more length byte */
            continue;
        }
        if (pr == TH_OK && plen > f->have && plen <= FIRST_MAX) {
            if (plen > f->cap) {
                uint8_t *nb = realloc(f->buf, plen);
                if (!nb)
                    return 0; /* out of memory: the connection ends */
                f->buf = nb;
                f->cap = plen;
            }
            f->need = plen;
            continue;
        }
        uint8_t *pk = NULL;
        size_t pk_len = 0;
        int rw = 0;
        if (pr == TH_OK && plen == f->have)
            rw = th_tlsfront_rewrite_connect(ssl, armed ? secret : NULL, f->buf, f->have, &pk,
                                             &pk_len);
        if (rw < 0)
            return 0;
        if (rw > 0) {
            f->out = pk;
            f->out_len = pk_len;
        } else {
            /* Unchanged, malformed or larger than FIRST_MAX: what was read goes on as it is
             * (the rest of a large packet then passes straight through), for the broker to
             * take or refuse. */
            f->out = f->buf;
            f->out_len = f->have;
            f->buf = NULL;
        }
        f->serving = true;
        pthread_mutex_lock(&lock);
        unlink_locked(f); /* complete: no longer swept */
        pthread_mutex_unlock(&lock);
        return 1;
    }
}

/* SSL_read while some connection is in its first packet (kept out of line, so that the common
 * path below is a load, a test and a jump). */
static __attribute__((noinline)) int read_slow(SSL *ssl, void *buf, int num)
{
    void *st = SSL_get_ex_data(ssl, ssl_idx);
    if (!st || st == DONE)
        return real_read(ssl, buf, num);
    if (st == FAIL)
        return 0;
    struct first *f = st;
    if (!f->serving) {
        int r = collect(ssl, f);
        if (r <= 0)
            return r;
    }
    size_t n = f->out_len - f->out_off;
    if (num < 0)
        num = 0;
    if (n > (size_t)num)
        n = (size_t)num;
    memcpy(buf, f->out + f->out_off, n);
    f->out_off += n;
    if (f->out_off == f->out_len) {
        SSL_set_ex_data(ssl, ssl_idx, DONE); /* the slot exists: cannot fail */
        first_free(f);
        atomic_fetch_sub(&unfinished, 1);
    }
    return (int)n;
}

API int SSL_read(SSL *ssl, void *buf, int num)
{
    if (__builtin_expect(atomic_load_explicit(&unfinished, memory_order_relaxed) == 0, 1))
        return real_read(ssl, buf, num);
    return read_slow(ssl, buf, num);
}

static __attribute__((noinline)) int pending_slow(const SSL *ssl)
{
    int real = real_pending(ssl);
    void *st = SSL_get_ex_data(ssl, ssl_idx);
    if (st && st != DONE && st != FAIL && ((struct first *)st)->serving) {
        struct first *f = st;
        return real + (int)(f->out_len - f->out_off);
    }
    return real;
}

API int SSL_pending(const SSL *ssl)
{
    if (__builtin_expect(atomic_load_explicit(&unfinished, memory_order_relaxed) == 0, 1))
        return real_pending(ssl);
    return pending_slow(ssl);
}

API int th_tlsshim_arm(const uint8_t *s, size_t len)
{
    if (!s || len != sizeof secret)
        return -1;
    memcpy(secret, s, sizeof secret);
    armed = true;
    return TH_TLSSHIM_VERSION;
}

API int th_tlsshim_sweep(void)
{
    int n = 0;
    pthread_mutex_lock(&lock);
    if (waiting) {
        time_t now = mono_s();
        for (struct first *f = waiting; f; f = f->next) {
            if (!f->swept && now - f->born > TH_TLSSHIM_FIRST_PACKET_TIMEOUT_S && f->fd >= 0) {
                /* The broker sees the end of the stream and closes the connection itself. */
                shutdown(f->fd, SHUT_RDWR);
                f->swept = true;
                n++;
            }
        }
    }
    pthread_mutex_unlock(&lock);
    return n;
}
