/*
 * journal.c - building and reading the hub's event records (journal.h has
 * the format and every kind's data).
 */
#define _GNU_SOURCE /* timegm */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "journal.h"
#include "json.h"
#include "topic.h"
#include "util.h"

/* clang-format off */
static const char *const kind_names[TH_JOURNAL_KIND_COUNT] = {
    [TH_JOURNAL_OTHER] = NULL,
#define TH_JOURNAL_KIND_NAME(id, name) [TH_JOURNAL_##id] = name,
    TH_JOURNAL_KINDS(TH_JOURNAL_KIND_NAME)
#undef TH_JOURNAL_KIND_NAME
};
/* clang-format on */

const char *th_journal_kind_name(enum th_journal_kind kind)
{
    if ((unsigned)kind >= TH_JOURNAL_KIND_COUNT)
        return NULL;
    return kind_names[kind];
}

enum th_journal_kind th_journal_kind_of(const char *name)
{
    if (name == NULL)
        return TH_JOURNAL_OTHER;
    for (unsigned k = TH_JOURNAL_OTHER + 1; k < TH_JOURNAL_KIND_COUNT; k++)
        if (!strcmp(kind_names[k], name))
            return (enum th_journal_kind)k;
    return TH_JOURNAL_OTHER;
}

/* ---- building ---- */

/*
 * Add an integer member as its decimal text. cJSON 1.7.15 prints every number
 * with "%1.15g" and parses the text back with sscanf to check the round trip
 * (about 0.3 us per number, 6% of the broker's CPU per recorded telemetry
 * message, docs/performance.md); an integer needs neither and prints the same.
 */
static bool add_int(cJSON *obj, const char *key, long long v)
{
    char text[24];
    snprintf(text, sizeof text, "%lld", v);
    return cJSON_AddRawToObject(obj, key, text) != NULL;
}

static bool add_uint(cJSON *obj, const char *key, unsigned long long v)
{
    char text[24];
    snprintf(text, sizeof text, "%llu", v);
    return cJSON_AddRawToObject(obj, key, text) != NULL;
}

static bool add_str(cJSON *obj, const char *key, const char *s)
{
    return cJSON_AddStringToObject(obj, key, s) != NULL;
}

/* A string member, or null when `s` is NULL. */
static bool add_str_or_null(cJSON *obj, const char *key, const char *s)
{
    return s ? add_str(obj, key, s) : cJSON_AddNullToObject(obj, key) != NULL;
}

static bool add_bool(cJSON *obj, const char *key, bool b)
{
    return cJSON_AddBoolToObject(obj, key, b) != NULL;
}

/* Add `item` (taken on every path; NULL is a failed allocation). */
static bool add_item(cJSON *obj, const char *key, cJSON *item)
{
    if (item == NULL)
        return false;
    if (!cJSON_AddItemToObject(obj, key, item)) {
        cJSON_Delete(item);
        return false;
    }
    return true;
}

/* End of a builder: the object when every step worked, else NULL (and nothing kept). */
static cJSON *built(cJSON *obj, bool ok)
{
    if (ok)
        return obj;
    cJSON_Delete(obj);
    return NULL;
}

char *th_journal_record_text(uint64_t seq, int64_t time_us, enum th_journal_kind kind,
                             const char *device_id, const char *module_id, cJSON *data)
{
    const char *name = th_journal_kind_name(kind);
    char when[TH_TIME_BUF];
    cJSON *rec = name ? cJSON_CreateObject() : NULL;
    if (rec == NULL) {
        cJSON_Delete(data);
        return NULL;
    }
    th_time_format(time_us, when);
    bool ok = add_uint(rec, "seq", seq) && add_str(rec, "time", when) &&
              add_str(rec, "kind", name) && add_str_or_null(rec, "deviceId", device_id) &&
              add_str_or_null(rec, "moduleId", module_id);
    if (ok)
        ok = add_item(rec, "data", data ? data : cJSON_CreateObject());
    else
        cJSON_Delete(data);
    char *text = ok ? th_json_print(rec) : NULL;
    cJSON_Delete(rec);
    return text;
}

/* Append one id as a topic level at out[n...] (snprintf-like); returns the new length. */
static size_t put_level(char *out, size_t size, size_t n, const char *id)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *s = (const unsigned char *)id; *s; s++) {
        bool enc = *s < 0x20 || *s >= 0x7F || *s == '+' || *s == '#' || *s == '/';
        char piece[3] = {(char)*s, 0, 0};
        size_t plen = 1;
        if (enc) {
            piece[0] = '%';
            piece[1] = hex[*s >> 4];
            piece[2] = hex[*s & 15];
            plen = 3;
        }
        for (size_t i = 0; i < plen; i++, n++)
            if (n + 1 < size)
                out[n] = piece[i];
    }
    return n;
}

static size_t put_text(char *out, size_t size, size_t n, const char *s)
{
    for (; *s; s++, n++)
        if (n + 1 < size)
            out[n] = *s;
    return n;
}

size_t th_journal_topic(enum th_journal_kind kind, const char *device_id, const char *module_id,
                        char *out, size_t size)
{
    const char *name = th_journal_kind_name(kind);
    size_t n = put_text(out, size, 0, TH_JOURNAL_TOPIC_PREFIX);
    n = put_text(out, size, n, name ? name : "-");
    n = put_text(out, size, n, "/");
    n = put_level(out, size, n, device_id ? device_id : "-");
    if (module_id) {
        n = put_text(out, size, n, "/");
        n = put_level(out, size, n, module_id);
    }
    if (size > 0)
        out[n < size ? n : size - 1] = '\0';
    return n;
}

cJSON *th_journal_data_connected(const struct th_journal_connected *c)
{
    cJSON *o = cJSON_CreateObject();
    bool ok = o && add_str(o, "clientId", c->client_id ? c->client_id : "") &&
              add_str_or_null(o, "apiVersion", c->api_version) &&
              add_str_or_null(o, "clientType", c->client_type) &&
              add_str_or_null(o, "modelId", c->model_id) &&
              add_str(o, "auth",
                      c->auth == TH_JOURNAL_AUTH_SAS_POLICY ? "sas-policy"
                      : c->auth == TH_JOURNAL_AUTH_X509     ? "x509"
                                                            : "sas") &&
              add_bool(o, "cleanSession", c->clean_session);
    return built(o, ok);
}

cJSON *th_journal_data_refused(const char *client_id, const char *reason, const char *username)
{
    cJSON *o = cJSON_CreateObject();
    bool ok = o && add_str(o, "clientId", client_id ? client_id : "") &&
              add_str(o, "reason", reason ? reason : "") &&
              add_str_or_null(o, "username", username);
    return built(o, ok);
}

/*
 * Wire name of a system property -> its name in records; NULL for application
 * properties. `$.sub` (a Plug and Play component) becomes the hub's own name,
 * dt-subject, which readers see next to dt-dataschema (IoT Plug and Play
 * conventions: "add the $.sub property with the component name to the
 * telemetry topic, the system adds the dt-subject property").
 */
static const char *system_name(const char *wire)
{
    static const char *const map[][2] = {
        {"$.mid", "messageId"},        {"$.cid", "correlationId"},  {"$.uid", "userId"},
        {"$.ct", "contentType"},       {"$.ce", "contentEncoding"}, {"$.ctime", "creationTimeUtc"},
        {"$.sub", "dt-subject"},       {"$.ifid", "interfaceId"},   {"$.on", "outputName"},
        {"$.schema", "messageSchema"}, {"$.exp", "expiryTimeUtc"},
    };
    if (strncmp(wire, "$.", 2) != 0)
        return NULL;
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (!strcmp(wire, map[i][0]))
            return map[i][1];
    return wire; /* other $.x keys keep their wire name */
}

const char *th_journal_system_name(const char *wire)
{
    return system_name(wire);
}

/* A string item holding `len` bytes that are known to be text (no NUL); one copy. */
static cJSON *text_item(const void *bytes, size_t len)
{
    char *copy = cJSON_malloc(len + 1);
    if (copy == NULL)
        return NULL;
    memcpy(copy, bytes, len);
    copy[len] = '\0';
    /* A reference item owns nothing; pointing it at our copy and dropping the flag hands the
     * copy to cJSON_Delete (cJSON_CreateString would copy the body a second time). */
    cJSON *item = cJSON_CreateStringReference("");
    if (item == NULL) {
        cJSON_free(copy);
        return NULL;
    }
    item->valuestring = copy;
    item->type &= ~cJSON_IsReference;
    return item;
}

static cJSON *base64_item(const void *bytes, size_t len)
{
    size_t cap = 4 * ((len + 2) / 3) + 1;
    char *b64 = cJSON_malloc(cap);
    if (b64 == NULL)
        return NULL;
    if (th_b64_encode(bytes, len, b64, cap) != TH_OK) {
        cJSON_free(b64);
        return NULL;
    }
    cJSON *item = cJSON_CreateStringReference("");
    if (item == NULL) {
        cJSON_free(b64);
        return NULL;
    }
    item->valuestring = b64;
    item->type &= ~cJSON_IsReference;
    return item;
}

/* systemProperties: the device's, then the ones the hub stamps (after, so they win for readers
 * that take the last; the device cannot send these names: its system names all come from `$.`). */
static cJSON *system_properties(const struct th_journal_telemetry *t)
{
    cJSON *sys = cJSON_CreateObject();
    bool ok = sys != NULL;
    for (size_t i = 0; ok && t->props && i < t->props->count; i++) {
        const char *sname = system_name(t->props->items[i].name);
        if (sname)
            ok = add_str_or_null(sys, sname, t->props->items[i].value);
    }
    if (!ok)
        return built(sys, false);
    char method[128], now[TH_TIME_BUF];
    /* As the hub writes it (docs/protocol.md, "X.509 client certificates"). */
    snprintf(method, sizeof method,
             "{\"scope\":\"%s\",\"type\":\"%s\",\"issuer\":\"%s\","
             "\"acceptingIpFilterRule\":null}",
             t->module_id ? "module" : "device", t->x509 ? "x509Certificate" : "sas",
             t->x509 ? "external" : "iothub");
    th_time_format(t->enqueued_us, now);
    ok = add_str(sys, "iothub-connection-device-id", t->device_id) &&
         (!t->module_id || add_str(sys, "iothub-connection-module-id", t->module_id)) &&
         add_str(sys, "iothub-connection-auth-generation-id",
                 t->generation_id ? t->generation_id : "") &&
         add_str(sys, "iothub-connection-auth-method", method) &&
         add_str(sys, "iothub-enqueuedtime", now) &&
         (!t->model_id || add_str(sys, "dt-dataschema", t->model_id));
    return built(sys, ok);
}

/* properties: the application properties, decoded, then mqtt-retain. */
static cJSON *app_properties(const struct th_journal_telemetry *t)
{
    cJSON *app = cJSON_CreateObject();
    bool ok = app != NULL;
    for (size_t i = 0; ok && t->props && i < t->props->count; i++)
        if (!system_name(t->props->items[i].name))
            ok = add_str_or_null(app, t->props->items[i].name, t->props->items[i].value);
    if (ok && t->retain)
        ok = add_str(app, "mqtt-retain", "true");
    return built(app, ok);
}

cJSON *th_journal_data_telemetry(const struct th_journal_telemetry *t)
{
    static const char empty[1] = "";
    const void *body = t->body ? t->body : (const void *)empty;
    size_t len = t->body ? t->len : 0;
    cJSON *o = cJSON_CreateObject();
    bool ok = o && add_str(o, "topic", t->topic ? t->topic : "") && add_int(o, "qos", t->qos) &&
              add_bool(o, "retain", t->retain) &&
              add_item(o, "systemProperties", system_properties(t)) &&
              add_item(o, "properties", app_properties(t));
    if (ok && len && th_utf8_is_text(body, len))
        ok = add_item(o, "body", text_item(body, len));
    ok = ok && add_item(o, "bodyBase64", base64_item(body, len)) &&
         add_uint(o, "size", (unsigned long long)len);
    return built(o, ok);
}

cJSON *th_journal_data_reported(cJSON *patch, int64_t version)
{
    cJSON *o = cJSON_CreateObject();
    if (o == NULL) {
        cJSON_Delete(patch);
        return NULL;
    }
    bool ok = add_item(o, "patch", patch) && add_int(o, "version", version);
    return built(o, ok);
}

cJSON *th_journal_data_reported_refused(cJSON *patch, const struct th_error *err)
{
    cJSON *o = cJSON_CreateObject();
    if (o == NULL) {
        cJSON_Delete(patch);
        return NULL;
    }
    bool ok = (patch == NULL || add_item(o, "patch", patch)) &&
              add_str(o, "error", err ? err->message : "") &&
              add_int(o, "status", err ? err->status : 500) &&
              add_int(o, "errorCode", err ? err->code : TH_EC_SERVER_ERROR);
    return built(o, ok);
}

cJSON *th_journal_data_desired(cJSON *patch, int64_t version, bool delivered)
{
    cJSON *o = cJSON_CreateObject();
    if (o == NULL) {
        cJSON_Delete(patch);
        return NULL;
    }
    bool ok = add_item(o, "patch", patch) && add_int(o, "version", version) &&
              add_bool(o, "delivered", delivered);
    return built(o, ok);
}

cJSON *th_journal_data_twin_get(int status)
{
    cJSON *o = cJSON_CreateObject();
    return built(o, o && add_int(o, "status", status));
}

cJSON *th_journal_data_method(const char *method_name, uint64_t request_id, const cJSON *result,
                              const struct th_error *err)
{
    cJSON *o = cJSON_CreateObject();
    char rid[24];
    snprintf(rid, sizeof rid, "%llu", (unsigned long long)request_id);
    bool ok = o && add_str(o, "methodName", method_name ? method_name : "") &&
              add_str(o, "requestId", rid);
    if (ok && err) {
        ok = add_str(o, "error", err->message) && add_int(o, "errorCode", err->code);
    } else {
        /* The answer as the caller got it: status, payload or the raw body. */
        for (const cJSON *it = result ? result->child : NULL; ok && it; it = it->next)
            ok = add_item(o, it->string, cJSON_Duplicate(it, 1));
    }
    return built(o, ok);
}

cJSON *th_journal_data_c2d(const char *message_id, bool delivered, size_t queued)
{
    cJSON *o = cJSON_CreateObject();
    bool ok = o && add_str(o, "messageId", message_id ? message_id : "") &&
              add_bool(o, "delivered", delivered) &&
              add_uint(o, "queued", (unsigned long long)queued);
    return built(o, ok);
}

cJSON *th_journal_data_protocol_error(const char *topic, const char *reason)
{
    cJSON *o = cJSON_CreateObject();
    bool ok =
        o && add_str(o, "topic", topic ? topic : "") && add_str(o, "reason", reason ? reason : "");
    return built(o, ok);
}

cJSON *th_journal_data_mark(const cJSON *data)
{
    return data ? cJSON_Duplicate(data, 1) : cJSON_CreateObject();
}

cJSON *th_journal_data_registration(const struct th_journal_registration *r)
{
    cJSON *o = cJSON_CreateObject();
    bool ok = o && cJSON_AddStringToObject(o, "registrationId", r->registration_id) &&
              cJSON_AddStringToObject(o, "transport", r->transport ? r->transport : "mqtt") &&
              cJSON_AddNumberToObject(o, "status", r->status);
    if (ok && r->device_id) {
        ok = cJSON_AddStringToObject(o, "deviceId", r->device_id) &&
             (r->enrollment_group_id
                  ? cJSON_AddStringToObject(o, "enrollmentGroupId", r->enrollment_group_id)
                  : cJSON_AddNullToObject(o, "enrollmentGroupId")) &&
             cJSON_AddStringToObject(o, "substatus", r->substatus ? r->substatus : "") &&
             cJSON_AddBoolToObject(o, "created", r->created);
        if (ok && r->payload) {
            cJSON *p = cJSON_Duplicate(r->payload, 1);
            ok = p && cJSON_AddItemToObject(o, "payload", p);
            if (!ok)
                cJSON_Delete(p);
        }
    }
    if (ok && r->error)
        ok = cJSON_AddStringToObject(o, "error", r->error) != NULL;
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* ---- reading ---- */

/* A record's number as an integer, clamped to +-2^53 (see journal.h). */
static int64_t clamped(const cJSON *j)
{
    double v = j->valuedouble;
    if (!(v >= -9007199254740992.0))
        return -INT64_C(9007199254740992);
    if (v > 9007199254740992.0)
        return INT64_C(9007199254740992);
    return (int64_t)v;
}

static bool digits(const char *p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        v = v * 10 + (p[i] - '0');
    }
    *out = v;
    return true;
}

th_result th_journal_time_parse(const char *text, int64_t *out_us)
{
    int y, mo, d, h, mi, s;
    if (!text || strlen(text) < 20 || !digits(text, 4, &y) || text[4] != '-' ||
        !digits(text + 5, 2, &mo) || text[7] != '-' || !digits(text + 8, 2, &d) ||
        text[10] != 'T' || !digits(text + 11, 2, &h) || text[13] != ':' ||
        !digits(text + 14, 2, &mi) || text[16] != ':' || !digits(text + 17, 2, &s))
        return TH_ERR_FORMAT;
    const char *p = text + 19;
    int64_t frac = 0;
    if (*p == '.') {
        int n = 0;
        p++;
        while (*p >= '0' && *p <= '9') {
            if (n < 6)
                frac = frac * 10 + (*p - '0');
            n++;
            p++;
        }
        if (n == 0)
            return TH_ERR_FORMAT;
        for (; n < 6; n++)
            frac *= 10;
    }
    /* Year 0000 is not a time the hub writes: th_time_format prints years 0001-9999 only (it
     * would print TH_TIME_NEVER, and a record read back would not be the record read). */
    if (strcmp(p, "Z") != 0 || y < 1 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 ||
        s > 60)
        return TH_ERR_FORMAT;
    struct tm tm = {.tm_year = y - 1900,
                    .tm_mon = mo - 1,
                    .tm_mday = d,
                    .tm_hour = h,
                    .tm_min = mi,
                    .tm_sec = s};
    time_t t = timegm(&tm);
    if (t == (time_t)-1 && !(y == 1969 && mo == 12 && d == 31))
        return TH_ERR_FORMAT;
    *out_us = (int64_t)t * 1000000 + frac;
    return TH_OK;
}

static const char *str_member(const cJSON *obj, const char *key)
{
    return th_json_string(obj, key, NULL);
}

/* The member if it is present as an object, else NULL. */
static const cJSON *obj_member(const cJSON *obj, const char *key)
{
    return th_json_object(obj, key);
}

/* Fill out->as for the kinds readers decide on; data is an object. */
static void read_data(struct th_journal_record *out, const cJSON *data)
{
    const cJSON *n;
    switch (out->kind) {
    case TH_JOURNAL_REFUSED:
        out->as.refused.reason = str_member(data, "reason");
        break;
    case TH_JOURNAL_REPORTED:
        out->as.reported.patch = obj_member(data, "patch");
        n = cJSON_GetObjectItemCaseSensitive(data, "version");
        out->as.reported.accepted = cJSON_IsNumber(n);
        out->as.reported.version = cJSON_IsNumber(n) ? clamped(n) : 0;
        break;
    case TH_JOURNAL_TELEMETRY:
        out->as.telemetry.topic = str_member(data, "topic");
        out->as.telemetry.body = str_member(data, "body");
        out->as.telemetry.properties = obj_member(data, "properties");
        out->as.telemetry.system_properties = obj_member(data, "systemProperties");
        break;
    case TH_JOURNAL_METHOD:
        out->as.method.method_name = str_member(data, "methodName");
        break;
    case TH_JOURNAL_C2D:
        out->as.c2d.message_id = str_member(data, "messageId");
        out->as.c2d.delivered = th_json_bool(data, "delivered", false);
        break;
    case TH_JOURNAL_MARK:
        out->as.mark.scenario = str_member(data, "scenario");
        out->as.mark.file = str_member(data, "file");
        out->as.mark.step = str_member(data, "step");
        out->as.mark.action = str_member(data, "action");
        n = cJSON_GetObjectItemCaseSensitive(data, "index");
        out->as.mark.has_index = cJSON_IsNumber(n);
        out->as.mark.index = cJSON_IsNumber(n) ? clamped(n) : 0;
        break;
    default:
        break;
    }
}

static th_result not_a_record(struct th_error *err, const char *what)
{
    return th_error_set(err, TH_ERR_FORMAT, 0,
                        "not an event record: %s; a record is one JSON object with seq (a "
                        "number), time (ISO 8601 UTC), kind, deviceId, moduleId and data "
                        "(docs/recording.md)",
                        what);
}

th_result th_journal_parse(const cJSON *record, struct th_journal_record *out, struct th_error *err)
{
    memset(out, 0, sizeof *out);
    if (!cJSON_IsObject(record))
        return not_a_record(err, "not a JSON object");
    const cJSON *seq = cJSON_GetObjectItemCaseSensitive(record, "seq");
    const char *kind = str_member(record, "kind");
    const char *time = str_member(record, "time");
    const cJSON *dev = cJSON_GetObjectItemCaseSensitive(record, "deviceId");
    const cJSON *mod = cJSON_GetObjectItemCaseSensitive(record, "moduleId");
    if (!cJSON_IsNumber(seq))
        return not_a_record(err, "seq is not a number");
    if (!kind)
        return not_a_record(err, "kind is not a string");
    if (th_journal_time_parse(time, &out->time_us) != TH_OK)
        return not_a_record(err, "time is not an ISO 8601 UTC time");
    if (dev && !cJSON_IsString(dev) && !cJSON_IsNull(dev))
        return not_a_record(err, "deviceId is neither a string nor null");
    if (mod && !cJSON_IsString(mod) && !cJSON_IsNull(mod))
        return not_a_record(err, "moduleId is neither a string nor null");
    out->seq = clamped(seq);
    out->kind = th_journal_kind_of(kind);
    out->kind_name = kind;
    out->device_id = cJSON_IsString(dev) ? dev->valuestring : NULL;
    out->module_id = cJSON_IsString(mod) ? mod->valuestring : NULL;
    out->data = cJSON_GetObjectItemCaseSensitive(record, "data");
    if (cJSON_IsObject(out->data))
        read_data(out, out->data);
    return TH_OK;
}

th_result th_journal_parse_text(const char *text, size_t len, size_t max_bytes, int max_depth,
                                cJSON **json, struct th_journal_record *out, struct th_error *err)
{
    struct th_error e = {0};
    th_result r = th_json_parse(text, len, max_bytes, max_depth, json, &e);
    if (r != TH_OK) {
        memset(out, 0, sizeof *out);
        return th_error_set(err, r, 0,
                            "not an event record (one JSON object per line, docs/recording.md): "
                            "%s",
                            e.message);
    }
    r = th_journal_parse(*json, out, err);
    if (r != TH_OK) {
        cJSON_Delete(*json);
        *json = NULL;
    }
    return r;
}

cJSON *th_journal_method_answer(const struct th_journal_record *rec)
{
    if (rec->kind != TH_JOURNAL_METHOD)
        return NULL;
    const cJSON *data = rec->data;
    cJSON *out = cJSON_CreateObject();
    bool ok = out != NULL;
    const cJSON *error = cJSON_GetObjectItemCaseSensitive(data, "error");
    if (ok && error) {
        const cJSON *code = cJSON_GetObjectItemCaseSensitive(data, "errorCode");
        ok = add_item(out, "error", cJSON_Duplicate(error, 1)) &&
             (!code || add_item(out, "errorCode", cJSON_Duplicate(code, 1)));
    } else if (ok) {
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(data, "status");
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(data, "payload");
        ok = add_item(out, "status", s ? cJSON_Duplicate(s, 1) : cJSON_CreateNull()) &&
             add_item(out, "payload", p ? cJSON_Duplicate(p, 1) : cJSON_CreateNull());
        /* A body that is not JSON (core/method.h): the caller saw these instead. */
        static const char *const raw[] = {"rawPayload", "rawPayloadBase64", "payloadError"};
        for (size_t i = 0; ok && i < sizeof raw / sizeof raw[0]; i++) {
            const cJSON *r = cJSON_GetObjectItemCaseSensitive(data, raw[i]);
            if (r)
                ok = add_item(out, raw[i], cJSON_Duplicate(r, 1));
        }
    }
    return built(out, ok);
}
