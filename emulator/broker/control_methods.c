/*
 * control_methods.c - direct methods (`invokeMethod`): the request to the
 * device, correlation of its answer by $rid, connect and response timeouts
 * driven from TICK, and failure when the device goes away
 * (iothub-protocol.md section 8). What the answer becomes for the caller is
 * core/method.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control.h"
#include "job.h"
#include "json.h"
#include "method.h"
#include "th_limits.h"
#include "topic.h"
#include "util.h"

/* ---- direct methods ---- */

static void call_free(struct brk_method_call *m)
{
    if (!m) {
        return;
    }
    free(m->caller_id);
    cJSON_Delete(m->correlation);
    free(m->device_id);
    free(m->module_id);
    free(m->method_name);
    free(m->payload);
    free(m);
}

/* Answer the caller of a method call (takes ownership of data); unlinks nothing. */
static void call_answer(struct brk_plugin *p, struct brk_method_call *m, cJSON *data,
                        const struct th_error *err)
{
    if (m->job) {
        /* A method job's call: the answer is the device's record in the job (control_jobs.c). */
        brk_event_emit(p, TH_JOURNAL_METHOD, m->device_id, m->module_id,
                       th_journal_data_method(m->method_name, m->id, data, err));
        brk_jobs_method_done(p, m->job, m->job_index, data, err);
        return;
    }
    cJSON *arr = cJSON_CreateArray();
    cJSON *r = brk_ctl_response_entry("invokeMethod", m->correlation);
    /* The event shows the answer as the caller gets it: status, payload or the raw body. */
    cJSON *ev = th_journal_data_method(m->method_name, m->id, data, err);
    if (!arr || !r) {
        cJSON_Delete(arr);
        cJSON_Delete(r);
        cJSON_Delete(data);
        cJSON_Delete(ev);
        return;
    }
    bool ok;
    if (err) {
        ok = brk_ctl_add_error_fields(r, err);
        cJSON_Delete(data);
    } else {
        ok = brk_ctl_put(r, "data", data); /* deletes data when it fails */
    }
    if (!ok) {
        struct th_error oom = {0};
        th_error_set(&oom, TH_ERR_NOMEM, TH_EC_SERVER_ERROR, "out of memory building the answer");
        cJSON_Delete(r);
        r = brk_ctl_error_entry("invokeMethod", m->correlation, &oom);
    }
    if (brk_ctl_push(arr, r)) {
        brk_ctl_send_responses(m->caller_id, arr);
    } else {
        cJSON_Delete(arr);
    }
    brk_event_emit(p, TH_JOURNAL_METHOD, m->device_id, m->module_id, ev);
}

static void call_unlink(struct brk_plugin *p, struct brk_method_call *m)
{
    for (struct brk_method_call **pp = &p->calls; *pp; pp = &(*pp)->next) {
        if (*pp == m) {
            *pp = m->next;
            return;
        }
    }
}

void brk_cmd_invoke_method(struct brk_cmd_ctx *x)
{
    struct th_error err = {0};
    struct th_identity *id;
    const char *name;
    int rto, cto;
    struct brk_method_call *m;
    int64_t now_ms = th_mono_ms();

    if (!brk_ctl_need_perm(x, TH_PERM_SERVICE_CONNECT, "ServiceConnect") ||
        !(id = brk_ctl_identity_or_reply(x, true)) ||
        !brk_ctl_string_or_reply(x, "methodName", &name) ||
        !brk_ctl_int_or_reply(x, "responseTimeoutInSeconds", TH_METHOD_DEFAULT_TIMEOUT_S,
                              TH_METHOD_MIN_TIMEOUT_S, TH_METHOD_MAX_TIMEOUT_S, &rto) ||
        !brk_ctl_int_or_reply(x, "connectTimeoutInSeconds", 0, 0, TH_METHOD_MAX_TIMEOUT_S, &cto)) {
        return;
    }
    if (!name || !th_method_name_valid(name)) {
        th_error_set(
            &err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
            "'methodName' must be a non-empty printable ASCII name without $()<>@,;:\\\"/[]?={} "
            "or spaces");
        brk_ctl_reply_err(x, &err);
        return;
    }
    const cJSON *payload = cJSON_GetObjectItemCaseSensitive(x->cmd, "payload");
    m = calloc(1, sizeof *m);
    if (m) {
        m->id = x->p->next_call_id++;
        m->caller_id = strdup(x->caller->client_id);
        const cJSON *corr = cJSON_GetObjectItemCaseSensitive(x->cmd, "correlationData");
        m->correlation = corr ? cJSON_Duplicate(corr, 1) : NULL;
        m->device_id = strdup(id->device_id);
        m->module_id = id->module_id ? strdup(id->module_id) : NULL;
        m->method_name = strdup(name);
        m->payload = payload ? th_json_print(payload) : strdup("null");
        m->response_timeout_s = rto;
        m->connect_deadline_ms = now_ms + (int64_t)cto * 1000;
    }
    if (!m || !m->caller_id || !m->device_id || (id->module_id && !m->module_id) ||
        !m->method_name || !m->payload) {
        call_free(m);
        th_error_set(&err, TH_ERR_NOMEM, TH_EC_SERVER_ERROR, "out of memory");
        brk_ctl_reply_err(x, &err);
        return;
    }
    if (m->payload && strlen(m->payload) > TH_METHOD_MAX_PAYLOAD_BYTES) {
        call_free(m);
        th_error_set(&err, TH_ERR_TOO_LARGE, TH_EC_MESSAGE_TOO_LARGE,
                     "method payload is larger than 128 KB");
        brk_ctl_reply_err(x, &err);
        return;
    }
    if (!brk_deliver_method_request(x->p, m, now_ms) && cto == 0) {
        th_error_set(&err, TH_ERR_NOT_ONLINE, TH_EC_DEVICE_NOT_ONLINE,
                     "The operation failed because the requested device isn't online or hasn't "
                     "registered the direct method callback.");
        call_answer(x->p, m, NULL, &err);
        call_free(m);
        return;
    }
    m->next = x->p->calls;
    x->p->calls = m;
    /* The answer comes later, in its own response message. */
}

void brk_methods_tick(struct brk_plugin *p, int64_t now_ms)
{
    struct brk_method_call *m = p->calls, *next;
    struct th_error err = {0};
    for (; m; m = next) {
        next = m->next;
        if (m->response_deadline_ms == 0) {
            if (brk_deliver_method_request(p, m, now_ms)) {
                if (m->job) {
                    brk_jobs_device_sent(p, m->job, m->job_index);
                }
                continue;
            }
            if (now_ms >= m->connect_deadline_ms) {
                th_error_set(&err, TH_ERR_NOT_ONLINE, TH_EC_DEVICE_NOT_ONLINE,
                             "The operation failed because the requested device isn't online or "
                             "hasn't registered the direct method callback.");
                call_unlink(p, m);
                call_answer(p, m, NULL, &err);
                call_free(m);
            }
        } else if (now_ms >= m->response_deadline_ms) {
            th_error_set(&err, TH_ERR_TIMEOUT, TH_EC_GATEWAY_TIMEOUT,
                         "Timed out waiting for the response from device.");
            call_unlink(p, m);
            call_answer(p, m, NULL, &err);
            call_free(m);
        }
    }
}

void brk_methods_identity_offline(struct brk_plugin *p, struct th_identity *id)
{
    struct brk_method_call *m = p->calls, *next;
    struct th_error err = {0};
    for (; m; m = next) {
        next = m->next;
        if (m->response_deadline_ms == 0 || strcmp(m->device_id, id->device_id) != 0 ||
            (m->module_id == NULL) != (id->module_id == NULL) ||
            (m->module_id && strcmp(m->module_id, id->module_id) != 0)) {
            continue;
        }
        th_error_set(&err, TH_ERR_NOT_ONLINE, TH_EC_DEVICE_NOT_ONLINE,
                     "the device disconnected before answering the method call");
        call_unlink(p, m);
        call_answer(p, m, NULL, &err);
        call_free(m);
    }
}

/* The pending call `rid` of identity `id`, or NULL. */
static struct brk_method_call *pending_call(struct brk_plugin *p, const struct th_identity *id,
                                            const char *rid)
{
    for (struct brk_method_call *m = p->calls; m; m = m->next) {
        char mine[32];
        snprintf(mine, sizeof mine, "%llu", (unsigned long long)m->id);
        if (m->response_deadline_ms && !strcmp(mine, rid) && !strcmp(m->device_id, id->device_id) &&
            ((!m->module_id && !id->module_id) ||
             (m->module_id && id->module_id && !strcmp(m->module_id, id->module_id)))) {
            return m;
        }
    }
    return NULL;
}

void brk_methods_on_response(struct brk_plugin *p, struct th_identity *id, const struct th_topic *t,
                             const void *payload, size_t len)
{
    char ridbuf[32];
    struct brk_method_call *m;
    struct th_error err = {0};
    cJSON *data = NULL;
    snprintf(ridbuf, sizeof ridbuf, "%.*s", (int)(t->rid.len < 31 ? t->rid.len : 31),
             t->rid.ptr ? t->rid.ptr : "");
    m = pending_call(p, id, ridbuf);
    if (!m) {
        brk_log(p, MOSQ_LOG_WARNING,
                "%s | method response ignored | no pending call with $rid=%s (late or unknown)",
                id->device_id, ridbuf);
        return;
    }
    call_unlink(p, m);
    if (!t->status_ok) {
        /* Only this call fails: the device stays connected (docs/protocol.md). */
        th_error_set(&err, TH_ERR_FORMAT, TH_EC_IOTHUB_FORMAT_ERROR,
                     "the device answered method '%s' with status '%.*s' in "
                     "$iothub/methods/res/{status}/?$rid=%s; the status must be a whole number "
                     "from -2147483648 to 2147483647",
                     m->method_name, (int)(t->status_text.len > 64 ? 64 : t->status_text.len),
                     t->status_text.ptr ? t->status_text.ptr : "", ridbuf);
    } else if (th_method_result(t->status, payload, len, &data, &err) != TH_OK) {
        data = NULL; /* err says why */
    }
    if (!data) {
        brk_log(p, MOSQ_LOG_WARNING, "%s | method %s failed | rid=%s %s", id->device_id,
                m->method_name, ridbuf, err.message);
        call_answer(p, m, NULL, &err);
        call_free(m);
        return;
    }
    if (th_method_result_is_raw(data)) {
        brk_log(p, MOSQ_LOG_NOTICE,
                "%s | method %s answered with a body that is not JSON | rid=%s status=%ld; IoT "
                "Hub passes it on as is and the service SDKs fail to parse the answer",
                id->device_id, m->method_name, ridbuf, (long)t->status);
    }
    call_answer(p, m, data, NULL);
    call_free(m);
}

void brk_methods_start_for_job(struct brk_plugin *p, struct th_identity *id, struct brk_job *j,
                               size_t i)
{
    const struct th_job *job = brk_job_of(j);
    struct th_error err = {0};
    int64_t now_ms = th_mono_ms();
    struct brk_method_call *m = calloc(1, sizeof *m);
    if (m) {
        m->id = p->next_call_id++;
        m->device_id = strdup(id->device_id);
        m->method_name = strdup(job->method_name);
        m->payload = th_json_print(cJSON_GetObjectItemCaseSensitive(job->method, "payload"));
        m->response_timeout_s = job->response_timeout_s;
        m->connect_deadline_ms = now_ms + (int64_t)job->connect_timeout_s * 1000;
        m->job = j;
        m->job_index = i;
    }
    if (!m || !m->device_id || !m->method_name || !m->payload) {
        call_free(m);
        th_error_set(&err, TH_ERR_NOMEM, TH_EC_SERVER_ERROR, "out of memory");
        brk_jobs_method_done(p, j, i, NULL, &err);
        return;
    }
    if (brk_deliver_method_request(p, m, now_ms)) {
        brk_jobs_device_sent(p, j, i);
    } else if (job->connect_timeout_s == 0) {
        th_error_set(&err, TH_ERR_NOT_ONLINE, TH_EC_DEVICE_NOT_ONLINE,
                     "The operation failed because the requested device isn't online or hasn't "
                     "registered the direct method callback.");
        call_answer(p, m, NULL, &err);
        call_free(m);
        return;
    }
    m->next = p->calls;
    p->calls = m;
}

void brk_methods_forget_job(struct brk_plugin *p, struct brk_job *j)
{
    struct brk_method_call *m = p->calls, *next;
    for (; m; m = next) {
        next = m->next;
        if (m->job == j) {
            call_unlink(p, m);
            call_free(m);
        }
    }
}

void brk_methods_free_all(struct brk_plugin *p)
{
    struct brk_method_call *m = p->calls, *next;
    for (; m; m = next) {
        next = m->next;
        call_free(m);
    }
    p->calls = NULL;
}
