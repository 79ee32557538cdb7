/*
 * scn_report.c - what a run reports (docs/scenarios.md, "Running"): one
 * line per step, and the JUnit XML file (one <testsuite> per scenario, one
 * <testcase> per step, <failure> with expected and actual, <skipped/>).
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scenario.h"

void th_scn_format_line(const struct th_step *step, const struct th_step_result *r, char *buf,
                        size_t size)
{
    char took[64];
    int64_t us = r->end_us > r->start_us ? r->end_us - r->start_us : 0;
    th_duration_human(us, took, sizeof took);
    switch (r->verdict) {
    case TH_VERDICT_PASS:
        snprintf(buf, size, "PASS %2d %s (%s)%s%s", step->index, step->name, took,
                 r->message ? ": " : "", r->message ? r->message : "");
        break;
    case TH_VERDICT_FAIL:
        snprintf(buf, size, "FAIL %2d %s (%s): %s", step->index, step->name, took,
                 r->message ? r->message : "failed");
        break;
    case TH_VERDICT_SKIP:
        snprintf(buf, size, "SKIP %2d %s", step->index, step->name);
        break;
    default:
        snprintf(buf, size, "...  %2d %s", step->index, step->name);
        break;
    }
}

/* ---- a growing text buffer ---- */

struct buf {
    char *p;
    size_t len, cap;
    bool oom;
};

static void put(struct buf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *t = realloc(b->p, cap);
        if (!t) {
            b->oom = true;
            return;
        }
        b->p = t;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void puts_(struct buf *b, const char *s)
{
    put(b, s, strlen(s));
}

static void printf_(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void printf_(struct buf *b, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* Length of the valid UTF-8 sequence at s (1-4), or 0 when it is not valid. */
static size_t utf8_len(const unsigned char *s)
{
    if (s[0] < 0x80)
        return 1;
    size_t n = (s[0] & 0xE0) == 0xC0   ? 2
               : (s[0] & 0xF0) == 0xE0 ? 3
               : (s[0] & 0xF8) == 0xF0 ? 4
                                       : 0;
    for (size_t i = 1; i < n; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    return n;
}

/* XML text or attribute value: escaped, control characters and broken UTF-8 replaced. */
static void put_xml(struct buf *b, const char *s, bool attr)
{
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p;) {
        unsigned char c = *p;
        if (c == '&')
            puts_(b, "&amp;");
        else if (c == '<')
            puts_(b, "&lt;");
        else if (c == '>')
            puts_(b, "&gt;");
        else if (c == '"' && attr)
            puts_(b, "&quot;");
        else if (c == '\n' && attr)
            puts_(b, "&#10;");
        else if (c == '\n' || c == '\t' || (c == '\r' && !attr))
            put(b, (const char *)p, 1);
        else if (c < 0x20 || c == 0x7F)
            puts_(b, "?");
        else {
            size_t n = utf8_len(p);
            if (n == 0) {
                puts_(b, "?");
                p++;
                continue;
            }
            put(b, (const char *)p, n);
            p += n;
            continue;
        }
        p++;
    }
}

char *th_junit_render(const struct th_junit_suite *suites, size_t n)
{
    struct buf b = {0};
    size_t tests = 0, failures = 0, skipped = 0, errors = 0;
    double time = 0;
    for (size_t i = 0; i < n; i++) {
        tests += suites[i].ncases + (suites[i].error ? 1 : 0);
        errors += suites[i].error ? 1 : 0;
        time += suites[i].time_s;
        for (size_t k = 0; k < suites[i].ncases; k++) {
            failures += suites[i].cases[k].verdict == TH_VERDICT_FAIL;
            skipped += suites[i].cases[k].verdict == TH_VERDICT_SKIP ||
                       suites[i].cases[k].verdict == TH_VERDICT_NONE;
        }
    }
    puts_(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    printf_(&b,
            "<testsuites name=\"twinhub\" tests=\"%zu\" failures=\"%zu\" errors=\"%zu\" "
            "skipped=\"%zu\" time=\"%.3f\">\n",
            tests, failures, errors, skipped, time);
    for (size_t i = 0; i < n; i++) {
        const struct th_junit_suite *s = &suites[i];
        size_t f = 0, sk = 0;
        for (size_t k = 0; k < s->ncases; k++) {
            f += s->cases[k].verdict == TH_VERDICT_FAIL;
            sk += s->cases[k].verdict == TH_VERDICT_SKIP || s->cases[k].verdict == TH_VERDICT_NONE;
        }
        puts_(&b, "  <testsuite name=\"");
        put_xml(&b, s->name, true);
        printf_(&b, "\" tests=\"%zu\" failures=\"%zu\" errors=\"%d\" skipped=\"%zu\" time=\"%.3f\"",
                s->ncases + (s->error ? 1 : 0), f, s->error ? 1 : 0, sk, s->time_s);
        if (s->timestamp) {
            puts_(&b, " timestamp=\"");
            put_xml(&b, s->timestamp, true);
            puts_(&b, "\"");
        }
        if (s->file) {
            puts_(&b, " file=\"");
            put_xml(&b, s->file, true);
            puts_(&b, "\"");
        }
        puts_(&b, ">\n");
        if (s->error) {
            puts_(&b, "    <testcase name=\"hub\" classname=\"");
            put_xml(&b, s->name, true);
            puts_(&b, "\" time=\"0\">\n      <error message=\"");
            put_xml(&b, s->error, true);
            puts_(&b, "\"/>\n    </testcase>\n");
        }
        for (size_t k = 0; k < s->ncases; k++) {
            const struct th_junit_case *c = &s->cases[k];
            puts_(&b, "    <testcase name=\"");
            put_xml(&b, c->name, true);
            puts_(&b, "\" classname=\"");
            put_xml(&b, s->name, true);
            printf_(&b, "\" time=\"%.3f\"", c->time_s);
            if (c->verdict == TH_VERDICT_PASS) {
                puts_(&b, "/>\n");
            } else if (c->verdict == TH_VERDICT_FAIL) {
                puts_(&b, ">\n      <failure message=\"");
                put_xml(&b, c->message ? c->message : "failed", true);
                puts_(&b, "\" type=\"failure\">");
                put_xml(&b, c->message ? c->message : "failed", false);
                if (c->detail) {
                    puts_(&b, "\n");
                    put_xml(&b, c->detail, false);
                }
                puts_(&b, "</failure>\n    </testcase>\n");
            } else {
                puts_(&b, ">\n      <skipped/>\n    </testcase>\n");
            }
        }
        if (s->system_out) {
            puts_(&b, "    <system-out>");
            put_xml(&b, s->system_out, false);
            puts_(&b, "</system-out>\n");
        }
        puts_(&b, "  </testsuite>\n");
    }
    puts_(&b, "</testsuites>\n");
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

void th_scn_junit_cases(const struct th_scenario *s, const struct th_scn_session *ss,
                        struct th_junit_case *cases)
{
    for (size_t i = 0; i < s->nsteps; i++) {
        const struct th_step_result *r = th_scn_session_result(ss, i);
        cases[i].name = s->steps[i].name;
        cases[i].verdict = r->verdict;
        cases[i].time_s = r->end_us > r->start_us ? (double)(r->end_us - r->start_us) / 1e6 : 0;
        cases[i].message = r->verdict == TH_VERDICT_FAIL ? r->message : NULL;
        cases[i].detail = r->verdict == TH_VERDICT_FAIL ? r->detail : NULL;
    }
}
