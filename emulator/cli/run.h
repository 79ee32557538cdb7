/*
 * run.h - private interface between the parts of `twinhub run` (run.c: the
 * event loop, the control connection, the steps and the command; run_hub.c:
 * the hub process; run_agent.c: the agent process). One thread: everything
 * here runs on it, and every wait goes through th_run_pump.
 */
#ifndef TH_CLI_RUN_H
#define TH_CLI_RUN_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "cli.h" /* PATH_MAX */
#include "scenario.h"

#define EXIT_HUB 3 /* the hub could not be started or reached */
#define READY_TIMEOUT_MS 15000
#define AGENT_STOP_MS 5000
#define HUB_STOP_MS 12000
#define MAX_FILES 256
#define LOG_TAIL_LINES 20

struct th_ctl_client;

struct opts {
    const char *agent;
    const char *hub_file;
    const char *junit;
    const char *record;
    const char *report_dir;
    bool verbose;
    double time_scale;             /* --time-scale; 1 when not given */
    const char *vars[MAX_FILES];   /* --var NAME=VALUE, as given */
    size_t nvars;
    const char *files[MAX_FILES];
    size_t nfiles;
};

struct hub {
    bool own;
    pid_t pid; /* serve, when own; 0 when not running */
    int status;
    int out_fd;
    char out[8192];
    size_t outlen;
    bool ready;
    int mqtt_port, mqtts_port;
    int https_port; /* own: 443 when it could be bound on the hub's address, else 0 */
    char host[300]; /* where the control client and the agent connect */
    char hub_name[256];
    char id_scope[72]; /* --hub: the info file's idScope; own: "" (serve's default) */
    char ca_file[PATH_MAX];
    char policy[64];
    char key[128];
    char dir[PATH_MAX]; /* own: the run directory (state, info, registry, log) */
    char cert_dir[PATH_MAX];
    char log[PATH_MAX + 16];
    char registry[PATH_MAX + 16];
    char record[PATH_MAX];
    int64_t ready_ms; /* when it became ready (monotonic) */
};

struct agent {
    pid_t pid; /* 0 when not running */
    bool started, exited, reported;
    int status;
    char log[PATH_MAX + 32];
};

struct run {
    struct opts o;
    int sig_fd;
    sigset_t old_mask;
    bool interrupted;
    int64_t t0_ms;
    struct hub hub;
    struct th_ctl_client *ctl; /* the control connection (emulator/ctl), NULL when closed */
    char ctl_id[64];           /* its client id */
    struct agent agent;
    const struct th_scenario *s;
    struct th_scn_session *ss;
    FILE *own_record; /* with --hub and --record: the runner writes what it sees */
    char report_dir[PATH_MAX];
    bool report_dir_temp;
    bool any_failed;
    /* The loopback address of the runner's own hubs (run_hub.c), kept for the whole run. */
    struct {
        char ip[16];     /* 127.x.y.z, or "" while none is chosen */
        int lock_fd;     /* an flock that keeps other runners off it; -1 */
        int next;        /* the next candidate */
        bool https;      /* 443 can be bound on it */
        bool fallback;   /* no address of its own: free ports on 127.0.0.1 */
        bool noted;      /* the note about 443 was printed */
    } addr;
};

/* Wait up to timeout_ms for anything (network, signals, hub output) and handle it. */
void th_run_pump(struct run *r, int timeout_ms);

/* ---- the hub (run_hub.c) ---- */

/*
 * Start the runner's own hub for the current scenario on a loopback address
 * of its own (127.x.y.z) with the standard ports 8883, 1883 and, when it can
 * be bound, 443; 0 or EXIT_HUB.
 */
int th_run_hub_start_own(struct run *r);
/* Use the running hub of --hub (its info file); 0 or EXIT_HUB after a message. */
int th_run_hub_use_file(struct run *r);
/* (Re)start `twinhub serve` with the hub's settings; true once it said it is ready. */
bool th_run_hub_spawn(struct run *r);
/* SIGTERM serve and wait for it (SIGKILL after HUB_STOP_MS); closes its output. */
void th_run_hub_stop(struct run *r);
/* Why the hub did not come up, with the end of its log. */
void th_run_hub_explain(struct run *r);
/* Give the run's hub address back (at the end of the run). */
void th_run_hub_release_addr(struct run *r);

/* ---- the agent (run_agent.c) ---- */

/*
 * Start the agent: `cmdline` with the variables substituted, in the
 * scenario's directory, in a process group of its own, its output to the
 * agent log, with the connection string `cs` of identity d[/m] and the hub's
 * endpoints in its environment. False after a message when it cannot start.
 */
bool th_run_agent_spawn(struct run *r, const char *cmdline, const char *cs, const char *d,
                        const char *m);
/* SIGTERM to the agent's process group, SIGKILL after AGENT_STOP_MS. */
void th_run_agent_stop(struct run *r);

#endif
