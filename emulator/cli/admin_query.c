/*
 * admin_query.c - `twinhub query`, `twinhub export`, `twinhub import` and
 * `twinhub stats` (docs/cli.md): the IoT Hub query language with every page
 * followed, the registry as a document (docs/registry.md) out and in, and the
 * hub's statistics, through the control API (query, exportRegistry,
 * importRegistry, getStatistics; docs/control-api.md).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client.h"
#include "th_file.h"

/* ---- twinhub query ---------------------------------------------------------------------- */

#define QUERY_MAX_PAGES 100000 /* a hub that keeps answering with a continuation is broken */

/* Whether every item is an object of scalars, so that a table shows it all. */
static bool flat_items(const cJSON *items)
{
    const cJSON *it, *v;
    cJSON_ArrayForEach(it, items)
    {
        if (!cJSON_IsObject(it))
            return false;
        cJSON_ArrayForEach(v, it)
        {
            if (cJSON_IsObject(v) || cJSON_IsArray(v))
                return false;
        }
    }
    return true;
}

/* A scalar as table text; the caller frees. */
static char *cell_text(const cJSON *v)
{
    if (!v)
        return strdup("");
    if (cJSON_IsString(v))
        return strdup(v->valuestring);
    return cJSON_PrintUnformatted(v);
}

/* Items whose values are all scalars: a table with the union of their keys as columns. */
static bool print_table(const cJSON *items)
{
    cJSON *cols = cJSON_CreateArray(); /* column names, first seen first */
    const cJSON *it, *v;
    bool ok = cols != NULL;
    cJSON_ArrayForEach(it, items)
    {
        cJSON_ArrayForEach(v, it)
        {
            bool seen = false;
            const cJSON *c;
            cJSON_ArrayForEach(c, cols)
            {
                seen = seen || !strcmp(c->valuestring, v->string);
            }
            if (!seen && ok) {
                cJSON *name = cJSON_CreateString(v->string);
                ok = name && cJSON_AddItemToArray(cols, name);
            }
        }
    }
    int ncols = cJSON_GetArraySize(cols);
    if (!ok || ncols == 0 || ncols > 32) {
        cJSON_Delete(cols);
        return false;
    }
    const char *heads[32];
    for (int i = 0; i < ncols; i++)
        heads[i] = cJSON_GetArrayItem(cols, i)->valuestring;
    struct th_table *t = th_table_new(ncols, heads);
    ok = t != NULL;
    cJSON_ArrayForEach(it, items)
    {
        char *cells[32] = {0};
        for (int i = 0; ok && i < ncols; i++)
            ok = (cells[i] = cell_text(cJSON_GetObjectItemCaseSensitive(it, heads[i]))) != NULL;
        ok = ok && th_table_row(t, (const char *const *)cells);
        for (int i = 0; i < ncols; i++)
            free(cells[i]);
    }
    if (ok)
        th_table_print(t, stdout);
    th_table_free(t);
    cJSON_Delete(cols);
    return ok;
}

static void human_query(const cJSON *items)
{
    int n = cJSON_GetArraySize(items);
    if (n > 0 && !(flat_items(items) && print_table(items))) {
        const cJSON *it;
        cJSON_ArrayForEach(it, items)
        {
            th_print_json(it);
        }
    }
    printf("%d item%s\n", n, n == 1 ? "" : "s");
}

static int query_run(const struct th_args *a, const char *const *args, int nargs)
{
    double page_size = 0;
    const char *ps = th_args_get(a, "page-size");
    int rc;
    if (ps && (rc = th_arg_number(a, "--page-size", ps, 1, 1000, &page_size)) >= 0)
        return rc;
    if (ps && page_size != (double)(int)page_size)
        return th_usage_error(a, "--page-size must be a whole number from 1 to 1000");
    struct th_client *c;
    if ((rc = th_client_open(a, TH_CLI_DEFAULT_TIMEOUT_S, &c)) >= 0)
        return rc;
    double timeout = a->timeout_s > 0 ? a->timeout_s : TH_CLI_DEFAULT_TIMEOUT_S;
    cJSON *all = cJSON_CreateArray();
    char *continuation = NULL;
    char item_type[16] = "";
    rc = all ? -1 : th_oom();
    for (int page = 0; rc < 0; page++) {
        if (page == QUERY_MAX_PAGES) {
            fprintf(stderr,
                    "twinhub: the hub answered %d pages and still gave a continuation; "
                    "giving up\n",
                    page);
            rc = TH_EXIT_FAIL;
            break;
        }
        cJSON *cmd = th_command_new("query"), *data = NULL;
        if (!cmd || !cJSON_AddStringToObject(cmd, "query", args[0]) ||
            (ps && !cJSON_AddNumberToObject(cmd, "pageSize", page_size)) ||
            (continuation && !cJSON_AddStringToObject(cmd, "continuation", continuation))) {
            cJSON_Delete(cmd);
            rc = th_oom();
            break;
        }
        rc = th_client_call(c, cmd, timeout, &data);
        cJSON_Delete(cmd);
        if (rc >= 0)
            break;
        cJSON *items = cJSON_GetObjectItemCaseSensitive(data, "items");
        cJSON *it;
        while (items && (it = cJSON_DetachItemFromArray(items, 0)))
            if (!cJSON_AddItemToArray(all, it)) {
                cJSON_Delete(it);
                rc = th_oom();
            }
        if (!item_type[0])
            snprintf(item_type, sizeof item_type, "%s", th_str(data, "itemType", ""));
        const char *next = th_str(data, "continuation", NULL);
        if (next && continuation && !strcmp(next, continuation)) {
            fprintf(stderr, "twinhub: the hub returned the same continuation twice; giving up\n");
            rc = TH_EXIT_FAIL;
        }
        free(continuation);
        continuation = next && *next ? strdup(next) : NULL;
        cJSON_Delete(data);
        if (rc < 0 && !continuation)
            break;
    }
    free(continuation);
    th_client_close(c);
    if (rc < 0) {
        if (a->json) {
            /* One page's shape, holding every item. */
            cJSON *out = cJSON_CreateObject();
            if (out && cJSON_AddItemToObject(out, "items", all)) {
                all = NULL;
                if (cJSON_AddStringToObject(out, "itemType", item_type[0] ? item_type : "raw") &&
                    cJSON_AddNullToObject(out, "continuation"))
                    th_print_json(out);
                else
                    rc = th_oom();
            } else {
                rc = th_oom();
            }
            cJSON_Delete(out);
        } else {
            human_query(all);
        }
        if (rc < 0)
            rc = TH_EXIT_OK;
    }
    cJSON_Delete(all);
    return rc;
}

static const struct th_optspec query_specs[] = {
    {"page-size", 0, true},
    {NULL, 0, false},
};

static const struct th_action query_actions[] = {
    {NULL, query_run, "page-size", 1, 1, "\"SELECT ...\""},
    {NULL, NULL, NULL, 0, 0, NULL},
};

void th_usage_query(FILE *out)
{
    fprintf(out,
            "usage: twinhub query \"SELECT ... FROM devices|devices.modules|devices.jobs\n"
            "                     [WHERE ...]\"\n"
            "                     [--page-size N]\n"
            "\n"
            "Run an IoT Hub query against the twins of the running hub and print every\n"
            "result, following continuations. Rows of plain values print as a table; whole\n"
            "twins and nested values print as JSON, one item after another. The last line\n"
            "counts the items. FROM devices.jobs lists the devices of jobs (twinhub job).\n"
            "\n"
            "  --page-size N   items per control call, 1-1000 (default: the hub's, 100)\n"
            "\n"
            "With --json the output is one object {\"items\": [every item], \"itemType\": ...,\n"
            "\"continuation\": null}.\n"
            "\n"
            "examples:\n"
            "  twinhub query \"SELECT * FROM devices WHERE tags.site = 'lab'\"\n"
            "  twinhub query \"SELECT deviceId, properties.reported.fw FROM devices\"\n"
            "  twinhub query \"SELECT COUNT() AS n FROM devices.modules WHERE moduleId = 'm1'\"\n");
    th_global_options_usage(out);
}

int th_cmd_query(int argc, char **argv)
{
    return th_run_command("query", query_actions, query_specs, th_usage_query, argc, argv);
}

/* ---- twinhub export --------------------------------------------------------------------- */

static bool put_json(FILE *f, void *doc)
{
    th_print_json_to(f, doc);
    return !ferror(f);
}

/* Write `doc` as pretty JSON to `path` through a temporary file renamed into place. */
static int write_json_file(const char *path, const cJSON *doc)
{
    enum th_file_step step = th_file_replace(path, 0600, false, put_json, (void *)doc);
    if (step == TH_FILE_NAME) {
        fprintf(stderr, "twinhub: -o %s: path too long\n", path);
        return TH_EXIT_FAIL;
    }
    if (step != TH_FILE_DONE) {
        fprintf(stderr, "twinhub: cannot write %s: %s\n", path, strerror(errno));
        return TH_EXIT_FAIL;
    }
    return -1;
}

static int export_run(const struct th_args *a, const char *const *args, int nargs)
{
    const char *path = th_args_get(a, "output");
    cJSON *cmd = th_command_new("exportRegistry"), *data;
    if (!cmd || !cJSON_AddBoolToObject(cmd, "includeTwins", !th_args_has(a, "no-twins"))) {
        cJSON_Delete(cmd);
        return th_oom();
    }
    int rc = th_call_once(a, cmd, &data, NULL);
    if (rc >= 0)
        return rc;
    if (!path || !strcmp(path, "-")) {
        th_print_json(data);
        cJSON_Delete(data);
        return TH_EXIT_OK;
    }
    rc = write_json_file(path, data);
    if (rc < 0) {
        int devices = 0, modules = 0;
        const cJSON *d;
        cJSON_ArrayForEach(d, cJSON_GetObjectItemCaseSensitive(data, "devices"))
        {
            devices++;
            modules += cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(d, "modules"));
        }
        if (!a->json)
            printf("exported %d device%s and %d module%s to %s\n", devices, devices == 1 ? "" : "s",
                   modules, modules == 1 ? "" : "s", path);
        rc = TH_EXIT_OK;
    }
    cJSON_Delete(data);
    return rc;
}

static const struct th_optspec export_specs[] = {
    {"no-twins", 0, false},
    {"output", 'o', true},
    {NULL, 0, false},
};

static const struct th_action export_actions[] = {
    {NULL, export_run, "no-twins output", 0, 0, "[--no-twins] [-o FILE]"},
    {NULL, NULL, NULL, 0, 0, NULL},
};

void th_usage_export(FILE *out)
{
    fprintf(out,
            "usage: twinhub export [--no-twins] [-o FILE]\n"
            "\n"
            "Write the running hub's registry (policies, devices and modules with their keys,\n"
            "and their twins' tags, desired and reported properties) as a registry document\n"
            "(docs/registry.md) that `twinhub import` and `twinhub serve --registry` read.\n"
            "\n"
            "  --no-twins        identities and keys only\n"
            "  -o, --output FILE write FILE (replaced atomically) instead of standard output,\n"
            "                    and print a one-line summary (nothing with --json)\n");
    th_global_options_usage(out);
}

int th_cmd_export(int argc, char **argv)
{
    return th_run_command("export", export_actions, export_specs, th_usage_export, argc, argv);
}

/* ---- twinhub import --------------------------------------------------------------------- */

/* `file` is the registry document's name. */
static void human_import(const cJSON *data, const void *file)
{
    printf("imported %s: created %d, updated %d, skipped %d\n", (const char *)file,
           (int)th_num(data, "created"), (int)th_num(data, "updated"),
           (int)th_num(data, "skipped"));
}

static int import_run(const struct th_args *a, const char *const *args, int nargs)
{
    char err[PATH_MAX + 320];
    cJSON *doc = th_read_json_file(args[0], err, sizeof err);
    if (!doc)
        return th_usage_error(a, "%s", err);
    if (!cJSON_IsObject(doc)) {
        cJSON_Delete(doc);
        return th_usage_error(a, "%s is not a registry document (a JSON object with \"devices\")",
                              args[0]);
    }
    cJSON *cmd = th_command_new("importRegistry"), *data;
    if (!cmd || !cJSON_AddItemToObject(cmd, "registry", doc)) {
        cJSON_Delete(doc);
        cJSON_Delete(cmd);
        return th_oom();
    }
    if (!cJSON_AddBoolToObject(cmd, "overwrite", th_args_has(a, "overwrite"))) {
        cJSON_Delete(cmd);
        return th_oom();
    }
    int rc = th_call_once(a, cmd, &data, NULL);
    return th_finish(a, rc, data, human_import, args[0]);
}

static const struct th_optspec import_specs[] = {
    {"overwrite", 0, false},
    {NULL, 0, false},
};

static const struct th_action import_actions[] = {
    {NULL, import_run, "overwrite", 1, 1, "FILE [--overwrite]"},
    {NULL, NULL, NULL, 0, 0, NULL},
};

void th_usage_import(FILE *out)
{
    fprintf(out, "usage: twinhub import FILE [--overwrite]\n"
                 "\n"
                 "Add the identities of a registry document (docs/registry.md, such as the output\n"
                 "of `twinhub export`; '-' reads standard input) to the running hub. The document\n"
                 "is checked as a whole first: if anything is wrong, nothing is imported and the\n"
                 "error names the field.\n"
                 "\n"
                 "  --overwrite   replace identities that exist already (default: skip them)\n");
    th_global_options_usage(out);
}

int th_cmd_import(int argc, char **argv)
{
    return th_run_command("import", import_actions, import_specs, th_usage_import, argc, argv);
}

/* ---- twinhub stats ---------------------------------------------------------------------- */

static void human_stats(const cJSON *data, const void *ctx)
{
    static const char *const rows[][2] = {
        {"totalDeviceCount", "devices"},       {"enabledDeviceCount", "  enabled"},
        {"disabledDeviceCount", "  disabled"}, {"connectedDeviceCount", "  connected"},
        {"totalModuleCount", "modules"},       {"connectedModuleCount", "  connected"},
    };
    (void)ctx;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        printf("%-12s %.0f\n", rows[i][1], th_num(data, rows[i][0]));
}

static int stats_run(const struct th_args *a, const char *const *args, int nargs)
{
    cJSON *data;
    int rc = th_call_once(a, th_command_new("getStatistics"), &data, NULL);
    return th_finish(a, rc, data, human_stats, NULL);
}

static const struct th_action stats_actions[] = {
    {NULL, stats_run, "", 0, 0, ""},
    {NULL, NULL, NULL, 0, 0, NULL},
};

void th_usage_stats(FILE *out)
{
    fprintf(out, "usage: twinhub stats\n"
                 "\n"
                 "Print the running hub's device and module counts: total, enabled, disabled\n"
                 "and connected.\n");
    th_global_options_usage(out);
}

int th_cmd_stats(int argc, char **argv)
{
    return th_run_command("stats", stats_actions, NULL, th_usage_stats, argc, argv);
}
