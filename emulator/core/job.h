/*
 * job.h - IoT Hub jobs (docs/jobs.md): a twin update (scheduleUpdateTwin) or
 * a direct method (scheduleDeviceMethod) run on every device a query
 * condition selects, from a start time, with a status, per-device records
 * and counts (deviceJobStatistics), and cancel.
 *
 * The documents are the ones IoT Hub answers on /jobs/v2 (the service REST
 * API's JobResponse; azure-iot-sdk-csharp iothub/service/src/Jobs/JobResponse.cs)
 * and the per-device records of the query collection devices.jobs
 * (DeviceJob.cs). The core holds the model, validates requests and keeps the
 * counts; running a job (which twin to write, which method to call, when) is
 * the broker's (broker/control_jobs.c), which reports each device's result
 * back with th_job_device_done.
 *
 * Decisions where the hub is silent (docs/jobs.md lists them):
 * - A job id is 1 to 128 printable ASCII characters without '/', '?', '#',
 *   '%' or space; a "jobId" in the body must equal the path's.
 * - The query condition is the WHERE clause of SELECT * FROM devices; a bad
 *   condition is refused when the job is created (400004 with the column in
 *   the full query), not when it runs.
 * - startTime absent or null is "now"; maxExecutionTimeInSeconds absent or 0
 *   is 3600 (the Node SDK's default). A job still running maxExecution seconds
 *   after its start fails: its pending devices fail with "JobExpired".
 * - A device's method job is "completed" once the device answered, whatever
 *   status it answered with (outcome.deviceMethodResponse holds it); it is
 *   "failed" when the device is offline, did not answer in time or went away.
 */
#ifndef TH_JOB_H
#define TH_JOB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cjson/cJSON.h>
#include "th_result.h"

#define TH_JOB_ID_MAX 128
#define TH_JOB_DEFAULT_MAX_EXECUTION_S 3600

enum th_job_type {
    TH_JOB_UPDATE_TWIN,   /* "scheduleUpdateTwin" */
    TH_JOB_DEVICE_METHOD, /* "scheduleDeviceMethod" */
};

enum th_job_status {
    TH_JOB_QUEUED,    /* created, start time reached, not picked up yet */
    TH_JOB_SCHEDULED, /* created, start time in the future */
    TH_JOB_RUNNING,
    TH_JOB_COMPLETED,
    TH_JOB_FAILED,
    TH_JOB_CANCELLED,
};

enum th_device_job_status {
    TH_DJ_PENDING,
    TH_DJ_RUNNING, /* a method request was sent; waiting for the answer */
    TH_DJ_COMPLETED,
    TH_DJ_FAILED,
    TH_DJ_CANCELLED,
};

/* One device's part in a job: a row of devices.jobs. */
struct th_job_device {
    char *device_id;  /* owned */
    cJSON *outcome;   /* method jobs: {"status": n, "payload": ...} the device answered; owned */
    char *error_code; /* failed: the hub's error name ("DeviceNotOnline"); owned */
    char *error_text; /* failed: what happened; owned */
    int64_t start_us, end_us;
    uint8_t status; /* enum th_device_job_status */
};

struct th_job {
    char *id;
    enum th_job_type type;
    enum th_job_status status;
    char *query_condition;
    struct th_query *query;  /* SELECT * FROM devices WHERE <query_condition> */
    cJSON *update_twin;      /* twin jobs: {"tags":..,"properties":{"desired":..}} as given */
    cJSON *method;           /* method jobs: cloudToDeviceMethod, defaults filled in */
    const char *method_name; /* in `method` */
    int response_timeout_s, connect_timeout_s;
    int64_t created_us, start_us, end_us; /* end_us 0 until the job ends */
    int64_t max_execution_s;
    char *failure_reason, *status_message; /* NULL or owned */
    struct th_job_device *devices;         /* the devices selected so far, in registry order */
    size_t ndevices, cap;
    size_t failed, succeeded, running; /* counts over devices[]; pending = the rest */
};

/*
 * Create a job from the body of PUT /jobs/v2/{jobId} (`path_id` is the path's
 * id, `now_us` the creation time). On success *out owns a job the caller
 * frees with th_job_free; its status is scheduled (start in the future) or
 * queued. Fails with TH_ERR_INVAL (400004, the message names the member) for
 * a bad id, type, queryCondition (with the query's own error), startTime,
 * maxExecutionTimeInSeconds, updateTwin or cloudToDeviceMethod; TH_ERR_NOMEM.
 */
TH_NODISCARD th_result th_job_create(const cJSON *body, const char *path_id, int64_t now_us,
                                     struct th_job **out, struct th_error *err);

/* Accepts NULL and half-built jobs. */
void th_job_free(struct th_job *job);

/* Is `id` a job id twinhub accepts (see above)? */
bool th_job_id_valid(const char *id);

/* Hub names: "scheduleUpdateTwin", "queued", "pending", ...; never NULL. */
const char *th_job_type_name(enum th_job_type t);
const char *th_job_status_name(enum th_job_status s);
const char *th_device_job_status_name(enum th_device_job_status s);
/* Name -> value (exact, case-sensitive, as the hub writes them); false when unknown. */
bool th_job_type_from_name(const char *name, enum th_job_type *out);
bool th_job_status_from_name(const char *name, enum th_job_status *out);

/* Has the job ended (completed, failed or cancelled)? */
bool th_job_ended(const struct th_job *job);

/* The start time has come for a scheduled or queued job. */
bool th_job_due(const struct th_job *job, int64_t now_us);

/* A due job starts running (no-op otherwise). */
void th_job_begin(struct th_job *job, int64_t now_us);

/*
 * Add a selected device (pending) and give its index in job->devices.
 * TH_ERR_NOMEM; TH_ERR_INVAL when the job is not running.
 */
TH_NODISCARD th_result th_job_add_device(struct th_job *job, const char *device_id, int64_t now_us,
                                         size_t *out_index);

/* Device `i` is running (a method request went out). */
void th_job_device_running(struct th_job *job, size_t i, int64_t now_us);

/*
 * Device `i` is done: completed with `outcome` (ownership taken; may be NULL),
 * or failed when `error_code` is not NULL (outcome is then freed). A device
 * that already ended (cancelled, expired) keeps its state and the outcome is
 * freed. Copies the strings; on out-of-memory the texts are left out.
 */
void th_job_device_done(struct th_job *job, size_t i, cJSON *outcome, const char *error_code,
                        const char *error_text, int64_t now_us);

/*
 * Selection is over: once no device is pending or running the job completes
 * (end time `now_us`). Returns whether it ended now.
 */
bool th_job_try_complete(struct th_job *job, int64_t now_us);

/*
 * The maxExecutionTimeInSeconds rule: a running job past start + max fails,
 * its pending and running devices failing with "JobExpired". Returns whether
 * it ended now.
 */
bool th_job_check_expired(struct th_job *job, int64_t now_us);

/*
 * POST /jobs/v2/{id}/cancel: a job that has not ended is cancelled with its
 * pending and running devices. A job that ended stays as it is (the answer is
 * the job either way). Returns whether it was cancelled now.
 */
bool th_job_cancel(struct th_job *job, int64_t now_us);

/*
 * The job as GET /jobs/v2/{id} answers it: jobId, queryCondition,
 * createdTime, startTime, endTime (once ended), maxExecutionTimeInSeconds,
 * type, status, updateTwin or cloudToDeviceMethod, failureReason and
 * statusMessage (when set), deviceJobStatistics {deviceCount, failedCount,
 * succeededCount, runningCount, pendingCount}. Caller frees; NULL on OOM.
 */
cJSON *th_job_json(const struct th_job *job);

/*
 * Device `i`'s record as FROM devices.jobs shows it: deviceId, jobId, jobType,
 * status, startTimeUtc, endTimeUtc, createdDateTimeUtc,
 * lastUpdatedDateTimeUtc, outcome {deviceMethodResponse} (method jobs that
 * got an answer), error {code, description} (failed). Caller frees; NULL on OOM.
 */
cJSON *th_job_device_json(const struct th_job *job, size_t i);

/*
 * Persistence (--state-dir): the job with its device records, and back.
 * th_job_from_state fails with TH_ERR_FORMAT (the message says what) on a
 * document th_job_state_json did not write, TH_ERR_NOMEM.
 */
cJSON *th_job_state_json(const struct th_job *job);
TH_NODISCARD th_result th_job_from_state(const cJSON *state, struct th_job **out,
                                         struct th_error *err);

#endif
