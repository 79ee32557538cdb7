/*
 * events.c - the event stream: one record per thing that happens on the hub
 * (connections, refusals, telemetry, twin changes, methods, C2D), numbered,
 * appended to the recording and published on
 * $twinhub/events/{kind}/{deviceId}[/{moduleId}] for service principals
 * (docs/control-api.md); the records and topics themselves are built by
 * core/journal.c. Also the hub's JSON error body for device replies.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "journal.h"
#include "json.h"
#include "plugin.h"
#include "util.h"

bool brk_events_wanted(const struct brk_plugin *p)
{
    return p->event_subs > 0 || p->record_fd >= 0;
}

void brk_event_emit(struct brk_plugin *p, enum th_journal_kind kind, const char *device_id,
                    const char *module_id, cJSON *data)
{
    char stack_topic[600];
    char *topic = stack_topic, *text;

    p->event_seq++;
    if (p->event_subs == 0 && p->record_fd < 0) {
        /* Nobody can be listening (no service principal subscribed to an events filter,
         * acl.c) and nothing is recorded: skip the work. */
        cJSON_Delete(data);
        return;
    }
    text = th_journal_record_text(p->event_seq, th_now_us(), kind, device_id, module_id, data);
    if (!text) {
        brk_log(p, MOSQ_LOG_WARNING, "%s | event %llu dropped | out of memory",
                device_id ? device_id : "-", (unsigned long long)p->event_seq);
        return;
    }
    size_t len = strlen(text);
    if (p->record_fd >= 0) {
        brk_record_write(p, text, len);
    }
    if (p->event_subs > 0) {
        /* Ids may be long and percent-encoded three bytes a character: size from the ids. */
        size_t need = th_journal_topic(kind, device_id, module_id, topic, sizeof stack_topic);
        if (need >= sizeof stack_topic && (topic = malloc(need + 1)) != NULL) {
            th_journal_topic(kind, device_id, module_id, topic, need + 1);
        }
        if (topic) {
            brk_publish_to(NULL, topic, text, len, 1);
        }
        if (topic != stack_topic) {
            free(topic);
        }
    }
    free(text);
}

char *brk_error_body(struct brk_plugin *p, const struct th_error *err)
{
    char when[TH_TIME_BUF], tracking[64];
    cJSON *o = cJSON_CreateObject();
    char *text;
    if (!o) {
        return NULL;
    }
    th_time_format(th_now_us(), when);
    snprintf(tracking, sizeof tracking, "twinhub-%016llx", (unsigned long long)++p->tracking_seq);
    if (!cJSON_AddNumberToObject(o, "errorCode", err->code ? err->code : TH_EC_SERVER_ERROR) ||
        !cJSON_AddStringToObject(o, "trackingId", tracking) ||
        !cJSON_AddStringToObject(o, "message",
                                 err->message[0] ? err->message : th_result_str(err->result)) ||
        !cJSON_AddStringToObject(o, "timestampUtc", when)) {
        cJSON_Delete(o);
        return NULL;
    }
    text = th_json_print(o);
    cJSON_Delete(o);
    return text;
}
