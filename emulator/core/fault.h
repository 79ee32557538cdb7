/*
 * fault.h - the faults a scenario (or a control-API client) can have the hub
 * inject into an identity's twin requests (control API `injectError`,
 * scenario step `injectError`; docs/control-api.md): the operations they hit,
 * the statuses they may carry, and the hub's error for each status
 * (iothub-protocol.md section 9.3). Data only; the broker keeps the counters.
 */
#ifndef TH_FAULT_H
#define TH_FAULT_H

#include "th_result.h"

/* The device requests a fault can answer in place of the hub. */
enum th_fault_op {
    TH_FAULT_TWIN_GET,   /* "twinGet": $iothub/twin/GET */
    TH_FAULT_TWIN_PATCH, /* "twinPatch": $iothub/twin/PATCH/properties/reported */
};

/* The statuses an injected fault may carry, and the one it carries when none is given. */
#define TH_FAULT_STATUS_MIN 400
#define TH_FAULT_STATUS_MAX 599
#define TH_FAULT_STATUS_DEFAULT 429

/*
 * The operation named `name` ("twinGet" or "twinPatch", as the control API
 * and scenario files spell it) into *out. NULL or another name: TH_ERR_INVAL
 * with 400004 and a message that lists the names.
 */
TH_NODISCARD th_result th_fault_op_parse(const char *name, enum th_fault_op *out,
                                         struct th_error *err);

/* The operation as logs and messages name it ("twin get", "reported patch"); never NULL. */
const char *th_fault_op_text(enum th_fault_op op);

/*
 * The error the hub answers an injected `status` with, into *err: that
 * status, its errorCode (429 -> 429001 ThrottlingException, 503 -> 503001
 * ServiceUnavailable, any other -> status x 1000 + 1, e.g. 500 -> 500001
 * ServerError), TH_ERR_THROTTLED, and a message naming the fault. Returns
 * TH_ERR_THROTTLED.
 */
th_result th_fault_error(enum th_fault_op op, int status, struct th_error *err);

#endif
