/*
 * th_file.h - the two file operations every part of twinhub shares: read a
 * whole file (or descriptor) under a size limit, and replace a file so that
 * a reader sees the old or the new content, never a part (a temporary file
 * next to it, renamed over it). Used by the broker plugin (registry file),
 * the scenario parser, the gateway, the CLI and the integration tests.
 *
 * Not in emulator/core because it does I/O; it needs nothing but libc.
 * Nothing here prints: failures come back with errno set, and the caller
 * says what it was doing.
 */
#ifndef TH_FILE_H
#define TH_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>

/*
 * All of `path` as malloc'd text with a NUL after its `*len` bytes (len may
 * be NULL; the text may hold NULs of its own). NULL with errno set when it
 * cannot be opened or read, EISDIR for a directory, EFBIG when it holds more
 * than `max` bytes (max < SIZE_MAX / 2), ENOMEM. Works for files whose size
 * the kernel does not know in advance (/proc, pipes). The caller frees.
 */
char *th_file_read(const char *path, size_t max, size_t *len);

/* The same for an open descriptor, read to its end (not closed). */
char *th_file_read_fd(int fd, size_t max, size_t *len);

/* Where th_file_replace failed, for the caller's message; errno says why. */
enum th_file_step {
    TH_FILE_DONE = 0,
    TH_FILE_NAME,   /* the temporary file's name does not fit (ENAMETOOLONG) */
    TH_FILE_CREATE, /* the temporary file could not be created (the directory is not writable) */
    TH_FILE_FILL,   /* the caller's `fill` returned false */
    TH_FILE_WRITE,  /* writing, flushing, closing or renaming failed */
};

/* Writes the content; false on failure (errno set, or the caller's own reason). */
typedef bool (*th_file_fill_fn)(FILE *f, void *arg);

/*
 * Replace `path`: create "<path>.tmp.<pid>" with `mode` (subject to the
 * umask), let fill(f, arg) write the content, flush it (and fsync it when
 * `durable`: keys and certificates that must survive a crash), then rename
 * it over `path`. On failure the temporary file is removed, `path` is left
 * as it was, and the step that failed comes back with errno set.
 */
enum th_file_step th_file_replace(const char *path, mode_t mode, bool durable, th_file_fill_fn fill,
                                  void *arg);

/* th_file_replace with `len` bytes of `data` as the content, not durable. */
enum th_file_step th_file_replace_bytes(const char *path, mode_t mode, const void *data,
                                        size_t len);

#endif
