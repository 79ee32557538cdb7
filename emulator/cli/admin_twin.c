/*
 * admin_twin.c - `twinhub twin`, `twinhub method` and `twinhub c2d`
 * (docs/cli.md): device and module twins, direct methods and
 * cloud-to-device messages through the control API (getTwin, updateTwin,
 * replaceTwin, invokeMethod, sendC2D; docs/control-api.md).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "th_limits.h"

/* ---- twinhub twin ----------------------------------------------------------------------- */

/* A copy of a properties section without $metadata and $version, for reading. */
static cJSON *readable_section(const cJSON *section)
{
    cJSON *copy = cJSON_Duplicate(section, true);
    if (cJSON_IsObject(copy)) {
        cJSON_DeleteItemFromObjectCaseSensitive(copy, "$metadata");
        cJSON_DeleteItemFromObjectCaseSensitive(copy, "$version");
    }
    return copy;
}

static void print_section(const char *title, const cJSON *section)
{
    const cJSON *ver = cJSON_GetObjectItemCaseSensitive(section, "$version");
    if (cJSON_IsNumber(ver))
        printf("%s ($version %.0f):\n", title, ver->valuedouble);
    else
        printf("%s:\n", title);
    cJSON *copy = readable_section(section);
    if (copy)
        th_print_json(copy);
    else
        printf("{}\n");
    cJSON_Delete(copy);
}

static void print_twin(const cJSON *twin, const void *ctx)
{
    (void)ctx;
    const char *mod = th_str(twin, "moduleId", NULL);
    printf("twin of %s%s%s: version %.0f, etag %s, %s, %s\n", th_str(twin, "deviceId", "?"),
           mod ? "/" : "", mod ? mod : "", th_num(twin, "version"), th_str(twin, "etag", "?"),
           th_str(twin, "status", "?"), th_str(twin, "connectionState", "?"));
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(twin, "properties");
    print_section("tags", cJSON_GetObjectItemCaseSensitive(twin, "tags"));
    print_section("desired", cJSON_GetObjectItemCaseSensitive(props, "desired"));
    print_section("reported", cJSON_GetObjectItemCaseSensitive(props, "reported"));
}

static int twin_show(const struct th_args *a, const char *const *args, int nargs)
{
    cJSON *cmd = th_command_new("getTwin"), *data;
    if (!th_command_ids(cmd, args[0], nargs > 1 ? args[1] : NULL)) {
        cJSON_Delete(cmd);
        return th_oom();
    }
    int rc = th_call_once(a, cmd, &data, NULL);
    return th_finish(a, rc, data, print_twin, NULL);
}

/* updateTwin / replaceTwin with {"tags": .., "properties": {"desired": ..}} from the options. */
static int twin_write(const struct th_args *a, const char *const *args, int nargs, bool replace)
{
    const char *desired_text = th_args_get(a, "desired"), *tags_text = th_args_get(a, "tags");
    const char *etag = th_args_get(a, "etag");
    if (!desired_text && !tags_text)
        return th_usage_error(a, "nothing to %s: pass --desired JSON|FILE and/or --tags JSON|FILE",
                              replace ? "replace" : "patch");
    cJSON *desired = NULL, *tags = NULL, *data;
    int rc;
    if (desired_text && (rc = th_arg_json(a, "--desired", desired_text, true, &desired)) >= 0)
        return rc;
    if (tags_text && (rc = th_arg_json(a, "--tags", tags_text, true, &tags)) >= 0) {
        cJSON_Delete(desired);
        return rc;
    }
    cJSON *cmd = th_command_new(replace ? "replaceTwin" : "updateTwin");
    cJSON *patch = cmd ? cJSON_AddObjectToObject(cmd, "patch") : NULL;
    bool ok = patch && th_command_ids(cmd, args[0], nargs > 1 ? args[1] : NULL) &&
              (!etag || cJSON_AddStringToObject(cmd, "etag", etag));
    if (ok && tags) {
        ok = cJSON_AddItemToObject(patch, "tags", tags);
        if (ok)
            tags = NULL;
    }
    if (ok && desired) {
        cJSON *props = cJSON_AddObjectToObject(patch, "properties");
        ok = props && cJSON_AddItemToObject(props, "desired", desired);
        if (ok)
            desired = NULL;
    }
    cJSON_Delete(tags);
    cJSON_Delete(desired);
    if (!ok) {
        cJSON_Delete(cmd);
        return th_oom();
    }
    rc = th_call_once(a, cmd, &data, NULL);
    return th_finish(a, rc, data, print_twin, NULL);
}

static int twin_patch(const struct th_args *a, const char *const *args, int nargs)
{
    return twin_write(a, args, nargs, false);
}

static int twin_replace(const struct th_args *a, const char *const *args, int nargs)
{
    return twin_write(a, args, nargs, true);
}

static const struct th_optspec twin_specs[] = {
    {"desired", 0, true},
    {"tags", 0, true},
    {"etag", 0, true},
    {NULL, 0, false},
};

static const struct th_action twin_actions[] = {
    {"show", twin_show, "", 1, 2, "DEVICE [MODULE]"},
    {"patch", twin_patch, "desired tags etag", 1, 2, "DEVICE [MODULE] --desired JSON|FILE"},
    {"replace", twin_replace, "desired tags etag", 1, 2, "DEVICE [MODULE] --desired JSON|FILE"},
    {NULL, NULL, NULL, 0, 0, NULL},
};

void th_usage_twin(FILE *out)
{
    fprintf(out,
            "usage: twinhub twin show DEVICE [MODULE]\n"
            "       twinhub twin patch DEVICE [MODULE] [--desired JSON|FILE] [--tags JSON|FILE]\n"
            "                                          [--etag E]\n"
            "       twinhub twin replace DEVICE [MODULE] [--desired JSON|FILE] [--tags JSON|FILE]\n"
            "                                            [--etag E]\n"
            "\n"
            "Read and change device and module twins of the running hub.\n"
            "\n"
            "  show     the twin: tags, desired and reported properties with their $version\n"
            "  patch    merge into tags and desired properties (IoT Hub merge-patch: nested\n"
            "           objects merge, null deletes a key); a connected device gets the change\n"
            "  replace  the given sections replace the stored tags / desired properties\n"
            "\n"
            "At least one of --desired and --tags is needed. --etag E applies the change only\n"
            "when the twin's etag is E ('*' matches any). JSON|FILE: text starting with '{' is\n"
            "JSON, '-' reads standard input, anything else is a file holding a JSON object.\n"
            "The human output hides $metadata; --json prints the whole twin.\n");
    th_global_options_usage(out);
}

int th_cmd_twin(int argc, char **argv)
{
    return th_run_command("twin", twin_actions, twin_specs, th_usage_twin, argc, argv);
}

/* ---- twinhub method --------------------------------------------------------------------- */

#define METHOD_EXTRA_WAIT_S 5

/*
 * The status, then the payload as JSON; a body that is not JSON (rawPayload, control-api.md)
 * is printed as the device sent it, as text or, when it is not text, as base64.
 */
static void human_method(const cJSON *data, const void *ctx)
{
    (void)ctx;
    printf("status %.0f\n", th_num(data, "status"));
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(data, "payload");
    const char *raw = th_str(data, "rawPayload", NULL);
    const char *raw64 = th_str(data, "rawPayloadBase64", NULL);
    if (p)
        th_print_json(p);
    else if (raw)
        printf("%s\n", raw);
    else if (raw64)
        printf("base64 %s\n", raw64);
    else
        printf("null\n");
}

static int method_invoke(const struct th_args *a, const char *const *args, int nargs)
{
    const char *device = args[0], *module = nargs == 3 ? args[1] : NULL;
    const char *name = args[nargs - 1];
    double response_s = TH_METHOD_DEFAULT_TIMEOUT_S, connect_s = 0;
    const char *payload_text = th_args_get(a, "payload");
    const char *connect_text = th_args_get(a, "connect-timeout");
    int rc;
    /* Here --timeout is the method's response timeout, as in the service SDKs. */
    if (a->timeout_s > 0) {
        response_s = a->timeout_s;
        if (response_s < TH_METHOD_MIN_TIMEOUT_S || response_s > TH_METHOD_MAX_TIMEOUT_S ||
            response_s != (double)(int)response_s)
            return th_usage_error(a,
                                  "--timeout %g: a method's response timeout is a whole number "
                                  "of seconds from %d to %d",
                                  response_s, TH_METHOD_MIN_TIMEOUT_S, TH_METHOD_MAX_TIMEOUT_S);
    }
    if (connect_text && (rc = th_arg_number(a, "--connect-timeout", connect_text, 0,
                                            TH_METHOD_MAX_TIMEOUT_S, &connect_s)) >= 0)
        return rc;
    if (connect_s != (double)(int)connect_s)
        return th_usage_error(a, "--connect-timeout must be a whole number of seconds");
    cJSON *payload = NULL;
    char err[256];
    if (payload_text && !(payload = th_parse_json_text(payload_text, strlen(payload_text),
                                                       "--payload", err, sizeof err)))
        return th_usage_error(a,
                              "%s; give JSON such as '{\"a\":1}', 42 or '\"text\"' (a string "
                              "needs its quotes)",
                              err);
    cJSON *cmd = th_command_new("invokeMethod");
    bool ok = th_command_ids(cmd, device, module) &&
              cJSON_AddStringToObject(cmd, "methodName", name) &&
              cJSON_AddNumberToObject(cmd, "responseTimeoutInSeconds", response_s) &&
              cJSON_AddNumberToObject(cmd, "connectTimeoutInSeconds", connect_s);
    if (ok && payload) {
        ok = cJSON_AddItemToObject(cmd, "payload", payload);
        if (ok)
            payload = NULL;
    }
    cJSON_Delete(payload);
    if (!ok) {
        cJSON_Delete(cmd);
        return th_oom();
    }
    struct th_client *c;
    cJSON *data = NULL;
    if ((rc = th_client_open(a, TH_CLI_DEFAULT_TIMEOUT_S, &c)) < 0) {
        rc = th_client_call(c, cmd, response_s + connect_s + METHOD_EXTRA_WAIT_S, &data);
        th_client_close(c);
    }
    cJSON_Delete(cmd);
    /* IoT Hub copies a body that is not JSON into its answer as it is, and the service SDKs
     * then fail to parse that answer: show what came, and fail as an SDK caller would. */
    bool raw = rc < 0 && th_str(data, "rawPayloadBase64", NULL) != NULL;
    char why[300] = "";
    if (raw)
        snprintf(why, sizeof why, "%s", th_str(data, "payloadError", "not JSON"));
    rc = th_finish(a, rc, data, human_method, NULL);
    if (raw) {
        fprintf(stderr,
                "twinhub: the device answered with a body that is not JSON (%s); IoT Hub passes "
                "it on as it is, and the service SDKs fail to parse its answer\n",
                why);
        rc = TH_EXIT_FAIL;
    }
    return rc;
}

static const struct th_optspec method_specs[] = {
    {"payload", 0, true},
    {"connect-timeout", 0, true},
    {NULL, 0, false},
};

static const struct th_action method_actions[] = {
    {"invoke", method_invoke, "payload connect-timeout", 2, 3, "DEVICE [MODULE] NAME"},
    {NULL, NULL, NULL, 0, 0, NULL},
};

void th_usage_method(FILE *out)
{
    fprintf(out,
            "usage: twinhub method invoke DEVICE [MODULE] NAME [--payload JSON] [--timeout S]\n"
            "                             [--connect-timeout S]\n"
            "\n"
            "Call a direct method on a connected device or module and print the status and\n"
            "payload it answered with. Exits 0 whenever the device answered, whatever the\n"
            "status; 1 when the hub reports an error (not online, timeout, ...).\n"
            "\n"
            "  --payload JSON         the request payload, any JSON (default null); a string\n"
            "                         needs its quotes: --payload '\"on\"'\n"
            "  --timeout S            how long the device has to answer, %d-%d s (default %d);\n"
            "                         twinhub waits for the hub %d s longer than that\n"
            "  --connect-timeout S    how long to wait for an offline device to connect,\n"
            "                         0-%d s (default 0: fail at once)\n",
            TH_METHOD_MIN_TIMEOUT_S, TH_METHOD_MAX_TIMEOUT_S, TH_METHOD_DEFAULT_TIMEOUT_S,
            METHOD_EXTRA_WAIT_S, TH_METHOD_MAX_TIMEOUT_S);
    th_global_options_usage(out);
}

int th_cmd_method(int argc, char **argv)
{
    return th_run_command("method", method_actions, method_specs, th_usage_method, argc, argv);
}

/* ---- twinhub c2d ------------------------------------------------------------------------ */

/* --property k=v (or k alone, for a key without value) into an object. */
static int add_properties(const struct th_args *a, cJSON *cmd)
{
    if (!th_args_has(a, "property"))
        return -1;
    cJSON *props = cJSON_AddObjectToObject(cmd, "properties");
    if (!props)
        return th_oom();
    for (int i = 0; i < a->nopts; i++) {
        if (strcmp(a->opts[i].name, "property") != 0)
            continue;
        const char *kvp = a->opts[i].value, *eq = strchr(kvp, '=');
        size_t klen = eq ? (size_t)(eq - kvp) : strlen(kvp);
        if (klen == 0)
            return th_usage_error(a, "--property '%s' needs a name: --property name=value", kvp);
        char *key = strndup(kvp, klen);
        if (!key)
            return th_oom();
        cJSON_DeleteItemFromObjectCaseSensitive(props, key);
        bool ok = eq ? cJSON_AddStringToObject(props, key, eq + 1) != NULL
                     : cJSON_AddNullToObject(props, key) != NULL;
        free(key);
        if (!ok)
            return th_oom();
    }
    return -1;
}

/* `device` is the device the message went to. */
static void human_c2d(const cJSON *data, const void *device)
{
    bool delivered = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(data, "delivered"));
    int queued = (int)th_num(data, "queued");
    printf("sent message %s to %s: %s (%d pending)\n", th_str(data, "messageId", "?"),
           (const char *)device, delivered ? "delivered" : "queued until the device connects",
           queued);
}

static int c2d_send(const struct th_args *a, const char *const *args, int nargs)
{
    static const char *const fields[][2] = {{"message-id", "messageId"},
                                            {"correlation-id", "correlationId"},
                                            {"content-type", "contentType"},
                                            {"content-encoding", "contentEncoding"},
                                            {"ack", "ack"}};
    cJSON *cmd = th_command_new("sendC2D"), *data;
    if (!th_command_ids(cmd, args[0], NULL) || !cJSON_AddStringToObject(cmd, "body", args[1])) {
        cJSON_Delete(cmd);
        return th_oom();
    }
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        const char *v = th_args_get(a, fields[i][0]);
        if (v && !cJSON_AddStringToObject(cmd, fields[i][1], v)) {
            cJSON_Delete(cmd);
            return th_oom();
        }
    }
    int rc = add_properties(a, cmd);
    if (rc >= 0) {
        cJSON_Delete(cmd);
        return rc;
    }
    rc = th_call_once(a, cmd, &data, NULL);
    return th_finish(a, rc, data, human_c2d, args[0]);
}

static const struct th_optspec c2d_specs[] = {
    {"property", 0, true},     {"message-id", 0, true},       {"correlation-id", 0, true},
    {"content-type", 0, true}, {"content-encoding", 0, true}, {"ack", 0, true},
    {NULL, 0, false},
};

static const struct th_action c2d_actions[] = {
    {"send", c2d_send, "property message-id correlation-id content-type content-encoding ack", 2, 2,
     "DEVICE BODY"},
    {NULL, NULL, NULL, 0, 0, NULL},
};

void th_usage_c2d(FILE *out)
{
    fprintf(out,
            "usage: twinhub c2d send DEVICE BODY [--property K=V ...] [--message-id ID]\n"
            "                        [--correlation-id ID] [--content-type T]\n"
            "                        [--content-encoding E] [--ack none|positive|negative|full]\n"
            "\n"
            "Send a cloud-to-device message with BODY as its text. A connected, subscribed\n"
            "device gets it at once; otherwise it waits in the device's queue (at most %d).\n"
            "\n"
            "  --property K=V     an application property (repeat for more; K alone: no value)\n"
            "  --message-id ID    the message id (default: generated)\n"
            "  --correlation-id, --content-type, --content-encoding: the system properties\n"
            "  --ack MODE         the feedback the device's answer should produce\n",
            TH_C2D_MAX_QUEUE);
    th_global_options_usage(out);
}

int th_cmd_c2d(int argc, char **argv)
{
    return th_run_command("c2d", c2d_actions, c2d_specs, th_usage_c2d, argc, argv);
}
