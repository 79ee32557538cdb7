/*
 * jemalloc_path.h - where `twinhub serve` finds the allocator it preloads into
 * mosquitto (serve.c find_broker_malloc; docs/architecture.md "The broker's
 * allocator"), shared with the benchmarks' like-for-like baseline
 * (tests/bench/procs.c), which must preload the same file.
 */
#ifndef TH_JEMALLOC_PATH_H
#define TH_JEMALLOC_PATH_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

#define TH_JEMALLOC_DIRS_MAX 2

/*
 * The directories libjemalloc.so.2 is looked for in, in order: the C
 * library's own (dladdr gives the path it was loaded from: /lib/<multiarch>
 * on Debian), then /usr/lib/<multiarch> (TH_MULTIARCH, from the compiler at
 * configure time) for a /lib that is not /usr/lib. Returns how many (0-2).
 */
size_t th_jemalloc_dirs(char dirs[TH_JEMALLOC_DIRS_MAX][PATH_MAX]);

/* libjemalloc.so.2 from the first of those directories that has it, in `out`; false (out "")
 * when none has it or the path does not fit. */
bool th_jemalloc_find(char *out, size_t size);

#endif
