/*
 * test_cli.c - end-to-end tests of the `twinhub` admin commands
 * (docs/cli.md): starts the real `twinhub serve` (mosquitto with the built
 * plugin) on free loopback ports with a temporary cert dir, state dir and
 * recording, runs the real `twinhub device|module|twin|method|c2d|query|
 * export|import|stats` processes against it, and checks their output and
 * exit codes.
 *
 * Every test makes the state it needs itself and passes alone, in any order
 * and beside any other test. Tests that only touch identities of their own
 * share one hub (hub_a, ids prefixed with a short tag of the test); tests
 * whose assertions depend on the whole hub (counts over every device, module
 * ensure over every device, query results, export of the registry, restarts)
 * get a fresh hub from a setup/teardown fixture. To prove it:
 * TH_CLI_TEST_ORDER=reverse (or shuffle:SEED) reorders the run and
 * TH_CLI_TEST_ONLY=name[,name...] runs only the named tests, in that order.
 *
 * Nothing sleeps: readiness is the "twinhub: ready" line read from serve's
 * stdout with a bounded poll(), and every child process is waited for with a
 * bounded poll() on its output pipes.
 *
 * Environment: TWINHUB_BIN (the twinhub executable), set by meson;
 * TH_CLI_TEST_ORDER and TH_CLI_TEST_ONLY as above (both optional).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
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
#include <cjson/cJSON.h>
#include <mosquitto.h>

#include "sas.h"

#define PATH_LEN 4096
#define CMD_TIMEOUT_MS 30000
#define READY_TIMEOUT_MS 20000
#define STOP_TIMEOUT_MS 15000

/* ---- processes ---------------------------------------------------------------------------- */

struct result {
    int code; /* exit status, or -1 when killed or not started */
    char *out;
    char *err;
};

static void result_free(struct result *r)
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

/* A whole file as a string (empty when unreadable); the caller frees. */
static char *slurp(const char *file)
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

static const char *twinhub_bin(void)
{
    const char *bin = getenv("TWINHUB_BIN");
    if (!bin || !*bin)
        fail_msg("TWINHUB_BIN is not set (meson sets it)");
    return bin;
}

/*
 * Run `twinhub argv...` (NULL-terminated, without the program name) with
 * stdin from /dev/null, collect stdout and stderr, and wait for it, at most
 * CMD_TIMEOUT_MS.
 */
static struct result run_argv(const char *const *args)
{
    struct result r = {.code = -1};
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

#define RUN(...) run_argv((const char *const[]){__VA_ARGS__, NULL})

/* Show what a command printed when an assertion about it is about to fail. */
static void show(const char *what, const struct result *r)
{
    print_message("# %s: exit %d\n# stdout: %s\n# stderr: %s\n", what, r->code, r->out, r->err);
}

static void expect_code(const struct result *r, int code)
{
    if (r->code != code)
        show("unexpected exit status", r);
    assert_int_equal(r->code, code);
}

static void expect_in(const char *haystack, const char *needle, const struct result *r)
{
    if (!strstr(haystack, needle)) {
        print_message("# expected to find: %s\n", needle);
        show("missing text", r);
    }
    assert_non_null(strstr(haystack, needle));
}

/* Parse a command's stdout as JSON; fails the test when it is not. */
static cJSON *json_of(const struct result *r)
{
    cJSON *j = cJSON_Parse(r->out);
    if (!j)
        show("stdout is not JSON", r);
    assert_non_null(j);
    return j;
}

/* obj.a.b.c... as an item; NULL when any step is missing. */
static const cJSON *path(const cJSON *obj, const char *dotted)
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

struct hub {
    char dir[1024];
    char cert_dir[2048];
    char state_dir[2048];
    char record[2048];
    char info[2048];
    char hub_file[PATH_LEN]; /* cert_dir/hubs/<pid>.json */
    char serve_err[2048];
    char flag[PATH_LEN + 16]; /* "--cert-dir=<cert_dir>", the admin commands' way to it */
    pid_t pid;
    int out_fd; /* serve's stdout */
};

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(sa.sin_port);
}

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
static bool hub_start_once(struct hub *h, bool *in_use)
{
    char mqtt[16], mqtts[16];
    snprintf(mqtt, sizeof mqtt, "%d", free_port());
    snprintf(mqtts, sizeof mqtts, "%d", free_port());
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

static void hub_restart(struct hub *h);

/* A hub in a new temporary directory; fails the test when it does not come up. */
static void hub_start(struct hub *h)
{
    memset(h, 0, sizeof *h);
    const char *tmp = getenv("TMPDIR");
    snprintf(h->dir, sizeof h->dir, "%s/twinhub-cli-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    assert_non_null(mkdtemp(h->dir));
    snprintf(h->cert_dir, sizeof h->cert_dir, "%s/certs", h->dir);
    snprintf(h->state_dir, sizeof h->state_dir, "%s/state", h->dir);
    snprintf(h->record, sizeof h->record, "%s/recording.jsonl", h->dir);
    snprintf(h->info, sizeof h->info, "%s/info.json", h->dir);
    snprintf(h->serve_err, sizeof h->serve_err, "%s/serve.err", h->dir);
    snprintf(h->flag, sizeof h->flag, "--cert-dir=%s", h->cert_dir);
    hub_restart(h);
}

/* Start serve again with the same directories (and new ports) after hub_stop. */
static void hub_restart(struct hub *h)
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

/*
 * SIGTERM serve and wait for it: its stdout reaches EOF when it exits (the
 * broker writes into a pipe of its own). Returns serve's exit status.
 */
static int hub_stop(struct hub *h)
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
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static void hub_remove_dir(struct hub *h)
{
    if (h->dir[0])
        nftw(h->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- fixtures ----------------------------------------------------------------------------- */

/*
 * The shared hub: started once for the group, handed to the tests that only
 * touch identities of their own (cmocka_unit_test_prestate). Each of those
 * tests prefixes its ids with a tag of its own, so none sees another's state.
 */
static struct hub hub_a;

static int group_setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    hub_start(&hub_a);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    int rc = hub_stop(&hub_a);
    if (rc != 0)
        print_file("serve stderr", hub_a.serve_err);
    hub_remove_dir(&hub_a);
    return rc == 0 ? 0 : -1;
}

/* A hub of the test's own, for assertions about the whole hub; *state owns it. */
static int fresh_hub_setup(void **state)
{
    struct hub *h = calloc(1, sizeof *h);
    assert_non_null(h);
    *state = h;
    hub_start(h);
    return 0;
}

/* Stops the test's hub (unless the test already did) and removes its directory. */
static int fresh_hub_teardown(void **state)
{
    struct hub *h = *state;
    int rc = 0;
    if (!h)
        return 0;
    if (h->pid > 0) {
        rc = hub_stop(h);
        if (rc != 0)
            print_file("serve stderr", h->serve_err);
    }
    hub_remove_dir(h);
    free(h);
    *state = NULL;
    return rc == 0 ? 0 : -1;
}

#define SHARED_HUB_TEST(f) cmocka_unit_test_prestate(f, &hub_a)
#define FRESH_HUB_TEST(f) cmocka_unit_test_setup_teardown(f, fresh_hub_setup, fresh_hub_teardown)

/* `twinhub device create ID` on hub h; fails the test unless it succeeds. */
static void create_device(const struct hub *h, const char *id)
{
    struct result r = RUN("device", "create", id, h->flag);
    expect_code(&r, 0);
    result_free(&r);
}

/* ---- serve -------------------------------------------------------------------------------- */

static void test_serve_hub_file_written_when_ready_succeeds(void **state)
{
    const struct hub *h = *state;
    struct stat st;
    assert_int_equal(stat(h->hub_file, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(stat(h->state_dir, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0700);
}

/* ---- device ------------------------------------------------------------------------------- */

static void test_device_create_new_id_succeeds(void **state)
{
    const struct hub *h = *state;
    struct result r = RUN("device", "create", "dcn-a", h->flag);
    expect_code(&r, 0);
    expect_in(r.out, "created device dcn-a", &r);
    expect_in(r.out, "primary key", &r);
    expect_in(r.out, "HostName=127.0.0.1;DeviceId=dcn-a;SharedAccessKey=", &r);
    result_free(&r);
}

static void test_device_create_given_keys_succeeds(void **state)
{
    const struct hub *h = *state;
    struct result r = RUN("device", "create", "dck-keys", "--primary-key",
                          "dHdpbmh1Yi1jbGktdGVzdC1wcmltYXJ5LWtleS0wMQ==", "--secondary-key",
                          "dHdpbmh1Yi1jbGktdGVzdC1zZWNvbmRhcnkta2V5LTE=", "--json", h->flag);
    expect_code(&r, 0);
    cJSON *j = json_of(&r);
    assert_string_equal(cJSON_GetStringValue(path(j, "authentication.symmetricKey.primaryKey")),
                        "dHdpbmh1Yi1jbGktdGVzdC1wcmltYXJ5LWtleS0wMQ==");
    cJSON_Delete(j);
    result_free(&r);
}

static void test_device_create_existing_id_fails(void **state)
{
    const struct hub *h = *state;
    create_device(h, "dce-a");
    struct result r = RUN("device", "create", "dce-a", h->flag);
    expect_code(&r, 1);
    expect_in(r.err, "errorCode 409001", &r);
    result_free(&r);
}

static void test_device_show_created_device_succeeds(void **state)
{
    const struct hub *h = *state;
    create_device(h, "dsc-a");
    struct result r = RUN("device", "show", "dsc-a", h->flag);
    expect_code(&r, 0);
    expect_in(r.out, "dsc-a", &r);
    expect_in(r.out, "enabled", &r);
    result_free(&r);
    r = RUN("--json", "device", "show", "dsc-a", h->flag);
    expect_code(&r, 0);
    cJSON *j = json_of(&r);
    assert_string_equal(cJSON_GetStringValue(path(j, "deviceId")), "dsc-a");
    assert_string_equal(cJSON_GetStringValue(path(j, "status")), "enabled");
    cJSON_Delete(j);
    result_free(&r);
}

static void test_device_create_edge_shows_scope_succeeds(void **state)
{
    const struct hub *h = *state;
    create_device(h, "dce-leaf");
    struct result r = RUN("device", "create", "dce-edge", "--edge", h->flag);
    expect_code(&r, 0);
    expect_in(r.out, "IoT Edge           yes", &r);
    expect_in(r.out, "device scope       ms-azure-iot-edge://dce-edge-", &r);
    result_free(&r);
    r = RUN("--json", "device", "show", "dce-edge", h->flag);
    expect_code(&r, 0);
    cJSON *j = json_of(&r);
    assert_true(cJSON_IsTrue(path(j, "capabilities.iotEdge")));
    assert_non_null(strstr(cJSON_GetStringValue(path(j, "deviceScope")), "dce-edge-"));
    cJSON_Delete(j);
    result_free(&r);
    r = RUN("device", "show", "dce-leaf", h->flag);
    expect_code(&r, 0);
    expect_in(r.out, "IoT Edge           no", &r);
    result_free(&r);
}

static void test_device_list_includes_created_device_succeeds(void **state)
{
    const struct hub *h = *state;
    create_device(h, "dli-a");
    struct result r = RUN("device", "list", h->flag);
    expect_code(&r, 0);
    expect_in(r.out, "DEVICE", &r);
    expect_in(r.out, "dli-a ", &r);
    expect_in(r.out, "dev-device ", &r);
    result_free(&r);
    r = RUN("device", "list", "--json", h->flag);
    expect_code(&r, 0);
    cJSON *j = json_of(&r);
    assert_true(cJSON_IsArray(j));
    bool found = false;
    const cJSON *d;
    cJSON_ArrayForEach(d, j)
    {
        found = found || !strcmp(cJSON_GetStringValue(path(d, "deviceId")), "dli-a");
    }
    assert_true(found);
    cJSON_Delete(j);
    result_free(&r);
}

static void test_device_update_disable_succeeds(void **state)
{
    const struct hub *h = *state;
    create_device(h, "dud-a");
    struct result r =
        RUN("device", "update", "dud-a", "--disable", "--status-reason", "maintenance", h->flag);
    expect_code(&r, 0);
    expect_in(r.out, "updated device dud-a", &r);
    expect_in(r.out, "disabled (maintenance)", &r);
    result_free(&r);
    r = RUN("device", "show", "dud-a", "--json", h->flag);
    expect_code(&r, 0);
    cJSON *j = json_of(&r);
    assert_string_equal(cJSON_GetStringValue(path(j, "status")), "disabled");
    assert_string_equal(cJSON_GetStringValue(path(j, "statusReason")), "maintenance");
    cJSON_Delete(j);
    result_free(&r);
}

static void test_device_update_wrong_etag_fails(void **state)
{
    const struct hub *h = *state;
    create_device(h, "due-a");
    struct result r = RUN("device", "update", "due-a", "--enable", "--etag", "bm9wZQ==", h->flag);
    expect_code(&r, 1);
    expect_in(r.err, "errorCode 412001", &r);
    result_free(&r);
}

static void test_device_delete_existing_succeeds(void **state)
{
    const struct hub *h = *state;
    create_device(h, "ddl-del");
    struct result r = RUN("device", "delete", "ddl-del", h->flag);
    expect_code(&r, 0);
    expect_in(r.out, "deleted device ddl-del", &r);
    result_free(&r);
    r = RUN("device", "show", "ddl-del", h->flag);
    expect_code(&r, 1);
    expect_in(r.err, "404001", &r);
    result_free(&r);
}

static void test_device_show_unknown_id_fails(void **state)
{
    const struct hub *h = *state;
    struct result r = RUN("device", "show", "no-such-device", h->flag);
    expect_code(&r, 1);
    expect_in(r.err, "twinhub: ", &r);
    expect_in(r.err, "no-such-device", &r);
    expect_in(r.err, "(status 404, errorCode 404001)", &r);
    assert_string_equal(r.out, "");
    result_free(&r);
}

/* ---- module ------------------------------------------------------------------------------- */

#define SEC_MODULE "cli-sec"
#define CUSTOM_DESIRED "{\"custom\":{\"level\":7},\"mode\":\"strict\"}"

/*
 * The module fleet: devices <prefix>-1 .. <prefix>-4, of which -1 and -2
 * already have SEC_MODULE with desired properties and tags of their own.
 */
static void create_module_fleet(const struct hub *h, const char *prefix)
{
    char dev[64];
    for (int i = 1; i <= 4; i++) {
        snprintf(dev, sizeof dev, "%s-%d", prefix, i);
        create_device(h, dev);
    }
    for (int i = 1; i <= 2; i++) {
        snprintf(dev, sizeof dev, "%s-%d", prefix, i);
        struct result r = RUN("module", "create", dev, SEC_MODULE, "--desired", CUSTOM_DESIRED,
                              "--tags", "{\"owner\":\"me\"}", h->flag);
        expect_code(&r, 0);
        expect_in(r.out, "created module", &r);
        expect_in(r.out, ";ModuleId=" SEC_MODULE ";", &r);
        result_free(&r);
    }
}

static void test_module_create_with_desired_succeeds(void **state)
{
    const struct hub *h = *state;
    create_module_fleet(h, "mcd");
    struct result r = RUN("module", "list", "mcd-1", h->flag);
    expect_code(&r, 0);
    expect_in(r.out, SEC_MODULE, &r);
    result_free(&r);
    r = RUN("module", "show", "mcd-1", SEC_MODULE, h->flag);
    expect_code(&r, 0);
    expect_in(r.out, SEC_MODULE, &r);
    result_free(&r);
}

/* Every device id of hub h, as a cJSON array of strings; the caller frees it with cJSON_Delete. */
static cJSON *all_device_ids(const struct hub *h)
{
    struct result r = RUN("device", "list", "--json", h->flag);
    expect_code(&r, 0);
    cJSON *list = json_of(&r), *ids = cJSON_CreateArray();
    const cJSON *d;
    cJSON_ArrayForEach(d, list)
        cJSON_AddItemToArray(ids, cJSON_CreateString(cJSON_GetStringValue(path(d, "deviceId"))));
    cJSON_Delete(list);
    result_free(&r);
    return ids;
}

static bool has_string(const cJSON *array, const char *s)
{
    const cJSON *v;
    cJSON_ArrayForEach(v, array)
    {
        if (cJSON_IsString(v) && !strcmp(v->valuestring, s))
            return true;
    }
    return false;
}

static void test_module_create_managed_by_succeeds(void **state)
{
    const struct hub *h = *state;
    struct result r = RUN("device", "create", "mmb-edge", "--edge", h->flag);
    expect_code(&r, 0);
    result_free(&r);
    r = RUN("module", "create", "mmb-edge", "edgeMod", "--managed-by", "IotEdge", h->flag);
    expect_code(&r, 0);
    expect_in(r.out, "managed by         IotEdge", &r);
    result_free(&r);
    r = RUN("module", "list", "mmb-edge", h->flag);
    expect_code(&r, 0);
    expect_in(r.out, "IotEdge", &r);
    result_free(&r);
}

/* Fresh hub: `module missing` counts over every device. */
static void test_module_missing_before_ensure_succeeds(void **state)
{
    const struct hub *h = *state;
    create_module_fleet(h, "ens");
    cJSON *ids = all_device_ids(h);
    int ndev = cJSON_GetArraySize(ids);
    struct result r = RUN("module", "missing", SEC_MODULE, "--json", h->flag);
    expect_code(&r, 0);
    cJSON *j = json_of(&r);
    assert_int_equal((int)cJSON_GetNumberValue(path(j, "count")), ndev - 2);
    const cJSON *missing = path(j, "deviceIds");
    assert_int_equal(cJSON_GetArraySize(missing), ndev - 2);
    assert_true(has_string(missing, "ens-3"));
    assert_false(has_string(missing, "ens-1"));
    assert_false(has_string(missing, "ens-2"));
    cJSON_Delete(j);
    result_free(&r);
    r = RUN("module", "missing", SEC_MODULE, h->flag);
    expect_code(&r, 0);
    expect_in(r.out, "without module " SEC_MODULE, &r);
    expect_in(r.out, "  ens-3\n", &r);
    result_free(&r);
    cJSON_Delete(ids);
}

/* Fresh hub: `module ensure` without --device acts on every device. */
static void test_module_ensure_skips_devices_with_module_succeeds(void **state)
{
    const struct hub *h = *state;
    create_module_fleet(h, "ens");
    cJSON *ids = all_device_ids(h);
    int ndev = cJSON_GetArraySize(ids);
    char expect[128];
    snprintf(expect, sizeof expect, "module %s: created %d, skipped 2\n", SEC_MODULE, ndev - 2);
    /* The twins of the modules that exist, to compare after the ensure. */
    cJSON *before[3] = {NULL};
    for (int i = 1; i <= 2; i++) {
        char dev[16];
        snprintf(dev, sizeof dev, "ens-%d", i);
        struct result t = RUN("twin", "show", dev, SEC_MODULE, "--json", h->flag);
        expect_code(&t, 0);
        before[i] = json_of(&t);
        result_free(&t);
    }
    struct result r = RUN("module", "ensure", SEC_MODULE, "--desired",
                          "{\"mode\":\"default\",\"interval\":60}", h->flag);
    expect_code(&r, 0);
    expect_in(r.out, expect, &r);
    expect_in(r.out, "  created  ens-3\n", &r);
    expect_in(r.out, "  skipped  ens-1\n", &r);
    expect_in(r.out, "  skipped  ens-2\n", &r);
    result_free(&r);

    /* The modules that existed keep their own desired properties and tags. */
    for (int i = 1; i <= 2; i++) {
        char dev[16];
        snprintf(dev, sizeof dev, "ens-%d", i);
        r = RUN("twin", "show", dev, SEC_MODULE, "--json", h->flag);
        expect_code(&r, 0);
        cJSON *twin = json_of(&r);
        const cJSON *desired = path(twin, "properties.desired");
        assert_int_equal((int)cJSON_GetNumberValue(path(desired, "custom.level")), 7);
        assert_string_equal(cJSON_GetStringValue(path(desired, "mode")), "strict");
        assert_null(path(desired, "interval"));
        assert_string_equal(cJSON_GetStringValue(path(twin, "tags.owner")), "me");
        /* Untouched: the same desired section ($version and $metadata included), tags, etag. */
        assert_true(cJSON_Compare(desired, path(before[i], "properties.desired"), true));
        assert_true(cJSON_Compare(path(twin, "tags"), path(before[i], "tags"), true));
        assert_string_equal(cJSON_GetStringValue(path(twin, "etag")),
                            cJSON_GetStringValue(path(before[i], "etag")));
        cJSON_Delete(before[i]);
        cJSON_Delete(twin);
        result_free(&r);
    }
    /* The new ones got the given desired properties. */
    r = RUN("twin", "show", "ens-3", SEC_MODULE, "--json", h->flag);
    expect_code(&r, 0);
    cJSON *twin = json_of(&r);
    assert_string_equal(cJSON_GetStringValue(path(twin, "properties.desired.mode")), "default");
    assert_int_equal((int)cJSON_GetNumberValue(path(twin, "properties.desired.interval")), 60);
    assert_null(path(twin, "properties.desired.custom"));
    cJSON_Delete(twin);
    result_free(&r);

    /* A second run finds nothing to do. */
    r = RUN("module", "ensure", SEC_MODULE, "--json", h->flag);
    expect_code(&r, 0);
    cJSON *j = json_of(&r);
    assert_int_equal((int)cJSON_GetNumberValue(path(j, "created")), 0);
    assert_int_equal((int)cJSON_GetNumberValue(path(j, "skipped")), ndev);
    cJSON_Delete(j);
    result_free(&r);
    cJSON_Delete(ids);
}

/* Shared hub: with --device, ensure touches only the listed devices (its own). */
static void test_module_ensure_listed_devices_succeeds(void **state)
{
    const struct hub *h = *state;
    create_device(h, "mel-1");
    create_device(h, "mel-5");
    struct result r = RUN("module", "ensure", "cli-other", "--device", "mel-5", "--device", "mel-1",
                          "--json", h->flag);
    expect_code(&r, 0);
    cJSON *j = json_of(&r);
    assert_int_equal((int)cJSON_GetNumberValue(path(j, "created")), 2);
    assert_int_equal((int)cJSON_GetNumberValue(path(j, "skipped")), 0);
    assert_true(has_string(path(j, "createdDevices"), "mel-5"));
    assert_true(has_string(path(j, "createdDevices"), "mel-1"));
    cJSON_Delete(j);
    result_free(&r);
    r = RUN("module", "ensure", "cli-other", "--device", "no-such-device", h->flag);
    expect_code(&r, 1);
    expect_in(r.err, "404001", &r);
    result_free(&r);
}

/* Fresh hub: after an ensure over every device, a device created later is the one missing. */
static void test_module_missing_after_ensure_succeeds(void **state)
{
    const struct hub *h = *state;
    create_module_fleet(h, "ens");
    struct result r = RUN("module", "ensure", SEC_MODULE, h->flag);
    expect_code(&r, 0);
    result_free(&r);
    create_device(h, "ens-5");
    r = RUN("module", "missing", SEC_MODULE, h->flag);
    expect_code(&r, 0);
    expect_in(r.out, "1 device without module " SEC_MODULE ":\n  ens-5\n", &r);
    result_free(&r);
    r = RUN("module", "ensure", SEC_MODULE, h->flag);
    expect_code(&r, 0);
    result_free(&r);
    r = RUN("module", "missing", SEC_MODULE, h->flag);
    expect_code(&r, 0);
    expect_in(r.out, "every device has module " SEC_MODULE, &r);
    result_free(&r);
}

static void test_module_delete_existing_succeeds(void **state)
{
    const struct hub *h = *state;
    create_device(h, "mdl-5");
    struct result r = RUN("module", "create", "mdl-5", "cli-other", h->flag);
    expect_code(&r, 0);
    result_free(&r);
    r = RUN("module", "delete", "mdl-5", "cli-other", h->flag);
    expect_code(&r, 0);
    expect_in(r.out, "deleted module mdl-5/cli-other", &r);
    result_free(&r);
    r = RUN("module", "show", "mdl-5", "cli-other", h->flag);
    expect_code(&r, 1);
    expect_in(r.err, "404010", &r);
    result_free(&r);
}

/* ---- twin --------------------------------------------------------------------------------- */

/* Two desired patches and a tags patch on `device`'s twin: fw 1.2, cfg {a:1,b:2}, site lab. */
static void patch_lab_twin(const struct hub *h, const char *device)
{
    char expect[128];
    snprintf(expect, sizeof expect, "twin of %s", device);
    struct result r =
        RUN("twin", "patch", device, "--desired", "{\"fw\":\"1.2\",\"cfg\":{\"a\":1}}", "--tags",
            "{\"site\":\"lab\"}", h->flag);
    expect_code(&r, 0);
    expect_in(r.out, expect, &r);
    result_free(&r);
    r = RUN("twin", "patch", device, "--desired", "{\"cfg\":{\"b\":2}}", h->flag);
    expect_code(&r, 0);
    result_free(&r);
}

static void test_twin_patch_then_show_succeeds(void **state)
{
    const struct hub *h = *state;
    create_device(h, "tps-3");
    patch_lab_twin(h, "tps-3");
    struct result r = RUN("twin", "show", "tps-3", h->flag);
    expect_code(&r, 0);
    expect_in(r.out, "\"fw\": \"1.2\"", &r);
    expect_in(r.out, "\"site\": \"lab\"", &r);
    assert_null(strstr(r.out, "$metadata"));
    result_free(&r);
    r = RUN("twin", "show", "tps-3", "--json", h->flag);
    expect_code(&r, 0);
    cJSON *twin = json_of(&r);
    assert_int_equal((int)cJSON_GetNumberValue(path(twin, "properties.desired.cfg.a")), 1);
    assert_int_equal((int)cJSON_GetNumberValue(path(twin, "properties.desired.cfg.b")), 2);
    assert_int_equal((int)cJSON_GetNumberValue(path(twin, "properties.desired.$version")), 3);
    assert_string_equal(cJSON_GetStringValue(path(twin, "tags.site")), "lab");
    cJSON_Delete(twin);
    result_free(&r);
}

static void test_twin_patch_from_file_succeeds(void **state)
{
    const struct hub *h = *state;
    create_device(h, "tpf-3");
    struct result r = RUN("module", "create", "tpf-3", SEC_MODULE, h->flag);
    expect_code(&r, 0);
    result_free(&r);
    char file[PATH_LEN + 32];
    snprintf(file, sizeof file, "%s/tpf-desired.json", h->dir);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fputs("{\"fromFile\": true}\n", f);
    fclose(f);
    r = RUN("twin", "patch", "tpf-3", SEC_MODULE, "--desired", file, "--json", h->flag);
    expect_code(&r, 0);
    cJSON *twin = json_of(&r);
    assert_true(cJSON_IsTrue(path(twin, "properties.desired.fromFile")));
    assert_string_equal(cJSON_GetStringValue(path(twin, "moduleId")), SEC_MODULE);
    cJSON_Delete(twin);
    result_free(&r);
}

/* ---- method and c2d ----------------------------------------------------------------------- */

/*
 * A minimal device on the plain listener that answers every direct method:
 * "fail" with status 500, "minus" with -1 and {} (the full C SDK's answer to an
 * unknown method), "text" with 200 and a body that is not JSON, anything else
 * with 200 and {"ok":true,"got":<payload>}.
 */
struct fake_device {
    struct mosquitto *mosq;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool subscribed;
};

static void dev_on_connect(struct mosquitto *mosq, void *obj, int rc)
{
    if (rc == 0)
        mosquitto_subscribe(mosq, NULL, "$iothub/methods/POST/#", 0);
}

static void dev_on_subscribe(struct mosquitto *mosq, void *obj, int mid, int n, const int *q)
{
    struct fake_device *d = obj;
    pthread_mutex_lock(&d->mu);
    d->subscribed = true;
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
}

static void dev_on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *m)
{
    /* $iothub/methods/POST/{name}/?$rid={rid} */
    const char *name = m->topic + strlen("$iothub/methods/POST/");
    const char *rid = strstr(m->topic, "$rid=");
    if (!rid)
        return;
    rid += 5;
    bool fail = !strncmp(name, "fail/", 5);
    bool minus = !strncmp(name, "minus/", 6);
    bool text = !strncmp(name, "text/", 5);
    char topic[256], body[1024];
    snprintf(topic, sizeof topic, "$iothub/methods/res/%d/?$rid=%.*s",
             fail    ? 500
             : minus ? -1
                     : 200,
             (int)strcspn(rid, "&"), rid);
    if (minus || text)
        snprintf(body, sizeof body, "%s", minus ? "{}" : "not json!");
    else
        snprintf(body, sizeof body, "{\"ok\":%s,\"got\":%.*s}", fail ? "false" : "true",
                 m->payloadlen > 0 ? m->payloadlen : 4,
                 m->payloadlen > 0 ? (char *)m->payload : "null");
    mosquitto_publish(mosq, NULL, topic, (int)strlen(body), body, 0, false);
}

/* Connect `device_id` of hub h (key from `device show`); wait until it listens for methods. */
static void fake_device_start(struct fake_device *d, const struct hub *h, const char *device_id)
{
    struct result r = RUN("device", "show", device_id, "--json", h->flag);
    expect_code(&r, 0);
    cJSON *id = json_of(&r);
    const char *key = cJSON_GetStringValue(path(id, "authentication.symmetricKey.primaryKey"));
    assert_non_null(key);
    char *info_text = slurp(h->info);
    cJSON *info = cJSON_Parse(info_text);
    free(info_text);
    assert_non_null(info);
    const char *hub = cJSON_GetStringValue(path(info, "hubName"));
    int port = (int)cJSON_GetNumberValue(path(info, "mqttPort"));
    char resource[512], token[1024], user[512];
    snprintf(resource, sizeof resource, "%s/devices/%s", hub, device_id);
    snprintf(user, sizeof user, "%s/%s/?api-version=2021-04-12", hub, device_id);
    assert_int_equal(th_sas_sign(resource, key, time(NULL) + 3600, NULL, token, sizeof token),
                     TH_OK);
    memset(d, 0, sizeof *d);
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->cv, NULL);
    mosquitto_lib_init();
    d->mosq = mosquitto_new(device_id, true, d);
    assert_non_null(d->mosq);
    mosquitto_connect_callback_set(d->mosq, dev_on_connect);
    mosquitto_subscribe_callback_set(d->mosq, dev_on_subscribe);
    mosquitto_message_callback_set(d->mosq, dev_on_message);
    mosquitto_username_pw_set(d->mosq, user, token);
    assert_int_equal(mosquitto_connect(d->mosq, "127.0.0.1", port, 60), MOSQ_ERR_SUCCESS);
    assert_int_equal(mosquitto_loop_start(d->mosq), MOSQ_ERR_SUCCESS);
    cJSON_Delete(info);
    cJSON_Delete(id);
    result_free(&r);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&d->mu);
    while (!d->subscribed && pthread_cond_timedwait(&d->cv, &d->mu, &until) == 0)
        ;
    bool ok = d->subscribed;
    pthread_mutex_unlock(&d->mu);
    assert_true(ok);
}

static void fake_device_stop(struct fake_device *d)
{
    mosquitto_disconnect(d->mosq);
    mosquitto_loop_stop(d->mosq, false);
    mosquitto_destroy(d->mosq);
    mosquitto_lib_cleanup();
}

static void test_method_invoke_connected_device_succeeds(void **state)
{
    const struct hub *h = *state;
    create_device(h, "mic-4");
    struct fake_device d;
    fake_device_start(&d, h, "mic-4");
    struct result r =
        RUN("method", "invoke", "mic-4", "reboot", "--payload", "{\"delay\":1}", h->flag);
    expect_code(&r, 0);
    expect_in(r.out, "status 200\n", &r);
    expect_in(r.out, "\"ok\": true", &r);
    expect_in(r.out, "\"delay\": 1", &r);
    result_free(&r);
    /* Any status the device answers with is a call that returned: exit 0. */
    r = RUN("method", "invoke", "mic-4", "fail", "--json", h->flag);
    expect_code(&r, 0);
    cJSON *j = json_of(&r);
    assert_int_equal((int)cJSON_GetNumberValue(path(j, "status")), 500);
    assert_true(cJSON_IsFalse(path(j, "payload.ok")));
    cJSON_Delete(j);
    result_free(&r);
    /* A negative status is a status like any other. */
    r = RUN("method", "invoke", "mic-4", "minus", h->flag);
    expect_code(&r, 0);
    expect_in(r.out, "status -1\n{}\n", &r);
    result_free(&r);
    /* A body that is not JSON: shown as sent, and exit 1 as a service SDK would fail on it. */
    r = RUN("method", "invoke", "mic-4", "text", h->flag);
    expect_code(&r, 1);
    expect_in(r.out, "status 200\nnot json!\n", &r);
    expect_in(r.err, "not JSON", &r);
    expect_in(r.err, "service SDKs fail to parse", &r);
    result_free(&r);
    r = RUN("device", "disconnect", "mic-4", h->flag);
    expect_code(&r, 0);
    expect_in(r.out, "disconnected mic-4", &r);
    result_free(&r);
    fake_device_stop(&d);
}

static void test_method_invoke_offline_device_fails(void **state)
{
    const struct hub *h = *state;
    create_device(h, "mio-3");
    struct result r = RUN("method", "invoke", "mio-3", "reboot", "--payload", "{\"delay\":1}",
                          "--timeout", "5", h->flag);
    expect_code(&r, 1);
    expect_in(r.err, "404103", &r);
    result_free(&r);
}

static void test_c2d_send_offline_device_queues_succeeds(void **state)
{
    const struct hub *h = *state;
    create_device(h, "c2d-3");
    struct result r = RUN("c2d", "send", "c2d-3", "hello", "--property", "k=v", "--message-id",
                          "m-1", "--content-type", "text/plain", h->flag);
    expect_code(&r, 0);
    expect_in(r.out, "sent message m-1 to c2d-3: queued", &r);
    result_free(&r);
}

/* ---- query -------------------------------------------------------------------------------- */

/* Fresh hub: the query runs over every device, and exactly one has the tag. */
static void test_query_tag_filter_succeeds(void **state)
{
    const struct hub *h = *state;
    create_device(h, "ens-3");
    create_device(h, "ens-4");
    patch_lab_twin(h, "ens-3");
    struct result r = RUN("query", "SELECT deviceId FROM devices WHERE tags.site = 'lab'", h->flag);
    expect_code(&r, 0);
    expect_in(r.out, "deviceId", &r);
    expect_in(r.out, "ens-3", &r);
    expect_in(r.out, "1 item\n", &r);
    result_free(&r);
}

/* Shared hub: the expected items are the devices listed just before, whoever made them. */
static void test_query_follows_continuations_succeeds(void **state)
{
    const struct hub *h = *state;
    /* At least five devices, so that pages of two need continuations. */
    static const char *const own[] = {"qfc-1", "qfc-2", "qfc-3", "qfc-4", "qfc-5"};
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
        create_device(h, own[i]);
    cJSON *ids = all_device_ids(h);
    assert_true(cJSON_GetArraySize(ids) >= 5);
    struct result r = RUN("query", "SELECT * FROM devices", "--page-size", "2", "--json", h->flag);
    expect_code(&r, 0);
    cJSON *j = json_of(&r);
    const cJSON *items = path(j, "items");
    assert_int_equal(cJSON_GetArraySize(items), cJSON_GetArraySize(ids));
    assert_true(cJSON_IsNull(path(j, "continuation")));
    const cJSON *it;
    int found = 0;
    cJSON_ArrayForEach(it, items)
    {
        found += has_string(ids, cJSON_GetStringValue(path(it, "deviceId")));
    }
    assert_int_equal(found, cJSON_GetArraySize(ids));
    cJSON_Delete(j);
    result_free(&r);
    cJSON_Delete(ids);
}

static void test_query_jobs_empty_succeeds(void **state)
{
    /* IoT Hub answers an empty result when there are no jobs; twinhub runs none. */
    const struct hub *h = *state;
    struct result r = RUN("query", "SELECT * FROM devices.jobs", h->flag);
    expect_code(&r, 0);
    expect_in(r.out, "0 items\n", &r);
    result_free(&r);
    r = RUN("query", "SELECT * FROM devices.jobs WHERE devices.jobs.deviceId = 'cli-a'", "--json",
            h->flag);
    expect_code(&r, 0);
    cJSON *j = json_of(&r);
    assert_int_equal(cJSON_GetArraySize(path(j, "items")), 0);
    assert_string_equal(cJSON_GetStringValue(path(j, "itemType")), "deviceJob");
    cJSON_Delete(j);
    result_free(&r);
    /* an unknown collection is still an error */
    r = RUN("query", "SELECT * FROM devices.things", h->flag);
    expect_code(&r, 1);
    expect_in(r.err, "errorCode 400004", &r);
    result_free(&r);
}

static void test_query_syntax_error_fails(void **state)
{
    const struct hub *h = *state;
    struct result r = RUN("query", "SELEKT * FROM devices", h->flag);
    expect_code(&r, 1);
    expect_in(r.err, "errorCode 400004", &r);
    result_free(&r);
}

/* ---- stats -------------------------------------------------------------------------------- */

/* Fresh hub: the counts cover every device. */
static void test_stats_counts_devices_succeeds(void **state)
{
    const struct hub *h = *state;
    create_device(h, "sts-a");
    create_device(h, "sts-b");
    struct result r = RUN("device", "update", "sts-a", "--disable", h->flag);
    expect_code(&r, 0);
    result_free(&r);
    cJSON *ids = all_device_ids(h);
    r = RUN("stats", "--json", h->flag);
    expect_code(&r, 0);
    cJSON *j = json_of(&r);
    assert_int_equal((int)cJSON_GetNumberValue(path(j, "totalDeviceCount")),
                     cJSON_GetArraySize(ids));
    assert_int_equal((int)cJSON_GetNumberValue(path(j, "disabledDeviceCount")), 1); /* sts-a */
    cJSON_Delete(j);
    result_free(&r);
    r = RUN("stats", h->flag);
    expect_code(&r, 0);
    expect_in(r.out, "devices", &r);
    expect_in(r.out, "modules", &r);
    result_free(&r);
    cJSON_Delete(ids);
}

/* ---- export and import -------------------------------------------------------------------- */

/* Fresh hub: the export carries the whole registry, and both hubs' counts must match. */
static void test_export_then_import_into_fresh_hub_succeeds(void **state)
{
    const struct hub *h = *state;
    struct result r = RUN("device", "create", "cli-keys", "--primary-key",
                          "dHdpbmh1Yi1jbGktdGVzdC1wcmltYXJ5LWtleS0wMQ==", "--secondary-key",
                          "dHdpbmh1Yi1jbGktdGVzdC1zZWNvbmRhcnkta2V5LTE=", h->flag);
    expect_code(&r, 0);
    result_free(&r);
    create_module_fleet(h, "ens");
    patch_lab_twin(h, "ens-3");

    char file[PATH_LEN + 32];
    snprintf(file, sizeof file, "%s/export.json", h->dir);
    r = RUN("export", "-o", file, h->flag);
    expect_code(&r, 0);
    expect_in(r.out, "exported ", &r);
    result_free(&r);

    struct hub b;
    hub_start(&b);
    char b_flag[PATH_LEN + 16];
    snprintf(b_flag, sizeof b_flag, "--hub=%s", b.info);
    r = RUN("device", "show", "ens-1", b_flag);
    expect_code(&r, 1);
    result_free(&r);

    r = RUN("import", file, b_flag);
    expect_code(&r, 0);
    expect_in(r.out, "imported ", &r);
    expect_in(r.out, "created ", &r);
    result_free(&r);

    /* Identities, keys and twins came across. */
    r = RUN("device", "show", "cli-keys", "--json", b_flag);
    expect_code(&r, 0);
    cJSON *j = json_of(&r);
    assert_string_equal(cJSON_GetStringValue(path(j, "authentication.symmetricKey.primaryKey")),
                        "dHdpbmh1Yi1jbGktdGVzdC1wcmltYXJ5LWtleS0wMQ==");
    cJSON_Delete(j);
    result_free(&r);
    r = RUN("twin", "show", "ens-1", SEC_MODULE, "--json", b_flag);
    expect_code(&r, 0);
    j = json_of(&r);
    assert_int_equal((int)cJSON_GetNumberValue(path(j, "properties.desired.custom.level")), 7);
    assert_string_equal(cJSON_GetStringValue(path(j, "tags.owner")), "me");
    cJSON_Delete(j);
    result_free(&r);
    r = RUN("twin", "show", "ens-3", "--json", b_flag);
    expect_code(&r, 0);
    j = json_of(&r);
    assert_string_equal(cJSON_GetStringValue(path(j, "tags.site")), "lab");
    assert_string_equal(cJSON_GetStringValue(path(j, "properties.desired.fw")), "1.2");
    cJSON_Delete(j);
    result_free(&r);

    /* The same counts on both hubs. */
    struct result sa = RUN("stats", "--json", h->flag), sb = RUN("stats", "--json", b_flag);
    expect_code(&sa, 0);
    expect_code(&sb, 0);
    cJSON *ja = json_of(&sa), *jb = json_of(&sb);
    assert_int_equal((int)cJSON_GetNumberValue(path(ja, "totalDeviceCount")),
                     (int)cJSON_GetNumberValue(path(jb, "totalDeviceCount")));
    assert_int_equal((int)cJSON_GetNumberValue(path(ja, "totalModuleCount")),
                     (int)cJSON_GetNumberValue(path(jb, "totalModuleCount")));
    cJSON_Delete(ja);
    cJSON_Delete(jb);
    result_free(&sa);
    result_free(&sb);

    /* Importing again skips what exists. */
    r = RUN("import", file, "--json", b_flag);
    expect_code(&r, 0);
    j = json_of(&r);
    assert_int_equal((int)cJSON_GetNumberValue(path(j, "created")), 0);
    assert_true(cJSON_GetNumberValue(path(j, "skipped")) > 0);
    cJSON_Delete(j);
    result_free(&r);

    /* A clean stop removes the hub file; the --info-file stays, naming a dead hub. */
    assert_int_equal(hub_stop(&b), 0);
    assert_int_equal(access(b.hub_file, F_OK), -1);
    r = RUN("stats", b_flag);
    expect_code(&r, 3);
    expect_in(r.err, "twinhub serve", &r);
    result_free(&r);
    hub_remove_dir(&b);
}

/* ---- serve: --record and --state-dir ---------------------------------------------------- */

static void test_serve_record_file_has_events_succeeds(void **state)
{
    const struct hub *h = *state;
    create_device(h, "rec-a");
    create_device(h, "rec-3");
    struct result r = RUN("twin", "patch", "rec-3", "--desired", "{\"fw\":\"1.2\"}", h->flag);
    expect_code(&r, 0);
    result_free(&r);
    char *rec = slurp(h->record);
    assert_non_null(strstr(rec, "\"kind\":\"deviceCreated\",\"deviceId\":\"rec-a\""));
    assert_non_null(strstr(rec, "\"kind\":\"desired\",\"deviceId\":\"rec-3\""));
    free(rec);
}

/* Fresh hub: the test stops and restarts it. */
static void test_serve_state_dir_survives_restart_succeeds(void **state)
{
    struct hub *c = *state;
    create_device(c, "kept");
    struct result r = RUN("twin", "patch", "kept", "--desired", "{\"kept\":true}", c->flag);
    expect_code(&r, 0);
    result_free(&r);
    assert_int_equal(hub_stop(c), 0);
    hub_restart(c);
    r = RUN("twin", "show", "kept", "--json", c->flag);
    expect_code(&r, 0);
    cJSON *j = json_of(&r);
    assert_true(cJSON_IsTrue(path(j, "properties.desired.kept")));
    cJSON_Delete(j);
    result_free(&r);
    assert_int_equal(hub_stop(c), 0);
}

/* ---- refusals ----------------------------------------------------------------------------- */

/* The arguments are refused before anything reaches the hub: the ids need not exist. */
static void test_cli_bad_json_argument_fails(void **state)
{
    const struct hub *h = *state;
    struct result r = RUN("twin", "patch", "ens-3", "--desired", "{\"a\":", h->flag);
    expect_code(&r, 2);
    expect_in(r.err, "--desired is not valid JSON", &r);
    result_free(&r);
    r = RUN("module", "ensure", SEC_MODULE, "--desired", "[1,2]", h->flag);
    expect_code(&r, 2);
    expect_in(r.err, "must be a JSON object", &r);
    result_free(&r);
    r = RUN("method", "invoke", "ens-3", "m", "--payload", "not json", h->flag);
    expect_code(&r, 2);
    result_free(&r);
}

static void test_cli_usage_errors_fail(void **state)
{
    const struct hub *h = *state;
    struct result r = RUN("device", "show", h->flag);
    expect_code(&r, 2);
    expect_in(r.err, "twinhub device show ID", &r);
    result_free(&r);
    r = RUN("device", "frobnicate", h->flag);
    expect_code(&r, 2);
    expect_in(r.err, "unknown action 'frobnicate'", &r);
    result_free(&r);
    r = RUN("device", "list", "--bogus", h->flag);
    expect_code(&r, 2);
    expect_in(r.err, "unknown option --bogus", &r);
    result_free(&r);
    r = RUN("twin", "patch", "ens-3", h->flag);
    expect_code(&r, 2);
    expect_in(r.err, "--desired", &r);
    result_free(&r);
    r = RUN("help", "module");
    expect_code(&r, 0);
    expect_in(r.out, "twinhub module ensure MODULE", &r);
    result_free(&r);
}

static void test_cli_no_hub_fails(void **state)
{
    const struct hub *h = *state;
    char empty[PATH_LEN + 32];
    snprintf(empty, sizeof empty, "--cert-dir=%s/no-hub-here", h->dir);
    struct result r = RUN("device", "list", empty);
    expect_code(&r, 3);
    expect_in(r.err, "twinhub serve", &r);
    expect_in(r.err, "--hub", &r);
    assert_string_equal(r.out, "");
    result_free(&r);
}

static void test_cli_wrong_key_fails(void **state)
{
    const struct hub *h = *state;
    char hub_flag[PATH_LEN + 16];
    snprintf(hub_flag, sizeof hub_flag, "--hub=%s", h->info);
    struct result r = RUN("stats", hub_flag, "--connection-string",
                          "HostName=twinhub.localhost;SharedAccessKeyName=iothubowner;"
                          "SharedAccessKey=d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktMDE=");
    expect_code(&r, 3);
    expect_in(r.err, "refused the service connection", &r);
    result_free(&r);
}

/* ---- selection and order ------------------------------------------------------------------ */

static const struct CMUnitTest all_tests[] = {
    SHARED_HUB_TEST(test_serve_hub_file_written_when_ready_succeeds),
    SHARED_HUB_TEST(test_device_create_new_id_succeeds),
    SHARED_HUB_TEST(test_device_create_given_keys_succeeds),
    SHARED_HUB_TEST(test_device_create_existing_id_fails),
    SHARED_HUB_TEST(test_device_show_created_device_succeeds),
    SHARED_HUB_TEST(test_device_create_edge_shows_scope_succeeds),
    SHARED_HUB_TEST(test_device_list_includes_created_device_succeeds),
    SHARED_HUB_TEST(test_device_update_disable_succeeds),
    SHARED_HUB_TEST(test_device_update_wrong_etag_fails),
    SHARED_HUB_TEST(test_device_delete_existing_succeeds),
    SHARED_HUB_TEST(test_device_show_unknown_id_fails),
    SHARED_HUB_TEST(test_module_create_with_desired_succeeds),
    SHARED_HUB_TEST(test_module_create_managed_by_succeeds),
    FRESH_HUB_TEST(test_module_missing_before_ensure_succeeds),
    FRESH_HUB_TEST(test_module_ensure_skips_devices_with_module_succeeds),
    SHARED_HUB_TEST(test_module_ensure_listed_devices_succeeds),
    FRESH_HUB_TEST(test_module_missing_after_ensure_succeeds),
    SHARED_HUB_TEST(test_module_delete_existing_succeeds),
    SHARED_HUB_TEST(test_twin_patch_then_show_succeeds),
    SHARED_HUB_TEST(test_twin_patch_from_file_succeeds),
    SHARED_HUB_TEST(test_method_invoke_connected_device_succeeds),
    SHARED_HUB_TEST(test_method_invoke_offline_device_fails),
    SHARED_HUB_TEST(test_c2d_send_offline_device_queues_succeeds),
    FRESH_HUB_TEST(test_query_tag_filter_succeeds),
    SHARED_HUB_TEST(test_query_follows_continuations_succeeds),
    SHARED_HUB_TEST(test_query_jobs_empty_succeeds),
    SHARED_HUB_TEST(test_query_syntax_error_fails),
    FRESH_HUB_TEST(test_stats_counts_devices_succeeds),
    FRESH_HUB_TEST(test_export_then_import_into_fresh_hub_succeeds),
    SHARED_HUB_TEST(test_serve_record_file_has_events_succeeds),
    FRESH_HUB_TEST(test_serve_state_dir_survives_restart_succeeds),
    SHARED_HUB_TEST(test_cli_bad_json_argument_fails),
    SHARED_HUB_TEST(test_cli_usage_errors_fail),
    SHARED_HUB_TEST(test_cli_no_hub_fails),
    SHARED_HUB_TEST(test_cli_wrong_key_fails),
};

#define N_TESTS (sizeof all_tests / sizeof all_tests[0])

/*
 * TH_CLI_TEST_ONLY=a,b,...: exactly the named tests, in the order named;
 * false (saying which) when a name is not a test, so a typo cannot pass.
 * Unset or empty: every test, in table order.
 */
static bool select_tests(struct CMUnitTest *out, size_t *n)
{
    const char *only = getenv("TH_CLI_TEST_ONLY");
    *n = 0;
    if (!only || !*only) {
        memcpy(out, all_tests, sizeof all_tests);
        *n = N_TESTS;
        return true;
    }
    for (const char *p = only; *p;) {
        size_t len = strcspn(p, ",");
        size_t i = 0;
        while (i < N_TESTS &&
               (strlen(all_tests[i].name) != len || strncmp(all_tests[i].name, p, len) != 0))
            i++;
        if (i == N_TESTS || *n == N_TESTS) {
            fprintf(stderr, "TH_CLI_TEST_ONLY: no test named '%.*s' (or too many names)\n",
                    (int)len, p);
            return false;
        }
        out[(*n)++] = all_tests[i];
        p += len;
        if (*p == ',')
            p++;
    }
    return *n > 0;
}

/*
 * TH_CLI_TEST_ORDER: unset or "as-listed" keeps the order, "reverse" runs
 * it backwards, "shuffle:SEED" permutes it with a fixed-seed generator (the
 * same seed gives the same order). False, saying why, on anything else.
 */
static bool order_tests(struct CMUnitTest *t, size_t n)
{
    const char *order = getenv("TH_CLI_TEST_ORDER");
    if (!order || !*order || !strcmp(order, "as-listed"))
        return true;
    if (!strcmp(order, "reverse")) {
        for (size_t i = 0; i < n / 2; i++) {
            struct CMUnitTest tmp = t[i];
            t[i] = t[n - 1 - i];
            t[n - 1 - i] = tmp;
        }
        return true;
    }
    char *end;
    if (!strncmp(order, "shuffle:", 8) && order[8]) {
        uint64_t x = strtoull(order + 8, &end, 10);
        if (*end == '\0') {
            for (size_t i = n; i > 1; i--) { /* Fisher-Yates over a 64-bit LCG (Knuth's MMIX) */
                x = x * 6364136223846793005ULL + 1442695040888963407ULL;
                size_t j = (size_t)((x >> 33) % i);
                struct CMUnitTest tmp = t[i - 1];
                t[i - 1] = t[j];
                t[j] = tmp;
            }
            return true;
        }
    }
    fprintf(stderr, "TH_CLI_TEST_ORDER: '%s' is not as-listed, reverse or shuffle:SEED\n", order);
    return false;
}

int main(void)
{
    struct CMUnitTest tests[N_TESTS];
    size_t n;
    if (!select_tests(tests, &n) || !order_tests(tests, n))
        return 2;
    return _cmocka_run_group_tests("cli", tests, n, group_setup, group_teardown);
}
