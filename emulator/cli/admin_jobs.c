/*
 * admin_jobs.c - `twinhub job` (docs/cli.md): create a twin-update or
 * direct-method job over a query condition, show it, wait for it to end,
 * cancel it, list jobs, through the control API (createJob, getJob,
 * cancelJob, listJobs; docs/control-api.md, docs/jobs.md).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client.h"

#define JOB_WAIT_DEFAULT_S 600
#define JOB_LIST_MAX_PAGES 10000

static void human_job(const cJSON *job, const void *ctx)
{
    (void)ctx;
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(job, "deviceJobStatistics");
    printf("job %s: %s %s\n", th_str(job, "jobId", ""), th_str(job, "type", ""),
           th_str(job, "status", ""));
    printf("  condition  %s\n", th_str(job, "queryCondition", ""));
    printf("  start      %s\n", th_str(job, "startTime", ""));
    if (th_str(job, "endTime", NULL))
        printf("  end        %s\n", th_str(job, "endTime", ""));
    printf("  devices    %.0f: %.0f succeeded, %.0f failed, %.0f running, %.0f pending\n",
           th_num(st, "deviceCount"), th_num(st, "succeededCount"), th_num(st, "failedCount"),
           th_num(st, "runningCount"), th_num(st, "pendingCount"));
    if (th_str(job, "failureReason", NULL))
        printf("  failure    %s\n", th_str(job, "failureReason", ""));
}

/* {"command": name, "jobId": id}; NULL on out-of-memory. */
static cJSON *job_command(const char *name, const char *id)
{
    cJSON *cmd = th_command_new(name);
    if (cmd && id && !cJSON_AddStringToObject(cmd, "jobId", id)) {
        cJSON_Delete(cmd);
        return NULL;
    }
    return cmd;
}

/* The job body from the options: --desired/--tags (twin) or --method (method). */
static int job_body(const struct th_args *a, const char *condition, cJSON **out)
{
    const char *method = th_args_get(a, "method");
    const char *desired = th_args_get(a, "desired"), *tags = th_args_get(a, "tags");
    const char *payload = th_args_get(a, "payload"), *start = th_args_get(a, "start");
    const char *max = th_args_get(a, "max-execution");
    cJSON *body = cJSON_CreateObject(), *v = NULL;
    int rc;
    *out = NULL;
    if (!body || !cJSON_AddStringToObject(body, "queryCondition", condition) ||
        (start && !cJSON_AddStringToObject(body, "startTime", start))) {
        cJSON_Delete(body);
        return th_oom();
    }
    if (max) {
        double s;
        if ((rc = th_arg_number(a, "--max-execution", max, 1, 2147483647, &s)) >= 0) {
            cJSON_Delete(body);
            return rc;
        }
        if (!cJSON_AddNumberToObject(body, "maxExecutionTimeInSeconds", s)) {
            cJSON_Delete(body);
            return th_oom();
        }
    }
    if (method) {
        if (desired || tags) {
            cJSON_Delete(body);
            return th_usage_error(a, "a job either calls a method (--method) or updates twins "
                                     "(--desired, --tags), not both");
        }
        cJSON *m = cJSON_AddObjectToObject(body, "cloudToDeviceMethod");
        if (!cJSON_AddStringToObject(body, "type", "scheduleDeviceMethod") || !m ||
            !cJSON_AddStringToObject(m, "methodName", method)) {
            cJSON_Delete(body);
            return th_oom();
        }
        if (payload) {
            char err[256];
            if (!(v = th_parse_json_text(payload, strlen(payload), "--payload", err, sizeof err))) {
                cJSON_Delete(body);
                return th_usage_error(a, "%s", err);
            }
            cJSON_AddItemToObject(m, "payload", v);
        }
        if (a->timeout_s > 0 &&
            !cJSON_AddNumberToObject(m, "responseTimeoutInSeconds", a->timeout_s)) {
            cJSON_Delete(body);
            return th_oom();
        }
        *out = body;
        return -1;
    }
    if (!desired && !tags) {
        cJSON_Delete(body);
        return th_usage_error(a, "give --desired and/or --tags (a twin update) or --method");
    }
    cJSON *u = cJSON_AddObjectToObject(body, "updateTwin");
    if (!u || !cJSON_AddStringToObject(body, "type", "scheduleUpdateTwin")) {
        cJSON_Delete(body);
        return th_oom();
    }
    if (tags) {
        if ((rc = th_arg_json(a, "--tags", tags, true, &v)) >= 0) {
            cJSON_Delete(body);
            return rc;
        }
        cJSON_AddItemToObject(u, "tags", v);
    }
    if (desired) {
        cJSON *p = cJSON_AddObjectToObject(u, "properties");
        if ((rc = th_arg_json(a, "--desired", desired, true, &v)) >= 0) {
            cJSON_Delete(body);
            return rc;
        }
        if (!p || !cJSON_AddItemToObject(p, "desired", v)) {
            cJSON_Delete(v);
            cJSON_Delete(body);
            return th_oom();
        }
    }
    *out = body;
    return -1;
}

/* getJob until the job ends or `wait_s` passed; *data gets the last job. */
static int wait_job(const struct th_args *a, struct th_client *c, const char *id, double wait_s,
                    cJSON **data)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        cJSON *cmd = job_command("getJob", id);
        if (!cmd)
            return th_oom();
        int rc = th_client_call(c, cmd, a->timeout_s > 0 ? a->timeout_s : 10, data);
        if (rc >= 0)
            return rc;
        const char *s = th_str(*data, "status", "");
        if (!strcmp(s, "completed") || !strcmp(s, "failed") || !strcmp(s, "cancelled"))
            return -1;
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((double)(t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 > wait_s) {
            fprintf(stderr, "twinhub: job %s is still %s after %.0f s\n", id, s, wait_s);
            return TH_EXIT_FAIL;
        }
        cJSON_Delete(*data);
        *data = NULL;
        nanosleep(&(struct timespec){0, 200 * 1000000L}, NULL); /* polling a remote status */
    }
}

static int job_create(const struct th_args *a, const char *const *args, int nargs)
{
    (void)nargs;
    cJSON *body, *data = NULL;
    int rc = job_body(a, args[1], &body);
    if (rc >= 0)
        return rc;
    cJSON *cmd = job_command("createJob", args[0]);
    if (!cmd || !cJSON_AddItemToObject(cmd, "job", body)) {
        cJSON_Delete(body);
        cJSON_Delete(cmd);
        return th_oom();
    }
    struct th_client *c;
    if ((rc = th_client_open(a, 10, &c)) >= 0) {
        cJSON_Delete(cmd);
        return rc;
    }
    rc = th_client_call(c, cmd, a->timeout_s > 0 ? a->timeout_s : 10, &data);
    if (rc < 0 && th_args_has(a, "wait")) {
        cJSON_Delete(data);
        data = NULL;
        rc = wait_job(a, c, args[0], JOB_WAIT_DEFAULT_S, &data);
    }
    th_client_close(c);
    return th_finish(a, rc, data, human_job, NULL);
}

static int job_show(const struct th_args *a, const char *const *args, int nargs)
{
    (void)nargs;
    cJSON *data = NULL;
    struct th_client *c;
    int rc = th_client_open(a, 10, &c);
    if (rc >= 0)
        return rc;
    if (th_args_has(a, "wait")) {
        rc = wait_job(a, c, args[0], JOB_WAIT_DEFAULT_S, &data);
    } else {
        cJSON *cmd = job_command("getJob", args[0]);
        rc = cmd ? th_client_call(c, cmd, a->timeout_s > 0 ? a->timeout_s : 10, &data) : th_oom();
    }
    th_client_close(c);
    return th_finish(a, rc, data, human_job, NULL);
}

static int job_cancel(const struct th_args *a, const char *const *args, int nargs)
{
    (void)nargs;
    cJSON *cmd = job_command("cancelJob", args[0]), *data = NULL;
    if (!cmd)
        return th_oom();
    int rc = th_call_once(a, cmd, &data, NULL);
    return th_finish(a, rc, data, human_job, NULL);
}

static void human_list(const cJSON *items, const void *ctx)
{
    (void)ctx;
    const char *heads[] = {"jobId", "type", "status", "devices", "succeeded", "failed"};
    struct th_table *t = th_table_new(6, heads);
    const cJSON *j;
    int n = 0;
    cJSON_ArrayForEach(j, items)
    {
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(j, "deviceJobStatistics");
        char d[24], s[24], f[24];
        snprintf(d, sizeof d, "%.0f", th_num(st, "deviceCount"));
        snprintf(s, sizeof s, "%.0f", th_num(st, "succeededCount"));
        snprintf(f, sizeof f, "%.0f", th_num(st, "failedCount"));
        const char *row[] = {
            th_str(j, "jobId", ""), th_str(j, "type", ""), th_str(j, "status", ""), d, s, f};
        if (t)
            th_table_row(t, row);
        n++;
    }
    if (t && n)
        th_table_print(t, stdout);
    th_table_free(t);
    printf("%d job%s\n", n, n == 1 ? "" : "s");
}

static int job_list(const struct th_args *a, const char *const *args, int nargs)
{
    (void)args;
    (void)nargs;
    const char *type = th_args_get(a, "type"), *status = th_args_get(a, "status");
    cJSON *all = cJSON_CreateArray();
    char *cont = NULL;
    struct th_client *c;
    int rc = all ? th_client_open(a, 10, &c) : th_oom();
    if (rc >= 0) {
        cJSON_Delete(all);
        return rc;
    }
    for (int page = 0; rc < 0 && page < JOB_LIST_MAX_PAGES; page++) {
        cJSON *cmd = job_command("listJobs", NULL), *data = NULL;
        if (!cmd || (type && !cJSON_AddStringToObject(cmd, "jobType", type)) ||
            (status && !cJSON_AddStringToObject(cmd, "jobStatus", status)) ||
            (cont && !cJSON_AddStringToObject(cmd, "continuation", cont))) {
            cJSON_Delete(cmd);
            rc = th_oom();
            break;
        }
        rc = th_client_call(c, cmd, a->timeout_s > 0 ? a->timeout_s : 10, &data);
        if (rc >= 0)
            break;
        cJSON *items = cJSON_GetObjectItemCaseSensitive(data, "items"), *it;
        while (items && (it = cJSON_DetachItemFromArray(items, 0)) != NULL)
            cJSON_AddItemToArray(all, it);
        free(cont);
        cont = th_str(data, "continuation", NULL) ? strdup(th_str(data, "continuation", "")) : NULL;
        cJSON_Delete(data);
        if (!cont)
            break;
    }
    free(cont);
    th_client_close(c);
    if (rc >= 0) {
        cJSON_Delete(all);
        return rc;
    }
    return th_finish(a, -1, all, human_list, NULL);
}

static const struct th_optspec job_specs[] = {
    {"desired", 0, true}, {"tags", 0, true},          {"method", 0, true}, {"payload", 0, true},
    {"start", 0, true},   {"max-execution", 0, true}, {"wait", 0, false},  {"type", 0, true},
    {"status", 0, true},  {NULL, 0, false},
};

static const struct th_action job_actions[] = {
    {"create", job_create, "desired tags method payload start max-execution wait", 2, 2,
     "JOB \"CONDITION\""},
    {"show", job_show, "wait", 1, 1, "JOB"},
    {"cancel", job_cancel, "", 1, 1, "JOB"},
    {"list", job_list, "type status", 0, 0, ""},
    {NULL, NULL, NULL, 0, 0, NULL},
};

void th_usage_job(FILE *out)
{
    fprintf(
        out,
        "usage: twinhub job create JOB \"CONDITION\" (--desired JSON|FILE | --tags JSON|FILE |\n"
        "                          --method NAME [--payload JSON]) [--start TIME]\n"
        "                          [--max-execution S] [--wait]\n"
        "       twinhub job show JOB [--wait]\n"
        "       twinhub job cancel JOB\n"
        "       twinhub job list [--type scheduleUpdateTwin|scheduleDeviceMethod]\n"
        "                        [--status queued|scheduled|running|completed|failed|cancelled]\n"
        "\n"
        "IoT Hub jobs (docs/jobs.md): one request that updates the twins of, or calls a\n"
        "direct method on, every device the CONDITION (the WHERE clause of a query over\n"
        "devices) selects when the job starts.\n"
        "\n"
        "  create   --desired / --tags: a twin update (merge-patch); --method NAME: a\n"
        "           direct method (--payload JSON, --timeout S its response timeout);\n"
        "           --start TIME an ISO-8601 UTC time (default now); --max-execution S\n"
        "           (default 3600); --wait: wait until the job ends, then show it\n"
        "  show     the job, its status and device counts (--wait: once it ends)\n"
        "  cancel   cancel a job that has not ended\n"
        "  list     the jobs, oldest first; FROM devices.jobs (twinhub query) lists\n"
        "           every device's part\n"
        "\n"
        "examples:\n"
        "  twinhub job create fw-2 \"tags.site = 'lab'\" --desired '{\"fw\":\"2.0\"}' --wait\n"
        "  twinhub job create reboot-all \"status = 'enabled'\" --method reboot\n");
    th_global_options_usage(out);
}

int th_cmd_job(int argc, char **argv)
{
    return th_run_command("job", job_actions, job_specs, th_usage_job, argc, argv);
}
