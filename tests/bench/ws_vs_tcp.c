/*
 * ws_vs_tcp.c - benchmark: twin GET round trips over MQTT/WebSockets through
 * the gateway (wss://, /$iothub/websocket) against MQTT over plain TCP and
 * MQTT over TLS straight to the broker, in the same run, on the same hub.
 * The gateway is meant to add no latency worth measuring (mosquitto's own
 * WebSocket listener adds ~100 ms per message: mosquitto-plugin-facts.md
 * section 3.4), so the ratio WS/TLS should stay close to 1.
 *
 * It starts `twinhub serve` on free loopback ports (the gateway on a free
 * port too: this client does not care about 443), connects the development
 * device over each transport in turn, and measures sequential round trips
 * ($iothub/twin/GET -> $iothub/twin/res/200) in interleaved rounds.
 *
 * Usage: ws_vs_tcp [--twinhub PATH] [--count N] [--rounds N]
 * Exit status: 0 after printing the results, 1 when the hub or a transport
 * could not be used, 2 on a usage error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include "registry.h" /* TH_DEV_* */
#include "sas.h"
#include "util.h"

#ifndef WVT_DEFAULT_TWINHUB
#define WVT_DEFAULT_TWINHUB "twinhub"
#endif
#define HUB_NAME "twinhub.localhost"
#define READY_TIMEOUT_MS 20000
#define IO_TIMEOUT_MS 5000
#define WARMUP 50

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ws_vs_tcp: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- the hub ----------------------------------------------------------------------------- */

static pid_t hub_pid;
static char work_dir[256];

static int free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        die("cannot find a free port: %s", strerror(errno));
    close(fd);
    return ntohs(a.sin_port);
}

static void stop_hub(void)
{
    if (hub_pid > 0) {
        kill(hub_pid, SIGTERM);
        waitpid(hub_pid, NULL, 0);
        hub_pid = 0;
    }
    if (work_dir[0]) {
        char cmd[512];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", work_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "ws_vs_tcp: could not remove %s\n", work_dir);
    }
}

/* Start serve and wait for "twinhub: ready"; ports[3] = plain, TLS, HTTPS. */
static void start_hub(const char *twinhub, int ports[3])
{
    snprintf(work_dir, sizeof work_dir, "/tmp/twinhub-wsbench-XXXXXX");
    if (!mkdtemp(work_dir))
        die("cannot create a temporary directory: %s", strerror(errno));
    char certs[300], p[3][16];
    snprintf(certs, sizeof certs, "%s/certs", work_dir);
    for (int i = 0; i < 3; i++) {
        ports[i] = free_port();
        snprintf(p[i], sizeof p[i], "%d", ports[i]);
    }
    int out[2];
    if (pipe(out) != 0)
        die("pipe: %s", strerror(errno));
    hub_pid = fork();
    if (hub_pid == 0) {
        dup2(out[1], STDOUT_FILENO);
        close(out[0]);
        close(out[1]);
        execl(twinhub, twinhub, "serve", "--mqtt-port", p[0], "--mqtts-port", p[1], "--https-port",
              p[2], "--cert-dir", certs, (char *)NULL);
        fprintf(stderr, "ws_vs_tcp: cannot run %s: %s\n", twinhub, strerror(errno));
        _exit(127);
    }
    close(out[1]);
    char acc[16384];
    size_t len = 0;
    int64_t deadline = now_us() + READY_TIMEOUT_MS * 1000LL;
    while (!memmem(acc, len, "twinhub: ready\n", 15)) {
        struct pollfd pfd = {.fd = out[0], .events = POLLIN};
        int left = (int)((deadline - now_us()) / 1000);
        if (left <= 0 || poll(&pfd, 1, left) <= 0)
            die("twinhub serve was not ready within %d s", READY_TIMEOUT_MS / 1000);
        ssize_t n = read(out[0], acc + len, sizeof acc - len - 1);
        if (n <= 0)
            die("twinhub serve exited before it was ready (see its messages above)");
        len += (size_t)n;
        if (len >= sizeof acc - 1)
            len = 0; /* keep reading; the banner is long but the ready line is short */
    }
    /* Leave serve's stdout open but unread: it prints nothing more. */
}

/* ---- one transport ----------------------------------------------------------------------- */

enum kind { K_TCP, K_TLS, K_WS };
static const char *const kind_name[] = {"MQTT/TCP", "MQTT/TLS", "MQTT/WSS"};

struct conn {
    enum kind kind;
    int fd;
    SSL *ssl;
    uint8_t in[1 << 20]; /* decoded MQTT bytes */
    size_t in_len;
    uint8_t raw[1 << 16]; /* WebSocket bytes not yet decoded */
    size_t raw_len;
};

static void send_all(struct conn *c, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len) {
        ssize_t n = c->ssl ? SSL_write(c->ssl, p, (int)len) : send(c->fd, p, len, MSG_NOSIGNAL);
        if (n <= 0)
            die("%s: send failed", kind_name[c->kind]);
        p += n;
        len -= (size_t)n;
    }
}

static size_t recv_some(struct conn *c, uint8_t *buf, size_t size)
{
    struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
    if (!(c->ssl && SSL_pending(c->ssl)) && poll(&pfd, 1, IO_TIMEOUT_MS) <= 0)
        die("%s: no answer within %d ms", kind_name[c->kind], IO_TIMEOUT_MS);
    ssize_t n = c->ssl ? SSL_read(c->ssl, buf, (int)size) : recv(c->fd, buf, size, 0);
    if (n <= 0)
        die("%s: connection closed", kind_name[c->kind]);
    return (size_t)n;
}

/* MQTT bytes out: as they are, or in one masked binary WebSocket frame. */
static void mqtt_send(struct conn *c, const uint8_t *p, size_t n)
{
    if (c->kind != K_WS) {
        send_all(c, p, n);
        return;
    }
    uint8_t frame[16 + 4096];
    size_t h = 0;
    if (n > 4096)
        die("packet too large for this benchmark");
    frame[h++] = 0x82;
    if (n < 126) {
        frame[h++] = (uint8_t)(0x80 | n);
    } else {
        frame[h++] = 0x80 | 126;
        frame[h++] = (uint8_t)(n >> 8);
        frame[h++] = (uint8_t)n;
    }
    uint8_t mask[4];
    RAND_bytes(mask, 4);
    memcpy(frame + h, mask, 4);
    h += 4;
    for (size_t i = 0; i < n; i++)
        frame[h + i] = p[i] ^ mask[i & 3];
    send_all(c, frame, h + n);
}

/* Read until c->in holds at least `need` MQTT bytes. */
static void mqtt_fill(struct conn *c, size_t need)
{
    while (c->in_len < need) {
        if (c->kind != K_WS) {
            c->in_len += recv_some(c, c->in + c->in_len, sizeof c->in - c->in_len);
            continue;
        }
        c->raw_len += recv_some(c, c->raw + c->raw_len, sizeof c->raw - c->raw_len);
        /* Decode every complete server frame (unmasked) into c->in. */
        for (;;) {
            if (c->raw_len < 2)
                break;
            size_t len = c->raw[1] & 0x7f, at = 2;
            if (len == 126) {
                if (c->raw_len < 4)
                    break;
                len = (size_t)c->raw[2] << 8 | c->raw[3];
                at = 4;
            } else if (len == 127) {
                if (c->raw_len < 10)
                    break;
                len = 0;
                for (int i = 0; i < 8; i++)
                    len = len << 8 | c->raw[2 + i];
                at = 10;
            }
            if (c->raw_len < at + len)
                break;
            int op = c->raw[0] & 0x0f;
            if (op == 8)
                die("MQTT/WSS: the gateway closed the WebSocket");
            if (op <= 2) {
                memcpy(c->in + c->in_len, c->raw + at, len);
                c->in_len += len;
            }
            memmove(c->raw, c->raw + at + len, c->raw_len - at - len);
            c->raw_len -= at + len;
        }
    }
}

/* One MQTT packet: returns its first byte; body and len describe the rest (valid until the next
 * call). */
static size_t pending_consume;
static uint8_t mqtt_read(struct conn *c, const uint8_t **body, size_t *len)
{
    if (pending_consume) {
        memmove(c->in, c->in + pending_consume, c->in_len - pending_consume);
        c->in_len -= pending_consume;
        pending_consume = 0;
    }
    mqtt_fill(c, 2);
    size_t rl = 0, mul = 1, at = 1;
    for (;;) {
        mqtt_fill(c, at + 1);
        uint8_t b = c->in[at++];
        rl += (b & 0x7f) * mul;
        mul *= 128;
        if (!(b & 0x80))
            break;
    }
    mqtt_fill(c, at + rl);
    *body = c->in + at;
    *len = rl;
    pending_consume = at + rl;
    return c->in[0];
}

static size_t put_str(uint8_t *p, const char *s)
{
    size_t n = strlen(s);
    p[0] = (uint8_t)(n >> 8);
    p[1] = (uint8_t)n;
    memcpy(p + 2, s, n);
    return n + 2;
}

static size_t put_remaining(uint8_t *p, size_t n)
{
    size_t i = 0;
    do {
        uint8_t b = n % 128;
        n /= 128;
        p[i++] = (uint8_t)(b | (n ? 0x80 : 0));
    } while (n);
    return i;
}

static SSL_CTX *tls_ctx(const char *ca)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx || SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1)
        die("cannot load the hub's CA %s", ca);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    return ctx;
}

static void open_conn(struct conn *c, enum kind kind, int port, SSL_CTX *ctx)
{
    memset(c, 0, sizeof *c);
    c->kind = kind;
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int one = 1;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&a, sizeof a) != 0)
        die("%s: cannot connect to port %d: %s", kind_name[kind], port, strerror(errno));
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (kind != K_TCP) {
        c->ssl = SSL_new(ctx);
        SSL_set_fd(c->ssl, c->fd);
        SSL_set_tlsext_host_name(c->ssl, "localhost");
        SSL_set1_host(c->ssl, "localhost");
        if (SSL_connect(c->ssl) != 1)
            die("%s: TLS handshake failed", kind_name[kind]);
    }
    if (kind == K_WS) {
        const char *req = "GET /$iothub/websocket?iothub-no-client-cert=true HTTP/1.1\r\n"
                          "Host: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                          "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n";
        send_all(c, req, strlen(req));
        char head[2048];
        size_t n = 0;
        while (!memmem(head, n, "\r\n\r\n", 4)) {
            if (n == sizeof head)
                die("MQTT/WSS: handshake answer too long");
            n += recv_some(c, (uint8_t *)head + n, sizeof head - n);
        }
        if (strncmp(head, "HTTP/1.1 101", 12) != 0)
            die("MQTT/WSS: the gateway refused the upgrade: %.*s", (int)strcspn(head, "\r"), head);
        char *end = memmem(head, n, "\r\n\r\n", 4) + 4;
        memcpy(c->raw, end, n - (size_t)(end - head));
        c->raw_len = n - (size_t)(end - head);
    }

    /* CONNECT as the development device, then subscribe to twin responses. */
    char token[512], user[256];
    if (th_sas_sign(HUB_NAME "/devices/" TH_DEV_DEVICE_ID, TH_DEV_DEVICE_KEY,
                    th_now_us() / 1000000 + 3600, NULL, token, sizeof token) != TH_OK)
        die("cannot sign a token");
    snprintf(user, sizeof user, "%s/%s/?api-version=2021-04-12", HUB_NAME, TH_DEV_DEVICE_ID);
    uint8_t body[1024], pkt[1100];
    size_t b = 0;
    b += put_str(body + b, "MQTT");
    body[b++] = 4;    /* MQTT 3.1.1 */
    body[b++] = 0xc2; /* username, password, clean session */
    body[b++] = 0;
    body[b++] = 60;
    b += put_str(body + b, TH_DEV_DEVICE_ID);
    b += put_str(body + b, user);
    b += put_str(body + b, token);
    size_t h = 0;
    pkt[h++] = 0x10;
    h += put_remaining(pkt + h, b);
    memcpy(pkt + h, body, b);
    mqtt_send(c, pkt, h + b);
    const uint8_t *rb;
    size_t rl;
    pending_consume = 0;
    if (mqtt_read(c, &rb, &rl) != 0x20 || rl < 2 || rb[1] != 0)
        die("%s: CONNECT refused", kind_name[kind]);
    b = 0;
    body[b++] = 0;
    body[b++] = 1;
    b += put_str(body + b, "$iothub/twin/res/#");
    body[b++] = 0;
    h = 0;
    pkt[h++] = 0x82;
    h += put_remaining(pkt + h, b);
    memcpy(pkt + h, body, b);
    mqtt_send(c, pkt, h + b);
    if (mqtt_read(c, &rb, &rl) != 0x90)
        die("%s: no SUBACK", kind_name[kind]);
}

static void close_conn(struct conn *c)
{
    uint8_t disc[2] = {0xe0, 0};
    mqtt_send(c, disc, 2);
    if (c->ssl) {
        SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
    }
    close(c->fd);
}

/* One twin GET round trip in microseconds. */
static int64_t round_trip(struct conn *c, unsigned rid)
{
    char topic[64];
    uint8_t pkt[128];
    int tl = snprintf(topic, sizeof topic, "$iothub/twin/GET/?$rid=%u", rid);
    size_t h = 0;
    pkt[h++] = 0x30;
    h += put_remaining(pkt + h, (size_t)tl + 2);
    h += put_str(pkt + h, topic);
    char want[32];
    int wl = snprintf(want, sizeof want, "$rid=%u", rid);
    int64_t t0 = now_us();
    mqtt_send(c, pkt, h);
    for (;;) {
        const uint8_t *b;
        size_t len;
        uint8_t type = mqtt_read(c, &b, &len);
        if ((type & 0xf0) != 0x30 || len < 2)
            continue;
        size_t tlen = (size_t)b[0] << 8 | b[1];
        if (tlen + 2 > len)
            die("%s: malformed PUBLISH", kind_name[c->kind]);
        const char *t = (const char *)b + 2;
        const char *r = memmem(t, tlen, want, (size_t)wl);
        if (r && (r + wl == t + tlen || r[wl] == '&')) {
            if (tlen < 20 || memcmp(t, "$iothub/twin/res/200", 20) != 0)
                die("%s: twin GET answered %.*s", kind_name[c->kind], (int)tlen, t);
            return now_us() - t0;
        }
    }
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    const char *twinhub = WVT_DEFAULT_TWINHUB;
    int count = 2000, rounds = 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--twinhub") && i + 1 < argc)
            twinhub = argv[++i];
        else if (!strcmp(argv[i], "--count") && i + 1 < argc)
            count = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: ws_vs_tcp [--twinhub PATH] [--count N] [--rounds N]\n");
            return 2;
        }
    }
    if (count < 1 || rounds < 1) {
        fprintf(stderr, "ws_vs_tcp: --count and --rounds must be at least 1\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    int ports[3];
    start_hub(twinhub, ports);
    atexit(stop_hub);
    char ca[300];
    snprintf(ca, sizeof ca, "%s/certs/ca.pem", work_dir);
    SSL_CTX *ctx = tls_ctx(ca);
    static struct conn conn;
    int64_t *samples[3];
    size_t nsamples[3] = {0};
    const int port_of[3] = {ports[0], ports[1], ports[2]};
    for (int k = 0; k < 3; k++)
        if (!(samples[k] = calloc((size_t)count * (size_t)rounds, sizeof **samples)))
            die("out of memory");
    unsigned rid = 1;
    printf("twin GET round trips: %d rounds x %d per transport, sequential, one device\n", rounds,
           count);
    for (int r = 0; r < rounds; r++) {
        for (int k = 0; k < 3; k++) {
            open_conn(&conn, (enum kind)k, port_of[k], ctx);
            for (int i = 0; i < WARMUP; i++)
                round_trip(&conn, rid++);
            for (int i = 0; i < count; i++)
                samples[k][nsamples[k]++] = round_trip(&conn, rid++);
            close_conn(&conn);
        }
    }
    double mean[3], p50[3], p99[3];
    for (int k = 0; k < 3; k++) {
        qsort(samples[k], nsamples[k], sizeof **samples, cmp_i64);
        int64_t sum = 0;
        for (size_t i = 0; i < nsamples[k]; i++)
            sum += samples[k][i];
        mean[k] = (double)sum / (double)nsamples[k];
        p50[k] = (double)samples[k][nsamples[k] / 2];
        p99[k] = (double)samples[k][nsamples[k] * 99 / 100];
        printf("  %-9s mean %7.1f us   p50 %7.1f us   p99 %7.1f us   (%zu round trips)\n",
               kind_name[k], mean[k], p50[k], p99[k], nsamples[k]);
        free(samples[k]);
    }
    printf("ratio MQTT/WSS over MQTT/TLS: mean %.2f, p50 %.2f, p99 %.2f\n",
           mean[K_WS] / mean[K_TLS], p50[K_WS] / p50[K_TLS], p99[K_WS] / p99[K_TLS]);
    printf("ratio MQTT/WSS over MQTT/TCP: mean %.2f, p50 %.2f, p99 %.2f\n",
           mean[K_WS] / mean[K_TCP], p50[K_WS] / p50[K_TCP], p99[K_WS] / p99[K_TCP]);
    SSL_CTX_free(ctx);
    return 0;
}
