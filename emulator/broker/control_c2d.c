/*
 * control_c2d.c - the control API's cloud-to-device send (`sendC2D`): builds
 * the property bag the hub puts on devicebound topics, queues the message
 * (50 per device, 64 KB) and delivers it when the device is connected and
 * subscribed (iothub-protocol.md section 5).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control.h"
#include "json.h"
#include "th_limits.h"
#include "topic.h"
#include "util.h"

/* ---- cloud-to-device ---- */

void brk_cmd_send_c2d(struct brk_cmd_ctx *x)
{
    struct th_error err = {0};
    struct th_identity *dev;
    struct th_props props = {0};
    const char *body = NULL, *body64 = NULL, *mid = NULL, *ack = NULL;
    const char *sysf[][2] = {{"correlationId", "$.cid"},
                             {"userId", "$.uid"},
                             {"contentType", "$.ct"},
                             {"contentEncoding", "$.ce"},
                             {"expiryTimeUtc", "$.exp"}};
    char midbuf[48], to[300];
    uint8_t *raw = NULL;
    size_t rawlen = 0;
    char *bag = NULL;
    th_result r = TH_OK;

    if (!brk_ctl_need_perm(x, TH_PERM_SERVICE_CONNECT, "ServiceConnect")) {
        return;
    }
    if (!(dev = brk_ctl_identity_or_reply(x, false)) ||
        !brk_ctl_string_or_reply(x, "body", &body) ||
        !brk_ctl_string_or_reply(x, "bodyBase64", &body64) ||
        !brk_ctl_string_or_reply(x, "messageId", &mid) ||
        !brk_ctl_string_or_reply(x, "ack", &ack)) {
        return;
    }
    if (ack && strcmp(ack, "none") && strcmp(ack, "positive") && strcmp(ack, "negative") &&
        strcmp(ack, "full")) {
        r = th_error_set(&err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                         "'ack' must be one of none, positive, negative, full (got '%s')", ack);
    }
    if (r == TH_OK && body && body64) {
        r = th_error_set(&err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                         "give either 'body' or 'bodyBase64', not both");
    }
    if (r == TH_OK && body64) {
        size_t cap = strlen(body64);
        raw = malloc(cap + 1);
        if (!raw) {
            r = th_error_set(&err, TH_ERR_NOMEM, TH_EC_SERVER_ERROR, "out of memory");
        } else if (th_b64_decode(body64, strlen(body64), raw, cap + 1, &rawlen) != TH_OK) {
            r = th_error_set(&err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                             "'bodyBase64' is not valid base64");
        }
    }
    if (r == TH_OK && !mid) {
        snprintf(midbuf, sizeof midbuf, "twinhub-c2d-%llu",
                 (unsigned long long)++x->p->tracking_seq);
        mid = midbuf;
    }
    /* Property bag in the order the hub uses: $.mid, $.to, system, iothub-ack, application. */
    snprintf(to, sizeof to, "/devices/%s/messages/devicebound", dev->device_id);
    if (r == TH_OK && (th_props_add(&props, "$.mid", mid) != TH_OK ||
                       th_props_add(&props, "$.to", to) != TH_OK)) {
        r = th_error_set(&err, TH_ERR_NOMEM, TH_EC_SERVER_ERROR, "out of memory");
    }
    for (size_t i = 0; r == TH_OK && i < sizeof sysf / sizeof sysf[0]; i++) {
        const char *v;
        if (!brk_ctl_string_or_reply(x, sysf[i][0], &v)) {
            th_props_free(&props);
            free(raw);
            return;
        }
        if (v && th_props_add(&props, sysf[i][1], v) != TH_OK) {
            r = th_error_set(&err, TH_ERR_NOMEM, TH_EC_SERVER_ERROR, "out of memory");
        }
    }
    if (r == TH_OK && th_props_add(&props, "iothub-ack", ack ? ack : "none") != TH_OK) {
        r = th_error_set(&err, TH_ERR_NOMEM, TH_EC_SERVER_ERROR, "out of memory");
    }
    const cJSON *jprops = cJSON_GetObjectItemCaseSensitive(x->cmd, "properties");
    if (r == TH_OK && jprops && !cJSON_IsNull(jprops) && !cJSON_IsObject(jprops)) {
        r = th_error_set(&err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                         "'properties' must be an object of strings");
    }
    const cJSON *it;
    const cJSON *app_props = (r == TH_OK && cJSON_IsObject(jprops)) ? jprops : NULL;
    cJSON_ArrayForEach(it, app_props)
    {
        if (!cJSON_IsString(it) && !cJSON_IsNull(it)) {
            r = th_error_set(&err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                             "property '%s' must be a string or null", it->string);
            break;
        }
        if (th_props_add(&props, it->string, cJSON_IsString(it) ? it->valuestring : NULL) !=
            TH_OK) {
            r = th_error_set(&err, TH_ERR_NOMEM, TH_EC_SERVER_ERROR, "out of memory");
            break;
        }
    }
    if (r == TH_OK) {
        size_t cap = 8192, n;
        bag = malloc(cap);
        if (!bag || th_props_encode(&props, bag, cap, &n) != TH_OK) {
            r = th_error_set(&err, TH_ERR_TOO_LARGE, TH_EC_MESSAGE_TOO_LARGE,
                             "C2D message properties are too large");
        }
    }
    th_props_free(&props);
    if (r == TH_OK) {
        const void *b = raw ? (const void *)raw : (const void *)body;
        size_t blen = raw ? rawlen : body ? strlen(body) : 0;
        r = th_identity_c2d_push(dev, mid, bag, b, blen, th_now_us(), &err);
    }
    free(raw);
    free(bag);
    if (r != TH_OK) {
        brk_ctl_reply_err(x, &err);
        return;
    }
    char midcopy[256];
    snprintf(midcopy, sizeof midcopy, "%s", mid);
    size_t before = dev->c2d_count;
    brk_deliver_c2d(x->p, dev);
    bool delivered = dev->c2d_count < before;
    if (!delivered) {
        brk_persist_device(x->p, dev);
        brk_event_emit(x->p, TH_JOURNAL_C2D, dev->device_id, NULL,
                       th_journal_data_c2d(midcopy, false, dev->c2d_count));
    }
    cJSON *data = cJSON_CreateObject();
    if (data && !(cJSON_AddStringToObject(data, "messageId", midcopy) &&
                  cJSON_AddNumberToObject(data, "queued", (double)dev->c2d_count) &&
                  cJSON_AddBoolToObject(data, "delivered", delivered))) {
        cJSON_Delete(data);
        data = NULL;
    }
    brk_ctl_reply_data(x, data);
}
