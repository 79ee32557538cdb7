/*
 * secconfig.c - the security module's configuration object: key table,
 * defaults, the agents' checks (see secconfig.h for the decisions and
 * docs/protocol.md "The security module's configuration" for the sources).
 */
#include "secconfig.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define C TH_SECCONFIG_AGENT_C
#define CS TH_SECCONFIG_AGENT_CS

/*
 * The schema keys in the order of Azure/Azure-IoT-Security's
 * azureiotsecurity_default.json (fixtures/azureiotsecurity-default.json),
 * then the keys the agents read that the schema leaves out. Which agent reads
 * which key: the C agent's twin_configuration.c and
 * twin_configuration_event_collectors.c, the C# agent's [JsonProperty]
 * attributes in RemoteConfiguration.cs, RemoteIoTConfiguration.cs and
 * RemoteSecurityModuleConfiguration.cs.
 */
static const struct th_secconfig_key keys[] = {
    {"highPriorityMessageFrequency", TH_SECCONFIG_DURATION, "\"PT7M\"", C | CS},
    {"lowPriorityMessageFrequency", TH_SECCONFIG_DURATION, "\"PT5H\"", C | CS},
    {"snapshotFrequency", TH_SECCONFIG_DURATION, "\"PT13H\"", C | CS},
    {"maxLocalCacheSizeInBytes", TH_SECCONFIG_SIZE, "2560000", C | CS},
    {"maxMessageSizeInBytes", TH_SECCONFIG_SIZE, "204800", C | CS},
    {"eventPriorityConnectedHardware", TH_SECCONFIG_PRIORITY, "\"Low\"", CS},
    {"eventPriorityListeningPorts", TH_SECCONFIG_PRIORITY, "\"High\"", C | CS},
    {"eventPriorityProcessCreate", TH_SECCONFIG_PRIORITY, "\"Low\"", C | CS},
    {"eventPriorityProcessTerminate", TH_SECCONFIG_PRIORITY, "\"Low\"", CS},
    {"eventPrioritySystemInformation", TH_SECCONFIG_PRIORITY, "\"Low\"", C | CS},
    {"eventPriorityLocalUsers", TH_SECCONFIG_PRIORITY, "\"High\"", C | CS},
    {"eventPriorityLogin", TH_SECCONFIG_PRIORITY, "\"High\"", C | CS},
    {"eventPriorityConnectionCreate", TH_SECCONFIG_PRIORITY, "\"Low\"", C | CS},
    {"eventPriorityFirewallConfiguration", TH_SECCONFIG_PRIORITY, "\"Low\"", C | CS},
    {"eventPriorityOSBaseline", TH_SECCONFIG_PRIORITY, "\"Low\"", C | CS},
    {"eventPriorityDiagnostic", TH_SECCONFIG_PRIORITY, "\"Low\"", C | CS},
    {"eventPriorityConfigurationError", TH_SECCONFIG_PRIORITY, "\"Low\"", CS},
    {"eventPriorityDroppedEventsStatistics", TH_SECCONFIG_PRIORITY, "\"Low\"", CS},
    {"eventPriorityMessageStatistics", TH_SECCONFIG_PRIORITY, "\"Low\"", CS},
    {"aggregationEnabledProcessCreate", TH_SECCONFIG_BOOL, "true", C | CS},
    {"aggregationIntervalProcessCreate", TH_SECCONFIG_DURATION, "\"PT1H\"", C | CS},
    {"aggregationEnabledConnectionCreate", TH_SECCONFIG_BOOL, "true", C | CS},
    {"aggregationIntervalConnectionCreate", TH_SECCONFIG_DURATION, "\"PT1H\"", C | CS},
    {"aggregationEnabledProcessTerminate", TH_SECCONFIG_BOOL, "true", CS},
    {"aggregationIntervalProcessTerminate", TH_SECCONFIG_DURATION, "\"PT1H\"", CS},
    /* Not in the schema. */
    {"eventPriorityOperational", TH_SECCONFIG_PRIORITY, NULL, C},
    {"baselineCustomChecksEnabled", TH_SECCONFIG_BOOL, NULL, C | CS},
    {"baselineCustomChecksFilePath", TH_SECCONFIG_STRING, NULL, C | CS},
    {"baselineCustomChecksFileHash", TH_SECCONFIG_STRING, NULL, C | CS},
    {"hubResourceId", TH_SECCONFIG_STRING, NULL, CS},
};
#define NKEYS (sizeof keys / sizeof keys[0])

#undef C
#undef CS

#define HIGH_KEY "highPriorityMessageFrequency"
#define LOW_KEY "lowPriorityMessageFrequency"
#define CACHE_KEY "maxLocalCacheSizeInBytes"
#define MESSAGE_KEY "maxMessageSizeInBytes"

#define MS_SECOND 1000ull
#define MS_MINUTE (60 * MS_SECOND)
#define MS_HOUR (60 * MS_MINUTE)
#define MS_DAY (24 * MS_HOUR)

const struct th_secconfig_key *th_secconfig_keys(size_t *count)
{
    if (count)
        *count = NKEYS;
    return keys;
}

const struct th_secconfig_key *th_secconfig_key_find(const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < NKEYS; i++)
        if (!strcmp(keys[i].name, name))
            return &keys[i];
    return NULL;
}

/* The key whose name equals `name` ignoring case only, for the C# agent's case-blind lookup. */
static const struct th_secconfig_key *key_find_nocase(const char *name)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (!strcasecmp(keys[i].name, name))
            return &keys[i];
    return NULL;
}

cJSON *th_secconfig_defaults(void)
{
    cJSON *obj = cJSON_CreateObject();
    for (size_t i = 0; obj && i < NKEYS; i++) {
        if (!keys[i].schema_default)
            continue;
        cJSON *entry = cJSON_CreateObject();
        cJSON *value = cJSON_Parse(keys[i].schema_default);
        if (!entry || !value || !cJSON_AddItemToObject(entry, "value", value)) {
            cJSON_Delete(value);
            cJSON_Delete(entry);
            cJSON_Delete(obj);
            return NULL;
        }
        if (!cJSON_AddItemToObject(obj, keys[i].name, entry)) {
            cJSON_Delete(entry);
            cJSON_Delete(obj);
            return NULL;
        }
    }
    return obj;
}

const char *th_secconfig_kind_name(enum th_secconfig_kind kind)
{
    switch (kind) {
    case TH_SECCONFIG_TYPE_MISMATCH:
        return "TypeMismatch";
    case TH_SECCONFIG_CONFLICT:
        return "Conflict";
    case TH_SECCONFIG_NOT_OPTIMAL:
        return "NotOptimal";
    case TH_SECCONFIG_UNKNOWN_KEY:
        return "UnknownKey";
    }
    return "?";
}

/* ---- durations ------------------------------------------------------------------------------ */

/* What a duration's text says, before the agents' refusals. */
struct duration_scan {
    bool syntax_ok;
    bool fraction, weeks, years;
    bool overflow;     /* whole_ms does not fit 64 bits */
    uint64_t whole_ms; /* years as 365 days, months as 30, fractions left out */
    double exact_ms;   /* with fractions, for comparing two texts */
};

/*
 * P[nY][nM][nW][nD][T[nH][nM][nS]], each n digits with an optional fraction,
 * designators in this order and at most once, at least one component, and a
 * T followed by at least one. That is the schema's TimeConfiguration pattern
 * (Azure-IoT-Security azureiotsecurity_schema_definitions.json) except that it
 * also takes a fraction before the last component, which is refused anyway.
 */
static struct duration_scan scan_duration(const char *text)
{
    static const char date_units[] = "YMWD", time_units[] = "HMS";
    static const uint64_t date_ms[] = {365 * MS_DAY, 30 * MS_DAY, 7 * MS_DAY, MS_DAY};
    static const uint64_t time_ms[] = {MS_HOUR, MS_MINUTE, MS_SECOND};
    struct duration_scan s = {0};
    const char *p = text;
    if (!p || *p++ != 'P')
        return s;
    bool in_time = false, any = false;
    int last = -1;
    while (*p) {
        if (*p == 'T') {
            if (in_time || p[1] < '0' || p[1] > '9')
                return s;
            in_time = true;
            last = -1;
            p++;
            continue;
        }
        if (*p < '0' || *p > '9')
            return s;
        uint64_t n = 0;
        double frac = 0, scale = 0.1;
        for (; *p >= '0' && *p <= '9'; p++) {
            if (n > (UINT64_MAX - 9) / 10)
                s.overflow = true;
            else
                n = n * 10 + (uint64_t)(*p - '0');
        }
        bool has_frac = false;
        if (*p == '.' || *p == ',') {
            p++;
            if (*p < '0' || *p > '9')
                return s;
            for (; *p >= '0' && *p <= '9'; p++, scale /= 10)
                frac += (*p - '0') * scale;
            has_frac = true;
        }
        const char *units = in_time ? time_units : date_units;
        const char *u = *p ? strchr(units, *p) : NULL;
        if (!u || (int)(u - units) <= last)
            return s;
        int idx = (int)(u - units);
        last = idx;
        p++;
        uint64_t mult = in_time ? time_ms[idx] : date_ms[idx];
        if (has_frac)
            s.fraction = true;
        if (!in_time && *u == 'W')
            s.weeks = true;
        if (!in_time && *u == 'Y')
            s.years = true;
        if (n > UINT64_MAX / mult || s.whole_ms > UINT64_MAX - n * mult)
            s.overflow = true;
        else
            s.whole_ms += n * mult;
        s.exact_ms += ((double)n + frac) * (double)mult;
        any = true;
    }
    s.syntax_ok = any;
    return s;
}

static void say(char *why, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void say(char *why, size_t size, const char *fmt, ...)
{
    if (!why || size == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, size, fmt, ap);
    va_end(ap);
}

th_result th_secconfig_parse_duration(const char *text, uint64_t *ms, char *why, size_t why_size)
{
    struct duration_scan s = scan_duration(text);
    const char *t = text ? text : "";
    if (!s.syntax_ok) {
        say(why, why_size,
            "\"%.40s\" is not an ISO 8601 duration such as \"PT7M\" "
            "(P[nY][nM][nW][nD][T[nH][nM][nS]]); both agents refuse it",
            t);
        return TH_ERR_INVAL;
    }
    /* time_utils.c reads each number with sscanf("%u%c"): a '.' ends it. */
    if (s.fraction) {
        say(why, why_size, "\"%.40s\" has a fraction: the C agent reads whole numbers only", t);
        return TH_ERR_INVAL;
    }
    /* IsoTimespanConverter.cs: XmlConvert.ToTimeSpan, xs:duration, which has no weeks. */
    if (s.weeks) {
        say(why, why_size,
            "\"%.40s\" counts weeks: the C# agent (xs:duration) has no W; write days instead", t);
        return TH_ERR_INVAL;
    }
    /* TimeUtils_ParseDateString: the Y number is checked, then never added. */
    if (s.years) {
        say(why, why_size,
            "\"%.40s\" counts years: the C agent ignores the Y part; write days instead", t);
        return TH_ERR_INVAL;
    }
    /* TimeUtils_ISO8601DurationStringToMilliseconds: a result of 0 fails. */
    if (!s.overflow && s.whole_ms == 0) {
        say(why, why_size, "\"%.40s\" is zero: the C agent refuses a zero duration", t);
        return TH_ERR_INVAL;
    }
    /* The same function sums uint32 milliseconds with an overflow check. */
    if (s.overflow || s.whole_ms > TH_SECCONFIG_MAX_DURATION_MS) {
        say(why, why_size,
            "\"%.40s\" is longer than the C agent's limit of 4294967295 ms "
            "(49 days 17 hours 2 minutes 47 seconds)",
            t);
        return TH_ERR_INVAL;
    }
    if (ms)
        *ms = s.whole_ms;
    return TH_OK;
}

/* ---- findings ------------------------------------------------------------------------------- */

static bool add_finding(struct th_secconfig_report *r, enum th_secconfig_kind kind, const char *key,
                        const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Append a finding; false when out of memory. */
static bool add_finding(struct th_secconfig_report *r, enum th_secconfig_kind kind, const char *key,
                        const char *fmt, ...)
{
    struct th_secconfig_finding *items = realloc(r->items, (r->count + 1) * sizeof *items);
    if (!items)
        return false;
    r->items = items;
    struct th_secconfig_finding *f = &items[r->count];
    memset(f, 0, sizeof *f);
    f->key = strdup(key);
    if (!f->key)
        return false;
    f->kind = kind;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->message, sizeof f->message, fmt, ap);
    va_end(ap);
    r->count++;
    if (kind != TH_SECCONFIG_UNKNOWN_KEY)
        r->problems++;
    return true;
}

void th_secconfig_report_free(struct th_secconfig_report *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->count; i++)
        free(r->items[i].key);
    free(r->items);
    memset(r, 0, sizeof *r);
}

/* "a string", "a number", ... for messages. */
static const char *type_name(const cJSON *v)
{
    if (cJSON_IsString(v))
        return "a string";
    if (cJSON_IsNumber(v))
        return "a number";
    if (cJSON_IsBool(v))
        return "a boolean";
    if (cJSON_IsNull(v))
        return "null";
    if (cJSON_IsArray(v))
        return "an array";
    if (cJSON_IsObject(v))
        return "an object";
    return "an unknown value";
}

/*
 * Whether a JSON number is whole. No floor(): the core does not link libm.
 * From 2^53 up every double is whole; below, the cast is exact for integers.
 */
static bool is_whole(double d)
{
    double mag = d < 0 ? -d : d;
    return mag >= 9007199254740992.0 || (double)(int64_t)d == d;
}

/* A number as the user wrote it, near enough: integers without exponent. */
static void number_text(double d, char *buf, size_t size)
{
    if (is_whole(d) && d < 1e15 && d > -1e15)
        snprintf(buf, size, "%.0f", d);
    else
        snprintf(buf, size, "%g", d);
}

/* The effective value of a key the conflict checks need. */
struct effective {
    bool ok;       /* valid (given or default): the checks that need it can run */
    bool given;    /* from the object, not the default */
    double number; /* sizes, and durations in ms */
    char text[64]; /* for messages */
};

/* The default of one of the four keys the conflict checks read. */
static struct effective effective_default(const char *name)
{
    struct effective e = {.ok = true};
    const struct th_secconfig_key *k = th_secconfig_key_find(name);
    if (k->type == TH_SECCONFIG_DURATION) {
        /* "\"PT7M\"" -> PT7M */
        snprintf(e.text, sizeof e.text, "%.*s", (int)strlen(k->schema_default) - 2,
                 k->schema_default + 1);
        uint64_t ms = 0;
        e.ok = th_secconfig_parse_duration(e.text, &ms, NULL, 0) == TH_OK;
        e.number = (double)ms;
    } else {
        e.number = strtod(k->schema_default, NULL);
        snprintf(e.text, sizeof e.text, "%s", k->schema_default);
    }
    return e;
}

/*
 * Check one value of a known key; returns false when out of memory. When the
 * key is one the conflict checks read, `eff` (may be NULL) gets its value.
 */
static bool check_value(struct th_secconfig_report *r, const struct th_secconfig_key *k,
                        const cJSON *v, struct effective *eff)
{
    const char *name = k->name;
    char num[64];
    if (eff) {
        eff->ok = false;
        eff->given = true;
    }
    switch (k->type) {
    case TH_SECCONFIG_DURATION: {
        if (!cJSON_IsString(v))
            return add_finding(r, TH_SECCONFIG_TYPE_MISMATCH, name,
                               "expected an ISO 8601 duration string such as \"PT7M\", got %s; "
                               "both agents refuse it",
                               type_name(v));
        char why[sizeof r->items[0].message];
        uint64_t ms = 0;
        if (th_secconfig_parse_duration(v->valuestring, &ms, why, sizeof why) != TH_OK)
            return add_finding(r, TH_SECCONFIG_TYPE_MISMATCH, name, "%s", why);
        if (eff) {
            eff->ok = true;
            eff->number = (double)ms;
            snprintf(eff->text, sizeof eff->text, "%.40s", v->valuestring);
        }
        return true;
    }
    case TH_SECCONFIG_SIZE: {
        if (!cJSON_IsNumber(v))
            return add_finding(r, TH_SECCONFIG_TYPE_MISMATCH, name,
                               "expected a whole number of bytes, got %s; both agents refuse it",
                               type_name(v));
        double d = v->valuedouble;
        number_text(d, num, sizeof num);
        /* json_object_reader.c: the double is converted to int32; Newtonsoft rounds to uint. */
        if (!is_whole(d))
            return add_finding(r, TH_SECCONFIG_TYPE_MISMATCH, name,
                               "%s is not a whole number (the C agent would truncate it, "
                               "the C# agent round it)",
                               num);
        if (d < 0)
            return add_finding(r, TH_SECCONFIG_TYPE_MISMATCH, name,
                               "%s is negative: the C# agent reads sizes as unsigned integers",
                               num);
        if (d > TH_SECCONFIG_MAX_SIZE)
            return add_finding(r, TH_SECCONFIG_TYPE_MISMATCH, name,
                               "%s is over 2147483647: the C agent reads sizes as 32-bit "
                               "signed integers",
                               num);
        if (eff) {
            eff->ok = true;
            eff->number = d;
            snprintf(eff->text, sizeof eff->text, "%s", num);
        }
        return true;
    }
    case TH_SECCONFIG_PRIORITY:
        if (cJSON_IsNumber(v)) {
            number_text(v->valuedouble, num, sizeof num);
            return add_finding(r, TH_SECCONFIG_TYPE_MISMATCH, name,
                               "expected \"Off\", \"Low\" or \"High\", got the number %s: the C "
                               "agent reads priorities as strings only",
                               num);
        }
        if (!cJSON_IsString(v))
            return add_finding(r, TH_SECCONFIG_TYPE_MISMATCH, name,
                               "expected \"Off\", \"Low\" or \"High\" (any case), got %s; both "
                               "agents refuse it",
                               type_name(v));
        /* twin_configuration_event_collectors.c: case-blind compare with high, low, off. */
        if (!strcasecmp(v->valuestring, "off") || !strcasecmp(v->valuestring, "low") ||
            !strcasecmp(v->valuestring, "high"))
            return true;
        if (!strcasecmp(v->valuestring, "operational"))
            return add_finding(r, TH_SECCONFIG_TYPE_MISMATCH, name,
                               "\"%.40s\" is not a priority for the C agent, which knows only "
                               "Off, Low and High (the C# agent would take it)",
                               v->valuestring);
        return add_finding(r, TH_SECCONFIG_TYPE_MISMATCH, name,
                           "\"%.40s\" is not a priority: expected \"Off\", \"Low\" or \"High\" "
                           "(any case); both agents refuse it",
                           v->valuestring);
    case TH_SECCONFIG_BOOL:
        if (!cJSON_IsBool(v))
            return add_finding(r, TH_SECCONFIG_TYPE_MISMATCH, name,
                               "expected true or false, got %s; the C agent refuses it",
                               type_name(v));
        return true;
    case TH_SECCONFIG_STRING:
        if (!cJSON_IsString(v))
            return add_finding(r, TH_SECCONFIG_TYPE_MISMATCH, name,
                               "expected a string, got %s; the agents refuse it", type_name(v));
        return true;
    }
    return true;
}

/* One member of the configuration object; false when out of memory. */
static bool check_member(struct th_secconfig_report *r, const cJSON *m, struct effective eff[4],
                         bool seen[NKEYS])
{
    static const char *const conflict_keys[4] = {HIGH_KEY, LOW_KEY, CACHE_KEY, MESSAGE_KEY};
    const struct th_secconfig_key *k = th_secconfig_key_find(m->string);
    /*
     * Only a file can hold a name twice (a twin cannot). parson, the C agent's
     * JSON parser, refuses a document with a repeated name (json_object_add).
     */
    if (k && seen[k - keys])
        return add_finding(r, TH_SECCONFIG_TYPE_MISMATCH, k->name,
                           "appears more than once: the C agent's JSON parser (parson) refuses "
                           "the whole document");
    if (k)
        seen[k - keys] = true;
    if (!k) {
        const struct th_secconfig_key *near = key_find_nocase(m->string);
        if (near)
            return add_finding(r, TH_SECCONFIG_UNKNOWN_KEY, m->string,
                               "not a key: the C agent ignores it, the C# agent (names match "
                               "case-blind there) reads it as %s; write %s",
                               near->name, near->name);
        return add_finding(r, TH_SECCONFIG_UNKNOWN_KEY, m->string,
                           "not a key either agent reads; both ignore it");
    }
    /* A key removed from desired (null in a patch) takes its default in both agents. */
    if (cJSON_IsNull(m))
        return true;
    struct effective *e = NULL;
    for (int i = 0; i < 4; i++)
        if (!strcmp(k->name, conflict_keys[i]))
            e = &eff[i];
    if (!cJSON_IsObject(m)) {
        if (e)
            e->ok = false;
        return add_finding(r, TH_SECCONFIG_TYPE_MISMATCH, k->name,
                           "%s instead of {\"value\": ...}: both agents refuse a bare value (the "
                           "pre-2019 flat format)",
                           type_name(m));
    }
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(m, "value");
    if (!v) {
        if (e)
            e->ok = false;
        return add_finding(r, TH_SECCONFIG_TYPE_MISMATCH, k->name,
                           "no \"value\" member: both agents refuse it");
    }
    if (cJSON_IsNull(v)) {
        if (e)
            e->ok = false;
        return add_finding(r, TH_SECCONFIG_TYPE_MISMATCH, k->name,
                           "\"value\" is null: both agents refuse it; set the key itself to "
                           "null to use the default");
    }
    return check_value(r, k, v, e);
}

th_result th_secconfig_check(const cJSON *config, struct th_secconfig_report *out)
{
    memset(out, 0, sizeof *out);
    if (!config || cJSON_IsNull(config))
        return TH_OK;
    if (!cJSON_IsObject(config)) {
        if (!add_finding(out, TH_SECCONFIG_TYPE_MISMATCH, TH_SECCONFIG_OBJECT,
                         "the configuration is %s, not an object; both agents refuse it",
                         type_name(config)))
            goto oom;
        return TH_OK;
    }
    struct effective eff[4] = {effective_default(HIGH_KEY), effective_default(LOW_KEY),
                               effective_default(CACHE_KEY), effective_default(MESSAGE_KEY)};
    bool seen[NKEYS] = {false};
    const cJSON *m;
    cJSON_ArrayForEach(m, config)
    {
        if (!check_member(out, m, eff, seen))
            goto oom;
    }
    /* agent_configuration_error_collector.c and AgentConfigurationErrorEventGenerator.cs. */
    const struct effective *high = &eff[0], *low = &eff[1], *cache = &eff[2], *msg = &eff[3];
    if (high->ok && low->ok && high->number > low->number &&
        !add_finding(out, TH_SECCONFIG_CONFLICT, HIGH_KEY,
                     "%s is longer than " LOW_KEY " %s%s: both agents raise a Conflict", high->text,
                     low->text, low->given ? "" : " (the default)"))
        goto oom;
    if (cache->ok && msg->ok && cache->number < msg->number &&
        !add_finding(out, TH_SECCONFIG_CONFLICT, CACHE_KEY,
                     "%s%s is smaller than " MESSAGE_KEY " %s%s: both agents raise a Conflict",
                     cache->text, cache->given ? "" : " (the default)", msg->text,
                     msg->given ? "" : " (the default)"))
        goto oom;
    if (msg->ok && (int64_t)msg->number % TH_SECCONFIG_MESSAGE_SIZE_MULTIPLE != 0 &&
        !add_finding(out, TH_SECCONFIG_NOT_OPTIMAL, MESSAGE_KEY,
                     "%s is not a multiple of 4096: both agents raise a NotOptimal", msg->text))
        goto oom;
    return TH_OK;
oom:
    th_secconfig_report_free(out);
    return TH_ERR_NOMEM;
}

/* ---- desired against reported --------------------------------------------------------------- */

bool th_secconfig_values_equal(const struct th_secconfig_key *key, const cJSON *desired,
                               const cJSON *reported)
{
    if (!desired || !reported)
        return !desired && !reported;
    if (key && key->type == TH_SECCONFIG_DURATION && cJSON_IsString(desired) &&
        cJSON_IsString(reported)) {
        struct duration_scan d = scan_duration(desired->valuestring);
        struct duration_scan r = scan_duration(reported->valuestring);
        if (d.syntax_ok && r.syntax_ok)
            return d.exact_ms == r.exact_ms;
    }
    if (key && key->type == TH_SECCONFIG_PRIORITY && cJSON_IsString(desired) &&
        cJSON_IsString(reported))
        return !strcasecmp(desired->valuestring, reported->valuestring);
    if (cJSON_IsNumber(desired) && cJSON_IsNumber(reported))
        return desired->valuedouble == reported->valuedouble;
    return cJSON_Compare(desired, reported, true);
}

/* The "value" of an entry in the {"value": ...} form, else the entry itself. */
static const cJSON *entry_value(const cJSON *entry)
{
    if (cJSON_IsObject(entry)) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(entry, "value");
        if (v)
            return v;
    }
    return entry;
}

const char *th_secconfig_verdict(const cJSON *reported, const cJSON *diff)
{
    if (!reported || cJSON_IsNull(reported))
        return "not reported";
    return cJSON_GetArraySize(diff) == 0 ? "matches" : "differs";
}

th_result th_secconfig_diff(const cJSON *desired, const cJSON *reported, cJSON **out)
{
    *out = cJSON_CreateArray();
    if (!*out)
        return TH_ERR_NOMEM;
    /* An object that is not one is refused as a whole (it has no keys to compare). */
    if (desired && !cJSON_IsNull(desired) && !cJSON_IsObject(desired)) {
        cJSON *item = cJSON_CreateObject();
        cJSON *copy = cJSON_Duplicate(desired, true);
        bool ok = item && copy && cJSON_AddStringToObject(item, "key", TH_SECCONFIG_OBJECT) &&
                  cJSON_AddItemToObject(item, "desired", copy);
        if (ok)
            copy = NULL;
        ok = ok && cJSON_AddTrueToObject(item, "bare") && cJSON_AddItemToArray(*out, item);
        if (!ok) {
            cJSON_Delete(copy);
            cJSON_Delete(item);
            cJSON_Delete(*out);
            *out = NULL;
            return TH_ERR_NOMEM;
        }
        return TH_OK;
    }
    const cJSON *m;
    cJSON_ArrayForEach(m, desired)
    {
        const struct th_secconfig_key *k = th_secconfig_key_find(m->string);
        if (!k || cJSON_IsNull(m))
            continue;
        /* A bare value never matches: the agents refuse it, whatever they report. */
        bool bare = !cJSON_IsObject(m) || !cJSON_GetObjectItemCaseSensitive(m, "value");
        const cJSON *dv = entry_value(m);
        const cJSON *re =
            cJSON_IsObject(reported) ? cJSON_GetObjectItemCaseSensitive(reported, k->name) : NULL;
        const cJSON *rv = re && !cJSON_IsNull(re) ? entry_value(re) : NULL;
        if (!bare && th_secconfig_values_equal(k, dv, rv))
            continue;
        cJSON *item = cJSON_CreateObject();
        cJSON *dcopy = cJSON_Duplicate(dv, true);
        cJSON *rcopy = rv ? cJSON_Duplicate(rv, true) : NULL;
        bool ok = item && dcopy && (!rv || rcopy) && cJSON_AddStringToObject(item, "key", k->name);
        ok = ok && cJSON_AddItemToObject(item, "desired", dcopy);
        if (ok)
            dcopy = NULL;
        ok = ok && (!rcopy || cJSON_AddItemToObject(item, "reported", rcopy));
        if (ok)
            rcopy = NULL;
        ok = ok && (!bare || cJSON_AddTrueToObject(item, "bare"));
        ok = ok && cJSON_AddItemToArray(*out, item);
        if (!ok) {
            cJSON_Delete(dcopy);
            cJSON_Delete(rcopy);
            cJSON_Delete(item);
            cJSON_Delete(*out);
            *out = NULL;
            return TH_ERR_NOMEM;
        }
    }
    return TH_OK;
}
