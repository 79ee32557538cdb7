/*
 * control.h - private interface between the control-API files of the plugin:
 * the command context, reply helpers and argument readers (control.c), and
 * the command handlers (control_*.c), a section per file.
 */
#ifndef BRK_CONTROL_H
#define BRK_CONTROL_H

#include "plugin.h"

struct th_auth_service_decision;

struct brk_cmd_ctx {
    struct brk_plugin *p;
    struct brk_conn *caller;
    const cJSON *cmd;
    const char *name;
    cJSON *responses; /* array being built */
    /* Who the command's "authorization" token proved to be; NULL without one. */
    const struct th_auth_service_decision *auth;
};

/* ---- control.c: reply and argument helpers ---- */

/* Add item to an array / object; false (item deleted) when either is NULL or on OOM. */
bool brk_ctl_push(cJSON *arr, cJSON *item);
bool brk_ctl_put(cJSON *obj, const char *key, cJSON *item);
/* A response entry {"command", "correlationData"?}; caller adds data or error. NULL on OOM. */
cJSON *brk_ctl_response_entry(const char *command, const cJSON *correlation);
/* Add "error", "status", "errorCode"; false on OOM. */
bool brk_ctl_add_error_fields(cJSON *r, const struct th_error *err);
/* A complete error entry; NULL on OOM. */
cJSON *brk_ctl_error_entry(const char *command, const cJSON *correlation,
                           const struct th_error *err);
/* Publish {"responses": responses} to one client; takes ownership of responses. */
void brk_ctl_send_responses(const char *client_id, cJSON *responses);
/* Append a success entry with data (ownership taken; NULL -> {}). */
void brk_ctl_reply_ok(struct brk_cmd_ctx *x, cJSON *data);
/* Like brk_ctl_reply_ok, but NULL data means building it ran out of memory: replies 500. */
void brk_ctl_reply_data(struct brk_cmd_ctx *x, cJSON *data);
void brk_ctl_reply_err(struct brk_cmd_ctx *x, const struct th_error *err);
/* True when the caller's policy has any of `perm`; otherwise replies
 * TH_EC_IOTHUB_UNAUTHORIZED_ACCESS. */
bool brk_ctl_need_perm(struct brk_cmd_ctx *x, unsigned perm, const char *perm_name);
/* Resolve deviceId/moduleId of the command or reply TH_EC_ARGUMENT_INVALID, _DEVICE_NOT_FOUND or
 * _MODULE_NOT_FOUND and return NULL. */
struct th_identity *brk_ctl_identity_or_reply(struct brk_cmd_ctx *x, bool module_allowed);
/* Optional string field (absent or null -> *out NULL); false after replying TH_EC_ARGUMENT_INVALID.
 */
bool brk_ctl_string_or_reply(struct brk_cmd_ctx *x, const char *field, const char **out);
/* Optional integer field within [lo, hi] (absent -> def); false after replying
 * TH_EC_ARGUMENT_INVALID. */
bool brk_ctl_int_or_reply(struct brk_cmd_ctx *x, const char *field, int def, int lo, int hi,
                          int *out);

/* ---- Handlers: one per command, in the table of control.c ---- */

/* control_twin.c */
void brk_cmd_get_twin(struct brk_cmd_ctx *x);
void brk_cmd_update_twin(struct brk_cmd_ctx *x);
void brk_cmd_replace_twin(struct brk_cmd_ctx *x);

/* control_methods.c: the answer comes later, in a response message of its own */
void brk_cmd_invoke_method(struct brk_cmd_ctx *x);

/* control_c2d.c */
void brk_cmd_send_c2d(struct brk_cmd_ctx *x);

/* control_registry.c: identities, bulk modules, query, statistics, import/export */
void brk_cmd_get_device(struct brk_cmd_ctx *x);
void brk_cmd_list_devices(struct brk_cmd_ctx *x);
void brk_cmd_list_modules(struct brk_cmd_ctx *x);
void brk_cmd_create_device(struct brk_cmd_ctx *x);
void brk_cmd_update_identity(struct brk_cmd_ctx *x); /* updateDevice, updateModule */
void brk_cmd_delete_identity(struct brk_cmd_ctx *x); /* deleteDevice, deleteModule */
void brk_cmd_create_module(struct brk_cmd_ctx *x);
void brk_cmd_ensure_module(struct brk_cmd_ctx *x);
void brk_cmd_devices_without_module(struct brk_cmd_ctx *x);
void brk_cmd_query(struct brk_cmd_ctx *x);
void brk_cmd_statistics(struct brk_cmd_ctx *x);
void brk_cmd_export(struct brk_cmd_ctx *x);
void brk_cmd_import(struct brk_cmd_ctx *x);

/* control_dps.c: the provisioning service */
void brk_cmd_dps_info(struct brk_cmd_ctx *x);
void brk_cmd_dps_put(struct brk_cmd_ctx *x);
void brk_cmd_dps_get(struct brk_cmd_ctx *x);
void brk_cmd_dps_delete(struct brk_cmd_ctx *x);
void brk_cmd_dps_query(struct brk_cmd_ctx *x);
void brk_cmd_dps_register(struct brk_cmd_ctx *x);
void brk_cmd_dps_operation_status(struct brk_cmd_ctx *x);
/* control_bulk.c */
void brk_cmd_bulk_registry(struct brk_cmd_ctx *x);

/* control_config.c */
void brk_cmd_create_configuration(struct brk_cmd_ctx *x);
void brk_cmd_update_configuration(struct brk_cmd_ctx *x);
void brk_cmd_get_configuration(struct brk_cmd_ctx *x);
void brk_cmd_list_configurations(struct brk_cmd_ctx *x);
void brk_cmd_delete_configuration(struct brk_cmd_ctx *x);
void brk_cmd_test_configuration_queries(struct brk_cmd_ctx *x);
/* control_certs.c: CA certificates (brk_certs_load, plugin.h, reads them at start) */
void brk_cmd_list_certificates(struct brk_cmd_ctx *x);
void brk_cmd_get_certificate(struct brk_cmd_ctx *x);
void brk_cmd_put_certificate(struct brk_cmd_ctx *x);
void brk_cmd_delete_certificate(struct brk_cmd_ctx *x);
void brk_cmd_verification_code(struct brk_cmd_ctx *x);
void brk_cmd_verify_certificate(struct brk_cmd_ctx *x);
/* control_jobs.c */
void brk_cmd_create_job(struct brk_cmd_ctx *x);
void brk_cmd_get_job(struct brk_cmd_ctx *x);
void brk_cmd_cancel_job(struct brk_cmd_ctx *x);
void brk_cmd_list_jobs(struct brk_cmd_ctx *x);

/* control_faults.c */
void brk_cmd_disconnect(struct brk_cmd_ctx *x);
void brk_cmd_expire_token(struct brk_cmd_ctx *x);
void brk_cmd_inject_error(struct brk_cmd_ctx *x);
void brk_cmd_mark(struct brk_cmd_ctx *x);
void brk_cmd_broker_io(struct brk_cmd_ctx *x);

/* control_dashboard.c: the dashboard's device list */
void brk_cmd_list_device_summaries(struct brk_cmd_ctx *x);

#endif
