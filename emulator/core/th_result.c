/*
 * th_result.c - names of th_result values, the default IoT Hub errorCode for
 * each, the errorCode -> name table of iothub-protocol.md section 9.3, and
 * th_error_set which fills the error record handed to the edges.
 */
#include "th_result.h"

#include <stddef.h>
#include <stdio.h>

const char *th_result_str(th_result r)
{
    switch (r) {
    case TH_OK:
        return "ok";
    case TH_ERR_INVAL:
        return "invalid argument";
    case TH_ERR_FORMAT:
        return "malformed input";
    case TH_ERR_NOMEM:
        return "out of memory";
    case TH_ERR_NOT_FOUND:
        return "not found";
    case TH_ERR_EXISTS:
        return "already exists";
    case TH_ERR_TOO_LARGE:
        return "too large";
    case TH_ERR_TOO_DEEP:
        return "nested too deeply";
    case TH_ERR_PRECONDITION:
        return "precondition failed";
    case TH_ERR_AUTH:
        return "unauthorized";
    case TH_ERR_EXPIRED:
        return "token expired";
    case TH_ERR_DISABLED:
        return "identity disabled";
    case TH_ERR_BUFFER:
        return "buffer too small";
    case TH_ERR_QUEUE_FULL:
        return "queue full";
    case TH_ERR_NOT_ONLINE:
        return "device not online";
    case TH_ERR_TIMEOUT:
        return "timed out";
    case TH_ERR_THROTTLED:
        return "throttled";
    }
    return "unknown error";
}

int th_result_default_code(th_result r)
{
    switch (r) {
    case TH_OK:
        return 0;
    case TH_ERR_INVAL:
        return TH_EC_ARGUMENT_INVALID;
    case TH_ERR_FORMAT:
        return TH_EC_IOTHUB_FORMAT_ERROR;
    case TH_ERR_NOMEM:
        return TH_EC_SERVER_ERROR;
    case TH_ERR_NOT_FOUND:
        return TH_EC_DEVICE_NOT_FOUND;
    case TH_ERR_EXISTS:
        return TH_EC_DEVICE_ALREADY_EXISTS;
    case TH_ERR_TOO_LARGE:
        return TH_EC_MESSAGE_TOO_LARGE;
    case TH_ERR_TOO_DEEP:
        return TH_EC_ARGUMENT_INVALID;
    case TH_ERR_PRECONDITION:
        return TH_EC_PRECONDITION_FAILED;
    case TH_ERR_AUTH:
        return TH_EC_IOTHUB_UNAUTHORIZED_ACCESS;
    case TH_ERR_EXPIRED:
        return TH_EC_IOTHUB_UNAUTHORIZED_ACCESS;
    /* Auth paths that must look like 401 pass TH_EC_IOTHUB_UNAUTHORIZED_ACCESS explicitly. */
    case TH_ERR_DISABLED:
        return TH_EC_DEVICE_DISABLED;
    /* A too-small buffer is our bug, never the caller's: report it as internal. */
    case TH_ERR_BUFFER:
        return TH_EC_SERVER_ERROR;
    case TH_ERR_QUEUE_FULL:
        return TH_EC_DEVICE_MAXIMUM_QUEUE_DEPTH_EXCEEDED;
    case TH_ERR_NOT_ONLINE:
        return TH_EC_DEVICE_NOT_ONLINE;
    case TH_ERR_TIMEOUT:
        return TH_EC_GATEWAY_TIMEOUT;
    case TH_ERR_THROTTLED:
        return TH_EC_THROTTLING_EXCEPTION;
    }
    return TH_EC_SERVER_ERROR;
}

struct code_name {
    int code;
    const char *name;
};

/* iothub-protocol.md section 9.3, sorted by code: the list of th_errcodes.h. */
static const struct code_name code_names[] = {
#define TH_EC_NAME_(number, name, hub_name) {number, hub_name},
    TH_ERROR_CODES(TH_EC_NAME_)
#undef TH_EC_NAME_
};

const char *th_error_code_name(int code)
{
    for (size_t i = 0; i < sizeof code_names / sizeof code_names[0]; i++) {
        if (code_names[i].code == code)
            return code_names[i].name;
    }
    return "ServerError";
}

static th_result error_vset(struct th_error *err, th_result r, int code, size_t position,
                            const char *fmt, va_list ap) __attribute__((format(printf, 5, 0)));

static th_result error_vset(struct th_error *err, th_result r, int code, size_t position,
                            const char *fmt, va_list ap)
{
    if (!err)
        return r;
    if (code == 0)
        code = th_result_default_code(r);
    err->result = r;
    err->code = code;
    err->status = code / 1000;
    err->position = position;
    err->message[0] = '\0';
    /* Truncation is fine: the message is advisory and always NUL-terminated. */
    if (fmt)
        vsnprintf(err->message, sizeof err->message, fmt, ap);
    return r;
}

th_result th_error_set(struct th_error *err, th_result r, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    error_vset(err, r, code, 0, fmt, ap);
    va_end(ap);
    return r;
}

th_result th_error_set_at(struct th_error *err, th_result r, int code, size_t position,
                          const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    error_vset(err, r, code, position, fmt, ap);
    va_end(ap);
    return r;
}
