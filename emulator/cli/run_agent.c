/*
 * run_agent.c - the agent under test of `twinhub run` (docs/scenarios.md,
 * "The agent"): started with /bin/sh -c in the scenario's directory, in a
 * process group of its own so that the whole agent stops at once, with its
 * connection string and the hub's endpoints in its environment and its
 * output in the agent log.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "run.h"
#include "util.h"

bool th_run_agent_spawn(struct run *r, const char *cmdline, const char *cs, const char *d,
                        const char *m)
{
    const struct th_scenario *s = r->s;
    const cJSON *vars = th_scn_session_vars(r->ss);
    char unknown[300];
    char *command_line = th_vars_subst_string(cmdline, vars, unknown, sizeof unknown);
    if (!command_line) {
        fprintf(stderr, "twinhub run: the agent command uses ${%s}, which is not known\n", unknown);
        return false;
    }
    /* The environment: ours plus the hub's and the scenario's. */
    char mp[16], sp[16], ts[32];
    snprintf(mp, sizeof mp, "%d", r->hub.mqtt_port);
    snprintf(sp, sizeof sp, "%d", r->hub.mqtts_port);
    snprintf(ts, sizeof ts, "%g", r->o.time_scale);
    const char *fixed[][2] = {
        {"TWINHUB_CONNECTION_STRING", cs},   {"IOTHUB_DEVICE_CONNECTION_STRING", cs},
        {"TWINHUB_CA_FILE", r->hub.ca_file}, {"NODE_EXTRA_CA_CERTS", r->hub.ca_file},
        {"SSL_CERT_FILE", r->hub.ca_file},   {"TWINHUB_MQTT_PORT", mp},
        {"TWINHUB_MQTTS_PORT", sp},          {"TWINHUB_HUB_NAME", r->hub.hub_name},
        {"TWINHUB_TIME_SCALE", ts},
    };
    size_t nenv = sizeof fixed / sizeof fixed[0] + (size_t)cJSON_GetArraySize(s->agent_env);
    char **env_set = calloc(nenv + 1, 2 * sizeof *env_set);
    size_t k = 0;
    for (size_t i = 0; env_set && i < sizeof fixed / sizeof fixed[0]; i++) {
        env_set[k++] = strdup(fixed[i][0]);
        env_set[k++] = strdup(fixed[i][1]);
    }
    const cJSON *c;
    cJSON_ArrayForEach(c, s->agent_env)
    {
        if (!env_set)
            break;
        char *v = th_vars_subst_string(c->valuestring, vars, unknown, sizeof unknown);
        if (!v) {
            fprintf(stderr, "twinhub run: agent.env.%s uses ${%s}, which is not known\n", c->string,
                    unknown);
            v = strdup("");
        }
        env_set[k++] = strdup(c->string);
        env_set[k++] = v;
    }
    int logfd = open(r->agent.log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (logfd < 0) {
        fprintf(stderr, "twinhub run: cannot write %s: %s\n", r->agent.log, strerror(errno));
    }
    fflush(NULL);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        if (!th_child_setup(&r->old_mask, parent))
            _exit(1);
        setpgid(0, 0); /* its own group: the whole agent can be stopped at once */
        for (size_t i = 0; env_set && i < k; i += 2)
            setenv(env_set[i], env_set[i + 1], 1);
        if (s->dir[0] && chdir(s->dir) != 0) {
            dprintf(logfd >= 0 ? logfd : 2, "twinhub run: cannot enter %s: %s\n", s->dir,
                    strerror(errno));
            _exit(126);
        }
        int nul = open("/dev/null", O_RDONLY);
        if (nul >= 0)
            dup2(nul, 0);
        if (logfd >= 0) {
            dup2(logfd, 1);
            dup2(logfd, 2);
        }
        execl("/bin/sh", "sh", "-c", command_line, (char *)NULL);
        _exit(127);
    }
    if (logfd >= 0)
        close(logfd);
    for (size_t i = 0; env_set && i < k; i++)
        free(env_set[i]);
    free(env_set);
    if (pid < 0) {
        fprintf(stderr, "twinhub run: cannot start the agent: %s\n", strerror(errno));
        free(command_line);
        return false;
    }
    setpgid(pid, pid);
    if (r->o.verbose)
        fprintf(stderr, "twinhub run: started the agent (pid %ld) as %s%s%s: %s\n", (long)pid, d,
                m ? "/" : "", m ? m : "", command_line);
    free(command_line);
    r->agent.pid = pid;
    r->agent.started = true;
    r->agent.exited = false;
    r->agent.reported = false;
    return true;
}

/* SIGTERM to the agent's process group, SIGKILL after AGENT_STOP_MS. */
void th_run_agent_stop(struct run *r)
{
    struct agent *a = &r->agent;
    if (a->pid <= 0)
        return;
    pid_t pid = a->pid;
    kill(-pid, SIGTERM);
    int64_t deadline = th_mono_ms() + AGENT_STOP_MS;
    while (a->pid > 0 && th_mono_ms() < deadline)
        th_run_pump(r, (int)(deadline - th_mono_ms()));
    if (a->pid > 0) {
        kill(-pid, SIGKILL);
        waitpid(pid, NULL, 0);
        a->pid = 0;
    } else {
        kill(-pid, SIGKILL); /* anything the shell left behind */
    }
}
