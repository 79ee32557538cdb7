/*
 * th_errcodes.h - the one list of IoT Hub errorCodes twinhub answers with
 * (iothub-protocol.md section 9.3): each code's number, the name twinhub's C
 * code uses (TH_EC_<NAME>) and the hub's name for it (the "ErrorCode" text of
 * the hub's error bodies). An X-macro: TH_ERROR_CODES(X) expands X(number,
 * NAME, "HubName") once per code, sorted by number, so the enum below and the
 * name table in th_result.c come from this list alone. Code elsewhere names a
 * code (TH_EC_ARGUMENT_INVALID), never its six digits.
 */
#ifndef TH_ERRCODES_H
#define TH_ERRCODES_H

#define TH_ERROR_CODES(X)                                                                          \
    X(400001, INVALID_PROTOCOL_VERSION, "InvalidProtocolVersion")                                  \
    X(400003, INVALID_OPERATION, "InvalidOperation")                                               \
    X(400004, ARGUMENT_INVALID, "ArgumentInvalid")                                                 \
    X(400005, ARGUMENT_NULL, "ArgumentNull")                                                       \
    X(400006, IOTHUB_FORMAT_ERROR, "IotHubFormatError")                                            \
    X(400011, DEVICE_DEFINED_MULTIPLE_TIMES, "DeviceDefinedMultipleTimes")                         \
    X(400013, BULK_REGISTRY_OPERATION_FAILURE, "BulkRegistryOperationFailure")                     \
    X(400027, CONNECTION_FORCEFULLY_CLOSED_ON_NEW_CONNECTION,                                      \
      "ConnectionForcefullyClosedOnNewConnection")                                                 \
    X(401002, IOTHUB_UNAUTHORIZED_ACCESS, "IotHubUnauthorizedAccess")                              \
    X(401003, IOTHUB_UNAUTHORIZED, "IotHubUnauthorized")                                           \
    X(403002, IOTHUB_QUOTA_EXCEEDED, "IotHubQuotaExceeded")                                        \
    X(403004, DEVICE_MAXIMUM_QUEUE_DEPTH_EXCEEDED, "DeviceMaximumQueueDepthExceeded")              \
    X(403006, DEVICE_MAXIMUM_ACTIVE_FILE_UPLOAD_LIMIT_EXCEEDED,                                    \
      "DeviceMaximumActiveFileUploadLimitExceeded")                                                \
    X(403012, DEVICE_DISABLED, "DeviceDisabled")                                                   \
    X(403100, DEVICE_MODEL_MAX_PROPERTIES_EXCEEDED, "DeviceModelMaxPropertiesExceeded")            \
    X(404000, NOT_FOUND, "NotFound") /* twinhub's: no such REST route */                           \
    X(404001, DEVICE_NOT_FOUND, "DeviceNotFound")                                                  \
    X(404010, MODULE_NOT_FOUND, "ModuleNotFound")                                                  \
    X(404103, DEVICE_NOT_ONLINE, "DeviceNotOnline")                                                \
    X(404104, DEVICE_CONNECTION_CLOSED_REMOTELY, "DeviceConnectionClosedRemotely")                 \
    X(405000, METHOD_NOT_ALLOWED, "MethodNotAllowed") /* twinhub's: route without that verb */     \
    X(409000, GENERIC_CONFLICT, "GenericConflict")    /* an existing configuration (config.h) */   \
    X(409001, DEVICE_ALREADY_EXISTS, "DeviceAlreadyExists")                                        \
    X(409301, MODULE_ALREADY_EXISTS_ON_DEVICE, "ModuleAlreadyExistsOnDevice")                      \
    X(412001, PRECONDITION_FAILED, "PreconditionFailed")                                           \
    X(412002, DEVICE_MESSAGE_LOCK_LOST, "DeviceMessageLockLost")                                   \
    X(413001, MESSAGE_TOO_LARGE, "MessageTooLarge")                                                \
    X(413002, TOO_MANY_DEVICES, "TooManyDevices")                                                  \
    X(413003, TOO_MANY_MODULES_ON_DEVICE, "TooManyModulesOnDevice")                                \
    X(429001, THROTTLING_EXCEPTION, "ThrottlingException")                                         \
    X(429002, THROTTLE_BACKLOG_LIMIT_EXCEEDED, "ThrottleBacklogLimitExceeded")                     \
    X(500001, SERVER_ERROR, "ServerError")                                                         \
    X(503001, SERVICE_UNAVAILABLE, "ServiceUnavailable")                                           \
    X(504101, GATEWAY_TIMEOUT, "GatewayTimeout")

/* TH_EC_ARGUMENT_INVALID = 400004, ... */
enum th_error_code {
#define TH_EC_ENUM_(number, name, hub_name) TH_EC_##name = number,
    TH_ERROR_CODES(TH_EC_ENUM_)
#undef TH_EC_ENUM_
};

#endif
