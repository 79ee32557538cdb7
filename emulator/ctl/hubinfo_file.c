/*
 * hubinfo_file.c - load and save the hub info file (hubinfo_file.h).
 */
#include "hubinfo_file.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "json.h"
#include "th_file.h"

th_result th_hubinfo_load(const char *path, struct th_hubinfo *out, char *err, size_t errsize)
{
    memset(out, 0, sizeof *out);
    size_t len = 0;
    char *text = th_file_read(path, TH_HUBINFO_MAX_BYTES, &len);
    if (!text) {
        int e = errno;
        snprintf(err, errsize, "cannot read %s: %s", path, strerror(e));
        return e == ENOENT ? TH_ERR_NOT_FOUND : TH_ERR_FORMAT;
    }
    cJSON *doc = NULL;
    struct th_error e = {0};
    th_result r = th_json_parse(text, len, TH_HUBINFO_MAX_BYTES, 16, &doc, &e);
    free(text);
    if (r != TH_OK) {
        th_json_error_about(&e, path, err, errsize);
        return TH_ERR_FORMAT;
    }
    r = th_hubinfo_from_json(doc, out, &e);
    cJSON_Delete(doc);
    if (r != TH_OK)
        snprintf(err, errsize, "%s is not a twinhub info file (%s)", path, e.message);
    return r;
}

bool th_hubinfo_save(const char *path, mode_t mode, const struct th_hubinfo *info)
{
    cJSON *doc = th_hubinfo_to_json(info);
    char *text = doc ? cJSON_Print(doc) : NULL;
    cJSON_Delete(doc);
    size_t len = text ? strlen(text) : 0;
    char *line = text ? realloc(text, len + 2) : NULL;
    if (!line) {
        free(text);
        errno = ENOMEM;
        return false;
    }
    memcpy(line + len, "\n", 2);
    bool ok = th_file_replace_bytes(path, mode, line, len + 1) == TH_FILE_DONE;
    int e = errno;
    free(line);
    errno = e;
    return ok;
}

bool th_hubinfo_pid_path(const char *dir, long pid, char *out, size_t size)
{
    int n = snprintf(out, size, "%s/%ld.json", dir, pid);
    return n >= 0 && (size_t)n < size;
}

/* "<digits>.json": a hub file, not a temporary file of th_file_replace_bytes. */
static bool is_hub_file_name(const char *name)
{
    size_t digits = strspn(name, "0123456789");
    return digits > 0 && strcmp(name + digits, ".json") == 0;
}

/* Whether process `pid` exists (EPERM: it does, as another user's). */
static bool process_alive(long pid)
{
    return pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM);
}

static int by_path(const void *a, const void *b)
{
    return strcmp(((const struct th_hubinfo_entry *)a)->path,
                  ((const struct th_hubinfo_entry *)b)->path);
}

int th_hubinfo_find(const char *dir, struct th_hubinfo_entry *out, int max)
{
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? 0 : -1;
    int n = 0;
    struct dirent *de;
    struct th_hubinfo_entry e;
    while ((de = readdir(d)) != NULL) {
        char err[TH_HUBINFO_PATH_MAX + 320];
        if (!is_hub_file_name(de->d_name) ||
            snprintf(e.path, sizeof e.path, "%s/%s", dir, de->d_name) >= (int)sizeof e.path ||
            th_hubinfo_load(e.path, &e.info, err, sizeof err) != TH_OK)
            continue;
        if (!process_alive(e.info.pid)) {
            unlink(e.path); /* stale: its serve was killed; another reader may have won */
            continue;
        }
        if (n < max)
            out[n] = e;
        n++;
    }
    closedir(d);
    if (out && max > 0)
        qsort(out, (size_t)(n < max ? n : max), sizeof *out, by_path);
    return n;
}
