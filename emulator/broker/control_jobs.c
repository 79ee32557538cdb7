/*
 * control_jobs.c - IoT Hub jobs in the broker (docs/jobs.md): the control
 * commands createJob, getJob, cancelJob and listJobs, running each job from
 * TICK a slice at a time so the broker keeps serving its clients, the rows of
 * FROM devices.jobs, and the jobs' files in the state directory.
 *
 * A job is one request however many devices it selects: at its start time the
 * ids of all devices are taken once (devices created later are not in the
 * job, as in IoT Hub, which evaluates the condition when the job starts), then
 * each tick examines the next devices for up to BRK_JOB_SLICE_MS: the
 * condition is run on the device's twin, and a selected device gets the twin
 * update (core th_twin_service_write, persisted, desired notification,
 * event: the same path as updateTwin) or the method request (control_methods.c,
 * the same path as invokeMethod; the answer comes back through
 * brk_jobs_method_done). The model and its counts are core/job.c.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "control.h"
#include "job.h"
#include "json.h"
#include "query.h"
#include "registry_query.h"
#include "th_file.h"
#include "twin.h"
#include "util.h"

#define BRK_JOB_SLICE_MS 40 /* work per tick: the broker keeps serving between slices */
#define BRK_JOBS_MAX 1000   /* jobs kept (ended ones are dropped first, oldest first) */
#define BRK_JOB_STATE_MAX (256 * 1024 * 1024)

struct brk_job {
    struct th_job *job;
    char **cand;        /* device ids to examine, taken at the start; owned */
    size_t ncand, next; /* candidates and the next one to examine */
    struct brk_job *next_job;
};

/* ---- lookup and persistence ---- */

static struct brk_job *find_job(struct brk_plugin *p, const char *id)
{
    for (struct brk_job *j = p->jobs; j; j = j->next_job) {
        if (!strcmp(j->job->id, id)) {
            return j;
        }
    }
    return NULL;
}

static void free_cand(struct brk_job *j)
{
    for (size_t i = 0; i < j->ncand; i++) {
        free(j->cand[i]);
    }
    free(j->cand);
    j->cand = NULL;
    j->ncand = j->next = 0;
}

static void job_free(struct brk_job *j)
{
    if (j) {
        free_cand(j);
        th_job_free(j->job);
        free(j);
    }
}

void brk_jobs_free_all(struct brk_plugin *p)
{
    struct brk_job *j = p->jobs, *next;
    for (; j; j = next) {
        next = j->next_job;
        job_free(j);
    }
    p->jobs = NULL;
}

/* DIR/jobs/<id>.json, the id percent-encoded like device files. */
static void job_path(const struct brk_plugin *p, const char *id, char *out, size_t size)
{
    size_t n = (size_t)snprintf(out, size, "%s/jobs/", p->state_dir);
    for (const unsigned char *s = (const unsigned char *)id; *s && n + 4 < size; s++) {
        if ((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
            *s == '_' || *s == '-') {
            out[n++] = (char)*s;
        } else {
            n += (size_t)snprintf(out + n, size - n, "%%%02X", *s);
        }
    }
    snprintf(out + n, size - n, ".json");
}

/* Save a job (on creation and when it ends or is cancelled); no-op without a state dir. */
static void save_job(struct brk_plugin *p, const struct th_job *job)
{
    char path[4096];
    if (!p->state_dir) {
        return;
    }
    snprintf(path, sizeof path, "%s/jobs", p->state_dir);
    (void)mkdir(path, 0700);
    cJSON *state = th_job_state_json(job);
    char *text = state ? cJSON_PrintUnformatted(state) : NULL;
    cJSON_Delete(state);
    job_path(p, job->id, path, sizeof path);
    if (!text || th_file_replace_bytes(path, 0600, text, strlen(text)) != TH_FILE_DONE) {
        brk_log(p, MOSQ_LOG_ERR, "job %s | state not saved | %s", job->id,
                text ? strerror(errno) : "out of memory");
    }
    free(text);
}

static void remove_job_file(struct brk_plugin *p, const char *id)
{
    char path[4096];
    if (p->state_dir) {
        job_path(p, id, path, sizeof path);
        (void)unlink(path);
    }
}

/* Keep at most BRK_JOBS_MAX jobs: drop the oldest ended one. True when there is room. */
static bool make_room(struct brk_plugin *p)
{
    size_t n = 0;
    for (struct brk_job *j = p->jobs; j; j = j->next_job) {
        n++;
    }
    if (n < BRK_JOBS_MAX) {
        return true;
    }
    for (struct brk_job **pp = &p->jobs; *pp; pp = &(*pp)->next_job) {
        if (th_job_ended((*pp)->job)) {
            struct brk_job *j = *pp;
            *pp = j->next_job;
            remove_job_file(p, j->job->id);
            job_free(j);
            return true;
        }
    }
    return false;
}

static bool append_job(struct brk_plugin *p, struct th_job *job)
{
    struct brk_job *j = calloc(1, sizeof *j), **pp = &p->jobs;
    if (!j) {
        return false;
    }
    j->job = job;
    while (*pp) {
        pp = &(*pp)->next_job;
    }
    *pp = j;
    return true;
}

int brk_jobs_load(struct brk_plugin *p)
{
    char dir[4096], path[4600];
    snprintf(dir, sizeof dir, "%s/jobs", p->state_dir);
    DIR *d = opendir(dir);
    struct dirent *e;
    int64_t now = th_now_us();
    if (!d) {
        return MOSQ_ERR_SUCCESS; /* no jobs yet */
    }
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 5, ".json") != 0) {
            continue;
        }
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        size_t n = 0;
        char *text = th_file_read(path, BRK_JOB_STATE_MAX, &n);
        /* cJSON's tree, numbers parsed in one pass (a fleet job's file holds two 16-digit times
         * per device: cJSON's strtod made it a quarter of a second at start-up). */
        cJSON *state = text ? th_json_parse_as_cjson(text, n) : NULL;
        struct th_job *job = NULL;
        struct th_error err = {0};
        free(text);
        if (!state || th_job_from_state(state, &job, &err) != TH_OK) {
            mosquitto_log_printf(MOSQ_LOG_WARNING, "twinhub: job file %s not loaded: %s", path,
                                 state ? err.message : "not JSON");
            cJSON_Delete(state);
            continue;
        }
        cJSON_Delete(state);
        if (job->status == TH_JOB_RUNNING) {
            /* The devices it reached keep their result; the rest never ran. */
            th_job_cancel(job, now);
            job->status = TH_JOB_FAILED;
            free(job->failure_reason);
            job->failure_reason = strdup("the hub stopped while the job was running");
        }
        if (!append_job(p, job)) {
            th_job_free(job);
            closedir(d);
            return MOSQ_ERR_NOMEM;
        }
    }
    closedir(d);
    return MOSQ_ERR_SUCCESS;
}

/* ---- running ---- */

/* Take the ids of all devices (the job's candidates). False on out-of-memory. */
static bool take_candidates(struct brk_plugin *p, struct brk_job *j)
{
    size_t cap = th_registry_device_count(p->reg);
    j->cand = calloc(cap ? cap : 1, sizeof *j->cand);
    if (!j->cand) {
        return false;
    }
    for (struct th_identity *d = th_registry_next_device(p->reg, NULL); d && j->ncand < cap;
         d = th_registry_next_device(p->reg, d)) {
        if (!(j->cand[j->ncand] = strdup(d->device_id))) {
            return false;
        }
        j->ncand++;
    }
    return true;
}

/* The twin update of a twin job on one selected device (index i). */
static void update_twin(struct brk_plugin *p, struct th_job *job, struct th_identity *id, size_t i,
                        int64_t now_us)
{
    struct th_error err = {0};
    struct th_twin_write_result res;
    struct th_twin_write req = {.mode = TH_TWIN_WRITE_PATCH, .doc = job->update_twin};
    if (th_twin_service_write(id->twin, &req, now_us, &res, &err) != TH_OK) {
        th_job_device_done(job, i, NULL, th_error_code_name(err.code), err.message, now_us);
        return;
    }
    brk_persist_device(p, id);
    if (res.notification) {
        bool delivered = brk_deliver_desired(p, id, res.notification, res.desired_version);
        brk_event_emit(p, TH_JOURNAL_DESIRED, id->device_id, NULL,
                       th_journal_data_desired(res.desired, res.desired_version, delivered));
        res.desired = NULL;
    }
    th_twin_write_result_free(&res);
    th_job_device_done(job, i, NULL, NULL, NULL, now_us);
}

/* Examine candidates of a running job until the slice's deadline. */
static void run_slice(struct brk_plugin *p, struct brk_job *j, int64_t deadline_ms)
{
    struct th_job *job = j->job;
    int64_t now_us = th_now_us();
    /* A condition that names no "$" member runs on one query document filled in place per
     * twin (registry_query.h); NULL (also on OOM): each twin's full document. */
    struct th_query_doc *qd = NULL;
    if (!th_query_needs_meta(job->query) && th_query_doc_new(job->query, &qd) != TH_OK) {
        qd = NULL;
    }
    while (j->next < j->ncand) {
        if ((j->next & 31) == 0 && th_mono_ms() >= deadline_ms) {
            th_query_doc_free(qd);
            return;
        }
        const char *dev_id = j->cand[j->next];
        struct th_identity *id = th_registry_find(p->reg, dev_id, NULL);
        bool match = false;
        if (id) {
            cJSON *full = qd ? NULL : th_identity_twin_json(id);
            const cJSON *doc = qd ? th_query_doc_fill(qd, id) : full;
            if (!doc || th_query_matches(job->query, doc, &match) != TH_OK) {
                match = false;
                brk_log(p, MOSQ_LOG_WARNING, "job %s | %s not examined | out of memory", job->id,
                        dev_id);
            }
            cJSON_Delete(full);
        }
        size_t i;
        if (match && th_job_add_device(job, dev_id, now_us, &i) == TH_OK) {
            if (job->type == TH_JOB_UPDATE_TWIN) {
                update_twin(p, job, id, i, now_us);
            } else {
                brk_methods_start_for_job(p, id, j, i);
            }
        }
        free(j->cand[j->next]);
        j->cand[j->next] = NULL;
        j->next++;
    }
    th_query_doc_free(qd);
    free_cand(j);
}

static void job_ended(struct brk_plugin *p, struct brk_job *j)
{
    struct th_job *job = j->job;
    free_cand(j);
    brk_log(p, MOSQ_LOG_NOTICE, "job %s | %s | devices=%zu succeeded=%zu failed=%zu", job->id,
            th_job_status_name(job->status), job->ndevices, job->succeeded, job->failed);
    save_job(p, job);
}

void brk_jobs_tick(struct brk_plugin *p)
{
    int64_t deadline_ms = th_mono_ms() + BRK_JOB_SLICE_MS;
    for (struct brk_job *j = p->jobs; j; j = j->next_job) {
        struct th_job *job = j->job;
        if (th_job_ended(job)) {
            continue;
        }
        int64_t now_us = th_now_us();
        if (th_job_due(job, now_us)) {
            th_job_begin(job, now_us);
            if (!take_candidates(p, j)) {
                free_cand(j);
                th_job_cancel(job, now_us);
                job->status = TH_JOB_FAILED;
                free(job->failure_reason);
                job->failure_reason = strdup("out of memory selecting the devices");
                job_ended(p, j);
                continue;
            }
            brk_log(p, MOSQ_LOG_INFO, "job %s | running | candidates=%zu", job->id, j->ncand);
        }
        if (job->status != TH_JOB_RUNNING) {
            continue;
        }
        if (th_job_check_expired(job, now_us)) {
            brk_methods_forget_job(p, j);
            job_ended(p, j);
            continue;
        }
        if (j->cand && th_mono_ms() < deadline_ms) {
            run_slice(p, j, deadline_ms);
        }
        if (!j->cand && th_job_try_complete(job, th_now_us())) {
            job_ended(p, j);
        }
    }
}

void brk_jobs_device_sent(struct brk_plugin *p, struct brk_job *j, size_t i)
{
    (void)p;
    th_job_device_running(j->job, i, th_now_us());
}

void brk_jobs_method_done(struct brk_plugin *p, struct brk_job *j, size_t i, cJSON *data,
                          const struct th_error *err)
{
    int64_t now_us = th_now_us();
    if (err) {
        cJSON_Delete(data);
        th_job_device_done(j->job, i, NULL, th_error_code_name(err->code), err->message, now_us);
    } else {
        th_job_device_done(j->job, i, data, NULL, NULL, now_us);
    }
    if (!j->cand && th_job_try_complete(j->job, now_us)) {
        job_ended(p, j);
    }
}

const struct th_job *brk_job_of(const struct brk_job *j)
{
    return j->job;
}

/* ---- devices.jobs ---- */

cJSON **brk_jobs_device_docs(struct brk_plugin *p, size_t *out_n)
{
    size_t n = 0, k = 0;
    for (struct brk_job *j = p->jobs; j; j = j->next_job) {
        n += j->job->ndevices;
    }
    cJSON **docs = calloc(n ? n : 1, sizeof *docs);
    for (struct brk_job *j = p->jobs; docs && j; j = j->next_job) {
        for (size_t i = 0; i < j->job->ndevices; i++) {
            if (!(docs[k] = th_job_device_json(j->job, i))) {
                for (size_t m = 0; m < k; m++) {
                    cJSON_Delete(docs[m]);
                }
                free(docs);
                return NULL;
            }
            k++;
        }
    }
    *out_n = k;
    return docs;
}

/* ---- commands ---- */

static struct brk_job *job_or_reply(struct brk_cmd_ctx *x)
{
    struct th_error err = {0};
    const char *id;
    if (!brk_ctl_string_or_reply(x, "jobId", &id)) {
        return NULL;
    }
    if (!id) {
        th_error_set(&err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID, "'%s' needs a string 'jobId'",
                     x->name);
        brk_ctl_reply_err(x, &err);
        return NULL;
    }
    struct brk_job *j = find_job(x->p, id);
    if (!j) {
        th_error_set(&err, TH_ERR_NOT_FOUND, TH_EC_NOT_FOUND, "job '%s' does not exist", id);
        brk_ctl_reply_err(x, &err);
    }
    return j;
}

/* createJob {jobId, job: <the body of PUT /jobs/v2/{jobId}>} -> the job. */
void brk_cmd_create_job(struct brk_cmd_ctx *x)
{
    struct th_error err = {0};
    const char *id;
    struct th_job *job = NULL;
    if (!brk_ctl_need_perm(x, TH_PERM_REGISTRY_WRITE, "RegistryWrite") ||
        !brk_ctl_string_or_reply(x, "jobId", &id)) {
        return;
    }
    if (!id) {
        th_error_set(&err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                     "'createJob' needs a string 'jobId' and an object 'job'");
        brk_ctl_reply_err(x, &err);
        return;
    }
    if (find_job(x->p, id)) {
        th_error_set(&err, TH_ERR_EXISTS, TH_EC_ARGUMENT_INVALID,
                     "a job with id '%s' already exists; job ids cannot be reused", id);
        brk_ctl_reply_err(x, &err);
        return;
    }
    if (th_job_create(cJSON_GetObjectItemCaseSensitive(x->cmd, "job"), id, th_now_us(), &job,
                      &err) != TH_OK) {
        brk_ctl_reply_err(x, &err);
        return;
    }
    if (!make_room(x->p)) {
        th_job_free(job);
        th_error_set(&err, TH_ERR_THROTTLED, TH_EC_THROTTLING_EXCEPTION,
                     "%d jobs have not ended yet; wait for one to end or cancel one", BRK_JOBS_MAX);
        brk_ctl_reply_err(x, &err);
        return;
    }
    if (!append_job(x->p, job)) {
        th_job_free(job);
        th_error_set(&err, TH_ERR_NOMEM, TH_EC_SERVER_ERROR, "out of memory");
        brk_ctl_reply_err(x, &err);
        return;
    }
    save_job(x->p, job);
    brk_log(x->p, MOSQ_LOG_INFO, "job %s | created | type=%s status=%s", job->id,
            th_job_type_name(job->type), th_job_status_name(job->status));
    brk_ctl_reply_data(x, th_job_json(job));
}

void brk_cmd_get_job(struct brk_cmd_ctx *x)
{
    struct brk_job *j;
    if (!brk_ctl_need_perm(x, TH_PERM_REGISTRY_READ | TH_PERM_REGISTRY_WRITE, "RegistryRead") ||
        !(j = job_or_reply(x))) {
        return;
    }
    brk_ctl_reply_data(x, th_job_json(j->job));
}

void brk_cmd_cancel_job(struct brk_cmd_ctx *x)
{
    struct brk_job *j;
    if (!brk_ctl_need_perm(x, TH_PERM_REGISTRY_WRITE, "RegistryWrite") || !(j = job_or_reply(x))) {
        return;
    }
    if (th_job_cancel(j->job, th_now_us())) {
        brk_methods_forget_job(x->p, j);
        job_ended(x->p, j);
    }
    brk_ctl_reply_data(x, th_job_json(j->job));
}

/*
 * listJobs {jobType?, jobStatus?, pageSize?, continuation?} -> {items: [job...],
 * continuation} (GET /jobs/v2/query), oldest first.
 */
void brk_cmd_list_jobs(struct brk_cmd_ctx *x)
{
    struct th_error err = {0};
    const char *type_name, *status_name, *cont;
    enum th_job_type type = TH_JOB_UPDATE_TWIN;
    enum th_job_status status = TH_JOB_QUEUED;
    int page;
    if (!brk_ctl_need_perm(x, TH_PERM_REGISTRY_READ | TH_PERM_REGISTRY_WRITE, "RegistryRead") ||
        !brk_ctl_string_or_reply(x, "jobType", &type_name) ||
        !brk_ctl_string_or_reply(x, "jobStatus", &status_name) ||
        !brk_ctl_string_or_reply(x, "continuation", &cont) ||
        !brk_ctl_int_or_reply(x, "pageSize", 100, 1, 1000, &page)) {
        return;
    }
    if ((type_name && !th_job_type_from_name(type_name, &type)) ||
        (status_name && !th_job_status_from_name(status_name, &status))) {
        th_error_set(&err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                     "jobType must be scheduleUpdateTwin or scheduleDeviceMethod; jobStatus one "
                     "of queued, scheduled, running, completed, failed, cancelled");
        brk_ctl_reply_err(x, &err);
        return;
    }
    size_t skip = 0;
    if (cont) {
        char *end;
        unsigned long long v = strtoull(cont, &end, 10);
        if (*cont < '0' || *cont > '9' || *end || v > 1000000) {
            th_error_set(&err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                         "'continuation' must be the token returned by the previous page");
            brk_ctl_reply_err(x, &err);
            return;
        }
        skip = (size_t)v;
    }
    cJSON *data = cJSON_CreateObject();
    cJSON *items = data ? cJSON_AddArrayToObject(data, "items") : NULL;
    size_t k = 0;
    bool ok = items != NULL, more = false;
    for (struct brk_job *j = x->p->jobs; ok && j; j = j->next_job) {
        if ((type_name && j->job->type != type) || (status_name && j->job->status != status)) {
            continue;
        }
        if (k >= skip + (size_t)page) {
            more = true;
            break;
        }
        if (k++ >= skip) {
            ok = brk_ctl_push(items, th_job_json(j->job));
        }
    }
    char next[32];
    snprintf(next, sizeof next, "%zu", skip + (size_t)page);
    ok = ok && (more ? cJSON_AddStringToObject(data, "continuation", next) != NULL
                     : cJSON_AddNullToObject(data, "continuation") != NULL);
    if (!ok) {
        cJSON_Delete(data);
        data = NULL;
    }
    brk_ctl_reply_data(x, data);
}
