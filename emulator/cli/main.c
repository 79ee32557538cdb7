/*
 * main.c - the `twinhub` command: finds the subcommand in argv[1] and runs
 * it (docs/cli.md). `serve` lives in serve.c; the admin subcommands, thin
 * clients of the control API, in admin*.c on top of client.c; `run` and
 * `verify` join the table below as they are written.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "x509_cli.h"
#include "client.h"

struct command {
    const char *name;
    int (*run)(int argc, char **argv); /* argv[0] is the subcommand name */
    void (*usage)(FILE *out);
    const char *summary;
};

static const struct command commands[] = {
    {"serve", th_cmd_serve, th_usage_serve,
     "run a local IoT Hub: mosquitto with the twinhub plugin, on loopback"},
    {"device", th_cmd_device, th_usage_device,
     "list, show, create, update, delete or disconnect devices"},
    {"cert", th_cmd_cert, th_usage_cert, "CA certificates: list, upload, verify, delete"},
    {"module", th_cmd_module, th_usage_module,
     "list, show, create or delete modules; ensure a module on every device"},
    {"twin", th_cmd_twin, th_usage_twin, "show, patch or replace a device or module twin"},
    {"method", th_cmd_method, th_usage_method, "invoke a direct method on a device or module"},
    {"c2d", th_cmd_c2d, th_usage_c2d, "send a cloud-to-device message"},
    {"query", th_cmd_query, th_usage_query, "run an IoT Hub query over the twins"},
    {"export", th_cmd_export, th_usage_export, "write the registry and twins as a document"},
    {"import", th_cmd_import, th_usage_import, "add identities from a registry document"},
    {"stats", th_cmd_stats, th_usage_stats, "device and module counts"},
    {"dps", th_cmd_dps, th_usage_dps, "the provisioning service: enrollments, registrations"},
    {"config", th_cmd_config, th_usage_config,
     "automatic device and module configurations: list, show, create, update, delete"},
    {"job", th_cmd_job, th_usage_job, "run a twin update or direct method over a query (jobs)"},
    {"security", th_cmd_security, th_usage_security,
     "the azureiotsecurity module: ensure it, check a configuration, status"},
    {"monitor", th_cmd_monitor, th_usage_monitor,
     "print the hub's events as they happen: telemetry, connections, twins, methods"},
    {"run", th_cmd_run, th_usage_run, "run scenario files against an agent (JUnit, recording)"},
    {"verify", th_cmd_verify, th_usage_verify, "check a recording against scenarios, offline"},
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *out)
{
    fprintf(out, "usage: twinhub <command> [options]\n"
                 "\n"
                 "twinhub is a local stand-in for Azure IoT Hub.\n"
                 "\n"
                 "commands:\n");
    for (size_t i = 0; i < NCOMMANDS; i++)
        fprintf(out, "  %-9s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "  %-9s %s\n", "version", "print the version");
    fprintf(out, "  %-9s %s\n", "help",
            "show this text, or `twinhub help <command>` for one command");
    fprintf(out, "\n"
                 "The admin commands (device ... stats) talk to a running `twinhub serve`,\n"
                 "found through <cert-dir>/hubs/ unless --hub or --connection-string says\n"
                 "otherwise. `twinhub help <command>` shows the options. See docs/cli.md.\n");
}

static const struct command *find(const char *name)
{
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return TH_EXIT_USAGE;
    }
    /* `twinhub --json device list`: global options before the command move after it. */
    int skip = 1;
    for (int span; skip < argc && (span = th_global_option_span(argv[skip])) > 0;)
        skip += span;
    if (skip > 1 && skip < argc && argv[skip][0] != '-') {
        char *cmd_name = argv[skip];
        memmove(argv + 2, argv + 1, (size_t)(skip - 1) * sizeof *argv);
        argv[1] = cmd_name;
    }
    const char *name = argv[1];
    if (!strcmp(name, "version") || !strcmp(name, "--version")) {
        printf("twinhub %s\n", TH_VERSION);
        return TH_EXIT_OK;
    }
    if (!strcmp(name, "help") || !strcmp(name, "--help") || !strcmp(name, "-h")) {
        if (argc > 2) {
            const struct command *cmd = find(argv[2]);
            if (!cmd) {
                fprintf(stderr, "twinhub: unknown command '%s'; run 'twinhub help' for the list\n",
                        argv[2]);
                return TH_EXIT_USAGE;
            }
            cmd->usage(stdout);
        } else {
            usage(stdout);
        }
        return TH_EXIT_OK;
    }
    const struct command *cmd = find(name);
    if (!cmd) {
        fprintf(stderr, "twinhub: unknown command '%s'; run 'twinhub help' for the list\n", name);
        return TH_EXIT_USAGE;
    }
    return cmd->run(argc - 1, argv + 1);
}
