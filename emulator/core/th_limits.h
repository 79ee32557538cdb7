/*
 * th_limits.h - every IoT Hub limit the emulator enforces, in one place
 * (iothub-protocol.md sections 1, 4.4, 5.2, 7.5, 8.3, 12.3).
 */
#ifndef TH_LIMITS_H
#define TH_LIMITS_H

#define TH_MAX_ID_LEN 128              /* device and module ids */
#define TH_MAX_MODULES_PER_DEVICE 50
#define TH_MAX_POLICIES 16             /* shared access policies per hub (2.5) */
#define TH_TWIN_MAX_DEPTH 10           /* nested object levels below a section root */
#define TH_TWIN_MAX_KEY_BYTES 1024
#define TH_TWIN_MAX_STRING_BYTES 4096
#define TH_TWIN_MAX_TAGS_BYTES 8192
#define TH_TWIN_MAX_DESIRED_BYTES 32768
#define TH_TWIN_MAX_REPORTED_BYTES 32768
#define TH_TWIN_MAX_INT 4503599627370495.0   /* 2^52 - 1 */
#define TH_TWIN_MIN_INT (-4503599627370496.0) /* -2^52 */
#define TH_JSON_MAX_INPUT_BYTES (256 * 1024) /* largest JSON body parsed at all */
#define TH_D2C_MAX_BYTES (256 * 1024)
#define TH_C2D_MAX_BYTES (64 * 1024)
#define TH_C2D_MAX_QUEUE 50
#define TH_METHOD_MAX_PAYLOAD_BYTES (128 * 1024)
#define TH_METHOD_MIN_TIMEOUT_S 5
#define TH_METHOD_MAX_TIMEOUT_S 300
#define TH_METHOD_DEFAULT_TIMEOUT_S 30
#define TH_MAX_SUBSCRIPTIONS 5
#define TH_TELEMETRY_RING 1000         /* telemetry messages kept in memory for queries */

#endif
