/*
 * method.c - the caller's side of a direct method answer (iothub-protocol.md
 * section 8; docs/protocol.md "Direct methods"): the result a caller gets for
 * the device's status and body, and the HTTP body IoT Hub sends for it,
 * including the hub's verbatim copy of a body that is not JSON.
 */
#include "method.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "th_limits.h"
#include "util.h"

/* Add an int32 member exactly (cJSON keeps numbers as doubles, which hold every int32). */
static bool add_status(cJSON *obj, int32_t status)
{
    return cJSON_AddNumberToObject(obj, "status", (double)status) != NULL;
}

/* {"status", "rawPayload"?, "rawPayloadBase64", "payloadError"} for a body that is not read. */
static th_result raw_result(cJSON *data, const void *body, size_t len, const char *why)
{
    size_t cap = 4 * ((len + 2) / 3) + 1;
    char *b64 = malloc(cap);
    bool ok = b64 && th_b64_encode(body, len, b64, cap) == TH_OK;
    if (ok && th_utf8_is_text(body, len)) {
        /* cJSON copies a NUL-terminated string: give it one. */
        char *text = malloc(len + 1);
        ok = text != NULL;
        if (ok) {
            memcpy(text, body, len);
            text[len] = '\0';
            ok = cJSON_AddStringToObject(data, "rawPayload", text) != NULL;
            free(text);
        }
    }
    ok = ok && cJSON_AddStringToObject(data, "rawPayloadBase64", b64) != NULL &&
         cJSON_AddStringToObject(data, "payloadError", why) != NULL;
    free(b64);
    return ok ? TH_OK : TH_ERR_NOMEM;
}

th_result th_method_result(int32_t status, const void *body, size_t len, cJSON **out,
                           struct th_error *err)
{
    *out = NULL;
    if (len > TH_METHOD_MAX_PAYLOAD_BYTES)
        return th_error_set(err, TH_ERR_TOO_LARGE, TH_EC_MESSAGE_TOO_LARGE,
                            "the device answered with a %zu-byte body; a method response may "
                            "hold at most %d bytes (128 KB)",
                            len, TH_METHOD_MAX_PAYLOAD_BYTES);
    cJSON *data = cJSON_CreateObject();
    if (data == NULL || !add_status(data, status)) {
        cJSON_Delete(data);
        return th_error_set(err, TH_ERR_NOMEM, TH_EC_SERVER_ERROR, "out of memory");
    }
    cJSON *payload = NULL;
    struct th_error why = {0};
    th_result r = TH_OK;
    if (len == 0) {
        if (!cJSON_AddNullToObject(data, "payload"))
            r = TH_ERR_NOMEM;
    } else if (th_json_parse(body, len, TH_METHOD_MAX_PAYLOAD_BYTES, TH_METHOD_MAX_DEPTH, &payload,
                             &why) == TH_OK &&
               th_json_refuse_nul(payload, "the device's answer", &why) == TH_OK) {
        if (!cJSON_AddItemToObject(data, "payload", payload)) {
            cJSON_Delete(payload);
            r = TH_ERR_NOMEM;
        }
    } else {
        /* Not JSON, or JSON holding \u0000, which a tree would cut: passed on verbatim. */
        cJSON_Delete(payload);
        payload = NULL;
        r = raw_result(data, body, len, why.message);
    }
    if (r != TH_OK) {
        cJSON_Delete(data);
        return th_error_set(err, r, TH_EC_SERVER_ERROR, "out of memory");
    }
    *out = data;
    return TH_OK;
}

bool th_method_result_is_raw(const cJSON *result)
{
    return cJSON_IsString(cJSON_GetObjectItemCaseSensitive(result, "rawPayloadBase64"));
}

char *th_method_rest_body(const cJSON *result, size_t *out_len)
{
    *out_len = 0;
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(result, "status");
    if (!cJSON_IsNumber(st) || st->valuedouble < INT32_MIN || st->valuedouble > INT32_MAX ||
        st->valuedouble != (double)(int32_t)st->valuedouble)
        return NULL;
    int32_t status = (int32_t)st->valuedouble;

    if (!th_method_result_is_raw(result)) {
        /* The members the hub answers with, in its order (a result may carry more). */
        cJSON *o = cJSON_CreateObject();
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(result, "payload");
        cJSON *dup = p ? cJSON_Duplicate(p, 1) : cJSON_CreateNull();
        char *text = NULL;
        if (o && dup && add_status(o, status) && cJSON_AddItemToObject(o, "payload", dup)) {
            dup = NULL;
            text = th_json_print(o);
        }
        cJSON_Delete(dup);
        cJSON_Delete(o);
        if (text)
            *out_len = strlen(text);
        return text;
    }

    /* The hub's verbatim copy: {"status":n,"payload":<bytes>}. */
    const char *b64 = cJSON_GetObjectItemCaseSensitive(result, "rawPayloadBase64")->valuestring;
    size_t b64_len = strlen(b64);
    char head[48];
    int hn = snprintf(head, sizeof head, "{\"status\":%ld,\"payload\":", (long)status);
    size_t cap = (size_t)hn + b64_len / 4 * 3 + 3 + 2;
    char *buf = malloc(cap);
    size_t raw_len = 0;
    if (buf == NULL)
        return NULL;
    memcpy(buf, head, (size_t)hn);
    if (th_b64_decode(b64, b64_len, (uint8_t *)buf + hn, cap - (size_t)hn - 2, &raw_len) != TH_OK) {
        free(buf);
        return NULL;
    }
    size_t n = (size_t)hn + raw_len;
    buf[n++] = '}';
    buf[n] = '\0';
    *out_len = n;
    return buf;
}
