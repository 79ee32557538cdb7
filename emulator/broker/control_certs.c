/*
 * control_certs.c - the control API's CA certificate commands
 * (docs/control-api.md, "CA certificates"): listCertificates,
 * getCertificate, putCertificate, deleteCertificate,
 * generateVerificationCode, verifyCertificate, over core/cacert.h; and
 * their persistence in --state-dir as certificates.json (written before the
 * answer, like the registry).
 *
 * The real hub's certificates are an Azure Resource Manager resource, with
 * Azure role-based access; here reads need RegistryRead and changes
 * RegistryWrite (docs/rest-api.md, "CA certificates").
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cacert.h"
#include "control.h"
#include "json.h"
#include "th_file.h"
#include "util.h"

#define CERT_FILE "certificates.json"
#define MAX_CERT_FILE (4u * 1024 * 1024)

static void save(struct brk_plugin *p)
{
    if (!p->state_dir)
        return;
    char path[4096];
    snprintf(path, sizeof path, "%s/" CERT_FILE, p->state_dir);
    cJSON *arr = th_cacerts_state_json(p->cas);
    char *text = arr ? th_json_print(arr) : NULL;
    cJSON_Delete(arr);
    if (!text || th_file_replace_bytes(path, 0600, text, strlen(text)) != TH_FILE_DONE)
        brk_log(p, MOSQ_LOG_ERR, "certificates not saved | %s: %s", path,
                text ? strerror(errno) : "out of memory");
    free(text);
}

int brk_certs_load(struct brk_plugin *p)
{
    p->cas = th_cacerts_new();
    if (!p->cas)
        return MOSQ_ERR_NOMEM;
    if (!p->state_dir)
        return MOSQ_ERR_SUCCESS;
    char path[4096];
    snprintf(path, sizeof path, "%s/" CERT_FILE, p->state_dir);
    if (access(path, F_OK) != 0)
        return MOSQ_ERR_SUCCESS;
    size_t len = 0;
    char *text = th_file_read(path, MAX_CERT_FILE, &len);
    cJSON *doc = NULL;
    struct th_error err = {0};
    th_result r = text ? th_json_parse(text, len, MAX_CERT_FILE, 8, &doc, &err) : TH_ERR_FORMAT;
    if (r == TH_OK)
        r = th_cacerts_restore(p->cas, doc, &err);
    free(text);
    cJSON_Delete(doc);
    if (r != TH_OK)
        mosquitto_log_printf(MOSQ_LOG_WARNING,
                             "twinhub: CA certificates in %s not loaded (%s); starting without "
                             "them",
                             path, text ? err.message : strerror(errno));
    return MOSQ_ERR_SUCCESS;
}

/* A required string field; false after replying 400004 when it is absent or not a string. */
static bool need_str(struct brk_cmd_ctx *x, const char *field, const char **out)
{
    if (!brk_ctl_string_or_reply(x, field, out))
        return false;
    if (*out)
        return true;
    struct th_error err = {0};
    th_error_set(&err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID, "'%s' needs a string '%s'", x->name,
                 field);
    brk_ctl_reply_err(x, &err);
    return false;
}

static const char *opt_str(const cJSON *cmd, const char *key)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(cmd, key);
    return cJSON_IsString(it) ? it->valuestring : NULL;
}

void brk_cmd_list_certificates(struct brk_cmd_ctx *x)
{
    if (!brk_ctl_need_perm(x, TH_PERM_REGISTRY_READ, "RegistryRead"))
        return;
    brk_ctl_reply_data(x, th_cacerts_list_json(x->p->cas));
}

void brk_cmd_get_certificate(struct brk_cmd_ctx *x)
{
    const char *name;
    struct th_error err = {0};
    if (!brk_ctl_need_perm(x, TH_PERM_REGISTRY_READ, "RegistryRead") || !need_str(x, "name", &name))
        return;
    cJSON *o = th_cacerts_get_json(x->p->cas, name, &err);
    if (!o) {
        brk_ctl_reply_err(x, &err);
        return;
    }
    brk_ctl_reply_ok(x, o);
}

/* Reply with `out` or `err`, saving the store after a change. */
static void changed(struct brk_cmd_ctx *x, th_result r, cJSON *out, const struct th_error *err,
                    const char *what, const char *name)
{
    if (r != TH_OK) {
        cJSON_Delete(out);
        brk_ctl_reply_err(x, err);
        return;
    }
    save(x->p);
    brk_log(x->p, MOSQ_LOG_NOTICE, "certificate %s | %s", name, what);
    if (out)
        brk_ctl_reply_ok(x, out);
    else
        brk_ctl_reply_data(x, cJSON_CreateObject());
}

void brk_cmd_put_certificate(struct brk_cmd_ctx *x)
{
    const char *name, *pem;
    struct th_error err = {0};
    cJSON *out = NULL;
    if (!brk_ctl_need_perm(x, TH_PERM_REGISTRY_WRITE, "RegistryWrite") ||
        !need_str(x, "name", &name) || !need_str(x, "certificate", &pem))
        return;
    bool verified = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(x->cmd, "isVerified"));
    th_result r = th_cacerts_put(x->p->cas, name, pem, verified, opt_str(x->cmd, "ifMatch"),
                                 th_now_us(), &out, &err);
    changed(x, r, out, &err, verified ? "uploaded (verified)" : "uploaded", name);
}

void brk_cmd_delete_certificate(struct brk_cmd_ctx *x)
{
    const char *name;
    struct th_error err = {0};
    if (!brk_ctl_need_perm(x, TH_PERM_REGISTRY_WRITE, "RegistryWrite") ||
        !need_str(x, "name", &name))
        return;
    th_result r = th_cacerts_delete(x->p->cas, name, opt_str(x->cmd, "ifMatch"), &err);
    changed(x, r, NULL, &err, "deleted", name);
}

void brk_cmd_verification_code(struct brk_cmd_ctx *x)
{
    const char *name;
    struct th_error err = {0};
    cJSON *out = NULL;
    if (!brk_ctl_need_perm(x, TH_PERM_REGISTRY_WRITE, "RegistryWrite") ||
        !need_str(x, "name", &name))
        return;
    th_result r = th_cacerts_verification_code(x->p->cas, name, opt_str(x->cmd, "ifMatch"),
                                               th_now_us(), &out, &err);
    changed(x, r, out, &err, "verification code issued", name);
}

void brk_cmd_verify_certificate(struct brk_cmd_ctx *x)
{
    const char *name, *pem;
    struct th_error err = {0};
    cJSON *out = NULL;
    if (!brk_ctl_need_perm(x, TH_PERM_REGISTRY_WRITE, "RegistryWrite") ||
        !need_str(x, "name", &name) || !need_str(x, "certificate", &pem))
        return;
    th_result r = th_cacerts_verify(x->p->cas, name, opt_str(x->cmd, "ifMatch"), pem, th_now_us(),
                                    &out, &err);
    changed(x, r, out, &err, "verified (proof of possession)", name);
}
