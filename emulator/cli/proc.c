/*
 * proc.c - the process and file plumbing that `twinhub serve`, `twinhub run`
 * and `twinhub verify` share: the signalfd they wait on, the set-up of a
 * child they start, the wording of a child's exit status, creating a
 * directory with its parents, writing a small text file, removing a tree,
 * and the last lines of a log. Declared in cli.h.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"

int th_signals_open(sigset_t *old_mask, bool *blocked)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    *blocked = false;
    if (sigprocmask(SIG_BLOCK, &set, old_mask) != 0)
        return -1;
    *blocked = true;
    signal(SIGPIPE, SIG_IGN); /* a closed stdout must not kill us before we stop our children */
    return signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
}

bool th_child_setup(const sigset_t *old_mask, pid_t parent)
{
    sigprocmask(SIG_SETMASK, old_mask, NULL);
    signal(SIGPIPE, SIG_DFL);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    /* The parent may have died before PR_SET_PDEATHSIG took effect. */
    return getppid() == parent;
}

void th_describe_status(int status, char *buf, size_t size)
{
    if (WIFEXITED(status))
        snprintf(buf, size, "exited with code %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, size, "was killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(buf, size, "stopped (status %d)", status);
}

bool th_write_text_file(const char *who, const char *path, const char *text)
{
    FILE *f = fopen(path, "we");
    if (!f) {
        fprintf(stderr, "%s: cannot write %s: %s\n", who, path, strerror(errno));
        return false;
    }
    bool ok = fputs(text, f) >= 0;
    ok = (fclose(f) == 0) && ok;
    if (!ok)
        fprintf(stderr, "%s: cannot write %s: %s\n", who, path, strerror(errno));
    return ok;
}

bool th_make_dirs(const char *dir, mode_t mode, char *failed, size_t failed_size)
{
    char path[PATH_MAX];
    if (!dir[0]) {
        if (failed && failed_size)
            failed[0] = '\0';
        errno = ENOENT;
        return false;
    }
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path) {
        if (failed && failed_size)
            snprintf(failed, failed_size, "%s", dir);
        errno = ENAMETOOLONG;
        return false;
    }
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char saved = *p;
        *p = '\0';
        if (mkdir(path, mode) != 0 && errno != EEXIST) {
            int e = errno;
            if (failed && failed_size)
                snprintf(failed, failed_size, "%s", path);
            errno = e;
            return false;
        }
        *p = saved;
        if (saved == '\0')
            return true;
    }
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void th_rmtree(const char *path)
{
    if (path && path[0])
        nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

char *th_tail_lines(const char *path, int n)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    long from = size > 16384 ? size - 16384 : 0;
    fseek(f, from, SEEK_SET);
    char *buf = malloc((size_t)(size - from) + 1);
    size_t got = buf ? fread(buf, 1, (size_t)(size - from), f) : 0;
    fclose(f);
    if (!buf)
        return NULL;
    buf[got] = '\0';
    if (got == 0) {
        free(buf);
        return NULL;
    }
    char *p = buf + got;
    if (p > buf && p[-1] == '\n')
        p--;
    int lines = 0;
    while (p > buf) {
        if (p[-1] == '\n' && ++lines == n)
            break;
        p--;
    }
    char *out = strdup(p);
    free(buf);
    return out;
}
