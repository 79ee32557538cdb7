/*
 * th_file.c - whole-file reads and write-then-rename replacement (th_file.h).
 */
#define _GNU_SOURCE
#include "th_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FIRST_CHUNK 4096

/* Read `fd` to its end; `hint` is the expected size (0 when unknown). */
static char *read_fd(int fd, size_t max, size_t hint, size_t *len_out)
{
    /* Room for max + 1 bytes and the NUL: reading one byte more than max proves the excess. */
    size_t limit = max + 2;
    size_t cap = hint + 2 > FIRST_CHUNK ? hint + 2 : FIRST_CHUNK;
    if (cap > limit)
        cap = limit;
    size_t len = 0;
    char *buf = malloc(cap);
    if (!buf) {
        errno = ENOMEM;
        return NULL;
    }
    for (;;) {
        if (len + 1 >= cap) {
            size_t ncap = cap * 2 < limit ? cap * 2 : limit;
            char *nb = ncap > cap ? realloc(buf, ncap) : NULL;
            if (!nb) {
                free(buf);
                errno = ncap > cap ? ENOMEM : EFBIG;
                return NULL;
            }
            buf = nb;
            cap = ncap;
        }
        ssize_t n = read(fd, buf + len, cap - len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            free(buf);
            errno = e;
            return NULL;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > max) {
            free(buf);
            errno = EFBIG;
            return NULL;
        }
    }
    buf[len] = '\0';
    if (len_out)
        *len_out = len;
    return buf;
}

char *th_file_read_fd(int fd, size_t max, size_t *len)
{
    return read_fd(fd, max, 0, len);
}

char *th_file_read(const char *path, size_t max, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat st;
    char *text = NULL;
    if (fstat(fd, &st) != 0) {
        /* errno from fstat */
    } else if (S_ISDIR(st.st_mode)) {
        errno = EISDIR;
    } else if (S_ISREG(st.st_mode) && (uintmax_t)st.st_size > max) {
        errno = EFBIG;
    } else {
        text = read_fd(fd, max, S_ISREG(st.st_mode) ? (size_t)st.st_size : 0, len);
    }
    int e = errno;
    close(fd);
    errno = e;
    return text;
}

enum th_file_step th_file_replace(const char *path, mode_t mode, bool durable, th_file_fill_fn fill,
                                  void *arg)
{
    char tmp[4096 + 32];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp) {
        errno = ENAMETOOLONG;
        return TH_FILE_NAME;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return TH_FILE_CREATE;
    enum th_file_step step = TH_FILE_WRITE;
    FILE *f = fdopen(fd, "w");
    if (!f) {
        int e = errno;
        close(fd);
        unlink(tmp);
        errno = e;
        return step;
    }
    bool ok = fill(f, arg);
    if (!ok)
        step = TH_FILE_FILL;
    else
        ok = fflush(f) == 0 && !ferror(f) && (!durable || fsync(fileno(f)) == 0);
    int e = errno;
    if (fclose(f) != 0 && ok) {
        ok = false;
        e = errno;
    }
    if (ok && rename(tmp, path) != 0) {
        ok = false;
        e = errno;
    }
    if (!ok) {
        unlink(tmp);
        errno = e;
        return step;
    }
    return TH_FILE_DONE;
}

struct bytes {
    const void *data;
    size_t len;
};

static bool put_bytes(FILE *f, void *arg)
{
    const struct bytes *b = arg;
    return b->len == 0 || fwrite(b->data, 1, b->len, f) == b->len;
}

enum th_file_step th_file_replace_bytes(const char *path, mode_t mode, const void *data, size_t len)
{
    struct bytes b = {data, len};
    return th_file_replace(path, mode, false, put_bytes, &b);
}
