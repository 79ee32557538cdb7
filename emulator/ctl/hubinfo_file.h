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

/* The info file `twinhub serve` keeps in its cert dir, where the admin commands look first. */
#define TH_HUBINFO_FILE_NAME "hub.json"
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

#endif
