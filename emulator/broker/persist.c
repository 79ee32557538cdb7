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
 * A state file that cannot be loaded never stops the hub: it is moved to
 * DIR/quarantine/<file>.<UTC time> (with <that>.reason beside it), the hub
 * starts without that device (and its modules), or with the default
 * policies, and says which identity and why in the log and, when `serve`
 * asked for it (plugin_opt_state_report), in a JSON report it prints in the
 * ready banner. Everything the hub accepted loads again (tests/fuzz/fuzz_twin.c
 * checks it), so only damage from outside ends up there.
 *
 * Loading reads, parses and checks the device files on worker threads (one
 * per CPU, at most LOAD_MAX_WORKERS; th_device_from_state builds each device
 * apart from the registry) a bounded window ahead of the loading thread, which
 * adds them to the registry one by one in directory order, exactly as one
 * thread did: no worker touches the registry, and each frees its own parse
 * trees (frees across threads cost more than the work they save).
 *
 * Recording: every event record is appended as one JSON line with a single
 * write() before the triggering message is acknowledged.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "json.h"
#include "plugin.h"
#include "th_file.h"
#include "util.h"

#define TH_STATE_MAX_FILE (64 * 1024 * 1024)

/* Device id -> file name: keep [A-Za-z0-9_-], percent-encode every other byte. */
static void device_path(const struct brk_plugin *p, const char *device_id, char *out, size_t size)
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

/* Write text to path atomically (th_file_replace: tmp + rename). Returns 0 or an errno. */
static int write_atomic(const char *path, const char *text)
{
    if (th_file_replace_bytes(path, 0600, text, strlen(text)) == TH_FILE_DONE)
        return 0;
    return errno ? errno : EIO;
}

void brk_persist_device(struct brk_plugin *p, struct th_identity *dev)
{
    char path[4096];
    cJSON *state;
    char *text;
    int e;
    p->configs_dirty = true; /* a twin, tags or an identity changed: configurations may follow */
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
        brk_log(p, MOSQ_LOG_ERR, "%s | state not saved | out of memory", dev->device_id);
        return;
    }
    e = write_atomic(path, text);
    free(text);
    if (e) {
        brk_log(p, MOSQ_LOG_ERR, "%s | state not saved | %s: %s", dev->device_id, path,
                strerror(e));
    }
}

void brk_persist_forget(struct brk_plugin *p, const char *device_id)
{
    char path[4096];
    p->configs_dirty = true;
    if (!p->state_dir) {
        return;
    }
    device_path(p, device_id, path, sizeof path);
    if (unlink(path) != 0 && errno != ENOENT) {
        brk_log(p, MOSQ_LOG_ERR, "%s | state not removed | %s: %s", device_id, path,
                strerror(errno));
    }
}

static void persist_policies(struct brk_plugin *p)
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
        brk_log(p, MOSQ_LOG_ERR, "policies not saved | %s: %s", path, strerror(e));
    }
    free(text);
}

void brk_persist_policies(struct brk_plugin *p)
{
    if (p->state_dir) {
        persist_policies(p);
    }
}

void brk_persist_all(struct brk_plugin *p)
{
    if (!p->state_dir) {
        return;
    }
    persist_policies(p);
    for (struct th_identity *d = th_registry_next_device(p->reg, NULL); d;
         d = th_registry_next_device(p->reg, d)) {
        brk_persist_device(p, d);
    }
}

/* A read buffer kept from file to file: a new 4 KB buffer per file made malloc consolidate
 * its free lists for each of them (performance.md). */
struct read_buf {
    char *data;
    size_t cap;
};

/*
 * The whole of `name` in the directory `dirfd` (AT_FDCWD: a path) at most
 * `max` bytes, in b->data, NUL-terminated; NULL with errno set (EFBIG when
 * larger, EISDIR for a directory), as th_file_read does. The text stays b's.
 * A regular file is read with one read() sized by fstat: a read that returns
 * less than it asked for has met the end of the file (a file that grew since
 * fstat fills the buffer, which grows and reads on).
 */
static char *read_into(int dirfd, const char *name, size_t max, struct read_buf *b,
                       size_t *len_out)
{
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
    struct stat st;
    size_t len = 0;
    int e = 0;
    if (fd < 0)
        return NULL;
    if (fstat(fd, &st) != 0) {
        e = errno;
    } else if (S_ISDIR(st.st_mode)) {
        e = EISDIR;
    } else if (S_ISREG(st.st_mode) && (uintmax_t)st.st_size > max) {
        e = EFBIG;
    }
    size_t limit = max + 2; /* one byte more than max proves the excess, and the NUL */
    size_t want = !e && S_ISREG(st.st_mode) ? (size_t)st.st_size + 2 : 4096;
    while (!e) {
        if (b->cap < want || len + 1 >= b->cap) {
            size_t ncap = b->cap ? b->cap * 2 : 64 * 1024;
            while (ncap < want)
                ncap *= 2;
            if (ncap > limit)
                ncap = limit;
            char *grown = ncap > b->cap ? realloc(b->data, ncap) : NULL;
            if (!grown) {
                e = ncap > b->cap ? ENOMEM : EFBIG;
                break;
            }
            b->data = grown;
            b->cap = ncap;
        }
        size_t ask = b->cap - len - 1;
        ssize_t n = read(fd, b->data + len, ask);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            e = errno;
        } else if (n == 0) {
            break;
        } else if ((len += (size_t)n) > max) {
            e = EFBIG;
        } else if (S_ISREG(st.st_mode) && (size_t)n < ask) {
            break; /* the end of a regular file */
        }
    }
    close(fd);
    if (e) {
        errno = e;
        return NULL;
    }
    b->data[len] = '\0';
    *len_out = len;
    return b->data;
}

/* Parse one state file (`name` in `dirfd`, or a path with AT_FDCWD); NULL with `why` filled
 * when it cannot be read or is not JSON. */
static cJSON *read_json(int dirfd, const char *name, struct read_buf *b, char *why,
                        size_t why_size)
{
    size_t len = 0;
    cJSON *doc = NULL;
    struct th_error err = {0};
    char *buf = read_into(dirfd, name, TH_STATE_MAX_FILE - 1, b, &len);
    if (!buf) {
        if (errno == EFBIG)
            snprintf(why, why_size, "it is %d bytes or more, more than a state file can be",
                     TH_STATE_MAX_FILE);
        else
            snprintf(why, why_size, "cannot read it: %s", strerror(errno));
        return NULL;
    }
    if (th_json_parse(buf, len, TH_STATE_MAX_FILE, 64, &doc, &err) != TH_OK)
        snprintf(why, why_size, "not a state file: %s", err.message);
    return doc;
}

/* ---- files that cannot be loaded ---- */

/* One state file set aside at startup. */
struct set_aside {
    char *identity; /* "device 'd'" or "the shared access policies" */
    char *file;
    char *moved_to; /* NULL when it could not be moved */
    char *reason;
    struct set_aside *next;
};

static void set_aside_free(struct set_aside *a)
{
    while (a) {
        struct set_aside *next = a->next;
        free(a->identity);
        free(a->file);
        free(a->moved_to);
        free(a->reason);
        free(a);
        a = next;
    }
}

/* "device 'd'" for a file named by device_path (the name itself if it does not decode). */
static void device_of_file(const char *name, char *out, size_t size)
{
    char id[1024];
    size_t len = strlen(name) - strlen(".json"), n = 0;
    if (th_pct_decode(name, len, false, id, sizeof id, &n) != TH_OK) {
        snprintf(id, sizeof id, "%.*s", (int)len, name);
    }
    snprintf(out, size, "device '%s'", id);
}

/*
 * Move `file` to DIR/quarantine/<base>.<UTC time>[-n] and write why beside
 * it; returns the new path (malloc'd) or NULL with `fail` filled.
 */
static char *quarantine(struct brk_plugin *p, const char *file, const char *identity,
                        const char *reason, char *fail, size_t fail_size)
{
    char dir[4096], dest[4400], stamp[32];
    const char *base = strrchr(file, '/');
    time_t now = time(NULL);
    struct tm tm;
    base = base ? base + 1 : file;
    snprintf(dir, sizeof dir, "%s/quarantine", p->state_dir);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(fail, fail_size, "cannot create %s: %s", dir, strerror(errno));
        return NULL;
    }
    if (!gmtime_r(&now, &tm) || !strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm)) {
        snprintf(stamp, sizeof stamp, "%lld", (long long)now);
    }
    snprintf(dest, sizeof dest, "%s/%s.%s", dir, base, stamp);
    for (int i = 2; access(dest, F_OK) == 0 && i < 1000; i++) {
        snprintf(dest, sizeof dest, "%s/%s.%s-%d", dir, base, stamp, i);
    }
    if (rename(file, dest) != 0) {
        snprintf(fail, fail_size, "cannot move it to %s: %s", dir, strerror(errno));
        return NULL;
    }
    char note[4400 + 1024], why_path[4500];
    snprintf(note, sizeof note, "%s was not loaded at startup: %s\nIt was %s.\n", identity, reason,
             file);
    snprintf(why_path, sizeof why_path, "%s.reason", dest);
    if (write_atomic(why_path, note) != 0) {
        brk_log(p, MOSQ_LOG_WARNING, "cannot write %s", why_path);
    }
    return strdup(dest);
}

/* Sets `file` aside, logs it and adds it to *list; false on OOM only. */
static bool set_aside(struct brk_plugin *p, struct set_aside **list, const char *file,
                      const char *identity, const char *reason)
{
    char fail[4400] = "";
    struct set_aside *a = calloc(1, sizeof *a);
    if (!a) {
        return false;
    }
    a->moved_to = quarantine(p, file, identity, reason, fail, sizeof fail);
    a->identity = strdup(identity);
    a->file = strdup(file);
    a->reason = strdup(reason);
    while (*list) {
        list = &(*list)->next;
    }
    *list = a; /* in the order met */
    if (a->moved_to) {
        mosquitto_log_printf(MOSQ_LOG_ERR,
                             "twinhub: %s not loaded: %s (state file %s); moved to %s, the hub "
                             "runs without it",
                             identity, reason, file, a->moved_to);
    } else {
        mosquitto_log_printf(MOSQ_LOG_ERR,
                             "twinhub: %s not loaded: %s (state file %s, which stays: %s); "
                             "the hub runs without it",
                             identity, reason, file, fail);
    }
    return a->identity && a->file && a->reason;
}

/*
 * The report for `serve` ({"restored":n,"setAside":[{"identity","file",
 * "movedTo","reason"}]}), written atomically to `path`.
 */
static void write_report(const char *path, size_t restored, const struct set_aside *list)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *arr = o ? cJSON_AddArrayToObject(o, "setAside") : NULL;
    bool ok = arr && cJSON_AddNumberToObject(o, "restored", (double)restored);
    for (const struct set_aside *a = list; ok && a; a = a->next) {
        cJSON *e = cJSON_CreateObject();
        if (!e || !cJSON_AddItemToArray(arr, e)) {
            cJSON_Delete(e);
            ok = false;
            break;
        }
        ok = cJSON_AddStringToObject(e, "identity", a->identity) &&
             cJSON_AddStringToObject(e, "file", a->file) &&
             (a->moved_to ? cJSON_AddStringToObject(e, "movedTo", a->moved_to)
                          : cJSON_AddNullToObject(e, "movedTo")) &&
             cJSON_AddStringToObject(e, "reason", a->reason);
    }
    char *text = ok ? th_json_print(o) : NULL;
    cJSON_Delete(o);
    int e = text ? write_atomic(path, text) : ENOMEM;
    if (e) {
        mosquitto_log_printf(MOSQ_LOG_WARNING, "twinhub: cannot write the state report %s: %s",
                             path, strerror(e));
    }
    free(text);
}

/* ---- reading device files ahead of the restore ---- */

/* Worker threads at most; files a worker takes at a time (one lock and at most one wake-up of
 * the loading thread per chunk, not per file: per file, the hand-offs cost a context switch
 * each, performance.md); parsed files held ahead of the restore at most (memory bound). */
#define LOAD_MAX_WORKERS 4
#define LOAD_CHUNK 32
#define LOAD_WINDOW 512

/* One device file: its device built apart from the registry, or why it cannot be loaded. */
struct load_slot {
    struct th_identity *dev; /* owned until th_registry_add_restored takes it */
    uint64_t max_gen;
    char *why;  /* malloc'd; NULL with dev NULL: out of memory */
    bool nomem; /* th_device_from_state ran out of memory: the load fails */
};

/*
 * The files of DIR/devices and their slots, in chunks of LOAD_CHUNK files.
 * Workers take the next chunk while its first file is less than `consumed` +
 * LOAD_WINDOW, fill its slots without the lock and mark it done under the
 * lock; the loading thread waits for a chunk to be done, restores its files
 * and raises `consumed`. Everything below `mu` is read and written under it;
 * a chunk's slots are written by one worker before `done[c]` is set and read
 * by the loading thread after it sees it set.
 */
struct loader {
    int dirfd; /* DIR/devices, opened once: each file is opened relative to it */
    char **names;
    struct load_slot *slots;
    size_t count;
    pthread_mutex_t mu;
    pthread_cond_t done_cv; /* a chunk became done while the loading thread waited */
    pthread_cond_t room_cv; /* consumed moved, or stop */
    bool *done;             /* per chunk */
    size_t next, consumed;  /* next: the first file of the next chunk to take */
    bool stop, loader_waits;
    int workers_wait;
    struct read_buf own_buf; /* the loading thread's, when it reads the files itself */
};

/* Reads, parses and checks file i into *out (no lock held; the registry is not touched). */
static void load_one(struct loader *l, size_t i, struct read_buf *b, struct load_slot *out)
{
    char why[1024];
    struct th_error err = {0};
    cJSON *doc = read_json(l->dirfd, l->names[i], b, why, sizeof why);
    if (doc) {
        th_result r = th_device_from_state(doc, &out->dev, &out->max_gen, &err);
        cJSON_Delete(doc);
        if (r == TH_OK)
            return;
        out->nomem = r == TH_ERR_NOMEM;
        snprintf(why, sizeof why, "%s", err.message);
    }
    out->why = strdup(why);
}

static void *load_worker(void *arg)
{
    struct loader *l = arg;
    struct read_buf b = {0};
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->stop && l->next < l->count && l->next >= l->consumed + LOAD_WINDOW) {
            l->workers_wait++;
            pthread_cond_wait(&l->room_cv, &l->mu);
            l->workers_wait--;
        }
        if (l->stop || l->next >= l->count)
            break;
        size_t first = l->next, end = first + LOAD_CHUNK < l->count ? first + LOAD_CHUNK : l->count;
        l->next = end;
        pthread_mutex_unlock(&l->mu);
        for (size_t i = first; i < end; i++)
            load_one(l, i, &b, &l->slots[i]);
        pthread_mutex_lock(&l->mu);
        l->done[first / LOAD_CHUNK] = true;
        if (l->loader_waits)
            pthread_cond_signal(&l->done_cv);
    }
    pthread_mutex_unlock(&l->mu);
    free(b.data);
    return NULL;
}

/* Slot i once a worker has filled it (or filled by the caller when there are no workers):
 * the first file of a chunk waits for the whole chunk. */
static struct load_slot *load_wait(struct loader *l, size_t i, size_t workers)
{
    if (workers == 0) {
        load_one(l, i, &l->own_buf, &l->slots[i]);
        return &l->slots[i];
    }
    if (i % LOAD_CHUNK == 0) {
        pthread_mutex_lock(&l->mu);
        while (!l->done[i / LOAD_CHUNK]) {
            l->loader_waits = true;
            pthread_cond_wait(&l->done_cv, &l->mu);
            l->loader_waits = false;
        }
        pthread_mutex_unlock(&l->mu);
    }
    return &l->slots[i];
}

/* Slot i restored (or given up): at the end of a chunk the workers may read further ahead. */
static void load_consumed(struct loader *l, size_t i, size_t workers)
{
    if (workers == 0 || ((i + 1) % LOAD_CHUNK != 0 && i + 1 != l->count))
        return;
    pthread_mutex_lock(&l->mu);
    l->consumed = i + 1;
    if (l->workers_wait)
        pthread_cond_broadcast(&l->room_cv);
    pthread_mutex_unlock(&l->mu);
}

/* Workers for `count` files: one per CPU, 0 when a thread cannot be started (then the
 * loading thread reads every file itself). */
static size_t load_start(struct loader *l, pthread_t *threads)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    size_t want = cpus > 0 ? (size_t)cpus : 1, n = 0;
    if (want > LOAD_MAX_WORKERS)
        want = LOAD_MAX_WORKERS;
    if (l->count < 64)
        want = 0; /* not worth a thread */
    while (n < want && pthread_create(&threads[n], NULL, load_worker, l) == 0)
        n++;
    return n;
}

/* Stops and joins the workers, frees every device not restored. */
static void load_finish(struct loader *l, pthread_t *threads, size_t workers)
{
    pthread_mutex_lock(&l->mu);
    l->stop = true;
    pthread_cond_broadcast(&l->room_cv);
    pthread_mutex_unlock(&l->mu);
    for (size_t t = 0; t < workers; t++)
        pthread_join(threads[t], NULL);
    for (size_t i = 0; i < l->count; i++) {
        th_device_from_state_free(l->slots[i].dev);
        free(l->slots[i].why);
    }
}

int brk_persist_load(struct brk_plugin *p, const char *report_path, bool *out_found)
{
    char path[4096], why[1024];
    DIR *dir;
    struct dirent *de;
    struct th_error err = {0};
    size_t n = 0;
    cJSON *doc;
    struct set_aside *aside = NULL;
    bool oom = false;
    int devfd = -1;
    /* Names first, loading after: set-aside files leave the directory while it is read. */
    char **names = NULL;
    size_t count = 0, cap = 0;

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
    if (access(path, F_OK) == 0) {
        *out_found = true;
        th_result r = TH_ERR_FORMAT;
        struct read_buf pb = {0};
        doc = read_json(AT_FDCWD, path, &pb, why, sizeof why);
        free(pb.data);
        if (doc != NULL) {
            r = th_registry_restore_policies(p->reg, doc, &err);
            cJSON_Delete(doc);
            if (r != TH_OK) {
                snprintf(why, sizeof why, "%s", err.message);
            }
        }
        if (r != TH_OK) {
            /* The registry is still empty: start it over with the hub's default policies,
             * as the gateway does when it meets the same file (gateway.c). */
            th_registry_free(p->reg);
            p->reg = th_registry_new();
            oom = !p->reg || th_registry_add_default_policies(p->reg) != TH_OK ||
                  !set_aside(p, &aside, path, "the shared access policies", why);
        }
    }
    snprintf(path, sizeof path, "%s/devices", p->state_dir);
    if (!oom) {
        if (!(dir = opendir(path))) {
            mosquitto_log_printf(MOSQ_LOG_ERR, "twinhub: cannot read %s: %s", path,
                                 strerror(errno));
            set_aside_free(aside);
            return MOSQ_ERR_INVAL;
        }
        devfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (devfd < 0) {
            mosquitto_log_printf(MOSQ_LOG_ERR, "twinhub: cannot read %s: %s", path,
                                 strerror(errno));
            closedir(dir);
            set_aside_free(aside);
            return MOSQ_ERR_INVAL;
        }
        while (!oom && (de = readdir(dir)) != NULL) {
            size_t len = strlen(de->d_name);
            if (len < 6 || strcmp(de->d_name + len - 5, ".json") != 0) {
                continue; /* also skips leftover .tmp files of an interrupted write */
            }
            if (count == cap) {
                size_t ncap = cap ? cap * 2 : 64;
                char **grown = realloc(names, ncap * sizeof *names);
                if (grown) {
                    names = grown;
                    cap = ncap;
                }
                oom = !grown;
            }
            if (!oom && (names[count] = strdup(de->d_name)) != NULL) {
                count++;
            } else {
                oom = true;
            }
        }
        closedir(dir);
    }
    struct loader ld = {.dirfd = devfd, .names = names, .count = count};
    pthread_t threads[LOAD_MAX_WORKERS];
    size_t workers = 0;
    if (!oom && count > 0) {
        ld.slots = calloc(count, sizeof *ld.slots);
        ld.done = calloc(count / LOAD_CHUNK + 1, sizeof *ld.done);
        oom = !ld.slots || !ld.done;
    }
    if (!oom && count > 0) {
        pthread_mutex_init(&ld.mu, NULL);
        pthread_cond_init(&ld.done_cv, NULL);
        pthread_cond_init(&ld.room_cv, NULL);
        workers = load_start(&ld, threads);
    }
    for (size_t i = 0; i < count && !oom; i++) {
        char file[4400];
        struct load_slot *slot = load_wait(&ld, i, workers);
        *out_found = true;
        th_result r = TH_ERR_FORMAT;
        if (slot->dev) {
            r = th_registry_add_restored(p->reg, slot->dev, slot->max_gen, &err);
            if (r == TH_OK) {
                slot->dev = NULL; /* the registry's now */
            } else {
                snprintf(why, sizeof why, "%s", err.message);
            }
        } else if (slot->why && !slot->nomem) {
            snprintf(why, sizeof why, "%s", slot->why);
        } else {
            r = TH_ERR_NOMEM; /* out of memory building it, or keeping the reason */
        }
        load_consumed(&ld, i, workers);
        if (r == TH_OK) {
            n++;
            continue;
        }
        if (r == TH_ERR_NOMEM) {
            oom = true;
            break;
        }
        char identity[1100];
        device_of_file(names[i], identity, sizeof identity);
        snprintf(file, sizeof file, "%s/%s", path, names[i]);
        oom = !set_aside(p, &aside, file, identity, why);
    }
    if (ld.slots && ld.done) {
        load_finish(&ld, threads, workers);
        pthread_cond_destroy(&ld.room_cv);
        pthread_cond_destroy(&ld.done_cv);
        pthread_mutex_destroy(&ld.mu);
        free(ld.own_buf.data);
    }
    free(ld.slots);
    free(ld.done);
    if (devfd >= 0)
        close(devfd);
    for (size_t i = 0; i < count; i++) {
        free(names[i]);
    }
    free(names);
    if (oom) {
        mosquitto_log_printf(MOSQ_LOG_ERR, "twinhub: out of memory loading %s", p->state_dir);
        set_aside_free(aside);
        return MOSQ_ERR_NOMEM;
    }
    if (*out_found) {
        mosquitto_log_printf(MOSQ_LOG_NOTICE, "twinhub: restored %zu devices from %s", n,
                             p->state_dir);
    }
    if (report_path) {
        write_report(report_path, n, aside);
    }
    set_aside_free(aside);
    return MOSQ_ERR_SUCCESS;
}

int brk_record_open(struct brk_plugin *p, const char *path)
{
    p->record_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (p->record_fd < 0) {
        mosquitto_log_printf(MOSQ_LOG_ERR, "twinhub: cannot open recording %s: %s", path,
                             strerror(errno));
        return MOSQ_ERR_INVAL;
    }
    return MOSQ_ERR_SUCCESS;
}

void brk_record_write(struct brk_plugin *p, const char *line, size_t len)
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
            brk_log(p, MOSQ_LOG_ERR, "recording write failed: %s", strerror(errno));
            break;
        }
        off += (size_t)w;
    }
    if (buf != stackbuf) {
        free(buf);
    }
}
