/*
 * test_cli_monitor.c - `twinhub monitor` against the real `twinhub serve`
 * (docs/cli.md "twinhub monitor"): telemetry a device sends, with its
 * properties, is printed within a second; --device/--module and the kind
 * flags filter; --json prints one record a line; --recording prints the
 * hub's recording the same way; SIGINT ends it with status 0.
 *
 * The monitor runs as a child with its output on pipes, read with a bounded
 * poll(); it is ready once it says so on stderr (after its subscription was
 * acknowledged). A negative (an event filtered out) is proven with a later
 * event that passes the filter as a barrier: the hub numbers and sends its
 * events in order.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "cli_harness.h"

#define WAIT_MS 10000
#define TELEMETRY_TOPIC "devices/dev-device/messages/events/"
#define MODULE_TOPIC "devices/dev-device/modules/dev-module/messages/events/"

static struct cli_hub hub;

struct child {
    pid_t pid;
    int out, err;
    char obuf[65536], ebuf[8192];
    size_t on, en;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Start `twinhub monitor --cert-dir=... args...` with stdout and stderr on pipes. */
static void spawn(struct child *c, const char *const *args)
{
    int o[2], e[2];
    assert_int_equal(pipe2(o, O_CLOEXEC), 0);
    assert_int_equal(pipe2(e, O_CLOEXEC), 0);
    memset(c, 0, sizeof *c);
    c->pid = fork();
    assert_true(c->pid >= 0);
    if (c->pid == 0) {
        const char *argv[32] = {getenv("TWINHUB_BIN"), "monitor", hub.flag};
        int n = 3;
        for (int i = 0; args[i] && n < 31; i++)
            argv[n++] = args[i];
        argv[n] = NULL;
        dup2(o[1], 1);
        dup2(e[1], 2);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(o[1]);
    close(e[1]);
    c->out = o[0];
    c->err = e[0];
    fcntl(c->out, F_SETFL, O_NONBLOCK);
    fcntl(c->err, F_SETFL, O_NONBLOCK);
}

static void drain(int fd, char *buf, size_t size, size_t *n)
{
    ssize_t r;
    while (*n + 1 < size && (r = read(fd, buf + *n, size - 1 - *n)) > 0)
        *n += (size_t)r;
    buf[*n] = '\0';
}

/* Wait until stdout (or stderr) holds `needle`; false after timeout_ms. */
static bool wait_for(struct child *c, bool on_err, const char *needle, int timeout_ms)
{
    int64_t end = now_ms() + timeout_ms;
    for (;;) {
        drain(c->out, c->obuf, sizeof c->obuf, &c->on);
        drain(c->err, c->ebuf, sizeof c->ebuf, &c->en);
        if (strstr(on_err ? c->ebuf : c->obuf, needle))
            return true;
        int left = (int)(end - now_ms());
        if (left <= 0)
            break;
        struct pollfd p[2] = {{.fd = c->out, .events = POLLIN}, {.fd = c->err, .events = POLLIN}};
        if (poll(p, 2, left) == 0)
            break;
        if ((p[0].revents & POLLHUP) && (p[1].revents & POLLHUP) && !(p[0].revents & POLLIN) &&
            !(p[1].revents & POLLIN))
            break;
    }
    print_message("# waiting for '%s'\n", needle);
    for (int k = 0; k < 2; k++)
        for (char *line = k ? c->ebuf : c->obuf, *next; line && *line; line = next) {
            next = strchr(line, '\n');
            print_message("# %s: %.*s\n", k ? "stderr" : "stdout",
                          (int)(next ? next - line : (long)strlen(line)), line);
            next = next ? next + 1 : NULL;
        }
    return false;
}

static void ready(struct child *c)
{
    assert_true(wait_for(c, true, "following the hub's events", WAIT_MS));
}

/* SIGINT, then its exit status (-1 when it does not end within WAIT_MS). */
static int stop(struct child *c)
{
    kill(c->pid, SIGINT);
    int64_t end = now_ms() + WAIT_MS;
    int status = 0;
    pid_t r;
    while ((r = waitpid(c->pid, &status, WNOHANG)) == 0 && now_ms() < end) {
        struct pollfd p = {.fd = c->err, .events = POLLIN};
        poll(&p, 1, 50); /* bounded wait for the child to act; its stderr may speak first */
        drain(c->err, c->ebuf, sizeof c->ebuf, &c->en);
    }
    if (r == 0) {
        kill(c->pid, SIGKILL);
        waitpid(c->pid, &status, 0);
        status = -1;
    }
    /* What it wrote between the last poll and its exit (its "N events shown" line). */
    drain(c->out, c->obuf, sizeof c->obuf, &c->on);
    drain(c->err, c->ebuf, sizeof c->ebuf, &c->en);
    close(c->out);
    close(c->err);
    return status >= 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int setup(void **state)
{
    (void)state;
    cli_hub_start(&hub);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    cli_hub_stop(&hub);
    cli_hub_remove_dir(&hub);
    return 0;
}

static void test_monitor_telemetry_with_properties_within_a_second_succeeds(void **state)
{
    (void)state;
    static struct child m;
    spawn(&m, (const char *const[]){NULL});
    ready(&m);
    struct cli_identity *dev = cli_identity_connect(&hub, "dev-device", NULL);
    int64_t t0 = now_ms();
    cli_identity_publish(dev, TELEMETRY_TOPIC "alert=high&%24.ct=application%2Fjson&%24.ce=utf-8",
                         "{\"temperature\":21.5,\"unit\":\"C\"}");
    assert_true(wait_for(&m, false, "\"unit\": \"C\"", WAIT_MS));
    int64_t took = now_ms() - t0;
    print_message("# telemetry shown after %lld ms\n", (long long)took);
    assert_true(took < 1000);
    assert_non_null(strstr(m.obuf, " telemetry dev-device\n"));
    assert_non_null(strstr(m.obuf, "application properties: {\"alert\":\"high\"}"));
    assert_non_null(strstr(m.obuf, "\"contentType\":\"application/json\""));
    assert_non_null(strstr(m.obuf, "\"temperature\": 21.5"));
    /* Connections are not shown without --connections. */
    assert_null(strstr(m.obuf, "connected"));
    cli_identity_close(dev);
    assert_int_equal(stop(&m), 0);
    assert_non_null(strstr(m.ebuf, "1 event shown"));
}

static void test_monitor_filters_and_json_succeeds(void **state)
{
    (void)state;
    static struct child m;
    spawn(&m, (const char *const[]){"--json", "--module", "dev-module", "--connections", NULL});
    ready(&m);
    struct cli_identity *dev = cli_identity_connect(&hub, "dev-device", NULL);
    struct cli_identity *mod = cli_identity_connect(&hub, "dev-device", "dev-module");
    cli_identity_publish(dev, TELEMETRY_TOPIC, "from-the-device");
    cli_identity_publish(mod, MODULE_TOPIC, "from-the-module");
    assert_true(wait_for(&m, false, "from-the-module", WAIT_MS));
    /* The device's telemetry came first and was filtered out; the module's connection is in. */
    assert_null(strstr(m.obuf, "from-the-device"));
    int lines = 0, telemetry = 0, connected = 0;
    for (char *line = m.obuf, *next; *line; line = next) {
        next = strchr(line, '\n');
        assert_non_null(next);
        *next++ = '\0';
        cJSON *rec = cJSON_Parse(line);
        assert_non_null(rec);
        lines++;
        assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(rec, "moduleId")),
                            "dev-module");
        const char *kind = cJSON_GetStringValue(cJSON_GetObjectItem(rec, "kind"));
        telemetry += !strcmp(kind, "telemetry");
        connected += !strcmp(kind, "connected");
        cJSON_Delete(rec);
    }
    assert_int_equal(telemetry, 1);
    assert_int_equal(connected, 1);
    assert_int_equal(lines, 2);
    cli_identity_close(mod);
    cli_identity_close(dev);
    assert_int_equal(stop(&m), 0);
}

static void test_monitor_recording_prints_the_same_way_succeeds(void **state)
{
    (void)state;
    /* The hub records every event (serve --record); the tests above left telemetry in it. */
    struct cli_result r =
        CLI_RUN("monitor", "--recording", hub.record, "--json", "--device", "dev-device",
                "--kind", "telemetry", hub.flag);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "from-the-device", &r);
    cli_expect_in(r.out, "from-the-module", &r);
    cli_expect_not_in(r.out, "\"kind\":\"connected\"", &r);
    cli_result_free(&r);
    r = CLI_RUN("monitor", "--recording", hub.record, "--kind", "connected", hub.flag);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, " connected dev-device/dev-module\n", &r);
    cli_expect_not_in(r.out, " telemetry ", &r);
    cli_result_free(&r);
    r = CLI_RUN("monitor", "--kind", "nonsense", hub.flag);
    cli_expect_code(&r, 2);
    cli_expect_in(r.err, "unknown event kind 'nonsense'", &r);
    cli_result_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_monitor_telemetry_with_properties_within_a_second_succeeds),
        cmocka_unit_test(test_monitor_filters_and_json_succeeds),
        cmocka_unit_test(test_monitor_recording_prints_the_same_way_succeeds),
    };
    return cmocka_run_group_tests_name("cli monitor", tests, setup, teardown);
}
