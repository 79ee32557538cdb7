/*
 * fuzz_common.h - helpers shared by the libFuzzer targets in tests/fuzz/:
 * exact-size copies of the input (so ASan sees a read one byte past the
 * end), NUL-terminated copies for APIs that take C strings, and an assertion
 * that crashes loudly so libFuzzer saves the input.
 */
#ifndef TH_FUZZ_COMMON_H
#define TH_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A fixed clock: the targets must be deterministic. */
#define FUZZ_NOW_US 1700000000000000LL
#define FUZZ_NOW_S 1700000000LL

/* An invariant the code under test promises; a violation is a finding. */
#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Exactly `size` bytes, no terminator (malloc(0) is avoided). Caller frees. */
static inline char *fuzz_bytes(const uint8_t *data, size_t size)
{
    char *p = malloc(size ? size : 1);
    if (!p)
        abort();
    if (size)
        memcpy(p, data, size);
    return p;
}

/* NUL-terminated copy; the C string ends at the first NUL of the input. Caller frees. */
static inline char *fuzz_cstr(const uint8_t *data, size_t size)
{
    char *p = malloc(size + 1);
    if (!p)
        abort();
    if (size)
        memcpy(p, data, size);
    p[size] = '\0';
    return p;
}

#endif
