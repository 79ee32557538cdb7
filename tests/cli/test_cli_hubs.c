/*
 * test_cli_hubs.c - several hubs on one machine (docs/cli.md, "Finding the
 * hub"): two real `twinhub serve` processes on one cert dir, each keeping
 * its own <cert-dir>/hubs/<pid>.json, and the real admin commands, which use
 * the one running hub, refuse to guess between several (listing them and how
 * to choose), take --hub FILE or --port N to choose, and ignore and remove
 * the file of a hub that is gone.
 *
 * Environment: TWINHUB_BIN (the twinhub executable), set by meson.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "cli_harness.h"

/* The hubs directory of a cert dir, and the file of the hub run by `pid`. */
static void hub_file(const struct cli_hub *h, pid_t pid, char *out, size_t size)
{
    snprintf(out, size, "%s/hubs/%ld.json", h->cert_dir, (long)pid);
}

/* The hub's plain MQTT port, from its --info-file. */
static int mqtt_port(const struct cli_hub *h)
{
    char *text = cli_slurp(h->info);
    cJSON *j = cJSON_Parse(text);
    free(text);
    assert_non_null(j);
    int port = (int)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(j, "mqttPort"));
    cJSON_Delete(j);
    assert_true(port > 0);
    return port;
}

/* Whether device `id` exists on the hub whose info file is `info`. */
static bool has_device(const char *info, const char *id)
{
    char flag[CLI_PATH_LEN + 8];
    snprintf(flag, sizeof flag, "--hub=%s", info);
    struct cli_result r = CLI_RUN("device", "show", id, flag);
    bool found = r.code == 0;
    if (r.code != 0)
        cli_expect_code(&r, 1); /* not found, not unreachable */
    cli_result_free(&r);
    return found;
}

static void test_admin_two_hubs_choose_succeeds(void **state)
{
    (void)state;
    struct cli_hub a, b;
    cli_hub_start(&a);
    cli_hub_start_in(&b, a.cert_dir);
    char fa[CLI_PATH_LEN + 64], fb[CLI_PATH_LEN + 64];
    hub_file(&a, a.pid, fa, sizeof fa);
    hub_file(&b, b.pid, fb, sizeof fb);
    assert_int_equal(access(fa, F_OK), 0);
    assert_int_equal(access(fb, F_OK), 0);

    /* Two hubs: no guess. Both are listed, with how to choose. */
    struct cli_result r = CLI_RUN("stats", a.flag);
    cli_expect_code(&r, 2);
    cli_expect_in(r.err, "2 hubs are running", &r);
    cli_expect_in(r.err, fa, &r);
    cli_expect_in(r.err, fb, &r);
    char pid_a[32], port_b[64];
    snprintf(pid_a, sizeof pid_a, "pid %ld ", (long)a.pid);
    snprintf(port_b, sizeof port_b, "MQTT 127.0.0.1:%d", mqtt_port(&b));
    cli_expect_in(r.err, pid_a, &r);
    cli_expect_in(r.err, port_b, &r);
    cli_expect_in(r.err, "--hub FILE", &r);
    assert_string_equal(r.out, "");
    cli_result_free(&r);

    /* --hub FILE chooses; so does --port N, one of the hub's ports. */
    char hub_flag[CLI_PATH_LEN + 80], port_flag[32];
    snprintf(hub_flag, sizeof hub_flag, "--hub=%s", fa);
    r = CLI_RUN("device", "create", "hubs-on-a", hub_flag);
    cli_expect_code(&r, 0);
    cli_result_free(&r);
    snprintf(port_flag, sizeof port_flag, "--port=%d", mqtt_port(&b));
    r = CLI_RUN("device", "create", "hubs-on-b", a.flag, port_flag);
    cli_expect_code(&r, 0);
    cli_result_free(&r);
    assert_true(has_device(a.info, "hubs-on-a"));
    assert_false(has_device(b.info, "hubs-on-a"));
    assert_true(has_device(b.info, "hubs-on-b"));
    assert_false(has_device(a.info, "hubs-on-b"));

    /* A port neither listens on: nothing is chosen, both are listed. */
    r = CLI_RUN("stats", a.flag, "--port=1");
    cli_expect_code(&r, 3);
    cli_expect_in(r.err, "listens on port 1", &r);
    cli_expect_in(r.err, fb, &r);
    cli_result_free(&r);

    /* B stops and takes its file along: A is the one hub, found without --hub. */
    assert_int_equal(cli_hub_stop(&b), 0);
    assert_int_equal(access(fb, F_OK), -1);
    assert_int_equal(access(fa, F_OK), 0);
    r = CLI_RUN("device", "show", "hubs-on-a", a.flag);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "hubs-on-a", &r);
    cli_result_free(&r);

    assert_int_equal(cli_hub_stop(&a), 0);
    assert_int_equal(access(fa, F_OK), -1);
    r = CLI_RUN("stats", a.flag);
    cli_expect_code(&r, 3);
    cli_expect_in(r.err, "no running hub found", &r);
    cli_result_free(&r);
    cli_hub_remove_dir(&b);
    cli_hub_remove_dir(&a);
}

/* A hub killed with SIGKILL leaves its file behind: it is ignored and removed. */
static void test_admin_stale_hub_file_ignored_succeeds(void **state)
{
    (void)state;
    struct cli_hub a;
    cli_hub_start(&a);
    pid_t dead = fork(); /* a process id that is not running any more */
    assert_true(dead >= 0);
    if (dead == 0)
        _exit(0);
    assert_int_equal(waitpid(dead, NULL, 0), dead);
    char fa[CLI_PATH_LEN + 64], stale[CLI_PATH_LEN + 64];
    hub_file(&a, a.pid, fa, sizeof fa);
    hub_file(&a, dead, stale, sizeof stale);
    char *text = cli_slurp(fa);
    cJSON *j = cJSON_Parse(text);
    free(text);
    assert_non_null(j);
    cJSON_ReplaceItemInObjectCaseSensitive(j, "pid", cJSON_CreateNumber((double)dead));
    text = cJSON_Print(j);
    cJSON_Delete(j);
    cli_write_file(stale, text);
    free(text);

    struct cli_result r = CLI_RUN("stats", a.flag);
    cli_expect_code(&r, 0);
    cli_expect_not_in(r.err, "hubs are running", &r);
    cli_result_free(&r);
    assert_int_equal(access(stale, F_OK), -1);
    assert_int_equal(access(fa, F_OK), 0);

    assert_int_equal(cli_hub_stop(&a), 0);
    cli_hub_remove_dir(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_admin_two_hubs_choose_succeeds),
        cmocka_unit_test(test_admin_stale_hub_file_ignored_succeeds),
    };
    return cmocka_run_group_tests_name("cli_hubs", tests, NULL, NULL);
}
