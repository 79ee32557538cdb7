/*
 * fuzz_topic.c - libFuzzer target for the device-facing MQTT names: the
 * published topic (th_topic_parse), the telemetry/C2D property bag
 * (th_props_parse, with an encode/parse round trip), subscription filters
 * (th_sub_classify), the CONNECT username (th_username_parse), id and method
 * name checks, the twin response topic built from a $rid the device
 * chose, and a method answer body (th_method_result and the hub's HTTP body,
 * which copies a body that is not JSON verbatim). Every slice a parser
 * returns must lie inside its input.
 */
#include <stdbool.h>

#include "fuzz_common.h"
#include "method.h"
#include "th_limits.h"
#include "topic.h"

static bool inside(struct th_slice s, const char *buf, size_t size)
{
    return s.ptr == NULL || (s.ptr >= buf && s.ptr + s.len <= buf + size);
}

static void check_props_roundtrip(const struct th_props *a)
{
    size_t cap = 16;
    for (size_t i = 0; i < a->count; i++)
        cap += 3 * strlen(a->items[i].name) +
               3 * (a->items[i].value ? strlen(a->items[i].value) : 0) + 2;
    char *enc = malloc(cap);
    FUZZ_CHECK(enc != NULL);
    size_t n = 0;
    FUZZ_CHECK(th_props_encode(a, enc, cap, &n) == TH_OK);
    FUZZ_CHECK(n == strlen(enc));
    struct th_props b;
    FUZZ_CHECK(th_props_parse(enc, n, &b) == TH_OK);
    FUZZ_CHECK(b.count == a->count);
    for (size_t i = 0; i < a->count; i++) {
        FUZZ_CHECK(strcmp(a->items[i].name, b.items[i].name) == 0);
        FUZZ_CHECK((a->items[i].value == NULL) == (b.items[i].value == NULL));
        FUZZ_CHECK(!a->items[i].value || strcmp(a->items[i].value, b.items[i].value) == 0);
    }
    /* One byte short must be refused without writing past the buffer. */
    if (n > 0) {
        char *tight = malloc(n);
        FUZZ_CHECK(tight != NULL);
        FUZZ_CHECK(th_props_encode(a, tight, n, NULL) == TH_ERR_BUFFER);
        free(tight);
    }
    th_props_free(&b);
    free(enc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = fuzz_bytes(data, size);
    char *str = fuzz_cstr(data, size);

    /* A topic a device published (the broker gives a C string; the parser takes a length). */
    struct th_topic t;
    th_result r = th_topic_parse(buf, size, &t);
    FUZZ_CHECK(inside(t.device_id, buf, size) && inside(t.module_id, buf, size));
    FUZZ_CHECK(inside(t.props, buf, size) && inside(t.rid, buf, size));
    FUZZ_CHECK(inside(t.status_text, buf, size));
    if (t.kind == TH_TOPIC_METHOD_RESPONSE && t.status_ok) {
        int32_t v = 0;
        FUZZ_CHECK(th_method_status_parse(t.status_text.ptr, t.status_text.len, &v));
        FUZZ_CHECK(v == t.status);
    }

    /* The whole input as a device's method answer: JSON comes back as JSON, anything else
     * verbatim after "payload":. */
    cJSON *res = NULL;
    if (th_method_result(-1, buf, size, &res, NULL) == TH_OK) {
        size_t n = 0;
        char *body = th_method_rest_body(res, &n);
        FUZZ_CHECK(body != NULL);
        if (th_method_result_is_raw(res)) {
            static const char head[] = "{\"status\":-1,\"payload\":";
            FUZZ_CHECK(n == sizeof head - 1 + size + 1);
            FUZZ_CHECK(memcmp(body, head, sizeof head - 1) == 0);
            FUZZ_CHECK(size == 0 || memcmp(body + sizeof head - 1, buf, size) == 0);
            FUZZ_CHECK(body[n - 1] == '}');
        } else {
            cJSON *back = cJSON_ParseWithLength(body, n);
            FUZZ_CHECK(back != NULL);
            cJSON_Delete(back);
        }
        free(body);
        cJSON_Delete(res);
    }
    if (r == TH_OK) {
        FUZZ_CHECK(t.kind != TH_TOPIC_UNKNOWN);
        if (t.kind != TH_TOPIC_TELEMETRY)
            FUZZ_CHECK(t.rid.ptr != NULL && t.rid.len > 0);
        char topic[512];
        if (th_topic_twin_response(200, t.rid, 7, topic, sizeof topic) == TH_OK)
            FUZZ_CHECK(strlen(topic) < sizeof topic);
        if (t.kind == TH_TOPIC_TELEMETRY && t.props.len) {
            struct th_props props;
            if (th_props_parse(t.props.ptr, t.props.len, &props) == TH_OK) {
                check_props_roundtrip(&props);
                th_props_free(&props);
            }
        }
    }

    /* The whole input as a property bag. */
    struct th_props props;
    if (th_props_parse(buf, size, &props) == TH_OK) {
        for (size_t i = 0; i < props.count; i++) {
            FUZZ_CHECK(props.items[i].name && props.items[i].name[0]);
            FUZZ_CHECK(th_props_get(&props, props.items[i].name) != NULL ||
                       true); /* lookup must not crash */
        }
        check_props_roundtrip(&props);
        FUZZ_CHECK(th_props_add(&props, "$.mid", str) == TH_OK);
        check_props_roundtrip(&props);
        th_props_free(&props);
    } else {
        FUZZ_CHECK(props.items == NULL && props.count == 0);
    }

    /* A subscription filter, from a device and from a module. */
    (void)th_sub_classify(str, "dev1", NULL);
    (void)th_sub_classify(str, "dev1", "mod1");
    (void)th_sub_classify("devices/dev1/messages/devicebound/#", str, NULL);
    (void)th_sub_classify("devices/dev1/modules/mod1/#", "dev1", str);

    /* The CONNECT username. */
    struct th_username u;
    struct th_error err = {0};
    if (th_username_parse(buf, size, &u, &err) == TH_OK) {
        FUZZ_CHECK(inside(u.host, buf, size) && inside(u.device_id, buf, size));
        FUZZ_CHECK(inside(u.module_id, buf, size) && inside(u.api_version, buf, size));
        FUZZ_CHECK(inside(u.client_type, buf, size) && inside(u.model_id, buf, size));
        FUZZ_CHECK(u.host.len > 0);
        FUZZ_CHECK(th_id_valid(u.device_id.ptr, u.device_id.len));
        FUZZ_CHECK(!u.module_id.ptr || th_id_valid(u.module_id.ptr, u.module_id.len));
    }

    /* Ids and method names, and the topics built from them. */
    if (th_id_valid(buf, size))
        FUZZ_CHECK(size <= TH_MAX_ID_LEN);
    char out[1024];
    if (th_method_name_valid(str)) {
        (void)th_topic_method_request(str, "1", out, sizeof out);
        char filter[600];
        if (snprintf(filter, sizeof filter, "$iothub/methods/POST/%s/#", str) <
                (int)sizeof filter &&
            strlen(str) < 200)
            FUZZ_CHECK(th_sub_classify(filter, "dev1", NULL) == TH_SUB_METHODS);
    }
    (void)th_topic_c2d("dev1", str, out, sizeof out);
    (void)th_topic_c2d(str, "", out, sizeof out);

    free(str);
    free(buf);
    return 0;
}
