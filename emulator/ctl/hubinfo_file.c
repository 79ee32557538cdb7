/*
 * hubinfo_file.c - load and save the hub info file (hubinfo_file.h).
 */
#include "hubinfo_file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
