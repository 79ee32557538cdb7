/*
 * control.h - private interface between the control-API files of the plugin:
 * the command context, reply helpers and argument readers (control.c), and
 * the command handlers that live in their own files.
 */
#ifndef TH_CONTROL_H
#define TH_CONTROL_H

#include "plugin.h"

struct th_auth_service_decision;

struct cmd_ctx {
    struct th_plugin *p;
    struct th_conn *caller;
    const cJSON *cmd;
    const char *name;
    cJSON *responses; /* array being built */
    /* Who the command's "authorization" token proved to be; NULL without one. */
    const struct th_auth_service_decision *auth;
};

/* A response entry {"command", "correlationData"?}; caller adds data or error. NULL on OOM. */
cJSON *th_ctl_response_entry(const char *command, const cJSON *correlation);
void th_ctl_add_error_fields(cJSON *r, const struct th_error *err);
/* Publish {"responses": responses} to one client; takes ownership of responses. */
void th_ctl_send_responses(const char *client_id, cJSON *responses);
/* Append a success entry with data (ownership taken; NULL -> {}). */
void th_ctl_reply_ok(struct cmd_ctx *x, cJSON *data);
void th_ctl_reply_err(struct cmd_ctx *x, const struct th_error *err);
/* True when the caller's policy has any of `perm`; otherwise replies 401002. */
bool th_ctl_need_perm(struct cmd_ctx *x, unsigned perm, const char *perm_name);
/* Resolve deviceId/moduleId of the command or reply 400004/404001/404010 and return NULL. */
struct th_identity *th_ctl_identity_or_reply(struct cmd_ctx *x, bool module_allowed);
/* Optional string field (absent or null -> *out NULL); false after replying 400004. */
bool th_ctl_string_or_reply(struct cmd_ctx *x, const char *field, const char **out);
/* Optional integer field within [lo, hi] (absent -> def); false after replying 400004. */
bool th_ctl_int_or_reply(struct cmd_ctx *x, const char *field, int def, int lo, int hi, int *out);

/* Handlers in other files. */
void th_cmd_send_c2d(struct cmd_ctx *x);
void th_cmd_invoke_method(struct cmd_ctx *x);
/* Registry, query, statistics, bulk modules, import/export; *handled false if not one of them. */
void th_cmd_registry_dispatch(struct cmd_ctx *x, bool *handled);

#endif
