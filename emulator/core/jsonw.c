/*
 * jsonw.c - the JSON text writer (jsonw.h): cJSON 1.7.15's string escapes
 * written straight into one growing buffer.
 */
#include <stdlib.h>
#include <string.h>

#include "jsonw.h"

bool th_jsonw_reserve(struct th_jsonw *w, size_t more)
{
    if (w->failed)
        return false;
    if (more <= w->cap && w->len + 1 <= w->cap - more)
        return true;
    if (more > SIZE_MAX / 2 - w->len - 1) {
        w->failed = true;
        return false;
    }
    size_t need = w->len + more + 1;
    size_t cap = w->cap ? w->cap : need;
    while (cap < need)
        cap *= 2;
    char *np = realloc(w->p, cap);
    if (np == NULL) {
        w->failed = true;
        return false;
    }
    w->p = np;
    w->cap = cap;
    return true;
}

/* Bytes a string byte takes in cJSON's output: 1, 2 (\" \\ \b \f \n \r \t) or 6 (\u00xx). */
static const uint8_t esc_len[256] = {
    6, 6, 6, 6, 6, 6, 6, 6, 2, 2, 2, 6, 2, 2, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    1, 1, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
};

size_t th_jsonw_string_size(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t size = 2;
    for (size_t i = 0; i < n; i++)
        size += esc_len[u[i]];
    return size;
}

/* Bytes of a 64-bit word that need an escape: below 0x20, '"' or '\\' (high bit of each set).
 * The classic "has a byte less than / equal to" tests; a false positive can only follow a
 * true one in the same word, and a word with any is escaped byte by byte. */
static uint64_t needs_escape(uint64_t x)
{
    const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
    uint64_t q = x ^ (ones * '"'), b = x ^ (ones * '\\');
    uint64_t ctl = (x - ones * 0x20) & ~x; /* below 0x20 */
    uint64_t quote = (q - ones) & ~q;      /* '"' */
    uint64_t bslash = (b - ones) & ~b;     /* '\\' */
    return (ctl | quote | bslash) & highs;
}

void th_jsonw_string(struct th_jsonw *w, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    /* Room for the worst case (6 bytes per byte) when that is at hand, else for the exact size:
     * then write without checks. */
    if (n > (SIZE_MAX - 2) / 6) {
        w->failed = true;
        return;
    }
    if (!(w->cap - w->len > 6 * n + 2 && !w->failed) &&
        !th_jsonw_reserve(w, th_jsonw_string_size(s, n)))
        return;
    char *o = w->p + w->len;
    *o++ = '"';
    size_t i = 0;
    while (i < n) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        if (n - i >= 8) {
            uint64_t x, m;
            memcpy(&x, u + i, 8);
            memcpy(o, &x, 8); /* the bytes before the first escape go out as they are */
            m = needs_escape(x);
            if (m == 0) {
                o += 8;
                i += 8;
                continue;
            }
            /* The lowest flagged byte comes first in memory and is a true one. */
            size_t k = (size_t)__builtin_ctzll(m) / 8;
            o += k;
            i += k;
        }
#endif
        unsigned char c = u[i++];
        switch (esc_len[c]) {
        case 1:
            *o++ = (char)c;
            break;
        case 2:
            *o++ = '\\';
            *o++ = c == '"'    ? '"'
                   : c == '\\' ? '\\'
                   : c == '\b' ? 'b'
                   : c == '\f' ? 'f'
                   : c == '\n' ? 'n'
                   : c == '\r' ? 'r'
                               : 't';
            break;
        default:
            memcpy(o, "\\u00", 4);
            o[4] = hex[c >> 4];
            o[5] = hex[c & 15];
            o += 6;
        }
    }
    *o++ = '"';
    w->len = (size_t)(o - w->p);
}

void th_jsonw_u64(struct th_jsonw *w, uint64_t v)
{
    char text[24], *s = text + sizeof text;
    do {
        *--s = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    th_jsonw_raw(w, s, (size_t)(text + sizeof text - s));
}

void th_jsonw_i64(struct th_jsonw *w, int64_t v)
{
    if (v < 0) {
        th_jsonw_raw(w, "-", 1);
        th_jsonw_u64(w, (uint64_t)0 - (uint64_t)v);
    } else {
        th_jsonw_u64(w, (uint64_t)v);
    }
}

char *th_jsonw_finish(struct th_jsonw *w, size_t *len)
{
    char *text = NULL;
    if (!w->failed && th_jsonw_reserve(w, 0)) {
        w->p[w->len] = '\0';
        text = w->p;
        if (len)
            *len = w->len;
    } else {
        free(w->p);
    }
    *w = (struct th_jsonw){0};
    return text;
}

void th_jsonw_discard(struct th_jsonw *w)
{
    free(w->p);
    *w = (struct th_jsonw){0};
}
