/*
 * security.c - `twinhub security ensure|check|status` (docs/cli.md "twinhub
 * security"): the Azure IoT security module `azureiotsecurity` as one command.
 *
 *   ensure  create the module with the schema-default configuration on every
 *           device that lacks it, through the control API's ensureModule,
 *           which never touches an existing module (what the Azure batch
 *           script Add-SecurityModulesForAllDevicesInIotHub.ps1 is for);
 *   check   validate a configuration object (a file, or a device's module
 *           desired or reported) the way the security agents parse it, with
 *           core/secconfig.h;
 *   status  per device: does the module exist, is it connected, does its
 *           reported configuration hold what desired asks for (getTwin-less:
 *           one listDevices and one paged query over devices.modules).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "client.h"
#include "secconfig.h"

#define MODULE TH_SECCONFIG_MODULE_ID
#define QUERY_MAX_PAGES 100000 /* a hub that keeps answering with a continuation is broken */

/* The tags the batch script (Add-SecurityModulesForAllDevicesInIotHub.ps1) PATCHes in. */
#define DEFAULT_TAGS "{\"securityGroup\":\"default\"}"

static double call_timeout(const struct th_args *a)
{
    return a->timeout_s > 0 ? a->timeout_s : TH_CLI_DEFAULT_TIMEOUT_S;
}

/* ---- findings ------------------------------------------------------------------------------- */

/* One line per finding: "  <key>: <ErrorType>: <message>", warnings marked as such. */
static void print_findings(FILE *out, const struct th_secconfig_report *r)
{
    for (size_t i = 0; i < r->count; i++) {
        const struct th_secconfig_finding *f = &r->items[i];
        fprintf(out, "  %s: %s%s: %s\n", f->key,
                f->kind == TH_SECCONFIG_UNKNOWN_KEY ? "warning, " : "",
                th_secconfig_kind_name(f->kind), f->message);
    }
}

/* The findings that are (`warnings` false) or are not problems, as [{"key", "errorType",
 * "message"}]. */
static cJSON *findings_json(const struct th_secconfig_report *r, bool warnings)
{
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; arr && i < r->count; i++) {
        const struct th_secconfig_finding *f = &r->items[i];
        if ((f->kind == TH_SECCONFIG_UNKNOWN_KEY) != warnings)
            continue;
        cJSON *o = cJSON_CreateObject();
        if (!o || !cJSON_AddStringToObject(o, "key", f->key) ||
            !cJSON_AddStringToObject(o, "errorType", th_secconfig_kind_name(f->kind)) ||
            !cJSON_AddStringToObject(o, "message", f->message) || !cJSON_AddItemToArray(arr, o)) {
            cJSON_Delete(o);
            cJSON_Delete(arr);
            return NULL;
        }
    }
    return arr;
}

/* ---- twinhub security ensure ---------------------------------------------------------------- */

/* Set `name` in `obj` to a copy of `value`, or remove it when `value` is null. */
static bool merge_member(cJSON *obj, const char *name, const cJSON *value)
{
    if (cJSON_IsNull(value)) {
        cJSON_DeleteItemFromObjectCaseSensitive(obj, name);
        return true;
    }
    cJSON *copy = cJSON_Duplicate(value, true);
    if (!copy)
        return false;
    bool ok = cJSON_GetObjectItemCaseSensitive(obj, name)
                  ? cJSON_ReplaceItemInObjectCaseSensitive(obj, name, copy)
                  : cJSON_AddItemToObject(obj, name, copy);
    if (!ok)
        cJSON_Delete(copy);
    return ok;
}

/*
 * The desired document for new modules: {"<object>": <schema defaults>},
 * with --desired merged over it: members of its configuration object replace
 * single defaults (null removes one), its other members are added (null
 * removes). Returns -1 with *out owning the document, or an exit code.
 */
static int ensure_desired(const struct th_args *a, cJSON **out)
{
    *out = NULL;
    cJSON *doc = cJSON_CreateObject(), *defaults = th_secconfig_defaults();
    if (!doc || !defaults || !cJSON_AddItemToObject(doc, TH_SECCONFIG_OBJECT, defaults)) {
        cJSON_Delete(doc); /* `defaults` was not added: free both */
        cJSON_Delete(defaults);
        return th_oom();
    }
    const char *text = th_args_get(a, "desired");
    cJSON *given = NULL;
    int rc;
    if (text && (rc = th_arg_json(a, "--desired", text, true, &given)) >= 0) {
        cJSON_Delete(doc);
        return rc;
    }
    const cJSON *m;
    bool ok = true;
    cJSON_ArrayForEach(m, given)
    {
        cJSON *config = cJSON_GetObjectItemCaseSensitive(doc, TH_SECCONFIG_OBJECT);
        if (!strcmp(m->string, TH_SECCONFIG_OBJECT) && cJSON_IsObject(m) &&
            cJSON_IsObject(config)) {
            const cJSON *k;
            cJSON_ArrayForEach(k, m)
            {
                ok = ok && merge_member(config, k->string, k);
            }
        } else {
            ok = ok && merge_member(doc, m->string, m);
        }
    }
    cJSON_Delete(given);
    if (!ok) {
        cJSON_Delete(doc);
        return th_oom();
    }
    *out = doc;
    return -1;
}

static void human_ensure(const cJSON *data, const void *ctx)
{
    (void)ctx;
    printf("%s: created %d, skipped %d (existing modules are left as they are)\n", MODULE,
           (int)th_num(data, "created"), (int)th_num(data, "skipped"));
    static const char *const lists[][2] = {{"createdDevices", "created"},
                                           {"skippedDevices", "skipped"}};
    for (int i = 0; i < 2; i++) {
        const cJSON *id;
        cJSON_ArrayForEach(id, cJSON_GetObjectItemCaseSensitive(data, lists[i][0]))
        {
            if (cJSON_IsString(id))
                printf("  %-8s %s\n", lists[i][1], id->valuestring);
        }
    }
}

static int security_ensure(const struct th_args *a, const char *const *args, int nargs)
{
    (void)args;
    (void)nargs;
    cJSON *desired;
    int rc = ensure_desired(a, &desired);
    if (rc >= 0)
        return rc;
    /* Write only what `security check` accepts: an agent would refuse anything else. */
    struct th_secconfig_report report;
    if (th_secconfig_check(cJSON_GetObjectItemCaseSensitive(desired, TH_SECCONFIG_OBJECT),
                           &report) != TH_OK) {
        cJSON_Delete(desired);
        return th_oom();
    }
    if (report.count > 0) {
        fprintf(stderr, "twinhub security ensure: %s\n",
                report.problems ? "the configuration is refused, nothing was created "
                                  "(`twinhub module ensure` writes anything):"
                                : "warning:");
        print_findings(stderr, &report);
    }
    size_t problems = report.problems;
    th_secconfig_report_free(&report);
    if (problems) {
        cJSON_Delete(desired);
        return TH_EXIT_FAIL;
    }
    cJSON *cmd = th_command_new("ensureModule"), *tags = NULL, *data;
    const char *tags_text = th_args_get(a, "tags");
    if (tags_text && (rc = th_arg_json(a, "--tags", tags_text, true, &tags)) >= 0) {
        cJSON_Delete(cmd);
        cJSON_Delete(desired);
        return rc;
    }
    if (!tags)
        tags = cJSON_Parse(DEFAULT_TAGS);
    bool ok = cmd && tags && cJSON_AddStringToObject(cmd, "moduleId", MODULE) &&
              cJSON_AddItemToObject(cmd, "desired", desired);
    if (ok)
        desired = NULL;
    ok = ok && cJSON_AddItemToObject(cmd, "tags", tags);
    if (ok)
        tags = NULL;
    if (ok && th_args_has(a, "device")) {
        cJSON *ids = cJSON_AddArrayToObject(cmd, "deviceIds");
        for (int i = 0; ok && i < a->nopts; i++) {
            if (strcmp(a->opts[i].name, "device"))
                continue;
            cJSON *s = ids ? cJSON_CreateString(a->opts[i].value) : NULL;
            ok = s && cJSON_AddItemToArray(ids, s);
            if (!ok)
                cJSON_Delete(s);
        }
    }
    cJSON_Delete(desired);
    cJSON_Delete(tags);
    if (!ok) {
        cJSON_Delete(cmd);
        return th_oom();
    }
    rc = th_call_once(a, cmd, &data, NULL);
    return th_finish(a, rc, data, human_ensure, NULL);
}

/* ---- twinhub security check ----------------------------------------------------------------- */

/*
 * Whether the argument of `check` is a configuration rather than a device id:
 * "-" (standard input), JSON text, a path with a '/' or ending in ".json", or
 * an existing file. Device ids cannot hold a '/'.
 */
static bool names_configuration(const char *arg)
{
    const char *p = arg;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    size_t len = strlen(arg);
    struct stat st;
    return !strcmp(arg, "-") || *p == '{' || *p == '[' || strchr(arg, '/') ||
           (len > 5 && !strcmp(arg + len - 5, ".json")) ||
           (stat(arg, &st) == 0 && S_ISREG(st.st_mode));
}

/* What `check` looks at: the tree it came in (owned) and the object in it (borrowed). */
struct check_source {
    cJSON *root;
    const cJSON *config; /* NULL: there is no configuration object */
    char what[512];      /* for messages: "config.json", "dev-1/azureiotsecurity desired", ... */
};

/*
 * The configuration object of a file, standard input or JSON text: the
 * properties.desired (or .reported) member of a twin, the member of a
 * desired document, or else the whole document. Returns -1 or an exit code.
 */
static int source_from_json(const struct th_args *a, const char *arg, bool reported,
                            struct check_source *src)
{
    char err[PATH_MAX + 320];
    const char *p = arg;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    bool inline_json = *p == '{' || *p == '[';
    src->root = inline_json
                    ? th_parse_json_text(arg, strlen(arg), "the configuration", err, sizeof err)
                    : th_read_json_file(arg, err, sizeof err);
    if (!src->root) {
        fprintf(stderr, "twinhub security check: %s\n", err);
        return TH_EXIT_FAIL;
    }
    const char *name = inline_json         ? "the configuration"
                       : !strcmp(arg, "-") ? "standard input"
                                           : arg;
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(src->root, "properties");
    if (cJSON_IsObject(props)) {
        const char *section = reported ? "reported" : "desired";
        src->config = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(props, section), TH_SECCONFIG_OBJECT);
        snprintf(src->what, sizeof src->what, "%.400s (%s)", name, section);
        return -1;
    }
    if (reported)
        return th_usage_error(a, "--reported needs a device or a twin (a document with "
                                 "properties.reported)");
    const cJSON *member = cJSON_GetObjectItemCaseSensitive(src->root, TH_SECCONFIG_OBJECT);
    src->config = member ? member : src->root;
    snprintf(src->what, sizeof src->what, "%.400s", name);
    return -1;
}

/* The configuration object of DEVICE's module twin. Returns -1 or an exit code. */
static int source_from_device(const struct th_args *a, const char *device, bool reported,
                              struct check_source *src)
{
    cJSON *cmd = th_command_new("getTwin");
    if (!th_command_ids(cmd, device, MODULE)) {
        cJSON_Delete(cmd);
        return th_oom();
    }
    int rc = th_call_once(a, cmd, &src->root, NULL);
    if (rc >= 0)
        return rc;
    const char *section = reported ? "reported" : "desired";
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(src->root, "properties");
    src->config = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(props, section),
                                                   TH_SECCONFIG_OBJECT);
    snprintf(src->what, sizeof src->what, "%.256s/%s %s", device, MODULE, section);
    return -1;
}

static int security_check(const struct th_args *a, const char *const *args, int nargs)
{
    (void)nargs;
    bool reported = th_args_has(a, "reported");
    struct check_source src = {0};
    int rc = names_configuration(args[0]) ? source_from_json(a, args[0], reported, &src)
                                          : source_from_device(a, args[0], reported, &src);
    if (rc >= 0) {
        cJSON_Delete(src.root);
        return rc;
    }
    if (!src.config && reported) {
        fprintf(stderr,
                "twinhub security check: %s: no configuration object: no agent has reported "
                "one yet\n",
                src.what);
        cJSON_Delete(src.root);
        return TH_EXIT_FAIL;
    }
    struct th_secconfig_report report;
    if (th_secconfig_check(src.config, &report) != TH_OK) {
        cJSON_Delete(src.root);
        return th_oom();
    }
    rc = report.problems ? TH_EXIT_FAIL : TH_EXIT_OK;
    if (a->json) {
        cJSON *out = cJSON_CreateObject();
        cJSON *problems = findings_json(&report, false), *warnings = findings_json(&report, true);
        bool ok = out && problems && warnings && cJSON_AddStringToObject(out, "source", src.what) &&
                  cJSON_AddBoolToObject(out, "defaults", !src.config || cJSON_IsNull(src.config)) &&
                  cJSON_AddBoolToObject(out, "valid", report.problems == 0) &&
                  cJSON_AddItemToObject(out, "problems", problems);
        if (ok)
            problems = NULL;
        ok = ok && cJSON_AddItemToObject(out, "warnings", warnings);
        if (ok) {
            warnings = NULL;
            th_print_json(out);
        } else {
            rc = th_oom();
        }
        cJSON_Delete(problems);
        cJSON_Delete(warnings);
        cJSON_Delete(out);
    } else if (!src.config || cJSON_IsNull(src.config)) {
        printf("%s: no configuration object: the agents use the defaults\n", src.what);
    } else if (report.count == 0) {
        printf("%s: valid\n", src.what);
    } else {
        size_t warnings = report.count - report.problems;
        printf("%s: %zu problem%s, %zu warning%s\n", src.what, report.problems,
               report.problems == 1 ? "" : "s", warnings, warnings == 1 ? "" : "s");
        print_findings(stdout, &report);
    }
    th_secconfig_report_free(&report);
    cJSON_Delete(src.root);
    return rc;
}

/* ---- twinhub security status ---------------------------------------------------------------- */

/* Every item of `query`, following continuations, into the array *items. Returns -1 or an exit
 * code. */
static int query_all(const struct th_args *a, struct th_client *c, const char *query, cJSON **items)
{
    *items = cJSON_CreateArray();
    if (!*items)
        return th_oom();
    char *continuation = NULL;
    int rc = -1;
    for (int page = 0; rc < 0; page++) {
        if (page == QUERY_MAX_PAGES) {
            fprintf(stderr, "twinhub: the hub keeps giving a continuation; giving up\n");
            rc = TH_EXIT_FAIL;
            break;
        }
        cJSON *cmd = th_command_new("query"), *data = NULL;
        if (!cmd || !cJSON_AddStringToObject(cmd, "query", query) ||
            !cJSON_AddNumberToObject(cmd, "pageSize", 1000) ||
            (continuation && !cJSON_AddStringToObject(cmd, "continuation", continuation))) {
            cJSON_Delete(cmd);
            rc = th_oom();
            break;
        }
        rc = th_client_call(c, cmd, call_timeout(a), &data);
        cJSON_Delete(cmd);
        if (rc >= 0)
            break;
        cJSON *page_items = cJSON_GetObjectItemCaseSensitive(data, "items"), *it;
        while (page_items && (it = cJSON_DetachItemFromArray(page_items, 0)))
            if (!cJSON_AddItemToArray(*items, it)) {
                cJSON_Delete(it);
                rc = th_oom();
            }
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
    if (rc >= 0) {
        cJSON_Delete(*items);
        *items = NULL;
    }
    return rc;
}

/* The item of `arr` whose `key` member is the string `value`, or NULL. */
static cJSON *find_by(const cJSON *arr, const char *key, const char *value)
{
    cJSON *it;
    cJSON_ArrayForEach(it, arr)
    {
        const char *s = th_str(it, key, NULL);
        if (s && !strcmp(s, value))
            return it;
    }
    return NULL;
}

/*
 * One device's entry: {"deviceId", "module": bool, "connectionState",
 * "configuration": "matches" | "differs" | "not reported", "differences"}
 * (the last three only when the module exists). NULL when out of memory.
 */
static cJSON *device_status(const char *device, const cJSON *twin)
{
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddStringToObject(o, "deviceId", device) ||
        !cJSON_AddBoolToObject(o, "module", twin != NULL)) {
        cJSON_Delete(o);
        return NULL;
    }
    if (!twin)
        return o;
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(twin, "properties");
    const cJSON *desired = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(props, "desired"), TH_SECCONFIG_OBJECT);
    const cJSON *reported = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(props, "reported"), TH_SECCONFIG_OBJECT);
    cJSON *diff = NULL;
    if (!cJSON_AddStringToObject(o, "connectionState", th_str(twin, "connectionState", "?")) ||
        th_secconfig_diff(desired, reported, &diff) != TH_OK) {
        cJSON_Delete(o);
        return NULL;
    }
    const char *verdict = th_secconfig_verdict(reported, diff);
    if (!cJSON_AddStringToObject(o, "configuration", verdict) ||
        !cJSON_AddItemToObject(o, "differences", diff)) {
        cJSON_Delete(diff);
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* A JSON value as short text for a line of output; the caller frees. */
static char *short_json(const cJSON *v)
{
    char *text = cJSON_PrintUnformatted(v);
    if (text && strlen(text) > 80)
        strcpy(text + 76, " ...");
    return text;
}

static void human_status(const cJSON *data, const void *ctx)
{
    (void)ctx;
    const cJSON *devices = cJSON_GetObjectItemCaseSensitive(data, "devices"), *d;
    if (cJSON_GetArraySize(devices) == 0) {
        printf("no devices\n");
        return;
    }
    static const char *const head[] = {"DEVICE", "MODULE", "CONNECTION", "CONFIGURATION"};
    struct th_table *t = th_table_new(4, head);
    int with_module = 0, connected = 0, matching = 0, n = 0;
    cJSON_ArrayForEach(d, devices)
    {
        bool has = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(d, "module"));
        const char *conn = th_str(d, "connectionState", "-");
        const char *verdict = th_str(d, "configuration", "-");
        char config[64];
        int ndiff = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(d, "differences"));
        if (!strcmp(verdict, "differs"))
            snprintf(config, sizeof config, "differs (%d key%s)", ndiff, ndiff == 1 ? "" : "s");
        else if (!strcmp(verdict, "matches"))
            snprintf(config, sizeof config, "reported matches desired");
        else
            snprintf(config, sizeof config, "%s", verdict);
        const char *row[] = {th_str(d, "deviceId", "?"), has ? "yes" : "no", conn, config};
        if (t && !th_table_row(t, row)) {
            th_table_free(t);
            t = NULL;
        }
        n++;
        with_module += has;
        connected += !strcmp(conn, "Connected");
        matching += !strcmp(verdict, "matches");
    }
    if (!t) {
        th_oom();
        return;
    }
    th_table_print(t, stdout);
    th_table_free(t);
    printf("%d device%s: %d with module %s, %d connected, %d reporting what is desired\n", n,
           n == 1 ? "" : "s", with_module, MODULE, connected, matching);
    cJSON_ArrayForEach(d, devices)
    {
        const cJSON *x;
        cJSON_ArrayForEach(x, cJSON_GetObjectItemCaseSensitive(d, "differences"))
        {
            if (strcmp(th_str(d, "configuration", ""), "differs"))
                break; /* "not reported" lists every key: the verdict says it all */
            char *want = short_json(cJSON_GetObjectItemCaseSensitive(x, "desired"));
            const cJSON *rv = cJSON_GetObjectItemCaseSensitive(x, "reported");
            char *got = rv ? short_json(rv) : NULL;
            if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(x, "bare")))
                printf("  %s: %s: desired %s is not in the {\"value\": ...} form\n",
                       th_str(d, "deviceId", "?"), th_str(x, "key", "?"), want ? want : "?");
            else
                printf("  %s: %s: desired %s, %s%s\n", th_str(d, "deviceId", "?"),
                       th_str(x, "key", "?"), want ? want : "?", got ? "reported " : "not reported",
                       got ? got : "");
            free(want);
            free(got);
        }
    }
}

static int security_status(const struct th_args *a, const char *const *args, int nargs)
{
    (void)args;
    (void)nargs;
    struct th_client *c;
    int rc = th_client_open(a, TH_CLI_DEFAULT_TIMEOUT_S, &c);
    if (rc >= 0)
        return rc;
    cJSON *cmd = th_command_new("listDevices"), *devices = NULL, *twins = NULL, *out = NULL;
    rc = cmd ? th_client_call(c, cmd, call_timeout(a), &devices) : th_oom();
    cJSON_Delete(cmd);
    if (rc < 0)
        rc = query_all(a, c, "SELECT * FROM devices.modules WHERE moduleId = '" MODULE "'", &twins);
    th_client_close(c);
    /* Every device, or the --device ones in the order given. */
    cJSON *list = NULL;
    if (rc < 0 && th_args_has(a, "device")) {
        list = cJSON_CreateArray();
        for (int i = 0; rc < 0 && i < a->nopts; i++) {
            if (strcmp(a->opts[i].name, "device"))
                continue;
            cJSON *d = find_by(devices, "deviceId", a->opts[i].value);
            if (!d) {
                fprintf(stderr, "twinhub security status: device '%s' is not registered\n",
                        a->opts[i].value);
                rc = TH_EXIT_FAIL;
            } else if (!list || !cJSON_AddItemReferenceToArray(list, d)) {
                rc = th_oom();
            }
        }
    }
    if (rc < 0) {
        out = cJSON_CreateObject();
        cJSON *arr = out ? cJSON_AddArrayToObject(out, "devices") : NULL;
        if (!arr || !cJSON_AddStringToObject(out, "moduleId", MODULE))
            rc = th_oom();
        const cJSON *d, *chosen = list ? list : devices;
        cJSON_ArrayForEach(d, chosen)
        {
            if (rc >= 0)
                break;
            const char *id = th_str(d, "deviceId", "?");
            cJSON *entry = device_status(id, find_by(twins, "deviceId", id));
            if (!entry || !cJSON_AddItemToArray(arr, entry)) {
                cJSON_Delete(entry);
                rc = th_oom();
            }
        }
    }
    cJSON_Delete(list);
    cJSON_Delete(devices);
    cJSON_Delete(twins);
    if (rc >= 0) {
        cJSON_Delete(out);
        return rc;
    }
    return th_finish(a, rc, out, human_status, NULL);
}

/* ---- the command ---------------------------------------------------------------------------- */

static const struct th_optspec security_specs[] = {
    {"desired", 0, true},   {"tags", 0, true}, {"device", 0, true},
    {"reported", 0, false}, {NULL, 0, false},
};

static const struct th_action security_actions[] = {
    {"ensure", security_ensure, "desired tags device", 0, 0, ""},
    {"check", security_check, "reported", 1, 1, "FILE|DEVICE"},
    {"status", security_status, "device", 0, 0, ""},
    {NULL, NULL, NULL, 0, 0, NULL},
};

void th_usage_security(FILE *out)
{
    fprintf(out,
            "usage: twinhub security ensure [--desired JSON|FILE] [--tags JSON|FILE]\n"
            "                               [--device ID ...]\n"
            "       twinhub security check FILE|DEVICE [--reported]\n"
            "       twinhub security status [--device ID ...]\n"
            "\n"
            "The Azure IoT security module (" MODULE "), whose configuration is the\n"
            "desired object \"" TH_SECCONFIG_OBJECT "\".\n"
            "\n"
            "  ensure  create the module on every device (or each --device) that lacks it,\n"
            "          with the schema-default configuration and the tag\n"
            "          securityGroup=default, as Azure's batch script does; an existing\n"
            "          module is never touched.\n"
            "          --desired (a desired document) is merged over the defaults, key by key\n"
            "          inside the configuration object (null removes a key); --tags replaces\n"
            "          the tags. A configuration `check` refuses is not written. Prints what\n"
            "          was created and skipped.\n"
            "  check   validate a configuration the way the security agents (C and C#) parse\n"
            "          it: the {\"value\": ...} form, each key's type, ISO 8601 durations,\n"
            "          priorities Off/Low/High in any case, and the agents' Conflict and\n"
            "          NotOptimal checks. FILE is a configuration object, a desired\n"
            "          document or a twin ('-' reads standard input, '{...}' is JSON);\n"
            "          anything else is a DEVICE whose module twin is read. --reported\n"
            "          checks the reported configuration instead of the desired one.\n"
            "          Exit status 1 when any problem is found (unknown keys are only\n"
            "          warnings).\n"
            "  status  per device: whether the module exists, its connection state, and\n"
            "          whether its reported configuration holds every desired key (and which\n"
            "          keys differ).\n");
    th_global_options_usage(out);
}

int th_cmd_security(int argc, char **argv)
{
    return th_run_command("security", security_actions, security_specs, th_usage_security, argc,
                          argv);
}
