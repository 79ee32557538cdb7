/*
 * fault.c - the injected faults' names and the hub's error for each
 * injected status (fault.h): the tables the broker used to spell out in its
 * control command and its twin handlers.
 */
#include "fault.h"

#include <stddef.h>
#include <string.h>

static const struct {
    enum th_fault_op op;
    const char *name; /* control API and scenario files */
    const char *text; /* logs and messages */
} ops[] = {
    {TH_FAULT_TWIN_GET, "twinGet", "twin get"},
    {TH_FAULT_TWIN_PATCH, "twinPatch", "reported patch"},
};

/* The statuses whose errorCode is not status x 1000 + 1 (iothub-protocol.md 9.3). */
static const struct {
    int status;
    int code;
} codes[] = {
    {429, TH_EC_THROTTLING_EXCEPTION},
    {503, TH_EC_SERVICE_UNAVAILABLE},
};

th_result th_fault_op_parse(const char *name, enum th_fault_op *out, struct th_error *err)
{
    for (size_t i = 0; name != NULL && i < sizeof ops / sizeof ops[0]; i++) {
        if (strcmp(ops[i].name, name) == 0) {
            *out = ops[i].op;
            return TH_OK;
        }
    }
    return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                        "'operation' must be \"twinGet\" or \"twinPatch\"");
}

const char *th_fault_op_text(enum th_fault_op op)
{
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        if (ops[i].op == op)
            return ops[i].text;
    }
    return "twin request";
}

th_result th_fault_error(enum th_fault_op op, int status, struct th_error *err)
{
    int code = status * 1000 + 1;
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        if (codes[i].status == status)
            code = codes[i].code;
    }
    th_error_set(err, TH_ERR_THROTTLED, code, "injected fault: %s answered with %d (scenario)",
                 th_fault_op_text(op), status);
    if (err != NULL)
        err->status = status;
    return TH_ERR_THROTTLED;
}
