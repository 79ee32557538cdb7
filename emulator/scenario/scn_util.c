/*
 * scn_util.c - small pure helpers of the scenario library: validation
 * diagnostics, ISO 8601 durations (docs/scenarios.md, "Steps") and short
 * JSON text for messages. (Record timestamps are read by core/journal.c.)
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "scenario.h"

/* ---- diagnostics ---- */

void th_scn_diag_add(struct th_scn_diag *d, const char *file, const char *path, const char *fmt,
                     ...)
{
    if (!d)
        return;
    d->count++;
    if (d->count > TH_SCN_DIAG_MAX)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char line[2048];
    int n;
    if (path && path[0])
        n = snprintf(line, sizeof line, "%s: %s: %s\n", file ? file : "scenario", path, msg);
    else
        n = snprintf(line, sizeof line, "%s: %s\n", file ? file : "scenario", msg);
    if (n < 0)
        return;
    size_t len = strlen(line);
    if (d->len + len + 1 > d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 1024;
        while (cap < d->len + len + 1)
            cap *= 2;
        char *t = realloc(d->text, cap);
        if (!t)
            return;
        d->text = t;
        d->cap = cap;
    }
    memcpy(d->text + d->len, line, len + 1);
    d->len += len;
}

void th_scn_diag_free(struct th_scn_diag *d)
{
    if (!d)
        return;
    free(d->text);
    memset(d, 0, sizeof *d);
}

/* ---- durations ---- */

/*
 * One number of a duration: digits, optionally ',' or '.' and more digits.
 * Returns the characters used (0 when none) and the value in *whole and
 * millionths in *frac; *has_frac tells whether a fraction was written.
 */
static size_t duration_number(const char *p, int64_t *whole, int64_t *frac, bool *has_frac)
{
    size_t i = 0;
    int64_t w = 0;
    while (p[i] >= '0' && p[i] <= '9') {
        if (w > (INT64_MAX - 9) / 10)
            return 0;
        w = w * 10 + (p[i] - '0');
        i++;
    }
    if (i == 0)
        return 0;
    *has_frac = false;
    int64_t f = 0;
    if (p[i] == '.' || p[i] == ',') {
        size_t j = i + 1, digits = 0;
        while (p[j] >= '0' && p[j] <= '9') {
            if (digits < 6) {
                f = f * 10 + (p[j] - '0');
            }
            digits++;
            j++;
        }
        if (digits == 0)
            return 0;
        for (size_t k = digits; k < 6; k++)
            f *= 10;
        *has_frac = true;
        i = j;
    }
    *whole = w;
    *frac = f;
    return i;
}

bool th_duration_parse(const char *text, int64_t *out_us)
{
    static const struct {
        char unit;
        bool time_part;
        int64_t us;
    } units[] = {
        {'Y', false, 365LL * 86400 * 1000000},
        {'M', false, 30LL * 86400 * 1000000},
        {'W', false, 7LL * 86400 * 1000000},
        {'D', false, 86400LL * 1000000},
        {'H', true, 3600LL * 1000000},
        {'M', true, 60LL * 1000000},
        {'S', true, 1000000},
    };
    if (!text || text[0] != 'P')
        return false;
    const char *p = text + 1;
    bool in_time = false, any = false, had_frac = false;
    size_t next_unit = 0; /* units must come in order */
    int64_t total = 0;
    while (*p) {
        if (*p == 'T') {
            if (in_time)
                return false;
            in_time = true;
            p++;
            if (!*p)
                return false; /* "P1DT" */
            while (next_unit < 4)
                next_unit++;
            continue;
        }
        if (had_frac)
            return false; /* a fraction only on the last component */
        int64_t whole, frac;
        bool has_frac;
        size_t n = duration_number(p, &whole, &frac, &has_frac);
        if (n == 0)
            return false;
        p += n;
        size_t u = next_unit;
        while (u < sizeof units / sizeof units[0] &&
               (units[u].unit != *p || units[u].time_part != in_time))
            u++;
        if (u == sizeof units / sizeof units[0])
            return false;
        int64_t per = units[u].us;
        if (whole > INT64_MAX / per)
            return false;
        int64_t add = whole * per + (int64_t)((double)frac * ((double)per / 1e6));
        if (add < 0 || total > INT64_MAX - add)
            return false;
        total += add;
        had_frac = has_frac;
        next_unit = u + 1;
        any = true;
        p++;
    }
    if (!any)
        return false;
    *out_us = total;
    return true;
}

void th_duration_human(int64_t us, char *buf, size_t size)
{
    if (us < 0)
        us = 0;
    if (us < 1000000)
        snprintf(buf, size, "%lld ms", (long long)((us + 500) / 1000));
    else if (us < 120LL * 1000000)
        snprintf(buf, size, "%.1f s", (double)us / 1e6);
    else
        snprintf(buf, size, "%lld min %lld s", (long long)(us / 60000000),
                 (long long)((us / 1000000) % 60));
}

/* ---- JSON for messages ---- */

char *th_scn_json_short(const cJSON *v, size_t max)
{
    char *text = v ? cJSON_PrintUnformatted(v) : strdup("(absent)");
    if (!text)
        return NULL;
    size_t len = strlen(text);
    if (max >= 8 && len > max) {
        /* Do not cut inside a UTF-8 sequence. */
        size_t cut = max - 3;
        while (cut > 0 && ((unsigned char)text[cut] & 0xC0) == 0x80)
            cut--;
        memcpy(text + cut, "...", 4);
    }
    return text;
}

char *th_scn_json_pretty(const cJSON *v)
{
    char *text = v ? cJSON_Print(v) : strdup("(absent)");
    if (!text)
        return NULL;
    /* cJSON lays out with tabs: two spaces at the start of a line, one after a colon. */
    size_t tabs = 0;
    for (const char *p = text; *p; p++)
        tabs += *p == '\t';
    char *out = malloc(strlen(text) + tabs + 1);
    if (!out) {
        free(text);
        return NULL;
    }
    bool line_start = true, in_string = false, escaped = false;
    char *o = out;
    for (const char *p = text; *p; p++) {
        char c = *p;
        if (in_string) {
            *o++ = c;
            if (escaped)
                escaped = false;
            else if (c == '\\')
                escaped = true;
            else if (c == '"')
                in_string = false;
            continue;
        }
        if (c == '\t') {
            if (line_start) {
                *o++ = ' ';
                *o++ = ' ';
            } else if (o > out && o[-1] != ' ') {
                *o++ = ' ';
            }
            continue;
        }
        line_start = c == '\n';
        if (c == '"')
            in_string = true;
        *o++ = c;
    }
    *o = '\0';
    free(text);
    return out;
}
