/*
 * output.c - how the admin subcommands print (client.h): the hub's answer as
 * JSON with --json (two-space indent), tables padded to their widest cell
 * otherwise, and the typed getters the human-readable printers use.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"

void th_print_json_to(FILE *out, const cJSON *item)
{
    char *text = cJSON_Print(item);
    if (!text) {
        fprintf(stderr, "twinhub: out of memory printing JSON\n");
        return;
    }
    /*
     * cJSON indents with tabs and puts a tab after each colon. JSON strings
     * never hold a raw tab, so every tab is layout: two spaces at the start
     * of a line, one space elsewhere.
     */
    bool line_start = true;
    for (const char *p = text; *p; p++) {
        /* An empty object or array reads better as "{}" than spread over two lines. */
        if ((*p == '{' || *p == '[') && p[1] == '\n') {
            const char *q = p + 2;
            while (*q == '\t')
                q++;
            if (*q == (*p == '{' ? '}' : ']')) {
                fputs(*p == '{' ? "{}" : "[]", out);
                p = q;
                line_start = false;
                continue;
            }
        }
        if (*p == '\t') {
            fputs(line_start ? "  " : " ", out);
            continue;
        }
        line_start = *p == '\n';
        fputc(*p, out);
    }
    fputc('\n', out);
    cJSON_free(text);
}

void th_print_json(const cJSON *item)
{
    th_print_json_to(stdout, item);
}

int th_finish(const struct th_args *a, int rc, cJSON *data, th_human_fn human, const void *ctx)
{
    if (rc < 0) {
        if (a->json)
            th_print_json(data);
        else
            human(data, ctx);
        rc = TH_EXIT_OK;
    }
    cJSON_Delete(data);
    return rc;
}

int th_oom(void)
{
    fprintf(stderr, "twinhub: out of memory\n");
    return TH_EXIT_FAIL;
}

const char *th_str(const cJSON *obj, const char *key, const char *fallback)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) ? v->valuestring : fallback;
}

double th_num(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

struct th_table {
    int ncols;
    size_t nrows, cap;
    char **cells; /* nrows * ncols, row 0 is the header */
};

struct th_table *th_table_new(int ncols, const char *const *headers)
{
    struct th_table *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->ncols = ncols;
    if (!th_table_row(t, headers)) {
        th_table_free(t);
        return NULL;
    }
    return t;
}

bool th_table_row(struct th_table *t, const char *const *cells)
{
    if (t->nrows == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        char **nc = realloc(t->cells, cap * (size_t)t->ncols * sizeof *nc);
        if (!nc)
            return false;
        t->cells = nc;
        t->cap = cap;
    }
    char **row = t->cells + t->nrows * (size_t)t->ncols;
    for (int i = 0; i < t->ncols; i++) {
        row[i] = strdup(cells[i] ? cells[i] : "");
        if (!row[i]) {
            for (int j = 0; j < i; j++)
                free(row[j]);
            return false;
        }
    }
    t->nrows++;
    return true;
}

void th_table_print(const struct th_table *t, FILE *out)
{
    size_t width[32] = {0};
    int ncols = t->ncols < 32 ? t->ncols : 32;
    for (size_t r = 0; r < t->nrows; r++)
        for (int i = 0; i < ncols; i++) {
            size_t w = strlen(t->cells[r * (size_t)t->ncols + (size_t)i]);
            if (w > width[i])
                width[i] = w;
        }
    for (size_t r = 0; r < t->nrows; r++) {
        for (int i = 0; i < ncols; i++) {
            const char *cell = t->cells[r * (size_t)t->ncols + (size_t)i];
            if (i == ncols - 1)
                fprintf(out, "%s\n", cell);
            else
                fprintf(out, "%-*s  ", (int)width[i], cell);
        }
    }
}

void th_table_free(struct th_table *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->nrows * (size_t)t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    free(t);
}
