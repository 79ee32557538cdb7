/*
 * dps_front.h - the MQTT client id of a device registering with the
 * provisioning service (docs/dps.md, "The registering client's client id").
 *
 * The SDKs connect to DPS with client id = the registration id
 * ("iot-dps-mqtt-support": "For the ClientId field, use registrationId"),
 * which for an enrollment-group member is its device id too. DPS and the hub
 * are one mosquitto here, which holds one session per client id, so the
 * TLS shim in mosquitto (and the gateway's WebSocket bridge) rewrites the
 * client id of every CONNECT with a DPS username to TH_DPS_CLIENT_ID_PREFIX +
 * the registration id: '~' is not a character of device or module ids
 * (th_id_valid), so no hub client can hold such an id.
 *
 * The plugin accepts, for a DPS username, the registration id itself (a
 * client that does not come through the front) or the prefixed form of the
 * same registration id. Neither grants anything: who the client is is
 * still decided per request from the username's registration id and its
 * token or certificate.
 *
 * Pure.
 */
#ifndef TH_DPS_FRONT_H
#define TH_DPS_FRONT_H

#include <stdbool.h>
#include <stddef.h>

#include "th_result.h"

#define TH_DPS_CLIENT_ID_PREFIX "~dps/"

/*
 * The HTTPS registration (gateway/gw_dps.c) carries a client certificate to
 * the plugin in the same front credential (x509.h), bound to this client id
 * and the username "{idScope}/registrations/{registrationId}"
 * (th_dps_https_cred_username).
 */
#define TH_DPS_HTTPS_CRED_CLIENT_ID "~dps-https"

/*
 * The client id the front gives a CONNECT with `username` (`len` bytes, not
 * NUL-terminated): TH_DPS_CLIENT_ID_PREFIX + the username's registration id,
 * NUL-terminated in `out`. TH_OK with *out_len; TH_ERR_INVAL when `username`
 * is not a DPS username (th_dps_username_parse); TH_ERR_BUFFER when `cap` is
 * too small.
 */
TH_NODISCARD th_result th_dps_front_client_id(const char *username, size_t len, char *out,
                                              size_t cap, size_t *out_len);

/* "{idScope}/registrations/{registrationId}" into out; TH_ERR_BUFFER when it does not fit. */
TH_NODISCARD th_result th_dps_https_cred_username(const char *id_scope, const char *registration_id,
                                                  char *out, size_t cap);

/* Whether `client_id` may register as `registration_id`: equal to it, or the prefixed form. */
bool th_dps_client_id_valid(const char *client_id, const char *registration_id);

#endif
