/*
 * hubinfo_file.h - the hub info file on disk (docs/cli.md, "Finding the
 * hub"): `twinhub serve` saves it when it is ready; the admin commands,
 * `twinhub run --hub` and the integration tests load it. The document itself
 * is core/hubinfo.h. Nothing here prints.
 */
#ifndef TH_HUBINFO_FILE_H
#define TH_HUBINFO_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "hubinfo.h"

/*
 * Where `twinhub serve` keeps its info file for the admin commands: one file
 * per running hub, <cert-dir>/hubs/<pid>.json (mode 0600 in a 0700
 * directory), removed when serve exits (docs/cli.md, "Finding the hub").
 */
#define TH_HUBINFO_DIR_NAME "hubs"
/* An info file is a few hundred bytes; anything past this is not one. */
#define TH_HUBINFO_MAX_BYTES (1u << 20)

/*
 * Read and check the info file at `path` into *out. TH_ERR_NOT_FOUND when
 * there is no such file; TH_ERR_FORMAT when it cannot be read or is not JSON;
 * otherwise as th_hubinfo_from_json. On failure `err` says what is wrong,
 * naming the file: "cannot read PATH: reason", "PATH is not valid JSON (error
 * near byte N)",
 * "PATH is not a twinhub info file (no hubName or ports)".
 */
TH_NODISCARD th_result th_hubinfo_load(const char *path, struct th_hubinfo *out, char *err,
                                       size_t errsize);

/*
 * Write `info` to `path` (pretty JSON and a newline) through a temporary file
 * created with `mode` and renamed over it, so a reader never sees half a
 * file. False with errno set on failure (ENOMEM when out of memory).
 */
bool th_hubinfo_save(const char *path, mode_t mode, const struct th_hubinfo *info);

/*
 * The file a `serve` with process id `pid` keeps in `dir` (the hubs
 * directory): "<dir>/<pid>.json". False when it does not fit `size`.
 */
bool th_hubinfo_pid_path(const char *dir, long pid, char *out, size_t size);

/* One hub found in a hubs directory. */
struct th_hubinfo_entry {
    char path[TH_HUBINFO_PATH_MAX];
    struct th_hubinfo info;
};

/*
 * The hubs running according to the hubs directory `dir`: every
 * "<digits>.json" that loads and whose serve process is alive goes to
 * out[0..max) in the order of their paths. A file whose process is gone
 * (serve was killed with SIGKILL) is stale: it is removed. Files that do not
 * load are skipped. Returns how many live hubs there are (possibly more than
 * `max`); 0 when `dir` does not exist; -1 with errno when it cannot be read.
 */
int th_hubinfo_find(const char *dir, struct th_hubinfo_entry *out, int max);

#endif
