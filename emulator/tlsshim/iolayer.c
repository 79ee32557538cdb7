/*
 * iolayer.c - the broker I/O layer of the shim (iolayer.h, docs/architecture.md
 * "emulator/tlsshim", docs/performance.md "The broker's I/O layer").
 *
 * mosquitto 2.0.11 spends most of a small message's CPU in system calls, not
 * in its own code (measured: docs/performance.md):
 * - it reads a packet's fixed header one byte at a time, each byte a read(2)
 *   (lib/packet_mosq.c, packet__read): three or four reads per packet;
 * - around every packet it sends it adds EPOLLOUT to the socket's epoll
 *   registration and removes it again (packet__write calls mux__add_out and
 *   mux__remove_out; src/mux_epoll.c tries EPOLL_CTL_ADD, gets EEXIST, then
 *   EPOLL_CTL_MOD): four epoll_ctl calls per packet, none of which changes
 *   what the next epoll_wait reports when the write completes at once;
 * - it writes every packet with a write(2) of its own, also the answers to
 *   one client that sent many requests in one burst.
 *
 * This layer, preloaded into mosquitto with the rest of the shim, interposes
 * epoll_ctl, epoll_wait, read, write, shutdown, close, accept and accept4
 * (mosquitto and OpenSSL call them through the PLT) for the broker's own
 * epoll set, which it recognises as the one its main thread first waits on:
 * - epoll_ctl on that set records the registration mosquitto wants and
 *   returns; just before the next epoll_wait the registrations that differ
 *   from the kernel's are applied, one call each. A socket whose EPOLLOUT was
 *   added and removed between two waits costs nothing. EPOLL_CTL_DEL is
 *   applied at once.
 * - read on a socket registered there fills a buffer of IO_CHUNK bytes and
 *   hands mosquitto what it asked for; what is left over (at most IO_CHUNK - 1
 *   bytes per socket, the first packets of a burst) is kept for its next reads.
 *   A socket with bytes kept is reported readable by the next epoll_wait (an
 *   EPOLLIN event added to the kernel's, and the wait does not block), so
 *   mosquitto's loop goes on exactly as if the bytes were still in the
 *   kernel: one packet per socket per loop pass, in order. End of stream and
 *   errors come after the kept bytes, as the kernel gives them.
 * - write on such a socket is held (write() below says how long and how much)
 *   and handed to the kernel at the end of the loop pass, so that a burst's
 *   answers to one client share their system calls.
 * - close, and EPOLL_CTL_DEL, drop a socket's kept bytes and state before the
 *   descriptor is released, and accept clears any state of the number it
 *   returns, so nothing kept for one connection can reach another that gets
 *   the same descriptor number.
 *
 * Threads: mosquitto accepts, reads, writes and waits on its main thread;
 * the plugin's worker threads (the state-dir loader) read files. Only reads
 * and writes from the thread that waits on the broker's set are buffered; the
 * per-socket state is that thread's. A descriptor is marked (atomically) only while it is
 * one of the broker's registered sockets, which a worker's file descriptor
 * cannot be, so a worker's read costs one load and passes straight through.
 *
 * TWINHUB_BROKER_IO=plain in mosquitto's environment turns the layer off
 * (every call passes straight through), for comparison and diagnosis.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "iolayer.h"

#define API __attribute__((visibility("default")))

/* What the plugin looks up (iolayer.h). */
API int th_iolayer_get_stats(struct th_iolayer_stats *out);

/* What one read(2) asks the kernel for. */
#define IO_CHUNK 16384
/* Descriptors above this many pass straight through (the table is sized from RLIMIT_NOFILE up
 * to this, and only the entries of descriptors in use are ever touched). */
#define IO_MAX_FDS (1 << 20)
/* Output held per socket at most; a write beyond it waits for the kernel, as without the layer. */
#define IO_OUT_CAP (64 * 1024)
/* A client's output is held at most this long while its own burst is being read. */
#define IO_HOLD_NS 500000
/* At most this many readable events per wait for sockets with kept bytes. */
#define IO_MAX_KEPT_READY 256
/* The epoll flags the layer keeps itself; a registration with any other (EPOLLET, EPOLLONESHOT,
 * EPOLLEXCLUSIVE, ...) passes straight through and is not followed. */
#define IO_PLAIN_EVENTS (EPOLLIN | EPOLLOUT | EPOLLPRI | EPOLLERR | EPOLLHUP | EPOLLRDHUP)

enum kernel_state { K_UNKNOWN, K_ABSENT, K_PRESENT };

struct io_fd {
    atomic_bool tracked;   /* registered (as mosquitto last asked) in the broker's set */
    unsigned char kstate;  /* what the kernel has, when known */
    bool dirty;            /* on the dirty list: the registration may differ from the kernel's */
    bool listed;           /* on the kept list: may hold kept bytes */
    uint32_t kev, dev;     /* events: the kernel's, and the wanted */
    uint64_t kdata, ddata; /* epoll data: the kernel's, and the wanted */
    uint8_t *kept;         /* bytes read from the kernel, not yet handed to mosquitto */
    uint32_t kept_off, kept_len;
    uint8_t *out; /* bytes mosquitto wrote, not yet given to the kernel */
    uint32_t out_off, out_len, out_cap;
    bool out_listed; /* on the output list */
    bool stalled;    /* the kernel took only part of out: waiting for EPOLLOUT */
    int out_err;     /* the error a write of out met; mosquitto's next write returns it */
};

static bool active;
static int nfds;
static struct io_fd *fds;
static int *dirty_list, ndirty;
static int *kept_list, nkept;
static int *out_list, nout;
static struct timespec out_since; /* since when output has been held (IO_HOLD_NS) */
static int loop_epfd = -1;
static pthread_t loop_thread;
static uint8_t chunk[IO_CHUNK]; /* the loop thread's read buffer */
static struct th_iolayer_stats stats;

static int (*real_epoll_ctl)(int, int, int, struct epoll_event *);
static int (*real_epoll_wait)(int, struct epoll_event *, int, int);
static ssize_t (*real_read)(int, void *, size_t);
static ssize_t (*real_write)(int, const void *, size_t);
static int (*real_shutdown)(int, int);
static int (*real_close)(int);
static int (*real_accept)(int, struct sockaddr *, socklen_t *);
static int (*real_accept4)(int, struct sockaddr *, socklen_t *, int);

/*
 * EARLY_CALL: a library preloaded after the shim (the broker's allocator, serve.c
 * find_broker_malloc) may run its constructor, and call read or close, before io_init has
 * resolved the real functions; until then every interposed call goes to the kernel directly
 * (the layer is not active yet either).
 */
__attribute__((constructor)) static void io_init(void)
{
    real_epoll_ctl = (int (*)(int, int, int, struct epoll_event *))dlsym(RTLD_NEXT, "epoll_ctl");
    real_epoll_wait = (int (*)(int, struct epoll_event *, int, int))dlsym(RTLD_NEXT, "epoll_wait");
    real_read = (ssize_t(*)(int, void *, size_t))dlsym(RTLD_NEXT, "read");
    real_write = (ssize_t(*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
    real_shutdown = (int (*)(int, int))dlsym(RTLD_NEXT, "shutdown");
    real_close = (int (*)(int))dlsym(RTLD_NEXT, "close");
    real_accept = (int (*)(int, struct sockaddr *, socklen_t *))dlsym(RTLD_NEXT, "accept");
    real_accept4 = (int (*)(int, struct sockaddr *, socklen_t *, int))dlsym(RTLD_NEXT, "accept4");
    const char *mode = getenv("TWINHUB_BROKER_IO");
    if (mode && strcmp(mode, "plain") == 0)
        return;
    struct rlimit rl;
    rlim_t n = IO_MAX_FDS;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_max != RLIM_INFINITY && rl.rlim_max < n)
        n = rl.rlim_max;
    nfds = (int)n;
    fds = calloc((size_t)nfds, sizeof *fds);
    dirty_list = calloc((size_t)nfds, sizeof *dirty_list);
    kept_list = calloc((size_t)nfds, sizeof *kept_list);
    out_list = calloc((size_t)nfds, sizeof *out_list);
    if (!fds || !dirty_list || !kept_list || !out_list || !real_epoll_ctl || !real_epoll_wait ||
        !real_read || !real_write || !real_shutdown || !real_close || !real_accept ||
        !real_accept4) {
        free(fds), free(dirty_list), free(kept_list), free(out_list);
        fds = NULL;
        nfds = 0;
        return; /* the layer stays off: every call passes through */
    }
    active = true;
}

static inline struct io_fd *slot(int fd)
{
    return fd >= 0 && fd < nfds ? &fds[fd] : NULL;
}

static inline bool on_loop_thread(void)
{
    return loop_epfd >= 0 && pthread_equal(pthread_self(), loop_thread);
}

static void drop_kept(struct io_fd *s)
{
    free(s->kept);
    s->kept = NULL;
    s->kept_off = s->kept_len = 0;
}

static void drop_out(struct io_fd *s)
{
    free(s->out);
    s->out = NULL;
    s->out_off = s->out_len = s->out_cap = 0;
}

static void mark_dirty(int fd, struct io_fd *s)
{
    if (!s->dirty) {
        s->dirty = true;
        dirty_list[ndirty++] = fd;
    }
}

/* The events the kernel should report for a socket: mosquitto's, and EPOLLOUT while the layer
 * waits to hand the kernel the rest of the socket's output. */
static inline uint32_t wanted(const struct io_fd *s)
{
    return s->dev | (s->stalled ? (uint32_t)EPOLLOUT : 0);
}

/*
 * Give the kernel a socket's held output. On EAGAIN the rest stays (stalled: EPOLLOUT is asked
 * for, and the rest goes when the kernel reports it); on another error the output is dropped and
 * the error kept for mosquitto's next write, which is where it would have met it.
 */
static void flush_out(int fd, struct io_fd *s)
{
    int saved = errno;
    while (s->out_off < s->out_len) {
        ssize_t w = real_write(fd, s->out + s->out_off, s->out_len - s->out_off);
        stats.kernel_writes++;
        if (w > 0) {
            s->out_off += (uint32_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!s->stalled) {
                s->stalled = true;
                mark_dirty(fd, s);
            }
            errno = saved;
            return;
        }
        s->out_err = w < 0 ? errno : EPIPE;
        break;
    }
    drop_out(s);
    if (s->stalled) {
        s->stalled = false;
        mark_dirty(fd, s);
    }
    errno = saved;
}

/* Hand the kernel the held output of every socket (all), or of every socket whose own input is
 * not still being read from kept bytes (!all). Stalled sockets wait for their EPOLLOUT. */
static void flush_held(bool all)
{
    int keep = 0;
    for (int i = 0; i < nout; i++) {
        int fd = out_list[i];
        struct io_fd *s = &fds[fd];
        if (s->out_len && !s->stalled && (all || !s->kept))
            flush_out(fd, s);
        if (s->out_len)
            out_list[keep++] = fd;
        else
            s->out_listed = false;
    }
    nout = keep;
    if (all)
        clock_gettime(CLOCK_MONOTONIC, &out_since);
}

static int64_t ns_since(const struct timespec *t)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)(now.tv_sec - t->tv_sec) * 1000000000 + (now.tv_nsec - t->tv_nsec);
}

/* Forget everything about a descriptor that is being released or was just handed out. Touches
 * nothing for a descriptor the layer never followed (a worker's file). */
static void forget(int fd)
{
    struct io_fd *s = slot(fd);
    if (!s || (!atomic_load_explicit(&s->tracked, memory_order_relaxed) && !s->kept && !s->out &&
               !s->out_err && !s->stalled && s->kstate == K_UNKNOWN))
        return;
    atomic_store(&s->tracked, false);
    drop_kept(s);
    drop_out(s);
    s->stalled = false;
    s->out_err = 0;
    s->kstate = K_UNKNOWN;
    /* dirty, listed and out_listed stay: the lists drop the entry when they next look at it. */
}

static int apply(int fd, struct io_fd *s)
{
    struct epoll_event ev = {.events = wanted(s), .data.u64 = s->ddata};
    int op = s->kstate == K_PRESENT ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    int rc = real_epoll_ctl(loop_epfd, op, fd, &ev);
    if (rc != 0 && errno == EEXIST)
        rc = real_epoll_ctl(loop_epfd, EPOLL_CTL_MOD, fd, &ev);
    else if (rc != 0 && errno == ENOENT)
        rc = real_epoll_ctl(loop_epfd, EPOLL_CTL_ADD, fd, &ev);
    stats.epoll_ctl_applied++;
    if (rc == 0) {
        s->kstate = K_PRESENT;
        s->kev = ev.events;
        s->kdata = s->ddata;
    } else {
        s->kstate = K_UNKNOWN; /* mosquitto's next change tries again */
    }
    return rc;
}

/* Bring the kernel's registrations in line with the wanted ones. */
static void apply_dirty(void)
{
    for (int i = 0; i < ndirty; i++) {
        int fd = dirty_list[i];
        struct io_fd *s = &fds[fd];
        s->dirty = false;
        if (!atomic_load_explicit(&s->tracked, memory_order_relaxed))
            continue;
        if (s->kstate == K_PRESENT && s->kev == wanted(s) && s->kdata == s->ddata)
            continue;
        apply(fd, s);
    }
    ndirty = 0;
}

API int epoll_ctl(int epfd, int op, int fd, struct epoll_event *event)
{
    if (!real_epoll_ctl) /* before io_init: see EARLY_CALL */
        return (int)syscall(SYS_epoll_ctl, epfd, op, fd, event);
    struct io_fd *s;
    if (!active || epfd != loop_epfd || !on_loop_thread() || !(s = slot(fd)))
        return real_epoll_ctl(epfd, op, fd, event);
    stats.epoll_ctl_calls++;
    if (op == EPOLL_CTL_DEL) {
        /* Held output stays for close() to hand over: mosquitto deletes, then closes. */
        bool was = atomic_load_explicit(&s->tracked, memory_order_relaxed);
        atomic_store(&s->tracked, false);
        drop_kept(s);
        if (s->kstate == K_ABSENT)
            return was ? 0 : (errno = ENOENT, -1);
        int rc = real_epoll_ctl(epfd, op, fd, event);
        s->kstate = K_ABSENT;
        stats.epoll_ctl_applied++;
        return rc != 0 && was ? 0 : rc;
    }
    if ((op != EPOLL_CTL_ADD && op != EPOLL_CTL_MOD) || !event ||
        (event->events & ~(uint32_t)IO_PLAIN_EVENTS)) {
        /* Not a plain registration: the kernel decides, and the layer stops following it. */
        if (s->out_len)
            flush_out(fd, s);
        atomic_store(&s->tracked, false);
        drop_kept(s);
        s->kstate = K_UNKNOWN;
        return real_epoll_ctl(epfd, op, fd, event);
    }
    bool was = atomic_load_explicit(&s->tracked, memory_order_relaxed);
    if (op == EPOLL_CTL_ADD && was)
        return errno = EEXIST, -1; /* as the kernel would answer */
    if (op == EPOLL_CTL_MOD && !was && s->kstate != K_PRESENT) {
        /* Not registered as far as the layer knows: let the kernel answer (ENOENT). */
        int rc = real_epoll_ctl(epfd, op, fd, event);
        if (rc != 0)
            return rc;
        s->kstate = K_PRESENT;
        s->kev = event->events;
        s->kdata = event->data.u64;
    }
    s->dev = event->events;
    s->ddata = event->data.u64;
    atomic_store(&s->tracked, true);
    mark_dirty(fd, s);
    return 0;
}

/* The stalled socket whose registration carries this data, or -1. */
static int stalled_fd(uint64_t data)
{
    for (int i = 0; i < nout; i++) {
        struct io_fd *s = &fds[out_list[i]];
        if (s->stalled && s->ddata == data &&
            atomic_load_explicit(&s->tracked, memory_order_relaxed))
            return out_list[i];
    }
    return -1;
}

/* The kernel's events, after the layer took its own: a stalled socket's EPOLLOUT hands over more
 * of its output, and is passed on only when mosquitto asked for it. Returns the new count. */
static int take_own_events(struct epoll_event *events, int n)
{
    bool any = false;
    for (int i = 0; i < nout && !any; i++)
        any = fds[out_list[i]].stalled;
    if (!any)
        return n;
    for (int i = 0; i < n; i++) {
        if (!(events[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            continue;
        int fd = stalled_fd(events[i].data.u64);
        if (fd < 0)
            continue;
        struct io_fd *s = &fds[fd];
        flush_out(fd, s);
        if (!(s->dev & EPOLLOUT))
            events[i].events &= ~(uint32_t)EPOLLOUT;
        if (!events[i].events) {
            events[i--] = events[--n];
        }
    }
    return n;
}

API int epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout)
{
    if (!real_epoll_wait)
        return (int)syscall(SYS_epoll_pwait, epfd, events, maxevents, timeout, NULL, _NSIG / 8);
    if (!active || maxevents <= 0)
        return real_epoll_wait(epfd, events, maxevents, timeout);
    if (loop_epfd < 0 && getpid() == gettid()) {
        loop_epfd = epfd; /* the broker's main loop: the first set its main thread waits on */
        loop_thread = pthread_self();
    }
    if (epfd != loop_epfd || !on_loop_thread())
        return real_epoll_wait(epfd, events, maxevents, timeout);
    /* Sockets with kept bytes are readable now. At most half the events (and IO_MAX_KEPT_READY)
     * go to them, so the kernel's events are not starved; the rest come in a later pass. */
    int room = maxevents / 2 < IO_MAX_KEPT_READY ? maxevents / 2 : IO_MAX_KEPT_READY;
    if (room < 1)
        room = 1;
    struct epoll_event mine[IO_MAX_KEPT_READY];
    int nready = 0, keep = 0;
    for (int i = 0; i < nkept; i++) {
        int fd = kept_list[i];
        struct io_fd *s = &fds[fd];
        if (!s->kept || !atomic_load_explicit(&s->tracked, memory_order_relaxed)) {
            s->listed = false;
            continue;
        }
        kept_list[keep++] = fd;
        if ((s->dev & EPOLLIN) && nready < room) {
            mine[nready].events = EPOLLIN;
            mine[nready].data.u64 = s->ddata;
            nready++;
        }
    }
    nkept = keep;
    /* Held output goes to the kernel at the end of every loop pass, except a client's whose own
     * burst is still being read from kept bytes: its answers wait until the burst is read (it is
     * sending, not waiting for them), so that they go in a few writes instead of one each; and
     * nothing waits longer than IO_HOLD_NS. Output to every other socket (a new connection's
     * CONNACK, a device's notification) is not held past its pass. */
    if (nout)
        flush_held(!nready || ns_since(&out_since) >= IO_HOLD_NS);
    apply_dirty();
    stats.waits++;
    if (nready) {
        int n = nready < maxevents ? real_epoll_wait(epfd, events, maxevents - nready, 0) : 0;
        if (n < 0)
            n = 0; /* EINTR and the like: the kept sockets are still ready */
        n = take_own_events(events, n);
        /* A socket may now have two events (the kernel's and this one): mosquitto then reads it
         * twice in this pass, which it handles as any two reads (a connection ended by the
         * first is skipped by the second: its socket is INVALID_SOCKET, and its context is
         * freed only at the top of the next pass). */
        memcpy(events + n, mine, (size_t)nready * sizeof *mine);
        stats.ready_from_kept += (uint64_t)nready;
        return n + nready;
    }
    int n = real_epoll_wait(epfd, events, maxevents, timeout);
    /* Only the layer's own events: 0, which mosquitto's loop takes as a wait that timed out. */
    return n > 0 ? take_own_events(events, n) : n;
}

API ssize_t read(int fd, void *buf, size_t count)
{
    if (!real_read)
        return syscall(SYS_read, fd, buf, count);
    struct io_fd *s = slot(fd);
    if (!active || !s || !atomic_load_explicit(&s->tracked, memory_order_relaxed) ||
        !on_loop_thread() || count == 0)
        return real_read(fd, buf, count);
    stats.reads++;
    if (s->kept) {
        size_t n = s->kept_len - s->kept_off;
        if (n > count)
            n = count;
        memcpy(buf, s->kept + s->kept_off, n);
        s->kept_off += (uint32_t)n;
        if (s->kept_off == s->kept_len)
            drop_kept(s);
        return (ssize_t)n;
    }
    if (count >= IO_CHUNK)
        return stats.kernel_reads++, real_read(fd, buf, count);
    ssize_t got = real_read(fd, chunk, IO_CHUNK);
    stats.kernel_reads++;
    if (got <= 0)
        return got;
    size_t n = (size_t)got < count ? (size_t)got : count;
    memcpy(buf, chunk, n);
    size_t rest = (size_t)got - n;
    if (rest) {
        s->kept = malloc(rest);
        if (!s->kept) {
            /* Out of memory: the bytes cannot be kept nor put back; the connection ends as on
             * a read error, and mosquitto drops it. */
            errno = ENOMEM;
            return -1;
        }
        memcpy(s->kept, chunk + n, rest);
        s->kept_off = 0;
        s->kept_len = (uint32_t)rest;
        if (!s->listed) {
            s->listed = true;
            kept_list[nkept++] = fd;
        }
    }
    return (ssize_t)n;
}

/*
 * write on one of the broker's sockets: straight through, unless the client is in the middle of
 * a burst (the layer still keeps bytes it sent) or output is already held for it; then held (up
 * to IO_OUT_CAP per socket) until its burst is read or IO_HOLD_NS passed (epoll_wait above), so
 * that the answers to a burst go in a few system calls instead of one each. What the kernel cannot
 * take at once is kept for its EPOLLOUT; beyond IO_OUT_CAP mosquitto gets EAGAIN and waits for
 * EPOLLOUT itself, as it does without the layer, so a client that does not read is held back by
 * mosquitto's own limits.
 */
API ssize_t write(int fd, const void *buf, size_t count)
{
    if (!real_write)
        return syscall(SYS_write, fd, buf, count);
    struct io_fd *s = slot(fd);
    if (!active || !s || !on_loop_thread() || count == 0)
        return real_write(fd, buf, count);
    if (!atomic_load_explicit(&s->tracked, memory_order_relaxed)) {
        /* No longer one of the broker's sockets (deleted from the set, about to be closed; a TLS
         * connection's close_notify is written then): what is held goes first. */
        if (s->out_len)
            flush_out(fd, s);
        if (s->out_len)
            return errno = EAGAIN, -1;
        return real_write(fd, buf, count);
    }
    stats.writes++;
    if (s->out_err) {
        errno = s->out_err;
        s->out_err = 0;
        return -1;
    }
    if (s->out_len + count > IO_OUT_CAP && s->out_len && !s->stalled)
        flush_out(fd, s);
    if (s->out_err) {
        errno = s->out_err;
        s->out_err = 0;
        return -1;
    }
    if (!s->out_len && (!s->kept || count >= IO_OUT_CAP)) {
        /* Nothing held, and the client is not in the middle of a burst (or the write is large):
         * straight through, at once. Holding here would only delay the answer a client waits
         * for (measured: a fleet connecting 64 at a time connects a quarter slower when every
         * CONNACK and SUBACK waits for the end of the loop pass). */
        stats.kernel_writes++;
        return real_write(fd, buf, count);
    }
    if (s->out_len + count > IO_OUT_CAP) {
        errno = EAGAIN; /* the kernel has not taken what is held: mosquitto waits for EPOLLOUT */
        return -1;
    }
    if (s->out_len + count > s->out_cap) {
        uint32_t cap = s->out_cap ? s->out_cap : 1024;
        while (cap < s->out_len + count)
            cap *= 2;
        if (s->out_off) {
            memmove(s->out, s->out + s->out_off, s->out_len - s->out_off);
            s->out_len -= s->out_off;
            s->out_off = 0;
        }
        uint8_t *nb = realloc(s->out, cap);
        if (!nb) {
            flush_out(fd, s); /* out of memory: what is held goes now, this write as it is */
            stats.kernel_writes++;
            return s->out_len ? (errno = EAGAIN, -1) : real_write(fd, buf, count);
        }
        s->out = nb;
        s->out_cap = cap;
    }
    memcpy(s->out + s->out_len, buf, count);
    s->out_len += (uint32_t)count;
    if (!s->out_listed) {
        if (!nout)
            clock_gettime(CLOCK_MONOTONIC, &out_since);
        s->out_listed = true;
        out_list[nout++] = fd;
    }
    return (ssize_t)count;
}

API int shutdown(int fd, int how)
{
    if (!real_shutdown)
        return (int)syscall(SYS_shutdown, fd, how);
    struct io_fd *s = slot(fd);
    if (active && s && s->out_len && (how == SHUT_WR || how == SHUT_RDWR))
        flush_out(fd, s);
    return real_shutdown(fd, how);
}

API int close(int fd)
{
    if (!real_close)
        return (int)syscall(SYS_close, fd);
    if (active) {
        struct io_fd *s = slot(fd);
        if (s && s->out_len && on_loop_thread())
            flush_out(fd, s); /* what mosquitto wrote before closing goes out first */
        forget(fd);
    }
    return real_close(fd);
}

API int accept(int fd, struct sockaddr *addr, socklen_t *len)
{
    if (!real_accept)
        return (int)syscall(SYS_accept4, fd, addr, len, 0);
    int r = real_accept(fd, addr, len);
    if (active && r >= 0)
        forget(r);
    return r;
}

API int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    if (!real_accept4)
        return (int)syscall(SYS_accept4, fd, addr, len, flags);
    int r = real_accept4(fd, addr, len, flags);
    if (active && r >= 0)
        forget(r);
    return r;
}

/* At exit, whatever is still held goes out (the broker closes its sockets itself first). */
__attribute__((destructor)) static void io_fini(void)
{
    if (active && on_loop_thread())
        flush_held(true);
}

int th_iolayer_get_stats(struct th_iolayer_stats *out)
{
    if (!out)
        return -1;
    *out = stats;
    out->active = active;
    return 0;
}
