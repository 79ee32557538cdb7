/*
 * gw_buf.c - the gateway's growable byte buffer (gw_buf.h): capacity doubles
 * from 1 KB, consumed bytes are moved out of the way only when room is
 * needed, so consuming is O(1).
 */
#include "gw_buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool gw_buf_reserve(struct gw_buf *b, size_t n)
{
    if (b->off > 0 && (b->off == b->len || b->len + n > b->cap)) {
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
    }
    if (b->len + n <= b->cap)
        return true;
    size_t ncap = b->cap ? b->cap : 1024;
    while (ncap < b->len + n) {
        if (ncap > SIZE_MAX / 2)
            return false;
        ncap *= 2;
    }
    uint8_t *nd = realloc(b->data, ncap);
    if (!nd)
        return false;
    b->data = nd;
    b->cap = ncap;
    return true;
}

bool gw_buf_put(struct gw_buf *b, const void *p, size_t n)
{
    if (n == 0)
        return true;
    if (!gw_buf_reserve(b, n))
        return false;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return true;
}

bool gw_buf_putf(struct gw_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !gw_buf_reserve(b, (size_t)n + 1))
        return false;
    va_start(ap, fmt);
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return true;
}

void gw_buf_consume(struct gw_buf *b, size_t n)
{
    b->off += n;
    if (b->off >= b->len)
        b->off = b->len = 0;
}

void gw_buf_free(struct gw_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}
