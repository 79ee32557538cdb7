/*
 * job.c - IoT Hub jobs: requests, status, per-device records and counts
 * (job.h; docs/jobs.md). Pure: the broker runs the job and reports back.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "job.h"
#include "journal.h" /* th_journal_time_parse */
#include "json.h"
#include "method.h"
#include "query.h"
#include "th_limits.h"
#include "topic.h" /* th_method_name_valid */
#include "util.h"

static const char *const type_names[] = {"scheduleUpdateTwin", "scheduleDeviceMethod"};
static const char *const status_names[] = {"queued",    "scheduled", "running",
                                           "completed", "failed",    "cancelled"};
static const char *const dj_status_names[] = {"pending", "running", "completed", "failed",
                                              "cancelled"};

const char *th_job_type_name(enum th_job_type t)
{
    return (unsigned)t < 2 ? type_names[t] : "unknown";
}

const char *th_job_status_name(enum th_job_status s)
{
    return (unsigned)s < 6 ? status_names[s] : "unknown";
}

const char *th_device_job_status_name(enum th_device_job_status s)
{
    return (unsigned)s < 5 ? dj_status_names[s] : "unknown";
}

bool th_job_type_from_name(const char *name, enum th_job_type *out)
{
    for (unsigned i = 0; name && i < 2; i++) {
        if (!strcmp(name, type_names[i])) {
            *out = (enum th_job_type)i;
            return true;
        }
    }
    return false;
}

bool th_job_status_from_name(const char *name, enum th_job_status *out)
{
    for (unsigned i = 0; name && i < 6; i++) {
        if (!strcmp(name, status_names[i])) {
            *out = (enum th_job_status)i;
            return true;
        }
    }
    return false;
}

bool th_job_id_valid(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n > TH_JOB_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)id[i];
        if (c <= ' ' || c >= 0x7f || c == '/' || c == '?' || c == '#' || c == '%')
            return false;
    }
    return true;
}

static void device_clear(struct th_job_device *d)
{
    free(d->device_id);
    cJSON_Delete(d->outcome);
    free(d->error_code);
    free(d->error_text);
}

void th_job_free(struct th_job *job)
{
    if (!job)
        return;
    free(job->id);
    free(job->query_condition);
    th_query_free(job->query);
    cJSON_Delete(job->update_twin);
    cJSON_Delete(job->method);
    free(job->failure_reason);
    free(job->status_message);
    for (size_t i = 0; i < job->ndevices; i++)
        device_clear(&job->devices[i]);
    free(job->devices);
    free(job);
}

static th_result bad(struct th_error *err, const char *msg)
{
    return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID, "%s", msg);
}

/* Parse "SELECT * FROM devices WHERE <cond>" into job->query. */
static th_result parse_condition(struct th_job *job, struct th_error *err)
{
    static const char prefix[] = "SELECT * FROM devices WHERE ";
    size_t n = strlen(job->query_condition);
    char *text = malloc(sizeof prefix + n);
    if (!text)
        return th_error_set(err, TH_ERR_NOMEM, TH_EC_SERVER_ERROR, "out of memory");
    memcpy(text, prefix, sizeof prefix - 1);
    memcpy(text + sizeof prefix - 1, job->query_condition, n + 1);
    struct th_error qerr = {0};
    th_result r = th_query_parse(text, strlen(text), &job->query, &qerr);
    free(text);
    if (r == TH_ERR_NOMEM)
        return th_error_set(err, r, TH_EC_SERVER_ERROR, "out of memory");
    if (r != TH_OK)
        return th_error_set(
            err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
            "queryCondition is not a valid condition (in \"%s<queryCondition>\"): %s", prefix,
            qerr.message);
    return TH_OK;
}

/* A whole number in [lo, hi] or absent/null (def); false when it is something else. */
static bool int_member(const cJSON *obj, const char *key, int64_t def, int64_t lo, int64_t hi,
                       int64_t *out)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!j || cJSON_IsNull(j)) {
        *out = def;
        return true;
    }
    if (!cJSON_IsNumber(j) || j->valuedouble < (double)lo || j->valuedouble > (double)hi ||
        j->valuedouble != (double)(int64_t)j->valuedouble)
        return false;
    *out = (int64_t)j->valuedouble;
    return true;
}

/* updateTwin: an object; only tags and properties.desired are written (th_twin_service_write). */
static th_result take_update_twin(struct th_job *job, const cJSON *body, struct th_error *err)
{
    const cJSON *u = cJSON_GetObjectItemCaseSensitive(body, "updateTwin");
    if (!cJSON_IsObject(u))
        return bad(err, "scheduleUpdateTwin needs an object 'updateTwin' like {\"tags\":{..},"
                        "\"properties\":{\"desired\":{..}}}");
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(u, "properties");
    const cJSON *tags = cJSON_GetObjectItemCaseSensitive(u, "tags");
    const cJSON *desired = cJSON_GetObjectItemCaseSensitive(props, "desired");
    if ((props && !cJSON_IsNull(props) && !cJSON_IsObject(props)) ||
        (tags && !cJSON_IsNull(tags) && !cJSON_IsObject(tags)) ||
        (desired && !cJSON_IsNull(desired) && !cJSON_IsObject(desired)))
        return bad(err, "updateTwin: tags, properties and properties.desired must be objects");
    if (cJSON_GetObjectItemCaseSensitive(props, "reported"))
        return bad(err, "updateTwin: a job cannot write reported properties");
    if (!cJSON_IsObject(tags) && !cJSON_IsObject(desired))
        return bad(err, "updateTwin writes nothing: give tags or properties.desired");
    job->update_twin = cJSON_Duplicate(u, true);
    return job->update_twin ? TH_OK
                            : th_error_set(err, TH_ERR_NOMEM, TH_EC_SERVER_ERROR, "out of memory");
}

/* cloudToDeviceMethod: {methodName, payload, responseTimeoutInSeconds, connectTimeoutInSeconds}. */
static th_result take_method(struct th_job *job, const cJSON *body, struct th_error *err)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(body, "cloudToDeviceMethod");
    if (!cJSON_IsObject(m))
        return bad(err, "scheduleDeviceMethod needs an object 'cloudToDeviceMethod' like "
                        "{\"methodName\":..}");
    const char *name = th_json_string(m, "methodName", NULL);
    if (!name || !th_method_name_valid(name))
        return bad(err, "cloudToDeviceMethod.methodName must be a non-empty printable ASCII name "
                        "without $()<>@,;:\\\"/[]?={} or spaces");
    int64_t rto, cto;
    if (!int_member(m, "responseTimeoutInSeconds", TH_METHOD_DEFAULT_TIMEOUT_S,
                    TH_METHOD_MIN_TIMEOUT_S, TH_METHOD_MAX_TIMEOUT_S, &rto) ||
        !int_member(m, "connectTimeoutInSeconds", 0, 0, TH_METHOD_MAX_TIMEOUT_S, &cto))
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "cloudToDeviceMethod: responseTimeoutInSeconds must be within [%d; "
                            "%d], connectTimeoutInSeconds within [0; %d]",
                            TH_METHOD_MIN_TIMEOUT_S, TH_METHOD_MAX_TIMEOUT_S,
                            TH_METHOD_MAX_TIMEOUT_S);
    const cJSON *payload = cJSON_GetObjectItemCaseSensitive(m, "payload");
    char *text = payload ? th_json_print(payload) : NULL;
    size_t plen = text ? strlen(text) : 0;
    free(text);
    if (plen > TH_METHOD_MAX_PAYLOAD_BYTES)
        return th_error_set(err, TH_ERR_TOO_LARGE, TH_EC_MESSAGE_TOO_LARGE,
                            "cloudToDeviceMethod.payload is larger than 128 KB");
    cJSON *c = cJSON_CreateObject();
    cJSON *pl = payload ? cJSON_Duplicate(payload, true) : cJSON_CreateNull();
    if (!c || !pl || !cJSON_AddStringToObject(c, "methodName", name) ||
        !cJSON_AddItemToObject(c, "payload", pl) ||
        !cJSON_AddNumberToObject(c, "responseTimeoutInSeconds", (double)rto) ||
        !cJSON_AddNumberToObject(c, "connectTimeoutInSeconds", (double)cto)) {
        if (c && pl && !cJSON_GetObjectItemCaseSensitive(c, "payload"))
            cJSON_Delete(pl);
        else if (!c)
            cJSON_Delete(pl);
        cJSON_Delete(c);
        return th_error_set(err, TH_ERR_NOMEM, TH_EC_SERVER_ERROR, "out of memory");
    }
    job->method = c;
    job->method_name = th_json_string(c, "methodName", "");
    job->response_timeout_s = (int)rto;
    job->connect_timeout_s = (int)cto;
    return TH_OK;
}

th_result th_job_create(const cJSON *body, const char *path_id, int64_t now_us, struct th_job **out,
                        struct th_error *err)
{
    if (out)
        *out = NULL;
    if (!out || !path_id)
        return bad(err, "job: nothing to create");
    if (!th_job_id_valid(path_id))
        return bad(err, "the job id must be 1 to 128 printable ASCII characters without "
                        "'/', '?', '#', '%' or spaces");
    if (!cJSON_IsObject(body))
        return bad(err, "the job request must be a JSON object");
    const cJSON *jid = cJSON_GetObjectItemCaseSensitive(body, "jobId");
    if (jid && !cJSON_IsNull(jid) && (!cJSON_IsString(jid) || strcmp(jid->valuestring, path_id)))
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "the body's jobId must be the path's job id '%s'", path_id);
    struct th_job *job = calloc(1, sizeof *job);
    if (!job || !(job->id = strdup(path_id))) {
        th_job_free(job);
        return th_error_set(err, TH_ERR_NOMEM, TH_EC_SERVER_ERROR, "out of memory");
    }
    th_result r;
    const char *type = th_json_string(body, "type", NULL);
    const char *cond = th_json_string(body, "queryCondition", NULL);
    const cJSON *jstart = cJSON_GetObjectItemCaseSensitive(body, "startTime");
    int64_t max_s;
    job->created_us = now_us;
    job->start_us = now_us;
    if (!th_job_type_from_name(type, &job->type)) {
        r = bad(err, "type must be \"scheduleUpdateTwin\" or \"scheduleDeviceMethod\"");
    } else if (!cond || !cond[0]) {
        r = bad(err, "queryCondition must be a non-empty WHERE clause over devices, like "
                     "\"deviceId IN ['d1', 'd2']\"");
    } else if (!(job->query_condition = strdup(cond))) {
        r = th_error_set(err, TH_ERR_NOMEM, TH_EC_SERVER_ERROR, "out of memory");
    } else if ((r = parse_condition(job, err)) != TH_OK) {
        /* err says why */
    } else if (jstart && !cJSON_IsNull(jstart) &&
               (!cJSON_IsString(jstart) ||
                th_journal_time_parse(jstart->valuestring, &job->start_us) != TH_OK)) {
        r = bad(err, "startTime must be an ISO-8601 UTC time like "
                     "\"2026-12-06T20:00:00.000Z\", or null for now");
    } else if (!int_member(body, "maxExecutionTimeInSeconds", TH_JOB_DEFAULT_MAX_EXECUTION_S, 0,
                           INT32_MAX, &max_s)) {
        r = bad(err, "maxExecutionTimeInSeconds must be a whole number of seconds >= 0");
    } else {
        job->max_execution_s = max_s ? max_s : TH_JOB_DEFAULT_MAX_EXECUTION_S;
        r = job->type == TH_JOB_UPDATE_TWIN ? take_update_twin(job, body, err)
                                            : take_method(job, body, err);
    }
    if (r != TH_OK) {
        th_job_free(job);
        return r;
    }
    job->status = job->start_us > now_us ? TH_JOB_SCHEDULED : TH_JOB_QUEUED;
    *out = job;
    return TH_OK;
}

bool th_job_ended(const struct th_job *job)
{
    return job->status == TH_JOB_COMPLETED || job->status == TH_JOB_FAILED ||
           job->status == TH_JOB_CANCELLED;
}

bool th_job_due(const struct th_job *job, int64_t now_us)
{
    return (job->status == TH_JOB_QUEUED || job->status == TH_JOB_SCHEDULED) &&
           now_us >= job->start_us;
}

void th_job_begin(struct th_job *job, int64_t now_us)
{
    if (th_job_due(job, now_us))
        job->status = TH_JOB_RUNNING;
}

th_result th_job_add_device(struct th_job *job, const char *device_id, int64_t now_us,
                            size_t *out_index)
{
    (void)now_us;
    if (job->status != TH_JOB_RUNNING || !device_id)
        return TH_ERR_INVAL;
    if (job->ndevices == job->cap) {
        size_t cap = job->cap ? job->cap * 2 : 16;
        struct th_job_device *d = realloc(job->devices, cap * sizeof *d);
        if (!d)
            return TH_ERR_NOMEM;
        job->devices = d;
        job->cap = cap;
    }
    struct th_job_device *d = &job->devices[job->ndevices];
    memset(d, 0, sizeof *d);
    if (!(d->device_id = strdup(device_id)))
        return TH_ERR_NOMEM;
    d->status = TH_DJ_PENDING;
    if (out_index)
        *out_index = job->ndevices;
    job->ndevices++;
    return TH_OK;
}

void th_job_device_running(struct th_job *job, size_t i, int64_t now_us)
{
    if (i >= job->ndevices || job->devices[i].status != TH_DJ_PENDING)
        return;
    job->devices[i].status = TH_DJ_RUNNING;
    job->devices[i].start_us = now_us;
    job->running++;
}

/* Move device i from pending/running to an end state; false when it had ended already. */
static bool device_end(struct th_job *job, struct th_job_device *d, uint8_t status, int64_t now_us)
{
    if (d->status == TH_DJ_RUNNING) {
        job->running--;
    } else if (d->status != TH_DJ_PENDING) {
        return false;
    }
    if (!d->start_us)
        d->start_us = now_us;
    d->end_us = now_us;
    d->status = status;
    if (status == TH_DJ_COMPLETED)
        job->succeeded++;
    else if (status == TH_DJ_FAILED)
        job->failed++;
    return true;
}

static void device_fail(struct th_job *job, struct th_job_device *d, const char *code,
                        const char *text, int64_t now_us)
{
    if (device_end(job, d, TH_DJ_FAILED, now_us)) {
        d->error_code = strdup(code);
        d->error_text = text ? strdup(text) : NULL;
    }
}

void th_job_device_done(struct th_job *job, size_t i, cJSON *outcome, const char *error_code,
                        const char *error_text, int64_t now_us)
{
    if (i >= job->ndevices) {
        cJSON_Delete(outcome);
        return;
    }
    struct th_job_device *d = &job->devices[i];
    if (error_code) {
        cJSON_Delete(outcome);
        device_fail(job, d, error_code, error_text, now_us);
    } else if (device_end(job, d, TH_DJ_COMPLETED, now_us)) {
        d->outcome = outcome;
    } else {
        cJSON_Delete(outcome);
    }
}

static void set_text(char **slot, const char *text)
{
    free(*slot);
    *slot = text ? strdup(text) : NULL;
}

bool th_job_try_complete(struct th_job *job, int64_t now_us)
{
    if (job->status != TH_JOB_RUNNING || job->succeeded + job->failed < job->ndevices)
        return false;
    job->status = TH_JOB_COMPLETED;
    job->end_us = now_us;
    return true;
}

bool th_job_check_expired(struct th_job *job, int64_t now_us)
{
    if (job->status != TH_JOB_RUNNING ||
        now_us < job->start_us + job->max_execution_s * (int64_t)1000000)
        return false;
    for (size_t i = 0; i < job->ndevices; i++)
        device_fail(job, &job->devices[i], "JobExpired",
                    "the job did not reach this device within maxExecutionTimeInSeconds", now_us);
    job->status = TH_JOB_FAILED;
    job->end_us = now_us;
    set_text(&job->failure_reason, "the job ran longer than maxExecutionTimeInSeconds");
    return true;
}

bool th_job_cancel(struct th_job *job, int64_t now_us)
{
    if (th_job_ended(job))
        return false;
    for (size_t i = 0; i < job->ndevices; i++)
        (void)device_end(job, &job->devices[i], TH_DJ_CANCELLED, now_us);
    job->status = TH_JOB_CANCELLED;
    job->end_us = now_us;
    return true;
}

/* ---- documents ---- */

static bool add_time(cJSON *o, const char *key, int64_t us)
{
    char buf[TH_TIME_BUF];
    th_time_format(us, buf);
    return cJSON_AddStringToObject(o, key, buf) != NULL;
}

static bool add_raw_count(cJSON *o, const char *key, size_t n)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%zu", n);
    return cJSON_AddRawToObject(o, key, buf) != NULL;
}

static bool add_copy(cJSON *o, const char *key, const cJSON *v)
{
    cJSON *c = cJSON_Duplicate(v, true);
    if (!c || !cJSON_AddItemToObject(o, key, c)) {
        cJSON_Delete(c);
        return false;
    }
    return true;
}

cJSON *th_job_json(const struct th_job *job)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *st = o ? cJSON_CreateObject() : NULL;
    size_t pending = job->ndevices - job->succeeded - job->failed - job->running;
    size_t cancelled = 0;
    for (size_t i = 0; job->status == TH_JOB_CANCELLED && i < job->ndevices; i++)
        cancelled += job->devices[i].status == TH_DJ_CANCELLED;
    pending -= cancelled;
    bool ok =
        st && cJSON_AddStringToObject(o, "jobId", job->id) &&
        cJSON_AddStringToObject(o, "queryCondition", job->query_condition) &&
        add_time(o, "createdTime", job->created_us) && add_time(o, "startTime", job->start_us) &&
        (!job->end_us || add_time(o, "endTime", job->end_us)) &&
        cJSON_AddNumberToObject(o, "maxExecutionTimeInSeconds", (double)job->max_execution_s) &&
        cJSON_AddStringToObject(o, "type", th_job_type_name(job->type)) &&
        cJSON_AddStringToObject(o, "status", th_job_status_name(job->status)) &&
        (!job->update_twin || add_copy(o, "updateTwin", job->update_twin)) &&
        (!job->method || add_copy(o, "cloudToDeviceMethod", job->method)) &&
        (!job->failure_reason ||
         cJSON_AddStringToObject(o, "failureReason", job->failure_reason)) &&
        (!job->status_message ||
         cJSON_AddStringToObject(o, "statusMessage", job->status_message)) &&
        add_raw_count(st, "deviceCount", job->ndevices) &&
        add_raw_count(st, "failedCount", job->failed) &&
        add_raw_count(st, "succeededCount", job->succeeded) &&
        add_raw_count(st, "runningCount", job->running) &&
        add_raw_count(st, "pendingCount", pending);
    if (ok && cJSON_AddItemToObject(o, "deviceJobStatistics", st))
        return o;
    if (!ok || !cJSON_GetObjectItemCaseSensitive(o, "deviceJobStatistics"))
        cJSON_Delete(st);
    cJSON_Delete(o);
    return NULL;
}

cJSON *th_job_device_json(const struct th_job *job, size_t i)
{
    if (i >= job->ndevices)
        return NULL;
    const struct th_job_device *d = &job->devices[i];
    int64_t last = d->end_us ? d->end_us : d->start_us ? d->start_us : job->start_us;
    cJSON *o = cJSON_CreateObject();
    bool ok = o && cJSON_AddStringToObject(o, "deviceId", d->device_id) &&
              cJSON_AddStringToObject(o, "jobId", job->id) &&
              cJSON_AddStringToObject(o, "jobType", th_job_type_name(job->type)) &&
              cJSON_AddStringToObject(o, "status", th_device_job_status_name(d->status)) &&
              (d->start_us ? add_time(o, "startTimeUtc", d->start_us)
                           : cJSON_AddStringToObject(o, "startTimeUtc", TH_TIME_NEVER) != NULL) &&
              (d->end_us ? add_time(o, "endTimeUtc", d->end_us)
                         : cJSON_AddStringToObject(o, "endTimeUtc", TH_TIME_NEVER) != NULL) &&
              add_time(o, "createdDateTimeUtc", job->created_us) &&
              add_time(o, "lastUpdatedDateTimeUtc", last);
    if (ok && job->type == TH_JOB_DEVICE_METHOD && d->outcome) {
        cJSON *oc = cJSON_AddObjectToObject(o, "outcome");
        ok = oc && add_copy(oc, "deviceMethodResponse", d->outcome);
    }
    if (ok && d->error_code) {
        cJSON *e = cJSON_AddObjectToObject(o, "error");
        ok = e && cJSON_AddStringToObject(e, "code", d->error_code) &&
             cJSON_AddStringToObject(e, "description", d->error_text ? d->error_text : "");
    }
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* ---- persistence ---- */

cJSON *th_job_state_json(const struct th_job *job)
{
    cJSON *o = th_job_json(job);
    cJSON *devs = o ? cJSON_AddArrayToObject(o, "$devices") : NULL;
    if (!devs) {
        cJSON_Delete(o);
        return NULL;
    }
    for (size_t i = 0; i < job->ndevices; i++) {
        const struct th_job_device *d = &job->devices[i];
        cJSON *r = cJSON_CreateObject();
        if (!r || !cJSON_AddItemToArray(devs, r)) {
            cJSON_Delete(r);
            cJSON_Delete(o);
            return NULL;
        }
        bool ok = cJSON_AddStringToObject(r, "d", d->device_id) &&
                  cJSON_AddNumberToObject(r, "s", d->status) &&
                  cJSON_AddNumberToObject(r, "t0", (double)d->start_us) &&
                  cJSON_AddNumberToObject(r, "t1", (double)d->end_us) &&
                  (!d->outcome || add_copy(r, "o", d->outcome)) &&
                  (!d->error_code || cJSON_AddStringToObject(r, "e", d->error_code)) &&
                  (!d->error_text || cJSON_AddStringToObject(r, "et", d->error_text));
        if (!ok) {
            cJSON_Delete(o);
            return NULL;
        }
    }
    return o;
}

static th_result state_bad(struct th_error *err, const char *what)
{
    return th_error_set(err, TH_ERR_FORMAT, TH_EC_IOTHUB_FORMAT_ERROR, "job state: %s", what);
}

th_result th_job_from_state(const cJSON *state, struct th_job **out, struct th_error *err)
{
    *out = NULL;
    const char *id = th_json_string(state, "jobId", NULL);
    if (!id)
        return state_bad(err, "no jobId");
    struct th_job *job = NULL;
    struct th_error cerr = {0};
    /* The request members are the document's own: create validates them again. */
    th_result r = th_job_create(state, id, 0, &job, &cerr);
    if (r == TH_ERR_NOMEM)
        return th_error_set(err, r, TH_EC_SERVER_ERROR, "out of memory");
    if (r != TH_OK)
        return state_bad(err, cerr.message);
    const char *created = th_json_string(state, "createdTime", NULL);
    const char *end = th_json_string(state, "endTime", NULL);
    const cJSON *devs = cJSON_GetObjectItemCaseSensitive(state, "$devices");
    if (!created || th_journal_time_parse(created, &job->created_us) != TH_OK ||
        (end && th_journal_time_parse(end, &job->end_us) != TH_OK) ||
        !th_job_status_from_name(th_json_string(state, "status", NULL), &job->status) ||
        !cJSON_IsArray(devs)) {
        th_job_free(job);
        return state_bad(err, "a time, the status or $devices is missing or malformed");
    }
    set_text(&job->failure_reason, th_json_string(state, "failureReason", NULL));
    set_text(&job->status_message, th_json_string(state, "statusMessage", NULL));
    size_t n = (size_t)cJSON_GetArraySize(devs);
    job->devices = calloc(n ? n : 1, sizeof *job->devices);
    if (!job->devices) {
        th_job_free(job);
        return th_error_set(err, TH_ERR_NOMEM, TH_EC_SERVER_ERROR, "out of memory");
    }
    job->cap = n ? n : 1;
    const cJSON *r0;
    cJSON_ArrayForEach(r0, devs)
    {
        const char *d = th_json_string(r0, "d", NULL);
        double s = th_json_number(r0, "s", -1);
        if (!d || s < TH_DJ_PENDING || s > TH_DJ_CANCELLED || s != (int)s) {
            th_job_free(job);
            return state_bad(err, "a device record is malformed");
        }
        struct th_job_device *dv = &job->devices[job->ndevices++];
        dv->device_id = strdup(d);
        dv->status = (uint8_t)s;
        dv->start_us = (int64_t)th_json_number(r0, "t0", 0);
        dv->end_us = (int64_t)th_json_number(r0, "t1", 0);
        const cJSON *o = cJSON_GetObjectItemCaseSensitive(r0, "o");
        dv->outcome = o ? cJSON_Duplicate(o, true) : NULL;
        set_text(&dv->error_code, th_json_string(r0, "e", NULL));
        set_text(&dv->error_text, th_json_string(r0, "et", NULL));
        if (!dv->device_id) {
            th_job_free(job);
            return th_error_set(err, TH_ERR_NOMEM, TH_EC_SERVER_ERROR, "out of memory");
        }
        job->running += dv->status == TH_DJ_RUNNING;
        job->succeeded += dv->status == TH_DJ_COMPLETED;
        job->failed += dv->status == TH_DJ_FAILED;
    }
    *out = job;
    return TH_OK;
}
