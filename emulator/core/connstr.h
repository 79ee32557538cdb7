/*
 * connstr.h - IoT Hub connection strings, read and written in one place:
 * "HostName=h;DeviceId=d[;ModuleId=m];SharedAccessKey=k[;GatewayHostName=g]"
 * for identities and "HostName=h;SharedAccessKeyName=p;SharedAccessKey=k"
 * for shared access policies (real-clients.md section 2.1: HostName goes
 * into the user name and the token's sr, GatewayHostName is where the SDK
 * dials). `twinhub serve` prints them, the admin commands show them, `twinhub
 * run` hands them to agents, and the CLI reads the one it is given. Pure.
 */
#ifndef TH_CONNSTR_H
#define TH_CONNSTR_H

#include <stddef.h>

#include "th_limits.h"
#include "th_result.h"

/* The device SDKs' MQTT/TLS port: a GatewayHostName names its port only when it is another. */
#define TH_MQTTS_DEFAULT_PORT 8883

/* The fields of a connection string; "" for those it does not have. */
struct th_connstr {
    char host_name[256];
    char device_id[TH_MAX_ID_LEN + 1];
    char module_id[TH_MAX_ID_LEN + 1];
    char key_name[64]; /* SharedAccessKeyName */
    char key[128];     /* SharedAccessKey */
    char gateway[320]; /* GatewayHostName */
};

/*
 * Read "Key=value;..." in any order. Keys compare case-insensitively, as in
 * the SDKs; a value runs from the first '=' to the next ';' (base64 keys end
 * in '='); unknown keys and parts without '=' are ignored. Whether the
 * needed fields are there is the caller's to check. TH_ERR_TOO_LARGE
 * ("the value of HostName is too long") when a value does not fit *out.
 */
TH_NODISCARD th_result th_connstr_parse(const char *text, struct th_connstr *out,
                                        struct th_error *err);

/*
 * The GatewayHostName of a hub that clients reach at `host` with MQTT/TLS on
 * `tls_port`: "host", or "host:port" when the port is neither 0 nor 8883;
 * an IPv6 literal gets brackets ("[::1]:8884") unless it has them already.
 * TH_ERR_BUFFER when `size` is too small.
 */
TH_NODISCARD th_result th_connstr_gateway(const char *host, int tls_port, char *out, size_t size);

/*
 * A device (module NULL) or module connection string; `gateway` NULL, "" or
 * equal to `hub` (ignoring ASCII case) leaves GatewayHostName out, so that a
 * hub dialled at its HostName gets a string every SDK and agent reads alike
 * (docs/cli.md, "Connection strings"). TH_ERR_BUFFER when `size` is too small.
 */
TH_NODISCARD th_result th_connstr_identity(const char *hub, const char *device, const char *module,
                                           const char *key, const char *gateway, char *out,
                                           size_t size);

/* A shared access policy's connection string; TH_ERR_BUFFER when `size` is too small. */
TH_NODISCARD th_result th_connstr_service(const char *hub, const char *policy, const char *key,
                                          char *out, size_t size);

#endif
