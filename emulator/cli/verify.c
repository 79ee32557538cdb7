/*
 * verify.c - `twinhub verify RECORDING --scenario FILE` (docs/scenarios.md,
 * "Verifying a recording"): checks a scenario's expectation steps against
 * a recording (recording.md) offline. The records are fed to the same
 * expectation engine `twinhub run` feeds live (emulator/scenario/), so the
 * verdicts, the lines and the JUnit report are the same. Every line is read
 * with the journal's parser (core/journal.h) before any scenario runs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "journal.h"
#include "json.h"
#include "scenario.h"
#include "util.h"

#define MAX_SCENARIOS 64
#define MAX_RECORDING_BYTES (1024u * 1024 * 1024)

void th_usage_verify(FILE *out)
{
    fprintf(out,
            "usage: twinhub verify RECORDING --scenario FILE [--scenario FILE...] [--junit FILE]\n"
            "\n"
            "Check the expectation steps of scenarios against a recording made by\n"
            "`twinhub run --record` (or `twinhub serve --record` with mark events), offline.\n"
            "Steps are lined up by their mark events; each expectation is evaluated over the\n"
            "records after its mark, with its time bound measured on the records' timestamps.\n"
            "\n"
            "options:\n"
            "  --scenario FILE   a scenario file (repeat for several)\n"
            "  --junit FILE      write a JUnit XML report\n"
            "  -v, --verbose     also print each scenario's segment of the recording\n"
            "  -h, --help        show this text\n"
            "\n"
            "exit status: 0 every step passed, 1 a step failed, 2 a scenario is invalid or the\n"
            "recording cannot be read. See docs/scenarios.md.\n");
}

/* One line of the recording, kept as text until a scenario needs it. */
struct line {
    char *text;
    size_t len;
    long number;
    const char *scenario_begin; /* set when it is a scenarioBegin mark: the scenario's name */
    char *owned_name;
};

struct recording {
    struct line *lines;
    size_t n;
};

static void recording_free(struct recording *r)
{
    for (size_t i = 0; i < r->n; i++) {
        free(r->lines[i].text);
        free(r->lines[i].owned_name);
    }
    free(r->lines);
}

/* Read and check every line; returns TH_EXIT_USAGE after a message naming the line. */
static int read_recording(const char *path, struct recording *r)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        fprintf(stderr, "twinhub verify: cannot read the recording %s: %s\n", path,
                strerror(errno));
        return TH_EXIT_USAGE;
    }
    char *buf = NULL;
    size_t cap = 0, alloc = 0;
    ssize_t got;
    long number = 0;
    int rc = -1;
    while ((got = getline(&buf, &cap, f)) >= 0) {
        number++;
        size_t len = (size_t)got;
        while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
            len--;
        size_t start = 0;
        while (start < len && (buf[start] == ' ' || buf[start] == '\t'))
            start++;
        if (start == len)
            continue;
        cJSON *rec = NULL;
        struct th_journal_record jr;
        struct th_error e = {0};
        if (th_journal_parse_text(buf + start, len - start, TH_SCN_MAX_FILE_BYTES, TH_SCN_MAX_DEPTH,
                                  &rec, &jr, &e) != TH_OK) {
            fprintf(stderr, "twinhub verify: %s:%ld: %s\n", path, number, e.message);
            rc = TH_EXIT_USAGE;
            break;
        }
        if (r->n == alloc) {
            alloc = alloc ? alloc * 2 : 1024;
            struct line *nl = realloc(r->lines, alloc * sizeof *nl);
            if (!nl) {
                cJSON_Delete(rec);
                rc = TH_EXIT_FAIL;
                break;
            }
            r->lines = nl;
        }
        struct line *l = &r->lines[r->n];
        memset(l, 0, sizeof *l);
        l->text = strndup(buf + start, len - start);
        l->len = len - start;
        l->number = number;
        if (jr.kind == TH_JOURNAL_MARK && jr.as.mark.action &&
            !strcmp(jr.as.mark.action, "scenarioBegin") && jr.as.mark.scenario) {
            l->owned_name = strdup(jr.as.mark.scenario);
            l->scenario_begin = l->owned_name;
        }
        cJSON_Delete(rec);
        if (!l->text) {
            rc = TH_EXIT_FAIL;
            break;
        }
        r->n++;
    }
    if (rc < 0 && ferror(f)) {
        fprintf(stderr, "twinhub verify: cannot read the recording %s: %s\n", path,
                strerror(errno));
        rc = TH_EXIT_USAGE;
    }
    free(buf);
    fclose(f);
    return rc;
}

struct verified {
    struct th_scenario *s;
    struct th_scn_session *ss;
    struct th_junit_case *cases;
    char timestamp[TH_TIME_BUF];
    double time_s;
};

/* Evaluate one scenario over its segment of the recording and print its lines. */
static int verify_one(const struct recording *rec, const char *rec_path, struct verified *v,
                      bool verbose)
{
    const struct th_scenario *s = v->s;
    /* The segment: from the last scenarioBegin of this scenario to the next scenarioBegin. */
    size_t start = 0, runs = 0;
    for (size_t i = 0; i < rec->n; i++)
        if (rec->lines[i].scenario_begin && !strcmp(rec->lines[i].scenario_begin, s->name)) {
            start = i;
            runs++;
        }
    size_t end = rec->n;
    for (size_t i = start + 1; i < rec->n; i++)
        if (rec->lines[i].scenario_begin) {
            end = i;
            break;
        }
    printf("scenario %s (%s)\n", s->name, s->file);
    if (runs > 1)
        printf("  the recording holds %zu runs of this scenario; verifying the last, from line "
               "%ld\n",
               runs, rec->lines[start].number);
    else if (runs == 0)
        printf("  the recording has no scenarioBegin mark for it; verifying from its first line\n");
    v->ss = th_scn_session_new(s, true);
    if (!v->ss)
        return TH_EXIT_FAIL;
    struct th_error e = {0};
    if (th_scn_session_seed_registry(v->ss, s->registry, &e) != TH_OK) {
        fprintf(stderr, "twinhub verify: %s: the registry cannot be loaded: %s\n", s->file,
                e.message);
        return TH_EXIT_USAGE;
    }
    for (size_t i = start; i < end; i++) {
        const struct line *l = &rec->lines[i];
        if (verbose)
            printf("  | %s\n", l->text);
        cJSON *record = NULL;
        if (th_json_parse(l->text, l->len, TH_SCN_MAX_FILE_BYTES, TH_SCN_MAX_DEPTH, &record, &e) !=
                TH_OK ||
            th_scn_session_feed(v->ss, record, &e) != TH_OK) {
            fprintf(stderr, "twinhub verify: %s:%ld: %s\n", rec_path, l->number, e.message);
            return TH_EXIT_USAGE;
        }
    }
    th_scn_session_finish(v->ss);
    int failed = 0, passed = 0, skipped = 0;
    for (size_t i = 0; i < s->nsteps; i++) {
        const struct th_step_result *r = th_scn_session_result(v->ss, i);
        char line[4096];
        th_scn_format_line(&s->steps[i], r, line, sizeof line);
        printf("%s\n", line);
        failed += r->verdict == TH_VERDICT_FAIL;
        passed += r->verdict == TH_VERDICT_PASS;
        skipped += r->verdict == TH_VERDICT_SKIP;
    }
    printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    int64_t first = th_scn_session_first_time(v->ss), last = th_scn_session_last_time(v->ss);
    if (first)
        th_time_format(first, v->timestamp);
    v->time_s = last > first ? (double)(last - first) / 1e6 : 0;
    v->cases = calloc(s->nsteps, sizeof *v->cases);
    if (!v->cases)
        return TH_EXIT_FAIL;
    th_scn_junit_cases(s, v->ss, v->cases);
    return failed ? TH_EXIT_FAIL : TH_EXIT_OK;
}

enum { OPT_SCENARIO = 256, OPT_JUNIT };

int th_cmd_verify(int argc, char **argv)
{
    static const struct option opts[] = {
        {"scenario", required_argument, NULL, OPT_SCENARIO},
        {"junit", required_argument, NULL, OPT_JUNIT},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *scenarios[MAX_SCENARIOS];
    size_t nscen = 0;
    const char *junit = NULL;
    bool verbose = false;
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":vh", opts, NULL)) != -1) {
        switch (c) {
        case OPT_SCENARIO:
            if (nscen == MAX_SCENARIOS) {
                fprintf(stderr, "twinhub verify: at most %d scenarios at once\n", MAX_SCENARIOS);
                return TH_EXIT_USAGE;
            }
            scenarios[nscen++] = optarg;
            break;
        case OPT_JUNIT:
            junit = optarg;
            break;
        case 'v':
            verbose = true;
            break;
        case 'h':
            th_usage_verify(stdout);
            return TH_EXIT_OK;
        case ':':
            fprintf(stderr, "twinhub verify: %s needs a value; see twinhub verify --help\n",
                    argv[optind - 1]);
            return TH_EXIT_USAGE;
        default:
            fprintf(stderr, "twinhub verify: unknown option %s; see twinhub verify --help\n",
                    argv[optind - 1]);
            return TH_EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "twinhub verify: give the recording: twinhub verify RECORDING "
                        "--scenario FILE\n");
        return TH_EXIT_USAGE;
    }
    if (optind + 1 < argc) {
        fprintf(stderr, "twinhub verify: unexpected argument '%s'; give one recording\n",
                argv[optind + 1]);
        return TH_EXIT_USAGE;
    }
    if (nscen == 0) {
        fprintf(stderr, "twinhub verify: give the scenario: --scenario FILE\n");
        return TH_EXIT_USAGE;
    }
    const char *rec_path = argv[optind];

    struct verified v[MAX_SCENARIOS];
    memset(v, 0, sizeof v);
    int rc = TH_EXIT_OK;
    for (size_t i = 0; i < nscen; i++) {
        struct th_scn_diag diag = {0};
        v[i].s = th_scenario_load(scenarios[i], &diag);
        if (!v[i].s) {
            fputs(diag.text ? diag.text : "invalid scenario\n", stderr);
            if (diag.count > TH_SCN_DIAG_MAX)
                fprintf(stderr, "%s: ... and %d more problems\n", scenarios[i],
                        diag.count - TH_SCN_DIAG_MAX);
            rc = TH_EXIT_USAGE;
        }
        th_scn_diag_free(&diag);
    }
    struct recording rec = {0};
    if (rc == TH_EXIT_OK) {
        int r = read_recording(rec_path, &rec);
        if (r >= 0)
            rc = r;
    }
    for (size_t i = 0; rc != TH_EXIT_USAGE && i < nscen; i++) {
        int r = verify_one(&rec, rec_path, &v[i], verbose);
        if (r == TH_EXIT_USAGE || (r == TH_EXIT_FAIL && rc == TH_EXIT_OK))
            rc = r;
    }
    if (junit && rc != TH_EXIT_USAGE) {
        struct th_junit_suite suites[MAX_SCENARIOS];
        memset(suites, 0, sizeof suites);
        for (size_t i = 0; i < nscen; i++)
            suites[i] =
                (struct th_junit_suite){.name = v[i].s->name,
                                        .file = v[i].s->file,
                                        .timestamp = v[i].timestamp[0] ? v[i].timestamp : NULL,
                                        .time_s = v[i].time_s,
                                        .cases = v[i].cases,
                                        .ncases = v[i].cases ? v[i].s->nsteps : 0};
        char *xml = th_junit_render(suites, nscen);
        if (!xml || !th_write_text_file("twinhub", junit, xml))
            rc = rc ? rc : TH_EXIT_FAIL;
        free(xml);
    }
    for (size_t i = 0; i < nscen; i++) {
        free(v[i].cases);
        th_scn_session_free(v[i].ss);
        th_scenario_free(v[i].s);
    }
    recording_free(&rec);
    return rc;
}
