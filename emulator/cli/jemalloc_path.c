/*
 * jemalloc_path.c - where the broker's allocator is (jemalloc_path.h).
 */
#define _GNU_SOURCE /* dladdr */
#include "jemalloc_path.h"

#include <dlfcn.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef TH_MULTIARCH
#define TH_MULTIARCH ""
#endif

size_t th_jemalloc_dirs(char dirs[TH_JEMALLOC_DIRS_MAX][PATH_MAX])
{
    size_t n = 0;
    Dl_info di;
    char libc_path[PATH_MAX];
    if (dladdr((void *)&fopen, &di) && di.dli_fname && strstr(di.dli_fname, "libc.so") &&
        snprintf(libc_path, sizeof libc_path, "%s", di.dli_fname) < (int)sizeof libc_path)
        snprintf(dirs[n++], PATH_MAX, "%s", dirname(libc_path));
    if (TH_MULTIARCH[0])
        snprintf(dirs[n++], PATH_MAX, "/usr/lib/%s", TH_MULTIARCH);
    return n;
}

bool th_jemalloc_find(char *out, size_t size)
{
    char dirs[TH_JEMALLOC_DIRS_MAX][PATH_MAX];
    size_t n = th_jemalloc_dirs(dirs);
    struct stat st;
    for (size_t i = 0; i < n; i++) {
        if (snprintf(out, size, "%s/libjemalloc.so.2", dirs[i]) < (int)size &&
            stat(out, &st) == 0 && S_ISREG(st.st_mode) && access(out, R_OK) == 0)
            return true;
    }
    if (size > 0)
        out[0] = '\0';
    return false;
}
