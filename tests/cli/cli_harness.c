/*
 * cli_harness.c - running `twinhub` and `twinhub serve` for CLI tests, and an
 * MQTT identity that reports like an agent (see cli_harness.h).
 */
#define _GNU_SOURCE
#include "cli_harness.h"
#include "th_net.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <mosquitto.h>

#include "sas.h"

#define CMD_TIMEOUT_MS 30000
#define READY_TIMEOUT_MS 20000
#define STOP_TIMEOUT_MS 15000
#define MQTT_WAIT_S 10

/* ---- processes ---------------------------------------------------------------------------- */

void cli_result_free(struct cli_result *r)
{
    free(r->out);
    free(r->err);
    memset(r, 0, sizeof *r);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct buf {
    char *data;
    size_t len, cap;
};

static void buf_add(struct buf *b, const char *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1)
            cap *= 2;
        b->data = realloc(b->data, cap);
        assert_non_null(b->data);
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

char *cli_slurp(const char *file)
{
    FILE *f = fopen(file, "r");
    struct buf b = {0};
    char chunk[4096];
    size_t n;
    buf_add(&b, "", 0);
    while (f && (n = fread(chunk, 1, sizeof chunk, f)) > 0)
        buf_add(&b, chunk, n);
    if (f)
        fclose(f);
    return b.data;
}

void cli_write_file(const char *file, const char *text)
{
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
}

static const char *twinhub_bin(void)
{
    const char *bin = getenv("TWINHUB_BIN");
    if (!bin || !*bin)
        fail_msg("TWINHUB_BIN is not set (meson sets it)");
    return bin;
}

struct cli_result cli_run_argv(const char *const *args)
{
    struct cli_result r = {.code = -1};
    const char *argv[64];
    int n = 0;
    argv[n++] = twinhub_bin();
    for (int i = 0; args[i]; i++) {
        assert_true(n < 63);
        argv[n++] = args[i];
    }
    argv[n] = NULL;
    int outp[2], errp[2];
    assert_int_equal(pipe2(outp, O_CLOEXEC), 0);
    assert_int_equal(pipe2(errp, O_CLOEXEC), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDONLY);
        dup2(devnull, 0);
        dup2(outp[1], 1);
        dup2(errp[1], 2);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(outp[1]);
    close(errp[1]);
    struct buf ob = {0}, eb = {0};
    buf_add(&ob, "", 0);
    buf_add(&eb, "", 0);
    struct pollfd fds[2] = {{.fd = outp[0], .events = POLLIN}, {.fd = errp[0], .events = POLLIN}};
    int open_fds = 2;
    int64_t deadline = now_ms() + CMD_TIMEOUT_MS;
    while (open_fds > 0) {
        int64_t left = deadline - now_ms();
        if (left <= 0)
            break;
        if (poll(fds, 2, (int)left) < 0 && errno != EINTR)
            break;
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            char chunk[4096];
            ssize_t got = read(fds[i].fd, chunk, sizeof chunk);
            if (got > 0) {
                buf_add(i == 0 ? &ob : &eb, chunk, (size_t)got);
            } else if (got == 0 || errno != EINTR) {
                close(fds[i].fd);
                fds[i].fd = -1;
                open_fds--;
            }
        }
    }
    for (int i = 0; i < 2; i++)
        if (fds[i].fd >= 0)
            close(fds[i].fd);
    int status;
    if (open_fds > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        print_error("twinhub %s did not finish within %d ms; killed it\n", args[0], CMD_TIMEOUT_MS);
    } else if (waitpid(pid, &status, 0) == pid && WIFEXITED(status)) {
        r.code = WEXITSTATUS(status);
    }
    r.out = ob.data;
    r.err = eb.data;
    return r;
}

/* Print `text` as TAP comment lines, each prefixed with "# <label>: ". */
static void print_lines(const char *label, const char *text)
{
    const char *p = text ? text : "";
    do {
        size_t len = strcspn(p, "\n");
        print_message("# %s: %.*s\n", label, (int)len, p);
        p += len;
        if (*p == '\n')
            p++;
    } while (*p);
}

static void show(const char *what, const struct cli_result *r)
{
    print_message("# %s: exit %d\n", what, r->code);
    print_lines("stdout", r->out);
    print_lines("stderr", r->err);
}

void cli_expect_code(const struct cli_result *r, int code)
{
    if (r->code != code)
        show("unexpected exit status", r);
    assert_int_equal(r->code, code);
}

void cli_expect_in(const char *haystack, const char *needle, const struct cli_result *r)
{
    if (!strstr(haystack, needle)) {
        print_message("# expected to find: %s\n", needle);
        show("missing text", r);
    }
    assert_non_null(strstr(haystack, needle));
}

void cli_expect_not_in(const char *haystack, const char *needle, const struct cli_result *r)
{
    if (strstr(haystack, needle)) {
        print_message("# expected not to find: %s\n", needle);
        show("unexpected text", r);
    }
    assert_null(strstr(haystack, needle));
}

cJSON *cli_json_of(const struct cli_result *r)
{
    cJSON *j = cJSON_Parse(r->out);
    if (!j)
        show("stdout is not JSON", r);
    assert_non_null(j);
    return j;
}

const cJSON *cli_path(const cJSON *obj, const char *dotted)
{
    char key[256];
    const char *p = dotted;
    while (obj && *p) {
        size_t len = strcspn(p, ".");
        snprintf(key, sizeof key, "%.*s", (int)len, p);
        obj = cJSON_GetObjectItemCaseSensitive(obj, key);
        p += len;
        if (*p == '.')
            p++;
    }
    return obj;
}

/* ---- the hub ------------------------------------------------------------------------------ */

static void print_file(const char *label, const char *file)
{
    FILE *f = fopen(file, "r");
    char line[1024];
    if (!f)
        return;
    while (fgets(line, sizeof line, f))
        print_message("# %s: %s", label, line);
    fclose(f);
}

/*
 * Start `twinhub serve` once; true when it printed "twinhub: ready" within
 * READY_TIMEOUT_MS. *in_use tells a lost port race from other failures.
 */
static bool hub_start_once(struct cli_hub *h, bool *in_use)
{
    char mqtt[16], mqtts[16];
    snprintf(mqtt, sizeof mqtt, "%d", th_free_loopback_port());
    snprintf(mqtts, sizeof mqtts, "%d", th_free_loopback_port());
    int outp[2];
    if (pipe2(outp, O_CLOEXEC) != 0)
        return false;
    const char *argv[] = {twinhub_bin(), "serve",      "--mqtt-port", mqtt,          "--mqtts-port",
                          mqtts,         "--cert-dir", h->cert_dir,   "--state-dir", h->state_dir,
                          "--record",    h->record,    "--info-file", h->info,       "--https-port",
                          "0",           NULL};
    pid_t pid = fork();
    if (pid < 0)
        return false;
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDONLY);
        int errfd = open(h->serve_err, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(devnull, 0);
        dup2(outp[1], 1);
        dup2(errfd, 2);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(outp[1]);
    h->pid = pid;
    snprintf(h->hub_file, sizeof h->hub_file, "%s/hubs/%ld.json", h->cert_dir, (long)pid);
    h->out_fd = outp[0];
    struct buf b = {0};
    buf_add(&b, "", 0);
    int64_t deadline = now_ms() + READY_TIMEOUT_MS;
    bool ready = false;
    while (!ready) {
        int64_t left = deadline - now_ms();
        struct pollfd pfd = {.fd = h->out_fd, .events = POLLIN};
        if (left <= 0 || (poll(&pfd, 1, (int)left) < 0 && errno != EINTR))
            break;
        char chunk[4096];
        ssize_t n = read(h->out_fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        buf_add(&b, chunk, (size_t)n);
        ready = strstr(b.data, "twinhub: ready\n") != NULL;
    }
    free(b.data);
    if (ready)
        return true;
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    close(h->out_fd);
    h->pid = 0;
    FILE *f = fopen(h->serve_err, "r");
    char line[1024];
    while (f && fgets(line, sizeof line, f))
        if (strstr(line, "in use"))
            *in_use = true;
    if (f)
        fclose(f);
    print_file("serve stderr", h->serve_err);
    return false;
}

void cli_hub_start(struct cli_hub *h)
{
    cli_hub_start_in(h, NULL);
}

void cli_hub_start_in(struct cli_hub *h, const char *cert_dir)
{
    memset(h, 0, sizeof *h);
    const char *tmp = getenv("TMPDIR");
    snprintf(h->dir, sizeof h->dir, "%s/twinhub-cli-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    assert_non_null(mkdtemp(h->dir));
    if (cert_dir)
        snprintf(h->cert_dir, sizeof h->cert_dir, "%s", cert_dir);
    else
        snprintf(h->cert_dir, sizeof h->cert_dir, "%s/certs", h->dir);
    snprintf(h->state_dir, sizeof h->state_dir, "%s/state", h->dir);
    snprintf(h->record, sizeof h->record, "%s/recording.jsonl", h->dir);
    snprintf(h->info, sizeof h->info, "%s/info.json", h->dir);
    snprintf(h->serve_err, sizeof h->serve_err, "%s/serve.err", h->dir);
    snprintf(h->flag, sizeof h->flag, "--cert-dir=%s", h->cert_dir);
    cli_hub_restart(h);
}

void cli_hub_restart(struct cli_hub *h)
{
    for (int attempt = 0; attempt < 3; attempt++) {
        bool in_use = false;
        if (hub_start_once(h, &in_use))
            return;
        if (!in_use)
            break;
    }
    fail_msg("twinhub serve did not become ready");
}

int cli_hub_stop(struct cli_hub *h)
{
    if (h->pid <= 0)
        return -1;
    kill(h->pid, SIGTERM);
    int64_t deadline = now_ms() + STOP_TIMEOUT_MS;
    for (;;) {
        int64_t left = deadline - now_ms();
        struct pollfd pfd = {.fd = h->out_fd, .events = POLLIN};
        if (left <= 0) {
            kill(h->pid, SIGKILL);
            break;
        }
        if (poll(&pfd, 1, (int)left) < 0 && errno != EINTR)
            break;
        char chunk[4096];
        ssize_t n = read(h->out_fd, chunk, sizeof chunk);
        if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
            break;
    }
    close(h->out_fd);
    int status = 0;
    waitpid(h->pid, &status, 0);
    h->pid = 0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        print_file("serve stderr", h->serve_err);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

void cli_hub_remove_dir(struct cli_hub *h)
{
    if (h->dir[0])
        nftw(h->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- an identity over MQTT ---------------------------------------------------------------- */

struct cli_identity {
    struct mosquitto *mosq;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int subscribed; /* 1 once the hub acknowledged the twin subscription */
    int next_rid;
    int waiting_rid; /* the request whose answer is awaited */
    int answer;      /* its status, 0 until it came */
};

static void id_on_connect(struct mosquitto *mosq, void *obj, int rc)
{
    (void)obj;
    if (rc == 0)
        mosquitto_subscribe(mosq, NULL, "$iothub/twin/res/#", 0);
}

static void id_on_subscribe(struct mosquitto *mosq, void *obj, int mid, int n, const int *q)
{
    (void)mosq;
    (void)mid;
    struct cli_identity *c = obj;
    pthread_mutex_lock(&c->mu);
    c->subscribed = n > 0 && q[0] < 128;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void id_on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *m)
{
    (void)mosq;
    struct cli_identity *c = obj;
    /* $iothub/twin/res/{status}/?$rid={rid}[&$version=n] */
    int status = 0, rid = -1;
    const char *r = strstr(m->topic, "$rid=");
    if (sscanf(m->topic, "$iothub/twin/res/%d/", &status) != 1 || !r)
        return;
    rid = atoi(r + 5);
    pthread_mutex_lock(&c->mu);
    if (rid == c->waiting_rid) {
        c->answer = status;
        pthread_cond_broadcast(&c->cv);
    }
    pthread_mutex_unlock(&c->mu);
}

/* Wait on c->cv until *flag is non-zero or MQTT_WAIT_S passed; c->mu is held. */
static void wait_locked(struct cli_identity *c, const int *flag)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += MQTT_WAIT_S;
    while (!*flag && pthread_cond_timedwait(&c->cv, &c->mu, &until) == 0)
        ;
}

void cli_login_of(const struct cli_hub *h, const char *device_id, const char *module_id,
                  struct cli_login *l)
{
    struct cli_result r = module_id
                              ? CLI_RUN("module", "show", device_id, module_id, "--json", h->flag)
                              : CLI_RUN("device", "show", device_id, "--json", h->flag);
    cli_expect_code(&r, 0);
    cJSON *id = cli_json_of(&r);
    const char *key = cJSON_GetStringValue(cli_path(id, "authentication.symmetricKey.primaryKey"));
    assert_non_null(key);
    char *info_text = cli_slurp(h->info);
    cJSON *info = cJSON_Parse(info_text);
    free(info_text);
    assert_non_null(info);
    const char *hub = cJSON_GetStringValue(cli_path(info, "hubName"));
    l->port = (int)cJSON_GetNumberValue(cli_path(info, "mqttPort"));
    assert_non_null(hub);
    char resource[512];
    if (module_id) {
        snprintf(resource, sizeof resource, "%s/devices/%s/modules/%s", hub, device_id, module_id);
        snprintf(l->user, sizeof l->user, "%s/%s/%s/?api-version=2021-04-12", hub, device_id,
                 module_id);
        snprintf(l->client_id, sizeof l->client_id, "%s/%s", device_id, module_id);
    } else {
        snprintf(resource, sizeof resource, "%s/devices/%s", hub, device_id);
        snprintf(l->user, sizeof l->user, "%s/%s/?api-version=2021-04-12", hub, device_id);
        snprintf(l->client_id, sizeof l->client_id, "%s", device_id);
    }
    assert_int_equal(th_sas_sign(resource, key, time(NULL) + 3600, NULL, l->token, sizeof l->token),
                     TH_OK);
    cJSON_Delete(info);
    cJSON_Delete(id);
    cli_result_free(&r);
}

struct cli_identity *cli_identity_connect(const struct cli_hub *h, const char *device_id,
                                          const char *module_id)
{
    struct cli_login l;
    cli_login_of(h, device_id, module_id, &l);
    struct cli_identity *c = calloc(1, sizeof *c);
    assert_non_null(c);
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    c->next_rid = 1;
    c->waiting_rid = -1;
    mosquitto_lib_init();
    c->mosq = mosquitto_new(l.client_id, true, c);
    assert_non_null(c->mosq);
    mosquitto_connect_callback_set(c->mosq, id_on_connect);
    mosquitto_subscribe_callback_set(c->mosq, id_on_subscribe);
    mosquitto_message_callback_set(c->mosq, id_on_message);
    mosquitto_username_pw_set(c->mosq, l.user, l.token);
    assert_int_equal(mosquitto_connect(c->mosq, "127.0.0.1", l.port, 60), MOSQ_ERR_SUCCESS);
    assert_int_equal(mosquitto_loop_start(c->mosq), MOSQ_ERR_SUCCESS);
    pthread_mutex_lock(&c->mu);
    wait_locked(c, &c->subscribed);
    bool done = c->subscribed;
    pthread_mutex_unlock(&c->mu);
    if (!done)
        print_message("# %s did not get its twin subscription acknowledged\n", l.client_id);
    assert_true(done);
    return c;
}

int cli_identity_report(struct cli_identity *c, const char *patch)
{
    char topic[128];
    pthread_mutex_lock(&c->mu);
    int rid = c->next_rid++;
    c->waiting_rid = rid;
    c->answer = 0;
    pthread_mutex_unlock(&c->mu);
    snprintf(topic, sizeof topic, "$iothub/twin/PATCH/properties/reported/?$rid=%d", rid);
    assert_int_equal(mosquitto_publish(c->mosq, NULL, topic, (int)strlen(patch), patch, 0, false),
                     MOSQ_ERR_SUCCESS);
    pthread_mutex_lock(&c->mu);
    wait_locked(c, &c->answer);
    int answer = c->answer ? c->answer : -1;
    c->waiting_rid = -1;
    pthread_mutex_unlock(&c->mu);
    return answer;
}

void cli_identity_publish(struct cli_identity *c, const char *topic, const char *payload)
{
    assert_int_equal(mosquitto_publish(c->mosq, NULL, topic, (int)strlen(payload), payload, 0,
                                       false),
                     MOSQ_ERR_SUCCESS);
}

void cli_identity_close(struct cli_identity *c)
{
    if (!c)
        return;
    mosquitto_disconnect(c->mosq);
    mosquitto_loop_stop(c->mosq, false);
    mosquitto_destroy(c->mosq);
    mosquitto_lib_cleanup();
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}
