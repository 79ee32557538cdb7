/*
 * persist.c - optional durability for `--state-dir` and `--record`.
 *
 * State: one JSON file per device (with its modules, twins, versions,
 * metadata and C2D queue) in DIR/devices/, plus DIR/policies.json. A change
 * is written (temporary file + rename, so a file is always whole) before the
 * client is acknowledged, so killing the broker at any moment loses nothing
 * that was acknowledged. fsync is not called: the data survives a process
 * crash, not a power cut.
 *
 * Recording: every event record is appended as one JSON line with a single
 * write() before the triggering message is acknowledged.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "json.h"
#include "plugin.h"

#define TH_STATE_MAX_FILE (64 * 1024 * 1024)

/* Device id -> file name: keep [A-Za-z0-9_-], percent-encode every other byte. */
static void device_path(const struct th_plugin *p, const char *device_id, char *out, size_t size)
{
    size_t n = (size_t)snprintf(out, size, "%s/devices/", p->state_dir);
    for (const unsigned char *s = (const unsigned char *)device_id; *s && n + 4 < size; s++) {
        if ((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
            *s == '_' || *s == '-') {
            out[n++] = (char)*s;
        } else {
            n += (size_t)snprintf(out + n, size - n, "%%%02X", *s);
        }
    }
    snprintf(out + n, size - n, ".json");
}

/* Write text to path atomically (tmp + rename). Returns 0 or an errno. */
static int write_atomic(const char *path, const char *text)
{
    char tmp[4200];
    size_t len = strlen(text), off = 0;
    int fd, e = 0;
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        return errno;
    }
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            e = errno;
            break;
        }
        off += (size_t)w;
    }
    if (close(fd) != 0 && !e) {
        e = errno;
    }
    if (!e && rename(tmp, path) != 0) {
        e = errno;
    }
    if (e) {
        unlink(tmp);
    }
    return e;
}

void th_persist_device(struct th_plugin *p, struct th_identity *dev)
{
    char path[4096];
    cJSON *state;
    char *text;
    int e;
    if (!p->state_dir || !dev) {
        return;
    }
    if (dev->parent) {
        dev = dev->parent;
    }
    state = th_device_state_json(dev);
    text = state ? th_json_print(state) : NULL;
    cJSON_Delete(state);
    device_path(p, dev->device_id, path, sizeof path);
    if (!text) {
        th_log(p, MOSQ_LOG_ERR, "%s | state not saved | out of memory", dev->device_id);
        return;
    }
    e = write_atomic(path, text);
    free(text);
    if (e) {
        th_log(p, MOSQ_LOG_ERR, "%s | state not saved | %s: %s", dev->device_id, path, strerror(e));
    }
}

void th_persist_forget(struct th_plugin *p, const char *device_id)
{
    char path[4096];
    if (!p->state_dir) {
        return;
    }
    device_path(p, device_id, path, sizeof path);
    if (unlink(path) != 0 && errno != ENOENT) {
        th_log(p, MOSQ_LOG_ERR, "%s | state not removed | %s: %s", device_id, path, strerror(errno));
    }
}

static void persist_policies(struct th_plugin *p)
{
    char path[4096];
    cJSON *arr = th_registry_policies_json(p->reg);
    char *text = arr ? th_json_print(arr) : NULL;
    int e;
    cJSON_Delete(arr);
    snprintf(path, sizeof path, "%s/policies.json", p->state_dir);
    if (!text) {
        return;
    }
    if ((e = write_atomic(path, text)) != 0) {
        th_log(p, MOSQ_LOG_ERR, "policies not saved | %s: %s", path, strerror(e));
    }
    free(text);
}

void th_persist_all(struct th_plugin *p)
{
    if (!p->state_dir) {
        return;
    }
    persist_policies(p);
    for (struct th_identity *d = th_registry_next_device(p->reg, NULL); d;
         d = th_registry_next_device(p->reg, d)) {
        th_persist_device(p, d);
    }
}

/* Parse one state file; NULL (logged) when unreadable. */
static cJSON *read_json(struct th_plugin *p, const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long len;
    cJSON *doc = NULL;
    struct th_error err = {0};
    if (!f) {
        return NULL;
    }
    if (fseek(f, 0, SEEK_END) == 0 && (len = ftell(f)) >= 0 && len < TH_STATE_MAX_FILE &&
        fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)len + 1)) &&
        fread(buf, 1, (size_t)len, f) == (size_t)len) {
        if (th_json_parse(buf, (size_t)len, TH_STATE_MAX_FILE, 64, &doc, &err) != TH_OK) {
            th_log(p, MOSQ_LOG_ERR, "state file %s is damaged: %s", path, err.message);
        }
    }
    free(buf);
    fclose(f);
    return doc;
}

int th_persist_load(struct th_plugin *p, bool *out_found)
{
    char path[4096];
    DIR *dir;
    struct dirent *de;
    struct th_error err = {0};
    size_t n = 0;
    cJSON *doc;

    *out_found = false;
    if (mkdir(p->state_dir, 0700) != 0 && errno != EEXIST) {
        mosquitto_log_printf(MOSQ_LOG_ERR, "twinhub: cannot create state directory %s: %s",
                             p->state_dir, strerror(errno));
        return MOSQ_ERR_INVAL;
    }
    snprintf(path, sizeof path, "%s/devices", p->state_dir);
    if (mkdir(path, 0700) != 0 && errno != EEXIST) {
        mosquitto_log_printf(MOSQ_LOG_ERR, "twinhub: cannot create %s: %s", path, strerror(errno));
        return MOSQ_ERR_INVAL;
    }
    snprintf(path, sizeof path, "%s/policies.json", p->state_dir);
    if ((doc = read_json(p, path)) != NULL) {
        *out_found = true;
        th_result r = th_registry_restore_policies(p->reg, doc, &err);
        cJSON_Delete(doc);
        if (r != TH_OK) {
            mosquitto_log_printf(MOSQ_LOG_ERR, "twinhub: %s: %s", path, err.message);
            return MOSQ_ERR_INVAL;
        }
    }
    snprintf(path, sizeof path, "%s/devices", p->state_dir);
    if (!(dir = opendir(path))) {
        return MOSQ_ERR_INVAL;
    }
    while ((de = readdir(dir)) != NULL) {
        size_t len = strlen(de->d_name);
        char file[4400];
        if (len < 6 || strcmp(de->d_name + len - 5, ".json") != 0) {
            continue; /* also skips leftover .tmp files of an interrupted write */
        }
        snprintf(file, sizeof file, "%s/%s", path, de->d_name);
        if (!(doc = read_json(p, file))) {
            closedir(dir);
            return MOSQ_ERR_INVAL;
        }
        th_result r = th_registry_restore_device(p->reg, doc, &err);
        cJSON_Delete(doc);
        if (r != TH_OK) {
            mosquitto_log_printf(MOSQ_LOG_ERR, "twinhub: state file %s: %s", file, err.message);
            closedir(dir);
            return MOSQ_ERR_INVAL;
        }
        n++;
        *out_found = true;
    }
    closedir(dir);
    if (*out_found) {
        mosquitto_log_printf(MOSQ_LOG_NOTICE, "twinhub: restored %zu devices from %s", n,
                             p->state_dir);
    }
    return MOSQ_ERR_SUCCESS;
}

int th_record_open(struct th_plugin *p, const char *path)
{
    p->record_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (p->record_fd < 0) {
        mosquitto_log_printf(MOSQ_LOG_ERR, "twinhub: cannot open recording %s: %s", path,
                             strerror(errno));
        return MOSQ_ERR_INVAL;
    }
    return MOSQ_ERR_SUCCESS;
}

void th_record_write(struct th_plugin *p, const char *line, size_t len)
{
    /* One write() per record: appends from one process never interleave. */
    char stackbuf[8192];
    char *buf = len + 1 <= sizeof stackbuf ? stackbuf : malloc(len + 1);
    size_t off = 0;
    if (!buf) {
        return;
    }
    memcpy(buf, line, len);
    buf[len] = '\n';
    while (off < len + 1) {
        ssize_t w = write(p->record_fd, buf + off, len + 1 - off);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            th_log(p, MOSQ_LOG_ERR, "recording write failed: %s", strerror(errno));
            break;
        }
        off += (size_t)w;
    }
    if (buf != stackbuf) {
        free(buf);
    }
}
