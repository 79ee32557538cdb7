/*
 * config.c - `twinhub config`: automatic device and module configurations
 * of a running hub (docs/cli.md), a thin client of the control API's
 * configuration commands (createConfiguration, ...; docs/control-api.md).
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "client.h"

static void human_list(const cJSON *data, const void *ctx)
{
    (void)ctx;
    static const char *const head[] = {"ID",       "KIND",    "PRIORITY",
                                       "TARGETED", "APPLIED", "TARGET CONDITION"};
    struct th_table *t = th_table_new(6, head);
    const cJSON *c;
    int n = 0;
    cJSON_ArrayForEach(c, data)
    {
        const cJSON *results = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(c, "systemMetrics"), "results");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(c, "content");
        char pri[24], tgt[24], app[24];
        snprintf(pri, sizeof pri, "%d", (int)th_num(c, "priority"));
        snprintf(tgt, sizeof tgt, "%d", (int)th_num(results, "targetedCount"));
        snprintf(app, sizeof app, "%d", (int)th_num(results, "appliedCount"));
        const char *row[] = {th_str(c, "id", "?"),
                             cJSON_GetObjectItemCaseSensitive(content, "moduleContent") ? "module"
                                                                                        : "device",
                             pri,
                             tgt,
                             app,
                             th_str(c, "targetCondition", "")};
        if (t && !th_table_row(t, row)) {
            th_table_free(t);
            t = NULL;
        }
        n++;
    }
    if (n == 0)
        printf("no configurations\n");
    else if (t)
        th_table_print(t, stdout);
    else
        th_oom();
    th_table_free(t);
}

/* A configuration: its summary, then the whole document as JSON. */
static void human_config(const cJSON *data, const void *verb)
{
    const cJSON *results = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(data, "systemMetrics"), "results");
    if (verb)
        printf("%s configuration %s\n", (const char *)verb, th_str(data, "id", "?"));
    printf("targeted %d, applied %d\n", (int)th_num(results, "targetedCount"),
           (int)th_num(results, "appliedCount"));
    th_print_json(data);
}

static void human_deleted(const cJSON *data, const void *id)
{
    (void)data;
    printf("deleted configuration %s\n", (const char *)id);
}

static void human_test(const cJSON *data, const void *ctx)
{
    (void)ctx;
    const char *tc = th_str(data, "targetConditionError", "");
    printf("targetCondition: %s\n", tc[0] ? tc : "ok");
    const cJSON *m;
    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(data, "customMetricQueryErrors"))
    {
        printf("metric %s: %s\n", m->string,
               cJSON_IsString(m) && m->valuestring[0] ? m->valuestring : "ok");
    }
}

/* Adds the members the options give (--target, --priority, --labels, --metrics, --content). */
static int add_options(const struct th_args *a, cJSON *doc)
{
    const char *target = th_args_get(a, "target");
    const char *priority = th_args_get(a, "priority");
    static const char *const json_opts[] = {"labels", "metrics", "content"};
    if (target) {
        cJSON_DeleteItemFromObjectCaseSensitive(doc, "targetCondition");
        if (!cJSON_AddStringToObject(doc, "targetCondition", target))
            return th_oom();
    }
    if (priority) {
        double p;
        int rc = th_arg_number(a, "priority", priority, 0, 2147483647, &p);
        if (rc >= 0)
            return rc;
        cJSON_DeleteItemFromObjectCaseSensitive(doc, "priority");
        if (!cJSON_AddNumberToObject(doc, "priority", p))
            return th_oom();
    }
    for (size_t i = 0; i < sizeof json_opts / sizeof json_opts[0]; i++) {
        const char *text = th_args_get(a, json_opts[i]);
        if (!text)
            continue;
        cJSON *v = NULL;
        int rc = th_arg_json(a, json_opts[i], text, true, &v);
        if (rc >= 0)
            return rc;
        if (!strcmp(json_opts[i], "metrics") && !cJSON_GetObjectItemCaseSensitive(v, "queries")) {
            cJSON *wrap = cJSON_CreateObject(); /* --metrics '{"name": "SELECT ..."}' */
            if (!wrap || !cJSON_AddItemToObject(wrap, "queries", v)) {
                cJSON_Delete(wrap);
                cJSON_Delete(v);
                return th_oom();
            }
            v = wrap;
        }
        cJSON_DeleteItemFromObjectCaseSensitive(doc, json_opts[i]);
        if (!cJSON_AddItemToObject(doc, json_opts[i], v)) {
            cJSON_Delete(v);
            return th_oom();
        }
    }
    return -1;
}

/* {"command": name, "id": id, "configuration": doc (taken)[, "etag"]}; NULL on OOM. */
static cJSON *config_command(const char *name, const char *id, cJSON *doc, const char *etag)
{
    cJSON *cmd = th_command_new(name);
    if (!cmd || !cJSON_AddStringToObject(cmd, "id", id) ||
        (doc && !cJSON_AddItemToObject(cmd, "configuration", doc)) ||
        (etag && !cJSON_AddStringToObject(cmd, "etag", etag))) {
        if (!cmd || !cJSON_GetObjectItemCaseSensitive(cmd, "configuration"))
            cJSON_Delete(doc);
        cJSON_Delete(cmd);
        return NULL;
    }
    return cmd;
}

static int config_list(const struct th_args *a, const char *const *args, int nargs)
{
    (void)args;
    (void)nargs;
    cJSON *data;
    int rc = th_call_once(a, th_command_new("listConfigurations"), &data, NULL);
    return th_finish(a, rc, data, human_list, NULL);
}

static int config_show(const struct th_args *a, const char *const *args, int nargs)
{
    (void)nargs;
    cJSON *data;
    int rc = th_call_once(a, config_command("getConfiguration", args[0], NULL, NULL), &data, NULL);
    return th_finish(a, rc, data, human_config, NULL);
}

static int config_create(const struct th_args *a, const char *const *args, int nargs)
{
    (void)nargs;
    cJSON *doc = NULL;
    const char *from = th_args_get(a, "from");
    int rc = from ? th_arg_json(a, "from", from, true, &doc) : -1;
    if (rc >= 0)
        return rc;
    if (!doc && !(doc = cJSON_CreateObject()))
        return th_oom();
    if ((rc = add_options(a, doc)) >= 0) {
        cJSON_Delete(doc);
        return rc;
    }
    if (!cJSON_GetObjectItemCaseSensitive(doc, "content")) {
        cJSON_Delete(doc);
        return th_usage_error(a, "a configuration needs --content (or a document with \"content\" "
                                 "in --from)");
    }
    cJSON *data;
    rc = th_call_once(a, config_command("createConfiguration", args[0], doc, NULL), &data, NULL);
    return th_finish(a, rc, data, human_config, "created");
}

/* Reads the configuration, changes what the options say, writes it back with its etag (or --etag).
 */
static int config_update(const struct th_args *a, const char *const *args, int nargs)
{
    (void)nargs;
    struct th_client *c;
    int rc = th_client_open(a, TH_CLI_DEFAULT_TIMEOUT_S, &c);
    if (rc >= 0)
        return rc;
    cJSON *doc = NULL, *data = NULL;
    cJSON *get = config_command("getConfiguration", args[0], NULL, NULL);
    rc = get ? th_client_call(c, get, TH_CLI_DEFAULT_TIMEOUT_S, &doc) : th_oom();
    cJSON_Delete(get);
    if (rc < 0 && (rc = add_options(a, doc)) < 0) {
        const char *etag = th_args_get(a, "etag");
        char read_etag[64];
        snprintf(read_etag, sizeof read_etag, "%s", th_str(doc, "etag", "*"));
        cJSON *cmd = config_command("updateConfiguration", args[0], doc, etag ? etag : read_etag);
        doc = NULL;
        rc = cmd ? th_client_call(c, cmd, TH_CLI_DEFAULT_TIMEOUT_S, &data) : th_oom();
        cJSON_Delete(cmd);
    }
    cJSON_Delete(doc);
    th_client_close(c);
    return th_finish(a, rc, data, human_config, "updated");
}

static int config_delete(const struct th_args *a, const char *const *args, int nargs)
{
    (void)nargs;
    cJSON *data;
    int rc = th_call_once(
        a, config_command("deleteConfiguration", args[0], NULL, th_args_get(a, "etag")), &data,
        NULL);
    return th_finish(a, rc, data, human_deleted, args[0]);
}

static int config_test(const struct th_args *a, const char *const *args, int nargs)
{
    (void)args;
    (void)nargs;
    cJSON *input = cJSON_CreateObject(), *cmd = th_command_new("testConfigurationQueries");
    const char *target = th_args_get(a, "target"), *metrics = th_args_get(a, "metrics");
    cJSON *m = NULL;
    int rc = metrics ? th_arg_json(a, "metrics", metrics, true, &m) : -1;
    if (rc >= 0 || !input || !cmd ||
        (target && !cJSON_AddStringToObject(input, "targetCondition", target)) ||
        (m && !cJSON_AddItemToObject(input, "customMetricQueries", m)) ||
        !cJSON_AddItemToObject(cmd, "input", input)) {
        if (!cJSON_GetObjectItemCaseSensitive(input, "customMetricQueries"))
            cJSON_Delete(m);
        if (!cJSON_GetObjectItemCaseSensitive(cmd, "input"))
            cJSON_Delete(input);
        cJSON_Delete(cmd);
        return rc >= 0 ? rc : th_oom();
    }
    cJSON *data;
    rc = th_call_once(a, cmd, &data, NULL);
    if (rc < 0 && a->json) {
        th_print_json(data);
        cJSON_Delete(data);
        return TH_EXIT_OK;
    }
    if (rc < 0) {
        bool bad = th_str(data, "targetConditionError", "")[0] != '\0';
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(data, "customMetricQueryErrors"))
        {
            bad = bad || (cJSON_IsString(e) && e->valuestring[0]);
        }
        human_test(data, NULL);
        cJSON_Delete(data);
        return bad ? TH_EXIT_FAIL : TH_EXIT_OK;
    }
    return rc;
}

static const struct th_optspec config_specs[] = {
    {"content", 0, true}, {"target", 0, true}, {"priority", 0, true}, {"labels", 0, true},
    {"metrics", 0, true}, {"from", 0, true},   {"etag", 0, true},     {NULL, 0, false},
};

static const struct th_action config_actions[] = {
    {"list", config_list, "", 0, 0, ""},
    {"show", config_show, "", 1, 1, "ID"},
    {"create", config_create, "content target priority labels metrics from", 1, 1, "ID"},
    {"update", config_update, "target priority labels metrics etag", 1, 1, "ID"},
    {"delete", config_delete, "etag", 1, 1, "ID"},
    {"test", config_test, "target metrics", 0, 0, ""},
    {NULL, NULL, NULL, 0, 0, NULL},
};

void th_usage_config(FILE *out)
{
    fprintf(out,
            "usage: twinhub config list\n"
            "       twinhub config show ID\n"
            "       twinhub config create ID --content JSON [--target COND] [--priority N]\n"
            "                                [--labels JSON] [--metrics JSON] [--from FILE]\n"
            "       twinhub config update ID [--target COND] [--priority N] [--labels JSON]\n"
            "                                [--metrics JSON] [--etag ETAG]\n"
            "       twinhub config delete ID [--etag ETAG]\n"
            "       twinhub config test [--target COND] [--metrics JSON]\n"
            "\n"
            "Automatic device and module configurations (IoT Hub's automatic device\n"
            "management): desired properties written into every twin the target condition\n"
            "selects, the highest priority winning per twin; twinhub applies them at once.\n"
            "\n"
            "  --content JSON   {\"deviceContent\": {\"properties.desired.x\": 1}} or\n"
            "                   {\"moduleContent\": {...}} (JSON text, a file, or - for stdin);\n"
            "                   it cannot change after create\n"
            "  --target COND    a condition on device twins (tags.env = 'prod'), * for every\n"
            "                   device, or \"from devices.modules where ...\" for modules\n"
            "  --priority N     0 to 2147483647 (default 0); higher wins, then the newest\n"
            "  --labels JSON    {\"name\": \"value\", ...}\n"
            "  --metrics JSON   custom metrics {\"name\": \"SELECT ...\"} (at most 5)\n"
            "  --from FILE      a whole configuration document (the REST body); the options\n"
            "                   above override its members\n"
            "  --etag ETAG      update or delete only if the configuration's etag is ETAG\n"
            "                   (update defaults to the etag it just read)\n"
            "\n"
            "`test` checks a target condition and metric queries without creating anything\n"
            "and exits 1 when one does not parse.\n");
    th_global_options_usage(out);
}

int th_cmd_config(int argc, char **argv)
{
    return th_run_command("config", config_actions, config_specs, th_usage_config, argc, argv);
}
