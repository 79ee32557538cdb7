/*
 * ctl_answer.c - the control API's answer text printed piece by piece on a
 * jsonw.h writer (ctl_answer.h): a success answer is one buffer, not a small
 * tree with a copy of every member name that is printed and freed later
 * (docs/performance.md, fan-out "Third pass").
 */
#include "ctl_answer.h"

#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "jsonw.h"

/* th_jsonw_raw of a string literal. */
#define PUT_LIT(b, s) th_jsonw_raw((b), (s), sizeof(s) - 1)

/* What a raw item adds to the text (the answers are mostly raw: entries, twins). */
static size_t raw_size(const cJSON *item)
{
    return cJSON_IsRaw(item) && item->valuestring != NULL ? strlen(item->valuestring) : 0;
}

char *th_ctl_ok_entry_text(const char *command, const cJSON *correlation, const cJSON *data)
{
    struct th_jsonw b = {0};
    if (!th_jsonw_reserve(&b, 128 + raw_size(data)))
        return NULL;
    PUT_LIT(&b, "{\"command\":");
    if (command != NULL)
        th_jbuf_string(&b, command);
    else
        PUT_LIT(&b, "null");
    if (correlation != NULL) {
        PUT_LIT(&b, ",\"correlationData\":");
        th_jbuf_value(&b, correlation);
    }
    PUT_LIT(&b, ",\"data\":");
    if (data != NULL)
        th_jbuf_value(&b, data);
    else
        PUT_LIT(&b, "{}");
    PUT_LIT(&b, "}");
    return th_jsonw_finish(&b, NULL);
}

char *th_ctl_responses_text(const cJSON *responses, size_t *len)
{
    struct th_jsonw b = {0};
    size_t size = 255;
    if (responses == NULL)
        return NULL;
    for (const cJSON *r = responses->child; r != NULL; r = r->next)
        size += raw_size(r) + 1;
    if (!th_jsonw_reserve(&b, size))
        return NULL;
    PUT_LIT(&b, "{\"responses\":");
    th_jbuf_value(&b, responses);
    PUT_LIT(&b, "}");
    return th_jsonw_finish(&b, len);
}

cJSON *th_ctl_raw_taking(char *text)
{
    cJSON *item = text != NULL ? cJSON_CreateNull() : NULL;
    if (item == NULL) {
        free(text);
        return NULL;
    }
    item->type = cJSON_Raw;
    item->valuestring = text;
    return item;
}
