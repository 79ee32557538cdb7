/*
 * monitor.c - `twinhub monitor` (docs/cli.md "twinhub monitor"): follow the
 * running hub's event stream ($twinhub/events/#, docs/control-api.md
 * "Events") and print each event as it happens, the way `az iot hub
 * monitor-events` shows telemetry: its system and application properties
 * and its body, decoded as JSON or text when it is. Telemetry by default;
 * --connections, --twin, --methods, --c2d, --all or --kind add kinds;
 * --device and --module filter; --json prints each record as one JSON line
 * (the recording's format); --recording FILE prints a recording the same
 * way and ends. SIGINT or SIGTERM end it with status 0; losing the hub ends
 * it with status 3.
 *
 * The records are read with core/journal.h, as `twinhub verify` reads them.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "client.h"
#include "ctl_client.h"
#include "journal.h"
#include "json.h"
#include "th_file.h"
#include "util.h"

#define MAX_RECORD_BYTES (4u * 1024 * 1024)
#define MAX_RECORDING_BYTES (1024u * 1024 * 1024)

struct monitor {
    const struct th_args *a;
    bool kinds[TH_JOURNAL_KIND_COUNT]; /* which kinds to print */
    bool other;                       /* kinds this version does not know (--all) */
    bool json;
    unsigned long printed;
};

/* The kinds each flag adds. */
static const struct {
    const char *flag;
    enum th_journal_kind kinds[4];
    int n;
} groups[] = {
    {"connections", {TH_JOURNAL_CONNECTED, TH_JOURNAL_DISCONNECTED, TH_JOURNAL_REFUSED}, 3},
    {"twin", {TH_JOURNAL_REPORTED, TH_JOURNAL_DESIRED, TH_JOURNAL_TWIN_GET}, 3},
    {"methods", {TH_JOURNAL_METHOD}, 1},
    {"c2d", {TH_JOURNAL_C2D}, 1},
};

/* Whether the record passes --device/--module (any of those given) and the kinds. */
static bool wanted(const struct monitor *m, const struct th_journal_record *r)
{
    if (r->kind == TH_JOURNAL_OTHER ? !m->other : !m->kinds[r->kind])
        return false;
    bool dev_given = false, dev_ok = false, mod_given = false, mod_ok = false;
    for (int i = 0; i < m->a->nopts; i++) {
        const struct th_optval *o = &m->a->opts[i];
        if (!strcmp(o->name, "device")) {
            dev_given = true;
            dev_ok |= r->device_id && !strcmp(r->device_id, o->value);
        } else if (!strcmp(o->name, "module")) {
            mod_given = true;
            mod_ok |= r->module_id && !strcmp(r->module_id, o->value);
        }
    }
    return (!dev_given || dev_ok) && (!mod_given || mod_ok);
}

/* A JSON value on one line, or indented under a label. */
static void print_value(const char *label, const cJSON *v)
{
    char *text = v ? cJSON_PrintUnformatted(v) : NULL;
    printf("  %s: %s\n", label, text ? text : "{}");
    free(text);
}

static void print_body(const struct th_journal_record *r)
{
    const char *body = r->as.telemetry.body;
    if (!body) {
        printf("  body: (%d bytes, not UTF-8) base64 %s\n", (int)th_json_number(r->data, "size", 0),
               th_json_string(r->data, "bodyBase64", ""));
        return;
    }
    cJSON *doc = NULL;
    struct th_error err = {0};
    if (th_json_parse(body, strlen(body), MAX_RECORD_BYTES, 64, &doc, &err) == TH_OK) {
        char *pretty = cJSON_Print(doc);
        /* cJSON indents with tabs and writes "key":<tab>value: two spaces and ": " instead. */
        printf("  body:");
        for (const char *p = pretty; p && *p; p++) {
            if (p == pretty)
                putchar(' ');
            if (*p == '\t')
                fputs(p > pretty && p[-1] == ':' ? " " : "  ", stdout);
            else if (*p == '\n')
                fputs("\n    ", stdout);
            else
                putchar(*p);
        }
        printf("\n");
        free(pretty);
        cJSON_Delete(doc);
        return;
    }
    printf("  body: %s\n", body);
}

static void print_record(struct monitor *m, const char *text, size_t len,
                         const struct th_journal_record *r)
{
    m->printed++;
    if (m->json) {
        printf("%.*s\n", (int)len, text);
        fflush(stdout);
        return;
    }
    char when[TH_TIME_BUF];
    th_time_format(r->time_us, when);
    printf("%s %s %s%s%s\n", when, r->kind_name, r->device_id ? r->device_id : "-",
           r->module_id ? "/" : "", r->module_id ? r->module_id : "");
    if (r->kind == TH_JOURNAL_TELEMETRY) {
        print_value("system properties", r->as.telemetry.system_properties);
        print_value("application properties", r->as.telemetry.properties);
        print_body(r);
    } else if (r->data && cJSON_GetArraySize(r->data) > 0) {
        print_value("data", r->data);
    }
    fflush(stdout);
}

/* One record's text: print it when it passes the filters. False when it is no record. */
static bool take(struct monitor *m, const char *text, size_t len, struct th_error *err)
{
    cJSON *json = NULL;
    struct th_journal_record r;
    if (th_journal_parse_text(text, len, MAX_RECORD_BYTES, 64, &json, &r, err) != TH_OK)
        return false;
    if (wanted(m, &r))
        print_record(m, text, len, &r);
    cJSON_Delete(json);
    return true;
}

static void on_event(void *arg, const char *topic, const void *payload, int len)
{
    struct th_error err = {0};
    (void)topic;
    if (len > 0 && !take(arg, payload, (size_t)len, &err))
        fprintf(stderr, "twinhub monitor: an event that is not a record was skipped: %s\n",
                err.message);
}

/* --recording FILE: every line a record; blank lines skipped. */
static int print_recording(struct monitor *m, const char *path)
{
    size_t len = 0;
    char *text = th_file_read(path, MAX_RECORDING_BYTES, &len);
    if (!text) {
        fprintf(stderr, "twinhub monitor: cannot read %s: %s\n", path, strerror(errno));
        return TH_EXIT_FAIL;
    }
    int line = 0, rc = TH_EXIT_OK;
    for (char *p = text, *next; p < text + len; p = next) {
        char *nl = memchr(p, '\n', (size_t)(text + len - p));
        next = nl ? nl + 1 : text + len;
        size_t n = (size_t)((nl ? nl : text + len) - p);
        line++;
        if (n && p[n - 1] == '\r')
            n--;
        size_t blank = 0;
        while (blank < n && (p[blank] == ' ' || p[blank] == '\t'))
            blank++;
        if (blank == n)
            continue;
        struct th_error err = {0};
        if (!take(m, p, n, &err)) {
            fprintf(stderr, "twinhub monitor: %s line %d: %s\n", path, line, err.message);
            rc = TH_EXIT_FAIL;
            break;
        }
    }
    free(text);
    return rc;
}

/* Read the kinds from the flags; -1, or TH_EXIT_USAGE after a message. */
static int choose_kinds(struct monitor *m)
{
    const struct th_args *a = m->a;
    bool all = th_args_has(a, "all");
    /* Telemetry unless --kind names the kinds (then only those it names). */
    m->kinds[TH_JOURNAL_TELEMETRY] = !th_args_has(a, "kind");
    for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++)
        if (all || th_args_has(a, groups[g].flag))
            for (int k = 0; k < groups[g].n; k++)
                m->kinds[groups[g].kinds[k]] = true;
    if (all) {
        for (int k = 0; k < TH_JOURNAL_KIND_COUNT; k++)
            m->kinds[k] = true;
        m->other = true;
    }
    for (int i = 0; i < a->nopts; i++) {
        if (strcmp(a->opts[i].name, "kind"))
            continue;
        char *list = strdup(a->opts[i].value), *save = NULL;
        if (!list)
            return th_oom();
        for (char *k = strtok_r(list, ",", &save); k; k = strtok_r(NULL, ",", &save)) {
            enum th_journal_kind kind = th_journal_kind_of(k);
            if (kind == TH_JOURNAL_OTHER) {
                int rc = th_usage_error(a, "unknown event kind '%s' for --kind (docs/recording.md "
                                           "lists the kinds)",
                                        k);
                free(list);
                return rc;
            }
            m->kinds[kind] = true;
        }
        free(list);
    }
    return -1;
}

static int monitor_run(const struct th_args *a, const char *const *args, int nargs)
{
    (void)args;
    (void)nargs;
    struct monitor m = {.a = a, .json = a->json};
    int rc = choose_kinds(&m);
    if (rc >= 0)
        return rc;
    const char *recording = th_args_get(a, "recording");
    if (recording)
        return print_recording(&m, recording);

    sigset_t old;
    bool blocked;
    int sig = th_signals_open(&old, &blocked);
    if (sig < 0) {
        fprintf(stderr, "twinhub monitor: cannot watch for Ctrl-C: %s\n", strerror(errno));
        return TH_EXIT_FAIL;
    }
    struct th_client *c;
    rc = th_client_open_events(a, TH_CLI_DEFAULT_TIMEOUT_S, on_event, &m, &c);
    if (rc >= 0) {
        close(sig);
        return rc;
    }
    fprintf(stderr, "twinhub monitor: following the hub's events; Ctrl-C to stop\n");
    struct th_ctl_client *ctl = th_client_ctl(c);
    rc = -1;
    while (rc < 0) {
        int fd = th_ctl_client_socket(ctl);
        if (fd < 0 || th_ctl_client_lost(ctl)) {
            fprintf(stderr, "twinhub monitor: the connection to the hub was lost (did `twinhub "
                            "serve` stop?)\n");
            rc = TH_EXIT_UNREACHABLE;
            break;
        }
        struct pollfd p[2] = {{.fd = fd, .events = th_ctl_client_events(ctl)},
                              {.fd = sig, .events = POLLIN}};
        int n = poll(p, 2, 1000);
        if (n < 0 && errno != EINTR) {
            rc = TH_EXIT_FAIL;
            break;
        }
        if (p[1].revents & POLLIN) {
            struct signalfd_siginfo si;
            if (read(sig, &si, sizeof si) == sizeof si && si.ssi_signo != SIGCHLD)
                rc = TH_EXIT_OK;
        }
        th_ctl_client_io(ctl, n > 0 ? p[0].revents : 0);
    }
    th_client_close(c);
    close(sig);
    if (rc == TH_EXIT_OK && !m.json)
        fprintf(stderr, "twinhub monitor: %lu event%s shown\n", m.printed,
                m.printed == 1 ? "" : "s");
    return rc;
}

static const struct th_optspec monitor_specs[] = {
    {"device", 'd', true},  {"module", 'm', true},   {"kind", 0, true},
    {"connections", 0, false}, {"twin", 0, false},  {"methods", 0, false},
    {"c2d", 0, false},      {"all", 0, false},       {"recording", 0, true},
    {NULL, 0, false},
};

static const struct th_action monitor_actions[] = {
    {NULL, monitor_run, "device module kind connections twin methods c2d all recording", 0, 0,
     ""},
    {NULL, NULL, NULL, 0, 0, NULL},
};

void th_usage_monitor(FILE *out)
{
    fprintf(out,
            "usage: twinhub monitor [--device ID]... [--module ID]... [--connections] [--twin]\n"
            "                       [--methods] [--c2d] [--all] [--kind KIND[,KIND]]...\n"
            "                       [--json] [--recording FILE]\n"
            "\n"
            "Follow the running hub's events and print each one as it happens: telemetry\n"
            "with its system and application properties and its body (as JSON or text\n"
            "when it is). Ctrl-C stops it.\n"
            "\n"
            "  --device ID, -d ID  only this device's events (repeatable: any of them)\n"
            "  --module ID, -m ID  only this module's events (repeatable)\n"
            "  --connections       also connections: connected, disconnected, refused\n"
            "  --twin              also twin traffic: reported, desired, twinGet\n"
            "  --methods           also direct method calls and their answers\n"
            "  --c2d               also cloud-to-device messages\n"
            "  --all               every kind (marks, identity changes, protocol errors)\n"
            "  --kind KIND         exactly these kinds (docs/recording.md), telemetry only\n"
            "                      when named\n"
            "  --json              each event as one JSON line (the recording's format)\n"
            "  --recording FILE    print a recording (twinhub serve --record) the same way\n"
            "                      and end\n");
    th_global_options_usage(out);
}

int th_cmd_monitor(int argc, char **argv)
{
    return th_run_command("monitor", monitor_actions, monitor_specs, th_usage_monitor, argc, argv);
}
