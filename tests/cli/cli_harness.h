/*
 * cli_harness.h - what a CLI test needs (docs/testing.md): run the real
 * `twinhub` executable and collect its exit status and output, start the
 * real `twinhub serve` on free loopback ports in a temporary directory, and
 * connect a device or module over MQTT with its own key to act as an agent.
 *
 * Nothing sleeps: serve's readiness is its "twinhub: ready" line read with a
 * bounded poll(), every child is waited for with a bounded poll() on its
 * pipes, and an identity waits for the hub's answers (SUBACK, twin response)
 * on a condition variable with a deadline.
 *
 * Failures are cmocka assertions in the calling test. Environment:
 * TWINHUB_BIN (the twinhub executable), set by meson.
 */
#ifndef TH_CLI_HARNESS_H
#define TH_CLI_HARNESS_H

#include <stdbool.h>
#include <sys/types.h>

#include <cjson/cJSON.h>

#define CLI_PATH_LEN 4096

/* ---- running twinhub ---- */

struct cli_result {
    int code;  /* exit status, or -1 when killed or not started */
    char *out; /* stdout, NUL-terminated (owned) */
    char *err; /* stderr, NUL-terminated (owned) */
};

/* Free the output of a result and zero it. */
void cli_result_free(struct cli_result *r);

/*
 * Run `twinhub args...` (NULL-terminated, without the program name) with
 * stdin from /dev/null, and wait for it (at most 30 s, then it is killed).
 */
struct cli_result cli_run_argv(const char *const *args);
#define CLI_RUN(...) cli_run_argv((const char *const[]){__VA_ARGS__, NULL})

/* Assert the exit status; shows the output when it differs. */
void cli_expect_code(const struct cli_result *r, int code);
/* Assert that `haystack` (r->out or r->err) contains `needle`; shows the output when not. */
void cli_expect_in(const char *haystack, const char *needle, const struct cli_result *r);
/* Assert that `haystack` does not contain `needle`. */
void cli_expect_not_in(const char *haystack, const char *needle, const struct cli_result *r);
/* stdout parsed as JSON (the caller frees with cJSON_Delete); fails the test when it is not. */
cJSON *cli_json_of(const struct cli_result *r);
/* obj.a.b.c as an item, keys split at '.'; NULL when a step is missing. */
const cJSON *cli_path(const cJSON *obj, const char *dotted);
/* A whole file as a string (empty when unreadable); the caller frees. */
char *cli_slurp(const char *file);
/* Write `text` to `file`; fails the test when it cannot. */
void cli_write_file(const char *file, const char *text);

/* ---- the hub ---- */

struct cli_hub {
    char dir[1024]; /* temporary directory holding everything below */
    char cert_dir[2048];
    char state_dir[2048];
    char record[2048];
    char info[2048];
    char hub_file[CLI_PATH_LEN]; /* <cert_dir>/hubs/<pid>.json of the running serve */
    char serve_err[2048];
    char flag[CLI_PATH_LEN]; /* "--cert-dir=<cert_dir>", to pass to admin commands */
    pid_t pid;
    int out_fd; /* serve's stdout */
};

/* Start `twinhub serve` in a new temporary directory; fails the test when it does not come up. */
void cli_hub_start(struct cli_hub *h);
/* The same with the cert dir `cert_dir` (NULL: its own), which several hubs may share. */
void cli_hub_start_in(struct cli_hub *h, const char *cert_dir);
/* Start serve again with the same directories (and new ports) after cli_hub_stop. */
void cli_hub_restart(struct cli_hub *h);
/* SIGTERM serve and wait for it; returns its exit status (-1 when killed or not running). */
int cli_hub_stop(struct cli_hub *h);
/* Remove the hub's temporary directory. */
void cli_hub_remove_dir(struct cli_hub *h);

/* ---- an identity over MQTT ---- */

/* What a device or module connects to the hub's plain MQTT listener with. */
struct cli_login {
    int port; /* the plain MQTT listener's */
    char client_id[300];
    char user[512];
    char token[1024]; /* a SAS token valid for an hour, signed with the primary key */
};

/*
 * The login of device `device_id` (module `module_id`, or the device itself
 * when NULL) on hub h: its primary key read with `twinhub device|module show
 * --json`, the hub name and port from the info file. Fails the test on any error.
 */
void cli_login_of(const struct cli_hub *h, const char *device_id, const char *module_id,
                  struct cli_login *l);

struct cli_identity;

/*
 * Connect device `device_id` (module `module_id`, or the device itself when
 * NULL) to the hub's plain MQTT listener with its primary key (read with
 * `twinhub device|module show --json`), subscribe to its twin responses and
 * wait until the hub has acknowledged that. Fails the test on any error.
 * Free with cli_identity_close.
 */
struct cli_identity *cli_identity_connect(const struct cli_hub *h, const char *device_id,
                                          const char *module_id);

/*
 * Send a reported-properties patch (JSON text) as the SDKs do and wait for the
 * hub's answer; returns its status (204 when accepted), -1 on a timeout.
 */
int cli_identity_report(struct cli_identity *c, const char *patch);

/* Publish `payload` on `topic` (QoS 0), e.g. telemetry on devices/{id}/messages/events/. */
void cli_identity_publish(struct cli_identity *c, const char *topic, const char *payload);

/* Disconnect and free; accepts NULL. */
void cli_identity_close(struct cli_identity *c);

#endif
