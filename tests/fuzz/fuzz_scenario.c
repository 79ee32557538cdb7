/*
 * fuzz_scenario.c - libFuzzer target for scenario files (docs/scenarios.md)
 * and the matchers in them.
 *
 * Input: the scenario text, optionally followed by FILE_SEP and the content
 * of "the file next to it". The scenario is parsed with
 * th_scenario_parse_ex and a reader that never touches the disk: without a
 * FILE_SEP it refuses every registryFile / desiredFile (ENOENT), with one it
 * serves the bytes after it for whatever path is named. An accepted
 * scenario is then run offline, the way `twinhub verify` runs a recording,
 * over records made up from its own steps (marks, connections, reported
 * patches built from the matchers, telemetry, methods, C2D), and reported
 * in JUnit form. Every string of the document also goes through the
 * duration, record-time and ${var} helpers.
 *
 * Matchers: an input whose JSON is an array [matcher, value, ...] is also
 * matched (each later element against the first), and every accepted
 * step's matcher against its own text and other parts of the document.
 *
 * Contracts checked (FUZZ_CHECK): a refused scenario has diagnostics and an
 * accepted one none; an accepted one satisfies what the runner relies on
 * (steps named, kinds known, `since` earlier, counts ordered, startAt in
 * range, identities well formed, the registry seeds); every step ends with
 * a verdict and a failure has a message; th_match gives the same verdict
 * with and without captures and explanations, explains every mismatch, is
 * negated by $not and kept by $anyOf, and {"$exact": v} matches v.
 */
#define _GNU_SOURCE /* memmem */
#include <errno.h>
#include <stdbool.h>

#include "fuzz_common.h"
#include "journal.h"
#include "json.h"
#include "scenario.h"
#include "util.h"

#define FILE_SEP "\n#file\n"
#define T0 1798761600000000LL /* 2027-01-01T00:00:00Z */

/* ---- the reader: the bytes after FILE_SEP, or nothing ---- */

struct served {
    const char *text; /* NULL: refuse every file */
    size_t len;
    int reads;
};

static char *fuzz_read(const char *path, size_t max, size_t *len, void *arg)
{
    struct served *sv = arg;
    FUZZ_CHECK(path != NULL && path[0] != '\0');
    FUZZ_CHECK(max == TH_SCN_MAX_FILE_BYTES);
    sv->reads++;
    if (!sv->text) {
        errno = ENOENT;
        return NULL;
    }
    if (sv->len > max) {
        errno = EFBIG;
        return NULL;
    }
    char *copy = fuzz_cstr((const uint8_t *)sv->text, sv->len);
    *len = sv->len;
    return copy;
}

/* ---- matchers ---- */

static bool has_duplicate_keys(const cJSON *j)
{
    if (!cJSON_IsObject(j) && !cJSON_IsArray(j))
        return false;
    for (const cJSON *c = j->child; c; c = c->next) {
        if (cJSON_IsObject(j))
            for (const cJSON *d = c->next; d; d = d->next)
                if (c->string && d->string && !strcmp(c->string, d->string))
                    return true;
        if (has_duplicate_keys(c))
            return true;
    }
    return false;
}

static bool only_strings(const cJSON *obj)
{
    const cJSON *c;
    cJSON_ArrayForEach(c, obj) if (!cJSON_IsString(c)) return false;
    return true;
}

/* Wrap a copy of `m` as {op: m}; the caller deletes. */
static cJSON *wrap(const char *op, const cJSON *m, bool in_array)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *copy = cJSON_Duplicate(m, 1);
    FUZZ_CHECK(o && copy);
    if (in_array) {
        cJSON *arr = cJSON_CreateArray();
        FUZZ_CHECK(arr);
        cJSON_AddItemToArray(arr, copy);
        copy = arr;
    }
    cJSON_AddItemToObject(o, op, copy);
    return o;
}

/* Match `m` against `a` (NULL: absent) every way the engine does, and check the contracts. */
static void check_match(const cJSON *m, const cJSON *a)
{
    struct th_mismatch why;
    cJSON *caps = cJSON_CreateObject();
    FUZZ_CHECK(caps);
    bool ok = th_match(m, a, "value", caps, &why);
    FUZZ_CHECK(th_match(m, a, "value", NULL, NULL) == ok);
    if (ok) {
        FUZZ_CHECK(only_strings(caps));
    } else {
        FUZZ_CHECK(cJSON_GetArraySize(caps) == 0); /* captures only on a whole match */
        if (why.message[0] == '\0' || why.path[0] == '\0') {
            char *mt = cJSON_PrintUnformatted(m), *at = a ? cJSON_PrintUnformatted(a) : NULL;
            fprintf(stderr, "mismatch without an explanation: matcher %s, value %s\n",
                    mt ? mt : "?", at ? at : "(absent)");
            abort();
        }
        FUZZ_CHECK(memchr(why.message, '\0', sizeof why.message) != NULL);
    }
    cJSON_Delete(caps);

    cJSON *not = wrap("$not", m, false);
    FUZZ_CHECK(th_match(not, a, "value", NULL, NULL) == !ok);
    cJSON_Delete(not );
    cJSON *any = wrap("$anyOf", m, true);
    FUZZ_CHECK(th_match(any, a, "value", NULL, &why) == ok);
    cJSON_Delete(any);
}

/* The matcher contracts for `m`: validation, matching `cands`, and the identities. */
static void check_matcher(const cJSON *m, const cJSON *const *cands, size_t n)
{
    struct th_scn_diag d = {0};
    bool valid = th_matcher_validate(m, "fuzz", "match", &d, NULL, NULL);
    FUZZ_CHECK(valid == (d.count == 0));
    th_scn_diag_free(&d);
    for (size_t i = 0; i < n; i++)
        check_match(m, cands[i]);
    check_match(m, NULL);
    /* {"$exact": v} matches v itself; v matches an {"$exact": v} copy of itself as a value. */
    if (!has_duplicate_keys(m)) {
        cJSON *ex = wrap("$exact", m, false);
        FUZZ_CHECK(th_match(ex, m, "value", NULL, NULL));
        cJSON_Delete(ex);
    }
}

/* ---- the helpers every string goes through ---- */

static void count_name(const char *name, void *arg)
{
    FUZZ_CHECK(name != NULL && name[0] != '\0');
    (*(int *)arg)++;
}

static void walk_strings(const cJSON *j, const cJSON *vars)
{
    if (cJSON_IsString(j)) {
        const char *s = j->valuestring;
        int64_t us;
        if (th_duration_parse(s, &us)) {
            FUZZ_CHECK(us >= 0);
            char buf[64];
            th_duration_human(us, buf, sizeof buf);
            FUZZ_CHECK(buf[0] != '\0');
        }
        (void)th_journal_time_parse(s, &us);
        size_t bad;
        char unknown[128];
        int names = 0;
        if (th_vars_scan(s, count_name, &names, &bad)) {
            char *t = th_vars_subst_string(s, vars, unknown, sizeof unknown);
            free(t);
        } else {
            FUZZ_CHECK(bad <= strlen(s));
        }
        (void)th_vars_valid_name(s);
        (void)th_vars_is_run_var(s);
        return;
    }
    const cJSON *c;
    cJSON_ArrayForEach(c, j) walk_strings(c, vars);
}

/* ---- offline run over made-up records ---- */

static long seq;

static void feed(struct th_scn_session *ss, int64_t t, const char *kind, const char *dev,
                 const char *mod, cJSON *data)
{
    char when[TH_TIME_BUF];
    th_time_format(t, when);
    cJSON *r = cJSON_CreateObject();
    FUZZ_CHECK(r);
    cJSON_AddNumberToObject(r, "seq", (double)++seq);
    cJSON_AddStringToObject(r, "time", when);
    cJSON_AddStringToObject(r, "kind", kind);
    if (dev)
        cJSON_AddStringToObject(r, "deviceId", dev);
    else
        cJSON_AddNullToObject(r, "deviceId");
    if (mod)
        cJSON_AddStringToObject(r, "moduleId", mod);
    else
        cJSON_AddNullToObject(r, "moduleId");
    cJSON_AddItemToObject(r, "data", data ? data : cJSON_CreateObject());
    struct th_error e = {0};
    FUZZ_CHECK(th_scn_session_feed(ss, r, &e) == TH_OK);
}

/* Records a device might produce for step `st` (resolved body `b`) at time t. */
static void feed_step_world(struct th_scn_session *ss, const struct th_step *st, const cJSON *b,
                            int64_t t, int variant)
{
    const char *dev = th_json_string(b, "deviceId", NULL);
    const char *mod = th_json_string(b, "moduleId", NULL);
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(b, "match");
    cJSON *d;
    switch (st->kind) {
    case TH_STEP_WAIT_CONNECTED:
        if (variant & 1) {
            d = cJSON_CreateObject();
            cJSON_AddStringToObject(d, "reason", "fuzz");
            feed(ss, t + 1, "refused", dev, mod, d);
        }
        feed(ss, t + 2, (variant & 2) ? "connected" : "disconnected", dev, mod, NULL);
        break;
    case TH_STEP_WAIT_DISCONNECTED:
        feed(ss, t + 1, "disconnected", dev, mod, NULL);
        break;
    case TH_STEP_EXPECT_REPORTED:
    case TH_STEP_EXPECT_NO_REPORTED:
        d = cJSON_CreateObject();
        cJSON_AddItemToObject(d, "patch",
                              cJSON_IsObject(m) && (variant & 1) ? cJSON_Duplicate(m, 1)
                                                                 : cJSON_CreateObject());
        cJSON_AddNumberToObject(d, "version", 1000 + (double)seq);
        feed(ss, t + 1, "reported", dev, mod, d);
        break;
    case TH_STEP_EXPECT_TWIN_GET:
        feed(ss, t + 1, "twinGet", dev, mod, NULL);
        break;
    case TH_STEP_EXPECT_TELEMETRY:
    case TH_STEP_EXPECT_NO_TELEMETRY:
        for (int i = 0; i < 1 + (variant & 3); i++) {
            d = cJSON_CreateObject();
            const cJSON *body = cJSON_GetObjectItemCaseSensitive(m, "body");
            char *text = body ? cJSON_PrintUnformatted(body) : NULL;
            cJSON_AddStringToObject(d, "body", text ? text : "{}");
            free(text);
            cJSON *props = cJSON_GetObjectItemCaseSensitive(m, "properties");
            cJSON_AddItemToObject(d, "properties",
                                  props ? cJSON_Duplicate(props, 1) : cJSON_CreateObject());
            cJSON_AddItemToObject(d, "systemProperties", cJSON_CreateObject());
            cJSON_AddStringToObject(d, "topic", "devices/x/messages/events/");
            feed(ss, t + 1 + i, "telemetry", dev, mod, d);
        }
        break;
    case TH_STEP_EXPECT_C2D_DELIVERED: {
        const char *mid = th_json_string(b, "messageId", "");
        d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "messageId", mid);
        cJSON_AddBoolToObject(d, "delivered", variant & 1);
        feed(ss, t + 1, "c2d", dev, NULL, d);
        break;
    }
    case TH_STEP_INVOKE_METHOD: {
        d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "methodName", th_json_string(b, "methodName", ""));
        const cJSON *expect = cJSON_GetObjectItemCaseSensitive(b, "expect");
        if (variant & 1) {
            cJSON_AddStringToObject(d, "error", "fuzz");
            cJSON_AddNumberToObject(d, "errorCode", 404103);
        } else {
            cJSON_AddNumberToObject(d, "status", 200);
            const cJSON *p = cJSON_GetObjectItemCaseSensitive(expect, "payload");
            cJSON_AddItemToObject(d, "payload", p ? cJSON_Duplicate(p, 1) : cJSON_CreateNull());
        }
        feed(ss, t + 1, "method", dev, mod, d);
        break;
    }
    default:
        break;
    }
}

static void run_offline(const struct th_scenario *s, int variant)
{
    struct th_scn_session *ss = th_scn_session_new(s, true);
    FUZZ_CHECK(ss != NULL);
    struct th_error e = {0};
    /* The validator loaded this registry: seeding the engine from it must work too. */
    if (th_scn_session_seed_registry(ss, s->registry, &e) != TH_OK) {
        fprintf(stderr, "validated registry does not seed: %s\n", e.message);
        abort();
    }
    (void)th_scn_session_vars(ss);
    seq = 0;
    int64_t t = T0;
    for (size_t i = 0; i < s->nsteps; i++) {
        /* A step still pending (a long bound, a method without its record) is cut short by
         * the next mark, as in a recording that moved on. */
        if (th_scn_session_current(ss) == (size_t)-1)
            break;
        cJSON *missing = th_scn_session_missing_run_vars(ss, i);
        FUZZ_CHECK(missing != NULL);
        cJSON_Delete(missing);
        cJSON *mark = cJSON_CreateObject();
        FUZZ_CHECK(mark);
        cJSON_AddStringToObject(mark, "scenario", s->name);
        cJSON_AddStringToObject(mark, "step", s->steps[i].name);
        cJSON_AddNumberToObject(mark, "index", (double)(i + 1));
        cJSON_AddStringToObject(mark, "action", th_step_kind_name(s->steps[i].kind));
        feed(ss, t, "mark", NULL, NULL, mark);
        /* A copy: the session frees its resolved step once a record decides the step. */
        const cJSON *b = th_scn_session_resolved(ss);
        if (b && th_scn_session_current(ss) == i && th_scn_session_anchored(ss)) {
            cJSON *copy = cJSON_Duplicate(b, 1);
            FUZZ_CHECK(copy != NULL);
            feed_step_world(ss, &s->steps[i], copy, t, variant >> (i % 4));
            cJSON_Delete(copy);
        }
        (void)th_scn_session_deadline(ss);
        /* Move the clock past the step's bound (capped: bounds may be years). */
        int64_t bound = s->steps[i].bound_us;
        t += (bound > 0 && bound < 3600LL * 1000000 ? bound : 1000000) + 1000000;
        th_scn_session_settle(ss, t);
    }
    th_scn_session_finish(ss);
    bool failed = false;
    for (size_t i = 0; i < s->nsteps; i++) {
        const struct th_step_result *r = th_scn_session_result(ss, i);
        FUZZ_CHECK(r != NULL);
        FUZZ_CHECK(r->verdict == TH_VERDICT_PASS || r->verdict == TH_VERDICT_FAIL ||
                   r->verdict == TH_VERDICT_SKIP);
        if (r->verdict == TH_VERDICT_FAIL)
            FUZZ_CHECK(r->message != NULL && r->message[0] != '\0');
        /* Offline, the steps after a failure are skipped. */
        if (failed)
            FUZZ_CHECK(r->verdict == TH_VERDICT_SKIP);
        failed |= r->verdict == TH_VERDICT_FAIL;
        char line[512];
        th_scn_format_line(&s->steps[i], r, line, sizeof line);
        FUZZ_CHECK(line[0] != '\0');
    }
    struct th_junit_case *cases = calloc(s->nsteps, sizeof *cases);
    FUZZ_CHECK(cases);
    th_scn_junit_cases(s, ss, cases);
    struct th_junit_suite suite = {.name = s->name,
                                   .file = s->file,
                                   .timestamp = NULL,
                                   .time_s = 1.5,
                                   .cases = cases,
                                   .ncases = s->nsteps,
                                   .system_out = s->agent_command,
                                   .error = NULL};
    char *xml = th_junit_render(&suite, 1);
    FUZZ_CHECK(xml != NULL);
    FUZZ_CHECK(strstr(xml, "<testsuites") != NULL);
    free(xml);
    free(cases);
    th_scn_session_free(ss);
}

/* ---- an accepted scenario ---- */

static void check_accepted(const struct th_scenario *s, int variant)
{
    FUZZ_CHECK(s->name && s->name[0] && s->file && s->dir && cJSON_IsObject(s->doc));
    FUZZ_CHECK(s->nsteps > 0 && s->steps);
    FUZZ_CHECK(s->default_within_us >= 0);
    FUZZ_CHECK(!s->registry || cJSON_IsObject(s->registry));
    FUZZ_CHECK(!s->variables || cJSON_IsObject(s->variables));
    FUZZ_CHECK(s->agent_start_at >= 0 && (size_t)s->agent_start_at < s->nsteps);
    FUZZ_CHECK(!s->agent_command || s->has_agent);
    for (size_t i = 0; i < s->nsteps; i++) {
        const struct th_step *st = &s->steps[i];
        FUZZ_CHECK(st->index == (int)i + 1);
        FUZZ_CHECK(st->name && st->name[0]);
        FUZZ_CHECK((unsigned)st->kind < TH_STEP_KIND_COUNT);
        FUZZ_CHECK(st->body != NULL);
        FUZZ_CHECK(cJSON_IsObject(st->body) || st->kind == TH_STEP_RESTART_HUB);
        FUZZ_CHECK(st->bound_us >= 0);
        FUZZ_CHECK(st->since < (int)i);
        if (st->kind == TH_STEP_EXPECT_TELEMETRY)
            FUZZ_CHECK(st->count_min >= 0 && (st->count_max < 0 || st->count_max >= st->count_min));
        /* Every matcher the engine will use was validated. */
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(st->body, "match");
        if (m) {
            const cJSON *cands[] = {m, s->variables, s->registry, st->body};
            check_matcher(m, cands, 4);
        }
        const cJSON *ex = cJSON_GetObjectItemCaseSensitive(st->body, "expect");
        if (cJSON_IsObject(ex)) {
            const cJSON *cands[] = {ex, st->body};
            check_matcher(ex, cands, 2);
        }
    }
    cJSON *ids = th_scenario_identities(s);
    FUZZ_CHECK(cJSON_IsArray(ids));
    const cJSON *id;
    cJSON_ArrayForEach(id, ids)
    {
        FUZZ_CHECK(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(id, "deviceId")));
        const cJSON *mod = cJSON_GetObjectItemCaseSensitive(id, "moduleId");
        FUZZ_CHECK(!mod || cJSON_IsString(mod));
    }
    cJSON_Delete(ids);
    run_offline(s, variant);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Split off the served file. */
    size_t text_len = size;
    struct served sv = {NULL, 0, 0};
    const uint8_t *sep =
        size >= sizeof FILE_SEP - 1 ? memmem(data, size, FILE_SEP, sizeof FILE_SEP - 1) : NULL;
    if (sep) {
        text_len = (size_t)(sep - data);
        sv.text = (const char *)sep + sizeof FILE_SEP - 1;
        sv.len = size - text_len - (sizeof FILE_SEP - 1);
    }
    char *text = fuzz_bytes(data, text_len);
    struct th_scn_parse_opts opts = {fuzz_read, &sv};
    struct th_scn_diag diag = {0};
    /* The path has a directory so that relative file names are joined to it. */
    struct th_scenario *s =
        th_scenario_parse_ex(text, text_len, "scenarios/fuzz.json", &opts, &diag);
    if (getenv("FUZZ_VERBOSE"))
        fprintf(stderr, "%s (%d file reads)\n%s", s ? "accepted" : "refused", sv.reads,
                diag.text ? diag.text : "");
    if (s) {
        FUZZ_CHECK(diag.count == 0 && diag.text == NULL);
        check_accepted(s, text_len ? data[0] : 0);
        walk_strings(s->doc, s->variables);
        th_scenario_free(s);
    } else {
        FUZZ_CHECK(diag.count > 0 && diag.text != NULL && diag.text[0] != '\0');
        FUZZ_CHECK(strlen(diag.text) == diag.len);
    }
    th_scn_diag_free(&diag);

    /* Matcher mode: [matcher, value, ...]. */
    cJSON *doc = NULL;
    struct th_error e = {0};
    if (th_json_parse(text, text_len, TH_SCN_MAX_FILE_BYTES, TH_SCN_MAX_DEPTH, &doc, &e) == TH_OK &&
        cJSON_IsArray(doc) && doc->child) {
        const cJSON *cands[8];
        size_t n = 0;
        for (const cJSON *c = doc->child->next; c && n < 8; c = c->next)
            cands[n++] = c;
        check_matcher(doc->child, cands, n);
        walk_strings(doc, NULL);
    }
    cJSON_Delete(doc);
    free(text);
    return 0;
}
