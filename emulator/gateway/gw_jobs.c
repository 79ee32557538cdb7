/*
 * gw_jobs.c - the service REST API's jobs (docs/rest-api.md "Jobs";
 * iot-hub-devguide-jobs.md and azure-iothub's JobClient, dist/job_client.js):
 *   PUT  /jobs/v2/{jobId}         create: scheduleUpdateTwin or scheduleDeviceMethod
 *   GET  /jobs/v2/{jobId}         the job, its status and deviceJobStatistics
 *   POST /jobs/v2/{jobId}/cancel  cancel
 *   GET  /jobs/v2/query[?jobType=..][&jobStatus=..]  the jobs, paged with
 *        x-ms-max-item-count and x-ms-continuation
 * Each request becomes one control command (createJob, getJob, cancelJob,
 * listJobs; broker/control_jobs.c); the broker decides the token like for any
 * other route.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_private.h"
#include "json.h"

/* {"command": name, "jobId": the path's id}; NULL on out-of-memory. */
static cJSON *job_command(struct gw_conn *c, const char *name)
{
    cJSON *cmd = cJSON_CreateObject();
    if (!cmd || !cJSON_AddStringToObject(cmd, "command", name) ||
        (c->ids[0][0] && !cJSON_AddStringToObject(cmd, "jobId", c->ids[0]))) {
        cJSON_Delete(cmd);
        return NULL;
    }
    return cmd;
}

/* 200 with the page of jobs; x-ms-continuation while there are more. */
static void done_list(struct th_gateway *gw, struct gw_conn *c, const cJSON *entry)
{
    (void)gw;
    if (!gw_rest_answer_ok(c, entry))
        return;
    gw_rest_respond_page(c, cJSON_GetObjectItemCaseSensitive(entry, "data"), "jobResponse");
    gw_http_resume(c);
}

void gw_jobs_put(struct gw_conn *c)
{
    cJSON *body = gw_rest_body(c, false);
    if (!body)
        return;
    cJSON *cmd = job_command(c, "createJob");
    if (!cmd || !cJSON_AddItemToObject(cmd, "job", body)) {
        cJSON_Delete(body);
        cJSON_Delete(cmd);
        cmd = NULL;
    }
    gw_rest_call(c, cmd, GW_CALL_TIMEOUT_S, gw_rest_done_data);
}

void gw_jobs_get(struct gw_conn *c)
{
    gw_rest_call(c, job_command(c, "getJob"), GW_CALL_TIMEOUT_S, gw_rest_done_data);
}

void gw_jobs_cancel(struct gw_conn *c)
{
    gw_rest_call(c, job_command(c, "cancelJob"), GW_CALL_TIMEOUT_S, gw_rest_done_data);
}

/* A request header as a NUL-terminated string in buf; false when absent. */
static bool header(struct gw_conn *c, const char *name, char *buf, size_t size)
{
    const struct gw_slice *h = gw_req_header(&c->req, name);
    if (!h)
        return false;
    snprintf(buf, size, "%.*s", (int)(h->n < size - 1 ? h->n : size - 1), h->p);
    return true;
}

void gw_jobs_query(struct gw_conn *c)
{
    char type[64], status[64], page[32], cont[64];
    cJSON *cmd = job_command(c, "listJobs");
    bool ok = cmd != NULL;
    if (ok && gw_req_query(&c->req, "jobType", type, sizeof type))
        ok = cJSON_AddStringToObject(cmd, "jobType", type) != NULL;
    if (ok && gw_req_query(&c->req, "jobStatus", status, sizeof status))
        ok = cJSON_AddStringToObject(cmd, "jobStatus", status) != NULL;
    if (ok && header(c, "x-ms-continuation", cont, sizeof cont) && cont[0])
        ok = cJSON_AddStringToObject(cmd, "continuation", cont) != NULL;
    if (ok && header(c, "x-ms-max-item-count", page, sizeof page)) {
        char *end;
        long v = strtol(page, &end, 10);
        if (!page[0] || *end || v < 1) {
            cJSON_Delete(cmd);
            gw_rest_error(c, 400, TH_EC_ARGUMENT_INVALID,
                          "x-ms-max-item-count must be a whole number from 1 to 1000");
            return;
        }
        ok = cJSON_AddNumberToObject(cmd, "pageSize", (double)(v > 1000 ? 1000 : v)) != NULL;
    }
    if (!ok) {
        cJSON_Delete(cmd);
        cmd = NULL;
    }
    gw_rest_call(c, cmd, GW_CALL_TIMEOUT_S, done_list);
}
