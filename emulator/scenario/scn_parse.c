/*
 * scn_parse.c - reading and validating scenario files (docs/scenarios.md,
 * docs/scenario.schema.json). Every problem is reported with the file, the
 * JSON path of the faulty member and what is expected, and validation goes
 * on after the first problem so that an author sees them all at once.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "json.h"
#include "registry.h"
#include "scenario.h"
#include "th_file.h"

/* ---- the format, as data ---- */

enum ftype {
    F_STRING,     /* non-empty string */
    F_OBJECT,     /* any object */
    F_ANY,        /* any JSON */
    F_MATCHER,    /* a matcher */
    F_DURATION,   /* ISO 8601 duration */
    F_INT,        /* integer in [min, max] */
    F_STRINGS,    /* array of non-empty strings */
    F_STRING_MAP, /* object of strings (or null values) */
    F_EXPECT,     /* object of matchers with the keys in `keys` */
    F_COUNT,      /* integer >= 0 or {"min","max"} */
    F_STEP_REF,   /* the name of an earlier step */
    F_ENUM,       /* one of the strings in `keys` */
};

struct field {
    const char *name;
    enum ftype type;
    bool required;
    long min, max;
    const char *keys; /* F_EXPECT / F_ENUM: space-separated */
    const char *what; /* for "required" messages */
};

enum id_rule { ID_NONE, ID_DEVICE, ID_DEVICE_OR_MODULE };

struct kind_spec {
    const char *name;
    enum th_step_class cls;
    enum id_rule ids;
    const char *bound; /* "within", "during", "for" or NULL */
    struct field fields[10];
};

#define END                                                                                        \
    {                                                                                              \
        NULL, 0, false, 0, 0, NULL, NULL                                                           \
    }

/* What an expect over a configuration (createConfiguration, updateConfiguration) may name. */
#define CONFIG_EXPECT                                                                              \
    "id schemaVersion labels content targetCondition createdTimeUtc lastUpdatedTimeUtc priority "  \
    "systemMetrics metrics etag"

static const struct kind_spec kinds[TH_STEP_KIND_COUNT] = {
    [TH_STEP_PATCH_DESIRED] = {"patchDesired",
                               TH_STEP_CLASS_ACTION,
                               ID_DEVICE_OR_MODULE,
                               NULL,
                               {{"patch", F_OBJECT, true, 0, 0, NULL,
                                 "an object: the desired-properties patch"},
                                END}},
    [TH_STEP_REPLACE_DESIRED] = {"replaceDesired",
                                 TH_STEP_CLASS_ACTION,
                                 ID_DEVICE_OR_MODULE,
                                 NULL,
                                 {{"desired", F_OBJECT, true, 0, 0, NULL,
                                   "an object: the new desired properties"},
                                  END}},
    [TH_STEP_UPDATE_TAGS] = {"updateTags",
                             TH_STEP_CLASS_ACTION,
                             ID_DEVICE_OR_MODULE,
                             NULL,
                             {{"tags", F_OBJECT, true, 0, 0, NULL, "an object: the tags patch"},
                              END}},
    [TH_STEP_INVOKE_METHOD] = {"invokeMethod",
                               TH_STEP_CLASS_ACTION,
                               ID_DEVICE_OR_MODULE,
                               NULL,
                               {{"methodName", F_STRING, true, 0, 0, NULL, "the method's name"},
                                {"payload", F_ANY, false, 0, 0, NULL, NULL},
                                {"responseTimeoutInSeconds", F_INT, false, 5, 300, NULL, NULL},
                                {"connectTimeoutInSeconds", F_INT, false, 0, 300, NULL, NULL},
                                {"expect", F_EXPECT, false, 0, 0, "status payload error errorCode",
                                 NULL},
                                END}},
    [TH_STEP_SEND_C2D] = {"sendC2D",
                          TH_STEP_CLASS_ACTION,
                          ID_DEVICE,
                          NULL,
                          {{"body", F_ANY, false, 0, 0, NULL, NULL},
                           {"bodyJson", F_ANY, false, 0, 0, NULL, NULL},
                           {"properties", F_STRING_MAP, false, 0, 0, NULL, NULL},
                           {"messageId", F_STRING, false, 0, 0, NULL, NULL},
                           {"correlationId", F_STRING, false, 0, 0, NULL, NULL},
                           {"contentType", F_STRING, false, 0, 0, NULL, NULL},
                           {"contentEncoding", F_STRING, false, 0, 0, NULL, NULL},
                           END}},
    [TH_STEP_QUERY] = {"query",
                       TH_STEP_CLASS_ACTION,
                       ID_NONE,
                       NULL,
                       {{"query", F_STRING, true, 0, 0, NULL,
                         "an IoT Hub query such as \"SELECT * FROM devices\""},
                        {"expect", F_EXPECT, false, 0, 0, "items count", NULL},
                        END}},
    [TH_STEP_CREATE_MODULES] = {"createModules",
                                TH_STEP_CLASS_ACTION,
                                ID_NONE,
                                NULL,
                                {{"moduleId", F_STRING, true, 0, 0, NULL, "the module id"},
                                 {"desired", F_OBJECT, false, 0, 0, NULL, NULL},
                                 {"desiredFile", F_STRING, false, 0, 0, NULL, NULL},
                                 {"tags", F_OBJECT, false, 0, 0, NULL, NULL},
                                 {"deviceIds", F_STRINGS, false, 0, 0, NULL, NULL},
                                 {"expect", F_EXPECT, false, 0, 0,
                                  "moduleId created skipped createdDevices skippedDevices", NULL},
                                 END}},
    [TH_STEP_CREATE_ENROLLMENT] = {"createEnrollment",
                                   TH_STEP_CLASS_ACTION,
                                   ID_NONE,
                                   NULL,
                                   {{"registrationId", F_STRING, true, 0, 0, NULL,
                                     "the registration id the device registers with"},
                                    {"deviceId", F_STRING, false, 0, 0, NULL, NULL},
                                    {"primaryKey", F_STRING, false, 0, 0, NULL, NULL},
                                    {"secondaryKey", F_STRING, false, 0, 0, NULL, NULL},
                                    {"provisioningStatus", F_ENUM, false, 0, 0, "enabled disabled",
                                     "\"enabled\" or \"disabled\""},
                                    {"initialTwin", F_OBJECT, false, 0, 0, NULL, NULL},
                                    {"reprovisionPolicy", F_OBJECT, false, 0, 0, NULL, NULL},
                                    {"capabilities", F_OBJECT, false, 0, 0, NULL, NULL},
                                    END}},
    [TH_STEP_CREATE_ENROLLMENT_GROUP] = {"createEnrollmentGroup",
                                         TH_STEP_CLASS_ACTION,
                                         ID_NONE,
                                         NULL,
                                         {{"enrollmentGroupId", F_STRING, true, 0, 0, NULL,
                                           "the enrollment group's id"},
                                          {"primaryKey", F_STRING, false, 0, 0, NULL, NULL},
                                          {"secondaryKey", F_STRING, false, 0, 0, NULL, NULL},
                                          {"provisioningStatus", F_ENUM, false, 0, 0,
                                           "enabled disabled", "\"enabled\" or \"disabled\""},
                                          {"initialTwin", F_OBJECT, false, 0, 0, NULL, NULL},
                                          {"reprovisionPolicy", F_OBJECT, false, 0, 0, NULL, NULL},
                                          {"capabilities", F_OBJECT, false, 0, 0, NULL, NULL},
                                          END}},
    [TH_STEP_CREATE_CONFIGURATION] = {"createConfiguration",
                                      TH_STEP_CLASS_ACTION,
                                      ID_NONE,
                                      NULL,
                                      {{"id", F_STRING, true, 0, 0, NULL, "the configuration id"},
                                       {"configuration", F_OBJECT, true, 0, 0, NULL,
                                        "an object: the configuration (content, targetCondition, "
                                        "priority, labels, metrics)"},
                                       {"expect", F_EXPECT, false, 0, 0, CONFIG_EXPECT, NULL},
                                       END}},
    [TH_STEP_UPDATE_CONFIGURATION] = {"updateConfiguration",
                                      TH_STEP_CLASS_ACTION,
                                      ID_NONE,
                                      NULL,
                                      {{"id", F_STRING, true, 0, 0, NULL, "the configuration id"},
                                       {"configuration", F_OBJECT, true, 0, 0, NULL,
                                        "an object: the members to change (targetCondition, "
                                        "priority, labels, metrics)"},
                                       {"expect", F_EXPECT, false, 0, 0, CONFIG_EXPECT, NULL},
                                       END}},
    [TH_STEP_DELETE_CONFIGURATION] = {"deleteConfiguration",
                                      TH_STEP_CLASS_ACTION,
                                      ID_NONE,
                                      NULL,
                                      {{"id", F_STRING, true, 0, 0, NULL, "the configuration id"},
                                       END}},
    [TH_STEP_SLEEP] = {"sleep",
                       TH_STEP_CLASS_ACTION,
                       ID_NONE,
                       "for",
                       {{"for", F_DURATION, true, 0, 0, NULL,
                         "an ISO 8601 duration such as \"PT2S\""},
                        END}},
    [TH_STEP_WAIT_CONNECTED] = {"waitConnected",
                                TH_STEP_CLASS_EXPECTATION,
                                ID_DEVICE_OR_MODULE,
                                "within",
                                {{"within", F_DURATION, false, 0, 0, NULL, NULL}, END}},
    [TH_STEP_WAIT_DISCONNECTED] = {"waitDisconnected",
                                   TH_STEP_CLASS_EXPECTATION,
                                   ID_DEVICE_OR_MODULE,
                                   "within",
                                   {{"within", F_DURATION, false, 0, 0, NULL, NULL}, END}},
    [TH_STEP_EXPECT_REPORTED] = {"expectReported",
                                 TH_STEP_CLASS_EXPECTATION,
                                 ID_DEVICE_OR_MODULE,
                                 "within",
                                 {{"match", F_MATCHER, true, 0, 0, NULL,
                                   "a matcher over the reported properties"},
                                  {"within", F_DURATION, false, 0, 0, NULL, NULL},
                                  END}},
    [TH_STEP_EXPECT_TWIN_GET] = {"expectTwinGet",
                                 TH_STEP_CLASS_EXPECTATION,
                                 ID_DEVICE_OR_MODULE,
                                 "within",
                                 {{"within", F_DURATION, false, 0, 0, NULL, NULL}, END}},
    [TH_STEP_EXPECT_TELEMETRY] = {"expectTelemetry",
                                  TH_STEP_CLASS_EXPECTATION,
                                  ID_DEVICE_OR_MODULE,
                                  "within",
                                  {{"match", F_MATCHER, false, 0, 0, NULL, NULL},
                                   {"count", F_COUNT, false, 0, 0, NULL, NULL},
                                   {"within", F_DURATION, false, 0, 0, NULL, NULL},
                                   {"since", F_STEP_REF, false, 0, 0, NULL, NULL},
                                   END}},
    [TH_STEP_EXPECT_NO_TELEMETRY] = {"expectNoTelemetry",
                                     TH_STEP_CLASS_EXPECTATION,
                                     ID_DEVICE_OR_MODULE,
                                     "during",
                                     {{"match", F_MATCHER, false, 0, 0, NULL, NULL},
                                      {"during", F_DURATION, false, 0, 0, NULL, NULL},
                                      END}},
    [TH_STEP_EXPECT_NO_REPORTED] = {"expectNoReported",
                                    TH_STEP_CLASS_EXPECTATION,
                                    ID_DEVICE_OR_MODULE,
                                    "during",
                                    {{"match", F_MATCHER, false, 0, 0, NULL, NULL},
                                     {"during", F_DURATION, false, 0, 0, NULL, NULL},
                                     END}},
    [TH_STEP_EXPECT_C2D_DELIVERED] = {"expectC2DDelivered",
                                      TH_STEP_CLASS_EXPECTATION,
                                      ID_DEVICE,
                                      "within",
                                      {{"messageId", F_STRING, true, 0, 0, NULL,
                                        "the messageId given to sendC2D"},
                                       {"within", F_DURATION, false, 0, 0, NULL, NULL},
                                       END}},
    [TH_STEP_EXPECT_REGISTRATION] = {"expectRegistration",
                                     TH_STEP_CLASS_EXPECTATION,
                                     ID_NONE,
                                     "within",
                                     {{"registrationId", F_STRING, true, 0, 0, NULL,
                                       "the registration id"},
                                      {"match", F_MATCHER, false, 0, 0, NULL, NULL},
                                      {"within", F_DURATION, false, 0, 0, NULL, NULL},
                                      END}},
    [TH_STEP_DISCONNECT] = {"disconnect", TH_STEP_CLASS_FAULT, ID_DEVICE_OR_MODULE, NULL, {END}},
    [TH_STEP_EXPIRE_TOKEN] = {"expireToken", TH_STEP_CLASS_FAULT, ID_DEVICE_OR_MODULE, NULL, {END}},
    [TH_STEP_INJECT_ERROR] = {"injectError",
                              TH_STEP_CLASS_FAULT,
                              ID_DEVICE_OR_MODULE,
                              NULL,
                              {{"operation", F_ENUM, true, 0, 0, "twinGet twinPatch",
                                "\"twinGet\" or \"twinPatch\""},
                               {"status", F_INT, false, 400, 599, NULL, NULL},
                               {"count", F_INT, false, 0, 1000000, NULL, NULL},
                               END}},
    [TH_STEP_RESTART_HUB] = {"restartHub", TH_STEP_CLASS_FAULT, ID_NONE, NULL, {END}},
};

const char *th_step_kind_name(enum th_step_kind k)
{
    return (unsigned)k < TH_STEP_KIND_COUNT ? kinds[k].name : "?";
}

enum th_step_class th_step_kind_class(enum th_step_kind k)
{
    return (unsigned)k < TH_STEP_KIND_COUNT ? kinds[k].cls : TH_STEP_CLASS_ACTION;
}

static const char *const top_members[] = {"$schema",  "name",         "description",
                                          "registry", "registryFile", "agent",
                                          "defaults", "variables",    "steps"};

/* ---- the validator's state ---- */

struct v {
    const char *file;
    struct th_scn_diag *diag;
    struct th_scenario *s;
    const struct th_scn_parse_opts *opts; /* how referenced files are read; may be NULL */
    cJSON *known;   /* names usable in ${...} so far: scenario variables and captures */
    cJSON *pending; /* captures of the step being validated (usable from the next step) */
    char path[1024];
    bool ok;
};

static void err(struct v *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void err(struct v *v, const char *fmt, ...)
{
    char msg[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    v->ok = false;
    th_scn_diag_add(v->diag, v->file, v->path, "%s", msg);
}

static size_t push(struct v *v, const char *key)
{
    size_t old = strlen(v->path);
    snprintf(v->path + old, sizeof v->path - old, "%s%s", old ? "." : "", key);
    return old;
}

static size_t push_i(struct v *v, int i)
{
    size_t old = strlen(v->path);
    snprintf(v->path + old, sizeof v->path - old, "[%d]", i);
    return old;
}

static void pop(struct v *v, size_t old)
{
    v->path[old] = '\0';
}

/* Edit distance, for "did you mean" hints (short ASCII names only). */
static int distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 40 || lb > 40)
        return 99;
    int d[41][41];
    for (size_t i = 0; i <= la; i++)
        d[i][0] = (int)i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = (int)j;
    for (size_t i = 1; i <= la; i++)
        for (size_t j = 1; j <= lb; j++) {
            int cost = (a[i - 1] | 32) == (b[j - 1] | 32) ? 0 : 1;
            int best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best)
                best = d[i][j - 1] + 1;
            if (d[i - 1][j - 1] + cost < best)
                best = d[i - 1][j - 1] + cost;
            d[i][j] = best;
        }
    return d[la][lb];
}

/* The closest of `names` (n entries) to `word`, or NULL when none is close. */
static const char *closest(const char *word, const char *const *names, size_t n)
{
    const char *best = NULL;
    int bd = 4;
    for (size_t i = 0; i < n; i++) {
        if (!names[i])
            continue;
        int d = distance(word, names[i]);
        if (d < bd) {
            bd = d;
            best = names[i];
        }
    }
    return best;
}

/* ---- variable references ---- */

struct ref_ctx {
    struct v *v;
    bool allow_captures;
};

static void check_ref(const char *name, void *arg)
{
    struct ref_ctx *r = arg;
    if (th_vars_is_run_var(name))
        return;
    if (cJSON_GetObjectItemCaseSensitive(r->v->known, name))
        return;
    err(r->v,
        "unknown variable ${%s}: define it in \"variables\", capture it in an earlier step, or "
        "use a run variable (hub.name, hub.caFile, hub.mqttPort, hub.mqttsPort, hub.idScope, "
        "device.<id>.connectionString, device.<id>.primaryKey, "
        "module.<id>.<mid>.connectionString); write $${ for a literal ${",
        name);
}

/* Check every ${...} in the string values under `j` (at v->path). */
static void check_refs(struct v *v, const cJSON *j)
{
    if (cJSON_IsString(j)) {
        struct ref_ctx r = {v, true};
        size_t bad;
        if (!th_vars_scan(j->valuestring, check_ref, &r, &bad))
            err(v,
                "\"${\" at character %zu has no closing \"}\" or an empty name; write $${ "
                "for a literal ${",
                bad + 1);
        return;
    }
    if (cJSON_IsObject(j)) {
        const cJSON *c;
        cJSON_ArrayForEach(c, j)
        {
            size_t old = push(v, c->string);
            check_refs(v, c);
            pop(v, old);
        }
    } else if (cJSON_IsArray(j)) {
        int i = 0;
        const cJSON *c;
        cJSON_ArrayForEach(c, j)
        {
            size_t old = push_i(v, i++);
            check_refs(v, c);
            pop(v, old);
        }
    }
}

/* Put `name` in the set of names `set` (pending captures, known variables). */
static void note_name(struct v *v, cJSON *set, const char *name)
{
    if (!cJSON_GetObjectItemCaseSensitive(set, name) && !cJSON_AddTrueToObject(set, name))
        err(v, "out of memory");
}

static void on_capture(const char *name, void *arg)
{
    struct v *v = arg;
    note_name(v, v->pending, name);
}

/* ---- files next to the scenario ---- */

/* `rel` against the scenario's directory; the caller frees. */
static char *relative_path(const struct th_scenario *s, const char *rel)
{
    char *out = NULL;
    if (rel[0] == '/' || !s->dir[0] || !strcmp(s->dir, "."))
        out = strdup(rel);
    else if (asprintf(&out, "%s/%s", s->dir, rel) < 0)
        out = NULL;
    return out;
}

/* A file the scenario names, through the caller's reader when it gave one. */
static char *read_ref(const struct v *v, const char *path, size_t *len_out)
{
    if (v->opts && v->opts->read_file)
        return v->opts->read_file(path, TH_SCN_MAX_FILE_BYTES, len_out, v->opts->arg);
    return th_file_read(path, TH_SCN_MAX_FILE_BYTES, len_out);
}

/* Parse JSON text; on failure a message with line and column goes to `msg`. */
static cJSON *parse_text(const char *text, size_t len, char *msg, size_t size)
{
    struct th_error e = {0};
    cJSON *out = NULL;
    if (th_json_parse(text, len, TH_SCN_MAX_FILE_BYTES, TH_SCN_MAX_DEPTH, &out, &e) == TH_OK) {
        /* Its values go to the hub as JSON text, which would cut the string at the NUL. */
        if (th_json_refuse_nul(out, "the scenario", &e) == TH_OK)
            return out;
        snprintf(msg, size, "%s", e.message);
        cJSON_Delete(out);
        return NULL;
    }
    if (e.position > 0 && e.position - 1 <= len) {
        size_t byte = e.position - 1, line = 1, col = 1;
        for (size_t i = 0; i < byte; i++) {
            if (text[i] == '\n') {
                line++;
                col = 1;
            } else {
                col++;
            }
        }
        const char *why = strstr(e.message, "extra data") ? "text after the JSON document"
                          : strstr(e.message, "control")  ? "a control character"
                                                          : "not valid JSON";
        snprintf(msg, size, "line %zu, column %zu: %s", line, col, why);
    } else {
        snprintf(msg, size, "%s", e.message);
    }
    return NULL;
}

/* ---- fields ---- */

/* An integer a double holds exactly (|v| <= 2^53). The range goes first: converting a double
 * outside long long's range is undefined behaviour (found by fuzz_scenario with 1e30). */
static bool is_integer(const cJSON *j)
{
    return cJSON_IsNumber(j) && j->valuedouble >= -9007199254740992.0 &&
           j->valuedouble <= 9007199254740992.0 &&
           (double)(long long)j->valuedouble == j->valuedouble;
}

static void check_field(struct v *v, const struct field *f, const cJSON *j, size_t step_index)
{
    switch (f->type) {
    case F_STRING:
        if (!cJSON_IsString(j) || !j->valuestring[0])
            err(v, "expected a non-empty string");
        break;
    case F_OBJECT:
        if (!cJSON_IsObject(j))
            err(v, "expected an object");
        break;
    case F_ANY:
        break;
    case F_MATCHER:
        if (!th_matcher_validate(j, v->file, v->path, v->diag, on_capture, v))
            v->ok = false;
        break;
    case F_DURATION: {
        int64_t us;
        if (!cJSON_IsString(j) || !th_duration_parse(j->valuestring, &us))
            err(v, "expected an ISO 8601 duration such as \"PT10S\", \"PT0.5S\" or \"PT2M\"");
        break;
    }
    case F_INT:
        if (!is_integer(j) || j->valuedouble < (double)f->min || j->valuedouble > (double)f->max)
            err(v, "expected an integer from %ld to %ld", f->min, f->max);
        break;
    case F_STRINGS:
        if (!cJSON_IsArray(j)) {
            err(v, "expected an array of strings");
        } else {
            int i = 0;
            const cJSON *c;
            cJSON_ArrayForEach(c, j)
            {
                size_t old = push_i(v, i++);
                if (!cJSON_IsString(c) || !c->valuestring[0])
                    err(v, "expected a non-empty string");
                pop(v, old);
            }
        }
        break;
    case F_STRING_MAP:
        if (!cJSON_IsObject(j)) {
            err(v, "expected an object of string values");
        } else {
            const cJSON *c;
            cJSON_ArrayForEach(c, j)
            {
                size_t old = push(v, c->string);
                if (!cJSON_IsString(c) && !cJSON_IsNull(c))
                    err(v, "expected a string (or null for a property without a value)");
                pop(v, old);
            }
        }
        break;
    case F_EXPECT:
        if (!cJSON_IsObject(j)) {
            err(v, "expected an object with some of: %s", f->keys);
        } else {
            const cJSON *c;
            cJSON_ArrayForEach(c, j)
            {
                size_t old = push(v, c->string);
                char keys[200];
                snprintf(keys, sizeof keys, " %s ", f->keys);
                char word[140];
                snprintf(word, sizeof word, " %s ", c->string);
                if (!strstr(keys, word))
                    err(v, "unknown member; expect takes %s", f->keys);
                else if (!th_matcher_validate(c, v->file, v->path, v->diag, on_capture, v))
                    v->ok = false;
                pop(v, old);
            }
            bool ok_part = cJSON_GetObjectItemCaseSensitive(j, "status") ||
                           cJSON_GetObjectItemCaseSensitive(j, "payload");
            bool err_part = cJSON_GetObjectItemCaseSensitive(j, "error") ||
                            cJSON_GetObjectItemCaseSensitive(j, "errorCode");
            if (ok_part && err_part)
                err(v, "expect either an answer (status, payload) or a failure (error, "
                       "errorCode), not both");
        }
        break;
    case F_COUNT:
        if (is_integer(j)) {
            if (j->valuedouble < 0)
                err(v, "expected a count >= 0");
        } else if (cJSON_IsObject(j)) {
            const cJSON *c;
            cJSON_ArrayForEach(c, j)
            {
                size_t old = push(v, c->string);
                if (strcmp(c->string, "min") && strcmp(c->string, "max"))
                    err(v, "unknown member; count takes \"min\" and \"max\"");
                else if (!is_integer(c) || c->valuedouble < 0)
                    err(v, "expected an integer >= 0");
                pop(v, old);
            }
            const cJSON *mn = cJSON_GetObjectItemCaseSensitive(j, "min");
            const cJSON *mx = cJSON_GetObjectItemCaseSensitive(j, "max");
            if (is_integer(mn) && is_integer(mx) && mn->valuedouble > mx->valuedouble)
                err(v, "min is larger than max");
        } else {
            err(v, "expected a number of messages or {\"min\": n, \"max\": m}");
        }
        break;
    case F_STEP_REF: {
        if (!cJSON_IsString(j)) {
            err(v, "expected the name of an earlier step");
            break;
        }
        int found = -1, n = 0;
        for (size_t i = 0; i < v->s->nsteps; i++) {
            const char *nm = v->s->steps[i].name;
            if (nm && !strcmp(nm, j->valuestring)) {
                found = (int)i;
                n++;
            }
        }
        if (n == 0 || found >= (int)step_index)
            err(v, "no earlier step is named \"%s\"", j->valuestring);
        else if (n > 1)
            err(v, "several steps are named \"%s\"; give them different names", j->valuestring);
        else
            v->s->steps[step_index].since = found;
        break;
    }
    case F_ENUM: {
        char keys[200], word[200];
        snprintf(keys, sizeof keys, " %s ", f->keys);
        snprintf(word, sizeof word, " %s ", cJSON_IsString(j) ? j->valuestring : "\x01");
        if (!cJSON_IsString(j) || !strstr(keys, word))
            err(v, "expected %s", f->what ? f->what : f->keys);
        break;
    }
    }
}

/* ---- steps ---- */

static void field_list(const struct kind_spec *k, char *buf, size_t size)
{
    buf[0] = '\0';
    size_t n = 0;
    if (k->ids == ID_DEVICE || k->ids == ID_DEVICE_OR_MODULE)
        n += (size_t)snprintf(buf + n, size - n, "deviceId");
    if (k->ids == ID_DEVICE_OR_MODULE)
        n += (size_t)snprintf(buf + n, size - n, ", moduleId");
    for (const struct field *f = k->fields; f->name && n < size; f++)
        n += (size_t)snprintf(buf + n, size - n, "%s%s", n ? ", " : "", f->name);
    if (!buf[0])
        snprintf(buf, size, "nothing");
}

static void check_step_body(struct v *v, struct th_step *st, size_t si)
{
    const struct kind_spec *k = &kinds[st->kind];
    const cJSON *body = st->body;
    /* Unknown members first, with a hint. */
    const cJSON *c;
    cJSON_ArrayForEach(c, body)
    {
        bool known = false;
        const char *names[16];
        size_t nn = 0;
        if (k->ids != ID_NONE)
            names[nn++] = "deviceId";
        if (k->ids == ID_DEVICE_OR_MODULE)
            names[nn++] = "moduleId";
        for (const struct field *f = k->fields; f->name; f++)
            names[nn++] = f->name;
        for (size_t i = 0; i < nn; i++)
            known |= !strcmp(names[i], c->string);
        if (!known) {
            size_t old = push(v, c->string);
            char list[300];
            field_list(k, list, sizeof list);
            const char *hint = closest(c->string, names, nn);
            if (hint)
                err(v, "unknown member; did you mean \"%s\"? %s takes %s", hint, k->name, list);
            else
                err(v, "unknown member; %s takes %s", k->name, list);
            pop(v, old);
        }
    }
    if (k->ids != ID_NONE) {
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(body, "deviceId");
        size_t old = push(v, "deviceId");
        if (!d)
            err(v, "required: the id of the device%s",
                k->ids == ID_DEVICE_OR_MODULE ? " (and moduleId for a module)" : "");
        else if (!cJSON_IsString(d) || !d->valuestring[0])
            err(v, "expected a non-empty string");
        pop(v, old);
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(body, "moduleId");
        if (m && k->ids == ID_DEVICE_OR_MODULE) {
            old = push(v, "moduleId");
            if (!cJSON_IsString(m) || !m->valuestring[0])
                err(v, "expected a non-empty string");
            pop(v, old);
        }
    }
    for (const struct field *f = k->fields; f->name; f++) {
        const cJSON *j = cJSON_GetObjectItemCaseSensitive(body, f->name);
        size_t old = push(v, f->name);
        if (!j && f->required)
            err(v, "required: %s", f->what ? f->what : "a value");
        else if (j)
            check_field(v, f, j, si);
        pop(v, old);
    }
    /* Kind-specific rules. */
    if (st->kind == TH_STEP_SEND_C2D) {
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(body, "body");
        const cJSON *bj = cJSON_GetObjectItemCaseSensitive(body, "bodyJson");
        if (b && bj)
            err(v, "give either body (a string) or bodyJson (any JSON), not both");
        if (b && !cJSON_IsString(b)) {
            size_t old = push(v, "body");
            err(v, "expected a string; use bodyJson for a JSON body");
            pop(v, old);
        }
    }
    if (st->kind == TH_STEP_CREATE_MODULES) {
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(body, "desired");
        const cJSON *df = cJSON_GetObjectItemCaseSensitive(body, "desiredFile");
        if (d && df)
            err(v, "give either desired or desiredFile, not both");
        if (cJSON_IsString(df) && df->valuestring[0] && !strstr(df->valuestring, "${")) {
            size_t old = push(v, "desiredFile");
            char *p = relative_path(v->s, df->valuestring);
            size_t len;
            char *text = p ? read_ref(v, p, &len) : NULL;
            if (!text) {
                err(v, "cannot read %s: %s", p ? p : df->valuestring, strerror(errno));
            } else {
                char msg[300];
                cJSON *doc = parse_text(text, len, msg, sizeof msg);
                if (!doc)
                    err(v, "%s: %s", p, msg);
                else if (!cJSON_IsObject(doc))
                    err(v, "%s holds no JSON object (the desired properties)", p);
                cJSON_Delete(doc);
            }
            free(text);
            free(p);
            pop(v, old);
        }
    }
    if (st->kind == TH_STEP_SLEEP && st->bound_us == 0 &&
        cJSON_GetObjectItemCaseSensitive(body, "for")) {
        size_t old = push(v, "for");
        int64_t us;
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(body, "for");
        if (cJSON_IsString(f) && th_duration_parse(f->valuestring, &us) && us == 0)
            err(v, "expected a duration longer than zero");
        pop(v, old);
    }
    /* Bounds and counts, with defaults. */
    if (k->bound) {
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(body, k->bound);
        int64_t us;
        st->bound_us = cJSON_IsString(b) && th_duration_parse(b->valuestring, &us)
                           ? us
                           : v->s->default_within_us;
    }
    if (st->kind == TH_STEP_EXPECT_TELEMETRY) {
        const cJSON *cnt = cJSON_GetObjectItemCaseSensitive(body, "count");
        st->count_min = 1;
        st->count_max = -1;
        if (is_integer(cnt)) {
            st->count_min = st->count_max = (long)cnt->valuedouble;
        } else if (cJSON_IsObject(cnt)) {
            const cJSON *mn = cJSON_GetObjectItemCaseSensitive(cnt, "min");
            const cJSON *mx = cJSON_GetObjectItemCaseSensitive(cnt, "max");
            st->count_min = is_integer(mn) ? (long)mn->valuedouble : 0;
            st->count_max = is_integer(mx) ? (long)mx->valuedouble : -1;
        }
    }
    check_refs(v, body);
}

static const char *kind_names[TH_STEP_KIND_COUNT];

static int kind_of(const char *name)
{
    for (int i = 0; i < TH_STEP_KIND_COUNT; i++)
        if (!strcmp(kinds[i].name, name))
            return i;
    return -1;
}

/* First pass over one step: its name and kind (so that later steps can refer to it). */
static void scan_step(struct v *v, const cJSON *j, struct th_step *st, size_t i)
{
    st->index = (int)i + 1;
    st->since = -1;
    st->kind = TH_STEP_KIND_COUNT;
    if (!cJSON_IsObject(j))
        return;
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(j, "name");
    if (cJSON_IsString(name) && name->valuestring[0])
        st->name = strdup(name->valuestring);
    const cJSON *c;
    cJSON_ArrayForEach(c, j)
    {
        int k = kind_of(c->string);
        if (k >= 0 && st->kind == TH_STEP_KIND_COUNT) {
            st->kind = (enum th_step_kind)k;
            st->body = c;
        }
    }
    (void)v;
}

static void check_step(struct v *v, const cJSON *j, struct th_step *st, size_t i)
{
    size_t old = push_i(v, (int)i);
    if (!cJSON_IsObject(j)) {
        err(v, "expected a step object such as {\"name\": \"...\", \"expectReported\": {...}}");
        pop(v, old);
        return;
    }
    const char *found[4];
    int nfound = 0, unknown = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, j)
    {
        if (!strcmp(c->string, "name")) {
            size_t o2 = push(v, "name");
            if (!cJSON_IsString(c) || !c->valuestring[0])
                err(v, "expected a non-empty string");
            pop(v, o2);
            continue;
        }
        if (kind_of(c->string) >= 0) {
            if (nfound < 4)
                found[nfound] = c->string;
            nfound++;
            continue;
        }
        size_t o2 = push(v, c->string);
        unknown++;
        const char *hint = closest(c->string, kind_names, TH_STEP_KIND_COUNT);
        if (hint)
            err(v, "unknown member; did you mean the step kind \"%s\"?", hint);
        else
            err(v, "unknown member; a step holds \"name\" and one step kind (patchDesired, "
                   "expectReported, ... see docs/scenarios.md)");
        pop(v, o2);
    }
    if (nfound == 0 && unknown == 0) {
        err(v, "no step kind; a step holds exactly one of patchDesired, replaceDesired, "
               "updateTags, invokeMethod, sendC2D, query, createModules, createEnrollment, "
               "createEnrollmentGroup, createConfiguration, updateConfiguration, "
               "deleteConfiguration, sleep, waitConnected, waitDisconnected, expectReported, "
               "expectTwinGet, expectTelemetry, expectNoTelemetry, expectNoReported, "
               "expectC2DDelivered, expectRegistration, disconnect, expireToken, injectError, "
               "restartHub");
    } else if (nfound == 0) {
        /* the unknown member above is the reason */
    } else if (nfound > 1) {
        err(v, "a step holds exactly one step kind; this one has %s and %s", found[0], found[1]);
    } else {
        size_t o2 = push(v, kinds[st->kind].name);
        if (st->kind == TH_STEP_RESTART_HUB && cJSON_IsTrue(st->body)) {
            /* "restartHub": true is accepted as {} */
        } else if (!cJSON_IsObject(st->body)) {
            err(v, "expected an object%s", st->kind == TH_STEP_RESTART_HUB ? " ({} or true)" : "");
        } else {
            check_step_body(v, st, i);
        }
        pop(v, o2);
    }
    if (!st->name) {
        char buf[64];
        snprintf(buf, sizeof buf, "%s %zu",
                 st->kind < TH_STEP_KIND_COUNT ? kinds[st->kind].name : "step", i + 1);
        st->name = strdup(buf);
    }
    pop(v, old);
}

/* ---- top level ---- */

/*
 * Validate a registry document the way the hub loads it. Inline documents
 * are reported under v->path ("registry.devices[0].moduleId"); a
 * registryFile's problems name that file.
 */
static void check_registry(struct v *v, const cJSON *doc, const char *reg_file)
{
    struct th_registry *reg = th_registry_new();
    struct th_error e = {0};
    if (!reg) {
        err(v, "out of memory");
        return;
    }
    if (!cJSON_IsObject(doc)) {
        err(v, "expected a registry document (an object with \"devices\" and \"policies\"; see "
               "docs/registry.md)");
    } else if (th_registry_load(reg, doc, 0, &e) != TH_OK) {
        v->ok = false;
        /* e.message starts with the path inside the document when there is one */
        const char *colon = strstr(e.message, ": ");
        bool has_path = colon && memchr(e.message, ' ', (size_t)(colon - e.message)) == NULL;
        if (reg_file)
            th_scn_diag_add(v->diag, reg_file, NULL, "%s (the registryFile of %s)", e.message,
                            v->file);
        else if (has_path)
            th_scn_diag_add(v->diag, v->file, NULL, "%s.%.*s: %s", v->path,
                            (int)(colon - e.message), e.message, colon + 2);
        else
            th_scn_diag_add(v->diag, v->file, v->path, "%s", e.message);
    }
    th_registry_free(reg);
}

static void check_agent(struct v *v, const cJSON *a)
{
    struct th_scenario *s = v->s;
    size_t old = push(v, "agent");
    if (!cJSON_IsObject(a)) {
        err(v, "expected an object such as {\"command\": \"node agent.js\", \"identity\": "
               "{\"deviceId\": \"sensor-1\"}}");
        pop(v, old);
        return;
    }
    s->has_agent = true;
    static const char *const names[] = {"command", "identity", "env", "startAt"};
    const cJSON *c;
    cJSON_ArrayForEach(c, a)
    {
        bool known = false;
        for (size_t i = 0; i < 4; i++)
            known |= !strcmp(c->string, names[i]);
        if (!known) {
            size_t o2 = push(v, c->string);
            const char *hint = closest(c->string, names, 4);
            err(v, "unknown member%s%s%s; agent takes command, identity, env, startAt",
                hint ? "; did you mean \"" : "", hint ? hint : "", hint ? "\"?" : "");
            pop(v, o2);
        }
    }
    const cJSON *cmd = cJSON_GetObjectItemCaseSensitive(a, "command");
    if (cmd) {
        size_t o2 = push(v, "command");
        if (!cJSON_IsString(cmd) || !cmd->valuestring[0])
            err(v, "expected a shell command line");
        else
            s->agent_command = cmd->valuestring;
        pop(v, o2);
    }
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(a, "identity");
    if (id) {
        size_t o2 = push(v, "identity");
        if (!cJSON_IsObject(id)) {
            err(v, "expected {\"deviceId\": \"...\", \"moduleId\": \"...\"}");
        } else {
            cJSON_ArrayForEach(c, id)
            {
                size_t o3 = push(v, c->string);
                if (strcmp(c->string, "deviceId") && strcmp(c->string, "moduleId"))
                    err(v, "unknown member; identity takes deviceId and moduleId");
                else if (!cJSON_IsString(c) || !c->valuestring[0])
                    err(v, "expected a non-empty string");
                pop(v, o3);
            }
            const cJSON *d = cJSON_GetObjectItemCaseSensitive(id, "deviceId");
            const cJSON *m = cJSON_GetObjectItemCaseSensitive(id, "moduleId");
            if (!d) {
                size_t o3 = push(v, "deviceId");
                err(v, "required: whose connection string the agent gets");
                pop(v, o3);
            }
            s->agent_device = cJSON_IsString(d) ? d->valuestring : NULL;
            s->agent_module = cJSON_IsString(m) ? m->valuestring : NULL;
        }
        pop(v, o2);
    }
    const cJSON *env = cJSON_GetObjectItemCaseSensitive(a, "env");
    if (env) {
        size_t o2 = push(v, "env");
        if (!cJSON_IsObject(env)) {
            err(v, "expected an object of strings");
        } else {
            cJSON_ArrayForEach(c, env)
            {
                size_t o3 = push(v, c->string);
                if (!cJSON_IsString(c))
                    err(v, "expected a string");
                else if (!c->string[0] || strchr(c->string, '='))
                    err(v, "not an environment variable name");
                pop(v, o3);
            }
            s->agent_env = env;
        }
        pop(v, o2);
    }
    const cJSON *at = cJSON_GetObjectItemCaseSensitive(a, "startAt");
    s->agent_start_at = 0;
    if (at) {
        size_t o2 = push(v, "startAt");
        if (!cJSON_IsString(at)) {
            err(v, "expected \"beginning\" or the name of a step");
        } else if (strcmp(at->valuestring, "beginning") != 0) {
            int found = -1, n = 0;
            for (size_t i = 0; i < s->nsteps; i++)
                if (s->steps[i].name && !strcmp(s->steps[i].name, at->valuestring)) {
                    found = (int)i;
                    n++;
                }
            if (n == 0)
                err(v, "no step is named \"%s\"; give \"beginning\" or a step's name",
                    at->valuestring);
            else if (n > 1)
                err(v, "several steps are named \"%s\"; give them different names",
                    at->valuestring);
            else
                s->agent_start_at = found;
        }
        pop(v, o2);
    }
    pop(v, old);
}

/* The scenario's directory from its path ("." when none). */
static char *dir_of(const char *path)
{
    char *copy = strdup(path);
    if (!copy)
        return NULL;
    char *d = strdup(dirname(copy));
    free(copy);
    return d;
}

static void validate(struct v *v, cJSON *doc)
{
    struct th_scenario *s = v->s;
    if (!cJSON_IsObject(doc)) {
        err(v, "a scenario is a JSON object with \"name\" and \"steps\"");
        return;
    }
    const cJSON *c;
    cJSON_ArrayForEach(c, doc)
    {
        bool known = false;
        for (size_t i = 0; i < sizeof top_members / sizeof top_members[0]; i++)
            known |= !strcmp(c->string, top_members[i]);
        if (!known) {
            size_t old = push(v, c->string);
            const char *hint =
                closest(c->string, top_members, sizeof top_members / sizeof top_members[0]);
            err(v,
                "unknown member%s%s%s; a scenario has name, description, registry, "
                "registryFile, agent, defaults, variables, steps",
                hint ? "; did you mean \"" : "", hint ? hint : "", hint ? "\"?" : "");
            pop(v, old);
        }
    }
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(doc, "name");
    size_t old = push(v, "name");
    if (!name)
        err(v, "required: the scenario's name (shown in reports)");
    else if (!cJSON_IsString(name) || !name->valuestring[0])
        err(v, "expected a non-empty string");
    else
        s->name = strdup(name->valuestring);
    pop(v, old);

    const cJSON *desc = cJSON_GetObjectItemCaseSensitive(doc, "description");
    if (desc && !cJSON_IsString(desc)) {
        old = push(v, "description");
        err(v, "expected a string");
        pop(v, old);
    }

    /* defaults and variables come before the steps, which use them */
    s->default_within_us = TH_SCN_DEFAULT_WITHIN_US;
    const cJSON *defaults = cJSON_GetObjectItemCaseSensitive(doc, "defaults");
    if (defaults) {
        old = push(v, "defaults");
        if (!cJSON_IsObject(defaults)) {
            err(v, "expected {\"within\": \"PT10S\"}");
        } else {
            cJSON_ArrayForEach(c, defaults)
            {
                size_t o2 = push(v, c->string);
                int64_t us;
                if (strcmp(c->string, "within") != 0)
                    err(v, "unknown member; defaults takes within");
                else if (!cJSON_IsString(c) || !th_duration_parse(c->valuestring, &us))
                    err(v, "expected an ISO 8601 duration such as \"PT10S\"");
                else
                    s->default_within_us = us;
                pop(v, o2);
            }
        }
        pop(v, old);
    }
    const cJSON *vars = cJSON_GetObjectItemCaseSensitive(doc, "variables");
    if (vars) {
        old = push(v, "variables");
        if (!cJSON_IsObject(vars)) {
            err(v, "expected an object of name: string");
        } else {
            cJSON_ArrayForEach(c, vars)
            {
                size_t o2 = push(v, c->string);
                if (!th_vars_valid_name(c->string))
                    err(v, "not a variable name (letters, digits, '_' and '-', not starting "
                           "with a digit)");
                else if (!cJSON_IsString(c))
                    err(v, "expected a string");
                else
                    note_name(v, v->known, c->string);
                pop(v, o2);
            }
            s->variables = vars;
        }
        pop(v, old);
    }
    if (vars && cJSON_IsObject(vars)) {
        old = push(v, "variables");
        cJSON_ArrayForEach(c, vars)
        {
            size_t o2 = push(v, c->string);
            check_refs(v, c);
            pop(v, o2);
        }
        pop(v, old);
    }

    /* registry */
    const cJSON *reg = cJSON_GetObjectItemCaseSensitive(doc, "registry");
    const cJSON *regf = cJSON_GetObjectItemCaseSensitive(doc, "registryFile");
    if (reg && regf) {
        old = push(v, "registryFile");
        err(v, "give either registry or registryFile, not both");
        pop(v, old);
    } else if (reg) {
        old = push(v, "registry");
        check_registry(v, reg, NULL);
        if (cJSON_IsObject(reg))
            s->registry = cJSON_Duplicate(reg, 1);
        pop(v, old);
    } else if (regf) {
        old = push(v, "registryFile");
        if (!cJSON_IsString(regf) || !regf->valuestring[0]) {
            err(v, "expected the path of a registry file (relative to the scenario file)");
        } else {
            char *p = relative_path(s, regf->valuestring);
            size_t len;
            char *text = p ? read_ref(v, p, &len) : NULL;
            if (!text) {
                err(v, "cannot read %s: %s", p ? p : regf->valuestring, strerror(errno));
            } else {
                char msg[300];
                cJSON *rdoc = parse_text(text, len, msg, sizeof msg);
                if (!rdoc) {
                    err(v, "%s: %s", p, msg);
                } else {
                    check_registry(v, rdoc, p);
                    s->registry = rdoc;
                }
            }
            free(text);
            free(p);
        }
        pop(v, old);
    }

    /* steps: names first (for since/startAt), then everything */
    const cJSON *steps = cJSON_GetObjectItemCaseSensitive(doc, "steps");
    old = push(v, "steps");
    if (!steps) {
        err(v, "required: the list of steps");
    } else if (!cJSON_IsArray(steps) || cJSON_GetArraySize(steps) == 0) {
        err(v, "expected a non-empty array of steps");
    } else {
        size_t n = (size_t)cJSON_GetArraySize(steps);
        s->steps = calloc(n, sizeof *s->steps);
        if (!s->steps) {
            err(v, "out of memory");
        } else {
            s->nsteps = n;
            size_t i = 0;
            cJSON_ArrayForEach(c, steps) scan_step(v, c, &s->steps[i], i), i++;
            i = 0;
            cJSON_ArrayForEach(c, steps)
            {
                cJSON_Delete(v->pending);
                v->pending = cJSON_CreateObject();
                check_step(v, c, &s->steps[i], i);
                /* captures of this step are usable from the next one */
                const cJSON *cap;
                cJSON_ArrayForEach(cap, v->pending) note_name(v, v->known, cap->string);
                i++;
            }
        }
    }
    pop(v, old);

    /* the agent (its startAt names a step; its strings may use captures before it) */
    const cJSON *agent = cJSON_GetObjectItemCaseSensitive(doc, "agent");
    if (agent) {
        check_agent(v, agent);
        /* Captures of steps at or after startAt are not known when the agent starts. */
        cJSON *saved = v->known;
        cJSON *known = cJSON_CreateObject();
        if (vars && cJSON_IsObject(vars))
            cJSON_ArrayForEach(c, vars) if (th_vars_valid_name(c->string))
                note_name(v, known, c->string);
        for (int i = 0; i < s->agent_start_at && (size_t)i < s->nsteps; i++) {
            cJSON *tmp = cJSON_CreateObject();
            const struct th_step *st = &s->steps[i];
            if (st->body && cJSON_IsObject(st->body)) {
                /* collect captures silently */
                struct th_scn_diag quiet = {0};
                cJSON *old_pending = v->pending;
                v->pending = tmp;
                th_matcher_validate(st->body, NULL, NULL, &quiet, on_capture, v);
                v->pending = old_pending;
                th_scn_diag_free(&quiet);
            }
            const cJSON *cap;
            cJSON_ArrayForEach(cap, tmp) note_name(v, known, cap->string);
            cJSON_Delete(tmp);
        }
        v->known = known;
        old = push(v, "agent");
        if (cJSON_IsObject(agent)) {
            const cJSON *cmd = cJSON_GetObjectItemCaseSensitive(agent, "command");
            const cJSON *env = cJSON_GetObjectItemCaseSensitive(agent, "env");
            if (cmd) {
                size_t o2 = push(v, "command");
                check_refs(v, cmd);
                pop(v, o2);
            }
            if (env) {
                size_t o2 = push(v, "env");
                check_refs(v, env);
                pop(v, o2);
            }
        }
        pop(v, old);
        cJSON_Delete(known);
        v->known = saved;
    }
}

struct th_scenario *th_scenario_parse(const char *text, size_t len, const char *path,
                                      struct th_scn_diag *diag)
{
    return th_scenario_parse_ex(text, len, path, NULL, diag);
}

struct th_scenario *th_scenario_parse_ex(const char *text, size_t len, const char *path,
                                         const struct th_scn_parse_opts *opts,
                                         struct th_scn_diag *diag)
{
    for (int i = 0; i < TH_STEP_KIND_COUNT; i++)
        kind_names[i] = kinds[i].name;
    struct th_scenario *s = calloc(1, sizeof *s);
    if (!s) {
        th_scn_diag_add(diag, path, NULL, "out of memory");
        return NULL;
    }
    s->file = strdup(path ? path : "scenario");
    s->dir = dir_of(path ? path : ".");
    char msg[300];
    s->doc = parse_text(text, len, msg, sizeof msg);
    if (!s->doc) {
        th_scn_diag_add(diag, s->file, NULL, "%s", msg);
        th_scenario_free(s);
        return NULL;
    }
    struct v v = {.file = s->file, .diag = diag, .s = s, .opts = opts, .ok = true};
    v.known = cJSON_CreateObject();
    v.pending = cJSON_CreateObject();
    if (!s->file || !s->dir || !v.known || !v.pending) {
        th_scn_diag_add(diag, path, NULL, "out of memory");
        v.ok = false;
    } else {
        validate(&v, s->doc);
    }
    cJSON_Delete(v.known);
    cJSON_Delete(v.pending);
    if (!v.ok) {
        th_scenario_free(s);
        return NULL;
    }
    return s;
}

struct th_scenario *th_scenario_load(const char *path, struct th_scn_diag *diag)
{
    size_t len;
    char *text = th_file_read(path, TH_SCN_MAX_FILE_BYTES, &len);
    if (!text) {
        th_scn_diag_add(diag, path, NULL, "cannot read the scenario: %s", strerror(errno));
        return NULL;
    }
    struct th_scenario *s = th_scenario_parse(text, len, path, diag);
    free(text);
    return s;
}

void th_scenario_free(struct th_scenario *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nsteps; i++)
        free(s->steps[i].name);
    free(s->steps);
    cJSON_Delete(s->registry);
    cJSON_Delete(s->doc);
    free(s->name);
    free(s->file);
    free(s->dir);
    free(s);
}

/* ---- identities ---- */

/* Add {deviceId, moduleId} to arr unless present; false when out of memory. */
static bool add_identity(cJSON *arr, const char *d, const char *m)
{
    if (!d || strstr(d, "${") || (m && strstr(m, "${")))
        return true;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr)
    {
        const cJSON *ed = cJSON_GetObjectItemCaseSensitive(e, "deviceId");
        const cJSON *em = cJSON_GetObjectItemCaseSensitive(e, "moduleId");
        if (!strcmp(ed->valuestring, d) &&
            ((!m && !em) || (m && em && !strcmp(em->valuestring, m))))
            return true;
    }
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddStringToObject(o, "deviceId", d) ||
        (m && !cJSON_AddStringToObject(o, "moduleId", m)) || !cJSON_AddItemToArray(arr, o)) {
        cJSON_Delete(o);
        return false;
    }
    return true;
}

cJSON *th_scenario_identities(const struct th_scenario *s)
{
    cJSON *arr = cJSON_CreateArray();
    if (!arr)
        return NULL;
    const cJSON *devs = cJSON_GetObjectItemCaseSensitive(s->registry, "devices");
    bool ok = true;
    const cJSON *d;
    cJSON_ArrayForEach(d, devs)
    {
        const char *did = th_json_string(d, "deviceId", NULL);
        ok = ok && add_identity(arr, did, NULL);
        const cJSON *m;
        cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(d, "modules")) ok =
            ok && add_identity(arr, did, th_json_string(m, "moduleId", NULL));
    }
    ok = ok && add_identity(arr, s->agent_device, s->agent_module);
    for (size_t i = 0; ok && i < s->nsteps; i++) {
        const cJSON *b = s->steps[i].body;
        if (cJSON_IsObject(b))
            ok = add_identity(arr, th_json_string(b, "deviceId", NULL),
                              th_json_string(b, "moduleId", NULL));
    }
    if (!ok) {
        cJSON_Delete(arr);
        return NULL; /* out of memory */
    }
    return arr;
}
