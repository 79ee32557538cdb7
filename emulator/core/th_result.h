/*
 * th_result.h - the one result enum of the twinhub core, and the error record
 * that carries an IoT Hub status, errorCode and message to the edges
 * (iothub-protocol.md section 9).
 */
#ifndef TH_RESULT_H
#define TH_RESULT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "th_errcodes.h" /* TH_EC_*: the hub's errorCodes, one list */

#define TH_NODISCARD __attribute__((warn_unused_result))

typedef enum th_result {
    TH_OK = 0,
    TH_ERR_INVAL,        /* invalid argument, key, value or field */
    TH_ERR_FORMAT,       /* unparsable JSON or malformed wire text */
    TH_ERR_NOMEM,        /* allocation failed */
    TH_ERR_NOT_FOUND,    /* unknown device, module or other entity */
    TH_ERR_EXISTS,       /* entity already exists */
    TH_ERR_TOO_LARGE,    /* size limit exceeded */
    TH_ERR_TOO_DEEP,     /* nesting limit exceeded */
    TH_ERR_PRECONDITION, /* etag mismatch */
    TH_ERR_AUTH,         /* bad credentials */
    TH_ERR_EXPIRED,      /* token expired */
    TH_ERR_DISABLED,     /* identity disabled */
    TH_ERR_BUFFER,       /* caller's output buffer is too small; nothing written */
    TH_ERR_QUEUE_FULL,   /* C2D queue depth reached */
    TH_ERR_NOT_ONLINE,   /* device not connected or not subscribed */
    TH_ERR_TIMEOUT,      /* device did not answer in time */
    TH_ERR_THROTTLED,    /* injected or real throttling */
} th_result;

/* Human name of a result ("TH_ERR_INVAL" -> "invalid argument"); never NULL. */
const char *th_result_str(th_result r);

/*
 * An error as the hub reports it: HTTP-like status, six-digit errorCode and a
 * message that says what to fix. Filled by core functions that take a
 * `struct th_error *err` (which may be NULL when the caller does not care).
 */
struct th_error {
    th_result result;
    int status; /* e.g. 400 */
    int code;   /* e.g. 400004 */
    /*
     * Where in the parsed text the error is, as a 1-based byte offset: a
     * query's "column N", a JSON document's byte + 1. 0 = no position. Read
     * this, never the number in `message`.
     */
    size_t position;
    char message[256];
};

/*
 * Record an error (no position). `code` 0 picks the default code for `r` (see
 * th_result_default_code). Returns `r` so callers can `return th_error_set(err, ...)`. `err` may be
 * NULL.
 */
th_result th_error_set(struct th_error *err, th_result r, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* th_error_set that also records the error's 1-based byte `position` (0 = none). */
th_result th_error_set_at(struct th_error *err, th_result r, int code, size_t position,
                          const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* The default hub errorCode for a result (TH_ERR_INVAL -> 400004, ...); 500001 for unknown. */
int th_result_default_code(th_result r);

/* The hub's name for an errorCode (400004 -> "ArgumentInvalid"); "ServerError" if unknown. */
const char *th_error_code_name(int code);

#endif
