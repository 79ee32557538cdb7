/*
 * scn_engine.c - the expectation engine (docs/scenarios.md, "Expectations",
 * "Verifying a recording"). It is fed event records in hub order, live from
 * $twinhub/events/# or from a recording, and decides each step:
 *
 * - the identities' state (reported properties rebuilt from `reported`
 *   patches with merge semantics, connection state) is kept up to date;
 * - a `mark` record {"scenario","step","index","action"} anchors the step
 *   it names: "now" is the state at the mark, and time bounds count from
 *   the mark's time, on the hub's clock;
 * - a step is decided by the first record that settles it, or at its
 *   deadline once every record up to the deadline has been fed (live: a
 *   record stamped later, or the runner's barrier; offline: the next record
 *   or the end of the recording).
 *
 * Because the verdict depends only on the records and their timestamps, a
 * recording of a run gives the same verdicts as the run itself.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <uthash.h>

#include "journal.h"
#include "json.h"
#include "patch.h"
#include "registry.h"
#include "scenario.h"

#define SHOW_MAX 300
#define BODY_MAX_BYTES (1024u * 1024)
#define NO_STEP ((size_t)-1)

struct ident {
    char *key; /* "device" or "device/module" (ids never contain '/'... see key_of) */
    char *device_id;
    char *module_id; /* NULL for a device */
    cJSON *reported; /* without $version / $metadata */
    int64_t version;
    bool connected;
    UT_hash_handle hh;
};

struct event {
    struct th_journal_record r; /* points into record */
    cJSON *record;              /* owned */
};

struct eval {
    long count;       /* matching messages so far */
    long nonmatching; /* messages of the identity that did not match */
    bool have_miss;
    struct th_mismatch miss;
    long refused;
    char refused_reason[200];
    long patches; /* reported patches seen while waiting */
    bool queued;  /* expectC2DDelivered: seen queued, not delivered */
    cJSON *captures;
};

struct th_scn_session {
    const struct th_scenario *s;
    bool offline;
    struct ident *ids;
    struct event *ev;
    size_t nev, cap;
    int64_t last_seq;
    cJSON *vars;
    bool vars_ready;
    struct th_step_result *res;
    size_t *anchor; /* per step: history index of its mark, NO_STEP when none */
    int64_t first_time, last_time;
    /* the current step */
    size_t cur;
    bool anchored;
    bool failed; /* a step failed: the rest is skipped */
    cJSON *resolved;
    struct eval e;
};

/*
 * A record's number (seq, $version, mark index) as an integer. Recordings are
 * read from files, so the number may be anything JSON allows: it is clamped to
 * +-2^53 before the conversion, which is undefined outside int64's range.
 */
static int64_t num_i64(const cJSON *j)
{
    double v = j->valuedouble;
    if (!(v >= -9007199254740992.0))
        return -INT64_C(9007199254740992);
    if (v > 9007199254740992.0)
        return INT64_C(9007199254740992);
    return (int64_t)v;
}

/* ---- identities ---- */

static char *key_of(const char *d, const char *m)
{
    char *k = NULL;
    /* '\x1f' cannot appear in ids (registry.md), so the key is unambiguous. */
    if (asprintf(&k, "%s\x1f%s", d, m ? m : "") < 0)
        return NULL;
    return k;
}

static void ident_free(struct ident *id)
{
    if (!id)
        return;
    free(id->key);
    free(id->device_id);
    free(id->module_id);
    cJSON_Delete(id->reported);
    free(id);
}

static struct ident *ident_find(const struct th_scn_session *ss, const char *d, const char *m)
{
    if (!d)
        return NULL;
    char *k = key_of(d, m);
    struct ident *id = NULL;
    if (k)
        HASH_FIND_STR(ss->ids, k, id);
    free(k);
    return id;
}

/* Find or create (empty reported properties, version 1, disconnected). */
static struct ident *ident_get(struct th_scn_session *ss, const char *d, const char *m)
{
    struct ident *id = ident_find(ss, d, m);
    if (id || !d)
        return id;
    id = calloc(1, sizeof *id);
    if (!id)
        return NULL;
    id->key = key_of(d, m);
    id->device_id = strdup(d);
    id->module_id = m ? strdup(m) : NULL;
    id->reported = cJSON_CreateObject();
    id->version = 1;
    if (!id->key || !id->device_id || (m && !id->module_id) || !id->reported) {
        ident_free(id);
        return NULL;
    }
    HASH_ADD_KEYPTR(hh, ss->ids, id->key, strlen(id->key), id);
    return id;
}

static void ident_remove(struct th_scn_session *ss, struct ident *id)
{
    HASH_DEL(ss->ids, id);
    ident_free(id);
}

/* The reported document as matchers see it: the properties plus "$version". */
static cJSON *reported_doc(const struct ident *id)
{
    cJSON *doc = id ? cJSON_Duplicate(id->reported, 1) : cJSON_CreateObject();
    if (doc && !cJSON_AddNumberToObject(doc, "$version", id ? (double)id->version : 1)) {
        cJSON_Delete(doc);
        return NULL;
    }
    return doc;
}

/* ---- the session ---- */

struct th_scn_session *th_scn_session_new(const struct th_scenario *s, bool offline)
{
    struct th_scn_session *ss = calloc(1, sizeof *ss);
    if (!ss)
        return NULL;
    ss->s = s;
    ss->offline = offline;
    ss->cur = NO_STEP;
    ss->last_seq = -1;
    ss->vars = s->variables ? cJSON_Duplicate(s->variables, 1) : cJSON_CreateObject();
    ss->res = calloc(s->nsteps ? s->nsteps : 1, sizeof *ss->res);
    ss->anchor = malloc((s->nsteps ? s->nsteps : 1) * sizeof *ss->anchor);
    if (!ss->vars || !ss->res || !ss->anchor) {
        th_scn_session_free(ss);
        return NULL;
    }
    for (size_t i = 0; i < s->nsteps; i++)
        ss->anchor[i] = NO_STEP;
    if (offline)
        th_scn_session_begin_step(ss, 0);
    return ss;
}

void th_scn_session_free(struct th_scn_session *ss)
{
    if (!ss)
        return;
    struct ident *id, *tmp;
    HASH_ITER(hh, ss->ids, id, tmp)
    {
        HASH_DEL(ss->ids, id);
        ident_free(id);
    }
    for (size_t i = 0; i < ss->nev; i++)
        cJSON_Delete(ss->ev[i].record);
    free(ss->ev);
    for (size_t i = 0; ss->res && i < ss->s->nsteps; i++) {
        free(ss->res[i].message);
        free(ss->res[i].detail);
    }
    free(ss->res);
    free(ss->anchor);
    cJSON_Delete(ss->vars);
    cJSON_Delete(ss->resolved);
    cJSON_Delete(ss->e.captures);
    free(ss);
}

th_result th_scn_session_seed_registry(struct th_scn_session *ss, const cJSON *registry,
                                       struct th_error *err)
{
    struct th_registry *reg = th_registry_new();
    if (!reg)
        return th_error_set(err, TH_ERR_NOMEM, 0, "out of memory");
    th_result r = TH_OK;
    if (registry)
        r = th_registry_load(reg, registry, 0, err);
    else
        r = th_registry_add_dev_identities(reg, 0); /* no registry: the development identities */
    for (struct th_identity *d = r == TH_OK ? th_registry_next_device(reg, NULL) : NULL; d;
         d = th_registry_next_device(reg, d)) {
        for (size_t i = 0; i <= d->module_count; i++) {
            struct th_identity *x = i == 0 ? d : d->modules[i - 1];
            struct ident *id = ident_get(ss, x->device_id, x->module_id);
            if (!id) {
                r = th_error_set(err, TH_ERR_NOMEM, 0, "out of memory");
                break;
            }
            cJSON *rep = cJSON_Duplicate(x->twin->reported, 1);
            if (rep) {
                cJSON_Delete(id->reported);
                id->reported = rep;
            }
            id->version = x->twin->reported_version;
            id->connected = false;
        }
    }
    th_registry_free(reg);
    return r;
}

th_result th_scn_session_seed_twin(struct th_scn_session *ss, const char *device_id,
                                   const char *module_id, const cJSON *twin)
{
    struct ident *id = ident_get(ss, device_id, module_id);
    if (!id)
        return TH_ERR_NOMEM;
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(twin, "properties");
    const cJSON *rep = cJSON_GetObjectItemCaseSensitive(props, "reported");
    if (cJSON_IsObject(rep)) {
        const cJSON *ver = cJSON_GetObjectItemCaseSensitive(rep, "$version");
        int64_t v = cJSON_IsNumber(ver) ? num_i64(ver) : 1;
        /* Records already fed may be newer than this answer: keep the newer. */
        if (v >= id->version) {
            cJSON *copy = cJSON_Duplicate(rep, 1);
            if (!copy)
                return TH_ERR_NOMEM;
            cJSON_DeleteItemFromObjectCaseSensitive(copy, "$version");
            cJSON_DeleteItemFromObjectCaseSensitive(copy, "$metadata");
            cJSON_Delete(id->reported);
            id->reported = copy;
            id->version = v;
        }
    }
    const char *state = th_json_string(twin, "connectionState", NULL);
    if (state)
        id->connected = !strcmp(state, "Connected");
    return TH_OK;
}

bool th_scn_session_set_var(struct th_scn_session *ss, const char *name, const char *value)
{
    cJSON *v = cJSON_CreateString(value);
    if (!v)
        return false;
    bool ok = cJSON_GetObjectItemCaseSensitive(ss->vars, name)
                  ? cJSON_ReplaceItemInObjectCaseSensitive(ss->vars, name, v)
                  : cJSON_AddItemToObject(ss->vars, name, v);
    if (!ok)
        cJSON_Delete(v);
    return ok;
}

/* Scenario variables may use run variables and earlier variables: resolve them once. */
static void resolve_variables(struct th_scn_session *ss)
{
    if (ss->vars_ready)
        return;
    ss->vars_ready = true;
    const cJSON *c;
    cJSON_ArrayForEach(c, ss->s->variables)
    {
        if (!cJSON_IsString(c) || !strstr(c->valuestring, "${"))
            continue;
        char unknown[200];
        char *t = th_vars_subst_string(c->valuestring, ss->vars, unknown, sizeof unknown);
        if (t) {
            th_scn_session_set_var(ss, c->string, t);
            free(t);
        }
    }
}

const cJSON *th_scn_session_vars(const struct th_scn_session *ss)
{
    resolve_variables((struct th_scn_session *)ss);
    return ss->vars;
}

void th_scn_session_hub_restarted(struct th_scn_session *ss)
{
    struct ident *id, *tmp;
    HASH_ITER(hh, ss->ids, id, tmp)
    id->connected = false;
    /* The new hub's records count from 1 again; that is not another restart. */
    ss->last_seq = -1;
}

/* ---- results ---- */

static void set_result(struct th_scn_session *ss, size_t i, enum th_verdict v, int64_t end_us,
                       const char *message, const char *detail)
{
    struct th_step_result *r = &ss->res[i];
    r->verdict = v;
    r->end_us = end_us;
    if (r->start_us == 0)
        r->start_us = end_us;
    free(r->message);
    free(r->detail);
    r->message = message ? strdup(message) : NULL;
    r->detail = detail ? strdup(detail) : NULL;
    if (v == TH_VERDICT_FAIL)
        ss->failed = true;
    if (v == TH_VERDICT_PASS && ss->e.captures) {
        /* captures become variables for the later steps */
        const cJSON *c;
        cJSON_ArrayForEach(c, ss->e.captures)
        {
            if (cJSON_IsString(c))
                th_scn_session_set_var(ss, c->string, c->valuestring);
        }
    }
    if (i == ss->cur && v != TH_VERDICT_PENDING) {
        ss->cur = NO_STEP;
        ss->anchored = false;
        if (ss->offline) {
            if (v == TH_VERDICT_PASS && i + 1 < ss->s->nsteps)
                th_scn_session_begin_step(ss, i + 1);
            else
                th_scn_session_skip_rest(ss);
        }
    }
}

static void set_resultf(struct th_scn_session *ss, enum th_verdict v, int64_t end_us,
                        const char *detail, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void set_resultf(struct th_scn_session *ss, enum th_verdict v, int64_t end_us,
                        const char *detail, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    set_result(ss, ss->cur, v, end_us, msg, detail);
}

void th_scn_session_set_result(struct th_scn_session *ss, enum th_verdict v, int64_t end_us,
                               const char *message, const char *detail)
{
    if (ss->cur != NO_STEP)
        set_result(ss, ss->cur, v, end_us, message, detail);
}

const struct th_step_result *th_scn_session_result(const struct th_scn_session *ss, size_t i)
{
    return i < ss->s->nsteps ? &ss->res[i] : NULL;
}

void th_scn_session_skip_rest(struct th_scn_session *ss)
{
    for (size_t i = 0; i < ss->s->nsteps; i++)
        if (ss->res[i].verdict == TH_VERDICT_NONE || ss->res[i].verdict == TH_VERDICT_PENDING)
            ss->res[i].verdict = TH_VERDICT_SKIP;
    ss->cur = NO_STEP;
    ss->anchored = false;
}

int64_t th_scn_session_first_time(const struct th_scn_session *ss)
{
    return ss->first_time;
}

int64_t th_scn_session_last_time(const struct th_scn_session *ss)
{
    return ss->last_time;
}

/* ---- steps ---- */

static const struct th_step *cur_step(const struct th_scn_session *ss)
{
    return ss->cur != NO_STEP ? &ss->s->steps[ss->cur] : NULL;
}

static const char *body_str(const struct th_scn_session *ss, const char *key)
{
    return th_json_string(ss->resolved, key, NULL);
}

/* "sensor-1" or "sensor-1/agent" for messages. */
static void who(const struct th_scn_session *ss, char *buf, size_t size)
{
    const char *d = body_str(ss, "deviceId"), *m = body_str(ss, "moduleId");
    snprintf(buf, size, "%s%s%s", d ? d : "?", m ? "/" : "", m ? m : "");
}

static bool is_ours(const struct th_scn_session *ss, const struct event *e)
{
    const char *d = body_str(ss, "deviceId"), *m = body_str(ss, "moduleId");
    if (!d || !e->r.device_id || strcmp(d, e->r.device_id) != 0)
        return false;
    if (!m)
        return e->r.module_id == NULL;
    return e->r.module_id && !strcmp(m, e->r.module_id);
}

void th_scn_session_begin_step(struct th_scn_session *ss, size_t i)
{
    if (i >= ss->s->nsteps)
        return;
    resolve_variables(ss);
    ss->cur = i;
    ss->anchored = false;
    cJSON_Delete(ss->resolved);
    ss->resolved = NULL;
    cJSON_Delete(ss->e.captures);
    memset(&ss->e, 0, sizeof ss->e);
    ss->e.captures = cJSON_CreateObject();
    ss->res[i].verdict = TH_VERDICT_PENDING;
    ss->res[i].start_us = 0;
    char unknown[640];
    const cJSON *body = ss->s->steps[i].body;
    ss->resolved = th_vars_subst(body, ss->vars, unknown, sizeof unknown);
    if (!ss->resolved) {
        int64_t t = ss->last_time;
        if (unknown[0] && th_vars_is_run_var(unknown))
            set_resultf(ss, TH_VERDICT_FAIL, t, NULL, "${%s} is not known %s", unknown,
                        ss->offline ? "offline (a recording does not hold the hub's keys and "
                                      "ports)"
                                    : "to the runner: is the identity registered?");
        else if (unknown[0])
            set_resultf(ss, TH_VERDICT_FAIL, t, NULL,
                        "unknown variable ${%s}: no earlier step captured it", unknown);
        else
            set_resultf(ss, TH_VERDICT_FAIL, t, NULL, "out of memory");
    }
}

bool th_scn_session_anchored(const struct th_scn_session *ss)
{
    return ss->anchored;
}

int64_t th_scn_session_deadline(const struct th_scn_session *ss)
{
    const struct th_step *st = cur_step(ss);
    if (!st || !ss->anchored)
        return INT64_MAX;
    enum th_step_kind k = st->kind;
    int64_t bound;
    if (th_step_kind_class(k) == TH_STEP_CLASS_EXPECTATION || k == TH_STEP_SLEEP) {
        bound = st->bound_us;
    } else if (k == TH_STEP_INVOKE_METHOD && ss->offline) {
        /* the answer is recorded when it comes, at most after both timeouts */
        double rto = th_json_number(ss->resolved, "responseTimeoutInSeconds", 30);
        double cto = th_json_number(ss->resolved, "connectTimeoutInSeconds", 0);
        bound = (int64_t)((rto + cto + 5) * 1e6);
    } else {
        return INT64_MAX;
    }
    int64_t start = ss->res[ss->cur].start_us;
    return bound > INT64_MAX - start ? INT64_MAX : start + bound;
}

const cJSON *th_scn_session_resolved(struct th_scn_session *ss)
{
    return ss->resolved;
}

struct missing_ctx {
    const struct th_scn_session *ss;
    cJSON *out;
    bool nomem;
};

static void note_missing(const char *name, void *arg)
{
    struct missing_ctx *m = arg;
    if (!th_vars_is_run_var(name) || cJSON_GetObjectItemCaseSensitive(m->ss->vars, name))
        return;
    const cJSON *e;
    cJSON_ArrayForEach(e, m->out) if (!strcmp(e->valuestring, name)) return;
    cJSON *s = cJSON_CreateString(name);
    if (!s || !cJSON_AddItemToArray(m->out, s)) {
        cJSON_Delete(s);
        m->nomem = true;
    }
}

static void scan_missing(const cJSON *j, struct missing_ctx *m)
{
    if (cJSON_IsString(j)) {
        size_t bad;
        th_vars_scan(j->valuestring, note_missing, m, &bad);
    } else if (cJSON_IsObject(j) || cJSON_IsArray(j)) {
        const cJSON *c;
        cJSON_ArrayForEach(c, j) scan_missing(c, m);
    }
}

cJSON *th_scn_session_missing_run_vars(const struct th_scn_session *ss, size_t i)
{
    struct missing_ctx m = {ss, cJSON_CreateArray(), false};
    if (m.out && i < ss->s->nsteps)
        scan_missing(ss->s->steps[i].body, &m);
    if (m.nomem) {
        cJSON_Delete(m.out);
        return NULL;
    }
    return m.out;
}

/* ---- evaluation ---- */

/* The telemetry record matchers see: body (parsed when JSON), properties, systemProperties, topic.
 */
static cJSON *telemetry_view(const struct th_journal_record *r)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    const char *body = r->as.telemetry.body;
    cJSON *b = NULL;
    if (body) {
        struct th_error e = {0};
        if (th_json_parse(body, strlen(body), BODY_MAX_BYTES, TH_SCN_MAX_DEPTH, &b, &e) != TH_OK)
            b = cJSON_CreateString(body);
    } else {
        b = cJSON_CreateNull();
    }
    bool ok = b != NULL && cJSON_AddItemToObject(o, "body", b);
    if (!ok)
        cJSON_Delete(b);
    cJSON *props = NULL, *sys = NULL;
    if (ok && r->as.telemetry.properties) {
        props = cJSON_Duplicate(r->as.telemetry.properties, 1);
        ok = props && cJSON_AddItemToObject(o, "properties", props);
        if (!ok)
            cJSON_Delete(props);
    }
    if (ok && r->as.telemetry.system_properties) {
        sys = cJSON_Duplicate(r->as.telemetry.system_properties, 1);
        ok = sys && cJSON_AddItemToObject(o, "systemProperties", sys);
        if (!ok)
            cJSON_Delete(sys);
    }
    if (ok && r->as.telemetry.topic)
        ok = cJSON_AddStringToObject(o, "topic", r->as.telemetry.topic) != NULL;
    if (!ok) {
        cJSON_Delete(o);
        return NULL; /* out of memory */
    }
    return o;
}

static void bound_text(const struct th_step *st, char *buf, size_t size)
{
    th_duration_human(st->bound_us, buf, size);
}

static void count_text(const struct th_step *st, char *buf, size_t size)
{
    if (st->count_max < 0)
        snprintf(buf, size, "at least %ld", st->count_min);
    else if (st->count_max == st->count_min)
        snprintf(buf, size, "exactly %ld", st->count_min);
    else
        snprintf(buf, size, "%ld to %ld", st->count_min, st->count_max);
}

/* Telemetry: count one more matching message and decide when the count settles it. */
static void telemetry_counted(struct th_scn_session *ss, int64_t t)
{
    const struct th_step *st = cur_step(ss);
    char w[300], c[64];
    if (st->kind != TH_STEP_EXPECT_TELEMETRY)
        return;
    if (st->count_max >= 0 && ss->e.count > st->count_max) {
        who(ss, w, sizeof w);
        count_text(st, c, sizeof c);
        set_resultf(ss, TH_VERDICT_FAIL, t, NULL,
                    "expected %s matching telemetry message%s from %s, got %ld", c,
                    st->count_min == 1 && st->count_max == 1 ? "" : "s", w, ss->e.count);
    } else if (st->count_max < 0 && ss->e.count >= st->count_min) {
        set_result(ss, ss->cur, TH_VERDICT_PASS, t, NULL, NULL);
    }
}

/* One telemetry record of our identity inside the window. */
/* When a record came, relative to the current step's mark: "after 3 ms", or for a record from
 * before the mark (looked back at: the previous step's action), "3 ms before this step began". */
static void when_text(const struct th_scn_session *ss, int64_t t_us, char *buf, size_t size)
{
    char d[64];
    int64_t start = ss->res[ss->cur].start_us;
    th_duration_human(t_us >= start ? t_us - start : start - t_us, d, sizeof d);
    snprintf(buf, size, t_us >= start ? "after %s" : "%s before this step began", d);
}

static void eval_telemetry(struct th_scn_session *ss, const struct event *e)
{
    const struct th_step *st = cur_step(ss);
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(ss->resolved, "match");
    cJSON *view = telemetry_view(&e->r);
    struct th_mismatch why;
    cJSON *caps = cJSON_CreateObject();
    bool ok = !m || th_match(m, view, "telemetry", caps, &why);
    if (st->kind == TH_STEP_EXPECT_NO_TELEMETRY) {
        if (ok) {
            char w[300], rel[96], b[64];
            who(ss, w, sizeof w);
            bound_text(st, b, sizeof b);
            when_text(ss, e->r.time_us, rel, sizeof rel);
            char *txt = th_scn_json_short(view, SHOW_MAX);
            char *pretty = th_scn_json_pretty(view);
            set_resultf(
                ss, TH_VERDICT_FAIL, e->r.time_us, pretty,
                "expected no telemetry%s from %s during %s, but a message came %s: %s",
                m ? " matching the step's match" : "", w, b, rel, txt ? txt : "");
            free(txt);
            free(pretty);
        }
    } else if (ok) {
        if (ss->e.count == 0) {
            /* captures come from the first matching message */
            cJSON_Delete(ss->e.captures);
            ss->e.captures = caps;
            caps = NULL;
        }
        ss->e.count++;
        telemetry_counted(ss, e->r.time_us);
    } else {
        ss->e.nonmatching++;
        ss->e.have_miss = true;
        ss->e.miss = why;
    }
    cJSON_Delete(caps);
    cJSON_Delete(view);
}

/* expectRegistration: a `registration` record of the step's registration id (any case). */
static void eval_registration(struct th_scn_session *ss, const struct event *e)
{
    const struct th_journal_record *r = &e->r;
    const char *want = body_str(ss, "registrationId");
    const char *got = th_json_string(r->data, "registrationId", NULL);
    if (r->kind != TH_JOURNAL_REGISTRATION || !want || !got || strcasecmp(want, got))
        return;
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(ss->resolved, "match");
    cJSON *caps = cJSON_CreateObject();
    struct th_mismatch why;
    if (!m || th_match(m, r->data, "registration", caps, &why)) {
        cJSON_Delete(ss->e.captures);
        ss->e.captures = caps;
        set_result(ss, ss->cur, TH_VERDICT_PASS, r->time_us, NULL, NULL);
        return;
    }
    cJSON_Delete(caps);
    ss->e.nonmatching++;
    ss->e.have_miss = true;
    ss->e.miss = why;
}

static void eval_reported_now(struct th_scn_session *ss, int64_t t)
{
    const struct th_step *st = cur_step(ss);
    if (st->kind != TH_STEP_EXPECT_REPORTED)
        return;
    const struct ident *id = ident_find(ss, body_str(ss, "deviceId"), body_str(ss, "moduleId"));
    cJSON *doc = reported_doc(id);
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(ss->resolved, "match");
    cJSON *caps = cJSON_CreateObject();
    struct th_mismatch why;
    if (th_match(m, doc, "reported", caps, &why)) {
        cJSON_Delete(ss->e.captures);
        ss->e.captures = caps;
        caps = NULL;
        set_result(ss, ss->cur, TH_VERDICT_PASS, t, NULL, NULL);
    } else {
        ss->e.have_miss = true;
        ss->e.miss = why;
    }
    cJSON_Delete(caps);
    cJSON_Delete(doc);
}

/* Check the current step (anchored, pending) against one record after its mark. */
static void eval_event(struct th_scn_session *ss, const struct event *e)
{
    const struct th_step *st = cur_step(ss);
    const struct th_journal_record *r = &e->r;
    switch (st->kind) {
    case TH_STEP_WAIT_CONNECTED:
        if (is_ours(ss, e) && r->kind == TH_JOURNAL_CONNECTED)
            set_result(ss, ss->cur, TH_VERDICT_PASS, r->time_us, NULL, NULL);
        else if (is_ours(ss, e) && r->kind == TH_JOURNAL_REFUSED) {
            ss->e.refused++;
            snprintf(ss->e.refused_reason, sizeof ss->e.refused_reason, "%s",
                     r->as.refused.reason ? r->as.refused.reason : "?");
        }
        break;
    case TH_STEP_WAIT_DISCONNECTED:
        if (is_ours(ss, e) && r->kind == TH_JOURNAL_DISCONNECTED)
            set_result(ss, ss->cur, TH_VERDICT_PASS, r->time_us, NULL, NULL);
        break;
    case TH_STEP_EXPECT_REPORTED:
        if (is_ours(ss, e) && r->kind == TH_JOURNAL_REPORTED && r->as.reported.accepted) {
            ss->e.patches++;
            eval_reported_now(ss, r->time_us);
        }
        break;
    case TH_STEP_EXPECT_TWIN_GET:
        if (is_ours(ss, e) && r->kind == TH_JOURNAL_TWIN_GET)
            set_result(ss, ss->cur, TH_VERDICT_PASS, r->time_us, NULL, NULL);
        break;
    case TH_STEP_EXPECT_TELEMETRY:
    case TH_STEP_EXPECT_NO_TELEMETRY:
        if (is_ours(ss, e) && r->kind == TH_JOURNAL_TELEMETRY)
            eval_telemetry(ss, e);
        break;
    case TH_STEP_EXPECT_NO_REPORTED:
        if (is_ours(ss, e) && r->kind == TH_JOURNAL_REPORTED && r->as.reported.accepted) {
            const cJSON *m = cJSON_GetObjectItemCaseSensitive(ss->resolved, "match");
            const cJSON *patch = r->as.reported.patch;
            if (!m || th_match(m, patch, "patch", NULL, NULL)) {
                char w[300], rel[96];
                who(ss, w, sizeof w);
                when_text(ss, r->time_us, rel, sizeof rel);
                char *txt = th_scn_json_short(patch, SHOW_MAX * 4);
                char *mtxt = m ? th_scn_json_short(m, SHOW_MAX) : NULL;
                set_resultf(ss, TH_VERDICT_FAIL, r->time_us, NULL,
                            "expected no reported patch%s%s from %s, but one came %s: %s",
                            m ? " matching " : "", mtxt ? mtxt : "", w, rel, txt ? txt : "");
                free(mtxt);
                free(txt);
            }
        }
        break;
    case TH_STEP_EXPECT_C2D_DELIVERED:
        if (r->device_id && r->kind == TH_JOURNAL_C2D && body_str(ss, "deviceId") &&
            !strcmp(r->device_id, body_str(ss, "deviceId")) &&
            !strcmp(r->as.c2d.message_id ?: "", body_str(ss, "messageId") ?: "")) {
            if (r->as.c2d.delivered)
                set_result(ss, ss->cur, TH_VERDICT_PASS, r->time_us, NULL, NULL);
            else
                ss->e.queued = true;
        }
        break;
    case TH_STEP_EXPECT_REGISTRATION:
        eval_registration(ss, e);
        break;
    case TH_STEP_INVOKE_METHOD:
        if (ss->offline && is_ours(ss, e) && r->kind == TH_JOURNAL_METHOD &&
            !strcmp(r->as.method.method_name ?: "", body_str(ss, "methodName") ?: "")) {
            /* The answer the caller got; a body that is not JSON fails the step on it. */
            cJSON *out = th_journal_method_answer(r);
            th_scn_session_check_outcome(ss, out, r->time_us);
            cJSON_Delete(out);
        }
        break;
    default:
        break;
    }
}

/* The step's failure when its deadline passed (or the run moved on at `t`). */
static void finalize(struct th_scn_session *ss, int64_t t, bool cut_short)
{
    const struct th_step *st = cur_step(ss);
    char w[300], b[64], c[64], moved[128] = "";
    who(ss, w, sizeof w);
    bound_text(st, b, sizeof b);
    if (cut_short) {
        char rel[64];
        th_duration_human(t - ss->res[ss->cur].start_us, rel, sizeof rel);
        snprintf(moved, sizeof moved, " (the recording moved on after %s)", rel);
    }
    switch (st->kind) {
    case TH_STEP_WAIT_CONNECTED:
        if (ss->e.refused)
            set_resultf(ss, TH_VERDICT_FAIL, t, NULL,
                        "%s did not connect within %s%s; %ld connection attempt%s refused "
                        "(last: %s)",
                        w, b, moved, ss->e.refused, ss->e.refused == 1 ? " was" : "s were",
                        ss->e.refused_reason);
        else
            set_resultf(ss, TH_VERDICT_FAIL, t, NULL, "%s did not connect within %s%s", w, b,
                        moved);
        break;
    case TH_STEP_WAIT_DISCONNECTED:
        set_resultf(ss, TH_VERDICT_FAIL, t, NULL, "%s was still connected after %s%s", w, b, moved);
        break;
    case TH_STEP_EXPECT_REPORTED: {
        const struct ident *id = ident_find(ss, body_str(ss, "deviceId"), body_str(ss, "moduleId"));
        cJSON *doc = reported_doc(id);
        char *pretty = th_scn_json_pretty(doc);
        char *mtext = th_scn_json_pretty(cJSON_GetObjectItemCaseSensitive(ss->resolved, "match"));
        char *detail = NULL;
        if (asprintf(&detail, "expected (match):\n%s\nactual reported properties:\n%s\n",
                     mtext ? mtext : "?", pretty ? pretty : "?") < 0)
            detail = NULL;
        char patches[80];
        if (ss->e.patches)
            snprintf(patches, sizeof patches, "%ld reported patch%s during the wait", ss->e.patches,
                     ss->e.patches == 1 ? "" : "es");
        else
            snprintf(patches, sizeof patches, "no reported patch during the wait");
        set_resultf(ss, TH_VERDICT_FAIL, t, detail,
                    "reported properties of %s did not match within %s%s: %s (%s)", w, b, moved,
                    ss->e.have_miss ? ss->e.miss.message : "no match", patches);
        free(detail);
        free(pretty);
        free(mtext);
        cJSON_Delete(doc);
        break;
    }
    case TH_STEP_EXPECT_TWIN_GET:
        set_resultf(ss, TH_VERDICT_FAIL, t, NULL, "%s did not fetch its twin within %s%s", w, b,
                    moved);
        break;
    case TH_STEP_EXPECT_TELEMETRY:
        if (!cut_short && ss->e.count >= st->count_min &&
            (st->count_max < 0 || ss->e.count <= st->count_max)) {
            set_result(ss, ss->cur, TH_VERDICT_PASS, t, NULL, NULL);
        } else {
            const cJSON *m = cJSON_GetObjectItemCaseSensitive(ss->resolved, "match");
            char *mt = m ? th_scn_json_short(m, SHOW_MAX) : NULL;
            char other[1800] = "";
            if (ss->e.nonmatching)
                snprintf(other, sizeof other, "; %ld other message%s did not match, the last: %s",
                         ss->e.nonmatching, ss->e.nonmatching == 1 ? "" : "s", ss->e.miss.message);
            count_text(st, c, sizeof c);
            set_resultf(ss, TH_VERDICT_FAIL, t, NULL,
                        "expected %s telemetry message%s from %s%s%s within %s%s, got %ld%s", c,
                        st->count_min == 1 && st->count_max < 0 ? "" : "s", w,
                        mt ? " matching " : "", mt ? mt : "", b, moved, ss->e.count, other);
            free(mt);
        }
        break;
    case TH_STEP_EXPECT_NO_TELEMETRY:
    case TH_STEP_EXPECT_NO_REPORTED:
        if (cut_short)
            set_resultf(ss, TH_VERDICT_FAIL, t, NULL,
                        "the %s window of %s was not observed to its end%s", b,
                        th_step_kind_name(st->kind), moved);
        else
            set_result(ss, ss->cur, TH_VERDICT_PASS, t, NULL, NULL);
        break;
    case TH_STEP_EXPECT_C2D_DELIVERED:
        set_resultf(ss, TH_VERDICT_FAIL, t, NULL,
                    "message %s was not delivered to %s within %s%s%s", body_str(ss, "messageId"),
                    w, b, moved,
                    ss->e.queued ? " (it was queued: the device was not connected or not "
                                   "subscribed to C2D)"
                                 : "");
        break;
    case TH_STEP_EXPECT_REGISTRATION:
        set_resultf(ss, TH_VERDICT_FAIL, t, NULL, "no registration of %s%s%s within %s%s%s%s",
                    body_str(ss, "registrationId"),
                    cJSON_GetObjectItemCaseSensitive(ss->resolved, "match") ? " matching the step"
                                                                            : "",
                    "", b, moved, ss->e.have_miss ? "; the last one did not match: " : "",
                    ss->e.have_miss ? ss->e.miss.message : "");
        break;
    case TH_STEP_INVOKE_METHOD:
        set_resultf(ss, TH_VERDICT_FAIL, t, NULL,
                    "the recording holds no answer of %s to method %s", w,
                    body_str(ss, "methodName"));
        break;
    case TH_STEP_SLEEP:
        set_result(ss, ss->cur, TH_VERDICT_PASS, t, NULL, NULL);
        break;
    default:
        set_result(ss, ss->cur, TH_VERDICT_PASS, t, NULL, NULL);
        break;
    }
}

void th_scn_session_settle(struct th_scn_session *ss, int64_t t_us)
{
    if (ss->cur == NO_STEP || !ss->anchored || ss->res[ss->cur].verdict != TH_VERDICT_PENDING)
        return;
    int64_t dl = th_scn_session_deadline(ss);
    if (dl <= t_us)
        finalize(ss, dl, false);
}

/* The step's mark arrived: note "now" and decide what history already decides. */
static void anchor(struct th_scn_session *ss, size_t mark_index, const struct event *mark)
{
    const struct th_step *st = cur_step(ss);
    size_t i = ss->cur;
    ss->anchored = true;
    ss->anchor[i] = mark_index;
    ss->res[i].start_us = mark->r.time_us;
    const char *action = mark->r.as.mark.action;
    if (action && strcmp(action, th_step_kind_name(st->kind)) != 0) {
        set_resultf(ss, TH_VERDICT_FAIL, mark->r.time_us, NULL,
                    "the recording's step %d is a %s step, the scenario's is %s: the recording "
                    "comes from another version of the scenario",
                    st->index, action, th_step_kind_name(st->kind));
        return;
    }
    /* Where "since the previous step began" starts. */
    size_t prev = 0;
    if (i > 0 && ss->anchor[i - 1] != NO_STEP)
        prev = ss->anchor[i - 1];
    int64_t t = mark->r.time_us;
    const struct ident *id = ident_find(ss, body_str(ss, "deviceId"), body_str(ss, "moduleId"));
    switch (st->kind) {
    case TH_STEP_WAIT_CONNECTED:
        if (id && id->connected)
            set_result(ss, i, TH_VERDICT_PASS, t, NULL, NULL);
        break;
    case TH_STEP_WAIT_DISCONNECTED:
        if (!id || !id->connected) {
            set_result(ss, i, TH_VERDICT_PASS, t, NULL, NULL);
            break;
        }
        for (size_t k = prev; k < mark_index; k++)
            if (is_ours(ss, &ss->ev[k]) && ss->ev[k].r.kind == TH_JOURNAL_DISCONNECTED) {
                set_result(ss, i, TH_VERDICT_PASS, t, NULL, NULL);
                break;
            }
        break;
    case TH_STEP_EXPECT_REPORTED:
        eval_reported_now(ss, t);
        break;
    case TH_STEP_EXPECT_TWIN_GET:
        for (size_t k = prev; k < mark_index && ss->cur == i; k++)
            if (is_ours(ss, &ss->ev[k]) && ss->ev[k].r.kind == TH_JOURNAL_TWIN_GET)
                set_result(ss, i, TH_VERDICT_PASS, t, NULL, NULL);
        break;
    case TH_STEP_EXPECT_TELEMETRY:
        if (st->since >= 0 && ss->anchor[st->since] != NO_STEP) {
            for (size_t k = ss->anchor[st->since]; k < mark_index && ss->cur == i; k++)
                if (is_ours(ss, &ss->ev[k]) && ss->ev[k].r.kind == TH_JOURNAL_TELEMETRY)
                    eval_telemetry(ss, &ss->ev[k]);
        }
        if (ss->cur == i && st->count_max < 0 && ss->e.count >= st->count_min)
            set_result(ss, i, TH_VERDICT_PASS, t, NULL, NULL);
        break;
    case TH_STEP_EXPECT_C2D_DELIVERED:
        for (size_t k = 0; k < mark_index && ss->cur == i; k++)
            eval_event(ss, &ss->ev[k]);
        break;
    case TH_STEP_EXPECT_REGISTRATION:
        /* since the previous step began, like expectTwinGet */
        for (size_t k = prev; k < mark_index && ss->cur == i; k++)
            eval_registration(ss, &ss->ev[k]);
        break;
    case TH_STEP_INVOKE_METHOD:
        break; /* live: the runner's outcome; offline: the method record */
    case TH_STEP_EXPECT_NO_TELEMETRY:
    case TH_STEP_EXPECT_NO_REPORTED:
        /* Right after an action (a desired patch, a method call, ...; not a sleep), what the
         * identity sent since that step began counts too: the agent's answer to the action may
         * reach the hub before this step's mark does. After an expectation, a fault or a sleep,
         * only what comes after the mark. The rest is decided at the deadline. */
        if (i > 0 && th_step_kind_class(ss->s->steps[i - 1].kind) == TH_STEP_CLASS_ACTION &&
            ss->s->steps[i - 1].kind != TH_STEP_SLEEP)
            for (size_t k = prev; k < mark_index && ss->cur == i &&
                                  ss->res[i].verdict == TH_VERDICT_PENDING;
                 k++)
                eval_event(ss, &ss->ev[k]);
        break;
    case TH_STEP_SLEEP:
        break; /* decided at the deadline */
    default:
        if (ss->offline && th_step_kind_class(st->kind) != TH_STEP_CLASS_EXPECTATION) {
            if ((st->kind == TH_STEP_QUERY || st->kind == TH_STEP_CREATE_MODULES ||
                 st->kind == TH_STEP_CREATE_CONFIGURATION ||
                 st->kind == TH_STEP_UPDATE_CONFIGURATION) &&
                cJSON_GetObjectItemCaseSensitive(ss->resolved, "expect"))
                set_result(ss, i, TH_VERDICT_PASS, t,
                           "not checked offline: the recording does not hold its result", NULL);
            else
                set_result(ss, i, TH_VERDICT_PASS, t, NULL, NULL);
        }
        break;
    }
}

/*
 * The reported properties after a patch: merged into a copy that replaces them only when the
 * whole patch went in, so that a failed allocation leaves the last good state.
 */
static th_result apply_reported(struct ident *id, const cJSON *patch, int64_t version)
{
    cJSON *next = cJSON_Duplicate(id->reported, 1);
    th_result r = next ? th_json_merge_patch(next, patch) : TH_ERR_NOMEM;
    if (r != TH_OK) {
        cJSON_Delete(next);
        return r;
    }
    cJSON_Delete(id->reported);
    id->reported = next;
    id->version = version;
    return TH_OK;
}

/* Update the identities' state with one record; TH_ERR_NOMEM when it could not be applied. */
static th_result apply_world(struct th_scn_session *ss, const struct th_journal_record *r)
{
    struct ident *id, *tmp;
    if (!r->device_id)
        return TH_OK;
    switch (r->kind) {
    case TH_JOURNAL_CONNECTED:
    case TH_JOURNAL_DISCONNECTED:
        if (!(id = ident_get(ss, r->device_id, r->module_id)))
            return TH_ERR_NOMEM;
        id->connected = r->kind == TH_JOURNAL_CONNECTED;
        break;
    case TH_JOURNAL_REPORTED:
        if (!(id = ident_get(ss, r->device_id, r->module_id)))
            return TH_ERR_NOMEM;
        if (r->as.reported.accepted && r->as.reported.patch && r->as.reported.version > id->version)
            return apply_reported(id, r->as.reported.patch, r->as.reported.version);
        break;
    case TH_JOURNAL_DEVICE_CREATED:
    case TH_JOURNAL_MODULE_CREATED:
        if (!ident_get(ss, r->device_id, r->module_id))
            return TH_ERR_NOMEM;
        break;
    case TH_JOURNAL_DEVICE_DELETED:
    case TH_JOURNAL_MODULE_DELETED:
        HASH_ITER(hh, ss->ids, id, tmp)
        {
            if (!strcmp(id->device_id, r->device_id) &&
                (!r->module_id || (id->module_id && !strcmp(id->module_id, r->module_id))))
                ident_remove(ss, id);
        }
        break;
    default:
        break;
    }
    return TH_OK;
}

/* Whether a mark record belongs to this scenario; *index gets its step index (1-based). */
static bool our_mark(const struct th_scn_session *ss, const struct th_journal_record *r,
                     long *index)
{
    if (r->kind != TH_JOURNAL_MARK || !r->as.mark.scenario ||
        strcmp(r->as.mark.scenario, ss->s->name) != 0 || !r->as.mark.has_index)
        return false;
    *index = (long)r->as.mark.index;
    return true;
}

th_result th_scn_session_feed(struct th_scn_session *ss, cJSON *record, struct th_error *err)
{
    struct event e = {.record = record};
    th_result r = th_journal_parse(record, &e.r, err);
    if (r != TH_OK) {
        cJSON_Delete(record);
        return r;
    }
    if (ss->nev == ss->cap) {
        size_t cap = ss->cap ? ss->cap * 2 : 256;
        struct event *n = realloc(ss->ev, cap * sizeof *n);
        if (!n) {
            cJSON_Delete(record);
            return th_error_set(err, TH_ERR_NOMEM, 0, "out of memory");
        }
        ss->ev = n;
        ss->cap = cap;
    }
    size_t index = ss->nev;
    ss->ev[ss->nev++] = e;
    if (!ss->first_time)
        ss->first_time = e.r.time_us;
    if (e.r.time_us > ss->last_time)
        ss->last_time = e.r.time_us;

    /* A record stamped after the deadline proves that every earlier one is in. */
    th_scn_session_settle(ss, e.r.time_us - 1);

    /* seq starts again at 1 when the hub restarts: every connection dropped. */
    if (ss->last_seq >= 0 && e.r.seq <= ss->last_seq)
        th_scn_session_hub_restarted(ss);
    ss->last_seq = e.r.seq;

    if (apply_world(ss, &e.r) != TH_OK)
        return th_error_set(err, TH_ERR_NOMEM, 0,
                            "out of memory applying record %lld to the identities' state",
                            (long long)e.r.seq);

    long mark_index;
    if (our_mark(ss, &e.r, &mark_index)) {
        if (ss->cur != NO_STEP && !ss->anchored && mark_index == (long)ss->cur + 1) {
            anchor(ss, index, &e);
            return TH_OK;
        }
        /* Offline, a later step's mark (or the scenario's end) ends the current step. */
        if (ss->offline && ss->cur != NO_STEP &&
            (mark_index > (long)ss->cur + 1 || mark_index == 0)) {
            if (ss->anchored) {
                finalize(ss, e.r.time_us, true);
            } else if (mark_index > (long)ss->cur + 1) {
                set_resultf(ss, TH_VERDICT_FAIL, e.r.time_us, NULL,
                            "the recording has no mark for this step (the next mark is step %ld)",
                            mark_index);
            }
            return TH_OK;
        }
    }
    if (ss->cur != NO_STEP && ss->anchored && ss->res[ss->cur].verdict == TH_VERDICT_PENDING)
        eval_event(ss, &e);
    return TH_OK;
}

void th_scn_session_finish(struct th_scn_session *ss)
{
    th_scn_session_settle(ss, INT64_MAX);
    if (ss->cur != NO_STEP && !ss->anchored && !ss->failed &&
        ss->res[ss->cur].verdict == TH_VERDICT_PENDING)
        set_resultf(ss, TH_VERDICT_FAIL, ss->last_time, NULL,
                    "the recording has no mark for this step: the run ended before it");
    th_scn_session_skip_rest(ss);
}

size_t th_scn_session_current(const struct th_scn_session *ss)
{
    return ss->cur;
}

/* ---- outcomes of actions ---- */

void th_scn_session_check_outcome(struct th_scn_session *ss, const cJSON *outcome, int64_t end_us)
{
    const struct th_step *st = cur_step(ss);
    if (!st)
        return;
    const cJSON *expect = cJSON_GetObjectItemCaseSensitive(ss->resolved, "expect");
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(outcome, "error");
    bool failed = err && !cJSON_IsNull(err);
    char w[300];
    who(ss, w, sizeof w);
    const char *errtext = cJSON_IsString(err) ? err->valuestring : "refused";
    int code = (int)th_json_number(outcome, "errorCode", 0);
    if (st->kind == TH_STEP_INVOKE_METHOD) {
        bool want_error = expect && (cJSON_GetObjectItemCaseSensitive(expect, "error") ||
                                     cJSON_GetObjectItemCaseSensitive(expect, "errorCode"));
        if (!failed && cJSON_GetObjectItemCaseSensitive(outcome, "rawPayloadBase64")) {
            /* IoT Hub copies such a body into its answer verbatim: no service SDK can read it. */
            set_resultf(ss, TH_VERDICT_FAIL, end_us, NULL,
                        "method %s on %s: the device answered status %g with a body that is not "
                        "JSON (%s); IoT Hub passes it on as it is and the service SDKs fail to "
                        "parse the answer: answer with JSON",
                        body_str(ss, "methodName"), w, th_json_number(outcome, "status", 0),
                        th_json_string(outcome, "payloadError", "not JSON"));
            return;
        }
        if (want_error && !failed) {
            char *p =
                th_scn_json_short(cJSON_GetObjectItemCaseSensitive(outcome, "payload"), SHOW_MAX);
            set_resultf(ss, TH_VERDICT_FAIL, end_us, NULL,
                        "expected method %s on %s to fail, but it answered status %g with "
                        "payload %s",
                        body_str(ss, "methodName"), w, th_json_number(outcome, "status", 0),
                        p ? p : "?");
            free(p);
            return;
        }
        if (!want_error && failed) {
            set_resultf(ss, TH_VERDICT_FAIL, end_us, NULL,
                        "method %s on %s failed: %s (errorCode %d)", body_str(ss, "methodName"), w,
                        errtext, code);
            return;
        }
    } else if (failed) {
        set_resultf(ss, TH_VERDICT_FAIL, end_us, NULL,
                    "the hub refused %s: %s (status %g, errorCode %d)", th_step_kind_name(st->kind),
                    errtext, th_json_number(outcome, "status", 0), code);
        return;
    }
    if (expect && (st->kind == TH_STEP_INVOKE_METHOD || st->kind == TH_STEP_QUERY ||
                   st->kind == TH_STEP_CREATE_MODULES || st->kind == TH_STEP_CREATE_CONFIGURATION ||
                   st->kind == TH_STEP_UPDATE_CONFIGURATION)) {
        struct th_mismatch why;
        cJSON *caps = cJSON_CreateObject();
        const char *root = st->kind == TH_STEP_INVOKE_METHOD ? "answer" : "result";
        if (!th_match(expect, outcome, root, caps, &why)) {
            char *pretty = th_scn_json_pretty(outcome);
            set_resultf(ss, TH_VERDICT_FAIL, end_us, pretty, "%s", why.message);
            free(pretty);
            cJSON_Delete(caps);
            return;
        }
        cJSON_Delete(ss->e.captures);
        ss->e.captures = caps;
    }
    set_result(ss, ss->cur, TH_VERDICT_PASS, end_us, NULL, NULL);
}
