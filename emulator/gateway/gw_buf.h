/*
 * gw_buf.h - the gateway's growable byte buffer with a consumed front: what
 * a connection received and has not parsed yet, what it has to send, and the
 * client's MQTT bytes on their way to the broker. Plain C (no libwebsockets),
 * so it can be linked anywhere.
 *
 * Ownership: a zeroed struct gw_buf is an empty buffer; gw_buf_free releases
 * its memory and leaves it empty again (and accepts an empty one).
 */
#ifndef TH_GW_BUF_H
#define TH_GW_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gw_buf {
    uint8_t *data;
    size_t off; /* consumed bytes at the front */
    size_t len; /* end of valid bytes (off <= len) */
    size_t cap;
};

/* Bytes not yet consumed. */
static inline size_t gw_buf_size(const struct gw_buf *b)
{
    return b->len - b->off;
}

/* The first byte not yet consumed. */
static inline uint8_t *gw_buf_head(const struct gw_buf *b)
{
    return b->data + b->off;
}

/* Append n bytes; false on out-of-memory (buffer unchanged). */
bool gw_buf_put(struct gw_buf *b, const void *p, size_t n);
/* Append formatted text (no NUL kept); false on out-of-memory or a format error. */
bool gw_buf_putf(struct gw_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/*
 * Make room for n more bytes at data+len (may move the unconsumed bytes to
 * the front, so pointers into the buffer are stale afterwards); false on
 * out-of-memory, buffer contents unchanged.
 */
bool gw_buf_reserve(struct gw_buf *b, size_t n);
/* Drop n bytes from the front (n <= gw_buf_size). */
void gw_buf_consume(struct gw_buf *b, size_t n);
/* Free the memory; the buffer is empty and usable again. */
void gw_buf_free(struct gw_buf *b);

#endif
