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
        return 400004;
    case TH_ERR_FORMAT:
        return 400006;
    case TH_ERR_NOMEM:
        return 500001;
    case TH_ERR_NOT_FOUND:
        return 404001;
    case TH_ERR_EXISTS:
        return 409001;
    case TH_ERR_TOO_LARGE:
        return 413001;
    case TH_ERR_TOO_DEEP:
        return 400004;
    case TH_ERR_PRECONDITION:
        return 412001;
    case TH_ERR_AUTH:
        return 401002;
    case TH_ERR_EXPIRED:
        return 401002;
    /* Auth paths that must look like 401 pass 401002 explicitly. */
    case TH_ERR_DISABLED:
        return 403012;
    /* A too-small buffer is our bug, never the caller's: report it as internal. */
    case TH_ERR_BUFFER:
        return 500001;
    case TH_ERR_QUEUE_FULL:
        return 403004;
    case TH_ERR_NOT_ONLINE:
        return 404103;
    case TH_ERR_TIMEOUT:
        return 504101;
    case TH_ERR_THROTTLED:
        return 429001;
    }
    return 500001;
}

struct code_name {
    int code;
    const char *name;
};

/* iothub-protocol.md section 9.3, sorted by code. */
static const struct code_name code_names[] = {
    {400001, "InvalidProtocolVersion"},
    {400003, "InvalidOperation"},
    {400004, "ArgumentInvalid"},
    {400005, "ArgumentNull"},
    {400006, "IotHubFormatError"},
    {400011, "DeviceDefinedMultipleTimes"},
    {400013, "BulkRegistryOperationFailure"},
    {400027, "ConnectionForcefullyClosedOnNewConnection"},
    {401002, "IotHubUnauthorizedAccess"},
    {401003, "IotHubUnauthorized"},
    {403002, "IotHubQuotaExceeded"},
    {403004, "DeviceMaximumQueueDepthExceeded"},
    {403006, "DeviceMaximumActiveFileUploadLimitExceeded"},
    {403012, "DeviceDisabled"},
    {403100, "DeviceModelMaxPropertiesExceeded"},
    {404001, "DeviceNotFound"},
    {404010, "ModuleNotFound"},
    {404103, "DeviceNotOnline"},
    {404104, "DeviceConnectionClosedRemotely"},
    {409001, "DeviceAlreadyExists"},
    {409301, "ModuleAlreadyExistsOnDevice"},
    {412001, "PreconditionFailed"},
    {412002, "DeviceMessageLockLost"},
    {413001, "MessageTooLarge"},
    {413002, "TooManyDevices"},
    {413003, "TooManyModulesOnDevice"},
    {429001, "ThrottlingException"},
    {429002, "ThrottleBacklogLimitExceeded"},
    {500001, "ServerError"},
    {503001, "ServiceUnavailable"},
    {504101, "GatewayTimeout"},
};

const char *th_error_code_name(int code)
{
    for (size_t i = 0; i < sizeof code_names / sizeof code_names[0]; i++) {
        if (code_names[i].code == code)
            return code_names[i].name;
    }
    return "ServerError";
}

th_result th_error_set(struct th_error *err, th_result r, int code, const char *fmt, ...)
{
    if (!err)
        return r;
    if (code == 0)
        code = th_result_default_code(r);
    err->result = r;
    err->code = code;
    err->status = code / 1000;
    err->message[0] = '\0';
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        /* Truncation is fine: the message is advisory and always NUL-terminated. */
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return r;
}
