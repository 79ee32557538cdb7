/*
 * bench.h - shared declarations of the twinhub benchmark tool (thbench):
 * a raw MQTT 3.1.1 client engine over nonblocking sockets and one epoll
 * loop (mqraw.c), broker processes and /proc readings (procs.c), and the
 * benchmark cases (bench_*.c). Everything runs on 127.0.0.1, is bounded in
 * count and time, and stops by itself.
 *
 * The load generator is single-threaded: with two cores, the broker gets one
 * and the load generator the other, for twinhub and its baseline alike.
 */
#ifndef THB_BENCH_H
#define THB_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define THB_HUB_NAME "twinhub.localhost"
#define THB_API_VERSION "2021-04-12"
#define THB_PATH_MAX 4096

/* ---- time ---- */

/* CLOCK_MONOTONIC in microseconds. */
int64_t thb_now_us(void);

/* ---- growable byte buffer ---- */

struct thb_buf {
    uint8_t *data;
    size_t len; /* bytes held */
    size_t off; /* bytes already consumed from the front */
    size_t cap;
};
/* Make room for n more bytes; aborts on out-of-memory (a benchmark has no recovery). */
void thb_buf_reserve(struct thb_buf *b, size_t n);
void thb_buf_free(struct thb_buf *b);

/* ---- raw MQTT 3.1.1 client engine ---- */

enum thb_conn_state {
    THB_CONN_IDLE = 0, /* not opened */
    THB_CONN_TCP,      /* connect() in progress */
    THB_CONN_CONNACK,  /* CONNECT sent, waiting for CONNACK */
    THB_CONN_READY,    /* CONNACK 0 received */
    THB_CONN_CLOSED,   /* closed by either side, or refused */
};

struct thb_loop;

struct thb_conn {
    int fd;
    int index; /* position in the owner's array */
    enum thb_conn_state state;
    int connack_rc;
    bool out_armed; /* EPOLLOUT registered */
    struct thb_buf in, out;
    struct thb_loop *loop;
    /* Scratch for the cases (meaning depends on the case). */
    uint16_t next_mid;
    int64_t t0;         /* a start time in µs */
    int64_t a, b, c, d; /* counters */
};

/*
 * Called for every complete packet other than CONNACK (handled by the
 * engine). `hdr` is the fixed-header byte, `body` the variable header and
 * payload. QoS 1 PUBLISHes are acknowledged by the engine before this call.
 */
typedef void (*thb_packet_fn)(struct thb_conn *c, uint8_t hdr, const uint8_t *body, size_t len,
                              void *arg);
/* Called once when a connection changes state to READY or CLOSED. */
typedef void (*thb_state_fn)(struct thb_conn *c, void *arg);

struct thb_loop {
    int ep;
    thb_packet_fn on_packet;
    thb_state_fn on_state;
    void *arg;
    int open_conns;
    long closed_unexpectedly;
};

/* Create the epoll instance; aborts on failure. */
void thb_loop_init(struct thb_loop *l, thb_packet_fn on_packet, thb_state_fn on_state, void *arg);
void thb_loop_free(struct thb_loop *l);
/*
 * Wait up to timeout_ms for socket events and handle them (reads, packet
 * callbacks, pending writes). Returns the number of events handled.
 */
int thb_loop_step(struct thb_loop *l, int timeout_ms);

/*
 * Start a nonblocking TCP connection to 127.0.0.1:port (TCP_NODELAY) and
 * queue a CONNECT (keep-alive 0: no pings needed; clean session). username
 * and password may be NULL. Returns 0, or -1 with errno (EMFILE: fd limit).
 */
int thb_conn_open(struct thb_loop *l, struct thb_conn *c, int index, int port,
                  const char *client_id, const char *username, const char *password);
/* Close the socket (no DISCONNECT packet) and free the buffers. Safe on a closed conn. */
void thb_conn_close(struct thb_conn *c);

/* Queue packets (sent by thb_conn_flush or when the socket becomes writable). */
void thb_send_subscribe(struct thb_conn *c, uint16_t mid, const char *const *filters, int n,
                        int qos);
void thb_send_publish(struct thb_conn *c, const char *topic, const void *payload, size_t len,
                      int qos, uint16_t mid);
void thb_send_puback(struct thb_conn *c, uint16_t mid);
void thb_send_pingreq(struct thb_conn *c);
void thb_send_disconnect(struct thb_conn *c);
/* Write as much queued output as the socket takes now; arms EPOLLOUT for the rest. */
void thb_conn_flush(struct thb_conn *c);

/* MQTT packet types (high nibble of the fixed header). */
#define THB_PUBLISH 3
#define THB_PUBACK 4
#define THB_SUBACK 9
#define THB_PINGRESP 13

struct thb_publish {
    const char *topic; /* not NUL-terminated */
    size_t topic_len;
    const uint8_t *payload;
    size_t payload_len;
    int qos;
    uint16_t mid;
};
/* Split a PUBLISH body; false when malformed. */
bool thb_parse_publish(uint8_t hdr, const uint8_t *body, size_t len, struct thb_publish *out);
/* Message id of a PUBACK/SUBACK body (0 when too short). */
uint16_t thb_packet_mid(const uint8_t *body, size_t len);

/* ---- processes ---- */

enum thb_broker_kind {
    THB_PLAIN,    /* mosquitto, no plugin, allow_anonymous */
    THB_ECHO,     /* mosquitto + echo_plugin.so, allow_anonymous */
    THB_TWINHUB,  /* twinhub serve */
    THB_PLAIN_IO, /* THB_PLAIN with what serve preloads: twinhub's I/O layer and allocator */
};

struct thb_broker {
    enum thb_broker_kind kind;
    pid_t child;  /* the process we started (serve, or mosquitto) */
    pid_t broker; /* the mosquitto process (child itself, or serve's child) */
    int port;
    int64_t start_us;       /* spawn to ready */
    int out_fd;             /* read end of serve's stdout, closed after it exits */
    char dir[THB_PATH_MAX]; /* private directory of this broker */
};

/* The fleet case's connect rounds per broker, at most (--fleet-rounds). */
#define THB_FLEET_MAX_ROUNDS 15

struct thb_config {
    char twinhub[THB_PATH_MAX];     /* the twinhub executable */
    char plugin[THB_PATH_MAX];      /* twinhub_plugin.so */
    char echo_plugin[THB_PATH_MAX]; /* echo_plugin.so */
    char tlsshim[THB_PATH_MAX];     /* twinhub_tlsshim.so (bench_tlsfront.c preloads it) */
    char mosquitto[THB_PATH_MAX];   /* the broker executable */
    char work[1024];                /* temp directory of this run */
    char cert_dir[THB_PATH_MAX];    /* shared by every twinhub start */
    int scale_devices;              /* 10000 unless lowered */
    double time_scale;              /* 1.0; --quick makes runs shorter */
    bool verbose;
    int fleet_devices;     /* registered devices of the fleet case (100,000) */
    int fleet_connected;   /* ... connected: up to the descriptor limit */
    int fleet_rounds;      /* connect rounds per broker, alternated (odd: a median), at most
                            * THB_FLEET_MAX_ROUNDS */
    const char *state_dir; /* when set, twinhub starts with --state-dir (fleet case) */
};

extern struct thb_config thb_cfg;

/* A free TCP port on 127.0.0.1 (bind to port 0, read it, close). Aborts on failure. */
int thb_free_port(void);

/*
 * Start a broker on a free port and wait until it accepts connections.
 * THB_TWINHUB: `twinhub serve` with `registry` (may be NULL) and `record`
 * (may be NULL). Returns 0, or -1 after printing why.
 */
int thb_broker_start(struct thb_broker *b, enum thb_broker_kind kind, const char *registry,
                     const char *record);
/* SIGTERM, wait (bounded, then SIGKILL), remove the broker's directory. */
void thb_broker_stop(struct thb_broker *b);

/* CPU time of a process (all threads) in microseconds; -1 when unreadable. */
int64_t thb_proc_cpu_us(pid_t pid);
/* Busy (non-idle) CPU time of the whole machine, in microseconds (from /proc/stat). */
int64_t thb_machine_busy_us(void);
/* CPU time used by this process so far, in microseconds. */
int64_t thb_self_cpu_us(void);

/* A field of /proc/<pid>/status in kB ("VmRSS", "VmHWM"); -1 when unreadable. */
long thb_proc_status_kb(pid_t pid, const char *field);
/* The same from /proc/<pid>/smaps_rollup (AnonHugePages, ...). */
long thb_proc_smaps_kb(pid_t pid, const char *field);
/* The allocator library mapped into process `pid` (libjemalloc.so.2, libmimalloc..., from
 * /proc/<pid>/maps), or "glibc" when none of those is. */
void thb_proc_malloc(pid_t pid, char *out, size_t size);
/* The allocator `twinhub serve` preloads into its broker (serve.c find_broker_malloc):
 * $TWINHUB_BROKER_MALLOC, else jemalloc where serve finds it (th_jemalloc_find); "" for glibc's
 * malloc. */
const char *thb_broker_malloc(void);

/* ---- identities ---- */

/* Device id number i ("bd-00042"), into buf of >= 16 bytes. */
void thb_device_id(int i, char *buf, size_t size);
/* Deterministic base64 primary key of device i, into buf of >= 64 bytes. */
void thb_device_key(int i, char *buf, size_t size);
/* Username and SAS password of device i (buffers >= 512 bytes). */
void thb_device_credentials(int i, char *user, size_t usize, char *pass, size_t psize);
/* Password of the development iothubowner policy (buffer >= 512 bytes). */
void thb_service_password(char *pass, size_t psize);
/*
 * Write a registry file with devices 0..n-1 (explicit keys). desired_bytes > 0 gives each a
 * desired section of about that many bytes. Returns 0 or -1.
 */
int thb_write_registry(const char *path, int n, int desired_bytes);

/* ---- results ---- */

/* Print a line to stdout and, when a report file is open, append it there too. */
void thb_out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Record a target verdict for the summary. */
void thb_target(const char *name, bool met, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Percentile p (0..100) of n sorted values. */
int64_t thb_percentile(const int64_t *sorted, size_t n, double p);
/* The median of n values (sorted in place; the mean of the middle two when n is even). */
double thb_median(double *v, int n);
void thb_sort_i64(int64_t *v, size_t n);

/* ---- cases ---- */

int thb_bench_telemetry(void);
int thb_bench_twin(void);
int thb_bench_fanout(void);
int thb_bench_scale(void);
int thb_bench_tlsfront(void); /* bench_tlsfront.c: mosquitto's TLS with the shim vs without */
int thb_bench_fleet(void);    /* only with --only fleet */

/* Abort with a message (setup failures inside a case). */
void thb_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
