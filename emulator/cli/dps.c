/*
 * dps.c - `twinhub dps ...` (docs/cli.md, docs/dps.md): the running hub's
 * provisioning service through the control API (control_dps.c): its ID
 * scope, individual enrollments and enrollment groups (symmetric keys),
 * registration states, and the derived key of a group member (computed
 * here, with the core's th_dps_derive_key).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "client.h"
#include "dps.h"

static void human_info(const cJSON *data, const void *ctx)
{
    (void)ctx;
    printf("ID scope       %s\n"
           "assigned hub   %s\n"
           "service policy %s\n"
           "enrollments    %.0f (individual and groups)\n",
           th_str(data, "idScope", "?"), th_str(data, "assignedHub", "?"),
           th_str(data, "policy", "?"), th_num(data, "enrollments"));
}

static int dps_info(const struct th_args *a, const char *const *args, int nargs)
{
    cJSON *data;
    (void)args;
    (void)nargs;
    int rc = th_call_once(a, th_command_new("dpsInfo"), &data, NULL);
    return th_finish(a, rc, data, human_info, NULL);
}

static const char *key_of(const cJSON *doc, const char *which)
{
    const cJSON *att = cJSON_GetObjectItemCaseSensitive(doc, "attestation");
    return th_str(cJSON_GetObjectItemCaseSensitive(att, "symmetricKey"), which,
                  th_str(att, "type", "-"));
}

static void human_enrollment(const cJSON *data, const void *ctx)
{
    const bool *group = ctx;
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(data, "registrationState");
    printf("%s %s (%s)\n", *group ? "enrollment group" : "enrollment",
           th_str(data, *group ? "enrollmentGroupId" : "registrationId", "?"),
           th_str(data, "provisioningStatus", "?"));
    if (!*group)
        printf("  device id      %s\n", th_str(data, "deviceId", "(the registration id)"));
    printf("  primary key    %s\n  secondary key  %s\n  etag           %s\n",
           key_of(data, "primaryKey"), key_of(data, "secondaryKey"), th_str(data, "etag", "?"));
    if (rs)
        printf("  registered     device %s, %s\n", th_str(rs, "deviceId", "?"),
               th_str(rs, "substatus", "?"));
}

/* The enrollment document from the options (created or replaced as a whole). */
static int build_body(const struct th_args *a, const char *id, bool group, cJSON **out)
{
    cJSON *body = cJSON_CreateObject(), *twin = NULL;
    const char *twin_text = th_args_get(a, "initial-twin");
    int rc;
    *out = NULL;
    if (twin_text && (rc = th_arg_json(a, "--initial-twin", twin_text, true, &twin)) >= 0) {
        cJSON_Delete(body);
        return rc;
    }
    cJSON *att = body ? cJSON_AddObjectToObject(body, "attestation") : NULL;
    cJSON *sym = att ? cJSON_AddObjectToObject(att, "symmetricKey") : NULL;
    cJSON *caps = body ? cJSON_AddObjectToObject(body, "capabilities") : NULL;
    const char *pk = th_args_get(a, "primary-key"), *sk = th_args_get(a, "secondary-key");
    const char *did = th_args_get(a, "device-id");
    bool ok = sym && caps && cJSON_AddStringToObject(att, "type", "symmetricKey") &&
              cJSON_AddStringToObject(body, group ? "enrollmentGroupId" : "registrationId", id) &&
              (!pk || cJSON_AddStringToObject(sym, "primaryKey", pk)) &&
              (!sk || cJSON_AddStringToObject(sym, "secondaryKey", sk)) &&
              (!did || cJSON_AddStringToObject(body, "deviceId", did)) &&
              cJSON_AddStringToObject(body, "provisioningStatus",
                                      th_args_has(a, "disabled") ? "disabled" : "enabled") &&
              cJSON_AddBoolToObject(caps, "iotEdge", th_args_has(a, "edge"));
    if (ok && th_args_has(a, "reset-on-reprovision")) {
        cJSON *rp = cJSON_AddObjectToObject(body, "reprovisionPolicy");
        ok = rp && cJSON_AddBoolToObject(rp, "updateHubAssignment", true) &&
             cJSON_AddBoolToObject(rp, "migrateDeviceData", false);
    }
    if (ok && twin) {
        ok = cJSON_AddItemToObject(body, "initialTwin", twin);
        twin = ok ? NULL : twin;
    }
    cJSON_Delete(twin);
    if (!ok) {
        cJSON_Delete(body);
        return th_oom();
    }
    *out = body;
    return -1;
}

static int put(const struct th_args *a, const char *id, bool group)
{
    cJSON *body, *data;
    int rc = build_body(a, id, group, &body);
    if (rc >= 0)
        return rc;
    cJSON *cmd = th_command_new("dpsPut");
    if (!cmd ||
        !cJSON_AddStringToObject(cmd, "collection", group ? "enrollmentGroups" : "enrollments") ||
        !cJSON_AddStringToObject(cmd, "id", id) || !cJSON_AddItemToObject(cmd, "body", body)) {
        if (!cmd || !cJSON_GetObjectItemCaseSensitive(cmd, "body"))
            cJSON_Delete(body);
        cJSON_Delete(cmd);
        return th_oom();
    }
    rc = th_call_once(a, cmd, &data, NULL);
    return th_finish(a, rc, data, human_enrollment, &group);
}

static int dps_enroll(const struct th_args *a, const char *const *args, int nargs)
{
    (void)nargs;
    return put(a, args[0], false);
}

static int dps_enroll_group(const struct th_args *a, const char *const *args, int nargs)
{
    (void)nargs;
    if (th_args_has(a, "device-id"))
        return th_usage_error(a, "--device-id is for individual enrollments only (a group "
                                 "member's device id is its registration id)");
    return put(a, args[0], true);
}

/* {"command": name, "collection": c, "id": id}. */
static cJSON *coll_cmd(const char *name, const char *collection, const char *id)
{
    cJSON *cmd = th_command_new(name);
    if (cmd && (!cJSON_AddStringToObject(cmd, "collection", collection) ||
                (id && !cJSON_AddStringToObject(cmd, "id", id)))) {
        cJSON_Delete(cmd);
        return NULL;
    }
    return cmd;
}

static int dps_show(const struct th_args *a, const char *const *args, int nargs)
{
    static const bool group_t = true, group_f = false;
    bool group = th_args_has(a, "group");
    cJSON *data;
    (void)nargs;
    int rc = th_call_once(
        a, coll_cmd("dpsGet", group ? "enrollmentGroups" : "enrollments", args[0]), &data, NULL);
    return th_finish(a, rc, data, human_enrollment, group ? &group_t : &group_f);
}

static void human_list(const cJSON *data, const void *ctx)
{
    const bool *group = ctx;
    static const char *const head[] = {"ID", "STATUS", "DEVICE", "PRIMARY KEY"};
    struct th_table *t = th_table_new(4, head);
    const cJSON *e;
    int n = 0;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(data, "items"))
    {
        const cJSON *rs = cJSON_GetObjectItemCaseSensitive(e, "registrationState");
        const char *row[] = {th_str(e, *group ? "enrollmentGroupId" : "registrationId", "?"),
                             th_str(e, "provisioningStatus", "?"),
                             *group ? "-" : th_str(rs, "deviceId", "(not registered)"),
                             key_of(e, "primaryKey")};
        if (t && !th_table_row(t, row)) {
            th_table_free(t);
            t = NULL;
        }
        n++;
    }
    if (n == 0)
        printf("no %s\n", *group ? "enrollment groups" : "individual enrollments");
    else if (t)
        th_table_print(t, stdout);
    else
        th_oom();
    th_table_free(t);
}

static int dps_list(const struct th_args *a, const char *const *args, int nargs)
{
    static const bool group_t = true, group_f = false;
    bool group = th_args_has(a, "groups");
    cJSON *cmd = coll_cmd("dpsQuery", group ? "enrollmentGroups" : "enrollments", NULL), *data;
    (void)args;
    (void)nargs;
    if (cmd && !cJSON_AddNumberToObject(cmd, "pageSize", 1000)) {
        cJSON_Delete(cmd);
        cmd = NULL;
    }
    int rc = th_call_once(a, cmd, &data, NULL);
    return th_finish(a, rc, data, human_list, group ? &group_t : &group_f);
}

static void human_deleted(const cJSON *data, const void *ctx)
{
    (void)data;
    printf("deleted %s\n", (const char *)ctx);
}

static int dps_delete(const struct th_args *a, const char *const *args, int nargs)
{
    cJSON *data;
    const char *coll = th_args_has(a, "group")          ? "enrollmentGroups"
                       : th_args_has(a, "registration") ? "registrations"
                                                        : "enrollments";
    cJSON *cmd = coll_cmd("dpsDelete", coll, args[0]);
    const char *etag = th_args_get(a, "etag");
    (void)nargs;
    if (cmd && etag && !cJSON_AddStringToObject(cmd, "etag", etag)) {
        cJSON_Delete(cmd);
        cmd = NULL;
    }
    int rc = th_call_once(a, cmd, &data, NULL);
    return th_finish(a, rc, data, human_deleted, args[0]);
}

static void human_registration(const cJSON *data, const void *ctx)
{
    (void)ctx;
    printf("registration %s: %s to %s as device %s (%s), last %s\n",
           th_str(data, "registrationId", "?"), th_str(data, "status", "?"),
           th_str(data, "assignedHub", "?"), th_str(data, "deviceId", "?"),
           th_str(data, "substatus", "?"), th_str(data, "lastUpdatedDateTimeUtc", "?"));
}

static int dps_registration(const struct th_args *a, const char *const *args, int nargs)
{
    cJSON *data;
    (void)nargs;
    int rc = th_call_once(a, coll_cmd("dpsGet", "registrations", args[0]), &data, NULL);
    return th_finish(a, rc, data, human_registration, NULL);
}

/* Offline: no hub needed. */
static int dps_derive_key(const struct th_args *a, const char *const *args, int nargs)
{
    char key[64];
    (void)nargs;
    if (th_dps_derive_key(args[0], args[1], key, sizeof key) != TH_OK)
        return th_usage_error(a, "GROUP-KEY '%s' is not base64", args[0]);
    printf("%s\n", key);
    return TH_EXIT_OK;
}

static const struct th_optspec dps_specs[] = {
    {"primary-key", 0, true},
    {"secondary-key", 0, true},
    {"device-id", 0, true},
    {"disabled", 0, false},
    {"edge", 0, false},
    {"initial-twin", 0, true},
    {"group", 0, false},
    {"groups", 0, false},
    {"registration", 0, false},
    {"etag", 0, true},
    {"reset-on-reprovision", 0, false},
    {NULL, 0, false},
};

#define PUT_OPTS "primary-key secondary-key disabled edge initial-twin reset-on-reprovision"

static const struct th_action dps_actions[] = {
    {"info", dps_info, "", 0, 0, ""},
    {"enroll", dps_enroll, PUT_OPTS " device-id", 1, 1, "REGISTRATION-ID"},
    {"enroll-group", dps_enroll_group, PUT_OPTS " device-id", 1, 1, "GROUP-ID"},
    {"show", dps_show, "group", 1, 1, "ID"},
    {"list", dps_list, "groups", 0, 0, ""},
    {"delete", dps_delete, "group registration etag", 1, 1, "ID"},
    {"registration", dps_registration, "", 1, 1, "REGISTRATION-ID"},
    {"derive-key", dps_derive_key, "", 2, 2, "GROUP-KEY REGISTRATION-ID"},
    {NULL, NULL, NULL, 0, 0, NULL},
};

void th_usage_dps(FILE *out)
{
    fprintf(out, "usage: twinhub dps info\n"
                 "       twinhub dps enroll REGISTRATION-ID [--device-id D] [--primary-key K]\n"
                 "                          [--secondary-key K] [--disabled] [--edge]\n"
                 "                          [--initial-twin JSON] [--reset-on-reprovision]\n"
                 "       twinhub dps enroll-group GROUP-ID [the same options but --device-id]\n"
                 "       twinhub dps show ID [--group]\n"
                 "       twinhub dps list [--groups]\n"
                 "       twinhub dps delete ID [--group | --registration] [--etag E]\n"
                 "       twinhub dps registration REGISTRATION-ID\n"
                 "       twinhub dps derive-key GROUP-KEY REGISTRATION-ID\n"
                 "\n"
                 "The running hub's Device Provisioning Service (docs/dps.md): devices register\n"
                 "with its ID scope and are assigned to this hub.\n"
                 "\n"
                 "  info          the ID scope, the assigned hub and the service policy\n"
                 "  enroll        create or replace an individual enrollment (symmetric key;\n"
                 "                keys not given are generated); --initial-twin\n"
                 "                '{\"tags\":{...},\"properties\":{\"desired\":{...}}}'\n"
                 "  enroll-group  create or replace an enrollment group; a member's key is\n"
                 "                derive-key of the group key and its registration id\n"
                 "  show, list    enrollments (--group, --groups: enrollment groups)\n"
                 "  delete        an enrollment, a group, or a registration state\n"
                 "  registration  the registration state of a registration id\n"
                 "  derive-key    a group member's device key, computed here\n");
    th_global_options_usage(out);
}

int th_cmd_dps(int argc, char **argv)
{
    return th_run_command("dps", dps_actions, dps_specs, th_usage_dps, argc, argv);
}
