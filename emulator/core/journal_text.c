/*
 * journal_text.c - the telemetry event record written straight as text.
 *
 * A telemetry record is the one record the hub writes per device message, so
 * it is the one whose cost is per message (docs/performance.md, "The event
 * stream with a subscriber"). th_journal_record_text(th_journal_data_telemetry())
 * builds it as a cJSON tree of about 30 items and prints it: some 30 mallocs
 * and frees and a second walk. This file writes the same bytes into one
 * buffer, sized before the first byte is written. journal.c stays the
 * definition of the format: tests/unit/test_journal.c compares the two paths
 * byte for byte on many random messages, and any change to the telemetry
 * record must be made in both.
 */
#include <stdlib.h>
#include <string.h>

#include "journal.h"
#include "jsonw.h"
#include "topic.h"
#include "util.h"

/* A string literal as it is. */
#define RAW(w, lit) th_jsonw_raw((w), lit, sizeof(lit) - 1)

/* A NUL-terminated string as a JSON string, or null for NULL. */
static void put_str_or_null(struct th_jsonw *w, const char *s)
{
    if (s)
        th_jsonw_string(w, s, strlen(s));
    else
        RAW(w, "null");
}

/* `,"key":` for a key that needs no escaping (the record's own names). */
#define PUT_KEY(w, lit) th_jsonw_raw((w), "," lit ":", sizeof(lit) + 1)

/* Upper bound of a NUL-terminated string's JSON size (6 bytes per byte, quotes). */
static size_t bound(const char *s)
{
    return s ? 6 * strlen(s) + 2 : 4;
}

/* The record-side names of the first properties (th_journal_system_name), looked up once. */
#define NAMES_CACHED 32
struct sys_names {
    const char *name[NAMES_CACHED];
};

static const char *sys_name(const struct th_journal_telemetry *t, const struct sys_names *c,
                            size_t i)
{
    return i < NAMES_CACHED ? c->name[i] : th_journal_system_name(t->props->items[i].name);
}

/* True when `len` bytes are ASCII without NUL (so UTF-8 text), eight at a time; a body that is
 * not gets the full UTF-8 check (th_utf8_is_text). */
static bool ascii_text(const char *s, size_t len)
{
    const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
    size_t i = 0;
    for (; len - i >= 8; i += 8) {
        uint64_t x;
        memcpy(&x, s + i, 8);
        if ((x & highs) || ((x - ones) & ~x & highs))
            return false;
    }
    for (; i < len; i++)
        if (s[i] == 0 || (unsigned char)s[i] >= 0x80)
            return false;
    return true;
}

/* The device's system properties and then the hub's, as system_properties() in journal.c. */
static void put_system_properties(struct th_jsonw *w, const struct th_journal_telemetry *t,
                                  const struct sys_names *names)
{
    bool first = true;
    RAW(w, "{");
    for (size_t i = 0; t->props && i < t->props->count; i++) {
        const char *sname = sys_name(t, names, i);
        if (!sname)
            continue;
        if (!first)
            RAW(w, ",");
        first = false;
        th_jsonw_string(w, sname, strlen(sname));
        RAW(w, ":");
        put_str_or_null(w, t->props->items[i].value);
    }
    char now[TH_TIME_BUF];
    th_time_format(t->enqueued_us, now);
    if (!first)
        RAW(w, ",");
    RAW(w, "\"iothub-connection-device-id\":");
    th_jsonw_string(w, t->device_id, strlen(t->device_id));
    if (t->module_id) {
        PUT_KEY(w, "\"iothub-connection-module-id\"");
        th_jsonw_string(w, t->module_id, strlen(t->module_id));
    }
    PUT_KEY(w, "\"iothub-connection-auth-generation-id\"");
    put_str_or_null(w, t->generation_id ? t->generation_id : "");
    /* The auth method as journal.c's snprintf writes it, escaped as a JSON string. */
    PUT_KEY(w, "\"iothub-connection-auth-method\"");
    RAW(w, "\"{\\\"scope\\\":\\\"");
    if (t->module_id)
        RAW(w, "module");
    else
        RAW(w, "device");
    RAW(w, "\\\",\\\"type\\\":\\\"");
    if (t->x509)
        RAW(w, "x509Certificate");
    else
        RAW(w, "sas");
    RAW(w, "\\\",\\\"issuer\\\":\\\"");
    if (t->x509)
        RAW(w, "external");
    else
        RAW(w, "iothub");
    RAW(w, "\\\",\\\"acceptingIpFilterRule\\\":null}\"");
    PUT_KEY(w, "\"iothub-enqueuedtime\"");
    th_jsonw_string(w, now, strlen(now));
    if (t->model_id) {
        PUT_KEY(w, "\"dt-dataschema\"");
        th_jsonw_string(w, t->model_id, strlen(t->model_id));
    }
    RAW(w, "}");
}

/* The application properties, then mqtt-retain, as app_properties() in journal.c. */
static void put_app_properties(struct th_jsonw *w, const struct th_journal_telemetry *t,
                               const struct sys_names *names)
{
    bool first = true;
    RAW(w, "{");
    for (size_t i = 0; t->props && i < t->props->count; i++) {
        const char *name = t->props->items[i].name;
        if (sys_name(t, names, i))
            continue;
        if (!first)
            RAW(w, ",");
        first = false;
        th_jsonw_string(w, name, strlen(name));
        RAW(w, ":");
        put_str_or_null(w, t->props->items[i].value);
    }
    if (t->retain) {
        if (!first)
            RAW(w, ",");
        RAW(w, "\"mqtt-retain\":\"true\"");
    }
    RAW(w, "}");
}

char *th_journal_telemetry_record_text(uint64_t seq, int64_t time_us,
                                       const struct th_journal_telemetry *t, size_t *out_len)
{
    static const char empty[1] = "";
    const char *body = t->body ? (const char *)t->body : empty;
    size_t len = t->body ? t->len : 0;
    if (t->device_id == NULL)
        return NULL; /* the tree path refuses a NULL string member too */
    bool text = len && (ascii_text(body, len) || th_utf8_is_text(body, len));
    size_t b64 = 4 * ((len + 2) / 3);
    /* The worst case for a small body, the exact size for a large one (up to 256 KB). */
    size_t body_size = !text ? 0 : len <= 16384 ? 6 * len + 2 : th_jsonw_string_size(body, len);
    struct sys_names names;

    /* One allocation: the fixed text (names, times, the auth method) is under 700 bytes; every
     * variable string is bounded by its escaped size. */
    size_t size = 700 + b64 + body_size + bound(t->topic) + 2 * bound(t->device_id) +
                  2 * bound(t->module_id) + bound(t->generation_id) + bound(t->model_id);
    for (size_t i = 0; t->props && i < t->props->count; i++) {
        size += bound(t->props->items[i].name) + bound(t->props->items[i].value) + 32;
        if (i < NAMES_CACHED)
            names.name[i] = th_journal_system_name(t->props->items[i].name);
    }
    struct th_jsonw w = {0};
    if (!th_jsonw_reserve(&w, size))
        return NULL;

    char when[TH_TIME_BUF];
    th_time_format(time_us, when);
    RAW(&w, "{\"seq\":");
    th_jsonw_u64(&w, seq);
    PUT_KEY(&w, "\"time\"");
    th_jsonw_string(&w, when, strlen(when));
    RAW(&w, ",\"kind\":\"telemetry\",\"deviceId\":");
    put_str_or_null(&w, t->device_id);
    PUT_KEY(&w, "\"moduleId\"");
    put_str_or_null(&w, t->module_id);
    RAW(&w, ",\"data\":{\"topic\":");
    put_str_or_null(&w, t->topic ? t->topic : "");
    PUT_KEY(&w, "\"qos\"");
    th_jsonw_i64(&w, t->qos);
    if (t->retain)
        RAW(&w, ",\"retain\":true");
    else
        RAW(&w, ",\"retain\":false");
    PUT_KEY(&w, "\"systemProperties\"");
    put_system_properties(&w, t, &names);
    PUT_KEY(&w, "\"properties\"");
    put_app_properties(&w, t, &names);
    if (text) {
        PUT_KEY(&w, "\"body\"");
        th_jsonw_string(&w, body, len);
    }
    PUT_KEY(&w, "\"bodyBase64\"");
    /* base64 needs no escaping: encode in place between the quotes. */
    if (th_jsonw_reserve(&w, b64 + 3)) {
        w.p[w.len++] = '"';
        if (th_b64_encode((const uint8_t *)body, len, w.p + w.len, b64 + 1) != TH_OK)
            w.failed = true;
        w.len += b64;
        w.p[w.len++] = '"';
    }
    PUT_KEY(&w, "\"size\"");
    th_jsonw_u64(&w, len);
    RAW(&w, "}}");
    return th_jsonw_finish(&w, out_len);
}
