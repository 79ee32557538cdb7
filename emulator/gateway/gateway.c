/*
 * gateway.c - life cycle of the HTTPS gateway (gateway.h): the listening
 * sockets, the libwebsockets context and its service thread, the protocol
 * table, the once-a-second tick, and the choice of the policy the gateway
 * signs in to the broker with (the byte buffer is gw_buf.c, logging gw_log.c).
 *
 * The listening sockets are ours, not lws's: serve binds them before the
 * broker starts (every address of --bind, like mosquitto), so a busy or
 * privileged port is reported with its errno. Each is adopted into lws as a
 * raw descriptor; accepted connections are adopted with TLS on a vhost that
 * has a server certificate but no listener of its own
 * (CONTEXT_PORT_NO_LISTEN_SERVER). HTTP/1.1 and WebSocket framing are done
 * in gw_http.c and gw_ws.c on top of lws's raw-socket role, because the
 * Debian lws 4.1.6 cannot list custom request headers (the C2D endpoint
 * takes its properties from iothub-app-* headers).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>
#include <arpa/inet.h>

#include <openssl/ssl.h>

#include "gw_private.h"
#include "json.h"
#include "registry.h"
#include "th_file.h"
#include "util.h"

/* A state directory's policies.json or a --registry file. */
#define MAX_STATE_FILE_BYTES (64u * 1024 * 1024)

/* ---- listening sockets ------------------------------------------------------------------- */

void th_gateway_addr_text(const struct sockaddr *sa, char *buf, size_t size)
{
    const void *a = sa->sa_family == AF_INET6
                        ? (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr
                        : (const void *)&((const struct sockaddr_in *)sa)->sin_addr;
    if (!inet_ntop(sa->sa_family, a, buf, (socklen_t)size))
        snprintf(buf, size, "?");
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void gateway_free(struct th_gateway *gw)
{
    for (int i = 0; i < gw->nlisten; i++)
        if (gw->listen_fds[i] >= 0)
            close(gw->listen_fds[i]);
    free(gw->hub_name);
    free(gw->cert_file);
    free(gw->key_file);
    free(gw->broker_host);
    free(gw->policy_name);
    free(gw->policy_key);
    free(gw->device_gateway);
    gw_dash_free(gw->dash);
    pthread_mutex_destroy(&gw->lock);
    free(gw);
}

struct th_gateway *th_gateway_listen(const struct th_gateway_config *cfg, int *err_no, char *where,
                                     size_t where_size)
{
    *err_no = 0;
    where[0] = '\0';
    struct th_gateway *gw = calloc(1, sizeof *gw);
    if (!gw) {
        *err_no = ENOMEM;
        return NULL;
    }
    pthread_mutex_init(&gw->lock, NULL);
    atomic_init(&gw->state, TH_GATEWAY_STARTING);
    atomic_init(&gw->stopping, false);
    gw->https_port = cfg->https_port;
    gw->verbose = cfg->verbose;
    gw->next_call_id = 1;
    gw->hub_name = dup_or_null(cfg->hub_name);
    gw->cert_file = dup_or_null(cfg->cert_file);
    gw->key_file = dup_or_null(cfg->key_file);
    gw->policy_name = dup_or_null(cfg->policy_name);
    gw->policy_key = dup_or_null(cfg->policy_key);
    gw->device_gateway = dup_or_null(cfg->device_gateway);
    gw->dash = gw_dash_new(gw, cfg->https_port);
    if (cfg->front_secret) {
        memcpy(gw->front_secret, cfg->front_secret, sizeof gw->front_secret);
        gw->has_front_secret = true;
    }
    if (!gw->hub_name || !gw->cert_file || !gw->key_file || !gw->policy_name || !gw->policy_key ||
        !gw->dash || (cfg->device_gateway && !gw->device_gateway)) {
        gateway_free(gw);
        *err_no = ENOMEM;
        return NULL;
    }
    for (const struct addrinfo *ai = cfg->bind_ai; ai; ai = ai->ai_next) {
        if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
            continue;
        struct sockaddr_storage ss;
        memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
        if (ss.ss_family == AF_INET6)
            ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)cfg->https_port);
        else
            ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)cfg->https_port);
        /* getaddrinfo may list one address twice (once per socket type asked for). */
        bool dup = false;
        for (const struct addrinfo *p = cfg->bind_ai; p != ai; p = p->ai_next)
            if (p->ai_addrlen == ai->ai_addrlen && !memcmp(p->ai_addr, ai->ai_addr, ai->ai_addrlen))
                dup = true;
        if (dup)
            continue;
        if (gw->nlisten == GW_MAX_LISTEN)
            break;
        th_gateway_addr_text(ai->ai_addr, where, where_size);
        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        int one = 1;
        if (fd < 0) {
            *err_no = errno;
            gateway_free(gw);
            return NULL;
        }
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (ai->ai_family == AF_INET6)
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&ss, ai->ai_addrlen) != 0 || listen(fd, 128) != 0) {
            *err_no = errno;
            close(fd);
            gateway_free(gw);
            return NULL;
        }
        gw->listen_fds[gw->nlisten++] = fd;
    }
    if (gw->nlisten == 0) {
        *err_no = EADDRNOTAVAIL;
        gateway_free(gw);
        return NULL;
    }
    where[0] = '\0';
    return gw;
}

/* ---- the lws side ------------------------------------------------------------------------ */

/* A listening socket is readable: accept everything pending and adopt it with TLS. */
static void accept_all(struct th_gateway *gw, int lfd)
{
    for (;;) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
                gw_log(gw, true, "accept failed: %s", strerror(errno));
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return;
        }
        int one = 1;
        if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6)
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        lws_sock_file_fd_type desc = {.sockfd = fd};
        /* lws closes fd itself when adoption fails. */
        if (!lws_adopt_descriptor_vhost(gw->vhost, LWS_ADOPT_SOCKET | LWS_ADOPT_ALLOW_SSL, desc,
                                        "twinhub-https", NULL))
            gw_log(gw, true, "could not take a new connection (out of memory?)");
    }
}

static struct th_gateway *gw_of_wsi(struct lws *wsi)
{
    return lws_context_user(lws_get_context(wsi));
}

/* The listening sockets (adopted raw) and the cross-thread wake-up. */
static int listen_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                           size_t len)
{
    struct th_gateway *gw = gw_of_wsi(wsi);
    (void)user;
    (void)in;
    (void)len;
    switch (reason) {
    case LWS_CALLBACK_RAW_RX_FILE:
        accept_all(gw, lws_get_socket_fd(wsi));
        return 0;
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        /* Broadcast to every protocol of every vhost: handled here only. */
        if (gw && gw->ctx)
            gw_ctl_drain(gw);
        return 0;
    default:
        return 0;
    }
}

/* tx_packet_size: lws hands at most this much to the socket per write (default 4 KB). */
static const struct lws_protocols protocols[] = {
    {"twinhub-https", gw_http_callback, sizeof(struct gw_conn), 0, 0, NULL, GW_IO_CHUNK},
    {"twinhub-listen", listen_callback, 0, 0, 0, NULL, 0},
    {"twinhub-broker", gw_broker_callback, 0, 0, 0, NULL, GW_IO_CHUNK},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static void tick(lws_sorted_usec_list_t *sul)
{
    struct th_gateway *gw = lws_container_of(sul, struct th_gateway, sul_tick);
    gw_ctl_tick(gw, th_mono_ms());
    lws_sul_schedule(gw->ctx, 0, &gw->sul_tick, tick, 1000 * LWS_US_PER_MS);
}

static void *service_thread(void *arg)
{
    struct th_gateway *gw = arg;
    while (!atomic_load(&gw->stopping)) {
        if (lws_service(gw->ctx, 0) < 0)
            break;
    }
    return NULL;
}

bool th_gateway_start(struct th_gateway *gw, const char *broker_host, int broker_port, char *err,
                      size_t errsize)
{
    gw->broker_host = strdup(broker_host);
    gw->broker_port = broker_port;
    if (!gw->broker_host) {
        snprintf(err, errsize, "out of memory");
        return false;
    }
    lws_set_log_level(gw->verbose ? LLL_ERR | LLL_WARN : LLL_ERR, gw_log_lws);

    struct lws_context_creation_info ci;
    memset(&ci, 0, sizeof ci);
    ci.port = CONTEXT_PORT_NO_LISTEN;
    ci.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS | LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    ci.user = gw;
    ci.timeout_secs = 10;              /* TLS handshake */
    ci.pt_serv_buf_size = GW_IO_CHUNK; /* the read buffer: one read takes up to this much */
    gw->ctx = lws_create_context(&ci);
    if (!gw->ctx) {
        snprintf(err, errsize, "cannot create the HTTPS gateway's event loop");
        return false;
    }

    struct lws_context_creation_info vi;
    memset(&vi, 0, sizeof vi);
    vi.port = CONTEXT_PORT_NO_LISTEN_SERVER;
    vi.vhost_name = "twinhub";
    vi.protocols = protocols;
    vi.ssl_cert_filepath = gw->cert_file;
    vi.ssl_private_key_filepath = gw->key_file;
    vi.alpn = "http/1.1"; /* never h2: HTTP is spoken by gw_http.c */
    vi.ssl_options_set = SSL_OP_NO_TLSv1 | SSL_OP_NO_TLSv1_1 | SSL_OP_NO_SSLv3;
    /* The broker connections are plain: no need to load the system's CA list (~20 ms). */
    vi.options = LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT | LWS_SERVER_OPTION_DISABLE_OS_CA_CERTS;
    /* An optional client certificate, any accepted here (protocol 0 answers
     * LWS_CALLBACK_OPENSSL_PERFORM_CLIENT_CERT_VERIFICATION with 0): the hub decides in the
     * CONNACK of MQTT over WebSockets, as on the MQTT/TLS port. */
    if (gw->has_front_secret)
        vi.options |= LWS_SERVER_OPTION_REQUIRE_VALID_OPENSSL_CLIENT_CERT |
                      LWS_SERVER_OPTION_PEER_CERT_NOT_REQUIRED;
    vi.timeout_secs = 10;
    gw->vhost = lws_create_vhost(gw->ctx, &vi);
    if (!gw->vhost) {
        snprintf(err, errsize,
                 "cannot set up TLS for the HTTPS gateway with %s and %s; delete them so that "
                 "serve issues new ones",
                 gw->cert_file, gw->key_file);
        return false;
    }
    for (int i = 0; i < gw->nlisten; i++) {
        lws_sock_file_fd_type desc = {.filefd = gw->listen_fds[i]};
        gw->listen_fds[i] = -1; /* lws owns it from here, even on failure */
        if (!lws_adopt_descriptor_vhost(gw->vhost, LWS_ADOPT_RAW_FILE_DESC, desc, "twinhub-listen",
                                        NULL)) {
            snprintf(err, errsize, "cannot watch the HTTPS listening socket");
            return false;
        }
    }
    if (!gw_ctl_init(gw, err, errsize))
        return false;
    lws_sul_schedule(gw->ctx, 0, &gw->sul_tick, tick, 1000 * LWS_US_PER_MS);
    if (pthread_create(&gw->thread, NULL, service_thread, gw) != 0) {
        snprintf(err, errsize, "cannot start the HTTPS gateway thread: %s", strerror(errno));
        return false;
    }
    gw->thread_started = true;
    return true;
}

enum th_gateway_state th_gateway_state(struct th_gateway *gw, char *why, size_t why_size)
{
    enum th_gateway_state st = (enum th_gateway_state)atomic_load(&gw->state);
    if (why && why_size) {
        pthread_mutex_lock(&gw->lock);
        snprintf(why, why_size, "%s", gw->why);
        pthread_mutex_unlock(&gw->lock);
    }
    return st;
}

void th_gateway_stop(struct th_gateway *gw)
{
    if (!gw)
        return;
    atomic_store(&gw->stopping, true);
    /* libmosquitto first: its callbacks wake the lws loop through the context. */
    gw_ctl_shutdown(gw);
    if (gw->thread_started) {
        lws_cancel_service(gw->ctx);
        pthread_join(gw->thread, NULL);
        gw->thread_started = false;
    }
    if (gw->ctx) {
        lws_sul_cancel(&gw->sul_tick);
        gw_dash_stop(gw);
        lws_context_destroy(gw->ctx);
        gw->ctx = NULL;
    }
    /* Calls still listed answered nobody: their connections are gone with the context. */
    while (gw->calls) {
        struct gw_call *c = gw->calls;
        gw->calls = c->next;
        free(c);
    }
    while (gw->inbox_head) {
        struct gw_inbox_item *it = gw->inbox_head;
        gw->inbox_head = it->next;
        free(it->payload);
        free(it);
    }
    gateway_free(gw);
}

/* ---- the gateway's own policy ------------------------------------------------------------ */

static cJSON *read_json(const char *path, char *err, size_t errsize)
{
    size_t len = 0;
    char *text = th_file_read(path, MAX_STATE_FILE_BYTES, &len);
    if (!text) {
        snprintf(err, errsize, "cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    cJSON *doc = NULL;
    struct th_error e = {0};
    if (th_json_parse(text, len, MAX_STATE_FILE_BYTES, 64, &doc, &e) != TH_OK)
        th_json_error_about(&e, path, err, errsize);
    free(text);
    return doc;
}

bool th_gateway_pick_policy(const char *state_dir, const char *registry_file, char *name,
                            size_t name_size, char *key, size_t key_size, char *err, size_t errsize)
{
    struct th_registry *reg = th_registry_new();
    struct th_error e = {0};
    bool ok = reg != NULL, restored = false;
    if (!ok)
        snprintf(err, errsize, "out of memory");
    /* A state directory that holds state is authoritative (its policies.json, or none). */
    if (ok && state_dir) {
        char path[4096];
        snprintf(path, sizeof path, "%s/policies.json", state_dir);
        if (access(path, F_OK) == 0) {
            restored = true;
            cJSON *arr = read_json(path, err, errsize);
            bool loaded = arr && th_registry_restore_policies(reg, arr, &e) == TH_OK;
            cJSON_Delete(arr);
            if (!loaded) {
                /* The broker sets such a file aside and starts with the hub's default
                 * policies (persist.c); the gateway signs in with those. */
                th_registry_free(reg);
                reg = th_registry_new();
                ok = reg && th_registry_add_default_policies(reg) == TH_OK;
                if (!ok)
                    snprintf(err, errsize, "out of memory");
            }
        } else {
            snprintf(path, sizeof path, "%s/devices", state_dir);
            DIR *d = opendir(path);
            for (struct dirent *de; d && (de = readdir(d));) {
                size_t n = strlen(de->d_name);
                if (n > 5 && !strcmp(de->d_name + n - 5, ".json"))
                    restored = true;
            }
            if (d)
                closedir(d);
        }
    }
    /* Otherwise the registry file, then the hub's default policies (kept when redefined). */
    if (ok && !restored && registry_file) {
        cJSON *doc = read_json(registry_file, err, errsize);
        ok = doc && th_registry_load(reg, doc, th_now_us(), &e) == TH_OK;
        if (doc && !ok)
            snprintf(err, errsize, "registry file %s is invalid: %s", registry_file, e.message);
        cJSON_Delete(doc);
    }
    if (ok && !restored && th_registry_add_default_policies(reg) != TH_OK) {
        snprintf(err, errsize, "out of memory");
        ok = false;
    }
    const unsigned all = TH_PERM_REGISTRY_READ | TH_PERM_REGISTRY_WRITE | TH_PERM_SERVICE_CONNECT;
    const struct th_policy *best = NULL;
    cJSON *list = ok ? th_registry_policies_json(reg) : NULL;
    const cJSON *it;
    cJSON_ArrayForEach(it, list)
    {
        const char *n = th_json_string(it, "keyName", NULL);
        const struct th_policy *p = n ? th_registry_policy(reg, n, strlen(n)) : NULL;
        if (!p || (p->perms & all) != all)
            continue;
        if (!best || !strcmp(p->name, "iothubowner"))
            best = p;
        if (!strcmp(p->name, "iothubowner"))
            break;
    }
    if (ok && !best) {
        snprintf(err, errsize,
                 "no shared access policy with RegistryRead, RegistryWrite and ServiceConnect "
                 "(such as iothubowner) for the HTTPS gateway to sign in with; add one to the "
                 "registry, or pass --https-port 0");
        ok = false;
    }
    if (ok) {
        snprintf(name, name_size, "%s", best->name);
        snprintf(key, key_size, "%s", best->primary_key);
    }
    cJSON_Delete(list);
    th_registry_free(reg);
    return ok;
}
