/*
 * admin.c - `twinhub device` and `twinhub module` (docs/cli.md): the identity
 * registry of a running hub through the control API (createDevice,
 * getDevice, listDevices, updateDevice, deleteDevice, disconnect,
 * createModule, listModules, deleteModule, ensureModule,
 * devicesWithoutModule; docs/control-api.md). Human output by default,
 * the response's `data` with --json.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "client.h"
#include "connstr.h"
#include "x509_cli.h"

#define NEVER "0001-01-01T00:00:00Z"

/* ---- shared output ---------------------------------------------------------------------- */

static void kv(const char *key, const char *value)
{
    printf("  %-18s %s\n", key, value);
}

static const char *when(const cJSON *obj, const char *key)
{
    const char *t = th_str(obj, key, NULL);
    return !t || !strcmp(t, NEVER) ? "never" : t;
}

static const cJSON *sym_key(const cJSON *id, const char *which)
{
    const cJSON *auth = cJSON_GetObjectItemCaseSensitive(id, "authentication");
    const cJSON *sym = cJSON_GetObjectItemCaseSensitive(auth, "symmetricKey");
    return cJSON_GetObjectItemCaseSensitive(sym, which);
}

/* A device or module identity as readable lines, with its connection string. */
static void print_identity(const cJSON *id, const struct th_hub_info *info)
{
    const char *dev = th_str(id, "deviceId", "?");
    const char *mod = th_str(id, "moduleId", NULL);
    char buf[1024];
    kv("device", dev);
    if (mod) {
        kv("module", mod);
        if (th_str(id, "managedBy", NULL))
            kv("managed by", th_str(id, "managedBy", ""));
    } else {
        const char *reason = th_str(id, "statusReason", NULL);
        snprintf(buf, sizeof buf, "%s%s%s%s", th_str(id, "status", "?"), reason ? " (" : "",
                 reason ? reason : "", reason ? ")" : "");
        kv("status", buf);
        const cJSON *caps = cJSON_GetObjectItemCaseSensitive(id, "capabilities");
        kv("IoT Edge",
           cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(caps, "iotEdge")) ? "yes" : "no");
        if (th_str(id, "deviceScope", NULL))
            kv("device scope", th_str(id, "deviceScope", ""));
        const cJSON *parents = cJSON_GetObjectItemCaseSensitive(id, "parentScopes");
        if (cJSON_IsArray(parents) && cJSON_IsString(parents->child))
            kv("parent scope", parents->child->valuestring);
    }
    const cJSON *auth = cJSON_GetObjectItemCaseSensitive(id, "authentication");
    const char *type = th_str(auth, "type", "sas");
    bool x509 = !strcmp(type, "selfSigned") || !strcmp(type, "certificateAuthority");
    if (!strcmp(type, "none"))
        kv("authentication", "none: no keys, so it cannot connect until it gets some");
    if (x509) {
        const cJSON *tp = cJSON_GetObjectItemCaseSensitive(auth, "x509Thumbprint");
        kv("authentication", !strcmp(type, "selfSigned")
                                 ? "selfSigned: an X.509 certificate with a registered thumbprint"
                                 : "certificateAuthority: an X.509 certificate whose CN is the "
                                   "device id, signed by a verified CA (twinhub cert)");
        if (th_str(tp, "primaryThumbprint", NULL))
            kv("thumbprint", th_str(tp, "primaryThumbprint", ""));
        if (th_str(tp, "secondaryThumbprint", NULL))
            kv("2nd thumbprint", th_str(tp, "secondaryThumbprint", ""));
    }
    snprintf(buf, sizeof buf, "%s (since %s)", th_str(id, "connectionState", "?"),
             when(id, "connectionStateUpdatedTime"));
    kv("connection", buf);
    kv("last activity", when(id, "lastActivityTime"));
    const cJSON *c2d = cJSON_GetObjectItemCaseSensitive(id, "cloudToDeviceMessageCount");
    if (cJSON_IsNumber(c2d) && !mod) {
        snprintf(buf, sizeof buf, "%d", c2d->valueint);
        kv("C2D pending", buf);
    }
    kv("etag", th_str(id, "etag", "?"));
    kv("generation id", th_str(id, "generationId", "?"));
    const cJSON *k1 = sym_key(id, "primaryKey"), *k2 = sym_key(id, "secondaryKey");
    kv("primary key", cJSON_IsString(k1) ? k1->valuestring : "-");
    kv("secondary key", cJSON_IsString(k2) ? k2->valuestring : "-");
    if (info && info->hub_name[0] && cJSON_IsString(k1) &&
        th_connstr_identity(info->hub_name, dev, mod, k1->valuestring, info->gateway, buf,
                            sizeof buf) == TH_OK)
        kv("connection string", buf);
    /* The SDKs dial HostName itself for X.509 (GatewayHostName is not read): docs/cli.md. */
    if (info && info->hub_name[0] && x509) {
        snprintf(buf, sizeof buf, "HostName=%s;DeviceId=%s%s%s;x509=true", info->hub_name, dev,
                 mod ? ";ModuleId=" : "", mod ? mod : "");
        kv("connection string", buf);
    }
}

/* ---- twinhub device --------------------------------------------------------------------- */

static void human_device_list(const cJSON *data, const void *info)
{
    (void)info;
    static const char *const head[] = {"DEVICE", "STATUS", "CONNECTION", "C2D", "LAST ACTIVITY"};
    struct th_table *t = th_table_new(5, head);
    const cJSON *d;
    int n = 0;
    cJSON_ArrayForEach(d, data)
    {
        char c2d[32];
        snprintf(c2d, sizeof c2d, "%d", (int)th_num(d, "cloudToDeviceMessageCount"));
        const char *row[] = {th_str(d, "deviceId", "?"), th_str(d, "status", "?"),
                             th_str(d, "connectionState", "?"), c2d, when(d, "lastActivityTime")};
        if (t && !th_table_row(t, row)) {
            th_table_free(t);
            t = NULL;
        }
        n++;
    }
    if (n == 0) {
        printf("no devices\n");
    } else if (t) {
        th_table_print(t, stdout);
    } else {
        th_oom();
    }
    th_table_free(t);
}

static int device_list(const struct th_args *a, const char *const *args, int nargs)
{
    cJSON *data;
    int rc = th_call_once(a, th_command_new("listDevices"), &data, NULL);
    return th_finish(a, rc, data, human_device_list, NULL);
}

static void human_identity(const cJSON *data, const void *info)
{
    print_identity(data, info);
}

/* getDevice for a device or (module non-NULL) a module, shown with its connection string. */
static int show_identity(const struct th_args *a, const char *device, const char *module)
{
    cJSON *cmd = th_command_new("getDevice"), *data;
    struct th_hub_info info;
    if (!th_command_ids(cmd, device, module)) {
        cJSON_Delete(cmd);
        return th_oom();
    }
    int rc = th_call_once(a, cmd, &data, &info);
    return th_finish(a, rc, data, human_identity, &info);
}

static int device_show(const struct th_args *a, const char *const *args, int nargs)
{
    return show_identity(a, args[0], NULL);
}

/* authentication.symmetricKey from --primary-key/--secondary-key, if given. */
static bool add_keys(const struct th_args *a, cJSON *cmd)
{
    const char *k1 = th_args_get(a, "primary-key"), *k2 = th_args_get(a, "secondary-key");
    if (!k1 && !k2)
        return true;
    cJSON *auth = cJSON_AddObjectToObject(cmd, "authentication");
    cJSON *sym = auth ? cJSON_AddObjectToObject(auth, "symmetricKey") : NULL;
    return sym && (!k1 || cJSON_AddStringToObject(sym, "primaryKey", k1)) &&
           (!k2 || cJSON_AddStringToObject(sym, "secondaryKey", k2));
}

static void human_created(const cJSON *data, const void *info)
{
    const char *mod = th_str(data, "moduleId", NULL);
    if (mod)
        printf("created module %s/%s\n", th_str(data, "deviceId", "?"), mod);
    else
        printf("created device %s\n", th_str(data, "deviceId", "?"));
    print_identity(data, info);
}

/* Paths of a certificate the development CA issued for --x509 (human output). */
struct issued {
    struct th_hub_info *info;
    char cert[PATH_MAX], key[PATH_MAX];
};

static void human_created_x509(const cJSON *data, const void *ctx)
{
    const struct issued *is = ctx;
    human_created(data, is->info);
    printf("  %-18s %s\n", "certificate", is->cert);
    printf("  %-18s %s\n", "private key", is->key);
}

/*
 * --x509-thumbprint T [--x509-secondary-thumbprint T], --x509-cert FILE, --x509 (a
 * certificate issued here) or --x509-ca: the authentication member of an X.509 identity.
 * Returns -1 to go on, else the exit status (after saying why).
 */
static int add_x509(const struct th_args *a, const char *device_id, cJSON *cmd, struct issued *is)
{
    const char *tp = th_args_get(a, "x509-thumbprint"),
               *tp2 = th_args_get(a, "x509-secondary-thumbprint");
    const char *file = th_args_get(a, "x509-cert");
    bool issue = th_args_has(a, "x509"), ca = th_args_has(a, "x509-ca");
    int kinds = (tp != NULL) + (file != NULL) + issue + ca;
    if (kinds == 0 && !tp2)
        return -1;
    if (kinds != 1 || (tp2 && ca))
        return th_usage_error(a, "give one of --x509-thumbprint, --x509-cert, --x509 and "
                                 "--x509-ca (--x509-secondary-thumbprint goes with the first "
                                 "three)");
    if (th_args_has(a, "primary-key") || th_args_has(a, "secondary-key"))
        return th_usage_error(a, "an X.509 device has no keys: drop --primary-key and "
                                 "--secondary-key");
    char sha256[65], err[PATH_MAX + 256];
    if (file && !th_x509_file_thumbprint(file, sha256, err, sizeof err)) {
        fprintf(stderr, "twinhub device create: %s\n", err);
        return TH_EXIT_FAIL;
    }
    if (issue) {
        char dir[PATH_MAX];
        if (a->cert_dir)
            snprintf(dir, sizeof dir, "%s", a->cert_dir);
        else if (!th_certs_default_dir(dir, sizeof dir))
            return TH_EXIT_FAIL;
        if (!th_x509_issue_device(dir, device_id, is->cert, is->key, sizeof is->cert, sha256, err,
                                  sizeof err)) {
            fprintf(stderr, "twinhub device create: %s\n", err);
            return TH_EXIT_FAIL;
        }
    }
    cJSON *auth = cJSON_AddObjectToObject(cmd, "authentication"), *t = NULL;
    bool ok =
        auth && cJSON_AddStringToObject(auth, "type", ca ? "certificateAuthority" : "selfSigned");
    if (ok && !ca)
        ok = (t = cJSON_AddObjectToObject(auth, "x509Thumbprint")) &&
             cJSON_AddStringToObject(t, "primaryThumbprint", tp ? tp : sha256) &&
             (!tp2 || cJSON_AddStringToObject(t, "secondaryThumbprint", tp2));
    return ok ? -1 : th_oom();
}

static int device_create(const struct th_args *a, const char *const *args, int nargs)
{
    cJSON *cmd = th_command_new("createDevice"), *data;
    struct th_hub_info info;
    struct issued is = {.info = &info};
    const char *reason = th_args_get(a, "status-reason");
    cJSON *caps = NULL;
    int x = cmd ? add_x509(a, args[0], cmd, &is) : -1;
    if (x >= 0) {
        cJSON_Delete(cmd);
        return x;
    }
    if (!th_command_ids(cmd, args[0], NULL) ||
        !cJSON_AddStringToObject(cmd, "status",
                                 th_args_has(a, "disabled") ? "disabled" : "enabled") ||
        (reason && !cJSON_AddStringToObject(cmd, "statusReason", reason)) || !add_keys(a, cmd) ||
        (th_args_has(a, "edge") && (!(caps = cJSON_AddObjectToObject(cmd, "capabilities")) ||
                                    !cJSON_AddTrueToObject(caps, "iotEdge")))) {
        cJSON_Delete(cmd);
        return th_oom();
    }
    int rc = th_call_once(a, cmd, &data, &info);
    if (is.cert[0])
        return th_finish(a, rc, data, human_created_x509, &is);
    return th_finish(a, rc, data, human_created, &info);
}

static void human_updated(const cJSON *data, const void *info)
{
    printf("updated device %s\n", th_str(data, "deviceId", "?"));
    print_identity(data, info);
}

static int device_update(const struct th_args *a, const char *const *args, int nargs)
{
    bool enable = th_args_has(a, "enable"), disable = th_args_has(a, "disable");
    const char *reason = th_args_get(a, "status-reason"), *etag = th_args_get(a, "etag");
    if (enable && disable)
        return th_usage_error(a, "give --enable or --disable, not both");
    if (!enable && !disable && !reason && !th_args_has(a, "primary-key") &&
        !th_args_has(a, "secondary-key"))
        return th_usage_error(a, "nothing to update: pass --enable, --disable, --status-reason, "
                                 "--primary-key or --secondary-key");
    cJSON *cmd = th_command_new("updateDevice"), *data;
    struct th_hub_info info;
    if (!th_command_ids(cmd, args[0], NULL) ||
        ((enable || disable) &&
         !cJSON_AddStringToObject(cmd, "status", enable ? "enabled" : "disabled")) ||
        (reason && !cJSON_AddStringToObject(cmd, "statusReason", reason)) ||
        (etag && !cJSON_AddStringToObject(cmd, "etag", etag)) || !add_keys(a, cmd)) {
        cJSON_Delete(cmd);
        return th_oom();
    }
    int rc = th_call_once(a, cmd, &data, &info);
    return th_finish(a, rc, data, human_updated, &info);
}

/* The identity a command names, for its human line. */
struct ids {
    const char *device;
    const char *module; /* NULL for a device */
};

static void human_deleted(const cJSON *data, const void *ctx)
{
    const struct ids *id = ctx;
    (void)data;
    if (id->module)
        printf("deleted module %s/%s\n", id->device, id->module);
    else
        printf("deleted device %s (with its modules, twin and queued messages)\n", id->device);
}

/* deleteDevice / deleteModule; data is {}, so the human line is built from the ids. */
static int delete_identity(const struct th_args *a, const char *device, const char *module)
{
    cJSON *cmd = th_command_new(module ? "deleteModule" : "deleteDevice"), *data;
    const char *etag = th_args_get(a, "etag");
    if (!th_command_ids(cmd, device, module) ||
        (etag && !cJSON_AddStringToObject(cmd, "etag", etag))) {
        cJSON_Delete(cmd);
        return th_oom();
    }
    const struct ids ids = {device, module};
    int rc = th_call_once(a, cmd, &data, NULL);
    return th_finish(a, rc, data, human_deleted, &ids);
}

static int device_delete(const struct th_args *a, const char *const *args, int nargs)
{
    return delete_identity(a, args[0], NULL);
}

static void human_disconnected(const cJSON *data, const void *ctx)
{
    const struct ids *id = ctx;
    printf(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(data, "disconnected"))
               ? "disconnected %s%s%s\n"
               : "%s%s%s was not connected\n",
           id->device, id->module ? "/" : "", id->module ? id->module : "");
}

static int device_disconnect(const struct th_args *a, const char *const *args, int nargs)
{
    cJSON *cmd = th_command_new("disconnect"), *data;
    const char *mod = nargs > 1 ? args[1] : NULL;
    if (!th_command_ids(cmd, args[0], mod)) {
        cJSON_Delete(cmd);
        return th_oom();
    }
    const struct ids ids = {args[0], mod};
    int rc = th_call_once(a, cmd, &data, NULL);
    return th_finish(a, rc, data, human_disconnected, &ids);
}

static const struct th_optspec device_specs[] = {
    {"disabled", 0, false},
    {"enable", 0, false},
    {"disable", 0, false},
    {"status-reason", 0, true},
    {"primary-key", 0, true},
    {"secondary-key", 0, true},
    {"etag", 0, true},
    {"edge", 0, false},
    {"x509-thumbprint", 0, true},
    {"x509-secondary-thumbprint", 0, true},
    {"x509-cert", 0, true},
    {"x509", 0, false},
    {"x509-ca", 0, false},
    {NULL, 0, false},
};

static const struct th_action device_actions[] = {
    {"list", device_list, "", 0, 0, ""},
    {"show", device_show, "", 1, 1, "ID"},
    {"create", device_create,
     "disabled status-reason primary-key secondary-key edge x509-thumbprint "
     "x509-secondary-thumbprint x509-cert x509 x509-ca",
     1, 1, "ID"},
    {"update", device_update, "enable disable status-reason primary-key secondary-key etag", 1, 1,
     "ID"},
    {"delete", device_delete, "etag", 1, 1, "ID"},
    {"disconnect", device_disconnect, "", 1, 2, "ID [MODULE]"},
    {NULL, NULL, NULL, 0, 0, NULL},
};

void th_usage_device(FILE *out)
{
    fprintf(out,
            "usage: twinhub device list\n"
            "       twinhub device show ID\n"
            "       twinhub device create ID [--disabled] [--status-reason R] [--edge]\n"
            "                                [--primary-key K] [--secondary-key K]\n"
            "                                [--x509-thumbprint T [--x509-secondary-thumbprint T]\n"
            "                                 | --x509-cert FILE | --x509 | --x509-ca]\n"
            "       twinhub device update ID [--enable | --disable] [--status-reason R]\n"
            "                                [--primary-key K] [--secondary-key K] [--etag E]\n"
            "       twinhub device delete ID [--etag E]\n"
            "       twinhub device disconnect ID [MODULE]\n"
            "\n"
            "Manage the device identities of the running hub.\n"
            "\n"
            "  list        every device: status, connection state, pending C2D, last activity\n"
            "  show        one device with its keys and a device connection string\n"
            "  create      register a device; keys not given are generated; --edge makes it\n"
            "              an IoT Edge device (capabilities.iotEdge, with its deviceScope).\n"
            "              X.509 (no keys): --x509-thumbprint registers a selfSigned\n"
            "              certificate by its SHA-1 or SHA-256 thumbprint, --x509-cert FILE\n"
            "              by its file, --x509 has the development CA issue one (written to\n"
            "              <cert-dir>/devices/ID.pem and .key), --x509-ca makes it\n"
            "              certificateAuthority (a certificate with CN=ID signed by a\n"
            "              verified CA: twinhub cert)\n"
            "  update      enable or disable (a disabled device is disconnected at once),\n"
            "              set the status reason or new keys; --etag makes it conditional\n"
            "  delete      remove a device with its modules, twin and queued C2D messages\n"
            "  disconnect  close the device's (or module's) MQTT connection\n");
    th_global_options_usage(out);
}

int th_cmd_device(int argc, char **argv)
{
    return th_run_command("device", device_actions, device_specs, th_usage_device, argc, argv);
}

/* ---- twinhub module --------------------------------------------------------------------- */

static void human_module_list(const cJSON *data, const void *info)
{
    (void)info;
    static const char *const head[] = {"MODULE", "CONNECTION", "MANAGED BY", "LAST ACTIVITY"};
    struct th_table *t = th_table_new(4, head);
    const cJSON *m;
    int n = 0;
    cJSON_ArrayForEach(m, data)
    {
        const char *row[] = {th_str(m, "moduleId", "?"), th_str(m, "connectionState", "?"),
                             th_str(m, "managedBy", "-"), when(m, "lastActivityTime")};
        if (t && !th_table_row(t, row)) {
            th_table_free(t);
            t = NULL;
        }
        n++;
    }
    if (n == 0)
        printf("no modules\n");
    else if (t)
        th_table_print(t, stdout);
    else
        th_oom();
    th_table_free(t);
}

static int module_list(const struct th_args *a, const char *const *args, int nargs)
{
    cJSON *cmd = th_command_new("listModules"), *data;
    if (!th_command_ids(cmd, args[0], NULL)) {
        cJSON_Delete(cmd);
        return th_oom();
    }
    int rc = th_call_once(a, cmd, &data, NULL);
    return th_finish(a, rc, data, human_module_list, NULL);
}

static int module_show(const struct th_args *a, const char *const *args, int nargs)
{
    return show_identity(a, args[0], args[1]);
}

/*
 * --desired and --tags into `cmd` as "desired" and "tags". Returns -1, or
 * TH_EXIT_USAGE / TH_EXIT_FAIL after a message.
 */
static int add_twin_options(const struct th_args *a, cJSON *cmd)
{
    static const char *const names[][2] = {{"desired", "--desired"}, {"tags", "--tags"}};
    for (int i = 0; i < 2; i++) {
        const char *text = th_args_get(a, names[i][0]);
        cJSON *v;
        int rc;
        if (!text)
            continue;
        if ((rc = th_arg_json(a, names[i][1], text, true, &v)) >= 0)
            return rc;
        if (!cJSON_AddItemToObject(cmd, names[i][0], v)) {
            cJSON_Delete(v);
            return th_oom();
        }
    }
    return -1;
}

static int module_create(const struct th_args *a, const char *const *args, int nargs)
{
    cJSON *cmd = th_command_new("createModule"), *data;
    struct th_hub_info info;
    const char *managed = th_args_get(a, "managed-by");
    if (!th_command_ids(cmd, args[0], args[1]) || !add_keys(a, cmd) ||
        (managed && !cJSON_AddStringToObject(cmd, "managedBy", managed))) {
        cJSON_Delete(cmd);
        return th_oom();
    }
    int rc = add_twin_options(a, cmd);
    if (rc >= 0) {
        cJSON_Delete(cmd);
        return rc;
    }
    rc = th_call_once(a, cmd, &data, &info);
    return th_finish(a, rc, data, human_created, &info);
}

static int module_delete(const struct th_args *a, const char *const *args, int nargs)
{
    return delete_identity(a, args[0], args[1]);
}

/* Print the device ids of `list` after `label`, one per line. */
static void id_lines(const cJSON *list, const char *label)
{
    const cJSON *id;
    cJSON_ArrayForEach(id, list)
    {
        if (cJSON_IsString(id))
            printf("  %-8s %s\n", label, id->valuestring);
    }
}

static void human_ensure(const cJSON *data, const void *info)
{
    (void)info;
    printf("module %s: created %d, skipped %d\n", th_str(data, "moduleId", "?"),
           (int)th_num(data, "created"), (int)th_num(data, "skipped"));
    id_lines(cJSON_GetObjectItemCaseSensitive(data, "createdDevices"), "created");
    id_lines(cJSON_GetObjectItemCaseSensitive(data, "skippedDevices"), "skipped");
}

static int module_ensure(const struct th_args *a, const char *const *args, int nargs)
{
    cJSON *cmd = th_command_new("ensureModule"), *data;
    if (!cmd || !cJSON_AddStringToObject(cmd, "moduleId", args[0])) {
        cJSON_Delete(cmd);
        return th_oom();
    }
    int rc = add_twin_options(a, cmd);
    if (rc >= 0) {
        cJSON_Delete(cmd);
        return rc;
    }
    if (th_args_has(a, "device")) {
        cJSON *ids = cJSON_AddArrayToObject(cmd, "deviceIds");
        for (int i = 0; ids && i < a->nopts; i++) {
            cJSON *s =
                !strcmp(a->opts[i].name, "device") ? cJSON_CreateString(a->opts[i].value) : NULL;
            if (s && !cJSON_AddItemToArray(ids, s)) {
                cJSON_Delete(s);
                ids = NULL;
            }
        }
        if (!ids) {
            cJSON_Delete(cmd);
            return th_oom();
        }
    }
    rc = th_call_once(a, cmd, &data, NULL);
    return th_finish(a, rc, data, human_ensure, NULL);
}

/* `module` is the module asked about. */
static void human_missing(const cJSON *data, const void *module)
{
    const char *missing_module = module;
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(data, "deviceIds");
    int n = (int)th_num(data, "count");
    if (n == 0 && cJSON_GetArraySize(ids) == 0) {
        printf("every device has module %s\n", missing_module);
        return;
    }
    printf("%d device%s without module %s:\n", n, n == 1 ? "" : "s", missing_module);
    const cJSON *id;
    cJSON_ArrayForEach(id, ids)
    {
        if (cJSON_IsString(id))
            printf("  %s\n", id->valuestring);
    }
}

static int module_missing(const struct th_args *a, const char *const *args, int nargs)
{
    cJSON *cmd = th_command_new("devicesWithoutModule"), *data;
    if (!cmd || !cJSON_AddStringToObject(cmd, "moduleId", args[0])) {
        cJSON_Delete(cmd);
        return th_oom();
    }
    int rc = th_call_once(a, cmd, &data, NULL);
    return th_finish(a, rc, data, human_missing, args[0]);
}

static const struct th_optspec module_specs[] = {
    {"desired", 0, true},     {"tags", 0, true},          {"device", 0, true},
    {"primary-key", 0, true}, {"secondary-key", 0, true}, {"etag", 0, true},
    {"managed-by", 0, true},  {NULL, 0, false},
};

static const struct th_action module_actions[] = {
    {"list", module_list, "", 1, 1, "DEVICE"},
    {"show", module_show, "", 2, 2, "DEVICE MODULE"},
    {"create", module_create, "desired tags primary-key secondary-key managed-by", 2, 2,
     "DEVICE MODULE"},
    {"delete", module_delete, "etag", 2, 2, "DEVICE MODULE"},
    {"ensure", module_ensure, "desired tags device", 1, 1, "MODULE"},
    {"missing", module_missing, "", 1, 1, "MODULE"},
    {NULL, NULL, NULL, 0, 0, NULL},
};

void th_usage_module(FILE *out)
{
    fprintf(out,
            "usage: twinhub module list DEVICE\n"
            "       twinhub module show DEVICE MODULE\n"
            "       twinhub module create DEVICE MODULE [--desired JSON|FILE] [--tags JSON|FILE]\n"
            "                                [--primary-key K] [--secondary-key K]\n"
            "                                [--managed-by NAME]\n"
            "       twinhub module delete DEVICE MODULE [--etag E]\n"
            "       twinhub module ensure MODULE [--desired JSON|FILE] [--tags JSON|FILE]\n"
            "                                [--device ID ...]\n"
            "       twinhub module missing MODULE\n"
            "\n"
            "Manage module identities of the running hub.\n"
            "\n"
            "  list     the modules of a device\n"
            "  show     one module with its keys and a module connection string\n"
            "  create   add a module, optionally with initial desired properties and tags;\n"
            "           --managed-by sets managedBy (IoT Edge uses \"IotEdge\")\n"
            "  delete   remove a module and its twin\n"
            "  ensure   create MODULE, with the given initial twin, on every device (or each\n"
            "           --device) that does not have it yet; devices that already have it are\n"
            "           skipped and left untouched. Prints what was created and skipped.\n"
            "  missing  the devices that do not have MODULE\n"
            "\n"
            "JSON|FILE: text starting with '{' is JSON, '-' reads standard input, anything\n"
            "else is a file holding a JSON object.\n");
    th_global_options_usage(out);
}

int th_cmd_module(int argc, char **argv)
{
    return th_run_command("module", module_actions, module_specs, th_usage_module, argc, argv);
}
