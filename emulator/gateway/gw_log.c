/*
 * gw_log.c - the gateway's log lines on stderr: "twinhub gateway: ..." for
 * its own events (errors always, the rest with -v), and libwebsockets' own
 * errors and warnings passed through in the same form.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "gw_private.h"

void gw_log(struct th_gateway *gw, bool always, const char *fmt, ...)
{
    if (!always && !gw->verbose)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "twinhub gateway: %s\n", line);
}

void gw_log_lws(int level, const char *line)
{
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    fprintf(stderr, "twinhub gateway: lws %s: %.*s\n", level == LLL_ERR ? "error" : "warning",
            (int)n, line);
}
