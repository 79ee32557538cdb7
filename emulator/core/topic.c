/*
 * topic.c - device-facing MQTT names (iothub-protocol.md sections 1, 3.2,
 * 3.6, 3.10, 4.1, 5.1, 6, 8.1; real-clients.md sections 0 and 2): the CONNECT
 * username, the topics a device publishes, the subscription filters it may
 * use, the URL-encoded property bag of telemetry and C2D, and the topics the
 * hub publishes.
 *
 * Parsers return slices of their input; only property bags allocate.
 */
#include "topic.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "th_limits.h"
#include "util.h"

/* ---- small slice helpers ---- */

static bool starts_with(const char *s, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);
    return len >= n && memcmp(s, prefix, n) == 0;
}

/* Find `needle` in [s, s+len); NULL when absent. */
static const char *find(const char *s, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    if (n > len)
        return NULL;
    for (size_t i = 0; i + n <= len; i++) {
        if (memcmp(s + i, needle, n) == 0)
            return s + i;
    }
    return NULL;
}

/*
 * Value of `key` in a query "k=v&k2=v2" (first occurrence), as a slice of
 * the query; ptr NULL when absent. A key without '=' has an empty value.
 */
static struct th_slice query_get(const char *q, size_t len, const char *key)
{
    struct th_slice none = {NULL, 0};
    size_t klen = strlen(key);
    const char *p = q;
    const char *end = q + len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *item_end = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(item_end - p));
        const char *key_end = eq ? eq : item_end;
        if ((size_t)(key_end - p) == klen && memcmp(p, key, klen) == 0) {
            struct th_slice v = {eq ? eq + 1 : item_end, eq ? (size_t)(item_end - eq - 1) : 0};
            return v;
        }
        p = amp ? amp + 1 : end;
    }
    return none;
}

/* ---- CONNECT username ---- */

th_result th_username_parse(const char *username, size_t len, struct th_username *out,
                            struct th_error *err)
{
    memset(out, 0, sizeof(*out));
    if (username == NULL || len == 0)
        return th_error_set(err, TH_ERR_FORMAT, 0,
                            "MQTT username is empty; expected {host}/{deviceId}/?api-version=...");

    /* Split at the first "/?", else at the legacy "/api-version=". */
    const char *ids_end = username + len;
    const char *query = NULL;
    size_t query_len = 0;
    const char *q = find(username, len, "/?");
    if (q != NULL) {
        ids_end = q;
        query = q + 2;
    } else if ((q = find(username, len, "/api-version=")) != NULL) {
        ids_end = q;
        query = q + 1;
    }
    if (query != NULL)
        query_len = (size_t)(username + len - query);

    /* {host}/{d} or {host}/{d}/{m}, with an optional trailing '/'. */
    size_t ids_len = (size_t)(ids_end - username);
    if (ids_len > 0 && username[ids_len - 1] == '/')
        ids_len--;
    struct th_slice seg[4];
    size_t nseg = 0;
    const char *p = username;
    const char *end = username + ids_len;
    while (nseg < 4) {
        const char *slash = memchr(p, '/', (size_t)(end - p));
        const char *seg_end = slash ? slash : end;
        seg[nseg].ptr = p;
        seg[nseg].len = (size_t)(seg_end - p);
        nseg++;
        if (slash == NULL)
            break;
        p = slash + 1;
    }
    if (nseg < 2 || nseg > 3 || seg[0].len == 0)
        return th_error_set(
            err, TH_ERR_FORMAT, 0,
            "MQTT username '%.*s' is not {host}/{deviceId}[/{moduleId}]/?api-version=...",
            (int)(len > 160 ? 160 : len), username);
    for (size_t i = 1; i < nseg; i++) {
        if (!th_id_valid(seg[i].ptr, seg[i].len))
            return th_error_set(err, TH_ERR_FORMAT, 0, "MQTT username has an invalid %s id '%.*s'",
                                i == 1 ? "device" : "module",
                                (int)(seg[i].len > 140 ? 140 : seg[i].len), seg[i].ptr);
    }
    out->host = seg[0];
    out->device_id = seg[1];
    if (nseg == 3)
        out->module_id = seg[2];

    if (query != NULL) {
        out->api_version = query_get(query, query_len, "api-version");
        out->client_type = query_get(query, query_len, "DeviceClientType");
        out->model_id = query_get(query, query_len, "model-id");
    }
    return TH_OK;
}

bool th_id_valid(const char *id, size_t len)
{
    if (id == NULL || len == 0 || len > TH_MAX_ID_LEN)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = id[i];
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
            continue;
        if (c == '\0' || strchr("-.+%_#*?!(),=@$':;", c) == NULL)
            return false;
    }
    return true;
}

/* ---- topics a device publishes ---- */

/*
 * $rid from the query that follows "/?" at `q`. "$rid" may arrive encoded as
 * "%24rid" (the '$' of system keys is encoded by some SDKs in bags).
 */
static bool rid_from_query(const char *q, size_t len, struct th_slice *rid)
{
    struct th_slice v = query_get(q, len, "$rid");
    if (v.ptr == NULL)
        v = query_get(q, len, "%24rid");
    if (v.ptr == NULL || v.len == 0)
        return false;
    *rid = v;
    return true;
}

/*
 * $version from the query of a reported PATCH (also "%24version"); ptr NULL
 * when absent. Only the Java device SDK sends it, as a precondition.
 */
static struct th_slice version_from_query(const char *q, size_t len)
{
    struct th_slice v = query_get(q, len, "$version");
    return v.ptr != NULL ? v : query_get(q, len, "%24version");
}

th_result th_topic_version_value(struct th_slice version, long long *out)
{
    size_t i = version.len > 0 && version.ptr[0] == '-' ? 1 : 0;
    long long v = 0;
    if (version.ptr == NULL || version.len <= i || version.len - i > 18)
        return TH_ERR_INVAL;
    for (size_t k = i; k < version.len; k++) {
        if (version.ptr[k] < '0' || version.ptr[k] > '9')
            return TH_ERR_INVAL;
        v = v * 10 + (version.ptr[k] - '0');
    }
    *out = i ? -v : v;
    return TH_OK;
}

/*
 * Telemetry after "devices/{d}/" or "devices/{d}/modules/{m}/": accepts
 * "messages/events", "messages/events/" and "messages/events/{bag}" where
 * the bag may start with '?' and may end with one '/' (some SDKs append it).
 */
static bool parse_events(const char *s, size_t len, struct th_topic *out)
{
    static const char ev[] = "messages/events";
    const size_t evlen = sizeof(ev) - 1;
    if (!starts_with(s, len, ev))
        return false;
    if (len == evlen)
        return true;
    if (s[evlen] != '/')
        return false;
    const char *bag = s + evlen + 1;
    size_t bag_len = len - evlen - 1;
    if (bag_len > 0 && bag[0] == '?') {
        bag++;
        bag_len--;
    }
    if (bag_len > 0 && bag[bag_len - 1] == '/')
        bag_len--;
    out->props.ptr = bag;
    out->props.len = bag_len;
    return true;
}

static th_result parse_telemetry(const char *topic, size_t len, struct th_topic *out)
{
    const char *p = topic + strlen("devices/");
    const char *end = topic + len;
    const char *slash = memchr(p, '/', (size_t)(end - p));
    if (slash == NULL || slash == p)
        return TH_ERR_INVAL;
    struct th_slice dev = {p, (size_t)(slash - p)};
    p = slash + 1;

    struct th_slice mod = {NULL, 0};
    if (starts_with(p, (size_t)(end - p), "modules/")) {
        p += strlen("modules/");
        slash = memchr(p, '/', (size_t)(end - p));
        if (slash == NULL || slash == p)
            return TH_ERR_INVAL;
        mod.ptr = p;
        mod.len = (size_t)(slash - p);
        p = slash + 1;
    }
    if (!parse_events(p, (size_t)(end - p), out))
        return TH_ERR_INVAL;
    out->kind = TH_TOPIC_TELEMETRY;
    out->device_id = dev;
    out->module_id = mod;
    return TH_OK;
}

/*
 * The device application chooses the status (iot-hub-devguide-direct-methods:
 * "the device-supplied status of method execution") and the service API
 * carries it as an int32 (CloudToDeviceMethodResult.status); the full C SDK
 * prints an int with %d, so -1 is common (its samples answer an unknown
 * method with -1). Leading zeros are accepted; the value must fit int32.
 */
bool th_method_status_parse(const char *s, size_t len, int32_t *out)
{
    if (s == NULL || len == 0)
        return false;
    bool neg = s[0] == '-';
    size_t i = neg ? 1 : 0;
    if (i == len)
        return false;
    /* Accumulate the magnitude; INT32_MIN's is one more than INT32_MAX. */
    const int64_t limit = neg ? -(int64_t)INT32_MIN : (int64_t)INT32_MAX;
    int64_t v = 0;
    for (; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
        if (v > limit)
            return false;
    }
    *out = (int32_t)(neg ? -v : v);
    return true;
}

/*
 * After a recognised prefix: "" or "/" (no $rid: TH_ERR_INVAL with the kind
 * set), "/?{query}" with $rid (TH_OK), anything else is not this topic.
 */
static th_result parse_rid_tail(const char *s, size_t len, enum th_topic_kind kind,
                                struct th_topic *out)
{
    if (len == 0 || (len == 1 && s[0] == '/')) {
        out->kind = kind;
        return TH_ERR_INVAL;
    }
    if (!starts_with(s, len, "/?"))
        return TH_ERR_INVAL;
    out->kind = kind;
    return rid_from_query(s + 2, len - 2, &out->rid) ? TH_OK : TH_ERR_INVAL;
}

/*
 * On a recognised twin or method topic without a usable $rid, out->kind is
 * still set so the caller can tell "bad request" from "unknown topic".
 */
th_result th_topic_parse(const char *topic, size_t len, struct th_topic *out)
{
    static const char twin_get[] = "$iothub/twin/GET";
    static const char twin_rep[] = "$iothub/twin/PATCH/properties/reported";
    static const char meth_res[] = "$iothub/methods/res/";

    memset(out, 0, sizeof(*out));
    if (topic == NULL)
        return TH_ERR_INVAL;

    if (starts_with(topic, len, "devices/")) {
        th_result r = parse_telemetry(topic, len, out);
        if (r != TH_OK)
            memset(out, 0, sizeof(*out));
        return r;
    }
    if (starts_with(topic, len, twin_get)) {
        size_t n = sizeof(twin_get) - 1;
        return parse_rid_tail(topic + n, len - n, TH_TOPIC_TWIN_GET, out);
    }
    if (starts_with(topic, len, twin_rep)) {
        size_t n = sizeof(twin_rep) - 1;
        th_result r = parse_rid_tail(topic + n, len - n, TH_TOPIC_TWIN_PATCH_REPORTED, out);
        if (r == TH_OK)
            out->version = version_from_query(topic + n + 2, len - n - 2);
        return r;
    }
    if (starts_with(topic, len, meth_res)) {
        const char *p = topic + sizeof(meth_res) - 1;
        const char *end = topic + len;
        const char *slash = memchr(p, '/', (size_t)(end - p));
        const char *status_end = slash ? slash : end;
        th_result r =
            parse_rid_tail(status_end, (size_t)(end - status_end), TH_TOPIC_METHOD_RESPONSE, out);
        if (out->kind == TH_TOPIC_METHOD_RESPONSE) {
            out->status_text.ptr = p;
            out->status_text.len = (size_t)(status_end - p);
            out->status_ok = th_method_status_parse(p, out->status_text.len, &out->status);
        }
        return r;
    }
    return TH_ERR_INVAL;
}

/* ---- subscription filters ---- */

/* `filter` == prefix + id + suffix, with id exactly `want` (or "+" if plus_ok). */
static bool match_id_filter(const char *filter, const char *prefix, const char *want, bool plus_ok,
                            const char *suffix)
{
    size_t plen = strlen(prefix), slen = strlen(suffix), flen = strlen(filter);
    if (flen < plen + slen + 1 || memcmp(filter, prefix, plen) != 0 ||
        memcmp(filter + flen - slen, suffix, slen) != 0)
        return false;
    const char *id = filter + plen;
    size_t id_len = flen - plen - slen;
    if (plus_ok && id_len == 1 && id[0] == '+')
        return true;
    return want != NULL && strlen(want) == id_len && memcmp(id, want, id_len) == 0;
}

enum th_sub_kind th_sub_classify(const char *filter, const char *device_id, const char *module_id)
{
    if (filter == NULL || device_id == NULL)
        return TH_SUB_DENIED;
    if (strcmp(filter, "$iothub/twin/res/#") == 0)
        return TH_SUB_TWIN_RES;
    if (strcmp(filter, "$iothub/twin/PATCH/properties/desired/#") == 0)
        return TH_SUB_DESIRED;
    if (strcmp(filter, "$iothub/methods/POST/#") == 0)
        return TH_SUB_METHODS;

    static const char post[] = "$iothub/methods/POST/";
    size_t flen = strlen(filter);
    if (strncmp(filter, post, sizeof(post) - 1) == 0 && flen > sizeof(post) - 1 + 2 &&
        strcmp(filter + flen - 2, "/#") == 0) {
        /* A per-method filter "$iothub/methods/POST/{name}/#". */
        size_t nlen = flen - (sizeof(post) - 1) - 2;
        char name[256];
        if (nlen < sizeof(name)) {
            memcpy(name, filter + sizeof(post) - 1, nlen);
            name[nlen] = '\0';
            if (th_method_name_valid(name))
                return TH_SUB_METHODS;
        }
        return TH_SUB_DENIED;
    }

    if (module_id == NULL) {
        /* azure-sdk-for-c subscribes to C2D with '+' instead of its own id. */
        if (match_id_filter(filter, "devices/", device_id, true, "/messages/devicebound/#"))
            return TH_SUB_C2D;
        return TH_SUB_DENIED;
    }

    char prefix[sizeof("devices/") + TH_MAX_ID_LEN + sizeof("/modules/")];
    int n = snprintf(prefix, sizeof(prefix), "devices/%s/modules/", device_id);
    if (n < 0 || (size_t)n >= sizeof(prefix))
        return TH_SUB_DENIED;
    if (match_id_filter(filter, prefix, module_id, false, "/#") ||
        match_id_filter(filter, prefix, module_id, false, "/inputs/#"))
        return TH_SUB_MODULE_INPUTS;
    return TH_SUB_DENIED;
}

/* ---- property bags ---- */

void th_props_free(struct th_props *props)
{
    if (props == NULL)
        return;
    for (size_t i = 0; i < props->count; i++) {
        free(props->items[i].name);
        free(props->items[i].value);
    }
    free(props->items);
    props->items = NULL;
    props->count = 0;
}

/* Percent-decode into a malloc'd string; '+' stays '+'. Encoded NULs are refused. */
static th_result decode_dup(const char *s, size_t len, char **out)
{
    *out = NULL;
    char *buf = malloc(len + 1); /* decoding never grows */
    if (buf == NULL)
        return TH_ERR_NOMEM;
    size_t n = 0;
    if (th_pct_decode(s, len, false, buf, len + 1, &n) != TH_OK || memchr(buf, '\0', n) != NULL) {
        free(buf);
        return TH_ERR_FORMAT;
    }
    *out = buf;
    return TH_OK;
}

th_result th_props_parse(const char *bag, size_t len, struct th_props *out)
{
    out->items = NULL;
    out->count = 0;
    if (bag == NULL || len == 0)
        return TH_OK;
    if (bag[0] == '?') {
        bag++;
        len--;
    }

    size_t cap = 1;
    for (size_t i = 0; i < len; i++)
        cap += bag[i] == '&';
    struct th_props tmp = {calloc(cap, sizeof(struct th_prop)), 0};
    if (tmp.items == NULL)
        return TH_ERR_NOMEM;

    const char *p = bag;
    const char *end = bag + len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *item_end = amp ? amp : end;
        const char *next = amp ? amp + 1 : end;
        if (item_end == p) { /* "a=1&&b=2" or a trailing '&' */
            p = next;
            continue;
        }
        const char *eq = memchr(p, '=', (size_t)(item_end - p));
        const char *name_end = eq ? eq : item_end;
        if (name_end == p) {
            th_props_free(&tmp);
            return TH_ERR_FORMAT;
        }
        struct th_prop *it = &tmp.items[tmp.count];
        th_result r = decode_dup(p, (size_t)(name_end - p), &it->name);
        if (r == TH_OK && eq != NULL)
            r = decode_dup(eq + 1, (size_t)(item_end - eq - 1), &it->value);
        /* Count the item even on failure so th_props_free releases its parts. */
        tmp.count++;
        if (r != TH_OK) {
            th_props_free(&tmp);
            return r;
        }
        p = next;
    }
    *out = tmp;
    return TH_OK;
}

const char *th_props_get(const struct th_props *props, const char *name)
{
    if (props == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < props->count; i++) {
        if (strcmp(props->items[i].name, name) == 0)
            return props->items[i].value;
    }
    return NULL;
}

th_result th_props_add(struct th_props *props, const char *name, const char *value)
{
    if (props == NULL || name == NULL || name[0] == '\0')
        return TH_ERR_INVAL;
    char *n = strdup(name);
    char *v = value ? strdup(value) : NULL;
    struct th_prop *items =
        (n && (v || !value)) ? realloc(props->items, (props->count + 1) * sizeof(*items)) : NULL;
    if (items == NULL) {
        free(n);
        free(v);
        return TH_ERR_NOMEM;
    }
    items[props->count].name = n;
    items[props->count].value = v;
    props->items = items;
    props->count++;
    return TH_OK;
}

th_result th_props_encode(const struct th_props *props, char *out, size_t size, size_t *out_len)
{
    if (out_len != NULL)
        *out_len = 0;
    if (out != NULL && size > 0)
        out[0] = '\0';
    if (out == NULL || size == 0)
        return TH_ERR_BUFFER;
    if (props == NULL || props->count == 0)
        return TH_OK;

    /*
     * Encode straight into `out`; th_pct_encode refuses rather than truncates,
     * so a failure only has to clear what was already written.
     */
    size_t o = 0;
    for (size_t i = 0; i < props->count; i++) {
        const struct th_prop *it = &props->items[i];
        size_t n = 0;
        if (i > 0) {
            if (size - o < 2)
                goto too_small;
            out[o++] = '&';
        }
        if (th_pct_encode(it->name, strlen(it->name), out + o, size - o, &n) != TH_OK)
            goto too_small;
        o += n;
        if (it->value != NULL) {
            if (size - o < 2)
                goto too_small;
            out[o++] = '=';
            if (th_pct_encode(it->value, strlen(it->value), out + o, size - o, &n) != TH_OK)
                goto too_small;
            o += n;
        }
    }
    out[o] = '\0';
    if (out_len != NULL)
        *out_len = o;
    return TH_OK;

too_small:
    out[0] = '\0';
    return TH_ERR_BUFFER;
}

/* ---- topics the hub publishes ---- */

/* snprintf that writes nothing but an empty string when the result would not fit. */
static th_result format_checked(char *out, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static th_result format_checked(char *out, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (out == NULL || size == 0)
        return TH_ERR_BUFFER;
    if (n < 0 || (size_t)n >= size) {
        out[0] = '\0';
        return TH_ERR_BUFFER;
    }
    va_start(ap, fmt);
    vsnprintf(out, size, fmt, ap);
    va_end(ap);
    return TH_OK;
}

th_result th_topic_twin_response(int status, struct th_slice rid, long long version, char *out,
                                 size_t size)
{
    const char *r = rid.ptr ? rid.ptr : "";
    int rlen = rid.ptr ? (int)rid.len : 0;
    if (version < 0)
        return format_checked(out, size, "$iothub/twin/res/%d/?$rid=%.*s", status, rlen, r);
    return format_checked(out, size, "$iothub/twin/res/%d/?$rid=%.*s&$version=%lld", status, rlen,
                          r, version);
}

th_result th_topic_desired(long long version, char *out, size_t size)
{
    /* Written without vsnprintf (twice per call in format_checked): one topic per desired
     * notification (docs/performance.md, "Fan-out"). Same text and results. */
    static const char prefix[] = "$iothub/twin/PATCH/properties/desired/?$version=";
    char digits[24], *d = digits + sizeof digits;
    unsigned long long v =
        version < 0 ? 0ULL - (unsigned long long)version : (unsigned long long)version;
    do {
        *--d = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    if (version < 0)
        *--d = '-';
    size_t n = (size_t)(digits + sizeof digits - d), len = sizeof prefix - 1 + n;
    if (out == NULL || size == 0)
        return TH_ERR_BUFFER;
    if (len >= size) {
        out[0] = '\0';
        return TH_ERR_BUFFER;
    }
    memcpy(out, prefix, sizeof prefix - 1);
    memcpy(out + sizeof prefix - 1, d, n);
    out[len] = '\0';
    return TH_OK;
}

th_result th_topic_method_request(const char *name, const char *rid, char *out, size_t size)
{
    if (name == NULL || rid == NULL) {
        if (out != NULL && size > 0)
            out[0] = '\0';
        return TH_ERR_INVAL;
    }
    return format_checked(out, size, "$iothub/methods/POST/%s/?$rid=%s", name, rid);
}

/*
 * Device ids may hold '+' and '#' (registry.md), which MQTT forbids in a topic
 * name (3.1.1 section 4.7.1): the broker would send such a PUBLISH as is. They
 * go out as %2B and %23, as in the event topics (events.c); a device with such
 * an id can only subscribe with devices/+/messages/devicebound/# anyway.
 */
th_result th_topic_c2d(const char *device_id, const char *bag, char *out, size_t size)
{
    if (device_id == NULL) {
        if (out != NULL && size > 0)
            out[0] = '\0';
        return TH_ERR_INVAL;
    }
    char id[3 * TH_MAX_ID_LEN + 1];
    size_t n = 0;
    for (const char *c = device_id; *c; c++) {
        const char *rep = *c == '+' ? "%2B" : *c == '#' ? "%23" : NULL;
        if (n + 4 > sizeof id) {
            if (out != NULL && size > 0)
                out[0] = '\0';
            return TH_ERR_BUFFER;
        }
        if (rep) {
            memcpy(id + n, rep, 3);
            n += 3;
        } else {
            id[n++] = *c;
        }
    }
    id[n] = '\0';
    return format_checked(out, size, "devices/%s/messages/devicebound/%s", id, bag ? bag : "");
}

/*
 * The hub's rule (printable US-ASCII without $ ( ) < > @ , ; : \ " / [ ] ?
 * = { }, space and tab), plus '+' and '#', which MQTT forbids in the topic
 * name the method request is published on.
 */
bool th_method_name_valid(const char *name)
{
    if (name == NULL || name[0] == '\0')
        return false;
    for (const char *c = name; *c; c++) {
        if (*c <= 0x20 || *c >= 0x7F)
            return false;
        if (strchr("$()<>@,;:\\\"/[]?={}+#", *c) != NULL)
            return false;
    }
    return true;
}
