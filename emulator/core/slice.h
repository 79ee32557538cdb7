/*
 * slice.h - a view into someone else's bytes (Azure SDK for C style): parsers
 * return slices of their input instead of allocating.
 */
#ifndef TH_SLICE_H
#define TH_SLICE_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

struct th_slice {
    const char *ptr; /* NULL when absent */
    size_t len;
};

static inline struct th_slice th_slice_of(const char *s)
{
    struct th_slice sl = {s, s ? strlen(s) : 0};
    return sl;
}

static inline bool th_slice_eq_str(struct th_slice s, const char *str)
{
    size_t n = strlen(str);
    return s.ptr && s.len == n && memcmp(s.ptr, str, n) == 0;
}

#endif
