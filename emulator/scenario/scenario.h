/*
 * scenario.h - scenario files (docs/scenarios.md): parse and validate them,
 * ISO 8601 durations, matchers with captures, ${var} substitution, the
 * expectation engine fed by event records, and the JUnit XML report.
 *
 * Everything here is pure: no sockets, no processes, no clocks. `twinhub run`
 * (emulator/cli/run.c) feeds the engine with the live event stream of
 * $twinhub/events/#; `twinhub verify` (emulator/cli/verify.c) feeds it with
 * the lines of a recording. Both therefore reach the same verdicts.
 *
 * Ownership: every `_new`/`_load` result is freed with its `_free`, which
 * accepts NULL. Strings returned inside structs belong to the struct.
 */
#ifndef TH_SCENARIO_H
#define TH_SCENARIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cjson/cJSON.h>

#include "th_result.h"

/* Default time bound of expectation steps when the scenario gives none. */
#define TH_SCN_DEFAULT_WITHIN_US (10LL * 1000000)
/* Largest scenario file, recording line and telemetry body we parse. */
#define TH_SCN_MAX_FILE_BYTES (16u * 1024 * 1024)
#define TH_SCN_MAX_DEPTH 64

/* ---- diagnostics ----------------------------------------------------------------------- */

/*
 * Validation errors, one line each: "FILE: PATH: what is wrong and what is
 * expected". At most TH_SCN_DIAG_MAX lines are kept; `count` counts all.
 */
#define TH_SCN_DIAG_MAX 20
struct th_scn_diag {
    char *text; /* NUL-terminated lines, or NULL when there is none */
    size_t len, cap;
    int count;
};
void th_scn_diag_add(struct th_scn_diag *d, const char *file, const char *path, const char *fmt,
                     ...) __attribute__((format(printf, 4, 5)));
void th_scn_diag_free(struct th_scn_diag *d);

/* ---- durations and times --------------------------------------------------------------- */

/*
 * An ISO 8601 duration "PnYnMnWnDTnHnMnS" (upper case; a fraction only on
 * the last component; at least one component; Y = 365 days, M = 30 days)
 * in microseconds. False when `text` is not one, or it does not fit.
 */
bool th_duration_parse(const char *text, int64_t *out_us);
/* "412 ms", "35.0 s", "2 min 5 s" for reports. */
void th_duration_human(int64_t us, char *buf, size_t size);

/* ---- matchers -------------------------------------------------------------------------- */

/* Why a matcher did not match: the path of the first difference and a sentence. */
struct th_mismatch {
    char path[512];     /* "reported.interval", "body.items[2]" */
    char message[1536]; /* "reported.interval: expected 30, got 10" */
};

/*
 * Check a matcher's shape: known operators with operands of the right type,
 * regular expressions that compile (unless they hold ${...}), durations.
 * Errors go to `diag` under `path`. Capture names are reported to
 * `on_capture` (may be NULL). Returns true when valid.
 */
bool th_matcher_validate(const cJSON *matcher, const char *file, const char *path,
                         struct th_scn_diag *diag, void (*on_capture)(const char *name, void *arg),
                         void *arg);

/*
 * Match `actual` (NULL when the member is absent) against `matcher`.
 * `root` names the value in messages ("reported", "body"). Captured values
 * are added to `captures` (an object, may be NULL) as strings only when the
 * whole match succeeds. On a mismatch fills `why` (may be NULL).
 */
bool th_match(const cJSON *matcher, const cJSON *actual, const char *root, cJSON *captures,
              struct th_mismatch *why);

/* Indented JSON text of `v` (two spaces a level); the caller frees with free(). */
char *th_scn_json_pretty(const cJSON *v);
/* Compact JSON text of `v`, cut to `max` bytes with "..." (the caller frees). */
char *th_scn_json_short(const cJSON *v, size_t max);

/* ---- variables ------------------------------------------------------------------------- */

/* Whether `name` is a variable the runner provides (hub.*, device.<id>.*, module.<id>.<mid>.*). */
bool th_vars_is_run_var(const char *name);
/* Whether `name` may name a scenario variable or a capture: [A-Za-z_][A-Za-z0-9_-]*. */
bool th_vars_valid_name(const char *name);

/*
 * Call `cb` for each ${name} in `s` (the name is NUL-terminated in a
 * scratch buffer). Returns false, with *bad set to the offset, when a "${"
 * has no closing "}" or an empty or over-long name. "$${" is a literal.
 */
bool th_vars_scan(const char *s, void (*cb)(const char *name, void *arg), void *arg, size_t *bad);

/*
 * A copy of `s` with every ${name} replaced by the string member `name` of
 * `vars` and every "$${" by "${". On an unknown name returns NULL and copies
 * the name into `unknown`. The caller frees with free().
 */
char *th_vars_subst_string(const char *s, const cJSON *vars, char *unknown, size_t size);
/* A deep copy of `in` with th_vars_subst_string applied to every string value (not keys). */
cJSON *th_vars_subst(const cJSON *in, const cJSON *vars, char *unknown, size_t size);

/* ---- scenarios ------------------------------------------------------------------------- */

enum th_step_kind {
    /* actions */
    TH_STEP_PATCH_DESIRED,
    TH_STEP_REPLACE_DESIRED,
    TH_STEP_UPDATE_TAGS,
    TH_STEP_INVOKE_METHOD,
    TH_STEP_SEND_C2D,
    TH_STEP_QUERY,
    TH_STEP_CREATE_MODULES,
    TH_STEP_CREATE_ENROLLMENT,       /* the provisioning service (docs/dps.md) */
    TH_STEP_CREATE_ENROLLMENT_GROUP, /* the same, a group */
    TH_STEP_CREATE_CONFIGURATION,
    TH_STEP_UPDATE_CONFIGURATION,
    TH_STEP_DELETE_CONFIGURATION,
    TH_STEP_SLEEP,
    /* expectations */
    TH_STEP_WAIT_CONNECTED,
    TH_STEP_WAIT_DISCONNECTED,
    TH_STEP_EXPECT_REPORTED,
    TH_STEP_EXPECT_TWIN_GET,
    TH_STEP_EXPECT_TELEMETRY,
    TH_STEP_EXPECT_NO_TELEMETRY,
    TH_STEP_EXPECT_NO_REPORTED,
    TH_STEP_EXPECT_C2D_DELIVERED,
    TH_STEP_EXPECT_REGISTRATION, /* a DPS registration (the `registration` record) */
    /* faults */
    TH_STEP_DISCONNECT,
    TH_STEP_EXPIRE_TOKEN,
    TH_STEP_INJECT_ERROR,
    TH_STEP_RESTART_HUB,
    TH_STEP_KIND_COUNT
};

enum th_step_class { TH_STEP_CLASS_ACTION, TH_STEP_CLASS_EXPECTATION, TH_STEP_CLASS_FAULT };

/* "patchDesired", ... */
const char *th_step_kind_name(enum th_step_kind k);
enum th_step_class th_step_kind_class(enum th_step_kind k);

struct th_step {
    int index;  /* 1-based, as printed */
    char *name; /* given, or "<kind> <index>" */
    enum th_step_kind kind;
    const cJSON *body;         /* the kind member's value (an object; `{}` for restartHub: true) */
    int64_t bound_us;          /* within / during / for, defaults applied; 0 for other actions */
    int since;                 /* expectTelemetry `since`: 0-based step index, else -1 */
    long count_min, count_max; /* expectTelemetry count; max -1 = no upper bound */
};

struct th_scenario {
    char *file; /* as given */
    char *dir;  /* its directory: the agent's working directory, base of relative files */
    char *name;
    cJSON *doc;             /* the whole parsed file */
    cJSON *registry;        /* the registry document (from `registry` or `registryFile`), or NULL */
    const cJSON *variables; /* object of strings, or NULL */
    bool has_agent;
    const char *agent_command; /* NULL when the scenario has none */
    const char *agent_device;  /* identity; NULL = the runner picks (first registry device) */
    const char *agent_module;
    const cJSON *agent_env; /* object of strings or NULL */
    int agent_start_at;     /* 0-based step index before which the agent starts */
    int64_t default_within_us;
    struct th_step *steps;
    size_t nsteps;
};

/*
 * Read, parse and validate a scenario file. On any problem returns NULL
 * with the reasons in `diag` (each names the file and the JSON path).
 * Free with th_scenario_free.
 */
struct th_scenario *th_scenario_load(const char *path, struct th_scn_diag *diag);
/* The same for text in memory; `path` names it and anchors relative files. */
struct th_scenario *th_scenario_parse(const char *text, size_t len, const char *path,
                                      struct th_scn_diag *diag);
void th_scenario_free(struct th_scenario *s);

/*
 * Where the validator gets the files a scenario names (`registryFile`,
 * createModules' `desiredFile`). th_scenario_parse and th_scenario_load read
 * them from disk; th_scenario_parse_ex with a reader lets a caller serve or
 * refuse them instead (tests/fuzz/fuzz_scenario.c refuses them or serves
 * bytes of its input, so that a fuzzed path such as /dev/stdin cannot block
 * it). The reader returns the whole content as malloc'd text with a NUL
 * after `*len` bytes, at most `max` bytes, or NULL with errno set (the
 * validator reports "cannot read PATH: strerror(errno)").
 */
typedef char *(*th_scn_read_fn)(const char *path, size_t max, size_t *len, void *arg);
struct th_scn_parse_opts {
    th_scn_read_fn read_file; /* NULL: read from disk */
    void *arg;                /* passed to read_file */
};
/* th_scenario_parse with `opts` (NULL: the same as th_scenario_parse). */
struct th_scenario *th_scenario_parse_ex(const char *text, size_t len, const char *path,
                                         const struct th_scn_parse_opts *opts,
                                         struct th_scn_diag *diag);

/* ---- command-line adjustments (twinhub run --time-scale, --var) ------------------------ */

#define TH_SCN_TIME_SCALE_MIN 0.001
#define TH_SCN_TIME_SCALE_MAX 1000.0
/* A --time-scale value: a plain decimal number from 0.001 to 1000 ("0.1", "2", "1e1"). */
bool th_scn_parse_time_scale(const char *text, double *out);
/*
 * Split a --var argument "NAME=VALUE": NAME (a valid variable name, shorter
 * than `size`) into `name`, *value points after the '='. False otherwise.
 */
bool th_scn_parse_var_arg(const char *arg, char *name, size_t size, const char **value);
/*
 * Multiply every time bound of `s` by f: each step's `within`, `during` and
 * sleep `for` (defaults applied) and the default within.
 */
void th_scenario_scale_time(struct th_scenario *s, double f);
/*
 * Give the scenario variable `name` the value `value`, taken literally (a
 * "${" in it is not expanded). TH_ERR_NOT_FOUND when `s` does not declare
 * the variable in `variables`, TH_ERR_NOMEM.
 */
TH_NODISCARD th_result th_scenario_set_variable(struct th_scenario *s, const char *name,
                                                const char *value);

/*
 * The identities a scenario names (registry devices and modules, the agent's,
 * every step's deviceId/moduleId without ${...}), as an array of
 * {"deviceId", "moduleId"?} objects without duplicates. The caller frees;
 * NULL when out of memory.
 */
cJSON *th_scenario_identities(const struct th_scenario *s);

/* ---- the engine ------------------------------------------------------------------------ */

enum th_verdict {
    TH_VERDICT_NONE,
    TH_VERDICT_PENDING,
    TH_VERDICT_PASS,
    TH_VERDICT_FAIL,
    TH_VERDICT_SKIP
};

struct th_step_result {
    enum th_verdict verdict;
    int64_t start_us, end_us; /* record time of the mark, and of the verdict */
    char *message;            /* one line for a failure or a note; NULL when none */
    char *detail;             /* more lines (expected and actual documents), or NULL */
};

struct th_scn_session;

/*
 * A session evaluates one run of `s` (borrowed; it must outlive the
 * session). `offline` (verify): action steps are not executed; the session
 * itself decides them from the recording.
 */
struct th_scn_session *th_scn_session_new(const struct th_scenario *s, bool offline);
void th_scn_session_free(struct th_scn_session *ss);

/*
 * Seed the identities' reported properties and connection state the way
 * the hub loads them: the development identities, then `registry` (may be
 * NULL). Offline verification starts from this.
 */
TH_NODISCARD th_result th_scn_session_seed_registry(struct th_scn_session *ss,
                                                    const cJSON *registry, struct th_error *err);
/*
 * Seed one identity from a twin as the control API's getTwin returns it
 * (properties.reported with $version, connectionState). Live runs use this.
 */
TH_NODISCARD th_result th_scn_session_seed_twin(struct th_scn_session *ss, const char *device_id,
                                                const char *module_id, const cJSON *twin);

/* Set a variable (the runner's hub.*, device.* ...). False when out of memory. */
bool th_scn_session_set_var(struct th_scn_session *ss, const char *name, const char *value);
/* The variables (scenario variables, run variables, captures), an object of strings. */
const cJSON *th_scn_session_vars(const struct th_scn_session *ss);

/*
 * Feed one event record (recording.md), read with th_journal_parse
 * (core/journal.h). Takes ownership of `record` on every path. A `mark` for
 * this scenario's next step anchors that step; records update the
 * identities' state and the verdict of the step being evaluated. Returns
 * TH_ERR_FORMAT (with err) when `record` is not a record, TH_ERR_NOMEM when
 * it could not be applied (the identities' state is then as before it).
 */
TH_NODISCARD th_result th_scn_session_feed(struct th_scn_session *ss, cJSON *record,
                                           struct th_error *err);

/* The hub restarted: every identity is disconnected (live; offline sees seq restart). */
void th_scn_session_hub_restarted(struct th_scn_session *ss);

/* Say that step `i` (0-based) comes next: its mark is awaited. */
void th_scn_session_begin_step(struct th_scn_session *ss, size_t i);
/* Whether the current step's mark has been fed. */
bool th_scn_session_anchored(const struct th_scn_session *ss);
/* The current step's deadline (mark time + bound), or INT64_MAX when it has none. */
int64_t th_scn_session_deadline(const struct th_scn_session *ss);
/*
 * Every record with a time up to `t_us` has been fed: decide a step whose
 * deadline is <= t_us. Offline, t_us = INT64_MAX at the end of the recording.
 */
void th_scn_session_settle(struct th_scn_session *ss, int64_t t_us);

/*
 * The current step with ${...} replaced, or NULL after setting its result to
 * FAIL ("unknown variable ${x}") when a name is unknown. Owned by the session.
 */
const cJSON *th_scn_session_resolved(struct th_scn_session *ss);
/* Run variables the current step uses that are not set yet (array of names; caller
 * frees; NULL when out of memory). */
cJSON *th_scn_session_missing_run_vars(const struct th_scn_session *ss, size_t i);

/*
 * Check an action's outcome (live): `outcome` is {"status","payload"} or
 * {"error","errorCode"} for invokeMethod, {"items","count"} for query, the
 * ensureModule data for createModules, {"error", ...} when the control API
 * refused any other action. Sets the current step's result; captures go to
 * the variables. `end_us` is the time of the verdict.
 */
void th_scn_session_check_outcome(struct th_scn_session *ss, const cJSON *outcome, int64_t end_us);

/* Set the current step's result directly (the runner: agent died, hub down, sleep done). */
void th_scn_session_set_result(struct th_scn_session *ss, enum th_verdict v, int64_t end_us,
                               const char *message, const char *detail);

/* Result of step i; verdict NONE while it has not run. */
const struct th_step_result *th_scn_session_result(const struct th_scn_session *ss, size_t i);
/*
 * Offline, after the last record: decide the step being evaluated (its
 * deadline has passed), fail a step whose mark never came, skip the rest.
 */
void th_scn_session_finish(struct th_scn_session *ss);
/* The step being run (0-based), or (size_t)-1 when none. */
size_t th_scn_session_current(const struct th_scn_session *ss);
/* Mark every step without a verdict as skipped. */
void th_scn_session_skip_rest(struct th_scn_session *ss);
/* The time of the scenario's first record and of its last (0 when none). */
int64_t th_scn_session_first_time(const struct th_scn_session *ss);
int64_t th_scn_session_last_time(const struct th_scn_session *ss);

/* ---- the control commands of a live run (scn_actions.c) ----------------------------- */

/*
 * What `twinhub run` sends through the control API (docs/control-api.md) for
 * a scenario, and how it reads the answers (one command alone is
 * th_ctl_command, core/ctl_proto.h). Each command is a new object the
 * caller frees with cJSON_Delete, or NULL when out of memory.
 */

/* Rows per page of a query step. */
#define TH_SCN_QUERY_PAGE 1000

/* The mark that anchors step i: data {"scenario", "step", "index", "action"}. */
cJSON *th_scn_step_mark(const struct th_scenario *s, size_t i);
/* The mark of the scenario's begin or end: data {"scenario", "file", "index": 0, "action"}. */
cJSON *th_scn_scenario_mark(const struct th_scenario *s, const char *action);
/*
 * The command that performs action or fault step `st`, from its body with
 * the variables resolved (`bound`, th_scn_session_resolved). createModules'
 * desiredFile (relative to the scenario's directory) is read through
 * opts->read_file, or from disk when `opts` is NULL. NULL for steps that are
 * no command (sleep, restartHub, expectations) and on failure, with `err`
 * saying why ("out of memory", "cannot read desiredFile PATH: reason").
 */
cJSON *th_scn_action_command(const struct th_scenario *s, const struct th_step *st,
                             const cJSON *bound, const struct th_scn_parse_opts *opts, char *err,
                             size_t errsize);
/* One page of a query step: TH_SCN_QUERY_PAGE rows, after `continuation` when non-NULL. */
cJSON *th_scn_query_command(const char *query, const char *continuation);
/*
 * What th_scn_session_check_outcome checks, from a control response entry:
 * its data ({} when it has none), or {"error", "status", "errorCode"} when
 * the hub refused the command. NULL when out of memory.
 */
cJSON *th_scn_outcome(const cJSON *entry);
/*
 * Set the run variables of identity device_id[/module_id] from its getDevice
 * data: device.<d>.connectionString and device.<d>.primaryKey, or
 * module.<d>.<m>.connectionString, for a hub `hub_name` that devices reach
 * at `gateway` (GatewayHostName). False when the identity has no symmetric
 * key (nothing is set) or out of memory.
 */
bool th_scn_session_identity_vars(struct th_scn_session *ss, const char *device_id,
                                  const char *module_id, const cJSON *identity,
                                  const char *hub_name, const char *gateway);

/* ---- reports --------------------------------------------------------------------------- */

/* "PASS  3 acknowledges it (412 ms)" / "FAIL  4 ... : message" without a newline. */
void th_scn_format_line(const struct th_step *step, const struct th_step_result *r, char *buf,
                        size_t size);

struct th_junit_case {
    const char *name;
    double time_s;
    enum th_verdict verdict;
    const char *message; /* failure message, or NULL */
    const char *detail;  /* failure body, or NULL */
};

struct th_junit_suite {
    const char *name;
    const char *file;
    const char *timestamp; /* ISO 8601, or NULL */
    double time_s;
    const struct th_junit_case *cases;
    size_t ncases;
    const char *system_out; /* e.g. the agent log tail, or NULL */
    const char *error;      /* a suite that could not run (hub down), or NULL */
};

/*
 * JUnit XML for `n` suites: <testsuites> with one <testsuite> each, one
 * <testcase> per step, <failure message=...> with the detail as text,
 * <skipped/>. The caller frees with free(); NULL when out of memory.
 */
char *th_junit_render(const struct th_junit_suite *suites, size_t n);

/* Fill `cases` (nsteps entries) from a session's results; strings are borrowed. */
void th_scn_junit_cases(const struct th_scenario *s, const struct th_scn_session *ss,
                        struct th_junit_case *cases);

#endif
