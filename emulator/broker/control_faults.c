/*
 * control_faults.c - the control API's commands that act on connections
 * and inject faults, mostly for scenarios: disconnect, expireToken,
 * injectError and mark (docs/control-api.md), and brokerIo (the broker I/O
 * layer's counters). Kicks are queued and done on
 * the tick (conn.c).
 */
#define _GNU_SOURCE /* RTLD_DEFAULT */
#include <dlfcn.h>

#include "control.h"
#include "iolayer.h"
#include "fault.h"
#include "util.h"

void brk_cmd_disconnect(struct brk_cmd_ctx *x)
{
    struct th_identity *id;
    struct brk_idglue *g;
    cJSON *data;
    bool was = false;
    if (!brk_ctl_need_perm(x, TH_PERM_SERVICE_CONNECT, "ServiceConnect") ||
        !(id = brk_ctl_identity_or_reply(x, true))) {
        return;
    }
    g = id->glue;
    if (g && g->conn) {
        was = true;
        brk_conn_kick(x->p, g->conn);
    }
    data = cJSON_CreateObject();
    if (data && !cJSON_AddBoolToObject(data, "disconnected", was)) {
        cJSON_Delete(data);
        data = NULL;
    }
    brk_ctl_reply_data(x, data);
}

void brk_cmd_expire_token(struct brk_cmd_ctx *x)
{
    struct th_identity *id;
    struct brk_idglue *g;
    cJSON *data;
    bool was = false;
    if (!brk_ctl_need_perm(x, TH_PERM_SERVICE_CONNECT, "ServiceConnect") ||
        !(id = brk_ctl_identity_or_reply(x, true)) || !(g = brk_idglue_of(id))) {
        return;
    }
    if (g->conn) {
        /* The current token (and any older one) is refused from now on. */
        g->revoked_se = g->conn->token_expiry_s;
        was = true;
        brk_log(x->p, MOSQ_LOG_NOTICE, "%s | token expired (fault) | closing the connection",
                g->conn->client_id);
        brk_conn_kick(x->p, g->conn);
    }
    data = cJSON_CreateObject();
    if (data && !cJSON_AddBoolToObject(data, "disconnected", was)) {
        cJSON_Delete(data);
        data = NULL;
    }
    brk_ctl_reply_data(x, data);
}

void brk_cmd_inject_error(struct brk_cmd_ctx *x)
{
    struct th_error err = {0};
    struct th_identity *id;
    struct brk_idglue *g;
    const char *name;
    enum th_fault_op op;
    int status, count;
    if (!brk_ctl_need_perm(x, TH_PERM_SERVICE_CONNECT, "ServiceConnect") ||
        !(id = brk_ctl_identity_or_reply(x, true)) ||
        !brk_ctl_string_or_reply(x, "operation", &name) ||
        !brk_ctl_int_or_reply(x, "status", TH_FAULT_STATUS_DEFAULT, TH_FAULT_STATUS_MIN,
                              TH_FAULT_STATUS_MAX, &status) ||
        !brk_ctl_int_or_reply(x, "count", 1, 0, 1000000, &count) || !(g = brk_idglue_of(id))) {
        return;
    }
    if (th_fault_op_parse(name, &op, &err) != TH_OK) {
        brk_ctl_reply_err(x, &err);
        return;
    }
    if (op == TH_FAULT_TWIN_GET) {
        g->fault_get_status = status;
        g->fault_get_count = count;
    } else {
        g->fault_patch_status = status;
        g->fault_patch_count = count;
    }
    brk_ctl_reply_ok(x, NULL);
}

void brk_cmd_mark(struct brk_cmd_ctx *x)
{
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(x->cmd, "data");
    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(x->cmd, "deviceId");
    const cJSON *jm = cJSON_GetObjectItemCaseSensitive(x->cmd, "moduleId");
    cJSON *out;
    if (!brk_ctl_need_perm(x, TH_PERM_SERVICE_CONNECT, "ServiceConnect")) {
        return;
    }
    brk_event_emit(x->p, TH_JOURNAL_MARK, cJSON_IsString(jd) ? jd->valuestring : NULL,
                   cJSON_IsString(jm) ? jm->valuestring : NULL, th_journal_data_mark(data));
    out = cJSON_CreateObject();
    if (out && !cJSON_AddNumberToObject(out, "seq", (double)x->p->event_seq)) {
        cJSON_Delete(out);
        out = NULL;
    }
    brk_ctl_reply_data(x, out);
}

/*
 * brokerIo: the broker I/O layer's counters (tlsshim/iolayer.h), looked up in the process, so
 * that a test or an operator can see that the layer runs and what it saves:
 * {"loaded", "active", "reads", "kernelReads", "epollCtlCalls", "epollCtlApplied", "waits",
 *  "readyFromKept", "writes", "kernelWrites", "malloc"}; "loaded": false when mosquitto runs
 * without the shim; "malloc": the file name of the library whose malloc the broker calls
 * ("libjemalloc.so.2" as serve preloads it, "libc.so.6" for glibc's; serve.c
 * find_broker_malloc).
 */
/* The base name of the shared object that provides the malloc this process calls; "" when
 * dladdr cannot tell. */
static const char *malloc_library(void)
{
    Dl_info di;
    void *(*fn)(size_t) = malloc;
    if (!dladdr((void *)fn, &di) || !di.dli_fname) {
        return "";
    }
    const char *slash = strrchr(di.dli_fname, '/');
    return slash ? slash + 1 : di.dli_fname;
}

void brk_cmd_broker_io(struct brk_cmd_ctx *x)
{
    if (!brk_ctl_need_perm(x, TH_PERM_SERVICE_CONNECT, "ServiceConnect")) {
        return;
    }
    th_iolayer_get_stats_fn get =
        (th_iolayer_get_stats_fn)dlsym(RTLD_DEFAULT, TH_IOLAYER_GET_STATS_SYMBOL);
    struct th_iolayer_stats st = {0};
    bool loaded = get && get(&st) == 0;
    cJSON *out = cJSON_CreateObject();
    if (out && !(cJSON_AddBoolToObject(out, "loaded", loaded) &&
                 cJSON_AddBoolToObject(out, "active", loaded && st.active) &&
                 cJSON_AddNumberToObject(out, "reads", (double)st.reads) &&
                 cJSON_AddNumberToObject(out, "kernelReads", (double)st.kernel_reads) &&
                 cJSON_AddNumberToObject(out, "epollCtlCalls", (double)st.epoll_ctl_calls) &&
                 cJSON_AddNumberToObject(out, "epollCtlApplied", (double)st.epoll_ctl_applied) &&
                 cJSON_AddNumberToObject(out, "waits", (double)st.waits) &&
                 cJSON_AddNumberToObject(out, "readyFromKept", (double)st.ready_from_kept) &&
                 cJSON_AddNumberToObject(out, "writes", (double)st.writes) &&
                 cJSON_AddNumberToObject(out, "kernelWrites", (double)st.kernel_writes) &&
                 cJSON_AddStringToObject(out, "malloc", malloc_library()))) {
        cJSON_Delete(out);
        out = NULL;
    }
    brk_ctl_reply_data(x, out);
}
