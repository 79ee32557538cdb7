/*
 * serve.c - `twinhub serve` (docs/cli.md): checks that the ports are free,
 * makes sure the development CA and server certificate exist, writes a
 * mosquitto configuration that loads the twinhub plugin into a private
 * runtime directory, runs mosquitto as a child, waits until every listener
 * accepts a TCP connection, prints the endpoints, the CA, what the plugin
 * restored from --state-dir and set aside (its state report in the runtime
 * directory), and ready-to-paste connection strings, and stops the broker
 * cleanly on SIGINT or SIGTERM.
 * When ready it also writes <cert-dir>/hubs/<pid>.json, which the admin
 * subcommands (client.c) read to find the hub, and removes it on exit.
 * It also runs the HTTPS gateway (emulator/gateway, docs/rest-api.md): its
 * port is bound before the broker starts, and it is started once the broker
 * accepts connections and stopped before the broker is. mosquitto always runs
 * with twinhub's shim preloaded (LD_PRELOAD), which carries the broker I/O
 * layer (tlsshim/iolayer.c: buffered reads, epoll changes applied once per
 * loop pass) and the TLS shim. The MQTT/TLS port is mosquitto's own TLS
 * listener with the TLS shim (tlsshim/tlsshim.h, docs/protocol.md "X.509
 * client certificates"): it asks
 * for an optional client certificate and rewrites the first packet; serve
 * draws the secret that the shim (through the plugin) and the gateway's
 * MQTT over WebSockets bridge share with the plugin at each start.
 *
 * The broker settings come from mosquitto-plugin-facts.md section 5 and
 * architecture.md ("Required broker settings"); the connection string shape
 * (HostName = hub name, GatewayHostName = where we listen) from
 * real-clients.md sections 2.1 and 7.
 *
 * One thread here (the gateway runs its own, started after signals are
 * blocked, so they inherit the mask). Signals are blocked and read from a
 * signalfd, and mosquitto's stdout and stderr come through a pipe, so a
 * single poll() loop sees everything: readiness probes, broker output
 * (passed through to our stderr, the last line kept for error messages),
 * Ctrl-C and the broker's death.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "client.h"       /* th_read_json_file, th_parse_long */
#include "connstr.h"      /* the connection strings we print */
#include "gateway.h"      /* the HTTPS gateway (REST API, MQTT over WebSockets) */
#include "jemalloc_path.h" /* where the broker's allocator is */
#include "x509.h"         /* TH_X509_SECRET_LEN */

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include "hubinfo_file.h" /* --info-file and <cert-dir>/hubs/<pid>.json */
#include "json.h"         /* th_json_string, th_json_number */
#include "dps.h"          /* TH_DPS_DEFAULT_ID_SCOPE, TH_DEV_DPS_KEY */
#include "registry.h"     /* TH_DEV_* */
#include "util.h"         /* th_mono_ms */

#define DEFAULT_MQTT_PORT 1883
#define DEFAULT_MQTTS_PORT 8883
#define DEFAULT_BIND "127.0.0.1"
#define DEFAULT_MOSQUITTO "/usr/sbin/mosquitto"
#define READY_TIMEOUT_MS 10000
/* With a registry file or a state directory the broker loads them before it listens: 100,000
 * devices take seconds, and seeding a new state directory with them longer (performance.md). */
#define READY_TIMEOUT_LOADING_MS 180000
#define PROBE_INTERVAL_MS 5
#define STOP_TIMEOUT_MS 10000
#define STOP_RESEND_MS 500 /* SIGTERM again while mosquitto has not stopped */
#define MAX_PACKET_SIZE 1048576
#define GATEWAY_SOCKET "mqtt.sock" /* in the runtime dir, when --mqtt-port is 0 */
#define STATE_REPORT "state-report.json" /* in the runtime dir: what the plugin loaded */

struct serve_opts {
    int mqtt_port;  /* 0 = disabled */
    int mqtts_port; /* 0 = disabled */
    int https_port; /* 0 = disabled; the gateway */
    const char *bind;
    const char *hub_name; /* NULL = the address clients dial (default_hub_name) */
    const char *cert_dir;  /* NULL = default */
    const char *registry;  /* NULL = none */
    const char *plugin;    /* NULL = default */
    const char *mosquitto; /* NULL = default */
    const char *info_file; /* NULL = none */
    const char *record;    /* NULL = none */
    const char *state_dir; /* NULL = none */
    bool dev_identities;
    bool verbose;
};

/* One listener as configured and probed. */
struct listener {
    int port;
    const char *option; /* the option that changes it, for error messages */
    const char *label;
    bool ready;
};

/* Everything one run needs; lives on th_cmd_serve's stack. */
struct serve {
    struct serve_opts o;
    struct listener lis[2];
    char cert_dir[PATH_MAX];
    char registry[PATH_MAX];  /* absolute; "" when none */
    char record[PATH_MAX];    /* absolute; "" when none */
    char state_dir[PATH_MAX]; /* absolute; "" when none */
    char hub_file[PATH_MAX];  /* <cert dir>/hubs/<pid>.json; "" until written */
    char plugin[PATH_MAX];
    char mosquitto[PATH_MAX];
    struct addrinfo *bind_ai;      /* every address mosquitto will bind */
    bool bind_loopback;            /* every bind address is a loopback address */
    bool bind_wildcard;            /* 0.0.0.0 or :: */
    struct sockaddr_storage probe; /* where readiness is checked; port filled per listener */
    socklen_t probe_len;
    char gateway_host[INET6_ADDRSTRLEN + 300]; /* GatewayHostName without the port */
    char dial_host[INET6_ADDRSTRLEN + 300];    /* the same without brackets */
    struct th_cert_files certs;
    char run_dir[PATH_MAX]; /* "" until created */
    char conf_path[PATH_MAX];
    sigset_t old_mask;
    bool signals_blocked;
    int sig_fd;  /* signalfd for SIGINT, SIGTERM, SIGHUP, SIGCHLD; -1 when closed */
    int log_fd;  /* read end of mosquitto's stdout+stderr; -1 after EOF */
    pid_t child; /* 0 when none or reaped */
    int child_status;
    bool stop_requested;
    char line[512]; /* the broker output line being assembled */
    size_t line_len;
    char last_line[512];   /* last complete non-empty broker line */
    struct th_gateway *gw; /* the HTTPS gateway; NULL when off or stopped */
    char gw_policy[64];    /* the policy it signs in to the broker with */
    char gw_key[128];
    char gw_socket[PATH_MAX]; /* <run dir>/mqtt.sock, used when --mqtt-port is 0 */
    cJSON *state_report;      /* the plugin's report on --state-dir (persist.c); NULL if none */
    char tlsshim[PATH_MAX]; /* the shim preloaded into mosquitto: the TLS shim and the I/O layer */
    char broker_malloc[PATH_MAX];       /* the allocator preloaded into mosquitto; "" for glibc's */
    uint8_t secret[TH_X509_SECRET_LEN]; /* the front secret: the plugin, the shim, the gateway */
};

enum {
    OPT_MQTT_PORT = 256,
    OPT_MQTTS_PORT,
    OPT_BIND,
    OPT_HUB_NAME,
    OPT_CERT_DIR,
    OPT_REGISTRY,
    OPT_NO_DEV_IDS,
    OPT_PLUGIN,
    OPT_MOSQUITTO,
    OPT_INFO_FILE,
    OPT_RECORD,
    OPT_STATE_DIR,
    OPT_HTTPS_PORT
};

static const struct option long_options[] = {
    {"mqtt-port", required_argument, NULL, OPT_MQTT_PORT},
    {"mqtts-port", required_argument, NULL, OPT_MQTTS_PORT},
    {"bind", required_argument, NULL, OPT_BIND},
    {"hub-name", required_argument, NULL, OPT_HUB_NAME},
    {"cert-dir", required_argument, NULL, OPT_CERT_DIR},
    {"registry", required_argument, NULL, OPT_REGISTRY},
    {"no-dev-identities", no_argument, NULL, OPT_NO_DEV_IDS},
    {"plugin", required_argument, NULL, OPT_PLUGIN},
    {"mosquitto", required_argument, NULL, OPT_MOSQUITTO},
    {"info-file", required_argument, NULL, OPT_INFO_FILE},
    {"record", required_argument, NULL, OPT_RECORD},
    {"state-dir", required_argument, NULL, OPT_STATE_DIR},
    {"https-port", required_argument, NULL, OPT_HTTPS_PORT},
    {"verbose", no_argument, NULL, 'v'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

void th_usage_serve(FILE *out)
{
    fprintf(out,
            "usage: twinhub serve [options]\n"
            "\n"
            "Run a local Azure IoT Hub: mosquitto with the twinhub plugin. Prints the endpoints,\n"
            "the CA file and connection strings, then `twinhub: ready`. Stop it with Ctrl-C.\n"
            "\n"
            "options:\n"
            "  --mqtt-port N       plain MQTT port (default %d; 0 disables it)\n"
            "  --mqtts-port N      MQTT over TLS port (default %d; 0 disables it)\n"
            "  --https-port N      HTTPS port of the service REST API and MQTT over WebSockets\n"
            "                      (default $TWINHUB_HTTPS_PORT, else 443, which the Azure SDKs\n"
            "                      always dial; 0 disables it)\n"
            "  --bind ADDR         address to listen on (default %s; anything else is a warning)\n"
            "  --hub-name NAME     the hub's host name in connection strings, for a name you\n"
            "                      map to the hub yourself (default: the address clients\n"
            "                      dial, %s with the default --bind)\n"
            "  --cert-dir DIR      where the development CA and server certificate live\n"
            "                      (default $XDG_DATA_HOME/twinhub or ~/.local/share/twinhub)\n"
            "  --registry FILE     seed the identity registry from FILE\n"
            "  --no-dev-identities do not create the development device, module and policies\n"
            "  --plugin PATH       the broker plugin (default $TWINHUB_PLUGIN, else the built or\n"
            "                      installed twinhub_plugin.so)\n"
            "  --mosquitto PATH    the broker (default $TWINHUB_MOSQUITTO, else %s,\n"
            "                      else mosquitto on PATH)\n"
            "  --info-file FILE    write the endpoints and connection strings as JSON when ready\n"
            "                      (always also written to <cert-dir>/hubs/<pid>.json, for\n"
            "                      the admin commands; removed on exit)\n"
            "  --record FILE       append every hub event to FILE as JSON Lines\n"
            "  --state-dir DIR     keep the registry, twins and C2D queues in DIR across\n"
            "                      restarts (created with mode 0700)\n"
            "  -v, --verbose       more output from twinhub, the broker and the plugin\n"
            "  -h, --help          show this text\n",
            DEFAULT_MQTT_PORT, DEFAULT_MQTTS_PORT, DEFAULT_BIND, DEFAULT_BIND, DEFAULT_MOSQUITTO);
}

/* ---- options ---------------------------------------------------------------------------- */

static bool parse_port(const char *opt, const char *text, int *out)
{
    long v;
    if (!th_parse_long(text, 0, 65535, &v)) {
        fprintf(stderr,
                "twinhub serve: %s '%s' is not a port number; use 1-65535, or 0 to "
                "disable that listener\n",
                opt, text);
        return false;
    }
    *out = (int)v;
    return true;
}

/* A DNS host name: dot-separated labels of letters, digits and '-', 1-63 chars each. */
static bool is_host_name(const char *s)
{
    size_t total = strlen(s), label = 0;
    if (total == 0 || total > 253 || s[0] == '.' || s[total - 1] == '.')
        return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        if (c == '.') {
            if (label == 0)
                return false;
            label = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   c == '-') {
            if (++label > 63)
                return false;
        } else {
            return false;
        }
    }
    return true;
}

static bool has_line_break(const char *s)
{
    return strpbrk(s, "\r\n") != NULL;
}

/*
 * Fill `o` from argv. Returns -1 to go on, TH_EXIT_OK after --help, or
 * TH_EXIT_USAGE after printing one line that says what to fix.
 */
static int parse_args(int argc, char **argv, struct serve_opts *o)
{
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":vh", long_options, NULL)) != -1) {
        switch (c) {
        case OPT_MQTT_PORT:
            if (!parse_port("--mqtt-port", optarg, &o->mqtt_port))
                return TH_EXIT_USAGE;
            break;
        case OPT_MQTTS_PORT:
            if (!parse_port("--mqtts-port", optarg, &o->mqtts_port))
                return TH_EXIT_USAGE;
            break;
        case OPT_BIND:
            o->bind = optarg;
            break;
        case OPT_HUB_NAME:
            o->hub_name = optarg;
            break;
        case OPT_CERT_DIR:
            o->cert_dir = optarg;
            break;
        case OPT_REGISTRY:
            o->registry = optarg;
            break;
        case OPT_NO_DEV_IDS:
            o->dev_identities = false;
            break;
        case OPT_PLUGIN:
            o->plugin = optarg;
            break;
        case OPT_MOSQUITTO:
            o->mosquitto = optarg;
            break;
        case OPT_INFO_FILE:
            o->info_file = optarg;
            break;
        case OPT_RECORD:
            o->record = optarg;
            break;
        case OPT_STATE_DIR:
            o->state_dir = optarg;
            break;
        case OPT_HTTPS_PORT:
            if (!parse_port("--https-port", optarg, &o->https_port))
                return TH_EXIT_USAGE;
            break;
        case 'v':
            o->verbose = true;
            break;
        case 'h':
            th_usage_serve(stdout);
            return TH_EXIT_OK;
        case ':':
            fprintf(stderr, "twinhub serve: %s needs a value; see twinhub serve --help\n",
                    argv[optind - 1]);
            return TH_EXIT_USAGE;
        default: {
            const char *bad = argv[optind - 1];
            int len = (int)strcspn(bad, "=");
            if (optopt)
                fprintf(stderr, "twinhub serve: unknown option -%c; see twinhub serve --help\n",
                        optopt);
            else
                fprintf(stderr, "twinhub serve: unknown option %.*s; see twinhub serve --help\n",
                        len, bad);
            return TH_EXIT_USAGE;
        }
        }
    }
    if (optind < argc) {
        fprintf(stderr,
                "twinhub serve: unexpected argument '%s'; serve takes only options "
                "(see twinhub serve --help)\n",
                argv[optind]);
        return TH_EXIT_USAGE;
    }
    if (o->mqtt_port == 0 && o->mqtts_port == 0) {
        fprintf(stderr, "twinhub serve: --mqtt-port and --mqtts-port are both 0; enable at least "
                        "one listener\n");
        return TH_EXIT_USAGE;
    }
    if (o->mqtt_port == o->mqtts_port) {
        fprintf(stderr,
                "twinhub serve: --mqtt-port and --mqtts-port are both %d; give them "
                "different ports\n",
                o->mqtt_port);
        return TH_EXIT_USAGE;
    }
    if (o->https_port && (o->https_port == o->mqtt_port || o->https_port == o->mqtts_port)) {
        fprintf(stderr,
                "twinhub serve: --https-port %d is also an MQTT port; give it its own port\n",
                o->https_port);
        return TH_EXIT_USAGE;
    }
    if (o->hub_name && !is_host_name(o->hub_name)) {
        fprintf(stderr,
                "twinhub serve: --hub-name '%s' is not a host name; use letters, digits, "
                "'-' and '.', such as myhub.azure-devices.net\n",
                o->hub_name);
        return TH_EXIT_USAGE;
    }
    const char *paths[][2] = {{"--cert-dir", o->cert_dir},   {"--registry", o->registry},
                              {"--plugin", o->plugin},       {"--mosquitto", o->mosquitto},
                              {"--info-file", o->info_file}, {"--record", o->record},
                              {"--state-dir", o->state_dir}};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        if (paths[i][1] && (!paths[i][1][0] || has_line_break(paths[i][1]))) {
            fprintf(stderr, "twinhub serve: %s needs a non-empty path without line breaks\n",
                    paths[i][0]);
            return TH_EXIT_USAGE;
        }
    }
    return -1;
}

/* ---- resolving inputs ------------------------------------------------------------------- */

/* `path` made absolute against the current directory (not resolving links). */
static bool absolute(const char *path, char *out, size_t size)
{
    if (path[0] == '/')
        return snprintf(out, size, "%s", path) < (int)size;
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd))
        return false;
    return snprintf(out, size, "%s/%s", cwd, path) < (int)size;
}

/* Search PATH for an executable `name`. */
static bool search_path(const char *name, char *out, size_t size)
{
    const char *path = getenv("PATH");
    if (!path || !*path)
        path = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin";
    while (*path) {
        size_t len = strcspn(path, ":");
        if (len > 0 && snprintf(out, size, "%.*s/%s", (int)len, path, name) < (int)size &&
            access(out, X_OK) == 0)
            return true;
        path += len;
        if (*path == ':')
            path++;
    }
    return false;
}

static bool is_executable_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

static bool is_readable_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, R_OK) == 0;
}

/* Whether `path` starts with the ELF magic (what the dynamic loader can preload). */
static bool is_elf(const char *path)
{
    unsigned char magic[4] = {0};
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    bool elf = fd >= 0 && read(fd, magic, sizeof magic) == (ssize_t)sizeof magic &&
               !memcmp(magic, "\177ELF", 4);
    if (fd >= 0)
        close(fd);
    return elf;
}

/* --mosquitto, else $TWINHUB_MOSQUITTO, else /usr/sbin/mosquitto, else PATH. */
static int find_mosquitto(struct serve *s)
{
    const char *given = s->o.mosquitto, *from = "--mosquitto";
    if (!given && getenv("TWINHUB_MOSQUITTO") && *getenv("TWINHUB_MOSQUITTO")) {
        given = getenv("TWINHUB_MOSQUITTO");
        from = "TWINHUB_MOSQUITTO";
    }
    if (given) {
        bool found = strchr(given, '/') ? absolute(given, s->mosquitto, sizeof s->mosquitto) &&
                                              is_executable_file(s->mosquitto)
                                        : search_path(given, s->mosquitto, sizeof s->mosquitto);
        if (found)
            return 0;
        if (from[0] == '-') {
            fprintf(stderr, "twinhub serve: --mosquitto %s is not an executable file\n", given);
            return TH_EXIT_USAGE;
        }
        fprintf(stderr,
                "twinhub: TWINHUB_MOSQUITTO=%s is not an executable file; fix or unset "
                "it\n",
                given);
        return TH_EXIT_FAIL;
    }
    if (is_executable_file(DEFAULT_MOSQUITTO)) {
        snprintf(s->mosquitto, sizeof s->mosquitto, "%s", DEFAULT_MOSQUITTO);
        return 0;
    }
    if (search_path("mosquitto", s->mosquitto, sizeof s->mosquitto))
        return 0;
    fprintf(stderr,
            "twinhub: mosquitto not found (looked at %s and on PATH); install it "
            "(apt-get install mosquitto) or pass --mosquitto PATH\n",
            DEFAULT_MOSQUITTO);
    return TH_EXIT_FAIL;
}

/* --plugin, else $TWINHUB_PLUGIN, else the build tree's plugin, else the installed one. */
static int find_plugin(struct serve *s)
{
    const char *given = s->o.plugin;
    bool from_env = false;
    if (!given && getenv("TWINHUB_PLUGIN") && *getenv("TWINHUB_PLUGIN")) {
        given = getenv("TWINHUB_PLUGIN");
        from_env = true;
    }
    if (given) {
        if (absolute(given, s->plugin, sizeof s->plugin) && is_readable_file(s->plugin))
            return 0;
        if (!from_env) {
            fprintf(stderr, "twinhub serve: --plugin %s is not a readable file\n", given);
            return TH_EXIT_USAGE;
        }
        fprintf(stderr, "twinhub: TWINHUB_PLUGIN=%s is not a readable file; fix or unset it\n",
                given);
        return TH_EXIT_FAIL;
    }
    const char *candidates[] = {TH_PLUGIN_BUILD_PATH, TH_PLUGIN_INSTALL_PATH};
    for (size_t i = 0; i < 2; i++) {
        if (is_readable_file(candidates[i])) {
            snprintf(s->plugin, sizeof s->plugin, "%s", candidates[i]);
            return 0;
        }
    }
    fprintf(stderr,
            "twinhub: the broker plugin is neither installed (%s) nor built (%s); build "
            "it with ninja or pass --plugin PATH\n",
            TH_PLUGIN_INSTALL_PATH, TH_PLUGIN_BUILD_PATH);
    return TH_EXIT_FAIL;
}

static bool is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_LOOPBACK(a))
            return true;
        return IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127;
    }
    return false;
}

static bool is_wildcard(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return ((const struct sockaddr_in *)sa)->sin_addr.s_addr == htonl(INADDR_ANY);
    if (sa->sa_family == AF_INET6)
        return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)sa)->sin6_addr);
    return false;
}

/*
 * Resolve --bind the way mosquitto does (getaddrinfo, AI_PASSIVE, any
 * family), classify it, and work out where to probe and what clients dial:
 * a wildcard is reached through loopback of the same family, a specific
 * address or name as itself (IPv6 literals in brackets).
 */
static int resolve_bind(struct serve *s)
{
    struct addrinfo hints = {
        .ai_flags = AI_PASSIVE, .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    const char *bind = s->o.bind;
    int r = bind[0] ? getaddrinfo(bind, NULL, &hints, &s->bind_ai) : EAI_NONAME;
    if (r != 0) {
        fprintf(stderr,
                "twinhub serve: --bind '%s' is not an IP address or a name this machine "
                "resolves (%s)\n",
                bind, gai_strerror(r));
        return TH_EXIT_USAGE;
    }
    s->bind_loopback = true;
    for (struct addrinfo *ai = s->bind_ai; ai; ai = ai->ai_next)
        if (!is_loopback(ai->ai_addr))
            s->bind_loopback = false;
    const struct addrinfo *first = s->bind_ai;
    s->bind_wildcard = is_wildcard(first->ai_addr);
    memset(&s->probe, 0, sizeof s->probe);
    unsigned char tmp[16];
    if (s->bind_wildcard && first->ai_family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&s->probe;
        in6->sin6_family = AF_INET6;
        in6->sin6_addr = in6addr_loopback;
        s->probe_len = sizeof *in6;
        snprintf(s->gateway_host, sizeof s->gateway_host, "[::1]");
    } else if (s->bind_wildcard) {
        struct sockaddr_in *in = (struct sockaddr_in *)&s->probe;
        in->sin_family = AF_INET;
        in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        s->probe_len = sizeof *in;
        snprintf(s->gateway_host, sizeof s->gateway_host, "127.0.0.1");
    } else {
        memcpy(&s->probe, first->ai_addr, first->ai_addrlen);
        s->probe_len = first->ai_addrlen;
        if (inet_pton(AF_INET6, bind, tmp) == 1)
            snprintf(s->gateway_host, sizeof s->gateway_host, "[%s]", bind);
        else
            snprintf(s->gateway_host, sizeof s->gateway_host, "%s", bind);
    }
    /* The service SDKs dial HostName itself (real-clients.md 3.1): no brackets, no port. */
    const char *h = s->gateway_host[0] == '[' ? s->gateway_host + 1 : s->gateway_host;
    snprintf(s->dial_host, sizeof s->dial_host, "%.*s",
             (int)(strlen(h) - (s->gateway_host[0] == '[' ? 1 : 0)), h);
    /* By default the hub is named after the address clients dial, so that HostName alone
     * reaches it (docs/cli.md, "Connection strings"). */
    if (!s->o.hub_name)
        s->o.hub_name = s->dial_host;
    return 0;
}

static bool is_directory(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/*
 * Create `dir` (absolute) and missing parents with mode 0700, for
 * --state-dir. Existing directories are left as they are.
 */
static bool make_dirs(const char *dir)
{
    char failed[PATH_MAX];
    if (!th_make_dirs(dir, 0700, failed, sizeof failed)) {
        fprintf(stderr, "twinhub: cannot create %s: %s; pass another --state-dir\n", failed,
                strerror(errno));
        return false;
    }
    if (!is_directory(dir)) {
        fprintf(stderr, "twinhub: %s is not a directory; pass another --state-dir\n", dir);
        return false;
    }
    return true;
}

/* absolute() for option `opt` given as `path`; says "path too long" when it fails. */
static bool absolute_or_say(const char *opt, const char *path, char *out, size_t size)
{
    if (absolute(path, out, size))
        return true;
    fprintf(stderr, "twinhub serve: %s %s: path too long\n", opt, path);
    return false;
}

/*
 * The directory of output file `abs` (absolute; option `opt` given as
 * `given`) must exist and be writable; says so when not.
 */
static bool dir_writable_or_say(const char *opt, const char *given, const char *abs)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", abs);
    *strrchr(dir, '/') = '\0';
    const char *d = dir[0] ? dir : "/";
    if (is_directory(d) && access(d, W_OK) == 0)
        return true;
    fprintf(stderr, "twinhub serve: %s %s: directory %s does not exist or is not writable\n", opt,
            given, d);
    return false;
}

/* The cert directory, the registry, record and state paths, and the info file's directory. */
static int resolve_files(struct serve *s)
{
    if (s->o.cert_dir) {
        if (!absolute_or_say("--cert-dir", s->o.cert_dir, s->cert_dir, sizeof s->cert_dir))
            return TH_EXIT_USAGE;
    } else if (!th_certs_default_dir(s->cert_dir, sizeof s->cert_dir)) {
        return TH_EXIT_FAIL;
    }
    s->registry[0] = '\0';
    if (s->o.registry) {
        if (!realpath(s->o.registry, s->registry)) {
            fprintf(stderr, "twinhub serve: --registry %s: %s\n", s->o.registry, strerror(errno));
            return TH_EXIT_USAGE;
        }
        if (!is_readable_file(s->registry)) {
            fprintf(stderr, "twinhub serve: --registry %s is not a readable file\n", s->o.registry);
            return TH_EXIT_USAGE;
        }
    }
    if (s->o.info_file) {
        char path[PATH_MAX];
        if (!absolute_or_say("--info-file", s->o.info_file, path, sizeof path) ||
            !dir_writable_or_say("--info-file", s->o.info_file, path))
            return TH_EXIT_USAGE;
        if (access(s->o.info_file, F_OK) == 0 && is_directory(s->o.info_file)) {
            fprintf(stderr, "twinhub serve: --info-file %s is a directory; give a file name\n",
                    s->o.info_file);
            return TH_EXIT_USAGE;
        }
        /* A stale file from an earlier run must not look like a ready hub. */
        if (unlink(s->o.info_file) != 0 && errno != ENOENT) {
            fprintf(stderr, "twinhub serve: --info-file %s: cannot replace it: %s\n",
                    s->o.info_file, strerror(errno));
            return TH_EXIT_USAGE;
        }
    }
    s->record[0] = '\0';
    if (s->o.record) {
        if (!absolute_or_say("--record", s->o.record, s->record, sizeof s->record))
            return TH_EXIT_USAGE;
        if (is_directory(s->record)) {
            fprintf(stderr, "twinhub serve: --record %s is a directory; give a file name\n",
                    s->o.record);
            return TH_EXIT_USAGE;
        }
        if (!dir_writable_or_say("--record", s->o.record, s->record))
            return TH_EXIT_USAGE;
    }
    s->state_dir[0] = '\0';
    if (s->o.state_dir) {
        if (!absolute_or_say("--state-dir", s->o.state_dir, s->state_dir, sizeof s->state_dir))
            return TH_EXIT_USAGE;
        if (access(s->state_dir, F_OK) == 0 && !is_directory(s->state_dir)) {
            fprintf(stderr, "twinhub serve: --state-dir %s exists and is not a directory\n",
                    s->o.state_dir);
            return TH_EXIT_USAGE;
        }
        if (!make_dirs(s->state_dir))
            return TH_EXIT_FAIL;
        if (access(s->state_dir, W_OK | X_OK) != 0) {
            fprintf(stderr, "twinhub serve: --state-dir %s is not writable\n", s->o.state_dir);
            return TH_EXIT_USAGE;
        }
    }
    return 0;
}

/* ---- ports ------------------------------------------------------------------------------ */

static void set_port(struct sockaddr *sa, int port)
{
    if (sa->sa_family == AF_INET6)
        ((struct sockaddr_in6 *)sa)->sin6_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in *)sa)->sin_port = htons((uint16_t)port);
}

/*
 * Bind every address mosquitto will bind, with the same socket options
 * (SO_REUSEADDR, IPV6_V6ONLY), so that a busy port is reported here with the
 * option that changes it, rather than as a broker exit code.
 */
static int check_ports(struct serve *s)
{
    for (int i = 0; i < 2; i++) {
        const struct listener *l = &s->lis[i];
        if (!l->port)
            continue;
        for (struct addrinfo *ai = s->bind_ai; ai; ai = ai->ai_next) {
            struct sockaddr_storage ss;
            memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
            set_port((struct sockaddr *)&ss, l->port);
            char host[INET6_ADDRSTRLEN];
            th_gateway_addr_text(ai->ai_addr, host, sizeof host);
            int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
            int one = 1, err = 0;
            if (fd < 0) {
                err = errno;
            } else {
                setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
                if (ai->ai_family == AF_INET6)
                    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
                if (bind(fd, (struct sockaddr *)&ss, ai->ai_addrlen) != 0)
                    err = errno;
                close(fd);
            }
            if (!err)
                continue;
            if (err == EADDRINUSE)
                fprintf(stderr,
                        "twinhub: port %d on %s is in use by another process; pass %s N "
                        "or stop it\n",
                        l->port, host, l->option);
            else if (err == EACCES)
                fprintf(stderr,
                        "twinhub: not allowed to listen on port %d (ports below 1024 need "
                        "root); pass %s N\n",
                        l->port, l->option);
            else if (err == EADDRNOTAVAIL)
                fprintf(stderr,
                        "twinhub: cannot listen on %s: it is not an address of this "
                        "machine; pass --bind ADDR\n",
                        host);
            else
                fprintf(stderr,
                        "twinhub: cannot listen on %s port %d: %s; pass %s N or --bind "
                        "ADDR\n",
                        host, l->port, strerror(err), l->option);
            return TH_EXIT_FAIL;
        }
    }
    return 0;
}

/* One TCP connect to a listener; true when it was accepted. */
static bool probe(const struct serve *s, int port, int *err)
{
    struct sockaddr_storage ss = s->probe;
    set_port((struct sockaddr *)&ss, port);
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *err = errno;
        return false;
    }
    bool ok = connect(fd, (struct sockaddr *)&ss, s->probe_len) == 0;
    if (!ok)
        *err = errno;
    close(fd);
    return ok;
}

/* ---- runtime directory and broker configuration ----------------------------------------- */

/* Remove the runtime directory and whatever the broker left in it (one level). */
static void remove_run_dir(struct serve *s)
{
    if (!s->run_dir[0])
        return;
    DIR *d = opendir(s->run_dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            unlinkat(dirfd(d), e->d_name, 0);
        }
        closedir(d);
    }
    if (rmdir(s->run_dir) != 0 && s->o.verbose)
        fprintf(stderr, "twinhub: could not remove %s: %s\n", s->run_dir, strerror(errno));
    s->run_dir[0] = '\0';
}

static bool make_run_dir(struct serve *s)
{
    const char *tmp = getenv("TMPDIR");
    if (!tmp || tmp[0] != '/')
        tmp = "/tmp";
    if (snprintf(s->run_dir, sizeof s->run_dir, "%s/twinhub-XXXXXX", tmp) >=
            (int)sizeof s->run_dir ||
        !mkdtemp(s->run_dir)) {
        fprintf(stderr,
                "twinhub: cannot create a runtime directory in %s: %s; set TMPDIR to a "
                "writable directory\n",
                tmp, strerror(errno));
        s->run_dir[0] = '\0';
        return false;
    }
    if (snprintf(s->conf_path, sizeof s->conf_path, "%s/mosquitto.conf", s->run_dir) >=
        (int)sizeof s->conf_path) {
        fprintf(stderr, "twinhub: TMPDIR %s is too long; set TMPDIR to a shorter path\n", tmp);
        rmdir(s->run_dir);
        s->run_dir[0] = '\0';
        return false;
    }
    return true;
}

/*
 * Write mosquitto.conf. Global settings first (with per_listener_settings
 * false they apply to every listener), then the plugin and its options, then
 * the listeners.
 */
static bool write_conf(const struct serve *s)
{
    int fd = open(s->conf_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        fprintf(stderr, "twinhub: cannot write %s: %s\n", s->conf_path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return false;
    }
    /* Root would otherwise drop to user `mosquitto` and lose access to our files. */
    const struct passwd *pw = getpwuid(getuid());
    const char *user = pw ? pw->pw_name : (getuid() == 0 ? "root" : NULL);

    fprintf(f, "# written by `twinhub serve` (pid %ld); removed when it exits\n", (long)getpid());
    fprintf(f,
            "per_listener_settings false\n"
            "set_tcp_nodelay true\n"
            "allow_anonymous false\n"
            "persistence false\n"
            "max_packet_size %d\n"
            "max_inflight_messages 0\n"
            "max_queued_messages 10000\n"
            "log_dest stderr\n"
            "log_type error\n"
            "log_type warning\n",
            MAX_PACKET_SIZE);
    if (s->o.verbose)
        fprintf(f, "log_type notice\nlog_type information\n");
    if (user)
        fprintf(f, "user %s\n", user);
    fprintf(f, "plugin %s\n", s->plugin);
    fprintf(f, "plugin_opt_dev_identities %s\n", s->o.dev_identities ? "true" : "false");
    /* The provisioning service assigns devices to the hub by this name (docs/dps.md). */
    fprintf(f, "plugin_opt_hub_name %s\n", s->o.hub_name);
    if (s->registry[0])
        fprintf(f, "plugin_opt_registry %s\n", s->registry);
    if (s->record[0])
        fprintf(f, "plugin_opt_record %s\n", s->record);
    if (s->state_dir[0])
        fprintf(f, "plugin_opt_state_dir %s\nplugin_opt_state_report %s/" STATE_REPORT "\n",
                s->state_dir, s->run_dir);
    if (s->o.verbose)
        fprintf(f, "plugin_opt_verbose true\n");
    {
        /* The front secret: the runtime directory is 0700 and this file 0600. The plugin
         * hands it to the TLS shim (plugin_opt_tls_shim). */
        char hex[2 * TH_X509_SECRET_LEN + 1];
        for (size_t i = 0; i < TH_X509_SECRET_LEN; i++)
            snprintf(hex + 2 * i, 3, "%02x", s->secret[i]);
        fprintf(f, "plugin_opt_front_secret %s\n", hex);
        OPENSSL_cleanse(hex, sizeof hex);
    }
    /* The plugin refuses to start without the shim: without it the TLS listener would refuse
     * every client that has no certificate from the dev CA. */
    if (s->lis[1].port)
        fprintf(f, "plugin_opt_tls_shim required\n");
    /* The gateway's way in when there is no plain listener. */
    if (s->gw && !s->lis[0].port)
        fprintf(f, "listener 0 %s/" GATEWAY_SOCKET "\n", s->run_dir);
    if (s->lis[0].port)
        fprintf(f, "listener %d %s\n", s->lis[0].port, s->o.bind);
    /* require_certificate true is what the shim turns into an optional certificate that any
     * client may present (tlsshim.h); cafile is then only the list of CA names sent. */
    if (s->lis[1].port)
        fprintf(f,
                "listener %d %s\n"
                "cafile %s\n"
                "certfile %s\n"
                "keyfile %s\n"
                "require_certificate true\n"
                "tls_version tlsv1.2\n",
                s->lis[1].port, s->o.bind, s->certs.ca_cert, s->certs.server_cert,
                s->certs.server_key);
    if (ferror(f) | (fclose(f) != 0)) {
        fprintf(stderr, "twinhub: cannot write %s: %s\n", s->conf_path, strerror(errno));
        return false;
    }
    return true;
}

/* ---- the broker process ----------------------------------------------------------------- */

/* Block the signals we handle and route them to a signalfd. */
static bool setup_signals(struct serve *s)
{
    s->sig_fd = th_signals_open(&s->old_mask, &s->signals_blocked);
    if (s->sig_fd < 0) {
        if (s->signals_blocked)
            fprintf(stderr, "twinhub: signalfd: %s\n", strerror(errno));
        return false;
    }
    return true;
}

/*
 * Start `mosquitto -c conf` with stdin from /dev/null and stdout+stderr into
 * our log pipe. The child gets our original signal mask and dispositions back
 * and dies with us (PR_SET_PDEATHSIG) even if we are SIGKILLed. An exec
 * failure is reported through a close-on-exec pipe, so it is told apart from
 * a broker that started and exited.
 */
static bool spawn_broker(struct serve *s)
{
    int logp[2], errp[2];
    if (pipe2(logp, O_CLOEXEC) != 0)
        goto fail;
    if (pipe2(errp, O_CLOEXEC) != 0) {
        close(logp[0]);
        close(logp[1]);
        goto fail;
    }
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    pid_t parent = getpid();
    char *argv[] = {s->mosquitto, "-c", s->conf_path, NULL};
    /* The TLS shim first, then the broker's allocator (find_broker_malloc), then whatever our
     * environment preloads. A broker command that is a wrapper preloading libraries itself
     * (TWINHUB_MOSQUITTO_PRELOADS set: the asan test setup's scripts/asan-mosquitto.sh, whose
     * shell must not load the instrumented shim before the ASan runtime) gets the shim's path in
     * TWINHUB_TLSSHIM_PRELOAD instead, and no allocator: its runtime brings its own. */
    char preload[3 * PATH_MAX + 3] = "";
    const char *wrapper = getenv("TWINHUB_MOSQUITTO_PRELOADS");
    bool own_malloc = s->broker_malloc[0] != '\0'; /* never under a wrapper: find_broker_malloc */
    if (s->tlsshim[0] || own_malloc) {
        const char *old = getenv("LD_PRELOAD");
        if (snprintf(preload, sizeof preload, "%s%s%s%s%s", s->tlsshim,
                     s->tlsshim[0] && own_malloc ? " " : "", own_malloc ? s->broker_malloc : "",
                     old && *old ? " " : "", old ? old : "") >= (int)sizeof preload) {
            /* Cut short, it would preload a library that does not exist, or part of one. */
            if (devnull >= 0)
                close(devnull);
            close(logp[0]), close(logp[1]), close(errp[0]), close(errp[1]);
            errno = ENAMETOOLONG;
            fprintf(stderr,
                    "twinhub: LD_PRELOAD is longer than %zu bytes with the shim and the "
                    "allocator added; shorten it\n",
                    sizeof preload - 1);
            goto fail;
        }
    }
    pid_t pid = fork();
    if (pid == 0) {
        int e;
        if (!th_child_setup(&s->old_mask, parent))
            _exit(0);
        if (s->tlsshim[0] && wrapper && *wrapper)
            setenv("TWINHUB_TLSSHIM_PRELOAD", s->tlsshim, 1);
        else if (preload[0])
            setenv("LD_PRELOAD", preload, 1);
        if ((devnull >= 0 && dup2(devnull, STDIN_FILENO) < 0) || dup2(logp[1], STDOUT_FILENO) < 0 ||
            dup2(logp[1], STDERR_FILENO) < 0) {
            e = errno;
        } else {
            execv(argv[0], argv);
            e = errno;
        }
        if (write(errp[1], &e, sizeof e) < 0) {
            /* nothing more to do */
        }
        _exit(127);
    }
    int fork_err = errno;
    if (devnull >= 0)
        close(devnull);
    close(logp[1]);
    close(errp[1]);
    if (pid < 0) {
        close(logp[0]);
        close(errp[0]);
        errno = fork_err;
        goto fail;
    }
    s->child = pid;
    s->log_fd = logp[0];
    fcntl(s->log_fd, F_SETFL, O_NONBLOCK);
    int exec_err = 0;
    ssize_t n;
    while ((n = read(errp[0], &exec_err, sizeof exec_err)) < 0 && errno == EINTR)
        ;
    close(errp[0]);
    if (n == (ssize_t)sizeof exec_err) {
        fprintf(stderr, "twinhub: cannot run %s: %s; pass --mosquitto PATH\n", s->mosquitto,
                strerror(exec_err));
        waitpid(pid, NULL, 0);
        s->child = 0;
        return false;
    }
    if (s->o.verbose) {
        fprintf(stderr, "twinhub: started %s -c %s (pid %ld)\n", s->mosquitto, s->conf_path,
                (long)pid);
        if (s->tlsshim[0])
            fprintf(stderr, "twinhub: preloaded %s (the broker I/O layer%s)\n", s->tlsshim,
                    getenv("TWINHUB_BROKER_IO") ? "; TWINHUB_BROKER_IO is set" : "");
        if (own_malloc)
            fprintf(stderr, "twinhub: preloaded %s (the broker's allocator)\n", s->broker_malloc);
        if (s->tlsshim[0] && s->lis[1].port)
            fprintf(stderr,
                    "twinhub: MQTT/TLS port %d: mosquitto's TLS listener with the TLS shim "
                    "(optional client certificates)\n",
                    s->lis[1].port);
    }
    return true;
fail:
    fprintf(stderr, "twinhub: cannot start mosquitto: %s\n", strerror(errno));
    return false;
}

/* Write all of `buf` to stderr; a closed stderr is ignored (the broker must never block). */
static void put_stderr(const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t w = write(STDERR_FILENO, buf, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        buf += w;
        len -= (size_t)w;
    }
}

/*
 * One broker output line is complete (or the buffer is full): pass it
 * through, and remember it, without mosquitto's "1700000000: " time stamp,
 * for error messages. Started as root with `user root`, mosquitto warns on
 * every start that it should not run as root; nobody can act on that in a
 * container, so it is only shown with -v.
 */
static void end_line(struct serve *s, bool newline)
{
    s->line[s->line_len] = '\0';
    const char *p = s->line, *q = s->line;
    while (*q >= '0' && *q <= '9')
        q++;
    if (q > p && q[0] == ':' && q[1] == ' ')
        p = q + 2;
    bool noise = !s->o.verbose && strstr(p, "should not be run as root") != NULL;
    /* set_tcp_nodelay also meets the gateway's unix-socket connections, where it cannot apply. */
    noise = noise || (s->gw && !s->lis[0].port && strstr(p, "Unable to set TCP_NODELAY") != NULL);
    if (!noise) {
        put_stderr(s->line, s->line_len);
        if (newline)
            put_stderr("\n", 1);
        if (*p)
            snprintf(s->last_line, sizeof s->last_line, "%s", p);
    }
    s->line_len = 0;
}

/* Pass whatever the broker has written through to our stderr, line by line; notes EOF. */
static void pump_log(struct serve *s)
{
    char buf[4096];
    while (s->log_fd >= 0) {
        ssize_t n = read(s->log_fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            if (s->line_len)
                end_line(s, true);
            close(s->log_fd);
            s->log_fd = -1;
            return;
        }
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] == '\n')
                end_line(s, true);
            else if (s->line_len == sizeof s->line - 1)
                end_line(s, false);
            if (buf[i] != '\n')
                s->line[s->line_len++] = buf[i];
        }
    }
}

/* Read pending signals: sets stop_requested; reaps the broker when it has exited. */
static void read_signals(struct serve *s)
{
    struct signalfd_siginfo si;
    bool chld = false;
    while (read(s->sig_fd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo == SIGCHLD)
            chld = true;
        else
            s->stop_requested = true;
    }
    if (chld && s->child > 0) {
        int status;
        pid_t r = waitpid(s->child, &status, WNOHANG);
        if (r == s->child) {
            s->child = 0;
            s->child_status = status;
        }
    }
}

/* Wait up to `timeout_ms` (-1 = forever) for a signal or broker output, then handle them. */
static void wait_events(struct serve *s, int timeout_ms)
{
    struct pollfd fds[2] = {{.fd = s->sig_fd, .events = POLLIN},
                            {.fd = s->log_fd, .events = POLLIN}};
    int n = s->log_fd >= 0 ? 2 : 1;
    if (poll(fds, (nfds_t)n, timeout_ms) < 0 && errno != EINTR)
        return;
    pump_log(s);
    read_signals(s);
}

/*
 * SIGTERM the broker and wait for it; a second Ctrl-C, or STOP_TIMEOUT_MS
 * without an exit, escalates to SIGKILL. Drains its output before returning.
 */
static void stop_broker(struct serve *s)
{
    /* The gateway first: its control connection must not see the broker go away. */
    th_gateway_stop(s->gw);
    s->gw = NULL;
    if (s->child <= 0)
        return;
    if (s->o.verbose)
        fprintf(stderr, "twinhub: stopping mosquitto (pid %ld)\n", (long)s->child);
    kill(s->child, SIGTERM);
    s->stop_requested = false;
    int64_t deadline = th_mono_ms() + STOP_TIMEOUT_MS;
    int64_t resend = th_mono_ms() + STOP_RESEND_MS;
    bool killed = false;
    while (s->child > 0) {
        int64_t now = th_mono_ms(), left = deadline - now;
        if (!killed && (left <= 0 || s->stop_requested)) {
            fprintf(stderr, "twinhub: mosquitto %s; killing it\n",
                    left <= 0 ? "did not stop within 10 s" : "is still stopping");
            kill(s->child, SIGKILL);
            killed = true;
        } else if (!killed && now >= resend) {
            /* mosquitto 2.0 installs its SIGTERM handler after its listeners open and then
             * sets its run flag, so a SIGTERM that lands in between (a hub stopped right
             * after it became ready) is lost: say it again until it is heard. */
            kill(s->child, SIGTERM);
            resend = now + STOP_RESEND_MS;
        }
        int64_t wait = killed ? 100 : (resend - now < left ? resend - now : left);
        wait_events(s, (int)(wait > 0 ? wait : 0));
    }
    while (s->log_fd >= 0)
        wait_events(s, 100);
}

/*
 * Poll every listener with a TCP connect until all accept, checking signals
 * and the broker's health between rounds (at most PROBE_INTERVAL_MS apart).
 * Returns -1 when ready, TH_EXIT_OK when asked to stop first (broker already
 * stopped), TH_EXIT_FAIL after saying why the broker did not come up.
 */
static int wait_ready(struct serve *s)
{
    int timeout_ms = s->o.registry || s->o.state_dir ? READY_TIMEOUT_LOADING_MS : READY_TIMEOUT_MS;
    int64_t start = th_mono_ms(), deadline = start + timeout_ms;
    int last_err = 0;
    const struct listener *waiting = NULL;
    for (;;) {
        bool all = true;
        for (int i = 0; i < 2; i++) {
            struct listener *l = &s->lis[i];
            if (!l->port || l->ready)
                continue;
            l->ready = probe(s, l->port, &last_err);
            if (!l->ready) {
                all = false;
                waiting = l;
            }
        }
        if (all) {
            if (s->o.verbose)
                fprintf(stderr, "twinhub: listeners accept connections after %lld ms\n",
                        (long long)(th_mono_ms() - start));
            return -1;
        }
        int64_t left = deadline - th_mono_ms();
        if (left <= 0) {
            fprintf(stderr,
                    "twinhub: mosquitto did not accept connections on its %s listener (%s "
                    "port %d) within %d s (%s)%s%s\n",
                    waiting->label, s->gateway_host, waiting->port, timeout_ms / 1000,
                    strerror(last_err),
                    s->last_line[0] ? "; its last message: " : "", s->last_line);
            stop_broker(s);
            return TH_EXIT_FAIL;
        }
        wait_events(s, (int)(left < PROBE_INTERVAL_MS ? left : PROBE_INTERVAL_MS));
        if (s->stop_requested) {
            stop_broker(s);
            return TH_EXIT_OK;
        }
        if (s->child == 0) {
            while (s->log_fd >= 0)
                wait_events(s, 100);
            char how[128];
            th_describe_status(s->child_status, how, sizeof how);
            fprintf(stderr, "twinhub: mosquitto %s before it was ready%s%s\n", how,
                    s->last_line[0] ? ": " : "; run with -v to see its log", s->last_line);
            if (s->broker_malloc[0] && WIFSIGNALED(s->child_status))
                fprintf(stderr,
                        "twinhub: it ran with %s preloaded as its allocator; "
                        "TWINHUB_BROKER_MALLOC=glibc runs it on glibc's malloc\n",
                        s->broker_malloc);
            return TH_EXIT_FAIL;
        }
    }
}

/* ---- what we print ---------------------------------------------------------------------- */

struct conn_strings {
    char device[512];
    char module[512];
    char service[512];
    /* The service string with HostName = the address the gateway listens on; the same as
     * `service` unless --hub-name names the hub. "" without the gateway. Info file only. */
    char rest[512];
    /* The web dashboard's URL with its one-time token (docs/dashboard.md); "" without the gateway. */
    char dashboard[512];
    /* The provisioning service's API (docs/dps.md): HostName the gateway's address, the
     * provisioningserviceowner policy. "" without the gateway. */
    char dps[512];
};

/* A connection string that did not fit its buffer is left out ("") rather than cut. */
static void or_empty(th_result r, char *buf)
{
    if (r != TH_OK)
        buf[0] = '\0';
}

/*
 * The development identities' connection strings: HostName is the hub name
 * (what goes into the username and the token's sr), GatewayHostName is where
 * the SDK actually dials (real-clients.md section 2.1), left out when that is
 * HostName itself on 8883 (the default), so agents that take only HostName
 * and a key reach the hub too.
 */
static void make_conn_strings(const struct serve *s, struct conn_strings *cs)
{
    char gw[sizeof s->gateway_host + 8];
    or_empty(th_connstr_gateway(s->gateway_host, s->o.mqtts_port, gw, sizeof gw), gw);
    or_empty(th_connstr_identity(s->o.hub_name, TH_DEV_DEVICE_ID, NULL, TH_DEV_DEVICE_KEY, gw,
                                 cs->device, sizeof cs->device),
             cs->device);
    or_empty(th_connstr_identity(s->o.hub_name, TH_DEV_DEVICE_ID, TH_DEV_MODULE_ID,
                                 TH_DEV_MODULE_KEY, gw, cs->module, sizeof cs->module),
             cs->module);
    or_empty(th_connstr_service(s->o.hub_name, "iothubowner", TH_DEV_OWNER_KEY, cs->service,
                                sizeof cs->service),
             cs->service);
    cs->rest[0] = cs->dps[0] = '\0';
    if (s->o.https_port)
        or_empty(th_connstr_service(s->dial_host, TH_DPS_POLICY_NAME, TH_DEV_DPS_KEY, cs->dps,
                                    sizeof cs->dps),
                 cs->dps);
    if (s->o.https_port)
        or_empty(th_connstr_service(s->dial_host, "iothubowner", TH_DEV_OWNER_KEY, cs->rest,
                                    sizeof cs->rest),
                 cs->rest);
    cs->dashboard[0] = '\0';
    const char *token = th_gateway_dashboard_token(s->gw);
    if (token) {
        char port[16] = "";
        if (s->o.https_port != TH_GATEWAY_DEFAULT_HTTPS_PORT)
            snprintf(port, sizeof port, ":%d", s->o.https_port);
        snprintf(cs->dashboard, sizeof cs->dashboard, "https://%s%s/?token=%s", s->gateway_host,
                 port, token);
    }
}

/*
 * Read what the plugin restored from --state-dir and set aside (it writes the
 * report while it loads, before the broker opens its listeners, so it is
 * there once they accept connections). A missing report is not fatal.
 */
static void read_state_report(struct serve *s)
{
    char path[PATH_MAX + 32], err[PATH_MAX + 320];
    if (!s->state_dir[0] ||
        snprintf(path, sizeof path, "%s/" STATE_REPORT, s->run_dir) >= (int)sizeof path)
        return;
    s->state_report = th_read_json_file(path, err, sizeof err);
    if (!s->state_report && s->o.verbose)
        fprintf(stderr, "twinhub: no state report from the plugin: %s\n", err);
}

/* The state dir lines of the banner: restored count and every file set aside, with why. */
static void print_state(const struct serve *s)
{
    const cJSON *r = s->state_report;
    const cJSON *aside = cJSON_GetObjectItemCaseSensitive(r, "setAside");
    int n = cJSON_GetArraySize(aside);
    if (!s->state_dir[0])
        return;
    if (!r) {
        printf("  State     %s\n", s->state_dir);
        return;
    }
    printf("  State     %s (%.0f devices restored)\n", s->state_dir,
           th_json_number(r, "restored", 0));
    if (n == 0)
        return;
    printf("  NOT LOADED: %d state file%s set aside, the hub runs without %s:\n", n,
           n == 1 ? "" : "s", n == 1 ? "it" : "them");
    const cJSON *a;
    cJSON_ArrayForEach(a, aside)
    {
        const char *to = th_json_string(a, "movedTo", NULL);
        printf("    %s: %s\n", th_json_string(a, "identity", "?"), th_json_string(a, "reason", "?"));
        if (to)
            printf("      moved to %s (the reason is beside it, in .reason)\n", to);
        else
            printf("      left in place: %s (it could not be moved; see the log)\n",
                   th_json_string(a, "file", "?"));
    }
}

static void print_banner(const struct serve *s, const struct conn_strings *cs)
{
    const char *ca = s->certs.ca_cert;
    printf("twinhub %s: hub %s\n", TH_VERSION, s->o.hub_name);
    if (s->lis[0].port)
        printf("  MQTT      %s:%d (plain TCP, for local tools)\n", s->gateway_host, s->lis[0].port);
    if (s->lis[1].port)
        printf("  MQTT/TLS  %s:%d (the Azure IoT device SDKs; SAS tokens or X.509 client "
               "certificates)\n",
               s->gateway_host, s->lis[1].port);
    if (s->o.https_port)
        printf("  HTTPS     %s:%d (service REST API, MQTT over WebSockets at /$iothub/websocket, "
               "/health)\n",
               s->gateway_host, s->o.https_port);
    if (cs->dashboard[0])
        printf("  Dashboard %s\n", cs->dashboard);
    printf("  CA        %s\n", ca);
    print_state(s);
    printf("  Trust the CA in your client:\n"
           "    Node.js    NODE_EXTRA_CA_CERTS=%s\n"
           "               or client.setOptions({ ca: fs.readFileSync('%s') })\n"
           "    C SDKs     SSL_CERT_FILE=%s\n",
           ca, ca, ca);
    if (s->o.dev_identities) {
        printf("  Connection strings (development identities):\n"
               "    device   %s\n"
               "    module   %s\n"
               "    service  %s\n",
               cs->device, cs->module, cs->service);
    } else {
        printf("  Development identities are off; identities come from %s\n",
               s->registry[0] ? s->registry : "the control API only");
    }
    printf("  DPS       ID scope %s, provisioning host %s (registration over HTTPS on 443, "
           "MQTT/TLS on the TLS port; devices are assigned to %s)\n",
           TH_DPS_DEFAULT_ID_SCOPE, s->dial_host, s->o.hub_name);
    if (cs->dps[0])
        printf("    DPS service  %s\n", cs->dps);
    if (!s->lis[1].port)
        printf("  MQTT/TLS is off (--mqtts-port 0): the Azure SDKs need TLS to connect\n");
    if (s->o.https_port && s->o.https_port != TH_GATEWAY_DEFAULT_HTTPS_PORT)
        printf("  HTTPS is on port %d: the Azure SDKs only dial %d, so they need a port "
               "redirect to use it\n",
               s->o.https_port, TH_GATEWAY_DEFAULT_HTTPS_PORT);
}

/* Write the info file (--info-file, or the hub file); `what` names it in messages. */
static bool write_info(const struct serve *s, const struct conn_strings *cs, const char *path,
                       mode_t mode, const char *what)
{
    struct th_hubinfo info = {.mqtt_port = s->o.mqtt_port,
                              .mqtts_port = s->o.mqtts_port,
                              .https_port = s->o.https_port,
                              .pid = (long)getpid()};
    snprintf(info.hub_name, sizeof info.hub_name, "%s", s->o.hub_name);
    snprintf(info.bind, sizeof info.bind, "%s", s->o.bind ? s->o.bind : "");
    snprintf(info.ca_file, sizeof info.ca_file, "%s", s->certs.ca_cert);
    snprintf(info.id_scope, sizeof info.id_scope, "%s", TH_DPS_DEFAULT_ID_SCOPE);
    snprintf(info.provisioning_host, sizeof info.provisioning_host, "%s", s->dial_host);
    snprintf(info.dps_cs, sizeof info.dps_cs, "%s", cs->dps);
    if (s->o.dev_identities) {
        snprintf(info.device_id, sizeof info.device_id, "%s", TH_DEV_DEVICE_ID);
        snprintf(info.module_id, sizeof info.module_id, "%s", TH_DEV_MODULE_ID);
        snprintf(info.device_cs, sizeof info.device_cs, "%s", cs->device);
        snprintf(info.module_cs, sizeof info.module_cs, "%s", cs->module);
        snprintf(info.service_cs, sizeof info.service_cs, "%s", cs->service);
        snprintf(info.rest_cs, sizeof info.rest_cs, "%s", cs->rest);
    }
    snprintf(info.dashboard_url, sizeof info.dashboard_url, "%s", cs->dashboard);
    /* What --state-dir could not load: [{identity, file, movedTo, reason}], [] when all did. */
    cJSON *aside = NULL;
    if (s->state_dir[0]) {
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(s->state_report, "setAside");
        aside = cJSON_IsArray(r) ? cJSON_Duplicate(r, true) : cJSON_CreateArray();
        info.state_set_aside = aside;
    }
    bool saved = (!s->state_dir[0] || aside) && th_hubinfo_save(path, mode, &info);
    cJSON_Delete(aside);
    if (!saved) {
        fprintf(stderr, "twinhub: cannot write %s %s: %s\n", what, path, strerror(errno));
        return false;
    }
    return true;
}

/* <cert dir>/hubs, mode 0700 (it holds the development keys). */
static bool make_hubs_dir(const char *dir)
{
    char failed[PATH_MAX];
    if (th_make_dirs(dir, 0700, failed, sizeof failed) && is_directory(dir))
        return true;
    fprintf(stderr, "twinhub: cannot create %s: %s; pass another --cert-dir\n", dir,
            strerror(is_directory(dir) ? errno : ENOTDIR));
    return false;
}

/* Remove our <cert dir>/hubs/<pid>.json: the file is this process's alone. */
static void remove_hub_file(struct serve *s)
{
    if (!s->hub_file[0])
        return;
    if (unlink(s->hub_file) != 0 && s->o.verbose)
        fprintf(stderr, "twinhub: could not remove %s: %s\n", s->hub_file, strerror(errno));
    s->hub_file[0] = '\0';
}

/* ---- the command ------------------------------------------------------------------------ */

/* Run the hub until a signal or the broker's death; returns the exit code. */
static int run_until_stopped(struct serve *s)
{
    for (;;) {
        wait_events(s, -1);
        if (s->stop_requested) {
            stop_broker(s);
            return TH_EXIT_OK;
        }
        if (s->child == 0) {
            while (s->log_fd >= 0)
                wait_events(s, 100);
            /* Ctrl-C reaches the broker too (same process group): that is a normal stop. */
            if (s->stop_requested)
                return TH_EXIT_OK;
            char how[128];
            th_describe_status(s->child_status, how, sizeof how);
            fprintf(stderr, "twinhub: mosquitto %s unexpectedly; the hub is down%s%s%s\n", how,
                    s->last_line[0] ? " (its last message: " : "", s->last_line,
                    s->last_line[0] ? ")" : "");
            return TH_EXIT_FAIL;
        }
    }
}

/* ---- the MQTT/TLS port -------------------------------------------------------------------- */

/* The front secret, drawn at each start: the plugin, the TLS shim and the gateway's MQTT over
 * WebSockets bridge share it. */
static int draw_secret(struct serve *s)
{
    if (RAND_bytes(s->secret, sizeof s->secret) != 1) {
        fprintf(stderr, "twinhub: no random bytes for the X.509 front secret\n");
        return TH_EXIT_FAIL;
    }
    return 0;
}

/*
 * The shim preloaded into mosquitto (twinhub_tlsshim.so: the TLS shim, tlsshim/tlsshim.h, and the
 * broker I/O layer, tlsshim/iolayer.h): $TWINHUB_TLSSHIM, else twinhub_tlsshim.so next to the
 * plugin (the build tree and the install put them together), else the built one, else the
 * installed one. An absolute path, for LD_PRELOAD. The MQTT/TLS port cannot do without it; with
 * that port off the broker runs without the I/O layer when the shim is missing, and says so.
 */
static int find_tlsshim(struct serve *s)
{
    const char *env = getenv("TWINHUB_TLSSHIM");
    if (env && *env) {
        if (absolute(env, s->tlsshim, sizeof s->tlsshim) && is_readable_file(s->tlsshim))
            return 0;
        fprintf(stderr, "twinhub: TWINHUB_TLSSHIM=%s is not a readable file; fix or unset it\n",
                env);
        return TH_EXIT_FAIL;
    }
    char near[PATH_MAX];
    const char *slash = strrchr(s->plugin, '/');
    if (slash && snprintf(near, sizeof near, "%.*s/twinhub_tlsshim.so", (int)(slash - s->plugin),
                          s->plugin) < (int)sizeof near &&
        is_readable_file(near)) {
        snprintf(s->tlsshim, sizeof s->tlsshim, "%s", near);
        return 0;
    }
    const char *candidates[] = {TH_TLSSHIM_BUILD_PATH, TH_TLSSHIM_INSTALL_PATH};
    for (size_t i = 0; i < 2; i++) {
        if (is_readable_file(candidates[i])) {
            snprintf(s->tlsshim, sizeof s->tlsshim, "%s", candidates[i]);
            return 0;
        }
    }
    s->tlsshim[0] = '\0';
    if (!s->lis[1].port) {
        fprintf(stderr,
                "twinhub: note: the broker shim (twinhub_tlsshim.so) is neither installed (%s) nor "
                "built (%s): mosquitto runs without twinhub's I/O layer\n",
                TH_TLSSHIM_INSTALL_PATH, TH_TLSSHIM_BUILD_PATH);
        return 0;
    }
    fprintf(stderr,
            "twinhub: the TLS shim for the MQTT/TLS port is neither installed (%s) nor built (%s); "
            "build it with ninja, or pass --mqtts-port 0\n",
            TH_TLSSHIM_INSTALL_PATH, TH_TLSSHIM_BUILD_PATH);
    return TH_EXIT_FAIL;
}

/*
 * The allocator preloaded into mosquitto: jemalloc (Debian's libjemalloc2, found by
 * th_jemalloc_find); $TWINHUB_BROKER_MALLOC names another library, or `glibc` keeps glibc's
 * malloc. mosquitto walks every subscriber of a topic filter at each SUBSCRIBE
 * (`sub__add_leaf`), and every device subscribes to the same three; on jemalloc that walk costs
 * the broker about half the CPU it does on glibc's malloc, for plain mosquitto too. Our
 * explanation (not measured: no cache counters here) is that jemalloc keeps objects of one size
 * together (docs/performance.md, "The broker's allocator"). Without it the broker runs on
 * glibc's malloc and serve says so; under a wrapper with its own runtime, no allocator.
 */
static int find_broker_malloc(struct serve *s)
{
    const char *env = getenv("TWINHUB_BROKER_MALLOC");
    const char *wrapper = getenv("TWINHUB_MOSQUITTO_PRELOADS");
    s->broker_malloc[0] = '\0';
    if (wrapper && *wrapper) {
        if (env && *env)
            fprintf(stderr, "twinhub: note: TWINHUB_BROKER_MALLOC is ignored: the broker command "
                            "preloads its own runtime (TWINHUB_MOSQUITTO_PRELOADS)\n");
        return 0;
    }
    if (env && (!strcmp(env, "glibc") || !strcmp(env, "system")))
        return 0;
    if (env && *env) {
        const char *why = NULL;
        if (!absolute(env, s->broker_malloc, sizeof s->broker_malloc) ||
            !is_readable_file(s->broker_malloc))
            why = "is not a readable file";
        else if (strpbrk(s->broker_malloc, " \t:"))
            why = "has a space or a colon in its path, which LD_PRELOAD cannot carry";
        else if (!is_elf(s->broker_malloc))
            why = "is not a shared library (no ELF header)";
        if (!why)
            return 0;
        fprintf(stderr,
                "twinhub: TWINHUB_BROKER_MALLOC=%s %s; name an allocator library (such as "
                "libjemalloc.so.2), `glibc`, or unset it\n",
                env, why);
        s->broker_malloc[0] = '\0';
        return TH_EXIT_FAIL;
    }
    if (th_jemalloc_find(s->broker_malloc, sizeof s->broker_malloc))
        return 0;
    char dirs[TH_JEMALLOC_DIRS_MAX][PATH_MAX];
    size_t ndirs = th_jemalloc_dirs(dirs);
    fprintf(
        stderr,
        "twinhub: note: jemalloc (libjemalloc.so.2) is not in %s%s%s: mosquitto runs on glibc's "
        "malloc, which makes connecting a large fleet slower; install it (Debian: apt-get "
        "install libjemalloc2), or set TWINHUB_BROKER_MALLOC=glibc to keep glibc's quietly\n",
        ndirs ? dirs[0] : "the C library's directory", ndirs > 1 ? " or " : "",
        ndirs > 1 ? dirs[1] : "");
    return 0;
}

/* ---- the HTTPS gateway ------------------------------------------------------------------ */

/*
 * Choose the gateway's policy and bind its port (every --bind address), so
 * that a privileged or busy port is reported before the broker starts.
 */
static int open_gateway(struct serve *s)
{
    if (!s->o.https_port)
        return 0;
    char err[PATH_MAX + 320];
    if (!th_gateway_pick_policy(
            s->state_dir[0] ? s->state_dir : NULL, s->registry[0] ? s->registry : NULL,
            s->gw_policy, sizeof s->gw_policy, s->gw_key, sizeof s->gw_key, err, sizeof err)) {
        fprintf(stderr, "twinhub: %s\n", err);
        return TH_EXIT_FAIL;
    }
    char device_gw[sizeof s->gateway_host + 8];
    if (th_connstr_gateway(s->gateway_host, s->o.mqtts_port, device_gw, sizeof device_gw) != TH_OK)
        device_gw[0] = '\0';
    struct th_gateway_config cfg = {
        .device_gateway = device_gw,
        .hub_name = s->o.hub_name,
        .bind_ai = s->bind_ai,
        .https_port = s->o.https_port,
        .cert_file = s->certs.server_cert,
        .key_file = s->certs.server_key,
        .policy_name = s->gw_policy,
        .policy_key = s->gw_key,
        .verbose = s->o.verbose,
        .front_secret = s->secret,
    };
    int e;
    char where[INET6_ADDRSTRLEN + 16];
    s->gw = th_gateway_listen(&cfg, &e, where, sizeof where);
    if (s->gw)
        return 0;
    int port = s->o.https_port;
    if (e == EACCES) {
        char exe[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        exe[n > 0 ? n : 0] = '\0';
        fprintf(stderr,
                "twinhub: not allowed to listen on port %d: ports below 1024 need privileges. "
                "The Azure SDKs always dial 443 for the service API and MQTT over WebSockets, "
                "so either run twinhub as root, let it bind low ports "
                "(sudo setcap cap_net_bind_service=+ep %s), lower the limit "
                "(sudo sysctl net.ipv4.ip_unprivileged_port_start=%d), pass --https-port N "
                "(the SDKs will not find it there) or --https-port 0 (no HTTPS gateway)\n",
                port, exe[0] ? exe : "<path to twinhub>", port);
    } else if (e == EADDRINUSE) {
        fprintf(stderr,
                "twinhub: port %d on %s is in use by another process; stop it, or pass "
                "--https-port N (the Azure SDKs only dial 443) or --https-port 0 (no HTTPS "
                "gateway)\n",
                port, where);
    } else if (e == EADDRNOTAVAIL) {
        fprintf(stderr,
                "twinhub: cannot listen on %s: it is not an address of this machine; "
                "pass --bind ADDR\n",
                where);
    } else {
        fprintf(stderr, "twinhub: cannot listen on %s port %d: %s; pass --https-port N\n", where,
                port, strerror(e));
    }
    return TH_EXIT_FAIL;
}

/*
 * Once the broker accepts connections: start the gateway and wait until its
 * control connection is up. Returns -1 when up, TH_EXIT_OK when asked to
 * stop first, TH_EXIT_FAIL after saying why it did not come up.
 */
static int start_gateway(struct serve *s)
{
    if (!s->gw)
        return -1;
    char host[INET6_ADDRSTRLEN], err[512];
    int port = s->lis[0].port;
    if (snprintf(s->gw_socket, sizeof s->gw_socket, "%s/" GATEWAY_SOCKET, s->run_dir) >=
        (int)sizeof s->gw_socket)
        s->gw_socket[0] = '\0'; /* not used: the plain listener is on */
    if (port) {
        const struct sockaddr *sa = (const struct sockaddr *)&s->probe;
        const void *a = sa->sa_family == AF_INET6
                            ? (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr
                            : (const void *)&((const struct sockaddr_in *)sa)->sin_addr;
        if (!inet_ntop(sa->sa_family, a, host, sizeof host))
            snprintf(host, sizeof host, "127.0.0.1");
    }
    if (!th_gateway_start(s->gw, port ? host : s->gw_socket, port, err, sizeof err)) {
        fprintf(stderr, "twinhub: %s\n", err);
        stop_broker(s);
        return TH_EXIT_FAIL;
    }
    int64_t deadline = th_mono_ms() + READY_TIMEOUT_MS;
    for (;;) {
        enum th_gateway_state st = th_gateway_state(s->gw, err, sizeof err);
        if (st == TH_GATEWAY_UP)
            return -1;
        if (st == TH_GATEWAY_REFUSED || th_mono_ms() >= deadline) {
            fprintf(stderr, "twinhub: the HTTPS gateway could not sign in to the broker: %s\n",
                    st == TH_GATEWAY_REFUSED ? err : "no answer within 10 s");
            stop_broker(s);
            return TH_EXIT_FAIL;
        }
        wait_events(s, PROBE_INTERVAL_MS);
        if (s->stop_requested) {
            stop_broker(s);
            return TH_EXIT_OK;
        }
        if (s->child == 0) {
            char how[128];
            th_describe_status(s->child_status, how, sizeof how);
            fprintf(stderr, "twinhub: mosquitto %s before the gateway was ready\n", how);
            return TH_EXIT_FAIL;
        }
    }
}

static int serve(struct serve *s)
{
    int rc;
    /* Mistakes in the options (exit 2) are reported before missing defaults (exit 1). */
    if ((rc = resolve_bind(s)) || (rc = resolve_files(s)) || (rc = find_plugin(s)) ||
        (rc = find_mosquitto(s)))
        return rc;
    if (!s->bind_loopback)
        fprintf(stderr,
                "twinhub: warning: --bind %s is reachable from other machines, and the "
                "development keys are public; use it only on a trusted network\n",
                s->o.bind);
    if ((rc = check_ports(s)))
        return rc;

    /* Clients must find our name (and a specific bind address) in the server certificate. */
    const char *names[2] = {s->o.hub_name, NULL};
    size_t nnames = 1;
    if (!s->bind_wildcard)
        names[nnames++] = s->o.bind;
    /* A specific bind address gets server-<address>.pem, the default one server.pem. */
    if (!th_certs_ensure(s->cert_dir, names, nnames, s->bind_wildcard ? NULL : s->o.bind,
                         s->o.verbose, &s->certs))
        return TH_EXIT_FAIL;
    if ((rc = find_tlsshim(s)) || (rc = find_broker_malloc(s)) || (rc = draw_secret(s)) ||
        (rc = open_gateway(s)))
        return rc;

    if (!setup_signals(s) || !make_run_dir(s) || !write_conf(s) || !spawn_broker(s))
        return TH_EXIT_FAIL;
    if (s->o.verbose)
        fprintf(stderr, "twinhub: runtime directory %s\n", s->run_dir);
    if ((rc = wait_ready(s)) >= 0 || (rc = start_gateway(s)) >= 0)
        return rc;

    struct conn_strings cs;
    make_conn_strings(s, &cs);
    read_state_report(s);
    print_banner(s, &cs);
    if (s->o.info_file && !write_info(s, &cs, s->o.info_file, 0644, "--info-file")) {
        stop_broker(s);
        return TH_EXIT_FAIL;
    }
    /* The admin commands find the hub here: one file per running hub on a cert dir. */
    char hubs_dir[PATH_MAX + 8], hub_file[PATH_MAX];
    if (snprintf(hubs_dir, sizeof hubs_dir, "%s/" TH_HUBINFO_DIR_NAME, s->cert_dir) >=
            (int)sizeof hubs_dir ||
        !th_hubinfo_pid_path(hubs_dir, (long)getpid(), hub_file, sizeof hub_file) ||
        !make_hubs_dir(hubs_dir) || !write_info(s, &cs, hub_file, 0600, "the hub file")) {
        stop_broker(s);
        return TH_EXIT_FAIL;
    }
    snprintf(s->hub_file, sizeof s->hub_file, "%s", hub_file);
    printf("twinhub: ready\n");
    fflush(stdout);
    return run_until_stopped(s);
}

int th_cmd_serve(int argc, char **argv)
{
    struct serve s = {
        .o = {.mqtt_port = DEFAULT_MQTT_PORT,
              .mqtts_port = DEFAULT_MQTTS_PORT,
              .bind = DEFAULT_BIND,
              .dev_identities = true},
        .sig_fd = -1,
        .log_fd = -1,
    };
    s.o.https_port = TH_GATEWAY_DEFAULT_HTTPS_PORT;
    const char *https_env = getenv("TWINHUB_HTTPS_PORT");
    if (https_env && *https_env && !parse_port("TWINHUB_HTTPS_PORT", https_env, &s.o.https_port))
        return TH_EXIT_USAGE;
    int rc = parse_args(argc, argv, &s.o);
    if (rc >= 0)
        return rc;
    s.lis[0] = (struct listener){.port = s.o.mqtt_port, .option = "--mqtt-port", .label = "MQTT"};
    s.lis[1] =
        (struct listener){.port = s.o.mqtts_port, .option = "--mqtts-port", .label = "MQTT/TLS"};

    rc = serve(&s);

    th_gateway_stop(s.gw); /* when serve failed before the broker started */
    s.gw = NULL;
    OPENSSL_cleanse(s.secret, sizeof s.secret);
    if (s.child > 0) /* only on an internal failure after spawning */
        stop_broker(&s);
    remove_run_dir(&s);
    remove_hub_file(&s);
    cJSON_Delete(s.state_report);
    if (s.bind_ai)
        freeaddrinfo(s.bind_ai);
    if (s.log_fd >= 0)
        close(s.log_fd);
    if (s.sig_fd >= 0)
        close(s.sig_fd);
    if (s.signals_blocked)
        sigprocmask(SIG_SETMASK, &s.old_mask, NULL);
    return rc;
}
